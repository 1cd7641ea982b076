/* Graphs through a private tandemd: numeric results, implicit and explicit
 * dependencies (checked with per-task schedule info), resubmission, wait
 * timeouts, rejections with their specific errors, quotas, graphs larger
 * than the rings, and both scheduling policies. */
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

#define MS (1000000ll)

struct fixture {
	struct tdmt_daemon d;
	tdm_client *c;
	struct tdmt_kernels k;
};

static struct fixture fx;

#define OK(x) assert_int_equal((x), 0)

static int start_group(void **state, const char *toml)
{
	memset(&fx, 0, sizeof(fx));
	if (tdmt_group_start(state, &fx.d, toml) != 0)
		return -1;
	if (tdmt_connect(fx.d.sock, &fx.c) != 0 || tdmt_lookup_kernels(fx.c, &fx.k) != 0) {
		fx.d.failed = true;
		tdmt_daemon_cleanup(&fx.d);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (fx.c)
		tdm_disconnect(fx.c);
	fx.c = NULL;
	tdmt_daemon_cleanup(&fx.d);
	return 0;
}

static float *alloc_floats(size_t n, tdm_buffer *h)
{
	void *p = NULL;
	OK(tdm_buffer_alloc(fx.c, n * sizeof(float), 0, h, &p));
	assert_non_null(p);
	return p;
}

static const struct tdm_task_info *info(const tdm_graph *g, uint32_t i)
{
	const struct tdm_task_info *ti = tdm_graph_task_info(g, i);
	assert_non_null(ti);
	assert_int_equal(ti->status, 0);
	assert_true(ti->start_ns > 0);
	assert_true(ti->end_ns >= ti->start_ns);
	assert_true(ti->start_ns >= ti->queued_ns);
	return ti;
}

/* Task b started only after task a ended. */
static void assert_after(const tdm_graph *g, uint32_t a, uint32_t b)
{
	const struct tdm_task_info *ta = info(g, a), *tb = info(g, b);
	if (tb->start_ns < ta->end_ns)
		fail_msg("task %u started %lld ns before task %u ended", b,
		         (long long)(ta->end_ns - tb->start_ns), a);
}

static size_t count_mismatch(const float *got, const float *want, size_t n)
{
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += got[i] != want[i];
	return bad;
}

/* ---- numeric results ------------------------------------------------------ */

static void test_axpy_chains(void **state)
{
	(void)state;
	enum { N = 4096, LEN = 10 };
	tdm_buffer hx1, hy1, hx2, hy2;
	float *x1 = alloc_floats(N, &hx1), *y1 = alloc_floats(N, &hy1);
	float *x2 = alloc_floats(N, &hx2), *y2 = alloc_floats(N, &hy2);
	float *w1 = malloc(N * sizeof(float)), *w2 = malloc(N * sizeof(float));
	assert_non_null(w1);
	assert_non_null(w2);
	for (int i = 0; i < N; i++) {
		x1[i] = (float)(i % 7 - 3);
		y1[i] = (float)(i % 11);
		x2[i] = (float)(i % 5 + 1);
		y2[i] = (float)(-(i % 13));
	}
	/* Two independent chains, interleaved: y += alpha_k x, alpha = 1..LEN
	 * for the first, -1..-LEN for the second. Small integers: exact. */
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	for (int k = 1; k <= LEN; k++) {
		OK(tdmt_add_axpy(g, &fx.k, hx1, hy1, (float)k, NULL));
		OK(tdmt_add_axpy(g, &fx.k, hx2, hy2, (float)-k, NULL));
	}
	for (int i = 0; i < N; i++) {
		w1[i] = y1[i] + 55.0f * x1[i];
		w2[i] = y2[i] - 55.0f * x2[i];
	}
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_int_equal(count_mismatch(y1, w1, N), 0);
	assert_int_equal(count_mismatch(y2, w2, N), 0);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hx1));
	OK(tdm_buffer_free(fx.c, hy1));
	OK(tdm_buffer_free(fx.c, hx2));
	OK(tdm_buffer_free(fx.c, hy2));
	free(w1);
	free(w2);
	tdmt_test_ok();
}

static void ref_gemm(const float *a, const float *b, const float *c, double *out, int m, int n,
                     int k, double alpha, double beta)
{
	for (int i = 0; i < m; i++)
		for (int j = 0; j < n; j++) {
			double s = 0;
			for (int p = 0; p < k; p++)
				s += (double)a[i * k + p] * b[p * n + j];
			out[i * n + j] = alpha * s + beta * c[i * n + j];
		}
}

static double max_rel_err(const float *got, const double *want, size_t n)
{
	double e = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
		if (!(d <= e)) /* NaN counts as the worst */
			e = isnan(d) ? INFINITY : d;
	}
	return e;
}

