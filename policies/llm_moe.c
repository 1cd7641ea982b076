/* llm: the MoE split at release and its telemetry (llm_moe.h). */
#include "policies/llm_moe.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernels.h"
#include "common/clock.h"
#include "graph/task.h"
#include "placement/moe_cache.h"
#include "placement/moe_split.h"
#include "placement/residency.h"
#include "profiler/profiler.h"

/* Prefetches in flight at once, over every graph. */
#define LLM_MOE_PF_MAX 256u

struct llm_moe {
	struct profiler *prof;
	struct residency *res;
	int accel, host_dev;
	unsigned accel_node;
	uint32_t host_cores;
	pthread_mutex_t lock; /* the scratch and the stats */
	struct engine_task *group[MOE_SPLIT_MAX];
	struct moe_split_expert e[MOE_SPLIT_MAX], bare[MOE_SPLIT_MAX];
	double gpu[MOE_SPLIT_MAX], cpu[MOE_SPLIT_MAX];
	uint64_t missing[MOE_SPLIT_MAX];
	uint8_t where[MOE_SPLIT_MAX], where_bare[MOE_SPLIT_MAX];
	uint32_t scratch[2 * MOE_SPLIT_MAX];
	uint8_t pin[MOE_SPLIT_MAX];
	uint16_t ids[MOE_SPLIT_MAX];
	/* The expert cache: which experts' weights the accelerator keeps
	 * (their buffers homed there); set up at the first router. homed[]:
	 * (layer, expert) whose buffers this policy homed; an expert the
	 * cache let go is unhomed when its task is next seen (only then are
	 * its buffers known to be alive). */
	struct moe_cache cache;
	bool cache_on, cache_off; /* set up; or given up (no memory, shapes) */
	/* [layer * experts + id]: the bytes of its weights homed there, and
	 * its gate buffer (compared only, never read: it is unhomed only
	 * through a task over that same buffer). */
	uint64_t *homed_b;
	const struct res_data **homed_d;
	_Atomic uint64_t homed_total; /* read by the KV tiers */
	double expert_bytes; /* one expert's weights, from the first router */
	uint32_t *victim; /* [layers * experts]: moe_cache_set_cap's */
	/* The releasing graph's experts by (layer, id), so that an expert
	 * let go is unhomed and a next-layer expert prefetched through its
	 * task (alive while its graph is): built per graph, dropped at
	 * llm_moe_graph_finished. */
	const struct engine_graph *ix_g;
	uint32_t ix_layers;
	uint32_t ix_router[LLM_MOE_LAYERS]; /* task index of each layer's router */
	uint32_t *ix_expert; /* [layer * experts + id]: task index + 1; 0: none */
	/* Prefetches queued (issued false) or issued and not yet settled. */
	struct moe_pf {
		const struct engine_graph *g;
		struct res_arg args[3];
		uint32_t nargs, layer, expert;
		bool issued;
		uint64_t bytes, at_ns;
	} pf[LLM_MOE_PF_MAX];
	uint32_t npf;
	_Atomic uint32_t nwant; /* of them, not issued: the worker's pass looks only then */
	uint8_t late[MOE_SPLIT_MAX]; /* this split's experts whose prefetch is not in */
	const struct engine_core *core;
	bool kick; /* prefetches queued: kick the accelerator's worker (unlocked) */
	bool pend_dirty; /* an expert let go may still be homed */
	struct llm_moe_stats st;
};

struct llm_moe *llm_moe_create(struct profiler *prof, struct residency *res,
                               const struct engine_core *core, int accel, unsigned accel_node,
                               int host_dev, uint32_t host_cores)
{
	struct llm_moe *M = calloc(1, sizeof(*M));
	if (!M)
		return NULL;
	M->prof = prof;
	M->res = res;
	M->core = core;
	M->accel = accel;
	M->accel_node = accel_node;
	M->host_dev = host_dev;
	M->host_cores = host_cores ? host_cores : 1;
	pthread_mutex_init(&M->lock, NULL);
	return M;
}

