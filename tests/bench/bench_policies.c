/* Scheduling policies on real work: every registered policy (policy_list())
 * drives the engine in-process, as the daemon does, on every CPU core plus
 * the OpenCL devices found (PoCL here), with residency and cost models.
 *
 * Workloads:
 *   cholesky  tiled Cholesky of an N x N SPD matrix in T x T tiles of nb
 *             (potrf / trsm / syrk / gemm_nt, right-looking), one buffer per
 *             tile, dependencies from the access modes; checked numerically
 *             (L L^T x = A x), so a wrong schedule shows;
 *   randdag   a seeded random layered DAG of sgemm tasks of mixed sizes
 *             (64..512) over shared buffers, checked against a sequential
 *             run.
 * Per policy and workload: one warm-up run (it teaches the cost models, a
 * fresh profiler per policy from one calibration), then a measured run:
 *   BENCH makespan_ms            submission to the last task's end
 *   BENCH makespan_over_lb       makespan / max(critical path, area bound)
 *                                of the DAG, on the models' own predictions
 *   BENCH bytes_moved            host<->device bytes over the run
 *   BENCH decision_us_per_task   time spent inside the policy per task
 * and a decision-only microbenchmark on fake devices (workload=synthetic).
 *
 * Knobs (environment): BENCH_CHOL_TILES (T), BENCH_CHOL_NB (nb),
 * BENCH_DAG_TASKS, BENCH_SYNTH_TASKS, BENCH_POLICIES (comma-separated
 * names: only these), BENCH_STATE_DIR (calibration cache; default a
 * temporary directory, removed at the end), BENCH_RUN_TIMEOUT_S (a run that
 * has not completed by then is reported as stuck and its policy left; 20).
 * Exits 1 when a run fails, gives a wrong result or gets stuck. */
#include <cblas.h>
#include <glpk.h>
#include <hwloc.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "engine/engine.h"
#include "placement/plan.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

#define MAX_DEVS 64
#define CHOL_RANK 128 /* A = M M^T / CHOL_RANK + I, M is N x CHOL_RANK */
#define CHOL_TOL 1e-3
#define DAG_TOL 1e-3
#define SYNTH_DEVS 4
#define SYNTH_WINDOW 256 /* a synthetic task's predecessors are among the 256 before it */
#define SPIN_US 50 /* the daemon's default */

static bool failed; /* a run went wrong: exit 1 at the end */
static long run_timeout_s; /* a run that takes longer is stuck */

static long env_long(const char *name, long def, long lo, long hi)
{
	const char *v = getenv(name);
	char *end;
	if (!v || !*v)
		return def;
	long x = strtol(v, &end, 10);
	if (*end || x < lo || x > hi) {
		fprintf(stderr, "bench_policies: %s=%s: want %ld..%ld; using %ld\n", name, v, lo,
		        hi, def);
		return def;
	}
	return x;
}

/* ---- reproducible random numbers ---------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float rng_float(void) /* uniform in [-1, 1) */
{
	return (float)((double)(rng_next() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uint32_t rng_below(uint32_t n)
{
	return (uint32_t)(rng_next() % n);
}

/* ---- the policy wrapper: time spent inside the policy ------------------------- *
 * A copy of the policy's ops whose hooks call the real ones between two
 * clock reads. pick_next calls that return NULL are a worker polling for
 * work, not a decision: counted apart. (The two clock reads add some 40 ns
 * to each hook.) */

struct wrap {
	const struct policy_ops *real;
	void *inner;
	_Atomic uint64_t ns, calls; /* decisions */
	_Atomic uint64_t idle_ns, idle_calls; /* pick_next -> NULL */
};

static const struct policy_ops *wrap_next_real; /* what the next w_init wraps */
static struct wrap *wrap_last; /* what the last w_init made */

static void wrap_add(struct wrap *w, uint64_t t0)
{
	atomic_fetch_add_explicit(&w->ns, clock_monotonic_ns() - t0, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->calls, 1, memory_order_relaxed);
}

static void wrap_reset(struct wrap *w)
{
	atomic_store(&w->ns, 0);
	atomic_store(&w->calls, 0);
	atomic_store(&w->idle_ns, 0);
	atomic_store(&w->idle_calls, 0);
}

static int w_init(const struct policy_params *p, void **priv)
{
	struct wrap *w = calloc(1, sizeof(*w));
	if (!w)
		return -TDM_ENOMEM;
	w->real = wrap_next_real;
	int err = w->real->init(p, &w->inner);
	if (err) {
		free(w);
		return err;
	}
	wrap_last = w;
	*priv = w;
	return 0;
}

static void w_fini(void *priv)
{
	struct wrap *w = priv;
	if (w->real->fini)
		w->real->fini(w->inner);
	if (wrap_last == w)
		wrap_last = NULL;
	free(w);
}

static void w_graph_submitted(void *priv, struct engine_graph *g)
{
	struct wrap *w = priv;
	uint64_t t0 = clock_monotonic_ns();
	w->real->graph_submitted(w->inner, g);
	wrap_add(w, t0);
}

static void w_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct wrap *w = priv;
	uint64_t t0 = clock_monotonic_ns();
	w->real->tasks_ready(w->inner, tasks, n, worker);
	wrap_add(w, t0);
}

static struct engine_task *w_pick_next(void *priv, unsigned worker)
{
	struct wrap *w = priv;
	uint64_t t0 = clock_monotonic_ns();
	struct engine_task *t = w->real->pick_next(w->inner, worker);
	if (t) {
		wrap_add(w, t0);
	} else {
		atomic_fetch_add_explicit(&w->idle_ns, clock_monotonic_ns() - t0,
		                          memory_order_relaxed);
		atomic_fetch_add_explicit(&w->idle_calls, 1, memory_order_relaxed);
	}
	return t;
}

static void w_task_done(void *priv, struct engine_task *t, unsigned worker)
{
	struct wrap *w = priv;
	uint64_t t0 = clock_monotonic_ns();
	w->real->task_done(w->inner, t, worker);
	wrap_add(w, t0);
}

static void w_graph_finished(void *priv, struct engine_graph *g)
{
	struct wrap *w = priv;
	uint64_t t0 = clock_monotonic_ns();
	w->real->graph_finished(w->inner, g);
	wrap_add(w, t0);
}

/* The rest only forward. */
static size_t w_peek(void *priv, unsigned worker, struct engine_task **out, size_t max)
{
	struct wrap *w = priv;
	return w->real->peek(w->inner, worker, out, max);
}

static int w_flow_added(void *priv, struct engine_flow *flow)
{
	struct wrap *w = priv;
	return w->real->flow_added(w->inner, flow);
}

static void w_flow_gone(void *priv, struct engine_flow *flow)
{
	struct wrap *w = priv;
	w->real->flow_gone(w->inner, flow);
}

/* Optional hooks stay NULL where the real policy has none. */
static struct policy_ops wrap_ops(const struct policy_ops *r)
{
	return (struct policy_ops){
		.abi_version = POLICY_ABI_VERSION,
		.name = r->name,
		.init = w_init,
		.fini = w_fini,
		.graph_submitted = r->graph_submitted ? w_graph_submitted : NULL,
		.tasks_ready = w_tasks_ready,
		.pick_next = w_pick_next,
		.task_done = r->task_done ? w_task_done : NULL,
		.graph_finished = r->graph_finished ? w_graph_finished : NULL,
		.peek = r->peek ? w_peek : NULL,
		.flow_added = r->flow_added ? w_flow_added : NULL,
		.flow_gone = r->flow_gone ? w_flow_gone : NULL,
	};
}

/* ---- workloads: tasks over buffers, dependencies from the access modes ------- */

struct wtask {
	enum kernel_id kernel;
	uint8_t nargs;
	uint32_t buf[TDM_MAX_ARGS];
	union tdm_wire_scalar s[TDM_MAX_SCALARS];
};

struct workload {
	const char *name;
	uint32_t nbufs;
	float **host; /* each buffer's memory (page-aligned) */
	uint64_t *bytes;
	struct res_data *data; /* residency, registered once */
	float **init; /* the contents every run starts from */
	uint32_t ntasks;
	struct wtask *tasks;
	/* The DAG, as the dependency rules make it (CSR); edge_bytes: data the
	 * consumer reads that the producer wrote. */
	uint32_t *succ_off, *succ, *ndeps;
	double *edge_bytes;
	int32_t *prio; /* bottom level in tasks: what an application might give */
	/* Checks the result of a run; returns the relative error. */
	double (*verify)(const struct workload *w);
	double tol; /* what verify may return */
	void *ctx;
	uint32_t nb, tiles; /* cholesky */
	float *a; /* cholesky: the matrix */
	float **ref; /* randdag: the sequential run's result */
	double gflop;
};

static float *alloc_floats(size_t n)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, n * sizeof(float) + 64) != 0) {
		fprintf(stderr, "bench_policies: out of memory\n");
		exit(1);
	}
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p) {
		fprintf(stderr, "bench_policies: out of memory\n");
		exit(1);
	}
	return p;
}

