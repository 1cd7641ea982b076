/* The daemon's side of the profiler: where state lives, calibration at
 * start-up, the model store loaded at start and saved periodically and at
 * shutdown, and the documents behind `tandemctl models` and `calibrate`. */
#include "daemon/models.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "profiler/store.h"
#include "tandem.h"

/* $STATE_DIRECTORY (systemd's StateDirectory=), else $XDG_STATE_HOME/tandem,
 * else /var/lib/tandem for root, else ~/.local/state/tandem. "" when none
 * applies (no HOME): nothing is cached or saved. */
static void default_state_dir(char *out, size_t len)
{
	const char *sd = getenv("STATE_DIRECTORY");
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n = 0;

	out[0] = '\0';
	if (sd && sd[0] == '/' && !strchr(sd, ':'))
		n = snprintf(out, len, "%s", sd);
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, len, "%s/tandem", xdg);
	else if (geteuid() == 0)
		n = snprintf(out, len, "/var/lib/tandem");
	else if (home && home[0] == '/')
		n = snprintf(out, len, "%s/.local/state/tandem", home);
	if (n < 0 || (size_t)n >= len)
		out[0] = '\0';
}

static void save_now(struct server *srv)
{
	char err[256];
	if (!srv->prof || !srv->cfg.persist_models || !srv->state_dir[0])
		return;
	if (store_save(srv->prof, srv->state_dir, err, sizeof(err)) != 0)
		log_warn("models: not saved: %s", err);
}

static void on_save_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	save_now(arg);
}

/* Residency's synchronous copies teach the transfer model (one at a time:
 * they are made under residency's lock). */
static void copy_observed(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t ns)
{
	profiler_observe_copy(ctx, (uint16_t)src, (uint16_t)dst, bytes, ns, 1);
}

static int calibrate(struct server *srv, bool force, struct calibration *cal)
{
	uint16_t nodes[SERVER_MAX_DEVICES];
	size_t n = srv->ndevs;

	if (n > CAL_MAX_DEVICES) {
		log_error("profiler: %zu devices, calibration handles %d", n, CAL_MAX_DEVICES);
		return -TDM_ECONFIG;
	}
	for (size_t i = 0; i < n; i++)
		nodes[i] = srv->devs[i].node;
	if (!srv->cfg.calibrate) {
		calibrate_defaults(n, srv->res.nnodes, cal);
		for (size_t i = 0; i < n; i++) {
			calibrate_device_key(&srv->devs[i], cal->dev[i].key,
			                     sizeof(cal->dev[i].key));
			cal->dev[i].node = nodes[i];
		}
		log_info("profiler: calibration off; generic figures until tasks are measured");
		return 0;
	}
	return calibrate_load_or_run(srv->state_dir, srv->devs, nodes, n, force, cal);
}

static void log_calibration(const struct calibration *cal)
{
	log_info("profiler: calibration %s (%.2f s)", cal->from_cache ? "from cache" : "measured",
	         cal->seconds);
	for (uint32_t i = 0; i < cal->ndevices; i++) {
		const struct cal_device *d = &cal->dev[i];
		if (i && !strcmp(d->key, cal->dev[i - 1].key))
			continue; /* identical cores: said once */
		log_info("profiler: %s: sgemm %.1f GFLOP/s, memory %.1f GB/s, launch %.0f ns",
		         d->key, d->gemm_gflops, d->mem_gbps, d->launch_ns);
	}
}

int models_start(struct server *srv)
{
	struct calibration *cal = calloc(1, sizeof(*cal));
	char err[256];
	int rc;

	if (!cal)
		return -TDM_ENOMEM;
	if (srv->cfg.state_dir[0])
		snprintf(srv->state_dir, sizeof(srv->state_dir), "%s", srv->cfg.state_dir);
	else
		default_state_dir(srv->state_dir, sizeof(srv->state_dir));
	if (!srv->state_dir[0])
		log_warn("profiler: no state directory (set daemon.state_dir): nothing is kept");
	rc = calibrate(srv, false, cal);
	if (rc == 0)
		rc = profiler_create(cal, &srv->prof);
	if (rc == 0) {
		srv->res.copy_ctx = srv->prof;
		srv->res.copy_observed = copy_observed;
		log_calibration(cal);
		if (srv->cfg.persist_models && srv->state_dir[0] &&
		    store_load(srv->prof, srv->state_dir, err, sizeof(err)) != 0)
			log_warn("models: %s: starting with empty models", err);
	}
	free(cal);
	return rc;
}

int models_arm(struct server *srv)
{
	if (!srv->cfg.save_interval_s || !srv->cfg.persist_models || !srv->state_dir[0])
		return 0;
	srv->ev_save = event_new(srv->base, -1, EV_PERSIST, on_save_timer, srv);
	struct timeval tv = { (time_t)srv->cfg.save_interval_s, 0 };
	if (!srv->ev_save || event_add(srv->ev_save, &tv) != 0)
		return -TDM_ESYS;
	return 0;
}

void models_stop(struct server *srv)
{
	if (srv->ev_save) {
		event_free(srv->ev_save);
		srv->ev_save = NULL;
	}
	if (!srv->prof)
		return;
	save_now(srv);
	profiler_destroy(srv->prof);
	srv->prof = NULL;
}

static char *dump(json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return text;
}

/* The device index -> model key map, so tandemctl can name devices. */
static json_t *devices_doc(struct server *srv, const struct calibration *cal)
{
	json_t *arr = json_array();
	for (uint32_t i = 0; arr && i < cal->ndevices && i < srv->ndevs; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:I}", "name", srv->devs[i].name,
		                                     "key", cal->dev[i].key, "node",
		                                     (json_int_t)cal->dev[i].node));
	return arr;
}

char *models_json(struct server *srv)
{
	struct calibration *cal = calloc(1, sizeof(*cal));
	json_t *doc = srv->prof ? profiler_to_json(srv->prof) : NULL;

	if (!cal || !doc) {
		free(cal);
		json_decref(doc);
		return NULL;
	}
	profiler_calibration(srv->prof, cal);
	json_object_set_new(doc, "devices", devices_doc(srv, cal));
	json_object_set_new(doc, "state_dir", json_string(srv->state_dir));
	free(cal);
	return dump(doc);
}

char *models_calibrate(struct server *srv)
{
	struct calibration *cal = calloc(1, sizeof(*cal));
	json_t *doc = NULL;

	if (!cal || !srv->prof)
		goto out;
	/* Runs on the event loop while the workers go on: the figures are
	 * taken under whatever load there is (the reply says how long). */
	if (calibrate(srv, true, cal) != 0)
		goto out;
	profiler_set_calibration(srv->prof, cal);
	log_calibration(cal);
	doc = calibration_to_json(cal);
	if (doc)
		json_object_set_new(doc, "devices_by_name", devices_doc(srv, cal));
out:
	free(cal);
	return dump(doc);
}
