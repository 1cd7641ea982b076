/* Cost-model accuracy on real kernels, with the daemon's own profiler and
 * backends (no daemon: nothing but the kernel runs while it is timed).
 *
 * For each kernel (sgemm, attn_decode, moe_expert, rmsnorm, and the
 * microsecond kernels rope and topk_router at decode sizes) on each device
 * (one CPU core, then every accelerator: PoCL's CPU device here, CUDA GPUs
 * where present): six training sizes and five sizes between them, all on
 * one set of buffers allocated at the largest size (bench_pair). After one
 * warm-up run of each (compiles, first touches; not learned), ROUNDS rounds
 * run every training size in shuffled order, each run predicted *before* it
 * runs and then learned. From round FIRST_SCORED on (every training size has
 * three samples by then) the rounds also run the five other sizes, shuffled
 * in among the training ones: each predicted, run and never learned, so
 * that it stays unseen. The errors of those rounds are the "seen" and the
 * "unseen" errors. Every run, of either set, follows runs of other sizes:
 * the caches hold what a mix of tasks leaves, the same for both sets.
 *
 * Per kernel x device x set: the median and p90 of |predicted - took| /
 * took, the median of |predicted - took| in microseconds, the median time,
 * and whether the target is met: kernels whose median time is above 50 us
 * are held to a median relative error of 10% (seen) or 20% (unseen), the
 * others to a median absolute error of 5 us. Also: calibration time and the
 * cost of one prediction (of a seen size, and of an unseen one).
 *
 *   BENCH calibration_s <s> s
 *   BENCH predict_ns <ns> ns source=history|unseen
 *   BENCH model_err_<set>_pct <pct> pct kernel=K device=D     (median)
 *   BENCH model_err_<set>_p90_pct <pct> pct kernel=K device=D
 *   BENCH model_abs_err_us <us> us set=<set> kernel=K device=D  (median)
 *   BENCH model_time_median_us <us> us set=<set> kernel=K device=D
 *   BENCH model_noise_floor_pct <pct> pct set=<set> kernel=K device=D
 *         (the median error of a predictor answering, in hindsight, the
 *         median of the other scored runs of the same size: the noise alone)
 *   BENCH model_target_met 0|1 bool set=<set> kernel=K device=D metric=err_pct|abs_err_us
 *         value=V target=T
 * where set is seen, unseen, or decode (attn_decode stepping its KV length
 * one position per run, every length new to the model: an unseen target).
 *   BENCH model_targets_met <n> of=<pairs>
 *
 * BENCH_MODELS_VERBOSE=1 prints every prediction; BENCH_MODELS_TRACE=FILE
 * writes every timed run (kernel, device, features, time, set, round) for
 * replaying the same samples through another model offline.
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

#define ROUNDS 6 /* rounds over the training sizes */
#define FIRST_SCORED 3 /* the first round whose runs are scored */
#define NTRAIN 6
#define NUNSEEN 5
#define MAX_ARGS 7
#define MAX_ERRS (NTRAIN * ROUNDS)
#define SMALL_NS 50000.0 /* below this median time, the target is absolute */
#define TARGET_SEEN_PCT 10.0
#define TARGET_UNSEEN_PCT 20.0
#define TARGET_ABS_US 5.0

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
	{ KERNEL_ROPE, "rope", { 2, 4, 8, 16, 32, 64 }, { 3, 6, 12, 24, 48 } },
	{ KERNEL_TOPK_ROUTER, "topk_router", { 2, 4, 8, 16, 32, 64 }, { 3, 6, 12, 24, 48 } },
};

/* Fixed dimensions of the LLM-shaped kernels; rope and topk_router at the
 * sizes of examples/llm_layer.c's decode steps. */
