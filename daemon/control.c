/* The documents behind `tandemctl status`, the recordings of `tandemctl
 * trace` and the machine description of `tandemctl calibrate --export`. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "sim/machine.h"
#include "policies/llm.h"
#include "policies/llm_moe.h"
#include "policies/policy.h"
#include "profiler/profiler.h"
#include "daemon/elastic.h"
#include "daemon/metrics.h"
#include "daemon/reply.h"
#include "daemon/server.h"
#include "tandem.h"

/* Buffers listed per client in the status document, at most. */
#define STATUS_MAX_BUFFERS 64

/* A histogram's buckets (per bucket, not cumulative). */
static json_t *histogram_json(_Atomic uint64_t *h)
{
	json_t *arr = json_array();
	for (size_t b = 0; b < ENGINE_LAT_BUCKETS; b++)
		json_array_append_new(arr, json_integer((json_int_t)atomic_load(&h[b])));
	return arr;
}

/* Tasks run to completion by kernel name, the kernels that ran. */
static json_t *kernels_json(struct engine_device *d)
{
	json_t *o = json_object();
	for (uint32_t k = 0; k < KERNEL_COUNT; k++) {
		uint64_t n = atomic_load(&d->kernel_tasks[k]);
		const struct kernel_def *def = kernel_by_id(k);
		if (n && def)
			json_object_set_new(o, def->name, json_integer((json_int_t)n));
	}
	return o;
}

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
	if (!o)
		return NULL;
	/* The id tasks report (TASK_INFO's device), the same device's always, and where the
	 * device is in its life (docs/elastic.md). */
	json_object_set_new(o, "id", json_integer((json_int_t)i));
	json_object_set_new(o, "state", json_string(elastic_state_name(srv, (unsigned)i)));
	json_object_set_new(o, "busy", json_integer(engine_device_busy(srv->engine, (unsigned)i)));
	json_object_set_new(o, "staged", json_integer(atomic_load(&d->staged)));
	json_object_set_new(o, "kernels", kernels_json(d));
	json_object_set_new(o, "wait_hist", histogram_json(d->wait_hist));
	json_object_set_new(o, "run_hist", histogram_json(d->run_hist));
	json_object_set_new(o, "wait_ns", json_integer((json_int_t)atomic_load(&d->wait_ns)));
	json_object_set_new(o, "run_ns", json_integer((json_int_t)atomic_load(&d->run_ns)));
	json_object_set_new(o, "predicted", json_integer((json_int_t)atomic_load(&d->predicted)));
	json_object_set_new(o, "pred_err_ns",
	                    json_integer((json_int_t)atomic_load(&d->pred_err_ns)));
	json_object_set_new(o, "pred_actual_ns",
	                    json_integer((json_int_t)atomic_load(&d->pred_actual_ns)));
	if (backend_is_accelerator(&d->dev)) {
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

/* Whether a later id has device i's name (it was removed and added again). */
static bool superseded(struct server *srv, size_t i)
{
	const char *name = engine_device(srv->engine, i)->dev.name;
	for (size_t j = i + 1; j < engine_device_count(srv->engine); j++)
		if (!strcmp(engine_device(srv->engine, j)->dev.name, name))
			return true;
	return false;
}

static json_t *devices_json(struct server *srv, bool latest_only)
{
	json_t *arr = json_array();
	for (size_t i = 0; i < engine_device_count(srv->engine); i++)
		if (!latest_only || !superseded(srv, i))
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
	for (uint32_t i = 0; i < s->slots_used && n < STATUS_MAX_BUFFERS; i++) {
		struct buffer *b = session_buffer_at(s, i);
		if (!b)
			continue;
		residency_describe(&srv->res, &b->data, where, sizeof(where));
		json_t *o = json_pack("{s:I, s:I, s:s}", "handle", (json_int_t)b->handle, "bytes",
		                      (json_int_t)b->bytes, "valid", where);
		if (o && b->growable) { /* bytes is its capacity */
			json_object_set_new(o, "used",
			                    json_integer((json_int_t)atomic_load(&b->extent)));
			json_object_set_new(o, "backed", json_integer((json_int_t)b->backed));
		}
		json_array_append_new(arr, o);
		n++;
	}
	pthread_mutex_unlock(&s->intake_lock);
	return arr;
}

/* Every client for an administrator; another user's own clients only. */
static json_t *clients_json(struct server *srv, bool all, uid_t uid)
{
	json_t *arr = json_array();
	for (struct conn *c = srv->conns; c; c = c->next) {
		struct session *s = c->s;
		if (!s || (!all && s->uid != uid))
			continue;
		json_array_append_new(
		        arr,
		        json_pack(
		                "{s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:o}",
		                "tasks_done", (json_int_t)atomic_load(&s->flow.tasks_done),
		                "busy_ns", (json_int_t)atomic_load(&s->flow.busy_ns), "graphs_done",
		                (json_int_t)atomic_load(&s->flow.graphs_done), "session",
		                (json_int_t)s->id, "pid", (int)s->pid, "uid", (int)s->uid, "weight",
		                (int)s->flow.weight, "policy_hint",
		                policy_hint_name(s->flow.policy_hint), "buffers",
		                (json_int_t)atomic_load(&s->buffers_count), "buffer_bytes",
		                (json_int_t)atomic_load(&s->buffer_bytes), "graphs_in_flight",
		                (json_int_t)atomic_load(&s->graphs_in_flight), "tasks_in_flight",
		                (json_int_t)atomic_load(&s->tasks_in_flight), "replicas",
		                buffers_json(srv, s)));
	}
	return arr;
}

/* Graphs rejected, by the field at fault (TDM_REJECT_FIELD_MAP's names,
 * in lower case), every field listed. */
static json_t *rejects_json(struct daemon_counters *k)
{
	static const char *const names[] = {
#define REJECT_NAME(name, value, what) [value] = #name,
		TDM_REJECT_FIELD_MAP(REJECT_NAME)
#undef REJECT_NAME
	};
	json_t *o = json_object();
	for (size_t f = 0; f < TDM_REJECT__COUNT; f++) {
		char key[32];
		size_t n = 0;
		for (; names[f][n] && n + 1 < sizeof(key); n++)
			key[n] = (char)tolower((unsigned char)names[f][n]);
		key[n] = '\0';
		json_object_set_new(
		        o, key, json_integer((json_int_t)atomic_load(&k->rejected_by_field[f])));
	}
	return o;
}

static json_t *counters_json(struct server *srv)
{
	struct daemon_counters *k = &srv->counters;
	struct engine_counters e;
	engine_counters(srv->engine, &e);
	json_t *o =
	        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	                  "s:I, s:I, s:I}",
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
	                  (json_int_t)e.queued, "connections", (json_int_t)srv->nconns,
	                  "connections_refused", (json_int_t)atomic_load(&k->connections_refused),
	                  "mappings", (json_int_t)atomic_load(&srv->env.mappings));
	if (o) {
		json_object_set_new(o, "clients", json_integer(srv->nclients));
		json_object_set_new(o, "graphs_submitted",
		                    json_integer((json_int_t)e.graphs_submitted));
		json_object_set_new(o, "rejected_by_field", rejects_json(k));
	}
	return o;
}

