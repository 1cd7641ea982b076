/* Sessions: ring region, buffers, completion posting, teardown. */
#include "daemon/session.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/grow.h"
#include "common/log.h"
#include "tandem.h"

/* Buffer handles: slot index in the low bits, a generation above, so a
 * freed handle is not silently taken for the buffer that reuses its slot. */
#define HANDLE_SLOT_BITS 20
#define HANDLE_SLOT_MASK ((1u << HANDLE_SLOT_BITS) - 1)
#define HANDLE_GEN_MAX ((1u << (32 - HANDLE_SLOT_BITS)) - 1)
#define MAX_PENDING_ERRORS 1024

/* One more mapping against the daemon's budget; false when it is spent. */
static bool mapping_take(struct session_env *env)
{
	uint32_t cap = env->mappings_cap;
	uint32_t n = atomic_fetch_add(&env->mappings, 1);
	if (cap && n >= cap) {
		atomic_fetch_sub(&env->mappings, 1);
		return false;
	}
	return true;
}

static void mapping_give(struct session_env *env)
{
	atomic_fetch_sub(&env->mappings, 1);
}

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (n + page - 1) / page * page;
}

/* A memfd of `bytes`, sealed so that its size can never change under us. */
static int sealed_memfd(const char *name, size_t bytes)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)bytes) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* The client's share and default policy hint, from [clients] by user name
 * or uid. */
static void flow_settings(struct session *s, const struct daemon_config *cfg, uint32_t uid)
{
	char buf[1024];
	struct passwd pw, *found = NULL;
	const char *user = NULL;
	if (cfg->n_client_weight || cfg->n_client_policy) {
		if (getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &found) == 0 && found)
			user = found->pw_name;
	}
	s->flow.weight = config_client_weight(cfg, uid, user);
	s->flow.policy_hint = (uint8_t)config_client_policy(cfg, uid, user);
}

uint32_t session_set_weight(struct session *s, uint32_t weight)
{
	/* Workers read it under their fair queue's lock (placement/fairq.c). */
	return __atomic_exchange_n(&s->flow.weight, weight, __ATOMIC_RELAXED);
}

void session_reload_settings(struct session *s, const struct daemon_config *old,
                             const struct daemon_config *new)
{
	char buf[1024];
	struct passwd pw, *found = NULL;
	const char *user = NULL;
	if (old->n_client_weight || new->n_client_weight) {
		if (getpwuid_r((uid_t)s->uid, &pw, buf, sizeof(buf), &found) == 0 && found)
			user = found->pw_name;
	}
	uint32_t w = config_client_weight(new, s->uid, user);
	if (w != config_client_weight(old, s->uid, user))
		session_set_weight(s, w);
}

uint64_t uid_buffer_quota(const struct uid_usage *u, const struct daemon_config *cfg)
{
	uint64_t q = atomic_load(&u->buffer_quota);
	return q ? q : cfg->uid_buffer_quota_bytes;
}

int session_create(struct session_env *env, uint32_t id, uint32_t uid, struct uid_usage *usage,
                   struct session **out)
{
	const struct daemon_config *cfg = env->cfg;
	struct session *s = calloc(1, sizeof(*s));
	size_t sq_off, cq_off, total;
	int pair[2];

	if (!s)
		return -TDM_ENOMEM;
	s->ring_fd = s->sq_bell = s->bell = s->bell_peer = -1;
	atomic_store(&s->refs, 1);
	s->id = id;
	s->env = env;
	s->usage = usage;
	s->flow.id = id;
	s->uid = uid;
	flow_settings(s, cfg, uid);
	s->sq_entries = cfg->sq_entries;
	s->cq_entries = cfg->cq_entries;
	pthread_mutex_init(&s->cq_lock, NULL);
	pthread_mutex_init(&s->intake_lock, NULL);
	graph_build_init(&s->build, 0, 0);

	sq_off = page_round(sizeof(struct tdm_ring_header));
	cq_off = sq_off + page_round((size_t)s->sq_entries * sizeof(struct tdm_sqe));
	total = cq_off + page_round((size_t)s->cq_entries * sizeof(struct tdm_cqe));
	if (!mapping_take(env)) {
		s->env = NULL;
		session_unref(s);
		return -TDM_EQUOTA;
	}
	s->ring_fd = sealed_memfd("tandem-ring", total);
	if (s->ring_fd < 0)
		goto sys_fail;
	s->ring = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, s->ring_fd, 0);
	if (s->ring == MAP_FAILED) {
		s->ring = NULL;
		goto sys_fail;
	}
	s->ring_bytes = total;
	s->hdr = s->ring;
	s->sq = (struct tdm_sqe *)((char *)s->ring + sq_off);
	s->cq = (struct tdm_cqe *)((char *)s->ring + cq_off);
	s->hdr->magic = TDM_WIRE_MAGIC;
	s->hdr->version = TDM_WIRE_VERSION;
	s->hdr->sq_entries = s->sq_entries;
	s->hdr->cq_entries = s->cq_entries;
	s->hdr->sq_offset = (uint32_t)sq_off;
	s->hdr->cq_offset = (uint32_t)cq_off;
	s->sq_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->sq_bell < 0 || pipe2(pair, O_CLOEXEC | O_NONBLOCK) != 0)
		goto sys_fail;
	s->bell = pair[1];
	s->bell_peer = pair[0];
	if (env->engine && engine_flow_add(env->engine, &s->flow) != 0) {
		mapping_give(env);
		s->env = NULL; /* no flow to remove, nothing else counted yet */
		session_unref(s);
		return -TDM_ENOMEM;
	}
	atomic_fetch_add(&env->counters->sessions_total, 1);
	atomic_fetch_add(&env->counters->sessions_live, 1);
	*out = s;
	return 0;

