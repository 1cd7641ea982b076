/* What the LLM examples (llm_layer.c, llm_serve.c) share: error helpers,
 * the seeded random fill of their weights, slices of daemon buffers, and
 * the plain-loop reference kernels they check the daemon against.
 *
 * Each example builds into a binary of its own, so this is a header of
 * static inline functions. Include it after defining
 * `static const char *prog`, the program's name for its messages.
 */
#ifndef TANDEM_EXAMPLES_LLM_COMMON_H
#define TANDEM_EXAMPLES_LLM_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tandem.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define TRY(x)                                                                                     \
	do {                                                                                       \
		int err_ = (x);                                                                    \
		if (err_)                                                                          \
			return err_;                                                               \
	} while (0)

#define SEED 0x9e3779b97f4a7c15ull
#define RMS_EPS 1e-5f
#define ROPE_THETA 10000.0f
#define MAX_REL_ERR 1e-3

/* ---- small helpers -------------------------------------------------------- */

static inline int check(int err, const char *what)
{
	if (err)
		fprintf(stderr, "%s: %s: %s\n", prog, what, tdm_strerror(err));
	return err;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: uniform in [-1, 1). */
static inline float frand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return (float)((x * 0x2545f4914f6cdd1dull) >> 40) / (float)(1 << 23) - 1.0f;
}

static inline void fill_random(float *p, size_t n, float scale, float bias, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = bias + scale * frand(seed);
}

/* ---- buffers -------------------------------------------------------------- */

/* A run of floats (or int32s) inside a daemon buffer: what a task names. */
struct slice {
	tdm_buffer h;
	uint64_t off, len; /* bytes */
	float *p; /* the client's view of the first element */
};

/* Hands out consecutive slices of one buffer. */
struct carver {
	tdm_buffer h;
	char *base;
	uint64_t used;
};

static inline struct slice carve(struct carver *cv, size_t n)
{
	struct slice s = { .h = cv->h,
		           .off = cv->used,
		           .len = n * sizeof(float),
		           .p = (float *)(cv->base + cv->used) };

	cv->used += s.len;
	return s;
}

static inline int alloc_carver(tdm_client *c, size_t nfloats, uint32_t flags, struct carver *cv)
{
	void *p;
	int err = tdm_buffer_alloc(c, nfloats * sizeof(float), flags, &cv->h, &p);

	cv->base = p;
	cv->used = 0;
	return check(err, "buffer");
}

/* A buffer of its own, as one slice. */
static inline int alloc_slice(tdm_client *c, size_t nfloats, uint32_t flags, struct slice *s)
{
	struct carver cv;

	TRY(alloc_carver(c, nfloats, flags, &cv));
	*s = carve(&cv, nfloats);
	return 0;
}

/* rows [r, r + n) of a slice of rows of `width` floats */
static inline struct slice rows(const struct slice *s, int r, int n, int width)
{
	struct slice o = *s;

	o.off += (uint64_t)r * (uint64_t)width * sizeof(float);
	o.len = (uint64_t)n * (uint64_t)width * sizeof(float);
	o.p += (size_t)r * (size_t)width;
	return o;
}

/* A decoder layer's weights besides its feed-forward part: the norm before
 * the attention, the attention's projections, the norm after it. */
struct attn_weights {
	struct slice norm1, wq, wk, wv, wo, norm2;
};

/* Carves them from cv, then fills them from seed: the norms near 1, the
 * projections scaled by 1/sqrt(fan-in) so that activations stay near 1. */
static inline void carve_attn_weights(struct carver *cv, size_t dm, size_t qd, size_t kvd,
                                      struct attn_weights *a, uint64_t *seed)
{
	a->norm1 = carve(cv, dm);
	a->wq = carve(cv, dm * qd);
	a->wk = carve(cv, dm * kvd);
	a->wv = carve(cv, dm * kvd);
	a->wo = carve(cv, qd * dm);
	a->norm2 = carve(cv, dm);
	fill_random(a->norm1.p, dm, 0.1f, 1.0f, seed);
	fill_random(a->wq.p, dm * qd, 1.0f / sqrtf((float)dm), 0.0f, seed);
	fill_random(a->wk.p, dm * kvd, 1.0f / sqrtf((float)dm), 0.0f, seed);
	fill_random(a->wv.p, dm * kvd, 1.0f / sqrtf((float)dm), 0.0f, seed);
	fill_random(a->wo.p, qd * dm, 1.0f / sqrtf((float)qd), 0.0f, seed);
	fill_random(a->norm2.p, dm, 0.1f, 1.0f, seed);
}

static inline struct tdm_arg arg(const struct slice *s, uint32_t mode)
{
	return TDM_ARG(s->h, mode, s->off, s->len);
}

