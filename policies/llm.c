/* llm: dmda plus KV tiers and the decode step decision (llm.h). */
#include "policies/llm.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernels.h"
#include "common/clock.h"
#include "common/log.h"
#include "placement/llm_step.h"
#include "placement/residency.h"
#include "policies/dispatch.h"
#include "policies/llm_moe.h"
#include "profiler/profiler.h"
#include "tandem.h"

/* What the graph scan knows of one buffer (open addressing by pointer;
 * entries of older scans are stale by their generation). */
struct seen {
	struct res_data *d;
	uint32_t gen;
	uint8_t counted; /* OTHER_*: the sums its bytes went to */
};

/* A unit of KV the tiers move as one: a request's KV buffers (all its
 * layers: res_data.request), or, without a request id, the buffer
 * holding K. Kept across graphs: the decision of the last step that
 * named it is what the tasks of its later layers follow (llm_task). */
struct unit {
	uint64_t key; /* request, or the K buffer's address with bit 63 set */
	uint32_t gen; /* the scan that last named it */
	int home; /* its tier: 0 (host) or the accelerator's node */
	uint8_t where; /* enum llm_run of its attention in the last step */
	double work; /* one layer's attention work (feature `domain`) */
	uint64_t layer_bytes; /* its K and V buffers' bytes in one layer */
	uint64_t bytes; /* what its tier holds: layer_bytes x the layers */
	struct res_data *k, *v; /* its layer-0 buffers, valid during a scan */
	uint64_t k_off; /* where the first attention's K starts in k */
};

struct llm {
	void *dispatch;
	struct profiler *prof;
	struct residency *res;
	const struct engine_core *core;
	const struct engine_device *devices; /* [ndev], the engine's */
	uint32_t ndev; /* devices known (device_added) */
	/* Under lock from here, as the devices come and go: */
	int accel; /* device index, -1: none (the policy is plain dmda) */
	unsigned accel_node;
	int host_dev; /* a host device, for the CPU predictions */
	bool by_cost; /* policy.llm_tiers_by_cost */
	uint32_t host_cores; /* host devices: CPU attention's parallelism */
	pthread_mutex_t lock; /* everything below */
	uint32_t gen;
	struct seen *set;
	size_t set_cap, set_n; /* a power of 2; entries of this scan */
	struct unit *units; /* dense, slot[] indexes it */
	uint32_t nunits, units_cap;
	uint32_t *slot; /* hash of units by key: index + 1, 0: empty */
	size_t slot_cap; /* a power of 2 */
	uint32_t *step; /* the scan's units, first use first */
	uint32_t nstep;
	uint32_t *attn; /* the first layer's attention tasks */
	uint32_t *attn_unit; /* the unit of each */
	struct llm_step_req *req;
	uint8_t *where;
	uint32_t *scratch;
	size_t cap; /* of step, attn, req, where, scratch */
	struct llm_policy_stats st;
	/* The MoE split at release (llm_moe.h), made for the first
	 * accelerator and host core the policy had; live while that
	 * accelerator is the step's (moe_follow). */
	struct llm_moe *moe;
	int moe_accel;
	_Atomic bool moe_live;
};

static bool is_kv_attention(const struct engine_task *t)
{
	return t->kernel->id == KERNEL_ATTN_DECODE && t->call.nargs >= 4 && t->data[1] &&
	       t->data[2] && t->data[1]->keep_on_devices && t->data[2]->keep_on_devices;
}

static size_t hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (size_t)x;
}

static uint64_t unit_key(const struct res_data *k)
{
	return k->request ? k->request : (uint64_t)(uintptr_t)k | 1ull << 63;
}

/* d's entry in this scan (NULL: no memory); *fresh: new. */
static struct seen *set_mark(struct llm *L, struct res_data *d, bool *fresh)
{
	if (2 * (L->set_n + 1) > L->set_cap) {
		size_t cap = L->set_cap ? 2 * L->set_cap : 256;
		struct seen *s = calloc(cap, sizeof(*s));
		if (!s)
			return NULL;
		for (size_t i = 0; i < L->set_cap; i++) {
			struct seen *e = &L->set[i];
			if (e->gen != L->gen || !e->d)
				continue;
			size_t j = hash64((uintptr_t)e->d) & (cap - 1);
			while (s[j].d)
				j = (j + 1) & (cap - 1);
			s[j] = *e;
		}
		free(L->set);
		L->set = s;
		L->set_cap = cap;
	}
	size_t mask = L->set_cap - 1;
	for (size_t i = hash64((uintptr_t)d) & mask;; i = (i + 1) & mask) {
		struct seen *e = &L->set[i];
		if (e->gen != L->gen || !e->d) {
			*e = (struct seen){ .d = d, .gen = L->gen };
			L->set_n++;
			*fresh = true;
			return e;
		}
		if (e->d == d) {
			*fresh = false;
			return e;
		}
	}
}

