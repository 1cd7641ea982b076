/* CUDA backend: the built-in kernels, each unpacking its task's arguments
 * and enqueueing on the device's compute stream. GEMMs go to cuBLAS, the
 * rest to the kernels of cuda_kernels.cu. Argument checks were done at
 * intake (backends/kernels.c), so sizes here are known to fit. */
#include <stdint.h>
#include <string.h>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_priv.h"
#include "tandem.h"

typedef int (*cuda_kernel_fn)(struct cuda_dev *cd, const struct tdm_kernel_call *call);

/* Argument i on the device: the replica plus the byte offset into it. */
static void *arg(const struct tdm_kernel_call *call, int i)
{
	return (char *)call->mem[i] + call->off[i];
}

static int run_noop(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	(void)cd;
	(void)call;
	return 0;
}

static int run_fill(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(
	        cuk_fill(cd->compute, arg(call, 0), call->len[0] / sizeof(float), call->s[0].f32));
}

/* memmove, like the CPU kernel: two slices of one buffer may overlap, and
 * cudaMemcpy does not promise anything then, so those go through scratch. */
static int run_copy(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	uint64_t bytes = call->len[0] < call->len[1] ? call->len[0] : call->len[1];
	char *src = arg(call, 0), *dst = arg(call, 1);
	uintptr_t s = (uintptr_t)src, d = (uintptr_t)dst;
	void *tmp;

	if (bytes == 0 || src == dst)
		return 0;
	if (s >= d + bytes || d >= s + bytes)
		return cuda_status(
		        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cd->compute));
	int err = cuda_scratch(cd, bytes, &tmp);
	if (!err)
		err = cuda_status(
		        cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, cd->compute));
	if (!err)
		err = cuda_status(
		        cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, cd->compute));
	return err;
}

static int run_axpy(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(cuk_axpy(cd->compute, arg(call, 0), arg(call, 1),
	                            call->len[0] / sizeof(float), call->s[0].f32));
}

/* Row-major C = alpha A B + beta C (A m x k, B k x n), via column-major
 * cuBLAS: the same memory read column-major is C^T = B^T A^T. */
static int gemm_rm(struct cuda_dev *cd, int m, int n, int k, float alpha, const float *a,
                   const float *b, float beta, float *c)
{
	return cublas_status(cublasSgemm(cd->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, n,
	                                 a, k, &beta, c, n));
}

static int run_sgemm(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	int m = (int)call->s[0].i64, n = (int)call->s[1].i64, k = (int)call->s[2].i64;
	return gemm_rm(cd, m, n, k, call->s[3].f32, arg(call, 0), arg(call, 1), call->s[4].f32,
	               arg(call, 2));
}

static int run_rmsnorm(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(cuk_rmsnorm(cd->compute, arg(call, 0), arg(call, 1), arg(call, 2),
	                               call->s[0].i64, call->s[1].i64, call->s[2].f32));
}

static int run_softmax(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(cuk_softmax(cd->compute, arg(call, 0), call->s[0].i64, call->s[1].i64));
}

static int run_rope(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(cuk_rope(cd->compute, arg(call, 0), call->s[0].i64, call->s[1].i64,
	                            call->s[2].i64, call->s[3].i64, call->s[4].f32));
}

static int run_attn_decode(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	struct cuk_attn_dims d = {
		.batch = call->s[0].i64,
		.nh = call->s[1].i64,
		.nkv = call->s[2].i64,
		.hd = call->s[3].i64,
		.kv_len = call->s[4].i64,
		.kv_cap = call->s[5].i64,
	};
	void *scores = NULL;

	if (d.kv_len > CUK_ATTN_SHARED_MAX) {
		size_t bytes = (size_t)d.batch * (size_t)d.nh * (size_t)d.kv_len * sizeof(float);
		int err = cuda_scratch(cd, bytes, &scores);
		if (err)
			return err;
	}
	return cuda_status(cuk_attn_decode(cd->compute, arg(call, 0), arg(call, 1), arg(call, 2),
	                                   arg(call, 3), scores, &d));
}

/* The index is checked on the device, into cd->varlen_status, which
 * cuda_launch_async then copies into the task's event. */
