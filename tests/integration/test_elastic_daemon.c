/* Devices joining and leaving a running daemon (docs/elastic.md), through
 * the control messages tandemctl sends, while a client runs graphs whose
 * every result it checks:
 *  - a core is drained, removed (gone: it runs nothing more) and added back
 *    (its old id again); no graph is lost or wrong;
 *  - a core that faults past devices.fault_limit leaves (gone, a fault
 *    event) with its tasks moved, and added back it faults again as
 *    fault_inject says (an added device is injected too);
 *  - the PoCL device (found, left out by [devices]) is added (a model never
 *    calibrated: measured first, the others running), made the only device
 *    taking tasks, then removed with the client's data on it; skipped with
 *    a message when there is no OpenCL device;
 *  - SIGHUP with a changed [devices] removes and adds to match;
 *  - refusals: not an administrator, unknown device, wrong state, the last
 *    device, malformed requests, each with its reason word;
 *  - a client's weight changed while it runs moves its share of the device.
 *
 * Which device runs which task is the policy's business: the tests assert
 * what holds for any placement (results, states, a gone device running
 * nothing), and force placement only by draining the others. */
#include <jansson.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>

#include <cmocka.h>

#include "support.h"
#include "support_raw.h"
#include "tandem/wire.h"

#define MS 1000000ll
#define NOBODY 65534
#define OK(x) assert_int_equal((x), 0)

static struct tdmt_daemon d;

static int test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&d, 10000);
}

/* ---- control requests ---------------------------------------------------- */

/* One request on its own connection: the reply's status, its document in
 * *doc (may be NULL; json_decref it). -1000 when the exchange failed. */
static int ctl(uint32_t type, const void *req, uint32_t len, json_t **doc)
{
	struct tdmt_raw r;
	char *text = NULL;
	if (doc)
		*doc = NULL;
	if (tdmt_raw_connect(&r, d.sock, TDM_ROLE_CONTROL, 30000) != 0)
		return -1000;
	int st = tdmt_raw_control_ex(r.sock, type, req, len, NULL, 0, &text);
	tdmt_raw_close(&r);
	if (doc && text)
		*doc = json_loads(text, 0, NULL);
	free(text);
	return st;
}

static int device_op(uint32_t op, const char *name, uint64_t value, json_t **doc)
{
	struct tdm_ctl_device req;
	memset(&req, 0, sizeof(req));
	req.op = op;
	snprintf(req.name, sizeof(req.name), "%s", name);
	req.value = value;
	return ctl(TDM_MSG_CTL_DEVICE, &req, sizeof(req), doc);
}

/* A request that must be refused with this status and reason. */
static void expect_refusal(int st, json_t *doc, int want_st, const char *reason)
{
	const char *got = json_string_value(json_object_get(doc, "reason"));
	if (st != want_st || !got || strcmp(got, reason))
		fail_msg("expected %d/%s, got %d/%s (%s)", want_st, reason, st, got ? got : "-",
		         json_string_value(json_object_get(doc, "error")));
	json_decref(doc);
}

/* A request that must succeed; returns the reply's "device" id. */
static int expect_device(int st, json_t *doc, const char *state)
{
	if (st != 0)
		fail_msg("refused (%d): %s", st, json_string_value(json_object_get(doc, "error")));
	json_t *dev = json_object_get(doc, "device");
	const char *s = json_string_value(json_object_get(dev, "state"));
	assert_non_null(s);
	assert_string_equal(s, state);
	int id = (int)json_integer_value(json_object_get(dev, "id"));
	json_decref(doc);
	return id;
}

/* A device request that must succeed and leave the device in state. */
static int dev_ok(uint32_t op, const char *name, uint64_t value, const char *state)
{
	json_t *doc;
	int st = device_op(op, name, value, &doc);
	return expect_device(st, doc, state);
}

/* ---- the status document --------------------------------------------------- */

static json_t *status(void)
{
	json_t *doc = tdmt_status_doc(d.sock);
	assert_non_null(doc);
	return doc;
}

/* The entry of device id, a new reference. */
static json_t *device_by_id(int id)
{
	json_t *doc = status();
	json_t *dev = json_array_get(json_object_get(doc, "devices"), (size_t)id);
	assert_non_null(dev);
	assert_int_equal(json_integer_value(json_object_get(dev, "id")), id);
	json_incref(dev);
	json_decref(doc);
	return dev;
}

