/* Replicas and coherence through the engine: data written on one device and
 * read on another, write-back before completion, eviction under a tiny
 * device memory cap with every byte kept, a device fault moving the task
 * elsewhere, a task too large for a device. Prefetch through the residency
 * API: holds, what a prefetch may evict, stale data, two workers. KV caches,
 * validity by byte range: a one-row append moves exactly that row (both ways,
 * through the engine too), disjoint writers on two nodes, a pooled step's
 * attentions on two devices at once. A fake accelerator (device memory from
 * malloc, copies by memcpy) runs everywhere; the same checks run
 * on a real OpenCL device when one is found (PoCL in CI). */
#include <hwloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "graph/build.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "tandem.h"
#include "tests/harness/fake_backend.h"

/* ---- a fake accelerator ---------------------------------------------------- */

static const struct backend_ops fake_accel = { FAKE_ACCEL_MEM_OPS, .name = "fake",
	                                       .supports = fake_supports,
	                                       .launch_async = fake_launch };

static const struct backend_ops fake_host = { FAKE_HOST_OPS, .name = "host" };

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
	struct res_data data;
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

/* ---- prefetch, through the residency API (no engine) ----------------------------- */

/* Residency with fake accelerators of the given caps (nodes 1, 2, ...). */
static void res_only_init(struct machine *m, const uint64_t *caps, size_t n)
{
	static const struct backend_device *devs[] = { &fake_a, &fake_b };
	machine_init(m, false);
	for (size_t i = 0; i < n; i++)
		machine_add(m, devs[i], caps[i]);
}

static struct res_arg rarg(struct buf *b, uint8_t mode)
{
	return (struct res_arg){ .data = &b->data, .off = 0, .len = b->bytes, .mode = mode };
}

static int acquire_on(struct machine *m, unsigned node, const struct res_arg *a, size_t n,
                      bool prefetched, void **mem, size_t *nwaits)
{
	struct backend_event *waits[2 * TDM_MAX_ARGS];
	uint64_t off[TDM_MAX_ARGS];
	size_t nw = 0;
	int err = prefetched
	                  ? residency_acquire_prefetched(&m->res, node, a, n, waits, &nw, mem, off)
	                  : residency_acquire(&m->res, node, a, n, waits, &nw, mem, off);
	if (nwaits)
		*nwaits = nw;
	return err;
}

/* A task that uses b alone on `node` and is done with it (b stays there). */
static void touch(struct machine *m, unsigned node, struct buf *b)
{
	struct res_arg a = rarg(b, TDM_R);
	void *mem[1];
	assert_int_equal(acquire_on(m, node, &a, 1, false, mem, NULL), 0);
	residency_release(&m->res, node, &a, 1, true);
}

static bool on_node(struct buf *b, unsigned node)
{
	return b->data.rep[node].mem != NULL;
}

static void assert_mem_all(const void *mem, size_t nfloats, float v)
{
	const float *f = mem;
	for (size_t i = 0; i < nfloats; i++)
		if (f[i] != v)
			fail_msg("device element %zu is %g, expected %g", i, f[i], v);
}

/* Prefetch, then the task acquires the prefetched data: one copy, counted
 * as a prefetch; the hold becomes the task's pin. */
static void test_prefetch_then_acquire(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf x, y;
	struct res_node_stats st;
	(void)state;

	res_only_init(&m, (uint64_t[]){ 0 }, 1);
	buf_init(&m, &x, N, 2.0f, 1);
	buf_init(&m, &y, N, 0.0f, 2);
	struct res_arg a[2] = { rarg(&x, TDM_R), rarg(&y, TDM_W) };
	int h2d = atomic_load(&fake_h2d);
	uint64_t issued = 0;

	assert_int_equal(residency_prefetch(&m.res, 1, a, 2, &issued), 0);
	assert_int_equal(issued, x.bytes);
	assert_int_equal(atomic_load(&fake_h2d) - h2d, 1); /* x only: y is written */
	assert_int_equal(x.data.rep[1].holds, 1);
	assert_int_equal(y.data.rep[1].holds, 0);
	assert_false(on_node(&y, 1));
	residency_node_stats(&m.res, 1, &st);
	assert_int_equal(st.prefetches, 1);
	assert_int_equal(st.prefetch_bytes, x.bytes);
	assert_int_equal(st.bytes_in, x.bytes);
	assert_string_equal(valid_on(&m, &x), "host,acc0");

	/* Prefetching what is there already copies nothing, holds again. */
	assert_int_equal(residency_prefetch(&m.res, 1, a, 2, &issued), 0);
	assert_int_equal(issued, 0);
	assert_int_equal(x.data.rep[1].holds, 2);
	residency_prefetch_drop(&m.res, 1, a, 2);
	assert_int_equal(x.data.rep[1].holds, 1);

	void *mem[2];
	size_t nwaits;
	assert_int_equal(acquire_on(&m, 1, a, 2, true, mem, &nwaits), 0);
	assert_int_equal(atomic_load(&fake_h2d) - h2d, 1); /* no second copy */
	assert_true(nwaits <= 1); /* at most the prefetch's copy */
	assert_ptr_equal(mem[0], x.data.rep[1].mem);
	assert_mem_all(mem[0], N, 2.0f);
	assert_int_equal(x.data.rep[1].holds, 0);
	assert_int_equal(x.data.rep[1].pins, 1);
	assert_int_equal(y.data.rep[1].pins, 1);
	for (int i = 0; i < N; i++)
		((float *)mem[1])[i] = 7.0f;
	residency_release(&m.res, 1, a, 2, true);
	assert_int_equal(x.data.rep[1].pins, 0);
	assert_int_equal(y.data.rep[1].pins, 0);
	residency_node_stats(&m.res, 1, &st);
	assert_int_equal(st.prefetches, 1);
	assert_int_equal(st.bytes_in, x.bytes);
	struct res_data *ys[] = { &y.data };
	assert_int_equal(residency_flush(&m.res, ys, 1), 0);
	assert_all(&y, 7.0f);

	/* The host node: nothing to prefetch. */
	assert_int_equal(residency_prefetch(&m.res, 0, a, 2, &issued), 0);
	assert_int_equal(issued, 0);
	residency_prefetch_drop(&m.res, 0, a, 2);

	buf_fini(&m, &x);
	buf_fini(&m, &y);
	residency_fini(&m.res);
}

