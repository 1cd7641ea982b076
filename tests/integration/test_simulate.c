/* `tandemd --simulate` as a user runs it: workload files it generates
 * here, shipped and generated machines, the table, --json, the schedule
 * files and their determinism, and malformed inputs rejected with
 * FILE:LINE before anything runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tests/integration/support.h"

#define OUT_MAX (1 << 16)

static char dir[64];
static char out[OUT_MAX];

static const char *path(const char *name)
{
	static char p[4][256];
	static int i;
	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static void write_file(const char *name, const char *text)
{
	FILE *f = fopen(path(name), "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *read_all(const char *p, size_t *len)
{
	FILE *f = fopen(p, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* Two processors on their own nodes, unit links. */
static const char *machine2 = "name = \"two\"\n"
                              "[device.p0]\nkind = \"gpu\"\nmodel = \"a\"\nnode = 1\n"
                              "gflops = 100.0\nmem_gbps = 10.0\nlaunch_ns = 1000\nmem_gib = 1\n"
                              "[device.p1]\nkind = \"gpu\"\nmodel = \"b\"\nnode = 2\n"
                              "gflops = 100.0\nmem_gbps = 10.0\nlaunch_ns = 1000\nmem_gib = 1\n"
                              "[link.0-1]\ngbps = 1.0\nlatency_ns = 0\n"
                              "[link.0-2]\ngbps = 1.0\nlatency_ns = 0\n"
                              "[link.1-2]\ngbps = 1.0\nlatency_ns = 0\n";

/* An STG graph: 4 real tasks (a diamond) between dummy entry and exit. */
static const char *stg_ok = "4\n"
                            "0 0 0\n"
                            "1 10 1 0\n"
                            "2 20 1 1\n"
                            "3 30 1 1\n"
                            "4 5 2 2 3\n"
                            "5 0 1 4\n";

static int simulate(const char *const *args)
{
	return tdmt_run_tandemd(args, out, sizeof(out), 60000);
}

static void test_table_and_json(void **state)
{
	(void)state;
	write_file("two.toml", machine2);
	write_file("g.stg", stg_ok);
	const char *args[] = { "--simulate", "-m", path("two.toml"), "-w", path("g.stg"), NULL };
	int rc = simulate(args);
	if (rc)
		fail_msg("exit %d: %s", rc, out);
	assert_non_null(strstr(out, "policy"));
	assert_non_null(strstr(out, "makespan_ms"));
	for (const char *p = "eager\0ws\0fifo\0dmda\0heft\0peft\0prio\0"; *p; p += strlen(p) + 1)
		assert_non_null(strstr(out, p));

	/* Abstract units of 1 ms: the chain 10 + max(20, 30) + 5 on free
	 * communication (STG carries no data) is 45 ms, which heft reaches. */
	const char *jargs[] = { "--simulate", "-m",        path("two.toml"), "-w", path("g.stg"),
		                "-p",         "heft,dmda", "--json",         NULL };
	rc = simulate(jargs);
	if (rc)
		fail_msg("exit %d: %s", rc, out);
	json_error_t je;
	json_t *doc = json_loads(out, 0, &je);
	if (!doc)
		fail_msg("not JSON (%s): %s", je.text, out);
	json_t *pol = json_object_get(doc, "policies");
	assert_int_equal(json_array_size(pol), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *o = json_array_get(pol, i);
		assert_non_null(json_object_get(o, "policy"));
		double ms = json_real_value(json_object_get(o, "makespan")) * 1e3;
		double lb = json_real_value(json_object_get(o, "lower_bound")) * 1e3;
		assert_true(json_is_integer(json_object_get(o, "bytes_moved")));
		assert_true(lb > 44.999 && lb < 45.001);
		assert_true(ms >= lb - 1e-6);
	}
	double heft = json_real_value(json_object_get(json_array_get(pol, 0), "makespan")) * 1e3;
	assert_true(heft > 44.999 && heft < 45.001);
	json_decref(doc);
}

