/* An engine of two host-kind devices on a test's backend, workers not
 * started: the test steps them (engine_run_one), so every order it plays
 * is deterministic. Counts the graphs it completes. Used by the unit tests
 * of routing and accumulation. */
#ifndef TANDEM_TESTS_HOST_ENGINE_H
#define TANDEM_TESTS_HOST_ENGINE_H

#include <stdatomic.h>

#include "engine/engine.h"
#include "policies/policy.h"

#define HOST_ENGINE_DEVICES 2

static _Atomic int host_engine_graphs_done;

static void host_engine_graph_done(void *ctx, struct engine_graph *g)
{
	(void)ctx;
	(void)g;
	atomic_fetch_add(&host_engine_graphs_done, 1);
}

static struct engine *host_engine(const struct backend_ops *ops, const struct policy_ops *p)
{
	struct backend_device devs[HOST_ENGINE_DEVICES] = { 0 };
	struct engine *e;
	for (size_t i = 0; i < HOST_ENGINE_DEVICES; i++) {
		devs[i].ops = ops;
		devs[i].kind = TDM_DEV_CPU;
	}
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = p,
		                    .devices = devs,
		                    .ndevices = HOST_ENGINE_DEVICES,
		                    .hooks = { .graph_done = host_engine_graph_done },
		                    .start_workers = false };
	assert_int_equal(engine_create(&ep, &e), 0);
	return e;
}

#endif
