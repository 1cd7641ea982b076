/* Engine core: dependency counters, ready tasks to the policy, one worker
 * thread per device, completion. */
#include "engine/engine.h"

#include <errno.h>
#include <hwloc.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/cpu_relax.h"
#include "common/csr.h"
#include "common/eventfd_ring.h"
#include "common/log.h"
#include "policies/policy.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* A busy worker still looks at the submission rings this often, so that
 * new graphs (a light client's, next to a flood) reach the policy. */
#define BUSY_POLL_NS 50000

struct worker {
	struct engine *e;
	unsigned index;
	uint64_t last_poll_ns;
	pthread_t thread;
	bool started;
	/* Tasks this worker released, pushed to the policy in one call. */
	struct engine_task **ready;
	size_t ready_cap;
	/* Released tasks no token was routed to, waiting to complete unrun. */
	struct engine_task **skips;
	size_t nskips, skips_cap;
	/* Accelerators: tasks enqueued on the device, oldest first. */
	struct inflight *pipe;
	size_t pipe_head, pipe_n;
	uint32_t depth; /* tasks it keeps staged: 1 on the host node (simulation) */
	struct engine_task *deferred; /* no room on the device until the oldest ends */
	uint64_t last_end_ns;
	/* The kernels its device (one that warms up) ran once already, and
	 * the task finishing now when it is such a first run (not learned). */
	uint64_t ran[(KERNEL_COUNT + 63) / 64];
	const struct engine_task *warmup;
	/* Its own wake-up: a policy with per-device queues must wake the one
	 * worker that may take the task (engine_kick), and a shared eventfd
	 * read by one sleeper could leave another asleep. */
	int kick_fd;
	/* Where it sleeps (set up by its thread): epoll sets of kick_fd and
	 * wake_fd, [1] with the front end's poll_fd too, registered once
	 * rather than at every sleep as poll() does. -1: poll() instead. */
	int sleep_ep[2];
	_Atomic bool asleep;
	/* 1 from the moment it looks for a task until that task is staged or
	 * done, so that engine_device_busy never misses a task between its
	 * pick and its staging. */
	_Atomic uint32_t picking;
	bool host; /* runs tasks on a CPU core (not an accelerator's worker) */
	/* The device the cost models know this one as: itself, or for a
	 * device added at run time the first one of the same kind and model
	 * (they share a model: it is priced, and teaches, at once). */
	uint32_t model_dev;
	/* Its device is GONE and it let go of everything (residency, policy):
	 * set once, under dev_lock (engine_device_remove, retire_device). */
	_Atomic bool retired;
};

struct inflight {
	struct engine_task *task;
	struct backend_event *done;
};

/* A task that hits device faults moves to another device this many times
 * before its graph fails. */
#define MAX_ATTEMPTS 3

#define DEFAULT_PIPELINE_DEPTH 4
/* engine_destroy waits this long for workers to leave their kernels. */
#define STOP_WAIT_MS 2000

struct engine {
	struct engine_core core; /* what policies may call back (graph/task.h) */
	const struct clock_source *clock;
	const struct policy_ops *policy;
	void *policy_priv;
	struct engine_hooks hooks;
	void *topology;
	/* [cap] each. Slots below ndevices are published: a device added at
	 * run time is made whole, then ndevices moves (release), so a reader
	 * that loads ndevices (acquire) sees every slot below it complete. */
	struct engine_device *devices;
	struct worker *workers;
	size_t cap;
	_Atomic size_t ndevices;
	bool threads; /* start_workers: each device has a worker thread */
	uint32_t fault_limit;
	/* Serialises device changes (add, drain, remove, resume, a fault past
	 * the limit, a worker's retirement) and what they tell the policy. */
	pthread_mutex_t dev_lock;
	_Atomic uint32_t running; /* worker threads in their loop */
	/* Moves before each change of what engine_runnable answers (a
	 * device's state, one added, a device marked unhealthy). */
	_Atomic uint32_t dev_seq;
	struct residency *res; /* NULL: no residency bookkeeping */
	struct profiler *prof; /* NULL: no cost models */
	struct policy_tuning tuning;
	_Atomic bool has_accel; /* some device is an accelerator (may become true: device_add) */
	uint32_t depth;
	/* supported[k * cap + w]: device w implements kernel k. */
	uint8_t *supported;
	/* floor_dev[k * cap + i], i < floor_n[k]: one device of each kind
	 * of hardware (kind and model, as calibration keys them) implementing
	 * kernel k; admission prices tasks on the fastest of them. */
	uint16_t *floor_dev;
	_Atomic uint16_t floor_n[KERNEL_COUNT];
	/* Per kernel, the devices that implement it: not GONE (live), and of
	 * those ACTIVE and healthy (healthy). recount_capable keeps them. */
	_Atomic uint32_t live_capable[KERNEL_COUNT];
	_Atomic uint32_t healthy_capable[KERNEL_COUNT];
	/* Every device runs every task: no per-task check needed. */
	_Atomic bool uniform;
	_Atomic uint32_t spin_us;
	_Atomic bool stop;
	_Atomic bool abort; /* engine_cancel_all: every graph, even one submitted later */

	/* Event count for idle workers: producers bump epoch, then kick
	 * sleeping workers' own eventfds; a worker sleeps only if epoch did
	 * not move since it last looked for work. Workers sleep in poll() on
	 * their kick_fd, on wake_fd (rung once, at stop) and on the front
	 * end's poll_fd, so a client's doorbell wakes a worker directly. */
	_Atomic uint32_t epoch;
	_Atomic uint32_t sleepers;
	_Atomic uint32_t kick_next; /* where the next search for a sleeper starts */
	int wake_fd;
	int poll_fd;

	/* The watchdog: a FIFO that replaces the policy once it misbehaves
	 * (hands out a task it does not hold or one the worker cannot run, or
	 * holds ready tasks while every worker idles for watchdog_ms). */
	void *fifo_priv;
	_Atomic bool fallback;
	uint32_t watchdog_ms;
	_Atomic size_t queued; /* handed to the policy or the FIFO, not taken yet */
	_Atomic uint32_t idle_workers;
	/* Idle workers of CPU cores, and how many CPU-core workers there are:
	 * they are the ones that listen to the front end (see listens). */
	_Atomic uint32_t idle_host;
	_Atomic uint32_t nhost;
	_Atomic uint32_t prefetching; /* workers prefetching tasks they peeked at */
	/* A device change lets the policy move queued tasks between devices:
	 * no prefetch starts meanwhile (see quiesce_prefetch). */
	_Atomic bool moving;
	/* Some task submitted had arguments (buffers): until then there is
	 * nothing to prefetch, and prefetch_ahead does not peek (a simulated
	 * workload of abstract tasks never has any). Never cleared. */
	_Atomic bool any_args;
	pthread_mutex_t wd_lock; /* the graphs in flight (for taking tasks back), and the below */
	struct engine_graph *graphs; /* in flight, linked through core_next */
	uint64_t wd_done_seen, wd_since_ns;
	uint32_t wd_seq_seen; /* dev_seq: a device change restarts the watch */

	_Atomic uint64_t graphs_submitted, graphs_done;
	_Atomic uint64_t tasks_done, tasks_failed, tasks_canceled, tasks_in_flight;
};

static uint8_t device_state(const struct engine *e, unsigned w)
{
	struct engine *m = (struct engine *)e; /* read only */
	return atomic_load_explicit(&m->devices[w].state, memory_order_acquire);
}

static void requeue(struct engine *e, struct engine_task *t);
static void leave_device(struct engine *e, unsigned w, uint8_t state);
static void retire_device(struct engine *e, unsigned w);

static void ring_fd(int fd)
{
	int err = eventfd_ring(fd);
	if (err)
		log_error("engine: wake: %s", strerror(-err));
}

static void ring_wake_fd(struct engine *e)
{
	ring_fd(e->wake_fd);
}

/* Wakes up to n sleeping ACTIVE workers among those in `capable` (bit w)
 * other than `skip`, starting the search where the
 * last one ended so that wake-ups spread over the workers. */
static void wake_sleepers(struct engine *e, size_t n, uint64_t capable, int skip)
{
	size_t nd = e->ndevices, start = atomic_fetch_add(&e->kick_next, 1) % nd;
	for (size_t i = 0; i < nd && n; i++) {
		size_t w = (start + i) % nd;
		struct worker *wk = &e->workers[w];
		if ((int)w == skip || !(capable >> w & 1) ||
		    atomic_load_explicit(&e->devices[w].state, memory_order_relaxed) !=
		            ENGINE_DEV_ACTIVE)
			continue;
		if (atomic_exchange(&wk->asleep, false)) {
			if (e->threads) /* simulation: the driver reads asleep */
				ring_fd(wk->kick_fd);
			n--;
		}
	}
}

/* Tells idle workers that n tasks became ready for any of them. */
static void engine_notify(struct engine *e, size_t n)
{
	atomic_fetch_add(&e->epoch, 1);
	if (n && atomic_load(&e->sleepers))
		wake_sleepers(e, n, UINT64_MAX, -1);
}

static void sweep(struct engine *e, unsigned w);

void engine_kick(const struct engine *ce, unsigned w)
{
	struct engine *e = (struct engine *)ce; /* the wake-up state only */
	if (w >= e->ndevices)
		return;
	/* A policy queued a task for a device whose worker has left: the
	 * caller (the policy, holding none of its locks) has it moved. */
	if (atomic_load(&e->workers[w].retired)) {
		sweep(e, w);
		return;
	}
	atomic_fetch_add(&e->epoch, 1);
	if (atomic_exchange(&e->workers[w].asleep, false) && e->threads)
		ring_fd(e->workers[w].kick_fd);
}

static bool grow(struct engine_task ***arr, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t ncap = *cap ? *cap : 64;
	while (ncap < need)
		ncap *= 2;
	struct engine_task **n = realloc(*arr, ncap * sizeof(*n));
	if (!n)
		return false;
	*arr = n;
	*cap = ncap;
	return true;
}

static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* A counter only one thread writes (a device's, by its worker): a load and
 * a store, no locked instruction; readers see whole values. */
static void own_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

/* Latency buckets: powers of 4 from 1 us to about 4.2 s, then +Inf. */
uint64_t engine_latency_bound_ns(size_t i)
{
	return i + 1 < ENGINE_LAT_BUCKETS ? UINT64_C(1000) << (2 * i) : UINT64_MAX;
}

/* The first bucket whose bound is at or above ns, without a walk over
 * the bounds (twice per task): they are 1000 * 4^i, so it is the first i
 * with (ns - 1) / 1000 < 4^i. */
static size_t latency_bucket(uint64_t ns)
{
	if (ns <= 1000)
		return 0;
	size_t i = (size_t)(63 - __builtin_clzll((ns - 1) / 1000)) / 2 + 1;
	return i < ENGINE_LAT_BUCKETS - 1 ? i : ENGINE_LAT_BUCKETS - 1;
}

/* A task that ran to completion, for status and /metrics: the device's
 * figures are this worker's alone; the graph's sit on the line its
 * completion count is on. */
static void account_task(struct engine_device *d, const struct engine_task *t)
{
	uint64_t run = t->end_ns - t->start_ns;
	uint64_t wait = t->start_ns > t->queued_ns ? t->start_ns - t->queued_ns : 0;
	own_add(&d->kernel_tasks[t->kernel->id], 1);
	own_add(&d->run_hist[latency_bucket(run)], 1);
	own_add(&d->wait_hist[latency_bucket(wait)], 1);
	own_add(&d->wait_ns, wait);
	own_add(&d->run_ns, run);
	if (t->pred_ns) {
		own_add(&d->predicted, 1);
		own_add(&d->pred_err_ns, t->pred_ns > run ? t->pred_ns - run : run - t->pred_ns);
		own_add(&d->pred_actual_ns, run);
	}
	atomic_fetch_add_explicit(&t->graph->tasks_ok, 1, memory_order_relaxed);
	stat_add(&t->graph->busy_ns, run);
}

/* The graph is done: its totals join its flow's. */
static void account_graph(struct engine_graph *g)
{
	stat_add(&g->flow->tasks_done, atomic_load_explicit(&g->tasks_ok, memory_order_relaxed));
	stat_add(&g->flow->busy_ns, atomic_load_explicit(&g->busy_ns, memory_order_relaxed));
	stat_add(&g->flow->graphs_done, 1);
}

static void fifo_push(struct engine *e, struct engine_task **tasks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		atomic_store_explicit(&tasks[i]->qstate, QSTATE_FIFO, memory_order_relaxed);
	policy_fifo.tasks_ready(e->fifo_priv, tasks, n, -1);
}

/* Which workers may run at least one of these tasks (bit w: at most
 * ENGINE_MAX_DEVICES). Taken before the policy gets them: once pushed they
 * may run and their graph be freed. */
static uint64_t capable_workers(const struct engine *e, struct engine_task **tasks, size_t n)
{
	uint64_t mask = 0;
	size_t nd = atomic_load_explicit(&e->ndevices, memory_order_acquire);
	for (size_t w = 0; w < nd; w++)
		for (size_t i = 0; i < n; i++)
			if (engine_runnable(e, tasks[i], (unsigned)w)) {
				mask |= UINT64_C(1) << w;
				break;
			}
	return mask;
}

/* The worker a thread is, for intake that runs on idle workers (-1: none;
 * set once by each worker thread). */
static _Thread_local const struct engine *tls_engine;
static _Thread_local int tls_worker = -1;

/* An accumulator about to reach the policy (again, after a device fault):
 * its kernel will add into its partial, zeroed (docs/kernels.md). */
static void acc_prepare(struct engine_task *t)
{
	struct task_acc *a = t->acc;
	t->call.ptr[a->arg] = a->partial;
	t->call.off[a->arg] = 0;
	memset(a->partial, 0, t->call.len[a->arg]);
	a->ran = false;
}

/* Gives ready tasks to the policy and wakes workers for them. worker: the
 * releasing worker, as the policy hears it (-1: intake). taker: a worker
 * that looks for work right after this (the releasing worker, or the one
 * running intake), so one fewer sleeper needs waking when it may run one
 * of them; -1: none. */
static void push_ready_from(struct engine *e, struct engine_task **tasks, size_t n, int worker,
                            int taker)
{
	uint64_t now = clock_now(e->clock);
	bool uniform = atomic_load_explicit(&e->uniform, memory_order_relaxed);
	uint64_t capable = uniform ? 0 : capable_workers(e, tasks, n);
	for (size_t i = 0; i < n; i++)
		if (tasks[i]->flags & TASK_ACC)
			acc_prepare(tasks[i]);
	atomic_fetch_add_explicit(&e->queued, n, memory_order_relaxed);
	if (atomic_load_explicit(&e->fallback, memory_order_acquire)) {
		for (size_t i = 0; i < n; i++)
			tasks[i]->queued_ns = now;
		fifo_push(e, tasks, n);
	} else {
		for (size_t i = 0; i < n; i++) {
			tasks[i]->queued_ns = now;
			atomic_store_explicit(&tasks[i]->qstate, QSTATE_QUEUED,
			                      memory_order_relaxed);
		}
		e->policy->tasks_ready(e->policy_priv, tasks, n, worker);
	}
	if (uniform) {
		/* The taker picks one of them itself right after. */
		engine_notify(e, taker >= 0 ? n - 1 : n);
		return;
	}
	/* Devices differ in what they run: the taker may run none of these,
	 * and waking a worker that cannot would lose the wake-up. */
	atomic_fetch_add(&e->epoch, 1);
	bool takes = taker >= 0 && (taker >= 64 || (capable >> taker & 1));
	if (atomic_load(&e->sleepers) && n > takes)
		wake_sleepers(e, n - takes, capable, taker);
}

static void push_ready(struct engine *e, struct engine_task **tasks, size_t n, int worker)
{
	push_ready_from(e, tasks, n, worker, worker);
}

/* Moves every task the policy still holds to the FIFO: each task's qstate
 * says who holds it, so a task the policy hands out meanwhile runs once. */
static size_t take_back_tasks(struct engine *e)
{
	struct engine_task *batch[64];
	size_t n = 0, moved = 0;

	pthread_mutex_lock(&e->wd_lock);
	for (struct engine_graph *g = e->graphs; g; g = g->core_next) {
		for (uint32_t i = 0; i < g->ntasks; i++) {
			struct engine_task *t = &g->tasks[i];
			uint8_t q = QSTATE_QUEUED;
			if (!atomic_compare_exchange_strong(&t->qstate, &q, QSTATE_FIFO))
				continue;
			batch[n++] = t;
			if (n == 64) {
				policy_fifo.tasks_ready(e->fifo_priv, batch, n, -1);
				moved += n;
				n = 0;
			}
		}
	}
	if (n)
		policy_fifo.tasks_ready(e->fifo_priv, batch, n, -1);
	moved += n;
	pthread_mutex_unlock(&e->wd_lock);
	if (moved)
		engine_notify(e, moved);
	return moved;
}

/* The policy broke its contract: from now on every ready task goes to the
 * FIFO. Tasks pushed to the policy by a thread that had not yet seen the
 * switch are taken back later, by idle workers (worker_idle_wait). */
static void engine_fall_back(struct engine *e, const char *why)
{
	if (atomic_exchange(&e->fallback, true))
		return;
	/* A worker prefetching a task it peeked at must be done with it before
	 * the task can go to the FIFO and run elsewhere (see prefetch_ahead). */
	while (atomic_load(&e->prefetching))
		sched_yield();
	size_t moved = take_back_tasks(e);
	log_error("policy %s: %s; falling back to fifo (%zu queued tasks taken back)",
	          e->policy->name, why, moved);
	engine_notify(e, 1);
}

static struct engine_task *pick_task(struct engine *e, unsigned w);

/* Worker w takes no task (its device drains): the policy is still asked,
 * so that one with per-device queues moves what reached w's queue after
 * device_draining (a placement that saw w still ACTIVE); whatever it
 * hands out is placed again. */
static void sweep(struct engine *e, unsigned w)
{
	if (atomic_load_explicit(&e->fallback, memory_order_acquire))
		return;
	struct engine_task *t = e->policy->pick_next(e->policy_priv, w);
	if (!t)
		return;
	uint8_t q = QSTATE_QUEUED;
	if (!atomic_compare_exchange_strong(&t->qstate, &q, QSTATE_IDLE)) {
		char why[160];
		snprintf(why, sizeof(why), "handed out task %u of kernel %s it did not hold",
		         t->index, t->kernel->name);
		engine_fall_back(e, why);
		return;
	}
	atomic_fetch_sub_explicit(&e->queued, 1, memory_order_relaxed);
	requeue(e, t);
}

/* The next task for worker w, from the policy or (after a fallback) the
 * FIFO; what the policy hands out is checked first. */
static struct engine_task *engine_pick(struct engine *e, unsigned w)
{
	struct engine_task *t;

	/* A device that drains or left takes nothing new (its worker still
	 * finishes what it staged). picking is raised before the state is
	 * read, and the state set before busy is read (engine_device_busy):
	 * one of the two sees the other. */
	atomic_store(&e->workers[w].picking, 1);
	if (device_state(e, w) != ENGINE_DEV_ACTIVE) {
		sweep(e, w);
		atomic_store(&e->workers[w].picking, 0);
		return NULL;
	}
	t = pick_task(e, w);
	if (!t)
		atomic_store(&e->workers[w].picking, 0);
	return t;
}

/* The task was staged (or is over): the worker's pick is done. */
static void picked(struct worker *w)
{
	atomic_store_explicit(&w->picking, 0, memory_order_release);
}

static struct engine_task *pick_task(struct engine *e, unsigned w)
{
	struct engine_task *t;
	char why[160];

	if (!atomic_load_explicit(&e->fallback, memory_order_acquire)) {
		uint32_t seq = atomic_load(&e->dev_seq);
		t = e->policy->pick_next(e->policy_priv, w);
		if (!t)
			goto fifo; /* tasks taken back while the policy was asked */
		uint8_t q = QSTATE_QUEUED;
		if (!atomic_compare_exchange_strong(&t->qstate, &q, QSTATE_IDLE)) {
			snprintf(why, sizeof(why),
			         "handed out task %u of kernel %s it did not hold", t->index,
			         t->kernel->name);
			engine_fall_back(e, why);
			goto fifo;
		}
		bool ok = engine_runnable(e, t, w);
		if (!ok &&
		    (device_state(e, w) != ENGINE_DEV_ACTIVE || atomic_load(&e->dev_seq) != seq)) {
			/* The devices changed while the policy handed it out
			 * (one began to drain, one was added...): not the
			 * policy's fault; placed again. */
			atomic_fetch_sub_explicit(&e->queued, 1, memory_order_relaxed);
			requeue(e, t);
			return NULL;
		}
		if (!ok) {
			snprintf(why, sizeof(why),
			         "gave task %u of kernel %s to worker %u (%s), which cannot run it",
			         t->index, t->kernel->name, w, e->devices[w].dev.name);
			fifo_push(e, &t, 1);
			engine_fall_back(e, why);
			goto fifo;
		}
		atomic_fetch_sub_explicit(&e->queued, 1, memory_order_relaxed);
		return t;
	}
fifo:
	if (!atomic_load_explicit(&e->fallback, memory_order_acquire))
		return NULL;
	for (;;) {
		t = policy_fifo.pick_next(e->fifo_priv, w);
		if (!t)
			return NULL;
		if (device_state(e, w) != ENGINE_DEV_ACTIVE) {
			/* Drained meanwhile: back to the FIFO for another. */
			fifo_push(e, &t, 1);
			return NULL;
		}
		uint8_t q = QSTATE_FIFO;
		/* Always succeeds: only the FIFO holds tasks in this state. */
		if (atomic_compare_exchange_strong(&t->qstate, &q, QSTATE_IDLE)) {
			atomic_fetch_sub_explicit(&e->queued, 1, memory_order_relaxed);
			return t;
		}
	}
}

/* Whether some task the policy holds may run on some device now. When
 * none may (their devices drain, and the tasks wait for one to be resumed
 * or added), idle workers are not the policy's fault. Walks every task in
 * flight: only when the watchdog is about to fire. */
static bool queued_runnable(struct engine *e)
{
	size_t nd = atomic_load(&e->ndevices);
	bool any = false;
	pthread_mutex_lock(&e->wd_lock);
	for (struct engine_graph *g = e->graphs; g && !any; g = g->core_next)
		for (uint32_t i = 0; i < g->ntasks && !any; i++) {
			const struct engine_task *t = &g->tasks[i];
			if (atomic_load(&t->qstate) != QSTATE_QUEUED)
				continue;
			for (size_t w = 0; w < nd && !any; w++)
				any = engine_runnable(e, t, (unsigned)w);
		}
	pthread_mutex_unlock(&e->wd_lock);
	return any;
}

/* Called by an idle worker that waited watchdog_ms: ready tasks, every
 * worker idle, and no task finished meanwhile means the policy stalls. */
static void watchdog_check(struct engine *e)
{
	if (atomic_load(&e->fallback) || atomic_load(&e->queued) == 0 ||
	    atomic_load(&e->idle_workers) < atomic_load(&e->running))
		return;
	uint64_t now = clock_monotonic_ns(), done = atomic_load(&e->tasks_done);
	uint32_t seq = atomic_load(&e->dev_seq);
	bool stalled = false;
	pthread_mutex_lock(&e->wd_lock);
	if (done != e->wd_done_seen || seq != e->wd_seq_seen || e->wd_since_ns == 0) {
		e->wd_done_seen = done;
		e->wd_seq_seen = seq;
		e->wd_since_ns = now;
	} else if (now - e->wd_since_ns >= (uint64_t)e->watchdog_ms * 1000000u) {
		stalled = true;
	}
	pthread_mutex_unlock(&e->wd_lock);
	/* Tasks waiting for a device, or a device that changed meanwhile (the
	 * tasks it lets run have not been picked yet): no stall. */
	if (stalled && (!queued_runnable(e) || atomic_load(&e->dev_seq) != seq)) {
		/* Waiting for a device: look again after another period. */
		pthread_mutex_lock(&e->wd_lock);
		e->wd_since_ns = clock_monotonic_ns();
		pthread_mutex_unlock(&e->wd_lock);
		stalled = false;
	}
	if (stalled) {
		char why[128];
		snprintf(why, sizeof(why),
		         "held %zu ready tasks while every worker idled for %u ms",
		         atomic_load(&e->queued), e->watchdog_ms);
		engine_fall_back(e, why);
	}
}

static void graph_track(struct engine *e, struct engine_graph *g)
{
	pthread_mutex_lock(&e->wd_lock);
	g->core_prev = NULL;
	g->core_next = e->graphs;
	if (e->graphs)
		e->graphs->core_prev = g;
	e->graphs = g;
	pthread_mutex_unlock(&e->wd_lock);
}

static void graph_untrack(struct engine *e, struct engine_graph *g)
{
	pthread_mutex_lock(&e->wd_lock);
	if (g->core_prev)
		g->core_prev->core_next = g->core_next;
	else
		e->graphs = g->core_next;
	if (g->core_next)
		g->core_next->core_prev = g->core_prev;
	pthread_mutex_unlock(&e->wd_lock);
}

#define ROOT_CHUNK 64

/* An accumulator's partial gets its residency, so that it may run on any
 * device. */
static bool acc_residency(struct engine *e, struct engine_task *t)
{
	struct task_acc *a = t->acc;
	if (a->pdata_live)
		return true;
	if (!(a->pdata = malloc(sizeof(*a->pdata))))
		return false;
	residency_data_init(e->res, a->pdata, a->partial, t->call.len[a->arg], UINT32_MAX, false);
	a->pdata_live = true;
	return true;
}

/* May run on several threads at once (intake runs on workers). */
void engine_submit(struct engine *e, struct engine_graph *g)
{
	struct engine_task *chunk[ROOT_CHUNK];
	size_t n = 0;
	int self = tls_engine == e ? tls_worker : -1;

	atomic_fetch_add(&e->graphs_submitted, 1);
	g->submit_ns = clock_now(e->clock);
	atomic_store(&g->remaining, g->ntasks);
	atomic_store_explicit(&g->tasks_ok, 0, memory_order_relaxed);
	atomic_store_explicit(&g->busy_ns, 0, memory_order_relaxed);
	if (g->ntasks == 0) {
		atomic_fetch_add(&e->graphs_done, 1);
		account_graph(g);
		e->hooks.graph_done(e->hooks.ctx, g);
		return;
	}
	atomic_fetch_add(&e->tasks_in_flight, g->ntasks);
	graph_track(e, g);
	/* After tracking: either engine_cancel_all's sweep finds the graph, or
	 * this sees its flag. */
	if (atomic_load(&e->abort))
		atomic_store(&g->flow->canceled, 1);
	if (e->policy->graph_submitted && !atomic_load(&e->fallback))
		e->policy->graph_submitted(e->policy_priv, g);
	/* Mark every root before pushing any: once pushed, workers run tasks
	 * and bring other counters to zero, which must not make those tasks
	 * look like roots here. */
	uint32_t ntasks = g->ntasks, nroots = 0, pushed = 0, nargs = 0;
	for (uint32_t i = 0; i < ntasks; i++) {
		int32_t ok = 0;
		if ((g->tasks[i].flags & TASK_ACC) && e->res && !acc_residency(e, &g->tasks[i]))
			atomic_compare_exchange_strong(&g->status, &ok,
			                               -TDM_ENOMEM); /* none runs */
		g->tasks[i].root =
		        atomic_load_explicit(&g->tasks[i].ndeps, memory_order_relaxed) == 0;
		nroots += g->tasks[i].root;
		nargs |= g->tasks[i].call.nargs;
	}
	g->any_args = nargs != 0;
	if (nargs && !atomic_load_explicit(&e->any_args, memory_order_relaxed))
		atomic_store_explicit(&e->any_args, true, memory_order_relaxed);
	/* Once the last root is pushed the graph may run to completion and
	 * be freed: g is not touched after that. */
	for (uint32_t i = 0; pushed < nroots; i++) {
		if (!g->tasks[i].root)
			continue;
		chunk[n++] = &g->tasks[i];
		pushed++;
		if (n == ROOT_CHUNK || pushed == nroots) {
			/* The worker running this intake looks for work next. */
			push_ready_from(e, chunk, n, -1, pushed == n ? self : -1);
			n = 0;
		}
	}
}

void engine_graph_free_arrays(struct engine_graph *g)
{
	for (uint32_t i = g->tasks ? g->ntasks : 0; i-- > 0;) { /* last first: task_acc_free */
		struct engine_task *t = &g->tasks[i];
		if (!(t->flags & (TASK_ROUTES | TASK_ACC)))
			continue;
		free(t->routed);
		free(t->routed_off);
		free(t->routed_tokens);
		if (t->acc && t->acc->pdata_live)
			residency_data_fini(t->acc->pdata->res, t->acc->pdata);
		task_acc_free(t);
	}
	free(g->tasks);
	free(g->succ_off);
	free(g->succ);
	g->tasks = NULL;
	g->succ_off = g->succ = NULL;
}

/* Only ACTIVE devices take tasks. A task whose kernel no live device
 * implements any more (they are all GONE) is "runnable" on every ACTIVE
 * one, whose worker then fails it with -TDM_ENODEV (no_device_left): it
 * ends through the usual completion rather than waiting forever. */
bool engine_runnable(const struct engine *e, const struct engine_task *t, unsigned w)
{
	if (atomic_load_explicit(&e->uniform, memory_order_relaxed))
		return true;
	const struct engine_device *d = &e->devices[w];
	struct engine *m = (struct engine *)e; /* read only */
	if (device_state(e, w) != ENGINE_DEV_ACTIVE)
		return false;
	if (!e->supported[t->kernel->id * e->cap + w])
		return atomic_load_explicit(&m->live_capable[t->kernel->id],
		                            memory_order_relaxed) == 0;
	if (t->excl_nodes & (1u << d->node))
		return false;
	if (atomic_load_explicit(&d->healthy, memory_order_relaxed))
		return true;
	return atomic_load(&m->healthy_capable[t->kernel->id]) == 0;
}

bool engine_kernel_available(const struct engine *e, const struct kernel_def *k)
{
	struct engine *m = (struct engine *)e; /* read only */
	return atomic_load_explicit(&m->live_capable[k->id], memory_order_relaxed) != 0;
}

/* Counts, per kernel, the devices that implement it: not GONE, and ACTIVE
 * and healthy. */
static void recount_capable(struct engine *e)
{
	size_t nd = atomic_load(&e->ndevices);
	for (size_t k = 0; k < KERNEL_COUNT; k++) {
		uint32_t live = 0, healthy = 0;
		for (size_t w = 0; w < nd; w++) {
			if (!e->supported[k * e->cap + w])
				continue;
			uint8_t st = device_state(e, (unsigned)w);
			live += st != ENGINE_DEV_GONE;
			healthy += st == ENGINE_DEV_ACTIVE && atomic_load(&e->devices[w].healthy);
		}
		atomic_store(&e->live_capable[k], live);
		atomic_store(&e->healthy_capable[k], healthy);
	}
}

/* Could a device other than w take t, now or once it is resumed (an ACTIVE
 * or DRAINING device that implements it)? For a task of a device that left:
 * it then waits for one rather than failing. */
static bool placeable_elsewhere(struct engine *e, const struct engine_task *t, unsigned w)
{
	size_t nd = atomic_load(&e->ndevices);
	for (size_t i = 0; i < nd; i++)
		if (i != w && device_state(e, (unsigned)i) != ENGINE_DEV_GONE &&
		    e->supported[t->kernel->id * e->cap + i] &&
		    !(t->excl_nodes & (1u << e->devices[i].node)))
			return true;
	return false;
}

static size_t task_res_args(const struct engine_task *t, struct res_arg *args)
{
	for (uint32_t i = 0; i < t->call.nargs; i++)
		args[i] = (struct res_arg){ t->data[i], t->call.off[i], t->call.len[i],
			                    t->kernel->arg_modes[i] };
	/* An accumulator runs on its partial. */
	if ((t->flags & TASK_ACC) && t->acc->pdata_live)
		args[t->acc->arg] =
		        (struct res_arg){ t->acc->pdata, 0, t->call.len[t->acc->arg], TDM_RW };
	return t->call.nargs;
}

/* Copies what a finished graph wrote back to the host before its
 * completion is posted, and lets go of device copies the client may now
 * overwrite (residency_flush). */
static void flush_graph(struct engine *e, struct engine_graph *g)
{
	struct res_data *batch[64];
	size_t n = 0;
	int err = 0;

	for (uint32_t i = 0; i < g->ntasks; i++) {
		const struct engine_task *t = &g->tasks[i];
		for (uint32_t a = 0; a < t->call.nargs; a++) {
			if (!t->data[a])
				continue;
			batch[n++] = t->data[a];
			if (n == 64) {
				err = err ? err : residency_flush(e->res, batch, n);
				n = 0;
			}
		}
	}
	if (n)
		err = err ? err : residency_flush(e->res, batch, n);
	if (err) {
		int32_t ok = 0;
		atomic_compare_exchange_strong(&g->status, &ok, -TDM_EDEVICE);
	}
}

/* What the model expects of t on this worker's device, recorded before it
 * runs so that the completion can show predicted against actual. */
static void predict_task(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct cost_pred cp;
	if (!e->prof || t->kernel->id == KERNEL_NOOP)
		return;
	profiler_predict(e->prof, t->kernel->id, w->model_dev, &t->feat, &cp);
	t->pred_ns = (uint64_t)cp.ns;
	t->pred_spread_ns = (uint64_t)cp.spread_ns;
}

/* The tokens of each expert of router t, once route counted them into
 * t->routed: t->routed_off and t->routed_tokens, from the same copy. */
static int routing_tokens(struct engine_task *t, uint32_t ne, const void *const *copy)
{
	uint32_t total = 0;
	for (uint32_t x = 0; x < ne; x++)
		total += t->routed[x];
	if (!(t->routed_off = malloc(((size_t)ne + 1) * sizeof(*t->routed_off))) ||
	    !(t->routed_tokens = malloc((total ? total : 1) * sizeof(*t->routed_tokens))))
		return -TDM_ENOMEM;
	t->routed_off[0] = 0;
	for (uint32_t x = 0; x < ne; x++)
		t->routed_off[x + 1] = t->routed_off[x] + t->routed[x];
	/* routed_off[x] is where x's next token goes; csr_close moves the
	 * starts back once each token has its slot. */
	t->kernel->route_tokens(&t->call, copy, t->routed_off, t->routed_tokens);
	csr_close(t->routed_off, ne);
	return 0;
}

/* A router that guards tasks ran: its outputs, copied once to the host
 * (it may have run on a device; the client may write them meanwhile),
 * are checked and counted per expert into t->routed by the kernel's route
 * hook, and listed per expert (routing_tokens). 0, or why the router's
 * task fails. */
static int read_routing(struct engine *e, struct engine_task *t)
{
	const struct kernel_def *k = t->kernel;
	struct res_arg args[TDM_MAX_ARGS];
	void *copy[TDM_MAX_ARGS] = { 0 };
	size_t nargs = 0, nwaits;
	uint32_t ne = k->route_experts(&t->call);
	char why[160] = "";
	int err = 0;

	free(t->routed);
	free(t->routed_off);
	free(t->routed_tokens);
	t->routed_off = t->routed_tokens = NULL;
	if (!(t->routed = calloc(ne ? ne : 1, sizeof(*t->routed))))
		return -TDM_ENOMEM;
	for (uint32_t i = 0; i < t->call.nargs; i++) {
		if (!(k->arg_modes[i] & TDM_W))
			continue;
		if (!(copy[i] = malloc(t->call.len[i]))) {
			err = -TDM_ENOMEM;
			goto out;
		}
		if (t->data[i])
			args[nargs++] = (struct res_arg){ t->data[i], t->call.off[i],
				                          t->call.len[i], TDM_R };
	}
	if (e->has_accel && nargs &&
	    (err = residency_acquire(e->res, 0, args, nargs, NULL, &nwaits, NULL, NULL)))
		goto out;
	for (uint32_t i = 0; i < t->call.nargs; i++)
		if (copy[i])
			memcpy(copy[i], t->call.ptr[i], t->call.len[i]);
	if (e->has_accel && nargs)
		residency_release(e->res, 0, args, nargs, true);
	if ((err = k->route(&t->call, (const void *const *)copy, t->routed, why, sizeof(why))))
		log_warn("task %u (%s): routing rejected: %s", t->index, k->name, why);
	else if (k->route_tokens)
		err = routing_tokens(t, ne, (const void *const *)copy);
out:
	for (uint32_t i = 0; i < TDM_MAX_ARGS; i++)
		free(copy[i]);
	return err;
}

/* A guarded task s was released: whether no token was routed to it (it
 * then completes unrun); otherwise its features follow the tokens routed
 * to it, and its call carries them where its kernel takes them. The router
 * ran before it (intake orders them). A graph that failed already cancels
 * s as usual. */
static bool route_skip(struct engine_task *s)
{
	struct engine_graph *g = s->graph;
	/* Set before the graph ran: the simulator replaying a recorded run's
	 * skipped task (its router and routing are not replayed). */
	if (s->flags & TASK_SKIPPED)
		return true;
	if (!s->guard_router || atomic_load_explicit(&g->status, memory_order_relaxed) != 0)
		return false;
	const struct engine_task *r = &g->tasks[s->guard_router - 1];
	if (!r->routed)
		return false;
	uint32_t tokens = r->routed[s->guard_expert];
	if (tokens == 0)
		return true;
	if (s->kernel->routed_features)
		s->kernel->routed_features(&s->call, tokens, &s->feat);
	if (r->routed_tokens && s->kernel->takes_routed &&
	    s->kernel->takes_routed(&s->call, s->guard_expert, r->kernel, &r->call)) {
		s->call.routed = r->routed_tokens + r->routed_off[s->guard_expert];
		s->call.nrouted = tokens;
	}
	return false;
}

/* Accumulator t is over (ran, failed, canceled or skipped). The group's
 * last one adds every partial that holds a contribution to the range, in
 * task order, on the host, before any task after the group is released:
 * the sum does not depend on which finished first, nor where each ran. 0
 * or -TDM_EDEVICE (a copy back failed). */
static int acc_over(struct engine *e, struct engine_task *t)
{
	struct task_acc *a = t->acc;
	struct acc_group *grp = a->group;
	struct engine_graph *g = t->graph;
	size_t nw;
	int err = 0;

	a->ran = t->status == 0 && !(t->flags & TASK_SKIPPED);
	if (atomic_fetch_sub_explicit(&grp->left, 1, memory_order_acq_rel) != 1 ||
	    atomic_load_explicit(&g->status, memory_order_relaxed) != 0)
		return 0;
	size_t n = t->call.len[a->arg] / sizeof(float);
	float *out = a->out_ptr;
	struct res_arg range = { t->data[a->arg], a->out_off, t->call.len[a->arg], TDM_RW };
	bool res = e->has_accel && range.data;
	if (res && (err = residency_acquire(e->res, 0, &range, 1, NULL, &nw, NULL, NULL)))
		return err;
	for (uint32_t m = 0; m < grp->n; m++) {
		const struct task_acc *ma = g->tasks[grp->members[m]].acc;
		if (!ma->ran)
			continue;
		struct res_arg part = { ma->pdata, 0, t->call.len[a->arg], TDM_R };
		if (res && ma->pdata_live &&
		    (err = residency_acquire(e->res, 0, &part, 1, NULL, &nw, NULL, NULL)))
			break;
		for (size_t i = 0; i < n; i++)
			out[i] += ma->partial[i];
		if (res && ma->pdata_live)
			residency_release(e->res, 0, &part, 1, true);
	}
	if (res)
		residency_release(e->res, 0, &range, 1, err == 0);
	return err;
}

/* Accounting, dependents, graph completion: the task is over (run, failed
 * or skipped). Dependents released with no token routed to them go to
 * w->skips, which finish_task completes in turn. */
static void finish_one(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_graph *g = t->graph;
	struct engine_device *d = &e->devices[w->index];
	size_t nready = 0;
	/* The sample, taken now: the graph may be gone once remaining drops. */
	bool learn = e->prof && t->status == 0 && t->end_ns > t->start_ns &&
	             t->kernel->id != KERNEL_NOOP && t != w->warmup;
	uint32_t kernel = t->kernel->id;
	struct kernel_features feat = t->feat;
	uint64_t took = t->end_ns - t->start_ns;

	bool skipped = t->flags & TASK_SKIPPED;
	if (t->flags & TASK_ACC) {
		int err = acc_over(e, t);
		if (err) {
			int32_t ok = 0;
			atomic_compare_exchange_strong(&g->status, &ok, err);
			log_warn("task %u (%s): its sum could not be made: %s", t->index,
			         t->kernel->name, tdm_strerror(err));
		}
	}
	if ((t->flags & TASK_ROUTES) && t->status == 0 && !skipped) {
		int err = read_routing(e, t);
		if (err) {
			int32_t ok = 0;
			t->status = err;
			atomic_compare_exchange_strong(&g->status, &ok, err);
			atomic_fetch_add(&e->tasks_failed, 1);
			learn = false;
		}
	}

	/* A task that ends without running (canceled, failed before it
	 * started) gives back what a prefetch held for it. */
	if (e->has_accel) {
		uint16_t pf = atomic_exchange(&t->prefetch, PREFETCH_CLAIMED);
		if (pf && pf != PREFETCH_CLAIMED) {
			struct res_arg args[TDM_MAX_ARGS];
			residency_prefetch_drop(e->res, pf - 1u, args, task_res_args(t, args));
		}
	}
	atomic_fetch_add_explicit(&d->tasks_run, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->busy_ns, t->end_ns - t->start_ns, memory_order_relaxed);
	/* A skipped task never reached the policy, nor ran. */
	if (t->status == 0 && !skipped)
		account_task(d, t);
	if (e->policy->task_done && !skipped &&
	    !atomic_load_explicit(&e->fallback, memory_order_relaxed))
		e->policy->task_done(e->policy_priv, t, w->index);

	for (uint32_t i = g->succ_off[t->index]; i < g->succ_off[t->index + 1]; i++) {
		struct engine_task *s = &g->tasks[g->succ[i]];
		if (atomic_fetch_sub_explicit(&s->ndeps, 1, memory_order_acq_rel) != 1)
			continue;
		if (route_skip(s)) {
			if (grow(&w->skips, &w->skips_cap, w->nskips + 1)) {
				w->skips[w->nskips++] = s;
				continue;
			}
			/* No memory: it runs (a guarded kernel skips it too). */
			s->flags &= (uint8_t)~TASK_SKIPPED;
		}
		if (!grow(&w->ready, &w->ready_cap, nready + 1)) {
			push_ready(e, &s, 1, (int)w->index);
			continue;
		}
		w->ready[nready++] = s;
	}
	if (nready)
		push_ready(e, w->ready, nready, (int)w->index);

	atomic_fetch_add_explicit(&e->tasks_done, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&e->tasks_in_flight, 1, memory_order_relaxed);
	if (atomic_fetch_sub_explicit(&g->remaining, 1, memory_order_acq_rel) == 1) {
		graph_untrack(e, g);
		/* Even after a fallback: it frees the policy's per-graph state. */
		if (e->policy->graph_finished)
			e->policy->graph_finished(e->policy_priv, g);
		if (e->has_accel && g->any_args)
			flush_graph(e, g);
		atomic_fetch_add(&e->graphs_done, 1);
		account_graph(g);
		e->hooks.graph_done(e->hooks.ctx, g);
	}
	/* After the completion is posted: learning costs the client nothing. */
	if (learn)
		profiler_observe(e->prof, kernel, w->model_dev, &feat, took);
}

static void finish_task(struct engine *e, struct worker *w, struct engine_task *t)
{
	finish_one(e, w, t);
	/* Skipped tasks complete here, at zero cost, their outputs untouched:
	 * iteratively, as one's dependents may be skipped too. */
	while (w->nskips) {
		struct engine_task *s = w->skips[--w->nskips];
		s->flags |= TASK_SKIPPED;
		s->status = 0;
		s->device = (uint16_t)w->index;
		s->queued_ns = s->start_ns = s->end_ns = clock_now(e->clock);
		if (e->policy->task_skipped &&
		    !atomic_load_explicit(&e->fallback, memory_order_relaxed))
			e->policy->task_skipped(e->policy_priv, s);
		finish_one(e, w, s);
	}
}

/* The task's result is no longer wanted (its client left, or the daemon
 * gave up waiting at shutdown): skipped, or stopped by the kernel. */
static void cancel_task(struct engine *e, struct worker *w, struct engine_task *t)
{
	int32_t ok = 0;
	t->status = -TDM_ECANCELED;
	atomic_compare_exchange_strong(&t->graph->status, &ok, -TDM_ECANCELED);
	atomic_fetch_add(&e->tasks_canceled, 1);
	finish_task(e, w, t);
}

static void fail_task(struct engine *e, struct worker *w, struct engine_task *t, int err)
{
	int32_t ok = 0;
	t->status = err;
	/* -TDM_ENODEV (its devices left, or its data with one) says so to the
	 * client; any other failure is the device's. */
	atomic_compare_exchange_strong(&t->graph->status, &ok,
	                               err == -TDM_ENODEV ? -TDM_ENODEV : -TDM_EDEVICE);
	atomic_fetch_add(&e->tasks_failed, 1);
	log_warn("kernel %s failed on %s: %s", t->kernel->name, e->devices[w->index].dev.name,
	         tdm_strerror(err));
	finish_task(e, w, t);
}

/* Gives a task back to the policy for another device. */
static void requeue(struct engine *e, struct engine_task *t)
{
	t->status = 0;
	push_ready(e, &t, 1, -1);
}

/* A device fault (the device, not the kernel's inputs, failed): the device
 * is marked unhealthy and the task moves to another device if one can run
 * it; otherwise its graph fails. */
static void device_fault(struct engine *e, struct worker *w, struct engine_task *t, int err)
{
	struct engine_device *d = &e->devices[w->index];
	uint64_t faults = atomic_fetch_add(&d->faults, 1) + 1;
	if (atomic_exchange(&d->healthy, false)) {
		atomic_fetch_add(&e->dev_seq, 1);
		atomic_store(&e->uniform, false);
		recount_capable(e);
		log_warn("%s: marked unhealthy after a device fault (%s)", d->dev.name,
		         tdm_strerror(err));
	}
	/* A device that was removed (or failed past the limit) before this
	 * fault: its tasks move without it counting against them, and wait for
	 * a device that may come back rather than fail. */
	bool gone = device_state(e, w->index) == ENGINE_DEV_GONE;
	if (!gone && faults > e->fault_limit) {
		log_warn("%s: %llu device faults, over the limit of %u: removed", d->dev.name,
		         (unsigned long long)faults, e->fault_limit);
		pthread_mutex_lock(&e->dev_lock);
		leave_device(e, w->index, ENGINE_DEV_GONE);
		pthread_mutex_unlock(&e->dev_lock);
	}
	/* Within its attempts a task waits for any device that may take it,
	 * now or once resumed: the others may be draining, and with no other
	 * healthy device it runs again here (it may be the last fault before
	 * this device leaves). */
	if (gone ? placeable_elsewhere(e, t, w->index)
	         : ++t->attempts < MAX_ATTEMPTS && placeable_elsewhere(e, t, w->index)) {
		log_info("%s: task %u of kernel %s moves to another device", d->dev.name, t->index,
		         t->kernel->name);
		requeue(e, t);
		return;
	}
	fail_task(e, w, t, gone ? -TDM_ENODEV : err);
}

static void task_failed(struct engine *e, struct worker *w, struct engine_task *t, int err)
{
	if (err == -TDM_EDEVICE)
		device_fault(e, w, t, err);
	else
		fail_task(e, w, t, err);
}

static int injected_fault(struct engine_device *d)
{
	uint32_t n = atomic_load_explicit(&d->inject_faults, memory_order_relaxed);
	while (n && !atomic_compare_exchange_weak(&d->inject_faults, &n, n - 1))
		;
	return n ? -TDM_EDEVICE : 0;
}

/* The client is gone or an earlier task of the graph failed: nothing
 * downstream can be right, so the work is skipped. */
static bool skip_canceled(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_graph *g = t->graph;
	if (!atomic_load_explicit(&g->flow->canceled, memory_order_relaxed) &&
	    atomic_load_explicit(&g->status, memory_order_relaxed) == 0)
		return false;
	t->end_ns = t->start_ns;
	cancel_task(e, w, t);
	return true;
}

static int acquire_args(struct engine *e, unsigned node, struct engine_task *t,
                        struct res_arg *args, size_t nargs, struct backend_event **waits,
                        size_t *nwaits, uint64_t *off);

/* The devices that implement t's kernel are all GONE: engine_runnable let
 * this worker take it so that it fails here. */
static bool no_device_left(struct engine *e, struct worker *w, struct engine_task *t)
{
	if (e->supported[t->kernel->id * e->cap + w->index])
		return false;
	t->end_ns = t->start_ns;
	log_warn("task %u (%s): no device left that implements it", t->index, t->kernel->name);
	fail_task(e, w, t, -TDM_ENODEV);
	return true;
}

/* Host devices: inputs valid on the host, run, outputs owned by the host.
 * Returns the task's end time (the task may be freed once it returns). */
static uint64_t run_on_host(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_device *d = &e->devices[w->index];
	struct res_arg args[TDM_MAX_ARGS];
	size_t nargs = 0, nwaits;
	int err;

	uint64_t start_ns = t->start_ns = clock_now(e->clock);
	t->device = d->index;
	if (skip_canceled(e, w, t) || no_device_left(e, w, t))
		return start_ns;
	atomic_store_explicit(&d->staged, 1, memory_order_relaxed);
	err = injected_fault(d);
	if (!err && e->has_accel) {
		nargs = task_res_args(t, args);
		err = acquire_args(e, 0, t, args, nargs, NULL, &nwaits, NULL);
	}
	if (!err) {
		predict_task(e, w, t);
		/* Device time only: the copies residency made are not the kernel's. */
		if (nargs)
			t->start_ns = clock_now(e->clock);
		/* The kernel looks at its flow's flag while it runs. */
		t->call.cancel = &t->graph->flow->canceled;
		err = d->dev.ops->launch(&d->dev, t->kernel, &t->call);
	}
	if (e->has_accel && nargs)
		residency_release(e->res, 0, args, nargs, err == 0);
	uint64_t end_ns = t->end_ns = clock_now(e->clock);
	atomic_store_explicit(&d->staged, 0, memory_order_relaxed);
	if (err == -TDM_ECANCELED && tdm_kernel_canceled(&t->call)) {
		cancel_task(e, w, t);
		return end_ns;
	}
	if (err) {
		task_failed(e, w, t, err);
		return end_ns;
	}
	t->status = 0;
	finish_task(e, w, t);
	return end_ns;
}

/* The device has no room for the task's data: with work in flight, wait
 * for it; otherwise the task must go to another memory node. */
static void no_room(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_device *d = &e->devices[w->index];
	if (w->pipe_n) {
		w->deferred = t;
		return;
	}
	t->excl_nodes |= (uint16_t)(1u << d->node);
	atomic_store(&e->uniform, false);
	log_info("%s: no room for task %u of kernel %s", d->dev.name, t->index, t->kernel->name);
	size_t nd = atomic_load(&e->ndevices);
	for (size_t i = 0; i < nd; i++) {
		if (engine_runnable(e, t, (unsigned)i)) {
			requeue(e, t);
			return;
		}
	}
	t->start_ns = t->end_ns = clock_now(e->clock);
	fail_task(e, w, t, -TDM_ENOMEM);
}

/* The task starts to run on `node`: its inputs are made valid there,
 * consuming the holds of a prefetch to that node (one to another node is
 * dropped). */
static int acquire_args(struct engine *e, unsigned node, struct engine_task *t,
                        struct res_arg *args, size_t nargs, struct backend_event **waits,
                        size_t *nwaits, uint64_t *off)
{
	uint16_t pf = atomic_exchange(&t->prefetch, PREFETCH_CLAIMED);
	if (pf && pf != PREFETCH_CLAIMED && pf - 1u != node) {
		residency_prefetch_drop(e->res, pf - 1u, args, nargs);
		pf = 0;
	}
	if (!pf || pf == PREFETCH_CLAIMED)
		return residency_acquire(e->res, node, args, nargs, waits, nwaits, t->call.mem,
		                         off);
	int err = residency_acquire_prefetched(e->res, node, args, nargs, waits, nwaits,
	                                       t->call.mem, off);
	if (err)
		residency_prefetch_drop(e->res, node, args, nargs);
	return err;
}

/* Tasks the policy committed to this accelerator beyond what the pipe
 * holds get their inputs copied now, so the copies overlap the compute in
 * flight. Only the device's own worker takes tasks from its queue, so the
 * tasks peeked at stay queued while this runs (the watchdog waits for it
 * before it moves queued tasks elsewhere). */
#define PREFETCH_AHEAD 4

static void prefetch_ahead(struct engine *e, struct worker *w)
{
	struct engine_device *d = &e->devices[w->index];
	struct engine_task *next[PREFETCH_AHEAD];
	struct res_arg args[TDM_MAX_ARGS];

	if ((!e->policy->peek && !e->policy->prefetch) ||
	    !atomic_load_explicit(&e->any_args, memory_order_relaxed))
		return;
	atomic_fetch_add(&e->prefetching, 1);
	/* After the count went up: a drain that set the state first waits for
	 * this prefetch, or this one sees the state (unqueue_device). */
	if (atomic_load(&e->fallback) || atomic_load(&e->moving) ||
	    device_state(e, w->index) != ENGINE_DEV_ACTIVE) {
		atomic_fetch_sub(&e->prefetching, 1);
		return;
	}
	size_t n = e->policy->peek ? e->policy->peek(e->policy_priv, w->index, next, PREFETCH_AHEAD)
	                           : 0;
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = next[i];
		uint64_t bytes = 0;
		if (atomic_load_explicit(&t->prefetch, memory_order_relaxed))
			continue;
		size_t nargs = task_res_args(t, args);
		if (residency_prefetch(e->res, d->node, args, nargs, &bytes) != 0)
			continue;
		uint16_t none = 0;
		if (!atomic_compare_exchange_strong(&t->prefetch, &none, (uint16_t)(d->node + 1)))
			residency_prefetch_drop(e->res, d->node, args, nargs);
	}
	if (e->policy->prefetch) /* data the policy wants here ahead of its tasks */
		e->policy->prefetch(e->policy_priv, w->index);
	atomic_fetch_sub(&e->prefetching, 1);
}

/* Accelerators: issues the task's input copies and the kernel, without
 * waiting; the task joins the pipe. */
static void stage_on_accel(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_device *d = &e->devices[w->index];
	struct res_arg args[TDM_MAX_ARGS];
	struct backend_event *waits[2 * TDM_MAX_ARGS], *done = NULL;
	size_t nargs, nwaits = 0;
	uint64_t off[TDM_MAX_ARGS];
	int err;

	t->device = d->index;
	t->start_ns = clock_now(e->clock);
	if (skip_canceled(e, w, t) || no_device_left(e, w, t))
		return;
	err = injected_fault(d);
	if (err) {
		t->end_ns = t->start_ns;
		task_failed(e, w, t, err);
		return;
	}
	nargs = task_res_args(t, args);
	err = acquire_args(e, d->node, t, args, nargs, waits, &nwaits, off);
	if (err == -TDM_ENOMEM) {
		no_room(e, w, t);
		return;
	}
	if (!err) {
		predict_task(e, w, t);
		err = d->dev.ops->launch_async(&d->dev, t->kernel, &t->call, waits, nwaits, &done);
		if (err)
			residency_release(e->res, d->node, args, nargs, false);
	}
	if (err) {
		t->end_ns = clock_now(e->clock);
		task_failed(e, w, t, err);
		return;
	}
	struct inflight *slot = &w->pipe[(w->pipe_head + w->pipe_n) % e->depth];
	slot->task = t;
	slot->done = done;
	w->pipe_n++;
	atomic_store_explicit(&d->staged, (uint32_t)w->pipe_n, memory_order_relaxed);
}

/* Waits for the oldest task in the pipe and completes it. */
static void finish_oldest(struct engine *e, struct worker *w);

static void complete_oldest(struct engine *e, struct worker *w)
{
	finish_oldest(e, w);
	atomic_store_explicit(&e->devices[w->index].staged, (uint32_t)w->pipe_n,
	                      memory_order_relaxed);
}

static void finish_oldest(struct engine *e, struct worker *w)
{
	struct engine_device *d = &e->devices[w->index];
	struct inflight slot = w->pipe[w->pipe_head];
	struct engine_task *t = slot.task;
	struct res_arg args[TDM_MAX_ARGS];
	size_t nargs;

	w->pipe_head = (w->pipe_head + 1) % e->depth;
	w->pipe_n--;
	/* staged still counts this task until it is over (complete_oldest). */
	int err = d->dev.ops->event_wait(&d->dev, slot.done);
	uint64_t waited = clock_now(e->clock);
	uint64_t started = d->dev.ops->event_started && !err
	                           ? d->dev.ops->event_started(&d->dev, slot.done)
	                           : 0;
	uint64_t ended = d->dev.ops->event_ended && !err
	                         ? d->dev.ops->event_ended(&d->dev, slot.done, waited)
	                         : 0;
	d->dev.ops->event_release(&d->dev, slot.done);
	t->end_ns = ended && ended < waited ? ended : waited;
	/* The compute queue is in order: this task started when the one
	 * before it ended, or when it was staged (unless the device knows). */
	if (started)
		t->start_ns = started;
	else if (t->start_ns < w->last_end_ns)
		t->start_ns = w->last_end_ns;
	/* The device's end follows a clock offset that is still being
	 * learned: never before the start. */
	if (t->end_ns < t->start_ns)
		t->end_ns = t->start_ns;
	w->last_end_ns = t->end_ns;
	nargs = task_res_args(t, args);
	residency_release(e->res, d->node, args, nargs, err == 0);
	if (err) {
		task_failed(e, w, t, err);
		return;
	}
	t->status = 0;
	uint32_t k = t->kernel->id;
	if (d->dev.warms_up && k < KERNEL_COUNT && !(w->ran[k / 64] >> (k % 64) & 1)) {
		w->ran[k / 64] |= 1ull << (k % 64);
		w->warmup = t;
	}
	finish_task(e, w, t);
	w->warmup = NULL;
}

static void run_task(struct engine *e, struct worker *w, struct engine_task *t)
{
	if (!backend_is_accelerator(&e->devices[w->index].dev)) {
		run_on_host(e, w, t);
		return;
	}
	stage_on_accel(e, w, t);
	while (w->pipe_n)
		complete_oldest(e, w);
	if (w->deferred) {
		t = w->deferred;
		w->deferred = NULL;
		run_task(e, w, t);
	}
}

/* A task this worker took but found no room for waits for the device
 * only while the device takes tasks; otherwise it goes elsewhere. */
static void requeue_deferred(struct engine *e, struct worker *w)
{
	if (!w->deferred || device_state(e, w->index) == ENGINE_DEV_ACTIVE)
		return;
	struct engine_task *t = w->deferred;
	w->deferred = NULL;
	requeue(e, t);
}

bool engine_run_one(struct engine *e, unsigned worker)
{
	struct worker *w = &e->workers[worker];
	struct engine_task *t = engine_pick(e, worker);
	if (!t)
		return false;
	run_task(e, w, t);
	picked(w);
	return true;
}

/* ---- simulation: a driver on a virtual clock steps the workers ---- */

size_t engine_sim_stage(struct engine *e, unsigned wi)
{
	struct worker *w = &e->workers[wi];
	size_t n = 0;
	if (!w->pipe)
		return 0;
	requeue_deferred(e, w);
	if (w->deferred) {
		struct engine_task *t = w->deferred;
		w->deferred = NULL;
		stage_on_accel(e, w, t);
		n++;
	}
	while (!w->deferred && w->pipe_n < w->depth) {
		struct engine_task *t = engine_pick(e, wi);
		if (!t)
			break;
		stage_on_accel(e, w, t);
		picked(w);
		n++;
	}
	return n;
}

bool engine_sim_may_stage(const struct engine *e, unsigned wi)
{
	const struct worker *w = &e->workers[wi];
	if (!w->pipe)
		return false;
	if (w->deferred)
		return true;
	if (w->pipe_n >= w->depth)
		return false;
	/* A drained device's pick sweeps, the fallback's reads the FIFO:
	 * those take the whole path. */
	if (!e->policy->may_pick || atomic_load_explicit(&e->fallback, memory_order_acquire) ||
	    device_state(e, wi) != ENGINE_DEV_ACTIVE)
		return true;
	return e->policy->may_pick(e->policy_priv, wi);
}

bool engine_sim_full(const struct engine *e, unsigned wi)
{
	const struct worker *w = &e->workers[wi];
	return w->pipe && !w->deferred && w->pipe_n >= w->depth;
}

uint32_t engine_sim_epoch(const struct engine *e)
{
	return atomic_load_explicit(&((struct engine *)e)->epoch, memory_order_relaxed);
}

struct backend_event *engine_sim_oldest(const struct engine *e, unsigned wi)
{
	const struct worker *w = &e->workers[wi];
	return w->pipe && w->pipe_n ? w->pipe[w->pipe_head].done : NULL;
}

size_t engine_sim_peek(struct engine *e, unsigned wi, struct engine_task **out, size_t max)
{
	if (!e->policy->peek || atomic_load_explicit(&e->fallback, memory_order_relaxed))
		return 0;
	return e->policy->peek(e->policy_priv, wi, out, max);
}

void engine_sim_complete(struct engine *e, unsigned wi)
{
	struct worker *w = &e->workers[wi];
	if (!w->pipe || !w->pipe_n)
		return;
	prefetch_ahead(e, w);
	complete_oldest(e, w);
	/* A removed device's last staged task: it lets go of the rest. */
	if (!w->pipe_n && device_state(e, wi) == ENGINE_DEV_GONE) {
		pthread_mutex_lock(&e->dev_lock);
		retire_device(e, wi);
		pthread_mutex_unlock(&e->dev_lock);
	}
}

bool engine_sim_stalled(struct engine *e)
{
	if (atomic_load(&e->queued) == 0)
		return false;
	if (!atomic_load(&e->fallback))
		engine_fall_back(e, "holds ready tasks while every device idles");
	take_back_tasks(e);
	return true;
}

void engine_sim_submit(struct engine *e, struct engine_graph *g, int wi)
{
	const struct engine *was_engine = tls_engine;
	int was_worker = tls_worker;
	tls_engine = e;
	tls_worker = wi;
	engine_submit(e, g);
	tls_engine = was_engine;
	tls_worker = was_worker;
}

void engine_sim_sleep(struct engine *e, unsigned wi, bool on)
{
	atomic_store(&e->workers[wi].asleep, on);
	if (on)
		atomic_fetch_add(&e->sleepers, 1);
	else
		atomic_fetch_sub(&e->sleepers, 1);
}

bool engine_sim_asleep(const struct engine *e, unsigned wi)
{
	return atomic_load(&((struct engine *)e)->workers[wi].asleep);
}

void engine_note_exclusions(struct engine *e)
{
	atomic_store(&e->uniform, false);
}

static bool front_end_poll(struct engine *e, bool woken)
{
	return e->hooks.poll && e->hooks.poll(e->hooks.ctx, woken);
}

/* Waits until the epoch moves away from `seen` or stop is set: spins for
 * spin_us (looking at the front end too), then sleeps in poll(). */
static void worker_idle_wait(struct engine *e, struct worker *w, uint32_t seen);

static void worker_idle(struct engine *e, struct worker *w, uint32_t seen)
{
	atomic_fetch_add(&e->idle_workers, 1);
	if (w->host)
		atomic_fetch_add(&e->idle_host, 1);
	worker_idle_wait(e, w, seen);
	if (w->host)
		atomic_fetch_sub(&e->idle_host, 1);
	atomic_fetch_sub(&e->idle_workers, 1);
}

/* Whether an idle worker looks at the front end (submission rings and
 * their doorbells). CPU-core workers do; an accelerator's worker only when
 * no CPU-core worker is idle to do it (there are none, or all are busy):
 * otherwise every doorbell would wake it too, for intake that a core worker
 * does anyway, and on a small machine it would take the core the client and
 * the core worker need. Accelerator workers still wake for the tasks the
 * policy gives them (kicks). */
static bool listens(const struct engine *e, const struct worker *w)
{
	return w->host || e->nhost == 0 ||
	       atomic_load_explicit(&e->idle_host, memory_order_relaxed) == 0;
}

static void sleep_sets_open(struct engine *e, struct worker *w)
{
	for (int k = 0; k < 2; k++) {
		int fds[3] = { w->kick_fd, e->wake_fd, k ? e->poll_fd : -1 };
		w->sleep_ep[k] = epoll_create1(EPOLL_CLOEXEC);
		for (int i = 0; i < 3 && w->sleep_ep[k] >= 0; i++) {
			struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };
			if (fds[i] >= 0 && epoll_ctl(w->sleep_ep[k], EPOLL_CTL_ADD, fds[i], &ev)) {
				close(w->sleep_ep[k]);
				w->sleep_ep[k] = -1;
			}
		}
		if (w->sleep_ep[k] < 0)
			log_warn("engine: worker %u sleeps in poll(): epoll: %s", w->index,
			         strerror(errno));
	}
}

