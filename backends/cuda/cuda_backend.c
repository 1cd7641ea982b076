/* CUDA backend, built as a plugin (tandem-cuda.so) that the daemon loads
 * at run time (backends/cuda_loader.c). One device per CUDA GPU, each with
 * three non-blocking streams (copy-in, compute, copy-out), a cuBLAS handle
 * on the compute stream and scratch for the kernels that need it. Work is
 * chained with CUDA events, which the engine sees as backend_events.
 *
 * Every entry point makes the device current first: the engine's worker,
 * and for copies and frees any other thread, call in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/cuda/cuda_priv.h"
#include "tandem.h"

static const struct backend_ops cuda_ops;

static struct cuda_dev *dev_of(const struct backend_device *d)
{
	return d->priv;
}

int cuda_status(cudaError_t e)
{
	if (e == cudaSuccess)
		return 0;
	(void)cudaGetLastError();
	return e == cudaErrorMemoryAllocation ? -TDM_ENOMEM : -TDM_EDEVICE;
}

int cublas_status(cublasStatus_t st)
{
	if (st == CUBLAS_STATUS_SUCCESS)
		return 0;
	return st == CUBLAS_STATUS_ALLOC_FAILED ? -TDM_ENOMEM : -TDM_EDEVICE;
}

static int set_device(const struct cuda_dev *cd)
{
	return cuda_status(cudaSetDevice(cd->ordinal));
}

/* ---- events ----------------------------------------------------------- */

/* An event from the device's free list, or a new one. */
static int event_get(struct cuda_dev *cd, struct backend_event **out)
{
	pthread_mutex_lock(&cd->pool_lock);
	struct backend_event *ev = cd->pool;
	if (ev)
		cd->pool = ev->next;
	pthread_mutex_unlock(&cd->pool_lock);
	if (!ev) {
		ev = calloc(1, sizeof(*ev));
		if (!ev)
			return -TDM_ENOMEM;
		int err = cuda_status(cudaEventCreateWithFlags(
		        &ev->ev, cudaEventDisableTiming | cudaEventBlockingSync));
		if (err) {
			free(ev);
			return err;
		}
		ev->owner = cd;
	}
	*out = ev;
	return 0;
}

static void event_put(struct backend_event *ev)
{
	struct cuda_dev *cd = ev->owner;

	ev->has_status = false;
	ev->staged = false;

	pthread_mutex_lock(&cd->pool_lock);
	ev->next = cd->pool;
	cd->pool = ev;
	pthread_mutex_unlock(&cd->pool_lock);
}

/* The kernel's status word (device memory, on the compute stream) copied
 * into ev's pinned word, on the compute stream, before ev is recorded. */
static int event_take_status(struct cuda_dev *cd, struct backend_event *ev, const int32_t *status)
{
	if (!ev->status_host) {
		int err = cuda_status(cudaMallocHost((void **)&ev->status_host, sizeof(int32_t)));
		if (err) {
			ev->status_host = NULL;
			return err;
		}
	}
	*ev->status_host = 0;
	int err = cuda_status(cudaMemcpyAsync(ev->status_host, status, sizeof(int32_t),
	                                      cudaMemcpyDeviceToHost, cd->compute));
	ev->has_status = err == 0;
	return err;
}

/* A completed event whose kernel found its data bad: -TDM_ERANGE, the
 * task's inputs being to blame, not the device (which stays healthy). */
static int status_of(const struct backend_event *ev)
{
	return ev->has_status && *(volatile const int32_t *)ev->status_host ? -TDM_ERANGE : 0;
}

/* *done = a new event that completes with the work enqueued so far on s. */
static int record_event(struct cuda_dev *cd, cudaStream_t s, struct backend_event **done)
{
	struct backend_event *ev;
	int err = event_get(cd, &ev);
	if (err)
		return err;
	err = cuda_status(cudaEventRecord(ev->ev, s));
	if (err) {
		event_put(ev);
		return err;
	}
	*done = ev;
	return 0;
}

static int wait_event(cudaStream_t s, const struct backend_event *ev)
{
	if (!ev)
		return 0;
	return cuda_status(cudaStreamWaitEvent(s, ev->ev, 0));
}

