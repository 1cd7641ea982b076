/* Intake: submission ring -> validated graphs -> engine. */
#ifndef TDM_DAEMON_INTAKE_H
#define TDM_DAEMON_INTAKE_H

#include "daemon/session.h"

/* Consumes every entry the client has published. Rejections and stray
 * entries are answered in the completion ring. Returns 0, or -TDM_EPROTO
 * when the client broke the ring protocol and must be disconnected.
 * *consumed receives the number of entries read. Caller holds
 * s->intake_lock. */
int intake_run(struct session *s, uint32_t *consumed);
/* Has the client published entries not consumed yet? */
bool intake_pending(const struct session *s);

#endif
