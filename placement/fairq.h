/* A weighted fair queue of ready tasks, for one device (or the queue any
 * device may take from).
 *
 * Each flow (client) has a sub-queue here: a binary heap ordered by
 * (prio_class descending, key ascending, seq ascending). Flows are served by
 * start-time fair queueing (Goyal et al., SFQ): each (queue, flow) pair has
 * a virtual time; the next task comes from the flow whose head has the
 * highest prio_class, ties going to the smallest virtual time (then the
 * oldest head). Serving a task advances its flow's virtual time by
 * cost / weight, so a flow gets a share of the device's time proportional to
 * its weight whatever its tasks cost. A flow that becomes active starts at
 * max(its own virtual time, the queue's), so idling banks no credit and a
 * newcomer is served next to a flood, not behind it.
 *
 * The per-flow state (struct fairq_flow) is the caller's memory (the
 * dispatch core hangs one per queue from engine_flow.policy_slot); every
 * call below takes the queue's mutex. push/pop are O(log n) in the flow's
 * heap plus O(active flows) for the choice of flow. */
#ifndef TDM_PLACEMENT_FAIRQ_H
#define TDM_PLACEMENT_FAIRQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph/task.h"

/* Order within a flow: prio_class (higher first), then key (smaller
 * first: ready time, planned start, deadline), then the order of the
 * pushes (a per-queue sequence number). */
struct fairq_key {
	int32_t prio_class;
	double key;
};

struct fairq_entry {
	int32_t prio_class;
	float cost; /* ns, at least 1: what serving it adds to the flow's virtual time */
	uint64_t seq;
	double key;
	struct engine_task *task;
};

/* One flow's sub-queue in one fairq. */
struct fairq_flow {
	const struct engine_flow *flow; /* weight (0 reads as 1); NULL: weight 1 */
	struct fairq_entry *heap;
	uint32_t n, cap;
	int32_t slot; /* index in the queue's active[], -1 when idle */
	double vtime; /* virtual start of its next task */
};

struct fairq {
	pthread_mutex_t lock;
	double vnow; /* the queue's virtual time: start of the last task served */
	struct fairq_flow **active; /* flows with queued tasks */
	uint32_t nactive, cap;
	/* Written under the lock; read without it by pop and peek, which
	 * answer an empty queue at once (as if they had run before a push
	 * under way: workers poll their own queues far more often than
	 * those hold anything). */
	_Atomic size_t queued;
	uint64_t seq; /* of the next push */
};

/* Decides whether the asking worker may take a task. */
typedef bool (*fairq_filter)(void *ctx, const struct engine_task *t);

#define FAIRQ_PEEK_MAX 16

void fairq_init(struct fairq *q);
/* Forgets every queued task (their flows keep their heaps). */
void fairq_fini(struct fairq *q);

void fairq_flow_init(struct fairq_flow *f, const struct engine_flow *flow);
/* Drops f from q, with whatever it still holds, and frees its heap.
 * Returns how many tasks it held. */
size_t fairq_flow_fini(struct fairq *q, struct fairq_flow *f);

/* Queues t in f's sub-queue. cost in ns (clamped to >= 1). 0 or
 * -TDM_ENOMEM (nothing queued). */
int fairq_push(struct fairq *q, struct fairq_flow *f, const struct fairq_key *k, double cost,
               struct engine_task *t);
/* The next task by the rules above, removed; NULL when empty. With a
 * filter, a flow whose head the filter refuses offers instead the first
 * task the filter accepts among the next `scan` entries of its heap (heap
 * order, not key order), and flows with none are passed over. */
struct engine_task *fairq_pop(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan);
/* Up to max (<= FAIRQ_PEEK_MAX) tasks in the order pop would give them
 * (as if nothing else were pushed meanwhile), left queued. */
size_t fairq_peek(struct fairq *q, struct engine_task **out, size_t max);
size_t fairq_len(struct fairq *q);

#endif
