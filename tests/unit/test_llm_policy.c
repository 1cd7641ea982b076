/* The llm policy (policies/llm.c) on two fake host cores and a fake
 * accelerator whose memory cap holds the step's other data and three KV
 * caches: which caches it homes where, where each attention and each
 * append goes (the queues the workers take from), demotion and promotion
 * between steps; residency's eviction keeping homed data last; and the
 * step decision with the caller's costs matching the roofline path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "placement/llm_step.h"
#include "placement/residency.h"
#include "policies/dispatch.h"
#include "policies/llm.h"
#include "policies/policy.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"
#include "tests/harness/fake_backend.h"

/* ---- a fake accelerator: device memory and copies, no kernels ---- */

static const struct backend_ops fake_accel = { FAKE_ACCEL_MEM_OPS, .name = "fake" };

/* ---- the rig: cpu0, cpu1 (node 0), acc0 (node 1) ---- */

enum { NDEV = 3, ACC = 2, NREQ = 8, ON_ACCEL = 3 };
#define KV_BYTES ((uint64_t)64 * 1024)
#define W_BYTES ((uint64_t)96 * 1024)
#define ACT_BYTES ((uint64_t)4096)
/* Weights, three activation buffers (q, k rows, o) and ON_ACCEL and a
 * half caches. */
#define CAP (W_BYTES + 3 * ACT_BYTES + ON_ACCEL * KV_BYTES + KV_BYTES / 2)

struct buf {
	void *host;
	struct res_data d;
};

struct rig {
	struct residency res;
	struct engine_device devs[NDEV];
	const struct policy_ops *pol;
	void *priv;
	struct buf w, q, k, o, big, kv[NREQ];
	bool kv_live[NREQ];
};

static void buf_init(struct rig *r, struct buf *b, uint64_t bytes, bool keep, uint32_t id)
{
	b->host = calloc(1, bytes);
	assert_non_null(b->host);
	residency_data_init(&r->res, &b->d, b->host, bytes, id, keep);
}

static void buf_fini(struct rig *r, struct buf *b)
{
	residency_data_fini(&r->res, &b->d);
	free(b->host);
}

static struct rig *rig_new_prof(struct profiler *prof)
{
	struct rig *r = calloc(1, sizeof(*r));
	residency_init(&r->res);
	for (int i = 0; i < NDEV; i++) {
		r->devs[i].index = (uint16_t)i;
		snprintf(r->devs[i].dev.name, sizeof(r->devs[i].dev.name), i < 2 ? "cpu%d" : "acc0",
		         i);
		r->devs[i].dev.kind = i < 2 ? TDM_DEV_CPU : TDM_DEV_GPU;
	}
	r->devs[ACC].dev.ops = &fake_accel;
	int node = residency_add_node(&r->res, &r->devs[ACC].dev, CAP);
	assert_int_equal(node, 1);
	r->devs[ACC].node = 1;
	buf_init(r, &r->w, W_BYTES, true, 1);
	buf_init(r, &r->q, ACT_BYTES, false, 2);
	buf_init(r, &r->k, ACT_BYTES, false, 3);
	buf_init(r, &r->o, ACT_BYTES, false, 4);
	buf_init(r, &r->big, 2 * KV_BYTES, true, 5);
	for (int i = 0; i < NREQ; i++) {
		buf_init(r, &r->kv[i], KV_BYTES, true, 10 + (uint32_t)i);
		r->kv_live[i] = true;
	}
	r->pol = policy_by_name("llm");
	assert_non_null(r->pol);
	struct policy_params p = { .nworkers = NDEV,
		                   .devices = r->devs,
		                   .prof = prof,
		                   .res = &r->res,
		                   .tuning = &policy_tuning_defaults };
	assert_int_equal(r->pol->init(&p, &r->priv), 0);
	return r;
}

static struct rig *rig_new(void)
{
	return rig_new_prof(NULL);
}

