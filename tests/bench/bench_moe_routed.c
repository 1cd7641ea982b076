/* One MoE expert on each accelerator (OpenCL devices, CUDA through its
 * plugin), launched as the engine launches it: unguarded (the call carries
 * no token list: the kernel looks at every token's routing) and guarded (the
 * call carries the tokens the router sent to the expert, call.routed:
 * CUDA then gathers those rows and runs its GEMMs over them only, OpenCL
 * runs its kernels over them only). docs/kernels.md, "The routed tokens go
 * with the launch".
 *
 *   BENCH moe_expert_us <us> us device=D mode=dense|routed n=N m=M dm=DM dff=DFF
 *       the median, over REPS launches after one warm-up, of launch_async
 *       to event_wait (the inputs already on the device);
 *   BENCH moe_expert_routed_speedup <x> x device=D n=N m=M
 *       dense / routed.
 *
 * The shape is a DeepSeek-V2-Lite expert (FFN 1408, top-6 of 64; d 1024,
 * half of its 2048, to keep PoCL short) over a step of N tokens, of which M
 * chose the expert. On OpenCL the two should be alike (its unguarded
 * work-items of unrouted tokens return at once); on CUDA the dense launch
 * runs all N rows through cuBLAS. Without an accelerator it says so and
 * reports nothing. The figures move with whatever else runs on the
 * machine. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "bench_accel.h"
#include "bench_util.h"
#include "tandem.h"

#define N 256
#define DM 1024
#define DFF 1408
#define K 6
#define NE 64
#define EXPERT 5
#define REPS 5

/* Token t chooses experts (7 t + 11 j) % NE, j < K: K distinct experts. */
static void route(int32_t *ids, float *w)
{
	for (int t = 0; t < N; t++)
		for (int j = 0; j < K; j++) {
			ids[t * K + j] = (7 * t + 11 * j) % NE;
			w[t * K + j] = 1.0f / K;
		}
}

static void fill(float *a, size_t n, uint64_t *seed, float scale)
{
	for (size_t i = 0; i < n; i++) {
		*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
		a[i] = scale * ((float)(*seed >> 40) / (float)(1u << 24) - 0.5f);
	}
}

/* The median of REPS timed launches (after one warm-up) of call on d. */
static double time_launch(const struct backend_device *d, const struct kernel_def *k,
                          const struct tdm_kernel_call *call)
{
	uint64_t ns[REPS];
	for (int r = -1; r < REPS; r++) {
		struct backend_event *ev;
		uint64_t t0 = bench_now_ns();
		if (d->ops->launch_async(d, k, call, NULL, 0, &ev) != 0 ||
		    d->ops->event_wait(d, ev) != 0) {
			fprintf(stderr, "%s: moe_expert failed\n", d->name);
			exit(1);
		}
		uint64_t t1 = bench_now_ns();
		d->ops->event_release(d, ev);
		if (r >= 0)
			ns[r] = t1 - t0;
	}
	return (double)bench_percentile(ns, REPS, 50);
}

static void bench_device(const struct backend_device *d, void *const *host, const uint64_t *bytes,
                         const uint32_t *tok, uint32_t m)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_MOE_EXPERT);
	struct tdm_kernel_call call = { .nargs = 7 };
	if (!d->ops->supports(d, k)) {
		printf("%s: no moe_expert\n", d->name);
		return;
	}
	for (int i = 0; i < 7; i++) {
		struct backend_event *ev;
		if (d->ops->mem_alloc(d, bytes[i], &call.mem[i]) != 0 ||
		    d->ops->copy_h2d(d, call.mem[i], 0, host[i], bytes[i], NULL, &ev) != 0 ||
		    d->ops->event_wait(d, ev) != 0) {
			fprintf(stderr, "%s: could not stage the inputs\n", d->name);
			exit(1);
		}
		d->ops->event_release(d, ev);
		call.len[i] = bytes[i];
	}
	int64_t s[] = { N, DM, DFF, K, EXPERT };
	for (int i = 0; i < 5; i++)
		call.s[i].i64 = s[i];

	double dense = time_launch(d, k, &call);
	call.routed = tok;
	call.nrouted = m;
	double routed = time_launch(d, k, &call);

	char keys[192];
	snprintf(keys, sizeof(keys), "device=%.32s mode=dense n=%d m=%u dm=%d dff=%d", d->name, N,
	         m, DM, DFF);
	bench_report("moe_expert_us", dense / 1e3, "us", keys);
	snprintf(keys, sizeof(keys), "device=%.32s mode=routed n=%d m=%u dm=%d dff=%d", d->name, N,
	         m, DM, DFF);
	bench_report("moe_expert_us", routed / 1e3, "us", keys);
	snprintf(keys, sizeof(keys), "device=%.32s n=%d m=%u", d->name, N, m);
	bench_report("moe_expert_routed_speedup", dense / routed, "x", keys);
	for (int i = 0; i < 7; i++)
		d->ops->mem_free(d, call.mem[i]);
}

int main(void)
{
	struct bench_accels a;
	if (bench_accels_open(&a, "bench_moe_routed") != 0)
		return 1;

	const uint64_t bytes[7] = { N * DM * 4, DM * DFF * 4, DM * DFF * 4, DFF * DM * 4,
		                    N * K * 4,  N * K * 4,    N * DM * 4 };
	void *host[7];
	for (int i = 0; i < 7; i++)
		if (!(host[i] = malloc(bytes[i])))
			return 1;
	uint64_t seed = 0x6d6f65;
	fill(host[0], N * DM, &seed, 2.0f);
	for (int i = 1; i < 4; i++)
		fill(host[i], DM * DFF, &seed, 0.05f);
	route(host[4], host[5]);
	memset(host[6], 0, bytes[6]);
	/* The tokens that chose the expert, ascending, as the engine lists them. */
	uint32_t tok[N], m = 0;
	const int32_t *ids = host[4];
	for (uint32_t t = 0; t < N; t++)
		for (int j = 0; j < K; j++)
			if (ids[t * K + j] == EXPERT) {
				tok[m++] = t;
				break;
			}

	for (size_t i = 0; i < a.n; i++)
		bench_device(&a.devs[i], host, bytes, tok, m);
	bench_accels_close(&a);
	for (int i = 0; i < 7; i++)
		free(host[i]);
	return 0;
}
