/* CPU decode attention over a ragged batch, through the engine as the
 * daemon runs it (CPU workers bound to their cores, eager policy), on t =
 * 1, 2, 4, ... and all of this process's cores:
 *
 *   BENCH attn_varlen_gbps <GB/s> GB/s device=cpu requests=<n> threads=<t> mode=one_task
 *       one attn_decode_varlen task for the whole batch: its worker runs it
 *       and the other cores' gang helpers join (cpu_gang.h);
 *   BENCH attn_varlen_gbps <GB/s> GB/s device=cpu requests=<n> threads=<t> mode=per_request
 *       the alternative without it: one attn_decode task (batch 1) per
 *       request over the same pools, spread over the workers by eager;
 *   BENCH attn_varlen_seam_gbps <GB/s> GB/s device=cpu requests=<n> threads=<t>
 *       the gang alone: the varlen task launched on one core's device,
 *       its job capped at t threads, the t taking turns (seam_main);
 *   BENCH host_read_gbps <GB/s> GB/s threads=<t>
 *       what t threads pinned to t cores read of a 256 MiB array: the
 *       memory's own speed, for reference.
 *
 * GB/s = the bytes the attention must read and write (the K and V rows of
 * every request, q and out; 1e9 bytes a GB) / the median time from a
 * graph's submission to its completion, over REPS graphs after one
 * warm-up; best= the same over the fastest graph, the figure least
 * disturbed by other work on the machine. Shapes: LLaMA-3-8B's attention
 * (32 query heads, 8 kv heads, head dim 128), fp32, KV lengths uniform in
 * [LEN_MIN, LEN_MAX]. t threads = an engine over t cores (probed as [cpu]
 * cores would list them), so a one-core run has no helper to call on. The
 * figures move with whatever else runs on the machine. */
#include <hwloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/cpu/cpu_gang.h"
#include "bench_util.h"
#include "engine/engine.h"
#include "policies/policy.h"
#include "tandem.h"

#define NH 32
#define NKV 8
#define HD 128
#define LEN_MIN 256
#define LEN_MAX 2048
#define REPS 15
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

/* The bench's thread sleeps while a graph runs: spinning, it would take
 * a core from the workers. */
