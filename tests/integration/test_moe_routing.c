/* A mixture-of-experts layer through a private tandemd on CPU cores only
 * (docs/kernels.md, "Routing seen at run time" and "Accumulating outputs"):
 * experts guarded by the router run only when some token chose them, the
 * others complete at zero cost with their outputs untouched; a router whose
 * output is not finite fails its graph with -TDM_EINVAL and the daemon
 * serves the next one; experts accumulating into one y give the same bits
 * on every run, and what the serialised experts give. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support.h"

#define N 8 /* tokens */
#define NE 4 /* experts */
#define K 2
#define DM 16
#define DFF 32

static const char cores_toml[] = "[opencl]\nenabled = false\n[cuda]\nenabled = false\n";

static struct tdmt_daemon d;
static tdm_client *c;
static tdm_kernel k_router, k_moe, k_fill;

/* One layer's buffers: logits in, ids and weights out of the router, x, one
 * weight buffer per expert (gate, up, down), and NE outputs (one per expert
 * for the guard test, y[0] for the sum). */
static tdm_buffer b_logits, b_ids, b_wts, b_x, b_w[NE], b_y[NE + 1];
static float *logits, *x, *w[NE], *y[NE + 1];

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float)((rng >> 40) & 0xffff) / 65536.0f - 0.5f;
}

static void alloc(size_t bytes, tdm_buffer *h, float **p)
{
	void *ptr;
	assert_int_equal(tdm_buffer_alloc(c, bytes, 0, h, &ptr), 0);
	*p = ptr;
}

static int group_setup(void **state)
{
	(void)state;
	if (tdmt_daemon_start(&d, cores_toml) != 0) {
		tdmt_daemon_cleanup(&d);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	tdmt_daemon_cleanup(&d);
	return 0;
}

/* Connects c to the daemon on sock, looks up the kernels and allocates
 * and fills the layer's buffers. */
static int connect_layer(const char *sock)
{
	rng = 0x9e3779b97f4a7c15ull;
	if (tdmt_connect(sock, &c) != 0)
		return -1;
	if (tdm_kernel_lookup(c, "topk_router", &k_router) ||
	    tdm_kernel_lookup(c, "moe_expert", &k_moe) || tdm_kernel_lookup(c, "fill", &k_fill))
		return -1;
	float *ids_p, *wts_p;
	alloc(N * NE * 4, &b_logits, &logits);
	alloc(N * K * 4, &b_ids, &ids_p);
	alloc(N * K * 4, &b_wts, &wts_p);
	alloc(N * DM * 4, &b_x, &x);
	for (int e = 0; e < NE; e++) {
		alloc(3 * DM * DFF * 4, &b_w[e], &w[e]);
		for (int i = 0; i < 3 * DM * DFF; i++)
			w[e][i] = frand();
	}
	for (int e = 0; e <= NE; e++)
		alloc(N * DM * 4, &b_y[e], &y[e]);
	for (int i = 0; i < N * DM; i++)
		x[i] = frand();
	return 0;
}

static int test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	return connect_layer(d.sock);
}

static int test_teardown(void **state)
{
	(void)state;
	tdm_disconnect(c);
	c = NULL;
	return tdmt_after_test(&d);
}

static uint32_t add_router(tdm_graph *g)
{
	struct tdm_task_desc t = { .kernel = k_router, .nargs = 3, .nscalars = 3 };
	t.args[0] = TDM_ARG(b_logits, TDM_R, 0, 0);
	t.args[1] = TDM_ARG(b_ids, TDM_W, 0, 0);
	t.args[2] = TDM_ARG(b_wts, TDM_W, 0, 0);
	t.scalars[0] = TDM_I64(N);
	t.scalars[1] = TDM_I64(NE);
	t.scalars[2] = TDM_I64(K);
	uint32_t idx;
	assert_int_equal(tdm_graph_add_task(g, &t, &idx), 0);
	return idx;
}

