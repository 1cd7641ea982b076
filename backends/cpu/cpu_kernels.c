/* CPU implementations of the built-in kernels (docs/kernels.md), on host
 * memory, single-threaded (the daemon runs one worker per core) except
 * attn_decode_varlen, which spreads over idle cores (cpu_gang.h). Arguments
 * were checked at intake (backends/kernels.c), so sizes are trusted here.
 * Buffer contents are not: the only kernel that indexes memory with values
 * read from a buffer, attn_decode_varlen, copies its index once and checks
 * every entry of the copy before it reads anything else.
 *
 * Cancellation: kernels whose work grows with a row, head or token count
 * look at the call's cancel flag between those (about every CANCEL_STRIDE
 * elements of work) and return -TDM_ECANCELED. A single BLAS call cannot be
 * interrupted; large GEMM-shaped calls are cut into row panels of about
 * cpu_panel_flops, each one call, with a look between them. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/cpu/cpu_gang.h"
#include "backends/kernels.h"
#include "tandem.h"

void kernels_cpu_init(void)
{
	/* The daemon runs one worker per core; OpenBLAS must not add its own.
	 * LAPACK (spotrf) is OpenBLAS's too, so this covers it. */
	openblas_set_num_threads(1);
}

/* ---- per-thread scratch ------------------------------------------------------
 * One growing buffer per worker thread, kept between calls and freed when the
 * thread exits (a pthread key destructor, so that exited workers leak
 * nothing). */

struct scratch {
	size_t cap; /* bytes */
	max_align_t buf[];
};

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static bool scratch_key_ok;

static void scratch_key_init(void)
{
	scratch_key_ok = pthread_key_create(&scratch_key, free) == 0;
}

/* n bytes of this thread's scratch, or NULL when out of memory. The contents
 * do not survive the next call. */
static void *scratch_bytes(size_t n)
{
	pthread_once(&scratch_once, scratch_key_init);
	if (!scratch_key_ok)
		return NULL;
	struct scratch *s = pthread_getspecific(scratch_key);
	if (s && s->cap >= n)
		return s->buf;
	size_t cap = n < 16384 ? 16384 : n;
	struct scratch *grown = malloc(sizeof(*grown) + cap);
	if (!grown)
		return NULL;
	grown->cap = cap;
	if (pthread_setspecific(scratch_key, grown) != 0) {
		free(grown);
		return NULL;
	}
	free(s);
	return grown->buf;
}

static float *scratch_floats(size_t n)
{
	return scratch_bytes(n * sizeof(float));
}

/* ---- small helpers ------------------------------------------------------------ */

/* Dot product with eight independent partial sums, which the compiler can
 * keep in one vector register without reassociating anything. */
static float dot(const float *a, const float *b, size_t n)
{
	float acc[8] = { 0 };
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			acc[j] += a[i + j] * b[i + j];
	float s = 0;
	for (; i < n; i++)
		s += a[i] * b[i];
	for (int j = 0; j < 8; j++)
		s += acc[j];
	return s;
}

/* x[i] = exp(x[i] - max(x)) in place; returns the sum of the results. The max
 * is subtracted so that exp cannot overflow. */
static double exp_shifted(float *x, size_t n)
{
	float max = x[0];
	double sum = 0;

	for (size_t i = 1; i < n; i++)
		if (x[i] > max)
			max = x[i];
	for (size_t i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	return sum;
}

static void scale(float *x, size_t n, float f)
{
	for (size_t i = 0; i < n; i++)
		x[i] *= f;
}

/* y += a x, element by element, in blocks of eight that the compiler
 * turns into vector operations (as in dot); no element's arithmetic
 * changes. */
static void add_scaled(float *restrict y, const float *restrict x, float a, size_t n)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			y[i + j] += a * x[i + j];
	for (; i < n; i++)
		y[i] += a * x[i];
}

/* ---- cancellation points ------------------------------------------------------ */

#define CANCEL_STRIDE 65536 /* elements of work between two looks at the flag */
#define PANEL_MIN_ROWS 256 /* smaller panels would pack B too often for their work */

/* A GEMM panel: ~0.2 s on a core at 100 GFLOP/s. */
uint64_t cpu_panel_flops = UINT64_C(1) << 34;

