/* The tandem side of the foundation benchmarks. Starts $BUILD/bin/tandemd
 * (BUILD defaults to "build") on a private socket, once per setting, and
 * drives it through libtandem:
 *
 *   roundtrip_p50_us / _p99_us  one single-task graph, submit -> tdm_wait,
 *       core=same (daemon and client on the first core) or cross (daemon on
 *       the second), doorbell=block (client spin_us 0, engine.spin_us 0) or
 *       spin (both SPIN_US);
 *   batch_noop_*   graphs of BATCH independent noop tasks, GRAPHS in flight,
 *       daemon on every core, for RUN_S after WARM_S of warm-up;
 *   chain_us_per_task   one graph of CHAIN noop tasks, each with an edge
 *       from the previous one (submit -> done, median of CHAIN_RUNS);
 *   idle_cpu_percent   the daemon's utime+stime over IDLE_S afterwards, with
 *       the client still connected and nothing in flight.
 *
 * `bench_tandem roundtrip` runs the round trips only.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "tandem.h"
#include "tests/bench/bench_util.h"

#define SPIN_US 50
#define BATCH 1000
#define GRAPHS 3
#define WARM_S 0.3
#define RUN_S 1.5
#define RT_WARMUP 500
#define RT_ITERS 5000
#define CHAIN 100000
#define CHAIN_RUNS 3
#define IDLE_S 5.0
#define START_TIMEOUT_MS 5000
#define STOP_TIMEOUT_MS 5000
#define WAIT_NS 10000000000LL /* 10 s: a hang, not a slow graph */
#define CHAIN_WAIT_NS 60000000000LL /* 60 s */
#define MAX_CORES 64

/* Where the benchmark keeps its daemon's files. */
struct bench_env {
	char tandemd[PATH_MAX];
	char dir[256];
	cpu_set_t all; /* this process's affinity at start */
	int cores[MAX_CORES];
	int ncores;
};

struct daemon {
	pid_t pid;
	char cfg[PATH_MAX];
	char sock[PATH_MAX];
	char log[PATH_MAX];
};

/* ---- the daemon ----------------------------------------------------------- */

static int write_config(const char *path, const int *cores, int ncores, uint32_t spin_us)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fprintf(f, "[daemon]\nlog_level = \"warn\"\n\n");
	fprintf(f, "[engine]\npolicy = \"eager\"\nspin_us = %u\n\n", spin_us);
	fprintf(f, "[cpu]\ncores = [");
	for (int i = 0; i < ncores; i++)
		fprintf(f, "%s%d", i ? ", " : "", cores[i]);
	fprintf(f, "]\n");
	return fclose(f) == 0 ? 0 : -1;
}

/* Copies the daemon's log to stderr (it says why the daemon failed). */
static void dump_log(const struct daemon *d)
{
	char line[512];
	FILE *f = fopen(d->log, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "  tandemd: %s", line);
	fclose(f);
}

static void daemon_remove_files(const struct daemon *d)
{
	unlink(d->cfg);
	unlink(d->log);
	unlink(d->sock);
}

