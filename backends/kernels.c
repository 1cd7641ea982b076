/* Built-in kernel table: names, signatures, argument checks. */
#include "backends/kernels.h"

#include <string.h>

#include "tandem.h"

#define SPIN_MAX_US 10000000 /* 10 s */
#define GEMM_MAX_DIM 65536

static int check_none(const struct tdm_kernel_call *call)
{
	(void)call;
	return 0;
}

static int check_spin(const struct tdm_kernel_call *call)
{
	int64_t us = call->s[0].i64;
	return us >= 0 && us <= SPIN_MAX_US ? 0 : -TDM_EARITY;
}

static int check_fill(const struct tdm_kernel_call *call)
{
	return call->len[0] % sizeof(float) == 0 ? 0 : -TDM_ERANGE;
}

static int check_axpy(const struct tdm_kernel_call *call)
{
	if (call->len[0] != call->len[1] || call->len[0] % sizeof(float) ||
	    call->len[0] / sizeof(float) > INT32_MAX) /* BLAS counts are int */
		return -TDM_ERANGE;
	return 0;
}

/* bytes = a * b * 4 with overflow checks; the factors are already bounded. */
static uint64_t matrix_bytes(int64_t a, int64_t b)
{
	return (uint64_t)a * (uint64_t)b * sizeof(float);
}

static int check_sgemm(const struct tdm_kernel_call *call)
{
	int64_t m = call->s[0].i64, n = call->s[1].i64, k = call->s[2].i64;

	if (m < 1 || n < 1 || k < 1 || m > GEMM_MAX_DIM || n > GEMM_MAX_DIM || k > GEMM_MAX_DIM)
		return -TDM_EARITY;
	if (call->len[0] < matrix_bytes(m, k) || call->len[1] < matrix_bytes(k, n) ||
	    call->len[2] < matrix_bytes(m, n))
		return -TDM_ERANGE;
	return 0;
}

static const struct kernel_def kernel_table[] = {
	{
	        .name = "noop",
	        .check = check_none,
	        .impl = { [TDM_DEV_CPU] = cpu_noop },
	},
	{
	        /* Busy for s0 microseconds: a kernel of known cost, for tests. */
	        .name = "spin",
	        .nscalars = 1,
	        .scalar_types = { TDM_SCALAR_I64 },
	        .check = check_spin,
	        .impl = { [TDM_DEV_CPU] = cpu_spin },
	},
	{
	        /* a0[i] = s0 for every float of a0. */
	        .name = "fill",
	        .nargs = 1,
	        .arg_modes = { TDM_W },
	        .nscalars = 1,
	        .scalar_types = { TDM_SCALAR_F32 },
	        .check = check_fill,
	        .impl = { [TDM_DEV_CPU] = cpu_fill },
	},
	{
	        /* y = alpha * x + y, with x = a0, y = a1, alpha = s0. */
	        .name = "axpy",
	        .nargs = 2,
	        .arg_modes = { TDM_R, TDM_RW },
	        .nscalars = 1,
	        .scalar_types = { TDM_SCALAR_F32 },
	        .check = check_axpy,
	        .impl = { [TDM_DEV_CPU] = cpu_axpy },
	},
	{
	        /* C = alpha * A * B + beta * C, row-major; A = a0 (MxK), B = a1
	         * (KxN), C = a2 (MxN); s = M, N, K, alpha, beta. */
	        .name = "sgemm",
	        .nargs = 3,
	        .arg_modes = { TDM_R, TDM_R, TDM_RW },
	        .nscalars = 5,
	        .scalar_types = { TDM_SCALAR_I64, TDM_SCALAR_I64, TDM_SCALAR_I64, TDM_SCALAR_F32,
	                          TDM_SCALAR_F32 },
	        .check = check_sgemm,
	        .impl = { [TDM_DEV_CPU] = cpu_sgemm },
	},
};

size_t kernel_count(void)
{
	return sizeof(kernel_table) / sizeof(kernel_table[0]);
}

const struct kernel_def *kernel_by_id(uint32_t id)
{
	return id < kernel_count() ? &kernel_table[id] : NULL;
}

int kernel_lookup(const char *name)
{
	for (size_t i = 0; i < kernel_count(); i++)
		if (strcmp(kernel_table[i].name, name) == 0)
			return (int)i;
	return -TDM_EKERNEL;
}
