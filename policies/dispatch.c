/* The dispatch core (dispatch.h): queues and placement shared by dmda,
 * heft, peft and prio, then whole-graph plans, then the policy seam. */
#include "policies/dispatch.h"

#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "placement/eft.h"
#include "placement/fairq.h"
#include "placement/plan.h"
#include "tandem.h"

#define NO_DEV UINT32_MAX
/* How deep into a flow's sub-queue of the any-device queue a worker looks
 * for a task it may run (as eager.c does). */
#define ANY_SCAN 32
/* pick_next moves at most this many unrunnable tasks before giving up. */
#define MAX_REPLACE 64
/* steal_fair: entries of a flow looked at on a peer's queue, and how much
 * slower than its committed device a task may be predicted on the taker. */
#define STEAL_SCAN 4
#define STEAL_SLACK 1.1

enum task_state { TASK_WAITING = 0, TASK_RELEASED, TASK_DONE };

/* A graph's plan: each task's device and start, relative to base_ns.
 *
 * Executing it: each device runs the graph's tasks in their planned order
 * (seq: the tasks planned on each device, by planned start). A ready task
 * is queued on its device only once every task planned before it there
 * has been taken; until then it is parked. With exact costs every task
 * then starts no later than planned (by induction in planned-start
 * order), so the graph ends no later than its plan says. */
/* A task of a planned graph, as its plan is executed: one cache line
 * holds two (the tasks are released and run in no order; one array each
 * would cost a miss each). */
struct gtask {
	/* the cost of the task on the device it was last planned on (pdev),
	 * as in gplan.cost: a row of the big table no more (gp_cost_at) */
	_Alignas(32) double pcost;
	uint32_t pdev;
	uint32_t dev; /* device committed to at release (NO_DEV: none) */
	uint8_t state; /* enum task_state */
	bool picked; /* a worker took it */
	bool parked; /* ready, held back until the tasks before it on its device are taken */
};

struct gplan {
	pthread_mutex_t lock;
	struct engine_graph *g;
	struct gplan *live_prev, *live_next; /* the dispatch's plans in flight */
	uint32_t n, ndev, nnodes;
	uint32_t cap_dev, cap_nodes; /* room in the arrays (grow_plan) */
	enum plan_method method;
	uint64_t base_ns; /* the graph's submission */
	uint32_t released, done; /* tasks */
	uint32_t last_repair; /* `done` at the last repair */
	uint32_t drifts; /* since the last repair */
	/* [n * ncols] predicted ns, < 0: cannot run there. While every device
	 * may run every task, one column per cost-model group (col: the eft's
	 * groups, 2 columns for 32 cores and a GPU); else col is NULL and each
	 * device has its own (ncols = ndev). gp_cost reads it. */
	double *cost;
	const uint32_t *col;
	uint32_t ncols;
	double *edge_data; /* [edges] bytes */
	double *cursor, *own; /* [ndev] each: repair scratch */
	double *lat, *inv_bw; /* [nnodes * nnodes]: the links it was planned with */
	struct plan_slot *slot; /* [n] planned, or actual once done */
	struct gtask *task; /* [n] what executing the plan reads and writes */
	uint32_t *order; /* [n] repair scratch */
	uint32_t *seq_off, *seq, *seq_head; /* [ndev + 1], [n], [ndev]: plan order per device */
	uint32_t *pred_off, *pred, *pred_edge; /* [n + 1], [edges], [edges]: predecessors */
	const uint16_t *node; /* [ndev] each device's memory node (the dispatch's) */
	bool *fixed; /* [n] */
};

struct dispatch {
	const struct engine_core *core;
	const struct clock_source *clock;
	const struct policy_tuning *tuning;
	uint8_t strategy; /* the default */
	/* Devices known (live count: one added at run time is counted once its
	 * slots are ready) and room for them; the any-device queue is q[cap]. */
	_Atomic size_t ndev;
	size_t cap;
	/* [cap + 1]: one per device, then the any-device queue. */
	struct fairq *q;
	struct fairq_flow *orphan; /* [cap + 1]: tasks of flows never added */
	/* The queues share one virtual time, and each flow one across them
	 * (fairq.h): shares hold over the machine, not per device. */
	struct fairq_clock vclock;
	struct fairq_share orphan_share;
	struct eft eft;
	_Atomic size_t any_queued; /* in the "any device" queue */
	/* Planning: one workspace and machine description, under plan_lock. */
	pthread_mutex_t plan_lock;
	struct plan_ws *ws;
	double *lat, *inv_bw; /* [BACKEND_MAX_NODES^2]: nodes may be added */
	double *dev_ready; /* [cap] */
	_Atomic uint32_t *taken; /* [cap] tasks each device's worker took and has not finished */
	const struct engine_device *devices; /* [cap], the engine's */
	/* Plans in flight (a device that leaves repairs them), under live_lock. */
	pthread_mutex_t live_lock;
	struct gplan *live;
	_Atomic uint64_t plans, plan_failures, drifts, repairs, repair_failures, replaced;
	_Atomic uint64_t stolen; /* tasks a worker took from a peer's queue (steal_fair) */
	struct dispatch_graph_hook hook; /* graph == NULL: none */
};

/* Whether device d takes tasks (engine_device.state); no devices given
 * (tests): yes. Plans park and unpark only on such devices. */
static bool dev_active(const struct dispatch *D, uint32_t d)
{
	return !D->devices || atomic_load_explicit(&((struct engine_device *)D->devices)[d].state,
	                                           memory_order_acquire) == ENGINE_DEV_ACTIVE;
}

/* ---- strategies and keys ---- */

static uint8_t strategy_of(const struct dispatch *D, const struct engine_graph *g)
{
	if (g->policy_hint && g->policy_hint < TDM_POLICY_HINT_COUNT)
		return g->policy_hint;
	if (g->flow && g->flow->policy_hint && g->flow->policy_hint < TDM_POLICY_HINT_COUNT)
		return g->flow->policy_hint;
	return D->strategy;
}

/* prio: task + graph priority, saturated; 0 for the other strategies. */
static int32_t task_class(const struct dispatch *D, const struct engine_task *t)
{
	if (strategy_of(D, t->graph) != TDM_POLICY_PRIO)
		return 0;
	int64_t p = (int64_t)t->priority + t->graph->priority;
	return p > INT32_MAX ? INT32_MAX : p < INT32_MIN ? INT32_MIN : (int32_t)p;
}

/* prio: earliest deadline first (none: last); otherwise ready order. */
static double task_key(const struct dispatch *D, const struct engine_task *t)
{
	if (strategy_of(D, t->graph) == TDM_POLICY_PRIO)
		return t->graph->deadline_ns ? (double)t->graph->deadline_ns : INFINITY;
	return (double)t->queued_ns;
}

/* ---- queues ---- */

static struct fairq_flow *flow_of(struct dispatch *D, const struct engine_task *t, size_t qi)
{
	struct fairq_flow *ff = t->graph->flow ? t->graph->flow->policy_slot : NULL;
	return ff ? &ff[qi] : &D->orphan[qi];
}

static void enqueue(struct dispatch *D, size_t qi, struct engine_task *t, int32_t prio, double key,
                    double cost)
{
	struct fairq_key k = { prio, key };
	t->policy_key = key;
	if (qi == D->cap)
		atomic_fetch_add_explicit(&D->any_queued, 1, memory_order_relaxed);
	/* Out of memory: wait for workers to drain some entries (as ws does). */
	while (fairq_push(&D->q[qi], flow_of(D, t, qi), &k, cost, t) != 0)
		sched_yield();
	/* Only that device's worker takes it: wake it if it sleeps (the core
	 * wakes "some" worker per ready task, which may be another). */
	if (qi < D->cap)
		core_kick(D->core, (unsigned)qi);
}

static void commit(struct dispatch *D, struct engine_task *t, uint32_t d, double cost)
{
	eft_commit(&D->eft, t, d, cost);
	t->policy_dev = d;
	t->policy_cost = cost;
}

static void uncommit(struct dispatch *D, struct engine_task *t)
{
	if (t->policy_dev == NO_DEV)
		return;
	eft_uncommit(&D->eft, t->policy_dev, t->policy_cost);
	t->policy_dev = NO_DEV;
}

/* The any-device queue; the worker that takes it commits it. Its fairness
 * cost is its best predicted time. */
static void place_any(struct dispatch *D, struct engine_task *t, double key)
{
	double cost = INFINITY;
	for (uint32_t g = 0; g < D->eft.ngroups; g++) {
		double c = eft_exec_group(&D->eft, t, g);
		cost = c < cost ? c : cost;
	}
	t->policy_dev = NO_DEV;
	enqueue(D, D->cap, t, task_class(D, t), key, cost);
}