/* How long event_wait polls before it sleeps in cudaEventSynchronize:
 * events are made with cudaEventBlockingSync, so a long wait costs no CPU,
 * while short waits (small decode kernels, small copies) keep the latency
 * of polling. */
#define CUDA_WAIT_POLL_NS 50000

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cuda_event_wait(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	if (cudaSetDevice(ev->owner->ordinal) != cudaSuccess)
		goto fail;
	uint64_t deadline = mono_ns() + CUDA_WAIT_POLL_NS;
	do {
		cudaError_t e = cudaEventQuery(ev->ev);
		if (e == cudaSuccess)
			return status_of(ev);
		if (e != cudaErrorNotReady)
			goto fail;
	} while (mono_ns() < deadline);
	if (cudaEventSynchronize(ev->ev) == cudaSuccess)
		return status_of(ev);
fail:
	(void)cudaGetLastError();
	return -TDM_EDEVICE;
}

static int cuda_event_query(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	if (cudaSetDevice(ev->owner->ordinal) != cudaSuccess) {
		(void)cudaGetLastError();
		return -TDM_EDEVICE;
	}
	cudaError_t e = cudaEventQuery(ev->ev);
	if (e == cudaSuccess)
		return status_of(ev) ? -TDM_ERANGE : 1;
	if (e == cudaErrorNotReady)
		return 0;
	(void)cudaGetLastError();
	return -TDM_EDEVICE;
}

static void cuda_event_release(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	if (ev)
		event_put(ev);
}

/* ---- scratch ---------------------------------------------------------- */

int cuda_stage_host(struct cuda_dev *cd, size_t bytes, void **p)
{
	struct backend_event *ev = cd->launching;
	if (!ev)
		return -TDM_EINVAL;
	if (bytes > ev->stage_bytes) {
		/* The event came free: nothing copies from the old block. */
		cudaFreeHost(ev->stage_host);
		ev->stage_host = NULL;
		ev->stage_bytes = 0;
		int err = cuda_status(cudaMallocHost(&ev->stage_host, bytes));
		if (err) {
			ev->stage_host = NULL;
			return err;
		}
		ev->stage_bytes = bytes;
	}
	ev->staged = true;
	*p = ev->stage_host;
	return 0;
}

int cuda_scratch(struct cuda_dev *cd, size_t bytes, void **p)
{
	if (bytes <= cd->scratch_bytes) {
		*p = cd->scratch;
		return 0;
	}
	/* Kernels already enqueued may still use the old scratch. */
	int err = cuda_status(cudaStreamSynchronize(cd->compute));
	if (err)
		return err;
	size_t old = cd->scratch_bytes;
	cudaFree(cd->scratch);
	cd->scratch = NULL;
	cd->scratch_bytes = 0;

	/* Grow by doubling so that slowly rising sizes do not reallocate each
	 * time, but settle for the exact size when the device is short. */
	size_t want = old && bytes < 2 * old ? 2 * old : bytes;
	if (cudaMalloc(&cd->scratch, want) != cudaSuccess) {
		(void)cudaGetLastError();
		want = bytes;
		err = cuda_status(cudaMalloc(&cd->scratch, want));
		if (err) {
			cd->scratch = NULL;
			return err;
		}
	}
	cd->scratch_bytes = want;
	*p = cd->scratch;
	return 0;
}

/* ---- probe and release ------------------------------------------------ */

static void dev_destroy(struct cuda_dev *cd)
{
	if (cudaSetDevice(cd->ordinal) == cudaSuccess)
		(void)cudaDeviceSynchronize();
	if (cd->blas)
		cublasDestroy(cd->blas);
	cudaFree(cd->scratch);
	cudaFree(cd->varlen_status);
	while (cd->pool) {
		struct backend_event *ev = cd->pool;
		cd->pool = ev->next;
		cudaEventDestroy(ev->ev);
		cudaFreeHost(ev->status_host);
		cudaFreeHost(ev->stage_host);
		free(ev);
	}
	if (cd->copy_in)
		cudaStreamDestroy(cd->copy_in);
	if (cd->compute)
		cudaStreamDestroy(cd->compute);
	if (cd->copy_out)
		cudaStreamDestroy(cd->copy_out);
	(void)cudaGetLastError();
	pthread_mutex_destroy(&cd->compute_lock);
	pthread_mutex_destroy(&cd->pool_lock);
	free(cd);
}

