/* Growable KV buffers through libtandem and a running tandemd: reserve a
 * large capacity, grow token by token, append rows with tasks and read
 * them in the client's view; the status document charges the backed
 * bytes; growth past the quota fails with EQUOTA and a line in the log;
 * a raw client's attempt to name undeclared bytes is rejected with
 * ERANGE and the daemon keeps serving; KV admission answers by the
 * predicted peak. Each test runs its own daemon. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"
#include "support_raw.h"
#include "tandem/wire.h"

#define MS (1000000ll)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define OK(x) assert_int_equal((x), 0)

static struct tdmt_daemon d;

static int test_teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&d, 0);
}

static int64_t charged(void)
{
	int64_t v = -1;
	OK(tdmt_client_field(d.sock, getpid(), "buffer_bytes", &v));
	return v;
}

/* Starts a daemon with this buffer quota, connects, looks the kernels up
 * and reserves a KV buffer of capacity cap. */
static void start_reserved(const char *quota, uint64_t cap, tdm_client **c, struct tdmt_kernels *k,
                           tdm_buffer *kv, void **p)
{
	char toml[160];
	snprintf(toml, sizeof(toml),
	         "[profiler]\ncalibrate = false\n[limits]\nbuffer_quota_bytes = \"%s\"\n", quota);
	OK(tdmt_daemon_start(&d, toml));
	OK(tdmt_connect(d.sock, c));
	OK(tdmt_lookup_kernels(*c, k));
	OK(tdm_buffer_reserve(*c, cap, TDM_BUF_KV, kv, p));
}

/* 100 GiB of capacity under a 64 MiB quota: allowed, charged what is
 * backed; rows appended by fill tasks land in the client's view. */
