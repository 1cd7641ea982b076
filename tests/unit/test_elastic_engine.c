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
#include "tests/harness/edge_graph.h"
#include "tests/harness/fail_alloc.h"
#include "placement/residency.h"
#include "profiler/profiler.h"
#include "policies/dispatch.h"
#include "policies/policy.h"
#include "tandem.h"
#include "tests/harness/fake_backend.h"
#include "tests/harness/graphs_done.h"

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
                           struct graphs_done *dn)
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
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = dn },
		                    .start_workers = threads,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

/* n "spin" tasks (scalar 0: the task index), edges (from, to). */
static struct engine_graph *make_graph(struct engine_flow *flow, uint32_t n, const uint32_t *edges,
                                       uint32_t nedges)
{
	struct engine_graph *g = edge_graph(flow, kernel_by_id(KERNEL_SPIN), n, edges, nedges);
	for (uint32_t i = 0; i < n; i++)
		g->tasks[i].call.s[0].i64 = i;
	return g;
}

/* A random DAG: each task after up to `per` earlier ones. */
static struct engine_graph *random_dag(struct engine_flow *flow, uint32_t n, int per, unsigned seed)
{
	uint32_t *edges = calloc(2 * n * (size_t)per + 2, sizeof(uint32_t));
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
	edge_graph_free(g);
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

/* engine_device_busy(e, d) once it is want (its worker may be looking
 * for a next task for a moment, which counts as busy), or after 5 s. */
static unsigned wait_busy(struct engine *e, unsigned d, unsigned want)
{
	unsigned b = engine_device_busy(e, d);
	for (int i = 0; i < 5000 && b != want; i++) {
		sleep_us(1000);
		b = engine_device_busy(e, d);
	}
	return b;
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
	struct graphs_done dn = { 0 };
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
	/* It let go of everything (no worker thread, nothing staged): the
	 * same device comes back under its old id, within the capacity;
	 * other hardware of the same name does not take it. */
	assert_true(engine_device_left(e, 1));
	assert_false(engine_device_left(e, 0));
	struct backend_device other = host_dev(1);
	snprintf(other.model, sizeof(other.model), "another core");
	assert_int_equal(engine_device_reusable(e, &other), -1);
	assert_int_equal(engine_device_add(e, &other, &id), -TDM_ENOSPC);
	assert_int_equal(engine_device_reusable(e, &d1), 1);
	id = 99;
	assert_int_equal(engine_device_add(e, &d1, &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(engine_device_count(e), 2);
	assert_int_equal(engine_device_state(e, 1), ENGINE_DEV_ACTIVE);
	assert_false(engine_device_left(e, 1));
	assert_int_equal(engine_device_reusable(e, &d1), -1); /* in use */
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
		struct graphs_done dn = { 0 };
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
		if (atomic_load(&dn.graphs) != 1)
			fail_msg("policy %s: graph not done", (*p)->name);
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
		struct graphs_done dn = { 0 };
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

/* ---- an accelerator whose kernels wait for the test ---- */

/* The kernel events of gated_accel complete once the gate opens: with a
 * failure when the device was unplugged meanwhile. */
static _Atomic bool gate_open, unplugged;

struct gated {
	struct backend_event ev; /* first: fake_release frees it */
	uint32_t task;
};

static int gated_launch(const struct backend_device *d, const struct kernel_def *k,
                        const struct tdm_kernel_call *call, struct backend_event *const *waits,
                        size_t nwaits, struct backend_event **done)
{
	(void)k;
	(void)waits;
	(void)nwaits;
	struct gated *g = calloc(1, sizeof(*g));
	g->task = (uint32_t)call->s[0].i64;
	atomic_fetch_add(&ran_on[atoi(d->name + 3)], 1);
	*done = &g->ev;
	return 0;
}

static int gated_wait(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	while (!atomic_load(&gate_open))
		sleep_us(100);
	if (atomic_load(&unplugged))
		return -TDM_EDEVICE;
	atomic_fetch_add(&runs[((struct gated *)ev)->task], 1);
	return 0;
}

static int gated_query(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	(void)ev;
	return atomic_load(&gate_open) ? (atomic_load(&unplugged) ? -TDM_EDEVICE : 1) : 0;
}

static const struct backend_ops gated_accel = { .abi_version = BACKEND_ABI_VERSION,
	                                        .name = "gated",
	                                        .mem_alloc = fake_alloc,
	                                        .mem_free = fake_free,
	                                        .copy_h2d = fake_h2d_copy,
	                                        .copy_d2h = fake_d2h_copy,
	                                        .event_release = fake_release,
	                                        .supports = fake_supports,
	                                        .launch_async = gated_launch,
	                                        .event_wait = gated_wait,
	                                        .event_query = gated_query };

/* A gated accelerator dev0 (node 1) with room for a second device, under
 * policy p, running a chain of CHAIN_N tasks whose first task has started
 * on dev0 and waits at the gate. */
enum { CHAIN_N = 4 };

struct gated_chain {
	struct graphs_done dn;
	struct engine_flow flow;
	struct residency res;
	struct backend_device acc;
	struct engine *e;
	struct engine_graph *g;
};

static void chain_start(struct gated_chain *c, const struct policy_ops *p)
{
	*c = (struct gated_chain){ .flow = { .id = 1, .weight = 1 } };
	residency_init(&c->res);
	c->acc = (struct backend_device){ .ops = &gated_accel,
		                          .kind = TDM_DEV_GPU,
		                          .mem_bytes = 1 << 20 };
	snprintf(c->acc.name, sizeof(c->acc.name), "dev0");
	snprintf(c->acc.model, sizeof(c->acc.model), "gated");
	assert_int_equal(residency_add_node(&c->res, &c->acc, 0), 1);
	c->acc.node = 1;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = p,
		                    .devices = &c->acc,
		                    .ndevices = 1,
		                    .max_devices = 2,
		                    .res = &c->res,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &c->dn },
		                    .start_workers = true,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &c->e), 0);
	assert_int_equal(engine_flow_add(c->e, &c->flow), 0);
	reset_counts();
	atomic_store(&gate_open, false);
	atomic_store(&unplugged, false);
	uint32_t edges[] = { 0, 1, 1, 2, 2, 3 };
	c->g = make_graph(&c->flow, CHAIN_N, edges, 3);
	engine_submit(c->e, c->g);
	for (int i = 0; i < 5000 && atomic_load(&ran_on[0]) == 0; i++)
		sleep_us(1000);
	if (atomic_load(&ran_on[0]) != 1)
		fail_msg("policy %s: ran %u on the accelerator", p->name, atomic_load(&ran_on[0]));
}

static void chain_stop(struct gated_chain *c)
{
	engine_flow_gone(c->e, &c->flow);
	engine_destroy(c->e);
	residency_fini(&c->res);
	free_graph(c->g);
}

/* Every policy: a device removed while its task runs (and fails: it was
 * unplugged) has that task run again elsewhere, without counting it as a
 * fault attempt; the graph completes once, every task ran to completion
 * once. */
static void test_remove_reruns_running(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct gated_chain c;
		chain_start(&c, *p);
		assert_int_equal(wait_busy(c.e, 0, 1), 1);
		struct backend_device cpu = host_dev(1);
		unsigned id;
		assert_int_equal(engine_device_add(c.e, &cpu, &id), 0);
		atomic_store(&unplugged, true);
		assert_int_equal(engine_device_remove(c.e, 0), 0);
		assert_int_equal(engine_device_state(c.e, 0), ENGINE_DEV_GONE);
		atomic_store(&gate_open, true);
		if (!wait_graphs(&c.dn, 1, 20000))
			fail_msg("policy %s: graph not done", (*p)->name);
		sleep_us(20000);
		assert_int_equal(atomic_load(&c.dn.graphs), 1);
		assert_int_equal(atomic_load(&c.g->status), 0);
		assert_each_ran_once(CHAIN_N);
		for (uint32_t i = 0; i < CHAIN_N; i++) {
			assert_int_equal(c.g->tasks[i].device, 1);
			assert_int_equal(c.g->tasks[i].attempts, 0);
		}
		assert_int_equal(wait_busy(c.e, 0, 0), 0);
		chain_stop(&c);
	}
}

