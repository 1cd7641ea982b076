/* Replicas and coherence through the engine: data written on one device and
 * read on another, write-back before completion, eviction under a tiny
 * device memory cap with every byte kept, a device fault moving the task
 * elsewhere, a task too large for a device. A fake accelerator (device
 * memory from malloc, copies by memcpy) runs everywhere; the same checks run
 * on a real OpenCL device when one is found (PoCL in CI). */
#include <hwloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/engine.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "tandem.h"

/* ---- a fake accelerator ---------------------------------------------------- */

struct backend_event {
	int status;
};

static _Atomic int fake_h2d, fake_d2h;

static bool fake_supports(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	return k->cpu != NULL;
}

static int fake_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	(void)d;
	*mem = malloc(bytes);
	return *mem ? 0 : -TDM_ENOMEM;
}

static void fake_free(const struct backend_device *d, void *mem)
{
	(void)d;
	free(mem);
}

static struct backend_event *new_event(void)
{
	return calloc(1, sizeof(struct backend_event));
}

static int fake_h2d_copy(const struct backend_device *d, void *mem, uint64_t off, const void *host,
                         uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)d;
	(void)after;
	memcpy((char *)mem + off, host, bytes);
	atomic_fetch_add(&fake_h2d, 1);
	*done = new_event();
	return 0;
}

static int fake_d2h_copy(const struct backend_device *d, void *host, void *mem, uint64_t off,
                         uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)d;
	(void)after;
	memcpy(host, (char *)mem + off, bytes);
	atomic_fetch_add(&fake_d2h, 1);
	*done = new_event();
	return 0;
}

/* Runs the CPU version on the device copies. */
static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call, struct backend_event *const *waits,
                       size_t nwaits, struct backend_event **done)
{
	struct tdm_kernel_call c = *call;
	(void)d;
	(void)waits;
	(void)nwaits;
	for (uint32_t i = 0; i < c.nargs; i++)
		c.ptr[i] = (char *)c.mem[i] + c.off[i];
	*done = new_event();
	(*done)->status = k->cpu(&c);
	return 0;
}

static int fake_wait(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	return ev->status ? -TDM_EDEVICE : 0;
}

static int fake_query(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	return ev->status ? -TDM_EDEVICE : 1;
}

static void fake_release(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	free(ev);
}

static const struct backend_ops fake_accel = {
	.name = "fake",
	.supports = fake_supports,
	.mem_alloc = fake_alloc,
	.mem_free = fake_free,
	.copy_h2d = fake_h2d_copy,
	.copy_d2h = fake_d2h_copy,
	.launch_async = fake_launch,
	.event_wait = fake_wait,
	.event_query = fake_query,
	.event_release = fake_release,
};

static int host_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d;
	return k->cpu(call);
}

static const struct backend_ops fake_host = { .name = "host", .launch = host_launch };

/* ---- a small machine: devices, residency, engine ---------------------------- */

#define MAX_DEV 4

struct machine {
	struct engine_flow flow; /* the one client */
	struct backend_device devs[MAX_DEV];
	size_t ndev;
	struct residency res;
	struct engine *e;
	_Atomic int graphs_done;
	int copies_timed; /* residency's copy_observed calls (under its lock) */
	bool copy_wrong; /* one of them named other nodes or a size not seen */
};

/* The transfer model's feed: write-backs of N-float buffers from node 1. */
static void on_copy_observed(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t ns)
{
	struct machine *m = ctx;
	m->copies_timed++;
	if (src != 1 || dst != 0 || bytes != 1024 * sizeof(float) || ns == 0)
		m->copy_wrong = true;
}

static void on_graph_done(void *ctx, struct engine_graph *g)
{
	struct machine *m = ctx;
	(void)g;
	atomic_fetch_add(&m->graphs_done, 1);
}

static void machine_add(struct machine *m, const struct backend_device *d, uint64_t cap)
{
	m->devs[m->ndev] = *d;
	if (backend_is_accelerator(d)) {
		int node = residency_add_node(&m->res, &m->devs[m->ndev], cap);
		assert_true(node > 0);
		m->devs[m->ndev].node = (uint16_t)node;
	}
	m->ndev++;
}

