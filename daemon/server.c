/* The daemon's event loop: listener, signals, draining, adaptive polling. */
#include "daemon/server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/intake.h"
#include "daemon/models.h"
#include "daemon/log.h"
#include "policies/policy.h"
#include "tandem.h"

#define DRAIN_POLL_MS 10
/* After the drain timeout, canceled graphs get this long to complete (their
 * clients hear -TDM_ECANCELED) before the loop ends anyway. */
#define CANCEL_GRACE_MS 1000

static void submit_to_engine(void *ctx, struct engine_graph *g)
{
	engine_submit(ctx, g);
}

/* Engine hook, on the worker that finished the graph: a recording copies
 * it (tandemctl trace), then its completion is posted. */
static void server_graph_done(void *ctx, struct engine_graph *g)
{
	struct server *srv = ctx;
	if (recorder_active(&srv->rec))
		recorder_graph_done(&srv->rec, (const struct dgraph *)g);
	session_engine_graph_done(ctx, g);
}

/* Another daemon answering on the path is an error; a stale file is not. */
static int prepare_socket_path(const char *path)
{
	char dir[CONFIG_PATH_MAX];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
			log_error("cannot create %s: %s", dir, strerror(errno));
			return -TDM_ESYS;
		}
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
	srv->drain_start_ns = clock_monotonic_ns();
	evconnlistener_disable(srv->listener);
	srv->ev_drain = event_new(srv->base, -1, EV_PERSIST, on_drain_tick, srv);
	if (srv->ev_drain)
		event_add(srv->ev_drain, &tick);
	on_drain_tick(-1, 0, srv);
}

