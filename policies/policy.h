/* The policy seam, modelled on the kernel's struct sched_class.
 *
 * The core owns locks, clocks and accounting; a policy owns only its queues
 * and private state, and must be safe to call from the intake thread and all
 * workers at once. Optional hooks may be NULL. */
#ifndef TDM_POLICIES_POLICY_H
#define TDM_POLICIES_POLICY_H

#include <stddef.h>

#include "daemon/engine.h"

struct policy_params {
	size_t nworkers; /* one per device for now; worker i drives device i */
	const struct engine_device *devices;
	/* For engine_runnable(): a policy hands a worker only tasks it may run. */
	const struct engine *engine;
};

struct tdm_policy_ops {
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
	void (*task_done)(void *priv, struct engine_task *t, unsigned worker);
	/* A client arrived: set up per-flow state in flow->policy_slot. */
	int (*flow_added)(void *priv, struct engine_flow *flow);
	/* A client's last task is done and it submits no more: drop its
	 * per-flow state. */
	void (*flow_gone)(void *priv, struct engine_flow *flow);
	/* Devices joined or left (elastic re-placement). */
	void (*devices_changed)(void *priv, const struct policy_params *p);
	size_t (*queued)(void *priv);
};

const struct tdm_policy_ops *policy_by_name(const char *name);
/* NULL-terminated list of registered policies. */
const struct tdm_policy_ops *const *policy_list(void);

extern const struct tdm_policy_ops policy_eager;
extern const struct tdm_policy_ops policy_ws;

#endif