sys_fail:
	log_error("session %u: cannot create ring: %s", id, strerror(errno));
	mapping_give(env);
	s->env = NULL; /* nothing counted yet */
	session_unref(s);
	return -TDM_ESYS;
}

void session_ref(struct session *s)
{
	atomic_fetch_add(&s->refs, 1);
}

static void session_free(struct session *s)
{
	if (s->env) {
		if (s->env->engine)
			engine_flow_gone(s->env->engine, &s->flow);
		atomic_fetch_sub(&s->env->counters->sessions_live, 1);
		mapping_give(s->env);
	}
	if (s->ring)
		munmap(s->ring, s->ring_bytes);
	if (s->ring_fd >= 0)
		close(s->ring_fd);
	if (s->sq_bell >= 0)
		close(s->sq_bell);
	if (s->bell >= 0)
		close(s->bell);
	if (s->bell_peer >= 0)
		close(s->bell_peer);
	free(s->slots);
	free(s->kv_hist);
	graph_build_fini(&s->build);
	pthread_mutex_destroy(&s->cq_lock);
	pthread_mutex_destroy(&s->intake_lock);
	free(s);
}

void session_unref(struct session *s)
{
	if (atomic_fetch_sub(&s->refs, 1) == 1)
		session_free(s);
}

/* ---- buffers ------------------------------------------------------------- */

/* A free slot (its index), growing the table when none is free;
 * -TDM_EQUOTA when the handle space is spent, -TDM_ENOMEM. */
