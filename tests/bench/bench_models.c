/* Cost-model accuracy on real kernels, with the daemon's own profiler and
 * backends (no daemon: nothing but the kernel runs while it is timed).
 *
 * For each kernel (sgemm, attn_decode, moe_expert, rmsnorm) on each device
 * (one CPU core, then every accelerator: PoCL's CPU device here, CUDA GPUs
 * where present): a set of training sizes runs ROUNDS times in shuffled
 * order, every run predicted *before* it runs and then learned; the errors
 * of runs after a size's third sample are the "seen" errors. Then sizes in
 * between, never learned before, are predicted and run once (after one
 * warm-up run the model does not see, as the training sizes had): the
 * "unseen" errors. Also measured: calibration time and the cost of one prediction.
 *
 *   BENCH calibration_s <s> s
 *   BENCH predict_ns <ns> ns
 *   BENCH model_err_median_pct <pct> pct seen=yes|no kernel=K device=D
 *   BENCH model_err_p90_pct <pct> pct seen=yes|no kernel=K device=D
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "bench_accel.h"
#include "bench_util.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

#define ROUNDS 5 /* samples per training size; errors counted from the 4th */
#define NTRAIN 6
#define NUNSEEN 5
#define MAX_ARGS 7
#define MAX_ERRS (NTRAIN * ROUNDS + NUNSEEN)

/* ---- the workloads ---------------------------------------------------------- */

struct shape {
	enum kernel_id kernel;
	const char *name;
	int64_t train[NTRAIN], unseen[NUNSEEN]; /* the size parameter */
};

static const struct shape shapes[] = {
	{ KERNEL_SGEMM, "sgemm", { 64, 96, 128, 192, 256, 384 }, { 80, 112, 160, 224, 320 } },
	{ KERNEL_ATTN_DECODE,
	  "attn_decode",
	  { 256, 512, 1024, 2048, 4096, 8192 },
	  { 384, 768, 1536, 3072, 6144 } },
	{ KERNEL_MOE_EXPERT, "moe_expert", { 1, 2, 4, 8, 12, 16 }, { 3, 5, 6, 10, 14 } },
	{ KERNEL_RMSNORM, "rmsnorm", { 8, 16, 32, 64, 128, 256 }, { 12, 24, 48, 96, 192 } },
};

/* Fixed dimensions of the LLM-shaped kernels. */
enum { ATT_NH = 32, ATT_NKV = 8, ATT_HD = 128, MOE_DM = 512, MOE_DFF = 1408, MOE_K = 2 };
enum { NORM_DIM = 4096 };

/* A call of kernel k at size s: argument lengths in floats and scalars. */
static void describe_call(enum kernel_id k, int64_t s, struct tdm_kernel_call *call,
                          size_t floats[MAX_ARGS])
{
	memset(call, 0, sizeof(*call));
	memset(floats, 0, sizeof(size_t) * MAX_ARGS);
	switch (k) {
	case KERNEL_SGEMM:
		call->nargs = 3;
		floats[0] = floats[1] = floats[2] = (size_t)(s * s);
		call->s[0].i64 = call->s[1].i64 = call->s[2].i64 = s;
		call->s[3].f32 = 1.0f;
		call->s[4].f32 = 0.0f;
		break;
	case KERNEL_ATTN_DECODE:
		call->nargs = 4;
		floats[0] = floats[3] = ATT_NH * ATT_HD;
		floats[1] = floats[2] = (size_t)s * ATT_NKV * ATT_HD;
		call->s[0].i64 = 1;
		call->s[1].i64 = ATT_NH;
		call->s[2].i64 = ATT_NKV;
		call->s[3].i64 = ATT_HD;
		call->s[4].i64 = s; /* kv_len */
		call->s[5].i64 = s; /* kv_cap */
		break;
	case KERNEL_MOE_EXPERT:
		call->nargs = 7;
		floats[0] = floats[6] = (size_t)s * MOE_DM;
		floats[1] = floats[2] = floats[3] = (size_t)MOE_DM * MOE_DFF;
		floats[4] = floats[5] = (size_t)s * MOE_K;
		call->s[0].i64 = s;
		call->s[1].i64 = MOE_DM;
		call->s[2].i64 = MOE_DFF;
		call->s[3].i64 = MOE_K;
		call->s[4].i64 = 0; /* expert 0: every token routed to it (ids 0) */
		break;
	case KERNEL_RMSNORM:
		call->nargs = 3;
		floats[0] = floats[2] = (size_t)s * NORM_DIM;
		floats[1] = NORM_DIM;
		call->s[0].i64 = s;
		call->s[1].i64 = NORM_DIM;
		call->s[2].f32 = 1e-5f;
		break;
	default: break;
	}
	for (unsigned i = 0; i < call->nargs; i++)
		call->len[i] = floats[i] * 4;
}

/* Host buffers with harmless contents: small values, routing ids 0 and
 * routing weights 1 (moe_expert's a4 and a5). */