void llm_moe_free(struct llm_moe *M)
{
	if (!M)
		return;
	moe_cache_free(&M->cache);
	free(M->homed_b);
	free(M->homed_d);
	free(M->victim);
	free(M->ix_expert);
	pthread_mutex_destroy(&M->lock);
	free(M);
}

/* t is an expert released after its router's routing was read. */
static const struct engine_task *router_of(const struct engine_task *t)
{
	const struct engine_graph *g = t->graph;
	/* policy_node set: split already (a task given back after a device
	 * fault comes ready again). */
	if (!t->guard_router || t->guard_router > g->ntasks || t->kernel->id != KERNEL_MOE_EXPERT ||
	    (t->flags & TASK_SKIPPED) || t->policy_node)
		return NULL;
	const struct engine_task *r = &g->tasks[t->guard_router - 1];
	return r->routed ? r : NULL;
}

/* The router's layer: its position among its graph's routers. */
static uint32_t layer_of(const struct engine_task *r)
{
	const struct engine_graph *g = r->graph;
	uint32_t l = 0;
	for (const struct engine_task *t = g->tasks; t < r; t++)
		l += (t->flags & TASK_ROUTES) != 0;
	return l < LLM_MOE_LAYERS ? l : LLM_MOE_LAYERS - 1;
}

static double predict(const struct llm_moe *M, const struct engine_task *t, int dev)
{
	struct cost_pred cp;
	profiler_predict(M->prof, t->kernel->id, (uint32_t)dev, &t->feat, &cp);
	return isfinite(cp.ns) && cp.ns > 0 ? cp.ns : 1;
}

static double copy_ns(const struct llm_moe *M, double bytes)
{
	double ns = profiler_predict_copy(M->prof, 0, (uint16_t)M->accel_node, (uint64_t)bytes);
	return isfinite(ns) && ns > 0 ? ns : 0;
}

/* Homes the weights of expert task t on the accelerator, or nowhere. */
static void home_weights(struct llm_moe *M, const struct engine_task *t, bool on_accel)
{
	for (uint32_t a = 1; a <= 3; a++)
		if (t->data[a])
			residency_set_home(t->data[a],
			                   on_accel ? (int)M->accel_node : RES_HOME_NONE);
}

/* The bytes of expert task t's weight buffers (gate, up, down), each once. */
static double weight_bytes(const struct engine_task *t)
{
	double bytes = 0;
	for (uint32_t a = 1; a <= 3; a++)
		if (t->data[a] && (a == 1 || t->data[a] != t->data[a - 1]) &&
		    (a < 3 || t->data[3] != t->data[1]))
			bytes += (double)t->data[a]->bytes;
	return bytes;
}

/* ---- the releasing graph's index ---- */

/* Indexes g's routers (layers, in task order) and their expert tasks. */
static void index_graph(struct llm_moe *M, const struct engine_graph *g)
{
	const uint32_t ne = M->cache.experts;
	if (M->ix_g == g)
		return;
	memset(M->ix_expert, 0, (size_t)LLM_MOE_LAYERS * ne * sizeof(*M->ix_expert));
	M->ix_layers = 0;
	for (uint32_t i = 0; i < g->ntasks && M->ix_layers < LLM_MOE_LAYERS; i++)
		if (g->tasks[i].flags & TASK_ROUTES)
			M->ix_router[M->ix_layers++] = i;
	for (uint32_t i = 0; i < g->ntasks; i++) {
		const struct engine_task *t = &g->tasks[i];
		if (!t->guard_router || t->kernel->id != KERNEL_MOE_EXPERT || t->guard_expert >= ne)
			continue;
		/* Its router's layer: ix_router is in task order. */
		uint32_t lo = 0, hi = M->ix_layers;
		while (lo < hi) {
			uint32_t mid = (lo + hi) / 2;
			if (M->ix_router[mid] < t->guard_router - 1)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < M->ix_layers && M->ix_router[lo] == t->guard_router - 1)
			M->ix_expert[(size_t)lo * ne + t->guard_expert] = i + 1;
	}
	M->ix_g = g;
}

