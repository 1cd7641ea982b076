/* The policies through the engine, on fake host devices of different
 * speeds: valid schedules for every policy, dmda's placement, heft's plans
 * and their repair, prio's order, graph hints, fairness between clients,
 * and the cost of one dmda decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <glpk.h>

#include "engine/engine.h"
#include "tests/harness/edge_graph.h"
#include "placement/eft.h"
#include "placement/plan.h"
#include "policies/dispatch.h"
#include "policies/policy.h"
#include "profiler/profiler.h"
#include "tandem.h"

#define MAXDEV 4

/* ---- fake devices: a spin task of `us` runs factor * us microseconds ---- */

static double factor[MAXDEV];

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	if (k->id != KERNEL_SPIN)
		return 0;
	const double *f = d->priv;
	uint64_t end = clock_monotonic_ns() + (uint64_t)((double)call->s[0].i64 * 1000.0 * *f);
	while (clock_monotonic_ns() < end)
		__builtin_ia32_pause();
	return 0;
}

static const struct backend_ops fake_backend = { .abi_version = BACKEND_ABI_VERSION,
	                                         .name = "fake",
	                                         .launch = fake_launch };

/* Spin lengths (us) the tasks use; the models learn each one up front. */
static const uint32_t lens[] = { 20, 40, 80, 160 };
#define NLENS (sizeof(lens) / sizeof(lens[0]))

struct rig {
	struct engine *e;
	struct profiler *prof;
	size_t ndev;
	_Atomic int graphs_done;
};

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	struct rig *r = ctx;
	(void)g;
	atomic_fetch_add(&r->graphs_done, 1);
}

/* Models that believe device d runs spin model[d] times its length. */
static struct profiler *trained_profiler(size_t ndev, const double *model)
{
	struct calibration cal;
	struct profiler *p;
	calibrate_defaults(ndev, 1, &cal);
	assert_int_equal(profiler_create(&cal, &p), 0);
	for (uint32_t d = 0; d < ndev; d++)
		for (size_t l = 0; l < NLENS; l++) {
			struct kernel_features f = { .domain = lens[l] };
			for (int i = 0; i < 3; i++)
				profiler_observe(p, KERNEL_SPIN, d, &f,
				                 (uint64_t)(lens[l] * 1000.0 * model[d]));
		}
	return p;
}

/* actual[d]: the devices' real speed factors; model: what the models
 * believe (NULL: no profiler). */
static void rig_start(struct rig *r, const struct policy_ops *policy, size_t ndev,
                      const double *actual, const double *model, bool threads,
                      const struct policy_tuning *tuning)
{
	struct backend_device devs[MAXDEV] = { 0 };
	*r = (struct rig){ .ndev = ndev };
	for (size_t i = 0; i < ndev; i++) {
		factor[i] = actual[i];
		devs[i].ops = &fake_backend;
		devs[i].kind = TDM_DEV_CPU;
		devs[i].priv = &factor[i];
		snprintf(devs[i].name, sizeof(devs[i].name), "fake%zu", i);
	}
	r->prof = model ? trained_profiler(ndev, model) : NULL;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = policy,
		                    .devices = devs,
		                    .ndevices = ndev,
		                    .hooks = { .graph_done = on_graph_done, .ctx = r },
		                    .start_workers = threads,
		                    .spin_us = 10,
		                    .prof = r->prof,
		                    .tuning = tuning };
	assert_int_equal(engine_create(&ep, &r->e), 0);
}

static void rig_stop(struct rig *r)
{
	struct engine_counters c;
	engine_counters(r->e, &c);
	assert_false(c.fallback); /* the watchdog never had to step in */
	engine_destroy(r->e);
	if (r->prof)
		profiler_destroy(r->prof);
}

/* Runs queued tasks on the calling thread until none is left. */
static void run_all(struct rig *r)
{
	for (bool any = true; any;) {
		any = false;
		for (unsigned w = 0; w < r->ndev; w++)
			any |= engine_run_one(r->e, w);
	}
}

static void wait_graphs(struct rig *r, int n)
{
	for (int i = 0; i < 20000 && atomic_load(&r->graphs_done) < n; i++) {
		struct timespec ts = { 0, 500000 };
		nanosleep(&ts, NULL);
	}
	assert_int_equal(atomic_load(&r->graphs_done), n);
}

/* ---- graphs ---- */

/* n tasks with the given (from, to) edges; task i spins us[i]
 * microseconds (0 or us NULL: noop). */
static struct engine_graph *make_graph(struct engine_flow *flow, uint32_t n, const uint32_t *edges,
                                       uint32_t nedges, const uint32_t *us)
{
	struct engine_graph *g = edge_graph(flow, kernel_by_id(KERNEL_NOOP), n, edges, nedges);
	for (uint32_t i = 0; i < n && us; i++) {
		struct engine_task *t = &g->tasks[i];
		if (us[i]) {
			t->kernel = kernel_by_id(KERNEL_SPIN);
			t->call.s[0].i64 = us[i];
			t->feat.domain = us[i];
		}
	}
	return g;
}