/* dmda among the devices that may run t, except skip (-1: none): the
 * device and t's cost there, or -1 if none may run it. */
static int select_dmda(struct dispatch *D, const struct engine_task *t, int skip,
                       struct eft_memo *memo, double *cost)
{
	return eft_select_memo(&D->eft, t, D->tuning->dmda_alpha, D->tuning->dmda_beta, skip, memo,
	                       cost);
}

/* Among the devices on memory node `node` that may run t, the one whose
 * committed work plus t ends first (-1: none). */
static int select_on_node(struct dispatch *D, const struct engine_task *t, unsigned node,
                          double *cost)
{
	int best = -1;
	double best_fin = 0;
	uint32_t nd = (uint32_t)D->ndev;
	for (uint32_t d = 0; d < nd; d++) {
		if (D->eft.node[d] != node || !core_runnable(D->core, t, d))
			continue;
		double exec = eft_exec(&D->eft, t, d);
		double fin =
		        (double)atomic_load_explicit(&D->eft.pending[d], memory_order_relaxed) +
		        exec;
		if (best < 0 || fin < best_fin) {
			best = (int)d;
			best_fin = fin;
			*cost = exec;
		}
	}
	return best;
}

/* Commits t to device d and queues it there; d < 0: the any-device queue
 * (no device may run it now: the watchdog will see it wait). Once queued,
 * t may run and its graph end at any time. */
static void push_to(struct dispatch *D, struct engine_task *t, int d, double cost, double key)
{
	if (d < 0) {
		place_any(D, t, key);
		return;
	}
	commit(D, t, (uint32_t)d, cost);
	enqueue(D, (size_t)d, t, task_class(D, t), key, cost);
}

/* ---- whole-graph plans (heft, peft) ---- */

static void gplan_free(struct gplan *gp)
{
	if (!gp)
		return;
	pthread_mutex_destroy(&gp->lock);
	free(gp->cost);
	free(gp);
}

/* Task v's predicted cost on device d (< gp->ndev). */
static double gp_cost(const struct gplan *gp, uint32_t v, uint32_t d)
{
	return gp->col ? gp->cost[(size_t)v * gp->ncols + gp->col[d]]
	               : gp->cost[(size_t)v * gp->ndev + d];
}

/* The same, from pcost when d is where v was last planned. */
static double gp_cost_at(const struct gplan *gp, uint32_t v, uint32_t d)
{
	return d == gp->task[v].pdev ? gp->task[v].pcost : gp_cost(gp, v, d);
}

/* pcost and pdev from the slots and the cost table: after each plan, and
 * after the table's rows change. */
static void pcost_refresh(struct gplan *gp)
{
	for (uint32_t v = 0; v < gp->n; v++) {
		uint32_t d = gp->slot[v].dev;
		gp->task[v].pdev = d < gp->ndev ? d : NO_DEV;
		gp->task[v].pcost = d < gp->ndev ? gp_cost(gp, v, d) : 0;
	}
}

static double *gp_row(const struct gplan *gp, uint32_t v)
{
	return gp->cost + (size_t)v * (gp->col ? gp->ncols : gp->ndev);
}

/* From one column per group to one per device (room for cap_dev): a
 * device may no longer run every task, or devices join. 0 or
 * -TDM_ENOMEM. */
static int gp_cost_per_device(struct gplan *gp)
{
	if (!gp->col)
		return 0;
	double *c = malloc(sizeof(double) * ((size_t)gp->n * gp->cap_dev + 1));
	if (!c)
		return -TDM_ENOMEM;
	for (uint32_t v = 0; v < gp->n; v++)
		for (uint32_t d = 0; d < gp->ndev; d++)
			c[(size_t)v * gp->ndev + d] = gp_cost(gp, v, d);
	free(gp->cost);
	gp->cost = c;
	gp->col = NULL;
	gp->ncols = gp->ndev;
	return 0;
}

/* One block: the header, then the arrays, largest alignment first. The
 * per-device arrays have room for cap devices and the links for
 * max_nodes nodes, so that a repair may take devices added since. */
static struct gplan *gplan_new(uint32_t n, size_t ndev, size_t cap, size_t nnodes, size_t max_nodes,
                               uint32_t nedges, const uint32_t *col, uint32_t ncols)
{
	size_t nd = cap, nl = max_nodes * max_nodes,
	       off = (sizeof(struct gplan) + 15) & ~(size_t)15;
	size_t o_edge = off;
	size_t o_cur = o_edge + sizeof(double) * nedges, o_own = o_cur + sizeof(double) * nd;
	size_t o_lat = o_own + sizeof(double) * nd, o_inv = o_lat + sizeof(double) * nl;
	size_t o_slot = o_inv + sizeof(double) * nl;
	size_t o_order = o_slot + sizeof(struct plan_slot) * n;
	size_t o_soff = o_order + sizeof(uint32_t) * n,
	       o_seq = o_soff + sizeof(uint32_t) * (nd + 1);
	size_t o_shead = o_seq + sizeof(uint32_t) * n, o_poff = o_shead + sizeof(uint32_t) * nd;
	size_t o_pred = o_poff + sizeof(uint32_t) * (n + 1),
	       o_pedge = o_pred + sizeof(uint32_t) * nedges;
	size_t o_fixed = o_pedge + sizeof(uint32_t) * nedges, o_task = o_fixed + sizeof(bool) * n;
	/* the tasks' records on whole cache lines: room to align them */
	char *p = calloc(1, o_task + 64 + sizeof(struct gtask) * n);
	/* Every row is written before it is read: no need to clear it. */
	double *cost = malloc(sizeof(double) * ((size_t)n * (col ? ncols : nd) + 1));
	if (!p || !cost) {
		free(p);
		free(cost);
		return NULL;
	}
	struct gplan *gp = (struct gplan *)p;
	pthread_mutex_init(&gp->lock, NULL);
	gp->n = n;
	gp->ndev = (uint32_t)ndev;
	gp->nnodes = (uint32_t)nnodes;
	gp->cap_dev = (uint32_t)cap;
	gp->cap_nodes = (uint32_t)max_nodes;
	gp->cost = cost;
	gp->col = col;
	gp->ncols = col ? ncols : (uint32_t)ndev;
	gp->edge_data = (double *)(p + o_edge);
	gp->cursor = (double *)(p + o_cur);
	gp->own = (double *)(p + o_own);
	gp->lat = (double *)(p + o_lat);
	gp->inv_bw = (double *)(p + o_inv);
	gp->slot = (struct plan_slot *)(p + o_slot);
	gp->order = (uint32_t *)(p + o_order);
	gp->seq_off = (uint32_t *)(p + o_soff);
	gp->seq = (uint32_t *)(p + o_seq);
	gp->seq_head = (uint32_t *)(p + o_shead);
	gp->pred_off = (uint32_t *)(p + o_poff);
	gp->pred = (uint32_t *)(p + o_pred);
	gp->pred_edge = (uint32_t *)(p + o_pedge);
	gp->fixed = (bool *)(p + o_fixed);
	gp->task = (struct gtask *)(((uintptr_t)(p + o_task) + 63) & ~(uintptr_t)63);
	for (uint32_t v = 0; v < n; v++)
		gp->task[v].dev = NO_DEV;
	return gp;
}

/* Task t's row of gp's costs: per group, or on every device (< 0 where it
 * may not run), one prediction per group. false if no device may run it.
 * memo (NULL: none): the predictions of the kinds met so far in this pass
 * over the graph, where a row comes group by group (a tiled
 * factorisation's thousands of tasks are of a few kinds; a row of stated
 * costs, the simulator's, comes whole and per task). */
