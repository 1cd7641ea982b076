/* splitmix64 (Steele, Lea and Flood, 2014): a seeded, reproducible stream
 * for generated workloads and plan perturbations (the same seed gives the
 * same numbers on every machine); not for anything an attacker must not
 * guess. Header-only, like xorshift.h. */
#ifndef TDM_COMMON_SPLITMIX_H
#define TDM_COMMON_SPLITMIX_H

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static inline double splitmix_unit(uint64_t *state)
{
	return (double)(splitmix64(state) >> 11) / 9007199254740992.0;
}

/* Uniform in (0, 1): never 0, for log(). */
static inline double splitmix_open_unit(uint64_t *state)
{
	return ((double)(splitmix64(state) >> 11) + 0.5) / 9007199254740992.0;
}

#endif
