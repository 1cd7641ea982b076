/* examples/llm_layer's decode step without a daemon: the same layer (shape,
 * seeded weights and state: examples/llm_layer.h) and the same kernels in
 * the same order, called directly in this process (the daemon's CPU kernels,
 * backends/cpu/cpu_kernels.c), checked against the same reference after
 * every step. The baseline of tests/bench/moe_layer.sh's mode=direct: what
 * the layer costs on this machine's cores with no scheduler in between.
 *
 * A step: rmsnorm, q/k/v sgemm, rope on q and k, k and v copied into the
 * cache, attn_decode, the o sgemm, x += o, rmsnorm, the router's sgemm and
 * topk_router (y = 0 before the router, where the daemon runs it while the
 * router's inputs are computed); then the routed experts (the top-k the router chose,
 * as the daemon runs only those the guards let through), spread over
 * --threads threads, one per core (the main thread on the first core of
 * this process's CPU set, helpers on the next ones: with top-2 and two
 * cores, one expert per core); helper t accumulates into a y of its own,
 * added to y after the join (what TDM_ACC's merge does); then x += y.
 * The helpers wait for a step's experts spinning up to SPIN_US, then
 * sleeping on a condition variable (the daemon's workers spin 50 us too).
 *
 * Prints per step and at the end, as llm_layer does:
 *   step latency (kernels called directly): median X us, min Y us, max Z us
 *   expert start after the router: same_thread median .. p90 .., other_thread ..
 *     (from topk_router's return to the start of a routed expert on this
 *     thread and on a helper: the daemon-free counterpart of moe_layer.sh's
 *     moe_dispatch_overhead_us same_worker and other_worker)
 *   result: N steps correct (max rel err E)
 * and exits 1 when a step fails the reference check.
 */
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernels.h"
#include "tandem.h"

static const char *prog = "moe_direct";

#include "examples/llm_layer.h"

#define SPIN_US 50
#define MAX_THREADS 16
#define MAX_EXPERT_JOBS 64

/* ---- plain memory for the layer's buffers ------------------------------------ */

struct arena {
	void **blocks;
	size_t n, cap;
};

/* A zeroed buffer (as the daemon's memfds are), 64-byte aligned. */
static int arena_carver(void *ctx, size_t nfloats, uint32_t flags, struct carver *cv)
{
	struct arena *a = ctx;
	size_t bytes = (nfloats * sizeof(float) + 63) / 64 * 64;

	(void)flags;
	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 64;
		void **b = realloc(a->blocks, cap * sizeof(*b));
		if (!b)
			return -TDM_ENOMEM;
		a->blocks = b;
		a->cap = cap;
	}
	void *p = aligned_alloc(64, bytes ? bytes : 64);
	if (!p)
		return -TDM_ENOMEM;
	memset(p, 0, bytes);
	a->blocks[a->n++] = p;
	*cv = (struct carver){ .base = p };
	return 0;
}

static void arena_free(struct arena *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->blocks[i]);
	free(a->blocks);
}

/* ---- kernel calls ------------------------------------------------------------- */

static void call_arg(struct tdm_kernel_call *c, const struct slice *s)
{
	c->ptr[c->nargs] = s->p;
	c->len[c->nargs++] = s->len;
}

static int run(tdm_kernel_fn fn, const struct slice *const *args, uint32_t nargs,
               const union tdm_wire_scalar *sc, uint32_t nsc)
{
	struct tdm_kernel_call c = { 0 };

	for (uint32_t i = 0; i < nargs; i++)
		call_arg(&c, args[i]);
	memcpy(c.s, sc, nsc * sizeof(*sc));
	return fn(&c);
}

#define RUN(fn, sc, ...)                                                                           \
	run(fn, (const struct slice *const[]){ __VA_ARGS__ },                                      \
	    sizeof((const struct slice *const[]){ __VA_ARGS__ }) / sizeof(struct slice *), sc,     \
	    sizeof(sc) / sizeof(union tdm_wire_scalar))

#define I64(v) ((union tdm_wire_scalar){ .i64 = (v) })
#define F32(v) ((union tdm_wire_scalar){ .f32 = (v) })

/* ---- the expert threads ------------------------------------------------------- */