static void rig_free(struct rig *r)
{
	r->pol->fini(r->priv);
	buf_fini(r, &r->w);
	buf_fini(r, &r->q);
	buf_fini(r, &r->k);
	buf_fini(r, &r->o);
	buf_fini(r, &r->big);
	for (int i = 0; i < NREQ; i++)
		if (r->kv_live[i])
			buf_fini(r, &r->kv[i]);
	residency_fini(&r->res);
	free(r);
}

static void set_arg(struct engine_task *t, uint32_t a, struct buf *b, uint64_t off, uint64_t len)
{
	t->data[a] = &b->d;
	t->call.ptr[a] = (char *)b->host + off;
	t->call.off[a] = off;
	t->call.len[a] = len;
}

static const struct kernel_def *kernel(const char *name)
{
	const struct kernel_def *k = kernel_by_id((uint32_t)kernel_lookup(name));
	assert_non_null(k);
	return k;
}

/* One decode step over requests reqs[0..n): an sgemm over the weights
 * (and `big` when with_big), then per request the append of its row (a
 * copy into its cache) and its attention. Dependencies are left out:
 * the policy's decision does not look at them. */
static struct engine_graph *step(struct rig *r, const int *reqs, int n, bool with_big)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	uint32_t nt = 1 + 2 * (uint32_t)n + with_big;
	g->tasks = calloc(nt, sizeof(*g->tasks));
	g->ntasks = nt;
	const struct kernel_def *sgemm = kernel("sgemm"), *copy = kernel("copy"),
	                        *attn = kernel("attn_decode");
	uint32_t i = 0;
	struct engine_task *t = &g->tasks[i++];
	t->kernel = sgemm;
	t->call.nargs = 3;
	set_arg(t, 0, &r->q, 0, ACT_BYTES);
	set_arg(t, 1, &r->w, 0, W_BYTES);
	set_arg(t, 2, &r->k, 0, ACT_BYTES);
	if (with_big) {
		t = &g->tasks[i++];
		t->kernel = copy;
		t->call.nargs = 2;
		set_arg(t, 0, &r->big, 0, 4096);
		set_arg(t, 1, &r->q, 0, 4096);
	}
	for (int j = 0; j < n; j++) {
		struct buf *kv = &r->kv[reqs[j]];
		t = &g->tasks[i++];
		t->kernel = copy;
		t->call.nargs = 2;
		set_arg(t, 0, &r->k, (uint64_t)j * 256, 256);
		set_arg(t, 1, kv, 4096, 256);
		t = &g->tasks[i++];
		t->kernel = attn;
		t->call.nargs = 4;
		set_arg(t, 0, &r->q, (uint64_t)j * 512, 512);
		set_arg(t, 1, kv, 0, KV_BYTES / 2);
		set_arg(t, 2, kv, KV_BYTES / 2, KV_BYTES / 2);
		set_arg(t, 3, &r->o, (uint64_t)j * 512, 512);
		t->feat.domain = 100 + j;
	}
	for (uint32_t v = 0; v < nt; v++) {
		g->tasks[v].graph = g;
		g->tasks[v].index = v;
	}
	return g;
}

static void graph_free(struct engine_graph *g)
{
	free(g->tasks);
	free(g);
}

/* Queues every task, then drains each worker's queue: dev[v] = the
 * worker that took task v. */
static void run_queues(struct rig *r, struct engine_graph *g, int *dev)
{
	struct engine_task *ts[64];
	assert_true(g->ntasks <= 64);
	for (uint32_t v = 0; v < g->ntasks; v++) {
		ts[v] = &g->tasks[v];
		dev[v] = -1;
	}
	r->pol->tasks_ready(r->priv, ts, g->ntasks, -1);
	for (unsigned w = 0; w < NDEV; w++) {
		struct engine_task *t;
		while ((t = r->pol->pick_next(r->priv, w))) {
			dev[t->index] = (int)w;
			t->start_ns = t->end_ns = 1;
			r->pol->task_done(r->priv, t, w);
		}
	}
	r->pol->graph_finished(r->priv, g);
}

