/* Elastic devices (issue 18) against a real daemon: $BUILD/bin/tandemd on
 * the CPU cores and PoCL's OpenCL device (clcpu0; the parts that need it
 * say so and are left out when it is absent), driven with the integration
 * tests' helpers (tests/integration/support*.c).
 *
 *   elastic_events, elastic_tasks_lost, elastic_wrong_results
 *       EVENTS random device changes (add, drain, resume, remove of the CPU
 *       workers and clcpu0, at 2..30 ms pauses; clcpu0's first launches
 *       fail: fault injection) while three Cholesky clients (threads) and
 *       two llm_layer clients (processes, MoE and dense) run, every graph
 *       checked against a host reference; the daemon and the clients are
 *       never restarted (checked: same pid, one session per client).
 *   elastic_first_task_ms  from sending `device add` to the first task
 *       starting on the new device (task info of the Cholesky clients,
 *       CLOCK_MONOTONIC on both sides), for a CPU worker and for clcpu0,
 *       median of ROUNDS adds (each after a remove), under the daemon's
 *       default policy (dmda) and under eager.
 *   elastic_throughput_dip  graphs/s of a steady Cholesky client in the
 *       WINDOW_MS after an add or a drain over the lower of its steady
 *       rates in the second before and the second after the window (the
 *       slower of the two configurations); the median of ROUNDS, per
 *       event, with the worst and the ratio over the rate before alone
 *       (over_before) in the keys.
 *   elastic_bytes_over_min  a remove (drain, then gone) of clcpu0 while it
 *       owns the only valid copy of KV buffers: the bytes the evacuation
 *       moved (its evacuated_bytes + peer_bytes where the status shows them,
 *       else what it wrote back to the host, bytes_d2h, across the remove)
 *       over the bytes of those sole-owner copies; the buffers are checked
 *       after the graph completes elsewhere.
 *   elastic_live_add_ms, elastic_restart_ms, elastic_restart_over_live
 *       an llm_layer client decoding on the CPU workers; clcpu0 joins
 *       either live (`device add`: from sending it to the next decode step
 *       done) or by a restart (SIGTERM, the configuration changed to
 *       include it, tandemd started again, the client reconnecting with
 *       backoff and uploading its weights and state again: from the
 *       SIGTERM to its first decode step done), median of ROUNDS each.
 *
 * usage: bench_elastic [EVENTS [PART,...]]   (default 1000, every part:
 *        stress, rescale, bytes, restart)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/bench/bench_util.h"
#include "tests/integration/support.h"
#include "tests/integration/support_elastic.h"

#define ROUNDS 5
#define WINDOW_MS 500
#define STEADY_MS 1000
#define FIRST_TASK_WAIT_MS 5000

static int fail(const char *what)
{
	fprintf(stderr, "bench_elastic: %s\n", what);
	return -1;
}

/* The CPU worker names and whether clcpu0 is there. */
static int find_devices(const char *sock, char cpus[][16], int max, bool *have_cl)
{
	json_t *doc = tdmt_status_doc(sock);
	size_t i;
	json_t *d;
	int n = 0;

	*have_cl = false;
	if (!doc)
		return -1;
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		const char *name = json_string_value(json_object_get(d, "name"));
		if (!name)
			continue;
		if (!strcmp(name, "clcpu0"))
			*have_cl = true;
		else if (!strncmp(name, "cpu", 3) && n < max)
			snprintf(cpus[n++], 16, "%s", name);
	}
	json_array_foreach(json_object_get(doc, "available"), i, d)
	{
		const char *name = json_string_value(json_object_get(d, "name"));
		if (name && !strcmp(name, "clcpu0"))
			*have_cl = true;
	}
	json_decref(doc);
	return n;
}

/* A number of the latest id of device name in the status; -1 when there
 * is no such field. */
static int64_t device_num(const char *sock, const char *name, const char *key)
{
	int64_t v = -1;
	json_t *doc = tdmt_status_doc(sock);
	struct tdmt_dev_view view;
	size_t i;
	json_t *d;

	if (!doc)
		return -1;
	tdmt_device_view(doc, name, &view);
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		json_t *f = json_object_get(d, key);
		if (json_integer_value(json_object_get(d, "index")) == view.id &&
		    json_is_integer(f))
			v = json_integer_value(f);
	}
	json_decref(doc);
	return v;
}

