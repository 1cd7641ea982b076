/* Sessions: one per connected client. A session owns the client's ring
 * region, doorbells, buffer table and the graphs it has in flight. */
#ifndef TDM_DAEMON_SESSION_H
#define TDM_DAEMON_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"
#include "engine/engine.h"
#include "graph/build.h"
#include "placement/kv_admit.h"
#include "tandem/wire.h"

struct session;

/* Daemon-wide counters, shared by every session (atomics). */
struct daemon_counters {
	_Atomic uint64_t sessions_total, sessions_live;
	_Atomic uint64_t buffers_live, buffer_bytes_live;
	_Atomic uint64_t graphs_accepted, graphs_rejected;
	_Atomic uint64_t rejected_by_field[TDM_REJECT__COUNT]; /* graphs_rejected by detail */
	_Atomic uint64_t protocol_errors;
	_Atomic uint64_t session_tasks_in_flight; /* reserved by graphs not yet posted */
	_Atomic uint64_t connections_refused; /* at accept: not allowed, or over a cap */
};

/* What one user's clients hold together (the per-uid limits). Made by the
 * event loop on a uid's first connection and kept until the daemon stops
 * (there are at most as many as there are users); the counters are
 * updated from any thread. */
struct uid_usage {
	uint32_t uid;
	bool limited; /* false for root and the daemon's own uid */
	uint32_t connections, sessions; /* event loop only */
	uint32_t recordings; /* event loop only */
	_Atomic uint64_t buffer_bytes;
	_Atomic uint32_t buffers;
	/* tandemctl uid quota: the buffer quota of this uid's clients together;
	 * 0: limits.uid_buffer_quota_bytes. */
	_Atomic uint64_t buffer_quota;
};

/* The buffer quota of u's clients together (u's own, else the configured). */
uint64_t uid_buffer_quota(const struct uid_usage *u, const struct daemon_config *cfg);

/* What a session needs from the daemon around it. */
struct session_env {
	const struct daemon_config *cfg;
	struct daemon_counters *counters;
	struct engine *engine; /* may be NULL in tests: graphs go to submit hook */
	/* Called with each accepted graph; the daemon's is engine_submit. */
	void (*submit)(void *ctx, struct engine_graph *g);
	void *submit_ctx;
	const _Atomic bool *draining; /* new graphs are refused with -TDM_ESHUTDOWN */
	struct residency *res; /* where buffers' replicas live; NULL in some tests */
	/* A session set proto_error from a thread that cannot close it: asks
	 * the event loop to drop such sessions (NULL in tests). */
	void (*broken)(void *ctx);
	void *broken_ctx;
	/* Memory mappings the daemon holds for clients (a ring or a buffer
	 * each), against mappings_cap (0: no cap). */
	_Atomic uint32_t mappings;
	uint32_t mappings_cap;
};

struct buffer {
	_Atomic uint32_t refs;
	uint32_t handle;
	uint32_t flags;
	uint64_t bytes;
	void *base;
	struct session *owner;
	struct uid_usage *usage; /* the owner's, charged for this buffer; may be NULL */
	struct res_data data; /* replicas on memory nodes */
	/* What tasks may name: [0, extent). `bytes` for a buffer allocated
	 * whole; for a growable one (session_buffer_reserve) `bytes` is the
	 * capacity and extent the use the client declared, which only goes
	 * up. The daemon never touches a byte at or past it. */
	_Atomic uint64_t extent;
	_Atomic uint64_t charged; /* counted against the quotas */
	size_t mapped; /* the daemon's mapping (a growable one's whole reservation) */
	bool growable;
	uint64_t backed; /* growable: bytes backed by chunks, [0, backed) (under intake_lock) */
	uint32_t nchunks;
	/* Admitted as a request's KV (session_kv_admit; under intake_lock):
	 * its tier (0: not admitted) and what the client said of it. */
	uint32_t kv_tier;
	uint32_t kv_context, kv_max_new;
	uint64_t kv_bytes_per_token;
};

/* A graph as the daemon holds it: the engine's graph plus what the session
 * needs to post its completion and release its resources. */
struct dgraph {
	struct engine_graph g; /* its owner is this dgraph */
	struct session *s;
	struct buffer **bufs; /* one reference each */
	uint32_t nbufs, bufs_cap;
	/* Counted against the client's quotas until the completion is in the
	 * ring (so a client that does not reap cannot pile up graphs); the
	 * buffer references go when the graph is done. */
	uint32_t reserved_tasks;
	bool counts_released, buffers_released;
	uint32_t info_posted; /* TASK_INFO completions written so far */
	/* The daemon memory its TDM_ACC partials take (at most the client's
	 * buffer quota per graph). */
	uint64_t acc_bytes;
	struct dgraph *next_pending;
};

