/* OpenCL backend: every device of every platform the ICD loader knows
 * (GPUs, accelerators as NPUs, CPU devices such as PoCL), each with its own
 * context, program and three in-order queues: copy-in, compute, copy-out.
 * Kernel launches are in cl_launch.c, the kernel source in cl_kernels_src.c. */
#include "backends/opencl/cl_internal.h"

#include <hwloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "tandem.h"

/* ICD loader's "no platform" (cl_khr_icd), not in every header. */
#ifndef CL_PLATFORM_NOT_FOUND_KHR
#define CL_PLATFORM_NOT_FOUND_KHR -1001
#endif
/* cl_khr_pci_bus_info, likewise. */
#ifndef CL_DEVICE_PCI_BUS_INFO_KHR
#define CL_DEVICE_PCI_BUS_INFO_KHR 0x410F
typedef struct {
	cl_uint pci_domain, pci_bus, pci_device, pci_function;
} cl_device_pci_bus_info_khr;
#endif

/* Reduction kernels run one work-group per row with at most this many
 * work-items: PoCL runs a work-group as a loop, so small groups suit it. */
#define WG_MAX_CLCPU 64
#define WG_MAX_GPU 256

static atomic_int live_devices; /* CLBlast's program cache is dropped with the last */

int cl_error(cl_int err)
{
	switch (err) {
	case CL_SUCCESS: return 0;
	case CL_MEM_OBJECT_ALLOCATION_FAILURE:
	case CL_OUT_OF_RESOURCES:
	case CL_OUT_OF_HOST_MEMORY:
	case CL_INVALID_BUFFER_SIZE: return -TDM_ENOMEM;
	case CL_INVALID_VALUE: return -TDM_EINVAL;
	default: return -TDM_EDEVICE;
	}
}

int cl_event_wrap(cl_event ev, struct backend_event **out)
{
	struct backend_event *be = malloc(sizeof(*be));
	if (!be) {
		clWaitForEvents(1, &ev); /* the work goes on; nobody could wait for it */
		clReleaseEvent(ev);
		return -TDM_ENOMEM;
	}
	*be = (struct backend_event){ .ev = ev };
	*out = be;
	return 0;
}

/* ---- probe ---- */

static void note_set(struct backend_probe_params *p, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void note_set(struct backend_probe_params *p, const char *fmt, ...)
{
	va_list ap;
	if (p->note[0] != '\0') /* the first reason is kept */
		return;
	va_start(ap, fmt);
	vsnprintf(p->note, sizeof(p->note), fmt, ap);
	va_end(ap);
}

static bool device_kind(cl_device_type type, enum tdm_device_kind *kind, const char **prefix)
{
	if (type & CL_DEVICE_TYPE_GPU) {
		*kind = TDM_DEV_GPU;
		*prefix = "gpu";
	} else if (type & CL_DEVICE_TYPE_ACCELERATOR) {
		*kind = TDM_DEV_NPU;
		*prefix = "npu";
	} else if (type & CL_DEVICE_TYPE_CPU) {
		*kind = TDM_DEV_CLCPU;
		*prefix = "clcpu";
	} else {
		return false; /* CL_DEVICE_TYPE_CUSTOM: no OpenCL C compiler */
	}
	return true;
}

static bool has_extension(cl_device_id dev, const char *ext)
{
	size_t len = 0;
	if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, 0, NULL, &len) != CL_SUCCESS || len == 0)
		return false;
	char *s = malloc(len + 1);
	if (!s)
		return false;
	bool found = false;
	if (clGetDeviceInfo(dev, CL_DEVICE_EXTENSIONS, len, s, NULL) == CL_SUCCESS) {
		s[len] = '\0';
		size_t n = strlen(ext);
		for (const char *q = strstr(s, ext); q && !found; q = strstr(q + 1, ext))
			found = (q == s || q[-1] == ' ') && (q[n] == ' ' || q[n] == '\0');
	}
	free(s);
	return found;
}

/* The nearest NUMA node of a PCI device: hwloc's non-I/O ancestor of its
 * PCI object (the topology must have been loaded with I/O objects). */
static int pci_numa_node(hwloc_topology_t topo, const cl_device_pci_bus_info_khr *bi)
{
	if (!topo)
		return -1;
	hwloc_obj_t obj = hwloc_get_pcidev_by_busid(topo, bi->pci_domain, bi->pci_bus,
	                                            bi->pci_device, bi->pci_function);
	if (!obj)
		return -1;
	hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, obj);
	if (!anc || !anc->nodeset)
		return -1;
	return hwloc_bitmap_first(anc->nodeset);
}

