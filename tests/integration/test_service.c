/* tandemd as a systemd service: the notification protocol (a fake
 * $NOTIFY_SOCKET that receives READY=1, STATUS=, RELOADING=1, STOPPING=1 and
 * WATCHDOG=1), log lines with the journal's priority prefixes, and the
 * groups (by name, supplementary ones) that the unit's tandem group relies
 * on. Each test runs its own daemon. */
#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

/* No calibration and no saved models: starts fast and leaves nothing. */
#define QUICK "[profiler]\ncalibrate = false\npersist_models = false\n"
#define MAX_MSGS 256
/* daemon/notify.h: NOTIFY_STATUS_MIN_INTERVAL_MS */
#define NOTIFY_INTERVAL_MS 1000

static struct tdmt_daemon d1;
static int notify_fd = -1;
static char notify_path[TDMT_PATH_MAX];

/* The datagrams received so far, in order. */
static char *msgs[MAX_MSGS];
static int nmsgs;

static int test_setup(void **state)
{
	(void)state;
	memset(&d1, 0, sizeof(d1));
	tdmt_test_begin();
	return 0;
}

static void forget_msgs(void)
{
	for (int i = 0; i < nmsgs; i++)
		free(msgs[i]);
	nmsgs = 0;
}

static int test_teardown(void **state)
{
	(void)state;
	if (!tdmt_test_passed() && d1.dir[0]) {
		d1.failed = true;
		for (int i = 0; i < nmsgs; i++)
			fprintf(stderr, "notify[%d]: %s\n", i, msgs[i]);
	}
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("JOURNAL_STREAM");
	forget_msgs();
	tdmt_daemon_cleanup(&d1);
	return 0;
}

/* A datagram socket in d1's directory, named by $NOTIFY_SOCKET for the
 * daemon to inherit. */
static void prepare_with_notify_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(notify_path, sizeof(notify_path), "%s/notify.sock", d1.dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify_path);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(notify_fd >= 0);
	assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", notify_path, 1), 0);
}

static void prepare_with_notify(const char *toml)
{
	assert_int_equal(tdmt_daemon_prepare(&d1, toml), 0);
	prepare_with_notify_socket();
}

static void launch(void)
{
	int rc = tdmt_daemon_launch(&d1, d1.sock, 60000);
	if (rc)
		fail_msg("tandemd did not start: %d (status %d)", rc, d1.exit_status);
}

/* Receives what arrives within timeout_ms (0: only what is queued). */
static void drain_msgs(int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		uint64_t now = tdmt_now_ns();
		int left = now >= deadline ? 0 : (int)((deadline - now) / 1000000ull);
		struct pollfd p = { notify_fd, POLLIN, 0 };
		if (poll(&p, 1, left) <= 0)
			return;
		char buf[4096];
		ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, 0);
		if (n < 0)
			return;
		buf[n] = '\0';
		assert_true(nmsgs < MAX_MSGS);
		msgs[nmsgs++] = strdup(buf);
	}
}

/* Whether message i has the line "line" (a whole line, or a prefix of one
 * when line ends with '='). */
static bool has_line(int i, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = msgs[i]; p && *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (line[n - 1] == '=' ? len >= n && !strncmp(p, line, n)
		                       : len == n && !strncmp(p, line, n))
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* The first message at or after from with the line; -1 if none came
 * within timeout_ms. */
static int wait_line(int from, const char *line, int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		for (int i = from; i < nmsgs; i++)
			if (has_line(i, line))
				return i;
		if (tdmt_now_ns() >= deadline)
			return -1;
		drain_msgs(50);
	}
}

static int count_lines(int from, int to, const char *line)
{
	int n = 0;
	for (int i = from; i < to && i < nmsgs; i++)
		n += has_line(i, line);
	return n;
}

/* READY=1 once clients can connect, STATUS= with the devices and clients,
 * RELOADING=1 (with MONOTONIC_USEC=) then READY=1 on SIGHUP, STOPPING=1 on
 * SIGTERM, in this order; no WATCHDOG=1 when systemd asks for none. */