static void free_graph(struct engine_graph *g)
{
	edge_graph_free(g);
}

struct dag {
	uint32_t n, ne;
	uint32_t us[64];
	uint32_t edges[2 * 128];
};

/* A random DAG: each task depends on up to two earlier ones; one in ten is
 * a noop. */
static void random_dag(struct dag *d, unsigned seed, uint32_t n)
{
	d->n = n;
	d->ne = 0;
	for (uint32_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		d->us[i] = (seed >> 16) % 10 == 0 ? 0 : lens[(seed >> 8) % NLENS];
		for (int k = 0; k < 2 && i > 0; k++) {
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 12) % 3 == 0)
				continue;
			uint32_t from = (seed >> 8) % i;
			if (k == 1 && d->ne && d->edges[2 * (d->ne - 1)] == from &&
			    d->edges[2 * (d->ne - 1) + 1] == i)
				continue;
			d->edges[2 * d->ne] = from;
			d->edges[2 * d->ne + 1] = i;
			d->ne++;
		}
	}
}

/* ---- schedule checks ---- */

static struct engine_graph *sort_graph;

static int by_start(const void *a, const void *b)
{
	const struct engine_task *x = &sort_graph->tasks[*(const uint32_t *)a];
	const struct engine_task *y = &sort_graph->tasks[*(const uint32_t *)b];
	return x->start_ns < y->start_ns ? -1 : x->start_ns > y->start_ns;
}

/* Every task done, after its predecessors, never two at once on a device;
 * returns the makespan (first start to last end). */
static uint64_t check_schedule(struct engine_graph *g, size_t ndev)
{
	uint64_t first = UINT64_MAX, last = 0;
	for (uint32_t v = 0; v < g->ntasks; v++) {
		const struct engine_task *t = &g->tasks[v];
		assert_int_equal(t->status, 0);
		assert_true(t->end_ns >= t->start_ns && t->start_ns > 0);
		assert_true(t->device < ndev);
		first = t->start_ns < first ? t->start_ns : first;
		last = t->end_ns > last ? t->end_ns : last;
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			assert_true(g->tasks[g->succ[k]].start_ns >= t->end_ns);
	}
	uint32_t *idx = calloc(g->ntasks, sizeof(uint32_t));
	for (size_t d = 0; d < ndev; d++) {
		uint32_t n = 0;
		for (uint32_t v = 0; v < g->ntasks; v++)
			if (g->tasks[v].device == d)
				idx[n++] = v;
		sort_graph = g;
		qsort(idx, n, sizeof(*idx), by_start);
		for (uint32_t i = 1; i < n; i++)
			assert_true(g->tasks[idx[i]].start_ns >= g->tasks[idx[i - 1]].end_ns);
	}
	free(idx);
	return last - first;
}

/* The best any schedule can do with the devices' true costs. */
static double lower_bound(struct engine_graph *g, size_t ndev)
{
	double *cost = calloc((size_t)g->ntasks * ndev, sizeof(double));
	for (uint32_t v = 0; v < g->ntasks; v++)
		for (size_t d = 0; d < ndev; d++)
			cost[v * ndev + d] = (double)g->tasks[v].call.s[0].i64 * 1000.0 * factor[d];
	uint16_t node[MAXDEV] = { 0 };
	double zero[1] = { 0 };
	struct plan_machine m = { (unsigned)ndev, node, 1, zero, zero };
	struct plan_dag dag = {
		.n = g->ntasks, .cost = cost, .succ_off = g->succ_off, .succ = g->succ
	};
	double cp, area;
	assert_int_equal(plan_lower_bounds(&dag, &m, &cp, &area), 0);
	free(cost);
	return plan_lower_bound(cp, area);
}

/* ---- a policy wrapper that lets tests see the dispatch state ---- */

static const struct policy_ops *spied;
static struct policy_ops spy_ops;
static void *spy_priv;
static struct engine_graph *spy_graph; /* the last graph submitted */
static bool spy_planned;
static int spy_dev[64]; /* its planned devices */

static int spy_init(const struct policy_params *p, void **priv)
{
	int err = spied->init(p, priv);
	spy_priv = *priv;
	return err;
}

static void spy_graph_submitted(void *priv, struct engine_graph *g)
{
	spied->graph_submitted(priv, g);
	spy_graph = g;
	spy_planned = g->policy_graph != NULL;
	for (uint32_t i = 0; i < g->ntasks && i < 64; i++)
		spy_dev[i] = dispatch_planned_device(g, i);
}

static const struct policy_ops *spy(const struct policy_ops *p)
{
	spied = p;
	spy_ops = *p;
	spy_ops.init = spy_init;
	spy_ops.graph_submitted = spy_graph_submitted;
	return &spy_ops;
}

static struct dispatch_stats spy_stats(void)
{
	struct dispatch_stats s;
	dispatch_stats(spy_priv, &s);
	return s;
}

