/* Many clients at once, and fairness between a flooding client and a light
 * one, under each scheduling policy. Clients are separate processes; a
 * child reports by its exit code (0: all its results were right). */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"

#define MS (1000000ll)

static struct tdmt_daemon daemon_;
/* The fairness test's client and graph; the teardown frees them. */
static tdm_client *light;
static tdm_graph *light_graph;

static int setup_eager(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"eager\"\n");
}

static int setup_ws(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"ws\"\n");
}

static int setup_dmda(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"dmda\"\n");
}

static int setup_heft(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"heft\"\n");
}

static int setup_peft(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"peft\"\n");
}

static int setup_prio(void **state)
{
	return tdmt_group_start(state, &daemon_, "[engine]\npolicy = \"prio\"\n");
}

static int test_teardown(void **state)
{
	tdm_graph_free(light_graph);
	light_graph = NULL;
	if (light)
		tdm_disconnect(light);
	light = NULL;
	return tdmt_test_teardown(state);
}

/* ---- 16 clients at once --------------------------------------------------- */

enum {
	CHILD_OK = 0,
	CHILD_CONNECT = 10,
	CHILD_SETUP,
	CHILD_SUBMIT,
	CHILD_WAIT,
	CHILD_AXPY_WRONG,
	CHILD_GEMM_WRONG,
	CHILD_FILL_WRONG,
	CHILD_BARRIER,
};

/* One client: its own buffers and graphs, values that depend on its id so
 * that results crossing between clients would show. */
static int client_main(const char *sock, int id, int barrier_fd)
{
	enum { N = 8192, M = 24, K = 16, P = 20, ROUNDS = 4 };
	struct tdmt_kernels k;
	tdm_client *c;
	tdm_buffer hx, hy, hz, ha, hb, hc;
	float *x, *y, *z, *a, *b, *cm;
	char ch;

	/* Everyone starts together. */
	if (read(barrier_fd, &ch, 1) != 0)
		return CHILD_BARRIER;
	if (tdmt_connect(sock, &c) != 0)
		return CHILD_CONNECT;
	if (tdmt_lookup_kernels(c, &k) ||
	    tdm_buffer_alloc(c, N * sizeof(float), 0, &hx, (void **)&x) ||
	    tdm_buffer_alloc(c, N * sizeof(float), 0, &hy, (void **)&y) ||
	    tdm_buffer_alloc(c, N * sizeof(float), 0, &hz, (void **)&z) ||
	    tdm_buffer_alloc(c, M * K * sizeof(float), 0, &ha, (void **)&a) ||
	    tdm_buffer_alloc(c, K * P * sizeof(float), 0, &hb, (void **)&b) ||
	    tdm_buffer_alloc(c, M * P * sizeof(float), 0, &hc, (void **)&cm))
		return CHILD_SETUP;
	float v = (float)(id + 1);
	for (int i = 0; i < N; i++) {
		x[i] = v;
		y[i] = (float)(i % 10);
	}
	uint64_t seed = 1000 + (uint64_t)id;
	for (int i = 0; i < M * K; i++)
		a[i] = (float)tdmt_rand_range(&seed, 0, 20) - 10.0f;
	for (int i = 0; i < K * P; i++)
		b[i] = (float)tdmt_rand_range(&seed, 0, 20) - 10.0f + v;

	/* y += v x five times (RAW/WAW chain), z = id, C = A B. */
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return CHILD_SETUP;
	for (int i = 0; i < 5; i++)
		if (tdmt_add_axpy(g, &k, hx, hy, v, NULL))
			return CHILD_SETUP;
	if (tdmt_add_fill(g, &k, hz, 0, 0, (float)id, NULL) ||
	    tdmt_add_sgemm(g, &k, ha, hb, hc, M, P, K, 1.0f, 0.0f, NULL))
		return CHILD_SETUP;
	for (int r = 1; r <= ROUNDS; r++) {
		if (tdm_graph_submit(g))
			return CHILD_SUBMIT;
		if (tdm_wait(g, 60000 * MS))
			return CHILD_WAIT;
		for (int i = 0; i < N; i++) {
			/* small integers: exact in float */
			if (y[i] != (float)(i % 10) + 5.0f * (float)r * v * v)
				return CHILD_AXPY_WRONG;
			if (z[i] != (float)id)
				return CHILD_FILL_WRONG;
		}
		for (int i = 0; i < M; i++)
			for (int j = 0; j < P; j++) {
				float s = 0;
				for (int p = 0; p < K; p++)
					s += a[i * K + p] * b[p * P + j];
				if (cm[i * P + j] != s)
					return CHILD_GEMM_WRONG;
			}
		/* New inputs for the next round. */
		for (int i = 0; i < M * K; i++)
			a[i] = (float)tdmt_rand_range(&seed, 0, 20) - 10.0f;
	}
	tdm_graph_free(g);
	tdm_disconnect(c);
	return CHILD_OK;
}