static int host_buffers(enum kernel_id k, const size_t floats[MAX_ARGS], unsigned nargs,
                        float *buf[MAX_ARGS])
{
	for (unsigned i = 0; i < nargs; i++) {
		buf[i] = malloc(floats[i] * 4);
		if (!buf[i])
			return -1;
		for (size_t j = 0; j < floats[i]; j++)
			buf[i][j] = (float)((j * 7 + i) % 13) * 0.01f;
		if (k == KERNEL_MOE_EXPERT && i == 4)
			memset(buf[i], 0, floats[i] * 4);
		if (k == KERNEL_MOE_EXPERT && i == 5)
			for (size_t j = 0; j < floats[i]; j++)
				buf[i][j] = 1.0f;
	}
	return 0;
}

/* ---- running a call on a device ------------------------------------------------- */

struct run {
	const struct backend_device *dev;
	struct tdm_kernel_call call;
	float *host[MAX_ARGS];
	void *mem[MAX_ARGS]; /* accelerators */
	size_t floats[MAX_ARGS];
};

static int run_open(struct run *r, const struct backend_device *d, enum kernel_id k, int64_t s)
{
	memset(r, 0, sizeof(*r));
	r->dev = d;
	describe_call(k, s, &r->call, r->floats);
	if (host_buffers(k, r->floats, r->call.nargs, r->host))
		return -1;
	for (unsigned i = 0; i < r->call.nargs; i++) {
		r->call.ptr[i] = r->host[i];
		if (!backend_is_accelerator(d))
			continue;
		struct backend_event *ev = NULL;
		if (d->ops->mem_alloc(d, r->call.len[i], &r->mem[i]) ||
		    d->ops->copy_h2d(d, r->mem[i], 0, r->host[i], r->call.len[i], NULL, &ev) ||
		    d->ops->event_wait(d, ev))
			return -1;
		d->ops->event_release(d, ev);
		r->call.mem[i] = r->mem[i];
	}
	return 0;
}

/* Device time of one run, as the daemon measures it: the launch to
 * completion. 0 on failure. */
static uint64_t run_once(struct run *r, const struct kernel_def *kd)
{
	const struct backend_device *d = r->dev;
	uint64_t t0 = bench_now_ns();
	if (!backend_is_accelerator(d))
		return d->ops->launch(d, kd, &r->call) ? 0 : bench_now_ns() - t0;
	struct backend_event *ev = NULL;
	if (d->ops->launch_async(d, kd, &r->call, NULL, 0, &ev))
		return 0;
	int err = d->ops->event_wait(d, ev);
	uint64_t t = bench_now_ns() - t0;
	d->ops->event_release(d, ev);
	return err ? 0 : t;
}

static void run_close(struct run *r)
{
	for (unsigned i = 0; i < MAX_ARGS; i++) {
		if (r->mem[i])
			r->dev->ops->mem_free(r->dev, r->mem[i]);
		free(r->host[i]);
	}
}

/* ---- statistics ---------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double quantile(double *v, size_t n, double q)
{
	qsort(v, n, sizeof(*v), cmp_double);
	size_t i = (size_t)ceil(q * (double)n) - 1;
	return v[i < n ? i : n - 1];
}

static void report(const char *seen, const char *kernel, const char *dev, double *err, size_t n)
{
	if (!n)
		return;
	printf("BENCH model_err_median_pct %.1f pct seen=%s kernel=%s device=%s\n",
	       quantile(err, n, 0.5), seen, kernel, dev);
	printf("BENCH model_err_p90_pct %.1f pct seen=%s kernel=%s device=%s\n",
	       quantile(err, n, 0.9), seen, kernel, dev);
}

/* One prediction, one run, one lesson; returns the absolute error in
 * percent, or -1 when the run failed. */
static double predict_run_learn(struct profiler *p, uint32_t devi, struct run *r,
                                const struct kernel_def *kd)
{
	static const char *const sources[] = { "prior", "history", "linear", "power", "interp" };
	struct kernel_features f;
	struct cost_pred cp;
	kd->features(&r->call, &f);
	profiler_predict(p, kd->id, devi, &f, &cp);
	uint64_t t = run_once(r, kd);
	if (!t)
		return -1;
	profiler_observe(p, kd->id, devi, &f, t);
	if (getenv("BENCH_MODELS_VERBOSE"))
		printf("  %s %s domain %.4g: predicted %.0f ns (%s), took %llu ns\n", kd->name,
		       r->dev->name, f.domain, cp.ns,
		       cp.source < COST_SOURCE_COUNT ? sources[cp.source] : "?",
		       (unsigned long long)t);
	return 100.0 * fabs(cp.ns - (double)t) / (double)t;
}