static uint32_t add_expert(tdm_graph *g, int e, tdm_buffer out, uint32_t mode)
{
	struct tdm_task_desc t = { .kernel = k_moe, .nargs = 7, .nscalars = 5 };
	uint64_t m = (uint64_t)DM * DFF * 4;
	t.args[0] = TDM_ARG(b_x, TDM_R, 0, 0);
	t.args[1] = TDM_ARG(b_w[e], TDM_R, 0, m);
	t.args[2] = TDM_ARG(b_w[e], TDM_R, m, m);
	t.args[3] = TDM_ARG(b_w[e], TDM_R, 2 * m, m);
	t.args[4] = TDM_ARG(b_ids, TDM_R, 0, 0);
	t.args[5] = TDM_ARG(b_wts, TDM_R, 0, 0);
	t.args[6] = TDM_ARG(out, mode, 0, 0);
	t.scalars[0] = TDM_I64(N);
	t.scalars[1] = TDM_I64(DM);
	t.scalars[2] = TDM_I64(DFF);
	t.scalars[3] = TDM_I64(K);
	t.scalars[4] = TDM_I64(e);
	uint32_t idx;
	assert_int_equal(tdm_graph_add_task(g, &t, &idx), 0);
	return idx;
}

static void add_zero(tdm_graph *g, tdm_buffer b)
{
	struct tdm_task_desc t = { .kernel = k_fill, .nargs = 1, .nscalars = 1 };
	t.args[0] = TDM_ARG(b, TDM_W, 0, 0);
	t.scalars[0] = TDM_F32(0.0f);
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), 0);
}

/* Logits that send every token to experts 0 and 2 (never 1 or 3). */
static void route_to_0_and_2(void)
{
	for (int t = 0; t < N; t++)
		for (int e = 0; e < NE; e++)
			logits[t * NE + e] = e == 0   ? 3.0f + 0.1f * (float)t
			                     : e == 2 ? 2.0f
			                              : -4.0f;
}

/* One output per expert, each guarded: 1 and 3 are skipped (zero cost,
 * outputs untouched); 0 and 2 give what the same experts give unguarded. */
static void test_unrouted_experts_skipped(void **state)
{
	(void)state;
	route_to_0_and_2();
	float want[NE][N * DM];
	for (int pass = 0; pass < 2; pass++) {
		bool guarded = pass == 1;
		for (int e = 0; e < NE; e++)
			for (int i = 0; i < N * DM; i++)
				y[e][i] = 7.0f;
		tdm_graph *g = tdm_graph_new(c);
		tdm_graph_want_task_info(g, 1);
		uint32_t r = add_router(g), ex[NE];
		for (int e = 0; e < NE; e++) {
			ex[e] = add_expert(g, e, b_y[e], TDM_RW);
			if (guarded)
				assert_int_equal(tdm_graph_set_guard(g, ex[e], r, (uint32_t)e), 0);
		}
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 10 * 1000000000ll), 0);
		for (int e = 0; e < NE; e++) {
			const struct tdm_task_info *ti = tdm_graph_task_info(g, ex[e]);
			assert_int_equal(ti->status, 0);
			if (!guarded) {
				memcpy(want[e], y[e], sizeof(want[e]));
				continue;
			}
			if (e == 1 || e == 3) {
				assert_true(ti->end_ns == ti->start_ns); /* zero cost */
				assert_int_equal(ti->predicted_ns, 0); /* never placed */
				for (int i = 0; i < N * DM; i++)
					assert_true(y[e][i] == 7.0f); /* untouched */
			} else {
				assert_true(ti->end_ns > ti->start_ns);
				assert_memory_equal(y[e], want[e], sizeof(want[e]));
			}
		}
		tdm_graph_free(g);
	}
	/* Unguarded, experts 1 and 3 ran, leaving y as it was (no token). */
	for (int i = 0; i < N * DM; i++)
		assert_true(want[1][i] == 7.0f && want[3][i] == 7.0f);
	tdmt_test_ok();
}

/* NaN logits make NaN weights: the router's task fails with -TDM_EINVAL,
 * the experts are canceled unrun, the graph says -TDM_EINVAL; the next
 * graph of the same client runs. */