static const struct engine_task *expert_task(const struct llm_moe *M, size_t k)
{
	uint32_t i = M->ix_g ? M->ix_expert[k] : 0;
	return i ? &M->ix_g->tasks[i - 1] : NULL;
}

/* ---- homes ---- */

static void homed_add(struct llm_moe *M, size_t k, const struct engine_task *t)
{
	uint64_t b = (uint64_t)weight_bytes(t);
	home_weights(M, t, true);
	M->homed_b[k] = b;
	M->homed_d[k] = t->data[1];
	atomic_fetch_add_explicit(&M->homed_total, b, memory_order_relaxed);
}

/* Unhomes expert k's weights through t, a task of it whose buffers are
 * the ones homed (another client's weights for the same expert are not
 * this home's: it waits for a task of its own). */
static void homed_drop(struct llm_moe *M, size_t k, const struct engine_task *t)
{
	if (!t || t->data[1] != M->homed_d[k])
		return;
	home_weights(M, t, false);
	atomic_fetch_sub_explicit(&M->homed_total, M->homed_b[k], memory_order_relaxed);
	M->homed_b[k] = 0;
	M->homed_d[k] = NULL;
}

/* Expert k left the cache: unhomed now through the releasing graph's task
 * of it, else later (let_go_pending, or its next release). */
static void let_go(struct llm_moe *M, size_t k)
{
	if (M->homed_b[k])
		homed_drop(M, k, expert_task(M, k));
	M->pend_dirty |= M->homed_b[k] != 0;
}

/* Experts homed that the cache no longer holds (and reached no task of):
 * tried again through each graph released, while there are any. */
static void let_go_pending(struct llm_moe *M)
{
	const size_t n = (size_t)M->cache.layers * M->cache.experts;
	uint32_t left = 0;
	if (!M->st.unhome_pending && !M->pend_dirty)
		return;
	for (size_t k = 0; k < n; k++)
		if (M->homed_b[k] && !M->cache.in[k]) {
			homed_drop(M, k, expert_task(M, k));
			left += M->homed_b[k] != 0;
		}
	M->st.unhome_pending = left;
	M->pend_dirty = false;
}

/* The cache's budget now, in experts: three quarters of the accelerator's
 * memory budget as it is now (a quarter left to activations and copies in
 * flight) less the other data homed there now (KV caches). */
static uint32_t cache_cap(struct llm_moe *M)
{
	uint64_t budget = M->res->nodes[M->accel_node].cap;
	uint64_t home = residency_home_bytes(M->res, M->accel_node);
	uint64_t mine = atomic_load_explicit(&M->homed_total, memory_order_relaxed);
	uint64_t kv = home > mine ? home - mine : 0;
	double room = 0.75 * (double)budget - (double)kv;
	double n = room > 0 && M->expert_bytes > 0 ? floor(room / M->expert_bytes) : 0;
	double most = (double)M->cache.layers * M->cache.experts;
	M->st.budget_bytes = budget;
	M->st.kv_bytes = kv;
	return n < most ? (uint32_t)n : (uint32_t)most;
}

/* Sets the cache up at the first router of ne experts whose task t shows
 * one expert's weights. */
static bool cache_setup(struct llm_moe *M, const struct engine_task *t, uint32_t ne)
{
	const size_t n = (size_t)LLM_MOE_LAYERS * ne;
	M->expert_bytes = weight_bytes(t);
	M->homed_b = calloc(n, sizeof(*M->homed_b));
	M->homed_d = calloc(n, sizeof(*M->homed_d));
	M->victim = calloc(n, sizeof(*M->victim));
	M->ix_expert = calloc(n, sizeof(*M->ix_expert));
	if (!M->homed_b || !M->homed_d || !M->victim || !M->ix_expert ||
	    moe_cache_init(&M->cache, MOE_EVICT_TANDEM, LLM_MOE_LAYERS, ne, 0)) {
		M->cache_off = true;
		return false;
	}
	M->cache_on = true;
	return true;
}