/* The histograms' bucket bounds, the last (+Inf) left out. */
static json_t *latency_bounds_json(void)
{
	json_t *arr = json_array();
	for (size_t b = 0; b + 1 < ENGINE_LAT_BUCKETS; b++)
		json_array_append_new(arr, json_integer((json_int_t)engine_latency_bound_ns(b)));
	return arr;
}

/* The llm policy's MoE split (policies/llm_moe.h): per layer, the experts
 * looked up at release, hits, where they went and the bytes loaded; and
 * whether the resident experts pay for this routing (the predicted time
 * they saved against the predicted link time of the loads). NULL when the
 * policy is not llm or has no accelerator to split with. */
static json_t *moe_json(struct server *srv)
{
	struct llm_moe_stats st;
	if (strcmp(engine_policy_name(srv->engine), policy_llm.name) != 0 ||
	    llm_policy_moe_stats(engine_policy_priv(srv->engine), &st) != 0)
		return NULL;
	json_t *layers = json_array();
	for (uint32_t l = 0; l < st.layers; l++) {
		const struct llm_moe_layer *L = &st.layer[l];
		json_array_append_new(
		        layers,
		        json_pack("{s:i, s:I, s:I, s:f, s:I, s:I, s:I, s:I}", "layer", (int)l,
		                  "lookups", (json_int_t)L->lookups, "hits", (json_int_t)L->hits,
		                  "hit_pct", L->lookups ? 100.0 * L->hits / L->lookups : 0.0,
		                  "on_cpu", (json_int_t)L->on_cpu, "on_accel",
		                  (json_int_t)L->on_accel, "loads", (json_int_t)L->loads,
		                  "load_bytes", (json_int_t)L->load_bytes));
	}
	json_t *doc = json_pack("{s:I, s:f, s:f, s:b, s:I, s:I, s:I, s:I, s:o}", "splits",
	                        (json_int_t)st.splits, "saved_ns", st.saved_ns, "load_ns",
	                        st.load_ns, "cache_pays", st.saved_ns > st.load_ns, "decide_ns_max",
	                        (json_int_t)st.decide_ns_max, "cache_cap", (json_int_t)st.cache_cap,
	                        "cached", (json_int_t)st.cached, "cache_admits",
	                        (json_int_t)st.cache_admits, "layers", layers);
	/* The accelerator's split between KV and experts at the last router,
	 * and the next-layer prefetch. */
	const struct {
		const char *key;
		uint64_t v;
	} more[] = {
		{ "budget_bytes", st.budget_bytes },
		{ "kv_bytes", st.kv_bytes },
		{ "expert_bytes", st.expert_bytes },
		{ "budget_evictions", st.budget_evictions },
		{ "unhome_pending", st.unhome_pending },
		{ "prefetches", st.prefetches },
		{ "prefetch_bytes", st.prefetch_bytes },
		{ "prefetch_used_bytes", st.prefetch_used_bytes },
		{ "prefetch_wasted_bytes", st.prefetch_wasted_bytes },
		{ "prefetch_late", st.prefetch_late },
	};
	for (size_t i = 0; doc && i < sizeof(more) / sizeof(more[0]); i++)
		json_object_set_new(doc, more[i].key, json_integer((json_int_t)more[i].v));
	return doc;
}

