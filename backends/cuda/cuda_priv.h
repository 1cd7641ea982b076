/* CUDA backend internals, shared by the plugin's C files. */
#ifndef TDM_BACKENDS_CUDA_PRIV_H
#define TDM_BACKENDS_CUDA_PRIV_H

#include <pthread.h>
#include <stdbool.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backends/backend.h"

#define CUDA_EXPORT __attribute__((visibility("default")))

struct cuda_dev;

/* Events come from a per-device free list and go back to the device that
 * made them: an event can only be recorded on a stream of its own device. */
struct backend_event {
	cudaEvent_t ev;
	struct cuda_dev *owner;
	struct backend_event *next; /* on the free list */
	/* A kernel that checks its data on the device (attn_decode_varlen's
	 * index) has its status word copied into status_host (pinned, kept
	 * with the event) before the event: non-zero fails the event with
	 * -TDM_ERANGE. */
	bool has_status;
	int32_t *status_host;
	/* Pinned host memory a kernel copies to the device from
	 * (cuda_stage_host), kept with its event until the event is released,
	 * after the copy ran; staged: this launch used it. */
	void *stage_host;
	size_t stage_bytes;
	bool staged;
};

struct cuda_dev {
	int ordinal; /* CUDA device number */
	cudaStream_t copy_in, compute, copy_out; /* non-blocking */
	/* launch_async runs on the device's worker, but the cuBLAS handle and
	 * the scratch must never be used by two threads at once: guard them. */
	pthread_mutex_t compute_lock;
	cublasHandle_t blas; /* bound to the compute stream */
	void *scratch; /* used on the compute stream only */
	size_t scratch_bytes;
	int32_t *varlen_status; /* device word of attn_decode_varlen's check */
	struct backend_event *launching; /* the event of the kernel being enqueued */
	pthread_mutex_t pool_lock;
	struct backend_event *pool;
};

/* The entry point the loader looks up (BACKEND_CUDA_ENTRY, checked against
 * its type here): the ops, whose abi_version says which seam they speak. */
CUDA_EXPORT backend_cuda_entry_fn tandem_cuda_backend;

/* 0, -TDM_ENOMEM for an allocation failure, else -TDM_EDEVICE; clears a
 * non-sticky error so that later calls on this thread do not see it. */
int cuda_status(cudaError_t e);
int cublas_status(cublasStatus_t st);
/* At least bytes of scratch for the compute stream, valid until the next
 * call; the caller holds compute_lock. */
int cuda_scratch(struct cuda_dev *cd, size_t bytes, void **p);

/* At least bytes of pinned host memory for the kernel being enqueued to
 * copy to the device on the compute stream: it stays with the kernel's
 * event until the engine releases it, after the kernel (and so the copy)
 * ran. The caller holds compute_lock, inside cuda_run_kernel. */
int cuda_stage_host(struct cuda_dev *cd, size_t bytes, void **p);

/* Growable device memory (cuda_vmm.c): a reserved range of device
 * addresses for capacity (-TDM_EINVAL when the driver or device has no
 * VMM), grown in place; cuda_vmm_free is false for memory it did not
 * reserve. The device's work using it must be done before the free. */
int cuda_vmm_reserve(int ordinal, uint64_t capacity, void **mem);
int cuda_vmm_grow(void *mem, uint64_t bytes);
bool cuda_vmm_free(void *mem);

/* Kernels (cuda_launch.c): whether one exists for this id; whether a call
 * can run (0, -TDM_EKERNEL, -TDM_EINVAL for a misaligned argument); and,
 * once checked, enqueueing it on the compute stream (compute_lock held,
 * device current). */
bool cuda_has_kernel(uint32_t id);
int cuda_check_call(uint32_t id, const struct tdm_kernel_call *call);
int cuda_run_kernel(struct cuda_dev *cd, uint32_t id, const struct tdm_kernel_call *call);
/* The device word in which kernel id left its check's status (0: the data
 * was good), for the kernels that check their data; NULL for the others. */
const int32_t *cuda_kernel_status(const struct cuda_dev *cd, uint32_t id);

#endif
