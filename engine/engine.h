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
#include "graph/task.h"
#include "placement/residency.h"
#include "policies/policy.h"

struct policy_ops;
struct profiler;

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

struct engine;

struct engine_params {
	const struct clock_source *clock;
	const struct policy_ops *policy;
	const struct backend_device *devices;
	size_t ndevices;
	/* Capacity for devices added at run time (engine_device_add): 0 means
	 * ndevices (nothing can be added); at most ENGINE_MAX_DEVICES. */
	size_t max_devices;
	/* A device whose fault count exceeds this is removed (GONE) once its
	 * tasks moved (0: ENGINE_FAULT_LIMIT). */
	uint32_t fault_limit;
	uint32_t spin_us; /* idle workers spin this long before sleeping (the
	                   * daemon's default: ENGINE_SPIN_US_DEFAULT) */
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
	/* When given: why engine_create refused its parameters (-TDM_EINVAL),
	 * instead of the log. */
	char *why;
	size_t whylen;
};

/* Devices an engine can ever have (capable masks are 64-bit). */
#define ENGINE_MAX_DEVICES 64
#define ENGINE_FAULT_LIMIT 16
/* What an idle worker spins before it sleeps, in us, unless told (config
 * spin_us): long enough to catch the next task of a busy graph, short
 * enough not to take a client's core for nothing. */
#define ENGINE_SPIN_US_DEFAULT 50

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
/* The core services policies get (struct engine_core, graph/task.h):
 * whether worker w may take task t (its device implements the kernel, has
 * room for the data, and is healthy, or no healthy device implements it);
 * waking worker w when it sleeps (a policy that queued a task only w may
 * take; the core wakes "some" worker per ready task otherwise). */
bool engine_runnable(const struct engine *e, const struct engine_task *t, unsigned w);
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
/* w's pipeline is full: engine_sim_stage would take nothing before one of
 * w's tasks completes. */
bool engine_sim_full(const struct engine *e, unsigned w);
/* false when engine_sim_stage(e, w) would surely take nothing and change
 * nothing now (the policy's may_pick says its pick finds nothing, or the
 * pipeline is full): the driver skips the call, as it would find nothing.
 * true: it may take something. */
bool engine_sim_may_stage(const struct engine *e, unsigned w);
/* Moves whenever tasks reach the policy: a worker that found nothing need
 * not look again before it moved (or before its own task completed). */
uint32_t engine_sim_epoch(const struct engine *e);
struct backend_event *engine_sim_oldest(const struct engine *e, unsigned w);
/* Up to max tasks the policy holds for w, in the order w would take them
 * (policy_ops.peek; 0 without one, or after a fallback): a hint, nothing
 * changes. */
size_t engine_sim_peek(struct engine *e, unsigned w, struct engine_task **out, size_t max);
void engine_sim_complete(struct engine *e, unsigned w);
bool engine_sim_stalled(struct engine *e);
/* Worker w sleeps (on) or is up again (off), as a thread's worker_idle_wait
 * would say: while it sleeps the engine wakes it as it wakes a thread
 * (wake_sleepers' count and order, a policy's kick), clearing what
 * engine_sim_asleep reads; the driver then says off when it is up. */
void engine_sim_sleep(struct engine *e, unsigned w, bool on);
/* engine_submit as worker w's intake would call it (it takes one of the
 * roots itself, so one fewer sleeper is woken); w < 0: as engine_submit. */
void engine_sim_submit(struct engine *e, struct engine_graph *g, int w);
bool engine_sim_asleep(const struct engine *e, unsigned w);
/* Some tasks come with excl_nodes already set (simulated workloads that
 * bar tasks from devices): every hand-out is then checked. */
void engine_note_exclusions(struct engine *e);

void engine_counters(const struct engine *e, struct engine_counters *out);
/* Upper bound of latency histogram bucket i (graph/task.h,
 * ENGINE_LAT_BUCKETS), in ns; UINT64_MAX for the last (+Inf). */
uint64_t engine_latency_bound_ns(size_t i);
/* Ids ever given (GONE devices included): iterate and check
 * engine_device_state(). */
