/* Unit tests for profiler/store.c: the model store on disk. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "profiler/store.h"
#include "tandem.h"

/* How long the tests' saves may wait for the lock: much longer than any
 * other writer in these tests holds it. */
#define WAIT_MS 60000

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
	int rc = store_save(p, dir, WAIT_MS, NULL, err, sizeof(err));

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
		if (store_save(p, dir, WAIT_MS, NULL, err, sizeof(err)) != 0) {
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
	assert_int_equal(store_save(p, "/proc/no-such-dir/tandem", WAIT_MS, NULL, err, sizeof(err)),
	                 -TDM_ESYS);
	assert_true(strlen(err) > 0);
	assert_int_equal(store_save(p, "", WAIT_MS, NULL, err, sizeof(err)), -TDM_EINVAL);
	profiler_destroy(p);
}

/* ---- a store no other process can stall or redirect ---------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* fn(arg) in a child process: its exit code, or -1 when it still ran after
 * timeout_ms (it is then killed), so that code that hangs fails the test
 * instead of hanging it. The child must not use cmocka. */
static int in_child(int (*fn)(void *), void *arg, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	pid_t pid;
	int st = 0;

	fflush(NULL); /* or the child would print the parent's buffered output again */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		st = fn(arg);
		fflush(NULL);
		_exit(st);
	}
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return -1;
		}
		usleep(5000);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct save_job {
	const struct profiler *p;
	const char *dir;
	unsigned wait_ms;
	atomic_bool cancel; /* set: the save is canceled, not timed out */
};

/* Exit code 0: the save gave up with -TDM_ETIMEDOUT (-TDM_ECANCELED when
 * canceled), a message, and soon. */
static int save_gives_up(void *arg)
{
	struct save_job *j = arg;
	char err[512] = "";
	uint64_t t0 = now_ms();
	int rc = store_save(j->p, j->dir, j->wait_ms, &j->cancel, err, sizeof(err));
	uint64_t took = now_ms() - t0;
	int want = atomic_load(&j->cancel) ? -TDM_ECANCELED : -TDM_ETIMEDOUT;

	printf("store_save with the lock held: %d after %llu ms (%s)\n", rc,
	       (unsigned long long)took, err);
	return rc == want && strstr(err, ".lock") && took < 5000 ? 0 : 1;
}

/* Another descriptor holds the store's lock and never lets go: a save
 * waits its bound, not forever, and works again once the lock is free. */
