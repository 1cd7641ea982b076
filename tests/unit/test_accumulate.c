/* The accumulate access mode (TDM_ACC, docs/kernels.md): the dependency
 * rule leaves accumulators of one range unordered among themselves and
 * orders them against the plain accesses before and after; the engine runs
 * each on a zeroed partial and adds the partials to the range in task
 * order, so the result is the same bits whatever order they finished in
 * and whichever device ran each. Devices here are fake cores that run the
 * CPU kernels; the engine runs without threads, each pattern of workers
 * picking tasks giving another completion order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "graph/build.h"
#include "policies/policy.h"
#include "tandem.h"
#include "tests/harness/host_engine.h"

/* ---- the rule ------------------------------------------------------------ */

static void add_task(struct graph_build *gb, uint32_t *index)
{
	struct engine_task t;
	memset(&t, 0, sizeof(t));
	assert_int_equal(graph_build_task(gb, &t, index), 0);
}

static void edges_text(const struct engine_graph *g, char *out, size_t len)
{
	size_t at = 0;
	out[0] = '\0';
	for (uint32_t v = 0; v < g->ntasks; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			at += (size_t)snprintf(out + at, len - at, "%s%u>%u", at ? " " : "", v,
			                       g->succ[k]);
}

/* Builds tasks with one access each: modes[i] on [off[i], off[i] + len[i])
 * of buffer 1; returns the edges as text. */
static void rule(const uint8_t *modes, const uint64_t *off, const uint64_t *len, uint32_t n,
                 const char *want)
{
	struct graph_build gb;
	struct engine_graph g = { 0 };
	char got[512];
	graph_build_init(&gb, n, 0);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t idx;
		add_task(&gb, &idx);
		assert_true(graph_build_access(&gb, idx, 1, off[i], len[i], modes[i]) >= 0);
	}
	assert_int_equal(graph_build_finish(&gb, &g), 0);
	edges_text(&g, got, sizeof(got));
	assert_string_equal(got, want);
	engine_graph_free_arrays(&g);
	graph_build_fini(&gb);
}

static void test_rule(void **state)
{
	(void)state;
	const uint8_t W = TDM_W, R = TDM_R, A = TDM_ACC, RW = TDM_RW;
	/* write; three accumulators (unordered, each after the write); two
	 * reads after them all; a write after both reads. */
	rule((uint8_t[]){ W, A, A, A, R, R, W }, (uint64_t[]){ 0, 0, 0, 0, 0, 0, 0 },
	     (uint64_t[]){ 64, 64, 64, 64, 64, 64, 64 }, 7,
	     "0>1 0>2 0>3 1>4 1>5 2>4 2>5 3>4 3>5 4>6 5>6");
	/* readers before a group: every accumulator follows them; a write
	 * right after the group follows every accumulator. */
	rule((uint8_t[]){ W, R, R, A, A, RW }, (uint64_t[]){ 0, 0, 0, 0, 0, 0 },
	     (uint64_t[]){ 64, 64, 64, 64, 64, 64 }, 6, "0>1 0>2 1>3 1>4 2>3 2>4 3>5 4>5");
	/* an accumulator of another range starts a new group, after the
	 * first; one of disjoint bytes is not ordered with it. */
	rule((uint8_t[]){ A, A, A, A }, (uint64_t[]){ 0, 0, 0, 128 },
	     (uint64_t[]){ 64, 64, 32, 64 }, 4, "0>2 1>2");
	/* a group closed by a read, then a new group: after that read. */
	rule((uint8_t[]){ A, A, R, A, A }, (uint64_t[]){ 0, 0, 0, 0, 0 },
	     (uint64_t[]){ 64, 64, 64, 64, 64 }, 5, "0>2 1>2 2>3 2>4");
	/* a read of half the range closes that half only. */
	rule((uint8_t[]){ A, A, R, W }, (uint64_t[]){ 0, 0, 0, 0 }, (uint64_t[]){ 64, 64, 32, 64 },
	     4, "0>2 0>3 1>2 1>3 2>3");
}

/* ---- the sum -------------------------------------------------------------- */

#define N 64 /* floats in y */
#define NACC 4

static _Atomic uint32_t order[16];
static _Atomic uint32_t norder;
/* The accumulator (by alpha) whose first launch fails as a device fault:
 * it moves to the other device and finishes later than it would have
 * (0: none). Also checks that a partial is zeroed again for the retry. */
static uint32_t fault_alpha;

