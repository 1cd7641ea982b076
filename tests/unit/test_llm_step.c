/* The LLM step decision (placement/llm_step.h) and the serving simulation
 * (sim/llm_sim.h): the cost model's figures for the published shapes, the
 * planner's choice in hand-built steps (overlap when the CPU's attention
 * fits under the GPU's work, pipelining when that is faster, nothing when
 * offload does not pay, the streaming budget), and whole replays of
 * generated traces (every token produced, GPU KV within its budget,
 * deterministic). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "placement/llm_step.h"
#include "sim/llm_sim.h"
#include "sim/machine.h"
#include "workload/llm_trace.h"

/* A T4 with 8 Cascade Lake cores, as machines/t4-xeon.toml describes it. */
static const struct llm_hw t4 = {
	.gpu_mem_bytes = 16.0 * (1u << 30),
	.gpu_gbps = 320,
	.gpu_gflops = 65000,
	.gpu_launch_ns = 2000,
	.cpu_cores = 8,
	.core_gbps = 12,
	.socket_gbps = 140.8,
	.cpu_gflops = 70,
	.cpu_launch_ns = 2000,
	.link_gbps = 12,
	.link_latency_ns = 10000,
};

static void cost_for(const char *model, const struct llm_hw *hw, struct llm_cost *c)
{
	struct llm_model m;

	assert_int_equal(llm_model_by_name(model, &m), 0);
	assert_int_equal(llm_cost_init(c, &m, hw), 0);
}

static void test_cost_model(void **state)
{
	struct llm_cost c;
	struct llm_model m;
	struct llm_hw bad = t4;

	(void)state;
	cost_for("llama2-7b", &t4, &c);
	/* 6.74e9 parameters in fp16; 2 x 32 layers x 4096 x 2 bytes of KV a token. */
	assert_true(fabs(c.weight_bytes - 13.48e9) < 0.02e9);
	assert_true(c.kv_tok_bytes == 524288);
	/* 7 cores attend (one drives the GPU): 7 x 12 GB/s, under the socket's 140.8. */
	assert_int_equal(c.attn_cores, 7);
	assert_true(c.cpu_attn_gbps == 84);
	/* Decode at batch 1 reads the weights: 13.5 GB / 320 GB/s = 42 ms. */
	assert_true(fabs(llm_t_linear(&c, 1) - (c.weight_bytes / 320 + 32 * 2000)) < 1);
	/* At 4096 tokens the flops win: 2 x 6.74e9 x 4096 / 65 TFLOP/s. */
	assert_true(llm_t_linear(&c, 4096) > 0.8e9);
	/* The socket caps the cores: host_gbps 25 is what attention reaches. */
	struct llm_hw slow = t4;
	slow.socket_gbps = 25;
	cost_for("llama2-7b", &slow, &c);
	assert_true(c.cpu_attn_gbps == 25);
	/* One request's attention keeps min(cores, kv heads) cores busy. */
	assert_int_equal(llm_cpu_cores_used(&c, 1), 7);
	double t1 = llm_t_attn_cpu(&c, 4, 1000), t2 = llm_t_attn_cpu(&c, 4, 2000);
	assert_true(t2 > 1.9 * t1 - 32 * 2000 * 2 && t2 < 2.1 * t1);
	/* LLaMA-3.1-8B: 8 KV heads (GQA), a quarter of LLaMA-2's KV a token. */
	cost_for("llama3.1-8b", &t4, &c);
	assert_true(c.kv_tok_bytes == 131072);
	assert_true(fabs(c.weight_bytes - 16.06e9) < 0.03e9);
	assert_int_equal(llm_model_by_name("gpt-5", &m), -1);
	assert_int_equal(llm_model_by_name("llama2-7b", &m), 0);
	bad.gpu_gbps = NAN;
	assert_int_equal(llm_cost_init(&c, &m, &bad), -1);
}

