/* Whole-graph planning: HEFT's and PEFT's published examples (ranks, OCT
 * table, makespans), random DAGs (every schedule valid and above the lower
 * bounds, with device offsets, refinement and plan repair), lower bounds on
 * hand-solved cases, the timeline against a naive scan, error paths and the
 * checker on hand-broken schedules, and the time to plan a 20,000-task
 * graph. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "placement/plan.h"
#include "placement/plan_internal.h"

/* ---- a test graph and machine ------------------------------------------------ */

struct edge {
	uint32_t u, v;
	double data;
};

struct tg {
	uint32_t n;
	unsigned ndev, nnodes;
	double *cost;
	uint32_t *off, *succ;
	double *data;
	uint16_t *node;
	double *lat, *inv_bw;
	struct plan_dag g;
	struct plan_machine m;
};

/* Builds the CSR from an edge list (any order); cost is copied. */
static void tg_init(struct tg *t, uint32_t n, unsigned ndev, const double *cost, size_t ne,
                    const struct edge *e)
{
	memset(t, 0, sizeof(*t));
	t->n = n;
	t->ndev = ndev;
	t->cost = malloc((size_t)n * ndev * sizeof(double) + 1);
	memcpy(t->cost, cost, (size_t)n * ndev * sizeof(double));
	t->off = calloc(n + 1, sizeof(uint32_t));
	t->succ = malloc((ne + 1) * sizeof(uint32_t));
	t->data = malloc((ne + 1) * sizeof(double));
	for (size_t i = 0; i < ne; i++)
		t->off[e[i].u + 1]++;
	for (uint32_t v = 0; v < n; v++)
		t->off[v + 1] += t->off[v];
	uint32_t *cur = malloc((n + 1) * sizeof(uint32_t));
	memcpy(cur, t->off, n * sizeof(uint32_t));
	for (size_t i = 0; i < ne; i++) {
		t->succ[cur[e[i].u]] = e[i].v;
		t->data[cur[e[i].u]++] = e[i].data;
	}
	free(cur);
	t->g = (struct plan_dag){
		.n = n, .cost = t->cost, .succ_off = t->off, .succ = t->succ, .edge_data = t->data
	};
}

/* Machine: device d on node[d]; lat and inv_bw [nnodes * nnodes]. */
static void tg_machine(struct tg *t, unsigned nnodes, const uint16_t *node, const double *lat,
                       const double *inv_bw)
{
	t->nnodes = nnodes;
	t->node = malloc(t->ndev * sizeof(uint16_t));
	memcpy(t->node, node, t->ndev * sizeof(uint16_t));
	t->lat = malloc(nnodes * nnodes * sizeof(double));
	memcpy(t->lat, lat, nnodes * nnodes * sizeof(double));
	t->inv_bw = malloc(nnodes * nnodes * sizeof(double));
	memcpy(t->inv_bw, inv_bw, nnodes * nnodes * sizeof(double));
	t->m = (struct plan_machine){ .ndev = t->ndev,
		                      .node = t->node,
		                      .nnodes = nnodes,
		                      .lat = t->lat,
		                      .inv_bw = t->inv_bw };
}

/* Each device its own node, no latency, one time unit per unit of data: the
 * papers' setting, where an edge's weight is its communication time. */
static void tg_paper_machine(struct tg *t)
{
	unsigned p = t->ndev;
	uint16_t node[16];
	double lat[256], bw[256];
	for (unsigned d = 0; d < p; d++)
		node[d] = (uint16_t)d;
	for (unsigned i = 0; i < p * p; i++) {
		lat[i] = 0;
		bw[i] = 1;
	}
	tg_machine(t, p, node, lat, bw);
}

static void tg_free(struct tg *t)
{
	free(t->cost);
	free(t->off);
	free(t->succ);
	free(t->data);
	free(t->node);
	free(t->lat);
	free(t->inv_bw);
}

static uint64_t rng_next(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint32_t rnd(uint64_t *x, uint32_t n)
{
	return (uint32_t)(rng_next(x) % n);
}

static double rndf(uint64_t *x, double lo, double hi)
{
	return lo + (hi - lo) * ((double)(rng_next(x) >> 11) * 0x1.0p-53);
}

static void assert_slots_equal(const struct plan_slot *a, const struct plan_slot *b, uint32_t n)
{
	for (uint32_t v = 0; v < n; v++)
		if (a[v].dev != b[v].dev || a[v].start != b[v].start || a[v].finish != b[v].finish)
			fail_msg("task %u: device %u [%.17g, %.17g) vs device %u [%.17g, %.17g)", v,
			         a[v].dev, a[v].start, a[v].finish, b[v].dev, b[v].start,
			         b[v].finish);
}

/* Asserts that s is valid and not shorter than the lower bounds; returns
 * the makespan. */
static double assert_valid(const struct tg *t, const struct plan_slot *s)
{
	char why[256];
	int err = plan_check(&t->g, &t->m, s, why, sizeof(why));
	if (err)
		fail_msg("invalid schedule: %s", why);
	double mk = 0;
	for (uint32_t v = 0; v < t->n; v++)
		mk = fmax(mk, s[v].finish);
	double cp, area;
	assert_int_equal(plan_lower_bounds(&t->g, &t->m, &cp, &area), 0);
	double lb = plan_lower_bound(cp, area);
	if (mk < lb * (1 - 1e-9))
		fail_msg("makespan %.17g below lower bound %.17g (cp %.17g, area %.17g)", mk, lb,
		         cp, area);
	return mk;
}

/* ---- Topcuoglu, Hariri, Wu 2002, Fig. 2 --------------------------------------- */

static const double topc_cost[10 * 3] = {
	14, 16, 9, 13, 19, 18, 11, 13, 19, 13, 8,  17, 12, 13, 10,
	13, 16, 9, 7,  15, 11, 5,  11, 14, 18, 12, 20, 21, 7,  16,
};
static const struct edge topc_edges[] = {
	{ 0, 1, 18 }, { 0, 2, 12 }, { 0, 3, 9 },  { 0, 4, 11 }, { 0, 5, 14 },
	{ 1, 7, 19 }, { 1, 8, 16 }, { 2, 6, 23 }, { 3, 7, 27 }, { 3, 8, 23 },
	{ 4, 8, 13 }, { 5, 7, 15 }, { 6, 9, 17 }, { 7, 9, 11 }, { 8, 9, 13 },
};
#define NTOPC_EDGES (sizeof(topc_edges) / sizeof(topc_edges[0]))

static void topc_graph(struct tg *t)
{
	tg_init(t, 10, 3, topc_cost, NTOPC_EDGES, topc_edges);
	tg_paper_machine(t);
}

static void test_heft_topcuoglu(void **state)
{
	(void)state;
	struct tg t;
	topc_graph(&t);
	static const double want[10] = { 108.0,     77.0,      80.0,      80.0,      69.0,
		                         190.0 / 3, 128.0 / 3, 107.0 / 3, 133.0 / 3, 44.0 / 3 };
	double ru[10], rd[10];
	assert_int_equal(plan_rank_upward(&t.g, &t.m, ru), 0);
	for (int v = 0; v < 10; v++)
		assert_true(fabs(ru[v] - want[v]) < 1e-3);
	/* rank_d: 0 at the entry; rank_u + rank_d is at most the critical
	 * path (rank_u of the entry), reached on it, e.g. at the only exit. */
	assert_int_equal(plan_rank_downward(&t.g, &t.m, rd), 0);
	assert_true(fabs(rd[0]) < 1e-12);
	double cpl = 0;
	for (int v = 0; v < 10; v++) {
		assert_true(ru[v] + rd[v] <= ru[0] + 1e-9);
		cpl = fmax(cpl, ru[v] + rd[v]);
	}
	assert_true(fabs(cpl - ru[0]) < 1e-9);
	assert_true(fabs(rd[9] + 44.0 / 3 - ru[0]) < 1e-9);

	struct plan_ws *ws = plan_ws_new();
	struct plan_slot s[10];
	struct plan_opts o = { .method = PLAN_HEFT };
	double mk = 0;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	assert_true(mk == 80.0);
	assert_true(assert_valid(&t, s) == 80.0);
	/* The paper's Fig. 4 (a): n1 on P3 at 0-9, n10 ends at 80 on P2. */
	assert_int_equal(s[0].dev, 2);
	assert_true(s[0].start == 0 && s[0].finish == 9);
	assert_int_equal(s[9].dev, 1);
	assert_true(s[9].finish == 80);

	/* Refinement never does worse and is deterministic. */
	o.refine_iters = 16;
	o.seed = 42;
	double mk2;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk2), 0);
	assert_true(mk2 <= 80.0);
	assert_valid(&t, s);
	plan_ws_free(ws);
	tg_free(&t);
}

