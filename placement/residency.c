/* Data residency: replica states, transfers, device memory caps, eviction.
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

int residency_add_node(struct residency *r, const struct backend_device *dev, uint64_t cap)
{
	if (r->nnodes >= RES_MAX_NODES)
		return -TDM_ENOMEM;
	struct res_node *n = &r->nodes[r->nnodes];
	n->dev = dev;
	n->cap = cap && (cap < dev->mem_bytes || !dev->mem_bytes) ? cap : dev->mem_bytes;
	snprintf(n->name, sizeof(n->name), "%s", dev->name);
	return (int)r->nnodes++;
}

void residency_close(struct residency *r)
{
	pthread_mutex_lock(&r->lock);
	r->nnodes = 1;
	pthread_mutex_unlock(&r->lock);
}

void residency_fini(struct residency *r)
{
	pthread_mutex_destroy(&r->lock);
}

static uint64_t bit(unsigned node)
{
	return 1u << node;
}

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

/* The bytes of d a replica holds: a growable buffer's replica may predate
 * its last growth (the rest is undefined anyway). */
static uint64_t rep_span(const struct replica *p, const struct res_data *d)
{
	return p->mem_bytes < d->bytes ? p->mem_bytes : d->bytes;
}

/* Copies node's replica to the host and waits. A copy that waited for
 * nothing else is timed for the transfer model (r->copy_observed). */
static int copy_sync_d2h(struct residency *r, unsigned node, void *host, struct replica *src,
                         uint64_t bytes)
{
	const struct backend_device *dev = r->nodes[node].dev;
	struct backend_event *ev = NULL;
	bool timed = r->copy_observed && !src->ready;
	uint64_t t0 = timed ? clock_monotonic_ns() : 0;
	int err = dev->ops->copy_d2h(dev, host, src->mem, 0, bytes, src->ready, &ev);
	if (err)
		return err;
	err = dev->ops->event_wait(dev, ev);
	dev->ops->event_release(dev, ev);
	if (!err && timed)
		r->copy_observed(r->copy_ctx, node, 0, bytes, clock_monotonic_ns() - t0);
	return err;
}

/* Makes the host copy valid from a device replica. Caller holds the lock. */
static int fetch_to_host(struct residency *r, struct res_data *d)
{
	if (d->rep[0].state != REPLICA_INVALID)
		return 0;
	for (unsigned n = 1; n < r->nnodes; n++) {
		struct replica *p = &d->rep[n];
		if (p->state == REPLICA_INVALID)
			continue;
		int err = copy_sync_d2h(r, n, d->host, p, rep_span(p, d));
		if (err) {
			log_warn("%s: copy to host failed: %s", r->nodes[n].name,
			         tdm_strerror(err));
			continue;
		}
		r->nodes[n].bytes_out += rep_span(p, d);
		p->state = REPLICA_SHARED;
		d->rep[0].state = REPLICA_SHARED;
		return 0;
	}
	log_error("buffer %u: no valid copy could be read back", d->id);
	return -TDM_EDEVICE;
}

/* Frees one replica's device memory. Caller holds the lock, on the node's
 * worker (or at teardown). */
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
	p->state = REPLICA_INVALID;
	atomic_fetch_and(&d->remote, ~(uint32_t)bit(node));
}

/* Whether a prefetch may take p's memory: nothing needs it soon, dropping
 * it writes nothing back and waits for nothing. */
static bool prefetch_may_evict(struct replica *p)
{
	if (p->pins || p->holds || p->state == REPLICA_OWNER)
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
	if (pass % 2 == 0 && p->state != REPLICA_INVALID)
		return false;
	if (prefetch)
		return prefetch_may_evict(p);
	return !p->holds || pass >= 2;
}

/* Evicts the least recently used replica of the node that `prefetch`'s
 * rules allow (may_evict), stale ones first; writes an owner back to the
 * host before dropping it (never for a prefetch). */
