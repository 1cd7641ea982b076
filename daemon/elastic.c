/* Devices that join, drain and leave while clients run (elastic.h). */
#include "daemon/elastic.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/reply.h"
#include "daemon/server.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* A removal waits for its device to finish what it runs, looking this
 * often, at most this long; then the device is removed anyway: it is gone
 * for the policy at once, and its worker leaves once what is staged there
 * finished (engine_device_remove; a task whose device fails meanwhile runs
 * again elsewhere). */
#define REMOVE_TICK_MS 10
#define REMOVE_TIMEOUT_MS 5000
#define MAX_BACKENDS 16
#define PROBE_MAX 64 /* devices one backend may report to a rescan */

struct found_device {
	struct backend_device dev; /* owns the backend's handles */
	int id; /* the engine id that uses it now (any state); -1: available */
};

struct removal {
	unsigned id;
	struct conn *conn; /* waits for the reply; NULL: nobody (SIGHUP, or it left) */
	uint64_t start_ns;
};

enum event_kind {
	EV_ADD,
	EV_DRAIN,
	EV_RESUME,
	EV_REMOVE,
	EV_BUDGET,
	EV_RESCAN,
	EV_FAULT,
	EV_COUNT
};
static const char *const event_names[EV_COUNT] = { "add",    "drain",  "resume", "remove",
	                                           "budget", "rescan", "fault" };

/* A device measured on the job's thread, to be added on the loop. */
struct measured {
	struct cal_device fig;
	struct cal_link up, down; /* host -> its node, its node -> host (accelerators) */
	bool ok;
};

enum job_kind { JOB_MEASURE, JOB_RESCAN, JOB_BUDGET };

/* A memory budget to set: shrinking writes back what only the evicted
 * replicas hold, which may take a while: on the thread too. */
struct budget_change {
	unsigned id, node;
	uint64_t bytes;
	int err;
};

/* Work for the thread, one job at a time: probing the backends again
 * (RESCAN), measuring devices of models never calibrated (MEASURE, and the
 * new devices a rescan finds), setting memory budgets (BUDGET; SIGHUP's
 * ride along with its MEASURE). Input and output are the job's own; the
 * thread reads nothing else that the loop changes. */
struct job {
	enum job_kind kind;
	struct conn *conn; /* waits for the reply; NULL: nobody */
	struct daemon_config *cfg; /* RESCAN: the selection when it began */
	const struct calibration *cal; /* the figures when it began */
	/* RESCAN: the names known when it began, which the thread skips */
	char (*known)[BACKEND_DEVICE_NAME_MAX];
	size_t nknown;
	const struct backend_component *comp[MAX_BACKENDS];
	const struct backend_ops *ops[MAX_BACKENDS];
	size_t nbackends;
	void *topology;
	const int *cores;
	size_t ncores;
	/* MEASURE: the devices (copies of found ones); RESCAN: what the probe
	 * found, each with its backend in from[] */
	struct backend_device dev[PROBE_MAX];
	size_t from[PROBE_MAX];
	struct measured meas[PROBE_MAX];
	size_t ndev;
	uint64_t start_ns;
	char note[256]; /* RESCAN: a backend that could not probe */
	/* BUDGET */
	struct residency *res;
	struct budget_change budget[PROBE_MAX];
	size_t nbudget;
};

struct elastic {
	struct found_device *found;
	size_t nfound, cap;
	/* The backends used at start, which a rescan probes again. */
	const struct backend_component *comp[MAX_BACKENDS];
	const struct backend_ops *ops[MAX_BACKENDS];
	size_t nbackends;
	struct removal *removals;
	size_t nremovals, removals_cap;
	struct event *ev_tick;
	/* ids whose going was counted (a removal, or a fault seen by reap) */
	bool gone_counted[ENGINE_MAX_DEVICES];
	pthread_t thread;
	bool running;
	_Atomic bool done;
	struct job *job;
	bool reload_pending; /* a SIGHUP came while the job ran */
	uint64_t events[EV_COUNT];
};

static struct elastic *E_(const struct server *srv)
{
	return srv->elastic;
}

int elastic_create(struct server *srv)
{
	srv->elastic = calloc(1, sizeof(struct elastic));
	return srv->elastic ? 0 : -TDM_ENOMEM;
}

