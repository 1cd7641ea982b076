/* systemd's notification protocol, through libsystemd's sd_notify. */
#include "daemon/notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "common/clock.h"
#include "common/log.h"
#include "daemon/server.h"

/* "2 devices (cpu0, clcpu0), 3 clients" plus "draining" while it drains. */
static void status_line(const struct server *srv, char *buf, size_t len)
{
	size_t used = 0;
	int w = snprintf(buf, len, "STATUS=%zu device%s (", srv->ndevs, srv->ndevs == 1 ? "" : "s");
	for (size_t i = 0; w > 0 && i < srv->ndevs; i++) {
		used += (size_t)w;
		if (used >= len)
			break;
		w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", srv->devs[i].name);
	}
	if (w > 0)
		used += (size_t)w;
	if (used < len)
		snprintf(buf + used, len - used, "), %u client%s%s", srv->nclients,
		         srv->nclients == 1 ? "" : "s",
		         atomic_load(&srv->draining) ? ", draining" : "");
}

static void send_state(struct server *srv, const char *state)
{
	char msg[1024];
	int n = state ? snprintf(msg, sizeof(msg), "%s\n", state) : 0;
	status_line(srv, msg + n, sizeof(msg) - (size_t)n);
	int err = sd_notify(0, msg);
	if (err < 0)
		log_ratelimited(LOG_WARN, "sd_notify: %s", strerror(-err));
	srv->notify.status_sent_ns = clock_monotonic_ns();
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	send_state(arg, NULL);
}

int notify_init(struct server *srv)
{
	uint64_t usec = 0;
	srv->notify.ev_status = evtimer_new(srv->base, on_status, srv);
	if (!srv->notify.ev_status)
		return -1;
	/* The timer runs on the event loop: a loop that hangs stops the
	 * pings, and systemd restarts the daemon. */
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	srv->notify.ev_watchdog = event_new(srv->base, -1, EV_PERSIST, on_watchdog, srv);
	struct timeval tv = { (time_t)(usec / 2 / 1000000), (suseconds_t)(usec / 2 % 1000000) };
	if (!srv->notify.ev_watchdog || event_add(srv->notify.ev_watchdog, &tv) != 0)
		return -1;
	log_info("systemd watchdog: pinging every %llu ms", (unsigned long long)(usec / 2000));
	return 0;
}

void notify_fini(struct server *srv)
{
	if (srv->notify.ev_watchdog)
		event_free(srv->notify.ev_watchdog);
	if (srv->notify.ev_status)
		event_free(srv->notify.ev_status);
	srv->notify.ev_watchdog = srv->notify.ev_status = NULL;
}

void notify_ready(struct server *srv)
{
	send_state(srv, "READY=1");
}

void notify_reloading(struct server *srv)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	         (unsigned long long)(clock_monotonic_ns() / 1000));
	send_state(srv, msg);
}

void notify_reloaded(struct server *srv)
{
	send_state(srv, "READY=1");
}

void notify_stopping(struct server *srv)
{
	send_state(srv, "STOPPING=1");
}

void notify_status_changed(struct server *srv)
{
	if (!srv->notify.ev_status || evtimer_pending(srv->notify.ev_status, NULL))
		return; /* the pending update will say it */
	uint64_t since = clock_monotonic_ns() - srv->notify.status_sent_ns;
	uint64_t min = NOTIFY_STATUS_MIN_INTERVAL_MS * 1000000ull;
	if (since >= min) {
		send_state(srv, NULL);
		return;
	}
	uint64_t wait_us = (min - since) / 1000;
	struct timeval tv = { (time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000) };
	evtimer_add(srv->notify.ev_status, &tv);
}

int notify_inherited_listener(char *path, size_t len)
{
	int n = sd_listen_fds(1);
	if (n == 0)
		return -1;
	if (n < 0) {
		log_error("socket activation: %s", strerror(-n));
		return -2;
	}
	if (n != 1) {
		log_error("socket activation: systemd passed %d sockets; tandemd listens on one "
		          "(one ListenStream= in tandemd.socket)",
		          n);
		return -2;
	}
	int fd = SD_LISTEN_FDS_START;
	struct sockaddr_un sa;
	socklen_t salen = sizeof(sa);
	memset(&sa, 0, sizeof(sa));
	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) != 0 ||
	    salen <= offsetof(struct sockaddr_un, sun_path) || sa.sun_path[0] != '/') {
		log_error("socket activation: descriptor %d is not a listening Unix stream socket "
		          "with a path (ListenStream=/run/tandem/tandemd.sock in tandemd.socket)",
		          fd);
		return -2;
	}
	size_t plen = strnlen(sa.sun_path, salen - offsetof(struct sockaddr_un, sun_path));
	if (plen >= len) {
		log_error("socket activation: the socket's path is too long");
		return -2;
	}
	memcpy(path, sa.sun_path, plen);
	path[plen] = '\0';
	/* libevent wants it non-blocking; nothing we start may inherit it. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
		log_error("socket activation: %s", strerror(errno));
		return -2;
	}
	return fd;
}
