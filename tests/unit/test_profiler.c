/* Unit tests for profiler/profiler.c: the cost models and the transfer
 * model. Timings are printed, never asserted. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "profiler/profiler.h"
#include "tandem.h"

/* ---- helpers ----------------------------------------------------------------- */

/* ndev devices with key "cpu:test", 100 GFLOP/s, 20 GB/s, 1 us launch; two
 * memory nodes joined by 10 GB/s links with 5 us latency. */
static struct calibration *cal_new(uint32_t ndev)
{
	struct calibration *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->ndevices = ndev;
	c->nnodes = 2;
	for (uint32_t i = 0; i < ndev; i++) {
		snprintf(c->dev[i].key, sizeof(c->dev[i].key), "cpu:test");
		c->dev[i].gemm_gflops = 100;
		c->dev[i].mem_gbps = 20;
		c->dev[i].launch_ns = 1000;
	}
	for (int s = 0; s < 2; s++)
		for (int t = 0; t < 2; t++)
			c->link[s][t] = (struct cal_link){ .gbps = 10, .latency_ns = 5000 };
	return c;
}

static struct profiler *prof_new(const struct calibration *c)
{
	struct profiler *p = NULL;

	assert_int_equal(profiler_create(c, &p), 0);
	assert_non_null(p);
	return p;
}

/* Deterministic noise in [-1, 1]. */
static double noise(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(*s >> 11) / (double)(1ULL << 52) - 1.0;
}

static uint64_t noisy(double cost, double rel, uint64_t *s)
{
	return (uint64_t)llround(cost * (1.0 + rel * noise(s)));
}

static struct cost_pred predict(const struct profiler *p, uint32_t k, uint32_t dev,
                                struct kernel_features f)
{
	struct cost_pred cp;

	profiler_predict(p, k, dev, &f, &cp);
	return cp;
}

static double rel(double a, double b)
{
	return fabs(a - b) / b;
}

static void assert_within(double got, double want, double tol)
{
	if (!(rel(got, want) <= tol))
		print_error("got %.1f, want %.1f (+-%.0f%%)\n", got, want, 100 * tol);
	assert_true(rel(got, want) <= tol);
}

/* moe_expert's features for n tokens (dm 512, dff 1408, k 2), as the
 * kernel table computes them: proportional to n. */
static struct kernel_features moe_feat(int n)
{
	double d = (double)n * 512 * 1408;
	return (struct kernel_features){ .flops = 6 * d,
		                         .bytes = 4 * (3.0 * 512 * 1408 + 2 * n * 512),
		                         .domain = d };
}

static struct kernel_features sgemm_feat(double n)
{
	return (struct kernel_features){ .flops = 2 * n * n * n,
		                         .bytes = 4 * 3 * n * n,
		                         .domain = n * n * n };
}

static struct kernel_features spin_feat(double us)
{
	return (struct kernel_features){ .domain = us };
}

/* The model object for (kernel name, device key) in a document, or NULL. */
static json_t *find_model(json_t *doc, const char *kernel, const char *key)
{
	size_t i;
	json_t *m;

	json_array_foreach(json_object_get(doc, "models"), i, m)
	{
		if (!strcmp(json_string_value(json_object_get(m, "kernel")), kernel) &&
		    !strcmp(json_string_value(json_object_get(m, "device")), key))
			return m;
	}
	return NULL;
}

static json_int_t model_int(const struct profiler *p, const char *kernel, const char *key,
                            const char *field)
{
	json_t *doc = profiler_to_json(p), *m;
	json_int_t v;

	assert_non_null(doc);
	m = find_model(doc, kernel, key);
	assert_non_null(m);
	v = json_integer_value(json_object_get(m, field));
	json_decref(doc);
	return v;
}

/* ---- the prior ------------------------------------------------------------------- */

static void test_prior_orders_devices(void **state)
{
	struct calibration *c = cal_new(4);
	struct kernel_features big = sgemm_feat(1024);
	struct kernel_features stream = { .flops = 2e7, .bytes = 2.4e8, .domain = 1e7 };
	struct profiler *p;
	struct cost_pred a, b;

	(void)state;
	/* 0 and 1 differ in compute only, 2 and 3 in memory bandwidth only */
	for (int i = 0; i < 4; i++)
		snprintf(c->dev[i].key, sizeof(c->dev[i].key), "dev:%d", i);
	c->dev[1].gemm_gflops = 1000;
	c->dev[3].mem_gbps = 200;
	p = prof_new(c);

	a = predict(p, KERNEL_SGEMM, 0, big);
	b = predict(p, KERNEL_SGEMM, 1, big);
	assert_int_equal(a.source, COST_PRIOR);
	assert_int_equal(b.source, COST_PRIOR);
	/* compute-bound: 10x the GFLOP/s is about 10x faster */
	assert_within(a.ns / b.ns, 10.0, 0.05);
	assert_within(a.ns, 1000 + big.flops / 100, 1e-9);
	assert_true(a.spread_ns >= 0.4 * a.ns); /* a prior is wide */

	a = predict(p, KERNEL_AXPY, 2, stream);
	b = predict(p, KERNEL_AXPY, 3, stream);
	assert_true(b.ns < a.ns);
	assert_within(a.ns / b.ns, 10.0, 0.05);
	/* and the memory-bound kernel does not care about GFLOP/s */
	assert_within(predict(p, KERNEL_AXPY, 1, stream).ns, a.ns, 1e-9);

	/* spin: domain microseconds plus the launch */
	assert_within(predict(p, KERNEL_SPIN, 0, spin_feat(250)).ns, 251000, 1e-9);
	profiler_destroy(p);
	free(c);
}

