/* Elastic devices in the engine: devices added, drained, resumed and
 * removed while graphs are in flight, under every policy; no task lost or
 * run twice, tasks placed only where they may run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "policies/dispatch.h"
#include "policies/policy.h"
#include "tandem.h"

/* Per-task run counts of the graph under test, by task index (a task run
 * twice, or never, shows here). */
#define MAX_TASKS 4096
static _Atomic uint32_t runs[MAX_TASKS];
/* Tasks run per device. */
static _Atomic uint32_t ran_on[ENGINE_MAX_DEVICES];
/* Microseconds each host kernel takes. */
static _Atomic uint32_t task_us;

static void sleep_us(uint32_t us)
{
	struct timespec ts = { us / 1000000u, (long)(us % 1000000u) * 1000L };
	nanosleep(&ts, NULL);
}

/* Host kernel: counts its run (the task index rides in scalar 0) on the
 * device that ran it (its name is "dev<N>"). */
static int counting_launch(const struct backend_device *d, const struct kernel_def *k,
                           const struct tdm_kernel_call *call)
{
	(void)k;
	uint32_t us = atomic_load(&task_us);
	if (us)
		sleep_us(us);
	atomic_fetch_add(&runs[call->s[0].i64], 1);
	atomic_fetch_add(&ran_on[atoi(d->name + 3)], 1);
	return 0;
}

static const struct backend_ops host_ops = { .abi_version = BACKEND_ABI_VERSION,
	                                     .name = "fake",
	                                     .launch = counting_launch };

struct done {
	_Atomic int graphs;
};

static void on_done(void *ctx, struct engine_graph *g)
{
	struct done *dn = ctx;
	(void)g;
	atomic_fetch_add(&dn->graphs, 1);
}

static struct backend_device host_dev(unsigned i)
{
	struct backend_device d = { 0 };
	d.ops = &host_ops;
	d.kind = TDM_DEV_CPU;
	snprintf(d.name, sizeof(d.name), "dev%u", i);
	snprintf(d.model, sizeof(d.model), "fake core");
	return d;
}

static struct engine *make(const struct policy_ops *p, size_t ndev, size_t cap, bool threads,
                           struct done *dn)
{
	struct backend_device devs[ENGINE_MAX_DEVICES];
	struct engine *e;
	for (size_t i = 0; i < ndev; i++)
		devs[i] = host_dev((unsigned)i);
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = p,
		                    .devices = devs,
		                    .ndevices = ndev,
		                    .max_devices = cap,
		                    .hooks = { .graph_done = on_done, .ctx = dn },
		                    .start_workers = threads,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

/* n "spin" tasks (scalar 0: the task index), edges (from, to) in CSR. */
static struct engine_graph *make_graph(struct engine_flow *flow, uint32_t n, const uint32_t *edges,
                                       uint32_t nedges)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = flow;
	g->ntasks = n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(nedges + 1, sizeof(uint32_t));
	const struct kernel_def *spin = kernel_by_id((uint32_t)kernel_lookup("spin"));
	for (uint32_t i = 0; i < n; i++) {
		g->tasks[i].graph = g;
		g->tasks[i].index = i;
		g->tasks[i].kernel = spin;
		g->tasks[i].call.s[0].i64 = i;
	}
	for (uint32_t i = 0; i < nedges; i++) {
		g->succ_off[edges[2 * i] + 1]++;
		atomic_fetch_add(&g->tasks[edges[2 * i + 1]].ndeps, 1);
	}
	for (uint32_t i = 0; i < n; i++)
		g->succ_off[i + 1] += g->succ_off[i];
	uint32_t *cur = calloc(n + 1, sizeof(uint32_t));
	memcpy(cur, g->succ_off, (n + 1) * sizeof(uint32_t));
	for (uint32_t i = 0; i < nedges; i++)
		g->succ[cur[edges[2 * i]]++] = edges[2 * i + 1];
	free(cur);
	return g;
}

/* A random DAG: each task after up to `per` earlier ones. */
static struct engine_graph *random_dag(struct engine_flow *flow, uint32_t n, int per, unsigned seed)
{
	uint32_t *edges = malloc(sizeof(uint32_t) * 2 * n * (size_t)per);
	uint32_t ne = 0;
	for (uint32_t t = 1; t < n; t++) {
		for (int k = 0; k < per; k++) {
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 20) % 3 == 0)
				continue;
			edges[2 * ne] = (seed >> 8) % t;
			edges[2 * ne + 1] = t;
			ne++;
		}
	}
	struct engine_graph *g = make_graph(flow, n, edges, ne);
	free(edges);
	return g;
}

static void free_graph(struct engine_graph *g)
{
	engine_graph_free_arrays(g);
	free(g);
}

static void reset_counts(void)
{
	for (size_t i = 0; i < MAX_TASKS; i++)
		atomic_store(&runs[i], 0);
	for (size_t i = 0; i < ENGINE_MAX_DEVICES; i++)
		atomic_store(&ran_on[i], 0);
	atomic_store(&task_us, 0);
}

static void assert_each_ran_once(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (atomic_load(&runs[i]) != 1)
			fail_msg("task %u ran %u times", i, atomic_load(&runs[i]));
}

static bool wait_graphs(struct done *dn, int want, int ms)
{
	for (int i = 0; i < ms && atomic_load(&dn->graphs) < want; i++)
		sleep_us(1000);
	return atomic_load(&dn->graphs) >= want;
}