/* The same graph numbered backwards (not a topological order): the same
 * ranks, permuted, and a valid schedule. */
static void test_heft_topcuoglu_renumbered(void **state)
{
	(void)state;
	double cost[30];
	struct edge e[NTOPC_EDGES];
	for (int v = 0; v < 10; v++)
		memcpy(&cost[(9 - v) * 3], &topc_cost[v * 3], 3 * sizeof(double));
	for (size_t i = 0; i < NTOPC_EDGES; i++)
		e[i] = (struct edge){ 9 - topc_edges[i].u, 9 - topc_edges[i].v,
			              topc_edges[i].data };
	struct tg t, ref;
	tg_init(&t, 10, 3, cost, NTOPC_EDGES, e);
	tg_paper_machine(&t);
	topc_graph(&ref);
	double ru[10], rr[10], ot[30], orf[30];
	assert_int_equal(plan_rank_upward(&t.g, &t.m, ru), 0);
	assert_int_equal(plan_rank_upward(&ref.g, &ref.m, rr), 0);
	assert_int_equal(plan_oct(&t.g, &t.m, ot), 0);
	assert_int_equal(plan_oct(&ref.g, &ref.m, orf), 0);
	for (int v = 0; v < 10; v++) {
		assert_true(fabs(ru[9 - v] - rr[v]) < 1e-9);
		for (int d = 0; d < 3; d++)
			assert_true(ot[(9 - v) * 3 + d] == orf[v * 3 + d]);
	}
	struct plan_slot s[10];
	struct plan_ws *ws = plan_ws_new();
	double mk;
	for (int meth = 0; meth < 2; meth++) {
		struct plan_opts o = { .method = (enum plan_method)meth };
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		assert_true(assert_valid(&t, s) == mk);
	}
	plan_ws_free(ws);
	tg_free(&t);
	tg_free(&ref);
}

/* ---- Arabnejad, Barbosa 2014, Fig. 2 ------------------------------------------ */

static const double arab_cost[10 * 3] = {
	22, 21, 36, 22, 18, 18, 32, 27, 43, 7,  10, 4, 29, 27, 35,
	26, 17, 24, 14, 25, 30, 29, 23, 36, 15, 21, 8, 13, 16, 33,
};
static const struct edge arab_edges[] = {
	{ 0, 1, 17 }, { 0, 2, 31 }, { 0, 3, 29 }, { 0, 4, 13 }, { 0, 5, 7 },
	{ 1, 7, 3 },  { 1, 8, 30 }, { 2, 6, 16 }, { 3, 7, 11 }, { 3, 8, 7 },
	{ 4, 8, 57 }, { 5, 7, 5 },  { 6, 9, 9 },  { 7, 9, 42 }, { 8, 9, 7 },
};

static void test_peft_arabnejad(void **state)
{
	(void)state;
	struct tg t;
	tg_init(&t, 10, 3, arab_cost, sizeof(arab_edges) / sizeof(arab_edges[0]), arab_edges);
	tg_paper_machine(&t);
	static const double want_oct[30] = {
		64, 68, 86, 42, 39, 42, 27, 41, 43, 42, 39, 50, 28, 37, 28,
		42, 39, 44, 13, 16, 22, 13, 16, 33, 13, 16, 20, 0,  0,  0,
	};
	double oct[30];
	assert_int_equal(plan_oct(&t.g, &t.m, oct), 0);
	for (int i = 0; i < 30; i++)
		if (oct[i] != want_oct[i])
			fail_msg("OCT(T%d, P%d) = %g, want %g", i / 3, i % 3, oct[i], want_oct[i]);

	struct plan_ws *ws = plan_ws_new();
	struct plan_slot s[10];
	double mk;
	struct plan_opts o = { .method = PLAN_PEFT };
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	assert_true(mk == 122);
	assert_true(assert_valid(&t, s) == 122);
	o.method = PLAN_HEFT;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	assert_true(mk == 133);
	assert_true(assert_valid(&t, s) == 133);

	for (int meth = 0; meth < 2; meth++) {
		o = (struct plan_opts){ .method = (enum plan_method)meth,
			                .refine_iters = 16,
			                .seed = 7 };
		double mk2;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk2), 0);
		assert_true(mk2 <= (meth ? 122 : 133));
		assert_true(assert_valid(&t, s) == mk2);
	}
	plan_ws_free(ws);
	tg_free(&t);
}

/* ---- random DAGs ------------------------------------------------------------------ */

/* A layered DAG of n tasks with shuffled numbers, ndev devices on nnodes
 * nodes, random costs (some devices not allowed, some zero costs) and
 * random edge data. */