static bool fill_costs(struct dispatch *D, const struct engine_task *t, const struct gplan *gp,
                       double *row, struct eft_memo *memo)
{
	double own[EFT_MAX_GROUPS], *gexec = own;
	uint64_t have = eft_exec_groups(&D->eft, t, own), *ghave = &have;
	uint32_t nd = gp->ndev, ng = D->eft.ngroups;
	uint64_t every = ng >= 64 ? ~0ull : (1ull << ng) - 1;
	if (memo && ng <= EFT_MAX_GROUPS && have != every) {
		size_t k = eft_memo_kind(&D->eft, memo, t);
		gexec = memo->kind[k].gexec;
		ghave = &memo->kind[k].ghave;
	}
	if (gp->col) {
		for (uint32_t g = 0; g < gp->ncols; g++)
			row[g] = eft_group_known(&D->eft, t, gexec, ghave, g);
		return true;
	}
	bool any = false, all = core_all_runnable(D->core);
	if (all && ng <= EFT_MAX_GROUPS) {
		/* Every device open: each group predicted once (in one row
		 * where that is cheaper), then copied to its devices. */
		for (uint32_t g = 0; *ghave != every && g < ng; g++)
			eft_group_known(&D->eft, t, gexec, ghave, g);
		const uint32_t *group = D->eft.group;
		for (uint32_t d = 0; d < nd; d++)
			row[d] = gexec[group[d]];
		return nd > 0;
	}
	for (uint32_t d = 0; d < nd; d++) {
		if (!all && !core_runnable(D->core, t, d)) {
			row[d] = -1;
			continue;
		}
		uint32_t g = D->eft.group[d];
		row[d] = g >= EFT_MAX_GROUPS ? eft_exec(&D->eft, t, d)
		                             : eft_group_known(&D->eft, t, gexec, ghave, g);
		any = true;
	}
	return any;
}

/* Bytes an edge u -> v carries: what v reads of the ranges u writes (the
 * overlap of the two ranges; the largest when u writes a buffer twice). */
static double edge_bytes(const struct engine_task *u, const struct engine_task *v)
{
	/* Bounds and pointers in locals: the compiler cannot keep them across
	 * the loads otherwise. */
	uint32_t nv = v->call.nargs < TDM_MAX_ARGS ? v->call.nargs : TDM_MAX_ARGS;
	uint32_t nu = u->call.nargs < TDM_MAX_ARGS ? u->call.nargs : TDM_MAX_ARGS;
	const uint8_t *vm = v->kernel->arg_modes, *um = u->kernel->arg_modes;
	double bytes = 0;
	for (uint32_t i = 0; i < nv; i++) {
		const struct res_data *data = v->data[i];
		if (!data || !(vm[i] & TDM_R))
			continue;
		uint64_t a = v->call.off[i], b = a + v->call.len[i], most = 0;
		for (uint32_t j = 0; j < nu; j++) {
			if (u->data[j] != data || !(um[j] & TDM_W))
				continue;
			uint64_t lo = u->call.off[j] > a ? u->call.off[j] : a;
			uint64_t hi = u->call.off[j] + u->call.len[j] < b
			                      ? u->call.off[j] + u->call.len[j]
			                      : b;
			if (hi > lo && hi - lo > most)
				most = hi - lo;
		}
		bytes += (double)most;
	}
	return bytes;
}

/* Planned start, then finish, then index. Predicted costs are at least
 * 1 ns (eft_exec), so a task is planned to start after its predecessors
 * and this order never puts a task before one it waits for. */
struct seq_key {
	double start, finish;
	uint32_t v;
};

static bool by_plan(const struct seq_key *a, const struct seq_key *b)
{
	if (a->start != b->start)
		return a->start < b->start;
	if (a->finish != b->finish)
		return a->finish < b->finish;
	return a->v < b->v;
}

/* Sorts a[n] by_plan (tmp[n]: scratch): runs of 16 by insertion, then
 * merged. The keys are distinct (v), so the order is the only one. */
static void sort_keys(struct seq_key *a, struct seq_key *tmp, uint32_t n)
{
	for (uint32_t lo = 0; lo < n; lo += 16) {
		uint32_t hi = lo + 16 < n ? lo + 16 : n;
		for (uint32_t i = lo + 1; i < hi; i++) {
			struct seq_key x = a[i];
			uint32_t j = i;
			for (; j > lo && by_plan(&x, &a[j - 1]); j--)
				a[j] = a[j - 1];
			a[j] = x;
		}
	}
	struct seq_key *src = a, *dst = tmp;
	for (uint32_t w = 16; w < n; w *= 2) {
		for (uint32_t lo = 0; lo < n; lo += 2 * w) {
			uint32_t mid = lo + w < n ? lo + w : n,
			         hi = lo + 2 * w < n ? lo + 2 * w : n;
			uint32_t i = lo, j = mid, k = lo;
			while (i < mid && j < hi)
				dst[k++] = by_plan(&src[j], &src[i]) ? src[j++] : src[i++];
			while (i < mid)
				dst[k++] = src[i++];
			while (j < hi)
				dst[k++] = src[j++];
		}
		struct seq_key *t = src;
		src = dst;
		dst = t;
	}
	if (src != a)
		memcpy(a, src, sizeof(*a) * n);
}

static int by_plan_idx(const void *a, const void *b, void *ctx)
{
	const struct plan_slot *s = ctx;
	uint32_t u = *(const uint32_t *)a, v = *(const uint32_t *)b;
	struct seq_key x = { s[u].start, s[u].finish, u }, y = { s[v].start, s[v].finish, v };
	return by_plan(&x, &y) ? -1 : by_plan(&y, &x);
}

/* Whether ids[len] are the tasks planned on d in planned order (each
 * before the next by_plan: the order is then the only one) and copies them
 * to d's part of gp->seq. */
static bool seq_take(struct gplan *gp, uint32_t d, const uint32_t *ids, uint32_t len)
{
	uint32_t *seq = gp->seq + gp->seq_off[d];
	if (len != gp->seq_off[d + 1] - gp->seq_off[d])
		return false;
	for (uint32_t i = 0; i < len; i++) {
		uint32_t v = ids[i];
		if (v >= gp->n || gp->slot[v].dev != d)
			return false;
		if (i > 0) {
			const struct plan_slot *a = &gp->slot[ids[i - 1]], *b = &gp->slot[v];
			struct seq_key x = { a->start, a->finish, ids[i - 1] },
			               y = { b->start, b->finish, v };
			if (!by_plan(&x, &y))
				return false;
		}
		seq[i] = v;
	}
	return true;
}

/* The tasks planned on each device in planned order (gp->slot): the
 * planner's own per-device order when ws has it for these slots
 * (plan_device_order, checked), else sorted. */
static void seq_build(struct gplan *gp, const struct plan_ws *ws)
{
	uint32_t nd = gp->ndev, *off = gp->seq_off;
	memset(off, 0, sizeof(*off) * (nd + 1));
	for (uint32_t v = 0; v < gp->n; v++)
		off[(gp->slot[v].dev < nd ? gp->slot[v].dev : 0) + 1]++;
	for (uint32_t d = 0; d < nd; d++) {
		off[d + 1] += off[d];
		gp->seq_head[d] = off[d];
	}
	bool taken = ws != NULL;
	for (uint32_t d = 0; d < nd && taken; d++) {
		const uint32_t *ids;
		uint32_t len;
		taken = !plan_device_order(ws, d, &ids, &len) && seq_take(gp, d, ids, len);
	}
	if (taken)
		return;
	for (uint32_t v = 0; v < gp->n; v++)
		gp->seq[gp->seq_head[gp->slot[v].dev < nd ? gp->slot[v].dev : 0]++] = v;
	struct seq_key *key = malloc(sizeof(*key) * ((size_t)gp->n * 2 + 1));
	for (uint32_t d = 0; d < nd; d++) {
		gp->seq_head[d] = off[d];
		uint32_t *seq = gp->seq + off[d], len = off[d + 1] - off[d];
		if (!key) {
			qsort_r(seq, len, sizeof(*seq), by_plan_idx, gp->slot);
			continue;
		}
		for (uint32_t i = 0; i < len; i++)
			key[i] = (struct seq_key){ gp->slot[seq[i]].start, gp->slot[seq[i]].finish,
				                   seq[i] };
		sort_keys(key, key + len, len);
		for (uint32_t i = 0; i < len; i++)
			seq[i] = key[i].v;
	}
	free(key);
}

/* The first task of d's planned order that is still to be taken there
 * (NO_DEV: none): tasks taken, or committed to another device, are passed
 * for good. Amortised O(1). Caller holds gp->lock. */
static uint32_t seq_next(struct gplan *gp, uint32_t d)
{
	uint32_t *h = &gp->seq_head[d], end = gp->seq_off[d + 1];
	for (; *h < end; ++*h) {
		uint32_t v = gp->seq[*h];
		if (!gp->task[v].picked && (gp->task[v].dev == NO_DEV || gp->task[v].dev == d)) {
			/* The tasks next in d's order are read when this one
			 * is taken (each a cache miss on big graphs); the
			 * next one is queued then (seq_unpark). */
			for (uint32_t i = *h + 1; i < end && i <= *h + 2; i++)
				__builtin_prefetch(&gp->task[gp->seq[i]]);
			if (*h + 1 < end && gp->g) {
				uint32_t x = gp->seq[*h + 1];
				__builtin_prefetch(&gp->slot[x]);
				__builtin_prefetch(&gp->g->tasks[x].policy_key, 1);
			}
			return v;
		}
	}
	return NO_DEV;
}

