/* The llm policy's decision per decode step (policies/llm.c), what
 * graph_submitted adds to a step graph: recognising the attention tasks
 * and their KV caches, the tiers against the accelerator's budget, a cost
 * model prediction per task (the profiler's priors from the calibration
 * defaults), llm_step_plan, and the pins. On two host devices and a fake
 * accelerator (no device work: nothing runs), steady state (the tiers are
 * decided; each call re-decides them). A step of `batch` requests and
 * `layers` layers: an sgemm per layer, and per request and layer the
 * append of its row and its attention (kv_len 100..3100).
 *
 * BENCH llm_daemon_decide_us <v> us batch=<b> layers=<l> unit=<request|buffer> ...
 * (the llm policy's own decision, the mean over the iterations; the
 * issue's target: <= 50 us per step at batch 256). unit=request: the KV
 * buffers carry their request's id (tdm_buffer_alloc_request), so the
 * policy decides on the first layer and the other layers' tasks follow as
 * they are released; unit=buffer: no ids, every buffer a unit and the
 * graph read whole (what clients without ids get).
 * BENCH llm_graph_submitted_us <v> us ... policy=<llm|dmda>: the whole
 * graph_submitted, with the dispatch core's per-task reset every dmda
 * graph pays (policy=dmda: that alone, for the same graph). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernels.h"
#include "bench_util.h"
#include "placement/residency.h"
#include "policies/llm.h"
#include "policies/policy.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

static const struct backend_ops fake_accel = { .abi_version = BACKEND_ABI_VERSION, .name = "fake" };

enum { NDEV = 3, KV_ROWS = 4096, HD = 128, NKV = 8, NH = 32 };

struct buf {
	void *host;
	struct res_data d;
};

static void buf_init(struct residency *r, struct buf *b, uint64_t bytes, bool keep)
{
	/* The policy reads sizes only: no host memory behind these. */
	b->host = NULL;
	residency_data_init(r, &b->d, b->host, bytes, 0, keep);
}

static void set_arg(struct engine_task *t, uint32_t a, struct buf *b, uint64_t off, uint64_t len)
{
	t->data[a] = &b->d;
	t->call.off[a] = off;
	t->call.len[a] = len;
}

