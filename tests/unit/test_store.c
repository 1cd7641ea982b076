/* Unit tests for profiler/store.c: the model store on disk. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "profiler/store.h"
#include "tandem.h"

/* ---- helpers ------------------------------------------------------------------ */

static struct calibration *cal_new(const char *key)
{
	struct calibration *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->ndevices = 2;
	c->nnodes = 2;
	for (int i = 0; i < 2; i++) {
		snprintf(c->dev[i].key, sizeof(c->dev[i].key), "%s", key);
		c->dev[i].gemm_gflops = 50;
		c->dev[i].mem_gbps = 10;
		c->dev[i].launch_ns = 2000;
	}
	for (int s = 0; s < 2; s++)
		for (int t = 0; t < 2; t++)
			c->link[s][t] = (struct cal_link){ .gbps = 8, .latency_ns = 3000 };
	return c;
}

static struct profiler *prof_new(const char *key)
{
	struct calibration *c = cal_new(key);
	struct profiler *p = NULL;

	assert_int_equal(profiler_create(c, &p), 0);
	free(c);
	return p;
}

static struct kernel_features feat(double flops)
{
	return (struct kernel_features){ .flops = flops, .bytes = 16 * flops, .domain = flops / 2 };
}

/* n samples of cost ns at one size. */
static void learn(struct profiler *p, uint32_t kernel, double flops, double ns, int n)
{
	struct kernel_features f = feat(flops);

	for (int i = 0; i < n; i++)
		profiler_observe(p, kernel, 0, &f, (uint64_t)ns);
}

static struct cost_pred predict(const struct profiler *p, uint32_t kernel, double flops)
{
	struct kernel_features f = feat(flops);
	struct cost_pred cp;

	profiler_predict(p, kernel, 0, &f, &cp);
	return cp;
}

static char *tmp_dir(void)
{
	char *d = strdup("/tmp/tdm-store-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

/* rm -r of a test directory (flat, or one level of subdirectories). */
static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];

	if (!d)
		return;
	while ((e = readdir(d))) {
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
			rm_dir(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

/* Files in dir whose name contains what. */
static int count_files(const char *dir, const char *what)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, what))
			n++;
	closedir(d);
	return n;
}

static json_t *load_file(const char *dir)
{
	char path[4096];
	json_error_t jerr;
	json_t *doc;

	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	doc = json_load_file(path, 0, &jerr);
	if (!doc)
		print_error("%s:%d: %s\n", path, jerr.line, jerr.text);
	assert_non_null(doc);
	return doc;
}

static json_t *find_model(const json_t *doc, const char *kernel, const char *key)
{
	size_t i;
	json_t *m;

	json_array_foreach(json_object_get(doc, "models"), i, m)
	{
		if (!strcmp(json_string_value(json_object_get(m, "kernel")), kernel) &&
		    !strcmp(json_string_value(json_object_get(m, "device")), key))
			return m;
	}
	return NULL;
}

static json_t *find_footprint(const json_t *model, double flops)
{
	size_t i;
	json_t *f;

	json_array_foreach(json_object_get(model, "footprints"), i, f)
	{
		if (json_number_value(json_object_get(f, "flops")) == flops)
			return f;
	}
	return NULL;
}

static void save_ok(const struct profiler *p, const char *dir)
{
	char err[256] = "";
	int rc = store_save(p, dir, err, sizeof(err));

	if (rc)
		print_error("store_save: %s\n", err);
	assert_int_equal(rc, 0);
}

static void load_ok(struct profiler *p, const char *dir)
{
	char err[256] = "";
	int rc = store_load(p, dir, err, sizeof(err));

	if (rc)
		print_error("store_load: %s\n", err);
	assert_int_equal(rc, 0);
}

/* ---- tests --------------------------------------------------------------------- */

static void test_path(void **state)
{
	char path[4096], tiny[8];
	const char *name;

	(void)state;
	assert_int_equal(store_path("/var/lib/tandem", path, sizeof(path)), 0);
	assert_memory_equal(path, "/var/lib/tandem/models-", 23);
	name = path + 23;
	assert_true(strlen(name) > 5);
	assert_string_equal(name + strlen(name) - 5, ".json");
	assert_int_equal(strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                              "0123456789._-"),
	                 strlen(name));
	assert_int_equal(store_path("", path, sizeof(path)), -TDM_EINVAL);
	assert_int_equal(store_path(NULL, path, sizeof(path)), -TDM_EINVAL);
	assert_int_equal(store_path("/var/lib/tandem", tiny, sizeof(tiny)), -TDM_EINVAL);
}

