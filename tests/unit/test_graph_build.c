/* The graph builder (graph/build.h) and the CSR helper (common/csr.h):
 * successor lists and dependency counts, the dependency rule, edge data,
 * the edge budget and errors; and one program given to the daemon's
 * intake, to the generators' path (wl_infer_edges) and to the
 * simulator's (wl_task_deps, sim_run), which must all see the same edges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/csr.h"
#include "common/log.h"
#include "graph/build.h"
#include "sim/sim.h"
#include "tests/harness/intake_harness.h"
#include "workload/workload.h"

/* ---- helpers --------------------------------------------------------------- */

static void add_tasks(struct graph_build *gb, uint32_t n)
{
	struct engine_task t;
	uint32_t index;
	memset(&t, 0, sizeof(t));
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(graph_build_task(gb, &t, &index), 0);
		assert_int_equal(index, i);
	}
}

/* g's successors as "a>b" words in CSR order. */
static void edges_text(const struct engine_graph *g, char *out, size_t len)
{
	size_t at = 0;
	out[0] = '\0';
	for (uint32_t v = 0; v < g->ntasks; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			at += (size_t)snprintf(out + at, len - at, "%s%u>%u", at ? " " : "", v,
			                       g->succ[k]);
}

static void assert_edges(const struct engine_graph *g, const char *want)
{
	char got[1024];
	edges_text(g, got, sizeof(got));
	assert_string_equal(got, want);
}

static void free_graph(struct engine_graph *g)
{
	free((double *)g->edge_data);
	engine_graph_free_arrays(g);
}

/* ---- common/csr.h ------------------------------------------------------------ */

static void test_csr_group_and_transpose(void **state)
{
	/* (from, to) pairs; rows by `to`, stable */
	static const uint32_t pairs[] = { 0, 2, 1, 2, 0, 1, 2, 3, 0, 3, 1, 3 };
	uint32_t off[5], perm[6], succ_off[5], succ[6], t_off[5], t_adj[6];
	(void)state;
	csr_group(off, perm, 4, pairs + 1, 2 * sizeof(*pairs), 6);
	const uint32_t want_off[] = { 0, 0, 1, 3, 6 }, want_perm[] = { 2, 0, 1, 3, 4, 5 };
	assert_memory_equal(off, want_off, sizeof(want_off));
	assert_memory_equal(perm, want_perm, sizeof(want_perm));
	/* by `from`, then back */
	csr_group(succ_off, succ, 4, pairs, 2 * sizeof(*pairs), 6);
	for (uint32_t k = 0; k < 6; k++)
		succ[k] = pairs[2 * succ[k] + 1];
	const uint32_t want_succ[] = { 2, 1, 3, 2, 3, 3 };
	assert_memory_equal(succ, want_succ, sizeof(want_succ));
	csr_transpose(4, succ_off, succ, t_off, t_adj);
	const uint32_t want_t_adj[] = { 0, 0, 1, 0, 1, 2 };
	assert_memory_equal(t_off, want_off, sizeof(want_off));
	assert_memory_equal(t_adj, want_t_adj, sizeof(want_t_adj));
	/* nothing to group */
	csr_group(off, perm, 4, NULL, 8, 0);
	assert_int_equal(off[4], 0);
}

/* ---- the builder ------------------------------------------------------------- */

static void test_csr_shape(void **state)
{
	struct graph_build gb;
	struct engine_graph g = { 0 };
	(void)state;
	graph_build_init(&gb, 0, 0);
	add_tasks(&gb, 5);
	/* Rows keep the order edges were first given; a pair given twice is
	 * one edge; an edge may point back (the caller keeps it acyclic). */
	assert_int_equal(graph_build_edge(&gb, 0, 3), 0);
	assert_int_equal(graph_build_edge(&gb, 0, 1), 0);
	assert_int_equal(graph_build_edge(&gb, 2, 4), 0);
	assert_int_equal(graph_build_edge(&gb, 0, 3), 0);
	assert_int_equal(graph_build_edge(&gb, 4, 1), 0);
	assert_int_equal(gb.nedges, 5);
	assert_false(gb.unique);
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	graph_build_fini(&gb);
	assert_int_equal(g.ntasks, 5);
	assert_edges(&g, "0>3 0>1 2>4 4>1");
	const uint32_t want_off[] = { 0, 2, 2, 3, 3, 4 }, want_ndeps[] = { 0, 2, 0, 1, 1 };
	assert_memory_equal(g.succ_off, want_off, sizeof(want_off));
	for (uint32_t i = 0; i < 5; i++) {
		assert_ptr_equal(g.tasks[i].graph, &g);
		assert_int_equal(g.tasks[i].index, i);
		assert_int_equal(atomic_load(&g.tasks[i].ndeps), want_ndeps[i]);
	}
	assert_null(g.edge_data);
	free_graph(&g);

	/* Edges by target, sources ascending (as the simulator gives a
	 * workload's): none can repeat, the same result without looking. */
	graph_build_init(&gb, 0, 0);
	add_tasks(&gb, 4);
	assert_int_equal(graph_build_edge_data(&gb, 0, 2, 1), 0);
	assert_int_equal(graph_build_edge_data(&gb, 1, 2, 2), 0);
	assert_int_equal(graph_build_edge_data(&gb, 0, 3, 3), 0);
	assert_int_equal(graph_build_edge_data(&gb, 2, 3, 4), 0);
	assert_true(gb.unique);
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	graph_build_fini(&gb);
	assert_edges(&g, "0>2 0>3 1>2 2>3");
	const double want_data[] = { 1, 3, 2, 4 };
	assert_memory_equal(g.edge_data, want_data, sizeof(want_data));
	assert_int_equal(atomic_load(&g.tasks[3].ndeps), 2);
	free_graph(&g);
}

/* Finishes the graph, checks that its edges are exactly these, frees it. */
static void finish_with_edges(struct graph_build *gb, const char *edges)
{
	struct engine_graph g = { 0 };
	assert_int_equal(graph_build_finish(gb, &g), 0);
	graph_build_fini(gb);
	assert_edges(&g, edges);
	free_graph(&g);
}

/* Each case of the rule, per buffer, in the order of the accesses. */
static void test_rule(void **state)
{
	struct graph_build gb;
	uint32_t t;
	(void)state;
	graph_build_init(&gb, 8, 0);
#define TASK() assert_int_equal(graph_build_task(&gb, &(struct engine_task){ 0 }, &t), 0)
#define ACCESS(key, mode, first)                                                                   \
	assert_int_equal(graph_build_access(&gb, t, key, 0, 64, mode), first)
	TASK(); /* 0 writes 1 */
	ACCESS(1, TDM_W, 1);
	TASK(); /* 1 reads 1: after 0 (read after write) */
	ACCESS(1, TDM_R, 0);
	TASK(); /* 2 reads 1 twice: after 0, once */
	ACCESS(1, TDM_R, 0);
	ACCESS(1, TDM_R, 0);
	TASK(); /* 3 updates 1: after its readers 1 and 2 only */
	ACCESS(1, TDM_RW, 0);
	TASK(); /* 4 writes 1: after 3 (write after write) */
	ACCESS(1, TDM_W, 0);
	TASK(); /* 5 reads 1 and writes it: after 4, not after itself */
	ACCESS(1, TDM_R, 0);
	ACCESS(1, TDM_W, 0);
	TASK(); /* 6 writes 2 then reads it: no edge; updates 1: after 5 */
	ACCESS(2, TDM_W, 1);
	ACCESS(2, TDM_R, 0);
	ACCESS(1, TDM_RW, 0);
	TASK(); /* 7 writes 2 after its reader 6, which wrote it too: once */
	ACCESS(2, TDM_W, 0);
#undef TASK
#undef ACCESS
	finish_with_edges(&gb, "0>1 0>2 1>3 2>3 3>4 4>5 5>6 6>7");
}

/* The rule by byte range: only overlapping ranges are ordered. */
static void test_rule_ranges(void **state)
{
	struct graph_build gb;
	uint32_t t;
	(void)state;
	graph_build_init(&gb, 8, 0);
#define TASK() assert_int_equal(graph_build_task(&gb, &(struct engine_task){ 0 }, &t), 0)
#define ACCESS(off, len, mode) assert_true(graph_build_access(&gb, t, 1, off, len, mode) >= 0)
	TASK(); /* 0 writes [0, 100) */
	ACCESS(0, 100, TDM_W);
	TASK(); /* 1 writes [100, 200): no edge */
	ACCESS(100, 100, TDM_W);
	TASK(); /* 2 reads [50, 150): after 0 and 1 */
	ACCESS(50, 100, TDM_R);
	TASK(); /* 3 writes [0, 10): after 0 (2 did not read it) */
	ACCESS(0, 10, TDM_W);
	TASK(); /* 4 writes [60, 70): after its reader 2 only (2 read all 0 wrote there) */
	ACCESS(60, 10, TDM_W);
	TASK(); /* 5 writes [40, 60): after 2 (read [50, 60)) and 0 ([40, 50) unread) */
	ACCESS(40, 20, TDM_W);
	TASK(); /* 6 reads [0, 200): after the last writers 3, 0 (what is left), 5, 4, 1 */
	ACCESS(0, 200, TDM_R);
	TASK(); /* 7 reads [200, 300): nothing wrote it */
	ACCESS(200, 100, TDM_R);
#undef TASK
#undef ACCESS
	finish_with_edges(&gb, "0>2 0>3 0>5 0>6 1>2 1>6 2>4 2>5 3>6 4>6 5>6");
}

/* A decode step over one pooled KV buffer: each request appends its row to
 * its own slice, then its attention reads the slice, then the next step's
 * append: no edge between requests, and each request's tasks in order. */
static void test_pooled_kv_independent(void **state)
{
	enum { NREQ = 16, SLICE = 4096, ROW = 256, STEPS = 2 };
	struct graph_build gb;
	struct engine_graph g = { 0 };
	uint32_t t, req_of[NREQ * 2 * STEPS];
	(void)state;
	graph_build_init(&gb, 0, 0);
	for (uint32_t step = 0; step < STEPS; step++) {
		for (uint32_t r = 0; r < NREQ; r++) {
			uint64_t base = (uint64_t)r * SLICE, len = (uint64_t)(8 + step) * ROW;
			/* append: writes row 8 + step of the slice */
			assert_int_equal(graph_build_task(&gb, &(struct engine_task){ 0 }, &t), 0);
			req_of[t] = r;
			assert_true(graph_build_access(&gb, t, 7, base + len - ROW, ROW, TDM_W) >=
			            0);
			/* attention: reads the slice's rows so far (keys), writes its output */
			assert_int_equal(graph_build_task(&gb, &(struct engine_task){ 0 }, &t), 0);
			req_of[t] = r;
			assert_true(graph_build_access(&gb, t, 7, base, len, TDM_R) >= 0);
			assert_true(graph_build_access(&gb, t, 8, (uint64_t)r * ROW, ROW, TDM_W) >=
			            0);
		}
	}
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	graph_build_fini(&gb);
	uint32_t nedges = 0;
	for (uint32_t v = 0; v < g.ntasks; v++) {
		for (uint32_t k = g.succ_off[v]; k < g.succ_off[v + 1]; k++) {
			assert_int_equal(req_of[v], req_of[g.succ[k]]);
			nedges++;
		}
	}
	/* Per request: append0 > attn0 (the row it reads), append0 > attn1
	 * (that row again), append1 > attn1 (the new row), attn0 > attn1
	 * (the output); append1 writes a row attn0 did not read: no edge. */
	for (uint32_t r = 0; r < NREQ; r++) {
		uint32_t a0 = 2 * r, n0 = a0 + 1, a1 = 2 * NREQ + 2 * r, n1 = a1 + 1;
		assert_int_equal(atomic_load(&g.tasks[a0].ndeps), 0);
		assert_int_equal(atomic_load(&g.tasks[n0].ndeps), 1);
		assert_int_equal(atomic_load(&g.tasks[a1].ndeps), 0);
		assert_int_equal(atomic_load(&g.tasks[n1].ndeps), 3);
	}
	assert_int_equal(nedges, 4 * NREQ);
	free_graph(&g);
}

static void test_edge_data(void **state)
{
	struct graph_build gb;
	struct engine_graph g = { 0 };
	(void)state;
	graph_build_init(&gb, 0, 0);
	add_tasks(&gb, 3);
	assert_int_equal(graph_build_access(&gb, 2, 9, 0, 8, TDM_R), 1);
	assert_int_equal(graph_build_edge(&gb, 1, 2), 0); /* before any data */
	assert_int_equal(graph_build_edge_data(&gb, 0, 2, 5), 0);
	assert_int_equal(graph_build_edge_data(&gb, 0, 2, 7), 0);
	assert_int_equal(graph_build_edge_data(&gb, 0, 2, 6), 0);
	assert_int_equal(graph_build_edge_data(&gb, 0, 1, 0), 0);
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	graph_build_fini(&gb);
	assert_edges(&g, "0>2 0>1 1>2");
	assert_non_null(g.edge_data);
	assert_true(g.edge_data[0] == 7); /* the largest of a pair */
	assert_true(g.edge_data[1] == 0);
	assert_true(g.edge_data[2] == GRAPH_BUILD_NO_DATA); /* given without */
	free_graph(&g);
}

/* A reserved graph's tasks are filled in place, in the one block reserved
 * (none moves as more come), which a large graph gets on a cache line;
 * the graph is the same as without the reserve. */
static void test_reserve(void **state)
{
	const uint32_t n = 4096; /* 2.3 MB of tasks */
	struct graph_build gb;
	struct engine_graph g = { 0 };
	(void)state;
	graph_build_init(&gb, n, 0);
	assert_int_equal(graph_build_reserve(&gb, n), 0);
	struct engine_task *first = graph_build_next(&gb);
	assert_non_null(first);
	assert_int_equal((uintptr_t)first % ENGINE_TASK_LINE, 0);
	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = graph_build_next(&gb);
		uint32_t index;
		assert_ptr_equal(t, first + i);
		memset(t, 0, sizeof(*t));
		t->priority = (int32_t)i;
		assert_int_equal(graph_build_task(&gb, t, &index), 0);
		assert_int_equal(index, i);
		if (i)
			assert_int_equal(graph_build_edge(&gb, i - 1, i), 0);
	}
	assert_int_equal(graph_build_reserve(&gb, 16), 0); /* less than it has: nothing */
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	graph_build_fini(&gb);
	assert_ptr_equal(g.tasks, first);
	assert_int_equal(g.ntasks, n);
	assert_int_equal(g.tasks[n - 1].priority, (int32_t)(n - 1));
	assert_int_equal(g.tasks[n - 1].ndeps, 1);
	assert_int_equal(g.tasks[0].ndeps, 0);
	free_graph(&g);
}