struct pred {
	uint32_t u;
	double bytes;
};

static void add_pred(struct pred *p, size_t *n, uint32_t u, double bytes)
{
	for (size_t i = 0; i < *n; i++) {
		if (p[i].u == u) {
			p[i].bytes += bytes;
			return;
		}
	}
	p[(*n)++] = (struct pred){ u, bytes };
}

struct readers {
	uint32_t *v;
	size_t n, cap;
};

/* Sequential semantics, as a client's graph has them: a read follows the
 * buffer's last writer (data moves along that edge), a write follows the
 * last writer and every reader since. */
static void build_deps(struct workload *w)
{
	int64_t *last = xcalloc(w->nbufs, sizeof(int64_t));
	struct readers *rd = xcalloc(w->nbufs, sizeof(*rd));
	uint32_t *eu = NULL, *ev = NULL;
	double *eb = NULL;
	size_t ne = 0, ecap = 0;

	for (uint32_t b = 0; b < w->nbufs; b++)
		last[b] = -1;
	for (uint32_t v = 0; v < w->ntasks; v++) {
		const struct wtask *t = &w->tasks[v];
		const struct kernel_def *k = kernel_by_id(t->kernel);
		struct pred p[64];
		size_t np = 0;
		for (unsigned a = 0; a < t->nargs; a++) {
			uint32_t b = t->buf[a];
			uint8_t m = k->arg_modes[a];
			if ((m & TDM_R) && last[b] >= 0)
				add_pred(p, &np, (uint32_t)last[b], (double)w->bytes[b]);
			if (m & TDM_W) {
				if (last[b] >= 0)
					add_pred(p, &np, (uint32_t)last[b], 0);
				for (size_t i = 0; i < rd[b].n && np < 60; i++)
					if (rd[b].v[i] != v)
						add_pred(p, &np, rd[b].v[i], 0);
			}
		}
		for (unsigned a = 0; a < t->nargs; a++) {
			uint32_t b = t->buf[a];
			if (k->arg_modes[a] & TDM_W) {
				last[b] = v;
				rd[b].n = 0;
			} else {
				if (rd[b].n == rd[b].cap) {
					rd[b].cap = rd[b].cap ? 2 * rd[b].cap : 8;
					rd[b].v = realloc(rd[b].v, rd[b].cap * sizeof(uint32_t));
					if (!rd[b].v)
						exit(1);
				}
				rd[b].v[rd[b].n++] = v;
			}
		}
		for (size_t i = 0; i < np; i++) {
			if (ne == ecap) {
				ecap = ecap ? 2 * ecap : 1024;
				eu = realloc(eu, ecap * sizeof(*eu));
				ev = realloc(ev, ecap * sizeof(*ev));
				eb = realloc(eb, ecap * sizeof(*eb));
				if (!eu || !ev || !eb)
					exit(1);
			}
			eu[ne] = p[i].u;
			ev[ne] = v;
			eb[ne++] = p[i].bytes;
		}
	}
	w->succ_off = xcalloc(w->ntasks + 1, sizeof(uint32_t));
	w->succ = xcalloc(ne, sizeof(uint32_t));
	w->edge_bytes = xcalloc(ne, sizeof(double));
	w->ndeps = xcalloc(w->ntasks, sizeof(uint32_t));
	for (size_t i = 0; i < ne; i++) {
		w->succ_off[eu[i] + 1]++;
		w->ndeps[ev[i]]++;
	}
	for (uint32_t v = 0; v < w->ntasks; v++)
		w->succ_off[v + 1] += w->succ_off[v];
	uint32_t *cur = xcalloc(w->ntasks + 1, sizeof(uint32_t));
	memcpy(cur, w->succ_off, (w->ntasks + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < ne; i++) {
		w->edge_bytes[cur[eu[i]]] = eb[i];
		w->succ[cur[eu[i]]++] = ev[i];
	}
	/* Bottom levels: tasks come in program order, so successors have
	 * larger indices. */
	w->prio = xcalloc(w->ntasks, sizeof(int32_t));
	for (uint32_t v = w->ntasks; v-- > 0;) {
		int32_t best = 0;
		for (uint32_t i = w->succ_off[v]; i < w->succ_off[v + 1]; i++)
			if (w->prio[w->succ[i]] > best)
				best = w->prio[w->succ[i]];
		w->prio[v] = best + 1;
	}
	free(cur);
	free(eu);
	free(ev);
	free(eb);
	for (uint32_t b = 0; b < w->nbufs; b++)
		free(rd[b].v);
	free(rd);
	free(last);
}

static void set_call(const struct workload *w, const struct wtask *t, struct tdm_kernel_call *c)
{
	memset(c, 0, sizeof(*c));
	c->nargs = t->nargs;
	for (unsigned a = 0; a < t->nargs; a++) {
		c->ptr[a] = w->host[t->buf[a]];
		c->len[a] = w->bytes[t->buf[a]];
	}
	memcpy(c->s, t->s, sizeof(c->s));
}

static void workload_reset(const struct workload *w)
{
	for (uint32_t b = 0; b < w->nbufs; b++)
		memcpy(w->host[b], w->init[b], w->bytes[b]);
}

/* ---- cholesky ----------------------------------------------------------------- */

static uint32_t tile_id(uint32_t i, uint32_t j, uint32_t t)
{
	return i * t + j;
}

/* L L^T x against A x for a random x, in double: O(N^2), and any missing
 * or misordered update shows far above rounding. */
static double chol_verify(const struct workload *w)
{
	uint32_t nb = w->nb, t = w->tiles, n = nb * t;
	double *x = xcalloc(n, sizeof(double)), *y = xcalloc(n, sizeof(double));
	double *z = xcalloc(n, sizeof(double)), err = 0, norm = 0;
	uint64_t saved = rng_state;

	rng_state = 99;
	for (uint32_t i = 0; i < n; i++)
		x[i] = rng_float();
	rng_state = saved;
	/* z = L^T x: z[c] = sum_{r >= c} L[r][c] x[r] */
	for (uint32_t r = 0; r < n; r++) {
		for (uint32_t c = 0; c <= r; c++) {
			const float *tile = w->host[tile_id(r / nb, c / nb, t)];
			z[c] += (double)tile[(r % nb) * nb + c % nb] * x[r];
		}
	}
	/* y = L z - A x */
	for (uint32_t r = 0; r < n; r++) {
		double s = 0, ax = 0;
		for (uint32_t c = 0; c <= r; c++) {
			const float *tile = w->host[tile_id(r / nb, c / nb, t)];
			s += (double)tile[(r % nb) * nb + c % nb] * z[c];
		}
		for (uint32_t c = 0; c < n; c++)
			ax += (double)w->a[(size_t)r * n + c] * x[c];
		y[r] = s - ax;
		err += y[r] * y[r];
		norm += ax * ax;
	}
	free(x);
	free(y);
	free(z);
	return sqrt(err / norm);
}

static void push_task(struct workload *w, uint32_t *cap, enum kernel_id k, uint8_t nargs,
                      const uint32_t *bufs, int64_t nb)
{
	if (w->ntasks == *cap) {
		*cap = *cap ? 2 * *cap : 256;
		w->tasks = realloc(w->tasks, *cap * sizeof(*w->tasks));
		if (!w->tasks)
			exit(1);
	}
	struct wtask *t = &w->tasks[w->ntasks++];
	memset(t, 0, sizeof(*t));
	t->kernel = k;
	t->nargs = nargs;
	if (nargs)
		memcpy(t->buf, bufs, nargs * sizeof(uint32_t));
	t->s[0].i64 = nb;
}

static void chol_build(struct workload *w, uint32_t t, uint32_t nb)
{
	uint32_t n = t * nb, cap = 0;
	memset(w, 0, sizeof(*w));
	w->name = "cholesky";
	w->nb = nb;
	w->tiles = t;
	w->verify = chol_verify;
	w->tol = CHOL_TOL;
	w->gflop = (double)n * n * n / 3e9;

	/* A = M M^T / r + I: SPD, condition number about 20, with off-diagonal
	 * weight far above the diagonal's, so updates matter. */
	float *m = alloc_floats((size_t)n * CHOL_RANK);
	w->a = alloc_floats((size_t)n * n);
	rng_state = 1;
	for (size_t i = 0; i < (size_t)n * CHOL_RANK; i++)
		m[i] = rng_float();
	cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (blasint)n, CHOL_RANK,
	            1.0f / CHOL_RANK, m, CHOL_RANK, 0.0f, w->a, (blasint)n);
	for (size_t i = 0; i < n; i++) {
		w->a[i * n + i] += 1.0f;
		for (size_t j = 0; j < i; j++)
			w->a[j * n + i] = w->a[i * n + j];
	}
	free(m);

	w->nbufs = t * t;
	w->host = xcalloc(w->nbufs, sizeof(float *));
	w->init = xcalloc(w->nbufs, sizeof(float *));
	w->bytes = xcalloc(w->nbufs, sizeof(uint64_t));
	for (uint32_t i = 0; i < t; i++) {
		for (uint32_t j = 0; j < t; j++) {
			uint32_t b = tile_id(i, j, t);
			w->bytes[b] = (uint64_t)nb * nb * sizeof(float);
			w->host[b] = alloc_floats((size_t)nb * nb);
			w->init[b] = alloc_floats((size_t)nb * nb);
			for (uint32_t r = 0; r < nb; r++)
				memcpy(w->init[b] + (size_t)r * nb,
				       w->a + (size_t)(i * nb + r) * n + j * nb,
				       nb * sizeof(float));
		}
	}
	for (uint32_t k = 0; k < t; k++) {
		uint32_t kk = tile_id(k, k, t);
		push_task(w, &cap, KERNEL_SPOTRF, 1, &kk, nb);
		for (uint32_t i = k + 1; i < t; i++)
			push_task(w, &cap, KERNEL_STRSM, 2, (uint32_t[]){ kk, tile_id(i, k, t) },
			          nb);
		for (uint32_t i = k + 1; i < t; i++) {
			push_task(w, &cap, KERNEL_SSYRK, 2,
			          (uint32_t[]){ tile_id(i, k, t), tile_id(i, i, t) }, nb);
			for (uint32_t j = k + 1; j < i; j++)
				push_task(w, &cap, KERNEL_SGEMM_NT, 3,
				          (uint32_t[]){ tile_id(i, k, t), tile_id(j, k, t),
				                        tile_id(i, j, t) },
				          nb);
		}
	}
	build_deps(w);
}

