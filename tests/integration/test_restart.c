/* The daemon killed (SIGKILL) with clients connected and blocked on it,
 * then started again (issue 17 item 8): every client learns within 1 s,
 * from the call it is blocked in, that the daemon was lost
 * (-TDM_EDAEMON), reconnects with backoff (tdm_reconnect) once the new
 * daemon is up on the same path, over the stale socket file the old one
 * left, and runs a graph with the right results. Prints
 *
 *   BENCH restart_detect_ms <slowest client> ms clients=10
 *   BENCH restart_reconnect_ms <slowest client> ms clients=10 ...
 *
 * the first from the kill to the blocked call's return, the second from the
 * new daemon's READY to the client's first graph done on it. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

#define MS (1000000ll)
#define NCLIENTS 10
#define DETECT_LIMIT_MS 1000
#define DOWN_MS 300 /* how long no daemon answers: clients back off meanwhile */
#define N 4096
#define LONG_TASKS 120 /* of 0.5 s each */

/* One CPU worker and no OpenCL: the clients' long graphs queue up rather
 * than take every core, and the daemon starts fast. */
static const char *const config = "[cpu]\ncores = [0]\n[opencl]\nenabled = false\n"
                                  "[profiler]\ncalibrate = false\npersist_models = false\n";

static const struct tdm_backoff backoff = { .initial_ms = 10, .max_ms = 200, .total_ms = 20000 };

static struct tdmt_daemon daemon_;

static int test_teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&daemon_, 0);
}

/* What a client tells the test, one record per stage (a pipe write of this
 * size is atomic). */
enum stage { ST_READY, ST_LOST, ST_BACK };
struct note {
	int32_t client, stage, rc;
	int32_t wrong; /* ST_BACK: elements with a wrong result */
	uint64_t at_ns; /* CLOCK_MONOTONIC, as the test's */
};

static void say(int fd, int client, enum stage st, int rc, int wrong)
{
	struct note n = { client, st, rc, wrong, tdmt_now_ns() };
	if (write(fd, &n, sizeof(n)) != sizeof(n))
		_exit(90);
}

/* y = 0, x = v, y += 2x: every y[i] must be 2v. */
static int run_graph(tdm_client *c, float v, int *wrong)
{
	struct tdmt_kernels k;
	tdm_buffer hx, hy;
	float *x, *y;
	int rc;
	if ((rc = tdmt_lookup_kernels(c, &k)) ||
	    (rc = tdm_buffer_alloc(c, N * sizeof(float), 0, &hx, (void **)&x)) ||
	    (rc = tdm_buffer_alloc(c, N * sizeof(float), 0, &hy, (void **)&y)))
		return rc;
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return -TDM_ENOMEM;
	if (!(rc = tdmt_add_fill(g, &k, hx, 0, 0, v, NULL)) &&
	    !(rc = tdmt_add_axpy(g, &k, hx, hy, 2.0f, NULL)) && !(rc = tdm_graph_submit(g)))
		rc = tdm_wait(g, 30000 * MS);
	tdm_graph_free(g);
	*wrong = 0;
	for (int i = 0; rc == 0 && i < N; i++)
		*wrong += y[i] != 2.0f * v;
	tdm_buffer_free(c, hx);
	tdm_buffer_free(c, hy);
	return rc;
}

/* Connects, runs a graph, then blocks in tdm_wait on a graph that takes
 * far longer than the test (a chain of 0.5 s spins, under the default
 * max_task_ms); half the clients spin
 * on the completion ring before they sleep on the doorbell, half do not,
 * and half wait without a timeout. */
