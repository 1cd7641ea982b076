/* The cost models recover known cost laws (profiler/profiler.c), with the
 * features the kernel table computes (backends/kernels.c): a fixed
 * per-launch overhead plus terms linear in the work, attn_decode's cost
 * following its KV length, a size measured while the machine was busy, and
 * the recent error `tandemctl models` shows.
 * Generated data with deterministic noise; nothing is timed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "profiler/profiler.h"

/* ---- helpers ----------------------------------------------------------------- */

/* ndev devices of one key, 100 GFLOP/s, 20 GB/s, 1 us launch: a prior far
 * from every law below, so that only what was learned can meet them. */
static struct profiler *prof_new(uint32_t ndev)
{
	static struct calibration c;
	struct profiler *p = NULL;

	memset(&c, 0, sizeof(c));
	c.ndevices = ndev;
	c.nnodes = 1;
	for (uint32_t i = 0; i < ndev; i++) {
		snprintf(c.dev[i].key, sizeof(c.dev[i].key), "cpu:laws");
		c.dev[i].gemm_gflops = 100;
		c.dev[i].mem_gbps = 20;
		c.dev[i].launch_ns = 1000;
	}
	c.link[0][0] = (struct cal_link){ .gbps = 10, .latency_ns = 0 };
	assert_int_equal(profiler_create(&c, &p), 0);
	return p;
}

/* Deterministic noise in [-1, 1]. */
static double noise(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(*s >> 11) / (double)(1ULL << 52) - 1.0;
}

static double predict_ns(const struct profiler *p, uint32_t k, uint32_t dev,
                         const struct kernel_features *f)
{
	struct cost_pred cp;

	profiler_predict(p, k, dev, f, &cp);
	return cp.ns;
}

static void assert_near(double got, double want, double tol, const char *what, double size)
{
	if (!(fabs(got - want) <= tol * want))
		fail_msg("%s %g: predicted %.0f ns, the law says %.0f ns (tolerance %.0f%%)", what,
		         size, got, want, 100 * tol);
}

/* The features of kernel id for scalars s (what intake computes). */
static struct kernel_features features_of(enum kernel_id id, const int64_t *s, unsigned ns)
{
	struct tdm_kernel_call call;
	struct kernel_features f;

	memset(&call, 0, sizeof(call));
	for (unsigned i = 0; i < ns; i++)
		call.s[i].i64 = s[i];
	kernel_by_id(id)->features(&call, &f);
	return f;
}

static struct kernel_features rmsnorm_features(int64_t rows)
{
	const int64_t s[] = { rows, 4096 };
	return features_of(KERNEL_RMSNORM, s, 2);
}

enum { NH = 32, NKV = 8, HD = 128 };

static struct kernel_features attn_features(int64_t batch, int64_t kv_len, int64_t kv_cap)
{
	const int64_t s[] = { batch, NH, NKV, HD, kv_len, kv_cap };
	return features_of(KERNEL_ATTN_DECODE, s, 6);
}

/* Learns rounds samples of each size, sizes interleaved, each within
 * +-noise_rel of law. */
typedef double (*law_fn)(int64_t size);
typedef struct kernel_features (*feat_fn)(int64_t size);

static void train(struct profiler *p, enum kernel_id k, const int64_t *sizes, unsigned n,
                  int rounds, law_fn law, feat_fn feat, double noise_rel, uint64_t seed)
{
	for (int r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < n; i++) {
			struct kernel_features f = feat(sizes[i]);
			double t = law(sizes[i]) * (1 + noise_rel * noise(&seed));
			profiler_observe(p, k, 0, &f, (uint64_t)llround(t));
		}
	}
}

/* ---- overhead plus linear ---------------------------------------------------------- */

/* rmsnorm over rows x 4096: 20 us of launch and setup, then 0.75 ns per
 * element. At 8 rows the overhead is 45% of the time, at 256 rows 2.5%. */
static double rmsnorm_law(int64_t rows)
{
	return 20000 + 0.75 * (double)rows * 4096;
}

static void test_overhead_plus_linear(void **state)
{
	static const int64_t seen[] = { 8, 16, 32, 64, 128, 256 };
	static const int64_t unseen[] = { 12, 24, 48, 96, 192 };
	static const int64_t beyond[] = { 2, 4, 512, 1024 };
	struct profiler *p = prof_new(1);

	(void)state;
	train(p, KERNEL_RMSNORM, seen, 6, 6, rmsnorm_law, rmsnorm_features, 0.01, 1);
	for (unsigned i = 0; i < 6; i++) {
		struct kernel_features f = rmsnorm_features(seen[i]);
		assert_near(predict_ns(p, KERNEL_RMSNORM, 0, &f), rmsnorm_law(seen[i]), 0.02,
		            "seen rows", (double)seen[i]);
	}
	for (unsigned i = 0; i < 5; i++) {
		struct kernel_features f = rmsnorm_features(unseen[i]);
		assert_near(predict_ns(p, KERNEL_RMSNORM, 0, &f), rmsnorm_law(unseen[i]), 0.02,
		            "unseen rows", (double)unseen[i]);
	}
	/* Beyond the sizes seen the overhead still holds: a power law
	 * through them would miss 2 rows by a third. */
	for (unsigned i = 0; i < 4; i++) {
		struct kernel_features f = rmsnorm_features(beyond[i]);
		assert_near(predict_ns(p, KERNEL_RMSNORM, 0, &f), rmsnorm_law(beyond[i]), 0.04,
		            "rows beyond", (double)beyond[i]);
	}
	/* The fit itself: its intercept is the overhead. */
	json_t *doc = profiler_to_json(p);
	json_t *m = json_array_get(json_object_get(doc, "models"), 0);
	json_t *lin = json_object_get(m, "linear");
	assert_true(json_is_array(lin));
	double a = json_number_value(json_array_get(lin, 0));
	if (!(fabs(a - 20000) <= 0.05 * 20000))
		fail_msg("intercept %.0f ns, the overhead is 20000 ns", a);
	json_decref(doc);
	profiler_destroy(p);
}

