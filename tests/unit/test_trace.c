/* Unit tests for tandem traces (workload/wl_trace.c, docs/trace-format.md):
 * reading every record and field, every class of malformed input with its
 * "name:LINE:" message, writing (whole workloads and the streaming calls),
 * and parse(write(w)) == w. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "workload/workload.h"
#include "tandem.h"

/* ---- helpers --------------------------------------------------------------- */

static void trace_ok(const char *text, struct workload *w)
{
	char err[WL_ERR_MAX] = "x";
	int rc = wl_trace_parse(text, strlen(text), "t", w, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\ninput:\n%s\n", err, text);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

/* Parsing len bytes fails with -TDM_EINVAL, a message starting with want,
 * and an empty workload. */
static void trace_err_len(const char *text, size_t len, const char *want)
{
	struct workload w;
	char err[WL_ERR_MAX] = "";
	int rc;

	memset(&w, 0x5a, sizeof(w));
	rc = wl_trace_parse(text, len, "t", &w, err, sizeof(err));
	if (rc != -TDM_EINVAL || strncmp(err, want, strlen(want)))
		print_error("input:\n%.*s\nwant: %s...\ngot %d: %s\n", len > 2000 ? 2000 : (int)len,
		            text, want, rc, err);
	assert_int_equal(rc, -TDM_EINVAL);
	assert_true(strncmp(err, want, strlen(want)) == 0);
	assert_int_equal(w.ntasks, 0);
	assert_int_equal(w.nedges, 0);
	assert_int_equal(w.nbufs, 0);
	assert_int_equal(w.ngraphs, 0);
	assert_int_equal(w.ndev_names, 0);
	assert_null(w.tasks);
	assert_null(w.edges);
	assert_null(w.dev_cost);
	assert_null(w.buf_bytes);
	assert_null(w.graphs);
	assert_null(w.dev_names);
}

static void trace_err(const char *text, const char *want)
{
	trace_err_len(text, strlen(text), want);
}

static void assert_edge(const struct workload *w, uint32_t i, uint32_t src, uint32_t dst,
                        double data)
{
	assert_true(i < w->nedges);
	assert_int_equal(w->edges[i].src, src);
	assert_int_equal(w->edges[i].dst, dst);
	if (w->edges[i].data != data)
		print_error("edge %u: data %.17g, want %.17g\n", i, w->edges[i].data, data);
	assert_true(w->edges[i].data == data);
}

/* Every field the trace format carries is the same in a and b; graphs and
 * device names only when asked. */
static void assert_same(const struct workload *a, const struct workload *b, bool graphs,
                        bool dev_names)
{
	assert_int_equal(a->ntasks, b->ntasks);
	assert_int_equal(a->nedges, b->nedges);
	assert_int_equal(a->nbufs, b->nbufs);
	assert_int_equal(a->ndev_cost, b->ndev_cost);
	for (uint32_t v = 0; v < a->ntasks; v++) {
		const struct wl_task *x = &a->tasks[v], *y = &b->tasks[v];

		assert_string_equal(x->name, y->name);
		assert_true(x->cost == y->cost);
		assert_true(x->data_in == y->data_in);
		assert_true(x->data_out == y->data_out);
		assert_int_equal(x->has_kernel, y->has_kernel);
		assert_int_equal(x->kernel, y->kernel);
		assert_true(x->feat.flops == y->feat.flops);
		assert_true(x->feat.bytes == y->feat.bytes);
		assert_true(x->feat.domain == y->feat.domain);
		assert_int_equal(x->nargs, y->nargs);
		for (unsigned i = 0; i < x->nargs; i++) {
			assert_int_equal(x->args[i].buf, y->args[i].buf);
			assert_int_equal(x->args[i].mode, y->args[i].mode);
		}
		assert_int_equal(x->priority, y->priority);
		assert_int_equal(x->rec_device, y->rec_device);
		assert_true(x->rec_start_ns == y->rec_start_ns);
		assert_true(x->rec_end_ns == y->rec_end_ns);
		assert_int_equal(x->skipped, y->skipped);
		if (graphs)
			assert_int_equal(x->graph, y->graph);
	}
	for (uint32_t e = 0; e < a->nedges; e++)
		assert_edge(b, e, a->edges[e].src, a->edges[e].dst, a->edges[e].data);
	for (size_t i = 0; i < (size_t)a->ntasks * a->ndev_cost; i++)
		assert_true(a->dev_cost[i] == b->dev_cost[i]);
	for (uint32_t i = 0; i < a->nbufs; i++) {
		assert_true(a->buf_bytes[i] == b->buf_bytes[i]);
		assert_int_equal(a->buf_keep[i], b->buf_keep[i]);
	}
	if (graphs) {
		assert_int_equal(a->ngraphs, b->ngraphs);
		for (uint32_t g = 0; g < a->ngraphs; g++) {
			const struct wl_graph *x = &a->graphs[g], *y = &b->graphs[g];

			assert_int_equal(x->first, y->first);
			assert_int_equal(x->ntasks, y->ntasks);
			assert_true(x->arrival_ns == y->arrival_ns);
			assert_int_equal(x->client, y->client);
			assert_int_equal(x->priority, y->priority);
			assert_int_equal(x->policy_hint, y->policy_hint);
			assert_true(x->deadline_ns == y->deadline_ns);
		}
	}
	if (dev_names) {
		assert_int_equal(a->ndev_names, b->ndev_names);
		for (uint32_t d = 0; d < a->ndev_names; d++)
			assert_string_equal(a->dev_names[d], b->dev_names[d]);
	}
}

/* w written as a trace: a malloc'd string. */
static char *write_text(const struct workload *w, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	assert_non_null(f);
	assert_int_equal(wl_trace_write(f, w), 0);
	assert_int_equal(fclose(f), 0);
	if (len)
		*len = n;
	return buf;
}

/* parse(write(w)) == w (graphs too when w has them), and writing that
 * again gives the same bytes. */
static void round_trip(const struct workload *w, bool dev_names)
{
	struct workload back, again;
	size_t len, len2;
	char *text = write_text(w, &len), *text2;

	trace_ok(text, &back);
	assert_int_equal(back.units, WL_UNITS_NS);
	assert_same(w, &back, w->ngraphs > 0, dev_names);
	text2 = write_text(&back, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(text, text2, len);
	trace_ok(text2, &again);
	assert_same(&back, &again, true, true);
	wl_free(&again);
	wl_free(&back);
	free(text);
	free(text2);
}

/* ---- reading --------------------------------------------------------------- */

static const char basic[] =
        "# a comment first\n"
        "{\"tandem_trace\":1,\"machine\":\"box\",\"policy\":\"dmda\",\"devices\":[\"cpu0\","
        "\"gpu0\"]}\n"
        "{\"buffer\":10,\"bytes\":4096}\n"
        "{\"buffer\":20,\"bytes\":1024,\"keep\":true}\n"
        "{\"graph\":7,\"arrival_ns\":1000,\"client\":3,\"priority\":-2,\"policy\":\"heft\","
        "\"deadline_ns\":5e6,\"tasks\":3}\n"
        "{\"task\":0,\"kernel\":\"spotrf\",\"flops\":100.5,\"bytes\":4096,\"domain\":16,"
        "\"args\":[[10,\"rw\"]],\"device\":\"gpu0\",\"start_ns\":10,\"end_ns\":20}\n"
        "{\"buffer\":30,\"bytes\":512}\n"
        "{\"task\":1,\"name\":\"tr\",\"kernel\":\"strsm\",\"args\":[[10,\"r\"],[20,\"rw\"]],"
        "\"after\":[0],\"priority\":5}\n"
        "  {\"task\":2,\"cost_ns\":[300,-1],\"after\":[[1,77],0]}\r\n"
        "\n"
        "\t# indented comment\n"
        "{\"graph\":8,\"tasks\":2}\n"
        "{\"task\":0,\"kernel\":\"sgemm_nt\",\"args\":[[10,\"r\"],[30,\"w\"],[20,\"rw\"]],"
        "\"device\":1}\n"
        "{\"task\":1,\"cost_ns\":50,\"after\":[0]}";

static void check_basic(const struct workload *w)
{
	static const double cost[5][2] = { { 0, 0 }, { 0, 0 }, { 300, -1 }, { 0, 0 }, { 50, 50 } };
	const struct wl_task *t = w->tasks;

	assert_int_equal(w->units, WL_UNITS_NS);
	assert_int_equal(w->ntasks, 5);
	assert_int_equal(w->nbufs, 3);
	assert_true(w->buf_bytes[0] == 4096 && w->buf_bytes[1] == 1024 && w->buf_bytes[2] == 512);
	assert_true(!w->buf_keep[0] && w->buf_keep[1] && !w->buf_keep[2]);
	assert_int_equal(w->ndev_names, 2);
	assert_string_equal(w->dev_names[0], "cpu0");
	assert_string_equal(w->dev_names[1], "gpu0");
	assert_int_equal(w->ndev_cost, 2);
	for (int v = 0; v < 5; v++)
		for (int d = 0; d < 2; d++)
			assert_true(w->dev_cost[v * 2 + d] == cost[v][d]);

	assert_string_equal(t[0].name, "spotrf");
	assert_true(t[0].has_kernel);
	assert_int_equal(t[0].kernel, KERNEL_SPOTRF);
	assert_true(t[0].feat.flops == 100.5 && t[0].feat.bytes == 4096 && t[0].feat.domain == 16);
	assert_int_equal(t[0].nargs, 1);
	assert_int_equal(t[0].args[0].buf, 0);
	assert_int_equal(t[0].args[0].mode, TDM_RW);
	assert_true(t[0].data_in == 4096 && t[0].data_out == 4096);
	assert_int_equal(t[0].rec_device, 2);
	assert_true(t[0].rec_start_ns == 10 && t[0].rec_end_ns == 20);
	assert_true(t[0].cost == 0);

	assert_string_equal(t[1].name, "tr");
	assert_int_equal(t[1].kernel, KERNEL_STRSM);
	assert_int_equal(t[1].nargs, 2);
	assert_int_equal(t[1].args[1].buf, 1);
	assert_int_equal(t[1].args[1].mode, TDM_RW);
	assert_int_equal(t[1].priority, 5);
	assert_true(t[1].data_in == 5120 && t[1].data_out == 1024);
	assert_int_equal(t[1].rec_device, 0);

	assert_string_equal(t[2].name, "t2");
	assert_false(t[2].has_kernel);
	assert_true(t[2].cost == 300);
	assert_int_equal(t[2].nargs, 0);

	assert_string_equal(t[3].name, "sgemm_nt");
	assert_int_equal(t[3].rec_device, 2);
	assert_int_equal(t[3].args[1].buf, 2);
	assert_int_equal(t[3].args[1].mode, TDM_W);
	assert_true(t[3].data_in == 5120 && t[3].data_out == 1536);
	assert_string_equal(t[4].name, "t1");
	assert_true(t[4].cost == 50);
	for (int v = 0; v < 5; v++)
		assert_int_equal(t[v].graph, v < 3 ? 0 : 1);

	/* kernel -> kernel: the bytes of what 0 writes and 1 touches; to
	 * abstract tasks: 0 unless given */
	assert_int_equal(w->nedges, 4);
	assert_edge(w, 0, 0, 1, 4096);
	assert_edge(w, 1, 0, 2, 0);
	assert_edge(w, 2, 1, 2, 77);
	assert_edge(w, 3, 3, 4, 0);

	assert_int_equal(w->ngraphs, 2);
	assert_int_equal(w->graphs[0].first, 0);
	assert_int_equal(w->graphs[0].ntasks, 3);
	assert_true(w->graphs[0].arrival_ns == 1000);
	assert_int_equal(w->graphs[0].client, 3);
	assert_int_equal(w->graphs[0].priority, -2);
	assert_int_equal(w->graphs[0].policy_hint, TDM_POLICY_HEFT);
	assert_true(w->graphs[0].deadline_ns == 5e6);
	assert_int_equal(w->graphs[1].first, 3);
	assert_int_equal(w->graphs[1].ntasks, 2);
	assert_true(w->graphs[1].arrival_ns == 0 && w->graphs[1].deadline_ns == 0);
	assert_int_equal(w->graphs[1].client, 0);
	assert_int_equal(w->graphs[1].policy_hint, TDM_POLICY_DEFAULT);
}

static void test_parse_basic(void **state)
{
	struct workload w;
	uint32_t cyc;

	(void)state;
	trace_ok(basic, &w);
	check_basic(&w);
	assert_string_equal(w.name, "t");
	assert_int_equal(wl_check_acyclic(&w, &cyc), 0);
	wl_free(&w);
	assert_null(w.dev_names);
	wl_free(&w);
	/* the name's last component; NULL: "trace" in messages */
	assert_int_equal(wl_trace_parse(basic, strlen(basic), "dir/x.jsonl", &w, NULL, 0), 0);
	assert_string_equal(w.name, "x.jsonl");
	wl_free(&w);
	assert_int_equal(wl_trace_parse(basic, strlen(basic), NULL, &w, NULL, 0), 0);
	assert_string_equal(w.name, "trace");
	wl_free(&w);
}

static void test_parse_minimal(void **state)
{
	struct workload w;

	(void)state;
	/* a header alone: no tasks */
	trace_ok("{\"tandem_trace\":1}\n", &w);
	assert_int_equal(w.ntasks, 0);
	assert_int_equal(w.ngraphs, 0);
	assert_null(w.dev_names);
	wl_free(&w);
	/* abstract tasks without costs, duplicate predecessors merged with
	 * the largest data, device names by index, empty devices list */
	trace_ok("{\"tandem_trace\":1,\"devices\":[]}\n{\"graph\":0,\"tasks\":3}\n{\"task\":0}\n"
	         "{\"task\":1,\"after\":[0,[0,9],[0,3]]}\n{\"task\":2,\"after\":[1,0,1]}\n",
	         &w);
	assert_int_equal(w.ntasks, 3);
	assert_null(w.dev_cost);
	assert_true(w.tasks[0].cost == 0);
	assert_int_equal(w.nedges, 3);
	assert_edge(&w, 0, 0, 1, 9);
	assert_edge(&w, 1, 0, 2, 0);
	assert_edge(&w, 2, 1, 2, 0);
	wl_free(&w);
	/* names: printable and cut to 63 bytes; a cost array equal everywhere
	 * costs exactly that; kernel tasks' rows are 0 */
	trace_ok("{\"tandem_trace\":1,\"devices\":[\"a\",\"b\",\"c\"]}\n{\"graph\":0,\"tasks\":3}\n"
	         "{\"task\":0,\"name\":\"caf\\u00e9\\n0123456789012345678901234567890123456789"
	         "0123456789012345678901234567890\"}\n"
	         "{\"task\":1,\"cost_ns\":[0.1,0.1,0.1]}\n"
	         "{\"task\":2,\"kernel\":\"noop\",\"name\":\"\"}\n",
	         &w);
	assert_string_equal(w.tasks[0].name,
	                    "caf???012345678901234567890123456789012345678901234567890123456");
	assert_true(w.tasks[1].cost == 0.1);
	assert_true(w.dev_cost[0] == 0 && w.dev_cost[3] == 0.1 && w.dev_cost[8] == 0);
	assert_string_equal(w.tasks[2].name, "");
	wl_free(&w);
	/* a mean over the devices a task can run on */
	trace_ok("{\"tandem_trace\":1,\"devices\":[\"a\",\"b\",\"c\"]}\n{\"graph\":0,\"tasks\":1}\n"
	         "{\"task\":0,\"cost_ns\":[10,-1,20]}\n",
	         &w);
	assert_true(w.tasks[0].cost == 15);
	wl_free(&w);
	/* an accumulating argument (TDM_ACC) */
	trace_ok("{\"tandem_trace\":1}\n{\"buffer\":10,\"bytes\":64}\n{\"graph\":0,\"tasks\":1}\n"
	         "{\"task\":0,\"kernel\":\"axpy\",\"args\":[[10,\"r\"],[10,\"acc\"]]}\n",
	         &w);
	assert_int_equal(w.tasks[0].args[1].mode, TDM_ACC);
	wl_free(&w);
}

/* Every class of malformed trace, with the line (and column) at fault. */
static void test_parse_errors(void **state)
{
#define H "{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"gpu0\"]}\n"
#define G "{\"graph\":1,\"tasks\":2}\n"
#define B "{\"buffer\":5,\"bytes\":64}\n"
	(void)state;
	/* header */
	trace_err("", "t:1: empty trace: expected the header");
	trace_err("# only a comment\n\n", "t:2: empty trace");
	trace_err(G, "t:1: missing header: the first record must be {\"tandem_trace\":1");
	trace_err("\n" B, "t:2: missing header");
	trace_err("{\"tandem_trace\":2}\n", "t:1: unsupported trace version 2");
	trace_err("{\"tandem_trace\":\"1\"}\n", "t:1: header: \"tandem_trace\" is not an integer");
	trace_err("{\"tandem_trace\":1,\"cpus\":4}\n", "t:1: header: unknown key \"cpus\"");
	trace_err("{\"tandem_trace\":1,\"machine\":4}\n",
	          "t:1: header: \"machine\" is not a string");
	trace_err("{\"tandem_trace\":1,\"devices\":\"cpu0\"}\n",
	          "t:1: header: \"devices\" is not an array");
	trace_err("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cpu0\"]}\n",
	          "t:1: header: devices[1]: device \"cpu0\" listed twice");
	trace_err("{\"tandem_trace\":1,\"devices\":[\"cpu 0\"]}\n",
	          "t:1: header: devices[0] \"cpu 0\": only printable ASCII");
	trace_err("{\"tandem_trace\":1,\"devices\":[\"\"]}\n",
	          "t:1: header: devices[0] must have 1..63 bytes");
	trace_err("{\"tandem_trace\":1,\"devices\":[1]}\n",
	          "t:1: header: devices[0] is not a string");
	trace_err(H H, "t:2: a second header");
	/* syntax, with the column */
	trace_err(H "{\"graph\":1,}\n", "t:2:12: string or '}' expected near '}'");
	trace_err(H "{\"graph\":1,\"graph\":2,\"tasks\":1}\n",
	          "t:2:18: duplicate object key near '\"graph\"'");
	trace_err(H "{\"graph\":1,\"tasks\":1} {}\n", "t:2:23: end of file expected near '{'");
	trace_err(H "{\"graph\":99999999999999999999}\n", "t:2:29: too big integer");
	trace_err_len(H "{\"graph\":1,\"tasks\":1}\0\n", sizeof(H) + 22, "t:2:");
	trace_err(H "[1,2]\n", "t:2: a record must be a JSON object");
	trace_err(H "{\"graf\":1}\n", "t:2: not a header, buffer, graph or task record");
	/* buffers */
	trace_err(H B B, "t:3: buffer 5: buffer id declared twice");
	trace_err(H "{\"buffer\":-5,\"bytes\":1}\n",
	          "t:2: buffer record: \"buffer\" is negative (-5)");
	trace_err(H "{\"buffer\":4294967296,\"bytes\":1}\n",
	          "t:2: buffer record: \"buffer\" 4294967296 is outside 0..4294967295");
	trace_err(H "{\"buffer\":1}\n", "t:2: buffer 1: missing \"bytes\"");
	trace_err(H "{\"buffer\":1,\"bytes\":1.5}\n",
	          "t:2: buffer 1: \"bytes\" 1.5 is not a whole");
	trace_err(H "{\"buffer\":1,\"bytes\":1e16}\n",
	          "t:2: buffer 1: \"bytes\" 1e+16 exceeds 9.0");
	trace_err(H "{\"buffer\":1,\"bytes\":\"8\"}\n", "t:2: buffer 1: \"bytes\" is not a number");
	trace_err(H "{\"buffer\":1,\"bytes\":8,\"keep\":1}\n",
	          "t:2: buffer 1: \"keep\" is not true or false");
	trace_err(H "{\"buffer\":1,\"bytes\":8,\"pinned\":true}\n",
	          "t:2: buffer 1: unknown key \"pinned\"");
	/* graphs */
	trace_err(H G "{\"task\":0}\n" G, "t:4: graph 1 announced 2 tasks but has 1");
	trace_err(H "{\"graph\":1,\"tasks\":1}\n{\"task\":0}\n{\"graph\":1,\"tasks\":1}\n",
	          "t:4: graph 1: graph id used twice");
	trace_err(H "{\"graph\":1}\n", "t:2: graph 1: missing \"tasks\"");
	trace_err(H "{\"graph\":1,\"tasks\":0}\n",
	          "t:2: graph 1: \"tasks\" 0 is outside 1..1000000");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"arrival_ns\":-1}\n",
	          "t:2: graph 1: \"arrival_ns\" is negative (-1)");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"deadline_ns\":2e18}\n",
	          "t:2: graph 1: \"deadline_ns\" 2e+18 exceeds 1e+18");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"policy\":\"fast\"}\n",
	          "t:2: graph 1: unknown policy hint \"fast\"");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"priority\":2147483648}\n",
	          "t:2: graph 1: \"priority\" 2147483648 is outside -2147483648..2147483647");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"client\":1.5}\n",
	          "t:2: graph 1: \"client\" is not an integer");
	trace_err(H "{\"graph\":1,\"tasks\":1,\"flow\":2}\n", "t:2: graph 1: unknown key \"flow\"");
	/* a graph's tasks: count and order */
	trace_err(H G "{\"task\":0}\n\n# end\n",
	          "t:5: graph 1 announced 2 tasks but the trace ends after 1");
	trace_err(H G "{\"task\":0}", "t:3: graph 1 announced 2 tasks but the trace ends after 1");
	trace_err(H "{\"task\":0}\n", "t:2: task 0: no graph record before it");
	trace_err(H "{\"graph\":1,\"tasks\":1}\n{\"task\":0}\n{\"task\":1}\n",
	          "t:4: task 1: graph 1 already has its 1 tasks");
	trace_err(H G "{\"task\":1}\n", "t:3: task 1: expected task 0 of graph 1");
	trace_err(H G "{\"task\":0}\n{\"task\":0}\n", "t:4: task 0: expected task 1 of graph 1");
	trace_err(H G "{\"task\":\"0\"}\n", "t:3: task record: \"task\" is not an integer");
	/* task fields */
	trace_err(H G "{\"task\":0,\"cost\":1}\n", "t:3: task 0: unknown key \"cost\"");
	trace_err(H G "{\"task\":0,\"name\":3}\n", "t:3: task 0: \"name\" is not a string");
	trace_err(H G "{\"task\":0,\"cost_ns\":-5}\n", "t:3: task 0: \"cost_ns\" is negative (-5)");
	trace_err(H G "{\"task\":0,\"cost_ns\":\"5\"}\n",
	          "t:3: task 0: \"cost_ns\" is not a number");
	trace_err(H G "{\"task\":0,\"priority\":-2147483649}\n",
	          "t:3: task 0: \"priority\" -2147483649 is outside");
	trace_err(H G "{\"task\":0,\"kernel\":\"nope\"}\n", "t:3: task 0: unknown kernel \"nope\"");
	trace_err(H G "{\"task\":0,\"kernel\":\"noop\",\"cost_ns\":5}\n",
	          "t:3: task 0: \"cost_ns\" is for tasks without a kernel");
	trace_err(H G "{\"task\":0,\"flops\":5}\n", "t:3: task 0: \"flops\" is for kernel tasks");
	trace_err(H G "{\"task\":0,\"kernel\":\"noop\",\"flops\":-1}\n",
	          "t:3: task 0: \"flops\" is negative (-1)");
	/* skipped: a kernel task released by a predecessor (its router) */
	trace_err(H G "{\"task\":0,\"skipped\":true}\n",
	          "t:3: task 0: \"skipped\" is for kernel tasks");
	trace_err(H G "{\"task\":0,\"kernel\":\"noop\"}\n{\"task\":1,\"kernel\":\"noop\","
	              "\"after\":[0],\"skipped\":1}\n",
	          "t:4: task 1: \"skipped\" is not true or false");
	trace_err(H G "{\"task\":0,\"kernel\":\"noop\",\"skipped\":true}\n",
	          "t:3: task 0: \"skipped\" without \"after\"");
	/* arguments */
	trace_err(H G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":[[9,\"rw\"]]}\n",
	          "t:3: task 0: args[0]: unknown buffer 9 (no buffer record before)");
	trace_err(H G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":[[5,\"rw\"]]}\n" B,
	          "t:3: task 0: args[0]: unknown buffer 5");
	trace_err(
	        H B G
	        "{\"task\":0,\"kernel\":\"noop\",\"args\":[[5,\"r\"],[5,\"r\"],[5,\"r\"],[5,\"r\"],"
	        "[5,\"r\"],[5,\"r\"],[5,\"r\"],[5,\"r\"],[5,\"r\"]]}\n",
	        "t:4: task 0: 9 arguments, at most 8");
	trace_err(H B G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":[[5,\"x\"]]}\n",
	          "t:4: task 0: args[0]: mode \"x\" is not \"r\", \"w\", \"rw\" or \"acc\"");
	trace_err(H B G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":[5]}\n",
	          "t:4: task 0: args[0] is not a [buffer, mode] pair");
	trace_err(H B G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":{}}\n",
	          "t:4: task 0: \"args\" is not an array");
	trace_err(H B G "{\"task\":0,\"kernel\":\"spotrf\",\"args\":[[\"5\",\"r\"]]}\n",
	          "t:4: task 0: args[0]: the buffer is not an id");
	/* costs per device */
	trace_err(H G "{\"task\":0,\"cost_ns\":[1,2,3]}\n",
	          "t:3: task 0: \"cost_ns\" has 3 entries for 2 devices");
	trace_err(H G "{\"task\":0,\"cost_ns\":[-1,-1]}\n",
	          "t:3: task 0: \"cost_ns\" is -1 on every device: the task cannot run");
	trace_err(H G "{\"task\":0,\"cost_ns\":[1,-2]}\n",
	          "t:3: task 0: cost_ns[1] is negative (-2) but not -1");
	trace_err(H G "{\"task\":0,\"cost_ns\":[1,null]}\n",
	          "t:3: task 0: cost_ns[1] is not a number");
	trace_err("{\"tandem_trace\":1}\n" G "{\"task\":0,\"cost_ns\":[1]}\n",
	          "t:3: task 0: a \"cost_ns\" array needs the devices in the header");
	/* predecessors */
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":[1]}\n",
	          "t:4: task 1: after[0]: 1 is not an earlier task of this graph");
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":[-1]}\n",
	          "t:4: task 1: after[0]: -1 is not an earlier task");
	trace_err(H "{\"graph\":1,\"tasks\":1}\n{\"task\":0}\n{\"graph\":2,\"tasks\":1}\n"
	            "{\"task\":0,\"after\":[0]}\n",
	          "t:5: task 0: after[0]: 0 is not an earlier task of this graph");
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":[[0,-4]]}\n",
	          "t:4: task 1: after[0]: the data is negative (-4)");
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":[[0,1,2]]}\n",
	          "t:4: task 1: after[0] is not a task index or [index, data_bytes]");
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":[\"0\"]}\n",
	          "t:4: task 1: after[0]: the task index is not an integer");
	trace_err(H G "{\"task\":0}\n{\"task\":1,\"after\":0}\n",
	          "t:4: task 1: \"after\" is not an array");
	/* recorded placement */
	trace_err(H G "{\"task\":0,\"device\":\"npu0\"}\n",
	          "t:3: task 0: device \"npu0\" is not in the header's devices");
	trace_err(H G "{\"task\":0,\"device\":2}\n",
	          "t:3: task 0: device 2 is not an index into the header's 2 devices");
	trace_err("{\"tandem_trace\":1}\n" G "{\"task\":0,\"device\":0}\n",
	          "t:3: task 0: device 0 is not an index into the header's 0 devices");
	trace_err(H G "{\"task\":0,\"device\":true}\n",
	          "t:3: task 0: \"device\" is not a device name or index");
	trace_err(H G "{\"task\":0,\"start_ns\":5,\"end_ns\":4}\n",
	          "t:3: task 0: \"start_ns\" 5 is after \"end_ns\" 4");
	trace_err(H G "{\"task\":0,\"start_ns\":5}\n",
	          "t:3: task 0: \"start_ns\" without \"end_ns\"");
	trace_err(H G "{\"task\":0,\"start_ns\":-5,\"end_ns\":4}\n",
	          "t:3: task 0: \"start_ns\" is negative (-5)");
	/* messages stay printable */
	trace_err(H G "{\"task\":0,\"kernel\":\"\\u00e9\\t\"}\n",
	          "t:3: task 0: unknown kernel \"???\"");
