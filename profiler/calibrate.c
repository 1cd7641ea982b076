/* Start-up calibration (profiler/calibrate.h): each kind of device's SGEMM
 * throughput, memory bandwidth and launch cost, and the links between memory
 * nodes, measured through the backend seam on the calling thread.
 *
 * Every figure follows a plan: untimed warm-ups first (PoCL and CLBlast
 * compile on first use, pages get faulted in), then timed repetitions until
 * the plan's maximum or its time budget, whichever comes first; once the
 * run has spent its budget of timed repetitions, each figure gets only its
 * minimum. Rates keep
 * the best repetition (noise only ever slows a run down), latencies the
 * median. Sizes that finish too fast to be timed well (a GPU) grow. */
#include "profiler/calibrate.h"
#include "profiler/calibrate_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/eventfd_ring.h"
#include "common/log.h"
#include "tandem.h"

/* ---- what is measured, and for how long ---- */

#define HOST_BYTES (32ull << 20) /* each host buffer: beyond most caches, quick to fault in */
#define SMALL_BYTES 64ull /* a copy that costs only its latency */
#define GEMM_N0 512
#define GEMM_N_MAX 4096
#define DEV_COPY_MAX (1ull << 30)
/* A repetition shorter than this many launches (or than the floor) is too
 * much fixed cost and timer: the size grows. */
#define GROW_LAUNCHES 20
#define GROW_FLOOR_NS 5e5
#define LAUNCH_BATCH 256 /* host launches timed together: one costs about a clock read */
#define RUN_BUDGET_NS 1000000000ull /* of timed repetitions, warm-ups aside */
#define MAX_REPS 64
#define NS_PER_MS 1000000ull

struct plan {
	unsigned warmups, min, max; /* max <= MAX_REPS */
	uint64_t budget_ns;
};

/* Large kernels and copies: a few, the best counts. */
static const struct plan plan_bulk = {
	.warmups = 1, .min = 1, .max = 9, .budget_ns = 60 * NS_PER_MS
};
/* Launches and small copies: many, the median counts. */
static const struct plan plan_small = {
	.warmups = 3, .min = 5, .max = 51, .budget_ns = 10 * NS_PER_MS
};

/* ---- figures assumed when nothing was measured ---- */

#define DEF_GFLOPS 10.0
#define DEF_MEM_GBPS 20.0 /* read + written: copies within the memory at 10 GB/s */
#define DEF_LAUNCH_NS 1000.0
#define DEF_LINK_GBPS 10.0
#define DEF_LINK_NS 10000.0

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- keys and fingerprints ---- */

void calibrate_device_key(const struct backend_device *d, char *out, size_t len)
{
	if (len == 0)
		return;
	if (len > CAL_KEY_MAX)
		len = CAL_KEY_MAX;
	snprintf(out, len, "%s:%.*s", device_kind_name(d->kind), (int)sizeof(d->model), d->model);
	for (char *s = out; *s; s++)
		if (!key_char(*s))
			*s = '_';
}

#define FP_ENTRY_MAX (CAL_KEY_MAX + 64)
#define FP_HASH_LEN 18 /* " #" and 16 hex digits */

/* Formats the run of identical devices (key, node, memory) that starts at i
 * as " key@node/mem_bytes" and "x<count>"; returns the index after it. */
static size_t fp_entry(const struct backend_device *devs, const uint16_t *nodes, size_t n, size_t i,
                       char *e, size_t size)
{
	char key[CAL_KEY_MAX], other[CAL_KEY_MAX];
	size_t j = i + 1;

	calibrate_device_key(&devs[i], key, sizeof(key));
	for (; j < n && nodes[j] == nodes[i] && devs[j].mem_bytes == devs[i].mem_bytes; j++) {
		calibrate_device_key(&devs[j], other, sizeof(other));
		if (strcmp(key, other))
			break;
	}
	snprintf(e, size, " %s@%u/%" PRIu64 "x%zu", key, (unsigned)nodes[i], devs[i].mem_bytes,
	         j - i);
	return j;
}

static bool fp_append(char *out, size_t *used, size_t limit, const char *s)
{
	size_t n = strlen(s);
	if (*used + n >= limit)
		return false;
	memcpy(out + *used, s, n + 1);
	*used += n;
	return true;
}

/* The readable description when it fits; otherwise as many whole entries as
 * fit, then a hash of the whole description, so that it still changes with
 * any device. */