static void sleep_sets_close(struct worker *w)
{
	for (int k = 0; k < 2; k++)
		if (w->sleep_ep[k] >= 0)
			close(w->sleep_ep[k]);
}

/* Sleeps until kicked (*kicked), stopped, rung at the front end (with
 * front; *rang) or timeout ms. Returns the number of descriptors ready. */
static int worker_sleep(struct engine *e, struct worker *w, bool front, int timeout, bool *kicked,
                        bool *rang)
{
	bool bells = front && e->poll_fd >= 0;
	int ep = w->sleep_ep[bells], n;
	*kicked = *rang = false;
	if (ep >= 0) {
		struct epoll_event evs[3];
		n = epoll_wait(ep, evs, 3, timeout);
		for (int i = 0; i < n; i++) {
			*kicked |= evs[i].data.fd == w->kick_fd;
			*rang |= evs[i].data.fd == e->poll_fd;
		}
		return n;
	}
	struct pollfd fds[3] = { { w->kick_fd, POLLIN, 0 },
		                 { e->wake_fd, POLLIN, 0 },
		                 { e->poll_fd, POLLIN, 0 } };
	n = poll(fds, bells ? 3 : 2, timeout);
	*kicked = fds[0].revents & POLLIN;
	*rang = fds[2].revents & POLLIN;
	return n;
}

