/* The engine's watchdog: a policy that hands out a task twice, gives a
 * worker a task it cannot run, or sits on ready tasks is replaced by a FIFO,
 * and every task still runs exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "policies/policy.h"
#include "tandem.h"

/* ---- broken policies: a FIFO with one defect each ---- */

enum defect { HANDS_OUT_TWICE, IGNORES_DEVICE, STALLS };

struct broken {
	pthread_mutex_t lock;
	struct engine_task *items[4096];
	size_t head, tail;
	enum defect defect;
};

static enum defect next_defect;

static int broken_init(const struct policy_params *p, void **priv)
{
	(void)p;
	struct broken *b = calloc(1, sizeof(*b));
	pthread_mutex_init(&b->lock, NULL);
	b->defect = next_defect;
	*priv = b;
	return 0;
}

static void broken_fini(void *priv)
{
	struct broken *b = priv;
	pthread_mutex_destroy(&b->lock);
	free(b);
}

static void broken_ready(void *priv, struct engine_task **t, size_t n, int worker)
{
	struct broken *b = priv;
	(void)worker;
	pthread_mutex_lock(&b->lock);
	for (size_t i = 0; i < n; i++)
		b->items[b->tail++ % 4096] = t[i];
	pthread_mutex_unlock(&b->lock);
}

static struct engine_task *broken_pick(void *priv, unsigned worker)
{
	struct broken *b = priv;
	struct engine_task *t = NULL;
	(void)worker;
	if (b->defect == STALLS)
		return NULL;
	pthread_mutex_lock(&b->lock);
	if (b->head != b->tail) {
		t = b->items[b->head % 4096];
		if (b->defect != HANDS_OUT_TWICE) /* that one never removes its head */
			b->head++;
	}
	pthread_mutex_unlock(&b->lock);
	return t;
}

static const struct policy_ops broken_policy = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "broken",
	.init = broken_init,
	.fini = broken_fini,
	.tasks_ready = broken_ready,
	.pick_next = broken_pick,
};

/* ---- engine on fake devices: device 1 implements nothing ---- */

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d, (void)k, (void)call;
	return 0;
}

static bool supports_nothing(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d, (void)k;
	return false;
}

static const struct backend_ops fake_all = { .abi_version = BACKEND_ABI_VERSION,
	                                     .name = "fake",
	                                     .launch = fake_launch };
static const struct backend_ops fake_none = { .abi_version = BACKEND_ABI_VERSION,
	                                      .name = "fake",
	                                      .launch = fake_launch,
	                                      .supports = supports_nothing };

static _Atomic int graphs_done;

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	(void)ctx, (void)g;
	atomic_fetch_add(&graphs_done, 1);
}

static struct engine *make_engine(const struct policy_ops *p, bool second_useless, bool threads)
{
	struct backend_device devs[2] = { { .ops = &fake_all, .kind = TDM_DEV_CPU },
		                          { .ops = second_useless ? &fake_none : &fake_all,
		                            .kind = TDM_DEV_CPU } };
	struct engine *e;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = p,
		                    .devices = devs,
		                    .ndevices = 2,
		                    .hooks = { .graph_done = on_graph_done },
		                    .start_workers = threads,
		                    .spin_us = 10,
		                    .watchdog_ms = 50 };
	atomic_store(&graphs_done, 0);
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

/* A chain of n noop tasks (each a successor of the one before). */
static struct engine_graph *make_chain(struct engine_flow *flow, uint32_t n)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	const struct kernel_def *noop = kernel_by_id((uint32_t)kernel_lookup("noop"));
	g->flow = flow;
	g->ntasks = n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(n, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		g->tasks[i].graph = g;
		g->tasks[i].index = i;
		g->tasks[i].kernel = noop;
		g->tasks[i].ndeps = i > 0;
		g->succ_off[i + 1] = g->succ_off[i] + (i + 1 < n);
		if (i + 1 < n)
			g->succ[g->succ_off[i]] = i + 1;
	}
	return g;
}

/* n independent noop tasks. */
static struct engine_graph *make_flat(struct engine_flow *flow, uint32_t n)
{
	struct engine_graph *g = make_chain(flow, n);
	for (uint32_t i = 0; i < n; i++) {
		g->tasks[i].ndeps = 0;
		g->succ_off[i + 1] = 0;
	}
	return g;
}

