/* Routing seen at run time (docs/kernels.md): a task guarded by a router's
 * expert completes unrun when no token chose that expert, and is priced by
 * the tokens routed to it otherwise; a router whose output is out of range
 * fails its graph, and the engine keeps serving. The engine runs without
 * threads on fake devices whose launches only count: each test writes the
 * router's output (ids, weights) itself, as a kernel (or a client writing
 * the shared buffer under it) would. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "policies/policy.h"
#include "tandem.h"
#include "tests/harness/host_engine.h"

#define N 4 /* tokens */
#define NE 4 /* experts */
#define K 2 /* experts per token */
#define DM 8
#define DFF 16

static _Atomic uint32_t launched[KERNEL_COUNT];
static _Atomic uint32_t expert_runs[NE];
/* The tokens each expert's launch carried (call.routed), as it ran:
 * nrouted -1 when it carried none. */
static int64_t expert_nrouted[NE];
static uint32_t expert_routed[NE][N];

static int count_launch(const struct backend_device *d, const struct kernel_def *k,
                        const struct tdm_kernel_call *call)
{
	(void)d;
	atomic_fetch_add(&launched[k->id], 1);
	if (k->id == KERNEL_MOE_EXPERT) {
		int64_t x = call->s[4].i64;
		atomic_fetch_add(&expert_runs[x], 1);
		expert_nrouted[x] = call->routed ? (int64_t)call->nrouted : -1;
		for (uint32_t i = 0; call->routed && i < call->nrouted && i < N; i++)
			expert_routed[x][i] = call->routed[i];
	}
	return 0;
}

static const struct backend_ops counting_backend = { .abi_version = BACKEND_ABI_VERSION,
	                                             .name = "counting",
	                                             .launch = count_launch };

static struct engine *make_engine(const struct policy_ops *p)
{
	return host_engine(&counting_backend, p);
}

static void run_all(struct engine *e)
{
	for (bool any = true; any;) {
		any = false;
		for (unsigned w = 0; w < 2; w++)
			any |= engine_run_one(e, w);
	}
}

/* The layer's host memory: what the router writes, and one output per
 * expert (kept apart so that untouched is visible). */
struct layer {
	float logits[N * NE], x[N * DM], w[3 * DM * DFF];
	int32_t ids[N * K];
	float wts[N * K];
	float y[NE][N * DM];
};

static void set_arg(struct engine_task *t, unsigned i, void *p, size_t len)
{
	t->call.ptr[i] = p;
	t->call.len[i] = len;
}

/* Task 0: topk_router; tasks 1 .. NE: moe_expert e = task - 1, guarded by
 * task 0 when guarded; task NE + 1: a noop after expert 1 guarded by
 * expert 1's router too (a second guarded task down a chain). */