/* Every policy: a device drained while its task runs finishes that task
 * there (once, its result kept); the tasks after it run on the other
 * device; the drained device then holds nothing. */
static void test_drain_finishes_running(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct gated_chain c;
		chain_start(&c, *p);
		struct backend_device cpu = host_dev(1);
		unsigned id;
		assert_int_equal(engine_device_add(c.e, &cpu, &id), 0);
		assert_int_equal(engine_device_drain(c.e, 0), 0);
		assert_int_equal(wait_busy(c.e, 0, 1), 1);
		atomic_store(&gate_open, true);
		if (!wait_graphs(&c.dn, 1, 20000))
			fail_msg("policy %s: graph not done", (*p)->name);
		assert_int_equal(atomic_load(&c.g->status), 0);
		assert_each_ran_once(CHAIN_N);
		assert_int_equal(c.g->tasks[0].device, 0);
		for (uint32_t i = 1; i < CHAIN_N; i++)
			assert_int_equal(c.g->tasks[i].device, 1);
		assert_int_equal(atomic_load(&ran_on[0]), 1);
		assert_int_equal(wait_busy(c.e, 0, 0), 0);
		assert_int_equal(engine_device_state(c.e, 0), ENGINE_DEV_DRAINING);
		chain_stop(&c);
	}
}

