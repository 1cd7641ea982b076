/* /metrics ([metrics] listen): a scrape taken while a client runs graphs is
 * clean for `promtool check metrics` (skipped with a message where promtool
 * is absent), counters move by exactly the work done between two scrapes,
 * rejected graphs are counted by field, no client is named, and the HTTP
 * side is bounded (GET /metrics only, headers capped, connections capped).
 * Each test runs its own daemon. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
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
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <dirent.h>

#include <cmocka.h>

#include "support.h"

#define MS (1000000ll)
#define OK(x) assert_int_equal((x), 0)
#define HTTP_MAX (4u << 20)

static struct tdmt_daemon d;

static const char base_toml[] = "[profiler]\n"
                                "calibrate = false\n"
                                "[metrics]\n"
                                "listen = \"127.0.0.1:0\"\n"
                                "max_connections = 2\n";

static int test_teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&d, 0);
}

/* Where the daemon serves /metrics (status "metrics_listen"). */
static void metrics_address(char *out, size_t len)
{
	json_t *doc = tdmt_status_doc(d.sock);
	assert_non_null(doc);
	const char *a = json_string_value(json_object_get(doc, "metrics_listen"));
	assert_non_null(a);
	snprintf(out, len, "%s", a);
	json_decref(doc);
}

/* A connected socket to addr ("a.b.c.d:port" or "unix:/path"), blocking. */
static int connect_to(const char *addr)
{
	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", addr + 5);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct sockaddr_in sa = { .sin_family = AF_INET,
		                  .sin_port = htons((uint16_t)atoi(colon + 1)) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads the reply until the peer closes (or timeout_ms of silence):
 * malloc'd, NUL-terminated; NULL when nothing came. */
static char *read_reply(int fd, int timeout_ms)
{
	size_t len = 0;
	char *buf = malloc(HTTP_MAX + 1);
	assert_non_null(buf);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		ssize_t n = recv(fd, buf + len, HTTP_MAX - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == HTTP_MAX)
			break;
	}
	if (!len) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

struct reply {
	int status; /* 0: no reply */
	char *text; /* the whole reply, headers included */
	const char *body;
};

static struct reply http(const char *addr, const char *request)
{
	struct reply r = { 0 };
	int fd = connect_to(addr);
	assert_true(fd >= 0);
	OK(send_all(fd, request, strlen(request)));
	r.text = read_reply(fd, 5000);
	close(fd);
	if (r.text && sscanf(r.text, "HTTP/1.%*d %d", &r.status) != 1)
		r.status = -1;
	const char *b = r.text ? strstr(r.text, "\r\n\r\n") : NULL;
	r.body = b ? b + 4 : "";
	return r;
}

static struct reply scrape(const char *addr)
{
	struct reply r =
	        http(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	if (r.status != 200)
		fprintf(stderr, "scrape: %s\n", r.text ? r.text : "(no reply)");
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.text, "Content-Type: text/plain; version=0.0.4"));
	return r;
}

/* The sum of every sample of metric name (any labels, or those containing
 * match when match is not NULL). */
static double metric_sum(const char *body, const char *name, const char *match)
{
	double sum = 0;
	size_t n = strlen(name);
	for (const char *l = body; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (strncmp(l, name, n) || (l[n] != ' ' && l[n] != '{'))
			continue;
		const char *end = strchr(l, '\n');
		const char *sp = l + n;
		if (l[n] == '{') {
			const char *close = strchr(l, '}');
			assert_non_null(close);
			if (match) {
				char labels[512];
				snprintf(labels, sizeof(labels), "%.*s", (int)(close - l), l);
				if (!strstr(labels, match))
					continue;
			}
			sp = close + 1;
		} else if (match) {
			continue;
		}
		assert_true(!end || sp < end);
		sum += strtod(sp, NULL);
	}
	return sum;
}

/* promtool check metrics on the text: 0 clean, 1 problems (printed), -1
 * promtool absent. */
