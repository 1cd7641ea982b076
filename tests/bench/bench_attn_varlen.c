/* CPU decode attention over a ragged batch, through the engine as the
 * daemon runs it (CPU workers bound to their cores, eager policy), at 1 to
 * all of this process's cores:
 *
 *   BENCH attn_varlen_gbps <GB/s> GB/s device=cpu requests=<n> threads=<t> mode=one_task
 *       one attn_decode_varlen task for the whole batch: its worker runs it
 *       and the other cores' gang helpers join (cpu_gang.h);
 *   BENCH attn_varlen_gbps <GB/s> GB/s device=cpu requests=<n> threads=<t> mode=per_request
 *       the alternative without it: one attn_decode task (batch 1) per
 *       request over the same pools, spread over the workers by eager.
 *
 * GB/s = the bytes the attention must read and write (the K and V rows of
 * every request, q and out; 1e9 bytes a GB) / the median time from a
 * graph's submission to its completion, over REPS graphs after one
 * warm-up. Shapes: LLaMA-3-8B's attention (32 query heads, 8 kv heads,
 * head dim 128), fp32, KV lengths uniform in [LEN_MIN, LEN_MAX]. t
 * threads = an engine over t cores (probed as [cpu] cores would list
 * them), so a one-core run has no helper to call on. Memory-bound: on a
 * machine shared with other work the figures move with it. */
#include <hwloc.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "bench_util.h"
#include "engine/engine.h"
#include "policies/policy.h"
#include "tandem.h"

#define NH 32
#define NKV 8
#define HD 128
#define LEN_MIN 256
#define LEN_MAX 2048
#define REPS 9
#define MAX_CORES 64

static hwloc_topology_t topo;

struct batch {
	size_t nreq, rows;
	int64_t total;
	float *q, *k, *v, *out;
	int32_t *index;
};

static uint64_t rng = 0x62656e6368ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int make_batch(struct batch *b, size_t nreq)
{
	size_t row = 0;
	memset(b, 0, sizeof(*b));
	b->nreq = nreq;
	b->index = malloc(nreq * 2 * sizeof(int32_t));
	if (!b->index)
		return -1;
	for (size_t r = 0; r < nreq; r++) {
		int32_t len = (int32_t)(LEN_MIN + next() % (LEN_MAX - LEN_MIN + 1));
		b->index[2 * r] = (int32_t)row;
		b->index[2 * r + 1] = len;
		row += (size_t)len;
		b->total += len;
	}
	b->rows = row;
	size_t qn = nreq * NH * HD, kvn = row * NKV * HD;
	b->q = malloc(qn * sizeof(float));
	b->out = malloc(qn * sizeof(float));
	b->k = malloc(kvn * sizeof(float));
	b->v = malloc(kvn * sizeof(float));
	if (!b->q || !b->out || !b->k || !b->v)
		return -1;
	for (size_t i = 0; i < qn; i++)
		b->q[i] = (float)(next() % 2001) / 1000.0f - 1.0f;
	for (size_t i = 0; i < kvn; i++) {
		b->k[i] = (float)(next() % 2001) / 1000.0f - 1.0f;
		b->v[i] = (float)(next() % 2001) / 1000.0f - 1.0f;
	}
	return 0;
}

static void free_batch(struct batch *b)
{
	free(b->q);
	free(b->out);
	free(b->k);
	free(b->v);
	free(b->index);
}

/* What the attention must move, whichever way it is run. */
static double batch_bytes(const struct batch *b)
{
	return 4.0 * (2.0 * (double)b->total * NKV * HD + 2.0 * (double)b->nreq * NH * HD);
}

static void varlen_task(struct engine_task *t, const struct batch *b)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct tdm_kernel_call *c = &t->call;
	c->nargs = 5;
	c->ptr[VARLEN_Q] = b->q;
	c->ptr[VARLEN_K] = b->k;
	c->ptr[VARLEN_V] = b->v;
	c->ptr[VARLEN_INDEX] = b->index;
	c->ptr[VARLEN_OUT] = b->out;
	c->len[VARLEN_Q] = c->len[VARLEN_OUT] = b->nreq * NH * HD * sizeof(float);
	c->len[VARLEN_K] = c->len[VARLEN_V] = b->rows * NKV * HD * sizeof(float);
	c->len[VARLEN_INDEX] = b->nreq * 2 * sizeof(int32_t);
	int64_t s[] = { (int64_t)b->nreq, NH, NKV, HD, b->total };
	for (int i = 0; i < 5; i++)
		c->s[i].i64 = s[i];
	t->kernel = k;
	k->features(c, &t->feat);
}

/* Request r alone, its rows of the pools as a batch-1 cache. */
static void per_request_task(struct engine_task *t, const struct batch *b, size_t r)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE);
	struct tdm_kernel_call *c = &t->call;
	size_t row = (size_t)b->index[2 * r], len = (size_t)b->index[2 * r + 1];
	c->nargs = 4;
	c->ptr[0] = b->q + r * NH * HD;
	c->ptr[1] = b->k + row * NKV * HD;
	c->ptr[2] = b->v + row * NKV * HD;
	c->ptr[3] = b->out + r * NH * HD;
	c->len[0] = c->len[3] = NH * HD * sizeof(float);
	c->len[1] = c->len[2] = len * NKV * HD * sizeof(float);
	int64_t s[] = { 1, NH, NKV, HD, (int64_t)len, (int64_t)len };
	for (int i = 0; i < 6; i++)
		c->s[i].i64 = s[i];
	t->kernel = k;
	k->features(c, &t->feat);
}

