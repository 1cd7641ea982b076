/* MoE experts across CPU and GPU in the simulator (sim/moe_sim.h,
 * docs/llm.md): tandem's split, cache and prefetch against the
 * kTransformers-like static split, llama.cpp --n-cpu-moe, a Fiddler-like
 * static hot set, HybriMoE's rule, LRU on demand, and Belady's bound, on
 * the same generated routing, costs and GPU expert budget.
 *
 * Per (machine, model, budget, batch) cell and policy:
 *   BENCH moe_decode_tok_s <v> tok/s machine=M model=MD budget=PCT batch=B policy=P
 *   BENCH moe_decode_ratio <v> ratio ... over=static|ncpumoe|hot|hybrimoe|lru
 *                                       |better_of_hot_hybrimoe
 *   BENCH moe_decode_bound_ratio <v> ratio ... policy=belady over=better_of_hot_hybrimoe
 * and the same with prefill (prompts of 512 tokens, batch=1); cells that
 * do not fit the GPU say so and claim nothing. Then the cache alone
 * (BENCH expert_hit_pct per trace kind, budget and eviction policy), the
 * prefetch's precision, recall and wasted bytes per token, the bandwidth
 * check (FreeToken's rule), the prefill break-even per machine and model,
 * and the split's decision time at 64 experts x batch 256. Simulated
 * time: deterministic figures, except moe_decide_us (wall time). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "placement/moe_cache.h"
#include "placement/moe_split.h"
#include "sim/machine.h"
#include "sim/moe_sim.h"
#include "workload/moe_trace.h"

#define DECODE_TOKENS 128 /* per sequence */
#define PROMPT 512
#define PROMPTS 4

static const char *const machines[] = { "t4-xeon", "rtx4090", "h100" };
static const char *const models[] = { "mixtral-8x7b", "dsv2-lite", "qwen1.5-moe" };
static const double budgets[] = { 0.10, 0.25, 0.50 };
static const uint32_t batches[] = { 1, 16 };

static int load_cost(const char *machine, const char *model, struct moe_cost *c)
{
	static struct machine m;
	char path[256], err[512];

	machine_init(&m);
	snprintf(path, sizeof(path), "machines/%s.toml", machine);
	if (machine_load(path, &m, err, sizeof(err)) ||
	    moe_cost_from_machine(&m, model, c, err, sizeof(err))) {
		fprintf(stderr, "bench_moe_sim: %s\n", err);
		machine_free(&m);
		return -1;
	}
	machine_free(&m);
	return 0;
}

