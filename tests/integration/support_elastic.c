/* Elastic devices under load: the checked client workloads and the random
 * device changes (support_elastic.h). */
#include "support_elastic.h"
#include "support.h"
#include "support_raw.h"

#include "examples/cholesky_tiles.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- Cholesky clients ---- */

/* Counts a finished graph's tasks and notes the first task on each watched
 * device. Returns the number of tasks not done. */
static uint64_t count_tasks(struct tdmt_elastic *e, const tdm_graph *g)
{
	uint32_t n = tdm_graph_task_count(g);
	uint64_t lost = 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct tdm_task_info *ti = tdm_graph_task_info(g, i);
		if (!ti || ti->status != 0) {
			lost++;
			continue;
		}
		atomic_fetch_add(&e->n.tasks_done, 1);
		if (ti->device >= TDMT_EL_MAX_IDS)
			continue;
		atomic_fetch_add(&e->tasks_on[ti->device], 1);
		uint64_t since = atomic_load(&e->watch_since[ti->device]);
		if (!since || ti->start_ns < since)
			continue;
		uint64_t cur = atomic_load(&e->first_start[ti->device]);
		while ((cur == 0 || ti->start_ns < cur) &&
		       !atomic_compare_exchange_weak(&e->first_start[ti->device], &cur,
		                                     ti->start_ns))
			;
	}
	return lost;
}

static void *chol_main(void *arg)
{
	struct tdmt_el_client *cl = arg;
	struct tdmt_elastic *e = cl->e;
	struct chol m = { 0 };
	const char *what = "graph";
	tdm_client *c = NULL;
	tdm_graph *g = NULL;
	int err = tdmt_connect(e->sock, &c);

	if (!err)
		err = chol_alloc(c, e->chol_tiles, e->chol_nb, &m);
	if (!err && !(g = tdm_graph_new(c)))
		err = -TDM_ENOMEM;
	if (!err)
		err = chol_build_graph(c, g, &m, &what);
	if (err) {
		fprintf(stderr, "elastic: cholesky client %d: set-up: %s: %s\n", cl->index, what,
		        tdm_strerror(err));
		atomic_fetch_add(&e->n.graphs_lost, 1);
		goto out;
	}
	tdm_graph_want_task_info(g, 1);
	uint64_t ntasks = tdm_graph_task_count(g);
	while (!atomic_load(&e->stop)) {
		chol_reset(&m);
		err = tdm_graph_submit(g);
		if (!err)
			err = tdm_wait(g, e->graph_timeout_ms * 1000000ll);
		if (err == -TDM_ETIMEDOUT) {
			/* Still in flight: its buffers cannot be reused. */
			fprintf(stderr,
			        "elastic: cholesky client %d: a graph not done after %lld ms\n",
			        cl->index, (long long)e->graph_timeout_ms);
			atomic_fetch_add(&e->n.graphs_lost, 1);
			atomic_fetch_add(&e->n.tasks_lost, ntasks);
			break;
		}
		if (err) {
			fprintf(stderr, "elastic: cholesky client %d: graph failed: %s\n",
			        cl->index, tdm_strerror(err));
			atomic_fetch_add(&e->n.graphs_lost, 1);
			atomic_fetch_add(&e->n.tasks_lost, count_tasks(e, g));
			if (err == -TDM_EDAEMON || err == -TDM_EDISCONNECTED)
				break;
			continue;
		}
		uint64_t t = tdmt_now_ns();
		uint64_t lost = count_tasks(e, g);
		double res = chol_residual(&m);
		if (lost) {
			fprintf(stderr,
			        "elastic: cholesky client %d: graph done with %llu tasks not\n",
			        cl->index, (unsigned long long)lost);
			atomic_fetch_add(&e->n.graphs_lost, 1);
			atomic_fetch_add(&e->n.tasks_lost, lost);
		} else if (!(res < CHOL_MAX_REL_RESIDUAL)) {
			fprintf(stderr, "elastic: cholesky client %d: residual %.2e\n", cl->index,
			        res);
			atomic_fetch_add(&e->n.graphs_wrong, 1);
		} else {
			atomic_fetch_add(&e->n.graphs_ok, 1);
		}
		if (cl->index == 0) {
			unsigned k = atomic_load(&e->ndone);
			if (k < TDMT_EL_MAX_DONE) {
				e->done_ns[k] = t;
				atomic_store(&e->ndone, k + 1);
			}
		}
	}
out:
	if (g)
		tdm_graph_free(g);
	if (c)
		tdm_disconnect(c);
	chol_free(&m);
	return NULL;
}