static int64_t device_field(int id, const char *key)
{
	json_t *dev = device_by_id(id);
	int64_t v = json_integer_value(json_object_get(dev, key));
	json_decref(dev);
	return v;
}

static bool state_is(int id, const char *state)
{
	json_t *dev = device_by_id(id);
	bool is = !strcmp(json_string_value(json_object_get(dev, "state")), state);
	json_decref(dev);
	return is;
}

static void assert_state(int id, const char *state)
{
	json_t *dev = device_by_id(id);
	assert_string_equal(json_string_value(json_object_get(dev, "state")), state);
	json_decref(dev);
}

/* Whether a device of this name is listed as available. */
static bool available(const char *name)
{
	json_t *doc = status();
	size_t i;
	json_t *a;
	bool found = false;
	json_array_foreach(json_object_get(doc, "available"), i, a) found |=
	        !strcmp(json_string_value(json_object_get(a, "name")), name);
	json_decref(doc);
	return found;
}

/* The newest id with this name, or -1. */
static int newest_id(const char *name)
{
	json_t *doc = status();
	size_t i;
	json_t *dev;
	int id = -1;
	json_array_foreach(json_object_get(doc, "devices"), i, dev)
	{
		if (!strcmp(json_string_value(json_object_get(dev, "name")), name))
			id = (int)i;
	}
	json_decref(doc);
	return id;
}

/* cpu1's id in the daemon just started; the test is skipped (the daemon
 * stopped by the teardown) on a machine of one core. */
static int cpu1_or_skip(void)
{
	int cpu1 = newest_id("cpu1");
	if (cpu1 < 0) {
		printf("# skipped: one core only (no cpu1)\n");
		tdmt_test_ok();
		skip();
	}
	return cpu1;
}

static int device_count(void)
{
	json_t *doc = status();
	int n = (int)json_array_size(json_object_get(doc, "devices"));
	json_decref(doc);
	return n;
}

/* Waits until device id ran more than `than` tasks; 0 or -1 on timeout. */
static int wait_tasks_run(int id, int64_t than, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		if (device_field(id, "tasks_run") > than)
			return 0;
		tdmt_sleep_ms(20);
	}
	return -1;
}

static int64_t client_graphs(pid_t pid)
{
	int64_t v = 0;
	assert_int_equal(tdmt_client_field(d.sock, pid, "graphs_done", &v), 0);
	return v;
}

/* Waits for the client to complete `more` graphs beyond what it has now. */
static void wait_more_graphs(pid_t pid, int64_t more)
{
	int64_t start = client_graphs(pid);
	for (int t = 0; t < 60000; t += 20) {
		if (client_graphs(pid) >= start + more)
			return;
		tdmt_sleep_ms(20);
	}
	fail_msg("the client completed no %lld more graphs in 60 s", (long long)more);
}

/* ---- a client that checks every result ------------------------------------- */

enum {
	CHILD_OK = 0,
	CHILD_CONNECT = 10,
	CHILD_SETUP,
	CHILD_SUBMIT,
	CHILD_WAIT,
	CHILD_WRONG,
	CHILD_TASK,
};

/* Four independent chains (fill x_j, y_j += 2 x_j) and a small sgemm per
 * graph, round after round until the stop pipe closes: y_j grows by
 * 2 (j + 1) each round, C = A B with new A each round. Every task must
 * succeed and report a device id. */
