/* The daemon's event loop: listener, signals, draining, adaptive polling. */
#include "daemon/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/elastic.h"
#include "daemon/intake.h"
#include "daemon/metrics.h"
#include "daemon/models.h"
#include "common/eventfd_ring.h"
#include "common/log.h"
#include "policies/policy.h"
#include "tandem.h"

#define DRAIN_POLL_MS 10
/* After the drain timeout, canceled graphs get this long to complete (their
 * clients hear -TDM_ECANCELED) before the loop ends anyway. */
#define CANCEL_GRACE_MS 1000
#define LISTEN_PAUSE_MS 100 /* after accept() ran out of descriptors */
#define BELLS_PER_WAIT 64

static void submit_to_engine(void *ctx, struct engine_graph *g)
{
	engine_submit(ctx, g);
}

/* Engine hook, on the worker that finished the graph: a recording copies
 * it (tandemctl trace), then its completion is posted. */
static void server_graph_done(void *ctx, struct engine_graph *eg)
{
	struct server *srv = ctx;
	const struct dgraph *g = eg->owner;
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++) {
		struct recording *r = &srv->recs[i];
		if (recorder_active(&r->rec) && (r->all || r->uid == g->s->uid))
			recorder_graph_done(&r->rec, g);
	}
	session_engine_graph_done(ctx, eg);
}

/* Whether anyone besides root and the daemon's own uid may connect. */
static bool others_allowed(const struct daemon_config *cfg)
{
	return cfg->n_allowed_uids || cfg->n_allowed_gids;
}

/* The mode of a socket directory the daemon made: 0700, or 0711 when
 * other users may connect (they need to reach the socket, not to list or
 * change the directory). */
static mode_t socket_dir_mode(const struct daemon_config *cfg)
{
	return others_allowed(cfg) ? 0711 : 0700;
}

/* The socket's directory must be ours (or root's), a real directory, and
 * writable by nobody else unless it is sticky (/tmp): otherwise another
 * user could move our socket away and put theirs in its place. A missing
 * last component is created (and its mode follows the access lists on
 * reload). */
static int check_socket_dir(struct server *srv, const char *dir)
{
	struct stat st;
	mode_t mode = socket_dir_mode(&srv->cfg);

	if (mkdir(dir, mode) == 0) {
		srv->made_socket_dir = true;
		/* mkdir's mode passed through the umask: say it exactly. */
		if (chmod(dir, mode) != 0) {
			log_error("cannot set the mode of %s: %s", dir, strerror(errno));
			return -TDM_ESYS;
		}
	} else if (errno != EEXIST) {
		log_error("cannot create %s: %s", dir, strerror(errno));
		return -TDM_ESYS;
	}
	if (lstat(dir, &st) != 0) {
		log_error("%s: %s", dir, strerror(errno));
		return -TDM_ESYS;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("refusing the socket directory %s: not a directory (a link?)", dir);
		return -TDM_ECONFIG;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		log_error("refusing the socket directory %s: owned by uid %u, not by us (%u) or "
		          "root; remove it, or choose daemon.socket elsewhere",
		          dir, (unsigned)st.st_uid, (unsigned)geteuid());
		return -TDM_ECONFIG;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
		log_error("refusing the socket directory %s: writable by others (mode %04o)", dir,
		          (unsigned)(st.st_mode & 07777));
		return -TDM_ECONFIG;
	}
	return 0;
}

/* Another daemon answering on the path is an error; a stale file is not. */
static int prepare_socket_path(struct server *srv, const char *path)
{
	char dir[CONFIG_PATH_MAX];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		int err = check_socket_dir(srv, dir);
		if (err)
			return err;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		log_error("refusing %s: it exists and is not a socket", path);
		return -TDM_ECONFIG;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -TDM_ESYS;
	int busy = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	if (busy) {
		log_error("another tandemd is listening on %s", path);
		return -TDM_EBUSY;
	}
	unlink(path);
	return 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
	(void)l;
	(void)sa;
	(void)len;
	conn_accept(arg, fd);
}

static void on_listen_resume(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	(void)fd;
	(void)what;
	if (!atomic_load(&srv->draining))
		evconnlistener_enable(srv->listener);
}

/* accept() failed. Out of descriptors, the listening socket stays readable
 * and libevent would call accept() again at once, for ever: shed the
 * connection that waits (with the spare descriptor), and pause listening
 * for a moment. */
