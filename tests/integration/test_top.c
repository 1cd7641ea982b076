/* tandemctl top: in a tmux pane (skipped with a message where tmux is
 * absent) it shows the daemon's devices and a client that is running
 * graphs, redraws for a new size, and q ends it; --once prints one plain
 * frame for scripts; without a terminal it asks for --once. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

#define MS (1000000ll)
#define OK(x) assert_int_equal((x), 0)

static struct tdmt_daemon d;
static char tmux_sock[TDMT_PATH_MAX + 16];

static int test_setup(void **state)
{
	(void)state;
	tmux_sock[0] = '\0';
	tdmt_test_begin();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	if (tmux_sock[0]) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "tmux -S %s kill-server >/dev/null 2>&1", tmux_sock);
		if (system(cmd) < 0)
			perror("tmux kill-server");
	}
	return tdmt_test_end(&d, 0);
}

static void start(void)
{
	OK(tdmt_daemon_start(&d, "[profiler]\ncalibrate = false\n"));
}

/* The first device's name, as status lists it. */
static void first_device(char *out, size_t len)
{
	json_t *doc = tdmt_status_doc(d.sock);
	assert_non_null(doc);
	const char *name = json_string_value(
	        json_object_get(json_array_get(json_object_get(doc, "devices"), 0), "name"));
	assert_non_null(name);
	snprintf(out, len, "%s", name);
	json_decref(doc);
}

/* A client running graphs of spin tasks until its pipe closes. */
static int load_child(int stop_fd)
{
	tdm_client *c;
	struct tdmt_kernels k;
	if (tdmt_connect(d.sock, &c) || tdmt_lookup_kernels(c, &k))
		return 10;
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return 11;
	for (int i = 0; i < 4; i++)
		if (tdmt_add_spin(g, &k, 500, NULL))
			return 11;
	for (;;) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
		if (tdm_graph_submit(g) || tdm_wait(g, 30000 * MS))
			return 12;
	}
	tdm_graph_free(g);
	tdm_disconnect(c);
	return 0;
}

static pid_t start_load(int *stop)
{
	pid_t pid = tdmt_fork_stoppable(load_child, stop);
	assert_true(pid >= 0);
	/* Connected and counted before anyone looks. */
	int64_t got = 0;
	for (int i = 0; i < 500 && got < 1; i++) {
		if (tdmt_client_field(d.sock, pid, "session", &got) != 0)
			got = 0;
		if (got < 1)
			tdmt_sleep_ms(10);
	}
	assert_true(got >= 1);
	return pid;
}

static void stop_load(pid_t pid, int stop)
{
	assert_int_equal(tdmt_stop_child(pid, stop, 60000), 0);
}

/* Runs cmd and returns its output (malloc'd) and exit status. */
static char *run(const char *cmd, int *status)
{
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t len = 0, cap = 1 << 16;
	char *out = malloc(cap);
	assert_non_null(out);
	size_t n;
	while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0)
		len += n;
	out[len] = '\0';
	int st = pclose(p);
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return out;
}

/* A line of text that has both a and b. */
static bool line_with(const char *text, const char *a, const char *b)
{
	for (const char *l = text; l && *l;) {
		const char *end = strchr(l, '\n');
		size_t len = end ? (size_t)(end - l) : strlen(l);
		char buf[512];
		snprintf(buf, sizeof(buf), "%.*s", (int)(len < sizeof(buf) ? len : sizeof(buf) - 1),
		         l);
		if (strstr(buf, a) && strstr(buf, b))
			return true;
		l = end ? end + 1 : NULL;
	}
	return false;
}

static void test_top_in_tmux(void **state)
{
	char cmd[1024], dev[64], pid_text[32];
	int st, stop;
	(void)state;
	if (system("command -v tmux >/dev/null 2>&1") != 0) {
		print_message("tmux not found (Debian package tmux): tandemctl top's terminal test "
		              "is skipped\n");
		skip();
	}
	start();
	first_device(dev, sizeof(dev));
	pid_t child = start_load(&stop);
	snprintf(pid_text, sizeof(pid_text), " %d ", (int)child);

	snprintf(tmux_sock, sizeof(tmux_sock), "%s/tmux.sock", d.dir);
	snprintf(cmd, sizeof(cmd),
	         "tmux -S %s new-session -d -x 120 -y 40 '%s/bin/tandemctl -s %s top -d 0.2'",
	         tmux_sock, tdmt_build_dir(), d.sock);
	OK(system(cmd));

	/* The device rows and the running client's row (with its pid and a
	 * task rate above zero once two samples were taken). */
	snprintf(cmd, sizeof(cmd), "tmux -S %s capture-pane -p", tmux_sock);
	char *screen = NULL;
	bool seen = false;
	for (int i = 0; i < 100 && !seen; i++) {
		free(screen);
		screen = run(cmd, &st);
		seen = st == 0 && strstr(screen, "DEVICE") && line_with(screen, dev, "[") &&
		       line_with(screen, pid_text, ".") && strstr(screen, "q: quit");
		if (!seen)
			tdmt_sleep_ms(100);
	}
	if (!seen)
		fprintf(stderr, "screen:\n%s\n", screen ? screen : "");
	assert_true(seen);
	free(screen);

	/* A smaller window: redrawn to fit (no line wider than 60). */
	snprintf(cmd, sizeof(cmd), "tmux -S %s resize-window -x 60 -y 15 2>/dev/null", tmux_sock);
	if (system(cmd) == 0) {
		snprintf(cmd, sizeof(cmd), "tmux -S %s capture-pane -p", tmux_sock);
		bool fits = false;
		for (int i = 0; i < 50 && !fits; i++) {
			tdmt_sleep_ms(100);
			screen = run(cmd, &st);
			fits = strstr(screen, "DEVICE") != NULL;
			for (char *l = screen; fits && l && *l;) {
				char *end = strchr(l, '\n');
				size_t len = end ? (size_t)(end - l) : strlen(l);
				fits = len <= 60;
				l = end ? end + 1 : NULL;
			}
			free(screen);
		}
		assert_true(fits);
	}

	/* q quits: the session (its only window) ends. */
	snprintf(cmd, sizeof(cmd), "tmux -S %s send-keys q", tmux_sock);
	OK(system(cmd));
	snprintf(cmd, sizeof(cmd), "tmux -S %s has-session >/dev/null 2>&1", tmux_sock);
	bool gone = false;
	for (int i = 0; i < 50 && !gone; i++) {
		gone = system(cmd) != 0;
		if (!gone)
			tdmt_sleep_ms(100);
	}
	assert_true(gone);
	stop_load(child, stop);
	tdmt_test_ok();
}

