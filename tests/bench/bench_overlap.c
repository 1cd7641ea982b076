/* Overlap of transfers and compute on each accelerator.
 *
 * A stream of N independent sgemm tasks, each with a fresh input A_i (and
 * its own output C_i) against weights B that stay on the device, goes
 * through the engine exactly as the daemon runs it (residency, prefetch up
 * to the pipeline depth, copy-in and compute queues). First the same copies
 * and kernels are timed at the backend level, all copies back to back,
 * then all kernels back to back (each phase at its own full speed):
 *   serial = transfers + compute      (no overlap at all)
 *   ideal  = max(transfers, compute)  (perfect overlap)
 * and the engine's makespan (submission to the last task's end; the final
 * write-back of the outputs is reported apart) is compared with both:
 *   BENCH overlap_of_ideal   ideal / makespan   (1.0 = perfect overlap)
 *   BENCH overlap_of_serial  makespan / serial  (lower is better)
 * The GEMM width N is chosen so that one task's compute takes about as long
 * as its copies on that device, where overlap matters most.
 *
 * Then a read-back while the device computes: a core's task whose input an
 * accelerator wrote has the residency copy it back and waits, often while
 * the accelerator already runs its next kernel. One tile's read-back (576
 * KiB, a 384 x 384 Cholesky tile) is timed with the device idle, then 1 ms
 * into a GEMM of at least 20 ms (or of width 65536, the widest tried),
 * READBACK_REPS times each (medians):
 *   BENCH readback_idle_us   <us> us
 *   BENCH readback_busy_us   <us> us kernel_us=<the GEMM's time>
 *   BENCH readback_busy_of_kernel  busy read-back / the GEMM's time
 * (about 0: the copy overlaps the kernel; about 1: it waits for it). */
#include <hwloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_accel.h"
#include "bench_util.h"
#include "engine/engine.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "tandem.h"

#define NTASKS 24
/* GEMM height and depth: the fresh input A is M x K. GPUs get tasks of a
 * millisecond or so, so that per-task overheads do not hide the overlap;
 * CPU-side OpenCL devices (PoCL) smaller ones, to keep the run short. */
static int64_t GEMM_M = 256, GEMM_K = 2048;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct stream {
	const struct backend_device *dev;
	int64_t n; /* GEMM width */
	float *a[NTASKS], *c[NTASKS], *b;
	uint64_t a_bytes, b_bytes, c_bytes;
};

static int sync_copy_in(const struct backend_device *d, void *mem, const void *host, uint64_t n)
{
	struct backend_event *ev;
	int err = d->ops->copy_h2d(d, mem, 0, host, n, NULL, &ev);
	if (!err) {
		err = d->ops->event_wait(d, ev);
		d->ops->event_release(d, ev);
	}
	return err;
}

static void set_gemm_call(struct tdm_kernel_call *c, int64_t n, void *const mem[3],
                          const uint64_t len[3])
{
	memset(c, 0, sizeof(*c));
	c->nargs = 3;
	for (int i = 0; i < 3; i++) {
		c->mem[i] = mem[i];
		c->len[i] = len[i];
	}
	c->s[0].i64 = GEMM_M;
	c->s[1].i64 = n;
	c->s[2].i64 = GEMM_K;
	c->s[3].f32 = 1.0f;
	c->s[4].f32 = 0.0f;
}

/* Times one GEMM of width n with everything already on the device. */
static int time_gemm(const struct backend_device *d, int64_t n, int reps, uint64_t *ns)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_SGEMM);
	uint64_t len[3] = { (uint64_t)GEMM_M * GEMM_K * 4, (uint64_t)GEMM_K * n * 4,
		            (uint64_t)GEMM_M * n * 4 };
	void *mem[3] = { 0 };
	struct tdm_kernel_call call;
	int err = 0;

	for (int i = 0; i < 3 && !err; i++)
		err = d->ops->mem_alloc(d, len[i], &mem[i]);
	set_gemm_call(&call, n, mem, len);
	*ns = UINT64_MAX;
	for (int r = 0; r < reps + 1 && !err; r++) {
		struct backend_event *ev;
		uint64_t t0 = now_ns();
		err = d->ops->launch_async(d, k, &call, NULL, 0, &ev);
		if (err)
			break;
		err = d->ops->event_wait(d, ev);
		d->ops->event_release(d, ev);
		uint64_t t = now_ns() - t0;
		if (r > 0 && t < *ns) /* the first run warms up (program, handles) */
			*ns = t;
	}
	for (int i = 0; i < 3; i++)
		if (mem[i])
			d->ops->mem_free(d, mem[i]);
	return err;
}

