/* tandem wire format: shared by libtandem and tandemd.
 *
 * Two channels connect a client to the daemon:
 *  - a Unix stream socket for the slow path (hello, buffers, kernel lookup,
 *    control requests), framed as struct tdm_msg_hdr + payload, with file
 *    descriptors passed by SCM_RIGHTS;
 *  - a shared-memory ring region (one memfd per session, created and sealed by
 *    the daemon) holding a submission ring (client produces, daemon consumes)
 *    and a completion ring (daemon produces, client consumes), plus two
 *    doorbells per session: an eventfd the client writes to ring the
 *    daemon (new entries, completions consumed; the daemon only watches it,
 *    it never reads it), and the read end of a pipe whose write end (the
 *    daemon's, non-blocking) gets a byte to wake a sleeping client.
 *
 * Everything the daemon reads from the ring region or the socket is untrusted:
 * it copies an entry once and validates every field of the copy.
 */
#ifndef TANDEM_WIRE_H
#define TANDEM_WIRE_H

#include <stdint.h>

#define TDM_WIRE_MAGIC 0x54444d31u /* "TDM1" */
#define TDM_WIRE_VERSION 2u /* 2: doorbells of their own per session */

#define TDM_MAX_ARGS 8 /* buffer arguments per task */
#define TDM_MAX_SCALARS 8 /* scalar parameters per task */
#define TDM_TASK_INLINE_EDGES 8 /* predecessor indices inline in a task entry */
#define TDM_EDGES_PER_SQE 76
#define TDM_KERNEL_NAME_MAX 32

/* ---- socket messages ---------------------------------------------------- */

enum tdm_msg_type {
	TDM_MSG_HELLO = 1, /* client -> daemon: struct tdm_hello */
	TDM_MSG_HELLO_REPLY, /* daemon -> client: struct tdm_hello_reply + 3 fds (ring, sq bell,
	                        bell) */
	TDM_MSG_BUF_ALLOC, /* client: struct tdm_buf_alloc_req */
	TDM_MSG_BUF_ALLOC_REPLY, /* daemon: struct tdm_buf_alloc_reply (+ memfd on success) */
	TDM_MSG_BUF_FREE, /* client: struct tdm_buf_free_req */
	TDM_MSG_BUF_FREE_REPLY, /* daemon: struct tdm_status_reply */
	TDM_MSG_KERNEL_LOOKUP, /* client: struct tdm_kernel_lookup_req */
	TDM_MSG_KERNEL_REPLY, /* daemon: struct tdm_kernel_lookup_reply */
	TDM_MSG_CTL_STATUS, /* control: no payload */
	TDM_MSG_CTL_REPLY, /* daemon: int32 status + JSON text */
	TDM_MSG_CTL_MODELS, /* control: no payload; reply: the cost models */
	TDM_MSG_CTL_CALIBRATE, /* control: no payload; reply: the new calibration */
	/* control: uint32 nfds (1: trace, 2: trace + Chrome trace) and that
	 * many descriptors (SCM_RIGHTS) of regular files open for writing;
	 * reply: {"recording":true}, or -TDM_EBUSY when one already runs. The
	 * recording lasts until TRACE_STOP on the same connection (discarded
	 * when the connection closes first, ended with a reply of its own when
	 * the daemon stops). */
	TDM_MSG_CTL_TRACE_START,
	/* control: no payload; reply: {graphs, tasks, dropped, bytes, ...} */
	TDM_MSG_CTL_TRACE_STOP,
	/* control: no payload (reply: the machine description, TOML text), or
	 * uint32 nfds = 1 and a regular file to write it to (reply: {bytes}) */
	TDM_MSG_CTL_EXPORT,
	/* client: struct tdm_buf_reserve_req; reply BUF_RESERVE_REPLY, struct
	 * tdm_buf_alloc_reply (bytes: the capacity), no descriptor: nothing is
	 * backed yet. */
	TDM_MSG_BUF_RESERVE,
	TDM_MSG_BUF_RESERVE_REPLY,
	/* client: struct tdm_buf_grow_req; reply BUF_GROW_REPLY, struct
	 * tdm_buf_grow_reply, plus the memfd of a new chunk when chunk_bytes
	 * is not 0 (sealed against growing and shrinking): the client maps it
	 * at chunk_off of its reservation. */
	TDM_MSG_BUF_GROW,
	TDM_MSG_BUF_GROW_REPLY,
	/* client: struct tdm_kv_admit_req; reply KV_ADMIT_REPLY, struct
	 * tdm_kv_admit_reply */
	TDM_MSG_KV_ADMIT,
	TDM_MSG_KV_ADMIT_REPLY,
	/* control, administrators only: struct tdm_ctl_device; reply CTL_REPLY
	 * (docs/elastic.md): on success {"op", "device": {id, name, state,
	 * ...}, ...}; on failure {"error": text, "reason": word} with reason
	 * one of TDM_CTL_REASON_*. ADD of a device whose model has no
	 * calibration, and REMOVE, answer once done (the connection waits). */
	TDM_MSG_CTL_DEVICE,
	/* control, administrators only: struct tdm_ctl_client; reply CTL_REPLY,
	 * {"op", "session" or "uid", "value", "previous"} or an error as above. */
	TDM_MSG_CTL_CLIENT,
};