static void on_listen_error(struct evconnlistener *l, void *arg)
{
	struct server *srv = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err == EMFILE || err == ENFILE) {
		if (srv->spare_fd >= 0) {
			close(srv->spare_fd);
			int fd = accept4(evconnlistener_get_fd(l), NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				close(fd);
			srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		}
		log_ratelimited(LOG_WARN, "accept: %s: pausing the listener for %d ms",
		                strerror(err), LISTEN_PAUSE_MS);
	} else {
		log_ratelimited(LOG_WARN, "accept: %s", strerror(err));
	}
	evconnlistener_disable(l);
	struct timeval tv = { 0, LISTEN_PAUSE_MS * 1000 };
	if (srv->ev_listen_resume)
		evtimer_add(srv->ev_listen_resume, &tv);
}

/* Every graph finished and its completion posted (or its client gone). */
static bool drained(struct server *srv)
{
	struct engine_counters ec;
	engine_counters(srv->engine, &ec);
	if (ec.tasks_in_flight)
		return false;
	for (struct conn *c = srv->conns; c; c = c->next)
		if (c->s && atomic_load(&c->s->graphs_unposted) != 0)
			return false;
	return true;
}

/* Stops waiting for the work in flight: every graph is canceled (queued
 * tasks skipped, running CPU kernels stopped at their next check). */
static void cancel_in_flight(struct server *srv)
{
	if (srv->cancel_ns)
		return;
	srv->cancel_ns = clock_monotonic_ns();
	engine_cancel_all(srv->engine);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	uint64_t now = clock_monotonic_ns();
	(void)fd;
	(void)what;
	if (drained(srv)) {
		log_info(srv->cancel_ns ? "drained (work canceled): exiting" : "drained: exiting");
		event_base_loopbreak(srv->base);
	} else if (!srv->cancel_ns &&
	           now - srv->drain_start_ns >= srv->cfg.drain_timeout_s * 1000000000ull) {
		log_warn("drain: work still in flight after %u s: canceling it",
		         srv->cfg.drain_timeout_s);
		cancel_in_flight(srv);
	} else if (srv->cancel_ns && now - srv->cancel_ns > CANCEL_GRACE_MS * 1000000ull) {
		log_warn("drain: canceled work still running after %d ms: exiting anyway",
		         CANCEL_GRACE_MS);
		event_base_loopbreak(srv->base);
	}
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	struct timeval tick = { 0, DRAIN_POLL_MS * 1000 };
	(void)what;

	if (atomic_load(&srv->draining)) {
		log_info("second signal: canceling the work in flight and exiting");
		cancel_in_flight(srv);
		event_base_loopbreak(srv->base);
		return;
	}
	log_info("%s: draining (no new clients or graphs)", sig == SIGINT ? "SIGINT" : "SIGTERM");
	atomic_store(&srv->draining, true);
	notify_stopping(srv);
	srv->drain_start_ns = clock_monotonic_ns();
	evconnlistener_disable(srv->listener);
	srv->ev_drain = event_new(srv->base, -1, EV_PERSIST, on_drain_tick, srv);
	if (srv->ev_drain)
		event_add(srv->ev_drain, &tick);
	on_drain_tick(-1, 0, srv);
}

/* Settings that take effect on SIGHUP (reloadable in the schema of
 * config.c); the others need a restart and are named in a warning. New
 * clients get the new shares and hints; connected ones keep their hints
 * and follow a changed share (reload). */
static void apply_reload(struct server *srv, const struct daemon_config *n)
{
	char restart_only[1024];
	struct daemon_config *o = &srv->cfg;
	size_t changed = config_reload(o, n, restart_only, sizeof(restart_only));
	if (changed)
		log_warn("reload: %s change%s only on restart", restart_only,
		         changed == 1 ? "s" : "");
	log_set_level(o->log_level);
	engine_set_spin_us(srv->engine, o->spin_us);
}

static void reload(struct server *srv)
{
	struct daemon_config n;
	char err[CONFIG_ERR_MAX];
	struct daemon_config *old;

	if (!srv->config_path) {
		log_info("SIGHUP: running on embedded defaults, nothing to reload");
		return;
	}
	config_defaults(&n);
	if (config_load_file(srv->config_path, &n, err, sizeof(err)) != 0) {
		log_error("SIGHUP: keeping the running configuration: %s", err);
		return;
	}
	bool others_before = others_allowed(&srv->cfg);
	old = malloc(sizeof(*old));
	if (!old) {
		log_error("SIGHUP: out of memory: keeping the running configuration");
		return;
	}
	*old = srv->cfg;
	/* Workers read the limits during intake, under the registry lock. */
	pthread_rwlock_wrlock(&srv->registry_lock);
	apply_reload(srv, &n);
	pthread_rwlock_unlock(&srv->registry_lock);
	/* Connected clients follow changed [clients] weights; the devices in
	 * use follow [devices]. */
	for (struct conn *c = srv->conns; c; c = c->next)
		if (c->s)
			session_reload_settings(c->s, old, &srv->cfg);
	elastic_reload(srv, old);
	free(old);
	if (srv->made_socket_dir && others_before != others_allowed(&srv->cfg)) {
		/* Our own directory, checked at start: nobody else could have
		 * replaced it since. */
		char dir[CONFIG_PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", srv->socket_path);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (chmod(dir, socket_dir_mode(&srv->cfg)) != 0)
				log_warn("SIGHUP: cannot set the mode of %s: %s", dir,
				         strerror(errno));
		}
	}
	log_info("SIGHUP: reloaded %s", srv->config_path);
}

