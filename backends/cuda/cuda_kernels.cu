/* CUDA kernels for the built-in kernels that cuBLAS does not cover. Each
 * launcher enqueues on the given stream and reports the launch status; the
 * work itself fails later, through the event recorded after it. All math
 * is float with the accurate library functions (no fast-math), so results
 * stay within docs/kernels.md's tolerances of the CPU implementation. */
#include <math.h>

#include "backends/cuda/cuda_kernels.h"

#define BLOCK 256 /* threads per block; a multiple of the warp size */
#define GRID_MAX (1u << 20) /* element-wise kernels stride over the rest */

static unsigned grid_for(uint64_t items, unsigned per_block)
{
	uint64_t g = (items + per_block - 1) / per_block;
	return g > GRID_MAX ? GRID_MAX : (unsigned)g;
}

/* ---- block reductions ------------------------------------------------- */

__device__ static float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ static float warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* Sum (or max) of v over the block; every thread gets the result. sh holds
 * one float per warp. Starts with a barrier so that sh may be reused and so
 * that the block's earlier memory writes are visible after it. */
__device__ static float block_sum(float v, float *sh)
{
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	unsigned nwarps = (blockDim.x + 31) >> 5;

	v = warp_sum(v);
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	return warp_sum(lane < nwarps ? sh[lane] : 0.0f);
}

__device__ static float block_max(float v, float *sh)
{
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	unsigned nwarps = (blockDim.x + 31) >> 5;

	v = warp_max(v);
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	return warp_max(lane < nwarps ? sh[lane] : -INFINITY);
}

/* ---- element-wise ----------------------------------------------------- */

__global__ static void fill_kernel(float *a, uint64_t n, float v)
{
	for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
	     i += (uint64_t)gridDim.x * blockDim.x)
		a[i] = v;
}

extern "C" cudaError_t cuk_fill(cudaStream_t s, float *a, uint64_t n, float v)
{
	if (n == 0)
		return cudaSuccess;
	fill_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(a, n, v);
	return cudaGetLastError();
}

__global__ static void axpy_kernel(const float *x, float *y, uint64_t n, float alpha)
{
	for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
	     i += (uint64_t)gridDim.x * blockDim.x)
		y[i] += alpha * x[i];
}

extern "C" cudaError_t cuk_axpy(cudaStream_t s, const float *x, float *y, uint64_t n, float alpha)
{
	if (n == 0)
		return cudaSuccess;
	axpy_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(x, y, n, alpha);
	return cudaGetLastError();
}

/* ---- rmsnorm, softmax: one block per row ------------------------------ */

__global__ static void rmsnorm_kernel(const float *x, const float *w, float *y, int64_t rows,
                                      int64_t dim, float eps)
{
	__shared__ float sh[32];

	for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
		const float *xr = x + r * dim;
		float *yr = y + r * dim;
		float ss = 0.0f;
		for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
			ss += xr[i] * xr[i];
		ss = block_sum(ss, sh);
		float scale = 1.0f / sqrtf(ss / (float)dim + eps);
		for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
			yr[i] = xr[i] * scale * w[i];
	}
}

extern "C" cudaError_t cuk_rmsnorm(cudaStream_t s, const float *x, const float *w, float *y,
                                   int64_t rows, int64_t dim, float eps)
{
	if (rows == 0)
		return cudaSuccess;
	rmsnorm_kernel<<<grid_for((uint64_t)rows, 1), BLOCK, 0, s>>>(x, w, y, rows, dim, eps);
	return cudaGetLastError();
}

__global__ static void softmax_kernel(float *x, int64_t rows, int64_t cols)
{
	__shared__ float sh[32];

	for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
		float *xr = x + r * cols;
		float m = -INFINITY;
		for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
			m = fmaxf(m, xr[i]);
		m = block_max(m, sh);
		float sum = 0.0f;
		for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
			float e = expf(xr[i] - m);
			xr[i] = e;
			sum += e;
		}
		sum = block_sum(sum, sh);
		for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
			xr[i] = xr[i] / sum;
	}
}

extern "C" cudaError_t cuk_softmax(cudaStream_t s, float *x, int64_t rows, int64_t cols)
{
	if (rows == 0)
		return cudaSuccess;
	softmax_kernel<<<grid_for((uint64_t)rows, 1), BLOCK, 0, s>>>(x, rows, cols);
	return cudaGetLastError();
}

