/* Cost models (profiler.h).
 *
 * Layout: one struct model per (kernel, device key). Each model has a table
 * of 64 footprints (open addressing on a hash of the exact features) whose
 * published part is a 64-byte line of C11 atomics guarded by a seqcount, and
 * a private part (the ring of recent samples) touched only under the model's
 * mutex. The regressions' coefficients, prior_scale and the held-out errors
 * are published the same way, at model level. predict reads only published
 * atomics (relaxed loads, seqcount retry) and never blocks.
 *
 * Decisions (documented for the engine and `tandemctl models`):
 *  - Prior: launch_ns + max(flops / gemm_gflops, bytes / mem_gbps) (GFLOP/s
 *    is flop/ns, GB/s is bytes/ns); with no flops and no bytes, domain is a
 *    duration in microseconds (spin) and the prior is launch_ns +
 *    domain * 1000. It is multiplied by prior_scale, the lower median of
 *    estimate/prior over the footprints as they are now (over the last 32
 *    such ratios for a model loaded from a document that kept no priors).
 *    Its spread is 50% until it has been scored.
 *  - History: the lower median of the last 32 samples (device times are
 *    skewed upwards: of two samples the smaller is kept); spread =
 *    1.4826 * MAD, at least 1% of the estimate (10% below 3 samples). From
 *    3 samples on, a sample off by more than max(5 * spread, 50%) is an
 *    outlier: counted, kept in the ring, and left out of the error figures.
 *  - Refits: only when a footprint is new or its estimate moved by 2%; a
 *    footprint whose ring is full learns one sample in 8 (see profiler.h).
 *  - Held-out errors (prequential): before a sample is learned, the methods
 *    that did not see it are scored on it. A regression or the prior has
 *    not seen a footprint before its first sample, so they are scored on
 *    first samples only; history on every later one. Errors are EWMAs of
 *    |predicted - measured| / measured (capped at 1000%), the first 10
 *    samples averaged, then alpha = 0.1.
 *  - Linear: a + b*flops + c*bytes + d*domain, least squares in relative
 *    error, then three passes reweighting each size by Tukey's biweight of
 *    its relative residual (scale: 1.4826 * median, at least 2%), so that
 *    one size measured while the machine was busy does not bend the fit.
 *  - Leave-one-out: at a refit when a size came, or when the model learned
 *    4 samples per size since the last (n sets of fits each time), while a
 *    model has 3 to 24 footprints,
 *    every footprint is predicted by the scaled prior, linear, power and
 *    interpolation fitted on the others (interpolation only between sizes,
 *    not at the ends). Where computed, that error replaces the prequential
 *    one of those methods: it scores the fits now in use, on the estimates
 *    of now, not the early ones (a size's first sample is often its worst).
 *  - predict: a seen footprint answers from history, except when it has a
 *    single sample and the best method for unseen sizes has a held-out
 *    error under half of history's. An unseen footprint answers from the
 *    method (prior, linear, power, interp) with the lowest held-out error;
 *    the prior until another has been scored. Interpolation answers only
 *    between the sizes seen; outside, the better of linear and power does.
 *    A method that gives no positive finite answer falls back to the
 *    scaled prior.
 *  - Out-of-range device: {0, 0}. Out-of-range kernel or noop: the unscaled
 *    prior. observe ignores those, zero times and invalid features.
 *  - Figures that are not positive and finite are taken as 1 GFLOP/s,
 *    1 GB/s; a launch or latency that is not finite and >= 0 as 0. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiler/profiler_internal.h"
#include "tandem.h"

#define SETTLED_STRIDE 8 /* a footprint with a full ring learns 1 sample in 8 */
#define REFIT_MOVE 0.02 /* a footprint estimate moving this much refits the model */
#define LOO_MIN 3 /* footprints before leave-one-out errors mean anything */
#define LOO_MAX 24 /* and after which they cost too much per refit */
#define LOO_EVERY 4 /* samples per footprint between two refreshes of them */
#define PRIOR_SPREAD 0.5

/* ---- small helpers ------------------------------------------------------- */

/* A rate (GFLOP/s, GB/s) within [1e-6, 1e6], dflt when not positive. */
static double rate_or(double v, double dflt)
{
	return isfinite(v) && v > 0 ? fmin(fmax(v, GBPS_MIN), GBPS_MAX) : dflt;
}

static double nonneg_or_zero(double v)
{
	return isfinite(v) && v >= 0 ? fmin(v, NS_MAX) : 0;
}

static bool features_ok(const struct kernel_features *f)
{
	return f && feat_ok(f->flops) && feat_ok(f->bytes) && feat_ok(f->domain);
}

static bool same_features(const struct kernel_features *a, const struct kernel_features *b)
{
	return a->flops == b->flops && a->bytes == b->bytes && a->domain == b->domain;
}

static bool ns_ok(double v)
{
	return v > 0 && v <= NS_MAX; /* as feat_ok: finite implied */
}

static double rel_err(double pred, double x)
{
	if (!ns_ok(pred))
		return 1.0;
	return fmin(fabs(pred - x) / x, ERR_CAP);
}

static void count(uint64_t *c)
{
	if (*c < COUNT_MAX)
		(*c)++;
}

/* The first ERR_WARM values are averaged, then alpha stays at 1/ERR_WARM. */
static void ewma(double *e, uint32_t *n, double v)
{
	if (*n < ERR_WARM)
		(*n)++;
	*e += (v - *e) / *n;
}

/* Seqcount without fences (which ThreadSanitizer does not model): the
 * fields under it are stored with release and loaded with acquire, which on
 * x86 and arm64 costs what relaxed does. A reader that loads a value of a
 * write in progress therefore also sees the odd count, and retries. */
#define SEQ_LD(x) atomic_load_explicit(&(x), memory_order_acquire)
#define SEQ_ST(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