/* Settings that take effect on SIGHUP; the others need a restart. */
static void apply_reload(struct server *srv, const struct tdm_config *n)
{
	struct tdm_config *o = &srv->cfg;
	if (strcmp(o->socket_path, n->socket_path) || strcmp(o->policy, n->policy) ||
	    o->n_cores != n->n_cores || memcmp(o->cores, n->cores, n->n_cores * sizeof(int)) ||
	    o->sq_entries != n->sq_entries || o->cq_entries != n->cq_entries)
		log_warn("reload: daemon.socket, engine.policy, cpu.cores and rings change only "
		         "on restart");
	if (o->watchdog_ms != n->watchdog_ms || o->dmda_alpha != n->dmda_alpha ||
	    o->dmda_beta != n->dmda_beta || o->plan_refine_iters != n->plan_refine_iters ||
	    o->plan_repair != n->plan_repair)
		log_warn("reload: engine.watchdog_ms and [policy] change only on restart");
	memcpy(o->allowed_uids, n->allowed_uids, sizeof(o->allowed_uids));
	o->n_allowed_uids = n->n_allowed_uids;
	memcpy(o->allowed_gids, n->allowed_gids, sizeof(o->allowed_gids));
	o->n_allowed_gids = n->n_allowed_gids;
	o->max_clients = n->max_clients;
	o->log_level = n->log_level;
	o->spin_us = n->spin_us;
	o->buffer_quota_bytes = n->buffer_quota_bytes;
	o->max_buffers = n->max_buffers;
	o->max_tasks_in_flight = n->max_tasks_in_flight;
	o->max_tasks_per_graph = n->max_tasks_per_graph;
	o->max_graphs_in_flight = n->max_graphs_in_flight;
	o->max_task_ms = n->max_task_ms;
	o->drain_timeout_s = n->drain_timeout_s;
	/* New clients get the new shares and hints; connected ones keep theirs. */
	o->default_weight = n->default_weight;
	memcpy(o->client_weight, n->client_weight, sizeof(o->client_weight));
	o->n_client_weight = n->n_client_weight;
	memcpy(o->client_policy, n->client_policy, sizeof(o->client_policy));
	o->n_client_policy = n->n_client_policy;
	log_set_level(o->log_level);
	engine_set_spin_us(srv->engine, o->spin_us);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct server *srv = arg;
	struct tdm_config n;
	char err[CONFIG_ERR_MAX];
	(void)sig;
	(void)what;

	if (!srv->config_path) {
		log_info("SIGHUP: running on embedded defaults, nothing to reload");
		return;
	}
	config_defaults(&n);
	if (config_load_file(srv->config_path, &n, err, sizeof(err)) != 0) {
		log_error("SIGHUP: keeping the running configuration: %s", err);
		return;
	}
	/* Workers read the limits during intake, under the registry lock. */
	pthread_rwlock_wrlock(&srv->registry_lock);
	apply_reload(srv, &n);
	pthread_rwlock_unlock(&srv->registry_lock);
	log_info("SIGHUP: reloaded %s", srv->config_path);
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
			break;
		}
	}
	pthread_rwlock_unlock(&srv->registry_lock);
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

	if (woken) {
		/* Clear the doorbell before looking, so that a ring after our
		 * look wakes someone again. */
		uint64_t v;
		if (read(srv->sq_bell, &v, sizeof(v)) < 0 && errno != EAGAIN)
			log_debug("doorbell: %s", strerror(errno));
	}
	pthread_rwlock_rdlock(&srv->registry_lock);
	for (size_t i = 0; i < srv->nsessions; i++) {
		struct session *s = srv->sessions[i];
		bool overflow = __atomic_load_n(&s->hdr->daemon_flags, __ATOMIC_RELAXED) &
		                TDM_DAEMON_CQ_OVERFLOW;
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
	if (kick) {
		uint64_t one = 1;
		if (write(srv->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error("kick: %s", strerror(errno));
	}
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
	uint64_t v;
	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("kick: %s", strerror(errno));
	conn_close_broken(arg);
}

static bool device_wanted(const struct tdm_config *cfg, const struct backend_device *d)
{
	const char *kind = device_kind_name(d->kind);
	bool in = cfg->n_dev_include == 0;
	for (size_t i = 0; i < cfg->n_dev_include && !in; i++)
		in = config_selector_matches(cfg->dev_include[i], d->name, kind);
	for (size_t i = 0; i < cfg->n_dev_exclude && in; i++)
		in = !config_selector_matches(cfg->dev_exclude[i], d->name, kind);
	return in;
}

/* An OpenCL GPU that CUDA also drives (same PCI bus id) is used once, by CUDA. */
static bool seen_through_cuda(const struct server *srv, const struct backend_device *d)
{
	if (!d->pci_busid[0] || d->ops != &backend_opencl)
		return false;
	for (size_t i = 0; i < srv->ndevs; i++)
		if (srv->devs[i].ops != &backend_opencl &&
		    !strcmp(srv->devs[i].pci_busid, d->pci_busid))
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
static int probe_backend(struct server *srv, const struct backend_ops *ops,
                         struct backend_probe_params *pp)
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
		bool keep = device_wanted(&srv->cfg, d) && !seen_through_cuda(srv, d) &&
		            srv->ndevs < SERVER_MAX_DEVICES;
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
		if (!keep) {
			if (ops->release)
				ops->release(d);
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

static int start_devices(struct server *srv)
{
	struct backend_probe_params pp = {
		.topology = srv->topo,
		.cores = srv->cfg.n_cores ? srv->cfg.cores : NULL,
		.ncores = srv->cfg.n_cores,
	};
	int err;

	residency_init(&srv->res);
	err = probe_backend(srv, &backend_cpu, &pp);
	if (!err && srv->cfg.cuda_enabled) {
		char note[BACKEND_NOTE_MAX];
		const char *path = srv->cfg.cuda_plugin[0] ? srv->cfg.cuda_plugin : NULL;
		const struct backend_ops *cuda = backend_cuda_load(path, note, sizeof(note));
		pp.note[0] = '\0';
		if (cuda)
			err = probe_backend(srv, cuda, &pp);
		else
			log_info("cuda: not used: %s", note);
	}
	if (!err && srv->cfg.opencl_enabled) {
		pp.note[0] = '\0';
		err = probe_backend(srv, &backend_opencl, &pp);
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

static int open_listener(struct server *srv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int err = prepare_socket_path(srv->socket_path);
	if (err)
		return err;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv->socket_path);
	srv->listener = evconnlistener_new_bind(srv->base, on_accept, srv,
	                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 64,
	                                        (struct sockaddr *)&sa, sizeof(sa));
	if (!srv->listener) {
		log_error("cannot listen on %s: %s", srv->socket_path, strerror(errno));
		return -TDM_ESYS;
	}
	/* Access is decided by SO_PEERCRED against the configuration, so
	 * that a refused peer hears why instead of a bare EACCES. */
	chmod(srv->socket_path, 0666);
	return 0;
}

int server_init(struct server *srv, const struct tdm_config *cfg, const char *config_path,
                int ready_fd)
{
	int err;

	memset(srv, 0, sizeof(*srv));
	recorder_init(&srv->rec);
	srv->sq_bell = srv->kick_fd = -1;
	srv->cfg = *cfg;
	srv->config_path = config_path;
	srv->ready_fd = ready_fd;
	srv->start_ns = clock_monotonic_ns();
	log_set_level(cfg->log_level);
	if (cfg->socket_path[0])
		snprintf(srv->socket_path, sizeof(srv->socket_path), "%s", cfg->socket_path);
	else if (tdm_default_socket_path(srv->socket_path, sizeof(srv->socket_path)) != 0)
		return -TDM_ECONFIG;

	const struct tdm_policy_ops *policy = policy_by_name(cfg->policy);
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
	 * comes. */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&srv->registry_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&srv->polling_lock, NULL);
	srv->sq_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	srv->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->sq_bell < 0 || srv->kick_fd < 0)
		return -TDM_ESYS;
	srv->env = (struct session_env){
		.cfg = &srv->cfg,
		.counters = &srv->counters,
		.submit = submit_to_engine,
		.draining = &srv->draining,
		.res = &srv->res,
	};
	const struct policy_tuning tuning = {
		.dmda_alpha = cfg->dmda_alpha,
		.dmda_beta = cfg->dmda_beta,
		.plan_refine_iters = cfg->plan_refine_iters,
		.plan_repair = cfg->plan_repair != 0,
	};
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = policy,
		.devices = srv->devs,
		.ndevices = srv->ndevs,
		.spin_us = cfg->spin_us,
		.hooks = { .graph_done = server_graph_done,
		           .poll = server_poll,
		           .polling = server_polling,
		           .ctx = srv },
		.topology = srv->topo,
		.poll_fd = srv->sq_bell,
		.start_workers = true,
		.res = &srv->res,
		.pipeline_depth = cfg->pipeline_depth,
		.inject_faults = srv->inject_faults,
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
	log_info("listening on %s (policy %s, %zu devices, spin %u us)", srv->socket_path,
	         policy->name, srv->ndevs, cfg->spin_us);
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
	event_base_dispatch(srv->base);
	return 0;
}

int server_fini(struct server *srv)
{
	/* A recording ends with the daemon: its files are written (the work
	 * drained) and tandemctl hears the summary before the connection goes. */
	if (srv->engine)
		control_trace_end(srv);
	while (srv->conns)
		conn_close(srv->conns);
	/* Joins the workers; graphs still queued after a forced exit are
	 * abandoned with the process. A worker stuck in a kernel that does not
	 * stop keeps using buffers, devices and the engine: nothing of that is
	 * torn down, the caller exits at once. */
	if (engine_destroy(srv->engine) != 0) {
		log_warn("exiting with a kernel still running");
		if (srv->listener)
			unlink(srv->socket_path);
		return -TDM_ETIMEDOUT;
	}
	srv->engine = NULL;
	models_stop(srv);
	/* Buffers that outlive this point are freed with the process; their
	 * device memory goes with the devices. */
	residency_close(&srv->res);
	for (size_t i = 0; i < srv->ndevs; i++)
		if (srv->devs[i].ops->release)
			srv->devs[i].ops->release(&srv->devs[i]);
	backend_cuda_unload();
	residency_fini(&srv->res);
	if (srv->listener) {
		evconnlistener_free(srv->listener);
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
	if (srv->sq_bell >= 0)
		close(srv->sq_bell);
	if (srv->kick_fd >= 0)
		close(srv->kick_fd);
	free(srv->sessions);
	recorder_fini(&srv->rec);
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
