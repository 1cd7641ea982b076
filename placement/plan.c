/* Whole-graph planning: work arrays, graph preparation (validation,
 * predecessor lists, topological order, mean costs) and the list scheduler
 * behind HEFT (Topcuoglu, Hariri, Wu 2002) and PEFT (Arabnejad, Barbosa
 * 2014), with insertion-based device timelines, plan repair around fixed
 * tasks and seeded refinement over perturbed priority orders. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "common/csr.h"
#include "common/splitmix.h"
#include "placement/plan_internal.h"

struct plan_ws *plan_ws_new(void)
{
	return calloc(1, sizeof(struct plan_ws));
}

void plan_ws_free(struct plan_ws *ws)
{
	if (!ws)
		return;
	free(ws->order);
	free(ws->cnt);
	free(ws->pred_off);
	free(ws->heap);
	free(ws->fsort);
	free(ws->nallow);
	free(ws->wmean);
	free(ws->rank_u);
	free(ws->rank_d);
	free(ws->prio);
	free(ws->base);
	free(ws->aux);
	free(ws->cand);
	free(ws->pred);
	free(ws->pred_data);
	free(ws->oct);
	for (size_t d = 0; d < ws->dev_cap; d++)
		plan_tl_free(&ws->tl[d]);
	free(ws->tl);
	free(ws->dev_node);
	free(ws->dev_rdy);
	free(ws->tl_last_f);
	free(ws->tl_first_s);
	free(ws->tl_max_gap);
	free(ws->dev_lb);
	free(ws->col_used);
	free(ws->arr);
	free(ws);
}

static int grow(void *pp, size_t count, size_t elem)
{
	void **p = pp;
	void *q = realloc(*p, (count ? count : 1) * elem);
	if (!q)
		return -TDM_ENOMEM;
	*p = q;
	return 0;
}

static size_t round_cap(size_t need)
{
	size_t c = 16;
	while (c < need)
		c *= 2;
	return c;
}

static int ws_size(struct plan_ws *ws, size_t n, size_t e, size_t ndev, size_t nnodes)
{
	if (n > ws->n_cap) {
		size_t c = round_cap(n);
		if (grow(&ws->order, c, sizeof(uint32_t)) || grow(&ws->cnt, c, sizeof(uint32_t)) ||
		    grow(&ws->pred_off, c + 1, sizeof(uint32_t)) ||
		    grow(&ws->heap, c, sizeof(struct plan_hent)) ||
		    grow(&ws->fsort, c, sizeof(uint32_t)) ||
		    grow(&ws->nallow, c, sizeof(uint32_t)) || grow(&ws->wmean, c, sizeof(double)) ||
		    grow(&ws->rank_u, c, sizeof(double)) || grow(&ws->rank_d, c, sizeof(double)) ||
		    grow(&ws->prio, c, sizeof(double)) || grow(&ws->base, c, sizeof(double)) ||
		    grow(&ws->aux, c, sizeof(double)) ||
		    grow(&ws->cand, c, sizeof(struct plan_slot)))
			return -TDM_ENOMEM;
		ws->n_cap = c;
	}
	if (e > ws->e_cap) {
		size_t c = round_cap(e);
		if (grow(&ws->pred, c, sizeof(uint32_t)) || grow(&ws->pred_data, c, sizeof(double)))
			return -TDM_ENOMEM;
		ws->e_cap = c;
	}
	if (ndev > ws->dev_cap) {
		size_t c = round_cap(ndev);
		if (grow(&ws->tl, c, sizeof(struct plan_tl)) ||
		    grow(&ws->dev_node, c, sizeof(uint32_t)) ||
		    grow(&ws->dev_rdy, c, sizeof(double)) || grow(&ws->dev_lb, c, sizeof(double)) ||
		    grow(&ws->col_used, c, sizeof(uint32_t)) ||
		    grow(&ws->tl_last_f, c, sizeof(double)) ||
		    grow(&ws->tl_first_s, c, sizeof(double)) ||
		    grow(&ws->tl_max_gap, c, sizeof(double)))
			return -TDM_ENOMEM;
		memset(ws->tl + ws->dev_cap, 0, (c - ws->dev_cap) * sizeof(struct plan_tl));
		ws->dev_cap = c;
	}
	if (nnodes > ws->node_cap) {
		size_t c = round_cap(nnodes);
		if (grow(&ws->arr, c, sizeof(double)))
			return -TDM_ENOMEM;
		ws->node_cap = c;
	}
	return 0;
}

/* The OCT table is only needed by PEFT (and some refinement candidates). */
static int ws_size_oct(struct plan_ws *ws, size_t nd)
{
	if (nd > ws->nd_cap) {
		size_t c = round_cap(nd);
		if (grow(&ws->oct, c, sizeof(double)))
			return -TDM_ENOMEM;
		ws->nd_cap = c;
	}
	return 0;
}