/* Kernels on "dev0" fail on the device (their events say so). */
static int flaky_launch(const struct backend_device *d, const struct kernel_def *k,
                        const struct tdm_kernel_call *call, struct backend_event *const *waits,
                        size_t nwaits, struct backend_event **done)
{
	(void)k;
	(void)waits;
	(void)nwaits;
	*done = fake_new_event();
	if (strcmp(d->name, "dev0") == 0) {
		(*done)->status = -TDM_EDEVICE;
		return 0;
	}
	atomic_fetch_add(&runs[call->s[0].i64], 1);
	atomic_fetch_add(&ran_on[atoi(d->name + 3)], 1);
	return 0;
}

static const struct backend_ops flaky_accel = { FAKE_ACCEL_MEM_OPS, .name = "flaky",
	                                        .supports = fake_supports,
	                                        .launch_async = flaky_launch };

/* A device past its fault limit is removed: the tasks it had staged move
 * to the other device (those that faulted there with one attempt counted,
 * those after its removal with none), it takes nothing more, and no task
 * fails for it. */
static void test_faults_remove_device(void **state)
{
	(void)state;
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct residency res;
	residency_init(&res);
	struct backend_device devs[2];
	for (unsigned i = 0; i < 2; i++) {
		devs[i] = (struct backend_device){ .ops = &flaky_accel,
			                           .kind = TDM_DEV_GPU,
			                           .mem_bytes = 1 << 20 };
		snprintf(devs[i].name, sizeof(devs[i].name), "dev%u", i);
		snprintf(devs[i].model, sizeof(devs[i].model), "flaky");
	}
	for (unsigned i = 0; i < 2; i++)
		devs[i].node = (uint16_t)residency_add_node(&res, &devs[i], 0);
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_eager,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .fault_limit = 2,
		                    .pipeline_depth = 4,
		                    .res = &res,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
		                    .start_workers = false };
	assert_int_equal(engine_create(&ep, &e), 0);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	enum { N = 20 };
	struct engine_graph *g = random_dag(&flow, N, 0, 5);
	engine_submit(e, g);
	/* Four staged on device 0; each fails: the third fault is over the
	 * limit, the fourth task's device is already gone. */
	assert_int_equal(engine_sim_stage(e, 0), 4);
	for (int i = 0; i < 4; i++) {
		assert_non_null(engine_sim_oldest(e, 0));
		engine_sim_complete(e, 0);
		assert_int_equal(engine_device_state(e, 0),
		                 i < 2 ? ENGINE_DEV_ACTIVE : ENGINE_DEV_GONE);
	}
	assert_int_equal(engine_device(e, 0)->faults, 4);
	assert_int_equal(engine_sim_stage(e, 0), 0);
	while (engine_sim_stage(e, 1) || engine_sim_oldest(e, 1))
		while (engine_sim_oldest(e, 1))
			engine_sim_complete(e, 1);
	assert_int_equal(atomic_load(&dn.graphs), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	assert_each_ran_once(N);
	uint32_t faulted = 0;
	for (uint32_t i = 0; i < N; i++) {
		assert_int_equal(g->tasks[i].device, 1);
		faulted += g->tasks[i].attempts;
	}
	assert_int_equal(faulted, 3);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	residency_fini(&res);
	free_graph(g);
}

/* A task whose kernel only removed devices implemented fails with
 * -TDM_ENODEV, rather than waiting forever; one a drained device
 * implements waits for it to be resumed. */
static bool no_spin(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	return strcmp(k->name, "spin") != 0 && k->cpu != NULL;
}

static const struct backend_ops nospin_ops = { .abi_version = BACKEND_ABI_VERSION,
	                                       .name = "nospin",
	                                       .supports = no_spin,
	                                       .launch = counting_launch };