/* A full node whose replicas are pinned, held or owners: a prefetch issues
 * nothing, evicts nothing, writes nothing back, and returns 0. */
static void test_prefetch_full_node(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf p, h, o, c;
	struct res_node_stats st;
	uint64_t issued = 1;
	void *mem[1];
	(void)state;

	res_only_init(&m, (uint64_t[]){ 3 * N * sizeof(float) }, 1);
	buf_init(&m, &p, N, 1.0f, 1);
	buf_init(&m, &h, N, 2.0f, 2);
	buf_init(&m, &o, N, 3.0f, 3);
	buf_init(&m, &c, N, 4.0f, 4);
	struct res_arg ap = rarg(&p, TDM_R), ah = rarg(&h, TDM_R), ao = rarg(&o, TDM_W),
	               ac = rarg(&c, TDM_R);
	/* o: written on the device, the only valid copy, unpinned. */
	assert_int_equal(acquire_on(&m, 1, &ao, 1, false, mem, NULL), 0);
	residency_release(&m.res, 1, &ao, 1, true);
	assert_string_equal(valid_on(&m, &o), "acc0*");
	assert_int_equal(acquire_on(&m, 1, &ap, 1, false, mem, NULL), 0); /* pinned */
	assert_int_equal(residency_prefetch(&m.res, 1, &ah, 1, NULL), 0); /* held */

	int h2d = atomic_load(&fake_h2d), d2h = atomic_load(&fake_d2h);
	assert_int_equal(residency_prefetch(&m.res, 1, &ac, 1, &issued), 0);
	assert_int_equal(issued, 0);
	assert_int_equal(atomic_load(&fake_h2d), h2d);
	assert_int_equal(atomic_load(&fake_d2h), d2h);
	assert_false(on_node(&c, 1));
	assert_true(on_node(&p, 1) && on_node(&h, 1) && on_node(&o, 1));
	residency_node_stats(&m.res, 1, &st);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.writebacks, 0);
	assert_int_equal(st.prefetches, 1); /* h's */
	/* The skipped argument is held all the same (the counts balance). */
	assert_int_equal(c.data.rep[1].holds, 1);
	residency_prefetch_drop(&m.res, 1, &ac, 1);
	assert_int_equal(c.data.rep[1].holds, 0);

	residency_release(&m.res, 1, &ap, 1, true);
	residency_prefetch_drop(&m.res, 1, &ah, 1);
	buf_fini(&m, &p);
	buf_fini(&m, &h);
	buf_fini(&m, &o);
	buf_fini(&m, &c);
	residency_fini(&m.res);
}

/* Room for a prefetch comes from the least recently used replica that is
 * neither pinned nor held, never from a pinned or held one. */
static void test_prefetch_evicts_lru_unheld(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf p, h, u1, u2, c, d, e;
	struct res_node_stats st;
	uint64_t issued;
	void *mem[1];
	(void)state;

	res_only_init(&m, (uint64_t[]){ 4 * N * sizeof(float) }, 1);
	buf_init(&m, &u1, N, 1.0f, 1);
	buf_init(&m, &p, N, 2.0f, 2);
	buf_init(&m, &h, N, 3.0f, 3);
	buf_init(&m, &u2, N, 4.0f, 4);
	buf_init(&m, &c, N, 5.0f, 5);
	buf_init(&m, &d, N, 6.0f, 6);
	buf_init(&m, &e, N, 7.0f, 7);
	struct res_arg ap = rarg(&p, TDM_R), ah = rarg(&h, TDM_R), ac = rarg(&c, TDM_R),
	               ad = rarg(&d, TDM_R), ae = rarg(&e, TDM_R);
	/* LRU order, oldest first: u1, p (pinned), h (held), u2. */
	touch(&m, 1, &u1);
	assert_int_equal(acquire_on(&m, 1, &ap, 1, false, mem, NULL), 0);
	assert_int_equal(residency_prefetch(&m.res, 1, &ah, 1, NULL), 0);
	touch(&m, 1, &u2);

	assert_int_equal(residency_prefetch(&m.res, 1, &ac, 1, &issued), 0);
	assert_int_equal(issued, c.bytes);
	assert_false(on_node(&u1, 1)); /* the oldest unpinned, unheld one */
	assert_true(on_node(&p, 1) && on_node(&h, 1) && on_node(&u2, 1) && on_node(&c, 1));
	assert_string_equal(valid_on(&m, &u1), "host*"); /* the only holder now */

	assert_int_equal(residency_prefetch(&m.res, 1, &ad, 1, &issued), 0);
	assert_int_equal(issued, d.bytes);
	assert_false(on_node(&u2, 1));
	assert_true(on_node(&p, 1) && on_node(&h, 1) && on_node(&c, 1) && on_node(&d, 1));

	/* Only pinned and held replicas left: e does not get in. */
	assert_int_equal(residency_prefetch(&m.res, 1, &ae, 1, &issued), 0);
	assert_int_equal(issued, 0);
	assert_false(on_node(&e, 1));
	assert_true(on_node(&p, 1) && on_node(&h, 1) && on_node(&c, 1) && on_node(&d, 1));
	residency_node_stats(&m.res, 1, &st);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.prefetches, 3);
	assert_int_equal(st.prefetch_bytes, 3 * N * sizeof(float));
	assert_true(st.used <= st.cap);

	residency_release(&m.res, 1, &ap, 1, true);
	residency_prefetch_drop(&m.res, 1, &ah, 1);
	residency_prefetch_drop(&m.res, 1, &ac, 1);
	residency_prefetch_drop(&m.res, 1, &ad, 1);
	residency_prefetch_drop(&m.res, 1, &ae, 1);
	struct buf *all[] = { &p, &h, &u1, &u2, &c, &d, &e };
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(all[i]->data.rep[1].holds, 0);
		assert_int_equal(all[i]->data.rep[1].pins, 0);
		buf_fini(&m, all[i]);
	}
	residency_fini(&m.res);
}