/* Edges given count against the budget, duplicates too. */
static void test_budget(void **state)
{
	struct graph_build gb;
	(void)state;
	graph_build_init(&gb, 0, 3);
	add_tasks(&gb, 4);
	assert_int_equal(graph_build_edge(&gb, 0, 1), 0);
	assert_int_equal(graph_build_edge(&gb, 0, 1), 0);
	assert_int_equal(graph_build_access(&gb, 3, 1, 0, 4, TDM_W), 1);
	assert_int_equal(graph_build_edge(&gb, 2, 3), 0);
	assert_int_equal(graph_build_edge(&gb, 1, 3), -TDM_EQUOTA);
	graph_build_fini(&gb);

	/* The rule's edges too: a write after more readers than the budget
	 * has room for (79 reads after a write, then a write). */
	graph_build_init(&gb, 0, 100);
	uint32_t t;
	int rc = 0;
	for (uint32_t i = 0; i <= 80 && rc >= 0; i++) {
		assert_int_equal(graph_build_task(&gb, NULL, &t), 0);
		rc = graph_build_access(&gb, t, 7, 0, 4, i % 80 ? TDM_R : TDM_W);
		assert_true(rc == (i == 0) || i == 80);
	}
	assert_int_equal(rc, -TDM_EQUOTA);
	assert_int_equal(gb.nedges, 100);
	graph_build_fini(&gb);
}