static int cpu_launch(const struct backend_device *d, const struct kernel_def *k,
                      const struct tdm_kernel_call *call)
{
	(void)d;
	if (k->id == KERNEL_AXPY) {
		uint32_t alpha = (uint32_t)call->s[0].f32;
		if (alpha == fault_alpha) {
			fault_alpha = 0;
			k->cpu(call); /* garbage in the partial, as a fault may leave */
			return -TDM_EDEVICE;
		}
		order[atomic_fetch_add(&norder, 1) % 16] = alpha;
	}
	return k->cpu(call);
}

static const struct backend_ops cpu_like = { .abi_version = BACKEND_ABI_VERSION,
	                                     .name = "cpu-like",
	                                     .launch = cpu_launch };

static struct engine *make_engine(const struct policy_ops *p)
{
	return host_engine(&cpu_like, p);
}

/* Magnitudes that make the order of the sum show in its bits: x1 = 1e8,
 * x2 = -1e8, x3 = x4 = 1 (per element, scaled), times alpha = 1, 2, 3, 4
 * (alpha also names the task in `order`). */
static float y[N], z[N], xs[NACC][N];

static void set_arg(struct engine_task *t, unsigned i, void *p, size_t len)
{
	t->call.ptr[i] = p;
	t->call.len[i] = len;
}

/* fill(y = 0.5); axpy(x_i, y ACC, alpha i + 1) for each i; copy(y -> z). */
static struct engine_graph *make_sum(struct engine_flow *flow)
{
	struct graph_build gb;
	struct engine_graph *g = calloc(1, sizeof(*g));
	uint32_t idx;
	graph_build_init(&gb, NACC + 2, 0);
	struct engine_task *t = graph_build_next(&gb);
	memset(t, 0, sizeof(*t));
	t->kernel = kernel_by_id(KERNEL_FILL);
	t->call.nargs = 1;
	set_arg(t, 0, y, sizeof(y));
	t->call.s[0].f32 = 0.5f;
	assert_int_equal(graph_build_task(&gb, t, &idx), 0);
	assert_true(graph_build_access(&gb, idx, 1, 0, sizeof(y), TDM_W) >= 0);
	for (uint32_t i = 0; i < NACC; i++) {
		t = graph_build_next(&gb);
		memset(t, 0, sizeof(*t));
		t->kernel = kernel_by_id(KERNEL_AXPY);
		t->call.nargs = 2;
		set_arg(t, 0, xs[i], sizeof(xs[i]));
		set_arg(t, 1, y, sizeof(y));
		t->call.s[0].f32 = (float)(i + 1);
		assert_int_equal(graph_build_task(&gb, t, &idx), 0);
		assert_true(graph_build_access(&gb, idx, 2 + i, 0, sizeof(xs[i]), TDM_R) >= 0);
		assert_true(graph_build_access(&gb, idx, 1, 0, sizeof(y), TDM_ACC) >= 0);
		assert_int_equal(graph_build_accumulate(&gb, idx, 1), 0);
	}
	t = graph_build_next(&gb);
	memset(t, 0, sizeof(*t));
	t->kernel = kernel_by_id(KERNEL_COPY);
	t->call.nargs = 2;
	set_arg(t, 0, y, sizeof(y));
	set_arg(t, 1, z, sizeof(z));
	assert_int_equal(graph_build_task(&gb, t, &idx), 0);
	assert_true(graph_build_access(&gb, idx, 1, 0, sizeof(y), TDM_R) >= 0);
	assert_true(graph_build_access(&gb, idx, 9, 0, sizeof(z), TDM_W) >= 0);
	assert_int_equal(graph_build_finish(&gb, g), 0);
	graph_build_fini(&gb);
	g->flow = flow;
	return g;
}

/* The sum as tandem promises it: y0, then each contribution in task order. */
static void reference(float *out)
{
	for (int j = 0; j < N; j++) {
		float acc = 0.5f;
		for (int i = 0; i < NACC; i++) {
			float c = 0.0f;
			c += (float)(i + 1) * xs[i][j];
			acc += c;
		}
		out[j] = acc;
	}
}

/* Worker patterns: which worker looks for a task at each step. */
static const char *const patterns[] = { "0", "1", "01", "10", "0011", "1100" };

static void run_pattern(struct engine *e, const char *pat)
{
	for (bool any = true; any;) {
		any = false;
		for (const char *c = pat; *c; c++)
			any |= engine_run_one(e, (unsigned)(*c - '0'));
	}
}