static const struct backend_device host_dev = { .name = "cpu0", .ops = &fake_host };

/* An empty machine, with a host (CPU) device first when with_host. */
static void machine_init(struct machine *m, bool with_host)
{
	memset(m, 0, sizeof(*m));
	m->flow.id = 1;
	residency_init(&m->res);
	if (with_host)
		machine_add(m, &host_dev, 0);
}

static void machine_start(struct machine *m, const uint32_t *faults)
{
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = &policy_eager,
		                    .devices = m->devs,
		                    .ndevices = m->ndev,
		                    .hooks = { .graph_done = on_graph_done, .ctx = m },
		                    .res = &m->res,
		                    .pipeline_depth = 2,
		                    .inject_faults = faults };
	assert_int_equal(engine_create(&ep, &m->e), 0);
	assert_int_equal(engine_flow_add(m->e, &m->flow), 0);
}

static void machine_stop(struct machine *m)
{
	engine_flow_gone(m->e, &m->flow);
	engine_destroy(m->e);
	residency_fini(&m->res);
}

/* A buffer: host memory plus its residency. */
struct buf {
	float *host;
	uint64_t bytes;
	struct tdm_data data;
};

/* Buffers are kept on devices across graphs (as weights would be) unless
 * a test says otherwise. */
static void buf_init_keep(struct machine *m, struct buf *b, size_t nfloats, float v, uint32_t id,
                          bool keep)
{
	b->bytes = nfloats * sizeof(float);
	b->host = malloc(b->bytes);
	for (size_t i = 0; i < nfloats; i++)
		b->host[i] = v;
	residency_data_init(&m->res, &b->data, b->host, b->bytes, id, keep);
}

static void buf_init(struct machine *m, struct buf *b, size_t nfloats, float v, uint32_t id)
{
	buf_init_keep(m, b, nfloats, v, id, true);
}

static void buf_fini(struct machine *m, struct buf *b)
{
	residency_data_fini(&m->res, &b->data);
	free(b->host);
}

/* A graph whose tasks run in the order given (a chain). */
struct task_spec {
	const char *kernel;
	struct buf *args[2];
	float f;
};

static struct engine_graph *make_chain(struct engine_flow *flow, const struct task_spec *ts,
                                       uint32_t n)
{
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = flow;
	g->ntasks = n;
	g->tasks = calloc(n, sizeof(*g->tasks));
	g->succ_off = calloc(n + 1, sizeof(uint32_t));
	g->succ = calloc(n, sizeof(uint32_t));
	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = &g->tasks[i];
		t->graph = g;
		t->index = i;
		t->kernel = kernel_by_id((uint32_t)kernel_lookup(ts[i].kernel));
		assert_non_null(t->kernel);
		t->call.nargs = t->kernel->nargs;
		for (uint32_t a = 0; a < t->call.nargs; a++) {
			t->call.ptr[a] = ts[i].args[a]->host;
			t->call.len[a] = ts[i].args[a]->bytes;
			t->data[a] = &ts[i].args[a]->data;
		}
		t->call.s[0].f32 = ts[i].f;
		if (i > 0)
			atomic_store(&t->ndeps, 1);
		g->succ_off[i + 1] = g->succ_off[i] + (i + 1 < n);
		if (i + 1 < n)
			g->succ[g->succ_off[i]] = i + 1;
	}
	return g;
}

static void free_graph(struct engine_graph *g)
{
	engine_graph_free_arrays(g);
	free(g);
}

static void assert_all(const struct buf *b, float v)
{
	for (size_t i = 0; i < b->bytes / sizeof(float); i++)
		if (b->host[i] != v)
			fail_msg("element %zu is %g, expected %g", i, b->host[i], v);
}

static const char *valid_on(struct machine *m, struct buf *b)
{
	static char where[128];
	residency_describe(&m->res, &b->data, where, sizeof(where));
	return where;
}

/* ---- the checks, on any accelerator ---------------------------------------------- */

/* fill on accel A, axpy reading it on accel B (or the host), axpy on the
 * host: each read sees the last write, and the host view is right at the end. */