/* ---- llm_layer processes ---- */

static pid_t spawn_llm(struct tdmt_elastic *e, struct tdmt_el_client *cl)
{
	char exe[512];
	int in[2];

	snprintf(exe, sizeof(exe), "%s/bin/llm_layer", tdmt_build_dir());
	snprintf(cl->out_path, sizeof(cl->out_path), "%s/llm%d.out", e->tmpdir, cl->index);
	snprintf(cl->err_path, sizeof(cl->err_path), "%s/llm%d.err", e->tmpdir, cl->index);
	if (pipe2(in, O_CLOEXEC) != 0)
		return -1;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int o = open(cl->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int er = open(cl->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (o < 0 || er < 0 || dup2(in[0], 0) < 0 || dup2(o, 1) < 0 || dup2(er, 2) < 0)
			_exit(126);
		/* Small layers, so that a step takes about a millisecond; a KV
		 * cache long enough for the longest run, ended by end of file.
		 * Even clients run the mixture of experts, odd ones a dense MLP. */
		const char *argv[] = { exe,
			               "--socket",
			               e->sock,
			               "--stop-on-eof",
			               "--steps",
			               "65000",
			               "--prompt",
			               "8",
			               "--kv-cap",
			               "65536",
			               "--d-model",
			               "64",
			               "--heads",
			               "4",
			               "--kv-heads",
			               "2",
			               "--head-dim",
			               "16",
			               "--d-ff",
			               "128",
			               "--experts",
			               "4",
			               "--top-k",
			               "2",
			               cl->index % 2 ? "--dense" : NULL,
			               NULL };
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	cl->stdin_fd = in[1];
	return pid;
}

/* Reads an llm_layer's verdict: its exit status st (as tdmt_wait_child
 * gives it; -1: it had to be killed) and its output files. */
static void llm_verdict(struct tdmt_elastic *e, struct tdmt_el_client *cl, int st)
{
	char line[512];
	unsigned long long steps = 0, result = 0;
	bool have_result = false, wrong = false;
	FILE *f = fopen(cl->out_path, "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "step ", 5))
			steps++;
		else if (sscanf(line, "result: %llu steps correct", &result) == 1)
			have_result = true;
	}
	if (f)
		fclose(f);
	f = fopen(cl->err_path, "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "max rel err") || strstr(line, "picked other experts"))
			wrong = true;
		fprintf(stderr, "elastic: llm client %d: %s", cl->index, line);
	}
	if (f)
		fclose(f);
	if (st == 0 && have_result) {
		atomic_fetch_add(&e->n.graphs_ok, result);
		return;
	}
	/* Every step printed was checked; the last one printed failed its
	 * check when wrong, else the step after it failed or never ended. */
	fprintf(stderr, "elastic: llm client %d: exit status %d after %llu steps%s\n", cl->index,
	        st, steps, wrong ? " (wrong result)" : "");
	if (wrong) {
		atomic_fetch_add(&e->n.graphs_ok, steps ? steps - 1 : 0);
		atomic_fetch_add(&e->n.graphs_wrong, 1);
	} else {
		atomic_fetch_add(&e->n.graphs_ok, steps);
		atomic_fetch_add(&e->n.graphs_lost, 1);
		atomic_fetch_add(&e->n.tasks_lost, 1);
	}
}

/* ---- start and stop ---- */

int tdmt_elastic_start(struct tdmt_elastic *e)
{
	if (e->chol_clients > TDMT_EL_MAX_CLIENTS || e->llm_clients > TDMT_EL_MAX_CLIENTS)
		return -1;
	atomic_store(&e->stop, false);
	for (int i = 0; i < e->chol_clients; i++) {
		struct tdmt_el_client *cl = &e->chol[i];
		cl->e = e;
		cl->index = i;
		if (pthread_create(&cl->thread, NULL, chol_main, cl) != 0)
			return -1;
		cl->started = true;
	}
	for (int i = 0; i < e->llm_clients; i++) {
		struct tdmt_el_client *cl = &e->llm[i];
		cl->e = e;
		cl->index = i;
		cl->pid = spawn_llm(e, cl);
		if (cl->pid < 0)
			return -1;
		cl->started = true;
	}
	return 0;
}

int tdmt_elastic_stop(struct tdmt_elastic *e, int timeout_ms)
{
	int rc = 0;

	atomic_store(&e->stop, true);
	for (int i = 0; i < e->llm_clients; i++) {
		struct tdmt_el_client *cl = &e->llm[i];
		if (!cl->started)
			continue;
		close(cl->stdin_fd);
		int st = tdmt_wait_child(cl->pid, timeout_ms);
		llm_verdict(e, cl, st);
		if (st < 0)
			rc = -1;
		cl->started = false;
	}
	for (int i = 0; i < e->chol_clients; i++) {
		struct tdmt_el_client *cl = &e->chol[i];
		if (cl->started)
			pthread_join(cl->thread, NULL);
		cl->started = false;
	}
	return rc;
}

int tdmt_elastic_warm(struct tdmt_elastic *e, unsigned long long n, int timeout_ms)
{
	for (int w = 0; w < timeout_ms; w += 5) {
		if (atomic_load(&e->n.graphs_ok) >= n)
			return 0;
		tdmt_sleep_ms(5);
	}
	return -1;
}

void tdmt_elastic_watch(struct tdmt_elastic *e, unsigned id, uint64_t since_ns)
{
	if (id >= TDMT_EL_MAX_IDS)
		return;
	atomic_store(&e->first_start[id], 0);
	atomic_store(&e->watch_since[id], since_ns);
}

unsigned tdmt_elastic_done_between(struct tdmt_elastic *e, uint64_t t0, uint64_t t1)
{
	unsigned n = atomic_load(&e->ndone), k = 0;

	for (unsigned i = 0; i < n; i++)
		k += e->done_ns[i] >= t0 && e->done_ns[i] < t1;
	return k;
}

/* ---- device changes ---- */

int tdmt_device_ctl(const char *sock, uint32_t op, const char *name, uint64_t value, json_t **reply)
{
	struct tdm_ctl_device req;
	struct tdmt_raw r;
	char *text = NULL;
	int rc = -1000;

	memset(&req, 0, sizeof(req));
	req.op = op;
	req.value = value;
	snprintf(req.name, sizeof(req.name), "%s", name ? name : "");
	if (reply)
		*reply = NULL;
	if (tdmt_raw_connect(&r, sock, TDM_ROLE_CONTROL, 30000) == 0)
		rc = tdmt_raw_control_ex(r.sock, TDM_MSG_CTL_DEVICE, &req, sizeof(req), NULL, 0,
		                         &text);
	tdmt_raw_close(&r);
	if (reply && text)
		*reply = json_loads(text, 0, NULL);
	free(text);
	return rc;
}

int tdmt_device_view(json_t *status, const char *name, struct tdmt_dev_view *v)
{
	size_t i;
	json_t *d;

	memset(v, 0, sizeof(*v));
	v->id = -1;
	json_array_foreach(json_object_get(status, "devices"), i, d)
	{
		const char *n = json_string_value(json_object_get(d, "name"));
		json_int_t id = json_integer_value(json_object_get(d, "index"));
		if (!n || strcmp(n, name) || id < v->id)
			continue;
		const char *st = json_string_value(json_object_get(d, "state"));
		const char *kind = json_string_value(json_object_get(d, "kind"));
		v->id = (int)id;
		snprintf(v->state, sizeof(v->state), "%s", st ? st : "active");
		v->accelerator = kind && strcmp(kind, "cpu") != 0;
	}
	json_array_foreach(json_object_get(status, "available"), i, d)
	{
		const char *n = json_string_value(json_object_get(d, "name"));
		const char *kind = json_string_value(json_object_get(d, "kind"));
		if (!n || strcmp(n, name))
			continue;
		/* Found, not in use: a gone id of that name is history. */
		snprintf(v->state, sizeof(v->state), "available");
		v->accelerator = kind && strcmp(kind, "cpu") != 0;
	}
	return 0;
}

void tdmt_tasks_per_name(json_t *status, char *out, size_t len)
{
	json_t *devs = json_object_get(status, "devices"), *d, *e;
	size_t i, j, used = 0;

	out[0] = '\0';
	json_array_foreach(devs, i, d)
	{
		const char *name = json_string_value(json_object_get(d, "name"));
		bool first = true;
		json_int_t sum = 0;
		json_array_foreach(devs, j, e)
		{
			const char *other = json_string_value(json_object_get(e, "name"));
			if (!name || !other || strcmp(name, other))
				continue;
			first = first && j >= i;
			sum += json_integer_value(json_object_get(e, "tasks_run"));
		}
		if (!first || used >= len)
			continue;
		int w = snprintf(out + used, len - used, "%s%s %lld", used ? ", " : "", name,
		                 (long long)sum);
		if (w > 0)
			used += (size_t)w;
	}
}

/* Whether another CPU worker of the list than `except` takes tasks. */
static bool other_cpu_active(const struct tdmt_dev_view *views, int n, int except)
{
	for (int i = 0; i < n; i++)
		if (i != except && !views[i].accelerator && !strcmp(views[i].state, "active"))
			return true;
	return false;
}

int tdmt_elastic_fire_events(struct tdmt_el_events *ev)
{
	struct tdmt_dev_view views[16];
	uint64_t rng = ev->seed ? ev->seed : 1;

	if (ev->nnames > 16)
		return -1;
	/* Sent ones count; a round that finds no change to make only pauses. */
	for (int k = 0; (int)ev->sent < ev->count && k < 4 * ev->count; k++) {
		json_t *st = tdmt_status_doc(ev->sock);
		if (!st)
			return -1;
		for (int i = 0; i < ev->nnames; i++)
			tdmt_device_view(st, ev->names[i], &views[i]);
		json_decref(st);

		/* A device and a change it allows; a few tries, then a pause. */
		int pick = -1;
		uint32_t op = 0;
		for (int tries = 0; tries < 8 && pick < 0; tries++) {
			int i = (int)tdmt_rand_range(&rng, 0, (uint64_t)ev->nnames - 1);
			const char *s = views[i].state;
			bool removable = !ev->capacity_refusals;
			bool leaves_cpu =
			        views[i].accelerator || other_cpu_active(views, ev->nnames, i);
			unsigned dice = (unsigned)tdmt_rand_range(&rng, 0, 99);
			if ((!strcmp(s, "gone") || !strcmp(s, "available")) && removable)
				op = TDM_DEV_ADD;
			else if (!strcmp(s, "draining"))
				op = dice < 75 || !removable ? TDM_DEV_RESUME : TDM_DEV_REMOVE;
			else if (!strcmp(s, "active") && leaves_cpu)
				op = dice < 75 || !removable ? TDM_DEV_DRAIN : TDM_DEV_REMOVE;
			else
				continue;
			pick = i;
		}
		if (pick >= 0) {
			json_t *reply = NULL;
			int rc = tdmt_device_ctl(ev->sock, op, ev->names[pick], 0, &reply);
			ev->sent++;
			if (rc == 0) {
				ev->applied++;
				ev->by_op[op]++;
			} else if (rc == -1000) {
				ev->no_reply++;
			} else {
				const char *why =
				        json_string_value(json_object_get(reply, "reason"));
				const char *text =
				        json_string_value(json_object_get(reply, "error"));
				ev->refused++;
				if (op == TDM_DEV_ADD && why &&
				    !strcmp(why, TDM_CTL_REASON_CAPACITY))
					ev->capacity_refusals++;
				snprintf(ev->last_error, sizeof(ev->last_error), "%s %s: %s (%s)",
				         op == TDM_DEV_ADD ? "add" : "change", ev->names[pick],
				         text ? text : tdm_strerror(rc), why ? why : "?");
			}
			json_decref(reply);
		}
		tdmt_sleep_ms((unsigned)tdmt_rand_range(&rng, ev->pause_min_ms, ev->pause_max_ms));
	}
	return 0;
}
