/* Accelerators through the daemon (PoCL's OpenCL CPU device in CI): device
 * discovery, buffers written on one device and read on another, results
 * in the client's view when the graph completes, eviction under a tiny
 * device memory cap with every byte kept, a faulty device taking no more
 * work, and `tandemctl`'s view of replicas. Skips when no OpenCL device is
 * present.
 *
 * The daemon runs eager here: any device, first come first served. It
 * promises no split between the CPU worker and the OpenCL device (on a
 * small machine the CPU worker may take every task), so these tests check
 * what holds for any split and print the split; tests/unit/test_chains.c
 * places chain steps on each device by a fixed plan. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support.h"

static struct tdmt_daemon daemon_;

static json_t *status(void)
{
	json_t *doc = tdmt_status_doc(daemon_.sock);
	assert_non_null(doc);
	return doc;
}

/* The device's index (what task info calls it), or -1. */
static int device_index(const char *name)
{
	int64_t i;
	assert_int_equal(tdmt_device_field(daemon_.sock, name, "index", &i), 0);
	return (int)i;
}

/* Starts a daemon with this configuration; skips the test when it has no
 * OpenCL device. */
static void start(const char *toml)
{
	assert_int_equal(tdmt_daemon_start(&daemon_, toml), 0);
	if (device_index("clcpu0") < 0) {
		printf("# skipped: no OpenCL device (clcpu0) in this machine\n");
		tdmt_test_ok(); /* nothing went wrong: no log to print */
		skip();
	}
}

static int teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&daemon_, 5000);
}

/* Prints how many tasks each device ran ("# tasks per device: cpu0 12, ..."). */
static void print_split(const uint32_t *used, uint32_t ndev)
{
	json_t *doc = status();
	size_t i;
	json_t *d;
	printf("# tasks per device (eager's split, not a promise):");
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		json_int_t idx = json_integer_value(json_object_get(d, "index"));
		if (idx >= 0 && idx < ndev)
			printf("%s %s %u", i ? "," : "",
			       json_string_value(json_object_get(d, "name")), used[idx]);
	}
	printf("\n");
	json_decref(doc);
}

static void check_all(const float *p, size_t n, float v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			fail_msg("element %zu is %g, expected %g", i, p[i], v);
}

/* Eight chains over pairs of buffers, on a CPU worker and the OpenCL device
 * as eager hands tasks out: each step reads what the step before wrote,
 * wherever that ran, and the client sees the last values at the end. Which
 * device ran what is up to eager (first come first served): printed, not
 * asserted. */
static void test_chains_across_devices(void **state)
{
	enum { N = 4096, STEPS = 40, CHAINS = 8 };
	(void)state;
	start("[cpu]\ncores = [0]\n");
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer bx[CHAINS], by[CHAINS];
	float *x[CHAINS], *y[CHAINS];
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdmt_lookup_kernels(c, &k), 0);
	for (int ch = 0; ch < CHAINS; ch++) {
		assert_int_equal(tdm_buffer_alloc(c, N * 4, 0, &bx[ch], (void **)&x[ch]), 0);
		assert_int_equal(tdm_buffer_alloc(c, N * 4, 0, &by[ch], (void **)&y[ch]), 0);
	}

	tdm_graph *g = tdm_graph_new(c);
	tdm_graph_want_task_info(g, 1);
	/* Even steps add x into y, odd steps set x to a new value: sums of
	 * small integers, exact in float. Chains interleave, step by step. */
	for (int ch = 0; ch < CHAINS; ch++)
		assert_int_equal(tdmt_add_fill(g, &k, bx[ch], 0, 0, 1.0f + (float)ch, NULL), 0);
	for (int s = 0; s < STEPS; s++) {
		for (int ch = 0; ch < CHAINS; ch++) {
			if (s % 2 == 0)
				assert_int_equal(tdmt_add_axpy(g, &k, bx[ch], by[ch], 1.0f, NULL),
				                 0);
			else
				assert_int_equal(
				        tdmt_add_fill(g, &k, bx[ch], 0, 0, (float)(s + 1), NULL),
				        0);
		}
	}
	for (int ch = 0; ch < CHAINS; ch++)
		memset(y[ch], 0, N * 4);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 60 * 1000000000ll), 0);
	for (int ch = 0; ch < CHAINS; ch++) {
		float want = 1.0f + (float)ch;
		for (int s = 1; s < STEPS - 1; s += 2)
			want += (float)(s + 1);
		check_all(y[ch], N, want);
		check_all(x[ch], N, (float)STEPS);
	}
	uint32_t used[64] = { 0 };
	for (uint32_t t = 0; t < tdm_graph_task_count(g); t++) {
		const struct tdm_task_info *ti = tdm_graph_task_info(g, t);
		assert_int_equal(ti->status, 0);
		assert_true(ti->device < tdm_device_count(c) && ti->device < 64);
		used[ti->device]++;
	}
	print_split(used, tdm_device_count(c));
	tdm_graph_free(g);
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* Only the OpenCL device, with room for two of sixteen buffers: every
 * buffer is written there, evicted (written back), read there again. */
