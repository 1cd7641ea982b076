/* libtandem: the client API of the tandem scheduler daemon.
 *
 * A client connects to tandemd, allocates buffers that live in shared memory
 * (both sides map the same pages), describes a graph of kernel tasks over
 * those buffers, submits it, and waits. The daemon chooses devices; clients
 * never do.
 *
 * Every function returns 0 or a negative error code (-TDM_E*); tdm_strerror()
 * names each one. A client handle is meant for one thread at a time.
 */
#ifndef TANDEM_H
#define TANDEM_H

#include <stddef.h>
#include <stdint.h>

#include "tandem/version.h"
#include "tandem/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every status code, in one table: X(name, value, message) gives TDM_E<name>
 * = value in enum tdm_error and message as what tdm_strerror() says, so a code
 * cannot be added without its message (client/errors.c checks that the
 * values run from 1 without a gap). Values and messages are part of the
 * wire protocol and of the API: never change one, only append. */
#define TDM_ERRNO_MAP(X)                                                                           \
	X(EINVAL, 1, "invalid argument")                                                           \
	X(ENOMEM, 2, "out of memory")                                                              \
	/* cannot reach the daemon's socket */                                                     \
	X(ECONNECT, 3, "cannot connect to tandemd")                                                \
	/* the daemon does not accept this uid/gid */                                              \
	X(EPERM, 4, "permission denied by tandemd (uid/gid not allowed)")                          \
	X(EVERSION, 5, "wire protocol version mismatch")                                           \
	/* protocol violation (daemon or client) */                                                \
	X(EPROTO, 6, "protocol violation")                                                         \
	/* the daemon closed the connection */                                                     \
	X(EDISCONNECTED, 7, "disconnected from tandemd")                                           \
	/* tdm_wait timed out; the graph is still running */                                       \
	X(ETIMEDOUT, 8, "timed out")                                                               \
	/* a per-client quota would be exceeded */                                                 \
	X(EQUOTA, 9, "quota exceeded (a client's, its user's or the daemon's)")                    \
	X(EHANDLE, 10, "unknown buffer handle")                                                    \
	X(ERANGE, 11, "offset/length outside the buffer or wrong size for the kernel")             \
	X(EKERNEL, 12, "unknown kernel")                                                           \
	/* wrong number or kind of arguments for the kernel */                                     \
	X(EARITY, 13, "arguments do not match the kernel's signature")                             \
	/* edge to a task that is not earlier in the graph */                                      \
	X(EEDGE, 14, "edge does not point to an earlier task")                                     \
	/* the task or graph was canceled */                                                       \
	X(ECANCELED, 15, "canceled")                                                               \
	X(EDEVICE, 16, "kernel failed on its device")                                              \
	X(ESHUTDOWN, 17, "tandemd is shutting down")                                               \
	X(EBUSY, 18, "busy: too many clients or connections, or such a request runs already")      \
	X(ESYS, 19, "system call failed")                                                          \
	X(ECONFIG, 20, "invalid configuration")                                                    \
	/* the socket is not served by a tandemd we trust (its uid, its ring) */                   \
	X(EPEER, 21, "the socket is not served by a tandemd we trust")                             \
	/* the daemon's process ended (killed, crashed or stopped): reconnect */                   \
	X(EDAEMON, 22, "daemon lost: tandemd exited")                                              \
	/* a capacity is full (the engine's devices, ...) */                                       \
	X(ENOSPC, 23, "no room left (a capacity is full)")                                         \
	/* no device can run it any more (they were removed), or its data was lost with one */     \
	X(ENODEV, 24, "no device left to run it, or its data was lost with a device")

enum tdm_error {
	TDM_OK = 0,
#define TDM_ERRNO_ENUM(name, value, message) TDM_##name = value,
	TDM_ERRNO_MAP(TDM_ERRNO_ENUM)
#undef TDM_ERRNO_ENUM
	        TDM_E__COUNT
};

/* libtandem's version, TDM_VERSION_STRING as the library was built (the
 * header a program was compiled with may be older). */
const char *tdm_version(void);

/* Names an error code (negative or positive). Never returns NULL. */
const char *tdm_strerror(int err);
/* Names a tdm_reject_field (tdm_graph_reject_detail). */
const char *tdm_reject_field_name(unsigned field);
/* The symbols of the tables, for bindings that mirror them: "EINVAL" for
 * TDM_EINVAL (negative or positive; "OK" for 0), "RANGE" for
 * TDM_REJECT_RANGE; NULL past the last code or field, so that a caller can
 * walk each table from 0 until NULL. */
