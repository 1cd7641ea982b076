/* Plans against their execution: a random graph, a machine of 2 to 16
 * devices with or without communication, the planner's own makespan
 * (plan_schedule on the true costs, as the heft/peft policies plan it at
 * submission), the makespan the engine reaches executing that plan in the
 * simulator (tandemd --simulate), and a plain critical-path list
 * scheduler's. Shared by tests/unit/test_plan_exec.c and
 * tests/bench/bench_plan_exec.c. Time in ns throughout. */
#ifndef TDM_TESTS_PLAN_EXEC_HARNESS_H
#define TDM_TESTS_PLAN_EXEC_HARNESS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement/plan.h"
#include "policies/policy.h"
#include "sim/sim.h"
#include "workload/workload.h"

/* The simulator's default units for abstract workloads. */
#define PE_UNIT_NS 1e6
#define PE_UNIT_BYTES 1e6

enum pe_gen { PE_LAYERED = 0, PE_RANDOM };

struct pe_case {
	enum pe_gen gen;
	uint32_t n;
	double p; /* layered: edge probability */
	enum wl_layered_costs costs; /* layered */
	double beta; /* random: heterogeneity */
	double alpha; /* random: shape (0: 1) */
	uint32_t out_degree; /* random (0: 3) */
	double ccr;
	unsigned ndev; /* 2 .. 16 */
	bool comm; /* devices on memory nodes of their own, links that cost */
	uint64_t seed;
};

/* Without communication: ndev - 1 cores and an accelerator behind a link
 * that costs nothing. With: one core and ndev - 1
 * accelerators, each on its own node, every link 1 byte/ns after 20 us
 * (a data unit costs as much as a cost unit). */
static inline void pe_machine(struct machine *m, unsigned ndev, bool comm)
{
	machine_init(m);
	snprintf(m->name, sizeof(m->name), "%s%u", comm ? "comm" : "free", ndev);
	m->ndevices = ndev;
	m->nnodes = comm ? ndev : 2;
	for (unsigned d = 0; d < ndev; d++) {
		struct machine_device *md = &m->dev[d];
		bool acc = comm ? d > 0 : d == ndev - 1;
		snprintf(md->name, sizeof(md->name), acc ? "acc%u" : "cpu%u", d);
		/* A model of its own: the engine predicts per model, and the
		 * random graphs give every device costs of its own. */
		snprintf(md->model, sizeof(md->model), acc ? "acc%u" : "cpu%u", d);
		md->kind = acc ? TDM_DEV_GPU : TDM_DEV_CPU;
		md->node = (uint16_t)(!acc ? 0 : comm ? d : 1);
		md->mem_bytes = acc ? 1ull << 36 : 0;
		md->gemm_gflops = 100;
		md->mem_gbps = 10;
		md->launch_ns = 0;
	}
	for (unsigned a = 0; a < m->nnodes; a++)
		for (unsigned b = 0; b < m->nnodes; b++)
			m->link[a][b] = (struct cal_link){ .gbps = comm ? 1 : 99999,
				                           .latency_ns = comm && a != b ? 20000 : 0,
				                           .measured = true };
}

/* 0, or the generator's error in err. */
static inline int pe_workload(const struct pe_case *c, struct workload *w, char *err, size_t len)
{
	if (c->gen == PE_LAYERED) {
		struct wl_layered_params p = {
			.n = c->n, .p = c->p, .costs = c->costs, .ccr = c->ccr, .seed = c->seed
		};
		return wl_gen_layered(&p, w, err, len);
	}
	struct wl_random_params p = { .n = c->n,
		                      .ccr = c->ccr,
		                      .alpha = c->alpha > 0 ? c->alpha : 1,
		                      .out_degree = c->out_degree ? c->out_degree : 3,
		                      .beta = c->beta,
		                      .ndev = c->ndev,
		                      .seed = c->seed };
	return wl_gen_random(&p, w, err, len);
}

/* The workload as the planner sees it on machine m, in ns and bytes. */
struct pe_dag {
	struct wl_dag d;
	uint16_t node[MACHINE_MAX_DEVICES];
	double lat[MACHINE_MAX_NODES * MACHINE_MAX_NODES];
	double inv_bw[MACHINE_MAX_NODES * MACHINE_MAX_NODES];
	struct plan_machine pm;
};

