/* Recording real runs and exporting the machine, through a private tandemd
 * and the tandemctl binary:
 *  - `tandemctl trace -o FILE --chrome FILE` records the graphs that
 *    complete while it runs; the trace loads with wl_trace_load and holds
 *    what was submitted (graphs, tasks, kernels, arguments, buffers, edges,
 *    hints) and what ran (devices, times that match the task info), and
 *    the Chrome trace has one complete ("X") event per task;
 *  - a second recording is refused while one runs; a recording whose
 *    tandemctl goes away without stopping is discarded; --seconds ends it;
 *    a daemon that stops ends it with the files written;
 *  - the control request checks the descriptors it is given;
 *  - `tandemctl calibrate --export` writes a machine description that
 *    machine_load reads, with the daemon's devices and learned costs.
 * Links the daemon core for the file readers. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <dirent.h>

#include "sim/machine.h"
#include "workload/workload.h"
#include "support.h"
#include "support_raw.h"

#define MS (1000000ll)
#define N 4096 /* floats per buffer: 64 x 64 */
#define DIM 64
#define TOML "[cpu]\ncores = [0, 1]\n[devices]\ninclude = [\"cpu\"]\n"

static struct tdmt_daemon daemon_;

#define OK(x) assert_int_equal((x), 0)

static int group_setup(void **state)
{
	return tdmt_group_start(state, &daemon_, TOML);
}

/* ---- tandemctl as a child ------------------------------------------------- */

struct ctl {
	pid_t pid;
	char out[TDMT_PATH_MAX + 16]; /* its stdout and stderr */
};

/* Runs build/bin/tandemctl --socket sock args... with its output in a file
 * of the daemon's directory. */
