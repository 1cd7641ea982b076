/* tandemd as a process: --check-config, SIGHUP reloads, SIGTERM draining,
 * peer credentials, a second daemon on a busy socket, and connections that
 * stay quiet on the socket. Each test runs its own daemon. */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

#define MS (1000000ll)

static struct tdmt_daemon d1, d2;
static tdm_client *c1, *c2;

static int test_setup(void **state)
{
	(void)state;
	memset(&d1, 0, sizeof(d1));
	memset(&d2, 0, sizeof(d2));
	c1 = c2 = NULL;
	tdmt_test_begin();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	if (c1)
		tdm_disconnect(c1);
	if (c2)
		tdm_disconnect(c2);
	c1 = c2 = NULL;
	if (!tdmt_test_passed()) {
		d1.failed = d1.dir[0] != '\0';
		d2.failed = d2.dir[0] != '\0';
	}
	tdmt_daemon_cleanup(&d1);
	tdmt_daemon_cleanup(&d2);
	return 0;
}

static void start(struct tdmt_daemon *d, const char *toml)
{
	int rc = tdmt_daemon_start(d, toml);
	if (rc)
		fail_msg("tandemd did not start: %d (status %d)", rc, d->exit_status);
}

/* y = 2 x + 1 over 1024 floats, on client c: returns tdm_wait's status and
 * checks the numbers when it is 0. */
static int run_axpy(tdm_client *c, int64_t spin_us)
{
	struct tdmt_kernels k;
	tdm_buffer hx, hy;
	float *x, *y;
	int rc = tdmt_lookup_kernels(c, &k);
	if (rc)
		return rc;
	if ((rc = tdm_buffer_alloc(c, 4096, 0, &hx, (void **)&x)) ||
	    (rc = tdm_buffer_alloc(c, 4096, 0, &hy, (void **)&y)))
		return rc;
	for (int i = 0; i < 1024; i++) {
		x[i] = (float)i;
		y[i] = 1.0f;
	}
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return -TDM_ENOMEM;
	uint32_t s = 0, a;
	if (spin_us && (rc = tdmt_add_spin(g, &k, spin_us, &s)))
		return rc;
	if ((rc = tdmt_add_axpy(g, &k, hx, hy, 2.0f, &a)))
		return rc;
	if (spin_us && (rc = tdm_graph_add_edge(g, s, a))) /* the result comes last */
		return rc;
	if ((rc = tdm_graph_submit(g)) == 0)
		rc = tdm_wait(g, 30000 * MS);
	for (int i = 0; rc == 0 && i < 1024; i++)
		if (y[i] != 2.0f * (float)i + 1.0f)
			rc = 1000;
	tdm_graph_free(g);
	tdm_buffer_free(c, hx);
	tdm_buffer_free(c, hy);
	return rc;
}

/* ---- --check-config ------------------------------------------------------- */

