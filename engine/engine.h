/* The engine core: tasks, graphs, dependency counters, dispatch to device
 * workers through a policy, completion. It knows nothing of sessions,
 * sockets or the event loop: graphs arrive built and validated, and leave
 * through the graph_done hook. */
#ifndef TDM_ENGINE_ENGINE_H
#define TDM_ENGINE_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "backends/kernels.h"
#include "common/clock.h"
#include "placement/residency.h"

struct engine_graph;
struct tdm_policy_ops;
struct profiler;

struct engine_task {
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
	/* Prefetch of its inputs: 0 none, node + 1 prefetched to that node
	 * (holds placed), PREFETCH_CLAIMED once it started to run. */
	_Atomic uint16_t prefetch;
	int32_t status;
	uint64_t queued_ns, start_ns, end_ns;
	/* The cost model's answer for the device that ran it, taken before it ran. */
	uint64_t pred_ns, pred_spread_ns;
	struct kernel_features feat; /* set at intake from the call */
	/* Scratch owned by the policy that queued the task (its device, order
	 * key and predicted cost there); the core does not read them. */
	double policy_key;
	double policy_cost;
	uint32_t policy_dev;
	struct tdm_kernel_call call; /* call.off[i]: offset of argument i in its buffer */
	struct tdm_data *data[TDM_MAX_ARGS]; /* residency of each argument's buffer */
};

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
};

struct engine_graph {
	struct engine_flow *flow;
	void *owner; /* the front end's, passed back in graph_done */
	uint64_t cookie;
	uint32_t flags;
	int32_t priority;
	uint8_t policy_hint; /* enum tdm_policy_hint from the client, 0: none */
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
	_Atomic int32_t status; /* first failure wins */
	uint64_t submit_ns;
	struct engine_graph *core_prev, *core_next; /* the core's list of graphs in flight */
};

struct engine_device {
	uint16_t index;
	uint16_t node; /* memory node (0 = host) */
	struct backend_device dev;
	_Atomic bool healthy; /* cleared by a device fault: no more work unless nobody else can */
	_Atomic uint32_t inject_faults; /* testing: fail this many launches as device faults */
	_Atomic uint64_t faults;
	_Atomic uint64_t tasks_run;
	_Atomic uint64_t busy_ns;
};

struct engine_hooks {
	/* Called once per graph when its last task finished, from a worker
	 * thread (or from engine_submit for an empty graph). */
	void (*graph_done)(void *ctx, struct engine_graph *g);
	/* Optional: idle workers look for new work at the front end (intake
	 * of submission rings) through poll, repeatedly while they spin and
	 * once each time poll_fd wakes them; it returns true if it found any.
	 * polling(ctx, true/false) brackets a worker's spin phase. */
	bool (*poll)(void *ctx, bool woken); /* woken: poll_fd was readable */
	void (*polling)(void *ctx, bool on);
	void *ctx;
};

struct engine_counters {
	uint64_t graphs_submitted, graphs_done;
	uint64_t tasks_done, tasks_failed, tasks_canceled;
	uint64_t tasks_in_flight; /* submitted, not finished */
	size_t queued; /* ready, waiting for a worker */
	bool fallback; /* the watchdog replaced the policy with a FIFO */
};

#define PREFETCH_CLAIMED 0xffffu

/* Where a task is in the hand-off between core and policy. */
enum engine_qstate {
	QSTATE_IDLE = 0, /* not ready, or running */
	QSTATE_QUEUED, /* handed to the policy, not taken yet */
	QSTATE_FIFO, /* in the watchdog's FIFO */
};

struct engine;

/* Knobs of the cost-aware policies ([policy] in the configuration). */
struct policy_tuning {
	double dmda_alpha; /* weight of the predicted finish time */
	double dmda_beta; /* weight of the transfer time */
	uint32_t plan_refine_iters; /* heft/peft: extra candidate orders per graph */
	bool plan_repair; /* heft/peft: re-plan when tasks drift beyond their spread */
};

extern const struct policy_tuning policy_tuning_defaults;

struct engine_params {
	const struct tdm_clock *clock;
	const struct tdm_policy_ops *policy;
	const struct backend_device *devices;
	size_t ndevices;
	uint32_t spin_us; /* idle workers spin this long before sleeping */
	struct engine_hooks hooks;
	void *topology; /* hwloc_topology_t for binding workers; may be NULL */
	int poll_fd; /* with hooks.poll: sleeping workers also wake when it is readable */
	bool start_workers; /* false: tests drive engine_run_one() themselves */
	/* Where buffers live; NULL: host memory only and no bookkeeping
	 * (unit tests whose tasks carry no data[]). */
	struct residency *res;
	uint32_t pipeline_depth; /* tasks in flight per accelerator (0: 4) */
	const uint32_t *inject_faults; /* per device, may be NULL */
	/* Cost models: predicted before each task runs, taught by each task
	 * that ran. NULL: no predictions (pred_ns stays 0). */
	struct profiler *prof;
	/* NULL: defaults (alpha = beta = 1, refine 0, repair on). */
	const struct policy_tuning *tuning;
	/* A policy that holds ready tasks while every worker idles this long
	 * is replaced by a plain FIFO (0: 500 ms). */
	uint32_t watchdog_ms;
};

