/* Host <-> device copies on every accelerator the backends find, measured at
 * the backend seam (backends/backend.h), without the daemon:
 *
 *   BENCH copy_latency_us <us> us device=<name> dir=h2d|d2h
 *       median over LAT_REPS of one 4-byte copy followed by event_wait;
 *   BENCH copy_gbps <GB/s> GB/s device=<name> dir=h2d|d2h
 *       BW_BYTES / median time of BW_REPS copies of BW_BYTES (after one
 *       warm-up copy), GB = 1e9 bytes.
 *
 * Host memory is pinned through host_register when the backend has it (a
 * line says whether it was). Devices come from backend_opencl and from the
 * CUDA plugin; a backend that finds nothing says why in one line and is
 * skipped. No accelerator at all is no failure: the bench exits 0.
 */
#include <hwloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "bench_accel.h"
#include "bench_util.h"
#include "tandem.h"

#define LAT_BYTES 4
#define LAT_WARMUP 10
#define LAT_REPS 200
#define BW_BYTES (64ull << 20)
#define BW_REPS 5

enum dir { H2D, D2H };

static const char *const dir_name[] = { "h2d", "d2h" };

/* What one device needs for the copies. */
struct target {
	const struct backend_device *d;
	void *mem; /* BW_BYTES of device memory */
	void *host; /* BW_BYTES of host memory, page-aligned */
	bool pinned;
};

/* One copy, waited for; *ns receives its time. 0 or -TDM_E*. */
static int timed_copy(const struct target *t, enum dir dir, uint64_t bytes, uint64_t *ns)
{
	const struct backend_ops *ops = t->d->ops;
	struct backend_event *ev = NULL;
	uint64_t t0 = bench_now_ns();
	int err;

	if (dir == H2D)
		err = ops->copy_h2d(t->d, t->mem, 0, t->host, bytes, NULL, &ev);
	else
		err = ops->copy_d2h(t->d, t->host, t->mem, 0, bytes, NULL, &ev);
	if (!err)
		err = ops->event_wait(t->d, ev);
	*ns = bench_now_ns() - t0;
	if (ev)
		ops->event_release(t->d, ev);
	return err;
}

static void report(const char *name, double value, const char *unit, const struct target *t,
                   enum dir dir)
{
	char keys[96];

	snprintf(keys, sizeof(keys), "device=%s dir=%s", t->d->name, dir_name[dir]);
	bench_report(name, value, unit, keys);
}

static int measure_latency(const struct target *t, enum dir dir)
{
	uint64_t ns[LAT_REPS];

	for (int i = 0; i < LAT_WARMUP + LAT_REPS; i++) {
		int err = timed_copy(t, dir, LAT_BYTES, &ns[i < LAT_WARMUP ? 0 : i - LAT_WARMUP]);
		if (err)
			return err;
	}
	report("copy_latency_us", (double)bench_percentile(ns, LAT_REPS, 50) / 1e3, "us", t, dir);
	return 0;
}

static int measure_bandwidth(const struct target *t, enum dir dir)
{
	double s[BW_REPS];
	uint64_t ns;
	int err = timed_copy(t, dir, BW_BYTES, &ns); /* warm-up */

	for (int i = 0; !err && i < BW_REPS; i++) {
		err = timed_copy(t, dir, BW_BYTES, &ns);
		s[i] = (double)ns / 1e9;
	}
	if (err)
		return err;
	report("copy_gbps", (double)BW_BYTES / bench_median(s, BW_REPS) / 1e9, "GB/s", t, dir);
	return 0;
}

static int setup(struct target *t, void *topo)
{
	const struct backend_device *d = t->d;
	int err = 0;

	/* Bind as the device's worker would (near the device, if it says). */
	if (d->ops->worker_init && (err = d->ops->worker_init(d, topo)))
		return err;
	if ((err = d->ops->mem_alloc(d, BW_BYTES, &t->mem))) {
		t->mem = NULL;
		return err;
	}
	t->host = aligned_alloc(4096, BW_BYTES);
	if (!t->host)
		return -TDM_ENOMEM;
	memset(t->host, 0x5a, BW_BYTES); /* fault every page in before timing */
	if (d->ops->host_register)
		t->pinned = d->ops->host_register(d, t->host, BW_BYTES) == 0;
	return 0;
}

static void teardown(struct target *t)
{
	const struct backend_device *d = t->d;

	if (t->pinned)
		d->ops->host_unregister(d, t->host);
	if (t->mem)
		d->ops->mem_free(d, t->mem);
	free(t->host);
}

/* All four figures of one device; 0, or -TDM_E* after saying why. */
static int bench_device(const struct backend_device *d, void *topo)
{
	struct target t = { .d = d };
	int err;

	if (!d->ops->copy_h2d || !d->ops->copy_d2h || !d->ops->mem_alloc) {
		printf("bench_devices: %s (%s): no device memory, skipped\n", d->name, d->model);
		return 0;
	}
	err = setup(&t, topo);
	if (!err) {
		printf("bench_devices: %s (%s, %s): host memory %s\n", d->name, d->ops->name,
		       d->model,
		       t.pinned                ? "pinned through host_register"
		       : d->ops->host_register ? "not pinned (host_register failed)"
		                               : "not pinned (the backend has no host_register)");
		fflush(stdout);
		for (int dir = H2D; !err && dir <= D2H; dir++)
			err = measure_latency(&t, dir);
		for (int dir = H2D; !err && dir <= D2H; dir++)
			err = measure_bandwidth(&t, dir);
	}
	if (err)
		fprintf(stderr, "bench_devices: %s: %s\n", d->name, tdm_strerror(err));
	teardown(&t);
	return err;
}

/* Probes one backend into devs[*n...]. Its note (a device skipped, or why
 * there is none) is printed as it comes; it names the backend itself. */
int main(void)
{
	struct bench_accels a;
	int failed = 0;

	if (bench_accels_open(&a, "bench_devices") != 0)
		return 1;
	for (size_t i = 0; i < a.n; i++)
		failed |= bench_device(&a.devs[i], a.topo) != 0;
	bench_accels_close(&a);
	return failed;
}
