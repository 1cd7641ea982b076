/* Built-in kernel table: names, signatures, argument checks and cost
 * features. The semantics are in docs/kernels.md. */
#include "backends/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/csr.h"
#include "tandem.h"

#define SPIN_MAX_US 10000000 /* 10 s */
#define DIM_MAX 65536
#define ROUTER_MAX_EXPERTS 1024
#define MOE_MAX_K 64
#define MOE_MAX_EXPERT 65536
#define TILE_MAX 4096 /* Cholesky tiles: nb x nb, nb <= TILE_MAX */
#define F4 ((double)sizeof(float))

/* ---- helpers ---------------------------------------------------------------- */

static bool dim_ok(int64_t v)
{
	return v >= 1 && v <= DIM_MAX;
}

/* Whether len bytes hold a*b*c*d 4-byte elements. The product is computed
 * with overflow checks: four dimensions of 65536 already overflow 64 bits,
 * and a wrapped product would let a tiny buffer through. */
static bool holds(uint64_t len, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
	uint64_t n;

	if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
	    __builtin_mul_overflow(n, d, &n) || __builtin_mul_overflow(n, (uint64_t)4, &n))
		return false;
	return len >= n;
}

/* Arguments holding floats or int32s must be a whole number of elements. */
static bool whole_words(const struct tdm_kernel_call *call, unsigned nargs)
{
	for (unsigned i = 0; i < nargs; i++)
		if (call->len[i] % 4)
			return false;
	return true;
}

static double sd(const struct tdm_kernel_call *call, int i)
{
	return (double)call->s[i].i64;
}

/* ---- checks ----------------------------------------------------------------- */

static int check_none(const struct tdm_kernel_call *call)
{
	(void)call;
	return 0;
}

static int check_spin(const struct tdm_kernel_call *call)
{
	int64_t us = call->s[0].i64;
	return us >= 0 && us <= SPIN_MAX_US ? 0 : -TDM_EARITY;
}

static int check_fill(const struct tdm_kernel_call *call)
{
	return whole_words(call, 1) ? 0 : -TDM_ERANGE;
}

static int check_copy(const struct tdm_kernel_call *call)
{
	return call->len[0] == call->len[1] && whole_words(call, 2) ? 0 : -TDM_ERANGE;
}

static int check_axpy(const struct tdm_kernel_call *call)
{
	if (call->len[0] != call->len[1] || !whole_words(call, 2) ||
	    call->len[0] / sizeof(float) > INT32_MAX) /* BLAS counts are int */
		return -TDM_ERANGE;
	return 0;
}