/* The cache for group[0 .. n) of router r at layer l: observes the
 * layer's routing, follows the budget as it is now (experts leave by the
 * score while it shrank), admits the experts that run on the accelerator
 * (by the tandem score's admission; their weights are there now) and
 * homes or unhomes this group's weights to match. Experts sharing a weight
 * buffer cannot be kept apart: such layers are left alone. */
static bool cache_group(struct llm_moe *M, const struct engine_task *r, uint32_t l, uint32_t n)
{
	uint32_t ne = r->kernel->route_experts ? r->kernel->route_experts(&r->call) : 0;
	if (M->cache_off || !ne || ne > MOE_SPLIT_MAX)
		return false;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i + 1; j < n; j++)
			if (M->group[i]->data[1] == M->group[j]->data[1])
				return false;
	if (!M->cache_on && !cache_setup(M, M->group[0], ne))
		return false;
	if (ne != M->cache.experts)
		return false; /* another shape of router: not this cache's */
	index_graph(M, r->graph);
	uint32_t chosen = 0;
	for (uint32_t e = 0; e < ne; e++)
		if (r->routed[e])
			M->ids[chosen++] = (uint16_t)e;
	moe_cache_observe(&M->cache, M->st.splits, l, M->ids, NULL, chosen);
	memset(M->pin, 0, ne);
	for (uint32_t i = 0; i < n; i++)
		M->pin[M->group[i]->guard_expert] = 1;

	uint32_t cap = cache_cap(M);
	if (cap != M->cache.cap) {
		uint32_t nv = moe_cache_set_cap(&M->cache, cap, l, M->pin, M->victim);
		M->st.budget_evictions += nv;
		for (uint32_t v = 0; v < nv; v++)
			let_go(M, M->victim[v]);
		M->st.cache_cap = cap;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t e = M->group[i]->guard_expert, victim;
		if (M->where[i] != MOE_RUN_CPU && !moe_cache_has(&M->cache, l, e) &&
		    moe_cache_admit(&M->cache, l, e, l, M->pin, false, &victim)) {
			M->st.cache_admits++;
			if (victim != UINT32_MAX)
				let_go(M, victim);
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t e = M->group[i]->guard_expert;
		size_t k = (size_t)l * ne + e;
		bool keep = moe_cache_has(&M->cache, l, e);
		if (keep && !M->homed_b[k])
			homed_add(M, k, M->group[i]);
		else if (!keep && M->homed_b[k])
			let_go(M, k);
	}
	let_go_pending(M);
	M->st.cached = M->cache.n;
	M->st.expert_bytes = atomic_load_explicit(&M->homed_total, memory_order_relaxed);
	return true;
}

/* ---- next-layer prefetch ---- */

static void pf_remove(struct llm_moe *M, uint32_t i)
{
	M->pf[i] = M->pf[--M->npf];
}

/* The queue changed (caller holds lock): how many wait for the worker. */
static void pf_count(struct llm_moe *M)
{
	uint32_t n = 0;
	for (uint32_t p = 0; p < M->npf; p++)
		n += !M->pf[p].issued;
	atomic_store_explicit(&M->nwant, n, memory_order_release);
}

/* Marks the group's experts (router r, layer l) whose prefetch is not in
 * yet (M->late), before the split looks at residency. */
static void pf_arrivals(struct llm_moe *M, const struct engine_task *r, uint32_t l, uint32_t n)
{
	uint64_t now = clock_monotonic_ns();
	memset(M->late, 0, n);
	for (uint32_t p = 0; p < M->npf; p++) {
		const struct moe_pf *f = &M->pf[p];
		if (f->g != r->graph || f->layer != l)
			continue;
		bool in =
		        f->issued && (double)now >= (double)f->at_ns + copy_ns(M, (double)f->bytes);
		for (uint32_t i = 0; i < n && !in; i++)
			if (M->group[i]->guard_expert == f->expert)
				M->late[i] = 1;
	}
}