static void test_sgemm_reference(void **state)
{
	(void)state;
	enum { M = 67, N = 45, K = 93, P = 31 };
	tdm_buffer ha, hb, hc, he, hd;
	float *a = alloc_floats(M * K, &ha), *b = alloc_floats(K * N, &hb);
	float *c = alloc_floats(M * N, &hc), *e = alloc_floats(N * P, &he);
	float *d = alloc_floats(M * P, &hd);
	float *c0 = malloc(M * N * sizeof(float)), *zero = calloc(M * P, sizeof(float));
	double *rc = malloc(M * N * sizeof(double)), *rd = malloc(M * P * sizeof(double));
	float *rcf = malloc(M * N * sizeof(float));
	assert_true(c0 && zero && rc && rd && rcf);
	uint64_t seed = 42;
	for (int i = 0; i < M * K; i++)
		a[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	for (int i = 0; i < K * N; i++)
		b[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	for (int i = 0; i < M * N; i++)
		c[i] = c0[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	for (int i = 0; i < N * P; i++)
		e[i] = (float)tdmt_rand_range(&seed, 0, 2000) / 1000.0f - 1.0f;
	for (int i = 0; i < M * P; i++)
		d[i] = 123.0f; /* beta = 0 must ignore it */

	/* C = 1.5 A B - 0.5 C, then D = 2 C E + 0 D: D reads C (RAW). */
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	OK(tdmt_add_sgemm(g, &fx.k, ha, hb, hc, M, N, K, 1.5f, -0.5f, NULL));
	OK(tdmt_add_sgemm(g, &fx.k, hc, he, hd, M, P, N, 2.0f, 0.0f, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_after(g, 0, 1);

	ref_gemm(a, b, c0, rc, M, N, K, 1.5, -0.5);
	double ec = max_rel_err(c, rc, M * N);
	if (ec > 1e-4)
		fail_msg("C differs from the reference: max relative error %g", ec);
	for (int i = 0; i < M * N; i++)
		rcf[i] = (float)rc[i];
	ref_gemm(rcf, e, zero, rd, M, P, N, 2.0, 0.0);
	double ed = max_rel_err(d, rd, M * P);
	if (ed > 1e-4)
		fail_msg("D differs from the reference: max relative error %g", ed);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, ha));
	OK(tdm_buffer_free(fx.c, hb));
	OK(tdm_buffer_free(fx.c, hc));
	OK(tdm_buffer_free(fx.c, he));
	OK(tdm_buffer_free(fx.c, hd));
	free(c0);
	free(zero);
	free(rc);
	free(rd);
	free(rcf);
	tdmt_test_ok();
}

static void test_fill_ranges(void **state)
{
	(void)state;
	enum { N = 1024 };
	tdm_buffer ha, hb;
	float *a = alloc_floats(N, &ha), *b = alloc_floats(N, &hb);
	for (int i = 0; i < N; i++)
		a[i] = b[i] = -1.0f;
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	/* floats 256..767 of a; all of b; the last float of a alone */
	OK(tdmt_add_fill(g, &fx.k, ha, 256 * sizeof(float), 512 * sizeof(float), 3.25f, NULL));
	OK(tdmt_add_fill(g, &fx.k, hb, 0, 0, 7.0f, NULL));
	OK(tdmt_add_fill(g, &fx.k, ha, (N - 1) * sizeof(float), sizeof(float), 9.5f, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	size_t bad = 0;
	for (int i = 0; i < N; i++) {
		float want = i == N - 1 ? 9.5f : (i >= 256 && i < 768) ? 3.25f : -1.0f;
		bad += a[i] != want;
		bad += b[i] != 7.0f;
	}
	assert_int_equal(bad, 0);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, ha));
	OK(tdm_buffer_free(fx.c, hb));
	tdmt_test_ok();
}

/* ---- implicit dependencies ------------------------------------------------ */

/* Buffers large enough that a fill or axpy takes a while, so that tasks
 * run out of order would overlap or read the wrong values. */
#define BIG (1u << 20)

static size_t count_not(const float *p, size_t n, float v)
{
	size_t bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += p[i] != v;
	return bad;
}

static void test_implicit_raw_war(void **state)
{
	(void)state;
	tdm_buffer hx, hy;
	float *x = alloc_floats(BIG, &hx), *y = alloc_floats(BIG, &hy);
	for (size_t i = 0; i < BIG; i++)
		y[i] = 2.0f;
	/* fill x=1; y += x (RAW on x); fill x=5 (WAR on x): y must see 1. */
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	OK(tdmt_add_fill(g, &fx.k, hx, 0, 0, 1.0f, NULL));
	OK(tdmt_add_axpy(g, &fx.k, hx, hy, 1.0f, NULL));
	OK(tdmt_add_fill(g, &fx.k, hx, 0, 0, 5.0f, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_int_equal(count_not(y, BIG, 3.0f), 0);
	assert_int_equal(count_not(x, BIG, 5.0f), 0);
	assert_after(g, 0, 1); /* RAW */
	assert_after(g, 1, 2); /* WAR */
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hx));
	OK(tdm_buffer_free(fx.c, hy));
	tdmt_test_ok();
}

static void test_implicit_waw_and_readers(void **state)
{
	(void)state;
	tdm_buffer hx, hy, hz;
	float *x = alloc_floats(BIG, &hx), *y = alloc_floats(BIG, &hy);
	float *z = alloc_floats(BIG, &hz);
	/* 0: fill x=1   1: fill x=2 (WAW)   2: y += x   3: z += 3x (two readers,
	 * free to overlap)   4: fill x=9 (WAR after both readers)   5: fill y=4
	 * (WAW after reader-writer 2) */
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	OK(tdmt_add_fill(g, &fx.k, hx, 0, 0, 1.0f, NULL));
	OK(tdmt_add_fill(g, &fx.k, hx, 0, 0, 2.0f, NULL));
	OK(tdmt_add_axpy(g, &fx.k, hx, hy, 1.0f, NULL));
	OK(tdmt_add_axpy(g, &fx.k, hx, hz, 3.0f, NULL));
	OK(tdmt_add_fill(g, &fx.k, hx, 0, 0, 9.0f, NULL));
	OK(tdmt_add_fill(g, &fx.k, hy, 0, 0, 4.0f, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_after(g, 0, 1); /* WAW */
	assert_after(g, 1, 2); /* RAW */
	assert_after(g, 1, 3); /* RAW */
	assert_after(g, 2, 4); /* WAR */
	assert_after(g, 3, 4); /* WAR */
	assert_after(g, 2, 5); /* WAW (y) */
	assert_int_equal(count_not(x, BIG, 9.0f), 0);
	assert_int_equal(count_not(y, BIG, 4.0f), 0);
	assert_int_equal(count_not(z, BIG, 6.0f), 0);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hx));
	OK(tdm_buffer_free(fx.c, hy));
	OK(tdm_buffer_free(fx.c, hz));
	tdmt_test_ok();
}

/* A task that reads and writes the same buffer through two arguments
 * (y += 2y) still orders after the previous writer and before the next. */
static void test_implicit_same_buffer_twice(void **state)
{
	(void)state;
	tdm_buffer hy;
	float *y = alloc_floats(BIG, &hy);
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	OK(tdmt_add_fill(g, &fx.k, hy, 0, 0, 1.0f, NULL));
	OK(tdmt_add_axpy(g, &fx.k, hy, hy, 2.0f, NULL)); /* y = 3 */
	OK(tdmt_add_axpy(g, &fx.k, hy, hy, 1.0f, NULL)); /* y = 6 */
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_after(g, 0, 1);
	assert_after(g, 1, 2);
	assert_int_equal(count_not(y, BIG, 6.0f), 0);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hy));
	tdmt_test_ok();
}

static void test_independent_tasks_overlap(void **state)
{
	(void)state;
	if (tdm_device_count(fx.c) < 2) {
		tdmt_test_ok();
		skip();
	}
	/* Two 40 ms spins with nothing between them run at once on two
	 * devices. Retried once: a loaded machine may delay one worker. */
	bool overlapped = false;
	for (int attempt = 0; attempt < 3 && !overlapped; attempt++) {
		tdm_graph *g = tdm_graph_new(fx.c);
		assert_non_null(g);
		tdm_graph_want_task_info(g, 1);
		OK(tdmt_add_spin(g, &fx.k, 40000, NULL));
		OK(tdmt_add_spin(g, &fx.k, 40000, NULL));
		OK(tdm_graph_submit(g));
		OK(tdm_wait(g, 30000 * MS));
		const struct tdm_task_info *a = info(g, 0), *b = info(g, 1);
		overlapped = a->start_ns < b->end_ns && b->start_ns < a->end_ns &&
		             a->device != b->device;
		tdm_graph_free(g);
	}
	assert_true(overlapped);
	tdmt_test_ok();
}

/* ---- explicit edges ------------------------------------------------------- */

static void test_explicit_edges(void **state)
{
	(void)state;
	enum { FAN = 20 };
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	/* 0, 1: spins; 2 after both (diamond join). */
	OK(tdmt_add_spin(g, &fx.k, 5000, NULL));
	OK(tdmt_add_spin(g, &fx.k, 3000, NULL));
	OK(tdmt_add_spin(g, &fx.k, 100, NULL));
	OK(tdm_graph_add_edge(g, 0, 2));
	OK(tdm_graph_add_edge(g, 1, 2));
	/* 3..3+FAN-1: spins; the next one waits for all FAN of them, more
	 * than fit inline in a task entry (EDGES entries follow). */
	uint32_t first = tdm_graph_task_count(g), join;
	for (int i = 0; i < FAN; i++)
		OK(tdmt_add_spin(g, &fx.k, 300, NULL));
	OK(tdmt_add_noop(g, &fx.k, &join));
	for (uint32_t i = first; i < join; i++)
		OK(tdm_graph_add_edge(g, i, join));
	/* A chain of noops by edges only. */
	uint32_t chain0 = tdm_graph_task_count(g);
	for (int i = 0; i < 16; i++) {
		uint32_t idx;
		OK(tdmt_add_noop(g, &fx.k, &idx));
		if (i)
			OK(tdm_graph_add_edge(g, idx - 1, idx));
	}
	/* Edges that do not point forward are refused. */
	assert_int_equal(tdm_graph_add_edge(g, 3, 3), -TDM_EEDGE);
	assert_int_equal(tdm_graph_add_edge(g, 5, 2), -TDM_EEDGE);
	assert_int_equal(tdm_graph_add_edge(g, 0, tdm_graph_task_count(g)), -TDM_EEDGE);

	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_after(g, 0, 2);
	assert_after(g, 1, 2);
	for (uint32_t i = first; i < join; i++)
		assert_after(g, i, join);
	for (uint32_t i = chain0 + 1; i < chain0 + 16; i++)
		assert_after(g, i - 1, i);
	tdm_graph_free(g);
	tdmt_test_ok();
}

/* ---- resubmission, timeouts ------------------------------------------------ */

static void test_resubmit(void **state)
{
	(void)state;
	enum { N = 2048 };
	tdm_buffer hx, hy;
	float *x = alloc_floats(N, &hx), *y = alloc_floats(N, &hy);
	for (int i = 0; i < N; i++) {
		x[i] = 3.0f;
		y[i] = 1.0f;
	}
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	OK(tdmt_add_axpy(g, &fx.k, hx, hy, 2.0f, NULL));
	uint64_t prev_end = 0;
	for (int round = 1; round <= 3; round++) {
		OK(tdm_graph_submit(g));
		OK(tdm_wait(g, 30000 * MS));
		/* rounds 1 and 2 add 2 * 3; round 3 adds 2 * 0 */
		assert_int_equal(count_not(y, N, round < 3 ? 1.0f + 6.0f * (float)round : 13.0f),
		                 0);
		const struct tdm_task_info *ti = info(g, 0);
		assert_true(ti->start_ns > prev_end); /* a fresh schedule each time */
		prev_end = ti->end_ns;
		/* Change the input between runs: the next run must read it. */
		if (round == 2)
			for (int i = 0; i < N; i++)
				x[i] = 0.0f;
	}
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hx));
	OK(tdm_buffer_free(fx.c, hy));
	tdmt_test_ok();
}