enum { ATT_NH = 32, ATT_NKV = 8, ATT_HD = 128, MOE_DM = 512, MOE_DFF = 1408, MOE_K = 2 };
enum { NORM_DIM = 4096, ROPE_NH = 8, ROPE_HD = 32, ROUTER_NE = 64, ROUTER_K = 2 };

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
	case KERNEL_ROPE:
		call->nargs = 1;
		floats[0] = (size_t)s * ROPE_NH * ROPE_HD;
		call->s[0].i64 = s;
		call->s[1].i64 = ROPE_NH;
		call->s[2].i64 = ROPE_HD;
		call->s[3].i64 = 100; /* pos0 */
		call->s[4].f32 = 10000.0f;
		break;
	case KERNEL_TOPK_ROUTER:
		call->nargs = 3;
		floats[0] = (size_t)s * ROUTER_NE;
		floats[1] = floats[2] = (size_t)s * ROUTER_K;
		call->s[0].i64 = s;
		call->s[1].i64 = ROUTER_NE;
		call->s[2].i64 = ROUTER_K;
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
	bool borrowed; /* the buffers are another run's (run_borrow) */
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

/* A run of kernel k at size s on the buffers of `big`, a run of the same
 * kernel at a size at least s: the call's lengths are s's, its pointers
 * big's. */
static void run_borrow(struct run *r, const struct run *big, enum kernel_id k, int64_t s)
{
	memset(r, 0, sizeof(*r));
	r->dev = big->dev;
	r->borrowed = true;
	describe_call(k, s, &r->call, r->floats);
	for (unsigned i = 0; i < r->call.nargs; i++) {
		r->call.ptr[i] = big->call.ptr[i];
		r->call.mem[i] = big->call.mem[i];
	}
}

