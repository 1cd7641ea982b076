/* OpenCL backend: kernel launches on the compute queue. clSetKernelArg on
 * a shared cl_kernel is not thread-safe, so set-arg + enqueue happen under
 * the device's lock, as does growing the scratch buffer. */
#include "backends/opencl/cl_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tandem.h"

#define WAITS_INLINE 16
#define ITEMS_ROUND 64 /* global sizes of per-element kernels are rounded to this */

struct waitlist {
	cl_event inl[WAITS_INLINE];
	cl_event *ev; /* NULL when n == 0 */
	cl_uint n;
};

static const struct waitlist no_waits = { .n = 0 };

static int waitlist_init(struct waitlist *w, struct backend_event *const *waits, size_t n)
{
	w->n = (cl_uint)n;
	w->ev = NULL;
	if (n == 0)
		return 0;
	w->ev = n <= WAITS_INLINE ? w->inl : malloc(n * sizeof(cl_event));
	if (!w->ev)
		return -TDM_ENOMEM;
	for (size_t i = 0; i < n; i++)
		w->ev[i] = waits[i]->ev;
	return 0;
}

static void waitlist_free(struct waitlist *w)
{
	if (w->ev != w->inl)
		free(w->ev);
}

/* Kernel arguments, set in order; the first error sticks. */
struct kargs {
	cl_kernel k;
	cl_uint i;
	cl_int err;
};

static void arg(struct kargs *a, size_t size, const void *v)
{
	if (a->err == CL_SUCCESS)
		a->err = clSetKernelArg(a->k, a->i, size, v);
	a->i++;
}

static void arg_u32(struct kargs *a, int64_t v)
{
	cl_uint u = (cl_uint)v;
	arg(a, sizeof(u), &u);
}

static void arg_u64(struct kargs *a, uint64_t v)
{
	cl_ulong u = v;
	arg(a, sizeof(u), &u);
}

static void arg_f32(struct kargs *a, float v)
{
	arg(a, sizeof(v), &v);
}

static void arg_mem(struct kargs *a, cl_mem m)
{
	arg(a, sizeof(m), &m);
}

/* Buffer argument i: its cl_mem and its offset in elements. */
static void arg_buf(struct kargs *a, const struct tdm_kernel_call *call, int i)
{
	arg_mem(a, call->mem[i]);
	arg_u64(a, call->off[i] / sizeof(float));
}

static void arg_local(struct kargs *a, size_t bytes)
{
	arg(a, bytes, NULL);
}

static struct kargs kargs_of(struct cl_dev *cd, enum cl_kern id)
{
	return (struct kargs){ .k = cd->kern[id] };
}

/* n work-items (rounded up; the kernel checks its range). */
static cl_int enqueue_items(struct cl_dev *cd, struct kargs *a, size_t n, const struct waitlist *w,
                            cl_event *ev)
{
	if (a->err != CL_SUCCESS)
		return a->err;
	if (n == 0)
		return clEnqueueMarkerWithWaitList(cd->q_compute, w->n, w->ev, ev);
	size_t global = (n + ITEMS_ROUND - 1) / ITEMS_ROUND * ITEMS_ROUND;
	return clEnqueueNDRangeKernel(cd->q_compute, a->k, 1, NULL, &global, NULL, w->n, w->ev, ev);
}

/* One work-group of cd->wg[id] work-items per row. */
static cl_int enqueue_rows(struct cl_dev *cd, enum cl_kern id, struct kargs *a, size_t rows,
                           const struct waitlist *w, cl_event *ev)
{
	if (a->err != CL_SUCCESS)
		return a->err;
	if (rows == 0)
		return clEnqueueMarkerWithWaitList(cd->q_compute, w->n, w->ev, ev);
	size_t local = cd->wg[id], global = rows * local;
	return clEnqueueNDRangeKernel(cd->q_compute, a->k, 1, NULL, &global, &local, w->n, w->ev,
	                              ev);
}

/* Grows the scratch buffer to at least bytes. Kernels still queued may use
 * the old one, so the compute queue is drained before it goes; growth is
 * geometric, so this is rare (attn_decode's kv_len grows by one a step). */
