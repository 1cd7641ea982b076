/* The /metrics endpoint (Prometheus text exposition format 0.0.4).
 *
 * The figures are those of `tandemctl status` (control_status_doc, one
 * gathering for both), read from atomics on the event loop: a scrape never
 * waits on a worker or a client. They are aggregates: no metric has a
 * client, session, pid or uid label, so whoever can reach the endpoint
 * learns how busy the machine is and which kernels ran, not who ran them.
 *
 * The HTTP side is bounded: GET only (405 otherwise), /metrics only (404),
 * headers at most METRICS_MAX_HEADERS bytes, a body at most
 * METRICS_MAX_BODY, METRICS_TIMEOUT_S to send a request or read the reply,
 * and at most [metrics] max_connections connections at once (the listener
 * pauses at the cap and resumes when one closes). */
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/server.h"
#include "tandem.h"

#define METRICS_MAX_HEADERS 8192
#define METRICS_MAX_BODY 1024
#define METRICS_TIMEOUT_S 10
#define METRICS_BACKLOG 16
#define METRICS_UNIX_PREFIX "unix:"
#define METRICS_SOCKET_MODE 0660

#define METRICS_SWEEP_MS 200

struct metrics {
	struct server *srv;
	struct evhttp *http;
	struct evconnlistener *listener; /* owned by http once bound */
	char address[CONFIG_PLUGIN_MAX + 16];
	char unix_path[CONFIG_PATH_MAX]; /* unlinked at stop; "" for TCP */
	/* Connections open (or let go by evhttp since the last sweep). */
	struct bufferevent *conns[CONFIG_METRICS_CONNECTIONS_MAX];
	uint32_t nconns;
	bool paused; /* the listener, at the cap */
	struct event *ev_sweep;
};

/* ---- exposition -------------------------------------------------------------- */

