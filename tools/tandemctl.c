/* tandemctl: look at a running tandemd through its control channel. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/size.h"
#include "tandem.h"
#include "tools/tandemctl.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: tandemctl [--socket PATH] [--json] COMMAND [ARGS] [OPTIONS]\n"
	             "Shows and steers a running tandemd.\n"
	             "\n"
	             "Commands:\n"
	             "  status    devices, clients, queue depth and counters\n"
	             "  devices   the devices tandemd schedules on\n"
	             "  clients   connected clients and what they hold\n"
	             "  buffers   each client buffer and the memory nodes holding a valid copy\n"
	             "  moe       the llm policy's MoE split: per layer experts looked up,\n"
	             "            hit rate on the accelerator, where they ran, bytes loaded;\n"
	             "            and whether the resident experts pay for this routing\n"
	             "  models    each cost model: samples, sizes seen, estimates, spread and\n"
	             "            recent prediction error (median over the last 32, relative\n"
	             "            and absolute, and the median time they took)\n"
	             "  calibrate measure the devices and links again (about a second, under\n"
	             "            the current load) and print the figures\n"
	             "  calibrate --export [-o FILE]\n"
	             "            print (or write to FILE) a machine description of this machine\n"
	             "            in TOML, its learned cost models included, for tandemd\n"
	             "            --simulate; measures nothing\n"
	             "  top [-d SECONDS] [--once]\n"
	             "            a live view: per device busy %%, tasks/s, tasks staged and\n"
	             "            memory; per client its share of device time, graphs and\n"
	             "            tasks (your own clients unless you are an administrator);\n"
	             "            q quits; --once prints one frame (rates over one interval)\n"
	             "  trace -o FILE [--chrome FILE] [--seconds N]\n"
	             "            record every graph that completes, until N seconds passed,\n"
	             "            SIGINT/SIGTERM (Ctrl-C) or the daemon stops; then write the\n"
	             "            tandem trace (JSON Lines, for replay) to FILE and the real\n"
	             "            schedule as Chrome/Perfetto trace JSON to --chrome FILE\n"
	             "\n"
	             "Devices and clients while they run (administrators; docs/elastic.md):\n"
	             "  device add NAME     put an available device (see devices) to work;\n"
	             "                      a model never calibrated is measured first\n"
	             "  device drain NAME   no new task goes there, its queued tasks move to\n"
	             "                      the others; running ones finish there\n"
	             "  device resume NAME  a draining device takes tasks again\n"
	             "  device remove NAME  drain, then remove once idle (or after a 5 s\n"
	             "                      timeout: what runs there finishes, nothing more)\n"
	             "  device budget NAME BYTES\n"
	             "                      an accelerator's memory budget (such as 512MiB);\n"
	             "                      shrinking evicts\n"
	             "  devices rescan      probe the backends again: new devices that\n"
	             "                      [devices] selects are added, others listed\n"
	             "  client weight SESSION N\n"
	             "                      a connected client's share of every device\n"
	             "                      (1 to 1000; SESSION as tandemctl clients shows)\n"
	             "  uid quota UID BYTES|default\n"
	             "                      the buffer quota of all of a user's clients\n"
	             "                      together (default: limits.uid_buffer_quota_bytes)\n"
	             "\n"
	             "Options:\n"
	             "  -s, --socket PATH   daemon socket (default: $TANDEM_SOCKET, then\n"
	             "                      $XDG_RUNTIME_DIR/tandem/tandemd.sock, or\n"
	             "                      /run/tandem/tandemd.sock for root and for a\n"
	             "                      user whose own daemon's socket is absent)\n"
	             "  -j, --json          print the daemon's JSON document as is\n"
	             "  -o, --output FILE   trace, calibrate --export: where to write\n"
	             "      --chrome FILE   trace: also write the schedule as Chrome trace JSON\n"
	             "      --seconds N     trace: stop after N seconds (default: at Ctrl-C)\n"
	             "      --export        calibrate: write the machine description instead\n"
	             "  -d, --interval SECONDS\n"
	             "                      top: refresh every SECONDS (0.1 to 3600, default 1)\n"
	             "      --once          top: print one frame and exit\n"
	             "  -h, --help          show this help\n"
	             "  -V, --version       show the version\n");
}

static int io_all(int fd, void *p, size_t n, bool sending)
{
	char *c = p;
	while (n) {
		ssize_t k = sending ? send(fd, c, n, MSG_NOSIGNAL) : recv(fd, c, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static int io_all_write(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = write(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static int request(int fd, uint32_t type, const void *p, uint32_t len, uint32_t want, char **reply,
                   uint32_t *reply_len)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	if (io_all(fd, &h, sizeof(h), true) || (len && io_all(fd, (void *)p, len, true)))
		return -1;
	if (io_all(fd, &h, sizeof(h), false) || h.type != want || h.length > TDM_CTL_REPLY_MAX)
		return -1;
	*reply = malloc(h.length + 1);
	if (!*reply || io_all(fd, *reply, h.length, false))
		return -1;
	(*reply)[h.length] = '\0';
	*reply_len = h.length;
	return 0;
}

/* Sends a request with descriptors attached (SCM_RIGHTS). */
static int send_with_fds(int fd, uint32_t type, const void *p, uint32_t len, const int *fds,
                         int nfds)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)p, len } };
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (nfds) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	ssize_t n;
	do
		n = sendmsg(fd, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)(sizeof(h) + len) ? 0 : -1;
}

