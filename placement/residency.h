/* Data residency: where each byte range of each buffer has valid copies.
 *
 * Memory node 0 is host memory (the client's shared mapping, which is the
 * buffer itself); every accelerator has a node of its own. A buffer has a
 * replica per node (device memory for the whole buffer, allocated on first
 * use), and validity is kept by byte range: a short sorted list of
 * segments, each with the mask of the nodes holding its current contents
 * (struct res_seg). Per range this is StarPU's MSI protocol: a node in a
 * segment's mask alone owns it, with others it shares it, outside it the
 * node's bytes are stale.
 *
 * Why ranges and not a valid high-water mark per replica: a pooled KV
 * buffer holds many requests' slices, each appended independently and read
 * by its own attention task, so what is valid on a node is not a prefix.
 * A buffer used whole keeps one segment (the fast paths see no difference);
 * a pool of N slices has O(N) segments at most between steps, since a read
 * of a slice that brings the missing rows merges them back.
 *
 * A task's reads get a valid copy of their ranges on its node: only the
 * segments missing there are copied (from the host, or through the host
 * from the device that holds them). Its writes make its node the only
 * holder of the written range and leave the rest of every replica alone;
 * a write-only argument (TDM_W) is overwritten whole, so its old contents
 * are not copied in. Before a graph's completion is posted, what it wrote
 * is copied back to the host (residency_flush), again only the segments
 * the host lacks.
 *
 * Device memory is capped per node. An allocation that does not fit evicts
 * least-recently-used replicas that no committed task needs (pins), writing
 * the segments only that replica holds back to the host first, so a
 * buffer's latest contents always exist somewhere.
 *
 * Growable buffers (KV caches, residency_data_set_growable): `bytes` only
 * goes up, and the range a growth adds joins the map as held by the host
 * alone (residency_data_grow). A device replica may then be smaller than
 * the buffer; it is grown before any copy into it or any task using it
 * (in place where the backend reserved it; otherwise its sole ranges are
 * written back, it is dropped and reallocated with headroom, and what the
 * task reads is copied in again). Every copy stays within the replica's
 * memory: no range past a replica's mem_bytes is ever valid on its node.
 *
 * Prefetch: a task committed to a device well before it runs may have its
 * inputs copied there early (residency_prefetch), so that the transfers
 * overlap the compute of the tasks before it. A prefetch takes only free
 * room or replicas nothing needs soon, never writes anything back and never
 * waits; the replicas it leaves for the task carry a hold (see struct
 * replica) until the task acquires them or the prefetch is dropped.
 *
 * Locking: one mutex guards every state. Copies are issued asynchronously
 * under it; the synchronous ones (write-back on eviction, fetching a
 * device-only copy for the host) wait under it. A per-buffer mask of device
 * nodes holding any valid byte lets host tasks skip the lock when the host
 * copy is the only one, which is always the case on a machine without
 * accelerators. */
#ifndef TDM_PLACEMENT_RESIDENCY_H
#define TDM_PLACEMENT_RESIDENCY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

#define RES_MAX_NODES BACKEND_MAX_NODES

struct res_data;

/* One segment of a buffer's validity map: it covers from the previous
 * segment's end (0 for the first) to `end`; `valid` is the mask of the
 * nodes holding its contents (never 0). */
struct res_seg {
	uint64_t end;
	uint32_t valid;
};

/* Segments kept in the buffer itself; more go to the heap. */
#define RES_INLINE_SEGS 2

