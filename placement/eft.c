/* Earliest finish time (eft.h). */
#include "placement/eft.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "placement/residency.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* Devices of one group share a cost model: the same calibration key (the
 * profiler's unit of sharing), else the same kind and model name. */
static bool same_group(const struct calibration *cal, const struct engine_device *devs, size_t a,
                       size_t b)
{
	if (cal && a < cal->ndevices && b < cal->ndevices)
		return strcmp(cal->dev[a].key, cal->dev[b].key) == 0;
	return devs[a].dev.kind == devs[b].dev.kind &&
	       strcmp(devs[a].dev.model, devs[b].dev.model) == 0;
}

/* Device d's node and group. Caller: the only writer (init, or one
 * device change at a time). */
static void place_device(struct eft *x, const struct calibration *cal,
                         const struct engine_device *devs, uint32_t d)
{
	x->node[d] = devs[d].node;
	if (devs[d].node + 1u > x->nnodes)
		atomic_store(&x->nnodes, (uint16_t)(devs[d].node + 1u));
	atomic_init(&x->pending[d], 0);
	uint32_t g = 0, ng = atomic_load(&x->ngroups);
	while (g < ng && !same_group(cal, devs, x->rep[g], d))
		g++;
	x->group[d] = g;
	if (g == ng) {
		x->rep[ng] = d;
		if (ng < EFT_MAX_GROUPS &&
		    d > atomic_load_explicit(&x->rep_max, memory_order_relaxed))
			atomic_store_explicit(&x->rep_max, d, memory_order_relaxed);
		atomic_store(&x->ngroups, ng + 1);
	}
}

/* Classes by (group, node), numbered in the order of their first device. */
static int build_classes(struct eft *x)
{
	size_t n = x->ndev;
	x->cls = malloc((n ? n : 1) * sizeof(*x->cls));
	x->cls_off = calloc(n + 1, sizeof(*x->cls_off));
	x->cls_dev = malloc((n ? n : 1) * sizeof(*x->cls_dev));
	if (!x->cls || !x->cls_off || !x->cls_dev) {
		eft_fini(x);
		return -TDM_ENOMEM;
	}
	uint32_t nc = 0;
	for (size_t d = 0; d < n; d++) {
		uint32_t c = 0;
		while (c < nc && !(x->group[x->cls_dev[c]] == x->group[d] &&
		                   x->node[x->cls_dev[c]] == x->node[d]))
			c++;
		if (c == nc)
			x->cls_dev[nc++] = (uint32_t)d; /* representatives, for now */
		x->cls[d] = c;
	}
	for (size_t d = 0; d < n; d++)
		x->cls_off[x->cls[d] + 1]++;
	for (uint32_t c = 0; c < nc; c++)
		x->cls_off[c + 1] += x->cls_off[c];
	uint32_t *at = malloc((nc ? nc : 1) * sizeof(*at));
	if (!at) {
		eft_fini(x);
		return -TDM_ENOMEM;
	}
	memcpy(at, x->cls_off, nc * sizeof(*at));
	for (size_t d = 0; d < n; d++)
		x->cls_dev[at[x->cls[d]]++] = (uint32_t)d;
	free(at);
	x->ncls = nc;
	x->cls_ndev = n;
	return 0;
}

int eft_init_cap(struct eft *x, const struct engine_core *core, const struct engine_device *devs,
                 size_t ndev, size_t cap, struct profiler *prof)
{
	struct calibration *cal = NULL;

	if (cap < ndev)
		cap = ndev;
	*x = (struct eft){ .core = core, .prof = prof, .cap = cap };
	atomic_init(&x->ndev, ndev);
	atomic_init(&x->nnodes, 1);
	atomic_init(&x->ngroups, 0);
	atomic_init(&x->rep_max, 0);
	x->node = calloc(cap, sizeof(*x->node));
	x->group = calloc(cap, sizeof(*x->group));
	x->rep = calloc(cap, sizeof(*x->rep));
	x->pending = calloc(cap, sizeof(*x->pending));
	if (prof && (cal = malloc(sizeof(*cal))))
		profiler_calibration(prof, cal);
	if (!x->node || !x->group || !x->rep || !x->pending || (prof && !cal)) {
		free(cal);
		eft_fini(x);
		return -TDM_ENOMEM;
	}
	for (size_t d = 0; d < ndev; d++)
		place_device(x, cal, devs, (uint32_t)d);
	free(cal);
	return build_classes(x);
}