static void test_no_device_left(void **state)
{
	(void)state;
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct backend_device devs[2] = { host_dev(0), host_dev(1) };
	devs[1].ops = &nospin_ops; /* only device 0 runs "spin" */
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_dmda,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
		                    .start_workers = false };
	assert_int_equal(engine_create(&ep, &e), 0);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	const struct kernel_def *spin = kernel_by_id((uint32_t)kernel_lookup("spin"));
	struct engine_graph *g = random_dag(&flow, 4, 0, 6);
	engine_submit(e, g);
	/* Drained: the tasks wait (device 1 cannot run them). */
	assert_int_equal(engine_device_drain(e, 0), 0);
	run_all(e);
	assert_int_equal(atomic_load(&dn.graphs), 0);
	assert_true(engine_kernel_available(e, spin));
	/* Resumed: they run. */
	assert_int_equal(engine_device_resume(e, 0), 0);
	run_all(e);
	assert_int_equal(atomic_load(&dn.graphs), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	free_graph(g);
	/* Removed: they fail, clearly. */
	g = random_dag(&flow, 4, 0, 7);
	engine_submit(e, g);
	assert_int_equal(engine_device_remove(e, 0), 0);
	assert_false(engine_kernel_available(e, spin));
	run_all(e);
	assert_int_equal(atomic_load(&dn.graphs), 2);
	assert_int_equal(atomic_load(&g->status), -TDM_ENODEV);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

/* Threads: tasks that wait for a drained device (nobody else implements
 * their kernel) are not a stalled policy: the watchdog leaves the policy
 * alone, and once the device is resumed they run. */
static void test_waiting_is_not_a_stall(void **state)
{
	(void)state;
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct backend_device devs[2] = { host_dev(0), host_dev(1) };
	devs[1].ops = &nospin_ops;
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_dmda,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .watchdog_ms = 50,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
		                    .start_workers = true,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &e), 0);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	assert_int_equal(engine_device_drain(e, 0), 0);
	struct engine_graph *g = random_dag(&flow, 8, 1, 9);
	engine_submit(e, g);
	sleep_us(400000); /* eight watchdog periods */
	struct engine_counters c;
	engine_counters(e, &c);
	assert_false(c.fallback);
	assert_int_equal(atomic_load(&dn.graphs), 0);
	assert_int_equal(engine_device_resume(e, 0), 0);
	assert_true(wait_graphs(&dn, 1, 20000));
	assert_each_ran_once(8);
	engine_counters(e, &c);
	assert_false(c.fallback);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

/* heft: a planned device drains before the graph runs: the tasks planned
 * there run elsewhere, and those with nothing planned there upstream keep
 * their planned device (the plan is repaired, not made again). */
static void test_heft_repaired_without_device(void **state)
{
	(void)state;
	for (int method = 0; method < 2; method++) {
		struct graphs_done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make(method ? &policy_peft : &policy_heft, 3, 3, false, &dn);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		enum { N = 90 };
		struct engine_graph *g = random_dag(&flow, N, 2, 11);
		engine_submit(e, g);
		int planned[N];
		bool touched[N]; /* planned on device 2, or after such a task */
		int on2 = 0;
		for (uint32_t i = 0; i < N; i++) {
			planned[i] = dispatch_planned_device(g, i);
			assert_true(planned[i] >= 0 && planned[i] < 3);
			touched[i] = planned[i] == 2;
			on2 += touched[i];
		}
		assert_true(on2 > 0);
		for (uint32_t u = 0; u < N; u++)
			for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++)
				touched[g->succ[k]] |= touched[u];
		assert_int_equal(engine_device_drain(e, 2), 0);
		run_all(e);
		assert_int_equal(atomic_load(&dn.graphs), 1);
		assert_each_ran_once(N);
		assert_int_equal(atomic_load(&ran_on[2]), 0);
		int kept = 0, untouched = 0;
		for (uint32_t i = 0; i < N; i++) {
			assert_true(g->tasks[i].device != 2);
			if (touched[i])
				continue;
			untouched++;
			kept += g->tasks[i].device == planned[i];
		}
		if (kept != untouched)
			fail_msg("%s: %d of %d tasks kept their planned device",
			         method ? "peft" : "heft", kept, untouched);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		free_graph(g);
	}
}

/* heft: a planned device drains, and the repair finds no memory for the
 * per-device cost table that device's leaving needs: the old plan stays,
 * still usable: the tasks planned on the drained device run elsewhere,
 * every task once, and the graph completes. */
static void test_heft_repair_without_memory(void **state)
{
	(void)state;
	SKIP_UNLESS_CAN_FAIL_ALLOC();
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	/* Three identical devices: one cost column for all (their group). */
	struct engine *e = make(&policy_heft, 3, 3, false, &dn);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	enum { N = 90 };
	struct engine_graph *g = random_dag(&flow, N, 2, 11);
	engine_submit(e, g);
	int planned[N], on2 = 0;
	for (uint32_t i = 0; i < N; i++) {
		planned[i] = dispatch_planned_device(g, i);
		on2 += planned[i] == 2;
	}
	assert_true(on2 > 0);
	/* The table's size: a row of 3 devices per task, plus one. */
	malloc_fail_size = sizeof(double) * (N * 3 + 1);
	assert_int_equal(engine_device_drain(e, 2), 0);
	assert_int_equal(malloc_fail_size, 0);
	for (uint32_t i = 0; i < N; i++)
		assert_int_equal(dispatch_planned_device(g, i), planned[i]);
	run_all(e);
	assert_int_equal(atomic_load(&dn.graphs), 1);
	assert_each_ran_once(N);
	assert_int_equal(atomic_load(&ran_on[2]), 0);
	assert_int_equal(atomic_load(&g->status), 0);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	free_graph(g);
}

