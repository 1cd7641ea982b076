/* Fuzz target: arbitrary bytes as a tandem trace (JSON Lines).
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz:LINE: " message and an empty workload, or
 * succeeds with a workload inside every bound (names printable, kernels
 * and buffers and devices in range, graphs contiguous, edges sorted,
 * unique, forward and inside a graph, costs finite), which the writer
 * writes and the reader reads back into the very same workload.
 */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz_check.h"
#include "workload/workload.h"
#include "tandem.h"

static void check_name(const char *s)
{
	size_t n = strnlen(s, WL_NAME_MAX);

	CHECK(n < WL_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f);
}

static bool num_ok(double x)
{
	return isfinite(x) && x >= 0;
}

static void check_workload(const struct workload *w)
{
	uint32_t next = 0, cyc;

	CHECK(w->units == WL_UNITS_NS && !strcmp(w->name, "fuzz"));
	CHECK(w->ntasks <= WL_MAX_TASKS && w->nedges <= WL_MAX_EDGES);
	CHECK(w->ndev_names <= 64);
	CHECK(!w->dev_cost || w->ndev_cost == w->ndev_names);
	CHECK(!w->ndev_cost == !w->dev_cost);
	for (uint32_t d = 0; d < w->ndev_names; d++) {
		check_name(w->dev_names[d]);
		CHECK(w->dev_names[d][0] != '\0');
	}
	for (uint32_t b = 0; b < w->nbufs; b++)
		CHECK(num_ok(w->buf_bytes[b]) && w->buf_bytes[b] <= WL_MAX_BYTES);
	for (uint32_t g = 0; g < w->ngraphs; g++) {
		CHECK(w->graphs[g].first == next && w->graphs[g].ntasks >= 1);
		CHECK(num_ok(w->graphs[g].arrival_ns) && num_ok(w->graphs[g].deadline_ns));
		CHECK(w->graphs[g].policy_hint < TDM_POLICY_HINT_COUNT);
		next += w->graphs[g].ntasks;
		for (uint32_t v = w->graphs[g].first; v < next; v++)
			CHECK(w->tasks[v].graph == g);
	}
	CHECK(next == w->ntasks);
	for (uint32_t v = 0; v < w->ntasks; v++) {
		const struct wl_task *t = &w->tasks[v];

		check_name(t->name);
		CHECK(num_ok(t->cost) && num_ok(t->data_in) && num_ok(t->data_out));
		CHECK(t->nargs <= TDM_MAX_ARGS && t->rec_device <= w->ndev_names);
		CHECK(num_ok(t->rec_start_ns) && t->rec_start_ns <= t->rec_end_ns);
		if (t->has_kernel) {
			CHECK(kernel_by_id(t->kernel) != NULL && t->cost == 0);
			CHECK(num_ok(t->feat.flops) && num_ok(t->feat.bytes) &&
			      num_ok(t->feat.domain));
		} else {
			CHECK(t->nargs == 0);
		}
		for (unsigned a = 0; a < t->nargs; a++)
			CHECK(t->args[a].buf < w->nbufs &&
			      (t->args[a].mode == TDM_R || t->args[a].mode == TDM_W ||
			       t->args[a].mode == TDM_RW || t->args[a].mode == TDM_ACC));
		/* skipped: a kernel task released by a predecessor */
		if (t->skipped) {
			bool released = false;
			for (uint32_t e = 0; e < w->nedges && !released; e++)
				released = w->edges[e].dst == v;
			CHECK(t->has_kernel && released);
		}
		for (uint32_t d = 0; d < w->ndev_cost; d++) {
			double c = w->dev_cost[(size_t)v * w->ndev_cost + d];

			CHECK(c == -1 || num_ok(c));
		}
	}
	for (uint32_t e = 0; e < w->nedges; e++) {
		const struct wl_edge *x = &w->edges[e];

		CHECK(x->src < x->dst && x->dst < w->ntasks && num_ok(x->data));
		CHECK(w->tasks[x->src].graph == w->tasks[x->dst].graph);
		if (e)
			CHECK(x[-1].src < x->src || (x[-1].src == x->src && x[-1].dst < x->dst));
	}
	CHECK(wl_check_acyclic(w, &cyc) == 0);
}