static int cuda_failed(char *note, size_t len, int ordinal, const char *what, cudaError_t e)
{
	snprintf(note, len, "cuda: device %d unusable (%s: error %d: %s)", ordinal, what, (int)e,
	         cudaGetErrorString(e));
	(void)cudaGetLastError();
	return -TDM_EDEVICE;
}

static int blas_failed(char *note, size_t len, int ordinal, const char *what, cublasStatus_t st)
{
	snprintf(note, len, "cuda: device %d unusable (%s: %s)", ordinal, what,
	         cublasGetStatusString(st));
	return -TDM_EDEVICE;
}

/* Streams and the cuBLAS handle of a device; a note when that fails. */
static int dev_init(struct cuda_dev *cd, char *note, size_t len)
{
	cudaStream_t *streams[] = { &cd->copy_in, &cd->compute, &cd->copy_out };
	cudaError_t e = cudaSetDevice(cd->ordinal);
	cublasStatus_t st;

	if (e != cudaSuccess)
		return cuda_failed(note, len, cd->ordinal, "cudaSetDevice", e);
	for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
		e = cudaStreamCreateWithFlags(streams[i], cudaStreamNonBlocking);
		if (e != cudaSuccess)
			return cuda_failed(note, len, cd->ordinal, "cudaStreamCreate", e);
	}
	st = cublasCreate(&cd->blas);
	if (st != CUBLAS_STATUS_SUCCESS) {
		cd->blas = NULL;
		return blas_failed(note, len, cd->ordinal, "cublasCreate", st);
	}
	st = cublasSetStream(cd->blas, cd->compute);
	/* Plain FP32, no TF32: results must match the CPU within 1e-4. */
	if (st == CUBLAS_STATUS_SUCCESS)
		st = cublasSetMathMode(cd->blas, CUBLAS_DEFAULT_MATH);
	if (st != CUBLAS_STATUS_SUCCESS)
		return blas_failed(note, len, cd->ordinal, "cublasSetStream", st);
	return 0;
}

static struct cuda_dev *dev_create(int ordinal, char *note, size_t len)
{
	struct cuda_dev *cd = calloc(1, sizeof(*cd));
	if (!cd) {
		snprintf(note, len, "cuda: device %d: out of memory", ordinal);
		return NULL;
	}
	cd->ordinal = ordinal;
	pthread_mutex_init(&cd->compute_lock, NULL);
	pthread_mutex_init(&cd->pool_lock, NULL);
	if (dev_init(cd, note, len)) {
		dev_destroy(cd);
		return NULL;
	}
	return cd;
}

/* hwloc's spelling of a PCI bus id: "0000:65:00.0", lowercase hex. */
static void pci_busid(int ordinal, char *out, size_t len)
{
	char raw[32];
	unsigned dom, bus, dev, fn;

	out[0] = '\0';
	if (cudaDeviceGetPCIBusId(raw, (int)sizeof(raw), ordinal) != cudaSuccess) {
		(void)cudaGetLastError();
		return;
	}
	if (sscanf(raw, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) == 4)
		snprintf(out, len, "%04x:%02x:%02x.%x", dom, bus & 0xffu, dev & 0x1fu, fn & 0x7u);
}

static int add_device(struct backend_probe_params *p, struct backend_device *d, int ordinal)
{
	struct cudaDeviceProp prop;
	cudaError_t e = cudaGetDeviceProperties(&prop, ordinal);
	if (e != cudaSuccess)
		return cuda_failed(p->note, sizeof(p->note), ordinal, "cudaGetDeviceProperties", e);
	struct cuda_dev *cd = dev_create(ordinal, p->note, sizeof(p->note));
	if (!cd)
		return -TDM_EDEVICE;

	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "cuda%d", ordinal);
	prop.name[sizeof(d->model) - 1] = '\0';
	memcpy(d->model, prop.name, sizeof(d->model));
	d->kind = TDM_DEV_GPU;
	d->ops = &cuda_ops;
	d->os_index = ordinal;
	d->bind_set = NULL;
	d->priv = cd;
	d->mem_bytes = prop.totalGlobalMem;
	d->warms_up = true; /* lazy module loading, cuBLAS's first call */
	d->numa_node = -1; /* the daemon finds locality by bus id in hwloc */
	pci_busid(ordinal, d->pci_busid, sizeof(d->pci_busid));
	return 0;
}