static void test_prior_scale_learned(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct cost_pred cp;

	(void)state;
	/* this device runs sgemm 3x slower than calibrated, at every size */
	for (int n = 64; n <= 512; n *= 2) {
		struct kernel_features f = sgemm_feat(n);

		for (int r = 0; r < 3; r++)
			profiler_observe(p, KERNEL_SGEMM, 0, &f,
			                 (uint64_t)(3 * (1000 + f.flops / 100)));
	}
	/* a size never seen, outside the range: the scaled prior or a fit */
	cp = predict(p, KERNEL_SGEMM, 0, sgemm_feat(1500));
	assert_within(cp.ns, 3 * (1000 + sgemm_feat(1500).flops / 100), 0.10);
	profiler_destroy(p);
	free(c);
}

static void test_set_calibration_moves_prior(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct kernel_features f = sgemm_feat(512), g = sgemm_feat(256);
	struct calibration *got = calloc(1, sizeof(*got));
	double before, after;

	(void)state;
	assert_non_null(got);
	profiler_observe(p, KERNEL_SGEMM, 0, &g, 777777);
	before = predict(p, KERNEL_SGEMM, 0, f).ns;
	c->dev[0].gemm_gflops = 200;
	profiler_set_calibration(p, c);
	after = predict(p, KERNEL_SGEMM, 0, f).ns;
	/* the same learned scale over a prior that went from 100 to 200 GFLOP/s */
	assert_within(after / before, (1000 + f.flops / 200) / (1000 + f.flops / 100), 1e-9);
	/* learned data stays */
	assert_within(predict(p, KERNEL_SGEMM, 0, g).ns, 777777, 1e-9);
	profiler_calibration(p, got);
	assert_true(got->dev[0].gemm_gflops == 200);
	assert_string_equal(got->dev[0].key, "cpu:test");
	free(got);
	profiler_destroy(p);
	free(c);
}

/* ---- history ------------------------------------------------------------------------- */

static void test_spin_learned_in_three_samples(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct kernel_features f = spin_feat(500);
	const double cost = 700000; /* the prior says 501000 */
	uint64_t seed = 1;
	struct cost_pred cp;

	(void)state;
	assert_true(rel(predict(p, KERNEL_SPIN, 0, f).ns, cost) > 0.2);
	for (int i = 0; i < 3; i++)
		profiler_observe(p, KERNEL_SPIN, 0, &f, noisy(cost, 0.01, &seed));
	cp = predict(p, KERNEL_SPIN, 0, f);
	assert_int_equal(cp.source, COST_HISTORY);
	assert_within(cp.ns, cost, 0.05);
	assert_true(cp.spread_ns > 0 && cp.spread_ns < 0.05 * cost);
	profiler_destroy(p);
	free(c);
}

static void test_outliers_do_not_move_estimate(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct kernel_features f = sgemm_feat(256);
	const double cost = 2e6;
	uint64_t seed = 7;
	struct cost_pred cp;

	(void)state;
	for (int i = 1; i <= 100; i++) {
		double x = i % 10 == 0 ? 100 * cost : cost;

		profiler_observe(p, KERNEL_SGEMM, 0, &f, noisy(x, 0.01, &seed));
		if (i >= 3) {
			cp = predict(p, KERNEL_SGEMM, 0, f);
			assert_within(cp.ns, cost, 0.05);
		}
	}
	cp = predict(p, KERNEL_SGEMM, 0, f);
	assert_int_equal(cp.source, COST_HISTORY);
	assert_true(cp.spread_ns < 0.05 * cost);
	assert_int_equal(model_int(p, "sgemm", "cpu:test", "samples"), 100);
	/* Every outlier is counted while the footprint's ring fills (3 in the
	 * first 32 samples); once it is full, 1 sample in 8 is learned. */
	int64_t outliers = model_int(p, "sgemm", "cpu:test", "outliers");
	assert_true(outliers >= 3 && outliers <= 10);
	assert_true(model_int(p, "sgemm", "cpu:test", "learned") < 100);
	profiler_destroy(p);
	free(c);
}

/* A full ring learns a new level as its samples turn over (the median moves
 * to it, spread with it), and repeating one exact figure keeps it there
 * exactly (the simulator's stated costs). */
static void test_full_ring_turns_over(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct kernel_features f = sgemm_feat(256);
	struct cost_pred cp;

	(void)state;
	for (int i = 0; i < 32; i++)
		profiler_observe(p, KERNEL_SGEMM, 0, &f, i % 2 ? 200000 : 200002);
	cp = predict(p, KERNEL_SGEMM, 0, f);
	assert_int_equal(cp.source, COST_HISTORY);
	assert_true(cp.ns == 200000);
	/* 1 in 8 learned once full: 400 observations replace every sample. */
	for (int i = 0; i < 400; i++)
		profiler_observe(p, KERNEL_SGEMM, 0, &f, 300000);
	cp = predict(p, KERNEL_SGEMM, 0, f);
	assert_true(cp.ns == 300000);
	assert_true(cp.spread_ns == 0.01 * 300000);
	for (int i = 0; i < 400; i++)
		profiler_observe(p, KERNEL_SGEMM, 0, &f, 300000);
	cp = predict(p, KERNEL_SGEMM, 0, f);
	assert_true(cp.ns == 300000);
	assert_true(cp.spread_ns == 0.01 * 300000);
	profiler_destroy(p);
	free(c);
}

static void test_shared_model_for_equal_keys(void **state)
{
	struct calibration *c = cal_new(3);
	struct kernel_features f = sgemm_feat(128);
	struct profiler *p;
	json_t *doc;

	(void)state;
	snprintf(c->dev[2].key, sizeof(c->dev[2].key), "clcpu:other");
	p = prof_new(c);
	for (int i = 0; i < 3; i++)
		profiler_observe(p, KERNEL_SGEMM, 0, &f, 123456);
	assert_int_equal(predict(p, KERNEL_SGEMM, 1, f).source, COST_HISTORY);
	assert_within(predict(p, KERNEL_SGEMM, 1, f).ns, 123456, 1e-9);
	assert_int_equal(predict(p, KERNEL_SGEMM, 2, f).source, COST_PRIOR);
	/* device 1 adds to the same model */
	profiler_observe(p, KERNEL_SGEMM, 1, &f, 123456);
	doc = profiler_to_json(p);
	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 1);
	assert_int_equal(json_integer_value(
	                         json_object_get(find_model(doc, "sgemm", "cpu:test"), "samples")),
	                 4);
	json_decref(doc);
	profiler_destroy(p);
	free(c);
}