static int load_child(int stop_fd)
{
	enum { N = 4096, CH = 4, M = 12, K = 8, P = 10 };
	struct tdmt_kernels k;
	tdm_client *c;
	tdm_buffer hx[CH], hy[CH], ha, hb, hc;
	float *x[CH], *y[CH], *a, *b, *cm;
	if (tdmt_connect(d.sock, &c) != 0)
		return CHILD_CONNECT;
	if (tdmt_lookup_kernels(c, &k))
		return CHILD_SETUP;
	for (int j = 0; j < CH; j++)
		if (tdm_buffer_alloc(c, N * sizeof(float), 0, &hx[j], (void **)&x[j]) ||
		    tdm_buffer_alloc(c, N * sizeof(float), 0, &hy[j], (void **)&y[j]))
			return CHILD_SETUP;
	if (tdm_buffer_alloc(c, M * K * sizeof(float), 0, &ha, (void **)&a) ||
	    tdm_buffer_alloc(c, K * P * sizeof(float), 0, &hb, (void **)&b) ||
	    tdm_buffer_alloc(c, M * P * sizeof(float), 0, &hc, (void **)&cm))
		return CHILD_SETUP;
	uint64_t seed = 7;
	for (int i = 0; i < K * P; i++)
		b[i] = (float)tdmt_rand_range(&seed, 0, 8) - 4.0f;
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return CHILD_SETUP;
	tdm_graph_want_task_info(g, 1);
	for (int j = 0; j < CH; j++)
		if (tdmt_add_fill(g, &k, hx[j], 0, 0, (float)(j + 1), NULL) ||
		    tdmt_add_axpy(g, &k, hx[j], hy[j], 2.0f, NULL))
			return CHILD_SETUP;
	if (tdmt_add_sgemm(g, &k, ha, hb, hc, M, P, K, 1.0f, 0.0f, NULL))
		return CHILD_SETUP;
	for (int r = 1;; r++) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
		for (int i = 0; i < M * K; i++)
			a[i] = (float)tdmt_rand_range(&seed, 0, 8) - 4.0f;
		if (tdm_graph_submit(g))
			return CHILD_SUBMIT;
		int st = tdm_wait(g, 60000 * MS);
		if (st) {
			fprintf(stderr, "graph %d: %s\n", r, tdm_strerror(st));
			return CHILD_WAIT;
		}
		for (uint32_t t = 0; t < tdm_graph_task_count(g); t++) {
			const struct tdm_task_info *ti = tdm_graph_task_info(g, t);
			if (!ti || ti->status != 0 || ti->device >= 64)
				return CHILD_TASK;
		}
		for (int j = 0; j < CH; j++)
			for (int i = 0; i < N; i++)
				if (x[j][i] != (float)(j + 1) ||
				    y[j][i] != 2.0f * (float)((j + 1) * r)) {
					fprintf(stderr, "round %d: chain %d wrong at %d: %g\n", r,
					        j, i, (double)y[j][i]);
					return CHILD_WRONG;
				}
		for (int i = 0; i < M; i++)
			for (int j = 0; j < P; j++) {
				float s = 0;
				for (int q = 0; q < K; q++)
					s += a[i * K + q] * b[q * P + j];
				if (cm[i * P + j] != s) {
					fprintf(stderr, "round %d: sgemm wrong\n", r);
					return CHILD_WRONG;
				}
			}
	}
	tdm_graph_free(g);
	tdm_disconnect(c);
	return CHILD_OK;
}

static pid_t start_load(int *stop)
{
	pid_t pid = tdmt_fork_stoppable(load_child, stop);
	assert_true(pid > 0);
	int64_t got = -1;
	for (int i = 0; i < 1000 && tdmt_client_field(d.sock, pid, "graphs_done", &got) != 0; i++)
		tdmt_sleep_ms(10);
	assert_true(got >= 0);
	return pid;
}

static void stop_load(pid_t pid, int stop)
{
	int st = tdmt_stop_child(pid, stop, 60000);
	if (st != CHILD_OK)
		fail_msg("the client ended with %d (10 connect, 11 setup, 12 submit, 13 wait, "
		         "14 a wrong result, 15 a failed task)",
		         st);
	int64_t failed = -1;
	assert_int_equal(tdmt_counter(d.sock, "tasks_failed", &failed), 0);
	assert_int_equal(failed, 0);
}

/* ---- cores ------------------------------------------------------------------- */

#define CORES_TOML "[profiler]\ncalibrate = false\n[devices]\ninclude = [\"cpu\"]\n"

/* cpu1 drained (no longer ACTIVE), removed (gone: it runs nothing more
 * whatever the client does), added back (its old id, which runs tasks
 * again; no new id), with the client's every result right throughout. */