static void test_eviction_keeps_every_byte(void **state)
{
	enum { NBUF = 16, N = 4096 };
	(void)state;
	start("[devices]\ninclude = [\"clcpu\"]\nmem_cap = { clcpu0 = \"40KiB\" }\n");
	tdm_client *c;
	tdm_kernel fill, axpy;
	tdm_buffer b[NBUF], bsum;
	float *p[NBUF], *sum;
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdm_kernel_lookup(c, "fill", &fill), 0);
	assert_int_equal(tdm_kernel_lookup(c, "axpy", &axpy), 0);
	tdm_kernel spin;
	assert_int_equal(tdm_kernel_lookup(c, "spin", &spin), -TDM_EKERNEL); /* CPU only */
	assert_int_equal(tdm_buffer_alloc(c, N * 4, 0, &bsum, (void **)&sum), 0);
	for (int i = 0; i < NBUF; i++)
		assert_int_equal(tdm_buffer_alloc(c, N * 4, 0, &b[i], (void **)&p[i]), 0);

	tdm_graph *g = tdm_graph_new(c);
	for (int i = 0; i < NBUF; i++) {
		struct tdm_task_desc t = { .kernel = fill, .nargs = 1, .nscalars = 1 };
		t.args[0] = TDM_ARG(b[i], TDM_W, 0, 0);
		t.scalars[0] = TDM_F32((float)(i + 1));
		assert_int_equal(tdm_graph_add_task(g, &t, NULL), 0);
	}
	for (int i = 0; i < NBUF; i++) {
		struct tdm_task_desc t = { .kernel = axpy, .nargs = 2, .nscalars = 1 };
		t.args[0] = TDM_ARG(b[i], TDM_R, 0, 0);
		t.args[1] = TDM_ARG(bsum, TDM_RW, 0, 0);
		t.scalars[0] = TDM_F32(1.0f);
		assert_int_equal(tdm_graph_add_task(g, &t, NULL), 0);
	}
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 60 * 1000000000ll), 0);
	check_all(sum, N, NBUF * (NBUF + 1) / 2.0f);
	for (int i = 0; i < NBUF; i++)
		check_all(p[i], N, (float)(i + 1));

	json_t *doc = status();
	json_t *d = tdmt_status_device(doc, "clcpu0");
	json_int_t cap = json_integer_value(json_object_get(d, "mem_cap"));
	json_int_t ev = json_integer_value(json_object_get(d, "evictions"));
	json_int_t wb = json_integer_value(json_object_get(d, "writebacks"));
	printf("# clcpu0: cap %lld, evictions %lld, writebacks %lld\n", (long long)cap,
	       (long long)ev, (long long)wb);
	assert_int_equal(cap, 40 * 1024);
	assert_true(ev >= NBUF);
	assert_true(wb >= NBUF - 2);
	assert_true(json_integer_value(json_object_get(d, "mem_used")) <= cap);
	json_decref(doc);
	tdm_graph_free(g);
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* The OpenCL device fails its first launch. Whether eager gives it a task
 * at all is up to which worker asks first; either way every graph
 * succeeds with the right values and no task completes on the device: its
 * first launch fails, the device is marked unhealthy (and says so in the
 * status and the log) and takes nothing the CPU can run from then on, and
 * the task that failed runs elsewhere. Printed: whether the fault was
 * hit. tests/unit/test_residency.c (test_opencl_fault) hits it every time. */
