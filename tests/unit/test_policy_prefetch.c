/* The policy's prefetch hook (policies/policy.h): the engine calls it on
 * the accelerator's worker thread (the one that may issue copies on its
 * queue), never on a host core's, and a kick wakes an idle accelerator
 * for it; the copies it issues there land on the device's node. */
#include <pthread.h>
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
#include "placement/residency.h"
#include "policies/policy.h"
#include "tandem.h"
#include "tests/harness/fake_backend.h"
#include "tests/harness/graphs_done.h"

static const struct backend_ops cpu_ops = { FAKE_HOST_OPS, .name = "host" };
static const struct backend_ops copy_accel = { FAKE_ACCEL_MEM_OPS, .name = "fake",
	                                       .supports = fake_supports,
	                                       .launch_async = fake_launch };

/* The policy under test: dmda, plus a prefetch hook that counts its
 * calls per worker and, once armed, prefetches `want` to node 1. */
static struct policy_ops pf_policy;
static const struct engine_core *pf_core;
static struct residency *pf_res;
static struct res_arg want;
static _Atomic bool armed;
static _Atomic uint64_t issued;
static _Atomic uint32_t calls[2];
static _Atomic bool off_thread = true;
static pthread_t test_thread;

static int pf_init(const struct policy_params *p, void **priv)
{
	pf_core = p->core;
	return policy_dmda.init(p, priv);
}

static void pf_hook(void *priv, unsigned w)
{
	(void)priv;
	if (w < 2)
		atomic_fetch_add(&calls[w], 1);
	if (pthread_equal(pthread_self(), test_thread))
		atomic_store(&off_thread, false);
	if (w == 1 && atomic_exchange(&armed, false)) {
		uint64_t bytes = 0;
		if (residency_prefetch(pf_res, 1, &want, 1, &bytes) == 0)
			residency_prefetch_drop(pf_res, 1, &want, 1);
		atomic_store(&issued, bytes);
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = { 0, ms * 1000000L };
	nanosleep(&ts, NULL);
}

static void test_hook_on_accelerator_worker(void **state)
{
	(void)state;
	test_thread = pthread_self();
	pf_policy = policy_dmda;
	pf_policy.name = "dmda+prefetch";
	pf_policy.init = pf_init;
	pf_policy.prefetch = pf_hook;

	struct graphs_done dn = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct residency res;
	residency_init(&res);
	pf_res = &res;
	struct backend_device devs[2] = {
		{ .ops = &cpu_ops, .kind = TDM_DEV_CPU },
		{ .ops = &copy_accel, .kind = TDM_DEV_GPU, .mem_bytes = 1 << 20 }
	};
	snprintf(devs[0].name, sizeof(devs[0].name), "cpu0");
	snprintf(devs[1].name, sizeof(devs[1].name), "acc1");
	devs[1].node = (uint16_t)residency_add_node(&res, &devs[1], 0);
	enum { NF = 1024 };
	static float a[NF], b[NF], w[NF];
	struct res_data da, db, dw;
	residency_data_init(&res, &da, a, sizeof(a), 1, true);
	residency_data_init(&res, &db, b, sizeof(b), 2, true);
	residency_data_init(&res, &dw, w, sizeof(w), 3, true);
	want = (struct res_arg){ &dw, 0, sizeof(w), TDM_R };

	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &pf_policy,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .res = &res,
		                    .hooks = { .graph_done = graphs_done_hook, .ctx = &dn },
		                    .start_workers = true,
		                    .spin_us = 10 };
	assert_int_equal(engine_create(&ep, &e), 0);
	assert_non_null(pf_core);
	assert_int_equal(engine_flow_add(e, &flow), 0);

	/* A graph with arguments (before one, there is nothing to prefetch). */
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = &flow;
	g->ntasks = 1;
	g->tasks = calloc(1, sizeof(*g->tasks));
	g->succ_off = calloc(2, sizeof(uint32_t));
	g->succ = calloc(1, sizeof(uint32_t));
	struct engine_task *t = &g->tasks[0];
	t->graph = g;
	t->kernel = kernel_by_id((uint32_t)kernel_lookup("copy"));
	t->call.nargs = 2;
	t->data[0] = &da;
	t->call.ptr[0] = a;
	t->call.len[0] = sizeof(a);
	t->data[1] = &db;
	t->call.ptr[1] = b;
	t->call.len[1] = sizeof(b);
	engine_submit(e, g);
	assert_true(wait_graphs(&dn, 1, 5000));
	assert_int_equal(atomic_load(&dn.graphs), 1);

	/* The accelerator is idle now: a kick wakes its worker, whose pass
	 * issues the copy. */
	sleep_ms(20);
	atomic_store(&armed, true);
	core_kick(pf_core, 1);
	for (int i = 0; i < 5000 && atomic_load(&armed); i++)
		sleep_ms(1);
	assert_false(atomic_load(&armed));
	assert_int_equal(atomic_load(&issued), sizeof(w));
	struct res_node_stats ns;
	residency_node_stats(&res, 1, &ns);
	assert_int_equal(ns.prefetch_bytes, sizeof(w));
	assert_int_equal(residency_missing(&dw, 1, 0, sizeof(w)), 0);
	/* Only the accelerator's worker, on its own thread. */
	assert_int_equal(atomic_load(&calls[0]), 0);
	assert_true(atomic_load(&calls[1]) >= 1);
	assert_true(atomic_load(&off_thread));

	engine_flow_gone(e, &flow);
	engine_destroy(e);
	residency_data_fini(&res, &da);
	residency_data_fini(&res, &db);
	residency_data_fini(&res, &dw);
	residency_fini(&res);
	engine_graph_free_arrays(g);
	free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hook_on_accelerator_worker),
	};
	return cmocka_run_group_tests_name("policy_prefetch", tests, NULL, NULL);
}