/* ---- randdag ------------------------------------------------------------------ */

static const int64_t dag_sizes[] = { 64, 128, 192, 256, 384, 512 };
#define NSIZES (sizeof(dag_sizes) / sizeof(dag_sizes[0]))
#define DAG_LAYERS 12
#define DAG_POOL 4 /* initial inputs per size */

static double dag_verify(const struct workload *w)
{
	double worst = 0;
	for (uint32_t b = 0; b < w->nbufs; b++) {
		double err = 0, norm = 0;
		for (uint64_t i = 0; i < w->bytes[b] / sizeof(float); i++) {
			double d = (double)w->host[b][i] - w->ref[b][i];
			err += d * d;
			norm += (double)w->ref[b][i] * w->ref[b][i];
		}
		double rel = norm > 0 ? sqrt(err / norm) : sqrt(err);
		worst = rel > worst ? rel : worst;
	}
	return worst;
}

static uint32_t dag_new_buf(struct workload *w, uint32_t *cap, int64_t s, bool random)
{
	if (w->nbufs == *cap) {
		*cap = *cap ? 2 * *cap : 256;
		w->host = realloc(w->host, *cap * sizeof(float *));
		w->init = realloc(w->init, *cap * sizeof(float *));
		w->bytes = realloc(w->bytes, *cap * sizeof(uint64_t));
		if (!w->host || !w->init || !w->bytes)
			exit(1);
	}
	uint32_t b = w->nbufs++;
	size_t n = (size_t)(s * s);
	w->bytes[b] = n * sizeof(float);
	w->host[b] = alloc_floats(n);
	w->init[b] = alloc_floats(n);
	for (size_t i = 0; i < n; i++)
		w->init[b][i] = random ? rng_float() : 0.0f;
	return b;
}