#undef H
#undef G
#undef B
}

static void test_parse_long_lines(void **state)
{
	const size_t max = (size_t)1 << 20;
	const char head[] = "{\"tandem_trace\":1}\n{\"graph\":0,\"tasks\":1}\n";
	char *text = malloc(sizeof(head) + max + 16);
	size_t n = sizeof(head) - 1;
	struct workload w;

	(void)state;
	assert_non_null(text);
	/* a line of exactly 1 MiB is fine (the name is cut) */
	memcpy(text, head, n);
	n += (size_t)sprintf(text + n, "{\"task\":0,\"name\":\"");
	memset(text + n, 'a', max - 20);
	n += max - 20;
	n += (size_t)sprintf(text + n, "\"}");
	assert_int_equal(n - (sizeof(head) - 1), max);
	text[n] = '\0';
	trace_ok(text, &w);
	assert_int_equal(strlen(w.tasks[0].name), WL_NAME_MAX - 1);
	wl_free(&w);
	/* one byte more is not */
	memmove(text + n - 2, "a\"}", 4);
	trace_err_len(text, n + 1, "t:3: line of 1048577 bytes exceeds the limit of 1048576");
	free(text);
}

/* ---- writing --------------------------------------------------------------- */

static void test_write_exact(void **state)
{
	static const char want[] =
	        "{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"gpu0\"]}\n"
	        "{\"buffer\":0,\"bytes\":4096}\n"
	        "{\"buffer\":1,\"bytes\":1024,\"keep\":true}\n"
	        "{\"buffer\":2,\"bytes\":512}\n"
	        "{\"graph\":0,\"arrival_ns\":1000,\"client\":3,\"priority\":-2,\"policy\":\"heft\","
	        "\"deadline_ns\":5000000,\"tasks\":3}\n"
	        "{\"task\":0,\"name\":\"spotrf\",\"kernel\":\"spotrf\",\"flops\":100.5,\"bytes\":"
	        "4096,"
	        "\"domain\":16,\"args\":[[0,\"rw\"]],\"device\":\"gpu0\",\"start_ns\":10,"
	        "\"end_ns\":20}\n"
	        "{\"task\":1,\"name\":\"tr\",\"kernel\":\"strsm\",\"args\":[[0,\"r\"],[1,\"rw\"]],"
	        "\"after\":[0],\"priority\":5}\n"
	        "{\"task\":2,\"name\":\"t2\",\"cost_ns\":[300,-1],\"after\":[0,[1,77]]}\n"
	        "{\"graph\":1,\"arrival_ns\":0,\"tasks\":2}\n"
	        "{\"task\":0,\"name\":\"sgemm_nt\",\"kernel\":\"sgemm_nt\",\"args\":[[0,\"r\"],"
	        "[2,\"w\"],[1,\"rw\"]],\"device\":\"gpu0\"}\n"
	        "{\"task\":1,\"name\":\"t1\",\"cost_ns\":[50,50],\"after\":[0]}\n";
	struct workload w;
	size_t len;
	char *text;

	(void)state;
	trace_ok(basic, &w);
	text = write_text(&w, &len);
	if (strcmp(text, want))
		print_error("got:\n%s", text);
	assert_string_equal(text, want);
	assert_int_equal(len, strlen(want));
	free(text);
	round_trip(&w, true);
	wl_free(&w);
}