static void test_notify_sequence(void **state)
{
	(void)state;
	prepare_with_notify(QUICK);
	launch();
	int ready = wait_line(0, "READY=1", 10000);
	assert_true(ready >= 0);
	assert_true(has_line(ready, "STATUS="));
	assert_non_null(strstr(msgs[ready], "cpu0"));
	assert_non_null(strstr(msgs[ready], "0 clients"));

	/* A client comes: a new STATUS= says so. */
	tdm_client *c;
	assert_int_equal(tdmt_connect(d1.sock, &c), 0);
	int st = -1;
	for (int from = ready + 1; st < 0;) {
		int i = wait_line(from, "STATUS=", 5000);
		assert_true(i >= 0);
		const char *one = strstr(msgs[i], "), 1 client");
		if (one && (one[11] == '\0' || one[11] == ','))
			st = i;
		from = i + 1;
	}
	tdm_disconnect(c);

	kill(d1.pid, SIGHUP);
	int reloading = wait_line(st + 1, "RELOADING=1", 10000);
	assert_true(reloading > st);
	assert_true(has_line(reloading, "MONOTONIC_USEC="));
	unsigned long long usec = 0;
	const char *m = strstr(msgs[reloading], "MONOTONIC_USEC=");
	assert_int_equal(sscanf(m, "MONOTONIC_USEC=%llu", &usec), 1);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	assert_true(usec > 0 && usec <= (unsigned long long)now.tv_sec * 1000000ull +
	                                        (unsigned long long)now.tv_nsec / 1000);
	int reready = wait_line(reloading + 1, "READY=1", 10000);
	assert_true(reready > reloading);

	kill(d1.pid, SIGTERM);
	int stopping = wait_line(reready + 1, "STOPPING=1", 10000);
	assert_true(stopping > reready);
	/* The one signal drains and exits 0 (a second would cancel). */
	assert_int_equal(tdmt_wait_child(d1.pid, 20000), 0);
	d1.pid = 0;
	drain_msgs(0);
	assert_int_equal(count_lines(0, nmsgs, "WATCHDOG=1"), 0);
	assert_int_equal(count_lines(0, nmsgs, "READY=1"), 2);
	tdmt_test_ok();
}

/* A bad file on SIGHUP keeps the running configuration: systemd still hears
 * that the reload is over. */