/* Settles the prefetches for layer l of r's graph after its split: used
 * when the expert ran on the accelerator with its copy in, else wasted. */
static void pf_settle(struct llm_moe *M, const struct engine_task *r, uint32_t l, uint32_t n)
{
	for (uint32_t p = 0; p < M->npf;) {
		const struct moe_pf *f = &M->pf[p];
		if (f->g != r->graph || f->layer != l) {
			p++;
			continue;
		}
		bool used = false;
		for (uint32_t i = 0; i < n; i++)
			if (M->group[i]->guard_expert == f->expert)
				used = !M->late[i] && M->where[i] != MOE_RUN_CPU;
		if (!f->issued)
			M->st.prefetch_late++;
		else if (used)
			M->st.prefetch_used_bytes += f->bytes;
		else
			M->st.prefetch_wasted_bytes += f->bytes;
		pf_remove(M, p);
	}
	pf_count(M);
}

struct pf_cand {
	double p;
	uint32_t e;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct pf_cand *x = a, *y = b;
	return x->p < y->p ? 1 : x->p > y->p ? -1 : (x->e > y->e) - (x->e < y->e);
}

/* After layer l's split (its predicted time layer_ns, the accelerator
 * predicted to save gain_ns per expert over the cores): queues layer
 * l + 1's likeliest experts of r's graph whose copy pays
 * (moe_cache_swap_pays, the simulator's rule) and that the cache admits,
 * as many as the link carries in layer_ns and at most as many as layer l
 * used. */
static void pf_plan(struct llm_moe *M, const struct engine_task *r, uint32_t l, uint32_t n,
                    double layer_ns, double gain_ns)
{
	const uint32_t ne = M->cache.experts;
	if (!M->cache_on || M->ix_g != r->graph || l + 1 >= M->ix_layers || gain_ns <= 0 ||
	    ne > MOE_SPLIT_MAX)
		return;
	double tl = copy_ns(M, M->expert_bytes);
	double fit = tl > 0 ? floor(layer_ns / tl) : n;
	uint32_t most = fit < n ? (uint32_t)fit : n;
	struct pf_cand cand[MOE_SPLIT_MAX];
	uint32_t nc = 0;
	for (uint32_t e = 0; e < ne; e++) {
		size_t k = (size_t)(l + 1) * ne + e;
		/* Held, or still homed (let go, not yet unhomed): there. */
		if (moe_cache_has(&M->cache, l + 1, e) || M->homed_b[k] || !expert_task(M, k))
			continue;
		bool queued = false;
		for (uint32_t p = 0; p < M->npf && !queued; p++)
			queued = M->pf[p].g == r->graph && M->pf[p].layer == l + 1 &&
			         M->pf[p].expert == e;
		if (!queued)
			cand[nc++] = (struct pf_cand){ moe_cache_p_next(&M->cache, l + 1, e), e };
	}
	qsort(cand, nc, sizeof(*cand), cmp_cand);
	uint32_t queued = 0;
	for (uint32_t c = 0; c < nc && queued < most && M->npf < LLM_MOE_PF_MAX; c++) {
		uint32_t e = cand[c].e, victim;
		size_t k = (size_t)(l + 1) * ne + e;
		const struct engine_task *t = expert_task(M, k);
		/* Worth a copy by the simulator's rule: a use on the accelerator
		 * saves gain_ns over the cores (t_saved_ns); the copy runs on
		 * the accelerator's copy engine beside the step, so what it
		 * costs is the link time wasted when the expert is not chosen,
		 * (1 - p) of a copy (cost_ns): time other copies (on-demand
		 * loads) could have had. A swap also keeps a victim hotter in
		 * the long run; a free slot fills on the gain alone. Layer l's
		 * experts in use stay (M->pin), in the rule and the admission. */
		double p = cand[c].p;
		if (!moe_cache_swap_pays(&M->cache, l + 1, e, l, M->pin, gain_ns, (1 - p) * tl) ||
		    !moe_cache_admit(&M->cache, l + 1, e, l, M->pin, false, &victim))
			continue;
		M->st.cache_admits++;
		if (victim != UINT32_MAX)
			let_go(M, victim);
		homed_add(M, k, t);
		struct moe_pf *f = &M->pf[M->npf++];
		*f = (struct moe_pf){ .g = r->graph, .layer = l + 1, .expert = e };
		for (uint32_t a = 1; a <= 3; a++)
			if (t->data[a])
				f->args[f->nargs++] = (struct res_arg){ t->data[a], t->call.off[a],
					                                t->call.len[a], TDM_R };
		queued++;
	}
	M->st.cached = M->cache.n;
	M->st.expert_bytes = atomic_load_explicit(&M->homed_total, memory_order_relaxed);
	pf_count(M);
	M->kick |= queued > 0;
}