int eft_init(struct eft *x, const struct engine_core *core, const struct engine_device *devs,
             size_t ndev, struct profiler *prof)
{
	return eft_init_cap(x, core, devs, ndev, ndev, prof);
}

void eft_add_device(struct eft *x, const struct engine_device *devs, uint32_t d)
{
	struct calibration *cal = NULL;
	if (d != atomic_load(&x->ndev) || d >= x->cap)
		return;
	if (x->prof && (cal = malloc(sizeof(*cal))))
		profiler_calibration(x->prof, cal);
	place_device(x, cal, devs, d);
	free(cal);
	atomic_store_explicit(&x->ndev, (size_t)d + 1, memory_order_release);
}

void eft_fini(struct eft *x)
{
	free(x->node);
	free(x->group);
	free(x->rep);
	free((void *)x->pending);
	free(x->cls);
	free(x->cls_off);
	free(x->cls_dev);
	x->node = NULL;
	x->group = x->rep = NULL;
	x->pending = NULL;
	x->cls = x->cls_off = x->cls_dev = NULL;
	x->ncls = 0;
	x->cls_ndev = 0;
}

double eft_exec(const struct eft *x, const struct engine_task *t, uint32_t d)
{
	struct cost_pred cp;
	if (!x->prof)
		return EFT_FLAT_NS;
	/* The group's representative: a device added at run time that the
	 * profiler has not met yet is priced by its kind's model. */
	profiler_predict(x->prof, t->kernel->id, x->rep[x->group[d]], &t->feat, &cp);
	return cp.ns >= 1 ? cp.ns : 1; /* also NaN */
}

double eft_exec_group(const struct eft *x, const struct engine_task *t, uint32_t group)
{
	return eft_exec(x, t, x->rep[group]);
}

uint64_t eft_exec_groups(const struct eft *x, const struct engine_task *t,
                         double gexec[EFT_MAX_GROUPS])
{
	uint32_t n = x->ngroups < EFT_MAX_GROUPS ? x->ngroups : EFT_MAX_GROUPS;
	/* rep_max after ngroups: it covers the n groups read (place_device). */
	uint32_t rep_max = atomic_load_explicit(&x->rep_max, memory_order_relaxed);
	/* At least 1 ns, as eft_exec (which also turns NaN into 1: the
	 * profiler's row has none). */
	if (!x->prof || !n ||
	    !profiler_predict_row(x->prof, t->kernel->id, x->rep, n, rep_max, &t->feat, 1, gexec))
		return 0;
	return n == 64 ? ~0ull : (1ull << n) - 1;
}

void eft_ahead(const struct eft *x, const struct engine_task *t)
{
	if (x->prof)
		profiler_row_ahead(x->prof, t->kernel->id, &t->feat);
}

static double copy_ns(const struct eft *x, uint16_t src, uint16_t dst, uint64_t bytes)
{
	if (!x->prof)
		return EFT_FLAT_COPY_NS + (double)bytes / EFT_FLAT_COPY_GBPS;
	return profiler_predict_copy(x->prof, src, dst, bytes);
}

/* A read of an argument costs the bytes of its range missing on `node`
 * (residency_missing: from the lock-free masks when they tell, else from
 * the validity map if its lock is free at once, else the whole range), or
 * nothing when a committed task already plans the whole buffer there
 * (planned bit). The source: the host when it holds the whole buffer,
 * else the cheapest device holding some of it (the mask cannot tell which
 * holds the missing bytes). Conservative: it may charge a copy the
 * residency layer will not make, never the reverse. */