static void test_notify_failed_reload(void **state)
{
	(void)state;
	prepare_with_notify(QUICK);
	launch();
	int ready = wait_line(0, "READY=1", 10000);
	assert_true(ready >= 0);
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nno_such_key = 1\n"), 0);
	kill(d1.pid, SIGHUP);
	int reloading = wait_line(ready + 1, "RELOADING=1", 10000);
	assert_true(reloading > ready);
	assert_true(wait_line(reloading + 1, "READY=1", 10000) > reloading);
	assert_int_equal(tdmt_wait_log(&d1, "keeping the running configuration", 5000), 0);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* WATCHDOG_USEC set: WATCHDOG=1 at half the interval, from the event loop,
 * for as long as the daemon runs. */
static void test_watchdog(void **state)
{
	(void)state;
	prepare_with_notify(QUICK);
	assert_int_equal(setenv("WATCHDOG_USEC", "200000", 1), 0);
	launch();
	int ready = wait_line(0, "READY=1", 10000);
	assert_true(ready >= 0);
	uint64_t t0 = tdmt_now_ns();
	drain_msgs(1000);
	uint64_t waited_ms = (tdmt_now_ns() - t0) / 1000000ull;
	int pings = count_lines(0, nmsgs, "WATCHDOG=1");
	/* Every 100 ms: at least 3 in a second even on a loaded machine, and
	 * never more than one per 100 ms (plus those before READY's). */
	if (pings < 3 || (uint64_t)pings > waited_ms / 100 + 3)
		fail_msg("%d WATCHDOG=1 in %llu ms (expected one per 100 ms)", pings,
		         (unsigned long long)waited_ms);
	assert_true(tdmt_wait_log(&d1, "systemd watchdog: pinging every 100 ms", 1000) == 0);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* Clients that come and go quickly cost at most one STATUS= a second, and
 * the last one sent says how things ended. */
static void test_status_rate_limited(void **state)
{
	(void)state;
	prepare_with_notify(QUICK);
	launch();
	int ready = wait_line(0, "READY=1", 10000);
	assert_true(ready >= 0);
	drain_msgs(0);
	int from = nmsgs;
	uint64_t t0 = tdmt_now_ns();
	for (int i = 0; i < 30; i++) {
		tdm_client *c;
		assert_int_equal(tdmt_connect(d1.sock, &c), 0);
		tdm_disconnect(c);
	}
	uint64_t ms = (tdmt_now_ns() - t0) / 1000000ull;
	drain_msgs(2500); /* the update held back goes out within a second */
	int n = count_lines(from, nmsgs, "STATUS=");
	/* One at once, then one per second of churn, and the last held back. */
	if ((uint64_t)n > ms / NOTIFY_INTERVAL_MS + 2 || n < 1)
		fail_msg("%d STATUS= updates for 60 client changes in %llu ms", n,
		         (unsigned long long)ms);
	assert_non_null(strstr(msgs[nmsgs - 1], "0 clients"));
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* Under the journal ($JOURNAL_STREAM names stderr's device and inode) each
 * line starts with its sd-daemon priority; elsewhere with the usual time
 * stamp. */
static void test_journal_priorities(void **state)
{
	(void)state;
	assert_int_equal(tdmt_daemon_prepare(&d1, QUICK), 0);
	/* The daemon's stderr will be this file (opened to append). */
	FILE *f = fopen(d1.log, "a");
	assert_non_null(f);
	fclose(f);
	struct stat st;
	assert_int_equal(stat(d1.log, &st), 0);
	char env[64];
	snprintf(env, sizeof(env), "%llu:%llu", (unsigned long long)st.st_dev,
	         (unsigned long long)st.st_ino);
	assert_int_equal(setenv("JOURNAL_STREAM", env, 1), 0);
	launch();
	assert_int_equal(tdmt_wait_log(&d1, "<6>info: listening on ", 5000), 0);
	/* A key that takes effect on restart only: a warning. */
	assert_int_equal(tdmt_daemon_write_config(&d1, QUICK "[engine]\npolicy = \"eager\"\n"), 0);
	kill(d1.pid, SIGHUP);
	assert_int_equal(tdmt_wait_log(&d1, "<4>warn: reload: ", 5000), 0);
	/* A file with an error: an error. */
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nno_such_key = 1\n"), 0);
	kill(d1.pid, SIGHUP);
	assert_int_equal(tdmt_wait_log(&d1, "<3>error: SIGHUP: keeping", 5000), 0);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	assert_false(tdmt_log_contains(&d1, "tandemd["));
	tdmt_daemon_cleanup(&d1);

	/* Another file than stderr: not the journal. */
	memset(&d1, 0, sizeof(d1));
	assert_int_equal(setenv("JOURNAL_STREAM", "1:1", 1), 0);
	assert_int_equal(tdmt_daemon_prepare(&d1, QUICK), 0);
	launch();
	assert_int_equal(tdmt_wait_log(&d1, "] info: listening on ", 5000), 0);
	assert_false(tdmt_log_contains(&d1, "<6>"));
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* allowed_gids by name: a group that exists is its gid, one that does not
 * is an error that names it. */
static void test_group_names(void **state)
{
	(void)state;
	char out[4096], path[TDMT_PATH_MAX];
	struct group *root = getgrgid(0);
	assert_non_null(root); /* every system has group 0 */
	char toml[256];
	snprintf(toml, sizeof(toml),
	         "[daemon]\nallowed_gids = [\"%s\", 7]\nadmin_gids = [\"%s\"]\n", root->gr_name,
	         root->gr_name);
	assert_int_equal(tdmt_daemon_prepare(&d1, toml), 0);
	snprintf(path, sizeof(path), "%s", d1.config);
	const char *args[] = { "--check-config", "--config", path, NULL };
	assert_int_equal(tdmt_run_tandemd(args, out, sizeof(out), 10000), 0);
	assert_int_equal(tdmt_daemon_write_config(
	                         &d1, "[daemon]\nallowed_gids = [\"no-such-group-tandem-test\"]\n"),
	                 0);
	assert_int_equal(tdmt_run_tandemd(args, out, sizeof(out), 10000), 1);
	assert_non_null(strstr(out, "daemon.allowed_gids[0]: \"no-such-group-tandem-test\" is not "
	                            "a group of this system"));
	assert_int_equal(tdmt_daemon_write_config(&d1, "[daemon]\nallowed_gids = [true]\n"), 0);
	assert_int_equal(tdmt_run_tandemd(args, out, sizeof(out), 10000), 1);
	assert_non_null(strstr(out, "expected a group name or an integer"));
	tdmt_test_ok();
}

#define MEMBER_UID 54321
#define MEMBER_GROUP 54322

/* In a child that became uid MEMBER_UID, primary gid MEMBER_UID, with
 * MEMBER_GROUP as a supplementary group or not: connect. Exit 0 when
 * tdm_connect gives want. */
static int as_user(const char *sock, bool member, int want)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		gid_t g = MEMBER_GROUP;
		tdm_client *c;
		if (setgroups(member ? 1 : 0, member ? &g : NULL) || setgid(MEMBER_UID) ||
		    setuid(MEMBER_UID))
			_exit(2);
		int rc = tdmt_connect(sock, &c);
		if (rc == 0)
			tdm_disconnect(c);
		_exit(rc == want ? 0 : 10 + (rc < 0 ? -rc : 50));
	}
	return tdmt_wait_child(pid, 30000);
}

/* A member of an allowed group through a supplementary group (as users are
 * of the unit's tandem group) may connect; the same user without it may
 * not. */
static void test_supplementary_groups(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		fprintf(stderr,
		        "test_supplementary_groups: not root, cannot change uid: skipped\n");
		tdmt_test_ok();
		skip();
	}
	char toml[128];
	snprintf(toml, sizeof(toml), QUICK "[daemon]\nallowed_gids = [%d]\n", MEMBER_GROUP);
	assert_int_equal(tdmt_daemon_prepare(&d1, toml), 0);
	launch();
	assert_int_equal(as_user(d1.sock, true, 0), 0);
	assert_int_equal(as_user(d1.sock, false, -TDM_EPERM), 0);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	tdmt_test_ok();
}

/* ---- socket activation (tandemd.socket) ------------------------------------ */

/* A listening Unix stream socket at path (or, datagram, a socket that
 * listens to nothing). */
static int make_socket(const char *path, int type)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* Starts tandemd on d1's configuration as systemd starts a service for its
 * socket unit: the sockets at descriptors 3, 4, ..., $LISTEN_FDS their
 * number, $LISTEN_PID the daemon's pid; its stderr into d1.log. */
static void launch_activated(const int *fds, int nfds)
{
	char exe[512], state[TDMT_PATH_MAX + 8];
	snprintf(exe, sizeof(exe), "%s/bin/tandemd", tdmt_build_dir());
	snprintf(state, sizeof(state), "%s/state", d1.dir);
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char n[16], me[16];
		int moved[4];
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int log = open(d1.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (log < 0)
			_exit(127);
		dup2(log, 1);
		dup2(log, 2);
		/* Out of the way first, then into place (without CLOEXEC). */
		for (int i = 0; i < nfds; i++)
			moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 20);
		for (int i = 0; i < nfds; i++)
			if (moved[i] < 0 || dup2(moved[i], 3 + i) != 3 + i)
				_exit(127);
		snprintf(n, sizeof(n), "%d", nfds);
		snprintf(me, sizeof(me), "%d", (int)getpid());
		setenv("LISTEN_FDS", n, 1);
		setenv("LISTEN_PID", me, 1);
		setenv("XDG_STATE_HOME", state, 1);
		execl(exe, exe, "--config", d1.config, (char *)NULL);
		_exit(127);
	}
	d1.pid = pid;
}

/* The socket systemd passes is the one served, whatever daemon.socket says;
 * the daemon leaves it in place when it exits (systemd's, listening on). */
static void test_socket_activation(void **state)
{
	(void)state;
	char toml[256], path[TDMT_PATH_MAX], other[TDMT_PATH_MAX];
	assert_int_equal(tdmt_daemon_prepare(&d1, QUICK), 0);
	snprintf(path, sizeof(path), "%s/act.sock", d1.dir);
	snprintf(other, sizeof(other), "%s/other.sock", d1.dir);
	snprintf(toml, sizeof(toml), QUICK "[daemon]\nsocket = \"%s\"\n", other);
	assert_int_equal(tdmt_daemon_write_config(&d1, toml), 0);
	prepare_with_notify_socket();
	int fd = make_socket(path, SOCK_STREAM);
	launch_activated(&fd, 1);
	assert_true(wait_line(0, "READY=1", 30000) >= 0);
	assert_true(tdmt_log_contains(&d1, "socket activation: listening on the socket systemd "
	                                   "passed"));
	assert_true(tdmt_log_contains(&d1, "which systemd passed, not on"));
	struct stat st;
	assert_int_not_equal(stat(other, &st), 0);
	tdm_client *c;
	assert_int_equal(tdmt_connect(path, &c), 0);
	assert_true(tdm_device_count(c) > 0);
	tdm_disconnect(c);
	assert_int_equal(tdmt_daemon_stop(&d1, 20000), 0);
	/* Still there, still listening (on our descriptor, as on systemd's): a
	 * client that comes now would start the daemon again. */
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	close(fd);
	tdmt_test_ok();
}

/* Two sockets, or one that is not a listening stream socket: the daemon
 * says what tandemd.socket must give it and does not start. */
static void test_socket_activation_refused(void **state)
{
	(void)state;
	char a[TDMT_PATH_MAX], b[TDMT_PATH_MAX];
	assert_int_equal(tdmt_daemon_prepare(&d1, QUICK), 0);
	snprintf(a, sizeof(a), "%s/a.sock", d1.dir);
	snprintf(b, sizeof(b), "%s/b.sock", d1.dir);
	int fds[2] = { make_socket(a, SOCK_STREAM), make_socket(b, SOCK_STREAM) };
	launch_activated(fds, 2);
	assert_int_equal(tdmt_wait_child(d1.pid, 30000), 1);
	d1.pid = 0;
	assert_true(tdmt_log_contains(&d1, "systemd passed 2 sockets"));
	close(fds[1]);
	unlink(b);

	int dgram = make_socket(b, SOCK_DGRAM);
	launch_activated(&dgram, 1);
	assert_int_equal(tdmt_wait_child(d1.pid, 30000), 1);
	d1.pid = 0;
	assert_true(tdmt_log_contains(&d1, "is not a listening Unix stream socket"));
	close(dgram);
	close(fds[0]);
	tdmt_test_ok();
}

/* ---- where clients look ------------------------------------------------------ */

#define SYSTEM_DIR "/run/tandem"
#define SYSTEM_SOCKET SYSTEM_DIR "/tandemd.sock"

/* In a child that became MEMBER_UID with $XDG_RUNTIME_DIR = xdg: whether
 * tdm_default_socket_path gives want_default and tdm_listen_socket_path
 * want_listen (exit 0), else exit 1 with what they gave. */
static int paths_as_user(const char *xdg, const char *want_default, const char *want_listen)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char d[TDMT_PATH_MAX], l[TDMT_PATH_MAX];
		if (setgroups(0, NULL) || setgid(MEMBER_UID) || setuid(MEMBER_UID))
			_exit(2);
		unsetenv("TANDEM_SOCKET");
		setenv("XDG_RUNTIME_DIR", xdg, 1);
		if (tdm_default_socket_path(d, sizeof(d)) || tdm_listen_socket_path(l, sizeof(l)))
			_exit(3);
		if (strcmp(d, want_default) || strcmp(l, want_listen)) {
			fprintf(stderr, "default %s (want %s), listen %s (want %s)\n", d,
			        want_default, l, want_listen);
			_exit(1);
		}
		_exit(0);
	}
	return tdmt_wait_child(pid, 10000);
}

