/* A workload's edges as graphs (workload.h): grouped by task, and the
 * dependencies of its kernel tasks by graph/build.h's rule, the daemon's. */
#include <stdlib.h>
#include <string.h>

#include "common/csr.h"
#include "workload/workload.h"
#include "tandem.h"

void wl_group_edges(const struct workload *w, bool by_dst, uint32_t *off, uint32_t *perm)
{
	const uint32_t *key = NULL;
	if (w->nedges)
		key = by_dst ? &w->edges[0].dst : &w->edges[0].src;
	csr_group(off, perm, w->ntasks, key, sizeof(*w->edges), w->nedges);
}

int wl_preds(const struct workload *w, uint32_t **off, uint32_t **edge)
{
	*off = *edge = NULL;
	for (uint32_t e = 0; e < w->nedges; e++)
		if (w->edges[e].src >= w->ntasks || w->edges[e].dst >= w->ntasks)
			return -TDM_EINVAL;
	*off = malloc(((size_t)w->ntasks + 1) * sizeof(**off));
	*edge = malloc((w->nedges ? w->nedges : 1) * sizeof(**edge));
	if (!*off || !*edge) {
		free(*off);
		free(*edge);
		*off = *edge = NULL;
		return -TDM_ENOMEM;
	}
	wl_group_edges(w, true, *off, *edge);
	return 0;
}

double wl_kernel_edge_data(const struct wl_task *src, const struct wl_task *dst,
                           const double *buf_bytes)
{
	double sum = 0;

	for (unsigned i = 0; i < src->nargs; i++) {
		uint32_t b = src->args[i].buf;
		bool seen = false, used = false;

		if (!(src->args[i].mode & TDM_W))
			continue;
		for (unsigned j = 0; j < i && !seen; j++)
			seen = src->args[j].buf == b && (src->args[j].mode & TDM_W);
		for (unsigned j = 0; j < dst->nargs && !used; j++)
			used = dst->args[j].buf == b;
		if (!seen && used)
			sum += buf_bytes[b];
	}
	return sum;
}

double wl_edge_data(const struct workload *w, uint32_t src, uint32_t dst)
{
	const struct wl_task *s = &w->tasks[src], *d = &w->tasks[dst];
	return s->has_kernel && d->has_kernel ? wl_kernel_edge_data(s, d, w->buf_bytes) : 0;
}

int wl_task_deps(const struct workload *w, uint32_t v, uint32_t first, uint32_t n,
                 const uint32_t *pred_off, const uint32_t *pred_edge, bool with_data,
                 struct graph_build *gb)
{
	const struct wl_task *t = &w->tasks[v];
	uint32_t self = v - first;
	int err;

	for (unsigned a = 0; t->has_kernel && a < t->nargs; a++) {
		const struct wl_arg *x = &t->args[a];
		err = graph_build_access(gb, self, x->buf, 0, (uint64_t)w->buf_bytes[x->buf],
		                         x->mode);
		if (err < 0)
			return err;
	}
	for (uint32_t k = pred_off[v]; k < pred_off[v + 1]; k++) {
		const struct wl_edge *e = &w->edges[pred_edge[k]];
		if (e->src < first || e->src - first >= n)
			return -TDM_EINVAL;
		err = with_data ? graph_build_edge_data(gb, e->src - first, self, e->data)
		                : graph_build_edge(gb, e->src - first, self);
		if (err)
			return err;
	}
	return 0;
}

/* The edges of graph [first, first + n) into out[*m ...]: what the rule
 * and the listed edges give, listed data kept, the rest inferred. */
static int graph_edges(const struct workload *w, uint32_t first, uint32_t n,
                       const uint32_t *pred_off, const uint32_t *pred_edge, struct wl_edge **out,
                       uint32_t *m, uint32_t *cap)
{
	struct graph_build gb;
	uint32_t *off = NULL, *succ = NULL, index;
	double *data = NULL;
	int err = 0;

	graph_build_init(&gb, n, 0);
	for (uint32_t v = first; !err && v < first + n; v++) {
		err = graph_build_task(&gb, NULL, &index);
		if (!err)
			err = wl_task_deps(w, v, first, n, pred_off, pred_edge, true, &gb);
	}
	if (!err)
		err = graph_build_csr(&gb, &off, &succ, &data);
	graph_build_fini(&gb);
	if (!err && (uint64_t)*m + off[n] > WL_MAX_EDGES)
		err = -TDM_EINVAL;
	if (!err && off[n])
		err = wl_grow((void **)out, cap, *m + off[n], sizeof(**out), WL_MAX_EDGES);
	for (uint32_t r = 0; !err && r < n; r++)
		for (uint32_t k = off[r]; k < off[r + 1]; k++) {
			uint32_t src = first + r, dst = first + succ[k];
			double d = data && data[k] >= 0 ? data[k] : wl_edge_data(w, src, dst);
			(*out)[(*m)++] = (struct wl_edge){ .src = src, .dst = dst, .data = d };
		}
	free(off);
	free(succ);
	free(data);
	return err;
}

int wl_infer_edges(struct workload *w)
{
	uint32_t *pred_off, *pred_edge, ngraphs = w->ngraphs ? w->ngraphs : 1;
	struct wl_edge *edges = NULL;
	uint32_t m = 0, cap = 0;
	int err = wl_preds(w, &pred_off, &pred_edge);

	for (uint32_t g = 0; !err && g < ngraphs; g++) {
		uint32_t first = w->ngraphs ? w->graphs[g].first : 0;
		uint32_t n = w->ngraphs ? w->graphs[g].ntasks : w->ntasks;
		err = graph_edges(w, first, n, pred_off, pred_edge, &edges, &m, &cap);
	}
	free(pred_off);
	free(pred_edge);
	if (err) {
		free(edges);
		return err;
	}
	free(w->edges);
	w->edges = edges;
	w->nedges = m;
	/* Sorted already when the graphs come in task order. */
	for (uint32_t e = 1; e < m; e++)
		if (edges[e - 1].src > edges[e].src ||
		    (edges[e - 1].src == edges[e].src && edges[e - 1].dst >= edges[e].dst)) {
			wl_sort_edges(w);
			break;
		}
	return 0;
}