/* ---- rope: one thread per rotated pair -------------------------------- */

/* The angle is p * powf(theta, -2i/hd) in single precision (docs/kernels.md).
 * It grows with the position, so a one-ulp difference in powf or in the
 * sine shows at large positions: both are computed in double and rounded,
 * which gives the correctly rounded float results the CPU's libm gives. */
__global__ static void rope_kernel(float *x, int64_t ntok, int64_t nheads, int64_t hd, int64_t pos0,
                                   float theta)
{
	int64_t half = hd / 2;
	uint64_t total = (uint64_t)ntok * (uint64_t)nheads * (uint64_t)half;

	for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total;
	     idx += (uint64_t)gridDim.x * blockDim.x) {
		int64_t i = (int64_t)(idx % (uint64_t)half);
		int64_t th = (int64_t)(idx / (uint64_t)half); /* t * nheads + h */
		int64_t t = th / nheads;
		float *row = x + th * hd;
		float p = (float)(pos0 + t);
		float e = -2.0f * (float)i / (float)hd;
		float f = p * (float)pow((double)theta, (double)e);
		double sd, cd;
		sincos((double)f, &sd, &cd);
		float sf = (float)sd, cf = (float)cd;
		float a = row[i], b = row[i + half];
		row[i] = a * cf - b * sf;
		row[i + half] = a * sf + b * cf;
	}
}

extern "C" cudaError_t cuk_rope(cudaStream_t s, float *x, int64_t ntok, int64_t nheads, int64_t hd,
                                int64_t pos0, float theta)
{
	uint64_t total = (uint64_t)ntok * (uint64_t)nheads * (uint64_t)(hd / 2);
	if (total == 0)
		return cudaSuccess;
	rope_kernel<<<grid_for(total, BLOCK), BLOCK, 0, s>>>(x, ntok, nheads, hd, pos0, theta);
	return cudaGetLastError();
}

/* ---- attn_decode: one block per (b, h) -------------------------------- */

__global__ static void attn_decode_kernel(const float *q, const float *kc, const float *vc,
                                          float *out, float *scratch, struct cuk_attn_dims d)
{
	extern __shared__ float shared_scores[];
	__shared__ float sh[32];
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	unsigned nwarps = blockDim.x >> 5;
	int64_t group = d.nh / d.nkv;
	float root_hd = sqrtf((float)d.hd);

	for (int64_t bh = blockIdx.x; bh < d.batch * d.nh; bh += gridDim.x) {
		int64_t b = bh / d.nh, h = bh % d.nh, g = h / group;
		const float *qv = q + bh * d.hd;
		/* K[b][t][g] is at kbase + t * tstride. */
		int64_t tstride = d.nkv * d.hd;
		const float *kbase = kc + (b * d.kv_cap * d.nkv + g) * d.hd;
		const float *vbase = vc + (b * d.kv_cap * d.nkv + g) * d.hd;
		float *s = scratch ? scratch + bh * d.kv_len : shared_scores;

		/* Scores: one warp per key, lanes over the head dimension. */
		for (int64_t t = warp; t < d.kv_len; t += nwarps) {
			const float *kt = kbase + t * tstride;
			float dot = 0.0f;
			for (int64_t i = lane; i < d.hd; i += 32)
				dot += qv[i] * kt[i];
			dot = warp_sum(dot);
			if (lane == 0)
				s[t] = dot / root_hd;
		}
		__syncthreads();
		float m = -INFINITY;
		for (int64_t t = threadIdx.x; t < d.kv_len; t += blockDim.x)
			m = fmaxf(m, s[t]);
		m = block_max(m, sh);
		float sum = 0.0f;
		for (int64_t t = threadIdx.x; t < d.kv_len; t += blockDim.x) {
			float e = expf(s[t] - m);
			s[t] = e;
			sum += e;
		}
		sum = block_sum(sum, sh);
		/* Output: threads over the head dimension, so V reads coalesce. */
		for (int64_t i = threadIdx.x; i < d.hd; i += blockDim.x) {
			float acc = 0.0f;
			for (int64_t t = 0; t < d.kv_len; t++)
				acc += s[t] * vbase[t * tstride + i];
			out[bh * d.hd + i] = acc / sum;
		}
		__syncthreads(); /* s and sh are reused by the next (b, h) */
	}
}

