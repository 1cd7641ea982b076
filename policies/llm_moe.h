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
 * last); one the cache lets go is unhomed at once through the releasing
 * graph's task of that expert (its buffers are alive while the graph is),
 * else when its task is next released. Layers whose experts share one
 * weight buffer are not cached (homing is per buffer).
 *
 * The budget follows the load (FreeToken's re-split), recomputed at every
 * router: three quarters of the accelerator's memory budget as it is now
 * (residency's node cap, which `tandemctl device budget` changes) less
 * what other data (KV caches) is homed there now. The KV tiers have the
 * first claim (policies/llm.c does not count the homed experts against
 * its KV budget): KV that grows, or a budget that shrinks, shrinks the
 * cache, whose lowest-scored experts leave (unhomed); KV that shrinks
 * grows it.
 *
 * Next-layer prefetch: when layer l's router completes, the experts of
 * layer l + 1 the score finds likeliest (moe_cache_p_next) and the cache
 * admits are homed on the accelerator and queued for prefetch, as many
 * as the link carries in layer l's predicted time, and only where the
 * accelerator is predicted faster than the cores. The accelerator's own
 * worker issues the copies (llm_moe_prefetch, from its thread, on its
 * copy queue: residency_prefetch, holds dropped at once). Which experts
 * layer l + 1 uses is known only at its router's completion: there is no
 * earlier signal in the daemon than layer l's routing. At layer l + 1's
 * split, a prefetched expert whose copy is predicted not to have arrived
 * (its issue time plus the link model's copy time) counts as absent: the
 * split runs it on the cores, or on the accelerator after its (already
 * moving) weights when that is sooner; a step never waits on a prefetch
 * it did not plan for. Bytes prefetched, used (the expert ran on the
 * accelerator at that step) and wasted (not chosen there, not arrived,
 * run on the cores, or its graph ended first) are counted. */
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
	/* The accelerator's memory split, at the last router: its budget
	 * (residency node cap), the other data (KV caches) and the expert
	 * weights homed there; experts let go because the budget left them
	 * no room, and those not yet unhomed (no live task to reach them). */
	uint64_t budget_bytes, kv_bytes, expert_bytes;
	uint64_t budget_evictions;
	uint32_t unhome_pending;
	/* Next-layer prefetch: copies issued and their bytes; of the bytes,
	 * used (the expert ran on the accelerator at the step they were
	 * fetched for) and wasted; prefetches its layer's router overtook
	 * before the copy was issued. */
	uint64_t prefetches, prefetch_bytes, prefetch_used_bytes, prefetch_wasted_bytes;
	uint64_t prefetch_late;
};

struct profiler;
struct residency;
struct engine_core;
struct llm_moe;

/* NULL when out of memory. accel: the accelerator's device index (its
 * worker's), its memory node; host_dev: a host device; host_cores: host
 * devices; core: kicks the accelerator's worker when a prefetch is
 * queued (may be NULL). */
struct llm_moe *llm_moe_create(struct profiler *prof, struct residency *res,
                               const struct engine_core *core, int accel, unsigned accel_node,
                               int host_dev, uint32_t host_cores);
void llm_moe_free(struct llm_moe *M);

/* Tasks became ready: splits the guarded experts among them (sets their
 * policy_node); leaves every other task alone. Any thread. */
void llm_moe_ready(struct llm_moe *M, struct engine_task **tasks, size_t n);

/* The accelerator's worker, on its own thread: issues the queued
 * prefetches (the policy's prefetch hook). */
void llm_moe_prefetch(struct llm_moe *M);

/* g's last task is done: its queued prefetches and its index go (before
 * its buffers may). */
void llm_moe_graph_finished(struct llm_moe *M, const struct engine_graph *g);

/* Bytes of expert weights the cache has homed on the accelerator now (the
 * KV tiers do not count them against their budget). Any thread. */
uint64_t llm_moe_homed_bytes(struct llm_moe *M);

void llm_moe_stats(struct llm_moe *M, struct llm_moe_stats *out);

#endif
