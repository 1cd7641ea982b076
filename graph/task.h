/* The task graph as every room sees it: what a task, a graph, a client's
 * flow and a device are, and the two services of the engine's core a
 * policy (or placement) may call. The engine (engine/) owns these objects
 * and their life cycle; policies and placement read them and keep their
 * own scratch in the fields marked for them. This room depends only on the
 * backends' kernel table and device description, so that placement and
 * policies, below the engine, can use it without including the engine. */
#ifndef TDM_GRAPH_TASK_H
#define TDM_GRAPH_TASK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "backends/kernels.h"

struct res_data; /* placement/residency.h: a buffer's replicas */

struct engine_graph;

/* Laid out by when the engine touches each field, in 64-byte lines
 * (graph_build aligns large task arrays to them): the first two hold what
 * every release, stage and completion reads or writes, and end with
 * call.nargs; the policy's scratch follows the call, with the argument
 * records. On a large graph each line touched is a cache miss per task. */
struct engine_task {
	/* ---- line 0 ---- */
	struct engine_graph *graph;
	const struct kernel_def *kernel;
	struct engine_task *next; /* link for the policy's queues */
	uint32_t index;
	int32_t priority;
	_Atomic uint32_t ndeps; /* predecessors not yet finished */
	uint16_t device;
	bool root; /* no predecessor: released at submission */
	uint8_t attempts; /* device faults so far: the task moves elsewhere */
	uint16_t excl_nodes; /* memory nodes too small for this task */
	/* Core bookkeeping of the policy hand-off (enum engine_qstate): lets
	 * the watchdog catch a task handed out twice and take back what a
	 * broken policy holds. */
	_Atomic uint8_t qstate;
	/* Policy scratch: 1 + the memory node the
	 * policy wants the task to run on, 0: any (policies/llm.c). */
	uint8_t policy_node;
	/* TASK_ROUTES, TASK_SKIPPED, TASK_ACC (below). */
	uint8_t flags;
	/* Prefetch of its inputs: 0 none, node + 1 prefetched to that node
	 * (holds placed), PREFETCH_CLAIMED once it started to run. */
	_Atomic uint16_t prefetch;
	int32_t status;
	uint32_t guard_router; /* see routed below */
	uint64_t queued_ns;
	/* ---- line 1 ---- */
	uint64_t start_ns, end_ns;
	/* The cost model's answer for the device that ran it, taken before it ran. */
	uint64_t pred_ns, pred_spread_ns;
	struct kernel_features feat; /* set at intake from the call */
	struct tdm_kernel_call call; /* call.off[i]: offset of argument i in its buffer */
	/* Scratch owned by the policy that queued the task (its device, order
	 * key and predicted cost there); the core does not read them. */
	double policy_key;
	double policy_cost;
	uint32_t policy_dev;
	/* Set by the fair queue that served it (placement/fairq.h): the
	 * predicted ns it charged the task's flow, settled against the
	 * task's measured time when it is done. */
	float fair_charge;
	struct res_data *data[TDM_MAX_ARGS]; /* residency of each argument's buffer */
	/* Routing seen at run time (docs/kernels.md). A router that guards
	 * tasks (flag TASK_ROUTES) keeps, once it ran, the tokens that chose
	 * each expert (routed, from its validated output; freed with the
	 * graph's arrays), and which ones: expert e's tokens, ascending, are
	 * routed_tokens[routed_off[e] .. routed_off[e + 1]). A guarded task
	 * names its router (guard_router: its task index + 1; 0: no guard) and
	 * expert: released with no token routed to it, it completes without
	 * running (flag TASK_SKIPPED); otherwise, where its kernel takes them
	 * (kernel_def.takes_routed), its call.routed points at its tokens. */
	uint32_t *routed, *routed_off, *routed_tokens;
	uint32_t guard_expert;
	struct task_acc *acc; /* its TDM_ACC argument (flag TASK_ACC); NULL: none */
	uint8_t line_pad[40]; /* to a whole number of lines (10) */
};