/* Dropping a prefetch releases its holds: the replica can be evicted again. */
static void test_prefetch_drop(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf a, b, c;
	uint64_t issued;
	(void)state;

	res_only_init(&m, (uint64_t[]){ 2 * N * sizeof(float) }, 1);
	buf_init(&m, &a, N, 1.0f, 1);
	buf_init(&m, &b, N, 2.0f, 2);
	buf_init(&m, &c, N, 3.0f, 3);
	/* One task reading a twice and b. */
	struct res_arg ab[3] = { rarg(&a, TDM_R), rarg(&b, TDM_R), rarg(&a, TDM_R) };
	struct res_arg ac = rarg(&c, TDM_R);
	assert_int_equal(residency_prefetch(&m.res, 1, ab, 3, &issued), 0);
	assert_int_equal(issued, 2 * N * sizeof(float));
	assert_int_equal(a.data.rep[1].holds, 2);
	assert_int_equal(b.data.rep[1].holds, 1);

	assert_int_equal(residency_prefetch(&m.res, 1, &ac, 1, &issued), 0);
	assert_int_equal(issued, 0);
	residency_prefetch_drop(&m.res, 1, &ac, 1);

	residency_prefetch_drop(&m.res, 1, ab, 3); /* the task went elsewhere */
	assert_int_equal(a.data.rep[1].holds, 0);
	assert_int_equal(b.data.rep[1].holds, 0);
	assert_true(on_node(&a, 1) && on_node(&b, 1)); /* still there, evictable */

	/* a was found again after b: b is the least recently used. */
	assert_int_equal(residency_prefetch(&m.res, 1, &ac, 1, &issued), 0);
	assert_int_equal(issued, c.bytes);
	assert_false(on_node(&b, 1));
	assert_true(on_node(&a, 1) && on_node(&c, 1));
	residency_prefetch_drop(&m.res, 1, &ac, 1);
	assert_int_equal(c.data.rep[1].holds, 0);

	buf_fini(&m, &a);
	buf_fini(&m, &b);
	buf_fini(&m, &c);
	residency_fini(&m.res);
}

/* A task about to run comes before data held for later ones: it may evict
 * a held replica when nothing else can go; the prefetched task then copies
 * again. An acquire_prefetched with no room keeps the holds. */
static void test_prefetch_task_comes_first(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf p, h, c;
	void *mem[1];
	(void)state;

	res_only_init(&m, (uint64_t[]){ 2 * N * sizeof(float) }, 1);
	buf_init(&m, &p, N, 1.0f, 1);
	buf_init(&m, &h, N, 2.0f, 2);
	buf_init(&m, &c, N, 3.0f, 3);
	struct res_arg ap = rarg(&p, TDM_R), ah = rarg(&h, TDM_R), ac = rarg(&c, TDM_R);
	assert_int_equal(acquire_on(&m, 1, &ap, 1, false, mem, NULL), 0);
	assert_int_equal(residency_prefetch(&m.res, 1, &ah, 1, NULL), 0);

	assert_int_equal(acquire_on(&m, 1, &ac, 1, false, mem, NULL), 0);
	assert_false(on_node(&h, 1));
	assert_int_equal(h.data.rep[1].holds, 1);

	/* p and c pinned: no room for h now; the hold stays. */
	assert_int_equal(acquire_on(&m, 1, &ah, 1, true, mem, NULL), -TDM_ENOMEM);
	assert_int_equal(h.data.rep[1].holds, 1);
	assert_int_equal(h.data.rep[1].pins, 0);
	residency_release(&m.res, 1, &ap, 1, true);
	int h2d = atomic_load(&fake_h2d);
	assert_int_equal(acquire_on(&m, 1, &ah, 1, true, mem, NULL), 0);
	assert_int_equal(atomic_load(&fake_h2d) - h2d, 1);
	assert_mem_all(mem[0], N, 2.0f);
	assert_int_equal(h.data.rep[1].holds, 0);
	assert_int_equal(h.data.rep[1].pins, 1);
	assert_false(on_node(&p, 1));

	residency_release(&m.res, 1, &ah, 1, true);
	residency_release(&m.res, 1, &ac, 1, true);
	buf_fini(&m, &p);
	buf_fini(&m, &h);
	buf_fini(&m, &c);
	residency_fini(&m.res);
}

/* A write on another node between the prefetch and the task: the task reads
 * the new contents, and the policies' hint forgets the stale node. */