/* Connects to the daemon as a control client: the socket, or -1 with a
 * message printed. */
static int control_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tdm_hello hello = { TDM_WIRE_MAGIC, TDM_WIRE_VERSION, TDM_ROLE_CONTROL, 0 };
	struct tdm_hello_reply hr;
	char *reply = NULL;
	uint32_t len;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr, "tandemctl: cannot connect to %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* Our trace and export files go to whoever listens: a tandemd only. */
	int trust = tdm_check_daemon(fd, 0);
	if (trust) {
		fprintf(stderr,
		        "tandemctl: %s: %s (set TANDEM_DAEMON_UID to the daemon's uid to trust "
		        "it)\n",
		        path, tdm_strerror(trust));
		close(fd);
		return -1;
	}
	if (request(fd, TDM_MSG_HELLO, &hello, sizeof(hello), TDM_MSG_HELLO_REPLY, &reply, &len) ||
	    len != sizeof(hr)) {
		fprintf(stderr, "tandemctl: %s: no valid hello reply\n", path);
		free(reply);
		close(fd);
		return -1;
	}
	memcpy(&hr, reply, sizeof(hr));
	free(reply);
	if (hr.status) {
		fprintf(stderr, "tandemctl: %s: %s\n", path, tdm_strerror(hr.status));
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads one control reply: its text (malloc'd) when the status is 0; NULL
 * with the daemon's explanation (or the status' name) printed otherwise. */
static char *read_reply(int fd, const char *path)
{
	struct tdm_msg_hdr h;
	int32_t status;
	char *reply = NULL, *text = NULL;

	if (io_all(fd, &h, sizeof(h), false) || h.type != TDM_MSG_CTL_REPLY ||
	    h.length > TDM_CTL_REPLY_MAX || h.length < sizeof(status) ||
	    !(reply = malloc(h.length + 1)) || io_all(fd, reply, h.length, false)) {
		fprintf(stderr, "tandemctl: %s: no valid reply\n", path);
		free(reply);
		return NULL;
	}
	reply[h.length] = '\0';
	memcpy(&status, reply, sizeof(status));
	if (status) {
		/* An explanation comes as {"error": "..."} where there is one. */
		json_t *doc = json_loads(reply + sizeof(status), 0, NULL);
		const char *why = json_string_value(json_object_get(doc, "error"));
		fprintf(stderr, "tandemctl: %s\n", why ? why : tdm_strerror(status));
		json_decref(doc);
	} else {
		text = strdup(reply + sizeof(status));
	}
	free(reply);
	return text;
}

/* Sends one control request (len bytes of req after the header; none for
 * a document); the reply's text, or NULL with the daemon's explanation
 * printed. */
static char *control_request(const char *path, uint32_t type, const void *req, uint32_t len)
{
	int fd = control_connect(path);
	if (fd < 0)
		return NULL;
	char *text = NULL;
	struct tdm_msg_hdr h = { .type = type, .length = len };
	if (io_all(fd, &h, sizeof(h), true) || io_all(fd, (void *)req, len, true))
		fprintf(stderr, "tandemctl: %s: cannot send the request\n", path);
	else
		text = read_reply(fd, path);
	close(fd);
	return text;
}

char *fetch_document(const char *path, uint32_t type)
{
	return control_request(path, type, NULL, 0);
}

static json_int_t num(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *str(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	return v ? v : "";
}

static void print_devices(json_t *doc)
{
	size_t i;
	json_t *d;
	printf("%-5s %-8s %-6s %-7s %-9s %4s %4s %8s %9s %10s %11s %s\n", "INDEX", "NAME", "KIND",
	       "BACKEND", "STATE", "CPU", "NODE", "HEALTHY", "TASKS", "BUSY_MS", "MEM_MIB",
	       "MODEL");
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		char mem[32] = "-";
		if (json_object_get(d, "mem_cap"))
			snprintf(mem, sizeof(mem), "%.1f/%.0f",
			         (double)num(d, "mem_used") / 1048576.0,
			         (double)num(d, "mem_cap") / 1048576.0);
		printf("%-5lld %-8s %-6s %-7s %-9s %4lld %4lld %8s %9lld %10.1f %11s %s\n",
		       (long long)num(d, "index"), str(d, "name"), str(d, "kind"),
		       str(d, "backend"), json_object_get(d, "state") ? str(d, "state") : "active",
		       (long long)num(d, "cpu"), (long long)num(d, "node"),
		       json_is_true(json_object_get(d, "healthy")) ? "yes" : "NO",
		       (long long)num(d, "tasks_run"), (double)num(d, "busy_ns") / 1e6, mem,
		       str(d, "model"));
	}
	/* Found but not in use: `tandemctl device add NAME` puts one to work. */
	json_array_foreach(json_object_get(doc, "available"), i, d)
	        printf("%-5s %-8s %-6s %-7s %-9s %4lld %4s %8s %9s %10s %11s %s\n", "-",
	               str(d, "name"), str(d, "kind"), str(d, "backend"), "available",
	               (long long)num(d, "cpu"), "-", "-", "-", "-", "-", str(d, "model"));
}

/* tandemctl moe: the status document's "moe" (policies/llm_moe.h). */
static void print_moe(const json_t *doc)
{
	const json_t *moe = json_object_get(doc, "moe"), *l;
	size_t i;

	if (!json_is_object(moe)) {
		printf("no MoE split: the policy is not llm, or it has no accelerator\n");
		return;
	}
	printf("%5s %9s %9s %6s %8s %8s %7s %12s\n", "layer", "lookups", "hits", "hit%", "on_cpu",
	       "on_accel", "loads", "load_bytes");
	json_array_foreach(json_object_get(moe, "layers"), i, l)
	{
		printf("%5lld %9lld %9lld %6.1f %8lld %8lld %7lld %12lld\n",
		       (long long)json_integer_value(json_object_get(l, "layer")),
		       (long long)json_integer_value(json_object_get(l, "lookups")),
		       (long long)json_integer_value(json_object_get(l, "hits")),
		       json_real_value(json_object_get(l, "hit_pct")),
		       (long long)json_integer_value(json_object_get(l, "on_cpu")),
		       (long long)json_integer_value(json_object_get(l, "on_accel")),
		       (long long)json_integer_value(json_object_get(l, "loads")),
		       (long long)json_integer_value(json_object_get(l, "load_bytes")));
	}
	printf("expert cache: %lld of %lld experts held, %lld admitted\n",
	       (long long)json_integer_value(json_object_get(moe, "cached")),
	       (long long)json_integer_value(json_object_get(moe, "cache_cap")),
	       (long long)json_integer_value(json_object_get(moe, "cache_admits")));
	printf("accelerator budget %lld B: KV and other data %lld B, expert weights %lld B "
	       "(experts get 3/4 of the budget less the KV); %lld experts let go as it shrank, "
	       "%lld still to unhome\n",
	       (long long)json_integer_value(json_object_get(moe, "budget_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "kv_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "expert_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "budget_evictions")),
	       (long long)json_integer_value(json_object_get(moe, "unhome_pending")));
	printf("next-layer prefetch: %lld copies, %lld B; used %lld B, wasted %lld B, %lld "
	       "overtaken by their router\n",
	       (long long)json_integer_value(json_object_get(moe, "prefetches")),
	       (long long)json_integer_value(json_object_get(moe, "prefetch_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "prefetch_used_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "prefetch_wasted_bytes")),
	       (long long)json_integer_value(json_object_get(moe, "prefetch_late")));
	double saved = json_real_value(json_object_get(moe, "saved_ns"));
	double load = json_real_value(json_object_get(moe, "load_ns"));
	printf("splits %lld; resident experts saved %.3f ms (predicted), loads took %.3f ms of "
	       "link: %s\n",
	       (long long)json_integer_value(json_object_get(moe, "splits")), saved / 1e6,
	       load / 1e6,
	       saved == 0 && load == 0 ? "no expert held on the accelerator yet"
	       : json_is_true(json_object_get(moe, "cache_pays"))
	               ? "the cache pays for this routing"
	               : "the cache does not pay for this routing");
}

static void print_clients(json_t *doc)
{
	size_t i;
	json_t *c;
	if (json_is_false(json_object_get(doc, "all_clients")))
		printf("(your own clients only: other users' are shown to administrators)\n");
	printf("%-8s %-8s %-6s %6s %-8s %8s %14s %8s %10s\n", "SESSION", "PID", "UID", "WEIGHT",
	       "POLICY", "BUFFERS", "BUFFER_BYTES", "GRAPHS", "TASKS");
	json_array_foreach(json_object_get(doc, "clients"), i, c)
	        printf("%-8lld %-8lld %-6lld %6lld %-8s %8lld %14lld %8lld %10lld\n",
	               (long long)num(c, "session"), (long long)num(c, "pid"),
	               (long long)num(c, "uid"), (long long)num(c, "weight"), str(c, "policy_hint"),
	               (long long)num(c, "buffers"), (long long)num(c, "buffer_bytes"),
	               (long long)num(c, "graphs_in_flight"), (long long)num(c, "tasks_in_flight"));
}

/* Where each buffer's valid copies are (by byte range): * marks a node
 * that alone holds some bytes (owner), ~ one that holds part only. */
static void print_replicas(json_t *doc)
{
	size_t i, j;
	json_t *c, *b;
	printf("%-8s %-10s %14s %s\n", "SESSION", "BUFFER", "BYTES",
	       "VALID_ON (* = owner, ~ = part)");
	json_array_foreach(json_object_get(doc, "clients"), i, c)
	{
		json_array_foreach(json_object_get(c, "replicas"), j, b)
		{
			/* A growable (KV) buffer: its use, then what is backed of
			 * its capacity. */
			bool growable = json_object_get(b, "used") != NULL;
			printf("%-8lld %-10lld %14lld %s", (long long)num(c, "session"),
			       (long long)num(b, "handle"),
			       (long long)num(b, growable ? "used" : "bytes"), str(b, "valid"));
			if (growable)
				printf(" (growable: %lld backed of %lld)",
				       (long long)num(b, "backed"), (long long)num(b, "bytes"));
			printf("\n");
		}
	}
}

static void print_status(json_t *doc)
{
	const char *key;
	json_t *v;
	printf("tandemd pid %lld on %s, policy %s, up %.1f s%s\n", (long long)num(doc, "pid"),
	       json_string_value(json_object_get(doc, "socket")),
	       json_string_value(json_object_get(doc, "policy")),
	       json_real_value(json_object_get(doc, "uptime_s")),
	       json_is_true(json_object_get(doc, "draining")) ? " (draining)" : "");
	if (json_is_true(json_object_get(doc, "policy_fallback")))
		printf("the policy misbehaved: the watchdog replaced it with fifo (see the log)\n");
	printf("\nDevices\n");
	print_devices(doc);
	printf("\nClients\n");
	print_clients(doc);
	printf("\nBuffers\n");
	print_replicas(doc);
	printf("\nCounters\n");
	json_object_foreach(json_object_get(doc, "counters"), key, v)
	{
		if (!json_is_object(v)) {
			printf("  %-20s %lld\n", key, (long long)json_integer_value(v));
			continue;
		}
		/* rejected_by_field: the fields that rejected graphs */
		const char *field;
		json_t *n;
		json_object_foreach(v, field, n)
		{
			if (json_integer_value(n))
				printf("  %-20s %lld (%s)\n", key, (long long)json_integer_value(n),
				       field);
		}
	}
}

static double real(json_t *o, const char *key)
{
	return json_number_value(json_object_get(o, key));
}

/* Time in the unit that reads best. */
static const char *fmt_ns(double ns, char *buf, size_t len)
{
	if (ns >= 1e9)
		snprintf(buf, len, "%.2f s", ns / 1e9);
	else if (ns >= 1e6)
		snprintf(buf, len, "%.2f ms", ns / 1e6);
	else if (ns >= 1e3)
		snprintf(buf, len, "%.1f us", ns / 1e3);
	else
		snprintf(buf, len, "%.0f ns", ns);
	return buf;
}

/* One line per model, then one per size it has seen (most used first as the
 * daemon lists them, at most 8). The recent error is the median over the
 * model's last 32 predictions, relative and absolute (for a kernel of a
 * few microseconds the absolute error is the one that says something),
 * next to the median time they took; a daemon that does not send those
 * shows its EWMA of relative errors, and "-" for the others. */
static void print_models(json_t *doc)
{
	size_t i, j;
	json_t *m, *f;
	char a[32], b[32], c[32];
	printf("%-12s %-52s %8s %6s %9s %10s %9s %9s\n", "KERNEL", "DEVICE", "SAMPLES", "SIZES",
	       "OUTLIERS", "RECENT_ERR", "ABS_ERR", "TIME");
	json_array_foreach(json_object_get(doc, "models"), i, m)
	{
		json_t *fps = json_object_get(m, "footprints");
		json_t *med = json_object_get(m, "recent_median_err_pct");
		bool robust = json_is_number(med);
		printf("%-12s %-52s %8lld %6zu %9lld %9.1f%% %9s %9s\n", str(m, "kernel"),
		       str(m, "device"), (long long)num(m, "samples"), json_array_size(fps),
		       (long long)num(m, "outliers"),
		       robust ? json_number_value(med) : real(m, "recent_err_pct"),
		       robust ? fmt_ns(1e3 * real(m, "recent_abs_err_us"), a, sizeof(a)) : "-",
		       robust ? fmt_ns(1e3 * real(m, "recent_time_us"), c, sizeof(c)) : "-");
		json_array_foreach(fps, j, f)
		{
			if (j == 8) {
				printf("    ... %zu more sizes\n", json_array_size(fps) - 8);
				break;
			}
			printf("    flops %-10.3g bytes %-10.3g domain %-10.3g n %-5lld %s +- %s\n",
			       real(f, "flops"), real(f, "bytes"), real(f, "domain"),
			       (long long)num(f, "n"), fmt_ns(real(f, "estimate_ns"), a, sizeof(a)),
			       fmt_ns(real(f, "spread_ns"), b, sizeof(b)));
		}
	}
}

static void print_calibration(json_t *doc)
{
	size_t i;
	json_t *d, *l;
	char a[32];
	printf("calibration: %.2f s\n", real(doc, "seconds"));
	/* 0: not measured (a cache of a daemon that could not) */
	if (real(doc, "wake_ns") > 0)
		printf("a sleeping worker wakes in %s\n",
		       fmt_ns(real(doc, "wake_ns"), a, sizeof(a)));
	printf("%-52s %5s %5s %12s %12s %10s\n", "DEVICE", "COUNT", "NODE", "SGEMM_GFLOPS",
	       "MEM_GBPS", "LAUNCH");
	/* Identical devices (every core) were measured once: one line each. */
	json_t *devs = json_object_get(doc, "devices");
	json_array_foreach(devs, i, d)
	{
		size_t n = 1;
		if (i && !strcmp(str(d, "key"), str(json_array_get(devs, i - 1), "key")))
			continue;
		while (i + n < json_array_size(devs) &&
		       !strcmp(str(d, "key"), str(json_array_get(devs, i + n), "key")))
			n++;
		printf("%-52s %5zu %5lld %12.1f %12.1f %10s\n", str(d, "key"), n,
		       (long long)num(d, "node"), real(d, "gemm_gflops"), real(d, "mem_gbps"),
		       fmt_ns(real(d, "launch_ns"), a, sizeof(a)));
	}
	printf("%-4s %-4s %10s %10s %s\n", "SRC", "DST", "GB/S", "LATENCY", "MEASURED");
	json_array_foreach(json_object_get(doc, "links"), i, l)
	        printf("%-4lld %-4lld %10.2f %10s %s\n", (long long)num(l, "src"),
	               (long long)num(l, "dst"), real(l, "gbps"),
	               fmt_ns(real(l, "latency_ns"), a, sizeof(a)),
	               json_is_true(json_object_get(l, "measured")) ? "yes" : "no (derived)");
}

/* ---- trace and calibrate --export: the daemon writes into our files ---- */

/* An output: the daemon writes into regular files only (a pipe nobody
 * reads would stall it), so a terminal or a pipe gets a temporary file
 * that is copied over at the end. */
struct out_file {
	const char *name; /* for messages */
	int fd; /* the one passed to the daemon */
	int final_fd; /* where the bytes must end up when fd is a temporary; else -1 */
};

static bool regular_writable(int fd)
{
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 &&
	       S_ISREG(st.st_mode);
}

/* path NULL or "-": standard output. */
static int out_open(struct out_file *o, const char *path)
{
	bool to_stdout = !path || !strcmp(path, "-");
	o->name = to_stdout ? "standard output" : path;
	o->final_fd = -1;
	int fd = to_stdout ? fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0)
	                   : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "tandemctl: %s: %s\n", o->name, strerror(errno));
		return -1;
	}
	if (regular_writable(fd)) {
		o->fd = fd;
		return 0;
	}
	const char *dir = getenv("TMPDIR");
	o->fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (o->fd < 0) {
		fprintf(stderr, "tandemctl: temporary file: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	o->final_fd = fd;
	return 0;
}

/* Copies a temporary into its destination; closes both. */
static int out_finish(struct out_file *o, bool copy)
{
	int rc = 0;
	if (o->final_fd >= 0 && copy) {
		char buf[65536];
		ssize_t n;
		if (lseek(o->fd, 0, SEEK_SET) != 0)
			rc = -1;
		while (!rc && (n = read(o->fd, buf, sizeof(buf))) != 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || io_all_write(o->final_fd, buf, (size_t)n)) {
				rc = -1;
				break;
			}
		}
		if (rc)
			fprintf(stderr, "tandemctl: %s: %s\n", o->name, strerror(errno));
	}
	if (o->final_fd >= 0)
		close(o->final_fd);
	close(o->fd);
	o->fd = o->final_fd = -1;
	return rc;
}

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Waits for Ctrl-C / SIGTERM, the deadline (0: none) or a reply the daemon
 * sends on its own (it stops). Returns 1 when the daemon spoke, 0 when we
 * should stop, -1 on error. SIGINT and SIGTERM are blocked outside ppoll. */
static int wait_for_stop(int fd, uint64_t deadline, const sigset_t *waitmask)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct timespec ts, *tsp = NULL;
		if (stop_signal)
			return 0;
		if (deadline) {
			uint64_t now = now_ns();
			if (now >= deadline)
				return 0;
			ts.tv_sec = (time_t)((deadline - now) / 1000000000ull);
			ts.tv_nsec = (long)((deadline - now) % 1000000000ull);
			tsp = &ts;
		}
		int k = ppoll(&pfd, 1, tsp, waitmask);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			fprintf(stderr, "tandemctl: poll: %s\n", strerror(errno));
			return -1;
		}
		if (k > 0)
			return 1;
	}
}

