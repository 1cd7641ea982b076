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
		atomic_store(&x->ngroups, ng + 1);
	}
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
	return 0;
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
	x->node = NULL;
	x->group = x->rep = NULL;
	x->pending = NULL;
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
	if (!x->prof || !n ||
	    !profiler_predict_row(x->prof, t->kernel->id, x->rep, n, &t->feat, gexec))
		return 0;
	for (uint32_t g = 0; g < n; g++)
		gexec[g] = gexec[g] >= 1 ? gexec[g] : 1; /* as eft_exec, NaN too */
	return n == 64 ? ~0ull : (1ull << n) - 1;
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

/* eft_select once every group's prediction is made (gexec): the same
 * choice, by the same arithmetic, without the pruning, and with the
 * machine's arrays in locals (the loop runs per device per task). */
static int select_predicted(const struct eft *x, const struct engine_task *t, double alpha,
                            double beta, int skip, const double *gexec, double *cost)
{
	double ntr[RES_MAX_NODES], best_fit = INFINITY, best_exec = 0;
	uint32_t nhave = 0;
	int best = -1;
	const uint16_t *node = x->node;
	const uint32_t *group = x->group;
	bool multi = x->nnodes > 1;
	uint32_t ndev = (uint32_t)x->ndev;
	for (uint32_t d = 0; d < ndev; d++) {
		if ((int)d == skip || !core_runnable(x->core, t, d))
			continue;
		double tr = 0;
		uint16_t n = node[d];
		if (multi) {
			if (n >= RES_MAX_NODES)
				tr = eft_transfer(x, t, n);
			else if (nhave & (1u << n))
				tr = ntr[n];
			else {
				tr = ntr[n] = eft_transfer(x, t, n);
				nhave |= 1u << n;
			}
		}
		double pend = (double)eft_pending(x, d);
		double at = pend > tr ? pend : tr;
		double exec = gexec[group[d]];
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

int eft_select(const struct eft *x, const struct engine_task *t, double alpha, double beta,
               int skip, double *cost)
{
	double gexec[EFT_MAX_GROUPS], ntr[RES_MAX_NODES];
	/* Where the whole row is cheap (the simulator's stated costs), it
	 * beats predicting device by device even with pruning. */
	uint64_t ghave = eft_exec_groups(x, t, gexec);
	uint32_t nhave = 0;
	double best_fit = INFINITY, best_exec = 0;
	int best = -1;

	if (ghave && x->ngroups <= EFT_MAX_GROUPS)
		return select_predicted(x, t, alpha, beta, skip, gexec, cost);
	/* With alpha, beta >= 0 a device's fit is at least its fit with no
	 * execution time: one that cannot beat the best even so is not
	 * predicted (ties keep the earlier device, as the full comparison);
	 * a prediction its group already made costs nothing to use. */
	bool prune = alpha >= 0 && beta >= 0;
	for (uint32_t d = 0; d < x->ndev; d++) {
		if ((int)d == skip || !core_runnable(x->core, t, d))
			continue;
		double tr = 0;
		uint16_t n = x->node[d];
		if (x->nnodes > 1) {
			if (n < RES_MAX_NODES) {
				if (!(nhave & (1u << n))) {
					ntr[n] = eft_transfer(x, t, n);
					nhave |= 1u << n;
				}
				tr = ntr[n];
			} else {
				tr = eft_transfer(x, t, n);
			}
		}
		double pend = (double)eft_pending(x, d);
		double at = pend > tr ? pend : tr;
		uint32_t g = x->group[d];
		bool cached = g < EFT_MAX_GROUPS && (ghave & (1ull << g));
		if (!cached && prune && best >= 0 && !(alpha * at + beta * tr < best_fit))
			continue;
		double exec;
		if (g < EFT_MAX_GROUPS) {
			if (!cached) {
				gexec[g] = eft_exec_group(x, t, g);
				ghave |= 1ull << g;
			}
			exec = gexec[g];
		} else {
			exec = eft_exec(x, t, d);
		}
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

void eft_commit(struct eft *x, struct engine_task *t, uint32_t d, double cost)
{
	atomic_fetch_add_explicit(&x->pending[d], llround(cost), memory_order_relaxed);
	uint16_t n = x->node[d];
	/* One memory node: no copy to plan, and no shared line to write. */
	if (x->nnodes <= 1 || n >= 32)
		return;
	uint32_t bit = 1u << n;
	/* Reads first: a buffer read and written whole ends up planned here
	 * only. A read of part of a buffer brings that part only, so it plans
	 * nothing; a write of part leaves the rest where it is, so it only
	 * takes the plan from the other nodes. */
	for (uint32_t i = 0; i < t->call.nargs && i < TDM_MAX_ARGS; i++)
		if (t->data[i] && (t->kernel->arg_modes[i] & TDM_R) && t->call.off[i] == 0 &&
		    t->call.len[i] == t->data[i]->bytes)
			atomic_fetch_or_explicit(&t->data[i]->planned, bit, memory_order_relaxed);
	for (uint32_t i = 0; i < t->call.nargs && i < TDM_MAX_ARGS; i++) {
		struct res_data *d = t->data[i];
		if (!d || !(t->kernel->arg_modes[i] & TDM_W))
			continue;
		if (t->call.off[i] == 0 && t->call.len[i] == d->bytes)
			atomic_store_explicit(&d->planned, bit, memory_order_relaxed);
		else
			atomic_fetch_and_explicit(&d->planned, bit, memory_order_relaxed);
	}
}

void eft_uncommit(struct eft *x, uint32_t d, double cost)
{
	atomic_fetch_sub_explicit(&x->pending[d], llround(cost), memory_order_relaxed);
}

void eft_link(const struct eft *x, uint16_t src, uint16_t dst, double *lat, double *inv_bw)
{
	const double mib = 1048576.0;
	*lat = copy_ns(x, src, dst, 0);
	double big = copy_ns(x, src, dst, (uint64_t)mib);
	*inv_bw = big > *lat ? (big - *lat) / mib : 0;
}
