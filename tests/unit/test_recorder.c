/* Unit tests for the end of a `tandemctl trace` recording (daemon/recorder.c)
 * when memory runs out: recorder_stop answers -TDM_ENOMEM with an error
 * document, writes nothing and closes the files, instead of reading what it
 * could not allocate.
 *
 * malloc is interposed here (glibc's allocator underneath) so that the n-th
 * call from now fails. Under AddressSanitizer or ThreadSanitizer, whose
 * allocators this would bypass, the failure cases are skipped. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "daemon/recorder.h"
#include "daemon/session.h"
#include "tandem.h"
#include "tests/harness/fail_alloc.h"
#include "workload/workload.h"

/* One finished graph as a worker hands it over: one noop task, or two
 * (the second after the first, skipped: its router sent it no token). */
static void record_graph(struct recorder *r, bool two)
{
	struct session *s = calloc(1, sizeof(*s));
	struct dgraph *dg = calloc(1, sizeof(*dg));
	struct engine_task *t = calloc(2, sizeof(*t));
	uint32_t succ_off[3] = { 0, two, two }, succ[1] = { 1 };

	assert_non_null(s);
	assert_non_null(dg);
	assert_non_null(t);
	s->id = 7;
	for (int i = 0; i < 2; i++) {
		t[i].graph = &dg->g;
		t[i].index = (uint32_t)i;
		t[i].kernel = kernel_by_id(KERNEL_NOOP);
		assert_non_null(t[i].kernel);
	}
	t[0].start_ns = 2000;
	t[0].end_ns = 3000;
	t[1].start_ns = t[1].end_ns = 3000;
	t[1].flags = TASK_SKIPPED;
	dg->s = s;
	dg->g.ntasks = two ? 2 : 1;
	dg->g.tasks = t;
	dg->g.succ_off = succ_off;
	dg->g.succ = succ;
	dg->g.submit_ns = 1000;
	recorder_graph_done(r, dg);
	free(t);
	free(dg);
	free(s);
}

static int temp_fd(void)
{
	char name[] = "/tmp/tdm-recorder-XXXXXX";
	int fd = mkstemp(name);

	assert_true(fd >= 0);
	unlink(name);
	return fd;
}

static off_t size_of(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_size;
}

struct outcome {
	int rc;
	char summary[512];
	off_t trace_bytes, chrome_bytes;
	bool failed_one; /* the malloc meant to fail was reached */
};

/* A recording of one graph, stopped with the fail_at-th malloc of
 * recorder_stop failing (0: none). */
static struct outcome stop_recording(int fail_at, bool chrome)
{
	static const char *const devices[] = { "cpu0" };
	const struct recorder_env env = { "test-machine", "eager", devices, 1 };
	struct outcome o = { 0 };
	struct recorder r;
	int trace = temp_fd(), chrome_fd = chrome ? temp_fd() : -1;
	int trace_view = dup(trace), chrome_view = chrome ? dup(chrome_fd) : -1;
	char *summary = NULL;

	assert_true(trace_view >= 0);
	recorder_init(&r);
	assert_int_equal(recorder_start(&r, &r, trace, chrome_fd), 0);
	record_graph(&r, false);
	malloc_fail_in = fail_at;
	o.rc = recorder_stop(&r, &env, &summary); /* takes trace and chrome_fd */
	o.failed_one = fail_at > 0 && malloc_fail_in == 0;
	malloc_fail_in = 0;
	snprintf(o.summary, sizeof(o.summary), "%s", summary ? summary : "(null)");
	free(summary);
	o.trace_bytes = size_of(trace_view);
	o.chrome_bytes = chrome ? size_of(chrome_view) : 0;
	close(trace_view);
	if (chrome)
		close(chrome_view);
	recorder_fini(&r);
	return o;
}

/* Without a failure the recording is written: the cases below start from
 * a recording that has a graph to write. */
static void test_stop_writes(void **state)
{
	struct outcome o;

	(void)state;
	o = stop_recording(0, true);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.summary, "\"graphs\":1"));
	assert_non_null(strstr(o.summary, "\"tasks\":1"));
	assert_true(o.trace_bytes > 0);
	assert_true(o.chrome_bytes > 0);
}

/* The graphs' order array cannot be allocated (recorder_stop's first
 * malloc): out of memory, nothing written. It used to read order[0]. */
static void test_stop_order_malloc_fails(void **state)
{
	struct outcome o;

	(void)state;
	SKIP_UNLESS_CAN_FAIL_ALLOC();
	o = stop_recording(1, false);
	assert_true(o.failed_one);
	assert_int_equal(o.rc, -TDM_ENOMEM);
	assert_non_null(strstr(o.summary, "\"error\""));
	assert_non_null(strstr(o.summary, "out of memory"));
	assert_int_equal(o.trace_bytes, 0);

	o = stop_recording(1, true);
	assert_true(o.failed_one);
	assert_int_equal(o.rc, -TDM_ENOMEM);
	assert_int_equal(o.trace_bytes, 0);
	assert_int_equal(o.chrome_bytes, 0);
}

/* The Chrome trace's spans cannot be allocated (the second malloc): out of
 * memory, neither file written. */
static void test_stop_spans_malloc_fails(void **state)
{
	struct outcome o;

	(void)state;
	SKIP_UNLESS_CAN_FAIL_ALLOC();
	o = stop_recording(2, true);
	assert_true(o.failed_one);
	assert_int_equal(o.rc, -TDM_ENOMEM);
	assert_non_null(strstr(o.summary, "\"error\""));
	assert_int_equal(o.trace_bytes, 0);
	assert_int_equal(o.chrome_bytes, 0);
}

/* A task that completed unrun (guarded, no token routed to it) is written
 * "skipped", so that a replay does not run it; the others are not. */
static void test_skipped_recorded(void **state)
{
	static const char *const devices[] = { "cpu0" };
	const struct recorder_env env = { "test-machine", "eager", devices, 1 };
	struct recorder r;
	int trace = temp_fd(), view = dup(trace);
	char *summary = NULL, text[4096], err[WL_ERR_MAX] = "";
	struct workload w;

	(void)state;
	assert_true(view >= 0);
	recorder_init(&r);
	assert_int_equal(recorder_start(&r, &r, trace, -1), 0);
	record_graph(&r, true);
	assert_int_equal(recorder_stop(&r, &env, &summary), 0); /* takes trace */
	free(summary);
	recorder_fini(&r);
	ssize_t len = pread(view, text, sizeof(text) - 1, 0);
	close(view);
	assert_true(len > 0 && len < (ssize_t)sizeof(text) - 1);
	text[len] = 0;
	assert_int_equal(wl_trace_parse(text, (size_t)len, "rec", &w, err, sizeof(err)), 0);
	assert_int_equal(w.ntasks, 2);
	assert_false(w.tasks[0].skipped);
	assert_true(w.tasks[1].skipped);
	wl_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stop_writes),
		cmocka_unit_test(test_stop_order_malloc_fails),
		cmocka_unit_test(test_stop_spans_malloc_fails),
		cmocka_unit_test(test_skipped_recorded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