struct replica {
	void *mem; /* device memory; NULL when not allocated (host: unused) */
	/* The bytes mem holds: the buffer's when it was allocated or last
	 * grown (plus headroom for a growable buffer's whole allocation). Once
	 * a growable buffer grew past it, the replica is grown (replica_fit)
	 * before anything is copied into it or a task uses it; no byte past it
	 * is ever valid on this node. */
	uint64_t mem_bytes;
	bool reserved; /* mem came from mem_reserve: it grows in place */
	/* Bytes of the buffer valid on this node, and those valid here only
	 * (this node owns them: evicting the replica writes them back). */
	uint64_t valid, sole;
	/* The latest copy into this replica still in flight: the ranges it
	 * brings count as valid, and a task reading here waits for it. Copies
	 * into one replica are chained (each after the one before), so this
	 * one completes after all of them. Owned by the replica. */
	struct backend_event *ready;
	const struct backend_device *ready_dev; /* the device that made it */
	uint32_t pins; /* committed tasks that use this replica */
	/* Prefetched tasks that will read this replica (residency_prefetch):
	 * one per read argument of each successful prefetch not yet consumed
	 * by residency_acquire_prefetched or released by
	 * residency_prefetch_drop. A hold keeps prefetches (which never take a
	 * held replica) and, but as the last resort, tasks about to run away
	 * from the replica's memory. It protects the memory only: a write on
	 * another node still invalidates a held replica, and the acquire that
	 * consumes the hold copies the new contents in again. A hold may sit
	 * on a replica without memory (an argument the prefetch skipped, or a
	 * replica a running task had to evict); it then keeps the memory the
	 * next allocation gives it. */
	uint32_t holds;
	struct res_data *data; /* back link for the node's LRU list */
	struct replica *lru_prev, *lru_next; /* most recent at the head */
};

/* A chunk of a growable buffer's host memory pinned for DMA. */
struct res_host_reg {
	uint64_t off;
	uint32_t nodes; /* the nodes whose device pinned it */
};

struct res_data {
	void *host;
	/* The bytes that exist: a growable buffer's declared use
	 * (residency_data_grow), which only goes up. The bytes a growth adds
	 * are a new range of the validity map held by the host only (its fresh
	 * pages, or what the client wrote there): no replica held them, and a
	 * device reading them copies them in like any missing piece. */
	uint64_t bytes;
	uint64_t capacity; /* growable: what bytes may grow to; 0: fixed */
	uint32_t id; /* for display: the client's buffer handle */
	struct residency *res; /* the residency it was initialised in */
	/* Bit n set: node n (n > 0) holds some valid bytes. 0 means the host
	 * copy is the only valid one (read without the lock on fast paths). */
	_Atomic uint32_t remote;
	/* Bit n set (n >= 0): node n holds every byte valid (lock-free reads
	 * by the placement cost model). */
	_Atomic uint32_t full;
	/* Hint for the placement policies, read and written without the lock:
	 * bit n set means a task committed to node n will read this data soon.
	 * Set and cleared by the policies; residency only initialises it to 0
	 * and clears the bit of every node other than the writer's when a task
	 * writes the data (those nodes' replicas just became stale), so that
	 * the hint follows where the current contents are. */
	_Atomic uint32_t planned;
	uint32_t registered; /* nodes whose device pinned the host memory */
	/* A growable buffer's host chunks pinned so far (residency_data_pin). */
	struct res_host_reg *regs;
	uint32_t nregs, regs_cap;
	/* The client promised not to write its view while the daemon holds
	 * the buffer (weights, KV caches): device copies outlive the graph.
	 * Otherwise the client may write between graphs, so device copies are
	 * dropped when a graph that used the buffer completes. */
	bool keep_on_devices;
	/* Scratch (TDM_BUF_SCRATCH): what a graph leaves in it is nobody's;
	 * its device copies are dropped at the graph's end without being
	 * written back, and the host copy keeps whatever it held. */
	bool scratch;
	/* Its only valid copy of some range was on a device that failed
	 * (residency_node_evacuate could not read it back): every task that
	 * reads it from now on fails with -TDM_ENODEV rather than read what
	 * the host holds there. Sticky: the client makes a new buffer. */
	_Atomic bool lost;
	/* The node a tier policy keeps this data on (residency_set_home), or
	 * RES_HOME_NONE. Eviction takes a node's replicas of data homed
	 * elsewhere (or nowhere) before those of data homed there. */
	_Atomic int home;
	/* The KV of one request, the unit a tier policy moves (set by the
	 * front end before the data's first use: session id << 32 | the
	 * client's request id); 0: none, the data is a unit of its own. */
	uint64_t request;
	/* The validity map: segs (NULL: seg_inline) holds nsegs of cap. */
	struct res_seg *segs;
	uint32_t nsegs, segs_cap;
	struct res_seg seg_inline[RES_INLINE_SEGS];
	struct replica rep[RES_MAX_NODES];
};