struct helper {
	pthread_t th;
	int cpu; /* -1: not pinned */
	struct tdm_kernel_call jobs[MAX_EXPERT_JOBS];
	int njobs, err;
	uint64_t start_ns; /* when it began this step's first expert */
	struct slice y; /* this helper's share of y */
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	_Atomic unsigned gen; /* a new step's jobs are out */
	_Atomic unsigned done; /* helpers that finished this generation */
	bool stop;
} pool = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void pin(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *helper_main(void *arg)
{
	struct helper *h = arg;
	unsigned seen = 0;

	pin(h->cpu);
	for (;;) {
		uint64_t until = now_ns() + SPIN_US * 1000ull;
		while (atomic_load(&pool.gen) == seen && now_ns() < until)
			__builtin_ia32_pause();
		pthread_mutex_lock(&pool.mu);
		while (atomic_load(&pool.gen) == seen && !pool.stop)
			pthread_cond_wait(&pool.cv, &pool.mu);
		bool stop = pool.stop;
		pthread_mutex_unlock(&pool.mu);
		if (stop)
			return NULL;
		seen = atomic_load(&pool.gen);
		h->err = 0;
		h->start_ns = now_ns();
		for (int j = 0; j < h->njobs && !h->err; j++)
			h->err = cpu_moe_expert(&h->jobs[j]);
		atomic_fetch_add(&pool.done, 1);
	}
}

/* ---- one step ------------------------------------------------------------------ */

static void expert_call(struct tdm_kernel_call *c, const struct shape *s, const struct layer *L,
                        int e, const struct slice *y)
{
	const struct slice *args[] = { &L->xn2, &L->gate[e], &L->up[e], &L->down[e],
		                       &L->ids, &L->wts,     y };

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < ARRAY_LEN(args); i++)
		call_arg(c, args[i]);
	c->s[0] = I64(1);
	c->s[1] = I64(s->dm);
	c->s[2] = I64(s->dff);
	c->s[3] = I64(s->topk);
	c->s[4] = I64(e);
}

/* From the router's end to the start of a routed expert: on this thread
 * (own_ns) and on a helper (helper_ns, 0 when none ran one), per step. */
struct dispatch_ns {
	uint64_t own_ns, helper_ns;
};

static int step(const struct shape *s, struct layer *L, struct helper *h, int nthreads, int pos,
                struct dispatch_ns *dn)
{
	int dm = s->dm, qd = qdim(s), kvd = kvdim(s);
	struct slice krow = L->kc, vrow = L->vc;
	union tdm_wire_scalar norm[] = { I64(1), I64(dm), F32(RMS_EPS) };
	union tdm_wire_scalar mq[] = { I64(1), I64(qd), I64(dm), F32(1), F32(0) };
	union tdm_wire_scalar mkv[] = { I64(1), I64(kvd), I64(dm), F32(1), F32(0) };
	union tdm_wire_scalar mo[] = { I64(1), I64(dm), I64(qd), F32(1), F32(0) };
	union tdm_wire_scalar mr[] = { I64(1), I64(s->ne), I64(dm), F32(1), F32(0) };
	union tdm_wire_scalar ropeq[] = { I64(1), I64(s->nh), I64(s->hd), I64(pos),
		                          F32(ROPE_THETA) };
	union tdm_wire_scalar ropek[] = { I64(1), I64(s->nkv), I64(s->hd), I64(pos),
		                          F32(ROPE_THETA) };
	union tdm_wire_scalar attn[] = { I64(1),     I64(s->nh),   I64(s->nkv),
		                         I64(s->hd), I64(pos + 1), I64(s->kv_cap) };
	union tdm_wire_scalar one[] = { F32(1) }, zero[] = { F32(0) };
	union tdm_wire_scalar router[] = { I64(1), I64(s->ne), I64(s->topk) };
	union tdm_wire_scalar none[1];
	int err = 0;

	krow.p += (size_t)pos * kvd;
	krow.len = L->k.len;
	vrow.p += (size_t)pos * kvd;
	vrow.len = L->v.len;
	err |= RUN(cpu_rmsnorm, norm, &L->x, &L->attn.norm1, &L->xn);
	err |= RUN(cpu_sgemm, mq, &L->xn, &L->attn.wq, &L->q);
	err |= RUN(cpu_sgemm, mkv, &L->xn, &L->attn.wk, &L->k);
	err |= RUN(cpu_sgemm, mkv, &L->xn, &L->attn.wv, &L->v);
	err |= RUN(cpu_rope, ropeq, &L->q);
	err |= RUN(cpu_rope, ropek, &L->k);
	err |= run(cpu_copy, (const struct slice *const[]){ &L->k, &krow }, 2, none, 0);
	err |= run(cpu_copy, (const struct slice *const[]){ &L->v, &vrow }, 2, none, 0);
	err |= RUN(cpu_attn_decode, attn, &L->q, &L->kc, &L->vc, &L->att);
	err |= RUN(cpu_sgemm, mo, &L->att, &L->attn.wo, &L->o);
	err |= RUN(cpu_axpy, one, &L->o, &L->x);
	err |= RUN(cpu_rmsnorm, norm, &L->x, &L->attn.norm2, &L->xn2);
	err |= RUN(cpu_sgemm, mr, &L->xn2, &L->wr, &L->logits);
	err |= RUN(cpu_fill, zero, &L->y);
	err |= RUN(cpu_topk_router, router, &L->logits, &L->ids, &L->wts);
	uint64_t routed = now_ns();
	if (err)
		return err;

