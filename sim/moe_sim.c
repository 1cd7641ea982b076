/* MoE inference in the simulator (moe_sim.h): the step loop, the
 * baselines' rules, cache replays and `-w moe:...`. */
#include "sim/moe_sim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sim/llm_sim.h"
#include "common/clock.h"
#include "sim/sim_spec.h"
#include "tandem.h"

static const char *const policy_names[MOE_POL_COUNT] = { "tandem",   "static", "ncpumoe", "hot",
	                                                 "hybrimoe", "lru",    "belady" };

const char *moe_policy_name(enum moe_policy p)
{
	return (unsigned)p < MOE_POL_COUNT ? policy_names[p] : "?";
}

int moe_policy_by_name(const char *name, enum moe_policy *out)
{
	int i = sim_name_index(policy_names, MOE_POL_COUNT, name);
	if (i < 0)
		return -1;
	*out = (enum moe_policy)i;
	return 0;
}

const char *moe_shape_of_model(const char *model)
{
	if (!strncmp(model, "mixtral", 7))
		return "mixtral";
	if (!strncmp(model, "qwen", 4))
		return "qwen";
	return "dsv2";
}

int moe_cost_from_machine(const struct machine *m, const char *model, struct moe_cost *c, char *err,
                          size_t errlen)
{
	struct llm_hw hw;
	struct moe_model md;

	if (moe_model_by_name(model, &md)) {
		snprintf(err, errlen,
		         "moe: model %s: unknown (mixtral-8x7b, dsv2-lite, qwen1.5-moe)", model);
		return -TDM_EINVAL;
	}
	if (llm_hw_from_machine(m, 0, &hw, err, errlen))
		return -TDM_EINVAL;
	if (moe_cost_init(c, &md, &hw)) {
		snprintf(err, errlen, "moe: %s: the machine's figures are out of range", m->name);
		return -TDM_EINVAL;
	}
	return 0;
}

/* ---- a step's routing: the union of chosen experts per layer ---- */

struct unions {
	uint32_t steps, layers, experts;
	uint32_t *off; /* [steps * layers + 1] into ids/cnt/w/next */
	uint16_t *ids;
	uint32_t *cnt; /* tokens that chose it */
	float *w; /* mean weight over the step's tokens */
	uint64_t *next; /* position of the next use of the same (layer, id) */
};

static void unions_free(struct unions *u)
{
	free(u->off);
	free(u->ids);
	free(u->cnt);
	free(u->w);
	free(u->next);
	memset(u, 0, sizeof(*u));
}

/* Step s covers trace tokens [s * per, (s + 1) * per). */
static int unions_build(const struct moe_trace *t, uint32_t per, struct unions *u)
{
	const uint32_t L = t->layers, E = t->experts, K = t->topk;
	memset(u, 0, sizeof(*u));
	if (!per || t->tokens < per)
		return -1;
	u->steps = t->tokens / per;
	u->layers = L;
	u->experts = E;
	size_t cells = (size_t)u->steps * L, most = cells * (per * K < E ? per * K : E);
	u->off = malloc((cells + 1) * sizeof(*u->off));
	u->ids = malloc(most * sizeof(*u->ids));
	u->cnt = malloc(most * sizeof(*u->cnt));
	u->w = malloc(most * sizeof(*u->w));
	u->next = malloc(most * sizeof(*u->next));
	uint32_t *cnt = calloc(E, sizeof(*cnt));
	float *wsum = calloc(E, sizeof(*wsum));
	uint64_t *seen = malloc((size_t)L * E * sizeof(*seen));
	int rc = 0;
	if (!u->off || !u->ids || !u->cnt || !u->w || !u->next || !cnt || !wsum || !seen) {
		rc = -1;
		goto out;
	}
	size_t at = 0;
	for (uint32_t s = 0; s < u->steps; s++)
		for (uint32_t l = 0; l < L; l++) {
			u->off[(size_t)s * L + l] = (uint32_t)at;
			for (uint32_t k = 0; k < per; k++) {
				const uint16_t *ids = moe_trace_ids(t, s * per + k, l);
				const float *w = moe_trace_w(t, s * per + k, l);
				for (uint32_t j = 0; j < K; j++) {
					if (!cnt[ids[j]])
						u->ids[at++] = ids[j];
					cnt[ids[j]]++;
					wsum[ids[j]] += w[j];
				}
			}
			for (size_t i = u->off[(size_t)s * L + l]; i < at; i++) {
				u->cnt[i] = cnt[u->ids[i]];
				u->w[i] = wsum[u->ids[i]] / per;
				cnt[u->ids[i]] = 0;
				wsum[u->ids[i]] = 0;
			}
		}
	u->off[cells] = (uint32_t)at;
	/* Next uses, backwards. */
	for (size_t i = 0; i < (size_t)L * E; i++)
		seen[i] = MOE_NEVER;
	for (size_t cell = cells; cell-- > 0;) {
		uint32_t l = (uint32_t)(cell % L);
		for (uint32_t i = u->off[cell]; i < u->off[cell + 1]; i++) {
			size_t key = (size_t)l * E + u->ids[i];
			u->next[i] = seen[key];
			seen[key] = cell;
		}
	}
out:
	free(cnt);
	free(wsum);
	free(seen);
	if (rc)
		unions_free(u);
	return rc;
}

