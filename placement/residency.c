/* Data residency: validity by range, transfers, device memory caps, eviction.
 *
 * Events: a replica's `ready` event is released only by the worker of that
 * replica's node (in acquire, release or eviction, which that worker runs)
 * or at teardown, so an event handed out by residency_acquire stays alive
 * until the same worker has enqueued the task that waits for it.
 *
 * Prefetch (residency_prefetch) runs on the node's worker too, between
 * tasks, and never blocks: it copies from the host copy only, takes room
 * only from replicas that can go at once (unpinned, unheld, not an owner,
 * no copy in flight) and skips what it cannot place. */
#include "placement/residency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/grow.h"
#include "common/log.h"
#include "tandem.h"

void residency_init(struct residency *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->nnodes = 1;
	snprintf(r->nodes[0].name, sizeof(r->nodes[0].name), "host");
}

static uint64_t node_cap(const struct backend_device *dev, uint64_t cap)
{
	return cap && (cap < dev->mem_bytes || !dev->mem_bytes) ? cap : dev->mem_bytes;
}

/* Gives node i, evacuated for good, to dev: it holds nothing any more (no
 * replica memory, no valid byte). Caller holds lock. */
static bool take_gone(struct residency *r, size_t i, const struct backend_device *dev, uint64_t cap)
{
	struct res_node *n = &r->nodes[i];
	if (!n->gone || n->ops != dev->ops)
		return false;
	*n = (struct res_node){ .dev = dev, .ops = dev->ops, .cap = node_cap(dev, cap) };
	snprintf(n->name, sizeof(n->name), "%s", dev->name);
	return true;
}

int residency_take_node(struct residency *r, const struct backend_device *dev, uint64_t cap,
                        unsigned node)
{
	pthread_mutex_lock(&r->lock);
	bool ok = node > 0 && node < atomic_load(&r->nnodes) && take_gone(r, node, dev, cap);
	pthread_mutex_unlock(&r->lock);
	return ok ? (int)node : -TDM_EBUSY;
}

int residency_add_node(struct residency *r, const struct backend_device *dev, uint64_t cap)
{
	pthread_mutex_lock(&r->lock);
	/* A new device may take a gone node's number (not in the simulator:
	 * fresh_nodes). */
	for (size_t i = 1; !r->fresh_nodes && i < atomic_load(&r->nnodes); i++) {
		if (take_gone(r, i, dev, cap)) {
			pthread_mutex_unlock(&r->lock);
			return (int)i;
		}
	}
	size_t at = atomic_load(&r->nnodes);
	if (at >= RES_MAX_NODES) {
		pthread_mutex_unlock(&r->lock);
		return -TDM_ENOMEM;
	}
	struct res_node *n = &r->nodes[at];
	n->dev = dev;
	n->ops = dev->ops;
	n->cap = node_cap(dev, cap);
	snprintf(n->name, sizeof(n->name), "%s", dev->name);
	/* Whole before it is counted. */
	atomic_store_explicit(&r->nnodes, at + 1, memory_order_release);
	pthread_mutex_unlock(&r->lock);
	return (int)at;
}

void residency_close(struct residency *r)
{
	pthread_mutex_lock(&r->lock);
	atomic_store(&r->nnodes, 1);
	pthread_mutex_unlock(&r->lock);
}

void residency_fini(struct residency *r)
{
	pthread_mutex_destroy(&r->lock);
}

static uint32_t bit(unsigned node)
{
	return 1u << node;
}

/* ---- the validity map ------------------------------------------------------------ */

static struct res_seg *segs_of(struct res_data *d)
{
	return d->segs ? d->segs : d->seg_inline;
}

static uint64_t seg_start(const struct res_seg *s, uint32_t i)
{
	return i ? s[i - 1].end : 0;
}