static void check_config(const char *dir, const char *name, const char *text, int want_status,
                         const char *want_prefix)
{
	char path[160], out[4096], prefix[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	const char *args[] = { "--check-config", "--config", path, NULL };
	int st = tdmt_run_tandemd(args, out, sizeof(out), 20000);
	snprintf(prefix, sizeof(prefix), "%s%s", path, want_prefix);
	if (st != want_status || strncmp(out, prefix, strlen(prefix)) != 0)
		fail_msg("--check-config %s: status %d, output \"%s\"; want status %d and output "
		         "starting \"%s\"",
		         name, st, out, want_status, prefix);
	unlink(path);
}

static void test_check_config(void **state)
{
	(void)state;
	assert_int_equal(tdmt_daemon_prepare(&d1, ""), 0);
	const char *dir = d1.dir;
	/* value out of range: the position of the value */
	check_config(dir, "a.toml", "[daemon]\nmax_clients = 0\n", 1, ":2:15: ");
	/* unknown key, indented: the position of the key */
	check_config(dir, "b.toml", "[daemon]\nlog_level = \"info\"\n\n[limits]\n  bogus_key = 3\n",
	             1, ":5:3: ");
	/* TOML syntax error */
	check_config(dir, "c.toml", "[engine]\nspin_us = = 3\n", 1, ":2:11: ");
	/* not a power of two */
	check_config(dir, "d.toml", "[rings]\nsq_entries = 100\n", 1, ":2:14: ");
	/* an array element: the position of the element */
	check_config(dir, "e.toml", "[cpu]\ncores = [0, 1, 5000]\n", 1, ":2:16: ");
	/* a bad size string after blank lines */
	check_config(dir, "f.toml", "\n\n[limits]\nbuffer_quota_bytes = \"12 PiB\"\n", 1,
	             ":4:22: ");
	/* valid files */
	check_config(dir, "ok1.toml", "", 0, ": ok");
	check_config(dir, "ok2.toml",
	             "[daemon]\nlog_level = \"debug\"\nallowed_uids = [1000]\n[engine]\n"
	             "policy = \"ws\"\n[limits]\nbuffer_quota_bytes = \"512MiB\"\n[rings]\n"
	             "sq_entries = 64\ncq_entries = 65536\n",
	             0, ": ok");
	/* the embedded defaults, as printed, are valid */
	char defaults[16384];
	const char *pargs[] = { "--print-config", NULL };
	assert_int_equal(tdmt_run_tandemd(pargs, defaults, sizeof(defaults), 20000), 0);
	assert_non_null(strstr(defaults, "[limits]"));
	check_config(dir, "defaults.toml", defaults, 0, ": ok");
	/* a file that does not exist */
	char out[1024];
	const char *nargs[] = { "--check-config", "--config", "/nonexistent/tandemd.toml", NULL };
	assert_int_equal(tdmt_run_tandemd(nargs, out, sizeof(out), 20000), 1);
	assert_non_null(strstr(out, "/nonexistent/tandemd.toml: cannot open"));
	tdmt_test_ok();
}

/* A policy name that is well formed but not registered is an error in the
 * file like any other value out of range: it is reported at its position. */
static void test_check_config_unknown_policy(void **state)
{
	(void)state;
	assert_int_equal(tdmt_daemon_prepare(&d1, ""), 0);
	check_config(d1.dir, "p.toml",
	             "[daemon]\nlog_level = \"warn\"\n[engine]\npolicy = \"nosuch\"\n", 1,
	             ":4:10: ");
	tdmt_test_ok();
}

/* ---- SIGHUP --------------------------------------------------------------- */

static int log_count(const struct tdmt_daemon *d, const char *text)
{
	FILE *f = fopen(d->log, "re");
	char line[2048];
	int n = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

static void wait_log_count(const struct tdmt_daemon *d, const char *text, int n)
{
	uint64_t deadline = tdmt_now_ns() + 10000 * MS;
	while (log_count(d, text) < n) {
		if (tdmt_now_ns() >= deadline)
			fail_msg("the daemon log does not say \"%s\" (%d times)", text, n);
		tdmt_sleep_ms(5);
	}
}

static void test_sighup(void **state)
{
	(void)state;
	tdm_buffer h;
	void *p;
	start(&d1, "[limits]\nbuffer_quota_bytes = \"1MiB\"\n");
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(tdm_buffer_alloc(c1, 768 << 10, 0, &h, &p), 0);
	assert_int_equal(tdm_buffer_free(c1, h), 0);

	/* A broken file: the running configuration stays. */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[limits]\nbuffer_quota_bytes = \"64KiB\"\n"
	                                               "max_buffers = = 2\n"),
	                 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: keeping the running configuration", 1);
	assert_true(tdmt_log_contains(&d1, "tandemd.toml:3:15: "));
	assert_int_equal(tdm_buffer_alloc(c1, 768 << 10, 0, &h, &p), 0);
	assert_int_equal(run_axpy(c1, 0), 0);
	assert_int_equal(tdm_buffer_free(c1, h), 0);
	assert_int_equal(tdmt_connect(d1.sock, &c2), 0);
	assert_int_equal(tdm_buffer_alloc(c2, 768 << 10, 0, &h, &p), 0);
	assert_int_equal(tdm_buffer_free(c2, h), 0);
	tdm_disconnect(c2);
	c2 = NULL;

	/* A valid file: applied, to connected clients and new ones; a key
	 * that changes only on restart is named and left as it runs. */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[engine]\nwatchdog_ms = 1000\n"
	                                               "[limits]\nbuffer_quota_bytes = \"64KiB\"\n"
	                                               "max_tasks_per_graph = 8\n"),
	                 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: reloaded", 1);
	assert_true(tdmt_log_contains(&d1, "engine.watchdog_ms change only on restart"));
	assert_false(tdmt_log_contains(&d1, "limits.buffer_quota_bytes change"));
	assert_int_equal(tdm_buffer_alloc(c1, 128 << 10, 0, &h, &p), -TDM_EQUOTA);
	assert_int_equal(tdm_buffer_alloc(c1, 32 << 10, 0, &h, &p), 0);
	assert_int_equal(tdm_buffer_free(c1, h), 0);
	assert_int_equal(run_axpy(c1, 0), 0);
	/* c1 learnt the old task limit at connect: the daemon enforces the new
	 * one on its graphs. */
	struct tdmt_kernels k;
	assert_int_equal(tdmt_lookup_kernels(c1, &k), 0);
	tdm_graph *g = tdm_graph_new(c1);
	assert_non_null(g);
	for (int i = 0; i < 9; i++)
		assert_int_equal(tdmt_add_noop(g, &k, NULL), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 30000 * MS), -TDM_EQUOTA);
	uint32_t task = 99, field = 99;
	tdm_graph_reject_detail(g, &task, &field);
	assert_int_equal(field, TDM_REJECT_NTASKS);
	tdm_graph_free(g);
	/* a new client hears the new limits at connect */
	assert_int_equal(tdmt_connect(d1.sock, &c2), 0);
	assert_int_equal(tdm_buffer_alloc(c2, 128 << 10, 0, &h, &p), -TDM_EQUOTA);
	assert_int_equal(tdmt_lookup_kernels(c2, &k), 0);
	g = tdm_graph_new(c2);
	assert_non_null(g);
	for (int i = 0; i < 8; i++)
		assert_int_equal(tdmt_add_noop(g, &k, NULL), 0);
	assert_int_equal(tdmt_add_noop(g, &k, NULL), -TDM_EQUOTA);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 30000 * MS), 0);
	tdm_graph_free(g);

	/* Broken again: the reloaded configuration stays. */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[nosuch]\n"), 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: keeping the running configuration", 2);
	assert_int_equal(tdm_buffer_alloc(c2, 128 << 10, 0, &h, &p), -TDM_EQUOTA);
	tdm_disconnect(c1);
	tdm_disconnect(c2);
	c1 = c2 = NULL;
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* ---- SIGTERM -------------------------------------------------------------- */