/* Every policy, worker threads, random DAGs under load: devices are
 * added, drained, resumed and removed while graphs run; every task runs
 * once, every graph completes once, nothing runs on a removed device
 * after its removal settled. */
static void test_churn_every_policy(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct graphs_done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make(*p, 2, 8, true, &dn);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		atomic_store(&task_us, 20);
		enum { N = 1500, G = 4 };
		struct engine_graph *g[G];
		for (int i = 0; i < G; i++) {
			/* Tasks of graph i count in runs[] from i * N / G on. */
			g[i] = random_dag(&flow, N / G, 2, 20 + (unsigned)i);
			for (uint32_t t = 0; t < N / G; t++)
				g[i]->tasks[t].call.s[0].i64 = i * (N / G) + t;
			engine_submit(e, g[i]);
		}
		unsigned id;
		struct backend_device d2 = host_dev(2), d3 = host_dev(3);
		assert_int_equal(engine_device_add(e, &d2, &id), 0);
		sleep_us(2000);
		assert_int_equal(engine_device_drain(e, 0), 0);
		sleep_us(2000);
		assert_int_equal(engine_device_add(e, &d3, &id), 0);
		assert_int_equal(engine_device_remove(e, 1), 0);
		sleep_us(2000);
		assert_int_equal(engine_device_resume(e, 0), 0);
		assert_int_equal(engine_device_remove(e, 2), 0);
		if (!wait_graphs(&dn, G, 30000))
			fail_msg("policy %s: %d of %d graphs done", (*p)->name,
			         atomic_load(&dn.graphs), G);
		assert_each_ran_once(N);
		for (int i = 0; i < G; i++)
			assert_int_equal(atomic_load(&g[i]->status), 0);
		/* The policy moved every task itself: the watchdog never had to. */
		struct engine_counters c;
		engine_counters(e, &c);
		if (c.fallback)
			fail_msg("policy %s: fell back to the FIFO", (*p)->name);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		for (int i = 0; i < G; i++)
			free_graph(g[i]);
	}
}

/* Every policy, with worker threads: a device removed while graphs run
 * comes back under its old id, again and again, and runs tasks there
 * (nothing of its old queue left behind: every task runs once); another
 * device takes a new id. The ids stay few however many times it comes
 * back. */
static bool wait_left(struct engine *e, unsigned id, int ms)
{
	for (int i = 0; i < ms && !engine_device_left(e, id); i++)
		sleep_us(1000);
	return engine_device_left(e, id);
}

static void test_same_device_back_under_old_id(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct graphs_done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make(*p, 2, 4, true, &dn);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		atomic_store(&task_us, 20);
		enum { N = 1200, G = 4, ROUNDS = 12 };
		struct engine_graph *g[G + 1];
		for (int i = 0; i < G; i++) {
			g[i] = random_dag(&flow, N / G, 2, 40 + (unsigned)i);
			for (uint32_t t = 0; t < N / G; t++)
				g[i]->tasks[t].call.s[0].i64 = i * (N / G) + t;
			engine_submit(e, g[i]);
		}
		struct backend_device d1 = host_dev(1), d2 = host_dev(2);
		unsigned id;
		for (int r = 0; r < ROUNDS; r++) {
			/* dev1 leaves and comes back as 1; dev2 joins as 2 the
			 * first time, then comes back as 2. */
			assert_int_equal(engine_device_remove(e, 1), 0);
			if (!wait_left(e, 1, 5000))
				fail_msg("policy %s: dev1's worker did not leave", (*p)->name);
			assert_int_equal(engine_device_add(e, &d1, &id), 0);
			assert_int_equal(id, 1);
			if (r > 0) {
				assert_int_equal(engine_device_remove(e, 2), 0);
				if (!wait_left(e, 2, 5000))
					fail_msg("policy %s: dev2's worker did not leave",
					         (*p)->name);
			}
			assert_int_equal(engine_device_add(e, &d2, &id), 0);
			assert_int_equal(id, 2);
			sleep_us(1000);
		}
		assert_int_equal(engine_device_count(e), 3);
		/* Other hardware: a new id. */
		struct backend_device d3 = host_dev(3);
		assert_int_equal(engine_device_add(e, &d3, &id), 0);
		assert_int_equal(id, 3);
		if (!wait_graphs(&dn, G, 30000))
			fail_msg("policy %s: %d of %d graphs done", (*p)->name,
			         atomic_load(&dn.graphs), G);
		/* The device that came back takes tasks: the others drained,
		 * a last graph runs on dev1 only. */
		assert_int_equal(engine_device_drain(e, 0), 0);
		assert_int_equal(engine_device_drain(e, 2), 0);
		assert_int_equal(engine_device_drain(e, 3), 0);
		uint32_t before = atomic_load(&ran_on[1]);
		g[G] = random_dag(&flow, 50, 1, 99);
		for (uint32_t t = 0; t < 50; t++)
			g[G]->tasks[t].call.s[0].i64 = N + t;
		engine_submit(e, g[G]);
		if (!wait_graphs(&dn, G + 1, 30000))
			fail_msg("policy %s: the last graph did not finish on dev1", (*p)->name);
		assert_int_equal(atomic_load(&ran_on[1]) - before, 50);
		assert_each_ran_once(N + 50);
		for (int i = 0; i <= G; i++)
			assert_int_equal(atomic_load(&g[i]->status), 0);
		for (unsigned w = 0; w < 4; w++)
			assert_int_equal(engine_device(e, w)->faults, 0);
		struct engine_counters c;
		engine_counters(e, &c);
		if (c.fallback)
			fail_msg("policy %s: fell back to the FIFO", (*p)->name);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		for (int i = 0; i <= G; i++)
			free_graph(g[i]);
	}
}

