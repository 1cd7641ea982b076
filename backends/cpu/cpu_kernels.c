/* CPU implementations of the built-in kernels. */
#include <cblas.h>
#include <time.h>

#include "backends/kernels.h"

void kernels_cpu_init(void)
{
	/* The daemon runs one worker per core; OpenBLAS must not add its own. */
	openblas_set_num_threads(1);
}

int cpu_noop(const struct tdm_kernel_call *call)
{
	(void)call;
	return 0;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int cpu_spin(const struct tdm_kernel_call *call)
{
	uint64_t end = mono_ns() + (uint64_t)call->s[0].i64 * 1000u;
	while (mono_ns() < end)
		__builtin_ia32_pause();
	return 0;
}

int cpu_fill(const struct tdm_kernel_call *call)
{
	float *a = call->ptr[0];
	float v = call->s[0].f32;
	for (uint64_t i = 0; i < call->len[0] / sizeof(float); i++)
		a[i] = v;
	return 0;
}

int cpu_axpy(const struct tdm_kernel_call *call)
{
	const float *x = call->ptr[0];
	float *y = call->ptr[1];
	uint64_t n = call->len[0] / sizeof(float);
	cblas_saxpy((blasint)n, call->s[0].f32, x, 1, y, 1);
	return 0;
}

int cpu_sgemm(const struct tdm_kernel_call *call)
{
	blasint m = (blasint)call->s[0].i64, n = (blasint)call->s[1].i64,
	        k = (blasint)call->s[2].i64;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, call->s[3].f32,
	            call->ptr[0], k, call->ptr[1], n, call->s[4].f32, call->ptr[2], n);
	return 0;
}
