/* Standard Task Graph Set reader, and the workload functions both readers
 * share (see workload.h; the input helpers are in wl_io.c). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errbuf.h"
#include "workload/workload.h"
#include "tandem.h"

/* ---- shared ---------------------------------------------------------------- */

void wl_init(struct workload *w)
{
	memset(w, 0, sizeof(*w));
}

void wl_free(struct workload *w)
{
	if (!w)
		return;
	free(w->tasks);
	free(w->edges);
	free(w->dev_cost);
	free(w->buf_bytes);
	free(w->buf_keep);
	free(w->graphs);
	free(w->dev_names);
	wl_init(w);
}

static int edge_cmp(const void *a, const void *b)
{
	const struct wl_edge *x = a, *y = b;

	if (x->src != y->src)
		return x->src < y->src ? -1 : 1;
	if (x->dst != y->dst)
		return x->dst < y->dst ? -1 : 1;
	return 0;
}

void wl_sort_edges(struct workload *w)
{
	uint32_t out = 0;

	if (w->nedges < 2)
		return;
	qsort(w->edges, w->nedges, sizeof(*w->edges), edge_cmp);
	for (uint32_t i = 1; i < w->nedges; i++) {
		struct wl_edge *last = &w->edges[out];

		if (w->edges[i].src == last->src && w->edges[i].dst == last->dst) {
			if (w->edges[i].data > last->data)
				last->data = w->edges[i].data;
		} else {
			w->edges[++out] = w->edges[i];
		}
	}
	w->nedges = out + 1;
}

int wl_check_acyclic(const struct workload *w, uint32_t *on_cycle)
{
	uint32_t n = w->ntasks, m = w->nedges, head = 0, tail = 0;
	uint32_t *off = calloc((size_t)n + 1, sizeof(*off));
	uint32_t *adj = malloc((m ? m : 1) * sizeof(*adj));
	uint32_t *indeg = calloc(n ? n : 1, sizeof(*indeg));
	uint32_t *queue = malloc((n ? n : 1) * sizeof(*queue));
	int rc = 0;

	if (!off || !adj || !indeg || !queue) {
		rc = -TDM_ENOMEM;
		goto out;
	}
	for (uint32_t e = 0; e < m; e++)
		if (w->edges[e].src >= n || w->edges[e].dst >= n) {
			*on_cycle = UINT32_MAX;
			rc = -TDM_EINVAL;
			goto out;
		}
	/* successors in CSR form, whatever the order of the edges */
	wl_group_edges(w, false, off, adj);
	for (uint32_t k = 0; k < m; k++) {
		adj[k] = w->edges[adj[k]].dst;
		indeg[adj[k]]++;
	}

	for (uint32_t v = 0; v < n; v++)
		if (!indeg[v])
			queue[tail++] = v;
	while (head < tail) {
		uint32_t u = queue[head++];

		for (uint32_t e = off[u]; e < off[u + 1]; e++)
			if (--indeg[adj[e]] == 0)
				queue[tail++] = adj[e];
	}
	if (tail == n)
		goto out;

	/* Every task left has a predecessor left: walking back through such
	 * predecessors n times from any of them ends on a cycle. Predecessors
	 * in CSR form, reusing adj and off. */
	wl_group_edges(w, true, off, adj);
	for (uint32_t k = 0; k < m; k++)
		adj[k] = w->edges[adj[k]].src;
	{
		uint32_t v = 0;

		while (!indeg[v])
			v++;
		for (uint32_t step = 0; step < n; step++) {
			uint32_t e = off[v];

			while (!indeg[adj[e]])
				e++;
			v = adj[e];
		}
		*on_cycle = v;
	}
	rc = -TDM_EINVAL;
out:
	free(off);
	free(adj);
	free(indeg);
	free(queue);
	return rc;
}

