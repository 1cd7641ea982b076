/* Unit tests for workload/workload.h: the STG and WfCommons readers on
 * documents written here, their error messages, and the conversion to a
 * plan_dag. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "workload/workload.h"
#include "tandem.h"

/* ---- helpers --------------------------------------------------------------- */

static void stg_ok(const char *text, struct workload *w)
{
	char err[WL_ERR_MAX] = "x";
	int rc = wl_stg_parse(text, strlen(text), "t.stg", w, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

static void wfc_ok(const char *text, struct workload *w)
{
	char err[WL_ERR_MAX] = "x";
	int rc = wl_wfcommons_parse(text, strlen(text), "t.json", w, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

/* Parsing len bytes fails with -TDM_EINVAL, a message starting with want,
 * and an empty workload. */
static void expect_err_len(bool json, const char *text, size_t len, const char *want)
{
	struct workload w;
	char err[WL_ERR_MAX] = "";
	int rc;

	memset(&w, 0x5a, sizeof(w));
	rc = json ? wl_wfcommons_parse(text, len, "t.json", &w, err, sizeof(err))
	          : wl_stg_parse(text, len, "t.stg", &w, err, sizeof(err));
	if (rc != -TDM_EINVAL || strncmp(err, want, strlen(want)))
		print_error("input:\n%.*s\nwant: %s...\ngot %d: %s\n", (int)len, text, want, rc,
		            err);
	assert_int_equal(rc, -TDM_EINVAL);
	assert_true(strncmp(err, want, strlen(want)) == 0);
	assert_int_equal(w.ntasks, 0);
	assert_int_equal(w.nedges, 0);
	assert_null(w.tasks);
	assert_null(w.edges);
}

static void stg_err(const char *text, const char *want)
{
	expect_err_len(false, text, strlen(text), want);
}

static void wfc_err(const char *text, const char *want)
{
	expect_err_len(true, text, strlen(text), want);
}

static void assert_edge(const struct workload *w, uint32_t i, uint32_t src, uint32_t dst,
                        double data)
{
	assert_true(i < w->nedges);
	assert_int_equal(w->edges[i].src, src);
	assert_int_equal(w->edges[i].dst, dst);
	assert_true(w->edges[i].data == data);
}

/* ---- STG ------------------------------------------------------------------- */

/* 4 real tasks: 1 -> {2, 3} -> 4, with the dummy entry 0 and exit 5. */
static const char small_stg[] = "4\n"
                                "  0   0   0\n"
                                "  1   3   1   0\n"
                                "  2   2   1   1\n"
                                "  3   4   1   1\n"
                                "  4   1   2   3   2\n"
                                "  5   0   1   4\n"
                                "# Standard Task Graph Set Project\n"
                                "# CP Length : 8\n";

static void check_small(const struct workload *w)
{
	static const double cost[4] = { 3, 2, 4, 1 };

	assert_int_equal(w->ntasks, 4);
	assert_int_equal(w->units, WL_UNITS_ABSTRACT);
	for (int i = 0; i < 4; i++) {
		char want[8];

		snprintf(want, sizeof(want), "%d", i + 1);
		assert_string_equal(w->tasks[i].name, want);
		assert_true(w->tasks[i].cost == cost[i]);
		assert_true(w->tasks[i].data_in == 0 && w->tasks[i].data_out == 0);
	}
	/* dummy edges dropped, the rest sorted by (src, dst) */
	assert_int_equal(w->nedges, 4);
	assert_edge(w, 0, 0, 1, 0);
	assert_edge(w, 1, 0, 2, 0);
	assert_edge(w, 2, 1, 3, 0);
	assert_edge(w, 3, 2, 3, 0);
}

static void test_stg_small(void **state)
{
	struct workload w;

	(void)state;
	stg_ok(small_stg, &w);
	check_small(&w);
	assert_string_equal(w.name, "t.stg");
	wl_free(&w);
	assert_null(w.tasks);
	wl_free(&w); /* twice is fine */
	wl_free(NULL);
}

static void test_stg_layout_variants(void **state)
{
	/* CRLF, tabs, blank and comment lines anywhere, no final newline */
	static const char crlf[] = "# leading comment\r\n"
	                           "\r\n"
	                           "4\r\n"
	                           "0\t0\t0\r\n"
	                           "1 3 1 0\r\n"
	                           "   \r\n"
	                           "2 2 1 1\r\n"
	                           "# between\r\n"
	                           "3 4 1 1\r\n"
	                           "4 1 2 2 3\r\n"
	                           "5 0 1 4";
	/* a comment may hold any bytes, even non-ASCII */
	static const char comment[] = "4\n0 0 0\n1 3 1 0\n2 2 1 1\n3 4 1 1\n4 1 2 2 3\n5 0 1 4\n"
	                              "# \xe7\xac\xa0\xe5\x8e\x9f\n";
	struct workload w;

	(void)state;
	stg_ok(crlf, &w);
	check_small(&w);
	wl_free(&w);
	stg_ok(comment, &w);
	check_small(&w);
	wl_free(&w);
	/* name NULL: a default name in messages, none kept */
	assert_int_equal(wl_stg_parse(small_stg, strlen(small_stg), NULL, &w, NULL, 0), 0);
	assert_string_equal(w.name, "");
	wl_free(&w);
}

/* Real tasks may cost 0 and need not hang off the entry; the exit's
 * predecessors are checked but make no edges. */
static void test_stg_zero_cost_and_sources(void **state)
{
	struct workload w;

	(void)state;
	stg_ok("3\n0 0 0\n1 0 1 0\n2 7 0\n3 5 2 1 2\n4 0 1 3\n", &w);
	assert_int_equal(w.ntasks, 3);
	assert_true(w.tasks[0].cost == 0);
	assert_true(w.tasks[1].cost == 7);
	assert_int_equal(w.nedges, 2);
	assert_edge(&w, 0, 0, 2, 0);
	assert_edge(&w, 1, 1, 2, 0);
	wl_free(&w);
}

static void test_stg_errors(void **state)
{
	(void)state;
	/* the header */
	stg_err("", "t.stg:1: empty input");
	stg_err("# nothing but a comment\n\n", "t.stg:2: empty input");
	stg_err("x\n", "t.stg:1: expected the number of tasks, found \"x\"");
	stg_err("-3\n", "t.stg:1: negative number of tasks -3");
	stg_err("0\n", "t.stg:1: no tasks");
	stg_err("1000001\n", "t.stg:1: number of tasks 1000001 exceeds the limit of 1000000");
	stg_err("99999999999999999999999999\n", "t.stg:1: number of tasks 999");
	stg_err("2 3\n", "t.stg:1: trailing garbage after the number of tasks: \"3\"");
	/* missing numbers */
	stg_err("1\n0 0 0\n1\n2 0 1 1\n", "t.stg:3: task 1: missing cost");
	stg_err("1\n0 0 0\n1 5\n2 0 1 1\n", "t.stg:3: task 1: missing number of predecessors");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 2 1\n3 0 1 2\n",
	        "t.stg:4: task 2: 2 predecessors announced, 1 given");
	/* numbers out of range or malformed */
	stg_err("1\n0 0 0\n1 -5 1 0\n2 0 1 1\n", "t.stg:3: task 1: negative cost -5");
	stg_err("1\n0 0 0\n1 2.5 1 0\n2 0 1 1\n",
	        "t.stg:3: task 1: cost \"2.5\" is not a non-negative integer");
	stg_err("1\n0 0 0\n1 1000000001 1 0\n2 0 1 1\n",
	        "t.stg:3: task 1: cost 1000000001 exceeds 1000000000");
	stg_err("1\n0 0 0\n1 5 -1 0\n2 0 1 1\n", "t.stg:3: task 1: negative number of pred");
	stg_err("1\n0 0 0\n1 5 one 0\n", "t.stg:3: task 1: number of predecessors \"one\"");
	stg_err("1\n0 0 0\n1 5 2 0\n2 0 1 1\n",
	        "t.stg:3: task 1: 2 predecessors, but only 1 earlier tasks");
	/* predecessors */
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 7\n3 0 1 2\n",
	        "t.stg:4: predecessor 7 of task 2 is not an earlier task");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 2\n3 0 1 2\n",
	        "t.stg:4: predecessor 2 of task 2 is not an earlier task");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 99999999999999999999\n3 0 1 2\n",
	        "t.stg:4: predecessor 99999999999999999999 of task 2 is not an earlier task");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 2 1 1\n3 0 1 2\n",
	        "t.stg:4: predecessor 1 of task 2 is listed twice");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 a\n3 0 1 2\n",
	        "t.stg:4: task 2: predecessor \"a\" is not a task number");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 -1\n3 0 1 2\n",
	        "t.stg:4: task 2: predecessor \"-1\" is not a task number");
	/* ids, counts and what follows */
	stg_err("1\n0 0 0\n2 5 1 0\n2 0 1 1\n", "t.stg:3: expected task 1, found \"2\"");
	stg_err("1\n1 0 0\n", "t.stg:2: expected task 0, found \"1\"");
	stg_err("2\n0 0 0\n1 5 1 0\n2 3 1 1\n", "t.stg:4: 3 task lines for 2 tasks");
	stg_err("3\n0 0 0\n1 5 1 0\n\n# end\n", "t.stg:5: 2 task lines for 3 tasks");
	stg_err("1\n0 0 0\n1 5 1 0 9\n2 0 1 1\n",
	        "t.stg:3: task 1: trailing garbage after 1 predecessors: \"9\"");
	stg_err("1\n0 0 0\n1 5 1 0 # note\n2 0 1 1\n",
	        "t.stg:3: task 1: trailing garbage after 1 predecessors: \"#\"");
	stg_err("1\n0 0 0\n1 5 1 0\n2 0 1 1\n3 0 0\n",
	        "t.stg:5: trailing garbage after the exit task 2");
	/* dummies */
	stg_err("1\n0 4 0\n1 5 1 0\n2 0 1 1\n", "t.stg:2: dummy entry task 0 must cost 0, not 4");
	stg_err("1\n0 0 0\n1 5 1 0\n2 3 1 1\n", "t.stg:4: dummy exit task 2 must cost 0, not 3");
	/* bytes */
	stg_err("1\n0 0 0\n1 5 1 0\xc3\xa9\n2 0 1 1\n", "t.stg:3: non-ASCII byte 0xc3");
	stg_err("1\n0 0 0\n\xff\n", "t.stg:3: non-ASCII byte 0xff");
	stg_err("1\n0 0 0\n1 5\x01 1 0\n2 0 1 1\n", "t.stg:3: control character 0x01");
	stg_err("1\n0 0 0\r\r\n", "t.stg:2: control character 0x0d");
	expect_err_len(false, "1\n0 0\0 0\n", 9, "t.stg:2: control character 0x00");
}