/* Layers of sgemm tasks C = alpha A B + beta C, square s x s with s per
 * task; A and B mostly come from the last layers' outputs of the same size
 * (the data that moves), C is new (beta 0) or, one time in four, an older
 * output updated in place (beta 1: write-after-read and write-after-write
 * edges). alpha = sqrt(3/s) keeps values near unit scale. */
static void dag_build(struct workload *w, uint32_t ntasks)
{
	uint32_t bcap = 0, tcap = 0;
	uint32_t *outs[NSIZES];
	size_t nouts[NSIZES] = { 0 }, layer_start[NSIZES][DAG_LAYERS + 1];
	uint32_t pool[NSIZES][DAG_POOL];

	memset(w, 0, sizeof(*w));
	w->name = "randdag";
	w->verify = dag_verify;
	w->tol = DAG_TOL;
	rng_state = 2;
	for (size_t z = 0; z < NSIZES; z++) {
		outs[z] = xcalloc(ntasks, sizeof(uint32_t));
		for (int p = 0; p < DAG_POOL; p++)
			pool[z][p] = dag_new_buf(w, &bcap, dag_sizes[z], true);
	}
	uint32_t per_layer = (ntasks + DAG_LAYERS - 1) / DAG_LAYERS;
	for (uint32_t l = 0; l < DAG_LAYERS && w->ntasks < ntasks; l++) {
		for (size_t z = 0; z < NSIZES; z++)
			layer_start[z][l] = nouts[z];
		for (uint32_t i = 0; i < per_layer && w->ntasks < ntasks; i++) {
			size_t z = rng_below(NSIZES);
			int64_t s = dag_sizes[z];
			/* Outputs of the two layers before this one. */
			size_t from = l >= 2 ? layer_start[z][l - 2] : 0, to = layer_start[z][l];
			uint32_t in[2];
			for (int a = 0; a < 2; a++)
				in[a] = to > from && rng_below(10) < 7
				                ? outs[z][from + rng_below((uint32_t)(to - from))]
				                : pool[z][rng_below(DAG_POOL)];
			bool update = to > 0 && rng_below(4) == 0;
			uint32_t c = update ? outs[z][rng_below((uint32_t)to)] : UINT32_MAX;
			if (c == in[0] || c == in[1])
				update = false;
			if (!update)
				c = dag_new_buf(w, &bcap, s, false);
			if (!update)
				outs[z][nouts[z]++] = c;
			push_task(w, &tcap, KERNEL_SGEMM, 3, (uint32_t[]){ in[0], in[1], c }, s);
			struct wtask *t = &w->tasks[w->ntasks - 1];
			t->s[1].i64 = t->s[2].i64 = s;
			t->s[3].f32 = sqrtf(3.0f / (float)s);
			t->s[4].f32 = update ? 1.0f : 0.0f;
			w->gflop += 2.0 * (double)s * s * s / 1e9;
		}
	}
	for (size_t z = 0; z < NSIZES; z++)
		free(outs[z]);
	build_deps(w);

	/* The reference: the tasks in program order on this thread. */
	workload_reset(w);
	for (uint32_t v = 0; v < w->ntasks; v++) {
		struct tdm_kernel_call call;
		set_call(w, &w->tasks[v], &call);
		kernel_by_id(KERNEL_SGEMM)->cpu(&call);
	}
	w->ref = xcalloc(w->nbufs, sizeof(float *));
	for (uint32_t b = 0; b < w->nbufs; b++) {
		w->ref[b] = alloc_floats(w->bytes[b] / sizeof(float));
		memcpy(w->ref[b], w->host[b], w->bytes[b]);
	}
}

static void workload_register(struct workload *w, struct residency *res)
{
	w->data = xcalloc(w->nbufs, sizeof(struct res_data));
	for (uint32_t b = 0; b < w->nbufs; b++)
		residency_data_init(res, &w->data[b], w->host[b], w->bytes[b], b + 1, false);
}

static void workload_free(struct workload *w, struct residency *res)
{
	for (uint32_t b = 0; b < w->nbufs; b++) {
		if (w->data)
			residency_data_fini(res, &w->data[b]);
		free(w->host[b]);
		free(w->init[b]);
		if (w->ref)
			free(w->ref[b]);
	}
	free(w->data);
	free(w->host);
	free(w->init);
	free(w->ref);
	free(w->bytes);
	free(w->tasks);
	free(w->succ_off);
	free(w->succ);
	free(w->edge_bytes);
	free(w->ndeps);
	free(w->prio);
	free(w->a);
}

/* ---- running a graph ---------------------------------------------------------- */

struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	struct waiter *wt = ctx;
	(void)g;
	pthread_mutex_lock(&wt->lock);
	wt->done = true;
	pthread_cond_signal(&wt->cond);
	pthread_mutex_unlock(&wt->lock);
}

static struct engine_graph *make_graph(const struct workload *w, struct engine_flow *flow,
                                       bool with_data)
{
	struct engine_graph *g = xcalloc(1, sizeof(*g));
	uint32_t ne = w->succ_off[w->ntasks];
	g->flow = flow;
	g->ntasks = w->ntasks;
	g->tasks = xcalloc(w->ntasks, sizeof(*g->tasks));
	g->succ_off = xcalloc(w->ntasks + 1, sizeof(uint32_t));
	g->succ = xcalloc(ne + 1, sizeof(uint32_t));
	memcpy(g->succ_off, w->succ_off, (w->ntasks + 1) * sizeof(uint32_t));
	memcpy(g->succ, w->succ, ne * sizeof(uint32_t));
	for (uint32_t v = 0; v < w->ntasks; v++) {
		struct engine_task *t = &g->tasks[v];
		const struct wtask *wt = &w->tasks[v];
		t->graph = g;
		t->index = v;
		t->kernel = kernel_by_id(wt->kernel);
		t->priority = w->prio[v];
		atomic_store(&t->ndeps, w->ndeps[v]);
		set_call(w, wt, &t->call);
		for (unsigned a = 0; a < wt->nargs && with_data; a++)
			t->data[a] = &w->data[wt->buf[a]];
		t->kernel->features(&t->call, &t->feat);
	}
	return g;
}

struct machine {
	hwloc_topology_t topo;
	struct backend_device devs[MAX_DEVS];
	size_t ndev, ncpu;
	struct residency res;
	struct calibration cal;
};

struct run_result {
	double makespan_ns;
	uint64_t bytes_moved;
	double decision_ns;
	uint64_t decisions, idle_polls;
	double err;
	int status;
	uint64_t tasks_per_dev[MAX_DEVS];
};

static uint64_t bytes_moved(struct residency *res)
{
	uint64_t sum = 0;
	for (unsigned n = 0; n < res->nnodes; n++) {
		struct res_node_stats st;
		residency_node_stats(res, n, &st);
		sum += st.bytes_in + st.bytes_out;
	}
	return sum;
}

/* Runs the workload once. NULL when it completed; the graph when it did
 * not within run_timeout_s (a policy or engine that loses tasks): the caller
 * frees it once the engine is destroyed. */
static struct engine_graph *run_workload(struct machine *m, struct engine *e,
                                         struct engine_flow *flow, struct waiter *wt,
                                         const struct workload *w, struct run_result *out)
{
	uint64_t before[MAX_DEVS];

	memset(out, 0, sizeof(*out));
	workload_reset(w);
	struct engine_graph *g = make_graph(w, flow, true);
	for (size_t i = 0; i < m->ndev; i++)
		before[i] = atomic_load(&engine_device(e, i)->tasks_run);
	uint64_t moved0 = bytes_moved(&m->res);
	if (wrap_last)
		wrap_reset(wrap_last);
	wt->done = false;
	engine_submit(e, g);
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline); /* the condition variable's clock */
	deadline.tv_sec += run_timeout_s;
	bool done;
	pthread_mutex_lock(&wt->lock);
	while (!wt->done && pthread_cond_timedwait(&wt->cond, &wt->lock, &deadline) == 0)
		;
	done = wt->done;
	pthread_mutex_unlock(&wt->lock);
	if (!done) {
		out->status = -TDM_ETIMEDOUT;
		return g;
	}

	uint64_t last = g->submit_ns;
	for (uint32_t v = 0; v < g->ntasks; v++)
		last = g->tasks[v].end_ns > last ? g->tasks[v].end_ns : last;
	out->makespan_ns = (double)(last - g->submit_ns);
	out->bytes_moved = bytes_moved(&m->res) - moved0;
	out->status = atomic_load(&g->status);
	if (wrap_last) {
		out->decision_ns = (double)atomic_load(&wrap_last->ns);
		out->decisions = atomic_load(&wrap_last->calls);
		out->idle_polls = atomic_load(&wrap_last->idle_calls);
	}
	for (size_t i = 0; i < m->ndev; i++)
		out->tasks_per_dev[i] = atomic_load(&engine_device(e, i)->tasks_run) - before[i];
	engine_graph_free_arrays(g);
	free(g);
	out->err = out->status ? INFINITY : w->verify(w);
	return NULL;
}

/* ---- the lower bound ------------------------------------------------------------
 * On the cost models' own predictions after the warm-up (not on measured
 * times): the ratio says how far a schedule is from the best any schedule
 * could do if the models were right. */

static int lower_bound(struct machine *m, struct engine *e, const struct workload *w, double *lb,
                       double *cp_out, double *area_out)
{
	struct profiler *prof = engine_profiler(e);
	unsigned nd = (unsigned)m->ndev, nn = (unsigned)m->res.nnodes;
	double *cost = xcalloc((size_t)w->ntasks * nd, sizeof(double));
	double *lat = xcalloc((size_t)nn * nn, sizeof(double));
	double *inv_bw = xcalloc((size_t)nn * nn, sizeof(double));
	uint16_t node[MAX_DEVS];
	int err;

	for (unsigned d = 0; d < nd; d++)
		node[d] = engine_device(e, d)->node;
	for (uint32_t v = 0; v < w->ntasks; v++) {
		struct tdm_kernel_call call;
		struct kernel_features f;
		const struct kernel_def *k = kernel_by_id(w->tasks[v].kernel);
		set_call(w, &w->tasks[v], &call);
		k->features(&call, &f);
		for (unsigned d = 0; d < nd; d++) {
			const struct backend_device *dev = &engine_device(e, d)->dev;
			struct cost_pred cp;
			if (dev->ops->supports && !dev->ops->supports(dev, k)) {
				cost[(size_t)v * nd + d] = -1;
				continue;
			}
			profiler_predict(prof, k->id, d, &f, &cp);
			cost[(size_t)v * nd + d] = cp.ns;
		}
	}
	for (unsigned a = 0; a < nn; a++) {
		for (unsigned b = 0; b < nn; b++) {
			if (a == b)
				continue;
			double one = profiler_predict_copy(prof, (uint16_t)a, (uint16_t)b, 1);
			double mib =
			        profiler_predict_copy(prof, (uint16_t)a, (uint16_t)b, 1u << 20);
			inv_bw[a * nn + b] = (mib - one) / (double)((1u << 20) - 1);
			lat[a * nn + b] = one - inv_bw[a * nn + b];
		}
	}
	struct plan_machine pm = {
		.ndev = nd, .node = node, .nnodes = nn, .lat = lat, .inv_bw = inv_bw
	};
	struct plan_dag dag = { .n = w->ntasks,
		                .cost = cost,
		                .succ_off = w->succ_off,
		                .succ = w->succ,
		                .edge_data = w->edge_bytes };
	double cp = 0, area = 0;
	err = plan_lower_bounds(&dag, &pm, &cp, &area);
	*lb = plan_lower_bound(cp, area);
	*cp_out = cp;
	*area_out = area;
	free(cost);
	free(lat);
	free(inv_bw);
	return err;
}

