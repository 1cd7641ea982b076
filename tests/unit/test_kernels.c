/* Built-in kernels: CPU results against plain reference loops, and the
 * intake-time argument checks. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "daemon/clock.h"
#include "tandem.h"

static const struct kernel_def *k(const char *name)
{
	int id = kernel_lookup(name);
	assert_true(id >= 0);
	return kernel_by_id((uint32_t)id);
}

static void test_lookup(void **state)
{
	(void)state;
	assert_int_equal(kernel_lookup("no-such-kernel"), -TDM_EKERNEL);
	assert_null(kernel_by_id((uint32_t)kernel_count()));
	for (size_t i = 0; i < kernel_count(); i++) {
		const struct kernel_def *d = kernel_by_id((uint32_t)i);
		assert_int_equal(kernel_lookup(d->name), (int)i);
		assert_non_null(d->impl[TDM_DEV_CPU]);
		assert_non_null(d->check);
	}
}

static void test_sgemm_matches_reference(void **state)
{
	(void)state;
	enum { M = 37, N = 29, K = 41 };
	float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N);
	float *c = malloc(sizeof(float) * M * N);
	for (int i = 0; i < M * K; i++)
		a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
	for (int i = 0; i < K * N; i++)
		b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
	for (int i = 0; i < M * N; i++)
		c[i] = 1.0f;
	struct tdm_kernel_call call = { .nargs = 3,
		                        .ptr = { a, b, c },
		                        .len = { sizeof(float) * M * K, sizeof(float) * K * N,
		                                 sizeof(float) * M * N } };
	call.s[0].i64 = M;
	call.s[1].i64 = N;
	call.s[2].i64 = K;
	call.s[3].f32 = 2.0f;
	call.s[4].f32 = 0.5f;
	assert_int_equal(k("sgemm")->check(&call), 0);
	assert_int_equal(k("sgemm")->impl[TDM_DEV_CPU](&call), 0);
	for (int i = 0; i < M; i++) {
		for (int j = 0; j < N; j++) {
			double s = 0;
			for (int l = 0; l < K; l++)
				s += (double)a[i * K + l] * b[l * N + j];
			assert_true(fabs(c[i * N + j] - (2 * s + 0.5)) < 1e-4);
		}
	}
	/* C too small for M x N: refused before anything runs. */
	call.len[2] = sizeof(float) * M * N - 4;
	assert_int_equal(k("sgemm")->check(&call), -TDM_ERANGE);
	call.len[2] = sizeof(float) * M * N;
	call.s[0].i64 = 0;
	assert_int_equal(k("sgemm")->check(&call), -TDM_EARITY);
	free(a);
	free(b);
	free(c);
}

static void test_axpy_fill(void **state)
{
	(void)state;
	float x[100], y[100];
	struct tdm_kernel_call fill = { .nargs = 1, .ptr = { x }, .len = { sizeof(x) } };
	fill.s[0].f32 = 3.0f;
	assert_int_equal(k("fill")->check(&fill), 0);
	k("fill")->impl[TDM_DEV_CPU](&fill);
	for (int i = 0; i < 100; i++) {
		assert_true(x[i] == 3.0f);
		y[i] = (float)i;
	}
	struct tdm_kernel_call ax = { .nargs = 2,
		                      .ptr = { x, y },
		                      .len = { sizeof(x), sizeof(y) } };
	ax.s[0].f32 = -2.0f;
	assert_int_equal(k("axpy")->check(&ax), 0);
	k("axpy")->impl[TDM_DEV_CPU](&ax);
	for (int i = 0; i < 100; i++)
		assert_true(y[i] == (float)i - 6.0f);
	ax.len[1] = sizeof(y) - 4;
	assert_int_equal(k("axpy")->check(&ax), -TDM_ERANGE);
	fill.len[0] = 7;
	assert_int_equal(k("fill")->check(&fill), -TDM_ERANGE);
}

static void test_spin_takes_its_time(void **state)
{
	(void)state;
	struct tdm_kernel_call call = { 0 };
	call.s[0].i64 = 2000;
	assert_int_equal(k("spin")->check(&call), 0);
	uint64_t t0 = clock_monotonic_ns();
	k("spin")->impl[TDM_DEV_CPU](&call);
	assert_true(clock_monotonic_ns() - t0 >= 2000000);
	call.s[0].i64 = -1;
	assert_int_equal(k("spin")->check(&call), -TDM_EARITY);
	call.s[0].i64 = 20000000;
	assert_int_equal(k("spin")->check(&call), -TDM_EARITY);
}

int main(void)
{
	kernels_cpu_init();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_sgemm_matches_reference),
		cmocka_unit_test(test_axpy_fill),
		cmocka_unit_test(test_spin_takes_its_time),
	};
	return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