double eft_transfer(const struct eft *x, const struct engine_task *t, uint16_t node)
{
	double sum = 0;
	if (x->nnodes <= 1 || node >= 32)
		return 0;
	uint32_t bit = 1u << node;
	for (uint32_t i = 0; i < t->call.nargs && i < TDM_MAX_ARGS; i++) {
		struct res_data *d = t->data[i];
		if (!d || !(t->kernel->arg_modes[i] & TDM_R))
			continue;
		uint32_t planned = atomic_load_explicit(&d->planned, memory_order_relaxed);
		if (planned & bit)
			continue;
		uint64_t len = residency_missing(d, node, t->call.off[i], t->call.len[i]);
		if (!len)
			continue;
		uint32_t remote = atomic_load_explicit(&d->remote, memory_order_relaxed);
		uint32_t full = atomic_load_explicit(&d->full, memory_order_relaxed);
		double best = (full & 1u) || !remote ? copy_ns(x, 0, node, len) : INFINITY;
		for (uint32_t s = 1; s < 32 && (remote >> s); s++)
			if (((remote >> s) & 1u) && s != node) {
				double c = copy_ns(x, (uint16_t)s, node, len);
				if (c < best)
					best = c;
			}
		if (isfinite(best))
			sum += best;
	}
	return sum;
}

/* t's transfer time to node n, computed once per node in one decision:
 * ntr[] and the bits of *have remember the nodes already priced. */
static double node_transfer(const struct eft *x, const struct engine_task *t, uint16_t n,
                            double *ntr, uint32_t *have)
{
	if (n >= RES_MAX_NODES)
		return eft_transfer(x, t, n);
	if (!(*have & (1u << n))) {
		ntr[n] = eft_transfer(x, t, n);
		*have |= 1u << n;
	}
	return ntr[n];
}

/* Device d's fit in select_predicted, exec its group's prediction. no_tr
 * (a constant where inlined): every node's transfer is +-0 and beta is
 * finite, so beta * tr is +-0 and max(pending, tr) is max(pending, ntr[0])
 * but for a zero's sign; the fit alpha * (max(pending, ntr[0]) + exec) then
 * compares as the full one does (no comparison sees a zero's sign, NaN
 * stays NaN), without the node's load and two operations per device. */
static inline __attribute__((always_inline)) double
predicted_fit(double alpha, double beta, const double *ntr, const uint16_t *node,
              const _Atomic int64_t *pending, uint32_t d, double exec, bool no_tr)
{
	double pend = (double)atomic_load_explicit(&pending[d], memory_order_relaxed);
	double tr = no_tr ? ntr[0] : ntr[node[d]];
	double at = pend > tr ? pend : tr;
	if (no_tr)
		return alpha * (at + exec);
	return alpha * (at + exec) + beta * tr;
}

/* select_predicted's scan, device 0 out of the loop: it is the first best
 * whatever its fit (NaN too); a later device replaces the best with a
 * smaller fit only, so a tie keeps the earlier device. */
static inline __attribute__((always_inline)) int
scan_predicted(double alpha, double beta, const double *ntr, const uint16_t *node,
               const uint32_t *group, const _Atomic int64_t *pending, const double *gexec,
               uint32_t ndev, bool no_tr, double *cost)
{
	if (!ndev) {
		*cost = 0;
		return -1;
	}
	int best = 0;
	double best_exec = gexec[group[0]];
	double best_fit = predicted_fit(alpha, beta, ntr, node, pending, 0, best_exec, no_tr);
	for (uint32_t d = 1; d < ndev; d++) {
		double exec = gexec[group[d]];
		double fit = predicted_fit(alpha, beta, ntr, node, pending, d, exec, no_tr);
		if (fit < best_fit) {
			best = (int)d;
			best_fit = fit;
			best_exec = exec;
		}
	}
	*cost = best_exec;
	return best;
}

/* eft_select once every group's prediction is made (gexec), where every
 * device may run t and none is skipped: the same choice, by fits that
 * compare as the scan's (predicted_fit), without the pruning, and with the machine's arrays in
 * locals (the loop runs per device per task). Every node is below RES_MAX_NODES (x->nnodes). */
