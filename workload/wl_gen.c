/* Workload generators (see workload.h): tiled dense factorisations as
 * kernel tasks on tile buffers, Topcuoglu, Hariri and Wu's random task
 * graphs with per-device costs, and layered random graphs (layer by
 * layer). All run in time and memory linear in the size of what they
 * make, and depend on nothing but their parameters. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errbuf.h"
#include "common/hugepage.h"
#include "workload/workload.h"
#include "tandem.h"

#define GEN_NOIDX UINT32_MAX

static int gen_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static int gen_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- tiled factorisations ---------------------------------------------------- */

const char *wl_tiled_name(enum wl_tiled_kind kind)
{
	switch (kind) {
	case WL_TILED_CHOLESKY: return "cholesky";
	case WL_TILED_LU: return "lu";
	case WL_TILED_QR: return "qr";
	}
	return "unknown";
}

struct tiled {
	struct workload *w;
	uint32_t tiles, nb;
	uint32_t *tile_buf; /* [2 * tiles * tiles]: A tiles, then T tiles; GEN_NOIDX: none yet */
	bool have_feat[KERNEL_COUNT];
	struct kernel_features feat[KERNEL_COUNT];
};

/* The buffer of tile (i, j) of A (t = 0) or of T (t = 1), made on first use. */
static uint32_t tile(struct tiled *g, int t, uint32_t i, uint32_t j)
{
	struct workload *w = g->w;
	uint32_t *b = &g->tile_buf[((size_t)t * g->tiles + i) * g->tiles + j];

	if (*b == GEN_NOIDX) {
		*b = w->nbufs++;
		w->buf_bytes[*b] = 4.0 * g->nb * g->nb;
		w->buf_keep[*b] = false;
	}
	return *b;
}

/* Appends a task of kernel id on bufs[] (the kernel's argument modes); its
 * dependencies come once every task is in (wl_infer_edges). */