/* A workload made here, with awkward numbers and names. */
static void test_write_round_trip(void **state)
{
	struct wl_task tasks[4] = {
		{ .name = "a \"q\" \\ b",
		  .cost = 0.1,
		  .priority = INT32_MIN,
		  .rec_start_ns = 1.5,
		  .rec_end_ns = 2.25 },
		{ .name = "k",
		  .has_kernel = true,
		  .kernel = KERNEL_SGEMM_NT,
		  .feat = { 1e300, 1.7976931348623157e308, 10.0 / 3 },
		  .nargs = 2,
		  .args = { { 0, TDM_R }, { 1, TDM_W } },
		  .data_in = 9007199254740992.0,
		  .data_out = 3 },
		{ .name = "c", .cost = 1e18, .priority = INT32_MAX, .graph = 1 },
		{ .name = "",
		  .has_kernel = true,
		  .kernel = KERNEL_NOOP,
		  .graph = 1,
		  .skipped = true },
	};
	struct wl_edge edges[2] = { { 0, 1, 0.30000000000000004 }, { 2, 3, 5 } };
	struct wl_graph graphs[2] = {
		{ .first = 0,
		  .ntasks = 2,
		  .arrival_ns = 123.456,
		  .client = UINT32_MAX,
		  .priority = -1,
		  .policy_hint = TDM_POLICY_PRIO,
		  .deadline_ns = 1e-3 },
		{ .first = 2, .ntasks = 2, .arrival_ns = 1e17 + 8 },
	};
	double bytes[2] = { 9007199254740992.0, 3 };
	bool keep[2] = { true, false };
	struct workload w = { .name = "hand",
		              .units = WL_UNITS_NS,
		              .ntasks = 4,
		              .nedges = 2,
		              .tasks = tasks,
		              .edges = edges,
		              .nbufs = 2,
		              .buf_bytes = bytes,
		              .buf_keep = keep,
		              .ngraphs = 2,
		              .graphs = graphs };
	struct workload back;
	char *text;

	(void)state;
	round_trip(&w, true);
	/* without graphs: one graph of every task arriving at 0 (the edges
	 * then join tasks of one graph) */
	w.ngraphs = 0;
	w.graphs = NULL;
	text = write_text(&w, NULL);
	trace_ok(text, &back);
	assert_same(&w, &back, false, true);
	assert_int_equal(back.ngraphs, 1);
	assert_int_equal(back.graphs[0].first, 0);
	assert_int_equal(back.graphs[0].ntasks, 4);
	assert_true(back.graphs[0].arrival_ns == 0);
	wl_free(&back);
	free(text);
	/* nothing at all: the header alone */
	w.ntasks = w.nedges = w.nbufs = 0;
	text = write_text(&w, NULL);
	assert_string_equal(text, "{\"tandem_trace\":1}\n");
	free(text);
}

