/* The backend seam: discovery of devices, their memory and queues, and
 * running kernels on them. Absent hardware is not an error: probe finds
 * zero devices and says why in one line.
 *
 * Two shapes of device:
 *  - host devices (CPU cores) run kernels synchronously on host memory
 *    through launch(); they sit on memory node 0;
 *  - accelerators (OpenCL, CUDA) have their own memory node and three
 *    queues: copy-in, compute, copy-out. Every call below is asynchronous
 *    and hands back an event; the engine chains events so that the next
 *    task's inputs arrive while the current task computes.
 *
 * Thread safety: each device is driven by one engine worker thread, but
 * copies (write-back, eviction) and mem_free may be issued from any thread;
 * a backend serialises what its API does not. */
#ifndef TDM_BACKENDS_BACKEND_H
#define TDM_BACKENDS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/kernels.h"

#define BACKEND_DEVICE_NAME_MAX 32
/* Memory nodes a machine may have: the host (0) and accelerators' own. */
#define BACKEND_MAX_NODES 16
#define BACKEND_NOTE_MAX 200

struct backend_ops;
struct backend_event; /* backend-private: a cl_event, a cudaEvent_t, ... */

struct backend_device {
	char name[BACKEND_DEVICE_NAME_MAX]; /* cpu0, clcpu0, gpu0, npu0, cuda0 */
	char model[64]; /* what the vendor calls it */
	enum tdm_device_kind kind;
	const struct backend_ops *ops;
	int os_index; /* CPU: the PU (or first PU of the core) the worker runs on */
	void *bind_set; /* hwloc cpuset the worker thread binds to (NULL: none) */
	void *priv; /* backend-private per-device state */
	uint64_t mem_bytes; /* accelerators: device memory size; 0 for host devices */
	int numa_node; /* nearest NUMA node (os index), -1 unknown */
	char pci_busid[16]; /* "0000:65:00.0", "" unknown */
	uint16_t node; /* memory node, set by the daemon: 0 = host */
	/* Its first run of each kernel does one-time work too (a JIT compile,
	 * a module or library loaded): the engine does not learn its cost
	 * from it. */
	bool warms_up;
};

struct backend_probe_params {
	void *topology; /* hwloc_topology_t */
	const int *cores; /* CPU: OS PU indexes to use; NULL = one worker per core */
	size_t ncores;
	/* Out: one line saying why no device was found (driver missing, ...),
	 * or "" when there is nothing to say. */
	char note[BACKEND_NOTE_MAX];
};

/* The version of this seam (struct backend_ops, struct backend_device, the
 * probe parameters, the struct tdm_kernel_call kernels get and what the
 * hooks mean). Raised whenever one of them
 * changes in a way a backend built against the old one would get wrong;
 * a backend of another version is refused where it registers (the backend
 * registry, the CUDA plugin loader, engine_create). */
#define BACKEND_ABI_VERSION                                                                        \
	5u /* 2: mem_reserve, mem_grow; 3: copy_peer; 4: call.routed; 5: event_ended,              \
	    * warms_up */

struct backend_ops {
	/* BACKEND_ABI_VERSION as the backend was built. Stays the first
	 * member in every version, so that it can be read from any. */
	uint32_t abi_version;
	const char *name; /* "cpu", "opencl", "cuda" */
	/* Appends up to max devices to out[]; *n receives the number found. */
	int (*probe)(struct backend_probe_params *p, struct backend_device *out, size_t max,
	             size_t *n);
	void (*release)(struct backend_device *d);
	/* Called on the device's worker thread before it runs anything. */
	int (*worker_init)(const struct backend_device *d, void *topology);
	/* Whether this device has an implementation of kernel k. */
	bool (*supports)(const struct backend_device *d, const struct kernel_def *k);

	/* ---- host devices ---- */
	/* Runs a kernel synchronously on host memory (call->ptr). */
	int (*launch)(const struct backend_device *d, const struct kernel_def *k,
	              const struct tdm_kernel_call *call);

	/* ---- accelerators (NULL for host devices) ---- */
	/* Device memory; *mem is what kernels get in call->mem. -TDM_ENOMEM
	 * when the device has no room. */
	int (*mem_alloc)(const struct backend_device *d, uint64_t bytes, void **mem);
	void (*mem_free)(const struct backend_device *d, void *mem);
	/* Optional: pin host memory for DMA for as long as it is registered. */
	int (*host_register)(const struct backend_device *d, void *host, uint64_t bytes);
	void (*host_unregister)(const struct backend_device *d, void *host);
	/* Copies on the copy-in (h2d) or copy-out (d2h) queue, after `after`
	 * (may be NULL); *done receives an event that completes with the copy. */
	int (*copy_h2d)(const struct backend_device *d, void *mem, uint64_t off, const void *host,
	                uint64_t bytes, struct backend_event *after, struct backend_event **done);
	int (*copy_d2h)(const struct backend_device *d, void *host, void *mem, uint64_t off,
	                uint64_t bytes, struct backend_event *after, struct backend_event **done);
	/* Enqueues kernel k on the compute queue once every event in waits[]
	 * completed; *done completes with the kernel. The call's mem/off are
	 * valid on this device. */
	int (*launch_async)(const struct backend_device *d, const struct kernel_def *k,
	                    const struct tdm_kernel_call *call, struct backend_event *const *waits,
	                    size_t nwaits, struct backend_event **done);
	/* Blocks until ev completed: 0, or -TDM_EDEVICE if the work failed,
	 * or -TDM_ERANGE if a kernel that checks its data on the device
	 * (attn_decode_varlen's index) found it bad: the task fails, the
	 * device stays healthy. */
	int (*event_wait)(const struct backend_device *d, struct backend_event *ev);
	/* 1 completed, 0 pending, -TDM_EDEVICE or -TDM_ERANGE failed (as
	 * event_wait). Never blocks. */
	int (*event_query)(const struct backend_device *d, struct backend_event *ev);
	void (*event_release)(const struct backend_device *d, struct backend_event *ev);
	/* Optional: when the work behind a completed kernel event started, on
	 * the engine's clock (0: unknown). Without it a task's start is taken
	 * as when it was staged or its predecessor on the queue ended. */
	uint64_t (*event_started)(const struct backend_device *d, struct backend_event *ev);
	/* Optional: when the work behind a completed kernel event ended, on the
	 * engine's clock, given `waited`: that clock when the wait for it
	 * returned (the answer is at most waited; 0: unknown, the end is then
	 * taken as waited). A worker that wakes late finds the kernels queued
	 * behind the one it waited for over too: without the device's own
	 * figure the first would be charged the time it slept and the others
	 * nothing, and the cost models would learn both. */
	uint64_t (*event_ended)(const struct backend_device *d, struct backend_event *ev,
	                        uint64_t waited);