static void bench(uint32_t batch, uint32_t layers, bool by_request, int iters)
{
	struct residency res;
	struct engine_device devs[NDEV] = { 0 };
	const uint64_t kv_bytes = 2ull * KV_ROWS * NKV * HD * 2;
	const uint64_t w_bytes = 64ull << 20;

	residency_init(&res);
	for (int i = 0; i < NDEV; i++) {
		devs[i].index = (uint16_t)i;
		devs[i].dev.kind = i < 2 ? TDM_DEV_CPU : TDM_DEV_GPU;
	}
	devs[2].dev.ops = &fake_accel;
	/* A third of the caches fit beside the weights. */
	uint64_t cap = layers * w_bytes + (uint64_t)batch * layers * kv_bytes / 3 + (8u << 20);
	devs[2].node = (uint16_t)residency_add_node(&res, &devs[2].dev, cap);

	struct calibration cal;
	struct profiler *prof;
	calibrate_defaults(NDEV, 2, &cal);
	if (profiler_create(&cal, &prof)) {
		fprintf(stderr, "bench_llm_policy: no profiler\n");
		return;
	}
	const struct policy_ops *pol = policy_by_name("llm");
	void *priv;
	struct policy_params p = { .nworkers = NDEV,
		                   .devices = devs,
		                   .prof = prof,
		                   .res = &res,
		                   .tuning = &policy_tuning_defaults };
	if (!pol || pol->init(&p, &priv)) {
		fprintf(stderr, "bench_llm_policy: no llm policy\n");
		profiler_destroy(prof);
		return;
	}

	uint32_t nkv = batch * layers;
	struct buf *kv = calloc(nkv, sizeof(*kv)), *w = calloc(layers, sizeof(*w));
	struct buf q, k, o;
	buf_init(&res, &q, (uint64_t)batch * NH * HD * 4, false);
	buf_init(&res, &k, (uint64_t)batch * NKV * HD * 4, false);
	buf_init(&res, &o, (uint64_t)batch * NH * HD * 4, false);
	for (uint32_t i = 0; i < nkv; i++) {
		buf_init(&res, &kv[i], kv_bytes, true);
		/* Request b's buffer of layer l is kv[l * batch + b]. */
		kv[i].d.request = by_request ? (1ull << 32) | (i % batch + 1) : 0;
	}
	for (uint32_t l = 0; l < layers; l++)
		buf_init(&res, &w[l], w_bytes, true);

	uint32_t nt = layers * (1 + 2 * batch);
	struct engine_graph g = { 0 };
	g.tasks = calloc(nt, sizeof(*g.tasks));
	g.ntasks = nt;
	const struct kernel_def *sgemm = kernel_by_id((uint32_t)kernel_lookup("sgemm"));
	const struct kernel_def *copy = kernel_by_id((uint32_t)kernel_lookup("copy"));
	const struct kernel_def *attn = kernel_by_id((uint32_t)kernel_lookup("attn_decode"));
	uint32_t v = 0;
	for (uint32_t l = 0; l < layers; l++) {
		struct engine_task *t = &g.tasks[v++];
		t->kernel = sgemm;
		t->call.nargs = 3;
		set_arg(t, 0, &q, 0, q.d.bytes);
		set_arg(t, 1, &w[l], 0, w_bytes);
		set_arg(t, 2, &k, 0, k.d.bytes);
		t->call.s[0].i64 = batch;
		t->call.s[1].i64 = NKV * HD;
		t->call.s[2].i64 = NH * HD;
		sgemm->features(&t->call, &t->feat);
		for (uint32_t b = 0; b < batch; b++) {
			struct buf *c = &kv[l * batch + b];
			uint64_t row = NKV * HD * 2;
			t = &g.tasks[v++];
			t->kernel = copy;
			t->call.nargs = 2;
			set_arg(t, 0, &k, b * row, row);
			set_arg(t, 1, c, 100 * row, row);
			copy->features(&t->call, &t->feat);
			t = &g.tasks[v++];
			t->kernel = attn;
			t->call.nargs = 4;
			set_arg(t, 0, &q, (uint64_t)b * NH * HD * 4, NH * HD * 4);
			set_arg(t, 1, c, 0, kv_bytes / 2);
			set_arg(t, 2, c, kv_bytes / 2, kv_bytes / 2);
			set_arg(t, 3, &o, (uint64_t)b * NH * HD * 4, NH * HD * 4);
			int64_t s[6] = { 1, NH, NKV, HD, 100 + (int64_t)(b * 37 % 3000), KV_ROWS };
			for (int i = 0; i < 6; i++)
				t->call.s[i].i64 = s[i];
			attn->features(&t->call, &t->feat);
		}
	}
	for (v = 0; v < nt; v++) {
		g.tasks[v].graph = &g;
		g.tasks[v].index = v;
	}

	pol->graph_submitted(priv, &g); /* the first decides the tiers */
	struct llm_policy_stats st0, st;
	llm_policy_stats(priv, &st0);
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < iters; i++)
		pol->graph_submitted(priv, &g);
	double us = (double)(bench_now_ns() - t0) / iters / 1e3;
	llm_policy_stats(priv, &st);
	double decide_us = (double)(st.decide_ns_sum - st0.decide_ns_sum) / iters / 1e3;
	char keys[200];
	snprintf(keys, sizeof(keys),
	         "batch=%u layers=%u unit=%s attn_tasks=%u host_kv_mib=%.0f found_layers=%u", batch,
	         layers, by_request ? "request" : "buffer", batch * layers,
	         (double)st.kv_host_bytes / (1 << 20), st.last_layers);
	bench_report("llm_daemon_decide_us", decide_us, "us", keys);
	snprintf(keys, sizeof(keys), "batch=%u layers=%u unit=%s policy=llm", batch, layers,
	         by_request ? "request" : "buffer");
	bench_report("llm_graph_submitted_us", us, "us", keys);
	if (by_request) {
		const struct policy_ops *dmda = policy_by_name("dmda");
		void *dpriv;
		if (dmda && !dmda->init(&p, &dpriv)) {
			t0 = bench_now_ns();
			for (int i = 0; i < iters; i++)
				dmda->graph_submitted(dpriv, &g);
			us = (double)(bench_now_ns() - t0) / iters / 1e3;
			snprintf(keys, sizeof(keys), "batch=%u layers=%u policy=dmda", batch,
			         layers);
			bench_report("llm_graph_submitted_us", us, "us", keys);
			dmda->fini(dpriv);
		}
	}

	pol->fini(priv);
	profiler_destroy(prof);
	free(g.tasks);
	for (uint32_t i = 0; i < nkv; i++)
		residency_data_fini(&res, &kv[i].d);
	for (uint32_t l = 0; l < layers; l++)
		residency_data_fini(&res, &w[l].d);
	residency_data_fini(&res, &q.d);
	residency_data_fini(&res, &k.d);
	residency_data_fini(&res, &o.d);
	residency_fini(&res);
	free(kv);
	free(w);
}

/* No arguments: every case; or one: batch layers request|buffer [iters]
 * (for a profiler). */
int main(int argc, char **argv)
{
	if (argc >= 4) {
		bench((uint32_t)atoi(argv[1]), (uint32_t)atoi(argv[2]),
		      strcmp(argv[3], "request") == 0, argc > 4 ? atoi(argv[4]) : 50);
		return 0;
	}
	for (int r = 0; r < 2; r++) {
		bench(256, 1, r, 2000);
		bench(256, 8, r, 200);
		bench(128, 32, r, 50);
		bench(256, 32, r, 50);
	}
	return 0;
}