/* Through the daemon: a graph past intake's edge budget (32 per task and
 * 1024) is refused with -TDM_EQUOTA, field TDM_REJECT_EDGE. */
static void test_intake_budget(void **state)
{
	struct harness h;
	struct tdm_cqe c[4];
	(void)state;
	assert_int_equal(harness_init(&h, 64, 64), 0);
	struct tdm_sqe e = sqe_begin(3, 2);
	assert_true(harness_push(&h, &e));
	e = sqe_fill(0, h.handle[0], 0, 64);
	assert_true(harness_push(&h, &e));
	e = sqe_fill(1, h.handle[1], 0, 64);
	assert_true(harness_push(&h, &e));
	/* 2 * 32 + 1024 = 1088 edges 0 -> 1: 15 entries of 76 is 1140. */
	for (int i = 0; i < 15; i++) {
		struct tdm_sqe x = { .op = TDM_SQE_EDGES };
		x.u.edges.task_index = 1;
		x.u.edges.nedges = TDM_EDGES_PER_SQE;
		assert_true(harness_push(&h, &x));
	}
	e = sqe_end();
	assert_true(harness_push(&h, &e));
	assert_int_equal(harness_run(&h), 0);
	assert_int_equal(h.naccepted, 0);
	assert_int_equal(harness_reap(&h, c, 4), 1);
	assert_int_equal(c[0].op, TDM_CQE_GRAPH_DONE);
	assert_int_equal(c[0].status, -TDM_EQUOTA);
	assert_int_equal(c[0].detail, TDM_REJECT_EDGE);
	harness_fini(&h);
}