const char *tdm_error_symbol(int err);
const char *tdm_reject_field_symbol(unsigned field);

typedef struct tdm_client tdm_client;
typedef struct tdm_graph tdm_graph;
typedef uint32_t tdm_buffer; /* per-client handle, 0 is never valid */
typedef uint32_t tdm_kernel;

struct tdm_connect_opts {
	const char *socket_path; /* NULL: $TANDEM_SOCKET, then the default path */
	/* Microseconds to spin on the completion ring before sleeping on the
	 * doorbell in tdm_wait; 0 blocks at once. */
	uint32_t spin_us;
	/* The daemon must run as root or as our own uid (SO_PEERCRED), or as
	 * this uid when not 0 (or as $TANDEM_DAEMON_UID): a socket served by
	 * anyone else gives -TDM_EPEER, and nothing is sent to it. */
	uint32_t daemon_uid;
};

/* Where a tandemd started by this user listens by default: $TANDEM_SOCKET,
 * else /run/tandem/tandemd.sock for root, $XDG_RUNTIME_DIR/tandem/tandemd.sock
 * for a user (/tmp/tandem-<uid>/tandemd.sock without $XDG_RUNTIME_DIR).
 * Writes at most len bytes. */
int tdm_listen_socket_path(char *out, size_t len);
/* Where a client looks for tandemd by default: tdm_listen_socket_path's
 * path, or, for a user without $TANDEM_SOCKET whose own daemon's socket
 * does not exist, the system's /run/tandem/tandemd.sock when it does. */
int tdm_default_socket_path(char *out, size_t len);

/* Whether the process at the other end of a connected Unix socket is a
 * daemon to trust: root, our own uid, daemon_uid when not 0, or
 * $TANDEM_DAEMON_UID. 0 or -TDM_EPEER (tdm_connect checks it itself). */
int tdm_check_daemon(int sock, uint32_t daemon_uid);

int tdm_connect(const struct tdm_connect_opts *opts, tdm_client **out);
void tdm_disconnect(tdm_client *c);

/* When the daemon's process ends (killed, crashed, restarted), every call
 * blocked on it (tdm_wait, a submit waiting for ring space, a request)
 * returns -TDM_EDAEMON at once, and so does every later call that needs an
 * answer (a submit that finds room in the ring returns 0; its wait says
 * it). A daemon that closed the connection but still runs gives
 * -TDM_EDISCONNECTED, and so does a lost daemon whose process we cannot
 * see (in another pid namespace). Either way the connection is dead:
 * reconnect. */

/* Bounded exponential backoff with jitter: the pause after the k-th failed
 * attempt is d = min(max_ms, initial_ms * 2^k), drawn in [d/2, d] so that
 * clients of a restarted daemon do not come back all at once. */
struct tdm_backoff {
	uint32_t initial_ms; /* 0: 10 ms */
	uint32_t max_ms; /* 0: 1000 ms */
	uint32_t total_ms; /* give up after this long; 0: 30 s */
};

/* tdm_connect, tried again with backoff (b NULL: the defaults) while the
 * daemon is not there or not ready (-TDM_ECONNECT, -TDM_EDISCONNECTED,
 * -TDM_EDAEMON, -TDM_ESHUTDOWN, -TDM_EBUSY); any other error, or the last
 * one when total_ms has passed, is returned. */
int tdm_connect_backoff(const struct tdm_connect_opts *opts, const struct tdm_backoff *b,
                        tdm_client **out);
/* Connects anew, with the options *c was connected with, as
 * tdm_connect_backoff does; on success disconnects *c and replaces it.
 * Nothing of the old connection carries over: its buffers are unmapped
 * (allocate them anew), its graphs may only be freed, kernel ids are
 * looked up again. On failure *c is left as it was. */
int tdm_reconnect(tdm_client **c, const struct tdm_backoff *b);
uint32_t tdm_session_id(const tdm_client *c);
/* Device ids the daemon had given when the client connected (valid after
 * connect): devices may join later with larger ids, or leave; an id is
 * never reused (tdm_task_info.device stays meaningful; docs/elastic.md). */
uint32_t tdm_device_count(const tdm_client *c);

/* ---- buffers ---- */

/* Buffer flags. A buffer's latest contents are in the client's view when a
 * graph that used it completes, and the client may then write its view
 * before the next graph. WEIGHTS and KV buffers are the exception that
 * makes accelerators pay off: the daemon keeps their copies in device
 * memory across graphs, so the client must not write its view of them
 * after their first use in a graph (fill them before, or through tasks).
 * SCRATCH buffers hold intermediates: what a graph writes into them is not
 * copied back, so after the graph their contents are undefined (the copy
 * back is saved); what the client writes before a graph is read as usual. */
