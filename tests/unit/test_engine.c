/* Engine and policies: dependency order, fairness, stealing, cancellation,
 * failure, and a threaded run (for TSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "tests/harness/edge_graph.h"
#include "policies/policy.h"
#include "tandem.h"

#define FAIL_MARK 4242 /* a spin task with this duration fails (see fake_launch) */

struct recorder {
	_Atomic int graphs_done;
	uint32_t order[4096];
	_Atomic uint32_t norder;
};

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d;
	if (strcmp(k->name, "spin") == 0 && call->s[0].i64 == FAIL_MARK)
		return -TDM_EDEVICE;
	return 0;
}

static const struct backend_ops fake_backend = { .abi_version = BACKEND_ABI_VERSION,
	                                         .name = "fake",
	                                         .launch = fake_launch };

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	struct recorder *r = ctx;
	(void)g;
	atomic_fetch_add(&r->graphs_done, 1);
}

static struct engine *make_engine(const struct policy_ops *p, size_t ndev, bool threads,
                                  struct recorder *r)
{
	struct backend_device devs[4] = { 0 };
	struct engine *e;
	for (size_t i = 0; i < ndev; i++) {
		devs[i].ops = &fake_backend;
		devs[i].kind = TDM_DEV_CPU;
	}
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = p,
		                    .devices = devs,
		                    .ndevices = ndev,
		                    .hooks = { .graph_done = on_graph_done, .ctx = r },
		                    .start_workers = threads,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

/* A graph of n noop tasks with the given (from, to) edges. */
static struct engine_graph *make_graph(struct engine_flow *flow, uint32_t n, const uint32_t *edges,
                                       uint32_t nedges)
{
	return edge_graph(flow, kernel_by_id(KERNEL_NOOP), n, edges, nedges);
}

static void free_graph(struct engine_graph *g)
{
	edge_graph_free(g);
}

static void run_all(struct engine *e, size_t nworkers)
{
	bool any = true;
	while (any) {
		any = false;
		for (unsigned w = 0; w < nworkers; w++) {
			if (engine_run_one(e, w))
				any = true;
		}
	}
}

static void test_dependencies_in_order(void **state)
{
	(void)state;
	const struct policy_ops *const *p;
	for (p = policy_list(); *p; p++) {
		struct recorder r = { 0 };
		struct engine_flow flow = { .id = 1 };
		struct engine *e = make_engine(*p, 2, false, &r);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		/* diamond 0 -> {1, 2} -> 3, plus 3 -> 4 */
		uint32_t edges[] = { 0, 1, 0, 2, 1, 3, 2, 3, 3, 4 };
		struct engine_graph *g = make_graph(&flow, 5, edges, 5);
		engine_submit(e, g);
		run_all(e, 2);
		assert_int_equal(atomic_load(&r.graphs_done), 1);
		for (uint32_t i = 0; i < 5; i++)
			assert_int_equal(g->tasks[i].status, 0);
		/* Each task started after its predecessors ended. */
		for (uint32_t i = 0; i < 5; i++)
			assert_true(g->tasks[i].end_ns >= g->tasks[i].start_ns);
		assert_true(g->tasks[1].start_ns >= g->tasks[0].end_ns);
		assert_true(g->tasks[2].start_ns >= g->tasks[0].end_ns);
		assert_true(g->tasks[3].start_ns >= g->tasks[1].end_ns);
		assert_true(g->tasks[3].start_ns >= g->tasks[2].end_ns);
		assert_true(g->tasks[4].start_ns >= g->tasks[3].end_ns);
		struct engine_counters c;
		engine_counters(e, &c);
		assert_int_equal(c.tasks_done, 5);
		assert_int_equal(c.tasks_in_flight, 0);
		assert_int_equal(c.queued, 0);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		free_graph(g);
	}
}

/* A light client's new graph is served next to a flood, not after it:
 * with one worker, its two tasks are among the first four picks. */
static void check_light_beside_flood(const struct policy_ops *policy)
{
	struct recorder r = { 0 };
	struct engine_flow heavy = { .id = 1 }, light = { .id = 2 };
	struct engine *e = make_engine(policy, 1, false, &r);
	assert_int_equal(engine_flow_add(e, &heavy), 0);
	assert_int_equal(engine_flow_add(e, &light), 0);
	struct engine_graph *flood = make_graph(&heavy, 1000, NULL, 0);
	struct engine_graph *small = make_graph(&light, 2, NULL, 0);
	engine_submit(e, flood);
	engine_submit(e, small);
	for (int i = 0; i < 4; i++)
		assert_true(engine_run_one(e, 0));
	assert_int_equal(atomic_load(&r.graphs_done), 1);
	assert_true(small->tasks[0].end_ns && small->tasks[1].end_ns);
	run_all(e, 1);
	assert_int_equal(atomic_load(&r.graphs_done), 2);
	engine_flow_gone(e, &heavy);
	engine_flow_gone(e, &light);
	engine_destroy(e);
	free_graph(flood);
	free_graph(small);
}

/* eager: per-client round-robin. */
static void test_eager_round_robin(void **state)
{
	(void)state;
	check_light_beside_flood(&policy_eager);
}

/* eager: a flow of weight 3 gets three tasks for every one of a flow of
 * weight 1 while both have work. */
static void test_eager_weights(void **state)
{
	(void)state;
	struct recorder r = { 0 };
	struct engine_flow a = { .id = 1, .weight = 1 }, b = { .id = 2, .weight = 3 };
	struct engine *e = make_engine(&policy_eager, 1, false, &r);
	assert_int_equal(engine_flow_add(e, &a), 0);
	assert_int_equal(engine_flow_add(e, &b), 0);
	struct engine_graph *ga = make_graph(&a, 400, NULL, 0);
	struct engine_graph *gb = make_graph(&b, 400, NULL, 0);
	engine_submit(e, ga);
	engine_submit(e, gb);
	for (int i = 0; i < 200; i++)
		assert_true(engine_run_one(e, 0));
	uint32_t done_b = 0;
	for (uint32_t i = 0; i < 400; i++)
		done_b += gb->tasks[i].end_ns != 0;
	assert_in_range(done_b, 145, 155);
	run_all(e, 1);
	assert_int_equal(atomic_load(&r.graphs_done), 2);
	engine_flow_gone(e, &a);
	engine_flow_gone(e, &b);
	engine_destroy(e);
	free_graph(ga);
	free_graph(gb);
}

/* ws: tasks a worker releases stay on its deque; an idle worker steals. */
static void test_ws_steals(void **state)
{
	(void)state;
	struct recorder r = { 0 };
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(&policy_ws, 2, false, &r);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	uint32_t edges[2 * 10];
	for (uint32_t i = 0; i < 10; i++) {
		edges[2 * i] = 0;
		edges[2 * i + 1] = i + 1;
	}
	struct engine_graph *g = make_graph(&flow, 11, edges, 10);
	engine_submit(e, g);
	assert_true(engine_run_one(e, 0)); /* the root releases 10 onto deque 0 */
	size_t ran = 0;
	while (engine_run_one(e, 1))
		ran++;
	assert_int_equal(ran, 10); /* all of them stolen by worker 1 */
	assert_int_equal(atomic_load(&r.graphs_done), 1);
	assert_int_equal(g->tasks[0].device, 0);
	for (uint32_t i = 1; i < 11; i++)
		assert_int_equal(g->tasks[i].device, 1);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

/* ws: new graphs go through the same round-robin injection queue. */
static void test_ws_injection_round_robin(void **state)
{
	(void)state;
	check_light_beside_flood(&policy_ws);
}

static void test_canceled_flow_skips_work(void **state)
{
	(void)state;
	struct recorder r = { 0 };
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(&policy_eager, 1, false, &r);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	uint32_t edges[] = { 0, 1, 1, 2 };
	struct engine_graph *g = make_graph(&flow, 3, edges, 2);
	engine_submit(e, g);
	assert_true(engine_run_one(e, 0));
	atomic_store(&flow.canceled, 1);
	run_all(e, 1);
	assert_int_equal(atomic_load(&r.graphs_done), 1);
	assert_int_equal(g->tasks[0].status, 0);
	assert_int_equal(g->tasks[1].status, -TDM_ECANCELED);
	assert_int_equal(g->tasks[2].status, -TDM_ECANCELED);
	struct engine_counters c;
	engine_counters(e, &c);
	assert_int_equal(c.tasks_canceled, 2);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

static void test_failure_cancels_downstream(void **state)
{
	(void)state;
	struct recorder r = { 0 };
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(&policy_eager, 1, false, &r);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	uint32_t edges[] = { 0, 1 };
	struct engine_graph *g = make_graph(&flow, 2, edges, 1);
	g->tasks[0].kernel = kernel_by_id((uint32_t)kernel_lookup("spin"));
	g->tasks[0].call.s[0].i64 = FAIL_MARK;
	engine_submit(e, g);
	run_all(e, 1);
	assert_int_equal(atomic_load(&r.graphs_done), 1);
	assert_int_equal(atomic_load(&g->status), -TDM_EDEVICE);
	assert_int_equal(g->tasks[0].status, -TDM_EDEVICE);
	assert_int_equal(g->tasks[1].status, -TDM_ECANCELED);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

static void test_empty_graph_completes(void **state)
{
	(void)state;
	struct recorder r = { 0 };
	struct engine_flow flow = { .id = 1 };
	struct engine *e = make_engine(&policy_eager, 1, false, &r);
	struct engine_graph *g = make_graph(&flow, 0, NULL, 0);
	engine_submit(e, g);
	assert_int_equal(atomic_load(&r.graphs_done), 1);
	engine_destroy(e);
	free_graph(g);
}

/* Real worker threads on a random DAG: every task runs once, after its
 * predecessors. Run under TSan in CI. */
static void test_threaded_random_dag(void **state)
{
	(void)state;
	const struct policy_ops *const *p;
	for (p = policy_list(); *p; p++) {
		struct recorder r = { 0 };
		struct engine_flow flow = { .id = 1 };
		struct engine *e = make_engine(*p, 2, true, &r);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		enum { N = 3000, PER = 3 };
		static uint32_t edges[2 * N * PER];
		uint32_t ne = 0;
		unsigned seed = 7;
		for (uint32_t t = 1; t < N; t++) {
			for (int k = 0; k < PER; k++) {
				seed = seed * 1103515245u + 12345u;
				edges[2 * ne] = (seed >> 8) % t;
				edges[2 * ne + 1] = t;
				ne++;
			}
		}
		struct engine_graph *g = make_graph(&flow, N, edges, ne);
		engine_submit(e, g);
		for (int i = 0; i < 10000 && atomic_load(&r.graphs_done) == 0; i++) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
		assert_int_equal(atomic_load(&r.graphs_done), 1);
		for (uint32_t i = 0; i < ne; i++)
			assert_true(g->tasks[edges[2 * i + 1]].start_ns >=
			            g->tasks[edges[2 * i]].end_ns);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		free_graph(g);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dependencies_in_order),
		cmocka_unit_test(test_eager_round_robin),
		cmocka_unit_test(test_eager_weights),
		cmocka_unit_test(test_ws_steals),
		cmocka_unit_test(test_ws_injection_round_robin),
		cmocka_unit_test(test_canceled_flow_skips_work),
		cmocka_unit_test(test_failure_cancels_downstream),
		cmocka_unit_test(test_empty_graph_completes),
		cmocka_unit_test(test_threaded_random_dag),
	};
	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
