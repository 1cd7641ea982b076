/* tandemd's one context object: configuration, event loop, listener,
 * connections, devices, engine, counters. */
#ifndef TDM_DAEMON_SERVER_H
#define TDM_DAEMON_SERVER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <hwloc.h>
#include <jansson.h>
#include <stdbool.h>

#include "daemon/config.h"
#include "daemon/notify.h"
#include "daemon/recorder.h"
#include "daemon/session.h"

#define SERVER_MAX_DEVICES 1024 /* engine ids (ENGINE_MAX_DEVICES bounds them further) */
#define SERVER_MAX_RECORDINGS 8 /* tandemctl trace: at most one per user */
#define CONN_MAX_FDS 2 /* descriptors a connection may pass ahead of its request */

enum conn_role { CONN_NEW = 0, CONN_CLIENT, CONN_CONTROL };

struct server;

/* A message waiting to be sent (the socket was full): the bytes not sent
 * yet, and the descriptors (our duplicates) that go with its first byte. */
struct conn_out {
	struct conn_out *next;
	size_t len, off;
	int fds[3];
	int nfds;
	unsigned char buf[];
};

struct conn {
	struct server *srv;
	int fd;
	enum conn_role role;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* supplementary groups when it connected (malloc'd) */
	size_t ngroups;
	struct uid_usage *usage;
	struct event *ev_sock; /* readable */
	struct event *ev_write; /* writable, while a reply waits */
	/* The hello deadline until the hello came; then, while a reply waits,
	 * the deadline for the peer to read it. */
	struct event *ev_timer;
	struct session *s;
	/* Descriptors received (SCM_RIGHTS), for the request that takes them
	 * (TRACE_START, EXPORT); closed with the connection otherwise. */
	int fds[CONN_MAX_FDS];
	int nfds;
	/* One request is answered at a time: while its reply waits for the
	 * peer to read, or a calibration runs for it, nothing more is read
	 * from this connection. */
	struct conn_out *out_head, *out_tail;
	size_t out_bytes;
	bool awaiting; /* a calibration runs for this connection */
	size_t inlen;
	unsigned char in[sizeof(struct tdm_msg_hdr) + TDM_MSG_MAX_PAYLOAD];
	struct conn *prev, *next;
};

/* A tandemctl trace recording: an administrator's records every client, a
 * user's only that user's clients. */
struct recording {
	struct recorder rec;
	bool all;
	uid_t uid;
};

struct server {
	struct daemon_config cfg;
	const char *config_path; /* NULL: embedded defaults */
	char socket_path[CONFIG_PATH_MAX];
	bool made_socket_dir; /* its mode then follows the access lists */
	bool socket_inherited; /* systemd's (socket activation): never unlinked */
	int ready_fd;
	struct service_notify notify; /* systemd's sd_notify (daemon/notify.c) */
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *ev_term, *ev_int, *ev_hup, *ev_drain;
	struct event *ev_listen_resume; /* the listener paused after EMFILE/ENFILE */
	int spare_fd; /* given up to accept and shed a connection at EMFILE */
	hwloc_topology_t topo;
	hwloc_topology_t io_topo; /* with PCI objects, for accelerator locality; may be NULL */
	struct backend_device devs[SERVER_MAX_DEVICES];
	size_t ndevs;
	uint32_t inject_faults[SERVER_MAX_DEVICES]; /* devices.fault_inject, by device */
	struct residency res; /* replicas of every buffer on every memory node */
	struct engine *engine;
	struct profiler *prof; /* cost models (daemon/models.c) */
	char state_dir[CONFIG_PLUGIN_MAX]; /* "" = none: nothing cached or saved */
	struct event *ev_save; /* periodic save of the models: wakes the saver */
	struct models_saver *saver; /* its thread (daemon/models.c) */
	struct daemon_counters counters;
	struct session_env env;
	_Atomic bool draining;