void llm_moe_prefetch(struct llm_moe *M)
{
	if (!M || !M->res || !atomic_load_explicit(&M->nwant, memory_order_acquire))
		return;
	pthread_mutex_lock(&M->lock);
	for (uint32_t p = 0; p < M->npf;) {
		struct moe_pf *f = &M->pf[p];
		if (f->issued) {
			p++;
			continue;
		}
		uint64_t bytes = 0;
		if (residency_prefetch(M->res, M->accel_node, f->args, f->nargs, &bytes) != 0) {
			pf_remove(M, p);
			continue;
		}
		/* No hold: the replica is homed (eviction takes it last), and
		 * the expert's task may never come (not chosen). */
		residency_prefetch_drop(M->res, M->accel_node, f->args, f->nargs);
		f->issued = true;
		f->bytes = bytes;
		f->at_ns = clock_monotonic_ns();
		M->st.prefetches += bytes > 0;
		M->st.prefetch_bytes += bytes;
		p++;
	}
	pf_count(M);
	pthread_mutex_unlock(&M->lock);
}

void llm_moe_graph_finished(struct llm_moe *M, const struct engine_graph *g)
{
	if (!M)
		return;
	pthread_mutex_lock(&M->lock);
	for (uint32_t p = 0; p < M->npf;) {
		if (M->pf[p].g != g) {
			p++;
			continue;
		}
		if (M->pf[p].issued)
			M->st.prefetch_wasted_bytes += M->pf[p].bytes;
		pf_remove(M, p);
	}
	if (M->ix_g == g)
		M->ix_g = NULL;
	pf_count(M);
	pthread_mutex_unlock(&M->lock);
}

uint64_t llm_moe_homed_bytes(struct llm_moe *M)
{
	return M ? atomic_load_explicit(&M->homed_total, memory_order_relaxed) : 0;
}