static void client_main(const char *sock, int idx, int fd)
{
	struct tdm_connect_opts opts = { .socket_path = sock, .spin_us = idx % 2 ? 50 : 0 };
	struct tdmt_kernels k;
	tdm_client *c;
	int wrong = 0;
	int rc = tdm_connect(&opts, &c);
	if (rc == 0)
		rc = run_graph(c, 1.0f, &wrong);
	if (rc == 0 && wrong)
		rc = -1000;
	tdm_graph *g = rc == 0 ? tdm_graph_new(c) : NULL;
	if (rc == 0 && (rc = tdmt_lookup_kernels(c, &k)) == 0) {
		for (int i = 0; i < LONG_TASKS && rc == 0; i++)
			rc = tdmt_add_spin(g, &k, 500000, NULL);
		for (uint32_t i = 1; i < LONG_TASKS && rc == 0; i++)
			rc = tdm_graph_add_edge(g, i - 1, i);
		if (rc == 0)
			rc = tdm_graph_submit(g);
	}
	say(fd, idx, ST_READY, rc, 0);
	if (rc)
		_exit(1);
	rc = tdm_wait(g, idx % 4 < 2 ? -1 : 60000 * MS);
	say(fd, idx, ST_LOST, rc, 0);
	tdm_graph_free(g);
	/* The lost connection keeps saying so. */
	tdm_graph *again = tdm_graph_new(c);
	if (!again || tdmt_add_noop(again, &k, NULL) || tdm_graph_submit(again) != -TDM_EDAEMON)
		_exit(2);
	tdm_graph_free(again);
	rc = tdm_reconnect(&c, &backoff);
	if (rc == 0)
		rc = run_graph(c, 3.0f, &wrong);
	say(fd, idx, ST_BACK, rc, wrong);
	tdm_disconnect(c);
	_exit(0);
}

/* Reads one note, waiting up to timeout_ms; 0 or -1. */
static int read_note(int fd, struct note *n, int timeout_ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	if (poll(&p, 1, timeout_ms) <= 0)
		return -1;
	return read(fd, n, sizeof(*n)) == sizeof(*n) ? 0 : -1;
}

