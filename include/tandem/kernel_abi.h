/* The kernel ABI: what a kernel implementation sees when it runs.
 *
 * Clients name kernels; they never send code. Each kernel has a fixed
 * signature (buffer arguments with access modes, typed scalars) that the
 * daemon checks before anything runs, and one implementation per backend.
 */
#ifndef TANDEM_KERNEL_ABI_H
#define TANDEM_KERNEL_ABI_H

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
};

/* Returns 0, or a negative TDM_E* code when the kernel fails. */
typedef int (*tdm_kernel_fn)(const struct tdm_kernel_call *call);

#endif