static void test_errors(void **state)
{
	struct graph_build gb;
	struct engine_graph g = { 0 };
	uint32_t t;
	(void)state;
	graph_build_init(&gb, 0, 0);
	assert_int_equal(graph_build_access(&gb, 0, 1, 0, 4, TDM_R), -TDM_EINVAL); /* no task */
	add_tasks(&gb, 2);
	assert_int_equal(graph_build_access(&gb, 0, 1, 0, 4, TDM_R), -TDM_EINVAL); /* not last */
	assert_int_equal(graph_build_access(&gb, 1, 1, 0, 4, 0), -TDM_EINVAL); /* no mode */
	assert_int_equal(graph_build_edge(&gb, 1, 1), -TDM_EEDGE);
	assert_int_equal(graph_build_edge(&gb, 0, 2), 0); /* task 2 never comes */
	assert_int_equal(graph_build_finish(&gb, &g), -TDM_EEDGE);
	assert_null(g.succ);
	graph_build_fini(&gb);
	/* Counted tasks give a CSR, not an engine graph. */
	graph_build_init(&gb, 0, 0);
	assert_int_equal(graph_build_task(&gb, NULL, &t), 0);
	assert_int_equal(graph_build_finish(&gb, &g), -TDM_EINVAL);
	graph_build_fini(&gb);
}