void calibrate_fingerprint(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                           char *out, size_t len)
{
	char head[64], e[FP_ENTRY_MAX];
	uint64_t h = 0xcbf29ce484222325ull;
	size_t total, used = 0, limit, i;
	bool fits = true;

	if (len == 0)
		return;
	snprintf(head, sizeof(head), "cal%d cpus=%ld", CAL_VERSION, sysconf(_SC_NPROCESSORS_ONLN));
	total = strlen(head);
	h = fnv1a(h, head);
	for (i = 0; i < n;) {
		i = fp_entry(devs, nodes, n, i, e, sizeof(e));
		total += strlen(e);
		h = fnv1a(h, e);
	}
	limit = total < len ? len : (len > FP_HASH_LEN ? len - FP_HASH_LEN : 1);
	out[0] = '\0';
	fits = fp_append(out, &used, limit, head);
	for (i = 0; i < n && fits;) {
		i = fp_entry(devs, nodes, n, i, e, sizeof(e));
		fits = fp_append(out, &used, limit, e);
	}
	if (total >= len)
		snprintf(out + used, len - used, " #%016" PRIx64, h);
}

/* ---- defaults ---- */

static struct cal_link default_link(bool same_node)
{
	if (same_node) /* a copy within one memory reads and writes each byte */
		return (struct cal_link){ .gbps = DEF_MEM_GBPS / 2, .latency_ns = 0 };
	return (struct cal_link){ .gbps = DEF_LINK_GBPS, .latency_ns = DEF_LINK_NS };
}

void calibrate_defaults(size_t ndevices, size_t nnodes, struct calibration *out)
{
	if (ndevices > CAL_MAX_DEVICES)
		ndevices = CAL_MAX_DEVICES;
	if (nnodes < 1)
		nnodes = 1;
	if (nnodes > CAL_MAX_NODES)
		nnodes = CAL_MAX_NODES;
	memset(out, 0, sizeof(*out));
	out->ndevices = (uint32_t)ndevices;
	out->nnodes = (uint32_t)nnodes;
	for (size_t i = 0; i < ndevices; i++) {
		struct cal_device *d = &out->dev[i];
		snprintf(d->key, sizeof(d->key), "dev%zu", i);
		d->gemm_gflops = DEF_GFLOPS;
		d->mem_gbps = DEF_MEM_GBPS;
		d->launch_ns = DEF_LAUNCH_NS;
	}
	for (size_t s = 0; s < nnodes; s++)
		for (size_t d = 0; d < nnodes; d++)
			out->link[s][d] = default_link(s == d);
}

/* ---- timed operations ---- */

enum op_kind { OP_HOST_KERNEL, OP_ACCEL_KERNEL, OP_H2D, OP_D2H, OP_MEMCPY };

/* One thing to time: a kernel, a copy to or from a device, or a memcpy. */
struct op {
	enum op_kind kind;
	const struct backend_device *d;
	const struct kernel_def *k;
	struct tdm_kernel_call call;
	unsigned batch; /* host kernels: launches per repetition */
	void *mem; /* copies: the device buffer */
	const void *src; /* h2d, memcpy */
	void *dst; /* d2h, memcpy */
	uint64_t bytes;
};

struct timing {
	double best_ns, median_ns; /* per launch for host kernels */
};

struct cal_ctx {
	/* Time spent in timed repetitions; past RUN_BUDGET_NS every figure gets
	 * its plan's minimum. Warm-ups do not count: a first compile of PoCL's
	 * kernels (seconds) must not leave the figures after it poorly measured. */
	uint64_t timed_ns;
	float *src; /* HOST_BYTES of 0.5f: GEMM inputs, copy sources */
	float *dst; /* HOST_BYTES, zeroed */
};

/* Waits for an accelerator's event (when err is 0) and releases it. */
static int finish(const struct backend_device *d, int err, struct backend_event *ev)
{
	if (!err)
		err = d->ops->event_wait(d, ev);
	if (ev)
		d->ops->event_release(d, ev);
	return err;
}