#define TDM_MSG_MAX_PAYLOAD 4096u
#define TDM_CTL_REPLY_MAX (1u << 20)

struct tdm_msg_hdr {
	uint32_t type;
	uint32_t length; /* payload bytes following the header */
};

enum tdm_hello_role { TDM_ROLE_CLIENT = 1, TDM_ROLE_CONTROL = 2 };

struct tdm_hello {
	uint32_t magic;
	uint32_t version;
	uint32_t role;
	uint32_t flags; /* reserved, 0 */
};

struct tdm_hello_reply {
	uint32_t magic;
	uint32_t version;
	int32_t status; /* 0 or -TDM_E*; fds follow only when 0 */
	uint32_t session_id;
	uint32_t ring_bytes;
	uint32_t sq_entries;
	uint32_t cq_entries;
	uint32_t sq_offset;
	uint32_t cq_offset;
	uint32_t ndevices; /* device ids given at connect (GONE included); more may come */
	uint64_t buffer_quota_bytes;
	uint32_t max_tasks_per_graph;
	uint32_t reserved;
};

struct tdm_buf_alloc_req {
	uint64_t bytes;
	uint32_t flags;
	uint32_t reserved;
};

struct tdm_buf_alloc_reply {
	int32_t status;
	uint32_t handle;
	uint64_t bytes;
};

/* A growable buffer (for KV caches): `capacity` bytes of address space,
 * nothing backed until the client declares use with BUF_GROW. */
struct tdm_buf_reserve_req {
	uint64_t capacity;
	uint32_t flags; /* must include TDM_BUF_KV */
	uint32_t reserved;
};

/* Declares that [0, used) of a growable buffer is in use from now on;
 * `used` never goes down. */
struct tdm_buf_grow_req {
	uint32_t handle;
	uint32_t reserved;
	uint64_t used;
};

struct tdm_buf_grow_reply {
	int32_t status;
	uint32_t reserved;
	uint64_t used; /* as declared */
	uint64_t backed; /* bytes backed (and charged) after this request */
	uint64_t chunk_off, chunk_bytes; /* the new chunk; 0 bytes: none, no fd */
};

/* Tiers of KV memory (tdm_kv_admit_reply.tier, tdm_kv_admit_req.tier). */
#define TDM_TIER_ANY 0u
#define TDM_TIER_DEVICE 1u
#define TDM_TIER_HOST 2u

/* Admission of a request whose KV is growable buffer `handle` (0: only
 * ask what each tier can hold). */
struct tdm_kv_admit_req {
	uint32_t handle;
	uint32_t tier; /* TDM_TIER_ANY, or the tier wanted */
	uint64_t bytes_per_token;
	uint32_t context_tokens;
	uint32_t max_new_tokens;
	uint32_t reserved[2];
};

struct tdm_kv_admit_reply {
	int32_t status;
	uint32_t tier; /* where it fits at its predicted peak */
	uint32_t predicted_new_tokens;
	uint32_t history; /* output lengths the prediction rests on */
	uint64_t peak_bytes; /* predicted peak of the tier it went to, itself included */
	uint64_t device_free_bytes; /* KV each tier can still take at its predicted peak */
	uint64_t host_free_bytes;
};

/* ---- control: devices and clients at run time (docs/elastic.md) ---- */

#define TDM_DEVICE_NAME_MAX 64

enum tdm_ctl_device_op {
	TDM_DEV_ADD = 1, /* an available device (found, not in use) joins */
	TDM_DEV_DRAIN, /* no new task goes there; its queued tasks move */
	TDM_DEV_REMOVE, /* drain, then gone once idle or after a timeout */
	TDM_DEV_RESUME, /* a draining device takes tasks again */
	TDM_DEV_RESCAN, /* probe the backends again; name must be "" */
	TDM_DEV_BUDGET, /* an accelerator's memory budget: value bytes */
	TDM_DEV_OP_COUNT
};