static void slot_put(struct llm *L, uint32_t idx)
{
	size_t mask = L->slot_cap - 1, i = hash64(L->units[idx].key) & mask;
	while (L->slot[i])
		i = (i + 1) & mask;
	L->slot[i] = idx + 1;
}

static struct unit *unit_find(const struct llm *L, uint64_t key)
{
	if (!L->slot_cap)
		return NULL;
	size_t mask = L->slot_cap - 1;
	for (size_t i = hash64(key) & mask; L->slot[i]; i = (i + 1) & mask)
		if (L->units[L->slot[i] - 1].key == key)
			return &L->units[L->slot[i] - 1];
	return NULL;
}

/* Units not named by the last UNIT_KEEP scans are forgotten (their
 * requests ended, or wait) when the table fills. */
#define UNIT_KEEP 64u

/* Room for `more` units: grows (units keep their indices); with `drop`,
 * first forgets the units no recent scan named (between scans only: a
 * scan's L->step holds indices). */
static int units_room(struct llm *L, uint32_t more, bool drop)
{
	if (!drop && L->nunits + more <= L->units_cap)
		return 0;
	uint32_t n = 0;
	for (uint32_t i = 0; i < L->nunits; i++)
		n += !drop || L->gen - L->units[i].gen < UNIT_KEEP;
	uint32_t cap = L->units_cap ? L->units_cap : 256;
	while (cap < 4 * (n + more)) /* half free after a sweep: sweeps stay rare */
		cap *= 2;
	if (cap != L->units_cap) {
		struct unit *u = realloc(L->units, cap * sizeof(*u));
		if (!u)
			return -TDM_ENOMEM;
		L->units = u;
		uint32_t *sl = calloc(2 * (size_t)cap, sizeof(*sl));
		if (!sl)
			return -TDM_ENOMEM;
		free(L->slot);
		L->slot = sl;
		L->units_cap = cap;
		L->slot_cap = 2 * (size_t)cap;
	} else {
		memset(L->slot, 0, L->slot_cap * sizeof(*L->slot));
	}
	n = 0;
	for (uint32_t i = 0; i < L->nunits; i++)
		if (!drop || L->gen - L->units[i].gen < UNIT_KEEP)
			L->units[n++] = L->units[i];
	L->nunits = n;
	for (uint32_t i = 0; i < n; i++)
		slot_put(L, i);
	return 0;
}

/* The unit of key, created when new (home: the buffer's). */
static struct unit *unit_get(struct llm *L, uint64_t key, const struct res_data *k)
{
	struct unit *u = unit_find(L, key);
	if (u)
		return u;
	/* Growing moves units: callers keep indices (L->step), not pointers. */
	if (units_room(L, 1, false))
		return NULL;
	u = &L->units[L->nunits];
	*u = (struct unit){ .key = key, .gen = L->gen - 1, .home = residency_home(k) };
	slot_put(L, L->nunits++);
	return u;
}

/* The per-scan arrays for at least n entries. */
static int step_room(struct llm *L, size_t n)
{
	if (n <= L->cap)
		return 0;
	size_t c = L->cap ? 2 * L->cap : 256;
	while (c < n)
		c *= 2;
	void *p[6] = { realloc(L->step, c * sizeof(*L->step)) };
	if (p[0])
		L->step = p[0];
	p[1] = realloc(L->attn, c * sizeof(*L->attn));
	if (p[1])
		L->attn = p[1];
	p[2] = realloc(L->req, c * sizeof(*L->req));
	if (p[2])
		L->req = p[2];
	p[3] = realloc(L->where, c * sizeof(*L->where));
	if (p[3])
		L->where = p[3];
	p[4] = realloc(L->scratch, c * sizeof(*L->scratch));
	if (p[4])
		L->scratch = p[4];
	p[5] = realloc(L->attn_unit, c * sizeof(*L->attn_unit));
	if (p[5])
		L->attn_unit = p[5];
	for (int i = 0; i < 6; i++)
		if (!p[i])
			return -TDM_ENOMEM;
	L->cap = c;
	return 0;
}

/* Tasks of one kernel: how many, and their features summed. */
struct feat_sum {
	uint32_t n;
	struct kernel_features f;
};

static void feat_add(struct feat_sum *s, const struct kernel_features *f)
{
	s->n++;
	s->f.flops += f->flops;
	s->f.bytes += f->bytes;
	s->f.domain += f->domain;
}

static void feat_sub(struct feat_sum *s, const struct kernel_features *f)
{
	s->n--;
	s->f.flops -= f->flops;
	s->f.bytes -= f->bytes;
	s->f.domain -= f->domain;
}