/* Workloads from elsewhere: generated ones, and one whose edges go from
 * later tasks to earlier ones (written in a topological order). */
static void test_write_other_sources(void **state)
{
	struct wl_random_params p = {
		.n = 300, .ccr = 1, .alpha = 1, .out_degree = 3, .beta = 1, .ndev = 3, .seed = 5
	};
	struct wl_task tasks[3] = { { .name = "x", .cost = 1 },
		                    { .name = "y", .cost = 2 },
		                    { .name = "z", .cost = 3 } };
	struct wl_edge edges[3] = { { 0, 1, 4 }, { 2, 0, 5 }, { 2, 1, 6 } };
	struct workload w = {
		.units = WL_UNITS_SECONDS, .ntasks = 3, .nedges = 3, .tasks = tasks, .edges = edges
	};
	static const char header[] = "{\"tandem_trace\":1,\"devices\":[\"d0\",\"d1\",\"d2\"]}\n";
	struct workload g, back;
	char err[WL_ERR_MAX];
	char *text;

	(void)state;
	for (int k = WL_TILED_CHOLESKY; k <= WL_TILED_QR; k++) {
		assert_int_equal(wl_gen_tiled(k, 5, 64, &g, err, sizeof(err)), 0);
		round_trip(&g, true);
		wl_free(&g);
	}
	/* random graphs have costs per device but no device names: the
	 * writer names them d0, d1, ... */
	assert_int_equal(wl_gen_random(&p, &g, err, sizeof(err)), 0);
	round_trip(&g, false);
	text = write_text(&g, NULL);
	assert_true(strncmp(text, header, strlen(header)) == 0);
	free(text);
	wl_free(&g);

	/* z -> x -> y: written z, x, y; seconds become ns */
	text = write_text(&w, NULL);
	trace_ok(text, &back);
	assert_string_equal(back.tasks[0].name, "z");
	assert_string_equal(back.tasks[1].name, "x");
	assert_string_equal(back.tasks[2].name, "y");
	assert_true(back.tasks[0].cost == 3e9 && back.tasks[1].cost == 1e9);
	assert_int_equal(back.nedges, 3);
	assert_edge(&back, 0, 0, 1, 5);
	assert_edge(&back, 1, 0, 2, 6);
	assert_edge(&back, 2, 1, 2, 4);
	wl_free(&back);
	free(text);
}