static void test_prefetch_then_write_elsewhere(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf x;
	void *mem[1];
	(void)state;

	res_only_init(&m, (uint64_t[]){ 0, 0 }, 2);
	buf_init(&m, &x, N, 1.0f, 1);
	assert_int_equal(atomic_load(&x.data.planned), 0);
	struct res_arg r = rarg(&x, TDM_R), w = rarg(&x, TDM_RW);
	atomic_store(&x.data.planned, (1u << 1) | (1u << 2));
	assert_int_equal(residency_prefetch(&m.res, 1, &r, 1, NULL), 0);
	assert_mem_all(x.data.rep[1].mem, N, 1.0f);

	/* Another task writes x on node 2. */
	assert_int_equal(acquire_on(&m, 2, &w, 1, false, mem, NULL), 0);
	for (int i = 0; i < N; i++)
		((float *)mem[0])[i] = 9.0f;
	residency_release(&m.res, 2, &w, 1, true);
	assert_string_equal(valid_on(&m, &x), "acc1*");
	assert_int_equal(atomic_load(&x.data.planned), 1u << 2);
	assert_true(on_node(&x, 1)); /* held: the memory stays, stale */
	assert_int_equal(x.data.rep[1].holds, 1);

	/* Stale replicas do not count as found by a later prefetch either:
	 * the host copy is stale too, so it skips rather than read back. */
	int h2d = atomic_load(&fake_h2d), d2h = atomic_load(&fake_d2h);
	uint64_t issued = 1;
	assert_int_equal(residency_prefetch(&m.res, 1, &r, 1, &issued), 0);
	assert_int_equal(issued, 0);
	assert_int_equal(atomic_load(&fake_d2h), d2h);
	residency_prefetch_drop(&m.res, 1, &r, 1);

	assert_int_equal(acquire_on(&m, 1, &r, 1, true, mem, NULL), 0);
	assert_mem_all(mem[0], N, 9.0f);
	assert_int_equal(atomic_load(&fake_d2h) - d2h, 1); /* node 2 to the host */
	assert_int_equal(atomic_load(&fake_h2d) - h2d, 1); /* the host to node 1 */
	assert_int_equal(x.data.rep[1].holds, 0);
	residency_release(&m.res, 1, &r, 1, true);
	assert_string_equal(valid_on(&m, &x), "host,acc0,acc1");

	buf_fini(&m, &x);
	residency_fini(&m.res);
}

/* A copy that fails to issue: -TDM_EDEVICE, no hold left, the failed
 * argument's memory given back; what was copied before stays valid. */
static void test_prefetch_copy_fails(void **state)
{
	enum { N = 256 };
	struct machine m;
	struct buf a, b;
	struct res_node_stats st;
	uint64_t issued;
	(void)state;

	res_only_init(&m, (uint64_t[]){ 0 }, 1);
	buf_init(&m, &a, N, 1.0f, 1);
	buf_init(&m, &b, N, 2.0f, 2);
	struct res_arg ab[2] = { rarg(&a, TDM_R), rarg(&b, TDM_R) };
	atomic_store(&fake_h2d_fail_in, 2);
	assert_int_equal(residency_prefetch(&m.res, 1, ab, 2, &issued), -TDM_EDEVICE);
	atomic_store(&fake_h2d_fail_in, 0);
	assert_int_equal(issued, a.bytes);
	assert_int_equal(a.data.rep[1].holds, 0);
	assert_int_equal(b.data.rep[1].holds, 0);
	assert_false(on_node(&b, 1));
	assert_string_equal(valid_on(&m, &a), "host,acc0");
	residency_node_stats(&m.res, 1, &st);
	assert_int_equal(st.used, a.bytes);
	assert_int_equal(st.prefetches, 1);

	buf_fini(&m, &a);
	buf_fini(&m, &b);
	residency_fini(&m.res);
}

/* Two workers, each prefetching its next task while the current one holds
 * its pins, on its own node with room for four of the five buffers it
 * uses; the weights are shared. */
enum { PF_N = 1024, PF_ITERS = 300 }; /* PF_ITERS: a multiple of 3 */

struct pf_worker {
	struct machine *m;
	unsigned node;
	struct buf *w0, *w1, z, v, y;
};

static void pf_task(struct pf_worker *pw, int k, struct res_arg *a)
{
	switch (k % 3) {
	case 0:
		a[0] = rarg(pw->w0, TDM_R);
		a[1] = rarg(pw->w1, TDM_R);
		break;
	case 1:
		a[0] = rarg(&pw->z, TDM_R);
		a[1] = rarg(pw->w0, TDM_R);
		break;
	default:
		a[0] = rarg(&pw->v, TDM_R);
		a[1] = rarg(pw->w1, TDM_R);
		break;
	}
	a[2] = rarg(&pw->y, TDM_RW);
}

static void *pf_thread(void *arg)
{
	struct pf_worker *pw = arg;
	struct machine *m = pw->m;
	struct res_arg cur[3], next[3];
	void *mem[3];
	bool cur_pf = false;

	pf_task(pw, 0, cur);
	for (int k = 0; k < PF_ITERS; k++) {
		if (cur_pf ? acquire_on(m, pw->node, cur, 3, true, mem, NULL)
		           : acquire_on(m, pw->node, cur, 3, false, mem, NULL))
			fail_msg("acquire failed on node %u", pw->node);
		/* While it "runs", the next task's inputs come in; one in
		 * four goes elsewhere after all (dropped). */
		pf_task(pw, k + 1, next);
		bool next_pf = residency_prefetch(&m->res, pw->node, next, 3, NULL) == 0;
		if (next_pf && k % 4 == 3) {
			residency_prefetch_drop(&m->res, pw->node, next, 3);
			next_pf = false;
		}
		const float *in0 = mem[0], *in1 = mem[1];
		float *out = mem[2];
		for (int i = 0; i < PF_N; i++)
			out[i] += in0[i] + in1[i];
		residency_release(&m->res, pw->node, cur, 3, true);
		struct res_node_stats st;
		residency_node_stats(&m->res, pw->node == 1 ? 2 : 1, &st);
		memcpy(cur, next, sizeof(cur));
		cur_pf = next_pf;
	}
	if (cur_pf)
		residency_prefetch_drop(&m->res, pw->node, cur, 3);
	return NULL;
}