static void add_task(struct tiled *g, enum kernel_id id, const uint32_t *bufs, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void add_task(struct tiled *g, enum kernel_id id, const uint32_t *bufs, const char *fmt, ...)
{
	const struct kernel_def *k = kernel_by_id(id);
	struct workload *w = g->w;
	uint32_t v = w->ntasks++;
	struct wl_task *t = &w->tasks[v];
	va_list ap;

	memset(t, 0, sizeof(*t));
	va_start(ap, fmt);
	vsnprintf(t->name, sizeof(t->name), fmt, ap);
	va_end(ap);
	if (!g->have_feat[id]) {
		struct tdm_kernel_call call = { .nargs = k->nargs };

		call.s[0].i64 = g->nb;
		for (unsigned a = 0; a < k->nargs; a++)
			call.len[a] = 4ull * g->nb * g->nb;
		k->features(&call, &g->feat[id]);
		g->have_feat[id] = true;
	}
	t->has_kernel = true;
	t->kernel = (uint16_t)id;
	t->feat = g->feat[id];
	t->nargs = k->nargs;
	for (unsigned a = 0; a < k->nargs; a++) {
		t->args[a] = (struct wl_arg){ .buf = bufs[a], .mode = k->arg_modes[a] };
		if (k->arg_modes[a] & TDM_R)
			t->data_in += w->buf_bytes[bufs[a]];
		if (k->arg_modes[a] & TDM_W)
			t->data_out += w->buf_bytes[bufs[a]];
	}
}

static void gen_cholesky(struct tiled *g)
{
	uint32_t n = g->tiles, b[3];

	for (uint32_t k = 0; k < n; k++) {
		b[0] = tile(g, 0, k, k);
		add_task(g, KERNEL_SPOTRF, b, "potrf(%u)", k);
		for (uint32_t i = k + 1; i < n; i++) {
			b[0] = tile(g, 0, k, k);
			b[1] = tile(g, 0, i, k);
			add_task(g, KERNEL_STRSM, b, "trsm(%u,%u)", i, k);
		}
		for (uint32_t i = k + 1; i < n; i++) {
			b[0] = tile(g, 0, i, k);
			b[1] = tile(g, 0, i, i);
			add_task(g, KERNEL_SSYRK, b, "syrk(%u,%u)", i, k);
			for (uint32_t j = k + 1; j < i; j++) {
				b[0] = tile(g, 0, i, k);
				b[1] = tile(g, 0, j, k);
				b[2] = tile(g, 0, i, j);
				add_task(g, KERNEL_SGEMM_NT, b, "gemm(%u,%u,%u)", i, j, k);
			}
		}
	}
}

static void gen_lu(struct tiled *g)
{
	uint32_t n = g->tiles, b[3];

	for (uint32_t k = 0; k < n; k++) {
		b[0] = tile(g, 0, k, k);
		add_task(g, KERNEL_SGETRF, b, "getrf(%u)", k);
		for (uint32_t j = k + 1; j < n; j++) {
			b[0] = tile(g, 0, k, k);
			b[1] = tile(g, 0, k, j);
			add_task(g, KERNEL_STRSM, b, "trsm(%u,%u)", k, j);
		}
		for (uint32_t i = k + 1; i < n; i++) {
			b[0] = tile(g, 0, k, k);
			b[1] = tile(g, 0, i, k);
			add_task(g, KERNEL_STRSM, b, "trsm(%u,%u)", i, k);
		}
		for (uint32_t i = k + 1; i < n; i++)
			for (uint32_t j = k + 1; j < n; j++) {
				b[0] = tile(g, 0, i, k);
				b[1] = tile(g, 0, k, j);
				b[2] = tile(g, 0, i, j);
				add_task(g, KERNEL_SGEMM_NT, b, "gemm(%u,%u,%u)", i, j, k);
			}
	}
}

static void gen_qr(struct tiled *g)
{
	uint32_t n = g->tiles, b[4];

	for (uint32_t k = 0; k < n; k++) {
		b[0] = tile(g, 0, k, k);
		b[1] = tile(g, 1, k, k);
		add_task(g, KERNEL_SGEQRT, b, "geqrt(%u)", k);
		for (uint32_t j = k + 1; j < n; j++) {
			b[0] = tile(g, 0, k, k);
			b[1] = tile(g, 1, k, k);
			b[2] = tile(g, 0, k, j);
			add_task(g, KERNEL_SORMQR, b, "ormqr(%u,%u)", k, j);
		}
		for (uint32_t i = k + 1; i < n; i++) {
			b[0] = tile(g, 0, k, k);
			b[1] = tile(g, 0, i, k);
			b[2] = tile(g, 1, i, k);
			add_task(g, KERNEL_STSQRT, b, "tsqrt(%u,%u)", i, k);
			for (uint32_t j = k + 1; j < n; j++) {
				b[0] = tile(g, 0, k, j);
				b[1] = tile(g, 0, i, j);
				b[2] = tile(g, 0, i, k);
				b[3] = tile(g, 1, i, k);
				add_task(g, KERNEL_STSMQR, b, "tsmqr(%u,%u,%u)", i, j, k);
			}
		}
	}
}

int wl_gen_tiled(enum wl_tiled_kind kind, uint32_t tiles, uint32_t nb, struct workload *out,
                 char *err, size_t errlen)
{
	const char *name = wl_tiled_name(kind);
	struct tiled g = { .w = out, .tiles = tiles, .nb = nb };
	uint64_t t = tiles, ntasks, nbufs;
	int rc = 0;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	if (kind != WL_TILED_CHOLESKY && kind != WL_TILED_LU && kind != WL_TILED_QR)
		return gen_fail(err, errlen, -TDM_EINVAL, "tiled: unknown factorisation %d",
		                (int)kind);
	if (tiles < 1 || tiles > 1000)
		return gen_fail(err, errlen, -TDM_EINVAL, "%s: %u tiles, not in 1..1000", name,
		                tiles);
	if (nb < 1 || nb > 4096)
		return gen_fail(err, errlen, -TDM_EINVAL, "%s: tile size %u, not in 1..4096", name,
		                nb);
	/* Cholesky: sum over k of 1 + 2m + m(m-1)/2 (m = tiles-k-1) tasks;
	 * LU and QR: sum over k of (tiles-k)^2 */
	ntasks = kind == WL_TILED_CHOLESKY ? t * (t + 1) * (t + 2) / 6
	                                   : t * (t + 1) * (2 * t + 1) / 6;
	if (ntasks > WL_MAX_TASKS)
		return gen_fail(err, errlen, -TDM_EINVAL,
		                "%s: %u tiles make %llu tasks, more than %u", name, tiles,
		                (unsigned long long)ntasks, WL_MAX_TASKS);
	nbufs = 2 * t * t;

	out->tasks = malloc(ntasks * sizeof(*out->tasks));
	out->buf_bytes = malloc(nbufs * sizeof(*out->buf_bytes));
	out->buf_keep = malloc(nbufs * sizeof(*out->buf_keep));
	g.tile_buf = malloc(nbufs * sizeof(*g.tile_buf));
	if (!out->tasks || !out->buf_bytes || !out->buf_keep || !g.tile_buf) {
		rc = gen_fail(err, errlen, -TDM_ENOMEM, "%s: out of memory", name);
		wl_free(out);
		goto out;
	}
	for (uint64_t i = 0; i < nbufs; i++)
		g.tile_buf[i] = GEN_NOIDX;
	if (kind == WL_TILED_CHOLESKY)
		gen_cholesky(&g);
	else if (kind == WL_TILED_LU)
		gen_lu(&g);
	else
		gen_qr(&g);
	/* The edges the daemon would give this program: the dependency rule
	 * on each tile, in the algorithm's order (graph/build.h). */
	rc = wl_infer_edges(out);
	if (rc) {
		rc = rc == -TDM_ENOMEM ? gen_fail(err, errlen, rc, "%s: out of memory", name)
		                       : gen_fail(err, errlen, rc, "%s: more than %u edges", name,
		                                  WL_MAX_EDGES);
		wl_free(out);
		goto out;
	}
	out->units = WL_UNITS_NS;
	snprintf(out->name, sizeof(out->name), "%s-t%u-nb%u", name, tiles, nb);
out:
	free(g.tile_buf);
	return rc;
}

/* ---- random graphs (Topcuoglu, Hariri and Wu) --------------------------------- */

/* xoshiro256** seeded through splitmix64: the same numbers everywhere. */
struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in 0 .. n - 1 (n >= 1), without modulo bias. */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
	uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;

	do
		x = rng_next(r);
	while (x >= lim);
	return x % n;
}