static void test_wait_timeout(void **state)
{
	(void)state;
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	OK(tdmt_add_spin(g, &fx.k, 300000, NULL));
	uint64_t t0 = tdmt_now_ns();
	OK(tdm_graph_submit(g));
	assert_int_equal(tdm_wait(g, 0), -TDM_ETIMEDOUT);
	assert_int_equal(tdm_wait(g, 20 * MS), -TDM_ETIMEDOUT);
	uint64_t t1 = tdmt_now_ns();
	assert_true(t1 - t0 >= 20 * MS);
	assert_true(t1 - t0 < 290 * MS);
	assert_int_equal(tdm_wait(g, 30 * MS), -TDM_ETIMEDOUT);
	OK(tdm_wait(g, -1));
	assert_true(tdmt_now_ns() - t0 >= 299 * MS);
	/* Done: waiting again answers at once. */
	OK(tdm_wait(g, 0));
	tdm_graph_free(g);
	tdmt_test_ok();
}

/* A wait's deadline holds whatever earlier waits asked for: libtandem keeps
 * one timer armed across waits, re-armed only for a sooner deadline. */
static void test_wait_timeout_after_long_wait(void **state)
{
	(void)state;
	tdm_graph *quick = tdm_graph_new(fx.c), *slow = tdm_graph_new(fx.c);
	assert_non_null(quick);
	assert_non_null(slow);
	OK(tdmt_add_spin(quick, &fx.k, 1, NULL));
	OK(tdmt_add_spin(slow, &fx.k, 300000, NULL));
	/* Done long before its 10 s: the timer stays armed for then. */
	OK(tdm_graph_submit(quick));
	OK(tdm_wait(quick, 10000 * MS));
	uint64_t t0 = tdmt_now_ns();
	OK(tdm_graph_submit(slow));
	assert_int_equal(tdm_wait(slow, 20 * MS), -TDM_ETIMEDOUT);
	uint64_t t1 = tdmt_now_ns();
	assert_true(t1 - t0 >= 20 * MS);
	assert_true(t1 - t0 < 290 * MS);
	/* A later deadline after a sooner one: the timer fires early, the wait
	 * looks again and sleeps on. */
	assert_int_equal(tdm_wait(slow, 30 * MS), -TDM_ETIMEDOUT);
	assert_true(tdmt_now_ns() - t1 >= 30 * MS);
	OK(tdm_wait(slow, 10000 * MS));
	assert_true(tdmt_now_ns() - t0 >= 299 * MS);
	tdm_graph_free(quick);
	tdm_graph_free(slow);
	tdmt_test_ok();
}

