/* The LLM decode step decision: where each request's attention runs in one
 * decode step, and how the step is arranged, from predicted costs alone.
 *
 * A decode step runs, per layer, the batch's linear layers on the GPU (the
 * weights live there) and one attention per request over that request's KV
 * cache. A request's KV lives in GPU memory or in host memory (its tier).
 * For a host-resident request the attention either runs on the CPU cores
 * next to its KV (only q goes down and o comes back over the link), or its
 * KV streams over the link to the GPU for this step (read once, not kept).
 * The step is arranged one of three ways:
 *
 *   LLM_STEP_GPU      host-resident requests do not run this step (offload
 *                     does not pay);
 *   LLM_STEP_OVERLAP  one batch: CPU attention and link streams run
 *                     alongside the GPU's work of the same step (APEX's
 *                     asynchronous overlap); step = max(GPU, CPU, link)
 *                     plus a per-layer hand-off;
 *   LLM_STEP_PIPELINE two sub-batches (NEO's asymmetric pipelining): the CPU
 *                     attention of one sub-batch runs under the GPU's linear
 *                     layers of the other; the weights are read twice.
 *
 * Everything here is a pure function of the costs and of the step's
 * requests. The costs come from the caller (struct llm_step_costs): the
 * simulator gives the roofline of each operation (struct llm_cost, built
 * from a machine's figures), the daemon's llm policy (policies/llm.c) its
 * cost models' predictions; both call the same decision. docs/llm.md
 * describes the model and the rule. */
#ifndef TDM_PLACEMENT_LLM_STEP_H
#define TDM_PLACEMENT_LLM_STEP_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decoder-only transformer's shape (LLaMA family). */
struct llm_model {
	char name[32];
	uint32_t layers, d_model, heads, kv_heads, head_dim, ffn, vocab;
	uint32_t dtype_bytes; /* 2: fp16 weights and KV */
};

/* "llama2-7b", "llama3.1-8b": 0, else -1. */
int llm_model_by_name(const char *name, struct llm_model *out);

/* The machine as the step sees it: one GPU, the host's cores, the link. */
struct llm_hw {
	double gpu_mem_bytes; /* device memory */
	double gpu_gbps; /* device memory bandwidth */
	double gpu_gflops; /* fp16 matrix throughput */
	double gpu_launch_ns; /* one kernel launch */
	uint32_t cpu_cores; /* host cores in all */
	double core_gbps; /* what one core alone reads from memory */
	double socket_gbps; /* shared by the cores (0: no contention) */
	double cpu_gflops; /* one core */
	double cpu_launch_ns; /* handing work to a core */
	double link_gbps, link_latency_ns; /* host <-> GPU, each direction */
};

/* The cost model: constants derived once from the model and the machine. */
struct llm_cost {
	struct llm_model m;
	struct llm_hw hw;
	double weight_bytes; /* all weights, fp16 */
	double linear_flops_tok; /* flops of the linear layers per token */
	double kv_tok_bytes; /* K and V of one token, all layers */
	double qo_req_bytes; /* per CPU request per step: q and the new K/V row down, o up */
	uint32_t attn_cores; /* cores CPU attention may use (one drives the GPU) */
	double cpu_attn_gbps; /* effective CPU attention bandwidth, all attn_cores busy */
};

/* The cost models' range checks: v finite and > 0; finite and >= 0. */
static inline bool cost_pos(double v)
{
	return isfinite(v) && v > 0;
}

static inline bool cost_nonneg(double v)
{
	return isfinite(v) && v >= 0;
}

/* 0, or -1 when a figure is missing or out of range (not finite, <= 0). */
int llm_cost_init(struct llm_cost *c, const struct llm_model *m, const struct llm_hw *hw);

/* Every figure of hw finite, rates and sizes positive, latencies >= 0,
 * at least one core: what llm_cost_init and moe_cost_init require. */
bool llm_hw_valid(const struct llm_hw *hw);

/* Predicted times in ns (the roofline of each operation):
 *   linear: the batch's linear layers over `tokens` rows (decode tokens +
 *           prefill tokens), all layers and the LM head: max(weights /
 *           GPU bandwidth, flops / fp16 throughput) plus a launch per layer;
 *   attn_gpu: attention over kv_tokens of KV in GPU memory;
 *   attn_cpu: attention of nreq requests over kv_tokens of host KV on the
 *           cores: bytes / min(cores used * core_gbps, socket_gbps), with
 *           cores used = min(attn_cores, nreq * kv_heads) (a core per
 *           request and KV head at most), plus a hand-off per layer;
 *   link:   bytes over the link in `copies` copies. */
double llm_t_linear(const struct llm_cost *c, double tokens);
double llm_t_attn_gpu(const struct llm_cost *c, double kv_tokens);
double llm_t_attn_cpu(const struct llm_cost *c, uint32_t nreq, double kv_tokens);
double llm_t_link(const struct llm_cost *c, double bytes, uint32_t copies);
/* Prefill attention of a chunk of `chunk` tokens after `ctx` earlier
 * tokens of the same request (compute-bound, on the GPU). */