int elastic_found(struct server *srv, const struct backend_device *d, int id)
{
	struct elastic *E = E_(srv);
	if (E->nfound == E->cap) {
		size_t ncap = E->cap ? 2 * E->cap : 16;
		struct found_device *n = realloc(E->found, ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		E->found = n;
		E->cap = ncap;
	}
	E->found[E->nfound++] = (struct found_device){ .dev = *d, .id = id };
	return 0;
}

void elastic_backend(struct server *srv, const struct backend_component *c,
                     const struct backend_ops *ops)
{
	struct elastic *E = E_(srv);
	if (E->nbackends < MAX_BACKENDS) {
		E->comp[E->nbackends] = c;
		E->ops[E->nbackends++] = ops;
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg);

int elastic_arm(struct server *srv)
{
	struct elastic *E = E_(srv);
	E->ev_tick = evtimer_new(srv->base, on_tick, srv);
	return E->ev_tick ? 0 : -TDM_ENOMEM;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	free(j->cfg);
	free((void *)j->cal);
	free(j->known);
	free(j);
}

void elastic_stop(struct server *srv)
{
	struct elastic *E = E_(srv);
	if (!E || !E->running)
		return;
	pthread_join(E->thread, NULL);
	E->running = false;
	/* Devices a rescan found and nobody took. */
	if (E->job && E->job->kind == JOB_RESCAN)
		for (size_t i = 0; i < E->job->ndev; i++)
			if (E->job->dev[i].ops->release)
				E->job->dev[i].ops->release(&E->job->dev[i]);
	job_free(E->job);
	E->job = NULL;
}

void elastic_release(struct server *srv)
{
	struct elastic *E = E_(srv);
	if (!E)
		return;
	for (size_t i = 0; i < E->nfound; i++)
		if (E->found[i].dev.ops->release)
			E->found[i].dev.ops->release(&E->found[i].dev);
	E->nfound = 0;
}

void elastic_destroy(struct server *srv)
{
	struct elastic *E = E_(srv);
	if (!E)
		return;
	if (E->ev_tick)
		event_free(E->ev_tick);
	free(E->removals);
	free(E->found);
	free(E);
	srv->elastic = NULL;
}

/* ---- lookups ----------------------------------------------------------------- */

static ssize_t found_by_name(const struct elastic *E, const char *name)
{
	for (size_t i = 0; i < E->nfound; i++)
		if (!strcmp(E->found[i].dev.name, name))
			return (ssize_t)i;
	return -1;
}

/* The newest engine id with this name (an older one may be gone), or -1. */
static int id_by_name(const struct server *srv, const char *name)
{
	for (size_t i = engine_device_count(srv->engine); i-- > 0;)
		if (!strcmp(engine_device(srv->engine, i)->dev.name, name))
			return (int)i;
	return -1;
}

static unsigned active_count(const struct server *srv)
{
	unsigned n = 0;
	for (size_t i = 0; i < engine_device_count(srv->engine); i++)
		n += engine_device_state(srv->engine, (unsigned)i) == ENGINE_DEV_ACTIVE;
	return n;
}

static struct removal *removal_of(struct elastic *E, unsigned id)
{
	for (size_t i = 0; i < E->nremovals; i++)
		if (E->removals[i].id == id)
			return &E->removals[i];
	return NULL;
}

const char *elastic_state_name(const struct server *srv, unsigned id)
{
	switch (engine_device_state(srv->engine, id)) {
	case ENGINE_DEV_ACTIVE: return "active";
	case ENGINE_DEV_DRAINING: return "draining";
	default: return "gone";
	}
}

/* The part of a device's status entry a change reply carries. */
static json_t *device_brief(struct server *srv, unsigned id)
{
	const struct engine_device *d = engine_device(srv->engine, id);
	return json_pack("{s:I, s:s, s:s, s:s, s:I}", "id", (json_int_t)id, "name", d->dev.name,
	                 "kind", device_kind_name(d->dev.kind), "state",
	                 elastic_state_name(srv, id), "busy",
	                 (json_int_t)engine_device_busy(srv->engine, id));
}

/* Found devices whose engine id went GONE and which run nothing any more
 * are available again; a GONE we did not ask for is a fault's. */
static void reap(struct server *srv)
{
	struct elastic *E = E_(srv);
	for (size_t k = 0; k < E->nfound; k++) {
		struct found_device *f = &E->found[k];
		if (f->id < 0 ||
		    engine_device_state(srv->engine, (unsigned)f->id) != ENGINE_DEV_GONE)
			continue;
		if (!E->gone_counted[f->id]) {
			E->gone_counted[f->id] = true;
			E->events[EV_FAULT]++;
			log_warn(
			        "device %s (id %d) is gone after device faults: its tasks moved to "
			        "the others",
			        f->dev.name, f->id);
		}
		/* Available once it let go of everything: added again, it
		 * takes its id back. */
		if (engine_device_left(srv->engine, (unsigned)f->id))
			f->id = -1;
	}
}

static bool still_leaving(const struct server *srv)
{
	const struct elastic *E = E_(srv);
	for (size_t k = 0; k < E->nfound; k++)
		if (E->found[k].id >= 0 &&
		    engine_device_state(srv->engine, (unsigned)E->found[k].id) == ENGINE_DEV_GONE)
			return true;
	return false;
}

static void arm_tick(struct server *srv)
{
	struct elastic *E = E_(srv);
	struct timeval tv = { 0, REMOVE_TICK_MS * 1000 };
	if (E->ev_tick && !evtimer_pending(E->ev_tick, NULL))
		evtimer_add(E->ev_tick, &tv);
}

json_t *elastic_available_json(struct server *srv)
{
	struct elastic *E = E_(srv);
	json_t *arr = json_array();
	if (!E)
		return arr;
	reap(srv);
	for (size_t k = 0; k < E->nfound; k++) {
		const struct backend_device *d = &E->found[k].dev;
		if (E->found[k].id >= 0)
			continue;
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "name",
		                                     d->name, "kind", device_kind_name(d->kind),
		                                     "backend", d->ops->name, "model", d->model,
		                                     "cpu", d->os_index, "state", "available"));
	}
	return arr;
}

json_t *elastic_events_json(const struct server *srv)
{
	const struct elastic *E = E_(srv);
	json_t *o = json_object();
	for (size_t i = 0; i < EV_COUNT; i++)
		json_object_set_new(o, event_names[i],
		                    json_integer(E ? (json_int_t)E->events[i] : 0));
	return o;
}

/* ---- figures of a device that joins ------------------------------------------------ */

/* Whether the cost models have figures for d's kind and model. */
static bool model_known(const struct calibration *cal, const struct backend_device *d)
{
	char key[CAL_KEY_MAX];
	calibrate_device_key(d, key, sizeof(key));
	for (uint32_t i = 0; i < cal->ndevices; i++)
		if (!strcmp(cal->dev[i].key, key))
			return true;
	return false;
}

static struct calibration *calibration_now(const struct server *srv)
{
	struct calibration *cal = calloc(1, sizeof(*cal));
	if (cal && srv->prof)
		profiler_calibration(srv->prof, cal);
	else if (cal)
		calibrate_defaults(0, 1, cal);
	return cal;
}

/* The cost models learn the device about to become id before the engine
 * can place anything there: its measured figures (m), else those of a
 * device of its model, whose models it then shares; an accelerator's new
 * memory node gets the links measured with it, else those of that
 * device's node, the others derived through the host. */