static int run_attn_varlen(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	struct cuk_varlen_dims d = {
		.nreq = call->s[0].i64,
		.nh = call->s[1].i64,
		.nkv = call->s[2].i64,
		.hd = call->s[3].i64,
		.total = call->s[4].i64,
		.rows = attn_varlen_pool_rows(call),
	};

	if (!cd->varlen_status) {
		int err = cuda_status(cudaMalloc((void **)&cd->varlen_status, sizeof(int32_t)));
		if (err) {
			cd->varlen_status = NULL;
			return err;
		}
	}
	return cuda_status(cuk_attn_varlen(cd->compute, arg(call, VARLEN_Q), arg(call, VARLEN_K),
	                                   arg(call, VARLEN_V), arg(call, VARLEN_INDEX),
	                                   arg(call, VARLEN_OUT), cd->varlen_status, &d));
}

const int32_t *cuda_kernel_status(const struct cuda_dev *cd, uint32_t id)
{
	return id == KERNEL_ATTN_DECODE_VARLEN ? cd->varlen_status : NULL;
}

/* Scratch offsets rounded up to 256 bytes, the alignment cudaMalloc gives. */
static size_t align_up(size_t bytes)
{
	return (bytes + 255) & ~(size_t)255;
}

/* y += r D over the expert's tokens: r the routing weights, G and U the gate
 * and up projections, H = silu(G) * U in G's place, D = H w_down; rows whose
 * weight is 0 are left as they were. With the tokens the engine says were
 * routed here (call->routed: a guarded task) the m of them are gathered
 * into Xb first and only those rows computed; without, all n rows are
 * (cuBLAS needs the row count on the host, and the routing is on the
 * device). */
static int run_moe_expert(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	int64_t n = call->s[0].i64, dm = call->s[1].i64, dff = call->s[2].i64;
	int64_t k = call->s[3].i64, expert = call->s[4].i64;
	const uint32_t *routed = call->routed;
	int64_t m = routed ? (int64_t)call->nrouted : n;
	if (m == 0)
		return 0;
	size_t tok_bytes = routed ? align_up((size_t)m * sizeof(uint32_t)) : 0;
	size_t xb_bytes = routed ? align_up((size_t)m * (size_t)dm * sizeof(float)) : 0;
	size_t r_bytes = align_up((size_t)m * sizeof(float));
	size_t h_bytes = align_up((size_t)m * (size_t)dff * sizeof(float));
	size_t d_bytes = align_up((size_t)m * (size_t)dm * sizeof(float));
	char *base;
	int err = cuda_scratch(cd, tok_bytes + xb_bytes + r_bytes + 2 * h_bytes + d_bytes,
	                       (void **)&base);
	if (err)
		return err;
	uint32_t *tok = routed ? (uint32_t *)base : NULL;
	float *xb = (float *)(base + tok_bytes);
	float *r = (float *)(base + tok_bytes + xb_bytes);
	float *g = (float *)((char *)r + r_bytes), *u = (float *)((char *)g + h_bytes);
	float *dn = (float *)((char *)u + h_bytes);
	const float *x = arg(call, 0);

	if (routed) {
		/* The list through pinned memory kept with this launch's event,
		 * so that it outlives the copy. */
		void *host;
		size_t bytes = (size_t)m * sizeof(uint32_t);
		err = cuda_stage_host(cd, bytes, &host);
		if (!err) {
			memcpy(host, routed, bytes);
			err = cuda_status(cudaMemcpyAsync(tok, host, bytes, cudaMemcpyHostToDevice,
			                                  cd->compute));
		}
		if (!err)
			err = cuda_status(cuk_moe_gather(cd->compute, x, arg(call, 4), arg(call, 5),
			                                 tok, m, n, dm, k, expert, xb, r));
		x = xb;
	} else {
		err = cuda_status(
		        cuk_moe_route(cd->compute, arg(call, 4), arg(call, 5), r, n, k, expert));
	}
	if (!err)
		err = gemm_rm(cd, (int)m, (int)dff, (int)dm, 1.0f, x, arg(call, 1), 0.0f, g);
	if (!err)
		err = gemm_rm(cd, (int)m, (int)dff, (int)dm, 1.0f, x, arg(call, 2), 0.0f, u);
	if (!err)
		err = cuda_status(cuk_swiglu(cd->compute, g, u, (uint64_t)m * (uint64_t)dff));
	if (!err)
		err = gemm_rm(cd, (int)m, (int)dm, (int)dff, 1.0f, g, arg(call, 3), 0.0f, dn);
	if (!err)
		err = cuda_status(cuk_moe_accumulate(cd->compute, arg(call, 6), dn, r, tok, m, dm));
	return err;
}

