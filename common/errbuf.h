/* A reason for the caller: the functions that take `char *err, size_t
 * errlen` write their message with these. err may be NULL (or errlen 0):
 * the caller wants no message. Header-only: the workload readers a client
 * links on their own (workload/wl_io.c) use it too. */
#ifndef TDM_COMMON_ERRBUF_H
#define TDM_COMMON_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline void err_vprintf(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
}

static inline void err_printf(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static inline void err_printf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif
