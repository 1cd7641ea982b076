/* KV tiers decided by the daemon (policies/llm.c) on cores + the OpenCL
 * device (PoCL), whose devices.mem_cap holds the step's weights and
 * activations and three of eight requests' KV caches:
 *
 *  - with policy.llm_tiers_by_cost off (the split then depends on the
 *    budget alone, not on how fast PoCL is predicted to be here), the
 *    first three requests' KV live on the accelerator and their
 *    attention runs there; the other five live in host memory and their
 *    attention runs on the cores, the same in every step (no thrash);
 *  - after the first step (the warm-up, where the device-tier caches are
 *    copied in) no KV cache crosses the link whole: what moves per step
 *    is below the step's activations, both ways, and below one cache;
 *  - every step's attention output matches a plain-loop reference.
 *
 * One decode step is one graph: q = x Wq, k = x Wk, then per request the
 * append of its new K and V row (copy tasks into its KV buffer) and its
 * attention over its cache, then y = o Wo. Skipped without an OpenCL
 * device. */
#include <jansson.h>
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

enum {
	NREQ = 8, /* requests in the batch */
	ON_ACCEL = 3, /* whose KV the cap holds */
	DM = 128, /* model width */
	NH = 2, /* query heads */
	NKV = 1, /* KV heads */
	HD = 64, /* head dim */
	QD = NH * HD,
	KVD = NKV * HD,
	CAP = 1024, /* KV rows per request */
	CTX = 100, /* rows there before the first step */
	STEPS = 6,
	KIB = 1024,
};

/* Buffer sizes (bytes), all whole pages. */
#define W_Q_BYTES ((size_t)DM * QD * 4)
#define W_K_BYTES ((size_t)DM * KVD * 4)
#define W_O_BYTES ((size_t)QD * DM * 4)
#define X_BYTES ((size_t)NREQ * DM * 4)
#define Q_BYTES ((size_t)NREQ * QD * 4)
#define K_BYTES ((size_t)4096) /* NREQ * KVD floats, rounded up to a page */
#define O_BYTES ((size_t)NREQ * QD * 4)
#define Y_BYTES ((size_t)NREQ * DM * 4)
#define KV_BYTES ((size_t)2 * CAP * KVD * 4) /* K rows, then V rows */
#define ACT_BYTES (X_BYTES + Q_BYTES + K_BYTES + O_BYTES + Y_BYTES)
#define W_BYTES (W_Q_BYTES + W_K_BYTES + W_O_BYTES)
#define OTHER_BYTES (W_BYTES + ACT_BYTES)
/* Room for ON_ACCEL caches and half of another. */
#define MEM_CAP (OTHER_BYTES + ON_ACCEL * KV_BYTES + KV_BYTES / 2)

static struct tdmt_daemon daemon_;

/* A figure of clcpu0 in the status, or -1 without the device. */
static int64_t accel_field(const char *key)
{
	int64_t v;
	assert_int_equal(tdmt_device_field(daemon_.sock, "clcpu0", key, &v), 0);
	return v;
}

static int64_t accel_moved(void)
{
	return accel_field("bytes_h2d") + accel_field("bytes_d2h");
}

struct buf {
	tdm_buffer h;
	float *p;
};

static void alloc(tdm_client *c, size_t bytes, uint32_t flags, struct buf *b)
{
	assert_int_equal(tdm_buffer_alloc(c, bytes, flags, &b->h, (void **)&b->p), 0);
	memset(b->p, 0, bytes);
}

static float frand(uint64_t *s)
{
	return (float)((double)(tdmt_rand(s) >> 11) / 9007199254740992.0 - 0.5);
}

struct kern {
	tdm_kernel sgemm, copy, attn;
};

static void add(tdm_graph *g, tdm_kernel k, const struct tdm_arg *args, uint32_t nargs,
                const struct tdm_scalar *sc, uint32_t nsc, uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k, .nargs = nargs, .nscalars = nsc };
	if (nargs)
		memcpy(t.args, args, nargs * sizeof(*args));
	if (nsc)
		memcpy(t.scalars, sc, nsc * sizeof(*sc));
	assert_int_equal(tdm_graph_add_task(g, &t, idx), 0);
}

static void add_sgemm(tdm_graph *g, const struct kern *k, const struct buf *a, size_t alen,
                      const struct buf *b, size_t blen, const struct buf *c, size_t clen, int64_t m,
                      int64_t n, int64_t kk)
{
	struct tdm_arg args[] = { TDM_ARG(a->h, TDM_R, 0, alen), TDM_ARG(b->h, TDM_R, 0, blen),
		                  TDM_ARG(c->h, TDM_RW, 0, clen) };
	struct tdm_scalar sc[] = { TDM_I64(m), TDM_I64(n), TDM_I64(kk), TDM_F32(1.0f),
		                   TDM_F32(0.0f) };
	add(g, k->sgemm, args, 3, sc, 5, NULL);
}