static int op_run(const struct op *o)
{
	const struct backend_device *d = o->d;
	struct backend_event *ev = NULL;
	int err = 0;

	switch (o->kind) {
	case OP_HOST_KERNEL:
		for (unsigned i = 0; i < o->batch && !err; i++)
			err = d->ops->launch(d, o->k, &o->call);
		return err;
	case OP_MEMCPY: memcpy(o->dst, o->src, o->bytes); return 0;
	case OP_ACCEL_KERNEL: err = d->ops->launch_async(d, o->k, &o->call, NULL, 0, &ev); break;
	case OP_H2D: err = d->ops->copy_h2d(d, o->mem, 0, o->src, o->bytes, NULL, &ev); break;
	case OP_D2H: err = d->ops->copy_d2h(d, o->dst, o->mem, 0, o->bytes, NULL, &ev); break;
	}
	return finish(d, err, ev);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Runs o as the plan says and reports its best and median repetition. */
static int measure(struct cal_ctx *c, const struct op *o, const struct plan *p, struct timing *t)
{
	uint64_t s[MAX_REPS], start, t0, t1;
	unsigned n = 0, per = o->kind == OP_HOST_KERNEL ? o->batch : 1;
	int err = 0;

	for (unsigned i = 0; i < p->warmups && !err; i++)
		err = op_run(o);
	start = now_ns();
	while (!err && n < p->max && n < MAX_REPS) {
		t0 = now_ns();
		err = op_run(o);
		t1 = now_ns();
		s[n++] = t1 > t0 ? t1 - t0 : 1;
		if (n >= p->min &&
		    (t1 - start >= p->budget_ns || c->timed_ns + (t1 - start) >= RUN_BUDGET_NS))
			break;
	}
	c->timed_ns += now_ns() - start;
	if (err)
		return err;
	qsort(s, n, sizeof(s[0]), cmp_u64);
	t->best_ns = (double)s[0] / per;
	t->median_ns = (double)s[n / 2] / per;
	return 0;
}

/* ---- device figures ---- */

static bool supports(const struct backend_device *d, const struct kernel_def *k)
{
	return k && d->ops->supports && d->ops->supports(d, k);
}

static void gemm_call(struct tdm_kernel_call *call, uint64_t n)
{
	*call = (struct tdm_kernel_call){ .nargs = 3 };
	for (int i = 0; i < 3; i++)
		call->len[i] = n * n * sizeof(float);
	call->s[0].i64 = call->s[1].i64 = call->s[2].i64 = (int64_t)n;
	call->s[3].f32 = 1.0f;
	call->s[4].f32 = 0.0f;
}

/* Fills device memory from a host buffer of HOST_BYTES, in pieces. */
static int upload(const struct backend_device *d, void *mem, uint64_t bytes, const void *host)
{
	int err = 0;
	for (uint64_t off = 0; off < bytes && !err; off += HOST_BYTES) {
		uint64_t n = bytes - off < HOST_BYTES ? bytes - off : HOST_BYTES;
		struct backend_event *ev = NULL;
		err = d->ops->copy_h2d(d, mem, off, host, n, NULL, &ev);
		err = finish(d, err, ev);
	}
	return err;
}

static void free_all(const struct backend_device *d, void **mem, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (mem[i])
			d->ops->mem_free(d, mem[i]);
}

/* Device buffers of `bytes` each, filled from host buffers when fill. */
static int alloc_all(const struct backend_device *d, void **mem, size_t n, uint64_t bytes,
                     const void *const *fill)
{
	int err = 0;
	for (size_t i = 0; i < n && !err; i++) {
		err = d->ops->mem_alloc(d, bytes, &mem[i]);
		if (err)
			mem[i] = NULL;
		else if (fill)
			err = upload(d, mem[i], bytes, fill[i]);
	}
	if (err)
		free_all(d, mem, n);
	return err;
}

/* One n x n x n SGEMM, A and B all 0.5, on host memory or device memory. */
static int gemm_at(struct cal_ctx *c, const struct backend_device *d, uint64_t n, struct timing *t)
{
	uint64_t bytes = n * n * sizeof(float);
	struct op o = { .d = d, .k = kernel_by_id(KERNEL_SGEMM), .batch = 1 };
	const void *fill[3] = { c->src, c->src, c->dst };
	void *mem[3] = { NULL, NULL, NULL };
	int err;

	gemm_call(&o.call, n);
	if (!backend_is_accelerator(d)) {
		/* backend_cpu's probe made BLAS single-threaded: one core's figure. */
		o.kind = OP_HOST_KERNEL;
		o.call.ptr[0] = c->src;
		o.call.ptr[1] = (char *)c->src + bytes;
		o.call.ptr[2] = c->dst;
		return measure(c, &o, &plan_bulk, t);
	}
	o.kind = OP_ACCEL_KERNEL;
	if ((err = alloc_all(d, mem, 3, bytes, fill)))
		return err;
	for (int i = 0; i < 3; i++)
		o.call.mem[i] = mem[i];
	err = measure(c, &o, &plan_bulk, t);
	free_all(d, mem, 3);
	return err;
}

static bool gemm_fits(const struct backend_device *d, uint64_t n)
{
	uint64_t bytes = n * n * sizeof(float);
	if (n > GEMM_N_MAX)
		return false;
	if (!backend_is_accelerator(d)) /* A and B share the source buffer */
		return 2 * bytes <= HOST_BYTES;
	return 3 * bytes <= d->mem_bytes / 4;
}

static int measure_gemm(struct cal_ctx *c, const struct backend_device *d, double grow_below,
                        double *gflops)
{
	struct timing t, done_t = { 0 };
	uint64_t n = GEMM_N0, done = 0;
	int err;

	if (!supports(d, kernel_by_id(KERNEL_SGEMM)))
		return -TDM_EKERNEL;
	for (;;) {
		if ((err = gemm_at(c, d, n, &t)))
			break;
		done = n;
		done_t = t;
		if (t.best_ns >= grow_below || !gemm_fits(d, 2 * n))
			break;
		n *= 2;
	}
	if (!done) /* a larger size that failed keeps the smaller one's figure */
		return err;
	*gflops = 2.0 * (double)done * (double)done * (double)done / done_t.best_ns;
	return 0;
}

/* STREAM-like copy of `bytes`: read once, written once. */
static int copy_at(struct cal_ctx *c, const struct backend_device *d, uint64_t bytes,
                   struct timing *t)
{
	struct op o = { .d = d, .k = kernel_by_id(KERNEL_COPY), .batch = 1 };
	void *mem[2] = { NULL, NULL };
	int err;

	o.call = (struct tdm_kernel_call){ .nargs = 2, .len = { bytes, bytes } };
	if (!backend_is_accelerator(d)) {
		o.kind = OP_HOST_KERNEL;
		o.call.ptr[0] = c->src;
		o.call.ptr[1] = c->dst;
		return measure(c, &o, &plan_bulk, t);
	}
	/* Contents do not matter to a copy; the warm-up touches every page. */
	o.kind = OP_ACCEL_KERNEL;
	if ((err = alloc_all(d, mem, 2, bytes, NULL)))
		return err;
	o.call.mem[0] = mem[0];
	o.call.mem[1] = mem[1];
	err = measure(c, &o, &plan_bulk, t);
	free_all(d, mem, 2);
	return err;
}

static int measure_copy(struct cal_ctx *c, const struct backend_device *d, double grow_below,
                        double *gbps)
{
	struct timing t, done_t = { 0 };
	uint64_t bytes = HOST_BYTES, done = 0;
	int err;

	if (!supports(d, kernel_by_id(KERNEL_COPY)))
		return -TDM_EKERNEL;
	for (;;) {
		if ((err = copy_at(c, d, bytes, &t)))
			break;
		done = bytes;
		done_t = t;
		/* Host buffers are fixed; device memory must hold two copies with room to spare. */
		if (t.best_ns >= grow_below || !backend_is_accelerator(d) ||
		    2 * bytes > DEV_COPY_MAX || 8 * bytes > d->mem_bytes)
			break;
		bytes *= 2;
	}
	if (!done)
		return err;
	*gbps = 2.0 * (double)done / done_t.best_ns;
	return 0;
}

/* An empty task to completion: a host launch, or an accelerator's launch and wait. */
static int measure_launch(struct cal_ctx *c, const struct backend_device *d, double *ns)
{
	struct op o = { .d = d, .k = kernel_by_id(KERNEL_NOOP), .batch = LAUNCH_BATCH };
	struct timing t;
	int err;

	if (!supports(d, o.k))
		return -TDM_EKERNEL;
	o.kind = backend_is_accelerator(d) ? OP_ACCEL_KERNEL : OP_HOST_KERNEL;
	if ((err = measure(c, &o, &plan_small, &t)))
		return err;
	*ns = t.median_ns;
	return 0;
}

/* A measured figure, or the default already in *field (logged). */
static void keep(const char *key, const char *what, int err, double v, const struct range *r,
                 const char *unit, double *field)
{
	if (!err && !in_range(v, r))
		err = -TDM_ERANGE;
	if (!err) {
		*field = v;
		return;
	}
	log_warn("calibration: %s: %s not measured (%s); assuming %g %s", key, what,
	         tdm_strerror(err), *field, unit);
}

static void measure_device(struct cal_ctx *c, const struct backend_device *d,
                           struct cal_device *out)
{
	uint64_t start = now_ns();
	double v = 0, grow_below;
	int err;

	/* Accelerators may need their thread set up (CUDA's current device);
	 * host devices are not bound: that would pin the caller to a core. */
	if (backend_is_accelerator(d) && d->ops->worker_init &&
	    (err = d->ops->worker_init(d, NULL))) {
		log_warn("calibration: %s: cannot use the device (%s); generic figures", out->key,
		         tdm_strerror(err));
		return;
	}
	/* The launch cost first: it says how long a kernel must run to be timed well. */
	err = measure_launch(c, d, &v);
	keep(out->key, "launch cost", err, v, &r_ns, "ns", &out->launch_ns);
	grow_below = fmax(GROW_FLOOR_NS, GROW_LAUNCHES * out->launch_ns);
	err = measure_gemm(c, d, grow_below, &v);
	keep(out->key, "sgemm", err, v, &r_gflops, "GFLOP/s", &out->gemm_gflops);
	err = measure_copy(c, d, grow_below, &v);
	keep(out->key, "memory bandwidth", err, v, &r_gbps, "GB/s", &out->mem_gbps);
	log_debug("calibration: %s: sgemm %.1f GFLOP/s, memory %.1f GB/s, launch %.0f ns (%.0f ms)",
	          out->key, out->gemm_gflops, out->mem_gbps, out->launch_ns,
	          (double)(now_ns() - start) / 1e6);
}

/* ---- waking a sleeping thread ----
 *
 * A daemon worker that found nothing for spin_us sleeps in epoll_wait on
 * an eventfd, and whoever releases work for it writes that eventfd
 * (engine.c): the time from the write to the sleeper running is what the
 * simulator adds before a sleeping worker starts (machine wake_ns). One
 * thread sleeps so on one core, another on a second core (the same one on
 * a machine of one) writes after letting it sleep a while; the median
 * over the rounds. */

#define WAKE_WARMUPS 20
#define WAKE_ROUNDS 200
#define WAKE_ASLEEP_NS 100000 /* the sleeper's sleep before each write */
#define WAKE_TIMEOUT_MS 1000 /* a round that takes this long: give up */

struct wake_probe {
	int ring, back; /* eventfds: to the sleeper, and back to the waker */
	_Atomic uint64_t rung_ns;
	_Atomic bool failed;
	uint64_t lat[WAKE_WARMUPS + WAKE_ROUNDS];
};

static bool wait_fd(int ep)
{
	struct epoll_event ev;
	int n;
	while ((n = epoll_wait(ep, &ev, 1, WAKE_TIMEOUT_MS)) < 0 && errno == EINTR)
		;
	if (n == 1) {
		uint64_t v;
		return read(ev.data.fd, &v, sizeof(v)) == sizeof(v);
	}
	return false;
}

static int epoll_on(int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) {
		close(ep);
		ep = -1;
	}
	return ep;
}