	/* Optional (accelerators), both or neither: device memory that grows
	 * in place, for KV caches. mem_reserve gives *mem (what kernels get)
	 * for up to `capacity` bytes of contiguous device addresses, none of
	 * it usable yet; mem_grow makes [0, bytes) usable, keeping what it
	 * held (bytes only goes up, at most the capacity); mem_free frees it.
	 * -TDM_ENOMEM when the device has no room (or no addresses);
	 * mem_reserve -TDM_EINVAL when this device cannot (CUDA without VMM):
	 * the caller then allocates whole (mem_alloc). */
	int (*mem_reserve)(const struct backend_device *d, uint64_t capacity, void **mem);
	int (*mem_grow)(const struct backend_device *d, void *mem, uint64_t bytes);
	/* Optional (accelerators): copies [src_off, src_off + bytes) of
	 * src_mem, on device src of the same backend, to mem at off on d,
	 * after `after` (an event of d or src; may be NULL); *done (an event
	 * of d) completes with the copy. Device to device where the hardware
	 * links them, else through a bounce in host memory. -TDM_EINVAL when
	 * these two devices cannot (the caller then goes through the host
	 * itself). A device that leaves moves what only it holds this way
	 * (residency_node_evacuate). */
	int (*copy_peer)(const struct backend_device *d, void *mem, uint64_t off,
	                 const struct backend_device *src, void *src_mem, uint64_t src_off,
	                 uint64_t bytes, struct backend_event *after, struct backend_event **done);
};

static inline bool backend_is_accelerator(const struct backend_device *d)
{
	return d->ops->launch_async != NULL;
}

/* 0 if ops speaks this seam's version; else -TDM_EINVAL and a one-line
 * reason in why (may be NULL): "backend cuda: ABI version 2, tandemd speaks
 * 1". */
int backend_check(const struct backend_ops *ops, char *why, size_t whylen);

extern const struct backend_ops backend_cpu;
extern const struct backend_ops backend_opencl;
/* The CUDA backend lives in a plugin (tandem-cuda.so) so that the daemon
 * builds and runs without CUDA; NULL with a reason in note when the plugin
 * or the CUDA runtime cannot be loaded, or the plugin's backend is of
 * another ABI version. */
const struct backend_ops *backend_cuda_load(const char *plugin_path, char *note, size_t notelen);
void backend_cuda_unload(void);
/* The plugin's entry point, found by dlsym under this name: the backend's
 * ops, whose abi_version the loader checks before anything else. */
#define BACKEND_CUDA_ENTRY "tandem_cuda_backend"
typedef const struct backend_ops *backend_cuda_entry_fn(void);

/* ---- the registry ----------------------------------------------------------
 * Discovery components in the manner of hwloc's: each backend the daemon
 * may probe, with a priority (higher probes first: cpu, then cuda, then
 * opencl) and whether it is enabled when the configuration does not say
 * ("<name>.enabled", e.g. [cuda] enabled). A backend's devices come after
 * those of every backend probed before it. */
struct backend_component {
	const char *name; /* also its configuration section */
	int priority;
	bool enabled_by_default;
	/* A device with a PCI bus id that a device of a backend probed before
	 * already has is left out: the same GPU, seen through OpenCL after
	 * CUDA, is used once. */
	bool yields_same_pci;
	/* Built in: ops. A plugin: load (plugin_path NULL: its default place),
	 * NULL with a one-line reason in note when it cannot be had. */
	const struct backend_ops *ops;
	const struct backend_ops *(*load)(const char *plugin_path, char *note, size_t notelen);
	void (*unload)(void); /* a plugin: forgets it (its devices released) */
};

/* The components in probe order (priority, highest first; equal ones by
 * name): up to max into out, returns how many there are. */
size_t backend_registry(const struct backend_component **out, size_t max);
/* Unloads every plugin a component loaded (each device released first). */
void backend_registry_unload(void);
/* A component's ops, loaded if it is a plugin and checked (backend_check):
 * NULL with a one-line reason in note otherwise. */
const struct backend_ops *backend_component_ops(const struct backend_component *c,
                                                const char *plugin_path, char *note,
                                                size_t notelen);

#endif