/* A long chain, generated: big inputs work, and a huge task count with
 * nothing behind it is refused without trouble. */
static void test_stg_large(void **state)
{
	const uint32_t n = 200000;
	size_t cap = (size_t)n * 32 + 64, len = 0;
	char *text = malloc(cap);
	struct workload w;

	(void)state;
	assert_non_null(text);
	len += (size_t)snprintf(text + len, cap - len, "%u\n0 0 0\n", n);
	for (uint32_t k = 1; k <= n + 1; k++)
		len += (size_t)snprintf(text + len, cap - len, "%u %u 1 %u\n", k,
		                        k == n + 1 ? 0 : 1 + k % 10, k - 1);
	stg_ok(text, &w);
	assert_int_equal(w.ntasks, n);
	assert_int_equal(w.nedges, n - 1);
	assert_edge(&w, n - 2, n - 2, n - 1, 0);
	assert_true(w.tasks[n - 1].cost == 1 + n % 10);
	wl_free(&w);
	free(text);

	stg_err("1000000\n0 0 0\n1 1 1 0\n", "t.stg:3: 2 task lines for 1000000 tasks");
}

static void test_stg_load(void **state)
{
	char path[] = "/tmp/test_workload_XXXXXX";
	char err[WL_ERR_MAX];
	struct workload w;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, small_stg, strlen(small_stg)), (ssize_t)strlen(small_stg));
	close(fd);
	assert_int_equal(wl_stg_load(path, &w, err, sizeof(err)), 0);
	check_small(&w);
	assert_string_equal(w.name, path + 5); /* the last component */
	wl_free(&w);

	/* a bad file names itself in the message */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "2\n0 0 0\n", 8), 8);
	close(fd);
	assert_int_equal(wl_stg_load(path, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_string_equal(err + strlen(path), ":2: 1 task lines for 2 tasks (n + 2, with the "
	                                        "dummy entry and exit)");
	unlink(path);

	assert_int_equal(wl_stg_load(path, &w, err, sizeof(err)), -TDM_ESYS);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_int_equal(wl_stg_load("/tmp", &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "/tmp: not a regular file of at most 268435456 bytes");
	assert_null(w.tasks);
}

/* ---- WfCommons --------------------------------------------------------------- */

/* 1.5: a -> b, a -> c, {b, c} -> d. Dependencies are given from one end or
 * both; a file that the parent writes but the child does not read adds
 * nothing to the edge, nor does a file the child reads from elsewhere. */
static const char v15_doc[] =
        "{\"name\": \"t\", \"schemaVersion\": \"1.5\", \"workflow\": {"
        " \"specification\": {"
        "  \"tasks\": ["
        "   {\"name\": \"split\", \"id\": \"a\", \"parents\": [], \"children\": [\"b\", \"c\"],"
        "    \"inputFiles\": [\"in\"], \"outputFiles\": [\"x1\", \"x2\", \"log\"]},"
        "   {\"name\": \"work_ID1\", \"id\": \"b\", \"parents\": [\"a\"], \"children\": [],"
        "    \"inputFiles\": [\"x1\", \"ref\"], \"outputFiles\": [\"y1\"]},"
        "   {\"name\": \"work_ID2\", \"id\": \"c\", \"parents\": [],"
        "    \"inputFiles\": [\"x1\", \"x2\"], \"outputFiles\": [\"y2\"]},"
        "   {\"id\": \"d\", \"parents\": [\"b\", \"c\"], \"children\": [],"
        "    \"inputFiles\": [\"y1\", \"y2\", \"ref\"], \"outputFiles\": []}"
        "  ],"
        "  \"files\": ["
        "   {\"id\": \"in\", \"sizeInBytes\": 1000}, {\"id\": \"x1\", \"sizeInBytes\": 100},"
        "   {\"id\": \"x2\", \"sizeInBytes\": 20}, {\"id\": \"log\", \"sizeInBytes\": 7},"
        "   {\"id\": \"ref\", \"sizeInBytes\": 5000}, {\"id\": \"y1\", \"sizeInBytes\": 3},"
        "   {\"id\": \"y2\", \"sizeInBytes\": 4.5e9}"
        "  ]},"
        " \"execution\": {\"makespanInSeconds\": 10, \"tasks\": ["
        "   {\"id\": \"d\", \"runtimeInSeconds\": 4},"
        "   {\"id\": \"a\", \"runtimeInSeconds\": 1.5},"
        "   {\"id\": \"c\", \"runtimeInSeconds\": 0},"
        "   {\"id\": \"b\", \"runtimeInSeconds\": 2.25, \"avgCPU\": 99}"
        " ]}}}";

static void test_wfc_v15(void **state)
{
	struct workload w;

	(void)state;
	wfc_ok(v15_doc, &w);
	assert_int_equal(w.units, WL_UNITS_SECONDS);
	assert_string_equal(w.name, "t.json");
	assert_int_equal(w.ntasks, 4);
	assert_string_equal(w.tasks[0].name, "split");
	assert_string_equal(w.tasks[1].name, "work_ID1");
	assert_string_equal(w.tasks[3].name, "d"); /* no name: the id */
	assert_true(w.tasks[0].cost == 1.5);
	assert_true(w.tasks[1].cost == 2.25);
	assert_true(w.tasks[2].cost == 0);
	assert_true(w.tasks[3].cost == 4);
	/* file sizes become edge data */
	assert_int_equal(w.nedges, 4);
	assert_edge(&w, 0, 0, 1, 100); /* x1 */
	assert_edge(&w, 1, 0, 2, 120); /* x1 + x2 */
	assert_edge(&w, 2, 1, 3, 3); /* y1; ref comes from elsewhere */
	assert_edge(&w, 3, 2, 3, 4.5e9); /* y2 */
	assert_true(w.tasks[0].data_in == 1000 && w.tasks[0].data_out == 127);
	assert_true(w.tasks[3].data_in == 3 + 4.5e9 + 5000 && w.tasks[3].data_out == 0);
	wl_free(&w);
}

/* 1.5 without a files list: the graph, with no data. */
static void test_wfc_v15_no_files(void **state)
{
	struct workload w;

	(void)state;
	wfc_ok("{\"workflow\": {\"specification\": {\"tasks\": ["
	       "{\"id\": \"p\", \"children\": [\"q\"], \"outputFiles\": [\"f\"]},"
	       "{\"id\": \"q\", \"inputFiles\": [\"f\"]}]},"
	       "\"execution\": {\"tasks\": [{\"id\": \"p\", \"runtimeInSeconds\": 1},"
	       "{\"id\": \"q\", \"runtimeInSeconds\": 2}]}}}",
	       &w);
	assert_int_equal(w.ntasks, 2);
	assert_int_equal(w.nedges, 1);
	assert_edge(&w, 0, 0, 1, 0);
	wl_free(&w);
}

/* 1.4: workflow.tasks, parents by name, files inline with sizeInBytes. */
static void test_wfc_v14(void **state)
{
	struct workload w;

	(void)state;
	wfc_ok("{\"schemaVersion\": \"1.4\", \"workflow\": {\"makespanInSeconds\": 5,"
	       " \"tasks\": ["
	       "  {\"name\": \"gen_ID01\", \"id\": \"ID01\", \"runtimeInSeconds\": 2,"
	       "   \"parents\": [], \"files\": ["
	       "    {\"link\": \"output\", \"name\": \"o.dat\", \"sizeInBytes\": 640},"
	       "    {\"link\": \"input\", \"name\": \"seed\", \"sizeInBytes\": 8}]},"
	       "  {\"name\": \"use_ID02\", \"id\": \"ID02\", \"runtimeInSeconds\": 3.5,"
	       "   \"parents\": [\"gen_ID01\"], \"files\": ["
	       "    {\"link\": \"input\", \"name\": \"o.dat\", \"sizeInBytes\": 640},"
	       "    {\"link\": \"Input\", \"name\": \"seed\", \"sizeInBytes\": 8}]}"
	       " ]}}",
	       &w);
	assert_int_equal(w.ntasks, 2);
	assert_string_equal(w.tasks[0].name, "gen_ID01");
	assert_true(w.tasks[0].cost == 2 && w.tasks[1].cost == 3.5);
	assert_int_equal(w.nedges, 1);
	assert_edge(&w, 0, 0, 1, 640);
	assert_true(w.tasks[1].data_in == 648 && w.tasks[0].data_out == 640);
	wl_free(&w);
}

/* 1.0 - 1.3: workflow.jobs (or tasks) with runtime, files with size and
 * path, references by id when no name matches, and children[] alone. */
static void test_wfc_old(void **state)
{
	struct workload w;

	(void)state;
	wfc_ok("{\"schemaVersion\": \"1.1\", \"workflow\": {\"makespan\": 9, \"jobs\": ["
	       " {\"name\": \"one\", \"id\": \"ID1\", \"runtime\": 1, \"children\": [\"ID3\"],"
	       "  \"files\": [{\"link\": \"output\", \"name\": \"a\", \"path\": \"/x/\","
	       "              \"size\": 10},"
	       "             {\"link\": \"output\", \"name\": \"b\", \"size\": 1}]},"
	       " {\"name\": \"two\", \"runtime\": 2, \"parents\": [\"one\"], \"files\": ["
	       "   {\"link\": \"input\", \"name\": \"a\", \"size\": 10},"
	       "   {\"link\": \"input\", \"name\": \"b\", \"size\": 1}]},"
	       " {\"name\": \"three\", \"id\": \"ID3\", \"runtime\": 3, \"parents\": [\"ID1\"],"
	       "  \"files\": [{\"link\": \"input\", \"name\": \"a\", \"path\": \"/x/\","
	       "              \"size\": 10}]}"
	       "]}}",
	       &w);
	assert_int_equal(w.ntasks, 3);
	assert_true(w.tasks[2].cost == 3);
	assert_int_equal(w.nedges, 2);
	assert_edge(&w, 0, 0, 1, 1); /* "b" only: "a" is not "/x/a" */
	assert_edge(&w, 1, 0, 2, 10); /* "/x/a", named from both ends */
	wl_free(&w);
}

static void test_wfc_errors(void **state)
{
	static const char pre[] = "{\"workflow\": {\"specification\": {\"tasks\": [";
	char doc[2048];

	(void)state;
	/* syntax: line and column */
	wfc_err("{\"workflow\": {\n  \"tasks\": [1,\n  2,]}}", "t.json:3:5: unexpected token");
	wfc_err("", "t.json:1:0: ");
	wfc_err("{\"workflow\": {}, \"workflow\": {}}", "t.json:1:");
	/* structure */
	wfc_err("[]", "t.json: (document): not an object");
	wfc_err("{\"name\": \"x\"}", "t.json: workflow: missing");
	wfc_err("{\"workflow\": {}}", "t.json: workflow: no specification, tasks or jobs");
	wfc_err("{\"workflow\": {\"tasks\": {}}}", "t.json: workflow.tasks: not an array");
	wfc_err("{\"workflow\": {\"tasks\": []}}", "t.json: workflow.tasks: no tasks");
	wfc_err("{\"workflow\": {\"specification\": {}}}",
	        "t.json: workflow.specification.tasks: missing");
	wfc_err("{\"workflow\": {\"tasks\": [3]}}", "t.json: workflow.tasks[0]: not an object");

	/* missing runtime, three ways */
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}, {\"id\": \"b\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.tasks[1]: missing runtime: task \"b\"");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": [{\"id\": \"a\"}]}}}", pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[0]: missing runtime");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1},"
	        "{\"name\": \"b\"}]}}",
	        "t.json: workflow.tasks[1]: missing runtime");
	snprintf(doc, sizeof(doc), "%s{\"id\": \"a\"}]}}}", pre);
	wfc_err(doc, "t.json: workflow.execution: missing");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": -2}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[0].runtimeInSeconds: negative runtime -2");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": \"1\"}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[0].runtimeInSeconds: not a number");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1e10}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[0].runtimeInSeconds: runtime 1e+10 exceeds");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}, {\"id\": \"zz\", "
	         "\"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[1].id: unknown task \"zz\"");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}, {\"id\": \"a\", "
	         "\"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.execution.tasks[1].id: second runtime for task \"a\"");

	/* unknown parent, self, cycle, duplicates */
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}, {\"id\": \"b\", \"parents\": [\"a\", \"zz\"]}]},"
	         "\"execution\": {\"tasks\": []}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.tasks[1].parents[1]: unknown task \"zz\"");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, "
	        "\"children\": [\"nope\"]}]}}",
	        "t.json: workflow.tasks[0].children[0]: unknown task \"nope\"");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, "
	        "\"parents\": [\"a\"]}]}}",
	        "t.json: workflow.tasks[0].parents[0]: task \"a\" is its own parent");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, "
	        "\"parents\": [7]}]}}",
	        "t.json: workflow.tasks[0].parents[0]: not a string");
	wfc_err("{\"workflow\": {\"tasks\": ["
	        "{\"name\": \"s\", \"runtime\": 1},"
	        "{\"name\": \"a\", \"runtime\": 1, \"parents\": [\"s\", \"c\"]},"
	        "{\"name\": \"b\", \"runtime\": 1, \"parents\": [\"a\"]},"
	        "{\"name\": \"c\", \"runtime\": 1, \"parents\": [\"b\"]},"
	        "{\"name\": \"z\", \"runtime\": 1, \"parents\": [\"c\"]}]}}",
	        "t.json: workflow.tasks[");
	{
		/* the task named is on the cycle a -> b -> c -> a, not s or z */
		static const char cyc[] =
		        "{\"workflow\": {\"tasks\": ["
		        "{\"name\": \"s\", \"runtime\": 1},"
		        "{\"name\": \"a\", \"runtime\": 1, \"parents\": [\"s\", \"c\"]},"
		        "{\"name\": \"b\", \"runtime\": 1, \"parents\": [\"a\"]},"
		        "{\"name\": \"c\", \"runtime\": 1, \"parents\": [\"b\"]},"
		        "{\"name\": \"z\", \"runtime\": 1, \"parents\": [\"c\"]}]}}";
		char err[WL_ERR_MAX];
		struct workload w;

		assert_int_equal(
		        wl_wfcommons_parse(cyc, strlen(cyc), "t.json", &w, err, sizeof(err)),
		        -TDM_EINVAL);
		assert_true(!strcmp(err, "t.json: workflow.tasks[1]: cycle through task \"a\"") ||
		            !strcmp(err, "t.json: workflow.tasks[2]: cycle through task \"b\"") ||
		            !strcmp(err, "t.json: workflow.tasks[3]: cycle through task \"c\""));
	}
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, \"children\": "
	        "[\"b\"]}, {\"name\": \"b\", \"runtime\": 1, \"children\": [\"a\"]}]}}",
	        "t.json: workflow.tasks[0]: cycle through task \"a\"");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1},"
	        "{\"name\": \"a\", \"runtime\": 2}]}}",
	        "t.json: workflow.tasks[1].name: duplicate task name \"a\"");
	snprintf(doc, sizeof(doc), "%s{\"id\": \"a\"}, {\"id\": \"\"}]}}}", pre);
	wfc_err(doc, "t.json: workflow.specification.tasks[1].id: empty");
	snprintf(doc, sizeof(doc), "%s{\"name\": \"a\"}]}}}", pre);
	wfc_err(doc, "t.json: workflow.specification.tasks[0].id: missing");

	/* files */
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\", \"outputFiles\": [\"f\"]}], \"files\": ["
	         "{\"id\": \"f\", \"sizeInBytes\": -5}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.files[0].sizeInBytes: negative size -5");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\", \"outputFiles\": [\"f\"]}], \"files\": ["
	         "{\"id\": \"f\", \"sizeInBytes\": 1e300}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.files[0].sizeInBytes: size 1e+300 exceeds");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\", \"outputFiles\": [\"g\"]}], \"files\": ["
	         "{\"id\": \"f\", \"sizeInBytes\": 1}]}, \"execution\": {\"tasks\": ["
	         "{\"id\": \"a\", \"runtimeInSeconds\": 1}]}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.tasks[0].outputFiles[0]: unknown file \"g\"");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}], \"files\": [{\"id\": \"f\", \"sizeInBytes\": 1},"
	         "{\"id\": \"f\", \"sizeInBytes\": 2}]}, \"execution\": {\"tasks\": []}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.files[1].id: duplicate file id \"f\"");
	snprintf(doc, sizeof(doc),
	         "%s{\"id\": \"a\"}], \"files\": [{\"id\": \"f\"}]}, \"execution\": "
	         "{\"tasks\": []}}}",
	         pre);
	wfc_err(doc, "t.json: workflow.specification.files[0].sizeInBytes: missing");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, \"files\": ["
	        "{\"link\": \"output\", \"name\": \"f\", \"size\": -1}]}]}}",
	        "t.json: workflow.tasks[0].files[0].size: negative size -1");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, \"files\": ["
	        "{\"link\": \"sideways\", \"name\": \"f\", \"size\": 1}]}]}}",
	        "t.json: workflow.tasks[0].files[0].link: \"sideways\" is neither");
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, \"files\": ["
	        "{\"link\": \"input\", \"name\": \"f\"}]}]}}",
	        "t.json: workflow.tasks[0].files[0]: missing size");
	/* strings from the document are shown printable and cut short */
	wfc_err("{\"workflow\": {\"tasks\": [{\"name\": \"a\", \"runtime\": 1, \"parents\": ["
	        "\"\\u0001\\u00e9xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]}]}}",
	        "t.json: workflow.tasks[0].parents[0]: unknown task \"???xxxxxxxxxxxxxxxxxxxxxxx"
	        "xxxxxxxxxxxxxxx...\"");
}

