/* Helpers shared by the benchmarks under tests/bench/ (header only: the
 * Makefile links each bench_X.o on its own).
 *
 * Every figure is printed as one line:
 *   BENCH <name> <value> <unit> [key=value ...]
 */
#ifndef TDM_BENCH_UTIL_H
#define TDM_BENCH_UTIL_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define bench_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define bench_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define bench_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
		               .tv_nsec = (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Number of cores this process may run on. */
static inline int bench_ncores(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return (int)sysconf(_SC_NPROCESSORS_ONLN);
	return CPU_COUNT(&set);
}

/* The OS index of the n-th core (0-based) in this process's affinity mask,
 * or -1 if there are fewer cores. */
static inline int bench_nth_core(int n)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return n < (int)sysconf(_SC_NPROCESSORS_ONLN) ? n : -1;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (CPU_ISSET(cpu, &set) && n-- == 0)
			return cpu;
	}
	return -1;
}

/* Pins process/thread `pid` (0: the caller) to one OS core. */
static inline int bench_pin(pid_t pid, int core)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(core, &set);
	if (sched_setaffinity(pid, sizeof(set), &set) != 0) {
		fprintf(stderr, "bench: sched_setaffinity(%d, core %d): %s\n", (int)pid, core,
		        strerror(errno));
		return -1;
	}
	return 0;
}

/* utime + stime of a whole process (all threads), in seconds, from
 * /proc/PID/stat; negative on error or when the process has exited. */
static inline double bench_proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long utime, stime;
	char state;
	FILE *f;
	size_t n;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1.0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces: fields resume after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return -1.0;
	/* After ')': state(3) ... utime(14) stime(15), i.e. the 12th and 13th. */
	if (sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &utime,
	           &stime) != 3 ||
	    state == 'Z' || state == 'X')
		return -1.0;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU use of process `pid` over `seconds` of wall time, in % of one core;
 * negative on error. */
static inline double bench_idle_cpu_percent(pid_t pid, double seconds)
{
	double c0 = bench_proc_cpu_s(pid), c1;
	uint64_t t0 = bench_now_ns(), t1;

	if (c0 < 0)
		return -1.0;
	bench_sleep_ns((uint64_t)(seconds * 1e9));
	c1 = bench_proc_cpu_s(pid);
	t1 = bench_now_ns();
	if (c1 < 0)
		return -1.0;
	return 100.0 * (c1 - c0) / ((double)(t1 - t0) / 1e9);
}

static inline int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Sorts the samples and returns the p-th percentile (0 < p <= 100), nearest
 * rank. */
static inline uint64_t bench_percentile(uint64_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), bench_cmp_u64);
	rank = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of a few runs (sorts v). */
static inline double bench_median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* Prints "BENCH name value unit keys" and flushes, so that lines survive a
 * later crash. keys may be NULL or "". */
static inline void bench_report(const char *name, double value, const char *unit, const char *keys)
{
	const char *sep = keys && *keys ? " " : "";

	/* Whole numbers for large figures, four significant digits otherwise. */
	if (value >= 1000.0)
		printf("BENCH %s %.0f %s%s%s\n", name, value, unit, sep, keys ? keys : "");
	else
		printf("BENCH %s %.4g %s%s%s\n", name, value, unit, sep, keys ? keys : "");
	fflush(stdout);
}

/* Reports samples (ns) as "<prefix>_p50_us" and "<prefix>_p99_us". */
static inline void bench_report_p50_p99(const char *prefix, uint64_t *ns, size_t n,
                                        const char *keys)
{
	char name[96];

	snprintf(name, sizeof(name), "%s_p50_us", prefix);
	bench_report(name, (double)bench_percentile(ns, n, 50) / 1e3, "us", keys);
	snprintf(name, sizeof(name), "%s_p99_us", prefix);
	bench_report(name, (double)bench_percentile(ns, n, 99) / 1e3, "us", keys);
}

#endif