static void test_sigterm_drains(void **state)
{
	(void)state;
	struct tdmt_kernels k;
	tdm_buffer hx, hy;
	float *x, *y;
	start(&d1, "");
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(tdmt_lookup_kernels(c1, &k), 0);
	assert_int_equal(tdm_buffer_alloc(c1, 4096, 0, &hx, (void **)&x), 0);
	assert_int_equal(tdm_buffer_alloc(c1, 4096, 0, &hy, (void **)&y), 0);
	for (int i = 0; i < 1024; i++) {
		x[i] = (float)i;
		y[i] = 0.5f;
	}
	/* A graph that runs 400 ms and writes its result at the end. */
	tdm_graph *g = tdm_graph_new(c1), *late = tdm_graph_new(c1);
	assert_true(g && late);
	uint32_t s1, s2, a;
	assert_int_equal(tdmt_add_spin(g, &k, 200000, &s1), 0);
	assert_int_equal(tdmt_add_spin(g, &k, 200000, &s2), 0);
	assert_int_equal(tdmt_add_axpy(g, &k, hx, hy, 3.0f, &a), 0);
	assert_int_equal(tdm_graph_add_edge(g, s1, s2), 0);
	assert_int_equal(tdm_graph_add_edge(g, s2, a), 0);
	assert_int_equal(tdmt_add_noop(late, &k, NULL), 0);
	uint64_t t0 = tdmt_now_ns();
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdmt_wait_counter(d1.sock, "graphs_accepted", 1, 10000, NULL), 0);
	kill(d1.pid, SIGTERM);
	assert_int_equal(tdmt_wait_log(&d1, "SIGTERM: draining", 10000), 0);
	/* New graphs are refused while it drains; the running one finishes. */
	assert_int_equal(tdm_graph_submit(late), 0);
	assert_int_equal(tdm_wait(late, 30000 * MS), -TDM_ESHUTDOWN);
	assert_true(tdmt_daemon_alive(&d1));
	assert_int_equal(tdm_wait(g, 30000 * MS), 0);
	assert_true(tdmt_now_ns() - t0 >= 400 * MS);
	size_t bad = 0;
	for (int i = 0; i < 1024; i++)
		bad += y[i] != 3.0f * (float)i + 0.5f;
	assert_int_equal(bad, 0);
	/* Then it exits by itself, with status 0. */
	int st = tdmt_wait_child(d1.pid, 20000);
	d1.pid = 0;
	assert_int_equal(st, 0);
	assert_true(tdmt_log_contains(&d1, "drained: exiting"));
	/* and removes its socket */
	struct stat sb;
	assert_int_equal(stat(d1.sock, &sb), -1);
	tdm_graph_free(g);
	tdm_graph_free(late);
	tdmt_test_ok();
}

/* ---- peer credentials ----------------------------------------------------- */

#define NOBODY 65534

/* In a child that became uid/gid 65534: connect and run a graph. Exit 0
 * when the outcome is want (0: served correctly; else tdm_connect's error). */
static int as_nobody(const char *sock, int want)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tdm_client *c;
		if (setgroups(0, NULL) || setgid(NOBODY) || setuid(NOBODY))
			_exit(2);
		int rc = tdmt_connect(sock, &c);
		if (rc == 0) {
			rc = run_axpy(c, 0);
			tdm_disconnect(c);
			if (rc)
				_exit(3);
		}
		_exit(rc == want ? 0 : 10 + (rc < 0 ? -rc : 50));
	}
	return tdmt_wait_child(pid, 30000);
}