/* --once: one plain frame (no escape sequences) with the devices and the
 * running client; without --once and without a terminal: exit 2. */
static void test_top_once(void **state)
{
	char cmd[1024], dev[64], pid_text[32];
	int st, stop;
	(void)state;
	start();
	first_device(dev, sizeof(dev));
	pid_t child = start_load(&stop);
	snprintf(pid_text, sizeof(pid_text), " %d ", (int)child);

	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl -s %s top --once -d 0.3", tdmt_build_dir(),
	         d.sock);
	char *out = run(cmd, &st);
	assert_int_equal(st, 0);
	assert_null(strchr(out, '\033'));
	assert_non_null(strstr(out, "DEVICE"));
	assert_true(line_with(out, dev, "["));
	if (!line_with(out, pid_text, "."))
		fprintf(stderr, "%s\n", out);
	assert_true(line_with(out, pid_text, "."));
	assert_non_null(strstr(out, "clients 1 "));
	free(out);

	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl -s %s top </dev/null 2>&1", tdmt_build_dir(),
	         d.sock);
	out = run(cmd, &st);
	assert_int_equal(st, 2);
	assert_non_null(strstr(out, "--once"));
	free(out);
	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl -s %s top -d 0 --once 2>&1", tdmt_build_dir(),
	         d.sock);
	out = run(cmd, &st);
	assert_int_equal(st, 2);
	free(out);
	stop_load(child, stop);
	tdmt_test_ok();
}

#define NOBODY 65534

/* Another user's view: the devices, none of root's clients, and the note
 * that only one's own clients are shown (the status document's filter). */
static void test_top_tenancy(void **state)
{
	char dev[64], pid_text[32], exe[512];
	int stop, p[2];
	(void)state;
	if (geteuid() != 0) {
		print_message("not root, cannot run tandemctl as another user: skipped\n");
		skip();
	}
	OK(tdmt_daemon_start(&d, "[daemon]\nallowed_uids = [65534]\n[profiler]\ncalibrate = "
	                         "false\n"));
	first_device(dev, sizeof(dev));
	pid_t child = start_load(&stop); /* root's client */
	snprintf(pid_text, sizeof(pid_text), " %d ", (int)child);
	snprintf(exe, sizeof(exe), "%s/bin/tandemctl", tdmt_build_dir());

	OK(pipe2(p, O_CLOEXEC));
	pid_t viewer = fork();
	assert_true(viewer >= 0);
	if (viewer == 0) {
		if (dup2(p[1], STDOUT_FILENO) < 0 || setgroups(0, NULL) || setgid(NOBODY) ||
		    setuid(NOBODY))
			_exit(100);
		execl(exe, exe, "-s", d.sock, "top", "--once", "-d", "0.2", (char *)NULL);
		_exit(101);
	}
	close(p[1]);
	char out[16384];
	size_t len = 0;
	ssize_t n;
	while (len + 1 < sizeof(out) && (n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(p[0]);
	assert_int_equal(tdmt_wait_child(viewer, 30000), 0);
	if (!strstr(out, "(your own clients only"))
		fprintf(stderr, "%s\n", out);
	assert_true(line_with(out, dev, "["));
	assert_false(line_with(out, pid_text, "."));
	assert_non_null(strstr(out, "(no clients)"));
	assert_non_null(strstr(out, "(your own clients only"));
	stop_load(child, stop);
	tdmt_test_ok();
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)
	const struct CMUnitTest tests[] = { T(test_top_in_tmux), T(test_top_once),
		                            T(test_top_tenancy) };
	return cmocka_run_group_tests_name("top", tests, NULL, NULL);
}
