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
#include <time.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "placement/llm_step.h"
#include "placement/residency.h"
#include "policies/dispatch.h"
#include "policies/llm.h"
#include "policies/llm_moe.h"
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

static struct rig *rig_new_tuned(struct profiler *prof, const struct policy_tuning *tuning)
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
	struct policy_params p = {
		.nworkers = NDEV, .devices = r->devs, .prof = prof, .res = &r->res, .tuning = tuning
	};
	assert_int_equal(r->pol->init(&p, &r->priv), 0);
	return r;
}

static struct rig *rig_new_prof(struct profiler *prof)
{
	return rig_new_tuned(prof, &policy_tuning_defaults);
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
static void run_queues_on(const struct policy_ops *pol, void *priv, struct engine_graph *g,
                          int *dev)
{
	struct engine_task *ts[256];
	assert_true(g->ntasks <= 256);
	for (uint32_t v = 0; v < g->ntasks; v++) {
		ts[v] = &g->tasks[v];
		dev[v] = -1;
	}
	pol->tasks_ready(priv, ts, g->ntasks, -1);
	for (unsigned w = 0; w < NDEV; w++) {
		struct engine_task *t;
		while ((t = pol->pick_next(priv, w))) {
			dev[t->index] = (int)w;
			t->start_ns = t->end_ns = 1;
			pol->task_done(priv, t, w);
		}
	}
	pol->graph_finished(priv, g);
}

static void run_queues(struct rig *r, struct engine_graph *g, int *dev)
{
	run_queues_on(r->pol, r->priv, g, dev);
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

/* ---- MoE experts split at release (policies/llm_moe.c) ---- */

enum { NE = 4, EXPERT_W = 3 * 4096 };

/* Models that believe moe_expert takes moe_ns[d] on device d. */
static struct profiler *profiler_moe(const double *moe_ns)
{
	struct calibration cal;
	struct profiler *p;
	calibrate_defaults(NDEV, 2, &cal);
	assert_int_equal(profiler_create(&cal, &p), 0);
	for (uint32_t d = 0; d < NDEV; d++)
		for (int i = 0; i < 20; i++) {
			struct kernel_features f = { .flops = 1e5, .bytes = EXPERT_W, .domain = 4 };
			profiler_observe(p, KERNEL_MOE_EXPERT, d, &f, (uint64_t)moe_ns[d]);
		}
	return p;
}

/* A router (task 0) whose routing sent tokens to experts 0, 2 and 3 (not
 * 1), and one guarded expert task per expert (tasks 1 + e), each with its
 * own weights (gate, up, down in w[e]). */
static struct engine_graph *moe_layer(struct rig *r, struct buf *w, uint32_t *routed)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->ntasks = 1 + NE;
	g->tasks = calloc(g->ntasks, sizeof(*g->tasks));
	g->tasks[0].kernel = kernel("topk_router");
	g->tasks[0].flags = TASK_ROUTES;
	g->tasks[0].routed = routed;
	/* Scalars n, ne, k. */
	g->tasks[0].call.s[0].i64 = 6;
	g->tasks[0].call.s[1].i64 = NE;
	g->tasks[0].call.s[2].i64 = 2;
	for (uint32_t e = 0; e < NE; e++) {
		struct engine_task *t = &g->tasks[1 + e];
		t->kernel = kernel("moe_expert");
		t->call.nargs = 7;
		set_arg(t, 0, &r->q, 0, ACT_BYTES);
		for (uint32_t a = 1; a <= 3; a++)
			set_arg(t, a, &w[e], (a - 1) * (EXPERT_W / 3), EXPERT_W / 3);
		set_arg(t, 6, &r->o, 0, ACT_BYTES);
		t->feat = (struct kernel_features){ .flops = 1e5, .bytes = EXPERT_W, .domain = 4 };
		t->guard_router = 1;
		t->guard_expert = e;
		if (!routed[e])
			t->flags = TASK_SKIPPED;
	}
	for (uint32_t v = 0; v < g->ntasks; v++) {
		g->tasks[v].graph = g;
		g->tasks[v].index = v;
	}
	return g;
}

/* Where the released experts go and what is counted: with the
 * accelerator predicted fast, the expert whose weights are there runs
 * there and the others' weights are loaded; with it predicted slow (PoCL
 * on the same cores), all run on the cores, the hit still counted. */
static void test_moe_split_at_release(void **state)
{
	(void)state;
	const double fast_accel[NDEV] = { 1e6, 1e6, 1000 }, slow_accel[NDEV] = { 1000, 1000, 1e7 };
	for (int c = 0; c < 2; c++) {
		struct profiler *prof = profiler_moe(c ? slow_accel : fast_accel);
		struct rig *r = rig_new_prof(prof);
		struct buf w[NE];
		for (uint32_t e = 0; e < NE; e++)
			buf_init(r, &w[e], EXPERT_W, true, 100 + e);
		/* Expert 0's weights are on the accelerator already. */
		struct res_arg arg = { &w[0].d, 0, EXPERT_W, TDM_R };
		struct backend_event *waits[2];
		size_t nw = 0;
		void *mem;
		uint64_t off;
		assert_int_equal(residency_acquire(&r->res, 1, &arg, 1, waits, &nw, &mem, &off), 0);
		residency_release(&r->res, 1, &arg, 1, true);

		uint32_t routed[NE] = { 3, 0, 2, 1 };
		struct engine_graph *g = moe_layer(r, w, routed);
		r->pol->graph_submitted(r->priv, g);
		struct engine_task *ready[3] = { &g->tasks[1], &g->tasks[3], &g->tasks[4] };
		r->pol->tasks_ready(r->priv, ready, 3, 0);
		for (int i = 0; i < 3; i++)
			assert_int_equal(ready[i]->policy_node, c ? 1 : 2);
		assert_int_equal(g->tasks[2].policy_node, 0); /* unrouted: never released */

		struct llm_moe_stats st;
		assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
		assert_int_equal(st.splits, 1);
		assert_int_equal(st.layers, 1);
		assert_int_equal(st.layer[0].lookups, 3);
		assert_int_equal(st.layer[0].hits, 1);
		assert_int_equal(st.layer[0].on_accel, c ? 0 : 3);
		assert_int_equal(st.layer[0].on_cpu, c ? 3 : 0);
		assert_int_equal(st.layer[0].loads, c ? 0 : 2);
		assert_int_equal(st.layer[0].load_bytes, c ? 0 : 2 * EXPERT_W);
		/* The resident expert saves its CPU time when the accelerator
		 * is fast; nothing is resident to save on a slow one. */
		if (!c)
			assert_true(st.saved_ns > 0);
		/* The cache keeps what ran on the accelerator: those experts'
		 * weights are homed there (eviction takes them last). */
		assert_true(st.cache_cap >= 3);
		assert_int_equal(st.cached, c ? 0 : 3);
		assert_int_equal(st.cache_admits, c ? 0 : 3);
		for (uint32_t e = 0; e < NE; e++)
			assert_int_equal(residency_home(&w[e].d), !c && e != 1 ? 1 : RES_HOME_NONE);

		/* Drain the queues so that the rig frees cleanly. */
		for (unsigned wk = 0; wk < NDEV; wk++) {
			struct engine_task *t;
			while ((t = r->pol->pick_next(r->priv, wk))) {
				t->start_ns = t->end_ns = 1;
				r->pol->task_done(r->priv, t, wk);
			}
		}
		r->pol->graph_finished(r->priv, g);
		graph_free(g);
		for (uint32_t e = 0; e < NE; e++)
			buf_fini(r, &w[e]);
		rig_free(r);
		profiler_destroy(prof);
	}
}

/* ---- the expert cache's budget at run time, next-layer prefetch ---- */

/* The accelerator far faster than the cores at moe_expert. */
static const double fast_moe[NDEV] = { 1e7, 1e7, 1e5 };

/* The queues drained, the graph finished and freed. */
static void moe_finish(struct rig *r, struct engine_graph *g)
{
	for (unsigned wk = 0; wk < NDEV; wk++) {
		struct engine_task *t;
		while ((t = r->pol->pick_next(r->priv, wk))) {
			t->start_ns = t->end_ns = 1;
			r->pol->task_done(r->priv, t, wk);
		}
	}
	r->pol->graph_finished(r->priv, g);
	graph_free(g);
}

/* One step of the one-layer graph: the experts routed[] chose released. */
static void moe_step(struct rig *r, struct buf *w, uint32_t *routed)
{
	struct engine_graph *g = moe_layer(r, w, routed);
	struct engine_task *ready[NE];
	size_t n = 0;
	r->pol->graph_submitted(r->priv, g);
	for (uint32_t e = 0; e < NE; e++)
		if (routed[e])
			ready[n++] = &g->tasks[1 + e];
	r->pol->tasks_ready(r->priv, ready, n, 0);
	moe_finish(r, g);
}

/* The device's budget shrinks at run time (tandemctl device budget): at
 * the next router the cache's budget follows, and the expert the score
 * finds least likely leaves first (unhomed), not one in use or likely. */
static void test_moe_budget_shrinks(void **state)
{
	(void)state;
	struct profiler *prof = profiler_moe(fast_moe);
	struct rig *r = rig_new_prof(prof);
	struct buf w[NE];
	for (uint32_t e = 0; e < NE; e++)
		buf_init(r, &w[e], EXPERT_W, true, 100 + e);

	/* Experts 0, 2, 3 run on the accelerator and are kept; then 0 and 2
	 * are chosen every step, 3 no more. */
	uint32_t first[NE] = { 3, 0, 2, 1 }, then[NE] = { 3, 0, 2, 0 };
	moe_step(r, w, first);
	for (int s = 0; s < 3; s++)
		moe_step(r, w, then);
	struct llm_moe_stats st;
	assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
	assert_int_equal(st.cached, 3);
	assert_int_equal(st.cache_cap, (uint32_t)(0.75 * CAP / EXPERT_W));
	assert_int_equal(st.budget_bytes, CAP);
	assert_int_equal(st.expert_bytes, 3 * EXPERT_W);
	for (uint32_t e = 0; e < NE; e++)
		assert_int_equal(residency_home(&w[e].d), e != 1 ? 1 : RES_HOME_NONE);

	/* Room for two experts: three quarters of 3 experts' bytes. */
	residency_set_budget(&r->res, 1, 3 * EXPERT_W);
	uint32_t only2[NE] = { 0, 0, 4, 0 };
	moe_step(r, w, only2);
	assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
	assert_int_equal(st.budget_bytes, 3 * EXPERT_W);
	assert_int_equal(st.cache_cap, 2);
	assert_int_equal(st.cached, 2);
	assert_int_equal(st.budget_evictions, 1);
	assert_int_equal(st.expert_bytes, 2 * EXPERT_W);
	assert_int_equal(st.unhome_pending, 0);
	assert_int_equal(residency_home(&w[3].d), RES_HOME_NONE);
	assert_int_equal(residency_home(&w[0].d), 1);
	assert_int_equal(residency_home(&w[2].d), 1);

	/* The budget grows back: so does the cache's. */
	residency_set_budget(&r->res, 1, CAP);
	moe_step(r, w, only2);
	assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
	assert_int_equal(st.cache_cap, (uint32_t)(0.75 * CAP / EXPERT_W));

	for (uint32_t e = 0; e < NE; e++)
		buf_fini(r, &w[e]);
	rig_free(r);
	profiler_destroy(prof);
}

/* KV and experts share the accelerator, the KV first: with experts homed
 * there, the KV tiers still take the room the step's other data leaves
 * (three caches), and the expert cache's budget shrinks to what is left
 * of three quarters of the device. */
static void test_moe_budget_follows_kv(void **state)
{
	(void)state;
	struct profiler *prof = profiler_moe(fast_moe);
	struct policy_tuning fill = policy_tuning_defaults;
	fill.llm_tiers_by_cost = false;
	struct rig *r = rig_new_tuned(prof, &fill);
	struct buf w[NE];
	for (uint32_t e = 0; e < NE; e++)
		buf_init(r, &w[e], EXPERT_W, true, 100 + e);

	uint32_t routed[NE] = { 3, 0, 2, 1 };
	moe_step(r, w, routed);
	struct llm_moe_stats st;
	assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
	assert_int_equal(st.cached, 3);
	assert_int_equal(st.kv_bytes, 0);
	uint32_t before = st.cache_cap;

	const int reqs[] = { 0, 1, 2, 3, 4 };
	struct engine_graph *g = step(r, reqs, 5, false);
	int dev[64];
	r->pol->graph_submitted(r->priv, g);
	run_queues(r, g, dev);
	graph_free(g);
	struct llm_policy_stats ls;
	assert_int_equal(llm_policy_stats(r->priv, &ls), 0);
	assert_int_equal(ls.kv_accel_bytes, ON_ACCEL * KV_BYTES);

	uint32_t one[NE] = { 5, 0, 0, 0 };
	moe_step(r, w, one);
	assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
	assert_int_equal(st.kv_bytes, ON_ACCEL * KV_BYTES);
	assert_int_equal(st.cache_cap, (uint32_t)((0.75 * CAP - ON_ACCEL * KV_BYTES) / EXPERT_W));
	assert_true(st.cache_cap < before);
	assert_true(st.cached <= st.cache_cap);

	for (uint32_t e = 0; e < NE; e++)
		buf_fini(r, &w[e]);
	rig_free(r);
	profiler_destroy(prof);
}

/* Two MoE layers: router 0 (task 0) with its experts (tasks 1 + e, weights
 * w[0][e]), router 1 (task 1 + NE) with its experts (weights w[1][e]). */
static struct engine_graph *moe_two_layers(struct rig *r, struct buf w[2][NE])
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->ntasks = 2 * (1 + NE);
	g->tasks = calloc(g->ntasks, sizeof(*g->tasks));
	for (uint32_t l = 0; l < 2; l++) {
		uint32_t ri = l * (1 + NE);
		struct engine_task *rt = &g->tasks[ri];
		rt->kernel = kernel("topk_router");
		rt->flags = TASK_ROUTES;
		rt->call.s[0].i64 = 6;
		rt->call.s[1].i64 = NE;
		rt->call.s[2].i64 = 2;
		for (uint32_t e = 0; e < NE; e++) {
			struct engine_task *t = &g->tasks[ri + 1 + e];
			t->kernel = kernel("moe_expert");
			t->call.nargs = 7;
			set_arg(t, 0, &r->q, 0, ACT_BYTES);
			for (uint32_t a = 1; a <= 3; a++)
				set_arg(t, a, &w[l][e], (a - 1) * (EXPERT_W / 3), EXPERT_W / 3);
			set_arg(t, 6, &r->o, 0, ACT_BYTES);
			t->feat = (struct kernel_features){ .flops = 1e5,
				                            .bytes = EXPERT_W,
				                            .domain = 4 };
			t->guard_router = ri + 1;
			t->guard_expert = e;
		}
	}
	for (uint32_t v = 0; v < g->ntasks; v++) {
		g->tasks[v].graph = g;
		g->tasks[v].index = v;
	}
	return g;
}