static void test_restart_with_clients(void **state)
{
	(void)state;
	int pfd[2];
	pid_t kids[NCLIENTS];
	struct note n;

	assert_int_equal(tdmt_daemon_start(&daemon_, config), 0);
	assert_int_equal(pipe(pfd), 0);
	for (int i = 0; i < NCLIENTS; i++) {
		pid_t parent = getpid();
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
			close(pfd[0]);
			client_main(daemon_.sock, i, pfd[1]);
		}
	}
	close(pfd[1]);
	for (int i = 0; i < NCLIENTS; i++) {
		assert_int_equal(read_note(pfd[0], &n, 30000), 0);
		if (n.stage != ST_READY)
			fail_msg("client %d done waiting before the kill: %s", n.client,
			         tdm_strerror(n.rc));
		if (n.rc)
			fail_msg("client %d: %s", n.client, tdm_strerror(n.rc));
	}
	/* Each one's long graph is in the daemon, and each one is in tdm_wait
	 * by now (it went there right after its note). */
	for (int i = 0; i < NCLIENTS; i++)
		assert_int_equal(
		        tdmt_wait_client_field(daemon_.sock, kids[i], "graphs_in_flight", 1, 10000),
		        0);
	tdmt_sleep_ms(100);

	uint64_t t_kill = tdmt_now_ns();
	assert_int_equal(kill(daemon_.pid, SIGKILL), 0);
	assert_int_equal(tdmt_wait_child(daemon_.pid, 10000), 128 + SIGKILL);
	daemon_.pid = 0;
	uint64_t detect_max = 0;
	for (int i = 0; i < NCLIENTS; i++) {
		assert_int_equal(read_note(pfd[0], &n, 10000), 0);
		assert_int_equal(n.stage, ST_LOST);
		if (n.rc != -TDM_EDAEMON)
			fail_msg("client %d: tdm_wait gave %d (%s), not daemon lost", n.client,
			         n.rc, tdm_strerror(n.rc));
		if (n.at_ns - t_kill > detect_max)
			detect_max = n.at_ns - t_kill;
	}
	printf("BENCH restart_detect_ms %.1f ms clients=%d\n", (double)detect_max / 1e6, NCLIENTS);

	/* The dead daemon's socket file is still there; no one answers on it
	 * while the clients back off. */
	struct stat st;
	assert_int_equal(lstat(daemon_.sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	tdmt_sleep_ms(DOWN_MS);
	uint64_t t_launch = tdmt_now_ns();
	assert_int_equal(tdmt_daemon_launch(&daemon_, daemon_.sock, 30000), 0);
	uint64_t t_ready = tdmt_now_ns();

	uint64_t back_max = 0;
	for (int i = 0; i < NCLIENTS; i++) {
		assert_int_equal(read_note(pfd[0], &n, 30000), 0);
		assert_int_equal(n.stage, ST_BACK);
		if (n.rc || n.wrong)
			fail_msg("client %d after the restart: %s, %d wrong", n.client,
			         tdm_strerror(n.rc), n.wrong);
		uint64_t dt = n.at_ns > t_ready ? n.at_ns - t_ready : 0;
		if (dt > back_max)
			back_max = dt;
	}
	close(pfd[0]);
	printf("BENCH restart_reconnect_ms %.1f ms clients=%d daemon_start_ms=%.1f down_ms=%d "
	       "backoff_max_ms=%u\n",
	       (double)back_max / 1e6, NCLIENTS, (double)(t_ready - t_launch) / 1e6, DOWN_MS,
	       backoff.max_ms);
	for (int i = 0; i < NCLIENTS; i++)
		assert_int_equal(tdmt_wait_child(kids[i], 10000), 0);
	if (detect_max > DETECT_LIMIT_MS * (uint64_t)MS)
		fail_msg("a client learnt of the lost daemon after %.0f ms",
		         (double)detect_max / 1e6);
	/* The new daemon is left with nothing of theirs. */
	const char *which = NULL;
	int64_t val = 0;
	if (tdmt_wait_counters_zero(daemon_.sock, tdmt_baseline_counters, 10000, &which, &val))
		fail_msg("counter %s stays at %lld", which, (long long)val);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	tdmt_test_ok();
}

/* A client blocked where no completion can come: in a submit waiting for
 * room in a full submission ring, or in a request waiting for its reply,
 * of a daemon that is stopped (SIGSTOP) and then killed. */
enum blocked_in { IN_SUBMIT, IN_REQUEST };

static void blocked_main(const char *sock, enum blocked_in where, int ready_fd, int out_fd)
{
	struct tdmt_kernels k;
	tdm_client *c;
	if (tdmt_connect(sock, &c) || tdmt_lookup_kernels(c, &k))
		_exit(1);
	tdm_graph *g = tdm_graph_new(c);
	for (int i = 0; g && i < 1000; i++) /* far more than the 64 entries of the ring */
		if (tdmt_add_noop(g, &k, NULL))
			_exit(1);
	char one = 1;
	if (!g || write(ready_fd, &one, 1) != 1)
		_exit(1);
	/* The test stops the daemon now, and tells us by closing ready_fd. */
	struct pollfd p = { ready_fd, POLLIN, 0 };
	poll(&p, 1, 10000);
	int rc;
	if (where == IN_SUBMIT) {
		rc = tdm_graph_submit(g);
	} else {
		tdm_buffer b;
		void *ptr;
		rc = tdm_buffer_alloc(c, 4096, 0, &b, &ptr);
	}
	struct note n = { (int32_t)where, ST_LOST, rc, 0, tdmt_now_ns() };
	if (write(out_fd, &n, sizeof(n)) != sizeof(n))
		_exit(2);
	_exit(0);
}

static void test_blocked_calls_lost(void **state)
{
	(void)state;
	int ready[2][2], out[2];
	pid_t kids[2];
	assert_int_equal(tdmt_daemon_start(&daemon_,
	                                   "[rings]\nsq_entries = 64\n[cpu]\ncores = [0]\n"
	                                   "[opencl]\nenabled = false\n[profiler]\n"
	                                   "calibrate = false\npersist_models = false\n"),
	                 0);
	assert_int_equal(pipe(out), 0);
	for (int w = 0; w < 2; w++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, ready[w]), 0);
		kids[w] = fork();
		assert_true(kids[w] >= 0);
		if (kids[w] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(out[0]);
			close(ready[w][0]);
			blocked_main(daemon_.sock, (enum blocked_in)w, ready[w][1], out[1]);
		}
		close(ready[w][1]);
	}
	close(out[1]);
	for (int w = 0; w < 2; w++) {
		char b;
		assert_int_equal(read(ready[w][0], &b, 1), 1);
	}
	assert_int_equal(kill(daemon_.pid, SIGSTOP), 0);
	int wst;
	/* Returns once every thread of the daemon has stopped. */
	assert_int_equal(waitpid(daemon_.pid, &wst, WUNTRACED), daemon_.pid);
	assert_true(WIFSTOPPED(wst));
	for (int w = 0; w < 2; w++)
		close(ready[w][0]); /* go */
	/* Both are blocked: nothing can answer them. */
	struct pollfd p = { out[0], POLLIN, 0 };
	assert_int_equal(poll(&p, 1, 500), 0);
	uint64_t t_kill = tdmt_now_ns();
	assert_int_equal(kill(daemon_.pid, SIGKILL), 0);
	assert_int_equal(tdmt_wait_child(daemon_.pid, 10000), 128 + SIGKILL);
	daemon_.pid = 0;
	static const char *const what[] = { "a submit waiting for ring room",
		                            "a request waiting for its reply" };
	for (int i = 0; i < 2; i++) {
		struct note n;
		assert_int_equal(read_note(out[0], &n, 10000), 0);
		printf("# %s: %s after %.1f ms\n", what[n.client], tdm_strerror(n.rc),
		       (double)(n.at_ns - t_kill) / 1e6);
		if (n.rc != -TDM_EDAEMON)
			fail_msg("%s ended with %s, not daemon lost", what[n.client],
			         tdm_strerror(n.rc));
		if (n.at_ns - t_kill > DETECT_LIMIT_MS * (uint64_t)MS)
			fail_msg("%s learnt of the lost daemon after %.0f ms", what[n.client],
			         (double)(n.at_ns - t_kill) / 1e6);
	}
	close(out[0]);
	for (int w = 0; w < 2; w++)
		assert_int_equal(tdmt_wait_child(kids[w], 10000), 0);
	tdmt_test_ok();
}