int wl_to_dag(const struct workload *w, unsigned ndev, const double *speed, struct wl_dag *d)
{
	uint32_t n, m;
	size_t ncost;

	memset(d, 0, sizeof(*d));
	if (!w || !ndev || (w->ntasks && !w->tasks) || (w->nedges && !w->edges))
		return -TDM_EINVAL;
	n = w->ntasks;
	m = w->nedges;
	if (n && ndev > SIZE_MAX / sizeof(double) / n)
		return -TDM_EINVAL;
	for (unsigned k = 0; speed && k < ndev; k++)
		if (!isfinite(speed[k]) || !(speed[k] > 0))
			return -TDM_EINVAL;
	for (uint32_t e = 0; e < m; e++)
		if (w->edges[e].src >= n || w->edges[e].dst >= n)
			return -TDM_EINVAL;

	ncost = (size_t)n * ndev;
	d->cost = malloc((ncost ? ncost : 1) * sizeof(*d->cost));
	d->succ_off = calloc((size_t)n + 1, sizeof(*d->succ_off));
	d->succ = malloc((m ? m : 1) * sizeof(*d->succ));
	d->edge_data = malloc((m ? m : 1) * sizeof(*d->edge_data));
	if (!d->cost || !d->succ_off || !d->succ || !d->edge_data) {
		wl_dag_free(d);
		return -TDM_ENOMEM;
	}
	d->ndev = ndev;
	for (uint32_t v = 0; v < n; v++)
		for (unsigned k = 0; k < ndev; k++)
			d->cost[(size_t)v * ndev + k] =
			        speed ? w->tasks[v].cost / speed[k] : w->tasks[v].cost;
	/* a stable grouping by source, so sorted edges stay sorted */
	wl_group_edges(w, false, d->succ_off, d->succ);
	for (uint32_t k = 0; k < m; k++) {
		d->edge_data[k] = w->edges[d->succ[k]].data;
		d->succ[k] = w->edges[d->succ[k]].dst;
	}
	d->g = (struct plan_dag){ .n = n,
		                  .cost = d->cost,
		                  .succ_off = d->succ_off,
		                  .succ = d->succ,
		                  .edge_data = d->edge_data };
	return 0;
}

void wl_dag_free(struct wl_dag *d)
{
	if (!d)
		return;
	free(d->cost);
	free(d->succ_off);
	free(d->succ);
	free(d->edge_data);
	memset(d, 0, sizeof(*d));
}

/* ---- STG ------------------------------------------------------------------- */

struct stg {
	const char *name;
	char *err;
	size_t errlen;
	unsigned long line;
	struct workload *w;
	uint32_t task_cap, edge_cap;
	uint32_t *mark; /* mark[p] == k + 1: p already named as a predecessor of k */
	uint32_t mark_cap;
};