static void check_same(const struct workload *a, const struct workload *b)
{
	CHECK(a->ntasks == b->ntasks && a->nedges == b->nedges && a->nbufs == b->nbufs);
	CHECK(a->ngraphs == b->ngraphs && a->ndev_names == b->ndev_names);
	CHECK(a->ndev_cost == b->ndev_cost);
	for (uint32_t v = 0; v < a->ntasks; v++) {
		const struct wl_task *x = &a->tasks[v], *y = &b->tasks[v];

		CHECK(!strcmp(x->name, y->name) && x->cost == y->cost);
		CHECK(x->data_in == y->data_in && x->data_out == y->data_out);
		CHECK(x->has_kernel == y->has_kernel && x->kernel == y->kernel);
		CHECK(x->feat.flops == y->feat.flops && x->feat.bytes == y->feat.bytes &&
		      x->feat.domain == y->feat.domain);
		CHECK(x->nargs == y->nargs && x->priority == y->priority && x->graph == y->graph);
		for (unsigned i = 0; i < x->nargs; i++)
			CHECK(x->args[i].buf == y->args[i].buf &&
			      x->args[i].mode == y->args[i].mode);
		CHECK(x->rec_device == y->rec_device && x->rec_start_ns == y->rec_start_ns &&
		      x->rec_end_ns == y->rec_end_ns && x->skipped == y->skipped);
	}
	for (uint32_t e = 0; e < a->nedges; e++)
		CHECK(a->edges[e].src == b->edges[e].src && a->edges[e].dst == b->edges[e].dst &&
		      a->edges[e].data == b->edges[e].data);
	for (size_t i = 0; i < (size_t)a->ntasks * a->ndev_cost; i++)
		CHECK(a->dev_cost[i] == b->dev_cost[i]);
	for (uint32_t i = 0; i < a->nbufs; i++)
		CHECK(a->buf_bytes[i] == b->buf_bytes[i] && a->buf_keep[i] == b->buf_keep[i]);
	for (uint32_t g = 0; g < a->ngraphs; g++) {
		const struct wl_graph *x = &a->graphs[g], *y = &b->graphs[g];

		CHECK(x->first == y->first && x->ntasks == y->ntasks);
		CHECK(x->arrival_ns == y->arrival_ns && x->deadline_ns == y->deadline_ns);
		CHECK(x->client == y->client && x->priority == y->priority &&
		      x->policy_hint == y->policy_hint);
	}
	for (uint32_t d = 0; d < a->ndev_names; d++)
		CHECK(!strcmp(a->dev_names[d], b->dev_names[d]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct workload w, back;
	char err[WL_ERR_MAX];
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int rc;

	memset(err, 'x', sizeof(err));
	rc = wl_trace_parse((const char *)data, size, "fuzz", &w, err, sizeof(err));
	if (rc) {
		CHECK(rc == -TDM_EINVAL || rc == -TDM_ENOMEM);
		CHECK(!w.ntasks && !w.nedges && !w.nbufs && !w.ngraphs && !w.ndev_names);
		CHECK(!w.tasks && !w.edges && !w.dev_cost && !w.buf_bytes && !w.graphs &&
		      !w.dev_names);
		CHECK(strnlen(err, sizeof(err)) < sizeof(err));
		for (size_t i = 0; err[i]; i++)
			CHECK((unsigned char)err[i] >= 0x20 && (unsigned char)err[i] < 0x7f);
		if (rc == -TDM_EINVAL)
			CHECK(!strncmp(err, "fuzz:", 5) && isdigit((unsigned char)err[5]));
		return 0;
	}
	CHECK(err[0] == '\0');
	check_workload(&w);

	/* parse(write(w)) == w */
	f = open_memstream(&text, &len);
	CHECK(f != NULL);
	CHECK(wl_trace_write(f, &w) == 0);
	CHECK(fclose(f) == 0);
	rc = wl_trace_parse(text, len, "fuzz", &back, err, sizeof(err));
	CHECK(rc == 0);
	check_same(&w, &back);
	wl_free(&back);
	free(text);
	wl_free(&w);
	return 0;
}