static void test_prefetch_two_workers(void **state)
{
	struct machine m;
	struct buf w0, w1;
	struct pf_worker pw[2];
	pthread_t th[2];
	(void)state;

	uint64_t cap = 4 * PF_N * sizeof(float);
	res_only_init(&m, (uint64_t[]){ cap, cap }, 2);
	buf_init(&m, &w0, PF_N, 1.0f, 1);
	buf_init(&m, &w1, PF_N, 2.0f, 2);
	for (int t = 0; t < 2; t++) {
		pw[t].m = &m;
		pw[t].node = (unsigned)t + 1;
		pw[t].w0 = &w0;
		pw[t].w1 = &w1;
		buf_init(&m, &pw[t].z, PF_N, 3.0f, 10 + (uint32_t)t);
		buf_init(&m, &pw[t].v, PF_N, 4.0f, 30 + (uint32_t)t);
		buf_init(&m, &pw[t].y, PF_N, 0.0f, 20 + (uint32_t)t);
	}
	for (int t = 0; t < 2; t++)
		assert_int_equal(pthread_create(&th[t], NULL, pf_thread, &pw[t]), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);

	/* Tasks add 1 + 2, 3 + 1, 4 + 2 in turn. */
	float want = (PF_ITERS / 3) * (3.0f + 4.0f + 6.0f);
	for (int t = 0; t < 2; t++) {
		struct res_data *ys[] = { &pw[t].y.data };
		assert_int_equal(residency_flush(&m.res, ys, 1), 0);
		assert_all(&pw[t].y, want);
		assert_all(&pw[t].z, 3.0f);
		assert_all(&pw[t].v, 4.0f);
	}
	assert_all(&w0, 1.0f);
	assert_all(&w1, 2.0f);
	for (unsigned n = 1; n <= 2; n++) {
		struct res_node_stats st;
		residency_node_stats(&m.res, n, &st);
		assert_true(st.used <= st.cap);
		assert_true(st.prefetches > 0);
		assert_true(st.evictions > 0);
		assert_true(st.bytes_in >= st.prefetch_bytes);
		struct buf *all[] = { &w0,      &w1,      &pw[0].z, &pw[0].v,
			              &pw[0].y, &pw[1].z, &pw[1].v, &pw[1].y };
		for (size_t i = 0; i < 8; i++) {
			assert_int_equal(all[i]->data.rep[n].holds, 0);
			assert_int_equal(all[i]->data.rep[n].pins, 0);
		}
	}
	for (int t = 0; t < 2; t++) {
		buf_fini(&m, &pw[t].z);
		buf_fini(&m, &pw[t].v);
		buf_fini(&m, &pw[t].y);
	}
	buf_fini(&m, &w0);
	buf_fini(&m, &w1);
	residency_fini(&m.res);
}

/* ---- KV caches: validity by range ------------------------------------------------ */

enum { KV_ROWS = 64, KV_ROWF = 64 }; /* a cache of 64 rows of 64 floats */
#define KV_ROW ((uint64_t)KV_ROWF * sizeof(float))

static struct res_arg kv_rows(struct buf *b, uint64_t row, uint64_t nrows, uint8_t mode)
{
	return (struct res_arg){
		.data = &b->data, .off = row * KV_ROW, .len = nrows * KV_ROW, .mode = mode
	};
}

static uint64_t h2d_bytes_since(uint64_t *mark)
{
	uint64_t now = atomic_load(&fake_h2d_bytes), d = now - *mark;
	*mark = now;
	return d;
}

static uint64_t d2h_bytes_since(uint64_t *mark)
{
	uint64_t now = atomic_load(&fake_d2h_bytes), d = now - *mark;
	*mark = now;
	return d;
}

static void assert_row(const void *base, uint64_t row, float v)
{
	const float *f = (const float *)base + row * KV_ROWF;
	for (int i = 0; i < KV_ROWF; i++)
		if (f[i] != v)
			fail_msg("row %llu element %d is %g, expected %g", (unsigned long long)row,
			         i, f[i], v);
}

/* A one-row append on one node to a cache whose other replica is on another
 * node moves exactly that row, both ways; the cost model sees the same. */
static void test_kv_append_moves_one_row(void **state)
{
	struct machine m;
	struct buf kv;
	void *mem[1];
	uint64_t h2d = atomic_load(&fake_h2d_bytes), d2h = atomic_load(&fake_d2h_bytes);
	(void)state;

	res_only_init(&m, (uint64_t[]){ 0 }, 1);
	buf_init(&m, &kv, KV_ROWS * KV_ROWF, 1.0f, 1);
	struct res_arg all = kv_rows(&kv, 0, KV_ROWS, TDM_R);
	/* The device reads the whole cache: it all moves, once. */
	assert_int_equal(residency_missing(&kv.data, 1, 0, kv.bytes), kv.bytes);
	assert_int_equal(acquire_on(&m, 1, &all, 1, false, mem, NULL), 0);
	residency_release(&m.res, 1, &all, 1, true);
	assert_int_equal(h2d_bytes_since(&h2d), kv.bytes);
	assert_string_equal(valid_on(&m, &kv), "host,acc0");

	/* The host appends row 10: the device's other rows stay valid. */
	struct res_arg row10 = kv_rows(&kv, 10, 1, TDM_W);
	assert_int_equal(acquire_on(&m, 0, &row10, 1, false, mem, NULL), 0);
	for (int i = 0; i < KV_ROWF; i++)
		kv.host[10 * KV_ROWF + i] = 5.0f;
	residency_release(&m.res, 0, &row10, 1, true);
	assert_int_equal(h2d_bytes_since(&h2d) + d2h_bytes_since(&d2h), 0);
	assert_string_equal(valid_on(&m, &kv), "host*,acc0~");
	assert_int_equal(residency_missing(&kv.data, 1, 0, kv.bytes), KV_ROW);
	assert_int_equal(residency_missing(&kv.data, 1, 0, 10 * KV_ROW), 0);
	assert_int_equal(residency_missing(&kv.data, 0, 0, kv.bytes), 0);

	/* The device reads the cache again: exactly the new row moves. */
	assert_int_equal(acquire_on(&m, 1, &all, 1, false, mem, NULL), 0);
	assert_int_equal(h2d_bytes_since(&h2d), KV_ROW);
	assert_int_equal(d2h_bytes_since(&d2h), 0);
	assert_row(mem[0], 9, 1.0f);
	assert_row(mem[0], 10, 5.0f);
	residency_release(&m.res, 1, &all, 1, true);
	assert_string_equal(valid_on(&m, &kv), "host,acc0");

	/* The device appends row 11 (write-only: nothing copied in); the
	 * host reads rows 0..11: exactly that row comes back. */
	struct res_arg row11 = kv_rows(&kv, 11, 1, TDM_W);
	assert_int_equal(acquire_on(&m, 1, &row11, 1, false, mem, NULL), 0);
	for (int i = 0; i < KV_ROWF; i++)
		((float *)mem[0])[11 * KV_ROWF + i] = 7.0f;
	residency_release(&m.res, 1, &row11, 1, true);
	assert_int_equal(h2d_bytes_since(&h2d), 0);
	assert_string_equal(valid_on(&m, &kv), "host~,acc0*");
	assert_int_equal(residency_missing(&kv.data, 0, 0, 12 * KV_ROW), KV_ROW);
	struct res_arg head = kv_rows(&kv, 0, 12, TDM_R);
	assert_int_equal(acquire_on(&m, 0, &head, 1, false, mem, NULL), 0);
	residency_release(&m.res, 0, &head, 1, true);
	assert_int_equal(d2h_bytes_since(&d2h), KV_ROW);
	assert_int_equal(h2d_bytes_since(&h2d), 0);
	assert_row(kv.host, 11, 7.0f);

	/* Row 12 appended on the device, then the graph ends: the write-back
	 * is that row too. */
	struct res_arg row12 = kv_rows(&kv, 12, 1, TDM_W);
	assert_int_equal(acquire_on(&m, 1, &row12, 1, false, mem, NULL), 0);
	for (int i = 0; i < KV_ROWF; i++)
		((float *)mem[0])[12 * KV_ROWF + i] = 8.0f;
	residency_release(&m.res, 1, &row12, 1, true);
	struct res_data *ds[] = { &kv.data };
	assert_int_equal(residency_flush(&m.res, ds, 1), 0);
	assert_int_equal(d2h_bytes_since(&d2h), KV_ROW);
	assert_row(kv.host, 12, 8.0f);
	assert_row(kv.host, 13, 1.0f);
	assert_string_equal(valid_on(&m, &kv), "host,acc0");

	buf_fini(&m, &kv);
	residency_fini(&m.res);
}