int engine_create(const struct engine_params *p, struct engine **out);
/* Stops the workers; queued tasks are not run, running ones are canceled
 * (engine_cancel_all) and the workers joined, waiting at most 2 s for them
 * to leave their kernels. 0, or -TDM_ETIMEDOUT when a worker is still in a
 * kernel that does not stop (one BLAS call, an accelerator): the engine is
 * then left allocated for it, and the caller should exit without tearing
 * down what that kernel may touch. */
int engine_destroy(struct engine *e);
/* Cancels every graph in flight and every graph submitted from now on (their
 * flows are marked canceled): queued tasks are skipped and running host
 * kernels stop early; each graph completes with -TDM_ECANCELED. For a
 * shutdown that stops waiting. Any thread. */
void engine_cancel_all(struct engine *e);

/* Takes ownership of a built graph: tasks[], succ_off/succ set and each
 * task's ndeps counted. Releases the tasks with no predecessor. */
void engine_submit(struct engine *e, struct engine_graph *g);
/* Frees a graph's arrays (not the graph struct's owner data). */
void engine_graph_free_arrays(struct engine_graph *g);

/* Runs one ready task on device `worker` if there is one, to completion;
 * returns true if it did. For tests that run the engine without threads. */
bool engine_run_one(struct engine *e, unsigned worker);
/* Whether worker w may take task t: its device implements the kernel, has
 * room for the data, and is healthy (or no healthy device implements it). */
bool engine_runnable(const struct engine *e, const struct engine_task *t, unsigned w);
/* Wakes worker w if it sleeps: a policy that queued a task that only w
 * may take calls it (the core wakes "some" worker per ready task otherwise). */
void engine_kick(const struct engine *e, unsigned w);
/* Whether some device implements kernel k (intake rejects tasks nobody can run). */
bool engine_kernel_available(const struct engine *e, const struct kernel_def *k);
/* The least time a task of kernel k with features f can take here: the
 * calibrated roofline (profiler_roofline_ns) on the fastest device that
 * implements k, in ns. Infinity when none does; 0 without cost models.
 * Cheap (one division pair per kind of device) and lock-free: intake
 * checks every task against [limits] max_task_ms with it. */
double engine_task_floor_ns(const struct engine *e, uint32_t kernel,
                            const struct kernel_features *f);

/* Simulation (sim/sim.c): with start_workers false and every device
 * accelerator-shaped (launch_async), a single-threaded driver on a virtual
 * clock steps the workers instead of threads; everything else (policy,
 * residency, cost models, completion) is the same code.
 *   engine_sim_stage: worker w takes ready tasks and stages them on its
 *     device, up to its pipeline depth (1 on the host node); returns how
 *     many it took.
 *   engine_sim_oldest: the event of the oldest task staged on w (NULL:
 *     none); the driver completes it once the event is done on its clock.
 *   engine_sim_complete: prefetches what the policy queued for w, then
 *     completes w's oldest task (dependents are released, the graph may end).
 *   engine_sim_stalled: nothing is staged anywhere; if the policy still
 *     holds ready tasks the watchdog replaces it (returns true). */
size_t engine_sim_stage(struct engine *e, unsigned w);
/* Moves whenever tasks reach the policy: a worker that found nothing need
 * not look again before it moved (or before its own task completed). */
uint32_t engine_sim_epoch(const struct engine *e);
struct backend_event *engine_sim_oldest(const struct engine *e, unsigned w);
void engine_sim_complete(struct engine *e, unsigned w);
bool engine_sim_stalled(struct engine *e);
/* Some tasks come with excl_nodes already set (simulated workloads that
 * bar tasks from devices): every hand-out is then checked. */
void engine_note_exclusions(struct engine *e);

void engine_counters(const struct engine *e, struct engine_counters *out);
size_t engine_device_count(const struct engine *e);
const struct engine_device *engine_device(const struct engine *e, size_t i);
const char *engine_policy_name(const struct engine *e);
struct profiler *engine_profiler(const struct engine *e);
void engine_set_spin_us(struct engine *e, uint32_t spin_us);
/* A new client: 0 or -TDM_ENOMEM. */
int engine_flow_add(struct engine *e, struct engine_flow *flow);
/* A flow's last graph is done and it will submit no more. */
void engine_flow_gone(struct engine *e, struct engine_flow *flow);

#endif