struct pending_error {
	struct tdm_cqe cqe;
	struct pending_error *next;
};

/* A buffer handle's table slot. A slot's generation goes up with each
 * reuse; a slot whose generation would wrap is retired, so that a stale
 * handle can never name a newer buffer. Free slots form a list. */
struct buffer_slot {
	struct buffer *b;
	uint32_t gen;
	uint32_t next_free; /* slot index + 1 of the next free slot, 0: none */
};

struct session {
	_Atomic uint32_t refs;
	uint32_t id;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	struct session_env *env;
	struct uid_usage *usage; /* NULL in tests */
	struct engine_flow flow;

	/* Ring region and doorbells. Our copies of the geometry and of our own
	 * indices are the truth; the shared header is only read for the
	 * client's indices, which are validated.
	 *
	 * Nothing a client does to a doorbell (clearing O_NONBLOCK, filling it,
	 * reading it, never reading it) can make a daemon thread block:
	 *  - sq_bell, an eventfd of this session, the client writes to ring
	 *    us. The daemon never reads or writes it: an epoll set watches it
	 *    edge-triggered (every write is an edge), so its counter and its
	 *    blocking mode are the client's business only.
	 *  - bell is the write end of a pipe whose read end (bell_peer, until
	 *    the hello reply took it) is the client's; we wake a sleeping
	 *    client by writing a byte. The two ends are separate open file
	 *    descriptions and ours is non-blocking: a full pipe (a client that
	 *    does not read) answers EAGAIN, a closed one EPIPE. */
	int ring_fd, sq_bell, bell, bell_peer;
	void *ring;
	size_t ring_bytes;
	struct tdm_ring_header *hdr;
	struct tdm_sqe *sq;
	struct tdm_cqe *cq;
	uint32_t sq_entries, cq_entries;
	uint32_t sq_head; /* under intake_lock */
	uint32_t cq_tail; /* under cq_lock */

	/* Intake runs on whichever idle worker finds entries first; this lock
	 * makes it one at a time, and guards the buffer table and intake
	 * state below against the event loop (buffer requests, close). */
	pthread_mutex_t intake_lock;
	_Atomic bool proto_error; /* intake found a violation: disconnect */

	/* Buffer table (under intake_lock): the handle's low bits are its slot
	 * index + 1, the generation is above them. */
	struct buffer_slot *slots;
	uint32_t slots_cap, slots_used; /* allocated; ever used (the rest are fresh) */
	uint32_t free_head; /* slot index + 1 of the first free used slot, 0: none */
	uint32_t nbufs_live;
	_Atomic uint64_t buffer_bytes; /* quota accounting, incl. freed-but-in-use */
	_Atomic uint32_t buffers_count; /* same, in buffers */
	_Atomic uint64_t reserved_va; /* address space of growable buffers */
	/* Output lengths of this client's admitted requests so far, for
	 * predicting the next ones (under intake_lock; NULL until one ends):
	 * a client's history is its own, so no client skews another's. */
	struct kv_hist *kv_hist;
	_Atomic uint32_t tasks_in_flight;
	_Atomic uint32_t graphs_in_flight; /* quota: accepted or building, not done */
	_Atomic uint32_t graphs_unposted; /* not yet released: drain waits for these */

	/* Intake state (under intake_lock): the graph being received, its
	 * tasks so far and their dependencies. */
	struct dgraph *building;
	struct graph_build build;
	bool skipping; /* a rejected graph's entries are skipped until its END */
	uint32_t nerrors_pending;

	/* Completion posting (any thread, under cq_lock). */
	pthread_mutex_t cq_lock;
	struct dgraph *pending_head, *pending_tail;
	struct pending_error *errors_head, *errors_tail;
	_Atomic bool closed;
	_Atomic bool cq_broken; /* the client moved cq_head somewhere impossible */
	/* Completions wait for room in the ring: intake stops reading the
	 * client's submissions until they are posted. */
	_Atomic bool cq_backlog;
};

/* Creates a session with a fresh ring region (memfd, sealed) and a
 * doorbell. Holds one reference for the caller. uid: the client's
 * (SO_PEERCRED), for its [clients] settings; usage: its uid's totals
 * (may be NULL). -TDM_EQUOTA when the daemon's mapping budget is spent. */
int session_create(struct session_env *env, uint32_t id, uint32_t uid, struct uid_usage *usage,
                   struct session **out);