/* systemd hears that a reload runs, and when it is over, whatever came of
 * it (a bad file keeps the running configuration). */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	(void)sig;
	(void)what;
	notify_reloading(srv);
	reload(srv);
	notify_reloaded(srv);
}

/* ---- the session registry, and intake on idle workers ---------------------- */

static void set_polling_flag(struct session *s, bool on)
{
	if (on)
		__atomic_fetch_or(&s->hdr->daemon_flags, TDM_DAEMON_POLLING, __ATOMIC_SEQ_CST);
	else
		__atomic_fetch_and(&s->hdr->daemon_flags, ~TDM_DAEMON_POLLING, __ATOMIC_SEQ_CST);
}

int server_register(struct server *srv, struct session *s)
{
	int err = 0;
	pthread_mutex_lock(&srv->polling_lock);
	pthread_rwlock_wrlock(&srv->registry_lock);
	if (srv->nsessions == srv->sessions_cap) {
		size_t ncap = srv->sessions_cap ? srv->sessions_cap * 2 : 16;
		struct session **n = realloc(srv->sessions, ncap * sizeof(*n));
		if (n) {
			srv->sessions = n;
			srv->sessions_cap = ncap;
		} else {
			err = -TDM_ENOMEM;
		}
	}
	if (!err) {
		/* Edge-triggered: every ring is an edge, and nobody needs to
		 * read the eventfd (see struct session). */
		struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = s };
		if (epoll_ctl(srv->bell_epoll, EPOLL_CTL_ADD, s->sq_bell, &ev) != 0) {
			log_error("session %u: doorbell: %s", s->id, strerror(errno));
			err = -TDM_ESYS;
		}
	}
	if (!err) {
		srv->sessions[srv->nsessions++] = s;
		if (srv->pollers)
			set_polling_flag(s, true);
	}
	pthread_rwlock_unlock(&srv->registry_lock);
	pthread_mutex_unlock(&srv->polling_lock);
	return err;
}

void server_unregister(struct server *srv, struct session *s)
{
	pthread_rwlock_wrlock(&srv->registry_lock);
	for (size_t i = 0; i < srv->nsessions; i++) {
		if (srv->sessions[i] == s) {
			srv->sessions[i] = srv->sessions[--srv->nsessions];
			/* Under the write lock: no worker holds an event naming s
			 * (they take them under the read lock), and none comes after. */
			epoll_ctl(srv->bell_epoll, EPOLL_CTL_DEL, s->sq_bell, NULL);
			break;
		}
	}
	pthread_rwlock_unlock(&srv->registry_lock);
}

struct uid_usage *server_uid_usage(struct server *srv, uid_t uid)
{
	for (size_t i = 0; i < srv->nuids; i++)
		if (srv->uids[i]->uid == uid)
			return srv->uids[i];
	if (srv->nuids == srv->uids_cap) {
		size_t ncap = srv->uids_cap ? srv->uids_cap * 2 : 16;
		struct uid_usage **n = realloc(srv->uids, ncap * sizeof(*n));
		if (!n)
			return NULL;
		srv->uids = n;
		srv->uids_cap = ncap;
	}
	struct uid_usage *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = (uint32_t)uid;
	u->limited = uid != 0 && uid != geteuid();
	srv->uids[srv->nuids++] = u;
	return u;
}