/* Waits for the last event of a batch and drops them all. */
static int wait_batch(const struct backend_device *d, struct backend_event **ev, int n)
{
	int err = n ? d->ops->event_wait(d, ev[n - 1]) : 0;
	for (int i = 0; i < n; i++)
		d->ops->event_release(d, ev[i]);
	return err;
}

/* The baseline: every task's copies back to back on the copy queue, then
 * every task's kernel back to back on the compute queue. Each phase runs at
 * its own full speed; the two never overlap. */
static int serial_times(struct stream *s, uint64_t *copy_ns, uint64_t *compute_ns)
{
	const struct backend_device *d = s->dev;
	uint64_t len[3] = { s->a_bytes, s->b_bytes, s->c_bytes };
	void *mem[3] = { 0 };
	struct backend_event *ev[2 * NTASKS];
	struct tdm_kernel_call call;
	int err = 0, n = 0;

	for (int i = 0; i < 3 && !err; i++)
		err = d->ops->mem_alloc(d, len[i], &mem[i]);
	if (!err)
		err = sync_copy_in(d, mem[1], s->b, s->b_bytes);
	set_gemm_call(&call, s->n, mem, len);
	uint64_t t0 = now_ns();
	for (int i = 0; i < NTASKS && !err; i++) {
		err = d->ops->copy_h2d(d, mem[0], 0, s->a[i], s->a_bytes, NULL, &ev[n]);
		n += !err;
		if (!err)
			err = d->ops->copy_h2d(d, mem[2], 0, s->c[i], s->c_bytes, NULL, &ev[n]);
		n += !err;
	}
	err = err ? err : wait_batch(d, ev, n);
	uint64_t t1 = now_ns();
	n = 0;
	for (int i = 0; i < NTASKS && !err; i++) {
		err = d->ops->launch_async(d, kernel_by_id(KERNEL_SGEMM), &call, NULL, 0, &ev[n]);
		n += !err;
	}
	err = err ? err : wait_batch(d, ev, n);
	*copy_ns = t1 - t0;
	*compute_ns = now_ns() - t1;
	for (int i = 0; i < 3; i++)
		if (mem[i])
			d->ops->mem_free(d, mem[i]);
	return err;
}

/* Picks the GEMM width whose compute time is closest to its copy time. */
static int64_t balanced_width(const struct backend_device *d)
{
	static const int64_t widths[] = { 64, 128, 256, 512, 1024, 2048, 4096, 8192 };
	int64_t best = widths[0];
	double best_gap = 1e30;
	float *host = calloc((size_t)GEMM_M * GEMM_K + (size_t)GEMM_M * 8192, sizeof(float));
	void *mem = NULL;
	uint64_t bytes = ((uint64_t)GEMM_M * GEMM_K + (uint64_t)GEMM_M * 8192) * 4;

	if (!host || d->ops->mem_alloc(d, bytes, &mem) != 0) {
		free(host);
		return best;
	}
	if (d->ops->host_register)
		d->ops->host_register(d, host, bytes);
	for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++) {
		int64_t n = widths[i];
		uint64_t in = ((uint64_t)GEMM_M * GEMM_K + (uint64_t)GEMM_M * n) * 4,
		         copy = UINT64_MAX;
		uint64_t gemm;
		for (int r = 0; r < 3; r++) {
			uint64_t t0 = now_ns();
			if (sync_copy_in(d, mem, host, in) != 0)
				break;
			uint64_t t = now_ns() - t0;
			copy = t < copy ? t : copy;
		}
		if (time_gemm(d, n, 2, &gemm) != 0)
			break;
		double gap =
		        gemm > copy ? (double)gemm / (double)copy : (double)copy / (double)gemm;
		if (gap < best_gap) {
			best_gap = gap;
			best = n;
		}
		if (gemm > copy)
			break; /* wider only makes compute longer */
	}
	d->ops->mem_free(d, mem);
	if (d->ops->host_register)
		d->ops->host_unregister(d, host);
	free(host);
	return best;
}