struct done_flag {
	_Atomic int done;
};

static void on_done(void *ctx, struct engine_graph *g)
{
	(void)g;
	atomic_store(&((struct done_flag *)ctx)->done, 1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The median time of a graph of one varlen task (per_request false) or of
 * one attn_decode task per request, on an engine over the cores given. */
static int run(const struct batch *b, const int *cores, size_t ncores, bool per_request,
               uint64_t *median_ns)
{
	struct backend_device devs[MAX_CORES];
	struct backend_probe_params p = { .topology = topo, .cores = cores, .ncores = ncores };
	size_t ndev = 0;
	struct engine *e;
	struct done_flag flag = { 0 };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	uint64_t times[REPS];
	int err = backend_cpu.probe(&p, devs, MAX_CORES, &ndev);
	if (err || ndev != ncores)
		return err ? err : -TDM_ECONFIG;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_eager,
		                    .devices = devs,
		                    .ndevices = ndev,
		                    .hooks = { .graph_done = on_done, .ctx = &flag },
		                    .topology = topo,
		                    .start_workers = true,
		                    .spin_us = 50 };
	err = engine_create(&ep, &e);
	if (err)
		goto release;
	engine_flow_add(e, &flow);
	uint32_t n = per_request ? (uint32_t)b->nreq : 1;
	for (int rep = -1; rep < REPS && !err; rep++) {
		struct engine_graph *g = calloc(1, sizeof(*g));
		if (!g || !(g->tasks = calloc(n, sizeof(*g->tasks))) ||
		    !(g->succ_off = calloc(n + 1, sizeof(uint32_t))) ||
		    !(g->succ = calloc(1, sizeof(uint32_t)))) {
			err = -TDM_ENOMEM;
			if (g)
				engine_graph_free_arrays(g);
			free(g);
			break;
		}
		g->flow = &flow;
		g->ntasks = n;
		for (uint32_t i = 0; i < n; i++) {
			struct engine_task *t = &g->tasks[i];
			t->graph = g;
			t->index = i;
			if (per_request)
				per_request_task(t, b, i);
			else
				varlen_task(t, b);
		}
		atomic_store(&flag.done, 0);
		uint64_t t0 = bench_now_ns();
		engine_submit(e, g);
		while (!atomic_load(&flag.done))
			sched_yield();
		uint64_t took = bench_now_ns() - t0;
		err = atomic_load(&g->status);
		if (rep >= 0)
			times[rep] = took;
		engine_graph_free_arrays(g);
		free(g);
	}
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	if (!err) {
		qsort(times, REPS, sizeof(times[0]), cmp_u64);
		*median_ns = times[REPS / 2];
	}
release:
	for (size_t i = 0; i < ndev; i++)
		devs[i].ops->release(&devs[i]);
	return err;
}

int main(void)
{
	static const size_t nreqs[] = { 1, 4, 16 };
	int cores[MAX_CORES];
	int ncores = bench_ncores();

	if (ncores > MAX_CORES)
		ncores = MAX_CORES;
	for (int i = 0; i < ncores; i++)
		cores[i] = bench_nth_core(i);
	if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
		fprintf(stderr, "bench_attn_varlen: hwloc failed\n");
		return 1;
	}
	printf("# attention shape nh=%d nkv=%d hd=%d fp32, KV lengths %d..%d, median of %d\n", NH,
	       NKV, HD, LEN_MIN, LEN_MAX, REPS);
	for (size_t i = 0; i < sizeof(nreqs) / sizeof(nreqs[0]); i++) {
		struct batch b;
		if (make_batch(&b, nreqs[i]) != 0) {
			fprintf(stderr, "bench_attn_varlen: out of memory\n");
			return 1;
		}
		printf("# %zu requests, %lld tokens, %.1f MB of K and V\n", b.nreq,
		       (long long)b.total, 8.0 * (double)b.total * NKV * HD / 1e6);
		for (int t = 1; t <= ncores; t++) {
			for (int mode = 0; mode < 2; mode++) {
				uint64_t ns;
				int err = run(&b, cores, (size_t)t, mode == 1, &ns);
				if (err) {
					fprintf(stderr, "bench_attn_varlen: %s\n",
					        tdm_strerror(err));
					return 1;
				}
				char keys[96];
				snprintf(keys, sizeof(keys),
				         "device=cpu requests=%zu threads=%d mode=%s", b.nreq, t,
				         mode ? "per_request" : "one_task");
				bench_report("attn_varlen_gbps", batch_bytes(&b) / (double)ns,
				             "GB/s", keys);
			}
		}
		free_batch(&b);
	}
	return 0;
}