__attribute__((format(printf, 3, 4))) static int fail(char *why, size_t whylen, const char *fmt,
                                                      ...)
{
	if (why && whylen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -TDM_EINVAL;
}

int plan_prep(struct plan_ws *ws, const struct plan_dag *g, const struct plan_machine *m, char *why,
              size_t whylen)
{
	if (!g || !m || !ws)
		return fail(why, whylen, "missing graph or machine");
	if (m->ndev == 0)
		return fail(why, whylen, "the machine has no device");
	if (m->nnodes == 0 && m->node)
		return fail(why, whylen, "the machine has no memory node");
	for (unsigned d = 0; m->node && d < m->ndev; d++)
		if (m->node[d] >= m->nnodes)
			return fail(why, whylen, "device %u is on node %u, which does not exist", d,
			            m->node[d]);
	uint32_t n = g->n;
	if (n && !g->cost)
		return fail(why, whylen, "missing cost table");
	if (g->col && g->ncols == 0)
		return fail(why, whylen, "no cost column");
	for (unsigned d = 0; g->col && d < m->ndev; d++)
		if (g->col[d] >= g->ncols)
			return fail(why, whylen, "device %u has cost column %u, of %u", d,
			            g->col[d], g->ncols);
	uint64_t e = 0;
	if (n && g->succ_off) {
		for (uint32_t v = 0; v < n; v++)
			if (g->succ_off[v + 1] < g->succ_off[v])
				return fail(why, whylen, "task %u: successor offsets decrease", v);
		e = g->succ_off[n] - g->succ_off[0];
		if (e && !g->succ)
			return fail(why, whylen, "missing successor array");
	}
	if (e > UINT32_MAX)
		return -TDM_EINVAL;
	int err = ws_size(ws, n, e, m->ndev, m->nnodes ? m->nnodes : 1);
	if (err)
		return err;
	ws->n = n;
	ws->ndev = m->ndev;
	ws->ncols = plan_ncols(g, m->ndev);
	ws->nedges = (uint32_t)e;

	/* Mean costs over the devices that can run each task (summed device
	 * by device, whether or not they share columns). */
	unsigned nd = m->ndev, nc = ws->ncols;
	const uint32_t *col = g->col;
	for (uint32_t v = 0; v < n; v++) {
		const double *c = g->cost + (size_t)v * nc;
		unsigned k;
		double sum = plan_sum_allowed(c, c, col, nd, &k);
		if (!k)
			return fail(why, whylen, "task %u can run on no device", v);
		ws->nallow[v] = k;
		ws->wmean[v] = sum / k;
	}

	/* Predecessor lists (CSR) with their data, in-degrees. */
	bool forward = true; /* every edge to a higher index */
	for (uint32_t v = 0; v < n && e; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++) {
			if (g->succ[k] >= n)
				return fail(why, whylen,
				            "task %u has successor %u, which does not exist", v,
				            g->succ[k]);
			forward &= g->succ[k] > v;
		}
	uint32_t *po = ws->pred_off, *cnt = ws->cnt;
	csr_open(po, n, e ? g->succ + g->succ_off[0] : NULL, sizeof(*g->succ), (uint32_t)e);
	for (uint32_t v = 0; v < n && e; v++)
		for (uint32_t k = g->succ_off[v]; k < g->succ_off[v + 1]; k++) {
			uint32_t at = csr_slot(po, g->succ[k]);
			ws->pred[at] = v;
			ws->pred_data[at] = plan_edge_data(g, k);
		}
	csr_close(po, n);

	/* A topological order: the indices when every edge goes forward (as
	 * the engine's graphs do; the ranks come out the same in any such
	 * order), else Kahn's: order[] is a FIFO of tasks whose predecessors
	 * are all done. */
	uint32_t *ord = ws->order, head = 0, tail = 0;
	if (forward) {
		for (uint32_t v = 0; v < n; v++)
			ord[v] = v;
		tail = head = n;
	} else {
		for (uint32_t v = 0; v < n; v++)
			cnt[v] = po[v + 1] - po[v];
	}
	for (uint32_t v = 0; v < n && !forward; v++)
		if (!cnt[v])
			ord[tail++] = v;
	while (head < tail) {
		uint32_t v = ord[head++];
		for (uint32_t k = e ? g->succ_off[v] : 0; k < (e ? g->succ_off[v + 1] : 0); k++)
			if (--cnt[g->succ[k]] == 0)
				ord[tail++] = g->succ[k];
	}
	if (tail != n)
		return fail(why, whylen, "the graph has a cycle (%u of %u tasks ordered)", tail, n);

	/* Mean link costs over ordered pairs of distinct devices; pairs on one
	 * memory node cost nothing. */
	double ls = 0, bs = 0;
	if (nd > 1) {
		for (unsigned a = 0; a < nd; a++)
			for (unsigned b = 0; b < nd; b++) {
				if (a == b)
					continue;
				unsigned na = m->node ? m->node[a] : 0,
				         nb = m->node ? m->node[b] : 0;
				if (na == nb)
					continue;
				size_t k = (size_t)na * m->nnodes + nb;
				ls += m->lat ? m->lat[k] : 0;
				bs += m->inv_bw ? m->inv_bw[k] : 0;
			}
		double pairs = (double)nd * (nd - 1);
		ls /= pairs;
		bs /= pairs;
	}
	ws->lat_mean = ls;
	ws->invbw_mean = bs;
	return 0;
}

/* ---- the list scheduler ------------------------------------------------------ */

/* Higher priority first; equal priorities (to rounding: ranks computed along
 * different paths may differ in the last bits) lower index first. */
static bool before(struct plan_hent a, struct plan_hent b)
{
	double pa = a.prio, pb = b.prio;
	double tol = 1e-12 * plan_maxd(fabs(pa), fabs(pb));
	if (pa > pb + tol)
		return true;
	if (pb > pa + tol)
		return false;
	return a.v < b.v;
}

static void heap_push(struct plan_hent *h, uint32_t *len, const double *prio, uint32_t v)
{
	struct plan_hent x = { prio[v], v };
	uint32_t i = (*len)++;
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (!before(x, h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = x;
}

static uint32_t heap_pop(struct plan_hent *h, uint32_t *len)
{
	struct plan_hent v = h[--*len];
	uint32_t top = h[0].v, n = *len, i = 0;
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= n)
			break;
		/* the grandchildren, side by side, on their way (a big heap's
		 * levels are cache misses) */
		if (2 * c + 1 < n) {
			__builtin_prefetch(&h[2 * c + 1]);
			__builtin_prefetch(&h[2 * c + 4 < n ? 2 * c + 4 : n - 1]);
		}
		if (c + 1 < n && before(h[c + 1], h[c]))
			c++;
		if (!before(h[c], v))
			break;
		h[i] = h[c];
		i = c;
	}
	if (n)
		h[i] = v;
	return top;
}

/* Fixed tasks sorted by device, then start: each pass starts its timelines
 * from them. */
struct fixed_ctx {
	const struct plan_slot *slots;
};

static int cmp_fixed(const void *pa, const void *pb, void *ctx)
{
	const struct plan_slot *s = ((struct fixed_ctx *)ctx)->slots;
	uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
	if (s[a].dev != s[b].dev)
		return s[a].dev < s[b].dev ? -1 : 1;
	if (s[a].start != s[b].start)
		return s[a].start < s[b].start ? -1 : 1;
	if (s[a].finish != s[b].finish)
		return s[a].finish < s[b].finish ? -1 : 1;
	return a < b ? -1 : a > b;
}

struct sched_in {
	const struct plan_dag *g;
	const struct plan_machine *m;
	const struct plan_opts *o;
	const double *oct; /* PEFT: the OCT table; NULL for HEFT */
	const uint32_t *fixed_sorted;
	uint32_t nfixed;
};

/* The fields of d's timeline that bound_devices reads, side by side. */
static void tl_summary(struct plan_ws *ws, uint32_t d)
{
	const struct plan_tl *t = &ws->tl[d];
	ws->tl_last_f[d] = t->len ? t->last_f : -INFINITY;
	ws->tl_first_s[d] = t->first_s;
	ws->tl_max_gap[d] = t->max_gap;
}

struct bound_in {
	unsigned nd;
	const double *c, *oct; /* the task's rows of costs and OCT (per column) */
	const uint32_t *col; /* device d's column (has_col), else d */
	const uint32_t *node;
	const double *dev_ready, *arr;
	const double *last_f, *first_s, *max_gap; /* the timelines' (ws) */
	double *lb;
};

/* Device d's bound, one at a time (the odd device out of the pairs). */
static inline double bound_one(const struct bound_in *b, unsigned d, bool has_col, bool has_oct)
{
	unsigned cx = has_col ? b->col[d] : d;
	double cd = b->c[cx];
	if (!plan_allowed(cd))
		return INFINITY;
	/* ready >= 0, so a device free from 0 (dev_ready 0) keeps it */
	double ready = b->arr[b->node[d]];
	if (b->dev_ready[d] > ready)
		ready = b->dev_ready[d];
	/* Most devices answer at once: free at ready, or no gap long enough
	 * before their end (plan_tl_bound, on the copies of its fields in
	 * ws: an empty timeline ends at -INFINITY). */
	double last = b->last_f[d];
	double st = last <= ready                                  ? ready
	            : b->first_s[d] <= ready && b->max_gap[d] < cd ? last
	                                                           : ready;
	return st + cd + (has_oct ? b->oct[cx] : 0);
}

/* Per device d that can run the task: a lower bound on its key into
 * lb[d] (INFINITY where it cannot run). Returns the device of least bound
 * (the first on ties). Inlined for has_col (b->col) and has_oct (b->oct), which then cost
 * nothing per device. With SSE2, two devices at a time, each bound the
 * same double as bound_one's: maxpd(x, y) is x > y ? x : y, and every
 * time here is >= 0 (arr starts at 0), costs and OCT too where allowed. */
static inline __attribute__((always_inline)) unsigned
bound_devices(const struct bound_in *b, const bool has_col, const bool has_oct)
{
	const double *c = b->c;
	unsigned nd = b->nd, d = 0, first = UINT32_MAX;
	double lb_first = INFINITY;
#ifdef __SSE2__
	const double *lb = b->lb;
	const __m128d inf = _mm_set1_pd(INFINITY), zero = _mm_setzero_pd();
	__m128d lo = inf;
	for (; d + 2 <= nd; d += 2) {
		/* per column: the two devices' entries */
		__m128d cd = has_col ? _mm_loadh_pd(_mm_load_sd(c + b->col[d]), c + b->col[d + 1])
		                     : _mm_loadu_pd(c + d);
		__m128d ar =
		        _mm_loadh_pd(_mm_load_sd(b->arr + b->node[d]), b->arr + b->node[d + 1]);
		/* dev_ready > arr ? dev_ready : arr */
		__m128d ready = _mm_max_pd(_mm_loadu_pd(b->dev_ready + d), ar);
		__m128d last = _mm_loadu_pd(b->last_f + d);
		/* not (last <= ready), first_s <= ready, max_gap < cd: then
		 * last (> ready), else ready (0 > ready fails) */
		__m128d use_last =
		        _mm_andnot_pd(_mm_cmple_pd(last, ready),
		                      _mm_and_pd(_mm_cmple_pd(_mm_loadu_pd(b->first_s + d), ready),
		                                 _mm_cmplt_pd(_mm_loadu_pd(b->max_gap + d), cd)));
		__m128d l = _mm_add_pd(_mm_max_pd(_mm_and_pd(use_last, last), ready), cd);
		if (has_oct)
			l = _mm_add_pd(l, has_col ? _mm_loadh_pd(_mm_load_sd(b->oct + b->col[d]),
			                                         b->oct + b->col[d + 1])
			                          : _mm_loadu_pd(b->oct + d));
		/* where not allowed, INFINITY (l > INFINITY fails, NaN too);
		 * else l (l > 0, or l and 0 both zero) */
		__m128d allowed = _mm_and_pd(_mm_cmpge_pd(cd, zero), _mm_cmplt_pd(cd, inf));
		l = _mm_max_pd(l, _mm_andnot_pd(allowed, inf));
		_mm_storeu_pd(b->lb + d, l);
		lo = _mm_min_pd(l, lo);
	}
	double lov[2];
	_mm_storeu_pd(lov, lo);
	lb_first = lov[0] < lov[1] ? lov[0] : lov[1];
	/* the first device of least bound */
	if (lb_first < INFINITY) {
		const __m128d m = _mm_set1_pd(lb_first);
		for (unsigned e = 0; e < d; e += 2) {
			unsigned eq =
			        (unsigned)_mm_movemask_pd(_mm_cmpeq_pd(_mm_loadu_pd(lb + e), m));
			if (eq) {
				first = e + (unsigned)__builtin_ctz(eq);
				break;
			}
		}
	}
#endif
	for (; d < nd; d++) {
		double l = bound_one(b, d, has_col, has_oct);
		b->lb[d] = l;
		if (l < lb_first) {
			first = d;
			lb_first = l;
		}
	}
	/* Bounds are finite; were they all infinite, the first device that
	 * can run the task. */
	for (unsigned e = 0; first == UINT32_MAX && e < nd; e++)
		if (plan_allowed(c[has_col ? b->col[e] : e]))
			first = e;
	return first;
}

/* Bit i: lb[from + i] <= best, for the 64 devices (at most) from `from`. */
static inline uint64_t bound_below(const double *lb, unsigned from, unsigned nd, double best)
{
	unsigned to = nd - from > 64 ? from + 64 : nd, d = from;
	uint64_t bits = 0;
#ifdef __SSE2__
	const __m128d b = _mm_set1_pd(best);
	for (; d + 2 <= to; d += 2)
		bits |= (uint64_t)_mm_movemask_pd(_mm_cmple_pd(_mm_loadu_pd(lb + d), b))
		        << (d - from);
#endif
	for (; d < to; d++)
		bits |= (uint64_t)(lb[d] <= best) << (d - from);
	return bits;
}

/* The device chosen so far for a task: least key, then lowest index. */
struct pick {
	double best, bs, bf; /* its key, start and finish */
	unsigned bd;
	uint32_t bpos; /* where the slot goes in its timeline */
};

/* Searches d's timeline for the task (cost cd, OCT oc: 0 for HEFT) and
 * keeps d if its key beats the best so far. */
static inline void try_device(struct plan_ws *ws, struct pick *pk, unsigned d, const double *arr,
                              double cd, double oc)
{
	/* As bound_devices found them. */
	double ready = arr[ws->dev_node[d]];
	if (ws->dev_rdy[d] > ready)
		ready = ws->dev_rdy[d];
	bool ex;
	uint32_t pos = ws->tl[d].len;
	double s = plan_tl_bound(&ws->tl[d], ready, cd, &ex);
	if (!ex)
		s = plan_tl_find(&ws->tl[d], ready, cd, &pos);
	double f = s + cd;
	double key = f + oc;
	if (pk->bd == UINT32_MAX || key < pk->best || (key == pk->best && d < pk->bd)) {
		pk->best = key;
		pk->bd = d;
		pk->bs = s;
		pk->bf = f;
		pk->bpos = pos;
	}
}

/* Task x's lists of inputs (with their data) and successors, its cost
 * row and its OCT row (oct: NULL for HEFT) on their way. */
static inline void prefetch_lists(const struct plan_ws *ws, const struct plan_dag *g,
                                  const double *oct, uint32_t x, unsigned nc)
{
	const double *cx = g->cost + (size_t)x * nc;
	/* every line of the rows (they need not start one) */
	for (unsigned i = 0; i < nc; i += 8)
		__builtin_prefetch(cx + i);
	__builtin_prefetch(cx + nc - 1);
	if (oct) {
		for (unsigned i = 0; i < nc; i += 8)
			__builtin_prefetch(oct + (size_t)x * nc + i);
		__builtin_prefetch(oct + (size_t)x * nc + nc - 1);
	}
	uint32_t k0 = ws->pred_off[x], k1 = ws->pred_off[x + 1];
	if (k1 > k0) {
		__builtin_prefetch(&ws->pred[k0]);
		__builtin_prefetch(&ws->pred[k1 - 1]);
		__builtin_prefetch(&ws->pred_data[k0]);
		__builtin_prefetch(&ws->pred_data[k1 - 1]);
	}
	if (g->succ_off && g->succ_off[x + 1] > g->succ_off[x]) {
		__builtin_prefetch(&g->succ[g->succ_off[x]]);
		__builtin_prefetch(&g->succ[g->succ_off[x + 1] - 1]);
	}
}

/* One list-scheduling pass in the order given by prio[]; writes the
 * non-fixed slots of out[] (fixed ones must already be there). */
static int schedule_once(struct plan_ws *ws, const struct sched_in *in, const double *prio,
                         struct plan_slot *out, double *makespan)
{
	const struct plan_dag *g = in->g;
	const struct plan_machine *m = in->m;
	const struct plan_opts *o = in->o;
	const bool *fixed = o->fixed;
	uint32_t n = g->n;
	unsigned nd = m->ndev, nn = m->nnodes ? m->nnodes : 1, nc = ws->ncols;
	const uint32_t *col = g->col;
	double mk = 0;

	for (unsigned d = 0; d < nd; d++)
		plan_tl_clear(&ws->tl[d]);
	for (uint32_t i = 0; i < in->nfixed; i++) {
		const struct plan_slot *s = &out[in->fixed_sorted[i]];
		struct plan_tl *tl = &ws->tl[s->dev];
		mk = plan_maxd(mk, s->finish);
		/* Overlapping fixed slots (measured ones on a pipelined device)
		 * occupy their union. */
		if (tl->len && s->start < tl->f[tl->len - 1]) {
			tl->f[tl->len - 1] = plan_maxd(tl->f[tl->len - 1], s->finish);
			continue;
		}
		int err = plan_tl_push(tl, s->start, s->finish, in->fixed_sorted[i]);
		if (err)
			return err;
	}
	for (unsigned d = 0; d < nd; d++) {
		plan_tl_build(&ws->tl[d]);
		tl_summary(ws, d);
		ws->dev_node[d] = m->node ? m->node[d] : 0;
		ws->dev_rdy[d] = o->dev_ready ? o->dev_ready[d] : 0;
	}

	/* Ready list: tasks whose predecessors are all placed. */
	uint32_t *cnt = ws->cnt, hlen = 0;
	struct plan_hent *heap = ws->heap;
	for (uint32_t v = 0; v < n; v++) {
		cnt[v] = 0;
		if (fixed && fixed[v])
			continue;
		for (uint32_t k = ws->pred_off[v]; k < ws->pred_off[v + 1]; k++)
			if (!(fixed && fixed[ws->pred[k]]))
				cnt[v]++;
	}
	for (uint32_t v = 0; v < n; v++)
		if (!(fixed && fixed[v]) && !cnt[v])
			heap_push(heap, &hlen, prio, v);

	double *arr = ws->arr;
	while (hlen) {
		uint32_t v = heap_pop(heap, &hlen);
		/* Loads ahead in three steps, each a cache miss on big graphs
		 * (the tasks come in priority order): the next task is most
		 * likely the heap's new top, the one after it one of the top's
		 * children, the one after that a grandchild or the other
		 * child. Their offsets, then (offsets there) their lists and
		 * rows, then (lists there) the top's inputs' slots and
		 * successors' counts and priorities. */
		for (uint32_t i = 1; i <= 6 && i < hlen; i++) {
			uint32_t y = heap[i].v;
			__builtin_prefetch(&ws->pred_off[y]);
			if (g->succ_off)
				__builtin_prefetch(&g->succ_off[y]);
		}
		for (uint32_t i = 1; i <= 2 && i < hlen; i++)
			prefetch_lists(ws, g, in->oct, heap[i].v, nc);
		if (hlen) {
			uint32_t x = heap[0].v;
			for (uint32_t k = ws->pred_off[x]; k < ws->pred_off[x + 1]; k++)
				__builtin_prefetch(&out[ws->pred[k]]);
			for (uint32_t k = g->succ_off ? g->succ_off[x] : 0;
			     k < (g->succ_off ? g->succ_off[x + 1] : 0); k++) {
				__builtin_prefetch(&cnt[g->succ[k]], 1);
				__builtin_prefetch(&prio[g->succ[k]]);
			}
		}
		/* Earliest arrival of v's inputs on each memory node. */
		for (unsigned x = 0; x < nn; x++)
			arr[x] = 0;
		for (uint32_t k = ws->pred_off[v]; k < ws->pred_off[v + 1]; k++) {
			const struct plan_slot *p = &out[ws->pred[k]];
			unsigned np = m->node ? m->node[p->dev] : 0;
			double data = ws->pred_data[k];
			for (unsigned x = 0; x < nn; x++) {
				double t = p->finish;
				if (x != np) {
					size_t i = (size_t)np * m->nnodes + x;
					t += (m->lat ? m->lat[i] : 0) +
					     data * (m->inv_bw ? m->inv_bw[i] : 0);
				}
				if (t > arr[x])
					arr[x] = t;
			}
		}
		const double *c = g->cost + (size_t)v * nc;
		const double *oct = in->oct ? in->oct + (size_t)v * nc : NULL;
		/* No slot on d starts before its ready time, so ready + cost
		 * (+ OCT) bounds d's key from below. The device of least bound
		 * is searched first; then a device whose bound cannot beat the
		 * best so far is not searched at all (ties go to the lower
		 * index, as in the plain scan, so the choice is the same). */
		double *lb = ws->dev_lb;
		struct bound_in bi = { .nd = nd,
			               .c = c,
			               .oct = oct,
			               .col = col,
			               .node = ws->dev_node,
			               .dev_ready = ws->dev_rdy,
			               .arr = arr,
			               .last_f = ws->tl_last_f,
			               .first_s = ws->tl_first_s,
			               .max_gap = ws->tl_max_gap,
			               .lb = lb };
		unsigned first = col ? (oct ? bound_devices(&bi, true, true)
		                            : bound_devices(&bi, true, false))
		                     : (oct ? bound_devices(&bi, false, true)
		                            : bound_devices(&bi, false, false));
		/* The first device, then the others in index order whose bound
		 * may still win (best only falls, so a device over it when its
		 * block's bits are taken stays over it). */
		struct pick pk = { .best = INFINITY, .bd = UINT32_MAX };
		try_device(ws, &pk, first, arr, c[col ? col[first] : first],
		           oct ? oct[col ? col[first] : first] : 0);
		for (unsigned from = 0; from < nd; from += 64) {
			uint64_t bits = bound_below(lb, from, nd, pk.best);
			while (bits) {
				unsigned d = from + (unsigned)__builtin_ctzll(bits);
				bits &= bits - 1;
				double l = lb[d];
				unsigned cx = col ? col[d] : d;
				if (l > pk.best || d == first || (l == pk.best && d > pk.bd) ||
				    !plan_allowed(c[cx]))
					continue;
				try_device(ws, &pk, d, arr, c[cx], oct ? oct[cx] : 0);
			}
		}
		unsigned bd = pk.bd;
		double bs = pk.bs, bf = pk.bf;
		uint32_t bpos = pk.bpos;
		int err = plan_tl_insert(&ws->tl[bd], bpos, bs, bf, v);
		if (err)
			return err;
		tl_summary(ws, bd);
		out[v].dev = bd;
		out[v].start = bs;
		out[v].finish = bf;
		mk = plan_maxd(mk, bf);
		for (uint32_t k = g->succ_off ? g->succ_off[v] : 0;
		     k < (g->succ_off ? g->succ_off[v + 1] : 0); k++)
			if (--cnt[g->succ[k]] == 0)
				heap_push(heap, &hlen, prio, g->succ[k]);
	}
	*makespan = mk;
	return 0;
}

/* In [-1, 1), from splitmix64: a deterministic stream for the refinement
 * perturbations. */
static double unit_sym(uint64_t *x)
{
	return (double)(splitmix64(x) >> 11) * 0x1.0p-52 - 1.0;
}

/* mean over the devices that can run v of its row of tab[] (per cost
 * column), summed device by device */
static void mean_allowed(const struct plan_dag *g, unsigned nd, const double *tab, double *out)
{
	unsigned nc = plan_ncols(g, nd);
	for (uint32_t v = 0; v < g->n; v++) {
		unsigned k;
		double sum = plan_sum_allowed(g->cost + (size_t)v * nc, tab + (size_t)v * nc,
		                              g->col, nd, &k);
		out[v] = sum / k;
	}
}

static int check_fixed(const struct plan_dag *g, const struct plan_machine *m, struct plan_ws *ws,
                       const bool *fixed, const struct plan_slot *out, uint32_t *sorted,
                       uint32_t *nfixed)
{
	uint32_t k = 0;
	for (uint32_t v = 0; v < g->n; v++) {
		if (!fixed[v])
			continue;
		const struct plan_slot *s = &out[v];
		if (s->dev >= m->ndev || !isfinite(s->start) || !isfinite(s->finish) ||
		    s->finish < s->start)
			return -TDM_EINVAL;
		/* Every predecessor of a fixed task must be fixed too. */
		for (uint32_t j = ws->pred_off[v]; j < ws->pred_off[v + 1]; j++)
			if (!fixed[ws->pred[j]])
				return -TDM_EINVAL;
		sorted[k++] = v;
	}
	struct fixed_ctx ctx = { out };
	qsort_r(sorted, k, sizeof(*sorted), cmp_fixed, &ctx);
	*nfixed = k;
	return 0;
}

int plan_schedule(const struct plan_dag *g, const struct plan_machine *m, const struct plan_opts *o,
                  struct plan_ws *ws, struct plan_slot *out, double *makespan)
{
	static const struct plan_opts defaults = { .method = PLAN_HEFT };
	if (!o)
		o = &defaults;
	if (!ws || !out || (o->method != PLAN_HEFT && o->method != PLAN_PEFT))
		return -TDM_EINVAL;
	ws->order_ok = false;
	int err = plan_prep(ws, g, m, NULL, 0);
	if (err)
		return err;
	uint32_t n = g->n;
	unsigned nd = m->ndev;
	if (makespan)
		*makespan = 0;
	if (!n)
		return 0;

	/* Fixed tasks sorted by device and start. */
	uint32_t nfixed = 0;
	if (o->fixed && (err = check_fixed(g, m, ws, o->fixed, out, ws->fsort, &nfixed)))
		return err;

	bool peft = o->method == PLAN_PEFT;
	bool need_oct = peft || o->refine_iters >= 2;
	if (need_oct) {
		if ((err = ws_size_oct(ws, (size_t)n * ws->ncols)))
			return err;
		/* PEFT's rank_oct (base) from each row as it is made */
		plan_ranks_oct(ws, g, ws->oct, peft ? ws->base : NULL);
	}
	/* PEFT orders by rank_oct; rank_u serves its refinement only. */
	if (!peft || o->refine_iters)
		plan_ranks_up(ws, g, ws->rank_u);
	/* base: the published priority (rank_u, or PEFT's rank_oct, made
	 * with OCT). */
	if (!peft)
		memcpy(ws->base, ws->rank_u, n * sizeof(double));

	struct sched_in in = {
		.g = g,
		.m = m,
		.o = o,
		.oct = peft ? ws->oct : NULL,
		.fixed_sorted = ws->fsort,
		.nfixed = nfixed,
	};
	double mk;
	if ((err = schedule_once(ws, &in, ws->base, out, &mk)))
		return err;
	/* Refinement passes rebuild the timelines for other schedules. */
	ws->order_ok = !nfixed && !o->refine_iters;

	/* Refinement: other priority orders, same device selection; the
	 * shortest schedule wins, the first found on ties. */
	if (o->refine_iters) {
		plan_ranks_down(ws, g, ws->rank_d);
		uint64_t rng = o->seed;
		static const double eps[] = { 0.1, 0.2, 0.3 };
		for (uint32_t it = 0; it < o->refine_iters; it++) {
			double *p = ws->prio;
			if (it == 0) {
				/* CPOP-like: the whole path through the task. */
				for (uint32_t v = 0; v < n; v++)
					p[v] = ws->base[v] + ws->rank_d[v];
			} else if (it == 1) {
				/* The other paper's order. */
				if (peft)
					memcpy(p, ws->rank_u, n * sizeof(double));
				else
					mean_allowed(g, nd, ws->oct, p);
			} else {
				const double *b = (it & 1) ? ws->rank_u : ws->base;
				double e = eps[(it - 2) % 3];
				for (uint32_t v = 0; v < n; v++)
					p[v] = b[v] * (1 + e * unit_sym(&rng));
			}
			for (uint32_t v = 0; v < n; v++)
				if (o->fixed && o->fixed[v])
					ws->cand[v] = out[v];
			double cmk;
			if ((err = schedule_once(ws, &in, p, ws->cand, &cmk)))
				return err;
			if (cmk < mk) {
				mk = cmk;
				memcpy(out, ws->cand, n * sizeof(*out));
			}
		}
	}
	if (makespan)
		*makespan = mk;
	return 0;
}

int plan_device_order(const struct plan_ws *ws, unsigned d, const uint32_t **ids, uint32_t *len)
{
	if (!ws || !ws->order_ok || d >= ws->ndev || !ids || !len)
		return -TDM_EINVAL;
	*ids = ws->tl[d].id;
	*len = ws->tl[d].len;
	return 0;
}