struct done_flag {
	_Atomic int done;
};

static void on_done(void *ctx, struct engine_graph *g)
{
	(void)g;
	atomic_store(&((struct done_flag *)ctx)->done, 1);
}

/* The stream through the engine; returns the makespan to the last task's end. */
static int engine_makespan(struct stream *s, uint32_t depth, uint64_t *makespan,
                           uint64_t *with_writeback)
{
	struct backend_device dev = *s->dev;
	struct residency res;
	struct engine *e;
	struct done_flag flag = { 0 };
	struct engine_flow flow = { .id = 1 };
	struct res_data da[NTASKS], db, dc[NTASKS];
	int err;

	residency_init(&res);
	int node = residency_add_node(&res, s->dev, 0);
	if (node < 0)
		return node;
	dev.node = (uint16_t)node;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_eager,
		                    .devices = &dev,
		                    .ndevices = 1,
		                    .hooks = { .graph_done = on_done, .ctx = &flag },
		                    .start_workers = true,
		                    .spin_us = 50,
		                    .res = &res,
		                    .pipeline_depth = depth };
	err = engine_create(&ep, &e);
	if (err)
		return err;
	engine_flow_add(e, &flow);
	residency_data_init(&res, &db, s->b, s->b_bytes, 0, true);
	for (int i = 0; i < NTASKS; i++) {
		residency_data_init(&res, &da[i], s->a[i], s->a_bytes, (uint32_t)i + 1, false);
		residency_data_init(&res, &dc[i], s->c[i], s->c_bytes, (uint32_t)(100 + i), false);
	}

	/* Two graphs: one task that brings B in, then the stream. */
	for (int round = 0; round < 2; round++) {
		uint32_t n = round == 0 ? 1 : NTASKS;
		struct engine_graph *g = calloc(1, sizeof(*g));
		g->flow = &flow;
		g->ntasks = n;
		g->tasks = calloc(n, sizeof(*g->tasks));
		g->succ_off = calloc(n + 1, sizeof(uint32_t));
		g->succ = calloc(1, sizeof(uint32_t));
		for (uint32_t i = 0; i < n; i++) {
			struct engine_task *t = &g->tasks[i];
			uint64_t len[3] = { s->a_bytes, s->b_bytes, s->c_bytes };
			void *none[3] = { 0 };
			t->graph = g;
			t->index = i;
			t->kernel = kernel_by_id(KERNEL_SGEMM);
			set_gemm_call(&t->call, s->n, none, len);
			t->call.ptr[0] = s->a[i];
			t->call.ptr[1] = s->b;
			t->call.ptr[2] = s->c[i];
			t->data[0] = &da[i];
			t->data[1] = &db;
			t->data[2] = &dc[i];
		}
		atomic_store(&flag.done, 0);
		uint64_t t0 = now_ns();
		engine_submit(e, g);
		while (!atomic_load(&flag.done))
			sched_yield();
		uint64_t t_done = now_ns(), last = 0;
		for (uint32_t i = 0; i < n; i++)
			last = g->tasks[i].end_ns > last ? g->tasks[i].end_ns : last;
		err = atomic_load(&g->status);
		*makespan = last - g->submit_ns;
		*with_writeback = t_done - t0;
		engine_graph_free_arrays(g);
		free(g);
		if (err)
			break;
	}
	engine_flow_gone(e, &flow);
	engine_destroy(e);
	for (int i = 0; i < NTASKS; i++) {
		residency_data_fini(&res, &da[i]);
		residency_data_fini(&res, &dc[i]);
	}
	residency_data_fini(&res, &db);
	residency_fini(&res);
	return err;
}

