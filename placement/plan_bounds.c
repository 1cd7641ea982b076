/* Lower bounds on the makespan: the critical path on best costs with free
 * communication, and the area bound, the LP relaxation of assigning work to
 * devices (tasks with equal cost vectors grouped in classes, devices with
 * equal cost columns in kinds):
 *
 *   min T  s.t.  sum_k x[c][k] = n_c                  for each class c
 *                k_k T - sum_c cost[c][k] x[c][k] >= 0 for each kind k
 *                x >= 0 (only where class c can run on kind k)
 *
 * Its dual is max over y >= 0 with sum_k k_k y_k = 1 of
 *   f(y) = sum_c n_c min_k cost[c][k] y_k,
 * and every such y gives a lower bound f(y) (weak duality). The value
 * returned is always f(y) evaluated here, in double, for the y GLPK finds,
 * so it is a true bound whatever the solver's tolerances:
 *   - small LPs (few classes times kinds) are solved whole with GLPK's
 *     simplex, y from its row duals;
 *   - big ones (every task its own class, as with measured costs) by
 *     Kelley's cutting planes on the dual: f is concave and piecewise
 *     linear through the origin, so each evaluation gives a cut
 *     t <= g . y, with g the work each kind gets when every class goes to
 *     its cheapest kind under y; a small master LP over (y, t) gives the
 *     next y and an upper bound, until the two meet (or an iteration
 *     limit, the bound then being the best f found); the next y is
 *     smoothed towards the best one found so far (Wentges). */
#include <glpk.h>
#include <stdlib.h>
#include <string.h>

#include "placement/plan_internal.h"

/* The whole LP up to this many x columns, cutting planes beyond. */
#define AREA_DIRECT_MAX_COLS 4096
#define KELLEY_MAX_ITERS 500
#define KELLEY_GAP 1e-9
/* Wentges smoothing: the next point is this much of the best one so far
 * plus the rest of the master's, which tames Kelley's zigzag (500 plain
 * iterations stop at a gap of 3e-8 on 20,000 classes and 17 kinds; smoothed
 * at 0.9, 1e-9 takes about 200). */
#define KELLEY_SMOOTH 0.9

static double best_cost(const double *c, unsigned nd)
{
	double b = INFINITY;
	for (unsigned d = 0; d < nd; d++)
		if (plan_allowed(c[d]) && c[d] < b)
			b = c[d];
	return b;
}

static void critical_path(struct plan_ws *ws, const struct plan_dag *g, unsigned nd, double *cp)
{
	double *top = ws->aux; /* longest path ending at v, v included */
	double best = 0;
	for (uint32_t i = 0; i < g->n; i++) {
		uint32_t v = ws->order[i];
		double t = 0;
		for (uint32_t k = ws->pred_off[v]; k < ws->pred_off[v + 1]; k++)
			t = plan_maxd(t, top[ws->pred[k]]);
		double b = INFINITY;
		for (unsigned d = 0; d < nd; d++) {
			double c = plan_cost(g, nd, v, d);
			if (plan_allowed(c) && c < b)
				b = c;
		}
		top[v] = t + b;
		best = plan_maxd(best, top[v]);
	}
	*cp = best;
}