/* The first segment ending after off (nsegs when off >= bytes). */
static uint32_t seg_find(struct res_data *d, uint64_t off)
{
	const struct res_seg *s = segs_of(d);
	uint32_t lo = 0, hi = d->nsegs;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (s[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Room for `more` segments beyond nsegs; false when out of memory. */
static bool seg_room(struct res_data *d, uint32_t more)
{
	if (d->nsegs + more <= d->segs_cap)
		return true;
	uint32_t ncap = d->segs_cap * 2 > d->nsegs + more ? d->segs_cap * 2 : d->nsegs + more;
	struct res_seg *n =
	        d->segs ? realloc(d->segs, ncap * sizeof(*n)) : malloc(ncap * sizeof(*n));
	if (!n)
		return false;
	if (!d->segs)
		memcpy(n, d->seg_inline, d->nsegs * sizeof(*n));
	d->segs = n;
	d->segs_cap = ncap;
	return true;
}

/* Adds len bytes of a segment valid on `mask` to (sign > 0) or takes them
 * from (sign < 0) its nodes' counts. */
static void seg_count(struct res_data *d, uint32_t mask, uint64_t len, int sign)
{
	bool alone = (mask & (mask - 1)) == 0;
	for (uint32_t m = mask; m; m &= m - 1) {
		struct replica *p = &d->rep[__builtin_ctz(m)];
		if (sign > 0) {
			p->valid += len;
			p->sole += alone ? len : 0;
		} else {
			p->valid -= len;
			p->sole -= alone ? len : 0;
		}
	}
}

/* Publishes the lock-free masks of the nodes in `nodes` from their counts. */
static void seg_publish(struct res_data *d, uint32_t nodes)
{
	uint32_t remote = atomic_load_explicit(&d->remote, memory_order_relaxed);
	uint32_t full = atomic_load_explicit(&d->full, memory_order_relaxed);
	for (uint32_t m = nodes; m; m &= m - 1) {
		unsigned n = (unsigned)__builtin_ctz(m);
		const struct replica *p = &d->rep[n];
		if (n && p->valid)
			remote |= bit(n);
		else
			remote &= ~bit(n);
		if (p->valid == d->bytes)
			full |= bit(n);
		else
			full &= ~bit(n);
	}
	atomic_store_explicit(&d->full, full, memory_order_relaxed);
	atomic_store_explicit(&d->remote, remote, memory_order_release);
}

/* 1 when no segment ends at x (inside the buffer): splitting there adds one. */
static uint32_t splits_at(struct res_data *d, uint64_t x)
{
	return x > 0 && x < d->bytes && seg_start(segs_of(d), seg_find(d, x)) != x;
}

/* Splits the segment holding x so that a segment ends at x (room made). */
static void seg_split(struct res_data *d, uint64_t x)
{
	if (x == 0 || x >= d->bytes)
		return;
	uint32_t i = seg_find(d, x);
	struct res_seg *s = segs_of(d);
	if (seg_start(s, i) == x)
		return;
	memmove(&s[i + 1], &s[i], (d->nsegs - i) * sizeof(*s));
	s[i].end = x;
	d->nsegs++;
}

/* Merges equal neighbours among segments lo..hi (indexes, clamped). */
static void seg_merge(struct res_data *d, uint32_t lo, uint32_t hi)
{
	struct res_seg *s = segs_of(d);
	if (lo > 0)
		lo--;
	if (hi >= d->nsegs)
		hi = d->nsegs - 1;
	uint32_t w = lo;
	for (uint32_t i = lo + 1; i <= hi; i++) {
		if (s[i].valid == s[w].valid)
			s[w].end = s[i].end;
		else
			s[++w] = s[i];
	}
	uint32_t gone = hi - w;
	if (gone) {
		memmove(&s[w + 1], &s[hi + 1], (d->nsegs - hi - 1) * sizeof(*s));
		d->nsegs -= gone;
	}
}

enum seg_op {
	SEG_ADD, /* node received a copy of the range */
	SEG_WRITE, /* node wrote the range: it alone holds it */
	SEG_DROP, /* node's bytes are garbage where another node holds them */
};

/* Applies op for `node` to [a, b). false when the map could not grow (out
 * of memory): nothing changed. SEG_DROP never grows: it widens to whole
 * segments (conservative) and keeps the node where it is the only holder. */
static bool seg_apply(struct res_data *d, uint64_t a, uint64_t b, enum seg_op op, unsigned node)
{
	if (b > d->bytes)
		b = d->bytes;
	if (a >= b)
		return true;
	if (op != SEG_DROP) {
		uint32_t more = splits_at(d, a) + splits_at(d, b);
		if (more && !seg_room(d, more))
			return false;
		seg_split(d, a);
		seg_split(d, b);
	}
	struct res_seg *s = segs_of(d);
	uint32_t first = seg_find(d, a), i = first, touched = bit(node);
	for (; i < d->nsegs && seg_start(s, i) < b; i++) {
		uint32_t old = s[i].valid, nv = old;
		if (op == SEG_ADD)
			nv = old | bit(node);
		else if (op == SEG_WRITE)
			nv = bit(node);
		else if (old != bit(node))
			nv = old & ~bit(node);
		if (nv == old)
			continue;
		uint64_t len = s[i].end - seg_start(s, i);
		seg_count(d, old, len, -1);
		seg_count(d, nv, len, +1);
		touched |= old | nv;
		s[i].valid = nv;
	}
	seg_merge(d, first, i);
	seg_publish(d, touched);
	return true;
}

/* Resets the map to one segment valid on `node` (plus the counts). */
static void seg_reset(struct res_data *d, unsigned node)
{
	for (unsigned n = 0; n < RES_MAX_NODES; n++)
		d->rep[n].valid = d->rep[n].sole = 0;
	d->nsegs = 1;
	segs_of(d)[0] = (struct res_seg){ .end = d->bytes, .valid = bit(node) };
	d->rep[node].valid = d->rep[node].sole = d->bytes;
	atomic_store_explicit(&d->full, bit(node), memory_order_relaxed);
	atomic_store_explicit(&d->remote, node ? bit(node) : 0, memory_order_release);
}

/* The first piece of [a, b) not valid on node, from *at on: its range in
 * [*s, *e) and the nodes holding it. false when there is none. */
static bool next_missing(struct res_data *d, unsigned node, uint64_t a, uint64_t b, uint64_t *s,
                         uint64_t *e, uint32_t *holders)
{
	const struct res_seg *sg = segs_of(d);
	for (uint32_t i = seg_find(d, a); i < d->nsegs; i++) {
		uint64_t st = seg_start(sg, i);
		if (st >= b)
			break;
		if (sg[i].valid & bit(node))
			continue;
		*s = st > a ? st : a;
		*e = sg[i].end < b ? sg[i].end : b;
		*holders = sg[i].valid;
		return true;
	}
	return false;
}

static uint64_t missing_locked(struct res_data *d, unsigned node, uint64_t a, uint64_t b)
{
	uint64_t sum = 0, s, e;
	uint32_t holders;
	while (a < b && next_missing(d, node, a, b, &s, &e, &holders)) {
		sum += e - s;
		a = e;
	}
	return sum;
}

uint64_t residency_missing(struct res_data *d, unsigned node, uint64_t off, uint64_t len)
{
	if (node >= 32)
		return len;
	uint32_t full = atomic_load_explicit(&d->full, memory_order_relaxed);
	uint32_t remote = atomic_load_explicit(&d->remote, memory_order_acquire);
	if ((full & bit(node)) || (node == 0 && remote == 0))
		return 0;
	if (node != 0 && !(remote & bit(node)))
		return len; /* nothing valid there */
	struct residency *r = d->res;
	if (!r || pthread_mutex_trylock(&r->lock) != 0)
		return len;
	uint64_t miss = missing_locked(d, node, off, off + len);
	pthread_mutex_unlock(&r->lock);
	return miss;
}

/* ---- replicas ----------------------------------------------------------------------- */

static void lru_unlink(struct res_node *n, struct replica *p)
{
	if (p->lru_prev)
		p->lru_prev->lru_next = p->lru_next;
	else
		n->lru_head = p->lru_next;
	if (p->lru_next)
		p->lru_next->lru_prev = p->lru_prev;
	else
		n->lru_tail = p->lru_prev;
	p->lru_prev = p->lru_next = NULL;
}

static void lru_push_head(struct res_node *n, struct replica *p)
{
	p->lru_prev = NULL;
	p->lru_next = n->lru_head;
	if (n->lru_head)
		n->lru_head->lru_prev = p;
	else
		n->lru_tail = p;
	n->lru_head = p;
}

/* Waits for a replica's pending copy and drops the event (node's worker). */
static int settle(struct replica *p)
{
	int err = 0;
	if (!p->ready)
		return 0;
	err = p->ready_dev->ops->event_wait(p->ready_dev, p->ready);
	p->ready_dev->ops->event_release(p->ready_dev, p->ready);
	p->ready = NULL;
	return err;
}

/* Drops the event if the copy is done; leaves it otherwise. */
static void settle_if_done(struct replica *p)
{
	if (p->ready && p->ready_dev->ops->event_query(p->ready_dev, p->ready) != 0) {
		p->ready_dev->ops->event_release(p->ready_dev, p->ready);
		p->ready = NULL;
	}
}

static void *host_at(const struct res_data *d, uint64_t off)
{
	return d->host ? (char *)d->host + off : NULL; /* the simulator has no host memory */
}

/* Copies [off, off + bytes) of node's replica to the host and waits. A
 * copy that waited for nothing else is timed for the transfer model
 * (r->copy_observed). */
static int copy_sync_d2h(struct residency *r, unsigned node, struct res_data *d,
                         struct replica *src, uint64_t off, uint64_t bytes)
{
	const struct backend_device *dev = r->nodes[node].dev;
	struct backend_event *ev = NULL;
	if (off + bytes > src->mem_bytes) {
		/* No valid range lies past a replica's memory (replica_fit). */
		log_error("%s: buffer %u: read back [%llu, %llu) past the replica's %llu bytes",
		          r->nodes[node].name, d->id, (unsigned long long)off,
		          (unsigned long long)(off + bytes), (unsigned long long)src->mem_bytes);
		return -TDM_EINVAL;
	}
	bool timed = r->copy_observed && !src->ready;
	uint64_t t0 = timed ? clock_monotonic_ns() : 0;
	int err = dev->ops->copy_d2h(dev, host_at(d, off), src->mem, off, bytes, src->ready, &ev);
	if (err)
		return err;
	err = dev->ops->event_wait(dev, ev);
	dev->ops->event_release(dev, ev);
	if (!err && timed)
		r->copy_observed(r->copy_ctx, node, 0, bytes, clock_monotonic_ns() - t0);
	if (!err)
		r->nodes[node].bytes_out += bytes;
	return err;
}

/* Makes the host copy of [a, b) valid: the pieces it lacks are read back
 * from a device holding them. Caller holds the lock. */
static int fetch_to_host(struct residency *r, struct res_data *d, uint64_t a, uint64_t b)
{
	uint64_t s, e;
	uint32_t holders;
	if (d->rep[0].valid == d->bytes)
		return 0;
	while (a < b && next_missing(d, 0, a, b, &s, &e, &holders)) {
		int err = -TDM_EDEVICE;
		for (uint32_t m = holders; m && err; m &= m - 1) {
			unsigned n = (unsigned)__builtin_ctz(m);
			if (n >= r->nnodes)
				continue;
			err = copy_sync_d2h(r, n, d, &d->rep[n], s, e - s);
			if (err)
				log_warn("%s: copy to host failed: %s", r->nodes[n].name,
				         tdm_strerror(err));
		}
		if (err) {
			log_error("buffer %u: no valid copy could be read back", d->id);
			return -TDM_EDEVICE;
		}
		/* Out of memory to record it: the bytes are there all the
		 * same, the next fetch copies them again. */
		seg_apply(d, s, e, SEG_ADD, 0);
		a = e;
	}
	return 0;
}

/* Frees one replica's device memory. Caller holds the lock, on the node's
 * worker (or at teardown). Whatever it alone held is lost: callers write
 * it back first where it matters. */
static void drop_replica(struct residency *r, unsigned node, struct res_data *d)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	settle(p);
	lru_unlink(n, p);
	n->dev->ops->mem_free(n->dev, p->mem);
	n->used -= p->mem_bytes;
	p->mem = NULL;
	p->mem_bytes = 0;
	p->reserved = false;
	if (p->valid) {
		if (p->sole)
			seg_reset(d, 0); /* teardown, or nothing better to keep */
		else
			seg_apply(d, 0, d->bytes, SEG_DROP, node);
	}
}

/* Whether a prefetch may take p's memory: nothing needs it soon, dropping
 * it writes nothing back and waits for nothing. */
static bool prefetch_may_evict(struct replica *p)
{
	if (p->pins || p->holds || p->sole)
		return false;
	settle_if_done(p);
	return !p->ready;
}

/* Whether eviction pass `pass` may take p. A task's allocation (4 passes):
 * stale unheld, any unheld, stale held, any held; a prefetch's (2 passes):
 * stale, then shared, of what prefetch_may_evict allows. */
static bool may_evict(struct replica *p, int pass, bool prefetch)
{
	if (p->pins)
		return false;
	if (pass % 2 == 0 && p->valid)
		return false;
	if (prefetch)
		return prefetch_may_evict(p);
	return !p->holds || pass >= 2;
}

/* Writes back to the host the ranges only node's replica of d holds. */
static int write_back(struct residency *r, unsigned node, struct res_data *d)
{
	const struct res_seg *s = segs_of(d);
	int err = settle(&d->rep[node]);
	for (uint32_t i = 0; i < d->nsegs && !err; i++) {
		if (s[i].valid != bit(node))
			continue;
		uint64_t st = seg_start(s, i), end = s[i].end;
		err = copy_sync_d2h(r, node, d, &d->rep[node], st, end - st);
		if (err)
			break;
		if (!seg_apply(d, st, end, SEG_ADD, 0))
			err = -TDM_ENOMEM;
		s = segs_of(d); /* the map may have moved */
		i = seg_find(d, st);
	}
	return err;
}

void residency_set_home(struct res_data *d, int node)
{
	struct residency *r = d->res;
	int old = atomic_exchange_explicit(&d->home, node, memory_order_relaxed);
	if (old == node)
		return;
	if (old >= 0 && (size_t)old < r->nnodes)
		atomic_fetch_sub_explicit(&r->nodes[old].home_bytes, d->bytes,
		                          memory_order_relaxed);
	if (node >= 0 && (size_t)node < r->nnodes)
		atomic_fetch_add_explicit(&r->nodes[node].home_bytes, d->bytes,
		                          memory_order_relaxed);
}

uint64_t residency_home_bytes(struct residency *r, unsigned node)
{
	return node < r->nnodes
	               ? atomic_load_explicit(&r->nodes[node].home_bytes, memory_order_relaxed)
	               : 0;
}

int residency_home(const struct res_data *d)
{
	return atomic_load_explicit(&d->home, memory_order_relaxed);
}

/* Evicts the least recently used replica of the node that `prefetch`'s
 * rules allow (may_evict), stale ones first, replicas of data homed on
 * this node only when no other will do; writes what it alone holds back
 * to the host before dropping it (never for a prefetch). */
static bool evict_one(struct residency *r, unsigned node, bool prefetch)
{
	struct res_node *n = &r->nodes[node];
	/* Every rule twice: first sparing the data homed here, then not. */
	const int rules = prefetch ? 2 : 4;
	for (int pass = 0; pass < 2 * rules; pass++) {
		for (struct replica *p = n->lru_tail; p; p = p->lru_prev) {
			if (!may_evict(p, pass % rules, prefetch))
				continue;
			if (pass < rules && residency_home(p->data) == (int)node)
				continue;
			struct res_data *d = p->data;
			if (p->sole) {
				int err = write_back(r, node, d);
				if (err) {
					log_warn("%s: cannot write buffer %u back, keeping it: %s",
					         n->name, d->id, tdm_strerror(err));
					continue;
				}
				n->writebacks++;
			}
			drop_replica(r, node, d);
			n->evictions++;
			return true;
		}
	}
	return false;
}

/* Bytes a prefetch could free on the node by evicting. */
static uint64_t prefetch_reclaimable(struct residency *r, unsigned node)
{
	uint64_t bytes = 0;
	for (struct replica *p = r->nodes[node].lru_tail; p; p = p->lru_prev)
		if (prefetch_may_evict(p))
			bytes += p->mem_bytes;
	return bytes;
}

/* Device memory for d's replica on `node`, evicting by `prefetch`'s rules. */
static int node_alloc(struct residency *r, unsigned node, struct res_data *d, bool prefetch)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];

	if (d->bytes > n->cap)
		return -TDM_ENOMEM;
	/* A prefetch that cannot fit evicts nothing in vain. */
	if (prefetch && n->used + d->bytes > n->cap &&
	    n->used + d->bytes - n->cap > prefetch_reclaimable(r, node))
		return -TDM_ENOMEM;
	while (n->used + d->bytes > n->cap)
		if (!evict_one(r, node, prefetch))
			return -TDM_ENOMEM;
	bool reserve = d->capacity && n->dev->ops->mem_reserve && n->dev->ops->mem_grow;
	uint64_t alloc = d->bytes;
	for (;;) {
		int err;
		if (reserve) {
			err = n->dev->ops->mem_reserve(n->dev, d->capacity, &p->mem);
			if (err == -TDM_EINVAL) {
				reserve = false; /* this device cannot: whole allocations */
				continue;
			}
			if (!err && (err = n->dev->ops->mem_grow(n->dev, p->mem, d->bytes)) != 0)
				n->dev->ops->mem_free(n->dev, p->mem);
		} else {
			/* A growable buffer's whole allocation keeps headroom for
			 * the next tokens (common/grow.h: at most ~3% unused), so
			 * that it is reallocated every few percent of growth. */
			alloc = d->bytes;
			if (d->capacity) {
				uint64_t extra =
				        grow_step(d->bytes, d->bytes + 1, 1, 0, d->capacity);
				if (n->used + alloc + extra <= n->cap)
					alloc += extra;
			}
			err = n->dev->ops->mem_alloc(n->dev, alloc, &p->mem);
		}
		if (!err)
			break;
		/* The device itself is full (other users): make room, retry. */
		if (err != -TDM_ENOMEM || !evict_one(r, node, prefetch)) {
			p->mem = NULL;
			return err;
		}
	}
	n->used += alloc;
	p->mem_bytes = alloc;
	p->reserved = reserve;
	p->data = d;
	lru_push_head(n, p);
	return 0;
}