static void test_ignored_inputs(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	struct kernel_features f = sgemm_feat(64);
	struct kernel_features bad = { .flops = NAN, .bytes = -1, .domain = INFINITY };
	struct cost_pred cp;
	json_t *doc;

	(void)state;
	profiler_observe(p, KERNEL_NOOP, 0, &f, 1000);
	profiler_observe(p, KERNEL_SGEMM, 0, &f, 0);
	profiler_observe(p, KERNEL_SGEMM, 1, &f, 1000);
	profiler_observe(p, KERNEL_COUNT + 5, 0, &f, 1000);
	profiler_observe(p, KERNEL_SGEMM, 0, &bad, 1000);
	profiler_observe(p, KERNEL_SGEMM, 0, NULL, 1000);
	doc = profiler_to_json(p);
	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 0);
	json_decref(doc);

	cp = predict(p, KERNEL_SGEMM, 7, f); /* no such device */
	assert_true(cp.ns == 0 && cp.spread_ns == 0);
	cp = predict(p, KERNEL_COUNT + 5, 0, f); /* no such kernel: the prior */
	assert_within(cp.ns, 1000 + f.flops / 100, 1e-9);
	cp = predict(p, KERNEL_SGEMM, 0, bad); /* read as zeros: the launch */
	assert_true(isfinite(cp.ns) && cp.ns >= 0);
	profiler_predict(p, KERNEL_SGEMM, 0, NULL, &cp);
	assert_true(isfinite(cp.ns) && cp.ns >= 0);
	profiler_destroy(p);
	free(c);
}

/* The simulator's oracle: 100 ns per unit of domain per device index + 1,
 * at least least; devices 2 and 3 cannot run anything. */
static void row_oracle(void *ctx, const uint32_t *dev, uint32_t n, const struct kernel_features *f,
                       double least, double none, double *ns)
{
	int *calls = ctx;
	++*calls;
	for (uint32_t i = 0; i < n; i++) {
		double v = 100.0 * (dev[i] + 1) * f->domain;
		ns[i] = dev[i] == 2 || dev[i] == 3 ? none : v > least ? v : least;
	}
}

/* A whole row from the oracle in one call, each figure what
 * profiler_predict answers for that device, raised to the caller's least;
 * other kernels, and devices the profiler does not know, are not answered
 * by the row. */
static void test_oracle_row(void **state)
{
	struct calibration *c = cal_new(5);
	struct profiler *p = prof_new(c);
	struct kernel_features f = { .domain = 3 };
	const uint32_t dev[5] = { 4, 0, 3, 2, 1 };
	double ns[5], untouched[5] = { -7, -7, -7, -7, -7 };
	int calls = 0;

	(void)state;
	profiler_set_oracle(p, KERNEL_SIM_TASK, row_oracle, &calls);
	assert_true(profiler_predict_row(p, KERNEL_SIM_TASK, dev, 5, 4, &f, -INFINITY, ns));
	assert_int_equal(calls, 1);
	for (int i = 0; i < 5; i++) {
		struct cost_pred cp = predict(p, KERNEL_SIM_TASK, dev[i], f);
		assert_true(ns[i] == cp.ns);
	}
	assert_true(ns[1] == 300 && ns[0] == 1500);
	/* cannot run: the huge cost predict answers */
	assert_true(ns[2] > 1e12 && ns[3] == ns[2]);
	double huge = ns[2];
	/* the least raises what is below it only, the huge cost kept, unless
	 * the least is above it too */
	assert_true(profiler_predict_row(p, KERNEL_SIM_TASK, dev, 5, 4, &f, 600, ns));
	assert_true(ns[1] == 600 && ns[4] == 600 && ns[0] == 1500 && ns[2] == huge &&
	            ns[3] == huge);
	assert_true(profiler_predict_row(p, KERNEL_SIM_TASK, dev, 5, 4, &f, 2 * huge, ns));
	for (int i = 0; i < 5; i++)
		assert_true(ns[i] == 2 * huge);

	memcpy(ns, untouched, sizeof(ns));
	assert_false(profiler_predict_row(p, KERNEL_SGEMM, dev, 5, 4, &f, 1, ns));
	/* a bound beyond the devices known: no row, whatever the list */
	const uint32_t bad[2] = { 1, 5 };
	assert_false(profiler_predict_row(p, KERNEL_SIM_TASK, bad, 2, 5, &f, 1, ns));
	assert_false(profiler_predict_row(p, KERNEL_SIM_TASK, dev, 5, 5, &f, 1, ns));
	assert_memory_equal(ns, untouched, sizeof(ns));
	profiler_set_oracle(p, KERNEL_SIM_TASK, NULL, NULL);
	assert_false(profiler_predict_row(p, KERNEL_SIM_TASK, dev, 5, 4, &f, 1, ns));
	assert_false(profiler_predict_row(NULL, KERNEL_SIM_TASK, dev, 5, 4, &f, 1, ns));
	profiler_destroy(p);
	free(c);
}

static void count_ahead(void *ctx, const struct kernel_features *f)
{
	int *calls = ctx;
	*calls += (int)f->domain;
}

/* The hint that a row is asked for soon reaches the oracle's, with its
 * context and the task's features, for the oracle's kernel only. */
