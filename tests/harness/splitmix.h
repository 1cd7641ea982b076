/* The unit tests' random inputs: splitmix64 of common/splitmix.h (fixed
 * seeds, so that a failure reproduces; the caller owns the state), and
 * floats from it. */
#ifndef TDM_TESTS_SPLITMIX_H
#define TDM_TESTS_SPLITMIX_H

#include <stdint.h>

#include "common/splitmix.h"

/* Uniform in [lo, hi), from the top 24 bits. */
static inline float splitmix_float(uint64_t *state, float lo, float hi)
{
	return lo + (hi - lo) * (float)(splitmix64(state) >> 40) / (float)(1u << 24);
}

#endif