#define TDM_BUF_WEIGHTS 1u
#define TDM_BUF_KV 2u
#define TDM_BUF_SCRATCH 4u
#define TDM_BUF_FLAGS_ALL (TDM_BUF_WEIGHTS | TDM_BUF_KV | TDM_BUF_SCRATCH)

/* Allocates bytes of shared memory (zeroed) and maps it; *ptr is the
 * client's view. Counts against the client's quota. */
int tdm_buffer_alloc(tdm_client *c, size_t bytes, uint32_t flags, tdm_buffer *handle, void **ptr);
/* A growable buffer, for a KV cache that grows as tokens arrive: reserves
 * `capacity` bytes of contiguous address space (*ptr, the client's view)
 * with nothing behind it yet, so that nothing is charged to the quota.
 * flags must include TDM_BUF_KV (SCRATCH is refused). Tasks may name only
 * [0, used) as declared with tdm_buffer_grow, and the view may be touched
 * only there; kernels see one contiguous range on every device (device
 * replicas grow in place where the backend can). */
int tdm_buffer_reserve(tdm_client *c, size_t capacity, uint32_t flags, tdm_buffer *handle,
                       void **ptr);
/* Declares that [0, used) of a growable buffer is in use from now on:
 * the daemon backs it (in chunks a few percent ahead of the use) and
 * charges what it backs to the quota. Bytes added are undefined until
 * written (zero on the host). used never goes down (-TDM_EINVAL); past
 * the capacity: -TDM_ERANGE; over the quota: -TDM_EQUOTA, and the buffer
 * stays as it was. */
int tdm_buffer_grow(tdm_client *c, tdm_buffer handle, size_t used);
/* KV admission. Tiers (TDM_TIER_DEVICE, TDM_TIER_HOST) are in
 * tandem/wire.h. In: bytes_per_token, context_tokens, max_new_tokens (the
 * request's prompt and its output limit) and tier (TDM_TIER_ANY, or the
 * tier wanted). Out: the rest. */
struct tdm_kv_admission {
	uint64_t bytes_per_token;
	uint32_t context_tokens, max_new_tokens;
	uint32_t tier;
	uint32_t predicted_new_tokens; /* what the daemon expects it to generate */
	uint32_t history; /* this client's past output lengths behind the guess */
	uint64_t peak_bytes; /* predicted peak of the tier it went to, itself included */
	uint64_t device_free_bytes, host_free_bytes; /* what each tier can still take */
};
/* Admits a request whose KV is growable buffer h: the daemon predicts the
 * peak KV of this client's admitted requests over their remaining outputs
 * (Past-Future: from the output lengths of its earlier requests, each
 * request's progress, and its limit) and answers a->tier: the device
 * tier when the devices' memory holds that peak (and a->tier did not ask
 * for the host), else the host tier (demoted rather than refused);
 * -TDM_EQUOTA when the quota cannot hold it even on the host (queue it).
 * Call it again for an admitted request to have its tier decided anew; its
 * length joins the history when the buffer is freed. h == 0 only asks:
 * device_free_bytes and host_free_bytes (the in-fields must be 0). */
int tdm_kv_admit(tdm_client *c, tdm_buffer h, struct tdm_kv_admission *a);
/* Releases a buffer. Graphs already submitted keep it alive until they end. */
int tdm_buffer_free(tdm_client *c, tdm_buffer handle);

/* ---- kernels ---- */

/* Resolves a kernel name ("noop", "spin", "fill", "axpy", "sgemm", ...) to
 * its id; the library caches the answer. */
int tdm_kernel_lookup(tdm_client *c, const char *name, tdm_kernel *out);

/* ---- graphs ---- */

/* A task's argument: a byte range of a buffer. Dependencies and data
 * movement are by range: tasks on disjoint ranges of one buffer (requests
 * sharing a pooled KV cache) are not ordered, and only the bytes of a
 * range missing where a task runs are copied there. A write-only argument
 * (TDM_W) must be written whole by the kernel: its old contents are not
 * copied in. */
struct tdm_arg {
	tdm_buffer buffer;
	uint32_t mode; /* TDM_R, TDM_W, TDM_RW */
	uint64_t offset;
	uint64_t length; /* 0 means "to the end of the buffer" */
};

struct tdm_scalar {
	uint32_t type; /* enum tdm_scalar_type */
	union tdm_wire_scalar v;
};

#define TDM_ARG(buf, m, off, len)                                                                  \
	((struct tdm_arg){ .buffer = (buf), .mode = (m), .offset = (off), .length = (len) })