static void test_core_drain_remove_add(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, CORES_TOML));
	int cpu1 = cpu1_or_skip();
	int n0 = device_count();
	int stop;
	pid_t pid = start_load(&stop);
	wait_more_graphs(pid, 5);

	assert_int_equal(dev_ok(TDM_DEV_DRAIN, "cpu1", 0, "draining"), cpu1);
	assert_state(cpu1, "draining");
	wait_more_graphs(pid, 5);

	json_t *doc;
	int st = device_op(TDM_DEV_REMOVE, "cpu1", 0, &doc);
	bool timed_out = json_is_true(json_object_get(doc, "timed_out"));
	assert_int_equal(expect_device(st, doc, "gone"), cpu1);
	assert_state(cpu1, "gone");
	printf("# cpu1 removed%s\n", timed_out ? " after the timeout" : " once idle");
	fflush(stdout);
	/* A gone id runs nothing more. */
	int64_t ran = device_field(cpu1, "tasks_run");
	wait_more_graphs(pid, 10);
	assert_int_equal(device_field(cpu1, "tasks_run"), ran);

	/* Back, under its old id, while the client runs. */
	for (int i = 0; i < 500 && !available("cpu1"); i++)
		tdmt_sleep_ms(10);
	assert_true(available("cpu1"));
	int again = dev_ok(TDM_DEV_ADD, "cpu1", 0, "active");
	assert_int_equal(again, cpu1);
	assert_int_equal(device_count(), n0);
	assert_state(cpu1, "active");
	assert_false(available("cpu1"));
	/* Made the only device taking tasks, it must run them. */
	assert_int_equal(dev_ok(TDM_DEV_DRAIN, "cpu0", 0, "draining"), newest_id("cpu0"));
	OK(wait_tasks_run(again, ran, 60000));
	assert_int_equal(dev_ok(TDM_DEV_RESUME, "cpu0", 0, "active"), newest_id("cpu0"));
	wait_more_graphs(pid, 5);
	stop_load(pid, stop);

	/* What tandemctl shows. */
	char cmd[512], out[8192];
	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl -s %s devices", tdmt_build_dir(), d.sock);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	assert_int_equal(pclose(f), 0);
	assert_non_null(strstr(out, "STATE"));
	assert_non_null(strstr(out, "cpu1"));
	assert_non_null(strstr(out, "active"));
	tdmt_test_ok();
}

static int64_t fault_events(void)
{
	json_t *doc = status();
	json_t *ev = json_object_get(json_object_get(doc, "counters"), "device_events");
	int64_t n = json_integer_value(json_object_get(ev, "fault"));
	json_decref(doc);
	return n;
}

/* Waits until device id is gone; whether it is. */
static bool wait_gone(int id, int timeout_ms)
{
	for (int t = 0; t < timeout_ms; t += 20) {
		if (state_is(id, "gone"))
			return true;
		tdmt_sleep_ms(20);
	}
	return false;
}

/* cpu1 fails its first two launches as device faults (fault_inject) with
 * fault_limit 1. cpu0 drained, cpu1 is the only device taking tasks: its
 * first fault marks it unhealthy and the task runs again there (no other
 * device may take it now, cpu0 may later), its second is over the limit:
 * cpu1 leaves (gone, a fault event) and its tasks wait for cpu0, resumed.
 * Added back, it takes its old id and, as fault_inject says for it, fails
 * again the same way: the injection reaches a device added at run time.
 * No graph is lost or wrong, no task failed. */
static void test_fault_makes_device_gone(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, CORES_TOML "fault_limit = 1\nfault_inject = { cpu1 = 2 }\n"
	                                    "[engine]\npolicy = \"eager\"\n"));
	int cpu0 = newest_id("cpu0"), cpu1 = cpu1_or_skip();
	int n0 = device_count();
	assert_int_equal(dev_ok(TDM_DEV_DRAIN, "cpu0", 0, "draining"), cpu0);
	int stop;
	pid_t pid = start_load(&stop);
	for (int round = 1; round <= 2; round++) {
		if (!wait_gone(cpu1, 60000))
			fail_msg("round %d: cpu1 did not leave after its faults", round);
		assert_int_equal(device_field(cpu1, "faults"), 2);
		for (int i = 0; i < 500 && fault_events() < round; i++)
			tdmt_sleep_ms(10);
		assert_int_equal(fault_events(), round);
		/* Its tasks waited for cpu0. */
		assert_int_equal(dev_ok(TDM_DEV_RESUME, "cpu0", 0, "active"), cpu0);
		wait_more_graphs(pid, 3);
		for (int i = 0; i < 500 && !available("cpu1"); i++)
			tdmt_sleep_ms(10);
		assert_true(available("cpu1"));
		if (round == 2)
			break;
		/* Back under its old id, the injection again; only it takes tasks. */
		assert_int_equal(dev_ok(TDM_DEV_ADD, "cpu1", 0, "active"), cpu1);
		assert_int_equal(device_count(), n0);
		/* (Its fault count starts again: 2 when it is gone again, not 4.
		 * It may fault at once, its task moving to cpu0 meanwhile.) */
		assert_int_equal(dev_ok(TDM_DEV_DRAIN, "cpu0", 0, "draining"), cpu0);
	}
	stop_load(pid, stop);
	tdmt_test_ok();
}