static inline int pe_dag(const struct machine *m, const struct workload *w, struct pe_dag *x)
{
	unsigned nd = m->ndevices, nn = m->nnodes;
	int rc = wl_to_dag(w, nd, NULL, &x->d);
	if (rc)
		return rc;
	for (uint32_t v = 0; v < w->ntasks; v++)
		for (unsigned k = 0; k < nd; k++) {
			double c = w->dev_cost ? w->dev_cost[(size_t)v * w->ndev_cost + k]
			                       : w->tasks[v].cost;
			x->d.cost[(size_t)v * nd + k] = c < 0 ? -1 : c * PE_UNIT_NS;
		}
	for (uint32_t k = 0; k < w->nedges; k++)
		x->d.edge_data[k] *= PE_UNIT_BYTES;
	for (unsigned d = 0; d < nd; d++)
		x->node[d] = m->dev[d].node;
	for (unsigned a = 0; a < nn; a++)
		for (unsigned b = 0; b < nn; b++) {
			const struct cal_link *l = &m->link[a][b];
			x->lat[a * nn + b] = a == b ? 0 : l->latency_ns;
			x->inv_bw[a * nn + b] = a == b ? 0 : 1.0 / l->gbps;
		}
	x->pm = (struct plan_machine){
		.ndev = nd, .node = x->node, .nnodes = nn, .lat = x->lat, .inv_bw = x->inv_bw
	};
	return 0;
}

/* The plan heft (PLAN_HEFT) or peft makes of the whole graph: its
 * makespan, or -1 if the planner fails. */
static inline double pe_plan(const struct pe_dag *x, enum plan_method method)
{
	struct plan_ws *ws = plan_ws_new();
	struct plan_slot *s = calloc(x->d.g.n ? x->d.g.n : 1, sizeof(*s));
	struct plan_opts o = { .method = method };
	double mk = -1;
	if (!ws || !s || plan_schedule(&x->d.g, &x->pm, &o, ws, s, &mk))
		mk = -1;
	free(s);
	plan_ws_free(ws);
	return mk;
}

/* The simulated makespan under policy, or -1 (with the reason in err). */
static inline double pe_exec(const struct machine *m, const struct workload *w, const char *policy,
                             char *err, size_t len)
{
	struct sim_opts o = { .policy = policy,
		              .unit_ns = PE_UNIT_NS,
		              .unit_bytes = PE_UNIT_BYTES };
	struct sim_result r;
	if (sim_run(m, w, &o, &r, err, len))
		return -1;
	double mk = r.fallback ? -1 : r.makespan_ns;
	if (r.fallback)
		snprintf(err, len, "%s: the watchdog replaced the policy", policy);
	sim_result_free(&r);
	return mk;
}

/* A plain critical-path list scheduler (Graham's list scheduling with
 * HEFT's upward ranks as priorities): whenever a device is free, it starts
 * the ready task of highest rank (all predecessors finished) that it can
 * run; a task waits on its device for its inputs. Devices are looked at
 * in the order they come free (ties: lowest index). No insertion, no look
 * ahead. Its makespan, or -1. */