/* Runs the planner on gp (its cost, fixed and slot arrays) with dev_ready
 * already in D->dev_ready. Caller holds D->plan_lock. */
static int run_planner(struct dispatch *D, struct engine_graph *g, struct gplan *gp, bool repair)
{
	unsigned nn = gp->nnodes; /* nodes added since are not the plan's */
	for (unsigned s = 0; s < nn; s++)
		for (unsigned d = 0; d < nn; d++)
			eft_link(&D->eft, (uint16_t)s, (uint16_t)d, &D->lat[s * nn + d],
			         &D->inv_bw[s * nn + d]);
	struct plan_machine m = { .ndev = gp->ndev,
		                  .node = D->eft.node,
		                  .nnodes = nn,
		                  .lat = D->lat,
		                  .inv_bw = D->inv_bw };
	struct plan_dag dag = { .n = gp->n,
		                .cost = gp->cost,
		                .col = gp->col,
		                .ncols = gp->ncols,
		                .succ_off = g->succ_off,
		                .succ = g->succ,
		                .edge_data = gp->edge_data };
	struct plan_opts o = { .method = gp->method,
		               .dev_ready = D->dev_ready,
		               .refine_iters = D->tuning->plan_refine_iters,
		               .seed = g->cookie,
		               .fixed = repair ? gp->fixed : NULL };
	double makespan;
	memcpy(gp->lat, D->lat, sizeof(double) * nn * nn);
	memcpy(gp->inv_bw, D->inv_bw, sizeof(double) * nn * nn);
	int err = plan_schedule(&dag, &m, &o, D->ws, gp->slot, &makespan);
	if (!err)
		seq_build(gp, D->ws);
	pcost_refresh(gp);
	return err;
}

/* At submission: costs from the models, data per edge, then the plan from
 * the devices' committed work on. NULL: not planned (dmda places it). */
static struct gplan *plan_graph(struct dispatch *D, struct engine_graph *g, enum plan_method method)
{
	uint32_t n = g->ntasks, nedges = g->succ_off[n];
	/* The devices known now; one added later joins at the next repair. */
	size_t nd = atomic_load(&D->ndev), nn = D->eft.nnodes ? D->eft.nnodes : 1;
	bool elastic = D->cap > nd;
	/* Costs per group while every device may run every task (unless each
	 * device is a group of its own). */
	uint32_t ng = atomic_load(&D->eft.ngroups);
	bool by_group = core_all_runnable(D->core) && ng && ng <= EFT_MAX_GROUPS;
	bool own = true;
	for (size_t d = 0; d < nd && own; d++)
		own = D->eft.group[d] == d;
	by_group &= !own;
	struct gplan *gp =
	        gplan_new(n, nd, elastic ? D->cap : nd, nn, elastic ? BACKEND_MAX_NODES : nn,
	                  nedges, by_group ? D->eft.group : NULL, ng);
	if (!gp)
		goto fail;
	gp->method = method;
	gp->base_ns = g->submit_ns;
	gp->node = D->eft.node;
	/* Predecessors, with the index of their edge (gp->order as cursor). */
	for (uint32_t k = 0; k < nedges; k++)
		gp->pred_off[g->succ[k] + 1]++;
	for (uint32_t v = 0; v < n; v++) {
		gp->pred_off[v + 1] += gp->pred_off[v];
		gp->order[v] = gp->pred_off[v];
	}
	for (uint32_t u = 0; u < n; u++)
		for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++) {
			uint32_t at = gp->order[g->succ[k]]++;
			gp->pred[at] = u;
			gp->pred_edge[at] = k;
		}
	struct eft_memo memo;
	eft_memo_init(&memo);
	for (uint32_t v = 0; v < n; v++)
		if (!fill_costs(D, &g->tasks[v], gp, gp_row(gp, v), &memo))
			goto fail;
	for (uint32_t v = 0; v < n; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			gp->edge_data[k] =
			        g->edge_data ? g->edge_data[k]
			                     : edge_bytes(&g->tasks[v], &g->tasks[g->succ[k]]);
	pthread_mutex_lock(&D->plan_lock);
	for (size_t d = 0; d < gp->ndev; d++) {
		int64_t p = eft_pending(&D->eft, (uint32_t)d);
		D->dev_ready[d] = p > 0 ? (double)p : 0;
	}
	int err = run_planner(D, g, gp, false);
	pthread_mutex_unlock(&D->plan_lock);
	if (err)
		goto fail;
	atomic_fetch_add(&D->plans, 1);
	return gp;
fail:
	gplan_free(gp);
	atomic_fetch_add(&D->plan_failures, 1);
	return NULL;
}

/* d's next planned task of gp if it is parked (struct gplan), unparked:
 * the caller queues it on d (seq_queue) once it has let go of gp->lock,
 * which it holds. NULL if none. */
static struct engine_task *seq_unpark(const struct dispatch *D, struct gplan *gp,
                                      struct engine_graph *g, uint32_t d)
{
	/* A device that drains: device_draining moves its parked tasks. */
	if (!dev_active(D, d))
		return NULL;
	uint32_t h = seq_next(gp, d);
	if (h == NO_DEV || !gp->task[h].parked)
		return NULL;
	gp->task[h].parked = false;
	g->tasks[h].policy_key = (double)gp->base_ns + gp->slot[h].start;
	return &g->tasks[h];
}

static void seq_queue(struct dispatch *D, struct engine_task *t, uint32_t d)
{
	if (t)
		enqueue(D, d, t, 0, t->policy_key, t->policy_cost);
}

/* After a repair: parked tasks that now come first on their device. The
 * graph lives on: the task whose completion repaired it is not counted
 * done yet. */
static void seq_unpark_all(struct dispatch *D, struct gplan *gp, struct engine_graph *g)
{
	for (uint32_t d = 0; d < gp->ndev; d++) {
		pthread_mutex_lock(&gp->lock);
		struct engine_task *t = seq_unpark(D, gp, g, d);
		pthread_mutex_unlock(&gp->lock);
		seq_queue(D, t, d);
	}
}

/* ---- filling a device's idle time (struct gplan) ---- */

/* How many tasks past d's next one a fill looks at. */
#define FILL_SCAN 16

/* Time for `bytes` made on device a to reach device b, as planned. */
static double plan_comm_ns(const struct gplan *gp, uint32_t a, uint32_t b, double bytes)
{
	unsigned na = gp->node && a < gp->ndev ? gp->node[a] : 0;
	unsigned nb = gp->node && b < gp->ndev ? gp->node[b] : 0;
	if (na == nb || na >= gp->nnodes || nb >= gp->nnodes)
		return 0;
	size_t k = (size_t)na * gp->nnodes + nb;
	return gp->lat[k] + bytes * gp->inv_bw[k];
}

/* The earliest v's inputs may all be on device d (relative ns), now_rel
 * being now: exact for finished predecessors (where and when they ended),
 * a lower bound for the others (one taken ends now at the soonest, one not
 * taken yet after its predicted time from now). Caller holds gp->lock. */
static double inputs_lb(const struct gplan *gp, uint32_t v, uint32_t d, double now_rel)
{
	double at = 0;
	for (uint32_t k = gp->pred_off[v]; k < gp->pred_off[v + 1]; k++) {
		uint32_t u = gp->pred[k],
		         ud = gp->task[u].dev != NO_DEV ? gp->task[u].dev : gp->slot[u].dev;
		double end;
		if (gp->task[u].state == TASK_DONE) {
			end = gp->slot[u].finish;
			ud = gp->slot[u].dev;
		} else if (gp->task[u].picked) {
			end = now_rel;
		} else {
			double c = ud < gp->ndev ? gp_cost_at(gp, u, ud) : 0;
			end = now_rel + (c > 0 ? c : 0);
		}
		at = fmax(at, end + plan_comm_ns(gp, ud, d, gp->edge_data[gp->pred_edge[k]]));
	}
	return at;
}

/* Device d is idle and its next planned task h is not ready: a parked task
 * planned after h on d may run now if it ends, as predicted, before h can
 * start: by h's planned start, or later when h's inputs cannot be there
 * sooner. With exact costs h then starts no later than planned, so the
 * plan's promise holds; with costs that drift, d does not idle while h
 * waits. Returns that task (unparked, for seq_queue) or NULL. Caller holds
 * gp->lock. */