static void test_reserve_grow_append(void **state)
{
	(void)state;
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer kv;
	void *p;

	start_reserved("64MiB", 100 * GiB, &c, &k, &kv, &p);
	assert_int_equal(charged(), 0);
	OK(tdm_buffer_grow(c, kv, MiB));
	int64_t ch = charged();
	assert_true(ch >= (int64_t)MiB && ch <= (int64_t)(MiB + MiB / 25));
	/* The status document shows the capacity, the use and the backing. */
	json_t *doc = tdmt_status_doc(d.sock);
	assert_non_null(doc);
	json_t *clients = json_object_get(doc, "clients"), *buf = NULL;
	for (size_t i = 0; i < json_array_size(clients); i++) {
		json_t *bufs = json_object_get(json_array_get(clients, i), "replicas");
		for (size_t j = 0; j < json_array_size(bufs); j++)
			if (json_integer_value(json_object_get(json_array_get(bufs, j),
			                                       "handle")) == (json_int_t)kv)
				buf = json_array_get(bufs, j);
	}
	assert_non_null(buf);
	assert_int_equal(json_integer_value(json_object_get(buf, "bytes")),
	                 (json_int_t)(100 * GiB));
	assert_int_equal(json_integer_value(json_object_get(buf, "used")), (json_int_t)MiB);
	assert_int_equal(json_integer_value(json_object_get(buf, "backed")), ch);
	json_decref(doc);

	/* Token by token: each row written by a task, after its growth. */
	const uint64_t row = 16 << 10;
	uint64_t used = MiB;
	for (int t = 0; t < 64; t++) {
		OK(tdm_buffer_grow(c, kv, used + row));
		tdm_graph *g = tdm_graph_new(c);
		assert_non_null(g);
		OK(tdmt_add_fill(g, &k, kv, used, row, (float)t, NULL));
		OK(tdm_graph_submit(g));
		OK(tdm_wait(g, 30000 * MS));
		tdm_graph_free(g);
		const float *f = (const float *)((const char *)p + used);
		for (uint64_t i = 0; i < row / 4; i++)
			if (f[i] != (float)t)
				fail_msg("row %d [%llu] = %g", t, (unsigned long long)i, f[i]);
		used += row;
	}
	ch = charged();
	assert_true(ch >= (int64_t)used && ch - (int64_t)used <= (int64_t)(used / 32 + (64 << 10)));
	/* The client's library refuses what the daemon would. */
	tdm_graph *g = tdm_graph_new(c);
	assert_int_equal(tdmt_add_fill(g, &k, kv, used, 4096, 1.0f, NULL), -TDM_ERANGE);
	tdm_graph_free(g);
	assert_int_equal(tdm_buffer_grow(c, kv, used - 1), -TDM_EINVAL);
	assert_int_equal(tdm_buffer_grow(c, kv, 200 * GiB), -TDM_ERANGE);
	assert_int_equal(tdm_buffer_reserve(c, MiB, 0, &kv, &p), -TDM_EINVAL);
	OK(tdm_buffer_free(c, kv));
	assert_int_equal(charged(), 0);
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* On one accelerator only (skipped without it): rows appended by tasks on
 * the device, token by token, all reach the client's view, and the device
 * keeps its copy of the whole KV as it grows: in place on CUDA (VMM), by
 * reallocation on OpenCL (PoCL here), written back first, losing nothing. */
static void append_on(const char *device)
{
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer kv;
	void *p;
	char toml[160];

	snprintf(toml, sizeof(toml),
	         "[profiler]\ncalibrate = false\n[devices]\ninclude = [\"%s\"]\n", device);
	if (tdmt_daemon_start(&d, toml) != 0) {
		if (!tdmt_log_contains(&d, "no device to run tasks on"))
			fail_msg("tandemd did not start (status %d)", d.exit_status);
		printf("%s: no such device here, skipped\n", device);
		tdmt_test_ok();
		skip();
	}
	OK(tdmt_connect(d.sock, &c));
	assert_int_equal(tdm_device_count(c), 1);
	OK(tdm_kernel_lookup(c, "fill", &k.fill)); /* no CPU-only kernel (spin) here */
	OK(tdm_buffer_reserve(c, 256 * MiB, TDM_BUF_KV, &kv, &p));
	const uint64_t row = 4096;
	uint64_t used = 0;
	for (int t = 0; t < 200; t++) {
		OK(tdm_buffer_grow(c, kv, used + row));
		tdm_graph *g = tdm_graph_new(c);
		OK(tdmt_add_fill(g, &k, kv, used, row, (float)t + 1.0f, NULL));
		OK(tdm_graph_submit(g));
		OK(tdm_wait(g, 30000 * MS));
		tdm_graph_free(g);
		used += row;
	}
	for (int t = 0; t < 200; t++) {
		const float *f = (const float *)((const char *)p + (uint64_t)t * row);
		for (uint64_t i = 0; i < row / 4; i++)
			if (f[i] != (float)t + 1.0f)
				fail_msg("row %d [%llu] = %g", t, (unsigned long long)i, f[i]);
	}
	/* The device kept its copy of the whole KV (as the buffer grew). */
	json_t *doc = tdmt_status_doc(d.sock);
	assert_non_null(doc);
	json_t *dev = json_array_get(json_object_get(doc, "devices"), 0);
	assert_non_null(dev);
	assert_true(json_integer_value(json_object_get(dev, "mem_used")) >= (json_int_t)used);
	json_decref(doc);
	tdm_disconnect(c);
	tdmt_test_ok();
}

static void test_append_on_opencl(void **state)
{
	(void)state;
	append_on("clcpu0");
}

static void test_append_on_cuda(void **state)
{
	(void)state;
	append_on("cuda0");
}

/* Past the quota: EQUOTA, a line in the log, and the buffer as it was. */
static void test_grow_past_quota(void **state)
{
	(void)state;
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer kv;
	void *p;

	start_reserved("8MiB", GiB, &c, &k, &kv, &p);
	OK(tdm_buffer_grow(c, kv, 6 * MiB));
	int64_t before = charged();
	assert_int_equal(tdm_buffer_grow(c, kv, 9 * MiB), -TDM_EQUOTA);
	OK(tdmt_wait_log(&d, "would pass the buffer quota", 5000));
	assert_int_equal(charged(), before);
	/* Still usable up to what it declared. */
	tdm_graph *g = tdm_graph_new(c);
	OK(tdmt_add_fill(g, &k, kv, 0, 6 * MiB, 2.0f, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	tdm_graph_free(g);
	assert_true(((float *)p)[6 * MiB / 4 - 1] == 2.0f);
	OK(tdm_buffer_grow(c, kv, 8 * MiB)); /* exactly the quota */
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* A raw client that names bytes it never declared (backed or not): the
 * graph is rejected at intake with ERANGE, and the daemon keeps serving. */
static void test_raw_beyond_declared(void **state)
{
	(void)state;
	struct tdmt_raw r;
	struct tdm_msg_hdr h;
	struct tdm_buf_alloc_reply ar;
	struct tdm_buf_grow_reply gr;
	int fds[2];

	OK(tdmt_daemon_start(&d, "[profiler]\ncalibrate = false\n"));
	assert_int_equal(tdmt_raw_connect(&r, d.sock, TDM_ROLE_CLIENT, 5000), 0);
	struct tdm_buf_reserve_req rq = { .capacity = 64 * MiB, .flags = TDM_BUF_KV };
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_RESERVE, &rq, sizeof(rq)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &ar, sizeof(ar), fds, 2), 0);
	assert_int_equal(h.type, TDM_MSG_BUF_RESERVE_REPLY);
	OK(ar.status);
	/* A request id: only on KV (else EINVAL, the session goes on). */
	struct tdm_buf_reserve_req rr = { .capacity = MiB, .flags = TDM_BUF_WEIGHTS, .request = 9 };
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_RESERVE, &rr, sizeof(rr)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &ar, sizeof(ar), fds, 2), 0);
	assert_int_equal(ar.status, -TDM_EINVAL);
	rr.flags = TDM_BUF_KV;
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_RESERVE, &rr, sizeof(rr)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &ar, sizeof(ar), fds, 2), 0);
	OK(ar.status);
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_RESERVE, &rq, sizeof(rq)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &ar, sizeof(ar), fds, 2), 0);
	OK(ar.status);
	/* Field checks: reserved bits, shrinking, past the capacity. */
	struct tdm_buf_grow_req gq = { .handle = ar.handle, .reserved = 1, .used = 4096 };
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_GROW, &gq, sizeof(gq)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &gr, sizeof(gr), fds, 2), 0);
	assert_int_equal(gr.status, -TDM_EPROTO);
	gq.reserved = 0;
	gq.used = 65 * MiB;
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_GROW, &gq, sizeof(gq)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &gr, sizeof(gr), fds, 2), 0);
	assert_int_equal(gr.status, -TDM_ERANGE);
	gq.used = 4096;
	OK(tdmt_raw_send(r.sock, TDM_MSG_BUF_GROW, &gq, sizeof(gq)));
	assert_int_equal(tdmt_raw_recv(r.sock, &h, &gr, sizeof(gr), fds, 2), 1);
	close(fds[0]);
	OK(gr.status);
	assert_true(gr.backed > 4096);

	int64_t fill = tdmt_raw_lookup(&r, "fill");
	assert_true(fill >= 0);
	const struct {
		uint64_t off, len;
	} bad[] = { { 4096, 4096 }, { 0, 8192 }, { 32 * MiB, 4096 } };
	for (unsigned i = 0; i < 4; i++) {
		struct tdm_sqe e[3];
		memset(e, 0, sizeof(e));
		e[0].op = TDM_SQE_GRAPH_BEGIN;
		e[0].u.begin.cookie = 100 + i;
		e[0].u.begin.ntasks = 1;
		e[1].op = TDM_SQE_TASK;
		e[1].u.task.kernel_id = (uint32_t)fill;
		e[1].u.task.nargs = 1;
		e[1].u.task.nscalars = 1;
		e[1].u.task.args[0].handle = ar.handle;
		e[1].u.task.args[0].mode = TDM_W;
		e[1].u.task.args[0].offset = i < 3 ? bad[i].off : 0;
		e[1].u.task.args[0].length = i < 3 ? bad[i].len : 4096;
		e[1].u.task.scalar_types[0] = TDM_SCALAR_F32;
		e[2].op = TDM_SQE_GRAPH_END;
		for (int j = 0; j < 3; j++)
			assert_int_equal(tdmt_raw_try_put(&r, &e[j]), 1);
		tdmt_raw_publish(&r);
		OK(tdmt_raw_bell(&r));
		/* Wait for this graph's completion. */
		uint64_t t0 = tdmt_now_ns();
		bool got = false;
		while (!got && tdmt_now_ns() - t0 < 10000 * (uint64_t)MS) {
			uint32_t tail = __atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE);
			while (r.cq_head != tail) {
				struct tdm_cqe c = r.cq[r.cq_head & (r.cq_entries - 1)];
				r.cq_head++;
				__atomic_store_n(&r.hdr->cq_head, r.cq_head, __ATOMIC_RELEASE);
				if (c.op != TDM_CQE_GRAPH_DONE || c.cookie != 100 + i)
					continue;
				got = true;
				if (i < 3) {
					assert_int_equal(c.status, -TDM_ERANGE);
					assert_int_equal(c.detail, TDM_REJECT_RANGE);
				} else {
					assert_int_equal(c.status, 0); /* the declared part works */
				}
			}
			if (!got)
				tdmt_sleep_ms(1);
		}
		assert_true(got);
	}
	tdmt_raw_close(&r);
	assert_true(tdmt_daemon_alive(&d));
	tdmt_test_ok();
}