static int select_predicted(const struct eft *x, const struct engine_task *t, double alpha,
                            double beta, const double *gexec, double *cost)
{
	double ntr[RES_MAX_NODES];
	/* ndev before nnodes: a device added meanwhile has its node counted
	 * (eft_add_device). */
	uint32_t ndev = (uint32_t)x->ndev;
	uint16_t nnodes = x->nnodes;
	if (nnodes > RES_MAX_NODES)
		nnodes = RES_MAX_NODES;
	/* The transfer to each node first (what it costs depends on the node
	 * only; nodes are few, and each has a device but in odd set-ups): the
	 * scan below then makes no call. One node, or no argument: every
	 * node's is eft_transfer's 0. */
	bool no_tr = true;
	for (uint16_t n = 0; n < nnodes; n++) {
		ntr[n] = nnodes > 1 && t->call.nargs ? eft_transfer(x, t, n) : 0;
		no_tr = no_tr && ntr[n] == 0;
	}
	if (no_tr && isfinite(beta))
		return scan_predicted(alpha, beta, ntr, x->node, x->group, x->pending, gexec, ndev,
		                      true, cost);
	return scan_predicted(alpha, beta, ntr, x->node, x->group, x->pending, gexec, ndev, false,
	                      cost);
}

#define EFT_MAX_CLASSES 64

/* eft_select by classes, where every device may run t and the fit grows
 * with the pending work (alpha, beta >= 0): in a class only the device of
 * least max(pending, transfer) can hold the class's least fit, so one fit
 * per class is computed, plus those of the class's earlier devices, which
 * the plain scan would prefer on a tie. Same choice, same arithmetic as
 * the scan. -2: not applicable here (the caller scans). */
static int select_by_class(const struct eft *x, const struct engine_task *t, double alpha,
                           double beta, int skip, double *gexec, uint64_t *have, double *cost)
{
	/* Its classes' members: cls_ndev devices, not ndev (a device may come). */
	uint32_t nc = x->ncls;
	double ctr[EFT_MAX_CLASSES], amin[EFT_MAX_CLASSES], ntr[RES_MAX_NODES];
	int32_t arg[EFT_MAX_CLASSES];
	uint32_t nhave = 0;
	const uint16_t *node = x->node;
	const _Atomic int64_t *pending = x->pending;

	for (uint32_t c = 0; c < nc; c++) {
		uint16_t n = node[x->cls_dev[x->cls_off[c]]];
		double tr = 0;
		if (x->nnodes > 1)
			tr = node_transfer(x, t, n, ntr, &nhave);
		if (!isfinite(tr))
			return -2;
		ctr[c] = tr;
	}
	/* Class by class over its members (in index order): max(pending,
	 * transfer) is never below the transfer, so the first member at it
	 * ends the class's search. */
	for (uint32_t c = 0; c < nc; c++) {
		const uint32_t *mem = &x->cls_dev[x->cls_off[c]];
		uint32_t nm = x->cls_off[c + 1] - x->cls_off[c];
		double tr = ctr[c], least = INFINITY;
		int32_t first = -1;
		for (uint32_t k = 0; k < nm; k++) {
			uint32_t d = mem[k];
			if ((int)d == skip)
				continue;
			double pend =
			        (double)atomic_load_explicit(&pending[d], memory_order_relaxed);
			double at = pend > tr ? pend : tr;
			if (at < least) {
				least = at;
				first = (int32_t)d;
				if (least <= tr)
					break;
			}
		}
		amin[c] = least;
		arg[c] = first;
	}
	/* The least fit first, by class; then, among the classes reaching
	 * it, the earliest device of equal fit (a class's members before its
	 * argmin may tie it by rounding): the device the scan would keep,
	 * with no member walk for a class that loses. */
	double best_fit = INFINITY, fit[EFT_MAX_CLASSES], exec[EFT_MAX_CLASSES];
	bool found = false;
	for (uint32_t c = 0; c < nc; c++) {
		fit[c] = INFINITY;
		if (arg[c] < 0)
			continue;
		double tr = ctr[c];
		if (found && alpha * amin[c] + beta * tr > best_fit)
			continue; /* its fit is larger still */
		exec[c] = eft_group_known(x, t, gexec, have, x->group[arg[c]]);
		fit[c] = alpha * (amin[c] + exec[c]) + beta * tr;
		if (!isfinite(fit[c]))
			return -2;
		if (!found || fit[c] < best_fit)
			best_fit = fit[c];
		found = true;
	}
	double best_exec = 0;
	int best = -1;
	for (uint32_t c = 0; found && c < nc; c++) {
		if (fit[c] != best_fit)
			continue;
		double tr = ctr[c];
		int a = arg[c];
		for (uint32_t k = x->cls_off[c]; (int)x->cls_dev[k] < a; k++) {
			uint32_t d = x->cls_dev[k];
			if ((int)d == skip)
				continue;
			double pend =
			        (double)atomic_load_explicit(&pending[d], memory_order_relaxed);
			double at = pend > tr ? pend : tr;
			if (alpha * (at + exec[c]) + beta * tr == best_fit) {
				a = (int)d;
				break;
			}
		}
		if (best < 0 || a < best) {
			best = a;
			best_exec = exec[c];
		}
	}
	*cost = best_exec;
	return best;
}

