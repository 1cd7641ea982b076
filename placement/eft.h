/* Earliest finish time, per ready task and device: what the task costs
 * there (the cost models), what moving its inputs there costs (the
 * residency masks and the transfer model), and when the device is free
 * (the predicted work already committed to it).
 *
 * Nothing here waits: predictions read the profiler's published atomics,
 * residency is read through the buffers' atomic masks (and, for a replica
 * holding part of a buffer, its validity map under a try-lock), and the
 * committed work per device is an atomic counter. Devices with the same
 * calibration key share a cost model, so one prediction per group serves
 * them all (17 CPU cores cost one prediction, not 17). */
#ifndef TDM_PLACEMENT_EFT_H
#define TDM_PLACEMENT_EFT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph/task.h"

/* Without a profiler every task costs this on every device. */
#define EFT_FLAT_NS 1000.0
/* Without a profiler, a transfer costs this latency plus bytes at 10 GB/s. */
#define EFT_FLAT_COPY_NS 10000.0
#define EFT_FLAT_COPY_GBPS 10.0

/* Groups cached per decision; devices of groups beyond this are predicted
 * one by one. */
#define EFT_MAX_GROUPS 64

struct profiler;

struct eft {
	const struct engine_core *core;
	struct profiler *prof; /* NULL: flat costs */
	/* Devices known (a device added at run time is made whole, then
	 * counted: eft_add_device), and room for them. */
	_Atomic size_t ndev;
	size_t cap;
	uint16_t *node; /* [cap] memory node of each device */
	uint32_t *group; /* [cap] cost-model group */
	uint32_t *rep; /* [cap] a device of each group */
	_Atomic uint32_t ngroups;
	/* The largest of rep[] below EFT_MAX_GROUPS, set before ngroups counts
	 * a new group: the bound profiler_predict_row checks once a row. */
	_Atomic uint32_t rep_max;
	_Atomic uint16_t nnodes; /* 1: every device computes from host memory */
	/* [cap] predicted ns of the tasks committed to each device and not
	 * yet done (queued or running). */
	_Atomic int64_t *pending;
	/* Classes: devices of one group on one memory node, which differ only
	 * in their pending work (eft_select compares one candidate per
	 * class). Members of class c in index order: cls_dev[cls_off[c] ..
	 * cls_off[c + 1]); the first is the class's representative. */
	uint32_t *cls; /* [ndev] */
	uint32_t *cls_off; /* [ncls + 1] */
	uint32_t *cls_dev; /* [ndev] */
	uint32_t ncls;
	size_t cls_ndev; /* devices the classes cover */
};

/* Groups devices by calibration key (the profiler's models), else by kind
 * and model name. 0 or -TDM_ENOMEM. */
int eft_init(struct eft *x, const struct engine_core *core, const struct engine_device *devs,
             size_t ndev, struct profiler *prof);
/* The same with room for cap >= ndev devices (eft_add_device). */
int eft_init_cap(struct eft *x, const struct engine_core *core, const struct engine_device *devs,
                 size_t ndev, size_t cap, struct profiler *prof);
/* Device d (== the count so far, < cap) joins: its node and group (a
 * device of a known kind and model is priced by its group's model at
 * once). One caller at a time. */
void eft_add_device(struct eft *x, const struct engine_device *devs, uint32_t d);
void eft_fini(struct eft *x);

/* Predicted ns of t on device d (>= 1): its group's model. */
double eft_exec(const struct eft *x, const struct engine_task *t, uint32_t d);
/* The same for a whole group of devices. */
double eft_exec_group(const struct eft *x, const struct engine_task *t, uint32_t group);
/* eft_exec_group's figure for every group below EFT_MAX_GROUPS into
 * gexec[], in one call to the profiler, where that is cheaper than group by
 * group (profiler_predict_row); returns the groups filled as a bit mask, 0
 * where it is not cheaper (nothing written). */
uint64_t eft_exec_groups(const struct eft *x, const struct engine_task *t,
                         double gexec[EFT_MAX_GROUPS]);
/* Group g's prediction for t (g < EFT_MAX_GROUPS): gexec[g] where bit g of
 * *have says it is known, else asked now and kept there. */
static inline double eft_group_known(const struct eft *x, const struct engine_task *t,
                                     double *gexec, uint64_t *have, uint32_t g)
{
	if (!(*have & (1ull << g))) {
		gexec[g] = eft_exec_group(x, t, g);
		*have |= 1ull << g;
	}
	return gexec[g];
}
/* t is decided soon, after other work: its predictions may start loading
 * (profiler_row_ahead). A hint: nothing changes. */
void eft_ahead(const struct eft *x, const struct engine_task *t);
/* Predicted ns to make t's inputs valid on memory node `node`. */
double eft_transfer(const struct eft *x, const struct engine_task *t, uint16_t node);

static inline int64_t eft_pending(const struct eft *x, uint32_t d)
{
	return atomic_load_explicit(&x->pending[d], memory_order_relaxed);
}

/* dmda: among devices that may run t (engine_runnable), except `skip`
 * (-1: none), the one minimising
 *   alpha * finish(w) + beta * transfer(w),
 *   finish(w) = max(pending(w), transfer(w)) + exec(w)    (from now),
 * which is StarPU's fitness alpha * (finish - best_finish) + beta * transfer
 * without the constant; ties go to the lowest index. Returns the device and
 * its predicted exec in *cost, or -1 if no device may run t. */
int eft_select(const struct eft *x, const struct engine_task *t, double alpha, double beta,
               int skip, double *cost);

/* Group predictions remembered across the eft_select_memo calls of one
 * batch of ready tasks (or while one graph's plan gets its cost rows:
 * dispatch's fill_costs), by kernel and features: tasks of one kernel and
 * size (a tiled factorisation's) are predicted once per batch. A batch is
 * decided on one thread with no model learning in between in the
 * simulator, so it decides exactly as eft_select; in the daemon a model may
 * learn meanwhile, and a batch's later tasks then see the prediction of its
 * start. */
#define EFT_MEMO_KINDS 4
struct eft_memo {
	uint32_t n, next; /* kinds held; the one replaced next */
	struct {
		const struct kernel_def *kernel;
		struct kernel_features feat;
		uint64_t row; /* the groups eft_exec_groups gave at once */
		uint64_t ghave; /* the groups of gexec[] predicted */
		double gexec[EFT_MAX_GROUPS];
	} kind[EFT_MEMO_KINDS];
};

static inline void eft_memo_init(struct eft_memo *m)
{
	m->n = m->next = 0;
}

/* The memo's kind of t (kernel and features): its index in m->kind, a
 * new kind when m holds none (its row asked of eft_exec_groups, ghave
 * those groups; the oldest kind replaced when m is full). */
size_t eft_memo_kind(const struct eft *x, struct eft_memo *m, const struct engine_task *t);

/* eft_select, reusing and adding to memo's predictions (NULL: none). */
int eft_select_memo(const struct eft *x, const struct engine_task *t, double alpha, double beta,
                    int skip, struct eft_memo *memo, double *cost);

/* t (cost ns) is going to run on d: counts it in pending(d) and marks its
 * reads as planned on d's node (its writes make d's node the only one). */
void eft_commit(struct eft *x, struct engine_task *t, uint32_t d, double cost);
/* The work committed with eft_commit(d, cost) is done or moved. */
void eft_uncommit(struct eft *x, uint32_t d, double cost);

/* Transfer model between nodes for planning: latency and time per byte. */
void eft_link(const struct eft *x, uint16_t src, uint16_t dst, double *lat, double *inv_bw);

#endif