static int stg_fail(struct stg *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int stg_fail(struct stg *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (s->err && s->errlen) {
		n = snprintf(s->err, s->errlen, "%s:%lu: ", s->name, s->line ? s->line : 1);
		if (n >= 0 && (size_t)n < s->errlen) {
			va_start(ap, fmt);
			vsnprintf(s->err + n, s->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -TDM_EINVAL;
}

static int stg_nomem(struct stg *s)
{
	err_printf(s->err, s->errlen, "%s: out of memory", s->name);
	return -TDM_ENOMEM;
}

/* The next blank-separated token of [*q, end), or false at the end. */
static bool next_tok(const char **q, const char *end, const char **tok, int *toklen)
{
	const char *p = *q, *t;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end) {
		*q = p;
		return false;
	}
	t = p;
	while (p < end && *p != ' ' && *p != '\t')
		p++;
	*tok = t;
	/* shown with %.*s: long tokens are cut (lines are printable ASCII) */
	*toklen = p - t > 24 ? 24 : (int)(p - t);
	*q = p;
	return true;
}

enum num { NUM_OK, NUM_BAD, NUM_NEG, NUM_BIG };

/* A decimal integer in 0 .. max; the token ends at the next blank. */
static enum num parse_num(const char *t, const char *end, uint64_t max, uint64_t *v)
{
	bool neg = false, big = false;
	uint64_t x = 0;
	const char *p = t;

	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	if (p == end || *p == ' ' || *p == '\t')
		return NUM_BAD;
	for (; p < end && *p != ' ' && *p != '\t'; p++) {
		unsigned d = (unsigned char)*p - '0';

		if (d > 9)
			return NUM_BAD;
		if (x > (max - d) / 10)
			big = true;
		else
			x = x * 10 + d;
	}
	if (neg)
		return NUM_NEG;
	if (big)
		return NUM_BIG;
	*v = x;
	return NUM_OK;
}

/* Task line k: "k cost npred pred...", within [q, end). */
static int stg_task(struct stg *s, uint32_t k, uint32_t n, const char *q, const char *end)
{
	struct workload *w = s->w;
	const char *t = NULL;
	int tl = 0;
	uint64_t id = 0, cost, npred, pred;
	enum num r;

	if (!next_tok(&q, end, &t, &tl) || parse_num(t, end, UINT32_MAX, &id) != NUM_OK || id != k)
		return stg_fail(s, "expected task %u, found \"%.*s\"", k, tl, t);
	if (!next_tok(&q, end, &t, &tl))
		return stg_fail(s, "task %u: missing cost", k);
	r = parse_num(t, end, (uint64_t)WL_STG_MAX_COST, &cost);
	if (r == NUM_NEG)
		return stg_fail(s, "task %u: negative cost %.*s", k, tl, t);
	if (r == NUM_BIG)
		return stg_fail(s, "task %u: cost %.*s exceeds %.0f", k, tl, t, WL_STG_MAX_COST);
	if (r != NUM_OK)
		return stg_fail(s, "task %u: cost \"%.*s\" is not a non-negative integer", k, tl,
		                t);
	if (!next_tok(&q, end, &t, &tl))
		return stg_fail(s, "task %u: missing number of predecessors", k);
	r = parse_num(t, end, UINT32_MAX, &npred);
	if (r == NUM_NEG)
		return stg_fail(s, "task %u: negative number of predecessors %.*s", k, tl, t);
	if (r == NUM_BAD)
		return stg_fail(s, "task %u: number of predecessors \"%.*s\" is not a number", k,
		                tl, t);
	if (r == NUM_BIG || npred > k)
		return stg_fail(s, "task %u: %.*s predecessors, but only %u earlier tasks", k, tl,
		                t, k);
	if (k == 0 && cost != 0)
		return stg_fail(s, "dummy entry task 0 must cost 0, not %llu",
		                (unsigned long long)cost);
	if (k == n + 1 && cost != 0)
		return stg_fail(s, "dummy exit task %u must cost 0, not %llu", k,
		                (unsigned long long)cost);

	if (k + 1 > s->mark_cap) {
		uint32_t old = s->mark_cap;

		if (wl_grow((void **)&s->mark, &s->mark_cap, k + 1, sizeof(*s->mark),
		            WL_MAX_TASKS + 2))
			return stg_nomem(s);
		memset(s->mark + old, 0, (size_t)(s->mark_cap - old) * sizeof(*s->mark));
	}
	for (uint64_t j = 0; j < npred; j++) {
		if (!next_tok(&q, end, &t, &tl))
			return stg_fail(s, "task %u: %llu predecessors announced, %llu given", k,
			                (unsigned long long)npred, (unsigned long long)j);
		r = parse_num(t, end, UINT32_MAX, &pred);
		if (r == NUM_BAD || r == NUM_NEG)
			return stg_fail(s, "task %u: predecessor \"%.*s\" is not a task number", k,
			                tl, t);
		if (r == NUM_BIG || pred >= k)
			return stg_fail(s, "predecessor %.*s of task %u is not an earlier task", tl,
			                t, k);
		if (s->mark[pred] == k + 1)
			return stg_fail(s, "predecessor %llu of task %u is listed twice",
			                (unsigned long long)pred, k);
		s->mark[pred] = k + 1;
		if (pred == 0 || k == n + 1)
			continue; /* an edge from the entry or to the exit: dropped */
		if (w->nedges == WL_MAX_EDGES)
			return stg_fail(s, "more than %u edges", WL_MAX_EDGES);
		if (wl_grow((void **)&w->edges, &s->edge_cap, w->nedges + 1, sizeof(*w->edges),
		            WL_MAX_EDGES))
			return stg_nomem(s);
		w->edges[w->nedges++] =
		        (struct wl_edge){ .src = (uint32_t)pred - 1, .dst = k - 1, .data = 0 };
	}
	if (next_tok(&q, end, &t, &tl))
		return stg_fail(s, "task %u: trailing garbage after %llu predecessors: \"%.*s\"", k,
		                (unsigned long long)npred, tl, t);

	if (k >= 1 && k <= n) {
		struct wl_task *task;
		char id_text[16];

		if (wl_grow((void **)&w->tasks, &s->task_cap, k, sizeof(*w->tasks), WL_MAX_TASKS))
			return stg_nomem(s);
		task = &w->tasks[k - 1];
		memset(task, 0, sizeof(*task));
		snprintf(id_text, sizeof(id_text), "%u", k);
		wl_copy_name(task->name, id_text, sizeof(id_text));
		task->cost = (double)cost;
		w->ntasks = k;
	}
	return 0;
}

static int stg_parse(struct stg *s, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	uint32_t n = 0, k = 0; /* n real tasks, k task lines read */
	bool have_n = false;

	if (len > WL_MAX_INPUT)
		return stg_fail(s, "input of %zu bytes exceeds the limit of %zu", len,
		                (size_t)WL_MAX_INPUT);
	while (p < end) {
		const char *ls = p, *le = memchr(p, '\n', (size_t)(end - p)), *q, *t = NULL;
		int tl = 0, rc;
		uint64_t v;
		enum num r;

		p = le ? le + 1 : end;
		if (!le)
			le = end;
		s->line++;
		if (le > ls && le[-1] == '\r')
			le--;
		for (q = ls; q < le && (*q == ' ' || *q == '\t');)
			q++;
		if (q == le || *q == '#')
			continue; /* blank or comment */
		for (const char *c = q; c < le; c++) {
			unsigned char b = (unsigned char)*c;

			if (b >= 0x80)
				return stg_fail(s, "non-ASCII byte 0x%02x", b);
			if ((b < 0x20 && b != '\t') || b == 0x7f)
				return stg_fail(s, "control character 0x%02x", b);
		}

		if (!have_n) {
			next_tok(&q, le, &t, &tl);
			r = parse_num(t, le, WL_MAX_TASKS, &v);
			if (r == NUM_NEG)
				return stg_fail(s, "negative number of tasks %.*s", tl, t);
			if (r == NUM_BIG)
				return stg_fail(s, "number of tasks %.*s exceeds the limit of %u",
				                tl, t, WL_MAX_TASKS);
			if (r != NUM_OK)
				return stg_fail(s, "expected the number of tasks, found \"%.*s\"",
				                tl, t);
			if (v == 0)
				return stg_fail(s, "no tasks (the number of tasks is 0)");
			if (next_tok(&q, le, &t, &tl))
				return stg_fail(
				        s, "trailing garbage after the number of tasks: \"%.*s\"",
				        tl, t);
			n = (uint32_t)v;
			have_n = true;
			continue;
		}
		if (k == n + 2)
			return stg_fail(s, "trailing garbage after the exit task %u", n + 1);
		rc = stg_task(s, k, n, q, le);
		if (rc)
			return rc;
		k++;
	}
	if (!have_n)
		return stg_fail(s, "empty input: expected the number of tasks");
	if (k < n + 2)
		return stg_fail(s,
		                "%u task lines for %u tasks (n + 2, with the dummy entry and exit)",
		                k, n);
	return 0;
}

int wl_stg_parse(const char *text, size_t len, const char *name, struct workload *out, char *err,
                 size_t errlen)
{
	struct stg s = { .name = name ? name : "stg", .err = err, .errlen = errlen, .w = out };
	int rc;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	if (!text && len)
		return stg_fail(&s, "no input");
	rc = stg_parse(&s, text ? text : "", len);
	free(s.mark);
	if (rc) {
		wl_free(out);
		return rc;
	}
	wl_sort_edges(out);
	out->units = WL_UNITS_ABSTRACT;
	wl_copy_name(out->name, wl_basename(name), SIZE_MAX);
	return 0;
}

int wl_stg_load(const char *path, struct workload *out, char *err, size_t errlen)
{
	return wl_load_file(path, wl_stg_parse, out, err, errlen);
}

int wl_load_file(const char *path, wl_parse_fn parse, struct workload *out, char *err,
                 size_t errlen)
{
	char *buf;
	size_t len;
	int rc;

	wl_init(out);
	rc = wl_read_file(path, WL_MAX_INPUT, &buf, &len, err, errlen);
	if (rc)
		return rc;
	rc = parse(buf, len, path, out, err, errlen);
	free(buf);
	return rc;
}