static int price_device(struct server *srv, unsigned id, const struct backend_device *d,
                        const struct measured *m)
{
	if (!srv->prof)
		return 0;
	if (id >= CAL_MAX_DEVICES || d->node >= CAL_MAX_NODES)
		return -TDM_ENOSPC;
	struct calibration *cal = calibration_now(srv);
	struct calibration *def = malloc(sizeof(*def));
	if (!cal || !def) {
		free(cal);
		free(def);
		return -TDM_ENOMEM;
	}
	unsigned node = d->node;
	calibrate_defaults(1, node + 1, def);
	char key[CAL_KEY_MAX];
	calibrate_device_key(d, key, sizeof(key));
	int same = -1;
	for (uint32_t i = 0; i < cal->ndevices && same < 0; i++)
		if (!strcmp(cal->dev[i].key, key))
			same = (int)i;
	for (uint32_t i = cal->ndevices; i < id; i++)
		cal->dev[i] = def->dev[0];
	bool measured = m && m->ok;
	cal->dev[id] = measured ? m->fig : same >= 0 ? cal->dev[same] : def->dev[0];
	snprintf(cal->dev[id].key, sizeof(cal->dev[id].key), "%s", key);
	cal->dev[id].node = (uint16_t)node;
	if (id + 1 > cal->ndevices)
		cal->ndevices = id + 1;
	if (node && node >= cal->nnodes) {
		for (unsigned a = 0; a <= node; a++)
			for (unsigned b = 0; b <= node; b++)
				if (a >= cal->nnodes || b >= cal->nnodes)
					cal->link[a][b] = def->link[a][b];
		cal->nnodes = node + 1;
		unsigned o = same >= 0 ? cal->dev[same].node : 0;
		if (measured) {
			cal->link[0][node] = m->up;
			cal->link[node][0] = m->down;
		} else if (o) {
			cal->link[0][node] = cal->link[0][o];
			cal->link[node][0] = cal->link[o][0];
		}
		calibrate_derive_node(cal, node, cal->dev[id].mem_gbps);
	}
	int err = profiler_add_device(srv->prof, cal, id);
	free(cal);
	free(def);
	return err;
}

/* ---- adding a device ---------------------------------------------------------------- */

/* The id found device d had, when it comes back after it was GONE and
 * let go of everything (engine_device_left), or -1. */
static int id_back(const struct server *srv, const struct backend_device *d)
{
	for (size_t i = 0; i < srv->ndevs; i++) {
		const struct backend_device *o = &srv->devs[i];
		if (o->ops == d->ops && o->kind == d->kind && !strcmp(o->name, d->name) &&
		    !strcmp(o->model, d->model) && o->os_index == d->os_index &&
		    !strcmp(o->pci_busid, d->pci_busid) &&
		    engine_device_left(srv->engine, (unsigned)i))
			return (int)i;
	}
	return -1;
}

/* Puts found device k to work: the same device that comes back takes its
 * old id, memory node and cost model again; another gets a new id, a
 * memory node of its own for an accelerator (a node evacuated for good is
 * given again), its costs in the models (measured figures m, else its
 * model's). 0 and *id, or -TDM_E* with why and a reason word (a node taken
 * before a later step failed stays taken). */
static int add_device(struct server *srv, size_t k, const struct measured *m, unsigned *id,
                      const char **reason, char *why, size_t whylen)
{
	struct elastic *E = E_(srv);
	struct found_device *f = &E->found[k];
	size_t n = srv->ndevs;
	int back = id_back(srv, &f->dev);
	uint64_t cap = config_devval_lookup(srv->cfg.mem_cap, srv->cfg.n_mem_cap, f->dev.name,
	                                    device_kind_name(f->dev.kind), 0);
	*reason = TDM_CTL_REASON_CAPACITY;
	if (back >= 0 && backend_is_accelerator(&f->dev) &&
	    residency_take_node(&srv->res, &srv->devs[back], cap, srv->devs[back].node) < 0)
		back = -1; /* its node went to another device: it is new hardware here */
	if (back < 0 &&
	    (n >= SERVER_MAX_DEVICES || n >= ENGINE_MAX_DEVICES || n >= CAL_MAX_DEVICES)) {
		snprintf(why, whylen, "%s: no room for another device id (%zu given)", f->dev.name,
		         n);
		return -TDM_ENOSPC;
	}
	struct backend_device *slot;
	if (back >= 0) {
		/* Readers of the table see the same device: only what a probe
		 * gives anew changes. */
		slot = &srv->devs[back];
		if (slot->priv != f->dev.priv)
			slot->priv = f->dev.priv;
		if (slot->bind_set != f->dev.bind_set)
			slot->bind_set = f->dev.bind_set;
		n = (size_t)back;
	} else {
		slot = &srv->devs[n];
		*slot = f->dev;
		slot->node = 0;
	}
	if (back < 0 && backend_is_accelerator(slot)) {
		if (atomic_load(&srv->res.nnodes) >= RES_MAX_NODES) {
			snprintf(why, whylen, "%s: no room for another memory node (at most %d)",
			         slot->name, RES_MAX_NODES);
			return -TDM_ENOSPC;
		}
		/* The residency keeps a pointer to the table's copy. */
		int node = residency_add_node(&srv->res, slot, cap);
		if (node < 0) {
			*reason = TDM_CTL_REASON_FAILED;
			snprintf(why, whylen, "%s: no memory node: %s", slot->name,
			         tdm_strerror(node));
			return node;
		}
		slot->node = (uint16_t)node;
	}
	int err = price_device(srv, (unsigned)n, slot, m);
	if (err) {
		*reason = err == -TDM_ENOSPC ? TDM_CTL_REASON_CAPACITY : TDM_CTL_REASON_FAILED;
		snprintf(why, whylen, "%s: the cost models cannot take it: %s", slot->name,
		         tdm_strerror(err));
		return err;
	}
	struct engine_device_add_params ap = {
		.inject_faults = (uint32_t)config_devval_lookup(srv->cfg.fault_inject,
		                                                srv->cfg.n_fault_inject, slot->name,
		                                                device_kind_name(slot->kind), 0),
	};
	srv->inject_faults[n] = ap.inject_faults;
	unsigned got;
	err = engine_device_add_ex(srv->engine, slot, &ap, &got);
	if (err) {
		*reason = err == -TDM_ENOSPC ? TDM_CTL_REASON_CAPACITY : TDM_CTL_REASON_FAILED;
		snprintf(why, whylen, "%s: the engine refused it: %s", slot->name,
		         tdm_strerror(err));
		return err;
	}
	if (got != n)
		log_error("device %s: engine id %u, the daemon's table says %zu", slot->name, got,
		          n);
	if (back < 0)
		srv->ndevs = n + 1;
	f->id = (int)got;
	E->gone_counted[got] = false;
	E->events[EV_ADD]++;
	log_info("device %s %s id %u (%s%s)", slot->name, back >= 0 ? "came back as" : "joined as",
	         got, slot->ops->name,
	         m && m->ok ? ", measured now" : ", priced by the shared cost models");
	*id = got;
	return 0;
}