static void *wake_sleeper(void *arg)
{
	struct wake_probe *w = arg;
	int ep = epoll_on(w->ring);
	for (unsigned i = 0; ep >= 0 && i < WAKE_WARMUPS + WAKE_ROUNDS; i++) {
		if (!wait_fd(ep))
			break;
		w->lat[i] = now_ns() - atomic_load(&w->rung_ns);
		if (eventfd_ring(w->back))
			break;
		if (i + 1 == WAKE_WARMUPS + WAKE_ROUNDS) {
			close(ep);
			return NULL;
		}
	}
	atomic_store(&w->failed, true);
	if (ep >= 0)
		close(ep);
	eventfd_ring(w->back); /* the waker waits for this */
	return NULL;
}

static void *wake_waker(void *arg)
{
	struct wake_probe *w = arg;
	const struct timespec asleep = { 0, WAKE_ASLEEP_NS };
	int ep = epoll_on(w->back);
	for (unsigned i = 0; ep >= 0 && i < WAKE_WARMUPS + WAKE_ROUNDS; i++) {
		nanosleep(&asleep, NULL);
		atomic_store(&w->rung_ns, now_ns());
		if (eventfd_ring(w->ring) || !wait_fd(ep) || atomic_load(&w->failed))
			break;
	}
	if (ep < 0)
		atomic_store(&w->failed, true);
	else
		close(ep);
	eventfd_ring(w->ring); /* a sleeper still waiting stops waiting */
	return NULL;
}