/* In the child: pin, redirect output to the log, exec the daemon. */
static void exec_daemon(const struct bench_env *env, const struct daemon *d, const cpu_set_t *cpus,
                        int ready_fd)
{
	char fdstr[16];
	int log = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (log < 0 || dup2(log, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0)
		_exit(126);
	/* Never outlive the benchmark, even when it is killed by a timeout. */
	if (sched_setaffinity(0, sizeof(*cpus), cpus) != 0 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() == 1)
		_exit(126);
	snprintf(fdstr, sizeof(fdstr), "%d", ready_fd);
	execl(env->tandemd, "tandemd", "--config", d->cfg, "--socket", d->sock, "--ready-fd", fdstr,
	      (char *)NULL);
	_exit(127);
}

/* Waits for "READY\n" on fd; 0 when seen, -1 on EOF, error or timeout. */
static int wait_ready(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[16];
	ssize_t n;

	if (poll(&p, 1, START_TIMEOUT_MS) != 1)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strncmp(buf, "READY", 5) == 0 ? 0 : -1;
}

/* Starts tandemd on `cores` with engine.spin_us = spin_us. */
static int daemon_start(const struct bench_env *env, const int *cores, int ncores, uint32_t spin_us,
                        struct daemon *d)
{
	cpu_set_t cpus;
	int p[2], ready_fd;

	snprintf(d->cfg, sizeof(d->cfg), "%s/cfg.toml", env->dir);
	snprintf(d->sock, sizeof(d->sock), "%s/tandemd.sock", env->dir);
	snprintf(d->log, sizeof(d->log), "%s/tandemd.log", env->dir);
	d->pid = -1;
	CPU_ZERO(&cpus);
	for (int i = 0; i < ncores; i++)
		CPU_SET(cores[i], &cpus);
	if (write_config(d->cfg, cores, ncores, spin_us) != 0 || pipe2(p, O_CLOEXEC) != 0) {
		fprintf(stderr, "bench_tandem: cannot set up tandemd: %s\n", strerror(errno));
		daemon_remove_files(d);
		return -1;
	}
	ready_fd = dup(p[1]); /* without O_CLOEXEC: the daemon inherits it */
	d->pid = ready_fd < 0 ? -1 : fork();
	if (d->pid == 0)
		exec_daemon(env, d, &cpus, ready_fd);
	close(p[1]);
	if (ready_fd >= 0)
		close(ready_fd);
	if (d->pid < 0) {
		close(p[0]);
		daemon_remove_files(d);
		return -1;
	}
	if (wait_ready(p[0]) != 0)
		fprintf(stderr, "bench_tandem: no READY from tandemd, trying to connect\n");
	close(p[0]);
	return 0;
}

/* Says how the daemon ended (status from waitpid) and shows its log. */
static void report_exit(const struct daemon *d, int status, const char *when)
{
	if (WIFSIGNALED(status))
		fprintf(stderr, "bench_tandem: tandemd died of signal %d %s\n", WTERMSIG(status),
		        when);
	else
		fprintf(stderr, "bench_tandem: tandemd exited with status %d %s\n",
		        WEXITSTATUS(status), when);
	dump_log(d);
}

/* SIGTERM, then waits; the daemon must exit 0 within STOP_TIMEOUT_MS. A
 * daemon already reaped (pid <= 0) only has its files removed. */
static int daemon_stop(struct daemon *d)
{
	int status = 0, rc = -1;
	pid_t w = 0;

	if (d->pid <= 0) {
		daemon_remove_files(d);
		return -1;
	}
	if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
		report_exit(d, status, "before it was asked to stop");
		d->pid = -1;
		daemon_remove_files(d);
		return -1;
	}
	kill(d->pid, SIGTERM);
	for (int ms = 0; ms < STOP_TIMEOUT_MS && w == 0; ms += 10) {
		w = waitpid(d->pid, &status, WNOHANG);
		if (w == 0)
			bench_sleep_ns(10000000);
	}
	if (w == 0) {
		fprintf(stderr,
		        "bench_tandem: tandemd (pid %d) still running %d ms after "
		        "SIGTERM; killing it\n",
		        (int)d->pid, STOP_TIMEOUT_MS);
		kill(d->pid, SIGKILL);
		waitpid(d->pid, &status, 0);
		dump_log(d);
	} else if (w == d->pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		rc = 0;
	} else if (w == d->pid) {
		report_exit(d, status, "on SIGTERM");
	}
	d->pid = -1;
	daemon_remove_files(d);
	return rc;
}

/* Connects, retrying for START_TIMEOUT_MS while the daemon lives. */
static int daemon_connect(struct daemon *d, uint32_t spin_us, tdm_client **c)
{
	struct tdm_connect_opts o = { .socket_path = d->sock, .spin_us = spin_us };
	int rc = -TDM_ECONNECT, status;

	for (int ms = 0; ms < START_TIMEOUT_MS; ms += 10) {
		rc = tdm_connect(&o, c);
		if (rc == 0)
			return 0;
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			report_exit(d, status, "before accepting clients");
			d->pid = -1;
			return rc;
		}
		bench_sleep_ns(10000000);
	}
	fprintf(stderr, "bench_tandem: tdm_connect(%s): %s\n", d->sock, tdm_strerror(rc));
	return rc;
}

/* ---- graphs --------------------------------------------------------------- */

static int check(int rc, const char *what)
{
	if (rc < 0)
		fprintf(stderr, "bench_tandem: %s: %s\n", what, tdm_strerror(rc));
	return rc;
}

/* A graph of n noop tasks; with chain, task i has an edge from task i-1. */
static tdm_graph *noop_graph(tdm_client *c, tdm_kernel noop, uint32_t n, int chain)
{
	struct tdm_task_desc t = { .kernel = noop };
	tdm_graph *g = tdm_graph_new(c);

	if (!g) {
		fprintf(stderr, "bench_tandem: tdm_graph_new failed\n");
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (check(tdm_graph_add_task(g, &t, NULL), "tdm_graph_add_task") < 0 ||
		    (chain && i > 0 &&
		     check(tdm_graph_add_edge(g, i - 1, i), "tdm_graph_add_edge") < 0)) {
			tdm_graph_free(g);
			return NULL;
		}
	}
	return g;
}

static int wait_graph(tdm_graph *g, int64_t timeout_ns)
{
	int rc = tdm_wait(g, timeout_ns);

	if (rc == -TDM_ETIMEDOUT)
		fprintf(stderr,
		        "bench_tandem: graph of %u tasks not done after %lld s: tandemd "
		        "hangs?\n",
		        tdm_graph_task_count(g), (long long)(timeout_ns / 1000000000));
	else
		check(rc, "tdm_wait");
	return rc;
}