static void run_close(struct run *r)
{
	for (unsigned i = 0; i < MAX_ARGS && !r->borrowed; i++) {
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

/* The scored runs of one kernel x device x set. */
struct errs {
	double rel[MAX_ERRS]; /* percent */
	double abs[MAX_ERRS]; /* microseconds */
	double took[MAX_ERRS]; /* nanoseconds */
	const void *size[MAX_ERRS]; /* the run (one size) it came from */
	size_t n;
};

static void errs_add(struct errs *e, double pred, double took, const void *size)
{
	if (e->n == MAX_ERRS)
		return;
	e->rel[e->n] = 100.0 * fabs(pred - took) / took;
	e->abs[e->n] = fabs(pred - took) / 1e3;
	e->size[e->n] = size;
	e->took[e->n++] = took;
}

/* The median relative error, in percent, of a predictor that knew in
 * hindsight the other scored runs of the same size and answered their
 * median: what the machine's noise alone costs, whatever the model. */
static double noise_floor_pct(const struct errs *e)
{
	double err[MAX_ERRS], same[MAX_ERRS];
	size_t n = 0;

	for (size_t i = 0; i < e->n; i++) {
		size_t k = 0;
		for (size_t j = 0; j < e->n; j++)
			if (j != i && e->size[j] == e->size[i])
				same[k++] = e->took[j];
		if (!k)
			continue;
		double med = quantile(same, k, 0.5);
		err[n++] = 100.0 * fabs(med - e->took[i]) / e->took[i];
	}
	return n ? quantile(err, n, 0.5) : 0;
}

static unsigned targets_met, targets;

static void report(const char *seen, const char *kernel, const char *dev, struct errs *e)
{
	if (!e->n)
		return;
	double noise_pct = noise_floor_pct(e); /* first: the quantiles sort in place */
	double med = quantile(e->rel, e->n, 0.5), p90 = quantile(e->rel, e->n, 0.9);
	double abs_us = quantile(e->abs, e->n, 0.5), t_ns = quantile(e->took, e->n, 0.5);
	bool small = t_ns <= SMALL_NS;
	double target = small ? TARGET_ABS_US : *seen == 'y' ? TARGET_SEEN_PCT : TARGET_UNSEEN_PCT;

	double value = small ? abs_us : med;
	bool met = value <= target;

	const char *set = *seen == 'y' ? "seen" : *seen == 'n' ? "unseen" : "decode";

	printf("BENCH model_err_%s_pct %.1f pct kernel=%s device=%s\n", set, med, kernel, dev);
	printf("BENCH model_err_%s_p90_pct %.1f pct kernel=%s device=%s\n", set, p90, kernel, dev);
	printf("BENCH model_abs_err_us %.2f us set=%s kernel=%s device=%s\n", abs_us, set, kernel,
	       dev);
	printf("BENCH model_time_median_us %.1f us set=%s kernel=%s device=%s\n", t_ns / 1e3, set,
	       kernel, dev);
	if (*seen != 'd') /* each decode step is a size of its own */
		printf("BENCH model_noise_floor_pct %.1f pct set=%s kernel=%s device=%s\n",
		       noise_pct, set, kernel, dev);
	printf("BENCH model_target_met %d bool set=%s kernel=%s device=%s metric=%s value=%.2f "
	       "target=%g\n",
	       met, set, kernel, dev, small ? "abs_err_us" : "err_pct", value, target);
	targets++;
	targets_met += met;
}

static FILE *trace;

/* One prediction and one run, learned when learn; adds the error to e when
 * e is not NULL. false when the run failed. */
static bool predict_run(struct profiler *p, uint32_t devi, struct run *r,
                        const struct kernel_def *kd, bool learn, int round, struct errs *e)
{
	static const char *const sources[] = { "prior", "history", "linear", "power", "interp" };
	struct kernel_features f;
	struct cost_pred cp;
	kd->features(&r->call, &f);
	profiler_predict(p, kd->id, devi, &f, &cp);
	uint64_t t = run_once(r, kd);
	if (!t)
		return false;
	if (learn)
		profiler_observe(p, kd->id, devi, &f, t);
	if (e)
		errs_add(e, cp.ns, (double)t, r);
	if (trace)
		fprintf(trace, "%s %s %.17g %.17g %.17g %llu %s %d\n", kd->name, r->dev->name,
		        f.flops, f.bytes, f.domain, (unsigned long long)t,
		        learn ? "train" : "unseen", round);
	if (getenv("BENCH_MODELS_VERBOSE"))
		printf("  %s %s domain %.4g: predicted %.0f ns (%s), took %llu ns%s\n", kd->name,
		       r->dev->name, f.domain, cp.ns,
		       cp.source < COST_SOURCE_COUNT ? sources[cp.source] : "?",
		       (unsigned long long)t, learn ? "" : " (unseen)");
	return true;
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

/* attn_decode as a decoder runs it: one step per token, the KV length one
 * more each step (every size new to the model), a fresh model (a daemon
 * serving one decode loop), each step predicted, run and learned. The
 * cache is allocated at its capacity; the features count the kv_len rows
 * read. Scored from step DECODE_WARM on. */
#define DECODE_FIRST 200
#define DECODE_STEPS 160
#define DECODE_WARM 16

static void bench_decode(const struct calibration *cal, uint32_t devi,
                         const struct backend_device *d)
{
	const struct kernel_def *kd = kernel_by_id(KERNEL_ATTN_DECODE);
	static struct errs e;
	struct profiler *p = NULL;
	struct run r;

	if (!d->ops->supports(d, kd) || profiler_create(cal, &p))
		return;
	e.n = 0;
	if (run_open(&r, d, KERNEL_ATTN_DECODE, DECODE_FIRST + DECODE_STEPS) == 0) {
		run_once(&r, kd);
		for (int step = 0; step < DECODE_STEPS; step++) {
			r.call.s[4].i64 = DECODE_FIRST + step; /* kv_len; kv_cap stays */
			predict_run(p, devi, &r, kd, true, step < DECODE_WARM ? -1 : 0,
			            step < DECODE_WARM ? NULL : &e);
		}
		report("decode", "attn_decode", d->name, &e);
	}
	run_close(&r);
	profiler_destroy(p);
}

/* Size i of a shape: the training sizes, then the unseen ones. */
static int64_t size_of(const struct shape *sh, int i)
{
	return i < NTRAIN ? sh->train[i] : sh->unseen[i - NTRAIN];
}

static void bench_pair(struct profiler *p, uint32_t devi, const struct backend_device *d,
                       const struct shape *sh)
{
	enum { NRUNS = NTRAIN + NUNSEEN };
	const struct kernel_def *kd = kernel_by_id(sh->kernel);
	static struct errs seen, unseen;
	struct run runs[NRUNS];
	uint64_t seed = 42;

	if (!d->ops->supports(d, kd)) {
		printf("bench_models: %s has no %s\n", d->name, sh->name);
		return;
	}
	seen.n = unseen.n = 0;
	/* Every size runs on one set of buffers, the largest size's. On the
	 * 2-vCPU VM, buffers allocated apart ran a streaming kernel at speeds
	 * up to 2x apart, run after run (rmsnorm on a core, scored rounds:
	 * 3.6-4.7 us a row on the training sizes' buffers, 4.3-7.9 on the
	 * unseen sizes' after 13 warm-up runs of each; on one set, 3.5-4.7 on
	 * all), which no feature of the call can see. A daemon's tasks, too,
	 * run on memory its pools reuse. */
	int big = 0;
	for (int i = 1; i < NRUNS; i++)
		if (size_of(sh, i) > size_of(sh, big))
			big = i;
	if (run_open(&runs[big], d, sh->kernel, size_of(sh, big))) {
		printf("bench_models: %s %s: cannot set up\n", d->name, sh->name);
		run_close(&runs[big]);
		return;
	}
	for (int i = 0; i < NRUNS; i++)
		if (i != big)
			run_borrow(&runs[i], &runs[big], sh->kernel, size_of(sh, i));
	/* Warm-up, not learned: compiles, first touches. */
	for (int i = 0; i < NRUNS; i++)
		run_once(&runs[i], kd);
	for (int round = 0; round < ROUNDS; round++) {
		int order[NRUNS], n = round >= FIRST_SCORED ? NRUNS : NTRAIN;
		for (int i = 0; i < NRUNS; i++)
			order[i] = i;
		shuffle(order, n, &seed);
		for (int i = 0; i < n; i++) {
			bool train = order[i] < NTRAIN;
			struct errs *e = round < FIRST_SCORED ? NULL : train ? &seen : &unseen;
			predict_run(p, devi, &runs[order[i]], kd, train, round, e);
		}
	}
	report("yes", sh->name, d->name, &seen);
	report("no", sh->name, d->name, &unseen);
	for (int i = 0; i < NRUNS; i++)
		run_close(&runs[i]);
}

/* ---- main ------------------------------------------------------------------------------- */

/* The cost of one prediction on the sgemm model of device 0, after its
 * training: of its training sizes (history), and of 62 sizes between them
 * (the chosen method for unseen sizes). */
static double predict_cost(struct profiler *p, const struct kernel_features *f, int nf)
{
	enum { N = 1000000 };
	struct cost_pred cp;
	double sink = 0;
	uint64_t t0 = bench_now_ns();
	for (int i = 0; i < N; i++) {
		profiler_predict(p, KERNEL_SGEMM, 0, &f[i % nf], &cp);
		sink += cp.ns;
	}
	double ns = (double)(bench_now_ns() - t0) / N;
	return sink > 0 ? ns : -1;
}

static struct kernel_features sgemm_features(double n)
{
	return (struct kernel_features){ .flops = 2 * n * n * n,
		                         .bytes = 12 * n * n,
		                         .domain = n * n * n };
}

static void bench_predict_cost(struct profiler *p)
{
	struct kernel_features seen[NTRAIN], unseen[64];
	int nu = 0;

	for (int i = 0; i < NTRAIN; i++)
		seen[i] = sgemm_features((double)shapes[0].train[i]);
	for (int s = 65; s < 128; s++)
		if (s != 96)
			unseen[nu++] = sgemm_features(s);
	printf("BENCH predict_ns %.1f ns source=history\n", predict_cost(p, seen, NTRAIN));
	printf("BENCH predict_ns %.1f ns source=unseen\n", predict_cost(p, unseen, nu));
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

	const char *trace_path = getenv("BENCH_MODELS_TRACE");
	if (trace_path && !(trace = fopen(trace_path, "w")))
		perror(trace_path);
	for (size_t i = 0; trace && i < n; i++)
		fprintf(trace, "cal %s %s %.17g %.17g %.17g\n", devs[i].name, cal->dev[i].key,
		        cal->dev[i].gemm_gflops, cal->dev[i].mem_gbps, cal->dev[i].launch_ns);
	for (size_t i = 0; i < n; i++)
		for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
			bench_pair(p, (uint32_t)i, &devs[i], &shapes[s]);
	for (size_t i = 0; i < n; i++)
		bench_decode(cal, (uint32_t)i, &devs[i]);
	printf("BENCH model_targets_met %u of=%u\n", targets_met, targets);
	bench_predict_cost(p);
	if (trace)
		fclose(trace);

	profiler_destroy(p);
	free(cal);
	if (devs[0].ops->release)
		devs[0].ops->release(&devs[0]);
	bench_accels_close(&acc);
	return 0;
}