/* What the writer refuses, leaving the stream untouched. */
static void test_write_invalid(void **state)
{
	struct wl_task tasks[2] = { { .name = "a" }, { .name = "b" } };
	struct wl_edge edges[2] = { { 0, 1, 0 }, { 1, 0, 0 } };
	struct wl_graph graphs[2] = { { .first = 0, .ntasks = 1 }, { .first = 1, .ntasks = 1 } };
	struct workload w = { .ntasks = 2, .tasks = tasks, .edges = edges };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_non_null(f);
	assert_int_equal(wl_trace_write(NULL, &w), -TDM_EINVAL);
	assert_int_equal(wl_trace_write(f, NULL), -TDM_EINVAL);
	w.nedges = 2; /* a cycle */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	w.nedges = 1; /* an edge between graphs */
	w.ngraphs = 2;
	w.graphs = graphs;
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	w.nedges = 0;
	graphs[1].first = 2; /* graphs not contiguous */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	graphs[1].first = 1;
	graphs[1].policy_hint = TDM_POLICY_HINT_COUNT;
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	graphs[1].policy_hint = 0;
	tasks[1].rec_device = 1; /* no devices */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	tasks[1].rec_device = 0;
	tasks[1].has_kernel = true;
	tasks[1].kernel = KERNEL_SPOTRF;
	tasks[1].nargs = 1; /* buffer 0 of none */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	tasks[1].kernel = KERNEL_COUNT;
	tasks[1].nargs = 0;
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	tasks[1].kernel = KERNEL_NOOP;
	tasks[1].skipped = true; /* skipped, with no predecessor to release it */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	tasks[1].skipped = false;
	tasks[0].skipped = true; /* skipped, and no kernel */
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	tasks[0].skipped = false;
	tasks[1].kernel = KERNEL_COUNT;
	edges[0].dst = 2; /* out of range */
	w.nedges = 1;
	tasks[1].kernel = KERNEL_NOOP;
	assert_int_equal(wl_trace_write(f, &w), -TDM_EINVAL);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(len, 0);
	free(buf);
}