static void worker_idle_wait(struct engine *e, struct worker *w, uint32_t seen)
{
	uint32_t spin_us = atomic_load_explicit(&e->spin_us, memory_order_relaxed);
	bool front = e->hooks.poll && listens(e, w);
	if (spin_us) {
		uint64_t deadline = clock_monotonic_ns() + (uint64_t)spin_us * 1000u;
		bool found = false;
		if (front && e->hooks.polling)
			e->hooks.polling(e->hooks.ctx, true);
		for (unsigned iter = 0; !found; iter++) {
			if (atomic_load_explicit(&e->epoch, memory_order_acquire) != seen ||
			    (front && front_end_poll(e, false))) {
				found = true;
				break;
			}
			cpu_relax();
			/* Let a client or another worker sharing this core run, the
			 * first time at once: a client on this core that spins for
			 * the completion just posted sees it only then (same-core
			 * spinning round trip p50 ~7.1 -> ~6.2 us). */
			if (iter % 16 == 0) {
				sched_yield();
				if (clock_monotonic_ns() >= deadline)
					break;
			}
		}
		if (front && e->hooks.polling) {
			e->hooks.polling(e->hooks.ctx, false);
			/* A client that still saw the flag rang no doorbell: look
			 * even when the epoch moved, for a worker that leaves (its
			 * device gone) does not come back to look. */
			found = front_end_poll(e, false) || found;
		}
		if (found)
			return;
	} else if (front && front_end_poll(e, false)) {
		return; /* a session was busy: look again rather than sleep */
	}
	/* Ready tasks nobody takes: wake up to let the watchdog look. */
	int timeout = atomic_load(&e->queued) ? (int)e->watchdog_ms : -1, n = 1;
	bool kicked = false, rang = false;
	atomic_fetch_add(&e->sleepers, 1);
	atomic_store(&w->asleep, true);
	/* Set asleep, then look at the epoch: a producer that bumped it after
	 * this look sees asleep and kicks. */
	if (atomic_load(&e->epoch) == seen && !atomic_load(&e->stop))
		n = worker_sleep(e, w, front, timeout, &kicked, &rang);
	atomic_store(&w->asleep, false);
	atomic_fetch_sub(&e->sleepers, 1);
	if (n == 0) {
		if (atomic_load(&e->fallback))
			take_back_tasks(e);
		else
			watchdog_check(e);
	}
	if (kicked) {
		uint64_t v;
		if (read(w->kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_error("engine: wake: %s", strerror(errno));
	}
	/* wake_fd rings only at stop and stays set, so every sleeper wakes. */
	if (rang)
		front_end_poll(e, true);
}

/* Several wake-ups may have merged into one: pass it on while work is left
 * for another sleeper. */
static void pass_wakeup(struct engine *e)
{
	if (atomic_load_explicit(&e->sleepers, memory_order_relaxed) &&
	    atomic_load_explicit(&e->queued, memory_order_relaxed))
		wake_sleepers(e, 1, UINT64_MAX, -1);
}

static void maybe_poll_front_end(struct engine *e, struct worker *w, uint64_t now)
{
	if (now - w->last_poll_ns >= BUSY_POLL_NS) {
		w->last_poll_ns = now;
		front_end_poll(e, false);
	}
}

/* A worker whose device is gone leaves: what it saw at the front end and
 * could not take (a session another thread was on) goes to a worker that
 * stays, made to look again (the epoch moves too, so that one about to
 * sleep does not); nobody else may be awake to. */
static void leave_front_end(struct engine *e, struct worker *w)
{
	if (listens(e, w) && front_end_poll(e, false))
		engine_notify(e, 1);
}

static void host_worker_loop(struct engine *e, struct worker *w)
{
	while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
		uint32_t seen = atomic_load(&e->epoch);
		if (device_state(e, w->index) == ENGINE_DEV_GONE) {
			leave_front_end(e, w);
			break;
		}
		struct engine_task *t = engine_pick(e, w->index);
		if (t) {
			pass_wakeup(e);
			uint64_t end = run_on_host(e, w, t);
			picked(w);
			maybe_poll_front_end(e, w, end);
			continue;
		}
		worker_idle(e, w, seen);
	}
}

/* Keeps up to `depth` tasks enqueued on the device, so that the next
 * tasks' inputs are copied while the current one computes. */
static void accel_worker_loop(struct engine *e, struct worker *w)
{
	while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
		uint32_t seen = atomic_load(&e->epoch);
		bool took = false;
		requeue_deferred(e, w);
		if (!w->pipe_n && device_state(e, w->index) == ENGINE_DEV_GONE) {
			leave_front_end(e, w);
			break;
		}
		if (w->deferred) {
			struct engine_task *t = w->deferred;
			w->deferred = NULL;
			stage_on_accel(e, w, t);
			took = true;
		}
		while (!w->deferred && w->pipe_n < w->depth) {
			struct engine_task *t = engine_pick(e, w->index);
			if (!t)
				break;
			pass_wakeup(e);
			stage_on_accel(e, w, t);
			picked(w);
			took = true;
		}
		if (w->pipe_n) {
			prefetch_ahead(e, w);
			complete_oldest(e, w);
			maybe_poll_front_end(e, w, w->last_end_ns);
			continue;
		}
		if (!took && !w->deferred) {
			prefetch_ahead(e, w); /* a policy's prefetch kicks an idle device */
			worker_idle(e, w, seen);
		}
	}
	/* Stopping: what is enqueued finishes before the device goes away. */
	while (w->pipe_n)
		complete_oldest(e, w);
}

