/* The JSON documents of control replies (tandemctl): the one way to turn a
 * document into reply text, and the one error document. */
#ifndef TDM_DAEMON_REPLY_H
#define TDM_DAEMON_REPLY_H

#include <jansson.h>

/* doc as compact JSON text, malloc'd; the reference to doc is taken. NULL
 * when doc is NULL or out of memory. */
char *reply_text(json_t *doc);
/* {"error": MESSAGE}, MESSAGE made printf-like (cut at 512 bytes), as
 * reply_text makes it. */
char *reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* {"error": MESSAGE, "reason": reason}: a refusal a program can tell apart
 * by its reason word (TDM_CTL_REASON_*, include/tandem/wire.h). */
char *reply_refusal(const char *reason, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
