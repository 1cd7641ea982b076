/* xorshift64* (Vigna, 2016): a small, fast generator for jitter and test
 * workloads; not for anything an attacker must not guess. A state of 0
 * starts from a fixed non-zero one. Header-only: libtandem uses it too. */
#ifndef TDM_COMMON_XORSHIFT_H
#define TDM_COMMON_XORSHIFT_H

#include <stdint.h>

static inline uint64_t xorshift64s(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

#endif