static struct engine_graph *make_layer(struct engine_flow *flow, struct layer *L, bool guarded)
{
	uint32_t n = NE + 2;
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = flow;
	g->ntasks = n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(NE + 1, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		g->tasks[i].graph = g;
		g->tasks[i].index = i;
	}
	struct engine_task *r = &g->tasks[0];
	r->kernel = kernel_by_id(KERNEL_TOPK_ROUTER);
	r->call.nargs = 3;
	set_arg(r, 0, L->logits, sizeof(L->logits));
	set_arg(r, 1, L->ids, sizeof(L->ids));
	set_arg(r, 2, L->wts, sizeof(L->wts));
	r->call.s[0].i64 = N, r->call.s[1].i64 = NE, r->call.s[2].i64 = K;
	r->flags = guarded ? TASK_ROUTES : 0;
	assert_int_equal(r->kernel->check(&r->call), 0);
	r->kernel->features(&r->call, &r->feat);
	for (uint32_t e = 0; e < NE; e++) {
		struct engine_task *t = &g->tasks[1 + e];
		t->kernel = kernel_by_id(KERNEL_MOE_EXPERT);
		t->call.nargs = 7;
		set_arg(t, 0, L->x, sizeof(L->x));
		for (unsigned a = 0; a < 3; a++)
			set_arg(t, 1 + a, L->w + a * DM * DFF, DM * DFF * sizeof(float));
		set_arg(t, 4, L->ids, sizeof(L->ids));
		set_arg(t, 5, L->wts, sizeof(L->wts));
		set_arg(t, 6, L->y[e], sizeof(L->y[e]));
		t->call.s[0].i64 = N, t->call.s[1].i64 = DM, t->call.s[2].i64 = DFF;
		t->call.s[3].i64 = K, t->call.s[4].i64 = e;
		assert_int_equal(t->kernel->check(&t->call), 0);
		t->kernel->features(&t->call, &t->feat);
		if (guarded)
			t->guard_router = 1, t->guard_expert = e;
		g->succ[e] = 1 + e;
		atomic_init(&t->ndeps, 1);
	}
	/* The chain: expert 1 (task 2) -> a noop guarded by expert 1 as well. */
	struct engine_task *c = &g->tasks[NE + 1];
	c->kernel = kernel_by_id(KERNEL_NOOP);
	if (guarded)
		c->guard_router = 1, c->guard_expert = 1;
	atomic_init(&c->ndeps, 1);
	g->succ[NE] = NE + 1;
	/* Successor rows: task 0 -> experts, task 2 -> the noop, others none. */
	for (uint32_t i = 1; i <= n; i++)
		g->succ_off[i] = i < 3 ? NE : NE + 1;
	return g;
}

static void free_graph(struct engine_graph *g)
{
	engine_graph_free_arrays(g);
	free(g);
}

/* Tokens 0, 1 choose experts 0 and 2, tokens 2, 3 expert 2 and 0 (and
 * token 3 expert 2 twice: it counts once); experts 1 and 3: nobody. */
static void route_to_0_and_2(struct layer *L)
{
	const int32_t ids[N * K] = { 0, 2, 0, 2, 2, 0, 2, 2 };
	memcpy(L->ids, ids, sizeof(ids));
	for (int i = 0; i < N * K; i++)
		L->wts[i] = 0.5f;
}

static void reset_counts(void)
{
	for (int k = 0; k < KERNEL_COUNT; k++)
		atomic_store(&launched[k], 0);
	for (int e = 0; e < NE; e++) {
		atomic_store(&expert_runs[e], 0);
		expert_nrouted[e] = -2; /* did not run */
	}
	memset(expert_routed, 0xff, sizeof(expert_routed));
	atomic_store(&host_engine_graphs_done, 0);
}

static void test_unrouted_experts_skipped(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		static struct layer L;
		struct engine_flow flow = { .id = 1 };
		struct engine *e = make_engine(*p);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		route_to_0_and_2(&L);
		struct engine_graph *g = make_layer(&flow, &L, true);
		engine_submit(e, g);
		run_all(e);
		if (atomic_load(&host_engine_graphs_done) != 1)
			fail_msg("policy %s: graph not done", (*p)->name);
		assert_int_equal(atomic_load(&g->status), 0);
		/* Experts 0 and 2 ran, 1 and 3 did not, nor the noop down 1's chain. */
		assert_int_equal(atomic_load(&expert_runs[0]), 1);
		assert_int_equal(atomic_load(&expert_runs[2]), 1);
		assert_int_equal(atomic_load(&expert_runs[1]), 0);
		assert_int_equal(atomic_load(&expert_runs[3]), 0);
		assert_int_equal(atomic_load(&launched[KERNEL_NOOP]), 0);
		for (uint32_t e2 = 1; e2 <= NE + 1; e2++) {
			struct engine_task *t = &g->tasks[e2];
			bool skip = e2 == 2 || e2 == 4 || e2 == NE + 1;
			assert_int_equal(t->status, 0);
			assert_int_equal(!!(t->flags & TASK_SKIPPED), skip);
			if (skip)
				assert_true(t->end_ns == t->start_ns); /* zero cost */
		}
		/* Features follow the routed tokens: 3 for expert 0 (tokens 0,
		 * 1, 2), 4 for expert 2 (token 3 chose it twice, counted once). */
		struct kernel_features want;
		const struct kernel_def *moe = kernel_by_id(KERNEL_MOE_EXPERT);
		moe->routed_features(&g->tasks[1].call, 3, &want);
		assert_true(g->tasks[1].feat.flops == want.flops);
		assert_true(g->tasks[1].feat.domain == 3.0 * DM * DFF);
		moe->routed_features(&g->tasks[3].call, 4, &want);
		assert_true(g->tasks[3].feat.domain == 4.0 * DM * DFF);
		assert_int_equal(g->tasks[0].routed[0], 3);
		assert_int_equal(g->tasks[0].routed[1], 0);
		assert_int_equal(g->tasks[0].routed[2], 4);
		assert_int_equal(g->tasks[0].routed[3], 0);
		struct engine_counters c;
		engine_counters(e, &c);
		assert_int_equal(c.tasks_done, NE + 2);
		assert_int_equal(c.tasks_failed, 0);
		assert_int_equal(c.tasks_in_flight, 0);
		free_graph(g);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
	}
}