/* The predicted time of s's tasks on device dev: n predictions at their
 * mean features (exact for a model affine in the features, and one
 * prediction per kernel rather than per task: the decision stays within
 * its time budget at large batches). */
static double predict_sum(const struct llm *L, uint32_t kernel, const struct feat_sum *s, int dev)
{
	if (!s->n)
		return 0;
	struct kernel_features mean = { s->f.flops / s->n, s->f.bytes / s->n, s->f.domain / s->n };
	struct cost_pred cp;
	profiler_predict(L->prof, kernel, (uint32_t)dev, &mean, &cp);
	return s->n * (isfinite(cp.ns) && cp.ns > 0 ? cp.ns : 1);
}

/* ---- the step's costs, from this graph's predictions ----
 *
 * A planner "request" is one attention task; its kv_tokens are the task's
 * attention work (feature `domain`), so sums of kv_tokens scale the
 * measured per-unit rates of the step's own tasks. */
struct step_costs {
	const struct llm *L;
	double linear_ns; /* the accelerator's other work of the graph */
	double gpu_ns_unit, cpu_ns_unit;
	double copy_lat_ns, copy_ns_byte;
	uint32_t cores;
};

static double c_linear(void *ctx, double tokens)
{
	const struct step_costs *s = ctx;
	return tokens > 0 ? s->linear_ns : 0;
}

static double c_attn_gpu(void *ctx, double units)
{
	const struct step_costs *s = ctx;
	return units > 0 ? units * s->gpu_ns_unit : 0;
}

static uint32_t c_cores_used(void *ctx, uint32_t nreq)
{
	const struct step_costs *s = ctx;
	return nreq < s->cores ? nreq : s->cores;
}

static double c_attn_cpu(void *ctx, uint32_t nreq, double units)
{
	const struct step_costs *s = ctx;
	if (!nreq || units <= 0)
		return 0;
	return units * s->cpu_ns_unit / c_cores_used(ctx, nreq);
}

static double c_link(void *ctx, double bytes, uint32_t copies)
{
	const struct step_costs *s = ctx;
	return copies * s->copy_lat_ns + (bytes > 0 ? bytes : 0) * s->copy_ns_byte;
}

/* ---- tiers ---- */

/* A unit's buffer joins its unit's tier (home: its node). */
static void home_buffer(struct res_data *d, int home)
{
	if (d && residency_home(d) != home)
		residency_set_home(d, home);
}

/* Homes the step's units (L->step, first use first): those on the
 * accelerator stay while the budget holds them (in first-use order), the
 * rest fill what is left, others live on the host. KV of other graphs
 * homed on the accelerator (other requests, other clients) counts against
 * the budget: this graph cannot demote what it does not see. A unit's
 * bytes are all its layers'; its work one layer's, as `target` is: the
 * attention work the cost models would have on the accelerator per layer
 * (INFINITY: as much as the budget holds); a unit is promoted only while
 * the work there stays within it, and demoted only beyond 1.25 times it,
 * so that predictions that wobble do not move caches back and forth.
 * Returns the budget left (bytes). */
static uint64_t decide_tiers(struct llm *L, uint64_t budget, double target)
{
	double work = 0;
	int an = (int)L->accel_node;
	uint64_t mine = 0, used;

	for (uint32_t k = 0; k < L->nstep; k++) {
		struct unit *u = &L->units[L->step[k]];
		if (u->home == an)
			mine += u->bytes;
	}
	/* The experts the MoE cache homed there give way: the KV tiers have
	 * the first claim, and the cache's budget follows what they hold
	 * (llm_moe.h). */
	uint64_t all = residency_home_bytes(L->res, L->accel_node);
	uint64_t experts = llm_moe_homed_bytes(L->moe);
	used = all > mine + experts ? all - mine - experts : 0;

	for (uint32_t k = 0; k < L->nstep; k++) {
		struct unit *u = &L->units[L->step[k]];
		if (u->home != an)
			continue;
		if (used + u->bytes <= budget && work + u->work <= 1.25 * target) {
			used += u->bytes;
			work += u->work;
		} else {
			u->home = 0;
			L->st.demotes++;
		}
	}
	for (uint32_t k = 0; k < L->nstep; k++) {
		struct unit *u = &L->units[L->step[k]];
		int h = u->home;
		if (h == an)
			continue;
		if (used + u->bytes <= budget && work + u->work <= target) {
			used += u->bytes;
			work += u->work;
			u->home = an;
			if (h == 0)
				L->st.promotes++;
		} else {
			u->home = 0;
		}
	}
	uint64_t host = 0;
	for (uint32_t k = 0; k < L->nstep; k++) {
		struct unit *u = &L->units[L->step[k]];
		/* The buffers the scan saw now; the other layers' as their
		 * tasks are released (llm_task). */
		home_buffer(u->k, u->home);
		home_buffer(u->v, u->home);
		if (u->home == 0)
			host += u->bytes;
	}
	L->st.kv_accel_bytes = used;
	L->st.kv_host_bytes = host;
	return budget > used ? budget - used : 0;
}

