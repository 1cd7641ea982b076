/* ws: work stealing. One deque per worker: tasks a worker releases go to
 * its own deque, it pops its newest task (LIFO, cache-warm), and when empty
 * steals the oldest task of another worker (FIFO). Ready tasks of newly
 * submitted graphs go to an injection queue served round-robin across
 * clients (the eager policy's), which workers look at first: a light
 * client's new graph starts next to a flood, not under it. */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "policies/policy.h"
#include "tandem.h"

struct deque {
	pthread_mutex_t lock;
	struct engine_task **items; /* ring of cap entries */
	size_t cap, head, count; /* head = oldest */
};

struct ws {
	const struct engine_core *core;
	_Atomic size_t n; /* workers known (device_added counts a new one) */
	size_t cap;
	struct deque *dq; /* [cap] */
	void *inject; /* policy_eager's state */
};

static int ws_init(const struct policy_params *p, void **priv)
{
	struct ws *w = calloc(1, sizeof(*w));
	if (!w)
		return -TDM_ENOMEM;
	w->core = p->core;
	atomic_init(&w->n, p->nworkers);
	w->cap = p->max_workers > p->nworkers ? p->max_workers : p->nworkers;
	w->dq = calloc(w->cap, sizeof(*w->dq));
	if (!w->dq) {
		free(w);
		return -TDM_ENOMEM;
	}
	int err = policy_eager.init(p, &w->inject);
	if (err) {
		free(w->dq);
		free(w);
		return err;
	}
	for (size_t i = 0; i < w->cap; i++)
		pthread_mutex_init(&w->dq[i].lock, NULL);
	*priv = w;
	return 0;
}

static void ws_fini(void *priv)
{
	struct ws *w = priv;
	policy_eager.fini(w->inject);
	for (size_t i = 0; i < w->cap; i++) {
		pthread_mutex_destroy(&w->dq[i].lock);
		free(w->dq[i].items);
	}
	free(w->dq);
	free(w);
}

static bool runnable(const struct ws *w, const struct engine_task *t, unsigned worker)
{
	return core_runnable(w->core, t, worker);
}

/* Caller holds d->lock. */
static int deque_reserve(struct deque *d, size_t extra)
{
	if (d->count + extra <= d->cap)
		return 0;
	size_t ncap = d->cap ? d->cap : 256;
	while (ncap < d->count + extra)
		ncap *= 2;
	struct engine_task **n = malloc(ncap * sizeof(*n));
	if (!n)
		return -TDM_ENOMEM;
	for (size_t i = 0; i < d->count; i++)
		n[i] = d->items[(d->head + i) % d->cap];
	free(d->items);
	d->items = n;
	d->cap = ncap;
	d->head = 0;
	return 0;
}

static void deque_push(struct deque *d, struct engine_task **tasks, size_t n)
{
	pthread_mutex_lock(&d->lock);
	while (deque_reserve(d, n) != 0) {
		/* Out of memory: wait for workers to drain some entries. */
		pthread_mutex_unlock(&d->lock);
		sched_yield();
		pthread_mutex_lock(&d->lock);
	}
	for (size_t i = 0; i < n; i++)
		d->items[(d->head + d->count + i) % d->cap] = tasks[i];
	d->count += n;
	pthread_mutex_unlock(&d->lock);
}

static void ws_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct ws *w = priv;
	if (worker < 0) {
		policy_eager.tasks_ready(w->inject, tasks, n, worker);
		return;
	}
	/* Tasks the releasing worker cannot run go where any worker looks. */
	size_t mine = 0;
	for (size_t i = 0; i < n; i++) {
		if (runnable(w, tasks[i], (unsigned)worker))
			tasks[mine++] = tasks[i];
		else
			policy_eager.tasks_ready(w->inject, &tasks[i], 1, -1);
	}
	if (mine)
		deque_push(&w->dq[worker], tasks, mine);
}

/* Takes the newest (owner) or oldest (thief) task if `worker` may run it. */
static struct engine_task *deque_take(struct ws *w, struct deque *d, bool newest, unsigned worker)
{
	struct engine_task *t = NULL;
	pthread_mutex_lock(&d->lock);
	if (d->count) {
		size_t at = newest ? (d->head + d->count - 1) % d->cap : d->head;
		t = d->items[at];
		if (!runnable(w, t, worker)) {
			t = NULL;
		} else {
			if (!newest)
				d->head = (d->head + 1) % d->cap;
			d->count--;
		}
	}
	pthread_mutex_unlock(&d->lock);
	return t;
}

static struct engine_task *ws_pick_next(void *priv, unsigned worker)
{
	struct ws *w = priv;
	struct engine_task *t = policy_eager.pick_next(w->inject, worker);
	if (t)
		return t;
	t = deque_take(w, &w->dq[worker], true, worker);
	size_t n = atomic_load_explicit(&w->n, memory_order_acquire);
	for (size_t i = 1; !t && i < n; i++)
		t = deque_take(w, &w->dq[(worker + i) % n], false, worker);
	return t;
}

/* A new worker steals and is stolen from once counted. */
static void ws_device_added(void *priv, unsigned worker)
{
	struct ws *w = priv;
	if (worker >= atomic_load(&w->n) && worker < w->cap)
		atomic_store_explicit(&w->n, (size_t)worker + 1, memory_order_release);
}

/* The worker's deque goes to the injection queue, where every worker
 * looks first (thieves would take it too, but only when idle). */
static void ws_device_draining(void *priv, unsigned worker)
{
	struct ws *w = priv;
	struct deque *d = &w->dq[worker];
	struct engine_task *batch[64];
	for (;;) {
		size_t n = 0;
		pthread_mutex_lock(&d->lock);
		while (d->count && n < 64) {
			batch[n++] = d->items[d->head];
			d->head = (d->head + 1) % d->cap;
			d->count--;
		}
		pthread_mutex_unlock(&d->lock);
		if (!n)
			return;
		policy_eager.tasks_ready(w->inject, batch, n, -1);
	}
}

/* What reached its deque meanwhile (released by its last tasks) moves too. */
static void ws_device_removed(void *priv, unsigned worker)
{
	ws_device_draining(priv, worker);
}

static int ws_flow_added(void *priv, struct engine_flow *flow)
{
	return policy_eager.flow_added(((struct ws *)priv)->inject, flow);
}

static void ws_flow_gone(void *priv, struct engine_flow *flow)
{
	policy_eager.flow_gone(((struct ws *)priv)->inject, flow);
}

const struct policy_ops policy_ws = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "ws",
	.init = ws_init,
	.fini = ws_fini,
	.tasks_ready = ws_tasks_ready,
	.pick_next = ws_pick_next,
	.flow_added = ws_flow_added,
	.flow_gone = ws_flow_gone,
	.device_added = ws_device_added,
	.device_draining = ws_device_draining,
	.device_removed = ws_device_removed,
};