/* A guarded expert's launch carries exactly the tokens its router sent to
 * it, ascending (a token that chose it twice once); an unguarded one, or
 * one reading routing arrays other than its router's, none (the kernel
 * then finds them itself). */
static void test_guarded_launch_carries_tokens(void **state)
{
	(void)state;
	static struct layer L;
	static int32_t other_ids[N * K];
	for (int variant = 0; variant < 3; variant++) {
		struct engine_flow flow = { .id = 1 };
		struct engine *e = make_engine(policy_list()[0]);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		route_to_0_and_2(&L);
		struct engine_graph *g = make_layer(&flow, &L, variant != 1);
		if (variant == 2) { /* expert 2 reads a copy of the ids, not the router's */
			memcpy(other_ids, L.ids, sizeof(other_ids));
			g->tasks[3].call.ptr[4] = other_ids;
		}
		engine_submit(e, g);
		run_all(e);
		assert_int_equal(atomic_load(&g->status), 0);
		if (variant == 1) { /* unguarded: every expert runs, none carries tokens */
			for (int x = 0; x < NE; x++)
				assert_int_equal(expert_nrouted[x], -1);
		} else {
			assert_int_equal(expert_nrouted[0], 3);
			for (uint32_t i = 0; i < 3; i++)
				assert_int_equal(expert_routed[0][i], i);
			if (variant == 0) {
				assert_int_equal(expert_nrouted[2], 4);
				for (uint32_t i = 0; i < 4; i++)
					assert_int_equal(expert_routed[2][i], i);
			} else {
				assert_int_equal(expert_nrouted[2], -1);
			}
			assert_int_equal(expert_nrouted[1], -2); /* skipped */
			assert_int_equal(expert_nrouted[3], -2);
			/* The router's lists, per expert. */
			const struct engine_task *r = &g->tasks[0];
			const uint32_t want_off[NE + 1] = { 0, 3, 3, 7, 7 };
			for (int x = 0; x <= NE; x++)
				assert_int_equal(r->routed_off[x], want_off[x]);
		}
		free_graph(g);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
	}
}

/* Without guards every expert runs, priced as if every token were routed. */
static void test_unguarded_experts_all_run(void **state)
{
	(void)state;
	static struct layer L;
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(policy_list()[0]);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	route_to_0_and_2(&L);
	struct engine_graph *g = make_layer(&flow, &L, false);
	engine_submit(e, g);
	run_all(e);
	for (int x = 0; x < NE; x++)
		assert_int_equal(atomic_load(&expert_runs[x]), 1);
	assert_true(g->tasks[2].feat.domain == (double)N * DM * DFF);
	assert_null(g->tasks[0].routed);
	free_graph(g);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
}