/* An accelerator's worker runs on the cores nearest to the device (its
 * NUMA node), or anywhere in the daemon's allowed set: not on the one core
 * the creating thread may have been bound to (cpu.cores). */
static void bind_near_device(struct engine *e, const struct engine_device *d)
{
	hwloc_topology_t topo = e->topology;
	if (!topo)
		return;
	hwloc_const_cpuset_t set = hwloc_topology_get_allowed_cpuset(topo);
	hwloc_obj_t numa =
	        d->dev.numa_node >= 0
	                ? hwloc_get_numanode_obj_by_os_index(topo, (unsigned)d->dev.numa_node)
	                : NULL;
	if (numa && numa->cpuset && !hwloc_bitmap_iszero(numa->cpuset))
		set = numa->cpuset;
	if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_THREAD) != 0)
		log_debug("%s: cannot bind its worker near the device", d->dev.name);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *e = w->e;
	struct engine_device *d = &e->devices[w->index];

	tls_engine = e;
	tls_worker = (int)w->index;
	sleep_sets_open(e, w);
	if (d->dev.ops->worker_init)
		d->dev.ops->worker_init(&d->dev, e->topology);
	if (backend_is_accelerator(&d->dev)) {
		bind_near_device(e, d);
		accel_worker_loop(e, w);
	} else {
		host_worker_loop(e, w);
	}
	sleep_sets_close(w);
	if (device_state(e, w->index) == ENGINE_DEV_GONE &&
	    !atomic_load_explicit(&e->stop, memory_order_acquire)) {
		/* Removed: nothing staged here any more. */
		pthread_mutex_lock(&e->dev_lock);
		retire_device(e, w->index);
		pthread_mutex_unlock(&e->dev_lock);
	}
	atomic_fetch_sub(&e->running, 1);
	return NULL;
}