/* ---- tests ---- */

/* The registry: every policy speaks this seam's version and is found by
 * its name. A policy or backend of another version is refused by
 * engine_create, with the versions in the message. */
static void test_registry_versions(void **state)
{
	char why[160];
	size_t n = 0;
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++, n++) {
		assert_int_equal((*p)->abi_version, POLICY_ABI_VERSION);
		assert_int_equal(policy_check(*p, why, sizeof(why)), 0);
		assert_ptr_equal(policy_by_name((*p)->name), *p);
	}
	assert_int_equal(n, 8);
	assert_null(policy_by_name("nosuch"));
	assert_int_equal(policy_check(&policy_fifo, NULL, 0), 0);

	struct policy_ops other = policy_eager;
	other.abi_version = POLICY_ABI_VERSION + 1;
	assert_int_equal(policy_check(&other, why, sizeof(why)), -TDM_EINVAL);
	char want[96];
	snprintf(want, sizeof(want), "policy eager: ABI version %u, tandemd speaks %u: refused",
	         POLICY_ABI_VERSION + 1, POLICY_ABI_VERSION);
	assert_string_equal(why, want);
	assert_int_equal(policy_check(NULL, why, sizeof(why)), -TDM_EINVAL);

	struct backend_device dev = { .ops = &fake_backend, .kind = TDM_DEV_CPU, .name = "fake0" };
	struct engine *e = NULL;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &other,
		                    .devices = &dev,
		                    .ndevices = 1,
		                    .hooks = { .graph_done = on_graph_done } };
	assert_int_equal(engine_create(&ep, &e), -TDM_EINVAL);
	assert_null(e);
	ep.policy = &policy_eager;
	struct backend_ops old_backend = fake_backend;
	old_backend.abi_version = BACKEND_ABI_VERSION + 1;
	dev.ops = &old_backend;
	assert_int_equal(backend_check(&old_backend, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "refused"));
	assert_int_equal(engine_create(&ep, &e), -TDM_EINVAL);
	assert_null(e);
	/* the same, of this version: accepted */
	dev.ops = &fake_backend;
	assert_int_equal(engine_create(&ep, &e), 0);
	engine_destroy(e);
}

static const double fast0[] = { 1, 4, 4 }; /* device 0 is 4x faster */

/* A rig of ndev devices of the given speeds (the models believe them)
 * with one flow, and a random DAG of n tasks from seed submitted. */
static struct engine_graph *rig_with_dag(struct rig *r, const struct policy_ops *p, size_t ndev,
                                         const double *speed, bool threads,
                                         struct engine_flow *flow, unsigned seed, uint32_t n)
{
	struct dag d;
	random_dag(&d, seed, n);
	rig_start(r, p, ndev, speed, speed, threads, NULL);
	assert_int_equal(engine_flow_add(r->e, flow), 0);
	struct engine_graph *g = make_graph(flow, d.n, d.edges, d.ne, d.us);
	engine_submit(r->e, g);
	return g;
}

/* Every policy, on random DAGs, threaded and not: a valid schedule no
 * shorter than the lower bound. */
static void test_valid_schedules(void **state)
{
	(void)state;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		for (unsigned seed = 1; seed <= 3; seed++) {
			for (int threads = 0; threads <= 1; threads++) {
				struct rig r;
				struct engine_flow flow = { .id = 1, .weight = 1 };
				struct engine_graph *g = rig_with_dag(&r, *p, 3, fast0, threads,
				                                      &flow, seed * 7919u, 40);
				if (!threads)
					run_all(&r);
				wait_graphs(&r, 1);
				uint64_t mk = check_schedule(g, 3);
				double lb = lower_bound(g, 3);
				assert_true((double)mk >= lb - 1000.0);
				if (threads)
					printf("%-6s seed %u: makespan %.0f us, bound %.0f us\n",
					       (*p)->name, seed, mk / 1e3, lb / 1e3);
				engine_flow_gone(r.e, &flow);
				rig_stop(&r);
				free_graph(g);
			}
		}
	}
}

/* may_pick, where a policy has it, never says "nothing" to a worker that
 * then finds a task: stepped one worker at a time on random DAGs (4
 * devices, one much faster, so that the others idle while tasks wait for
 * it), before each step of each worker. Both answers occur. */
static void test_may_pick_agrees(void **state)
{
	(void)state;
	static const double skew[] = { 1, 6, 6, 6 };
	unsigned checked = 0;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		if (!(*p)->may_pick)
			continue;
		checked++;
		unsigned said_no = 0, said_yes = 0;
		for (unsigned seed = 1; seed <= 3; seed++) {
			struct rig r;
			struct engine_flow flow = { .id = 1, .weight = 1 };
			struct engine_graph *g =
			        rig_with_dag(&r, *p, 4, skew, false, &flow, seed * 104729u, 60);
			void *priv = engine_policy_priv(r.e);
			for (bool any = true; any;) {
				any = false;
				for (unsigned w = 0; w < 4; w++) {
					bool may = (*p)->may_pick(priv, w);
					bool ran = engine_run_one(r.e, w);
					if (ran && !may)
						print_error("%s: worker %u found a task may_pick "
						            "denied\n",
						            (*p)->name, w);
					assert_true(may || !ran);
					said_no += !may;
					said_yes += may;
					any |= ran;
				}
			}
			wait_graphs(&r, 1);
			check_schedule(g, 4);
			engine_flow_gone(r.e, &flow);
			rig_stop(&r);
			free_graph(g);
		}
		assert_true(said_no > 0 && said_yes > 0);
	}
	assert_true(checked >= 5); /* the policies of the dispatch core */
}