static void print_trace_summary(const char *text, const struct out_file *files, int nfiles)
{
	json_t *doc = json_loads(text, 0, NULL);
	printf("recorded %lld graphs, %lld tasks, %lld buffers in %.1f s\n",
	       (long long)num(doc, "graphs"), (long long)num(doc, "tasks"),
	       (long long)num(doc, "buffers"), real(doc, "seconds"));
	printf("trace: %s (%lld bytes)\n", files[0].name, (long long)num(doc, "bytes"));
	if (nfiles > 1)
		printf("chrome trace: %s (%lld bytes)\n", files[1].name,
		       (long long)num(doc, "chrome_bytes"));
	if (num(doc, "dropped"))
		printf("warning: %lld graphs dropped (the recording holds at most a million "
		       "tasks)\n",
		       (long long)num(doc, "dropped"));
	if (num(doc, "skipped"))
		printf("%lld graphs not recorded (failed or empty)\n",
		       (long long)num(doc, "skipped"));
	json_decref(doc);
}

static int cmd_trace(const char *path, const char *out, const char *chrome, double seconds,
                     bool as_json)
{
	struct out_file files[2];
	int nfiles = 0, rc = 1, fd = -1;
	char *summary = NULL;
	sigset_t block, waitmask;

	if (!out) {
		fprintf(stderr, "tandemctl: trace needs -o FILE\n");
		return 2;
	}
	if (out_open(&files[0], out) != 0)
		return 1;
	nfiles = 1;
	if (chrome) {
		if (out_open(&files[1], chrome) != 0)
			goto out;
		nfiles = 2;
	}
	/* Ctrl-C and SIGTERM end the recording properly: they are only taken
	 * while we wait. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGINT);
	sigdelset(&waitmask, SIGTERM);
	struct sigaction sa = { .sa_handler = on_stop_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	fd = control_connect(path);
	if (fd < 0)
		goto out;
	uint32_t n = (uint32_t)nfiles;
	int fds[2] = { files[0].fd, nfiles > 1 ? files[1].fd : -1 };
	if (send_with_fds(fd, TDM_MSG_CTL_TRACE_START, &n, sizeof(n), fds, nfiles) != 0) {
		fprintf(stderr, "tandemctl: %s: cannot send the request\n", path);
		goto out;
	}
	char *started = read_reply(fd, path);
	if (!started)
		goto out;
	free(started);
	if (seconds > 0)
		fprintf(stderr, "tandemctl: recording for %g s (Ctrl-C stops sooner)\n", seconds);
	else
		fprintf(stderr, "tandemctl: recording; Ctrl-C stops\n");
	fflush(stderr);

	uint64_t deadline = seconds > 0 ? now_ns() + (uint64_t)(seconds * 1e9) : 0;
	int w = wait_for_stop(fd, deadline, &waitmask);
	if (w < 0)
		goto out;
	if (w == 0) {
		struct tdm_msg_hdr h = { .type = TDM_MSG_CTL_TRACE_STOP, .length = 0 };
		if (io_all(fd, &h, sizeof(h), true)) {
			fprintf(stderr, "tandemctl: %s: cannot send the request\n", path);
			goto out;
		}
	} else {
		fprintf(stderr, "tandemctl: tandemd stops: the recording ends\n");
	}
	summary = read_reply(fd, path);
	if (!summary)
		goto out;
	rc = 0;
	for (int i = 0; i < nfiles; i++)
		if (out_finish(&files[i], true) != 0)
			rc = 1;
	nfiles = 0;
	if (as_json)
		printf("%s\n", summary);
	else
		print_trace_summary(summary, files, chrome ? 2 : 1);
out:
	free(summary);
	if (fd >= 0)
		close(fd);
	for (int i = 0; i < nfiles; i++)
		out_finish(&files[i], false);
	return rc;
}

static int cmd_export(const char *path, const char *out)
{
	struct out_file f;
	int rc = 1;

	if (out_open(&f, out) != 0)
		return 1;
	int fd = control_connect(path);
	if (fd < 0) {
		out_finish(&f, false);
		return 1;
	}
	uint32_t one = 1;
	char *reply = NULL;
	if (send_with_fds(fd, TDM_MSG_CTL_EXPORT, &one, sizeof(one), &f.fd, 1) != 0)
		fprintf(stderr, "tandemctl: %s: cannot send the request\n", path);
	else
		reply = read_reply(fd, path);
	close(fd);
	if (reply && out_finish(&f, true) == 0)
		rc = 0;
	else if (!reply)
		out_finish(&f, false);
	if (rc == 0 && out && strcmp(out, "-")) {
		json_t *doc = json_loads(reply, 0, NULL);
		fprintf(stderr, "tandemctl: machine description written to %s (%lld bytes)\n", out,
		        (long long)num(doc, "bytes"));
		json_decref(doc);
	}
	free(reply);
	return rc;
}

/* ---- device and client changes ------------------------------------------ */

/* A byte count as the configuration writes it (common/size.h); -1 when
 * it is not one. */
static int parse_bytes(const char *s, uint64_t *out)
{
	return size_parse(s, strlen(s), out) == 0 ? 0 : -1;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

/* Sends one change request (device, client) and prints the daemon's
 * answer: as it came with --json, else through print_text, which gets
 * NULL where the answer is not JSON. 0, or 1 when the request failed (the
 * reason printed). */
static int control_change(const char *path, uint32_t type, const void *req, uint32_t len,
                          bool as_json, void (*print_text)(json_t *doc))
{
	char *text = control_request(path, type, req, len);
	if (!text)
		return 1;
	if (as_json) {
		printf("%s\n", text);
	} else {
		json_t *doc = json_loads(text, 0, NULL);
		print_text(doc);
		json_decref(doc);
	}
	free(text);
	return 0;
}

/* One line on what the daemon did; nothing when it did not say. */
static void print_device_change(json_t *doc)
{
	if (!doc)
		return;
	const char *op = str(doc, "op");
	json_t *added = json_object_get(doc, "added");
	if (added) { /* rescan */
		size_t i;
		json_t *d;
		printf("rescan: %zu new device%s added", json_array_size(added),
		       json_array_size(added) == 1 ? "" : "s");
		json_array_foreach(added, i, d)
		        printf("%s %s", i ? "," : ":", json_string_value(d));
		json_t *av = json_object_get(doc, "available");
		printf("; %zu available (not selected by [devices])", json_array_size(av));
		json_array_foreach(av, i, d) printf("%s %s", i ? "," : ":", json_string_value(d));
		printf("\n");
		return;
	}
	json_t *d = json_object_get(doc, "device");
	printf("%s: %s (id %lld) is %s", op, str(d, "name"), (long long)num(d, "id"),
	       str(d, "state"));
	if (json_object_get(doc, "queue"))
		printf("; its queue: %s", str(doc, "queue"));
	if (json_object_get(doc, "priced"))
		printf("; costs: %s", str(doc, "priced"));
	if (json_is_true(json_object_get(doc, "timed_out")))
		printf("; still busy after %lld ms: %lld task(s) finish there",
		       (long long)num(doc, "waited_ms"), (long long)num(doc, "still_running"));
	else if (json_object_get(doc, "waited_ms"))
		printf("; idle after %lld ms", (long long)num(doc, "waited_ms"));
	if (json_object_get(doc, "budget"))
		printf("; budget %lld bytes", (long long)num(doc, "budget"));
	printf("\n");
}

static int cmd_device(const char *path, const char *verb, char **args, int nargs, bool as_json)
{
	static const struct {
		const char *verb;
		uint32_t op;
		int nargs;
	} verbs[] = { { "add", TDM_DEV_ADD, 1 },       { "drain", TDM_DEV_DRAIN, 1 },
		      { "remove", TDM_DEV_REMOVE, 1 }, { "resume", TDM_DEV_RESUME, 1 },
		      { "budget", TDM_DEV_BUDGET, 2 }, { "rescan", TDM_DEV_RESCAN, 0 } };
	struct tdm_ctl_device req;
	memset(&req, 0, sizeof(req));
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]) && !req.op; i++)
		if (!strcmp(verb, verbs[i].verb) && nargs == verbs[i].nargs)
			req.op = verbs[i].op;
	if (!req.op) {
		fprintf(stderr, "tandemctl: expected device add|drain|remove|resume NAME, device "
		                "budget NAME BYTES or devices rescan\n");
		return 2;
	}
	if (nargs >= 1) {
		if (strlen(args[0]) >= sizeof(req.name)) {
			fprintf(stderr, "tandemctl: device name too long\n");
			return 2;
		}
		snprintf(req.name, sizeof(req.name), "%s", args[0]);
	}
	if (req.op == TDM_DEV_BUDGET && parse_bytes(args[1], &req.value) != 0) {
		fprintf(stderr,
		        "tandemctl: budget: expected bytes, such as 1073741824 or 512MiB\n");
		return 2;
	}
	return control_change(path, TDM_MSG_CTL_DEVICE, &req, sizeof(req), as_json,
	                      print_device_change);
}