#define ENGINE_TASK_LINE 64
_Static_assert(offsetof(struct engine_task, start_ns) == ENGINE_TASK_LINE &&
                       offsetof(struct engine_task, call.nargs) < 2 * ENGINE_TASK_LINE &&
                       sizeof(struct engine_task) % ENGINE_TASK_LINE == 0,
               "engine_task: the hot fields fill lines 0 and 1, tasks whole lines");

/* engine_task.flags */
#define TASK_ROUTES 1u /* guards some task of its graph: its routing is read */
#define TASK_SKIPPED 2u /* guarded, no token routed to it: completed unrun */
#define TASK_ACC 4u /* has a TDM_ACC argument (acc) */

/* Tasks accumulating into one range (TDM_ACC, graph/build.h): members in
 * task order, and how many are not over yet. Owned by the first member's
 * task_acc. */
struct acc_group {
	_Atomic uint32_t left;
	uint32_t n, cap;
	uint32_t *members;
};

/* A task's TDM_ACC argument (float32): the kernel runs on `partial`
 * (zeroed before each run; its residency pdata, so that it may run on any
 * device), which is added to the range (out_ptr, the argument's own data
 * and offset in the task) with the group's other partials in task order
 * once the group's last member is over. */
struct task_acc {
	uint8_t arg;
	bool ran; /* the partial holds this task's contribution */
	bool pdata_live; /* pdata made by the engine (when it has residency) */
	struct acc_group *group;
	void *out_ptr; /* the range's host address and offset in its buffer */
	uint64_t out_off;
	float *partial;
	struct res_data *pdata;
};

/* Frees t->acc, and its group with the group's first member: free a
 * graph's tasks last first. The engine has released pdata. */
void task_acc_free(struct engine_task *t);

/* Per-client accounting and fairness handle, owned by the front end. The
 * policy may keep per-flow state in policy_slot. */
struct engine_flow {
	uint32_t id;
	uint32_t weight; /* share of each device relative to other flows, 1..1000 */
	uint8_t policy_hint; /* enum tdm_policy_hint: this client's default */
	/* Set when the client is gone (or by engine_cancel_all): queued tasks
	 * are skipped, running host kernels stop (tdm_kernel_call.cancel). */
	_Atomic int canceled;
	void *policy_slot;
	/* Accounting for status and tandemctl top, at each graph's completion:
	 * tasks that ran to completion, their device time, graphs done. */
	_Atomic uint64_t tasks_done, busy_ns, graphs_done;
};

struct engine_graph {
	struct engine_flow *flow;
	void *owner; /* the front end's object that holds this graph (graph_done finds it here) */
	uint64_t cookie;
	uint32_t flags;
	int32_t priority;
	uint8_t policy_hint; /* enum tdm_policy_hint from the client, 0: none */
	/* Some task has buffer arguments (set by engine_submit): a graph
	 * without is not walked again for its buffers when it completes. */
	bool any_args;
	uint64_t deadline_ns; /* CLOCK_MONOTONIC, 0: none */
	void *policy_graph; /* the policy's per-graph state (a plan), freed in graph_finished */
	uint32_t ntasks;
	struct engine_task *tasks;
	/* Successors in CSR form: task i's are succ[succ_off[i] .. succ_off[i+1]). */
	uint32_t *succ_off;
	uint32_t *succ;
	/* Optional, in succ[] order: the bytes each edge hands over, for
	 * front ends whose tasks state their data by edge (simulated abstract
	 * tasks). NULL: what the successor reads of the predecessor's writes. */
	const double *edge_data;
	_Atomic uint32_t remaining;
	/* Tasks run to completion and their device time, next to remaining
	 * (the line every task's completion touches anyway): added to the
	 * flow's totals once, when the graph completes. */
	_Atomic uint32_t tasks_ok;
	_Atomic uint64_t busy_ns;
	_Atomic int32_t status; /* first failure wins */
	uint64_t submit_ns;
	struct engine_graph *core_prev, *core_next; /* the core's list of graphs in flight */
};