/* Runs the planner on n requests: tokens[i] of KV, tier[i]. */
static void plan(const struct llm_cost *c, uint32_t n, const uint32_t *tokens, const uint8_t *tier,
                 unsigned allow, double scratch, uint8_t *where, struct llm_step_plan *p)
{
	struct llm_step_req req[64];
	uint32_t tmp[64];
	struct llm_step_in in = {
		.cost = c, .req = req, .n = n, .stream_scratch_bytes = scratch, .allow = allow
	};

	for (uint32_t i = 0; i < n; i++)
		req[i] = (struct llm_step_req){ .kv_tokens = tokens[i], .tier = tier[i] };
	assert_int_equal(llm_step_plan(&in, where, tmp, p), 0);
}

static const unsigned all =
        LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE | LLM_ALLOW_STREAM | LLM_ALLOW_SKIP;

static void test_overlap_when_cpu_fits(void **state)
{
	struct llm_cost c;
	struct llm_step_plan p;
	uint8_t where[6];
	/* Two GPU-resident requests and four host-resident ones of 1000 tokens:
	 * 2 GB of host KV at 84 GB/s is 25 ms, under the GPU's 43 ms. */
	const uint32_t tok[6] = { 1500, 1500, 1000, 1000, 1000, 1000 };
	const uint8_t tier[6] = { 0, 0, 1, 1, 1, 1 };

	(void)state;
	cost_for("llama2-7b", &t4, &c);
	plan(&c, 6, tok, tier, all, 0, where, &p);
	assert_int_equal(p.mode, LLM_STEP_OVERLAP);
	assert_int_equal(where[0], LLM_RUN_GPU);
	assert_int_equal(where[1], LLM_RUN_GPU);
	for (int i = 2; i < 6; i++)
		assert_int_equal(where[i], LLM_RUN_CPU);
	assert_int_equal(p.ncpu, 4);
	assert_true(p.decoded == 6);
	/* Hidden: the step is the GPU's work, not GPU + CPU. */
	assert_true(p.t_cpu_ns < p.t_gpu_ns);
	assert_true(p.t_step_ns == p.t_gpu_ns);
	/* The same step forced serial costs the CPU's time on top. */
	plan(&c, 6, tok, tier, LLM_FORCE_SERIAL, 0, where, &p);
	assert_int_equal(p.mode, LLM_STEP_SERIAL);
	assert_true(p.t_step_ns > p.t_gpu_ns + p.t_cpu_ns);
}

static void test_pipeline_when_better(void **state)
{
	struct llm_hw hw = t4;
	struct llm_cost c;
	struct llm_step_plan p, ov;
	uint8_t where[20];
	uint32_t tok[20];
	uint8_t tier[20];

	(void)state;
	/* A slow hand-off (1 ms a copy) and far more host KV than the GPU's
	 * step hides: overlap pays the hand-off on every layer on top of the
	 * CPU's time, pipelining hides the CPU under two linear passes. */
	hw.link_latency_ns = 1e6;
	cost_for("llama2-7b", &hw, &c);
	for (int i = 0; i < 20; i++) {
		tok[i] = 1000;
		tier[i] = i < 2 ? LLM_TIER_GPU : LLM_TIER_HOST;
	}
	plan(&c, 20, tok, tier, LLM_ALLOW_OVERLAP, 0, where, &ov);
	plan(&c, 20, tok, tier, all, 0, where, &p);
	assert_int_equal(p.mode, LLM_STEP_PIPELINE);
	assert_true(p.t_step_ns < ov.t_step_ns);
	for (int i = 2; i < 20; i++)
		assert_int_equal(where[i], LLM_RUN_CPU);
	/* Pipelining reads the weights twice: its GPU time is two passes. */
	assert_true(p.t_gpu_ns > 2 * c.weight_bytes / hw.gpu_gbps);
	/* Where the CPU's share fits under one GPU pass, overlap wins: the
	 * pipeline's second pass over the weights is pure loss. */
	plan(&c, 6, tok, tier, all & ~LLM_ALLOW_STREAM, 0, where, &p);
	assert_int_equal(p.mode, LLM_STEP_OVERLAP);
}