static void test_oracle_ahead(void **state)
{
	struct calibration *c = cal_new(2);
	struct profiler *p = prof_new(c);
	struct kernel_features f = { .domain = 3 };
	int calls = 0;

	(void)state;
	profiler_row_ahead(p, KERNEL_SIM_TASK, &f); /* no oracle: nothing */
	profiler_set_oracle(p, KERNEL_SIM_TASK, row_oracle, &calls);
	profiler_row_ahead(p, KERNEL_SIM_TASK, &f); /* no hint: nothing */
	profiler_set_oracle_ahead(p, count_ahead);
	profiler_row_ahead(p, KERNEL_SIM_TASK, &f);
	assert_int_equal(calls, 3);
	profiler_row_ahead(p, KERNEL_SGEMM, &f);
	profiler_row_ahead(NULL, KERNEL_SIM_TASK, &f);
	assert_int_equal(calls, 3);
	profiler_set_oracle_ahead(p, NULL);
	profiler_row_ahead(p, KERNEL_SIM_TASK, &f);
	assert_int_equal(calls, 3);
	profiler_destroy(p);
	free(c);
}

/* ---- regressions ---------------------------------------------------------------------- */

/* cost = 5000 + 2 * flops; bytes is an affine function of flops and domain
 * proportional to it, so the fit must leave them out. */
static struct kernel_features affine_feat(double s)
{
	return (struct kernel_features){ .flops = s, .bytes = 4096 + 8 * s, .domain = s / 2 };
}

static void test_unseen_sizes_interpolated(void **state)
{
	static const double train[] = { 8000, 1000, 32000, 2000, 16000, 4000 };
	static const double unseen[] = { 3000, 12000, 24000 };
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	uint64_t seed = 3;

	(void)state;
	for (int r = 0; r < 5; r++) {
		for (size_t i = 0; i < sizeof(train) / sizeof(train[0]); i++) {
			struct kernel_features f = affine_feat(train[i]);

			profiler_observe(p, KERNEL_AXPY, 0, &f,
			                 noisy(5000 + 2 * train[i], 0.01, &seed));
		}
	}
	for (size_t i = 0; i < sizeof(unseen) / sizeof(unseen[0]); i++) {
		struct cost_pred cp = predict(p, KERNEL_AXPY, 0, affine_feat(unseen[i]));

		assert_int_equal(cp.source, COST_LINEAR);
		assert_within(cp.ns, 5000 + 2 * unseen[i], 0.05);
	}
	profiler_destroy(p);
	free(c);
}

/* cost = 40 * flops^0.75: no straight line fits it over three decades. */
static void test_power_law_chosen(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	uint64_t seed = 11;

	(void)state;
	for (int r = 0; r < 3; r++) {
		for (double s = 1e4; s <= 1.1e7; s *= 4) {
			struct kernel_features f = { .flops = s, .bytes = 8 * s };

			profiler_observe(p, KERNEL_RMSNORM, 0, &f,
			                 noisy(40 * pow(s, 0.75), 0.01, &seed));
		}
	}
	for (double s = 2e4; s <= 6e6; s *= 4) {
		struct kernel_features f = { .flops = s, .bytes = 8 * s };
		struct cost_pred cp = predict(p, KERNEL_RMSNORM, 0, f);

		/* Interpolating in log-log space is exact on a power law too. */
		assert_true(cp.source == COST_POWER || cp.source == COST_INTERP);
		assert_within(cp.ns, 40 * pow(s, 0.75), 0.05);
	}
	profiler_destroy(p);
	free(c);
}

/* A cost flat while launch-bound, then quadratic (a kernel that fills the
 * device only from 8 tokens on): neither a straight line nor one power law
 * follows it; interpolation between the nearest sizes seen does, and the
 * leave-one-out errors pick it. */
static double kinked_cost(int n)
{
	return n <= 8 ? 1e4 : 1e4 * (n / 8.0) * (n / 8.0);
}

static void test_kink_interpolated(void **state)
{
	static const int train[] = { 1, 32, 8, 16, 2, 24, 4, 12, 3, 20, 6, 28, 10 };
	static const int unseen[] = { 5, 7, 14, 18, 26, 30 };
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	uint64_t seed = 5;

	(void)state;
	for (int r = 0; r < 3; r++) {
		for (size_t i = 0; i < sizeof(train) / sizeof(train[0]); i++) {
			struct kernel_features f = moe_feat(train[i]);

			profiler_observe(p, KERNEL_MOE_EXPERT, 0, &f,
			                 noisy(kinked_cost(train[i]), 0.01, &seed));
		}
	}
	for (size_t i = 0; i < sizeof(unseen) / sizeof(unseen[0]); i++) {
		struct cost_pred cp = predict(p, KERNEL_MOE_EXPERT, 0, moe_feat(unseen[i]));

		assert_int_equal(cp.source, COST_INTERP);
		assert_within(cp.ns, kinked_cost(unseen[i]), 0.1);
	}
	profiler_destroy(p);
	free(c);
}

/* More footprints than a model holds: the least recently observed go. */
static void test_footprint_table_full(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	json_t *doc;

	(void)state;
	for (int i = 1; i <= 100; i++) {
		struct kernel_features f = spin_feat(i);

		profiler_observe(p, KERNEL_SPIN, 0, &f, (uint64_t)(i * 3000 + 17));
	}
	for (int i = 37; i <= 100; i++) {
		struct cost_pred cp = predict(p, KERNEL_SPIN, 0, spin_feat(i));

		assert_int_equal(cp.source, COST_HISTORY);
		assert_true(cp.ns == i * 3000 + 17);
	}
	for (int i = 1; i <= 36; i++)
		assert_int_not_equal(predict(p, KERNEL_SPIN, 0, spin_feat(i)).source, COST_HISTORY);
	doc = profiler_to_json(p);
	assert_non_null(doc);
	assert_int_equal(
	        json_array_size(json_object_get(find_model(doc, "spin", "cpu:test"), "footprints")),
	        64);
	json_decref(doc);
	profiler_destroy(p);
	free(c);
}

/* ---- transfers ------------------------------------------------------------------------- */