/* ---- the thread: probe again, measure new models --------------------------------- */

static bool job_knows(const struct job *j, const char *name)
{
	for (size_t i = 0; i < j->nknown; i++)
		if (!strcmp(j->known[i], name))
			return true;
	return false;
}

/* Measures dev[i] unless its model has figures (or an earlier device of
 * the job has the same model: then its figures are copied). */
static void job_measure(struct job *j, size_t i, uint16_t node_guess)
{
	const struct backend_device *d = &j->dev[i];
	char key[CAL_KEY_MAX];
	calibrate_device_key(d, key, sizeof(key));
	for (size_t p = 0; p < i; p++) {
		if (j->meas[p].ok && !strcmp(j->meas[p].fig.key, key)) {
			j->meas[i] = j->meas[p];
			return;
		}
	}
	struct calibration *scratch = malloc(sizeof(*scratch));
	if (!scratch)
		return;
	memcpy(scratch, j->cal, sizeof(*scratch));
	uint16_t node = backend_is_accelerator(d) ? node_guess : 0;
	if (calibrate_one(d, node, scratch->ndevices < CAL_MAX_DEVICES ? scratch->ndevices : 0,
	                  scratch) == 0) {
		uint32_t slot = scratch->ndevices - 1;
		j->meas[i].fig = scratch->dev[slot];
		j->meas[i].up = scratch->link[0][node];
		j->meas[i].down = scratch->link[node][0];
		j->meas[i].ok = true;
	}
	free(scratch);
}

static void *job_main(void *arg)
{
	struct server *srv = arg;
	struct elastic *E = E_(srv);
	struct job *j = E->job;
	/* Accelerators measured here get a node of their own in the scratch
	 * figures; add_device gives them their real one. */
	uint16_t node_guess =
	        (uint16_t)(j->cal->nnodes < CAL_MAX_NODES ? j->cal->nnodes : CAL_MAX_NODES - 1);
	for (size_t i = 0; i < j->nbudget; i++)
		j->budget[i].err =
		        residency_set_budget(j->res, j->budget[i].node, j->budget[i].bytes);
	if (j->kind == JOB_RESCAN) {
		struct backend_probe_params pp = {
			.topology = j->topology,
			.cores = j->cores,
			.ncores = j->ncores,
		};
		for (size_t b = 0; b < j->nbackends && j->ndev < PROBE_MAX; b++) {
			size_t n = 0;
			pp.note[0] = '\0';
			int err = j->ops[b]->probe(&pp, j->dev + j->ndev, PROBE_MAX - j->ndev, &n);
			if (err) {
				snprintf(j->note, sizeof(j->note), "%s: probe failed: %s",
				         j->comp[b]->name, tdm_strerror(err));
				continue;
			}
			for (size_t i = j->ndev; i < j->ndev + n; i++)
				j->from[i] = b;
			j->ndev += n;
		}
	}
	for (size_t i = 0; i < j->ndev; i++) {
		const struct backend_device *d = &j->dev[i];
		if (j->kind == JOB_RESCAN &&
		    (job_knows(j, d->name) || !server_device_wanted(j->cfg, d)))
			continue;
		if (model_known(j->cal, d))
			continue;
		job_measure(j, i, node_guess);
	}
	atomic_store(&E->done, true);
	server_kick(srv);
	return NULL;
}

