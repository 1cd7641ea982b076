/* Engine core: dependency counters, ready tasks to the policy, one worker
 * thread per device, completion. */
#include "daemon/engine.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon/log.h"
#include "policies/policy.h"
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
};

struct engine {
	const struct tdm_clock *clock;
	const struct tdm_policy_ops *policy;
	void *policy_priv;
	struct engine_hooks hooks;
	void *topology;
	struct engine_device *devices;
	struct worker *workers;
	size_t ndevices;
	_Atomic uint32_t spin_us;
	_Atomic bool stop;

	/* Event count for idle workers: producers bump epoch, then ring
	 * wake_fd if anyone sleeps; a worker sleeps only if epoch did not move
	 * since it last looked for work. Workers sleep in poll() on wake_fd
	 * and on the front end's poll_fd, so a client's doorbell wakes a
	 * worker directly. */
	_Atomic uint32_t epoch;
	_Atomic uint32_t sleepers;
	int wake_fd;
	int poll_fd;

	_Atomic uint64_t graphs_submitted, graphs_done;
	_Atomic uint64_t tasks_done, tasks_failed, tasks_canceled, tasks_in_flight;
};

static void ring_wake_fd(struct engine *e)
{
	uint64_t one = 1;
	/* EAGAIN: the counter is saturated, sleepers wake anyway. */
	if (write(e->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("engine: wake: %s", strerror(errno));
}

/* Tells idle workers that n tasks became ready. */
static void engine_notify(struct engine *e, size_t n)
{
	atomic_fetch_add(&e->epoch, 1);
	if (n && atomic_load(&e->sleepers))
		ring_wake_fd(e);
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

static void push_ready(struct engine *e, struct engine_task **tasks, size_t n, int worker)
{
	uint64_t now = clock_now(e->clock);
	for (size_t i = 0; i < n; i++)
		tasks[i]->queued_ns = now;
	e->policy->tasks_ready(e->policy_priv, tasks, n, worker);
	/* A releasing worker picks one of them itself right after. */
	engine_notify(e, worker >= 0 ? n - 1 : n);
}

#define ROOT_CHUNK 64

/* May run on several threads at once (intake runs on workers). */
void engine_submit(struct engine *e, struct engine_graph *g)
{
	struct engine_task *chunk[ROOT_CHUNK];
	size_t n = 0;

	atomic_fetch_add(&e->graphs_submitted, 1);
	g->submit_ns = clock_now(e->clock);
	atomic_store(&g->remaining, g->ntasks);
	if (g->ntasks == 0) {
		atomic_fetch_add(&e->graphs_done, 1);
		e->hooks.graph_done(e->hooks.ctx, g);
		return;
	}
	atomic_fetch_add(&e->tasks_in_flight, g->ntasks);
	if (e->policy->graph_submitted)
		e->policy->graph_submitted(e->policy_priv, g);
	/* Mark every root before pushing any: once pushed, workers run tasks
	 * and bring other counters to zero, which must not make those tasks
	 * look like roots here. */
	for (uint32_t i = 0; i < g->ntasks; i++)
		g->tasks[i].root =
		        atomic_load_explicit(&g->tasks[i].ndeps, memory_order_relaxed) == 0;
	for (uint32_t i = 0; i < g->ntasks; i++) {
		if (!g->tasks[i].root)
			continue;
		chunk[n++] = &g->tasks[i];
		if (n == ROOT_CHUNK) {
			push_ready(e, chunk, n, -1);
			n = 0;
		}
	}
	if (n)
		push_ready(e, chunk, n, -1);
}

void engine_graph_free_arrays(struct engine_graph *g)
{
	free(g->tasks);
	free(g->succ_off);
	free(g->succ);
	g->tasks = NULL;
	g->succ_off = g->succ = NULL;
}

/* Returns the task's end time (the task may be freed once it returns). */
static uint64_t run_task(struct engine *e, struct worker *w, struct engine_task *t)
{
	struct engine_graph *g = t->graph;
	struct engine_device *d = &e->devices[w->index];
	size_t nready = 0;

	t->device = d->index;
	t->start_ns = clock_now(e->clock);
	if (atomic_load_explicit(&g->flow->canceled, memory_order_relaxed) ||
	    atomic_load_explicit(&g->status, memory_order_relaxed) != 0) {
		/* The client is gone, or an earlier task of the graph failed:
		 * nothing downstream can be right, so skip the work. */
		t->status = -TDM_ECANCELED;
		atomic_fetch_add(&e->tasks_canceled, 1);
	} else {
		t->status = d->dev.ops->launch(&d->dev, t->kernel, &t->call);
		if (t->status) {
			int32_t ok = 0;
			atomic_compare_exchange_strong(&g->status, &ok, -TDM_EDEVICE);
			atomic_fetch_add(&e->tasks_failed, 1);
			log_warn("kernel %s failed on %s: %s", t->kernel->name, d->dev.name,
			         tdm_strerror(t->status));
		}
	}
	uint64_t end_ns = t->end_ns = clock_now(e->clock);
	atomic_fetch_add_explicit(&d->tasks_run, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&d->busy_ns, t->end_ns - t->start_ns, memory_order_relaxed);
	if (e->policy->task_done)
		e->policy->task_done(e->policy_priv, t, w->index);

	for (uint32_t i = g->succ_off[t->index]; i < g->succ_off[t->index + 1]; i++) {
		struct engine_task *s = &g->tasks[g->succ[i]];
		if (atomic_fetch_sub_explicit(&s->ndeps, 1, memory_order_acq_rel) != 1)
			continue;
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
		atomic_fetch_add(&e->graphs_done, 1);
		e->hooks.graph_done(e->hooks.ctx, g);
	}
	return end_ns;
}

bool engine_run_one(struct engine *e, unsigned worker)
{
	struct engine_task *t = e->policy->pick_next(e->policy_priv, worker);
	if (!t)
		return false;
	run_task(e, &e->workers[worker], t);
	return true;
}

static inline void cpu_relax(void)
{
	__builtin_ia32_pause();
}

static bool front_end_poll(struct engine *e, bool woken)
{
	return e->hooks.poll && e->hooks.poll(e->hooks.ctx, woken);
}

/* Waits until the epoch moves away from `seen` or stop is set: spins for
 * spin_us (looking at the front end too), then sleeps in poll(). */
static void worker_idle(struct engine *e, uint32_t seen)
{
	uint32_t spin_us = atomic_load_explicit(&e->spin_us, memory_order_relaxed);
	if (spin_us) {
		uint64_t deadline = clock_monotonic_ns() + (uint64_t)spin_us * 1000u;
		bool found = false;
		if (e->hooks.polling)
			e->hooks.polling(e->hooks.ctx, true);
		for (unsigned iter = 1; !found; iter++) {
			if (atomic_load_explicit(&e->epoch, memory_order_acquire) != seen ||
			    front_end_poll(e, false))
				found = true;
			cpu_relax();
			/* Let a client or another worker sharing this core run. */
			if (iter % 16 == 0) {
				sched_yield();
				if (clock_monotonic_ns() >= deadline)
					break;
			}
		}
		if (e->hooks.polling) {
			e->hooks.polling(e->hooks.ctx, false);
			/* A client that still saw the flag rang no doorbell. */
			found = found || front_end_poll(e, false);
		}
		if (found)
			return;
	}
	struct pollfd fds[2] = { { e->wake_fd, POLLIN, 0 }, { e->poll_fd, POLLIN, 0 } };
	atomic_fetch_add(&e->sleepers, 1);
	if (atomic_load(&e->epoch) == seen && !atomic_load(&e->stop))
		poll(fds, e->poll_fd >= 0 ? 2 : 1, -1);
	atomic_fetch_sub(&e->sleepers, 1);
	/* On stop the counter is left set so that every sleeper wakes. */
	if ((fds[0].revents & POLLIN) && !atomic_load(&e->stop)) {
		uint64_t v;
		if (read(e->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_error("engine: wake: %s", strerror(errno));
	}
	if (fds[1].revents & POLLIN)
		front_end_poll(e, true);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct engine *e = w->e;
	struct engine_device *d = &e->devices[w->index];

	if (d->dev.ops->worker_init)
		d->dev.ops->worker_init(&d->dev, e->topology);
	while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
		uint32_t seen = atomic_load(&e->epoch);
		struct engine_task *t = e->policy->pick_next(e->policy_priv, w->index);
		if (t) {
			/* Several wake-ups may have merged into one: pass it on
			 * while work is left for another sleeper. */
			if (atomic_load_explicit(&e->sleepers, memory_order_relaxed) &&
			    e->policy->queued && e->policy->queued(e->policy_priv))
				ring_wake_fd(e);
			uint64_t end = run_task(e, w, t);
			if (end - w->last_poll_ns >= BUSY_POLL_NS) {
				w->last_poll_ns = end;
				front_end_poll(e, false);
			}
			continue;
		}
		worker_idle(e, seen);
	}
	return NULL;
}

int engine_create(const struct engine_params *p, struct engine **out)
{
	struct engine *e;
	struct policy_params pp;
	int err;

	if (!p->policy || !p->clock || !p->hooks.graph_done || p->ndevices == 0)
		return -TDM_EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -TDM_ENOMEM;
	e->clock = p->clock;
	e->policy = p->policy;
	e->hooks = p->hooks;
	e->topology = p->topology;
	e->ndevices = p->ndevices;
	atomic_store(&e->spin_us, p->spin_us);
	e->poll_fd = p->hooks.poll ? p->poll_fd : -1;
	e->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->wake_fd < 0) {
		free(e);
		return -TDM_ESYS;
	}
	e->devices = calloc(p->ndevices, sizeof(*e->devices));
	e->workers = calloc(p->ndevices, sizeof(*e->workers));
	if (!e->devices || !e->workers) {
		engine_destroy(e);
		return -TDM_ENOMEM;
	}
	for (size_t i = 0; i < p->ndevices; i++) {
		e->devices[i].index = (uint16_t)i;
		e->devices[i].dev = p->devices[i];
		e->workers[i].e = e;
		e->workers[i].index = (unsigned)i;
	}
	pp.nworkers = p->ndevices;
	pp.devices = e->devices;
	err = e->policy->init(&pp, &e->policy_priv);
	if (err) {
		e->policy = NULL;
		engine_destroy(e);
		return err;
	}
	if (!p->start_workers) {
		*out = e;
		return 0;
	}
	for (size_t i = 0; i < p->ndevices; i++) {
		if (pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i])) {
			log_error("cannot start worker %zu: %s", i, strerror(errno));
			engine_destroy(e);
			return -TDM_ESYS;
		}
		e->workers[i].started = true;
	}
	*out = e;
	return 0;
}

void engine_destroy(struct engine *e)
{
	if (!e)
		return;
	atomic_store(&e->stop, true);
	ring_wake_fd(e);
	for (size_t i = 0; e->workers && i < e->ndevices; i++) {
		if (e->workers[i].started)
			pthread_join(e->workers[i].thread, NULL);
		free(e->workers[i].ready);
	}
	if (e->policy)
		e->policy->fini(e->policy_priv);
	close(e->wake_fd);
	free(e->workers);
	free(e->devices);
	free(e);
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
	out->queued = e->policy->queued ? e->policy->queued(e->policy_priv) : 0;
}

size_t engine_device_count(const struct engine *e)
{
	return e->ndevices;
}

const struct engine_device *engine_device(const struct engine *e, size_t i)
{
	return i < e->ndevices ? &e->devices[i] : NULL;
}

const char *engine_policy_name(const struct engine *e)
{
	return e->policy->name;
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
