/* Data chains whose steps run on a host core and on an OpenCL device, through
 * the real engine (threaded workers, the accelerator's pipeline and
 * prefetch), the real CPU and OpenCL backends and the residency
 * (placement/residency.c): every value exact, every buffer's replicas where
 * the coherence protocol puts them when each graph completes.
 *
 * eager, the daemon's default policy, hands each ready task to whichever
 * capable worker asks first: it promises no split between devices, and on
 * a small machine the host worker may take every task. So the test that
 * data moves between devices does not use eager: a test-only policy runs
 * each task on the device the test's plan names, in a pattern that moves
 * every buffer host -> device -> host -> device, reads replicas a write on
 * the other side made stale, and leaves some buffers' latest contents on
 * the device when the graph ends (to be written back). Each task must run
 * where the plan says. A second test runs the same chains under eager with
 * whatever split it makes, and checks the values and replicas against the
 * devices the tasks actually ran on.
 *
 * Skips when no OpenCL device is found (PoCL's CPU device in CI). */
#include <hwloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "tandem.h"

enum { HOST = 0, ACCEL = 1, NDEV = 2 };

/* ---- a test-only policy: each task on the worker its graph's plan names ---- */

/* What the test, as the engine's front end, hangs on engine_graph.owner:
 * the worker of each task, by task index. */
struct plan {
	const uint8_t *worker;
};

struct planq {
	const struct engine_core *core;
	size_t nworkers;
	pthread_mutex_t lock;
	struct engine_task *head[NDEV], *tail[NDEV];
};

static int plan_init(const struct policy_params *p, void **priv)
{
	if (p->nworkers > NDEV)
		return -TDM_EINVAL;
	struct planq *q = calloc(1, sizeof(*q));
	if (!q)
		return -TDM_ENOMEM;
	q->core = p->core;
	q->nworkers = p->nworkers;
	pthread_mutex_init(&q->lock, NULL);
	*priv = q;
	return 0;
}

static void plan_fini(void *priv)
{
	struct planq *q = priv;
	pthread_mutex_destroy(&q->lock);
	free(q);
}

static void plan_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct planq *q = priv;
	bool kick[NDEV] = { false };
	(void)worker;
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = tasks[i];
		const struct plan *pl = t->graph->owner;
		unsigned w = pl->worker[t->index];
		t->next = NULL;
		if (q->tail[w])
			q->tail[w]->next = t;
		else
			q->head[w] = t;
		q->tail[w] = t;
		kick[w] = true;
	}
	pthread_mutex_unlock(&q->lock);
	/* The core wakes "some" capable worker; these tasks are for one. */
	for (unsigned w = 0; w < q->nworkers; w++)
		if (kick[w])
			core_kick(q->core, w);
}

static struct engine_task *plan_pick_next(void *priv, unsigned worker)
{
	struct planq *q = priv;
	pthread_mutex_lock(&q->lock);
	struct engine_task *t = q->head[worker];
	if (t) {
		q->head[worker] = t->next;
		if (!t->next)
			q->tail[worker] = NULL;
	}
	pthread_mutex_unlock(&q->lock);
	return t;
}

/* Lets the accelerator's worker prefetch the inputs of what waits for it. */
static size_t plan_peek(void *priv, unsigned worker, struct engine_task **out, size_t max)
{
	struct planq *q = priv;
	size_t n = 0;
	pthread_mutex_lock(&q->lock);
	for (struct engine_task *t = q->head[worker]; t && n < max; t = t->next)
		out[n++] = t;
	pthread_mutex_unlock(&q->lock);
	return n;
}

static const struct policy_ops policy_plan = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "plan (test)",
	.init = plan_init,
	.fini = plan_fini,
	.tasks_ready = plan_tasks_ready,
	.pick_next = plan_pick_next,
	.peek = plan_peek,
};

/* ---- the devices: one host core and the first OpenCL device ---------------- */

static hwloc_topology_t topo;
static struct backend_device cpu_dev, cl_dev;
static bool have_cpu, have_cl;

