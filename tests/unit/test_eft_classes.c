/* eft_select compares one candidate per class of identical devices (same
 * cost-model group, same memory node): its choice and predicted cost must be
 * those of the plain scan over every device (least fit, ties to the lowest
 * index), whatever the pending work, the transfers, the weights and the
 * skipped device. eft_select_memo, which remembers a batch's predictions
 * by kernel and features, must choose as eft_select task by task. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "placement/eft.h"
#include "placement/residency.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* The scan as eft.h states it, device by device (eft_exec: EFT_FLAT_NS
 * everywhere without a profiler). */
static int scan_select(const struct eft *x, const struct engine_task *t, double alpha, double beta,
                       int skip, double *cost)
{
	double best_fit = 0, best_exec = 0;
	int best = -1;
	for (uint32_t d = 0; d < x->ndev; d++) {
		if ((int)d == skip)
			continue;
		double tr = x->nnodes > 1 ? eft_transfer(x, t, x->node[d]) : 0;
		double pend = (double)eft_pending(x, d);
		double at = pend > tr ? pend : tr;
		double exec = eft_exec(x, t, d);
		double fit = alpha * (at + exec) + beta * tr;
		if (best < 0 || fit < best_fit) {
			best = (int)d;
			best_fit = fit;
			best_exec = exec;
		}
	}
	*cost = best_exec;
	return best;
}

static uint64_t next(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return *s >> 33;
}

static void test_classes_choose_as_scan(void **state)
{
	(void)state;
	/* CPUs and GPUs interleaved, GPUs of one model on two nodes: classes
	 * (cpu, 0), (gpu, 1), (gpu, 2), members not contiguous. */
	enum { NDEV = 11 };
	static const uint16_t node[NDEV] = { 0, 1, 0, 0, 2, 1, 0, 0, 2, 0, 1 };
	struct engine_device devs[NDEV] = { 0 };
	for (int i = 0; i < NDEV; i++) {
		devs[i].index = (uint16_t)i;
		devs[i].node = node[i];
		devs[i].dev.kind = node[i] ? TDM_DEV_GPU : TDM_DEV_CPU;
	}
	struct eft x;
	assert_int_equal(eft_init(&x, NULL, devs, NDEV, NULL), 0);
	assert_int_equal(x.ngroups, 2);
	assert_int_equal(x.ncls, 3);

	struct res_data in = { .bytes = 1 << 20 }, out = { .bytes = 1 << 20 };
	struct engine_task t = { .kernel = kernel_by_id(KERNEL_AXPY) };
	t.call.nargs = 2;
	t.call.len[0] = t.call.len[1] = 1 << 20;
	t.data[0] = &in;
	t.data[1] = &out;
	double copy = EFT_FLAT_COPY_NS + (double)(1 << 20) / EFT_FLAT_COPY_GBPS;
	/* Pending values around the transfers, so that max(pending, transfer)
	 * ties within a class and across classes. */
	const int64_t pends[] = { 0,
		                  1,
		                  999,
		                  1000,
		                  (int64_t)copy - 1,
		                  (int64_t)copy,
		                  (int64_t)copy + 1,
		                  (int64_t)(2 * copy),
		                  50000,
		                  50001 };
	const double alphas[] = { 1, 0.5, 2, 0 }, betas[] = { 0, 1, 3 };
	uint64_t seed = 7;
	unsigned differ = 0, not_first = 0;
	for (int trial = 0; trial < 20000; trial++) {
		uint32_t full = (uint32_t)next(&seed) & 7u, remote = (uint32_t)next(&seed) & 6u;
		atomic_store(&in.full, full ? full : 1u);
		atomic_store(&in.remote, remote);
		atomic_store(&out.full, (uint32_t)next(&seed) & 1u ? 1u : 2u);
		atomic_store(&out.remote, (uint32_t)next(&seed) & 6u);
		for (int d = 0; d < NDEV; d++)
			atomic_store(&x.pending[d],
			             pends[next(&seed) % (sizeof(pends) / sizeof(pends[0]))]);
		double alpha = alphas[next(&seed) % 4], beta = betas[next(&seed) % 3];
		int skip = next(&seed) % 3 ? -1 : (int)(next(&seed) % NDEV);
		double c1 = -1, c2 = -2;
		int d1 = eft_select(&x, &t, alpha, beta, skip, &c1);
		int d2 = scan_select(&x, &t, alpha, beta, skip, &c2);
		if (d1 != d2 || c1 != c2)
			differ++;
		/* the chosen device is not always its class's first member */
		if (d2 >= 0 && d2 != 0 && d2 != 1 && d2 != 4)
			not_first++;
	}
	assert_int_equal(differ, 0);
	assert_true(not_first > 1000);
	eft_fini(&x);
}

