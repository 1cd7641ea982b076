/* Residency when devices leave or shrink: an evacuated node's owners are
 * written back (exactly their bytes, counted), or moved device to device to
 * their home; a buffer whose only copy cannot be read back is lost and its
 * readers fail; a budget that shrinks evicts to fit, writing owners back;
 * nodes added at run time. A fake accelerator (memory from calloc, copies
 * by memcpy). */
#include <hwloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "placement/residency.h"
#include "tandem.h"
#include "tests/harness/fake_backend.h"

static _Atomic int fake_peer;
static _Atomic uint64_t fake_peer_bytes;

static int fake_copy_peer(const struct backend_device *d, void *mem, uint64_t off,
                          const struct backend_device *src, void *src_mem, uint64_t src_off,
                          uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)d;
	(void)src;
	(void)after;
	memcpy((char *)mem + off, (char *)src_mem + src_off, bytes);
	atomic_fetch_add(&fake_peer, 1);
	atomic_fetch_add(&fake_peer_bytes, bytes);
	*done = fake_new_event();
	return 0;
}

/* A device that can no longer be read (it failed). */
static int broken_d2h(const struct backend_device *d, void *host, void *mem, uint64_t off,
                      uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)d;
	(void)host;
	(void)mem;
	(void)off;
	(void)bytes;
	(void)after;
	(void)done;
	return -TDM_EDEVICE;
}

static const struct backend_ops acc_ops = { FAKE_ACCEL_MEM_OPS, .name = "fake",
	                                    .supports = fake_supports, .launch_async = fake_launch,
	                                    .copy_peer = fake_copy_peer };
static const struct backend_ops acc_nopeer = { FAKE_ACCEL_MEM_OPS, .name = "fake",
	                                       .supports = fake_supports,
	                                       .launch_async = fake_launch };

#define NF 256
#define BYTES (NF * sizeof(float))

struct rig {
	struct residency r;
	struct backend_device dev[3];
	float host[4][NF];
	struct res_data d[4];
};

static void rig_init(struct rig *g, const struct backend_ops *ops, int ndev, uint64_t cap)
{
	memset(g, 0, sizeof(*g));
	residency_init(&g->r);
	for (int i = 0; i < ndev; i++) {
		g->dev[i] = (struct backend_device){ .ops = ops,
			                             .kind = TDM_DEV_GPU,
			                             .mem_bytes = 1 << 20 };
		snprintf(g->dev[i].name, sizeof(g->dev[i].name), "acc%d", i);
		assert_int_equal(residency_add_node(&g->r, &g->dev[i], cap), i + 1);
		g->dev[i].node = (uint16_t)(i + 1);
	}
	for (int b = 0; b < 4; b++) {
		for (int i = 0; i < NF; i++)
			g->host[b][i] = 1.0f;
		residency_data_init(&g->r, &g->d[b], g->host[b], BYTES, (uint32_t)b, true);
	}
}

static void rig_fini(struct rig *g)
{
	for (int b = 0; b < 4; b++)
		residency_data_fini(&g->r, &g->d[b]);
	residency_fini(&g->r);
}

/* A task on `node` reads buffer b, or writes it (value v everywhere). */
static void use(struct rig *g, unsigned node, int b, bool write, float v)
{
	struct res_arg a = { &g->d[b], 0, BYTES, write ? TDM_RW : TDM_R };
	struct backend_event *waits[2];
	size_t nw;
	void *mem[1];
	uint64_t off[1];
	assert_int_equal(residency_acquire(&g->r, node, &a, 1, waits, &nw, mem, off), 0);
	if (write)
		for (int i = 0; i < NF; i++)
			((float *)mem[0])[i] = v;
	residency_release(&g->r, node, &a, 1, true);
}

static void assert_host(struct rig *g, int b, float v)
{
	for (int i = 0; i < NF; i++)
		if (g->host[b][i] != v)
			fail_msg("buffer %d [%d]: %g, not %g", b, i, g->host[b][i], v);
}

/* The owner's bytes come back to the host, and only those: a replica that
 * shares its contents with the host moves nothing. */
