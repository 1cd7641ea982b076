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

static void sift_down(struct fairq_entry *h, uint32_t n, uint32_t i)
{
	struct fairq_entry e = h[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && before(&h[c + 1], &h[c]))
			c++;
		if (!before(&h[c], &e))
			break;
		h[i] = h[c];
		i = c;
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

/* Under the lock: the only writer, so a load and a store. */
static void queued_add(struct fairq *q, ptrdiff_t n)
{
	atomic_store_explicit(&q->queued,
	                      atomic_load_explicit(&q->queued, memory_order_relaxed) + (size_t)n,
	                      memory_order_relaxed);
}

static bool looks_empty(struct fairq *q)
{
	return atomic_load_explicit(&q->queued, memory_order_relaxed) == 0;
}

void fairq_init(struct fairq *q)
{
	*q = (struct fairq){ 0 };
	pthread_mutex_init(&q->lock, NULL);
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
	queued_add(q, -(ptrdiff_t)f->n);
	pthread_mutex_unlock(&q->lock);
	free(f->heap);
	f->heap = NULL;
	f->n = f->cap = 0;
	return held;
}

static double weight(const struct fairq_flow *f)
{
	return f->flow && f->flow->weight ? (double)f->flow->weight : 1.0;
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
	if (f->slot < 0) {
		/* No banked credit: an idle flow restarts at the queue's time. */
		if (f->vtime < q->vnow)
			f->vtime = q->vnow;
		f->slot = (int32_t)q->nactive;
		q->active[q->nactive++] = f;
	}
	f->heap[f->n] = (struct fairq_entry){ .prio_class = k->prio_class,
		                              .cost = (float)(cost >= 1 ? cost : 1),
		                              .seq = q->seq++,
		                              .key = k->key,
		                              .task = t };
	sift_up(f->heap, f->n++);
	queued_add(q, 1);
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

struct engine_task *fairq_pop(struct fairq *q, fairq_filter ok, void *ctx, unsigned scan)
{
	struct fairq_flow *best = NULL;
	int32_t bi = 0;

	if (looks_empty(q))
		return NULL;
	pthread_mutex_lock(&q->lock);
	for (uint32_t a = 0; a < q->nactive; a++) {
		struct fairq_flow *f = q->active[a];
		int32_t i = offer(f, ok, ctx, scan);
		if (i < 0)
			continue;
		if (!best || flow_before(&f->heap[i], f->vtime, &best->heap[bi], best->vtime)) {
			best = f;
			bi = i;
		}
	}
	if (!best) {
		pthread_mutex_unlock(&q->lock);
		return NULL;
	}
	struct fairq_entry e = heap_take(best, (uint32_t)bi);
	double start = best->vtime;
	if (start > q->vnow)
		q->vnow = start;
	best->vtime = start + e.cost / weight(best);
	if (best->n == 0)
		deactivate(q, best);
	queued_add(q, -1);
	pthread_mutex_unlock(&q->lock);
	return e.task;
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

/* Index in the frontier of its smallest entry; -1 if exhausted. */
static int32_t it_min(const struct peek_it *it)
{
	int32_t m = -1;
	for (uint32_t i = 0; i < it->nfront; i++)
		if (m < 0 || before(&it->f->heap[it->front[i]], &it->f->heap[it->front[m]]))
			m = (int32_t)i;
	return m;
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
	while (got < max) {
		const struct fairq_flow *bf = NULL;
		const struct fairq_entry *be = NULL;
		double bv = 0;
		/* The chosen flow's iterator and its frontier's least entry, as
		 * found while choosing (a fresh iterator's is its head, 0). */
		struct peek_it *it = NULL;
		int32_t m = 0;
		for (uint32_t a = 0; a < q->nactive; a++) {
			const struct fairq_flow *f = q->active[a];
			const struct fairq_entry *e = &f->heap[0];
			double v = f->vtime;
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
			*it = (struct peek_it){ .f = bf, .vt = bf->vtime, .nfront = 1 };
			m = 0;
		}
		uint32_t idx = it->front[m];
		out[got++] = bf->heap[idx].task;
		it->vt += bf->heap[idx].cost / weight(bf);
		it->front[m] = it->front[--it->nfront];
		for (uint32_t c = 2 * idx + 1; c <= 2 * idx + 2 && c < bf->n; c++)
			it->front[it->nfront++] = c;
	}
	pthread_mutex_unlock(&q->lock);
	return got;
}

size_t fairq_len(struct fairq *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = atomic_load_explicit(&q->queued, memory_order_relaxed);
	pthread_mutex_unlock(&q->lock);
	return n;
}
