/* A fake accelerator for unit tests: device memory from calloc, copies by
 * memcpy, kernels run by their CPU version on the device copies; every
 * event is complete when made. It counts what it does, and a host-to-device
 * copy can be made to fail on demand. Each test file has its own (the
 * counters are static).
 *
 * FAKE_ACCEL_MEM_OPS names its memory, copy and event hooks for a
 * struct backend_ops initializer; a test adds the name and any other hook:
 *   static const struct backend_ops acc = { FAKE_ACCEL_MEM_OPS, .name = "fake",
 *                                           .launch_async = fake_launch };
 * FAKE_HOST_OPS is the same for a host device running kernels' CPU code.
 * The functions are static inline so that a test need not use them all. */
#ifndef TDM_TESTS_FAKE_BACKEND_H
#define TDM_TESTS_FAKE_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "tandem.h"

struct backend_event {
	int status; /* a kernel's return value; 0 for copies */
};

/* Copies issued each way, the bytes they moved, and allocations made. */
static _Atomic int fake_h2d, fake_d2h, fake_allocs;
static _Atomic uint64_t fake_h2d_bytes, fake_d2h_bytes;
/* n > 0: the n-th host-to-device copy from now fails to issue. */
static _Atomic int fake_h2d_fail_in;

static inline bool fake_supports(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	return k->cpu != NULL;
}

static inline int fake_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	(void)d;
	atomic_fetch_add(&fake_allocs, 1);
	*mem = calloc(1, bytes);
	return *mem ? 0 : -TDM_ENOMEM;
}

static inline void fake_free(const struct backend_device *d, void *mem)
{
	(void)d;
	free(mem);
}

static inline struct backend_event *fake_new_event(void)
{
	return calloc(1, sizeof(struct backend_event));
}

static inline int fake_h2d_copy(const struct backend_device *d, void *mem, uint64_t off,
                                const void *host, uint64_t bytes, struct backend_event *after,
                                struct backend_event **done)
{
	(void)d;
	(void)after;
	int fail_in = atomic_load(&fake_h2d_fail_in);
	if (fail_in > 0) {
		atomic_store(&fake_h2d_fail_in, fail_in - 1);
		if (fail_in == 1)
			return -TDM_EDEVICE;
	}
	memcpy((char *)mem + off, host, bytes);
	atomic_fetch_add(&fake_h2d, 1);
	atomic_fetch_add(&fake_h2d_bytes, bytes);
	*done = fake_new_event();
	return 0;
}

static inline int fake_d2h_copy(const struct backend_device *d, void *host, void *mem, uint64_t off,
                                uint64_t bytes, struct backend_event *after,
                                struct backend_event **done)
{
	(void)d;
	(void)after;
	memcpy(host, (char *)mem + off, bytes);
	atomic_fetch_add(&fake_d2h, 1);
	atomic_fetch_add(&fake_d2h_bytes, bytes);
	*done = fake_new_event();
	return 0;
}

/* Runs the CPU version on the device copies. */
static inline int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                              const struct tdm_kernel_call *call,
                              struct backend_event *const *waits, size_t nwaits,
                              struct backend_event **done)
{
	struct tdm_kernel_call c = *call;
	(void)d;
	(void)waits;
	(void)nwaits;
	for (uint32_t i = 0; i < c.nargs; i++)
		c.ptr[i] = (char *)c.mem[i] + c.off[i];
	*done = fake_new_event();
	(*done)->status = k->cpu(&c);
	return 0;
}

static inline int fake_wait(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	return ev->status ? -TDM_EDEVICE : 0;
}

static inline int fake_query(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	return ev->status ? -TDM_EDEVICE : 1;
}

static inline void fake_release(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	free(ev);
}

/* A host device that runs each kernel's CPU implementation:
 *   static const struct backend_ops host = { FAKE_HOST_OPS, .name = "host" }; */
static inline int fake_host_launch(const struct backend_device *d, const struct kernel_def *k,
                                   const struct tdm_kernel_call *call)
{
	(void)d;
	return k->cpu(call);
}

#define FAKE_HOST_OPS .abi_version = BACKEND_ABI_VERSION, .launch = fake_host_launch

#define FAKE_ACCEL_MEM_OPS                                                                         \
	.abi_version = BACKEND_ABI_VERSION, .mem_alloc = fake_alloc, .mem_free = fake_free,        \
	.copy_h2d = fake_h2d_copy, .copy_d2h = fake_d2h_copy, .event_wait = fake_wait,             \
	.event_query = fake_query, .event_release = fake_release

#endif
