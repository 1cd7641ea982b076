/* llm: the MoE part. When a router completes, the engine has read its
 * routing (docs/kernels.md, "Routing seen at run time") and released the
 * expert tasks some token chose, each priced by its routed token count.
 * The released experts of one router are split between the host's cores
 * and the accelerator by placement/moe_split's rule, on the cost models'
 * predictions of these very tasks: an expert whose weights are already on
 * the accelerator runs there; any other on the cores, or on the
 * accelerator after its weights cross the link, whichever finishes the
 * layer sooner (policy_node; dmda places within the node).
 *
 * Telemetry (llm_moe_stats; tandemctl moe, the status JSON's "moe", the
 * tandem_moe_* metrics), per layer (a router's position among its graph's
 * routers): experts looked up at release, hits (weights resident on the
 * accelerator), where they were sent, weight bytes sent over the link;
 * and whether the resident experts pay: the predicted time they save (the
 * layer's predicted time were none resident, less its time as split)
 * against the predicted link time of the loads that brought experts in.
 *
 * The expert cache: placement/moe_cache's tandem score decides which
 * experts' weights the accelerator keeps. An expert that ran there is
 * admitted (or not, by the score's admission) and its weight buffers are
 * homed on the accelerator (residency_set_home: eviction takes them
 * last); one the cache lets go is unhomed when its task is next released
 * (its buffers are alive then). The budget: three quarters of the
 * accelerator's memory less what other data (KV caches) is homed there
 * when the first router is seen; the KV tiers in turn count the homed
 * experts as used. Layers whose experts share one weight buffer are not
 * cached (homing is per buffer).
 *
 * Not here (docs/llm.md, Limits): next-layer prefetch, and re-splitting
 * the budget between experts and KV as load changes. */
#ifndef TDM_POLICIES_LLM_MOE_H
#define TDM_POLICIES_LLM_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "graph/task.h"

#define LLM_MOE_LAYERS 64u /* layers beyond count in the last */

struct llm_moe_layer {
	uint64_t lookups, hits; /* experts released; of them, weights resident */
	uint64_t on_cpu, on_accel, loads; /* where the split sent them (loads: of on_accel) */
	uint64_t load_bytes; /* weight bytes the loads had to copy in */
};

struct llm_moe_stats {
	uint64_t splits; /* routers whose released experts were split */
	uint32_t layers; /* layers seen */
	struct llm_moe_layer layer[LLM_MOE_LAYERS];
	double saved_ns; /* predicted layer time saved by resident experts, summed */
	double load_ns; /* predicted link time of the loads, summed */
	uint64_t decide_ns_max; /* one router's split */
	/* The expert cache (placement/moe_cache, the tandem score): its
	 * budget in experts, experts it holds now, admissions. */
	uint32_t cache_cap, cached;
	uint64_t cache_admits;
};

struct profiler;
struct residency;
struct llm_moe;

/* NULL when out of memory. accel: the accelerator's device index, its
 * memory node; host_dev: a host device; host_cores: host devices. */
struct llm_moe *llm_moe_create(struct profiler *prof, struct residency *res, int accel,
                               unsigned accel_node, int host_dev, uint32_t host_cores);
void llm_moe_free(struct llm_moe *M);

/* Tasks became ready: splits the guarded experts among them (sets their
 * policy_node); leaves every other task alone. Any thread. */
void llm_moe_ready(struct llm_moe *M, struct engine_task **tasks, size_t n);

void llm_moe_stats(struct llm_moe *M, struct llm_moe_stats *out);

#endif