	/* The routed experts, round robin over the threads (thread 0: this
	 * one, into y itself; helpers into their own zeroed y). */
	const int32_t *ids = (const int32_t *)(const void *)L->ids.p;
	struct tdm_kernel_call mine[MAX_EXPERT_JOBS];
	int nmine = 0;
	for (int t = 1; t < nthreads; t++)
		h[t].njobs = 0;
	for (int j = 0; j < s->topk; j++) {
		int t = j % nthreads;
		if (t == 0)
			expert_call(&mine[nmine++], s, L, ids[j], &L->y);
		else
			expert_call(&h[t].jobs[h[t].njobs++], s, L, ids[j], &h[t].y);
	}
	int busy = 0;
	for (int t = 1; t < nthreads; t++)
		if (h[t].njobs) {
			memset(h[t].y.p, 0, h[t].y.len);
			busy++;
		}
	atomic_store(&pool.done, 0);
	if (busy) {
		pthread_mutex_lock(&pool.mu);
		atomic_fetch_add(&pool.gen, 1);
		pthread_cond_broadcast(&pool.cv);
		pthread_mutex_unlock(&pool.mu);
	}
	dn->own_ns = now_ns() - routed;
	for (int j = 0; j < nmine && !err; j++)
		err = cpu_moe_expert(&mine[j]);
	/* Every helper takes each generation, with or without jobs. */
	while (busy && atomic_load(&pool.done) < (unsigned)(nthreads - 1))
		__builtin_ia32_pause();
	dn->helper_ns = 0;
	for (int t = 1; t < nthreads && !err; t++) {
		if (h[t].njobs && !dn->helper_ns)
			dn->helper_ns = h[t].start_ns - routed;
		err = h[t].err;
		if (h[t].njobs && !err)
			err = RUN(cpu_axpy, one, &h[t].y, &L->y);
	}
	if (!err)
		err = RUN(cpu_axpy, one, &L->y, &L->x);
	return err;
}

/* ---- main -------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The q-quantile of v[0..n) (sorts v), in microseconds; 0 when n is 0. */
static double pct_us(uint64_t *v, int n, double q)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	int i = (int)(q * n);
	return v[i < n ? i : n - 1] / 1e3;
}

static double median_us(uint64_t *v, int n)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0) / 1e3;
}

/* The n-th CPU of this process's set (-1 when there are fewer). */
static int nth_cpu(int n)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set))
		return -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &set) && n-- == 0)
			return c;
	return -1;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: moe_direct [--steps N] [--threads N] [--quiet] [--d-model N] [--d-ff N]\n"
	        "                  [--heads N] [--kv-heads N] [--head-dim N] [--experts N]\n"
	        "                  [--top-k N] [--prompt N] [--kv-cap N]\n"
	        "examples/llm_layer's MoE decode step with its kernels called directly on\n"
	        "--threads cores (default 2), checked against the same reference.\n");
}

