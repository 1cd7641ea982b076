/* Internals shared by the planner's files (plan.c, plan_timeline.c,
 * plan_ranks.c, plan_bounds.c, plan_check.c). Not part of the API. */
#ifndef TDM_PLACEMENT_PLAN_INTERNAL_H
#define TDM_PLACEMENT_PLAN_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement/plan.h"

/* A device that can run a task: cost >= 0 and finite (NaN fails >= 0). */
static inline bool plan_allowed(double c)
{
	return c >= 0 && c < INFINITY;
}

/* Cost columns (plan_dag.col): how many, and device d's. */
static inline unsigned plan_ncols(const struct plan_dag *g, unsigned ndev)
{
	return g->col ? g->ncols : ndev;
}

static inline uint32_t plan_col(const struct plan_dag *g, uint32_t d)
{
	return g->col ? g->col[d] : d;
}

/* Task v's cost on device d. */
static inline double plan_cost(const struct plan_dag *g, unsigned ndev, uint32_t v, uint32_t d)
{
	return g->cost[(size_t)v * plan_ncols(g, ndev) + plan_col(g, d)];
}

/* Task v's costs per device: its row of the table, or without columns
 * shared that row itself; else written into tmp[ndev]. */
static inline const double *plan_cost_row(const struct plan_dag *g, unsigned ndev, uint32_t v,
                                          double *tmp)
{
	if (!g->col)
		return g->cost + (size_t)v * ndev;
	const double *r = g->cost + (size_t)v * g->ncols;
	for (unsigned d = 0; d < ndev; d++)
		tmp[d] = r[g->col[d]];
	return tmp;
}

/* The sum of t over the devices that can run a task whose cost row is c
 * (per cost column: device d reads column col[d], or d without col),
 * added device by device; *k: how many. t is c itself for the mean cost. */
static inline double plan_sum_allowed(const double *c, const double *t, const uint32_t *col,
                                      unsigned nd, unsigned *k)
{
	double sum = 0;
	unsigned n = 0;
	if (col) {
		for (unsigned d = 0; d < nd; d++)
			if (plan_allowed(c[col[d]])) {
				sum += t[col[d]];
				n++;
			}
	} else {
		for (unsigned d = 0; d < nd; d++)
			if (plan_allowed(c[d])) {
				sum += t[d];
				n++;
			}
	}
	*k = n;
	return sum;
}

static inline double plan_maxd(double a, double b)
{
	return a > b ? a : b;
}

/* ---- device timelines -------------------------------------------------------
 * One device's busy intervals [s[i], f[i]), sorted by start, never
 * overlapping (so f is sorted too). A max-segment tree over the gaps in front
 * of each interval (gap[i] = s[i] - f[i-1], i >= 1) finds the first gap that
 * fits a task in O(log slots); an insertion updates the leaves it shifts. */
struct plan_tl {
	double *s, *f;
	uint32_t *id; /* the task of each interval (fixed ones merged: any of them) */
	double *seg; /* [2 * segcap], leaves at segcap + i */
	uint32_t len, cap, segcap;
	/* s[0], f[len - 1] and the longest gap (seg[1]) as of the last build
	 * or insertion: plan_tl_bound reads this struct only. */
	double first_s, last_f, max_gap;
};

void plan_tl_free(struct plan_tl *t);
void plan_tl_clear(struct plan_tl *t);
/* Appends [s, f) after the last interval without updating the tree (for
 * building from sorted intervals); plan_tl_build afterwards. -TDM_ENOMEM. */
int plan_tl_push(struct plan_tl *t, double s, double f, uint32_t id);
void plan_tl_build(struct plan_tl *t);
/* Earliest start >= ready of an idle slot of length dur (insertion policy);
 * *pos receives the index where the interval goes. */
double plan_tl_find(const struct plan_tl *t, double ready, double dur, uint32_t *pos);
/* What plan_tl_find would answer, in O(1) when it can: sets *exact and
 * returns the start (the slot then goes at the end, pos = len) when ready
 * is after the last interval, or when no gap after the first interval is
 * long enough (the tree's root) and ready is not before it; otherwise
 * returns ready, a lower bound on the start. */
static inline double plan_tl_bound(const struct plan_tl *t, double ready, double dur, bool *exact)
{
	*exact = true;
	if (t->len == 0 || t->last_f <= ready)
		return ready;
	if (t->first_s <= ready && t->max_gap < dur)
		return t->last_f;
	*exact = false;
	return ready;
}
/* Inserts [s, f) at pos (from plan_tl_find). 0 or -TDM_ENOMEM. */
int plan_tl_insert(struct plan_tl *t, uint32_t pos, double s, double f, uint32_t id);

