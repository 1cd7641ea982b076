/* How a growable buffer's backing grows (host chunks, device chunks): each
 * step backs what is needed and at least 1/GROW_RATIO of what is backed
 * already, rounded up to the granule, so that a buffer grown token by
 * token takes O(log n) steps (mappings, handles) while at most about
 * 1/GROW_RATIO of its backing (or one granule) is unused. */
#ifndef TDM_COMMON_GROW_H
#define TDM_COMMON_GROW_H

#include <stdint.h>

#define GROW_RATIO 32

/* Bytes to add to `backed` so that `need` is covered: at least min_step,
 * a multiple of granule (a power of two or not), at most limit - backed
 * (limit: the reserved capacity, granule-rounded). 0 when need <= backed. */
static inline uint64_t grow_step(uint64_t backed, uint64_t need, uint64_t granule,
                                 uint64_t min_step, uint64_t limit)
{
	if (need <= backed)
		return 0;
	uint64_t step = need - backed;
	if (step < backed / GROW_RATIO)
		step = backed / GROW_RATIO;
	if (step < min_step)
		step = min_step;
	step = (step + granule - 1) / granule * granule;
	if (step > limit - backed)
		step = limit - backed;
	return step;
}

#endif