/* Appends on disjoint slices of a cache on two nodes, and a task failing
 * on one of them, keep every node's view of the rest intact: the validity
 * map splits and merges back. */
static void test_kv_disjoint_writers(void **state)
{
	struct machine m;
	struct buf kv;
	void *mem[1];
	uint64_t h2d = atomic_load(&fake_h2d_bytes), d2h = atomic_load(&fake_d2h_bytes);
	(void)state;

	res_only_init(&m, (uint64_t[]){ 0, 0 }, 2);
	buf_init(&m, &kv, KV_ROWS * KV_ROWF, 1.0f, 1);
	/* Node 1 appends rows 0, 2, 4 ..., node 2 rows 1, 3, 5 ... (16 each). */
	for (uint64_t r = 0; r < 32; r++) {
		unsigned node = 1 + (unsigned)(r % 2);
		struct res_arg a = kv_rows(&kv, r, 1, TDM_W);
		assert_int_equal(acquire_on(&m, node, &a, 1, false, mem, NULL), 0);
		for (int i = 0; i < KV_ROWF; i++)
			((float *)mem[0])[r * KV_ROWF + i] = (float)(100 + r);
		residency_release(&m.res, node, &a, 1, true);
	}
	assert_int_equal(h2d_bytes_since(&h2d), 0);
	assert_int_equal(residency_missing(&kv.data, 0, 0, kv.bytes), 32 * KV_ROW);
	assert_int_equal(residency_missing(&kv.data, 1, 0, 32 * KV_ROW), 16 * KV_ROW);
	assert_int_equal(residency_missing(&kv.data, 1, 0, 2 * KV_ROW), KV_ROW);
	assert_string_equal(valid_on(&m, &kv), "host*~,acc0*~,acc1*~");

	/* A failed write on node 1 over rows 0..3 drops what node 2 or the
	 * host also hold, keeps its own only copies. */
	struct res_arg bad = kv_rows(&kv, 0, 4, TDM_W);
	assert_int_equal(acquire_on(&m, 1, &bad, 1, false, mem, NULL), 0);
	residency_release(&m.res, 1, &bad, 1, false);
	assert_int_equal(residency_missing(&kv.data, 1, 0, 4 * KV_ROW), 2 * KV_ROW);

	/* Node 1 reads the first 32 rows: the 16 node 2 wrote come through
	 * the host (16 rows back, 16 rows in); nothing else moves. */
	struct res_arg head = kv_rows(&kv, 0, 32, TDM_R);
	assert_int_equal(acquire_on(&m, 1, &head, 1, false, mem, NULL), 0);
	assert_int_equal(d2h_bytes_since(&d2h), 16 * KV_ROW);
	assert_int_equal(h2d_bytes_since(&h2d), 16 * KV_ROW);
	for (uint64_t r = 0; r < 32; r++)
		assert_row(mem[0], r, (float)(100 + r));
	/* Rows past the read were not brought: their device bytes are
	 * whatever the allocation held (not checked), stale there. */
	assert_int_equal(residency_missing(&kv.data, 1, 40 * KV_ROW, KV_ROW), KV_ROW);
	residency_release(&m.res, 1, &head, 1, true);
	assert_int_equal(residency_missing(&kv.data, 1, 0, kv.bytes), 32 * KV_ROW);

	struct res_data *ds[] = { &kv.data };
	assert_int_equal(residency_flush(&m.res, ds, 1), 0);
	assert_int_equal(d2h_bytes_since(&d2h), 16 * KV_ROW); /* node 1's own rows */
	for (uint64_t r = 0; r < 32; r++)
		assert_row(kv.host, r, (float)(100 + r));
	assert_row(kv.host, 63, 1.0f);
	assert_string_equal(valid_on(&m, &kv), "host*,acc0~,acc1~");

	buf_fini(&m, &kv);
	residency_fini(&m.res);
}