static int promtool_check(const char *text)
{
	if (system("command -v promtool >/dev/null 2>&1") != 0)
		return -1;
	char path[] = "/tmp/tdmt-metrics.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char line[512];
	while (fgets(line, sizeof(line), p))
		fprintf(stderr, "promtool: %s", line);
	int st = pclose(p);
	unlink(path);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

/* ---- a client under load ---------------------------------------------------- */

enum { CHILD_OK = 0, CHILD_CONNECT = 10, CHILD_SETUP, CHILD_SUBMIT, CHILD_WAIT };

/* Runs graphs of spin and noop tasks until its stdin (a pipe) closes. */
static int load_child(int stop_fd)
{
	tdm_client *c;
	struct tdmt_kernels k;
	if (tdmt_connect(d.sock, &c) || tdmt_lookup_kernels(c, &k))
		return CHILD_CONNECT;
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return CHILD_SETUP;
	for (int i = 0; i < 6; i++)
		if (tdmt_add_spin(g, &k, 200, NULL) || tdmt_add_noop(g, &k, NULL))
			return CHILD_SETUP;
	for (;;) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
		if (tdm_graph_submit(g))
			return CHILD_SUBMIT;
		if (tdm_wait(g, 30000 * MS))
			return CHILD_WAIT;
	}
	tdm_graph_free(g);
	tdm_disconnect(c);
	return CHILD_OK;
}

static pid_t start_load(int *stop)
{
	pid_t pid = tdmt_fork_stoppable(load_child, stop);
	assert_true(pid >= 0);
	return pid;
}

static void stop_load(pid_t pid, int stop)
{
	assert_int_equal(tdmt_stop_child(pid, stop, 60000), CHILD_OK);
}

/* ---- tests -------------------------------------------------------------------- */

/* Scrapes while a client runs graphs: each is well-formed for promtool,
 * shows the families the operator relies on, names no client, and the
 * running client is counted. */
static void test_scrape_under_load(void **state)
{
	char addr[160];
	int stop;
	(void)state;
	OK(tdmt_daemon_start(&d, base_toml));
	metrics_address(addr, sizeof(addr));
	assert_non_null(strstr(addr, "127.0.0.1:"));
	pid_t child = start_load(&stop);
	OK(tdmt_wait_counter(d.sock, "clients", 1, 10000, NULL));
	bool checked = false;
	double tasks_before = -1;
	for (int i = 0; i < 4; i++) {
		struct reply r = scrape(addr);
		static const char *const families[] = {
			"# TYPE tandem_tasks_total counter",
			"# TYPE tandem_task_queue_wait_seconds histogram",
			"# TYPE tandem_task_run_seconds histogram",
			"# TYPE tandem_tasks_queued gauge",
			"# TYPE tandem_device_tasks_staged gauge",
			"# TYPE tandem_device_busy_seconds_total counter",
			"# TYPE tandem_device_memory_used_bytes gauge",
			"# TYPE tandem_transfer_bytes_total counter",
			"# TYPE tandem_cost_model_abs_error_seconds_total counter",
			"# TYPE tandem_graphs_rejected_total counter",
			"# TYPE tandem_clients gauge",
			"# TYPE tandem_graphs_submitted_total counter",
			"# TYPE tandem_graphs_completed_total counter",
			"tandem_graphs_rejected_total{reason=\"handle\"}",
			"le=\"+Inf\"}",
		};
		for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
			if (!strstr(r.body, families[f]))
				fprintf(stderr, "missing: %s\n", families[f]);
			assert_non_null(strstr(r.body, families[f]));
		}
		/* Aggregates only: no client, session, pid or uid label. */
		assert_null(strstr(r.body, "pid="));
		assert_null(strstr(r.body, "uid="));
		assert_null(strstr(r.body, "session="));
		assert_null(strstr(r.body, "client="));
		assert_true(metric_sum(r.body, "tandem_clients", NULL) == 1);
		/* The load moves the counters between scrapes. */
		double tasks = metric_sum(r.body, "tandem_tasks_total", NULL);
		assert_true(tasks >= tasks_before);
		tasks_before = tasks;
		int rc = promtool_check(r.body);
		if (rc < 0 && i == 0)
			print_message("promtool not found (Debian package prometheus): the "
			              "exposition format check is skipped\n");
		assert_true(rc <= 0);
		checked = rc == 0;
		free(r.text);
		tdmt_sleep_ms(150);
	}
	stop_load(child, stop);
	assert_true(tasks_before > 0);
	if (checked)
		print_message("promtool check metrics: clean on 4 scrapes under load\n");
	tdmt_test_ok();
}

/* Between two scrapes, N graphs of T tasks each ran and one was rejected:
 * tasks_total grows by N * T exactly, so do the histograms' counts; graphs
 * submitted and completed by N; the rejection is counted under its field. */