/* A router's output that is out of range fails the router's task with
 * -TDM_EINVAL; its guarded tasks are canceled unrun; the engine then runs
 * the next graph as usual. */
static void bad_route_fails(int32_t bad_id, float bad_w)
{
	static struct layer L;
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(policy_list()[0]);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	route_to_0_and_2(&L);
	L.ids[5] = bad_id;
	L.wts[6] = bad_w;
	struct engine_graph *g = make_layer(&flow, &L, true);
	engine_submit(e, g);
	run_all(e);
	assert_int_equal(atomic_load(&host_engine_graphs_done), 1);
	assert_int_equal(g->tasks[0].status, -TDM_EINVAL);
	assert_int_equal(atomic_load(&g->status), -TDM_EINVAL);
	for (int x = 0; x < NE; x++) {
		assert_int_equal(atomic_load(&expert_runs[x]), 0);
		assert_int_equal(g->tasks[1 + x].status, -TDM_ECANCELED);
	}
	struct engine_counters c;
	engine_counters(e, &c);
	assert_int_equal(c.tasks_failed, 1);
	free_graph(g);

	/* The next graph, routed right, runs. */
	reset_counts();
	route_to_0_and_2(&L);
	g = make_layer(&flow, &L, true);
	engine_submit(e, g);
	run_all(e);
	assert_int_equal(atomic_load(&g->status), 0);
	assert_int_equal(atomic_load(&expert_runs[0]), 1);
	assert_int_equal(atomic_load(&expert_runs[2]), 1);
	free_graph(g);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
}

static void test_expert_id_out_of_range(void **state)
{
	(void)state;
	bad_route_fails(NE, 0.5f);
	bad_route_fails(-1, 0.5f);
}

static void test_weight_not_finite(void **state)
{
	(void)state;
	bad_route_fails(0, NAN);
	bad_route_fails(0, INFINITY);
}

/* The route hook on its own: what it says, and that it counts. */
static void test_route_hook(void **state)
{
	(void)state;
	const struct kernel_def *k = kernel_by_id(KERNEL_TOPK_ROUTER);
	struct tdm_kernel_call call = { .nargs = 3 };
	call.s[0].i64 = 2, call.s[1].i64 = 3, call.s[2].i64 = 2;
	int32_t ids[4] = { 0, 1, 1, 3 };
	float wts[4] = { 0.5f, 0.5f, 1, 0 };
	const void *out[TDM_MAX_ARGS] = { NULL, ids, wts };
	uint32_t routed[3] = { 0 };
	char why[128] = "";
	assert_int_equal(k->route_experts(&call), 3);
	assert_int_equal(k->route(&call, out, routed, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "expert id 3 of token 1 out of range [0, 3)"));
	ids[3] = 2;
	memset(routed, 0, sizeof(routed));
	assert_int_equal(k->route(&call, out, routed, why, sizeof(why)), 0);
	assert_int_equal(routed[0], 1);
	assert_int_equal(routed[1], 2);
	assert_int_equal(routed[2], 1);
	/* The tokens of each expert, ascending: 0: {0}, 1: {0, 1}, 2: {1}. */
	uint32_t next[4] = { 0, 1, 3, 4 }, tokens[4];
	k->route_tokens(&call, out, next, tokens);
	assert_int_equal(next[0], 1);
	assert_int_equal(next[1], 3);
	assert_int_equal(next[2], 4);
	const uint32_t want[4] = { 0, 0, 1, 1 };
	assert_memory_equal(tokens, want, sizeof(want));
	wts[0] = NAN;
	assert_int_equal(k->route(&call, out, routed, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "not finite"));
	assert_null(kernel_by_id(KERNEL_SGEMM)->route);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unrouted_experts_skipped),
		cmocka_unit_test(test_guarded_launch_carries_tokens),
		cmocka_unit_test(test_unguarded_experts_all_run),
		cmocka_unit_test(test_expert_id_out_of_range),
		cmocka_unit_test(test_weight_not_finite),
		cmocka_unit_test(test_route_hook),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