/* Starts the job on its thread; it owns j from now on. */
static int job_start(struct server *srv, struct job *j)
{
	struct elastic *E = E_(srv);
	sigset_t all, old;
	j->cal = calibration_now(srv);
	if (!j->cal) {
		job_free(j);
		return -TDM_ENOMEM;
	}
	j->start_ns = clock_monotonic_ns();
	E->job = j;
	atomic_store(&E->done, false);
	/* Signals stay with the event loop's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&E->thread, NULL, job_main, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		E->job = NULL;
		job_free(j);
		return -TDM_ESYS;
	}
	E->running = true;
	return 0;
}

bool elastic_busy(const struct server *srv)
{
	const struct elastic *E = E_(srv);
	return E && E->running;
}

/* ---- requests ------------------------------------------------------------------------ */

#define DEFERRED 1 /* the reply comes later */

static int refuse(char **doc, int status, const char *reason, const char *fmt, const char *name)
{
	*doc = reply_refusal(reason, fmt, name);
	return status;
}

/* The engine id a drain, resume, remove or budget names: 0 and *id, or a
 * refusal. */
static int named_id(struct server *srv, const char *what, const char *name, unsigned *id,
                    char **doc)
{
	int i = id_by_name(srv, name);
	if (i < 0) {
		if (found_by_name(E_(srv), name) >= 0) {
			*doc = reply_refusal(
			        TDM_CTL_REASON_STATE,
			        "%s: %s is available, not in use (tandemctl device add %s)", what,
			        name, name);
			return -TDM_EINVAL;
		}
		*doc = reply_refusal(TDM_CTL_REASON_UNKNOWN_DEVICE,
		                     "%s: no device is named %s (tandemctl devices)", what, name);
		return -TDM_EINVAL;
	}
	if (engine_device_state(srv->engine, (unsigned)i) == ENGINE_DEV_GONE) {
		*doc = reply_refusal(TDM_CTL_REASON_GONE, "%s: %s (id %d) is gone", what, name, i);
		return -TDM_EINVAL;
	}
	*id = (unsigned)i;
	return 0;
}

static int op_add(struct server *srv, struct conn *c, const char *name, char **doc)
{
	struct elastic *E = E_(srv);
	ssize_t k = found_by_name(E, name);
	if (k < 0)
		return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_UNKNOWN_DEVICE,
		              "add: no device named %s was found (tandemctl devices rescan probes "
		              "again)",
		              name);
	struct found_device *f = &E->found[k];
	if (f->id >= 0) {
		if (engine_device_state(srv->engine, (unsigned)f->id) == ENGINE_DEV_GONE)
			return refuse(
			        doc, -TDM_EBUSY, TDM_CTL_REASON_BUSY,
			        "add: %s still finishes a task it ran before it left; try again",
			        name);
		*doc = reply_refusal(TDM_CTL_REASON_IN_USE, "add: %s is in use (id %d, %s)", name,
		                     f->id, elastic_state_name(srv, (unsigned)f->id));
		return -TDM_EINVAL;
	}
	if (E->running || srv->cal_running)
		return refuse(doc, -TDM_EBUSY, TDM_CTL_REASON_BUSY,
		              "add %s: a rescan or a calibration runs; try again", name);
	struct calibration *cal = calibration_now(srv);
	bool known = !srv->cfg.calibrate || !srv->prof || (cal && model_known(cal, &f->dev));
	free(cal);
	if (known) {
		char why[256];
		const char *reason;
		unsigned id;
		int err = add_device(srv, (size_t)k, NULL, &id, &reason, why, sizeof(why));
		if (err) {
			*doc = reply_refusal(reason, "add: %s", why);
			return err;
		}
		char key[CAL_KEY_MAX];
		calibrate_device_key(&f->dev, key, sizeof(key));
		*doc = reply_text(json_pack("{s:s, s:o, s:s, s:s}", "op", "add", "device",
		                            device_brief(srv, id), "priced",
		                            srv->cfg.calibrate
		                                    ? "shared cost models"
		                                    : "generic figures (calibration off)",
		                            "model_key", key));
		return 0;
	}
	/* A model never calibrated: measured first, on the job's thread. */
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return refuse(doc, -TDM_ENOMEM, TDM_CTL_REASON_FAILED, "add %s: out of memory",
		              name);
	j->kind = JOB_MEASURE;
	j->conn = c;
	j->dev[0] = f->dev;
	j->ndev = 1;
	int err = job_start(srv, j);
	if (err)
		return refuse(doc, err, TDM_CTL_REASON_FAILED,
		              "add %s: cannot start the calibration thread", name);
	log_info("device %s: a model never calibrated: measuring it while the others run", name);
	return DEFERRED;
}

static int op_drain(struct server *srv, const char *name, char **doc)
{
	unsigned id;
	int err = named_id(srv, "drain", name, &id, doc);
	if (err)
		return err;
	const char *queue = "moved when it began draining";
	if (engine_device_state(srv->engine, id) == ENGINE_DEV_ACTIVE) {
		if (active_count(srv) <= 1)
			return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_LAST_DEVICE,
			              "drain: %s is the only device taking tasks", name);
		if ((err = engine_device_drain(srv->engine, id)))
			return refuse(doc, err, TDM_CTL_REASON_FAILED,
			              "drain: the engine refused %s", name);
		E_(srv)->events[EV_DRAIN]++;
		log_info("device %s (id %u): draining", name, id);
		queue = "re-placed on the other devices";
	}
	*doc = reply_text(json_pack("{s:s, s:o, s:s}", "op", "drain", "device",
	                            device_brief(srv, id), "queue", queue));
	return 0;
}

static int op_resume(struct server *srv, const char *name, char **doc)
{
	unsigned id;
	int err = named_id(srv, "resume", name, &id, doc);
	if (err)
		return err;
	if (removal_of(E_(srv), id))
		return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_STATE, "resume: %s is being removed",
		              name);
	if (engine_device_state(srv->engine, id) != ENGINE_DEV_DRAINING)
		return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_STATE, "resume: %s is not draining",
		              name);
	if ((err = engine_device_resume(srv->engine, id)))
		return refuse(doc, err, TDM_CTL_REASON_FAILED, "resume: the engine refused %s",
		              name);
	E_(srv)->events[EV_RESUME]++;
	log_info("device %s (id %u): takes tasks again", name, id);
	*doc = reply_text(json_pack("{s:s, s:o}", "op", "resume", "device", device_brief(srv, id)));
	return 0;
}

/* Drains id (if active) and queues its removal; c (may be NULL) hears
 * when it is gone. */
static int start_removal(struct server *srv, unsigned id, struct conn *c)
{
	struct elastic *E = E_(srv);
	if (E->nremovals == E->removals_cap) {
		size_t ncap = E->removals_cap ? 2 * E->removals_cap : 8;
		struct removal *n = realloc(E->removals, ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		E->removals = n;
		E->removals_cap = ncap;
	}
	if (engine_device_state(srv->engine, id) == ENGINE_DEV_ACTIVE) {
		int err = engine_device_drain(srv->engine, id);
		if (err)
			return err;
	}
	E->removals[E->nremovals++] = (struct removal){
		.id = id,
		.conn = c,
		.start_ns = clock_monotonic_ns(),
	};
	log_info("device %s (id %u): draining, to be removed",
	         engine_device(srv->engine, id)->dev.name, id);
	arm_tick(srv);
	return 0;
}

static int op_remove(struct server *srv, struct conn *c, const char *name, char **doc)
{
	unsigned id;
	int err = named_id(srv, "remove", name, &id, doc);
	if (err)
		return err;
	if (removal_of(E_(srv), id))
		return refuse(doc, -TDM_EBUSY, TDM_CTL_REASON_BUSY,
		              "remove: %s is being removed already", name);
	if (engine_device_state(srv->engine, id) == ENGINE_DEV_ACTIVE && active_count(srv) <= 1)
		return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_LAST_DEVICE,
		              "remove: %s is the only device taking tasks", name);
	if ((err = start_removal(srv, id, c)))
		return refuse(doc, err, TDM_CTL_REASON_FAILED, "remove: the engine refused %s",
		              name);
	return DEFERRED;
}