static void test_16_clients(void **state)
{
	(void)state;
	enum { NCLIENTS = 16 };
	pid_t pids[NCLIENTS];
	int barrier[2];
	int64_t total0, total1;

	assert_int_equal(tdmt_counter(daemon_.sock, "sessions_total", &total0), 0);
	assert_int_equal(pipe(barrier), 0);
	for (int i = 0; i < NCLIENTS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(barrier[1]);
			_exit(client_main(daemon_.sock, i, barrier[0]));
		}
	}
	close(barrier[0]);
	close(barrier[1]); /* go */
	int failures = 0;
	for (int i = 0; i < NCLIENTS; i++) {
		int st = tdmt_wait_child(pids[i], 60000);
		if (st != 0) {
			fprintf(stderr, "client %d exited with %d\n", i, st);
			failures++;
		}
	}
	assert_int_equal(failures, 0);
	assert_int_equal(tdmt_counter(daemon_.sock, "sessions_total", &total1), 0);
	assert_int_equal(total1 - total0, NCLIENTS);
	const char *which = NULL;
	int64_t v = 0;
	if (tdmt_wait_counters_zero(daemon_.sock, tdmt_baseline_counters, 10000, &which, &v))
		fail_msg("counter %s stays at %lld", which, (long long)v);
	tdmt_test_ok();
}

/* ---- concurrent submitters ------------------------------------------------ */

/* Clients submitting wide graphs at the same time: every task of every graph
 * runs exactly once (the fill values show it) and every graph completes.
 *
 * Each submitter publishes what it is doing in memory shared with the
 * parent. The parent fails a child that stops making progress, and says
 * where it stopped; a sanitized build on a busy machine may take long in
 * total, which is not what this test is about. */
enum submitter_phase {
	PH_BARRIER,
	PH_CONNECT,
	PH_SETUP,
	PH_SUBMIT,
	PH_WAIT,
	PH_CHECK,
	PH_DISCONNECT,
	PH_DONE,
};
static const char *const phase_names[] = { "barrier", "connect", "setup",      "submit",
	                                   "wait",    "check",   "disconnect", "done" };

struct submitter_progress {
	uint32_t phase; /* enum submitter_phase */
	uint32_t round;
	uint32_t steps; /* moves on every phase change */
};

static void progress(struct submitter_progress *pr, enum submitter_phase ph, uint32_t round)
{
	__atomic_store_n(&pr->phase, ph, __ATOMIC_RELAXED);
	__atomic_store_n(&pr->round, round, __ATOMIC_RELAXED);
	__atomic_fetch_add(&pr->steps, 1, __ATOMIC_RELAXED);
}

/* A ThreadSanitizer daemon runs these tiny tasks about 15 times slower:
 * fewer rounds keep that run short and still cover every path. */
#ifdef __SANITIZE_THREAD__
#define SUBMIT_ROUNDS 48
#else
#define SUBMIT_ROUNDS 240
#endif