struct res_node {
	const struct backend_device *dev; /* NULL for the host node */
	/* dev's backend, kept: a gone node is given again only to a device of
	 * the same backend (host memory its predecessor pinned is unpinned
	 * through the new one's ops when the buffer goes). */
	const struct backend_ops *ops;
	char name[BACKEND_DEVICE_NAME_MAX];
	uint64_t cap, used;
	uint64_t evictions, writebacks;
	uint64_t bytes_in, bytes_out; /* h2d, d2h */
	/* Copies issued by residency_prefetch and their bytes (also counted in
	 * bytes_in). */
	uint64_t prefetches, prefetch_bytes;
	/* Bytes of the data homed here (residency_set_home), live or not. */
	_Atomic uint64_t home_bytes;
	/* residency_node_evacuate: the bytes it wrote back to the host or
	 * moved to another node (peer), and the buffers it found lost. */
	uint64_t evacuated_bytes, peer_bytes, lost;
	/* Evacuated for good (its device left): nothing is placed here again. */
	bool gone;
	struct replica *lru_head, *lru_tail;
};

struct residency {
	pthread_mutex_t lock;
	/* Nodes are appended at run time too (residency_add_node): a node is
	 * made whole, then counted (readers without the lock see it whole). */
	_Atomic size_t nnodes;
	struct res_node nodes[RES_MAX_NODES];
	/* Optional (set before use): told of each device-to-host copy made
	 * synchronously with nothing else to wait for, so that its time is the
	 * copy's own; the transfer model learns from it. Called under lock. */
	void (*copy_observed)(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t ns);
	void *copy_ctx;
	/* Set before use: a node evacuated for good keeps its number (the
	 * simulator's node numbers index its machine's links, so a new device
	 * must not take another's). */
	bool fresh_nodes;
};

/* One argument of a task as residency sees it. */
struct res_arg {
	struct res_data *data;
	uint64_t off, len;
	uint8_t mode; /* enum tdm_access */
};

/* Node 0 is the host. Returns the new node's number, or -TDM_ENOMEM when
 * every node is taken. cap 0 = the device's memory size. May be called
 * while tasks run (a device added at run time); buffers made before it are
 * not pinned for the new device (their copies go through pageable
 * memory). The number of a node evacuated for good is given again to a
 * device of the same backend (its statistics start over), unless
 * fresh_nodes. */
void residency_init(struct residency *r);
int residency_add_node(struct residency *r, const struct backend_device *dev, uint64_t cap);
/* The same device come back takes the node it had: node, when it is gone
 * and of dev's backend; -TDM_EBUSY otherwise (another device took it). */
int residency_take_node(struct residency *r, const struct backend_device *dev, uint64_t cap,
                        unsigned node);
void residency_fini(struct residency *r);
/* The devices are about to go: from now on only the host node is known,
 * and buffers freed later release no device memory. */
void residency_close(struct residency *r);
static inline bool residency_has_devices(const struct residency *r)
{
	return r->nnodes > 1;
}

/* A new buffer: valid on the host only; host memory is pinned for DMA on
 * the devices that can. */
void residency_data_init(struct residency *r, struct res_data *d, void *host, uint64_t bytes,
                         uint32_t id, bool keep_on_devices);
/* A growable buffer of `capacity` (call after residency_data_init with 0
 * bytes): its device replicas are reserved for capacity and grown in place
 * where the backend can (mem_reserve/mem_grow), else reallocated as it
 * grows. Its host memory is pinned for DMA chunk by chunk as it is backed
 * (residency_data_pin), never the whole reservation: registering pins,
 * and so backs, every page of a range. */
