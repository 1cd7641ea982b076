/* The status document behind `tandemctl status`. */
#include <jansson.h>
#include <unistd.h>

#include "daemon/server.h"
#include "tandem.h"

static json_t *devices_json(struct server *srv)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < engine_device_count(srv->engine); i++) {
		const struct engine_device *d = engine_device(srv->engine, i);
		json_array_append_new(
		        arr,
		        json_pack("{s:I, s:s, s:s, s:i, s:I, s:I}", "index", (json_int_t)i, "name",
		                  d->dev.name, "kind", d->dev.ops->name, "cpu", d->dev.os_index,
		                  "tasks_run",
		                  (json_int_t)atomic_load(&((struct engine_device *)d)->tasks_run),
		                  "busy_ns",
		                  (json_int_t)atomic_load(&((struct engine_device *)d)->busy_ns)));
	}
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
		        json_pack("{s:I, s:i, s:i, s:I, s:I, s:I, s:I}", "session",
		                  (json_int_t)s->id, "pid", (int)s->pid, "uid", (int)s->uid,
		                  "buffers", (json_int_t)atomic_load(&s->buffers_count),
		                  "buffer_bytes", (json_int_t)atomic_load(&s->buffer_bytes),
		                  "graphs_in_flight", (json_int_t)atomic_load(&s->graphs_in_flight),
		                  "tasks_in_flight", (json_int_t)atomic_load(&s->tasks_in_flight)));
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
	json_t *doc = json_pack(
	        "{s:s, s:i, s:i, s:f, s:s, s:b, s:o, s:o, s:o}", "socket", srv->socket_path, "pid",
	        (int)getpid(), "wire_version", TDM_WIRE_VERSION, "uptime_s",
	        (double)(clock_monotonic_ns() - srv->start_ns) / 1e9, "policy",
	        engine_policy_name(srv->engine), "draining", srv->draining, "devices",
	        devices_json(srv), "clients", clients_json(srv), "counters", counters_json(srv));
	if (!doc)
		return NULL;
	char *text = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return text;
}