/* Looks at the flag once every `every` calls of cancel_poll, the first
 * call included: about CANCEL_STRIDE elements apart for units (rows, heads)
 * of `per_unit` elements. A countdown, not a modulo: units may be tiny. */
struct cancel_point {
	const struct tdm_kernel_call *call;
	size_t every, left;
};

static struct cancel_point cancel_point(const struct tdm_kernel_call *call, size_t per_unit)
{
	size_t every = per_unit >= CANCEL_STRIDE ? 1 : CANCEL_STRIDE / (per_unit ? per_unit : 1);
	return (struct cancel_point){ call, every, 1 };
}

static bool cancel_poll(struct cancel_point *cp)
{
	if (--cp->left)
		return false;
	cp->left = cp->every;
	return tdm_kernel_canceled(cp->call);
}

/* Rows per panel of a GEMM-shaped call of m rows costing row_flops each:
 * m (one call) unless the whole call exceeds cpu_panel_flops. */
static size_t panel_rows(size_t m, double row_flops)
{
	double limit = (double)cpu_panel_flops;
	if ((double)m * row_flops <= limit)
		return m;
	double rows = limit / row_flops;
	return rows < PANEL_MIN_ROWS ? PANEL_MIN_ROWS : (size_t)rows;
}

/* ---- the kernels -------------------------------------------------------------- */

int cpu_noop(const struct tdm_kernel_call *call)
{
	(void)call;
	return 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int cpu_spin(const struct tdm_kernel_call *call)
{
	uint64_t end = mono_ns() + (uint64_t)call->s[0].i64 * 1000u;
	while (mono_ns() < end) {
		if (tdm_kernel_canceled(call))
			return -TDM_ECANCELED;
		__builtin_ia32_pause();
	}
	return 0;
}

int cpu_fill(const struct tdm_kernel_call *call)
{
	float *a = call->ptr[0];
	float v = call->s[0].f32;
	for (uint64_t i = 0; i < call->len[0] / sizeof(float); i++)
		a[i] = v;
	return 0;
}

int cpu_copy(const struct tdm_kernel_call *call)
{
	/* memmove: the two slices may overlap when they come from one buffer. */
	memmove(call->ptr[1], call->ptr[0], call->len[0]);
	return 0;
}

int cpu_axpy(const struct tdm_kernel_call *call)
{
	const float *x = call->ptr[0];
	float *y = call->ptr[1];
	uint64_t n = call->len[0] / sizeof(float);
	cblas_saxpy((blasint)n, call->s[0].f32, x, 1, y, 1);
	return 0;
}

/* Rows of C are independent: C[i0..i1) = alpha A[i0..i1) B + beta C[i0..i1). */
int cpu_sgemm(const struct tdm_kernel_call *call)
{
	size_t m = (size_t)call->s[0].i64, n = (size_t)call->s[1].i64, k = (size_t)call->s[2].i64;
	size_t step = panel_rows(m, 2.0 * (double)n * (double)k);
	const float *a = call->ptr[0];
	float *c = call->ptr[2];

	for (size_t i = 0; i < m; i += step) {
		if (tdm_kernel_canceled(call))
			return -TDM_ECANCELED;
		blasint rows = (blasint)(m - i < step ? m - i : step);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, (blasint)n, (blasint)k,
		            call->s[3].f32, a + i * k, (blasint)k, call->ptr[1], (blasint)n,
		            call->s[4].f32, c + i * n, (blasint)n);
	}
	return 0;
}

int cpu_rmsnorm(const struct tdm_kernel_call *call)
{
	const float *x = call->ptr[0], *w = call->ptr[1];
	float *y = call->ptr[2];
	size_t rows = (size_t)call->s[0].i64, dim = (size_t)call->s[1].i64;
	double eps = call->s[2].f32;
	struct cancel_point cp = cancel_point(call, dim);

	for (size_t r = 0; r < rows; r++, x += dim, y += dim) {
		if (cancel_poll(&cp))
			return -TDM_ECANCELED;
		/* The mean of squares in double: dim terms of very different sizes. */
		double ss = 0;
		for (size_t i = 0; i < dim; i++)
			ss += (double)x[i] * x[i];
		float inv = (float)(1.0 / sqrt(ss / (double)dim + eps));
		for (size_t i = 0; i < dim; i++)
			y[i] = x[i] * inv * w[i];
	}
	return 0;
}