/* Starts fn on CPU cpu (any CPU when cpu < 0). */
static int start_on(pthread_t *t, int cpu, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	cpu_set_t set;
	int err = pthread_attr_init(&attr);
	if (err)
		return err;
	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	err = pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return err;
}

static int measure_wake(double *ns)
{
	struct wake_probe *w = calloc(1, sizeof(*w));
	int cpu[2] = { -1, -1 }, err = -TDM_ESYS;
	pthread_t t[2];
	cpu_set_t set;

	if (!w)
		return -TDM_ENOMEM;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0, k = 0; c < CPU_SETSIZE && k < 2; c++)
			if (CPU_ISSET(c, &set))
				cpu[k++] = c;
	if (cpu[1] < 0)
		cpu[1] = cpu[0];
	w->ring = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	w->back = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->ring >= 0 && w->back >= 0 && !start_on(&t[0], cpu[0], wake_sleeper, w)) {
		if (!start_on(&t[1], cpu[1], wake_waker, w))
			pthread_join(t[1], NULL);
		else
			eventfd_ring(w->ring);
		pthread_join(t[0], NULL);
		if (!atomic_load(&w->failed)) {
			qsort(w->lat + WAKE_WARMUPS, WAKE_ROUNDS, sizeof(w->lat[0]), cmp_u64);
			*ns = (double)w->lat[WAKE_WARMUPS + WAKE_ROUNDS / 2];
			err = 0;
		}
	}
	if (w->ring >= 0)
		close(w->ring);
	if (w->back >= 0)
		close(w->back);
	free(w);
	return err;
}