static struct engine_task *seq_fill(struct dispatch *D, struct gplan *gp, struct engine_graph *g,
                                    uint32_t d)
{
	if (atomic_load_explicit(&D->taken[d], memory_order_relaxed) || !dev_active(D, d))
		return NULL;
	uint32_t h = seq_next(gp, d);
	if (h == NO_DEV || gp->task[h].state != TASK_WAITING)
		return NULL;
	uint64_t now = clock_now(D->clock);
	double now_rel = now > gp->base_ns ? (double)(now - gp->base_ns) : 0;
	double due = fmax(gp->slot[h].start, inputs_lb(gp, h, d, now_rel));
	uint32_t end = gp->seq_off[d + 1], last = gp->seq_head[d] + 1 + FILL_SCAN;
	for (uint32_t i = gp->seq_head[d] + 1; i < end && i < last; i++) {
		uint32_t v = gp->seq[i];
		if (!gp->task[v].parked || gp->task[v].dev != d)
			continue;
		double c = gp_cost_at(gp, v, d);
		if (fmax(now_rel, inputs_lb(gp, v, d, now_rel)) + c <= due) {
			gp->task[v].parked = false;
			g->tasks[v].policy_key = (double)gp->base_ns + gp->slot[v].start;
			return &g->tasks[v];
		}
	}
	return NULL;
}

/* A planned task is ready: committed to its planned device, and queued
 * there keyed by its planned start once the tasks planned before it there
 * are taken (parked until then); dmda if that device may not run it any
 * more. */
static void place_planned(struct dispatch *D, struct gplan *gp, struct engine_task *t)
{
	uint32_t v = t->index;
	pthread_mutex_lock(&gp->lock);
	if (gp->task[v].state == TASK_WAITING) {
		gp->task[v].state = TASK_RELEASED;
		gp->released++;
	}
	/* Given back (device fault): its turn came already. */
	bool again = gp->task[v].picked;
	uint32_t d = gp->slot[v].dev;
	double cost = d < gp->ndev ? gp_cost_at(gp, v, d) : -1;
	double key = (double)gp->base_ns + gp->slot[v].start;
	if (cost < 0 || !core_runnable(D->core, t, d)) {
		int nd = select_dmda(D, t, -1, NULL, &cost);
		gp->task[v].dev = nd < 0 ? NO_DEV : (uint32_t)nd;
		/* Off d's order: the next one there may go (else once taken). */
		struct engine_task *next = d < gp->ndev ? seq_unpark(D, gp, t->graph, d) : NULL;
		pthread_mutex_unlock(&gp->lock);
		seq_queue(D, next, d);
		push_to(D, t, nd, cost, (double)t->queued_ns);
		return;
	}
	gp->task[v].dev = d;
	bool park = !again && seq_next(gp, d) != v;
	gp->task[v].parked = park;
	/* Committed under the plan's lock: once parked, another worker may
	 * unpark and queue t (seq_queue reads policy_cost) as soon as the lock
	 * is let go. eft_commit only touches atomics. */
	commit(D, t, d, cost);
	struct engine_task *fill = park ? seq_fill(D, gp, t->graph, d) : NULL;
	pthread_mutex_unlock(&gp->lock);
	if (!park)
		enqueue(D, d, t, 0, key, cost);
	seq_queue(D, fill, d);
}

/* pick_next moved a task of a planned graph off device w to d (-1: to the
 * any-device queue): the next task planned on w may be queued. */
static void plan_note_device(struct dispatch *D, struct engine_task *t, unsigned w, int d)
{
	struct gplan *gp = t->graph->policy_graph;
	if (!gp)
		return;
	pthread_mutex_lock(&gp->lock);
	gp->task[t->index].dev = d < 0 ? NO_DEV : (uint32_t)d;
	struct engine_task *next = w < gp->ndev ? seq_unpark(D, gp, t->graph, w) : NULL;
	pthread_mutex_unlock(&gp->lock);
	seq_queue(D, next, w);
}

/* Worker w took t: w is busy; the next task planned on w, and on the
 * device t was planned on if that is another, may be queued (the graph
 * lives on: t has not run). */
static void note_taken(struct dispatch *D, struct engine_task *t, unsigned w)
{
	struct gplan *gp = t->graph->policy_graph;
	atomic_fetch_add_explicit(&D->taken[w], 1, memory_order_relaxed);
	if (!gp)
		return;
	pthread_mutex_lock(&gp->lock);
	gp->task[t->index].picked = true;
	uint32_t pd = gp->slot[t->index].dev;
	/* w may be a device added after the plan was made. */
	struct engine_task *next = w < gp->ndev ? seq_unpark(D, gp, t->graph, w) : NULL;
	struct engine_task *next_pd =
	        pd != w && pd < gp->ndev ? seq_unpark(D, gp, t->graph, pd) : NULL;
	pthread_mutex_unlock(&gp->lock);
	seq_queue(D, next, w);
	seq_queue(D, next_pd, pd);
}

static int by_start(const void *a, const void *b, void *ctx)
{
	const struct plan_slot *s = ctx;
	double x = s[*(const uint32_t *)a].start, y = s[*(const uint32_t *)b].start;
	return x < y ? -1 : x > y;
}

/* Devices (and memory nodes) added since gp was planned join it: its
 * cost table is laid out again for them (every row predicted again) and
 * the repair may place the waiting tasks there. Caller holds gp->lock. */
static void grow_plan(struct dispatch *D, struct engine_graph *g, struct gplan *gp)
{
	size_t live = atomic_load_explicit(&D->ndev, memory_order_acquire);
	uint16_t nn = D->eft.nnodes ? D->eft.nnodes : 1;
	if (live <= gp->ndev || live > gp->cap_dev || nn > gp->cap_nodes || gp_cost_per_device(gp))
		return;
	gp->ndev = (uint32_t)live;
	gp->ncols = gp->ndev;
	gp->nnodes = nn > gp->nnodes ? nn : gp->nnodes;
	struct eft_memo memo;
	eft_memo_init(&memo);
	for (uint32_t v = 0; v < gp->n; v++) {
		double *row = gp_row(gp, v);
		if (fill_costs(D, &g->tasks[v], gp, row, &memo) ||
		    gp->task[v].state == TASK_WAITING)
			continue;
		/* Ran, or runs, where nothing may run it now: its own time there. */
		for (uint32_t d = 0; d < gp->ndev; d++)
			row[d] = -1;
		uint32_t d = gp->slot[v].dev < gp->ndev ? gp->slot[v].dev : 0;
		row[d] = fmax(gp->slot[v].finish - gp->slot[v].start, 1);
	}
}

/* Re-plans the tasks not yet released from now on, around the others:
 * done ones at their actual slots, released ones from now on in their
 * planned order on the device they were committed to. The waiting tasks'
 * costs are predicted again (the models learned meanwhile). only >= 0 (a
 * device that leaves): only the waiting tasks planned on that device, and
 * those after them, are planned again; the others keep their slots.
 * Caller holds gp->lock. */
