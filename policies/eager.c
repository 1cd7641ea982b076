/* eager: one central queue, served weighted round-robin across clients.
 *
 * Each client (flow) has its own FIFO of ready tasks; flows with work sit on
 * a ring, and pick_next takes tasks from the flow at the head, `weight` of
 * them in a row (engine_flow.weight), then moves that flow to the back. A
 * client that floods the daemon therefore gets its weight's share of the
 * tasks, never all of them. Shares count tasks: eager has no cost model. */
#include <pthread.h>
#include <stdlib.h>

#include "policies/policy.h"
#include "tandem.h"

struct eager_flow {
	struct engine_flow *flow;
	struct engine_task *head, *tail;
	struct eager_flow *ring_next; /* on the active ring when it has tasks */
	uint32_t served; /* tasks taken in a row since it reached the head */
	bool active;
};

/* How deep into a flow's FIFO a worker looks for a task it can run (on a
 * machine where devices differ in the kernels they implement). */
#define EAGER_SCAN 32

struct eager {
	const struct engine_core *core;
	pthread_mutex_t lock;
	struct eager_flow *ring_head, *ring_tail;
	size_t queued;
};

static int eager_init(const struct policy_params *p, void **priv)
{
	struct eager *q = calloc(1, sizeof(*q));
	if (!q)
		return -TDM_ENOMEM;
	q->core = p->core;
	pthread_mutex_init(&q->lock, NULL);
	*priv = q;
	return 0;
}

static void eager_fini(void *priv)
{
	struct eager *q = priv;
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static void ring_append(struct eager *q, struct eager_flow *f)
{
	f->ring_next = NULL;
	f->active = true;
	if (q->ring_tail)
		q->ring_tail->ring_next = f;
	else
		q->ring_head = f;
	q->ring_tail = f;
}

static int eager_flow_added(void *priv, struct engine_flow *flow)
{
	struct eager_flow *f = calloc(1, sizeof(*f));
	(void)priv;
	if (!f)
		return -TDM_ENOMEM;
	f->flow = flow;
	flow->policy_slot = f;
	return 0;
}

static void eager_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct eager *q = priv;
	(void)worker;
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = tasks[i];
		struct eager_flow *f = t->graph->flow->policy_slot;
		t->next = NULL;
		if (f->tail)
			f->tail->next = t;
		else
			f->head = t;
		f->tail = t;
		if (!f->active)
			ring_append(q, f);
	}
	q->queued += n;
	pthread_mutex_unlock(&q->lock);
}

/* Takes the first task of f this worker may run, or NULL. Caller holds the lock. */
static struct engine_task *take_runnable(struct eager *q, struct eager_flow *f, unsigned worker)
{
	struct engine_task *prev = NULL, *t = f->head;
	for (int n = 0; t && n < EAGER_SCAN; n++, prev = t, t = t->next) {
		if (!core_runnable(q->core, t, worker))
			continue;
		if (prev)
			prev->next = t->next;
		else
			f->head = t->next;
		if (f->tail == t)
			f->tail = prev;
		/* The next pick reads the new head, queued long ago on a busy
		 * graph (a cache miss): fetched while this one is staged. */
		if (f->head)
			__builtin_prefetch(f->head, 1, 3);
		return t;
	}
	return NULL;
}

static struct engine_task *eager_pick_next(void *priv, unsigned worker)
{
	struct eager *q = priv;
	struct engine_task *t = NULL;
	pthread_mutex_lock(&q->lock);
	struct eager_flow *prev = NULL, *f = q->ring_head;
	for (; f; prev = f, f = f->ring_next) {
		t = take_runnable(q, f, worker);
		if (t)
			break;
	}
	/* tandemctl client weight changes it at run time: read atomically. */
	uint32_t share = f && f->flow ? __atomic_load_n(&f->flow->weight, __ATOMIC_RELAXED) : 0;
	if (t && f == q->ring_head && f->head && ++f->served < (share ? share : 1)) {
		q->queued--; /* its turn goes on */
	} else if (t) {
		/* The flow that gave a task goes to the back of the ring. */
		f->served = 0;
		if (prev)
			prev->ring_next = f->ring_next;
		else
			q->ring_head = f->ring_next;
		if (q->ring_tail == f)
			q->ring_tail = prev;
		f->active = false;
		if (f->head)
			ring_append(q, f);
		q->queued--;
	}
	pthread_mutex_unlock(&q->lock);
	return t;
}

static void eager_flow_gone(void *priv, struct engine_flow *flow)
{
	struct eager *q = priv;
	pthread_mutex_lock(&q->lock);
	/* The core calls this only once the flow has nothing queued. */
	free(flow->policy_slot);
	flow->policy_slot = NULL;
	pthread_mutex_unlock(&q->lock);
}

/* One queue for every device, and pick_next hands a worker only what it
 * may run (core_runnable says no to a device that drains): a device that
 * comes or goes changes nothing here. */
static void eager_device_changed(void *priv, unsigned worker)
{
	(void)priv;
	(void)worker;
}

const struct policy_ops policy_eager = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "eager",
	.init = eager_init,
	.fini = eager_fini,
	.tasks_ready = eager_tasks_ready,
	.pick_next = eager_pick_next,
	.flow_added = eager_flow_added,
	.flow_gone = eager_flow_gone,
	.device_added = eager_device_changed,
	.device_draining = eager_device_changed,
	.device_removed = eager_device_changed,
};