/* A user without a daemon of their own reaches the system's; one with a
 * daemon reaches that; the daemon's own default stays the user's. */
static void test_user_finds_system_daemon(void **state)
{
	(void)state;
	struct stat st;
	if (geteuid() != 0 || stat(SYSTEM_DIR, &st) == 0) {
		fprintf(stderr,
		        "test_user_finds_system_daemon: needs root and no %s (a system "
		        "tandemd may use it): skipped\n",
		        SYSTEM_DIR);
		tdmt_test_ok();
		skip();
	}
	char xdg[64], own[TDMT_PATH_MAX + 32], own_dir[TDMT_PATH_MAX];
	snprintf(xdg, sizeof(xdg), "/tmp/tdmt-xdg.XXXXXX");
	assert_non_null(mkdtemp(xdg));
	assert_int_equal(chown(xdg, MEMBER_UID, MEMBER_UID), 0);
	snprintf(own_dir, sizeof(own_dir), "%s/tandem", xdg);
	snprintf(own, sizeof(own), "%s/tandemd.sock", own_dir);
	/* No system daemon: the user's own path, whether it exists or not. */
	int rc1 = paths_as_user(xdg, own, own);
	assert_int_equal(mkdir(SYSTEM_DIR, 0755), 0);
	int sys = make_socket(SYSTEM_SOCKET, SOCK_STREAM);
	/* The system's socket exists, the user's does not. */
	int rc2 = paths_as_user(xdg, SYSTEM_SOCKET, own);
	/* Both exist: the user's own. */
	assert_int_equal(mkdir(own_dir, 0700), 0);
	assert_int_equal(chown(own_dir, MEMBER_UID, MEMBER_UID), 0);
	int mine = make_socket(own, SOCK_STREAM);
	int rc3 = paths_as_user(xdg, own, own);
	close(mine);
	close(sys);
	unlink(own);
	rmdir(own_dir);
	rmdir(xdg);
	unlink(SYSTEM_SOCKET);
	rmdir(SYSTEM_DIR);
	assert_int_equal(rc1, 0);
	assert_int_equal(rc2, 0);
	assert_int_equal(rc3, 0);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_notify_sequence, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_notify_failed_reload, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_watchdog, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_status_rate_limited, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_journal_priorities, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_group_names, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_supplementary_groups, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_user_finds_system_daemon, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_socket_activation, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_socket_activation_refused, test_setup,
		                                test_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