static const char *no_cuda_reason(cudaError_t e)
{
	switch (e) {
	case cudaErrorStubLibrary:
	case cudaErrorInsufficientDriver: return "no driver";
	case cudaErrorDevicesUnavailable: return "devices unavailable";
	case cudaErrorNoDevice: return "no device";
	default: return "runtime failed";
	}
}

/* No CUDA, or a broken one, is no error: zero devices and a note. */
static int cuda_probe(struct backend_probe_params *p, struct backend_device *out, size_t max,
                      size_t *n)
{
	int count = 0;
	cudaError_t e = cudaGetDeviceCount(&count);

	*n = 0;
	p->note[0] = '\0';
	if (e != cudaSuccess) {
		snprintf(p->note, sizeof(p->note), "cuda: %s (cudaGetDeviceCount: error %d: %s)",
		         no_cuda_reason(e), (int)e, cudaGetErrorString(e));
		(void)cudaGetLastError();
		return 0;
	}
	if (count == 0)
		snprintf(p->note, sizeof(p->note), "cuda: no device");
	for (int i = 0; i < count && *n < max; i++)
		if (add_device(p, &out[*n], i) == 0)
			(*n)++;
	return 0;
}

static void cuda_release(struct backend_device *d)
{
	if (d->priv)
		dev_destroy(d->priv);
	d->priv = NULL;
}

static int cuda_worker_init(const struct backend_device *d, void *topology)
{
	(void)topology;
	return set_device(dev_of(d)) ? -TDM_EDEVICE : 0;
}

static bool cuda_supports(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	return cuda_has_kernel((uint32_t)k->id);
}

/* ---- memory and copies ------------------------------------------------ */

static int cuda_mem_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	int err = set_device(dev_of(d));
	if (err)
		return err;
	/* cudaMalloc(0) gives NULL, which callers take for "no replica". */
	return cuda_status(cudaMalloc(mem, bytes ? bytes : 1));
}

/* cudaFree waits for the whole device; rare enough (eviction, free) to be
 * acceptable. */
static void cuda_mem_free(const struct backend_device *d, void *mem)
{
	if (set_device(dev_of(d)) != 0)
		return;
	/* A reserved range is unmapped by hand: wait, as cudaFree would. */
	if (cudaDeviceSynchronize() != cudaSuccess)
		(void)cudaGetLastError();
	if (!cuda_vmm_free(mem) && cudaFree(mem) != cudaSuccess)
		(void)cudaGetLastError();
}

static int cuda_mem_reserve(const struct backend_device *d, uint64_t capacity, void **mem)
{
	int err = set_device(dev_of(d));
	return err ? err : cuda_vmm_reserve(dev_of(d)->ordinal, capacity, mem);
}

static int cuda_mem_grow(const struct backend_device *d, void *mem, uint64_t bytes)
{
	int err = set_device(dev_of(d));
	return err ? err : cuda_vmm_grow(mem, bytes);
}

/* Pinned host memory makes the copies real asynchronous DMA; portable, so
 * that it is pinned for every device. Failure is not fatal: copies then
 * go through pageable memory (staged, and synchronous for the caller). */
static int cuda_host_register(const struct backend_device *d, void *host, uint64_t bytes)
{
	int err = set_device(dev_of(d));
	if (err)
		return err;
	cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterPortable);
	if (e == cudaErrorHostMemoryAlreadyRegistered) {
		/* Another CUDA device registered it: portable covers them all. */
		(void)cudaGetLastError();
		return 0;
	}
	return cuda_status(e);
}

static void cuda_host_unregister(const struct backend_device *d, void *host)
{
	if (set_device(dev_of(d)) == 0 && cudaHostUnregister(host) != cudaSuccess)
		(void)cudaGetLastError();
}