static void print_weight_change(json_t *doc)
{
	printf("session %lld: weight %lld (was %lld)\n", (long long)num(doc, "session"),
	       (long long)num(doc, "value"), (long long)num(doc, "previous"));
}

static void print_quota_change(json_t *doc)
{
	printf("uid %lld: buffer quota %lld bytes (was %lld)%s\n", (long long)num(doc, "uid"),
	       (long long)num(doc, "value"), (long long)num(doc, "previous"),
	       json_is_true(json_object_get(doc, "configured")) ? ", as configured" : "");
}

static int cmd_client(const char *path, const char *noun, char **args, int nargs, bool as_json)
{
	struct tdm_ctl_client req = { 0 };
	bool weight = !strcmp(noun, "client");
	uint32_t w = 0;
	bool ok = nargs == 3 && !strcmp(args[0], weight ? "weight" : "quota") &&
	          parse_u32(args[1], &req.id) == 0;
	if (ok && weight)
		ok = parse_u32(args[2], &w) == 0;
	else if (ok)
		ok = !strcmp(args[2], "default") || parse_bytes(args[2], &req.value) == 0;
	if (!ok) {
		fprintf(stderr, "tandemctl: expected client weight SESSION N or uid quota UID "
		                "BYTES|default\n");
		return 2;
	}
	req.op = weight ? TDM_CLIENT_WEIGHT : TDM_CLIENT_UID_QUOTA;
	if (weight)
		req.value = w;
	return control_change(path, TDM_MSG_CTL_CLIENT, &req, sizeof(req), as_json,
	                      weight ? print_weight_change : print_quota_change);
}

