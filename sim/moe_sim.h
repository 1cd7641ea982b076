/* MoE inference with experts across CPU and GPU, in the simulator:
 * `tandemd --simulate -m MACHINE -w moe:model=...,budget=...,batch=...`
 * (docs/llm.md, "MoE experts across CPU and GPU").
 *
 * A routing trace (workload/moe_trace.h) is replayed step by step: a
 * decode step is one token of each of `batch` sequences, a prefill step a
 * chunk of one prompt's tokens. Per layer the GPU runs the dense part
 * (attention, shared experts, router), then the activated routed experts
 * run where the policy puts them, with the copy queue carrying on-demand
 * loads and, while the layer computes, prefetches of the next layer's
 * experts into the link's idle time before the next router (a prefetch
 * never delays a step; one not arrived in time counts as absent, so its
 * expert goes to the CPU). Times are the cost model's
 * (placement/moe_split.h); the GPU's expert budget is the cache's
 * (placement/moe_cache.h).
 *
 * Policies (the same trace, costs and budget):
 *   tandem    moe_split_plan + the tandem cache + prefetch of the next
 *             layer's experts by predicted probability, where the CPU time
 *             it is expected to save beats the time the copy takes from the
 *             CPU's experts (both read host memory); experts loaded on
 *             demand stay for their layer only;
 *   static    kTransformers: every routed expert on the CPU, the rest on
 *             the GPU (the budget unused);
 *   ncpumoe   llama.cpp --n-cpu-moe N: the first N MoE layers' experts on
 *             the CPU, the others' all on the GPU (N from the budget);
 *   hot       Fiddler: a static hot set (the most chosen experts of a
 *             profiling trace) on the GPU, misses on the CPU, both at once;
 *   hybrimoe  the two-ended greedy split + MRS cache + prefetch of the
 *             next layer's top-k by MRS score;
 *   lru       every miss loaded on demand, LRU eviction, no CPU;
 *   belady    tandem's split with the optimal cache (MIN with bypass) and
 *             an oracle prefetch of the next layer's actual experts: the
 *             bound. */
#ifndef TDM_SIM_MOE_SIM_H
#define TDM_SIM_MOE_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement/moe_cache.h"
#include "placement/moe_split.h"
#include "sim/machine.h"
#include "workload/moe_trace.h"

enum moe_policy {
	MOE_POL_TANDEM = 0,
	MOE_POL_STATIC,
	MOE_POL_NCPUMOE,
	MOE_POL_HOT,
	MOE_POL_HYBRIMOE,
	MOE_POL_LRU,
	MOE_POL_BELADY,
	MOE_POL_COUNT
};

const char *moe_policy_name(enum moe_policy p);
int moe_policy_by_name(const char *name, enum moe_policy *out); /* 0 or -1 */

struct moe_sim_opts {
	enum moe_policy policy;
	double budget; /* GPU expert budget: share of the routed experts, 0 .. 1 */
	uint32_t batch; /* decode: sequences a step (the trace's streams) */
	uint32_t prefill_tokens; /* > 0: prefill, chunks of this many tokens of one stream */
	double gpu_util; /* share of GPU memory for weights (0: 0.9) */
	double reserve_bytes; /* KV, activations, load buffers (0: 1 GiB) */
};

struct moe_sim_result {
	bool fits; /* non-expert weights + the budget fit the GPU */
	double gpu_bytes; /* what the cell needs */
	uint32_t cap; /* experts the budget holds */
	uint32_t ncpu_layers; /* ncpumoe's N */
	uint64_t steps;
	double tokens, time_ns, tok_s;
	double lookups, hits, hit_pct; /* activated experts found resident */
	double loads, cpu_experts; /* on-demand loads; experts run on the CPU */
	double prefetched, prefetch_used, prefetch_late;
	double prefetch_missed; /* lookups that missed, where the policy prefetches */
	double precision, recall; /* of prefetch: used / prefetched; used / (used + misses) */
	double wasted_bytes_tok; /* prefetched, never used, per token */
	double decide_ns, decisions; /* wall time in the split decision */
	/* Where the time goes (simulated ns, summed over layer steps): the
	 * GPU's serial part (dense layers, attention, shared experts, router,
	 * head), the routed experts' part (max of CPU and GPU), the CPU's and
	 * the GPU's busy time within it, the link's busy time (loads and
	 * prefetches), and layer steps where the CPU finished last. */
	double t_serial_ns, t_experts_ns, t_cpu_ns, t_gpu_ns, t_link_ns;
	double cpu_bound_layers;
};

/* The machine as the model sees it: llm_hw_from_machine's figures. */
int moe_cost_from_machine(const struct machine *m, const char *model, struct moe_cost *c, char *err,
                          size_t errlen);

/* Replays t under o. profile: a profiling trace of the same model (other
 * text): the hot set is its most chosen experts, and the caches' scores
 * (LRU's, MRS's, tandem's chains) are warmed by observing it before the
 * run, as a deployment would from its own history; NULL: the hot set is
 * t's own and nothing is warmed. 0, or -TDM_EINVAL / -TDM_ENOMEM with a
 * reason. A cell that does not fit the GPU returns 0 with r->fits false
 * and nothing simulated. */
int moe_sim_run(const struct moe_cost *c, const struct moe_trace *t,
                const struct moe_trace *profile, const struct moe_sim_opts *o,
                struct moe_sim_result *r, char *err, size_t errlen);

/* The hit rate of a cache replay: `streams` tokens a step, each step's
 * union of chosen experts per layer looked up, misses admitted (forced for
 * lru, lfu and mrs, by the policy's admission for tandem and belady, never
 * for hot). The cache starts with hot[] (cap of them; NULL: empty).
 * Percent of lookups, or -1. */
double moe_cache_replay(const struct moe_trace *t, uint32_t streams, enum moe_evict pol,
                        uint32_t cap, const uint8_t *hot);

/* The cap most often chosen experts of t's first `tokens` tokens (0: all),
 * flagged in hot[layers * experts]. */
void moe_hot_set(const struct moe_trace *t, uint32_t tokens, uint32_t cap, uint8_t *hot);

/* The generator's routing shape for a model ("mixtral", "qwen", "dsv2"). */
const char *moe_shape_of_model(const char *model);

/* `-w moe:SPEC` for tandemd --simulate. Returns the exit status. */
int moe_sim_cli(const struct machine *m, const char *spec, const char *policies, bool json);

#endif