/* The accelerator drains: the step decisions stop using it (no task is
 * sent to its node) and the KV caches homed there are homed on the host;
 * resumed, it takes caches again. */
static void test_accelerator_leaves_and_returns(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	int reqs[NREQ], dev[64];
	for (int i = 0; i < NREQ; i++)
		reqs[i] = i;
	struct engine_graph *g = step(r, reqs, NREQ, false);
	r->pol->graph_submitted(r->priv, g);
	assert_int_equal(residency_home(&r->kv[0].d), 1);
	run_queues(r, g, dev);
	graph_free(g);

	atomic_store(&r->devs[ACC].state, ENGINE_DEV_DRAINING);
	r->pol->device_draining(r->priv, ACC);
	g = step(r, reqs, NREQ, false);
	r->pol->graph_submitted(r->priv, g);
	for (int i = 0; i < NREQ; i++)
		assert_int_equal(residency_home(&r->kv[i].d), 0);
	assert_int_equal(residency_home_bytes(&r->res, 1), 0);
	for (uint32_t v = 0; v < g->ntasks; v++)
		assert_int_equal(g->tasks[v].policy_node, 0);
	run_queues(r, g, dev);
	graph_free(g);

	atomic_store(&r->devs[ACC].state, ENGINE_DEV_ACTIVE);
	r->pol->device_added(r->priv, ACC);
	g = step(r, reqs, NREQ, false);
	r->pol->graph_submitted(r->priv, g);
	assert_int_equal(residency_home(&r->kv[0].d), 1);
	run_queues(r, g, dev);
	assert_int_equal(dev[2], ACC); /* the first request's attention */
	graph_free(g);
	rig_free(r);
}

static void test_tiers_fill_the_budget(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	int reqs[NREQ], dev[64];
	for (int i = 0; i < NREQ; i++)
		reqs[i] = i;
	struct engine_graph *g = step(r, reqs, NREQ, false);
	r->pol->graph_submitted(r->priv, g);

	for (int i = 0; i < NREQ; i++)
		assert_int_equal(residency_home(&r->kv[i].d), i < ON_ACCEL ? 1 : 0);
	assert_int_equal(residency_home_bytes(&r->res, 1), ON_ACCEL * KV_BYTES);
	struct llm_policy_stats st;
	assert_int_equal(llm_policy_stats(r->priv, &st), 0);
	assert_int_equal(st.steps, 1);
	assert_int_equal(st.attn_accel, ON_ACCEL);
	assert_int_equal(st.attn_host, NREQ - ON_ACCEL);
	assert_int_equal(st.kv_host_bytes, (NREQ - ON_ACCEL) * KV_BYTES);

	run_queues(r, g, dev);
	assert_true(dev[0] >= 0); /* the sgemm: dmda's choice */
	for (int j = 0; j < NREQ; j++) {
		int append = dev[1 + 2 * j], attn = dev[2 + 2 * j];
		if (j < ON_ACCEL) {
			assert_int_equal(append, ACC);
			assert_int_equal(attn, ACC);
		} else {
			assert_true(append == 0 || append == 1);
			assert_true(attn == 0 || attn == 1);
		}
	}
	graph_free(g);
	rig_free(r);
}