void residency_data_set_growable(struct residency *r, struct res_data *d, uint64_t capacity);
/* Host memory [off, off + bytes) of a growable buffer was just backed: pin
 * it for the devices that can (best effort: copies from a range that is
 * not pinned, or that spans two chunks, go through pageable memory). */
void residency_data_pin(struct residency *r, struct res_data *d, uint64_t off, uint64_t bytes);
/* A growable buffer's declared use went up to `bytes` (a smaller value
 * changes nothing). The new range [old, bytes) is valid on the host only:
 * a node that held every byte before holds every byte no longer (its
 * `full` bit clears), and the host's counts grow by the new bytes. Device
 * replicas keep their memory and what they validly held; each is grown
 * when it is next used. */
void residency_data_grow(struct residency *r, struct res_data *d, uint64_t bytes);
/* The buffer is gone (no task uses it): frees its device replicas. */
void residency_data_fini(struct residency *r, struct res_data *d);

/* ---- tiers ------------------------------------------------------------------------
 *
 * A tier policy (policies/llm.c) says which node a buffer lives on: its
 * home. Residency does not move anything when the home changes; it only
 * lets a node's eviction keep the data homed there as long as anything
 * else can go. What moves, and when, is up to where tasks run: a reader
 * on the new home copies in only the pieces missing there, overlapped
 * with the work before it (residency_prefetch), and a stale replica on
 * the old home stays until its memory is wanted (so moving back costs
 * only what changed meanwhile). */
#define RES_HOME_NONE (-1)
void residency_set_home(struct res_data *d, int node);
int residency_home(const struct res_data *d);
/* Bytes of the buffers now homed on `node` (a buffer freed leaves it). */
uint64_t residency_home_bytes(struct residency *r, unsigned node);

/* Makes every argument valid on `node` for a task about to run there and
 * pins the replicas. For a device node, copies are issued asynchronously:
 * waits[] (room for 2 * nargs) receives the events the task must wait for
 * (not owned by the caller), mem[]/off[] where each argument lives. For the
 * host node, it returns once the host copies are valid. -TDM_ENOMEM: the
 * node has no room now (nothing is left pinned). To make room it evicts
 * unpinned replicas, least recently used first, those held for prefetched
 * tasks only when no other will do (the task about to run comes first; the
 * prefetched task then copies its data again when it runs). */
int residency_acquire(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                      struct backend_event **waits, size_t *nwaits, void **mem, uint64_t *off);

/* ---- prefetch --------------------------------------------------------------------
 *
 * The contract: the caller (the worker of `node`, which alone releases the
 * node's copy events) calls residency_prefetch for a task committed to
 * `node`, then for each call that returned 0 exactly one of
 *   residency_acquire_prefetched(node, same args) that returns 0, when the
 *     task runs on `node` (it turns the holds into the task's pins, which
 *     residency_release drops as usual), or
 *   residency_prefetch_drop(node, same args), when the task runs elsewhere,
 *     is canceled or fails before it acquired.
 * An acquire_prefetched that fails (-TDM_ENOMEM, -TDM_EDEVICE) keeps the
 * holds: retry it, or drop them. Holds must be gone before the buffers'
 * residency_data_fini. "Same args" means the same list: one hold is counted
 * per argument with TDM_R in its mode, whether the prefetch fetched it,
 * found it there or skipped it, so the counts balance exactly (a hold
 * released that does not exist is logged and ignored). On the host node
 * (node 0) the three calls do nothing beyond residency_acquire. */

/* Issues, without waiting, the copies of the pieces of the task's read
 * ranges (mode & TDM_R) not valid on device node `node` (a copy in flight
 * counts as valid), from the host copy, and holds every read argument's
 * replica on `node`. Best effort: an argument is skipped (nothing copied,
 * still held) when it would need memory the node can give only by evicting
 * a pinned or held replica, an owner (write-back) or a replica whose copy
 * is still in flight, or when the host lacks a missing piece too (reading
 * it back would be a synchronous copy). Write-only arguments are not fetched. *bytes_issued
 * (may be NULL) receives the bytes copied. 0, or -TDM_EDEVICE when a copy
 * failed to issue: then no hold is left and the caller calls nothing else
 * (copies issued before it stay valid, unheld). */
