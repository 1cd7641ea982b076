/* The llm_serve example (examples/llm_serve.c) against a private tandemd:
 * a tiny model serving a tiny trace written here, every request checked
 * against the example's own plain-loop reference; that the check fails
 * when the reference differs; that the KV budget makes requests queue; and
 * that malformed traces and model files are refused with a clear error
 * before anything is sent to the daemon. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

#define RUN_TIMEOUT_MS 20000
#define OUT_MAX 65536

static struct tdmt_daemon d;
static char out[OUT_MAX], err[OUT_MAX];

static int group_setup(void **state)
{
	return tdmt_group_start(state, &d, "");
}

static void read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, cap - 1, f) : 0;

	buf[n] = '\0';
	if (f)
		fclose(f);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* Runs build/bin/llm_serve --socket SOCK args... (NULL-terminated); its
 * stdout and stderr land in out and err (and are echoed); returns the exit
 * status (-1 on timeout). */
static int run_serve(const char *first, ...)
{
	char exe[512], opath[160], epath[160];
	const char *argv[32];
	int n = 0;
	va_list ap;

	snprintf(exe, sizeof(exe), "%s/bin/llm_serve", tdmt_build_dir());
	snprintf(opath, sizeof(opath), "%s/serve.out", d.dir);
	snprintf(epath, sizeof(epath), "%s/serve.err", d.dir);
	argv[n++] = exe;
	argv[n++] = "--socket";
	argv[n++] = d.sock;
	va_start(ap, first);
	for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	pid_t pid = tdmt_spawn(exe, argv, opath, epath);
	if (pid < 0)
		return -1;
	int rc = tdmt_wait_child(pid, RUN_TIMEOUT_MS);
	read_file(opath, out, sizeof(out));
	read_file(epath, err, sizeof(err));
	printf("%s", out);
	fprintf(stderr, "%s", err);
	return rc;
}

static void path_in_dir(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", d.dir, name);
}

/* Six requests: ContextTokens and GeneratedTokens of each. */
static const int ctx[] = { 5, 12, 3, 9, 1, 7 };
static const int gen[] = { 4, 1, 6, 3, 5, 2 };

static void write_tiny_trace(const char *path, const char *eol)
{
	char text[1024];
	int len = snprintf(text, sizeof(text), "TIMESTAMP,ContextTokens,GeneratedTokens%s", eol);

	for (size_t i = 0; i < sizeof(ctx) / sizeof(ctx[0]); i++)
		len += snprintf(text + len, sizeof(text) - (size_t)len,
		                "2023-11-16 18:15:4%zu.%03zu0000,%d,%d%s", i / 2, 250 * (i % 2),
		                ctx[i], gen[i], eol);
	write_file(path, text);
}

static int total_gen(void)
{
	int t = 0;

	for (size_t i = 0; i < sizeof(gen) / sizeof(gen[0]); i++)
		t += gen[i];
	return t;
}

/* A BENCH figure of out, or -1. */
static double bench_value(const char *name)
{
	char key[96];

	snprintf(key, sizeof(key), "BENCH %s ", name);
	const char *p = strstr(out, key);
	return p ? strtod(p + strlen(key), NULL) : -1;
}

static const char *tiny_model = "# a tiny LLaMA shape\n"
                                "layers = 2\n"
                                "d_model = 64\n"
                                "heads = 4   # query heads\n"
                                "kv_heads = 2\n"
                                "head_dim = 16\n"
                                "d_ff = 96\n"
                                "vocab = 97\n";

/* Every request of the trace completes with its GeneratedTokens, every one
 * is checked against the reference, and the run says so. CRLF line ends
 * (as the published Azure files have) are accepted. */
