/* The engine's clock. The engine never reads the wall clock directly: the
 * daemon gives it the real monotonic clock, simulation a virtual one. */
#ifndef TDM_COMMON_CLOCK_H
#define TDM_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

struct tdm_clock {
	uint64_t (*now_ns)(const struct tdm_clock *clk);
	void *ctx;
};

static inline uint64_t clock_now(const struct tdm_clock *clk)
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
extern const struct tdm_clock clock_real;

#endif