/* ---- one policy on the real machine --------------------------------------------- */

static void copy_observed(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t ns)
{
	profiler_observe_copy(ctx, (uint16_t)src, (uint16_t)dst, bytes, ns, 1);
}

static void report(const char *name, double v, const char *unit, const char *policy,
                   const char *workload)
{
	char keys[128];
	snprintf(keys, sizeof(keys), "policy=%s workload=%s", policy, workload);
	bench_report(name, v, unit, keys);
}

static void bench_policy_real(struct machine *m, const struct policy_ops *p,
                              struct workload *const *wls, size_t nwl)
{
	struct policy_ops ops = wrap_ops(p);
	struct waiter wt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct profiler *prof;
	struct engine *e;
	int err;

	if ((err = profiler_create(&m->cal, &prof)) != 0) {
		printf("bench_policies: profiler: %s\n", tdm_strerror(err));
		failed = true;
		return;
	}
	m->res.copy_ctx = prof;
	m->res.copy_observed = copy_observed;
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = &ops,
		.devices = m->devs,
		.ndevices = m->ndev,
		.spin_us = SPIN_US,
		.hooks = { .graph_done = on_graph_done, .ctx = &wt },
		.topology = m->topo,
		.poll_fd = -1,
		.start_workers = true,
		.res = &m->res,
		.prof = prof,
	};
	wrap_next_real = p;
	err = engine_create(&ep, &e);
	if (err) {
		printf("bench_policies: policy %s: engine_create: %s; skipped\n", p->name,
		       tdm_strerror(err));
		m->res.copy_observed = NULL;
		profiler_destroy(prof);
		return;
	}
	engine_flow_add(e, &flow);
	struct engine_graph *stuck = NULL;
	struct workload *stuck_wl = NULL;
	for (size_t i = 0; i < nwl; i++) {
		const struct workload *w = wls[i];
		struct run_result warm, r;
		double lb = 0, cp = 0, area = 0;
		struct engine_counters c0, c1, c2;
		engine_counters(e, &c0);
		stuck = run_workload(m, e, &flow, &wt, w, &warm);
		engine_counters(e, &c1);
		if (!stuck)
			stuck = run_workload(m, e, &flow, &wt, w, &r);
		engine_counters(e, &c2);
		if (stuck) {
			printf("bench_policies: policy=%s workload=%s: STUCK: the graph did not "
			       "complete in %ld s (%" PRIu64 " tasks in flight, %zu queued%s); "
			       "the policy's other workloads are skipped\n",
			       p->name, w->name, run_timeout_s, c2.tasks_in_flight, c2.queued,
			       c2.fallback ? ", after the watchdog's fallback to a FIFO" : "");
			failed = true;
			stuck_wl = wls[i];
			break;
		}
		if (c2.fallback && !c0.fallback)
			printf("bench_policies: policy=%s workload=%s: the engine's watchdog "
			       "replaced the policy with a FIFO during the %s run%s\n",
			       p->name, w->name, c1.fallback ? "warm-up" : "measured",
			       c1.fallback ? ": the figures below are the FIFO's" : "");
		else if (c0.fallback)
			printf("bench_policies: policy=%s workload=%s: runs on the watchdog's FIFO "
			       "(since an earlier workload)\n",
			       p->name, w->name);
		if (r.status || warm.status) {
			printf("bench_policies: policy=%s workload=%s: a task failed (%s)\n",
			       p->name, w->name, tdm_strerror(r.status ? r.status : warm.status));
			failed = true;
			continue;
		}
		if (!(r.err < w->tol) || !(warm.err < w->tol)) { /* NaN fails too */
			printf("bench_policies: policy=%s workload=%s: WRONG RESULT: relative "
			       "error %.3g (warm-up %.3g), want < %g\n",
			       p->name, w->name, r.err, warm.err, w->tol);
			failed = true;
		}
		err = lower_bound(m, e, w, &lb, &cp, &area);
		printf("# %s %s: %.1f GFLOP in %u tasks, warm-up %.1f ms, measured %.1f ms "
		       "(%.1f GFLOP/s), rel. error %.2g; bound %.1f ms (critical path %.1f, "
		       "area %.1f)%s; tasks per device:",
		       p->name, w->name, w->gflop, w->ntasks, warm.makespan_ns / 1e6,
		       r.makespan_ns / 1e6, w->gflop / (r.makespan_ns / 1e9), r.err, lb / 1e6,
		       cp / 1e6, area / 1e6, err ? " (bound failed)" : "");
		for (size_t d = 0; d < m->ndev; d++)
			printf(" %s=%" PRIu64, m->devs[d].name, r.tasks_per_dev[d]);
		printf("; %" PRIu64 " idle polls\n", r.idle_polls);
		report("makespan_ms", r.makespan_ns / 1e6, "ms", p->name, w->name);
		if (!err && lb > 0)
			report("makespan_over_lb", r.makespan_ns / lb, "ratio", p->name, w->name);
		report("bytes_moved", (double)r.bytes_moved, "bytes", p->name, w->name);
		report("decision_us_per_task", r.decision_ns / 1e3 / w->ntasks, "us", p->name,
		       w->name);
	}
	if (!stuck)
		engine_flow_gone(e, &flow);
	engine_destroy(e);
	if (stuck) {
		/* Its replicas may still be pinned by tasks that never ended:
		 * registered anew, the buffers are valid on the host only. */
		engine_graph_free_arrays(stuck);
		free(stuck);
		for (uint32_t b = 0; b < stuck_wl->nbufs; b++) {
			residency_data_fini(&m->res, &stuck_wl->data[b]);
			residency_data_init(&m->res, &stuck_wl->data[b], stuck_wl->host[b],
			                    stuck_wl->bytes[b], b + 1, false);
		}
	}
	m->res.copy_observed = NULL;
	m->res.copy_ctx = NULL;
	profiler_destroy(prof);
}