struct tdm_ctl_device {
	uint32_t op; /* enum tdm_ctl_device_op */
	uint32_t reserved; /* 0 */
	char name[TDM_DEVICE_NAME_MAX]; /* NUL-terminated within the array */
	uint64_t value; /* BUDGET: bytes; otherwise 0 */
};

enum tdm_ctl_client_op {
	TDM_CLIENT_WEIGHT = 1, /* session id's share of every device: value 1..1000 */
	/* uid id's buffer quota (all its clients together): value bytes,
	 * 4096..2^48, or 0 for the configured limits.uid_buffer_quota_bytes */
	TDM_CLIENT_UID_QUOTA,
	TDM_CLIENT_OP_COUNT
};

struct tdm_ctl_client {
	uint32_t op; /* enum tdm_ctl_client_op */
	uint32_t id; /* WEIGHT: session id (tandemctl clients); UID_QUOTA: uid */
	uint64_t value;
};

/* The "reason" of a refused CTL_DEVICE or CTL_CLIENT request: a word a
 * program can test, next to the sentence in "error". */
#define TDM_CTL_REASON_NOT_ADMIN "not_admin"
#define TDM_CTL_REASON_BAD_REQUEST "bad_request" /* op, name, value or reserved field */
#define TDM_CTL_REASON_UNKNOWN_DEVICE "unknown_device" /* no device has that name */
#define TDM_CTL_REASON_IN_USE "in_use" /* add: the device is already in use */
#define TDM_CTL_REASON_GONE "gone" /* drain/remove/resume/budget: it left */
#define TDM_CTL_REASON_STATE "state" /* not in a state that allows it (resume of an active one) */
#define TDM_CTL_REASON_LAST_DEVICE "last_device" /* the only device taking tasks */
#define TDM_CTL_REASON_NOT_ACCELERATOR "not_accelerator" /* budget of a host device */
#define TDM_CTL_REASON_CAPACITY "capacity" /* no room for another device id or memory node */
#define TDM_CTL_REASON_BUSY "busy" /* another device change or a calibration runs */
#define TDM_CTL_REASON_UNKNOWN_CLIENT "unknown_client" /* no such session */
#define TDM_CTL_REASON_DRAINING "draining" /* the daemon stops */
#define TDM_CTL_REASON_FAILED "failed" /* the backend or the engine refused; see error */

struct tdm_buf_free_req {
	uint32_t handle;
	uint32_t reserved;
};

struct tdm_status_reply {
	int32_t status;
	uint32_t reserved;
};

struct tdm_kernel_lookup_req {
	char name[TDM_KERNEL_NAME_MAX]; /* NUL-terminated within the array */
};

struct tdm_kernel_lookup_reply {
	int32_t status;
	uint32_t kernel_id;
	uint8_t nargs;
	uint8_t nscalars;
	uint8_t arg_modes[TDM_MAX_ARGS]; /* enum tdm_access */
	uint8_t scalar_types[TDM_MAX_SCALARS]; /* enum tdm_scalar_type */
	uint8_t acc_args; /* bit i: argument i (TDM_RW) may be passed as TDM_ACC */
	uint8_t reserved[5];
};

/* ---- ring region -------------------------------------------------------- */

#define TDM_CACHELINE 64

/* Bits in tdm_ring_header.client_flags (written by the client). */
#define TDM_CLIENT_SLEEPING 1u /* blocked on the doorbell: ring it for completions */
#define TDM_CLIENT_SQ_WAIT 2u /* and it waits for room in the submission ring too */

/* Bits in tdm_ring_header.daemon_flags (written by the daemon). */
#define TDM_DAEMON_POLLING 1u /* daemon is spinning on sq_tail: no doorbell needed */
#define TDM_DAEMON_CQ_OVERFLOW                                                                     \
	2u /* completions wait for room: ring the sq doorbell after                                \
	    * consuming */

/* The header at offset 0 of the ring region. Indices are free-running
 * uint32 counters; an entry lives at index & (entries - 1). Each index is
 * written by one side only and sits on its own cache line. */
struct tdm_ring_header {
	uint32_t magic;
	uint32_t version;
	uint32_t sq_entries;
	uint32_t cq_entries;
	uint32_t sq_offset;
	uint32_t cq_offset;
	uint8_t pad0[TDM_CACHELINE - 24];
	uint32_t sq_head; /* daemon writes: entries consumed */
	uint8_t pad1[TDM_CACHELINE - 4];
	uint32_t sq_tail; /* client writes: entries published */
	uint8_t pad2[TDM_CACHELINE - 4];
	uint32_t cq_head; /* client writes: completions consumed */
	uint8_t pad3[TDM_CACHELINE - 4];
	uint32_t cq_tail; /* daemon writes: completions published */
	uint8_t pad4[TDM_CACHELINE - 4];
	uint32_t client_flags;
	uint8_t pad5[TDM_CACHELINE - 4];
	uint32_t daemon_flags;
	uint8_t pad6[TDM_CACHELINE - 4];
};

