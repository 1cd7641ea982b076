/* Weighted fair queue (fairq.h): per-flow heaps, start-time fair queueing
 * across flows. */
#include "placement/fairq.h"

#include <stdlib.h>

#include "tandem.h"

/* ---- one flow's heap ---- */

static bool before(const struct fairq_entry *a, const struct fairq_entry *b)
{
	if (a->prio_class != b->prio_class)
		return a->prio_class > b->prio_class;
	if (a->key != b->key)
		return a->key < b->key;
	return a->seq < b->seq;
}

static void sift_up(struct fairq_entry *h, uint32_t i)
{
	struct fairq_entry e = h[i];
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!before(&e, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = e;
}

/* Floyd's: the hole goes down the path of smaller children to the bottom,
 * then e comes back up to its place: one comparison per level on the way
 * down instead of two (e, the last leaf, mostly belongs low). Entries are
 * totally ordered (seq), so e ends where the top-down sift puts it. */
static void sift_down(struct fairq_entry *h, uint32_t n, uint32_t i)
{
	struct fairq_entry e = h[i];
	uint32_t top = i;
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && before(&h[c + 1], &h[c]))
			c++;
		h[i] = h[c];
		i = c;
	}
	while (i > top) {
		uint32_t p = (i - 1) / 2;
		if (!before(&e, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = e;
}

/* Removes entry i of f's heap. */
static struct fairq_entry heap_take(struct fairq_flow *f, uint32_t i)
{
	struct fairq_entry e = f->heap[i];
	if (--f->n > i) {
		f->heap[i] = f->heap[f->n];
		if (i > 0 && before(&f->heap[i], &f->heap[(i - 1) / 2]))
			sift_up(f->heap, i);
		else
			sift_down(f->heap, f->n, i);
	}
	return e;
}

static int grow(void **arr, uint32_t *cap, uint32_t need, size_t size)
{
	if (need <= *cap)
		return 0;
	uint32_t ncap = *cap ? *cap : 16;
	while (ncap < need)
		ncap *= 2;
	void *n = realloc(*arr, (size_t)ncap * size);
	if (!n)
		return -TDM_ENOMEM;
	*arr = n;
	*cap = ncap;
	return 0;
}

/* ---- the queue ---- */

void fairq_init(struct fairq *q)
{
	*q = (struct fairq){ 0 };
	pthread_mutex_init(&q->lock, NULL);
}

void fairq_init_shared(struct fairq *q, struct fairq_clock *clock)
{
	fairq_init(q);
	q->clock = clock;
}

void fairq_clock_init(struct fairq_clock *c)
{
	*c = (struct fairq_clock){ 0 };
	pthread_mutex_init(&c->lock, NULL);
}

uint32_t fairq_clock_backlogged(const struct fairq_clock *c)
{
	return atomic_load_explicit(&c->backlogged, memory_order_relaxed);
}

void fairq_clock_fini(struct fairq_clock *c)
{
	pthread_mutex_destroy(&c->lock);
}

void fairq_fini(struct fairq *q)
{
	pthread_mutex_destroy(&q->lock);
	free(q->active);
	q->active = NULL;
}

void fairq_flow_init(struct fairq_flow *f, const struct engine_flow *flow)
{
	*f = (struct fairq_flow){ .flow = flow, .slot = -1 };
}

void fairq_flow_init_shared(struct fairq_flow *f, const struct engine_flow *flow,
                            struct fairq_share *share)
{
	*f = (struct fairq_flow){ .flow = flow, .slot = -1, .share = share };
}

/* The virtual time f is compared by: its share's, or its own. Callers
 * hold q->lock, and q->clock->lock when q has a clock. */
static double *vtime_of(struct fairq_flow *f)
{
	return f->share ? &f->share->vtime : &f->vtime;
}

static void clock_lock(struct fairq *q)
{
	if (q->clock)
		pthread_mutex_lock(&q->clock->lock);
}

static void clock_unlock(struct fairq *q)
{
	if (q->clock)
		pthread_mutex_unlock(&q->clock->lock);
}

/* Caller holds q->lock. */
static void deactivate(struct fairq *q, struct fairq_flow *f)
{
	uint32_t s = (uint32_t)f->slot;
	q->active[s] = q->active[--q->nactive];
	q->active[s]->slot = (int32_t)s;
	f->slot = -1;
}

size_t fairq_flow_fini(struct fairq *q, struct fairq_flow *f)
{
	pthread_mutex_lock(&q->lock);
	size_t held = f->n;
	if (f->slot >= 0)
		deactivate(q, f);
	q->queued -= f->n;
	clock_lock(q);
	if (q->clock && f->share && f->n) {
		f->share->queued -= f->n;
		if (!f->share->queued)
			q->clock->backlogged--;
	}
	clock_unlock(q);
	pthread_mutex_unlock(&q->lock);
	free(f->heap);
	f->heap = NULL;
	f->n = f->cap = 0;
	return held;
}

/* The front end may change a flow's weight while it runs (tandemctl
 * client weight): read once, atomically. */
static double weight(const struct fairq_flow *f)
{
	uint32_t w = f->flow ? __atomic_load_n(&f->flow->weight, __ATOMIC_RELAXED) : 0;
	return w ? (double)w : 1.0;
}

int fairq_push(struct fairq *q, struct fairq_flow *f, const struct fairq_key *k, double cost,
               struct engine_task *t)
{
	int err = 0;
	pthread_mutex_lock(&q->lock);
	err = grow((void **)&f->heap, &f->cap, f->n + 1, sizeof(*f->heap));
	if (!err && f->slot < 0)
		err = grow((void **)&q->active, &q->cap, q->nactive + 1, sizeof(*q->active));
	if (err) {
		pthread_mutex_unlock(&q->lock);
		return err;
	}
	clock_lock(q);
	if (q->clock && f->share) {
		/* No banked credit: a flow with nothing queued anywhere
		 * restarts at the machine's time; one still waiting on another
		 * device keeps its place. */
		if (!f->share->queued) {
			if (f->share->vtime < q->clock->vnow)
				f->share->vtime = q->clock->vnow;
			q->clock->backlogged++;
		}
		f->share->queued++;
	} else if (f->slot < 0 && f->vtime < q->vnow) {
		/* No banked credit: an idle flow restarts at the queue's time. */
		f->vtime = q->vnow;
	}
	clock_unlock(q);
	if (f->slot < 0) {
		f->slot = (int32_t)q->nactive;
		q->active[q->nactive++] = f;
	}
	f->heap[f->n] = (struct fairq_entry){ .prio_class = k->prio_class,
		                              .cost = (float)(cost >= 1 ? cost : 1),
		                              .seq = q->seq++,
		                              .key = k->key,
		                              .task = t };
	sift_up(f->heap, f->n++);
	q->queued++;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* Whether flow a (offering entry ea) is served before flow b (eb). */
static bool flow_before(const struct fairq_entry *ea, double va, const struct fairq_entry *eb,
                        double vb)
{
	if (ea->prio_class != eb->prio_class)
		return ea->prio_class > eb->prio_class;
	if (va != vb)
		return va < vb;
	return ea->seq < eb->seq;
}

/* The entry of f the filter accepts: the head, or the first of the next
 * `scan` heap entries; -1 if none. */
static int32_t offer(const struct fairq_flow *f, fairq_filter ok, void *ctx, unsigned scan)
{
	if (!ok)
		return 0;
	for (uint32_t i = 0; i < f->n && i <= scan; i++)
		if (ok(ctx, f->heap[i].task))
			return (int32_t)i;
	return -1;
}

/* The flow pop serves next and its entry (*bi); NULL if none. Caller holds
 * the locks. */
static struct fairq_flow *choose(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan,
                                 int32_t *bi)
{
	struct fairq_flow *best = NULL;
	for (uint32_t a = 0; a < q->nactive; a++) {
		struct fairq_flow *f = q->active[a];
		int32_t i = offer(f, ok, ctx, scan);
		if (i < 0)
			continue;
		if (!best ||
		    flow_before(&f->heap[i], *vtime_of(f), &best->heap[*bi], *vtime_of(best))) {
			best = f;
			*bi = i;
		}
	}
	return best;
}

bool fairq_head(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan, struct fairq_head *out)
{
	int32_t bi = 0;
	pthread_mutex_lock(&q->lock);
	clock_lock(q);
	struct fairq_flow *f = choose(q, ok, ctx, scan, &bi);
	if (f)
		*out = (struct fairq_head){ f->heap[bi].prio_class, *vtime_of(f), f->heap[bi].seq };
	clock_unlock(q);
	pthread_mutex_unlock(&q->lock);
	return f != NULL;
}

bool fairq_head_before(const struct fairq_head *a, const struct fairq_head *b)
{
	if (a->prio_class != b->prio_class)
		return a->prio_class > b->prio_class;
	return a->vtime < b->vtime;
}

/* queued is written under the lock and read without it by pop and peek,
 * which answer an empty queue at once (as if they had run before a push
 * under way: workers poll their own queues far more often than those hold
 * anything). */
static bool looks_empty(struct fairq *q)
{
	return atomic_load_explicit(&q->queued, memory_order_relaxed) == 0;
}

/* fairq_pop past the empty test, out of line: workers ask their empty
 * queues more often than not, and then set up no frame. */
__attribute__((noinline)) static struct engine_task *pop_locked(struct fairq *q, fairq_filter ok,
                                                                void *ctx, unsigned scan)
{
	int32_t bi = 0;

	pthread_mutex_lock(&q->lock);
	clock_lock(q);
	/* One flow and no filter: its head (choose's answer, without the
	 * comparisons). */
	struct fairq_flow *best =
	        !ok && q->nactive == 1 ? q->active[0] : choose(q, ok, ctx, scan, &bi);
	if (!best) {
		clock_unlock(q);
		pthread_mutex_unlock(&q->lock);
		return NULL;
	}
	struct fairq_entry e = heap_take(best, (uint32_t)bi);
	double start = *vtime_of(best);
	double *vnow = q->clock ? &q->clock->vnow : &q->vnow;
	if (start > *vnow)
		*vnow = start;
	*vtime_of(best) = start + e.cost / weight(best);
	e.task->fair_charge = e.cost;
	if (q->clock && best->share && !--best->share->queued)
		q->clock->backlogged--;
	clock_unlock(q);
	if (best->n == 0)
		deactivate(q, best);
	q->queued--;
	pthread_mutex_unlock(&q->lock);
	return e.task;
}

struct engine_task *fairq_pop(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan)
{
	return looks_empty(q) ? NULL : pop_locked(q, ok, ctx, scan);
}

/* ---- peek: a dry run of pop ---- */

/* A flow's entries in heap order without removing them: the frontier of
 * the entries not yet given whose parents were (at most 2 * given + 1). */
struct peek_it {
	const struct fairq_flow *f;
	double vt;
	uint32_t nfront;
	uint32_t front[2 * FAIRQ_PEEK_MAX + 1];
};

/* Index in the frontier of its smallest entry; -1 if exhausted. Inlined,
 * as it_take: peek calls them per task given, a few per call. */
static inline __attribute__((always_inline)) int32_t it_min(const struct peek_it *it)
{
	if (!it->nfront)
		return -1;
	int32_t m = 0;
	for (uint32_t i = 1; i < it->nfront; i++)
		if (before(&it->f->heap[it->front[i]], &it->f->heap[it->front[m]]))
			m = (int32_t)i;
	return m;
}

/* Gives the frontier's entry m (its heap index) and puts its children in
 * its place. */
static inline __attribute__((always_inline)) uint32_t it_take(struct peek_it *it, int32_t m)
{
	uint32_t idx = it->front[m];
	it->front[m] = it->front[--it->nfront];
	uint32_t c = 2 * idx + 1;
	if (c < it->f->n)
		it->front[it->nfront++] = c;
	if (c + 1 < it->f->n)
		it->front[it->nfront++] = c + 1;
	return idx;
}

/* peek with one flow queued: its entries in its own order (no virtual
 * time to keep). */
static size_t peek_one(const struct fairq_flow *f, struct engine_task **out, size_t max)
{
	struct peek_it it;
	size_t got = 0;
	int32_t m;
	it.f = f;
	it.nfront = f->n ? 1 : 0;
	it.front[0] = 0;
	while (got < max && (m = it_min(&it)) >= 0)
		out[got++] = f->heap[it_take(&it, m)].task;
	return got;
}

size_t fairq_peek(struct fairq *q, struct engine_task **out, size_t max)
{
	struct peek_it its[FAIRQ_PEEK_MAX];
	uint32_t nits = 0;
	size_t got = 0;

	if (max > FAIRQ_PEEK_MAX)
		max = FAIRQ_PEEK_MAX;
	if (looks_empty(q))
		return 0;
	pthread_mutex_lock(&q->lock);
	/* One flow: its own order, no virtual time read, so no clock lock
	 * (the queue's lock keeps its heap still). */
	if (q->nactive == 1) {
		got = peek_one(q->active[0], out, max);
		pthread_mutex_unlock(&q->lock);
		return got;
	}
	clock_lock(q);
	while (got < max) {
		const struct fairq_flow *bf = NULL;
		const struct fairq_entry *be = NULL;
		double bv = 0;
		/* The chosen flow's iterator and its frontier's least entry, as
		 * found while choosing (a fresh iterator's is its head, 0). */
		struct peek_it *it = NULL;
		int32_t m = 0;
		for (uint32_t a = 0; a < q->nactive; a++) {
			struct fairq_flow *f = q->active[a];
			const struct fairq_entry *e = &f->heap[0];
			double v = *vtime_of(f);
			struct peek_it *fit = NULL;
			int32_t fm = 0;
			for (uint32_t i = 0; i < nits; i++) {
				if (its[i].f != f)
					continue;
				fit = &its[i];
				fm = it_min(fit);
				e = fm < 0 ? NULL : &f->heap[fit->front[fm]];
				v = fit->vt;
				break;
			}
			if (e && (!be || flow_before(e, v, be, bv))) {
				bf = f;
				be = e;
				bv = v;
				it = fit;
				m = fm;
			}
		}
		if (!bf)
			break;
		if (!it) { /* at most max flows are ever chosen */
			it = &its[nits++];
			it->f = bf;
			it->vt = *vtime_of((struct fairq_flow *)bf);
			it->nfront = 1;
			it->front[0] = 0;
			m = 0;
		}
		uint32_t idx = it_take(it, m);
		out[got++] = bf->heap[idx].task;
		it->vt += bf->heap[idx].cost / weight(bf);
	}
	clock_unlock(q);
	pthread_mutex_unlock(&q->lock);
	return got;
}

#define FAIRQ_SETTLE_MAX 4.0

void fairq_settle(struct fairq_clock *c, struct fairq_share *share, const struct engine_flow *flow,
                  const struct engine_task *t, double measured_ns)
{
	if (!c || !share || !(t->fair_charge > 0) || !(measured_ns >= 0))
		return;
	uint32_t wt = flow ? __atomic_load_n(&flow->weight, __ATOMIC_RELAXED) : 0;
	double w = wt ? (double)wt : 1.0;
	/* A run far beyond its charge was most likely preempted or stalled by
	 * the machine, not by the flow's work: it is settled at most at
	 * FAIRQ_SETTLE_MAX times the charge, so one such run does not swing
	 * the shares. */
	if (measured_ns > FAIRQ_SETTLE_MAX * t->fair_charge)
		measured_ns = FAIRQ_SETTLE_MAX * t->fair_charge;
	pthread_mutex_lock(&c->lock);
	share->vtime += (measured_ns - t->fair_charge) / w;
	pthread_mutex_unlock(&c->lock);
}

size_t fairq_len_hint(const struct fairq *q)
{
	return atomic_load_explicit(&q->queued, memory_order_relaxed);
}

size_t fairq_len(struct fairq *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = q->queued;
	pthread_mutex_unlock(&q->lock);
	return n;
}