/* ---- rejections ----------------------------------------------------------- */

/* A graph that must work: y += x after a spin, submitted around bad ones. */
struct good {
	tdm_buffer hx, hy;
	float *x, *y;
	tdm_graph *g;
};

static void good_init(struct good *gd, float xv, int64_t spin_us)
{
	gd->x = alloc_floats(256, &gd->hx);
	gd->y = alloc_floats(256, &gd->hy);
	for (int i = 0; i < 256; i++) {
		gd->x[i] = xv;
		gd->y[i] = 1.0f;
	}
	gd->g = tdm_graph_new(fx.c);
	assert_non_null(gd->g);
	if (spin_us)
		OK(tdmt_add_spin(gd->g, &fx.k, spin_us, NULL));
	OK(tdmt_add_axpy(gd->g, &fx.k, gd->hx, gd->hy, 1.0f, NULL));
}

static void good_check(struct good *gd, float xv)
{
	OK(tdm_wait(gd->g, 30000 * MS));
	assert_int_equal(count_not(gd->y, 256, 1.0f + xv), 0);
	tdm_graph_free(gd->g);
	OK(tdm_buffer_free(fx.c, gd->hx));
	OK(tdm_buffer_free(fx.c, gd->hy));
}

static void assert_rejected(tdm_graph *g, int status, uint32_t task, uint32_t field)
{
	uint32_t t = 99, f = 99;
	int rc = tdm_wait(g, 30000 * MS);
	tdm_graph_reject_detail(g, &t, &f);
	if (rc != status || t != task || f != field)
		fail_msg("graph: got %d (%s) at task %u field %u (%s), want %d at task %u "
		         "field %u (%s)",
		         rc, tdm_strerror(rc), t, f, tdm_reject_field_name(f), status, task, field,
		         tdm_reject_field_name(field));
}