/* Waits until name shows state (or "available" for "gone"); 0 or -1. */
static int wait_state(const char *sock, const char *name, const char *state, int timeout_ms)
{
	uint64_t end = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	do {
		json_t *doc = tdmt_status_doc(sock);
		struct tdmt_dev_view v;
		if (!doc)
			return -1;
		tdmt_device_view(doc, name, &v);
		json_decref(doc);
		if (!strcmp(v.state, state) ||
		    (!strcmp(state, "gone") && !strcmp(v.state, "available")))
			return 0;
		tdmt_sleep_ms(5);
	} while (tdmt_now_ns() < end);
	return -1;
}

static int ctl(const char *sock, uint32_t op, const char *name, json_t **reply)
{
	json_t *r = NULL;
	int rc = tdmt_device_ctl(sock, op, name, 0, &r);
	if (rc) {
		const char *text = json_string_value(json_object_get(r, "error"));
		fprintf(stderr, "bench_elastic: device op %u %s: %s\n", op, name,
		        text ? text : tdm_strerror(rc));
	}
	if (reply)
		*reply = r;
	else
		json_decref(r);
	return rc;
}

/* ---- 1. random changes under load ---- */

static int bench_stress(int events)
{
	static struct tdmt_daemon d;
	static struct tdmt_elastic e;
	char cpus[16][16], keys[256];
	const char *names[17];
	bool have_cl;
	int rc = -1;

	/* eager: every device takes tasks as soon as it asks, so buffers move
	 * between all of them and every change meets work in flight. */
	if (tdmt_daemon_start(&d, "[engine]\npolicy = \"eager\"\n"
	                          "[devices]\nfault_inject = { clcpu0 = 2 }\n"))
		return fail("tandemd did not start");
	pid_t pid = d.pid;
	int ncpu = find_devices(d.sock, cpus, 16, &have_cl);
	int n = 0;
	for (int i = 0; i < ncpu; i++)
		names[n++] = cpus[i];
	if (have_cl)
		names[n++] = "clcpu0";
	else
		printf("# no OpenCL device (clcpu0): only CPU workers change\n");
	if (n < 2) {
		printf("# elastic stress skipped: one CPU worker and no OpenCL device\n");
		tdmt_daemon_cleanup(&d);
		return 0;
	}
	memset(&e, 0, sizeof(e));
	e.sock = d.sock;
	e.chol_clients = 3;
	e.chol_tiles = 4;
	e.chol_nb = 32;
	e.llm_clients = 2;
	e.tmpdir = d.dir;
	e.graph_timeout_ms = 60000;
	if (tdmt_elastic_start(&e)) {
		tdmt_elastic_stop(&e, 5000);
		tdmt_daemon_cleanup(&d);
		return fail("clients did not start");
	}
	if (tdmt_elastic_warm(&e, 200, 30000))
		fprintf(stderr, "bench_elastic: the clients are slow to start\n");
	struct tdmt_el_events ev = { .sock = d.sock,
		                     .names = names,
		                     .nnames = n,
		                     .count = events,
		                     .pause_min_ms = 2,
		                     .pause_max_ms = 30,
		                     .seed = 0xe1a5 };
	uint64_t t0 = bench_now_ns();
	int fired = tdmt_elastic_fire_events(&ev);
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	int stopped = tdmt_elastic_stop(&e, 30000);

	/* Faults injected and hit, over every id clcpu0 had. */
	int64_t faults = 0, sessions = -1;
	json_t *doc = tdmt_status_doc(d.sock);
	size_t i;
	json_t *dv;
	char split[256] = "";
	json_array_foreach(json_object_get(doc, "devices"), i, dv)
	{
		faults += json_integer_value(json_object_get(dv, "faults"));
	}
	if (doc)
		tdmt_tasks_per_name(doc, split, sizeof(split));
	printf("# tasks run per device: %s\n", split);
	json_decref(doc);
	tdmt_counter(d.sock, "sessions_total", &sessions);
	bool same =
	        tdmt_daemon_alive(&d) && d.pid == pid && sessions == e.chol_clients + e.llm_clients;

	printf("# %u changes sent in %.1f s: %u applied (add %u, drain %u, resume %u, remove "
	       "%u), %u refused (%u for want of device ids), %u unanswered%s%s\n",
	       ev.sent, secs, ev.applied, ev.by_op[TDM_DEV_ADD], ev.by_op[TDM_DEV_DRAIN],
	       ev.by_op[TDM_DEV_RESUME], ev.by_op[TDM_DEV_REMOVE], ev.refused, ev.capacity_refusals,
	       ev.no_reply, ev.refused ? "; last refusal: " : "", ev.last_error);
	snprintf(keys, sizeof(keys),
	         "sent=%u refused=%u add=%u drain=%u resume=%u remove=%u faults=%lld "
	         "devices=%d seconds=%.1f",
	         ev.sent, ev.refused, ev.by_op[TDM_DEV_ADD], ev.by_op[TDM_DEV_DRAIN],
	         ev.by_op[TDM_DEV_RESUME], ev.by_op[TDM_DEV_REMOVE], (long long)faults, n, secs);
	bench_report("elastic_events", ev.applied, "events", keys);
	snprintf(keys, sizeof(keys), "events=%d graphs_lost=%llu restarted=%d", events,
	         (unsigned long long)e.n.graphs_lost, !same);
	bench_report("elastic_tasks_lost", (double)e.n.tasks_lost, "tasks", keys);
	snprintf(keys, sizeof(keys), "events=%d graphs_ok=%llu cholesky_tasks=%llu", events,
	         (unsigned long long)e.n.graphs_ok, (unsigned long long)e.n.tasks_done);
	bench_report("elastic_wrong_results", (double)e.n.graphs_wrong, "graphs", keys);
	if (!same)
		fprintf(stderr,
		        "bench_elastic: the daemon or a client was restarted (sessions %lld)\n",
		        (long long)sessions);
	if (fired || stopped || !same)
		d.failed = true;
	else
		rc = 0;
	tdmt_daemon_cleanup(&d);
	return rc;
}

