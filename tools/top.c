/* tandemctl top: a live view of tandemd, like nvidia-smi or htop: per
 * device busy %, tasks/s, tasks staged and memory; per client its share of
 * the device time, graphs and tasks. Plain ANSI escapes (no curses): the
 * alternate screen, redrawn every interval and at once on a resize; q
 * quits. The figures are the status document's (tandemctl status), so a
 * user who is not an administrator sees only their own clients; the rates
 * are differences between two documents over the daemon's own clock. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tandem.h"
#include "tools/tandemctl.h"

#define TOP_MIN_WIDTH 40
#define TOP_MIN_HEIGHT 8
#define TOP_BAR_WIDTH 20

static volatile sig_atomic_t resized, stopped;

static void on_winch(int sig)
{
	(void)sig;
	resized = 1;
}

static void on_stop(int sig)
{
	(void)sig;
	stopped = 1;
}

/* One frame, line by line, each cut to the width. */
struct frame {
	char **lines;
	size_t n, cap;
	int width;
};

__attribute__((format(printf, 2, 3))) static void line(struct frame *f, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (f->width > 0 && (size_t)f->width < sizeof(buf))
		buf[f->width] = '\0';
	if (f->n == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 64;
		char **l = realloc(f->lines, cap * sizeof(*l));
		if (!l)
			return;
		f->lines = l;
		f->cap = cap;
	}
	f->lines[f->n] = strdup(buf);
	if (f->lines[f->n])
		f->n++;
}

static void frame_free(struct frame *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->lines[i]);
	free(f->lines);
	memset(f, 0, sizeof(*f));
}