static int ensure_scratch(struct cl_dev *cd, size_t bytes)
{
	if (cd->scratch_bytes >= bytes)
		return 0;
	size_t want = cd->scratch_bytes * 2 > bytes ? cd->scratch_bytes * 2 : bytes;
	cl_int err;
	cl_mem m = clCreateBuffer(cd->ctx, CL_MEM_READ_WRITE, want, NULL, &err);
	if (err != CL_SUCCESS && want > bytes) {
		want = bytes;
		m = clCreateBuffer(cd->ctx, CL_MEM_READ_WRITE, want, NULL, &err);
	}
	if (err != CL_SUCCESS)
		return cl_error(err);
	if (cd->scratch) {
		clFinish(cd->q_compute);
		clReleaseMemObject(cd->scratch);
	}
	cd->scratch = m;
	cd->scratch_bytes = want;
	return 0;
}

/* rope's inverse frequencies theta^(-2i/hd), i < hd/2, from the host's
 * powf, exactly as docs/kernels.md and the CPU kernel compute them: the
 * angle p * inv_freq is large at late positions, where a device pow() one
 * ulp off would exceed the tolerance. Kept until theta or hd change. */
static int ensure_rope_table(struct cl_dev *cd, float theta, int64_t hd)
{
	uint32_t bits;
	memcpy(&bits, &theta, sizeof(bits));
	if (cd->rope_tab && cd->rope_theta_bits == bits && cd->rope_hd == hd)
		return 0;
	size_t half = (size_t)hd / 2;
	float *tab = malloc(half * sizeof(float));
	if (!tab)
		return -TDM_ENOMEM;
	for (size_t i = 0; i < half; i++)
		tab[i] = powf(theta, -2.0f * (float)i / (float)hd);
	cl_int err;
	cl_mem m = clCreateBuffer(cd->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
	                          half * sizeof(float), tab, &err);
	free(tab);
	if (err != CL_SUCCESS)
		return cl_error(err);
	if (cd->rope_tab) {
		clFinish(cd->q_compute);
		clReleaseMemObject(cd->rope_tab);
	}
	cd->rope_tab = m;
	cd->rope_theta_bits = bits;
	cd->rope_hd = hd;
	return 0;
}

void cl_launch_release(struct cl_dev *cd)
{
	if (cd->scratch)
		clReleaseMemObject(cd->scratch);
	if (cd->rope_tab)
		clReleaseMemObject(cd->rope_tab);
	if (cd->varlen_status)
		clReleaseMemObject(cd->varlen_status);
	cd->scratch = cd->rope_tab = cd->varlen_status = NULL;
	cd->scratch_bytes = 0;
}

/* ---- one function per kernel; called under cd->lock ---- */

static int launch_fill(struct cl_dev *cd, const struct tdm_kernel_call *call,
                       const struct waitlist *w, cl_event *ev)
{
	struct kargs a = kargs_of(cd, CLK_FILL);
	uint64_t n = call->len[0] / sizeof(float);
	arg_buf(&a, call, 0);
	arg_u64(&a, n);
	arg_f32(&a, call->s[0].f32);
	return cl_error(enqueue_items(cd, &a, n, w, ev));
}

static bool overlap(const struct tdm_kernel_call *call, uint64_t n)
{
	return call->mem[0] == call->mem[1] && call->off[0] < call->off[1] + n &&
	       call->off[1] < call->off[0] + n;
}

/* clEnqueueCopyBuffer refuses overlapping slices of one buffer; the CPU
 * kernel has memmove semantics, so those go through the scratch buffer. */