/* ---- 2. the first task on an added device, throughput around changes ---- */

struct dip {
	/* Per change: during over the lower of the steady rates before and
	 * after (the rescale against the slower of the two configurations it
	 * goes between: after a drain the machine is smaller, and a rate below
	 * the old one is the new steady state, not a dip); and during / before. */
	double ratio[ROUNDS], over_before[ROUNDS];
	double before, during, after; /* graphs/s, summed over the changes */
	int n;
};

static double rate(struct tdmt_elastic *e, uint64_t t0, uint64_t t1)
{
	return tdmt_elastic_done_between(e, t0, t1) / ((double)(t1 - t0) / 1e9);
}

/* The rates in the STEADY_MS before t, the WINDOW_MS from t, and the
 * STEADY_MS after that (the new steady state: lower after a drain, as a
 * device's share of the work went elsewhere). */
static void dip_note(struct dip *d, struct tdmt_elastic *e, uint64_t t)
{
	const uint64_t w = WINDOW_MS * 1000000ull, st = STEADY_MS * 1000000ull;
	double before = rate(e, t - st, t), during = rate(e, t, t + w),
	       after = rate(e, t + w, t + w + st);
	if (before <= 0 || d->n >= ROUNDS)
		return;
	double steady = after > 0 && after < before ? after : before;
	d->over_before[d->n] = during / before;
	d->ratio[d->n++] = during / steady;
	d->before += before;
	d->during += during;
	d->after += after;
}

/* The median change (the machine is shared: one change's window says
 * little), with the worst and the mean rates in the keys. */
static void dip_report(struct dip *d, const char *event, const char *name, const char *policy)
{
	char keys[256];
	if (!d->n) {
		printf("# elastic_throughput_dip event=%s device=%s policy=%s: no steady rate "
		       "measured\n",
		       event, name, policy);
		return;
	}
	double med = bench_median(d->ratio, (size_t)d->n);
	double med_before = bench_median(d->over_before, (size_t)d->n);
	snprintf(keys, sizeof(keys),
	         "event=%s device=%s policy=%s window_ms=%d changes=%d worst=%.2f "
	         "over_before=%.3f mean_steady_graphs_per_s=%.0f during=%.0f after=%.0f",
	         event, name, policy, WINDOW_MS, d->n, d->ratio[0], med_before, d->before / d->n,
	         d->during / d->n, d->after / d->n);
	bench_report("elastic_throughput_dip", med, "ratio", keys);
}

/* ROUNDS times: remove name, a steady second, add it (first task, dip),
 * the window and a steady second, drain it (dip), the window and a steady
 * second, resume it. */