/* Probes ops, keeps the first device found in *keep, releases the rest. */
static bool probe_first(const struct backend_ops *ops, struct backend_device *keep)
{
	struct backend_device found[64];
	struct backend_probe_params pp = { .topology = topo };
	size_t n = 0;
	if (ops->probe(&pp, found, 64, &n) != 0)
		n = 0;
	if (!n && pp.note[0])
		printf("# %s\n", pp.note); /* names the backend */
	else if (!n)
		printf("# %s: no device\n", ops->name);
	for (size_t i = 1; i < n; i++)
		if (ops->release)
			ops->release(&found[i]);
	if (n)
		*keep = found[0];
	return n > 0;
}

static int group_setup(void **state)
{
	(void)state;
	if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0)
		return -1;
	have_cpu = probe_first(&backend_cpu, &cpu_dev);
	have_cl = probe_first(&backend_opencl, &cl_dev);
	if (have_cl)
		printf("# devices: %s (%s), %s (%s)\n", cpu_dev.name, cpu_dev.model, cl_dev.name,
		       cl_dev.model);
	return have_cpu ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	if (have_cl && backend_opencl.release)
		backend_opencl.release(&cl_dev);
	if (have_cpu && backend_cpu.release)
		backend_cpu.release(&cpu_dev);
	hwloc_topology_destroy(topo);
	return 0;
}

static void need_opencl(void)
{
	if (!have_cl) {
		printf("# skipped: no OpenCL device in this machine\n");
		skip();
	}
}

/* ---- the machine: engine over both devices, residency with the device's node ---- */

struct machine {
	struct backend_device devs[NDEV];
	struct residency res;
	struct engine *e;
	struct engine_flow flow;
	_Atomic int graphs_done;
};

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	struct machine *m = ctx;
	(void)g;
	atomic_fetch_add(&m->graphs_done, 1);
}

static void machine_start(struct machine *m, const struct policy_ops *policy)
{
	memset(m, 0, sizeof(*m));
	m->flow.id = 1;
	residency_init(&m->res);
	m->devs[HOST] = cpu_dev;
	m->devs[ACCEL] = cl_dev;
	int node = residency_add_node(&m->res, &m->devs[ACCEL], 0);
	assert_true(node > 0);
	m->devs[ACCEL].node = (uint16_t)node;
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = policy,
		.devices = m->devs,
		.ndevices = NDEV,
		.spin_us = 50,
		.hooks = { .graph_done = on_graph_done, .ctx = m },
		.topology = topo,
		.poll_fd = -1,
		.start_workers = true,
		.res = &m->res,
		.pipeline_depth = 4,
		/* A stall this long is a lost wake-up, not a slow machine. */
		.watchdog_ms = 10000,
	};
	assert_int_equal(engine_create(&ep, &m->e), 0);
	assert_int_equal(engine_flow_add(m->e, &m->flow), 0);
}

static void machine_stop(struct machine *m)
{
	engine_flow_gone(m->e, &m->flow);
	engine_destroy(m->e);
}

static uint64_t tasks_run(struct machine *m, unsigned w)
{
	struct engine_device *d = (struct engine_device *)engine_device(m->e, w);
	return atomic_load(&d->tasks_run);
}

/* ---- buffers, with a reference copy and a model of their replicas ---------- */

enum { N = 4096, CHAINS = 8, PAIRS = 20, ROUNDS = 3 };

struct buf {
	float *host; /* what the engine works on (the client's view) */
	float ref[N]; /* the same operations, done here one after another */
	bool keep; /* keep_on_devices: device copies outlive the graph */
	/* Where the protocol should keep each half of the buffer valid (fills
	 * write all of it or its first half; residency keeps validity by
	 * range). */
	bool model[NDEV][2];
	bool was_valid[NDEV]; /* the node held a valid copy at some point */
	struct res_data data;
};

/* What the workload made the protocol do (from the model), to show that it
 * covers each case. */
