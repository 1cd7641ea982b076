/* A test graph built by hand: n tasks of one kernel (graph and index set,
 * calls left to the test) and the given (from, to) edges, in the CSR form
 * and with the dependency counts engine_submit takes. Used by the engine
 * and policy unit tests that drive the engine without intake. */
#ifndef TANDEM_TESTS_EDGE_GRAPH_H
#define TANDEM_TESTS_EDGE_GRAPH_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static struct engine_graph *edge_graph(struct engine_flow *flow, const struct kernel_def *k,
                                       uint32_t n, const uint32_t *edges, uint32_t nedges)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = flow;
	g->ntasks = n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(nedges + 1, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		g->tasks[i].graph = g;
		g->tasks[i].index = i;
		g->tasks[i].kernel = k;
	}
	for (uint32_t i = 0; i < nedges; i++) {
		g->succ_off[edges[2 * i] + 1]++;
		atomic_fetch_add(&g->tasks[edges[2 * i + 1]].ndeps, 1);
	}
	for (uint32_t i = 0; i < n; i++)
		g->succ_off[i + 1] += g->succ_off[i];
	uint32_t *cur = calloc(n + 1, sizeof(uint32_t));
	memcpy(cur, g->succ_off, (n + 1) * sizeof(uint32_t));
	for (uint32_t i = 0; i < nedges; i++)
		g->succ[cur[edges[2 * i]]++] = edges[2 * i + 1];
	free(cur);
	return g;
}

static void edge_graph_free(struct engine_graph *g)
{
	engine_graph_free_arrays(g);
	free(g);
}

#endif