static int op_budget(struct server *srv, struct conn *c, const char *name, uint64_t bytes,
                     char **doc)
{
	unsigned id;
	int err = named_id(srv, "budget", name, &id, doc);
	if (err)
		return err;
	const struct engine_device *d = engine_device(srv->engine, id);
	if (!backend_is_accelerator(&d->dev))
		return refuse(doc, -TDM_EINVAL, TDM_CTL_REASON_NOT_ACCELERATOR,
		              "budget: %s computes from host memory: it has no budget", name);
	if (E_(srv)->running)
		return refuse(doc, -TDM_EBUSY, TDM_CTL_REASON_BUSY,
		              "budget %s: a rescan, measurement or budget change runs; try again",
		              name);
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return refuse(doc, -TDM_ENOMEM, TDM_CTL_REASON_FAILED, "budget %s: out of memory",
		              name);
	j->kind = JOB_BUDGET;
	j->conn = c;
	j->res = &srv->res;
	j->budget[0] = (struct budget_change){ .id = id, .node = d->node, .bytes = bytes };
	j->nbudget = 1;
	if ((err = job_start(srv, j)))
		return refuse(doc, err, TDM_CTL_REASON_FAILED, "budget %s: cannot start its thread",
		              name);
	return DEFERRED;
}

/* The budgets a job set: logged and counted; the reply for the first. */
static char *budgets_done(struct server *srv, const struct job *j, int *status)
{
	char *doc = NULL;
	for (size_t i = 0; i < j->nbudget; i++) {
		const struct budget_change *b = &j->budget[i];
		const char *name = engine_device(srv->engine, b->id)->dev.name;
		struct res_node_stats st;
		residency_node_stats(&srv->res, b->node, &st);
		if (b->err)
			log_warn("device %s (id %u): memory budget not changed to %llu bytes: %s",
			         name, b->id, (unsigned long long)b->bytes, tdm_strerror(b->err));
		else
			log_info("device %s (id %u): memory budget %llu bytes (%llu used)", name,
			         b->id, (unsigned long long)st.cap, (unsigned long long)st.used);
		E_(srv)->events[EV_BUDGET] += !b->err;
		if (i)
			continue;
		*status = b->err;
		doc = b->err ? reply_refusal(b->err == -TDM_EBUSY ? TDM_CTL_REASON_BUSY
		                                                  : TDM_CTL_REASON_FAILED,
		                             "budget: %s: %s%s", name, tdm_strerror(b->err),
		                             b->err == -TDM_EBUSY
		                                     ? " (pinned replicas keep it over: the next "
		                                       "allocation there evicts them)"
		                                     : "")
		             : reply_text(json_pack("{s:s, s:o, s:I, s:I}", "op", "budget",
		                                    "device", device_brief(srv, b->id), "budget",
		                                    (json_int_t)st.cap, "used",
		                                    (json_int_t)st.used));
	}
	return doc;
}

/* Copies of what the thread reads while the loop goes on. */
static int job_snapshot_selection(struct server *srv, struct job *j)
{
	struct elastic *E = E_(srv);
	j->cfg = malloc(sizeof(*j->cfg));
	j->known = calloc(E->nfound ? E->nfound : 1, sizeof(*j->known));
	if (!j->cfg || !j->known)
		return -TDM_ENOMEM;
	*j->cfg = srv->cfg;
	for (size_t i = 0; i < E->nfound; i++)
		snprintf(j->known[i], sizeof(j->known[i]), "%s", E->found[i].dev.name);
	j->nknown = E->nfound;
	memcpy(j->comp, E->comp, sizeof(j->comp));
	memcpy(j->ops, E->ops, sizeof(j->ops));
	j->nbackends = E->nbackends;
	j->topology = srv->topo;
	j->cores = srv->cfg.n_cores ? srv->cfg.cores : NULL; /* restart-only: stays */
	j->ncores = srv->cfg.n_cores;
	return 0;
}

static int op_rescan(struct server *srv, struct conn *c, char **doc)
{
	struct elastic *E = E_(srv);
	if (E->running || srv->cal_running)
		return refuse(doc, -TDM_EBUSY, TDM_CTL_REASON_BUSY, "%s",
		              "rescan: a rescan or a calibration runs; try again");
	struct job *j = calloc(1, sizeof(*j));
	if (!j || job_snapshot_selection(srv, j) != 0) {
		job_free(j);
		return refuse(doc, -TDM_ENOMEM, TDM_CTL_REASON_FAILED, "%s",
		              "rescan: out of memory");
	}
	j->kind = JOB_RESCAN;
	j->conn = c;
	int err = job_start(srv, j);
	if (err)
		return refuse(doc, err, TDM_CTL_REASON_FAILED, "%s",
		              "rescan: cannot start its thread");
	log_info("devices: probing the backends again");
	return DEFERRED;
}

bool elastic_device_request(struct server *srv, struct conn *c, const struct tdm_ctl_device *r)
{
	char *doc = NULL;
	int status;
	if (!E_(srv)) /* a server made without it (the conn fuzz target) */
		return conn_send_reply(c, -TDM_EINVAL,
		                       reply_refusal(TDM_CTL_REASON_FAILED,
		                                     "device: changes are not available here"));
	reap(srv);
	if (atomic_load(&srv->draining)) {
		status = -TDM_ESHUTDOWN;
		doc = reply_refusal(TDM_CTL_REASON_DRAINING, "device: the daemon is stopping");
		return conn_send_reply(c, status, doc);
	}
	switch (r->op) {
	case TDM_DEV_ADD: status = op_add(srv, c, r->name, &doc); break;
	case TDM_DEV_DRAIN: status = op_drain(srv, r->name, &doc); break;
	case TDM_DEV_RESUME: status = op_resume(srv, r->name, &doc); break;
	case TDM_DEV_REMOVE: status = op_remove(srv, c, r->name, &doc); break;
	case TDM_DEV_BUDGET: status = op_budget(srv, c, r->name, r->value, &doc); break;
	case TDM_DEV_RESCAN: status = op_rescan(srv, c, &doc); break;
	default:
		status = -TDM_EINVAL;
		doc = reply_refusal(TDM_CTL_REASON_BAD_REQUEST, "device: unknown operation");
	}
	if (status == DEFERRED) {
		conn_defer_reply(c);
		return true;
	}
	return conn_send_reply(c, status, doc);
}

