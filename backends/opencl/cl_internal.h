/* OpenCL backend: what its files share. One struct cl_dev per device, in
 * backend_device.priv; events are struct backend_event holding a cl_event. */
#ifndef TDM_BACKENDS_OPENCL_CL_INTERNAL_H
#define TDM_BACKENDS_OPENCL_CL_INTERNAL_H

/* Include this before any OpenCL or CLBlast header: it sets the API level. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <clblast_c.h>
#include <pthread.h>
#include <stdatomic.h>

#include "backends/backend.h"

/* The kernels built from cl_kernels_src; copy, noop and the CLBlast ones
 * (sgemm, ssyrk, sgemm_nt) need none. */
enum cl_kern {
	CLK_FILL,
	CLK_AXPY,
	CLK_RMSNORM,
	CLK_SOFTMAX,
	CLK_ROPE,
	CLK_ATTN_DECODE,
	CLK_MOE_GATE_UP,
	CLK_MOE_DOWN,
	CLK_TOPK_ROUTER,
	CLK_ATTN_VARLEN_CHECK,
	CLK_ATTN_VARLEN,
	CLK_STRSM,
	CLK_COUNT
};

/* Query heads per work-group of tdm_attn_decode (at most; the heads sharing
 * one KV head are taken in blocks of this many): ATT_HB in the kernel source,
 * the same number (test_backend_kernels' 20-head case fails when they
 * differ). Not a -D build option: with one, PoCL's builds made
 * LeakSanitizer's tracer crash at exit. */
#define CL_ATT_HB 8
/* The options every program is built with. */
#define CL_BUILD_OPTIONS "-cl-std=CL1.2"

struct cl_dev {
	cl_device_id device;
	cl_context ctx;
	cl_command_queue q_in, q_compute, q_out;
	cl_program prog;
	cl_kernel kern[CLK_COUNT];
	size_t wg[CLK_COUNT]; /* work-group size of the reduction kernels, a power of two */
	uint64_t mem_bytes;
	atomic_uint_fast64_t mem_used; /* bytes in live buffers (mem_alloc accounting) */

	/* Serialises clSetKernelArg + enqueue on the shared cl_kernels, and the
	 * scratch and rope-table buffers below. */
	pthread_mutex_t lock;
	cl_mem scratch; /* attn_decode scores, moe_expert hidden vectors */
	size_t scratch_bytes;
	cl_mem rope_tab; /* theta^(-2i/hd) for i < hd/2, computed on the host */
	uint32_t rope_theta_bits;
	int64_t rope_hd;
	cl_mem varlen_status; /* attn_decode_varlen's index check: one cl_int */

	/* event_ended: the engine's clock minus the compute queue's profiling
	 * clock. A wait returns after its kernel ended, so each event's
	 * waited - END is at least that offset, and the least of them is it
	 * plus the quickest wake-up seen. Kept over two windows of
	 * OFFSET_WINDOW events (the current one and the one before), so
	 * that clocks which drift apart are followed. */
	pthread_mutex_t time_lock;
	int64_t off_min[2]; /* [0]: this window's least, [1]: the last one's */
	uint32_t off_seen; /* events in this window */
};

struct backend_event {
	cl_event ev;
	/* A kernel that checks its data on the device (attn_decode_varlen's
	 * index) has its status word read back into status by the command ev
	 * stands for: non-zero fails the event with -TDM_ERANGE. */
	bool has_status;
	cl_int status;
};

extern const char cl_kernels_src[];
extern const char *const cl_kernel_names[CLK_COUNT];

static inline struct cl_dev *cl_dev_of(const struct backend_device *d)
{
	return d->priv;
}

/* Maps an OpenCL error code to -TDM_E*. */
int cl_error(cl_int err);
/* Wraps ev into a new backend event (*out), without a status; releases ev
 * and fails on ENOMEM. */
int cl_event_wrap(cl_event ev, struct backend_event **out);

int cl_launch_async(const struct backend_device *d, const struct kernel_def *k,
                    const struct tdm_kernel_call *call, struct backend_event *const *waits,
                    size_t nwaits, struct backend_event **done);
/* Releases what cl_launch_async grew on demand (scratch, rope table). */
void cl_launch_release(struct cl_dev *cd);
/* CLBlastClearCache, serialised with the CLBlast calls. */
void cl_clblast_clear_cache(void);

#endif