/* Submission entries. A graph is GRAPH_BEGIN, ntasks TASK entries in index
 * order (each may be followed by EDGES entries and at most one GUARD entry
 * for the same task), then GRAPH_END. Edges point only from earlier tasks to later ones, so a graph
 * cannot contain a cycle. */
enum tdm_sqe_op {
	TDM_SQE_GRAPH_BEGIN = 1,
	TDM_SQE_TASK = 2,
	TDM_SQE_EDGES = 3,
	TDM_SQE_GRAPH_END = 4,
	TDM_SQE_GUARD = 5,
};

/* Graph flags */
#define TDM_GRAPH_TASK_INFO 1u /* post one TASK_INFO completion per task */
#define TDM_GRAPH_FLAGS_ALL TDM_GRAPH_TASK_INFO

/* Which policy should place a graph (tdm_sqe_graph_begin.policy). A hint:
 * honoured when the daemon runs one of the cost-aware policies (dmda, heft,
 * peft, prio), which share their queues and can mix graphs planned either
 * way; ignored under eager, ws and fifo. */
enum tdm_policy_hint {
	TDM_POLICY_DEFAULT = 0, /* the client's setting, else the daemon's */
	TDM_POLICY_EAGER, /* any device, first come first served */
	TDM_POLICY_DMDA, /* per task: least predicted finish time, transfers included */
	TDM_POLICY_HEFT, /* whole graph planned at submission (upward ranks) */
	TDM_POLICY_PEFT, /* whole graph planned with PEFT's optimistic cost table */
	TDM_POLICY_PRIO, /* dmda placement, queues ordered by priority then deadline */
	TDM_POLICY_HINT_COUNT
};

/* TDM_ACC: the task adds its contribution to the range (out += f(in)),
 * for the arguments a kernel marks so (docs/kernels.md). Tasks that
 * accumulate into the same range are not ordered among themselves; each
 * adds into a private zeroed partial and the partials are added to the
 * range in task order once the last of them is over, so the result does
 * not depend on which finished first. */
enum tdm_access { TDM_R = 1, TDM_W = 2, TDM_RW = 3, TDM_ACC = 7 };

enum tdm_scalar_type {
	TDM_SCALAR_NONE = 0,
	TDM_SCALAR_I64 = 1,
	TDM_SCALAR_F64 = 2,
	TDM_SCALAR_F32 = 3,
};

struct tdm_wire_arg {
	uint32_t handle;
	uint8_t mode; /* enum tdm_access */
	uint8_t reserved[3];
	uint64_t offset;
	uint64_t length;
};

union tdm_wire_scalar {
	int64_t i64;
	double f64;
	float f32;
	uint64_t bits;
};

struct tdm_sqe_graph_begin {
	uint64_t cookie; /* client's graph identifier, echoed in completions */
	uint32_t ntasks;
	uint32_t flags;
	int32_t priority;
	uint32_t policy; /* enum tdm_policy_hint */
	uint64_t deadline_ns; /* CLOCK_MONOTONIC by which the graph should be done; 0: none */
};

struct tdm_sqe_task {
	uint32_t task_index; /* must equal the number of tasks already sent */
	uint32_t kernel_id;
	uint8_t nargs;
	uint8_t nscalars;
	uint8_t nedges; /* predecessors listed in edges[] */
	uint8_t reserved0;
	int32_t priority;
	uint8_t scalar_types[TDM_MAX_SCALARS];
	struct tdm_wire_arg args[TDM_MAX_ARGS];
	union tdm_wire_scalar scalars[TDM_MAX_SCALARS];
	uint32_t edges[TDM_TASK_INLINE_EDGES]; /* predecessor task indices (< task_index) */
};

struct tdm_sqe_edges {
	uint32_t task_index; /* the task these predecessors belong to (the last one sent) */
	uint32_t nedges;
	uint32_t edges[TDM_EDGES_PER_SQE];
};

/* A routing guard on the task just sent (docs/kernels.md, "Routing seen at
 * run time"): the task runs only if some token of router task router_task
 * (a topk_router, earlier in the graph) chose expert `expert`; otherwise it
 * completes at zero cost without running. The guard orders the task after
 * the router. */