extern "C" cudaError_t cuk_attn_decode(cudaStream_t s, const float *q, const float *k,
                                       const float *v, float *out, float *scores,
                                       const struct cuk_attn_dims *d)
{
	uint64_t blocks = (uint64_t)d->batch * (uint64_t)d->nh;
	size_t shmem = scores ? 0 : (size_t)d->kv_len * sizeof(float);

	if (blocks == 0)
		return cudaSuccess;
	if (!scores && d->kv_len > CUK_ATTN_SHARED_MAX)
		return cudaErrorInvalidValue;
	attn_decode_kernel<<<grid_for(blocks, 1), BLOCK, shmem, s>>>(q, k, v, out, scores, *d);
	return cudaGetLastError();
}

/* ---- attn_decode_varlen ----------------------------------------------- */

/* Positions per chunk of scores in shared memory (4 KiB). */
#define VARLEN_CHUNK 1024

/* Whether request r's entry names rows inside the pools, with len >= 1. */
__device__ static bool varlen_entry_ok(int64_t row, int64_t len, uint64_t rows)
{
	return row >= 0 && len >= 1 && (uint64_t)(row + len) <= rows;
}

/* One block: every entry checked and the lengths summed; the lengths add
 * up to < 2^47 (2^16 entries below 2^31), so a bad entry counts 2^48 and
 * the sum can no longer match. */
__global__ static void varlen_check_kernel(const int32_t *idx, int32_t *status,
                                           struct cuk_varlen_dims d)
{
	__shared__ unsigned long long sh[BLOCK];
	unsigned long long sum = 0, bad = 0;

	for (int64_t r = threadIdx.x; r < d.nreq; r += blockDim.x) {
		int64_t row = idx[2 * r], len = idx[2 * r + 1];
		if (varlen_entry_ok(row, len, d.rows))
			sum += (unsigned long long)len;
		else
			bad = 1;
	}
	sh[threadIdx.x] = sum + (bad << 48);
	__syncthreads();
	for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
		if (threadIdx.x < s)
			sh[threadIdx.x] += sh[threadIdx.x + s];
		__syncthreads();
	}
	if (threadIdx.x == 0)
		*status = sh[0] == (unsigned long long)d.total ? 0 : 1;
}

/* One block per (request, query head), as attn_decode_kernel, but the
 * scores go through shared memory a chunk of positions at a time with an
 * online softmax (running max m_run and sum l_run; o holds the unnormalised
 * weighted sum of V rows until the end). With one chunk this is
 * attn_decode_kernel's computation. */
__global__ static void attn_varlen_kernel(const float *q, const float *kc, const float *vc,
                                          const int32_t *idx, float *out, const int32_t *status,
                                          struct cuk_varlen_dims d)
{
	__shared__ float sc[VARLEN_CHUNK];
	__shared__ float sh[32];
	unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	unsigned nwarps = blockDim.x >> 5;
	int64_t group = d.nh / d.nkv, stride = d.nkv * d.hd;
	float root_hd = sqrtf((float)d.hd);

	if (*status != 0)
		return; /* a bad index: nothing is read */
	for (int64_t rh = blockIdx.x; rh < d.nreq * d.nh; rh += gridDim.x) {
		int64_t r = rh / d.nh, g = (rh % d.nh) / group;
		int64_t row = idx[2 * r], len = idx[2 * r + 1];
		if (!varlen_entry_ok(row, len, d.rows))
			continue; /* the check saw it: never taken */
		const float *qv = q + rh * d.hd;
		const float *kb = kc + row * stride + g * d.hd;
		const float *vb = vc + row * stride + g * d.hd;
		float *o = out + rh * d.hd;
		float m_run = -INFINITY, l_run = 0.0f;

		for (int64_t c0 = 0; c0 < len; c0 += VARLEN_CHUNK) {
			int64_t n = len - c0 < VARLEN_CHUNK ? len - c0 : VARLEN_CHUNK;
			/* Scores: one warp per key, lanes over the head dimension. */
			for (int64_t t = warp; t < n; t += nwarps) {
				const float *kt = kb + (c0 + t) * stride;
				float dot = 0.0f;
				for (int64_t i = lane; i < d.hd; i += 32)
					dot += qv[i] * kt[i];
				dot = warp_sum(dot);
				if (lane == 0)
					sc[t] = dot / root_hd;
			}
			__syncthreads();
			float m = -INFINITY;
			for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
				m = fmaxf(m, sc[t]);
			m = fmaxf(m_run, block_max(m, sh));
			float sum = 0.0f;
			for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
				float e = expf(sc[t] - m);
				sc[t] = e;
				sum += e;
			}
			sum = block_sum(sum, sh); /* its barriers publish every sc[t] */
			float alpha = expf(m_run - m); /* 0 for the first chunk */
			l_run = l_run * alpha + sum;
			for (int64_t i = threadIdx.x; i < d.hd; i += blockDim.x) {
				float acc = 0.0f;
				for (int64_t t = 0; t < n; t++)
					acc += sc[t] * vb[(c0 + t) * stride + i];
				o[i] = c0 == 0 ? acc : o[i] * alpha + acc;
			}
			m_run = m;
			__syncthreads(); /* sc and sh are reused by the next chunk */
		}
		for (int64_t i = threadIdx.x; i < d.hd; i += blockDim.x)
			o[i] /= l_run;
	}
}