/* Router l's routing read: its chosen experts released (the others
 * skipped, as the engine does). */
static void release_layer(struct rig *r, struct engine_graph *g, uint32_t l, uint32_t *routed)
{
	uint32_t ri = l * (1 + NE);
	struct engine_task *ready[NE];
	size_t n = 0;
	g->tasks[ri].routed = routed;
	for (uint32_t e = 0; e < NE; e++) {
		struct engine_task *t = &g->tasks[ri + 1 + e];
		if (routed[e])
			ready[n++] = t;
		else
			t->flags |= TASK_SKIPPED;
	}
	r->pol->tasks_ready(r->priv, ready, n, 0);
}

/* Layer 0's router completes: layer 1's likeliest experts (ties by id: 0
 * and 1, as many as layer 0 used) are queued for prefetch; the
 * accelerator's worker issues the copies from its prefetch pass (not
 * before); layer 1 then chooses 0 and 2: expert 0's bytes were used (a
 * hit, on the accelerator), expert 1's wasted. With the accelerator
 * predicted slower than the cores nothing is prefetched; with the worker
 * not coming round before layer 1's router, the prefetches are late and
 * layer 1 loads what it needs. */
static void test_moe_next_layer_prefetch(void **state)
{
	(void)state;
	const double slow_moe[NDEV] = { 1e5, 1e5, 1e7 };
	for (int c = 0; c < 3; c++) {
		bool slow = c == 1, issue = c != 2;
		struct profiler *prof = profiler_moe(slow ? slow_moe : fast_moe);
		struct rig *r = rig_new_prof(prof);
		struct buf w[2][NE];
		for (uint32_t l = 0; l < 2; l++)
			for (uint32_t e = 0; e < NE; e++)
				buf_init(r, &w[l][e], EXPERT_W, true, 100 + 10 * l + e);
		struct engine_graph *g = moe_two_layers(r, w);
		r->pol->graph_submitted(r->priv, g);
		uint32_t r0[NE] = { 3, 3, 0, 0 }, r1[NE] = { 4, 0, 2, 0 };
		release_layer(r, g, 0, r0);

		struct res_node_stats ns;
		residency_node_stats(&r->res, 1, &ns);
		assert_int_equal(ns.prefetch_bytes, 0); /* queued, not issued */
		if (issue)
			r->pol->prefetch(r->priv, ACC);
		r->pol->prefetch(r->priv, 0); /* a core's pass issues nothing */
		residency_node_stats(&r->res, 1, &ns);
		struct llm_moe_stats st;
		assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
		uint64_t want = slow || !issue ? 0 : 2 * EXPERT_W;
		assert_int_equal(ns.prefetch_bytes, want);
		assert_int_equal(st.prefetch_bytes, want);
		assert_int_equal(st.prefetches, want ? 2 : 0);
		if (want) {
			assert_int_equal(residency_missing(&w[1][0].d, 1, 0, EXPERT_W), 0);
			assert_int_equal(residency_home(&w[1][1].d), 1);
		}
		/* The copies have arrived by the model's time. */
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		release_layer(r, g, 1, r1);
		assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
		assert_int_equal(st.layer[1].lookups, 2);
		assert_int_equal(st.layer[1].hits, want ? 1 : 0);
		assert_int_equal(st.prefetch_used_bytes, want ? EXPERT_W : 0);
		assert_int_equal(st.prefetch_wasted_bytes, want ? EXPERT_W : 0);
		assert_int_equal(st.prefetch_late, !slow && !issue ? 2 : 0);
		/* Where the used prefetch's expert ran. */
		if (want)
			assert_int_equal(g->tasks[1 + NE + 1].policy_node, 2);
		moe_finish(r, g);
		for (uint32_t l = 0; l < 2; l++)
			for (uint32_t e = 0; e < NE; e++)
				buf_fini(r, &w[l][e]);
		rig_free(r);
		profiler_destroy(prof);
	}
}

