/* Ranks: HEFT's upward and downward ranks (Topcuoglu, Hariri, Wu 2002,
 * eq. 7-8) and PEFT's optimistic cost table (Arabnejad, Barbosa 2014,
 * eq. 4), on mean costs over the devices that can run a task and mean
 * communication over ordered pairs of distinct devices. */
#include <stdlib.h>

#include "placement/plan_internal.h"

void plan_ranks_up(struct plan_ws *ws, const struct plan_dag *g, double *rank_u)
{
	for (uint32_t i = g->n; i-- > 0;) {
		uint32_t v = ws->order[i];
		double best = 0;
		for (uint32_t k = g->succ_off ? g->succ_off[v] : 0;
		     k < (g->succ_off ? g->succ_off[v + 1] : 0); k++) {
			double r = plan_comm_mean(ws, plan_edge_data(g, k)) + rank_u[g->succ[k]];
			if (r > best)
				best = r;
		}
		rank_u[v] = ws->wmean[v] + best;
	}
}

void plan_ranks_down(struct plan_ws *ws, const struct plan_dag *g, double *rank_d)
{
	for (uint32_t i = 0; i < g->n; i++) {
		uint32_t v = ws->order[i];
		double best = 0;
		for (uint32_t k = ws->pred_off[v]; k < ws->pred_off[v + 1]; k++) {
			uint32_t u = ws->pred[k];
			double r = rank_d[u] + ws->wmean[u] + plan_comm_mean(ws, ws->pred_data[k]);
			if (r > best)
				best = r;
		}
		rank_d[v] = best;
	}
}

/* OCT(v, d) = max over successors s of min over devices w that can run s of
 * OCT(s, w) + cost(s, w) + (w == d ? 0 : c-bar(v, s)). With
 * M(s) = min over w of OCT(s, w) + cost(s, w), the inner minimum is
 * min(M(s) + c-bar, OCT(s, d) + cost(s, d)): O(p) per edge. */
void plan_ranks_oct(struct plan_ws *ws, const struct plan_dag *g, double *oct)
{
	/* OCT(v, d) depends on d through d's costs only: one entry per cost
	 * column. M, a minimum, is taken over the devices. */
	unsigned nd = ws->ndev, nc = ws->ncols;
	double *M = ws->aux;
	for (uint32_t i = g->n; i-- > 0;) {
		uint32_t v = ws->order[i];
		if (i >= 2 && g->succ_off) {
			/* Two tasks ahead, the successors' rows are on their way
			 * (on big graphs each is a cache miss). */
			uint32_t u = ws->order[i - 2];
			for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++) {
				size_t at = (size_t)g->succ[k] * nc;
				for (unsigned d = 0; d < nc; d += 8) {
					__builtin_prefetch(oct + at + d);
					__builtin_prefetch(g->cost + at + d);
				}
			}
		}
		double *row = oct + (size_t)v * nc;
		for (unsigned d = 0; d < nc; d++)
			row[d] = 0;
		for (uint32_t k = g->succ_off ? g->succ_off[v] : 0;
		     k < (g->succ_off ? g->succ_off[v + 1] : 0); k++) {
			uint32_t s = g->succ[k];
			const double *os = oct + (size_t)s * nc, *cs = g->cost + (size_t)s * nc;
			double via = M[s] + plan_comm_mean(ws, plan_edge_data(g, k));
			/* Selects, not branches: which way each goes depends on
			 * the data. */
			for (unsigned d = 0; d < nc; d++) {
				double w = plan_allowed(cs[d]) ? os[d] + cs[d] : INFINITY;
				double t = w < via ? w : via;
				row[d] = t > row[d] ? t : row[d];
			}
		}
		const double *c = g->cost + (size_t)v * nc;
		double m = INFINITY;
		for (unsigned d = 0; d < nd; d++) {
			unsigned x = plan_col(g, d);
			if (plan_allowed(c[x]) && row[x] + c[x] < m)
				m = row[x] + c[x];
		}
		M[v] = m;
	}
}

static int with_prep(const struct plan_dag *g, const struct plan_machine *m, double *out, int which)
{
	if (!out)
		return -TDM_EINVAL;
	struct plan_ws *ws = plan_ws_new();
	if (!ws)
		return -TDM_ENOMEM;
	int err = plan_prep(ws, g, m, NULL, 0);
	if (!err) {
		switch (which) {
		case 0: plan_ranks_up(ws, g, out); break;
		case 1: plan_ranks_down(ws, g, out); break;
		default: plan_ranks_oct(ws, g, out); break;
		}
	}
	plan_ws_free(ws);
	return err;
}

int plan_rank_upward(const struct plan_dag *g, const struct plan_machine *m, double *rank_u)
{
	return with_prep(g, m, rank_u, 0);
}

int plan_rank_downward(const struct plan_dag *g, const struct plan_machine *m, double *rank_d)
{
	return with_prep(g, m, rank_d, 1);
}

int plan_oct(const struct plan_dag *g, const struct plan_machine *m, double *oct)
{
	return with_prep(g, m, oct, 2);
}