static void test_nothing_when_offload_does_not_pay(void **state)
{
	struct llm_hw hw = t4;
	struct llm_cost c;
	struct llm_step_plan p;
	uint8_t where[3];
	const uint32_t tok[3] = { 1000, 1000, 4000 };
	const uint8_t tier[3] = { 0, 0, 1 };

	(void)state;
	/* Host memory at 0.5 GB/s: one host request's 2 GB takes 4 s, a
	 * hundred GPU steps: skipping it decodes faster. */
	hw.core_gbps = 0.5;
	hw.socket_gbps = 0.5;
	cost_for("llama2-7b", &hw, &c);
	plan(&c, 3, tok, tier, all & ~LLM_ALLOW_STREAM, 0, where, &p);
	assert_int_equal(p.mode, LLM_STEP_GPU);
	assert_int_equal(where[2], LLM_RUN_SKIP);
	assert_true(p.decoded == 2);
	assert_int_equal(p.nskip, 1);
	/* Not allowed to skip, it must run the request somewhere. */
	plan(&c, 3, tok, tier, LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE, 0, where, &p);
	assert_int_not_equal(p.mode, LLM_STEP_GPU);
	assert_int_equal(where[2], LLM_RUN_CPU);
}

static void test_stream_budget(void **state)
{
	struct llm_hw hw = t4;
	struct llm_cost c;
	struct llm_step_plan p;
	uint8_t where[8];
	const uint32_t tok[8] = { 800, 800, 800, 800, 800, 800, 800, 800 };
	const uint8_t tier[8] = { 0, 1, 1, 1, 1, 1, 1, 1 };

	(void)state;
	/* At 25 GB/s the CPU's attention of 7 x 800 tokens (2.9 GB) takes
	 * 117 ms; the link carries some of it to the GPU instead. */
	hw.socket_gbps = 25;
	cost_for("llama2-7b", &hw, &c);
	plan(&c, 8, tok, tier, all, 1e9, where, &p);
	assert_int_equal(p.mode, LLM_STEP_OVERLAP);
	assert_true(p.nstream > 0 && p.ncpu > 0);
	double with_stream = p.t_step_ns;
	/* GPU memory for streamed KV is a budget: none, no streaming. */
	plan(&c, 8, tok, tier, all, 0, where, &p);
	assert_int_equal(p.nstream, 0);
	for (int i = 1; i < 8; i++)
		assert_int_equal(where[i], LLM_RUN_CPU);
	assert_true(with_stream < p.t_step_ns);
	/* Room for one request's two layers in flight: at most one. */
	plan(&c, 8, tok, tier, all, 2 * 800 * c.kv_tok_bytes / 32, where, &p);
	assert_true(p.nstream <= 1);
}

static void test_bad_input(void **state)
{
	struct llm_cost c;
	struct llm_step_plan p;
	struct llm_step_req req[2] = { { 0, 0 }, { 10, 1 } };
	uint8_t where[2];
	uint32_t tmp[2];
	struct llm_step_in in = { .cost = &c, .req = req, .n = 2, .allow = all };

	(void)state;
	cost_for("llama2-7b", &t4, &c);
	assert_int_equal(llm_step_plan(&in, where, tmp, &p), -1); /* no KV */
	req[0].kv_tokens = 5;
	req[1].tier = 7;
	assert_int_equal(llm_step_plan(&in, where, tmp, &p), -1); /* no such tier */
	req[1].tier = 1;
	in.n = LLM_STEP_MAX + 1;
	assert_int_equal(llm_step_plan(&in, where, tmp, &p), -1);
	in.n = 2;
	in.link_busy_ns = -1;
	assert_int_equal(llm_step_plan(&in, where, tmp, &p), -1);
	in.link_busy_ns = 0;
	in.allow = 0; /* a host request and nowhere to run it */
	assert_int_equal(llm_step_plan(&in, where, tmp, &p), -1);
}

/* ---- whole replays ---- */

static void run(const struct llm_cost *c, const struct llm_trace *t, enum llm_policy pol,
                struct llm_sim_result *r)
{
	struct llm_sim_opts o = { .policy = pol, .tpot_slack = -1 };
	char err[256] = "";
	int rc = llm_sim_run(c, t, &o, r, err, sizeof(err));