/* Every policy follows a core that leaves and comes back while the client
 * runs: no graph lost, none wrong (the child checks every result), and the
 * core back takes tasks again once it is the only one left to. */
static void test_core_churn_every_policy(void **state)
{
	static const char *const policies[] = {
		"eager", "ws", "fifo", "heft", "peft", "prio", "llm"
	};
	(void)state;
	for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
		char toml[256];
		snprintf(toml, sizeof(toml), CORES_TOML "[engine]\npolicy = \"%s\"\n", policies[p]);
		OK(tdmt_daemon_start(&d, toml));
		cpu1_or_skip();
		int stop;
		pid_t pid = start_load(&stop);
		wait_more_graphs(pid, 3);
		dev_ok(TDM_DEV_DRAIN, "cpu1", 0, "draining");
		wait_more_graphs(pid, 3);
		dev_ok(TDM_DEV_REMOVE, "cpu1", 0, "gone");
		wait_more_graphs(pid, 3);
		for (int i = 0; i < 500 && !available("cpu1"); i++)
			tdmt_sleep_ms(10);
		int again = dev_ok(TDM_DEV_ADD, "cpu1", 0, "active");
		dev_ok(TDM_DEV_DRAIN, "cpu0", 0, "draining");
		OK(wait_tasks_run(again, 0, 60000));
		dev_ok(TDM_DEV_RESUME, "cpu0", 0, "active");
		wait_more_graphs(pid, 3);
		stop_load(pid, stop);
		printf("# %s: followed cpu1 out and back\n", policies[p]);
		fflush(stdout); /* before the next fork */
		assert_int_equal(tdmt_daemon_stop(&d, 10000), 0);
		tdmt_daemon_cleanup(&d);
		memset(&d, 0, sizeof(d));
	}
	tdmt_test_ok();
}

/* ---- PoCL ------------------------------------------------------------------------- */

/* The OpenCL device, found but left out by [devices], added while the
 * client runs: its model was never calibrated, so it is measured first
 * (the reply waits for it). Made the only device taking tasks, it runs
 * them; removed with the client's buffers last written there, every
 * result stays right. */