/* Makes node's replica of a growable buffer as large as the buffer before
 * anything is copied into it or a task uses it. In place where it was
 * reserved: its memory and what it holds stay. Otherwise, when no task
 * uses it, the ranges it alone holds are written back to the host and it
 * is dropped (SEG_DROP: its bytes no longer count anywhere), so that the
 * next allocation is of the new size and the next reader copies what it
 * needs in again; there is no device-to-device copy to move the rest.
 * -TDM_ENOMEM: no room, or the replica is in use (or this is a prefetch,
 * which writes nothing back); the task tries again later. */
static int replica_fit(struct residency *r, unsigned node, struct res_data *d, bool prefetch)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	if (!p->mem || p->mem_bytes >= d->bytes)
		return 0;
	uint64_t more = d->bytes - p->mem_bytes;
	if (p->reserved) {
		if (n->used + more > n->cap && prefetch)
			return -TDM_ENOMEM;
		p->pins++; /* not this one */
		bool room = true;
		while (room && n->used + more > n->cap)
			room = evict_one(r, node, false);
		p->pins--;
		if (!room)
			return -TDM_ENOMEM;
		int err = n->dev->ops->mem_grow(n->dev, p->mem, d->bytes);
		if (err)
			return err;
		n->used += more;
		p->mem_bytes = d->bytes;
		return 0;
	}
	/* A hold (a prefetched task) may lose the memory: it keeps the next. */
	if (p->pins || prefetch)
		return -TDM_ENOMEM;
	if (p->sole) {
		int err = write_back(r, node, d);
		if (err)
			return err;
		n->writebacks++;
	}
	drop_replica(r, node, d);
	return 0;
}