/* One step of the two-layer graph: layer 0 chooses r0[], layer 1 r1[];
 * the accelerator's worker comes round after each router. */
static void moe_two_step(struct rig *r, struct buf w[2][NE], uint32_t *r0, uint32_t *r1)
{
	struct engine_graph *g = moe_two_layers(r, w);
	r->pol->graph_submitted(r->priv, g);
	release_layer(r, g, 0, r0);
	r->pol->prefetch(r->priv, ACC);
	release_layer(r, g, 1, r1);
	r->pol->prefetch(r->priv, ACC);
	moe_finish(r, g);
}

/* The prefetch asks the simulator's rule (moe_cache_swap_pays): room for
 * two experts, held by layer 0's expert 0 (chosen at every step) and
 * expert 1 (hot: 7 steps in 10). Layer 1 chooses its experts 0, 1, 2 in
 * turn: after a step without layer 0's expert 1, layer 1's next expert is
 * the likelier at the next step (about 1/2 against 1/3), and the cache's
 * admission alone took that swap (the old gate's prefetch), but in the
 * long run it is chosen at a third of the steps against seven tenths:
 * the hot expert stays and nothing is prefetched. (A cold cache with a
 * free slot prefetches on the expected gain alone:
 * test_moe_next_layer_prefetch.) */
