/* The daemon's side of the profiler: where state lives, calibration at
 * start-up, the model store loaded at start and saved periodically and at
 * shutdown, and the documents behind `tandemctl models` and `calibrate`.
 *
 * The periodic save runs on a thread of its own, which the timer only
 * wakes: a save takes a file lock that any process of the daemon's uid can
 * hold, and merges with a file of up to 64 MiB, neither of which the event
 * loop may wait for. Each save waits a bounded time for the lock (the
 * last one, at shutdown, too), then gives up with a warning. */
#include "daemon/models.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/reply.h"
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

/* How long a save waits for the store's lock before it gives up with a
 * warning: a periodic one tries again at the next interval. At shutdown a
 * periodic save still waiting is canceled, and the last one waits
 * FINAL_SAVE_WAIT_MS at most, so that no lock holds the exit up for long. */
#define SAVE_WAIT_MS 1000
#define FINAL_SAVE_WAIT_MS 2000

struct models_saver {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool due; /* the timer asked for a save */
	bool stop; /* models_stop: exit */
	atomic_bool cancel; /* models_stop: stop waiting for the store's lock */
	unsigned failures; /* saves that failed in a row (saver thread only) */
};

/* One save; a failure is logged once per run of failures. */
static void save_now(struct server *srv, unsigned wait_ms, const atomic_bool *cancel,
                     unsigned *failures, const char *when)
{
	char err[256];
	unsigned none = 0;
	int rc;

	if (!srv->prof || !srv->cfg.persist_models || !srv->state_dir[0])
		return;
	if (!failures)
		failures = &none;
	rc = store_save(srv->prof, srv->state_dir, wait_ms, cancel, err, sizeof(err));
	if (rc == 0) {
		if (*failures)
			log_info("models: saved again after %u failed saves", *failures);
		*failures = 0;
	} else if (rc == -TDM_ECANCELED) {
		log_debug("models: %s", err); /* the last save follows */
	} else if ((*failures)++ == 0) {
		log_warn("models: not saved%s: %s", when, err);
	} else {
		log_debug("models: not saved%s: %s", when, err);
	}
}

static void *saver_main(void *arg)
{
	struct server *srv = arg;
	struct models_saver *sv = srv->saver;

	pthread_mutex_lock(&sv->lock);
	for (;;) {
		while (!sv->due && !sv->stop)
			pthread_cond_wait(&sv->cond, &sv->lock);
		if (sv->stop)
			break;
		sv->due = false;
		pthread_mutex_unlock(&sv->lock);
		save_now(srv, SAVE_WAIT_MS, &sv->cancel, &sv->failures, "");
		pthread_mutex_lock(&sv->lock);
	}
	pthread_mutex_unlock(&sv->lock);
	return NULL;
}

/* Event loop: only wakes the saver (a save still under way absorbs it). */
static void on_save_timer(evutil_socket_t fd, short what, void *arg)
{
	struct models_saver *sv = ((struct server *)arg)->saver;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&sv->lock);
	sv->due = true;
	pthread_cond_signal(&sv->cond);
	pthread_mutex_unlock(&sv->lock);
}

static int saver_start(struct server *srv)
{
	struct models_saver *sv = calloc(1, sizeof(*sv));
	sigset_t all, old;
	int rc;

	if (!sv)
		return -TDM_ENOMEM;
	pthread_mutex_init(&sv->lock, NULL);
	pthread_cond_init(&sv->cond, NULL);
	atomic_init(&sv->cancel, false);
	srv->saver = sv;
	/* Signals stay with the event loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&sv->thread, NULL, saver_main, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		pthread_cond_destroy(&sv->cond);
		pthread_mutex_destroy(&sv->lock);
		free(sv);
		srv->saver = NULL;
		log_error("models: cannot start the saver thread: %s", strerror(rc));
		return -TDM_ESYS;
	}
	return 0;
}

static void saver_stop(struct server *srv)
{
	struct models_saver *sv = srv->saver;

	if (!sv)
		return;
	atomic_store(&sv->cancel, true);
	pthread_mutex_lock(&sv->lock);
	sv->stop = true;
	pthread_cond_signal(&sv->cond);
	pthread_mutex_unlock(&sv->lock);
	pthread_join(sv->thread, NULL); /* a save under way stops waiting for the lock */
	pthread_cond_destroy(&sv->cond);
	pthread_mutex_destroy(&sv->lock);
	free(sv);
	srv->saver = NULL;
}

