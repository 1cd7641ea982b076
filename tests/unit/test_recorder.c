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

/* One finished graph of one noop task, as a worker hands it over. */
static void record_one_graph(struct recorder *r)
{
	struct session *s = calloc(1, sizeof(*s));
	struct dgraph *dg = calloc(1, sizeof(*dg));
	struct engine_task *t = calloc(1, sizeof(*t));
	uint32_t succ_off[2] = { 0, 0 };

	assert_non_null(s);
	assert_non_null(dg);
	assert_non_null(t);
	s->id = 7;
	t->graph = &dg->g;
	t->kernel = kernel_by_id(KERNEL_NOOP);
	assert_non_null(t->kernel);
	t->start_ns = 2000;
	t->end_ns = 3000;
	dg->s = s;
	dg->g.ntasks = 1;
	dg->g.tasks = t;
	dg->g.succ_off = succ_off;
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
	record_one_graph(&r);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stop_writes),
		cmocka_unit_test(test_stop_order_malloc_fails),
		cmocka_unit_test(test_stop_spans_malloc_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