/* Task names become printable ASCII of at most 63 bytes. */
static void test_wfc_names(void **state)
{
	struct workload w;

	(void)state;
	wfc_ok("{\"workflow\": {\"tasks\": [{\"name\": \"caf\\u00e9\\t"
	       "0123456789012345678901234567890123456789012345678901234567890123456789\","
	       " \"runtime\": 1}]}}",
	       &w);
	assert_int_equal(strlen(w.tasks[0].name), WL_NAME_MAX - 1);
	assert_true(strncmp(w.tasks[0].name, "caf???0123", 10) == 0);
	wl_free(&w);
}

/* ---- shared pieces ------------------------------------------------------------- */

static void test_to_dag(void **state)
{
	static const double speed[2] = { 1, 4 };
	struct workload w;
	struct wl_dag d;
	const struct plan_dag *g;

	(void)state;
	wfc_ok(v15_doc, &w);
	assert_int_equal(wl_to_dag(&w, 3, NULL, &d), 0);
	g = &d.g;
	assert_int_equal(d.ndev, 3);
	assert_int_equal(g->n, 4);
	for (uint32_t v = 0; v < 4; v++)
		for (unsigned k = 0; k < 3; k++)
			assert_true(g->cost[v * 3 + k] == w.tasks[v].cost);
	/* successors: a -> {b, c}, b -> d, c -> d, d -> none */
	assert_int_equal(g->succ_off[0], 0);
	assert_int_equal(g->succ_off[1], 2);
	assert_int_equal(g->succ_off[2], 3);
	assert_int_equal(g->succ_off[3], 4);
	assert_int_equal(g->succ_off[4], 4);
	assert_int_equal(g->succ[0], 1);
	assert_int_equal(g->succ[1], 2);
	assert_int_equal(g->succ[2], 3);
	assert_int_equal(g->succ[3], 3);
	assert_true(g->edge_data[0] == 100 && g->edge_data[1] == 120);
	assert_true(g->edge_data[2] == 3 && g->edge_data[3] == 4.5e9);
	wl_dag_free(&d);
	assert_null(d.cost);

	/* heterogeneous speeds divide the cost */
	assert_int_equal(wl_to_dag(&w, 2, speed, &d), 0);
	assert_true(d.g.cost[0 * 2 + 0] == 1.5 && d.g.cost[0 * 2 + 1] == 1.5 / 4);
	assert_true(d.g.cost[3 * 2 + 1] == 1);
	wl_dag_free(&d);
	wl_dag_free(NULL);

	/* refused: no devices, bad speeds, edges out of range */
	assert_int_equal(wl_to_dag(&w, 0, NULL, &d), -TDM_EINVAL);
	assert_int_equal(wl_to_dag(&w, 2, (const double[]){ 1, 0 }, &d), -TDM_EINVAL);
	assert_int_equal(wl_to_dag(&w, 1, (const double[]){ -1 }, &d), -TDM_EINVAL);
	w.edges[1].dst = 4;
	assert_int_equal(wl_to_dag(&w, 1, NULL, &d), -TDM_EINVAL);
	assert_null(d.cost);
	wl_free(&w);

	/* an STG graph, in abstract units */
	stg_ok(small_stg, &w);
	assert_int_equal(wl_to_dag(&w, 2, NULL, &d), 0);
	assert_int_equal(d.g.n, 4);
	assert_true(d.g.cost[2 * 2 + 1] == 4);
	assert_int_equal(d.g.succ_off[4], 4);
	for (uint32_t e = 0; e < 4; e++)
		assert_true(d.g.edge_data[e] == 0);
	wl_dag_free(&d);
	wl_free(&w);
}

