/* Control reply documents (reply.h). */
#include "daemon/reply.h"

#include <stdarg.h>
#include <stdio.h>

char *reply_text(json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return text;
}

char *reply_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return reply_text(json_pack("{s:s}", "error", msg));
}

char *reply_refusal(const char *reason, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return reply_text(json_pack("{s:s, s:s}", "error", msg, "reason", reason));
}