/* One task of a chain on byte ranges: kernel, up to two (buffer, first
 * row, rows) arguments, its scalar. */
struct range_spec {
	const char *kernel;
	struct {
		struct buf *b;
		uint64_t row, nrows;
	} arg[2];
	float f;
};

static struct engine_graph *make_range_chain(struct engine_flow *flow, const struct range_spec *rs,
                                             uint32_t n)
{
	struct task_spec ts[8];
	assert_true(n <= 8);
	for (uint32_t i = 0; i < n; i++)
		ts[i] = (struct task_spec){ rs[i].kernel,
			                    { rs[i].arg[0].b, rs[i].arg[1].b },
			                    rs[i].f };
	struct engine_graph *g = make_chain(flow, ts, n);
	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = &g->tasks[i];
		for (uint32_t a = 0; a < t->call.nargs; a++) {
			t->call.off[a] = rs[i].arg[a].row * KV_ROW;
			t->call.len[a] = rs[i].arg[a].nrows * KV_ROW;
			t->call.ptr[a] = (char *)rs[i].arg[a].b->host + t->call.off[a];
		}
	}
	return g;
}

/* Through the engine on a host core and an accelerator: a one-row append on
 * either side moves exactly that row to the other (the bytes residency hands
 * to the backend's copy_h2d / copy_d2h, from its node counters). */