static void repair(struct dispatch *D, struct engine_graph *g, struct gplan *gp, uint64_t now,
                   int only)
{
	grow_plan(D, g, gp);
	/* A device that may no longer run every task needs its own costs;
	 * without memory for them the table, and so pcost, stays as it was:
	 * keep the old plan. */
	if (!core_all_runnable(D->core) && gp_cost_per_device(gp))
		return;
	size_t nd = gp->ndev;
	double now_rel = now > gp->base_ns ? (double)(now - gp->base_ns) : 0;
	uint32_t nrel = 0;

	gp->last_repair = gp->done;
	gp->drifts = 0;
	for (size_t d = 0; d < nd; d++) {
		gp->cursor[d] = now_rel;
		gp->own[d] = 0;
	}
	struct eft_memo memo;
	eft_memo_init(&memo);
	for (uint32_t v = 0; v < gp->n; v++) {
		gp->fixed[v] = gp->task[v].state != TASK_WAITING;
		/* Tasks come after their predecessors (intake): one keeps its
		 * slot when its predecessors all do. */
		if (only >= 0 && !gp->fixed[v] && gp->slot[v].dev != (uint32_t)only) {
			bool keep = true;
			for (uint32_t k = gp->pred_off[v]; k < gp->pred_off[v + 1] && keep; k++)
				keep = gp->fixed[gp->pred[k]];
			gp->fixed[v] = keep;
		}
		if (gp->task[v].state == TASK_RELEASED)
			gp->order[nrel++] = v;
		else if (gp->task[v].state == TASK_WAITING &&
		         !fill_costs(D, &g->tasks[v], gp, gp_row(gp, v), &memo)) {
			pcost_refresh(gp);
			return; /* nowhere to run it now: keep the old plan */
		}
	}
	pcost_refresh(gp);
	/* Released tasks, one after the other per device: fixed slots must
	 * not overlap. */
	qsort_r(gp->order, nrel, sizeof(*gp->order), by_start, gp->slot);
	for (uint32_t i = 0; i < nrel; i++) {
		uint32_t v = gp->order[i], d = gp->task[v].dev;
		if (d >= nd)
			d = gp->slot[v].dev < nd ? gp->slot[v].dev : 0;
		double c = gp_cost(gp, v, d);
		if (c < 0)
			c = eft_exec(&D->eft, &g->tasks[v], d);
		gp->own[d] += c;
		/* Repairing for a device that leaves, the kept tasks keep the
		 * slots of the plan they were made in, which agree with each
		 * other: moving released ones later could put them behind a kept
		 * successor in a device's order, which would then wait for them
		 * forever. */
		if (only >= 0)
			continue;
		double s = gp->slot[v].start > gp->cursor[d] ? gp->slot[v].start : gp->cursor[d];
		gp->slot[v] = (struct plan_slot){ d, s, s + c };
		gp->cursor[d] = s + c;
	}
	pthread_mutex_lock(&D->plan_lock);
	/* Other graphs' work: what is committed minus this graph's part. */
	for (size_t d = 0; d < nd; d++) {
		double other = (double)eft_pending(&D->eft, (uint32_t)d) - gp->own[d];
		D->dev_ready[d] = now_rel + (other > 0 ? other : 0);
	}
	int err = run_planner(D, g, gp, true);
	pthread_mutex_unlock(&D->plan_lock);
	atomic_fetch_add(err ? &D->repair_failures : &D->repairs, 1);
}

/* A planned task finished: its actual slot replaces the planned one; a
 * drift beyond the prediction's spread may trigger a repair (at most one
 * per max(8, n/16) completions). */
static void plan_task_done(struct dispatch *D, struct gplan *gp, struct engine_task *t, unsigned w)
{
	uint32_t v = t->index;
	const struct engine_graph *g = t->graph;
	/* The successors that this completion makes ready are placed next
	 * (place_planned): their records on their way. */
	for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++) {
		__builtin_prefetch(&gp->task[g->succ[k]], 1);
		__builtin_prefetch(&gp->slot[g->succ[k]]);
	}
	pthread_mutex_lock(&gp->lock);
	if (gp->task[v].state != TASK_DONE) {
		if (gp->task[v].state == TASK_WAITING)
			gp->released++;
		gp->task[v].state = TASK_DONE;
		gp->done++;
	}
	/* w may be a device added after the plan was made: no prediction. */
	double pred = w < gp->ndev ? gp_cost_at(gp, v, w) : -1;
	uint64_t end = t->end_ns > t->start_ns ? t->end_ns : t->start_ns;
	double s = t->start_ns > gp->base_ns ? (double)(t->start_ns - gp->base_ns) : 0;
	double f = end > gp->base_ns ? (double)(end - gp->base_ns) : 0;
	/* A device the plan does not know (added since) keeps the planned
	 * one's place in the plan's arrays. */
	gp->slot[v] = (struct plan_slot){ w < gp->ndev ? w : gp->slot[v].dev, s, f };
	/* Without a profiler costs are flat guesses: nothing to learn from. */
	if (D->eft.prof && t->status == 0 && t->kernel->id != KERNEL_NOOP && pred > 0) {
		double actual = (double)(t->end_ns - t->start_ns);
		double tol = fmax((double)t->pred_spread_ns, 0.05 * pred);
		if (fabs(actual - pred) > tol) {
			gp->drifts++;
			atomic_fetch_add_explicit(&D->drifts, 1, memory_order_relaxed);
		}
	}
	uint32_t every = gp->n / 16 > 8 ? gp->n / 16 : 8;
	bool repairing = D->tuning->plan_repair && gp->drifts && gp->released < gp->n &&
	                 gp->done - gp->last_repair >= every;
	if (repairing)
		repair(D, t->graph, gp, clock_now(D->clock), -1);
	struct engine_task *fill = w < gp->ndev ? seq_fill(D, gp, t->graph, w) : NULL;
	pthread_mutex_unlock(&gp->lock);
	seq_queue(D, fill, w);
	if (repairing)
		seq_unpark_all(D, gp, t->graph);
}

/* ---- the seam ---- */

int dispatch_init(const struct policy_params *p, uint8_t strategy, void **priv)
{
	struct dispatch *D = calloc(1, sizeof(*D));
	if (!D)
		return -TDM_ENOMEM;
	D->core = p->core;
	D->clock = p->clock;
	D->tuning = p->tuning ? p->tuning : &policy_tuning_defaults;
	D->strategy = strategy;
	D->cap = p->max_workers > p->nworkers ? p->max_workers : p->nworkers;
	atomic_init(&D->ndev, p->nworkers);
	pthread_mutex_init(&D->plan_lock, NULL);
	pthread_mutex_init(&D->live_lock, NULL);
	int err = eft_init_cap(&D->eft, p->core, p->devices, p->nworkers, D->cap, p->prof);
	D->devices = p->devices;
	D->q = calloc(D->cap + 1, sizeof(*D->q));
	D->orphan = calloc(D->cap + 1, sizeof(*D->orphan));
	size_t nn = BACKEND_MAX_NODES;
	D->lat = calloc(nn * nn, sizeof(double));
	D->inv_bw = calloc(nn * nn, sizeof(double));
	D->dev_ready = calloc(D->cap, sizeof(double));
	D->taken = calloc(D->cap, sizeof(*D->taken));
	D->ws = plan_ws_new();
	if (err || !D->q || !D->orphan || !D->lat || !D->inv_bw || !D->dev_ready || !D->taken ||
	    !D->ws) {
		if (!err)
			eft_fini(&D->eft);
		free(D->q);
		free(D->orphan);
		free(D->lat);
		free(D->inv_bw);
		free(D->dev_ready);
		free(D->taken);
		plan_ws_free(D->ws);
		pthread_mutex_destroy(&D->plan_lock);
		pthread_mutex_destroy(&D->live_lock);
		free(D);
		return -TDM_ENOMEM;
	}
	fairq_clock_init(&D->vclock);
	for (size_t i = 0; i <= D->cap; i++) {
		fairq_init_shared(&D->q[i], &D->vclock);
		fairq_flow_init_shared(&D->orphan[i], NULL, &D->orphan_share);
	}
	*priv = D;
	return 0;
}

void dispatch_fini(void *priv)
{
	struct dispatch *D = priv;
	if (D->hook.fini)
		D->hook.fini(D->hook.ctx);
	for (size_t i = 0; i <= D->cap; i++) {
		fairq_flow_fini(&D->q[i], &D->orphan[i]);
		fairq_fini(&D->q[i]);
	}
	fairq_clock_fini(&D->vclock);
	eft_fini(&D->eft);
	plan_ws_free(D->ws);
	pthread_mutex_destroy(&D->plan_lock);
	pthread_mutex_destroy(&D->live_lock);
	free(D->q);
	free(D->orphan);
	free(D->lat);
	free(D->inv_bw);
	free(D->dev_ready);
	free(D->taken);
	free(D);
}

int dispatch_flow_added(void *priv, struct engine_flow *flow)
{
	struct dispatch *D = priv;
	/* One block: the flow's sub-queue on each queue, then its share. */
	struct fairq_flow *ff = calloc(1, (D->cap + 1) * sizeof(*ff) + sizeof(struct fairq_share));
	if (!ff)
		return -TDM_ENOMEM;
	struct fairq_share *share = (struct fairq_share *)(ff + D->cap + 1);
	for (size_t i = 0; i <= D->cap; i++)
		fairq_flow_init_shared(&ff[i], flow, share);
	flow->policy_slot = ff;
	return 0;
}

void dispatch_flow_gone(void *priv, struct engine_flow *flow)
{
	struct dispatch *D = priv;
	struct fairq_flow *ff = flow->policy_slot;
	if (!ff)
		return;
	/* Normally empty; after a watchdog fallback it may still list tasks
	 * the engine took back, which are dropped here. */
	for (size_t i = 0; i <= D->cap; i++) {
		size_t held = fairq_flow_fini(&D->q[i], &ff[i]);
		if (i == D->cap)
			atomic_fetch_sub(&D->any_queued, held);
	}
	free(ff);
	flow->policy_slot = NULL;
}