static int rescale_rounds(struct tdmt_elastic *e, const char *sock, const char *name,
                          const char *policy)
{
	double first_ms[ROUNDS];
	int nfirst = 0;
	struct dip add = { 0 }, drain = { 0 };
	char keys[160];

	for (int r = 0; r < ROUNDS; r++) {
		json_t *reply = NULL;
		if (ctl(sock, TDM_DEV_REMOVE, name, NULL) || wait_state(sock, name, "gone", 10000))
			return fail("remove did not finish");
		tdmt_sleep_ms(STEADY_MS);
		uint64_t t = bench_now_ns();
		/* Watched before the add (the next id is the number of ids
		 * given), so that no task there is counted before the watch. */
		json_t *doc = tdmt_status_doc(sock);
		if (!doc)
			return fail("no status");
		unsigned next = (unsigned)json_array_size(json_object_get(doc, "devices"));
		json_decref(doc);
		tdmt_elastic_watch(e, next, t);
		if (ctl(sock, TDM_DEV_ADD, name, &reply))
			return -1;
		json_t *id = json_object_get(json_object_get(reply, "device"), "id");
		if (json_is_integer(id) && json_integer_value(id) != next)
			tdmt_elastic_watch(e, (unsigned)json_integer_value(id), t);
		tdmt_sleep_ms(WINDOW_MS + STEADY_MS);
		dip_note(&add, e, t);
		for (int w = 0; json_is_integer(id) && w < FIRST_TASK_WAIT_MS; w += 5) {
			uint64_t f = atomic_load(&e->first_start[json_integer_value(id)]);
			if (f) {
				first_ms[nfirst++] = (double)(f - t) / 1e6;
				break;
			}
			tdmt_sleep_ms(5);
		}
		json_decref(reply);

		t = bench_now_ns();
		if (ctl(sock, TDM_DEV_DRAIN, name, NULL))
			return -1;
		tdmt_sleep_ms(WINDOW_MS + STEADY_MS);
		dip_note(&drain, e, t);
		if (ctl(sock, TDM_DEV_RESUME, name, NULL))
			return -1;
	}
	if (nfirst) {
		double worst = 0;
		for (int i = 0; i < nfirst; i++)
			worst = fmax(worst, first_ms[i]);
		snprintf(keys, sizeof(keys), "device=%s policy=%s adds=%d with_task=%d max=%.2f",
		         name, policy, ROUNDS, nfirst, worst);
		bench_report("elastic_first_task_ms", bench_median(first_ms, (size_t)nfirst), "ms",
		             keys);
	} else {
		printf("# elastic_first_task_ms device=%s policy=%s: no task ran there within %d "
		       "ms "
		       "of any of %d adds (the policy kept it idle)\n",
		       name, policy, FIRST_TASK_WAIT_MS, ROUNDS);
	}
	dip_report(&add, "add", name, policy);
	dip_report(&drain, "drain", name, policy);
	return 0;
}

/* Under dmda (the default) a new device gets what it is predicted to
 * finish first, which on a small machine may be nothing of these tiles for
 * clcpu0; under eager it takes tasks as soon as it asks. */
static int bench_rescale(const char *policy)
{
	static struct tdmt_daemon d;
	static struct tdmt_elastic e;
	char cpus[16][16], toml[64];
	bool have_cl;
	int rc = 0;

	snprintf(toml, sizeof(toml), "[engine]\npolicy = \"%s\"\n", policy);
	if (tdmt_daemon_start(&d, toml))
		return fail("tandemd did not start");
	int ncpu = find_devices(d.sock, cpus, 16, &have_cl);
	memset(&e, 0, sizeof(e));
	e.sock = d.sock;
	e.chol_clients = 2;
	e.chol_tiles = 4;
	e.chol_nb = 64;
	e.tmpdir = d.dir;
	e.graph_timeout_ms = 60000;
	if (tdmt_elastic_start(&e)) {
		tdmt_elastic_stop(&e, 5000);
		tdmt_daemon_cleanup(&d);
		return fail("clients did not start");
	}
	tdmt_sleep_ms(STEADY_MS);
	if (ncpu >= 2)
		rc |= rescale_rounds(&e, d.sock, cpus[ncpu - 1], policy);
	else
		printf("# one CPU worker: no CPU worker can be removed and added\n");
	if (have_cl)
		rc |= rescale_rounds(&e, d.sock, "clcpu0", policy);
	else
		printf("# no OpenCL device (clcpu0): its first task and dip not measured\n");
	tdmt_elastic_stop(&e, 30000);
	if (e.n.graphs_lost || e.n.graphs_wrong) {
		fprintf(stderr, "bench_elastic: rescale rounds: %llu graphs lost, %llu wrong\n",
		        (unsigned long long)e.n.graphs_lost, (unsigned long long)e.n.graphs_wrong);
		rc = -1;
	}
	if (rc)
		d.failed = true;
	tdmt_daemon_cleanup(&d);
	return rc;
}

