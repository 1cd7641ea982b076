/* The kernel table: every built-in kernel's name, signature, argument check
 * and its implementation per device kind. Later backends add their own
 * implementations of the same kernels here. */
#ifndef TDM_BACKENDS_KERNELS_H
#define TDM_BACKENDS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/kernel_abi.h"

enum tdm_device_kind { TDM_DEV_CPU = 0, TDM_DEV_KIND_COUNT };

struct kernel_def {
	const char *name;
	uint8_t nargs;
	uint8_t nscalars;
	uint8_t arg_modes[TDM_MAX_ARGS]; /* enum tdm_access */
	uint8_t scalar_types[TDM_MAX_SCALARS]; /* enum tdm_scalar_type */
	/* Checks buffer sizes against scalars once, at intake; 0 or -TDM_E*. */
	int (*check)(const struct tdm_kernel_call *call);
	tdm_kernel_fn impl[TDM_DEV_KIND_COUNT]; /* NULL: not available on that kind */
};

size_t kernel_count(void);
/* NULL when id is out of range. */
const struct kernel_def *kernel_by_id(uint32_t id);
/* Returns the id, or -TDM_EKERNEL. */
int kernel_lookup(const char *name);
/* Makes the CPU kernels single-threaded (one worker per core already). */
void kernels_cpu_init(void);

/* CPU implementations (backends/cpu/cpu_kernels.c). */
int cpu_noop(const struct tdm_kernel_call *call);
int cpu_spin(const struct tdm_kernel_call *call);
int cpu_fill(const struct tdm_kernel_call *call);
int cpu_axpy(const struct tdm_kernel_call *call);
int cpu_sgemm(const struct tdm_kernel_call *call);

#endif