/* One cell, every policy. prefill: prompts of PROMPT tokens. */
static int run_cell(const struct moe_cost *c, const char *machine, double budget, uint32_t batch,
                    bool prefill)
{
	struct moe_trace_shape sh;
	struct moe_trace t, prof;
	struct moe_sim_result r[MOE_POL_COUNT];
	char err[512], keys[256], base[200];
	const char *phase = prefill ? "prefill" : "decode";
	uint32_t L = c->moe_layers;

	moe_trace_shape_by_name(moe_shape_of_model(c->m.name), L, &sh);
	if (moe_trace_generate(&sh, prefill ? PROMPT * PROMPTS : DECODE_TOKENS, prefill ? 1 : batch,
	                       1, &t, err, sizeof(err)) ||
	    moe_trace_generate(&sh, 512, 1, 1001, &prof, err, sizeof(err))) {
		fprintf(stderr, "bench_moe_sim: %s\n", err);
		return -1;
	}
	snprintf(base, sizeof(base), "machine=%s model=%s budget=%.0f batch=%u", machine, c->m.name,
	         budget * 100, prefill ? 1 : batch);
	int rc = 0;
	for (int p = 0; p < MOE_POL_COUNT; p++) {
		struct moe_sim_opts o = { .policy = (enum moe_policy)p,
			                  .budget = budget,
			                  .batch = batch,
			                  .prefill_tokens = prefill ? PROMPT : 0 };
		if (moe_sim_run(c, &t, &prof, &o, &r[p], err, sizeof(err))) {
			fprintf(stderr, "bench_moe_sim: %s: %s\n", moe_policy_name(o.policy), err);
			rc = -1;
			goto out;
		}
		if (!r[p].fits) {
			printf("# %s %s: %.1f GB (non-expert weights, %u experts, 1 GiB reserve) "
			       "do not fit %.1f GB: infeasible, nothing claimed\n",
			       base, phase, r[p].gpu_bytes / 1e9, r[p].cap,
			       c->hw.gpu_mem_bytes / 1e9);
			goto out;
		}
		snprintf(keys, sizeof(keys), "%s%s policy=%s", base, prefill ? " prompt=512" : "",
		         moe_policy_name(o.policy));
		char name[40];
		snprintf(name, sizeof(name), "moe_%s_tok_s", phase);
		bench_report(name, r[p].tok_s, "tok/s", keys);
	}
	for (int p = 1; p < MOE_POL_COUNT - 1; p++) {
		char name[40];
		snprintf(name, sizeof(name), "moe_%s_ratio", phase);
		snprintf(keys, sizeof(keys), "%s over=%s", base,
		         moe_policy_name((enum moe_policy)p));
		bench_report(name, r[0].tok_s / r[p].tok_s, "ratio", keys);
	}
	double best = fmax(r[MOE_POL_HOT].tok_s, r[MOE_POL_HYBRIMOE].tok_s);
	{
		/* Over the better of the two, and the bound's (MIN and an
		 * oracle prefetch, the same split) over the same. */
		char name[40];
		snprintf(name, sizeof(name), "moe_%s_ratio", phase);
		snprintf(keys, sizeof(keys), "%s over=better_of_hot_hybrimoe", base);
		bench_report(name, r[0].tok_s / best, "ratio", keys);
		snprintf(name, sizeof(name), "moe_%s_bound_ratio", phase);
		snprintf(keys, sizeof(keys), "%s policy=belady over=better_of_hot_hybrimoe", base);
		bench_report(name, r[MOE_POL_BELADY].tok_s / best, "ratio", keys);
	}
	printf("# %s %s: tandem %.2fx static, %.2fx the better of hot and hybrimoe, %.2f of "
	       "belady's; hits tandem %.1f%% hot %.1f%% hybrimoe %.1f%% belady %.1f%%; tandem "
	       "loads %.2f and CPU experts %.2f per layer step\n",
	       base, phase, r[0].tok_s / r[MOE_POL_STATIC].tok_s, r[0].tok_s / best,
	       r[0].tok_s / r[MOE_POL_BELADY].tok_s, r[0].hit_pct, r[MOE_POL_HOT].hit_pct,
	       r[MOE_POL_HYBRIMOE].hit_pct, r[MOE_POL_BELADY].hit_pct,
	       r[0].loads / (double)(r[0].steps * L), r[0].cpu_experts / (double)(r[0].steps * L));
	/* Where the time goes, per token (ms): the GPU's serial part, the
	 * experts' part (CPU busy, GPU busy within it), the link's busy time,
	 * and the share of layer steps the CPU finished last. */
	for (int p = 0; p < MOE_POL_COUNT; p++) {
		if (p != MOE_POL_TANDEM && p != MOE_POL_HOT && p != MOE_POL_HYBRIMOE &&
		    p != MOE_POL_BELADY)
			continue;
		double tk = r[p].tokens * 1e6, lsteps = (double)r[p].steps * L;
		printf("# %s %s %s: per token serial %.3f ms, experts %.3f ms (CPU busy %.3f, "
		       "GPU busy %.3f), link busy %.3f ms; CPU last in %.0f%% of layer steps\n",
		       base, phase, moe_policy_name((enum moe_policy)p), r[p].t_serial_ns / tk,
		       r[p].t_experts_ns / tk, r[p].t_cpu_ns / tk, r[p].t_gpu_ns / tk,
		       r[p].t_link_ns / tk, 100 * r[p].cpu_bound_layers / lsteps);
	}
	if (!prefill) {
		for (int p = 0; p < MOE_POL_COUNT; p++) {
			if (p != MOE_POL_TANDEM && p != MOE_POL_HYBRIMOE)
				continue;
			snprintf(keys, sizeof(keys), "%s policy=%s", base,
			         moe_policy_name((enum moe_policy)p));
			bench_report("moe_prefetch_precision", r[p].precision, "ratio", keys);
			bench_report("moe_prefetch_recall", r[p].recall, "ratio", keys);
			bench_report("moe_prefetch_wasted_mb_tok", r[p].wasted_bytes_tok / 1e6,
			             "MB", keys);
		}
		if (batch == 1) {
			/* FreeToken's rule: decode tok/s >= 0.85 x effective
			 * bandwidth / bytes per token. The bytes: the non-expert
			 * weights from GPU memory, the routed experts from GPU
			 * memory at tandem's hit rate and host memory otherwise. */
			double h = r[0].hit_pct / 100;
			double routed = c->moe_layers * c->m.topk * c->expert_bytes;
			double t_ideal = c->nonexpert_bytes / (c->hw.gpu_gbps * 1e9) +
			                 routed * (h / (c->hw.gpu_gbps * 1e9) +
			                           (1 - h) / (c->cpu_gbps * 1e9));
			double bytes = c->nonexpert_bytes + routed;
			double eff = bytes / t_ideal / 1e9;
			snprintf(keys, sizeof(keys), "%s eff_gbps=%.1f bytes_tok_mb=%.1f hit=%.1f",
			         base, eff, bytes / 1e6, r[0].hit_pct);
			bench_report("moe_bw_check", r[0].tok_s / (0.85 * eff * 1e9 / bytes),
			             "ratio", keys);
		}
	}
out:
	moe_trace_free(&t);
	moe_trace_free(&prof);
	return rc;
}

/* The cache alone: every trace kind, budget and eviction policy, from the
 * same warm start (a profiled hot set). */