static void add_wait(struct backend_event **waits, size_t *nwaits, struct backend_event *ev)
{
	for (size_t i = 0; i < *nwaits; i++)
		if (waits[i] == ev)
			return;
	waits[(*nwaits)++] = ev;
}

/* Issues a copy of [a, b) from the host into node's replica of d, after
 * the copy before it into that replica; the new event replaces the old one
 * in the replica and, when given, in waits[]. */
static int copy_in(struct residency *r, unsigned node, struct res_data *d, uint64_t a, uint64_t b,
                   struct backend_event **waits, size_t nwaits)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	struct backend_event *ev = NULL;
	if (b > p->mem_bytes) {
		/* replica_fit comes first: never past the replica's memory. */
		log_error("%s: buffer %u: copy of [%llu, %llu) past the replica's %llu bytes",
		          n->name, d->id, (unsigned long long)a, (unsigned long long)b,
		          (unsigned long long)p->mem_bytes);
		return -TDM_EINVAL;
	}
	int err = n->dev->ops->copy_h2d(n->dev, p->mem, a, host_at(d, a), b - a, p->ready, &ev);
	if (err)
		return err;
	if (p->ready) {
		for (size_t i = 0; waits && i < nwaits; i++)
			if (waits[i] == p->ready)
				waits[i] = ev; /* completes after it */
		p->ready_dev->ops->event_release(p->ready_dev, p->ready);
	}
	p->ready = ev;
	p->ready_dev = n->dev;
	n->bytes_in += b - a;
	/* Out of memory to record it: the task has its bytes all the same,
	 * the next reader copies them again. */
	seg_apply(d, a, b, SEG_ADD, node);
	return 0;
}

