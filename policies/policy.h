/* The policy seam, modelled on the kernel's struct sched_class.
 *
 * The core owns locks, clocks and accounting; a policy owns only its queues
 * and private state, and must be safe to call from the intake thread and all
 * workers at once. Optional hooks may be NULL. */
#ifndef TDM_POLICIES_POLICY_H
#define TDM_POLICIES_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "graph/task.h"

struct profiler;
struct residency;

/* Knobs of the cost-aware policies ([policy] in the configuration). */
struct policy_tuning {
	double dmda_alpha; /* weight of the predicted finish time */
	double dmda_beta; /* weight of the transfer time */
	uint32_t plan_refine_iters; /* heft/peft: extra candidate orders per graph */
	bool plan_repair; /* heft/peft: re-plan when tasks drift beyond their spread */
	/* llm: keep fewer KV caches on the accelerator than its budget holds
	 * when the cost models predict a shorter step (false: fill it). */
	bool llm_tiers_by_cost;
};

extern const struct policy_tuning policy_tuning_defaults;

struct policy_params {
	size_t nworkers; /* devices at start; worker i drives device i */
	/* Capacity: devices may be added at run time up to this many
	 * (device_added); per-device arrays are sized to it. >= nworkers. */
	size_t max_workers;
	/* [max_workers]: devices[i] is valid for i < nworkers, and for a device
	 * added later from its device_added call on. */
	const struct engine_device *devices;
	/* The core's services: a policy hands a worker only tasks it may run
	 * (core_runnable) and wakes the one worker that may take a task
	 * (core_kick). May be NULL (tests). */
	const struct engine_core *core;
	const struct clock_source *clock;
	struct profiler *prof; /* NULL: no cost models (cost-aware policies use 1 per task) */
	struct residency *res; /* NULL: host memory only */
	const struct policy_tuning *tuning; /* never NULL */
};

/* The version of this seam (struct policy_ops, struct policy_params, the
 * task, graph and flow of graph/task.h a policy sees, and the core's
 * services). Raised whenever one of them changes in a way a policy written
 * for the old one would get wrong; engine_create refuses a policy of
 * another version. */
/* 2: max_workers, device_added/draining/removed; 3: prefetch; 4: may_pick */
#define POLICY_ABI_VERSION 4u

struct policy_ops {
	/* POLICY_ABI_VERSION as the policy was built; the first member in
	 * every version. */
	uint32_t abi_version;
	const char *name;
	int (*init)(const struct policy_params *p, void **priv);
	void (*fini)(void *priv);
	/* Whole-graph planning (HEFT ranks, ...), before any task is ready. */
	void (*graph_submitted)(void *priv, struct engine_graph *g);
	/* Push: tasks became ready. worker is the releasing worker, or -1 for
	 * the intake thread. */
	void (*tasks_ready)(void *priv, struct engine_task **tasks, size_t n, int worker);
	/* Pop: the next task for this worker, or NULL. */
	struct engine_task *(*pick_next)(void *priv, unsigned worker);
	/* t finished on worker (t->start_ns/end_ns set). */
	void (*task_done)(void *priv, struct engine_task *t, unsigned worker);
	/* Optional: t was released but completes unrun (no token was routed
	 * to it, docs/kernels.md): it never reaches tasks_ready nor task_done.
	 * A policy that orders a graph's tasks in advance moves past it. */
	void (*task_skipped)(void *priv, struct engine_task *t);
	/* The graph's last task is done; free g->policy_graph. */
	void (*graph_finished)(void *priv, struct engine_graph *g);
	/* Prefetch: up to max tasks queued for this worker's device, next
	 * first, left queued (optional). Called by the worker itself. */
	size_t (*peek)(void *priv, unsigned worker, struct engine_task **out, size_t max);
	/* Optional: false when pick_next(priv, worker) would return NULL now
	 * (nothing queued that this worker may take), found without side
	 * effects; true when it may return a task. The simulator asks it
	 * before stepping an idle device, most of whose looks find nothing
	 * under a policy with per-device queues. NULL: pick_next is asked. */
	bool (*may_pick)(void *priv, unsigned worker);
	/* A client arrived: set up per-flow state in flow->policy_slot. */
	int (*flow_added)(void *priv, struct engine_flow *flow);
	/* A client's last task is done and it submits no more: drop its
	 * per-flow state. */
	void (*flow_gone)(void *priv, struct engine_flow *flow);
	/* Elastic devices (docs/elastic.md). Optional (NULL: the core falls
	 * back to its FIFO when a device drains). Called from any thread, one
	 * device change at a time, with the device's state (engine_device.state)
	 * already set.
	 * device_added: worker w became ACTIVE: a new device (w == the count
	 * before; devices[w] valid from now on) or one resumed from DRAINING.
	 * The policy may place tasks on w from now on.
	 * device_draining: w takes no new task (DRAINING, or GONE): the policy
	 * moves every task it holds for w to other devices (tasks_ready's
	 * placement) and repairs plans that used w. Tasks already handed to w
	 * are not its business. The core waits for w's prefetch to be over first.
	 * device_removed: w is GONE for good and its worker holds nothing any
	 * more; per-device state of w may be dropped (an id is never reused). */
	void (*device_added)(void *priv, unsigned w);
	void (*device_draining)(void *priv, unsigned w);
	void (*device_removed)(void *priv, unsigned w);
	/* Optional: worker w's prefetch pass, on its own thread (the one that
	 * may issue copies on its device's queue: residency_prefetch for its
	 * node), while its device computes and before it sleeps. A policy
	 * that wants data on w's node ahead of the tasks it has committed
	 * there (the llm policy's next-layer experts) issues it here and
	 * kicks w (core_kick) when it queues some. */
	void (*prefetch)(void *priv, unsigned w);
};

/* 0 if p speaks this seam's version; else -TDM_EINVAL and a one-line
 * reason in why (may be NULL): "policy foo: ABI version 2, tandemd speaks
 * 1: refused". */
int policy_check(const struct policy_ops *p, char *why, size_t whylen);

const struct policy_ops *policy_by_name(const char *name);
/* enum tdm_policy_hint by name ("default", "eager", "dmda", "heft", "peft",
 * "prio"), or -1; and back. */
int policy_hint_by_name(const char *name);
const char *policy_hint_name(unsigned hint);
/* NULL-terminated list of registered policies. */
const struct policy_ops *const *policy_list(void);

extern const struct policy_ops policy_eager;
extern const struct policy_ops policy_ws;
extern const struct policy_ops policy_fifo; /* the watchdog's fallback */
extern const struct policy_ops policy_dmda;
extern const struct policy_ops policy_heft;
extern const struct policy_ops policy_peft;
extern const struct policy_ops policy_prio;
extern const struct policy_ops policy_llm; /* dmda + KV tiers + the decode step (llm.h) */

#endif