static void test_concurrent_and_deterministic(void **state)
{
	(void)state;
	for (int j = 0; j < N; j++) {
		float s = (float)(1 + j % 7);
		xs[0][j] = 1e8f * s;
		xs[1][j] = -0.5e8f * s;
		xs[2][j] = 0.37f * s;
		xs[3][j] = 0.25f + (float)j;
	}
	float want[N];
	reference(want);
	char orders[64][NACC + 1];
	uint32_t norders = 0;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		for (size_t run = 0; run < 5 * sizeof(patterns) / sizeof(patterns[0]); run++) {
			size_t pi = run % (sizeof(patterns) / sizeof(patterns[0]));
			fault_alpha = (uint32_t)(run / (sizeof(patterns) / sizeof(patterns[0])));
			struct engine_flow flow = { .id = 1 };
			struct engine *e = make_engine(*p);
			assert_int_equal(engine_flow_add(e, &flow), 0);
			atomic_store(&host_engine_graphs_done, 0);
			atomic_store(&norder, 0);
			memset(y, 0x7f, sizeof(y));
			struct engine_graph *g = make_sum(&flow);
			/* The accumulators wait for the fill only; the copy for all four. */
			for (uint32_t i = 1; i <= NACC; i++)
				assert_int_equal(atomic_load(&g->tasks[i].ndeps), 1);
			assert_int_equal(atomic_load(&g->tasks[NACC + 1].ndeps), NACC);
			engine_submit(e, g);
			assert_true(engine_run_one(e, 0)); /* the fill */
			/* All four are ready at once: two devices may run two. */
			struct engine_counters c;
			engine_counters(e, &c);
			assert_int_equal(c.queued, NACC);
			run_pattern(e, patterns[pi]);
			run_pattern(e, "01"); /* a faulted device leaves the rest to the other */
			assert_int_equal(atomic_load(&host_engine_graphs_done), 1);
			if (atomic_load(&g->status))
				fail_msg("policy %s, pattern %s, run %zu: status %d", (*p)->name,
				         patterns[pi], run, (int)atomic_load(&g->status));
			if (memcmp(z, want, sizeof(z)) != 0)
				fail_msg(
				        "policy %s, pattern %s, run %zu: the sum differs from task "
				        "order",
				        (*p)->name, patterns[pi], run);
			char o[NACC + 1] = { 0 };
			for (int i = 0; i < NACC; i++)
				o[i] = (char)('0' + order[i]);
			bool seen = false;
			for (uint32_t k = 0; k < norders; k++)
				seen |= strcmp(orders[k], o) == 0;
			if (!seen && norders < 64)
				strcpy(orders[norders++], o);
			engine_graph_free_arrays(g);
			free(g);
			engine_flow_gone(e, &flow);
			engine_destroy(e);
		}
	}
	/* The check means something: the accumulators did finish in
	 * different orders, and the order shows in the bits. */
	assert_true(norders >= 2);
	float other = 0.5f;
	other += 0.37f * 3;
	other += 1e8f;
	other += -1e8f;
	other += 0.25f * 4;
	float inorder = 0.5f;
	inorder += 1e8f;
	inorder += -1e8f;
	inorder += 0.37f * 3;
	inorder += 0.25f * 4;
	assert_true(other != inorder);
}

/* A skipped or failed member adds nothing; a graph that failed leaves y
 * as the tasks before the group left it (no sum is made). */
static void test_member_that_did_not_run(void **state)
{
	(void)state;
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(policy_list()[0]);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	for (int j = 0; j < N; j++)
		for (int i = 0; i < NACC; i++)
			xs[i][j] = (float)(i + 1);
	struct engine_graph *g = make_sum(&flow);
	/* Skip the third accumulator: as if no token chose it. */
	g->tasks[3].guard_router = 1;
	g->tasks[3].guard_expert = 0;
	g->tasks[0].routed = calloc(1, sizeof(uint32_t)); /* expert 0: no token */
	atomic_store(&host_engine_graphs_done, 0);
	engine_submit(e, g);
	run_pattern(e, "01");
	assert_int_equal(atomic_load(&host_engine_graphs_done), 1);
	assert_true(g->tasks[3].flags & TASK_SKIPPED);
	for (int j = 0; j < N; j++)
		assert_true(z[j] == 0.5f + 1 * 1 + 2 * 2 + 4 * 4); /* no 3 * 3 */
	free(g->tasks[0].routed); /* not a router's: set by hand above */
	g->tasks[0].routed = NULL;
	engine_graph_free_arrays(g);
	free(g);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rule),
		cmocka_unit_test(test_concurrent_and_deterministic),
		cmocka_unit_test(test_member_that_did_not_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