static void test_transfer_model(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	double one, two;

	(void)state;
	one = profiler_predict_copy(p, 0, 1, 1000000);
	two = profiler_predict_copy(p, 0, 1, 2000000);
	assert_within(one, 5000 + 1e6 / 10, 1e-9);
	assert_within(two - 5000, 2 * (one - 5000), 1e-9);

	/* two copies in flight: a third gets a third of the link */
	profiler_copy_begin(p, 0, 1);
	profiler_copy_begin(p, 0, 1);
	assert_within(profiler_predict_copy(p, 0, 1, 1000000) - 5000, 3 * (one - 5000), 1e-9);
	assert_within(profiler_predict_copy(p, 1, 0, 1000000), one, 1e-9); /* other link */
	profiler_copy_end(p, 0, 1);
	profiler_copy_end(p, 0, 1);
	profiler_copy_end(p, 0, 1); /* one too many: stays at zero */
	assert_within(profiler_predict_copy(p, 0, 1, 1000000), one, 1e-9);

	/* copies measured at 5 GB/s, two at a time: the link does 10, as calibrated */
	for (int i = 0; i < 20; i++)
		profiler_observe_copy(p, 0, 1, 4000000, 5000 + 800000, 2);
	assert_within(profiler_predict_copy(p, 0, 1, 1000000), one, 0.01);
	/* now alone at 4 GB/s: it moves there */
	for (int i = 0; i < 40; i++)
		profiler_observe_copy(p, 0, 1, 4000000, 5000 + 1000000, 1);
	assert_within(profiler_predict_copy(p, 0, 1, 1000000), 5000 + 1e6 / 4, 0.01);

	assert_true(profiler_predict_copy(p, 0, 9, 1000) == 0); /* no such node */
	profiler_copy_begin(p, 9, 0);
	profiler_observe_copy(p, 9, 0, 1, 1, 1);
	profiler_destroy(p);
	free(c);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static void train_several(struct profiler *p)
{
	uint64_t seed = 5;

	for (int r = 0; r < 4; r++) {
		for (int n = 32; n <= 256; n *= 2) {
			struct kernel_features f = sgemm_feat(n);

			profiler_observe(p, KERNEL_SGEMM, 0, &f,
			                 noisy(2000 + f.flops / 50, 0.02, &seed));
		}
		for (int us = 10; us <= 40; us += 10) {
			struct kernel_features f = spin_feat(us);

			profiler_observe(p, KERNEL_SPIN, 1, &f, noisy(us * 1100.0, 0.02, &seed));
		}
	}
	for (int i = 0; i < 3; i++)
		profiler_observe_copy(p, 0, 1, 1 << 22, 300000, 1);
}

static void assert_same_predictions(const struct profiler *a, const struct profiler *b)
{
	const struct kernel_features fs[] = { sgemm_feat(32),   sgemm_feat(64), sgemm_feat(100),
		                              sgemm_feat(1000), spin_feat(20),  spin_feat(25),
		                              spin_feat(400) };

	for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
		for (uint32_t k = 0; k < KERNEL_COUNT; k++) {
			for (uint32_t d = 0; d < 3; d++) {
				struct cost_pred x = predict(a, k, d, fs[i]);
				struct cost_pred y = predict(b, k, d, fs[i]);

				assert_int_equal(x.source, y.source);
				/* A live model refits only when an estimate moved by
				 * REFIT_MOVE (2%); a loaded one fits what it loaded.
				 * Far extrapolations amplify that: sgemm 1000, spin
				 * 400, and one kernel asked with another's features. */
				bool far = i == 3 || i == 6 ||
				           (k == KERNEL_SPIN) != (fs[i].flops == 0);
				double tol = x.source == COST_HISTORY ? 1e-9 : far ? 0.5 : 0.03;
				if (!(rel(y.ns, x.ns) < tol || x.ns == y.ns))
					fail_msg("feature %zu kernel %u device %u source %d: %g vs "
					         "%g",
					         i, k, d, x.source, x.ns, y.ns);
				if (x.source == COST_HISTORY)
					assert_true(fabs(y.spread_ns - x.spread_ns) <= 1e-9 * x.ns);
			}
		}
	}
	assert_true(profiler_predict_copy(a, 0, 1, 1 << 20) ==
	            profiler_predict_copy(b, 0, 1, 1 << 20));
}

static void test_json_round_trip(void **state)
{
	struct calibration *c = cal_new(3);
	struct profiler *p, *q;
	json_t *doc, *again;
	char err[128] = "";
	size_t skipped = 99;

	(void)state;
	snprintf(c->dev[2].key, sizeof(c->dev[2].key), "gpu:x");
	p = prof_new(c);
	q = prof_new(c);
	train_several(p);
	doc = profiler_to_json(p);
	assert_non_null(doc);
	assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 2);
	assert_int_equal(json_array_size(json_object_get(doc, "links")), 1);

	assert_int_equal(profiler_load_json(q, doc, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 0);
	assert_same_predictions(p, q);
	again = profiler_to_json(q);
	assert_non_null(again);
	assert_int_equal(json_array_size(json_object_get(again, "models")), 2);
	assert_true(
	        json_equal(json_object_get(find_model(doc, "sgemm", "cpu:test"), "footprints"),
	                   json_object_get(find_model(again, "sgemm", "cpu:test"), "footprints")));
	/* loading the same again changes nothing */
	assert_int_equal(profiler_load_json(q, doc, &skipped, err, sizeof(err)), 0);
	assert_same_predictions(p, q);
	json_decref(again);
	json_decref(doc);
	profiler_destroy(q);
	profiler_destroy(p);
	free(c);
}

/* Models of a kernel or a device key this daemon lacks are written back. */
/* Devices joining at run time: one of a known key shares its model (what
 * was learned prices it at once); one of a new key gets models of its own,
 * with what an earlier run learned for that key and kept aside; a new node
 * brings its links. Out of order or out of range is refused. */