static void test_pocl_add_remove(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, "[devices]\ninclude = [\"cpu\"]\n"));
	if (!available("clcpu0")) {
		printf("# skipped: no OpenCL device (clcpu0) in this machine\n");
		tdmt_test_ok();
		skip();
	}
	int stop;
	pid_t pid = start_load(&stop);
	wait_more_graphs(pid, 3);
	json_t *doc;
	int st = device_op(TDM_DEV_ADD, "clcpu0", 0, &doc);
	if (st != 0)
		fail_msg("add clcpu0 refused (%d): %s", st,
		         json_string_value(json_object_get(doc, "error")));
	const char *priced = json_string_value(json_object_get(doc, "priced"));
	assert_non_null(priced);
	printf("# clcpu0 added: %s\n", priced);
	assert_string_equal(priced, "measured now while the others ran");
	int cl = expect_device(st, doc, "active");
	assert_true(tdmt_log_contains(&d, "measured in"));

	/* Every core drained: clcpu0 takes the tasks. */
	char name[16];
	int ncores = 0;
	for (int i = 0; i < 64; i++) {
		snprintf(name, sizeof(name), "cpu%d", i);
		if (newest_id(name) < 0)
			break;
		dev_ok(TDM_DEV_DRAIN, name, 0, "draining");
		ncores++;
	}
	int64_t before = device_field(cl, "tasks_run");
	OK(wait_tasks_run(cl, before, 60000));
	wait_more_graphs(pid, 3);
	/* The cores back, the accelerator out: what it held comes back. */
	for (int i = 0; i < ncores; i++) {
		snprintf(name, sizeof(name), "cpu%d", i);
		dev_ok(TDM_DEV_RESUME, name, 0, "active");
	}
	dev_ok(TDM_DEV_BUDGET, "clcpu0", 1 << 20, "active");
	assert_int_equal(device_field(cl, "mem_cap"), 1 << 20);
	/* SIGHUP: [devices] now selects it, with a budget of its own. */
	OK(tdmt_daemon_write_config(&d, "[devices]\ninclude = [\"cpu\", \"clcpu0\"]\n"
	                                "mem_cap = { clcpu0 = \"2MiB\" }\n"));
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	for (int i = 0; i < 1000 && device_field(cl, "mem_cap") != 2 << 20; i++)
		tdmt_sleep_ms(10);
	assert_int_equal(device_field(cl, "mem_cap"), 2 << 20);
	assert_state(cl, "active");
	dev_ok(TDM_DEV_REMOVE, "clcpu0", 0, "gone");
	wait_more_graphs(pid, 5);
	stop_load(pid, stop);
	tdmt_test_ok();
}

/* ---- SIGHUP -------------------------------------------------------------------------- */

static void test_sighup_devices(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, CORES_TOML));
	int cpu1 = cpu1_or_skip();
	int stop;
	pid_t pid = start_load(&stop);
	wait_more_graphs(pid, 3);
	OK(tdmt_daemon_write_config(
	        &d, "[profiler]\ncalibrate = false\n[devices]\ninclude = [\"cpu0\"]\n"));
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	for (int i = 0; i < 1000 && !state_is(cpu1, "gone"); i++)
		tdmt_sleep_ms(10);
	assert_state(cpu1, "gone");
	wait_more_graphs(pid, 3);
	/* cpu1 back, and the connected client follows a changed weight. */
	OK(tdmt_daemon_write_config(&d, CORES_TOML "[clients]\ndefault_weight = 3\n"));
	for (int i = 0; i < 500 && !available("cpu1"); i++)
		tdmt_sleep_ms(10);
	int64_t weight = 0;
	assert_int_equal(tdmt_client_field(d.sock, pid, "weight", &weight), 0);
	assert_int_equal(weight, 1);
	assert_int_equal(kill(d.pid, SIGHUP), 0);
	/* The same core: back under its old id. */
	for (int i = 0; i < 1000 && !state_is(cpu1, "active"); i++)
		tdmt_sleep_ms(10);
	assert_state(cpu1, "active");
	assert_int_equal(newest_id("cpu1"), cpu1);
	assert_int_equal(tdmt_client_field(d.sock, pid, "weight", &weight), 0);
	assert_int_equal(weight, 3);
	wait_more_graphs(pid, 3);
	stop_load(pid, stop);
	json_t *doc = status();
	json_t *ev = json_object_get(json_object_get(doc, "counters"), "device_events");
	assert_true(json_integer_value(json_object_get(ev, "remove")) >= 1);
	assert_true(json_integer_value(json_object_get(ev, "add")) >= 1);
	json_decref(doc);
	tdmt_test_ok();
}

/* ---- refusals ----------------------------------------------------------------------------- */