static void describe_device(struct backend_device *d, cl_device_id dev, hwloc_topology_t topo)
{
	char name[256] = "";
	cl_ulong mem = 0;

	clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof(name) - 1, name, NULL);
	snprintf(d->model, sizeof(d->model), "%s", name);
	clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(mem), &mem, NULL);
	d->mem_bytes = mem;
	d->numa_node = -1;
	d->pci_busid[0] = '\0';
	cl_device_pci_bus_info_khr bi;
	if (has_extension(dev, "cl_khr_pci_bus_info") &&
	    clGetDeviceInfo(dev, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof(bi), &bi, NULL) == CL_SUCCESS) {
		snprintf(d->pci_busid, sizeof(d->pci_busid), "%04x:%02x:%02x.%x",
		         bi.pci_domain & 0xffff, bi.pci_bus & 0xff, bi.pci_device & 0x1f,
		         bi.pci_function & 0x7);
		d->numa_node = pci_numa_node(topo, &bi);
	}
}

static void cl_dev_destroy(struct cl_dev *cd)
{
	cl_command_queue qs[] = { cd->q_in, cd->q_compute, cd->q_out };
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
		if (qs[i])
			clFinish(qs[i]);
	cl_launch_release(cd);
	for (int i = 0; i < CLK_COUNT; i++)
		if (cd->kern[i])
			clReleaseKernel(cd->kern[i]);
	if (cd->prog)
		clReleaseProgram(cd->prog);
	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
		if (qs[i])
			clReleaseCommandQueue(qs[i]);
	if (cd->ctx)
		clReleaseContext(cd->ctx);
	pthread_mutex_destroy(&cd->lock);
	pthread_mutex_destroy(&cd->time_lock);
	free(cd);
}

/* Logs the whole build log; the note gets its first line. */
static void report_build_failure(struct backend_probe_params *p, const char *dname, cl_program prog,
                                 cl_device_id dev, cl_int err)
{
	size_t len = 0;
	char *log = NULL;
	if (clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &len) == CL_SUCCESS &&
	    (log = calloc(1, len + 1)) != NULL)
		clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, len, log, NULL);
	log_warn("opencl: %s: program build failed (%d):\n%s", dname, err, log ? log : "");
	char first[120] = "";
	if (log)
		snprintf(first, sizeof(first), "%.*s", (int)strcspn(log, "\n"), log);
	note_set(p, "opencl: %s: program build failed (%d): %s", dname, err, first);
	free(log);
}

static size_t floor_pow2(size_t v)
{
	size_t p = 1;
	while (p * 2 <= v)
		p *= 2;
	return p;
}

static int build_program(struct backend_probe_params *p, struct cl_dev *cd, const char *dname)
{
	const char *src = cl_kernels_src;
	cl_int err;

	cd->prog = clCreateProgramWithSource(cd->ctx, 1, &src, NULL, &err);
	if (err != CL_SUCCESS)
		return err;
	err = clBuildProgram(cd->prog, 1, &cd->device, CL_BUILD_OPTIONS, NULL, NULL);
	if (err != CL_SUCCESS) {
		report_build_failure(p, dname, cd->prog, cd->device, err);
		return err;
	}
	for (int i = 0; i < CLK_COUNT; i++) {
		cd->kern[i] = clCreateKernel(cd->prog, cl_kernel_names[i], &err);
		if (err != CL_SUCCESS)
			return err;
	}
	return CL_SUCCESS;
}

/* Work-group sizes of the kernels that run one group per row. */
static void choose_work_groups(struct cl_dev *cd, enum tdm_device_kind kind)
{
	size_t cap = kind == TDM_DEV_CLCPU ? WG_MAX_CLCPU : WG_MAX_GPU;
	for (int i = 0; i < CLK_COUNT; i++) {
		size_t max = 1;
		clGetKernelWorkGroupInfo(cd->kern[i], cd->device, CL_KERNEL_WORK_GROUP_SIZE,
		                         sizeof(max), &max, NULL);
		cd->wg[i] = floor_pow2(max < cap ? (max ? max : 1) : cap);
	}
}

/* Context, queues, program and kernels for one device; NULL (with the
 * reason in the note) when any of it fails. */
