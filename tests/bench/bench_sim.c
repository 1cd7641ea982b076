/* Simulation benchmarks (docs/simulation.md):
 *
 *   sirocco_cholesky_ms   single-precision tiled Cholesky of 19200 x 19200 in
 *                         20 x 20 tiles of 960 (1540 tasks) on StarPU's
 *                         "sirocco" machine restricted to 4 CPU cores + 4
 *                         GPUs, with StarPU's own cost models and bus figures
 *                         (converted by starpu2machine from
 *                         ../shared/benchmarks/kernels/starpu_perfmodels; skipped
 *                         when absent), per policy, and the ratio to StarPU
 *                         1.3.11's dmdas on the same setup (497 ms);
 *   mirage_cholesky_ms    the same Cholesky on StarPU's "mirage" (12 cores, 3
 *                         Tesla M2070) as StarPU lays it out by default: one
 *                         core drives each GPU, so 9 CPU workers + 3 GPUs. No
 *                         published StarPU run to compare with: the ratio
 *                         reported is to the lower bound;
 *   sim_tasks_per_s       simulated tasks per second of wall time (the event
 *                         loop: engine, policy, residency, cost models), for a
 *                         22,100-task Cholesky (50 x 50 tiles) and a 200,000-
 *                         task random DAG, per policy;
 *   plan_ns_per_task      wall time inside the engine (policy, placement,
 *                         models) per task, for a 10,000-task random DAG on
 *                         the same machine: heft's and peft's whole-graph
 *                         plan against dmda's per-task decisions.
 *
 * Knobs (environment), for profiling one case under callgrind:
 * BENCH_POLICIES (comma-separated names: only these), BENCH_RANDOM_TASKS
 * (the random DAG's size, 200000), BENCH_SPEED_ONLY (non-empty: skip the
 * StarPU machines), BENCH_WORKLOAD (cholesky or random: only that one, and
 * no plan_ns_per_task).
 *
 * The fidelity figures (sim_error_pct) come from tests/bench/sim_fidelity.sh,
 * which records real runs through a daemon. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/log.h"
#include "sim/sim.h"
#include "policies/policy.h"
#include "tests/bench/bench_util.h"

#define PERFMODELS "../shared/benchmarks/kernels/starpu_perfmodels"
#define SIROCCO_STARPU_DMDAS_MS 497.0

static const char *build_dir(void)
{
	const char *b = getenv("BUILD");
	return b && *b ? b : "build";
}

static int run_policy(const struct machine *m, const struct workload *w, const char *policy,
                      struct sim_result *r)
{
	struct sim_opts o = { .policy = policy };
	char err[256];
	if (sim_run(m, w, &o, r, err, sizeof(err))) {
		fprintf(stderr, "bench_sim: %s: %s\n", policy, err);
		return -1;
	}
	return 0;
}

/* A StarPU sampling directory's machine, as starpu2machine converts it,
 * running the 20 x 20 Cholesky under every policy. ref_ms: StarPU's own
 * makespan on that setup, or 0 when none is published. */
static int starpu_machine(const char *host, int ncpus, int ncuda, double ref_ms)
{
	struct stat st;
	char cmd[1024], path[512], err[512], bench[64];
	if (stat(PERFMODELS, &st) || !S_ISDIR(st.st_mode)) {
		printf("bench_sim: %s absent: %s cross-check skipped\n", PERFMODELS, host);
		return 0;
	}
	snprintf(path, sizeof(path), "%s/bench/%s-%dcpu-%dgpu.toml", build_dir(), host, ncpus,
	         ncuda);
	snprintf(cmd, sizeof(cmd),
	         "%s/bin/starpu2machine --dir %s --host %s --ncpus %d --ncuda %d -o %s",
	         build_dir(), PERFMODELS, host, ncpus, ncuda, path);
	int rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc)) {
		fprintf(stderr, "bench_sim: %s failed\n", cmd);
		return -1;
	}
	struct machine m;
	struct workload w;
	machine_init(&m);
	wl_init(&w);
	if (machine_load(path, &m, err, sizeof(err)) ||
	    wl_gen_tiled(WL_TILED_CHOLESKY, 20, 960, &w, err, sizeof(err))) {
		fprintf(stderr, "bench_sim: %s\n", err);
		machine_free(&m);
		return -1;
	}
	printf("%s (%d CPU + %d GPU), Cholesky 19200 in 20x20 tiles of 960: %u tasks\n", host,
	       ncpus, ncuda, w.ntasks);
	int failed = 0;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct sim_result r;
		char keys[64];
		if (run_policy(&m, &w, (*p)->name, &r)) {
			failed = -1;
			continue;
		}
		snprintf(keys, sizeof(keys), "policy=%s", (*p)->name);
		snprintf(bench, sizeof(bench), "%s_cholesky_ms", host);
		bench_report(bench, r.makespan_ns / 1e6, "ms", keys);
		if (ref_ms > 0) {
			snprintf(bench, sizeof(bench), "%s_cholesky_over_starpu_dmdas", host);
			bench_report(bench, r.makespan_ns / 1e6 / ref_ms, "ratio", keys);
		}
		snprintf(bench, sizeof(bench), "%s_cholesky_over_lb", host);
		bench_report(bench, r.makespan_ns / r.lower_bound_ns, "ratio", keys);
		snprintf(bench, sizeof(bench), "%s_cholesky_gflops", host);
		bench_report(bench, 19200.0 * 19200.0 * 19200.0 / 3 / r.makespan_ns, "GF/s", keys);
		sim_result_free(&r);
	}
	wl_free(&w);
	machine_free(&m);
	return failed;
}