static void test_missing_file_is_not_an_error(void **state)
{
	char *dir = tmp_dir();
	struct profiler *p = prof_new("cpu:a");
	char err[64] = "";

	(void)state;
	assert_int_equal(store_load(p, dir, err, sizeof(err)), 0);
	assert_int_equal(predict(p, KERNEL_SGEMM, 1000).source, COST_PRIOR);
	profiler_destroy(p);
	rm_dir(dir);
	free(dir);
}

static void test_save_then_load(void **state)
{
	char *dir = tmp_dir(), sub[4096];
	struct profiler *p = prof_new("cpu:a"), *q = prof_new("cpu:a");
	static const double sizes[] = { 1e5, 2e5, 4e5, 8e5, 1.6e6, 3e5, 6e5 };

	(void)state;
	for (int i = 0; i < 5; i++)
		learn(p, KERNEL_SGEMM, sizes[i], 4000 + sizes[i] / 20, 3);
	learn(p, KERNEL_SPIN, 0, 1234, 2);
	profiler_observe_copy(p, 0, 1, 1 << 24, 4000000, 1);
	/* into a directory that does not exist yet */
	snprintf(sub, sizeof(sub), "%s/state/tandem", dir);
	save_ok(p, sub);
	load_ok(q, sub);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct cost_pred a = predict(p, KERNEL_SGEMM, sizes[i]);
		struct cost_pred b = predict(q, KERNEL_SGEMM, sizes[i]);

		assert_int_equal(a.source, b.source);
		assert_true(fabs(a.ns - b.ns) <= 1e-9 * a.ns);
	}
	assert_int_equal(predict(q, KERNEL_SGEMM, 1e5).source, COST_HISTORY);
	assert_true(predict(q, KERNEL_SPIN, 0).ns == 1234);
	assert_true(profiler_predict_copy(p, 0, 1, 1 << 20) ==
	            profiler_predict_copy(q, 0, 1, 1 << 20));
	assert_int_equal(count_files(sub, ".tmp"), 0);
	profiler_destroy(q);
	profiler_destroy(p);
	rm_dir(dir);
	free(dir);
}

/* Two daemons with different devices share a directory: both kept. */
static void test_two_profilers_one_file(void **state)
{
	char *dir = tmp_dir();
	struct profiler *a = prof_new("cpu:a"), *b = prof_new("gpu:b"), *a2 = prof_new("cpu:a");
	json_t *doc, *again;
	char path[4096];

	(void)state;
	learn(a, KERNEL_SGEMM, 1e6, 50000, 3);
	learn(b, KERNEL_AXPY, 1e6, 9000, 4);
	save_ok(a, dir);
	save_ok(b, dir);
	doc = load_file(dir);
	assert_non_null(find_model(doc, "sgemm", "cpu:a"));
	assert_non_null(find_model(doc, "axpy", "gpu:b"));
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 2);

	/* a restarted "a" learns its model and keeps b's aside... */
	load_ok(a2, dir);
	assert_true(predict(a2, KERNEL_SGEMM, 1e6).ns == 50000);
	assert_int_equal(predict(a2, KERNEL_AXPY, 1e6).source, COST_PRIOR);
	learn(a2, KERNEL_SGEMM, 2e6, 90000, 1);
	/* ...so that its next save loses nothing, even when the file is gone */
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	assert_int_equal(unlink(path), 0);
	save_ok(a2, dir);
	again = load_file(dir);
	assert_non_null(find_footprint(find_model(again, "sgemm", "cpu:a"), 2e6));
	assert_non_null(find_footprint(find_model(again, "sgemm", "cpu:a"), 1e6));
	assert_non_null(find_footprint(find_model(again, "axpy", "gpu:b"), 1e6));
	json_decref(again);
	json_decref(doc);
	profiler_destroy(a2);
	profiler_destroy(b);
	profiler_destroy(a);
	rm_dir(dir);
	free(dir);
}

/* Writer w: kernel sgemm or axpy by parity, its own size, w+2 more samples
 * before each save. Exits 0 when every save succeeded. */
static void writer(const char *dir, int w)
{
	struct profiler *p = prof_new("cpu:shared");
	uint32_t kernel = w % 2 ? KERNEL_AXPY : KERNEL_SGEMM;
	char err[256];
	int bad = 0;

	/* 20 saves; samples in the first 6 only, so that no footprint fills its
	 * ring (a full ring learns one sample in 8, see profiler.h). */
	for (int i = 0; i < 20; i++) {
		if (i < 6)
			learn(p, kernel, 1000.0 * (w + 1), 10000.0 * (w + 1), w + 2);
		if (store_save(p, dir, err, sizeof(err)) != 0) {
			fprintf(stderr, "writer %d: %s\n", w, err);
			bad = 1;
		}
	}
	profiler_destroy(p);
	_exit(bad);
}