struct coverage {
	uint32_t moved_in; /* a read on the device of data the host wrote */
	uint32_t moved_out; /* a read on the host of data the device wrote */
	uint32_t stale_reads; /* a read on the device, whose copy a host write made stale */
	uint32_t write_backs; /* latest contents only on the device when the graph ended */
};

static void buf_init(struct machine *m, struct buf *b, uint32_t id, bool keep, float v0,
                     uint32_t salt)
{
	b->host = aligned_alloc(4096, N * sizeof(float));
	assert_non_null(b->host);
	for (size_t i = 0; i < N; i++)
		b->host[i] = b->ref[i] = v0 + (float)((i * 7 + salt) % 13);
	b->keep = keep;
	memset(b->model, 0, sizeof(b->model));
	memset(b->was_valid, 0, sizeof(b->was_valid));
	b->model[HOST][0] = b->model[HOST][1] = true;
	b->was_valid[HOST] = true;
	residency_data_init(&m->res, &b->data, b->host, N * sizeof(float), id, keep);
}

static void buf_fini(struct machine *m, struct buf *b)
{
	residency_data_fini(&m->res, &b->data);
	free(b->host);
}

/* The protocol's view of one access on node n: a read of the whole buffer
 * gets the halves missing there copied in (from the other node, the only
 * other holder), a write makes n the only holder of the halves it writes. */
static void model_read(struct buf *b, unsigned n, struct coverage *cov)
{
	if (b->model[n][0] && b->model[n][1])
		return;
	if (n == ACCEL)
		cov->moved_in++;
	else
		cov->moved_out++;
	if (n == ACCEL && b->was_valid[n])
		cov->stale_reads++;
	b->model[n][0] = b->model[n][1] = true;
	b->was_valid[n] = true;
}

static void model_write(struct buf *b, unsigned n, uint64_t len)
{
	for (int h = 0; h < (len == N * sizeof(float) ? 2 : 1); h++)
		for (unsigned m = 0; m < NDEV; m++)
			b->model[m][h] = m == n;
	b->was_valid[n] = true;
}

/* Completion: the host copy is made valid (written back), device copies
 * of buffers the client may write next are dropped. */
static void model_flush(struct buf *b, struct coverage *cov)
{
	if (!b->model[ACCEL][0] && !b->model[ACCEL][1])
		return;
	if (!b->model[HOST][0] || !b->model[HOST][1]) {
		cov->write_backs++;
		b->model[HOST][0] = b->model[HOST][1] = true;
	}
	if (!b->keep)
		b->model[ACCEL][0] = b->model[ACCEL][1] = false;
}