int residency_prefetch(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                       uint64_t *bytes_issued);
/* Releases the holds one successful residency_prefetch of these args on
 * `node` placed; the replicas stay, evictable again. */
void residency_prefetch_drop(struct residency *r, unsigned node, const struct res_arg *args,
                             size_t nargs);
/* residency_acquire for a task that was prefetched to `node`: its holds
 * become its pins (released by residency_release as usual). Data the
 * prefetch brought is used as it is (its copy's event, if still in flight,
 * goes to waits[]); an argument the prefetch skipped, or whose replica a
 * write elsewhere invalidated since, is copied now as residency_acquire
 * does, so the task always reads the current contents. On error the holds
 * stay (see the contract above). */
int residency_acquire_prefetched(struct residency *r, unsigned node, const struct res_arg *args,
                                 size_t nargs, struct backend_event **waits, size_t *nwaits,
                                 void **mem, uint64_t *off);
/* The task finished on `node`. ok: its writes make `node` the owner. Not
 * ok: what it wrote there is garbage and is dropped; other copies stay. */
void residency_release(struct residency *r, unsigned node, const struct res_arg *args, size_t nargs,
                       bool ok);
/* A graph completed: makes the host copy of every data valid (write-back)
 * and drops the device copies of data without keep_on_devices, which the
 * client may now overwrite. 0 or -TDM_EDEVICE. */
int residency_flush(struct residency *r, struct res_data *const *datas, size_t n);

/* A device leaves (engine_device_remove): every replica on `node` goes.
 * What only that replica holds is first copied out, device to device
 * (copy_peer) to the node the buffer is homed on when both devices can,
 * else back to the host; a range that cannot be read back marks its
 * buffer lost (res_data.lost). The node is then gone: nothing is placed
 * there again (its cap is 0). No task may use the node meanwhile (its
 * worker has finished: nothing is pinned there). 0, -TDM_EINVAL (not a
 * device node), or -TDM_ENODEV when some buffer was lost. */
int residency_node_evacuate(struct residency *r, unsigned node);
/* A device node's memory budget at run time. Shrinking evicts unpinned
 * replicas, least recently used first, writing back what only they hold,
 * until the node's use fits (what pinned replicas hold stays until it is
 * unpinned: the next allocation there evicts it). Growing lets the next
 * allocations use more (never past the device's memory). 0, -TDM_EINVAL
 * (not a device node, or gone), -TDM_EBUSY (still over: pinned). */
int residency_set_budget(struct residency *r, unsigned node, uint64_t bytes);

/* Names of the nodes holding valid bytes of d, comma-separated: "host",
 * "host,clcpu0", "cuda0*" (* = owner: holds bytes no other node holds),
 * "host,cuda0~" (~ = part of the buffer only). */
void residency_describe(struct residency *r, struct res_data *d, char *out, size_t outlen);

/* Bytes of [off, off + len) of d not valid on `node`: what a task reading
 * that range there has to have copied in. Never waits: answered from the
 * lock-free masks when they tell (node holds all or nothing), else under
 * the lock if it is free at once, else len (conservative: it may charge a
 * copy that is not needed, never the reverse). */
uint64_t residency_missing(struct res_data *d, unsigned node, uint64_t off, uint64_t len);

struct res_node_stats {
	char name[BACKEND_DEVICE_NAME_MAX];
	uint64_t cap, used, evictions, writebacks, bytes_in, bytes_out;
	uint64_t prefetches, prefetch_bytes;
	uint64_t evacuated_bytes, peer_bytes, lost; /* residency_node_evacuate */
	bool gone;
};
void residency_node_stats(struct residency *r, unsigned node, struct res_node_stats *out);

#endif
