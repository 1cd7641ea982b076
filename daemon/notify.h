/* systemd's service protocol (sd_notify): readiness, reloads, shutdown, a
 * status line, and the watchdog, answered from the event loop. Without
 * $NOTIFY_SOCKET (not started by systemd) every call does nothing. */
#ifndef TDM_DAEMON_NOTIFY_H
#define TDM_DAEMON_NOTIFY_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

struct server;

/* STATUS= is sent at most this often; a change within it goes out when it
 * ends (clients that come and go by the thousand cost one datagram). */
#define NOTIFY_STATUS_MIN_INTERVAL_MS 1000

struct service_notify {
	struct event *ev_watchdog; /* WATCHDOG=1 at half of WatchdogSec */
	struct event *ev_status; /* a STATUS= update held back by the rate limit */
	uint64_t status_sent_ns;
};

/* Arms the watchdog timer when systemd asks for one (WATCHDOG_USEC). */
int notify_init(struct server *srv);
void notify_fini(struct server *srv);
/* READY=1 with the first STATUS=: clients can connect. */
void notify_ready(struct server *srv);
/* SIGHUP: RELOADING=1 (with MONOTONIC_USEC=, which systemd 253 and later
 * want) before the configuration is read, READY=1 after. */
void notify_reloading(struct server *srv);
void notify_reloaded(struct server *srv);
/* SIGTERM/SIGINT: STOPPING=1. */
void notify_stopping(struct server *srv);
/* Devices or clients changed: a new STATUS= line (rate-limited). */
void notify_status_changed(struct server *srv);

/* Socket activation (tandemd.socket): the listening socket systemd passed
 * ($LISTEN_FDS, $LISTEN_PID, sd_listen_fds), with its path in path. -1
 * when there is none; -2 when what was passed is not one listening Unix
 * stream socket with a path (logged). The variables are unset either way:
 * nothing the daemon starts inherits them. */
int notify_inherited_listener(char *path, size_t len);

#endif