int cpu_softmax(const struct tdm_kernel_call *call)
{
	float *x = call->ptr[0];
	size_t rows = (size_t)call->s[0].i64, cols = (size_t)call->s[1].i64;
	struct cancel_point cp = cancel_point(call, cols);

	for (size_t r = 0; r < rows; r++, x += cols) {
		if (cancel_poll(&cp))
			return -TDM_ECANCELED;
		scale(x, cols, (float)(1.0 / exp_shifted(x, cols)));
	}
	return 0;
}

int cpu_rope(const struct tdm_kernel_call *call)
{
	float *x = call->ptr[0];
	size_t ntok = (size_t)call->s[0].i64, nheads = (size_t)call->s[1].i64;
	size_t hd = (size_t)call->s[2].i64, half = hd / 2;
	int64_t pos0 = call->s[3].i64;
	float theta = call->s[4].f32;
	float *inv = scratch_floats(3 * half);

	if (!inv)
		return -TDM_ENOMEM;
	float *c = inv + half, *s = c + half;
	struct cancel_point cp = cancel_point(call, nheads * hd + hd);
	for (size_t i = 0; i < half; i++)
		inv[i] = powf(theta, -2.0f * (float)i / (float)hd);
	/* One cos/sin table per token, shared by its heads. */
	for (size_t t = 0; t < ntok; t++) {
		if (cancel_poll(&cp))
			return -TDM_ECANCELED;
		float p = (float)(pos0 + (int64_t)t);
		for (size_t i = 0; i < half; i++) {
			float f = p * inv[i];
			c[i] = cosf(f);
			s[i] = sinf(f);
		}
		for (size_t h = 0; h < nheads; h++, x += hd) {
			for (size_t i = 0; i < half; i++) {
				float a = x[i], b = x[i + half];
				x[i] = a * c[i] - b * s[i];
				x[i + half] = a * s[i] + b * c[i];
			}
		}
	}
	return 0;
}

/* Query heads per pass over the kv rows. The K and V caches hold one row
 * per position, all kv heads side by side (nkv * hd floats: 4 KiB for 8
 * heads of 128), and each query head reads hd floats of every row. Were the
 * heads attended one by one, each would stride through the cache a row
 * apart, touching a new page at each position and re-reading rows its
 * group's other heads read before: with the rows past the caches, the time
 * grows faster than the length (page walks and refetches). A pass instead
 * takes every head at once, position by position, so the rows are read
 * once, front to back. Up to this many heads per pass (more than LLMs'
 * query heads, 8 to 64; issue 12's 65536 heads of one kv head go in
 * passes), which bounds the scores' scratch to ATTN_PASS_HEADS * (len + 1)
 * floats and the time between two looks at the cancellation flag. */
#define ATTN_PASS_HEADS 32

/* Query heads h0 .. h0 + nheads - 1 of one sequence over len positions: q
 * and out point at its head 0 (heads hd floats apart), k and v at position
 * 0, kv head 0 of its rows (stride floats apart, kv heads hd floats apart);
 * head h reads kv head h / group. Each head's arithmetic is the same
 * whatever the heads beside it, in the same order (its dot products,
 * exp_shifted over its scores, its output accumulated position by
 * position, then scaled): attn_decode and attn_decode_varlen both run
 * this, and their results agree bit for bit. cp is looked at before each
 * pass. 0, -TDM_ECANCELED or -TDM_ENOMEM (scratch). */
static int attend_heads(struct cancel_point *cp, const float *q, const float *k, const float *v,
                        size_t stride, size_t hd, size_t group, size_t h0, size_t nheads,
                        size_t len, float *out)
{
	float inv_sqrt_hd = 1.0f / sqrtf((float)hd);
	size_t pass = nheads < ATTN_PASS_HEADS ? nheads : ATTN_PASS_HEADS;
	float *scores = scratch_floats(pass * (len + 1)); /* per head: len scores, 1/sum */
	size_t kvo[ATTN_PASS_HEADS]; /* each head's kv head's offset in a row */

	if (!scores)
		return -TDM_ENOMEM;
	float *inv_sum = scores + pass * len;
	for (size_t p0 = h0; p0 < h0 + nheads; p0 += pass) {
		size_t n = h0 + nheads - p0 < pass ? h0 + nheads - p0 : pass;
		const float *qp = q + p0 * hd;
		float *op = out + p0 * hd;
		if (cancel_poll(cp))
			return -TDM_ECANCELED;
		for (size_t j = 0; j < n; j++)
			kvo[j] = (p0 + j) / group * hd;
		for (size_t t = 0; t < len; t++) {
			const float *kt = k + t * stride;
			for (size_t j = 0; j < n; j++)
				scores[j * len + t] =
				        dot(qp + j * hd, kt + kvo[j], hd) * inv_sqrt_hd;
		}
		for (size_t j = 0; j < n; j++)
			inv_sum[j] = (float)(1.0 / exp_shifted(scores + j * len, len));
		memset(op, 0, n * hd * sizeof(float));
		for (size_t t = 0; t < len; t++) {
			const float *vt = v + t * stride;
			for (size_t j = 0; j < n; j++)
				add_scaled(op + j * hd, vt + kvo[j], scores[j * len + t], hd);
		}
		for (size_t j = 0; j < n; j++)
			scale(op + j * hd, hd, inv_sum[j]);
	}
	return 0;
}

