/* Ranks: HEFT's upward and downward ranks (Topcuoglu, Hariri, Wu 2002,
 * eq. 7-8) and PEFT's optimistic cost table (Arabnejad, Barbosa 2014,
 * eq. 4), on mean costs over the devices that can run a task and mean
 * communication over ordered pairs of distinct devices. */
#include <stdlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* How many tasks ahead plan_ranks_oct loads the successors' rows. */
#define OCT_AHEAD 4

/* One edge to a successor s (its OCT row os, cost row cs, via: M(s) plus
 * the edge's mean communication) into v's row: per column d,
 * row[d] = max(row[d], min(w, via)), w = os[d] + cs[d] where s may run
 * on d, else INFINITY. Selects, not branches: which way each goes depends
 * on the data. With SSE2 two columns at a time, the same doubles:
 * minpd(a, b) is a < b ? a : b, maxpd(a, b) a > b ? a : b, and w >= 0
 * where allowed. */
static inline void oct_edge(double *row, const double *os, const double *cs, double via,
                            unsigned nc)
{
	unsigned d = 0;
#ifdef __SSE2__
	const __m128d inf = _mm_set1_pd(INFINITY), zero = _mm_setzero_pd(), vv = _mm_set1_pd(via);
	for (; d + 2 <= nc; d += 2) {
		__m128d c = _mm_loadu_pd(cs + d);
		__m128d allowed = _mm_and_pd(_mm_cmpge_pd(c, zero), _mm_cmplt_pd(c, inf));
		__m128d w = _mm_max_pd(_mm_add_pd(_mm_loadu_pd(os + d), c),
		                       _mm_andnot_pd(allowed, inf));
		_mm_storeu_pd(row + d, _mm_max_pd(_mm_min_pd(w, vv), _mm_loadu_pd(row + d)));
	}
#endif
	for (; d < nc; d++) {
		double w = plan_allowed(cs[d]) ? os[d] + cs[d] : INFINITY;
		double t = w < via ? w : via;
		row[d] = t > row[d] ? t : row[d];
	}
}

/* M(v): the least OCT(v, d) + cost(v, d) over the devices d that can run
 * v (INFINITY if none), from v's OCT row and cost row (per column: device
 * d's is col[d], or d without col). A minimum, so taken in any order; with
 * col over the columns some device reads (used[nused]), once each. */
static inline double oct_min(const double *row, const double *c, const uint32_t *col,
                             const uint32_t *used, unsigned nused, unsigned nd)
{
	double m = INFINITY;
	unsigned d = 0;
	if (col) {
		for (unsigned i = 0; i < nused; i++) {
			unsigned x = used[i];
			double w = plan_allowed(c[x]) ? row[x] + c[x] : INFINITY;
			m = w < m ? w : m;
		}
		return m;
	}
#ifdef __SSE2__
	/* as oct_edge: INFINITY where not allowed, else row + c (>= 0) */
	const __m128d inf = _mm_set1_pd(INFINITY), zero = _mm_setzero_pd();
	__m128d lo = inf;
	for (; d + 2 <= nd; d += 2) {
		__m128d cd = _mm_loadu_pd(c + d);
		__m128d allowed = _mm_and_pd(_mm_cmpge_pd(cd, zero), _mm_cmplt_pd(cd, inf));
		__m128d w = _mm_max_pd(_mm_add_pd(_mm_loadu_pd(row + d), cd),
		                       _mm_andnot_pd(allowed, inf));
		lo = _mm_min_pd(w, lo);
	}
	double l[2];
	_mm_storeu_pd(l, lo);
	m = l[0] < l[1] ? l[0] : l[1];
#endif
	for (; d < nd; d++) {
		double w = plan_allowed(c[d]) ? row[d] + c[d] : INFINITY;
		m = w < m ? w : m;
	}
	return m;
}

/* OCT(v, d) = max over successors s of min over devices w that can run s of
 * OCT(s, w) + cost(s, w) + (w == d ? 0 : c-bar(v, s)). With
 * M(s) = min over w of OCT(s, w) + cost(s, w), the inner minimum is
 * min(M(s) + c-bar, OCT(s, d) + cost(s, d)): O(p) per edge. */
void plan_ranks_oct(struct plan_ws *ws, const struct plan_dag *g, double *oct, double *mean)
{
	/* OCT(v, d) depends on d through d's costs only: one entry per cost
	 * column. M, a minimum, is taken over the devices. */
	unsigned nd = ws->ndev, nc = ws->ncols, nused = 0;
	double *M = ws->aux;
	/* With shared columns, the ones some device reads (M's candidates). */
	uint32_t *used = ws->col_used;
	for (unsigned d = 0; g->col && d < nd; d++) {
		unsigned k = 0;
		while (k < nused && used[k] != g->col[d])
			k++;
		if (k == nused)
			used[nused++] = g->col[d];
	}
	for (uint32_t i = g->n; i-- > 0;) {
		uint32_t v = ws->order[i];
		if (i >= OCT_AHEAD && g->succ_off) {
			/* Some tasks ahead, the successors' rows are on their
			 * way (on big graphs each is a cache miss). */
			uint32_t u = ws->order[i - OCT_AHEAD];
			/* its own rows too: the cost row read, the OCT row
			 * written (in order, but behind all that traffic the
			 * hardware does not see them coming) */
			for (unsigned d = 0; d < nc; d += 8) {
				__builtin_prefetch(g->cost + (size_t)u * nc + d);
				__builtin_prefetch(oct + (size_t)u * nc + d, 1);
			}
			__builtin_prefetch(g->cost + (size_t)u * nc + nc - 1);
			__builtin_prefetch(oct + (size_t)u * nc + nc - 1, 1);
			for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++) {
				size_t at = (size_t)g->succ[k] * nc;
				__builtin_prefetch(&M[g->succ[k]]);
				for (unsigned d = 0; d < nc; d += 8) {
					__builtin_prefetch(oct + at + d);
					__builtin_prefetch(g->cost + at + d);
				}
				/* rows need not start a cache line */
				__builtin_prefetch(oct + at + nc - 1);
				__builtin_prefetch(g->cost + at + nc - 1);
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
			oct_edge(row, os, cs, via, nc);
		}
		M[v] = oct_min(row, g->cost + (size_t)v * nc, g->col, used, nused, nd);
		if (mean) {
			unsigned k;
			double sum =
			        plan_sum_allowed(g->cost + (size_t)v * nc, row, g->col, nd, &k);
			mean[v] = sum / k;
		}
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
		default: plan_ranks_oct(ws, g, out, NULL); break;
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