void elastic_conn_gone(struct server *srv, struct conn *c)
{
	struct elastic *E = E_(srv);
	if (!E)
		return;
	for (size_t i = 0; i < E->nremovals; i++)
		if (E->removals[i].conn == c)
			E->removals[i].conn = NULL;
	if (E->job && E->job->conn == c)
		E->job->conn = NULL;
}

/* ---- removals: a timer, never a sleep ---------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	struct elastic *E = E_(srv);
	uint64_t now = clock_monotonic_ns();
	(void)fd;
	(void)what;
	for (size_t i = 0; i < E->nremovals;) {
		struct removal r = E->removals[i];
		unsigned busy = engine_device_busy(srv->engine, r.id);
		uint64_t waited_ms = (now - r.start_ns) / 1000000;
		if (busy && waited_ms < REMOVE_TIMEOUT_MS) {
			i++;
			continue;
		}
		E->removals[i] = E->removals[--E->nremovals];
		E->gone_counted[r.id] = true;
		const char *name = engine_device(srv->engine, r.id)->dev.name;
		int err = engine_device_remove(srv->engine, r.id);
		if (err) {
			log_error("device %s (id %u): the engine refused its removal: %s", name,
			          r.id, tdm_strerror(err));
			if (r.conn)
				conn_deferred_reply(r.conn, err,
				                    reply_refusal(TDM_CTL_REASON_FAILED,
				                                  "remove: the engine refused %s",
				                                  name));
			continue;
		}
		E->events[EV_REMOVE]++;
		if (busy)
			log_warn("device %s (id %u) removed with %u task(s) still on it after %llu "
			         "ms: it leaves once they finished",
			         name, r.id, busy, (unsigned long long)waited_ms);
		else
			log_info("device %s (id %u) removed (idle after %llu ms)", name, r.id,
			         (unsigned long long)waited_ms);
		if (r.conn)
			conn_deferred_reply(
			        r.conn, 0,
			        reply_text(json_pack(
			                "{s:s, s:o, s:I, s:b, s:I, s:s}", "op", "remove", "device",
			                device_brief(srv, r.id), "waited_ms", (json_int_t)waited_ms,
			                "timed_out", busy != 0, "still_running", (json_int_t)busy,
			                "queue", "re-placed on the other devices")));
	}
	reap(srv);
	if (E->nremovals || still_leaving(srv))
		arm_tick(srv);
}

/* ---- the job's end, on the loop ------------------------------------------------------------ */

/* Adds the devices of a finished job that [devices] selects (all of a
 * MEASURE job's: they were chosen on the loop); the others of a rescan
 * join the found table as available. */
static json_t *job_apply(struct server *srv, struct job *j, int *status, char **doc)
{
	struct elastic *E = E_(srv);
	json_t *added = json_array(), *avail = json_array();
	char why[256] = "";
	const char *reason = NULL;
	int first_err = 0;
	for (size_t i = 0; i < j->ndev; i++) {
		struct backend_device *d = &j->dev[i];
		ssize_t k = found_by_name(E, d->name);
		if (j->kind == JOB_RESCAN) {
			bool dup = k >= 0;
			/* The same GPU through a second backend is used once. */
			for (size_t f = 0; !dup && f < E->nfound; f++)
				dup = j->comp[j->from[i]]->yields_same_pci && d->pci_busid[0] &&
				      E->found[f].dev.ops != d->ops &&
				      !strcmp(E->found[f].dev.pci_busid, d->pci_busid);
			if (dup) {
				if (d->ops->release)
					d->ops->release(d);
				continue;
			}
			if (elastic_found(srv, d, -1) != 0) {
				if (d->ops->release)
					d->ops->release(d);
				continue;
			}
			k = (ssize_t)E->nfound - 1;
			log_info("devices: found %s (%s %s, \"%s\")", d->name, d->ops->name,
			         device_kind_name(d->kind), d->model);
			if (!server_device_wanted(&srv->cfg, d)) {
				json_array_append_new(avail, json_string(d->name));
				continue;
			}
		}
		if (k < 0 || E->found[k].id >= 0)
			continue;
		unsigned id;
		char w[256];
		const char *r;
		int err = add_device(srv, (size_t)k, &j->meas[i], &id, &r, w, sizeof(w));
		if (err) {
			log_warn("device %s: not added: %s", d->name, w);
			if (!first_err) {
				first_err = err;
				reason = r;
				snprintf(why, sizeof(why), "%s", w);
			}
			json_array_append_new(avail, json_string(d->name));
			continue;
		}
		json_array_append_new(added, json_string(d->name));
	}
	j->ndev = 0; /* every device is the found table's now, or released */
	*status = 0;
	if (j->kind == JOB_MEASURE && first_err) {
		*status = first_err;
		*doc = reply_refusal(reason, "add: %s", why);
		json_decref(added);
		json_decref(avail);
		return NULL;
	}
	return json_pack("{s:o, s:o, s:f}", "added", added, "available", avail, "seconds",
	                 (double)(clock_monotonic_ns() - j->start_ns) / 1e9);
}

static void apply_selection(struct server *srv, struct job *carry);