static void test_demote_and_promote(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	int reqs[NREQ];
	for (int i = 0; i < NREQ; i++)
		reqs[i] = i;
	struct engine_graph *g = step(r, reqs, NREQ, false);
	r->pol->graph_submitted(r->priv, g);
	graph_free(g);

	/* Requests 0 and 1 finish: their room goes to the first two host
	 * ones, in first-use order. */
	for (int i = 0; i < 2; i++) {
		buf_fini(r, &r->kv[i]);
		r->kv_live[i] = false;
	}
	assert_int_equal(residency_home_bytes(&r->res, 1), KV_BYTES);
	g = step(r, reqs + 2, NREQ - 2, false);
	r->pol->graph_submitted(r->priv, g);
	graph_free(g);
	for (int i = 2; i < NREQ; i++)
		assert_int_equal(residency_home(&r->kv[i].d), i < 5 ? 1 : 0);
	struct llm_policy_stats st;
	llm_policy_stats(r->priv, &st);
	assert_int_equal(st.promotes, 2);
	assert_int_equal(st.demotes, 0);

	/* A step that also needs a buffer of two caches' size on the
	 * accelerator: two caches go to the host, the last-used first. */
	g = step(r, reqs + 2, NREQ - 2, true);
	r->pol->graph_submitted(r->priv, g);
	graph_free(g);
	llm_policy_stats(r->priv, &st);
	assert_int_equal(st.demotes, 2);
	for (int i = 2; i < NREQ; i++)
		assert_int_equal(residency_home(&r->kv[i].d), i == 2 ? 1 : 0);
	assert_int_equal(residency_home_bytes(&r->res, 1), KV_BYTES);
	rig_free(r);
}

/* A graph with no attention over KV is plain dmda: no tier, no pin. */
static void test_other_graphs_untouched(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	struct engine_graph *g = step(r, NULL, 0, true);
	r->pol->graph_submitted(r->priv, g);
	for (uint32_t v = 0; v < g->ntasks; v++)
		assert_int_equal(g->tasks[v].policy_node, 0);
	struct llm_policy_stats st;
	llm_policy_stats(r->priv, &st);
	assert_int_equal(st.steps, 0);
	graph_free(g);
	rig_free(r);
}

/* Eviction takes the replica of data not homed on the node first, even
 * when the homed one was used longer ago. */
static void test_eviction_keeps_home_replicas(void **state)
{
	(void)state;
	struct residency res;
	struct backend_device acc = { .ops = &fake_accel, .kind = TDM_DEV_GPU, .name = "acc0" };
	enum { B = 4096 };
	residency_init(&res);
	assert_int_equal(residency_add_node(&res, &acc, 2 * B), 1);
	static char ha[B], hb[B], hc[B];
	struct res_data a, b, c;
	residency_data_init(&res, &a, ha, B, 1, true);
	residency_data_init(&res, &b, hb, B, 2, true);
	residency_data_init(&res, &c, hc, B, 3, true);
	residency_set_home(&a, 1);

	struct res_data *order[] = { &a, &b, &c };
	for (int i = 0; i < 3; i++) {
		struct res_arg arg = { order[i], 0, B, TDM_R };
		struct backend_event *waits[2];
		size_t nw = 0;
		void *mem;
		uint64_t off;
		assert_int_equal(residency_acquire(&res, 1, &arg, 1, waits, &nw, &mem, &off), 0);
		residency_release(&res, 1, &arg, 1, true);
	}
	/* a (least recently used, homed here) stays; b went. */
	assert_non_null(a.rep[1].mem);
	assert_null(b.rep[1].mem);
	assert_non_null(c.rep[1].mem);
	residency_set_home(&a, RES_HOME_NONE);
	assert_int_equal(residency_home_bytes(&res, 1), 0);
	residency_data_fini(&res, &a);
	residency_data_fini(&res, &b);
	residency_data_fini(&res, &c);
	residency_fini(&res);
}

/* Models that believe an attention takes attn_ns[d] on device d, a copy
 * and an sgemm 1 us everywhere. */
static struct profiler *profiler_with(const double *attn_ns)
{
	struct calibration cal;
	struct profiler *p;
	calibrate_defaults(NDEV, 2, &cal);
	assert_int_equal(profiler_create(&cal, &p), 0);
	for (uint32_t d = 0; d < NDEV; d++)
		for (int i = 0; i < 20; i++) {
			struct kernel_features f = { .domain = 100 + i % 8 };
			profiler_observe(p, KERNEL_ATTN_DECODE, d, &f, (uint64_t)attn_ns[d]);
			profiler_observe(p, kernel_lookup("copy"), d,
			                 &(struct kernel_features){ 0 }, 1000);
			profiler_observe(p, kernel_lookup("sgemm"), d,
			                 &(struct kernel_features){ 0 }, 1000);
		}
	return p;
}