static void test_reject_bad_handle(void **state)
{
	(void)state;
	struct good g1, g2;
	tdm_buffer hb, hb2, hb3;
	void *p;
	int64_t rejected0, rejected1;

	OK(tdmt_counter(fx.d.sock, "graphs_rejected", &rejected0));
	/* Client side: a handle freed before the task is added. */
	OK(tdm_buffer_alloc(fx.c, 4096, 0, &hb, &p));
	OK(tdm_buffer_free(fx.c, hb));
	tdm_graph *bad = tdm_graph_new(fx.c);
	assert_non_null(bad);
	assert_int_equal(tdmt_add_fill(bad, &fx.k, hb, 0, 0, 1.0f, NULL), -TDM_EHANDLE);
	assert_int_equal(tdm_buffer_free(fx.c, hb), -TDM_EHANDLE);

	/* Daemon side: freed after the task was added, its slot taken by a new
	 * buffer (a new generation of the handle). */
	OK(tdm_buffer_alloc(fx.c, 4096, 0, &hb2, &p));
	OK(tdmt_add_noop(bad, &fx.k, NULL));
	OK(tdmt_add_fill(bad, &fx.k, hb2, 0, 0, 1.0f, NULL));
	OK(tdm_buffer_free(fx.c, hb2));
	OK(tdm_buffer_alloc(fx.c, 4096, 0, &hb3, &p));
	assert_int_not_equal(hb3, hb2);

	good_init(&g1, 2.0f, 20000);
	good_init(&g2, 5.0f, 0);
	OK(tdm_graph_submit(g1.g));
	OK(tdm_graph_submit(bad));
	OK(tdm_graph_submit(g2.g));
	assert_rejected(bad, -TDM_EHANDLE, 1, TDM_REJECT_HANDLE);
	good_check(&g1, 2.0f);
	good_check(&g2, 5.0f);
	OK(tdmt_counter(fx.d.sock, "graphs_rejected", &rejected1));
	assert_int_equal(rejected1, rejected0 + 1);
	tdm_graph_free(bad);
	OK(tdm_buffer_free(fx.c, hb3));
	tdmt_test_ok();
}

static void test_reject_range_client(void **state)
{
	(void)state;
	tdm_buffer hb;
	void *p;
	OK(tdm_buffer_alloc(fx.c, 1024, 0, &hb, &p));
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 1024, 4, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 0, 1028, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 1020, 8, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 2000, 0, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 1024, 0, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, UINT64_MAX - 2, 4, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdmt_add_fill(g, &fx.k, hb, 4, UINT64_MAX - 2, 1.0f, NULL), -TDM_ERANGE);
	assert_int_equal(tdm_graph_task_count(g), 0);
	/* The edge of the buffer is fine. */
	OK(tdmt_add_fill(g, &fx.k, hb, 1020, 4, 8.0f, NULL));
	/* Wrong modes, arity, scalar types and kernels are refused too. */
	struct tdm_task_desc t = { .kernel = fx.k.fill, .nargs = 1, .nscalars = 1 };
	t.args[0] = TDM_ARG(hb, TDM_R, 0, 0);
	t.scalars[0] = TDM_F32(1.0f);
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), -TDM_EARITY);
	t.args[0].mode = TDM_W;
	t.scalars[0] = TDM_I64(1);
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), -TDM_EARITY);
	t.scalars[0] = TDM_F32(1.0f);
	t.nscalars = 2;
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), -TDM_EARITY);
	t.nscalars = 1;
	t.kernel = 0xfffff;
	assert_int_equal(tdm_graph_add_task(g, &t, NULL), -TDM_EKERNEL);
	assert_int_equal(tdm_graph_task_count(g), 1);
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	assert_true(((float *)p)[255] == 8.0f && ((float *)p)[254] == 0.0f);
	tdm_graph_free(g);
	OK(tdm_buffer_free(fx.c, hb));
	tdmt_test_ok();
}

