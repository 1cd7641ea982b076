/* llm: the dispatch core's dmda, plus the LLM decode step decision.
 *
 * At graph_submitted the policy looks at the whole graph. Its attention
 * tasks (KERNEL_ATTN_DECODE) name their KV caches (arguments 1 and 2, K
 * and V: a buffer allocated with TDM_BUF_KV). For each KV buffer it
 * decides a tier, its home node: the accelerator's memory while the
 * accelerator's budget (devices.mem_cap, less what the graph's other data
 * takes there: weights, activations; not routed experts' weights, which
 * are the expert cache's share and give way to KV: llm_moe.h) holds it,
 * else host memory. A
 * buffer keeps its tier from step to step; it is demoted when the budget
 * no longer holds it and promoted when room frees (residency_set_home:
 * nothing is copied then; the next task on the new home copies in only
 * what is missing there, overlapped by prefetch).
 *
 * Then placement/llm_step's decision, fed with the cost models'
 * predictions of this graph's own tasks (profiler_predict), chooses where
 * each host-resident buffer's attention runs: on the cores next to its KV
 * (only q goes down and o comes back), or on the accelerator (the missing
 * KV rows cross the link) when the step is shorter that way. The tasks
 * that write a KV buffer (the append of the new row) run on its home.
 * Everything else is dmda.
 *
 * Limits: one accelerator (the first with its own memory node); steps of
 * at most LLM_STEP_MAX attention tasks (the rest are dmda); no NEO-style
 * pipelining inside one graph (a client gets it by submitting two
 * sub-batch graphs, as llm_serve --sub-batches 2 does). docs/llm.md. */
#ifndef TDM_POLICIES_LLM_H
#define TDM_POLICIES_LLM_H

#include <stdint.h>

struct llm_policy_stats {
	uint64_t steps; /* graphs with attention over KV decided */
	uint64_t attn_host, attn_accel; /* attention tasks placed on each side */
	uint64_t attn_streamed; /* of attn_accel: host-resident KV read on the accelerator */
	uint64_t demotes, promotes; /* tier changes of KV buffers */
	uint64_t kv_accel_bytes, kv_host_bytes; /* the last step's KV by tier */
	uint64_t decide_ns_last, decide_ns_max; /* the whole graph_submitted decision */
	uint64_t decide_ns_sum; /* over all steps */
	uint32_t last_mode; /* enum llm_step_mode of the last step */
	uint32_t last_layers; /* the layers the last step was found to have */
};

/* 0, or -1 when priv is not the llm policy's. */
int llm_policy_stats(void *priv, struct llm_policy_stats *out);

/* The MoE split's telemetry (llm_moe.h). 0, or -1 when priv is not the
 * llm policy's or it has no accelerator to split with. */
struct llm_moe_stats;
int llm_policy_moe_stats(void *priv, struct llm_moe_stats *out);

#endif