/* The converted DAG plans: 1 -> {2, 3} -> 4 on two identical devices takes
 * the critical path 3 + 4 + 1; a WfCommons graph on two memory nodes pays
 * for the data it moves. */
static void test_dag_plans(void **state)
{
	static const uint16_t node[2] = { 0, 1 }, node0[2] = { 0, 0 };
	static const double zero[4] = { 0 };
	static const double lat[4] = { 0, 0.5, 0.5, 0 }, inv_bw[4] = { 0, 1e-3, 1e-3, 0 };
	struct plan_machine one = {
		.ndev = 2, .node = node0, .nnodes = 1, .lat = zero, .inv_bw = zero
	};
	struct plan_machine two = {
		.ndev = 2, .node = node, .nnodes = 2, .lat = lat, .inv_bw = inv_bw
	};
	struct plan_ws *ws = plan_ws_new();
	struct plan_slot slots[4];
	struct workload w;
	struct wl_dag d;
	double mk = 0, cp = 0;
	char why[128];

	(void)state;
	assert_non_null(ws);
	stg_ok(small_stg, &w);
	assert_int_equal(wl_to_dag(&w, 2, NULL, &d), 0);
	assert_int_equal(plan_schedule(&d.g, &one, NULL, ws, slots, &mk), 0);
	assert_int_equal(plan_check(&d.g, &one, slots, why, sizeof(why)), 0);
	assert_true(mk == 8);
	assert_int_equal(plan_lower_bounds(&d.g, &one, &cp, NULL), 0);
	assert_true(cp == 8);
	wl_dag_free(&d);
	wl_free(&w);

	wfc_ok(v15_doc, &w);
	assert_int_equal(wl_to_dag(&w, 2, NULL, &d), 0);
	assert_int_equal(plan_schedule(&d.g, &two, NULL, ws, slots, &mk), 0);
	assert_int_equal(plan_check(&d.g, &two, slots, why, sizeof(why)), 0);
	/* c's output (4.5e9 bytes) keeps c and d on one device: at best
	 * a (1.5) then c and b side by side, then d (4) */
	assert_true(mk >= 1.5 + 2.25 + 4);
	assert_int_equal(slots[2].dev, slots[3].dev);
	wl_dag_free(&d);
	wl_free(&w);
	plan_ws_free(ws);
}