static void test_faulty_device_task_moves(void **state)
{
	enum { M = 64, ROUNDS = 8 };
	(void)state;
	start("[cpu]\ncores = [0]\n[devices]\nfault_inject = { clcpu0 = 1 }\n");
	int cl = device_index("clcpu0");
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer ba, bb, bc;
	float *a, *b, *cc;
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdmt_lookup_kernels(c, &k), 0);
	assert_int_equal(tdm_buffer_alloc(c, M * M * 4, 0, &ba, (void **)&a), 0);
	assert_int_equal(tdm_buffer_alloc(c, M * M * 4, 0, &bb, (void **)&b), 0);
	assert_int_equal(tdm_buffer_alloc(c, 32 * M * M * 4, 0, &bc, (void **)&cc), 0);
	for (int i = 0; i < M * M; i++)
		a[i] = b[i] = 1.0f;
	json_int_t faults = 0;
	int fault_round = -1;
	for (int round = 0; round < ROUNDS; round++) {
		tdm_graph *g = tdm_graph_new(c);
		tdm_graph_want_task_info(g, 1);
		/* 32 independent GEMMs, each into its own slice of C. */
		for (int t = 0; t < 32; t++) {
			struct tdm_task_desc d = { .kernel = k.sgemm, .nargs = 3, .nscalars = 5 };
			d.args[0] = TDM_ARG(ba, TDM_R, 0, 0);
			d.args[1] = TDM_ARG(bb, TDM_R, 0, 0);
			d.args[2] = TDM_ARG(bc, TDM_RW, (uint64_t)t * M * M * 4, M * M * 4);
			d.scalars[0] = TDM_I64(M);
			d.scalars[1] = TDM_I64(M);
			d.scalars[2] = TDM_I64(M);
			d.scalars[3] = TDM_F32(1.0f);
			d.scalars[4] = TDM_F32(0.0f);
			assert_int_equal(tdm_graph_add_task(g, &d, NULL), 0);
		}
		memset(cc, 0, 32 * M * M * 4);
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 60 * 1000000000ll), 0);
		check_all(cc, 32 * M * M, (float)M);
		for (uint32_t t = 0; t < tdm_graph_task_count(g); t++) {
			const struct tdm_task_info *ti = tdm_graph_task_info(g, t);
			assert_int_equal(ti->status, 0);
			if (ti->device == (uint32_t)cl)
				fail_msg(
				        "round %d: task %u completed on clcpu0, whose first launch "
				        "fails",
				        round, t);
		}
		tdm_graph_free(g);
		json_t *doc = status();
		json_t *d = tdmt_status_device(doc, "clcpu0");
		faults = json_integer_value(json_object_get(d, "faults"));
		assert_true(faults <= 1);
		assert_int_equal(json_is_true(json_object_get(d, "healthy")), faults == 0);
		json_decref(doc);
		if (faults && fault_round < 0)
			fault_round = round;
	}
	assert_int_equal(tdmt_log_contains(&daemon_, "clcpu0: marked unhealthy"), faults == 1);
	if (faults)
		printf("# clcpu0 failed its first launch in round %d and ran no task after\n",
		       fault_round);
	else
		printf("# eager gave clcpu0 no task in %d rounds: the fault was not hit\n", ROUNDS);
	tdm_disconnect(c);
	tdmt_test_ok();
}

/* tandemctl buffers shows where each buffer's valid copies are. */
static void test_tandemctl_shows_replicas(void **state)
{
	(void)state;
	start("[devices]\ninclude = [\"clcpu\"]\n");
	tdm_client *c;
	tdm_kernel fill;
	tdm_buffer bx;
	float *x;
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdm_kernel_lookup(c, "fill", &fill), 0);
	tdm_buffer by;
	float *y;
	/* x is a KV buffer: its device copy outlives the graph. y is plain:
	 * the client may write it next, so only the host copy stays valid. */
	assert_int_equal(tdm_buffer_alloc(c, 4096, TDM_BUF_KV, &bx, (void **)&x), 0);
	assert_int_equal(tdm_buffer_alloc(c, 4096, 0, &by, (void **)&y), 0);
	tdm_graph *g = tdm_graph_new(c);
	struct tdm_task_desc t = { .kernel = fill, .nargs = 1, .nscalars = 1 };
	t.args[0] = TDM_ARG(bx, TDM_W, 0, 0);
	t.scalars[0] = TDM_F32(2.5f);
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), 0);
	t.args[0] = TDM_ARG(by, TDM_W, 0, 0);
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 30 * 1000000000ll), 0);
	check_all(x, 1024, 2.5f);

	char cmd[512], out[4096];
	snprintf(cmd, sizeof(cmd), "%s/bin/tandemctl --socket %s buffers", tdmt_build_dir(),
	         daemon_.sock);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	assert_int_equal(pclose(f), 0);
	printf("%s", out);
	/* Written on clcpu0, written back: x valid on both, y on the host. */
	assert_non_null(strstr(out, "host,clcpu0"));
	assert_non_null(strstr(out, "host*"));
	tdm_graph_free(g);
	tdm_disconnect(c);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chains_across_devices, tdmt_test_setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_eviction_keeps_every_byte, tdmt_test_setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_faulty_device_task_moves, tdmt_test_setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_tandemctl_shows_replicas, tdmt_test_setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