static void check_kv_append_engine(const struct backend_device *acc)
{
	struct machine m;
	struct buf kv, acc_out, host_out;
	struct res_node_stats st;

	machine_init(&m, true);
	machine_add(&m, acc, 0);
	machine_start(&m, NULL);
	buf_init(&m, &kv, KV_ROWS * KV_ROWF, 1.0f, 1);
	buf_init(&m, &acc_out, KV_ROWS * KV_ROWF, 0.0f, 2);
	buf_init(&m, &host_out, 12 * KV_ROWF, 0.0f, 3);
	const struct range_spec rs[] = {
		/* on the device: reads the whole cache */
		{ "axpy", { { &kv, 0, KV_ROWS }, { &acc_out, 0, KV_ROWS } }, 1.0f },
		/* on the host: appends row 10 */
		{ "fill", { { &kv, 10, 1 } }, 5.0f },
		/* on the device: reads the whole cache again */
		{ "axpy", { { &kv, 0, KV_ROWS }, { &acc_out, 0, KV_ROWS } }, 1.0f },
		/* on the device: appends row 11 */
		{ "fill", { { &kv, 11, 1 } }, 7.0f },
		/* on the host: reads rows 0..11 */
		{ "axpy", { { &kv, 0, 12 }, { &host_out, 0, 12 } }, 1.0f },
	};
	const unsigned where[] = { 1, 0, 1, 1, 0 };
	const uint64_t want_in[] = { kv.bytes + acc_out.bytes, 0, KV_ROW, 0, 0 };
	/* The last task ends the graph: acc_out, which the device wrote, is
	 * written back too; of the cache nothing more (row 11 came back). */
	const uint64_t want_out[] = { 0, 0, 0, 0, KV_ROW + acc_out.bytes };
	struct engine_graph *g = make_range_chain(&m.flow, rs, 5);
	engine_submit(m.e, g);
	uint64_t in = 0, out = 0;
	for (int i = 0; i < 5; i++) {
		assert_true(engine_run_one(m.e, where[i]));
		residency_node_stats(&m.res, 1, &st);
		if (st.bytes_in - in != want_in[i] || st.bytes_out - out != want_out[i])
			fail_msg("task %d: %llu bytes in, %llu out; expected %llu, %llu", i,
			         (unsigned long long)(st.bytes_in - in),
			         (unsigned long long)(st.bytes_out - out),
			         (unsigned long long)want_in[i], (unsigned long long)want_out[i]);
		in = st.bytes_in;
		out = st.bytes_out;
	}
	assert_int_equal(atomic_load(&g->status), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(g->tasks[i].device, where[i]);
	/* host_out = rows 0..11 of the cache: 1, ..., 5 (row 10), 7 (row 11) */
	assert_row(host_out.host, 9, 1.0f);
	assert_row(host_out.host, 10, 5.0f);
	assert_row(host_out.host, 11, 7.0f);
	/* acc_out = the cache twice: 2, row 10 1 + 5; written back at the end */
	assert_row(acc_out.host, 0, 2.0f);
	assert_row(acc_out.host, 10, 6.0f);
	assert_row(kv.host, 11, 7.0f);
	free_graph(g);
	buf_fini(&m, &kv);
	buf_fini(&m, &acc_out);
	buf_fini(&m, &host_out);
	machine_stop(&m);
}

static void test_fake_kv_append_engine(void **state)
{
	(void)state;
	uint64_t h2d = atomic_load(&fake_h2d_bytes);
	check_kv_append_engine(&fake_a);
	/* What residency counted is what the backend copied in. */
	assert_int_equal(atomic_load(&fake_h2d_bytes) - h2d, 2 * KV_ROWS * KV_ROW + KV_ROW);
}

/* A decode step over one pooled cache on two accelerators: each request
 * appends its row to its own slice, then its attention reads the slice.
 * The builder gives no edge between requests, every request's attention is
 * ready at once when the appends are done, and two devices run them at the
 * same time (staged on both before either completes). */
static void test_kv_pooled_step_parallel(void **state)
{
	enum { NREQ = 4, SLICE_ROWS = 2 };
	struct machine m;
	struct buf kv, rows, out;
	struct engine_counters c;
	uint32_t req_of[2 * NREQ];
	(void)state;

	machine_init(&m, false);
	machine_add(&m, &fake_a, 0);
	machine_add(&m, &fake_b, 0);
	machine_start(&m, NULL);
	buf_init(&m, &kv, NREQ * SLICE_ROWS * KV_ROWF, 1.0f, 1);
	buf_init(&m, &rows, NREQ * KV_ROWF, 0.0f, 2);
	buf_init(&m, &out, NREQ * SLICE_ROWS * KV_ROWF, 0.0f, 3);
	for (int r = 0; r < NREQ; r++)
		for (int i = 0; i < KV_ROWF; i++)
			rows.host[r * KV_ROWF + i] = (float)(10 + r);

	struct graph_build gb;
	graph_build_init(&gb, 2 * NREQ, 0);
	struct {
		struct buf *b;
		uint64_t off, len;
	} args[2];
	for (int phase = 0; phase < 2; phase++) {
		for (uint32_t r = 0; r < NREQ; r++) {
			struct engine_task *t = graph_build_next(&gb);
			uint64_t slice = (uint64_t)r * SLICE_ROWS * KV_ROW;
			assert_non_null(t);
			memset(t, 0, sizeof(*t));
			if (phase == 0) { /* append: copy the request's new row to its slice */
				t->kernel = kernel_by_id(KERNEL_COPY);
				args[0].b = &rows, args[0].off = r * KV_ROW, args[0].len = KV_ROW;
				args[1].b = &kv, args[1].off = slice + KV_ROW, args[1].len = KV_ROW;
			} else { /* attention stand-in: out slice += its kv slice */
				t->kernel = kernel_by_id(KERNEL_AXPY);
				t->call.s[0].f32 = 1.0f;
				args[0].b = &kv, args[0].off = slice,
				args[0].len = SLICE_ROWS * KV_ROW;
				args[1].b = &out, args[1].off = slice,
				args[1].len = SLICE_ROWS * KV_ROW;
			}
			t->call.nargs = 2;
			for (int a = 0; a < 2; a++) {
				t->call.ptr[a] = (char *)args[a].b->host + args[a].off;
				t->call.off[a] = args[a].off;
				t->call.len[a] = args[a].len;
				t->data[a] = &args[a].b->data;
			}
			uint32_t idx;
			assert_int_equal(graph_build_task(&gb, t, &idx), 0);
			req_of[idx] = r;
			for (int a = 0; a < 2; a++)
				assert_true(graph_build_access(&gb, idx, args[a].b->data.id,
				                               args[a].off, args[a].len,
				                               (uint8_t)t->kernel->arg_modes[a]) >=
				            0);
		}
	}
	struct engine_graph *g = calloc(1, sizeof(*g));
	g->flow = &m.flow;
	assert_int_equal(graph_build_finish(&gb, g), 0);
	graph_build_fini(&gb);
	/* Each request's attention after its own append, and nothing else. */
	for (uint32_t v = 0; v < g->ntasks; v++) {
		uint32_t n = g->succ_off[v + 1] - g->succ_off[v];
		assert_int_equal(n, v < NREQ ? 1 : 0);
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			assert_int_equal(req_of[g->succ[k]], req_of[v]);
	}

	engine_submit(m.e, g);
	engine_counters(m.e, &c);
	assert_int_equal(c.queued, NREQ); /* the appends */
	assert_int_equal(engine_sim_stage(m.e, 0), 2);
	assert_int_equal(engine_sim_stage(m.e, 1), 2);
	for (int i = 0; i < 2; i++) {
		engine_sim_complete(m.e, 0);
		engine_sim_complete(m.e, 1);
	}
	engine_counters(m.e, &c);
	assert_int_equal(c.queued, NREQ); /* every attention ready at once */
	assert_int_equal(engine_sim_stage(m.e, 0), 2);
	assert_int_equal(engine_sim_stage(m.e, 1), 2);
	/* In flight on both devices together. */
	assert_non_null(engine_sim_oldest(m.e, 0));
	assert_non_null(engine_sim_oldest(m.e, 1));
	for (int i = 0; i < 2; i++) {
		engine_sim_complete(m.e, 0);
		engine_sim_complete(m.e, 1);
	}
	assert_int_equal(atomic_load(&m.graphs_done), 1);
	assert_int_equal(atomic_load(&g->status), 0);
	bool on[2] = { false, false };
	for (uint32_t v = NREQ; v < 2 * NREQ; v++)
		on[g->tasks[v].device] = true;
	assert_true(on[0] && on[1]);
	for (int r = 0; r < NREQ; r++) {
		assert_row(out.host, (uint64_t)r * SLICE_ROWS, 1.0f);
		assert_row(out.host, (uint64_t)r * SLICE_ROWS + 1, (float)(10 + r));
		assert_row(kv.host, (uint64_t)r * SLICE_ROWS + 1, (float)(10 + r));
	}

	free_graph(g);
	buf_fini(&m, &kv);
	buf_fini(&m, &rows);
	buf_fini(&m, &out);
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

static void test_opencl_kv_append(void **state)
{
	(void)state;
	NEED_OPENCL();
	check_kv_append_engine(&cl_dev[0]);
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
		cmocka_unit_test(test_prefetch_then_acquire),
		cmocka_unit_test(test_prefetch_full_node),
		cmocka_unit_test(test_prefetch_evicts_lru_unheld),
		cmocka_unit_test(test_prefetch_drop),
		cmocka_unit_test(test_prefetch_task_comes_first),
		cmocka_unit_test(test_prefetch_then_write_elsewhere),
		cmocka_unit_test(test_prefetch_copy_fails),
		cmocka_unit_test(test_prefetch_two_workers),
		cmocka_unit_test(test_kv_append_moves_one_row),
		cmocka_unit_test(test_kv_disjoint_writers),
		cmocka_unit_test(test_kv_pooled_step_parallel),
		cmocka_unit_test(test_fake_kv_append_engine),
		cmocka_unit_test(test_opencl_cross_device),
		cmocka_unit_test(test_opencl_eviction),
		cmocka_unit_test(test_opencl_fault),
		cmocka_unit_test(test_opencl_kv_append),
	};
	return cmocka_run_group_tests(tests, cl_setup, cl_teardown);
}