static void gen_random(struct tg *t, uint64_t *rng, uint32_t n, unsigned ndev, unsigned nnodes)
{
	uint32_t *layer_start = malloc((n + 1) * sizeof(uint32_t)), *layer_of = malloc(n * 4);
	uint32_t *perm = malloc(n * sizeof(uint32_t));
	double *cost = malloc((size_t)n * ndev * sizeof(double));
	size_t cap = 4 * (size_t)n + 4, ne = 0;
	struct edge *e = malloc(cap * sizeof(*e));
	double *speed = malloc(ndev * sizeof(double));
	for (unsigned d = 0; d < ndev; d++)
		speed[d] = rndf(rng, 0.3, 3);

	uint32_t width = 1 + rnd(rng, 12), L = 0;
	layer_start[0] = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (i > 0 && (i - layer_start[L]) >= width) {
			layer_start[++L] = i;
			width = 1 + rnd(rng, 12);
		}
		layer_of[i] = L;
	}
	for (uint32_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint32_t i = n; i > 1; i--) {
		uint32_t j = rnd(rng, i), x = perm[i - 1];
		perm[i - 1] = perm[j];
		perm[j] = x;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t l = layer_of[i];
		if (l > 0) {
			uint32_t np = 1 + rnd(rng, 3);
			for (uint32_t k = 0; k < np; k++) {
				uint32_t j;
				if (rnd(rng, 4)) /* the layer just before */
					j = layer_start[l - 1] +
					    rnd(rng, layer_start[l] - layer_start[l - 1]);
				else
					j = rnd(rng, layer_start[l]);
				bool dup = false;
				for (size_t q = 0; q < ne; q++)
					if (e[q].u == perm[j] && e[q].v == perm[i])
						dup = true;
				if (!dup)
					e[ne++] =
					        (struct edge){ perm[j], perm[i], rndf(rng, 0, 50) };
			}
		}
		double base = rndf(rng, 1, 100);
		bool zero = rnd(rng, 50) == 0;
		double *c = &cost[(size_t)perm[i] * ndev];
		unsigned allowed = 0;
		for (unsigned d = 0; d < ndev; d++) {
			uint32_t r = rnd(rng, 20);
			if (r == 0)
				c[d] = -1;
			else if (r == 1)
				c[d] = rnd(rng, 2) ? NAN : INFINITY;
			else {
				c[d] = zero ? 0 : base * speed[d] * rndf(rng, 0.5, 2);
				allowed++;
			}
		}
		if (!allowed)
			c[rnd(rng, ndev)] = zero ? 0 : base;
	}
	tg_init(t, n, ndev, cost, ne, e);
	uint16_t *node = malloc(ndev * sizeof(uint16_t));
	double *lat = malloc(nnodes * nnodes * sizeof(double)),
	       *bw = malloc(nnodes * nnodes * sizeof(double));
	for (unsigned d = 0; d < ndev; d++)
		node[d] = (uint16_t)(d < nnodes ? d : rnd(rng, nnodes));
	for (unsigned i = 0; i < nnodes * nnodes; i++) {
		lat[i] = rndf(rng, 0, 5);
		bw[i] = rndf(rng, 0, 0.5);
	}
	tg_machine(t, nnodes, node, lat, bw);
	free(node);
	free(lat);
	free(bw);
	free(layer_start);
	free(layer_of);
	free(perm);
	free(cost);
	free(e);
	free(speed);
}

static void gen_case(struct tg *t, uint64_t *rng)
{
	uint32_t n = 10 + rnd(rng, 191);
	unsigned ndev = 1 + rnd(rng, 6);
	unsigned nnodes = 1 + rnd(rng, ndev < 3 ? ndev : 3);
	gen_random(t, rng, n, ndev, nnodes);
}

static void test_random_dags(void **state)
{
	(void)state;
	uint64_t rng = 12345;
	struct plan_ws *ws = plan_ws_new(), *ws2 = plan_ws_new();
	unsigned improved = 0, runs = 0;
	for (int it = 0; it < 50; it++) {
		struct tg t;
		gen_case(&t, &rng);
		uint32_t n = t.n;
		struct plan_slot *s = malloc(n * sizeof(*s)), *s2 = malloc(n * sizeof(*s2));
		double ready[8];
		for (unsigned d = 0; d < t.ndev; d++)
			ready[d] = rnd(&rng, 2) ? rndf(&rng, 0, 200) : 0;
		for (int meth = 0; meth < 2; meth++)
			for (int off = 0; off < 2; off++) {
				struct plan_opts o = { .method = (enum plan_method)meth,
					               .dev_ready = off ? ready : NULL };
				double mk0, mk1, mk2;
				assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk0), 0);
				assert_true(assert_valid(&t, s) == mk0);
				for (uint32_t v = 0; off && v < n; v++)
					assert_true(s[v].start >= ready[s[v].dev]);

				o.refine_iters = 16;
				o.seed = (uint64_t)it * 77 + 1;
				assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk1), 0);
				assert_true(assert_valid(&t, s) == mk1);
				assert_true(mk1 <= mk0);
				for (uint32_t v = 0; off && v < n; v++)
					assert_true(s[v].start >= ready[s[v].dev]);
				improved += mk1 < mk0;
				runs++;
				/* Same inputs and seed, another ws: the same schedule. */
				assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws2, s2, &mk2), 0);
				assert_true(mk2 == mk1);
				assert_slots_equal(s, s2, n);
			}
		free(s);
		free(s2);
		tg_free(&t);
	}
	fprintf(stderr, "refinement shortened %u of %u random schedules\n", improved, runs);
	assert_true(improved > 0);
	plan_ws_free(ws);
	plan_ws_free(ws2);
}

/* plan_device_order: each device's tasks in start order, every task once;
 * refused after a refined plan or one around fixed tasks (the timelines
 * then hold other schedules or merged slots). */
static void test_device_order(void **state)
{
	(void)state;
	uint64_t rng = 99;
	struct plan_ws *ws = plan_ws_new();
	for (int it = 0; it < 20; it++) {
		struct tg t;
		gen_case(&t, &rng);
		uint32_t n = t.n;
		struct plan_slot *s = malloc(n * sizeof(*s));
		bool *seen = calloc(n, sizeof(bool)), *fixed = calloc(n, sizeof(bool));
		struct plan_opts o = { .method = (enum plan_method)(it & 1) };
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, NULL), 0);
		uint32_t total = 0;
		for (unsigned d = 0; d < t.ndev; d++) {
			const uint32_t *ids;
			uint32_t len;
			assert_int_equal(plan_device_order(ws, d, &ids, &len), 0);
			for (uint32_t i = 0; i < len; i++) {
				assert_true(ids[i] < n && !seen[ids[i]]);
				seen[ids[i]] = true;
				assert_int_equal(s[ids[i]].dev, d);
				assert_true(i == 0 || s[ids[i - 1]].start <= s[ids[i]].start);
			}
			total += len;
		}
		assert_int_equal(total, n);
		const uint32_t *ids;
		uint32_t len;
		assert_int_equal(plan_device_order(ws, t.ndev, &ids, &len), -TDM_EINVAL);

		o.refine_iters = 2;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, NULL), 0);
		assert_int_equal(plan_device_order(ws, 0, &ids, &len), -TDM_EINVAL);

		/* the first task in topological order fixed where it was */
		o.refine_iters = 0;
		o.fixed = fixed;
		for (uint32_t v = 0; v < n; v++) {
			bool root = true;
			for (uint32_t u = 0; u < n && root; u++)
				for (uint32_t k = t.off[u]; k < t.off[u + 1]; k++)
					root &= t.succ[k] != v;
			if (root) {
				fixed[v] = true;
				break;
			}
		}
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, NULL), 0);
		assert_int_equal(plan_device_order(ws, 0, &ids, &len), -TDM_EINVAL);
		free(s);
		free(seen);
		free(fixed);
		tg_free(&t);
	}
	plan_ws_free(ws);
}