static void test_counters_move(void **state)
{
	enum { N = 5, SPINS = 3, NOOPS = 4, T = SPINS + NOOPS };
	char addr[160];
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer hb;
	void *p;
	(void)state;
	OK(tdmt_daemon_start(&d, base_toml));
	metrics_address(addr, sizeof(addr));
	OK(tdmt_connect(d.sock, &c));
	OK(tdmt_lookup_kernels(c, &k));
	tdm_graph *g = tdm_graph_new(c);
	assert_non_null(g);
	for (int i = 0; i < SPINS; i++)
		OK(tdmt_add_spin(g, &k, 100, NULL));
	for (int i = 0; i < NOOPS; i++)
		OK(tdmt_add_noop(g, &k, NULL));
	/* Rejected by the daemon: its buffer is freed once the task is added. */
	tdm_graph *bad = tdm_graph_new(c);
	assert_non_null(bad);
	OK(tdm_buffer_alloc(c, 4096, 0, &hb, &p));
	OK(tdmt_add_fill(bad, &k, hb, 0, 0, 1.0f, NULL));
	OK(tdm_buffer_free(c, hb));

	struct reply a = scrape(addr);
	for (int i = 0; i < N; i++) {
		OK(tdm_graph_submit(g));
		OK(tdm_wait(g, 30000 * MS));
	}
	OK(tdm_graph_submit(bad));
	assert_int_equal(tdm_wait(bad, 30000 * MS), -TDM_EHANDLE);
	struct reply b = scrape(addr);

	static const char *const by_task[] = { "tandem_tasks_total",
		                               "tandem_task_run_seconds_count",
		                               "tandem_task_queue_wait_seconds_count" };
	for (size_t i = 0; i < sizeof(by_task) / sizeof(by_task[0]); i++) {
		double before = metric_sum(a.body, by_task[i], NULL);
		double after = metric_sum(b.body, by_task[i], NULL);
		if (after - before != N * T)
			fprintf(stderr, "%s: %.0f -> %.0f\n", by_task[i], before, after);
		assert_true(after - before == N * T);
	}
	assert_true(metric_sum(b.body, "tandem_tasks_total", "kernel=\"spin\"") -
	                    metric_sum(a.body, "tandem_tasks_total", "kernel=\"spin\"") ==
	            N * SPINS);
	assert_true(metric_sum(b.body, "tandem_graphs_completed_total", NULL) -
	                    metric_sum(a.body, "tandem_graphs_completed_total", NULL) ==
	            N);
	assert_true(metric_sum(b.body, "tandem_graphs_submitted_total", NULL) -
	                    metric_sum(a.body, "tandem_graphs_submitted_total", NULL) ==
	            N);
	assert_true(
	        metric_sum(b.body, "tandem_graphs_rejected_total", "reason=\"handle\"") -
	                metric_sum(a.body, "tandem_graphs_rejected_total", "reason=\"handle\"") ==
	        1);
	assert_true(metric_sum(b.body, "tandem_graphs_rejected_total", NULL) -
	                    metric_sum(a.body, "tandem_graphs_rejected_total", NULL) ==
	            1);
	/* Device time moved too (the spins ran 100 us each at least). */
	assert_true(metric_sum(b.body, "tandem_device_busy_seconds_total", NULL) -
	                    metric_sum(a.body, "tandem_device_busy_seconds_total", NULL) >=
	            N * SPINS * 100e-6);
	free(a.text);
	free(b.text);
	tdm_graph_free(g);
	tdm_graph_free(bad);
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* Only GET /metrics is served; oversized headers are refused; the daemon
 * keeps serving. */
static void test_http_bounds(void **state)
{
	char addr[160];
	(void)state;
	OK(tdmt_daemon_start(&d, base_toml));
	metrics_address(addr, sizeof(addr));

	struct reply r = http(addr, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(r.status, 404);
	free(r.text);
	r = http(addr, "GET /metricsx HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
	assert_int_equal(r.status, 404);
	free(r.text);
	r = http(addr, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
	               "Connection: close\r\n\r\n");
	assert_true(r.status >= 400 && r.status < 600);
	free(r.text);
	/* 16 KiB of headers against a cap of 8 KiB: refused or cut off. */
	size_t big = 16384;
	char *req = malloc(big + 128);
	assert_non_null(req);
	int n = snprintf(req, big + 128, "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: ");
	memset(req + n, 'a', big);
	strcpy(req + n + big, "\r\nConnection: close\r\n\r\n");
	r = http(addr, req);
	assert_true(r.status == 0 || r.status >= 400);
	free(r.text);
	free(req);

	r = scrape(addr);
	free(r.text);
	assert_true(tdmt_daemon_alive(&d));
	tdmt_test_ok();
}

/* Sockets open in the daemon (its /proc/PID/fd entries that are sockets). */
static int daemon_sockets(void)
{
	char dir[64], path[512], target[64];
	int n = 0;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)d.pid);
	DIR *dp = opendir(dir);
	assert_non_null(dp);
	struct dirent *e;
	while ((e = readdir(dp))) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ssize_t len = readlink(path, target, sizeof(target) - 1);
		if (len > 0) {
			target[len] = '\0';
			n += !strncmp(target, "socket:", 7);
		}
	}
	closedir(dp);
	return n;
}

