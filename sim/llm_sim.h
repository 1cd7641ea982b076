/* LLM serving in the simulator: `tandemd --simulate -m MACHINE -w
 * llm:model=...,trace=...` (docs/llm.md).
 *
 * A serving engine replays a request trace on a described machine: FCFS
 * admission, continuous batching with chunked prefill, a closed loop (a
 * step starts when the previous one completes). Each step's time is what
 * the cost model of placement/llm_step.h predicts for the arrangement the
 * policy chooses; the steps are simulated analytically with those same
 * cost functions, not as task graphs through the engine.
 *
 * Policies (the same loop, the same workload, the same costs):
 *   tandem    llm_step_plan with every arrangement (overlap, pipelining,
 *             streaming host KV over the link, or GPU only), host
 *             admission while the predicted step stays within
 *             (1 + tpot_slack) of the GPU's own work;
 *   gpu_only  KV only in GPU memory, FCFS, preemption by recompute (vLLM);
 *   neo       NEO's asymmetric pipelining: two sub-batches, host requests'
 *             CPU attention under the other sub-batch's linear layers, or
 *             GPU only when that is predicted faster; host admission while
 *             the CPU's attention fits under the two linear passes;
 *   apex      APEX's asynchronous overlap within one step, pipelining or
 *             GPU only by predicted time; host admission while the CPU's
 *             attention time is at most the GPU's time (its rule);
 *   serial    host requests as apex admits them, CPU attention after the
 *             GPU's work (no overlap);
 *   nkvo      llama.cpp -nkvo: every request's KV and attention on the
 *             CPU, serial, a fixed number of slots. */
#ifndef TDM_SIM_LLM_SIM_H
#define TDM_SIM_LLM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement/llm_step.h"
#include "sim/machine.h"
#include "workload/llm_trace.h"

enum llm_policy {
	LLM_POL_TANDEM = 0,
	LLM_POL_GPU_ONLY,
	LLM_POL_NEO,
	LLM_POL_APEX,
	LLM_POL_SERIAL,
	LLM_POL_NKVO,
	LLM_POL_COUNT
};

const char *llm_policy_name(enum llm_policy p);
int llm_policy_by_name(const char *name, enum llm_policy *out); /* 0 or -1 */

struct llm_sim_opts {
	enum llm_policy policy;
	uint32_t chunk_tokens; /* prefill tokens per step (0: 512) */
	uint32_t max_batch; /* running requests at most (0: 256) */
	uint32_t nkvo_slots; /* llama.cpp -np (0: 16) */
	double gpu_util; /* share of GPU memory for weights + KV (0: 0.9, vLLM's default) */
	double host_kv_bytes; /* host memory for KV (0: 64 GiB) */
	double tpot_slack; /* tandem: step within (1 + slack) of the GPU's work (<0: 0.05) */
};

struct llm_sim_result {
	uint32_t requests, dropped; /* served; longer than the GPU's KV can hold (all policies) */
	double makespan_ns; /* first arrival to last token */
	double tokens; /* output tokens */
	double decode_tok_s;
	double tpot_p50_ms, tpot_p99_ms, ttft_p50_ms, ttft_p99_ms;
	double cpu_util; /* core-time in CPU attention / (cores x makespan) */
	double mean_batch; /* decoding requests per step */
	uint64_t steps, steps_mode[4]; /* by enum llm_step_mode */
	uint64_t preemptions, demotions, promotions;
	double decide_ns, decisions; /* wall time in llm_step_plan, calls */
	double gpu_kv_tokens; /* what the GPU's KV budget holds */
	double peak_gpu_kv_tokens; /* the most it held at a step's end */
};

/* The machine as the step sees it: its first GPU, its host cores, the link
 * between them. host_gbps > 0 sets the socket's memory bandwidth (what CPU
 * attention can reach) instead of the description's. 0 or -TDM_EINVAL. */
int llm_hw_from_machine(const struct machine *m, double host_gbps, struct llm_hw *hw, char *err,
                        size_t errlen);

/* Replays t (arrival order) under o->policy. 0, or -TDM_EINVAL /
 * -TDM_ENOMEM with a reason (weights larger than the GPU, ...). */
int llm_sim_run(const struct llm_cost *c, const struct llm_trace *t, const struct llm_sim_opts *o,
                struct llm_sim_result *r, char *err, size_t errlen);

/* A trace by name: "conv" / "code" read Azure's 2023 file from
 * $TANDEM_LLM_TRACE_DIR or ../shared/benchmarks/llm-traces when present
 * and generate one of that shape otherwise; "gen-conv" / "gen-code" always
 * generate; anything else is a file. At most n requests; src says which. */
int llm_trace_by_name(const char *name, uint32_t n, uint64_t seed, struct llm_trace *t, char *src,
                      size_t srclen, char *err, size_t errlen);

/* `-w llm:SPEC` for tandemd --simulate: parses SPEC, runs the policies
 * (names, comma-separated, or NULL / "all"), prints a table or JSON.
 * Returns the exit status. */
int llm_sim_cli(const struct machine *m, const char *spec, const char *policies, bool json);

#endif