struct tdm_sqe_guard {
	uint32_t task_index; /* the task guarded (the last one sent) */
	uint32_t router_task;
	uint32_t expert; /* < the router's expert count */
	uint32_t reserved; /* 0 */
};

struct tdm_sqe {
	uint16_t op;
	uint16_t reserved;
	uint32_t reserved2;
	union {
		struct tdm_sqe_graph_begin begin;
		struct tdm_sqe_task task;
		struct tdm_sqe_edges edges;
		struct tdm_sqe_guard guard;
		uint8_t raw[312];
	} u;
};

enum tdm_cqe_op {
	TDM_CQE_GRAPH_DONE = 1, /* one per graph, after its TASK_INFO entries */
	TDM_CQE_TASK_INFO = 2,
	TDM_CQE_ERROR = 3, /* a stray entry outside any graph */
};

struct tdm_cqe {
	uint16_t op;
	uint16_t device; /* TASK_INFO: the id of the device that ran the task (stable: never reused)
	                  */
	int32_t status; /* 0 or -TDM_E* */
	uint64_t cookie;
	uint32_t task_index; /* TASK_INFO: the task; GRAPH_DONE: first offending task on error */
	uint32_t detail; /* GRAPH_DONE error: enum tdm_reject_field */
	uint64_t queued_ns; /* CLOCK_MONOTONIC of the daemon, comparable across processes */
	uint64_t start_ns;
	uint64_t end_ns;
	/* TASK_INFO: the cost model's expectation of the task's device time
	 * (end_ns - start_ns) and its spread, taken before it ran; 0: none. */
	uint64_t predicted_ns;
	uint64_t predicted_spread_ns;
};

/* Which field of a rejected graph was wrong (tdm_cqe.detail), in one table:
 * X(name, value, what) gives TDM_REJECT_<name> = value in enum
 * tdm_reject_field and what as tdm_reject_field_name()'s answer, so a field
 * cannot be added without its name (client/errors.c checks that the values
 * run from 0 without a gap). Never change a value or a name, only append. */
#define TDM_REJECT_FIELD_MAP(X)                                                                    \
	X(NONE, 0, "none")                                                                         \
	X(OP, 1, "entry op")                                                                       \
	X(RESERVED, 2, "reserved field not zero")                                                  \
	X(NTASKS, 3, "task count")                                                                 \
	X(FLAGS, 4, "graph flags")                                                                 \
	X(TASK_INDEX, 5, "task index")                                                             \
	X(KERNEL, 6, "kernel id")                                                                  \
	X(ARITY, 7, "argument count")                                                              \
	X(MODE, 8, "access mode")                                                                  \
	X(HANDLE, 9, "buffer handle")                                                              \
	X(RANGE, 10, "offset/length")                                                              \
	X(SCALAR_TYPE, 11, "scalar type")                                                          \
	X(EDGE, 12, "edge")                                                                        \
	/* kernel-specific check (sizes vs. scalars) */                                            \
	X(KERNEL_ARGS, 13, "kernel-specific argument check")                                       \
	X(QUOTA, 14, "client quota")                                                               \
	/* BEGIN inside a graph, END too early, ... */                                             \
	X(SEQUENCE, 15, "entry sequence")                                                          \
	/* unknown policy hint */                                                                  \
	X(POLICY, 16, "policy hint")                                                               \
	/* the task's predicted cost exceeds [limits] max_task_ms */                               \
	X(COST, 17, "predicted task cost")                                                         \
	/* a GUARD entry: router not a topk_router, expert out of range, twice */                  \
	X(GUARD, 18, "routing guard")

enum tdm_reject_field {
#define TDM_REJECT_FIELD_ENUM(name, value, what) TDM_REJECT_##name = value,
	TDM_REJECT_FIELD_MAP(TDM_REJECT_FIELD_ENUM)
#undef TDM_REJECT_FIELD_ENUM
	        TDM_REJECT__COUNT
};

_Static_assert(sizeof(struct tdm_ring_header) == 7 * TDM_CACHELINE, "ring header layout");
_Static_assert(sizeof(struct tdm_sqe) == 320, "sqe size: five cache lines");
_Static_assert(sizeof(struct tdm_sqe_task) == 312, "task entry fits");
_Static_assert(sizeof(struct tdm_sqe_edges) == 312, "edges entry fits");
_Static_assert(sizeof(struct tdm_cqe) == 64, "cqe size");
_Static_assert(sizeof(struct tdm_ctl_device) == 80, "ctl device layout");
_Static_assert(sizeof(struct tdm_ctl_client) == 16, "ctl client layout");

#endif