size_t eft_memo_kind(const struct eft *x, struct eft_memo *m, const struct engine_task *t)
{
	for (uint32_t i = 0; i < m->n; i++)
		if (m->kind[i].kernel == t->kernel &&
		    !memcmp(&m->kind[i].feat, &t->feat, sizeof(t->feat))) /* -0 is not 0 */
			return i;
	uint32_t i = m->n < EFT_MEMO_KINDS ? m->n++ : m->next++ % EFT_MEMO_KINDS;
	m->kind[i].kernel = t->kernel;
	m->kind[i].feat = t->feat;
	/* Where the whole row is cheap (the simulator's stated costs), it
	 * beats predicting device by device even with pruning. */
	m->kind[i].row = eft_exec_groups(x, t, m->kind[i].gexec);
	m->kind[i].ghave = m->kind[i].row;
	return i;
}

/* eft_select with the groups of *ghave already predicted in gexec[]; row:
 * those eft_exec_groups gave (the whole row). */
static int select_known(const struct eft *x, const struct engine_task *t, double alpha, double beta,
                        int skip, double *gexec, uint64_t row, uint64_t *ghave, double *cost)
{
	double ntr[RES_MAX_NODES];
	uint32_t nhave = 0;
	double best_fit = INFINITY, best_exec = 0;
	int best = -1;

	if (row && x->ngroups <= EFT_MAX_GROUPS && x->nnodes <= RES_MAX_NODES && skip < 0 &&
	    core_all_runnable(x->core))
		return select_predicted(x, t, alpha, beta, gexec, cost);
	/* With alpha, beta >= 0 a device's fit is at least its fit with no
	 * execution time: one that cannot beat the best even so is not
	 * predicted (ties keep the earlier device, as the full comparison);
	 * a prediction its group already made costs nothing to use. */
	bool prune = alpha >= 0 && beta >= 0;
	if (prune && x->ncls < x->ndev && x->ncls <= EFT_MAX_CLASSES && x->cls_ndev == x->ndev &&
	    x->ngroups <= EFT_MAX_GROUPS && x->nnodes <= RES_MAX_NODES && RES_MAX_NODES <= 32 &&
	    core_all_runnable(x->core)) {
		int d = select_by_class(x, t, alpha, beta, skip, gexec, ghave, cost);
		if (d != -2)
			return d;
	}
	/* The machine's arrays in locals: the calls in the loop would make
	 * the compiler reload them per device. */
	const uint16_t *node = x->node;
	const uint32_t *group = x->group;
	bool multi = x->nnodes > 1, all = core_all_runnable(x->core);
	uint32_t ndev = (uint32_t)x->ndev;
	for (uint32_t d = 0; d < ndev; d++) {
		if ((int)d == skip || (!all && !core_runnable(x->core, t, d)))
			continue;
		double tr = 0;
		if (multi)
			tr = node_transfer(x, t, node[d], ntr, &nhave);
		double pend = (double)eft_pending(x, d);
		double at = pend > tr ? pend : tr;
		uint32_t g = group[d];
		bool cached = g < EFT_MAX_GROUPS && (*ghave & (1ull << g));
		if (!cached && prune && best >= 0 && !(alpha * at + beta * tr < best_fit))
			continue;
		double exec = g < EFT_MAX_GROUPS ? eft_group_known(x, t, gexec, ghave, g)
		                                 : eft_exec(x, t, d);
		double fin = at + exec;
		double fit = alpha * fin + beta * tr;
		if (best < 0 || fit < best_fit) {
			best = (int)d;
			best_fit = fit;
			best_exec = exec;
		}
	}
	*cost = best_exec;
	return best;
}