static void family(struct evbuffer *o, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the format wants (\\, \", \n). */
static void label_value(struct evbuffer *o, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\')
			evbuffer_add(o, "\\\\", 2);
		else if (*v == '"')
			evbuffer_add(o, "\\\"", 2);
		else if (*v == '\n')
			evbuffer_add(o, "\\n", 2);
		else
			evbuffer_add(o, v, 1);
	}
}

/* name{k0="v0",k1="v1"} value: labels as name/value pairs, n of them. */
static void sample(struct evbuffer *o, const char *name, const char *const *labels, size_t n,
                   const char *value)
{
	evbuffer_add_printf(o, "%s", name);
	for (size_t i = 0; i < n; i++) {
		evbuffer_add_printf(o, "%s%s=\"", i ? "," : "{", labels[2 * i]);
		label_value(o, labels[2 * i + 1]);
		evbuffer_add(o, "\"", 1);
	}
	evbuffer_add_printf(o, "%s %s\n", n ? "}" : "", value);
}

static void sample_int(struct evbuffer *o, const char *name, const char *const *labels, size_t n,
                       json_int_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld", (long long)v);
	sample(o, name, labels, n, buf);
}

static void sample_seconds(struct evbuffer *o, const char *name, const char *const *labels,
                           size_t n, json_int_t ns)
{
	char buf[40];
	snprintf(buf, sizeof(buf), "%.9f", (double)ns / 1e9);
	sample(o, name, labels, n, buf);
}

static json_int_t field(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* A daemon-wide figure from the counters object. */
static void counter_metric(struct evbuffer *o, const json_t *counters, const char *name,
                           const char *type, const char *help, const char *key)
{
	family(o, name, type, help);
	sample_int(o, name, NULL, 0, field(counters, key));
}

/* One sample per device that has key (in ns when seconds). */
static void device_metric(struct evbuffer *o, const json_t *devices, const char *name,
                          const char *type, const char *help, const char *key, bool seconds)
{
	size_t i;
	const json_t *d;
	family(o, name, type, help);
	json_array_foreach(devices, i, d)
	{
		const json_t *v = json_object_get(d, key);
		const char *labels[] = { "device", json_string_value(json_object_get(d, "name")) };
		if (!json_is_integer(v) || !labels[1])
			continue;
		if (seconds)
			sample_seconds(o, name, labels, 1, json_integer_value(v));
		else
			sample_int(o, name, labels, 1, json_integer_value(v));
	}
}

static bool listed(const json_t *list, const char *name)
{
	size_t i;
	const json_t *d;
	json_array_foreach(list, i, d)
	{
		const char *n = json_string_value(json_object_get(d, "name"));
		if (n && !strcmp(n, name))
			return true;
	}
	return false;
}

static void state_samples(struct evbuffer *o, const char *dev, const char *state)
{
	static const char *const states[] = { "active", "draining", "gone", "available" };
	for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
		const char *labels[] = { "device", dev, "state", states[s] };
		sample(o, "tandem_device_state", labels, 2, strcmp(state, states[s]) ? "0" : "1");
	}
}

/* tandem_device_state: one sample per device name and state, 1 for the
 * state it is in (active, draining, gone; available: found, not in use,
 * which a device removed becomes once it left its last task). */
static void device_states(struct evbuffer *o, const json_t *devices, const json_t *available)
{
	size_t i;
	const json_t *d;
	family(o, "tandem_device_state", "gauge",
	       "1 for the state each device is in (docs/elastic.md), 0 for the others.");
	json_array_foreach(devices, i, d)
	{
		const char *dev = json_string_value(json_object_get(d, "name"));
		const char *state = json_string_value(json_object_get(d, "state"));
		if (dev && state)
			state_samples(o, dev, listed(available, dev) ? "available" : state);
	}
	json_array_foreach(available, i, d)
	{
		const char *dev = json_string_value(json_object_get(d, "name"));
		if (dev && !listed(devices, dev))
			state_samples(o, dev, "available");
	}
}

/* A per-device histogram: buckets (per bucket in the document, cumulative
 * here) with bounds in ns, and the sum of the observations in ns. */
static void device_histogram(struct evbuffer *o, const json_t *devices, const json_t *bounds,
                             const char *name, const char *help, const char *hist_key,
                             const char *sum_key)
{
	char bucket[96], sum[96], count[96], le[32];
	size_t i;
	const json_t *d;
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	snprintf(sum, sizeof(sum), "%s_sum", name);
	snprintf(count, sizeof(count), "%s_count", name);
	family(o, name, "histogram", help);
	json_array_foreach(devices, i, d)
	{
		const char *dev = json_string_value(json_object_get(d, "name"));
		const json_t *h = json_object_get(d, hist_key);
		json_int_t cum = 0;
		if (!dev || !json_is_array(h))
			continue;
		for (size_t b = 0; b < json_array_size(h); b++) {
			const json_t *bound = json_array_get(bounds, b);
			cum += json_integer_value(json_array_get(h, b));
			if (bound)
				snprintf(le, sizeof(le), "%.9g",
				         (double)json_integer_value(bound) / 1e9);
			else
				snprintf(le, sizeof(le), "+Inf");
			const char *labels[] = { "device", dev, "le", le };
			sample_int(o, bucket, labels, 2, cum);
			if (!bound)
				break;
		}
		const char *labels[] = { "device", dev };
		sample_seconds(o, sum, labels, 1, field(d, sum_key));
		sample_int(o, count, labels, 1, cum);
	}
}

/* One sample per layer of the status doc's moe.layers that has key. */
static void moe_layer_metric(struct evbuffer *o, const json_t *layers, const char *name,
                             const char *help, const char *key)
{
	const json_t *l;
	size_t i;
	char buf[16];

	family(o, name, "counter", help);
	json_array_foreach(layers, i, l)
	{
		const json_t *v = json_object_get(l, key);
		if (!json_is_integer(v))
			continue;
		snprintf(buf, sizeof(buf), "%lld", (long long)field(l, "layer"));
		const char *lab[] = { "layer", buf };
		sample_int(o, name, lab, 1, json_integer_value(v));
	}
}

/* The llm policy's MoE split (the status doc's "moe"), when it has one. */
static void moe_metrics(struct evbuffer *o, const json_t *moe)
{
	const json_t *layers = json_object_get(moe, "layers");
	char buf[40];

	if (!json_is_object(moe) || !json_is_array(layers))
		return;
	moe_layer_metric(o, layers, "tandem_moe_expert_lookups_total",
	                 "Routed experts released to run, per MoE layer.", "lookups");
	moe_layer_metric(o, layers, "tandem_moe_expert_hits_total",
	                 "Of them, experts whose weights were on the accelerator.", "hits");
	moe_layer_metric(o, layers, "tandem_moe_expert_load_bytes_total",
	                 "Expert weight bytes the split sent over the link.", "load_bytes");
	family(o, "tandem_moe_cached_experts", "gauge",
	       "Experts whose weights the expert cache keeps on the accelerator now.");
	sample_int(o, "tandem_moe_cached_experts", NULL, 0, field(moe, "cached"));
	family(o, "tandem_moe_cache_capacity_experts", "gauge", "The expert cache's budget.");
	sample_int(o, "tandem_moe_cache_capacity_experts", NULL, 0, field(moe, "cache_cap"));
	family(o, "tandem_moe_cache_pays", "gauge",
	       "1 when the predicted time the resident experts saved exceeds the predicted "
	       "link time of the loads that brought experts in, else 0.");
	sample(o, "tandem_moe_cache_pays", NULL, 0,
	       json_is_true(json_object_get(moe, "cache_pays")) ? "1" : "0");
	family(o, "tandem_moe_saved_seconds_total", "counter",
	       "Predicted layer time saved by the resident experts.");
	snprintf(buf, sizeof(buf), "%.9f", json_real_value(json_object_get(moe, "saved_ns")) / 1e9);
	sample(o, "tandem_moe_saved_seconds_total", NULL, 0, buf);
	family(o, "tandem_moe_load_seconds_total", "counter",
	       "Predicted link time of the experts' loads.");
	snprintf(buf, sizeof(buf), "%.9f", json_real_value(json_object_get(moe, "load_ns")) / 1e9);
	sample(o, "tandem_moe_load_seconds_total", NULL, 0, buf);
	/* The accelerator's split between KV and experts, and the prefetch. */
	static const struct {
		const char *name, *type, *help, *key;
	} more[] = {
		{ "tandem_moe_accel_budget_bytes", "gauge",
		  "The accelerator's memory budget at the last router.", "budget_bytes" },
		{ "tandem_moe_accel_kv_bytes", "gauge",
		  "Other data (KV caches) homed on the accelerator at the last router.",
		  "kv_bytes" },
		{ "tandem_moe_accel_expert_bytes", "gauge",
		  "Expert weights the expert cache keeps on the accelerator.", "expert_bytes" },
		{ "tandem_moe_budget_evictions_total", "counter",
		  "Experts let go because the budget left them no room.", "budget_evictions" },
		{ "tandem_moe_prefetch_bytes_total", "counter",
		  "Next-layer expert weight bytes prefetched to the accelerator.",
		  "prefetch_bytes" },
		{ "tandem_moe_prefetch_used_bytes_total", "counter",
		  "Of them, bytes of experts that ran on the accelerator at that step.",
		  "prefetch_used_bytes" },
		{ "tandem_moe_prefetch_wasted_bytes_total", "counter",
		  "Of them, bytes of experts not used at that step.", "prefetch_wasted_bytes" },
	};
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
		family(o, more[i].name, more[i].type, more[i].help);
		sample_int(o, more[i].name, NULL, 0, field(moe, more[i].key));
	}
}