static void test_evacuate_writes_owners_back(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_nopeer, 1, 0);
	use(&g, 1, 0, true, 7.0f); /* owned by the device */
	use(&g, 1, 1, false, 0); /* shared with the host */
	assert_host(&g, 0, 1.0f); /* stale until written back */
	int d2h = atomic_load(&fake_d2h);
	uint64_t d2h_bytes = atomic_load(&fake_d2h_bytes);
	assert_int_equal(residency_node_evacuate(&g.r, 1), 0);
	assert_host(&g, 0, 7.0f);
	assert_host(&g, 1, 1.0f);
	assert_int_equal(atomic_load(&fake_d2h) - d2h, 1);
	assert_int_equal(atomic_load(&fake_d2h_bytes) - d2h_bytes, BYTES);
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.evacuated_bytes, BYTES); /* the minimum: the owner's bytes */
	assert_int_equal(st.peer_bytes, 0);
	assert_int_equal(st.lost, 0);
	assert_true(st.gone);
	assert_int_equal(st.used, 0);
	for (int b = 0; b < 2; b++) {
		assert_int_equal(atomic_load(&g.d[b].remote), 0);
		assert_int_equal(residency_missing(&g.d[b], 0, 0, BYTES), 0);
	}
	/* Nothing goes there again. */
	struct res_arg a = { &g.d[2], 0, BYTES, TDM_R };
	struct backend_event *waits[2];
	size_t nw;
	void *mem[1];
	uint64_t off[1];
	assert_int_equal(residency_acquire(&g.r, 1, &a, 1, waits, &nw, mem, off), -TDM_ENOMEM);
	assert_int_equal(residency_node_evacuate(&g.r, 0), -TDM_EINVAL);
	assert_int_equal(residency_set_budget(&g.r, 1, BYTES), -TDM_EINVAL);
	rig_fini(&g);
}

/* An owner homed on another device moves there device to device: the
 * host is not written, the home then holds the only copy. */
static void test_evacuate_moves_to_home_peer(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_ops, 2, 0);
	use(&g, 1, 0, true, 5.0f);
	residency_set_home(&g.d[0], 2);
	int d2h = atomic_load(&fake_d2h), peer = atomic_load(&fake_peer);
	assert_int_equal(residency_node_evacuate(&g.r, 1), 0);
	assert_int_equal(atomic_load(&fake_d2h), d2h);
	assert_int_equal(atomic_load(&fake_peer) - peer, 1);
	assert_int_equal(residency_missing(&g.d[0], 2, 0, BYTES), 0);
	assert_host(&g, 0, 1.0f);
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.evacuated_bytes, BYTES);
	assert_int_equal(st.peer_bytes, BYTES);
	/* Its contents arrived: the host gets them back from there. */
	struct res_data *dp = &g.d[0];
	assert_int_equal(residency_flush(&g.r, &dp, 1), 0);
	assert_host(&g, 0, 5.0f);
	residency_set_home(&g.d[0], RES_HOME_NONE);
	rig_fini(&g);
}

/* The only copy cannot be read back: the buffer is lost, and a task that
 * reads it fails (-TDM_ENODEV) rather than read the stale host bytes; one
 * that only writes it may still run. */
static void test_evacuate_failed_device_loses_data(void **state)
{
	(void)state;
	struct rig g;
	struct backend_ops broken = acc_nopeer;
	broken.copy_d2h = broken_d2h;
	rig_init(&g, &broken, 1, 0);
	use(&g, 1, 0, true, 3.0f);
	assert_int_equal(residency_node_evacuate(&g.r, 1), -TDM_ENODEV);
	assert_true(atomic_load(&g.d[0].lost));
	assert_false(atomic_load(&g.d[1].lost));
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.lost, 1);
	assert_int_equal(st.evacuated_bytes, 0);
	size_t nw;
	struct res_arg rd = { &g.d[0], 0, BYTES, TDM_R }, wr = { &g.d[0], 0, BYTES, TDM_W };
	assert_int_equal(residency_acquire(&g.r, 0, &rd, 1, NULL, &nw, NULL, NULL), -TDM_ENODEV);
	assert_int_equal(residency_acquire(&g.r, 0, &wr, 1, NULL, &nw, NULL, NULL), 0);
	residency_release(&g.r, 0, &wr, 1, true);
	rig_fini(&g);
}

/* A smaller budget evicts least recently used replicas until the node
 * fits, writing what only they hold back; pinned replicas stay (busy). A
 * larger one lets more in. */