/* dmda: one task goes to the fast device; a batch is shared about 4:1,
 * the slow device taking some once the fast one is loaded. */
static void test_dmda_placement(void **state)
{
	(void)state;
	static const double speeds[] = { 1, 4 };
	struct rig r;
	struct engine_flow flow = { .id = 1, .weight = 1 };
	rig_start(&r, &policy_dmda, 2, speeds, speeds, false, NULL);
	assert_int_equal(engine_flow_add(r.e, &flow), 0);
	uint32_t us[20];
	for (int i = 0; i < 20; i++)
		us[i] = 40;
	struct engine_graph *one = make_graph(&flow, 1, NULL, 0, us);
	engine_submit(r.e, one);
	assert_false(engine_run_one(r.e, 1));
	assert_true(engine_run_one(r.e, 0));
	assert_int_equal(one->tasks[0].device, 0);

	struct engine_graph *batch = make_graph(&flow, 20, NULL, 0, us);
	engine_submit(r.e, batch);
	int on[2] = { 0, 0 };
	for (unsigned w = 0; w < 2; w++)
		while (engine_run_one(r.e, w))
			on[w]++;
	assert_int_equal(on[0] + on[1], 20);
	assert_in_range(on[0], 14, 18);
	assert_in_range(on[1], 2, 6);
	assert_int_equal(atomic_load(&r.graphs_done), 2);
	engine_flow_gone(r.e, &flow);
	rig_stop(&r);
	free_graph(one);
	free_graph(batch);
}

/* A layered DAG: `layers` of `width` spin tasks, each depending on two
 * tasks of the layer before. */
static struct engine_graph *layered(struct engine_flow *flow, uint32_t layers, uint32_t width,
                                    uint32_t us_each)
{
	uint32_t n = layers * width, ne = 0;
	uint32_t *us = calloc(n, sizeof(uint32_t)), *edges = calloc(4 * n, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		us[i] = us_each;
		if (i < width)
			continue;
		uint32_t l = i / width, c = i % width;
		edges[2 * ne] = (l - 1) * width + c;
		edges[2 * ne++ + 1] = i;
		if (width == 1)
			continue;
		edges[2 * ne] = (l - 1) * width + (c + 1) % width;
		edges[2 * ne++ + 1] = i;
	}
	struct engine_graph *g = make_graph(flow, n, edges, ne, us);
	free(us);
	free(edges);
	return g;
}

/* heft with exact models and no repair: a chain goes to the fast device,
 * and every task of a wider graph runs where the plan put it. */
static void test_heft_follows_plan(void **state)
{
	(void)state;
	struct policy_tuning tuning = policy_tuning_defaults;
	tuning.plan_repair = false;
	for (int threads = 0; threads <= 1; threads++) {
		struct rig r;
		struct engine_flow flow = { .id = 1, .weight = 1 };
		rig_start(&r, spy(&policy_heft), 3, fast0, fast0, threads, &tuning);
		assert_int_equal(engine_flow_add(r.e, &flow), 0);

		struct engine_graph *chain = layered(&flow, 8, 1, 40);
		engine_submit(r.e, chain);
		assert_true(spy_planned);
		for (uint32_t i = 0; i < chain->ntasks; i++)
			assert_int_equal(spy_dev[i], 0);
		if (!threads)
			run_all(&r);
		wait_graphs(&r, 1);
		check_schedule(chain, 3);
		for (uint32_t i = 0; i < chain->ntasks; i++)
			assert_int_equal(chain->tasks[i].device, 0);

		struct engine_graph *wide = layered(&flow, 4, 6, 80);
		engine_submit(r.e, wide);
		assert_true(spy_planned);
		int planned[64], used[3] = { 0 };
		memcpy(planned, spy_dev, sizeof(planned));
		if (!threads)
			run_all(&r);
		wait_graphs(&r, 2);
		check_schedule(wide, 3);
		for (uint32_t i = 0; i < wide->ntasks; i++) {
			assert_int_equal(wide->tasks[i].device, planned[i]);
			used[planned[i]]++;
		}
		assert_true(used[0] > used[1] && used[0] > used[2]);
		assert_int_equal(spy_stats().plans, 2);
		assert_int_equal(spy_stats().repairs, 0);
		engine_flow_gone(r.e, &flow);
		rig_stop(&r);
		free_graph(chain);
		free_graph(wide);
	}
}

