/* eft_select compares one candidate per class of identical devices (same
 * cost-model group, same memory node): its choice and predicted cost must be
 * those of the plain scan over every device (least fit, ties to the lowest
 * index), whatever the pending work, the transfers, the weights and the
 * skipped device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "placement/eft.h"
#include "placement/residency.h"
#include "tandem.h"

/* The scan as eft.h states it, without a profiler (every task costs
 * EFT_FLAT_NS everywhere). */
static int scan_select(const struct eft *x, const struct engine_task *t, double alpha, double beta,
                       int skip, double *cost)
{
	double best_fit = 0;
	int best = -1;
	for (uint32_t d = 0; d < x->ndev; d++) {
		if ((int)d == skip)
			continue;
		double tr = x->nnodes > 1 ? eft_transfer(x, t, x->node[d]) : 0;
		double pend = (double)eft_pending(x, d);
		double at = pend > tr ? pend : tr;
		double fit = alpha * (at + EFT_FLAT_NS) + beta * tr;
		if (best < 0 || fit < best_fit) {
			best = (int)d;
			best_fit = fit;
		}
	}
	*cost = EFT_FLAT_NS;
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classes_choose_as_scan),
	};
	return cmocka_run_group_tests_name("eft_classes", tests, NULL, NULL);
}