static void check_buf(struct machine *m, const struct buf *b, const char *what, int chain,
                      int round)
{
	for (size_t i = 0; i < N; i++)
		if (b->host[i] != b->ref[i])
			fail_msg("round %d, chain %d, %s[%zu] is %g, expected %g", round, chain,
			         what, i, b->host[i], b->ref[i]);
	char want[128] = "", got[128];
	size_t len = 0;
	for (unsigned n = 0; n < NDEV; n++) {
		const bool *v = b->model[n], *o = b->model[n == HOST ? ACCEL : HOST];
		if (!v[0] && !v[1])
			continue;
		/* * = holds a half nobody else holds; ~ = holds part only */
		bool sole = (v[0] && !o[0]) || (v[1] && !o[1]);
		len += (size_t)snprintf(want + len, sizeof(want) - len, "%s%s%s%s", len ? "," : "",
		                        m->res.nodes[n].name, sole ? "*" : "",
		                        v[0] && v[1] ? "" : "~");
	}
	residency_describe(&m->res, (struct res_data *)&b->data, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("round %d, chain %d, %s: valid on \"%s\", expected \"%s\"", round, chain,
		         what, got, want);
}

/* ---- the chains ------------------------------------------------------------ */

/* One task of the workload: fill x (all of it, or its first half), or
 * y += alpha x. */
struct step {
	enum kernel_id kernel;
	int chain;
	uint64_t len; /* fill: bytes written from the start of x */
	float v; /* fill: the value; axpy: alpha */
	uint8_t worker; /* the plan */
};

/* Which worker runs the fill and the axpy of pair p of chain c in round r.
 * Four patterns in turn: fill on the host and axpy on the device, the
 * reverse, both on the device, both on the host. Along a chain this moves
 * x and y both ways and reads copies that a write on the other side made
 * stale (y read on the device in pattern 2 after the host wrote it in 1,
 * x and y in 0 after 3). Chains start at different patterns, so both
 * workers have work at every step and chains end on either side. */
static const uint8_t patterns[4][2] = {
	{ HOST, ACCEL },
	{ ACCEL, HOST },
	{ ACCEL, ACCEL },
	{ HOST, HOST },
};

static void make_steps(struct step *s, int round)
{
	size_t n = 0;
	for (int p = 0; p < PAIRS; p++) {
		for (int c = 0; c < CHAINS; c++) {
			const uint8_t *pat = patterns[(p + c + round) % 4];
			/* Every third fill writes half of x: the other half stays
			 * where it is valid, and the next read on the other side
			 * brings only what it lacks. */
			uint64_t len = (p + c) % 3 == 1 ? N / 2 * sizeof(float) : N * sizeof(float);
			s[n++] = (struct step){ KERNEL_FILL, c, len,
				                (float)(1 + p + 2 * c + 3 * round), pat[0] };
			s[n++] = (struct step){ KERNEL_AXPY, c, 0, (float)(1 + p % 2), pat[1] };
		}
	}
}

#define NSTEPS (PAIRS * CHAINS * 2)

/* One argument of a step: the buffer (bi: x of chain c is c, y is
 * CHAINS + c), the bytes it covers from the start, the access. */
struct access {
	struct buf *b;
	int bi;
	uint64_t len;
	uint8_t mode;
};

static size_t step_args(const struct step *s, struct buf *x, struct buf *y, struct access *a)
{
	if (s->kernel == KERNEL_FILL) {
		a[0] = (struct access){ &x[s->chain], s->chain, s->len, TDM_W };
		return 1;
	}
	a[0] = (struct access){ &x[s->chain], s->chain, N * sizeof(float), TDM_R };
	a[1] = (struct access){ &y[s->chain], CHAINS + s->chain, N * sizeof(float), TDM_RW };
	return 2;
}

/* The graph of the steps, edges from the buffers' accesses as the intake
 * makes them (read after write, write after read or write). */
static struct engine_graph *make_graph(struct machine *m, const struct step *s, size_t n,
                                       struct buf *x, struct buf *y, struct plan *plan)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	assert_non_null(g);
	g->flow = &m->flow;
	g->owner = plan;
	g->ntasks = (uint32_t)n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(2 * n + 1, sizeof(uint32_t));
	uint32_t(*edges)[2] = calloc(2 * n + 1, sizeof(*edges));
	assert_true(g->tasks && g->succ_off && g->succ && edges);
	/* Per buffer: the last writer and the readers since (chains are
	 * private, so at most one reader at a time). */
	int64_t last_w[2 * CHAINS], reader[2 * CHAINS];
	size_t nedges = 0;
	for (int i = 0; i < 2 * CHAINS; i++)
		last_w[i] = reader[i] = -1;
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = &g->tasks[i];
		struct access a[2];
		size_t na = step_args(&s[i], x, y, a);
		t->graph = g;
		t->index = (uint32_t)i;
		t->kernel = kernel_by_id(s[i].kernel);
		t->call.nargs = t->kernel->nargs;
		t->call.s[0].f32 = s[i].v;
		assert_int_equal(na, t->call.nargs);
		int64_t from[4];
		size_t nfrom = 0;
		for (size_t k = 0; k < na; k++) {
			t->call.ptr[k] = a[k].b->host;
			t->call.len[k] = a[k].len;
			t->call.off[k] = 0;
			t->data[k] = &a[k].b->data;
			int bi = a[k].bi;
			if (a[k].mode & TDM_W) {
				from[nfrom++] = reader[bi] >= 0 ? reader[bi] : last_w[bi];
				last_w[bi] = (int64_t)i;
				reader[bi] = -1;
			} else {
				from[nfrom++] = last_w[bi];
				reader[bi] = (int64_t)i;
			}
		}
		for (size_t k = 0; k < nfrom; k++) {
			bool dup = from[k] < 0;
			for (size_t j = 0; j < k && !dup; j++)
				dup = from[j] == from[k];
			if (dup)
				continue;
			edges[nedges][0] = (uint32_t)from[k];
			edges[nedges][1] = (uint32_t)i;
			nedges++;
			atomic_fetch_add(&t->ndeps, 1);
			g->succ_off[from[k] + 1]++;
		}
	}
	for (size_t i = 0; i < n; i++)
		g->succ_off[i + 1] += g->succ_off[i];
	uint32_t *cur = calloc(n + 1, sizeof(uint32_t));
	assert_non_null(cur);
	memcpy(cur, g->succ_off, (n + 1) * sizeof(uint32_t));
	for (size_t e = 0; e < nedges; e++)
		g->succ[cur[edges[e][0]]++] = edges[e][1];
	free(cur);
	free(edges);
	return g;
}