/* ---- work arrays -------------------------------------------------------------- */
/* A ready task in the scheduler's heap, with its priority beside it (the
 * heap's comparisons then read no other array). */
struct plan_hent {
	double prio;
	uint32_t v;
};

struct plan_ws {
	/* sizes the arrays below hold */
	size_t n_cap, e_cap, nd_cap, dev_cap, node_cap;

	/* per task [n_cap] (pred_off: n_cap + 1) */
	uint32_t *order; /* a topological order */
	uint32_t *cnt; /* scratch: in-degrees */
	uint32_t *pred_off;
	struct plan_hent *heap; /* the ready tasks (schedule_once) */
	uint32_t *fsort; /* fixed tasks by device, then start */
	uint32_t *nallow; /* devices that can run each task */
	double *wmean; /* mean cost over the devices that can run it */
	double *rank_u, *rank_d, *prio, *base, *aux;
	struct plan_slot *cand;
	/* per edge [e_cap]: predecessors in CSR, with the data of each edge */
	uint32_t *pred;
	double *pred_data;
	/* per task and cost column [nd_cap] */
	double *oct;
	/* per device [dev_cap] */
	struct plan_tl *tl;
	/* each device's memory node (0 without nodes) and the time before
	 * which it is busy (0 without dev_ready), for schedule_once */
	uint32_t *dev_node;
	double *dev_rdy;
	/* each timeline's last_f (-INFINITY when empty), first_s and max_gap,
	 * side by side for the per-device scan (tl_summary) */
	double *tl_last_f, *tl_first_s, *tl_max_gap;
	/* scratch, per device for the task being placed: a lower bound on its
	 * key */
	double *dev_lb;
	/* with shared cost columns: the columns some device reads
	 * (plan_ranks_oct) */
	uint32_t *col_used;
	/* per node [node_cap] */
	double *arr;

	/* the timelines hold the returned schedule, one interval per task
	 * (plan_device_order): no fixed task, no refinement */
	bool order_ok;

	/* set by plan_prep */
	uint32_t n, ndev, ncols, nedges;
	double lat_mean, invbw_mean; /* over ordered pairs of distinct devices */
};

/* Validates g and m, sizes ws, builds the predecessor lists, a topological
 * order (Kahn), the per-task mean costs and the mean link costs. 0, -TDM_ENOMEM
 * or -TDM_EINVAL (with a reason in why when not NULL). */
int plan_prep(struct plan_ws *ws, const struct plan_dag *g, const struct plan_machine *m, char *why,
              size_t whylen);

/* Communication of an edge carrying data between devices a and b. */
static inline double plan_comm(const struct plan_machine *m, uint32_t a, uint32_t b, double data)
{
	unsigned na = m->node ? m->node[a] : 0, nb = m->node ? m->node[b] : 0;
	if (na == nb)
		return 0;
	size_t k = (size_t)na * m->nnodes + nb;
	return (m->lat ? m->lat[k] : 0) + data * (m->inv_bw ? m->inv_bw[k] : 0);
}

static inline double plan_edge_data(const struct plan_dag *g, uint32_t k)
{
	return g->edge_data ? g->edge_data[k] : 0;
}

/* Mean communication of an edge (HEFT's c-bar). */
static inline double plan_comm_mean(const struct plan_ws *ws, double data)
{
	return ws->lat_mean + data * ws->invbw_mean;
}

/* Ranks on a prepared ws (plan_prep done). */
void plan_ranks_up(struct plan_ws *ws, const struct plan_dag *g, double *rank_u);
void plan_ranks_down(struct plan_ws *ws, const struct plan_dag *g, double *rank_d);
/* oct[n * ndev]; uses ws->aux as scratch. */
/* mean (may be NULL): each task's mean OCT over the devices that can run
 * it (PEFT's rank_oct), summed device by device (plan_sum_allowed). */
void plan_ranks_oct(struct plan_ws *ws, const struct plan_dag *g, double *oct, double *mean);

/* The area bound alone, by a chosen method (tests compare them):
 * PLAN_AREA_AUTO as plan_lower_bounds does, PLAN_AREA_DIRECT the whole LP,
 * PLAN_AREA_CUTS cutting planes on its dual. */
enum { PLAN_AREA_AUTO = 0, PLAN_AREA_DIRECT, PLAN_AREA_CUTS };
int plan_area_bound(const struct plan_dag *g, const struct plan_machine *m, int method,
                    double *area);

#endif
