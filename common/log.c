#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Atomic int current_level = LOG_INFO;

void log_set_level(enum log_level level)
{
	atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&current_level);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	char line[1024];
	struct timespec ts;
	va_list ap;
	int n;

	if ((int)level > atomic_load(&current_level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof(line), "tandemd[%ld.%03ld] %s: ", (long)ts.tv_sec,
	             ts.tv_nsec / 1000000, names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per line keeps lines whole when threads log at once. */
	fprintf(stderr, "%s\n", line);
}

bool log_ratelimit_pass(struct log_ratelimit *rl)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned long long now =
	        (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
	unsigned long long start = atomic_load(&rl->window_start_ns);
	if (now - start >= LOG_RATELIMIT_WINDOW_S * 1000000000ull &&
	    atomic_compare_exchange_strong(&rl->window_start_ns, &start, now)) {
		unsigned dropped = atomic_exchange(&rl->suppressed, 0);
		atomic_store(&rl->passed, 0);
		if (dropped)
			log_msg(LOG_WARN, "(%u similar lines dropped in the last %d s)", dropped,
			        LOG_RATELIMIT_WINDOW_S);
	}
	if (atomic_fetch_add(&rl->passed, 1) < LOG_RATELIMIT_BURST)
		return true;
	atomic_fetch_add(&rl->suppressed, 1);
	return false;
}