/* The graph's "other" data (weights, activations): each buffer counted
 * once in `all`, and the kept ones (weights) first named in the layer
 * period also in `kept`. A KV buffer written before its attention (the
 * append) is taken out again when an attention names it. */
struct other_sum {
	uint64_t all, kept;
	struct res_data *last[4]; /* the last buffers looked up */
	unsigned next;
};
#define OTHER_ALL 1u
#define OTHER_KEPT 2u
#define OTHER_KV 4u

static int add_other(struct llm *L, const struct engine_task *t, bool in_period,
                     struct other_sum *o)
{
	bool fresh, attn = is_kv_attention(t);
	for (uint32_t a = 0; a < t->call.nargs && a < TDM_MAX_ARGS; a++) {
		struct res_data *d = t->data[a];
		bool kv = attn && (a == 1 || a == 2);
		/* A routed expert's weights are the expert cache's share. */
		if (t->guard_router && t->kernel->id == KERNEL_MOE_EXPERT && a >= 1 && a <= 3)
			continue;
		/* Per-request KV is never other; activations repeat from task
		 * to task: skip the set for the last few seen. */
		if (!d || d->request ||
		    (!kv &&
		     (d == o->last[0] || d == o->last[1] || d == o->last[2] || d == o->last[3])))
			continue;
		o->last[o->next++ & 3] = d;
		struct seen *e = set_mark(L, d, &fresh);
		if (!e)
			return -TDM_ENOMEM;
		if (kv) {
			if (e->counted & OTHER_ALL)
				o->all -= d->bytes;
			if (e->counted & OTHER_KEPT)
				o->kept -= d->bytes;
			e->counted = OTHER_KV;
		} else if (fresh) {
			o->all += d->bytes;
			e->counted = OTHER_ALL;
			if (in_period && d->keep_on_devices) {
				o->kept += d->bytes;
				e->counted |= OTHER_KEPT;
			}
		}
	}
	return 0;
}

static double attn_work(const struct engine_task *t)
{
	return t->feat.domain >= 1 ? fmin(t->feat.domain, 4e9) : 1;
}

/* The step decision, once per graph (a decode step).
 *
 * The layers of a step repeat: each attends over the same requests with
 * the same lengths. So the scan reads the graph only until a request
 * comes again, and decides on the first layer: its
 * attention tasks are the planner's requests, the tasks between the first
 * layer's first attention and the second layer's (one layer's worth of
 * every kind) give the other work per layer, and the number of layers is
 * the graph's length over that period. A request's tier and where its
 * attention runs then hold for all its layers; the tasks past the scan
 * are pinned as they are released (llm_task). KV buffers without a
 * request id are each a unit of their own, and never end the scan: such
 * a graph is read whole, one layer. */
