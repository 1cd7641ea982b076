/* Counts the graphs an engine completes, for the unit tests that run the
 * engine's worker threads: graphs_done_hook is the engine's graph_done hook
 * with a struct graphs_done as its ctx; wait_graphs waits for a count. */
#ifndef TANDEM_TESTS_GRAPHS_DONE_H
#define TANDEM_TESTS_GRAPHS_DONE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "engine/engine.h"

struct graphs_done {
	_Atomic int graphs;
};

static void graphs_done_hook(void *ctx, struct engine_graph *g)
{
	struct graphs_done *dn = ctx;
	(void)g;
	atomic_fetch_add(&dn->graphs, 1);
}

/* Whether want graphs are done within about ms milliseconds. */
static bool wait_graphs(struct graphs_done *dn, int want, int ms)
{
	const struct timespec ms1 = { 0, 1000000L };
	for (int i = 0; i < ms && atomic_load(&dn->graphs) < want; i++)
		nanosleep(&ms1, NULL);
	return atomic_load(&dn->graphs) >= want;
}

#endif