static void test_held_lock_bounds_save(void **state)
{
	char *dir = tmp_dir(), path[4096], lock[4200];
	struct profiler *p = prof_new("cpu:a");
	struct save_job job = { .p = p, .dir = dir, .wait_ms = 300 };
	int fd;

	(void)state;
	learn(p, KERNEL_SGEMM, 1e6, 50000, 3);
	save_ok(p, dir);
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	fd = open(lock, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	/* The child's own open of the lock file conflicts with this one. */
	assert_int_equal(in_child(save_gives_up, &job, 10000), 0);
	/* Canceled (the daemon stopping): at once, however long it may wait. */
	job.wait_ms = WAIT_MS;
	atomic_store(&job.cancel, true);
	assert_int_equal(in_child(save_gives_up, &job, 10000), 0);
	close(fd);
	learn(p, KERNEL_SGEMM, 2e6, 90000, 1);
	save_ok(p, dir);
	json_t *doc = load_file(dir);
	assert_non_null(find_footprint(find_model(doc, "sgemm", "cpu:a"), 2e6));
	json_decref(doc);
	profiler_destroy(p);
	rm_dir(dir);
	free(dir);
}

struct load_job {
	const char *dir, *path;
};

/* Exit code 0: store_load failed with -TDM_EINVAL naming the path. */
static int load_refuses(void *arg)
{
	const struct load_job *j = arg;
	struct profiler *q = prof_new("cpu:a");
	char err[512] = "";
	int rc = store_load(q, j->dir, err, sizeof(err));

	printf("store_load: %d (%s)\n", rc, err);
	profiler_destroy(q);
	return rc == -TDM_EINVAL && strstr(err, j->path) ? 0 : 1;
}

/* A FIFO at the models path: start-up's load says so at once instead of
 * waiting for a writer forever, and a save replaces it with the file. */
static void test_fifo_at_models_path(void **state)
{
	char *dir = tmp_dir(), path[4096];
	struct profiler *p = prof_new("cpu:a");
	struct load_job job = { .dir = dir, .path = path };
	struct stat st;

	(void)state;
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(in_child(load_refuses, &job, 5000), 0);
	learn(p, KERNEL_SGEMM, 1e6, 50000, 3);
	save_ok(p, dir);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	profiler_destroy(p);
	rm_dir(dir);
	free(dir);
}

static void read_text(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	fclose(f);
}

/* Symbolic links in the state directory, or as the directory: never
 * followed. */
static void test_symlinks_refused(void **state)
{
	char *dir = tmp_dir(), *other = tmp_dir(), path[4096], target[4096], lock[4200];
	char before[4096], after[4096], err[512], link_dir[4200], victim[4200];
	struct profiler *p = prof_new("cpu:a"), *q = prof_new("cpu:a");
	struct stat st;

	(void)state;
	learn(p, KERNEL_SGEMM, 1e6, 50000, 3);

	/* The models file is a link to someone else's file: not loaded, and a
	 * save replaces the link, leaving that file alone. */
	save_ok(p, other);
	assert_int_equal(store_path(other, target, sizeof(target)), 0);
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(store_load(q, dir, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(predict(q, KERNEL_SGEMM, 1e6).source, COST_PRIOR);
	read_text(target, before, sizeof(before));
	learn(p, KERNEL_SGEMM, 2e6, 90000, 2);
	save_ok(p, dir);
	read_text(target, after, sizeof(after));
	assert_string_equal(before, after);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));

	/* The lock file is a link to a file that does not exist yet: not
	 * created through it, and nothing saved. */
	snprintf(lock, sizeof(lock), "%s.lock", path);
	snprintf(victim, sizeof(victim), "%s/victim", other);
	assert_int_equal(unlink(lock), 0);
	assert_int_equal(symlink(victim, lock), 0);
	assert_int_equal(store_save(p, dir, WAIT_MS, NULL, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(lstat(victim, &st), -1);

	/* The directory itself is a link (to a directory of ours): refused
	 * for saving and loading. */
	snprintf(link_dir, sizeof(link_dir), "%s/link", dir);
	assert_int_equal(symlink(other, link_dir), 0);
	int files = count_files(other, "");
	assert_int_equal(store_save(p, link_dir, WAIT_MS, NULL, err, sizeof(err)), -TDM_EPERM);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(count_files(other, ""), files);
	assert_int_equal(store_load(q, link_dir, err, sizeof(err)), -TDM_EPERM);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(predict(q, KERNEL_SGEMM, 1e6).source, COST_PRIOR);

	profiler_destroy(q);
	profiler_destroy(p);
	rm_dir(dir);
	rm_dir(other);
	free(other);
	free(dir);
}

static unsigned mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

/* What a save creates is private to the daemon's uid, whatever the umask;
 * an existing directory of ours is made private; another uid's is
 * refused. */
static void test_private_modes(void **state)
{
	char *root = tmp_dir(), parent[4096], dir[4200], path[4300], lock[4400], err[512];
	struct profiler *p = prof_new("cpu:a"), *q = prof_new("cpu:a");
	mode_t old_umask = umask(022);

	(void)state;
	learn(p, KERNEL_SGEMM, 1e6, 50000, 3);
	snprintf(parent, sizeof(parent), "%s/state", root);
	snprintf(dir, sizeof(dir), "%s/tandem", parent);
	save_ok(p, dir);
	assert_int_equal(store_path(dir, path, sizeof(path)), 0);
	snprintf(lock, sizeof(lock), "%s.lock", path);
	assert_int_equal(mode_of(parent), 0700);
	assert_int_equal(mode_of(dir), 0700);
	assert_int_equal(mode_of(path), 0600);
	assert_int_equal(mode_of(lock), 0600);

	/* Made by an older version, or by hand: tightened at the next save. */
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(chmod(lock, 0644), 0);
	save_ok(p, dir);
	assert_int_equal(mode_of(dir), 0700);
	assert_int_equal(mode_of(lock), 0600);
	assert_int_equal(mode_of(path), 0600);

	if (geteuid() == 0) {
		/* Another uid's directory (only root can make one here). */
		assert_int_equal(chown(dir, 65534, 65534), 0);
		assert_int_equal(store_save(p, dir, WAIT_MS, NULL, err, sizeof(err)), -TDM_EPERM);
		assert_non_null(strstr(err, "uid 65534"));
		assert_int_equal(store_load(q, dir, err, sizeof(err)), -TDM_EPERM);
		assert_int_equal(predict(q, KERNEL_SGEMM, 1e6).source, COST_PRIOR);
		assert_int_equal(chown(dir, 0, 0), 0);
	} else {
		printf("not root: the other-uid case is not run\n");
	}
	umask(old_umask);
	profiler_destroy(q);
	profiler_destroy(p);
	rm_dir(root);
	free(root);
}

/* ---- the merge at scale ----------------------------------------------------------- */

enum { BIG_FPS = 12000, BIG_OVERLAP = 6000, NMODELS = 3000, NLINKS = 1500 };

/* The sides' sample counts of footprint i (flops = i) of the big model,
 * 0 where that side lacks it: all distinct, so the 64 kept are one set. */
static json_int_t theirs_n(int i)
{
	return i < BIG_FPS ? 2 * (json_int_t)i + 1 : 0;
}

static json_int_t ours_n(int i)
{
	int lo = BIG_FPS - BIG_OVERLAP;
	return i >= lo && i < lo + BIG_FPS ? 2 * (json_int_t)(lo + BIG_FPS - i) : 0;
}

static json_t *model_doc(const char *kernel, json_int_t samples)
{
	return json_pack("{s:s, s:s, s:I, s:[]}", "kernel", kernel, "device", "cpu:a", "samples",
	                 samples, "footprints");
}

/* One side: the big model, NMODELS small ones (k<first>...), NLINKS links. */
static json_t *big_side(bool ours)
{
	json_t *doc = json_pack("{s:i, s:[], s:[]}", "version", 1, "models", "links");
	json_t *models = json_object_get(doc, "models"), *big = model_doc("big", ours ? 5 : 7);
	json_t *fps = json_object_get(big, "footprints");
	int first = ours ? NMODELS / 2 : 0;
	char name[32];

	for (int i = 0; i < BIG_FPS + BIG_OVERLAP; i++) {
		json_int_t n = ours ? ours_n(i) : theirs_n(i);
		if (n)
			json_array_append_new(fps, json_pack("{s:i, s:f, s:i, s:I, s:s}", "flops",
			                                     i, "bytes", 0.0, "domain", 0, "n", n,
			                                     "side", ours ? "ours" : "theirs"));
	}
	json_array_append_new(models, big);
	for (int i = first; i < first + NMODELS; i++) {
		snprintf(name, sizeof(name), "k%d", i);
		json_t *m = model_doc(name, ours ? i : 2 * NMODELS - i);
		json_array_append_new(json_object_get(m, "footprints"),
		                      json_pack("{s:i, s:i, s:i, s:i}", "flops", i, "bytes", 1,
		                                "domain", 2, "n", 1));
		json_array_append_new(models, m);
	}
	for (int i = 0; i < NLINKS; i++) {
		int k = ours ? NLINKS - 1 - i : i; /* ours in the other order */
		json_array_append_new(json_object_get(doc, "links"),
		                      json_pack("{s:i, s:i, s:i, s:s}", "src", k / 64, "dst",
		                                k % 64, "copies", ours ? k % 7 : k % 5, "side",
		                                ours ? "ours" : "theirs"));
	}
	return doc;
}

static int by_desc(const void *a, const void *b)
{
	json_int_t x = *(const json_int_t *)a, y = *(const json_int_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* 12,000 footprints in one model and 3,000 models a side (half of each in
 * common), 1,500 links: the merge is quick, and what it keeps follows the
 * rules (compared with counts worked out here). */
static void test_merge_at_scale(void **state)
{
	json_t *ours = big_side(true), *theirs = big_side(false), *m, *big, *models, *links;
	enum { ALL = BIG_FPS + BIG_OVERLAP };
	json_int_t *best = malloc(ALL * sizeof(*best)), *sorted = malloc(ALL * sizeof(*sorted));
	uint64_t t0 = now_ms(), took;
	size_t i;
	json_t *e;

	(void)state;
	assert_non_null(best);
	assert_non_null(sorted);
	m = store_merge(ours, theirs);
	took = now_ms() - t0;
	printf("merge of %d + %d footprints, %d + %d models, %d + %d links: %llu ms\n", BIG_FPS,
	       BIG_FPS, NMODELS + 1, NMODELS + 1, NLINKS, NLINKS, (unsigned long long)took);
	assert_non_null(m);

	/* The big model: the 64 footprints with the most samples over both
	 * sides, each from the side with more. */
	for (int k = 0; k < ALL; k++)
		sorted[k] = best[k] = ours_n(k) > theirs_n(k) ? ours_n(k) : theirs_n(k);
	qsort(sorted, ALL, sizeof(*sorted), by_desc);
	big = find_model(m, "big", "cpu:a");
	assert_non_null(big);
	assert_int_equal(json_integer_value(json_object_get(big, "samples")), 7); /* theirs */
	assert_int_equal(json_array_size(json_object_get(big, "footprints")), 64);
	json_array_foreach(json_object_get(big, "footprints"), i, e)
	{
		int k = (int)json_number_value(json_object_get(e, "flops"));
		json_int_t n = json_integer_value(json_object_get(e, "n"));

		assert_true(k >= 0 && k < ALL);
		assert_int_equal(n, best[k]);
		assert_true(n >= sorted[63]);
		assert_string_equal(json_string_value(json_object_get(e, "side")),
		                    ours_n(k) > theirs_n(k) ? "ours" : "theirs");
	}

	/* Models: theirs in their order, then ours not seen yet, up to the cap
	 * of 4096; each with the figures of the side with more samples. */
	models = json_object_get(m, "models");
	assert_int_equal(json_array_size(models), 4096);
	assert_string_equal(json_string_value(json_object_get(json_array_get(models, 0), "kernel")),
	                    "big");
	for (int k = 0; k < 4095; k++) {
		json_t *mk = json_array_get(models, (size_t)k + 1);
		char name[32];
		json_int_t t = k < NMODELS ? 2 * NMODELS - k : -1;
		json_int_t o = k >= NMODELS / 2 ? k : -1;

		snprintf(name, sizeof(name), "k%d", k);
		assert_string_equal(json_string_value(json_object_get(mk, "kernel")), name);
		assert_int_equal(json_integer_value(json_object_get(mk, "samples")), o > t ? o : t);
		assert_int_equal(json_array_size(json_object_get(mk, "footprints")), 1);
	}

	/* Links: theirs' first 1024 (the cap), more copies winning, ours on
	 * ties. */
	links = json_object_get(m, "links");
	assert_int_equal(json_array_size(links), 1024);
	json_array_foreach(links, i, e)
	{
		json_int_t t = (json_int_t)i % 5, o = (json_int_t)i % 7;

		assert_int_equal(json_integer_value(json_object_get(e, "src")), (json_int_t)i / 64);
		assert_int_equal(json_integer_value(json_object_get(e, "dst")), (json_int_t)i % 64);
		assert_int_equal(json_integer_value(json_object_get(e, "copies")), o >= t ? o : t);
		assert_string_equal(json_string_value(json_object_get(e, "side")),
		                    o >= t ? "ours" : "theirs");
	}
	assert_true(took < 2000);
	json_decref(m);
	json_decref(theirs);
	json_decref(ours);
	free(sorted);
	free(best);
}

/* The merge rules, spelled out the slow way (every match by a scan), on
 * random documents with the awkward cases: an entry twice on one side,
 * 1 and 1.0 and -0.0 and 0, unnamed entries, equal counts. The merge must
 * give exactly the same document. */
static json_t *ref_find(json_t *arr, const json_t *e, bool (*same)(const json_t *, const json_t *))
{
	size_t i;
	json_t *o;

	json_array_foreach(arr, i, o)
	{
		if (same(e, o))
			return o;
	}
	return NULL;
}

static bool ref_same_fp(const json_t *a, const json_t *b)
{
	static const char *const k[] = { "flops", "bytes", "domain" };
	for (int i = 0; i < 3; i++)
		if (json_number_value(json_object_get(a, k[i])) !=
		    json_number_value(json_object_get(b, k[i])))
			return false;
	return true;
}

static bool ref_same_model(const json_t *a, const json_t *b)
{
	return json_equal(json_object_get(a, "kernel"), json_object_get(b, "kernel")) &&
	       json_equal(json_object_get(a, "device"), json_object_get(b, "device"));
}

static bool ref_same_link(const json_t *a, const json_t *b)
{
	return json_integer_value(json_object_get(a, "src")) ==
	               json_integer_value(json_object_get(b, "src")) &&
	       json_integer_value(json_object_get(a, "dst")) ==
	               json_integer_value(json_object_get(b, "dst"));
}

static json_int_t ref_int(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* e into arr by the rule "more of count wins, ours on ties". */
static void ref_put(json_t *arr, const json_t *e, bool (*same)(const json_t *, const json_t *),
                    const char *count, bool ours, size_t cap)
{
	json_t *o = ref_find(arr, e, same);
	size_t i;
	json_t *x;

	if (!o) {
		if (json_array_size(arr) < cap)
			json_array_append_new(arr, json_deep_copy(e));
		return;
	}
	if (ref_int(e, count) > ref_int(o, count) ||
	    (ours && ref_int(e, count) == ref_int(o, count)))
		json_array_foreach(arr, i, x) if (x == o)
		{
			json_array_set_new(arr, i, json_deep_copy(e));
			break;
		}
}

static bool ref_fp_named(const json_t *f)
{
	return json_is_number(json_object_get(f, "flops")) &&
	       json_is_number(json_object_get(f, "bytes")) &&
	       json_is_number(json_object_get(f, "domain"));
}

static json_t *ref_model(const json_t *ours, const json_t *theirs)
{
	json_t *fps = json_array(), *m, *f;
	size_t i;

	json_array_foreach(json_object_get(theirs, "footprints"), i, f) if (ref_fp_named(f))
	        ref_put(fps, f, ref_same_fp, "n", false, SIZE_MAX);
	json_array_foreach(json_object_get(ours, "footprints"), i, f) if (ref_fp_named(f))
	        ref_put(fps, f, ref_same_fp, "n", true, SIZE_MAX);
	assert_true(json_array_size(fps) <= 64); /* these documents stay under the cap */
	m = json_deep_copy(ref_int(ours, "samples") >= ref_int(theirs, "samples") ? ours : theirs);
	json_object_set_new(m, "footprints", fps);
	return m;
}

static json_t *ref_merge(const json_t *ours, const json_t *theirs)
{
	json_t *doc = json_pack("{s:i, s:[], s:[]}", "version", 1, "models", "links");
	json_t *models = json_object_get(doc, "models"), *links = json_object_get(doc, "links");
	const json_t *side[2] = { theirs, ours };

	for (int s = 0; s < 2; s++) {
		size_t i, j;
		json_t *mm, *o, *l;

		json_array_foreach(json_object_get(side[s], "models"), i, mm)
		{
			if (!json_is_string(json_object_get(mm, "kernel")) ||
			    !json_is_string(json_object_get(mm, "device")))
				continue;
			o = ref_find(models, mm, ref_same_model);
			if (!o) {
				json_array_append_new(models, ref_model(mm, mm));
				continue;
			}
			json_array_foreach(models, j, l) if (l == o)
			{
				json_array_set_new(models, j,
				                   s ? ref_model(mm, o) : ref_model(o, mm));
				break;
			}
		}
		json_array_foreach(json_object_get(side[s], "links"), i, l)
		{
			if (json_is_integer(json_object_get(l, "src")) &&
			    json_is_integer(json_object_get(l, "dst")))
				ref_put(links, l, ref_same_link, "copies", s == 1, 1024);
		}
	}
	return doc;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static json_t *rnd_number(uint64_t *s)
{
	switch (rnd(s) % 5) {
	case 0: return json_integer((json_int_t)(rnd(s) % 4));
	case 1: return json_real((double)(rnd(s) % 4));
	case 2: return json_real(-0.0);
	case 3: return json_real(0.5 * (double)(rnd(s) % 4));
	default: return json_integer(0);
	}
}

static json_t *rnd_side(uint64_t *s)
{
	static const char *const names[] = { "sgemm", "axpy", "spin", "a\u00e9b" };
	json_t *doc = json_pack("{s:i, s:[], s:[]}", "version", 1, "models", "links");
	unsigned nm = (unsigned)(rnd(s) % 7), nl = (unsigned)(rnd(s) % 9);

	for (unsigned i = 0; i < nm; i++) {
		json_t *m = json_pack("{s:s, s:s, s:I, s:I, s:[]}", "kernel", names[rnd(s) % 4],
		                      "device", rnd(s) % 2 ? "cpu:a" : "gpu:b", "samples",
		                      (json_int_t)(rnd(s) % 4), "tag", (json_int_t)rnd(s) % 1000,
		                      "footprints");
		unsigned nf = (unsigned)(rnd(s) % 12);

		if (rnd(s) % 9 == 0)
			json_object_del(m, "device"); /* unnamed: dropped */
		for (unsigned f = 0; f < nf; f++) {
			json_t *fp = json_pack("{s:o, s:o, s:o, s:I, s:I}", "flops", rnd_number(s),
			                       "bytes", rnd_number(s), "domain", rnd_number(s), "n",
			                       (json_int_t)(rnd(s) % 3), "tag",
			                       (json_int_t)rnd(s) % 1000);
			if (rnd(s) % 11 == 0)
				json_object_del(fp, "bytes");
			json_array_append_new(json_object_get(m, "footprints"), fp);
		}
		json_array_append_new(json_object_get(doc, "models"), m);
	}
	for (unsigned i = 0; i < nl; i++)
		json_array_append_new(
		        json_object_get(doc, "links"),
		        json_pack("{s:I, s:I, s:I, s:I}", "src", (json_int_t)(rnd(s) % 3), "dst",
		                  (json_int_t)(rnd(s) % 3), "copies", (json_int_t)(rnd(s) % 3),
		                  "tag", (json_int_t)rnd(s) % 1000));
	return doc;
}

static void test_merge_matches_rules(void **state)
{
	uint64_t seed = 0x2545f4914f6cdd1dull;

	(void)state;
	for (int round = 0; round < 2000; round++) {
		json_t *ours = rnd_side(&seed), *theirs = rnd_side(&seed);
		json_t *got = store_merge(ours, theirs), *want = ref_merge(ours, theirs);

		assert_non_null(got);
		if (!json_equal(got, want)) {
			char *a = json_dumps(ours, JSON_COMPACT),
			     *b = json_dumps(theirs, JSON_COMPACT);
			char *g = json_dumps(got, JSON_COMPACT),
			     *w = json_dumps(want, JSON_COMPACT);
			print_error("round %d\nours %s\ntheirs %s\ngot %s\nwant %s\n", round, a, b,
			            g, w);
			fail();
		}
		json_decref(want);
		json_decref(got);
		json_decref(theirs);
		json_decref(ours);
	}
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
		cmocka_unit_test(test_held_lock_bounds_save),
		cmocka_unit_test(test_fifo_at_models_path),
		cmocka_unit_test(test_symlinks_refused),
		cmocka_unit_test(test_private_modes),
		cmocka_unit_test(test_merge_at_scale),
		cmocka_unit_test(test_merge_matches_rules),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