json_t *control_status_doc(struct server *srv, const struct status_view *v)
{
	struct engine_counters e;
	engine_counters(srv->engine, &e);
	json_t *doc = json_pack(
	        "{s:s, s:i, s:i, s:f, s:s, s:b, s:b, s:b, s:o, s:o, s:o}", "socket",
	        srv->socket_path, "pid", (int)getpid(), "wire_version", TDM_WIRE_VERSION,
	        "uptime_s", (double)(clock_monotonic_ns() - srv->start_ns) / 1e9, "policy",
	        engine_policy_name(srv->engine), "policy_fallback", e.fallback, "draining",
	        srv->draining, "all_clients", v->all, "devices", devices_json(srv, v->latest_only),
	        "latency_bounds_ns", latency_bounds_json(), "counters", counters_json(srv));
	if (doc) {
		json_object_set_new(doc, "available", elastic_available_json(srv));
		json_object_set_new(json_object_get(doc, "counters"), "device_events",
		                    elastic_events_json(srv));
	}
	if (doc && v->clients)
		json_object_set_new(doc, "clients", clients_json(srv, v->all, v->uid));
	if (doc)
		json_object_set_new(doc, "metrics_listen", json_string(metrics_address(srv)));
	json_t *moe = doc ? moe_json(srv) : NULL;
	if (moe)
		json_object_set_new(doc, "moe", moe);
	return doc;
}

char *control_status_json(struct server *srv, const struct conn *c)
{
	struct status_view v = {
		.all = server_peer_admin(srv, c->uid, c->gid, c->groups, c->ngroups),
		.uid = c->uid,
		.clients = true,
	};
	return reply_text(control_status_doc(srv, &v));
}

/* ---- tandemctl client weight, uid quota ---------------------------------------- */

static int client_weight(struct server *srv, const struct tdm_ctl_client *r, char **doc)
{
	if (r->value < 1 || r->value > 1000) {
		*doc = reply_refusal(TDM_CTL_REASON_BAD_REQUEST, "weight: 1 to 1000");
		return -TDM_EINVAL;
	}
	for (struct conn *c = srv->conns; c; c = c->next) {
		if (!c->s || c->s->id != r->id)
			continue;
		uint32_t was = session_set_weight(c->s, (uint32_t)r->value);
		log_info("session %u (pid %d): weight %u (was %u)", c->s->id, (int)c->pid,
		         (unsigned)r->value, was);
		*doc = reply_text(json_pack("{s:s, s:I, s:I, s:I}", "op", "weight", "session",
		                            (json_int_t)r->id, "value", (json_int_t)r->value,
		                            "previous", (json_int_t)was));
		return 0;
	}
	*doc = reply_refusal(TDM_CTL_REASON_UNKNOWN_CLIENT, "weight: no client has session %u",
	                     r->id);
	return -TDM_EINVAL;
}