/* ---- decisions only: fake devices, no work ---------------------------------------- */

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d;
	(void)k;
	(void)call;
	return 0;
}

static const struct backend_ops fake_backend = { .abi_version = BACKEND_ABI_VERSION,
	                                         .name = "fake",
	                                         .launch = fake_launch };

/* A random DAG of sgemm tasks (features only: no data, nothing runs), each
 * with up to three predecessors among the SYNTH_WINDOW tasks before it. */
static void synth_build(struct workload *w, uint32_t n)
{
	uint32_t cap = 0;
	memset(w, 0, sizeof(*w));
	w->name = "synthetic";
	rng_state = 3;
	uint32_t *eu = xcalloc((size_t)n * 3, sizeof(uint32_t));
	uint32_t *ev = xcalloc((size_t)n * 3, sizeof(uint32_t));
	size_t ne = 0;
	for (uint32_t v = 0; v < n; v++) {
		int64_t s = dag_sizes[rng_below(NSIZES)];
		push_task(w, &cap, KERNEL_SGEMM, 0, NULL, s);
		struct wtask *t = &w->tasks[v];
		t->s[1].i64 = t->s[2].i64 = s;
		t->s[3].f32 = 1.0f;
		uint32_t np = v ? rng_below(4) : 0, got[3];
		for (uint32_t i = 0; i < np; i++) {
			uint32_t lo = v > SYNTH_WINDOW ? v - SYNTH_WINDOW : 0;
			uint32_t u = lo + rng_below(v - lo);
			bool dup = false;
			for (uint32_t j = 0; j < i; j++)
				dup |= got[j] == u;
			got[i] = u;
			if (!dup) {
				eu[ne] = u;
				ev[ne++] = v;
			}
		}
	}
	w->succ_off = xcalloc(n + 1, sizeof(uint32_t));
	w->succ = xcalloc(ne + 1, sizeof(uint32_t));
	w->ndeps = xcalloc(n, sizeof(uint32_t));
	w->prio = xcalloc(n, sizeof(int32_t));
	for (size_t i = 0; i < ne; i++) {
		w->succ_off[eu[i] + 1]++;
		w->ndeps[ev[i]]++;
	}
	for (uint32_t v = 0; v < n; v++)
		w->succ_off[v + 1] += w->succ_off[v];
	uint32_t *cur = xcalloc(n + 1, sizeof(uint32_t));
	memcpy(cur, w->succ_off, (n + 1) * sizeof(uint32_t));
	for (size_t i = 0; i < ne; i++)
		w->succ[cur[eu[i]]++] = ev[i];
	for (uint32_t v = n; v-- > 0;) {
		int32_t best = 0;
		for (uint32_t i = w->succ_off[v]; i < w->succ_off[v + 1]; i++)
			best = w->prio[w->succ[i]] > best ? w->prio[w->succ[i]] : best;
		w->prio[v] = best + 1;
	}
	free(cur);
	free(eu);
	free(ev);
}

/* The tasks carry sgemm features but no arguments: make_graph's call has
 * nargs 0, so the fake launch has nothing to touch. */
static void bench_policy_synthetic(const struct policy_ops *p, const struct workload *w)
{
	struct policy_ops ops = wrap_ops(p);
	struct backend_device devs[SYNTH_DEVS];
	struct waiter wt = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct engine_flow flow = { .id = 1, .weight = 1 };
	struct calibration *cal = xcalloc(1, sizeof(*cal));
	struct profiler *prof = NULL;
	struct engine *e;

	memset(devs, 0, sizeof(devs));
	for (int i = 0; i < SYNTH_DEVS; i++) {
		devs[i].ops = &fake_backend;
		devs[i].kind = TDM_DEV_CPU;
		snprintf(devs[i].name, sizeof(devs[i].name), "fake%d", i);
	}
	calibrate_defaults(SYNTH_DEVS, 1, cal);
	int err = profiler_create(cal, &prof);
	free(cal);
	if (err) {
		printf("bench_policies: profiler: %s\n", tdm_strerror(err));
		failed = true;
		return;
	}
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = &ops,
		.devices = devs,
		.ndevices = SYNTH_DEVS,
		.hooks = { .graph_done = on_graph_done, .ctx = &wt },
		.poll_fd = -1,
		.start_workers = false,
		.prof = prof,
	};
	wrap_next_real = p;
	err = engine_create(&ep, &e);
	if (err) {
		printf("bench_policies: policy %s: engine_create (fake devices): %s; skipped\n",
		       p->name, tdm_strerror(err));
		profiler_destroy(prof);
		return;
	}
	engine_flow_add(e, &flow);
	struct engine_graph *g = make_graph(w, &flow, false);
	uint64_t t0 = clock_monotonic_ns();
	wrap_reset(wrap_last);
	engine_submit(e, g);
	uint64_t ran = 0;
	for (bool progress = true; progress && !wt.done;) {
		progress = false;
		for (unsigned d = 0; d < SYNTH_DEVS; d++) {
			if (engine_run_one(e, d)) {
				progress = true;
				ran++;
			}
		}
	}
	uint64_t wall = clock_monotonic_ns() - t0;
	if (!wt.done) {
		printf("bench_policies: policy %s: synthetic DAG stalled after %" PRIu64
		       " of %u tasks\n",
		       p->name, ran, w->ntasks);
		failed = true;
	} else {
		printf("# %s synthetic: %u tasks, %u edges on %d fake devices: %.1f ms in all "
		       "(%.2f us per task with the engine), %" PRIu64 " idle polls\n",
		       p->name, w->ntasks, w->succ_off[w->ntasks], SYNTH_DEVS, wall / 1e6,
		       wall / 1e3 / w->ntasks, atomic_load(&wrap_last->idle_calls));
		report("decision_us_per_task",
		       (double)atomic_load(&wrap_last->ns) / 1e3 / w->ntasks, "us", p->name,
		       "synthetic");
	}
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	engine_graph_free_arrays(g);
	free(g);
	profiler_destroy(prof);
}

/* ---- the machine ---------------------------------------------------------------- */