static inline double pe_list_cp(const struct pe_dag *x)
{
	const struct plan_dag *g = &x->d.g;
	const struct plan_machine *m = &x->pm;
	uint32_t n = g->n, nd = m->ndev;
	double *rank = malloc((n ? n : 1) * sizeof(double));
	double *fin = malloc((n ? n : 1) * sizeof(double));
	double *dev_free = calloc(nd, sizeof(double));
	uint32_t *dev_of = malloc((n ? n : 1) * sizeof(uint32_t));
	uint32_t *left = calloc(n ? n : 1, sizeof(uint32_t));
	uint32_t *ready = malloc((n ? n : 1) * sizeof(uint32_t));
	uint32_t *pred_off = calloc(n + 1, sizeof(uint32_t));
	uint32_t ne = g->succ_off ? g->succ_off[n] : 0;
	uint32_t *pred = malloc((ne ? ne : 1) * sizeof(uint32_t));
	double *pdata = malloc((ne ? ne : 1) * sizeof(double));
	double mk = -1;
	if (!rank || !fin || !dev_free || !dev_of || !left || !ready || !pred_off || !pred ||
	    !pdata || plan_rank_upward(g, m, rank))
		goto out;
	for (uint32_t k = 0; k < ne; k++)
		pred_off[g->succ[k] + 1]++;
	for (uint32_t v = 0; v < n; v++) {
		left[v] = pred_off[v + 1];
		pred_off[v + 1] += pred_off[v];
	}
	{
		uint32_t *at = calloc(n ? n : 1, sizeof(uint32_t));
		if (!at)
			goto out;
		for (uint32_t u = 0; u < n; u++)
			for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++) {
				uint32_t v = g->succ[k], i = pred_off[v] + at[v]++;
				pred[i] = u;
				pdata[i] = g->edge_data ? g->edge_data[k] : 0;
			}
		free(at);
	}
	/* Events: tasks end; a device is free again at its dev_free. The ready
	 * set is every task whose predecessors ended by the time looked at. */
	uint32_t nready = 0, done = 0;
	bool *running = calloc(n ? n : 1, sizeof(bool));
	if (!running)
		goto out;
	for (uint32_t v = 0; v < n; v++)
		if (!left[v])
			ready[nready++] = v;
	double now = 0;
	mk = 0;
	while (done < n) {
		/* Start what can start now, devices in the order they came free. */
		for (;;) {
			uint32_t bd = UINT32_MAX;
			for (uint32_t d = 0; d < nd; d++)
				if (dev_free[d] <= now &&
				    (bd == UINT32_MAX || dev_free[d] < dev_free[bd]))
					bd = d;
			if (bd == UINT32_MAX || !nready)
				break;
			uint32_t bi = UINT32_MAX;
			for (uint32_t i = 0; i < nready; i++) {
				uint32_t v = ready[i];
				if (!(g->cost[(size_t)v * nd + bd] >= 0))
					continue;
				if (bi == UINT32_MAX || rank[v] > rank[ready[bi]] ||
				    (rank[v] == rank[ready[bi]] && v < ready[bi]))
					bi = i;
			}
			if (bi == UINT32_MAX) {
				dev_free[bd] = INFINITY; /* nothing it can run now: wait */
				continue;
			}
			uint32_t v = ready[bi];
			ready[bi] = ready[--nready];
			double s = now;
			for (uint32_t k = pred_off[v]; k < pred_off[v + 1]; k++) {
				uint32_t u = pred[k];
				unsigned a = m->node[dev_of[u]], b = m->node[bd];
				double c = a == b ? 0
				                  : m->lat[a * m->nnodes + b] +
				                            pdata[k] * m->inv_bw[a * m->nnodes + b];
				s = fmax(s, fin[u] + c);
			}
			fin[v] = s + g->cost[(size_t)v * nd + bd];
			dev_of[v] = bd;
			dev_free[bd] = fin[v];
			running[v] = true;
		}
		/* Next: the earliest end of a running task. */
		double next = INFINITY;
		for (uint32_t v = 0; v < n; v++)
			if (running[v] && fin[v] < next)
				next = fin[v];
		if (next == INFINITY) {
			mk = -1; /* nothing runs and nothing can start */
			break;
		}
		now = next;
		for (uint32_t d = 0; d < nd; d++)
			if (dev_free[d] == INFINITY)
				dev_free[d] = now;
		for (uint32_t v = 0; v < n; v++) {
			if (!running[v] || fin[v] > now)
				continue;
			running[v] = false;
			done++;
			mk = fmax(mk, fin[v]);
			for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
				if (--left[g->succ[k]] == 0)
					ready[nready++] = g->succ[k];
		}
	}
	free(running);
out:
	free(rank);
	free(fin);
	free(dev_free);
	free(dev_of);
	free(left);
	free(ready);
	free(pred_off);
	free(pred);
	free(pdata);
	return mk;
}

/* A line naming the case, for messages and bench keys. */
static inline void pe_name(const struct pe_case *c, char *buf, size_t len)
{
	if (c->gen == PE_LAYERED)
		snprintf(buf, len, "layered n=%u p=%g costs=%s ccr=%g m=%u %s seed=%llu", c->n,
		         c->p, c->costs == WL_LAYERED_BIMODAL ? "bimodal" : "uniform", c->ccr,
		         c->ndev, c->comm ? "comm" : "free", (unsigned long long)c->seed);
	else
		snprintf(buf, len, "random n=%u alpha=%g out=%u beta=%g ccr=%g m=%u %s seed=%llu",
		         c->n, c->alpha > 0 ? c->alpha : 1, c->out_degree ? c->out_degree : 3,
		         c->beta, c->ccr, c->ndev, c->comm ? "comm" : "free",
		         (unsigned long long)c->seed);
}

#endif