void dispatch_graph_submitted(void *priv, struct engine_graph *g)
{
	struct dispatch *D = priv;
	for (uint32_t i = 0; i < g->ntasks; i++) {
		g->tasks[i].policy_dev = NO_DEV;
		g->tasks[i].policy_node = 0;
	}
	g->policy_graph = NULL;
	uint8_t s = strategy_of(D, g);
	if (D->hook.graph && s == TDM_POLICY_DMDA)
		D->hook.graph(D->hook.ctx, g);
	/* A single task has nothing to plan: dmda places it. */
	if ((s == TDM_POLICY_HEFT || s == TDM_POLICY_PEFT) && g->ntasks > 1)
		g->policy_graph = plan_graph(D, g, s == TDM_POLICY_HEFT ? PLAN_HEFT : PLAN_PEFT);
	struct gplan *gp = g->policy_graph;
	if (gp) {
		gp->g = g;
		pthread_mutex_lock(&D->live_lock);
		gp->live_prev = NULL;
		gp->live_next = D->live;
		if (D->live)
			D->live->live_prev = gp;
		D->live = gp;
		pthread_mutex_unlock(&D->live_lock);
	}
}

void dispatch_tasks_ready(void *priv, struct engine_task **tasks, size_t n, int worker)
{
	struct dispatch *D = priv;
	struct eft_memo memo;
	(void)worker;
	eft_memo_init(&memo);
	if (D->hook.ready)
		D->hook.ready(D->hook.ctx, tasks, n);
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = tasks[i];
		/* The next task's cost row and commitment start loading while
		 * this one is decided. */
		if (i + 1 < n) {
			eft_ahead(&D->eft, tasks[i + 1]);
			__builtin_prefetch(&tasks[i + 1]->policy_dev, 1, 3);
			/* its record in its graph's plan, if planned */
			const struct gplan *np = tasks[i + 1]->graph->policy_graph;
			if (np) {
				__builtin_prefetch(&np->task[tasks[i + 1]->index], 1);
				__builtin_prefetch(&np->slot[tasks[i + 1]->index]);
			}
		}
		/* A task given back (device fault) was taken by the device it
		 * is committed to; it drops that commitment. */
		if (t->policy_dev != NO_DEV)
			atomic_fetch_sub_explicit(&D->taken[t->policy_dev], 1,
			                          memory_order_relaxed);
		uncommit(D, t);
		if (t->graph->policy_graph)
			place_planned(D, t->graph->policy_graph, t);
		else if (strategy_of(D, t->graph) == TDM_POLICY_EAGER)
			place_any(D, t, (double)t->queued_ns);
		else {
			double cost;
			if (!t->policy_node && D->hook.task &&
			    strategy_of(D, t->graph) == TDM_POLICY_DMDA)
				t->policy_node = D->hook.task(D->hook.ctx, t);
			int d = t->policy_node ? select_on_node(D, t, t->policy_node - 1u, &cost)
			                       : -1;
			if (d < 0)
				d = select_dmda(D, t, -1, &memo, &cost);
			push_to(D, t, d, cost, task_key(D, t));
		}
	}
}

struct any_ctx {
	const struct engine_core *core;
	unsigned worker;
};

static bool runnable_on(void *ctx, const struct engine_task *t)
{
	const struct any_ctx *c = ctx;
	return core_runnable(c->core, t, c->worker);
}

/* t sat on w's queue but w may not run it any more (unhealthy, no room):
 * dmda places it among the others. */
static void replace(struct dispatch *D, struct engine_task *t, unsigned w)
{
	double cost;
	uncommit(D, t);
	int d = select_dmda(D, t, (int)w, NULL, &cost);
	plan_note_device(D, t, w, d); /* before it is queued: then its graph may end */
	push_to(D, t, d, cost, t->policy_key);
	atomic_fetch_add_explicit(&D->replaced, 1, memory_order_relaxed);
}

/* A task a peer's queue holds that w may take instead: runnable on w, of
 * no whole-graph plan (a plan's device order is kept by its own repair),
 * not pinned to a node by the graph's policy (llm), and predicted no
 * slower on w than where dmda committed it (fairness among alike devices
 * only: a fast device's work does not move to a slow one). */
struct steal_ctx {
	struct any_ctx any;
	struct dispatch *D;
};

static bool stealable(void *ctx, const struct engine_task *t)
{
	struct steal_ctx *c = ctx;
	return !t->graph->policy_graph && !t->policy_node && runnable_on(&c->any, t) &&
	       eft_exec(&c->D->eft, t, c->any.worker) <= STEAL_SLACK * t->policy_cost;
}

/* Fair shares over a memory node's devices, not per device queue: when w
 * has work of its own but a peer on w's node holds, for a flow further
 * behind in virtual time than any w offers, a task w may run as fast, w
 * takes it. Without it, a flow whose waiting tasks dmda committed to one
 * device is not served by another that serves a flow ahead of it. An
 * idle w does not take a peer's work: dmda put it there. NULL: take from
 * w's own queue. */
static struct engine_task *steal_fair(struct dispatch *D, unsigned w)
{
	struct steal_ctx ctx = { { D->core, w }, D };
	struct fairq_head own, h;
	/* One flow waiting: every queue's head is its, at its one virtual
	 * time; none is behind. */
	if (fairq_clock_backlogged(&D->vclock) < 2 || !fairq_len_hint(&D->q[w]) ||
	    !fairq_head(&D->q[w], NULL, NULL, 0, &own))
		return NULL;
	size_t from = w, nd = atomic_load_explicit(&D->ndev, memory_order_acquire);
	for (size_t p = 0; p < nd; p++) {
		if (p == w || D->eft.node[p] != D->eft.node[w] || !fairq_len_hint(&D->q[p]))
			continue;
		/* What the filter lets w take is never served before the
		 * peer's own head: when that is not before w's, neither is it
		 * (and the filter's predictions are spared). */
		if (!fairq_head(&D->q[p], NULL, NULL, 0, &h) || !fairq_head_before(&h, &own) ||
		    !fairq_head(&D->q[p], stealable, &ctx, STEAL_SCAN, &h))
			continue;
		if (fairq_head_before(&h, &own)) {
			own = h;
			from = p;
		}
	}
	if (from == w)
		return NULL;
	struct engine_task *t = fairq_pop(&D->q[from], stealable, &ctx, STEAL_SCAN);
	if (!t)
		return NULL;
	uncommit(D, t);
	commit(D, t, w, eft_exec(&D->eft, t, w));
	atomic_fetch_add_explicit(&D->stolen, 1, memory_order_relaxed);
	return t;
}

struct engine_task *dispatch_pick_next(void *priv, unsigned w)
{
	struct dispatch *D = priv;
	struct engine_task *t;

	if (atomic_load_explicit(&D->ndev, memory_order_relaxed) > 1 && (t = steal_fair(D, w))) {
		note_taken(D, t, w);
		return t;
	}
	for (int i = 0; i < MAX_REPLACE; i++) {
		t = fairq_pop(&D->q[w], NULL, NULL, 0);
		if (!t)
			break;
		if (core_runnable(D->core, t, w)) {
			note_taken(D, t, w);
			return t;
		}
		replace(D, t, w);
	}
	if (!atomic_load_explicit(&D->any_queued, memory_order_relaxed))
		return NULL;
	struct any_ctx ctx = { D->core, w };
	t = fairq_pop(&D->q[D->cap], runnable_on, &ctx, ANY_SCAN);
	if (!t)
		return NULL;
	atomic_fetch_sub_explicit(&D->any_queued, 1, memory_order_relaxed);
	commit(D, t, w, eft_exec(&D->eft, t, w));
	note_taken(D, t, w);
	return t;
}

/* dispatch_pick_next finds a task only in w's own queue (steal_fair too
 * needs one there) or in the queue of tasks any device may run. */
bool dispatch_may_pick(void *priv, unsigned w)
{
	struct dispatch *D = priv;
	return fairq_len_hint(&D->q[w]) ||
	       atomic_load_explicit(&D->any_queued, memory_order_relaxed);
}