static void llm_graph(void *ctx, struct engine_graph *g)
{
	struct llm *L = ctx;
	uint64_t t0 = clock_monotonic_ns();

	pthread_mutex_lock(&L->lock);
	/* No accelerator (or no host core) left: nothing to tier, dmda; a KV
	 * cache still homed on a device node (one that left) lives on the
	 * host from now on. */
	if (L->accel < 0 || L->host_dev < 0) {
		for (uint32_t i = 0; i < g->ntasks; i++)
			for (int a = 1; a <= 2 && is_kv_attention(&g->tasks[i]); a++)
				if (residency_home(g->tasks[i].data[a]) > 0)
					residency_set_home(g->tasks[i].data[a], 0);
		pthread_mutex_unlock(&L->lock);
		return;
	}
	L->gen++;
	L->set_n = 0;
	if (L->gen == 0) { /* wrapped: clear the stale generations */
		memset(L->set, 0, L->set_cap * sizeof(*L->set));
		for (uint32_t i = 0; i < L->nunits; i++)
			L->units[i].gen = 0;
		L->gen = 1;
	}
	if (2 * L->nunits >= L->units_cap && units_room(L, 0, true))
		goto nomem;
	L->nstep = 0;
	/* A graph without a KV attention decides nothing (the scan below
	 * would end with n == 0): its tasks are not read further. */
	uint32_t first = 0;
	while (first < g->ntasks && !is_kv_attention(&g->tasks[first]))
		first++;
	if (first == g->ntasks) {
		pthread_mutex_unlock(&L->lock);
		return;
	}
	uint32_t n = 0, i0 = UINT32_MAX, i1 = UINT32_MAX;
	struct feat_sum by_kernel[KERNEL_COUNT] = { 0 }, attn_sum = { 0 };
	struct other_sum other = { 0 };

	for (uint32_t i = 0; i < g->ntasks; i++) {
		struct engine_task *t = &g->tasks[i];
		if (is_kv_attention(t)) {
			struct res_data *k = t->data[1], *v = t->data[2] == k ? NULL : t->data[2];
			struct unit *u = unit_get(L, unit_key(k), k);
			if (!u)
				goto nomem;
			/* A request again, over other KV than its first
			 * attention's: the second layer begins. (Over the same
			 * KV it is the same layer again: a prefill's
			 * positions.) */
			if (u->gen == L->gen && k->request &&
			    (k != u->k || t->call.off[1] != u->k_off)) {
				i1 = i;
				break;
			}
			if (u->gen != L->gen) {
				if (step_room(L, L->nstep + 1))
					goto nomem;
				*u = (struct unit){ .key = u->key,
					            .gen = L->gen,
					            .home = u->home,
					            .where = u->where,
					            .layer_bytes = k->bytes + (v ? v->bytes : 0),
					            .k = k,
					            .v = v,
					            .k_off = t->call.off[1] };
				L->step[L->nstep++] = (uint32_t)(u - L->units);
			}
			if (i0 == UINT32_MAX)
				i0 = i;
			/* The planner's requests (at most LLM_STEP_MAX: the rest
			 * follow their tier's side). */
			if (n < LLM_STEP_MAX) {
				if (step_room(L, n + 1))
					goto nomem;
				L->attn[n] = i;
				L->attn_unit[n++] = (uint32_t)(u - L->units);
				u->work += attn_work(t);
				feat_add(&attn_sum, &t->feat);
			}
		} else if (t->kernel->id < KERNEL_COUNT) {
			feat_add(&by_kernel[t->kernel->id], &t->feat);
		}
		if (add_other(L, t, i0 != UINT32_MAX, &other))
			goto nomem;
	}
	if (!n) {
		pthread_mutex_unlock(&L->lock);
		return;
	}
	/* One layer (no request seen twice): the whole graph is the step, as
	 * it was read. Else the scan read the tasks before the first
	 * attention and one period, from the first layer's first attention to
	 * the second's: one layer's worth of every task (with the next
	 * layer's projections). The layers: the graph's length over the
	 * period. The data: what the scan named, plus each further period's
	 * weights (as the first period's), plus the tail after the last
	 * attention (an LM head), read backwards. The other work per layer:
	 * the period's. */
	uint32_t layers = 1;
	if (i1 != UINT32_MAX) {
		uint32_t period = i1 - i0;
		layers = (uint32_t)lround((double)(g->ntasks - i0) / period);
		if (layers < 2)
			layers = 2;
		uint32_t tail = g->ntasks;
		while (tail > i1 && !is_kv_attention(&g->tasks[tail - 1]))
			tail--;
		uint64_t kept = other.kept;
		for (uint32_t i = tail; i < g->ntasks; i++)
			if (add_other(L, &g->tasks[i], false, &other))
				goto nomem;
		other.all += (uint64_t)(layers - 2) * kept;
		for (uint32_t i = 0; i < i0; i++) /* not the period's */
			if (g->tasks[i].kernel->id < KERNEL_COUNT)
				feat_sub(&by_kernel[g->tasks[i].kernel->id], &g->tasks[i].feat);
	}
	for (uint32_t k = 0; k < L->nstep; k++) {
		struct unit *u = &L->units[L->step[k]];
		u->bytes = u->k->request ? u->layer_bytes * layers : u->layer_bytes;
	}

	double linear = 0, units = 0, gpu_ns = 0, cpu_ns = 0, qo = 0, missing = 0, host_units = 0;
	for (uint32_t kid = 0; L->prof && kid < KERNEL_COUNT; kid++)
		linear += predict_sum(L, kid, &by_kernel[kid], L->accel);
	for (uint32_t k = 0; k < L->nstep; k++)
		units += L->units[L->step[k]].work;
	if (L->prof) {
		gpu_ns = predict_sum(L, KERNEL_ATTN_DECODE, &attn_sum, L->accel);
		cpu_ns = predict_sum(L, KERNEL_ATTN_DECODE, &attn_sum, L->host_dev);
	}
	uint32_t cores = L->host_cores ? L->host_cores : 1;
	/* The accelerator's share of the attention work that balances the
	 * step: linear + g Ud = c (U - Ud) / cores (APEX's balance), with g
	 * and c the predicted times per unit of work there and on one core.
	 * Less than that on the accelerator leaves it idle while the cores
	 * attend; more makes the accelerator the longer side. */
	double target = INFINITY;
	if (L->by_cost && L->prof && units > 0) {
		double gu = gpu_ns / units, c = cpu_ns / units / cores;
		target = fmin(fmax((c * units - linear) / (gu + c), 0), units);
	}
	uint64_t cap = L->res->nodes[L->accel_node].cap;
	uint64_t free_b = decide_tiers(L, cap > other.all ? cap - other.all : 0, target);
	/* Streamed KV of one layer at a time, but the replicas stay until
	 * evicted: room for every layer's. */
	free_b /= layers;

	/* The first layer: each attention task's tier. */
	units = 0;
	for (uint32_t k = 0; k < n; k++) {
		struct engine_task *t = &g->tasks[L->attn[k]];
		double u = attn_work(t);
		bool host = L->units[L->attn_unit[k]].home == 0;
		L->req[k] =
		        (struct llm_step_req){ (uint32_t)u, host ? LLM_TIER_HOST : LLM_TIER_GPU };
		units += (uint32_t)u;
		qo += (double)t->call.len[0] + (double)t->call.len[3];
		if (host) {
			host_units += (uint32_t)u;
			for (int a = 1; a <= 2; a++)
				missing += (double)residency_missing(
				        t->data[a], L->accel_node, t->call.off[a], t->call.len[a]);
		}
	}
	struct step_costs sc = {
		.L = L,
		.linear_ns = linear,
		.gpu_ns_unit = gpu_ns / units,
		.cpu_ns_unit = cpu_ns / units,
		.cores = cores,
	};
	if (L->prof) {
		double lat = profiler_predict_copy(L->prof, 0, (uint16_t)L->accel_node, 0);
		double mb = profiler_predict_copy(L->prof, 0, (uint16_t)L->accel_node, 1u << 20);
		sc.copy_lat_ns = isfinite(lat) && lat > 0 ? lat : 0;
		sc.copy_ns_byte = isfinite(mb) && mb > sc.copy_lat_ns
		                          ? (mb - sc.copy_lat_ns) / (double)(1u << 20)
		                          : 0;
	}
	struct llm_step_costs costs = {
		.ctx = &sc,
		.linear = c_linear,
		.attn_gpu = c_attn_gpu,
		.attn_cpu = c_attn_cpu,
		.link = c_link,
		.cores_used = c_cores_used,
		.kv_tok_bytes = host_units > 0 ? missing / host_units : 0,
		.qo_req_bytes = qo / n,
		.link_latency_ns = sc.copy_lat_ns,
		.layers = 1,
	};
	struct llm_step_in in = {
		.costs = &costs,
		.req = L->req,
		.n = n,
		.stream_scratch_bytes = (double)free_b,
		/* Without cost models nothing is weighed: attention stays
		 * next to its KV. */
		.allow = LLM_ALLOW_OVERLAP | (L->prof ? LLM_ALLOW_STREAM : 0),
	};
	struct llm_step_plan plan;
	if (llm_step_plan(&in, L->where, L->scratch, &plan) != 0) {
		for (uint32_t k = 0; k < n; k++)
			L->where[k] = L->req[k].tier == LLM_TIER_HOST ? LLM_RUN_CPU : LLM_RUN_GPU;
		plan.mode = LLM_STEP_OVERLAP;
	}

	/* The first layer's attention where the plan says; its unit keeps
	 * the choice for the other layers (llm_task). */
	for (uint32_t k = 0; k < n; k++) {
		struct engine_task *t = &g->tasks[L->attn[k]];
		bool cpu = L->where[k] == LLM_RUN_CPU;
		t->policy_node = (uint8_t)(1 + (cpu ? 0 : L->accel_node));
		L->units[L->attn_unit[k]].where = L->where[k];
		L->st.attn_host += (uint64_t)cpu * layers;
		L->st.attn_accel += (uint64_t)!cpu * layers;
		L->st.attn_streamed += (uint64_t)(L->where[k] == LLM_RUN_STREAM) * layers;
	}
	uint64_t dt = clock_monotonic_ns() - t0;
	log_debug("llm: graph %llu: %u attention x %u layers (%u on the host, %u streamed), KV "
	          "%llu B on node %u, %llu B on the host, mode %d, predicted %.0f us (gpu %.0f "
	          "cpu %.0f link %.0f), decided in %llu ns",
	          (unsigned long long)g->cookie, n, layers, plan.ncpu, plan.nstream,
	          (unsigned long long)L->st.kv_accel_bytes, L->accel_node,
	          (unsigned long long)L->st.kv_host_bytes, (int)plan.mode, plan.t_step_ns / 1e3,
	          plan.t_gpu_ns / 1e3, plan.t_cpu_ns / 1e3, plan.t_link_ns / 1e3,
	          (unsigned long long)dt);
	L->st.steps++;
	L->st.last_mode = plan.mode;
	L->st.last_layers = layers;
	L->st.decide_ns_last = dt;
	L->st.decide_ns_sum += dt;
	if (dt > L->st.decide_ns_max)
		L->st.decide_ns_max = dt;
	pthread_mutex_unlock(&L->lock);
	return;
nomem:
	/* No memory for the scratch: what was decided stands, the rest is
	 * plain dmda. */
	pthread_mutex_unlock(&L->lock);
}