#define READBACK_BYTES 589824
#define READBACK_REPS 5

/* One read-back of bytes from mem into host, waited for; its time in *ns. */
static int time_read_back(const struct backend_device *d, void *host, void *mem, uint64_t bytes,
                          uint64_t *ns)
{
	struct backend_event *ev;
	uint64_t t0 = now_ns();
	int err = d->ops->copy_d2h(d, host, mem, 0, bytes, NULL, &ev);
	if (!err) {
		err = d->ops->event_wait(d, ev);
		d->ops->event_release(d, ev);
	}
	*ns = now_ns() - t0;
	return err;
}

static void read_back_while_busy(const struct backend_device *d, int64_t n0)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_SGEMM);
	uint64_t idle[READBACK_REPS], busy[READBACK_REPS], kern[READBACK_REPS];
	void *tile = NULL, *mem[3] = { 0 };
	float *host = calloc(READBACK_BYTES / 4, sizeof(float));
	uint64_t gemm_ns = 0;
	int64_t n = n0;
	int err = host ? d->ops->mem_alloc(d, READBACK_BYTES, &tile) : -TDM_ENOMEM;

	/* Pinned where the backend can, as residency pins the buffers it copies. */
	bool pinned = !err && d->ops->host_register &&
	              d->ops->host_register(d, host, READBACK_BYTES) == 0;
	if (!err)
		err = sync_copy_in(d, tile, host, READBACK_BYTES);
	/* A GEMM of at least 20 ms, or the widest tried (time_gemm warms the
	 * kernel up). */
	while (!err && !gemm_ns) {
		uint64_t ns;
		err = time_gemm(d, n, 1, &ns);
		if (!err && (ns >= 20000000 || n >= 65536))
			gemm_ns = ns;
		else
			n *= 2;
	}
	uint64_t len[3] = { (uint64_t)GEMM_M * GEMM_K * 4, (uint64_t)GEMM_K * (uint64_t)n * 4,
		            (uint64_t)GEMM_M * (uint64_t)n * 4 };
	for (int i = 0; i < 3 && !err; i++)
		err = d->ops->mem_alloc(d, len[i], &mem[i]);
	struct tdm_kernel_call call;
	set_gemm_call(&call, n, mem, len);
	for (int r = 0; r < READBACK_REPS && !err; r++) {
		struct backend_event *ev;
		err = time_read_back(d, host, tile, READBACK_BYTES, &idle[r]);
		uint64_t t0 = now_ns();
		if (!err)
			err = d->ops->launch_async(d, k, &call, NULL, 0, &ev);
		if (err)
			break;
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
		err = time_read_back(d, host, tile, READBACK_BYTES, &busy[r]);
		int kerr = d->ops->event_wait(d, ev);
		d->ops->event_release(d, ev);
		kern[r] = now_ns() - t0;
		err = err ? err : kerr;
	}
	for (int i = 0; i < 3; i++)
		if (mem[i])
			d->ops->mem_free(d, mem[i]);
	if (tile)
		d->ops->mem_free(d, tile);
	if (pinned)
		d->ops->host_unregister(d, host);
	free(host);
	if (err) {
		printf("bench_overlap: %s: the read-back measurement failed: %s\n", d->name,
		       tdm_strerror(err));
		return;
	}
	/* medians; the samples are sorted after, for their ranges */
	uint64_t mi = bench_percentile(idle, READBACK_REPS, 50),
	         mb = bench_percentile(busy, READBACK_REPS, 50),
	         mk = bench_percentile(kern, READBACK_REPS, 50);
	printf("# %s: read-back of %d KiB: idle %.1f..%.1f us, 1 ms into a %.1f ms GEMM "
	       "(%" PRId64 "x%" PRId64 "x%" PRId64 ") %.1f..%.1f us\n",
	       d->name, READBACK_BYTES / 1024, idle[0] / 1e3, idle[READBACK_REPS - 1] / 1e3,
	       mk / 1e6, GEMM_M, n, GEMM_K, busy[0] / 1e3, busy[READBACK_REPS - 1] / 1e3);
	printf("BENCH readback_idle_us %.1f us device=%s\n", mi / 1e3, d->name);
	printf("BENCH readback_busy_us %.1f us device=%s kernel_us=%.0f\n", mb / 1e3, d->name,
	       mk / 1e3);
	printf("BENCH readback_busy_of_kernel %.3f ratio device=%s\n", (double)mb / (double)mk,
	       d->name);
}