static int run_topk_router(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	return cuda_status(cuk_topk_router(cd->compute, arg(call, 0), arg(call, 1), arg(call, 2),
	                                   call->s[0].i64, call->s[1].i64, call->s[2].i64));
}

/* ---- tiled Cholesky, row-major nb x nb tiles (docs/kernels.md) ----
 * cuBLAS is column-major: a row-major matrix is its transpose, so a
 * row-major lower triangle is a column-major upper one. */

/* B = B L^-T (row-major), i.e. B^T = L^-1 B^T: column-major B' = U^-T B'
 * with U = L^T upper. */
static int run_strsm(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	int nb = (int)call->s[0].i64;
	const float one = 1.0f;
	return cublas_status(cublasStrsm(cd->blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER,
	                                 CUBLAS_OP_T, CUBLAS_DIAG_NON_UNIT, nb, nb, &one,
	                                 arg(call, 0), nb, arg(call, 1), nb));
}

/* C = C - A A^T (row-major, lower): column-major C' = C' - A'^T A' (upper). */
static int run_ssyrk(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	int nb = (int)call->s[0].i64;
	const float minus_one = -1.0f, one = 1.0f;
	return cublas_status(cublasSsyrk(cd->blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_T, nb, nb,
	                                 &minus_one, arg(call, 0), nb, &one, arg(call, 1), nb));
}

/* C = C - A B^T (row-major): column-major C' = C' - B'^T A'. */
static int run_sgemm_nt(struct cuda_dev *cd, const struct tdm_kernel_call *call)
{
	int nb = (int)call->s[0].i64;
	const float minus_one = -1.0f, one = 1.0f;
	return cublas_status(cublasSgemm(cd->blas, CUBLAS_OP_T, CUBLAS_OP_N, nb, nb, nb, &minus_one,
	                                 arg(call, 1), nb, arg(call, 0), nb, &one, arg(call, 2),
	                                 nb));
}

/* spin is left out: it is a CPU busy-loop of known cost for tests; spotrf
 * too (it would need cuSOLVER, and a way to report a matrix that is not
 * positive definite without a device fault). */
static const cuda_kernel_fn cuda_kernels[KERNEL_COUNT] = {
	[KERNEL_NOOP] = run_noop,
	[KERNEL_FILL] = run_fill,
	[KERNEL_AXPY] = run_axpy,
	[KERNEL_SGEMM] = run_sgemm,
	[KERNEL_COPY] = run_copy,
	[KERNEL_RMSNORM] = run_rmsnorm,
	[KERNEL_SOFTMAX] = run_softmax,
	[KERNEL_ROPE] = run_rope,
	[KERNEL_ATTN_DECODE] = run_attn_decode,
	[KERNEL_MOE_EXPERT] = run_moe_expert,
	[KERNEL_TOPK_ROUTER] = run_topk_router,
	[KERNEL_STRSM] = run_strsm,
	[KERNEL_SSYRK] = run_ssyrk,
	[KERNEL_SGEMM_NT] = run_sgemm_nt,
	[KERNEL_ATTN_DECODE_VARLEN] = run_attn_varlen,
};

bool cuda_has_kernel(uint32_t id)
{
	return id < KERNEL_COUNT && cuda_kernels[id] != NULL;
}

/* Every argument must start on a 4-byte boundary (floats, int32 ids): a
 * misaligned access would be a sticky error that ends the device's context
 * for every task, so refuse it before anything is enqueued. */
static bool args_aligned(const struct tdm_kernel_call *call)
{
	for (uint32_t i = 0; i < call->nargs && i < TDM_MAX_ARGS; i++)
		if (((uintptr_t)call->mem[i] + call->off[i]) % sizeof(float))
			return false;
	return true;
}

int cuda_check_call(uint32_t id, const struct tdm_kernel_call *call)
{
	if (!cuda_has_kernel(id))
		return -TDM_EKERNEL;
	return args_aligned(call) ? 0 : -TDM_EINVAL;
}

int cuda_run_kernel(struct cuda_dev *cd, uint32_t id, const struct tdm_kernel_call *call)
{
	return cuda_kernels[id](cd, call);
}
