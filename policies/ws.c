/* ws: work stealing. One deque per worker; a worker pops its own newest
 * task (LIFO, cache-warm), and when empty steals the oldest task of another
 * worker (FIFO). Tasks a worker releases go to its own deque; tasks from
 * intake are spread evenly across deques. */
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
	size_t n;
	struct deque *dq;
	_Atomic size_t next_intake; /* deque that receives the next intake chunk */
	_Atomic size_t queued;
};

static int ws_init(const struct policy_params *p, void **priv)
{
	struct ws *w = calloc(1, sizeof(*w));
	if (!w)
		return -TDM_ENOMEM;
	w->n = p->nworkers;
	w->dq = calloc(w->n, sizeof(*w->dq));
	if (!w->dq) {
		free(w);
		return -TDM_ENOMEM;
	}
	for (size_t i = 0; i < w->n; i++)
		pthread_mutex_init(&w->dq[i].lock, NULL);
	*priv = w;
	return 0;
}

static void ws_fini(void *priv)
{
	struct ws *w = priv;
	for (size_t i = 0; i < w->n; i++) {
		pthread_mutex_destroy(&w->dq[i].lock);
		free(w->dq[i].items);
	}
	free(w->dq);
	free(w);
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

static void deque_push(struct ws *w, struct deque *d, struct engine_task **tasks, size_t n)
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
	atomic_fetch_add(&w->queued, n); /* before unlock: a thief may take them at once */
	pthread_mutex_unlock(&d->lock);
}

static void ws_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct ws *w = priv;
	if (worker >= 0) {
		deque_push(w, &w->dq[worker], tasks, n);
		return;
	}
	size_t chunk = (n + w->n - 1) / w->n;
	for (size_t off = 0; off < n; off += chunk) {
		size_t k = n - off < chunk ? n - off : chunk;
		size_t target = atomic_fetch_add(&w->next_intake, 1) % w->n;
		deque_push(w, &w->dq[target], tasks + off, k);
	}
}

static struct engine_task *deque_take(struct deque *d, bool newest)
{
	struct engine_task *t = NULL;
	pthread_mutex_lock(&d->lock);
	if (d->count) {
		if (newest) {
			t = d->items[(d->head + d->count - 1) % d->cap];
		} else {
			t = d->items[d->head];
			d->head = (d->head + 1) % d->cap;
		}
		d->count--;
	}
	pthread_mutex_unlock(&d->lock);
	return t;
}

static struct engine_task *ws_pick_next(void *priv, unsigned worker)
{
	struct ws *w = priv;
	struct engine_task *t = deque_take(&w->dq[worker], true);
	for (size_t i = 1; !t && i < w->n; i++)
		t = deque_take(&w->dq[(worker + i) % w->n], false);
	if (t)
		atomic_fetch_sub(&w->queued, 1);
	return t;
}

static size_t ws_queued(void *priv)
{
	struct ws *w = priv;
	return atomic_load(&w->queued);
}

const struct tdm_policy_ops policy_ws = {
	.name = "ws",
	.init = ws_init,
	.fini = ws_fini,
	.tasks_ready = ws_tasks_ready,
	.pick_next = ws_pick_next,
	.queued = ws_queued,
};
