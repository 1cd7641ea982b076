/* The llm_layer example (examples/llm_layer.c) against a private tandemd: a
 * few decode steps of the mixture-of-experts layer (guarded experts
 * accumulating into y, and the serial way) and of the dense one. The
 * example checks every step against its own plain-loop reference and exits
 * non-zero on a mismatch, so its exit status is the verdict. */
#include <errno.h>
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

/* Each run takes well under a second; the whole test stays under 20 s. */
#define RUN_TIMEOUT_MS 8000

static struct tdmt_daemon d;

static int group_setup(void **state)
{
	(void)state;
	if (tdmt_daemon_start(&d, "") != 0) {
		fprintf(stderr, "tandemd did not start (status %d)\n", d.exit_status);
		tdmt_daemon_cleanup(&d);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	tdmt_daemon_cleanup(&d);
	return 0;
}

static int test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	return tdmt_after_test(&d);
}

/* Runs build/bin/llm_layer --socket SOCK --steps 3 --quiet [extra] with the
 * test's stdout and stderr; returns its exit status (-1 on timeout). */
static int run_llm_layer(const char *extra)
{
	char exe[512];
	pid_t parent = getpid();

	snprintf(exe, sizeof(exe), "%s/bin/llm_layer", tdmt_build_dir());
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Never outlive a test that crashed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		char *argv[] = { exe, "--socket", d.sock,        "--steps",
			         "3", "--quiet",  (char *)extra, NULL };
		execv(exe, argv);
		fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	return tdmt_wait_child(pid, RUN_TIMEOUT_MS);
}

static void test_moe(void **state)
{
	(void)state;
	assert_int_equal(run_llm_layer(NULL), 0);
	tdmt_test_ok();
}

/* The experts as before guards and TDM_ACC: one after another, each
 * applying the routing itself. */
static void test_moe_serial(void **state)
{
	(void)state;
	assert_int_equal(run_llm_layer("--serial-experts"), 0);
	tdmt_test_ok();
}

static void test_dense(void **state)
{
	(void)state;
	assert_int_equal(run_llm_layer("--dense"), 0);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

static const struct CMUnitTest tests[] = {
	T(test_moe),
	T(test_moe_serial),
	T(test_dense),
};

int main(void)
{
	return cmocka_run_group_tests_name("llm_layer", tests, group_setup, group_teardown) ? 1 : 0;
}