static int uid_quota(struct server *srv, const struct tdm_ctl_client *r, char **doc)
{
	if (r->value && (r->value < 4096 || r->value > (UINT64_C(1) << 48))) {
		*doc = reply_refusal(TDM_CTL_REASON_BAD_REQUEST,
		                     "quota: 4096 bytes to 2^48, or 0 for the configured one");
		return -TDM_EINVAL;
	}
	struct uid_usage *u = server_uid_usage(srv, (uid_t)r->id);
	if (!u) {
		*doc = reply_error("quota: out of memory");
		return -TDM_ENOMEM;
	}
	if (!u->limited) {
		*doc = reply_refusal(TDM_CTL_REASON_STATE,
		                     "quota: uid %u (root or the daemon's) has no quota", r->id);
		return -TDM_EINVAL;
	}
	uint64_t was = uid_buffer_quota(u, &srv->cfg);
	atomic_store(&u->buffer_quota, r->value);
	uint64_t now = uid_buffer_quota(u, &srv->cfg);
	/* Buffers held beyond a smaller quota stay; new ones are refused. */
	log_info("uid %u: buffer quota %llu bytes (was %llu)", r->id, (unsigned long long)now,
	         (unsigned long long)was);
	*doc = reply_text(json_pack("{s:s, s:I, s:I, s:I, s:b, s:I}", "op", "quota", "uid",
	                            (json_int_t)r->id, "value", (json_int_t)now, "previous",
	                            (json_int_t)was, "configured", r->value == 0, "held",
	                            (json_int_t)atomic_load(&u->buffer_bytes)));
	return 0;
}

int control_client_change(struct server *srv, const struct tdm_ctl_client *r, char **doc)
{
	switch (r->op) {
	case TDM_CLIENT_WEIGHT: return client_weight(srv, r, doc);
	case TDM_CLIENT_UID_QUOTA: return uid_quota(srv, r, doc);
	default:
		*doc = reply_refusal(TDM_CTL_REASON_BAD_REQUEST, "client: unknown operation");
		return -TDM_EINVAL;
	}
}

/* ---- tandemctl trace -------------------------------------------------------- */

/* This machine's name: the host name ("localhost" when it has none). */
static void host_name(char *out, size_t len)
{
	if (gethostname(out, len) != 0 || !out[0])
		snprintf(out, len, "localhost");
	out[len - 1] = '\0';
}

/* The recording connection c started, or NULL. */
static struct recording *recording_of(struct server *srv, const struct conn *c)
{
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++)
		if (recorder_active(&srv->recs[i].rec) && srv->recs[i].rec.owner == c)
			return &srv->recs[i];
	return NULL;
}

int control_trace_start(struct server *srv, struct conn *c, const int *fds, int nfds, char **doc)
{
	struct recording *slot = NULL;
	*doc = NULL;
	for (int i = 0; i < nfds; i++) {
		if (!recorder_fd_writable(fds[i])) {
			*doc = reply_error(
			        "trace: the outputs must be regular files open for writing");
			return -TDM_EINVAL;
		}
	}
	/* One recording per user; several users may record at once. */
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++) {
		struct recording *r = &srv->recs[i];
		if (!recorder_active(&r->rec)) {
			if (!slot)
				slot = r;
			continue;
		}
		struct conn *owner = r->rec.owner;
		if (owner && owner->uid == c->uid) {
			*doc = reply_error(
			        "a recording is already running for this user (tandemctl pid %d)",
			        (int)owner->pid);
			return -TDM_EBUSY;
		}
	}
	if (!slot) {
		*doc = reply_error("trace: as many recordings as the daemon keeps are running");
		return -TDM_EBUSY;
	}
	slot->all = server_peer_admin(srv, c->uid, c->gid, c->groups, c->ngroups);
	slot->uid = c->uid;
	int err = recorder_start(&slot->rec, c, fds[0], nfds > 1 ? fds[1] : -1);
	if (err) {
		*doc = reply_error("a recording is already running");
		return err;
	}
	log_info("trace: recording %s for tandemctl pid %d%s",
	         slot->all ? "every client" : "its user's clients", (int)c->pid,
	         nfds > 1 ? " (with a Chrome trace)" : "");
	*doc = reply_text(json_pack("{s:b, s:b}", "recording", 1, "all_clients", slot->all));
	return 0;
}

