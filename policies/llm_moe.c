/* llm: the MoE split at release and its telemetry (llm_moe.h). */
#include "policies/llm_moe.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernels.h"
#include "common/clock.h"
#include "placement/moe_cache.h"
#include "placement/moe_split.h"
#include "placement/residency.h"
#include "profiler/profiler.h"

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
	uint8_t *homed;
	struct llm_moe_stats st;
};

struct llm_moe *llm_moe_create(struct profiler *prof, struct residency *res, int accel,
                               unsigned accel_node, int host_dev, uint32_t host_cores)
{
	struct llm_moe *M = calloc(1, sizeof(*M));
	if (!M)
		return NULL;
	M->prof = prof;
	M->res = res;
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
	free(M->homed);
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
static void home_weights(struct llm_moe *M, struct engine_task *t, bool on_accel)
{
	for (uint32_t a = 1; a <= 3; a++)
		if (t->data[a])
			residency_set_home(t->data[a],
			                   on_accel ? (int)M->accel_node : RES_HOME_NONE);
}

/* The cache's budget, in experts of `bytes`: three quarters of the
 * accelerator's memory (a quarter left to activations and copies in
 * flight) less what other data is homed there (KV caches) at the time. */
static uint32_t cache_cap(const struct llm_moe *M, double bytes, uint32_t most)
{
	double cap = 0.75 * (double)M->res->nodes[M->accel_node].cap -
	             (double)residency_home_bytes(M->res, M->accel_node);
	double n = cap > 0 && bytes > 0 ? floor(cap / bytes) : 0;
	return n < most ? (uint32_t)n : most;
}

/* The cache for group[0 .. n) of router r at layer l: observes the
 * layer's routing, admits the experts that run on the accelerator (by
 * the tandem score's admission; their weights are there now) and homes
 * or unhomes this group's weights to match. Experts sharing a weight
 * buffer cannot be kept apart: such layers are left alone. */
static void cache_group(struct llm_moe *M, const struct engine_task *r, uint32_t l, uint32_t n)
{
	uint32_t ne = r->kernel->route_experts ? r->kernel->route_experts(&r->call) : 0;
	if (M->cache_off || !ne || ne > MOE_SPLIT_MAX)
		return;
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i + 1; j < n; j++)
			if (M->group[i]->data[1] == M->group[j]->data[1])
				return;
	if (!M->cache_on) {
		const struct engine_task *t = M->group[0];
		double bytes = 0;
		for (uint32_t a = 1; a <= 3; a++)
			if (a == 1 || t->data[a] != t->data[a - 1])
				bytes += t->data[a] ? (double)t->data[a]->bytes : 0;
		uint32_t cap = cache_cap(M, bytes, LLM_MOE_LAYERS * ne);
		M->homed = calloc((size_t)LLM_MOE_LAYERS * ne, 1);
		if (!M->homed ||
		    moe_cache_init(&M->cache, MOE_EVICT_TANDEM, LLM_MOE_LAYERS, ne, cap)) {
			free(M->homed);
			M->homed = NULL;
			M->cache_off = true;
			return;
		}
		M->cache_on = true;
		M->st.cache_cap = cap;
	}
	if (ne != M->cache.experts)
		return; /* another shape of router: not this cache's */
	uint32_t chosen = 0;
	for (uint32_t e = 0; e < ne; e++)
		if (r->routed[e])
			M->ids[chosen++] = (uint16_t)e;
	moe_cache_observe(&M->cache, M->st.splits, l, M->ids, NULL, chosen);
	memset(M->pin, 0, ne);
	for (uint32_t i = 0; i < n; i++)
		M->pin[M->group[i]->guard_expert] = 1;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t e = M->group[i]->guard_expert;
		if (M->where[i] != MOE_RUN_CPU && !moe_cache_has(&M->cache, l, e) &&
		    moe_cache_admit(&M->cache, l, e, l, M->pin, false, NULL))
			M->st.cache_admits++;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t e = M->group[i]->guard_expert;
		size_t k = (size_t)l * ne + e;
		bool keep = moe_cache_has(&M->cache, l, e);
		if (keep != (M->homed[k] != 0)) {
			home_weights(M, M->group[i], keep);
			M->homed[k] = keep;
		}
	}
	M->st.cached = M->cache.n;
}

/* The experts of group[0 .. n), all of router r: split and counted. */
static void split_group(struct llm_moe *M, const struct engine_task *r, uint32_t n)
{
	uint64_t t0 = clock_monotonic_ns();
	double weights = 0, handoff = 0, tokens = 0;
	uint32_t nmiss = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = M->group[i];
		uint64_t miss = 0;
		for (uint32_t a = 1; a <= 3; a++) /* gate, up, down */
			miss += t->data[a] ? residency_missing(t->data[a], M->accel_node,
			                                       t->call.off[a], t->call.len[a])
			                   : t->call.len[a];
		M->missing[i] = miss;
		uint32_t tok = r->routed[t->guard_expert];
		M->e[i] = (struct moe_split_expert){ tok ? tok : 1, miss == 0 };
		M->bare[i] = (struct moe_split_expert){ tok ? tok : 1, false };
		M->gpu[i] = predict(M, t, M->accel);
		/* Host cores are devices of their own: the cores share the
		 * CPU's experts. */
		M->cpu[i] = predict(M, t, M->host_dev) / M->host_cores;
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

	uint32_t l = layer_of(r);
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
	cache_group(M, r, l, n);
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
	pthread_mutex_unlock(&M->lock);
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