static int push_edge(struct workload *w, uint32_t *cap, uint32_t src, uint32_t dst)
{
	if (w->nedges == *cap) {
		uint32_t c = *cap ? (*cap > WL_MAX_EDGES / 2 ? WL_MAX_EDGES : 2 * *cap) : 1024;
		struct wl_edge *p;

		if (w->nedges == WL_MAX_EDGES)
			return -TDM_EINVAL;
		p = realloc(w->edges, (size_t)c * sizeof(*p));
		if (!p)
			return -TDM_ENOMEM;
		w->edges = p;
		*cap = c;
	}
	w->edges[w->nedges++] = (struct wl_edge){ .src = src, .dst = dst, .data = 0 };
	return 0;
}

static int check_random(const struct wl_random_params *p, char *err, size_t errlen)
{
	if (!p)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: no parameters");
	if (p->n < 1 || p->n > WL_MAX_TASKS)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: n %u is not in 1..%u", p->n,
		                WL_MAX_TASKS);
	if (!isfinite(p->ccr) || p->ccr < 0 || p->ccr > 1000)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: ccr %g is not in 0..1000",
		                p->ccr);
	if (!isfinite(p->alpha) || !(p->alpha > 0) || p->alpha > 1e6)
		return gen_fail(err, errlen, -TDM_EINVAL,
		                "random: alpha %g is not > 0 (and at most 1e6)", p->alpha);
	if (p->out_degree < 1)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: out_degree must be at least 1");
	if ((uint64_t)p->n * p->out_degree > WL_MAX_EDGES)
		return gen_fail(err, errlen, -TDM_EINVAL,
		                "random: n * out_degree = %llu edges expected, more than %u",
		                (unsigned long long)p->n * p->out_degree, WL_MAX_EDGES);
	if (!isfinite(p->beta) || p->beta < 0 || p->beta > 2)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: beta %g is not in 0..2",
		                p->beta);
	if (p->ndev < 1 || p->ndev > 64)
		return gen_fail(err, errlen, -TDM_EINVAL, "random: ndev %u is not in 1..64",
		                p->ndev);
	if (!isfinite(p->w_dag) || p->w_dag < 0 || p->w_dag > 1e12)
		return gen_fail(err, errlen, -TDM_EINVAL,
		                "random: w_dag %g is not > 0 (0: 100) and at most 1e12", p->w_dag);
	return 0;
}