double llm_t_prefill_attn(const struct llm_cost *c, double ctx, double chunk);
/* Cores CPU attention of nreq requests keeps busy. */
uint32_t llm_cpu_cores_used(const struct llm_cost *c, uint32_t nreq);

enum llm_tier { LLM_TIER_GPU = 0, LLM_TIER_HOST = 1 };
enum llm_run { LLM_RUN_GPU = 0, LLM_RUN_CPU, LLM_RUN_STREAM, LLM_RUN_SKIP };
enum llm_step_mode { LLM_STEP_GPU = 0, LLM_STEP_OVERLAP, LLM_STEP_PIPELINE, LLM_STEP_SERIAL };

/* Which arrangements the caller allows (a baseline allows fewer). */
enum {
	LLM_ALLOW_OVERLAP = 1u << 0,
	LLM_ALLOW_PIPELINE = 1u << 1,
	LLM_ALLOW_STREAM = 1u << 2, /* host KV streamed to the GPU for one step */
	LLM_ALLOW_SKIP = 1u << 3, /* LLM_STEP_GPU may be chosen */
	LLM_FORCE_SERIAL = 1u << 4, /* CPU attention after the GPU's work, no overlap */
};

/* The costs the decision weighs, in ns, supplied by the caller. The
 * functions must be pure, non-negative and non-decreasing in their
 * arguments (llm_t_* below have that shape):
 *   linear(tokens): the GPU's work of the step besides attention, for a
 *     batch of `tokens` rows;
 *   attn_gpu(kv_tokens): GPU attention over that much KV in GPU memory;
 *   attn_cpu(nreq, kv_tokens): CPU attention of nreq requests over that
 *     much host KV, on the cores it keeps busy (cores_used(nreq));
 *   link(bytes, copies): that much over the link in that many copies.
 * kv_tok_bytes: KV bytes per token (what streaming moves); qo_req_bytes:
 * what one CPU request moves per step (q and the new K/V row down, o up);
 * layers: hand-offs per step (one per layer); link_latency_ns: one. */
struct llm_step_costs {
	void *ctx;
	double (*linear)(void *ctx, double tokens);
	double (*attn_gpu)(void *ctx, double kv_tokens);
	double (*attn_cpu)(void *ctx, uint32_t nreq, double kv_tokens);
	double (*link)(void *ctx, double bytes, uint32_t copies);
	uint32_t (*cores_used)(void *ctx, uint32_t nreq);
	double kv_tok_bytes, qo_req_bytes, link_latency_ns;
	uint32_t layers; /* >= 1 */
};

/* The roofline costs of c (llm_t_*) as a cost table; c must outlive it. */
void llm_step_costs_roofline(const struct llm_cost *c, struct llm_step_costs *out);

struct llm_step_req {
	uint32_t kv_tokens; /* KV length this step reads (>= 1) */
	uint8_t tier; /* enum llm_tier */
};

struct llm_step_in {
	/* The costs: `costs` when set, else the roofline of `cost`. */
	const struct llm_step_costs *costs;
	const struct llm_cost *cost;
	const struct llm_step_req *req;
	uint32_t n; /* decoding requests, at most LLM_STEP_MAX */
	double prefill_tokens; /* prompt tokens prefilled in this step (on the GPU) */
	double prefill_attn_ns; /* their attention (llm_t_prefill_attn, summed) */
	double link_busy_ns; /* copies already on the link this step (tier moves) */
	double stream_scratch_bytes; /* GPU memory free for streamed KV (one layer at a time) */
	unsigned allow; /* LLM_ALLOW_* */
};

struct llm_step_plan {
	enum llm_step_mode mode;
	double t_step_ns; /* predicted */
	double t_gpu_ns, t_cpu_ns, t_link_ns; /* busy time of each resource */
	uint32_t ngpu, ncpu, nstream, nskip;
	uint32_t cpu_cores; /* cores the CPU attention keeps busy */
	double decoded; /* tokens the step produces (requests not skipped) */
};

#define LLM_STEP_MAX 4096u

/* Plans one step: where[i] (enum llm_run) for each of in->n requests and
 * the arrangement with the shortest time per decoded token among those
 * allowed. GPU-resident requests always run on the GPU; each host-resident
 * one on the CPU, streamed (LLM_ALLOW_STREAM) or skipped (only in
 * LLM_STEP_GPU). Deterministic; O(n log n); no allocation (scratch: n
 * uint32_t). 0, or -1 on bad input (n > LLM_STEP_MAX, a request with no
 * KV, no costs, a cost table without a function or layers). */
int llm_step_plan(const struct llm_step_in *in, uint8_t *where, uint32_t *scratch,
                  struct llm_step_plan *out);

#endif
