/* The simulator's driver (sim.h): builds virtual devices, cost models and
 * residency from a machine description, turns a workload into engine
 * graphs, and steps the engine's workers in virtual time. */
#include "sim/sim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "backends/sim/sim_backend.h"
#include "common/errbuf.h"
#include "common/hugepage.h"
#include "sim/elastic.h"
#include "policies/policy.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* Above this many task x device costs the lower bound (its LP) is not
 * computed: it would take longer than the simulation. */
#define LB_MAX_COSTS 4000000ull

struct ev {
	uint64_t t;
	uint32_t w;
};

/* A kernel on a device that shares cores (see "shared cores" below). */
struct job {
	struct backend_event *ev; /* paced devices' */
	uint32_t v; /* its workload task */
	uint64_t ready; /* it may start: issued, inputs arrived, the one before done
	                 * (cores: and the slice it lost, if any, over) */
	uint64_t end; /* cores: when it ends (fixed when it starts) */
	double left_ns; /* paced: its uncontended time still to run */
};

/* Jobs in their device's order (a ring). */
struct jobq {
	struct job *a;
	uint32_t head, n, cap;
};

/* A predecessor as task_start reads it, per task launched: the edge's
 * source and the bytes it hands over. */
struct sim_pred {
	double bytes;
	uint32_t src;
};

/* Where and when a task ran, in one record: task_start reads both per
 * predecessor, and on a large graph each read is a cache miss. */
struct sim_ran {
	uint64_t end;
	int32_t dev; /* -1: not yet */
	bool abstract; /* !has_kernel, without reading w->tasks[] */
};

/* A task the policy holds next for a device, its launch's reads brought
 * into cache a step at a time (see ahead_step). */
struct sim_ahead {
	const struct engine_task *t;
	uint32_t v; /* its workload task (set by its first step) */
	uint32_t at; /* the pass (sim.passes) of its next step */
	uint16_t dev;
	uint8_t step;
};

/* Tasks looked ahead at once, at most (one per device staged), and the
 * passes of the loop between two steps: a pass may take less than a miss. */
#define AHEAD_MAX 64
#define AHEAD_PASSES 4
/* Looking ahead pays once the graph's task records outgrow the last-level
 * cache (32 MiB on the machines measured); below, it is overhead. */
#define AHEAD_MIN_BYTES ((uint64_t)32 << 20)

struct sim {
	const struct machine *m;
	const struct workload *w;
	const struct sim_opts *o;
	struct sim_result *r;
	double unit_ns, unit_bytes, cost_scale;
	struct sim_world world;
	struct clock_source clock;
	struct sim_device sdev[MACHINE_MAX_DEVICES];
	struct backend_device dev[MACHINE_MAX_DEVICES];
	struct residency res;
	bool res_ready;
	struct profiler *prof, *truth;
	struct engine *e;
	/* The workload as engine graphs. */
	uint32_t ngraphs;
	struct engine_graph *graphs;
	struct engine_flow *flows;
	uint32_t nflows;
	struct res_data *data;
	uint32_t *order; /* graphs by arrival */
	/* Per task (global index): its listed predecessors (CSR of indices
	 * into w->edges, wl_preds), the same as (source, bytes) pairs, and
	 * where and when it ran. */
	uint32_t *pred_off, *pred_edge;
	struct sim_pred *preds;
	struct sim_ran *ran;
	/* Per task (global index): its predecessors in the engine graph not
	 * launched yet (saturating; a hint only, see prefetch_successors). */
	uint16_t *unlaunched;
	/* The policy asks for whole cost rows as tasks are released (dmda
	 * does, eager does not): set by the first such ask, inside a
	 * completion (in_complete). */
	bool in_complete, rows_at_release;
	/* The next task of each device staged, looked ahead at: on a large
	 * graph it waited long in its queue and all its launch reads miss. */
	bool ahead_on;
	uint32_t nahead, passes;
	uint64_t engine_ticks; /* the engine's share of the loop (ticks()) */
	struct sim_ahead ahead[AHEAD_MAX];
	uint64_t first_arrival, last_end;
	uint32_t graphs_done;
	/* Completion events, a binary heap on (t, w). */
	struct ev *heap;
	size_t nheap;
	bool *scheduled;
	/* Workers that found nothing at this epoch skip looking again until
	 * it moves or one of their own tasks completes. */
	uint32_t *idle_at;
	bool *idle;
	/* Bit d: idle[d] and idle_at[d] == quiet_epoch, so that a pass at that
	 * epoch skips d without a call (on a wide machine most devices idle
	 * through most passes). May lack such a device, never holds another. */
	uint64_t quiet;
	uint32_t quiet_epoch;
	/* Devices whose pipeline is not full (bit d): a full one has nothing
	 * to look at before one of its tasks completes. */
	uint64_t open;
	int taker; /* the device whose task just completed (-1: none) */
	/* Shared cores (machine_device.shares_cores): devices that run on
	 * host cores they share with core workers are paced; the cores they
	 * share have their kernels' spans tracked. pace_t: paced kernels have
	 * progressed up to then. */
	bool paced_any, oom;
	bool paced[MACHINE_MAX_DEVICES], shared_core[MACHINE_MAX_DEVICES];
	uint64_t cores[MACHINE_MAX_DEVICES]; /* paced: the cores it runs on */
	/* shared core c: its worker's compute while a paced device was busy on
	 * it, since the last slice it lost to one (core_slice) */
	double slice_due[MACHINE_MAX_DEVICES];
	struct jobq jobs[MACHINE_MAX_DEVICES];
	double rate[MACHINE_MAX_DEVICES];
	uint64_t pace_t;
	/* Scale events (sim_opts.events): devices [0, npresent) are there at
	 * start; next_ev is the next to apply; watching counts the applied
	 * ones whose outcome (a device empty, a first task) is still open. */
	uint32_t npresent, next_ev, watching;
	uint64_t first_start[MACHINE_MAX_DEVICES]; /* a task's start + 1 (0: none yet) */
	/* Wake-ups (machine.wake_ns > 0; "waking workers" below): an idle
	 * device spins until awake_until, then sleeps until the
	 * engine wakes it (asleep: bit d), and it looks at wake_at (waking). */
	uint64_t wake_ns, spin_ns, asleep, waking, host; /* host: bit d, a core's worker */
	unsigned bell_next; /* the sleeping core worker a doorbell wakes next, in turn */
	uint64_t awake_until[MACHINE_MAX_DEVICES], wake_at[MACHINE_MAX_DEVICES];
	struct machine *in_order; /* the machine in engine id order (elastic.h) */
	uint32_t perm[MACHINE_MAX_DEVICES]; /* in_order's device i is the caller's perm[i] */
};

/* ---- the event heap ---- */

static bool ev_less(struct ev a, struct ev b)
{
	return a.t < b.t || (a.t == b.t && a.w < b.w);
}

static void heap_push(struct sim *S, struct ev x)
{
	size_t i = S->nheap++;
	while (i) {
		size_t p = (i - 1) / 2;
		if (!ev_less(x, S->heap[p]))
			break;
		S->heap[i] = S->heap[p];
		i = p;
	}
	S->heap[i] = x;
}

static struct ev heap_pop(struct sim *S)
{
	struct ev top = S->heap[0], x = S->heap[--S->nheap];
	size_t i = 0, n = S->nheap;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && ev_less(S->heap[c + 1], S->heap[c]))
			c++;
		if (!ev_less(S->heap[c], x))
			break;
		S->heap[i] = S->heap[c];
		i = c;
	}
	if (n)
		S->heap[i] = x;
	return top;
}

/* ---- costs ---- */

static uint64_t sim_now(const struct clock_source *c)
{
	return ((const struct sim_world *)c->ctx)->now;
}

/* Abstract task v's time on device d in ns; < 0: cannot run there. */
static double abstract_ns(const struct sim *S, uint32_t v, unsigned d)
{
	const struct workload *w = S->w;
	double c = w->dev_cost ? w->dev_cost[(size_t)v * w->ndev_cost + d] : w->tasks[v].cost;
	return c < 0 ? -1 : c * S->cost_scale;
}

/* A stated cost c as profiler_oracle_fn answers it: abstract_ns, then
 * the profiler's bounds (c < 0 and NaN cannot run). */
static inline double oracle_ns(double c, double scale, double least, double none)
{
	double v = c * scale;
	return c >= 0 && v >= 0 ? (v > least ? v : least) : none;
}

/* profiler_oracle_fn: task f->domain's stated costs on dev[0..n). */
static void oracle(void *ctx, const uint32_t *dev, uint32_t n, const struct kernel_features *f,
                   double least, double none, double *ns)
{
	struct sim *S = ctx;
	if (n > 1 && S->in_complete)
		S->rows_at_release = true;
	const struct workload *w = S->w;
	double v = f->domain;
	if (!(v >= 0 && v < w->ntasks)) {
		for (uint32_t i = 0; i < n; i++)
			ns[i] = none;
		return;
	}
	/* row by row (the scale in a local: a store to ns[] could otherwise
	 * change it for the compiler) */
	uint32_t t = (uint32_t)v;
	double scale = S->cost_scale;
	if (!w->dev_cost) {
		double c = oracle_ns(w->tasks[t].cost, scale, least, none);
		for (uint32_t i = 0; i < n; i++)
			ns[i] = c;
		return;
	}
	const double *row = w->dev_cost + (size_t)t * w->ndev_cost;
	if (scale > 0 && scale < INFINITY) {
		/* a cost >= 0 times such a scale is >= 0 (not NaN): oracle_ns
		 * with one test a device */
		for (uint32_t i = 0; i < n; i++) {
			double c = row[dev[i]], v = c * scale;
			ns[i] = c >= 0 ? (v > least ? v : least) : none;
		}
		return;
	}
	for (uint32_t i = 0; i < n; i++)
		ns[i] = oracle_ns(row[dev[i]], scale, least, none);
}