int main(int argc, char **argv)
{
	enum { OPT_CHROME = 256, OPT_SECONDS, OPT_EXPORT, OPT_ONCE };
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
		                              { "json", no_argument, NULL, 'j' },
		                              { "output", required_argument, NULL, 'o' },
		                              { "chrome", required_argument, NULL, OPT_CHROME },
		                              { "seconds", required_argument, NULL, OPT_SECONDS },
		                              { "export", no_argument, NULL, OPT_EXPORT },
		                              { "interval", required_argument, NULL, 'd' },
		                              { "once", no_argument, NULL, OPT_ONCE },
		                              { "help", no_argument, NULL, 'h' },
		                              { "version", no_argument, NULL, 'V' },
		                              { 0 } };
	char path[108];
	const char *socket_path = NULL, *output = NULL, *chrome = NULL;
	bool as_json = false, export = false, has_seconds = false, once = false,
	     has_interval = false;
	double seconds = 0, interval = 1.0;
	int opt;

	while ((opt = getopt_long(argc, argv, "s:jo:d:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 's': socket_path = optarg; break;
		case 'j': as_json = true; break;
		case 'o': output = optarg; break;
		case OPT_CHROME: chrome = optarg; break;
		case OPT_SECONDS: {
			char *end;
			seconds = strtod(optarg, &end);
			if (*end || !(seconds > 0) || !isfinite(seconds) || seconds > 1e7) {
				fprintf(stderr,
				        "tandemctl: --seconds: expected a positive number\n");
				return 2;
			}
			has_seconds = true;
			break;
		}
		case OPT_EXPORT: export = true; break;
		case 'd': {
			char *end;
			interval = strtod(optarg, &end);
			if (*end || !(interval >= 0.1 && interval <= 3600)) {
				fprintf(stderr,
				        "tandemctl: --interval: expected seconds from 0.1 to "
				        "3600\n");
				return 2;
			}
			has_interval = true;
			break;
		}
		case OPT_ONCE: once = true; break;
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("tandemctl %s (wire %u, libtandem %s)\n", TDM_VERSION_STRING,
			       TDM_WIRE_VERSION, tdm_version());
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	/* Commands with arguments: device VERB NAME.., devices rescan, client
	 * weight.., uid quota.. */
	bool changes = !strcmp(cmd, "device") || !strcmp(cmd, "client") || !strcmp(cmd, "uid") ||
	               (!strcmp(cmd, "devices") && optind + 1 < argc);
	if (changes && (output || export || chrome || has_seconds || once || has_interval)) {
		fprintf(stderr,
		        "tandemctl: %s takes no -o, --chrome, --seconds, --export, -d or "
		        "--once\n",
		        cmd);
		return 2;
	}
	if (changes) {
		if (socket_path)
			snprintf(path, sizeof(path), "%s", socket_path);
		else if (tdm_default_socket_path(path, sizeof(path)) != 0)
			return 1;
		int rest = argc - optind - 1;
		if (!strcmp(cmd, "devices"))
			return rest == 1 ? cmd_device(path, argv[optind + 1], NULL, 0, as_json)
			                 : (usage(stderr), 2);
		if (!strcmp(cmd, "device"))
			return rest >= 1 ? cmd_device(path, argv[optind + 1], argv + optind + 2,
			                              rest - 1, as_json)
			                 : (usage(stderr), 2);
		return cmd_client(path, cmd, argv + optind + 1, rest, as_json);
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	bool trace = !strcmp(cmd, "trace"), calibrate = !strcmp(cmd, "calibrate");
	bool top = !strcmp(cmd, "top");
	if ((export && !calibrate) || (output && !trace && !export) ||
	    ((chrome || has_seconds) && !trace) || ((once || has_interval) && !top) ||
	    (as_json && top)) {
		fprintf(stderr, "tandemctl: -o is for trace and calibrate --export, --chrome and "
		                "--seconds for trace, --export for calibrate, -d and --once for "
		                "top (without --json)\n");
		usage(stderr);
		return 2;
	}
	uint32_t type = !strcmp(cmd, "models") ? TDM_MSG_CTL_MODELS
	                : calibrate            ? TDM_MSG_CTL_CALIBRATE
	                                       : TDM_MSG_CTL_STATUS;
	if (strcmp(cmd, "status") && strcmp(cmd, "devices") && strcmp(cmd, "clients") &&
	    strcmp(cmd, "buffers") && strcmp(cmd, "moe") && !trace && !top &&
	    type == TDM_MSG_CTL_STATUS) {
		fprintf(stderr, "tandemctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		return 2;
	}
	if (socket_path)
		snprintf(path, sizeof(path), "%s", socket_path);
	else if (tdm_default_socket_path(path, sizeof(path)) != 0)
		return 1;
	if (trace)
		return cmd_trace(path, output, chrome, seconds, as_json);
	if (export)
		return cmd_export(path, output);
	if (top)
		return cmd_top(path, interval, once);

	char *text = fetch_document(path, type);
	if (!text)
		return 1;
	if (as_json) {
		printf("%s\n", text);
		free(text);
		return 0;
	}
	json_error_t jerr;
	json_t *doc = json_loads(text, 0, &jerr);
	free(text);
	if (!doc) {
		fprintf(stderr, "tandemctl: bad document: %s\n", jerr.text);
		return 1;
	}
	if (type == TDM_MSG_CTL_MODELS)
		print_models(doc);
	else if (type == TDM_MSG_CTL_CALIBRATE)
		print_calibration(doc);
	else if (strcmp(cmd, "devices") == 0)
		print_devices(doc);
	else if (strcmp(cmd, "clients") == 0)
		print_clients(doc);
	else if (strcmp(cmd, "buffers") == 0)
		print_replicas(doc);
	else if (strcmp(cmd, "moe") == 0)
		print_moe(doc);
	else
		print_status(doc);
	json_decref(doc);
	return 0;
}