static void test_outputs_deterministic(void **state)
{
	(void)state;
	char m[256], tj[256], ts[256];
	write_file("two.toml", machine2);
	snprintf(m, sizeof(m), "%s", path("two.toml"));
	snprintf(tj, sizeof(tj), "%s", path("s.json"));
	snprintf(ts, sizeof(ts), "%s", path("s.svg"));
	const char *args[] = { "--simulate",
		               "-m",
		               m,
		               "-w",
		               "random:n=200,ccr=1,alpha=1,out=3,beta=1,seed=5",
		               "-p",
		               "dmda,heft",
		               "--trace-out",
		               tj,
		               "--svg",
		               ts,
		               NULL };
	int rc = simulate(args);
	if (rc)
		fail_msg("exit %d: %s", rc, out);
	size_t l1, l2, s1, s2;
	char *a = read_all(path("s.dmda.json"), &l1), *sa = read_all(path("s.heft.svg"), &s1);
	assert_int_equal(simulate(args), 0);
	char *b = read_all(path("s.dmda.json"), &l2), *sb = read_all(path("s.heft.svg"), &s2);
	assert_int_equal(l1, l2);
	assert_memory_equal(a, b, l1);
	assert_int_equal(s1, s2);
	assert_memory_equal(sa, sb, s1);
	assert_non_null(strstr(sa, "<svg"));
	json_t *doc = json_loads(a, 0, NULL);
	assert_non_null(doc);
	assert_true(json_array_size(json_object_get(doc, "traceEvents")) >= 200);
	json_decref(doc);
	free(a);
	free(b);
	free(sa);
	free(sb);
}

static void test_shipped_machine_and_generators(void **state)
{
	(void)state;
	static const char *specs[] = { "cholesky:6:256", "lu:5:256", "qr:4:256" };
	for (size_t i = 0; i < 3; i++) {
		const char *args[] = { "--simulate", "-m", "t4-xeon", "-w",
			               specs[i],     "-p", "dmda",    NULL };
		int rc = simulate(args);
		if (rc)
			fail_msg("%s: exit %d: %s", specs[i], rc, out);
		assert_non_null(strstr(out, "dmda"));
	}
	const char *gone[] = { "--simulate", "-m", "no-such-machine", "-w", "cholesky:4", NULL };
	assert_int_equal(simulate(gone), 1);
	assert_non_null(strstr(out, "no machine named no-such-machine"));
}

/* Malformed workloads: FILE:LINE, exit 1, no table. */
static void test_malformed_rejected(void **state)
{
	(void)state;
	write_file("two.toml", machine2);
	static const struct {
		const char *name, *text, *want;
	} cases[] = {
		{ "bad.stg", "4\n0 0 0\n1 10 1 0\n2 x 1 1\n", "bad.stg:4:" },
		{ "cyc.stg", "2\n0 0 0\n1 1 1 2\n2 1 1 1\n3 0 1 2\n", "cyc.stg:3:" },
		{ "bad.trace",
		  "{\"tandem_trace\":1}\n{\"graph\":1,\"tasks\":1}\n{\"task\":0,\"cost_ns\":-5}\n",
		  "bad.trace:3:" },
		{ "junk.trace", "{\"tandem_trace\":1}\n{\"graph\":1,\"tasks\":1}\n{\"task\":0,\n",
		  "junk.trace:3" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_file(cases[i].name, cases[i].text);
		const char *args[] = { "--simulate",        "-m", path("two.toml"), "-w",
			               path(cases[i].name), NULL };
		int rc = simulate(args);
		if (rc != 1 || !strstr(out, cases[i].want) || strstr(out, "makespan_ms"))
			fail_msg("%s: exit %d, output: %s", cases[i].name, rc, out);
	}
	write_file("bad.toml", "[device.p0]\nkind = \"tpu\"\n");
	const char *args[] = { "--simulate", "-m", path("bad.toml"), "-w", "cholesky:3", NULL };
	assert_int_equal(simulate(args), 1);
	assert_non_null(strstr(out, "bad.toml:2"));
	const char *usage[] = { "--simulate", "-w", "cholesky:3", NULL };
	assert_int_equal(simulate(usage), 2);
	const char *pol[] = { "--simulate", "-m", "h100", "-w", "cholesky:3", "-p", "nope", NULL };
	assert_int_equal(simulate(pol), 2);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/tdm-sim.XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return tdmt_remove_tree(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_and_json),
		cmocka_unit_test(test_outputs_deterministic),
		cmocka_unit_test(test_shipped_machine_and_generators),
		cmocka_unit_test(test_malformed_rejected),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