/* A builder reset for the next graph forgets the last one's buffers. */
static void test_reset(void **state)
{
	struct graph_build gb;
	uint32_t *off, *succ, t;
	(void)state;
	graph_build_init(&gb, 0, 0);
	for (int round = 0; round < 3; round++) {
		graph_build_reset(&gb, 2, 0);
		for (uint32_t i = 0; i < 2; i++) {
			assert_int_equal(graph_build_task(&gb, NULL, &t), 0);
			assert_int_equal(graph_build_access(&gb, t, 42, 0, 4, TDM_RW), i == 0);
		}
		assert_int_equal(graph_build_csr(&gb, &off, &succ, NULL), 0);
		assert_int_equal(off[1], 1);
		assert_int_equal(off[2], 1);
		assert_int_equal(succ[0], 1);
		free(off);
		free(succ);
	}
	graph_build_fini(&gb);
}

/* ---- one program, three front ends ---------------------------------------- */

enum { A, B, C, NBUF };

struct prog_task {
	const char *kernel;
	uint32_t buf[2]; /* in the kernel's argument order */
};

/* R, W and RW accesses over three buffers: W after W (7), R after W (2,
 * 3), RW after several readers (5), buffers used twice by one task (8,
 * 9); and explicit edges, one of them also implied (2 -> 5). */
static const struct prog_task prog[] = {
	{ "fill", { A } }, /* 0 */
	{ "fill", { B } }, /* 1 */
	{ "axpy", { A, B } }, /* 2: reads A, updates B */
	{ "copy", { A, C } }, /* 3: reads A, writes C */
	{ "axpy", { A, C } }, /* 4 */
	{ "axpy", { B, A } }, /* 5: updates A after its readers 2, 3, 4 */
	{ "fill", { C } }, /* 6 */
	{ "fill", { C } }, /* 7 */
	{ "axpy", { C, C } }, /* 8 */
	{ "copy", { B, B } }, /* 9: after reader 5 */
	{ "axpy", { A, B } }, /* 10 */
};
#define NPROG (sizeof(prog) / sizeof(prog[0]))
static const uint32_t explicit_edges[][2] = { { 1, 10 }, { 2, 5 } };
/* The edges the daemon gives it. A write after readers follows them and
 * not the last writer: no 0 -> 5. */