static void test_moe_prefetch_keeps_hot(void **state)
{
	(void)state;
	struct profiler *prof = profiler_moe(fast_moe);
	struct rig *r = rig_new_prof(prof);
	struct buf w[2][NE];
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t e = 0; e < NE; e++)
			buf_init(r, &w[l][e], EXPERT_W, true, 100 + 10 * l + e);
	/* Three quarters of it: two experts. */
	residency_set_budget(&r->res, 1, 3 * EXPERT_W);
	struct llm_moe_stats st;
	for (uint32_t s = 0; s < 100; s++) {
		uint32_t r0[NE] = { 4, s % 10 < 7 ? 4 : 0, 0, 0 }, r1[NE] = { 0 };
		r1[s % 3] = 4;
		moe_two_step(r, w, r0, r1);
		assert_int_equal(llm_policy_moe_stats(r->priv, &st), 0);
		assert_int_equal(st.cache_cap, 2);
		assert_int_equal(st.prefetches, 0);
		assert_int_equal(residency_home(&w[0][0].d), 1);
		assert_int_equal(residency_home(&w[0][1].d), 1);
	}
	for (uint32_t l = 0; l < 2; l++)
		for (uint32_t e = 0; e < NE; e++)
			buf_fini(r, &w[l][e]);
	rig_free(r);
	profiler_destroy(prof);
}