static void test_budget_shrinks_and_grows(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_nopeer, 1, 4 * BYTES);
	use(&g, 1, 0, true, 2.0f);
	use(&g, 1, 1, true, 3.0f);
	use(&g, 1, 2, false, 0);
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.used, 3 * BYTES);
	assert_int_equal(residency_set_budget(&g.r, 1, BYTES), 0);
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.cap, BYTES);
	assert_true(st.used <= BYTES);
	/* The least recent ones went, their owned bytes written back. */
	assert_host(&g, 0, 2.0f);
	assert_int_equal(residency_missing(&g.d[2], 1, 0, BYTES), 0); /* most recent stays */
	/* Pinned: it cannot go. */
	struct res_arg a = { &g.d[2], 0, BYTES, TDM_R };
	struct backend_event *waits[2];
	size_t nw;
	void *mem[1];
	uint64_t off[1];
	assert_int_equal(residency_acquire(&g.r, 1, &a, 1, waits, &nw, mem, off), 0);
	assert_int_equal(residency_set_budget(&g.r, 1, BYTES / 2), -TDM_EBUSY);
	residency_release(&g.r, 1, &a, 1, true);
	assert_int_equal(residency_set_budget(&g.r, 1, 4 * BYTES), 0);
	use(&g, 1, 0, false, 0);
	use(&g, 1, 1, false, 0);
	residency_node_stats(&g.r, 1, &st);
	assert_int_equal(st.used, 3 * BYTES);
	assert_host(&g, 1, 3.0f);
	rig_fini(&g);
}

/* A node added while buffers exist serves them like the others. */
static void test_node_added_at_run_time(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_nopeer, 1, 0);
	use(&g, 1, 0, true, 4.0f);
	struct backend_device late = {
		.ops = &acc_nopeer, .kind = TDM_DEV_GPU, .mem_bytes = 1 << 20, .name = "late"
	};
	assert_int_equal(residency_add_node(&g.r, &late, 0), 2);
	late.node = 2;
	/* It reads the device-only contents (through the host). */
	use(&g, 2, 0, false, 0);
	assert_int_equal(residency_missing(&g.d[0], 2, 0, BYTES), 0);
	assert_host(&g, 0, 4.0f);
	rig_fini(&g);
}

/* ---- on a real OpenCL device: two contexts of it, as two devices ---- */

static hwloc_topology_t topo;
static struct backend_device cl_dev[2];
static size_t n_cl;

static int cl_setup(void **state)
{
	(void)state;
	hwloc_topology_init(&topo);
	hwloc_topology_load(topo);
	for (int i = 0; i < 2; i++) {
		struct backend_probe_params pp = { .topology = topo };
		size_t n = 0;
		if (backend_opencl.probe(&pp, &cl_dev[n_cl], 1, &n) != 0 || n == 0) {
			printf("# no OpenCL device: %s\n", pp.note);
			break;
		}
		n_cl++;
	}
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

/* An owner on one OpenCL device moves to another (its home) through
 * copy_peer, each in its own context: the contents arrive. */
static void test_opencl_peer_evacuation(void **state)
{
	(void)state;
	if (n_cl < 2) {
		printf("# skipped: no OpenCL device\n");
		skip();
	}
	struct residency r;
	residency_init(&r);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(residency_add_node(&r, &cl_dev[i], 0), i + 1);
		cl_dev[i].node = (uint16_t)(i + 1);
	}
	static float host[NF], seven[NF];
	for (int i = 0; i < NF; i++) {
		host[i] = 1.0f;
		seven[i] = 7.0f;
	}
	struct res_data d;
	residency_data_init(&r, &d, host, BYTES, 1, true);
	struct res_arg a = { &d, 0, BYTES, TDM_RW };
	struct backend_event *waits[2], *ev;
	size_t nw;
	void *mem[1];
	uint64_t off[1];
	assert_int_equal(residency_acquire(&r, 1, &a, 1, waits, &nw, mem, off), 0);
	const struct backend_device *dv = &cl_dev[0];
	for (size_t i = 0; i < nw; i++)
		assert_int_equal(dv->ops->event_wait(dv, waits[i]), 0);
	/* The "kernel": writes 7s on the device. */
	assert_int_equal(dv->ops->copy_h2d(dv, mem[0], 0, seven, BYTES, NULL, &ev), 0);
	assert_int_equal(dv->ops->event_wait(dv, ev), 0);
	dv->ops->event_release(dv, ev);
	residency_release(&r, 1, &a, 1, true);
	residency_set_home(&d, 2);
	assert_int_equal(residency_node_evacuate(&r, 1), 0);
	struct res_node_stats st;
	residency_node_stats(&r, 1, &st);
	assert_int_equal(st.peer_bytes, BYTES);
	assert_int_equal(residency_missing(&d, 2, 0, BYTES), 0);
	for (int i = 0; i < NF; i++)
		assert_true(host[i] == 1.0f); /* not through the host */
	struct res_data *dp = &d;
	assert_int_equal(residency_flush(&r, &dp, 1), 0);
	for (int i = 0; i < NF; i++)
		assert_true(host[i] == 7.0f);
	residency_set_home(&d, RES_HOME_NONE);
	residency_data_fini(&r, &d);
	residency_fini(&r);
}