static void ctl_spawn(struct ctl *c, const char *sock, const char *const *args)
{
	static int serial;
	char exe[512];
	const char *argv[16];
	int n = 0;

	snprintf(exe, sizeof(exe), "%s/bin/tandemctl", tdmt_build_dir());
	snprintf(c->out, sizeof(c->out), "%s/ctl%d.out", daemon_.dir, serial++);
	argv[n++] = exe;
	argv[n++] = "--socket";
	argv[n++] = sock;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t parent = getpid();
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		int fd = open(c->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			_exit(127);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
}

/* The child's output so far (malloc'd). */
static char *ctl_output(const struct ctl *c)
{
	FILE *f = fopen(c->out, "r");
	char *buf = calloc(1, 65536);
	assert_non_null(buf);
	if (f) {
		size_t n = fread(buf, 1, 65535, f);
		buf[n] = '\0';
		fclose(f);
	}
	return buf;
}

static bool ctl_says(const struct ctl *c, const char *text)
{
	char *out = ctl_output(c);
	bool yes = strstr(out, text) != NULL;
	free(out);
	return yes;
}

/* Waits until tandemctl says it records (or gives up after 10 s). */
static void ctl_wait_recording(const struct ctl *c)
{
	for (int i = 0; i < 2000; i++) {
		if (ctl_says(c, "tandemctl: recording"))
			return;
		tdmt_sleep_ms(5);
	}
	char *out = ctl_output(c);
	fail_msg("tandemctl did not start recording: %s", out);
}

/* Exit status of the child (see tdmt_wait_child); prints its output when
 * it is not want. */
static int ctl_wait(struct ctl *c, int want)
{
	int st = tdmt_wait_child(c->pid, 30000);
	c->pid = 0;
	if (st != want) {
		char *out = ctl_output(c);
		fprintf(stderr, "tandemctl exited %d:\n%s\n", st, out);
		free(out);
	}
	return st;
}

/* Descriptors the daemon holds. */
static int daemon_fds(void)
{
	char path[64];
	int n = 0;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)daemon_.pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* The count once it stays the same for 20 ms (a connection of an earlier
 * test may still be closing). */
static int settled_daemon_fds(void)
{
	int n = daemon_fds();
	for (int i = 0; i < 50; i++) {
		tdmt_sleep_ms(20);
		int m = daemon_fds();
		if (m == n)
			break;
		n = m;
	}
	return n;
}

/* Waits until the daemon holds at most want descriptors; the count. */
static int wait_daemon_fds(int want)
{
	int n = daemon_fds();
	for (int i = 0; i < 400 && n > want; i++) {
		tdmt_sleep_ms(5);
		n = daemon_fds();
	}
	return n;
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- graphs ------------------------------------------------------------------ */

struct run {
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer a, b, cc, d, e, w;
	tdm_graph *g[3];
	uint64_t deadline;
	uint64_t submitted[3]; /* client's clock, just before each submit */
};

static void alloc_buf(struct run *r, tdm_buffer *h, uint32_t flags, float v)
{
	float *p;
	OK(tdm_buffer_alloc(r->c, N * sizeof(float), flags, h, (void **)&p));
	for (int i = 0; i < N; i++)
		p[i] = v;
}

/* Three graphs, one after another (each waited for):
 *   G0 (priority 5, hint dmda): fill A, fill B, axpy(A -> B), noop (edge
 *      from the axpy by hand); edges 0->2, 1->2, 2->3
 *   G1 (deadline in 10 s): sgemm(A, B -> C), axpy(W -> C) with W a WEIGHTS
 *      buffer; edge 0->1
 *   G2: fill D, axpy(D -> E) with the edge also given by hand, spin after
 *      both (by hand); edges 0->1, 0->2, 1->2 */
static void run_graphs(struct run *r, const char *sock)
{
	memset(r, 0, sizeof(*r));
	OK(tdmt_connect(sock, &r->c));
	OK(tdmt_lookup_kernels(r->c, &r->k));
	alloc_buf(r, &r->a, 0, 0);
	alloc_buf(r, &r->b, 0, 0);
	alloc_buf(r, &r->cc, 0, 0);
	alloc_buf(r, &r->d, 0, 0);
	alloc_buf(r, &r->e, 0, 1);
	alloc_buf(r, &r->w, TDM_BUF_WEIGHTS, 0.5f);
	for (int i = 0; i < 3; i++) {
		r->g[i] = tdm_graph_new(r->c);
		assert_non_null(r->g[i]);
		tdm_graph_want_task_info(r->g[i], 1);
	}
	tdm_graph *g = r->g[0];
	tdm_graph_set_priority(g, 5);
	tdm_graph_set_policy(g, TDM_POLICY_DMDA);
	OK(tdmt_add_fill(g, &r->k, r->a, 0, 0, 1.0f, NULL));
	OK(tdmt_add_fill(g, &r->k, r->b, 0, 0, 2.0f, NULL));
	OK(tdmt_add_axpy(g, &r->k, r->a, r->b, 3.0f, NULL));
	OK(tdmt_add_noop(g, &r->k, NULL));
	OK(tdm_graph_add_edge(g, 2, 3));

	g = r->g[1];
	r->deadline = tdmt_now_ns() + 10000 * MS;
	tdm_graph_set_deadline(g, r->deadline);
	OK(tdmt_add_sgemm(g, &r->k, r->a, r->b, r->cc, DIM, DIM, DIM, 1.0f, 0.0f, NULL));
	OK(tdmt_add_axpy(g, &r->k, r->w, r->cc, 1.0f, NULL));

	g = r->g[2];
	OK(tdmt_add_fill(g, &r->k, r->d, 0, 0, 4.0f, NULL));
	OK(tdmt_add_axpy(g, &r->k, r->d, r->e, 1.0f, NULL));
	OK(tdm_graph_add_edge(g, 0, 1));
	OK(tdmt_add_spin(g, &r->k, 200, NULL));
	OK(tdm_graph_add_edge(g, 0, 2));
	OK(tdm_graph_add_edge(g, 1, 2));

	for (int i = 0; i < 3; i++) {
		r->submitted[i] = tdmt_now_ns();
		OK(tdm_graph_submit(r->g[i]));
		OK(tdm_wait(r->g[i], 30000 * MS));
	}
}

static void free_run(struct run *r)
{
	for (int i = 0; i < 3; i++)
		tdm_graph_free(r->g[i]);
	tdm_disconnect(r->c);
}

/* ---- what the trace must hold ------------------------------------------------ */

struct want_task {
	tdm_kernel kernel;
	int nargs;
	tdm_buffer buf[3];
	uint8_t mode[3];
};

static bool has_edge(const struct workload *w, uint32_t src, uint32_t dst)
{
	for (uint32_t i = 0; i < w->nedges; i++)
		if (w->edges[i].src == src && w->edges[i].dst == dst)
			return true;
	return false;
}

static void check_trace(const char *path, struct run *r, uint32_t ndevices)
{
	struct workload w;
	char err[WL_ERR_MAX];
	wl_init(&w);
	int rc = wl_trace_load(path, &w, err, sizeof(err));
	if (rc != 0)
		fail_msg("wl_trace_load: %s", err);

	const struct want_task want[9] = {
		{ r->k.fill, 1, { r->a }, { TDM_W } },
		{ r->k.fill, 1, { r->b }, { TDM_W } },
		{ r->k.axpy, 2, { r->a, r->b }, { TDM_R, TDM_RW } },
		{ r->k.noop, 0, { 0 }, { 0 } },
		{ r->k.sgemm, 3, { r->a, r->b, r->cc }, { TDM_R, TDM_R, TDM_RW } },
		{ r->k.axpy, 2, { r->w, r->cc }, { TDM_R, TDM_RW } },
		{ r->k.fill, 1, { r->d }, { TDM_W } },
		{ r->k.axpy, 2, { r->d, r->e }, { TDM_R, TDM_RW } },
		{ r->k.spin, 0, { 0 }, { 0 } },
	};
	const uint32_t first[3] = { 0, 4, 6 }, count[3] = { 4, 2, 3 };

	assert_int_equal(w.units, WL_UNITS_NS);
	assert_int_equal(w.ngraphs, 3);
	assert_int_equal(w.ntasks, 9);
	assert_int_equal(w.ndev_names, ndevices);
	assert_int_equal(w.nbufs, 6); /* a, b, cc, w, d, e: each once */

	/* Graphs in arrival order, times from the first arrival. */
	for (uint32_t i = 0; i < 3; i++) {
		const struct wl_graph *g = &w.graphs[i];
		assert_int_equal(g->first, first[i]);
		assert_int_equal(g->ntasks, count[i]);
		assert_int_equal(g->client, tdm_session_id(r->c));
		if (i)
			assert_true(g->arrival_ns > w.graphs[i - 1].arrival_ns);
	}
	assert_true(w.graphs[0].arrival_ns == 0.0);
	/* The client submitted at least this much later (its clock reads
	 * before the daemon's). */
	double gap = (double)(r->submitted[2] - r->submitted[0]);
	assert_true(w.graphs[2].arrival_ns > 0 && w.graphs[2].arrival_ns < gap + 1e9);
	assert_int_equal(w.graphs[0].priority, 5);
	assert_int_equal(w.graphs[0].policy_hint, TDM_POLICY_DMDA);
	assert_true(w.graphs[0].deadline_ns == 0.0);
	double rel = w.graphs[1].deadline_ns;
	if (!(rel > 9000.0 * MS && rel <= 10000.0 * MS))
		fail_msg("graph 1 deadline %.0f ns after arrival, want about 10 s", rel);
	assert_int_equal(w.graphs[1].policy_hint, TDM_POLICY_DEFAULT);

	/* Tasks: kernels, arguments (a buffer per handle), where and when
	 * they ran (matching the task info to the ns). */
	int64_t handle_of[6];
	for (int i = 0; i < 6; i++)
		handle_of[i] = -1;
	uint64_t base_start = tdm_graph_task_info(r->g[0], 0)->start_ns;
	double base_rec = 0;
	for (uint32_t v = 0; v < 9; v++) {
		const struct wl_task *t = &w.tasks[v];
		uint32_t gi = v < 4 ? 0 : v < 6 ? 1 : 2;
		const struct tdm_task_info *ti = tdm_graph_task_info(r->g[gi], v - first[gi]);
		assert_non_null(ti);
		assert_true(t->has_kernel);
		assert_int_equal(t->kernel, want[v].kernel);
		assert_int_equal(t->nargs, want[v].nargs);
		for (int a = 0; a < want[v].nargs; a++) {
			uint32_t b = t->args[a].buf;
			assert_true(b < 6);
			assert_int_equal(t->args[a].mode, want[v].mode[a]);
			if (handle_of[b] < 0)
				handle_of[b] = want[v].buf[a];
			else
				assert_int_equal(handle_of[b], want[v].buf[a]);
			assert_true(w.buf_bytes[b] == N * sizeof(float));
			assert_int_equal(w.buf_keep[b], want[v].buf[a] == r->w);
		}
		assert_int_equal(t->rec_device, ti->device + 1);
		assert_true(t->rec_end_ns - t->rec_start_ns == (double)(ti->end_ns - ti->start_ns));
		if (v == 0)
			base_rec = t->rec_start_ns;
		/* Signed: a task of another device may start before task 0. */
		if (t->rec_start_ns - base_rec != (double)(int64_t)(ti->start_ns - base_start) ||
		    t->rec_start_ns < w.graphs[gi].arrival_ns)
			fail_msg("task %u: recorded start %.0f (first %.0f, graph arrival %.0f), "
			         "reported start %llu (first %llu)",
			         v, t->rec_start_ns, base_rec, w.graphs[gi].arrival_ns,
			         (unsigned long long)ti->start_ns, (unsigned long long)base_start);
	}
	assert_true(w.tasks[4].feat.flops >= 2.0 * DIM * DIM * DIM);
	assert_true(w.tasks[8].feat.domain == 200.0);
	/* Distinct handles got distinct buffers. */
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < i; j++)
			assert_true(handle_of[i] != handle_of[j]);

	/* Edges: inferred and by hand, each once. */
	assert_int_equal(w.nedges, 7);
	assert_true(has_edge(&w, 0, 2));
	assert_true(has_edge(&w, 1, 2));
	assert_true(has_edge(&w, 2, 3));
	assert_true(has_edge(&w, 4, 5));
	assert_true(has_edge(&w, 6, 7));
	assert_true(has_edge(&w, 6, 8));
	assert_true(has_edge(&w, 7, 8));
	wl_free(&w);
}

/* The Chrome trace: valid JSON, one "X" event per task. */
static void check_chrome(const char *path, int ntasks)
{
	json_error_t jerr;
	json_t *doc = json_load_file(path, 0, &jerr);
	if (!doc)
		fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
	json_t *ev = json_object_get(doc, "traceEvents");
	assert_true(json_is_array(ev));
	size_t i;
	json_t *e;
	int x = 0;
	json_array_foreach(ev, i, e)
	{
		const char *ph = json_string_value(json_object_get(e, "ph"));
		if (ph && !strcmp(ph, "X")) {
			x++;
			assert_true(json_number_value(json_object_get(e, "dur")) >= 0);
			assert_non_null(json_object_get(json_object_get(e, "args"), "task"));
		}
	}
	assert_int_equal(x, ntasks);
	json_decref(doc);
}

static uint32_t device_count(void)
{
	char *text = tdmt_status_json(daemon_.sock);
	assert_non_null(text);
	json_t *doc = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(doc);
	uint32_t n = (uint32_t)json_array_size(json_object_get(doc, "devices"));
	json_decref(doc);
	return n;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_record_graphs(void **state)
{
	(void)state;
	char trace[TDMT_PATH_MAX + 16], chrome[TDMT_PATH_MAX + 16];
	struct ctl ctl;
	struct run r;

	snprintf(trace, sizeof(trace), "%s/run.jsonl", daemon_.dir);
	snprintf(chrome, sizeof(chrome), "%s/run.json", daemon_.dir);
	ctl_spawn(&ctl, daemon_.sock,
	          (const char *const[]){ "trace", "-o", trace, "--chrome", chrome, NULL });
	ctl_wait_recording(&ctl);
	run_graphs(&r, daemon_.sock);
	kill(ctl.pid, SIGINT);
	assert_int_equal(ctl_wait(&ctl, 0), 0);
	assert_true(ctl_says(&ctl, "recorded 3 graphs, 9 tasks, 6 buffers"));
	assert_true(tdmt_log_contains(&daemon_, "trace: recorded 3 graphs"));

	check_trace(trace, &r, device_count());
	check_chrome(chrome, 9);
	free_run(&r);
	tdmt_test_ok();
}

static void test_second_start_refused(void **state)
{
	(void)state;
	char t1[TDMT_PATH_MAX + 16], t2[TDMT_PATH_MAX + 16];
	struct ctl first, second;

	snprintf(t1, sizeof(t1), "%s/first.jsonl", daemon_.dir);
	snprintf(t2, sizeof(t2), "%s/second.jsonl", daemon_.dir);
	ctl_spawn(&first, daemon_.sock, (const char *const[]){ "trace", "-o", t1, NULL });
	ctl_wait_recording(&first);
	ctl_spawn(&second, daemon_.sock, (const char *const[]){ "trace", "-o", t2, NULL });
	assert_int_equal(ctl_wait(&second, 1), 1);
	assert_true(ctl_says(&second, "a recording is already running"));
	assert_false(ctl_says(&second, "tandemctl: recording"));
	/* The first goes on, and ends properly. */
	kill(first.pid, SIGTERM);
	assert_int_equal(ctl_wait(&first, 0), 0);
	assert_true(ctl_says(&first, "recorded 0 graphs"));
	struct workload w;
	char err[WL_ERR_MAX];
	wl_init(&w);
	if (wl_trace_load(t1, &w, err, sizeof(err)) != 0)
		fail_msg("wl_trace_load: %s", err);
	assert_int_equal(w.ntasks, 0);
	wl_free(&w);
	tdmt_test_ok();
}

static void test_close_without_stop_discards(void **state)
{
	(void)state;
	char t1[TDMT_PATH_MAX + 16], t2[TDMT_PATH_MAX + 16];
	struct ctl ctl;
	struct run r;

	snprintf(t1, sizeof(t1), "%s/lost.jsonl", daemon_.dir);
	snprintf(t2, sizeof(t2), "%s/after.jsonl", daemon_.dir);
	int fds_before = settled_daemon_fds();
	assert_true(fds_before > 0);
	ctl_spawn(&ctl, daemon_.sock, (const char *const[]){ "trace", "-o", t1, NULL });
	ctl_wait_recording(&ctl);
	assert_int_equal(daemon_fds(), fds_before + 2); /* the connection, the file */
	run_graphs(&r, daemon_.sock);
	free_run(&r);
	kill(ctl.pid, SIGKILL);
	tdmt_wait_child(ctl.pid, 5000);
	assert_int_equal(
	        tdmt_wait_log(&daemon_, "went away without stopping: recording discarded", 10000),
	        0);
	assert_int_equal(file_size(t1), 0);
	assert_int_equal(wait_daemon_fds(fds_before), fds_before);

	/* The daemon records again; --seconds ends it by itself. */
	ctl_spawn(&ctl, daemon_.sock,
	          (const char *const[]){ "trace", "-o", t2, "--seconds", "1.5", NULL });
	ctl_wait_recording(&ctl);
	run_graphs(&r, daemon_.sock);
	free_run(&r);
	assert_int_equal(ctl_wait(&ctl, 0), 0);
	assert_true(ctl_says(&ctl, "recorded 3 graphs, 9 tasks"));
	struct workload w;
	char err[WL_ERR_MAX];
	wl_init(&w);
	if (wl_trace_load(t2, &w, err, sizeof(err)) != 0)
		fail_msg("wl_trace_load: %s", err);
	assert_int_equal(w.ngraphs, 3);
	wl_free(&w);
	tdmt_test_ok();
}

/* ---- the control request itself ---------------------------------------------- */

static int ctl_connect(void)
{
	struct tdmt_raw r;
	assert_int_equal(tdmt_raw_connect(&r, daemon_.sock, TDM_ROLE_CONTROL, 30000), 0);
	return r.sock; /* a control connection holds nothing else */
}

/* Sends TRACE_START announcing `announced` descriptors and passing fds;
 * returns the reply's status (its text in *text, malloc'd, may be NULL). */
static int32_t trace_start(int sock, uint32_t announced, const int *fds, int nfds, char **text)
{
	int status = tdmt_raw_control_ex(sock, TDM_MSG_CTL_TRACE_START, &announced,
	                                 sizeof(announced), fds, nfds, text);
	assert_int_not_equal(status, -1000);
	return status;
}

static void test_start_checks_descriptors(void **state)
{
	(void)state;
	char path[TDMT_PATH_MAX + 16], *text;
	int pfd[2];

	snprintf(path, sizeof(path), "%s/direct.jsonl", daemon_.dir);
	int file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int ro = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(file >= 0 && ro >= 0);
	OK(pipe2(pfd, O_CLOEXEC));
	int fds_before = settled_daemon_fds();
	assert_true(fds_before > 0);
	int sock = ctl_connect();

	/* Announced one, passed none. */
	assert_int_equal(trace_start(sock, 1, NULL, 0, &text), -TDM_EINVAL);
	assert_non_null(strstr(text, "descriptor"));
	free(text);
	/* Three announced. */
	assert_int_equal(trace_start(sock, 3, (int[]){ file, file }, 2, &text), -TDM_EINVAL);
	free(text);
	/* A pipe (the daemon would block on it), a file open read-only. */
	assert_int_equal(trace_start(sock, 1, &pfd[1], 1, &text), -TDM_EINVAL);
	assert_non_null(strstr(text, "regular files"));
	free(text);
	assert_int_equal(trace_start(sock, 1, &ro, 1, &text), -TDM_EINVAL);
	free(text);
	/* Stopping what is not running. */
	struct tdm_msg_hdr h = { TDM_MSG_CTL_TRACE_STOP, 0 };
	int32_t status;
	assert_int_equal(send(sock, &h, sizeof(h), 0), sizeof(h));
	assert_int_equal(recv(sock, &h, sizeof(h), MSG_WAITALL), sizeof(h));
	assert_true(h.length >= sizeof(status));
	char *buf = calloc(1, h.length + 1);
	assert_int_equal(recv(sock, buf, h.length, MSG_WAITALL), h.length);
	memcpy(&status, buf, sizeof(status));
	assert_int_equal(status, -TDM_EINVAL);
	free(buf);
	/* A proper one works, and a second (here, on the same connection) is
	 * refused with EBUSY. */
	assert_int_equal(trace_start(sock, 1, &file, 1, &text), 0);
	free(text);
	assert_int_equal(trace_start(sock, 1, &file, 1, &text), -TDM_EBUSY);
	assert_non_null(strstr(text, "already running"));
	free(text);
	close(sock);
	char line[96];
	snprintf(line, sizeof(line), "tandemctl pid %d went away without stopping", (int)getpid());
	assert_int_equal(tdmt_wait_log(&daemon_, line, 10000), 0);
	/* The daemon closed the connection and every descriptor it was
	 * passed, refused or taken. */
	assert_int_equal(wait_daemon_fds(fds_before), fds_before);
	close(file);
	close(ro);
	close(pfd[0]);
	close(pfd[1]);
	assert_true(tdmt_daemon_alive(&daemon_));
	tdmt_test_ok();
}

/* ---- calibrate --export ---------------------------------------------------------- */

static void load_machine(const char *path, struct machine *m)
{
	char err[256];
	machine_init(m);
	if (machine_load(path, m, err, sizeof(err)) != 0)
		fail_msg("machine_load: %s", err);
}

/* The machine has the daemon's devices, by name, in order. */
static void check_devices(const struct machine *m)
{
	char *text = tdmt_status_json(daemon_.sock);
	json_t *doc = json_loads(text, 0, NULL);
	free(text);
	json_t *devs = json_object_get(doc, "devices");
	assert_int_equal(m->ndevices, json_array_size(devs));
	for (uint32_t i = 0; i < m->ndevices; i++) {
		const char *name =
		        json_string_value(json_object_get(json_array_get(devs, i), "name"));
		assert_string_equal(m->dev[i].name, name);
		assert_int_equal(m->dev[i].kind, TDM_DEV_CPU);
	}
	json_decref(doc);
}

static void test_export_machine(void **state)
{
	(void)state;
	char path[TDMT_PATH_MAX + 16], piped[TDMT_PATH_MAX + 16], cmd[1024];
	struct machine m;
	struct ctl ctl;
	struct run r;

	/* Something learned: sgemm has a footprint afterwards. */
	run_graphs(&r, daemon_.sock);
	free_run(&r);
	tdmt_sleep_ms(50);

	snprintf(path, sizeof(path), "%s/machine.toml", daemon_.dir);
	ctl_spawn(&ctl, daemon_.sock,
	          (const char *const[]){ "calibrate", "--export", "-o", path, NULL });
	assert_int_equal(ctl_wait(&ctl, 0), 0);
	load_machine(path, &m);
	check_devices(&m);
	bool sgemm = false;
	for (uint32_t i = 0; i < m.ncosts; i++)
		sgemm |= m.costs[i].kernel == KERNEL_SGEMM && m.costs[i].ns > 0;
	assert_true(sgemm);
	char host[256] = "";
	gethostname(host, sizeof(host));
	assert_string_equal(m.name, host);
	machine_free(&m);

	/* To standard output through a pipe (tandemctl copies the file the
	 * daemon wrote). */
	snprintf(piped, sizeof(piped), "%s/piped.toml", daemon_.dir);
	snprintf(cmd, sizeof(cmd),
	         "'%s/bin/tandemctl' --socket '%s' calibrate --export | cat > '%s'",
	         tdmt_build_dir(), daemon_.sock, piped);
	OK(system(cmd));
	load_machine(piped, &m);
	check_devices(&m);
	machine_free(&m);

	/* Without a descriptor, the text comes in the reply. */
	char *text = tdmt_control_json(daemon_.sock, TDM_MSG_CTL_EXPORT);
	assert_non_null(text);
	char err[256];
	machine_init(&m);
	if (machine_parse(text, strlen(text), "reply", &m, err, sizeof(err)) != 0)
		fail_msg("machine_parse: %s", err);
	check_devices(&m);
	machine_free(&m);
	free(text);
	tdmt_test_ok();
}

/* Last: a daemon that stops ends the recording, files written. */
static void test_daemon_stop_ends_recording(void **state)
{
	(void)state;
	char trace[TDMT_PATH_MAX + 16];
	struct ctl ctl;
	struct run r;

	snprintf(trace, sizeof(trace), "%s/last.jsonl", daemon_.dir);
	ctl_spawn(&ctl, daemon_.sock, (const char *const[]){ "trace", "-o", trace, NULL });
	ctl_wait_recording(&ctl);
	run_graphs(&r, daemon_.sock);
	free_run(&r);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 30000), 0);
	assert_int_equal(ctl_wait(&ctl, 0), 0);
	assert_true(ctl_says(&ctl, "tandemd stops"));
	assert_true(ctl_says(&ctl, "recorded 3 graphs, 9 tasks"));
	struct workload w;
	char err[WL_ERR_MAX];
	wl_init(&w);
	if (wl_trace_load(trace, &w, err, sizeof(err)) != 0)
		fail_msg("wl_trace_load: %s", err);
	assert_int_equal(w.ngraphs, 3);
	assert_int_equal(w.ntasks, 9);
	wl_free(&w);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_record_graphs, tdmt_test_setup,
		                                tdmt_test_teardown),
		cmocka_unit_test_setup_teardown(test_second_start_refused, tdmt_test_setup,
		                                tdmt_test_teardown),
		cmocka_unit_test_setup_teardown(test_close_without_stop_discards, tdmt_test_setup,
		                                tdmt_test_teardown),
		cmocka_unit_test_setup_teardown(test_start_checks_descriptors, tdmt_test_setup,
		                                tdmt_test_teardown),
		cmocka_unit_test_setup_teardown(test_export_machine, tdmt_test_setup,
		                                tdmt_test_teardown),
		cmocka_unit_test_setup_teardown(test_daemon_stop_ends_recording, tdmt_test_setup,
		                                NULL),
	};
	return cmocka_run_group_tests(tests, group_setup, tdmt_group_end);
}
