/* The status document behind `tandemctl status`. */
#include <jansson.h>
#include <unistd.h>

#include "policies/policy.h"
#include "daemon/server.h"
#include "tandem.h"

/* Buffers listed per client in the status document, at most. */
#define STATUS_MAX_BUFFERS 64

static json_t *device_json(struct server *srv, size_t i)
{
	struct engine_device *d = (struct engine_device *)engine_device(srv->engine, i);
	json_t *o =
	        json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:i, s:b, s:I, s:I, s:I}", "index",
	                  (json_int_t)i, "name", d->dev.name, "kind", device_kind_name(d->dev.kind),
	                  "backend", d->dev.ops->name, "model", d->dev.model, "cpu",
	                  d->dev.os_index, "node", (int)d->node, "healthy",
	                  atomic_load(&d->healthy), "faults", (json_int_t)atomic_load(&d->faults),
	                  "tasks_run", (json_int_t)atomic_load(&d->tasks_run), "busy_ns",
	                  (json_int_t)atomic_load(&d->busy_ns));
	if (o && backend_is_accelerator(&d->dev)) {
		struct res_node_stats st;
		residency_node_stats(&srv->res, d->node, &st);
		json_object_set_new(o, "mem_cap", json_integer((json_int_t)st.cap));
		json_object_set_new(o, "mem_used", json_integer((json_int_t)st.used));
		json_object_set_new(o, "evictions", json_integer((json_int_t)st.evictions));
		json_object_set_new(o, "writebacks", json_integer((json_int_t)st.writebacks));
		json_object_set_new(o, "bytes_h2d", json_integer((json_int_t)st.bytes_in));
		json_object_set_new(o, "bytes_d2h", json_integer((json_int_t)st.bytes_out));
		json_object_set_new(o, "numa_node", json_integer(d->dev.numa_node));
		json_object_set_new(o, "pci", json_string(d->dev.pci_busid));
	}
	return o;
}

static json_t *devices_json(struct server *srv)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < engine_device_count(srv->engine); i++)
		json_array_append_new(arr, device_json(srv, i));
	return arr;
}

/* Where each buffer's valid copies are ("host", "clcpu0*": * = owner). */
static json_t *buffers_json(struct server *srv, struct session *s)
{
	json_t *arr = json_array();
	char where[256];
	size_t n = 0;
	pthread_mutex_lock(&s->intake_lock);
	for (uint32_t i = 0; i < s->bufs_cap && n < STATUS_MAX_BUFFERS; i++) {
		struct buffer *b = session_buffer_at(s, i);
		if (!b)
			continue;
		residency_describe(&srv->res, &b->data, where, sizeof(where));
		json_array_append_new(arr,
		                      json_pack("{s:I, s:I, s:s}", "handle", (json_int_t)b->handle,
		                                "bytes", (json_int_t)b->bytes, "valid", where));
		n++;
	}
	pthread_mutex_unlock(&s->intake_lock);
	return arr;
}

static json_t *clients_json(struct server *srv)
{
	json_t *arr = json_array();
	for (struct conn *c = srv->conns; c; c = c->next) {
		struct session *s = c->s;
		if (!s)
			continue;
		json_array_append_new(
		        arr,
		        json_pack("{s:I, s:i, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:o}", "session",
		                  (json_int_t)s->id, "pid", (int)s->pid, "uid", (int)s->uid,
		                  "weight", (int)s->flow.weight, "policy_hint",
		                  policy_hint_name(s->flow.policy_hint), "buffers",
		                  (json_int_t)atomic_load(&s->buffers_count), "buffer_bytes",
		                  (json_int_t)atomic_load(&s->buffer_bytes), "graphs_in_flight",
		                  (json_int_t)atomic_load(&s->graphs_in_flight), "tasks_in_flight",
		                  (json_int_t)atomic_load(&s->tasks_in_flight), "replicas",
		                  buffers_json(srv, s)));
	}
	return arr;
}

static json_t *counters_json(struct server *srv)
{
	struct daemon_counters *k = &srv->counters;
	struct engine_counters e;
	engine_counters(srv->engine, &e);
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
	                 "sessions_total", (json_int_t)atomic_load(&k->sessions_total),
	                 "sessions_live", (json_int_t)atomic_load(&k->sessions_live),
	                 "buffers_live", (json_int_t)atomic_load(&k->buffers_live),
	                 "buffer_bytes_live", (json_int_t)atomic_load(&k->buffer_bytes_live),
	                 "graphs_accepted", (json_int_t)atomic_load(&k->graphs_accepted),
	                 "graphs_rejected", (json_int_t)atomic_load(&k->graphs_rejected),
	                 "graphs_done", (json_int_t)e.graphs_done, "protocol_errors",
	                 (json_int_t)atomic_load(&k->protocol_errors), "tasks_done",
	                 (json_int_t)e.tasks_done, "tasks_failed", (json_int_t)e.tasks_failed,
	                 "tasks_canceled", (json_int_t)e.tasks_canceled, "tasks_in_flight",
	                 (json_int_t)e.tasks_in_flight, "tasks_reserved",
	                 (json_int_t)atomic_load(&k->session_tasks_in_flight), "queued",
	                 (json_int_t)e.queued);
}

char *control_status_json(struct server *srv)
{
	struct engine_counters e;
	engine_counters(srv->engine, &e);
	json_t *doc =
	        json_pack("{s:s, s:i, s:i, s:f, s:s, s:b, s:b, s:o, s:o, s:o}", "socket",
	                  srv->socket_path, "pid", (int)getpid(), "wire_version", TDM_WIRE_VERSION,
	                  "uptime_s", (double)(clock_monotonic_ns() - srv->start_ns) / 1e9,
	                  "policy", engine_policy_name(srv->engine), "policy_fallback", e.fallback,
	                  "draining", srv->draining, "devices", devices_json(srv), "clients",
	                  clients_json(srv), "counters", counters_json(srv));
	if (!doc)
		return NULL;
	char *text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}
