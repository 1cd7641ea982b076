/* tandemctl: look at a running tandemd through its control channel. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tandem.h"

static void usage(FILE *out)
{
	fprintf(out, "Usage: tandemctl [--socket PATH] [--json] COMMAND\n"
	             "Shows the state of a running tandemd.\n"
	             "\n"
	             "Commands:\n"
	             "  status    devices, clients, queue depth and counters\n"
	             "  devices   the devices tandemd schedules on\n"
	             "  clients   connected clients and what they hold\n"
	             "  buffers   each client buffer and the memory nodes holding a valid copy\n"
	             "  models    each cost model: samples, sizes seen, estimates, spread and\n"
	             "            recent prediction error\n"
	             "  calibrate measure the devices and links again (about a second, under\n"
	             "            the current load) and print the figures\n"
	             "\n"
	             "Options:\n"
	             "  -s, --socket PATH   daemon socket (default: $TANDEM_SOCKET, then\n"
	             "                      $XDG_RUNTIME_DIR/tandem/tandemd.sock, or\n"
	             "                      /run/tandem/tandemd.sock for root)\n"
	             "  -j, --json          print the daemon's JSON document as is\n"
	             "  -h, --help          show this help\n");
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

/* Returns the JSON text of a control request (malloc'd) or NULL with a
 * message printed. */
static char *fetch_document(const char *path, uint32_t type)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct tdm_hello hello = { TDM_WIRE_MAGIC, TDM_WIRE_VERSION, TDM_ROLE_CONTROL, 0 };
	struct tdm_hello_reply hr;
	char *reply = NULL, *json = NULL;
	uint32_t len;
	int32_t status;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		fprintf(stderr, "tandemctl: cannot connect to %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (request(fd, TDM_MSG_HELLO, &hello, sizeof(hello), TDM_MSG_HELLO_REPLY, &reply, &len) ||
	    len != sizeof(hr)) {
		fprintf(stderr, "tandemctl: %s: no valid hello reply\n", path);
		goto out;
	}
	memcpy(&hr, reply, sizeof(hr));
	free(reply);
	reply = NULL;
	if (hr.status) {
		fprintf(stderr, "tandemctl: %s: %s\n", path, tdm_strerror(hr.status));
		goto out;
	}
	if (request(fd, type, NULL, 0, TDM_MSG_CTL_REPLY, &reply, &len) || len < sizeof(status)) {
		fprintf(stderr, "tandemctl: %s: no valid reply\n", path);
		goto out;
	}
	memcpy(&status, reply, sizeof(status));
	if (status) {
		fprintf(stderr, "tandemctl: %s\n", tdm_strerror(status));
		goto out;
	}
	json = strdup(reply + sizeof(status));
out:
	free(reply);
	close(fd);
	return json;
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
	printf("%-5s %-8s %-6s %-7s %4s %4s %8s %9s %10s %11s %s\n", "INDEX", "NAME", "KIND",
	       "BACKEND", "CPU", "NODE", "HEALTHY", "TASKS", "BUSY_MS", "MEM_MIB", "MODEL");
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		char mem[32] = "-";
		if (json_object_get(d, "mem_cap"))
			snprintf(mem, sizeof(mem), "%.1f/%.0f",
			         (double)num(d, "mem_used") / 1048576.0,
			         (double)num(d, "mem_cap") / 1048576.0);
		printf("%-5lld %-8s %-6s %-7s %4lld %4lld %8s %9lld %10.1f %11s %s\n",
		       (long long)num(d, "index"), str(d, "name"), str(d, "kind"),
		       str(d, "backend"), (long long)num(d, "cpu"), (long long)num(d, "node"),
		       json_is_true(json_object_get(d, "healthy")) ? "yes" : "NO",
		       (long long)num(d, "tasks_run"), (double)num(d, "busy_ns") / 1e6, mem,
		       str(d, "model"));
	}
}

static void print_clients(json_t *doc)
{
	size_t i;
	json_t *c;
	printf("%-8s %-8s %-6s %6s %-8s %8s %14s %8s %10s\n", "SESSION", "PID", "UID", "WEIGHT",
	       "POLICY", "BUFFERS", "BUFFER_BYTES", "GRAPHS", "TASKS");
	json_array_foreach(json_object_get(doc, "clients"), i, c)
	        printf("%-8lld %-8lld %-6lld %6lld %-8s %8lld %14lld %8lld %10lld\n",
	               (long long)num(c, "session"), (long long)num(c, "pid"),
	               (long long)num(c, "uid"), (long long)num(c, "weight"), str(c, "policy_hint"),
	               (long long)num(c, "buffers"), (long long)num(c, "buffer_bytes"),
	               (long long)num(c, "graphs_in_flight"), (long long)num(c, "tasks_in_flight"));
}

/* Where each buffer's valid copies are; * marks the only valid (owner) copy. */
static void print_replicas(json_t *doc)
{
	size_t i, j;
	json_t *c, *b;
	printf("%-8s %-10s %14s %s\n", "SESSION", "BUFFER", "BYTES", "VALID_ON (* = owner)");
	json_array_foreach(json_object_get(doc, "clients"), i, c)
	{
		json_array_foreach(json_object_get(c, "replicas"), j, b) printf(
		        "%-8lld %-10lld %14lld %s\n", (long long)num(c, "session"),
		        (long long)num(b, "handle"), (long long)num(b, "bytes"), str(b, "valid"));
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
	        printf("  %-20s %lld\n", key, (long long)json_integer_value(v));
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
 * daemon lists them, at most 8). */
static void print_models(json_t *doc)
{
	size_t i, j;
	json_t *m, *f;
	char a[32], b[32];
	printf("%-12s %-52s %8s %6s %9s %9s\n", "KERNEL", "DEVICE", "SAMPLES", "SIZES", "OUTLIERS",
	       "RECENT_ERR");
	json_array_foreach(json_object_get(doc, "models"), i, m)
	{
		json_t *fps = json_object_get(m, "footprints");
		printf("%-12s %-52s %8lld %6zu %9lld %8.1f%%\n", str(m, "kernel"), str(m, "device"),
		       (long long)num(m, "samples"), json_array_size(fps),
		       (long long)num(m, "outliers"), real(m, "recent_err_pct"));
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

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
		                              { "json", no_argument, NULL, 'j' },
		                              { "help", no_argument, NULL, 'h' },
		                              { 0 } };
	char path[108];
	const char *socket_path = NULL;
	bool as_json = false;
	int opt;

	while ((opt = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (opt) {
		case 's': socket_path = optarg; break;
		case 'j': as_json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	uint32_t type = !strcmp(cmd, "models")      ? TDM_MSG_CTL_MODELS
	                : !strcmp(cmd, "calibrate") ? TDM_MSG_CTL_CALIBRATE
	                                            : TDM_MSG_CTL_STATUS;
	if (strcmp(cmd, "status") && strcmp(cmd, "devices") && strcmp(cmd, "clients") &&
	    strcmp(cmd, "buffers") && type == TDM_MSG_CTL_STATUS) {
		fprintf(stderr, "tandemctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		return 2;
	}
	if (socket_path)
		snprintf(path, sizeof(path), "%s", socket_path);
	else if (tdm_default_socket_path(path, sizeof(path)) != 0)
		return 1;

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
	else
		print_status(doc);
	json_decref(doc);
	return 0;
}