static void test_router_output_not_finite(void **state)
{
	(void)state;
	route_to_0_and_2();
	logits[3 * NE + 1] = NAN;
	for (int i = 0; i < N * DM; i++)
		y[0][i] = 7.0f;
	tdm_graph *g = tdm_graph_new(c);
	tdm_graph_want_task_info(g, 1);
	uint32_t r = add_router(g);
	uint32_t ex = add_expert(g, 0, b_y[0], TDM_RW);
	assert_int_equal(tdm_graph_set_guard(g, ex, r, 0), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 10 * 1000000000ll), -TDM_EINVAL);
	assert_int_equal(tdm_graph_task_info(g, r)->status, -TDM_EINVAL);
	assert_int_equal(tdm_graph_task_info(g, ex)->status, -TDM_ECANCELED);
	for (int i = 0; i < N * DM; i++)
		assert_true(y[0][i] == 7.0f);
	assert_int_equal(tdmt_wait_log(&d, "routing rejected", 5000), 0);
	/* The same graph again with finite logits. */
	route_to_0_and_2();
	assert_int_equal(tdm_graph_submit(g), 0);
	assert_int_equal(tdm_wait(g, 10 * 1000000000ll), 0);
	assert_int_equal(tdm_graph_task_info(g, ex)->status, 0);
	tdm_graph_free(g);
	tdmt_test_ok();
}

/* All experts accumulate into y[NE] (TDM_ACC), guarded: every run gives
 * the same bits, within rounding of the serialised experts (TDM_RW). That
 * the experts are not ordered among themselves is test_accumulate's. */
static void accumulated_experts(void)
{
	for (int t = 0; t < N; t++)
		for (int e = 0; e < NE; e++)
			logits[t * NE + e] = frand() * 4;
	float serial[N * DM], first[N * DM];
	for (int run = 0; run < 6; run++) {
		bool acc = run > 0;
		tdm_graph *g = tdm_graph_new(c);
		tdm_graph_want_task_info(g, 1);
		uint32_t r = add_router(g), ex[NE];
		add_zero(g, b_y[NE]);
		for (int e = 0; e < NE; e++) {
			ex[e] = add_expert(g, e, b_y[NE], acc ? TDM_ACC : TDM_RW);
			if (acc)
				assert_int_equal(tdm_graph_set_guard(g, ex[e], r, (uint32_t)e), 0);
		}
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 10 * 1000000000ll), 0);
		if (!acc) {
			memcpy(serial, y[NE], sizeof(serial));
		} else if (run == 1) {
			memcpy(first, y[NE], sizeof(first));
			for (int i = 0; i < N * DM; i++)
				assert_true(fabsf(first[i] - serial[i]) <=
				            1e-5f * (1.0f + fabsf(serial[i])));
		} else {
			assert_memory_equal(y[NE], first, sizeof(first));
		}
		tdm_graph_free(g);
	}
}

static void test_accumulated_experts(void **state)
{
	(void)state;
	accumulated_experts();
	tdmt_test_ok();
}

/* The same on PoCL's OpenCL device alone: each partial is made on the
 * device and copied back for the sum. Skipped without PoCL. */
static void test_accumulated_experts_opencl(void **state)
{
	(void)state;
	static struct tdmt_daemon cl;
	memset(&cl, 0, sizeof(cl));
	if (tdmt_daemon_start(&cl, "[devices]\ninclude = [\"clcpu\"]\n[cuda]\nenabled = false\n")) {
		tdmt_daemon_cleanup(&cl);
		tdmt_test_ok();
		skip(); /* no OpenCL CPU device here */
	}
	tdm_client *cores = c;
	if (connect_layer(cl.sock) != 0) {
		c = cores;
		cl.failed = true;
		tdmt_daemon_cleanup(&cl);
		fail_msg("no client on the OpenCL daemon");
	}
	accumulated_experts();
	tdm_disconnect(c);
	c = cores;
	if (!tdmt_daemon_alive(&cl))
		cl.failed = true;
	tdmt_daemon_cleanup(&cl);
	tdmt_test_ok();
}