int metrics_render(const json_t *doc, struct evbuffer *o)
{
	const json_t *devices = json_object_get(doc, "devices");
	const json_t *counters = json_object_get(doc, "counters");
	const json_t *bounds = json_object_get(doc, "latency_bounds_ns");
	const json_t *d, *v;
	const char *key;
	size_t i;
	char buf[48];

	if (!json_is_array(devices) || !json_is_object(counters) || !json_is_array(bounds))
		return -1;

	family(o, "tandem_uptime_seconds", "gauge", "Seconds since the daemon started.");
	snprintf(buf, sizeof(buf), "%.3f", json_real_value(json_object_get(doc, "uptime_s")));
	sample(o, "tandem_uptime_seconds", NULL, 0, buf);
	family(o, "tandem_policy_info", "gauge",
	       "The scheduling policy in force (1), fifo after a watchdog fallback.");
	const char *policy_label[] = {
		"policy", json_is_true(json_object_get(doc, "policy_fallback"))
		                  ? "fifo"
		                  : json_string_value(json_object_get(doc, "policy"))
	};
	if (policy_label[1])
		sample(o, "tandem_policy_info", policy_label, 1, "1");

	counter_metric(o, counters, "tandem_clients", "gauge", "Clients connected now.", "clients");
	counter_metric(o, counters, "tandem_connections", "gauge",
	               "Connections open now, tandemctl's included.", "connections");
	counter_metric(o, counters, "tandem_connections_refused_total", "counter",
	               "Connections refused at accept (not allowed, or over a cap).",
	               "connections_refused");
	counter_metric(o, counters, "tandem_sessions_total", "counter",
	               "Client sessions opened since the daemon started.", "sessions_total");
	counter_metric(o, counters, "tandem_buffers", "gauge", "Client buffers held now.",
	               "buffers_live");
	counter_metric(o, counters, "tandem_buffer_bytes", "gauge",
	               "Bytes of client buffers held now.", "buffer_bytes_live");
	counter_metric(o, counters, "tandem_graphs_submitted_total", "counter",
	               "Graphs accepted by intake and submitted to the engine.",
	               "graphs_submitted");
	counter_metric(o, counters, "tandem_graphs_completed_total", "counter",
	               "Graphs whose last task finished.", "graphs_done");
	counter_metric(o, counters, "tandem_protocol_errors_total", "counter",
	               "Ring entries outside any graph (the client is disconnected).",
	               "protocol_errors");

	family(o, "tandem_graphs_rejected_total", "counter",
	       "Graphs rejected at intake, by the field at fault (TDM_REJECT_*).");
	json_object_foreach((json_t *)json_object_get(counters, "rejected_by_field"), key, v)
	{
		const char *labels[] = { "reason", key };
		sample_int(o, "tandem_graphs_rejected_total", labels, 1, json_integer_value(v));
	}

	family(o, "tandem_tasks_total", "counter",
	       "Tasks run to completion without error, by device and kernel.");
	json_array_foreach(devices, i, d)
	{
		const char *dev = json_string_value(json_object_get(d, "name"));
		json_object_foreach((json_t *)json_object_get(d, "kernels"), key, v)
		{
			const char *labels[] = { "device", dev ? dev : "", "kernel", key };
			sample_int(o, "tandem_tasks_total", labels, 2, json_integer_value(v));
		}
	}
	counter_metric(o, counters, "tandem_tasks_failed_total", "counter", "Tasks that failed.",
	               "tasks_failed");
	counter_metric(o, counters, "tandem_tasks_canceled_total", "counter",
	               "Tasks skipped or stopped because their client left or the daemon stopped.",
	               "tasks_canceled");
	counter_metric(o, counters, "tandem_tasks_in_flight", "gauge",
	               "Tasks submitted and not finished.", "tasks_in_flight");
	counter_metric(o, counters, "tandem_tasks_queued", "gauge",
	               "Ready tasks waiting for a device (the policy's queues).", "queued");

	device_metric(o, devices, "tandem_device_tasks_staged", "gauge",
	              "Tasks enqueued on the device or running there now.", "staged", false);
	device_metric(o, devices, "tandem_device_busy_seconds_total", "counter",
	              "Device time of the tasks the device ran.", "busy_ns", true);
	device_metric(o, devices, "tandem_device_faults_total", "counter", "Device faults.",
	              "faults", false);
	device_states(o, devices, json_object_get(doc, "available"));
	family(o, "tandem_device_events_total", "counter",
	       "Devices added, drained, resumed, removed, budgets changed, rescans, and "
	       "devices that faults took away.");
	json_object_foreach((json_t *)json_object_get(counters, "device_events"), key, v)
	{
		const char *labels[] = { "event", key };
		sample_int(o, "tandem_device_events_total", labels, 1, json_integer_value(v));
	}
	family(o, "tandem_device_healthy", "gauge",
	       "1 while the device takes work, 0 after a fault.");
	json_array_foreach(devices, i, d)
	{
		const char *labels[] = { "device", json_string_value(json_object_get(d, "name")) };
		if (labels[1])
			sample(o, "tandem_device_healthy", labels, 1,
			       json_is_true(json_object_get(d, "healthy")) ? "1" : "0");
	}
	device_metric(o, devices, "tandem_device_memory_used_bytes", "gauge",
	              "Accelerator memory held by tandem's buffer replicas.", "mem_used", false);
	device_metric(o, devices, "tandem_device_memory_capacity_bytes", "gauge",
	              "Accelerator memory tandem may use.", "mem_cap", false);
	device_metric(o, devices, "tandem_device_evictions_total", "counter",
	              "Replicas evicted from accelerator memory.", "evictions", false);

	family(o, "tandem_transfer_bytes_total", "counter",
	       "Bytes copied over the link between host memory and the device.");
	json_array_foreach(devices, i, d)
	{
		const char *dev = json_string_value(json_object_get(d, "name"));
		const json_t *in = json_object_get(d, "bytes_h2d"),
		             *out = json_object_get(d, "bytes_d2h");
		if (!dev || !json_is_integer(in) || !json_is_integer(out))
			continue;
		const char *to[] = { "device", dev, "direction", "host_to_device" };
		const char *from[] = { "device", dev, "direction", "device_to_host" };
		sample_int(o, "tandem_transfer_bytes_total", to, 2, json_integer_value(in));
		sample_int(o, "tandem_transfer_bytes_total", from, 2, json_integer_value(out));
	}

	device_histogram(o, devices, bounds, "tandem_task_queue_wait_seconds",
	                 "Time from a task's release (ready) to its start.", "wait_hist",
	                 "wait_ns");
	device_histogram(o, devices, bounds, "tandem_task_run_seconds",
	                 "Device time of the tasks run to completion.", "run_hist", "run_ns");

	device_metric(o, devices, "tandem_cost_model_predictions_total", "counter",
	              "Tasks run to completion that the cost model predicted.", "predicted", false);
	device_metric(o, devices, "tandem_cost_model_abs_error_seconds_total", "counter",
	              "Sum of |predicted - actual| device time over the predicted tasks.",
	              "pred_err_ns", true);
	device_metric(o, devices, "tandem_cost_model_observed_seconds_total", "counter",
	              "Sum of the actual device time of the predicted tasks (relative error = "
	              "abs_error / observed).",
	              "pred_actual_ns", true);
	moe_metrics(o, json_object_get(doc, "moe"));
	return evbuffer_get_length(o) ? 0 : -1;
}