static bool id_listed(const uint32_t *ids, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Whether gid, or one of the supplementary groups, is listed. */
static bool group_listed(const uint32_t *ids, size_t n, gid_t gid, const gid_t *groups,
                         size_t ngroups)
{
	if (id_listed(ids, n, gid))
		return true;
	for (size_t i = 0; i < ngroups; i++)
		if (id_listed(ids, n, groups[i]))
			return true;
	return false;
}

bool server_peer_allowed(const struct server *srv, uid_t uid, gid_t gid, const gid_t *groups,
                         size_t ngroups)
{
	const struct daemon_config *cfg = &srv->cfg;
	/* Root and the daemon's own uid always may, as documented. */
	return uid == 0 || uid == geteuid() ||
	       id_listed(cfg->allowed_uids, cfg->n_allowed_uids, uid) ||
	       group_listed(cfg->allowed_gids, cfg->n_allowed_gids, gid, groups, ngroups) ||
	       server_peer_admin(srv, uid, gid, groups, ngroups);
}

bool server_peer_admin(const struct server *srv, uid_t uid, gid_t gid, const gid_t *groups,
                       size_t ngroups)
{
	const struct daemon_config *cfg = &srv->cfg;
	return uid == 0 || uid == geteuid() || id_listed(cfg->admin_uids, cfg->n_admin_uids, uid) ||
	       group_listed(cfg->admin_gids, cfg->n_admin_gids, gid, groups, ngroups);
}

/* Takes the rings off the doorbells' epoll set, so that it stops being
 * readable until a client rings again (edge-triggered: epoll_wait alone
 * does it, the eventfds are not read). Which sessions rang does not
 * matter: server_poll looks at every ring. */
static void clear_bells(struct server *srv)
{
	struct epoll_event evs[BELLS_PER_WAIT];
	while (epoll_wait(srv->bell_epoll, evs, BELLS_PER_WAIT, 0) == BELLS_PER_WAIT)
		;
}

/* Engine hook, on an idle worker: run intake for every session with new
 * entries (or completions waiting for room). One worker per session at a
 * time; a session another thread is on is skipped, but counts as found: the
 * doorbell that brought us here may have rung after that thread looked, and
 * if we went to sleep on it nobody would look again. */
static bool server_poll(void *ctx, bool woken)
{
	struct server *srv = ctx;
	bool found = false, kick = false;

	/* Clear the doorbells before looking, so that a ring after our look
	 * wakes someone again. */
	if (woken)
		clear_bells(srv);
	/* Wake-ups of clients wait until no lock is held. */
	session_defer_wakes_begin();
	pthread_rwlock_rdlock(&srv->registry_lock);
	for (size_t i = 0; i < srv->nsessions; i++) {
		struct session *s = srv->sessions[i];
		/* Our own flag, not the client's copy in the shared header. */
		bool overflow = atomic_load(&s->cq_backlog) && session_cq_room(s);
		if ((!intake_pending(s) && !overflow) || atomic_load(&s->proto_error))
			continue;
		if (pthread_mutex_trylock(&s->intake_lock) != 0) {
			found = true;
			continue;
		}
		if (atomic_load(&s->proto_error)) {
			/* Another worker found the violation while we looked. */
			pthread_mutex_unlock(&s->intake_lock);
			continue;
		}
		uint32_t n = 0;
		if (overflow)
			session_flush(s);
		if (intake_run(s, &n) != 0) {
			atomic_store(&s->proto_error, true);
			kick = true;
		}
		pthread_mutex_unlock(&s->intake_lock);
		found |= n > 0;
	}
	pthread_rwlock_unlock(&srv->registry_lock);
	session_defer_wakes_end();
	if (kick)
		server_kick(srv);
	return found;
}

/* Engine hook: while at least one worker spins on the rings, clients need
 * not ring the doorbell (they skip the system call). */
static void server_polling(void *ctx, bool on)
{
	struct server *srv = ctx;
	pthread_mutex_lock(&srv->polling_lock);
	if (on ? srv->pollers++ == 0 : --srv->pollers == 0) {
		pthread_rwlock_rdlock(&srv->registry_lock);
		for (size_t i = 0; i < srv->nsessions; i++)
			set_polling_flag(srv->sessions[i], on);
		pthread_rwlock_unlock(&srv->registry_lock);
	}
	pthread_mutex_unlock(&srv->polling_lock);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct server *srv = arg;
	uint64_t v;
	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("kick: %s", strerror(errno));
	if (atomic_exchange(&srv->cal_done, false))
		conn_calibration_done(srv);
	elastic_kicked(srv);
	conn_close_broken(srv);
}

void server_kick(struct server *srv)
{
	int err = eventfd_ring(srv->kick_fd);
	if (err)
		log_error("kick: %s", strerror(-err));
}

/* session_env.broken: a session failed on a worker; the loop drops it. */
static void session_broken(void *ctx)
{
	server_kick(ctx);
}

bool server_device_wanted(const struct daemon_config *cfg, const struct backend_device *d)
{
	const char *kind = device_kind_name(d->kind);
	bool in = cfg->n_dev_include == 0;
	for (size_t i = 0; i < cfg->n_dev_include && !in; i++)
		in = config_selector_matches(cfg->dev_include[i], d->name, kind);
	for (size_t i = 0; i < cfg->n_dev_exclude && in; i++)
		in = !config_selector_matches(cfg->dev_exclude[i], d->name, kind);
	return in;
}

/* A device of a backend that yields on PCI bus ids (an OpenCL GPU that CUDA
 * also drives) is used once, by the backend probed before it. */
static bool seen_earlier(const struct server *srv, const struct backend_component *c,
                         const struct backend_device *d)
{
	if (!c->yields_same_pci || !d->pci_busid[0])
		return false;
	for (size_t i = 0; i < srv->ndevs; i++)
		if (srv->devs[i].ops != d->ops && !strcmp(srv->devs[i].pci_busid, d->pci_busid))
			return true;
	return false;
}

/* A topology with PCI objects, loaded the first time an accelerator with a
 * PCI bus id asks (never on machines without one): the I/O discovery
 * plugins cost time at start-up. Device plugins (OpenCL, CUDA, ...) are
 * left out: tandem enumerates devices itself. */
static hwloc_topology_t io_topology(struct server *srv)
{
	if (srv->io_topo)
		return srv->io_topo;
	if (hwloc_topology_init(&srv->io_topo) != 0)
		return srv->io_topo = NULL;
	hwloc_topology_set_io_types_filter(srv->io_topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	hwloc_topology_set_components(srv->io_topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
	                              "opencl,cuda,nvml,rsmi,levelzero,gl");
	if (hwloc_topology_load(srv->io_topo) != 0) {
		hwloc_topology_destroy(srv->io_topo);
		srv->io_topo = NULL;
	}
	return srv->io_topo;
}

/* The NUMA node nearest to an accelerator, from hwloc's PCI objects. */
static void find_locality(struct server *srv, struct backend_device *d)
{
	unsigned dom, bus, dev, fn;
	if (d->numa_node >= 0 || !d->pci_busid[0] ||
	    sscanf(d->pci_busid, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4)
		return;
	hwloc_topology_t topo = io_topology(srv);
	hwloc_obj_t pci = topo ? hwloc_get_pcidev_by_busid(topo, dom, bus, dev, fn) : NULL;
	hwloc_obj_t near = pci ? hwloc_get_non_io_ancestor_obj(topo, pci) : NULL;
	if (near && near->nodeset)
		d->numa_node = hwloc_bitmap_first(near->nodeset);
}

/* Probes one backend into the device table, keeping the wanted devices. */
static int probe_backend(struct server *srv, const struct backend_component *c,
                         const struct backend_ops *ops, struct backend_probe_params *pp)
{
	struct backend_device found[64];
	size_t n = 0;
	int err = ops->probe(pp, found, 64, &n);
	if (err)
		return err;
	if (pp->note[0])
		log_info("%s", pp->note);
	for (size_t i = 0; i < n; i++) {
		struct backend_device *d = &found[i];
		if (seen_earlier(srv, c, d)) {
			if (ops->release)
				ops->release(d);
			continue;
		}
		bool keep = server_device_wanted(&srv->cfg, d) && srv->ndevs < SERVER_MAX_DEVICES;
		if (keep && backend_is_accelerator(d)) {
			/* The residency keeps a pointer to the table's copy. */
			struct backend_device *slot = &srv->devs[srv->ndevs];
			uint64_t cap = config_devval_lookup(srv->cfg.mem_cap, srv->cfg.n_mem_cap,
			                                    d->name, device_kind_name(d->kind), 0);
			find_locality(srv, d);
			*slot = *d;
			int node = residency_add_node(&srv->res, slot, cap);
			if (node < 0) {
				log_warn("%s: skipped: at most %d memory nodes", d->name,
				         RES_MAX_NODES);
				keep = false;
			} else {
				d->node = (uint16_t)node;
			}
		}
		/* Kept either way (the handles are elastic's to release): one
		 * [devices] leaves out is available to tandemctl device add. */
		err = elastic_found(srv, d, keep ? (int)srv->ndevs : -1);
		if (err) {
			if (ops->release)
				ops->release(d);
			return err;
		}
		if (!keep) {
			log_info("%s: found, not used ([devices] leaves it out)", d->name);
			continue;
		}
		srv->inject_faults[srv->ndevs] = (uint32_t)config_devval_lookup(
		        srv->cfg.fault_inject, srv->cfg.n_fault_inject, d->name,
		        device_kind_name(d->kind), 0);
		srv->devs[srv->ndevs++] = *d;
	}
	return 0;
}

static void log_devices(struct server *srv)
{
	for (size_t i = 0; i < srv->ndevs; i++) {
		const struct backend_device *d = &srv->devs[i];
		if (!backend_is_accelerator(d)) {
			log_info("device %zu: %s (%s, CPU %d)", i, d->name, d->ops->name,
			         d->os_index);
			continue;
		}
		struct res_node_stats st;
		residency_node_stats(&srv->res, d->node, &st);
		log_info("device %zu: %s (%s %s, \"%s\", memory node %u, %llu MiB of %llu "
		         "usable%s%s)",
		         i, d->name, d->ops->name, device_kind_name(d->kind), d->model, d->node,
		         (unsigned long long)(st.cap >> 20),
		         (unsigned long long)(d->mem_bytes >> 20), d->pci_busid[0] ? ", PCI " : "",
		         d->pci_busid);
	}
}

/* Every backend of the registry, in its order (cpu, cuda, opencl), that the
 * configuration enables ("<backend>.enabled", else its default), loaded
 * ("<backend>.plugin" for a plugin) and checked for its seam version. */
static int start_devices(struct server *srv)
{
	struct backend_probe_params pp = {
		.topology = srv->topo,
		.cores = srv->cfg.n_cores ? srv->cfg.cores : NULL,
		.ncores = srv->cfg.n_cores,
	};
	const struct backend_component *comps[16];
	size_t ncomps = backend_registry(comps, 16);
	int err = 0;

	residency_init(&srv->res);
	if ((err = elastic_create(srv)))
		return err;
	for (size_t i = 0; i < ncomps && i < 16 && !err; i++) {
		const struct backend_component *c = comps[i];
		int enabled = config_bool(&srv->cfg, c->name, "enabled");
		if (enabled < 0 ? !c->enabled_by_default : !enabled) {
			log_debug("%s: not used: disabled in the configuration", c->name);
			continue;
		}
		const char *path = config_string(&srv->cfg, c->name, "plugin");
		char note[BACKEND_NOTE_MAX];
		const struct backend_ops *ops =
		        backend_component_ops(c, path && path[0] ? path : NULL, note, sizeof(note));
		if (!ops) {
			log_info("%s: not used: %s", c->name, note);
			continue;
		}
		pp.note[0] = '\0';
		err = probe_backend(srv, c, ops, &pp);
		elastic_backend(srv, c, ops);
	}
	if (err)
		return err;
	if (srv->ndevs == 0) {
		log_error("no device to run tasks on (see devices.include and devices.exclude)");
		return -TDM_ECONFIG;
	}
	log_devices(srv);
	return 0;
}

/* With cpu.cores set, the whole daemon (event loop included) stays on them. */
static void bind_process(struct server *srv)
{
	if (!srv->cfg.n_cores)
		return;
	hwloc_bitmap_t set = hwloc_bitmap_alloc();
	for (size_t i = 0; i < srv->ndevs; i++)
		if (srv->devs[i].bind_set)
			hwloc_bitmap_or(set, set, srv->devs[i].bind_set);
	if (hwloc_set_cpubind(srv->topo, set, HWLOC_CPUBIND_THREAD) != 0)
		log_warn("cannot bind the event loop to cpu.cores");
	hwloc_bitmap_free(set);
}

/* The socket file gets its mode as bind() creates it (from the unbound
 * socket's inode mode, less the umask), never by a chmod of the path
 * afterwards, which would follow whatever was put there meanwhile. It is
 * 0666: whoever can reach it is admitted by SO_PEERCRED against the
 * configuration (or refused at once, with the reason); the directory
 * decides who can reach it. Returns the new listening socket on
 * srv->socket_path, or -TDM_E*. */
static int bind_listener(struct server *srv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const mode_t mode = 0666;
	int err = prepare_socket_path(srv, srv->socket_path);
	if (err)
		return err;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv->socket_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("socket: %s", strerror(errno));
		return -TDM_ESYS;
	}
	mode_t old_mask = umask(0);
	int rc = fchmod(fd, mode) == 0 ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) : -1;
	int bind_errno = errno;
	umask(old_mask);
	if (rc != 0 || listen(fd, 128) != 0) {
		log_error("cannot listen on %s: %s", srv->socket_path,
		          strerror(rc != 0 ? bind_errno : errno));
		close(fd);
		return -TDM_ESYS;
	}
	return fd;
}

/* The socket systemd passed (tandemd.socket), else one of our own. */
static int open_listener(struct server *srv)
{
	char inherited[sizeof(srv->socket_path)];
	int fd = notify_inherited_listener(inherited, sizeof(inherited));
	if (fd == -2)
		return -TDM_ECONFIG;
	if (fd >= 0) {
		/* systemd made the socket (its path, mode and directory) and
		 * keeps it when we exit. */
		if (srv->cfg.socket_path[0] && strcmp(srv->cfg.socket_path, inherited))
			log_warn("socket activation: listening on %s, which systemd passed, not "
			         "on %s",
			         inherited, srv->cfg.socket_path);
		snprintf(srv->socket_path, sizeof(srv->socket_path), "%s", inherited);
		srv->socket_inherited = true;
		log_info("socket activation: listening on the socket systemd passed");
	} else if ((fd = bind_listener(srv)) < 0) {
		return fd;
	}
	srv->listener = evconnlistener_new(srv->base, on_accept, srv,
	                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!srv->listener) {
		log_error("cannot listen on %s: %s", srv->socket_path, strerror(errno));
		close(fd);
		if (!srv->socket_inherited)
			unlink(srv->socket_path);
		return -TDM_ESYS;
	}
	evconnlistener_set_error_cb(srv->listener, on_listen_error);
	srv->ev_listen_resume = evtimer_new(srv->base, on_listen_resume, srv);
	return srv->ev_listen_resume ? 0 : -TDM_ENOMEM;
}

/* Each connection costs descriptors (its socket; a session's ring and
 * doorbell): take what the hard limit allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_debug("cannot raise the descriptor limit: %s", strerror(errno));
	}
}

/* limits.max_mappings, or half of vm.max_map_count when it is 0. */
static uint32_t mapping_cap(const struct daemon_config *cfg)
{
	unsigned long max = 65530; /* the kernel's default */
	if (cfg->max_mappings)
		return cfg->max_mappings;
	FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
	if (f) {
		if (fscanf(f, "%lu", &max) != 1)
			max = 65530;
		fclose(f);
	}
	return (uint32_t)(max / 2 > UINT32_MAX ? UINT32_MAX : max / 2);
}

int server_init(struct server *srv, const struct daemon_config *cfg, const char *config_path,
                int ready_fd)
{
	int err;

	memset(srv, 0, sizeof(*srv));
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++)
		recorder_init(&srv->recs[i].rec);
	srv->bell_epoll = srv->kick_fd = srv->spare_fd = -1;
	pthread_rwlock_init(&srv->registry_lock, NULL);
	pthread_mutex_init(&srv->polling_lock, NULL);
	srv->cfg = *cfg;
	srv->config_path = config_path;
	srv->ready_fd = ready_fd;
	srv->start_ns = clock_monotonic_ns();
	log_set_level(cfg->log_level);
	if (cfg->socket_path[0])
		snprintf(srv->socket_path, sizeof(srv->socket_path), "%s", cfg->socket_path);
	else if (tdm_listen_socket_path(srv->socket_path, sizeof(srv->socket_path)) != 0)
		return -TDM_ECONFIG;

	const struct policy_ops *policy = policy_by_name(cfg->policy);
	if (!policy) {
		log_error("engine.policy: unknown policy \"%s\"", cfg->policy);
		return -TDM_ECONFIG;
	}
	if (hwloc_topology_init(&srv->topo) != 0 || hwloc_topology_load(srv->topo) != 0) {
		log_error("hwloc: cannot load the topology");
		return -TDM_ESYS;
	}
	err = start_devices(srv);
	if (err)
		return err;
	err = models_start(srv);
	if (err)
		return err;
	bind_process(srv);
	/* Spinning workers take the read side all the time: prefer the
	 * writer, or a disconnect could wait for a quiet moment that never
	 * comes. (Made again here, before any thread uses it.) */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_destroy(&srv->registry_lock);
	pthread_rwlock_init(&srv->registry_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	raise_fd_limit();
	srv->bell_epoll = epoll_create1(EPOLL_CLOEXEC);
	srv->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (srv->bell_epoll < 0 || srv->kick_fd < 0)
		return -TDM_ESYS;
	srv->env = (struct session_env){
		.cfg = &srv->cfg,
		.counters = &srv->counters,
		.submit = submit_to_engine,
		.draining = &srv->draining,
		.res = &srv->res,
		.broken = session_broken,
		.broken_ctx = srv,
		.mappings_cap = mapping_cap(&srv->cfg),
	};
	const struct policy_tuning tuning = {
		.dmda_alpha = cfg->dmda_alpha,
		.dmda_beta = cfg->dmda_beta,
		.plan_refine_iters = cfg->plan_refine_iters,
		.plan_repair = cfg->plan_repair != 0,
		.llm_tiers_by_cost = cfg->llm_tiers_by_cost != 0,
	};
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = policy,
		.devices = srv->devs,
		.ndevices = srv->ndevs,
		.max_devices = ENGINE_MAX_DEVICES, /* room for devices added later */
		.spin_us = cfg->spin_us,
		.hooks = { .graph_done = server_graph_done,
		           .poll = server_poll,
		           .polling = server_polling,
		           .ctx = srv },
		.topology = srv->topo,
		.poll_fd = srv->bell_epoll,
		.start_workers = true,
		.res = &srv->res,
		.pipeline_depth = cfg->pipeline_depth,
		.inject_faults = srv->inject_faults,
		.fault_limit = cfg->fault_limit,
		.prof = srv->prof,
		.tuning = &tuning,
		.watchdog_ms = cfg->watchdog_ms,
	};
	err = engine_create(&ep, &srv->engine);
	if (err)
		return err;
	srv->env.engine = srv->engine;
	srv->env.submit_ctx = srv->engine;

	srv->base = event_base_new();
	if (!srv->base)
		return -TDM_ENOMEM;
	err = open_listener(srv);
	if (err)
		return err;
	err = metrics_start(srv);
	if (err)
		return err;
	err = elastic_arm(srv);
	if (err)
		return err;
	err = models_arm(srv);
	if (err)
		return err;
	srv->ev_term = evsignal_new(srv->base, SIGTERM, on_terminate, srv);
	srv->ev_int = evsignal_new(srv->base, SIGINT, on_terminate, srv);
	srv->ev_hup = evsignal_new(srv->base, SIGHUP, on_hup, srv);
	srv->ev_kick = event_new(srv->base, srv->kick_fd, EV_READ | EV_PERSIST, on_kick, srv);
	if (!srv->ev_kick || event_add(srv->ev_kick, NULL) != 0)
		return -TDM_ESYS;
	if (!srv->ev_term || !srv->ev_int || !srv->ev_hup || evsignal_add(srv->ev_term, NULL) ||
	    evsignal_add(srv->ev_int, NULL) || evsignal_add(srv->ev_hup, NULL))
		return -TDM_ESYS;
	signal(SIGPIPE, SIG_IGN);
	if (notify_init(srv) != 0)
		return -TDM_ENOMEM;
	log_info("listening on %s (policy %s, %zu devices, spin %u us, %u mappings for "
	         "clients)",
	         srv->socket_path, policy->name, srv->ndevs, cfg->spin_us, srv->env.mappings_cap);
	return 0;
}