static bool evict_one(struct residency *r, unsigned node, bool prefetch)
{
	struct res_node *n = &r->nodes[node];
	for (int pass = 0; pass < (prefetch ? 2 : 4); pass++) {
		for (struct replica *p = n->lru_tail; p; p = p->lru_prev) {
			if (!may_evict(p, pass, prefetch))
				continue;
			struct res_data *d = p->data;
			if (p->state == REPLICA_OWNER) {
				int err = settle(p);
				if (!err)
					err = copy_sync_d2h(r, node, d->host, p, rep_span(p, d));
				if (err) {
					log_warn("%s: cannot write buffer %u back, keeping it: %s",
					         n->name, d->id, tdm_strerror(err));
					continue;
				}
				d->rep[0].state = REPLICA_OWNER;
				n->writebacks++;
				n->bytes_out += rep_span(p, d);
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
	p->state = REPLICA_INVALID;
	lru_push_head(n, p);
	return 0;
}

/* Makes node's replica of a growable buffer as large as the buffer: in
 * place where it was reserved (what it holds stays valid), else, when no
 * task uses it, by dropping it (an owner written back first) so that the
 * next allocation is of the new size. -TDM_ENOMEM: no room, or the
 * replica is in use; the task tries again later. */
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
	if (p->state == REPLICA_OWNER) {
		int err = settle(p);
		if (!err)
			err = copy_sync_d2h(r, node, d->host, p, rep_span(p, d));
		if (err)
			return err;
		d->rep[0].state = REPLICA_OWNER;
		n->writebacks++;
		n->bytes_out += rep_span(p, d);
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

/* Gives d a valid replica on device node `node` (need: its contents matter,
 * i.e. the task reads it or writes only part of it). Caller holds the lock. */
static int stage_on_device(struct residency *r, unsigned node, struct res_data *d, bool need,
                           struct backend_event **waits, size_t *nwaits)
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
	if (p->state != REPLICA_INVALID) {
		/* Not settled here: an earlier argument of the same task may
		 * have put this very event in waits[]. */
		if (p->ready)
			add_wait(waits, nwaits, p->ready);
		return 0;
	}
	if (!need)
		return 0;
	err = fetch_to_host(r, d); /* the cheapest source; a device-only copy goes through it */
	if (err)
		return err;
	err = settle(p); /* an older copy into a replica that went stale */
	if (err)
		return err;
	err = n->dev->ops->copy_h2d(n->dev, p->mem, 0, d->host, d->bytes, NULL, &p->ready);
	if (err) {
		p->ready = NULL;
		return err;
	}
	p->ready_dev = n->dev;
	p->state = REPLICA_SHARED;
	d->rep[0].state = REPLICA_SHARED;
	atomic_fetch_or(&d->remote, (uint32_t)bit(node));
	n->bytes_in += d->bytes;
	add_wait(waits, nwaits, p->ready);
	return 0;
}

static bool needs_contents(const struct res_arg *a)
{
	return (a->mode & TDM_R) || a->off != 0 || a->len != a->data->bytes;
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
	if (node == 0) {
		if (host_only(args, nargs))
			return 0;
		pthread_mutex_lock(&r->lock);
		for (i = 0; i < nargs && !err; i++)
			if (needs_contents(&args[i]))
				err = fetch_to_host(r, args[i].data);
		pthread_mutex_unlock(&r->lock);
		return err;
	}
	pthread_mutex_lock(&r->lock);
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
		err = stage_on_device(r, node, d, needs_contents(&args[i]), waits, nwaits);
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

/* Issues d's copy to `node` if it has no valid replica or copy in flight
 * there and one can be made without blocking; 0 also when skipped. */
static int prefetch_one(struct residency *r, unsigned node, struct res_data *d, uint64_t *issued)
{
	struct res_node *n = &r->nodes[node];
	struct replica *p = &d->rep[node];
	bool fresh = false;

	if (replica_fit(r, node, d, true))
		return 0;
	if (p->mem) {
		lru_unlink(n, p);
		lru_push_head(n, p);
		if (p->state != REPLICA_INVALID)
			return 0; /* valid, or its copy is in flight */
	}
	/* The only source without a synchronous copy: the host's. */
	if (d->rep[0].state == REPLICA_INVALID)
		return 0;
	if (p->mem) {
		settle_if_done(p); /* an older copy into a replica that went stale */
		if (p->ready)
			return 0;
	} else {
		if (node_alloc(r, node, d, true))
			return 0;
		fresh = true;
	}
	if (n->dev->ops->copy_h2d(n->dev, p->mem, 0, d->host, d->bytes, NULL, &p->ready)) {
		p->ready = NULL;
		if (fresh)
			drop_replica(r, node, d);
		log_warn("%s: buffer %u: prefetch copy failed to issue", n->name, d->id);
		return -TDM_EDEVICE;
	}
	p->ready_dev = n->dev;
	p->state = REPLICA_SHARED;
	d->rep[0].state = REPLICA_SHARED;
	atomic_fetch_or(&d->remote, (uint32_t)bit(node));
	n->bytes_in += d->bytes;
	n->prefetches++;
	n->prefetch_bytes += d->bytes;
	*issued += d->bytes;
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
		err = prefetch_one(r, node, args[i].data, &issued);
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

/* The task wrote d on `node`: that replica is now the only valid one. */
static void make_owner(struct residency *r, unsigned node, struct res_data *d)
{
	for (unsigned m = 0; m < r->nnodes; m++)
		if (m != node)
			d->rep[m].state = REPLICA_INVALID;
	d->rep[node].state = REPLICA_OWNER;
	atomic_store_explicit(&d->remote, node ? (uint32_t)bit(node) : 0, memory_order_release);
	/* Tasks planned elsewhere would now need a new copy. */
	atomic_fetch_and_explicit(&d->planned, (uint32_t)bit(node), memory_order_relaxed);
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
				make_owner(r, 0, args[i].data);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < nargs; i++) {
		struct res_data *d = args[i].data;
		struct replica *p = &d->rep[node];
		p->pins--;
		settle_if_done(p);
		if (!(args[i].mode & TDM_W))
			continue;
		if (ok) {
			make_owner(r, node, d);
		} else if (atomic_load(&d->remote) != bit(node) ||
		           d->rep[0].state != REPLICA_INVALID) {
			/* A failed task may have scribbled on its copy: drop it,
			 * another valid copy exists. */
			p->state = REPLICA_INVALID;
			atomic_fetch_and(&d->remote, ~(uint32_t)bit(node));
		} else {
			log_warn("%s: buffer %u: the failed task's device held its only copy; kept",
			         r->nodes[node].name, d->id);
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
			int e = fetch_to_host(r, d);
			if (e) {
				err = err ? err : e;
				continue;
			}
			if (d->keep_on_devices)
				continue;
		}
		/* Stale from now on; the memory stays for reuse or eviction. */
		for (unsigned m = 1; m < r->nnodes; m++)
			d->rep[m].state = REPLICA_INVALID;
		d->rep[0].state = REPLICA_OWNER;
		atomic_store_explicit(&d->remote, 0, memory_order_release);
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
	d->rep[0].state = REPLICA_OWNER;
	atomic_init(&d->remote, 0);
	atomic_init(&d->planned, 0);
	for (unsigned n = 1; n < r->nnodes; n++) {
		const struct backend_device *dev = r->nodes[n].dev;
		if (!bytes || !dev->ops->host_register || registered_by_backend(r, d, n))
			continue;
		if (dev->ops->host_register(dev, host, bytes) == 0)
			d->registered |= (uint32_t)bit(n);
	}
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

void residency_data_grow(struct residency *r, struct res_data *d, uint64_t bytes)
{
	pthread_mutex_lock(&r->lock);
	if (bytes > d->bytes)
		d->bytes = bytes;
	pthread_mutex_unlock(&r->lock);
}

void residency_data_fini(struct residency *r, struct res_data *d)
{
	if (!residency_has_devices(r)) {
		free(d->regs); /* the devices went first (residency_close) */
		d->regs = NULL;
		return;
	}
	pthread_mutex_lock(&r->lock);
	for (unsigned n = 1; n < r->nnodes; n++) {
		if (d->rep[n].mem)
			drop_replica(r, n, d);
	}
	pthread_mutex_unlock(&r->lock);
	for (unsigned n = 1; n < r->nnodes; n++) {
		const struct backend_device *dev = r->nodes[n].dev;
		if (d->registered & bit(n))
			dev->ops->host_unregister(dev, d->host);
		for (uint32_t i = 0; i < d->nregs; i++)
			if (d->regs[i].nodes & bit(n))
				dev->ops->host_unregister(dev, (char *)d->host + d->regs[i].off);
	}
	free(d->regs);
	d->regs = NULL;
	d->nregs = d->regs_cap = 0;
}

void residency_describe(struct residency *r, struct res_data *d, char *out, size_t outlen)
{
	size_t len = 0;
	out[0] = '\0';
	pthread_mutex_lock(&r->lock);
	for (unsigned n = 0; n < r->nnodes && len < outlen; n++) {
		uint8_t st = d->rep[n].state;
		if (st == REPLICA_INVALID)
			continue;
		int w = snprintf(out + len, outlen - len, "%s%s%s", len ? "," : "",
		                 r->nodes[n].name, st == REPLICA_OWNER ? "*" : "");
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
	pthread_mutex_unlock(&r->lock);
}