/* The experts of group[0 .. n), all of router r: split and counted. */
static void split_group(struct llm_moe *M, const struct engine_task *r, uint32_t n)
{
	uint64_t t0 = clock_monotonic_ns();
	double weights = 0, handoff = 0, tokens = 0, gain = 0;
	uint32_t nmiss = 0;
	uint32_t l = layer_of(r);

	pf_arrivals(M, r, l, n);

	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = M->group[i];
		uint64_t miss = 0;
		for (uint32_t a = 1; a <= 3; a++) /* gate, up, down */
			miss += t->data[a] ? residency_missing(t->data[a], M->accel_node,
			                                       t->call.off[a], t->call.len[a])
			                   : t->call.len[a];
		/* A prefetch still on its way: absent (the step does not wait). */
		if (M->late[i] && !miss)
			miss = t->call.len[1] + t->call.len[2] + t->call.len[3];
		M->missing[i] = miss;
		uint32_t tok = r->routed[t->guard_expert];
		M->e[i] = (struct moe_split_expert){ tok ? tok : 1, miss == 0 };
		M->bare[i] = (struct moe_split_expert){ tok ? tok : 1, false };
		M->gpu[i] = predict(M, t, M->accel);
		/* Host cores are devices of their own: the cores share the
		 * CPU's experts. */
		M->cpu[i] = predict(M, t, M->host_dev) / M->host_cores;
		gain += M->cpu[i] - M->gpu[i];
		/* The split runs a resident expert on the accelerator; where
		 * the cores are predicted faster (a slow device) the host's
		 * copy serves as well: it is not held there. */
		if (!miss && M->gpu[i] > M->cpu[i])
			M->e[i].resident = false;
		if (miss) {
			weights += (double)miss;
			nmiss++;
		}
		handoff = fmax(handoff, copy_ns(M, (double)t->call.len[0]) +
		                                copy_ns(M, (double)t->call.len[6]));
		tokens += tok;
	}
	struct moe_split_times times = {
		.gpu_ns = M->gpu,
		.cpu_ns = M->cpu,
		.load_ns = copy_ns(M, nmiss ? weights / nmiss : 0),
		.handoff_ns = handoff,
	};
	struct moe_split_in in = { .times = &times,
		                   .e = M->e,
		                   .n = n,
		                   .tokens = tokens,
		                   .allow = MOE_ALLOW_CPU | MOE_ALLOW_LOAD };
	struct moe_split_plan p, bare;
	if (moe_split_plan(&in, M->where, M->scratch, &p))
		return; /* dmda places them */
	in.e = M->bare;
	bool have_bare = moe_split_plan(&in, M->where_bare, M->scratch, &bare) == 0;

	struct llm_moe_layer *L = &M->st.layer[l];
	if (l + 1 > M->st.layers)
		M->st.layers = l + 1;
	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = M->group[i];
		bool cpu = M->where[i] == MOE_RUN_CPU;
		t->policy_node = (uint8_t)(1 + (cpu ? 0 : M->accel_node));
		L->lookups++;
		L->hits += M->missing[i] == 0;
		L->on_cpu += cpu;
		L->on_accel += !cpu;
		if (M->where[i] == MOE_RUN_LOAD && M->missing[i]) {
			L->loads++;
			L->load_bytes += M->missing[i];
		}
	}
	bool cached = cache_group(M, r, l, n);
	pf_settle(M, r, l, n);
	if (cached)
		pf_plan(M, r, l, n, p.t_ns, gain / n);
	M->st.splits++;
	if (have_bare)
		M->st.saved_ns += bare.t_ns - p.t_ns;
	for (uint32_t i = 0; i < n; i++)
		if (M->where[i] == MOE_RUN_LOAD && M->missing[i])
			M->st.load_ns += times.load_ns;
	uint64_t dt = clock_monotonic_ns() - t0;
	if (dt > M->st.decide_ns_max)
		M->st.decide_ns_max = dt;
}

void llm_moe_ready(struct llm_moe *M, struct engine_task **tasks, size_t n)
{
	if (!M || !M->prof || !M->res)
		return;
	bool any = false;
	for (size_t i = 0; i < n && !any; i++)
		any = router_of(tasks[i]) != NULL;
	if (!any)
		return;
	pthread_mutex_lock(&M->lock);
	/* Group the ready experts by router (a batch may hold several): each
	 * group from its first member on. */
	for (size_t i = 0; i < n; i++) {
		const struct engine_task *r = router_of(tasks[i]);
		bool first = r != NULL;
		for (size_t j = 0; j < i && first; j++)
			first = router_of(tasks[j]) != r;
		if (!first)
			continue;
		uint32_t m = 0;
		for (size_t j = i; j < n && m < MOE_SPLIT_MAX; j++)
			if (router_of(tasks[j]) == r)
				M->group[m++] = tasks[j];
		split_group(M, r, m);
	}
	bool kick = M->kick;
	M->kick = false;
	pthread_mutex_unlock(&M->lock);
	/* Unlocked: a kick at a worker that left has its queue moved, which
	 * may come back here. */
	if (kick)
		core_kick(M->core, (unsigned)M->accel);
}

void llm_moe_stats(struct llm_moe *M, struct llm_moe_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!M)
		return;
	pthread_mutex_lock(&M->lock);
	*out = M->st;
	pthread_mutex_unlock(&M->lock);
}