static void seq_begin(_Atomic uint32_t *seq)
{
	atomic_store_explicit(seq, atomic_load_explicit(seq, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
}

static void seq_end(_Atomic uint32_t *seq)
{
	atomic_store_explicit(seq, atomic_load_explicit(seq, memory_order_relaxed) + 1,
	                      memory_order_release);
}

static uint32_t seq_read_begin(const _Atomic uint32_t *seq)
{
	uint32_t s;

	while ((s = atomic_load_explicit((_Atomic uint32_t *)seq, memory_order_acquire)) & 1)
		;
	return s;
}

static bool seq_read_retry(const _Atomic uint32_t *seq, uint32_t s)
{
	return atomic_load_explicit((_Atomic uint32_t *)seq, memory_order_relaxed) != s;
}

/* ---- the prior ----------------------------------------------------------- */

static double prior_ns(const struct dev_fig *d, const struct kernel_features *f)
{
	double launch = LD(d->launch);

	if (f->flops == 0 && f->bytes == 0)
		return launch + f->domain * 1000.0; /* spin: domain is microseconds */
	return launch + fmax(f->flops / LD(d->gflops), f->bytes / LD(d->gbps));
}

static void set_figures(struct profiler *p, const struct calibration *cal)
{
	for (uint32_t i = 0; i < p->ndev && i < cal->ndevices; i++) {
		const struct cal_device *d = &cal->dev[i];

		ST(p->fig[i].launch, nonneg_or_zero(d->launch_ns));
		ST(p->fig[i].gflops, rate_or(d->gemm_gflops, 1.0));
		ST(p->fig[i].gbps, rate_or(d->mem_gbps, 1.0));
	}
	for (uint32_t s = 0; s < p->nnodes; s++) {
		for (uint32_t t = 0; t < p->nnodes; t++) {
			ST(p->link[s][t].gbps_cal, rate_or(cal->link[s][t].gbps, 1.0));
			ST(p->link[s][t].latency, nonneg_or_zero(cal->link[s][t].latency_ns));
		}
	}
}

/* ---- footprints ------------------------------------------------------------ */

/* Lock-free: the slot holding exactly these features, or -1. Slots are only
 * filled or overwritten in place, never emptied, so a probe may stop at the
 * first empty slot. */
int prof_fp_find(const struct model *m, uint64_t key, const struct kernel_features *f,
                 struct fp_view *out)
{
	for (unsigned i = 0; i < FP_SLOTS; i++) {
		const struct fp_pub *e = &m->fp[(key + i) & (FP_SLOTS - 1)];
		uint64_t k = SEQ_LD(e->key);
		struct kernel_features g;
		uint32_t s;

		if (k == 0)
			return -1;
		if (k != key)
			continue;
		do {
			s = seq_read_begin(&e->seq);
			k = SEQ_LD(e->key);
			g.flops = SEQ_LD(e->flops);
			g.bytes = SEQ_LD(e->bytes);
			g.domain = SEQ_LD(e->domain);
			out->est = SEQ_LD(e->est);
			out->spread = SEQ_LD(e->spread);
			out->n = SEQ_LD(e->n);
		} while (seq_read_retry(&e->seq, s));
		if (k == key && same_features(&g, f))
			return (int)((key + i) & (FP_SLOTS - 1));
	}
	return -1;
}

void prof_fp_publish(struct model *m, unsigned slot)
{
	const struct fp_priv *v = &m->priv[slot];
	struct fp_pub *e = &m->fp[slot];

	seq_begin(&e->seq);
	SEQ_ST(e->key, v->key);
	SEQ_ST(e->flops, v->f.flops);
	SEQ_ST(e->bytes, v->f.bytes);
	SEQ_ST(e->domain, v->f.domain);
	SEQ_ST(e->est, v->est);
	SEQ_ST(e->spread, v->spread);
	SEQ_ST(e->n, v->n);
	seq_end(&e->seq);
}

void prof_fp_stats(struct fp_priv *v)
{
	double s[RING], d[RING] = { 0 }, med, mad;

	memcpy(s, v->ring, sizeof(s));
	med = lower_median(s, v->len);
	for (unsigned i = 0; i < v->len; i++)
		d[i] = fabs(v->ring[i] - med);
	mad = lower_median(d, v->len);
	v->est = med;
	v->spread = fmax(1.4826 * mad, (v->len < 3 ? 0.1 : 0.01) * med);
}

void prof_fp_push(struct fp_priv *v, double x)
{
	v->ring[v->head] = x;
	v->head = (v->head + 1) % RING;
	if (v->len < RING)
		v->len++;
	count(&v->n);
}

/* A slot for a footprint not in the table: the first empty one on its probe
 * sequence, or when the table is full the least recently observed one. */
static unsigned fp_claim(struct model *m, uint64_t key)
{
	unsigned victim = 0;

	if (m->nfp < FP_SLOTS) {
		for (unsigned i = 0; i < FP_SLOTS; i++) {
			unsigned s = (key + i) & (FP_SLOTS - 1);

			if (m->priv[s].key == 0) {
				m->nfp++;
				return s;
			}
		}
	}
	for (unsigned s = 1; s < FP_SLOTS; s++)
		if (m->priv[s].last_use < m->priv[victim].last_use)
			victim = s;
	return victim;
}

unsigned prof_fp_insert(struct model *m, uint64_t key, const struct kernel_features *f)
{
	unsigned s = fp_claim(m, key);
	struct fp_priv *v = &m->priv[s];

	memset(v, 0, sizeof(*v));
	v->key = key;
	v->f = *f;
	return s;
}

/* ---- regressions ------------------------------------------------------------ */

static double regressor(const struct kernel_features *f, unsigned j)
{
	switch (j) {
	case 1: return f->flops;
	case 2: return f->bytes;
	case 3: return f->domain;
	default: return 1.0;
	}
}

static bool varies(const struct kernel_features *x, unsigned n, unsigned j)
{
	for (unsigned i = 1; i < n; i++)
		if (regressor(&x[i], j) != regressor(&x[0], j))
			return true;
	return j == 0;
}

static double dot(const double *a, const double *b, unsigned n)
{
	double s = 0;

	for (unsigned i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* Weighted least squares t ~ a + b*flops + c*bytes + d*domain with each row
 * divided by its t, so that relative errors count. A regressor that does not
 * vary, or that is (nearly) a combination of those before it (sgemm's domain
 * is flops / 2), gets 0: modified Gram-Schmidt on unit columns, twice, drops
 * it. At most n - 1 coefficients from 3 rows on, so the fit keeps a degree
 * of freedom. */
static bool fit_linear_w(const struct kernel_features *x, const double *t, const double *w,
                         unsigned n, double coef[NCOEF])
{
	double q[NCOEF][FP_SLOTS], r[NCOEF][NCOEF] = { { 0 } }, z[NCOEF], c[NCOEF], sc[NCOEF];
	unsigned col[NCOEF], k = 0, rows = 0, maxp;

	for (unsigned i = 0; i < n; i++)
		rows += w[i] > 0;
	maxp = rows >= 3 ? rows - 1 : rows;
	if (rows < 2)
		return false;
	for (unsigned j = 0; j < NCOEF && k < maxp; j++) {
		double *v = q[k], norm;

		if (!varies(x, n, j))
			continue;
		for (unsigned i = 0; i < n; i++)
			v[i] = regressor(&x[i], j) * w[i] / t[i];
		sc[k] = sqrt(dot(v, v, n));
		if (!(sc[k] > 0) || !isfinite(sc[k]))
			continue;
		for (unsigned i = 0; i < n; i++)
			v[i] /= sc[k];
		for (unsigned l = 0; l < k; l++)
			r[l][k] = 0;
		for (int pass = 0; pass < 2; pass++) {
			for (unsigned l = 0; l < k; l++) {
				double d = dot(q[l], v, n);

				r[l][k] += d;
				for (unsigned i = 0; i < n; i++)
					v[i] -= d * q[l][i];
			}
		}
		norm = sqrt(dot(v, v, n));
		if (!(norm > 1e-7))
			continue;
		for (unsigned i = 0; i < n; i++)
			v[i] /= norm;
		r[k][k] = norm;
		col[k++] = j;
	}
	if (k == 0)
		return false;
	for (unsigned l = 0; l < k; l++) { /* the target is w t / t = w */
		z[l] = 0;
		for (unsigned i = 0; i < n; i++)
			z[l] += q[l][i] * w[i];
	}
	for (unsigned l = k; l-- > 0;) {
		double s = z[l];

		for (unsigned m = l + 1; m < k; m++)
			s -= r[l][m] * c[m];
		c[l] = s / r[l][l];
	}
	memset(coef, 0, NCOEF * sizeof(*coef));
	for (unsigned l = 0; l < k; l++)
		coef[col[l]] = c[l] / sc[l];
	for (unsigned j = 0; j < NCOEF; j++)
		if (!isfinite(coef[j]))
			return false;
	return true;
}

static double eval_linear(const double c[NCOEF], const struct kernel_features *f)
{
	return c[0] + c[1] * f->flops + c[2] * f->bytes + c[3] * f->domain;
}

#define ROBUST_PASSES 3
#define ROBUST_TUNE 4.685 /* Tukey's biweight, 95% efficient on normal residuals */
#define ROBUST_FLOOR 0.02 /* residual scale never read below 2%: timing noise */

/* fit_linear_w made robust to a size whose estimate is off (a footprint
 * measured while the machine was busy): iteratively reweighted, each size
 * weighted by Tukey's biweight of its relative residual over the fit's
 * robust scale (1.4826 * median |residual|, at least ROBUST_FLOOR). Exact
 * or evenly noisy data keep every weight at 1 and the plain fit. */
static bool fit_linear(const struct kernel_features *x, const double *t, unsigned n,
                       double coef[NCOEF])
{
	double w[FP_SLOTS] = { 0 }, res[FP_SLOTS], tmp[FP_SLOTS], c[NCOEF];

	for (unsigned i = 0; i < n; i++)
		w[i] = 1.0;
	if (!fit_linear_w(x, t, w, n, coef))
		return false;
	for (int pass = 0; pass < ROBUST_PASSES && n > 3; pass++) {
		double scale;
		unsigned kept = 0;

		for (unsigned i = 0; i < n; i++)
			res[i] = tmp[i] = fabs(eval_linear(coef, &x[i]) - t[i]) / t[i];
		scale = fmax(1.4826 * lower_median(tmp, n), ROBUST_FLOOR) * ROBUST_TUNE;
		for (unsigned i = 0; i < n; i++) {
			double u = res[i] / scale;

			w[i] = u < 1 ? (1 - u * u) * (1 - u * u) : 0;
			kept += w[i] > 0;
		}
		if (kept < 3 || !fit_linear_w(x, t, w, n, c))
			break;
		memcpy(coef, c, sizeof(c));
	}
	return true;
}

/* The size a power law is over: flops, else bytes, else domain. */
static double power_x(const struct kernel_features *f)
{
	return f->flops > 0 ? f->flops : f->bytes > 0 ? f->bytes : f->domain;
}

/* log t = alpha + beta * log x, ordinary least squares; needs two sizes. */
static bool fit_power(const struct kernel_features *x, const double *t, unsigned n, double c[2])
{
	double u[FP_SLOTS], v[FP_SLOTS], mu = 0, mv = 0, suu = 0, suv = 0;
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		double s = power_x(&x[i]);

		if (s > 0 && t[i] > 0) {
			u[k] = log(s);
			v[k] = log(t[i]);
			mu += u[k];
			mv += v[k];
			k++;
		}
	}
	if (k < 2)
		return false;
	mu /= k;
	mv /= k;
	for (unsigned i = 0; i < k; i++) {
		suu += (u[i] - mu) * (u[i] - mu);
		suv += (u[i] - mu) * (v[i] - mv);
	}
	if (!(suu > 1e-12))
		return false;
	c[1] = suv / suu;
	c[0] = mv - c[1] * mu;
	return isfinite(c[0]) && isfinite(c[1]);
}

static double eval_power(const double c[2], const struct kernel_features *f)
{
	double x = power_x(f);

	return x > 0 ? exp(c[0] + c[1] * log(x)) : NAN;
}

/* ---- interpolation between the sizes seen -------------------------------------- */

/* Feature dim (0 flops, 1 bytes, 2 domain) of f. */
static double feat_dim(const struct kernel_features *f, int dim)
{
	return dim == 0 ? f->flops : dim == 1 ? f->bytes : f->domain;
}

/* The size interpolation runs over: the first feature of power_x's order
 * that every footprint has. -1: none. */
static int knots_dim(const struct kernel_features *f, unsigned n)
{
	for (int dim = 0; dim < 3; dim++) {
		unsigned i = 0;

		while (i < n && feat_dim(&f[i], dim) > 0)
			i++;
		if (n && i == n)
			return dim;
	}
	return -1;
}

/* Sorts (size, estimate) of the footprints into knots; footprints of one
 * size (differing in other features) share a knot at their mean. */
static unsigned make_knots(const struct kernel_features *f, const double *t, unsigned n, double *kx,
                           double *kt, int *dim)
{
	unsigned k = 0, cnt[FP_SLOTS];

	*dim = knots_dim(f, n);
	if (*dim < 0)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		double x = feat_dim(&f[i], *dim);
		unsigned j = k;

		if (!(x > 0) || !(t[i] > 0))
			continue;
		while (j > 0 && kx[j - 1] > x) /* insertion sort: at most 64 */
			j--;
		if (j > 0 && kx[j - 1] == x) {
			kt[j - 1] += (t[i] - kt[j - 1]) / ++cnt[j - 1];
			continue;
		}
		memmove(kx + j + 1, kx + j, (k - j) * sizeof(*kx));
		memmove(kt + j + 1, kt + j, (k - j) * sizeof(*kt));
		memmove(cnt + j + 1, cnt + j, (k - j) * sizeof(*cnt));
		kx[j] = x;
		kt[j] = t[i];
		cnt[j] = 1;
		k++;
	}
	return k;
}

/* The power law through (x0, t0) and (x1, t1), at q between them. */
static double interp_on(double x0, double t0, double x1, double t1, double q)
{
	double b = log(t1 / t0) / log(x1 / x0);

	return t0 * exp(b * log(q / x0));
}

static double eval_interp(const double *kx, const double *kt, unsigned n, int dim,
                          const struct kernel_features *f)
{
	double q = dim >= 0 ? feat_dim(f, dim) : 0;
	unsigned lo = 0, hi = n - 1;

	/* Between sizes seen only: beyond them a segment's slope says little. */
	if (n < 2 || !(q >= kx[0] && q <= kx[n - 1]))
		return NAN;
	while (hi - lo > 1) {
		unsigned mid = (lo + hi) / 2;

		if (kx[mid] <= q)
			lo = mid;
		else
			hi = mid;
	}
	return interp_on(kx[lo], kt[lo], kx[hi], kt[hi], q);
}

/* eval_interp on the published knots, lock-free: a binary search under the
 * knots' seqcount. */
static double eval_interp_pub(const struct knots_pub *k, const struct kernel_features *f)
{
	double q, x0, t0, x1, t1;
	uint32_t s, n;

	do {
		s = seq_read_begin(&k->seq);
		n = SEQ_LD(k->n);
		q = feat_dim(f, SEQ_LD(k->dim));
		if (n < 2 || n > FP_SLOTS || !(q >= SEQ_LD(k->x[0]) && q <= SEQ_LD(k->x[n - 1])))
			return NAN;
		unsigned lo = 0, hi = n - 1;
		while (hi - lo > 1) {
			unsigned mid = (lo + hi) / 2;

			if (SEQ_LD(k->x[mid]) <= q)
				lo = mid;
			else
				hi = mid;
		}
		x0 = SEQ_LD(k->x[lo]);
		t0 = SEQ_LD(k->t[lo]);
		x1 = SEQ_LD(k->x[hi]);
		t1 = SEQ_LD(k->t[hi]);
	} while (seq_read_retry(&k->seq, s));
	return x1 > x0 && t0 > 0 && t1 > 0 ? interp_on(x0, t0, x1, t1, q) : NAN;
}

/* ---- a model's learning (under its lock, or on a private scratch model) ---- */

static void model_init(struct model *m)
{
	for (int s = 0; s < COST_SOURCE_COUNT; s++)
		m->loo[s] = -1; /* not computed (0 would read as perfect) */
	m->scale = 1.0;
	ST(m->pub.scale, 1.0);
	ST(m->pub.best, COST_PRIOR);
	for (int s = 0; s < COST_SOURCE_COUNT; s++)
		ST(m->pub.err[s], -1.0);
}

struct model *prof_scratch_new(void)
{
	struct model *m = aligned_alloc(_Alignof(struct model), sizeof(struct model));

	if (m) {
		memset(m, 0, sizeof(*m));
		model_init(m);
	}
	return m;
}

void prof_recent_push(struct model *m, double pred, double took)
{
	m->rp_pred[m->rp_head] = pred;
	m->rp_took[m->rp_head] = took;
	m->rp_head = (m->rp_head + 1) % RING;
	if (m->rp_n < RING)
		m->rp_n++;
}

void prof_push_ratio(struct model *m, double r)
{
	double s[RATIOS];

	m->ratio[m->ratio_head] = fmin(fmax(r, SCALE_MIN), SCALE_MAX);
	m->ratio_head = (m->ratio_head + 1) % RATIOS;
	if (m->nratio < RATIOS)
		m->nratio++;
	memcpy(s, m->ratio, sizeof(s));
	m->scale = lower_median(s, m->nratio);
}

/* Leave-one-out error of each method for unseen sizes, over the footprints
 * as they are now: each one predicted by the fits of the others. The
 * prequential scores only see a model's first samples of each size, when
 * its fits were poorest; this is the held-out error of the fits in use.
 * Bounded work: only while a model has LOO_MAX footprints or fewer. */
static void loo_errors(struct model *m, const struct kernel_features *x, const double *t,
                       const double *prior, unsigned n)
{
	static const int methods[] = { COST_PRIOR, COST_LINEAR, COST_POWER, COST_INTERP };
	struct kernel_features xs[FP_SLOTS];
	double ts[FP_SLOTS], kx[FP_SLOTS], kt[FP_SLOTS], c[NCOEF], pw[2], ratio[FP_SLOTS];
	int dim;
	double sum[COST_SOURCE_COUNT] = { 0 };
	unsigned cnt[COST_SOURCE_COUNT] = { 0 };

	for (int s = 0; s < COST_SOURCE_COUNT; s++)
		m->loo[s] = -1;
	if (n < LOO_MIN || n > LOO_MAX)
		return;
	for (unsigned i = 0; i < n; i++) {
		unsigned k = 0, nk, nr = 0;

		for (unsigned j = 0; j < n; j++) {
			if (j != i) {
				xs[k] = x[j];
				ts[k++] = t[j];
				if (prior[j] > 0)
					ratio[nr++] = t[j] / prior[j];
			}
		}
		if (prior[i] > 0 && nr) { /* the prior, scaled by the others */
			sum[COST_PRIOR] += rel_err(prior[i] * lower_median(ratio, nr), t[i]);
			cnt[COST_PRIOR]++;
		}
		if (fit_linear(xs, ts, k, c)) {
			sum[COST_LINEAR] += rel_err(eval_linear(c, &x[i]), t[i]);
			cnt[COST_LINEAR]++;
		}
		if (fit_power(xs, ts, k, pw)) {
			sum[COST_POWER] += rel_err(eval_power(pw, &x[i]), t[i]);
			cnt[COST_POWER]++;
		}
		nk = make_knots(xs, ts, k, kx, kt, &dim);
		double e = eval_interp(kx, kt, nk, dim, &x[i]);
		if (!isnan(e)) { /* the ends are not interpolation's to answer */
			sum[COST_INTERP] += rel_err(e, t[i]);
			cnt[COST_INTERP]++;
		}
	}
	for (size_t j = 0; j < sizeof(methods) / sizeof(methods[0]); j++)
		if (cnt[methods[j]])
			m->loo[methods[j]] = sum[methods[j]] / cnt[methods[j]];
}

void prof_model_refit(struct model *m, bool sizes_changed)
{
	struct kernel_features x[FP_SLOTS];
	double t[FP_SLOTS], prior[FP_SLOTS], ratio[FP_SLOTS];
	unsigned n = 0, nr = 0;

	for (unsigned s = 0; s < FP_SLOTS; s++) {
		if (m->priv[s].n) {
			m->priv[s].fit_est = m->priv[s].est;
			x[n] = m->priv[s].f;
			prior[n] = m->priv[s].prior;
			t[n] = m->priv[s].est;
			if (prior[n] > 0)
				ratio[nr++] = t[n] / prior[n];
			n++;
		}
	}
	/* The prior's scale from the estimates of now, as the fits are (the
	 * ring of past ratios when the footprints' priors are not known: a
	 * model loaded from a document). */
	if (nr)
		m->scale = fmin(fmax(lower_median(ratio, nr), SCALE_MIN), SCALE_MAX);
	m->lin_ok = fit_linear(x, t, n, m->lin);
	m->pw_ok = fit_power(x, t, n, m->pw);
	m->nknots = make_knots(x, t, n, m->kx, m->kt, &m->kdim);
	/* Not only when a size comes: the errors scored when each size had
	 * one sample would otherwise choose the method for good. But n sets
	 * of fits each time (~120 us at 24 sizes): besides when a size came,
	 * at most once per LOO_EVERY * n samples learned (a set of fits per
	 * LOO_EVERY samples, amortised). */
	if (sizes_changed || m->loo_wait >= LOO_EVERY * n) {
		loo_errors(m, x, t, prior, n);
		m->loo_wait = 0;
	}
}

/* The method for unseen footprints: the lowest held-out error among the
 * scored ones, the prior when none is. */
/* A method's held-out error: leave-one-out where computed, else its
 * prequential score; < 0 when it has neither. */
static double method_err(const struct model *m, int s)
{
	if (s != COST_HISTORY && m->loo[s] >= 0)
		return m->loo[s];
	return m->err_n[s] ? m->err[s] : -1.0;
}

/* The method for unseen footprints: the lowest held-out error among the
 * available ones, the prior when none is scored. */
static int choose_unseen(const struct model *m)
{
	const bool avail[COST_SOURCE_COUNT] = { [COST_PRIOR] = true,
		                                [COST_LINEAR] = m->lin_ok,
		                                [COST_POWER] = m->pw_ok,
		                                [COST_INTERP] = m->nknots >= 2 };
	int best = COST_PRIOR;
	double e = INFINITY;

	for (int s = 0; s < COST_SOURCE_COUNT; s++) {
		double err = method_err(m, s);

		if (s != COST_HISTORY && avail[s] && err >= 0 && err < e) {
			best = s;
			e = err;
		}
	}
	return best;
}

void prof_model_publish(struct model *m)
{
	seq_begin(&m->pub.seq);
	SEQ_ST(m->pub.nfp, m->nfp);
	SEQ_ST(m->pub.best, choose_unseen(m));
	for (int j = 0; j < NCOEF; j++)
		SEQ_ST(m->pub.lin[j], m->lin_ok ? m->lin[j] : 0.0);
	SEQ_ST(m->pub.pw[0], m->pw_ok ? m->pw[0] : 0.0);
	SEQ_ST(m->pub.pw[1], m->pw_ok ? m->pw[1] : 0.0);
	SEQ_ST(m->pub.scale, m->scale);
	for (int s = 0; s < COST_SOURCE_COUNT; s++)
		SEQ_ST(m->pub.err[s], method_err(m, s));
	seq_end(&m->pub.seq);
	seq_begin(&m->knots.seq);
	SEQ_ST(m->knots.n, m->nknots);
	SEQ_ST(m->knots.dim, m->kdim);
	for (unsigned i = 0; i < m->nknots; i++) {
		SEQ_ST(m->knots.x[i], m->kx[i]);
		SEQ_ST(m->knots.t[i], m->kt[i]);
	}
	seq_end(&m->knots.seq);
}

/* ---- predict ---------------------------------------------------------------- */

struct model_view {
	int best;
	double lin[NCOEF], pw[2], scale, err[COST_SOURCE_COUNT];
};

static void model_read(const struct model *m, struct model_view *v)
{
	uint32_t s;

	do {
		s = seq_read_begin(&m->pub.seq);
		v->best = SEQ_LD(m->pub.best);
		for (int j = 0; j < NCOEF; j++)
			v->lin[j] = SEQ_LD(m->pub.lin[j]);
		v->pw[0] = SEQ_LD(m->pub.pw[0]);
		v->pw[1] = SEQ_LD(m->pub.pw[1]);
		v->scale = SEQ_LD(m->pub.scale);
		for (int j = 0; j < COST_SOURCE_COUNT; j++)
			v->err[j] = SEQ_LD(m->pub.err[j]);
	} while (seq_read_retry(&m->pub.seq, s));
}

static void predict_unseen(const struct model *m, const struct model_view *v, double prior,
                           const struct kernel_features *f, struct cost_pred *out)
{
	double ns = NAN;
	int src = v->best;

	if (src == COST_INTERP) {
		ns = eval_interp_pub(&m->knots, f);
		/* Outside the sizes seen: the better of the two fits. */
		if (isnan(ns))
			src = v->err[COST_POWER] >= 0 && (v->err[COST_LINEAR] < 0 ||
			                                  v->err[COST_POWER] < v->err[COST_LINEAR])
			              ? COST_POWER
			              : COST_LINEAR;
	}
	if (src == COST_LINEAR)
		ns = eval_linear(v->lin, f);
	else if (src == COST_POWER)
		ns = eval_power(v->pw, f);
	if (ns_ok(ns) && v->err[src] >= 0) {
		*out = (struct cost_pred){ ns, fmax(v->err[src], 0.01) * ns, src };
		return;
	}
	ns = prior * v->scale;
	out->ns = ns;
	out->spread_ns =
	        (v->err[COST_PRIOR] >= 0 ? fmax(v->err[COST_PRIOR], 0.01) : PRIOR_SPREAD) * ns;
	out->source = COST_PRIOR;
}

static struct model *model_at(const struct profiler *p, uint32_t kernel, uint32_t device)
{
	return prof_model(p, p->dev_slot[device], kernel);
}

/* The learned models' answer (profiler_predict past the oracle). Kept out
 * of line: its frame (features, model view, footprint view) would
 * otherwise be set up on every call, the simulator's oracle ones too,
 * which a policy makes once per device group per task. */
__attribute__((noinline)) static void predict_model(const struct profiler *p, uint32_t kernel,
                                                    uint32_t device,
                                                    const struct kernel_features *f,
                                                    struct cost_pred *out)
{
	struct kernel_features x;
	struct model_view v;
	struct fp_view h;
	struct model *m;
	double prior;

	x = clean_features(f);
	if (kernel >= p->nkernels || kernel == KERNEL_NOOP) {
		prior = prior_ns(&p->fig[device], &x);
		*out = (struct cost_pred){ prior, PRIOR_SPREAD * prior, COST_PRIOR };
		return;
	}
	m = model_at(p, kernel, device);
	/* The prior only where the footprint's history does not answer. */
	if (LD(m->pub.nfp) && prof_fp_find(m, footprint_key(&x), &x, &h) >= 0 && h.n) {
		if (h.n >= 2)
			goto history;
		model_read(m, &v);
		if (!(v.err[v.best] >= 0 && v.err[COST_HISTORY] >= 0 &&
		      v.err[v.best] < 0.5 * v.err[COST_HISTORY]))
			goto history;
		predict_unseen(m, &v, prior_ns(&p->fig[device], &x), &x, out);
		return;
	}
	model_read(m, &v);
	predict_unseen(m, &v, prior_ns(&p->fig[device], &x), &x, out);
	return;
history:
	*out = (struct cost_pred){ h.est, h.spread, COST_HISTORY };
}

void profiler_predict(const struct profiler *p, uint32_t kernel, uint32_t device,
                      const struct kernel_features *f, struct cost_pred *out)
{
	if (!p || device >= p->ndev) {
		*out = (struct cost_pred){ 0, 0, COST_PRIOR };
		return;
	}
	if (p->oracle && kernel == p->oracle_kernel) {
		double ns;
		p->oracle(p->oracle_ctx, &device, 1, f, -INFINITY, NS_MAX, &ns);
		*out = (struct cost_pred){ ns, 0, COST_HISTORY };
		return;
	}
	predict_model(p, kernel, device, f, out);
}

bool profiler_predict_row(const struct profiler *p, uint32_t kernel, const uint32_t *dev,
                          uint32_t n, uint32_t dev_max, const struct kernel_features *f,
                          double least, double *ns)
{
	if (!p || !p->oracle || kernel != p->oracle_kernel || dev_max >= p->ndev)
		return false;
	/* predict's NS_MAX for a device it cannot run on, raised as any other
	 * figure */
	p->oracle(p->oracle_ctx, dev, n, f, least, NS_MAX > least ? NS_MAX : least, ns);
	return true;
}

double profiler_roofline_ns(const struct profiler *p, uint32_t device,
                            const struct kernel_features *f)
{
	if (!p || device >= p->ndev)
		return 0;
	/* Features no kernel gives (NaN, beyond FEAT_MAX) price as unbounded:
	 * predict reads them as zero, which admission must not. */
	if (!features_ok(f))
		return INFINITY;
	return prior_ns(&p->fig[device], f);
}

/* ---- observe ------------------------------------------------------------------- */

/* Prequential scoring of x before it is learned; returns whether x is an
 * outlier of its footprint (slot, -1 when new). */
static bool model_score(const struct profiler *p, struct model *m, uint32_t kernel, uint32_t device,
                        const struct kernel_features *f, int slot, double prior, double x)
{
	struct cost_pred cp;

	if (slot >= 0) {
		const struct fp_priv *v = &m->priv[slot];

		if (v->n >= 3 && fabs(x - v->est) > fmax(5 * v->spread, 0.5 * v->est))
			return true;
		ewma(&m->err[COST_HISTORY], &m->err_n[COST_HISTORY], rel_err(v->est, x));
	} else {
		ewma(&m->err[COST_PRIOR], &m->err_n[COST_PRIOR], rel_err(prior * m->scale, x));
		if (m->lin_ok)
			ewma(&m->err[COST_LINEAR], &m->err_n[COST_LINEAR],
			     rel_err(eval_linear(m->lin, f), x));
		if (m->pw_ok)
			ewma(&m->err[COST_POWER], &m->err_n[COST_POWER],
			     rel_err(eval_power(m->pw, f), x));
		double e = eval_interp(m->kx, m->kt, m->nknots, m->kdim, f);
		if (!isnan(e))
			ewma(&m->err[COST_INTERP], &m->err_n[COST_INTERP], rel_err(e, x));
	}
	profiler_predict(p, kernel, device, f, &cp);
	ewma(&m->recent_err, &m->recent_n, rel_err(cp.ns, x));
	prof_recent_push(m, cp.ns, x);
	return false;
}

void profiler_observe(struct profiler *p, uint32_t kernel, uint32_t device,
                      const struct kernel_features *f, uint64_t measured_ns)
{
	struct kernel_features x;
	struct fp_view h;
	struct model *m;
	double prior, t = (double)measured_ns;
	uint64_t key;
	int slot;

	/* The oracle's kernel first: the simulator observes every task of it. */
	if (!p || (p->oracle && kernel == p->oracle_kernel) || device >= p->ndev ||
	    kernel >= p->nkernels || kernel == KERNEL_NOOP || !measured_ns || !features_ok(f) ||
	    !ns_ok(t))
		return;
	x = clean_features(f);
	key = footprint_key(&x);
	m = model_at(p, kernel, device);
	/* A footprint whose ring is full learns one sample in SETTLED_STRIDE:
	 * its median hardly moves, and workers finishing many small tasks of
	 * one size do not queue on the model's lock. */
	if (prof_fp_find(m, key, &x, &h) >= 0 && h.n >= RING &&
	    atomic_fetch_add_explicit(&m->settled, 1, memory_order_relaxed) % SETTLED_STRIDE) {
		atomic_fetch_add_explicit(&m->skipped, 1, memory_order_relaxed);
		return;
	}

	prior = prior_ns(&p->fig[device], &x);
	pthread_mutex_lock(&m->lock);
	slot = prof_fp_find(m, key, &x, &h);
	if (model_score(p, m, kernel, device, &x, slot, prior, t))
		count(&m->outliers);
	bool fresh = slot < 0;
	if (fresh)
		slot = (int)prof_fp_insert(m, key, &x);
	struct fp_priv *v = &m->priv[slot];
	count(&m->samples);
	if (m->loo_wait < UINT32_MAX)
		m->loo_wait++;
	v->last_use = ++m->tick;
	v->prior = prior;
	/* A full ring whose oldest sample (the one replaced) equals the new
	 * one holds the same values after: its median and spread stand (the
	 * simulator's stated costs repeat exactly). */
	bool same = v->len == RING && v->ring[v->head] == t;
	prof_fp_push(v, t);
	if (!same)
		prof_fp_stats(v);
	prof_fp_publish(m, (unsigned)slot);
	/* The fits and the prior's scale follow the footprints' estimates:
	 * refitted only when one is new or moved, so the steady state (one
	 * more sample of a known size) costs a push and a median. */
	if (fresh || fabs(v->est - v->fit_est) > REFIT_MOVE * v->fit_est) {
		if (prior > 0)
			prof_push_ratio(m, v->est / prior);
		prof_model_refit(m, fresh);
	}
	prof_model_publish(m);
	pthread_mutex_unlock(&m->lock);
}

/* ---- transfers -------------------------------------------------------------------- */

static struct link_state *link_at(const struct profiler *p, uint16_t src, uint16_t dst)
{
	if (!p || src >= p->nnodes || dst >= p->nnodes)
		return NULL;
	return (struct link_state *)&p->link[src][dst];
}

/* Asked before copy_begin: the copy would share the link with those in
 * flight, so it gets 1 / (in flight + 1) of the bandwidth. Unknown nodes: 0. */
double profiler_predict_copy(const struct profiler *p, uint16_t src, uint16_t dst, uint64_t bytes)
{
	struct link_state *l = link_at(p, src, dst);
	double bw, share;
	int inflight;

	if (!l)
		return 0;
	bw = LD(l->gbps_seen);
	if (!(bw > 0))
		bw = LD(l->gbps_cal);
	inflight = LD(l->inflight);
	share = 1.0 + (inflight > 0 ? inflight : 0);
	return LD(l->latency) + (double)bytes * share / bw;
}

void profiler_copy_begin(struct profiler *p, uint16_t src, uint16_t dst)
{
	struct link_state *l = link_at(p, src, dst);

	if (l)
		atomic_fetch_add_explicit(&l->inflight, 1, memory_order_relaxed);
}

void profiler_copy_end(struct profiler *p, uint16_t src, uint16_t dst)
{
	struct link_state *l = link_at(p, src, dst);
	int v;

	if (!l)
		return;
	v = LD(l->inflight);
	while (v > 0 &&
	       !atomic_compare_exchange_weak_explicit(&l->inflight, &v, v - 1, memory_order_relaxed,
	                                              memory_order_relaxed))
		;
}

/* The bandwidth is refined only from copies whose time is mostly transfer
 * (more than twice the latency): for small ones the latency's noise would
 * swamp it. Each sample is normalised to the whole link (times concurrent);
 * EWMA with alpha 0.2, the first sample taken as is. */
void profiler_observe_copy(struct profiler *p, uint16_t src, uint16_t dst, uint64_t bytes,
                           uint64_t measured_ns, unsigned concurrent)
{
	struct link_state *l = link_at(p, src, dst);
	double lat, t = (double)measured_ns, bw, old;

	if (!l || !bytes || !measured_ns)
		return;
	pthread_mutex_lock(&p->link_lock);
	ST(l->copies, LD(l->copies) < COUNT_MAX ? LD(l->copies) + 1 : COUNT_MAX);
	lat = LD(l->latency);
	if (t > 2 * lat) {
		bw = (double)bytes * (concurrent ? concurrent : 1) / (t - lat);
		bw = fmin(fmax(bw, GBPS_MIN), GBPS_MAX);
		old = LD(l->gbps_seen);
		ST(l->gbps_seen, old > 0 ? old + 0.2 * (bw - old) : bw);
	}
	pthread_mutex_unlock(&p->link_lock);
}

void profiler_set_oracle(struct profiler *p, uint32_t kernel, profiler_oracle_fn fn, void *ctx)
{
	p->oracle_kernel = kernel;
	p->oracle_ctx = ctx;
	p->oracle = fn;
}

void profiler_set_oracle_ahead(struct profiler *p, profiler_oracle_ahead_fn fn)
{
	p->oracle_ahead = fn;
}

void profiler_row_ahead(const struct profiler *p, uint32_t kernel, const struct kernel_features *f)
{
	if (p && p->oracle_ahead && kernel == p->oracle_kernel)
		p->oracle_ahead(p->oracle_ctx, f);
}

/* ---- create / destroy ---------------------------------------------------------------- */

/* The models of one slot (a device key), each kernel's. */
static struct model *slot_models_new(uint32_t nkernels)
{
	size_t n = nkernels ? nkernels : 1;
	struct model *m = aligned_alloc(_Alignof(struct model), n * sizeof(struct model));
	if (!m)
		return NULL;
	memset(m, 0, n * sizeof(struct model));
	for (uint32_t k = 0; k < nkernels; k++) {
		model_init(&m[k]);
		pthread_mutex_init(&m[k].lock, NULL);
	}
	return m;
}

static void slot_models_free(struct model *m, uint32_t nkernels)
{
	if (!m)
		return;
	for (uint32_t k = 0; k < nkernels; k++)
		pthread_mutex_destroy(&m[k].lock);
	free(m);
}

/* The slot of a device key, made (with its models) when it is new; -1
 * when out of memory. */
static int slot_for(struct profiler *p, const char *key)
{
	uint32_t n = atomic_load(&p->nslots);
	for (uint32_t s = 0; s < n; s++)
		if (!strncmp(p->slot_key[s], key, CAL_KEY_MAX))
			return (int)s;
	if (n >= CAL_MAX_DEVICES || !(p->slot_models[n] = slot_models_new(p->nkernels)))
		return -1;
	snprintf(p->slot_key[n], CAL_KEY_MAX, "%.*s", CAL_KEY_MAX - 1, key);
	atomic_store_explicit(&p->nslots, n + 1, memory_order_release);
	return (int)n;
}

int profiler_create(const struct calibration *cal, struct profiler **out)
{
	struct profiler *p;

	*out = NULL;
	if (!cal || cal->ndevices > CAL_MAX_DEVICES || cal->nnodes > CAL_MAX_NODES)
		return -TDM_EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -TDM_ENOMEM;
	p->nkernels = (uint32_t)kernel_count();
	p->aside = json_array();
	bool ok = p->aside != NULL;
	for (uint32_t i = 0; ok && i < cal->ndevices; i++) {
		int s = slot_for(p, cal->dev[i].key);
		ok = s >= 0;
		if (ok)
			p->dev_slot[i] = (uint32_t)s;
	}
	if (!ok) {
		json_decref(p->aside);
		for (uint32_t s = 0; s < p->nslots; s++)
			slot_models_free(p->slot_models[s], p->nkernels);
		free(p);
		return -TDM_ENOMEM;
	}
	p->ndev = cal->ndevices;
	p->nnodes = cal->nnodes;
	p->cal = *cal;
	pthread_mutex_init(&p->cal_lock, NULL);
	pthread_mutex_init(&p->link_lock, NULL);
	pthread_mutex_init(&p->aside_lock, NULL);
	set_figures(p, cal);
	*out = p;
	return 0;
}

void profiler_destroy(struct profiler *p)
{
	if (!p)
		return;
	for (uint32_t s = 0; s < p->nslots; s++)
		slot_models_free(p->slot_models[s], p->nkernels);
	pthread_mutex_destroy(&p->cal_lock);
	pthread_mutex_destroy(&p->link_lock);
	pthread_mutex_destroy(&p->aside_lock);
	json_decref(p->aside);
	free(p);
}

int profiler_add_device(struct profiler *p, const struct calibration *cal, uint32_t device)
{
	if (!p || !cal || device >= CAL_MAX_DEVICES || device >= cal->ndevices ||
	    cal->nnodes > CAL_MAX_NODES || cal->dev[device].node >= cal->nnodes)
		return -TDM_EINVAL;
	pthread_mutex_lock(&p->cal_lock);
	uint32_t n = atomic_load(&p->ndev);
	if (device > n) { /* ids are given in order */
		pthread_mutex_unlock(&p->cal_lock);
		return -TDM_EINVAL;
	}
	uint32_t before = atomic_load(&p->nslots);
	int s = slot_for(p, cal->dev[device].key);
	if (s < 0) {
		pthread_mutex_unlock(&p->cal_lock);
		return -TDM_ENOMEM;
	}
	p->dev_slot[device] = (uint32_t)s;
	p->cal.dev[device] = cal->dev[device];
	if (device + 1 > p->cal.ndevices)
		p->cal.ndevices = device + 1;
	/* A node it brings: its links, as the caller measured or derived them. */
	uint32_t node = cal->dev[device].node, nn = atomic_load(&p->nnodes);
	if (node >= nn) {
		for (uint32_t a = 0; a <= node; a++)
			for (uint32_t b = 0; b <= node; b++)
				if (a >= nn || b >= nn || a == node || b == node)
					p->cal.link[a][b] = cal->link[a][b];
		p->cal.nnodes = node + 1;
		atomic_store_explicit(&p->nnodes, node + 1, memory_order_release);
	}
	const struct cal_device *d = &p->cal.dev[device];
	ST(p->fig[device].launch, nonneg_or_zero(d->launch_ns));
	ST(p->fig[device].gflops, rate_or(d->gemm_gflops, 1.0));
	ST(p->fig[device].gbps, rate_or(d->mem_gbps, 1.0));
	set_figures(p, &p->cal); /* the links of a new node */
	if (device == n)
		atomic_store_explicit(&p->ndev, n + 1, memory_order_release);
	pthread_mutex_unlock(&p->cal_lock);
	/* A model never used before may have been learned by an earlier run
	 * (kept aside since): it now has a slot. */
	if ((uint32_t)s >= before)
		prof_adopt_aside(p, p->slot_key[s]);
	return 0;
}

/* Device keys stay those profiler_create and profiler_add_device gave: the
 * models are keyed by them. */
void profiler_set_calibration(struct profiler *p, const struct calibration *cal)
{
	if (!p || !cal)
		return;
	pthread_mutex_lock(&p->cal_lock);
	for (uint32_t i = 0; i < p->ndev && i < cal->ndevices; i++) {
		struct cal_device *d = &p->cal.dev[i];

		d->node = cal->dev[i].node;
		d->gemm_gflops = cal->dev[i].gemm_gflops;
		d->mem_gbps = cal->dev[i].mem_gbps;
		d->launch_ns = cal->dev[i].launch_ns;
	}
	for (uint32_t s = 0; s < p->nnodes && s < cal->nnodes; s++)
		for (uint32_t t = 0; t < p->nnodes && t < cal->nnodes; t++)
			p->cal.link[s][t] = cal->link[s][t];
	memcpy(p->cal.fingerprint, cal->fingerprint, sizeof(p->cal.fingerprint));
	p->cal.seconds = cal->seconds;
	p->cal.from_cache = cal->from_cache;
	set_figures(p, &p->cal);
	pthread_mutex_unlock(&p->cal_lock);
}

void profiler_calibration(const struct profiler *p, struct calibration *out)
{
	struct profiler *w = (struct profiler *)p; /* the lock only */

	pthread_mutex_lock(&w->cal_lock);
	*out = p->cal;
	pthread_mutex_unlock(&w->cal_lock);
}