static int check_sgemm(const struct tdm_kernel_call *call)
{
	int64_t m = call->s[0].i64, n = call->s[1].i64, k = call->s[2].i64;

	if (!dim_ok(m) || !dim_ok(n) || !dim_ok(k))
		return -TDM_EARITY;
	if (!whole_words(call, 3) || !holds(call->len[0], m, k, 1, 1) ||
	    !holds(call->len[1], k, n, 1, 1) || !holds(call->len[2], m, n, 1, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_rmsnorm(const struct tdm_kernel_call *call)
{
	int64_t rows = call->s[0].i64, dim = call->s[1].i64;
	float eps = call->s[2].f32;

	if (!dim_ok(rows) || !dim_ok(dim) || !isfinite(eps) || eps < 0)
		return -TDM_EARITY;
	if (!whole_words(call, 3) || !holds(call->len[0], rows, dim, 1, 1) ||
	    !holds(call->len[1], dim, 1, 1, 1) || !holds(call->len[2], rows, dim, 1, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_softmax(const struct tdm_kernel_call *call)
{
	int64_t rows = call->s[0].i64, cols = call->s[1].i64;

	if (!dim_ok(rows) || !dim_ok(cols))
		return -TDM_EARITY;
	if (!whole_words(call, 1) || !holds(call->len[0], rows, cols, 1, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_rope(const struct tdm_kernel_call *call)
{
	int64_t ntok = call->s[0].i64, nheads = call->s[1].i64, hd = call->s[2].i64;
	int64_t pos0 = call->s[3].i64;
	float theta = call->s[4].f32;

	if (!dim_ok(ntok) || !dim_ok(nheads) || !dim_ok(hd) || hd % 2)
		return -TDM_EARITY;
	/* Positions stay int32 so that every backend can index them as int. */
	if (pos0 < 0 || pos0 > INT32_MAX - ntok)
		return -TDM_EARITY;
	if (!isfinite(theta) || theta <= 0)
		return -TDM_EARITY;
	if (!whole_words(call, 1) || !holds(call->len[0], ntok, nheads, hd, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_attn_decode(const struct tdm_kernel_call *call)
{
	int64_t batch = call->s[0].i64, nh = call->s[1].i64, nkv = call->s[2].i64;
	int64_t hd = call->s[3].i64, kv_len = call->s[4].i64, kv_cap = call->s[5].i64;

	for (int i = 0; i < 6; i++)
		if (!dim_ok(call->s[i].i64))
			return -TDM_EARITY;
	if (nh % nkv || kv_len > kv_cap)
		return -TDM_EARITY;
	/* The caches are whole: batch x kv_cap x nkv x hd. */
	if (!whole_words(call, 4) || !holds(call->len[0], batch, nh, hd, 1) ||
	    !holds(call->len[1], batch, kv_cap, nkv, hd) ||
	    !holds(call->len[2], batch, kv_cap, nkv, hd) || !holds(call->len[3], batch, nh, hd, 1))
		return -TDM_ERANGE;
	return 0;
}

/* The index's contents are data, checked where the kernel runs (every
 * backend, before any work: docs/kernels.md); here only what the scalars
 * promise: nreq entries, total_tokens in [nreq, nreq * (2^31 - 1)] (each
 * request has 1 to INT32_MAX positions), and pools of at least one row. */
static int check_attn_decode_varlen(const struct tdm_kernel_call *call)
{
	int64_t nreq = call->s[0].i64, nh = call->s[1].i64, nkv = call->s[2].i64;
	int64_t hd = call->s[3].i64, total = call->s[4].i64;

	for (int i = 0; i < 4; i++)
		if (!dim_ok(call->s[i].i64))
			return -TDM_EARITY;
	if (nh % nkv || total < nreq || total > nreq * (int64_t)INT32_MAX)
		return -TDM_EARITY;
	if (!whole_words(call, 5) || !holds(call->len[VARLEN_Q], nreq, nh, hd, 1) ||
	    !holds(call->len[VARLEN_K], 1, nkv, hd, 1) ||
	    !holds(call->len[VARLEN_V], 1, nkv, hd, 1) ||
	    !holds(call->len[VARLEN_INDEX], nreq, VARLEN_ENTRY_WORDS, 1, 1) ||
	    !holds(call->len[VARLEN_OUT], nreq, nh, hd, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_moe_expert(const struct tdm_kernel_call *call)
{
	int64_t n = call->s[0].i64, dm = call->s[1].i64, dff = call->s[2].i64;
	int64_t k = call->s[3].i64, expert = call->s[4].i64;

	if (!dim_ok(n) || !dim_ok(dm) || !dim_ok(dff))
		return -TDM_EARITY;
	if (k < 1 || k > MOE_MAX_K || expert < 0 || expert >= MOE_MAX_EXPERT)
		return -TDM_EARITY;
	if (!whole_words(call, 7) || !holds(call->len[0], n, dm, 1, 1) ||
	    !holds(call->len[1], dm, dff, 1, 1) || !holds(call->len[2], dm, dff, 1, 1) ||
	    !holds(call->len[3], dff, dm, 1, 1) || !holds(call->len[4], n, k, 1, 1) ||
	    !holds(call->len[5], n, k, 1, 1) || !holds(call->len[6], n, dm, 1, 1))
		return -TDM_ERANGE;
	return 0;
}

static int check_topk_router(const struct tdm_kernel_call *call)
{
	int64_t n = call->s[0].i64, ne = call->s[1].i64, k = call->s[2].i64;

	if (!dim_ok(n) || ne > ROUTER_MAX_EXPERTS || k < 1 || k > ne)
		return -TDM_EARITY;
	if (!whole_words(call, 3) || !holds(call->len[0], n, ne, 1, 1) ||
	    !holds(call->len[1], n, k, 1, 1) || !holds(call->len[2], n, k, 1, 1))
		return -TDM_ERANGE;
	return 0;
}

/* The tiled-Cholesky kernels take one scalar, the tile size nb, and nargs
 * square nb x nb tiles. */
static int check_tiles(const struct tdm_kernel_call *call, unsigned nargs)
{
	int64_t nb = call->s[0].i64;

	if (nb < 1 || nb > TILE_MAX)
		return -TDM_EARITY;
	if (!whole_words(call, nargs))
		return -TDM_ERANGE;
	for (unsigned i = 0; i < nargs; i++)
		if (!holds(call->len[i], nb, nb, 1, 1))
			return -TDM_ERANGE;
	return 0;
}

static int check_tile1(const struct tdm_kernel_call *call)
{
	return check_tiles(call, 1);
}

static int check_tile2(const struct tdm_kernel_call *call)
{
	return check_tiles(call, 2);
}

static int check_tile3(const struct tdm_kernel_call *call)
{
	return check_tiles(call, 3);
}

static int check_tile4(const struct tdm_kernel_call *call)
{
	return check_tiles(call, 4);
}

/* ---- cost features (docs/kernels.md, "Cost features") -------------------------
 * flops count a multiply-add as 2; an exp, a division or a comparison counts
 * as 1. bytes count each argument once, over the part the kernel touches. */

static void feat_none(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	(void)call;
	*out = (struct kernel_features){ 0 };
}

/* spin has no elements; its domain is its duration, the one thing its cost
 * depends on. */
static void feat_spin(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	*out = (struct kernel_features){ .domain = sd(call, 0) };
}

static void feat_fill(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double len = (double)call->len[0];
	*out = (struct kernel_features){ .bytes = len, .domain = len / F4 };
}

static void feat_copy(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double len = (double)call->len[0];
	*out = (struct kernel_features){ .bytes = 2 * len, .domain = len / F4 };
}

static void feat_axpy(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double n = (double)call->len[0] / F4;
	*out = (struct kernel_features){ .flops = 2 * n, .bytes = 2 * n * F4, .domain = n };
}

static void feat_sgemm(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double m = sd(call, 0), n = sd(call, 1), k = sd(call, 2);
	*out = (struct kernel_features){ .flops = 2 * m * n * k,
		                         .bytes = F4 * (m * k + k * n + m * n),
		                         .domain = m * n * k };
}

/* Square-add, then two multiplies per element. */
static void feat_rmsnorm(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double rows = sd(call, 0), dim = sd(call, 1);
	*out = (struct kernel_features){ .flops = 4 * rows * dim,
		                         .bytes = F4 * (2 * rows * dim + dim),
		                         .domain = rows * dim };
}

/* Max, subtract, exp, sum, scale per element. */
static void feat_softmax(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double e = sd(call, 0) * sd(call, 1);
	*out = (struct kernel_features){ .flops = 5 * e, .bytes = F4 * e, .domain = e };
}

/* Four multiplies and two adds per pair of elements; per token, its table
 * of hd/2 angles (a multiply, a cos and a sin each), shared by its heads. */
static void feat_rope(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double ntok = sd(call, 0), hd = sd(call, 2), e = ntok * sd(call, 1) * hd;
	*out = (struct kernel_features){ .flops = 3 * e + 1.5 * ntok * hd,
		                         .bytes = F4 * e,
		                         .domain = e };
}

/* Per (sequence, query head, position): q.K (2 hd), p.V (2 hd), and the
 * position's own step (scale, max, exp, sum, the loops around the two dot
 * products), which costs the same whatever hd is. Measured on the CPU
 * kernel that step takes what ~17 elements of the dot products do (~9 ns
 * against ~0.5 ns per element): it counts as ATTN_POSITION_FLOPS. With it
 * left out, a position of head dim 1 counted 9 flops against 517 for head
 * dim 128, though it takes an eighth of the time: a cache of head dim 1
 * read by 65536 query heads priced its 4.3e9 positions at 0.4 s on a
 * 100 GFLOP/s core, and they ran for 40 s. Only the kv_len filled
 * positions of the caches are read (not kv_cap). */
#define ATTN_POSITION_FLOPS 64

static void feat_attn_decode(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double batch = sd(call, 0), nh = sd(call, 1), nkv = sd(call, 2), hd = sd(call, 3);
	double kv_len = sd(call, 4), positions = batch * nh * kv_len;
	*out = (struct kernel_features){
		.flops = positions * (4 * hd + ATTN_POSITION_FLOPS),
		.bytes = F4 * (2 * batch * nh * hd + 2 * batch * kv_len * nkv * hd),
		.domain = positions,
	};
}

/* attn_decode over every request, with total_tokens = the sum of the
 * requests' KV lengths in place of batch * kv_len, and the index read. The
 * features come from the scalars, known at intake; the kernel fails the
 * task when the index does not add up to total_tokens, so that a client
 * cannot have a large task priced as a small one. */
static void feat_attn_decode_varlen(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double nreq = sd(call, 0), nh = sd(call, 1), nkv = sd(call, 2), hd = sd(call, 3);
	double total = sd(call, 4), positions = nh * total;
	*out = (struct kernel_features){
		.flops = positions * (4 * hd + ATTN_POSITION_FLOPS),
		.bytes = F4 *
		         (2 * nreq * nh * hd + 2 * total * nkv * hd + VARLEN_ENTRY_WORDS * nreq),
		.domain = positions,
	};
}

/* Every token counted as routed (the routing is not known at intake): three
 * projections (6 dm dff), SiLU and product (4 dff), y += r o (2 dm). */
static void feat_moe_expert(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double n = sd(call, 0), dm = sd(call, 1), dff = sd(call, 2), k = sd(call, 3);
	*out = (struct kernel_features){
		.flops = n * (6 * dm * dff + 4 * dff + 2 * dm),
		.bytes = F4 * (2 * n * dm + 3 * dm * dff + 2 * n * k),
		.domain = n * dm * dff,
	};
}

/* The same for `tokens` routed tokens: what the kernel computes (every
 * backend computes only the tokens in call.routed, and the CPU kernel and
 * OpenCL skip unrouted tokens without it too); the routing arrays still
 * count whole. */
static void routed_moe_expert(const struct tdm_kernel_call *call, uint32_t tokens,
                              struct kernel_features *out)
{
	double n = sd(call, 0), dm = sd(call, 1), dff = sd(call, 2), k = sd(call, 3), r = tokens;
	*out = (struct kernel_features){
		.flops = r * (6 * dm * dff + 4 * dff + 2 * dm),
		.bytes = F4 * (2 * r * dm + 3 * dm * dff + 2 * n * k),
		.domain = r * dm * dff,
	};
}

/* A moe_expert reading the ids and weights topk_router wrote (the same
 * ranges), of as many tokens and experts per token, for the guarded expert:
 * the router's tokens for that expert are all those the kernel would find
 * routed to it (the weights still come from its own argument). */
static bool takes_routed_moe_expert(const struct tdm_kernel_call *call, uint32_t expert,
                                    const struct kernel_def *router,
                                    const struct tdm_kernel_call *rcall)
{
	return router->id == KERNEL_TOPK_ROUTER && call->s[0].i64 == rcall->s[0].i64 &&
	       call->s[3].i64 == rcall->s[2].i64 && call->s[4].i64 == (int64_t)expert &&
	       call->ptr[4] == rcall->ptr[1] && call->len[4] == rcall->len[1] &&
	       call->ptr[5] == rcall->ptr[2] && call->len[5] == rcall->len[2];
}

static uint32_t route_experts_topk(const struct tdm_kernel_call *call)
{
	return (uint32_t)call->s[1].i64;
}

/* topk_router's outputs: ids (int32, n x k), wts (float, n x k). Every id
 * must name one of the ne experts and every weight be finite (a client
 * shares these buffers and may have written them since). A token counts
 * once for each distinct expert it chose. */
static int route_topk(const struct tdm_kernel_call *call, const void *const *out, uint32_t *routed,
                      char *why, size_t whylen)
{
	int64_t n = call->s[0].i64, ne = call->s[1].i64, k = call->s[2].i64;
	const int32_t *ids = out[1];
	const float *wts = out[2];
	for (int64_t t = 0; t < n; t++) {
		for (int64_t j = 0; j < k; j++) {
			int32_t id = ids[t * k + j];
			float w = wts[t * k + j];
			if (id < 0 || id >= ne) {
				snprintf(why, whylen,
				         "expert id %d of token %lld out of range [0, %lld)", id,
				         (long long)t, (long long)ne);
				return -TDM_EINVAL;
			}
			if (!isfinite(w)) {
				snprintf(why, whylen, "weight %g of token %lld not finite",
				         (double)w, (long long)t);
				return -TDM_EINVAL;
			}
			bool again = false;
			for (int64_t i = 0; i < j; i++)
				again |= ids[t * k + i] == id;
			routed[id] += !again;
		}
	}
	return 0;
}

/* After route_topk accepted them: each token under every distinct expert
 * it chose, tokens ascending within each expert. */
static void route_tokens_topk(const struct tdm_kernel_call *call, const void *const *out,
                              uint32_t *next, uint32_t *tokens)
{
	int64_t n = call->s[0].i64, k = call->s[2].i64;
	const int32_t *ids = out[1];
	for (int64_t t = 0; t < n; t++) {
		for (int64_t j = 0; j < k; j++) {
			bool again = false;
			for (int64_t i = 0; i < j; i++)
				again |= ids[t * k + i] == ids[t * k + j];
			if (!again)
				tokens[csr_slot(next, (uint32_t)ids[t * k + j])] = (uint32_t)t;
		}
	}
}

/* Softmax per row (5 ne), the sort of its ne entries (ne log2 ne
 * comparisons), then the renormalisation of the k picked (2 k). */
static void feat_topk_router(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double n = sd(call, 0), ne = sd(call, 1), k = sd(call, 2);
	*out = (struct kernel_features){ .flops = n * (5 * ne + ne * log2(ne) + 2 * k),
		                         .bytes = F4 * (n * ne + 2 * n * k),
		                         .domain = n * ne };
}

/* The tiled-Cholesky kernels: the usual flop counts (LAPACK Working Note 41,
 * leading terms), domain = nb. A triangular argument counts the nb(nb+1)/2
 * elements of its lower triangle, the only part the kernel touches. */
static double tri(double nb)
{
	return nb * (nb + 1) / 2;
}

static void feat_spotrf(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double nb = sd(call, 0);
	*out = (struct kernel_features){ .flops = nb * nb * nb / 3,
		                         .bytes = F4 * tri(nb),
		                         .domain = nb };
}

static void feat_strsm(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double nb = sd(call, 0);
	*out = (struct kernel_features){ .flops = nb * nb * nb,
		                         .bytes = F4 * (tri(nb) + nb * nb),
		                         .domain = nb };
}

/* n^2 k multiply-adds over half the matrix: nb^3 flops. */
static void feat_ssyrk(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double nb = sd(call, 0);
	*out = (struct kernel_features){ .flops = nb * nb * nb,
		                         .bytes = F4 * (nb * nb + tri(nb)),
		                         .domain = nb };
}

static void feat_sgemm_nt(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	double nb = sd(call, 0);
	*out = (struct kernel_features){ .flops = 2 * nb * nb * nb,
		                         .bytes = F4 * 3 * nb * nb,
		                         .domain = nb };
}

/* Simulation-only tile kernels; flop counts as LAPACK / PLASMA count them. */
static void feat_tile(const struct tdm_kernel_call *call, struct kernel_features *out,
                      double flops_per_nb3, double tiles)
{
	double nb = sd(call, 0);
	*out = (struct kernel_features){ .flops = flops_per_nb3 * nb * nb * nb,
		                         .bytes = F4 * tiles * nb * nb,
		                         .domain = nb };
}

static void feat_sgetrf(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	feat_tile(call, out, 2.0 / 3.0, 1);
}

static void feat_sgeqrt(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	feat_tile(call, out, 4.0 / 3.0, 2);
}

static void feat_sormqr(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	feat_tile(call, out, 2, 3);
}

static void feat_stsqrt(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	feat_tile(call, out, 2, 3);
}

static void feat_stsmqr(const struct tdm_kernel_call *call, struct kernel_features *out)
{
	feat_tile(call, out, 4, 4);
}

/* ---- the table, in enum kernel_id order ------------------------------------- */

#define I64 TDM_SCALAR_I64
#define F32 TDM_SCALAR_F32

static const struct kernel_def kernel_table[] = {
	[KERNEL_NOOP] = {
	        .name = "noop",
	        .id = KERNEL_NOOP,
	        .check = check_none,
	        .features = feat_none,
	        .cpu = cpu_noop,
	},
	[KERNEL_SPIN] = {
	        .name = "spin",
	        .id = KERNEL_SPIN,
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_spin,
	        .features = feat_spin,
	        .cpu = cpu_spin,
	},
	[KERNEL_FILL] = {
	        .name = "fill",
	        .id = KERNEL_FILL,
	        .nargs = 1,
	        .arg_modes = { TDM_W },
	        .nscalars = 1,
	        .scalar_types = { F32 },
	        .check = check_fill,
	        .features = feat_fill,
	        .cpu = cpu_fill,
	},
	[KERNEL_AXPY] = {
	        .name = "axpy",
	        .id = KERNEL_AXPY,
	        .nargs = 2,
	        .arg_modes = { TDM_R, TDM_RW },
	        .acc_args = 1u << 1,
	        .nscalars = 1,
	        .scalar_types = { F32 },
	        .check = check_axpy,
	        .features = feat_axpy,
	        .cpu = cpu_axpy,
	},
	[KERNEL_SGEMM] = {
	        .name = "sgemm",
	        .id = KERNEL_SGEMM,
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_R, TDM_RW },
	        .nscalars = 5,
	        .scalar_types = { I64, I64, I64, F32, F32 },
	        .check = check_sgemm,
	        .features = feat_sgemm,
	        .cpu = cpu_sgemm,
	},
	[KERNEL_COPY] = {
	        .name = "copy",
	        .id = KERNEL_COPY,
	        .nargs = 2,
	        .arg_modes = { TDM_R, TDM_W },
	        .check = check_copy,
	        .features = feat_copy,
	        .cpu = cpu_copy,
	},
	[KERNEL_RMSNORM] = {
	        .name = "rmsnorm",
	        .id = KERNEL_RMSNORM,
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_R, TDM_W },
	        .nscalars = 3,
	        .scalar_types = { I64, I64, F32 },
	        .check = check_rmsnorm,
	        .features = feat_rmsnorm,
	        .cpu = cpu_rmsnorm,
	},
	[KERNEL_SOFTMAX] = {
	        .name = "softmax",
	        .id = KERNEL_SOFTMAX,
	        .nargs = 1,
	        .arg_modes = { TDM_RW },
	        .nscalars = 2,
	        .scalar_types = { I64, I64 },
	        .check = check_softmax,
	        .features = feat_softmax,
	        .cpu = cpu_softmax,
	},
	[KERNEL_ROPE] = {
	        .name = "rope",
	        .id = KERNEL_ROPE,
	        .nargs = 1,
	        .arg_modes = { TDM_RW },
	        .nscalars = 5,
	        .scalar_types = { I64, I64, I64, I64, F32 },
	        .check = check_rope,
	        .features = feat_rope,
	        .cpu = cpu_rope,
	},
	[KERNEL_ATTN_DECODE] = {
	        .name = "attn_decode",
	        .id = KERNEL_ATTN_DECODE,
	        .nargs = 4,
	        .arg_modes = { TDM_R, TDM_R, TDM_R, TDM_W },
	        .nscalars = 6,
	        .scalar_types = { I64, I64, I64, I64, I64, I64 },
	        .check = check_attn_decode,
	        .features = feat_attn_decode,
	        .cpu = cpu_attn_decode,
	},
	[KERNEL_MOE_EXPERT] = {
	        .name = "moe_expert",
	        .id = KERNEL_MOE_EXPERT,
	        .nargs = 7,
	        .arg_modes = { TDM_R, TDM_R, TDM_R, TDM_R, TDM_R, TDM_R, TDM_RW },
	        .acc_args = 1u << 6,
	        .nscalars = 5,
	        .scalar_types = { I64, I64, I64, I64, I64 },
	        .check = check_moe_expert,
	        .features = feat_moe_expert,
	        .cpu = cpu_moe_expert,
	        .routed_features = routed_moe_expert,
	        .takes_routed = takes_routed_moe_expert,
	},
	[KERNEL_TOPK_ROUTER] = {
	        .name = "topk_router",
	        .id = KERNEL_TOPK_ROUTER,
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_W, TDM_W },
	        .nscalars = 3,
	        .scalar_types = { I64, I64, I64 },
	        .check = check_topk_router,
	        .features = feat_topk_router,
	        .cpu = cpu_topk_router,
	        .route_experts = route_experts_topk,
	        .route = route_topk,
	        .route_tokens = route_tokens_topk,
	},
	[KERNEL_SPOTRF] = {
	        .name = "spotrf",
	        .id = KERNEL_SPOTRF,
	        .nargs = 1,
	        .arg_modes = { TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile1,
	        .features = feat_spotrf,
	        .cpu = cpu_spotrf,
	},
	[KERNEL_STRSM] = {
	        .name = "strsm",
	        .id = KERNEL_STRSM,
	        .nargs = 2,
	        .arg_modes = { TDM_R, TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile2,
	        .features = feat_strsm,
	        .cpu = cpu_strsm,
	},
	[KERNEL_SSYRK] = {
	        .name = "ssyrk",
	        .id = KERNEL_SSYRK,
	        .nargs = 2,
	        .arg_modes = { TDM_R, TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile2,
	        .features = feat_ssyrk,
	        .cpu = cpu_ssyrk,
	},
	[KERNEL_SGEMM_NT] = {
	        .name = "sgemm_nt",
	        .id = KERNEL_SGEMM_NT,
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_R, TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile3,
	        .features = feat_sgemm_nt,
	        .cpu = cpu_sgemm_nt,
	},
	[KERNEL_ATTN_DECODE_VARLEN] = {
	        .name = "attn_decode_varlen",
	        .id = KERNEL_ATTN_DECODE_VARLEN,
	        .nargs = 5,
	        .arg_modes = { TDM_R, TDM_R, TDM_R, TDM_R, TDM_W },
	        .nscalars = 5,
	        .scalar_types = { I64, I64, I64, I64, I64 },
	        .check = check_attn_decode_varlen,
	        .features = feat_attn_decode_varlen,
	        .cpu = cpu_attn_decode_varlen,
	},
	/* Simulation only: no .cpu, and no accelerator backend supports them. */
	[KERNEL_SGETRF] = {
	        .name = "sgetrf_nopiv",
	        .id = KERNEL_SGETRF,
	        .nargs = 1,
	        .arg_modes = { TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile1,
	        .features = feat_sgetrf,
	},
	[KERNEL_SGEQRT] = {
	        .name = "sgeqrt",
	        .id = KERNEL_SGEQRT,
	        .nargs = 2,
	        .arg_modes = { TDM_RW, TDM_W },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile2,
	        .features = feat_sgeqrt,
	},
	[KERNEL_SORMQR] = {
	        .name = "sormqr",
	        .id = KERNEL_SORMQR,
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_R, TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile3,
	        .features = feat_sormqr,
	},
	[KERNEL_STSQRT] = {
	        .name = "stsqrt",
	        .id = KERNEL_STSQRT,
	        .nargs = 3,
	        .arg_modes = { TDM_RW, TDM_RW, TDM_W },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile3,
	        .features = feat_stsqrt,
	},
	[KERNEL_STSMQR] = {
	        .name = "stsmqr",
	        .id = KERNEL_STSMQR,
	        .nargs = 4,
	        .arg_modes = { TDM_RW, TDM_RW, TDM_R, TDM_R },
	        .nscalars = 1,
	        .scalar_types = { I64 },
	        .check = check_tile4,
	        .features = feat_stsmqr,
	},
	/* A workload's abstract task: the simulator sets its features and
	 * knows its cost on each device. */
	[KERNEL_SIM_TASK] = {
	        .name = "sim_task",
	        .id = KERNEL_SIM_TASK,
	        .check = check_none,
	        .features = feat_none,
	},
};

_Static_assert(sizeof(kernel_table) / sizeof(kernel_table[0]) == KERNEL_COUNT,
               "one table entry per enum kernel_id");

size_t kernel_count(void)
{
	return sizeof(kernel_table) / sizeof(kernel_table[0]);
}

const struct kernel_def *kernel_by_id(uint32_t id)
{
	return id < kernel_count() ? &kernel_table[id] : NULL;
}

int kernel_lookup(const char *name)
{
	for (size_t i = 0; i < kernel_count(); i++)
		if (strcmp(kernel_table[i].name, name) == 0)
			return (int)i;
	return -TDM_EKERNEL;
}

const char *device_kind_name(enum tdm_device_kind k)
{
	static const char *const names[TDM_DEV_KIND_COUNT] = {
		[TDM_DEV_CPU] = "cpu",
		[TDM_DEV_CLCPU] = "clcpu",
		[TDM_DEV_GPU] = "gpu",
		[TDM_DEV_NPU] = "npu",
	};
	return (unsigned)k < TDM_DEV_KIND_COUNT ? names[k] : "unknown";
}