void session_ref(struct session *s);
void session_unref(struct session *s);
/* SIGHUP: the client's weight follows [clients] where the configured
 * value for its user changed between old and new (a weight set by
 * tandemctl stays otherwise). Its policy hint stays the one it connected
 * with. */
void session_reload_settings(struct session *s, const struct daemon_config *old,
                             const struct daemon_config *new);
/* tandemctl client weight: 1..1000, read by the fair queues at their next
 * pick; returns the previous weight. Any thread. */
uint32_t session_set_weight(struct session *s, uint32_t weight);

/* The client is gone: drop its buffers from the table, cancel its queued
 * work, stop posting completions. Takes intake_lock. Drops no reference. */
void session_close(struct session *s);

/* Buffers (caller holds intake_lock). */
int session_buffer_alloc(struct session *s, uint64_t bytes, uint32_t flags, uint32_t *handle,
                         int *fd_out);
/* A growable buffer (TDM_BUF_KV required): capacity bytes of address
 * space, nothing backed, nothing charged. Backing comes with
 * session_buffer_grow, in chunks (each a sealed memfd of its own mapped
 * at its offset, so the client cannot back more than it was given). */
int session_buffer_reserve(struct session *s, uint64_t capacity, uint32_t flags, uint32_t *handle);
/* The client uses [0, used) of growable buffer `handle` from now on. Backs
 * more when needed (geometric chunks, at most 1/32 of what is backed past
 * the need) and charges what is backed. r is filled; *fd_out is a new
 * chunk's memfd (the caller sends then closes it) or -1. -TDM_EHANDLE,
 * -TDM_EINVAL (not growable, or used below the declared use: a buffer
 * never shrinks), -TDM_ERANGE (past the capacity), -TDM_EQUOTA. */
int session_buffer_grow(struct session *s, uint32_t handle, uint64_t used,
                        struct tdm_buf_grow_reply *r, int *fd_out);
int session_buffer_free(struct session *s, uint32_t handle);
/* KV admission (caller holds intake_lock): with req->handle 0, what each
 * tier can still hold at the predicted peak of this client's admitted
 * requests; else admits growable buffer handle as a request of
 * context_tokens + at most max_new_tokens, into the device tier when the
 * devices' predicted peak has room (and the client did not ask for the
 * host), else the host tier (demoted rather than refused), or
 * -TDM_EQUOTA when even the quota cannot hold the predicted peak (queue
 * it). Again for an admitted buffer: its tier is decided anew (a request
 * the devices can no longer hold is demoted). r is filled either way. */
int session_kv_admit(struct session *s, const struct tdm_kv_admit_req *req,
                     struct tdm_kv_admit_reply *r);
struct buffer *session_buffer_lookup(struct session *s, uint32_t handle);
/* The buffer in table slot i (0 <= i < slots_used), or NULL. */
struct buffer *session_buffer_at(struct session *s, uint32_t i);
void buffer_unref(struct buffer *b);

/* Completions. session_post_cqe queues one entry (an error, a rejected
 * graph) ahead of finished graphs. */
void session_post_cqe(struct session *s, const struct tdm_cqe *cqe);
/* Rings the client's doorbell if it sleeps (after sq_head moved, say).
 * Between session_defer_wakes_begin and _end on this thread (while it holds
 * locks), the rings are collected and sent by _end instead. */
void session_wake_client(struct session *s);
/* The same after sq_head moved: only when the client waits for room. */
void session_wake_client_for_room(struct session *s);
void session_defer_wakes_begin(void);
void session_defer_wakes_end(void);
/* Whether the client consumed completions since they last backed up. */
bool session_cq_room(struct session *s);
/* Something went wrong that only a disconnect can report (a completion
 * that could not be queued): marks the session broken and asks the event
 * loop to drop it. */
void session_fail(struct session *s, const char *why);
/* The client floods entries that make errors faster than it reaps them. */
bool session_errors_overflowing(struct session *s);
void session_graph_done(struct session *s, struct dgraph *g);
/* The client consumed completions: write what waited for space. */
void session_flush(struct session *s);
/* Releases a graph that was never submitted (rejected during intake). */
void dgraph_destroy(struct dgraph *g);

/* Engine hook: graph_done -> session_graph_done. */
void session_engine_graph_done(void *ctx, struct engine_graph *g);

/* Ring access with the orderings the protocol needs. */
static inline uint32_t ring_load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
/* Sequentially consistent: a store of ours, then a load of the client's
 * "sleeping" flag, must not be reordered (the client does the mirror). */
static inline void ring_store_publish(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

#endif
