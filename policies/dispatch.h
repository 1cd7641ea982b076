/* The dispatch core behind the cost-aware policies (dmda, heft, peft,
 * prio). They share everything (per-device weighted fair queues, the
 * earliest-finish-time estimates, whole-graph plans) and differ only in the
 * strategy a graph gets when neither it nor its client names one:
 *
 *   strategy = graph's policy_hint, else its flow's, else the policy's own.
 *
 * Strategies (enum tdm_policy_hint):
 *   EAGER  the shared any-device queue, FIFO per client; a worker takes
 *          from its own queue first, then from there.
 *   DMDA   per ready task, the device of least predicted finish time
 *          (transfers included): StarPU's dmda. Queue key: ready time.
 *   PRIO   dmda placement; queue order (task + graph priority) first, then
 *          earliest deadline, then ready order.
 *   HEFT   the whole graph planned at submission (placement/plan.h); each
 *   PEFT   task queued on its planned device, keyed by its planned start;
 *          re-planned when tasks drift from their predictions.
 *
 * Ready times, planned starts and deadlines are all CLOCK ns, so keys of
 * graphs placed by different strategies compare sensibly within a flow.
 * Across flows every queue is fair (placement/fairq.h). */
#ifndef TDM_POLICIES_DISPATCH_H
#define TDM_POLICIES_DISPATCH_H

#include <stdint.h>

#include "policies/policy.h"

int dispatch_init(const struct policy_params *p, uint8_t strategy, void **priv);
void dispatch_fini(void *priv);
void dispatch_graph_submitted(void *priv, struct engine_graph *g);
void dispatch_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker);
struct engine_task *dispatch_pick_next(void *priv, unsigned worker);
void dispatch_task_done(void *priv, struct engine_task *t, unsigned worker);
void dispatch_task_skipped(void *priv, struct engine_task *t);
void dispatch_graph_finished(void *priv, struct engine_graph *g);
size_t dispatch_peek(void *priv, unsigned worker, struct engine_task **out, size_t max);
bool dispatch_may_pick(void *priv, unsigned worker);
int dispatch_flow_added(void *priv, struct engine_flow *flow);
void dispatch_flow_gone(void *priv, struct engine_flow *flow);
void dispatch_device_added(void *priv, unsigned w);
void dispatch_device_draining(void *priv, unsigned w);
void dispatch_device_removed(void *priv, unsigned w);

/* The ops of a dispatch policy whose init passes its default strategy. */
#define DISPATCH_POLICY_OPS(NAME, INIT)                                                            \
	{                                                                                          \
		.abi_version = POLICY_ABI_VERSION, .name = NAME, .init = INIT,                     \
		.fini = dispatch_fini, .graph_submitted = dispatch_graph_submitted,                \
		.tasks_ready = dispatch_tasks_ready, .pick_next = dispatch_pick_next,              \
		.task_done = dispatch_task_done, .task_skipped = dispatch_task_skipped,            \
		.graph_finished = dispatch_graph_finished, .peek = dispatch_peek,                  \
		.may_pick = dispatch_may_pick, .flow_added = dispatch_flow_added,                  \
		.flow_gone = dispatch_flow_gone, .device_added = dispatch_device_added,            \
		.device_draining = dispatch_device_draining,                                       \
		.device_removed = dispatch_device_removed,                                         \
	}

/* A policy built on the dispatch core that looks at whole graphs (the
 * llm policy): called at graph_submitted for graphs of the DMDA strategy,
 * after the core's per-graph reset, from any intake thread. It may set
 * tasks' policy_node (1 + memory node): dmda then places such a task
 * among that node's devices (the least loaded by predicted work), and
 * among all when none of them may run it. fini is called by
 * dispatch_fini. */
struct dispatch_graph_hook {
	void (*graph)(void *ctx, struct engine_graph *g);
	void (*fini)(void *ctx);
	void *ctx;
	/* Optional: tasks became ready, before dmda places them (it may set
	 * their policy_node as graph may). */
	void (*ready)(void *ctx, struct engine_task **tasks, size_t n);
	/* Optional: for a released task of such a graph whose policy_node is
	 * still 0, the node it should run on (1 + memory node, 0: any), so
	 * that a decision made once per graph reaches its many tasks without
	 * a pass over them at submission. Any thread. */
	uint8_t (*task)(void *ctx, struct engine_task *t);
};
void dispatch_set_graph_hook(void *priv, const struct dispatch_graph_hook *h);
/* The hook's ctx (NULL: none). */
void *dispatch_graph_hook_ctx(void *priv);

/* Counters, for tests and metrics. */
struct dispatch_stats {
	uint64_t plans; /* graphs planned (heft/peft) */
	uint64_t plan_failures; /* planning failed: the graph went dmda */
	uint64_t drifts; /* planned tasks that ran beyond their spread */
	uint64_t repairs; /* re-plans of the rest of a graph */
	uint64_t repair_failures; /* re-plans the planner refused: the old plan stays */
	uint64_t replaced; /* queued tasks moved: their device could not run them any more */
	uint64_t stolen; /* queued tasks a same-node peer took for fairness (steal_fair) */
};
void dispatch_stats(void *priv, struct dispatch_stats *out);

/* Task i's device in g's current plan, or -1 when g has none (not planned,
 * or finished). */
int dispatch_planned_device(struct engine_graph *g, uint32_t i);

#endif