/* ---- simulation: the driver steps accelerator-shaped devices ---- */

/* Steps every live worker once (stage what it may, complete its oldest);
 * whether anything moved. */
static bool sim_step(struct engine *e)
{
	bool moved = false;
	for (unsigned w = 0; w < engine_device_count(e); w++) {
		moved |= engine_sim_stage(e, w) > 0;
		if (engine_sim_oldest(e, w)) {
			engine_sim_complete(e, w);
			moved = true;
		}
	}
	return moved;
}

static int sim_ok_launch(const struct backend_device *d, const struct kernel_def *k,
                         const struct tdm_kernel_call *call, struct backend_event *const *waits,
                         size_t nwaits, struct backend_event **done)
{
	(void)k;
	(void)waits;
	(void)nwaits;
	atomic_fetch_add(&runs[call->s[0].i64], 1);
	atomic_fetch_add(&ran_on[atoi(d->name + 3)], 1);
	*done = fake_new_event();
	return 0;
}

static const struct backend_ops sim_accel = { FAKE_ACCEL_MEM_OPS, .name = "simacc",
	                                      .supports = fake_supports,
	                                      .launch_async = sim_ok_launch };

static struct backend_device sim_dev(unsigned i)
{
	struct backend_device d = { .ops = &sim_accel, .kind = TDM_DEV_GPU };
	snprintf(d.name, sizeof(d.name), "dev%u", i);
	snprintf(d.model, sizeof(d.model), "sim");
	return d; /* node 0: a simulated device */
}

/* Every policy: devices added, drained and removed between the driver's
 * steps; every task runs once, none on a device after it drained. */
static void test_sim_between_steps(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct graphs_done dn = { 0 };
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct residency res;
		residency_init(&res);
		struct backend_device devs[2] = { sim_dev(0), sim_dev(1) };
		struct engine *e;
		struct engine_params ep = { .clock = &clock_real,
			                    .policy = *p,
			                    .devices = devs,
			                    .ndevices = 2,
			                    .max_devices = 4,
			                    .res = &res,
			                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
			                    .start_workers = false };
		assert_int_equal(engine_create(&ep, &e), 0);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		reset_counts();
		enum { N = 400 };
		struct engine_graph *g = random_dag(&flow, N, 2, 31);
		engine_submit(e, g);
		for (int i = 0; i < 10; i++)
			sim_step(e);
		unsigned id;
		struct backend_device d2 = sim_dev(2);
		assert_int_equal(engine_device_add(e, &d2, &id), 0);
		for (int i = 0; i < 10; i++)
			sim_step(e);
		assert_int_equal(engine_device_drain(e, 0), 0);
		/* What device 0 staged completes there; then it takes nothing. */
		while (engine_sim_oldest(e, 0))
			engine_sim_complete(e, 0);
		uint32_t on0 = atomic_load(&ran_on[0]);
		for (int i = 0; i < 10; i++)
			sim_step(e);
		assert_int_equal(engine_device_remove(e, 1), 0);
		while (engine_sim_oldest(e, 1))
			engine_sim_complete(e, 1);
		uint32_t on1 = atomic_load(&ran_on[1]);
		while (sim_step(e))
			;
		if (atomic_load(&dn.graphs) != 1)
			fail_msg("policy %s: graph not done", (*p)->name);
		assert_each_ran_once(N);
		assert_int_equal(atomic_load(&ran_on[0]), on0);
		assert_int_equal(atomic_load(&ran_on[1]), on1);
		assert_true(atomic_load(&ran_on[2]) > 0);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		residency_fini(&res);
		free_graph(g);
	}
}