/* An integer of a JSON object (-1 when absent). */
static json_int_t jint(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* The llm policy splits the routed experts between the cores and PoCL's
 * device at release, and counts them per layer: two layers (two routers)
 * each sending every token to experts 0 and 2, RUNS times; the status
 * document's "moe" (tandemctl moe, the tandem_moe_* metrics) then holds
 * two layers of 2 * RUNS lookups each, every one placed on one side, the
 * hits (weights already on the device) among them, and the unrouted
 * experts 1 and 3 nowhere. Skipped without PoCL. */
static void test_moe_telemetry(void **state)
{
	enum { RUNS = 3 };
	static struct tdmt_daemon cl;

	(void)state;
	memset(&cl, 0, sizeof(cl));
	if (tdmt_daemon_start(&cl, "[engine]\npolicy = \"llm\"\n[cuda]\nenabled = false\n")) {
		tdmt_daemon_cleanup(&cl);
		fail_msg("no daemon with the llm policy");
	}
	int64_t accel = -1;
	assert_int_equal(tdmt_device_field(cl.sock, "clcpu0", "index", &accel), 0);
	if (accel < 0) {
		printf("# skipped: no OpenCL device (clcpu0) in this machine\n");
		tdmt_daemon_cleanup(&cl);
		tdmt_test_ok();
		return;
	}
	tdm_client *cores = c;
	if (connect_layer(cl.sock) != 0) {
		c = cores;
		cl.failed = true;
		tdmt_daemon_cleanup(&cl);
		fail_msg("no client on the llm daemon");
	}
	route_to_0_and_2();
	for (int run = 0; run < RUNS; run++) {
		tdm_graph *g = tdm_graph_new(c);
		for (int layer = 0; layer < 2; layer++) {
			uint32_t r = add_router(g);
			for (int e = 0; e < NE; e++) {
				uint32_t ex = add_expert(g, e, b_y[e], TDM_RW);
				assert_int_equal(tdm_graph_set_guard(g, ex, r, (uint32_t)e), 0);
			}
		}
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 10 * 1000000000ll), 0);
		tdm_graph_free(g);
	}
	json_t *doc = tdmt_status_doc(cl.sock);
	assert_non_null(doc);
	const json_t *moe = json_object_get(doc, "moe");
	assert_true(json_is_object(moe));
	assert_int_equal(jint(moe, "splits"), 2 * RUNS);
	const json_t *layers = json_object_get(moe, "layers");
	assert_int_equal(json_array_size(layers), 2);
	for (size_t l = 0; l < 2; l++) {
		const json_t *L = json_array_get(layers, l);
		assert_int_equal(jint(L, "layer"), (json_int_t)l);
		assert_int_equal(jint(L, "lookups"), 2 * RUNS);
		assert_int_equal(jint(L, "on_cpu") + jint(L, "on_accel"), 2 * RUNS);
		assert_in_range(jint(L, "hits"), 0, 2 * RUNS);
		assert_in_range(jint(L, "loads"), 0, jint(L, "on_accel"));
		/* Only loads copy weights in: none loaded, none counted. */
		if (jint(L, "loads") == 0)
			assert_int_equal(jint(L, "load_bytes"), 0);
	}
	assert_true(json_is_boolean(json_object_get(moe, "cache_pays")));
	assert_in_range(jint(moe, "cached"), 0, jint(moe, "cache_cap"));
	assert_in_range(jint(moe, "cached"), 0, jint(moe, "cache_admits"));
	/* The device's split between KV and experts, and the prefetch: bytes
	 * used and wasted are of the bytes prefetched, settled or not. */
	assert_true(jint(moe, "budget_bytes") > 0);
	assert_in_range(jint(moe, "expert_bytes"), 0, jint(moe, "budget_bytes"));
	assert_in_range(jint(moe, "kv_bytes"), 0, jint(moe, "budget_bytes"));
	assert_in_range(jint(moe, "prefetch_used_bytes") + jint(moe, "prefetch_wasted_bytes"), 0,
	                jint(moe, "prefetch_bytes"));
	json_decref(doc);
	tdm_disconnect(c);
	c = cores;
	if (!tdmt_daemon_alive(&cl))
		cl.failed = true;
	tdmt_daemon_cleanup(&cl);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_unrouted_experts_skipped),
		T(test_router_output_not_finite),
		T(test_accumulated_experts),
		T(test_accumulated_experts_opencl),
		T(test_moe_telemetry),
	};
	return cmocka_run_group_tests_name("moe_routing", tests, group_setup, group_teardown);
}
