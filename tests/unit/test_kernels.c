/* Built-in kernels: the table, the CPU implementations against naive
 * reference loops (in double, with the tolerances of docs/kernels.md), the
 * intake-time argument checks and the cost features. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "common/clock.h"
#include "tandem.h"
#include "tests/harness/splitmix.h"

#define SENTINEL 12345.0f /* written past the end of outputs: must survive */
#define TAIL 5 /* floats of sentinel after each output */

/* ---- helpers ------------------------------------------------------------------ */

static const struct kernel_def *kdef(const char *name)
{
	int id = kernel_lookup(name);
	assert_true(id >= 0);
	return kernel_by_id((uint32_t)id);
}

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
	rng_state = seed;
}

/* Uniform in [-1, 1). */
static float frand(void)
{
	return (float)((double)(splitmix64(&rng_state) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* n random floats followed by TAIL sentinels. */
static float *rand_floats(size_t n)
{
	float *p = malloc((n + TAIL) * sizeof(float));
	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = frand();
	for (size_t i = n; i < n + TAIL; i++)
		p[i] = SENTINEL;
	return p;
}

static float *copy_floats(const float *src, size_t n)
{
	float *p = malloc(n * sizeof(float));
	assert_non_null(p);
	memcpy(p, src, n * sizeof(float));
	return p;
}

static void assert_close(const char *what, size_t i, double got, double want, double atol,
                         double rtol)
{
	/* Written so that a NaN fails. */
	if (!(fabs(got - want) <= atol + rtol * fabs(want)))
		fail_msg("%s[%zu]: got %.9g, want %.9g", what, i, got, want);
}

static void assert_tail_intact(const char *what, const float *p, size_t n)
{
	for (size_t i = n; i < n + TAIL; i++)
		if (p[i] != SENTINEL)
			fail_msg("%s: wrote past its %zu elements (at %zu)", what, n, i);
}

static uint64_t fbytes(size_t n)
{
	return n * sizeof(float);
}

static int run(const char *name, struct tdm_kernel_call *call)
{
	const struct kernel_def *d = kdef(name);
	call->nargs = d->nargs;
	assert_int_equal(d->check(call), 0);
	return d->cpu(call);
}

/* ---- the table ---------------------------------------------------------------- */

static void test_table(void **state)
{
	(void)state;
	assert_int_equal(kernel_count(), KERNEL_COUNT);
	assert_int_equal(kernel_lookup("no-such-kernel"), -TDM_EKERNEL);
	assert_null(kernel_by_id((uint32_t)kernel_count()));
	for (size_t i = 0; i < kernel_count(); i++) {
		const struct kernel_def *d = kernel_by_id((uint32_t)i);
		assert_int_equal(d->id, i);
		assert_int_equal(kernel_lookup(d->name), (int)i);
		/* Every kernel but the simulation-only ones runs on the CPU. */
		if (kernel_sim_only(d->id))
			assert_null(d->cpu);
		else
			assert_non_null(d->cpu);
		assert_non_null(d->check);
		assert_non_null(d->features);
		assert_true(d->nargs <= TDM_MAX_ARGS && d->nscalars <= TDM_MAX_SCALARS);
		for (int a = 0; a < TDM_MAX_ARGS; a++)
			assert_true(a < d->nargs ? d->arg_modes[a] != 0 : d->arg_modes[a] == 0);
		for (int s = 0; s < TDM_MAX_SCALARS; s++)
			assert_true(s < d->nscalars ? d->scalar_types[s] != 0
			                            : d->scalar_types[s] == 0);
	}
	assert_int_equal(kernel_lookup("attn_decode"), KERNEL_ATTN_DECODE);
	assert_int_equal(kernel_lookup("topk_router"), KERNEL_TOPK_ROUTER);
}

static void test_device_kind_names(void **state)
{
	(void)state;
	assert_string_equal(device_kind_name(TDM_DEV_CPU), "cpu");
	assert_string_equal(device_kind_name(TDM_DEV_CLCPU), "clcpu");
	assert_string_equal(device_kind_name(TDM_DEV_GPU), "gpu");
	assert_string_equal(device_kind_name(TDM_DEV_NPU), "npu");
	assert_non_null(device_kind_name(TDM_DEV_KIND_COUNT));
}

/* ---- the original kernels ----------------------------------------------------- */

static void test_sgemm(void **state)
{
	(void)state;
	enum { M = 37, N = 29, K = 53 };
	rng_seed(1);
	float *a = rand_floats(M * K), *b = rand_floats(K * N), *c = rand_floats(M * N);
	float *c0 = copy_floats(c, M * N);
	struct tdm_kernel_call call = { .ptr = { a, b, c },
		                        .len = { fbytes(M * K), fbytes(K * N), fbytes(M * N) } };
	call.s[0].i64 = M;
	call.s[1].i64 = N;
	call.s[2].i64 = K;
	call.s[3].f32 = 1.5f;
	call.s[4].f32 = -0.5f;
	assert_int_equal(run("sgemm", &call), 0);
	for (size_t i = 0; i < M; i++) {
		for (size_t j = 0; j < N; j++) {
			double s = 0;
			for (size_t l = 0; l < K; l++)
				s += (double)a[i * K + l] * b[l * N + j];
			double want = 1.5 * s - 0.5 * c0[i * N + j];
			assert_close("sgemm C", i * N + j, c[i * N + j], want, 1e-4 * K, 1e-4);
		}
	}
	assert_tail_intact("sgemm C", c, M * N);
	free(a);
	free(b);
	free(c);
	free(c0);
}

static void test_fill_copy_axpy(void **state)
{
	(void)state;
	enum { N = 101 };
	rng_seed(2);
	float *x = rand_floats(N), *y = rand_floats(N);
	float *y0 = copy_floats(y, N);

	struct tdm_kernel_call ax = { .ptr = { x, y }, .len = { fbytes(N), fbytes(N) } };
	ax.s[0].f32 = -2.5f;
	assert_int_equal(run("axpy", &ax), 0);
	for (size_t i = 0; i < N; i++)
		assert_close("axpy y", i, y[i], y0[i] - 2.5 * x[i], 1e-6, 1e-6);
	assert_tail_intact("axpy y", y, N);

	struct tdm_kernel_call cp = { .ptr = { x, y }, .len = { fbytes(N), fbytes(N) } };
	assert_int_equal(run("copy", &cp), 0);
	assert_memory_equal(x, y, fbytes(N));
	assert_tail_intact("copy dst", y, N);

	struct tdm_kernel_call fill = { .ptr = { x }, .len = { fbytes(N) } };
	fill.s[0].f32 = 3.25f;
	assert_int_equal(run("fill", &fill), 0);
	for (size_t i = 0; i < N; i++)
		assert_true(x[i] == 3.25f);
	assert_tail_intact("fill", x, N);
	free(x);
	free(y);
	free(y0);
}

static void test_spin_takes_its_time(void **state)
{
	(void)state;
	struct tdm_kernel_call call = { 0 };
	call.s[0].i64 = 2000;
	uint64_t t0 = clock_monotonic_ns();
	assert_int_equal(run("spin", &call), 0);
	assert_true(clock_monotonic_ns() - t0 >= 2000000);
	assert_int_equal(run("noop", &call), 0);
}

/* ---- the LLM kernels ---------------------------------------------------------- */

static void test_rmsnorm(void **state)
{
	(void)state;
	enum { ROWS = 7, DIM = 53 };
	const float eps = 1e-5f;
	rng_seed(3);
	float *x = rand_floats(ROWS * DIM), *w = rand_floats(DIM), *y = rand_floats(ROWS * DIM);
	x[2 * DIM + 5] = 40.0f; /* one row dominated by a large element */
	struct tdm_kernel_call call = {
		.ptr = { x, w, y },
		.len = { fbytes(ROWS * DIM), fbytes(DIM), fbytes(ROWS * DIM) },
	};
	call.s[0].i64 = ROWS;
	call.s[1].i64 = DIM;
	call.s[2].f32 = eps;
	assert_int_equal(run("rmsnorm", &call), 0);
	for (size_t r = 0; r < ROWS; r++) {
		double ss = 0;
		for (size_t i = 0; i < DIM; i++)
			ss += (double)x[r * DIM + i] * x[r * DIM + i];
		double rms = sqrt(ss / DIM + eps);
		for (size_t i = 0; i < DIM; i++)
			assert_close("rmsnorm y", r * DIM + i, y[r * DIM + i],
			             x[r * DIM + i] / rms * w[i], 1e-5, 1e-5);
	}
	assert_tail_intact("rmsnorm y", y, ROWS * DIM);
	free(x);
	free(w);
	free(y);
}

static void test_softmax(void **state)
{
	(void)state;
	enum { ROWS = 6, COLS = 37 };
	rng_seed(4);
	float *x = rand_floats(ROWS * COLS);
	/* Without subtracting the max, exp overflows on these rows. */
	for (size_t i = 0; i < COLS; i++) {
		x[2 * COLS + i] = 1000.0f + 5 * x[2 * COLS + i];
		x[4 * COLS + i] = -1000.0f + 5 * x[4 * COLS + i];
	}
	float *x0 = copy_floats(x, ROWS * COLS);
	struct tdm_kernel_call call = { .ptr = { x }, .len = { fbytes(ROWS * COLS) } };
	call.s[0].i64 = ROWS;
	call.s[1].i64 = COLS;
	assert_int_equal(run("softmax", &call), 0);
	for (size_t r = 0; r < ROWS; r++) {
		const float *in = x0 + r * COLS;
		double max = in[0], sum = 0;
		for (size_t i = 1; i < COLS; i++)
			max = fmax(max, in[i]);
		for (size_t i = 0; i < COLS; i++)
			sum += exp(in[i] - max);
		for (size_t i = 0; i < COLS; i++)
			assert_close("softmax x", r * COLS + i, x[r * COLS + i],
			             exp(in[i] - max) / sum, 1e-6, 1e-5);
	}
	assert_tail_intact("softmax x", x, ROWS * COLS);
	free(x);
	free(x0);
}

static void test_rope(void **state)
{
	(void)state;
	enum { NTOK = 5, NH = 3, HD = 18, POS0 = 7 };
	const float theta = 10000.0f;
	rng_seed(5);
	float *x = rand_floats(NTOK * NH * HD);
	float *x0 = copy_floats(x, NTOK * NH * HD);
	struct tdm_kernel_call call = { .ptr = { x }, .len = { fbytes(NTOK * NH * HD) } };
	call.s[0].i64 = NTOK;
	call.s[1].i64 = NH;
	call.s[2].i64 = HD;
	call.s[3].i64 = POS0;
	call.s[4].f32 = theta;
	assert_int_equal(run("rope", &call), 0);
	for (size_t t = 0; t < NTOK; t++) {
		for (size_t h = 0; h < NH; h++) {
			size_t o = (t * NH + h) * HD;
			for (size_t i = 0; i < HD / 2; i++) {
				/* The angle in single precision, as the doc says. */
				float p = (float)(POS0 + t);
				float f = p * powf(theta, -2.0f * (float)i / (float)HD);
				double a = x0[o + i], b = x0[o + i + HD / 2];
				assert_close("rope x", o + i, x[o + i], a * cos(f) - b * sin(f),
				             1e-4, 1e-4);
				assert_close("rope x", o + i + HD / 2, x[o + i + HD / 2],
				             a * sin(f) + b * cos(f), 1e-4, 1e-4);
			}
		}
	}
	assert_tail_intact("rope x", x, NTOK * NH * HD);
	free(x);
	free(x0);
}

/* attn_decode against a double-precision reference; positions past len
 * hold NaN (they must not be read). */
static void check_attn_decode(size_t batch, size_t nh, size_t nkv, size_t hd, size_t len,
                              size_t cap)
{
	const size_t cache = (size_t)batch * cap * nkv * hd;
	rng_seed(6);
	float *q = rand_floats(batch * nh * hd), *kc = rand_floats(cache), *vc = rand_floats(cache);
	float *out = rand_floats(batch * nh * hd);
	for (size_t i = 0; i < cache; i++) {
		kc[i] *= 3.0f; /* peakier scores */
		/* Positions past kv_len must not be read. */
		if ((i / (nkv * hd)) % cap >= len) {
			kc[i] = NAN;
			vc[i] = NAN;
		}
	}
	struct tdm_kernel_call call = { .ptr = { q, kc, vc, out },
		                        .len = { fbytes(batch * nh * hd), fbytes(cache),
		                                 fbytes(cache), fbytes(batch * nh * hd) } };
	int64_t s[] = { batch, nh, nkv, hd, len, cap };
	for (int i = 0; i < 6; i++)
		call.s[i].i64 = s[i];
	assert_int_equal(run("attn_decode", &call), 0);
	for (size_t b = 0; b < batch; b++) {
		for (size_t h = 0; h < nh; h++) {
			size_t g = h / (nh / nkv);
			const float *qh = q + (b * nh + h) * hd;
			double *sc = malloc(len * sizeof(double)), max = -INFINITY, sum = 0;
			for (size_t t = 0; t < len; t++) {
				const float *kt = kc + ((b * cap + t) * nkv + g) * hd;
				double d = 0;
				for (size_t i = 0; i < hd; i++)
					d += (double)qh[i] * kt[i];
				sc[t] = d / sqrt((double)hd);
				max = fmax(max, sc[t]);
			}
			for (size_t t = 0; t < len; t++)
				sum += (sc[t] = exp(sc[t] - max));
			for (size_t d = 0; d < hd; d++) {
				double want = 0;
				for (size_t t = 0; t < len; t++)
					want += sc[t] / sum *
					        vc[((b * cap + t) * nkv + g) * hd + d];
				size_t o = (b * nh + h) * hd + d;
				assert_close("attn out", o, out[o], want, 1e-5, 1e-4);
			}
			free(sc);
		}
	}
	assert_tail_intact("attn out", out, batch * nh * hd);
	free(q);
	free(kc);
	free(vc);
	free(out);
}

static void test_attn_decode(void **state)
{
	(void)state;
	check_attn_decode(2, 8, 2, 16, 13, 20);
	/* 74 query heads in groups of 37: more heads than one pass over the
	 * kv rows takes (32), a pass spanning both kv heads, the last one
	 * partial. */
	check_attn_decode(2, 74, 2, 16, 13, 20);
}

static double routing(const int32_t *ids, const float *topk_w, size_t k, int32_t expert, size_t t)
{
	double r = 0;
	for (size_t j = 0; j < k; j++)
		r += ids[t * k + j] == expert ? topk_w[t * k + j] : 0;
	return r;
}

/* moe_expert on n tokens with the given routing, against the doc's loop. */
static void check_moe(size_t n, size_t dm, size_t dff, size_t k, int32_t expert, const int32_t *ids,
                      const float *topk_w)
{
	float *x = rand_floats(n * dm), *wg = rand_floats(dm * dff), *wu = rand_floats(dm * dff);
	float *wd = rand_floats(dff * dm), *y = rand_floats(n * dm);
	float *y0 = copy_floats(y, n * dm);
	/* Tokens not routed here must be skipped, not multiplied by 0: a NaN in
	 * their x would reach y. */
	for (size_t t = 0; t < n; t++)
		if (routing(ids, topk_w, k, expert, t) == 0)
			x[t * dm] = NAN;
	struct tdm_kernel_call call = {
		.ptr = { x, wg, wu, wd, (void *)ids, (void *)topk_w, y },
		.len = { fbytes(n * dm), fbytes(dm * dff), fbytes(dm * dff), fbytes(dff * dm),
		         n * k * sizeof(int32_t), fbytes(n * k), fbytes(n * dm) },
	};
	int64_t s[] = { (int64_t)n, (int64_t)dm, (int64_t)dff, (int64_t)k, expert };
	for (int i = 0; i < 5; i++)
		call.s[i].i64 = s[i];
	assert_int_equal(run("moe_expert", &call), 0);

	double *h = malloc(dff * sizeof(double));
	assert_non_null(h);
	size_t routed = 0;
	for (size_t t = 0; t < n; t++) {
		double r = routing(ids, topk_w, k, expert, t);
		if (r == 0) {
			/* Not routed here: y[t] is bit-for-bit what it was. */
			assert_memory_equal(y + t * dm, y0 + t * dm, fbytes(dm));
			continue;
		}
		routed++;
		for (size_t j = 0; j < dff; j++) {
			double g = 0, u = 0;
			for (size_t i = 0; i < dm; i++) {
				g += (double)x[t * dm + i] * wg[i * dff + j];
				u += (double)x[t * dm + i] * wu[i * dff + j];
			}
			h[j] = g / (1 + exp(-g)) * u;
		}
		for (size_t c = 0; c < dm; c++) {
			double o = 0;
			for (size_t j = 0; j < dff; j++)
				o += h[j] * wd[j * dm + c];
			assert_close("moe y", t * dm + c, y[t * dm + c], y0[t * dm + c] + r * o,
			             1e-4, 1e-4);
		}
	}
	assert_true(routed > 0);
	assert_tail_intact("moe y", y, n * dm);
	free(h);
	free(x);
	free(wg);
	free(wu);
	free(wd);
	free(y);
	free(y0);
}

static void test_moe_expert(void **state)
{
	(void)state;
	rng_seed(7);
	/* Expert 3; token 1 and 4 go elsewhere, token 3 has weight 0 for it,
	 * token 2 lists it twice (the weights add up). */
	const int32_t ids[5 * 2] = { 3, 1, 0, 2, 3, 3, 5, 3, 1, 4 };
	const float w[5 * 2] = { 0.7f, 0.3f, 0.6f, 0.4f, 0.25f, 0.5f, 1.0f, 0.0f, 0.9f, 0.1f };
	check_moe(5, 19, 23, 2, 3, ids, w);

	/* One token: the matrix-vector path. */
	const int32_t one_id[3] = { 9, 2, 5 };
	const float one_w[3] = { 0.2f, 0.5f, 0.3f };
	check_moe(1, 31, 17, 3, 2, one_id, one_w);

	/* Three and seven routed tokens (blocks run on 4 and 8 rows, the
	 * extra ones zeros) among tokens routed elsewhere, whose x is NaN. */
	const int32_t ids3[4] = { 0, 6, 0, 0 };
	const float w3[4] = { 1.0f, 1.0f, 0.5f, 0.25f };
	check_moe(4, 21, 29, 1, 0, ids3, w3);
	const int32_t ids7[9 * 2] = { 4, 1, 2, 4, 4, 0, 3, 4, 4, 4, 1, 4, 1, 2, 5, 6, 4, 3 };
	const float w7[9 * 2] = { 0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f, 0.3f, 0.7f,  0.5f,
		                  0.5f, 0.2f, 0.8f, 0.6f, 0.4f, 0.5f, 0.5f, 0.75f, 0.25f };
	check_moe(9, 17, 33, 2, 4, ids7, w7);

	/* Many tokens, several GEMM blocks, random routing over 4 experts. */
	enum { N = 300, K = 2 };
	int32_t *many = malloc(N * K * sizeof(int32_t));
	float *mw = malloc(N * K * sizeof(float));
	assert_non_null(many);
	assert_non_null(mw);
	for (size_t i = 0; i < N * K; i++) {
		many[i] = (int32_t)(splitmix64(&rng_state) % 4);
		mw[i] = 0.5f + 0.5f * frand();
	}
	check_moe(N, 13, 11, K, 1, many, mw);
	free(many);
	free(mw);
}

static void test_topk_router(void **state)
{
	(void)state;
	enum { N = 7, NE = 11, K = 3 };
	rng_seed(8);
	float *logits = rand_floats(N * NE), *w = rand_floats(N * K);
	int32_t ids[N * K + TAIL];
	for (size_t i = 0; i < N * K + TAIL; i++)
		ids[i] = -7;
	/* Row 0: a tie for first place, 2 before 7. Row 1: a three-way tie for
	 * the last two places, won by the lower indexes 1 and 4. */
	logits[0 * NE + 2] = logits[0 * NE + 7] = 3.0f;
	logits[1 * NE + 5] = 2.0f;
	logits[1 * NE + 9] = logits[1 * NE + 1] = logits[1 * NE + 4] = 1.5f;
	struct tdm_kernel_call call = {
		.ptr = { logits, ids, w },
		.len = { fbytes(N * NE), N * K * sizeof(int32_t), fbytes(N * K) },
	};
	call.s[0].i64 = N;
	call.s[1].i64 = NE;
	call.s[2].i64 = K;
	assert_int_equal(run("topk_router", &call), 0);

	for (size_t t = 0; t < N; t++) {
		const float *l = logits + t * NE;
		double p[NE], max = -INFINITY, sum = 0, picked = 0;
		bool taken[NE] = { 0 };
		int want[K];
		for (size_t e = 0; e < NE; e++)
			max = fmax(max, l[e]);
		for (size_t e = 0; e < NE; e++)
			sum += (p[e] = exp(l[e] - max));
		for (size_t j = 0; j < K; j++) {
			int best = -1;
			for (int e = 0; e < NE; e++)
				if (!taken[e] && (best < 0 || p[e] > p[best]))
					best = e; /* strict >: ties keep the lower index */
			taken[best] = true;
			want[j] = best;
			picked += p[best] / sum;
		}
		for (size_t j = 0; j < K; j++) {
			assert_int_equal(ids[t * K + j], want[j]);
			assert_close("router weights", t * K + j, w[t * K + j],
			             p[want[j]] / sum / picked, 0, 1e-5);
		}
	}
	assert_int_equal(ids[0], 2);
	assert_int_equal(ids[1], 7);
	assert_int_equal(ids[K + 0], 5);
	assert_int_equal(ids[K + 1], 1);
	assert_int_equal(ids[K + 2], 4);
	for (size_t i = N * K; i < N * K + TAIL; i++)
		assert_int_equal(ids[i], -7);
	assert_tail_intact("router weights", w, N * K);
	free(logits);
	free(w);
}

/* NaN logits (a NaN, or +inf, in a row makes its softmax NaN throughout):
 * NaN ranks after every number and ties go to the lower index, so such a
 * row picks experts 0..K-1 in that order, every time, with NaN weights; a
 * row without NaN in the same call is unaffected. The comparator used to
 * give no order with NaN (undefined behaviour in qsort). */
static void test_topk_router_nan(void **state)
{
	(void)state;
	enum { N = 5, NE = 9, K = 4 };
	rng_seed(9);
	float *logits = rand_floats(N * NE), *w = rand_floats(N * K);
	int32_t ids[N * K + TAIL];
	for (size_t i = 0; i < N * K + TAIL; i++)
		ids[i] = -7;
	logits[0 * NE + 6] = NAN; /* one NaN */
	logits[1 * NE + 0] = NAN; /* first, where the row's maximum starts */
	for (size_t e = 0; e < NE; e++)
		logits[2 * NE + e] = NAN; /* all */
	logits[3 * NE + 2] = INFINITY; /* inf - inf */
	/* row 4: numbers only, 5 the clear winner */
	logits[4 * NE + 5] = 9.0f;
	struct tdm_kernel_call call = {
		.ptr = { logits, ids, w },
		.len = { fbytes(N * NE), N * K * sizeof(int32_t), fbytes(N * K) },
	};
	call.s[0].i64 = N;
	call.s[1].i64 = NE;
	call.s[2].i64 = K;
	assert_int_equal(run("topk_router", &call), 0);

	for (size_t t = 0; t < 4; t++) {
		for (int j = 0; j < K; j++) {
			assert_int_equal(ids[t * K + (size_t)j], j);
			assert_true(isnan(w[t * K + (size_t)j]));
		}
	}
	/* row 4: distinct experts in range, 5 first, weights summing to 1 */
	bool seen[NE] = { false };
	double sum = 0;
	for (size_t j = 0; j < K; j++) {
		int32_t id = ids[4 * K + j];
		assert_true(id >= 0 && id < NE);
		assert_false(seen[id]);
		seen[id] = true;
		assert_true(isfinite(w[4 * K + j]) && w[4 * K + j] > 0);
		sum += w[4 * K + j];
	}
	assert_int_equal(ids[4 * K], 5);
	assert_true(fabs(sum - 1) < 1e-5);
	for (size_t i = N * K; i < N * K + TAIL; i++)
		assert_int_equal(ids[i], -7);
	assert_tail_intact("router weights", w, N * K);
	free(logits);
	free(w);
}

/* ---- tiled Cholesky ----------------------------------------------------------- */

/* A = M M^T / n + I, row-major n x n, in float (symmetric exactly). */
static float *spd_floats(size_t n)
{
	float *m = rand_floats(n * n), *a = rand_floats(n * n);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j <= i; j++) {
			double s = 0;
			for (size_t l = 0; l < n; l++)
				s += (double)m[i * n + l] * m[j * n + l];
			a[i * n + j] = a[j * n + i] = (float)(s / (double)n + (i == j));
		}
	}
	free(m);
	return a;
}

static struct tdm_kernel_call tile_call(size_t nb, void *a, void *b, void *c)
{
	struct tdm_kernel_call call = {
		.ptr = { a, b, c }, .len = { fbytes(nb * nb), fbytes(nb * nb), fbytes(nb * nb) }
	};
	call.s[0].i64 = (int64_t)nb;
	return call;
}

/* Each kernel once against its loop in double. */
static void test_tile_kernels(void **state)
{
	(void)state;
	enum { NB = 23 };
	rng_seed(9);

	/* spotrf: the lower triangle is L with L L^T = A; the upper part is
	 * what it was (the CPU leaves it). */
	float *a = spd_floats(NB), *a0 = copy_floats(a, NB * NB);
	struct tdm_kernel_call call = tile_call(NB, a, NULL, NULL);
	assert_int_equal(run("spotrf", &call), 0);
	for (size_t i = 0; i < NB; i++) {
		for (size_t j = 0; j < NB; j++) {
			if (j > i) {
				assert_true(a[i * NB + j] == a0[i * NB + j]);
				continue;
			}
			double s = 0;
			for (size_t l = 0; l <= j; l++)
				s += (double)a[i * NB + l] * a[j * NB + l];
			assert_close("spotrf L L^T", i * NB + j, s, a0[i * NB + j], 1e-5 * NB,
			             1e-4);
		}
	}
	assert_tail_intact("spotrf A", a, NB * NB);

	/* strsm with that L (NaN above the diagonal: never read): X L^T = B. */
	for (size_t i = 0; i < NB; i++)
		for (size_t j = i + 1; j < NB; j++)
			a[i * NB + j] = NAN;
	float *b = rand_floats(NB * NB), *b0 = copy_floats(b, NB * NB);
	call = tile_call(NB, a, b, NULL);
	assert_int_equal(run("strsm", &call), 0);
	for (size_t r = 0; r < NB; r++) {
		for (size_t j = 0; j < NB; j++) {
			double s = 0; /* (X L^T)[r][j] */
			for (size_t l = 0; l <= j; l++)
				s += (double)b[r * NB + l] * a[j * NB + l];
			assert_close("strsm X L^T", r * NB + j, s, b0[r * NB + j], 1e-5 * NB, 1e-4);
		}
	}
	assert_tail_intact("strsm B", b, NB * NB);

	/* ssyrk: C - A A^T on the lower triangle. */
	float *x = rand_floats(NB * NB), *c = rand_floats(NB * NB), *c0 = copy_floats(c, NB * NB);
	call = tile_call(NB, x, c, NULL);
	assert_int_equal(run("ssyrk", &call), 0);
	for (size_t i = 0; i < NB; i++) {
		for (size_t j = 0; j <= i; j++) {
			double s = c0[i * NB + j];
			for (size_t l = 0; l < NB; l++)
				s -= (double)x[i * NB + l] * x[j * NB + l];
			assert_close("ssyrk C", i * NB + j, c[i * NB + j], s, 1e-4 * NB, 1e-4);
		}
	}
	assert_tail_intact("ssyrk C", c, NB * NB);

	/* sgemm_nt: C - A B^T. */
	float *y = rand_floats(NB * NB);
	memcpy(c0, c, fbytes(NB * NB));
	call = tile_call(NB, x, y, c);
	assert_int_equal(run("sgemm_nt", &call), 0);
	for (size_t i = 0; i < NB; i++) {
		for (size_t j = 0; j < NB; j++) {
			double s = c0[i * NB + j];
			for (size_t l = 0; l < NB; l++)
				s -= (double)x[i * NB + l] * y[j * NB + l];
			assert_close("sgemm_nt C", i * NB + j, c[i * NB + j], s, 1e-4 * NB, 1e-4);
		}
	}
	assert_tail_intact("sgemm_nt C", c, NB * NB);
	free(a);
	free(a0);
	free(b);
	free(b0);
	free(x);
	free(c);
	free(c0);
	free(y);
}

/* A whole tiled factorisation, T x T tiles of nb, right-looking, with the
 * four kernels as the scheduler would run them: L L^T must give A back. */
static void test_tiled_cholesky(void **state)
{
	(void)state;
	enum { T = 4, NB = 9, N = T * NB };
	rng_seed(10);
	float *a = spd_floats(N), *tile[T][T];
	for (size_t ti = 0; ti < T; ti++) {
		for (size_t tj = 0; tj < T; tj++) {
			tile[ti][tj] = malloc(fbytes(NB * NB));
			assert_non_null(tile[ti][tj]);
			for (size_t i = 0; i < NB; i++)
				memcpy(tile[ti][tj] + i * NB, a + (ti * NB + i) * N + tj * NB,
				       fbytes(NB));
		}
	}
	for (size_t k = 0; k < T; k++) {
		struct tdm_kernel_call call = tile_call(NB, tile[k][k], NULL, NULL);
		assert_int_equal(run("spotrf", &call), 0);
		for (size_t i = k + 1; i < T; i++) {
			call = tile_call(NB, tile[k][k], tile[i][k], NULL);
			assert_int_equal(run("strsm", &call), 0);
		}
		for (size_t i = k + 1; i < T; i++) {
			call = tile_call(NB, tile[i][k], tile[i][i], NULL);
			assert_int_equal(run("ssyrk", &call), 0);
			for (size_t j = k + 1; j < i; j++) {
				call = tile_call(NB, tile[i][k], tile[j][k], tile[i][j]);
				assert_int_equal(run("sgemm_nt", &call), 0);
			}
		}
	}
	/* L[r][c] for c <= r, from the tiles. */
	for (size_t r = 0; r < N; r++) {
		for (size_t c = 0; c <= r; c++) {
			double s = 0;
			for (size_t l = 0; l <= c; l++)
				s += (double)tile[r / NB][l / NB][(r % NB) * NB + l % NB] *
				     tile[c / NB][l / NB][(c % NB) * NB + l % NB];
			assert_close("L L^T", r * N + c, s, a[r * N + c], 1e-5 * N, 1e-4);
		}
	}
	for (size_t ti = 0; ti < T; ti++)
		for (size_t tj = 0; tj < T; tj++)
			free(tile[ti][tj]);
	free(a);
}

/* A matrix that is not positive definite fails with -TDM_EINVAL (the input
 * is at fault, not the device: not -TDM_EDEVICE). */
static void test_spotrf_not_spd(void **state)
{
	(void)state;
	enum { NB = 5 };
	float a[NB * NB] = { 0 };
	for (size_t i = 0; i < NB; i++)
		a[i * NB + i] = i == 3 ? -1.0f : 2.0f;
	struct tdm_kernel_call call = tile_call(NB, a, NULL, NULL);
	assert_int_equal(run("spotrf", &call), -TDM_EINVAL);
	float z = 0;
	call = tile_call(1, &z, NULL, NULL);
	assert_int_equal(run("spotrf", &call), -TDM_EINVAL);
}

/* ---- intake checks ------------------------------------------------------------ */

#define I(v)                                                                                       \
	{                                                                                          \
		.i64 = (v)                                                                         \
	}
#define F(v)                                                                                       \
	{                                                                                          \
		.f32 = (v)                                                                         \
	}

struct bad_scalar {
	int index;
	union tdm_wire_scalar v;
};

struct check_case {
	const char *kernel;
	union tdm_wire_scalar s[TDM_MAX_SCALARS];
	uint64_t len[TDM_MAX_ARGS]; /* exactly what the scalars need */
	bool same_len; /* copy, axpy: the lengths must be equal */
	bool any_len; /* fill, copy, axpy: no minimum length */
	struct bad_scalar bad[8];
	int nbad;
};

static const struct check_case check_cases[] = {
	{ .kernel = "noop" },
	{
	        .kernel = "spin",
	        .s = { I(2000) },
	        .bad = { { 0, I(-1) }, { 0, I(10000001) } },
	        .nbad = 2,
	},
	{ .kernel = "fill", .s = { F(1.0f) }, .len = { 400 }, .any_len = true },
	{ .kernel = "copy", .len = { 400, 400 }, .same_len = true, .any_len = true },
	{
	        .kernel = "axpy",
	        .s = { F(2.0f) },
	        .len = { 400, 400 },
	        .same_len = true,
	        .any_len = true,
	},
	{
	        .kernel = "sgemm",
	        .s = { I(37), I(29), I(53), F(1.0f), F(0.0f) },
	        .len = { 4 * 37 * 53, 4 * 53 * 29, 4 * 37 * 29 },
	        .bad = { { 0, I(0) }, { 1, I(65537) }, { 2, I(-1) } },
	        .nbad = 3,
	},
	{
	        .kernel = "rmsnorm",
	        .s = { I(7), I(53), F(1e-5f) },
	        .len = { 4 * 7 * 53, 4 * 53, 4 * 7 * 53 },
	        .bad = { { 0, I(0) },
	                 { 1, I(65537) },
	                 { 2, F(-1.0f) },
	                 { 2, F(NAN) },
	                 { 2, F(INFINITY) } },
	        .nbad = 5,
	},
	{
	        .kernel = "softmax",
	        .s = { I(6), I(37) },
	        .len = { 4 * 6 * 37 },
	        .bad = { { 0, I(0) }, { 1, I(65537) } },
	        .nbad = 2,
	},
	{
	        .kernel = "rope",
	        .s = { I(5), I(3), I(18), I(7), F(10000.0f) },
	        .len = { 4 * 5 * 3 * 18 },
	        .bad = { { 2, I(17) },
	                 { 0, I(0) },
	                 { 3, I(-1) },
	                 { 3, I(INT64_MAX) },
	                 { 4, F(0.0f) },
	                 { 4, F(-2.0f) },
	                 { 4, F(INFINITY) },
	                 { 4, F(NAN) } },
	        .nbad = 8,
	},
	{
	        .kernel = "attn_decode",
	        .s = { I(2), I(8), I(2), I(16), I(13), I(20) },
	        .len = { 4 * 2 * 8 * 16, 4 * 2 * 20 * 2 * 16, 4 * 2 * 20 * 2 * 16, 4 * 2 * 8 * 16 },
	        .bad = { { 2, I(3) },
	                 { 4, I(21) },
	                 { 4, I(0) },
	                 { 5, I(0) },
	                 { 0, I(0) },
	                 { 3, I(65537) },
	                 { 1, I(-8) } },
	        .nbad = 7,
	},
	{
	        .kernel = "moe_expert",
	        .s = { I(5), I(19), I(23), I(2), I(3) },
	        .len = { 4 * 5 * 19, 4 * 19 * 23, 4 * 19 * 23, 4 * 23 * 19, 4 * 5 * 2, 4 * 5 * 2,
	                 4 * 5 * 19 },
	        .bad = { { 3, I(0) },
	                 { 3, I(65) },
	                 { 4, I(-1) },
	                 { 4, I(65536) },
	                 { 0, I(0) },
	                 { 2, I(65537) } },
	        .nbad = 6,
	},
	{
	        .kernel = "spotrf",
	        .s = { I(7) },
	        .len = { 4 * 7 * 7 },
	        .bad = { { 0, I(0) }, { 0, I(4097) }, { 0, I(-1) } },
	        .nbad = 3,
	},
	{
	        .kernel = "strsm",
	        .s = { I(7) },
	        .len = { 4 * 7 * 7, 4 * 7 * 7 },
	        .bad = { { 0, I(0) }, { 0, I(4097) }, { 0, I(-1) } },
	        .nbad = 3,
	},
	{
	        .kernel = "ssyrk",
	        .s = { I(7) },
	        .len = { 4 * 7 * 7, 4 * 7 * 7 },
	        .bad = { { 0, I(0) }, { 0, I(4097) }, { 0, I(INT64_MIN) } },
	        .nbad = 3,
	},
	{
	        .kernel = "sgemm_nt",
	        .s = { I(7) },
	        .len = { 4 * 7 * 7, 4 * 7 * 7, 4 * 7 * 7 },
	        .bad = { { 0, I(0) }, { 0, I(4097) }, { 0, I(65536) } },
	        .nbad = 3,
	},
	{
	        .kernel = "topk_router",
	        .s = { I(7), I(11), I(3) },
	        .len = { 4 * 7 * 11, 4 * 7 * 3, 4 * 7 * 3 },
	        .bad = { { 2, I(0) }, { 2, I(12) }, { 1, I(1025) }, { 0, I(0) } },
	        .nbad = 4,
	},
};

static struct tdm_kernel_call case_call(const struct check_case *c, const struct kernel_def *d)
{
	/* No pointers: a check must not touch the data. */
	struct tdm_kernel_call call = { .nargs = d->nargs };
	memcpy(call.s, c->s, sizeof(call.s));
	memcpy(call.len, c->len, sizeof(call.len));
	return call;
}

/* Adds delta to argument i's length, or to every length when same_len. */
static int check_with(const struct check_case *c, int i, int64_t delta)
{
	const struct kernel_def *d = kdef(c->kernel);
	struct tdm_kernel_call call = case_call(c, d);
	for (int a = 0; a < d->nargs; a++)
		if (a == i || c->same_len)
			call.len[a] = (uint64_t)((int64_t)call.len[a] + delta);
	return d->check(&call);
}

static void expect(const struct check_case *c, const char *what, int i, int got, int want)
{
	if (got != want)
		fail_msg("%s check, %s (#%d): got %d, want %d", c->kernel, what, i, got, want);
}

static void test_checks(void **state)
{
	(void)state;
	for (size_t n = 0; n < sizeof(check_cases) / sizeof(check_cases[0]); n++) {
		const struct check_case *c = &check_cases[n];
		const struct kernel_def *d = kdef(c->kernel);
		struct tdm_kernel_call call = case_call(c, d);
		expect(c, "exact sizes", 0, d->check(&call), 0);
		for (int i = 0; i < d->nargs; i++) {
			if (!c->any_len)
				expect(c, "arg 4 bytes short", i, check_with(c, i, -4),
				       -TDM_ERANGE);
			expect(c, "arg not whole floats", i, check_with(c, i, 1), -TDM_ERANGE);
			expect(c, "arg 4 bytes longer", i, check_with(c, i, 4), 0);
			if (c->same_len) {
				call = case_call(c, d);
				call.len[i] += 4;
				expect(c, "unequal lengths", i, d->check(&call), -TDM_ERANGE);
			}
		}
		for (int b = 0; b < c->nbad; b++) {
			call = case_call(c, d);
			call.s[c->bad[b].index] = c->bad[b].v;
			expect(c, "bad scalar", b, d->check(&call), -TDM_EARITY);
		}
	}
}

/* Four dimensions of 65536 times 4 bytes wrap to 0 in 64 bits: a check with
 * wrapping arithmetic would accept a 64-byte cache. */
static void test_check_overflow(void **state)
{
	(void)state;
	struct tdm_kernel_call call = { .nargs = 4 };
	int64_t s[] = { 65536, 65536, 65536, 65536, 1, 65536 }; /* batch nh nkv hd len cap */
	for (int i = 0; i < 6; i++)
		call.s[i].i64 = s[i];
	call.len[0] = call.len[3] = 4ull << 48; /* q, out: exact */
	call.len[1] = call.len[2] = 64;
	assert_int_equal(kdef("attn_decode")->check(&call), -TDM_ERANGE);
	call.len[1] = call.len[2] = UINT64_MAX - 3;
	assert_int_equal(kdef("attn_decode")->check(&call), -TDM_ERANGE);
}

/* The largest tile passes on its size alone (a check reads no data); one
 * float short of it does not. */
static void test_tile_limits(void **state)
{
	(void)state;
	struct tdm_kernel_call call = { .nargs = 3 };
	call.s[0].i64 = 4096;
	for (int i = 0; i < 3; i++)
		call.len[i] = 4ull * 4096 * 4096;
	assert_int_equal(kdef("sgemm_nt")->check(&call), 0);
	call.len[1] -= 4;
	assert_int_equal(kdef("sgemm_nt")->check(&call), -TDM_ERANGE);
	call.len[1] += 4;
	call.s[0].i64 = 4097;
	assert_int_equal(kdef("sgemm_nt")->check(&call), -TDM_EARITY);
	assert_int_equal(kernel_lookup("spotrf"), KERNEL_SPOTRF);
	assert_int_equal(kernel_lookup("sgemm_nt"), KERNEL_SGEMM_NT);
}

/* ---- cost features ------------------------------------------------------------ */

static struct kernel_features features_of(const char *name, const int64_t *s, int ns,
                                          const uint64_t *len)
{
	const struct kernel_def *d = kdef(name);
	struct tdm_kernel_call call = { .nargs = d->nargs };
	struct kernel_features f;
	for (int i = 0; i < ns; i++)
		call.s[i].i64 = s[i];
	for (int i = 0; i < d->nargs; i++)
		call.len[i] = len[i];
	assert_int_equal(d->check(&call), 0);
	memset(&f, 0xff, sizeof(f));
	d->features(&call, &f);
	return f;
}

static void test_features(void **state)
{
	(void)state;
	const int64_t gemm[] = { 37, 29, 53 };
	const uint64_t gemm_len[] = { 4 * 37 * 53, 4 * 53 * 29, 4 * 37 * 29 };
	struct kernel_features f = features_of("sgemm", gemm, 3, gemm_len);
	assert_true(f.flops == 2.0 * 37 * 29 * 53);
	assert_true(f.domain == 37.0 * 29 * 53);
	assert_true(f.bytes == 4.0 * (37 * 53 + 53 * 29 + 37 * 29));

	const int64_t attn[] = { 2, 8, 2, 16, 13, 20 };
	const uint64_t attn_len[] = { 4 * 2 * 8 * 16, 4 * 2 * 20 * 2 * 16, 4 * 2 * 20 * 2 * 16,
		                      4 * 2 * 8 * 16 };
	f = features_of("attn_decode", attn, 6, attn_len);
	assert_true(f.domain == 2.0 * 8 * 13); /* positions: batch x nh x kv_len */
	assert_true(f.flops > 4.0 * 2 * 8 * 13 * 16 - 1);
	/* Each position has a cost hd does not scale: on the CPU kernel a
	 * position of head dim 1 takes ~9 ns, one of head dim 128 ~70 ns. The
	 * flops must follow within 2x, or a cache of head dim 1 read by many
	 * query heads runs far longer than its features say. */
	const int64_t hd1[] = { 1, 64, 1, 1, 4096, 4096 }, hd128[] = { 1, 64, 1, 128, 4096, 4096 };
	const uint64_t hd1_len[] = { 4 * 64, 4 * 4096, 4 * 4096, 4 * 64 };
	const uint64_t hd128_len[] = { 4 * 64 * 128, 4 * 4096 * 128, 4 * 4096 * 128, 4 * 64 * 128 };
	struct kernel_features narrow = features_of("attn_decode", hd1, 6, hd1_len);
	struct kernel_features wide = features_of("attn_decode", hd128, 6, hd128_len);
	assert_true(narrow.domain == wide.domain);
	assert_true(narrow.flops / wide.flops >= 0.5 * 9.0 / 70.0);

	const int64_t moe[] = { 5, 19, 23, 2, 3 };
	const uint64_t moe_len[] = { 4 * 5 * 19, 4 * 19 * 23, 4 * 19 * 23, 4 * 23 * 19,
		                     4 * 5 * 2,  4 * 5 * 2,   4 * 5 * 19 };
	f = features_of("moe_expert", moe, 5, moe_len);
	assert_true(f.domain == 5.0 * 19 * 23); /* n x dm x dff */
	assert_true(f.flops >= 6.0 * 5 * 19 * 23);

	const int64_t sm[] = { 6, 37 };
	const uint64_t sm_len[] = { 4 * 6 * 37 };
	f = features_of("softmax", sm, 2, sm_len);
	assert_true(f.domain == 6.0 * 37); /* the element count */
	assert_true(f.bytes == 4.0 * 6 * 37);

	/* Tiled Cholesky: domain nb, the usual flop counts, each argument once
	 * (a triangular one by its lower triangle). */
	const int64_t nb[] = { 64 };
	const double n = 64, n2 = n * n, tri = n * (n + 1) / 2;
	const uint64_t tiles[] = { 4 * 64 * 64, 4 * 64 * 64, 4 * 64 * 64 };
	f = features_of("spotrf", nb, 1, tiles);
	assert_true(f.flops == n * n2 / 3 && f.bytes == 4 * tri && f.domain == n);
	f = features_of("strsm", nb, 1, tiles);
	assert_true(f.flops == n * n2 && f.bytes == 4 * (tri + n2) && f.domain == n);
	f = features_of("ssyrk", nb, 1, tiles);
	assert_true(f.flops == n * n2 && f.bytes == 4 * (n2 + tri) && f.domain == n);
	f = features_of("sgemm_nt", nb, 1, tiles);
	assert_true(f.flops == 2 * n * n2 && f.bytes == 4 * 3 * n2 && f.domain == n);

	/* Every kernel gives finite, non-negative features on its check case. */
	for (size_t n = 0; n < sizeof(check_cases) / sizeof(check_cases[0]); n++) {
		const struct kernel_def *d = kdef(check_cases[n].kernel);
		struct tdm_kernel_call call = case_call(&check_cases[n], d);
		d->features(&call, &f);
		assert_true(isfinite(f.flops) && f.flops >= 0);
		assert_true(isfinite(f.bytes) && f.bytes >= 0);
		assert_true(isfinite(f.domain) && f.domain >= 0);
	}
}

/* ---- cancellation ---------------------------------------------------------------- */

static const struct check_case *case_of(const char *kernel)
{
	for (size_t n = 0; n < sizeof(check_cases) / sizeof(check_cases[0]); n++)
		if (!strcmp(check_cases[n].kernel, kernel))
			return &check_cases[n];
	fail_msg("no check case for %s", kernel);
	return NULL;
}

/* The kernels whose work grows with rows, heads, tokens or panels stop with
 * -TDM_ECANCELED when their flag is set (here before they start) and run
 * when it is clear. */
static void test_cancel_flag(void **state)
{
	(void)state;
	static const char *const stoppable[] = { "spin",        "rmsnorm",     "softmax",
		                                 "rope",        "attn_decode", "moe_expert",
		                                 "topk_router", "sgemm",       "strsm",
		                                 "ssyrk",       "sgemm_nt" };
	_Atomic int flag;
	for (size_t n = 0; n < sizeof(stoppable) / sizeof(stoppable[0]); n++) {
		const struct kernel_def *d = kdef(stoppable[n]);
		struct tdm_kernel_call call = { .nargs = d->nargs };
		if (strcmp(stoppable[n], "spin") != 0)
			call = case_call(case_of(stoppable[n]), d);
		else
			call.s[0].i64 = 1000;
		for (unsigned a = 0; a < d->nargs; a++) {
			call.ptr[a] = calloc(1, call.len[a]);
			assert_non_null(call.ptr[a]);
		}
		if (d->id == KERNEL_MOE_EXPERT) {
			/* Every token routed (ids 0, weight 1) to expert 0. */
			float *w = call.ptr[5];
			for (size_t i = 0; i < call.len[5] / 4; i++)
				w[i] = 1.0f;
			call.s[4].i64 = 0;
		}
		call.cancel = &flag;
		atomic_store(&flag, 1);
		if (d->cpu(&call) != -TDM_ECANCELED)
			fail_msg("%s ran with its cancel flag set", d->name);
		atomic_store(&flag, 0);
		if (d->cpu(&call) != 0)
			fail_msg("%s failed with its cancel flag clear", d->name);
		for (unsigned a = 0; a < d->nargs; a++)
			free(call.ptr[a]);
	}
}

struct canceler {
	_Atomic int *flag;
	unsigned after_ms;
};

static void *cancel_later(void *arg)
{
	struct canceler *c = arg;
	struct timespec ts = { 0, (long)c->after_ms * 1000000L };
	nanosleep(&ts, NULL);
	atomic_store(c->flag, 1);
	return NULL;
}

/* Runs call (from the table's kernel name) with its flag set by another
 * thread 20 ms in; returns how long the kernel ran, in ms. */
static double run_canceled_mid_way(const char *name, struct tdm_kernel_call *call, int *rc)
{
	_Atomic int flag = 0;
	struct canceler c = { &flag, 20 };
	pthread_t th;
	call->cancel = &flag;
	uint64_t t0 = clock_monotonic_ns();
	assert_int_equal(pthread_create(&th, NULL, cancel_later, &c), 0);
	*rc = run(name, call);
	double ms = (double)(clock_monotonic_ns() - t0) / 1e6;
	pthread_join(th, NULL);
	return ms;
}

/* Canceled while running: spin of 10 s, and the attn_decode of issue 12
 * (head dim 1, one kv head read by 65536 query heads, 65536 positions),
 * some 40 s of work on a core. Both stop within 5 s of their start
 * (generous: they look at the flag every millisecond at most, and the flag
 * is raised after 20 ms). */
static void test_cancel_mid_way(void **state)
{
	(void)state;
	int rc;
	struct tdm_kernel_call spin = { .s = { { .i64 = 10000000 } } };
	double ms = run_canceled_mid_way("spin", &spin, &rc);
	assert_int_equal(rc, -TDM_ECANCELED);
	assert_true(ms < 5000);

	enum { NH = 65536, KV = 65536 };
	struct tdm_kernel_call attn = {
		.len = { 4 * NH, 4 * KV, 4 * KV, 4 * NH },
		.s = { { .i64 = 1 },
		       { .i64 = NH },
		       { .i64 = 1 },
		       { .i64 = 1 },
		       { .i64 = KV },
		       { .i64 = KV } },
	};
	for (int a = 0; a < 4; a++) {
		attn.ptr[a] = calloc(1, attn.len[a]);
		assert_non_null(attn.ptr[a]);
	}
	ms = run_canceled_mid_way("attn_decode", &attn, &rc);
	assert_int_equal(rc, -TDM_ECANCELED);
	assert_true(ms < 5000);
	for (int a = 0; a < 4; a++)
		free(attn.ptr[a]);
}

/* GEMM-shaped calls beyond cpu_panel_flops run in row panels (two here:
 * 256 rows and 44): the result is the single call's. */
static void test_panels(void **state)
{
	(void)state;
	enum { N = 300, M = 300, K = 70 };
	uint64_t saved = cpu_panel_flops;
	rng_seed(11);
	float *a = rand_floats(N * N), *b = rand_floats(N * N), *c = rand_floats(N * N);
	/* strsm's L: lower, its diagonal dominant. */
	for (size_t i = 0; i < N; i++)
		a[i * N + i] = (float)N;
	static const char *const kernels[] = { "sgemm", "strsm", "ssyrk", "sgemm_nt" };
	for (size_t n = 0; n < sizeof(kernels) / sizeof(kernels[0]); n++) {
		const struct kernel_def *d = kdef(kernels[n]);
		float *out[2];
		for (int split = 0; split < 2; split++) {
			out[split] = copy_floats(c, N * N);
			struct tdm_kernel_call call = { .nargs = d->nargs };
			if (d->id == KERNEL_SGEMM) {
				call.ptr[0] = a, call.ptr[1] = b, call.ptr[2] = out[split];
				call.len[0] = fbytes(M * K), call.len[1] = fbytes(K * N);
				call.len[2] = fbytes(M * N);
				call.s[0].i64 = M, call.s[1].i64 = N, call.s[2].i64 = K;
				call.s[3].f32 = 0.5f, call.s[4].f32 = 2.0f;
			} else {
				call.s[0].i64 = N;
				call.ptr[0] = a;
				call.ptr[1] = d->nargs == 3 ? b : out[split];
				call.ptr[2] = d->nargs == 3 ? out[split] : NULL;
				for (unsigned i = 0; i < d->nargs; i++)
					call.len[i] = fbytes(N * N);
			}
			cpu_panel_flops = split ? 1 : saved;
			assert_int_equal(run(kernels[n], &call), 0);
		}
		cpu_panel_flops = saved;
		for (size_t i = 0; i < N * N; i++)
			assert_close(kernels[n], i, out[1][i], out[0][i], 1e-4, 1e-4);
		free(out[0]);
		free(out[1]);
	}
	free(a);
	free(b);
	free(c);
}

int main(void)
{
	kernels_cpu_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_device_kind_names),
		cmocka_unit_test(test_sgemm),
		cmocka_unit_test(test_fill_copy_axpy),
		cmocka_unit_test(test_spin_takes_its_time),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_softmax),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_attn_decode),
		cmocka_unit_test(test_moe_expert),
		cmocka_unit_test(test_topk_router),
		cmocka_unit_test(test_topk_router_nan),
		cmocka_unit_test(test_tile_kernels),
		cmocka_unit_test(test_tiled_cholesky),
		cmocka_unit_test(test_spotrf_not_spd),
		cmocka_unit_test(test_checks),
		cmocka_unit_test(test_check_overflow),
		cmocka_unit_test(test_tile_limits),
		cmocka_unit_test(test_features),
		cmocka_unit_test(test_cancel_flag),
		cmocka_unit_test(test_cancel_mid_way),
		cmocka_unit_test(test_panels),
	};
	return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