static struct cl_dev *cl_dev_create(struct backend_probe_params *p, cl_platform_id plat,
                                    cl_device_id dev, enum tdm_device_kind kind, const char *dname)
{
	struct cl_dev *cd = calloc(1, sizeof(*cd));
	if (!cd) {
		note_set(p, "opencl: %s: out of memory", dname);
		return NULL;
	}
	pthread_mutex_init(&cd->lock, NULL);
	pthread_mutex_init(&cd->time_lock, NULL);
	cd->off_min[0] = cd->off_min[1] = INT64_MAX;
	cd->device = dev;
	clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(cl_ulong), &cd->mem_bytes, NULL);

	cl_context_properties props[] = { CL_CONTEXT_PLATFORM, (cl_context_properties)plat, 0 };
	cl_int err;
	const char *step = "clCreateContext";
	cd->ctx = clCreateContext(props, 1, &dev, NULL, NULL, &err);
	if (err == CL_SUCCESS) {
		step = "clCreateCommandQueue";
		cd->q_in = clCreateCommandQueue(cd->ctx, dev, 0, &err);
	}
	/* Kernels' ends from the device (event_ended). */
	if (err == CL_SUCCESS)
		cd->q_compute = clCreateCommandQueue(cd->ctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
	if (err == CL_SUCCESS)
		cd->q_out = clCreateCommandQueue(cd->ctx, dev, 0, &err);
	if (err == CL_SUCCESS) {
		step = "program";
		err = build_program(p, cd, dname);
	}
	if (err != CL_SUCCESS) {
		note_set(p, "opencl: %s: device skipped, %s failed (%d)", dname, step, err);
		log_warn("opencl: %s: device skipped, %s failed (%d)", dname, step, err);
		cl_dev_destroy(cd);
		return NULL;
	}
	choose_work_groups(cd, kind);
	return cd;
}

static bool device_usable(cl_device_id dev)
{
	cl_bool avail = CL_FALSE, compiler = CL_FALSE;
	clGetDeviceInfo(dev, CL_DEVICE_AVAILABLE, sizeof(avail), &avail, NULL);
	clGetDeviceInfo(dev, CL_DEVICE_COMPILER_AVAILABLE, sizeof(compiler), &compiler, NULL);
	return avail && compiler;
}

static void probe_platform(struct backend_probe_params *p, cl_platform_id plat,
                           struct backend_device *out, size_t max, size_t *n,
                           unsigned count[TDM_DEV_KIND_COUNT])
{
	cl_uint ndev = 0;
	if (clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 0, NULL, &ndev) != CL_SUCCESS || ndev == 0)
		return;
	cl_device_id *devs = calloc(ndev, sizeof(*devs));
	if (!devs || clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, ndev, devs, NULL) != CL_SUCCESS) {
		free(devs);
		return;
	}
	for (cl_uint i = 0; i < ndev && *n < max; i++) {
		cl_device_type type = 0;
		enum tdm_device_kind kind;
		const char *prefix;
		clGetDeviceInfo(devs[i], CL_DEVICE_TYPE, sizeof(type), &type, NULL);
		if (!device_kind(type, &kind, &prefix) || !device_usable(devs[i]))
			continue;
		char dname[BACKEND_DEVICE_NAME_MAX];
		snprintf(dname, sizeof(dname), "%s%u", prefix, count[kind]);
		struct cl_dev *cd = cl_dev_create(p, plat, devs[i], kind, dname);
		if (!cd)
			continue;
		struct backend_device *d = &out[(*n)++];
		memset(d, 0, sizeof(*d));
		snprintf(d->name, sizeof(d->name), "%s", dname);
		d->kind = kind;
		d->ops = &backend_opencl;
		d->os_index = -1;
		d->priv = cd;
		d->warms_up = true; /* kernels compile at their first launch */
		describe_device(d, devs[i], p->topology);
		count[kind]++;
		atomic_fetch_add(&live_devices, 1);
	}
	free(devs);
}

static int cl_probe(struct backend_probe_params *p, struct backend_device *out, size_t max,
                    size_t *n)
{
	cl_uint nplat = 0;
	cl_int err = clGetPlatformIDs(0, NULL, &nplat);

	*n = 0;
	p->note[0] = '\0';
	if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && nplat == 0)) {
		snprintf(p->note, sizeof(p->note), "opencl: no platform (no ICD driver installed)");
		return 0;
	}
	if (err != CL_SUCCESS) {
		snprintf(p->note, sizeof(p->note), "opencl: clGetPlatformIDs failed (%d)", err);
		return 0;
	}
	cl_platform_id *plats = calloc(nplat, sizeof(*plats));
	if (!plats)
		return -TDM_ENOMEM;
	unsigned count[TDM_DEV_KIND_COUNT] = { 0 };
	if (clGetPlatformIDs(nplat, plats, NULL) == CL_SUCCESS)
		for (cl_uint i = 0; i < nplat; i++)
			probe_platform(p, plats[i], out, max, n, count);
	free(plats);
	if (*n == 0 && p->note[0] == '\0')
		snprintf(p->note, sizeof(p->note), "opencl: %u platform(s), no usable device",
		         nplat);
	return 0;
}

