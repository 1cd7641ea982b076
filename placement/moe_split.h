/* The MoE layer decision: where each activated expert of one layer runs in
 * one step, from predicted costs alone.
 *
 * A mixture-of-experts layer's router picks, per token, top-k of the
 * layer's routed experts. In a step (a decode batch, or a prefill chunk)
 * the activated experts each see some number of tokens. An expert whose
 * weights are resident in GPU memory runs there; any other either runs on
 * the host's cores, next to its weights in host memory, or its weights are
 * loaded over the link and it runs on the GPU once they arrive. The CPU
 * and the GPU work at once; the layer ends when both have.
 *
 * The layer's time for an assignment (moe_split_eval):
 *   GPU:  resident experts, then loaded ones in load order, each starting
 *         when its weights have arrived (the copies double-buffered
 *         against the GPU's compute, a flow shop: link, then GPU);
 *   link: loads one after another from when the link is free;
 *   CPU:  the CPU's experts one after another, each on all its cores,
 *         plus a hand-off (the hidden states down and back up the link);
 *         while the link is busy (loads, or prefetches still in flight)
 *         the copies read host memory too, and the CPU's experts run at
 *         what the socket leaves them (cpu_gbps_shared).
 *
 * moe_split_plan (tandem) finds the assignment of least predicted time:
 * the best of every "load the m experts with most tokens, compute the rest
 * on the CPU" prefix (loads in Johnson's order), then single moves while
 * they shorten the layer. moe_split_two_ended is HybriMoE's rule (arXiv
 * 2504.05897): experts ordered by load, the GPU takes from the heavy end,
 * the CPU from the light end, whichever would be free first takes next.
 * Both use the same cost model (struct moe_cost), so the comparison is of
 * the rules alone. Pure functions: the simulator and a daemon policy call
 * the same code. docs/llm.md, "MoE experts across CPU and GPU". */
#ifndef TDM_PLACEMENT_MOE_SPLIT_H
#define TDM_PLACEMENT_MOE_SPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement/llm_step.h"

/* A MoE transformer's shape. */
struct moe_model {
	char name[32];
	uint32_t layers; /* all layers */
	uint32_t dense_layers; /* the first ones have a dense FFN instead of experts */
	uint32_t d_model, experts, topk, expert_ffn;
	uint32_t shared_ffn; /* shared experts' FFN width in all (0: none) */
	uint32_t dense_ffn; /* the dense layers' FFN width */
	double attn_params; /* attention parameters per layer */
	uint32_t vocab, dtype_bytes;
};

/* "mixtral-8x7b", "dsv2-lite", "qwen1.5-moe": 0, else -1. */
int moe_model_by_name(const char *name, struct moe_model *out);

/* The cost model: constants derived once from the model and the machine
 * (the machine as llm_hw_from_machine describes it). */
struct moe_cost {
	struct moe_model m;
	struct llm_hw hw;
	uint32_t moe_layers; /* layers - dense_layers */
	double expert_bytes, expert_flops_tok; /* one routed expert */
	double moe_dense_bytes, moe_dense_flops_tok; /* per MoE layer: attention, shared, router */
	double dense_bytes, dense_flops_tok; /* per dense layer */
	double head_bytes, head_flops_tok; /* the LM head */
	double nonexpert_bytes; /* everything but the routed experts */
	double routed_bytes; /* all routed experts */
	uint32_t cpu_cores; /* cores the experts use (one drives the GPU) */
	double cpu_gbps; /* what they read together */
	/* What they read while the link streams experts from the same host
	 * memory (a copy's DMA reads come out of the socket's bandwidth):
	 * min(cpu_gbps, socket - link), at least a tenth of cpu_gbps. */
	double cpu_gbps_shared;
};

/* 0, or -1 when a figure is missing or out of range. */
int moe_cost_init(struct moe_cost *c, const struct moe_model *m, const struct llm_hw *hw);

/* Predicted times in ns (rooflines):
 *   expert_gpu / expert_cpu: one routed expert over `tokens` tokens;
 *   load: one routed expert's weights over the link;
 *   dense: the GPU-resident part of one layer (attention, shared experts,
 *          router; the dense FFN for a dense layer) over `tokens` tokens;
 *   head: the LM head;
 *   handoff: `tokens` hidden states down to the CPU and back. */
double moe_t_expert_gpu(const struct moe_cost *c, double tokens);
double moe_t_expert_cpu(const struct moe_cost *c, double tokens);
/* The same while the link streams (cpu_gbps_shared). */
double moe_t_expert_cpu_shared(const struct moe_cost *c, double tokens);
double moe_t_load(const struct moe_cost *c);
double moe_t_dense(const struct moe_cost *c, bool dense_layer, double tokens);
double moe_t_head(const struct moe_cost *c, double tokens);
double moe_t_handoff(const struct moe_cost *c, double tokens);
/* Tokens per expert from which loading it and running it on the GPU is
 * faster than running it on the CPU (the prefill break-even, from the
 * cost model and the link's bandwidth); UINT32_MAX when never. */
uint32_t moe_breakeven_tokens(const struct moe_cost *c);

enum moe_run { MOE_RUN_GPU = 0, MOE_RUN_CPU = 1, MOE_RUN_LOAD = 2 };
enum { MOE_ALLOW_CPU = 1u << 0, MOE_ALLOW_LOAD = 1u << 1 };

#define MOE_SPLIT_MAX 1024u

struct moe_split_expert {
	uint32_t tokens; /* >= 1 */
	bool resident; /* weights in GPU memory */
};

/* Measured costs in place of the model's (a daemon policy's cost models'
 * predictions): per activated expert its GPU and CPU time, one load's and
 * the hand-off's. Host-memory sharing is in the measurements or nowhere:
 * the CPU's times are taken as they are under a busy link. */
struct moe_split_times {
	const double *gpu_ns, *cpu_ns; /* [n] */
	double load_ns, handoff_ns;
};

struct moe_split_in {
	const struct moe_cost *cost; /* NULL when times is given */
	const struct moe_split_times *times; /* NULL: the cost model's */
	const struct moe_split_expert *e;
	uint32_t n; /* activated experts, at most MOE_SPLIT_MAX */
	double tokens; /* the step's tokens (the hand-off's size) */
	double link_free_ns; /* the link is busy this long after the layer starts */
	unsigned allow; /* MOE_ALLOW_*: where non-resident experts may go */
};

struct moe_split_plan {
	double t_ns; /* the layer's predicted time */
	double t_gpu_ns, t_cpu_ns, t_link_ns; /* when each finishes */
	uint32_t ngpu, ncpu, nload;
};

/* The layer's time for where[] (enum moe_run per expert); loads in the
 * order `order` lists them (NULL: index order). 0 or -1 (bad input, a
 * non-resident expert on the GPU, a choice not allowed). */
int moe_split_eval(const struct moe_split_in *in, const uint8_t *where, const uint32_t *order,
                   struct moe_split_plan *out);

/* tandem's split (see above). scratch: 2n uint32_t. Deterministic; no
 * allocation. 0 or -1 on bad input (also when a non-resident expert has
 * nowhere allowed to go). */
int moe_split_plan(const struct moe_split_in *in, uint8_t *where, uint32_t *scratch,
                   struct moe_split_plan *out);
/* HybriMoE's two-ended greedy on the same costs. Same contract. */
int moe_split_two_ended(const struct moe_split_in *in, uint8_t *where, uint32_t *scratch,
                        struct moe_split_plan *out);

#endif