/* A node evacuated for good is given to the next device added, clean. */
static void test_gone_node_reused(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_nopeer, 1, 0);
	use(&g, 1, 0, true, 6.0f);
	assert_int_equal(residency_node_evacuate(&g.r, 1), 0);
	struct backend_device next = {
		.ops = &acc_nopeer, .kind = TDM_DEV_GPU, .mem_bytes = 1 << 20, .name = "next"
	};
	assert_int_equal(residency_add_node(&g.r, &next, 0), 1);
	next.node = 1;
	assert_int_equal(g.r.nnodes, 2);
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_false(st.gone);
	assert_string_equal(st.name, "next");
	assert_int_equal(st.evacuated_bytes, 0);
	assert_int_equal(st.used, 0);
	/* Nothing of the old device is taken for valid there. */
	assert_int_equal(residency_missing(&g.d[0], 1, 0, BYTES), BYTES);
	use(&g, 1, 0, false, 0);
	assert_int_equal(residency_missing(&g.d[0], 1, 0, BYTES), 0);
	use(&g, 1, 1, true, 8.0f);
	struct res_data *dp = &g.d[1];
	assert_int_equal(residency_flush(&g.r, &dp, 1), 0);
	assert_host(&g, 0, 6.0f);
	assert_host(&g, 1, 8.0f);
	rig_fini(&g);
}

/* The device that comes back takes its own node, once it is gone, and only
 * then; a node another device took is refused to it. */
static void test_node_taken_back(void **state)
{
	(void)state;
	struct rig g;
	rig_init(&g, &acc_nopeer, 2, 0);
	use(&g, 1, 0, true, 6.0f);
	assert_int_equal(residency_take_node(&g.r, &g.dev[0], 0, 1), -TDM_EBUSY); /* in use */
	assert_int_equal(residency_node_evacuate(&g.r, 1), 0);
	assert_int_equal(residency_take_node(&g.r, &g.dev[0], 0, 3), -TDM_EBUSY); /* none */
	assert_int_equal(residency_take_node(&g.r, &g.dev[0], 0, 1), 1);
	struct res_node_stats st;
	residency_node_stats(&g.r, 1, &st);
	assert_false(st.gone);
	assert_string_equal(st.name, "acc0");
	/* Nothing of its earlier stay is taken for valid there. */
	assert_int_equal(residency_missing(&g.d[0], 1, 0, BYTES), BYTES);
	assert_host(&g, 0, 6.0f);
	/* Gone again, and taken by another device meanwhile: refused. */
	assert_int_equal(residency_node_evacuate(&g.r, 1), 0);
	struct backend_device other = {
		.ops = &acc_nopeer, .kind = TDM_DEV_GPU, .mem_bytes = 1 << 20, .name = "other"
	};
	assert_int_equal(residency_add_node(&g.r, &other, 0), 1);
	assert_int_equal(residency_take_node(&g.r, &g.dev[0], 0, 1), -TDM_EBUSY);
	rig_fini(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_evacuate_writes_owners_back),
		cmocka_unit_test(test_evacuate_moves_to_home_peer),
		cmocka_unit_test(test_evacuate_failed_device_loses_data),
		cmocka_unit_test(test_budget_shrinks_and_grows),
		cmocka_unit_test(test_node_added_at_run_time),
		cmocka_unit_test(test_gone_node_reused),
		cmocka_unit_test(test_node_taken_back),
		cmocka_unit_test(test_opencl_peer_evacuation),
	};
	return cmocka_run_group_tests_name("elastic_residency", tests, cl_setup, cl_teardown);
}