/* ---- 3. bytes moved when a device owning data leaves ---- */

/* Bytes of the buffers whose only valid copy is on name (status clients[].replicas[].valid
 * "name*", whole). */
static int64_t sole_bytes(const char *sock, const char *name)
{
	json_t *doc = tdmt_status_doc(sock);
	char want[40];
	int64_t sum = 0;
	size_t i, j;
	json_t *c, *b;

	if (!doc)
		return -1;
	snprintf(want, sizeof(want), "%s*", name);
	json_array_foreach(json_object_get(doc, "clients"), i, c)
	{
		json_array_foreach(json_object_get(c, "replicas"), j, b)
		{
			const char *v = json_string_value(json_object_get(b, "valid"));
			if (v && !strcmp(v, want))
				sum += json_integer_value(json_object_get(b, "bytes"));
		}
	}
	json_decref(doc);
	return sum;
}

static int bench_bytes(void)
{
	enum { NBUF = 16, N = 65536 };
	static struct tdmt_daemon d;
	char cpus[16][16], keys[160];
	bool have_cl;
	int rc = -1;

	if (tdmt_daemon_start(&d, ""))
		return fail("tandemd did not start");
	int ncpu = find_devices(d.sock, cpus, 16, &have_cl);
	if (!have_cl || ncpu < 1) {
		printf("# no OpenCL device (clcpu0): elastic_bytes_over_min not measured\n");
		tdmt_daemon_cleanup(&d);
		return 0;
	}
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer b[NBUF];
	float *p[NBUF];
	uint32_t fills[NBUF], spin;
	tdm_graph *g = NULL;
	if (tdmt_connect(d.sock, &c) || tdmt_lookup_kernels(c, &k))
		goto out;
	for (int i = 0; i < NBUF; i++)
		if (tdm_buffer_alloc(c, N * 4, TDM_BUF_KV, &b[i], (void **)&p[i]))
			goto out_client;
	/* Only clcpu0 takes tasks: the fills run there and it owns their
	 * results while the spin after them waits for a CPU worker. */
	for (int i = 0; i < ncpu; i++)
		if (ctl(d.sock, TDM_DEV_DRAIN, cpus[i], NULL))
			goto out_client;
	g = tdm_graph_new(c);
	for (int i = 0; i < NBUF; i++)
		if (!g || tdmt_add_fill(g, &k, b[i], 0, 0, (float)(i + 1), &fills[i]))
			goto out_client;
	if (tdmt_add_spin(g, &k, 300000, &spin))
		goto out_client;
	for (int i = 0; i < NBUF; i++)
		tdm_graph_add_edge(g, fills[i], spin);
	if (tdm_graph_submit(g))
		goto out_client;
	int64_t min = 0;
	for (int w = 0; w < 10000 && min < (int64_t)NBUF * N * 4; w += 10) {
		tdmt_sleep_ms(10);
		min = sole_bytes(d.sock, "clcpu0");
	}
	int64_t before = device_num(d.sock, "clcpu0", "bytes_d2h");
	/* A CPU worker back for the spin, then clcpu0 leaves. */
	if (ctl(d.sock, TDM_DEV_RESUME, cpus[0], NULL) ||
	    ctl(d.sock, TDM_DEV_REMOVE, "clcpu0", NULL))
		goto out_client;
	int64_t after = device_num(d.sock, "clcpu0", "bytes_d2h");
	/* What the evacuation itself counted, where the status shows it:
	 * written back, and moved device to device. */
	int64_t evac = device_num(d.sock, "clcpu0", "evacuated_bytes");
	int64_t peer = device_num(d.sock, "clcpu0", "peer_bytes");
	if (tdm_wait(g, 60 * 1000000000ll)) {
		fail("the graph failed after clcpu0 left");
		goto out_client;
	}
	for (int i = 0; i < NBUF; i++)
		for (int j = 0; j < N; j++)
			if (p[i][j] != (float)(i + 1)) {
				fprintf(stderr,
				        "bench_elastic: buffer %d element %d is %g, not %d\n", i, j,
				        p[i][j], i + 1);
				goto out_client;
			}
	if (min <= 0) {
		printf("# elastic_bytes_over_min not measured: no buffer had its only copy on "
		       "clcpu0 when it left\n");
	} else {
		bool counted = evac >= 0;
		int64_t moved = counted ? evac + (peer > 0 ? peer : 0) : after - before;
		snprintf(keys, sizeof(keys), "moved=%lld min=%lld buffers=%d source=%s",
		         (long long)moved, (long long)min, NBUF,
		         counted ? "evacuated_bytes+peer_bytes" : "bytes_d2h");
		bench_report("elastic_bytes_over_min", (double)moved / (double)min, "ratio", keys);
	}
	rc = 0;
out_client:
	if (g)
		tdm_graph_free(g);
	tdm_disconnect(c);
out:
	if (rc)
		d.failed = true;
	tdmt_daemon_cleanup(&d);
	return rc;
}