static void add_copy(tdm_graph *g, const struct kern *k, tdm_buffer src, uint64_t soff,
                     tdm_buffer dst, uint64_t doff, uint64_t len)
{
	struct tdm_arg args[] = { TDM_ARG(src, TDM_R, soff, len), TDM_ARG(dst, TDM_W, doff, len) };
	add(g, k->copy, args, 2, NULL, 0, NULL);
}

/* y = x W, in double (x: m x kk, W: kk x n). */
static void ref_matmul(const float *x, const float *w, double *y, int m, int n, int kk)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = 0;
			for (int t = 0; t < kk; t++)
				s += (double)x[i * kk + t] * w[t * n + j];
			y[i * n + j] = s;
		}
}

/* One query head over kv_len rows of one cache (K rows then V rows). */
static void ref_attend(const double *q, const double *kv, int kv_len, double *out)
{
	double sc[CAP], mx = -INFINITY, sum = 0;
	for (int t = 0; t < kv_len; t++) {
		double s = 0;
		for (int d = 0; d < HD; d++)
			s += q[d] * kv[(size_t)t * KVD + d];
		sc[t] = s / sqrt((double)HD);
		mx = fmax(mx, sc[t]);
	}
	for (int t = 0; t < kv_len; t++)
		sum += (sc[t] = exp(sc[t] - mx));
	for (int d = 0; d < HD; d++) {
		double s = 0;
		for (int t = 0; t < kv_len; t++)
			s += sc[t] * kv[((size_t)CAP + t) * KVD + d];
		out[d] = s / sum;
	}
}