/* ---- links ---- */

static void log_link(unsigned s, unsigned d, const struct cal_link *l)
{
	log_info("calibration: link %u->%u: %.2f GB/s, latency %.1f us", s, d, l->gbps,
	         l->latency_ns / 1e3);
}

/* Host memory to host memory: a memcpy, bytes moved per ns. */
static void measure_host_link(struct cal_ctx *c, struct cal_link *out)
{
	struct op o = { .kind = OP_MEMCPY, .src = c->src, .dst = c->dst, .bytes = HOST_BYTES };
	struct timing t;

	if (measure(c, &o, &plan_bulk, &t) == 0 && in_range(HOST_BYTES / t.best_ns, &r_gbps)) {
		*out = (struct cal_link){ .gbps = HOST_BYTES / t.best_ns, .measured = true };
		log_link(0, 0, out);
	} else {
		log_warn("calibration: host memory copies not measured; assuming %g GB/s",
		         out->gbps);
	}
}

/* One direction: latency + bytes / gbps through a small and a large copy. */
static int measure_dir(struct cal_ctx *c, const struct backend_device *d, enum op_kind dir,
                       void *mem, struct cal_link *out)
{
	struct op o = { .kind = dir, .d = d, .mem = mem, .src = c->src, .dst = c->dst };
	struct timing small, bulk;
	double gbps, dt;
	int err;

	o.bytes = SMALL_BYTES;
	if ((err = measure(c, &o, &plan_small, &small)))
		return err;
	o.bytes = HOST_BYTES;
	if ((err = measure(c, &o, &plan_bulk, &bulk)))
		return err;
	dt = bulk.best_ns - small.median_ns;
	gbps = dt > 0 ? (HOST_BYTES - SMALL_BYTES) / dt : HOST_BYTES / bulk.best_ns;
	struct cal_link l = {
		.gbps = gbps,
		.latency_ns = fmax(0, small.median_ns - SMALL_BYTES / gbps),
		.measured = true,
	};
	if (!in_range(l.gbps, &r_gbps) || !in_range(l.latency_ns, &r_ns))
		return -TDM_ERANGE;
	*out = l;
	return 0;
}

/* Host <-> node through device d (on that node), pinned where the backend can. */
static void measure_node_links(struct cal_ctx *c, const struct backend_device *d, unsigned node,
                               struct calibration *cal)
{
	const struct backend_ops *ops = d->ops;
	bool pinned_src = false, pinned_dst = false;
	void *mem = NULL;
	int err = 0;