static int launch_copy(struct cl_dev *cd, const struct tdm_kernel_call *call,
                       const struct waitlist *w, cl_event *ev)
{
	uint64_t n = call->len[0] < call->len[1] ? call->len[0] : call->len[1];
	if (n == 0)
		return cl_error(clEnqueueMarkerWithWaitList(cd->q_compute, w->n, w->ev, ev));
	if (!overlap(call, n))
		return cl_error(clEnqueueCopyBuffer(cd->q_compute, call->mem[0], call->mem[1],
		                                    call->off[0], call->off[1], n, w->n, w->ev,
		                                    ev));
	int rc = ensure_scratch(cd, n);
	if (rc)
		return rc;
	cl_int err = clEnqueueCopyBuffer(cd->q_compute, call->mem[0], cd->scratch, call->off[0], 0,
	                                 n, w->n, w->ev, NULL);
	if (err == CL_SUCCESS)
		err = clEnqueueCopyBuffer(cd->q_compute, cd->scratch, call->mem[1], 0, call->off[1],
		                          n, 0, NULL, ev);
	return cl_error(err);
}

static int launch_axpy(struct cl_dev *cd, const struct tdm_kernel_call *call,
                       const struct waitlist *w, cl_event *ev)
{
	struct kargs a = kargs_of(cd, CLK_AXPY);
	uint64_t n = call->len[1] / sizeof(float);
	arg_buf(&a, call, 0);
	arg_buf(&a, call, 1);
	arg_u64(&a, n);
	arg_f32(&a, call->s[0].f32);
	return cl_error(enqueue_items(cd, &a, n, w, ev));
}

/* CLBlast before 1.6.1 races on its program cache when called from several
 * threads (CLBlast issue #486), so calls for different devices go one at a
 * time; a call only enqueues, except the first of a kind, which compiles. */
static pthread_mutex_t clblast_lock = PTHREAD_MUTEX_INITIALIZER;

void cl_clblast_clear_cache(void)
{
	pthread_mutex_lock(&clblast_lock);
	CLBlastClearCache();
	pthread_mutex_unlock(&clblast_lock);
}

/* CLBlast, row-major. It takes no wait list, so a barrier on the (in-order)
 * compute queue stands in for one. */
static int launch_sgemm(struct cl_dev *cd, const struct tdm_kernel_call *call,
                        const struct waitlist *w, cl_event *ev)
{
	size_t m = (size_t)call->s[0].i64, n = (size_t)call->s[1].i64, k = (size_t)call->s[2].i64;
	if (w->n) {
		cl_int err = clEnqueueBarrierWithWaitList(cd->q_compute, w->n, w->ev, NULL);
		if (err != CL_SUCCESS)
			return cl_error(err);
	}
	pthread_mutex_lock(&clblast_lock);
	CLBlastStatusCode st =
	        CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, m, n, k,
	                     call->s[3].f32, call->mem[0], call->off[0] / sizeof(float), k,
	                     call->mem[1], call->off[1] / sizeof(float), n, call->s[4].f32,
	                     call->mem[2], call->off[2] / sizeof(float), n, &cd->q_compute, ev);
	pthread_mutex_unlock(&clblast_lock);
	if (st == CLBlastSuccess)
		return 0;
	/* CLBlast passes OpenCL's codes through; its own are below -1000. */
	return st > -1000 ? cl_error((cl_int)st) : -TDM_EDEVICE;
}

/* CLBlast's status as -TDM_E*: it passes OpenCL's codes through; its own
 * are below -1000. */
static int clblast_error(CLBlastStatusCode st)
{
	if (st == CLBlastSuccess)
		return 0;
	return st > -1000 ? cl_error((cl_int)st) : -TDM_EDEVICE;
}

/* CLBlast takes no wait list: a barrier on the in-order compute queue
 * stands in for one, as for sgemm. */
static int clblast_barrier(struct cl_dev *cd, const struct waitlist *w)
{
	if (!w->n)
		return 0;
	return cl_error(clEnqueueBarrierWithWaitList(cd->q_compute, w->n, w->ev, NULL));
}

/* ---- tiled Cholesky, row-major nb x nb tiles (docs/kernels.md) ---- */

/* B = B . L^-T (a0 L, a1 B): a kernel of ours, one work-item per row of B.
 * CLBlast's trsm waits on the calling thread for each of its inner GEMMs
 * (and so for everything queued before it): the device's worker would be
 * held for the whole solve, unable to complete or stage other tasks. */