/* The steps on the reference copies, and their accesses on the model, with
 * each task on the worker that ran it (eager) or that the plan names. */
static void apply_reference(const struct step *s, const uint8_t *ran_on, size_t n, struct buf *x,
                            struct buf *y, struct coverage *cov)
{
	for (size_t i = 0; i < n; i++) {
		struct buf *bx = &x[s[i].chain], *by = &y[s[i].chain];
		unsigned w = ran_on[i];
		if (s[i].kernel == KERNEL_FILL) {
			for (size_t e = 0; e < s[i].len / sizeof(float); e++)
				bx->ref[e] = s[i].v;
			model_write(bx, w, s[i].len); /* write-only: nothing comes along */
		} else {
			for (size_t e = 0; e < N; e++)
				by->ref[e] += s[i].v * bx->ref[e];
			model_read(bx, w, cov);
			model_read(by, w, cov);
			model_write(by, w, N * sizeof(float));
		}
	}
}

static void wait_graphs(struct machine *m, int n)
{
	const struct timespec ms = { 0, 1000000 };
	for (int i = 0; i < 120000 && atomic_load(&m->graphs_done) < n; i++)
		nanosleep(&ms, NULL);
	if (atomic_load(&m->graphs_done) < n)
		fail_msg("graph %d did not complete in 120 s", n);
}

/* ROUNDS graphs of the chains. With a plan, each task must run where it
 * says; without (eager), anywhere. Either way the values are exact and the
 * replicas are where the protocol puts them given where each task ran. */
