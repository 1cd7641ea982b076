/* Levelled logging to stderr. */
#ifndef TDM_COMMON_LOG_H
#define TDM_COMMON_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

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

/* Lines that an outsider can cause at will (refused connections, accept
 * errors) are rate-limited per call site: at most LOG_RATELIMIT_BURST in
 * LOG_RATELIMIT_WINDOW_S, then one line saying how many were dropped. */
#define LOG_RATELIMIT_BURST 10
#define LOG_RATELIMIT_WINDOW_S 5
struct log_ratelimit {
	_Atomic unsigned long long window_start_ns;
	_Atomic unsigned passed, suppressed;
};
bool log_ratelimit_pass(struct log_ratelimit *rl);
#define log_ratelimited(level, ...)                                                                \
	do {                                                                                       \
		static struct log_ratelimit rl_;                                                   \
		if (log_ratelimit_pass(&rl_))                                                      \
			log_msg(level, __VA_ARGS__);                                               \
	} while (0)

#endif