static void bench_hits(void)
{
	const char *kinds[] = { "mixtral", "qwen", "dsv2" };
	const uint32_t layers[] = { 32, 24, 26 };

	for (int k = 0; k < 3; k++) {
		struct moe_trace_shape sh;
		struct moe_trace t, prof;
		char err[256], keys[128];
		moe_trace_shape_by_name(kinds[k], layers[k], &sh);
		if (moe_trace_generate(&sh, 1000, 1, 21, &t, err, sizeof(err)) ||
		    moe_trace_generate(&sh, 500, 1, 22, &prof, err, sizeof(err)))
			return;
		uint8_t *hot = malloc((size_t)t.layers * t.experts);
		if (!hot)
			return;
		printf("# trace %s: %u layers, %u experts top-%u, entropy %.2f bits at layer 0 "
		       "(of %.2f), %.2f at the last\n",
		       kinds[k], t.layers, t.experts, t.topk, moe_trace_entropy(&t, 0),
		       log2(t.experts), moe_trace_entropy(&t, t.layers - 1));
		for (int b = 0; b < 3; b++) {
			uint32_t cap = (uint32_t)(budgets[b] * t.layers * t.experts);
			moe_hot_set(&prof, 0, cap, hot);
			for (int p = 0; p < MOE_EVICT_COUNT; p++) {
				snprintf(keys, sizeof(keys), "budget=%.0f trace=%s policy=%s",
				         budgets[b] * 100, kinds[k],
				         moe_evict_name((enum moe_evict)p));
				bench_report("expert_hit_pct",
				             moe_cache_replay(&t, 1, (enum moe_evict)p, cap, hot),
				             "pct", keys);
			}
		}
		free(hot);
		moe_trace_free(&t);
		moe_trace_free(&prof);
	}
}

/* The split's wall time at 64 experts and batch 256 (DeepSeek-V2-Lite's
 * top-6 of 64: nearly every expert active), half of them resident. */
static void bench_decide(void)
{
	struct moe_cost c;
	struct moe_trace_shape sh;
	struct moe_trace t;
	struct moe_split_expert e[64];
	struct moe_split_plan p;
	uint8_t where[64];
	uint32_t scratch[128], cnt[64] = { 0 };
	char err[256];
	const int iters = 20000;

	if (load_cost("rtx4090", "dsv2-lite", &c))
		return;
	moe_trace_shape_by_name("dsv2", c.moe_layers, &sh);
	if (moe_trace_generate(&sh, 1, 256, 3, &t, err, sizeof(err)))
		return;
	for (uint32_t i = 0; i < 256; i++)
		for (uint32_t k = 0; k < t.topk; k++)
			cnt[moe_trace_ids(&t, i, 0)[k]]++;
	uint32_t n = 0;
	for (uint32_t x = 0; x < 64; x++)
		if (cnt[x])
			e[n++] = (struct moe_split_expert){ cnt[x], x % 2 == 0 };
	moe_trace_free(&t);
	struct moe_split_in in = {
		.cost = &c, .e = e, .n = n, .tokens = 256, .allow = MOE_ALLOW_CPU | MOE_ALLOW_LOAD
	};
	uint64_t t0 = bench_now_ns();
	for (int k = 0; k < iters; k++) {
		e[k % n].tokens++; /* not the same input twice in a row */
		moe_split_plan(&in, where, scratch, &p);
	}
	double us = (double)(bench_now_ns() - t0) / iters / 1e3;
	char keys[96];
	snprintf(keys, sizeof(keys), "experts=%u batch=256 machine=rtx4090 model=dsv2-lite", n);
	bench_report("moe_decide_us", us, "us", keys);
	t0 = bench_now_ns();
	for (int k = 0; k < iters; k++) {
		e[k % n].tokens++;
		moe_split_two_ended(&in, where, scratch, &p);
	}
	us = (double)(bench_now_ns() - t0) / iters / 1e3;
	snprintf(keys, sizeof(keys),
	         "experts=%u batch=256 machine=rtx4090 model=dsv2-lite rule=hybrimoe", n);
	bench_report("moe_decide_us", us, "us", keys);
}

int main(void)
{
	int rc = 0;

	for (size_t i = 0; i < 3; i++)
		for (size_t j = 0; j < 3; j++) {
			struct moe_cost c;
			char keys[128];
			if (load_cost(machines[i], models[j], &c))
				return 1;
			snprintf(keys, sizeof(keys),
			         "machine=%s model=%s link_gbps=%g cpu_gbps=%.1f", machines[i],
			         models[j], c.hw.link_gbps, c.cpu_gbps);
			bench_report("moe_prefill_breakeven_tokens", moe_breakeven_tokens(&c),
			             "tokens", keys);
			for (size_t b = 0; b < 3; b++) {
				for (size_t k = 0; k < 2; k++)
					if (run_cell(&c, machines[i], budgets[b], batches[k],
					             false))
						rc = 1;
				if (run_cell(&c, machines[i], budgets[b], 1, true))
					rc = 1;
			}
		}
	bench_hits();
	bench_decide();
	return rc;
}