static json_int_t num(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *str(const json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : "";
}

/* The element of arr (devices, clients) whose key equals that of x. */
static const json_t *find_by(const json_t *arr, const char *key, const json_t *x)
{
	size_t i;
	const json_t *e;
	json_array_foreach(arr, i, e) if (json_equal(json_object_get(e, key),
	                                             json_object_get(x, key))) return e;
	return NULL;
}

/* A counter's growth per second between two documents (0 without the
 * earlier one, or when it went down: a restarted daemon). */
static double rate(const json_t *now, const json_t *before, const char *key, double dt)
{
	if (!before || dt <= 0)
		return 0;
	json_int_t d = num(now, key) - num(before, key);
	return d > 0 ? (double)d / dt : 0;
}

static void bar(char *out, double frac)
{
	int n = (int)(frac * TOP_BAR_WIDTH + 0.5);
	n = n < 0 ? 0 : n > TOP_BAR_WIDTH ? TOP_BAR_WIDTH : n;
	out[0] = '[';
	for (int i = 0; i < TOP_BAR_WIDTH; i++)
		out[1 + i] = i < n ? '|' : ' ';
	out[1 + TOP_BAR_WIDTH] = ']';
	out[2 + TOP_BAR_WIDTH] = '\0';
}

static void fmt_mem(char *out, size_t len, const json_t *d)
{
	if (!json_object_get(d, "mem_cap"))
		snprintf(out, len, "-");
	else
		snprintf(out, len, "%.0f/%.0f MiB", (double)num(d, "mem_used") / 1048576.0,
		         (double)num(d, "mem_cap") / 1048576.0);
}

static void fmt_uptime(char *out, size_t len, double s)
{
	long t = (long)s;
	if (t >= 86400)
		snprintf(out, len, "%ldd %02ld:%02ld:%02ld", t / 86400, t / 3600 % 24, t / 60 % 60,
		         t % 60);
	else
		snprintf(out, len, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

/* The frame for document now (before: the one an interval earlier, may be
 * NULL), at most height lines when height > 0. */
static void render(struct frame *f, const json_t *now, const json_t *before, int height)
{
	const json_t *cnow = json_object_get(now, "counters");
	const json_t *cbefore = before ? json_object_get(before, "counters") : NULL;
	double dt = before ? json_real_value(json_object_get(now, "uptime_s")) -
	                             json_real_value(json_object_get(before, "uptime_s"))
	                   : 0;
	const json_t *devs = json_object_get(now, "devices");
	const json_t *clients = json_object_get(now, "clients");
	char up[32], b[TOP_BAR_WIDTH + 4], mem[48];
	size_t i;
	const json_t *d, *c;
	double busy_total = 0; /* device time of every device over dt, in ns */

	fmt_uptime(up, sizeof(up), json_real_value(json_object_get(now, "uptime_s")));
	line(f, "tandemd pid %lld  policy %s%s  up %s%s", (long long)num(now, "pid"),
	     str(now, "policy"),
	     json_is_true(json_object_get(now, "policy_fallback")) ? " (fifo fallback)" : "", up,
	     json_is_true(json_object_get(now, "draining")) ? "  DRAINING" : "");
	line(f,
	     "clients %lld  graphs %.1f/s  tasks %.1f/s  queued %lld  in flight %lld  "
	     "rejected %lld",
	     (long long)num(cnow, "clients"), rate(cnow, cbefore, "graphs_done", dt),
	     rate(cnow, cbefore, "tasks_done", dt), (long long)num(cnow, "queued"),
	     (long long)num(cnow, "tasks_in_flight"), (long long)num(cnow, "graphs_rejected"));
	line(f, "%s", "");
	line(f, "%-9s %-6s %6s %-*s %9s %6s %5s %s", "DEVICE", "KIND", "BUSY%", TOP_BAR_WIDTH + 2,
	     "", "TASKS/S", "STAGED", "OK", "MEMORY");
	json_array_foreach(devs, i, d)
	{
		const json_t *old =
		        before ? find_by(json_object_get(before, "devices"), "index", d) : NULL;
		double busy = old && dt > 0 ? (double)(num(d, "busy_ns") - num(old, "busy_ns")) : 0;
		/* Kernels that overlap on one device (PoCL's CPU device runs several
		 * at once) add up to more than the wall time: shown as 100 %. */
		double frac = dt > 0 ? busy / (dt * 1e9) : 0;
		frac = frac > 1 ? 1 : frac;
		busy_total += busy > 0 ? busy : 0;
		bar(b, frac);
		fmt_mem(mem, sizeof(mem), d);
		line(f, "%-9s %-6s %6.1f %s %9.1f %6lld %5s %s", str(d, "name"), str(d, "kind"),
		     100.0 * frac, b, rate(d, old, "tasks_run", dt), (long long)num(d, "staged"),
		     json_is_true(json_object_get(d, "healthy")) ? "yes" : "NO", mem);
	}
	line(f, "%s", "");
	line(f, "%-8s %-8s %-6s %6s %9s %11s %10s %9s %7s %8s", "SESSION", "PID", "UID", "SHARE%",
	     "TASKS/S", "GRAPHS_DONE", "GRAPHS_NOW", "TASKS_NOW", "BUFFERS", "MEM_MIB");
	size_t shown = 0, nclients = json_array_size(clients);
	json_array_foreach(clients, i, c)
	{
		/* Room for the last line ("N more"). */
		if (height > 0 && f->n + 1 >= (size_t)height && shown + 1 < nclients)
			break;
		const json_t *old =
		        before ? find_by(json_object_get(before, "clients"), "session", c) : NULL;
		double busy = old ? (double)(num(c, "busy_ns") - num(old, "busy_ns")) : 0;
		line(f, "%-8lld %-8lld %-6lld %6.1f %9.1f %11lld %10lld %9lld %7lld %8.1f",
		     (long long)num(c, "session"), (long long)num(c, "pid"),
		     (long long)num(c, "uid"),
		     busy_total > 0 && busy > 0 ? 100.0 * busy / busy_total : 0.0,
		     rate(c, old, "tasks_done", dt), (long long)num(c, "graphs_done"),
		     (long long)num(c, "graphs_in_flight"), (long long)num(c, "tasks_in_flight"),
		     (long long)num(c, "buffers"), (double)num(c, "buffer_bytes") / 1048576.0);
		shown++;
	}
	if (shown < nclients)
		line(f, "... %zu more clients", nclients - shown);
	if (!nclients)
		line(f, "(no clients)");
	if (json_is_false(json_object_get(now, "all_clients")))
		line(f, "(your own clients only: other users' are shown to administrators)");
}

static json_t *sample(const char *path)
{
	char *text = fetch_document(path, TDM_MSG_CTL_STATUS);
	if (!text)
		return NULL;
	json_error_t err;
	json_t *doc = json_loads(text, 0, &err);
	free(text);
	if (!doc)
		fprintf(stderr, "tandemctl: bad document: %s\n", err.text);
	return doc;
}

static void terminal_size(int *w, int *h)
{
	struct winsize ws;
	*w = 80;
	*h = 24;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
		*w = ws.ws_col;
		*h = ws.ws_row;
	}
	*w = *w < TOP_MIN_WIDTH ? TOP_MIN_WIDTH : *w;
	*h = *h < TOP_MIN_HEIGHT ? TOP_MIN_HEIGHT : *h;
}

/* Home, each line cleared to its end, the rest of the screen cleared. */
static void draw(const json_t *now, const json_t *before, double interval)
{
	struct frame f = { 0 };
	int w, h;
	terminal_size(&w, &h);
	f.width = w;
	render(&f, now, before, h - 1);
	fputs("\033[H", stdout);
	for (size_t i = 0; i < f.n && i + 1 < (size_t)h; i++)
		printf("%s\033[K\n", f.lines[i]);
	printf("\033[7m q: quit   every %.1f s \033[0m\033[J", interval);
	fflush(stdout);
	frame_free(&f);
}

static int run_once(const char *path, double interval)
{
	json_t *before = sample(path);
	if (!before)
		return 1;
	struct timespec ts = { (time_t)interval,
		               (long)((interval - (double)(time_t)interval) * 1e9) };
	nanosleep(&ts, NULL);
	json_t *now = sample(path);
	if (!now) {
		json_decref(before);
		return 1;
	}
	struct frame f = { 0 };
	render(&f, now, before, 0);
	for (size_t i = 0; i < f.n; i++)
		printf("%s\n", f.lines[i]);
	frame_free(&f);
	json_decref(before);
	json_decref(now);
	return 0;
}

int cmd_top(const char *path, double interval, bool once)
{
	if (once)
		return run_once(path, interval);
	if (!isatty(STDOUT_FILENO) || !isatty(STDIN_FILENO)) {
		fprintf(stderr, "tandemctl top: not a terminal (use --once for one frame)\n");
		return 2;
	}
	json_t *before = NULL, *now = sample(path);
	if (!now)
		return 1;

	struct termios saved, raw;
	bool have_tty = tcgetattr(STDIN_FILENO, &saved) == 0;
	if (have_tty) {
		raw = saved;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	}
	struct sigaction sa = { .sa_handler = on_winch }, st = { .sa_handler = on_stop };
	sigemptyset(&sa.sa_mask);
	sigemptyset(&st.sa_mask);
	sigaction(SIGWINCH, &sa, NULL); /* no SA_RESTART: poll returns at once */
	sigaction(SIGINT, &st, NULL);
	sigaction(SIGTERM, &st, NULL);
	sigaction(SIGHUP, &st, NULL);
	fputs("\033[?1049h\033[?25l\033[2J", stdout); /* alternate screen, no cursor */

	int rc = 0;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	draw(now, before, interval);
	while (!stopped) {
		next.tv_sec += (time_t)interval;
		next.tv_nsec += (long)((interval - (double)(time_t)interval) * 1e9);
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		bool refresh = false;
		while (!stopped && !refresh) {
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			long ms = (long)(next.tv_sec - t.tv_sec) * 1000 +
			          (next.tv_nsec - t.tv_nsec) / 1000000;
			if (ms <= 0)
				break;
			struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
			int n = poll(&p, 1, (int)ms);
			if (resized) {
				resized = 0;
				fputs("\033[2J", stdout);
				draw(now, before, interval);
			}
			if (n > 0) {
				char keys[32];
				ssize_t got = read(STDIN_FILENO, keys, sizeof(keys));
				if (got <= 0) /* the terminal went away */
					stopped = 1;
				for (ssize_t k = 0; k < got; k++) {
					if (keys[k] == 'q' || keys[k] == 'Q')
						stopped = 1;
					else if (keys[k] == ' ')
						refresh = true; /* sample now */
				}
			}
		}
		if (stopped)
			break;
		json_t *next_doc = sample(path);
		if (!next_doc) {
			rc = 1;
			break;
		}
		json_decref(before);
		before = now;
		now = next_doc;
		draw(now, before, interval);
	}

	fputs("\033[?25h\033[?1049l", stdout);
	fflush(stdout);
	if (have_tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (rc)
		fprintf(stderr, "tandemctl top: lost the daemon at %s\n", path);
	json_decref(before);
	json_decref(now);
	return rc;
}