static void cl_release(struct backend_device *d)
{
	if (!d->priv)
		return;
	cl_dev_destroy(d->priv);
	d->priv = NULL;
	/* CLBlast caches programs per context; they hold the context alive. */
	if (atomic_fetch_sub(&live_devices, 1) == 1)
		cl_clblast_clear_cache();
}

static bool cl_supports(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	/* spin is a CPU busy-loop; spotrf (CPU only) needs a LAPACK, and one
	 * that reports a matrix that is not positive definite. */
	return k->id < KERNEL_COUNT && !kernel_sim_only(k->id) && k->id != KERNEL_SPIN &&
	       k->id != KERNEL_SPOTRF;
}

/* ---- memory ---- */

/* PoCL (and some GPU drivers) allocate lazily and PoCL never fails for lack
 * of room, so the backend also keeps its own count of the bytes in live
 * buffers against CL_DEVICE_GLOBAL_MEM_SIZE: a cheap check that needs no
 * round trip to the device. */
static int cl_mem_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	struct cl_dev *cd = cl_dev_of(d);
	if (bytes == 0)
		return -TDM_EINVAL;
	uint64_t used = atomic_fetch_add(&cd->mem_used, bytes);
	if (used + bytes > cd->mem_bytes) {
		atomic_fetch_sub(&cd->mem_used, bytes);
		return -TDM_ENOMEM;
	}
	cl_int err;
	cl_mem m = clCreateBuffer(cd->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
	if (err != CL_SUCCESS) {
		atomic_fetch_sub(&cd->mem_used, bytes);
		return cl_error(err);
	}
	*mem = m;
	return 0;
}

/* The buffer goes once the commands queued on it finished (OpenCL defers
 * the release), so this may be called with work still in flight. */
static void cl_mem_free(const struct backend_device *d, void *mem)
{
	struct cl_dev *cd = cl_dev_of(d);
	size_t size = 0;
	if (!mem)
		return;
	if (clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof(size), &size, NULL) == CL_SUCCESS)
		atomic_fetch_sub(&cd->mem_used, size);
	clReleaseMemObject(mem);
}

/* OpenCL has no portable way to pin memory it did not allocate, so
 * host_register is left out: copies go from pageable memory. */

/* ---- copies ---- */

static int enqueue_copy(cl_command_queue q, bool write, cl_mem mem, uint64_t off, void *host,
                        uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	cl_event ev;
	cl_uint nw = after ? 1 : 0;
	const cl_event *wl = after ? &after->ev : NULL;
	cl_int err;

	if (write)
		err = clEnqueueWriteBuffer(q, mem, CL_FALSE, off, bytes, host, nw, wl, &ev);
	else
		err = clEnqueueReadBuffer(q, mem, CL_FALSE, off, bytes, host, nw, wl, &ev);
	if (err != CL_SUCCESS)
		return cl_error(err);
	clFlush(q);
	return cl_event_wrap(ev, done);
}

static int cl_copy_h2d(const struct backend_device *d, void *mem, uint64_t off, const void *host,
                       uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	/* A non-blocking write only reads from host. */
	return enqueue_copy(cl_dev_of(d)->q_in, true, mem, off, (void *)host, bytes, after, done);
}

static int cl_copy_d2h(const struct backend_device *d, void *host, void *mem, uint64_t off,
                       uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	return enqueue_copy(cl_dev_of(d)->q_out, false, mem, off, host, bytes, after, done);
}

/* Each device has its own context: no device-to-device copy in OpenCL 1.2
 * between them. Through a bounce in host memory, synchronously (a device
 * leaving is rare); *done is a marker that is complete at once. */