/* ---- hot sets and cache replays ---- */

struct ranked {
	uint32_t count, key;
};

static int cmp_ranked(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;
	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

void moe_hot_set(const struct moe_trace *t, uint32_t tokens, uint32_t cap, uint8_t *hot)
{
	size_t n = (size_t)t->layers * t->experts;
	struct ranked *r = calloc(n, sizeof(*r));

	memset(hot, 0, n);
	if (!r)
		return;
	for (size_t i = 0; i < n; i++)
		r[i].key = (uint32_t)i;
	uint32_t upto = tokens && tokens < t->tokens ? tokens : t->tokens;
	for (uint32_t k = 0; k < upto; k++)
		for (uint32_t l = 0; l < t->layers; l++) {
			const uint16_t *ids = moe_trace_ids(t, k, l);
			for (uint32_t j = 0; j < t->topk; j++)
				r[(size_t)l * t->experts + ids[j]].count++;
		}
	qsort(r, n, sizeof(*r), cmp_ranked);
	for (size_t i = 0; i < n && i < cap; i++)
		hot[r[i].key] = 1;
	free(r);
}

static void install_hot(struct moe_cache *c, const uint8_t *hot)
{
	for (size_t i = 0; hot && i < (size_t)c->layers * c->experts && c->n < c->cap; i++)
		if (hot[i])
			moe_cache_admit(c, (uint32_t)(i / c->experts), (uint32_t)(i % c->experts),
			                0, NULL, true, NULL);
}

static bool admit_forced(enum moe_evict p)
{
	return p == MOE_EVICT_LRU || p == MOE_EVICT_LFU || p == MOE_EVICT_MRS;
}

double moe_cache_replay(const struct moe_trace *t, uint32_t streams, enum moe_evict pol,
                        uint32_t cap, const uint8_t *hot)
{
	struct unions u;
	struct moe_cache c;
	double hits = 0, lookups = 0;
	uint8_t *pin = calloc(t->experts ? t->experts : 1, 1);

	if (!pin || unions_build(t, streams, &u)) {
		free(pin);
		return -1;
	}
	if (moe_cache_init(&c, pol, t->layers, t->experts, cap)) {
		unions_free(&u);
		free(pin);
		return -1;
	}
	install_hot(&c, hot);
	for (uint32_t s = 0; s < u.steps; s++)
		for (uint32_t l = 0; l < u.layers; l++) {
			size_t cell = (size_t)s * u.layers + l;
			uint32_t a = u.off[cell], b = u.off[cell + 1];
			for (uint32_t i = a; i < b; i++) {
				hits += moe_cache_has(&c, l, u.ids[i]);
				pin[u.ids[i]] = 1;
				moe_cache_set_next(&c, l, u.ids[i], u.next[i]);
			}
			lookups += b - a;
			moe_cache_observe(&c, s, l, u.ids + a, u.w + a, b - a);
			for (uint32_t i = a; i < b; i++)
				if (!moe_cache_has(&c, l, u.ids[i]))
					moe_cache_admit(&c, l, u.ids[i], l, pin, admit_forced(pol),
					                NULL);
			for (uint32_t i = a; i < b; i++)
				pin[u.ids[i]] = 0;
		}
	moe_cache_free(&c);
	unions_free(&u);
	free(pin);
	return lookups ? 100 * hits / lookups : -1;
}

/* ---- the step loop ---- */

static enum moe_evict evict_of(enum moe_policy p)
{
	switch (p) {
	case MOE_POL_TANDEM: return MOE_EVICT_TANDEM;
	case MOE_POL_HYBRIMOE: return MOE_EVICT_MRS;
	case MOE_POL_LRU: return MOE_EVICT_LRU;
	case MOE_POL_BELADY: return MOE_EVICT_BELADY;
	default: return MOE_EVICT_HOT;
	}
}

struct run {
	const struct moe_cost *c;
	const struct moe_sim_opts *o;
	struct unions u;
	struct moe_cache cache;
	double *arrival; /* [layer * experts]: when a prefetched expert's weights are in */
	uint8_t *prefetched; /* [layer * experts]: brought by prefetch, not yet looked up */
	uint8_t *pin; /* [experts] */
	struct moe_split_expert *se;
	uint8_t *where;
	uint32_t *scratch;
	struct ranked *rank;
	uint64_t step_base; /* the profile's steps come first */
	double tok_per_expert; /* tokens an activated expert sees, on average */
	uint32_t u_per; /* trace tokens a step */
};

/* Prefetch layer nl's experts (step ns) into the link's idle time in
 * [from, deadline). The current layer's CPU ends at cpu_done and the
 * layer at layer_end. Returns when the link is free afterwards. */
static double prefetch(struct run *R, struct moe_sim_result *r, uint32_t ns, uint32_t nl,
                       double from, double deadline, double cpu_done, double layer_end)
{
	const struct moe_cost *c = R->c;
	const uint32_t E = c->m.experts;
	const double tl = moe_t_load(c);
	enum moe_policy pol = R->o->policy;
	uint32_t fit = from < deadline ? (uint32_t)((deadline - from) / tl) : 0;
	uint32_t n = 0, limit = c->m.topk * (R->o->prefill_tokens ? E : R->o->batch);

	if (!fit || ns >= R->u.steps)
		return from;
	if (limit > E)
		limit = E;
	if (pol == MOE_POL_BELADY) {
		/* The oracle: the next layer's actual experts. */
		size_t cell = (size_t)ns * R->u.layers + nl;
		for (uint32_t i = R->u.off[cell]; i < R->u.off[cell + 1]; i++) {
			if (moe_cache_has(&R->cache, nl, R->u.ids[i]))
				continue;
			moe_cache_set_next(&R->cache, nl, R->u.ids[i], cell);
			R->rank[n++] = (struct ranked){ R->u.cnt[i], R->u.ids[i] };
		}
	} else {
		for (uint32_t e = 0; e < E; e++) {
			if (moe_cache_has(&R->cache, nl, e))
				continue;
			double v = pol == MOE_POL_TANDEM ? moe_cache_p_next(&R->cache, nl, e)
			                                 : R->cache.score[(size_t)nl * E + e];
			/* Ranked by value, scaled to an integer key. */
			R->rank[n++] = (struct ranked){ (uint32_t)(v * 1e9), e };
		}
		/* HybriMoE prefetches the next layer's top-k. */
		if (pol == MOE_POL_HYBRIMOE && limit > c->m.topk)
			limit = c->m.topk;
	}
	qsort(R->rank, n, sizeof(*R->rank), cmp_ranked);
	memset(R->pin, 0, E);
	double link = from;
	uint32_t issued = 0;
	for (uint32_t k = 0; k < n && issued < fit && issued < limit; k++) {
		uint32_t e = R->rank[k].key;
		if (pol != MOE_POL_BELADY && R->rank[k].count == 0)
			break;
		/* tandem (and the bound) fetch only what pays: the expected CPU
		 * time saved (the chance of use, less the victim's, times the
		 * expert's CPU time) against the time the copy takes from the
		 * CPU's experts while both read host memory; tandem also keeps
		 * a victim likelier than the newcomer in the long run (it stays
		 * out after the next step: moe_cache_swap_pays). */
		if (pol == MOE_POL_TANDEM || pol == MOE_POL_BELADY) {
			double ov = fmax(0, fmin(link + tl, cpu_done) - link);
			double slow = 1 - c->cpu_gbps_shared / c->cpu_gbps;
			double cost = fmax(0, cpu_done + ov * slow - layer_end);
			double saved = moe_t_expert_cpu(c, R->tok_per_expert);
			if (pol == MOE_POL_BELADY ? saved <= cost
			                          : !moe_cache_swap_pays(&R->cache, nl, e, nl,
			                                                 R->pin, saved, cost))
				continue;
		}
		/* The cache decides (tandem's and MIN's admission): an expert
		 * not worth a slot is not fetched. */
		if (!moe_cache_admit(&R->cache, nl, e, nl, R->pin, false, NULL))
			continue;
		R->pin[e] = 1;
		link += tl;
		r->t_link_ns += tl;
		R->arrival[(size_t)nl * E + e] = link;
		R->prefetched[(size_t)nl * E + e] = 1;
		r->prefetched++;
		issued++;
	}
	return link;
}

/* The CPU would end at `end` alone; from `from` the link streams until
 * `link` and the CPU's remaining experts go at the shared rate (they read
 * host memory, the bytes bound them). When the CPU ends. */
static double shared_until(const struct moe_cost *c, double from, double end, double link)
{
	double rate = c->cpu_gbps_shared / c->cpu_gbps, left = end - from;
	if (rate >= 1)
		return end;
	if ((link - from) * rate >= left)
		return from + left / rate;
	return link + left - (link - from) * rate;
}

static int run_steps(struct run *R, const uint8_t *hot, const struct moe_trace *profile,
                     struct moe_sim_result *r)
{
	const struct moe_cost *c = R->c;
	const struct moe_sim_opts *o = R->o;
	const enum moe_policy pol = o->policy;
	const uint32_t L = c->moe_layers, E = c->m.experts;
	const double tok = o->prefill_tokens ? o->prefill_tokens : o->batch;
	const bool has_prefetch =
	        pol == MOE_POL_TANDEM || pol == MOE_POL_HYBRIMOE || pol == MOE_POL_BELADY;
	double clk = 0, link_busy = 0;

	if (pol != MOE_POL_STATIC && pol != MOE_POL_NCPUMOE)
		install_hot(&R->cache, hot);
	/* Warm the scores with the profile, in steps of the run's size (a
	 * batch's or a chunk's union of experts per layer: what the scores
	 * see at run time), so that what they learned means the same. */
	struct unions pu;
	R->step_base = 0;
	if (profile && unions_build(profile, R->u_per, &pu) == 0) {
		for (uint32_t k = 0; k < pu.steps; k++)
			for (uint32_t l = 0; l < L; l++) {
				size_t cell = (size_t)k * L + l;
				moe_cache_observe(&R->cache, k, l, pu.ids + pu.off[cell],
				                  pu.w + pu.off[cell],
				                  pu.off[cell + 1] - pu.off[cell]);
			}
		R->step_base = pu.steps;
		unions_free(&pu);
	}
	R->tok_per_expert = fmax(1, tok * c->m.topk / E);
	for (uint32_t s = 0; s < R->u.steps; s++) {
		for (uint32_t l = 0; l < c->m.dense_layers; l++) {
			clk += moe_t_dense(c, true, tok);
			r->t_serial_ns += moe_t_dense(c, true, tok);
		}
		for (uint32_t l = 0; l < L; l++) {
			size_t cell = (size_t)s * L + l;
			uint32_t a = R->u.off[cell], n = R->u.off[cell + 1] - a;
			double router = clk + moe_t_dense(c, false, tok);
			unsigned allow = MOE_ALLOW_CPU | MOE_ALLOW_LOAD;
			bool gpu_layer = pol == MOE_POL_NCPUMOE && l >= r->ncpu_layers;

			for (uint32_t i = 0; i < n; i++) {
				uint32_t e = R->u.ids[a + i];
				size_t key = (size_t)l * E + e;
				bool res = gpu_layer || moe_cache_has(&R->cache, l, e);
				if (res && R->arrival[key] > router) {
					res = false; /* a prefetch not in yet: the CPU */
					r->prefetch_late++;
				}
				R->se[i] = (struct moe_split_expert){ R->u.cnt[a + i], res };
				r->hits += res;
				if (R->prefetched[key] && res) {
					r->prefetch_used++;
					R->prefetched[key] = 0;
				}
				R->pin[e] = 1;
				moe_cache_set_next(&R->cache, l, e, R->u.next[a + i]);
			}
			r->lookups += n;
			if (has_prefetch)
				for (uint32_t i = 0; i < n; i++)
					r->prefetch_missed += !R->se[i].resident;
			/* Prefetched and not chosen: wasted. */
			for (uint32_t e = 0; e < E; e++)
				R->prefetched[(size_t)l * E + e] = 0;
			moe_cache_observe(&R->cache, R->step_base + s, l, R->u.ids + a, R->u.w + a,
			                  n);

			if (pol == MOE_POL_STATIC || pol == MOE_POL_HOT ||
			    (pol == MOE_POL_NCPUMOE && !gpu_layer))
				allow = MOE_ALLOW_CPU;
			else if (pol == MOE_POL_LRU)
				allow = MOE_ALLOW_LOAD;
			struct moe_split_in in = {
				.cost = c,
				.e = R->se,
				.n = n,
				.tokens = tok,
				.link_free_ns = link_busy > router ? link_busy - router : 0,
				.allow = allow,
			};
			struct moe_split_plan p;
			uint64_t t0 = clock_monotonic_ns();
			int rc = pol == MOE_POL_HYBRIMOE
			                 ? moe_split_two_ended(&in, R->where, R->scratch, &p)
			                 : moe_split_plan(&in, R->where, R->scratch, &p);
			r->decide_ns += (double)(clock_monotonic_ns() - t0);
			r->decisions++;
			if (rc)
				return -1;
			for (uint32_t i = 0; i < n; i++) {
				uint32_t e = R->u.ids[a + i];
				if (R->where[i] == MOE_RUN_CPU)
					r->cpu_experts++;
				if (R->where[i] != MOE_RUN_LOAD)
					continue;
				r->loads++;
				/* Loaded on demand: kept where the cache admits it,
				 * else a scratch buffer for this layer only. */
				if (pol != MOE_POL_TANDEM)
					moe_cache_admit(&R->cache, l, e, l, R->pin,
					                pol == MOE_POL_LRU ||
					                        pol == MOE_POL_HYBRIMOE,
					                NULL);
				R->arrival[(size_t)l * E + e] = 0;
			}
			if (p.nload)
				link_busy = router + p.t_link_ns;
			r->t_serial_ns += router - clk;
			r->t_experts_ns += p.t_ns;
			r->t_cpu_ns += p.t_cpu_ns;
			r->t_gpu_ns += p.t_gpu_ns;
			r->t_link_ns += p.nload * moe_t_load(c);
			r->cpu_bound_layers += p.t_cpu_ns > p.t_gpu_ns;
			clk = router + p.t_ns;
			for (uint32_t i = 0; i < n; i++)
				R->pin[R->u.ids[a + i]] = 0;
			if (has_prefetch) {
				/* The next layer's router runs after its dense part;
				 * the last layer's next is the next step's first. */
				uint32_t nl = (l + 1) % L, ns = l + 1 < L ? s : s + 1;
				double deadline = clk + moe_t_dense(c, false, tok);
				if (nl == 0)
					deadline += moe_t_head(c, tok) +
					            c->m.dense_layers * moe_t_dense(c, true, tok);
				double from = fmax(link_busy, router);
				link_busy = prefetch(R, r, ns, nl, from, deadline,
				                     router + (p.ncpu ? p.t_cpu_ns : 0), clk);
				/* Prefetches while the CPU still computes read host
				 * memory with it: the CPU's experts slow down. */
				double cpu_done = router + p.t_cpu_ns;
				if (p.ncpu && link_busy > from && cpu_done > from) {
					cpu_done = shared_until(c, from, cpu_done, link_busy);
					if (cpu_done > clk) {
						r->t_experts_ns += cpu_done - clk;
						r->t_cpu_ns += cpu_done - (router + p.t_cpu_ns);
						clk = cpu_done;
					}
				}
			}
		}
		clk += moe_t_head(c, tok);
		r->t_serial_ns += moe_t_head(c, tok);
		r->steps++;
	}
	r->time_ns = clk;
	r->tokens = (double)r->steps * tok;
	return 0;
}

int moe_sim_run(const struct moe_cost *c, const struct moe_trace *t,
                const struct moe_trace *profile, const struct moe_sim_opts *o,
                struct moe_sim_result *r, char *err, size_t errlen)
{
	struct run R = { .c = c, .o = o };
	const uint32_t L = c->moe_layers, E = c->m.experts;
	const double util = o->gpu_util > 0 ? o->gpu_util : 0.9;
	const double reserve = o->reserve_bytes > 0 ? o->reserve_bytes : (double)(1u << 30);
	uint8_t *hot = NULL;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	if ((unsigned)o->policy >= MOE_POL_COUNT || !(o->budget >= 0 && o->budget <= 1) ||
	    (!o->batch && !o->prefill_tokens) || !(util > 0 && util <= 1)) {
		snprintf(err, errlen, "moe: bad options");
		return -TDM_EINVAL;
	}
	if (t->layers != L || t->experts != E || t->topk != c->m.topk) {
		snprintf(err, errlen,
		         "moe: the trace's shape (%u layers, %u experts, top-%u) is not %s's (%u, "
		         "%u, top-%u)",
		         t->layers, t->experts, t->topk, c->m.name, L, E, c->m.topk);
		return -TDM_EINVAL;
	}
	r->cap = (uint32_t)floor(o->budget * L * E + 1e-9);
	r->ncpu_layers = L - (uint32_t)floor(o->budget * L + 1e-9);
	/* Every policy of a cell is judged against the same budget. */
	r->gpu_bytes = c->nonexpert_bytes + r->cap * c->expert_bytes + reserve;
	r->fits = r->gpu_bytes <= util * c->hw.gpu_mem_bytes;
	if (!r->fits)
		return 0;
	uint32_t per = o->prefill_tokens ? o->prefill_tokens : o->batch;
	R.u_per = per;
	if (unions_build(t, per, &R.u)) {
		snprintf(err, errlen, "moe: the trace has fewer than %u tokens (or no memory)",
		         per);
		return -TDM_EINVAL;
	}
	enum moe_evict ev = evict_of(o->policy);
	uint32_t cap = o->policy == MOE_POL_STATIC || o->policy == MOE_POL_NCPUMOE ? 0 : r->cap;
	R.arrival = calloc((size_t)L * E, sizeof(*R.arrival));
	R.prefetched = calloc((size_t)L * E, 1);
	R.pin = calloc(E, 1);
	R.se = calloc(E, sizeof(*R.se));
	R.where = calloc(E, 1);
	R.scratch = calloc(2 * E, sizeof(*R.scratch));
	R.rank = calloc(E, sizeof(*R.rank));
	hot = malloc((size_t)L * E);
	if (!R.arrival || !R.prefetched || !R.pin || !R.se || !R.where || !R.scratch || !R.rank ||
	    !hot || moe_cache_init(&R.cache, ev, L, E, cap)) {
		snprintf(err, errlen, "moe: out of memory");
		rc = -TDM_ENOMEM;
		goto out;
	}
	if (profile && (profile->layers != L || profile->experts != E)) {
		snprintf(err, errlen, "moe: the profile's shape is not the trace's");
		rc = -TDM_EINVAL;
		goto out;
	}
	moe_hot_set(profile ? profile : t, 0, r->cap, hot);
	if (run_steps(&R, hot, profile, r)) {
		snprintf(err, errlen, "moe: a layer could not be planned");
		rc = -TDM_EINVAL;
		goto out;
	}
	r->tok_s = r->tokens / (r->time_ns / 1e9);
	r->hit_pct = r->lookups ? 100 * r->hits / r->lookups : 0;
	r->precision = r->prefetched ? r->prefetch_used / r->prefetched : 0;
	r->recall = r->prefetch_used + r->prefetch_missed
	                    ? r->prefetch_used / (r->prefetch_used + r->prefetch_missed)
	                    : 0;
	r->wasted_bytes_tok = (r->prefetched - r->prefetch_used) * c->expert_bytes / r->tokens;
out:
	moe_cache_free(&R.cache);
	unions_free(&R.u);
	free(R.arrival);
	free(R.prefetched);
	free(R.pin);
	free(R.se);
	free(R.where);
	free(R.scratch);
	free(R.rank);
	free(hot);
	return rc;
}

/* ---- -w moe:... ---- */

struct moe_spec {
	char model[32];
	char trace[512];
	double budget;
	uint32_t batch, tokens, prompt;
	uint64_t seed;
};

static int moe_spec_key(void *ctx, const char *kv, const char *v, char *err, size_t errlen)
{
	struct moe_spec *s = ctx;
	double d;

	if (!strcmp(kv, "model")) {
		struct moe_model m;
		if (moe_model_by_name(v, &m)) {
			snprintf(err, errlen,
			         "--workload moe: model=%s: unknown (mixtral-8x7b, "
			         "dsv2-lite, qwen1.5-moe)",
			         v);
			return -1;
		}
		snprintf(s->model, sizeof(s->model), "%s", v);
	} else if (!strcmp(kv, "trace")) {
		if (!*v || strlen(v) >= sizeof(s->trace)) {
			snprintf(err, errlen, "--workload moe: trace: gen or a file");
			return -1;
		}
		snprintf(s->trace, sizeof(s->trace), "%s", v);
	} else if (!strcmp(kv, "budget")) {
		if (sim_spec_num("moe", kv, v, 0, 100, &d, err, errlen))
			return -1;
		s->budget = d / 100;
	} else if (!strcmp(kv, "batch")) {
		if (sim_spec_num("moe", kv, v, 1, 1024, &d, err, errlen))
			return -1;
		s->batch = (uint32_t)d;
	} else if (!strcmp(kv, "tokens")) {
		if (sim_spec_num("moe", kv, v, 1, 1e6, &d, err, errlen))
			return -1;
		s->tokens = (uint32_t)d;
	} else if (!strcmp(kv, "prefill")) {
		if (sim_spec_num("moe", kv, v, 0, 65536, &d, err, errlen))
			return -1;
		s->prompt = (uint32_t)d;
	} else if (!strcmp(kv, "seed")) {
		if (sim_spec_num("moe", kv, v, 0, 1e15, &d, err, errlen))
			return -1;
		s->seed = (uint64_t)d;
	} else {
		snprintf(err, errlen,
		         "--workload moe: unknown key %s (model, budget, batch, tokens, "
		         "prefill, trace, seed)",
		         kv);
		return -1;
	}
	return 0;
}

static int parse_spec(const char *spec, struct moe_spec *s, char *err, size_t errlen)
{
	*s = (struct moe_spec){ .model = "dsv2-lite",
		                .trace = "gen",
		                .budget = 0.25,
		                .batch = 1,
		                .tokens = 256,
		                .seed = 1 };
	return sim_spec_each("moe", spec, moe_spec_key, s, err, errlen);
}

int moe_sim_cli(const struct machine *m, const char *spec, const char *policies, bool json)
{
	struct moe_spec s;
	struct moe_cost cost;
	struct moe_trace t, prof;
	struct moe_trace_shape shape;
	int pol[MOE_POL_COUNT];
	size_t npol = 0;
	char err[512];
	int rc = 0;

	memset(&t, 0, sizeof(t));
	memset(&prof, 0, sizeof(prof));
	if (parse_spec(spec, &s, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (sim_policy_list(policies, "MoE", policy_names, MOE_POL_COUNT, pol, &npol))
		return 2;
	if (moe_cost_from_machine(m, s.model, &cost, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	moe_trace_shape_by_name(moe_shape_of_model(s.model), cost.moe_layers, &shape);
	uint32_t streams = s.prompt ? 1 : s.batch;
	uint32_t per_stream = s.prompt ? s.tokens * s.prompt : s.tokens;
	if (strcmp(s.trace, "gen")) {
		if (moe_trace_load(s.trace, 0, &t, err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
	} else if (moe_trace_generate(&shape, per_stream, streams, s.seed, &t, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* A generated trace is profiled with another text of the same model;
	 * a file with itself (which flatters the static hot set). */
	bool file = strcmp(s.trace, "gen") != 0;
	if (!file && moe_trace_generate(&shape, 512, 1, s.seed + 1000, &prof, err, sizeof(err))) {
		fprintf(stderr, "moe: %s\n", err);
		moe_trace_free(&t);
		return 1;
	}
	fprintf(stderr,
	        "moe: %s on %s, %s, budget %.0f%% of %u routed experts, %s; CPU %.1f GB/s on %u "
	        "cores (%.1f while the link streams), link %.1f GB/s; break-even %u tokens per "
	        "expert\n",
	        cost.m.name, m->name, s.prompt ? "prefill" : "decode", s.budget * 100,
	        cost.moe_layers * cost.m.experts, strcmp(s.trace, "gen") ? s.trace : "generated",
	        cost.cpu_gbps, cost.cpu_cores, cost.cpu_gbps_shared, cost.hw.link_gbps,
	        moe_breakeven_tokens(&cost));
	json_t *rows = json ? json_array() : NULL;
	if (!json)
		printf("%-9s %10s %7s %9s %7s %11s\n", "policy", "tok/s", "hit%", "precision",
		       "recall", "wasted_MB/t");
	for (size_t i = 0; i < npol; i++) {
		struct moe_sim_opts o = { .policy = pol[i],
			                  .budget = s.budget,
			                  .batch = s.batch,
			                  .prefill_tokens = s.prompt };
		struct moe_sim_result r;
		if (moe_sim_run(&cost, &t, file ? NULL : &prof, &o, &r, err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", moe_policy_name(pol[i]), err);
			rc = 1;
			break;
		}
		if (!r.fits) {
			fprintf(stderr,
			        "moe: %.1f GB of weights and budget do not fit %.1f GB: nothing "
			        "claimed\n",
			        r.gpu_bytes / 1e9, cost.hw.gpu_mem_bytes / 1e9);
			rc = 1;
			break;
		}
		if (json)
			json_array_append_new(rows,
			                      json_pack("{s:s,s:f,s:f,s:f,s:f,s:f}", "policy",
			                                moe_policy_name(pol[i]), "tok_s", r.tok_s,
			                                "hit_pct", r.hit_pct, "precision",
			                                r.precision, "recall", r.recall,
			                                "wasted_bytes_tok", r.wasted_bytes_tok));
		else
			printf("%-9s %10.1f %7.1f %9.2f %7.2f %11.1f\n", moe_policy_name(pol[i]),
			       r.tok_s, r.hit_pct, r.precision, r.recall, r.wasted_bytes_tok / 1e6);
	}
	if (json && !rc) {
		json_dumpf(rows, stdout, JSON_INDENT(1));
		printf("\n");
	}
	json_decref(rows);
	moe_trace_free(&t);
	moe_trace_free(&prof);
	return rc;
}