/* Checks only the daemon makes: kernel-specific sizes and scalar ranges. */
static void test_reject_kernel_args(void **state)
{
	(void)state;
	tdm_buffer hx, hy, hc;
	void *px, *py, *pc;
	OK(tdm_buffer_alloc(fx.c, 1024, 0, &hx, &px));
	OK(tdm_buffer_alloc(fx.c, 2048, 0, &hy, &py));
	OK(tdm_buffer_alloc(fx.c, 64 * 64 * 4, 0, &hc, &pc));
	struct good g1;
	good_init(&g1, 3.0f, 10000);
	OK(tdm_graph_submit(g1.g));

	tdm_graph *b1 = tdm_graph_new(fx.c), *b2 = tdm_graph_new(fx.c);
	tdm_graph *b3 = tdm_graph_new(fx.c), *b4 = tdm_graph_new(fx.c);
	assert_true(b1 && b2 && b3 && b4);
	/* axpy over buffers of different lengths */
	OK(tdmt_add_noop(b1, &fx.k, NULL));
	OK(tdmt_add_noop(b1, &fx.k, NULL));
	OK(tdmt_add_axpy(b1, &fx.k, hx, hy, 1.0f, NULL));
	/* fill of a length that is not a whole number of floats */
	OK(tdmt_add_fill(b2, &fx.k, hx, 0, 6, 1.0f, NULL));
	/* sgemm larger than its buffers: 64x64 C, but M = 65 */
	OK(tdmt_add_sgemm(b3, &fx.k, hc, hc, hc, 65, 64, 64, 1.0f, 0.0f, NULL));
	/* spin for a negative time */
	OK(tdmt_add_spin(b4, &fx.k, 10, NULL));
	OK(tdmt_add_spin(b4, &fx.k, -1, NULL));
	OK(tdm_graph_submit(b1));
	OK(tdm_graph_submit(b2));
	OK(tdm_graph_submit(b3));
	OK(tdm_graph_submit(b4));
	struct good g2;
	good_init(&g2, 4.0f, 0);
	OK(tdm_graph_submit(g2.g));
	assert_rejected(b1, -TDM_ERANGE, 2, TDM_REJECT_KERNEL_ARGS);
	assert_rejected(b2, -TDM_ERANGE, 0, TDM_REJECT_KERNEL_ARGS);
	assert_rejected(b3, -TDM_ERANGE, 0, TDM_REJECT_KERNEL_ARGS);
	assert_rejected(b4, -TDM_EARITY, 1, TDM_REJECT_KERNEL_ARGS);
	good_check(&g1, 3.0f);
	good_check(&g2, 4.0f);
	/* Nothing of a rejected graph ran: y and c are untouched. */
	assert_int_equal(count_not(py, 512, 0.0f), 0);
	assert_int_equal(count_not(pc, 64 * 64, 0.0f), 0);
	tdm_graph_free(b1);
	tdm_graph_free(b2);
	tdm_graph_free(b3);
	tdm_graph_free(b4);
	OK(tdm_buffer_free(fx.c, hx));
	OK(tdm_buffer_free(fx.c, hy));
	OK(tdm_buffer_free(fx.c, hc));
	tdmt_test_ok();
}

/* Many graphs in flight at once, each with its own result. */
static void test_many_graphs_in_flight(void **state)
{
	(void)state;
	enum { NG = 200, N = 64 };
	tdm_buffer h[NG];
	float *p[NG];
	tdm_graph *g[NG];
	for (int i = 0; i < NG; i++) {
		p[i] = alloc_floats(N, &h[i]);
		g[i] = tdm_graph_new(fx.c);
		assert_non_null(g[i]);
		tdm_graph_want_task_info(g[i], i % 2);
		OK(tdmt_add_fill(g[i], &fx.k, h[i], 0, 0, (float)i, NULL));
		OK(tdmt_add_axpy(g[i], &fx.k, h[i], h[i], 1.0f, NULL));
	}
	for (int i = 0; i < NG; i++)
		OK(tdm_graph_submit(g[i]));
	/* Wait in reverse order: completions of the others are kept. */
	for (int i = NG - 1; i >= 0; i--) {
		OK(tdm_wait(g[i], 30000 * MS));
		assert_int_equal(count_not(p[i], N, 2.0f * (float)i), 0);
		if (i % 2)
			assert_after(g[i], 0, 1);
	}
	for (int i = 0; i < NG; i++) {
		tdm_graph_free(g[i]);
		OK(tdm_buffer_free(fx.c, h[i]));
	}
	tdmt_test_ok();
}

/* Last in each group: with the client gone the counters return to zero,
 * and SIGTERM stops the daemon with status 0. */
static void test_clean_shutdown(void **state)
{
	(void)state;
	const char *which = NULL;
	int64_t v = 0;
	tdm_disconnect(fx.c);
	fx.c = NULL;
	if (tdmt_wait_counters_zero(fx.d.sock, tdmt_baseline_counters, 10000, &which, &v) != 0)
		fail_msg("counter %s stays at %lld", which, (long long)v);
	assert_int_equal(tdmt_daemon_stop(&fx.d, 20000), 0);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, tdmt_test_setup, tdmt_test_teardown)

static const struct CMUnitTest policy_tests[] = {
	T(test_axpy_chains),
	T(test_sgemm_reference),
	T(test_fill_ranges),
	T(test_implicit_raw_war),
	T(test_implicit_waw_and_readers),
	T(test_implicit_same_buffer_twice),
	T(test_independent_tasks_overlap),
	T(test_explicit_edges),
	T(test_resubmit),
	T(test_wait_timeout),
	T(test_wait_timeout_after_long_wait),
	T(test_reject_bad_handle),
	T(test_reject_range_client),
	T(test_reject_kernel_args),
	T(test_many_graphs_in_flight),
	T(test_clean_shutdown),
};

static int setup_eager(void **state)
{
	return start_group(state, "[engine]\npolicy = \"eager\"\n");
}

static int setup_ws(void **state)
{
	return start_group(state, "[engine]\npolicy = \"ws\"\n");
}

/* ---- quotas ------------------------------------------------------------- */