static void check_cross_device(const struct backend_device *acc_a,
                               const struct backend_device *acc_b)
{
	struct machine m;
	struct buf x, y;

	machine_init(&m, true);
	machine_add(&m, acc_a, 0);
	if (acc_b)
		machine_add(&m, acc_b, 0);
	machine_start(&m, NULL);
	buf_init(&m, &x, 1000, 1.0f, 1);
	buf_init(&m, &y, 1000, 10.0f, 2);

	struct task_spec ts[] = {
		{ "fill", { &x }, 3.0f }, /* on A: x = 3 */
		{ "axpy", { &x, &y }, 2.0f }, /* on B (or host): y = 10 + 6 */
		{ "axpy", { &y, &x }, 1.0f }, /* on host: x = 3 + 16 */
		{ "axpy", { &x, &y }, 1.0f }, /* on A: y = 16 + 19 */
	};
	unsigned where[] = { 1, acc_b ? 2 : 0, 0, 1 };
	struct engine_graph *g = make_chain(&m.flow, ts, 4);
	engine_submit(m.e, g);
	for (int i = 0; i < 4; i++)
		assert_true(engine_run_one(m.e, where[i]));
	assert_int_equal(atomic_load(&m.graphs_done), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(g->tasks[i].device, where[i]);
	/* Written back before completion: the host holds the latest values. */
	assert_all(&x, 19.0f);
	assert_all(&y, 35.0f);
	/* y's last writer was A: A's copy and the host's are valid. */
	assert_string_equal(valid_on(&m, &y), "host,acc0");

	free_graph(g);
	buf_fini(&m, &x);
	buf_fini(&m, &y);
	machine_stop(&m);
}

/* Twelve buffers through a device that holds two: each is filled on the
 * device, evicted (written back), later read back on the device. */
static void check_eviction(const struct backend_device *acc)
{
	enum { NBUF = 12, N = 1024 };
	struct machine m;
	struct buf b[NBUF], acc_sum;
	struct task_spec ts[2 * NBUF];

	machine_init(&m, true);
	machine_add(&m, acc, 2 * N * sizeof(float) + 100);
	m.res.copy_observed = on_copy_observed;
	m.res.copy_ctx = &m;
	machine_start(&m, NULL);
	buf_init(&m, &acc_sum, N, 0.0f, 100);
	for (int i = 0; i < NBUF; i++) {
		buf_init(&m, &b[i], N, -1.0f, (uint32_t)i + 1);
		ts[i] = (struct task_spec){ "fill", { &b[i] }, (float)(i + 1) };
	}
	struct engine_graph *g = make_chain(&m.flow, ts, NBUF);
	engine_submit(m.e, g);
	for (int i = 0; i < NBUF; i++)
		assert_true(engine_run_one(m.e, 1));
	assert_int_equal(atomic_load(&g->status), 0);
	for (int i = 0; i < NBUF; i++)
		assert_all(&b[i], (float)(i + 1));
	free_graph(g);

	/* Now every buffer is read on the device again: it comes back in. The
	 * sum lives on the device too and may itself be evicted on the way. */
	for (int i = 0; i < NBUF; i++)
		ts[i] = (struct task_spec){ "axpy", { &b[i], &acc_sum }, 1.0f };
	g = make_chain(&m.flow, ts, NBUF);
	engine_submit(m.e, g);
	for (int i = 0; i < NBUF; i++)
		assert_true(engine_run_one(m.e, 1));
	assert_int_equal(atomic_load(&g->status), 0);
	assert_all(&acc_sum, NBUF * (NBUF + 1) / 2.0f);
	for (int i = 0; i < NBUF; i++)
		assert_all(&b[i], (float)(i + 1));
	free_graph(g);

	struct res_node_stats st;
	residency_node_stats(&m.res, 1, &st);
	assert_true(st.evictions >= NBUF);
	assert_true(st.writebacks >= NBUF - 2);
	assert_true(st.used <= st.cap);
	/* Each write-back of a settled replica was timed for the transfer model. */
	assert_true(m.copies_timed >= NBUF - 2);
	assert_false(m.copy_wrong);

	for (int i = 0; i < NBUF; i++)
		buf_fini(&m, &b[i]);
	buf_fini(&m, &acc_sum);
	machine_stop(&m);
}

/* The accelerator fails its first launch: it is marked unhealthy and the
 * task runs on the host instead; the graph succeeds. */
static void check_fault_moves_task(const struct backend_device *acc)
{
	struct machine m;
	uint32_t faults[] = { 0, 1 };
	struct buf x;

	machine_init(&m, true);
	machine_add(&m, acc, 0);
	machine_start(&m, faults);
	buf_init(&m, &x, 256, 0.0f, 1);
	struct task_spec ts[] = { { "fill", { &x }, 5.0f } };
	struct engine_graph *g = make_chain(&m.flow, ts, 1);
	engine_submit(m.e, g);
	assert_true(engine_run_one(m.e, 1)); /* fails, goes back to the queue */
	assert_int_equal(atomic_load(&m.graphs_done), 0);
	const struct engine_device *d = engine_device(m.e, 1);
	assert_false(atomic_load(&((struct engine_device *)d)->healthy));
	assert_int_equal(atomic_load(&((struct engine_device *)d)->faults), 1);
	/* An unhealthy device takes no task another device can run. */
	assert_false(engine_run_one(m.e, 1));
	assert_true(engine_run_one(m.e, 0));
	assert_int_equal(atomic_load(&m.graphs_done), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	assert_int_equal(g->tasks[0].device, 0);
	assert_all(&x, 5.0f);
	free_graph(g);
	buf_fini(&m, &x);
	machine_stop(&m);
}

/* A buffer larger than the device's cap: the task runs on the host. */
static void check_too_big(const struct backend_device *acc)
{
	struct machine m;
	struct buf x;

	machine_init(&m, true);
	machine_add(&m, acc, 4096);
	machine_start(&m, NULL);
	buf_init(&m, &x, 4096, 0.0f, 1);
	struct task_spec ts[] = { { "fill", { &x }, 7.0f } };
	struct engine_graph *g = make_chain(&m.flow, ts, 1);
	engine_submit(m.e, g);
	assert_true(engine_run_one(m.e, 1)); /* no room: back to the queue */
	assert_false(engine_run_one(m.e, 1));
	assert_true(engine_run_one(m.e, 0));
	assert_int_equal(atomic_load(&g->status), 0);
	assert_all(&x, 7.0f);
	free_graph(g);
	buf_fini(&m, &x);
	machine_stop(&m);
}

/* ---- on the fake accelerator ------------------------------------------------------ */

static const struct backend_device fake_a = { .name = "acc0",
	                                      .kind = TDM_DEV_GPU,
	                                      .ops = &fake_accel,
	                                      .mem_bytes = 1 << 30,
	                                      .numa_node = -1 };
static const struct backend_device fake_b = { .name = "acc1",
	                                      .kind = TDM_DEV_GPU,
	                                      .ops = &fake_accel,
	                                      .mem_bytes = 1 << 30,
	                                      .numa_node = -1 };

static void test_fake_cross_device(void **state)
{
	(void)state;
	int h2d = atomic_load(&fake_h2d), d2h = atomic_load(&fake_d2h);
	check_cross_device(&fake_a, &fake_b);
	/* x: to B (via the host), to A; y: to B, back, to A, back: no more. */
	assert_true(atomic_load(&fake_h2d) - h2d <= 4);
	assert_true(atomic_load(&fake_d2h) - d2h <= 4);
}

static void test_fake_eviction(void **state)
{
	(void)state;
	check_eviction(&fake_a);
}

static void test_fake_fault(void **state)
{
	(void)state;
	check_fault_moves_task(&fake_a);
}

static void test_fake_too_big(void **state)
{
	(void)state;
	check_too_big(&fake_a);
}

/* A read-only input stays on the device: the second read copies nothing. */
static void test_fake_no_second_copy(void **state)
{
	struct machine m;
	struct buf x, y;
	(void)state;

	machine_init(&m, false);
	machine_add(&m, &fake_a, 0);
	machine_start(&m, NULL);
	buf_init(&m, &x, 64, 1.0f, 1);
	buf_init(&m, &y, 64, 0.0f, 2);
	struct task_spec ts[] = { { "axpy", { &x, &y }, 1.0f }, { "axpy", { &x, &y }, 1.0f } };
	int h2d = atomic_load(&fake_h2d);
	struct engine_graph *g = make_chain(&m.flow, ts, 2);
	engine_submit(m.e, g);
	assert_true(engine_run_one(m.e, 0));
	assert_true(engine_run_one(m.e, 0));
	assert_int_equal(atomic_load(&fake_h2d) - h2d, 2); /* x and y, once each */
	assert_all(&y, 2.0f);
	assert_string_equal(valid_on(&m, &x), "host,acc0");
	free_graph(g);
	buf_fini(&m, &x);
	buf_fini(&m, &y);
	machine_stop(&m);
}

/* A buffer the client may write between graphs: its device copy is
 * dropped when the graph completes, so the next graph sees the client's
 * new values. */
static void test_fake_client_writes_between_graphs(void **state)
{
	struct machine m;
	struct buf x, y;
	(void)state;

	machine_init(&m, false);
	machine_add(&m, &fake_a, 0);
	machine_start(&m, NULL);
	buf_init_keep(&m, &x, 64, 3.0f, 1, false);
	buf_init_keep(&m, &y, 64, 1.0f, 2, false);
	struct task_spec ts[] = { { "axpy", { &x, &y }, 2.0f } };
	for (int round = 0; round < 2; round++) {
		struct engine_graph *g = make_chain(&m.flow, ts, 1);
		engine_submit(m.e, g);
		assert_true(engine_run_one(m.e, 0));
		assert_int_equal(atomic_load(&g->status), 0);
		assert_string_equal(valid_on(&m, &x), "host*");
		free_graph(g);
		for (int i = 0; i < 64; i++)
			x.host[i] = 0.5f; /* the client writes its view */
	}
	assert_all(&y, 1.0f + 6.0f + 1.0f);
	buf_fini(&m, &x);
	buf_fini(&m, &y);
	machine_stop(&m);
}

/* ---- on a real OpenCL device ------------------------------------------------------ */

static hwloc_topology_t topo;
static struct backend_device cl_dev[2];
static size_t n_cl;

static int cl_setup(void **state)
{
	struct backend_probe_params pp = { 0 };
	(void)state;
	hwloc_topology_init(&topo);
	hwloc_topology_load(topo);
	pp.topology = topo;
	if (backend_opencl.probe(&pp, cl_dev, 2, &n_cl) != 0)
		n_cl = 0;
	if (!n_cl)
		printf("# no OpenCL device: %s\n", pp.note);
	return 0;
}

static int cl_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < n_cl; i++)
		backend_opencl.release(&cl_dev[i]);
	hwloc_topology_destroy(topo);
	return 0;
}

#define NEED_OPENCL()                                                                              \
	do {                                                                                       \
		if (!n_cl) {                                                                       \
			printf("# skipped: no OpenCL device\n");                                   \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

static void test_opencl_cross_device(void **state)
{
	(void)state;
	NEED_OPENCL();
	struct backend_device a = cl_dev[0];
	snprintf(a.name, sizeof(a.name), "acc0");
	check_cross_device(&a, NULL);
}

static void test_opencl_eviction(void **state)
{
	(void)state;
	NEED_OPENCL();
	check_eviction(&cl_dev[0]);
}

static void test_opencl_fault(void **state)
{
	(void)state;
	NEED_OPENCL();
	check_fault_moves_task(&cl_dev[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fake_cross_device),
		cmocka_unit_test(test_fake_eviction),
		cmocka_unit_test(test_fake_fault),
		cmocka_unit_test(test_fake_too_big),
		cmocka_unit_test(test_fake_no_second_copy),
		cmocka_unit_test(test_fake_client_writes_between_graphs),
		cmocka_unit_test(test_opencl_cross_device),
		cmocka_unit_test(test_opencl_eviction),
		cmocka_unit_test(test_opencl_fault),
	};
	return cmocka_run_group_tests(tests, cl_setup, cl_teardown);
}