/* Device 1 runs 3x slower than its model says: heft and peft notice the
 * drift, re-plan the rest of the graph, and the schedule stays valid. */
static void test_plan_repair(void **state)
{
	(void)state;
	static const double model[] = { 1, 1, 2 }, actual[] = { 1, 3, 2 };
	const struct policy_ops *pols[] = { &policy_heft, &policy_peft };
	for (size_t p = 0; p < 2; p++) {
		for (int threads = 0; threads <= 1; threads++) {
			struct rig r;
			struct engine_flow flow = { .id = 1, .weight = 1 };
			rig_start(&r, spy(pols[p]), 3, actual, model, threads, NULL);
			assert_int_equal(engine_flow_add(r.e, &flow), 0);
			struct engine_graph *g = layered(&flow, 12, 6, 40);
			engine_submit(r.e, g);
			assert_true(spy_planned);
			if (!threads)
				run_all(&r);
			wait_graphs(&r, 1);
			check_schedule(g, 3);
			struct dispatch_stats s = spy_stats();
			assert_true(s.drifts > 0);
			assert_true(s.repairs > 0);
			assert_int_equal(s.repair_failures, 0);
			/* at most one per max(8, n/16) completions */
			assert_true(s.repairs <= g->ntasks / 8);
			engine_flow_gone(r.e, &flow);
			rig_stop(&r);
			free_graph(g);
		}
	}
}

/* prio, one worker: higher priorities first (graph + task, across
 * clients), then earlier deadlines. */
static void test_prio_order(void **state)
{
	(void)state;
	static const double one[] = { 1 };
	struct rig r;
	struct engine_flow a = { .id = 1, .weight = 1 }, b = { .id = 2, .weight = 1 };
	rig_start(&r, &policy_prio, 1, one, NULL, false, NULL);
	assert_int_equal(engine_flow_add(r.e, &a), 0);
	assert_int_equal(engine_flow_add(r.e, &b), 0);
	uint64_t now = clock_monotonic_ns();
	struct engine_graph *low = make_graph(&a, 4, NULL, 0, NULL);
	struct engine_graph *late = make_graph(&a, 4, NULL, 0, NULL);
	struct engine_graph *early = make_graph(&a, 4, NULL, 0, NULL);
	struct engine_graph *high = make_graph(&b, 4, NULL, 0, NULL);
	late->deadline_ns = now + 2000000000ull;
	early->deadline_ns = now + 1000000000ull;
	high->priority = 10;
	high->tasks[3].priority = 5; /* 15: first of all */
	low->priority = -1;
	engine_submit(r.e, low);
	engine_submit(r.e, late);
	engine_submit(r.e, early);
	engine_submit(r.e, high);
	/* Expected ranks: high's task 3 (15), high (10), early, late (0, by
	 * deadline), low (-1). */
	struct engine_graph *order[] = { high, early, late, low };
	struct engine_task *ran[16];
	for (int i = 0; i < 16; i++) {
		assert_true(engine_run_one(r.e, 0));
		ran[i] = NULL;
		for (int k = 0; k < 4; k++)
			for (int j = 0; j < 4; j++) {
				struct engine_task *t = &order[k]->tasks[j];
				if (t->end_ns && (!ran[i] || t->end_ns > ran[i]->end_ns))
					ran[i] = t;
			}
	}
	int last_rank = -1;
	for (int i = 0; i < 16; i++) {
		int rank = ran[i] == &high->tasks[3] ? 0
		           : ran[i]->graph == high   ? 1
		           : ran[i]->graph == early  ? 2
		           : ran[i]->graph == late   ? 3
		                                     : 4;
		assert_true(rank >= last_rank);
		last_rank = rank;
	}
	assert_ptr_equal(ran[0], &high->tasks[3]);
	assert_int_equal(last_rank, 4);
	assert_false(engine_run_one(r.e, 0));
	assert_int_equal(atomic_load(&r.graphs_done), 4);
	engine_flow_gone(r.e, &a);
	engine_flow_gone(r.e, &b);
	rig_stop(&r);
	for (int k = 0; k < 4; k++)
		free_graph(order[k]);
}

/* Under dmda a graph hinted heft (or whose client asks for peft) gets a
 * plan; a default one does not; eager-hinted graphs run anywhere. */