static void test_peer_credentials(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr, "test_peer_credentials: not root, cannot change uid: skipped\n");
		tdmt_test_ok();
		skip();
	}
	start(&d1, "[daemon]\nallowed_uids = []\nallowed_gids = []\n");
	assert_int_equal(as_nobody(d1.sock, -TDM_EPERM), 0);
	/* root is always served */
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(run_axpy(c1, 0), 0);
	/* allowed by uid, after a reload */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nallowed_uids = [1000, 65534]\n"),
	                 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: reloaded", 1);
	assert_int_equal(as_nobody(d1.sock, 0), 0);
	/* allowed by gid only */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nallowed_uids = [1000]\n"
	                                               "allowed_gids = [65534]\n"),
	                 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: reloaded", 2);
	assert_int_equal(as_nobody(d1.sock, 0), 0);
	/* and refused again */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nallowed_uids = [1000]\n"), 0);
	kill(d1.pid, SIGHUP);
	wait_log_count(&d1, "SIGHUP: reloaded", 3);
	assert_int_equal(as_nobody(d1.sock, -TDM_EPERM), 0);
	/* the refusals left nothing behind */
	tdm_disconnect(c1);
	c1 = NULL;
	const char *which = NULL;
	int64_t v = 0;
	if (tdmt_wait_counters_zero(d1.sock, tdmt_baseline_counters, 10000, &which, &v))
		fail_msg("counter %s stays at %lld", which, (long long)v);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* ---- a second daemon ------------------------------------------------------ */

static void test_second_daemon(void **state)
{
	(void)state;
	start(&d1, "");
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(tdmt_daemon_prepare(&d2, ""), 0);
	int rc = tdmt_daemon_launch(&d2, d1.sock, 20000);
	assert_int_equal(rc, -1); /* exited before READY */
	assert_int_equal(d2.exit_status, 1);
	assert_true(tdmt_log_contains(&d2, "another tandemd is listening"));
	/* The first one is untouched: its socket is still there and serves old
	 * and new clients. */
	assert_int_equal(run_axpy(c1, 0), 0);
	assert_int_equal(tdmt_connect(d1.sock, &c2), 0);
	assert_int_equal(run_axpy(c2, 0), 0);
	tdm_disconnect(c1);
	tdm_disconnect(c2);
	c1 = c2 = NULL;
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	/* With the first gone, the path is free again. */
	assert_int_equal(tdmt_daemon_launch(&d2, d1.sock, 20000), 0);
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(run_axpy(c1, 0), 0);
	tdm_disconnect(c1);
	c1 = NULL;
	assert_int_equal(tdmt_daemon_stop(&d2, 20000), 0);
	tdmt_test_ok();
}

/* ---- quiet connections ---------------------------------------------------- */

/* A connection that never says hello is dropped after the hello timeout
 * (5 s); a client that said hello and then only uses its rings (nothing on
 * the socket) must stay connected however long it is quiet. */
static void test_quiet_connections(void **state)
{
	(void)state;
	start(&d1, "");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d1.sock);
	int mute = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(mute >= 0);
	assert_int_equal(connect(mute, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(tdmt_connect(d1.sock, &c1), 0);
	assert_int_equal(run_axpy(c1, 0), 0);
	uint64_t t0 = tdmt_now_ns();

	/* The mute connection goes between 5 and 7 s. */
	struct pollfd p = { mute, POLLIN, 0 };
	assert_int_equal(poll(&p, 1, 7000), 1);
	char b;
	assert_int_equal(recv(mute, &b, 1, MSG_DONTWAIT), 0);
	close(mute);
	assert_true(tdmt_now_ns() - t0 >= 4500 * MS);
	tdmt_sleep_ms(1000);

	/* The client, quiet on its socket for more than 5 s, is still served. */
	int rc = run_axpy(c1, 0);
	if (rc != 0)
		fail_msg("a client quiet on its socket for %.1f s was dropped: %d (%s)",
		         (tdmt_now_ns() - t0) / 1e9, rc, tdm_strerror(rc));
	int64_t live = -1;
	assert_int_equal(tdmt_counter(d1.sock, "sessions_live", &live), 0);
	assert_int_equal(live, 1);
	tdm_disconnect(c1);
	c1 = NULL;
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		T(test_check_config),
		T(test_check_config_unknown_policy),
		T(test_sighup),
		T(test_sigterm_drains),
		T(test_peer_credentials),
		T(test_second_daemon),
		T(test_quiet_connections),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
