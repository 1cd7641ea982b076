/* Whole-graph planning on heterogeneous devices: ranks, HEFT and PEFT with
 * insertion-based device timelines, lower bounds, and a schedule checker.
 *
 * These are mechanisms on a plain description of a DAG (costs per task per
 * device, data per edge) and of a machine (devices on memory nodes, links
 * between nodes). They know nothing of the engine: the heft/peft policies
 * build a plan_dag from a submitted graph and the cost models; tests and the
 * simulator build one from paper examples or workload files.
 *
 * Time is in arbitrary units (the engine uses ns). Communication between
 * tasks u -> v placed on devices a, b costs 0 when a and b share a memory
 * node, else lat[na][nb] + data(u,v) * inv_bw[na][nb]. */
#ifndef TDM_PLACEMENT_PLAN_H
#define TDM_PLACEMENT_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem.h"

/* Errors are tandem's own codes, as everywhere in the daemon: -TDM_EINVAL
 * for a graph or machine the planner cannot take (a cycle, a task no
 * device can run, a bad fixed slot), -TDM_ENOMEM. */

struct plan_machine {
	unsigned ndev;
	const uint16_t *node; /* [ndev]: memory node of each device (NULL: all on node 0) */
	unsigned nnodes;
	const double *lat; /* [nnodes * nnodes], row = source node; diagonal unused (NULL: 0) */
	const double *inv_bw; /* [nnodes * nnodes]: time per unit of data (NULL: 0) */
};

/* A DAG in CSR form, tasks numbered 0..n-1 in any order (not necessarily
 * topological). cost[v * ndev + d] is task v's time on device d; a cost
 * < 0 or not finite means device d cannot run v (every task must have at
 * least one device that can). With col, devices of equal costs share a
 * column: cost[v * ncols + col[d]] is v's time on d (32 identical cores
 * then cost one column, not 32). */
struct plan_dag {
	uint32_t n;
	const double *cost;
	const uint32_t *col; /* [ndev], each < ncols (NULL: column d for device d) */
	uint32_t ncols;
	/* Successors of v: succ[succ_off[v] .. succ_off[v+1]), with the data
	 * each edge carries in edge_data[] (same index; NULL: no data). */
	const uint32_t *succ_off;
	const uint32_t *succ;
	const double *edge_data;
};

/* One task's place in a schedule. */
struct plan_slot {
	uint32_t dev;
	double start, finish;
};

enum plan_method { PLAN_HEFT = 0, PLAN_PEFT };

struct plan_opts {
	enum plan_method method;
	/* Per device, the time before which it is busy with other work (NULL:
	 * all free at 0): no planned (non-fixed) task starts on d before
	 * dev_ready[d]. */
	const double *dev_ready;
	/* Extra candidate orders tried after the plain one, each a
	 * deterministic perturbation of the rank order (seeded by seed); the
	 * shortest schedule wins (the earliest found on ties), so it is never
	 * longer than the plain one. The candidates, in turn: the method's
	 * priority plus rank_d; the other method's priority (rank_u for PEFT,
	 * mean OCT for HEFT); then rank_u or the method's priority times
	 * (1 + eps u), eps cycling 0.1, 0.2, 0.3 and u uniform in [-1, 1)
	 * from splitmix64(seed). The device choice stays the method's.
	 * 0: the published algorithm only. */
	uint32_t refine_iters;
	uint64_t seed;
	/* Tasks already placed (fixed[v] true): their slot in out[] is kept and
	 * occupies its device's timeline; the others are planned around them
	 * (plan repair). NULL: none fixed. A fixed slot is taken as it is
	 * (its length need not match the cost table); fixed slots that overlap
	 * on a device occupy their union. -TDM_EINVAL when a fixed task has a
	 * predecessor that is not fixed, or a fixed slot names no device, is
	 * not finite or ends before it starts. */
	const bool *fixed;
};

/* Work arrays for the planner, reusable across calls (plan_ws_free); one
 * per thread at a time. */
struct plan_ws;
struct plan_ws *plan_ws_new(void);
void plan_ws_free(struct plan_ws *ws);