/* Starts loading task v's row of stated costs (a hint; nothing when the
 * workload states none). */
static inline __attribute__((always_inline)) void prefetch_cost_row(const struct workload *w,
                                                                    uint32_t v)
{
	if (!w->dev_cost || !w->ndev_cost)
		return;
	const char *row = (const char *)(w->dev_cost + (size_t)v * w->ndev_cost);
	size_t bytes = w->ndev_cost * sizeof(*w->dev_cost);
	for (size_t at = 0; at < bytes; at += 64)
		__builtin_prefetch(row + at, 0, 3);
	__builtin_prefetch(row + bytes - 1, 0, 3); /* a row across one more line */
}

/* profiler_oracle_ahead_fn: starts loading task f->domain's row of stated
 * costs (rows are read once each, in the order tasks become ready: each
 * is a miss, which a planner deciding another task first overlaps). */
static void oracle_ahead(void *ctx, const struct kernel_features *f)
{
	const struct sim *S = ctx;
	double v = f->domain;
	if (v >= 0 && v < S->w->ntasks)
		prefetch_cost_row(S->w, (uint32_t)v);
}

/* The graph index of every task; one graph when the workload has none. */
static uint32_t graph_of(const struct workload *w, uint32_t v)
{
	return w->ngraphs ? w->tasks[v].graph : 0;
}

/* The workload index of graph g's first task. */
static uint32_t first_of(const struct workload *w, uint32_t g)
{
	return w->ngraphs ? w->graphs[g].first : 0;
}

/* What task v costs on device d in the simulated world; < 0: cannot run. */
static double task_ns(const struct sim *S, uint32_t v, unsigned d)
{
	const struct wl_task *t = &S->w->tasks[v];
	struct cost_pred cp;
	if (!t->has_kernel)
		return abstract_ns(S, v, d);
	if (!S->sdev[d].runs[t->kernel])
		return -1;
	if (t->kernel == KERNEL_NOOP)
		return 0;
	profiler_predict(S->truth, t->kernel, d, &t->feat, &cp);
	return cp.ns;
}

static double link_ns(const struct sim *S, unsigned a, unsigned b, double bytes)
{
	const struct sim_link *l = &S->world.link[a][b];
	return a == b ? 0 : l->latency_ns + bytes * l->ns_per_byte;
}

static double edge_bytes(const struct sim *S, double data)
{
	return S->w->units == WL_UNITS_ABSTRACT ? data * S->unit_bytes : data;
}

/* Task v's span in the schedule (opts.record). */
static void put_span(struct sim *S, uint32_t v, unsigned d, uint64_t start, uint64_t end)
{
	const struct wl_task *t = &S->w->tasks[v];
	S->r->spans[v] = (struct sched_span){ .device = d,
		                              .start_ns = start,
		                              .end_ns = end,
		                              .name = t->name,
		                              .graph = t->graph,
		                              .task = v - first_of(S->w, t->graph) };
}

/* Task v ran on device d from start to end. */
static void record_task(struct sim *S, uint32_t v, unsigned d, uint64_t start, uint64_t end)
{
	S->ran[v].end = end;
	if (!S->first_start[d])
		S->first_start[d] = start + 1;
	S->r->busy_ns[d] += end - start;
	S->r->tasks_on[d]++;
	if (end > S->last_end)
		S->last_end = end;
	if (S->r->spans)
		put_span(S, v, d, start, end);
}

/* Task v was skipped (wl_task.skipped): it never ran; the engine completed
 * it when its last predecessor did, on that one's device (as the real
 * engine does, on the releasing worker). Predecessors come first in a
 * trace, so a chain of skipped tasks is filled in order. */
static void record_skipped(struct sim *S, uint32_t v)
{
	uint64_t at = 0;
	uint32_t dev = 0;
	for (uint32_t i = S->pred_off[v]; i < S->pred_off[v + 1]; i++) {
		uint32_t u = S->preds[i].src;
		if (u < v && S->r->spans[u].end_ns >= at) {
			at = S->r->spans[u].end_ns;
			dev = S->r->spans[u].device;
		}
	}
	put_span(S, v, dev, at, at);
}

/* ---- shared cores ----
 *
 * A device that shares cores (an OpenCL CPU device on the cores of the core
 * workers) computes on what those cores leave it. The model (docs/
 * simulation.md, "Shared cores", where its figures come from): a core
 * worker's kernels run at their measured speed, but while a paced device
 * is busy on its core the worker loses the core to it for core_slice_ns
 * once per core_slice_every_ns of its compute (core_slice); a paced
 * device's kernel advances at
 *
 *   rate(a) = (1 / |cores(a)|) * sum over the cores c of a: s(c) / (paced devices busy on c)
 *
 * s(c) = 1 when no core worker computes on c (idle, or in a slice it lost),
 * busy_core_share when one does.
 *
 * A paced kernel's end is known only as it runs: the driver takes the next
 * moment a rate changes (a kernel starts or ends on a paced device, or
 * starts computing or ends on a shared core) as an event of its own. */

static int jobq_push(struct jobq *q, struct job j)
{
	if (q->n == q->cap) {
		uint32_t cap = q->cap ? 2 * q->cap : 8;
		struct job *a = malloc(cap * sizeof(*a));
		if (!a)
			return -TDM_ENOMEM;
		for (uint32_t i = 0; i < q->n; i++)
			a[i] = q->a[(q->head + i) % q->cap];
		free(q->a);
		q->a = a;
		q->head = 0;
		q->cap = cap;
	}
	q->a[(q->head + q->n++) % q->cap] = j;
	return 0;
}

static struct job *jobq_front(struct jobq *q)
{
	return q->n ? &q->a[q->head] : NULL;
}

static void jobq_pop(struct jobq *q)
{
	q->head = (q->head + 1) % q->cap;
	q->n--;
}

/* Is core worker c computing at time t? (Its kernels run one after the
 * other: only the oldest one that has not ended can be running.) */
static bool core_busy(struct sim *S, unsigned c, uint64_t t)
{
	struct jobq *q = &S->jobs[c];
	struct job *j;
	while ((j = jobq_front(q)) && j->end <= t)
		jobq_pop(q);
	return j && j->ready <= t;
}

static bool paced_busy(struct sim *S, unsigned d)
{
	struct job *j = jobq_front(&S->jobs[d]);
	return j && j->ready <= S->pace_t;
}

/* Every paced device's rate at pace_t. */
static void pace_rates(struct sim *S)
{
	unsigned nd = S->m->ndevices;
	bool busy[MACHINE_MAX_DEVICES];
	unsigned on[MACHINE_MAX_DEVICES] = { 0 }; /* paced devices busy on core c */
	for (unsigned d = 0; d < nd; d++) {
		busy[d] = S->shared_core[d] ? core_busy(S, d, S->pace_t)
		          : S->paced[d]     ? paced_busy(S, d)
		                            : false;
		for (unsigned c = 0; S->paced[d] && busy[d] && c < nd; c++)
			on[c] += (unsigned)(S->cores[d] >> c & 1);
	}
	for (unsigned d = 0; d < nd; d++) {
		uint64_t cores = S->cores[d];
		double share = 0;
		S->rate[d] = 0;
		if (!S->paced[d] || !busy[d])
			continue;
		double on_busy = S->m->dev[d].busy_core_share;
		for (unsigned c = 0; c < nd; c++)
			if (cores >> c & 1)
				share += (busy[c] ? on_busy : 1.0) / on[c];
		S->rate[d] = share / __builtin_popcountll(cores);
	}
}

/* Paced kernels progress, at the rates of pace_t, up to t (no rate changes
 * in between: the driver stops at each change). */
static void pace_advance(struct sim *S, uint64_t t)
{
	if (!S->paced_any || t <= S->pace_t)
		return;
	for (unsigned d = 0; d < S->m->ndevices; d++) {
		struct job *j = S->paced[d] ? jobq_front(&S->jobs[d]) : NULL;
		if (j && j->ready <= S->pace_t)
			j->left_ns -= S->rate[d] * (double)(t - S->pace_t);
	}
	S->pace_t = t;
}

/* The next moment after pace_t a rate changes, or a paced kernel ends
 * (*done: its device; else -1); UINT64_MAX when nothing is pending. */