static int submitter_main(const char *sock, struct submitter_progress *pr, int barrier_fd)
{
	enum { ROUNDS = SUBMIT_ROUNDS, WIDTH = 300, INFLIGHT = 4 };
	struct tdmt_kernels k;
	tdm_client *c;
	tdm_buffer h[INFLIGHT];
	float *p[INFLIGHT];
	tdm_graph *g[INFLIGHT];
	char ch;

	if (read(barrier_fd, &ch, 1) != 0)
		return CHILD_BARRIER;
	progress(pr, PH_CONNECT, 0);
	if (tdmt_connect(sock, &c) || tdmt_lookup_kernels(c, &k))
		return CHILD_CONNECT;
	progress(pr, PH_SETUP, 0);
	for (int j = 0; j < INFLIGHT; j++) {
		if (tdm_buffer_alloc(c, WIDTH * sizeof(float), 0, &h[j], (void **)&p[j]))
			return CHILD_SETUP;
		g[j] = tdm_graph_new(c);
		if (!g[j])
			return CHILD_SETUP;
		for (uint32_t t = 0; t < WIDTH; t++) {
			struct tdm_task_desc d = { .kernel = k.axpy, .nargs = 2, .nscalars = 1 };
			d.args[0] = TDM_ARG(h[j], TDM_R, t * sizeof(float), sizeof(float));
			d.args[1] = TDM_ARG(h[j], TDM_RW, t * sizeof(float), sizeof(float));
			d.scalars[0] = TDM_F32(1.0f);
			if (tdm_graph_add_task(g[j], &d, NULL))
				return CHILD_SETUP;
		}
	}
	/* Each run of graph j doubles every float of buffer j (x += x on its
	 * own float, one task per float: WIDTH roots). A task lost or run
	 * twice shows in the values or as a graph that never completes. */
	float cur[INFLIGHT];
	for (int j = 0; j < INFLIGHT; j++) {
		for (int t = 0; t < WIDTH; t++)
			p[j][t] = 1.0f;
		cur[j] = 1.0f;
		progress(pr, PH_SUBMIT, 0);
		if (tdm_graph_submit(g[j]))
			return CHILD_SUBMIT;
	}
	for (uint32_t r = 0; r < ROUNDS; r++) {
		int j = (int)(r % INFLIGHT);
		progress(pr, PH_WAIT, r);
		if (tdm_wait(g[j], 5000 * MS))
			return CHILD_WAIT;
		progress(pr, PH_CHECK, r);
		cur[j] *= 2.0f; /* exact: powers of two */
		for (int t = 0; t < WIDTH; t++)
			if (p[j][t] != cur[j])
				return CHILD_AXPY_WRONG;
		if (cur[j] >= 1048576.0f) {
			for (int t = 0; t < WIDTH; t++)
				p[j][t] = 1.0f;
			cur[j] = 1.0f;
		}
		progress(pr, PH_SUBMIT, r);
		if (tdm_graph_submit(g[j]))
			return CHILD_SUBMIT;
	}
	for (int j = 0; j < INFLIGHT; j++) {
		progress(pr, PH_WAIT, ROUNDS);
		if (tdm_wait(g[j], 5000 * MS))
			return CHILD_WAIT;
		tdm_graph_free(g[j]);
	}
	progress(pr, PH_DISCONNECT, ROUNDS);
	tdm_disconnect(c);
	progress(pr, PH_DONE, ROUNDS);
	return CHILD_OK;
}

/* Waits for every child; one whose progress stands still for STALL_MS is
 * killed and reported with the phase it stood in. Returns the failures. */