/* n devices on nodes 0..2 (node[i]: the host's CPU cores on 0, GPUs on
 * the others) and their calibration, links of 10 GB/s and 5 us. Devices
 * of a kind share a key (a cost model); per_device: a key, and the same
 * figures, for each. */
static struct calibration *three_nodes(const uint16_t *node, int n, bool per_device,
                                       struct engine_device *devs)
{
	struct calibration *cal = calloc(1, sizeof(*cal));
	assert_non_null(cal);
	cal->ndevices = (uint32_t)n;
	cal->nnodes = 3;
	for (int i = 0; i < n; i++) {
		bool gpu = node[i] && !per_device;
		devs[i].index = (uint16_t)i;
		devs[i].node = node[i];
		devs[i].dev.kind = node[i] ? TDM_DEV_GPU : TDM_DEV_CPU;
		if (per_device)
			snprintf(cal->dev[i].key, sizeof(cal->dev[i].key), "dev:%d", i);
		else
			snprintf(cal->dev[i].key, sizeof(cal->dev[i].key), "%s",
			         node[i] ? "gpu:test" : "cpu:test");
		cal->dev[i].node = node[i];
		cal->dev[i].gemm_gflops = gpu ? 5000 : 100;
		cal->dev[i].mem_gbps = gpu ? 2000 : 20;
		cal->dev[i].launch_ns = per_device ? 0 : gpu ? 5000 : 1000;
	}
	for (int a = 0; a < 3; a++)
		for (int b = 0; b < 3; b++)
			cal->link[a][b] = (struct cal_link){ .gbps = 10, .latency_ns = 5000 };
	return cal;
}

/* A batch of tasks of several kernels and sizes (more kinds than the memo
 * holds, and sizes equal but for the sign of a zero) decided with one memo:
 * each gets eft_select's device and cost, though their costs differ. */
static void test_memo_decides_as_select(void **state)
{
	(void)state;
	enum { NDEV = 11, NTASK = 9 };
	static const uint16_t node[NDEV] = { 0, 1, 0, 0, 2, 1, 0, 0, 2, 0, 1 };
	struct engine_device devs[NDEV] = { 0 };
	struct calibration *cal = three_nodes(node, NDEV, false, devs);
	struct profiler *prof = NULL;
	assert_int_equal(profiler_create(cal, &prof), 0);
	struct eft x;
	assert_int_equal(eft_init(&x, NULL, devs, NDEV, prof), 0);
	assert_int_equal(x.ngroups, 2);

	const struct kernel_features fs[] = {
		{ 2e9, 1e7, 0 }, { 4e9, 2e7, 0 }, { 4e9, 2e7, -0.0 }, { 1e6, 1e8, 0 }
	};
	const enum kernel_id ks[NTASK] = { KERNEL_SGEMM, KERNEL_SGEMM, KERNEL_AXPY,
		                           KERNEL_SGEMM, KERNEL_SGEMM, KERNEL_AXPY,
		                           KERNEL_SGEMM, KERNEL_AXPY,  KERNEL_SGEMM };
	const int fi[NTASK] = { 0, 1, 0, 2, 3, 3, 0, 1, 1 };
	/* Learned costs that differ by kernel, size and device (and by the
	 * sign of the zero: -0 is another footprint). */
	for (int k = 0; k < 2; k++)
		for (int f = 0; f < 4; f++)
			for (int rep = 0; rep < 3; rep++) {
				uint64_t ns = (uint64_t)(10000 * (k + 1) + 3000 * f + 17 * rep);
				profiler_observe(prof, k ? KERNEL_AXPY : KERNEL_SGEMM, 0, &fs[f],
				                 ns);
				profiler_observe(prof, k ? KERNEL_AXPY : KERNEL_SGEMM, 1, &fs[f],
				                 ns / 3 + 1);
			}

	struct res_data in = { .bytes = 1 << 20 }, out = { .bytes = 1 << 20 };
	struct engine_task ts[NTASK];
	for (int i = 0; i < NTASK; i++) {
		ts[i] = (struct engine_task){ .kernel = kernel_by_id(ks[i]), .feat = fs[fi[i]] };
		ts[i].call.nargs = 2;
		ts[i].call.len[0] = ts[i].call.len[1] = 1 << 20;
		ts[i].data[0] = &in;
		ts[i].data[1] = &out;
	}
	uint64_t seed = 11;
	unsigned differ = 0, costs_differ = 0;
	for (int trial = 0; trial < 2000; trial++) {
		atomic_store(&in.full, (uint32_t)next(&seed) & 1u ? 1u : 2u);
		atomic_store(&in.remote, (uint32_t)next(&seed) & 6u);
		atomic_store(&out.full, 1u);
		atomic_store(&out.remote, 0u);
		for (int d = 0; d < NDEV; d++)
			atomic_store(&x.pending[d], (int64_t)(next(&seed) % 40000));
		double alpha = 1, beta = (double)(next(&seed) % 3);
		struct eft_memo memo;
		eft_memo_init(&memo);
		double prev = -1;
		for (int i = 0; i < NTASK; i++) {
			int skip = next(&seed) % 4 ? -1 : (int)(next(&seed) % NDEV);
			double c1 = -1, c2 = -2;
			int d1 = eft_select_memo(&x, &ts[i], alpha, beta, skip, &memo, &c1);
			int d2 = eft_select(&x, &ts[i], alpha, beta, skip, &c2);
			if (d1 != d2 || c1 != c2)
				differ++;
			if (c2 != prev)
				costs_differ++;
			prev = c2;
		}
	}
	assert_int_equal(differ, 0);
	assert_true(costs_differ > 2000 * NTASK / 2);
	eft_fini(&x);
	profiler_destroy(prof);
	free(cal);
}

