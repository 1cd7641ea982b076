/* The StarPU side of the foundation benchmarks: the same three workloads as
 * bench_tandem, run in-process on StarPU 1.3 with the "lws" scheduler, one
 * CPU worker per core, no CUDA/OpenCL.
 *
 *   starpu_batch_noop_*      batches of BATCH empty tasks, submit all, then
 *                            starpu_task_wait_for_all, repeated for RUN_S
 *   starpu_roundtrip_*       one synchronous empty task, submit -> done
 *   starpu_chain_us_per_task CHAIN tasks all taking one handle in STARPU_RW,
 *                            so implicit dependencies chain them
 *   starpu_idle_cpu_percent  process CPU time over IDLE_S with StarPU idle
 */
#include <starpu.h>

#include "tests/bench/bench_util.h"

#define BATCH 1000
#define WARM_S 0.3
#define RUN_S 1.5
#define RT_WARMUP 500
#define RT_ITERS 5000
#define CHAIN 100000
#define CHAIN_RUNS 3
#define IDLE_S 5.0

struct codelets {
	struct starpu_codelet noop; /* no buffers */
	struct starpu_codelet rw; /* one buffer, STARPU_RW */
};

static void noop_cpu(void *buffers[], void *arg)
{
	(void)buffers;
	(void)arg;
}

static void codelets_init(struct codelets *cl)
{
	starpu_codelet_init(&cl->noop);
	cl->noop.cpu_funcs[0] = noop_cpu;
	cl->noop.nbuffers = 0;
	cl->noop.name = "noop";
	starpu_codelet_init(&cl->rw);
	cl->rw.cpu_funcs[0] = noop_cpu;
	cl->rw.nbuffers = 1;
	cl->rw.modes[0] = STARPU_RW;
	cl->rw.name = "noop_rw";
}

/* Submits one task of codelet cl (with handle h when not NULL). */
static int submit(struct starpu_codelet *cl, starpu_data_handle_t h, int synchronous)
{
	struct starpu_task *t = starpu_task_create();
	int rc;

	if (!t)
		return -ENOMEM;
	t->cl = cl;
	if (h)
		t->handles[0] = h;
	t->synchronous = synchronous;
	rc = starpu_task_submit(t);
	if (rc != 0) {
		fprintf(stderr, "bench_starpu: starpu_task_submit: %d\n", rc);
		starpu_task_destroy(t);
	}
	return rc;
}

static int run_batch(struct starpu_codelet *cl)
{
	for (int i = 0; i < BATCH; i++) {
		if (submit(cl, NULL, 0) != 0)
			return -1;
	}
	return starpu_task_wait_for_all();
}

/* Runs batches for seconds; returns tasks/s, or a negative value. */
static double batch_rate(struct starpu_codelet *cl, double seconds)
{
	uint64_t t0 = bench_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t1;
	uint64_t tasks = 0;

	do {
		if (run_batch(cl) != 0)
			return -1.0;
		tasks += BATCH;
		t1 = bench_now_ns();
	} while (t1 < end);
	return (double)tasks / ((double)(t1 - t0) / 1e9);
}

static int bench_batch(struct starpu_codelet *cl, const char *keys)
{
	double rate;

	if (batch_rate(cl, WARM_S) < 0)
		return -1;
	rate = batch_rate(cl, RUN_S);
	if (rate <= 0)
		return -1;
	bench_report("starpu_batch_noop_us_per_task", 1e6 / rate, "us", keys);
	bench_report("starpu_batch_noop_tasks_per_s", rate, "tasks/s", keys);
	return 0;
}

static int bench_roundtrip(struct starpu_codelet *cl, const char *keys)
{
	static uint64_t samples[RT_ITERS];

	for (int i = 0; i < RT_WARMUP + RT_ITERS; i++) {
		uint64_t t0 = bench_now_ns();

		if (submit(cl, NULL, 1) != 0)
			return -1;
		if (i >= RT_WARMUP)
			samples[i - RT_WARMUP] = bench_now_ns() - t0;
	}
	bench_report_p50_p99("starpu_roundtrip", samples, RT_ITERS, keys);
	return 0;
}

/* One chain: CHAIN tasks on one RW handle, submit to completion, in us/task. */
static double chain_once(struct starpu_codelet *cl, starpu_data_handle_t h)
{
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < CHAIN; i++) {
		if (submit(cl, h, 0) != 0)
			return -1.0;
	}
	if (starpu_task_wait_for_all() != 0)
		return -1.0;
	return (double)(bench_now_ns() - t0) / 1e3 / CHAIN;
}

static int bench_chain(struct starpu_codelet *cl, const char *keys)
{
	double runs[CHAIN_RUNS];
	starpu_data_handle_t h;
	uint64_t var = 0;
	char k[128];
	int rc = 0;

	starpu_variable_data_register(&h, STARPU_MAIN_RAM, (uintptr_t)&var, sizeof(var));
	for (int i = 0; i < CHAIN_RUNS && rc == 0; i++) {
		runs[i] = chain_once(cl, h);
		rc = runs[i] < 0 ? -1 : 0;
	}
	starpu_data_unregister(h);
	if (rc != 0)
		return rc;
	snprintf(k, sizeof(k), "%s tasks=%d runs=%d", keys, CHAIN, CHAIN_RUNS);
	bench_report("starpu_chain_us_per_task", bench_median(runs, CHAIN_RUNS), "us", k);
	return 0;
}

static int bench_idle(const char *keys)
{
	double pct = bench_idle_cpu_percent(getpid(), IDLE_S);

	if (pct < 0)
		return -1;
	bench_report("starpu_idle_cpu_percent", pct, "percent", keys);
	return 0;
}

static int starpu_start(int ncpus)
{
	struct starpu_conf conf;
	int rc;

	/* StarPU's banner and warnings are not figures. */
	setenv("STARPU_SILENT", "1", 0);
	if (starpu_conf_init(&conf) != 0)
		return -1;
	conf.sched_policy_name = "lws";
	conf.precedence_over_environment_variables = 1;
	conf.ncpus = ncpus;
	conf.ncuda = 0;
	conf.nopencl = 0;
	conf.nmic = 0;
	conf.nmpi_ms = 0;
	rc = starpu_init(&conf);
	if (rc != 0)
		fprintf(stderr, "bench_starpu: starpu_init: %d\n", rc);
	return rc;
}

int main(void)
{
	struct codelets cl;
	int ncpus = bench_ncores(), failed = 0;
	char keys[64];

	if (starpu_start(ncpus) != 0)
		return 1;
	codelets_init(&cl);
	snprintf(keys, sizeof(keys), "sched=lws workers=%u", starpu_cpu_worker_get_count());
	if (bench_batch(&cl.noop, keys) != 0) {
		fprintf(stderr, "bench_starpu: batch failed\n");
		failed = 1;
	}
	if (bench_roundtrip(&cl.noop, keys) != 0) {
		fprintf(stderr, "bench_starpu: roundtrip failed\n");
		failed = 1;
	}
	if (bench_chain(&cl.rw, keys) != 0) {
		fprintf(stderr, "bench_starpu: chain failed\n");
		failed = 1;
	}
	starpu_task_wait_for_all();
	if (bench_idle(keys) != 0) {
		fprintf(stderr, "bench_starpu: idle failed\n");
		failed = 1;
	}
	starpu_shutdown();
	return failed;
}