static uint64_t pace_next(struct sim *S, int *done)
{
	uint64_t next = UINT64_MAX;
	*done = -1;
	pace_rates(S);
	for (unsigned d = 0; d < S->m->ndevices; d++) {
		struct job *j = jobq_front(&S->jobs[d]);
		if (!j)
			continue;
		if (j->ready > S->pace_t) {
			if (j->ready < next) {
				next = j->ready;
				*done = -1;
			}
		} else if (S->shared_core[d]) {
			if (j->end < next) { /* also in the heap: taken there */
				next = j->end;
				*done = -1;
			}
		} else if (S->rate[d] > 0) {
			double left = j->left_ns > 0 ? j->left_ns : 0;
			uint64_t end = S->pace_t + (uint64_t)ceil(left / S->rate[d]);
			if (end < next) {
				next = end;
				*done = (int)d;
			}
		}
	}
	return next;
}

/* Paced device d's oldest kernel ends at pace_t. */
static void pace_finish(struct sim *S, unsigned d)
{
	struct jobq *q = &S->jobs[d];
	struct job *j = jobq_front(q);
	sim_event_retime(j->ev, j->ready, S->pace_t);
	record_task(S, j->v, d, j->ready, S->pace_t);
	jobq_pop(q);
	if ((j = jobq_front(q)) && j->ready < S->pace_t)
		j->ready = S->pace_t; /* the device is in order */
}

/* A core worker's kernel of ns on shared core c, starting at t: while a
 * paced device is busy on c, the worker loses c to that device's threads
 * for core_slice_ns once per core_slice_every_ns of its own compute (the
 * count carried over from kernel to kernel, so that short kernels pay
 * now and then, as measured, and not each a fraction). Returns the time
 * lost before the kernel computes; the paced device has the core then.
 * Decided at the start: a device that becomes busy during the kernel
 * takes nothing from it. */
static uint64_t core_slice(struct sim *S, unsigned c, uint64_t t, double ns)
{
	for (unsigned a = 0; a < S->m->ndevices; a++) {
		const struct machine_device *md = &S->m->dev[a];
		struct job *j =
		        S->paced[a] && (S->cores[a] >> c & 1) ? jobq_front(&S->jobs[a]) : NULL;
		if (!j || j->ready > t)
			continue;
		if (!(md->core_slice_ns > 0 && md->core_slice_every_ns > 0))
			return 0; /* the description says it takes no slices */
		S->slice_due[c] += ns;
		double n = floor(S->slice_due[c] / md->core_slice_every_ns);
		S->slice_due[c] -= n * md->core_slice_every_ns;
		return (uint64_t)llround(n * md->core_slice_ns);
	}
	return 0;
}

static uint64_t task_start(struct sim *S, uint32_t v, unsigned d, uint64_t earliest)
{
	uint16_t node = S->sdev[d].node;
	/* Abstract tasks: each predecessor's data comes from where it ran
	 * (kernel tasks move their buffers through residency). */
	if (!S->ran[v].abstract)
		return earliest;
	for (uint32_t i = S->pred_off[v]; i < S->pred_off[v + 1]; i++) {
		const struct sim_pred *e = &S->preds[i];
		const struct sim_ran *p = &S->ran[e->src];
		double bytes = e->bytes;
		uint16_t pn = p->dev >= 0 ? S->sdev[p->dev].node : node;
		uint64_t at = p->end;
		if (pn != node && bytes > 0) {
			at += (uint64_t)llround(link_ns(S, pn, node, bytes));
			S->world.bytes_moved += (uint64_t)bytes;
		}
		if (at > earliest)
			earliest = at;
	}
	return earliest;
}

/* When v completes the engine counts down its successors' dependencies:
 * their task records are brought into cache now, while v runs (on a large
 * graph each is a cache miss at completion otherwise). */
static void prefetch_successors(struct sim *S, uint32_t v)
{
	uint32_t gi = graph_of(S->w, v);
	const struct engine_graph *g = &S->graphs[gi];
	uint32_t i = v - first_of(S->w, gi);
	uint32_t first = v - i;
	for (uint32_t k = g->succ_off[i]; k < g->succ_off[i + 1]; k++) {
		uint32_t s = g->succ[k];
		const char *t = (const char *)&g->tasks[s];
		__builtin_prefetch(t, 1, 3);
		if (!S->rows_at_release)
			continue;
		uint16_t *left = &S->unlaunched[first + s];
		if (!*left || --*left)
			continue;
		/* v is the last of s's predecessors to launch: s is released
		 * when the last of them completes, after this, and the policy
		 * reads its features, its scratch and its cost row then. */
		__builtin_prefetch(t + offsetof(struct engine_task, feat), 0, 3);
		__builtin_prefetch(t + offsetof(struct engine_task, policy_key), 1, 3);
		prefetch_cost_row(S->w, first + s);
	}
}

/* ---- looking ahead ----
 *
 * A device's next task sat in its queue since its release, thousands of
 * launches ago on a large graph: its record, its cost row and the lists
 * its launch walks (predecessors, then where each ran; successors) are
 * all out of cache, and each list is found only through the one before.
 * Once a device is staged, the task its queue holds next is noted here,
 * and each pass of the loop takes every noted task one read further; it
 * launches when one of the device's tasks completes, many passes later. */

static void ahead_note(struct sim *S, unsigned d)
{
	struct engine_task *t;
	if (S->nahead == AHEAD_MAX || !engine_sim_peek(S->e, d, &t, 1))
		return;
	const char *p = (const char *)t;
	__builtin_prefetch(p, 1, 3);
	__builtin_prefetch(p + offsetof(struct engine_task, start_ns), 1, 3);
	__builtin_prefetch(p + offsetof(struct engine_task, policy_key), 1, 3);
	S->ahead[S->nahead++] =
	        (struct sim_ahead){ .t = t, .dev = (uint16_t)d, .at = S->passes + AHEAD_PASSES };
}

static void ahead_step(struct sim *S)
{
	const struct workload *w = S->w;
	uint32_t keep = 0;
	for (uint32_t k = 0; k < S->nahead; k++) {
		struct sim_ahead *a = &S->ahead[k];
		if (a->at != S->passes) {
			S->ahead[keep++] = *a;
			continue;
		}
		a->at += AHEAD_PASSES;
		const struct engine_graph *g = a->t->graph;
		uint32_t i = a->t->index;
		switch (a->step++) {
		case 0:
			a->v = first_of(w, (uint32_t)g->cookie) + i;
			if (w->dev_cost)
				__builtin_prefetch(
				        &w->dev_cost[(size_t)a->v * w->ndev_cost + a->dev], 0, 3);
			__builtin_prefetch(&S->ran[a->v], 1, 3);
			__builtin_prefetch(&S->pred_off[a->v], 0, 3);
			__builtin_prefetch(&g->succ_off[i], 0, 3);
			break;
		case 1:
			/* Every half line: a prefetch per line (its first and last
			 * byte) was measured slower here, for reasons not found. */
			for (uint32_t e = S->pred_off[a->v]; e < S->pred_off[a->v + 1]; e += 2)
				__builtin_prefetch(&S->preds[e], 0, 3);
			for (uint32_t e = g->succ_off[i]; e < g->succ_off[i + 1]; e += 8)
				__builtin_prefetch(&g->succ[e], 0, 3);
			break;
		default:
			for (uint32_t e = S->pred_off[a->v]; e < S->pred_off[a->v + 1]; e++)
				__builtin_prefetch(&S->ran[S->preds[e].src], 0, 3);
			/* What prefetch_successors reads and writes at the launch. */
			for (uint32_t e = g->succ_off[i]; e < g->succ_off[i + 1]; e++) {
				__builtin_prefetch(&g->tasks[g->succ[e]], 1, 3);
				__builtin_prefetch(&S->unlaunched[a->v - i + g->succ[e]], 1, 3);
			}
			continue; /* done with it */
		}
		S->ahead[keep++] = *a;
	}
	S->nahead = keep;
}

/* sim_world.launch: the kernel of task v on device d, from `earliest`. */
static uint64_t on_launch(void *ctx, unsigned d, const struct kernel_def *k,
                          const struct tdm_kernel_call *call, struct backend_event *ev,
                          uint64_t *start)
{
	struct sim *S = ctx;
	/* The engine launches a task's own call (engine_task.call): its task,
	 * and through its graph (cookie: the graph's index) the workload task,
	 * are found from where it lies; reading anything in the call would be
	 * one more cache miss per task on a large graph. */
	const struct engine_task *t =
	        (const struct engine_task *)((const char *)call -
	                                     offsetof(struct engine_task, call));
	uint32_t v = first_of(S->w, (uint32_t)t->graph->cookie) + t->index;
	(void)k;
	prefetch_successors(S, v);
	uint64_t earliest = task_start(S, v, d, *start);
	double ns = S->ran[v].abstract ? abstract_ns(S, v, d) : task_ns(S, v, d);
	if (!(ns > 0))
		ns = 0;
	uint64_t slice = S->shared_core[d] ? core_slice(S, d, earliest, ns) : 0;
	uint64_t end = earliest + slice + (uint64_t)llround(ns);
	*start = earliest;
	S->ran[v].dev = (int32_t)d;
	if (S->paced[d] || S->shared_core[d]) {
		/* a core's kernel computes after the slice it lost, if any */
		struct job j = {
			.ev = ev, .v = v, .ready = earliest + slice, .end = end, .left_ns = ns
		};
		if (jobq_push(&S->jobs[d], j))
			S->oom = true;
		if (S->paced[d])
			return end; /* provisional: pace_finish sets it */
	}
	record_task(S, v, d, earliest, end);
	return end;
}