/* Upward rank (HEFT's rank_u: mean cost over the devices that can run a
 * task plus the longest mean-cost path to an exit, with mean communication
 * over distinct device pairs) and downward rank (rank_d), [n] each. The
 * mean communication of an edge is lat_mean + data * invbw_mean, both
 * averaged over the ordered pairs (a, b), a != b, of devices, a pair on one
 * node counting 0 (0 with one device). 0 or -TDM_ENOMEM / -TDM_EINVAL (cycle, or a
 * task no device can run). */
int plan_rank_upward(const struct plan_dag *g, const struct plan_machine *m, double *rank_u);
int plan_rank_downward(const struct plan_dag *g, const struct plan_machine *m, double *rank_d);
/* PEFT's optimistic cost table: oct[v * ndev + d] (with g->col: per column,
 * oct[v * ncols + col[d]]: devices of one column agree) = max over successors s
 * of min over devices w that can run s of OCT(s, w) + cost(s, w) + (w == d
 * ? 0 : mean communication of the edge), 0 for exits. PEFT's rank_oct is
 * its mean over the devices that can run v. */
int plan_oct(const struct plan_dag *g, const struct plan_machine *m, double *oct);

/* Plans the whole graph; out[v] receives each task's device and times.
 * Returns the makespan (max finish, fixed tasks included) in *makespan (may
 * be NULL). A list scheduler: among the tasks whose predecessors are placed,
 * the highest priority first (HEFT: rank_u, PEFT: rank_oct; equal
 * priorities, to 1e-12 relative, lower task index first), each on the
 * device with the earliest finish (PEFT: finish + OCT) using insertion into
 * idle gaps, ties to the lowest device index. O(v * (deg * nnodes + p * log
 * slots)) after ranks (O(e * p) for OCT). o NULL: plain HEFT. 0,
 * -TDM_EINVAL or -TDM_ENOMEM. */
int plan_schedule(const struct plan_dag *g, const struct plan_machine *m, const struct plan_opts *o,
                  struct plan_ws *ws, struct plan_slot *out, double *makespan);

/* After plan_schedule with no fixed task and refine_iters 0 (else
 * -TDM_EINVAL): the tasks it placed on device d in start order, *len of
 * them at *ids (ws's, valid until ws is used again). */
int plan_device_order(const struct plan_ws *ws, unsigned d, const uint32_t **ids, uint32_t *len);

/* Lower bounds on the makespan of any schedule of g on m:
 *   critical path: the longest path where each task takes its best cost
 *     and communication is free;
 *   area: the LP relaxation (GLPK) in which each task's work may be split
 *     over devices in any fractions and every device's busy time is at
 *     most T; tasks with equal cost vectors are grouped, and so are devices
 *     with equal cost columns, so the LP stays small on big graphs. The
 *     value is the dual objective at the solver's dual point, evaluated
 *     exactly, so it is a true bound whatever the solver's tolerances;
 *     with many classes (distinct measured costs) cutting planes on the
 *     dual replace the whole LP (tens of ms for 20,000 tasks).
 * Either pointer may be NULL. 0, -TDM_EINVAL or -TDM_ENOMEM. */
int plan_lower_bounds(const struct plan_dag *g, const struct plan_machine *m, double *critical_path,
                      double *area);
static inline double plan_lower_bound(double critical_path, double area)
{
	return critical_path > area ? critical_path : area;
}

/* Checks a schedule: every task on a device that can run it, finish =
 * start + cost (within 1e-9 relative), no two tasks overlapping on a device
 * ([s, f) intervals; a zero-length task strictly inside another overlaps
 * it), and every task starting no earlier than each predecessor's finish
 * plus the communication between their devices (within 1e-9 relative).
 * Returns 0, or -TDM_EINVAL with a one-line reason in why (may be NULL), e.g.
 * "task 7 on device 2 starts at 12 before predecessor 3 on device 0
 * finishes at 15 plus communication 4". */
int plan_check(const struct plan_dag *g, const struct plan_machine *m, const struct plan_slot *s,
               char *why, size_t whylen);

#endif