/* With cost models, the tiers follow the predicted balance, not only the
 * budget: when the cores attend much faster than the accelerator (as
 * PoCL on the same cores may), no cache needs the accelerator's memory;
 * when the accelerator is much faster, the budget fills. */
static void test_tiers_by_cost(void **state)
{
	(void)state;
	int reqs[NREQ];
	for (int i = 0; i < NREQ; i++)
		reqs[i] = i;
	const double slow_accel[NDEV] = { 1000, 1000, 1e7 }, fast_accel[NDEV] = { 1e7, 1e7, 1000 };
	const double *cases[2] = { slow_accel, fast_accel };
	for (int c = 0; c < 2; c++) {
		struct profiler *prof = profiler_with(cases[c]);
		struct rig *r = rig_new_prof(prof);
		struct engine_graph *g = step(r, reqs, NREQ, false);
		r->pol->graph_submitted(r->priv, g);
		int on_accel = 0;
		for (int i = 0; i < NREQ; i++)
			on_accel += residency_home(&r->kv[i].d) == 1;
		printf("# attention %s on the accelerator: %d caches there\n", c ? "fast" : "slow",
		       on_accel);
		assert_int_equal(on_accel, c ? ON_ACCEL : 0);
		graph_free(g);
		rig_free(r);
		profiler_destroy(prof);
	}
}

/* The caller's cost table built from the roofline gives the same plan as
 * the roofline path (the simulator's). */
static void test_step_costs_match_roofline(void **state)
{
	(void)state;
	struct llm_model m;
	assert_int_equal(llm_model_by_name("llama2-7b", &m), 0);
	struct llm_hw hw = { .gpu_mem_bytes = 16e9,
		             .gpu_gbps = 300,
		             .gpu_gflops = 65000,
		             .gpu_launch_ns = 2000,
		             .cpu_cores = 8,
		             .core_gbps = 12,
		             .socket_gbps = 25,
		             .cpu_gflops = 50,
		             .cpu_launch_ns = 1000,
		             .link_gbps = 12,
		             .link_latency_ns = 5000 };
	struct llm_cost c;
	assert_int_equal(llm_cost_init(&c, &m, &hw), 0);
	struct llm_step_req req[64];
	for (int i = 0; i < 64; i++)
		req[i] = (struct llm_step_req){ (uint32_t)(200 + 37 * i),
			                        i % 3 ? LLM_TIER_HOST : LLM_TIER_GPU };
	struct llm_step_costs k;
	llm_step_costs_roofline(&c, &k);
	uint8_t w1[64], w2[64];
	uint32_t scratch[64];
	struct llm_step_plan p1, p2;
	struct llm_step_in in = { .cost = &c,
		                  .req = req,
		                  .n = 64,
		                  .stream_scratch_bytes = 1e9,
		                  .allow = LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE |
		                           LLM_ALLOW_STREAM };
	assert_int_equal(llm_step_plan(&in, w1, scratch, &p1), 0);
	in.cost = NULL;
	in.costs = &k;
	assert_int_equal(llm_step_plan(&in, w2, scratch, &p2), 0);
	assert_memory_equal(w1, w2, sizeof(w1));
	assert_int_equal(p1.mode, p2.mode);
	assert_true(p1.t_step_ns == p2.t_step_ns);
	/* A table missing a function is refused. */
	k.attn_cpu = NULL;
	assert_int_equal(llm_step_plan(&in, w2, scratch, &p2), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tiers_fill_the_budget),
		cmocka_unit_test(test_accelerator_leaves_and_returns),
		cmocka_unit_test(test_demote_and_promote),
		cmocka_unit_test(test_other_graphs_untouched),
		cmocka_unit_test(test_eviction_keeps_home_replicas),
		cmocka_unit_test(test_tiers_by_cost),
		cmocka_unit_test(test_step_costs_match_roofline),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