static void test_graph_hints(void **state)
{
	(void)state;
	static const double model[] = { 1, 1, 2 }, actual[] = { 1, 3, 2 };
	struct rig r;
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct engine_flow peft_client = { .id = 2, .weight = 1, .policy_hint = TDM_POLICY_PEFT };
	rig_start(&r, spy(&policy_dmda), 3, actual, model, false, NULL);
	assert_int_equal(engine_flow_add(r.e, &flow), 0);
	assert_int_equal(engine_flow_add(r.e, &peft_client), 0);

	/* First, while the models still believe device 1 is fast. */
	struct engine_graph *hinted = layered(&flow, 12, 6, 40);
	hinted->policy_hint = TDM_POLICY_HEFT;
	engine_submit(r.e, hinted);
	assert_true(spy_planned);
	run_all(&r);
	assert_int_equal(spy_stats().plans, 1);
	assert_true(spy_stats().repairs > 0);

	struct engine_graph *plain = layered(&flow, 4, 4, 40);
	engine_submit(r.e, plain);
	assert_false(spy_planned);
	run_all(&r);
	assert_int_equal(spy_stats().plans, 1);

	struct engine_graph *by_client = layered(&peft_client, 4, 4, 40);
	engine_submit(r.e, by_client);
	assert_true(spy_planned);
	run_all(&r);
	assert_int_equal(spy_stats().plans, 2);

	/* eager: the any-device queue, taken by whichever worker asks */
	struct engine_graph *eager = layered(&flow, 1, 6, 20);
	eager->policy_hint = TDM_POLICY_EAGER;
	engine_submit(r.e, eager);
	assert_false(spy_planned);
	for (unsigned w = 0; w < 3; w++) {
		assert_true(engine_run_one(r.e, w));
		assert_true(engine_run_one(r.e, w));
	}
	assert_false(engine_run_one(r.e, 0));
	for (uint32_t i = 0; i < 6; i++)
		assert_true(eager->tasks[i].end_ns > 0);

	wait_graphs(&r, 4);
	check_schedule(plain, 3);
	check_schedule(hinted, 3);
	check_schedule(by_client, 3);
	engine_flow_gone(r.e, &flow);
	engine_flow_gone(r.e, &peft_client);
	rig_stop(&r);
	free_graph(plain);
	free_graph(hinted);
	free_graph(by_client);
	free_graph(eager);
}

static uint32_t count_done(const struct engine_graph *g)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < g->ntasks; i++)
		n += g->tasks[i].end_ns > 0;
	return n;
}

/* Weights 1:3 through the engine: of the first 2000 tasks, the weight-3
 * client gets 75% (+-10%), for every dispatch policy. */
static void test_engine_weights(void **state)
{
	(void)state;
	static const double one[] = { 1 };
	const struct policy_ops *pols[] = { &policy_dmda, &policy_heft, &policy_peft,
		                            &policy_prio };
	for (size_t p = 0; p < 4; p++) {
		struct rig r;
		struct engine_flow a = { .id = 1, .weight = 1 }, b = { .id = 2, .weight = 3 };
		rig_start(&r, pols[p], 1, one, NULL, false, NULL);
		assert_int_equal(engine_flow_add(r.e, &a), 0);
		assert_int_equal(engine_flow_add(r.e, &b), 0);
		struct engine_graph *ga = make_graph(&a, 5000, NULL, 0, NULL);
		struct engine_graph *gb = make_graph(&b, 5000, NULL, 0, NULL);
		engine_submit(r.e, ga);
		engine_submit(r.e, gb);
		for (int i = 0; i < 2000; i++)
			assert_true(engine_run_one(r.e, 0));
		assert_in_range(count_done(gb), 1350, 1650);
		run_all(&r);
		assert_int_equal(atomic_load(&r.graphs_done), 2);
		engine_flow_gone(r.e, &a);
		engine_flow_gone(r.e, &b);
		rig_stop(&r);
		free_graph(ga);
		free_graph(gb);
	}
}

/* A light client's single task runs within the first few tasks after it
 * arrives behind a flood, for every dispatch policy. */
static void test_light_beside_flood(void **state)
{
	(void)state;
	static const double one[] = { 1 };
	const struct policy_ops *pols[] = { &policy_dmda, &policy_heft, &policy_peft,
		                            &policy_prio };
	for (size_t p = 0; p < 4; p++) {
		struct rig r;
		struct engine_flow heavy = { .id = 1, .weight = 1 },
		                   light = { .id = 2, .weight = 1 };
		rig_start(&r, pols[p], 1, one, one, false, NULL);
		assert_int_equal(engine_flow_add(r.e, &heavy), 0);
		assert_int_equal(engine_flow_add(r.e, &light), 0);
		struct engine_graph *flood = make_graph(&heavy, 1000, NULL, 0, NULL);
		engine_submit(r.e, flood);
		for (int i = 0; i < 10; i++)
			assert_true(engine_run_one(r.e, 0));
		struct engine_graph *small = make_graph(&light, 1, NULL, 0, NULL);
		engine_submit(r.e, small);
		for (int i = 0; i < 3; i++)
			assert_true(engine_run_one(r.e, 0));
		assert_int_equal(atomic_load(&r.graphs_done), 1);
		assert_true(small->tasks[0].end_ns > 0);
		run_all(&r);
		engine_flow_gone(r.e, &heavy);
		engine_flow_gone(r.e, &light);
		rig_stop(&r);
		free_graph(flood);
		free_graph(small);
	}
}

/* A device marked unhealthy: tasks already queued there move to the
 * others when its worker asks; under heft and peft also those planned
 * there and parked behind them (struct gplan in policies/dispatch.c). */