/* Whether kernel k's floor list already has a device of d's kind and model
 * (identical cores: one calibration, one price). */
static bool same_hardware_listed(const struct engine *e, size_t k, const struct backend_device *d)
{
	uint16_t n = atomic_load_explicit(&((struct engine *)e)->floor_n[k], memory_order_relaxed);
	for (size_t i = 0; i < n; i++) {
		const struct backend_device *o = &e->devices[e->floor_dev[k * e->cap + i]].dev;
		if (o->kind == d->kind && o->ops == d->ops && !strcmp(o->model, d->model))
			return true;
	}
	return false;
}

double engine_task_floor_ns(const struct engine *e, uint32_t kernel,
                            const struct kernel_features *f)
{
	double best = INFINITY;
	if (!e->prof)
		return 0;
	if (kernel >= KERNEL_COUNT)
		return best;
	uint16_t n =
	        atomic_load_explicit(&((struct engine *)e)->floor_n[kernel], memory_order_acquire);
	for (size_t i = 0; i < n; i++) {
		double ns = profiler_roofline_ns(e->prof, e->floor_dev[kernel * e->cap + i], f);
		best = ns < best ? ns : best;
	}
	return best;
}

/* Which device implements which kernel. */
static bool support_device(struct engine *e, unsigned w);

