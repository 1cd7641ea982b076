/* The engine's clock: the daemon gives it the real monotonic clock,
 * simulation a virtual one. The rule: every time that shapes a schedule or
 * a cost model (task start and end, submission, deadlines, plans,
 * predictions) is read through this clock, never from the machine, so that
 * simulation replays the same decisions. The engine reads the machine's
 * monotonic clock (clock_monotonic_ns) only for its own pacing, which a
 * simulation drives by other means: how long an idle worker spins before
 * it sleeps and how long the watchdog waits for a stalled policy
 * (engine_sim_stalled stands in for it). Residency times its synchronous
 * copies with it too, to teach the transfer model of a real machine. */
#ifndef TDM_COMMON_CLOCK_H
#define TDM_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

struct clock_source {
	uint64_t (*now_ns)(const struct clock_source *clk);
	void *ctx;
};

static inline uint64_t clock_now(const struct clock_source *clk)
{
	return clk->now_ns(clk);
}

static inline uint64_t clock_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC: comparable across processes on one machine. */
extern const struct clock_source clock_real;

#endif
