/* The /metrics endpoint: Prometheus' text exposition of the status
 * figures (control_status_doc), served by libevent's evhttp from the
 * daemon's event loop on [metrics] listen. */
#ifndef TDM_DAEMON_METRICS_H
#define TDM_DAEMON_METRICS_H

#include <event2/buffer.h>
#include <jansson.h>

struct server;

/* Listens on srv->cfg.metrics_listen ("" = off: nothing to do). 0, or
 * -TDM_ESYS / -TDM_ENOMEM (logged) when it cannot. */
int metrics_start(struct server *srv);
/* Closes the endpoint and its connections (before the engine goes). */
void metrics_stop(struct server *srv);
/* Where it listens ("127.0.0.1:9464", "[::1]:9464", "unix:/path", with the
 * port it got for port 0); "" when off. */
const char *metrics_address(const struct server *srv);
/* The exposition of a status document made with no client list: appended
 * to out. 0, or -1 out of memory. */
int metrics_render(const json_t *doc, struct evbuffer *out);

#endif