static void test_serves_trace(void **state)
{
	char trace[160], model[160], want[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	path_in_dir(model, sizeof(model), "tiny.model");
	write_tiny_trace(trace, "\r\n");
	write_file(model, tiny_model);
	assert_int_equal(run_serve("--trace", trace, "--model", model, "--time-scale", "0.05",
	                           "--max-batch", "3", "--check-every", "1", "--quiet", NULL),
	                 0);
	snprintf(want, sizeof(want), "requests: 6/6 complete, %d/%d tokens, 6 checked", total_gen(),
	         total_gen());
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "result: ok"));
	assert_true(bench_value("llm_serve_tok_s") > 0);
	assert_true(bench_value("llm_ttft_p99_ms") >= bench_value("llm_ttft_p50_ms"));
	assert_true(bench_value("llm_tpot_p50_ms") > 0);
	tdmt_test_ok();
}

/* Two sub-batches, their step graphs in flight together: the same
 * requests, tokens and checks. */
static void test_sub_batches(void **state)
{
	char trace[160], want[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	write_tiny_trace(trace, "\n");
	assert_int_equal(run_serve("--trace", trace, "--layers", "2", "--d-model", "64", "--vocab",
	                           "64", "--time-scale", "0", "--max-batch", "4", "--sub-batches",
	                           "2", "--quiet", NULL),
	                 0);
	snprintf(want, sizeof(want), "requests: 6/6 complete, %d/%d tokens, 6 checked", total_gen(),
	         total_gen());
	assert_non_null(strstr(out, want));
	tdmt_test_ok();
}

/* The reference is not a formality: a reference that differs by 1% in one
 * weight fails the run. */
static void test_check_can_fail(void **state)
{
	char trace[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	write_tiny_trace(trace, "\n");
	assert_int_equal(run_serve("--trace", trace, "--layers", "1", "--d-model", "64", "--vocab",
	                           "64", "--time-scale", "0", "--perturb-reference", "--quiet",
	                           NULL),
	                 1);
	assert_non_null(strstr(err, "logits differ from the reference"));
	assert_non_null(strstr(out, "result: FAILED"));
	tdmt_test_ok();
}

/* With every request arriving at once and a KV budget that holds the two
 * largest requests but not three, requests wait in FCFS order (and still
 * all complete). */
static void test_kv_budget_queues(void **state)
{
	char trace[160], want[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	write_tiny_trace(trace, "\n");
	/* 1 layer, kv dim 2 x 16: (ctx + gen - 1) x 2 x 32 x 4 bytes per request;
	 * the largest (12 + 1 - 1 = 12 positions) needs 3072 bytes. */
	assert_int_equal(run_serve("--trace", trace, "--layers", "1", "--d-model", "64", "--heads",
	                           "4", "--kv-heads", "2", "--head-dim", "16", "--vocab", "64",
	                           "--time-scale", "0", "--kv-budget", "6144", "--quiet", NULL),
	                 0);
	snprintf(want, sizeof(want), "requests: 6/6 complete, %d/%d tokens", total_gen(),
	         total_gen());
	assert_non_null(strstr(out, want));
	assert_true(bench_value("llm_kv_queued") >= 1);
	assert_true(bench_value("llm_queue_wait_p99_ms") > 0);
	tdmt_test_ok();
}

/* A budget smaller than one request's KV is refused up front. */
static void test_budget_too_small(void **state)
{
	char trace[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	write_tiny_trace(trace, "\n");
	assert_int_equal(run_serve("--trace", trace, "--kv-budget", "1K", "--quiet", NULL), 2);
	assert_non_null(strstr(err, "bytes of KV, more than --kv-budget"));
	tdmt_test_ok();
}

static const struct {
	const char *text, *error;
} bad_traces[] = {
	{ "", "empty: expected the header TIMESTAMP,ContextTokens,GeneratedTokens" },
	{ "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,374,44\n", ":1: expected the header" },
	{ "timestamp,contexttokens,generatedtokens\n", ":1: expected the header" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n", ":1: no requests after the header" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,-374,44\n",
	  "ContextTokens '-374' is not a whole number" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,abc\n",
	  "GeneratedTokens 'abc' is not a whole number" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,4.5\n",
	  "GeneratedTokens '4.5' is not a whole number" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 "
	  "18:15:46.68,99999999999999999999,4\n",
	  "ContextTokens 99999999999999999999 is out of range" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,0\n",
	  "GeneratedTokens 0 is out of range" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44,7\n",
	  ":2: expected three fields" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374\n",
	  ":2: expected three fields" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,,44\n",
	  "ContextTokens is empty" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-16 18:15:46.68,374,44\n",
	  "TIMESTAMP '2023-13-16 18:15:46.68': month out of range" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,374,44\n", "TIMESTAMP 'yesterday'" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47,1,1\n"
	  "2023-11-16 18:15:46,1,1\n",
	  ":3: TIMESTAMP: earlier than the line before" },
	{ "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47,1,1\n\n"
	  "2023-11-16 18:15:48,1,1\n",
	  ":3: an empty line" },
};

/* Each malformed trace: exit status 2 and a message naming the file, the
 * line and what is wrong, before any connection. */
static void test_bad_traces(void **state)
{
	char trace[160], want[256];

	(void)state;
	path_in_dir(trace, sizeof(trace), "bad.csv");
	for (size_t i = 0; i < sizeof(bad_traces) / sizeof(bad_traces[0]); i++) {
		write_file(trace, bad_traces[i].text);
		int rc = run_serve("--trace", trace, "--quiet", NULL);
		if (rc != 2 || !strstr(err, bad_traces[i].error) || !strstr(err, trace))
			fail_msg("case %zu: exit %d, stderr '%s', want 2 and '%s'", i, rc, err,
			         bad_traces[i].error);
	}
	/* A line far longer than any valid one. */
	char *text = malloc(8192);
	assert_non_null(text);
	int len = snprintf(text, 8192, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 1");
	memset(text + len, '1', 8000);
	text[len + 8000] = '\0';
	write_file(trace, text);
	free(text);
	assert_int_equal(run_serve("--trace", trace, "--quiet", NULL), 2);
	snprintf(want, sizeof(want), "%s:2: a line longer than 256 bytes", trace);
	assert_non_null(strstr(err, want));
	/* A file that is not there. */
	path_in_dir(trace, sizeof(trace), "missing.csv");
	assert_int_equal(run_serve("--trace", trace, "--quiet", NULL), 2);
	assert_non_null(strstr(err, "No such file"));
	tdmt_test_ok();
}

/* --gen-trace writes the documented small trace (examples/llm_trace_small.csv
 * is --gen-trace 32) without a daemon; without --trace the same generator's
 * requests are served. */
static void test_generated_trace(void **state)
{
	static char want[OUT_MAX];

	(void)state;
	assert_int_equal(run_serve("--gen-trace", "32", NULL), 0);
	read_file("examples/llm_trace_small.csv", want, sizeof(want));
	assert_true(strlen(want) > 40);
	assert_string_equal(out, want);
	assert_int_equal(run_serve("--gen-trace", "0", NULL), 2);
	assert_int_equal(run_serve("--layers", "1", "--d-model", "64", "--vocab", "64",
	                           "--time-scale", "0", "--max-requests", "3", "--quiet", NULL),
	                 0);
	assert_non_null(strstr(out, "trace=generated requests=3 "));
	assert_non_null(strstr(out, "requests: 3/3 complete"));
	tdmt_test_ok();
}

static void test_bad_model_file(void **state)
{
	char model[160];

	(void)state;
	path_in_dir(model, sizeof(model), "bad.model");
	write_file(model, "layers = 2\nwidth = 64\n");
	assert_int_equal(run_serve("--model", model, NULL), 2);
	assert_non_null(strstr(err, "bad.model:2: unknown key 'width'"));
	write_file(model, "layers = two\n");
	assert_int_equal(run_serve("--model", model, NULL), 2);
	assert_non_null(strstr(err, "layers wants an integer in 1..256, not 'two'"));
	write_file(model, "heads = 6\nkv_heads = 4\n");
	assert_int_equal(run_serve("--model", model, NULL), 2);
	assert_non_null(strstr(err, "heads must be a multiple of kv_heads"));
	tdmt_test_ok();
}

/* The tokens, requests and check lines of a run of the tiny trace where every
 * request completes and is checked, and its BENCH line names the MoE shape. */
static void assert_moe_run(const char *moe)
{
	char want[160];

	snprintf(want, sizeof(want), "requests: 6/6 complete, %d/%d tokens, 6 checked", total_gen(),
	         total_gen());
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, "result: ok"));
	assert_true(bench_value("llm_serve_tok_s") > 0);
	const char *line = strstr(out, "BENCH llm_serve_tok_s ");
	assert_non_null(line);
	const char *eol = strchr(line, '\n');
	const char *key = strstr(line, moe);
	assert_true(key && (!eol || key < eol));
}

/* A Mixtral-like model (8 experts, top-2, from model-file keys): each MLP
 * is a router and guarded experts accumulating into x; the reference routes
 * the same way and every logit row agrees. */
static void test_moe_mixtral(void **state)
{
	char trace[160], model[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	path_in_dir(model, sizeof(model), "moe.model");
	write_tiny_trace(trace, "\n");
	write_file(model, "layers = 2\nd_model = 64\nheads = 4\nkv_heads = 2\nhead_dim = 16\n"
	                  "d_ff = 64\nvocab = 97\nexperts = 8\ntop_k = 2\n");
	assert_int_equal(run_serve("--trace", trace, "--model", model, "--time-scale", "0",
	                           "--max-batch", "3", "--quiet", NULL),
	                 0);
	assert_moe_run("moe=8,2,0");
	tdmt_test_ok();
}

/* A DeepSeek-V2-Lite-like model (64 routed experts, top-6, 2 shared): the
 * preset, served and checked; and a reference off by 1% in one weight fails
 * it. */
static void test_moe_dsv2(void **state)
{
	char trace[160];

	(void)state;
	path_in_dir(trace, sizeof(trace), "tiny.csv");
	write_tiny_trace(trace, "\n");
	assert_int_equal(run_serve("--trace", trace, "--model-preset", "dsv2-lite-tiny",
	                           "--time-scale", "0", "--max-batch", "4", "--quiet", NULL),
	                 0);
	assert_moe_run("moe=64,6,2");
	assert_int_equal(run_serve("--trace", trace, "--model-preset", "dsv2-lite-tiny", "--layers",
	                           "1", "--time-scale", "0", "--perturb-reference", "--quiet",
	                           NULL),
	                 1);
	assert_non_null(strstr(err, "logits differ from the reference"));
	assert_non_null(strstr(out, "result: FAILED"));
	tdmt_test_ok();
}

/* MoE shapes that cannot route are refused before connecting. */
static void test_moe_bad_shapes(void **state)
{
	(void)state;
	assert_int_equal(run_serve("--moe", "4,5", NULL), 2);
	assert_non_null(strstr(err, "top_k must be in 1..experts"));
	assert_int_equal(run_serve("--top-k", "2", NULL), 2);
	assert_non_null(strstr(err, "top_k and shared_experts need experts"));
	assert_int_equal(run_serve("--moe", "8", NULL), 2);
	assert_int_equal(run_serve("--model-preset", "gpt-huge", NULL), 2);
	assert_non_null(strstr(err, "unknown --model-preset"));
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tdmt_test_setup, tdmt_test_teardown)

static const struct CMUnitTest tests[] = {
	T(test_serves_trace),     T(test_sub_batches),      T(test_check_can_fail),
	T(test_kv_budget_queues), T(test_budget_too_small), T(test_bad_traces),
	T(test_bad_model_file),   T(test_generated_trace),  T(test_moe_mixtral),
	T(test_moe_dsv2),         T(test_moe_bad_shapes),
};

int main(void)
{
	return cmocka_run_group_tests_name("llm_serve", tests, group_setup, tdmt_group_end) ? 1 : 0;
}