size_t engine_device_count(const struct engine *e);
const struct engine_device *engine_device(const struct engine *e, size_t i);

/* ---- elastic devices (docs/elastic.md) ----
 *
 * Device ids are stable: a task's device stays meaningful. The same device
 * (backend, name, model, hardware address, memory node) that comes back
 * after it was GONE and let go of everything gets its old id again;
 * other hardware gets a new one.
 * States: ACTIVE -> DRAINING -> GONE, DRAINING -> ACTIVE (resume). Only an
 * ACTIVE device is given tasks. A task whose kernel no ACTIVE device
 * implements waits (a device may be resumed or added) while a DRAINING one
 * implements it; once no device but GONE ones does, it fails with
 * -TDM_ENODEV (so does a graph that reads a buffer whose only valid copy
 * was on a device that failed). The device calls are made from any thread
 * but a worker's, one at a time (the caller serialises them). */

/* Adds a device: the id it had when it is a GONE device that comes back
 * (engine_device_reusable: its counters go on, its fault count starts
 * again), else the next id (the count before). Its worker starts at once
 * when the engine has worker threads; in simulation the driver steps it. A
 * device of a calibrated kind and model is priced at once by the shared
 * cost models. An accelerator's memory node must exist in the residency
 * already (residency_add_node). 0 and *id, or -TDM_ENOSPC (capacity),
 * -TDM_EINVAL (why in the log), -TDM_ESYS, -TDM_ENOMEM. */
int engine_device_add(struct engine *e, const struct backend_device *d, unsigned *id);
struct engine_device_add_params {
	uint32_t inject_faults; /* testing: fail this many launches as device faults */
};
/* The same with parameters (NULL: as engine_device_add). */
int engine_device_add_ex(struct engine *e, const struct backend_device *d,
                         const struct engine_device_add_params *p, unsigned *id);
/* The id engine_device_add would give d back now (a GONE slot of the same
 * device that let go of everything: engine_device_left), or -1 (a new id). */
int engine_device_reusable(const struct engine *e, const struct backend_device *d);
/* Whether id is GONE and let go of everything: its worker left, its memory
 * node was evacuated, the policy forgot it. Its device may come back. */
bool engine_device_left(const struct engine *e, unsigned id);
/* ACTIVE -> DRAINING: no new task is placed there; the tasks the policy
 * queued for it are re-placed on the others (policy device_draining);
 * tasks staged or running there finish there. Returns at once:
 * engine_device_busy() tells when it is empty. 0, or -TDM_EINVAL (no such
 * device, or GONE). */
int engine_device_drain(struct engine *e, unsigned id);
/* -> GONE, for good: as drain, then its worker finishes what is staged
 * there and exits. A staged task whose device fails meanwhile is re-run
 * elsewhere without counting as a fault attempt; one that completes keeps
 * its result. Its memory node's replicas are then dropped, the buffers
 * only it held written back first (residency_node_evacuate); a buffer that
 * cannot be read back is lost (its readers fail with -TDM_ENODEV). Returns
 * at once. 0, or -TDM_EINVAL. A GONE id stays GONE. */
int engine_device_remove(struct engine *e, unsigned id);
/* DRAINING -> ACTIVE. 0, or -TDM_EINVAL (not DRAINING). */
int engine_device_resume(struct engine *e, unsigned id);
/* GONE for an id never given. */
enum engine_dev_state engine_device_state(const struct engine *e, unsigned id);
/* Tasks staged or running on it now (0 for a GONE device whose worker left). */
unsigned engine_device_busy(const struct engine *e, unsigned id);
const char *engine_policy_name(const struct engine *e);
struct profiler *engine_profiler(const struct engine *e);
/* The policy's private state, for the readers of its own statistics
 * (llm_policy_moe_stats): valid until the engine is destroyed. */
void *engine_policy_priv(const struct engine *e);
void engine_set_spin_us(struct engine *e, uint32_t spin_us);
/* A new client: 0 or -TDM_ENOMEM. */
int engine_flow_add(struct engine *e, struct engine_flow *flow);
/* A flow's last graph is done and it will submit no more. */
void engine_flow_gone(struct engine *e, struct engine_flow *flow);

#endif