/* With no daemon at all, the backoff gives up after total_ms with the
 * error of the last try; an error no wait can mend comes at once. */
static void test_backoff_gives_up(void **state)
{
	(void)state;
	assert_int_equal(tdmt_daemon_prepare(&daemon_, config), 0);
	tdm_client *c = NULL;
	const struct tdm_backoff b = { .initial_ms = 5, .max_ms = 40, .total_ms = 300 };
	uint64_t t0 = tdmt_now_ns();
	int rc = tdm_connect_backoff(&(struct tdm_connect_opts){ .socket_path = daemon_.sock }, &b,
	                             &c);
	double ms = (double)(tdmt_now_ns() - t0) / 1e6;
	assert_int_equal(rc, -TDM_ECONNECT);
	assert_null(c);
	if (ms < 300 || ms > 3000)
		fail_msg("gave up after %.0f ms, not 300", ms);
	char longpath[200];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	t0 = tdmt_now_ns();
	rc = tdm_connect_backoff(&(struct tdm_connect_opts){ .socket_path = longpath }, &b, &c);
	assert_int_equal(rc, -TDM_EINVAL);
	assert_true(tdmt_now_ns() - t0 < 100 * (uint64_t)MS);
	tdmt_test_ok();
}

/* A daemon that ends cleanly (SIGTERM) is lost too, once it is gone: the
 * client blocked on it is told so. */
static void test_clean_stop_is_lost(void **state)
{
	(void)state;
	struct tdmt_kernels k;
	tdm_client *c;
	assert_int_equal(tdmt_daemon_start(&daemon_, config), 0);
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdmt_lookup_kernels(c, &k), 0);
	tdm_graph *g = tdm_graph_new(c);
	assert_non_null(g);
	assert_int_equal(tdmt_add_noop(g, &k, NULL), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 30000 * MS), 0);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	/* The daemon has exited: the next wait and request say so, and every
	 * call after them. */
	assert_int_equal(tdm_graph_submit(g), 0); /* into the ring, unread */
	assert_int_equal(tdm_wait(g, 30000 * MS), -TDM_EDAEMON);
	tdm_kernel id;
	assert_int_equal(tdm_kernel_lookup(c, "no_such_kernel", &id), -TDM_EDAEMON);
	tdm_graph_free(g);
	g = tdm_graph_new(c);
	assert_non_null(g);
	assert_int_equal(tdmt_add_noop(g, &k, NULL), 0);
	assert_int_equal(tdm_graph_submit(g), -TDM_EDAEMON);
	tdm_graph_free(g);
	tdm_disconnect(c);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tdmt_test_setup, test_teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		T(test_restart_with_clients),
		T(test_blocked_calls_lost),
		T(test_backoff_gives_up),
		T(test_clean_stop_is_lost),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("restart", tests, NULL, NULL);
}