static int cl_copy_peer(const struct backend_device *d, void *mem, uint64_t off,
                        const struct backend_device *src, void *src_mem, uint64_t src_off,
                        uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	struct cl_dev *cd = cl_dev_of(d), *sd = cl_dev_of(src);
	void *bounce = malloc(bytes ? bytes : 1);
	cl_event ev;
	cl_int err;

	if (!bounce)
		return -TDM_ENOMEM;
	if (after && (err = clWaitForEvents(1, &after->ev)) != CL_SUCCESS)
		goto out;
	if (bytes && (err = clEnqueueReadBuffer(sd->q_out, (cl_mem)src_mem, CL_TRUE, src_off, bytes,
	                                        bounce, 0, NULL, NULL)) != CL_SUCCESS)
		goto out;
	if (bytes && (err = clEnqueueWriteBuffer(cd->q_in, (cl_mem)mem, CL_TRUE, off, bytes, bounce,
	                                         0, NULL, NULL)) != CL_SUCCESS)
		goto out;
	err = clEnqueueMarkerWithWaitList(cd->q_in, 0, NULL, &ev);
out:
	free(bounce);
	if (err != CL_SUCCESS)
		return cl_error(err);
	clFlush(cd->q_in);
	return cl_event_wrap(ev, done);
}

/* ---- events ---- */

static int event_status(cl_event ev)
{
	cl_int st;
	if (clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(st), &st, NULL) !=
	    CL_SUCCESS)
		return -TDM_EDEVICE;
	if (st < 0)
		return -TDM_EDEVICE;
	return st == CL_COMPLETE ? 1 : 0;
}

/* A completed event whose kernel found its data bad (the status word read
 * back) fails with -TDM_ERANGE: the task's inputs are to blame, not the
 * device, which stays healthy. */
static int completed(const struct backend_event *ev)
{
	return ev->has_status && ev->status != 0 ? -TDM_ERANGE : 1;
}

static int cl_event_wait(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	/* A failed command makes clWaitForEvents return an error; its status
	 * says the same, so the status alone decides. */
	clWaitForEvents(1, &ev->ev);
	if (event_status(ev->ev) != 1)
		return -TDM_EDEVICE;
	int rc = completed(ev);
	return rc == 1 ? 0 : rc;
}

static int cl_event_query(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	int st = event_status(ev->ev);
	return st == 1 ? completed(ev) : st;
}

static void cl_event_release(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	if (!ev)
		return;
	/* The read of the status word writes into *ev: it must be over. */
	if (ev->has_status)
		clWaitForEvents(1, &ev->ev);
	clReleaseEvent(ev->ev);
	free(ev);
}

#define OFFSET_WINDOW 256

/* The kernel's end as the device saw it (its queue's profiling clock),
 * moved to the engine's clock by the least waited - END so far (see
 * struct cl_dev). Every event ends on the compute queue (a kernel, a
 * marker, or the read of a status word behind its kernel). */
static uint64_t cl_event_ended(const struct backend_device *d, struct backend_event *ev,
                               uint64_t waited)
{
	struct cl_dev *cd = cl_dev_of(d);
	cl_ulong end = 0;
	if (clGetEventProfilingInfo(ev->ev, CL_PROFILING_COMMAND_END, sizeof(end), &end, NULL) !=
	            CL_SUCCESS ||
	    end == 0 || end > INT64_MAX || waited > INT64_MAX)
		return 0;
	int64_t gap = (int64_t)waited - (int64_t)end;
	pthread_mutex_lock(&cd->time_lock);
	if (gap < cd->off_min[0])
		cd->off_min[0] = gap;
	int64_t off = cd->off_min[0] < cd->off_min[1] ? cd->off_min[0] : cd->off_min[1];
	if (++cd->off_seen == OFFSET_WINDOW) {
		cd->off_min[1] = cd->off_min[0];
		cd->off_min[0] = INT64_MAX;
		cd->off_seen = 0;
	}
	pthread_mutex_unlock(&cd->time_lock);
	/* off <= gap: the answer is at most waited */
	int64_t at = (int64_t)end + off;
	return at > 0 ? (uint64_t)at : 0;
}

const struct backend_ops backend_opencl = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "opencl",
	.probe = cl_probe,
	.release = cl_release,
	.supports = cl_supports,
	.mem_alloc = cl_mem_alloc,
	.mem_free = cl_mem_free,
	.copy_h2d = cl_copy_h2d,
	.copy_d2h = cl_copy_d2h,
	.copy_peer = cl_copy_peer,
	.launch_async = cl_launch_async,
	.event_wait = cl_event_wait,
	.event_query = cl_event_query,
	.event_release = cl_event_release,
	.event_ended = cl_event_ended,
};