static const char prog_edges[] = "0>2 0>3 0>4 1>2 1>10 2>5 2>9 3>4 3>5 4>5 4>6 5>9 5>10 6>7 "
                                 "7>8 9>10";

static struct engine_graph *prog_through_intake(struct harness *h)
{
	struct tdm_sqe e = sqe_begin(1, NPROG);
	assert_true(harness_push(h, &e));
	for (uint32_t i = 0; i < NPROG; i++) {
		const struct kernel_def *k = kernel_by_id(kernel_lookup(prog[i].kernel));
		e = sqe_task(i, prog[i].kernel);
		e.u.task.nargs = (uint8_t)k->nargs;
		for (unsigned a = 0; a < k->nargs; a++)
			e.u.task.args[a] =
			        (struct tdm_wire_arg){ .handle = h->handle[prog[i].buf[a]],
				                       .mode = k->arg_modes[a],
				                       .length = HARNESS_BUFFER_BYTES };
		e.u.task.nscalars = (uint8_t)k->nscalars;
		for (unsigned s = 0; s < k->nscalars; s++)
			e.u.task.scalar_types[s] = k->scalar_types[s];
		for (size_t x = 0; x < sizeof(explicit_edges) / sizeof(explicit_edges[0]); x++)
			if (explicit_edges[x][1] == i)
				e.u.task.edges[e.u.task.nedges++] = explicit_edges[x][0];
		assert_true(harness_push(h, &e));
	}
	e = sqe_end();
	assert_true(harness_push(h, &e));
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(h->naccepted, 1);
	return h->accepted[0];
}

/* The program as a workload of kernel tasks with its explicit edges. */
static void prog_workload(struct workload *w)
{
	wl_init(w);
	snprintf(w->name, sizeof(w->name), "prog");
	w->units = WL_UNITS_NS;
	w->ntasks = NPROG;
	w->tasks = calloc(NPROG, sizeof(*w->tasks));
	w->nbufs = NBUF;
	w->buf_bytes = calloc(NBUF, sizeof(*w->buf_bytes));
	w->buf_keep = calloc(NBUF, sizeof(*w->buf_keep));
	w->nedges = sizeof(explicit_edges) / sizeof(explicit_edges[0]);
	w->edges = calloc(w->nedges, sizeof(*w->edges));
	assert_true(w->tasks && w->buf_bytes && w->buf_keep && w->edges);
	for (uint32_t b = 0; b < NBUF; b++)
		w->buf_bytes[b] = HARNESS_BUFFER_BYTES;
	for (uint32_t e = 0; e < w->nedges; e++)
		w->edges[e] = (struct wl_edge){ explicit_edges[e][0], explicit_edges[e][1], 0 };
	for (uint32_t i = 0; i < NPROG; i++) {
		const struct kernel_def *k = kernel_by_id(kernel_lookup(prog[i].kernel));
		struct wl_task *t = &w->tasks[i];
		struct tdm_kernel_call call = { .nargs = k->nargs };
		snprintf(t->name, sizeof(t->name), "%s%u", k->name, i);
		t->has_kernel = true;
		t->kernel = (uint16_t)k->id;
		t->nargs = (uint8_t)k->nargs;
		for (unsigned a = 0; a < k->nargs; a++) {
			t->args[a] =
			        (struct wl_arg){ .buf = prog[i].buf[a], .mode = k->arg_modes[a] };
			call.len[a] = HARNESS_BUFFER_BYTES;
		}
		k->features(&call, &t->feat);
	}
}