static int copy_async(struct cuda_dev *cd, cudaStream_t s, void *dst, const void *src,
                      uint64_t bytes, enum cudaMemcpyKind kind, struct backend_event *after,
                      struct backend_event **done)
{
	int err = set_device(cd);
	if (!err)
		err = wait_event(s, after);
	if (!err && bytes)
		err = cuda_status(cudaMemcpyAsync(dst, src, bytes, kind, s));
	if (!err)
		err = record_event(cd, s, done);
	return err;
}

static int cuda_copy_h2d(const struct backend_device *d, void *mem, uint64_t off, const void *host,
                         uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	struct cuda_dev *cd = dev_of(d);
	return copy_async(cd, cd->copy_in, (char *)mem + off, host, bytes, cudaMemcpyHostToDevice,
	                  after, done);
}

static int cuda_copy_d2h(const struct backend_device *d, void *host, void *mem, uint64_t off,
                         uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	struct cuda_dev *cd = dev_of(d);
	return copy_async(cd, cd->copy_out, host, (char *)mem + off, bytes, cudaMemcpyDeviceToHost,
	                  after, done);
}

/* Device to device on d's copy-in stream (over NVLink or PCIe where peer
 * access is on, staged by the driver otherwise). Memory reserved for
 * growth (VMM, cuda_vmm.c) is mapped for its own device only: the copy
 * fails there and the caller goes through the host. */
static int cuda_copy_peer(const struct backend_device *d, void *mem, uint64_t off,
                          const struct backend_device *src, void *src_mem, uint64_t src_off,
                          uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	struct cuda_dev *cd = dev_of(d), *sd = dev_of(src);
	int err = set_device(cd);
	if (!err)
		err = wait_event(cd->copy_in, after);
	if (!err && bytes)
		err = cuda_status(cudaMemcpyPeerAsync((char *)mem + off, cd->ordinal,
		                                      (const char *)src_mem + src_off, sd->ordinal,
		                                      bytes, cd->copy_in));
	if (!err)
		err = record_event(cd, cd->copy_in, done);
	return err;
}

/* ---- kernels ---------------------------------------------------------- */

static int cuda_launch_async(const struct backend_device *d, const struct kernel_def *k,
                             const struct tdm_kernel_call *call, struct backend_event *const *waits,
                             size_t nwaits, struct backend_event **done)
{
	struct cuda_dev *cd = dev_of(d);
	int err = cuda_check_call((uint32_t)k->id, call);

	if (!err)
		err = set_device(cd);
	if (err)
		return err;
	struct backend_event *ev;
	err = event_get(cd, &ev);
	if (err)
		return err;
	pthread_mutex_lock(&cd->compute_lock);
	for (size_t i = 0; i < nwaits && !err; i++)
		err = wait_event(cd->compute, waits[i]);
	cd->launching = ev;
	if (!err)
		err = cuda_run_kernel(cd, (uint32_t)k->id, call);
	cd->launching = NULL;
	const int32_t *status = err ? NULL : cuda_kernel_status(cd, (uint32_t)k->id);
	if (status)
		err = event_take_status(cd, ev, status);
	if (!err)
		err = cuda_status(cudaEventRecord(ev->ev, cd->compute));
	/* A copy from ev's stage may still be queued: let it run before ev
	 * (and its stage) goes back to the pool. */
	if (err && ev->staged)
		(void)cudaStreamSynchronize(cd->compute);
	pthread_mutex_unlock(&cd->compute_lock);
	if (err)
		event_put(ev);
	else
		*done = ev;
	return err;
}

static const struct backend_ops cuda_ops = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "cuda",
	.probe = cuda_probe,
	.release = cuda_release,
	.worker_init = cuda_worker_init,
	.supports = cuda_supports,
	.launch = NULL,
	.mem_alloc = cuda_mem_alloc,
	.mem_free = cuda_mem_free,
	.mem_reserve = cuda_mem_reserve,
	.mem_grow = cuda_mem_grow,
	.host_register = cuda_host_register,
	.host_unregister = cuda_host_unregister,
	.copy_h2d = cuda_copy_h2d,
	.copy_d2h = cuda_copy_d2h,
	.copy_peer = cuda_copy_peer,
	.launch_async = cuda_launch_async,
	.event_wait = cuda_event_wait,
	.event_query = cuda_event_query,
	.event_release = cuda_event_release,
};

const struct backend_ops *tandem_cuda_backend(void)
{
	return &cuda_ops;
}