static int launch_strsm(struct cl_dev *cd, const struct tdm_kernel_call *call,
                        const struct waitlist *w, cl_event *ev)
{
	size_t nb = (size_t)call->s[0].i64;
	struct kargs a = kargs_of(cd, CLK_STRSM);
	arg_buf(&a, call, 0);
	arg_buf(&a, call, 1);
	arg_u32(&a, call->s[0].i64);
	return cl_error(enqueue_items(cd, &a, nb, w, ev));
}

/* C = C - A . A^T, lower triangle (a0 A, a1 C). */
static int launch_ssyrk(struct cl_dev *cd, const struct tdm_kernel_call *call,
                        const struct waitlist *w, cl_event *ev)
{
	size_t nb = (size_t)call->s[0].i64;
	int rc = clblast_barrier(cd, w);
	if (rc)
		return rc;
	pthread_mutex_lock(&clblast_lock);
	CLBlastStatusCode st =
	        CLBlastSsyrk(CLBlastLayoutRowMajor, CLBlastTriangleLower, CLBlastTransposeNo, nb,
	                     nb, -1.0f, call->mem[0], call->off[0] / sizeof(float), nb, 1.0f,
	                     call->mem[1], call->off[1] / sizeof(float), nb, &cd->q_compute, ev);
	pthread_mutex_unlock(&clblast_lock);
	return clblast_error(st);
}

/* C = C - A . B^T (a0 A, a1 B, a2 C). */
static int launch_sgemm_nt(struct cl_dev *cd, const struct tdm_kernel_call *call,
                           const struct waitlist *w, cl_event *ev)
{
	size_t nb = (size_t)call->s[0].i64;
	int rc = clblast_barrier(cd, w);
	if (rc)
		return rc;
	pthread_mutex_lock(&clblast_lock);
	CLBlastStatusCode st =
	        CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, nb, nb,
	                     nb, -1.0f, call->mem[0], call->off[0] / sizeof(float), nb,
	                     call->mem[1], call->off[1] / sizeof(float), nb, 1.0f, call->mem[2],
	                     call->off[2] / sizeof(float), nb, &cd->q_compute, ev);
	pthread_mutex_unlock(&clblast_lock);
	return clblast_error(st);
}

static int launch_rmsnorm(struct cl_dev *cd, const struct tdm_kernel_call *call,
                          const struct waitlist *w, cl_event *ev)
{
	struct kargs a = kargs_of(cd, CLK_RMSNORM);
	arg_buf(&a, call, 0);
	arg_buf(&a, call, 1);
	arg_buf(&a, call, 2);
	arg_u32(&a, call->s[1].i64);
	arg_f32(&a, call->s[2].f32);
	arg_local(&a, cd->wg[CLK_RMSNORM] * sizeof(float));
	return cl_error(enqueue_rows(cd, CLK_RMSNORM, &a, (size_t)call->s[0].i64, w, ev));
}

static int launch_softmax(struct cl_dev *cd, const struct tdm_kernel_call *call,
                          const struct waitlist *w, cl_event *ev)
{
	struct kargs a = kargs_of(cd, CLK_SOFTMAX);
	arg_buf(&a, call, 0);
	arg_u32(&a, call->s[1].i64);
	arg_local(&a, cd->wg[CLK_SOFTMAX] * sizeof(float));
	return cl_error(enqueue_rows(cd, CLK_SOFTMAX, &a, (size_t)call->s[0].i64, w, ev));
}

static int launch_rope(struct cl_dev *cd, const struct tdm_kernel_call *call,
                       const struct waitlist *w, cl_event *ev)
{
	int64_t ntok = call->s[0].i64, nheads = call->s[1].i64, hd = call->s[2].i64;
	uint64_t npairs = (uint64_t)ntok * (uint64_t)nheads * (uint64_t)(hd / 2);
	if (npairs == 0)
		return cl_error(clEnqueueMarkerWithWaitList(cd->q_compute, w->n, w->ev, ev));
	int rc = ensure_rope_table(cd, call->s[4].f32, hd);
	if (rc)
		return rc;
	struct kargs a = kargs_of(cd, CLK_ROPE);
	arg_buf(&a, call, 0);
	arg_mem(&a, cd->rope_tab);
	arg_u32(&a, nheads);
	arg_u32(&a, hd);
	arg_u64(&a, (uint64_t)call->s[3].i64);
	arg_u64(&a, npairs);
	return cl_error(enqueue_items(cd, &a, npairs, w, ev));
}