/* A released task of a decided graph: an attention over a unit's KV runs
 * where the unit's last step decided, a task that writes a unit's KV
 * (the append of its new row) on its home; the buffer joins its unit's
 * tier first. Units are found by key, so the layers past the scan follow
 * the first layer's decision. */
static uint8_t llm_task(void *ctx, struct engine_task *t)
{
	struct llm *L = ctx;
	uint8_t node = 0;
	bool attn = is_kv_attention(t);
	uint32_t a = 0;

	if (!attn) { /* the first KV argument it writes */
		for (; a < t->call.nargs && a < TDM_MAX_ARGS; a++) {
			struct res_data *d = t->data[a];
			if (d && d->keep_on_devices && (t->kernel->arg_modes[a] & TDM_W))
				break;
		}
		if (a >= t->call.nargs || a >= TDM_MAX_ARGS)
			return 0;
	} else {
		a = 1;
	}
	pthread_mutex_lock(&L->lock);
	struct unit *u = unit_find(L, unit_key(t->data[a]));
	/* A unit keyed by address is trusted only while recent (the
	 * address may since hold another buffer). */
	if (u && !t->data[a]->request && L->gen - u->gen >= UNIT_KEEP)
		u = NULL;
	if (u && L->accel >= 0) {
		/* A home on a node that left since the decision: the host. */
		int home = u->home == (int)L->accel_node ? u->home : 0;
		home_buffer(t->data[a], home);
		if (attn) {
			home_buffer(t->data[2], home);
			node = (uint8_t)(1 + (u->where == LLM_RUN_CPU ? 0 : L->accel_node));
		} else {
			node = (uint8_t)(1 + home);
		}
	}
	pthread_mutex_unlock(&L->lock);
	return node;
}