static void test_refusals(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, "[profiler]\ncalibrate = false\n[devices]\ninclude = "
	                         "[\"cpu0\"]\n[daemon]\nallowed_uids = [65534]\n"));
	json_t *doc;
	int st;
	st = device_op(TDM_DEV_DRAIN, "nosuch0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_UNKNOWN_DEVICE);
	st = device_op(TDM_DEV_ADD, "nosuch0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_UNKNOWN_DEVICE);
	st = device_op(TDM_DEV_ADD, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_IN_USE);
	st = device_op(TDM_DEV_RESUME, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_STATE);
	st = device_op(TDM_DEV_DRAIN, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_LAST_DEVICE);
	st = device_op(TDM_DEV_REMOVE, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_LAST_DEVICE);
	st = device_op(TDM_DEV_BUDGET, "cpu0", 1 << 20, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_NOT_ACCELERATOR);
	if (newest_id("cpu1") < 0 && available("cpu1")) {
		st = device_op(TDM_DEV_DRAIN, "cpu1", 0, &doc); /* found, not in use */
		expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_STATE);
	}
	/* Malformed: each field checked. */
	st = device_op(99, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	st = device_op(TDM_DEV_RESCAN, "cpu0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	st = device_op(TDM_DEV_DRAIN, "cpu0", 5, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	st = device_op(TDM_DEV_DRAIN, "cpu 0", 0, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	st = device_op(TDM_DEV_BUDGET, "cpu0", 100, &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	struct tdm_ctl_device bad;
	memset(&bad, 'x', sizeof(bad)); /* a name with no end */
	bad.op = TDM_DEV_DRAIN;
	bad.reserved = 0;
	bad.value = 0;
	st = ctl(TDM_MSG_CTL_DEVICE, &bad, sizeof(bad), &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	/* A wrong size is a protocol error: the connection is dropped. */
	assert_int_equal(ctl(TDM_MSG_CTL_DEVICE, &bad, sizeof(bad) - 1, NULL), -1000);
	struct tdm_ctl_client cr = { .op = TDM_CLIENT_WEIGHT, .id = 99999, .value = 2 };
	st = ctl(TDM_MSG_CTL_CLIENT, &cr, sizeof(cr), &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_UNKNOWN_CLIENT);
	cr.value = 0;
	st = ctl(TDM_MSG_CTL_CLIENT, &cr, sizeof(cr), &doc);
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_BAD_REQUEST);
	cr = (struct tdm_ctl_client){ .op = TDM_CLIENT_UID_QUOTA, .id = 0, .value = 1 << 20 };
	st = ctl(TDM_MSG_CTL_CLIENT, &cr, sizeof(cr), &doc); /* root has no quota */
	expect_refusal(st, doc, -TDM_EINVAL, TDM_CTL_REASON_STATE);
	cr.id = NOBODY;
	assert_int_equal(ctl(TDM_MSG_CTL_CLIENT, &cr, sizeof(cr), &doc), 0);
	assert_int_equal(json_integer_value(json_object_get(doc, "value")), 1 << 20);
	json_decref(doc);

	/* A rescan finds what was found at start: nothing new is added. */
	assert_int_equal(device_op(TDM_DEV_RESCAN, "", 0, &doc), 0);
	assert_string_equal(json_string_value(json_object_get(doc, "op")), "rescan");
	assert_int_equal(json_array_size(json_object_get(doc, "added")), 0);
	json_decref(doc);
	doc = status();
	assert_int_equal(json_integer_value(json_object_get(
	                         json_object_get(json_object_get(doc, "counters"), "device_events"),
	                         "rescan")),
	                 1);
	assert_int_equal(json_array_size(json_object_get(doc, "devices")), 1);
	json_decref(doc);

	/* tandemctl says why, and exits 1. */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl -s %s device drain nosuch0 2>&1",
	         tdmt_build_dir(), d.sock);
	FILE *f = popen(cmd, "r");
	char out[1024] = "";
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	assert_int_equal(WEXITSTATUS(pclose(f)), 1);
	assert_non_null(strstr(out, "no device is named nosuch0"));

	/* Not an administrator: refused, whatever the request. */
	if (geteuid() != 0) {
		printf("# not root: the non-administrator case is skipped\n");
		tdmt_test_ok();
		return;
	}
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) || setgid(NOBODY) || setuid(NOBODY))
			_exit(2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		json_t *r;
		int s = device_op(TDM_DEV_DRAIN, "cpu0", 0, &r);
		const char *why = json_string_value(json_object_get(r, "reason"));
		if (s != -TDM_EPERM || !why || strcmp(why, TDM_CTL_REASON_NOT_ADMIN))
			_exit(3);
		json_decref(r);
		struct tdm_ctl_client w = { .op = TDM_CLIENT_WEIGHT, .id = 1, .value = 5 };
		s = ctl(TDM_MSG_CTL_CLIENT, &w, sizeof(w), &r);
		why = json_string_value(json_object_get(r, "reason"));
		if (s != -TDM_EPERM || !why || strcmp(why, TDM_CTL_REASON_NOT_ADMIN))
			_exit(4);
		_exit(0);
	}
	assert_int_equal(tdmt_wait_child(pid, 30000), 0);
	assert_state(0, "active");
	tdmt_test_ok();
}