static void test_unhealthy_device(void **state)
{
	(void)state;
	static const double speeds[] = { 1, 4 };
	const struct policy_ops *pols[] = { &policy_dmda, &policy_heft, &policy_peft };
	for (size_t p = 0; p < sizeof(pols) / sizeof(pols[0]); p++) {
		struct rig r;
		struct engine_flow flow = { .id = 1, .weight = 1 };
		rig_start(&r, spy(pols[p]), 2, speeds, speeds, false, NULL);
		assert_int_equal(engine_flow_add(r.e, &flow), 0);
		uint32_t us[8] = { 20, 20, 20, 20, 20, 20, 20, 20 };
		struct engine_graph *g = make_graph(&flow, 8, NULL, 0, us);
		engine_submit(r.e, g);
		/* one device fault on device 0: it becomes unhealthy */
		struct engine_device *d0 = (struct engine_device *)engine_device(r.e, 0);
		atomic_store(&d0->inject_faults, 1);
		assert_true(engine_run_one(r.e, 0));
		assert_false(atomic_load(&d0->healthy));
		run_all(&r);
		wait_graphs(&r, 1);
		for (uint32_t i = 0; i < 8; i++) {
			assert_int_equal(g->tasks[i].status, 0);
			assert_int_equal(g->tasks[i].device, 1);
		}
		assert_true(spy_stats().replaced > 0);
		engine_flow_gone(r.e, &flow);
		rig_stop(&r);
		free_graph(g);
	}
}

/* Threaded: four workers, several clients with mixed hints at once. */
static void test_threaded_mixed(void **state)
{
	(void)state;
	static const double speeds[] = { 1, 2, 2, 4 };
	const struct policy_ops *pols[] = { &policy_dmda, &policy_heft, &policy_peft,
		                            &policy_prio };
	for (size_t p = 0; p < 4; p++) {
		struct rig r;
		struct engine_flow flows[4];
		struct engine_graph *gs[8];
		rig_start(&r, pols[p], 4, speeds, speeds, true, NULL);
		for (int f = 0; f < 4; f++) {
			flows[f] = (struct engine_flow){ .id = (uint32_t)f + 1,
				                         .weight = (uint32_t)f + 1,
				                         .policy_hint = (uint8_t)f };
			assert_int_equal(engine_flow_add(r.e, &flows[f]), 0);
		}
		for (int i = 0; i < 8; i++) {
			struct dag d;
			random_dag(&d, 100u + (unsigned)i, 48);
			gs[i] = make_graph(&flows[i % 4], d.n, d.edges, d.ne, d.us);
			gs[i]->policy_hint = (uint8_t)(i % TDM_POLICY_HINT_COUNT);
			gs[i]->priority = i % 3;
			engine_submit(r.e, gs[i]);
		}
		wait_graphs(&r, 8);
		for (int i = 0; i < 8; i++)
			check_schedule(gs[i], 4);
		for (int f = 0; f < 4; f++)
			engine_flow_gone(r.e, &flows[f]);
		rig_stop(&r);
		for (int i = 0; i < 8; i++)
			free_graph(gs[i]);
	}
}

/* The cost of one dmda decision (select, push, pop, done) with three
 * devices and cost models: printed, not asserted. */
static void test_dmda_decision_cost(void **state)
{
	(void)state;
	enum { POOL = 1024, ROUNDS = 100, BATCH = 64 };
	struct rig r;
	rig_start(&r, &policy_dmda, 3, fast0, fast0, false, NULL);
	const struct engine_core core = { .engine = r.e,
		                          .runnable = engine_runnable,
		                          .kick = engine_kick };
	struct policy_params pp = { .nworkers = 3,
		                    .devices = engine_device(r.e, 0),
		                    .core = &core,
		                    .clock = &clock_real,
		                    .prof = r.prof,
		                    .tuning = &policy_tuning_defaults };
	void *priv;
	assert_int_equal(policy_dmda.init(&pp, &priv), 0);
	struct engine_flow flow = { .id = 1, .weight = 1 };
	assert_int_equal(policy_dmda.flow_added(priv, &flow), 0);
	uint32_t us[POOL];
	for (uint32_t i = 0; i < POOL; i++)
		us[i] = lens[i % NLENS];
	struct engine_graph *g = make_graph(&flow, POOL, NULL, 0, us);
	policy_dmda.graph_submitted(priv, g);
	struct engine_task *batch[BATCH];
	uint64_t t0 = clock_monotonic_ns(), popped = 0;
	for (uint32_t round = 0; round < ROUNDS; round++) {
		for (uint32_t at = 0; at < POOL; at += BATCH) {
			for (uint32_t i = 0; i < BATCH; i++) {
				batch[i] = &g->tasks[at + i];
				batch[i]->queued_ns = t0;
			}
			policy_dmda.tasks_ready(priv, batch, BATCH, -1);
			for (unsigned w = 0; w < 3; w++) {
				struct engine_task *t;
				while ((t = policy_dmda.pick_next(priv, w))) {
					policy_dmda.task_done(priv, t, w);
					popped++;
				}
			}
		}
	}
	uint64_t ns = clock_monotonic_ns() - t0;
	assert_int_equal(popped, (uint64_t)POOL * ROUNDS);
	printf("dmda decision (select + push + pop + done, 3 devices): %.0f ns per task over %u "
	       "tasks\n",
	       (double)ns / (double)popped, POOL * ROUNDS);
	for (unsigned w = 0; w < 3; w++) /* nothing left */
		assert_null(policy_dmda.pick_next(priv, w));
	policy_dmda.flow_gone(priv, &flow);
	policy_dmda.fini(priv);
	free_graph(g);
	rig_stop(&r);
}