static void llm_ready(void *ctx, struct engine_task **tasks, size_t n)
{
	struct llm *L = ctx;
	if (atomic_load_explicit(&L->moe_live, memory_order_acquire))
		llm_moe_ready(L->moe, tasks, n);
}

static void llm_fini(void *ctx)
{
	struct llm *L = ctx;
	llm_moe_free(L->moe);
	pthread_mutex_destroy(&L->lock);
	free(L->set);
	free(L->units);
	free(L->slot);
	free(L->step);
	free(L->attn);
	free(L->attn_unit);
	free(L->req);
	free(L->where);
	free(L->scratch);
	free(L);
}

static bool takes_tasks(const struct engine_device *d)
{
	return atomic_load_explicit(&((struct engine_device *)d)->state, memory_order_acquire) ==
	       ENGINE_DEV_ACTIVE;
}

/* Device i may be the step's accelerator or host core when there is
 * none: it takes tasks, and an accelerator has a memory node of its own
 * that the residency knows. Caller holds lock (or is init). */
static void adopt_role(struct llm *L, uint32_t i)
{
	const struct engine_device *d = &L->devices[i];
	if (!takes_tasks(d))
		return;
	if (d->node == 0) {
		if (L->host_dev < 0)
			L->host_dev = (int)i;
	} else if (L->accel < 0 && L->res && d->node < L->res->nnodes &&
	           !L->res->nodes[d->node].gone) {
		L->accel = (int)i;
		L->accel_node = d->node;
	}
}

/* Device i joins (or comes back): a host core counts for CPU attention. */
static void adopt(struct llm *L, uint32_t i)
{
	if (L->devices[i].node == 0 && takes_tasks(&L->devices[i]))
		L->host_cores++;
	adopt_role(L, i);
}

/* The MoE split follows the accelerator: made once there is one (and a
 * host core), paused while the step's accelerator is another one (its
 * costs and cache are the first one's). Caller holds lock (or is init). */
static void moe_follow(struct llm *L)
{
	if (!L->moe && L->accel >= 0 && L->host_dev >= 0) {
		/* Without memory for it, MoE experts are dmda's. */
		L->moe = llm_moe_create(L->prof, L->res, L->core, L->accel, L->accel_node,
		                        L->host_dev, L->host_cores);
		L->moe_accel = L->accel;
	}
	atomic_store_explicit(&L->moe_live, L->moe && L->accel == L->moe_accel && L->host_dev >= 0,
	                      memory_order_release);
}