/* ---- steps of several layers, KV by request (res_data.request) ---- */

enum { LMAX = 4 };

/* cpu0, cpu1 and acc0 whose cap holds `layers` layers' weights, the
 * activations and ON_ACCEL and a half requests' KV of every layer. Request
 * j's KV of layer l is kv[l][j], all of them request j + 1. */
struct lrig {
	struct residency res;
	struct engine_device devs[NDEV];
	const struct policy_ops *pol;
	void *priv;
	uint32_t layers;
	struct buf w[LMAX], q, k, o, big, kv[LMAX][NREQ];
};

static struct lrig *lrig_new(uint32_t layers, struct profiler *prof)
{
	struct lrig *r = calloc(1, sizeof(*r));
	r->layers = layers;
	residency_init(&r->res);
	for (int i = 0; i < NDEV; i++) {
		r->devs[i].index = (uint16_t)i;
		r->devs[i].dev.kind = i < 2 ? TDM_DEV_CPU : TDM_DEV_GPU;
	}
	r->devs[ACC].dev.ops = &fake_accel;
	uint64_t cap =
	        layers * W_BYTES + 3 * ACT_BYTES + layers * (ON_ACCEL * KV_BYTES + KV_BYTES / 2);
	assert_int_equal(residency_add_node(&r->res, &r->devs[ACC].dev, cap), 1);
	r->devs[ACC].node = 1;
	for (uint32_t l = 0; l < layers; l++)
		residency_data_init(&r->res, &r->w[l].d, r->w[l].host = calloc(1, W_BYTES), W_BYTES,
		                    1, true);
	struct buf *acts[] = { &r->q, &r->k, &r->o };
	for (int i = 0; i < 3; i++)
		residency_data_init(&r->res, &acts[i]->d, acts[i]->host = calloc(1, ACT_BYTES),
		                    ACT_BYTES, 2, false);
	/* Two caches' worth per layer, as everything else scales. */
	residency_data_init(&r->res, &r->big.d, r->big.host = calloc(layers, 2 * KV_BYTES),
	                    layers * 2 * KV_BYTES, 5, true);
	for (uint32_t l = 0; l < layers; l++)
		for (int j = 0; j < NREQ; j++) {
			struct buf *b = &r->kv[l][j];
			residency_data_init(&r->res, &b->d, b->host = calloc(1, KV_BYTES), KV_BYTES,
			                    10 + (uint32_t)j, true);
			b->d.request = (1ull << 32) | (uint64_t)(j + 1);
		}
	r->pol = policy_by_name("llm");
	struct policy_params p = { .nworkers = NDEV,
		                   .devices = r->devs,
		                   .prof = prof,
		                   .res = &r->res,
		                   .tuning = &policy_tuning_defaults };
	assert_int_equal(r->pol->init(&p, &r->priv), 0);
	return r;
}