static int wait_submitters(const pid_t *pids, struct submitter_progress *pr, int n)
{
	enum { STALL_MS = 20000 };
	uint32_t seen[n];
	uint64_t moved[n];
	int status[n], left = n, failures = 0;

	for (int i = 0; i < n; i++) {
		seen[i] = __atomic_load_n(&pr[i].steps, __ATOMIC_RELAXED);
		moved[i] = tdmt_now_ns();
		status[i] = INT32_MIN; /* running */
	}
	while (left) {
		uint64_t now = tdmt_now_ns();
		for (int i = 0; i < n; i++) {
			if (status[i] != INT32_MIN)
				continue;
			int st;
			pid_t r = waitpid(pids[i], &st, WNOHANG);
			if (r == pids[i]) {
				status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
				if (status[i])
					fprintf(stderr, "submitter %d exited with %d\n", i,
					        status[i]);
			} else if (r < 0 && errno != EINTR) {
				status[i] = -1;
			} else {
				uint32_t s = __atomic_load_n(&pr[i].steps, __ATOMIC_RELAXED);
				if (s != seen[i]) {
					seen[i] = s;
					moved[i] = now;
					continue;
				}
				if (now - moved[i] < STALL_MS * MS)
					continue;
				uint32_t ph = __atomic_load_n(&pr[i].phase, __ATOMIC_RELAXED);
				fprintf(stderr,
				        "submitter %d made no progress for %d ms: in %s, round "
				        "%u\n",
				        i, (int)STALL_MS, ph <= PH_DONE ? phase_names[ph] : "?",
				        __atomic_load_n(&pr[i].round, __ATOMIC_RELAXED));
				kill(pids[i], SIGKILL);
				while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
					;
				status[i] = -1;
			}
			left--;
			failures += status[i] != 0;
		}
		if (left)
			tdmt_sleep_ms(5);
	}
	return failures;
}

static void test_concurrent_submitters(void **state)
{
	(void)state;
	enum { NCLIENTS = 8 };
	pid_t pids[NCLIENTS];
	int barrier[2];
	struct submitter_progress *pr = mmap(NULL, NCLIENTS * sizeof(*pr), PROT_READ | PROT_WRITE,
	                                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	assert_true(pr != MAP_FAILED);
	memset(pr, 0, NCLIENTS * sizeof(*pr));
	assert_int_equal(pipe(barrier), 0);
	for (int i = 0; i < NCLIENTS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(barrier[1]);
			_exit(submitter_main(daemon_.sock, &pr[i], barrier[0]));
		}
	}
	close(barrier[0]);
	uint64_t t0 = tdmt_now_ns();
	close(barrier[1]);
	int failures = wait_submitters(pids, pr, NCLIENTS);
	munmap(pr, NCLIENTS * sizeof(*pr));
	fprintf(stderr, "concurrent submitters: %d clients ran in %.1f s\n", NCLIENTS,
	        (double)(tdmt_now_ns() - t0) / 1e9);
	if (failures)
		fail_msg("%d of %d concurrent submitters failed", failures, NCLIENTS);
	const char *which = NULL;
	int64_t v = 0;
	if (tdmt_wait_counters_zero(daemon_.sock, tdmt_baseline_counters, 5000, &which, &v))
		fail_msg("counter %s stays at %lld", which, (long long)v);
	tdmt_test_ok();
}

/* ---- fairness ------------------------------------------------------------- */

/* The whole flood is in flight at once: a scheduler that served clients in
 * arrival order would make the light client wait for all of it. */
enum { FLOOD_TASKS = 20000, FLOOD_GRAPH = 2000, FLOOD_INFLIGHT = 10, FLOOD_SPIN_US = 20 };

struct flood_report {
	int32_t status;
	uint64_t start_ns, end_ns;
};

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = write(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			_exit(99);
		c += k;
		n -= (size_t)k;
	}
}

/* The flood: FLOOD_TASKS spins in graphs of FLOOD_GRAPH, FLOOD_INFLIGHT
 * graphs kept in flight (resubmitted as they finish while work is left). Writes 'S' once the first
 * graphs are submitted, then a struct flood_report. */
