/* attn_decode_varlen through a private tandemd: a ragged batch of requests
 * whose K and V rows sit in two pool buffers, located by an index buffer,
 * in one task; on the CPU cores, and on the OpenCL and the CUDA device
 * alone (when the machine has them). The results are checked against a plain loop here; an index
 * that a task of the same graph writes (unknown at intake) works; a bad index fails the task with
 * -TDM_ERANGE in its task info, the graph with -TDM_EDEVICE, and the daemon, and the device, go on
 * serving. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "support.h"

#define NREQ 17
#define NH 8
#define NKV 2
#define HD 32
#define MAXLEN 600
#define WAIT_NS (30ll * 1000000000ll)

static struct tdmt_daemon daemon_;
static tdm_client *client;

/* One ragged batch: requests laid out in the pools in reverse order with a
 * gap of one row after each. */
struct batch {
	tdm_buffer q, k, v, index, staging, out;
	float *qp, *kp, *vp, *op;
	int32_t *ip, *sp;
	int32_t len[NREQ];
	size_t rows;
	int64_t total;
	tdm_kernel varlen, copy;
};

static struct batch B;

static void *alloc(size_t bytes, uint32_t flags, tdm_buffer *h)
{
	void *p = NULL;
	assert_int_equal(tdm_buffer_alloc(client, bytes, flags, h, &p), 0);
	assert_non_null(p);
	return p;
}