static int llm_init(const struct policy_params *p, void **priv)
{
	int err = dispatch_init(p, TDM_POLICY_DMDA, priv);
	if (err)
		return err;
	struct llm *L = calloc(1, sizeof(*L));
	if (!L) {
		dispatch_fini(*priv);
		return -TDM_ENOMEM;
	}
	pthread_mutex_init(&L->lock, NULL);
	L->dispatch = *priv;
	L->prof = p->prof;
	L->by_cost = p->tuning ? p->tuning->llm_tiers_by_cost : true;
	L->res = p->res;
	L->core = p->core;
	L->accel = L->host_dev = -1;
	L->devices = p->devices;
	L->ndev = (uint32_t)p->nworkers;
	for (uint32_t i = 0; i < L->ndev; i++)
		adopt(L, i);
	moe_follow(L);
	/* Without an accelerator or a host core there is nothing to tier
	 * (plain dmda) until a device comes (llm_graph looks each time). */
	struct dispatch_graph_hook h = {
		.graph = llm_graph, .fini = llm_fini, .ctx = L, .ready = llm_ready, .task = llm_task
	};
	dispatch_set_graph_hook(*priv, &h);
	return 0;
}

/* ---- elastic devices: the tiers follow the accelerator ---- */

static struct llm *llm_of(void *priv)
{
	return dispatch_graph_hook_ctx(priv);
}

static void llm_device_added(void *priv, unsigned w)
{
	dispatch_device_added(priv, w);
	struct llm *L = llm_of(priv);
	if (!L)
		return;
	pthread_mutex_lock(&L->lock);
	if (w >= L->ndev)
		L->ndev = w + 1;
	adopt(L, w);
	moe_follow(L);
	pthread_mutex_unlock(&L->lock);
}

/* The accelerator (or host core) the step decisions use leaves: another
 * one takes its place, and the next step's tiers home the KV caches homed
 * on the old node on the new one while its budget holds them, on the host
 * otherwise (decide_tiers moves every home that is neither). Queued tasks
 * the dispatch core moves. */
static void llm_device_draining(void *priv, unsigned w)
{
	struct llm *L = llm_of(priv);
	if (L) {
		pthread_mutex_lock(&L->lock);
		if (L->devices[w].node == 0 && L->host_cores)
			L->host_cores--;
		if ((int)w == L->accel || (int)w == L->host_dev) {
			if ((int)w == L->accel)
				L->accel = -1;
			else
				L->host_dev = -1;
			for (uint32_t i = 0; i < L->ndev; i++)
				if (i != w)
					adopt_role(L, i);
			moe_follow(L);
		}
		pthread_mutex_unlock(&L->lock);
	}
	dispatch_device_draining(priv, w);
}

static void llm_device_removed(void *priv, unsigned w)
{
	dispatch_device_removed(priv, w);
}

/* The accelerator's worker, on its thread: the MoE split's next-layer
 * prefetches go on its copy queue. */
static void llm_prefetch(void *priv, unsigned w)
{
	struct llm *L = llm_of(priv);
	if (L && atomic_load_explicit(&L->moe_live, memory_order_acquire) && (int)w == L->moe_accel)
		llm_moe_prefetch(L->moe);
}

static void llm_graph_finished(void *priv, struct engine_graph *g)
{
	struct llm *L = llm_of(priv);
	if (L && L->moe)
		llm_moe_graph_finished(L->moe, g);
	dispatch_graph_finished(priv, g);
}

const struct policy_ops policy_llm = {
	.abi_version = POLICY_ABI_VERSION,
	.name = "llm",
	.init = llm_init,
	.fini = dispatch_fini,
	.graph_submitted = dispatch_graph_submitted,
	.tasks_ready = dispatch_tasks_ready,
	.pick_next = dispatch_pick_next,
	.task_done = dispatch_task_done,
	.task_skipped = dispatch_task_skipped,
	.graph_finished = llm_graph_finished,
	.peek = dispatch_peek,
	.may_pick = dispatch_may_pick,
	.prefetch = llm_prefetch,
	.flow_added = dispatch_flow_added,
	.flow_gone = dispatch_flow_gone,
	.device_added = llm_device_added,
	.device_draining = llm_device_draining,
	.device_removed = llm_device_removed,
};

int llm_policy_stats(void *priv, struct llm_policy_stats *out)
{
	struct llm *L = dispatch_graph_hook_ctx(priv);
	if (!L)
		return -1;
	pthread_mutex_lock(&L->lock);
	*out = L->st;
	pthread_mutex_unlock(&L->lock);
	return 0;
}

int llm_policy_moe_stats(void *priv, struct llm_moe_stats *out)
{
	struct llm *L = dispatch_graph_hook_ctx(priv);
	if (!L || !L->moe)
		return -1;
	llm_moe_stats(L->moe, out);
	return 0;
}