static void test_concurrent_writers(void **state)
{
	char *dir = tmp_dir();
	pid_t pid[4];
	json_t *doc;

	(void)state;
	for (int w = 0; w < 4; w++) {
		pid[w] = fork();
		assert_true(pid[w] >= 0);
		if (pid[w] == 0)
			writer(dir, w);
	}
	for (int w = 0; w < 4; w++) {
		int st = 0;

		assert_int_equal(waitpid(pid[w], &st, 0), pid[w]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	doc = load_file(dir);
	for (int w = 0; w < 4; w++) {
		json_t *m = find_model(doc, w % 2 ? "axpy" : "sgemm", "cpu:shared");
		json_t *f = find_footprint(m, 1000.0 * (w + 1));

		assert_non_null(f);
		/* the last save of each writer won: all its samples */
		assert_int_equal(json_integer_value(json_object_get(f, "n")), 6 * (w + 2));
	}
	assert_int_equal(count_files(dir, ".tmp"), 0);
	assert_int_equal(count_files(dir, "models-"), 2); /* the file and its lock */
	json_decref(doc);
	rm_dir(dir);
	free(dir);
}

static json_t *parse(const char *text)
{
	json_t *doc = json_loads(text, 0, NULL);

	assert_non_null(doc);
	return doc;
}

static void test_merge_rules(void **state)
{
	json_t *ours =
	        parse("{\"version\":1,\"models\":["
	              "{\"kernel\":\"sgemm\",\"device\":\"cpu:a\",\"samples\":9,\"outliers\":1,"
	              " \"footprints\":["
	              "  {\"flops\":1,\"bytes\":0,\"domain\":0,\"n\":3,\"tag\":\"ours1\"},"
	              "  {\"flops\":2,\"bytes\":0,\"domain\":0,\"n\":4,\"tag\":\"ours2\"},"
	              "  {\"flops\":3,\"bytes\":0,\"domain\":0,\"n\":2,\"tag\":\"ours3\"}]},"
	              "{\"kernel\":\"spin\",\"device\":\"cpu:a\",\"samples\":1,\"footprints\":[]}],"
	              "\"links\":[{\"src\":0,\"dst\":1,\"gbps\":5,\"copies\":2}]}");
	json_t *theirs =
	        parse("{\"version\":1,\"models\":["
	              "{\"kernel\":\"sgemm\",\"device\":\"cpu:a\",\"samples\":20,\"outliers\":7,"
	              " \"footprints\":["
	              "  {\"flops\":1,\"bytes\":0,\"domain\":0,\"n\":5,\"tag\":\"theirs1\"},"
	              "  {\"flops\":2,\"bytes\":0,\"domain\":0,\"n\":4,\"tag\":\"theirs2\"},"
	              "  {\"flops\":4,\"bytes\":0,\"domain\":0,\"n\":1,\"tag\":\"theirs4\"}]},"
	              "{\"kernel\":\"axpy\",\"device\":\"gpu:b\",\"samples\":3,\"footprints\":[]},"
	              "{\"device\":\"gpu:b\"}, 17],"
	              "\"links\":[{\"src\":0,\"dst\":1,\"gbps\":9,\"copies\":7},"
	              "{\"src\":1,\"dst\":0,\"gbps\":3,\"copies\":1}]}");
	json_t *m = store_merge(ours, theirs), *sg;

	(void)state;
	assert_non_null(m);
	assert_int_equal(json_integer_value(json_object_get(m, "version")), 1);
	assert_int_equal(json_array_size(json_object_get(m, "models")), 3);
	sg = find_model(m, "sgemm", "cpu:a");
	assert_non_null(sg);
	/* model figures from theirs (20 samples > 9) */
	assert_int_equal(json_integer_value(json_object_get(sg, "samples")), 20);
	assert_int_equal(json_integer_value(json_object_get(sg, "outliers")), 7);
	/* footprints: more samples wins, ours on ties, the union */
	assert_int_equal(json_array_size(json_object_get(sg, "footprints")), 4);
	assert_string_equal(json_string_value(json_object_get(find_footprint(sg, 1), "tag")),
	                    "theirs1");
	assert_string_equal(json_string_value(json_object_get(find_footprint(sg, 2), "tag")),
	                    "ours2");
	assert_string_equal(json_string_value(json_object_get(find_footprint(sg, 3), "tag")),
	                    "ours3");
	assert_string_equal(json_string_value(json_object_get(find_footprint(sg, 4), "tag")),
	                    "theirs4");
	assert_non_null(find_model(m, "spin", "cpu:a"));
	assert_non_null(find_model(m, "axpy", "gpu:b"));
	/* links: more copies wins */
	assert_int_equal(json_array_size(json_object_get(m, "links")), 2);
	assert_true(json_number_value(json_object_get(
	                    json_array_get(json_object_get(m, "links"), 0), "gbps")) == 9);
	json_decref(m);

	/* nothing on disk: a clean copy of ours */
	m = store_merge(ours, NULL);
	assert_non_null(m);
	assert_int_equal(json_array_size(json_object_get(m, "models")), 2);
	assert_int_equal(
	        json_array_size(json_object_get(find_model(m, "sgemm", "cpu:a"), "footprints")), 3);
	json_decref(m);
	json_decref(theirs);
	json_decref(ours);
}

/* A model keeps the 64 footprints with the most samples. */
static void test_merge_caps_footprints(void **state)
{
	json_t *ours = parse("{\"version\":1,\"models\":[{\"kernel\":\"sgemm\","
	                     "\"device\":\"cpu:a\",\"samples\":1,\"footprints\":[]}]}");
	json_t *theirs = json_deep_copy(ours), *m, *fps;

	(void)state;
	for (int i = 0; i < 50; i++) {
		json_array_append_new(
		        json_object_get(json_array_get(json_object_get(ours, "models"), 0),
		                        "footprints"),
		        json_pack("{s:i, s:i, s:i, s:i}", "flops", i, "bytes", 0, "domain", 0, "n",
		                  100 + i));
		json_array_append_new(
		        json_object_get(json_array_get(json_object_get(theirs, "models"), 0),
		                        "footprints"),
		        json_pack("{s:i, s:i, s:i, s:i}", "flops", 1000 + i, "bytes", 0, "domain",
		                  0, "n", 1 + i));
	}
	m = store_merge(ours, theirs);
	assert_non_null(m);
	fps = json_object_get(find_model(m, "sgemm", "cpu:a"), "footprints");
	assert_int_equal(json_array_size(fps), 64);
	assert_non_null(find_footprint(find_model(m, "sgemm", "cpu:a"), 0)); /* n = 100 */
	assert_non_null(find_footprint(find_model(m, "sgemm", "cpu:a"), 1049)); /* n = 50 */
	assert_null(find_footprint(find_model(m, "sgemm", "cpu:a"), 1000)); /* n = 1 */
	json_decref(m);
	json_decref(theirs);
	json_decref(ours);
}

/* A corrupt file: load says so, save replaces it. */
static void test_corrupt_file(void **state)
{
	static const char *const bad[] = { "{\"version\":1,\"models\":[", "not json at all",
		                           "{\"version\":7,\"models\":[]}", "[1,2,3]" };
	char *dir = tmp_dir(), path[4096];
	struct profiler *p = prof_new("cpu:a");

	(void)state;
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	learn(p, KERNEL_SGEMM, 3e5, 7777, 3);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct profiler *q = prof_new("cpu:a");
		char err[256] = "";
		FILE *f = fopen(path, "w");
		json_t *doc;

		assert_non_null(f);
		fputs(bad[i], f);
		fclose(f);
		assert_int_equal(store_load(q, dir, err, sizeof(err)), -TDM_EINVAL);
		assert_non_null(strstr(err, path));
		assert_int_equal(predict(q, KERNEL_SGEMM, 3e5).source, COST_PRIOR);

		save_ok(p, dir);
		doc = load_file(dir);
		assert_non_null(find_model(doc, "sgemm", "cpu:a"));
		json_decref(doc);
		load_ok(q, dir);
		assert_true(predict(q, KERNEL_SGEMM, 3e5).ns == 7777);
		profiler_destroy(q);
	}
	profiler_destroy(p);
	rm_dir(dir);
	free(dir);
}

static void test_unwritable_dir(void **state)
{
	struct profiler *p = prof_new("cpu:a");
	char err[256] = "";

	(void)state;
	learn(p, KERNEL_SGEMM, 3e5, 7777, 1);
	assert_int_equal(store_save(p, "/proc/no-such-dir/tandem", err, sizeof(err)), -TDM_ESYS);
	assert_true(strlen(err) > 0);
	assert_int_equal(store_save(p, "", err, sizeof(err)), -TDM_EINVAL);
	profiler_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path),
		cmocka_unit_test(test_missing_file_is_not_an_error),
		cmocka_unit_test(test_save_then_load),
		cmocka_unit_test(test_two_profilers_one_file),
		cmocka_unit_test(test_concurrent_writers),
		cmocka_unit_test(test_merge_rules),
		cmocka_unit_test(test_merge_caps_footprints),
		cmocka_unit_test(test_corrupt_file),
		cmocka_unit_test(test_unwritable_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