static void make_batch(void)
{
	uint64_t seed = 0x766c;
	size_t row = 0;

	memset(&B, 0, sizeof(B));
	for (int r = 0; r < NREQ; r++)
		B.len[r] = (int32_t)tdmt_rand_range(&seed, 1, MAXLEN);
	B.len[0] = 1;
	B.len[NREQ - 1] = MAXLEN;
	for (int r = 0; r < NREQ; r++)
		B.rows += (size_t)B.len[r] + 1;
	B.qp = alloc(NREQ * NH * HD * sizeof(float), 0, &B.q);
	B.kp = alloc(B.rows * NKV * HD * sizeof(float), TDM_BUF_KV, &B.k);
	B.vp = alloc(B.rows * NKV * HD * sizeof(float), TDM_BUF_KV, &B.v);
	B.ip = alloc(NREQ * 2 * sizeof(int32_t), 0, &B.index);
	B.sp = alloc(NREQ * 2 * sizeof(int32_t), 0, &B.staging);
	B.op = alloc(NREQ * NH * HD * sizeof(float), 0, &B.out);
	for (size_t i = 0; i < NREQ * NH * HD; i++)
		B.qp[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	for (size_t i = 0; i < B.rows * NKV * HD; i++) {
		B.kp[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
		B.vp[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	}
	row = 0;
	for (int r = NREQ - 1; r >= 0; r--) {
		B.ip[2 * r] = (int32_t)row;
		B.ip[2 * r + 1] = B.len[r];
		row += (size_t)B.len[r] + 1;
		B.total += B.len[r];
	}
	memcpy(B.sp, B.ip, NREQ * 2 * sizeof(int32_t));
	assert_int_equal(tdm_kernel_lookup(client, "attn_decode_varlen", &B.varlen), 0);
	assert_int_equal(tdm_kernel_lookup(client, "copy", &B.copy), 0);
}

static void free_batch(void)
{
	tdm_buffer bufs[] = { B.q, B.k, B.v, B.index, B.staging, B.out };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		assert_int_equal(tdm_buffer_free(client, bufs[i]), 0);
}

/* Submits [copy staging -> index,] varlen(total); returns tdm_wait's status,
 * the varlen task's info in *info. */
static int run_batch(bool index_from_task, int64_t total, struct tdm_task_info *info)
{
	tdm_graph *g = tdm_graph_new(client);
	uint32_t t;
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	if (index_from_task) {
		struct tdm_task_desc cp = { .kernel = B.copy, .nargs = 2 };
		cp.args[0] = TDM_ARG(B.staging, TDM_R, 0, 0);
		cp.args[1] = TDM_ARG(B.index, TDM_W, 0, 0);
		assert_int_equal(tdm_graph_add_task(g, &cp, NULL), 0);
	}
	struct tdm_task_desc d = { .kernel = B.varlen, .nargs = 5, .nscalars = 5 };
	d.args[0] = TDM_ARG(B.q, TDM_R, 0, 0);
	d.args[1] = TDM_ARG(B.k, TDM_R, 0, 0);
	d.args[2] = TDM_ARG(B.v, TDM_R, 0, 0);
	d.args[3] = TDM_ARG(B.index, TDM_R, 0, 0);
	d.args[4] = TDM_ARG(B.out, TDM_W, 0, 0);
	d.scalars[0] = TDM_I64(NREQ);
	d.scalars[1] = TDM_I64(NH);
	d.scalars[2] = TDM_I64(NKV);
	d.scalars[3] = TDM_I64(HD);
	d.scalars[4] = TDM_I64(total);
	assert_int_equal(tdm_graph_add_task(g, &d, &t), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	int rc = tdm_wait(g, WAIT_NS);
	const struct tdm_task_info *ti = tdm_graph_task_info(g, t);
	assert_non_null(ti);
	*info = *ti;
	tdm_graph_free(g);
	return rc;
}

/* out against a plain double-precision loop, within attn_decode's
 * tolerance (rtol 1e-4, atol 1e-5). */
static void check_out(void)
{
	size_t group = NH / NKV, stride = NKV * HD;
	double s[MAXLEN];
	for (size_t r = 0; r < NREQ; r++) {
		size_t row = (size_t)B.ip[2 * r], len = (size_t)B.len[r];
		for (size_t h = 0; h < NH; h++) {
			const float *q = B.qp + (r * NH + h) * HD;
			size_t kv = row * stride + (h / group) * HD;
			double max = -INFINITY, sum = 0;
			for (size_t t = 0; t < len; t++) {
				double dot = 0;
				for (size_t i = 0; i < HD; i++)
					dot += (double)q[i] * B.kp[kv + t * stride + i];
				s[t] = dot / sqrt((double)HD);
				max = s[t] > max ? s[t] : max;
			}
			for (size_t t = 0; t < len; t++)
				sum += s[t] = exp(s[t] - max);
			for (size_t i = 0; i < HD; i++) {
				double want = 0;
				for (size_t t = 0; t < len; t++)
					want += s[t] * B.vp[kv + t * stride + i];
				want /= sum;
				float got = B.op[(r * NH + h) * HD + i];
				if (!(fabs(got - want) <= 1e-5 + 1e-4 * fabs(want)))
					fail_msg("request %zu head %zu [%zu]: %.9g, want %.9g", r,
					         h, i, got, want);
			}
		}
	}
}

/* ---- the daemon ---- */

/* Whether the device of this index is named prefix<N>. */
static bool device_is(uint32_t index, const char *prefix)
{
	json_t *doc = tdmt_status_doc(daemon_.sock);
	assert_non_null(doc);
	size_t i;
	json_t *d;
	bool is = false;
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		const char *name = json_string_value(json_object_get(d, "name"));
		if (json_integer_value(json_object_get(d, "index")) == (json_int_t)index)
			is = !strncmp(name, prefix, strlen(prefix));
	}
	json_decref(doc);
	return is;
}

/* Starts a daemon whose only devices are `only` (a device name or class)
 * and lays the batch out; false (the test then skips) when the machine
 * has no device `probe` (NULL: always has), found by a daemon with every
 * device first: a daemon left with no device would not start. */
static bool start(const char *only, const char *probe)
{
	char toml[128];
	if (probe) {
		assert_int_equal(tdmt_daemon_start(&daemon_, ""), 0);
		int64_t index;
		assert_int_equal(tdmt_device_field(daemon_.sock, probe, "index", &index), 0);
		bool found = index >= 0;
		assert_int_equal(tdmt_daemon_stop(&daemon_, 5000), 0);
		tdmt_daemon_cleanup(&daemon_);
		memset(&daemon_, 0, sizeof(daemon_));
		if (!found) {
			printf("# skipped: no %s in this machine\n", probe);
			return false;
		}
	}
	snprintf(toml, sizeof(toml), "[devices]\ninclude = [\"%s\"]\n", only);
	assert_int_equal(tdmt_daemon_start(&daemon_, toml), 0);
	assert_int_equal(tdmt_connect(daemon_.sock, &client), 0);
	make_batch();
	return true;
}

static int teardown(void **state)
{
	(void)state;
	if (client)
		tdm_disconnect(client);
	client = NULL;
	return tdmt_test_end(&daemon_, 5000);
}

/* ---- the tests ---- */

/* The ragged batch, the index written by the client and then by a copy
 * task of the same graph (which intake cannot read: the features come from
 * the total_tokens scalar), on the device `dev` names. */
static void ragged(const char *dev)
{
	struct tdm_task_info info;
	assert_int_equal(run_batch(false, B.total, &info), 0);
	assert_int_equal(info.status, 0);
	assert_true(device_is(info.device, dev));
	check_out();

	memset(B.op, 0, NREQ * NH * HD * sizeof(float));
	memset(B.ip, 0xff, NREQ * 2 * sizeof(int32_t)); /* the copy task writes it */
	assert_int_equal(run_batch(true, B.total, &info), 0);
	assert_int_equal(info.status, 0);
	assert_int_equal(memcmp(B.ip, B.sp, NREQ * 2 * sizeof(int32_t)), 0);
	check_out();
	printf("# %d requests, %lld tokens in one task on %s: ok\n", NREQ, (long long)B.total, dev);
}

/* A request past the pools, then lengths that do not add up to the total
 * claimed: each fails its task with -TDM_ERANGE and leaves out alone; the
 * same batch runs afterwards. */
static void bad_index(const char *dev)
{
	struct tdm_task_info info;
	float mark = 12345.0f;
	for (size_t i = 0; i < NREQ * NH * HD; i++)
		B.op[i] = mark;

	B.ip[2 * 5] = (int32_t)(B.rows - (size_t)B.len[5] + 1); /* one row past the end */
	assert_int_equal(run_batch(false, B.total, &info), -TDM_EDEVICE);
	assert_int_equal(info.status, -TDM_ERANGE);
	assert_true(device_is(info.device, dev));
	memcpy(B.ip, B.sp, NREQ * 2 * sizeof(int32_t));
	assert_int_equal(run_batch(false, B.total + 1, &info), -TDM_EDEVICE);
	assert_int_equal(info.status, -TDM_ERANGE);
	for (size_t i = 0; i < NREQ * NH * HD; i++)
		if (B.op[i] != mark)
			fail_msg("out[%zu] written by a task that failed", i);
	char line[96];
	snprintf(line, sizeof(line), "kernel attn_decode_varlen failed on %s", dev);
	assert_int_equal(tdmt_wait_log(&daemon_, line, 5000), 0);

	assert_int_equal(run_batch(false, B.total, &info), 0);
	assert_true(device_is(info.device, dev));
	check_out();
	assert_false(tdmt_log_contains(&daemon_, "marked unhealthy"));
	assert_true(tdmt_daemon_alive(&daemon_));
}

/* Every core: the task may spread over those idle (the CPU gang). */
static void test_cpu_ragged(void **state)
{
	(void)state;
	assert_true(start("cpu", NULL));
	ragged("cpu");
	free_batch();
	tdmt_test_ok();
}

static void test_cpu_bad_index(void **state)
{
	(void)state;
	assert_true(start("cpu", NULL));
	bad_index("cpu");
	free_batch();
	tdmt_test_ok();
}

/* An accelerator alone, when the machine has it. */
static void on_accel(const char *dev, bool bad)
{
	if (!start(dev, dev)) {
		tdmt_test_ok();
		skip();
	}
	if (bad)
		bad_index(dev);
	else
		ragged(dev);
	free_batch();
	tdmt_test_ok();
}

static void test_opencl_ragged(void **state)
{
	(void)state;
	on_accel("clcpu0", false);
}

static void test_opencl_bad_index(void **state)
{
	(void)state;
	on_accel("clcpu0", true);
}

static void test_cuda_ragged(void **state)
{
	(void)state;
	on_accel("cuda0", false);
}

static void test_cuda_bad_index(void **state)
{
	(void)state;
	on_accel("cuda0", true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cpu_ragged, tdmt_test_setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_bad_index, tdmt_test_setup, teardown),
		cmocka_unit_test_setup_teardown(test_opencl_ragged, tdmt_test_setup, teardown),
		cmocka_unit_test_setup_teardown(test_opencl_bad_index, tdmt_test_setup, teardown),
		cmocka_unit_test_setup_teardown(test_cuda_ragged, tdmt_test_setup, teardown),
		cmocka_unit_test_setup_teardown(test_cuda_bad_index, tdmt_test_setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