	if (ops->worker_init)
		err = ops->worker_init(d, NULL);
	if (!err)
		err = ops->mem_alloc(d, HOST_BYTES, &mem);
	if (err) {
		log_warn("calibration: %s: links of node %u not measured (%s)", d->name, node,
		         tdm_strerror(err));
		return;
	}
	if (ops->host_register) {
		pinned_src = ops->host_register(d, c->src, HOST_BYTES) == 0;
		pinned_dst = ops->host_register(d, c->dst, HOST_BYTES) == 0;
	}
	for (int i = 0; i < 2; i++) {
		unsigned s = i ? node : 0, t = i ? 0 : node;
		err = measure_dir(c, d, i ? OP_D2H : OP_H2D, mem, &cal->link[s][t]);
		if (err)
			log_warn("calibration: %s: link %u->%u not measured (%s)", d->name, s, t,
			         tdm_strerror(err));
		else
			log_link(s, t, &cal->link[s][t]);
	}
	if (pinned_src)
		ops->host_unregister(d, c->src);
	if (pinned_dst)
		ops->host_unregister(d, c->dst);
	ops->mem_free(d, mem);
}

/* What was not measured: within an accelerator's memory (its copy bandwidth;
 * each byte read and written), and between two accelerators (through the host). */
static void derive_links(struct calibration *cal, const double *node_mem_gbps)
{
	for (unsigned a = 1; a < cal->nnodes; a++) {
		if (node_mem_gbps[a] > 0)
			cal->link[a][a] = (struct cal_link){ .gbps = node_mem_gbps[a] / 2 };
		for (unsigned b = 1; b < cal->nnodes; b++) {
			const struct cal_link *up = &cal->link[a][0], *down = &cal->link[0][b];
			if (a == b)
				continue;
			/* Capped so that what is written can always be read back. */
			cal->link[a][b] = (struct cal_link){
				.gbps = 1 / (1 / up->gbps + 1 / down->gbps),
				.latency_ns = fmin(up->latency_ns + down->latency_ns, r_ns.hi / 2),
			};
		}
	}
}

/* ---- the run ---- */

/* Devices and nodes as the header says: host devices on node 0, every
 * accelerator on a node of its own numbering. */
int cal_check_devices(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                      uint32_t *nnodes)
{
	*nnodes = 1;
	if (n > CAL_MAX_DEVICES || (n && (!devs || !nodes)))
		return -TDM_EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!devs[i].ops || nodes[i] >= CAL_MAX_NODES ||
		    backend_is_accelerator(&devs[i]) != (nodes[i] != 0))
			return -TDM_EINVAL;
		if (nodes[i] + 1u > *nnodes)
			*nnodes = nodes[i] + 1u;
	}
	return 0;
}

static int ctx_init(struct cal_ctx *c)
{
	c->timed_ns = 0;
	c->src = aligned_alloc(4096, HOST_BYTES);
	c->dst = aligned_alloc(4096, HOST_BYTES);
	if (!c->src || !c->dst) {
		free(c->src);
		free(c->dst);
		return -TDM_ENOMEM;
	}
	/* Every page faulted in now, outside the figures. */
	for (size_t i = 0; i < HOST_BYTES / sizeof(float); i++)
		c->src[i] = 0.5f;
	memset(c->dst, 0, HOST_BYTES);
	return 0;
}

static void ctx_fini(struct cal_ctx *c)
{
	free(c->src);
	free(c->dst);
}

/* Device i's figures: measured, or copied from an earlier device of its key. */
static void device_figures(struct cal_ctx *c, const struct backend_device *devs, size_t i,
                           struct calibration *cal)
{
	for (size_t j = 0; j < i; j++) {
		if (!strcmp(cal->dev[j].key, cal->dev[i].key)) {
			cal->dev[i].gemm_gflops = cal->dev[j].gemm_gflops;
			cal->dev[i].mem_gbps = cal->dev[j].mem_gbps;
			cal->dev[i].launch_ns = cal->dev[j].launch_ns;
			return;
		}
	}
	measure_device(c, &devs[i], &cal->dev[i]);
}

/* The first device computing from node k, or NULL. */
static const struct backend_device *node_device(const struct backend_device *devs,
                                                const uint16_t *nodes, size_t n, unsigned k,
                                                const struct calibration *cal, double *mem_gbps)
{
	for (size_t i = 0; i < n; i++) {
		if (nodes[i] == k) {
			*mem_gbps = cal->dev[i].mem_gbps;
			return &devs[i];
		}
	}
	return NULL;
}

