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
 * Queues of one machine (one per device) may share their virtual time
 * (struct fairq_clock) and each flow its virtual time across them (struct
 * fairq_share): a task served on any device then advances the flow's one
 * virtual time, and a flow counts as idle only when it has nothing queued
 * on any of them. Without it, a flow whose tasks are spread over several
 * device queues restarts at a queue's time each time its part there runs
 * dry, though it is still waiting elsewhere, and loses its share.
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

/* Virtual time shared by several queues (under `lock`, taken inside a
 * queue's lock), and a flow's share of it. */
struct fairq_clock {
	pthread_mutex_t lock;
	double vnow; /* start of the last task served on any of the queues */
	/* Flows with a task queued on any of the queues (changed under lock;
	 * fairq_clock_backlogged reads it without). */
	_Atomic uint32_t backlogged;
};

struct fairq_share {
	double vtime; /* virtual start of the flow's next task, on any queue */
	uint64_t queued; /* its tasks queued on the queues of the clock */
};

/* One flow's sub-queue in one fairq. */
struct fairq_flow {
	const struct engine_flow *flow; /* weight (0 reads as 1); NULL: weight 1 */
	struct fairq_entry *heap;
	uint32_t n, cap;
	int32_t slot; /* index in the queue's active[], -1 when idle */
	double vtime; /* virtual start of its next task (without a share) */
	struct fairq_share *share; /* NULL: this queue's own virtual time */
};

struct fairq {
	pthread_mutex_t lock;
	struct fairq_clock *clock; /* NULL: vnow below */
	double vnow; /* the queue's virtual time: start of the last task served */
	struct fairq_flow **active; /* flows with queued tasks */
	uint32_t nactive, cap;
	_Atomic size_t queued; /* changed under lock; fairq_len_hint reads it without */
	uint64_t seq; /* of the next push */
};

/* Decides whether the asking worker may take a task. */
typedef bool (*fairq_filter)(void *ctx, const struct engine_task *t);

#define FAIRQ_PEEK_MAX 16

void fairq_init(struct fairq *q);
/* A queue on the shared clock (initialised by fairq_clock_init); its flows
 * must each have a share (fairq_flow_init_shared). */
void fairq_init_shared(struct fairq *q, struct fairq_clock *clock);
void fairq_clock_init(struct fairq_clock *c);
/* How many flows have tasks queued on the clock's queues, without the lock
 * (may be stale by the time it is used). Below 2, no flow is behind
 * another: what each queue serves first is already fair. */
uint32_t fairq_clock_backlogged(const struct fairq_clock *c);
void fairq_clock_fini(struct fairq_clock *c);
/* Forgets every queued task (their flows keep their heaps). */
void fairq_fini(struct fairq *q);

void fairq_flow_init(struct fairq_flow *f, const struct engine_flow *flow);
/* The flow's sub-queue on a queue of the shared clock; `share` is the same
 * for all its sub-queues and zeroed before the first. */
void fairq_flow_init_shared(struct fairq_flow *f, const struct engine_flow *flow,
                            struct fairq_share *share);
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
/* Settles a served task's charge (its fair_charge, a prediction) against
 * its measured run time: the flow's shared virtual time moves by the
 * difference over its weight, so shares hold in measured device time
 * however the predictions err (a run is settled at most at 4 times its
 * charge: beyond, the machine preempted it, the flow's work did not). */
void fairq_settle(struct fairq_clock *c, struct fairq_share *share, const struct engine_flow *flow,
                  const struct engine_task *t, double measured_ns);
/* What pop (with the same filter) would serve first, left queued: its
 * priority class and its flow's virtual time (comparable across queues of
 * one clock). false: nothing. */
struct fairq_head {
	int32_t prio_class;
	double vtime;
	uint64_t seq;
};
bool fairq_head(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan, struct fairq_head *out);
/* a is served before b (higher class, then smaller virtual time). */
bool fairq_head_before(const struct fairq_head *a, const struct fairq_head *b);
/* Up to max (<= FAIRQ_PEEK_MAX) tasks in the order pop would give them
 * (as if nothing else were pushed meanwhile), left queued. */
size_t fairq_peek(struct fairq *q, struct engine_task **out, size_t max);
size_t fairq_len(struct fairq *q);
/* fairq_len without the lock: may be stale by the time it is used. */
size_t fairq_len_hint(const struct fairq *q);

#endif