/* Gives d a replica on device node `node` with [a, b) valid there when
 * need (the task reads it): only the pieces missing there are copied,
 * those the host lacks through the host. Caller holds the lock. */
static int stage_on_device(struct residency *r, unsigned node, struct res_data *d, uint64_t a,
                           uint64_t b, bool need, struct backend_event **waits, size_t *nwaits)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	int err;

	err = replica_fit(r, node, d, false);
	if (err)
		return err;
	if (!p->mem) {
		err = node_alloc(r, node, d, false);
		if (err)
			return err;
	} else {
		lru_unlink(n, p);
		lru_push_head(n, p);
	}
	uint64_t s, e;
	uint32_t holders;
	while (need && a < b && next_missing(d, node, a, b, &s, &e, &holders)) {
		if (!(holders & 1u) && (err = fetch_to_host(r, d, s, e)))
			return err; /* a device-only piece goes through the host */
		if ((err = copy_in(r, node, d, s, e, waits, *nwaits)))
			return err;
		a = e;
	}
	/* Not settled here: an earlier argument of the same task may have put
	 * this very event in waits[]. A write waits too: a copy in flight
	 * must not land on what the task writes. */
	if (p->ready)
		add_wait(waits, nwaits, p->ready);
	return 0;
}

static bool needs_contents(const struct res_arg *a)
{
	return (a->mode & TDM_R) != 0; /* a write-only range is overwritten whole */
}

static bool host_only(const struct res_arg *args, size_t nargs)
{
	for (size_t i = 0; i < nargs; i++)
		if (atomic_load_explicit(&args[i].data->remote, memory_order_acquire))
			return false;
	return true;
}

/* Releases one hold of d's replica on `node`, if there is one. */
static bool release_hold(struct residency *r, unsigned node, struct res_data *d)
{
	struct replica *p = &d->rep[node];
	if (!p->holds) {
		log_warn("%s: buffer %u: no prefetch hold to release", r->nodes[node].name, d->id);
		return false;
	}
	p->holds--;
	return true;
}

_Static_assert(TDM_MAX_ARGS <= 32, "acquire() keeps a bit per argument");