void elastic_kicked(struct server *srv)
{
	struct elastic *E = E_(srv);
	if (!E || !E->running || !atomic_load(&E->done))
		return;
	pthread_join(E->thread, NULL);
	E->running = false;
	struct job *j = E->job;
	E->job = NULL;
	int status = 0;
	char *doc = NULL;
	json_t *res = NULL;
	if (j->kind == JOB_BUDGET)
		doc = budgets_done(srv, j, &status);
	else
		res = job_apply(srv, j, &status, &doc);
	if (j->kind == JOB_MEASURE && j->nbudget) { /* SIGHUP's, carried along */
		int ignored;
		free(budgets_done(srv, j, &ignored));
	}
	if (res && j->kind == JOB_RESCAN) {
		E->events[EV_RESCAN]++;
		json_object_set_new(res, "op", json_string("rescan"));
		if (j->note[0])
			json_object_set_new(res, "note", json_string(j->note));
		log_info("devices: rescan done: %zu added, %zu not selected by [devices]",
		         json_array_size(json_object_get(res, "added")),
		         json_array_size(json_object_get(res, "available")));
		doc = reply_text(res);
	} else if (res) {
		/* MEASURE: one device for a tandemctl add (several for SIGHUP). */
		json_t *names = json_object_get(res, "added");
		const char *name = json_string_value(json_array_get(names, 0));
		int id = name ? id_by_name(srv, name) : -1;
		if (id >= 0)
			doc = reply_text(json_pack(
			        "{s:s, s:o, s:s, s:f}", "op", "add", "device",
			        device_brief(srv, (unsigned)id), "priced",
			        j->meas[0].ok ? "measured now while the others ran"
			                      : "generic figures (its measurement failed)",
			        "seconds", json_real_value(json_object_get(res, "seconds"))));
		else if (!doc)
			doc = reply_refusal(TDM_CTL_REASON_FAILED, "add: the device was not added");
		if (id < 0 && !status)
			status = -TDM_EINVAL;
		json_decref(res);
	}
	struct conn *c = j->conn;
	job_free(j);
	if (c)
		conn_deferred_reply(c, status, doc);
	else
		free(doc);
	if (E->reload_pending) {
		E->reload_pending = false;
		apply_selection(srv, NULL);
	}
}

/* ---- SIGHUP ------------------------------------------------------------------------------------
 */

/* Matches the devices in use to [devices]: those it no longer selects are
 * drained and removed, found ones it now selects added (measured first on
 * the thread when their model has no figures). */
static void apply_selection(struct server *srv, struct job *carry)
{
	struct elastic *E = E_(srv);
	reap(srv);
	for (size_t k = 0; k < E->nfound; k++) {
		struct found_device *f = &E->found[k];
		if (f->id < 0 || server_device_wanted(&srv->cfg, &f->dev))
			continue;
		unsigned id = (unsigned)f->id;
		if (engine_device_state(srv->engine, id) == ENGINE_DEV_GONE || removal_of(E, id))
			continue;
		if (engine_device_state(srv->engine, id) == ENGINE_DEV_ACTIVE &&
		    active_count(srv) <= 1) {
			log_warn("SIGHUP: %s is the only device taking tasks: kept", f->dev.name);
			continue;
		}
		if (start_removal(srv, id, NULL) != 0)
			log_warn("SIGHUP: %s: cannot start its removal", f->dev.name);
	}
	if (srv->cal_running) { /* it reads the device table */
		log_warn("SIGHUP: tandemctl calibrate runs: devices [devices] now selects are "
		         "added at the next SIGHUP");
		if (carry && job_start(srv, carry) != 0)
			log_warn("SIGHUP: cannot start the thread that sets the memory budgets");
		return;
	}
	struct calibration *cal = calibration_now(srv);
	struct job *j = carry; /* the budgets to set, if any: one thread does both */
	for (size_t k = 0; k < E->nfound; k++) {
		struct found_device *f = &E->found[k];
		if (f->id >= 0 || !server_device_wanted(&srv->cfg, &f->dev))
			continue;
		if (!srv->cfg.calibrate || !srv->prof || (cal && model_known(cal, &f->dev))) {
			unsigned id;
			char why[256];
			const char *reason;
			if (add_device(srv, k, NULL, &id, &reason, why, sizeof(why)) != 0)
				log_warn("SIGHUP: %s", why);
			continue;
		}
		if (!j && !(j = calloc(1, sizeof(*j))))
			break;
		if (j->ndev < PROBE_MAX) {
			j->kind = JOB_MEASURE;
			j->dev[j->ndev++] = f->dev;
		}
	}
	free(cal);
	if (j) {
		if (E->running) {
			E->reload_pending = true; /* measured after the job under way */
			job_free(j);
		} else if (job_start(srv, j) != 0) {
			log_warn("SIGHUP: cannot start the calibration thread");
		}
	}
}

void elastic_reload(struct server *srv, const struct daemon_config *old)
{
	struct elastic *E = E_(srv);
	if (!E)
		return;
	/* Budgets that [devices] mem_cap changed, for the accelerators in use:
	 * set on the thread, with the measurements of new devices if any. */
	struct job *j = calloc(1, sizeof(*j));
	if (j) {
		j->kind = JOB_BUDGET;
		j->res = &srv->res;
	}
	for (size_t i = 0; j && i < engine_device_count(srv->engine) && j->nbudget < PROBE_MAX;
	     i++) {
		const struct engine_device *d = engine_device(srv->engine, i);
		if (!backend_is_accelerator(&d->dev) ||
		    engine_device_state(srv->engine, (unsigned)i) == ENGINE_DEV_GONE)
			continue;
		const char *kind = device_kind_name(d->dev.kind);
		uint64_t was =
		        config_devval_lookup(old->mem_cap, old->n_mem_cap, d->dev.name, kind, 0);
		uint64_t now = config_devval_lookup(srv->cfg.mem_cap, srv->cfg.n_mem_cap,
		                                    d->dev.name, kind, 0);
		if (was != now)
			j->budget[j->nbudget++] =
			        (struct budget_change){ .id = (unsigned)i,
				                        .node = d->node,
				                        .bytes = now ? now : d->dev.mem_bytes };
	}
	if (j && !j->nbudget) {
		job_free(j);
		j = NULL;
	}
	if (!E->running) {
		apply_selection(srv, j);
		return;
	}
	E->reload_pending = true; /* the selection, after the job under way */
	if (j) {
		log_warn("SIGHUP: a device is being measured or probed: the changed mem_cap "
		         "applies at the next SIGHUP");
		job_free(j);
	}
}