static int flood_main(const char *sock, int fd)
{
	struct flood_report rep = { 0 };
	struct tdmt_kernels k;
	tdm_client *c;
	tdm_graph *g[FLOOD_INFLIGHT];

	if (tdmt_connect(sock, &c) || tdmt_lookup_kernels(c, &k))
		return CHILD_CONNECT;
	for (int i = 0; i < FLOOD_INFLIGHT; i++) {
		g[i] = tdm_graph_new(c);
		if (!g[i])
			return CHILD_SETUP;
		for (int t = 0; t < FLOOD_GRAPH; t++)
			if (tdmt_add_spin(g[i], &k, FLOOD_SPIN_US, NULL))
				return CHILD_SETUP;
	}
	int submitted = 0, done = 0;
	rep.start_ns = tdmt_now_ns();
	for (int i = 0; i < FLOOD_INFLIGHT; i++, submitted++)
		if (tdm_graph_submit(g[i]))
			return CHILD_SUBMIT;
	write_all(fd, "S", 1);
	while (done < submitted) {
		int i = done % FLOOD_INFLIGHT;
		int rc = tdm_wait(g[i], 60000 * MS);
		if (rc) {
			rep.status = rc;
			break;
		}
		done++;
		if (submitted * FLOOD_GRAPH < FLOOD_TASKS) {
			if (tdm_graph_submit(g[i]))
				return CHILD_SUBMIT;
			submitted++;
		}
	}
	rep.end_ns = tdmt_now_ns();
	write_all(fd, &rep, sizeof(rep));
	for (int i = 0; i < FLOOD_INFLIGHT; i++)
		tdm_graph_free(g[i]);
	tdm_disconnect(c);
	return rep.status ? CHILD_WAIT : CHILD_OK;
}