struct done_flag {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void on_done(void *ctx, struct engine_graph *g)
{
	struct done_flag *f = ctx;
	(void)g;
	pthread_mutex_lock(&f->lock);
	f->done = true;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static void wait_done(struct done_flag *f)
{
	pthread_mutex_lock(&f->lock);
	while (!f->done)
		pthread_cond_wait(&f->cond, &f->lock);
	f->done = false;
	pthread_mutex_unlock(&f->lock);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The median time of a graph of one varlen task (per_request false) or of
 * one attn_decode task per request, on an engine over the cores given. */
static int run(const struct batch *b, const int *cores, size_t ncores, bool per_request,
               uint64_t *median_ns, uint64_t *best_ns)
{
	struct backend_device devs[MAX_CORES];
	struct backend_probe_params p = { .topology = topo, .cores = cores, .ncores = ncores };
	size_t ndev = 0;
	struct engine *e;
	struct done_flag flag = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	uint64_t times[REPS], helped = cpu_gang_helper_items();
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
		uint64_t t0 = bench_now_ns();
		engine_submit(e, g);
		wait_done(&flag);
		uint64_t took = bench_now_ns() - t0;
		err = atomic_load(&g->status);
		if (rep >= 0)
			times[rep] = took;
		engine_graph_free_arrays(g);
		free(g);
	}
	helped = cpu_gang_helper_items() - helped;
	if (!per_request && ncores > 1)
		printf("# threads=%zu: gang helpers ran %.0f%% of the items\n", ncores,
		       100.0 * (double)helped / ((REPS + 1) * (double)b->nreq * NKV));
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	if (!err) {
		qsort(times, REPS, sizeof(times[0]), cmp_u64);
		*median_ns = times[REPS / 2];
		*best_ns = times[0];
	}
release:
	for (size_t i = 0; i < ndev; i++)
		devs[i].ops->release(&devs[i]);
	return err;
}

/* Thread counts: 1, 2, 4, ... and all the cores. */
static int next_threads(int t, int ncores)
{
	return t < ncores && 2 * t > ncores ? ncores : 2 * t;
}

/* ---- the memory's own speed, for reference ---- */

#define READ_BYTES (256u << 20)

struct reader {
	const double *a;
	size_t n;
	int core;
	double sum;
};

static void *read_all(void *arg)
{
	struct reader *r = arg;
	double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	bench_pin(0, r->core);
	for (size_t i = 0; i + 4 <= r->n; i += 4) {
		s0 += r->a[i];
		s1 += r->a[i + 1];
		s2 += r->a[i + 2];
		s3 += r->a[i + 3];
	}
	r->sum = s0 + s1 + s2 + s3;
	return NULL;
}

/* Best of 5 passes of t threads pinned to cores[0..t), each summing its
 * share of READ_BYTES: GB/s read. */
static double read_gbps(const double *a, const int *cores, int t)
{
	size_t n = READ_BYTES / sizeof(double), per = n / (size_t)t;
	uint64_t best = UINT64_MAX;
	for (int rep = 0; rep < 5; rep++) {
		pthread_t th[MAX_CORES];
		struct reader r[MAX_CORES];
		uint64_t t0 = bench_now_ns();
		for (int i = 0; i < t; i++) {
			r[i] = (struct reader){ a + (size_t)i * per, per, cores[i], 0 };
			pthread_create(&th[i], NULL, read_all, &r[i]);
		}
		for (int i = 0; i < t; i++)
			pthread_join(th[i], NULL);
		uint64_t took = bench_now_ns() - t0;
		best = took < best ? took : best;
	}
	return (double)READ_BYTES / (double)best;
}

static int report_read(const int *cores, int ncores)
{
	double *a = malloc(READ_BYTES);
	if (!a)
		return -TDM_ENOMEM;
	for (size_t i = 0; i < READ_BYTES / sizeof(double); i++)
		a[i] = (double)(i & 7);
	for (int t = 1; t <= ncores; t = next_threads(t, ncores)) {
		char keys[32];
		snprintf(keys, sizeof(keys), "threads=%d", t);
		bench_report("host_read_gbps", read_gbps(a, cores, t), "GB/s", keys);
	}
	free(a);
	return 0;
}

/* The batch on t cores, one way: with one thread, on the first core and on
 * the second alone, the faster kept (other work on the machine may crowd
 * one core). */
static int measure(const struct batch *b, const int *cores, int ncores, int t, bool per_request)
{
	uint64_t ns = UINT64_MAX, best = UINT64_MAX;
	for (int first = 0; first < (t == 1 && ncores > 1 ? 2 : 1); first++) {
		uint64_t med, fast;
		int err = run(b, cores + first, (size_t)t, per_request, &med, &fast);
		if (err)
			return err;
		ns = med < ns ? med : ns;
		best = fast < best ? fast : best;
	}
	char keys[128];
	snprintf(keys, sizeof(keys), "device=cpu requests=%zu threads=%d mode=%s best=%.3g",
	         b->nreq, t, per_request ? "per_request" : "one_task",
	         batch_bytes(b) / (double)best);
	bench_report("attn_varlen_gbps", batch_bytes(b) / (double)ns, "GB/s", keys);
	return 0;
}

/* The gang alone, at the backend seam: the task launched on the first
 * core's device from a thread bound there, its job capped at t threads
 * (cpu_gang_max_threads), every t in turn within each round, so that
 * whatever else runs on the machine weighs on each t alike. */
struct seam {
	const struct batch *b;
	const int *cores;
	int ncores, err;
};

static void *seam_main(void *arg)
{
	struct seam *sm = arg;
	const struct batch *b = sm->b;
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct backend_device devs[MAX_CORES];
	struct backend_probe_params p = { .topology = topo,
		                          .cores = sm->cores,
		                          .ncores = (size_t)sm->ncores };
	size_t ndev = 0;
	int ts[16], nt = 0;
	uint64_t times[16][REPS];
	struct engine_task t = { 0 };
	unsigned max = cpu_gang_max_threads;

	sm->err = backend_cpu.probe(&p, devs, MAX_CORES, &ndev);
	if (!sm->err && (ndev < 1 || devs[0].ops->worker_init(&devs[0], topo) != 0))
		sm->err = -TDM_ECONFIG;
	varlen_task(&t, b);
	for (int th = 1; th <= sm->ncores && nt < 16; th = next_threads(th, sm->ncores))
		ts[nt++] = th;
	for (int rep = -1; rep < REPS && !sm->err; rep++) {
		for (int i = 0; i < nt && !sm->err; i++) {
			cpu_gang_max_threads = (unsigned)ts[i];
			uint64_t t0 = bench_now_ns();
			sm->err = devs[0].ops->launch(&devs[0], k, &t.call);
			if (rep >= 0)
				times[i][rep] = bench_now_ns() - t0;
		}
	}
	cpu_gang_max_threads = max;
	for (int i = 0; i < nt && !sm->err; i++) {
		char keys[96];
		qsort(times[i], REPS, sizeof(times[i][0]), cmp_u64);
		snprintf(keys, sizeof(keys), "device=cpu requests=%zu threads=%d best=%.3g",
		         b->nreq, ts[i], batch_bytes(b) / (double)times[i][0]);
		bench_report("attn_varlen_seam_gbps", batch_bytes(b) / (double)times[i][REPS / 2],
		             "GB/s", keys);
	}
	for (size_t i = 0; i < ndev; i++)
		devs[i].ops->release(&devs[i]);
	return NULL;
}

static int seam(const struct batch *b, const int *cores, int ncores)
{
	struct seam sm = { b, cores, ncores, 0 };
	pthread_t th;
	if (pthread_create(&th, NULL, seam_main, &sm) != 0)
		return -TDM_ESYS;
	pthread_join(th, NULL);
	return sm.err;
}

int main(void)
{
	static const size_t nreqs[] = { 1, 4, 16 };
	int cores[MAX_CORES];
	int ncores = bench_ncores(), err;

	if (ncores > MAX_CORES)
		ncores = MAX_CORES;
	for (int i = 0; i < ncores; i++)
		cores[i] = bench_nth_core(i);
	if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
		fprintf(stderr, "bench_attn_varlen: hwloc failed\n");
		return 1;
	}
	err = report_read(cores, ncores);
	printf("# attention shape nh=%d nkv=%d hd=%d fp32, KV lengths %d..%d, median of %d\n", NH,
	       NKV, HD, LEN_MIN, LEN_MAX, REPS);
	for (size_t i = 0; i < sizeof(nreqs) / sizeof(nreqs[0]) && !err; i++) {
		struct batch b;
		if (make_batch(&b, nreqs[i]) != 0) {
			err = -TDM_ENOMEM;
			break;
		}
		printf("# %zu requests, %lld tokens, %.1f MB of K and V\n", b.nreq,
		       (long long)b.total, 8.0 * (double)b.total * NKV * HD / 1e6);
		for (int t = 1; t <= ncores && !err; t = next_threads(t, ncores))
			for (int mode = 0; mode < 2 && !err; mode++)
				err = measure(&b, cores, ncores, t, mode == 1);
		if (!err)
			err = seam(&b, cores, ncores);
		free_batch(&b);
	}
	if (err) {
		fprintf(stderr, "bench_attn_varlen: %s\n", tdm_strerror(err));
		return 1;
	}
	return 0;
}