static void test_add_device(void **state)
{
	static const char saved[] =
	        "{\"version\":1,\"models\":["
	        "{\"kernel\":\"sgemm\",\"device\":\"gpu:new\",\"samples\":3,"
	        " \"footprints\":[{\"flops\":1,\"bytes\":2,\"domain\":3,\"n\":3,"
	        "  \"estimate_ns\":4242,\"spread_ns\":1,\"recent\":[4242,4242,4242]}]}]}";
	struct calibration *c = cal_new(2);
	struct kernel_features f = sgemm_feat(128);
	struct kernel_features g = { .flops = 1, .bytes = 2, .domain = 3 };
	struct profiler *p;
	json_t *doc = json_loads(saved, 0, NULL);
	(void)state;
	p = prof_new(c);
	assert_non_null(doc);
	assert_int_equal(profiler_load_json(p, doc, NULL, NULL, 0), 0); /* kept aside */
	for (int i = 0; i < 3; i++)
		profiler_observe(p, KERNEL_SGEMM, 0, &f, 777777);
	/* Not there yet: no prediction. */
	assert_true(predict(p, KERNEL_SGEMM, 2, f).ns == 0);

	/* Id 2, the model of devices 0 and 1: priced from what they learned. */
	c->ndevices = 3;
	c->dev[2] = c->dev[0];
	assert_int_equal(profiler_add_device(p, c, 2), 0);
	assert_int_equal(predict(p, KERNEL_SGEMM, 2, f).source, COST_HISTORY);
	assert_within(predict(p, KERNEL_SGEMM, 2, f).ns, 777777, 1e-9);

	/* Id 3 on a new node 2, a model of its own: the saved one. */
	c->ndevices = 4;
	c->nnodes = 3;
	snprintf(c->dev[3].key, sizeof(c->dev[3].key), "gpu:new");
	c->dev[3].node = 2;
	c->dev[3].gemm_gflops = 1000;
	c->dev[3].mem_gbps = 500;
	c->dev[3].launch_ns = 5000;
	c->link[0][2] = (struct cal_link){ .gbps = 25, .latency_ns = 2000, .measured = true };
	c->link[2][0] = (struct cal_link){ .gbps = 24, .latency_ns = 2100, .measured = true };
	assert_int_equal(profiler_add_device(p, c, 3), 0);
	assert_int_equal(predict(p, KERNEL_SGEMM, 3, g).source, COST_HISTORY);
	assert_within(predict(p, KERNEL_SGEMM, 3, g).ns, 4242, 1e-9);
	/* Its prior is its own figures, not the cores'. */
	assert_true(predict(p, KERNEL_SGEMM, 3, f).ns < predict(p, KERNEL_SGEMM, 0, f).ns);
	double big = 1e8;
	assert_within(profiler_predict_copy(p, 0, 2, (uint64_t)big), 2000 + big / 25, 1e-6);
	struct calibration *now = calloc(1, sizeof(*now));
	assert_non_null(now);
	profiler_calibration(p, now);
	assert_int_equal(now->ndevices, 4);
	assert_int_equal(now->nnodes, 3);
	assert_string_equal(now->dev[3].key, "gpu:new");
	free(now);
	/* The saved model is learned, no longer aside: listed once. */
	json_t *out = profiler_to_json(p);
	size_t n = 0, i;
	json_t *m;
	json_array_foreach(json_object_get(out, "models"), i, m) n +=
	        !strcmp(json_string_value(json_object_get(m, "device")), "gpu:new");
	assert_int_equal(n, 1);
	json_decref(out);

	/* Out of order, out of range. */
	c->ndevices = 6;
	c->dev[5] = c->dev[0];
	assert_int_equal(profiler_add_device(p, c, 5), -TDM_EINVAL);
	assert_int_equal(profiler_add_device(p, c, CAL_MAX_DEVICES), -TDM_EINVAL);
	assert_int_equal(profiler_add_device(NULL, c, 4), -TDM_EINVAL);
	c->dev[4] = c->dev[0];
	c->dev[4].node = 9; /* past the calibration's nodes */
	assert_int_equal(profiler_add_device(p, c, 4), -TDM_EINVAL);
	json_decref(doc);
	profiler_destroy(p);
	free(c);
}

static void test_foreign_models_kept(void **state)
{
	static const char text[] =
	        "{\"version\":1,\"models\":["
	        "{\"kernel\":\"sgemm\",\"device\":\"gpu:elsewhere\",\"samples\":3,"
	        " \"footprints\":[{\"flops\":1,\"bytes\":2,\"domain\":3,\"n\":3,"
	        "  \"estimate_ns\":100,\"spread_ns\":1,\"recent\":[100,101,99]}]},"
	        "{\"kernel\":\"plugin_op\",\"device\":\"cpu:test\",\"samples\":1,"
	        " \"footprints\":[{\"flops\":5,\"bytes\":0,\"domain\":0,\"n\":1,"
	        "  \"estimate_ns\":7,\"spread_ns\":1,\"recent\":[7]}]},"
	        "{\"kernel\":\"sgemm\",\"device\":\"gpu:elsewhere\",\"samples\":5,"
	        " \"footprints\":[{\"flops\":9,\"bytes\":0,\"domain\":0,\"n\":5,"
	        "  \"estimate_ns\":50,\"spread_ns\":1,\"recent\":[50,50,50,50,50]}]}]}";
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c), *q = prof_new(c);
	json_t *doc = json_loads(text, 0, NULL), *out, *again, *m;
	size_t skipped = 99;

	(void)state;
	assert_non_null(doc);
	assert_int_equal(profiler_load_json(p, doc, &skipped, NULL, 0), 0);
	assert_int_equal(skipped, 0);
	out = profiler_to_json(p);
	assert_non_null(out);
	assert_int_equal(json_array_size(json_object_get(out, "models")), 2);
	m = find_model(out, "sgemm", "gpu:elsewhere");
	assert_non_null(m); /* the two merged: both footprints and their samples */
	assert_int_equal(json_array_size(json_object_get(m, "footprints")), 2);
	assert_int_equal(json_integer_value(json_object_get(m, "samples")), 8);
	assert_non_null(find_model(out, "plugin_op", "cpu:test"));

	/* and they survive another round */
	assert_int_equal(profiler_load_json(q, out, &skipped, NULL, 0), 0);
	assert_int_equal(skipped, 0);
	again = profiler_to_json(q);
	assert_true(json_equal(out, again));
	json_decref(again);
	json_decref(out);
	json_decref(doc);
	profiler_destroy(q);
	profiler_destroy(p);
	free(c);
}

