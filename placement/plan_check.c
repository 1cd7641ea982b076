/* Schedule checker: devices that can run each task, durations, no overlap on
 * a device, precedence with communication. Times are compared with a
 * relative tolerance of 1e-9. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "placement/plan_internal.h"

#define CHECK_EPS 1e-9

static double tol(double a, double b)
{
	return CHECK_EPS * plan_maxd(fabs(a), fabs(b));
}

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	if (why && whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -TDM_EINVAL;
}

static int cmp_slot(const void *pa, const void *pb, void *ctx)
{
	const struct plan_slot *s = ctx;
	uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
	if (s[a].dev != s[b].dev)
		return s[a].dev < s[b].dev ? -1 : 1;
	if (s[a].start != s[b].start)
		return s[a].start < s[b].start ? -1 : 1;
	if (s[a].finish != s[b].finish)
		return s[a].finish < s[b].finish ? -1 : 1;
	return a < b ? -1 : a > b;
}

static int check(struct plan_ws *ws, const struct plan_dag *g, const struct plan_machine *m,
                 const struct plan_slot *s, char *why, size_t whylen)
{
	uint32_t n = g->n;
	unsigned nd = m->ndev;
	for (uint32_t v = 0; v < n; v++) {
		const struct plan_slot *x = &s[v];
		if (x->dev >= nd)
			return bad(why, whylen, "task %u is on device %u, which does not exist", v,
			           x->dev);
		double c = plan_cost(g, nd, v, x->dev);
		if (!plan_allowed(c))
			return bad(why, whylen, "task %u is on device %u, which cannot run it", v,
			           x->dev);
		if (!isfinite(x->start) || !isfinite(x->finish))
			return bad(why, whylen, "task %u has a time that is not finite", v);
		double want = x->start + c;
		if (fabs(x->finish - want) > tol(x->finish, want))
			return bad(
			        why, whylen,
			        "task %u on device %u runs from %.9g to %.9g but costs %.9g there",
			        v, x->dev, x->start, x->finish, c);
	}

	/* Overlaps: per device, in start order, against the latest finish so
	 * far (a zero-length task inside another one overlaps it too). */
	uint32_t *idx = ws->fsort;
	for (uint32_t v = 0; v < n; v++)
		idx[v] = v;
	qsort_r(idx, n, sizeof(*idx), cmp_slot, (void *)s);
	uint32_t owner = UINT32_MAX;
	double maxf = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t v = idx[i];
		if (i == 0 || s[v].dev != s[idx[i - 1]].dev) {
			owner = v;
			maxf = s[v].finish;
			continue;
		}
		if (s[v].start < maxf - tol(s[v].start, maxf))
			return bad(why, whylen,
			           "tasks %u and %u overlap on device %u: [%.9g, %.9g) and "
			           "[%.9g, %.9g)",
			           owner, v, s[v].dev, s[owner].start, s[owner].finish, s[v].start,
			           s[v].finish);
		if (s[v].finish > maxf) {
			maxf = s[v].finish;
			owner = v;
		}
	}

	/* Precedence and communication. */
	for (uint32_t u = 0; u < n && ws->nedges; u++)
		for (uint32_t k = g->succ_off[u]; k < g->succ_off[u + 1]; k++) {
			uint32_t v = g->succ[k];
			double comm = plan_comm(m, s[u].dev, s[v].dev, plan_edge_data(g, k));
			double need = s[u].finish + comm;
			if (s[v].start >= need - tol(s[v].start, need))
				continue;
			if (comm > 0)
				return bad(
				        why, whylen,
				        "task %u on device %u starts at %.9g before predecessor %u "
				        "on device %u finishes at %.9g plus communication %.9g",
				        v, s[v].dev, s[v].start, u, s[u].dev, s[u].finish, comm);
			return bad(why, whylen,
			           "task %u on device %u starts at %.9g before predecessor %u on "
			           "device %u finishes at %.9g",
			           v, s[v].dev, s[v].start, u, s[u].dev, s[u].finish);
		}
	return 0;
}

int plan_check(const struct plan_dag *g, const struct plan_machine *m, const struct plan_slot *s,
               char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = 0;
	if (!s)
		return bad(why, whylen, "no schedule");
	struct plan_ws *ws = plan_ws_new();
	if (!ws)
		return -TDM_ENOMEM;
	int err = plan_prep(ws, g, m, why, whylen);
	if (!err)
		err = check(ws, g, m, s, why, whylen);
	plan_ws_free(ws);
	return err;
}