/* ---- HTTP ------------------------------------------------------------------ */

static void on_request(struct evhttp_request *req, void *arg)
{
	struct metrics *m = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	/* Each device name once (the newest id): series are by name. */
	struct status_view v = { .all = true, .clients = false, .latest_only = true };
	json_t *doc = control_status_doc(m->srv, &v);
	struct evbuffer *body = evbuffer_new();
	int rc = doc && body ? metrics_render(doc, body) : -1;
	json_decref(doc);
	if (rc != 0) {
		if (body)
			evbuffer_free(body);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

/* Connections are counted without hooks evhttp lacks (2.1 has no
 * connection cap nor close callback before a request): each connection's
 * bufferevent is made here and holds an extra reference of ours, and
 * evhttp_connection_free's bufferevent_free clears its callbacks; a
 * bufferevent without a read callback is one evhttp let go, and our
 * reference is dropped then. Swept at each new connection, and each
 * METRICS_SWEEP_MS while the listener is paused at the cap. */
static void sweep(struct metrics *m)
{
	uint32_t kept = 0;
	for (uint32_t i = 0; i < m->nconns; i++) {
		bufferevent_data_cb readcb = NULL;
		bufferevent_getcb(m->conns[i], &readcb, NULL, NULL, NULL);
		if (readcb)
			m->conns[kept++] = m->conns[i];
		else
			bufferevent_decref(m->conns[i]);
	}
	m->nconns = kept;
}

static void set_paused(struct metrics *m, bool paused)
{
	struct timeval tv = { 0, METRICS_SWEEP_MS * 1000 };
	if (paused == m->paused)
		return;
	m->paused = paused;
	if (paused) {
		evconnlistener_disable(m->listener);
		evtimer_add(m->ev_sweep, &tv);
	} else {
		evconnlistener_enable(m->listener);
		evtimer_del(m->ev_sweep);
	}
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;
	(void)fd;
	(void)what;
	sweep(m);
	m->paused = false; /* the timer fired: re-armed below if still full */
	if (m->nconns >= m->srv->cfg.metrics_max_connections)
		set_paused(m, true);
	else
		evconnlistener_enable(m->listener);
}

/* Each accepted connection's bufferevent (evhttp closes the socket itself). */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
	struct metrics *m = arg;
	sweep(m);
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
	if (!bev)
		return NULL; /* evhttp makes its own, uncounted: only out of memory */
	if (m->nconns < CONFIG_METRICS_CONNECTIONS_MAX) {
		bufferevent_incref(bev);
		m->conns[m->nconns++] = bev;
	}
	if (m->nconns >= m->srv->cfg.metrics_max_connections)
		set_paused(m, true);
	return bev;
}

/* A Unix socket at path (after "unix:"): a stale socket there is replaced,
 * anything else is left alone. */
static int bind_unix(struct metrics *m, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("metrics: %s exists and is not a socket", path);
			return -1;
		}
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	mode_t old_mask = umask(0);
	int rc = fchmod(fd, METRICS_SOCKET_MODE) == 0 ? bind(fd, (struct sockaddr *)&sa, sizeof(sa))
	                                              : -1;
	umask(old_mask);
	if (rc != 0 || listen(fd, METRICS_BACKLOG) != 0) {
		log_error("metrics: cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	snprintf(m->unix_path, sizeof(m->unix_path), "%s", path);
	snprintf(m->address, sizeof(m->address), METRICS_UNIX_PREFIX "%s", path);
	return fd;
}

/* "a.b.c.d:port" or "[v6]:port", as the configuration checked it (libevent's
 * parser refuses port 0). */
static int parse_host_port(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(addr, ':');
	char host[64];
	size_t hl = colon ? (size_t)(colon - addr) : 0;
	bool v6 = addr[0] == '[';
	if (!colon || hl < (v6 ? 3u : 1u) || hl >= sizeof(host) || (v6 && addr[hl - 1] != ']'))
		return -1;
	memcpy(host, addr + v6, hl - 2 * v6);
	host[hl - 2 * v6] = '\0';
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a);
		return inet_pton(AF_INET6, host, &a->sin6_addr) == 1 ? 0 : -1;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	*len = sizeof(*a);
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

/* host:port (IPv4, or [IPv6]); port 0 takes a free one, named in address. */
static int bind_tcp(struct metrics *m, const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_host_port(addr, &ss, &len) != 0) {
		log_error("metrics: cannot parse %s", addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, METRICS_BACKLOG) != 0) {
		log_error("metrics: cannot listen on %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	socklen_t sl = sizeof(ss);
	char host[64];
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		close(fd);
		return -1;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		evutil_inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(m->address, sizeof(m->address), "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(m->address, sizeof(m->address), "%s:%u", host, ntohs(a->sin_port));
	}
	return fd;
}

int metrics_start(struct server *srv)
{
	const char *listen_at = srv->cfg.metrics_listen;
	if (!listen_at[0])
		return 0;
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return -TDM_ENOMEM;
	m->srv = srv;
	m->http = evhttp_new(srv->base);
	if (!m->http) {
		free(m);
		return -TDM_ENOMEM;
	}
	srv->metrics = m;
	m->ev_sweep = evtimer_new(srv->base, on_sweep, m);
	if (!m->ev_sweep)
		return -TDM_ENOMEM;
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET);
	evhttp_set_max_headers_size(m->http, METRICS_MAX_HEADERS);
	evhttp_set_max_body_size(m->http, METRICS_MAX_BODY);
	evhttp_set_timeout(m->http, METRICS_TIMEOUT_S);
	evhttp_set_gencb(m->http, on_request, m);
	evhttp_set_bevcb(m->http, on_new_conn, m);

	size_t np = strlen(METRICS_UNIX_PREFIX);
	int fd = strncmp(listen_at, METRICS_UNIX_PREFIX, np) == 0 ? bind_unix(m, listen_at + np)
	                                                          : bind_tcp(m, listen_at);
	if (fd < 0)
		return -TDM_ESYS;
	/* Backlog 0: the socket listens already. */
	m->listener = evconnlistener_new(srv->base, NULL, NULL,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!m->listener) {
		close(fd);
		return -TDM_ENOMEM;
	}
	if (!evhttp_bind_listener(m->http, m->listener)) {
		evconnlistener_free(m->listener);
		m->listener = NULL;
		return -TDM_ENOMEM;
	}
	log_info("metrics: serving /metrics on %s", m->address);
	return 0;
}

void metrics_stop(struct server *srv)
{
	struct metrics *m = srv->metrics;
	if (!m)
		return;
	/* Frees the listener and every connection; then our references. */
	evhttp_free(m->http);
	for (uint32_t i = 0; i < m->nconns; i++)
		bufferevent_decref(m->conns[i]);
	if (m->ev_sweep)
		event_free(m->ev_sweep);
	if (m->unix_path[0])
		unlink(m->unix_path);
	free(m);
	srv->metrics = NULL;
}

const char *metrics_address(const struct server *srv)
{
	return srv->metrics ? srv->metrics->address : "";
}
