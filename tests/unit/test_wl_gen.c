/* Unit tests for the workload generators (workload/wl_gen.c): tiled
 * factorisations (task counts, hand-checked edges, features, time) and the
 * HEFT paper's random graphs (shape, costs, CCR, determinism). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "workload/workload.h"
#include "tandem.h"

/* ---- helpers --------------------------------------------------------------- */

static void tiled_ok(enum wl_tiled_kind kind, uint32_t tiles, uint32_t nb, struct workload *w)
{
	char err[WL_ERR_MAX] = "x";
	int rc = wl_gen_tiled(kind, tiles, nb, w, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

static void random_ok(const struct wl_random_params *p, struct workload *w)
{
	char err[WL_ERR_MAX] = "x";
	int rc = wl_gen_random(p, w, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

static void assert_edge(const struct workload *w, uint32_t i, uint32_t src, uint32_t dst,
                        double data)
{
	assert_true(i < w->nedges);
	if (w->edges[i].src != src || w->edges[i].dst != dst || w->edges[i].data != data)
		print_error("edge %u: %u -> %u (%g), want %u -> %u (%g)\n", i, w->edges[i].src,
		            w->edges[i].dst, w->edges[i].data, src, dst, data);
	assert_int_equal(w->edges[i].src, src);
	assert_int_equal(w->edges[i].dst, dst);
	assert_true(w->edges[i].data == data);
}

/* Edges sorted, unique, forward (submission order), and acyclic. */
static void assert_sane(const struct workload *w)
{
	uint32_t cyc;

	for (uint32_t e = 0; e < w->nedges; e++) {
		const struct wl_edge *x = &w->edges[e];

		assert_true(x->src < x->dst && x->dst < w->ntasks);
		assert_true(isfinite(x->data) && x->data >= 0);
		if (e)
			assert_true(x[-1].src < x->src ||
			            (x[-1].src == x->src && x[-1].dst < x->dst));
	}
	assert_int_equal(wl_check_acyclic(w, &cyc), 0);
}

static char *write_text(const struct workload *w, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	assert_non_null(f);
	assert_int_equal(wl_trace_write(f, w), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- tiled ----------------------------------------------------------------- */

static uint64_t tiled_tasks(enum wl_tiled_kind kind, uint64_t t)
{
	return kind == WL_TILED_CHOLESKY ? t * (t + 1) * (t + 2) / 6
	                                 : t * (t + 1) * (2 * t + 1) / 6;
}

static void test_tiled_counts(void **state)
{
	struct workload w;

	(void)state;
	tiled_ok(WL_TILED_CHOLESKY, 20, 64, &w);
	assert_int_equal(w.ntasks, 1540);
	wl_free(&w);
	tiled_ok(WL_TILED_CHOLESKY, 50, 64, &w);
	assert_int_equal(w.ntasks, 22100);
	assert_int_equal(w.nbufs, 50 * 51 / 2);
	wl_free(&w);
	for (int k = WL_TILED_CHOLESKY; k <= WL_TILED_QR; k++)
		for (uint32_t t = 1; t <= 12; t++) {
			uint32_t nbufs = k == WL_TILED_CHOLESKY ? t * (t + 1) / 2
			                 : k == WL_TILED_LU     ? t * t
			                                        : t * t + t * (t + 1) / 2;

			tiled_ok(k, t, 8, &w);
			assert_int_equal(w.ntasks, tiled_tasks(k, t));
			assert_int_equal(w.nbufs, nbufs);
			assert_int_equal(w.units, WL_UNITS_NS);
			assert_int_equal(w.ngraphs, 0);
			assert_null(w.dev_cost);
			assert_sane(&w);
			/* every task but the first waits for something */
			for (uint32_t v = 1; v < w.ntasks; v++) {
				bool has_pred = false;

				for (uint32_t e = 0; e < w.nedges && !has_pred; e++)
					has_pred = w.edges[e].dst == v;
				assert_true(has_pred);
			}
			wl_free(&w);
		}
}

/* Cholesky on 3 x 3 tiles, by hand:
 *   0 potrf(0)  1 trsm(1,0)  2 trsm(2,0)  3 syrk(1,0)  4 syrk(2,0)
 *   5 gemm(2,1,0)  6 potrf(1)  7 trsm(2,1)  8 syrk(2,1)  9 potrf(2)
 * every edge a read (or update) of a tile the source wrote. */
static void test_tiled_cholesky_3(void **state)
{
	static const char *const names[10] = { "potrf(0)",  "trsm(1,0)",   "trsm(2,0)", "syrk(1,0)",
		                               "syrk(2,0)", "gemm(2,1,0)", "potrf(1)",  "trsm(2,1)",
		                               "syrk(2,1)", "potrf(2)" };
	static const uint16_t kernels[10] = { KERNEL_SPOTRF, KERNEL_STRSM, KERNEL_STRSM,
		                              KERNEL_SSYRK,  KERNEL_SSYRK, KERNEL_SGEMM_NT,
		                              KERNEL_SPOTRF, KERNEL_STRSM, KERNEL_SSYRK,
		                              KERNEL_SPOTRF };
	static const uint32_t edges[12][2] = { { 0, 1 }, { 0, 2 }, { 1, 3 }, { 1, 5 },
		                               { 2, 4 }, { 2, 5 }, { 3, 6 }, { 4, 8 },
		                               { 5, 7 }, { 6, 7 }, { 7, 8 }, { 8, 9 } };
	const double tile = 4.0 * 16 * 16;
	struct workload w;

	(void)state;
	tiled_ok(WL_TILED_CHOLESKY, 3, 16, &w);
	assert_string_equal(w.name, "cholesky-t3-nb16");
	assert_int_equal(w.ntasks, 10);
	for (int v = 0; v < 10; v++) {
		assert_string_equal(w.tasks[v].name, names[v]);
		assert_true(w.tasks[v].has_kernel);
		assert_int_equal(w.tasks[v].kernel, kernels[v]);
		assert_true(w.tasks[v].cost == 0);
		assert_int_equal(w.tasks[v].nargs, kernel_by_id(kernels[v])->nargs);
	}
	/* gemm(2,1,0): A[2][0] r, A[1][0] r, A[2][1] rw */
	assert_int_equal(w.tasks[5].args[0].buf, w.tasks[2].args[1].buf);
	assert_int_equal(w.tasks[5].args[1].buf, w.tasks[1].args[1].buf);
	assert_int_equal(w.tasks[5].args[2].mode, TDM_RW);
	assert_true(w.tasks[5].data_in == 3 * tile && w.tasks[5].data_out == tile);
	assert_int_equal(w.nbufs, 6);
	for (uint32_t b = 0; b < w.nbufs; b++) {
		assert_true(w.buf_bytes[b] == tile);
		assert_false(w.buf_keep[b]);
	}
	assert_int_equal(w.nedges, 12);
	for (int e = 0; e < 12; e++)
		assert_edge(&w, e, edges[e][0], edges[e][1], tile);
	wl_free(&w);
}

/* LU on 2 x 2 tiles: 0 getrf(0), 1 trsm(0,1), 2 trsm(1,0), 3 gemm(1,1,0),
 * 4 getrf(1). */
static void test_tiled_lu_2(void **state)
{
	const double tile = 4.0 * 8 * 8;
	struct workload w;

	(void)state;
	tiled_ok(WL_TILED_LU, 2, 8, &w);
	assert_int_equal(w.ntasks, 5);
	assert_string_equal(w.tasks[1].name, "trsm(0,1)");
	assert_string_equal(w.tasks[2].name, "trsm(1,0)");
	assert_string_equal(w.tasks[3].name, "gemm(1,1,0)");
	assert_int_equal(w.tasks[0].kernel, KERNEL_SGETRF);
	assert_int_equal(w.nedges, 5);
	assert_edge(&w, 0, 0, 1, tile);
	assert_edge(&w, 1, 0, 2, tile);
	assert_edge(&w, 2, 1, 3, tile);
	assert_edge(&w, 3, 2, 3, tile);
	assert_edge(&w, 4, 3, 4, tile);
	wl_free(&w);
}

/* QR on 2 x 2 tiles: 0 geqrt(0), 1 ormqr(0,1), 2 tsqrt(1,0),
 * 3 tsmqr(1,1,0), 4 geqrt(1). tsqrt overwrites A[0][0] that ormqr read: a
 * write-after-read edge with no data, and no edge from geqrt, which wrote
 * it, since ormqr already follows geqrt (the daemon's rule, graph/build.h:
 * a write after readers follows the readers only). */
static void test_tiled_qr_2(void **state)
{
	const double tile = 4.0 * 8 * 8;
	struct workload w;

	(void)state;
	tiled_ok(WL_TILED_QR, 2, 8, &w);
	assert_int_equal(w.ntasks, 5);
	assert_int_equal(w.nbufs, 7);
	assert_string_equal(w.tasks[3].name, "tsmqr(1,1,0)");
	assert_int_equal(w.tasks[0].kernel, KERNEL_SGEQRT);
	assert_int_equal(w.tasks[1].kernel, KERNEL_SORMQR);
	assert_int_equal(w.tasks[2].kernel, KERNEL_STSQRT);
	assert_int_equal(w.tasks[3].kernel, KERNEL_STSMQR);
	assert_int_equal(w.tasks[0].args[1].mode, TDM_W);
	assert_int_equal(w.nedges, 5);
	assert_edge(&w, 0, 0, 1, 2 * tile); /* A[0][0] and T[0][0] */
	assert_edge(&w, 1, 1, 2, 0); /* write after read */
	assert_edge(&w, 2, 1, 3, tile); /* A[0][1] */
	assert_edge(&w, 3, 2, 3, 2 * tile); /* A[1][0] and T[1][0] */
	assert_edge(&w, 4, 3, 4, tile); /* A[1][1] */
	wl_free(&w);
}

static void test_tiled_features(void **state)
{
	struct workload w;

	(void)state;
	for (int k = WL_TILED_CHOLESKY; k <= WL_TILED_QR; k++) {
		tiled_ok(k, 4, 100, &w);
		for (uint32_t v = 0; v < w.ntasks; v++) {
			const struct wl_task *t = &w.tasks[v];
			const struct kernel_def *def = kernel_by_id(t->kernel);
			struct tdm_kernel_call call = { .nargs = def->nargs };
			struct kernel_features f;

			call.s[0].i64 = 100;
			for (unsigned a = 0; a < def->nargs; a++)
				call.len[a] = 4 * 100 * 100;
			def->features(&call, &f);
			assert_true(f.flops > 0);
			assert_true(t->feat.flops == f.flops && t->feat.bytes == f.bytes &&
			            t->feat.domain == f.domain);
			for (unsigned a = 0; a < t->nargs; a++) {
				assert_int_equal(t->args[a].mode, def->arg_modes[a]);
				assert_true(t->args[a].buf < w.nbufs);
			}
			assert_true(strlen(t->name) > 0);
		}
		wl_free(&w);
	}
}

/* 50 tiles: 22100 tasks. The time is printed, not asserted (the machine
 * is noisy and sanitizers are slow); the bench measures speed. */
static void test_tiled_fast(void **state)
{
	struct workload w;
	double t0, ms;

	(void)state;
	t0 = now_ms();
	tiled_ok(WL_TILED_CHOLESKY, 50, 320, &w);
	ms = now_ms() - t0;
	print_message("cholesky 50 tiles: %u tasks, %u edges in %.2f ms\n", w.ntasks, w.nedges, ms);
	assert_sane(&w);
	wl_free(&w);
	t0 = now_ms();
	tiled_ok(WL_TILED_QR, 40, 320, &w);
	ms = now_ms() - t0;
	print_message("qr 40 tiles: %u tasks, %u edges in %.2f ms\n", w.ntasks, w.nedges, ms);
	wl_free(&w);
}

static void test_tiled_invalid(void **state)
{
	char err[WL_ERR_MAX];
	struct workload w;

	(void)state;
	assert_int_equal(wl_gen_tiled(WL_TILED_LU, 0, 8, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "lu: 0 tiles, not in 1..1000");
	assert_int_equal(wl_gen_tiled(WL_TILED_LU, 1001, 8, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_int_equal(wl_gen_tiled(WL_TILED_QR, 4, 0, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "qr: tile size 0, not in 1..4096");
	assert_int_equal(wl_gen_tiled(WL_TILED_QR, 4, 4097, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_int_equal(wl_gen_tiled((enum wl_tiled_kind)7, 4, 8, &w, err, sizeof(err)),
	                 -TDM_EINVAL);
	assert_string_equal(err, "tiled: unknown factorisation 7");
	assert_int_equal(wl_gen_tiled(WL_TILED_CHOLESKY, 200, 8, &w, err, sizeof(err)),
	                 -TDM_EINVAL);
	assert_string_equal(err, "cholesky: 200 tiles make 1353400 tasks, more than 1000000");
	assert_int_equal(w.ntasks, 0);
	assert_null(w.tasks);
	assert_string_equal(wl_tiled_name(WL_TILED_CHOLESKY), "cholesky");
	assert_string_equal(wl_tiled_name(WL_TILED_LU), "lu");
	assert_string_equal(wl_tiled_name(WL_TILED_QR), "qr");
	assert_string_equal(wl_tiled_name((enum wl_tiled_kind)9), "unknown");
}

/* ---- random ---------------------------------------------------------------- */

static const struct wl_random_params base = {
	.n = 1000, .ccr = 1, .alpha = 1, .out_degree = 4, .beta = 0.5, .ndev = 4, .seed = 1
};

/* Level 0 is the tasks without predecessors: they come first, and every
 * later task has one. */
static uint32_t sources(const struct workload *w)
{
	bool *pred = calloc(w->ntasks, sizeof(*pred));
	uint32_t k = 0;

	assert_non_null(pred);
	for (uint32_t e = 0; e < w->nedges; e++)
		pred[w->edges[e].dst] = true;
	while (k < w->ntasks && !pred[k])
		k++;
	for (uint32_t v = k; v < w->ntasks; v++)
		assert_true(pred[v]);
	free(pred);
	return k;
}

static void test_random_shape(void **state)
{
	struct wl_random_params p = base;
	struct workload w;
	double mean_out;
	uint32_t *depth, height = 0, s;

	(void)state;
	random_ok(&p, &w);
	assert_int_equal(w.ntasks, 1000);
	assert_int_equal(w.units, WL_UNITS_ABSTRACT);
	assert_int_equal(w.ndev_cost, 4);
	assert_non_null(w.dev_cost);
	assert_int_equal(w.nbufs, 0);
	assert_string_equal(w.tasks[7].name, "t7");
	assert_false(w.tasks[7].has_kernel);
	assert_sane(&w);
	s = sources(&w);
	assert_true(s >= 1 && s < 1000);
	/* the longest path: about sqrt(n) / alpha levels (at most 1.5x) */
	depth = calloc(w.ntasks, sizeof(*depth));
	assert_non_null(depth);
	for (uint32_t e = 0; e < w.nedges; e++) /* sorted by source, sources first */
		if (depth[w.edges[e].dst] < depth[w.edges[e].src] + 1)
			depth[w.edges[e].dst] = depth[w.edges[e].src] + 1;
	for (uint32_t v = 0; v < w.ntasks; v++)
		height = depth[v] + 1 > height ? depth[v] + 1 : height;
	free(depth);
	mean_out = (double)w.nedges / w.ntasks;
	print_message("n 1000: %u sources, height %u, %u edges (mean out-degree %.2f)\n", s, height,
	              w.nedges, mean_out);
	assert_true(height >= 2 && height <= 48);
	assert_true(mean_out > 0.5 * p.out_degree && mean_out < 1.5 * p.out_degree);
	wl_free(&w);

	/* one task; alpha so large there is one level; so small there is a
	 * chain */
	p.n = 1;
	random_ok(&p, &w);
	assert_int_equal(w.ntasks, 1);
	assert_int_equal(w.nedges, 0);
	wl_free(&w);
	p.n = 50;
	p.alpha = 1000;
	random_ok(&p, &w);
	assert_int_equal(w.nedges, 0);
	wl_free(&w);
	p.alpha = 1e-6;
	random_ok(&p, &w);
	assert_int_equal(sources(&w), 1);
	assert_sane(&w);
	wl_free(&w);
}

/* Each task's costs lie in [w_i (1 - beta/2), w_i (1 + beta/2)] for one
 * w_i in [0, 2 w_dag]; the task's cost is their mean. */
static void test_random_costs(void **state)
{
	static const double betas[] = { 0, 0.5, 1, 1.9 };
	struct wl_random_params p = base;
	struct workload w;

	(void)state;
	for (size_t i = 0; i < sizeof(betas) / sizeof(betas[0]); i++) {
		double b = betas[i], total = 0;

		p.beta = b;
		p.w_dag = 50;
		random_ok(&p, &w);
		for (uint32_t v = 0; v < w.ntasks; v++) {
			const double *row = w.dev_cost + (size_t)v * w.ndev_cost;
			double lo = row[0], hi = row[0], sum = 0;

			for (uint32_t d = 0; d < w.ndev_cost; d++) {
				lo = fmin(lo, row[d]);
				hi = fmax(hi, row[d]);
				sum += row[d];
			}
			assert_true(lo >= 0);
			assert_true(hi <= 2 * 50 * (1 + b / 2) * (1 + 1e-12));
			/* hi / lo <= (1 + b/2) / (1 - b/2) */
			assert_true(hi * (1 - b / 2) <= lo * (1 + b / 2) * (1 + 1e-12) + 1e-12);
			if (b == 0)
				assert_true(lo == hi && w.tasks[v].cost == lo);
			assert_true(fabs(w.tasks[v].cost - sum / w.ndev_cost) <= 1e-9 * hi);
			total += w.tasks[v].cost;
		}
		/* mean cost about w_dag */
		assert_true(fabs(total / w.ntasks - 50) < 5);
		wl_free(&w);
	}
	/* w_dag 0 means 100 */
	p.w_dag = 0;
	random_ok(&p, &w);
	{
		double total = 0;

		for (uint32_t v = 0; v < w.ntasks; v++)
			total += w.tasks[v].cost;
		assert_true(fabs(total / w.ntasks - 100) < 10);
	}
	wl_free(&w);
}

static void test_random_ccr(void **state)
{
	static const double ccrs[] = { 0, 0.1, 1, 5, 10 };
	struct wl_random_params p = base;
	struct workload w;

	(void)state;
	for (size_t i = 0; i < sizeof(ccrs) / sizeof(ccrs[0]); i++) {
		double comm = 0, comp = 0, ccr;

		p.ccr = ccrs[i];
		p.seed = 100 + i;
		random_ok(&p, &w);
		for (uint32_t e = 0; e < w.nedges; e++)
			comm += w.edges[e].data;
		for (uint32_t v = 0; v < w.ntasks; v++)
			comp += w.tasks[v].cost;
		ccr = (comm / w.nedges) / (comp / w.ntasks);
		print_message("ccr %g: measured %.6f\n", p.ccr, ccr);
		if (p.ccr == 0)
			assert_true(ccr == 0);
		else
			assert_true(fabs(ccr - p.ccr) <= 0.1 * p.ccr);
		wl_free(&w);
	}
}

static void test_random_deterministic(void **state)
{
	static const char pinned[] =
	        "{\"tandem_trace\":1,\"devices\":[\"d0\",\"d1\"]}\n"
	        "{\"graph\":0,\"arrival_ns\":0,\"tasks\":6}\n"
	        "{\"task\":0,\"name\":\"t0\",\"cost_ns\":[192.2187318698848,177.0864504892886]}\n"
	        "{\"task\":1,\"name\":\"t1\",\"cost_ns\":[122.20531770673298,157.0340634896666]}\n"
	        "{\"task\":2,\"name\":\"t2\",\"cost_ns\":[71.06893152992659,76.42420489163135],"
	        "\"after\":[[0,166.91980239857634],[1,117.35910397887544]]}\n"
	        "{\"task\":3,\"name\":\"t3\",\"cost_ns\":[145.02469751517168,136.1526064555632],"
	        "\"after\":[[0,169.95710505873478],[2,171.9225614224925]]}\n"
	        "{\"task\":4,\"name\":\"t4\",\"cost_ns\":[112.74729932347324,118.84615089382561],"
	        "\"after\":[[0,186.60717413907864],[1,115.12948408230183],[2,107.95332825111464]]}"
	        "\n"
	        "{\"task\":5,\"name\":\"t5\",\"cost_ns\":[91.68911198639579,79.12553261464264],"
	        "\"after\":[[0,26.100092920293736],[1,178.0662730350622],[2,65.9476533206468],[3,"
	        "39.91426075037309],[4,133.74625940865292]]}\n";
	struct wl_random_params p = base;
	struct workload a, b;
	size_t la, lb;
	char *ta, *tb;

	(void)state;
	random_ok(&p, &a);
	random_ok(&p, &b);
	ta = write_text(&a, &la);
	tb = write_text(&b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(ta, tb, la);
	free(tb);
	wl_free(&b);
	/* a different seed gives a different graph */
	p.seed = 2;
	random_ok(&p, &b);
	tb = write_text(&b, &lb);
	assert_true(la != lb || memcmp(ta, tb, la) != 0);
	free(ta);
	free(tb);
	wl_free(&a);
	wl_free(&b);
	/* pinned: the same numbers on every machine */
	p.n = 6;
	p.seed = 42;
	p.ndev = 2;
	p.alpha = 0.5;
	random_ok(&p, &a);
	ta = write_text(&a, &la);
	if (strcmp(ta, pinned))
		print_error("got:\n%s", ta);
	assert_string_equal(ta, pinned);
	free(ta);
	wl_free(&a);
}

static void test_random_invalid(void **state)
{
	struct wl_random_params p;
	char err[WL_ERR_MAX];
	struct workload w;

	(void)state;
	assert_int_equal(wl_gen_random(NULL, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.n = 0;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "random: n 0 is not in 1..1000000");
	p.n = WL_MAX_TASKS + 1;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.ccr = -1;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "random: ccr -1 is not in 0..1000");
	p.ccr = NAN;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.alpha = 0;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p.alpha = INFINITY;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.out_degree = 0;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.beta = 2.5;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "random: beta 2.5 is not in 0..2");
	p.beta = -0.1;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.ndev = 0;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p.ndev = 65;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p = base;
	p.w_dag = -1;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_int_equal(w.ntasks, 0);
	assert_null(w.tasks);
	assert_null(w.dev_cost);
	/* too many edges */
	p = base;
	p.n = 20000;
	p.out_degree = 1000;
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "random: n * out_degree = 20000000 edges expected, more than "
	                         "10000000");
	assert_int_equal(w.nedges, 0);
	assert_null(w.edges);
}

/* ---- layered random graphs ---- */

static void layered_ok(const struct wl_layered_params *p, struct workload *w)
{
	char err[WL_ERR_MAX];
	int rc = wl_gen_layered(p, w, err, sizeof(err));
	if (rc)
		fail_msg("wl_gen_layered: %s", err);
	assert_sane(w);
}

/* Levels of sizes as equal as can be, the first n % levels one larger;
 * edges only from an earlier level to a later one, about p of the pairs;
 * costs in their ranges; edge data of mean ccr x mean cost; the same
 * graph for the same seed. */
static void test_layered(void **state)
{
	struct wl_layered_params p = { .n = 300, .p = 0.1, .costs = WL_LAYERED_UNIFORM, .seed = 5 };
	struct workload w, w2;
	uint32_t level[300], levels = 17; /* round(sqrt(300)) */
	double pairs = 0;

	(void)state;
	for (uint32_t l = 0, v = 0, before = 0; l < levels; l++) {
		uint32_t size = 300 / levels + (l < 300 % levels);
		pairs += (double)before * size;
		for (uint32_t i = 0; i < size; i++)
			level[v++] = l;
		before += size;
	}
	layered_ok(&p, &w);
	assert_int_equal(w.ntasks, 300);
	assert_int_equal(w.units, WL_UNITS_ABSTRACT);
	assert_null(w.dev_cost);
	for (uint32_t e = 0; e < w.nedges; e++) {
		assert_true(level[w.edges[e].src] < level[w.edges[e].dst]);
		assert_true(w.edges[e].data == 0);
	}
	print_message("layered n 300 p 0.1: %u edges, %.0f expected\n", w.nedges, p.p * pairs);
	assert_true(w.nedges > 0.9 * p.p * pairs && w.nedges < 1.1 * p.p * pairs);
	for (uint32_t v = 0; v < w.ntasks; v++)
		assert_true(w.tasks[v].cost >= 1 && w.tasks[v].cost <= 10);
	layered_ok(&p, &w2);
	assert_int_equal(w2.nedges, w.nedges);
	assert_memory_equal(w2.edges, w.edges, w.nedges * sizeof(*w.edges));
	wl_free(&w2);
	p.seed = 6;
	layered_ok(&p, &w2);
	assert_true(w2.nedges != w.nedges ||
	            memcmp(w2.edges, w.edges, w.nedges * sizeof(*w.edges)) != 0);
	wl_free(&w2);
	wl_free(&w);

	/* bimodal: both modes, nothing between */
	p.costs = WL_LAYERED_BIMODAL;
	p.ccr = 2;
	layered_ok(&p, &w);
	uint32_t low = 0, high = 0;
	double cost = 0, data = 0;
	for (uint32_t v = 0; v < w.ntasks; v++) {
		double c = w.tasks[v].cost;
		assert_true((c >= 1 && c <= 3) || (c >= 8 && c <= 20));
		low += c <= 3;
		high += c >= 8;
		cost += c;
	}
	assert_true(low > 100 && high > 100);
	for (uint32_t e = 0; e < w.nedges; e++)
		data += w.edges[e].data;
	assert_true(fabs(data / w.nedges - 2 * cost / w.ntasks) < 1e-6 * cost);
	wl_free(&w);

	/* p = 0: no edges; p = 1: every pair */
	p = (struct wl_layered_params){ .n = 10, .p = 0, .levels = 3, .seed = 1 };
	layered_ok(&p, &w);
	assert_int_equal(w.nedges, 0);
	wl_free(&w);
	p.p = 1;
	layered_ok(&p, &w);
	assert_int_equal(w.nedges, 4 * 3 + 4 * 3 + 3 * 3); /* levels of 4, 3, 3 */
	wl_free(&w);
}

static void test_layered_invalid(void **state)
{
	struct wl_layered_params p = { .n = 100, .p = 0.1, .seed = 1 };
	char err[WL_ERR_MAX];
	struct workload w;

	(void)state;
	assert_int_equal(wl_gen_layered(NULL, &w, err, sizeof(err)), -TDM_EINVAL);
	p.n = 0;
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "layered: n 0 is not in 1..1000000");
	p.n = 100;
	p.p = 1.5;
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "layered: p 1.5 is not in 0..1");
	p.p = NAN;
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	p.p = 0.1;
	p.levels = 101;
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "layered: 101 levels for 100 tasks");
	p.levels = 0;
	p.ccr = -1;
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	/* too many edges */
	p = (struct wl_layered_params){ .n = 100000, .p = 0.5, .seed = 1 };
	assert_int_equal(wl_gen_layered(&p, &w, err, sizeof(err)), -TDM_EINVAL);
	assert_int_equal(w.nedges, 0);
	assert_null(w.edges);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tiled_counts),
		cmocka_unit_test(test_tiled_cholesky_3),
		cmocka_unit_test(test_tiled_lu_2),
		cmocka_unit_test(test_tiled_qr_2),
		cmocka_unit_test(test_tiled_features),
		cmocka_unit_test(test_tiled_fast),
		cmocka_unit_test(test_tiled_invalid),
		cmocka_unit_test(test_random_shape),
		cmocka_unit_test(test_random_costs),
		cmocka_unit_test(test_random_ccr),
		cmocka_unit_test(test_random_deterministic),
		cmocka_unit_test(test_random_invalid),
		cmocka_unit_test(test_layered),
		cmocka_unit_test(test_layered_invalid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