static void lbuf_fini(struct lrig *r, struct buf *b)
{
	residency_data_fini(&r->res, &b->d);
	free(b->host);
}

static void lrig_free(struct lrig *r)
{
	r->pol->fini(r->priv);
	for (uint32_t l = 0; l < r->layers; l++) {
		lbuf_fini(r, &r->w[l]);
		for (int j = 0; j < NREQ; j++)
			lbuf_fini(r, &r->kv[l][j]);
	}
	lbuf_fini(r, &r->q);
	lbuf_fini(r, &r->k);
	lbuf_fini(r, &r->o);
	lbuf_fini(r, &r->big);
	residency_fini(&r->res);
	free(r);
}

/* A decode step of r->layers identical layers over requests reqs[0..n):
 * per layer an sgemm over its weights, then per request the append and
 * the attention over its KV of that layer (kv_len 100 + 40 j); with_big:
 * a copy from `big` at the start (data the step needs on the
 * accelerator: two caches per layer). */
static struct engine_graph *lstep(struct lrig *r, const int *reqs, int n, bool with_big)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	uint32_t nt = r->layers * (1 + 2 * (uint32_t)n) + with_big;
	g->tasks = calloc(nt, sizeof(*g->tasks));
	g->ntasks = nt;
	const struct kernel_def *sgemm = kernel("sgemm"), *copy = kernel("copy"),
	                        *attn = kernel("attn_decode");
	uint32_t i = 0;
	struct engine_task *t;
	if (with_big) {
		t = &g->tasks[i++];
		t->kernel = copy;
		t->call.nargs = 2;
		set_arg(t, 0, &r->big, 0, 4096);
		set_arg(t, 1, &r->q, 0, 4096);
	}
	for (uint32_t l = 0; l < r->layers; l++) {
		t = &g->tasks[i++];
		t->kernel = sgemm;
		t->call.nargs = 3;
		set_arg(t, 0, &r->q, 0, ACT_BYTES);
		set_arg(t, 1, &r->w[l], 0, W_BYTES);
		set_arg(t, 2, &r->k, 0, ACT_BYTES);
		for (int j = 0; j < n; j++) {
			struct buf *kv = &r->kv[l][reqs[j]];
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
			t->feat.domain = 100 + 40 * reqs[j];
		}
	}
	for (uint32_t v = 0; v < nt; v++) {
		g->tasks[v].graph = g;
		g->tasks[v].index = v;
	}
	return g;
}

