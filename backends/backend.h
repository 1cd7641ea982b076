/* The backend seam: discovery of devices and running kernels on them.
 * Absent hardware is not an error: probe finds zero devices. */
#ifndef TDM_BACKENDS_BACKEND_H
#define TDM_BACKENDS_BACKEND_H

#include <stddef.h>

#include "backends/kernels.h"

#define BACKEND_DEVICE_NAME_MAX 32

struct backend_ops;

struct backend_device {
	char name[BACKEND_DEVICE_NAME_MAX];
	enum tdm_device_kind kind;
	const struct backend_ops *ops;
	int os_index; /* CPU: the PU (or first PU of the core) the worker runs on */
	void *bind_set; /* backend-private: what the worker thread binds to */
};

struct backend_probe_params {
	void *topology; /* hwloc_topology_t */
	const int *cores; /* OS PU indexes to use; NULL = one worker per core */
	size_t ncores;
};

struct backend_ops {
	const char *name;
	/* Appends up to max devices to out[]; *n receives the number found. */
	int (*probe)(const struct backend_probe_params *p, struct backend_device *out, size_t max,
	             size_t *n);
	void (*release)(struct backend_device *d);
	/* Called on the device's worker thread before it runs anything. */
	int (*worker_init)(const struct backend_device *d, void *topology);
	/* Runs a kernel on the device, synchronously for now. */
	int (*launch)(const struct backend_device *d, const struct kernel_def *k,
	              const struct tdm_kernel_call *call);
};

extern const struct backend_ops backend_cpu;

#endif