static void run_all(struct engine *e)
{
	bool any = true;
	while (any) {
		any = false;
		for (unsigned w = 0; w < engine_device_count(e); w++)
			any |= engine_run_one(e, w);
	}
}

/* The API's answers on a small engine without threads. */
static void test_states_and_limits(void **state)
{
	(void)state;
	struct done dn = { 0 };
	struct engine *e = make(&policy_eager, 1, 2, false, &dn);
	unsigned id = 99;
	struct backend_device d1 = host_dev(1), d2 = host_dev(2);

	assert_int_equal(engine_device_count(e), 1);
	assert_int_equal(engine_device_add(e, &d1, &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(engine_device_count(e), 2);
	assert_string_equal(engine_device(e, 1)->dev.name, "dev1");
	assert_int_equal(engine_device_state(e, 1), ENGINE_DEV_ACTIVE);
	/* Capacity 2: the third is refused. */
	assert_int_equal(engine_device_add(e, &d2, &id), -TDM_ENOSPC);
	assert_int_equal(engine_device_drain(e, 1), 0);
	assert_int_equal(engine_device_state(e, 1), ENGINE_DEV_DRAINING);
	assert_int_equal(engine_device_resume(e, 1), 0);
	assert_int_equal(engine_device_state(e, 1), ENGINE_DEV_ACTIVE);
	assert_int_equal(engine_device_resume(e, 1), -TDM_EINVAL); /* not draining */
	assert_int_equal(engine_device_remove(e, 1), 0);
	assert_int_equal(engine_device_state(e, 1), ENGINE_DEV_GONE);
	/* GONE stays GONE, and keeps its id and name. */
	assert_int_equal(engine_device_drain(e, 1), -TDM_EINVAL);
	assert_int_equal(engine_device_resume(e, 1), -TDM_EINVAL);
	assert_int_equal(engine_device_count(e), 2);
	assert_string_equal(engine_device(e, 1)->dev.name, "dev1");
	assert_int_equal(engine_device_state(e, 7), ENGINE_DEV_GONE); /* never given */
	assert_int_equal(engine_device_drain(e, 7), -TDM_EINVAL);
	engine_destroy(e);

	/* Without max_devices nothing can be added. */
	e = make(&policy_eager, 1, 0, false, &dn);
	assert_int_equal(engine_device_add(e, &d1, &id), -TDM_ENOSPC);
	engine_destroy(e);
}

/* Every policy: tasks queued while a device drains all run, on the other
 * device only, once each; the drained device takes nothing, and after a
 * resume it takes tasks again. Stepped by hand: deterministic. */
static void test_drain_replaces_queued(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make(*p, 2, 2, false, &dn);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		enum { N = 200 };
		struct engine_graph *g = random_dag(&flow, N, 2, 1);
		engine_submit(e, g);
		/* Both devices take a few, then device 1 drains. */
		for (int i = 0; i < 5; i++) {
			engine_run_one(e, 0);
			engine_run_one(e, 1);
		}
		uint32_t before = atomic_load(&ran_on[1]);
		assert_int_equal(engine_device_drain(e, 1), 0);
		assert_false(engine_run_one(e, 1));
		while (engine_run_one(e, 0))
			;
		assert_int_equal(atomic_load(&dn.graphs), 1);
		assert_int_equal(atomic_load(&ran_on[1]), before);
		assert_int_equal(engine_device_busy(e, 1), 0);
		assert_each_ran_once(N);
		free_graph(g);

		/* Resumed: it takes tasks again. */
		assert_int_equal(engine_device_resume(e, 1), 0);
		reset_counts();
		g = random_dag(&flow, N, 0, 2);
		engine_submit(e, g);
		while (engine_run_one(e, 1))
			;
		run_all(e);
		assert_int_equal(atomic_load(&dn.graphs), 2);
		assert_true(atomic_load(&ran_on[1]) > 0);
		assert_each_ran_once(N);
		free_graph(g);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
	}
}

/* Every policy, worker threads: a device added while a graph runs takes
 * some of its tasks; every task runs once. */
static void test_add_while_running(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make(*p, 1, 4, true, &dn);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		atomic_store(&task_us, 200);
		enum { N = 600 };
		struct engine_graph *g = random_dag(&flow, N, 0, 3);
		engine_submit(e, g);
		struct backend_device d1 = host_dev(1);
		unsigned id;
		assert_int_equal(engine_device_add(e, &d1, &id), 0);
		assert_int_equal(id, 1);
		if (!wait_graphs(&dn, 1, 20000))
			fail_msg("policy %s: graph not done", (*p)->name);
		assert_each_ran_once(N);
		if (atomic_load(&ran_on[1]) == 0)
			fail_msg("policy %s: the added device ran nothing", (*p)->name);
		/* Graphs submitted after the add use it too. */
		reset_counts();
		struct engine_graph *g2 = random_dag(&flow, N, 0, 4);
		atomic_store(&task_us, 50);
		engine_submit(e, g2);
		assert_true(wait_graphs(&dn, 2, 20000));
		assert_each_ran_once(N);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		free_graph(g);
		free_graph(g2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_states_and_limits),
		cmocka_unit_test(test_drain_replaces_queued),
		cmocka_unit_test(test_add_while_running),
	};
	return cmocka_run_group_tests_name("elastic_engine", tests, NULL, NULL);
}