	if (rc)
		print_error("%s: %s\n", llm_policy_name(pol), err);
	assert_int_equal(rc, 0);
}

static void test_replay(void **state)
{
	struct llm_cost c;
	struct llm_trace t;
	char err[256];
	double want = 0;

	(void)state;
	cost_for("llama2-7b", &t4, &c);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CONV, 80, 7, &t, err, sizeof(err)), 0);
	for (uint32_t i = 0; i < t.n; i++) {
		t.req[i].arrival_ns = 0; /* a burst: the GPU's KV overflows */
		t.req[i].prompt = t.req[i].prompt > 1500 ? 1500 : t.req[i].prompt;
		want += t.req[i].output;
	}
	struct llm_sim_result r[LLM_POL_COUNT], again;
	for (int p = 0; p < LLM_POL_COUNT; p++) {
		run(&c, &t, (enum llm_policy)p, &r[p]);
		/* Every request served, every output token produced. */
		assert_int_equal(r[p].requests, t.n);
		assert_int_equal(r[p].dropped, 0);
		assert_true(r[p].tokens == want);
		/* The GPU's KV budget held at every step's end. */
		assert_true(r[p].peak_gpu_kv_tokens <= r[p].gpu_kv_tokens);
		assert_true(r[p].decode_tok_s > 0 && r[p].tpot_p99_ms >= r[p].tpot_p50_ms);
		assert_true(r[p].cpu_util >= 0 && r[p].cpu_util <= 1);
	}
	/* GPU-only never touches the CPU, and the GPU alone holds ~6k tokens:
	 * preemptions under a burst of 80 requests. */
	assert_true(r[LLM_POL_GPU_ONLY].cpu_util == 0);
	assert_true(r[LLM_POL_GPU_ONLY].preemptions > 0);
	assert_int_equal(r[LLM_POL_NKVO].steps_mode[LLM_STEP_OVERLAP], 0);
	assert_int_equal(r[LLM_POL_NEO].steps_mode[LLM_STEP_OVERLAP], 0);
	assert_int_equal(r[LLM_POL_SERIAL].steps_mode[LLM_STEP_OVERLAP], 0);
	/* Offload overlapped beats GPU-only and serial offload here. */
	assert_true(r[LLM_POL_TANDEM].decode_tok_s > 1.5 * r[LLM_POL_GPU_ONLY].decode_tok_s);
	assert_true(r[LLM_POL_TANDEM].decode_tok_s > r[LLM_POL_SERIAL].decode_tok_s);
	/* Deterministic. */
	run(&c, &t, LLM_POL_TANDEM, &again);
	assert_true(again.makespan_ns == r[LLM_POL_TANDEM].makespan_ns);
	assert_true(again.tokens == r[LLM_POL_TANDEM].tokens);
	llm_trace_free(&t);
}

/* An H100 with 32 Sapphire Rapids cores, as machines/h100.toml describes it. */
static const struct llm_hw h100 = {
	.gpu_mem_bytes = 80.0 * (1u << 30),
	.gpu_gbps = 3350,
	.gpu_gflops = 989000,
	.gpu_launch_ns = 1500,
	.cpu_cores = 32,
	.core_gbps = 16,
	.socket_gbps = 307,
	.cpu_gflops = 90,
	.cpu_launch_ns = 2000,
	.link_gbps = 50,
	.link_latency_ns = 10000,
};

/* Prefill-heavy serving (code-shaped: long prompts, short outputs): the
 * steps carry a 512-token prefill chunk that keeps the GPU compute-bound,
 * so attention on the cores is free and attention on the GPU is not.
 * tandem's tier moves are judged on the step as it will run, prefill
 * included: it demotes decoding requests off the GPU and promotes none
 * back (judged without the prefill, a host request's attention looked
 * cheaper on the GPU and was moved there, lengthening every prefill step:
 * tandem fell below APEX and GPU-only). */
