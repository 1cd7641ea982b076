/* Compressed sparse rows (CSR) from lists: the one counting sort behind
 * every successor or predecessor list of the tree (graph builds, workload
 * DAGs, plans, traces, the client's grouping of edges by task). Stable
 * (the items of a row keep their order), O(rows + items), and it allocates
 * nothing, so a caller that has its arrays cannot fail here.
 *
 * Header-only, on libc alone: libtandem (client/), which may include
 * nothing of the daemon, uses it too (tools/check_rooms.sh lets client/
 * include such header-only files of common/).
 *
 * Rows are given by a uint32_t key per item: the one at byte i * stride
 * from key, so a field of an array of structs (stride sizeof the struct)
 * or one column of (from, to) pairs (stride 2 * sizeof(uint32_t)). Every
 * key must be below nrows. off has nrows + 1 entries: row r is
 * [off[r], off[r + 1]). */
#ifndef TDM_COMMON_CSR_H
#define TDM_COMMON_CSR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t csr_key(const uint32_t *key, size_t stride, uint32_t i)
{
	return *(const uint32_t *)(const void *)((const char *)key + (size_t)i * stride);
}

/* Sizes the rows of m items: off[r] is where row r starts. Then each item
 * takes its slot with csr_slot, in item order, and csr_close sets off back
 * to the rows' starts. For a payload csr_group cannot place. */
static inline void csr_open(uint32_t *off, uint32_t nrows, const uint32_t *key, size_t stride,
                            uint32_t m)
{
	memset(off, 0, ((size_t)nrows + 1) * sizeof(*off));
	for (uint32_t i = 0; i < m; i++)
		off[csr_key(key, stride, i) + 1]++;
	for (uint32_t r = 0; r < nrows; r++)
		off[r + 1] += off[r];
}

/* The next slot of row r, between csr_open and csr_close. */
static inline uint32_t csr_slot(uint32_t *off, uint32_t r)
{
	return off[r]++;
}

/* Once every item has its slot, each off[r] stands at the start of row
 * r + 1: moves them back by one row. */
static inline void csr_close(uint32_t *off, uint32_t nrows)
{
	memmove(off + 1, off, (size_t)nrows * sizeof(*off));
	off[0] = 0;
}

/* Groups m items by row: perm[k] is the index of the item in slot k (perm
 * has m entries). A caller that wants a field of the item in slot k may
 * overwrite perm in place: x[k] = items[perm[k]].field, k ascending. */
static inline void csr_group(uint32_t *off, uint32_t *perm, uint32_t nrows, const uint32_t *key,
                             size_t stride, uint32_t m)
{
	csr_open(off, nrows, key, stride, m);
	for (uint32_t i = 0; i < m; i++)
		perm[csr_slot(off, csr_key(key, stride, i))] = i;
	csr_close(off, nrows);
}

/* The transpose of the CSR (off, adj) of n rows whose entries are below
 * n (successors to predecessors, say): t_off (n + 1 entries) and t_adj
 * (off[n] - off[0]) list, for each c, the rows r that hold c, ascending
 * (a row that holds c twice is listed twice). */
static inline void csr_transpose(uint32_t n, const uint32_t *off, const uint32_t *adj,
                                 uint32_t *t_off, uint32_t *t_adj)
{
	csr_open(t_off, n, adj + off[0], sizeof(*adj), off[n] - off[0]);
	for (uint32_t r = 0; r < n; r++)
		for (uint32_t k = off[r]; k < off[r + 1]; k++)
			t_adj[csr_slot(t_off, adj[k])] = r;
	csr_close(t_off, n);
}

#endif
