/* Plans kept when executed (issue 14, item 1): heft and peft plan a whole
 * graph at submission; the engine, executing the plan in the simulator with
 * exact costs, must end it no later than the plan says (1% slack). Layered
 * random DAGs and Topcuoglu et al.'s random DAGs, 50 to 1000 tasks, 2 to 16
 * devices, with and without communication, fixed seeds
 * (tests/harness/plan_exec_harness.h). Also: zero-cost tasks whose order
 * on a device must follow their edges, not their indices; and a tiled
 * Cholesky whose costs come through the cost models. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "common/log.h"
#include "tests/harness/plan_exec_harness.h"

static const struct {
	const char *name;
	enum plan_method method;
} policies[] = { { "heft", PLAN_HEFT }, { "peft", PLAN_PEFT } };

/* Executed over planned for every policy; fails the test above 1.01. */
static void check_case(const struct pe_case *c)
{
	char err[256], name[200];
	struct machine m;
	struct workload w;
	struct pe_dag x;

	pe_name(c, name, sizeof(name));
	if (pe_workload(c, &w, err, sizeof(err)))
		fail_msg("%s: %s", name, err);
	pe_machine(&m, c->ndev, c->comm);
	assert_int_equal(pe_dag(&m, &w, &x), 0);
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		double plan = pe_plan(&x, policies[k].method);
		double exec = pe_exec(&m, &w, policies[k].name, err, sizeof(err));
		if (plan <= 0)
			fail_msg("%s, %s: planning failed", name, policies[k].name);
		if (exec <= 0)
			fail_msg("%s, %s: %s", name, policies[k].name, err);
		if (exec > 1.01 * plan)
			fail_msg("%s, %s: executed %.6g ms, planned %.6g ms (+%.1f%%)", name,
			         policies[k].name, exec / 1e6, plan / 1e6, 100 * (exec / plan - 1));
	}
	wl_dag_free(&x.d);
	wl_free(&w);
	machine_free(&m);
}

static void test_layered(void **state)
{
	(void)state;
	/* n, p, costs, ccr, m, comm */
	static const struct {
		uint32_t n;
		double p;
		enum wl_layered_costs costs;
		double ccr;
		unsigned ndev;
		bool comm;
	} cfg[] = {
		{ 50, 0.3, WL_LAYERED_UNIFORM, 0, 2, false },
		{ 100, 0.1, WL_LAYERED_BIMODAL, 0, 8, false },
		{ 100, 0.3, WL_LAYERED_UNIFORM, 0, 8, false },
		{ 300, 0.05, WL_LAYERED_UNIFORM, 0, 8, false },
		{ 300, 0.2, WL_LAYERED_BIMODAL, 0, 8, false },
		{ 300, 0.1, WL_LAYERED_UNIFORM, 1, 4, true },
		{ 300, 0.05, WL_LAYERED_BIMODAL, 0.2, 16, true },
		{ 1000, 0.02, WL_LAYERED_UNIFORM, 0, 16, false },
		{ 1000, 0.01, WL_LAYERED_BIMODAL, 0.5, 6, true },
	};
	for (size_t i = 0; i < sizeof(cfg) / sizeof(cfg[0]); i++)
		for (uint64_t seed = 1; seed <= 3; seed++) {
			struct pe_case c = { .gen = PE_LAYERED,
				             .n = cfg[i].n,
				             .p = cfg[i].p,
				             .costs = cfg[i].costs,
				             .ccr = cfg[i].ccr,
				             .ndev = cfg[i].ndev,
				             .comm = cfg[i].comm,
				             .seed = seed };
			check_case(&c);
		}
}

static void test_heft_paper(void **state)
{
	(void)state;
	/* v, alpha, out-degree, ccr, beta, m, comm */
	static const struct {
		uint32_t n;
		double alpha;
		uint32_t out;
		double ccr, beta;
		unsigned ndev;
		bool comm;
	} cfg[] = {
		{ 50, 1, 3, 0, 0.5, 2, false },  { 100, 0.5, 2, 0, 1, 8, false },
		{ 100, 2, 5, 1, 1.5, 8, true },  { 300, 1, 3, 0.1, 1, 3, true },
		{ 300, 1, 4, 5, 0.5, 16, true }, { 500, 2, 3, 0, 1.5, 16, false },
		{ 1000, 1, 3, 0, 1, 8, false },  { 1000, 0.5, 5, 1, 0.5, 12, true },
	};
	for (size_t i = 0; i < sizeof(cfg) / sizeof(cfg[0]); i++)
		for (uint64_t seed = 1; seed <= 3; seed++) {
			struct pe_case c = { .gen = PE_RANDOM,
				             .n = cfg[i].n,
				             .alpha = cfg[i].alpha,
				             .out_degree = cfg[i].out,
				             .ccr = cfg[i].ccr,
				             .beta = cfg[i].beta,
				             .ndev = cfg[i].ndev,
				             .comm = cfg[i].comm,
				             .seed = seed };
			check_case(&c);
		}
}

/* Zero-cost tasks whose edges run against their indices (5 -> 4 -> ... ->
 * 0 through a diamond) between two costly ones, all planned on one device
 * around one instant: the device's planned order must follow the edges
 * (each task is predicted to take at least 1 ns, so planned starts do), or
 * the first task in it would wait for the last and the simulation stall. */