static int launch_attn_decode(struct cl_dev *cd, const struct tdm_kernel_call *call,
                              const struct waitlist *w, cl_event *ev)
{
	size_t batch = (size_t)call->s[0].i64, nh = (size_t)call->s[1].i64;
	size_t nkv = (size_t)call->s[2].i64, per_kv = nh / nkv; /* check_attn_decode: nkv | nh */
	int rc = ensure_scratch(cd, batch * nh * (size_t)call->s[4].i64 * sizeof(float));
	if (rc)
		return rc;
	size_t groups = batch * nkv * ((per_kv + CL_ATT_HB - 1) / CL_ATT_HB);
	struct kargs a = kargs_of(cd, CLK_ATTN_DECODE);
	for (int i = 0; i < 4; i++)
		arg_buf(&a, call, i);
	arg_mem(&a, cd->scratch);
	for (int i = 1; i < 6; i++) /* nh, nkv, hd, kv_len, kv_cap */
		arg_u32(&a, call->s[i].i64);
	arg_local(&a, cd->wg[CLK_ATTN_DECODE] * sizeof(float));
	return cl_error(enqueue_rows(cd, CLK_ATTN_DECODE, &a, groups, w, ev));
}

/* Positions per chunk of attn_decode_varlen's scores in local memory (4
 * KiB: every OpenCL device has 32 KiB or more). */
#define VARLEN_CHUNK 1024

/* Three commands on the in-order compute queue: the index check (one
 * work-group) writes the status word, the attention reads it (and does
 * nothing when it is set), then the word is read back into the task's
 * event, whose completion ev is, so that the event fails with -TDM_ERANGE
 * for a bad index (cl_backend.c). The index lies in device memory that no
 * one else writes meanwhile: what the check saw is what the attention
 * reads. */
static int launch_attn_varlen(struct cl_dev *cd, const struct tdm_kernel_call *call,
                              const struct waitlist *w, cl_event *ev, struct backend_event *be)
{
	cl_int err = CL_SUCCESS;
	if (!cd->varlen_status)
		cd->varlen_status =
		        clCreateBuffer(cd->ctx, CL_MEM_READ_WRITE, sizeof(cl_int), NULL, &err);
	if (err != CL_SUCCESS) {
		cd->varlen_status = NULL;
		return cl_error(err);
	}
	uint64_t rows = attn_varlen_pool_rows(call);
	size_t nreq = (size_t)call->s[0].i64, nh = (size_t)call->s[1].i64;

	struct kargs a = kargs_of(cd, CLK_ATTN_VARLEN_CHECK);
	arg_buf(&a, call, VARLEN_INDEX);
	arg_mem(&a, cd->varlen_status);
	arg_u32(&a, (int64_t)nreq);
	arg_u64(&a, rows);
	arg_u64(&a, (uint64_t)call->s[4].i64);
	arg_local(&a, cd->wg[CLK_ATTN_VARLEN_CHECK] * sizeof(cl_ulong));
	err = enqueue_rows(cd, CLK_ATTN_VARLEN_CHECK, &a, 1, w, NULL);
	if (err != CL_SUCCESS)
		return cl_error(err);

	a = kargs_of(cd, CLK_ATTN_VARLEN);
	for (int i = VARLEN_Q; i <= VARLEN_OUT; i++)
		arg_buf(&a, call, i);
	arg_mem(&a, cd->varlen_status);
	for (int i = 1; i < 4; i++) /* nh, nkv, hd */
		arg_u32(&a, call->s[i].i64);
	arg_u64(&a, rows);
	arg_u32(&a, VARLEN_CHUNK);
	arg_local(&a, VARLEN_CHUNK * sizeof(float));
	arg_local(&a, cd->wg[CLK_ATTN_VARLEN] * sizeof(float));
	err = enqueue_rows(cd, CLK_ATTN_VARLEN, &a, nreq * nh, &no_waits, NULL);
	if (err == CL_SUCCESS)
		err = clEnqueueReadBuffer(cd->q_compute, cd->varlen_status, CL_FALSE, 0,
		                          sizeof(cl_int), &be->status, 0, NULL, ev);
	if (err != CL_SUCCESS)
		return cl_error(err);
	be->has_status = true;
	return 0;
}