/* ---- where the tasks ran ---------------------------------------------------- */

/* Per device index: tasks run and time spent running them. */
struct dev_stat {
	uint64_t tasks, busy_ns;
};

/* Adds the tasks of a finished graph (asked for task info) to dev[0..*ndev),
 * growing it should a task report a higher device index. */
static inline int record_tasks(struct dev_stat **dev, uint32_t *ndev, const tdm_graph *g)
{
	uint32_t n = tdm_graph_task_count(g);

	for (uint32_t i = 0; i < n; i++) {
		const struct tdm_task_info *ti = tdm_graph_task_info(g, i);
		if (!ti)
			continue;
		if (ti->device >= *ndev) {
			uint32_t nd = ti->device + 1;
			struct dev_stat *d = realloc(*dev, nd * sizeof(*d));
			if (!d)
				return -TDM_ENOMEM;
			memset(d + *ndev, 0, (nd - *ndev) * sizeof(*d));
			*dev = d;
			*ndev = nd;
		}
		(*dev)[ti->device].tasks++;
		if (ti->end_ns > ti->start_ns)
			(*dev)[ti->device].busy_ns += ti->end_ns - ti->start_ns;
	}
	return 0;
}

/* ---- the reference: plain loops, double precision ------------------------- */

static inline void ref_softmax(const double *x, double *p, int n)
{
	double max = x[0], sum = 0;

	for (int i = 1; i < n; i++)
		max = x[i] > max ? x[i] : max;
	for (int i = 0; i < n; i++)
		sum += p[i] = exp(x[i] - max);
	for (int i = 0; i < n; i++)
		p[i] /= sum;
}

static inline bool picked(const int *ids, int n, int e)
{
	for (int j = 0; j < n; j++)
		if (ids[j] == e)
			return true;
	return false;
}

/* The k most probable experts (ties: the lower index), in descending order. */
static inline void ref_topk(const double *p, int ne, int k, int *ids)
{
	for (int j = 0; j < k; j++) {
		int best = -1;
		for (int e = 0; e < ne; e++)
			if (!picked(ids, j, e) && (best < 0 || p[e] > p[best]))
				best = e;
		ids[j] = best;
	}
}

static inline void ref_rmsnorm(const double *x, const float *w, double *y, int n)
{
	double ss = 0;

	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	double r = 1.0 / sqrt(ss / n + RMS_EPS);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * r * w[i];
}

/* y (out) = x (in) W (in x out), added to y when acc */
static inline void ref_matvec(const double *x, const float *w, double *y, int in, int out, bool acc)
{
	if (!acc)
		for (int j = 0; j < out; j++)
			y[j] = 0;
	for (int i = 0; i < in; i++)
		for (int j = 0; j < out; j++)
			y[j] += x[i] * w[(size_t)i * out + j];
}

static inline void ref_rope(double *x, int nheads, int hd, int pos)
{
	for (int h = 0; h < nheads; h++) {
		double *v = x + (size_t)h * hd;
		for (int i = 0; i < hd / 2; i++) {
			/* The angle in single precision, as docs/kernels.md says. */
			float f = (float)pos * powf(ROPE_THETA, -2.0f * (float)i / (float)hd);
			double a = v[i], b = v[i + hd / 2];
			v[i] = a * cos(f) - b * sin(f);
			v[i + hd / 2] = a * sin(f) + b * cos(f);
		}
	}
}

/* The SwiGLU's hidden layer: g = silu(x Wg) * (x Wu), with u its scratch;
 * x has dm elements, g and u ff. */
static inline void ref_swiglu_hidden(const double *x, const float *wg, const float *wu, double *g,
                                     double *u, int dm, int ff)
{
	ref_matvec(x, wg, g, dm, ff, false);
	ref_matvec(x, wu, u, dm, ff, false);
	for (int i = 0; i < ff; i++)
		g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
}

/* The largest errors of got against want: the relative error of an element
 * is measured against 1% of the largest |want| where that is more (rounding
 * noise on a near-zero element means nothing); NaN counts as infinite. */
struct error {
	double abs, rel;
};

static inline struct error compare(const float *got, const double *want, int n)
{
	struct error e = { 0, 0 };
	double big = 0;

	for (int i = 0; i < n; i++)
		big = fmax(big, fabs(want[i]));
	double floor = 1e-2 * big;
	for (int i = 0; i < n; i++) {
		double d = fabs(got[i] - want[i]);
		double rel = d / fmax(fabs(want[i]), floor);
		if (isnan(d) || isnan(rel))
			d = rel = INFINITY;
		e.abs = fmax(e.abs, d);
		e.rel = fmax(e.rel, rel);
	}
	return e;
}

#endif