static void test_retier_prefill_heavy(void **state)
{
	struct llm_cost c;
	struct llm_trace t;
	struct llm_sim_result r[LLM_POL_COUNT];
	char err[256];

	(void)state;
	cost_for("llama2-7b", &h100, &c);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CODE, 120, 3, &t, err, sizeof(err)), 0);
	for (uint32_t i = 0; i < t.n; i++)
		t.req[i].arrival_ns = 0;
	for (int p = 0; p < LLM_POL_COUNT; p++)
		run(&c, &t, (enum llm_policy)p, &r[p]);
	print_message("tandem %.1f apex %.1f gpu_only %.1f tok/s, demoted %llu promoted %llu\n",
	              r[LLM_POL_TANDEM].decode_tok_s, r[LLM_POL_APEX].decode_tok_s,
	              r[LLM_POL_GPU_ONLY].decode_tok_s,
	              (unsigned long long)r[LLM_POL_TANDEM].demotions,
	              (unsigned long long)r[LLM_POL_TANDEM].promotions);
	assert_true(r[LLM_POL_TANDEM].demotions > 0);
	assert_int_equal(r[LLM_POL_TANDEM].promotions, 0);
	for (int p = 1; p < LLM_POL_COUNT; p++)
		assert_true(r[LLM_POL_TANDEM].decode_tok_s >= r[p].decode_tok_s);
	llm_trace_free(&t);
}

static void test_replay_weights_too_big(void **state)
{
	struct llm_hw hw = t4;
	struct llm_cost c;
	struct llm_trace t;
	struct llm_sim_result r;
	struct llm_sim_opts o = { .policy = LLM_POL_TANDEM };
	char err[256];

	(void)state;
	hw.gpu_mem_bytes = 8.0 * (1u << 30);
	cost_for("llama2-7b", &hw, &c);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CODE, 4, 1, &t, err, sizeof(err)), 0);
	assert_int_not_equal(llm_sim_run(&c, &t, &o, &r, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "no room for KV"));
	llm_trace_free(&t);
}

/* `-w llm:SPEC`: bad keys and values are refused (exit 2) before anything
 * runs; a good spec runs every policy on a generated trace. */
static void test_cli_spec(void **state)
{
	static const char t4_toml[] =
	        "[device.cpu]\nkind = \"cpu\"\nmodel = \"x\"\ncount = 8\ngflops = 70\n"
	        "mem_gbps = 12\nsocket_gbps = 140.8\nlaunch_ns = 2000\n"
	        "[device.gpu0]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 1\nmem_gib = 16\n"
	        "gflops = 8100\nfp16_gflops = 65000\nmem_gbps = 320\nlaunch_ns = 8000\n"
	        "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n";
	static struct machine m;
	char err[256];

	(void)state;
	assert_int_equal(machine_parse(t4_toml, sizeof(t4_toml) - 1, "t4", &m, err, sizeof(err)),
	                 0);
	assert_int_equal(llm_sim_cli(&m, "model=gpt-5", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "requests=0", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "requests=12x", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "host_gbps=-1", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "colour=red", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "model", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "arrivals=sometimes", NULL, false), 2);
	assert_int_equal(llm_sim_cli(&m, "trace=gen-code,requests=5", "tandem,vllm", false), 2);
	/* A file that is not there is an error, not a crash. */
	assert_int_equal(llm_sim_cli(&m, "trace=/nonexistent/trace.csv", NULL, false), 1);
	/* LLaMA-3.1-8B's 16 GB of weights do not fit a T4. */
	assert_int_equal(
	        llm_sim_cli(&m, "model=llama3.1-8b,trace=gen-code,requests=5", NULL, false), 1);
	assert_int_equal(llm_sim_cli(&m,
	                             "model=llama2-7b,trace=gen-conv,requests=20,"
	                             "arrivals=burst,host_gbps=25",
	                             NULL, true),
	                 0);
	machine_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cost_model),
		cmocka_unit_test(test_overlap_when_cpu_fits),
		cmocka_unit_test(test_pipeline_when_better),
		cmocka_unit_test(test_nothing_when_offload_does_not_pay),
		cmocka_unit_test(test_stream_budget),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_retier_prefill_heavy),
		cmocka_unit_test(test_replay_weights_too_big),
		cmocka_unit_test(test_cli_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