static void expect_rejected(struct profiler *p, const char *text)
{
	json_t *doc = json_loads(text, JSON_DECODE_ANY, NULL);
	char err[128] = "";

	assert_non_null(doc);
	assert_int_equal(profiler_load_json(p, doc, NULL, err, sizeof(err)), -TDM_EINVAL);
	assert_true(strlen(err) > 0);
	json_decref(doc);
}

static size_t load_skipping(struct profiler *p, const char *text)
{
	json_t *doc = json_loads(text, 0, NULL);
	size_t skipped = 0;

	assert_non_null(doc);
	assert_int_equal(profiler_load_json(p, doc, &skipped, NULL, 0), 0);
	json_decref(doc);
	return skipped;
}

static void test_garbage_documents(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	json_t *doc;

	(void)state;
	expect_rejected(p, "[]");
	expect_rejected(p, "42");
	expect_rejected(p, "{}");
	expect_rejected(p, "{\"version\":2,\"models\":[]}");
	expect_rejected(p, "{\"version\":\"1\",\"models\":[]}");
	expect_rejected(p, "{\"version\":1,\"models\":{}}");

	assert_int_equal(load_skipping(p, "{\"version\":1,\"models\":[]}"), 0);
	/* six bad models: not an object, no device, bad names, noop */
	assert_int_equal(load_skipping(p,
	                               "{\"version\":1,\"models\":[1,\"x\",{\"kernel\":\"sgemm\"},"
	                               "{\"kernel\":\"a b\",\"device\":\"cpu:test\"},"
	                               "{\"kernel\":\"sgemm\",\"device\":\"\"},"
	                               "{\"kernel\":\"noop\",\"device\":\"cpu:test\","
	                               "\"samples\":1}]}"),
	                 6);
	/* in a good model: five bad footprints, four bad fields, one good footprint */
	assert_int_equal(
	        load_skipping(
	                p,
	                "{\"version\":1,\"models\":[{\"kernel\":\"axpy\",\"device\":\"cpu:test\","
	                "\"samples\":-4,\"outliers\":\"x\",\"prior_scale\":-1,"
	                "\"error_pct\":{\"prior\":1e9},\"footprints\":["
	                "{\"flops\":-1,\"bytes\":0,\"domain\":0,\"n\":1,\"estimate_ns\":5,"
	                "\"recent\":[5]},"
	                "{\"flops\":1,\"bytes\":0,\"domain\":0,\"n\":1,\"estimate_ns\":1e300,"
	                "\"recent\":[]},"
	                "{\"flops\":2,\"bytes\":0,\"domain\":0,\"n\":3,\"estimate_ns\":5,"
	                "\"recent\":[1,2,\"x\"]},"
	                "{\"flops\":3,\"bytes\":0,\"domain\":0,\"n\":1,\"estimate_ns\":5,"
	                "\"recent\":[5,5]},"
	                "{\"flops\":4,\"bytes\":0,\"domain\":0,\"estimate_ns\":5,"
	                "\"recent\":[5]},"
	                "{\"flops\":5,\"bytes\":0,\"domain\":0,\"n\":2,\"estimate_ns\":5,"
	                "\"recent\":[4000,4200]}]}],"
	                "\"links\":[{\"src\":0,\"dst\":9,\"gbps\":1,\"copies\":1},"
	                "{\"src\":0,\"dst\":1,\"gbps\":-1,\"copies\":1},7]}"),
	        5 + 4 + 3);
	assert_int_equal(predict(p, KERNEL_AXPY, 0, (struct kernel_features){ .flops = 5 }).source,
	                 COST_HISTORY);
	assert_true(predict(p, KERNEL_AXPY, 0, (struct kernel_features){ .flops = 5 }).ns == 4000);
	assert_true(profiler_predict_copy(p, 0, 1, 10000) == 5000 + 1000); /* calibrated */

	/* thirty-three recent samples are too many; n below len is inconsistent */
	doc = json_loads("{\"version\":1,\"models\":[{\"kernel\":\"spin\",\"device\":\"cpu:test\","
	                 "\"samples\":40,\"footprints\":[{\"flops\":0,\"bytes\":0,\"domain\":9,"
	                 "\"n\":40,\"estimate_ns\":1,\"recent\":[]}]}]}",
	                 0, NULL);
	assert_non_null(doc);
	{
		json_t *recent = json_object_get(
		        json_array_get(
		                json_object_get(json_array_get(json_object_get(doc, "models"), 0),
		                                "footprints"),
		                0),
		        "recent");
		size_t skipped = 0;

		for (int i = 0; i < 33; i++)
			json_array_append_new(recent, json_real(1000));
		assert_int_equal(profiler_load_json(p, doc, &skipped, NULL, 0), 0);
		assert_int_equal(skipped, 1);
	}
	json_decref(doc);
	assert_int_not_equal(predict(p, KERNEL_SPIN, 0, spin_feat(9)).source, COST_HISTORY);
	profiler_destroy(p);
	free(c);
}

/* ---- threads -------------------------------------------------------------------------------- */

#define THREAD_ITERS 4000

struct worker {
	struct profiler *p;
	int id;
	int bad;
};