static int acquire(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                   struct backend_event **waits, size_t *nwaits, void **mem, uint64_t *off,
                   bool prefetched)
{
	uint32_t converted = 0; /* bit i: argument i's hold became its pin */
	int err = 0;
	size_t i;

	*nwaits = 0;
	for (i = 0; i < nargs; i++)
		if (needs_contents(&args[i]) &&
		    atomic_load_explicit(&args[i].data->lost, memory_order_relaxed))
			return -TDM_ENODEV; /* residency_node_evacuate */
	if (node == 0) {
		if (host_only(args, nargs))
			return 0;
		pthread_mutex_lock(&r->lock);
		for (i = 0; i < nargs && !err; i++)
			if (needs_contents(&args[i]))
				err = fetch_to_host(r, args[i].data, args[i].off,
				                    args[i].off + args[i].len);
		pthread_mutex_unlock(&r->lock);
		return err;
	}
	pthread_mutex_lock(&r->lock);
	/* Replicas too small for a growable buffer grow first, while this
	 * task's own holds do not yet count as uses (stage_on_device checks
	 * again; by then each fits). */
	for (i = 0; i < nargs && !err; i++)
		err = replica_fit(r, node, args[i].data, false);
	if (err) {
		pthread_mutex_unlock(&r->lock);
		return err;
	}
	/* Holds become pins before anything is staged, so that making room
	 * for one argument cannot evict the data prefetched for another. */
	for (i = 0; prefetched && i < nargs && i < 32; i++) {
		if ((args[i].mode & TDM_R) && release_hold(r, node, args[i].data)) {
			args[i].data->rep[node].pins++;
			converted |= 1u << i;
		}
	}
	for (i = 0; i < nargs; i++) {
		struct res_data *d = args[i].data;
		/* Pin first: staging a later argument may evict. */
		err = stage_on_device(r, node, d, args[i].off, args[i].off + args[i].len,
		                      needs_contents(&args[i]), waits, nwaits);
		if (err)
			break;
		if (!(converted & (1u << i)))
			d->rep[node].pins++;
		mem[i] = d->rep[node].mem;
		off[i] = args[i].off;
	}
	if (err) {
		while (i-- > 0)
			if (!(converted & (1u << i)))
				args[i].data->rep[node].pins--;
		/* The holds come back: the caller retries or drops them. */
		for (i = 0; i < nargs && i < 32; i++) {
			if (converted & (1u << i)) {
				args[i].data->rep[node].pins--;
				args[i].data->rep[node].holds++;
			}
		}
		*nwaits = 0;
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

int residency_acquire(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                      struct backend_event **waits, size_t *nwaits, void **mem, uint64_t *off)
{
	return acquire(r, node, args, nargs, waits, nwaits, mem, off, false);
}

int residency_acquire_prefetched(struct residency *r, unsigned node, const struct res_arg *args,
                                 size_t nargs, struct backend_event **waits, size_t *nwaits,
                                 void **mem, uint64_t *off)
{
	return acquire(r, node, args, nargs, waits, nwaits, mem, off, true);
}

/* Issues the copies of the pieces of [a, b) of d missing on `node` if
 * the host holds them all and room can be made without blocking; 0 also
 * when skipped. */
static int prefetch_one(struct residency *r, unsigned node, struct res_data *d, uint64_t a,
                        uint64_t b, uint64_t *issued)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	bool fresh = false;
	uint64_t s, e, miss = 0;
	uint32_t holders;

	if (replica_fit(r, node, d, true))
		return 0; /* too small, and it cannot grow without waiting */
	if (p->mem) {
		lru_unlink(n, p);
		lru_push_head(n, p);
	}
	/* The only source without a synchronous copy: the host's. */
	for (uint64_t x = a; x < b && next_missing(d, node, x, b, &s, &e, &holders); x = e) {
		if (!(holders & 1u))
			return 0;
		miss += e - s;
	}
	if (!miss)
		return 0; /* valid, or its copy is in flight */
	if (!p->mem) {
		if (node_alloc(r, node, d, true))
			return 0;
		fresh = true;
	}
	for (uint64_t x = a; x < b && next_missing(d, node, x, b, &s, &e, &holders); x = e) {
		if (copy_in(r, node, d, s, e, NULL, 0)) {
			if (fresh)
				drop_replica(r, node, d);
			log_warn("%s: buffer %u: prefetch copy failed to issue", n->name, d->id);
			return -TDM_EDEVICE;
		}
	}
	n->prefetches++;
	n->prefetch_bytes += miss;
	*issued += miss;
	return 0;
}

int residency_prefetch(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                       uint64_t *bytes_issued)
{
	uint64_t issued = 0;
	int err = 0;
	size_t i;

	if (bytes_issued)
		*bytes_issued = 0;
	if (node == 0)
		return 0;
	pthread_mutex_lock(&r->lock);
	if (node >= r->nnodes) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	for (i = 0; i < nargs; i++) {
		if (!(args[i].mode & TDM_R))
			continue;
		/* Held at once: fetching a later argument cannot evict it. */
		err = prefetch_one(r, node, args[i].data, args[i].off, args[i].off + args[i].len,
		                   &issued);
		if (err)
			break;
		args[i].data->rep[node].holds++;
	}
	if (err) {
		while (i-- > 0)
			if (args[i].mode & TDM_R)
				args[i].data->rep[node].holds--;
	}
	pthread_mutex_unlock(&r->lock);
	if (bytes_issued)
		*bytes_issued = issued;
	return err;
}

void residency_prefetch_drop(struct residency *r, unsigned node, const struct res_arg *args,
                             size_t nargs)
{
	if (node == 0)
		return;
	pthread_mutex_lock(&r->lock);
	if (node < r->nnodes)
		for (size_t i = 0; i < nargs; i++)
			if (args[i].mode & TDM_R)
				release_hold(r, node, args[i].data);
	pthread_mutex_unlock(&r->lock);
}

/* Fallback when the map cannot grow (out of memory) for a write of
 * [a, b) on `node`: the host gets every byte (the written range from
 * `node`, the rest from wherever it is valid) and becomes the only holder
 * of the whole buffer. Needs no memory; costs synchronous copies. */
static void write_collapsed(struct residency *r, unsigned node, struct res_data *d, uint64_t a,
                            uint64_t b)
{
	log_warn("buffer %u: out of memory for its validity map; made whole on the host", d->id);
	if (node && copy_sync_d2h(r, node, d, &d->rep[node], a, b - a))
		log_error("buffer %u: written range lost on %s", d->id, r->nodes[node].name);
	fetch_to_host(r, d, 0, a);
	fetch_to_host(r, d, b, d->bytes);
	seg_reset(d, 0);
}

/* The task wrote [a, b) of d on `node`: that node alone holds it now. */
static void make_owner(struct residency *r, unsigned node, struct res_data *d, uint64_t a,
                       uint64_t b)
{
	if (!seg_apply(d, a, b, SEG_WRITE, node))
		write_collapsed(r, node, d, a, b);
	/* Tasks planned elsewhere would now need a new copy. */
	atomic_fetch_and_explicit(&d->planned, bit(node), memory_order_relaxed);
}

void residency_release(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                       bool ok)
{
	if (node == 0) {
		bool remote = false;
		for (size_t i = 0; i < nargs; i++)
			remote |= (args[i].mode & TDM_W) &&
			          atomic_load_explicit(&args[i].data->remote, memory_order_acquire);
		if (!remote)
			return; /* host writes on host-only data: nothing to invalidate */
		pthread_mutex_lock(&r->lock);
		for (size_t i = 0; i < nargs; i++)
			if (args[i].mode & TDM_W)
				make_owner(r, 0, args[i].data, args[i].off,
				           args[i].off + args[i].len);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < nargs; i++) {
		struct res_data *d = args[i].data;
		struct replica *p = &d->rep[node];
		uint64_t a = args[i].off, b = args[i].off + args[i].len;
		p->pins--;
		settle_if_done(p);
		if (!(args[i].mode & TDM_W))
			continue;
		if (ok) {
			make_owner(r, node, d, a, b);
			continue;
		}
		/* A failed task may have scribbled on its copy: drop what it
		 * wrote where another valid copy exists. */
		seg_apply(d, a, b, SEG_DROP, node);
		uint64_t s, e;
		uint32_t holders;
		for (uint64_t x = a; x < b && next_missing(d, 0, x, b, &s, &e, &holders); x = e)
			if (holders == bit(node)) {
				log_warn("%s: buffer %u: the failed task's device held its only "
				         "copy; kept",
				         r->nodes[node].name, d->id);
				break;
			}
	}
	pthread_mutex_unlock(&r->lock);
}

int residency_flush(struct residency *r, struct res_data *const *datas, size_t n)
{
	int err = 0;
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < n; i++) {
		struct res_data *d = datas[i];
		if (!atomic_load_explicit(&d->remote, memory_order_acquire))
			continue;
		if (!d->scratch) {
			int e = fetch_to_host(r, d, 0, d->bytes);
			if (e) {
				err = err ? err : e;
				continue;
			}
			if (d->keep_on_devices)
				continue;
		}
		/* Stale from now on; the memory stays for reuse or eviction. */
		seg_reset(d, 0);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* Pinning is per backend (CUDA pins for every device at once): whether a
 * node before n of the same backend already pinned d. */
static bool registered_by_backend(const struct residency *r, const struct res_data *d, unsigned n)
{
	for (unsigned m = 1; m < n; m++)
		if ((d->registered & bit(m)) && r->nodes[m].dev->ops == r->nodes[n].dev->ops)
			return true;
	return false;
}

void residency_data_init(struct residency *r, struct res_data *d, void *host, uint64_t bytes,
                         uint32_t id, bool keep_on_devices)
{
	memset(d, 0, sizeof(*d));
	d->keep_on_devices = keep_on_devices;
	d->host = host;
	d->bytes = bytes;
	d->id = id;
	d->res = r;
	d->segs_cap = RES_INLINE_SEGS;
	d->nsegs = 1;
	d->seg_inline[0] = (struct res_seg){ .end = bytes, .valid = bit(0) };
	d->rep[0].valid = d->rep[0].sole = bytes;
	atomic_init(&d->remote, 0);
	atomic_init(&d->full, bit(0));
	atomic_init(&d->planned, 0);
	atomic_init(&d->home, RES_HOME_NONE);
	for (unsigned n = 1; n < r->nnodes; n++) {
		const struct backend_device *dev = r->nodes[n].dev;
		if (!bytes || !dev->ops->host_register || registered_by_backend(r, d, n))
			continue;
		if (dev->ops->host_register(dev, host, bytes) == 0)
			d->registered |= (uint32_t)bit(n);
	}
}

static void free_map(struct res_data *d)
{
	free(d->segs);
	d->segs = NULL;
	d->nsegs = 0;
	d->segs_cap = RES_INLINE_SEGS;
}

void residency_data_set_growable(struct residency *r, struct res_data *d, uint64_t capacity)
{
	(void)r;
	d->capacity = capacity;
}

void residency_data_pin(struct residency *r, struct res_data *d, uint64_t off, uint64_t bytes)
{
	uint32_t nodes = 0;
	if (!residency_has_devices(r))
		return;
	if (d->nregs == d->regs_cap) {
		uint32_t ncap = d->regs_cap ? d->regs_cap * 2 : 8;
		struct res_host_reg *n = realloc(d->regs, ncap * sizeof(*n));
		if (!n)
			return; /* not pinned: copies are staged */
		d->regs = n;
		d->regs_cap = ncap;
	}
	for (unsigned n = 1; n < r->nnodes; n++) {
		const struct backend_device *dev = r->nodes[n].dev;
		bool done = false; /* pinning is per backend, as for whole buffers */
		for (unsigned m = 1; m < n; m++)
			done |= (nodes & bit(m)) && r->nodes[m].dev->ops == dev->ops;
		if (done || !dev->ops->host_register)
			continue;
		if (dev->ops->host_register(dev, (char *)d->host + off, bytes) == 0)
			nodes |= (uint32_t)bit(n);
	}
	if (nodes)
		d->regs[d->nregs++] = (struct res_host_reg){ off, nodes };
}

/* The rule for a growth from old to new bytes: [old, new) joins the map
 * held by the host alone. The host's memory there is what it is (fresh
 * zero pages, or rows the client just wrote), no replica ever held those
 * bytes, and a replica's memory may not even reach them. So the host's
 * valid and sole counts grow by new - old, every device's stay, and a
 * device that held every byte no longer does (its `full` bit clears when
 * the masks are published from the counts). */
void residency_data_grow(struct residency *r, struct res_data *d, uint64_t bytes)
{
	pthread_mutex_lock(&r->lock);
	if (bytes <= d->bytes) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	uint64_t old = d->bytes;
	struct res_seg *s = segs_of(d);
	if (old == 0 || s[d->nsegs - 1].valid == bit(0)) {
		s[d->nsegs - 1] = (struct res_seg){ .end = bytes, .valid = bit(0) };
	} else if (seg_room(d, 1)) {
		segs_of(d)[d->nsegs++] = (struct res_seg){ .end = bytes, .valid = bit(0) };
	} else {
		/* Out of memory for one more segment: gather every byte on the
		 * host, which then holds the whole buffer alone (synchronous
		 * copies, as write_collapsed). */
		log_warn("buffer %u: out of memory for its validity map; made whole on the host",
		         d->id);
		if (fetch_to_host(r, d, 0, old))
			log_error("buffer %u: contents lost growing it", d->id);
		d->bytes = bytes;
		seg_reset(d, 0);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	d->bytes = bytes;
	d->rep[0].valid += bytes - old;
	d->rep[0].sole += bytes - old;
	seg_publish(d, atomic_load_explicit(&d->full, memory_order_relaxed) |
	                       atomic_load_explicit(&d->remote, memory_order_relaxed) | bit(0));
	pthread_mutex_unlock(&r->lock);
}

static void free_regs(struct res_data *d)
{
	free(d->regs);
	d->regs = NULL;
	d->nregs = d->regs_cap = 0;
}

void residency_data_fini(struct residency *r, struct res_data *d)
{
	/* Data never initialised here (a daemon without residency) has no
	 * home to give back. */
	if (d->res)
		residency_set_home(d, RES_HOME_NONE);
	if (!residency_has_devices(r)) {
		free_map(d);
		free_regs(d); /* the devices went first (residency_close) */
		return;
	}
	pthread_mutex_lock(&r->lock);
	for (unsigned n = 1; n < r->nnodes; n++) {
		if (d->rep[n].mem)
			drop_replica(r, n, d);
	}
	pthread_mutex_unlock(&r->lock);
	free_map(d);
	for (unsigned n = 1; n < r->nnodes; n++) {
		const struct backend_device *dev = r->nodes[n].dev;
		if (d->registered & bit(n))
			dev->ops->host_unregister(dev, d->host);
		for (uint32_t i = 0; i < d->nregs; i++)
			if (d->regs[i].nodes & bit(n))
				dev->ops->host_unregister(dev, (char *)d->host + d->regs[i].off);
	}
	free_regs(d);
}

void residency_describe(struct residency *r, struct res_data *d, char *out, size_t outlen)
{
	size_t len = 0;
	out[0] = '\0';
	pthread_mutex_lock(&r->lock);
	for (unsigned n = 0; n < r->nnodes && len < outlen; n++) {
		const struct replica *p = &d->rep[n];
		if (!p->valid)
			continue;
		int w = snprintf(out + len, outlen - len, "%s%s%s%s", len ? "," : "",
		                 r->nodes[n].name, p->sole ? "*" : "",
		                 p->valid < d->bytes ? "~" : "");
		if (w < 0)
			break;
		len += (size_t)w;
	}
	pthread_mutex_unlock(&r->lock);
}

void residency_node_stats(struct residency *r, unsigned node, struct res_node_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (node >= r->nnodes)
		return;
	pthread_mutex_lock(&r->lock);
	const struct res_node *n = &r->nodes[node];
	snprintf(out->name, sizeof(out->name), "%s", n->name);
	out->cap = n->cap;
	out->used = n->used;
	out->evictions = n->evictions;
	out->writebacks = n->writebacks;
	out->bytes_in = n->bytes_in;
	out->bytes_out = n->bytes_out;
	out->prefetches = n->prefetches;
	out->prefetch_bytes = n->prefetch_bytes;
	out->evacuated_bytes = n->evacuated_bytes;
	out->peer_bytes = n->peer_bytes;
	out->lost = n->lost;
	out->gone = n->gone;
	pthread_mutex_unlock(&r->lock);
}

/* ---- elastic nodes ---------------------------------------------------------------- */

/* Where the ranges only `node` holds of d go device to device: its home,
 * when that is another device node still there whose backend copies peer
 * to peer with this one's (-1: none, through the host). */
static int peer_target(struct residency *r, unsigned node, struct res_data *d)
{
	int h = residency_home(d);
	if (h <= 0 || (unsigned)h == node || (size_t)h >= r->nnodes)
		return -1;
	const struct res_node *t = &r->nodes[h], *n = &r->nodes[node];
	if (t->gone || !t->dev->ops->copy_peer || t->dev->ops != n->dev->ops)
		return -1;
	return h;
}

/* Copies the ranges only node's replica of d holds into node t's replica
 * (made if need be), waiting for each copy; *moved: the bytes that now
 * hold there. The new replica's own pending copy, if any, is only waited
 * for (its event is its worker's to release). Caller holds the lock. */
static int move_peer(struct residency *r, unsigned node, unsigned t, struct res_data *d,
                     uint64_t *moved)
{
	const struct backend_device *src = r->nodes[node].dev, *dst = r->nodes[t].dev;
	struct backend_event *waits[2];
	size_t nw = 0;
	int err = settle(&d->rep[node]);
	if (!err)
		err = stage_on_device(r, t, d, 0, 0, false, waits, &nw);
	struct replica *p = &d->rep[t];
	const struct res_seg *s = segs_of(d);
	for (uint32_t i = 0; i < d->nsegs && !err; i++) {
		if (s[i].valid != bit(node))
			continue;
		uint64_t st = seg_start(s, i), end = s[i].end;
		struct backend_event *ev = NULL;
		if (end > p->mem_bytes || end > d->rep[node].mem_bytes) {
			err = -TDM_EINVAL;
			break;
		}
		err = dst->ops->copy_peer(dst, p->mem, st, src, d->rep[node].mem, st, end - st,
		                          p->ready, &ev);
		if (err)
			break;
		err = dst->ops->event_wait(dst, ev);
		dst->ops->event_release(dst, ev);
		if (!err && !seg_apply(d, st, end, SEG_ADD, t))
			err = -TDM_ENOMEM;
		if (err)
			break;
		*moved += end - st;
		s = segs_of(d); /* the map may have moved */
		i = seg_find(d, st);
	}
	return err;
}

int residency_node_evacuate(struct residency *r, unsigned node)
{
	int ret = 0;
	if (node == 0 || node >= r->nnodes)
		return -TDM_EINVAL;
	pthread_mutex_lock(&r->lock);
	struct res_node *n = &r->nodes[node];
	n->gone = true;
	n->cap = 0;
	while (n->lru_tail) {
		struct replica *p = n->lru_tail;
		struct res_data *d = p->data;
		if (p->pins)
			log_error("%s: buffer %u: evacuated while %u tasks use it", n->name, d->id,
			          p->pins);
		if (p->sole) {
			uint64_t sole = p->sole, moved = 0;
			int t = peer_target(r, node, d), err = 0;
			/* To where it is wanted next, device to device; what is
			 * left (no peer copy, or it failed) to the host. */
			if (t > 0 && (err = move_peer(r, node, (unsigned)t, d, &moved)))
				log_info("%s: buffer %u: no copy to %s (%s): through the host",
				         n->name, d->id, r->nodes[t].name, tdm_strerror(err));
			n->peer_bytes += moved;
			err = write_back(r, node, d);
			if (err) {
				/* Its only copy went with the device: say so to
				 * every reader rather than hand out stale bytes. */
				atomic_store(&d->lost, true);
				n->lost++;
				ret = -TDM_ENODEV;
				log_error("%s: buffer %u: its only copy of %llu bytes is lost: %s",
				          n->name, d->id, (unsigned long long)sole,
				          tdm_strerror(err));
			} else {
				n->evacuated_bytes += sole;
				n->writebacks++;
			}
		}
		drop_replica(r, node, d);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int residency_set_budget(struct residency *r, unsigned node, uint64_t bytes)
{
	int err = 0;
	if (node == 0 || node >= r->nnodes)
		return -TDM_EINVAL;
	pthread_mutex_lock(&r->lock);
	struct res_node *n = &r->nodes[node];
	if (n->gone) {
		pthread_mutex_unlock(&r->lock);
		return -TDM_EINVAL;
	}
	n->cap = node_cap(n->dev, bytes);
	while (n->used > n->cap)
		if (!evict_one(r, node, false))
			break;
	if (n->used > n->cap)
		err = -TDM_EBUSY;
	pthread_mutex_unlock(&r->lock);
	return err;
}