int calibrate_run(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                  struct calibration *out)
{
	double node_mem[CAL_MAX_NODES] = { 0 };
	uint64_t start = now_ns();
	struct cal_ctx c;
	uint32_t nnodes;
	int err;

	if ((err = cal_check_devices(devs, nodes, n, &nnodes)))
		return err;
	calibrate_defaults(n, nnodes, out);
	calibrate_fingerprint(devs, nodes, n, out->fingerprint, sizeof(out->fingerprint));
	for (size_t i = 0; i < n; i++) {
		calibrate_device_key(&devs[i], out->dev[i].key, sizeof(out->dev[i].key));
		out->dev[i].node = nodes[i];
	}
	if ((err = ctx_init(&c)))
		return err;
	measure_host_link(&c, &out->link[0][0]);
	double wake = 0;
	err = measure_wake(&wake);
	keep("host", "wake-up latency", err, wake, &r_wake, "ns", &out->wake_ns);
	if (!err) /* the daemon logs it with the other figures (log_calibration) */
		log_debug("calibration: a sleeping thread wakes in %.1f us", out->wake_ns / 1e3);
	for (size_t i = 0; i < n; i++)
		device_figures(&c, devs, i, out);
	for (unsigned k = 1; k < nnodes; k++) {
		const struct backend_device *d = node_device(devs, nodes, n, k, out, &node_mem[k]);
		if (d)
			measure_node_links(&c, d, k, out);
	}
	derive_links(out, node_mem);
	ctx_fini(&c);
	out->seconds = (double)(now_ns() - start) / 1e9;
	log_info("calibration: %zu device(s), %u node(s) measured in %.2f s", n, nnodes,
	         out->seconds);
	return 0;
}

/* ---- one device joining a running daemon ---- */

void calibrate_derive_node(struct calibration *cal, unsigned node, double mem_gbps)
{
	if (node == 0 || node >= cal->nnodes)
		return;
	/* Within its memory (each byte read and written), and to the other
	 * accelerators through the host, as derive_links makes them. */
	if (mem_gbps > 0)
		cal->link[node][node] = (struct cal_link){ .gbps = mem_gbps / 2 };
	for (unsigned b = 1; b < cal->nnodes; b++) {
		if (b == node)
			continue;
		for (int dir = 0; dir < 2; dir++) {
			unsigned s = dir ? b : node, t = dir ? node : b;
			const struct cal_link *up = &cal->link[s][0], *down = &cal->link[0][t];
			cal->link[s][t] = (struct cal_link){
				.gbps = 1 / (1 / up->gbps + 1 / down->gbps),
				.latency_ns = fmin(up->latency_ns + down->latency_ns, r_ns.hi / 2),
			};
		}
	}
}

int calibrate_one(const struct backend_device *d, uint16_t node, uint32_t slot,
                  struct calibration *cal)
{
	uint64_t start = now_ns();
	struct cal_ctx c;
	uint32_t nnodes;
	int err;

	if (!cal || slot >= CAL_MAX_DEVICES || cal->nnodes < 1 || cal->nnodes > CAL_MAX_NODES ||
	    cal->ndevices > CAL_MAX_DEVICES)
		return -TDM_EINVAL;
	if ((err = cal_check_devices(d, &node, 1, &nnodes)))
		return err;
	struct calibration def;
	calibrate_defaults(1, nnodes, &def);
	struct cal_device *out = &cal->dev[slot];
	*out = def.dev[0];
	calibrate_device_key(d, out->key, sizeof(out->key));
	out->node = node;
	/* Slots between the last device and this one get generic figures. */
	for (uint32_t i = cal->ndevices; i < slot; i++)
		cal->dev[i] = def.dev[0];
	if (slot + 1 > cal->ndevices)
		cal->ndevices = slot + 1;
	if (node && node + 1u > cal->nnodes) {
		for (unsigned a = 0; a < node + 1u; a++)
			for (unsigned b = 0; b < node + 1u; b++)
				if (a >= cal->nnodes || b >= cal->nnodes)
					cal->link[a][b] = default_link(a == b);
		cal->nnodes = node + 1u;
	}
	if ((err = ctx_init(&c)))
		return err;
	measure_device(&c, d, out);
	if (node) {
		measure_node_links(&c, d, node, cal);
		calibrate_derive_node(cal, node, out->mem_gbps);
	}
	ctx_fini(&c);
	double seconds = (double)(now_ns() - start) / 1e9;
	log_info("calibration: %s (%s) measured in %.2f s while the others ran", d->name, out->key,
	         seconds);
	return 0;
}