int wl_gen_random(const struct wl_random_params *p, struct workload *out, char *err, size_t errlen)
{
	struct rng r;
	uint32_t n, ndev, height, lo, hi, *first = NULL, *mark = NULL, edge_cap = 0;
	double w_dag, h, sum, mean_cost, *raw = NULL;
	bool *has_pred = NULL;
	int rc;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	rc = check_random(p, err, errlen);
	if (rc)
		return rc;
	n = p->n;
	ndev = p->ndev;
	w_dag = p->w_dag > 0 ? p->w_dag : 100;
	rng_seed(&r, p->seed);

	/* levels: a height uniform around sqrt(n) / alpha, every level at least
	 * one task, the rest spread with weights uniform in [0, 2) */
	h = sqrt((double)n) / p->alpha;
	lo = h / 2 < 1 ? 1 : h / 2 >= n ? n : (uint32_t)floor(h / 2);
	hi = 1.5 * h < 1 ? 1 : 1.5 * h >= n ? n : (uint32_t)ceil(1.5 * h);
	if (hi < lo)
		hi = lo;
	height = lo + (uint32_t)rng_below(&r, (uint64_t)hi - lo + 1);

	first = malloc(((size_t)height + 1) * sizeof(*first));
	raw = malloc((size_t)height * sizeof(*raw));
	mark = calloc(n, sizeof(*mark));
	has_pred = calloc(n, sizeof(*has_pred));
	out->tasks = calloc(n, sizeof(*out->tasks));
	out->dev_cost = malloc((size_t)n * ndev * sizeof(*out->dev_cost));
	hugepage_advise(out->dev_cost, (size_t)n * ndev * sizeof(*out->dev_cost));
	if (!first || !raw || !mark || !has_pred || !out->tasks || !out->dev_cost) {
		rc = -TDM_ENOMEM;
		goto out;
	}
	sum = 0;
	for (uint32_t l = 0; l < height; l++) {
		raw[l] = 2 * rng_unit(&r);
		sum += raw[l];
	}
	{
		uint32_t left = n - height, given = 0, *width = mark; /* mark is free still */

		for (uint32_t l = 0; l < height; l++) {
			width[l] = 1 + (sum > 0 ? (uint32_t)floor(raw[l] / sum * left) : 0);
			given += width[l] - 1;
		}
		for (; given < left; given++)
			width[rng_below(&r, height)]++;
		first[0] = 0;
		for (uint32_t l = 0; l < height; l++) {
			first[l + 1] = first[l] + width[l];
			width[l] = 0;
		}
	}

	/* costs: w_i uniform in [0, 2 w_dag], on each device uniform in
	 * [w_i (1 - beta/2), w_i (1 + beta/2)] */
	mean_cost = 0;
	for (uint32_t v = 0; v < n; v++) {
		struct wl_task *t = &out->tasks[v];
		double tsum = 0;
		double *row = out->dev_cost + (size_t)v * ndev, wi = 2 * w_dag * rng_unit(&r);
		bool same = true;

		snprintf(t->name, sizeof(t->name), "t%u", v);
		for (uint32_t d = 0; d < ndev; d++) {
			row[d] = wi * (1 - p->beta / 2) + wi * p->beta * rng_unit(&r);
			same = same && row[d] == row[0];
			tsum += row[d];
		}
		/* as a trace's reader computes it from the row */
		t->cost = same ? row[0] : tsum / ndev;
		mean_cost += t->cost;
	}
	mean_cost /= n;
	out->ntasks = n;
	out->ndev_cost = ndev;

	/* edges: each task of a level but the last to a number of distinct
	 * tasks of later levels uniform in 1 .. 2 out_degree - 1 (Floyd's
	 * sampling); then a task of level l >= 1 with no predecessor gets one
	 * from level l - 1 */
	for (uint32_t l = 0; l + 1 < height; l++) {
		uint32_t base = first[l + 1], range = n - base;

		for (uint32_t u = first[l]; u < first[l + 1]; u++) {
			uint64_t d = 1 + rng_below(&r, 2 * (uint64_t)p->out_degree - 1);

			if (d > range)
				d = range;
			for (uint32_t j = range - (uint32_t)d; j < range; j++) {
				uint32_t x = (uint32_t)rng_below(&r, (uint64_t)j + 1);

				if (mark[base + x] == u + 1)
					x = j;
				mark[base + x] = u + 1;
				has_pred[base + x] = true;
				rc = push_edge(out, &edge_cap, u, base + x);
				if (rc)
					goto out;
			}
		}
	}
	for (uint32_t l = 1; l < height; l++)
		for (uint32_t v = first[l]; v < first[l + 1]; v++)
			if (!has_pred[v]) {
				uint32_t u = first[l - 1] +
				             (uint32_t)rng_below(&r, first[l] - first[l - 1]);

				rc = push_edge(out, &edge_cap, u, v);
				if (rc)
					goto out;
			}

	/* edge data uniform in [0, 2), then scaled so that its mean is exactly
	 * ccr times the mean cost */
	sum = 0;
	for (uint32_t e = 0; e < out->nedges; e++) {
		out->edges[e].data = 2 * rng_unit(&r);
		sum += out->edges[e].data;
	}
	for (uint32_t e = 0; e < out->nedges; e++)
		out->edges[e].data =
		        sum > 0 ? out->edges[e].data * (p->ccr * mean_cost * out->nedges / sum)
		                : p->ccr * mean_cost;
	wl_sort_edges(out);
	out->units = WL_UNITS_ABSTRACT;
	snprintf(out->name, sizeof(out->name), "random-n%u-seed%llu", n,
	         (unsigned long long)p->seed);
out:
	free(first);
	free(raw);
	free(mark);
	free(has_pred);
	if (rc) {
		wl_free(out);
		if (rc == -TDM_ENOMEM)
			gen_fail(err, errlen, rc, "random: out of memory");
		else
			gen_fail(err, errlen, rc,
			         "random: more than %u edges (lower n or out_degree)",
			         WL_MAX_EDGES);
	}
	return rc;
}