/* A device added at run time of a kind and model the cost models know is
 * priced by their model at once: its first task has the prediction its
 * twin's would have. */
static void test_added_device_priced_at_once(void **state)
{
	(void)state;
	struct calibration cal;
	struct profiler *prof;
	calibrate_defaults(1, 1, &cal);
	assert_int_equal(profiler_create(&cal, &prof), 0);
	uint32_t spin = (uint32_t)kernel_lookup("spin");
	struct kernel_features f = { .domain = 1 };
	for (int i = 0; i < 20; i++)
		profiler_observe(prof, spin, 0, &f, 50000);
	struct cost_pred twin;
	profiler_predict(prof, spin, 0, &f, &twin);
	assert_true(twin.ns > 40000 && twin.ns < 60000);

	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct backend_device d0 = host_dev(0), d1 = host_dev(1);
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_dmda,
		                    .devices = &d0,
		                    .ndevices = 1,
		                    .max_devices = 2,
		                    .prof = prof,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
		                    .start_workers = false };
	assert_int_equal(engine_create(&ep, &e), 0);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	reset_counts();
	unsigned id;
	assert_int_equal(engine_device_add(e, &d1, &id), 0);
	assert_int_equal(engine_device_drain(e, 0), 0);
	struct engine_graph *g = random_dag(&flow, 1, 0, 1);
	g->tasks[0].feat = f;
	engine_submit(e, g);
	assert_true(engine_run_one(e, 1));
	assert_int_equal(atomic_load(&dn.graphs), 1);
	assert_int_equal(g->tasks[0].device, 1);
	assert_int_equal(g->tasks[0].pred_ns, (uint64_t)twin.ns);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	profiler_destroy(prof);
	free_graph(g);
}

/* ---- data on a device that leaves ---- */

static const struct backend_ops cpu_ops = { FAKE_HOST_OPS, .name = "host" };
static const struct backend_ops copy_accel = { FAKE_ACCEL_MEM_OPS, .name = "fake",
	                                       .supports = fake_supports,
	                                       .launch_async = fake_launch };

static void set_arg(struct engine_task *t, uint32_t a, struct res_data *d, void *host, uint64_t len)
{
	t->data[a] = d;
	t->call.ptr[a] = host;
	t->call.off[a] = 0;
	t->call.len[a] = len;
	t->call.nargs = a + 1;
}

/* A host core and a fake accelerator (acc1, on a node of its own in res),
 * and an eager engine over them (prof may be NULL). */
static struct engine *host_and_accel(struct backend_device devs[2], bool warms_up,
                                     struct residency *res, struct profiler *prof,
                                     struct graphs_done *dn)
{
	devs[0] = (struct backend_device){ .ops = &cpu_ops, .kind = TDM_DEV_CPU };
	devs[1] = (struct backend_device){
		.ops = &copy_accel, .kind = TDM_DEV_GPU, .mem_bytes = 1 << 20, .warms_up = warms_up
	};
	snprintf(devs[0].name, sizeof(devs[0].name), "cpu0");
	snprintf(devs[1].name, sizeof(devs[1].name), "acc1");
	devs[1].node = (uint16_t)residency_add_node(res, &devs[1], 0);
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_eager,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .res = res,
		                    .prof = prof,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = dn },
		                    .start_workers = false };
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

/* The samples the profiler holds for spin, over its models. */
static int64_t spin_samples(const struct profiler *prof)
{
	json_t *doc = profiler_to_json(prof), *m;
	size_t i;
	int64_t n = 0;
	assert_non_null(doc);
	json_array_foreach(json_object_get(doc, "models"), i, m)
	{
		if (!strcmp(json_string_value(json_object_get(m, "kernel")), "spin"))
			n += json_integer_value(json_object_get(m, "samples"));
	}
	json_decref(doc);
	return n;
}

/* An accelerator that warms up (its first run of a kernel compiles it too)
 * teaches the cost model every run of a kernel but the first; one that
 * does not, every run. */