/* ---- the plain algorithm, as published ------------------------------------------ */

/* HEFT (PEFT: meth 1) written out plainly: the ready task of highest
 * priority (ties within 1e-12 relative to the lower index), then every
 * device in index order, each searched by a naive gap scan, the least
 * finish time (plus OCT) winning, the lower index on ties. */
struct ref_tl {
	double *s, *f;
	uint32_t len;
};

static bool ref_before(const double *prio, uint32_t a, uint32_t b)
{
	double tol = 1e-12 * fmax(fabs(prio[a]), fabs(prio[b]));
	if (prio[a] > prio[b] + tol)
		return true;
	if (prio[b] > prio[a] + tol)
		return false;
	return a < b;
}

static void ref_schedule(const struct tg *t, int meth, const double *dev_ready,
                         struct plan_slot *out)
{
	uint32_t n = t->n;
	unsigned nd = t->ndev;
	double *prio = malloc(n * sizeof(double)), *oct = NULL;
	if (meth) {
		oct = malloc((size_t)n * nd * sizeof(double));
		assert_int_equal(plan_oct(&t->g, &t->m, oct), 0);
		for (uint32_t v = 0; v < n; v++) {
			double sum = 0;
			unsigned k = 0;
			for (unsigned d = 0; d < nd; d++)
				if (plan_allowed(t->cost[(size_t)v * nd + d])) {
					sum += oct[(size_t)v * nd + d];
					k++;
				}
			prio[v] = sum / k;
		}
	} else {
		assert_int_equal(plan_rank_upward(&t->g, &t->m, prio), 0);
	}
	uint32_t *npred = calloc(n, sizeof(uint32_t));
	bool *done = calloc(n, sizeof(bool));
	for (uint32_t k = 0; k < t->off[n]; k++)
		npred[t->succ[k]]++;
	struct ref_tl *tl = calloc(nd, sizeof(*tl));
	for (unsigned d = 0; d < nd; d++) {
		tl[d].s = malloc((n + 1) * sizeof(double));
		tl[d].f = malloc((n + 1) * sizeof(double));
	}
	for (uint32_t step = 0; step < n; step++) {
		uint32_t v = UINT32_MAX;
		for (uint32_t x = 0; x < n; x++)
			if (!done[x] && !npred[x] && (v == UINT32_MAX || ref_before(prio, x, v)))
				v = x;
		assert_true(v != UINT32_MAX);
		double best = INFINITY, bs = 0, bf = 0;
		unsigned bd = UINT32_MAX;
		uint32_t bpos = 0;
		for (unsigned d = 0; d < nd; d++) {
			double c = t->cost[(size_t)v * nd + d];
			if (!plan_allowed(c))
				continue;
			double ready = dev_ready ? dev_ready[d] : 0;
			for (uint32_t u = 0; u < n; u++)
				for (uint32_t k = t->off[u]; k < t->off[u + 1]; k++)
					if (t->succ[k] == v) {
						unsigned a = t->node[out[u].dev], b = t->node[d];
						double at = out[u].finish;
						if (a != b)
							at += t->lat[a * t->nnodes + b] +
							      t->data[k] *
							              t->inv_bw[a * t->nnodes + b];
						ready = fmax(ready, at);
					}
			/* the first gap, in start order, that fits */
			uint32_t j = 0;
			double st = ready;
			for (;; j++) {
				st = ready;
				if (j > 0 && tl[d].f[j - 1] > st)
					st = tl[d].f[j - 1];
				if (j == tl[d].len || st + c <= tl[d].s[j])
					break;
			}
			double key = st + c + (meth ? oct[(size_t)v * nd + d] : 0);
			if (bd == UINT32_MAX || key < best) {
				best = key;
				bd = d;
				bs = st;
				bf = st + c;
				bpos = j;
			}
		}
		struct ref_tl *x = &tl[bd];
		memmove(x->s + bpos + 1, x->s + bpos, (x->len - bpos) * sizeof(double));
		memmove(x->f + bpos + 1, x->f + bpos, (x->len - bpos) * sizeof(double));
		x->s[bpos] = bs;
		x->f[bpos] = bf;
		x->len++;
		out[v] = (struct plan_slot){ bd, bs, bf };
		done[v] = true;
		for (uint32_t k = t->off[v]; k < t->off[v + 1]; k++)
			npred[t->succ[k]]--;
	}
	for (unsigned d = 0; d < nd; d++) {
		free(tl[d].s);
		free(tl[d].f);
	}
	free(tl);
	free(done);
	free(npred);
	free(prio);
	free(oct);
}

/* The planner's device choice (bounds, pruning, pairs of devices at a
 * time) is the plain algorithm's, slot for slot, for any number of
 * devices (odd, even, over 64), with devices that cannot run a task,
 * zero costs and devices busy at the start. */
static void test_same_as_plain(void **state)
{
	(void)state;
	uint64_t rng = 4242;
	struct plan_ws *ws = plan_ws_new();
	static const unsigned ndevs[] = { 1, 2, 3, 7, 8, 33, 64, 65, 70 };
	for (int it = 0; it < 36; it++) {
		struct tg t;
		unsigned nd = ndevs[it % 9], nnodes = 1 + rnd(&rng, nd < 3 ? nd : 3);
		gen_random(&t, &rng, 20 + rnd(&rng, 100), nd, nnodes);
		uint32_t n = t.n;
		struct plan_slot *s = malloc(n * sizeof(*s)), *want = malloc(n * sizeof(*want));
		double *ready = malloc(nd * sizeof(double));
		for (unsigned d = 0; d < nd; d++)
			ready[d] = rnd(&rng, 2) ? rndf(&rng, 0, 200) : 0;
		for (int meth = 0; meth < 2; meth++)
			for (int off = 0; off < 2; off++) {
				struct plan_opts o = { .method = (enum plan_method)meth,
					               .dev_ready = off ? ready : NULL };
				assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, NULL), 0);
				ref_schedule(&t, meth, off ? ready : NULL, want);
				assert_slots_equal(s, want, n);
			}
		free(s);
		free(want);
		free(ready);
		tg_free(&t);
	}
	plan_ws_free(ws);
}

