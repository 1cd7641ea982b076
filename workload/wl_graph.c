/* A workload's edges as graphs (workload.h): grouped by task. */
#include <stdlib.h>
#include <string.h>

#include "common/csr.h"
#include "workload/workload.h"
#include "tandem.h"

void wl_group_edges(const struct workload *w, bool by_dst, uint32_t *off, uint32_t *perm)
{
	const uint32_t *key = NULL;
	if (w->nedges)
		key = by_dst ? &w->edges[0].dst : &w->edges[0].src;
	csr_group(off, perm, w->ntasks, key, sizeof(*w->edges), w->nedges);
}