/* An oracle's row of costs per device: ns[dev] of the table in ctx. */
static void table_oracle(void *ctx, const uint32_t *dev, uint32_t n,
                         const struct kernel_features *f, double least, double none, double *ns)
{
	const double *table = ctx;
	(void)f;
	for (uint32_t i = 0; i < n; i++) {
		double v = table[dev[i]];
		ns[i] = !(v >= 0) ? none : v > least ? v : least;
	}
}

/* Where the profiler answers a whole row (the simulator's oracle) and every
 * device may run the task, eft_select scans the row without pruning: its
 * choice and cost must be the plain scan's, with transfers or none (no
 * argument, or every buffer planned on every node), ties of fit, costs
 * raised to 1 ns, devices that cannot run it, any weights (beta infinite
 * too). */
static void test_row_chooses_as_scan(void **state)
{
	(void)state;
	enum { NDEV = 9 };
	static const uint16_t node[NDEV] = { 0, 1, 0, 0, 2, 1, 0, 0, 2 };
	struct engine_device devs[NDEV] = { 0 };
	/* a key per device: a cost per device, as the random DAGs' */
	struct calibration *cal = three_nodes(node, NDEV, true, devs);
	struct profiler *prof = NULL;
	assert_int_equal(profiler_create(cal, &prof), 0);
	double table[NDEV];
	profiler_set_oracle(prof, KERNEL_AXPY, table_oracle, table);
	struct eft x;
	assert_int_equal(eft_init(&x, NULL, devs, NDEV, prof), 0);
	assert_int_equal(x.ngroups, NDEV);

	struct res_data in = { .bytes = 1 << 20 }, out = { .bytes = 1 << 20 };
	struct engine_task t = { .kernel = kernel_by_id(KERNEL_AXPY) };
	t.call.len[0] = t.call.len[1] = 1 << 20;
	t.data[0] = &in;
	t.data[1] = &out;
	double gexec[EFT_MAX_GROUPS];
	assert_int_equal(eft_exec_groups(&x, &t, gexec), (1u << NDEV) - 1);
	const double costs[] = { 0, 0.5, 1, 2, 1000, 1000, 5000, -1, NAN };
	const int64_t pends[] = { 0, 1, 999, 1000, 4000, 5000, 110000, 200000 };
	const double alphas[] = { 1, 0.5, 2, 0 }, betas[] = { 0, 1, 3, INFINITY };
	uint64_t seed = 5;
	unsigned differ = 0, not_first = 0, with_tr = 0;
	for (int trial = 0; trial < 20000; trial++) {
		for (int d = 0; d < NDEV; d++) {
			table[d] = costs[next(&seed) % (sizeof(costs) / sizeof(costs[0]))];
			atomic_store(&x.pending[d],
			             pends[next(&seed) % (sizeof(pends) / sizeof(pends[0]))]);
		}
		t.call.nargs = next(&seed) % 3 ? 2 : 0;
		uint32_t planned = next(&seed) % 4 ? 0 : 7u;
		atomic_store(&in.planned, planned);
		atomic_store(&out.planned, planned);
		atomic_store(&in.full, (uint32_t)next(&seed) & 1u ? 1u : 2u);
		atomic_store(&in.remote, (uint32_t)next(&seed) & 6u);
		atomic_store(&out.full, 1u);
		atomic_store(&out.remote, 0u);
		double alpha = alphas[next(&seed) % 4], beta = betas[next(&seed) % 4];
		double c1 = -1, c2 = -2;
		int d1 = eft_select(&x, &t, alpha, beta, -1, &c1);
		int d2 = scan_select(&x, &t, alpha, beta, -1, &c2);
		if (d1 != d2 || c1 != c2)
			differ++;
		if (d2 > 0)
			not_first++;
		if (t.call.nargs && eft_transfer(&x, &t, 1) > 0)
			with_tr++;
	}
	assert_int_equal(differ, 0);
	assert_true(not_first > 5000 && with_tr > 5000);
	eft_fini(&x);
	profiler_destroy(prof);
	free(cal);
}