static int parse_args(int argc, char **argv, struct shape *s, int *nthreads, bool *quiet)
{
	static const struct option opts[] = {
		{ "steps", required_argument, NULL, 0 },
		{ "threads", required_argument, NULL, 0 },
		{ "d-model", required_argument, NULL, 0 },
		{ "d-ff", required_argument, NULL, 0 },
		{ "heads", required_argument, NULL, 0 },
		{ "kv-heads", required_argument, NULL, 0 },
		{ "head-dim", required_argument, NULL, 0 },
		{ "experts", required_argument, NULL, 0 },
		{ "top-k", required_argument, NULL, 0 },
		{ "prompt", required_argument, NULL, 0 },
		{ "kv-cap", required_argument, NULL, 0 },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int *dest[] = { &s->steps, nthreads, &s->dm,   &s->dff,    &s->nh,    &s->nkv,
		        &s->hd,    &s->ne,   &s->topk, &s->prompt, &s->kv_cap };
	int c, idx;

	while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
		if (c == 'q') {
			*quiet = true;
			continue;
		}
		if (c == 'h') {
			usage(stdout);
			return 1;
		}
		char *end;
		long v = c == 0 ? strtol(optarg, &end, 10) : -1;
		if (c != 0 || *optarg == '\0' || *end != '\0' ||
		    v < (idx == 9 ? 0 : 1) /* --prompt may be 0 */ || v > 65536) {
			usage(stderr);
			return -1;
		}
		*dest[idx] = (int)v;
	}
	const char *why = NULL;
	if (optind < argc)
		why = "unexpected argument";
	else if (s->nh % s->nkv || s->hd % 2)
		why = "--heads must be a multiple of --kv-heads, --head-dim even";
	else if (s->topk > s->ne || s->topk > MAX_EXPERT_JOBS)
		why = "--top-k must not exceed --experts (nor 64)";
	else if (s->prompt + s->steps > s->kv_cap)
		why = "--prompt plus --steps must fit in --kv-cap";
	else if (*nthreads > MAX_THREADS)
		why = "--threads at most 16";
	if (why)
		fprintf(stderr, "moe_direct: %s\n", why);
	return why ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct shape s = SHAPE_DEFAULT;
	int nthreads = 2;
	bool quiet = false;
	int rc = parse_args(argc, argv, &s, &nthreads, &quiet);

	if (rc)
		return rc > 0 ? 0 : 2;

	struct arena arena = { 0 };
	struct layer_alloc a = { arena_carver, &arena };
	struct layer L = { 0 };
	struct ref R = { 0 };
	struct helper h[MAX_THREADS] = { 0 };
	uint64_t seed = SEED, *step_ns = calloc((size_t)s.steps, sizeof(*step_ns));
	uint64_t *own_ns = calloc((size_t)s.steps, sizeof(*own_ns));
	uint64_t *helper_ns = calloc((size_t)s.steps, sizeof(*helper_ns));
	double worst = 0;
	int started = 1, done = 0;

	rc = 1;
	kernels_cpu_init(); /* one BLAS thread per call, as in the daemon */
	if (!step_ns || !own_ns || !helper_ns || alloc_weights(&a, &s, &L, &seed) ||
	    alloc_state(&a, &s, &L, &seed) || check(ref_alloc(&s, &L, &R), "reference"))
		goto out;
	/* The CPUs before this thread is pinned (a helper inherits its mask). */
	for (int t = 0; t < nthreads; t++)
		h[t].cpu = nth_cpu(t);
	pin(h[0].cpu);
	for (int t = 1; t < nthreads; t++) {
		if (check(layer_slice(&a, (size_t)s.dm, 0, &h[t].y), "helper y") ||
		    pthread_create(&h[t].th, NULL, helper_main, &h[t]))
			goto out;
		started++;
	}
	if (!quiet)
		printf("moe_direct: d_model %d, %d heads (%d kv) of %d, MoE %d experts top-%d d_ff "
		       "%d; prompt %d, kv cap %d, %d steps; %d threads\n",
		       s.dm, s.nh, s.nkv, s.hd, s.ne, s.topk, s.dff, s.prompt, s.kv_cap, s.steps,
		       nthreads);
	int nhelped = 0;
	for (; done < s.steps; done++) {
		struct dispatch_ns dn = { 0, 0 };
		uint64_t t0 = now_ns();
		int err = step(&s, &L, h, started, s.prompt + done, &dn);
		step_ns[done] = now_ns() - t0;
		if (check(err, "step"))
			goto out;
		own_ns[done] = dn.own_ns;
		if (dn.helper_ns)
			helper_ns[nhelped++] = dn.helper_ns;
		bool tie;
		struct error e;
		int bad = ref_check(&s, &L, &R, done, &e, &tie);
		worst = fmax(worst, e.rel);
		if (!quiet)
			printf("step %d pos %d: %8.1f us, max abs err %.2e, max rel err %.2e%s\n",
			       done, s.prompt + done, step_ns[done] / 1e3, e.abs, e.rel,
			       tie ? " (near tie, the kernels' order kept)" : "");
		if (bad)
			goto out;
	}
	printf("step latency (kernels called directly): median %.1f us, min %.1f us, max %.1f us\n",
	       median_us(step_ns, done), pct_us(step_ns, done, 0), pct_us(step_ns, done, 1));
	/* What moe_layer.sh compares with the daemon's dispatch (path=...). */
	printf("expert start after the router: same_thread median %.1f us p90 %.1f us n %d, "
	       "other_thread median %.1f us p90 %.1f us n %d\n",
	       median_us(own_ns, done), pct_us(own_ns, done, 0.9), done,
	       median_us(helper_ns, nhelped), pct_us(helper_ns, nhelped, 0.9), nhelped);
	printf("result: %d steps correct (max rel err %.2e)\n", done, worst);
	rc = 0;
out:
	if (rc)
		printf("result: FAILED\n");
	pthread_mutex_lock(&pool.mu);
	pool.stop = true;
	pthread_cond_broadcast(&pool.cv);
	pthread_mutex_unlock(&pool.mu);
	for (int t = 1; t < started; t++)
		pthread_join(h[t].th, NULL);
	ref_free(&R);
	free(L.gate);
	free(L.up);
	free(L.down);
	free(step_ns);
	free(own_ns);
	free(helper_ns);
	arena_free(&arena);
	return rc;
}