/* The routing inputs and sizes, common to both moe kernels. */
static void moe_route_args(struct kargs *a, const struct tdm_kernel_call *call)
{
	arg_buf(a, call, 4); /* topk_ids */
	arg_buf(a, call, 5); /* topk_w */
}

/* The rows' tokens (tok: the scratch's, at tokoff elements), how many, whether
 * listed, then the sizes: common to both moe kernels. */
static void moe_size_args(struct kargs *a, const struct tdm_kernel_call *call, cl_mem tok,
                          uint64_t tokoff, size_t m)
{
	arg_mem(a, tok);
	arg_u64(a, tokoff);
	arg_u32(a, (int64_t)m);
	arg_u32(a, call->routed != NULL);
	for (int i = 0; i < 4; i++) /* n, dm, dff, k */
		arg_u32(a, call->s[i].i64);
	cl_int e = (cl_int)call->s[4].i64;
	arg(a, sizeof(e), &e);
}

/* Two kernels in a row on the in-order queue: h = silu(x.Wg) * (x.Wu) into
 * scratch, then y += r * h.Wd, over m rows: the tokens the call carries
 * (call->routed, written after h in the scratch first), else all n. */
static int launch_moe_expert(struct cl_dev *cd, const struct tdm_kernel_call *call,
                             const struct waitlist *w, cl_event *ev)
{
	size_t n = (size_t)call->s[0].i64, dm = (size_t)call->s[1].i64,
	       dff = (size_t)call->s[2].i64;
	size_t m = call->routed ? call->nrouted : n;
	size_t h_bytes = m * dff * sizeof(float),
	       tok_bytes = call->routed ? m * sizeof(cl_uint) : 0;
	int rc = ensure_scratch(cd, h_bytes + tok_bytes + sizeof(cl_uint));
	if (rc)
		return rc;
	/* From the engine's list, valid until the task is over: after this
	 * write, which the kernels follow on the in-order queue. */
	if (tok_bytes) {
		cl_int err = clEnqueueWriteBuffer(cd->q_compute, cd->scratch, CL_FALSE, h_bytes,
		                                  tok_bytes, call->routed, 0, NULL, NULL);
		if (err != CL_SUCCESS)
			return cl_error(err);
	}
	struct kargs a = kargs_of(cd, CLK_MOE_GATE_UP);
	for (int i = 0; i < 3; i++) /* x, w_gate, w_up */
		arg_buf(&a, call, i);
	moe_route_args(&a, call);
	arg_mem(&a, cd->scratch);
	moe_size_args(&a, call, cd->scratch, h_bytes / sizeof(cl_uint), m);
	cl_int err = enqueue_items(cd, &a, m * dff, w, NULL);
	if (err != CL_SUCCESS)
		return cl_error(err);

	a = kargs_of(cd, CLK_MOE_DOWN);
	arg_mem(&a, cd->scratch);
	arg_buf(&a, call, 3); /* w_down */
	moe_route_args(&a, call);
	arg_buf(&a, call, 6); /* y */
	moe_size_args(&a, call, cd->scratch, h_bytes / sizeof(cl_uint), m);
	return cl_error(enqueue_items(cd, &a, m * dm, &no_waits, ev));
}