static uint64_t hash_row(const double *r, unsigned nd)
{
	uint64_t h = 1469598103934665603ull;
	const unsigned char *p = (const unsigned char *)r;
	for (size_t i = 0; i < nd * sizeof(double); i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* f(y) for y clipped to >= 0 and scaled to sum_k k_k y_k = 1 (y is changed);
 * g[k] (may be NULL) receives the work each kind gets when every class goes
 * to its cheapest kind under y, so that f(y) = g . y. -1 when y is 0. */
static double eval_dual(uint32_t nc, unsigned nk, const double *cost, const double *cnt,
                        const double *kk, double *y, double *g)
{
	double norm = 0;
	for (unsigned k = 0; k < nk; k++) {
		y[k] = y[k] > 0 ? y[k] : 0;
		norm += kk[k] * y[k];
	}
	if (!(norm > 0) || !isfinite(norm))
		return -1;
	for (unsigned k = 0; k < nk; k++) {
		y[k] /= norm;
		if (g)
			g[k] = 0;
	}
	double sum = 0;
	for (uint32_t c = 0; c < nc; c++) {
		const double *w = cost + (size_t)c * nk;
		double m = INFINITY;
		unsigned arg = 0;
		for (unsigned k = 0; k < nk; k++)
			if (w[k] >= 0 && w[k] * y[k] < m) {
				m = w[k] * y[k];
				arg = k;
			}
		sum += cnt[c] * m;
		if (g)
			g[arg] += cnt[c] * w[arg];
	}
	return sum;
}

/* Kelley's cutting planes on the dual (see the top); cost scaled so that
 * the master LP is well conditioned. Returns the best f found, or -1. */
static double area_kelley(uint32_t nc, unsigned nk, const double *cost, const double *cnt,
                          const double *kk)
{
	double *y = malloc(nk * sizeof(double)), *g = malloc(nk * sizeof(double));
	double *yb = malloc(nk * sizeof(double));
	int *ind = malloc((nk + 2) * sizeof(int));
	double *val = malloc((nk + 2) * sizeof(double));
	double best = -1;
	if (!y || !g || !yb || !ind || !val)
		goto out;
	double scale = 0, total = 0;
	for (size_t i = 0; i < (size_t)nc * nk; i++)
		scale = plan_maxd(scale, cost[i]);
	for (unsigned k = 0; k < nk; k++)
		total += kk[k];
	if (!(scale > 0)) {
		best = 0;
		goto out;
	}

	glp_prob *lp = glp_create_prob();
	glp_set_obj_dir(lp, GLP_MAX);
	glp_add_cols(lp, (int)nk + 1); /* y_1..y_nk, t */
	for (unsigned k = 0; k < nk; k++)
		glp_set_col_bnds(lp, (int)k + 1, GLP_LO, 0, 0);
	glp_set_col_bnds(lp, (int)nk + 1, GLP_FR, 0, 0);
	glp_set_obj_coef(lp, (int)nk + 1, 1);
	glp_add_rows(lp, 1);
	for (unsigned k = 0; k < nk; k++) {
		ind[k + 1] = (int)k + 1;
		val[k + 1] = kk[k];
	}
	glp_set_mat_row(lp, 1, (int)nk, ind, val);
	glp_set_row_bnds(lp, 1, GLP_FX, 1, 1);
	glp_smcp parm;
	glp_init_smcp(&parm);
	parm.msg_lev = GLP_MSG_OFF;
	parm.meth = GLP_DUALP;

	for (unsigned k = 0; k < nk; k++)
		y[k] = 1 / total;
	for (int it = 0; it < KELLEY_MAX_ITERS; it++) {
		double f = eval_dual(nc, nk, cost, cnt, kk, y, g);
		if (f < 0)
			break;
		if (f > best) {
			best = f;
			memcpy(yb, y, nk * sizeof(double));
		}
		/* the cut t - (g / scale) . y <= 0, in scaled units */
		int row = glp_add_rows(lp, 1);
		for (unsigned k = 0; k < nk; k++) {
			ind[k + 1] = (int)k + 1;
			val[k + 1] = -g[k] / scale;
		}
		ind[nk + 1] = (int)nk + 1;
		val[nk + 1] = 1;
		glp_set_mat_row(lp, row, (int)nk + 1, ind, val);
		glp_set_row_bnds(lp, row, GLP_UP, 0, 0);
		if (glp_simplex(lp, &parm) != 0 || glp_get_status(lp) != GLP_OPT)
			break;
		double ub = glp_get_obj_val(lp) * scale;
		if (ub - best <= KELLEY_GAP * ub)
			break;
		for (unsigned k = 0; k < nk; k++)
			y[k] = KELLEY_SMOOTH * yb[k] +
			       (1 - KELLEY_SMOOTH) * glp_get_col_prim(lp, (int)k + 1);
	}
	glp_delete_prob(lp);
out:
	free(y);
	free(yb);
	free(g);
	free(ind);
	free(val);
	return best;
}

/* Solves the LP over nc classes and nk kinds: cost[c * nk + k] (< 0: not
 * allowed), cnt[c] tasks per class, kk[k] devices per kind. Returns the dual
 * bound, or a negative value when GLPK gives no optimal basis. */
static double area_lp(uint32_t nc, unsigned nk, const double *cost, const double *cnt,
                      const double *kk)
{
	size_t ne = 0;
	for (size_t i = 0; i < (size_t)nc * nk; i++)
		if (cost[i] >= 0)
			ne += cost[i] > 0 ? 2 : 1;
	ne += nk;
	int *ia = malloc((ne + 1) * sizeof(int)), *ja = malloc((ne + 1) * sizeof(int));
	double *ar = malloc((ne + 1) * sizeof(double));
	double res = -1;
	if (!ia || !ja || !ar)
		goto out;

	glp_prob *lp = glp_create_prob();
	glp_set_obj_dir(lp, GLP_MIN);
	glp_add_rows(lp, (int)(nc + nk));
	for (uint32_t c = 0; c < nc; c++)
		glp_set_row_bnds(lp, (int)c + 1, GLP_FX, cnt[c], cnt[c]);
	for (unsigned k = 0; k < nk; k++)
		glp_set_row_bnds(lp, (int)(nc + k) + 1, GLP_LO, 0, 0);
	int ncols = 1;
	for (size_t i = 0; i < (size_t)nc * nk; i++)
		ncols += cost[i] >= 0;
	glp_add_cols(lp, ncols);
	/* column 1: T */
	glp_set_col_bnds(lp, 1, GLP_LO, 0, 0);
	glp_set_obj_coef(lp, 1, 1);
	size_t e = 0;
	for (unsigned k = 0; k < nk; k++) {
		e++;
		ia[e] = (int)(nc + k) + 1;
		ja[e] = 1;
		ar[e] = kk[k];
	}
	int col = 1;
	for (uint32_t c = 0; c < nc; c++)
		for (unsigned k = 0; k < nk; k++) {
			double w = cost[(size_t)c * nk + k];
			if (w < 0)
				continue;
			col++;
			glp_set_col_bnds(lp, col, GLP_LO, 0, 0);
			e++;
			ia[e] = (int)c + 1;
			ja[e] = col;
			ar[e] = 1;
			if (w > 0) {
				e++;
				ia[e] = (int)(nc + k) + 1;
				ja[e] = col;
				ar[e] = -w;
			}
		}
	glp_load_matrix(lp, (int)e, ia, ja, ar);
	glp_scale_prob(lp, GLP_SF_AUTO);
	glp_smcp parm;
	glp_init_smcp(&parm);
	parm.msg_lev = GLP_MSG_OFF;
	parm.presolve = GLP_ON;
	int rc = glp_simplex(lp, &parm);
	if (rc == 0 && glp_get_status(lp) == GLP_OPT) {
		double *y = ar; /* reuse: nk <= ne */
		for (unsigned k = 0; k < nk; k++)
			y[k] = glp_get_row_dual(lp, (int)(nc + k) + 1);
		res = eval_dual(nc, nk, cost, cnt, kk, y, NULL);
	}
	glp_delete_prob(lp);
out:
	free(ia);
	free(ja);
	free(ar);
	return res;
}

static int area_bound(const struct plan_dag *g, unsigned nd, int method, double *area)
{
	uint32_t n = g->n;
	int err = -TDM_ENOMEM;
	size_t hcap = 16;
	while (hcap < 2 * (size_t)n)
		hcap *= 2;
	uint32_t *table = malloc(hcap * sizeof(*table)); /* class + 1, 0 empty */
	double *rows = malloc(((size_t)n * nd + 1) * sizeof(double)); /* class rows */
	double *cnt = calloc(n + 1, sizeof(double));
	unsigned *kind = malloc(nd * sizeof(unsigned)), *rep = malloc(nd * sizeof(unsigned));
	double *kk = calloc(nd, sizeof(double));
	double *kcost = NULL, *tmp = malloc(nd * sizeof(double));
	if (!table || !rows || !cnt || !kind || !rep || !kk || !tmp)
		goto out;
	memset(table, 0, hcap * sizeof(*table));

	/* Classes: tasks whose normalised cost vectors are bitwise equal. */
	uint32_t nc = 0;
	for (uint32_t v = 0; v < n; v++) {
		const double *c = plan_cost_row(g, nd, v, tmp);
		for (unsigned d = 0; d < nd; d++)
			tmp[d] = plan_allowed(c[d]) ? c[d] + 0.0 : -1.0; /* -0.0 -> 0.0 */
		size_t h = hash_row(tmp, nd) & (hcap - 1);
		for (;; h = (h + 1) & (hcap - 1)) {
			uint32_t t = table[h];
			if (!t) {
				memcpy(rows + (size_t)nc * nd, tmp, nd * sizeof(double));
				table[h] = ++nc;
				cnt[nc - 1] = 1;
				break;
			}
			if (!memcmp(rows + (size_t)(t - 1) * nd, tmp, nd * sizeof(double))) {
				cnt[t - 1] += 1;
				break;
			}
		}
	}

	/* Kinds: devices whose cost columns are equal over all classes. */
	unsigned nk = 0;
	for (unsigned d = 0; d < nd; d++) {
		unsigned k;
		for (k = 0; k < nk; k++) {
			unsigned r = rep[k];
			uint32_t c;
			for (c = 0; c < nc; c++)
				if (memcmp(&rows[(size_t)c * nd + d], &rows[(size_t)c * nd + r],
				           sizeof(double)))
					break;
			if (c == nc)
				break;
		}
		if (k == nk)
			rep[nk++] = d;
		kind[d] = k;
		kk[k] += 1;
	}

	if (nk == 1) {
		/* One kind: every class runs on it; the bound is plain area. */
		double sum = 0;
		for (uint32_t c = 0; c < nc; c++)
			sum += cnt[c] * rows[(size_t)c * nd + rep[0]];
		*area = sum / kk[0];
		err = 0;
		goto out;
	}

	kcost = malloc((size_t)nc * nk * sizeof(double));
	if (!kcost)
		goto out;
	for (uint32_t c = 0; c < nc; c++)
		for (unsigned k = 0; k < nk; k++)
			kcost[(size_t)c * nk + k] = rows[(size_t)c * nd + rep[k]];

	/* A bound that needs no solver: the dual with equal weights
	 * y_k = 1 / ndev, i.e. every task on its best device, spread evenly. */
	double simple = 0;
	for (uint32_t c = 0; c < nc; c++)
		simple += cnt[c] * best_cost(&rows[(size_t)c * nd], nd);
	simple /= nd;
	int term = glp_term_out(GLP_OFF); /* glp_scale_prob and errors print */
	if (method == PLAN_AREA_AUTO)
		method =
		        (size_t)nc * nk <= AREA_DIRECT_MAX_COLS ? PLAN_AREA_DIRECT : PLAN_AREA_CUTS;
	double lp = method == PLAN_AREA_DIRECT ? area_lp(nc, nk, kcost, cnt, kk)
	                                       : area_kelley(nc, nk, kcost, cnt, kk);
	glp_term_out(term);
	*area = plan_maxd(simple, lp);
	err = 0;
out:
	free(table);
	free(rows);
	free(cnt);
	free(kind);
	free(rep);
	free(kk);
	free(kcost);
	free(tmp);
	return err;
}

int plan_area_bound(const struct plan_dag *g, const struct plan_machine *m, int method,
                    double *area)
{
	struct plan_ws *ws = plan_ws_new();
	if (!ws)
		return -TDM_ENOMEM;
	int err = plan_prep(ws, g, m, NULL, 0);
	plan_ws_free(ws);
	if (err)
		return err;
	if (g->n == 0) {
		*area = 0;
		return 0;
	}
	return area_bound(g, m->ndev, method, area);
}

int plan_lower_bounds(const struct plan_dag *g, const struct plan_machine *m,
                      double *critical_path_out, double *area)
{
	struct plan_ws *ws = plan_ws_new();
	if (!ws)
		return -TDM_ENOMEM;
	int err = plan_prep(ws, g, m, NULL, 0);
	if (!err && critical_path_out)
		critical_path(ws, g, m->ndev, critical_path_out);
	plan_ws_free(ws);
	if (err || !area)
		return err;
	if (g->n == 0) {
		*area = 0;
		return 0;
	}
	return area_bound(g, m->ndev, PLAN_AREA_AUTO, area);
}
