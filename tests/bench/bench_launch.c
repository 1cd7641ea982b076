/* Does an accelerator's launch return before its kernel ends?
 *
 * The engine's accelerator worker stages up to pipeline_depth tasks with
 * launch_async and then waits for the oldest; a launch that computes on the
 * calling thread holds the worker for the whole kernel, so it can neither
 * complete the tasks before it nor stage the next (CLBlast's trsm did: it
 * waits for its own inner GEMMs). The simulator assumes launches that only
 * enqueue. For each accelerator and each tile kernel at nb = NB, after one
 * warm-up run (compiles), RUNS runs of: launch_async, then event_wait.
 *
 *   BENCH launch_return_us <us> us kernel=K device=D nb=NB   (median)
 *   BENCH launch_kernel_us <us> us kernel=K device=D nb=NB   (median, launch to end)
 *   BENCH launch_blocking_ratio <r> ratio kernel=K device=D  (return / end:
 *         near 0 for a launch that only enqueues, near 1 for one that waits)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/kernels.h"
#include "bench_accel.h"
#include "bench_util.h"
#include "tandem.h"

#define NB 384
#define RUNS 7
#define MAX_TILES 3

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double median_us(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return (double)v[n / 2] / 1e3;
}

/* The tile kernels: sgemm (C = A.B), strsm, ssyrk, sgemm_nt; how many nb x
 * nb tiles each takes. */
static const struct {
	enum kernel_id id;
	unsigned ntiles;
} kernels[] = {
	{ KERNEL_SGEMM, 3 },
	{ KERNEL_STRSM, 2 },
	{ KERNEL_SSYRK, 2 },
	{ KERNEL_SGEMM_NT, 3 },
};

static void describe(enum kernel_id id, struct tdm_kernel_call *c)
{
	memset(c, 0, sizeof(*c));
	if (id == KERNEL_SGEMM) {
		c->nargs = 3;
		c->s[0].i64 = c->s[1].i64 = c->s[2].i64 = NB;
		c->s[3].f32 = 1.0f;
		c->s[4].f32 = 0.0f;
	} else {
		c->nargs = id == KERNEL_SGEMM_NT ? 3 : 2;
		c->s[0].i64 = NB;
	}
}

/* Tiles with harmless contents: for strsm, a0 is a lower triangle with a
 * dominant diagonal. */
static void fill(float *t, unsigned which, enum kernel_id id)
{
	for (size_t i = 0; i < NB; i++)
		for (size_t j = 0; j < NB; j++)
			t[i * NB + j] = id == KERNEL_STRSM && which == 0
			                        ? (j < i    ? 0.01f
			                           : j == i ? 2.0f
			                                    : 0.0f)
			                        : (float)((i * 7 + j * 3 + which) % 13) * 0.01f;
}

static int measure(const struct backend_device *d, enum kernel_id id, unsigned ntiles)
{
	const struct kernel_def *kd = kernel_by_id(id);
	size_t bytes = (size_t)NB * NB * sizeof(float);
	float *host[MAX_TILES] = { 0 };
	void *mem[MAX_TILES] = { 0 };
	struct tdm_kernel_call call;
	uint64_t ret[RUNS], end[RUNS];
	int err = 0;

	describe(id, &call);
	for (unsigned i = 0; i < ntiles && !err; i++) {
		struct backend_event *ev = NULL;
		host[i] = malloc(bytes);
		if (!host[i]) {
			err = -TDM_ENOMEM;
			break;
		}
		fill(host[i], i, id);
		err = d->ops->mem_alloc(d, bytes, &mem[i]);
		if (!err)
			err = d->ops->copy_h2d(d, mem[i], 0, host[i], bytes, NULL, &ev);
		if (!err) {
			err = d->ops->event_wait(d, ev);
			d->ops->event_release(d, ev);
		}
		call.ptr[i] = host[i];
		call.mem[i] = mem[i];
		call.len[i] = bytes;
	}
	for (int r = -1; r < RUNS && !err; r++) { /* run -1: the warm-up */
		struct backend_event *ev = NULL;
		uint64_t t0 = bench_now_ns();
		err = d->ops->launch_async(d, kd, &call, NULL, 0, &ev);
		uint64_t t1 = bench_now_ns();
		if (err)
			break;
		err = d->ops->event_wait(d, ev);
		uint64_t t2 = bench_now_ns();
		d->ops->event_release(d, ev);
		if (r >= 0) {
			ret[r] = t1 - t0;
			end[r] = t2 - t0;
		}
	}
	if (!err) {
		char keys[128];
		double ret_us = median_us(ret, RUNS), end_us = median_us(end, RUNS);
		snprintf(keys, sizeof(keys), "kernel=%s device=%s nb=%d", kd->name, d->name, NB);
		bench_report("launch_return_us", ret_us, "us", keys);
		bench_report("launch_kernel_us", end_us, "us", keys);
		snprintf(keys, sizeof(keys), "kernel=%s device=%s", kd->name, d->name);
		bench_report("launch_blocking_ratio", end_us > 0 ? ret_us / end_us : 0, "ratio",
		             keys);
	} else {
		printf("bench_launch: %s on %s: %s\n", kd->name, d->name, tdm_strerror(err));
	}
	for (unsigned i = 0; i < ntiles; i++) {
		if (mem[i])
			d->ops->mem_free(d, mem[i]);
		free(host[i]);
	}
	return err;
}

int main(void)
{
	struct bench_accels a;
	int status = 0;

	if (bench_accels_open(&a, "bench_launch"))
		return 1;
	for (size_t i = 0; i < a.n; i++)
		for (size_t k = 0; k < sizeof(kernels) / sizeof(kernels[0]); k++)
			if (measure(&a.devs[i], kernels[k].id, kernels[k].ntiles))
				status = 1;
	bench_accels_close(&a);
	return status;
}
