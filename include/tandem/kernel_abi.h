/* The kernel ABI: what a kernel implementation sees when it runs.
 *
 * Clients name kernels; they never send code. Each kernel has a fixed
 * signature (buffer arguments with access modes, typed scalars) that the
 * daemon checks before anything runs, and one implementation per backend.
 */
#ifndef TANDEM_KERNEL_ABI_H
#define TANDEM_KERNEL_ABI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tandem/wire.h"

struct tdm_kernel_call {
	uint32_t nargs;
	/* Host address of each argument (buffer base + offset). CPU kernels
	 * work on it; accelerator kernels must not touch it. */
	void *ptr[TDM_MAX_ARGS];
	uint64_t len[TDM_MAX_ARGS]; /* bytes */
	/* Accelerators: the argument's replica on the device's memory node (a
	 * cl_mem, a CUDA device pointer) and the byte offset inside it. */
	void *mem[TDM_MAX_ARGS];
	uint64_t off[TDM_MAX_ARGS];
	union tdm_wire_scalar s[TDM_MAX_SCALARS];
	/* Non-zero once the task's result is no longer wanted (its client left,
	 * or the daemon stopped waiting for it at shutdown); NULL: never. Long
	 * host kernels look at it between rows, heads or tokens and then return
	 * -TDM_ECANCELED, leaving their outputs partly written. */
	const _Atomic int *cancel;
	/* A task its router guards, where the daemon knows which of its tokens
	 * the router sent to its expert (docs/kernels.md "Routing seen at run
	 * time"): those tokens, ascending, nrouted (> 0) of them. The kernel
	 * may compute them only. NULL: not known, the kernel finds them itself.
	 * Host memory, valid until the task is over. */
	const uint32_t *routed;
	uint32_t nrouted;
};

static inline bool tdm_kernel_canceled(const struct tdm_kernel_call *call)
{
	return call->cancel && atomic_load_explicit(call->cancel, memory_order_relaxed);
}

/* Returns 0, or a negative TDM_E* code when the kernel fails. */
typedef int (*tdm_kernel_fn)(const struct tdm_kernel_call *call);

#endif