static void test_same_edges_everywhere(void **state)
{
	struct harness h;
	struct workload w;
	char text[1024];
	(void)state;

	/* The daemon. */
	assert_int_equal(harness_init(&h, 64, 64), 0);
	struct engine_graph *daemon = prog_through_intake(&h);
	assert_edges(daemon, prog_edges);

	/* The simulator's graph: the same builder fed from the workload. */
	prog_workload(&w);
	uint32_t *pred_off, *pred_edge, index;
	struct graph_build gb;
	struct engine_graph sim = { 0 };
	assert_int_equal(wl_preds(&w, &pred_off, &pred_edge), 0);
	graph_build_init(&gb, NPROG, 0);
	for (uint32_t v = 0; v < NPROG; v++) {
		assert_int_equal(graph_build_task(&gb, &(struct engine_task){ 0 }, &index), 0);
		assert_int_equal(wl_task_deps(&w, v, 0, NPROG, pred_off, pred_edge, false, &gb), 0);
	}
	assert_int_equal(graph_build_finish(&gb, &sim), 0);
	graph_build_fini(&gb);
	free(pred_off);
	free(pred_edge);
	assert_memory_equal(sim.succ_off, daemon->succ_off, (NPROG + 1) * sizeof(uint32_t));
	assert_memory_equal(sim.succ, daemon->succ, daemon->succ_off[NPROG] * sizeof(uint32_t));
	for (uint32_t v = 0; v < NPROG; v++)
		assert_int_equal(atomic_load(&sim.tasks[v].ndeps),
		                 atomic_load(&daemon->tasks[v].ndeps));
	free_graph(&sim);
	harness_fini(&h);

	/* The generators' path: the workload's own edges. */
	assert_int_equal(wl_infer_edges(&w), 0);
	size_t at = 0;
	for (uint32_t e = 0; e < w.nedges; e++)
		at += (size_t)snprintf(text + at, sizeof(text) - at, "%s%u>%u", e ? " " : "",
		                       w.edges[e].src, w.edges[e].dst);
	assert_string_equal(text, prog_edges);
	/* inferred data: what the source wrote that the successor touches */
	assert_int_equal(w.edges[0].dst, 2);
	assert_true(w.edges[0].data == HARNESS_BUFFER_BYTES); /* 0 -> 2: A */
	assert_int_equal(w.edges[9].src, 4);
	assert_int_equal(w.edges[9].dst, 5);
	assert_true(w.edges[9].data == 0); /* write after read */

	/* The simulator itself, from the workload with only its explicit
	 * edges: every edge of the daemon's holds in the schedule. */
	struct workload w2;
	prog_workload(&w2);
	struct machine m;
	struct sim_result r;
	struct sim_opts o = { .policy = "eager", .record = true };
	char err[256];
	machine_init(&m);
	snprintf(m.name, sizeof(m.name), "box");
	m.ndevices = 4; /* three cores and an accelerator */
	m.nnodes = 2;
	for (unsigned d = 0; d < m.ndevices; d++) {
		bool gpu = d == 3;
		m.dev[d] = (struct machine_device){ .kind = gpu ? TDM_DEV_GPU : TDM_DEV_CPU,
			                            .node = gpu,
			                            .mem_bytes = gpu ? 1u << 30 : 0,
			                            .gemm_gflops = 10,
			                            .mem_gbps = 1,
			                            .launch_ns = 1000 };
		snprintf(m.dev[d].name, sizeof(m.dev[d].name), "%s%u", gpu ? "gpu" : "cpu", d);
		snprintf(m.dev[d].model, sizeof(m.dev[d].model), gpu ? "gpu" : "cpu");
	}
	int rc = sim_run(&m, &w2, &o, &r, err, sizeof(err));
	if (rc)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	for (uint32_t e = 0; e < w.nedges; e++) {
		const struct sched_span *s = &r.spans[w.edges[e].src],
		                        *t = &r.spans[w.edges[e].dst];
		if (t->start_ns < s->end_ns)
			print_error("edge %u -> %u: %llu < %llu\n", w.edges[e].src, w.edges[e].dst,
			            (unsigned long long)t->start_ns, (unsigned long long)s->end_ns);
		assert_true(t->start_ns >= s->end_ns);
	}
	sim_result_free(&r);
	machine_free(&m);
	wl_free(&w2);
	wl_free(&w);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csr_group_and_transpose),
		cmocka_unit_test(test_csr_shape),
		cmocka_unit_test(test_rule),
		cmocka_unit_test(test_rule_ranges),
		cmocka_unit_test(test_pooled_kv_independent),
		cmocka_unit_test(test_edge_data),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_intake_budget),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_same_edges_everywhere),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