/* eft_commit's plans, as the reads then the writes of t would leave them:
 * a whole read adds the node, a whole write makes it the only one, a
 * partial write keeps only it, a partial read plans nothing, for any
 * modes and any two arguments naming one buffer or two. */
static uint32_t planned_after(const uint8_t mode[2], const bool whole[2], bool same, int a,
                              uint32_t p0, uint32_t bit)
{
	uint32_t p[2] = { p0, p0 };
	for (int i = 0; i < 2; i++) /* reads first */
		if ((mode[i] & TDM_R) && whole[i])
			p[same ? 0 : i] |= bit;
	for (int i = 0; i < 2; i++)
		if (mode[i] & TDM_W)
			p[same ? 0 : i] = whole[i] ? bit : p[same ? 0 : i] & bit;
	return p[same ? 0 : a];
}

static void test_commit_plans(void **state)
{
	(void)state;
	struct engine_device devs[2] = { 0 };
	devs[1].index = 1;
	devs[1].node = 1;
	devs[1].dev.kind = TDM_DEV_GPU;
	struct eft x;
	assert_int_equal(eft_init(&x, NULL, devs, 2, NULL), 0);
	const uint8_t modes[3] = { TDM_R, TDM_W, TDM_RW };
	const uint32_t p0 = 0x5u, bit = 1u << 1;
	unsigned cases = 0;
	for (int m0 = 0; m0 < 3; m0++)
		for (int m1 = 0; m1 < 3; m1++)
			for (int w = 0; w < 4; w++)
				for (int same = 0; same < 2; same++) {
					struct kernel_def k = { .nargs = 2 };
					k.arg_modes[0] = modes[m0];
					k.arg_modes[1] = modes[m1];
					struct res_data b[2] = { { .bytes = 1 << 20 },
						                 { .bytes = 1 << 20 } };
					struct engine_task t = { .kernel = &k };
					bool whole[2] = { w & 1, (w >> 1) & 1 };
					t.call.nargs = 2;
					for (int i = 0; i < 2; i++) {
						t.data[i] = &b[same ? 0 : i];
						t.call.off[i] = whole[i] ? 0 : 4096;
						t.call.len[i] = whole[i] ? 1 << 20 : 4096;
						atomic_store(&b[i].planned, p0);
					}
					eft_commit(&x, &t, 1, 10);
					for (int i = 0; i < 2; i++)
						assert_int_equal(atomic_load(&t.data[i]->planned),
						                 planned_after(k.arg_modes, whole,
						                               same, i, p0, bit));
					eft_uncommit(&x, 1, 10);
					cases++;
				}
	assert_int_equal(cases, 72);
	eft_fini(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes_choose_as_scan),
		cmocka_unit_test(test_memo_decides_as_select),
		cmocka_unit_test(test_row_chooses_as_scan),
		cmocka_unit_test(test_commit_plans),
	};
	return cmocka_run_group_tests_name("eft_classes", tests, NULL, NULL);
}