static int init_support(struct engine *e)
{
	bool uniform = true;
	e->supported = calloc(KERNEL_COUNT * e->cap, 1);
	e->floor_dev = calloc(KERNEL_COUNT * e->cap, sizeof(*e->floor_dev));
	if (!e->supported || !e->floor_dev)
		return -TDM_ENOMEM;
	size_t nd = atomic_load(&e->ndevices);
	for (size_t w = 0; w < nd; w++)
		uniform = support_device(e, (unsigned)w) && uniform;
	atomic_store(&e->uniform, uniform);
	recount_capable(e);
	return 0;
}

/* ---- elastic devices ---- */

/* Which device implements which kernel: device w's column of supported
 * and the floor lists (w < ndevices, or about to be published). Whether
 * w implements exactly what device 0 does. */
static bool support_device(struct engine *e, unsigned w)
{
	const struct backend_device *d = &e->devices[w].dev;
	bool same = true;
	for (size_t k = 0; k < KERNEL_COUNT; k++) {
		const struct kernel_def *kd = kernel_by_id((uint32_t)k);
		/* A host device without supports() runs what has a CPU version. */
		bool yes = kd && (d->ops->supports ? d->ops->supports(d, kd) : kd->cpu != NULL);
		e->supported[k * e->cap + w] = yes;
		same = same && yes == (bool)e->supported[k * e->cap];
		uint16_t n = atomic_load_explicit(&e->floor_n[k], memory_order_relaxed);
		if (yes && !same_hardware_listed(e, k, d)) {
			e->floor_dev[k * e->cap + n] = (uint16_t)w;
			atomic_store_explicit(&e->floor_n[k], (uint16_t)(n + 1),
			                      memory_order_release);
		}
	}
	return same;
}

