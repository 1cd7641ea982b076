/* LLM serving in the simulator (sim/llm_sim.h, docs/llm.md): tandem's step
 * decision against GPU-only continuous batching (vLLM), NEO's asymmetric
 * pipelining, APEX's asynchronous overlap, serial offload and llama.cpp
 * -nkvo, on the same machines, models and requests.
 *
 * Per (machine, model, trace[, host_gbps]) cell and policy:
 *   BENCH llm_decode_tok_s <v> tok/s machine=M model=MD trace=T policy=P
 *   BENCH llm_tpot_p99_ms  <v> ms    ...
 *   BENCH llm_cpu_util     <v> ratio ...
 * then tandem over each baseline:
 *   BENCH llm_decode_ratio <v> ratio machine=M model=MD trace=T over=B
 * with the published figure where one exists (published=...), the
 * effective CPU attention bandwidth of each machine, and the decision time
 * at batch 256 (BENCH llm_decide_us).
 *
 * Requests: the first 500 of Azure's 2023 conv / code traces when
 * ../shared/benchmarks/llm-traces holds them (else generated ones of that
 * shape, said so), all arriving at once: the serving capacity, as APEX and
 * NEO report throughput. Simulated time: deterministic figures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "placement/llm_step.h"
#include "sim/llm_sim.h"
#include "sim/machine.h"
#include "workload/llm_trace.h"

#define NREQ 500

struct cell {
	const char *machine, *model, *trace;
	double host_gbps;
};

static const struct cell cells[] = {
	{ "t4-xeon", "llama2-7b", "conv", 0 }, { "t4-xeon", "llama2-7b", "conv", 25 },
	{ "t4-xeon", "llama2-7b", "code", 0 }, { "t4-xeon", "llama2-7b", "code", 25 },
	{ "a10", "llama3.1-8b", "conv", 0 },   { "a10", "llama3.1-8b", "code", 0 },
	{ "a10", "llama2-7b", "conv", 0 },     { "h100", "llama2-7b", "conv", 0 },
	{ "h100", "llama2-7b", "code", 0 },    { "h100", "llama3.1-8b", "conv", 0 },
};

/* Published gains of APEX (arXiv 2506.03296): over GPU-only vLLM, +84-96%
 * on a T4 with LLaMA-2-7B, +11-89% on an A10; over the best hybrid
 * scheduler (NEO-style pipelining) on long outputs, up to +49% (v2) / +72%
 * (v4) on a T4 and +37% on an A10. */
static const char *published(const struct cell *c, enum llm_policy over)
{
	bool t4 = !strcmp(c->machine, "t4-xeon"), a10 = !strcmp(c->machine, "a10");
	if (over == LLM_POL_GPU_ONLY && t4)
		return "published=APEX_T4_1.84-1.96";
	if (over == LLM_POL_GPU_ONLY && a10)
		return "published=APEX_A10_1.11-1.89";
	if (over == LLM_POL_NEO && t4)
		return "published=APEX_T4_up_to_1.49-1.72";
	if (over == LLM_POL_NEO && a10)
		return "published=APEX_A10_up_to_1.37";
	return NULL;
}

static int load(const char *name, struct machine *m)
{
	char path[256], err[512];

	snprintf(path, sizeof(path), "machines/%s.toml", name);
	if (machine_load(path, m, err, sizeof(err))) {
		fprintf(stderr, "bench_llm_sim: %s\n", err);
		return -1;
	}
	return 0;
}

static int run_cell(const struct cell *c)
{
	static struct machine m;
	struct llm_model model;
	struct llm_hw hw;
	struct llm_cost cost;
	struct llm_trace t;
	struct llm_sim_result r[LLM_POL_COUNT];
	char err[512], src[1100], keys[256], tracekey[64];

	machine_init(&m);
	if (load(c->machine, &m) || llm_model_by_name(c->model, &model) ||
	    llm_hw_from_machine(&m, c->host_gbps, &hw, err, sizeof(err)) ||
	    llm_cost_init(&cost, &model, &hw)) {
		machine_free(&m);
		return -1;
	}
	machine_free(&m);
	if (llm_trace_by_name(c->trace, NREQ, 1, &t, src, sizeof(src), err, sizeof(err))) {
		fprintf(stderr, "bench_llm_sim: %s\n", err);
		return -1;
	}
	for (uint32_t i = 0; i < t.n; i++)
		t.req[i].arrival_ns = 0;
	if (c->host_gbps > 0)
		snprintf(tracekey, sizeof(tracekey), "%s host_gbps=%g", c->trace, c->host_gbps);
	else
		snprintf(tracekey, sizeof(tracekey), "%s", c->trace);
	printf("# %s + %s + %s: %u requests from %s; CPU attention "
	       "%.1f GB/s on %u cores\n",
	       c->machine, c->model, tracekey, t.n, src, cost.cpu_attn_gbps, cost.attn_cores);
	for (int p = 0; p < LLM_POL_COUNT; p++) {
		struct llm_sim_opts o = { .policy = (enum llm_policy)p, .tpot_slack = -1 };
		if (llm_sim_run(&cost, &t, &o, &r[p], err, sizeof(err))) {
			fprintf(stderr, "bench_llm_sim: %s: %s\n", llm_policy_name(o.policy), err);
			llm_trace_free(&t);
			return -1;
		}
		snprintf(keys, sizeof(keys), "machine=%s model=%s trace=%s policy=%s", c->machine,
		         c->model, tracekey, llm_policy_name(o.policy));
		bench_report("llm_decode_tok_s", r[p].decode_tok_s, "tok/s", keys);
		bench_report("llm_tpot_p99_ms", r[p].tpot_p99_ms, "ms", keys);
		bench_report("llm_cpu_util", r[p].cpu_util, "ratio", keys);
		printf("#   %-8s batch %.2f, TPOT p50 %.1f ms, TTFT p50 %.0f ms, steps gpu/overlap/"
		       "pipeline/serial %llu/%llu/%llu/%llu, preempted %llu, demoted %llu, "
		       "promoted %llu%s\n",
		       llm_policy_name(o.policy), r[p].mean_batch, r[p].tpot_p50_ms,
		       r[p].ttft_p50_ms, (unsigned long long)r[p].steps_mode[LLM_STEP_GPU],
		       (unsigned long long)r[p].steps_mode[LLM_STEP_OVERLAP],
		       (unsigned long long)r[p].steps_mode[LLM_STEP_PIPELINE],
		       (unsigned long long)r[p].steps_mode[LLM_STEP_SERIAL],
		       (unsigned long long)r[p].preemptions, (unsigned long long)r[p].demotions,
		       (unsigned long long)r[p].promotions,
		       p == 0 && r[p].dropped ? " (requests longer than the GPU's KV budget left "
		                                "out for every policy)"
		                              : "");
	}
	for (int p = 1; p < LLM_POL_COUNT; p++) {
		const char *pub = published(c, (enum llm_policy)p);
		snprintf(keys, sizeof(keys), "machine=%s model=%s trace=%s over=%s%s%s", c->machine,
		         c->model, tracekey, llm_policy_name((enum llm_policy)p), pub ? " " : "",
		         pub ? pub : "");
		bench_report("llm_decode_ratio", r[0].decode_tok_s / r[p].decode_tok_s, "ratio",
		             keys);
	}
	snprintf(keys, sizeof(keys), "machine=%s model=%s trace=%s over=gpu_only", c->machine,
	         c->model, tracekey);
	bench_report("llm_tpot_p99_ratio", r[0].tpot_p99_ms / r[LLM_POL_GPU_ONLY].tpot_p99_ms,
	             "ratio", keys);
	llm_trace_free(&t);
	return 0;
}

/* The planner's wall time for one step of 256 requests (a third of them
 * host-resident), every arrangement allowed. */
static void bench_decide(void)
{
	static struct machine m;
	struct llm_model model;
	struct llm_hw hw;
	struct llm_cost cost;
	struct llm_step_req req[256];
	struct llm_step_plan p;
	uint32_t scratch[256];
	uint8_t where[256];
	char err[256];
	const int iters = 20000;

	machine_init(&m);
	if (load("t4-xeon", &m) || llm_hw_from_machine(&m, 0, &hw, err, sizeof(err))) {
		machine_free(&m);
		return;
	}
	machine_free(&m);
	llm_model_by_name("llama2-7b", &model);
	llm_cost_init(&cost, &model, &hw);
	for (int i = 0; i < 256; i++)
		req[i] = (struct llm_step_req){ .kv_tokens = 100 + (uint32_t)(i * 37 % 3000),
			                        .tier = i % 3 == 0 ? LLM_TIER_HOST : LLM_TIER_GPU };
	struct llm_step_in in = { .cost = &cost,
		                  .req = req,
		                  .n = 256,
		                  .prefill_tokens = 512,
		                  .stream_scratch_bytes = 128u << 20,
		                  .allow = LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE |
		                           LLM_ALLOW_STREAM | LLM_ALLOW_SKIP };
	uint64_t t0 = bench_now_ns();
	for (int k = 0; k < iters; k++) {
		req[k % 256].kv_tokens++; /* not the same input twice in a row */
		llm_step_plan(&in, where, scratch, &p);
	}
	double us = (double)(bench_now_ns() - t0) / iters / 1e3;
	bench_report("llm_decide_us", us, "us", "batch=256 machine=t4-xeon model=llama2-7b");
}

int main(void)
{
	static struct machine m;
	const char *machines[] = { "t4-xeon", "a10", "h100" };
	int rc = 0;

	for (size_t i = 0; i < 3; i++) {
		struct llm_hw hw;
		struct llm_model model;
		struct llm_cost cost;
		char err[256], keys[96];

		machine_init(&m);
		if (load(machines[i], &m) || llm_hw_from_machine(&m, 0, &hw, err, sizeof(err))) {
			machine_free(&m);
			return 1;
		}
		machine_free(&m);
		llm_model_by_name("llama2-7b", &model);
		llm_cost_init(&cost, &model, &hw);
		snprintf(keys, sizeof(keys), "machine=%s cores=%u", machines[i], cost.attn_cores);
		bench_report("llm_cpu_attn_gbps", cost.cpu_attn_gbps, "GB/s", keys);
	}
	for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++)
		if (run_cell(&cells[i]))
			rc = 1;
	bench_decide();
	return rc;
}