/* A microsecond kernel: 1.5 us of overhead and a few ns of work. */
static double tiny_law(int64_t rows)
{
	return 1500 + 0.002 * (double)rows * 4096;
}

static void test_microsecond_kernel(void **state)
{
	static const int64_t seen[] = { 1, 2, 4, 8, 16, 32 };
	static const int64_t unseen[] = { 3, 6, 12, 24, 48 };
	struct profiler *p = prof_new(1);

	(void)state;
	train(p, KERNEL_RMSNORM, seen, 6, 6, tiny_law, rmsnorm_features, 0.02, 2);
	for (unsigned i = 0; i < 5; i++) {
		struct kernel_features f = rmsnorm_features(unseen[i]);
		double got = predict_ns(p, KERNEL_RMSNORM, 0, &f);
		/* Within 3%, i.e. ~50 ns: far inside the 5 us the issue asks. */
		assert_near(got, tiny_law(unseen[i]), 0.03, "unseen rows", (double)unseen[i]);
	}
	profiler_destroy(p);
}

/* ---- attn_decode's KV length -------------------------------------------------------- */

/* Per (sequence, head) 3 us (the scores and the output), per position
 * read 0.9 ns per element of K and V (hd of each): the cost of a decode
 * step grows with the KV length filled, not with the cache's capacity. */
static double attn_law(int64_t batch, int64_t kv_len)
{
	return 8000 + 3000.0 * (double)(batch * NH) +
	       0.9 * 2.0 * HD * (double)(batch * NH * kv_len);
}

static void test_kv_length(void **state)
{
	static const int64_t kv_seen[] = { 256, 512, 1024, 2048, 4096, 8192 };
	static const int64_t kv_unseen[] = { 200, 384, 768, 1536, 3072, 6144 };
	static const int64_t batches[] = { 1, 2, 4 };
	struct profiler *p = prof_new(1);
	uint64_t seed = 3;

	(void)state;
	/* The features count the kv_len positions read, whatever the
	 * capacity; and they grow in proportion to it. */
	struct kernel_features a = attn_features(1, 1024, 1024), b = attn_features(1, 1024, 8192);
	assert_true(a.flops == b.flops && a.bytes == b.bytes && a.domain == b.domain);
	struct kernel_features c = attn_features(1, 2048, 8192);
	assert_true(fabs(c.flops - 2 * a.flops) <= 1e-9 * a.flops);
	assert_true(fabs(c.domain - 2 * a.domain) <= 1e-9 * a.domain);
	assert_true(c.bytes > a.bytes && c.bytes < 2 * a.bytes); /* q and out do not grow */

	for (int r = 0; r < 5; r++) {
		for (unsigned bi = 0; bi < 3; bi++) {
			for (unsigned i = 0; i < 6; i++) {
				struct kernel_features f =
				        attn_features(batches[bi], kv_seen[i], 8192);
				double t = attn_law(batches[bi], kv_seen[i]) *
				           (1 + 0.01 * noise(&seed));
				profiler_observe(p, KERNEL_ATTN_DECODE, 0, &f,
				                 (uint64_t)llround(t));
			}
		}
	}
	/* KV lengths never seen, at each batch, and a batch never seen. */
	for (unsigned bi = 0; bi < 3; bi++) {
		for (unsigned i = 0; i < 6; i++) {
			struct kernel_features f = attn_features(batches[bi], kv_unseen[i], 8192);
			assert_near(predict_ns(p, KERNEL_ATTN_DECODE, 0, &f),
			            attn_law(batches[bi], kv_unseen[i]), 0.03, "kv_len",
			            (double)kv_unseen[i]);
		}
	}
	struct kernel_features f = attn_features(3, 3000, 4096);
	assert_near(predict_ns(p, KERNEL_ATTN_DECODE, 0, &f), attn_law(3, 3000), 0.03,
	            "batch 3 kv_len", 3000);
	profiler_destroy(p);
}

/* One decode loop: the KV length one more at every step, each length new. */
static double step_law(int64_t kv_len)
{
	return attn_law(1, kv_len);
}

