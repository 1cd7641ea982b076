/* Levelled logging to stderr. */
#ifndef TDM_DAEMON_LOG_H
#define TDM_DAEMON_LOG_H

#include "daemon/config.h"

/* The level is the one piece of process-wide state outside the daemon's
 * context: every room logs, and threading a logger through the engine,
 * backends and policies would buy nothing. It is atomic. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