int cpu_attn_decode(const struct tdm_kernel_call *call)
{
	const float *q = call->ptr[0], *kc = call->ptr[1], *vc = call->ptr[2];
	float *out = call->ptr[3];
	size_t batch = (size_t)call->s[0].i64, nh = (size_t)call->s[1].i64;
	size_t nkv = (size_t)call->s[2].i64, hd = (size_t)call->s[3].i64;
	size_t kv_len = (size_t)call->s[4].i64, kv_cap = (size_t)call->s[5].i64;
	size_t stride = nkv * hd;
	/* A pass reads kv_len rows of K and V (at most the buffers) for its
	 * heads: a look per pass bounds the wait by one pass over them. */
	struct cancel_point cp = cancel_point(call, CANCEL_STRIDE);

	for (size_t b = 0; b < batch; b++) {
		size_t kv = b * kv_cap * stride, qo = b * nh * hd;
		int rc = attend_heads(&cp, q + qo, kc + kv, vc + kv, stride, hd, nh / nkv, 0, nh,
		                      kv_len, out + qo);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- attn_decode_varlen ------------------------------------------------------- */

struct varlen {
	const struct tdm_kernel_call *call;
	const float *q, *kc, *vc;
	float *out;
	const int32_t *index; /* the checked private copy */
	size_t nh, nkv, hd, group, stride;
};

/* Item i: request i / nkv, kv head i % nkv and its group of query heads. */
static int varlen_item(void *ctx, size_t i)
{
	const struct varlen *v = ctx;
	size_t r = i / v->nkv, g = i % v->nkv, hd = v->hd, group = v->group;
	size_t row = (size_t)v->index[VARLEN_ENTRY_WORDS * r];
	size_t len = (size_t)v->index[VARLEN_ENTRY_WORDS * r + 1];
	/* Items may be short: a look before each pass of each item. */
	struct cancel_point cp = cancel_point(v->call, CANCEL_STRIDE);
	size_t kv = row * v->stride, qo = r * v->nh * hd;

	return attend_heads(&cp, v->q + qo, v->kc + kv, v->vc + kv, v->stride, hd, group, g * group,
	                    group, len, v->out + qo);
}

/* Every entry names rows inside both pools and has at least one position,
 * and the lengths add up to total_tokens (the features were priced from
 * it): else -TDM_ERANGE, before anything is read or written. */
static int varlen_check_index(const int32_t *index, size_t nreq, uint64_t rows, int64_t total)
{
	int64_t sum = 0;
	for (size_t r = 0; r < nreq; r++) {
		int32_t row = index[VARLEN_ENTRY_WORDS * r],
		        len = index[VARLEN_ENTRY_WORDS * r + 1];
		if (row < 0 || len < 1 || (uint64_t)row + (uint64_t)len > rows)
			return -TDM_ERANGE;
		sum += len;
	}
	return sum == total ? 0 : -TDM_ERANGE;
}

int cpu_attn_decode_varlen(const struct tdm_kernel_call *call)
{
	size_t nreq = (size_t)call->s[0].i64, nkv = (size_t)call->s[2].i64;
	size_t hd = (size_t)call->s[3].i64, nh = (size_t)call->s[1].i64;
	size_t index_bytes = nreq * VARLEN_ENTRY_WORDS * sizeof(int32_t);
	/* The client may write its buffers while the kernel runs: the index
	 * is read once, into memory of ours. */
	int32_t *index = malloc(index_bytes);

	if (!index)
		return -TDM_ENOMEM;
	memcpy(index, call->ptr[VARLEN_INDEX], index_bytes);
	int err = varlen_check_index(index, nreq, attn_varlen_pool_rows(call), call->s[4].i64);
	if (!err) {
		struct varlen v = {
			.call = call,
			.q = call->ptr[VARLEN_Q],
			.kc = call->ptr[VARLEN_K],
			.vc = call->ptr[VARLEN_V],
			.out = call->ptr[VARLEN_OUT],
			.index = index,
			.nh = nh,
			.nkv = nkv,
			.hd = hd,
			.group = nh / nkv,
			.stride = nkv * hd,
		};
		uint64_t kv_bytes = (uint64_t)call->s[4].i64 * nkv * hd * 2 * sizeof(float);
		err = cpu_gang_run(nreq * nkv, varlen_item, &v, kv_bytes >= cpu_gang_min_bytes);
	}
	free(index);
	return err;
}

/* ---- moe_expert ---------------------------------------------------------------- */

#define MOE_BLOCK_MAX 128 /* routed tokens per GEMM */
#define MOE_SCRATCH_FLOATS (2u << 20) /* 8 MiB per block at most */
/* A block's GEMMs run on a multiple of this many rows (the rows past its
 * tokens are zeros, their results dropped): OpenBLAS's sgemm took longer
 * on a token count short of a multiple of 4 than on that multiple. On the
 * 2-core AMD EPYC VM (dm 512, dff 1408, cold caches, best of 9): 3 tokens
 * 1165 us and 4 730, 7 1382 and 8 920, 127 7575 and 128 (127 padded)
 * 7033; padded, 3 took 806 and 7 920, and no count from 1 to 127 that
 * padding changes was slower. Two tokens run as two matrix-vector passes
 * (680 us; as a block 893, padded 820). */
#define MOE_ROWS 4

struct moe {
	const float *x, *wg, *wu, *wd, *topk_w;
	const int32_t *ids;
	float *y;
	size_t dm, dff, k;
	int64_t expert;
};

static float routing_weight(const struct moe *m, size_t t)
{
	float r = 0;
	for (size_t j = 0; j < m->k; j++)
		if (m->ids[t * m->k + j] == m->expert)
			r += m->topk_w[t * m->k + j];
	return r;
}

static float silu(float z)
{
	return z / (1.0f + expf(-z));
}

/* One routed token, with matrix-vector products: y[t] += r * (h . w_down). */
static void moe_token(const struct moe *m, size_t t, float r, float *g, float *u)
{
	blasint dm = (blasint)m->dm, dff = (blasint)m->dff;

	cblas_sgemv(CblasRowMajor, CblasTrans, dm, dff, 1.0f, m->wg, dff, m->x + t * m->dm, 1, 0.0f,
	            g, 1);
	cblas_sgemv(CblasRowMajor, CblasTrans, dm, dff, 1.0f, m->wu, dff, m->x + t * m->dm, 1, 0.0f,
	            u, 1);
	for (size_t i = 0; i < m->dff; i++)
		g[i] = silu(g[i]) * u[i];
	cblas_sgemv(CblasRowMajor, CblasTrans, dff, dm, r, m->wd, dm, g, 1, 1.0f, m->y + t * m->dm,
	            1);
}

static size_t moe_rows(size_t nb)
{
	return (nb + MOE_ROWS - 1) / MOE_ROWS * MOE_ROWS;
}

/* nb routed tokens (rows tok[], weights r[]) gathered into xb (nb x dm,
 * zeros to moe_rows(nb) rows): G = Xb.w_gate, U = Xb.w_up, H = silu(G) * U,
 * O = H.w_down (into xb), then y[tok[i]] += r[i] * O[i]. */
static void moe_block(const struct moe *m, const size_t *tok, const float *r, size_t nb, float *xb,
                      float *g, float *u)
{
	size_t rows = moe_rows(nb);
	blasint n = (blasint)rows, dm = (blasint)m->dm, dff = (blasint)m->dff;

	for (size_t i = 0; i < nb; i++)
		memcpy(xb + i * m->dm, m->x + tok[i] * m->dm, m->dm * sizeof(float));
	memset(xb + nb * m->dm, 0, (rows - nb) * m->dm * sizeof(float));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dff, dm, 1.0f, xb, dm, m->wg, dff,
	            0.0f, g, dff);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dff, dm, 1.0f, xb, dm, m->wu, dff,
	            0.0f, u, dff);
	for (size_t i = 0; i < rows * m->dff; i++)
		g[i] = silu(g[i]) * u[i];
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dm, dff, 1.0f, g, dff, m->wd, dm,
	            0.0f, xb, dm);
	for (size_t i = 0; i < nb; i++)
		cblas_saxpy(dm, r[i], xb + i * m->dm, 1, m->y + tok[i] * m->dm, 1);
}

static void moe_flush(const struct moe *m, const size_t *tok, const float *r, size_t nb, float *xb,
                      float *g, float *u)
{
	if (nb <= 2)
		for (size_t i = 0; i < nb; i++)
			moe_token(m, tok[i], r[i], g, u);
	else
		moe_block(m, tok, r, nb, xb, g, u);
}

int cpu_moe_expert(const struct tdm_kernel_call *call)
{
	struct moe m = {
		.x = call->ptr[0],
		.wg = call->ptr[1],
		.wu = call->ptr[2],
		.wd = call->ptr[3],
		.ids = call->ptr[4],
		.topk_w = call->ptr[5],
		.y = call->ptr[6],
		.dm = (size_t)call->s[1].i64,
		.dff = (size_t)call->s[2].i64,
		.k = (size_t)call->s[3].i64,
		.expert = call->s[4].i64,
	};
	size_t n = (size_t)call->s[0].i64;
	size_t per_token = m.dm + 2 * m.dff;
	size_t block = MOE_SCRATCH_FLOATS / per_token;
	block = block < 1 ? 1 : block > MOE_BLOCK_MAX ? MOE_BLOCK_MAX : block;
	block = block > n ? n : block;

	size_t rows = moe_rows(block);
	float *xb = scratch_floats(rows * per_token);
	if (!xb)
		return -TDM_ENOMEM;
	float *g = xb + rows * m.dm, *u = g + rows * m.dff;
	size_t tok[MOE_BLOCK_MAX];
	float r[MOE_BLOCK_MAX];
	size_t nb = 0;

	/* The tokens the engine says were routed here (call->routed), else
	 * every token, in order; a look before each block of routed tokens (its
	 * GEMMs are one call each). */
	size_t ntok = call->routed ? call->nrouted : n;
	for (size_t i = 0; i < ntok; i++) {
		size_t t = call->routed ? call->routed[i] : i;
		if (t >= n)
			continue; /* not one of this call's tokens (the engine never sends it) */
		float rt = routing_weight(&m, t);
		if (rt == 0)
			continue; /* not routed to this expert: y[t] unchanged */
		tok[nb] = t;
		r[nb++] = rt;
		if (nb == block) {
			if (tdm_kernel_canceled(call))
				return -TDM_ECANCELED;
			moe_flush(&m, tok, r, nb, xb, g, u);
			nb = 0;
		}
	}
	if (nb && tdm_kernel_canceled(call))
		return -TDM_ECANCELED;
	moe_flush(&m, tok, r, nb, xb, g, u);
	return 0;
}