static int probe(struct machine *m, const struct backend_ops *ops)
{
	struct backend_probe_params pp = { .topology = m->topo };
	size_t n = 0;
	int err = ops->probe(&pp, m->devs + m->ndev, MAX_DEVS - m->ndev, &n);
	if (pp.note[0])
		printf("bench_policies: %s\n", pp.note);
	if (err) {
		printf("bench_policies: %s: probe failed: %s\n", ops->name, tdm_strerror(err));
		return err;
	}
	if (n == 0 && ops == &backend_opencl)
		printf("bench_policies: no OpenCL device: CPU cores only\n");
	m->ndev += n;
	return 0;
}

static int machine_open(struct machine *m, char *state_dir, size_t len)
{
	uint16_t nodes[MAX_DEVS];

	memset(m, 0, sizeof(*m));
	if (hwloc_topology_init(&m->topo) != 0 || hwloc_topology_load(m->topo) != 0) {
		fprintf(stderr, "bench_policies: hwloc: cannot load the topology\n");
		return -1;
	}
	if (probe(m, &backend_cpu) != 0)
		return -1;
	m->ncpu = m->ndev;
	probe(m, &backend_opencl); /* none, or a failure: CPU cores only */
	residency_init(&m->res);
	for (size_t i = m->ncpu; i < m->ndev; i++) {
		int node = residency_add_node(&m->res, &m->devs[i], 0);
		if (node < 0) {
			printf("bench_policies: %s: no memory node left; left out\n",
			       m->devs[i].name);
			m->devs[i].ops->release(&m->devs[i]);
			memmove(&m->devs[i], &m->devs[i + 1],
			        (m->ndev - i - 1) * sizeof(m->devs[0]));
			m->ndev--;
			i--;
			continue;
		}
		m->devs[i].node = (uint16_t)node;
	}
	for (size_t i = 0; i < m->ndev; i++)
		nodes[i] = m->devs[i].node;

	const char *dir = getenv("BENCH_STATE_DIR");
	if (dir && *dir) {
		snprintf(state_dir, len, "%s", dir);
	} else {
		snprintf(state_dir, len, "%s/bench_policies.XXXXXX",
		         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(state_dir))
			state_dir[0] = '\0';
	}
	int err = calibrate_load_or_run(state_dir, m->devs, nodes, m->ndev, false, &m->cal);
	if (err) {
		printf("bench_policies: calibration failed (%s): generic figures\n",
		       tdm_strerror(err));
		calibrate_defaults(m->ndev, m->res.nnodes, &m->cal);
		for (size_t i = 0; i < m->ndev; i++) {
			calibrate_device_key(&m->devs[i], m->cal.dev[i].key,
			                     sizeof(m->cal.dev[i].key));
			m->cal.dev[i].node = nodes[i];
		}
	}
	printf("# devices:");
	for (size_t i = 0; i < m->ndev; i++)
		printf(" %s (%s, node %u, %.1f GFLOP/s)", m->devs[i].name, m->devs[i].model,
		       m->devs[i].node, m->cal.dev[i].gemm_gflops);
	printf("; calibration %s in %.2f s\n", m->cal.from_cache ? "from cache" : "measured",
	       m->cal.seconds);
	return 0;
}

static void machine_close(struct machine *m, const char *state_dir, bool temp)
{
	uint16_t nodes[MAX_DEVS];
	char path[1024];

	if (temp && state_dir[0]) {
		for (size_t i = 0; i < m->ndev; i++)
			nodes[i] = m->devs[i].node;
		if (calibrate_cache_path(state_dir, m->devs, nodes, m->ndev, path, sizeof(path)) ==
		    0)
			unlink(path);
		rmdir(state_dir);
	}
	residency_fini(&m->res);
	for (size_t i = 0; i < m->ndev; i++)
		if (m->devs[i].ops->release)
			m->devs[i].ops->release(&m->devs[i]);
	hwloc_topology_destroy(m->topo);
}

static bool wanted(const char *name)
{
	const char *list = getenv("BENCH_POLICIES");
	size_t n = strlen(name);
	if (!list || !*list)
		return true;
	for (const char *p = list; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len + (end != NULL);
	}
	return false;
}

int main(void)
{
	static struct machine m;
	char state_dir[512];
	bool temp_state = !(getenv("BENCH_STATE_DIR") && *getenv("BENCH_STATE_DIR"));
	uint32_t tiles = (uint32_t)env_long("BENCH_CHOL_TILES", 10, 1, 64);
	uint32_t nb = (uint32_t)env_long("BENCH_CHOL_NB", 480, 1, 4096);
	uint32_t dag_tasks = (uint32_t)env_long("BENCH_DAG_TASKS", 300, 1, 100000);
	uint32_t synth_tasks = (uint32_t)env_long("BENCH_SYNTH_TASKS", 100000, 1, 10000000);
	run_timeout_s = env_long("BENCH_RUN_TIMEOUT_S", 20, 1, 3600);
	struct workload chol, dag, synth;

	setvbuf(stdout, NULL, _IOLBF, 0);
	glp_term_out(GLP_OFF); /* the area bound's LP: no solver chatter among the lines */
	if (machine_open(&m, state_dir, sizeof(state_dir)) != 0)
		return 1;
	uint64_t t0 = clock_monotonic_ns();
	chol_build(&chol, tiles, nb);
	dag_build(&dag, dag_tasks);
	synth_build(&synth, synth_tasks);
	workload_register(&chol, &m.res);
	workload_register(&dag, &m.res);
	printf("# cholesky: N=%u in %ux%u tiles of %u, %u tasks, %u edges; randdag: %u sgemm "
	       "tasks (64..512), %u edges, %u buffers; set up in %.2f s\n",
	       tiles * nb, tiles, tiles, nb, chol.ntasks, chol.succ_off[chol.ntasks], dag.ntasks,
	       dag.succ_off[dag.ntasks], dag.nbufs, (clock_monotonic_ns() - t0) / 1e9);

	printf("# policies registered:");
	for (const struct policy_ops *const *p = policy_list(); *p; p++)
		printf(" %s", (*p)->name);
	printf("\n");
	struct workload *wls[] = { &chol, &dag };
	for (const struct policy_ops *const *p = policy_list(); *p; p++)
		if (wanted((*p)->name))
			bench_policy_real(&m, *p, wls, 2);
	for (const struct policy_ops *const *p = policy_list(); *p; p++)
		if (wanted((*p)->name))
			bench_policy_synthetic(*p, &synth);

	workload_free(&chol, &m.res);
	workload_free(&dag, &m.res);
	workload_free(&synth, &m.res);
	machine_close(&m, state_dir, temp_state);
	return failed ? 1 : 0;
}