/* ---- weights -------------------------------------------------------------------------------- */

/* A client whose graphs are many short spins, always backlogged. */
static int spin_child(int stop_fd)
{
	tdm_client *c;
	struct tdmt_kernels k;
	if (tdmt_connect(d.sock, &c) || tdmt_lookup_kernels(c, &k))
		return CHILD_CONNECT;
	tdm_graph *g = tdm_graph_new(c);
	if (!g)
		return CHILD_SETUP;
	for (int i = 0; i < 32; i++)
		if (tdmt_add_spin(g, &k, 300, NULL))
			return CHILD_SETUP;
	for (;;) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		if (poll(&p, 1, 0) > 0)
			break;
		if (tdm_graph_submit(g))
			return CHILD_SUBMIT;
		if (tdm_wait(g, 60000 * MS))
			return CHILD_WAIT;
	}
	tdm_graph_free(g);
	tdm_disconnect(c);
	return CHILD_OK;
}

static int64_t busy_ns(pid_t pid)
{
	int64_t v = 0;
	assert_int_equal(tdmt_client_field(d.sock, pid, "busy_ns", &v), 0);
	return v;
}

/* A's share of the device time both clients got over ms milliseconds. */
static double share_of_a(pid_t a, pid_t b, int ms)
{
	int64_t a0 = busy_ns(a), b0 = busy_ns(b);
	tdmt_sleep_ms((unsigned)ms);
	int64_t da = busy_ns(a) - a0, db = busy_ns(b) - b0;
	assert_true(da + db > 0);
	return (double)da / (double)(da + db);
}

/* Two clients compete for one core; A's weight goes from 1 to 8 while
 * they run, and its share of the core's time goes up (the fair queue
 * gives it 8/9 when both are backlogged; only the direction is asserted). */
static void test_weight_applies_to_running_client(void **state)
{
	(void)state;
	OK(tdmt_daemon_start(&d, "[profiler]\ncalibrate = false\n[devices]\ninclude = "
	                         "[\"cpu0\"]\n"));
	int sa, sb;
	pid_t a = tdmt_fork_stoppable(spin_child, &sa);
	pid_t b = tdmt_fork_stoppable(spin_child, &sb);
	assert_true(a > 0 && b > 0);
	OK(tdmt_wait_counter(d.sock, "clients", 2, 10000, NULL));
	int64_t session = 0;
	for (int i = 0; i < 500 && tdmt_client_field(d.sock, a, "session", &session) != 0; i++)
		tdmt_sleep_ms(10);
	assert_true(session > 0);
	tdmt_sleep_ms(300);
	double before = share_of_a(a, b, 1500);
	json_t *doc;
	struct tdm_ctl_client w = { .op = TDM_CLIENT_WEIGHT, .id = (uint32_t)session, .value = 8 };
	assert_int_equal(ctl(TDM_MSG_CTL_CLIENT, &w, sizeof(w), &doc), 0);
	assert_int_equal(json_integer_value(json_object_get(doc, "previous")), 1);
	json_decref(doc);
	int64_t weight = 0;
	assert_int_equal(tdmt_client_field(d.sock, a, "weight", &weight), 0);
	assert_int_equal(weight, 8);
	tdmt_sleep_ms(300); /* what was queued under the old weight runs out */
	double after = share_of_a(a, b, 1500);
	printf("# client A's share of the core: %.2f at weight 1, %.2f at weight 8\n", before,
	       after);
	assert_true(after > before);
	assert_true(after > 0.5);
	/* b holds a copy of a's stop pipe (forked after it): b first. */
	assert_int_equal(tdmt_stop_child(b, sb, 60000), CHILD_OK);
	assert_int_equal(tdmt_stop_child(a, sa, 60000), CHILD_OK);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_core_drain_remove_add, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_fault_makes_device_gone, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_core_churn_every_policy, test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_pocl_add_remove, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_sighup_devices, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_refusals, test_setup, test_teardown),
		cmocka_unit_test_setup_teardown(test_weight_applies_to_running_client, test_setup,
		                                test_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