/* The recorder's calls: buffer ids as given, devices by index,
 * predecessors without data. */
static void test_write_streaming(void **state)
{
	static const char want[] =
	        "{\"tandem_trace\":1,\"machine\":\"box \\\"1\\\"\",\"policy\":\"dmda\","
	        "\"devices\":[\"cpu0\",\"gpu0\"]}\n"
	        "{\"buffer\":100,\"bytes\":64}\n"
	        "{\"buffer\":7,\"bytes\":128,\"keep\":true}\n"
	        "{\"graph\":42,\"arrival_ns\":2.5,\"tasks\":3}\n"
	        "{\"task\":0,\"name\":\"p\",\"kernel\":\"spotrf\",\"flops\":1,\"args\":[[100,"
	        "\"rw\"]],"
	        "\"device\":1,\"start_ns\":3,\"end_ns\":4}\n"
	        "{\"task\":1,\"name\":\"s\",\"kernel\":\"strsm\",\"args\":[[100,\"r\"],[7,\"rw\"]],"
	        "\"after\":[0]}\n"
	        "{\"task\":2,\"name\":\"x\",\"cost_ns\":12,\"after\":[0,1]}\n";
	const char *devs[2] = { "cpu0", "gpu0" };
	struct wl_task tasks[3] = {
		{ .name = "p",
		  .has_kernel = true,
		  .kernel = KERNEL_SPOTRF,
		  .feat = { .flops = 1 },
		  .nargs = 1,
		  .args = { { 100, TDM_RW } },
		  .rec_device = 2,
		  .rec_start_ns = 3,
		  .rec_end_ns = 4 },
		{ .name = "s",
		  .has_kernel = true,
		  .kernel = KERNEL_STRSM,
		  .nargs = 2,
		  .args = { { 100, TDM_R }, { 7, TDM_RW } } },
		{ .name = "x", .cost = 12 },
	};
	struct wl_graph g = { .ntasks = 3, .arrival_ns = 2.5 };
	uint32_t pred_off[4] = { 0, 0, 1, 3 }, pred[3] = { 0, 0, 1 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct workload w;

	(void)state;
	assert_non_null(f);
	assert_int_equal(wl_trace_write_header(f, "box \"1\"", "dmda", devs, 2), 0);
	assert_int_equal(wl_trace_write_buffer(f, 100, 64, false), 0);
	assert_int_equal(wl_trace_write_buffer(f, 7, 128, true), 0);
	assert_int_equal(wl_trace_write_graph(f, 42, &g, tasks, pred_off, pred), 0);
	/* refused, writing nothing: a predecessor not earlier, too many
	 * arguments, no tasks, too many devices */
	pred[0] = 1;
	assert_int_equal(wl_trace_write_graph(f, 43, &g, tasks, pred_off, pred), -TDM_EINVAL);
	pred[0] = 0;
	tasks[2].nargs = TDM_MAX_ARGS + 1;
	assert_int_equal(wl_trace_write_graph(f, 43, &g, tasks, pred_off, pred), -TDM_EINVAL);
	tasks[2].nargs = 0;
	g.ntasks = 0;
	assert_int_equal(wl_trace_write_graph(f, 43, &g, tasks, pred_off, pred), -TDM_EINVAL);
	assert_int_equal(wl_trace_write_header(f, NULL, NULL, devs, 65), -TDM_EINVAL);
	assert_int_equal(fclose(f), 0);
	if (strcmp(buf, want))
		print_error("got:\n%s", buf);
	assert_string_equal(buf, want);

	trace_ok(buf, &w);
	assert_int_equal(w.ntasks, 3);
	assert_int_equal(w.nbufs, 2);
	assert_int_equal(w.tasks[0].args[0].buf, 0);
	assert_int_equal(w.tasks[1].args[1].buf, 1);
	assert_int_equal(w.tasks[0].rec_device, 2);
	assert_int_equal(w.nedges, 3);
	assert_edge(&w, 0, 0, 1, 64);
	assert_edge(&w, 1, 0, 2, 0);
	assert_edge(&w, 2, 1, 2, 0);
	wl_free(&w);
	free(buf);
}

static void test_load(void **state)
{
	char path[] = "/tmp/test_trace_XXXXXX";
	int fd = mkstemp(path);
	char err[WL_ERR_MAX];
	struct workload w;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, basic, strlen(basic)), (ssize_t)strlen(basic));
	close(fd);
	assert_int_equal(wl_trace_load(path, &w, err, sizeof(err)), 0);
	check_basic(&w);
	assert_string_equal(w.name, wl_basename(path));
	wl_free(&w);
	unlink(path);
	assert_int_equal(wl_trace_load(path, &w, err, sizeof(err)), -TDM_ESYS);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_int_equal(w.ntasks, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_basic),         cmocka_unit_test(test_parse_minimal),
		cmocka_unit_test(test_parse_errors),        cmocka_unit_test(test_parse_long_lines),
		cmocka_unit_test(test_write_exact),         cmocka_unit_test(test_write_round_trip),
		cmocka_unit_test(test_write_other_sources), cmocka_unit_test(test_write_invalid),
		cmocka_unit_test(test_write_streaming),     cmocka_unit_test(test_load),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