	/* Idle workers run intake (see server_poll): they scan the client
	 * sessions under registry_lock (read), which the event loop takes to
	 * add or remove a session and to change cfg (write). */
	pthread_rwlock_t registry_lock;
	struct session **sessions;
	size_t nsessions, sessions_cap;
	/* Workers spinning on the rings, and the TDM_DAEMON_POLLING flag set in
	 * every session while there is at least one (lock before registry). */
	pthread_mutex_t polling_lock;
	unsigned pollers;
	/* Every session's doorbell (the daemon's end), in one epoll set that
	 * idle workers sleep on: no descriptor the daemon waits on is shared
	 * with a client. */
	int bell_epoll;
	/* Workers (and the calibration thread) ask the loop to drop clients
	 * that broke protocol, and to send a finished calibration's reply. */
	int kick_fd;
	struct event *ev_kick;
	uint64_t drain_start_ns;
	uint64_t cancel_ns; /* when the drain gave up and canceled the work; 0: not yet */
	struct conn *conns;
	uint32_t nconns, nclients;
	uint32_t next_session_id;
	uint64_t start_ns;
	/* Per-uid totals (struct uid_usage), made on a uid's first connection. */
	struct uid_usage **uids;
	size_t nuids, uids_cap;
	struct recording recs[SERVER_MAX_RECORDINGS]; /* tandemctl trace */
	/* tandemctl calibrate runs on a thread of its own, one at a time. */
	pthread_t cal_thread;
	bool cal_running;
	_Atomic bool cal_done;
	struct conn *cal_conn; /* who asked; NULL once it went away */
	char *cal_doc;
	struct metrics *metrics; /* the /metrics endpoint; NULL: off */
	/* Devices joining and leaving at run time (daemon/elastic.c): every
	 * device found, the removals under way, the probe/measure thread. */
	struct elastic *elastic;
};

int server_init(struct server *srv, const struct daemon_config *cfg, const char *config_path,
                int ready_fd);
/* Runs until SIGTERM/SIGINT drained the work (or canceled it after
 * daemon.drain_timeout_s); returns 0. */
int server_run(struct server *srv);
/* 0, or -TDM_ETIMEDOUT when a worker could not be stopped: nothing it may
 * use was freed, and the process must exit at once (_exit). */
int server_fini(struct server *srv);

/* conn.c */
void conn_accept(struct server *srv, int fd);
void conn_close(struct conn *c);
/* Drops every client whose session intake flagged a protocol error. */
void conn_close_broken(struct server *srv);
/* Sends a control reply: status, then text (a JSON document, or the
 * machine description), which it frees; text NULL with status 0 is sent
 * as -TDM_ENOMEM. Never blocks: what the socket cannot take now waits in
 * the connection's output (bounded by TDM_CTL_REPLY_MAX). false when the
 * connection failed and must be closed. */
bool conn_send_reply(struct conn *c, int32_t status, char *text);
/* A request whose reply comes later (a calibration, a device change):
 * nothing more is read from c meanwhile. */
void conn_defer_reply(struct conn *c);
/* Sends that reply and reads on; false when c failed and was closed. */
bool conn_deferred_reply(struct conn *c, int32_t status, char *doc);
/* The calibration thread finished: send its reply. */
void conn_calibration_done(struct server *srv);

/* server.c: the session registry. */
int server_register(struct server *srv, struct session *s);
void server_unregister(struct server *srv, struct session *s);
/* From any thread: the loop drops broken sessions and sends a finished
 * calibration's reply (on_kick). */
void server_kick(struct server *srv);
/* The totals of a uid, made on first use; NULL when out of memory. */
struct uid_usage *server_uid_usage(struct server *srv, uid_t uid);
/* Whether a peer may connect; whether it is an administrator. groups: its
 * supplementary groups (SO_PEERGROUPS), which count as its primary gid. */
bool server_peer_allowed(const struct server *srv, uid_t uid, gid_t gid, const gid_t *groups,
                         size_t ngroups);
bool server_peer_admin(const struct server *srv, uid_t uid, gid_t gid, const gid_t *groups,
                       size_t ngroups);
/* Whether [devices] include/exclude select d. */
bool server_device_wanted(const struct daemon_config *cfg, const struct backend_device *d);

/* control.c: the figures behind `tandemctl status`, `tandemctl top` and
 * /metrics, gathered in one place from the atomics the engine and the
 * sessions keep (nothing waits on a worker). all: every client, else only
 * uid's; clients false: no client list (/metrics shows aggregates only). */
struct status_view {
	bool all;
	uid_t uid;
	bool clients;
	/* A device removed and added again has a new id under the same name:
	 * only the newest of each name (for /metrics, whose series are by name;
	 * its counters start again from 0, which Prometheus reads as a reset). */
	bool latest_only;
};
json_t *control_status_doc(struct server *srv, const struct status_view *v);
/* control.c: the status document tandemctl shows (malloc'd JSON), for
 * connection c: an administrator's lists every client, another user's
 * only that user's clients. */
char *control_status_json(struct server *srv, const struct conn *c);
/* tandemctl trace: starts a recording for connection c into fds[0] (and
 * fds[1] when nfds is 2), which it takes on success. 0 or -TDM_E* with
 * *doc the reply's text (malloc'd, NULL on ENOMEM). */
int control_trace_start(struct server *srv, struct conn *c, const int *fds, int nfds, char **doc);
/* Ends c's recording and writes the files; *doc gets the summary. */
int control_trace_stop(struct server *srv, struct conn *c, char **doc);
/* The daemon stops: ends the recordings still running and sends their
 * summaries to the connections that started them. */
void control_trace_end(struct server *srv);
/* Connection c goes away: its recording, if any, is discarded. */
void control_trace_gone(struct server *srv, struct conn *c);
/* tandemctl client weight / uid quota (an administrator's request, its
 * fields not yet checked): 0 or -TDM_E*, *doc the reply's text. */
int control_client_change(struct server *srv, const struct tdm_ctl_client *r, char **doc);
/* tandemctl calibrate --export: the machine description (TOML). fd >= 0:
 * written there (taken either way), *doc = {"bytes": N}; fd < 0: *doc is
 * the text itself. 0 or -TDM_E* (then *doc explains). */
int control_export(struct server *srv, int fd, char **doc);

#endif
