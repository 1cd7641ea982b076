#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic int current_level = LOG_INFO;

void log_set_level(enum log_level level)
{
	atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&current_level);
}

/* Whether stderr is a stream into systemd's journal: $JOURNAL_STREAM names
 * its device and inode ("dev:ino"), and stderr still is that file (not
 * redirected since). */
static bool stderr_is_journal(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char end;

	if (!env || sscanf(env, "%llu:%llu%c", &dev, &ino, &end) != 2)
		return false;
	return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

/* -1: not looked yet; 0: a terminal or file; 1: the journal. Looked at
 * once: stderr does not change under a running daemon. */
static _Atomic int to_journal = -1;

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	/* sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG. */
	static const char *const priorities[] = { "<3>", "<4>", "<6>", "<7>" };
	char line[1024];
	struct timespec ts;
	va_list ap;
	int n;

	if ((int)level > atomic_load(&current_level))
		return;
	int journal = atomic_load(&to_journal);
	if (journal < 0) {
		journal = stderr_is_journal();
		atomic_store(&to_journal, journal);
	}
	if (journal) {
		/* The journal keeps the time and the process: the line says
		 * its priority, which the journal reads off and keeps. */
		n = snprintf(line, sizeof(line), "%s%s: ", priorities[level], names[level]);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		n = snprintf(line, sizeof(line), "tandemd[%ld.%03ld] %s: ", (long)ts.tv_sec,
		             ts.tv_nsec / 1000000, names[level]);
	}
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