#define TDM_I64(x) ((struct tdm_scalar){ .type = TDM_SCALAR_I64, .v = { .i64 = (x) } })
#define TDM_F64(x) ((struct tdm_scalar){ .type = TDM_SCALAR_F64, .v = { .f64 = (x) } })
#define TDM_F32(x) ((struct tdm_scalar){ .type = TDM_SCALAR_F32, .v = { .f32 = (x) } })

struct tdm_task_desc {
	tdm_kernel kernel;
	uint32_t nargs;
	struct tdm_arg args[TDM_MAX_ARGS];
	uint32_t nscalars;
	struct tdm_scalar scalars[TDM_MAX_SCALARS];
	int32_t priority; /* carried to the policy; higher is more urgent */
};

/* Per-task schedule, filled in when the graph completes (with task info on). */
struct tdm_task_info {
	int32_t status;
	uint32_t device;
	uint64_t queued_ns, start_ns, end_ns; /* CLOCK_MONOTONIC */
	/* What the daemon's cost model expected of end_ns - start_ns on that
	 * device before the task ran, and the spread of that guess (0: no
	 * prediction, e.g. for noop). */
	uint64_t predicted_ns, predicted_spread_ns;
};

tdm_graph *tdm_graph_new(tdm_client *c);
void tdm_graph_free(tdm_graph *g);
/* Ask for per-task device and times in the completion (off by default: it
 * costs one completion entry per task). */
void tdm_graph_want_task_info(tdm_graph *g, int on);
void tdm_graph_set_priority(tdm_graph *g, int32_t priority);
/* Which policy should place this graph (enum tdm_policy_hint in
 * tandem/wire.h: EAGER, DMDA, HEFT, PEFT, PRIO; DEFAULT: the client's
 * [clients] setting, else the daemon's). A hint: honoured when the daemon
 * runs dmda, heft, peft or prio; an unknown value rejects the graph. */
void tdm_graph_set_policy(tdm_graph *g, enum tdm_policy_hint hint);
/* CLOCK_MONOTONIC time by which the graph should be done (0: none). The
 * prio policy serves earlier deadlines first among equal priorities. */
void tdm_graph_set_deadline(tdm_graph *g, uint64_t deadline_ns);
/* Appends a task; *index (may be NULL) receives its index in the graph.
 * Data dependencies between tasks of one graph are inferred from access
 * modes in the order tasks are added (RAW, WAR, WAW per buffer). */
int tdm_graph_add_task(tdm_graph *g, const struct tdm_task_desc *t, uint32_t *index);
/* Explicit edge: task `to` runs after task `from`; requires from < to. */
int tdm_graph_add_edge(tdm_graph *g, uint32_t from, uint32_t to);
/* Routing seen at run time: task `task` runs only if some token of the
 * topk_router task `router` (router < task) chose expert `expert`; if none
 * did, it completes at zero cost without running, its outputs untouched
 * (an expert that is skipped contributes nothing). Otherwise the daemon
 * prices it by the tokens routed to it. The task runs after the router. A
 * router whose output is out of range (an id >= its expert count, a weight
 * not finite) fails with -TDM_EINVAL. One guard per task. */
int tdm_graph_set_guard(tdm_graph *g, uint32_t task, uint32_t router, uint32_t expert);
uint32_t tdm_graph_task_count(const tdm_graph *g);
/* Writes the graph to the submission ring and rings the doorbell. A graph
 * may be submitted again after it completed. Graphs in flight at the same
 * time are not ordered with respect to each other (as work on two CUDA
 * streams): a graph that touches a buffer another in-flight graph writes
 * must be submitted after tdm_wait on that one, or be part of it. */
int tdm_graph_submit(tdm_graph *g);
/* Waits for the graph's completion. timeout_ns < 0 waits forever. Returns
 * the graph's status (0, or why it was rejected or failed: -TDM_EHANDLE,
 * -TDM_EQUOTA, -TDM_EDEVICE, ..., -TDM_ECANCELED when the daemon stopped it
 * at shutdown) or -TDM_ETIMEDOUT. */
int tdm_wait(tdm_graph *g, int64_t timeout_ns);
/* Valid after tdm_wait returned for a graph submitted with task info. */
const struct tdm_task_info *tdm_graph_task_info(const tdm_graph *g, uint32_t index);
/* For a rejected graph: the offending task index and field (enum tdm_reject_field). */
void tdm_graph_reject_detail(const tdm_graph *g, uint32_t *task_index, uint32_t *field);

#ifdef __cplusplus
}
#endif
#endif
