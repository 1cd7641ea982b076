/* splitmix64 (Steele, Lea and Flood, 2014): the fixed-seed generator of the
 * unit tests' random inputs, so that a failure reproduces. The caller owns
 * the state (seeded as it likes, any value). */
#ifndef TDM_TESTS_SPLITMIX_H
#define TDM_TESTS_SPLITMIX_H

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi), from the top 24 bits. */
static inline float splitmix_float(uint64_t *state, float lo, float hi)
{
	return lo + (hi - lo) * (float)(splitmix64(state) >> 40) / (float)(1u << 24);
}

#endif