/* Devices that share a cost column (plan_dag.col) plan exactly as with the
 * column copied out to each of them: the same ranks, OCT, schedules,
 * bounds and checks; a column out of range is refused. */
static void test_shared_columns(void **state)
{
	(void)state;
	uint64_t rng = 777;
	struct plan_ws *ws = plan_ws_new(), *ws2 = plan_ws_new();
	for (int it = 0; it < 30; it++) {
		struct tg t;
		gen_case(&t, &rng);
		uint32_t n = t.n;
		unsigned nd = t.ndev, nc = 1 + rnd(&rng, nd);
		uint32_t col[8];
		for (unsigned d = 0; d < nd; d++)
			col[d] = d < nc ? d : rnd(&rng, nc);
		/* Per column: the generated costs of device k's; each task
		 * keeps a device that can run it. */
		double *cc = malloc((size_t)n * nc * sizeof(double));
		for (uint32_t v = 0; v < n; v++) {
			for (unsigned k = 0; k < nc; k++)
				cc[(size_t)v * nc + k] = t.cost[(size_t)v * nd + k];
			bool any = false;
			for (unsigned d = 0; d < nd; d++)
				any |= plan_allowed(cc[(size_t)v * nc + col[d]]);
			if (!any)
				cc[(size_t)v * nc + col[0]] = rndf(&rng, 1, 50);
			for (unsigned d = 0; d < nd; d++)
				t.cost[(size_t)v * nd + d] = cc[(size_t)v * nc + col[d]];
		}
		struct plan_dag gc = t.g;
		gc.cost = cc;
		gc.col = col;
		gc.ncols = nc;

		double *r1 = malloc(n * sizeof(double)), *r2 = malloc(n * sizeof(double));
		assert_int_equal(plan_rank_upward(&t.g, &t.m, r1), 0);
		assert_int_equal(plan_rank_upward(&gc, &t.m, r2), 0);
		assert_memory_equal(r1, r2, n * sizeof(double));
		double *o1 = malloc((size_t)n * nd * sizeof(double)),
		       *o2 = malloc((size_t)n * nc * sizeof(double));
		assert_int_equal(plan_oct(&t.g, &t.m, o1), 0);
		assert_int_equal(plan_oct(&gc, &t.m, o2), 0);
		for (uint32_t v = 0; v < n; v++)
			for (unsigned d = 0; d < nd; d++)
				assert_true(o1[(size_t)v * nd + d] == o2[(size_t)v * nc + col[d]]);

		struct plan_slot *s1 = malloc(n * sizeof(*s1)), *s2 = malloc(n * sizeof(*s2));
		double ready[8];
		for (unsigned d = 0; d < nd; d++)
			ready[d] = rnd(&rng, 2) ? rndf(&rng, 0, 200) : 0;
		for (int meth = 0; meth < 2; meth++)
			for (uint32_t iters = 0; iters <= 4; iters += 4) {
				struct plan_opts o = { .method = (enum plan_method)meth,
					               .dev_ready = ready,
					               .refine_iters = iters,
					               .seed = (uint64_t)it + 5 };
				double mk1, mk2;
				assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s1, &mk1), 0);
				assert_int_equal(plan_schedule(&gc, &t.m, &o, ws2, s2, &mk2), 0);
				assert_true(mk1 == mk2);
				assert_slots_equal(s1, s2, n);
				char why[256];
				assert_int_equal(plan_check(&gc, &t.m, s2, why, sizeof(why)), 0);
			}
		double cp1, cp2, a1, a2;
		assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp1, &a1), 0);
		assert_int_equal(plan_lower_bounds(&gc, &t.m, &cp2, &a2), 0);
		assert_true(cp1 == cp2 && a1 == a2);

		col[rnd(&rng, nd)] = nc; /* out of range */
		assert_int_equal(plan_schedule(&gc, &t.m, NULL, ws2, s2, NULL), -TDM_EINVAL);
		free(cc);
		free(r1);
		free(r2);
		free(o1);
		free(o2);
		free(s1);
		free(s2);
		tg_free(&t);
	}
	plan_ws_free(ws);
	plan_ws_free(ws2);
}

/* Plan repair: plan, fix every task that started before a random time,
 * change the other tasks' costs, plan again around the fixed ones. */
static void test_repair(void **state)
{
	(void)state;
	uint64_t rng = 999;
	struct plan_ws *ws = plan_ws_new();
	for (int it = 0; it < 50; it++) {
		struct tg t;
		gen_case(&t, &rng);
		uint32_t n = t.n;
		unsigned nd = t.ndev;
		struct plan_slot *s = malloc(n * sizeof(*s)), *old = malloc(n * sizeof(*s));
		bool *fixed = calloc(n, sizeof(bool));
		enum plan_method meth = (enum plan_method)(it & 1);
		struct plan_opts o = { .method = meth };
		double mk;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		assert_valid(&t, s);
		double T = s[rnd(&rng, n)].start;
		uint32_t nfixed = 0;
		for (uint32_t v = 0; v < n; v++) {
			fixed[v] = s[v].start < T;
			nfixed += fixed[v];
			if (fixed[v])
				continue;
			for (unsigned d = 0; d < nd; d++)
				if (plan_allowed(t.cost[v * nd + d]))
					t.cost[v * nd + d] *= rndf(&rng, 0.5, 2);
			/* garbage in the slots to be planned */
			s[v] = (struct plan_slot){ 12345, -1, -1 };
		}
		memcpy(old, s, n * sizeof(*s));
		double ready[8];
		for (unsigned d = 0; d < nd; d++)
			ready[d] = T;
		o.fixed = fixed;
		o.dev_ready = (it & 2) ? ready : NULL;
		o.refine_iters = (it & 4) ? 8 : 0;
		o.seed = (uint64_t)it;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		assert_true(assert_valid(&t, s) == mk);
		for (uint32_t v = 0; v < n; v++) {
			if (fixed[v])
				assert_slots_equal(&s[v], &old[v], 1);
			else if (o.dev_ready)
				assert_true(s[v].start >= T);
		}
		(void)nfixed;
		free(s);
		free(old);
		free(fixed);
		tg_free(&t);
	}
	plan_ws_free(ws);
}

/* Fixed tasks: a fixed task whose predecessor is not fixed is refused;
 * overlapping fixed slots are planned around. */