static void shuffle(int *v, int n, uint64_t *seed)
{
	for (int i = n - 1; i > 0; i--) {
		*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
		int j = (int)((*seed >> 33) % (uint64_t)(i + 1));
		int t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

static void bench_pair(struct profiler *p, uint32_t devi, const struct backend_device *d,
                       const struct shape *sh)
{
	const struct kernel_def *kd = kernel_by_id(sh->kernel);
	double seen[MAX_ERRS], unseen[NUNSEEN];
	size_t nseen = 0, nunseen = 0;
	struct run runs[NTRAIN];
	uint64_t seed = 42;

	if (!d->ops->supports(d, kd)) {
		printf("bench_models: %s has no %s\n", d->name, sh->name);
		return;
	}
	for (int i = 0; i < NTRAIN; i++) {
		if (run_open(&runs[i], d, sh->kernel, sh->train[i])) {
			printf("bench_models: %s %s: cannot set up\n", d->name, sh->name);
			for (int j = 0; j <= i; j++)
				run_close(&runs[j]);
			return;
		}
	}
	/* Warm-up, not learned: compiles, first touches, caches. */
	for (int i = 0; i < NTRAIN; i++)
		run_once(&runs[i], kd);
	for (int round = 0; round < ROUNDS; round++) {
		int order[NTRAIN] = { 0, 1, 2, 3, 4, 5 };
		shuffle(order, NTRAIN, &seed);
		for (int i = 0; i < NTRAIN; i++) {
			double e = predict_run_learn(p, devi, &runs[order[i]], kd);
			if (e >= 0 && round >= 3)
				seen[nseen++] = e;
		}
	}
	for (int i = 0; i < NTRAIN; i++)
		run_close(&runs[i]);
	for (int i = 0; i < NUNSEEN; i++) {
		struct run r;
		if (run_open(&r, d, sh->kernel, sh->unseen[i]) == 0) {
			/* Warm the buffers and the device's code for this shape
			 * (first touches, cuBLAS kernel loads), as the training
			 * sizes were, without teaching the model anything. */
			run_once(&r, kd);
			double e = predict_run_learn(p, devi, &r, kd);
			if (e >= 0)
				unseen[nunseen++] = e;
		}
		run_close(&r);
	}
	report("yes", sh->name, d->name, seen, nseen);
	report("no", sh->name, d->name, unseen, nunseen);
}

/* ---- main ------------------------------------------------------------------------------- */

static void bench_predict_cost(struct profiler *p)
{
	enum { N = 1000000, NF = 64 };
	struct kernel_features f[NF];
	struct cost_pred cp;
	double sink = 0;
	for (int i = 0; i < NF; i++)
		f[i] = (struct kernel_features){ .flops = 2.0 * (64 + i) * (64 + i) * (64 + i),
			                         .bytes = 12.0 * (64 + i) * (64 + i),
			                         .domain = (64.0 + i) * (64 + i) * (64 + i) };
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < N; i++) {
		profiler_predict(p, KERNEL_SGEMM, 0, &f[i % NF], &cp);
		sink += cp.ns;
	}
	double ns = (double)(bench_now_ns() - t0) / N;
	printf("BENCH predict_ns %.1f ns (sink %g)\n", ns, sink > 0 ? 1.0 : 0.0);
}

int main(void)
{
	struct bench_accels acc;
	struct backend_device devs[1 + BENCH_MAX_ACCELS];
	uint16_t nodes[1 + BENCH_MAX_ACCELS];
	struct backend_probe_params pp = { 0 };
	size_t n = 0, ncpu = 0;
	int core0 = 0;

	if (bench_accels_open(&acc, "bench_models"))
		return 1;
	kernels_cpu_init();
	pp.topology = acc.topo;
	pp.cores = &core0;
	pp.ncores = 1;
	if (backend_cpu.probe(&pp, devs, 1, &ncpu) || ncpu != 1) {
		fprintf(stderr, "bench_models: no CPU device\n");
		return 1;
	}
	nodes[n++] = 0;
	for (size_t i = 0; i < acc.n; i++) {
		devs[n] = acc.devs[i];
		nodes[n] = (uint16_t)(i + 1);
		devs[n].node = nodes[n];
		n++;
	}

	struct calibration *cal = calloc(1, sizeof(*cal));
	struct profiler *p = NULL;
	if (!cal)
		return 1;
	uint64_t t0 = bench_now_ns();
	int err = calibrate_run(devs, nodes, n, cal);
	double cal_s = (double)(bench_now_ns() - t0) / 1e9;
	if (err || profiler_create(cal, &p)) {
		fprintf(stderr, "bench_models: calibration failed: %s\n", tdm_strerror(err));
		return 1;
	}
	printf("BENCH calibration_s %.3f s devices=%zu\n", cal_s, n);

	for (size_t i = 0; i < n; i++)
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
			bench_pair(p, (uint32_t)i, &devs[i], &shapes[s]);
	bench_predict_cost(p);

	profiler_destroy(p);
	free(cal);
	if (devs[0].ops->release)
		devs[0].ops->release(&devs[0]);
	bench_accels_close(&acc);
	return 0;
}