static int submit_wait(tdm_graph *g, int64_t timeout_ns)
{
	int rc = check(tdm_graph_submit(g), "tdm_graph_submit");

	return rc < 0 ? rc : wait_graph(g, timeout_ns);
}

static int lookup_noop(tdm_client *c, tdm_kernel *k)
{
	return check(tdm_kernel_lookup(c, "noop", k), "tdm_kernel_lookup(noop)");
}

/* ---- round trip ----------------------------------------------------------- */

static int measure_roundtrip(tdm_client *c, uint64_t *samples)
{
	tdm_kernel noop;
	tdm_graph *g;
	int rc = 0;

	if (lookup_noop(c, &noop) < 0 || !(g = noop_graph(c, noop, 1, 0)))
		return -1;
	for (int i = 0; i < RT_WARMUP + RT_ITERS && rc == 0; i++) {
		uint64_t t0 = bench_now_ns();

		rc = submit_wait(g, WAIT_NS);
		if (i >= RT_WARMUP)
			samples[i - RT_WARMUP] = bench_now_ns() - t0;
	}
	tdm_graph_free(g);
	return rc;
}

/* One case: daemon on daemon_core, client pinned to the first core. */
static int bench_roundtrip(const struct bench_env *env, int daemon_core, int spin, const char *keys)
{
	static uint64_t samples[RT_ITERS];
	uint32_t spin_us = spin ? SPIN_US : 0;
	struct daemon d;
	tdm_client *c;
	int rc;

	if (bench_pin(0, env->cores[0]) != 0 ||
	    daemon_start(env, &daemon_core, 1, spin_us, &d) != 0)
		return -1;
	rc = daemon_connect(&d, spin_us, &c);
	if (rc == 0) {
		rc = measure_roundtrip(c, samples);
		tdm_disconnect(c);
	}
	if (daemon_stop(&d) != 0)
		rc = -1;
	sched_setaffinity(0, sizeof(env->all), &env->all);
	if (rc != 0)
		return -1;
	bench_report_p50_p99("roundtrip", samples, RT_ITERS, keys);
	return 0;
}

static int bench_roundtrips(const struct bench_env *env)
{
	const char *bells[] = { "block", "spin" };
	int failed = 0;

	for (int cross = 0; cross < 2; cross++) {
		if (cross && env->ncores < 2) {
			fprintf(stderr, "bench_tandem: one core only, core=cross skipped\n");
			break;
		}
		for (int spin = 0; spin < 2; spin++) {
			char keys[64];

			snprintf(keys, sizeof(keys), "core=%s doorbell=%s",
			         cross ? "cross" : "same", bells[spin]);
			if (bench_roundtrip(env, env->cores[cross], spin, keys) != 0) {
				fprintf(stderr, "bench_tandem: roundtrip %s failed\n", keys);
				failed = 1;
			}
		}
	}
	return failed;
}

/* ---- batch, chain, idle on one daemon ------------------------------------- */

/* Keeps GRAPHS graphs in flight for seconds; returns tasks/s or < 0. */
static double batch_rate(tdm_graph **g, double seconds)
{
	uint64_t t0 = bench_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t1, tasks = 0;
	int i;

	for (i = 0; i < GRAPHS; i++) {
		if (check(tdm_graph_submit(g[i]), "tdm_graph_submit") < 0)
			return -1.0;
	}
	for (i = 0;; i = (i + 1) % GRAPHS) {
		if (wait_graph(g[i], WAIT_NS) < 0)
			return -1.0;
		tasks += BATCH;
		t1 = bench_now_ns();
		if (t1 >= end)
			break;
		if (check(tdm_graph_submit(g[i]), "tdm_graph_submit") < 0)
			return -1.0;
	}
	/* Drain the other graphs in flight; they are not counted. */
	for (int j = 1; j < GRAPHS; j++) {
		if (wait_graph(g[(i + j) % GRAPHS], WAIT_NS) < 0)
			return -1.0;
	}
	return (double)tasks / ((double)(t1 - t0) / 1e9);
}

static int bench_batch(tdm_client *c, tdm_kernel noop, const char *keys)
{
	tdm_graph *g[GRAPHS] = { 0 };
	double rate = -1.0;
	int ok = 1;

	for (int i = 0; i < GRAPHS && ok; i++)
		ok = (g[i] = noop_graph(c, noop, BATCH, 0)) != NULL;
	if (ok && batch_rate(g, WARM_S) > 0)
		rate = batch_rate(g, RUN_S);
	for (int i = 0; i < GRAPHS; i++)
		tdm_graph_free(g[i]);
	if (rate <= 0)
		return -1;
	bench_report("batch_noop_us_per_task", 1e6 / rate, "us", keys);
	bench_report("batch_noop_tasks_per_s", rate, "tasks/s", keys);
	return 0;
}