static void test_zero_cost_order(void **state)
{
	(void)state;
	static const uint32_t edges[][2] = { { 6, 5 }, { 5, 4 }, { 5, 3 }, { 4, 2 },
		                             { 3, 2 }, { 2, 1 }, { 1, 0 }, { 0, 7 } };
	static const double cost[] = { 0, 0, 0, 0, 0, 0, 3, 2 };
	struct workload w;
	struct machine m;
	char err[256];

	wl_init(&w);
	w.ntasks = 8;
	w.nedges = sizeof(edges) / sizeof(edges[0]);
	w.tasks = calloc(w.ntasks, sizeof(*w.tasks));
	w.edges = calloc(w.nedges, sizeof(*w.edges));
	assert_non_null(w.tasks);
	assert_non_null(w.edges);
	for (uint32_t v = 0; v < w.ntasks; v++) {
		snprintf(w.tasks[v].name, sizeof(w.tasks[v].name), "t%u", v);
		w.tasks[v].cost = cost[v];
	}
	for (uint32_t e = 0; e < w.nedges; e++)
		w.edges[e] = (struct wl_edge){ edges[e][0], edges[e][1], 0 };
	wl_sort_edges(&w);
	w.units = WL_UNITS_ABSTRACT;
	snprintf(w.name, sizeof(w.name), "zero-cost chain");
	for (unsigned ndev = 2; ndev <= 4; ndev += 2) {
		pe_machine(&m, ndev, false);
		for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
			double exec = pe_exec(&m, &w, policies[k].name, err, sizeof(err));
			if (exec <= 0)
				fail_msg("%u devices, %s: %s", ndev, policies[k].name, err);
			/* The two costly tasks are a chain: 5 units. */
			assert_true(exec <= 5 * PE_UNIT_NS * 1.0000001);
		}
		machine_free(&m);
	}
	wl_free(&w);
}

/* A tiled Cholesky on cores alone, its four kernels of one size costing
 * what the machine's tables say (no transfers: one memory node): the
 * policies predict every task's cost row through the cost models, by
 * kernel and size (dispatch's fill_costs), and their plan must still be
 * the plan of the true costs. The planner is given those costs directly;
 * executing heft or peft must end within 1% of its makespan. */
static void test_tiled_kernels(void **state)
{
	(void)state;
	static const char *const toml =
	        "name = \"cores4\"\n"
	        "[device.cpu]\nkind = \"cpu\"\nmodel = \"core\"\ncount = 4\n"
	        "gflops = 10\nmem_gbps = 10\nlaunch_ns = 0\n"
	        "[cost.core.spotrf]\nnb = [ 64 ]\nns = [ 1000000 ]\n"
	        "[cost.core.strsm]\nnb = [ 64 ]\nns = [ 4000000 ]\n"
	        "[cost.core.ssyrk]\nnb = [ 64 ]\nns = [ 2000000 ]\n"
	        "[cost.core.sgemm_nt]\nnb = [ 64 ]\nns = [ 9000000 ]\n";
	struct machine m;
	struct workload w;
	struct pe_dag x;
	char err[256];

	machine_init(&m);
	wl_init(&w);
	if (machine_parse(toml, strlen(toml), "cores4", &m, err, sizeof(err)))
		fail_msg("machine: %s", err);
	if (wl_gen_tiled(WL_TILED_CHOLESKY, 10, 64, &w, err, sizeof(err)))
		fail_msg("workload: %s", err);
	assert_int_equal(pe_dag(&m, &w, &x), 0);
	for (uint32_t v = 0; v < w.ntasks; v++) {
		double ns = 0;
		switch (w.tasks[v].kernel) {
		case KERNEL_SPOTRF: ns = 1e6; break;
		case KERNEL_STRSM: ns = 4e6; break;
		case KERNEL_SSYRK: ns = 2e6; break;
		case KERNEL_SGEMM_NT: ns = 9e6; break;
		default: fail_msg("task %u: kernel %u", v, w.tasks[v].kernel);
		}
		for (unsigned d = 0; d < m.ndevices; d++)
			x.d.cost[(size_t)v * m.ndevices + d] = ns;
	}
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		double plan = pe_plan(&x, policies[k].method);
		struct sim_opts o = { .policy = policies[k].name };
		struct sim_result r;
		if (plan <= 0)
			fail_msg("%s: planning failed", policies[k].name);
		if (sim_run(&m, &w, &o, &r, err, sizeof(err)))
			fail_msg("%s: %s", policies[k].name, err);
		double exec = r.makespan_ns;
		sim_result_free(&r);
		if (exec > 1.01 * plan)
			fail_msg("%s: executed %.6g ms, planned %.6g ms (+%.1f%%)",
			         policies[k].name, exec / 1e6, plan / 1e6, 100 * (exec / plan - 1));
	}
	wl_dag_free(&x.d);
	wl_free(&w);
	machine_free(&m);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layered),
		cmocka_unit_test(test_heft_paper),
		cmocka_unit_test(test_zero_cost_order),
		cmocka_unit_test(test_tiled_kernels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