static int launch_topk_router(struct cl_dev *cd, const struct tdm_kernel_call *call,
                              const struct waitlist *w, cl_event *ev)
{
	size_t wg = cd->wg[CLK_TOPK_ROUTER];
	struct kargs a = kargs_of(cd, CLK_TOPK_ROUTER);
	for (int i = 0; i < 3; i++)
		arg_buf(&a, call, i);
	arg_u32(&a, call->s[1].i64); /* ne */
	arg_u32(&a, call->s[2].i64); /* k */
	arg_local(&a, (size_t)call->s[1].i64 * sizeof(float)); /* p, ne <= 1024 */
	arg_local(&a, wg * sizeof(float));
	arg_local(&a, wg * sizeof(cl_int));
	return cl_error(enqueue_rows(cd, CLK_TOPK_ROUTER, &a, (size_t)call->s[0].i64, w, ev));
}

/* be: the task's event, whose ev this fills, for kernels that report a
 * status into it. */
static int dispatch(struct cl_dev *cd, enum kernel_id id, const struct tdm_kernel_call *call,
                    const struct waitlist *w, cl_event *ev, struct backend_event *be)
{
	switch (id) {
	case KERNEL_NOOP:
		return cl_error(clEnqueueMarkerWithWaitList(cd->q_compute, w->n, w->ev, ev));
	case KERNEL_FILL: return launch_fill(cd, call, w, ev);
	case KERNEL_COPY: return launch_copy(cd, call, w, ev);
	case KERNEL_AXPY: return launch_axpy(cd, call, w, ev);
	case KERNEL_SGEMM: return launch_sgemm(cd, call, w, ev);
	case KERNEL_RMSNORM: return launch_rmsnorm(cd, call, w, ev);
	case KERNEL_SOFTMAX: return launch_softmax(cd, call, w, ev);
	case KERNEL_ROPE: return launch_rope(cd, call, w, ev);
	case KERNEL_ATTN_DECODE: return launch_attn_decode(cd, call, w, ev);
	case KERNEL_MOE_EXPERT: return launch_moe_expert(cd, call, w, ev);
	case KERNEL_TOPK_ROUTER: return launch_topk_router(cd, call, w, ev);
	case KERNEL_STRSM: return launch_strsm(cd, call, w, ev);
	case KERNEL_SSYRK: return launch_ssyrk(cd, call, w, ev);
	case KERNEL_SGEMM_NT: return launch_sgemm_nt(cd, call, w, ev);
	case KERNEL_ATTN_DECODE_VARLEN: return launch_attn_varlen(cd, call, w, ev, be);
	default: return -TDM_EKERNEL; /* spin, spotrf: CPU only */
	}
}

/* Every argument is float or int32 data: offsets are passed to kernels in
 * elements, so they must be multiples of 4 bytes. */
static int check_args(const struct kernel_def *k, const struct tdm_kernel_call *call)
{
	if (call->nargs < k->nargs)
		return -TDM_EINVAL;
	for (unsigned i = 0; i < k->nargs; i++)
		if (!call->mem[i] || call->off[i] % sizeof(float))
			return -TDM_EINVAL;
	return 0;
}

int cl_launch_async(const struct backend_device *d, const struct kernel_def *k,
                    const struct tdm_kernel_call *call, struct backend_event *const *waits,
                    size_t nwaits, struct backend_event **done)
{
	struct cl_dev *cd = cl_dev_of(d);
	struct waitlist w;
	cl_event ev = NULL;

	int rc = check_args(k, call);
	if (rc)
		return rc;
	/* Before anything is queued: a kernel may have its status read into it. */
	struct backend_event *be = calloc(1, sizeof(*be));
	if (!be)
		return -TDM_ENOMEM;
	rc = waitlist_init(&w, waits, nwaits);
	if (rc) {
		free(be);
		return rc;
	}
	pthread_mutex_lock(&cd->lock);
	rc = dispatch(cd, k->id, call, &w, &ev, be);
	pthread_mutex_unlock(&cd->lock);
	waitlist_free(&w);
	if (rc) {
		free(be);
		return rc;
	}
	clFlush(cd->q_compute);
	be->ev = ev;
	*done = be;
	return 0;
}