static void test_sort_and_cycles(void **state)
{
	struct wl_task tasks[5] = { { .cost = 1 } };
	struct wl_edge edges[6] = {
		{ 2, 1, 5 }, { 0, 1, 1 }, { 1, 2, 0 }, { 2, 4, 0 }, { 0, 1, 3 }, { 4, 3, 0 },
	};
	struct workload w = { .ntasks = 5, .nedges = 6, .tasks = tasks, .edges = edges };
	uint32_t cyc = 99;

	(void)state;
	wl_sort_edges(&w);
	assert_int_equal(w.nedges, 5);
	assert_edge(&w, 0, 0, 1, 3); /* duplicates merged, largest data kept */
	assert_edge(&w, 1, 1, 2, 0);
	assert_edge(&w, 2, 2, 1, 5);
	assert_edge(&w, 3, 2, 4, 0);
	assert_edge(&w, 4, 4, 3, 0);
	/* 1 <-> 2 is a cycle; 4 and 3 hang below it and are not on it */
	assert_int_equal(wl_check_acyclic(&w, &cyc), -TDM_EINVAL);
	assert_true(cyc == 1 || cyc == 2);
	w.edges[2].src = 0; /* 0 -> 1 twice is fine for the check */
	assert_int_equal(wl_check_acyclic(&w, &cyc), 0);
	w.edges[4].dst = 5; /* out of range */
	assert_int_equal(wl_check_acyclic(&w, &cyc), -TDM_EINVAL);
	assert_int_equal(cyc, UINT32_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stg_small),
		cmocka_unit_test(test_stg_layout_variants),
		cmocka_unit_test(test_stg_zero_cost_and_sources),
		cmocka_unit_test(test_stg_errors),
		cmocka_unit_test(test_stg_large),
		cmocka_unit_test(test_stg_load),
		cmocka_unit_test(test_wfc_v15),
		cmocka_unit_test(test_wfc_v15_no_files),
		cmocka_unit_test(test_wfc_v14),
		cmocka_unit_test(test_wfc_old),
		cmocka_unit_test(test_wfc_errors),
		cmocka_unit_test(test_wfc_names),
		cmocka_unit_test(test_to_dag),
		cmocka_unit_test(test_dag_plans),
		cmocka_unit_test(test_sort_and_cycles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