static int64_t slot_take(struct session *s)
{
	if (s->free_head) {
		uint32_t i = s->free_head - 1;
		s->free_head = s->slots[i].next_free;
		s->slots[i].next_free = 0;
		return i;
	}
	if (s->slots_used >= HANDLE_SLOT_MASK)
		return -TDM_EQUOTA;
	if (s->slots_used == s->slots_cap) {
		uint32_t ncap = s->slots_cap ? s->slots_cap * 2 : 16;
		if (ncap > HANDLE_SLOT_MASK)
			ncap = HANDLE_SLOT_MASK;
		struct buffer_slot *n = realloc(s->slots, ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		memset(n + s->slots_cap, 0, (ncap - s->slots_cap) * sizeof(*n));
		s->slots = n;
		s->slots_cap = ncap;
	}
	return s->slots_used++;
}

/* Puts a slot back on the free list, unless its generation is spent. */
static void slot_give(struct session *s, uint32_t i)
{
	s->slots[i].b = NULL;
	if (s->slots[i].gen >= HANDLE_GEN_MAX)
		return; /* retired: its next handle would equal one already given out */
	s->slots[i].next_free = s->free_head;
	s->free_head = i + 1;
}

/* Whether the client's and its user's quotas have room for `bytes` more,
 * in one more buffer when new_buffer. */
static bool quota_room(const struct session *s, uint64_t bytes, bool new_buffer)
{
	const struct daemon_config *cfg = s->env->cfg;
	if (bytes > cfg->buffer_quota_bytes ||
	    atomic_load(&s->buffer_bytes) + bytes > cfg->buffer_quota_bytes ||
	    (new_buffer && atomic_load(&s->buffers_count) >= cfg->max_buffers))
		return false;
	const struct uid_usage *u = s->usage;
	if (u && u->limited &&
	    (bytes > uid_buffer_quota(u, cfg) ||
	     atomic_load(&u->buffer_bytes) + bytes > uid_buffer_quota(u, cfg) ||
	     (new_buffer && atomic_load(&u->buffers) >= cfg->uid_max_buffers)))
		return false;
	return true;
}

static void charge(struct session *s, struct buffer *b, uint64_t bytes)
{
	atomic_fetch_add(&b->charged, bytes);
	atomic_fetch_add(&s->buffer_bytes, bytes);
	if (b->usage)
		atomic_fetch_add(&b->usage->buffer_bytes, bytes);
	atomic_fetch_add(&s->env->counters->buffer_bytes_live, bytes);
}

/* Puts a new buffer in its slot and counts it (its bytes are charged by
 * the caller). */
static void buffer_install(struct session *s, int64_t slot, struct buffer *b, uint32_t flags)
{
	struct buffer_slot *e = &s->slots[slot];
	e->gen++; /* fresh slots start at generation 1; a spent one was retired */
	atomic_store(&b->refs, 1);
	b->handle = (e->gen << HANDLE_SLOT_BITS) | (uint32_t)(slot + 1);
	b->flags = flags;
	b->owner = s;
	b->usage = s->usage;
	if (s->env->res) {
		residency_data_init(s->env->res, &b->data, b->base, atomic_load(&b->extent),
		                    b->handle, flags & (TDM_BUF_WEIGHTS | TDM_BUF_KV));
		b->data.scratch = flags & TDM_BUF_SCRATCH;
	}
	e->b = b;
	s->nbufs_live++;
	atomic_fetch_add(&s->buffers_count, 1);
	if (b->usage)
		atomic_fetch_add(&b->usage->buffers, 1);
	atomic_fetch_add(&s->env->counters->buffers_live, 1);
}

int session_buffer_alloc(struct session *s, uint64_t bytes, uint32_t flags, uint32_t *handle,
                         int *fd_out)
{
	size_t mapped;
	struct buffer *b;
	int64_t slot;
	int fd;

	if (bytes == 0 || (flags & ~TDM_BUF_FLAGS_ALL))
		return -TDM_EINVAL;
	if (!quota_room(s, bytes, true))
		return -TDM_EQUOTA;
	if (bytes > SIZE_MAX - (size_t)sysconf(_SC_PAGESIZE))
		return -TDM_ENOMEM;
	if (!mapping_take(s->env))
		return -TDM_EQUOTA;
	slot = slot_take(s);
	if (slot < 0) {
		mapping_give(s->env);
		return (int)slot;
	}
	b = calloc(1, sizeof(*b));
	mapped = page_round(bytes);
	fd = b ? sealed_memfd("tandem-buffer", mapped) : -1;
	if (fd < 0) {
		int err = !b || errno == ENOMEM || errno == ENOSPC ? -TDM_ENOMEM : -TDM_ESYS;
		free(b);
		slot_give(s, (uint32_t)slot);
		mapping_give(s->env);
		return err;
	}
	b->base = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (b->base == MAP_FAILED) {
		close(fd);
		free(b);
		slot_give(s, (uint32_t)slot);
		mapping_give(s->env);
		return -TDM_ENOMEM;
	}
	b->bytes = bytes;
	b->mapped = mapped;
	atomic_store(&b->extent, bytes);
	buffer_install(s, slot, b, flags);
	charge(s, b, bytes);
	*handle = b->handle;
	*fd_out = fd;
	return 0;
}

static struct buffer_slot *slot_of(struct session *s, uint32_t handle);

/* Address space one session may reserve for growable buffers in all: it
 * costs the daemon page tables only, but is finite (47 bits). */
#define SESSION_RESERVE_MAX (UINT64_C(4) << 40)
/* Smallest chunk (the step is geometric: common/grow.h), and the most
 * chunks (mappings) one buffer may have. */
#define GROW_MIN_CHUNK (UINT64_C(64) << 10)
#define GROW_MAX_CHUNKS 4096u

int session_buffer_reserve(struct session *s, uint64_t capacity, uint32_t flags, uint32_t *handle)
{
	if (capacity == 0 || (flags & ~TDM_BUF_FLAGS_ALL) || !(flags & TDM_BUF_KV) ||
	    (flags & TDM_BUF_SCRATCH))
		return -TDM_EINVAL;
	if (capacity > SESSION_RESERVE_MAX ||
	    atomic_load(&s->reserved_va) + page_round(capacity) > SESSION_RESERVE_MAX)
		return -TDM_EQUOTA;
	if (!quota_room(s, 0, true))
		return -TDM_EQUOTA;
	if (!mapping_take(s->env))
		return -TDM_EQUOTA;
	int64_t slot = slot_take(s);
	if (slot < 0) {
		mapping_give(s->env);
		return (int)slot;
	}
	struct buffer *b = calloc(1, sizeof(*b));
	size_t mapped = page_round(capacity);
	/* Address space only: no access, no swap reserved. Chunks are mapped
	 * over it with MAP_FIXED as the client declares use. */
	void *base = b ? mmap(NULL, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
	                      -1, 0)
	               : MAP_FAILED;
	if (base == MAP_FAILED) {
		free(b);
		slot_give(s, (uint32_t)slot);
		mapping_give(s->env);
		return -TDM_ENOMEM;
	}
	b->base = base;
	b->bytes = capacity;
	b->mapped = mapped;
	b->growable = true;
	atomic_fetch_add(&s->reserved_va, mapped);
	buffer_install(s, slot, b, flags);
	if (s->env->res)
		residency_data_set_growable(s->env->res, &b->data, capacity);
	*handle = b->handle;
	return 0;
}

int session_buffer_grow(struct session *s, uint32_t handle, uint64_t used,
                        struct tdm_buf_grow_reply *r, int *fd_out)
{
	struct buffer_slot *e = slot_of(s, handle);
	*fd_out = -1;
	if (!e)
		return -TDM_EHANDLE;
	struct buffer *b = e->b;
	uint64_t declared = atomic_load(&b->extent);
	if (!b->growable || used < declared)
		return -TDM_EINVAL;
	if (used > b->bytes)
		return -TDM_ERANGE;
	r->chunk_off = r->chunk_bytes = 0;
	if (used > b->backed) {
		uint64_t need = page_round(used);
		uint64_t chunk =
		        grow_step(b->backed, need, page_round(1), GROW_MIN_CHUNK, b->mapped);
		if (!quota_room(s, chunk, false))
			chunk = need - b->backed; /* the geometric step is a comfort only */
		if (!quota_room(s, chunk, false)) {
			log_warn("session %u: buffer %u: backing %llu bytes for a use of %llu "
			         "would pass "
			         "the buffer quota (%llu bytes charged to the client of %llu)",
			         s->id, handle, (unsigned long long)need, (unsigned long long)used,
			         (unsigned long long)atomic_load(&s->buffer_bytes),
			         (unsigned long long)s->env->cfg->buffer_quota_bytes);
			return -TDM_EQUOTA;
		}
		if (b->nchunks >= GROW_MAX_CHUNKS || !mapping_take(s->env))
			return -TDM_EQUOTA;
		/* Sealed against growing and shrinking, like any buffer: the
		 * client can touch no page it was not given, and never make one
		 * the daemon maps vanish. */
		int fd = sealed_memfd("tandem-kv-chunk", chunk);
		if (fd < 0) {
			mapping_give(s->env);
			return errno == ENOMEM || errno == ENOSPC ? -TDM_ENOMEM : -TDM_ESYS;
		}
		void *at = (char *)b->base + b->backed;
		if (mmap(at, chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != at) {
			close(fd);
			mapping_give(s->env);
			return -TDM_ENOMEM;
		}
		if (s->env->res)
			residency_data_pin(s->env->res, &b->data, b->backed, chunk);
		r->chunk_off = b->backed;
		r->chunk_bytes = chunk;
		b->backed += chunk;
		b->nchunks++;
		charge(s, b, chunk);
		*fd_out = fd;
	}
	/* Residency first: a task admitted against the new extent must find
	 * its range in the validity map (and replicas grown to it). */
	if (s->env->res)
		residency_data_grow(s->env->res, &b->data, used);
	atomic_store(&b->extent, used);
	r->used = used;
	r->backed = b->backed;
	return 0;
}

static struct buffer_slot *slot_of(struct session *s, uint32_t handle)
{
	uint32_t slot = (handle & HANDLE_SLOT_MASK);
	if (slot == 0 || slot > s->slots_used)
		return NULL;
	struct buffer_slot *e = &s->slots[slot - 1];
	if (!e->b || e->b->handle != handle)
		return NULL;
	return e;
}

struct buffer *session_buffer_at(struct session *s, uint32_t i)
{
	return i < s->slots_used ? s->slots[i].b : NULL;
}

struct buffer *session_buffer_lookup(struct session *s, uint32_t handle)
{
	struct buffer_slot *e = slot_of(s, handle);
	return e ? e->b : NULL;
}

/* tokens generated so far by admitted buffer b */
static uint32_t kv_generated(const struct buffer *b)
{
	uint64_t tokens = atomic_load(&b->extent) / b->kv_bytes_per_token;
	uint64_t g = tokens > b->kv_context ? tokens - b->kv_context : 0;
	return g < b->kv_max_new ? (uint32_t)g : b->kv_max_new;
}

int session_buffer_free(struct session *s, uint32_t handle)
{
	struct buffer_slot *e = slot_of(s, handle);
	if (!e)
		return -TDM_EHANDLE;
	struct buffer *b = e->b;
	if (b->kv_tier) { /* a request ended: its length joins the history */
		if (!s->kv_hist)
			s->kv_hist = calloc(1, sizeof(*s->kv_hist));
		if (s->kv_hist)
			kv_hist_add(s->kv_hist, kv_generated(b));
	}
	slot_give(s, (uint32_t)(e - s->slots));
	s->nbufs_live--;
	buffer_unref(b); /* graphs in flight keep their own references */
	return 0;
}

static const struct kv_hist no_history;

static struct kv_req kv_req_of(const struct session *s, const struct buffer *b)
{
	uint32_t g = kv_generated(b);
	const struct kv_hist *h = s->kv_hist ? s->kv_hist : &no_history;
	uint64_t used = atomic_load(&b->extent);
	uint64_t ctx = (uint64_t)b->kv_context * b->kv_bytes_per_token;
	return (struct kv_req){ .used = used > ctx ? used : ctx,
		                .bytes_per_token = b->kv_bytes_per_token,
		                .remaining = kv_predict_remaining(h, g, b->kv_max_new - g) };
}

static uint64_t peak_of(const struct kv_req *reqs, size_t n, const struct kv_req *extra,
                        struct kv_req *scratch)
{
	memcpy(scratch, reqs, n * sizeof(*reqs));
	if (extra)
		scratch[n++] = *extra;
	return kv_peak(scratch, n);
}

static uint64_t room(uint64_t budget, uint64_t peak)
{
	return budget > peak ? budget - peak : 0;
}

int session_kv_admit(struct session *s, const struct tdm_kv_admit_req *req,
                     struct tdm_kv_admit_reply *r)
{
	const struct daemon_config *cfg = s->env->cfg;
	struct buffer *b = NULL;

	memset(r, 0, sizeof(*r));
	if (req->reserved[0] || req->reserved[1])
		return -TDM_EPROTO;
	if (req->tier > TDM_TIER_HOST)
		return -TDM_EINVAL;
	if (!req->handle) {
		if (req->bytes_per_token || req->context_tokens || req->max_new_tokens || req->tier)
			return -TDM_EINVAL;
	} else {
		b = session_buffer_lookup(s, req->handle);
		if (!b)
			return -TDM_EHANDLE;
		if (!b->growable || !req->bytes_per_token || !req->context_tokens ||
		    !req->max_new_tokens)
			return -TDM_EINVAL;
		uint64_t tokens = (uint64_t)req->context_tokens + req->max_new_tokens;
		if (req->bytes_per_token > b->bytes || tokens > b->bytes / req->bytes_per_token)
			return -TDM_ERANGE;
	}

	/* This client's admitted requests, b aside, and what they hold. */
	size_t n = 0, ndev = 0;
	for (uint32_t i = 0; i < s->slots_used; i++) {
		struct buffer *o = s->slots[i].b;
		n += o && o != b && o->kv_tier;
	}
	struct kv_req *all = calloc(2 * n + 2, sizeof(*all));
	struct kv_req *dev = calloc(n + 1, sizeof(*dev));
	struct kv_req *scratch = calloc(n + 1, sizeof(*scratch));
	if (!all || !dev || !scratch) {
		free(all);
		free(dev);
		free(scratch);
		return -TDM_ENOMEM;
	}
	n = 0;
	uint64_t admitted_charged = 0, dev_resident = 0;
	for (uint32_t i = 0; i < s->slots_used; i++) {
		struct buffer *o = s->slots[i].b;
		if (!o || o == b || !o->kv_tier)
			continue;
		all[n++] = kv_req_of(s, o);
		admitted_charged += atomic_load(&o->charged);
		if (o->kv_tier == TDM_TIER_DEVICE) {
			dev[ndev++] = all[n - 1];
			dev_resident += atomic_load(&o->extent);
		}
	}

	/* Host: every KV is backed there, so the quota bounds them all; what
	 * is not admitted KV is taken off it. Devices: the room left on every
	 * device node, plus what this client's device-tier KV holds there. */
	uint64_t b_charged = b ? atomic_load(&b->charged) : 0;
	uint64_t other = atomic_load(&s->buffer_bytes) - admitted_charged - b_charged;
	uint64_t host_budget = room(cfg->buffer_quota_bytes, other);
	const struct uid_usage *u = s->usage;
	if (u && u->limited) {
		uint64_t uid_other = atomic_load(&u->buffer_bytes) - admitted_charged - b_charged;
		uint64_t uid_room = room(uid_buffer_quota(u, cfg), uid_other);
		if (uid_room < host_budget)
			host_budget = uid_room;
	}
	uint64_t dev_budget = 0;
	if (s->env->res && residency_has_devices(s->env->res)) {
		uint64_t cap = 0, used = 0;
		for (unsigned k = 1; k < s->env->res->nnodes; k++) {
			struct res_node_stats st;
			residency_node_stats(s->env->res, k, &st);
			cap += st.cap;
			used += st.used;
		}
		if (b && b->kv_tier == TDM_TIER_DEVICE)
			dev_resident += atomic_load(&b->extent);
		/* What the devices hold for others (weights, other clients):
		 * this client's device-tier KV, resident or not, is counted by
		 * its predicted peak instead. */
		dev_budget = room(cap, room(used, dev_resident));
	}

	int err = 0;
	uint64_t host_peak, dev_peak;
	if (!b) {
		host_peak = peak_of(all, n, NULL, scratch);
		dev_peak = peak_of(dev, ndev, NULL, scratch);
		r->peak_bytes = host_peak;
	} else {
		uint32_t was = b->kv_tier, was_context = b->kv_context, was_max_new = b->kv_max_new;
		uint64_t was_bpt = b->kv_bytes_per_token;
		b->kv_tier = TDM_TIER_HOST; /* the least it gets once admitted */
		b->kv_context = req->context_tokens;
		b->kv_max_new = req->max_new_tokens;
		b->kv_bytes_per_token = req->bytes_per_token;
		struct kv_req me = kv_req_of(s, b);
		r->predicted_new_tokens = me.remaining;
		host_peak = peak_of(all, n, &me, scratch);
		dev_peak = peak_of(dev, ndev, &me, scratch);
		if (host_peak > host_budget) {
			/* As it was; the client queues the request. */
			b->kv_tier = was;
			b->kv_context = was_context;
			b->kv_max_new = was_max_new;
			b->kv_bytes_per_token = was_bpt;
			err = -TDM_EQUOTA;
		} else if (req->tier != TDM_TIER_HOST && dev_peak <= dev_budget) {
			b->kv_tier = TDM_TIER_DEVICE;
		}
		if (b->kv_tier != TDM_TIER_DEVICE)
			dev_peak = peak_of(dev, ndev, NULL, scratch);
		r->tier = err ? 0 : b->kv_tier;
		r->peak_bytes = r->tier == TDM_TIER_DEVICE ? dev_peak : host_peak;
	}
	r->history = s->kv_hist ? s->kv_hist->n : 0;
	r->device_free_bytes = room(dev_budget, dev_peak);
	r->host_free_bytes = room(host_budget, host_peak);
	free(all);
	free(dev);
	free(scratch);
	return err;
}

void buffer_unref(struct buffer *b)
{
	if (atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	struct session *s = b->owner;
	if (s->env->res)
		residency_data_fini(s->env->res, &b->data);
	munmap(b->base, b->mapped); /* a growable one's chunks with its reservation */
	if (b->growable)
		atomic_fetch_sub(&s->reserved_va, b->mapped);
	for (uint32_t i = 0; i <= b->nchunks; i++)
		mapping_give(s->env);
	uint64_t charged = atomic_load(&b->charged);
	atomic_fetch_sub(&s->buffer_bytes, charged);
	atomic_fetch_sub(&s->buffers_count, 1);
	if (b->usage) {
		atomic_fetch_sub(&b->usage->buffer_bytes, charged);
		atomic_fetch_sub(&b->usage->buffers, 1);
	}
	atomic_fetch_sub(&s->env->counters->buffers_live, 1);
	atomic_fetch_sub(&s->env->counters->buffer_bytes_live, charged);
	free(b);
}

/* ---- graphs and completions ------------------------------------------------ */

/* The graph's buffer references: dropped when the graph is done, before its
 * completion is posted, so a client that frees a buffer once it has the
 * completion finds the bytes back in its quota. */
static void dgraph_release_buffers(struct dgraph *g)
{
	if (g->buffers_released)
		return;
	g->buffers_released = true;
	for (uint32_t i = 0; i < g->nbufs; i++)
		buffer_unref(g->bufs[i]);
	g->nbufs = 0;
}

/* The graph and task counts: given back as the completion goes into the
 * ring (and before the client can see it), so that a client that never
 * reaps cannot have more graphs waiting than its quota allows. */
static void dgraph_release_counts(struct dgraph *g)
{
	struct session *s = g->s;
	if (g->counts_released)
		return;
	g->counts_released = true;
	if (g->reserved_tasks) {
		atomic_fetch_sub(&s->tasks_in_flight, g->reserved_tasks);
		atomic_fetch_sub(&s->env->counters->session_tasks_in_flight, g->reserved_tasks);
		g->reserved_tasks = 0;
	}
	atomic_fetch_sub(&s->graphs_in_flight, 1);
}

void dgraph_destroy(struct dgraph *g)
{
	struct session *s = g->s;
	dgraph_release_buffers(g);
	dgraph_release_counts(g);
	atomic_fetch_sub(&s->graphs_unposted, 1);
	engine_graph_free_arrays(&g->g);
	free(g->bufs);
	free(g);
	session_unref(s);
}

static uint32_t cq_space(struct session *s)
{
	uint32_t head = ring_load_acquire(&s->hdr->cq_head);
	uint32_t used = s->cq_tail - head;
	if (used > s->cq_entries) {
		/* Moved backwards or past our tail: never trust it again. */
		if (!atomic_exchange(&s->cq_broken, true)) {
			atomic_fetch_add(&s->env->counters->protocol_errors, 1);
			session_fail(s, "completion head moved outside the ring");
		}
		return 0;
	}
	return s->cq_entries - used;
}

bool session_cq_room(struct session *s)
{
	/* Without cq_lock: a stale tail only makes a needless flush. */
	uint32_t tail = __atomic_load_n(&s->hdr->cq_tail, __ATOMIC_RELAXED);
	return tail - ring_load_acquire(&s->hdr->cq_head) < s->cq_entries;
}

static void cq_put(struct session *s, const struct tdm_cqe *cqe)
{
	s->cq[s->cq_tail & (s->cq_entries - 1)] = *cqe;
	s->cq_tail++;
}

static void fill_task_info(const struct dgraph *g, uint32_t i, struct tdm_cqe *c)
{
	const struct engine_task *t = &g->g.tasks[i];
	memset(c, 0, sizeof(*c));
	c->op = TDM_CQE_TASK_INFO;
	c->device = t->device;
	c->status = t->status;
	c->cookie = g->g.cookie;
	c->task_index = i;
	c->queued_ns = t->queued_ns;
	c->start_ns = t->start_ns;
	c->end_ns = t->end_ns;
	c->predicted_ns = t->pred_ns;
	c->predicted_spread_ns = t->pred_spread_ns;
}

/* Writes waiting completions while there is room. Caller holds cq_lock.
 * Graphs fully posted are moved to *done for release after unlocking. */
static void flush_locked(struct session *s, struct dgraph **done)
{
	uint32_t space = cq_space(s);
	for (;;) {
		while (s->errors_head && space) {
			struct pending_error *e = s->errors_head;
			cq_put(s, &e->cqe);
			space--;
			s->errors_head = e->next;
			if (!s->errors_head)
				s->errors_tail = NULL;
			s->nerrors_pending--;
			free(e);
		}
		while (!s->errors_head && s->pending_head && space) {
			struct dgraph *g = s->pending_head;
			struct tdm_cqe c;
			if (g->g.flags & TDM_GRAPH_TASK_INFO) {
				while (g->info_posted < g->g.ntasks && space) {
					fill_task_info(g, g->info_posted++, &c);
					cq_put(s, &c);
					space--;
				}
				if (!space)
					break;
			}
			memset(&c, 0, sizeof(c));
			c.op = TDM_CQE_GRAPH_DONE;
			c.status = atomic_load(&g->g.status);
			c.cookie = g->g.cookie;
			c.queued_ns = g->g.submit_ns;
			dgraph_release_counts(g); /* published below, after this */
			cq_put(s, &c);
			space--;
			s->pending_head = g->next_pending;
			if (!s->pending_head)
				s->pending_tail = NULL;
			g->next_pending = *done;
			*done = g;
		}
		bool waiting = s->errors_head || s->pending_head;
		atomic_store(&s->cq_backlog, waiting);
		if (!waiting) {
			__atomic_fetch_and(&s->hdr->daemon_flags, ~TDM_DAEMON_CQ_OVERFLOW,
			                   __ATOMIC_SEQ_CST);
			break;
		}
		/* Ask the client to ring us after it consumes, then look once
		 * more: it may have consumed before it could see the flag. */
		__atomic_fetch_or(&s->hdr->daemon_flags, TDM_DAEMON_CQ_OVERFLOW, __ATOMIC_SEQ_CST);
		space = cq_space(s);
		if (!space)
			break;
	}
	ring_store_publish(&s->hdr->cq_tail, s->cq_tail);
}

/* Wake-ups collected by a thread that holds locks (server_poll, under the
 * registry lock and a session's intake lock): they are sent once it lets
 * go. Thread-local scratch, not shared state. */
#define DEFERRED_WAKES_MAX 32
static _Thread_local struct {
	bool on;
	unsigned n;
	struct session *s[DEFERRED_WAKES_MAX];
} deferred;

static void ring_client(struct session *s)
{
	/* Never blocks: our end is our own, non-blocking. EAGAIN means bytes
	 * the client has not read are waiting, so it wakes anyway; EPIPE, that
	 * it closed its end (SIGPIPE is ignored). */
	if (write(s->bell, "", 1) < 0 && errno != EAGAIN && errno != EPIPE)
		log_debug("session %u: doorbell: %s", s->id, strerror(errno));
}

void session_wake_client_for_room(struct session *s)
{
	/* Only a client that waits for room wants to hear of it: the others
	 * sleep for completions, and a ring now would wake them for nothing. */
	if (__atomic_load_n(&s->hdr->client_flags, __ATOMIC_SEQ_CST) & TDM_CLIENT_SQ_WAIT)
		session_wake_client(s);
}

void session_wake_client(struct session *s)
{
	if (!(__atomic_load_n(&s->hdr->client_flags, __ATOMIC_SEQ_CST) & TDM_CLIENT_SLEEPING))
		return;
	if (deferred.on) {
		for (unsigned i = 0; i < deferred.n; i++)
			if (deferred.s[i] == s)
				return;
		if (deferred.n < DEFERRED_WAKES_MAX) {
			session_ref(s);
			deferred.s[deferred.n++] = s;
			return;
		}
	}
	ring_client(s);
}

void session_defer_wakes_begin(void)
{
	deferred.on = true;
}

void session_defer_wakes_end(void)
{
	deferred.on = false;
	for (unsigned i = 0; i < deferred.n; i++) {
		ring_client(deferred.s[i]);
		session_unref(deferred.s[i]);
	}
	deferred.n = 0;
}

void session_fail(struct session *s, const char *why)
{
	if (atomic_exchange(&s->proto_error, true))
		return;
	log_warn("session %u: %s: disconnecting", s->id, why);
	if (s->env->broken)
		s->env->broken(s->env->broken_ctx);
}

static void release_done(struct dgraph *done)
{
	while (done) {
		struct dgraph *next = done->next_pending;
		dgraph_destroy(done);
		done = next;
	}
}

void session_flush(struct session *s)
{
	struct dgraph *done = NULL;
	pthread_mutex_lock(&s->cq_lock);
	if (!atomic_load(&s->closed))
		flush_locked(s, &done);
	pthread_mutex_unlock(&s->cq_lock);
	session_wake_client(s);
	release_done(done);
}

bool session_errors_overflowing(struct session *s)
{
	pthread_mutex_lock(&s->cq_lock);
	bool full = s->nerrors_pending >= MAX_PENDING_ERRORS;
	pthread_mutex_unlock(&s->cq_lock);
	return full;
}

void session_post_cqe(struct session *s, const struct tdm_cqe *cqe)
{
	struct pending_error *e;
	pthread_mutex_lock(&s->cq_lock);
	if (atomic_load(&s->closed) || s->nerrors_pending >= MAX_PENDING_ERRORS) {
		/* A client that floods errors without reaping loses the excess;
		 * the server disconnects it (see session_errors_overflowing). */
		pthread_mutex_unlock(&s->cq_lock);
		return;
	}
	e = malloc(sizeof(*e));
	if (!e) {
		pthread_mutex_unlock(&s->cq_lock);
		/* The client would wait for this completion forever. */
		session_fail(s, "out of memory for a completion");
		return;
	}
	e->cqe = *cqe;
	e->next = NULL;
	if (s->errors_tail)
		s->errors_tail->next = e;
	else
		s->errors_head = e;
	s->errors_tail = e;
	s->nerrors_pending++;
	pthread_mutex_unlock(&s->cq_lock);
	session_flush(s);
}

void session_graph_done(struct session *s, struct dgraph *g)
{
	struct dgraph *done = NULL;
	dgraph_release_buffers(g);
	/* g may stay pending (no room) and be released by session_close as
	 * soon as we unlock: our own reference keeps s for the wake-up. */
	session_ref(s);
	pthread_mutex_lock(&s->cq_lock);
	if (atomic_load(&s->closed)) {
		pthread_mutex_unlock(&s->cq_lock);
		dgraph_destroy(g);
		session_unref(s);
		return;
	}
	g->next_pending = NULL;
	if (s->pending_tail)
		s->pending_tail->next_pending = g;
	else
		s->pending_head = g;
	s->pending_tail = g;
	flush_locked(s, &done);
	pthread_mutex_unlock(&s->cq_lock);
	session_wake_client(s);
	release_done(done);
	session_unref(s);
}

void session_engine_graph_done(void *ctx, struct engine_graph *eg)
{
	(void)ctx;
	struct dgraph *g = eg->owner;
	session_graph_done(g->s, g);
}

void session_close(struct session *s)
{
	struct dgraph *pending;
	struct pending_error *errs;

	atomic_store(&s->flow.canceled, 1);
	pthread_mutex_lock(&s->cq_lock);
	atomic_store(&s->closed, true);
	pending = s->pending_head;
	errs = s->errors_head;
	s->pending_head = s->pending_tail = NULL;
	s->errors_head = s->errors_tail = NULL;
	pthread_mutex_unlock(&s->cq_lock);
	while (errs) {
		struct pending_error *n = errs->next;
		free(errs);
		errs = n;
	}
	pthread_mutex_lock(&s->intake_lock);
	if (s->building) {
		dgraph_destroy(s->building);
		s->building = NULL;
	}
	for (uint32_t i = 0; i < s->slots_used; i++)
		if (s->slots[i].b)
			buffer_unref(s->slots[i].b);
	free(s->slots);
	s->slots = NULL;
	s->slots_cap = s->slots_used = s->free_head = 0;
	s->nbufs_live = 0;
	pthread_mutex_unlock(&s->intake_lock);
	/* Release waiting graphs last: each drops a session reference. */
	while (pending) {
		struct dgraph *n = pending->next_pending;
		dgraph_destroy(pending);
		pending = n;
	}
}