/* ---- topk_router ---------------------------------------------------------------- */

struct ranked {
	float p;
	int32_t id;
};

/* Descending probability, NaN after every number; ties (NaN with NaN
 * too) go to the lower expert index. qsort needs a strict weak order, which
 * plain comparisons are not with NaN: a NaN logit (or +inf, through
 * inf - inf) makes the whole row's softmax NaN, and the row then picks
 * experts 0..k-1, the same on every backend. */
static int by_rank(const void *pa, const void *pb)
{
	const struct ranked *a = pa, *b = pb;
	bool an = isnan(a->p), bn = isnan(b->p);
	if (an != bn)
		return an ? 1 : -1;
	if (!an && a->p != b->p)
		return a->p > b->p ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

int cpu_topk_router(const struct tdm_kernel_call *call)
{
	const float *logits = call->ptr[0];
	int32_t *ids = call->ptr[1];
	float *weights = call->ptr[2];
	size_t n = (size_t)call->s[0].i64, ne = (size_t)call->s[1].i64;
	size_t k = (size_t)call->s[2].i64;
	struct ranked *rank = scratch_bytes(ne * sizeof(*rank));
	/* A row sorts ne entries: count some ten comparisons per entry. */
	struct cancel_point cp = cancel_point(call, 16 * ne);

	if (!rank)
		return -TDM_ENOMEM;
	for (size_t t = 0; t < n; t++, logits += ne, ids += k, weights += k) {
		if (cancel_poll(&cp))
			return -TDM_ECANCELED;
		float max = logits[0];
		for (size_t e = 1; e < ne; e++)
			if (logits[e] > max)
				max = logits[e];
		double sum = 0;
		for (size_t e = 0; e < ne; e++) {
			rank[e] = (struct ranked){ .p = expf(logits[e] - max), .id = (int32_t)e };
			sum += rank[e].p;
		}
		float inv = (float)(1.0 / sum);
		for (size_t e = 0; e < ne; e++)
			rank[e].p *= inv;
		qsort(rank, ne, sizeof(*rank), by_rank);
		double picked = 0;
		for (size_t j = 0; j < k; j++)
			picked += rank[j].p;
		for (size_t j = 0; j < k; j++) {
			ids[j] = rank[j].id;
			weights[j] = (float)(rank[j].p / picked);
		}
	}
	return 0;
}

/* ---- tiled Cholesky ------------------------------------------------------------
 * Row-major nb x nb tiles, lower triangular factors (docs/kernels.md). A
 * row-major lower triangle is the column-major upper triangle of the same
 * memory, so LAPACK runs column-major on 'U' in place: LAPACKE's row-major
 * path would transpose into a temporary and back. */

int cpu_spotrf(const struct tdm_kernel_call *call)
{
	lapack_int nb = (lapack_int)call->s[0].i64;
	lapack_int info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'U', nb, call->ptr[0], nb);
	/* info > 0: not positive definite (the tile is partly overwritten).
	 * Not -TDM_EDEVICE: the input is at fault, not the device. */
	return info == 0 ? 0 : -TDM_EINVAL;
}