static void run_device(const struct backend_device *d)
{
	struct stream s = { .dev = d };
	uint64_t copy_ns, compute_ns, makespan, with_wb;

	GEMM_M = d->kind == TDM_DEV_GPU ? 1024 : 256;
	GEMM_K = d->kind == TDM_DEV_GPU ? 4096 : 2048;
	s.n = balanced_width(d);
	s.a_bytes = (uint64_t)GEMM_M * GEMM_K * 4;
	s.b_bytes = (uint64_t)GEMM_K * (uint64_t)s.n * 4;
	s.c_bytes = (uint64_t)GEMM_M * (uint64_t)s.n * 4;
	s.b = malloc(s.b_bytes);
	for (uint64_t i = 0; i < s.b_bytes / 4; i++)
		s.b[i] = (float)(i % 7) * 0.01f;
	for (int i = 0; i < NTASKS; i++) {
		s.a[i] = malloc(s.a_bytes);
		s.c[i] = calloc(1, s.c_bytes);
		for (uint64_t j = 0; j < s.a_bytes / 4; j++)
			s.a[i][j] = (float)((j + (uint64_t)i) % 5) * 0.1f;
	}
	/* The serial baseline copies from pinned memory too, as the engine's
	 * copies do (residency pins every buffer where the backend can). */
	bool pinned = d->ops->host_register != NULL;
	for (int i = 0; i < NTASKS && pinned; i++) {
		d->ops->host_register(d, s.a[i], s.a_bytes);
		d->ops->host_register(d, s.c[i], s.c_bytes);
	}
	if (pinned)
		d->ops->host_register(d, s.b, s.b_bytes);
	if (serial_times(&s, &copy_ns, &compute_ns) != 0 ||
	    engine_makespan(&s, 4, &makespan, &with_wb) != 0) {
		printf("bench_overlap: %s: a copy or kernel failed\n", d->name);
	} else {
		uint64_t serial = copy_ns + compute_ns;
		uint64_t ideal = copy_ns > compute_ns ? copy_ns : compute_ns;
		printf("# %s: %d sgemm %" PRId64 "x%" PRId64 "x%" PRId64
		       ", fresh input %.1f MiB each: transfers %.2f ms, "
		       "compute %.2f ms, serial %.2f ms, ideal %.2f ms, makespan %.2f ms (%.2f ms "
		       "with the final write-back)\n",
		       d->name, NTASKS, GEMM_M, s.n, GEMM_K,
		       (double)(s.a_bytes + s.c_bytes) / 1048576.0, copy_ns / 1e6, compute_ns / 1e6,
		       serial / 1e6, ideal / 1e6, makespan / 1e6, with_wb / 1e6);
		printf("BENCH overlap_of_ideal %.3f ratio device=%s\n",
		       (double)ideal / (double)makespan, d->name);
		printf("BENCH overlap_of_serial %.3f ratio device=%s\n",
		       (double)makespan / (double)serial, d->name);
	}
	for (int i = 0; i < NTASKS; i++) {
		free(s.a[i]);
		free(s.c[i]);
	}
	free(s.b);
	read_back_while_busy(d, s.n);
}

int main(void)
{
	struct bench_accels a;

	if (bench_accels_open(&a, "bench_overlap") != 0)
		return 1;
	for (size_t i = 0; i < a.n; i++)
		run_device(&a.devs[i]);
	bench_accels_close(&a);
	return 0;
}