/* Ends a recording and writes its files. */
static int stop_and_write(struct server *srv, struct recording *r, char **doc)
{
	char host[256];
	size_t n = engine_device_count(srv->engine);
	const char **names = calloc(n ? n : 1, sizeof(*names));
	if (!names) {
		recorder_discard(&r->rec);
		*doc = reply_error("trace: out of memory");
		return -TDM_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		names[i] = engine_device(srv->engine, i)->dev.name;
	host_name(host, sizeof(host));
	struct recorder_env env = {
		.machine = host,
		.policy = engine_policy_name(srv->engine),
		.devices = names,
		.ndevices = (uint32_t)n,
	};
	int err = recorder_stop(&r->rec, &env, doc);
	free(names);
	return err;
}

int control_trace_stop(struct server *srv, struct conn *c, char **doc)
{
	struct recording *r = recording_of(srv, c);
	if (!r) {
		*doc = reply_error("no recording runs on this connection");
		return -TDM_EINVAL;
	}
	return stop_and_write(srv, r, doc);
}

void control_trace_gone(struct server *srv, struct conn *c)
{
	struct recording *r = recording_of(srv, c);
	if (!r)
		return;
	log_info("trace: tandemctl pid %d went away without stopping: recording discarded",
	         (int)c->pid);
	recorder_discard(&r->rec);
}

void control_trace_end(struct server *srv)
{
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++) {
		struct recording *r = &srv->recs[i];
		char *doc = NULL;
		if (!recorder_active(&r->rec))
			continue;
		struct conn *owner = r->rec.owner;
		log_info("trace: the daemon stops: writing the recording");
		int err = stop_and_write(srv, r, &doc);
		if (owner)
			conn_send_reply(owner, err, doc);
		else
			free(doc);
	}
}

/* ---- tandemctl calibrate --export -------------------------------------------- */

int control_export(struct server *srv, int fd, char **doc)
{
	char host[256];
	char *text = NULL;
	size_t len = 0;
	uint64_t bytes = 0;
	FILE *f;

	*doc = NULL;
	if (fd >= 0 && !recorder_fd_writable(fd)) {
		close(fd);
		*doc = reply_error("export: the output must be a regular file open for writing");
		return -TDM_EINVAL;
	}
	if (!srv->prof) { /* no cost models: see refuse_without_models (conn.c) */
		if (fd >= 0)
			close(fd);
		*doc = reply_error("export: this daemon has no cost models");
		return -TDM_EINVAL;
	}
	struct calibration *cal = calloc(1, sizeof(*cal));
	json_t *models = profiler_to_json(srv->prof);
	if (!cal) {
		if (fd >= 0)
			close(fd);
		free(cal);
		json_decref(models);
		*doc = reply_error("export: out of memory");
		return -TDM_ENOMEM;
	}
	profiler_calibration(srv->prof, cal);
	host_name(host, sizeof(host));
	f = fd >= 0 ? recorder_fd_stream(fd, &bytes) : open_memstream(&text, &len);
	if (!f && fd >= 0)
		close(fd);
	int err = f ? machine_write(f, host, srv->devs, srv->ndevs, cal, models) : -TDM_ENOMEM;
	if (f && fclose(f) != 0 && !err)
		err = -TDM_ESYS;
	free(cal);
	json_decref(models);
	if (err) {
		free(text);
		log_warn("export: the machine description was not written: %s", tdm_strerror(err));
		*doc = reply_error("%s", err == -TDM_ENOMEM
		                                 ? "export: out of memory"
		                                 : "export: cannot write the machine description");
		return err;
	}
	if (fd < 0) {
		if (len + sizeof(int32_t) > TDM_CTL_REPLY_MAX) {
			free(text);
			*doc = reply_error(
			        "export: the description is too large for a reply: pass a "
			        "file (tandemctl calibrate --export -o FILE)");
			return -TDM_ERANGE;
		}
		*doc = text;
		return 0;
	}
	*doc = reply_text(json_pack("{s:I}", "bytes", (json_int_t)bytes));
	return 0;
}