static double thread_cost(int id)
{
	return (100 + id) * 1000.0 + 7;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct kernel_features mine = spin_feat(100 + w->id);

	for (int i = 0; i < THREAD_ITERS; i++) {
		struct kernel_features other = spin_feat(100 + (w->id + i) % 4);
		struct kernel_features g = sgemm_feat(16 + (i % 8) * 16);
		struct cost_pred cp;

		profiler_observe(w->p, KERNEL_SPIN, (uint32_t)w->id % 2, &mine,
		                 (uint64_t)thread_cost(w->id));
		profiler_observe(w->p, KERNEL_SGEMM, (uint32_t)w->id % 2, &g,
		                 (uint64_t)(1000 + g.flops / 10));
		profiler_predict(w->p, KERNEL_SPIN, (uint32_t)(i % 2), &other, &cp);
		if (!isfinite(cp.ns) || cp.ns <= 0)
			w->bad++;
		profiler_predict(w->p, KERNEL_SGEMM, (uint32_t)(i % 2), &g, &cp);
		if (!isfinite(cp.ns) || cp.ns <= 0)
			w->bad++;
		if (i % 500 == 0) {
			json_t *doc = profiler_to_json(w->p);

			if (!doc)
				w->bad++;
			json_decref(doc);
		}
		profiler_copy_begin(w->p, 0, 1);
		profiler_predict_copy(w->p, 0, 1, 4096);
		profiler_copy_end(w->p, 0, 1);
	}
	return NULL;
}

static void test_concurrent_observe_predict(void **state)
{
	struct calibration *c = cal_new(2);
	struct profiler *p = prof_new(c);
	struct worker w[4];
	pthread_t t[4];

	(void)state;
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ p, i, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].bad, 0);
	}
	for (int i = 0; i < 4; i++) {
		struct cost_pred cp = predict(p, KERNEL_SPIN, (uint32_t)i % 2, spin_feat(100 + i));

		assert_int_equal(cp.source, COST_HISTORY);
		assert_true(cp.ns == (double)(uint64_t)thread_cost(i));
	}
	for (int i = 0; i < 8; i++) {
		struct kernel_features g = sgemm_feat(16 + i * 16);

		assert_true(predict(p, KERNEL_SGEMM, 0, g).ns ==
		            (double)(uint64_t)(1000 + g.flops / 10));
	}
	assert_int_equal(model_int(p, "spin", "cpu:test", "samples"), 4 * THREAD_ITERS);
	assert_int_equal(model_int(p, "sgemm", "cpu:test", "samples"), 4 * THREAD_ITERS);
	assert_int_equal(model_int(p, "spin", "cpu:test", "outliers"), 0);
	assert_within(profiler_predict_copy(p, 0, 1, 1000000), 5000 + 1e5, 1e-9);
	profiler_destroy(p);
	free(c);
}

/* ---- speed (printed, not asserted) ---------------------------------------------------------- */

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double time_predict(const struct profiler *p, uint32_t k, struct kernel_features f)
{
	const int iters = 1000000;
	volatile double sink = 0;
	double t0 = now_ns();

	for (int i = 0; i < iters; i++) {
		struct cost_pred cp;

		profiler_predict(p, k, 0, &f, &cp);
		sink += cp.ns;
	}
	(void)sink;
	return (now_ns() - t0) / iters;
}

static void test_predict_speed(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = prof_new(c);
	double seen, unseen, prior, observe, t0;

	(void)state;
	for (int r = 0; r < 3; r++) {
		for (int n = 32; n <= 512; n *= 2) {
			struct kernel_features f = sgemm_feat(n);

			profiler_observe(p, KERNEL_SGEMM, 0, &f, (uint64_t)(2000 + f.flops / 50));
		}
	}
	t0 = now_ns();
	for (int i = 0; i < 100000; i++) {
		struct kernel_features f = sgemm_feat(32 << (i % 5));

		profiler_observe(p, KERNEL_SGEMM, 0, &f, (uint64_t)(2000 + f.flops / 50));
	}
	observe = (now_ns() - t0) / 100000;
	seen = time_predict(p, KERNEL_SGEMM, sgemm_feat(128));
	unseen = time_predict(p, KERNEL_SGEMM, sgemm_feat(300));
	prior = time_predict(p, KERNEL_AXPY, sgemm_feat(300));
	printf("observe_ns %.0f (5 footprints)\n", observe);
	printf("predict_ns seen=%.1f unseen=%.1f prior=%.1f (%s)\n", seen, unseen, prior,
	       predict(p, KERNEL_SGEMM, 0, sgemm_feat(300)).source == COST_LINEAR ? "linear"
	                                                                          : "other");
	profiler_destroy(p);
	free(c);
}

static void test_create_rejects(void **state)
{
	struct calibration *c = cal_new(1);
	struct profiler *p = (struct profiler *)c;

	(void)state;
	assert_int_equal(profiler_create(NULL, &p), -TDM_EINVAL);
	assert_null(p);
	c->ndevices = CAL_MAX_DEVICES + 1;
	assert_int_equal(profiler_create(c, &p), -TDM_EINVAL);
	c->ndevices = 0;
	c->nnodes = 0;
	p = prof_new(c); /* no device at all is fine */
	assert_true(predict(p, KERNEL_SGEMM, 0, sgemm_feat(10)).ns == 0);
	profiler_destroy(p);
	profiler_destroy(NULL);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prior_orders_devices),
		cmocka_unit_test(test_prior_scale_learned),
		cmocka_unit_test(test_set_calibration_moves_prior),
		cmocka_unit_test(test_spin_learned_in_three_samples),
		cmocka_unit_test(test_outliers_do_not_move_estimate),
		cmocka_unit_test(test_full_ring_turns_over),
		cmocka_unit_test(test_shared_model_for_equal_keys),
		cmocka_unit_test(test_ignored_inputs),
		cmocka_unit_test(test_oracle_row),
		cmocka_unit_test(test_oracle_ahead),
		cmocka_unit_test(test_unseen_sizes_interpolated),
		cmocka_unit_test(test_power_law_chosen),
		cmocka_unit_test(test_kink_interpolated),
		cmocka_unit_test(test_footprint_table_full),
		cmocka_unit_test(test_transfer_model),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_foreign_models_kept),
		cmocka_unit_test(test_add_device),
		cmocka_unit_test(test_garbage_documents),
		cmocka_unit_test(test_concurrent_observe_predict),
		cmocka_unit_test(test_predict_speed),
		cmocka_unit_test(test_create_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
