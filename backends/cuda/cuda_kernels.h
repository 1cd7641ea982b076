/* CUDA device kernels of the built-in kernels (cuda_kernels.cu), as plain C
 * launchers: each enqueues its work on stream s and returns the launch
 * status. The semantics are those of docs/kernels.md; the callers in
 * cuda_launch.c unpack the task's arguments and do the cuBLAS parts. */
#ifndef TDM_BACKENDS_CUDA_KERNELS_H
#define TDM_BACKENDS_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* attn_decode keeps the scores of one (b, h) in shared memory up to this
 * kv_len; beyond it the caller passes kv_len floats of scratch per (b, h). */
#define CUK_ATTN_SHARED_MAX 8192

struct cuk_attn_dims {
	int64_t batch, nh, nkv, hd, kv_len, kv_cap;
};

cudaError_t cuk_fill(cudaStream_t s, float *a, uint64_t n, float v);
cudaError_t cuk_axpy(cudaStream_t s, const float *x, float *y, uint64_t n, float alpha);
cudaError_t cuk_rmsnorm(cudaStream_t s, const float *x, const float *w, float *y, int64_t rows,
                        int64_t dim, float eps);
cudaError_t cuk_softmax(cudaStream_t s, float *x, int64_t rows, int64_t cols);
cudaError_t cuk_rope(cudaStream_t s, float *x, int64_t ntok, int64_t nheads, int64_t hd,
                     int64_t pos0, float theta);
/* scores: NULL to keep them in shared memory (kv_len <= CUK_ATTN_SHARED_MAX),
 * else batch * nh * kv_len floats of device memory. */
cudaError_t cuk_attn_decode(cudaStream_t s, const float *q, const float *k, const float *v,
                            float *out, float *scores, const struct cuk_attn_dims *d);
/* attn_decode_varlen (docs/kernels.md): rows is the pools' row count. */
struct cuk_varlen_dims {
	int64_t nreq, nh, nkv, hd, total;
	uint64_t rows;
};

/* Two kernels: one block checks the index into *status (0, or 1 for a bad
 * index), then the attention, which does nothing when *status is set. */
cudaError_t cuk_attn_varlen(cudaStream_t s, const float *q, const float *k, const float *v,
                            const int32_t *index, float *out, int32_t *status,
                            const struct cuk_varlen_dims *d);
/* r[t] = sum_j (ids[t][j] == expert ? w[t][j] : 0), for t < n. */
cudaError_t cuk_moe_route(cudaStream_t s, const int32_t *ids, const float *w, float *r, int64_t n,
                          int64_t k, int64_t expert);
/* The m tokens tok[] (device memory) of x (n x dm) gathered: xb[i] = x[tok[i]]
 * and r[i] = token tok[i]'s weight, as cuk_moe_route; a token >= n gets a
 * zero row and weight 0. */
cudaError_t cuk_moe_gather(cudaStream_t s, const float *x, const int32_t *ids, const float *w,
                           const uint32_t *tok, int64_t m, int64_t n, int64_t dm, int64_t k,
                           int64_t expert, float *xb, float *r);
/* g[i] = silu(g[i]) * u[i], for i < count. */
cudaError_t cuk_swiglu(cudaStream_t s, float *g, const float *u, uint64_t count);
/* y[t][c] += r[i] * d[i][c] for the m rows i with r[i] != 0, t = tok[i]
 * (distinct; tok NULL: t = i); other rows of y untouched. */
cudaError_t cuk_moe_accumulate(cudaStream_t s, float *y, const float *d, const float *r,
                               const uint32_t *tok, int64_t m, int64_t dm);
cudaError_t cuk_topk_router(cudaStream_t s, const float *logits, int32_t *ids, float *w, int64_t n,
                            int64_t ne, int64_t k);

#ifdef __cplusplus
}
#endif

#endif