/* ---- 4. a device joins live or by a restart: the first decode step ---- */

#define MAX_LINES 200000

/* An llm_layer --reconnect client whose output lines are timed. */
struct llm_run {
	pid_t pid;
	int in_fd;
	FILE *out;
	pthread_t reader;
	pthread_mutex_t mu;
	uint64_t *step_ns;
	unsigned nsteps;
	uint64_t reconnect_ns; /* the latest "reconnected" line */
};

static void *llm_reader(void *arg)
{
	struct llm_run *r = arg;
	char line[512];
	while (fgets(line, sizeof(line), r->out)) {
		uint64_t t = bench_now_ns();
		pthread_mutex_lock(&r->mu);
		if (!strncmp(line, "step ", 5) && r->nsteps < MAX_LINES)
			r->step_ns[r->nsteps++] = t;
		else if (!strncmp(line, "reconnected", 11))
			r->reconnect_ns = t;
		pthread_mutex_unlock(&r->mu);
	}
	return NULL;
}

static int llm_start(struct llm_run *r, const char *sock)
{
	char exe[512];
	int in[2], out[2];

	snprintf(exe, sizeof(exe), "%s/bin/llm_layer", tdmt_build_dir());
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return -1;
	r->step_ns = calloc(MAX_LINES, sizeof(*r->step_ns));
	pthread_mutex_init(&r->mu, NULL);
	pid_t parent = getpid();
	fflush(NULL);
	r->pid = fork();
	if (r->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
			_exit(127);
		execl(exe, exe, "--socket", sock, "--reconnect", "--stop-on-eof", "--steps",
		      "65000", "--kv-cap", "65536", NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	r->in_fd = in[1];
	r->out = fdopen(out[0], "r");
	if (r->pid < 0 || !r->out || !r->step_ns)
		return -1;
	return pthread_create(&r->reader, NULL, llm_reader, r) ? -1 : 0;
}

static int llm_stop(struct llm_run *r)
{
	close(r->in_fd);
	int st = tdmt_wait_child(r->pid, 30000);
	pthread_join(r->reader, NULL);
	fclose(r->out);
	free(r->step_ns);
	return st;
}

/* The first step line after t (and after a reconnect at or after t when
 * reconnected), waiting up to 60 s; 0 when none came. */
static uint64_t llm_step_after(struct llm_run *r, uint64_t t, bool reconnected)
{
	for (int w = 0; w < 60000; w++) {
		uint64_t found = 0;
		pthread_mutex_lock(&r->mu);
		uint64_t from = reconnected ? r->reconnect_ns : t;
		if (from >= t)
			for (unsigned i = r->nsteps; i-- > 0 && r->step_ns[i] > from;)
				found = r->step_ns[i];
		pthread_mutex_unlock(&r->mu);
		if (found)
			return found;
		tdmt_sleep_ms(1);
	}
	return 0;
}

static const char no_cl_toml[] = "[devices]\nexclude = [\"clcpu0\"]\n";

static int bench_restart(void)
{
	static struct tdmt_daemon d;
	double live[ROUNDS], restart[ROUNDS], reply_ms[ROUNDS];
	struct llm_run r = { 0 };
	char cpus[16][16], keys[256];
	bool have_cl;
	int rc = -1;

	if (tdmt_daemon_start(&d, no_cl_toml))
		return fail("tandemd did not start");
	find_devices(d.sock, cpus, 16, &have_cl);
	if (!have_cl) {
		printf("# no OpenCL device (clcpu0): live add against restart not measured\n");
		tdmt_daemon_cleanup(&d);
		return 0;
	}
	if (llm_start(&r, d.sock))
		goto out;
	if (!llm_step_after(&r, 0, false))
		goto out_llm;
	tdmt_sleep_ms(200);
	/* The restart first: it needs nothing of issue 18. */
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t t0 = bench_now_ns();
		tdmt_daemon_stop(&d, 30000);
		if (tdmt_daemon_write_config(&d, "") || tdmt_daemon_launch(&d, d.sock, 30000)) {
			fail("tandemd did not start again");
			goto out_llm;
		}
		uint64_t f = llm_step_after(&r, t0, true);
		if (!f)
			goto out_llm;
		restart[i] = (double)(f - t0) / 1e6;
		/* Back to the configuration without clcpu0, untimed. */
		tdmt_sleep_ms(200);
		tdmt_daemon_stop(&d, 30000);
		if (tdmt_daemon_write_config(&d, no_cl_toml) ||
		    tdmt_daemon_launch(&d, d.sock, 30000))
			goto out_llm;
		uint64_t t2 = bench_now_ns();
		if (!llm_step_after(&r, t2, true))
			goto out_llm;
		tdmt_sleep_ms(200);
	}
	double restart_ms = bench_median(restart, ROUNDS);
	snprintf(keys, sizeof(keys), "device=clcpu0 rounds=%d min=%.2f max=%.2f", ROUNDS,
	         restart[0], restart[ROUNDS - 1]);
	bench_report("elastic_restart_ms", restart_ms, "ms", keys);
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t t0 = bench_now_ns();
		if (ctl(d.sock, TDM_DEV_ADD, "clcpu0", NULL))
			goto out_llm;
		uint64_t t1 = bench_now_ns();
		uint64_t f = llm_step_after(&r, t1, false);
		if (!f)
			goto out_llm;
		live[i] = (double)(f - t0) / 1e6;
		reply_ms[i] = (double)(t1 - t0) / 1e6;
		tdmt_sleep_ms(200);
		if (ctl(d.sock, TDM_DEV_REMOVE, "clcpu0", NULL) ||
		    wait_state(d.sock, "clcpu0", "gone", 10000))
			goto out_llm;
		tdmt_sleep_ms(200);
	}
	double live_ms = bench_median(live, ROUNDS), reply_med = bench_median(reply_ms, ROUNDS);
	snprintf(keys, sizeof(keys),
	         "device=clcpu0 rounds=%d min=%.2f max=%.2f add_reply_ms=%.2f add_reply_max=%.2f",
	         ROUNDS, live[0], live[ROUNDS - 1], reply_med, reply_ms[ROUNDS - 1]);
	bench_report("elastic_live_add_ms", live_ms, "ms", keys);
	bench_report("elastic_restart_over_live", restart_ms / live_ms, "ratio", "device=clcpu0");
	rc = 0;
out_llm:
	if (llm_stop(&r) != 0) {
		fprintf(stderr, "bench_elastic: the llm_layer client failed\n");
		rc = -1;
	}
out:
	if (rc)
		d.failed = true;
	tdmt_daemon_cleanup(&d);
	return rc;
}

int main(int argc, char **argv)
{
	int events = 1000;
	const char *parts = argc > 2 ? argv[2] : "stress,rescale,bytes,restart";
	if (argc > 1)
		events = atoi(argv[1]);
	if (events < 1 || events > 1000000 || argc > 3) {
		fprintf(stderr, "usage: bench_elastic [EVENTS [PART,...]]\n"
		                "parts: stress, rescale, bytes, restart (default: all)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int rc = 0;
	if (strstr(parts, "stress"))
		rc |= bench_stress(events);
	if (strstr(parts, "rescale")) {
		rc |= bench_rescale("dmda");
		rc |= bench_rescale("eager");
	}
	if (strstr(parts, "bytes"))
		rc |= bench_bytes();
	if (strstr(parts, "restart"))
		rc |= bench_restart();
	return rc ? 1 : 0;
}