static void first_runs_learned(bool warms_up, int64_t want)
{
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct residency res;
	residency_init(&res);
	struct calibration cal;
	struct profiler *prof;
	calibrate_defaults(2, 2, &cal);
	assert_int_equal(profiler_create(&cal, &prof), 0);
	struct backend_device devs[2];
	struct engine *e = host_and_accel(devs, warms_up, &res, prof, &dn);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	/* four spins of 20 to 23 us, all on the accelerator */
	struct engine_graph *g = random_dag(&flow, 4, 0, 1);
	for (uint32_t i = 0; i < 4; i++)
		g->tasks[i].call.s[0].i64 = 20 + i;
	engine_submit(e, g);
	while (engine_run_one(e, 1))
		;
	assert_int_equal(atomic_load(&dn.graphs), 1);
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(g->tasks[i].device, 1);
	assert_int_equal(spin_samples(prof), want);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	profiler_destroy(prof);
	residency_fini(&res);
	free_graph(g);
}

static void test_first_run_not_learned(void **state)
{
	(void)state;
	first_runs_learned(true, 3);
	first_runs_learned(false, 4);
}

/* An accelerator removed between a task that wrote a buffer there (its
 * only copy) and the task that reads it: the removal writes the buffer
 * back (exactly its bytes), and the reader, on the host, gets what the
 * device wrote. */
static void test_remove_writes_owner_back(void **state)
{
	(void)state;
	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct residency res;
	residency_init(&res);
	struct backend_device devs[2];
	struct engine *e = host_and_accel(devs, false, &res, NULL, &dn);
	enum { NF = 512 };
	static float a[NF], b[NF], c[NF];
	for (int i = 0; i < NF; i++) {
		a[i] = (float)i;
		b[i] = c[i] = -1;
	}
	struct res_data da, db, dc;
	residency_data_init(&res, &da, a, sizeof(a), 1, true);
	residency_data_init(&res, &db, b, sizeof(b), 2, true);
	residency_data_init(&res, &dc, c, sizeof(c), 3, true);
	assert_int_equal(engine_flow_add(e, &flow), 0);
	uint32_t edge[] = { 0, 1 };
	struct engine_graph *g = make_graph(&flow, 2, edge, 1);
	const struct kernel_def *copy = kernel_by_id((uint32_t)kernel_lookup("copy"));
	for (int i = 0; i < 2; i++) {
		g->tasks[i].kernel = copy;
		g->tasks[i].call.s[0].i64 = 0;
	}
	set_arg(&g->tasks[0], 0, &da, a, sizeof(a));
	set_arg(&g->tasks[0], 1, &db, b, sizeof(b));
	set_arg(&g->tasks[1], 0, &db, b, sizeof(b));
	set_arg(&g->tasks[1], 1, &dc, c, sizeof(c));
	engine_submit(e, g);
	/* The first copy runs on the accelerator: b's only copy is there. */
	assert_true(engine_run_one(e, 1));
	assert_int_equal(g->tasks[0].device, 1);
	assert_true(b[0] == -1);
	assert_int_equal(engine_device_remove(e, 1), 0);
	struct res_node_stats st;
	residency_node_stats(&res, 1, &st);
	assert_true(st.gone);
	assert_int_equal(st.evacuated_bytes, sizeof(b));
	for (int i = 0; i < NF; i++)
		assert_true(b[i] == (float)i);
	assert_false(engine_run_one(e, 1));
	assert_true(engine_run_one(e, 0));
	assert_int_equal(atomic_load(&dn.graphs), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	for (int i = 0; i < NF; i++)
		assert_true(c[i] == (float)i);
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	residency_data_fini(&res, &da);
	residency_data_fini(&res, &db);
	residency_data_fini(&res, &dc);
	residency_fini(&res);
	free_graph(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_states_and_limits),
		cmocka_unit_test(test_drain_replaces_queued),
		cmocka_unit_test(test_add_while_running),
		cmocka_unit_test(test_remove_reruns_running),
		cmocka_unit_test(test_drain_finishes_running),
		cmocka_unit_test(test_faults_remove_device),
		cmocka_unit_test(test_no_device_left),
		cmocka_unit_test(test_waiting_is_not_a_stall),
		cmocka_unit_test(test_heft_repaired_without_device),
		cmocka_unit_test(test_heft_repair_without_memory),
		cmocka_unit_test(test_churn_every_policy),
		cmocka_unit_test(test_same_device_back_under_old_id),
		cmocka_unit_test(test_sim_between_steps),
		cmocka_unit_test(test_added_device_priced_at_once),
		cmocka_unit_test(test_first_run_not_learned),
		cmocka_unit_test(test_remove_writes_owner_back),
	};
	return cmocka_run_group_tests_name("elastic_engine", tests, NULL, NULL);
}