void dispatch_task_done(void *priv, struct engine_task *t, unsigned w)
{
	struct dispatch *D = priv;
	atomic_fetch_sub_explicit(&D->taken[w], 1, memory_order_relaxed);
	uncommit(D, t);
	/* The flow was charged its predicted time; it owes its measured.
	 * Without cost models the charge is a flat 1, not a time: nothing to
	 * settle. */
	if (D->eft.prof && t->end_ns >= t->start_ns && t->start_ns) {
		const struct engine_flow *fl = t->graph->flow;
		struct fairq_flow *ff = fl ? fl->policy_slot : NULL;
		fairq_settle(&D->vclock, ff ? ff[0].share : &D->orphan_share, fl, t,
		             (double)(t->end_ns - t->start_ns));
	}
	if (t->graph->policy_graph)
		plan_task_done(D, t->graph->policy_graph, t, w);
}

/* A planned task that will not run: done at once, where it was planned
 * (no time), and its device's next planned task may go. */
void dispatch_task_skipped(void *priv, struct engine_task *t)
{
	struct dispatch *D = priv;
	struct gplan *gp = t->graph->policy_graph;
	if (!gp)
		return;
	uint32_t v = t->index;
	pthread_mutex_lock(&gp->lock);
	gp->task[v].picked = true;
	if (gp->task[v].state != TASK_DONE) {
		if (gp->task[v].state == TASK_WAITING)
			gp->released++;
		gp->task[v].state = TASK_DONE;
		gp->done++;
	}
	uint32_t d = gp->slot[v].dev;
	double at = t->start_ns > gp->base_ns ? (double)(t->start_ns - gp->base_ns) : 0;
	gp->slot[v] = (struct plan_slot){ d, at, at };
	struct engine_task *next = d < gp->ndev ? seq_unpark(D, gp, t->graph, d) : NULL;
	pthread_mutex_unlock(&gp->lock);
	if (next)
		seq_queue(D, next, d);
}

void dispatch_graph_finished(void *priv, struct engine_graph *g)
{
	struct dispatch *D = priv;
	struct gplan *gp = g->policy_graph;
	if (gp) {
		pthread_mutex_lock(&D->live_lock);
		if (gp->live_prev)
			gp->live_prev->live_next = gp->live_next;
		else
			D->live = gp->live_next;
		if (gp->live_next)
			gp->live_next->live_prev = gp->live_prev;
		pthread_mutex_unlock(&D->live_lock);
	}
	gplan_free(gp);
	g->policy_graph = NULL;
}

size_t dispatch_peek(void *priv, unsigned w, struct engine_task **out, size_t max)
{
	struct dispatch *D = priv;
	return fairq_peek(&D->q[w], out, max);
}

void dispatch_set_graph_hook(void *priv, const struct dispatch_graph_hook *h)
{
	struct dispatch *D = priv;
	D->hook = *h;
}

void *dispatch_graph_hook_ctx(void *priv)
{
	struct dispatch *D = priv;
	return D->hook.graph ? D->hook.ctx : NULL;
}

void dispatch_stats(void *priv, struct dispatch_stats *out)
{
	struct dispatch *D = priv;
	out->plans = atomic_load(&D->plans);
	out->plan_failures = atomic_load(&D->plan_failures);
	out->drifts = atomic_load(&D->drifts);
	out->repairs = atomic_load(&D->repairs);
	out->repair_failures = atomic_load(&D->repair_failures);
	out->replaced = atomic_load(&D->replaced);
	out->stolen = atomic_load(&D->stolen);
}

int dispatch_planned_device(struct engine_graph *g, uint32_t i)
{
	struct gplan *gp = g->policy_graph;
	if (!gp || i >= gp->n)
		return -1;
	pthread_mutex_lock(&gp->lock);
	int d = (int)gp->slot[i].dev;
	pthread_mutex_unlock(&gp->lock);
	return d;
}

/* ---- elastic devices ---- */

static void replan_all(struct dispatch *D, int leaving);

/* A device joined: the tasks queued on the others are placed again by
 * dmda, which now weighs the new one (nothing queued, nothing committed),
 * so that it starts on the work already waiting rather than on the next
 * graphs only. Tasks of planned graphs keep their planned device (and
 * their order there). The core keeps prefetches off meanwhile. */
static void rebalance(struct dispatch *D, unsigned w)
{
	struct engine_task **held = NULL;
	size_t n = 0, cap = 0;
	for (uint32_t d = 0; d < w; d++) {
		if (!dev_active(D, d))
			continue;
		struct engine_task *t;
		while ((t = fairq_pop(&D->q[d], NULL, NULL, 0)) != NULL) {
			if (n == cap) {
				size_t ncap = cap ? 2 * cap : 64;
				struct engine_task **m = realloc(held, ncap * sizeof(*m));
				if (!m) {
					/* No memory to move more: it stays where it was. */
					enqueue(D, d, t,
					        t->graph->policy_graph ? 0 : task_class(D, t),
					        t->policy_key, t->policy_cost);
					break;
				}
				held = m;
				cap = ncap;
			}
			held[n++] = t;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct engine_task *t = held[i];
		if (t->graph->policy_graph) {
			enqueue(D, t->policy_dev, t, 0, t->policy_key, t->policy_cost);
			continue;
		}
		double cost;
		uncommit(D, t);
		int d = select_dmda(D, t, -1, NULL, &cost);
		push_to(D, t, d, cost, t->policy_key);
	}
	free(held);
}

void dispatch_device_added(void *priv, unsigned w)
{
	struct dispatch *D = priv;
	if (w < atomic_load(&D->ndev) || w >= D->cap)
		return; /* resumed: runnable again, nothing to set up */
	atomic_store_explicit(&D->taken[w], 0, memory_order_relaxed);
	D->dev_ready[w] = 0;
	eft_add_device(&D->eft, D->devices, w);
	/* Counted once its slots are ready: dmda and the next plans use it. */
	atomic_store_explicit(&D->ndev, (size_t)w + 1, memory_order_release);
	rebalance(D, w);
	replan_all(D, -1);
}

/* Every task in w's queue goes where dmda places it among the others. */
static void requeue_device(struct dispatch *D, unsigned w)
{
	struct engine_task *t;
	while ((t = fairq_pop(&D->q[w], NULL, NULL, 0)) != NULL)
		replace(D, t, w);
}

/* A device joined (leaving < 0) or leaves (leaving = it): gp is repaired
 * for the devices there are now. The tasks it released but holds back
 * (parked: committed to their planned device, not queued yet) -- all of
 * them when a device joined, those parked on the leaving one otherwise --
 * are taken back into the repair, which plans them with the tasks not
 * released yet, from now on, around the tasks done, taken or queued
 * (repair(), the drift path); then they are placed as the new plan says.
 * Caller holds live_lock (the graph cannot end meanwhile). */
static void replan(struct dispatch *D, struct gplan *gp, int leaving)
{
	struct engine_graph *g = gp->g;
	uint32_t *back = malloc(sizeof(*back) * (gp->n ? gp->n : 1));
	uint32_t nback = 0;
	bool planned_there = leaving < 0;

	pthread_mutex_lock(&gp->lock);
	for (uint32_t v = 0; v < gp->n && back; v++) {
		if (gp->task[v].parked && (leaving < 0 || gp->task[v].dev == (uint32_t)leaving)) {
			struct engine_task *t = &g->tasks[v];
			gp->task[v].parked = false;
			gp->task[v].state = TASK_WAITING;
			gp->released--;
			gp->task[v].dev = NO_DEV;
			uncommit(D, t);
			back[nback++] = v;
		}
		planned_there |=
		        gp->task[v].state == TASK_WAITING && gp->slot[v].dev == (uint32_t)leaving;
	}
	if (planned_there && gp->released < gp->n)
		repair(D, g, gp, clock_now(D->clock), leaving);
	pthread_mutex_unlock(&gp->lock);
	for (uint32_t i = 0; i < nback; i++)
		place_planned(D, gp, &g->tasks[back[i]]);
	free(back);
	seq_unpark_all(D, gp, g);
}

static void replan_all(struct dispatch *D, int leaving)
{
	pthread_mutex_lock(&D->live_lock);
	for (struct gplan *gp = D->live; gp; gp = gp->live_next)
		if (leaving < 0 || (uint32_t)leaving < gp->ndev)
			replan(D, gp, leaving);
	pthread_mutex_unlock(&D->live_lock);
}

void dispatch_device_draining(void *priv, unsigned w)
{
	struct dispatch *D = priv;
	if (w >= atomic_load(&D->ndev))
		return;
	requeue_device(D, w);
	replan_all(D, (int)w);
}

void dispatch_device_removed(void *priv, unsigned w)
{
	struct dispatch *D = priv;
	if (w >= atomic_load(&D->ndev))
		return;
	/* A task queued there in the instant the device left (a placement
	 * that saw it still ACTIVE) is not stranded. */
	requeue_device(D, w);
}
