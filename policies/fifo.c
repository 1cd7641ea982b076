/* fifo: one queue, first ready first served, no per-client state. The
 * watchdog's fallback when a policy misbehaves, so it must be too simple to
 * fail: a mutex, a singly linked list, and a bounded scan for a task the
 * asking worker may run. */
#include <pthread.h>
#include <stdlib.h>

#include "policies/policy.h"
#include "tandem.h"

/* How far a worker looks past tasks it cannot run. */
#define FIFO_SCAN 64

struct fifo {
	const struct engine_core *core;
	pthread_mutex_t lock;
	struct engine_task *head, *tail;
	size_t queued;
};

static int fifo_init(const struct policy_params *p, void **priv)
{
	struct fifo *q = calloc(1, sizeof(*q));
	if (!q)
		return -TDM_ENOMEM;
	q->core = p->core;
	pthread_mutex_init(&q->lock, NULL);
	*priv = q;
	return 0;
}

static void fifo_fini(void *priv)
{
	struct fifo *q = priv;
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static void fifo_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct fifo *q = priv;
	(void)worker;
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = tasks[i];
		t->next = NULL;
		if (q->tail)
			q->tail->next = t;
		else
			q->head = t;
		q->tail = t;
	}
	q->queued += n;
	pthread_mutex_unlock(&q->lock);
}

static struct engine_task *fifo_pick_next(void *priv, unsigned worker)
{
	struct fifo *q = priv;
	struct engine_task *prev = NULL, *t, *found = NULL;
	pthread_mutex_lock(&q->lock);
	t = q->head;
	for (int n = 0; t && n < FIFO_SCAN; n++, prev = t, t = t->next) {
		if (!core_runnable(q->core, t, worker))
			continue;
		if (prev)
			prev->next = t->next;
		else
			q->head = t->next;
		if (q->tail == t)
			q->tail = prev;
		q->queued--;
		found = t;
		if (q->head) /* read by the next pick (see eager.c) */
			__builtin_prefetch(q->head, 1, 3);
		break;
	}
	pthread_mutex_unlock(&q->lock);
	return found;
}

/* One queue for every device, and pick_next hands a worker only what it
 * may run (core_runnable): a device that comes or goes changes nothing. */
static void fifo_device_changed(void *priv, unsigned worker)
{
	(void)priv;
	(void)worker;
}

const struct policy_ops policy_fifo = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "fifo",
	.init = fifo_init,
	.fini = fifo_fini,
	.tasks_ready = fifo_tasks_ready,
	.pick_next = fifo_pick_next,
	.device_added = fifo_device_changed,
	.device_draining = fifo_device_changed,
	.device_removed = fifo_device_changed,
};