static void test_quota_buffers(void **state)
{
	(void)state;
	tdm_buffer h1, h2, h3, h4;
	void *p1, *p2, *p3, *p4;
	int64_t live;
	OK(tdm_buffer_alloc(fx.c, 40000, 0, &h1, &p1));
	for (int i = 0; i < 10000; i++)
		((float *)p1)[i] = (float)(i % 100);
	assert_int_equal(tdm_buffer_alloc(fx.c, 30000, 0, &h2, &p2), -TDM_EQUOTA);
	assert_int_equal(tdm_buffer_alloc(fx.c, 1u << 20, 0, &h2, &p2), -TDM_EQUOTA);
	OK(tdm_buffer_alloc(fx.c, 25536, 0, &h2, &p2)); /* exactly the quota */
	assert_int_equal(tdm_buffer_alloc(fx.c, 1, 0, &h3, &p3), -TDM_EQUOTA);
	OK(tdmt_counter(fx.d.sock, "buffer_bytes_live", &live));
	assert_int_equal(live, 65536);
	OK(tdmt_counter(fx.d.sock, "buffers_live", &live));
	assert_int_equal(live, 2);

	/* The buffers held are intact and usable: p1[0..4999] += p1[5000..]. */
	size_t bad = 0;
	for (int i = 0; i < 10000; i++)
		bad += ((float *)p1)[i] != (float)(i % 100);
	assert_int_equal(bad, 0);
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	struct tdm_task_desc t = { .kernel = fx.k.axpy, .nargs = 2, .nscalars = 1 };
	t.args[0] = TDM_ARG(h1, TDM_R, 20000, 20000);
	t.args[1] = TDM_ARG(h2, TDM_RW, 0, 20000);
	t.scalars[0] = TDM_F32(2.0f);
	OK(tdm_graph_add_task(g, &t, NULL));
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	for (int i = 0; i < 5000; i++)
		bad += ((float *)p2)[i] != 2.0f * (float)((i + 5000) % 100);
	assert_int_equal(bad, 0);
	tdm_graph_free(g);

	/* Freeing gives the quota back (once the graph that used it is
	 * released: test_quota_released_with_completion checks that part). */
	OK(tdm_buffer_free(fx.c, h2));
	OK(tdmt_wait_counter(fx.d.sock, "buffer_bytes_live", 40000, 10000, NULL));
	OK(tdm_buffer_alloc(fx.c, 20000, 0, &h3, &p3));
	assert_int_equal(tdm_buffer_alloc(fx.c, 6000, 0, &h4, &p4), -TDM_EQUOTA);
	OK(tdm_buffer_free(fx.c, h1));
	OK(tdm_buffer_free(fx.c, h3));
	OK(tdmt_counter(fx.d.sock, "buffer_bytes_live", &live));
	assert_int_equal(live, 0);
	tdmt_test_ok();
}

static void test_quota_tasks_per_graph(void **state)
{
	(void)state;
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	for (int i = 0; i < 64; i++)
		OK(tdmt_add_noop(g, &fx.k, NULL));
	assert_int_equal(tdmt_add_noop(g, &fx.k, NULL), -TDM_EQUOTA);
	assert_int_equal(tdm_graph_task_count(g), 64);
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 30000 * MS));
	tdm_graph_free(g);
	tdmt_test_ok();
}

static void test_quota_graphs_in_flight(void **state)
{
	(void)state;
	struct good gd;
	good_init(&gd, 3.0f, 150000);
	tdm_graph *extra = tdm_graph_new(fx.c);
	assert_non_null(extra);
	OK(tdmt_add_noop(extra, &fx.k, NULL));
	OK(tdm_graph_submit(gd.g));
	OK(tdm_graph_submit(extra));
	assert_rejected(extra, -TDM_EQUOTA, 0, TDM_REJECT_QUOTA);
	/* The running one was not disturbed. */
	good_check(&gd, 3.0f);
	/* With it done and released there is room again. */
	OK(tdmt_wait_counter(fx.d.sock, "tasks_reserved", 0, 10000, NULL));
	OK(tdm_graph_submit(extra));
	OK(tdm_wait(extra, 30000 * MS));
	tdm_graph_free(extra);
	tdmt_test_ok();
}

/* What a graph holds against the quotas is given back by the time its
 * completion reaches the client: a client that waits for a graph and then
 * at once frees its buffer and allocates the whole quota again, or submits
 * the next graph, must not be refused. */
static void test_quota_released_with_completion(void **state)
{
	(void)state;
	enum { ROUNDS = 200 };
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	OK(tdmt_add_noop(g, &fx.k, NULL));
	for (int r = 0; r < ROUNDS; r++) {
		tdm_buffer h;
		void *p;
		int rc = tdm_buffer_alloc(fx.c, 65536, 0, &h, &p);
		if (rc)
			fail_msg("round %d: allocating the whole buffer quota: %d (%s)", r, rc,
			         tdm_strerror(rc));
		tdm_graph *f = tdm_graph_new(fx.c);
		assert_non_null(f);
		OK(tdmt_add_fill(f, &fx.k, h, 0, 0, 1.0f, NULL));
		OK(tdm_graph_submit(f));
		OK(tdm_wait(f, 30000 * MS));
		tdm_graph_free(f);
		OK(tdm_buffer_free(fx.c, h));
		/* one graph in flight at most: the previous one must be gone */
		OK(tdm_graph_submit(g));
		rc = tdm_wait(g, 30000 * MS);
		if (rc)
			fail_msg(
			        "round %d: a graph right after the previous one completed: %d (%s)",
			        r, rc, tdm_strerror(rc));
	}
	tdm_graph_free(g);
	tdmt_test_ok();
}

