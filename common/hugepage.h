/* Large arrays read at random, once per task (a graph's tasks, per-task
 * cost tables of 100k+ tasks), asked to be backed by 2 MiB pages: with 4
 * KiB pages nearly every such read also misses the TLB. Only a hint: the
 * kernel uses them where transparent huge pages are on ("madvise" or
 * "always"); elsewhere nothing changes.
 *
 * The range is widened to whole pages: a block of malloc's own mapping
 * then stays one mapping (realloc can still move it by remapping), and a
 * neighbour on the heap only gets the same hint. */
#ifndef TDM_COMMON_HUGEPAGE_H
#define TDM_COMMON_HUGEPAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define HUGEPAGE_BYTES ((size_t)2 << 20)

static inline void hugepage_advise(void *p, size_t bytes)
{
	if (!p || bytes < HUGEPAGE_BYTES)
		return;
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
	uintptr_t b = ((uintptr_t)p + bytes + 4095) & ~(uintptr_t)4095;
	(void)madvise((void *)a, b - a, MADV_HUGEPAGE);
}

#endif