int eft_select_memo(const struct eft *x, const struct engine_task *t, double alpha, double beta,
                    int skip, struct eft_memo *memo, double *cost)
{
	if (!memo) {
		double gexec[EFT_MAX_GROUPS];
		uint64_t row = eft_exec_groups(x, t, gexec), ghave = row;
		return select_known(x, t, alpha, beta, skip, gexec, row, &ghave, cost);
	}
	size_t i = eft_memo_kind(x, memo, t);
	return select_known(x, t, alpha, beta, skip, memo->kind[i].gexec, memo->kind[i].row,
	                    &memo->kind[i].ghave, cost);
}

int eft_select(const struct eft *x, const struct engine_task *t, double alpha, double beta,
               int skip, double *cost)
{
	return eft_select_memo(x, t, alpha, beta, skip, NULL, cost);
}

/* llround(cost), without the library call below 2^52 ns (every finite
 * prediction): x - trunc(x) is exact there, halves go away from zero. */
static int64_t pending_ns(double cost)
{
	if (!(fabs(cost) < 0x1p52))
		return llround(cost);
	int64_t i = (int64_t)cost;
	double frac = cost - (double)i;
	return frac >= 0.5 ? i + 1 : frac <= -0.5 ? i - 1 : i;
}

void eft_commit(struct eft *x, struct engine_task *t, uint32_t d, double cost)
{
	atomic_fetch_add_explicit(&x->pending[d], pending_ns(cost), memory_order_relaxed);
	uint16_t n = x->node[d];
	/* One memory node: no copy to plan, and no shared line to write. */
	if (x->nnodes <= 1 || n >= 32)
		return;
	uint32_t bit = 1u << n;
	/* A read of a whole buffer plans it here too; a read of part brings
	 * that part only, so it plans nothing. A write of a whole buffer plans
	 * it here only; a write of part leaves the rest where it is, so it only
	 * takes the plan from the other nodes. One pass in argument order ends
	 * where reads then writes would (the operations only add this node's
	 * bit or keep it alone), a buffer read and written whole planned here
	 * only. */
	for (uint32_t i = 0; i < t->call.nargs && i < TDM_MAX_ARGS; i++) {
		struct res_data *d = t->data[i];
		if (!d)
			continue;
		uint32_t mode = t->kernel->arg_modes[i];
		bool whole = t->call.off[i] == 0 && t->call.len[i] == d->bytes;
		if ((mode & TDM_R) && whole)
			atomic_fetch_or_explicit(&d->planned, bit, memory_order_relaxed);
		if (!(mode & TDM_W))
			continue;
		if (whole)
			atomic_store_explicit(&d->planned, bit, memory_order_relaxed);
		else
			atomic_fetch_and_explicit(&d->planned, bit, memory_order_relaxed);
	}
}

void eft_uncommit(struct eft *x, uint32_t d, double cost)
{
	atomic_fetch_sub_explicit(&x->pending[d], pending_ns(cost), memory_order_relaxed);
}

void eft_link(const struct eft *x, uint16_t src, uint16_t dst, double *lat, double *inv_bw)
{
	const double mib = 1048576.0;
	*lat = copy_ns(x, src, dst, 0);
	double big = copy_ns(x, src, dst, (uint64_t)mib);
	*inv_bw = big > *lat ? (big - *lat) / mib : 0;
}