static int read_full(int fd, void *p, size_t n, int timeout_ms)
{
	char *c = p;
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	while (n) {
		uint64_t now = tdmt_now_ns();
		if (now >= deadline)
			return -1;
		struct pollfd pf = { fd, POLLIN, 0 };
		if (poll(&pf, 1, (int)((deadline - now) / 1000000ull) + 1) <= 0)
			continue;
		ssize_t k = read(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void test_fairness(void **state)
{
	(void)state;
	enum { MAX_LIGHT = 64 };
	struct tdmt_kernels k;
	tdm_client *c;
	int pfd[2];
	uint64_t sub[MAX_LIGHT], fin[MAX_LIGHT];
	int nlight = 0;

	assert_int_equal(tdmt_connect(daemon_.sock, &light), 0);
	c = light;
	assert_int_equal(tdmt_lookup_kernels(c, &k), 0);
	tdm_graph *g = light_graph = tdm_graph_new(c);
	assert_non_null(g);
	for (int i = 0; i < 3; i++)
		assert_int_equal(tdmt_add_spin(g, &k, FLOOD_SPIN_US, NULL), 0);

	assert_int_equal(pipe(pfd), 0);
	pid_t flood = fork();
	assert_true(flood >= 0);
	if (flood == 0) {
		close(pfd[0]);
		_exit(flood_main(daemon_.sock, pfd[1]));
	}
	close(pfd[1]);
	char ch;
	if (read_full(pfd[0], &ch, 1, 30000) != 0 || ch != 'S') {
		kill(flood, SIGKILL);
		tdmt_wait_child(flood, 5000);
		fail_msg("the flooding client did not start");
	}
	tdmt_sleep_ms(5); /* let the flood fill the queues */

	/* Small graphs one after another while the flood lasts. */
	for (;;) {
		struct pollfd pf = { pfd[0], POLLIN, 0 };
		if (nlight == MAX_LIGHT || poll(&pf, 1, 0) > 0)
			break; /* the flood reported its end */
		sub[nlight] = tdmt_now_ns();
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 60000 * MS), 0);
		fin[nlight] = tdmt_now_ns();
		nlight++;
		tdmt_sleep_ms(2);
	}
	struct flood_report rep;
	int rr = read_full(pfd[0], &rep, sizeof(rep), 60000);
	close(pfd[0]);
	int st = tdmt_wait_child(flood, 60000);
	assert_int_equal(rr, 0);
	assert_int_equal(rep.status, 0);
	assert_int_equal(st, 0);

	/* Round trips of the light graphs that finished while the flood ran. */
	uint64_t flood_ns = rep.end_ns - rep.start_ns, rtt[MAX_LIGHT];
	int n = 0;
	for (int i = 0; i < nlight; i++)
		if (fin[i] < rep.end_ns)
			rtt[n++] = fin[i] - sub[i];
	/* The flood is FLOOD_TASKS x FLOOD_SPIN_US of work: it lasts at least
	 * that over the devices. */
	uint64_t min_flood = (uint64_t)FLOOD_TASKS * FLOOD_SPIN_US * 1000u / tdm_device_count(c);
	assert_true(flood_ns >= min_flood);
	if (n < 3)
		fail_msg(
		        "only %d light graphs finished during the flood (%d in all, flood %.1f ms, "
		        "first light round trip %.1f ms)",
		        n, nlight, flood_ns / 1e6, nlight ? (fin[0] - sub[0]) / 1e6 : -1.0);
	qsort(rtt, (size_t)n, sizeof(rtt[0]), cmp_u64);
	uint64_t median = rtt[n / 2], worst = rtt[n - 1];
	if (getenv("TDMT_VERBOSE"))
		fprintf(stderr,
		        "light client: median %.2f ms, worst %.2f ms, flood %.1f ms, %d/%d\n",
		        median / 1e6, worst / 1e6, flood_ns / 1e6, n, nlight);
	/* A fair scheduler serves the light client between the flood's tasks:
	 * its round trip is a small fraction of the flood's length. */
	if (worst * 5 > flood_ns || median * 20 > flood_ns)
		fail_msg("light client round trips: median %.2f ms, worst %.2f ms, during a flood "
		         "of %.1f ms (%d samples)",
		         median / 1e6, worst / 1e6, flood_ns / 1e6, n);
	tdm_graph_free(g);
	light_graph = NULL;
	tdm_disconnect(c);
	light = NULL;
	tdmt_test_ok();
}

static void test_clean_shutdown(void **state)
{
	(void)state;
	const char *which = NULL;
	int64_t v = 0;
	if (tdmt_wait_counters_zero(daemon_.sock, tdmt_baseline_counters, 10000, &which, &v))
		fail_msg("counter %s stays at %lld", which, (long long)v);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tdmt_test_setup, test_teardown)

static const struct CMUnitTest tests[] = {
	T(test_16_clients),
	T(test_concurrent_submitters),
	T(test_fairness),
	T(test_clean_shutdown),
};

/* The cost-aware policies share one dispatch core: the many-clients and
 * fairness checks, without the long concurrent-submitters run. */
static const struct CMUnitTest short_tests[] = {
	T(test_16_clients),
	T(test_fairness),
	T(test_clean_shutdown),
};

int main(void)
{
	int failed = 0;
	signal(SIGPIPE, SIG_IGN);
	failed += cmocka_run_group_tests_name("clients_eager", tests, setup_eager, tdmt_group_end);
	failed += cmocka_run_group_tests_name("clients_ws", tests, setup_ws, tdmt_group_end);
	failed += cmocka_run_group_tests_name("clients_dmda", short_tests, setup_dmda,
	                                      tdmt_group_end);
	failed += cmocka_run_group_tests_name("clients_heft", short_tests, setup_heft,
	                                      tdmt_group_end);
	failed += cmocka_run_group_tests_name("clients_peft", short_tests, setup_peft,
	                                      tdmt_group_end);
	failed += cmocka_run_group_tests_name("clients_prio", short_tests, setup_prio,
	                                      tdmt_group_end);
	return failed ? 1 : 0;
}