static void test_tiers_under_cap(void **state)
{
	(void)state;
	char toml[320];
	snprintf(toml, sizeof(toml),
	         "[engine]\npolicy = \"llm\"\n[policy]\nllm_tiers_by_cost = false\n"
	         "[devices]\nmem_cap = { clcpu0 = %zu }\n",
	         (size_t)MEM_CAP);
	assert_int_equal(tdmt_daemon_start(&daemon_, toml), 0);
	if (accel_field("index") < 0) {
		printf("# skipped: no OpenCL device (clcpu0) in this machine\n");
		tdmt_test_ok();
		return;
	}
	int accel = (int)accel_field("index");
	assert_int_equal(accel_field("mem_cap"), (int64_t)MEM_CAP);

	tdm_client *c;
	struct kern k;
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdm_kernel_lookup(c, "sgemm", &k.sgemm), 0);
	assert_int_equal(tdm_kernel_lookup(c, "copy", &k.copy), 0);
	assert_int_equal(tdm_kernel_lookup(c, "attn_decode", &k.attn), 0);

	struct buf wq, wk, wo, x, q, kr, o, y, kv[NREQ];
	uint64_t seed = 15;
	alloc(c, W_Q_BYTES, TDM_BUF_WEIGHTS, &wq);
	alloc(c, W_K_BYTES, TDM_BUF_WEIGHTS, &wk);
	alloc(c, W_O_BYTES, TDM_BUF_WEIGHTS, &wo);
	for (size_t i = 0; i < W_Q_BYTES / 4; i++)
		wq.p[i] = frand(&seed) * 0.2f;
	for (size_t i = 0; i < W_K_BYTES / 4; i++)
		wk.p[i] = frand(&seed) * 0.2f;
	for (size_t i = 0; i < W_O_BYTES / 4; i++)
		wo.p[i] = frand(&seed) * 0.2f;
	alloc(c, X_BYTES, 0, &x);
	alloc(c, Q_BYTES, 0, &q);
	alloc(c, K_BYTES, 0, &kr);
	alloc(c, O_BYTES, 0, &o);
	alloc(c, Y_BYTES, 0, &y);
	/* The caches and the test's own copy of them (in double). */
	double *mirror = calloc((size_t)NREQ * 2 * CAP * KVD, sizeof(double));
	assert_non_null(mirror);
	for (int r = 0; r < NREQ; r++) {
		alloc(c, KV_BYTES, TDM_BUF_KV, &kv[r]);
		for (int t = 0; t < CTX; t++)
			for (int d = 0; d < KVD; d++)
				for (int half = 0; half < 2; half++) {
					size_t at = ((size_t)half * CAP + t) * KVD + d;
					kv[r].p[at] = frand(&seed);
					mirror[(size_t)r * 2 * CAP * KVD + at] = kv[r].p[at];
				}
	}

	int attn_dev[STEPS][NREQ];
	int64_t moved_before = accel_moved();
	double worst = 0;
	for (int s = 0; s < STEPS; s++) {
		int pos = CTX + s; /* the row this step appends */
		for (size_t i = 0; i < X_BYTES / 4; i++)
			x.p[i] = frand(&seed);
		tdm_graph *g = tdm_graph_new(c);
		assert_non_null(g);
		tdm_graph_want_task_info(g, 1);
		add_sgemm(g, &k, &x, X_BYTES, &wq, W_Q_BYTES, &q, Q_BYTES, NREQ, QD, DM);
		add_sgemm(g, &k, &x, X_BYTES, &wk, W_K_BYTES, &kr, (size_t)NREQ * KVD * 4, NREQ,
		          KVD, DM);
		uint32_t attn_idx[NREQ];
		for (int r = 0; r < NREQ; r++) {
			uint64_t row = (uint64_t)r * KVD * 4, rowb = KVD * 4;
			/* V = K here: the same new row appended to both halves. */
			add_copy(g, &k, kr.h, row, kv[r].h, (uint64_t)pos * rowb, rowb);
			add_copy(g, &k, kr.h, row, kv[r].h, ((uint64_t)CAP + pos) * rowb, rowb);
			struct tdm_arg args[] = {
				TDM_ARG(q.h, TDM_R, (uint64_t)r * QD * 4, QD * 4),
				TDM_ARG(kv[r].h, TDM_R, 0, (uint64_t)CAP * KVD * 4),
				TDM_ARG(kv[r].h, TDM_R, (uint64_t)CAP * KVD * 4,
				        (uint64_t)CAP * KVD * 4),
				TDM_ARG(o.h, TDM_W, (uint64_t)r * QD * 4, QD * 4),
			};
			struct tdm_scalar sc[] = { TDM_I64(1),  TDM_I64(NH),      TDM_I64(NKV),
				                   TDM_I64(HD), TDM_I64(pos + 1), TDM_I64(CAP) };
			add(g, k.attn, args, 4, sc, 6, &attn_idx[r]);
		}
		add_sgemm(g, &k, &o, O_BYTES, &wo, W_O_BYTES, &y, Y_BYTES, NREQ, DM, QD);
		assert_int_equal(tdm_graph_submit(g), 0);
		assert_int_equal(tdm_wait(g, 60 * 1000000000ll), 0);
		for (int r = 0; r < NREQ; r++) {
			const struct tdm_task_info *ti = tdm_graph_task_info(g, attn_idx[r]);
			assert_non_null(ti);
			attn_dev[s][r] = (int)ti->device;
		}
		tdm_graph_free(g);

		/* The reference: the new rows, then each head's attention. */
		double qd[NREQ * QD], kd[NREQ * KVD];
		ref_matmul(x.p, wq.p, qd, NREQ, QD, DM);
		ref_matmul(x.p, wk.p, kd, NREQ, KVD, DM);
		for (int r = 0; r < NREQ; r++) {
			double *m = mirror + (size_t)r * 2 * CAP * KVD;
			for (int d = 0; d < KVD; d++)
				m[(size_t)pos * KVD + d] = m[((size_t)CAP + pos) * KVD + d] =
				        (float)kd[r * KVD + d];
			for (int h = 0; h < NH; h++) {
				double want[HD];
				ref_attend(qd + r * QD + h * HD, m + (size_t)(h / (NH / NKV)) * HD,
				           pos + 1, want);
				for (int d = 0; d < HD; d++) {
					double got = o.p[r * QD + h * HD + d];
					double err = fabs(got - want[d]) / (fabs(want[d]) + 1e-3);
					worst = fmax(worst, err);
				}
			}
		}
		int64_t moved = accel_moved();
		printf("# step %d: %lld bytes over the link (h2d + d2h)\n", s,
		       (long long)(moved - moved_before));
		/* After the warm-up no cache crosses whole: what moves is at
		 * most the activations both ways, and the weights the first
		 * time dmda runs their task on the accelerator (it may change
		 * its mind between steps); less than one cache. */
		int64_t step_bytes = moved - moved_before;
		if (s > 0 && (step_bytes >= (int64_t)KV_BYTES ||
		              step_bytes > (int64_t)(2 * ACT_BYTES + W_BYTES)))
			fail_msg("step %d moved %lld bytes (a cache is %zu, the activations %zu, "
			         "the weights %zu)",
			         s, (long long)step_bytes, (size_t)KV_BYTES, (size_t)ACT_BYTES,
			         (size_t)W_BYTES);
		moved_before = moved;
	}
	printf("# max relative error %.2e\n", worst);
	if (worst >= 1e-3)
		fail_msg("attention output off by %.2e (relative)", worst);

	/* The tiers: the first ON_ACCEL requests' attention on the
	 * accelerator, the others' on the cores, in every step. */
	for (int s = 0; s < STEPS; s++)
		for (int r = 0; r < NREQ; r++) {
			if (r < ON_ACCEL && attn_dev[s][r] != accel)
				fail_msg(
				        "step %d: request %d's attention ran on device %d, not the "
				        "accelerator (%d)",
				        s, r, attn_dev[s][r], accel);
			if (r >= ON_ACCEL && attn_dev[s][r] == accel)
				fail_msg("step %d: request %d's attention ran on the accelerator",
				         s, r);
		}
	int64_t evictions = accel_field("evictions"), used = accel_field("mem_used");
	if (evictions || used > (int64_t)MEM_CAP)
		fail_msg("clcpu0: %lld evictions, %lld bytes used of %zu", (long long)evictions,
		         (long long)used, (size_t)MEM_CAP);

	for (int r = 0; r < NREQ; r++)
		tdm_buffer_free(c, kv[r].h);
	free(mirror);
	tdm_disconnect(c);
	tdmt_test_ok();
}

static int teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&daemon_, 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tiers_under_cap, tdmt_test_setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