static bool wanted(const char *name)
{
	const char *list = getenv("BENCH_POLICIES");
	size_t n = strlen(name);
	if (!list || !*list)
		return true;
	for (const char *p = list; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len + (end != NULL);
	}
	return false;
}

static uint32_t random_tasks(void)
{
	const char *v = getenv("BENCH_RANDOM_TASKS");
	long n = v && *v ? strtol(v, NULL, 10) : 0;
	return n > 0 && n <= 10000000 ? (uint32_t)n : 200000;
}

static int speed(void)
{
	struct machine m;
	struct workload chol, rnd;
	char err[512], path[256];
	machine_init(&m);
	wl_init(&chol);
	wl_init(&rnd);
	snprintf(path, sizeof(path), "machines/h100.toml");
	if (machine_load(path, &m, err, sizeof(err)) ||
	    wl_gen_tiled(WL_TILED_CHOLESKY, 50, 960, &chol, err, sizeof(err))) {
		fprintf(stderr, "bench_sim: %s\n", err);
		machine_free(&m);
		return -1;
	}
	struct wl_random_params p = { .n = random_tasks(),
		                      .ccr = 0.5,
		                      .alpha = 1,
		                      .out_degree = 3,
		                      .beta = 0.5,
		                      .ndev = m.ndevices,
		                      .w_dag = 100,
		                      .seed = 1 };
	if (wl_gen_random(&p, &rnd, err, sizeof(err))) {
		fprintf(stderr, "bench_sim: %s\n", err);
		return -1;
	}
	int failed = 0;
	const char *only = getenv("BENCH_WORKLOAD");
	char rname[32];
	snprintf(rname, sizeof(rname), "random%uk", p.n / 1000);
	for (const struct policy_ops *const *pol = policy_list(); *pol; pol++) {
		if (!wanted((*pol)->name))
			continue;
		const struct workload *ws[2] = { &chol, &rnd };
		const char *wn[2] = { "cholesky50", rname };
		for (int k = 0; k < 2; k++) {
			struct sim_result r;
			if (only && *only && strncmp(wn[k], only, strlen(only)))
				continue;
			char keys[96];
			if (run_policy(&m, ws[k], (*pol)->name, &r)) {
				failed = -1;
				continue;
			}
			snprintf(keys, sizeof(keys), "policy=%s workload=%s machine=%s",
			         (*pol)->name, wn[k], m.name);
			bench_report("sim_tasks_per_s", (double)r.tasks / (r.loop_ns / 1e9),
			             "tasks/s", keys);
			bench_report("sim_run_ms", r.wall_ns / 1e6, "ms", keys);
			sim_result_free(&r);
		}
	}
	/* Deciding on a 10,000-task graph: heft and peft plan it whole at
	 * submission, dmda decides per ready task; the engine's own stepping
	 * is in every figure alike. */
	wl_free(&rnd);
	wl_init(&rnd);
	p.n = 10000;
	bool plan_figures = !(only && *only);
	if (plan_figures && wl_gen_random(&p, &rnd, err, sizeof(err))) {
		fprintf(stderr, "bench_sim: %s\n", err);
		failed = -1;
	}
	for (const struct policy_ops *const *pol = policy_list(); plan_figures && *pol && !failed;
	     pol++) {
		struct sim_result r;
		char keys[96];
		if (!wanted((*pol)->name))
			continue;
		if (run_policy(&m, &rnd, (*pol)->name, &r)) {
			failed = -1;
			continue;
		}
		snprintf(keys, sizeof(keys), "policy=%s tasks=%u machine=%s", (*pol)->name,
		         rnd.ntasks, m.name);
		bench_report("plan_ns_per_task", r.engine_ns / r.tasks, "ns", keys);
		sim_result_free(&r);
	}
	wl_free(&chol);
	wl_free(&rnd);
	machine_free(&m);
	return failed;
}

int main(void)
{
	log_set_level(LOG_ERROR);
	int rc = 0;
	const char *speed_only = getenv("BENCH_SPEED_ONLY");
	if (!speed_only || !*speed_only) {
		rc |= starpu_machine("sirocco", 4, 4, SIROCCO_STARPU_DMDAS_MS);
		rc |= starpu_machine("mirage", 9, 3, 0);
	}
	rc |= speed();
	return rc ? 1 : 0;
}