/* ---- layered random graphs (layer by layer) ------------------------------------ */

static int check_layered(const struct wl_layered_params *p, char *err, size_t errlen)
{
	if (!p)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: no parameters");
	if (p->n < 1 || p->n > WL_MAX_TASKS)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: n %u is not in 1..%u", p->n,
		                WL_MAX_TASKS);
	if (!isfinite(p->p) || p->p < 0 || p->p > 1)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: p %g is not in 0..1", p->p);
	if (p->costs != WL_LAYERED_UNIFORM && p->costs != WL_LAYERED_BIMODAL)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: unknown costs %d",
		                (int)p->costs);
	if (!isfinite(p->ccr) || p->ccr < 0 || p->ccr > 1000)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: ccr %g is not in 0..1000",
		                p->ccr);
	if (p->levels > p->n)
		return gen_fail(err, errlen, -TDM_EINVAL, "layered: %u levels for %u tasks",
		                p->levels, p->n);
	return 0;
}

int wl_gen_layered(const struct wl_layered_params *p, struct workload *out, char *err,
                   size_t errlen)
{
	struct rng r;
	uint32_t n, levels, edge_cap = 0, *first = NULL;
	double sum, mean_cost = 0, expect = 0;
	int rc;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	rc = check_layered(p, err, errlen);
	if (rc)
		return rc;
	n = p->n;
	levels = p->levels ? p->levels : (uint32_t)llround(sqrt((double)n));
	if (levels < 1)
		levels = 1;
	first = malloc(((size_t)levels + 1) * sizeof(*first));
	out->tasks = calloc(n, sizeof(*out->tasks));
	if (!first || !out->tasks) {
		rc = -TDM_ENOMEM;
		goto out;
	}
	first[0] = 0;
	for (uint32_t l = 0; l < levels; l++) {
		first[l + 1] = first[l] + n / levels + (l < n % levels);
		expect += p->p * (double)first[l] * (first[l + 1] - first[l]);
	}
	if (expect > WL_MAX_EDGES) {
		rc = -TDM_EINVAL;
		goto out;
	}
	rng_seed(&r, p->seed);

	for (uint32_t v = 0; v < n; v++) {
		struct wl_task *t = &out->tasks[v];
		double u = rng_unit(&r);

		snprintf(t->name, sizeof(t->name), "t%u", v);
		if (p->costs == WL_LAYERED_UNIFORM)
			t->cost = 1 + 9 * u;
		else if (u < 0.5)
			t->cost = 1 + 2 * rng_unit(&r);
		else
			t->cost = 8 + 12 * rng_unit(&r);
		mean_cost += t->cost;
	}
	mean_cost /= n;
	out->ntasks = n;

	/* each pair (u in an earlier level, v) with probability p: the gap to
	 * the next edge among v's candidates [0, first[l]) is geometric */
	if (p->p > 0) {
		double lq = p->p < 1 ? log1p(-p->p) : -INFINITY;

		for (uint32_t l = 1; l < levels; l++)
			for (uint32_t v = first[l]; v < first[l + 1]; v++) {
				double at = -1;

				for (;;) {
					double g = p->p < 1 ? floor(log(1 - rng_unit(&r)) / lq) : 0;

					at += 1 + g;
					if (!(at < first[l]))
						break;
					rc = push_edge(out, &edge_cap, (uint32_t)at, v);
					if (rc)
						goto out;
				}
			}
	}

	/* edge data uniform in [0, 2), then scaled to a mean of ccr * mean cost */
	sum = 0;
	for (uint32_t e = 0; e < out->nedges; e++) {
		out->edges[e].data = p->ccr > 0 ? 2 * rng_unit(&r) : 0;
		sum += out->edges[e].data;
	}
	for (uint32_t e = 0; e < out->nedges && sum > 0; e++)
		out->edges[e].data *= p->ccr * mean_cost * out->nedges / sum;
	wl_sort_edges(out);
	out->units = WL_UNITS_ABSTRACT;
	snprintf(out->name, sizeof(out->name), "layered-n%u-%s-seed%llu", n,
	         p->costs == WL_LAYERED_UNIFORM ? "uniform" : "bimodal",
	         (unsigned long long)p->seed);
out:
	free(first);
	if (rc) {
		wl_free(out);
		if (rc == -TDM_ENOMEM)
			gen_fail(err, errlen, rc, "layered: out of memory");
		else
			gen_fail(err, errlen, rc, "layered: more than %u edges (lower n or p)",
			         WL_MAX_EDGES);
	}
	return rc;
}