/* Where each request's append and attention ran in each layer (0: the
 * cores, 1: the accelerator; -1: not in the step) and its buffers'
 * homes; every layer of a request must agree. */
struct arrangement {
	int attn[NREQ], append[NREQ], home[NREQ];
};

static void run_lstep(struct lrig *r, const int *reqs, int n, bool with_big,
                      struct arrangement *out)
{
	struct engine_graph *g = lstep(r, reqs, n, with_big);
	int dev[256];
	r->pol->graph_submitted(r->priv, g);
	run_queues_on(r->pol, r->priv, g, dev);
	for (int j = 0; j < NREQ; j++)
		out->attn[j] = out->append[j] = -1;
	for (uint32_t l = 0; l < r->layers; l++)
		for (int j = 0; j < n; j++) {
			uint32_t base = with_big + l * (1 + 2 * (uint32_t)n) + 1 + 2 * (uint32_t)j;
			int ap = dev[base] == ACC, at = dev[base + 1] == ACC;
			int q = reqs[j];
			if (l == 0) {
				out->append[q] = ap;
				out->attn[q] = at;
			}
			assert_int_equal(ap, out->append[q]);
			assert_int_equal(at, out->attn[q]);
		}
	for (int j = 0; j < NREQ; j++) {
		out->home[j] = residency_home(&r->kv[0][j].d);
		for (uint32_t l = 1; l < r->layers; l++)
			assert_int_equal(residency_home(&r->kv[l][j].d), out->home[j]);
	}
	graph_free(g);
}

/* The decision made once per step, on the first layer, and followed by
 * the other layers as their tasks are released, is the one a step of one
 * layer gets: the same requests on the accelerator, the same attention
 * on each side, every layer of a request in one tier, through demotion
 * and promotion; with and without cost models. */
static void test_layers_follow_the_first(void **state)
{
	(void)state;
	const double mixed[NDEV] = { 4000, 4000, 1500 };
	int all[NREQ], some[NREQ - 2];
	for (int i = 0; i < NREQ; i++)
		all[i] = i;
	for (int i = 0; i < NREQ - 2; i++)
		some[i] = i + 2;
	for (int c = 0; c < 2; c++) {
		struct arrangement one[3], many[3];
		for (int pass = 0; pass < 2; pass++) {
			struct profiler *prof = c ? profiler_with(mixed) : NULL;
			struct lrig *r = lrig_new(pass ? LMAX : 1, prof);
			struct arrangement *a = pass ? many : one;
			run_lstep(r, all, NREQ, false, &a[0]);
			run_lstep(r, some, NREQ - 2, false, &a[1]); /* 0 and 1 left: promotions */
			run_lstep(r, some, NREQ - 2, true, &a[2]); /* room for big: demotions */
			struct llm_policy_stats st;
			llm_policy_stats(r->priv, &st);
			assert_int_equal(st.last_layers, pass ? LMAX : 1);
			lrig_free(r);
			if (prof)
				profiler_destroy(prof);
		}
		for (int s = 0; s < 3; s++) {
			int acc = 0, host = 0;
			for (int j = 0; j < NREQ; j++) {
				assert_int_equal(many[s].home[j], one[s].home[j]);
				assert_int_equal(many[s].attn[j], one[s].attn[j]);
				assert_int_equal(many[s].append[j], one[s].append[j]);
				acc += one[s].attn[j] == 1;
				host += one[s].attn[j] == 0;
			}
			printf("# %s, step %d: %d attention on the accelerator, %d on the cores\n",
			       c ? "cost models" : "no models", s, acc, host);
			assert_true(host > 0);
			if (s == 0)
				assert_true(acc > 0);
		}
	}
}

