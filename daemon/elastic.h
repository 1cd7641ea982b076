/* Devices that join, drain and leave while clients run (docs/elastic.md):
 * tandemctl device add|drain|remove|resume|budget, devices rescan, SIGHUP
 * with a changed [devices] section, and devices a fault took away.
 *
 * Every device a backend found is kept in a table of its own (which owns
 * the backend's handles until the daemon exits); the engine's devices are
 * copies in srv->devs, by engine id. Ids are never reused: a device
 * removed and added again gets a new id, and the old one stays "gone".
 * Everything here runs on the event loop; probing the backends again and
 * measuring a device of a model never calibrated run on a thread of their
 * own, and a removal waits for its device by a timer, never by sleeping. */
#ifndef TDM_DAEMON_ELASTIC_H
#define TDM_DAEMON_ELASTIC_H

#include <jansson.h>
#include <stdbool.h>

#include "backends/backend.h"
#include "tandem/wire.h"

struct server;
struct conn;
struct daemon_config;

/* Made before the first device is probed: 0 or -TDM_ENOMEM. */
int elastic_create(struct server *srv);
/* A device a backend found at start: kept (its handles owned here); id is
 * its engine id when it is used, -1 when [devices] left it out. */
int elastic_found(struct server *srv, const struct backend_device *d, int id);
/* A backend used at start, which devices rescan probes again. */
void elastic_backend(struct server *srv, const struct backend_component *c,
                     const struct backend_ops *ops);
/* Whether a probe or a measurement runs (tandemctl calibrate waits). */
bool elastic_busy(const struct server *srv);
/* Once the event loop exists: the removal timer. 0 or -TDM_ENOMEM. */
int elastic_arm(struct server *srv);
/* Waits for a probe or a measurement still running (before the engine
 * goes). */
void elastic_stop(struct server *srv);
/* Releases every device's handles (after the engine and residency let go). */
void elastic_release(struct server *srv);
void elastic_destroy(struct server *srv);

/* An administrator's TDM_MSG_CTL_DEVICE, its fields checked (conn.c).
 * Replies now, or later (the connection then waits). false: c failed. */
bool elastic_device_request(struct server *srv, struct conn *c, const struct tdm_ctl_device *r);
/* Connection c goes away: a reply it waits for is dropped. */
void elastic_conn_gone(struct server *srv, struct conn *c);
/* The loop was kicked: a probe or measurement may have finished. */
void elastic_kicked(struct server *srv);
/* SIGHUP, after srv->cfg became the new configuration (old: the one
 * before): devices [devices] now selects are added, those it no longer
 * selects drained and removed; changed mem_cap budgets are applied. */
void elastic_reload(struct server *srv, const struct daemon_config *old);

/* For the status document: "active", "draining" or "gone". */
const char *elastic_state_name(const struct server *srv, unsigned id);
/* Devices found and not in use: [{name, kind, backend, model, cpu}]. */
json_t *elastic_available_json(struct server *srv);
/* Device events since start: {add, drain, resume, remove, budget, rescan,
 * fault} (fault: a device that faults took away). */
json_t *elastic_events_json(const struct server *srv);

#endif