static void test_quota_tasks_in_flight(void **state)
{
	(void)state;
	struct good big;
	good_init(&big, 7.0f, 150000); /* 2 tasks */
	for (int i = 0; i < 58; i++)
		OK(tdmt_add_noop(big.g, &fx.k, NULL)); /* 60 in all */
	tdm_graph *over = tdm_graph_new(fx.c), *fits = tdm_graph_new(fx.c);
	assert_true(over && fits);
	for (int i = 0; i < 41; i++)
		OK(tdmt_add_noop(over, &fx.k, NULL)); /* 60 + 41 > 100 */
	for (int i = 0; i < 40; i++)
		OK(tdmt_add_noop(fits, &fx.k, NULL)); /* 60 + 40 = 100 */
	OK(tdm_graph_submit(big.g));
	OK(tdm_graph_submit(over));
	OK(tdm_graph_submit(fits));
	assert_rejected(over, -TDM_EQUOTA, 0, TDM_REJECT_QUOTA);
	OK(tdm_wait(fits, 30000 * MS));
	good_check(&big, 7.0f);
	OK(tdmt_wait_counter(fx.d.sock, "tasks_reserved", 0, 10000, NULL));
	OK(tdm_graph_submit(over));
	OK(tdm_wait(over, 30000 * MS));
	tdm_graph_free(over);
	tdm_graph_free(fits);
	tdmt_test_ok();
}

static void test_quota_tasks_released_with_completion(void **state)
{
	(void)state;
	enum { ROUNDS = 200 };
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	for (int i = 0; i < 64; i++)
		OK(tdmt_add_noop(g, &fx.k, NULL));
	for (int r = 0; r < ROUNDS; r++) {
		/* 64 + 64 > max_tasks_in_flight: the previous run must be gone */
		OK(tdm_graph_submit(g));
		int rc = tdm_wait(g, 30000 * MS);
		if (rc)
			fail_msg(
			        "round %d: a graph right after the previous one completed: %d (%s)",
			        r, rc, tdm_strerror(rc));
	}
	tdm_graph_free(g);
	tdmt_test_ok();
}

static const struct CMUnitTest quota_tests[] = {
	T(test_quota_buffers),          T(test_quota_tasks_per_graph),
	T(test_quota_graphs_in_flight), T(test_quota_released_with_completion),
	T(test_clean_shutdown),
};

static const struct CMUnitTest quota_task_tests[] = {
	T(test_quota_tasks_in_flight),
	T(test_quota_tasks_released_with_completion),
	T(test_clean_shutdown),
};

static int setup_quota(void **state)
{
	/* One graph in flight at most: with two devices, one runs it and the
	 * other is free to take the next submission at once. */
	return start_group(state, "[limits]\n"
	                          "buffer_quota_bytes = 65536\n"
	                          "max_tasks_per_graph = 64\n"
	                          "max_graphs_in_flight = 1\n");
}

static int setup_quota_tasks(void **state)
{
	return start_group(state, "[limits]\n"
	                          "max_tasks_per_graph = 64\n"
	                          "max_tasks_in_flight = 100\n");
}

/* ---- graphs larger than the rings ----------------------------------------- */

static void test_large_graph_small_rings(void **state)
{
	(void)state;
	enum { N = 100000 };
	tdm_graph *g = tdm_graph_new(fx.c);
	assert_non_null(g);
	tdm_graph_want_task_info(g, 1);
	for (uint32_t i = 0; i < N; i++) {
		uint32_t idx;
		OK(tdmt_add_noop(g, &fx.k, &idx));
		assert_int_equal(idx, i);
		if (i)
			OK(tdm_graph_add_edge(g, i - 1, i));
	}
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 60000 * MS));
	uint32_t bad = 0, first_bad = 0;
	for (uint32_t i = 0; i < N; i++) {
		const struct tdm_task_info *ti = tdm_graph_task_info(g, i);
		bool ok = ti && ti->status == 0 && ti->start_ns && ti->end_ns >= ti->start_ns;
		if (ok && i)
			ok = ti->start_ns >= tdm_graph_task_info(g, i - 1)->end_ns;
		if (!ok && !bad++)
			first_bad = i;
	}
	if (bad)
		fail_msg("%u task infos missing or out of order, the first at task %u", bad,
		         first_bad);
	/* And once more: the rings are reusable after wrapping many times. */
	OK(tdm_graph_submit(g));
	OK(tdm_wait(g, 60000 * MS));
	assert_true(tdm_graph_task_info(g, N - 1)->end_ns > 0);
	tdm_graph_free(g);
	tdmt_test_ok();
}

static const struct CMUnitTest ring_tests[] = {
	T(test_large_graph_small_rings),
	T(test_many_graphs_in_flight),
	T(test_axpy_chains),
	T(test_clean_shutdown),
};

static int setup_rings(void **state)
{
	return start_group(state, "[rings]\nsq_entries = 64\ncq_entries = 64\n");
}

int main(void)
{
	int failed = 0;
	failed += cmocka_run_group_tests_name("graphs_eager", policy_tests, setup_eager,
	                                      group_teardown);
	failed += cmocka_run_group_tests_name("graphs_ws", policy_tests, setup_ws, group_teardown);
	failed += cmocka_run_group_tests_name("graphs_quota", quota_tests, setup_quota,
	                                      group_teardown);
	failed += cmocka_run_group_tests_name("graphs_quota_tasks", quota_task_tests,
	                                      setup_quota_tasks, group_teardown);
	failed += cmocka_run_group_tests_name("graphs_small_rings", ring_tests, setup_rings,
	                                      group_teardown);
	return failed ? 1 : 0;
}