static void test_repair_errors(void **state)
{
	(void)state;
	struct tg t;
	topc_graph(&t);
	struct plan_ws *ws = plan_ws_new();
	struct plan_slot s[10];
	double mk;
	struct plan_opts o = { .method = PLAN_HEFT };
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	bool fixed[10] = { false };
	fixed[1] = true; /* T0 not fixed */
	o.fixed = fixed;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), -TDM_EINVAL);
	fixed[0] = true;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	assert_valid(&t, s);
	/* T2 fixed on T0's device, overlapping it (as measured slots on a
	 * pipelined device may): the others avoid the union of the two. */
	fixed[2] = true;
	uint32_t d0 = s[0].dev;
	s[2] = (struct plan_slot){ d0, s[0].start + 1, s[0].start + 1 + topc_cost[2 * 3 + d0] };
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	double lo = s[0].start, hi = fmax(s[0].finish, s[2].finish);
	for (uint32_t v = 3; v < 10; v++)
		if (s[v].dev == d0)
			assert_true(s[v].finish <= lo || s[v].start >= hi);
	/* A fixed slot on a device that does not exist, or ending before it
	 * starts. */
	s[2].dev = 3;
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), -TDM_EINVAL);
	s[2] = (struct plan_slot){ d0, 50, 49 };
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), -TDM_EINVAL);
	plan_ws_free(ws);
	tg_free(&t);
}

/* Insertion: one device busy at [5, 6) (a fixed task F); A and B (3 each)
 * and C (2), independent, in that priority order: A fills [0, 3), B does not
 * fit the 2 left before F and goes to [6, 9), C goes back into [3, 5). With
 * the device busy until 1: A [1, 4), B [6, 9), C [9, 11). */
static void test_insertion(void **state)
{
	(void)state;
	double cost[4] = { 1, 3, 3, 2 }; /* F, A, B, C */
	struct tg t;
	tg_init(&t, 4, 1, cost, 0, NULL);
	uint16_t node[1] = { 0 };
	double z[1] = { 0 };
	tg_machine(&t, 1, node, z, z);
	bool fixed[4] = { true, false, false, false };
	struct plan_slot s[4] = { { 0, 5, 6 } };
	struct plan_opts o = { .method = PLAN_HEFT, .fixed = fixed };
	struct plan_ws *ws = plan_ws_new();
	double mk;
	for (int meth = 0; meth < 2; meth++) {
		o.method = (enum plan_method)meth;
		o.dev_ready = NULL;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		assert_true(s[1].start == 0 && s[2].start == 6 && s[3].start == 3 && mk == 9);
		assert_true(s[0].start == 5 && s[0].finish == 6);
		assert_valid(&t, s);
		double ready[1] = { 1 };
		o.dev_ready = ready;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		assert_true(s[1].start == 1 && s[2].start == 6 && s[3].start == 9 && mk == 11);
	}
	plan_ws_free(ws);
	tg_free(&t);
}

/* ---- lower bounds -------------------------------------------------------------------- */

static void test_bounds_chain(void **state)
{
	(void)state;
	enum { N = 7, P = 3 };
	double cost[N * P];
	struct edge e[N - 1];
	double sum = 0;
	for (int v = 0; v < N; v++) {
		for (int d = 0; d < P; d++)
			cost[v * P + d] = v + 1;
		sum += v + 1;
		if (v)
			e[v - 1] = (struct edge){ v - 1, v, 10 };
	}
	struct tg t;
	tg_init(&t, N, P, cost, N - 1, e);
	tg_paper_machine(&t);
	double cp, area;
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), 0);
	assert_true(cp == sum);
	assert_true(fabs(area - sum / P) < 1e-12 * sum);
	/* HEFT keeps the chain on one device: makespan = the bound. */
	struct plan_ws *ws = plan_ws_new();
	struct plan_slot s[N];
	double mk;
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), 0);
	assert_true(mk == sum);
	plan_ws_free(ws);
	tg_free(&t);
}

static void test_bounds_independent(void **state)
{
	(void)state;
	enum { N = 13, P = 4 };
	double cost[N * P];
	for (int i = 0; i < N * P; i++)
		cost[i] = 3.5;
	struct tg t;
	tg_init(&t, N, P, cost, 0, NULL);
	uint16_t node[P] = { 0, 0, 1, 1 };
	double lat[4] = { 0, 1, 1, 0 }, bw[4] = { 0, 1, 1, 0 };
	tg_machine(&t, 2, node, lat, bw);
	double cp, area;
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), 0);
	assert_true(cp == 3.5);
	assert_true(fabs(area - N * 3.5 / P) <= 1e-12 * area);
	struct plan_ws *ws = plan_ws_new();
	struct plan_slot s[N];
	double mk;
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), 0);
	assert_true(mk == 4 * 3.5); /* ceil(13 / 4) tasks on a device */
	assert_valid(&t, s);
	/* Equal ranks go in task order, equal finish times to the lowest
	 * device: task v on device v % 4, in round v / 4. */
	for (uint32_t v = 0; v < N; v++) {
		assert_int_equal(s[v].dev, v % P);
		assert_true(s[v].start == (v / P) * 3.5);
	}
	plan_ws_free(ws);
	tg_free(&t);
}

/* Two kinds: kind A (2 devices) runs class X in 1 and class Y in 10; kind B
 * (1 device) the reverse; 10 tasks of each. Every X on A, every Y on B but y
 * of them on A: A's load (10 + 10 y) / 2 = B's 10 - y at y = 5/6, so
 * T = 55/6; the dual y_A = 1/12, y_B = 10/12 gives the same. */
static void test_bounds_two_kinds(void **state)
{
	(void)state;
	enum { N = 20, P = 3 };
	double cost[N * P];
	for (int v = 0; v < N; v++) {
		bool x = v % 2 == 0;
		cost[v * P + 0] = x ? 1 : 10;
		cost[v * P + 1] = x ? 10 : 1; /* B, between the two A devices */
		cost[v * P + 2] = x ? 1 : 10;
	}
	struct tg t;
	tg_init(&t, N, P, cost, 0, NULL);
	tg_paper_machine(&t);
	double cp, area;
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), 0);
	assert_true(cp == 1);
	if (fabs(area - 55.0 / 6) > 1e-9)
		fail_msg("area bound %.17g, want 55/6", area);
	/* With a class that only B can run (4 tasks of 3 each), B carries at
	 * least 12: T >= 12 and that is reachable (all others on A: X 10,
	 * Y 0 -> 10 / 2 = 5 <= 12). */
	double cost2[(N + 4) * P];
	memcpy(cost2, cost, sizeof(cost));
	for (int v = N; v < N + 4; v++) {
		cost2[v * P + 0] = -1;
		cost2[v * P + 1] = 3;
		cost2[v * P + 2] = -1;
	}
	struct tg t2;
	tg_init(&t2, N + 4, P, cost2, 0, NULL);
	tg_paper_machine(&t2);
	assert_int_equal(plan_lower_bounds(&t2.g, &t2.m, NULL, &area), 0);
	/* B: 12 + 10 - y, A: (10 + 10 y) / 2; balance at 22 - y = 5 + 5 y,
	 * y = 17/6, T = 22 - 17/6 = 115/6. */
	if (fabs(area - 115.0 / 6) > 1e-9)
		fail_msg("area bound %.17g, want 115/6", area);
	tg_free(&t);
	tg_free(&t2);
}