static void run_chains(const struct policy_ops *policy, bool planned, struct coverage *cov)
{
	struct machine m;
	struct buf *x = calloc(CHAINS, sizeof(*x)), *y = calloc(CHAINS, sizeof(*y));
	struct step *s = calloc(NSTEPS, sizeof(*s));
	uint8_t *want = calloc(NSTEPS, 1), *ran = calloc(NSTEPS, 1);
	assert_true(x && y && s && want && ran);

	machine_start(&m, policy);
	/* Odd chains keep their device copies between graphs (as weights or
	 * KV caches would); even chains' client rewrites y between graphs. */
	for (int c = 0; c < CHAINS; c++) {
		buf_init(&m, &x[c], 1 + 2 * (uint32_t)c, c % 2, -1.0f, (uint32_t)c);
		buf_init(&m, &y[c], 2 + 2 * (uint32_t)c, c % 2, 0.0f, 5 + (uint32_t)c);
	}
	memset(cov, 0, sizeof(*cov));
	for (int r = 0; r < ROUNDS; r++) {
		make_steps(s, r);
		for (size_t i = 0; i < NSTEPS; i++)
			want[i] = s[i].worker;
		struct plan plan = { .worker = want };
		uint64_t run0[NDEV], planned_on[NDEV] = { 0 }, ran_on[NDEV] = { 0 };
		for (unsigned w = 0; w < NDEV; w++)
			run0[w] = tasks_run(&m, w);

		struct engine_graph *g = make_graph(&m, s, NSTEPS, x, y, planned ? &plan : NULL);
		engine_submit(m.e, g);
		wait_graphs(&m, r + 1);
		assert_int_equal(atomic_load(&g->status), 0);
		for (size_t i = 0; i < NSTEPS; i++) {
			const struct engine_task *t = &g->tasks[i];
			assert_int_equal(t->status, 0);
			assert_true(t->device < NDEV);
			ran[i] = (uint8_t)t->device;
			ran_on[t->device]++;
			planned_on[want[i]]++;
			if (planned && t->device != want[i])
				fail_msg("round %d: task %zu (%s, chain %d) ran on %s, planned on "
				         "%s",
				         r, i, t->kernel->name, s[i].chain, m.devs[t->device].name,
				         m.devs[want[i]].name);
		}
		printf("# round %d: tasks per device: %s %llu, %s %llu\n", r, m.devs[HOST].name,
		       (unsigned long long)ran_on[HOST], m.devs[ACCEL].name,
		       (unsigned long long)ran_on[ACCEL]);
		/* The devices' own counts agree with where the tasks say they ran. */
		for (unsigned w = 0; w < NDEV; w++) {
			assert_int_equal(tasks_run(&m, w) - run0[w], ran_on[w]);
			if (planned)
				assert_int_equal(ran_on[w], planned_on[w]);
		}
		engine_graph_free_arrays(g);
		free(g);

		apply_reference(s, ran, NSTEPS, x, y, cov);
		for (int c = 0; c < CHAINS; c++) {
			model_flush(&x[c], cov);
			model_flush(&y[c], cov);
			check_buf(&m, &x[c], "x", c, r);
			check_buf(&m, &y[c], "y", c, r);
		}
		/* The client writes the buffers it did not promise to leave alone. */
		for (int c = 0; c < CHAINS; c += 2)
			for (size_t i = 0; i < N; i++)
				y[c].host[i] = y[c].ref[i] = (float)((i + (size_t)r) % 11);
	}
	struct engine_counters ec;
	engine_counters(m.e, &ec);
	assert_false(ec.fallback); /* the watchdog never had to step in */
	assert_int_equal(ec.tasks_failed, 0);
	printf("# coverage: %u moves to the device, %u back, %u reads of stale copies, %u "
	       "write-backs at completion\n",
	       cov->moved_in, cov->moved_out, cov->stale_reads, cov->write_backs);

	machine_stop(&m);
	for (int c = 0; c < CHAINS; c++) {
		buf_fini(&m, &x[c]);
		buf_fini(&m, &y[c]);
	}
	residency_fini(&m.res);
	free(x);
	free(y);
	free(s);
	free(want);
	free(ran);
}

/* Each step where the plan puts it: every buffer crosses between the host
 * and the device both ways, stale copies are refreshed before they are
 * read, and what the device wrote last reaches the client's view. */
static void test_chains_alternate_devices(void **state)
{
	struct coverage cov;
	(void)state;
	need_opencl();
	run_chains(&policy_plan, true, &cov);
	/* The plan is fixed: it exercises every case, every time. */
	assert_true(cov.moved_in > 0);
	assert_true(cov.moved_out > 0);
	assert_true(cov.stale_reads > 0);
	assert_true(cov.write_backs > 0);
}

/* eager, the daemon's default: any split between the devices (one may run
 * nothing), and still exact values and coherent replicas. */
static void test_chains_under_eager(void **state)
{
	struct coverage cov;
	(void)state;
	need_opencl();
	run_chains(&policy_eager, false, &cov);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chains_alternate_devices),
		cmocka_unit_test(test_chains_under_eager),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