/* The policy is about to move tasks it queued (on) and is done (off).
 * Workers prefetch tasks they peeked at in their queue (prefetch_ahead),
 * which must not move and run elsewhere meanwhile: once moving is set and
 * the prefetches in flight are over, no prefetch starts (each looks at
 * moving after counting itself in). Caller holds dev_lock. */
static void quiesce_prefetch(struct engine *e, bool on)
{
	atomic_store(&e->moving, on);
	while (on && atomic_load(&e->prefetching))
		sched_yield();
}

/* Sets w's state; every runnable check follows. Caller holds dev_lock. */
static void set_state(struct engine *e, unsigned w, uint8_t state)
{
	/* Not uniform any more before the state shows: a reader that still
	 * sees uniform would let anyone run anything. */
	atomic_store(&e->uniform, false);
	atomic_fetch_add(&e->dev_seq, 1);
	atomic_store(&e->devices[w].state, state);
	recount_capable(e);
}

/* w stops taking tasks (DRAINING, or GONE): the policy moves what it
 * queued for w. Caller holds dev_lock. */
static void leave_device(struct engine *e, unsigned w, uint8_t state)
{
	uint8_t was = device_state(e, w);
	if (was == state || was == ENGINE_DEV_GONE)
		return;
	set_state(e, w, state);
	if (was == ENGINE_DEV_ACTIVE) {
		if (atomic_load(&e->fallback))
			; /* the FIFO asks runnable at each pick */
		else if (e->policy->device_draining) {
			quiesce_prefetch(e, true);
			e->policy->device_draining(e->policy_priv, w);
			quiesce_prefetch(e, false);
		} else {
			engine_fall_back(e, "cannot move the tasks of a device that drains");
		}
	}
	if (state == ENGINE_DEV_GONE && e->threads)
		engine_kick(e, w); /* its worker leaves once its pipe is empty */
	/* Tasks that waited for a device may run elsewhere now (moved ones are
	 * woken for by the policy's own queueing). */
	engine_notify(e, 1);
}

/* Whether a device other than w that is not GONE sits on w's memory node. */
static bool node_in_use(struct engine *e, unsigned w)
{
	size_t nd = atomic_load(&e->ndevices);
	for (size_t i = 0; i < nd; i++)
		if (i != w && e->devices[i].node == e->devices[w].node &&
		    device_state(e, (unsigned)i) != ENGINE_DEV_GONE)
			return true;
	return false;
}

/* w is GONE and has nothing staged: its memory node's replicas go (the
 * buffers only it holds written back first) unless another device uses
 * the node, and the policy forgets w. Once. Caller holds dev_lock. */
static void retire_device(struct engine *e, unsigned w)
{
	struct worker *wk = &e->workers[w];
	struct engine_device *d = &e->devices[w];
	if (atomic_load(&wk->retired))
		return;
	/* Before the policy's last sweep: a task a policy queues for w after
	 * it (a placement that saw w ACTIVE) is swept by the kick that
	 * follows its queueing (engine_kick). */
	atomic_store(&wk->retired, true);
	if (wk->host)
		atomic_fetch_sub(&e->nhost, 1);
	if (e->res && d->node != 0 && !node_in_use(e, w)) {
		int err = residency_node_evacuate(e->res, d->node);
		if (err)
			log_warn("%s: some buffers held only there are lost: %s", d->dev.name,
			         tdm_strerror(err));
	}
	if (e->policy->device_removed)
		e->policy->device_removed(e->policy_priv, w);
	log_info("%s: removed", d->dev.name);
}

static int start_worker(struct engine *e, unsigned w)
{
	atomic_fetch_add(&e->running, 1);
	if (pthread_create(&e->workers[w].thread, NULL, worker_main, &e->workers[w])) {
		atomic_fetch_sub(&e->running, 1);
		log_error("cannot start worker %u: %s", w, strerror(errno));
		return -TDM_ESYS;
	}
	e->workers[w].started = true;
	return 0;
}

/* Device slot w (< cap) from d: the device, its worker's state (not
 * started). Nothing is published. */
static int init_slot(struct engine *e, unsigned w, const struct backend_device *bd, uint32_t inject)
{
	struct engine_device *d = &e->devices[w];
	struct worker *wk = &e->workers[w];
	d->index = (uint16_t)w;
	d->dev = *bd;
	d->node = bd->node;
	atomic_store(&d->healthy, true);
	atomic_store(&d->state, ENGINE_DEV_ACTIVE);
	atomic_store(&d->inject_faults, inject);
	wk->e = e;
	wk->index = w;
	wk->model_dev = w;
	wk->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wk->kick_fd < 0)
		return -TDM_ESYS;
	wk->host = !backend_is_accelerator(&d->dev);
	if (!wk->host) {
		/* Only simulated devices are accelerator-shaped on the host
		 * node: a CPU core takes one task at a time. */
		wk->depth = d->node == 0 ? 1 : e->depth;
		wk->pipe = calloc(e->depth, sizeof(struct inflight));
		if (!wk->pipe)
			return -TDM_ENOMEM;
	}
	return 0;
}

/* Frees what init_slot made of slot w (a device that was never published). */
static void fini_slot(struct engine *e, unsigned w)
{
	struct worker *wk = &e->workers[w];
	free(wk->pipe);
	wk->pipe = NULL;
	if (wk->kick_fd >= 0)
		close(wk->kick_fd);
	wk->kick_fd = -1;
	memset(&e->devices[w], 0, sizeof(e->devices[w]));
}

/* Whether GONE slot w held the same device as bd (a device that comes
 * back): the same backend, name and hardware, on the same memory node. */
static bool same_device(const struct engine *e, unsigned w, const struct backend_device *bd)
{
	const struct backend_device *o = &e->devices[w].dev;
	return o->ops == bd->ops && o->kind == bd->kind && !strcmp(o->name, bd->name) &&
	       !strcmp(o->model, bd->model) && o->os_index == bd->os_index &&
	       !strcmp(o->pci_busid, bd->pci_busid) && e->devices[w].node == bd->node;
}

/* The GONE slot of the device bd that came back, once nothing of it is
 * left in use: its worker left (or never started) and it let go of its
 * memory node and of the policy (retired, under dev_lock). -1: none.
 * Caller holds dev_lock. */
static int find_reusable(const struct engine *e, const struct backend_device *bd)
{
	size_t nd = atomic_load(&((struct engine *)e)->ndevices);
	for (size_t w = 0; w < nd; w++)
		if (device_state(e, (unsigned)w) == ENGINE_DEV_GONE &&
		    atomic_load(&e->workers[w].retired) && same_device(e, (unsigned)w, bd))
			return (int)w;
	return -1;
}

int engine_device_reusable(const struct engine *ce, const struct backend_device *bd)
{
	struct engine *e = (struct engine *)ce; /* dev_lock only */
	pthread_mutex_lock(&e->dev_lock);
	int w = find_reusable(e, bd);
	pthread_mutex_unlock(&e->dev_lock);
	return w;
}

bool engine_device_left(const struct engine *e, unsigned id)
{
	struct engine *m = (struct engine *)e; /* read only */
	return id < atomic_load(&m->ndevices) && device_state(e, id) == ENGINE_DEV_GONE &&
	       atomic_load(&m->workers[id].retired);
}

/* Slot w, GONE and retired, takes its device back (bd: the same device,
 * find_reusable): its old worker is joined (it left after retiring, and
 * takes dev_lock no more), its per-run state starts again, then it is
 * ACTIVE. Its counters go on but for faults (the limit counts again); its
 * cost model and calibration key are its own still. Nothing of the old
 * slot can be in use: no worker, no staged task, the policy forgot it
 * (device_removed), its node was evacuated. Caller holds dev_lock. */
static void revive_slot(struct engine *e, unsigned w, const struct backend_device *bd,
                        uint32_t inject)
{
	struct engine_device *d = &e->devices[w];
	struct worker *wk = &e->workers[w];
	if (wk->started) {
		pthread_join(wk->thread, NULL);
		wk->started = false;
	}
	/* A probe again may give new backend handles for the same hardware;
	 * the fields others read (name, kind, model, ops) are equal. */
	if (d->dev.priv != bd->priv)
		d->dev.priv = bd->priv;
	if (d->dev.bind_set != bd->bind_set)
		d->dev.bind_set = bd->bind_set;
	atomic_store(&d->faults, 0);
	atomic_store(&d->inject_faults, inject);
	atomic_store(&d->healthy, true);
	uint64_t stale;
	while (read(wk->kick_fd, &stale, sizeof(stale)) > 0)
		; /* kicks meant for the worker that left */
	wk->pipe_head = wk->pipe_n = 0;
	wk->deferred = NULL;
	wk->nskips = 0;
	memset(wk->ran, 0, sizeof(wk->ran)); /* new handles compile again */
	wk->last_poll_ns = wk->last_end_ns = 0;
	atomic_store(&wk->asleep, false);
	atomic_store(&wk->picking, 0);
	if (wk->host)
		atomic_fetch_add(&e->nhost, 1);
	atomic_store(&wk->retired, false);
	set_state(e, w, ENGINE_DEV_ACTIVE);
}

int engine_device_add(struct engine *e, const struct backend_device *bd, unsigned *id)
{
	return engine_device_add_ex(e, bd, NULL, id);
}

int engine_device_add_ex(struct engine *e, const struct backend_device *bd,
                         const struct engine_device_add_params *p, unsigned *id)
{
	char why[160];
	int err;
	uint32_t inject = p ? p->inject_faults : 0;
	if (backend_check(bd->ops, why, sizeof(why)) != 0) {
		log_error("%s: %s", bd->name, why);
		return -TDM_EINVAL;
	}
	if (backend_is_accelerator(bd) && (!e->res || bd->node >= e->res->nnodes)) {
		log_error("%s: an accelerator on memory node %u, but %s", bd->name,
		          (unsigned)bd->node,
		          e->res ? "the residency has no such node"
		                 : "the engine has no residency");
		return -TDM_EINVAL;
	}
	pthread_mutex_lock(&e->dev_lock);
	int back = find_reusable(e, bd);
	unsigned w = back >= 0 ? (unsigned)back : (unsigned)atomic_load(&e->ndevices);
	if (back >= 0) {
		revive_slot(e, w, bd, inject);
	} else {
		if (w >= e->cap) {
			pthread_mutex_unlock(&e->dev_lock);
			log_error("%s: the engine has room for %zu devices", bd->name, e->cap);
			return -TDM_ENOSPC;
		}
		if ((err = init_slot(e, w, bd, inject)) != 0) {
			fini_slot(e, w);
			pthread_mutex_unlock(&e->dev_lock);
			return err;
		}
		for (unsigned i = 0; i < w; i++) {
			const struct backend_device *o = &e->devices[i].dev;
			if (o->kind == bd->kind && o->ops == bd->ops &&
			    !strcmp(o->model, bd->model)) {
				e->workers[w].model_dev = e->workers[i].model_dev;
				break;
			}
		}
		if (!support_device(e, w))
			atomic_store(&e->uniform, false);
		if (!e->workers[w].host)
			atomic_store(&e->has_accel, true);
		else
			atomic_fetch_add(&e->nhost, 1);
		/* Published: every slot below ndevices is whole. */
		atomic_fetch_add(&e->dev_seq, 1);
		atomic_store_explicit(&e->ndevices, (size_t)w + 1, memory_order_release);
		recount_capable(e);
	}
	if (e->policy->device_added && !atomic_load(&e->fallback)) {
		/* It may move queued tasks to the new device. */
		quiesce_prefetch(e, true);
		e->policy->device_added(e->policy_priv, w);
		quiesce_prefetch(e, false);
	}
	if (e->threads && (err = start_worker(e, w)) != 0) {
		/* Published already: it stays, GONE. */
		leave_device(e, w, ENGINE_DEV_GONE);
		retire_device(e, w);
		pthread_mutex_unlock(&e->dev_lock);
		return err;
	}
	/* Tasks that waited for a device like this one. */
	engine_notify(e, 1);
	pthread_mutex_unlock(&e->dev_lock);
	log_info("%s: %s device %u", bd->name, back >= 0 ? "back as" : "added as", w);
	*id = w;
	return 0;
}