/* Admission through libtandem: asking, admitting, and the answer's
 * figures; the quota bounds the predicted peak on every tier. */
static void test_admit(void **state)
{
	(void)state;
	tdm_client *c;
	tdm_buffer kv, kv2;
	void *p;

	OK(tdmt_daemon_start(
	        &d, "[profiler]\ncalibrate = false\n[limits]\nbuffer_quota_bytes = \"64MiB\"\n"));
	OK(tdmt_connect(d.sock, &c));
	struct tdm_kv_admission a = { 0 };
	OK(tdm_kv_admit(c, 0, &a));
	assert_int_equal(a.host_free_bytes, 64 * MiB);
	OK(tdm_buffer_reserve(c, GiB, TDM_BUF_KV, &kv, &p));
	OK(tdm_buffer_grow(c, kv, 8 * MiB));
	a = (struct tdm_kv_admission){ .bytes_per_token = MiB,
		                       .context_tokens = 8,
		                       .max_new_tokens = 24 };
	OK(tdm_kv_admit(c, kv, &a));
	assert_true(a.tier == TDM_TIER_HOST || a.tier == TDM_TIER_DEVICE);
	assert_int_equal(a.predicted_new_tokens, 24);
	assert_int_equal(a.history, 0);
	OK(tdm_buffer_reserve(c, GiB, TDM_BUF_KV, &kv2, &p));
	/* At the first one's end (24 tokens on) the two would hold 32 + 64
	 * MiB: more than the quota, whatever the tier. */
	a = (struct tdm_kv_admission){ .bytes_per_token = MiB,
		                       .context_tokens = 40,
		                       .max_new_tokens = 32 };
	assert_int_equal(tdm_kv_admit(c, kv2, &a), -TDM_EQUOTA);
	assert_int_equal(a.tier, 0);
	a.max_new_tokens = 4; /* peak 12 + 44 MiB when it ends */
	OK(tdm_kv_admit(c, kv2, &a));
	assert_int_equal(a.host_free_bytes, 64 * MiB - 56 * MiB);
	tdm_disconnect(c);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reserve_grow_append, tdmt_test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_append_on_opencl, tdmt_test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_append_on_cuda, tdmt_test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_grow_past_quota, tdmt_test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_raw_beyond_declared, tdmt_test_setup,
		                                test_teardown),
		cmocka_unit_test_setup_teardown(test_admit, tdmt_test_setup, test_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