int server_run(struct server *srv)
{
	if (srv->ready_fd >= 0) {
		if (write(srv->ready_fd, "READY\n", 6) != 6)
			log_warn("--ready-fd: %s", strerror(errno));
		close(srv->ready_fd);
		srv->ready_fd = -1;
	}
	notify_ready(srv);
	event_base_dispatch(srv->base);
	return 0;
}

int server_fini(struct server *srv)
{
	/* A recording ends with the daemon: its files are written (the work
	 * drained) and tandemctl hears the summary before the connection goes. */
	if (srv->engine)
		control_trace_end(srv);
	if (srv->cal_running) {
		pthread_join(srv->cal_thread, NULL);
		srv->cal_running = false;
		free(srv->cal_doc);
		srv->cal_doc = NULL;
	}
	elastic_stop(srv);
	metrics_stop(srv); /* its pages read the engine */
	while (srv->conns)
		conn_close(srv->conns);
	/* Joins the workers; graphs still queued after a forced exit are
	 * abandoned with the process. A worker stuck in a kernel that does not
	 * stop keeps using buffers, devices and the engine: nothing of that is
	 * torn down, the caller exits at once. */
	if (engine_destroy(srv->engine) != 0) {
		log_warn("exiting with a kernel still running");
		if (srv->listener && !srv->socket_inherited)
			unlink(srv->socket_path);
		return -TDM_ETIMEDOUT;
	}
	srv->engine = NULL;
	models_stop(srv);
	/* Buffers that outlive this point are freed with the process; their
	 * device memory goes with the devices. */
	residency_close(&srv->res);
	elastic_release(srv); /* srv->devs holds copies of these */
	backend_registry_unload();
	residency_fini(&srv->res);
	if (srv->listener) {
		evconnlistener_free(srv->listener);
		if (!srv->socket_inherited)
			unlink(srv->socket_path);
	}
	if (srv->ev_term)
		event_free(srv->ev_term);
	if (srv->ev_int)
		event_free(srv->ev_int);
	if (srv->ev_hup)
		event_free(srv->ev_hup);
	if (srv->ev_drain)
		event_free(srv->ev_drain);
	if (srv->ev_kick)
		event_free(srv->ev_kick);
	if (srv->ev_listen_resume)
		event_free(srv->ev_listen_resume);
	elastic_destroy(srv);
	notify_fini(srv);
	if (srv->bell_epoll >= 0)
		close(srv->bell_epoll);
	if (srv->kick_fd >= 0)
		close(srv->kick_fd);
	if (srv->spare_fd >= 0)
		close(srv->spare_fd);
	free(srv->sessions);
	for (size_t i = 0; i < srv->nuids; i++)
		free(srv->uids[i]);
	free(srv->uids);
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++)
		recorder_fini(&srv->recs[i].rec);
	pthread_rwlock_destroy(&srv->registry_lock);
	pthread_mutex_destroy(&srv->polling_lock);
	if (srv->base)
		event_base_free(srv->base);
	if (srv->io_topo)
		hwloc_topology_destroy(srv->io_topo);
	if (srv->topo)
		hwloc_topology_destroy(srv->topo);
	return 0;
}