static void test_decode_steps(void **state)
{
	struct profiler *p = prof_new(1);
	uint64_t seed = 4;
	double worst = 0;

	(void)state;
	for (int64_t kv = 200; kv < 400; kv++) {
		struct kernel_features f = attn_features(1, kv, 4096);
		double law = step_law(kv), t = law * (1 + 0.01 * noise(&seed));

		if (kv >= 216) /* after 16 steps */
			worst = fmax(worst,
			             fabs(predict_ns(p, KERNEL_ATTN_DECODE, 0, &f) - law) / law);
		profiler_observe(p, KERNEL_ATTN_DECODE, 0, &f, (uint64_t)llround(t));
	}
	if (!(worst <= 0.03))
		fail_msg("worst error over the steps %.1f%%", 100 * worst);
	profiler_destroy(p);
}

/* ---- noise ----------------------------------------------------------------------------- */

/* Every sample of one size came while the machine was busy (twice the
 * law's time): the sizes around it are still predicted from the others. */
static int64_t busy_rows;

static double busy_law(int64_t rows)
{
	return rmsnorm_law(rows) * (rows == busy_rows ? 2.0 : 1.0);
}

static void test_one_busy_size(void **state)
{
	static const int64_t seen[] = { 8, 16, 32, 64, 128, 256, 512 };
	static const int64_t unseen[] = { 12, 24, 48, 96, 192, 384 };
	struct profiler *p = prof_new(1);

	(void)state;
	busy_rows = 64;
	train(p, KERNEL_RMSNORM, seen, 7, 5, busy_law, rmsnorm_features, 0.01, 5);
	for (unsigned i = 0; i < 6; i++) {
		struct kernel_features f = rmsnorm_features(unseen[i]);
		assert_near(predict_ns(p, KERNEL_RMSNORM, 0, &f), rmsnorm_law(unseen[i]), 0.05,
		            "unseen rows", (double)unseen[i]);
	}
	profiler_destroy(p);
}

/* ---- the recent error ------------------------------------------------------------------ */

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

/* A 2 us kernel whose times alternate 2.0 and 2.6 us: the relative error
 * reads tens of percent, the absolute one says 0.3 us. The document's
 * medians are those of the last 32 predictions, which the test made too. */
static void test_recent_error(void **state)
{
	struct profiler *p = prof_new(1);
	struct kernel_features f = { .domain = 2 };
	double rel[32], abs_us[32];
	unsigned n = 0;

	(void)state;
	for (int i = 0; i < 32; i++) { /* all learned: the ring of samples is not full */
		uint64_t t = i % 2 ? 2600 : 2000;
		double pred = predict_ns(p, KERNEL_SPIN, 0, &f);

		rel[n] = 100 * fabs(pred - (double)t) / (double)t;
		abs_us[n++] = fabs(pred - (double)t) / 1e3;
		profiler_observe(p, KERNEL_SPIN, 0, &f, t);
	}
	qsort(rel, n, sizeof(*rel), cmp_double);
	qsort(abs_us, n, sizeof(*abs_us), cmp_double);
	json_t *doc = profiler_to_json(p);
	json_t *m = json_array_get(json_object_get(doc, "models"), 0);
	assert_non_null(m);
	double got_rel = json_number_value(json_object_get(m, "recent_median_err_pct"));
	double got_abs = json_number_value(json_object_get(m, "recent_abs_err_us"));
	double got_time = json_number_value(json_object_get(m, "recent_time_us"));
	assert_true(fabs(got_rel - rel[(n - 1) / 2]) <= 1e-6 * rel[(n - 1) / 2] + 1e-9);
	assert_true(fabs(got_abs - abs_us[(n - 1) / 2]) <= 1e-9 + 1e-6 * abs_us[(n - 1) / 2]);
	assert_true(got_abs <= 0.61);
	assert_true(got_time == 2.0 || got_time == 2.6);
	assert_true(json_is_number(json_object_get(m, "recent_err_pct"))); /* kept */
	assert_int_equal(json_array_size(json_object_get(m, "recent_predictions")), 32);

	/* It survives a save and a load. */
	struct profiler *q = prof_new(1);
	size_t skipped = 99;
	assert_int_equal(profiler_load_json(q, doc, &skipped, NULL, 0), 0);
	assert_int_equal(skipped, 0);
	json_t *again = profiler_to_json(q);
	json_t *m2 = json_array_get(json_object_get(again, "models"), 0);
	assert_true(json_equal(json_object_get(m, "recent_predictions"),
	                       json_object_get(m2, "recent_predictions")));
	assert_true(json_number_value(json_object_get(m2, "recent_abs_err_us")) == got_abs);
	json_decref(again);
	profiler_destroy(q);
	json_decref(doc);
	profiler_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overhead_plus_linear),
		cmocka_unit_test(test_microsecond_kernel),
		cmocka_unit_test(test_kv_length),
		cmocka_unit_test(test_decode_steps),
		cmocka_unit_test(test_one_busy_size),
		cmocka_unit_test(test_recent_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
