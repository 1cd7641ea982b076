/* Plans against their execution (issue 14, item 1): heft and peft plan a
 * whole graph at submission; how close does the engine, executing that
 * plan in the simulator with exact costs, come to the plan's own makespan?
 * And how does it compare with a plain critical-path list scheduler
 * (highest upward rank first, on the device free first)?
 *
 * Sets (tests/harness/plan_exec_harness.h for the machines):
 *   layered-uniform, layered-bimodal  layered random DAGs, n in {100, 300,
 *       1000}, edge probability p in {0.05, 0.1, 0.3} (0.05 at n = 1000),
 *       costs uniform in [1, 10] or bimodal, m in {2, 8, 16} devices;
 *   heft-paper  Topcuoglu et al.'s random DAGs, n in {100, 300, 1000},
 *       beta in {0.5, 1}, m in {2, 8, 16};
 * each without communication (cores and an accelerator behind a free
 * link) and with (every device on its own memory node; ccr in {0.1, 1}),
 * two seeds each; and
 *   issue14  the 30 graphs of issue 14's measurement: layered, 8 devices
 *       without communication, n in {100, 300}, p in {0.05, 0.1, 0.15,
 *       0.2, 0.3}, seeds 1-3 (costs uniform for odd seeds, bimodal for
 *       even ones).
 * Per policy and set:
 *
 *   BENCH plan_exec_over_plan <worst> ratio policy=P set=S graphs=N
 *   BENCH plan_exec_over_plan_mean <mean> ratio policy=P set=S graphs=N
 *   BENCH list_cp_over_plan_mean <mean> ratio policy=P set=S graphs=N
 *   BENCH plan_exec_worse_than_list_cp <count> graphs policy=P set=S graphs=N
 *   BENCH plan_exec_over_list_cp_mean <mean> ratio policy=P set=S graphs=N
 *
 * where plan is the policy's plan_schedule makespan, exec the simulated one
 * and list_cp the list scheduler's. Simulated makespans are deterministic;
 * only the run time varies. BENCH_PLAN_EXEC_QUICK=1: n <= 300 only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "tests/harness/plan_exec_harness.h"

struct policy {
	const char *name;
	enum plan_method method;
};

static const struct policy policies[] = { { "heft", PLAN_HEFT }, { "peft", PLAN_PEFT } };

struct acc {
	double worst, sum, list_sum, over_list_sum;
	unsigned graphs, worse_than_list;
};

static void run_case(const struct pe_case *c, struct acc *acc)
{
	char err[256], name[200];
	struct machine m;
	struct workload w;
	struct pe_dag x;

	pe_name(c, name, sizeof(name));
	if (pe_workload(c, &w, err, sizeof(err))) {
		fprintf(stderr, "bench_plan_exec: %s: %s\n", name, err);
		exit(1);
	}
	pe_machine(&m, c->ndev, c->comm);
	if (pe_dag(&m, &w, &x)) {
		fprintf(stderr, "bench_plan_exec: %s: cannot build the DAG\n", name);
		exit(1);
	}
	double list = pe_list_cp(&x);
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		double plan = pe_plan(&x, policies[k].method);
		double exec = pe_exec(&m, &w, policies[k].name, err, sizeof(err));
		if (plan <= 0 || exec <= 0 || list <= 0) {
			fprintf(stderr, "bench_plan_exec: %s, %s: %s\n", name, policies[k].name,
			        exec <= 0 ? err : "planning failed");
			exit(1);
		}
		double r = exec / plan;
		acc[k].worst = acc[k].graphs ? fmax(acc[k].worst, r) : r;
		acc[k].sum += r;
		acc[k].list_sum += list / plan;
		acc[k].over_list_sum += exec / list;
		acc[k].worse_than_list += exec > list;
		acc[k].graphs++;
		if (getenv("BENCH_PLAN_EXEC_VERBOSE"))
			printf("# %s %s: plan %.4g exec %.4g (%.4f) list_cp %.4g\n", name,
			       policies[k].name, plan / 1e6, exec / 1e6, r, list / 1e6);
	}
	wl_dag_free(&x.d);
	wl_free(&w);
	machine_free(&m);
}

static void report(const char *set, const struct acc *acc)
{
	for (size_t k = 0; k < sizeof(policies) / sizeof(policies[0]); k++) {
		const struct acc *a = &acc[k];
		const char *p = policies[k].name;
		printf("BENCH plan_exec_over_plan %.4f ratio policy=%s set=%s graphs=%u\n",
		       a->worst, p, set, a->graphs);
		printf("BENCH plan_exec_over_plan_mean %.4f ratio policy=%s set=%s graphs=%u\n",
		       a->sum / a->graphs, p, set, a->graphs);
		printf("BENCH list_cp_over_plan_mean %.4f ratio policy=%s set=%s graphs=%u\n",
		       a->list_sum / a->graphs, p, set, a->graphs);
		printf("BENCH plan_exec_worse_than_list_cp %u graphs policy=%s set=%s graphs=%u\n",
		       a->worse_than_list, p, set, a->graphs);
		printf("BENCH plan_exec_over_list_cp_mean %.4f ratio policy=%s set=%s graphs=%u\n",
		       a->over_list_sum / a->graphs, p, set, a->graphs);
	}
	fflush(stdout);
}

int main(void)
{
	static const uint32_t sizes[] = { 100, 300, 1000 };
	static const double probs[] = { 0.05, 0.1, 0.3 };
	static const unsigned devs[] = { 2, 8, 16 };
	static const double betas[] = { 0.5, 1 };
	static const double ccrs[] = { 0.1, 1 };
	bool quick = getenv("BENCH_PLAN_EXEC_QUICK") && atoi(getenv("BENCH_PLAN_EXEC_QUICK"));
	unsigned nsizes = quick ? 2 : 3;

	log_set_level(LOG_ERROR);
	{
		static const double issue_p[] = { 0.05, 0.1, 0.15, 0.2, 0.3 };
		struct acc acc[2] = { 0 };
		for (unsigned i = 0; i < 2; i++)
			for (unsigned j = 0; j < 5; j++)
				for (uint64_t seed = 1; seed <= 3; seed++) {
					struct pe_case c = { .gen = PE_LAYERED,
						             .n = i ? 300 : 100,
						             .p = issue_p[j],
						             .costs = seed % 2 ? WL_LAYERED_UNIFORM
						                               : WL_LAYERED_BIMODAL,
						             .ndev = 8,
						             .seed = seed };
					run_case(&c, acc);
				}
		report("issue14", acc);
	}
	for (int comm = 0; comm < 2; comm++) {
		for (int costs = 0; costs < 2; costs++) {
			struct acc acc[2] = { 0 };
			char set[64];
			for (unsigned i = 0; i < nsizes; i++)
				for (unsigned j = 0; j < 3; j++)
					for (unsigned k = 0; k < 3; k++)
						for (uint64_t seed = 1; seed <= 2; seed++) {
							if (sizes[i] >= 1000 && probs[j] > 0.05)
								continue;
							struct pe_case c = {
								.gen = PE_LAYERED,
								.n = sizes[i],
								.p = probs[j],
								.costs = costs,
								.ccr = comm ? ccrs[seed - 1] : 0,
								.ndev = devs[k],
								.comm = comm,
								.seed = seed,
							};
							run_case(&c, acc);
						}
			snprintf(set, sizeof(set), "layered-%s%s", costs ? "bimodal" : "uniform",
			         comm ? "-comm" : "");
			report(set, acc);
		}
		struct acc acc[2] = { 0 };
		for (unsigned i = 0; i < nsizes; i++)
			for (unsigned j = 0; j < 2; j++)
				for (unsigned k = 0; k < 3; k++)
					for (uint64_t seed = 1; seed <= 2; seed++) {
						struct pe_case c = {
							.gen = PE_RANDOM,
							.n = sizes[i],
							.beta = betas[j],
							.ccr = comm ? ccrs[seed - 1] : 0,
							.ndev = devs[k],
							.comm = comm,
							.seed = seed,
						};
						run_case(&c, acc);
					}
		report(comm ? "heft-paper-comm" : "heft-paper", acc);
	}
	return 0;
}