extern "C" cudaError_t cuk_attn_varlen(cudaStream_t s, const float *q, const float *k,
                                       const float *v, const int32_t *index, float *out,
                                       int32_t *status, const struct cuk_varlen_dims *d)
{
	uint64_t blocks = (uint64_t)d->nreq * (uint64_t)d->nh;

	varlen_check_kernel<<<1, BLOCK, 0, s>>>(index, status, *d);
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess || blocks == 0)
		return e;
	attn_varlen_kernel<<<grid_for(blocks, 1), BLOCK, 0, s>>>(q, k, v, index, out, status, *d);
	return cudaGetLastError();
}

/* ---- moe_expert pieces ------------------------------------------------ */

/* Token t's routing weight for expert, summed over j as the CPU does. */
__device__ static float moe_weight(const int32_t *ids, const float *w, int64_t t, int64_t k,
                                   int64_t expert)
{
	float sum = 0.0f;
	for (int64_t j = 0; j < k; j++)
		if (ids[t * k + j] == expert)
			sum += w[t * k + j];
	return sum;
}

__global__ static void moe_route_kernel(const int32_t *ids, const float *w, float *r, int64_t n,
                                        int64_t k, int64_t expert)
{
	for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
	     t += (int64_t)gridDim.x * blockDim.x)
		r[t] = moe_weight(ids, w, t, k, expert);
}

extern "C" cudaError_t cuk_moe_route(cudaStream_t s, const int32_t *ids, const float *w, float *r,
                                     int64_t n, int64_t k, int64_t expert)
{
	if (n == 0)
		return cudaSuccess;
	moe_route_kernel<<<grid_for((uint64_t)n, BLOCK), BLOCK, 0, s>>>(ids, w, r, n, k, expert);
	return cudaGetLastError();
}

/* Row i of xb is x's row tok[i], r[i] its weight. A token past n (which the
 * engine never sends) gets weight 0 and a zero row, so it is never read
 * out of x nor added to y. */
__global__ static void moe_gather_kernel(const float *x, const int32_t *ids, const float *w,
                                         const uint32_t *tok, int64_t m, int64_t n, int64_t dm,
                                         int64_t k, int64_t expert, float *xb, float *r)
{
	uint64_t total = (uint64_t)m * (uint64_t)dm;

	for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total;
	     idx += (uint64_t)gridDim.x * blockDim.x) {
		uint64_t i = idx / (uint64_t)dm, c = idx % (uint64_t)dm;
		int64_t t = tok[i];
		bool ok = t < n;
		xb[idx] = ok ? x[(uint64_t)t * (uint64_t)dm + c] : 0.0f;
		if (c == 0)
			r[i] = ok ? moe_weight(ids, w, t, k, expert) : 0.0f;
	}
}

extern "C" cudaError_t cuk_moe_gather(cudaStream_t s, const float *x, const int32_t *ids,
                                      const float *w, const uint32_t *tok, int64_t m, int64_t n,
                                      int64_t dm, int64_t k, int64_t expert, float *xb, float *r)
{
	uint64_t total = (uint64_t)m * (uint64_t)dm;
	if (total == 0)
		return cudaSuccess;
	moe_gather_kernel<<<grid_for(total, BLOCK), BLOCK, 0, s>>>(x, ids, w, tok, m, n, dm, k,
	                                                           expert, xb, r);
	return cudaGetLastError();
}