static void on_copy(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t start,
                    uint64_t end)
{
	struct sim *S = ctx;
	struct sim_result *r = S->r;
	if (!r->spans)
		return;
	if (r->link_track[src][dst] < 0) {
		int n = (int)r->nlinks++;
		r->link_track[src][dst] = n;
		snprintf(r->link_names[n], sizeof(r->link_names[n]), "copy %s>%s",
		         src ? S->res.nodes[src].name : "host",
		         dst ? S->res.nodes[dst].name : "host");
		r->link_name_ptr[n] = r->link_names[n];
	}
	if (r->ncopies == r->copies_cap) {
		size_t cap = r->copies_cap ? 2 * r->copies_cap : 1024;
		struct sched_span *p = realloc(r->copy_spans, cap * sizeof(*p));
		if (!p)
			return; /* the picture loses a copy; the figures do not */
		r->copy_spans = p;
		r->copies_cap = cap;
	}
	r->copy_spans[r->ncopies++] =
	        (struct sched_span){ .device = (uint32_t)r->link_track[src][dst],
		                     .start_ns = start,
		                     .end_ns = end,
		                     .name = "copy",
		                     .bytes = bytes };
}

static void graph_done(void *ctx, struct engine_graph *g)
{
	struct sim *S = ctx;
	(void)g;
	S->graphs_done++;
}

/* ---- machine ---- */

/* Devices that share a calibration key share a cost model, and the
 * policies predict one device of the key for all (eft groups). A workload
 * of abstract tasks that gives devices of one key different costs (the
 * HEFT paper's random DAGs) makes them different devices: each gets a key
 * of its own, so what the engine predicts is what the task costs. */
static void split_keys(const struct sim *S, struct calibration *cal)
{
	const struct workload *w = S->w;
	unsigned nd = S->m->ndevices;
	if (!w->dev_cost || w->ndev_cost != nd || nd > CAL_MAX_DEVICES)
		return;
	for (uint32_t v = 0; v < w->ntasks; v++)
		if (w->tasks[v].has_kernel)
			return; /* kernel cost tables go by key */
	bool split = false;
	for (unsigned b = 1; b < nd && !split; b++) {
		unsigned a = 0; /* the first device of b's key */
		while (strcmp(cal->dev[a].key, cal->dev[b].key))
			a++;
		for (uint32_t v = 0; a < b && v < w->ntasks && !split; v++)
			split = w->dev_cost[(size_t)v * nd + a] != w->dev_cost[(size_t)v * nd + b];
	}
	for (unsigned d = 0; split && d < nd; d++) {
		char *k = cal->dev[d].key;
		size_t len = strlen(k), room = CAL_KEY_MAX - 1;
		char tail[16];
		int tl = snprintf(tail, sizeof(tail), "#%u", d);
		memcpy(k + (len + (size_t)tl > room ? room - (size_t)tl : len), tail,
		       (size_t)tl + 1);
	}
}