/* Residency's synchronous copies teach the transfer model (one at a time:
 * they are made under residency's lock). */
static void copy_observed(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t ns)
{
	profiler_observe_copy(ctx, (uint16_t)src, (uint16_t)dst, bytes, ns, 1);
}

/* tandemctl calibrate while devices may have left (daemon/elastic.c): the
 * devices gone are not touched (their hardware may be unplugged) and keep
 * their figures; the others are measured in engine order. */
static int calibrate_live(struct server *srv, const uint16_t *nodes, size_t n, bool force,
                          struct calibration *cal)
{
	struct backend_device *live = calloc(n ? n : 1, sizeof(*live));
	uint16_t *live_nodes = calloc(n ? n : 1, sizeof(*live_nodes));
	struct calibration *got = calloc(1, sizeof(*got));
	size_t m = 0;
	int rc = -TDM_ENOMEM;

	if (!live || !live_nodes || !got)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (engine_device_state(srv->engine, (unsigned)i) == ENGINE_DEV_GONE)
			continue;
		live[m] = srv->devs[i];
		live_nodes[m++] = nodes[i];
	}
	if (m == n) {
		rc = calibrate_load_or_run(srv->state_dir, srv->devs, nodes, n, force, cal);
		goto out;
	}
	rc = calibrate_load_or_run(srv->state_dir, live, live_nodes, m, force, got);
	if (rc)
		goto out;
	profiler_calibration(srv->prof, cal); /* the figures of those gone */
	for (size_t i = 0, j = 0; i < n; i++)
		if (engine_device_state(srv->engine, (unsigned)i) != ENGINE_DEV_GONE)
			cal->dev[i] = got->dev[j++];
	cal->ndevices = (uint32_t)n;
	for (uint32_t a = 0; a < got->nnodes; a++)
		for (uint32_t b = 0; b < got->nnodes; b++)
			cal->link[a][b] = got->link[a][b];
	if (got->nnodes > cal->nnodes)
		cal->nnodes = got->nnodes;
	cal->seconds = got->seconds;
	cal->from_cache = got->from_cache;
	memcpy(cal->fingerprint, got->fingerprint, sizeof(cal->fingerprint));
out:
	free(live);
	free(live_nodes);
	free(got);
	return rc;
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
	if (!srv->engine)
		return calibrate_load_or_run(srv->state_dir, srv->devs, nodes, n, force, cal);
	return calibrate_live(srv, nodes, n, force, cal);
}

static void log_calibration(const struct calibration *cal)
{
	log_info("profiler: calibration %s (%.2f s); a sleeping worker wakes in %.1f us",
	         cal->from_cache ? "from cache" : "measured", cal->seconds, cal->wake_ns / 1e3);
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
	int rc;

	if (!srv->cfg.save_interval_s || !srv->cfg.persist_models || !srv->state_dir[0])
		return 0;
	rc = saver_start(srv);
	if (rc)
		return rc;
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
	saver_stop(srv);
	if (!srv->prof)
		return;
	/* Always said when it fails: the models learned since the last save
	 * are lost. */
	save_now(srv, FINAL_SAVE_WAIT_MS, NULL, NULL, " at shutdown");
	profiler_destroy(srv->prof);
	srv->prof = NULL;
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
	return reply_text(doc);
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
	return reply_text(doc);
}