/* Buckets of the per-device latency histograms: upper bounds
 * engine_latency_bound_ns(0 .. ENGINE_LAT_BUCKETS - 2), the last +Inf. */
#define ENGINE_LAT_BUCKETS 13

/* A device's life cycle (engine_device_drain/remove/resume/add): ids are
 * stable and never reused, a GONE device stays listed. */
enum engine_dev_state {
	ENGINE_DEV_ACTIVE = 0, /* takes tasks */
	ENGINE_DEV_DRAINING, /* takes no new task; what is staged there finishes there */
	ENGINE_DEV_GONE, /* removed (or failed past the fault limit): takes nothing, ever */
};

struct engine_device {
	uint16_t index;
	uint16_t node; /* memory node (0 = host) */
	struct backend_device dev;
	_Atomic bool healthy; /* cleared by a device fault: no more work unless nobody else can */
	/* enum engine_dev_state. Policies place only on ACTIVE devices (the
	 * core's runnable check says so too). */
	_Atomic uint8_t state;
	_Atomic uint32_t inject_faults; /* testing: fail this many launches as device faults */
	_Atomic uint64_t faults;
	_Atomic uint64_t tasks_run;
	_Atomic uint64_t busy_ns;
	/* Written by this device's worker only (no contention), read by status
	 * and /metrics. Tasks that ran to completion (status 0): by kernel,
	 * queue-to-start and run time histograms (per bucket, not cumulative)
	 * and the sum of the waits; the cost model's answers against what the
	 * tasks took (the tasks it predicted: |predicted - actual| and actual
	 * summed). */
	/* Off the line above, which every worker reads (healthy) to pick tasks. */
	char stats_pad[64];
	_Atomic uint32_t staged; /* tasks enqueued on the device or running there now */
	_Atomic uint64_t kernel_tasks[KERNEL_COUNT];
	_Atomic uint64_t wait_hist[ENGINE_LAT_BUCKETS], run_hist[ENGINE_LAT_BUCKETS];
	_Atomic uint64_t wait_ns, run_ns;
	_Atomic uint64_t predicted, pred_err_ns, pred_actual_ns;
};

#define PREFETCH_CLAIMED 0xffffu

/* Where a task is in the hand-off between core and policy. */
enum engine_qstate {
	QSTATE_IDLE = 0, /* not ready, or running */
	QSTATE_QUEUED, /* handed to the policy, not taken yet */
	QSTATE_FIFO, /* in the watchdog's FIFO */
};

struct engine;

/* The core's services a policy or placement may call, the way a
 * sched_class calls the scheduler core's helpers; handed to policies at
 * init (struct policy_params), so that nothing below the engine links
 * against it. NULL services (tests without an engine): every worker may
 * run every task, nobody needs waking. */
struct engine_core {
	const struct engine *engine;
	bool (*runnable)(const struct engine *e, const struct engine_task *t, unsigned w);
	void (*kick)(const struct engine *e, unsigned w);
	/* NULL, or true while every worker may run every task: runnable's
	 * answer without the call (policies ask it per device per task). */
	const _Atomic bool *uniform;
};

/* Every worker may run every task now: a loop over devices may skip
 * core_runnable for each. */
static inline bool core_all_runnable(const struct engine_core *c)
{
	return !c || !c->runnable ||
	       (c->uniform && atomic_load_explicit(c->uniform, memory_order_relaxed));
}

static inline bool core_runnable(const struct engine_core *c, const struct engine_task *t,
                                 unsigned w)
{
	if (core_all_runnable(c))
		return true;
	return c->runnable(c->engine, t, w);
}

static inline void core_kick(const struct engine_core *c, unsigned w)
{
	if (c && c->kick)
		c->kick(c->engine, w);
}

#endif