int engine_device_drain(struct engine *e, unsigned id)
{
	int err = 0;
	pthread_mutex_lock(&e->dev_lock);
	if (id >= atomic_load(&e->ndevices) || device_state(e, id) == ENGINE_DEV_GONE)
		err = -TDM_EINVAL;
	else
		leave_device(e, id, ENGINE_DEV_DRAINING);
	pthread_mutex_unlock(&e->dev_lock);
	return err;
}

int engine_device_remove(struct engine *e, unsigned id)
{
	pthread_mutex_lock(&e->dev_lock);
	if (id >= atomic_load(&e->ndevices)) {
		pthread_mutex_unlock(&e->dev_lock);
		return -TDM_EINVAL;
	}
	leave_device(e, id, ENGINE_DEV_GONE);
	struct worker *w = &e->workers[id];
	/* Without worker threads nobody else would: what is staged there is
	 * the driver's to complete (engine_sim_complete retires it then). */
	if (!e->threads) {
		requeue_deferred(e, w);
		if (!w->pipe_n)
			retire_device(e, id);
	}
	pthread_mutex_unlock(&e->dev_lock);
	return 0;
}

int engine_device_resume(struct engine *e, unsigned id)
{
	int err = -TDM_EINVAL;
	pthread_mutex_lock(&e->dev_lock);
	if (id < atomic_load(&e->ndevices) && device_state(e, id) == ENGINE_DEV_DRAINING) {
		set_state(e, id, ENGINE_DEV_ACTIVE);
		if (e->policy->device_added && !atomic_load(&e->fallback))
			e->policy->device_added(e->policy_priv, id);
		engine_notify(e, 1);
		err = 0;
	}
	pthread_mutex_unlock(&e->dev_lock);
	return err;
}

enum engine_dev_state engine_device_state(const struct engine *e, unsigned id)
{
	struct engine *m = (struct engine *)e; /* read only */
	if (id >= atomic_load(&m->ndevices))
		return ENGINE_DEV_GONE;
	return (enum engine_dev_state)device_state(e, id);
}

unsigned engine_device_busy(const struct engine *e, unsigned id)
{
	struct engine *m = (struct engine *)e; /* read only */
	if (id >= atomic_load(&m->ndevices))
		return 0;
	return atomic_load(&m->devices[id].staged) + atomic_load(&m->workers[id].picking);
}

/* engine_create's parameters are refused: why, to the caller's buffer or
 * the log. */
static int refuse(const struct engine_params *p, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static int refuse(const struct engine_params *p, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (p->why && p->whylen)
		snprintf(p->why, p->whylen, "%s", why);
	else
		log_error("%s", why);
	return -TDM_EINVAL;
}

int engine_create(const struct engine_params *p, struct engine **out)
{
	struct engine *e;
	struct policy_params pp;
	int err;

	if (!p->policy || !p->clock || !p->hooks.graph_done || p->ndevices == 0)
		return refuse(p, "engine: %s",
		              !p->policy             ? "no policy"
		              : !p->clock            ? "no clock"
		              : !p->hooks.graph_done ? "no graph_done hook"
		                                     : "no devices");
	/* The seams' versions: a policy or backend built for another one is
	 * refused before it is called. */
	char why[160];
	if (policy_check(p->policy, why, sizeof(why)) != 0)
		return refuse(p, "%s", why);
	size_t cap = p->max_devices ? p->max_devices : p->ndevices;
	if (cap < p->ndevices || cap > ENGINE_MAX_DEVICES)
		return refuse(
		        p,
		        "engine: %zu devices, room for %zu: at least the devices given and at "
		        "most %d",
		        p->ndevices, cap, ENGINE_MAX_DEVICES);
	for (size_t i = 0; i < p->ndevices; i++)
		if (backend_check(p->devices[i].ops, why, sizeof(why)) != 0)
			return refuse(p, "%s: %s", p->devices[i].name, why);
	/* An accelerator-shaped device stages its tasks' data on its memory
	 * node: one the residency knows, the host's (simulated cores, node 0)
	 * or one added for it. */
	for (size_t i = 0; i < p->ndevices; i++)
		if (backend_is_accelerator(&p->devices[i]) &&
		    (!p->res || p->devices[i].node >= p->res->nnodes))
			return refuse(p, "%s: an accelerator on memory node %u, but %s",
			              p->devices[i].name, (unsigned)p->devices[i].node,
			              p->res ? "the residency has no such node"
			                     : "the engine was given no residency");
	e = calloc(1, sizeof(*e));
	if (!e)
		return -TDM_ENOMEM;
	e->clock = p->clock;
	e->hooks = p->hooks;
	e->topology = p->topology;
	e->cap = cap;
	e->threads = p->start_workers;
	e->fault_limit = p->fault_limit ? p->fault_limit : ENGINE_FAULT_LIMIT;
	atomic_store(&e->spin_us, p->spin_us);
	e->poll_fd = p->hooks.poll ? p->poll_fd : -1;
	pthread_mutex_init(&e->wd_lock, NULL);
	pthread_mutex_init(&e->dev_lock, NULL);
	e->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->wake_fd < 0) {
		pthread_mutex_destroy(&e->dev_lock);
		pthread_mutex_destroy(&e->wd_lock);
		free(e);
		return -TDM_ESYS;
	}
	e->devices = calloc(cap, sizeof(*e->devices));
	e->workers = calloc(cap, sizeof(*e->workers));
	if (!e->devices || !e->workers) {
		engine_destroy(e);
		return -TDM_ENOMEM;
	}
	for (size_t i = 0; i < cap; i++)
		e->workers[i].kick_fd = -1;
	e->res = p->res;
	e->prof = p->prof;
	e->depth = p->pipeline_depth ? p->pipeline_depth : DEFAULT_PIPELINE_DEPTH;
	for (size_t i = 0; i < p->ndevices; i++) {
		/* Counted as they are made: engine_destroy frees what exists. */
		atomic_store(&e->ndevices, i + 1);
		err = init_slot(e, (unsigned)i, &p->devices[i],
		                p->inject_faults ? p->inject_faults[i] : 0);
		if (err) {
			engine_destroy(e);
			return err;
		}
		if (e->workers[i].host)
			e->nhost++;
		else
			e->has_accel = true;
	}
	err = init_support(e);
	if (err) {
		engine_destroy(e);
		return err;
	}
	e->tuning = p->tuning ? *p->tuning : policy_tuning_defaults;
	e->watchdog_ms = p->watchdog_ms ? p->watchdog_ms : 500;
	pp.nworkers = p->ndevices;
	pp.max_workers = cap;
	pp.devices = e->devices;
	e->core = (struct engine_core){ .engine = e,
		                        .runnable = engine_runnable,
		                        .kick = engine_kick,
		                        .uniform = &e->uniform };
	pp.core = &e->core;
	pp.clock = e->clock;
	pp.prof = e->prof;
	pp.res = e->res;
	pp.tuning = &e->tuning;
	err = policy_fifo.init(&pp, &e->fifo_priv);
	if (err) {
		engine_destroy(e);
		return err;
	}
	err = p->policy->init(&pp, &e->policy_priv);
	if (err) {
		engine_destroy(e);
		return err;
	}
	e->policy = p->policy; /* from here engine_destroy calls fini */
	if (!p->start_workers) {
		*out = e;
		return 0;
	}
	for (size_t i = 0; i < p->ndevices; i++) {
		if ((err = start_worker(e, (unsigned)i)) != 0) {
			engine_destroy(e);
			return err;
		}
	}
	*out = e;
	return 0;
}

void engine_cancel_all(struct engine *e)
{
	atomic_store(&e->abort, true);
	pthread_mutex_lock(&e->wd_lock);
	for (struct engine_graph *g = e->graphs; g; g = g->core_next)
		atomic_store(&g->flow->canceled, 1);
	pthread_mutex_unlock(&e->wd_lock);
	/* Idle workers take the queued tasks, to skip them. */
	engine_notify(e, e->ndevices);
}

/* Joins the started workers, waiting STOP_WAIT_MS in all; false when one is
 * still in a kernel (it was asked to stop, but a BLAS call or a device
 * cannot be interrupted). */
static bool join_workers(struct engine *e)
{
	struct timespec deadline;
	bool all = true;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += STOP_WAIT_MS / 1000;
	deadline.tv_nsec += (STOP_WAIT_MS % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	for (size_t i = 0; e->workers && i < e->ndevices; i++) {
		if (!e->workers[i].started)
			continue;
		int rc = pthread_timedjoin_np(e->workers[i].thread, NULL, &deadline);
		if (rc == 0) {
			e->workers[i].started = false;
			continue;
		}
		log_warn("%s: its worker did not stop within %d ms", e->devices[i].dev.name,
		         STOP_WAIT_MS);
		all = false;
	}
	return all;
}

int engine_destroy(struct engine *e)
{
	bool threads = false;
	if (!e)
		return 0;
	atomic_store(&e->stop, true);
	ring_wake_fd(e);
	for (size_t i = 0; e->workers && i < e->ndevices; i++)
		threads |= e->workers[i].started;
	if (threads) {
		/* Running kernels stop at their next look at the flag. */
		engine_cancel_all(e);
		if (!join_workers(e))
			return -TDM_ETIMEDOUT; /* left as is: a worker still uses it */
	}
	for (size_t i = 0; e->workers && i < e->ndevices; i++) {
		free(e->workers[i].ready);
		free(e->workers[i].skips);
		free(e->workers[i].pipe);
		if (e->workers[i].kick_fd >= 0)
			close(e->workers[i].kick_fd);
	}
	if (e->policy)
		e->policy->fini(e->policy_priv);
	if (e->fifo_priv)
		policy_fifo.fini(e->fifo_priv);
	pthread_mutex_destroy(&e->wd_lock);
	pthread_mutex_destroy(&e->dev_lock);
	close(e->wake_fd);
	free(e->supported);
	free(e->floor_dev);
	free(e->workers);
	free(e->devices);
	free(e);
	return 0;
}

void engine_counters(const struct engine *e, struct engine_counters *out)
{
	struct engine *m = (struct engine *)e; /* atomics are read, not changed */
	out->graphs_submitted = atomic_load(&m->graphs_submitted);
	out->graphs_done = atomic_load(&m->graphs_done);
	out->tasks_done = atomic_load(&m->tasks_done);
	out->tasks_failed = atomic_load(&m->tasks_failed);
	out->tasks_canceled = atomic_load(&m->tasks_canceled);
	out->tasks_in_flight = atomic_load(&m->tasks_in_flight);
	out->queued = atomic_load(&m->queued);
	out->fallback = atomic_load(&m->fallback);
}

size_t engine_device_count(const struct engine *e)
{
	return atomic_load_explicit(&((struct engine *)e)->ndevices, memory_order_acquire);
}

const struct engine_device *engine_device(const struct engine *e, size_t i)
{
	return i < engine_device_count(e) ? &e->devices[i] : NULL;
}

const char *engine_policy_name(const struct engine *e)
{
	return e->policy->name;
}

struct profiler *engine_profiler(const struct engine *e)
{
	return e->prof;
}

void *engine_policy_priv(const struct engine *e)
{
	return e->policy_priv;
}

int engine_flow_add(struct engine *e, struct engine_flow *flow)
{
	return e->policy->flow_added ? e->policy->flow_added(e->policy_priv, flow) : 0;
}

void engine_flow_gone(struct engine *e, struct engine_flow *flow)
{
	if (e->policy->flow_gone)
		e->policy->flow_gone(e->policy_priv, flow);
}

void engine_set_spin_us(struct engine *e, uint32_t spin_us)
{
	atomic_store(&e->spin_us, spin_us);
}