static int bench_chain(tdm_client *c, tdm_kernel noop, const char *keys)
{
	double runs[CHAIN_RUNS], build_us;
	uint64_t t0 = bench_now_ns();
	tdm_graph *g = noop_graph(c, noop, CHAIN, 1);
	char k[160];
	int rc = 0;

	if (!g)
		return -1;
	build_us = (double)(bench_now_ns() - t0) / 1e3 / CHAIN;
	for (int i = 0; i < CHAIN_RUNS && rc == 0; i++) {
		t0 = bench_now_ns();
		rc = submit_wait(g, CHAIN_WAIT_NS);
		runs[i] = (double)(bench_now_ns() - t0) / 1e3 / CHAIN;
	}
	tdm_graph_free(g);
	if (rc != 0)
		return -1;
	snprintf(k, sizeof(k), "%s tasks=%d runs=%d build_us_per_task=%.3f", keys, CHAIN,
	         CHAIN_RUNS, build_us);
	bench_report("chain_us_per_task", bench_median(runs, CHAIN_RUNS), "us", k);
	return 0;
}

static int bench_idle(pid_t daemon, const char *keys)
{
	double pct = bench_idle_cpu_percent(daemon, IDLE_S);
	char k[128];

	if (pct < 0) {
		fprintf(stderr, "bench_tandem: cannot read /proc/%d/stat (tandemd gone?)\n",
		        (int)daemon);
		return -1;
	}
	snprintf(k, sizeof(k), "%s clients=1", keys);
	bench_report("idle_cpu_percent", pct, "percent", k);
	return 0;
}

static int run_workloads(tdm_client *c, pid_t daemon, const char *keys)
{
	tdm_kernel noop;
	int failed = 0;

	if (lookup_noop(c, &noop) < 0)
		return 1;
	if (bench_batch(c, noop, keys) != 0) {
		fprintf(stderr, "bench_tandem: batch failed\n");
		failed = 1;
	}
	if (bench_chain(c, noop, keys) != 0) {
		fprintf(stderr, "bench_tandem: chain failed\n");
		failed = 1;
	}
	if (bench_idle(daemon, keys) != 0) {
		fprintf(stderr, "bench_tandem: idle failed\n");
		failed = 1;
	}
	return failed;
}

/* Batch, chain and idle: daemon on every core, spinning doorbells. */
static int bench_throughput(const struct bench_env *env)
{
	struct daemon d;
	tdm_client *c;
	char keys[64];
	int failed;

	if (daemon_start(env, env->cores, env->ncores, SPIN_US, &d) != 0)
		return 1;
	if (daemon_connect(&d, SPIN_US, &c) != 0) {
		daemon_stop(&d);
		return 1;
	}
	snprintf(keys, sizeof(keys), "policy=eager daemon_cores=%d spin_us=%d", env->ncores,
	         SPIN_US);
	failed = run_workloads(c, d.pid, keys);
	tdm_disconnect(c);
	if (daemon_stop(&d) != 0)
		failed = 1;
	return failed;
}

/* ---- main ----------------------------------------------------------------- */

static int env_init(struct bench_env *env)
{
	const char *build = getenv("BUILD");

	snprintf(env->tandemd, sizeof(env->tandemd), "%s/bin/tandemd",
	         build && *build ? build : "build");
	if (access(env->tandemd, X_OK) != 0) {
		fprintf(stderr, "bench_tandem: no daemon at %s (set BUILD)\n", env->tandemd);
		return -1;
	}
	if (sched_getaffinity(0, sizeof(env->all), &env->all) != 0)
		return -1;
	for (env->ncores = 0; env->ncores < MAX_CORES; env->ncores++) {
		env->cores[env->ncores] = bench_nth_core(env->ncores);
		if (env->cores[env->ncores] < 0)
			break;
	}
	/* A short directory: the socket path must fit in sun_path. */
	snprintf(env->dir, sizeof(env->dir), "/tmp/tandem-bench-XXXXXX");
	if (!mkdtemp(env->dir)) {
		perror("bench_tandem: mkdtemp");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int roundtrip_only = argc > 1 && strcmp(argv[1], "roundtrip") == 0;
	struct bench_env env;
	int failed;

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && !roundtrip_only) {
		fprintf(stderr, "usage: bench_tandem [roundtrip]\n");
		return 2;
	}
	if (env_init(&env) != 0)
		return 1;
	failed = bench_roundtrips(&env);
	if (!roundtrip_only)
		failed |= bench_throughput(&env);
	rmdir(env.dir);
	return failed;
}