/* The whole LP and the cutting planes agree on random graphs. */
static void test_bounds_methods_agree(void **state)
{
	(void)state;
	uint64_t rng = 31337;
	for (int it = 0; it < 30; it++) {
		struct tg t;
		gen_case(&t, &rng);
		double a1, a2, a0;
		assert_int_equal(plan_area_bound(&t.g, &t.m, PLAN_AREA_DIRECT, &a1), 0);
		assert_int_equal(plan_area_bound(&t.g, &t.m, PLAN_AREA_CUTS, &a2), 0);
		assert_int_equal(plan_area_bound(&t.g, &t.m, PLAN_AREA_AUTO, &a0), 0);
		if (fabs(a1 - a2) > 1e-7 * a1)
			fail_msg("graph %d: LP %.17g, cutting planes %.17g", it, a1, a2);
		assert_true(a0 == a1 || a0 == a2);
		tg_free(&t);
	}
}

/* ---- timelines -------------------------------------------------------------------- */

static double naive_find(const double *s, const double *f, uint32_t n, double ready, double dur)
{
	for (uint32_t j = 0; j <= n; j++) {
		double st = ready;
		if (j > 0 && f[j - 1] > st)
			st = f[j - 1];
		if (j == n || st + dur <= s[j])
			return st;
	}
	return ready;
}

static void test_timeline_vs_naive(void **state)
{
	(void)state;
	uint64_t rng = 5;
	for (int round = 0; round < 20; round++) {
		struct plan_tl tl = { 0 };
		for (int i = 0; i < 600; i++) {
			double ready = rndf(&rng, 0, 1000);
			double dur = rnd(&rng, 10) == 0 ? 0 : rndf(&rng, 0, 20);
			if (rnd(&rng, 3) == 0)
				dur = (double)rnd(&rng, 8); /* exact fits */
			uint32_t pos;
			double st = plan_tl_find(&tl, ready, dur, &pos);
			double want = naive_find(tl.s, tl.f, tl.len, ready, dur);
			if (st != want)
				fail_msg("round %d step %d: found %.17g, naive %.17g", round, i, st,
				         want);
			assert_int_equal(plan_tl_insert(&tl, pos, st, st + dur, (uint32_t)i), 0);
			for (uint32_t k = 1; k < tl.len; k++)
				assert_true(tl.s[k] >= tl.f[k - 1] && tl.s[k] >= tl.s[k - 1]);
		}
		plan_tl_free(&tl);
	}
}

/* ---- errors and the checker ------------------------------------------------------- */

static void test_errors(void **state)
{
	(void)state;
	struct tg t;
	double cost[3 * 2] = { 1, 2, 3, 4, 5, 6 };
	struct edge cyc[] = { { 0, 1, 1 }, { 1, 2, 1 }, { 2, 1, 1 } };
	tg_init(&t, 3, 2, cost, 3, cyc);
	tg_paper_machine(&t);
	double r[6];
	struct plan_slot s[3] = { { 0, 0, 1 }, { 0, 1, 3 }, { 0, 3, 6 } };
	struct plan_ws *ws = plan_ws_new();
	double mk, cp, area;
	char why[200];
	assert_int_equal(plan_rank_upward(&t.g, &t.m, r), -TDM_EINVAL);
	assert_int_equal(plan_rank_downward(&t.g, &t.m, r), -TDM_EINVAL);
	assert_int_equal(plan_oct(&t.g, &t.m, r), -TDM_EINVAL);
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), -TDM_EINVAL);
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), -TDM_EINVAL);
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "cycle"));
	tg_free(&t);

	/* A task no device can run: -1, NaN, infinity. */
	double bad[3 * 2] = { 1, 2, -1, NAN, 5, 6 };
	struct edge ok[] = { { 0, 1, 1 }, { 1, 2, 1 } };
	tg_init(&t, 3, 2, bad, 2, ok);
	tg_paper_machine(&t);
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), -TDM_EINVAL);
	assert_int_equal(plan_rank_upward(&t.g, &t.m, r), -TDM_EINVAL);
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), -TDM_EINVAL);
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "task 1 can run on no device"));
	t.cost[2] = INFINITY;
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), -TDM_EINVAL);
	t.cost[2] = 0; /* zero is allowed */
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), 0);
	assert_int_equal(s[1].dev, 0);
	/* An edge to a task that does not exist. */
	t.succ[1] = 3;
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), -TDM_EINVAL);
	t.succ[1] = 2;
	/* A device on a node that does not exist. */
	t.node[1] = 7;
	assert_int_equal(plan_schedule(&t.g, &t.m, NULL, ws, s, &mk), -TDM_EINVAL);
	t.node[1] = 1;
	/* An unknown method. */
	struct plan_opts o = { .method = (enum plan_method)5 };
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), -TDM_EINVAL);
	tg_free(&t);
	plan_ws_free(ws);
}

/* Checker: hand-built schedules for a 3-task graph 0 -> 1, 0 -> 2 (data 4)
 * on devices 0, 1 (node 0) and 2 (node 1), latency 1, 0.5 per unit. */