static int build_machine(struct sim *S, char *err, size_t errlen)
{
	const struct machine *m = S->m;
	struct calibration cal;
	int rc;

	for (unsigned a = 0; a < m->nnodes; a++)
		for (unsigned b = 0; b < m->nnodes; b++) {
			const struct cal_link *l = &m->link[a][b];
			S->world.link[a][b] = (struct sim_link){
				.latency_ns = a == b ? 0 : l->latency_ns,
				.ns_per_byte = a == b || !(l->gbps > 0) ? 0 : 1.0 / l->gbps,
			};
		}
	S->world.launch = on_launch;
	S->world.copied = on_copy;
	S->world.ctx = S;
	S->clock = (struct clock_source){ .now_ns = sim_now, .ctx = &S->world };

	/* Kernels priced by some model of the machine: only devices of those
	 * models run them; the others run on every device (roofline). */
	bool priced[KERNEL_COUNT] = { false };
	for (uint32_t i = 0; i < m->ncosts; i++)
		if (m->costs[i].kernel < KERNEL_COUNT)
			priced[m->costs[i].kernel] = true;
	for (unsigned d = 0; d < m->ndevices; d++) {
		const struct machine_device *md = &m->dev[d];
		struct sim_device *sd = &S->sdev[d];
		sd->world = &S->world;
		sd->index = d;
		sd->node = md->node;
		/* Shared cores: the device is paced, the cores it uses tracked. */
		for (unsigned c = 0; c < m->ndevices; c++)
			if (md->kind != TDM_DEV_CPU && (md->shares_cores >> c & 1) &&
			    m->dev[c].kind == TDM_DEV_CPU) {
				sd->paced = S->paced[d] = S->paced_any = true;
				S->shared_core[c] = true;
				S->cores[d] |= UINT64_C(1) << c;
			}
		for (uint32_t k = 0; k < KERNEL_COUNT; k++)
			sd->runs[k] = !priced[k];
		for (uint32_t i = 0; i < m->ncosts; i++)
			if (m->costs[i].kernel < KERNEL_COUNT &&
			    !strcmp(m->costs[i].model, md->model))
				sd->runs[m->costs[i].kernel] = true;
		struct backend_device *bd = &S->dev[d];
		snprintf(bd->name, sizeof(bd->name), "%s", md->name);
		snprintf(bd->model, sizeof(bd->model), "%s", md->model);
		bd->kind = md->kind;
		bd->ops = &backend_sim;
		bd->os_index = -1;
		bd->priv = sd;
		bd->mem_bytes = md->node ? (md->mem_bytes ? md->mem_bytes : (uint64_t)1 << 40) : 0;
		bd->numa_node = -1;
		bd->node = md->node;
		S->r->devname[d] = md->name;
	}
	S->r->ndevices = m->ndevices;

	/* Memory nodes: the host, then each accelerator node in order. */
	residency_init(&S->res);
	S->res.fresh_nodes = true; /* node numbers index the machine's links */
	S->res_ready = true;
	for (unsigned n = 1; n < m->nnodes; n++) {
		unsigned d = 0;
		while (d < m->ndevices && m->dev[d].node != n)
			d++;
		if (d < m->ndevices && d >= S->npresent)
			break; /* absent devices' nodes (the last ones): added with them */
		if (d == m->ndevices) {
			err_printf(err, errlen, "%s: memory node %u has no device", m->name, n);
			return -TDM_EINVAL;
		}
		if (residency_add_node(&S->res, &S->dev[d], S->dev[d].mem_bytes) != (int)n) {
			err_printf(err, errlen, "%s: too many memory nodes", m->name);
			return -TDM_EINVAL;
		}
	}

	machine_calibration(m, &cal);
	split_keys(S, &cal);
	json_t *models = machine_models_json(m);
	if (!models || profiler_create(&cal, &S->prof) || profiler_create(&cal, &S->truth)) {
		json_decref(models);
		err_printf(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	size_t skipped = 0;
	char why[160] = "";
	rc = profiler_load_json(S->prof, models, &skipped, why, sizeof(why));
	if (!rc)
		rc = profiler_load_json(S->truth, models, &skipped, why, sizeof(why));
	json_decref(models);
	if (rc) {
		err_printf(err, errlen, "%s: cost tables: %s", m->name, why);
		return -TDM_EINVAL;
	}
	profiler_set_oracle(S->prof, KERNEL_SIM_TASK, oracle, S);
	profiler_set_oracle_ahead(S->prof, oracle_ahead);
	return 0;
}

/* ---- workload ---- */

/* Checks that the workload fits the machine. */
static int check_workload(struct sim *S, char *err, size_t errlen)
{
	const struct workload *w = S->w;
	const struct machine *m = S->m;
	if (!w->ntasks) {
		err_printf(err, errlen, "%s: no tasks", w->name);
		return -TDM_EINVAL;
	}
	if (w->dev_cost && w->ndev_cost != m->ndevices) {
		err_printf(err, errlen, "%s: costs are given for %u devices but %s has %u", w->name,
		           w->ndev_cost, m->name, m->ndevices);
		return -TDM_EINVAL;
	}
	for (uint32_t v = 0; v < w->ntasks; v++) {
		const struct wl_task *t = &w->tasks[v];
		if (t->has_kernel) {
			const struct kernel_def *k = kernel_by_id(t->kernel);
			if (!k || t->nargs != k->nargs) {
				err_printf(err, errlen,
				           "%s: task %u (%s): %u arguments, kernel %s takes %u",
				           w->name, v, t->name, t->nargs, k ? k->name : "?",
				           k ? k->nargs : 0);
				return -TDM_EINVAL;
			}
			for (unsigned a = 0; a < t->nargs; a++)
				if (t->args[a].buf >= w->nbufs) {
					err_printf(err, errlen,
					           "%s: task %u: buffer %u does not exist", w->name,
					           v, t->args[a].buf);
					return -TDM_EINVAL;
				}
		}
		bool any = false;
		for (unsigned d = 0; d < m->ndevices && !any; d++)
			any = task_ns(S, v, d) >= 0;
		if (!any) {
			err_printf(err, errlen, "%s: task %u (%s): no device of %s can run it",
			           w->name, v, t->name, m->name);
			return -TDM_EINVAL;
		}
		/* Abstract tasks barred from a device: only whole memory nodes can be
		 * excluded (engine_task.excl_nodes). */
		bool barred = false;
		for (unsigned d = 0; d < m->ndevices && !t->has_kernel && w->dev_cost; d++)
			barred = barred || abstract_ns(S, v, d) < 0;
		if (barred)
			for (unsigned d = 0; d < m->ndevices; d++)
				for (unsigned d2 = 0; d2 < m->ndevices; d2++)
					if (m->dev[d].node == m->dev[d2].node &&
					    (abstract_ns(S, v, d) < 0) !=
					            (abstract_ns(S, v, d2) < 0)) {
						err_printf(
						        err, errlen,
						        "%s: task %u: runs on %s but not on %s, "
						        "which "
						        "shares its memory node; the simulator can "
						        "only bar a task from a whole node",
						        w->name, v, m->dev[d].name,
						        m->dev[d2].name);
						return -TDM_EINVAL;
					}
	}
	return 0;
}

static int build_preds(struct sim *S)
{
	uint32_t n = S->w->ntasks;
	S->ran = malloc((n ? n : 1) * sizeof(*S->ran));
	/* It and preds are read at random, per task launched. */
	hugepage_advise(S->ran, n * sizeof(*S->ran));
	if (!S->ran || wl_preds(S->w, &S->pred_off, &S->pred_edge))
		return -TDM_ENOMEM;
	for (uint32_t v = 0; v < n; v++)
		S->ran[v] = (struct sim_ran){ .dev = -1, .abstract = !S->w->tasks[v].has_kernel };
	uint32_t np = S->pred_off[n];
	S->preds = malloc((np ? np : 1) * sizeof(*S->preds));
	if (!S->preds)
		return -TDM_ENOMEM;
	hugepage_advise(S->preds, np * sizeof(*S->preds));
	for (uint32_t i = 0; i < np; i++) {
		const struct wl_edge *e = &S->w->edges[S->pred_edge[i]];
		S->preds[i] = (struct sim_pred){ .bytes = edge_bytes(S, e->data), .src = e->src };
	}
	return 0;
}

/* The engine graph of tasks [first, first + n) of the workload, built as
 * the daemon builds a client's (graph/build.h): kernel tasks depend on
 * each other by the buffers they touch, and every task on its listed
 * predecessors. Graphs of abstract tasks hand data along their edges
 * (edge_data); those whose data goes by buffers plan with the engine's own
 * edge bytes. */
static int build_graph(struct sim *S, struct engine_graph *g, uint32_t first, uint32_t n)
{
	const struct workload *w = S->w;
	bool by_edges = n && !w->tasks[first].has_kernel;
	struct graph_build gb;
	uint32_t index;
	int rc = 0;

	graph_build_init(&gb, n, 0);
	rc = graph_build_reserve(&gb, n);
	for (uint32_t v = first; !rc && v < first + n; v++) {
		const struct wl_task *t = &w->tasks[v];
		struct engine_task *et = graph_build_next(&gb);
		if (!et) {
			rc = -TDM_ENOMEM;
			break;
		}
		memset(et, 0, sizeof(*et));
		et->priority = t->priority;
		if (t->has_kernel) {
			et->kernel = kernel_by_id(t->kernel);
			et->feat = t->feat;
			/* Skipped in the recorded run: completed unrun once released,
			 * as the engine does a task its router sent no token. */
			if (t->skipped)
				et->flags |= TASK_SKIPPED;
			et->call.nargs = t->nargs;
			for (unsigned a = 0; a < t->nargs; a++) {
				et->data[a] = &S->data[t->args[a].buf];
				et->call.len[a] = et->data[a]->bytes;
			}
		} else {
			et->kernel = kernel_by_id(KERNEL_SIM_TASK);
			et->feat = (struct kernel_features){ .domain = v };
			for (unsigned d = 0; d < S->m->ndevices; d++)
				if (abstract_ns(S, v, d) < 0)
					et->excl_nodes |= (uint16_t)(1u << S->m->dev[d].node);
			if (et->excl_nodes)
				engine_note_exclusions(S->e);
		}
		rc = graph_build_task(&gb, et, &index);
		if (!rc)
			rc = wl_task_deps(w, v, first, n, S->pred_off, S->pred_edge, by_edges, &gb);
	}
	if (!rc)
		rc = graph_build_finish(&gb, g);
	graph_build_fini(&gb);
	if (rc)
		return rc == -TDM_EINVAL ? -TDM_EINVAL : -TDM_ENOMEM;
	double *ed = (double *)g->edge_data;
	for (uint32_t v = 0; ed && v < n; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			ed[k] = ed[k] >= 0 ? edge_bytes(S, ed[k])
			                   : wl_edge_data(w, first + v, first + g->succ[k]);
	return 0;
}

static int build_graphs(struct sim *S, char *err, size_t errlen)
{
	const struct workload *w = S->w;
	uint32_t ng = w->ngraphs ? w->ngraphs : 1;

	S->ngraphs = ng;
	S->graphs = calloc(ng, sizeof(*S->graphs));
	S->order = malloc(ng * sizeof(uint32_t));
	S->unlaunched = calloc(w->ntasks ? w->ntasks : 1, sizeof(*S->unlaunched));
	S->data = calloc(w->nbufs ? w->nbufs : 1, sizeof(*S->data));
	if (!S->graphs || !S->order || !S->data || !S->unlaunched)
		return -TDM_ENOMEM;
	for (uint32_t b = 0; b < w->nbufs; b++)
		residency_data_init(&S->res, &S->data[b], NULL, (uint64_t)w->buf_bytes[b], b,
		                    w->buf_keep && w->buf_keep[b]);

	/* Flows: one per client. */
	uint32_t maxc = 0;
	for (uint32_t g = 0; g < w->ngraphs; g++)
		if (w->graphs[g].client > maxc)
			maxc = w->graphs[g].client;
	if (maxc >= 1u << 20) {
		err_printf(err, errlen, "%s: client ids above 2^20", w->name);
		return -TDM_EINVAL;
	}
	S->nflows = maxc + 1;
	S->flows = calloc(S->nflows, sizeof(*S->flows));
	if (!S->flows)
		return -TDM_ENOMEM;
	for (uint32_t c = 0; c < S->nflows; c++) {
		S->flows[c].id = c;
		S->flows[c].weight = 1;
		if (engine_flow_add(S->e, &S->flows[c]))
			return -TDM_ENOMEM;
	}

	for (uint32_t i = 0; i < w->nedges; i++)
		if (graph_of(w, w->edges[i].src) != graph_of(w, w->edges[i].dst)) {
			err_printf(err, errlen, "%s: edge %u -> %u joins two graphs", w->name,
			           w->edges[i].src, w->edges[i].dst);
			return -TDM_EINVAL;
		}
	for (uint32_t gi = 0; gi < ng; gi++) {
		struct engine_graph *g = &S->graphs[gi];
		const struct wl_graph *wg = w->ngraphs ? &w->graphs[gi] : NULL;
		g->flow = &S->flows[wg ? wg->client : 0];
		g->cookie = gi;
		g->priority = wg ? wg->priority : 0;
		g->policy_hint = wg ? wg->policy_hint : 0;
		S->order[gi] = gi;
		uint32_t first = first_of(w, gi);
		int rc = build_graph(S, g, first, wg ? wg->ntasks : w->ntasks);
		if (rc)
			return rc;
		for (uint32_t k = 0; k < g->succ_off[g->ntasks]; k++) {
			uint16_t *left = &S->unlaunched[first + g->succ[k]];
			*left += *left < UINT16_MAX;
		}
	}
	return 0;
}

static uint64_t arrival_of(const struct sim *S, uint32_t g)
{
	const struct workload *w = S->w;
	return w->ngraphs ? (uint64_t)llround(w->graphs[g].arrival_ns) : 0;
}

static int by_arrival(const void *a, const void *b, void *ctx)
{
	const struct sim *S = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	uint64_t ax = arrival_of(S, x), ay = arrival_of(S, y);
	return ax < ay ? -1 : ax > ay ? 1 : (x > y) - (x < y);
}

/* ---- the run ---- */

static double wall_ns(void)
{
	return (double)clock_monotonic_ns();
}

/* The loop times the engine's share of each pass (sim_result.engine_ns)
 * with the time-stamp counter where there is one: 4 clock_gettime calls a
 * pass, ~25 ns each here, were 9% of the loop's perf samples (dmda,
 * random200k); rdtsc takes ~10 ns. The ticks are turned into ns by the
 * loop's own ratio of the two. */
static uint64_t ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __rdtsc();
#else
	return clock_monotonic_ns();
#endif
}

/* Graph gi arrives now; intake: the worker that takes it in (-1: none). */
static void submit(struct sim *S, uint32_t gi, int intake)
{
	struct engine_graph *g = &S->graphs[gi];
	const struct workload *w = S->w;
	if (w->ngraphs && w->graphs[gi].deadline_ns > 0)
		g->deadline_ns = S->world.now + (uint64_t)llround(w->graphs[gi].deadline_ns);
	engine_sim_submit(S->e, g, intake);
}

/* The virtual clock moves to t (never back); paced kernels progress. */
static void move_to(struct sim *S, uint64_t t)
{
	pace_advance(S, t);
	if (t > S->world.now)
		S->world.now = t;
}

/* ---- scale events (docs/elastic-sim.md) ----
 *
 * Applied at their virtual times (the workload's arrival clock) with the
 * engine's device calls between steps; devices [npresent, ndevices) are
 * absent until an "add" (sim_machine_in_engine_order put them in the
 * order they are added, so each gets the engine id of its slot). */

static unsigned event_dev(const struct sim *S, const struct scale_event *e)
{
	unsigned d = 0;
	while (d + 1 < S->m->ndevices && strcmp(S->m->dev[d].name, e->dev))
		d++;
	return d; /* sim_events_check made sure it exists */
}

static uint64_t next_event_t(const struct sim *S)
{
	const struct scale_events *ev = S->o->events;
	return ev && S->next_ev < ev->n ? ev->ev[S->next_ev].t_ns : UINT64_MAX;
}

static void apply_events(struct sim *S)
{
	const struct scale_events *ev = S->o->events;
	while (next_event_t(S) <= S->world.now) {
		const struct scale_event *e = &ev->ev[S->next_ev];
		struct sim_event_result *x = &S->r->events[S->next_ev++];
		unsigned d = event_dev(S, e), id = d;
		uint16_t node = S->dev[d].node;
		x->applied = true;
		x->applied_ns = (double)S->world.now;
		switch (e->kind) {
		case SCALE_ADD:
			/* Its memory node first: the engine wants it there. */
			if (node && node >= atomic_load(&S->res.nnodes) &&
			    residency_add_node(&S->res, &S->dev[d], S->dev[d].mem_bytes) != node)
				x->rc = -TDM_EINVAL;
			if (!x->rc)
				x->rc = engine_device_add(S->e, &S->dev[d], &id);
			if (!x->rc && id != d)
				x->rc = -TDM_EINVAL; /* ids are given in order of addition */
			if (!x->rc)
				S->open |= 1ull << d;
			break;
		case SCALE_DRAIN: x->rc = engine_device_drain(S->e, d); break;
		case SCALE_REMOVE: x->rc = engine_device_remove(S->e, d); break;
		case SCALE_RESUME: x->rc = engine_device_resume(S->e, d); break;
		case SCALE_BUDGET: x->rc = residency_set_budget(&S->res, node, e->bytes); break;
		case SCALE_KIND_COUNT: x->rc = -TDM_EINVAL; break;
		}
		if (e->kind == SCALE_DRAIN || e->kind == SCALE_REMOVE)
			x->busy = engine_device_busy(S->e, d);
		if (!x->rc &&
		    (e->kind == SCALE_ADD || e->kind == SCALE_DRAIN || e->kind == SCALE_REMOVE))
			S->watching++;
		/* The placement changed: every device looks again. */
		for (unsigned k = 0; k < S->m->ndevices; k++)
			S->idle[k] = false;
		S->quiet = 0;
	}
}

/* The applied events' outcomes: an added device's first task, a drained or
 * removed one empty. */
static void watch_events(struct sim *S)
{
	for (uint32_t i = 0; S->watching && i < S->next_ev; i++) {
		const struct scale_event *e = &S->o->events->ev[i];
		struct sim_event_result *x = &S->r->events[i];
		unsigned d = event_dev(S, e);
		if (x->rc)
			continue;
		if (e->kind == SCALE_ADD && x->first_task_ns < 0 && S->first_start[d]) {
			x->first_task_ns = (double)(S->first_start[d] - 1);
			S->watching--;
		} else if ((e->kind == SCALE_DRAIN || e->kind == SCALE_REMOVE) && x->empty_ns < 0 &&
		           engine_device_busy(S->e, d) == 0) {
			x->empty_ns = (double)S->world.now;
			S->watching--;
		}
	}
}

/* With events or absent devices: the machine in engine id order (S->m),
 * the events checked against it and their results. */
static int events_setup(struct sim *S, char *err, size_t errlen)
{
	const struct machine *m = S->m;
	const struct scale_events none = { 0 }, *ev = S->o->events ? S->o->events : &none;
	bool absent = false;
	int rc;

	S->npresent = m->ndevices;
	for (unsigned d = 0; d < m->ndevices; d++)
		absent = absent || m->dev[d].absent;
	if (!absent && !ev->n)
		return 0;
	if ((rc = sim_events_check(m, ev, NULL, err, errlen)))
		return rc;
	S->in_order = malloc(sizeof(*S->in_order));
	S->r->events = ev->n ? calloc(ev->n, sizeof(*S->r->events)) : NULL;
	if (!S->in_order || (ev->n && !S->r->events)) {
		err_printf(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	S->r->nevents = ev->n;
	for (uint32_t i = 0; i < ev->n; i++)
		S->r->events[i] = (struct sim_event_result){ .ev = ev->ev[i],
			                                     .empty_ns = -1,
			                                     .first_task_ns = -1 };
	S->npresent = sim_machine_in_engine_order(m, ev, S->in_order, S->perm);
	for (unsigned d = 0; d < m->ndevices; d++)
		if (S->w->dev_cost && S->perm[d] != d) {
			err_printf(err, errlen,
			           "%s: costs given per device, and %s is added before a device "
			           "listed ahead of it: describe the absent devices last, in the "
			           "order they are added",
			           S->w->name, m->dev[S->perm[d]].name);
			return -TDM_EINVAL;
		}
	S->m = S->in_order;
	return 0;
}

/* ---- waking workers ----
 *
 * The daemon's idle workers spin for spin_us, seeing new work at once, and
 * then sleep (engine.c, worker_idle_wait); a sleeping one starts on new
 * work only once a wake-up reaches it, the host's wake_ns later. With
 * tasks of microseconds that decides which device takes them: the
 * spinning workers do, before the sleeping ones wake. The model (on a
 * machine with wake_ns): an idle device whose last look found nothing
 * spins spin_ns from that look, then sleeps; the engine wakes it as it
 * wakes a thread (one sleeper per released task the releasing worker does
 * not take, round robin; a policy's kick to the worker it queued for),
 * and it looks wake_ns later. A graph arrives through the front end: a
 * spinning core worker takes it in; when none spins, the client's
 * doorbell wakes one sleeping core worker (they all watch it, but the
 * first up takes its edge and the others' epoll_wait finds nothing ready
 * and sleeps on; which one, in turn here), and the graph's arrival is
 * when it took the graph in. */

/* Idle devices whose spin ran out sleep: before each call into the engine,
 * so that what the call releases wakes them the engine's way. */
static void fall_asleep(struct sim *S)
{
	uint64_t now = S->world.now;
	for (uint64_t bits = S->open & ~(S->asleep | S->waking); bits; bits &= bits - 1) {
		unsigned d = (unsigned)__builtin_ctzll(bits);
		if (S->idle[d] && now >= S->awake_until[d] && !engine_sim_oldest(S->e, d)) {
			engine_sim_sleep(S->e, d, true);
			S->asleep |= 1ull << d;
		}
	}
}

static void wake(struct sim *S, unsigned d, uint64_t at)
{
	if (S->asleep >> d & 1) {
		engine_sim_sleep(S->e, d, false);
		S->asleep &= ~(1ull << d);
	}
	S->wake_at[d] = at;
	S->waking |= 1ull << d;
}

/* The sleepers the engine woke look wake_ns from now. */
static void notice_wakes(struct sim *S)
{
	for (uint64_t bits = S->asleep; bits; bits &= bits - 1) {
		unsigned d = (unsigned)__builtin_ctzll(bits);
		if (!engine_sim_asleep(S->e, d))
			wake(S, d, S->world.now + S->wake_ns);
	}
}

/* Asleep, or woken and not up yet. */
static bool dozing(const struct sim *S, unsigned d)
{
	return (S->asleep >> d & 1) || ((S->waking >> d & 1) && S->world.now < S->wake_at[d]);
}

/* Idle, awake and spinning: it sees new work at once. */
static bool spinning(const struct sim *S, unsigned d)
{
	return S->idle[d] && S->world.now < S->awake_until[d] && !engine_sim_oldest(S->e, d) &&
	       !dozing(S, d);
}

static uint64_t next_wake(const struct sim *S)
{
	uint64_t t = UINT64_MAX;
	for (uint64_t bits = S->waking; bits; bits &= bits - 1) {
		unsigned d = (unsigned)__builtin_ctzll(bits);
		if (S->wake_at[d] < t)
			t = S->wake_at[d];
	}
	return t;
}

/* Graphs arrive now (see above): the core worker that takes them in (-1:
 * none idle; a busy one does, between its tasks). */
static int doorbell(struct sim *S)
{
	uint64_t now = S->world.now;
	for (uint64_t bits = S->host & ~(S->asleep | S->waking); bits; bits &= bits - 1) {
		unsigned d = (unsigned)__builtin_ctzll(bits);
		if (spinning(S, d))
			return (int)d;
	}
	uint64_t sleepers = S->host & (S->asleep | S->waking);
	unsigned nd = S->m->ndevices;
	for (unsigned i = 0; sleepers && i < nd; i++) {
		unsigned d = (S->bell_next + i) % nd;
		if (sleepers >> d & 1) {
			wake(S, d, now);
			S->bell_next = d + 1;
			return (int)d;
		}
	}
	return -1;
}

/* Device d looks for work once (run_loop says when): it stages what its
 * pipeline takes, and its oldest task's end goes on the heap. empty: the
 * caller saw nothing in flight on d (engine_sim_oldest NULL). */
static inline void look(struct sim *S, unsigned d, uint32_t epoch, bool empty)
{
	S->waking &= ~(1ull << d);
	if (S->idle[d] && S->idle_at[d] == epoch)
		return;
	/* The epoch before the look: what arrives during it moves it. */
	uint32_t before = engine_sim_epoch(S->e);
	S->world.blocked_until = 0; /* waits outside a look block no worker */
	size_t took = engine_sim_may_stage(S->e, d) ? engine_sim_stage(S->e, d) : 0;
	if (S->ahead_on && took)
		ahead_note(S, d);
	S->idle[d] = took == 0;
	S->idle_at[d] = before;
	if (S->idle[d]) {
		if (before != S->quiet_epoch) { /* the others looked before it moved */
			S->quiet_epoch = before;
			S->quiet = 0;
		}
		S->quiet |= 1ull << d;
	} else {
		S->quiet &= ~(1ull << d);
	}
	/* Found nothing, and nothing in flight: it spins, from now. */
	if (S->wake_ns && !took && (empty || !engine_sim_oldest(S->e, d)))
		S->awake_until[d] = S->world.now + S->spin_ns;
	/* Nothing was in flight and nothing is (most looks of a wide
	 * machine's idle devices): no end to put on the heap, and a pipeline
	 * (at least one deep) with nothing in it is not full. */
	if (empty && !took)
		return;
	if (engine_sim_full(S->e, d))
		S->open &= ~(1ull << d);
	if (!S->scheduled[d] && !S->paced[d]) {
		struct backend_event *ev = engine_sim_oldest(S->e, d);
		if (ev) {
			heap_push(S, (struct ev){ sim_event_time(ev), d });
			S->scheduled[d] = true;
		}
	}
}

/* Device d's oldest task ends now: d looks first in the next pass. */
static inline void complete_on(struct sim *S, unsigned d)
{
	S->taker = (int)d;
	S->idle[d] = false;
	S->quiet &= ~(1ull << d);
	S->open |= 1ull << d;
	if (S->wake_ns)
		fall_asleep(S);
	uint64_t t0 = ticks();
	S->in_complete = true;
	engine_sim_complete(S->e, d);
	S->in_complete = false;
	S->engine_ticks += ticks() - t0;
}

__attribute__((noinline)) static int run_loop(struct sim *S, char *err, size_t errlen)
{
	uint32_t next = 0, ng = S->ngraphs;
	uint64_t t0;

	S->first_arrival = arrival_of(S, S->order[0]);
	S->world.now = S->first_arrival;
	S->pace_t = S->first_arrival;
	for (;;) {
		S->passes++;
		if (S->nahead)
			ahead_step(S);
		t0 = ticks();
		if (S->o->events) {
			apply_events(S);
			watch_events(S);
		}
		int intake = -1;
		bool completed = S->taker >= 0; /* the taker's task just ended */
		if (S->wake_ns) {
			fall_asleep(S);
			if (next < ng && arrival_of(S, S->order[next]) <= S->world.now)
				intake = doorbell(S);
			if (intake >= 0 && S->taker < 0)
				S->taker = intake; /* it looks first */
		}
		while (next < ng && arrival_of(S, S->order[next]) <= S->world.now)
			submit(S, S->order[next++], intake);
		/* As the daemon's workers look for work (engine.c): the worker
		 * whose task just completed first (the engine hands the tasks
		 * it released to the policy and wakes sleepers only for the
		 * ones that worker does not take), after the spinning ones
		 * with the wake model (below), then the others in device
		 * order. A device with tasks in flight looks only when one of
		 * them completes: its worker waits on the oldest and fills its
		 * pipeline after, it does not take what others release
		 * meanwhile. An idle one looks only once the epoch moved. */
		if (S->wake_ns)
			notice_wakes(S);
		uint32_t epoch = engine_sim_epoch(S->e);
		if (epoch != S->quiet_epoch) {
			S->quiet_epoch = epoch;
			S->quiet = 0;
		}
		int taker = S->taker;
		S->taker = -1;
		uint64_t bits = S->open;
		/* The worker whose task ended still completes it after releasing
		 * its dependents (the policy's accounting, the cost models
		 * learning the sample: finish_one), while a spinning worker sees
		 * the released tasks at once: the spinning ones look first. */
		for (uint64_t b = S->wake_ns && completed ? bits : 0; b; b &= b - 1) {
			unsigned d = (unsigned)__builtin_ctzll(b);
			if ((int)d != taker && spinning(S, d)) {
				look(S, d, epoch, true);
				bits &= ~(1ull << d);
			}
		}
		if (taker >= 0 && (bits >> taker & 1)) {
			/* Always so (its completion made it open and not idle):
			 * this look also puts its next task's end on the heap. */
			look(S, (unsigned)taker, epoch, false);
			bits &= ~(1ull << taker);
		}
		/* The quiet ones would return from look at once; a waking one
		 * still has its wake-up noted there. */
		for (bits &= ~(S->quiet & ~S->waking); bits; bits &= bits - 1) {
			unsigned d = (unsigned)__builtin_ctzll(bits);
			if (!engine_sim_oldest(S->e, d) && !(S->wake_ns && dozing(S, d)))
				look(S, d, epoch, true);
		}
		if (S->wake_ns)
			notice_wakes(S); /* a policy's kicks while they looked */
		S->engine_ticks += ticks() - t0;
		if (S->oom) {
			err_printf(err, errlen, "out of memory");
			return -TDM_ENOMEM;
		}
		int paced_done = -1;
		uint64_t tp = S->paced_any ? pace_next(S, &paced_done) : UINT64_MAX;
		uint64_t th = S->nheap ? S->heap[0].t : UINT64_MAX;
		uint64_t te = next_event_t(S);
		uint64_t tw = S->waking ? next_wake(S) : UINT64_MAX;
		if (tw < th && tw < tp && tw < te &&
		    (next >= ng || tw < arrival_of(S, S->order[next]))) {
			move_to(S, tw); /* a sleeping worker wakes */
			continue;
		}
		if (te < th && te < tp && S->graphs_done < ng &&
		    (next >= ng || te < arrival_of(S, S->order[next]))) {
			move_to(S, te); /* a scale event comes first */
			continue;
		}
		if (!S->nheap && tp == UINT64_MAX) {
			if (next < ng) {
				move_to(S, arrival_of(S, S->order[next]));
				continue;
			}
			if (S->graphs_done == ng)
				return 0;
			if (S->asleep) {
				/* Tasks held that no wake-up went for: the engine's
				 * sleepers time out to let its watchdog look. */
				for (uint64_t bits = S->asleep; bits; bits &= bits - 1)
					wake(S, (unsigned)__builtin_ctzll(bits),
					     S->world.now + S->wake_ns);
				continue;
			}
			if (engine_sim_stalled(S->e))
				continue;
			err_printf(err, errlen,
			           "simulation stuck: %u of %u graphs done and nothing to run",
			           S->graphs_done, ng);
			return -TDM_EINVAL;
		}
		if (next < ng && arrival_of(S, S->order[next]) < th &&
		    arrival_of(S, S->order[next]) < tp) {
			move_to(S, arrival_of(S, S->order[next]));
			continue;
		}
		if (tp < th || (tp == th && paced_done >= 0)) {
			/* A rate changes, or a paced kernel ends. */
			move_to(S, tp);
			if (paced_done >= 0) {
				pace_finish(S, (unsigned)paced_done);
				complete_on(S, (unsigned)paced_done);
			}
			continue;
		}
		struct ev x = heap_pop(S);
		move_to(S, x.t);
		S->scheduled[x.w] = false;
		complete_on(S, x.w);
	}
}

/* Lower bound, critical path and sequential time from the true costs. */
static void bounds(struct sim *S)
{
	const struct workload *w = S->w;
	unsigned nd = S->m->ndevices, nn = S->m->nnodes;
	uint32_t n = w->ntasks;
	struct sim_result *r = S->r;
	struct wl_dag dag;

	if ((uint64_t)n * nd > LB_MAX_COSTS)
		return;
	/* The workload's graph in CSR form; its costs and data are replaced
	 * by what they are on this machine. */
	double *dev_sum = calloc(nd, sizeof(double));
	bool *all = malloc(nd * sizeof(bool));
	if (!dev_sum || !all || wl_to_dag(w, nd, NULL, &dag)) {
		free(dev_sum);
		free(all);
		return;
	}
	double best_sum = 0;
	for (unsigned d = 0; d < nd; d++)
		all[d] = true;
	for (uint32_t v = 0; v < n; v++) {
		double best = INFINITY;
		for (unsigned d = 0; d < nd; d++) {
			double c = task_ns(S, v, d);
			dag.cost[(size_t)v * nd + d] = c;
			if (c < 0)
				all[d] = false;
			else {
				dev_sum[d] += c;
				best = fmin(best, c);
			}
		}
		best_sum += best;
	}
	r->seq_ns = best_sum;
	for (unsigned d = 0; d < nd; d++)
		if (all[d] && dev_sum[d] < r->seq_ns)
			r->seq_ns = dev_sum[d];
	for (uint32_t i = 0; i < w->nedges; i++)
		dag.edge_data[i] = edge_bytes(S, dag.edge_data[i]);
	uint16_t node[MACHINE_MAX_DEVICES];
	double lat[MACHINE_MAX_NODES * MACHINE_MAX_NODES],
	        inv[MACHINE_MAX_NODES * MACHINE_MAX_NODES];
	for (unsigned d = 0; d < nd; d++)
		node[d] = S->m->dev[d].node;
	for (unsigned a = 0; a < nn; a++)
		for (unsigned b = 0; b < nn; b++) {
			lat[a * nn + b] = S->world.link[a][b].latency_ns;
			inv[a * nn + b] = S->world.link[a][b].ns_per_byte;
		}
	struct plan_machine pm = {
		.ndev = nd, .node = node, .nnodes = nn, .lat = lat, .inv_bw = inv
	};
	double cp = 0, area = 0;
	if (plan_lower_bounds(&dag.g, &pm, &cp, &area) == 0) {
		r->cp_ns = cp;
		r->lower_bound_ns = plan_lower_bound(cp, area);
	}
	wl_dag_free(&dag);
	free(dev_sum);
	free(all);
}

static void teardown(struct sim *S)
{
	if (S->e) {
		for (uint32_t c = 0; c < S->nflows; c++)
			engine_flow_gone(S->e, &S->flows[c]);
		engine_destroy(S->e);
	}
	for (uint32_t g = 0; S->graphs && g < S->ngraphs; g++) {
		free((double *)S->graphs[g].edge_data);
		engine_graph_free_arrays(&S->graphs[g]);
	}
	if (S->res_ready) {
		for (uint32_t b = 0; S->data && b < S->w->nbufs; b++)
			residency_data_fini(&S->res, &S->data[b]);
		residency_fini(&S->res);
	}
	profiler_destroy(S->prof);
	profiler_destroy(S->truth);
	sim_world_fini(&S->world);
	free(S->graphs);
	free(S->flows);
	free(S->data);
	free(S->order);
	free(S->unlaunched);
	free(S->pred_off);
	free(S->pred_edge);
	free(S->preds);
	free(S->ran);
	free(S->heap);
	free(S->scheduled);
	free(S->idle);
	free(S->idle_at);
	for (unsigned d = 0; d < MACHINE_MAX_DEVICES; d++)
		free(S->jobs[d].a);
}

int sim_run(const struct machine *m, const struct workload *w, const struct sim_opts *o,
            struct sim_result *r, char *err, size_t errlen)
{
	struct sim *S = calloc(1, sizeof(*S));
	double t0 = wall_ns();
	int rc;

	memset(r, 0, sizeof(*r));
	memset(r->link_track, 0xff, sizeof(r->link_track));
	if (!S) {
		err_printf(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	S->m = m;
	S->w = w;
	S->o = o;
	S->r = r;
	S->unit_ns = o->unit_ns > 0 ? o->unit_ns : 1e6;
	S->unit_bytes = o->unit_bytes > 0 ? o->unit_bytes : 1e6;
	S->cost_scale = w->units == WL_UNITS_SECONDS ? 1e9
	                : w->units == WL_UNITS_NS    ? 1
	                                             : S->unit_ns;
	const struct policy_ops *policy = policy_by_name(o->policy ? o->policy : "");
	if (!policy) {
		err_printf(err, errlen, "unknown policy \"%s\" (tandemd --list-policies)",
		           o->policy ? o->policy : "");
		free(S);
		return -TDM_EINVAL;
	}
	snprintf(r->policy, sizeof(r->policy), "%s", policy->name);
	if (m->ndevices == 0 || m->ndevices > MACHINE_MAX_DEVICES || m->nnodes > RES_MAX_NODES) {
		err_printf(err, errlen, "%s: no devices, or too many", m->name);
		free(S);
		return -TDM_EINVAL;
	}
	rc = events_setup(S, err, errlen);
	if (!rc)
		rc = build_machine(S, err, errlen);
	if (!rc)
		rc = check_workload(S, err, errlen);
	if (rc)
		goto out;
	for (unsigned d = 0; S->in_order && d < m->ndevices; d++)
		r->devname[d] = m->dev[S->perm[d]].name; /* the caller's, which outlive S */
	m = S->m;
	rc = -TDM_ENOMEM;
	S->heap = malloc(m->ndevices * sizeof(*S->heap));
	S->scheduled = calloc(m->ndevices, sizeof(bool));
	S->idle = calloc(m->ndevices, sizeof(bool));
	S->idle_at = calloc(m->ndevices, sizeof(uint32_t));
	S->open = S->npresent == 64 ? ~0ull : (1ull << S->npresent) - 1;
	S->taker = -1;
	if (m->wake_ns > 0) {
		S->wake_ns = (uint64_t)llround(m->wake_ns);
		S->spin_ns = o->spin_us < 0    ? 0
		             : o->spin_us == 0 ? (uint64_t)ENGINE_SPIN_US_DEFAULT * 1000
		                               : (uint64_t)llround(o->spin_us * 1e3);
		for (unsigned d = 0; d < m->ndevices; d++)
			if (m->dev[d].kind == TDM_DEV_CPU)
				S->host |= 1ull << d;
	}
	if (!S->heap || !S->scheduled || !S->idle || !S->idle_at || build_preds(S))
		goto nomem;
	/* The workers slept before the first graph (and look when it comes). */
	for (unsigned d = 0; S->wake_ns && d < m->ndevices; d++) {
		S->idle[d] = true;
		S->idle_at[d] = UINT32_MAX;
	}
	if (o->record && !(r->spans = calloc(w->ntasks, sizeof(*r->spans))))
		goto nomem;
	r->nspans = o->record ? w->ntasks : 0;

	char why[256] = "";
	struct engine_params ep = {
		.clock = &S->clock,
		.policy = policy,
		.devices = S->dev,
		.ndevices = S->npresent,
		.max_devices = m->ndevices,
		.hooks = { .graph_done = graph_done, .ctx = S },
		.poll_fd = -1,
		.start_workers = false,
		.res = &S->res,
		.pipeline_depth = o->pipeline_depth,
		.prof = S->prof,
		.tuning = o->tuning,
		.watchdog_ms = o->watchdog_ms,
		.why = why,
		.whylen = sizeof(why),
	};
	rc = engine_create(&ep, &S->e);
	if (rc) {
		err_printf(err, errlen, "cannot create the engine: %s",
		           rc == -TDM_EINVAL && why[0] ? why : tdm_strerror(rc));
		goto out;
	}
	rc = build_graphs(S, err, errlen);
	if (rc == -TDM_ENOMEM)
		goto nomem;
	if (rc)
		goto out;
	qsort_r(S->order, S->ngraphs, sizeof(uint32_t), by_arrival, S);
	/* Tasks wait in queues long enough to leave a cache this large. */
	S->ahead_on = (uint64_t)w->ntasks * sizeof(struct engine_task) > AHEAD_MIN_BYTES;
	double l0 = wall_ns();
	uint64_t k0 = ticks();
	rc = run_loop(S, err, errlen);
	r->loop_ns = wall_ns() - l0;
	uint64_t loop_ticks = ticks() - k0;
	r->engine_ns = loop_ticks ? (double)S->engine_ticks * (r->loop_ns / (double)loop_ticks) : 0;
	if (rc)
		goto out;
	for (uint32_t v = 0; r->spans && v < w->ntasks; v++)
		if (w->tasks[v].has_kernel && w->tasks[v].skipped)
			record_skipped(S, v);
	struct engine_counters c;
	engine_counters(S->e, &c);
	r->fallback = c.fallback;
	r->tasks = c.tasks_done;
	r->graphs = c.graphs_done;
	r->makespan_ns = (double)(S->last_end - S->first_arrival);
	r->bytes_moved = S->world.bytes_moved;
	r->copies = S->world.copies;
	bounds(S);
	r->slr = r->cp_ns > 0 ? r->makespan_ns / r->cp_ns : 0;
	r->speedup = r->makespan_ns > 0 ? r->seq_ns / r->makespan_ns : 0;
	goto out;
nomem:
	err_printf(err, errlen, "out of memory");
	rc = -TDM_ENOMEM;
out:
	teardown(S);
	free(S->in_order);
	free(S);
	r->wall_ns = wall_ns() - t0;
	if (rc) {
		sim_result_free(r);
		sim_result_free_events(r);
	}
	return rc;
}

void sim_result_free_events(struct sim_result *r)
{
	free(r->events);
	r->events = NULL;
	r->nevents = 0;
}

void sim_result_free(struct sim_result *r)
{
	free(r->spans);
	free(r->copy_spans);
	r->spans = r->copy_spans = NULL;
	r->nspans = r->ncopies = r->copies_cap = 0;
}

void sim_schedule_view(const struct sim_result *r, const char *title, struct sched_view *v)
{
	*v = (struct sched_view){ .title = title,
		                  .ndevices = r->ndevices,
		                  .devices = r->devname,
		                  .nspans = r->nspans,
		                  .spans = r->spans,
		                  .nlinks = r->nlinks,
		                  .links = r->link_name_ptr,
		                  .ncopies = r->ncopies,
		                  .copies = r->copy_spans };
}
