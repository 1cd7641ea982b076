/* Azure LLM inference traces (workload/llm_trace.h): the reader on good
 * input (LF and CRLF, fractions of a second, a year boundary), every field
 * rejected with its message, and the generators (deterministic, with the
 * published shape). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "workload/llm_trace.h"
#include "tandem.h"

#define HDR "TIMESTAMP,ContextTokens,GeneratedTokens\n"

static void parse_ok(const char *text, struct llm_trace *t)
{
	char err[256] = "";
	int rc = llm_trace_parse(text, strlen(text), "t.csv", 0, t, err, sizeof(err));

	if (rc)
		print_error("unexpected: %s\n", err);
	assert_int_equal(rc, 0);
}

static void expect_error(const char *text, const char *want)
{
	struct llm_trace t = { 99, (void *)&t };
	char err[256] = "";
	int rc = llm_trace_parse(text, strlen(text), "t.csv", 0, &t, err, sizeof(err));

	if (rc != -TDM_EINVAL || strcmp(err, want))
		print_error("text:\n%s\nwant: %s\ngot:  %s\n", text, want, err);
	assert_int_equal(rc, -TDM_EINVAL);
	assert_string_equal(err, want);
	assert_int_equal(t.n, 0);
	assert_null(t.req);
}

static void test_parse(void **state)
{
	struct llm_trace t;

	(void)state;
	parse_ok(HDR "2023-11-16 18:15:46.6805900,374,44\n"
	             "2023-11-16 18:15:50.9951690,396,109\n"
	             "2023-11-16 18:15:50.9951690,1,1\n",
	         &t);
	assert_int_equal(t.n, 3);
	assert_true(t.req[0].arrival_ns == 0);
	assert_int_equal(t.req[0].prompt, 374);
	assert_int_equal(t.req[0].output, 44);
	assert_true(fabs(t.req[1].arrival_ns - 4.314579e9) < 1e3);
	assert_true(t.req[2].arrival_ns == t.req[1].arrival_ns);
	llm_trace_free(&t);
	/* CRLF (Azure's files), no fraction, across a new year, no last newline. */
	parse_ok("TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
	         "2023-12-31 23:59:59,10,20\r\n"
	         "2024-01-01 00:00:00.5,30,40",
	         &t);
	assert_int_equal(t.n, 2);
	assert_true(fabs(t.req[1].arrival_ns - 1.5e9) < 1);
	llm_trace_free(&t);
	/* A leap day, and max_reqs. */
	char err[256];
	const char *txt = HDR "2024-02-29 00:00:00,1,1\n2024-02-29 00:00:01,2,2\n";
	assert_int_equal(llm_trace_parse(txt, strlen(txt), "t.csv", 1, &t, err, sizeof(err)), 0);
	assert_int_equal(t.n, 1);
	llm_trace_free(&t);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("", "t.csv:1: empty: expected the header "
	                 "TIMESTAMP,ContextTokens,GeneratedTokens");
	expect_error("TIMESTAMP,Context,Generated\n1,2,3\n",
	             "t.csv:1: expected the header TIMESTAMP,ContextTokens,GeneratedTokens");
	expect_error(HDR, "t.csv:1: no requests after the header");
	expect_error(HDR "2023-11-16 18:15:46,374\n",
	             "t.csv:2: expected three fields: TIMESTAMP,ContextTokens,GeneratedTokens");
	expect_error(HDR "2023-11-16 18:15:46,374,44,1\n",
	             "t.csv:2: expected three fields: TIMESTAMP,ContextTokens,GeneratedTokens");
	expect_error(HDR "2023/11/16 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fraction]");
	expect_error(HDR "2023-1x-16 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: expected digits in YYYY-MM-DD HH:MM:SS");
	expect_error(HDR "1969-11-16 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: year out of range (1970 to 9999)");
	expect_error(HDR "2023-13-16 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: month out of range (01 to 12)");
	expect_error(HDR "2023-02-29 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: no such day in that month");
	expect_error(HDR "2023-04-31 18:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: no such day in that month");
	expect_error(HDR "2023-11-16 24:15:46,374,44\n",
	             "t.csv:2: TIMESTAMP: time of day out of range");
	expect_error(HDR "2023-11-16 18:15:46.,374,44\n",
	             "t.csv:2: TIMESTAMP: the fraction of a second is '.' and 1 to 9 digits");
	expect_error(HDR "2023-11-16 18:15:46.1234567890,374,44\n",
	             "t.csv:2: TIMESTAMP: the fraction of a second is '.' and 1 to 9 digits");
	expect_error(HDR "2023-11-16 18:15:46,0,44\n",
	             "t.csv:2: ContextTokens: 0 is out of range (1 to 1048576)");
	expect_error(HDR "2023-11-16 18:15:46,-3,44\n",
	             "t.csv:2: ContextTokens: expected a whole number of tokens");
	expect_error(HDR "2023-11-16 18:15:46,374,\n",
	             "t.csv:2: GeneratedTokens: expected a whole number of tokens");
	expect_error(HDR "2023-11-16 18:15:46,374,2000000\n",
	             "t.csv:2: GeneratedTokens: 2000000 is out of range (1 to 1048576)");
	expect_error(HDR "2023-11-16 18:15:46,374,12345678901\n",
	             "t.csv:2: GeneratedTokens: expected a whole number of tokens");
	expect_error(HDR "2023-11-16 18:15:46,374,44\n2023-11-16 18:15:45,374,44\n",
	             "t.csv:3: TIMESTAMP: earlier than the line before (requests are in arrival "
	             "order)");
	expect_error(HDR "2023-11-16 18:15:46,374,44\n\n2023-11-16 18:15:47,1,1\n",
	             "t.csv:3: an empty line");
	expect_error(HDR "2023-11-16 18:15:46,3\r4,44\n",
	             "t.csv:2: a NUL or a stray CR in the line");
	const char nul[] = HDR "2023-11-16 18:15:46,3\0004,44\n";
	struct llm_trace t;
	char err[256];
	assert_int_equal(llm_trace_parse(nul, sizeof(nul) - 1, "t.csv", 0, &t, err, sizeof(err)),
	                 -TDM_EINVAL);
	assert_string_equal(err, "t.csv:2: a NUL or a stray CR in the line");
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void test_generate(void **state)
{
	struct llm_trace a, b;
	char err[256];
	uint32_t *v;

	(void)state;
	assert_int_equal(llm_trace_generate(LLM_TRACE_CONV, 5000, 3, &a, err, sizeof(err)), 0);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CONV, 5000, 3, &b, err, sizeof(err)), 0);
	assert_memory_equal(a.req, b.req, 5000 * sizeof(*a.req));
	llm_trace_free(&b);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CONV, 5000, 4, &b, err, sizeof(err)), 0);
	assert_memory_not_equal(a.req, b.req, 5000 * sizeof(*a.req));
	/* Medians near Azure conv's (1020 in, 129 out), arrivals in order at
	 * about 5.4 a second. */
	v = malloc(5000 * sizeof(*v));
	for (int i = 0; i < 5000; i++)
		v[i] = a.req[i].prompt;
	qsort(v, 5000, sizeof(*v), cmp_u32);
	assert_true(v[2500] > 900 && v[2500] < 1150);
	for (int i = 0; i < 5000; i++) {
		v[i] = a.req[i].output;
		assert_true(a.req[i].output >= 10 && a.req[i].output <= 1000);
		assert_true(i == 0 || a.req[i].arrival_ns >= a.req[i - 1].arrival_ns);
	}
	qsort(v, 5000, sizeof(*v), cmp_u32);
	assert_true(v[2500] > 110 && v[2500] < 150);
	double rate = 4999 / (a.req[4999].arrival_ns / 1e9);
	assert_true(rate > 5.0 && rate < 5.8);
	free(v);
	llm_trace_free(&a);
	llm_trace_free(&b);
	/* Code: long prompts, short outputs. */
	assert_int_equal(llm_trace_generate(LLM_TRACE_CODE, 2000, 1, &a, err, sizeof(err)), 0);
	double in = 0, out = 0;
	for (int i = 0; i < 2000; i++)
		in += a.req[i].prompt, out += a.req[i].output;
	assert_true(in / 2000 > 1500 && in / 2000 < 2500 && out / 2000 < 40);
	llm_trace_free(&a);
	assert_int_equal(llm_trace_generate(LLM_TRACE_CODE, 0, 1, &a, err, sizeof(err)),
	                 -TDM_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_generate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