/* max_connections = 2: with two connections open and silent, a third is
 * not served until one of them closes. */
static void test_connection_cap(void **state)
{
	char addr[160];
	(void)state;
	OK(tdmt_daemon_start(&d, base_toml));
	metrics_address(addr, sizeof(addr));
	/* Settled: the status connection above is closed on the daemon's side. */
	int base = daemon_sockets();
	for (int i = 0; i < 100; i++) {
		tdmt_sleep_ms(20);
		int now = daemon_sockets();
		if (now == base)
			break;
		base = now;
	}
	int idle1 = connect_to(addr), idle2 = connect_to(addr);
	assert_true(idle1 >= 0 && idle2 >= 0);
	/* Both accepted: the daemon holds two more sockets. */
	uint64_t t0 = tdmt_now_ns();
	while (daemon_sockets() < base + 2 && tdmt_now_ns() - t0 < 5000 * MS)
		tdmt_sleep_ms(5);
	assert_int_equal(daemon_sockets(), base + 2);

	int third = connect_to(addr); /* the kernel's backlog takes it */
	assert_true(third >= 0);
	const char *req = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	OK(send_all(third, req, strlen(req)));
	char *none = read_reply(third, 300);
	assert_null(none);
	close(idle1);
	char *text = read_reply(third, 5000);
	assert_non_null(text);
	assert_non_null(strstr(text, "HTTP/1.1 200"));
	free(text);
	close(third);
	close(idle2);
	/* And the cap frees up again. */
	struct reply r = scrape(addr);
	free(r.text);
	tdmt_test_ok();
}

/* A Unix socket endpoint: served there, removed when the daemon stops. */
static void test_unix_socket(void **state)
{
	char toml[512], path[160], addr[160];
	(void)state;
	OK(tdmt_daemon_prepare(&d, ""));
	snprintf(path, sizeof(path), "%s/metrics.sock", d.dir);
	snprintf(toml, sizeof(toml),
	         "[profiler]\ncalibrate = false\n[metrics]\nlisten = \"unix:%s\"\n", path);
	OK(tdmt_daemon_write_config(&d, toml));
	if (tdmt_daemon_launch(&d, d.sock, 30000) != 0) {
		tdmt_daemon_dump_log(&d);
		fail_msg("tandemd did not start");
	}
	metrics_address(addr, sizeof(addr));
	assert_true(!strncmp(addr, "unix:", 5));
	assert_string_equal(addr + 5, path);
	struct reply r = scrape(addr);
	assert_non_null(strstr(r.body, "tandem_uptime_seconds "));
	free(r.text);
	assert_int_equal(tdmt_daemon_stop(&d, 10000), 0);
	assert_int_equal(access(path, F_OK), -1);
	tdmt_test_ok();
}

/* Off by default: nothing listens, status says "". */
static void test_off_by_default(void **state)
{
	char addr[160];
	(void)state;
	OK(tdmt_daemon_start(&d, "[profiler]\ncalibrate = false\n"));
	metrics_address(addr, sizeof(addr));
	assert_string_equal(addr, "");
	assert_false(tdmt_log_contains(&d, "metrics:"));
	tdmt_test_ok();
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, tdmt_test_setup, test_teardown)
	const struct CMUnitTest tests[] = {
		T(test_scrape_under_load), T(test_counters_move), T(test_http_bounds),
		T(test_connection_cap),    T(test_unix_socket),   T(test_off_by_default),
	};
	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