/* eft without a profiler on three memory nodes: what a read costs where
 * (valid replicas, planned copies, the host's conservative rule), what a
 * commit plans, and how dmda weighs committed work against transfers. */
static void test_eft_transfers(void **state)
{
	(void)state;
	struct engine_device devs[3] = { 0 };
	for (int i = 0; i < 3; i++) {
		devs[i].index = (uint16_t)i;
		devs[i].node = (uint16_t)i;
		devs[i].dev.kind = i ? TDM_DEV_GPU : TDM_DEV_CPU;
	}
	struct eft x;
	assert_int_equal(eft_init(&x, NULL, devs, 3, NULL), 0);
	assert_int_equal(x.nnodes, 3);
	assert_int_equal(x.ngroups, 2); /* the two GPUs share a model */
	/* valid on the host only (full: node 0 holds every byte) */
	struct res_data in = { .bytes = 1 << 20, .full = 1u },
	                out = { .bytes = 1 << 20, .full = 1u };
	struct engine_task t = { .kernel = kernel_by_id(KERNEL_AXPY) };
	t.call.nargs = 2;
	t.call.len[0] = t.call.len[1] = 1 << 20;
	t.data[0] = &in;
	t.data[1] = &out;
	double copy = EFT_FLAT_COPY_NS + (double)(1 << 20) / EFT_FLAT_COPY_GBPS;

	/* both on the host only: free there, two copies elsewhere */
	assert_true(eft_transfer(&x, &t, 0) == 0);
	assert_true(eft_transfer(&x, &t, 1) == 2 * copy);
	/* in valid on node 1: free there; the host copy may be stale now, so
	 * node 0 is charged a copy back (conservative) */
	atomic_store(&in.remote, 1u << 1);
	atomic_store(&in.full, 1u << 1);
	assert_true(eft_transfer(&x, &t, 1) == copy);
	assert_true(eft_transfer(&x, &t, 0) == copy);
	/* a copy to node 2 already planned */
	atomic_store(&in.planned, 1u << 2);
	atomic_store(&out.planned, 1u << 2);
	assert_true(eft_transfer(&x, &t, 2) == 0);

	/* committing t on device 1 plans its reads there; out, written, is
	 * planned on node 1 only */
	eft_commit(&x, &t, 1, 5000);
	assert_int_equal(atomic_load(&in.planned), (1u << 1) | (1u << 2));
	assert_int_equal(atomic_load(&out.planned), 1u << 1);
	assert_int_equal(eft_pending(&x, 1), 5000);
	eft_uncommit(&x, 1, 5000);
	assert_int_equal(eft_pending(&x, 1), 0);

	/* dmda: with nothing committed the free device wins; enough work
	 * committed there moves the task to one that must copy */
	atomic_store(&in.remote, 0);
	atomic_store(&in.planned, 0);
	atomic_store(&out.planned, 0);
	double cost;
	assert_int_equal(eft_select(&x, &t, 1, 1, -1, &cost), 0);
	assert_true(cost == EFT_FLAT_NS);
	eft_commit(&x, &t, 0, 10 * copy);
	assert_int_equal(eft_select(&x, &t, 1, 1, -1, &cost), 1);
	assert_int_equal(eft_select(&x, &t, 1, 1, 1, &cost), 2);
	eft_fini(&x);
}

int main(void)
{
	glp_term_out(GLP_OFF); /* the lower bounds' LP solver is chatty */
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registry_versions),
		cmocka_unit_test(test_valid_schedules),
		cmocka_unit_test(test_may_pick_agrees),
		cmocka_unit_test(test_eft_transfers),
		cmocka_unit_test(test_dmda_placement),
		cmocka_unit_test(test_heft_follows_plan),
		cmocka_unit_test(test_plan_repair),
		cmocka_unit_test(test_prio_order),
		cmocka_unit_test(test_graph_hints),
		cmocka_unit_test(test_engine_weights),
		cmocka_unit_test(test_light_beside_flood),
		cmocka_unit_test(test_unhealthy_device),
		cmocka_unit_test(test_threaded_mixed),
		cmocka_unit_test(test_dmda_decision_cost),
	};
	return cmocka_run_group_tests_name("policies", tests, NULL, NULL);
}
