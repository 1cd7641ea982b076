/* Device timelines with HEFT's insertion policy: sorted busy intervals in
 * arrays, a binary search for the first gap that can start at the ready
 * time, and a max-segment tree over the gaps to skip to the first later gap
 * long enough, so a query costs O(log slots) however fragmented the device. */
#include <stdlib.h>
#include <string.h>

#include "placement/plan_internal.h"

void plan_tl_free(struct plan_tl *t)
{
	free(t->s);
	free(t->f);
	free(t->seg);
	free(t->id);
	memset(t, 0, sizeof(*t));
}

void plan_tl_clear(struct plan_tl *t)
{
	t->len = 0;
}

static double gap_at(const struct plan_tl *t, uint32_t i)
{
	/* The gap in front of the first interval is never looked up in the tree
	 * (plan_tl_find checks the gap at the ready time directly). */
	return i == 0 ? -INFINITY : t->s[i] - t->f[i - 1];
}

static void note_ends(struct plan_tl *t)
{
	if (!t->len)
		return;
	t->first_s = t->s[0];
	t->last_f = t->f[t->len - 1];
	t->max_gap = t->seg[1];
}

void plan_tl_build(struct plan_tl *t)
{
	uint32_t S = t->segcap;
	if (!S)
		return;
	for (uint32_t i = 0; i < S; i++)
		t->seg[S + i] = i < t->len ? gap_at(t, i) : -INFINITY;
	for (uint32_t i = S - 1; i >= 1; i--)
		t->seg[i] = plan_maxd(t->seg[2 * i], t->seg[2 * i + 1]);
	note_ends(t);
}

static int reserve(struct plan_tl *t, uint32_t need)
{
	if (need <= t->cap)
		return 0;
	uint32_t cap = t->cap ? t->cap : 16;
	while (cap < need)
		cap *= 2;
	double *s = realloc(t->s, cap * sizeof(*s));
	if (!s)
		return -TDM_ENOMEM;
	t->s = s;
	double *f = realloc(t->f, cap * sizeof(*f));
	if (!f)
		return -TDM_ENOMEM;
	t->f = f;
	uint32_t *id = realloc(t->id, cap * sizeof(*id));
	if (!id)
		return -TDM_ENOMEM;
	t->id = id;
	double *seg = realloc(t->seg, 2 * (size_t)cap * sizeof(*seg));
	if (!seg)
		return -TDM_ENOMEM;
	t->seg = seg;
	t->cap = cap;
	t->segcap = cap; /* a power of two */
	plan_tl_build(t);
	return 0;
}

int plan_tl_push(struct plan_tl *t, double s, double f, uint32_t id)
{
	if (t->len == t->cap) {
		int err = reserve(t, t->len + 1);
		if (err)
			return err;
	}
	t->s[t->len] = s;
	t->f[t->len] = f;
	t->id[t->len] = id;
	t->len++;
	return 0;
}

/* First index >= a whose gap is >= x, or UINT32_MAX: up from leaf a
 * through the subtrees that cover [a, segcap) left to right, to the first
 * whose maximum is >= x, then down to its leftmost such leaf. */
static uint32_t seg_first(const struct plan_tl *t, uint32_t a, double x)
{
	uint32_t S = t->segcap;
	if (a >= S)
		return UINT32_MAX;
	uint32_t i = S + a;
	while (!(t->seg[i] >= x)) {
		/* A right child ends its parent's range: climb. */
		for (; i & 1; i >>= 1)
			if (i == 1)
				return UINT32_MAX;
		i++;
	}
	while (i < S) {
		i *= 2;
		if (!(t->seg[i] >= x))
			i++;
	}
	return i - S;
}

double plan_tl_find(const struct plan_tl *t, double ready, double dur, uint32_t *pos)
{
	uint32_t n = t->len;
	bool exact;
	double at = plan_tl_bound(t, ready, dur, &exact);
	if (exact) {
		*pos = n;
		return at;
	}
	/* lo: the first interval still busy after ready (f sorted; n >= 1
	 * here). Without branches (which way each step goes is a coin toss),
	 * both of the next step's probes on their way. */
	const double *base = t->f;
	for (uint32_t len = n; len > 1;) {
		uint32_t half = len / 2;
		__builtin_prefetch(base + half / 2);
		__builtin_prefetch(base + half + half / 2);
		base = base[half] <= ready ? base + half : base;
		len -= half;
	}
	uint32_t lo = (uint32_t)(base - t->f) + (*base <= ready);
	if (lo == n) {
		*pos = n;
		return ready;
	}
	/* The gap in front of interval lo starts at ready (the one before it
	 * ended by then). */
	if (ready + dur <= t->s[lo]) {
		*pos = lo;
		return ready;
	}
	/* Later gaps lie wholly after ready: [f[j-1], s[j]). */
	uint32_t from = lo + 1;
	while (from < n) {
		uint32_t j = seg_first(t, from, dur);
		if (j == UINT32_MAX || j >= n)
			break;
		if (t->f[j - 1] + dur <= t->s[j]) {
			*pos = j;
			return t->f[j - 1];
		}
		from = j + 1; /* rounding: the gap is a hair too short */
	}
	*pos = n;
	return t->f[n - 1];
}

int plan_tl_insert(struct plan_tl *t, uint32_t pos, double s, double f, uint32_t id)
{
	if (t->len == t->cap) {
		int err = reserve(t, t->len + 1);
		if (err)
			return err;
	}
	uint32_t n = t->len;
	memmove(t->s + pos + 1, t->s + pos, (n - pos) * sizeof(double));
	memmove(t->f + pos + 1, t->f + pos, (n - pos) * sizeof(double));
	memmove(t->id + pos + 1, t->id + pos, (n - pos) * sizeof(uint32_t));
	t->s[pos] = s;
	t->f[pos] = f;
	t->id[pos] = id;
	t->len = ++n;
	/* Leaves pos..n-1 changed (pos, pos+1 new gaps, the rest shifted). */
	uint32_t S = t->segcap;
	for (uint32_t i = pos; i < n; i++)
		t->seg[S + i] = gap_at(t, i);
	uint32_t a = S + pos, b = S + n - 1;
	while (a > 1) {
		a /= 2;
		b /= 2;
		if (a == b) {
			/* One node changed below: once its maximum stays, so do
			 * its ancestors' (an append usually stops here). */
			double m = plan_maxd(t->seg[2 * a], t->seg[2 * a + 1]);
			if (m == t->seg[a])
				break;
			t->seg[a] = m;
			continue;
		}
		for (uint32_t i = a; i <= b; i++)
			t->seg[i] = plan_maxd(t->seg[2 * i], t->seg[2 * i + 1]);
	}
	note_ends(t);
	return 0;
}