static void test_check(void **state)
{
	(void)state;
	double cost[3 * 3] = { 2, 2, 2, 3, 3, 3, 4, 4, -1 };
	struct edge e[] = { { 0, 1, 4 }, { 0, 2, 4 } };
	struct tg t;
	tg_init(&t, 3, 3, cost, 2, e);
	uint16_t node[3] = { 0, 0, 1 };
	double lat[4] = { 0, 1, 1, 0 }, bw[4] = { 0, 0.5, 0.5, 0 };
	tg_machine(&t, 2, node, lat, bw);
	char why[256];
	/* valid: 1 on node 1 starts at 2 + 1 + 2 = 5 */
	struct plan_slot good[3] = { { 0, 0, 2 }, { 2, 5, 8 }, { 0, 2, 6 } };
	assert_int_equal(plan_check(&t.g, &t.m, good, why, sizeof(why)), 0);

	struct plan_slot s[3];
	/* overlap: 2 on device 0 at 1 while 0 runs there until 2 (and 2 then
	 * also starts before 0 finishes, but overlap is reported first) */
	memcpy(s, good, sizeof(s));
	s[2] = (struct plan_slot){ 0, 1, 5 };
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "overlap on device 0"));
	/* overlap without a dependency: 1 and 2 on device 1 */
	struct plan_slot ov[3] = { { 0, 0, 2 }, { 1, 2, 5 }, { 1, 4, 8 } };
	assert_int_equal(plan_check(&t.g, &t.m, ov, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "tasks 1 and 2 overlap on device 1"));
	/* a zero-length task inside another one */
	double c0[9];
	memcpy(c0, cost, sizeof(c0));
	c0[2 * 3 + 1] = 0;
	struct tg t0;
	tg_init(&t0, 3, 3, c0, 2, e);
	tg_machine(&t0, 2, node, lat, bw);
	struct plan_slot z[3] = { { 0, 0, 2 }, { 1, 2, 5 }, { 1, 3, 3 } };
	assert_int_equal(plan_check(&t0.g, &t0.m, z, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "overlap"));
	z[2].start = z[2].finish = 5; /* at the boundary: fine */
	assert_int_equal(plan_check(&t0.g, &t0.m, z, why, sizeof(why)), 0);
	tg_free(&t0);
	/* dependency: 2 on device 1 (same node as 0) starts at 1 < 2 */
	memcpy(s, good, sizeof(s));
	s[2] = (struct plan_slot){ 1, 1, 5 };
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "task 2 on device 1 starts at 1 before predecessor 0"));
	assert_null(strstr(why, "communication"));
	/* communication: 1 on node 1 at 4: after 0's finish (2) but before the
	 * data arrives (2 + 1 + 4 * 0.5 = 5) */
	memcpy(s, good, sizeof(s));
	s[1] = (struct plan_slot){ 2, 4, 7 };
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "task 1 on device 2 starts at 4 before predecessor 0 on "
	                            "device 0 finishes at 2 plus communication 3"));
	/* wrong duration */
	memcpy(s, good, sizeof(s));
	s[1].finish = 9;
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "costs 3"));
	/* a device that cannot run the task, one that does not exist */
	memcpy(s, good, sizeof(s));
	s[2] = (struct plan_slot){ 2, 6, 10 };
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "cannot run it"));
	s[2].dev = 3;
	assert_int_equal(plan_check(&t.g, &t.m, s, why, sizeof(why)), -TDM_EINVAL);
	assert_non_null(strstr(why, "does not exist"));
	tg_free(&t);
}

/* ---- timing ------------------------------------------------------------------------- */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A layered DAG (200 layers of 100 tasks, 1 to 3 predecessors each in the
 * layer before) on 16 cores (node 0) and a GPU (node 1), and a bag of
 * 20,000 independent tasks (the hardest case for the insertion search). */
static void test_timing_20k(void **state)
{
	(void)state;
	enum { W = 100, L = 200, N = W * L, P = 17 };
	uint64_t rng = 2024;
	double *cost = malloc((size_t)N * P * sizeof(double));
	struct edge *e = malloc((size_t)N * 3 * sizeof(*e));
	size_t ne = 0;
	for (uint32_t v = 0; v < N; v++) {
		double c = rndf(&rng, 10, 100);
		for (int d = 0; d < 16; d++)
			cost[(size_t)v * P + d] = c * rndf(&rng, 0.9, 1.1);
		cost[(size_t)v * P + 16] = c / rndf(&rng, 1, 20);
		if (v >= W) {
			uint32_t np = 1 + rnd(&rng, 3), l = v / W;
			for (uint32_t k = 0; k < np; k++)
				e[ne++] = (struct edge){ (l - 1) * W + rnd(&rng, W), v,
					                 rndf(&rng, 1, 100) };
		}
	}
	struct tg t;
	tg_init(&t, N, P, cost, ne, e);
	uint16_t node[P];
	for (int d = 0; d < P; d++)
		node[d] = d == 16;
	double lat[4] = { 0, 5, 5, 0 }, bw[4] = { 0, 0.1, 0.1, 0 };
	tg_machine(&t, 2, node, lat, bw);
	struct plan_slot *s = malloc(N * sizeof(*s));
	struct plan_ws *ws = plan_ws_new();
	static const char *names[] = { "HEFT", "PEFT" };
	for (int meth = 0; meth < 2; meth++) {
		struct plan_opts o = { .method = (enum plan_method)meth };
		double mk;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0); /* warm ws */
		double t0 = now_ms();
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
		double t1 = now_ms();
		fprintf(stderr,
		        "plan_schedule %s: %d tasks, %zu edges, %d devices: %.1f ms "
		        "(makespan %.0f)\n",
		        names[meth], N, ne, P, t1 - t0, mk);
		assert_valid(&t, s);
		o.refine_iters = 16;
		double t1r = now_ms(), mkr;
		assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mkr), 0);
		fprintf(stderr, "plan_schedule %s, refine_iters 16: %.1f ms (makespan %.0f)\n",
		        names[meth], now_ms() - t1r, mkr);
		assert_true(mkr <= mk);
		assert_valid(&t, s);
	}
	double t0 = now_ms(), cp, area;
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), 0);
	fprintf(stderr, "plan_lower_bounds: %.1f ms (cp %.0f, area %.0f)\n", now_ms() - t0, cp,
	        area);
	/* The same graph with 16 identical cores: 2 kinds, cutting planes. */
	for (uint32_t v = 0; v < N; v++)
		for (int d = 1; d < 16; d++)
			t.cost[(size_t)v * P + d] = t.cost[(size_t)v * P];
	t0 = now_ms();
	assert_int_equal(plan_lower_bounds(&t.g, &t.m, &cp, &area), 0);
	fprintf(stderr, "plan_lower_bounds, 2 device kinds: %.1f ms (cp %.0f, area %.0f)\n",
	        now_ms() - t0, cp, area);
	tg_free(&t);

	/* The bag: every task ready at 0, a gap-riddled timeline on the GPU
	 * (busy with other work in short bursts: fixed tasks). */
	tg_init(&t, N, P, cost, 0, NULL);
	tg_machine(&t, 2, node, lat, bw);
	struct plan_opts o = { .method = PLAN_HEFT };
	double mk;
	t0 = now_ms();
	assert_int_equal(plan_schedule(&t.g, &t.m, &o, ws, s, &mk), 0);
	fprintf(stderr, "plan_schedule HEFT: %d independent tasks, %d devices: %.1f ms\n", N, P,
	        now_ms() - t0);
	assert_valid(&t, s);
	tg_free(&t);
	plan_ws_free(ws);
	free(s);
	free(cost);
	free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heft_topcuoglu),
		cmocka_unit_test(test_heft_topcuoglu_renumbered),
		cmocka_unit_test(test_peft_arabnejad),
		cmocka_unit_test(test_random_dags),
		cmocka_unit_test(test_same_as_plain),
		cmocka_unit_test(test_device_order),
		cmocka_unit_test(test_shared_columns),
		cmocka_unit_test(test_repair),
		cmocka_unit_test(test_repair_errors),
		cmocka_unit_test(test_insertion),
		cmocka_unit_test(test_bounds_chain),
		cmocka_unit_test(test_bounds_independent),
		cmocka_unit_test(test_bounds_two_kinds),
		cmocka_unit_test(test_bounds_methods_agree),
		cmocka_unit_test(test_timeline_vs_naive),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_timing_20k),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