/* B = B . L^-T; rows of B are independent, done a panel at a time. */
int cpu_strsm(const struct tdm_kernel_call *call)
{
	size_t nb = (size_t)call->s[0].i64, step = panel_rows(nb, (double)nb * (double)nb);
	float *b = call->ptr[1];

	for (size_t i = 0; i < nb; i += step) {
		if (tdm_kernel_canceled(call))
			return -TDM_ECANCELED;
		blasint rows = (blasint)(nb - i < step ? nb - i : step);
		cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, rows,
		            (blasint)nb, 1.0f, call->ptr[0], (blasint)nb, b + i * nb, (blasint)nb);
	}
	return 0;
}

/* C = C - A . A^T, lower triangle. By row panels [i0, i1): the block left of
 * the diagonal, C[i0..i1)[0..i0) -= A[i0..i1) . A[0..i0)^T, then the diagonal
 * block's lower triangle. */
int cpu_ssyrk(const struct tdm_kernel_call *call)
{
	size_t nb = (size_t)call->s[0].i64, step = panel_rows(nb, (double)nb * (double)nb);
	const float *a = call->ptr[0];
	float *c = call->ptr[1];
	blasint n = (blasint)nb;

	for (size_t i = 0; i < nb; i += step) {
		if (tdm_kernel_canceled(call))
			return -TDM_ECANCELED;
		blasint rows = (blasint)(nb - i < step ? nb - i : step);
		if (i)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, (blasint)i, n,
			            -1.0f, a + i * nb, n, a, n, 1.0f, c + i * nb, n);
		cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, rows, n, -1.0f, a + i * nb, n,
		            1.0f, c + i * nb + i, n);
	}
	return 0;
}

/* C = C - A . B^T; rows of C are independent, done a panel at a time. */
int cpu_sgemm_nt(const struct tdm_kernel_call *call)
{
	size_t nb = (size_t)call->s[0].i64, step = panel_rows(nb, 2.0 * (double)nb * (double)nb);
	const float *a = call->ptr[0];
	float *c = call->ptr[2];
	blasint n = (blasint)nb;

	for (size_t i = 0; i < nb; i += step) {
		if (tdm_kernel_canceled(call))
			return -TDM_ECANCELED;
		blasint rows = (blasint)(nb - i < step ? nb - i : step);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, n, -1.0f, a + i * nb,
		            n, call->ptr[1], n, 1.0f, c + i * nb, n);
	}
	return 0;
}