/* A prefill: one request's attention for each prompt position, over the
 * same KV, layer after layer. The positions are one layer (not layers
 * each): the layers found are the model's, and the request is homed like
 * any other. */
static void test_prefill_positions_one_layer(void **state)
{
	(void)state;
	struct lrig *r = lrig_new(LMAX, NULL);
	enum { POS = 5 };
	struct engine_graph *g = calloc(1, sizeof(*g));
	uint32_t nt = LMAX * (1 + POS);
	g->tasks = calloc(nt, sizeof(*g->tasks));
	g->ntasks = nt;
	uint32_t i = 0;
	for (uint32_t l = 0; l < LMAX; l++) {
		struct engine_task *t = &g->tasks[i++];
		t->kernel = kernel("sgemm");
		t->call.nargs = 3;
		set_arg(t, 0, &r->q, 0, ACT_BYTES);
		set_arg(t, 1, &r->w[l], 0, W_BYTES);
		set_arg(t, 2, &r->k, 0, ACT_BYTES);
		for (int p = 0; p < POS; p++) {
			t = &g->tasks[i++];
			t->kernel = kernel("attn_decode");
			t->call.nargs = 4;
			set_arg(t, 0, &r->q, (uint64_t)p * 512, 512);
			set_arg(t, 1, &r->kv[l][0], 0, KV_BYTES / 2);
			set_arg(t, 2, &r->kv[l][0], KV_BYTES / 2, KV_BYTES / 2);
			set_arg(t, 3, &r->o, (uint64_t)p * 512, 512);
			t->feat.domain = 1 + p;
		}
	}
	for (uint32_t v = 0; v < nt; v++) {
		g->tasks[v].graph = g;
		g->tasks[v].index = v;
	}
	r->pol->graph_submitted(r->priv, g);
	struct llm_policy_stats st;
	llm_policy_stats(r->priv, &st);
	assert_int_equal(st.last_layers, LMAX);
	assert_int_equal(st.attn_accel + st.attn_host, LMAX * POS);
	assert_int_equal(residency_home(&r->kv[0][0].d), 1); /* it fits */
	graph_free(g);
	lrig_free(r);
}

/* The scan of a many-layer step stops at the second layer: the tasks
 * past it are pinned as they are released, not at submission. */
static void test_many_layers_pinned_at_release(void **state)
{
	(void)state;
	struct lrig *r = lrig_new(LMAX, NULL);
	int all[NREQ];
	for (int i = 0; i < NREQ; i++)
		all[i] = i;
	struct engine_graph *g = lstep(r, all, NREQ, false);
	r->pol->graph_submitted(r->priv, g);
	uint32_t per_layer = 1 + 2 * NREQ, pinned = 0;
	for (uint32_t v = per_layer; v < g->ntasks; v++)
		pinned += g->tasks[v].policy_node != 0;
	assert_int_equal(pinned, 0);
	int dev[256];
	run_queues_on(r->pol, r->priv, g, dev);
	for (uint32_t v = per_layer; v < g->ntasks; v++)
		if (g->tasks[v].kernel->id == KERNEL_ATTN_DECODE)
			assert_int_not_equal(g->tasks[v].policy_node, 0);
	graph_free(g);
	lrig_free(r);
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
		cmocka_unit_test(test_moe_split_at_release),
		cmocka_unit_test(test_moe_budget_shrinks),
		cmocka_unit_test(test_moe_budget_follows_kv),
		cmocka_unit_test(test_moe_next_layer_prefetch),
		cmocka_unit_test(test_moe_prefetch_keeps_hot),
		cmocka_unit_test(test_layers_follow_the_first),
		cmocka_unit_test(test_many_layers_pinned_at_release),
		cmocka_unit_test(test_prefill_positions_one_layer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