static void free_graph(struct engine_graph *g)
{
	engine_graph_free_arrays(g);
	free(g);
}

static void run_all(struct engine *e)
{
	bool any = true;
	while (any) {
		any = false;
		for (unsigned w = 0; w < 2; w++)
			any |= engine_run_one(e, w);
	}
}

static bool fell_back(struct engine *e)
{
	struct engine_counters c;
	engine_counters(e, &c);
	return c.fallback;
}

static void test_task_handed_out_twice(void **state)
{
	(void)state;
	struct engine_flow flow = { .id = 1 };
	next_defect = HANDS_OUT_TWICE;
	struct engine *e = make_engine(&broken_policy, false, false);
	struct engine_graph *g = make_flat(&flow, 50);
	engine_submit(e, g);
	assert_true(engine_run_one(e, 0)); /* the first hand-out is fine */
	assert_false(fell_back(e));
	run_all(e); /* the second hand-out of the same task trips the watchdog */
	assert_true(fell_back(e));
	assert_int_equal(atomic_load(&graphs_done), 1);
	struct engine_counters c;
	engine_counters(e, &c);
	assert_int_equal(c.tasks_done, 50); /* each task exactly once */
	assert_int_equal(c.queued, 0);
	engine_destroy(e);
	free_graph(g);
}

static void test_task_given_to_wrong_device(void **state)
{
	(void)state;
	struct engine_flow flow = { .id = 1 };
	next_defect = IGNORES_DEVICE;
	struct engine *e = make_engine(&broken_policy, true, false);
	struct engine_graph *g = make_chain(&flow, 20);
	engine_submit(e, g);
	/* Device 1 implements nothing: the policy offering it a task is caught,
	 * and the task is not run there. */
	assert_false(engine_run_one(e, 1));
	assert_true(fell_back(e));
	run_all(e);
	assert_int_equal(atomic_load(&graphs_done), 1);
	for (uint32_t i = 0; i < 20; i++) {
		assert_int_equal(g->tasks[i].status, 0);
		assert_int_equal(g->tasks[i].device, 0);
	}
	engine_destroy(e);
	free_graph(g);
}

static void test_stalling_policy_replaced(void **state)
{
	(void)state;
	struct engine_flow flow = { .id = 1 };
	next_defect = STALLS;
	struct engine *e = make_engine(&broken_policy, false, true);
	struct engine_graph *g = make_chain(&flow, 30);
	engine_submit(e, g);
	/* Workers idle while the policy holds the root: after watchdog_ms
	 * (50) without progress the FIFO takes over. */
	for (int i = 0; i < 500 && atomic_load(&graphs_done) == 0; i++)
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	assert_int_equal(atomic_load(&graphs_done), 1);
	assert_true(fell_back(e));
	/* After the switch, new graphs go straight to the FIFO. */
	struct engine_graph *g2 = make_flat(&flow, 100);
	engine_submit(e, g2);
	for (int i = 0; i < 500 && atomic_load(&graphs_done) < 2; i++)
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	assert_int_equal(atomic_load(&graphs_done), 2);
	engine_destroy(e);
	free_graph(g);
	free_graph(g2);
}

/* Every registered policy runs a long chain on a machine where one device
 * implements nothing, without tripping the watchdog. */
static void test_registered_policies_keep_their_contract(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct engine_flow flow = { .id = 1, .weight = 1 };
		struct engine *e = make_engine(*p, true, true);
		assert_int_equal(engine_flow_add(e, &flow), 0);
		struct engine_graph *g = make_chain(&flow, 200);
		engine_submit(e, g);
		for (int i = 0; i < 1000 && atomic_load(&graphs_done) == 0; i++)
			nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
		assert_int_equal(atomic_load(&graphs_done), 1);
		if (fell_back(e))
			fail_msg("policy %s tripped the watchdog", (*p)->name);
		engine_flow_gone(e, &flow);
		engine_destroy(e);
		free_graph(g);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_task_handed_out_twice),
		cmocka_unit_test(test_task_given_to_wrong_device),
		cmocka_unit_test(test_stalling_policy_replaced),
		cmocka_unit_test(test_registered_policies_keep_their_contract),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