__global__ static void swiglu_kernel(float *g, const float *u, uint64_t count)
{
	for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < count;
	     i += (uint64_t)gridDim.x * blockDim.x) {
		float z = g[i];
		g[i] = z / (1.0f + expf(-z)) * u[i];
	}
}

extern "C" cudaError_t cuk_swiglu(cudaStream_t s, float *g, const float *u, uint64_t count)
{
	if (count == 0)
		return cudaSuccess;
	swiglu_kernel<<<grid_for(count, BLOCK), BLOCK, 0, s>>>(g, u, count);
	return cudaGetLastError();
}

/* Unrouted tokens are skipped, not multiplied by 0: their d rows may hold
 * inf or NaN (from inf/NaN in x), and y must stay exactly as it was. Row i
 * of d goes to y's row tok[i] (tok NULL: row i); the rows are distinct. */
__global__ static void moe_accumulate_kernel(float *y, const float *d, const float *r,
                                             const uint32_t *tok, int64_t m, int64_t dm)
{
	uint64_t total = (uint64_t)m * (uint64_t)dm;

	for (uint64_t idx = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; idx < total;
	     idx += (uint64_t)gridDim.x * blockDim.x) {
		uint64_t i = idx / (uint64_t)dm, c = idx % (uint64_t)dm;
		float rt = r[i];
		uint64_t row = tok ? tok[i] : i;
		if (rt != 0.0f)
			y[row * (uint64_t)dm + c] += rt * d[idx];
	}
}

extern "C" cudaError_t cuk_moe_accumulate(cudaStream_t s, float *y, const float *d, const float *r,
                                          const uint32_t *tok, int64_t m, int64_t dm)
{
	uint64_t total = (uint64_t)m * (uint64_t)dm;
	if (total == 0)
		return cudaSuccess;
	moe_accumulate_kernel<<<grid_for(total, BLOCK), BLOCK, 0, s>>>(y, d, r, tok, m, dm);
	return cudaGetLastError();
}

/* ---- topk_router: one thread per row ---------------------------------- */

/* Whether (pa, a) ranks before (pb, b): larger probability first, NaN
 * after every number, the lower expert index first among equal ones (NaN
 * with NaN too). A total order, so that each pass finds the next expert: a
 * NaN logit (or +inf) makes the row's softmax NaN, and the row then picks
 * experts 0..k-1 as on the CPU, instead of -1. */
__device__ static bool ranks_before(float pa, int64_t a, float pb, int64_t b)
{
	bool na = isnan(pa), nb = isnan(pb);

	if (na != nb)
		return nb;
	if (!na && pa != pb)
		return pa > pb;
	return a < b;
}

/* Selection in k passes, each taking the best expert ranking after the
 * previous pick; no per-row storage, and k is small in practice. */
__global__ static void topk_router_kernel(const float *logits, int32_t *ids, float *w, int64_t n,
                                          int64_t ne, int64_t k)
{
	for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n;
	     t += (int64_t)gridDim.x * blockDim.x) {
		const float *l = logits + t * ne;
		float m = -INFINITY, sum = 0.0f, picked = 0.0f;
		for (int64_t i = 0; i < ne; i++)
			m = fmaxf(m, l[i]);
		for (int64_t i = 0; i < ne; i++)
			sum += expf(l[i] - m);

		int64_t prev = -1;
		float prev_p = 0.0f;
		for (int64_t j = 0; j < k; j++) {
			int64_t best = -1;
			float best_p = 0.0f;
			for (int64_t i = 0; i < ne; i++) {
				float p = expf(l[i] - m) / sum;
				if (prev >= 0 && !ranks_before(prev_p, prev, p, i))
					continue;
				if (best < 0 || ranks_before(p, i, best_p, best)) {
					best = i;
					best_p = p;
				}
			}
			ids[t * k + j] = (int32_t)best;
			w[t * k + j] = best_p;
			picked += best_p;
			prev = best;
			prev_p = best_p;
		}
		for (int64_t j = 0; j < k; j++)
			w[t * k + j] = w[t * k + j] / picked;
	}
}

extern "C" cudaError_t cuk_topk_router(cudaStream_t s, const float *logits, int32_t *ids, float *w,
                                       int64_t n, int64_t ne, int64_t k)
{
	if (n == 0)
		return cudaSuccess;
	topk_router_kernel<<<grid_for((uint64_t)n, 128), 128, 0, s>>>(logits, ids, w, n, ne, k);
	return cudaGetLastError();
}
