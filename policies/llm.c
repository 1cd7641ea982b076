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
#include "profiler/profiler.h"
#include "tandem.h"

/* What the graph scan knows of one buffer (open addressing by pointer;
 * entries of older scans are stale by their generation). */
struct seen {
	struct res_data *d;
	uint32_t gen;
	bool kv;
	uint32_t kv_index; /* in llm.kv, when kv */
};

struct llm {
	void *dispatch;
	struct profiler *prof;
	struct residency *res;
	const struct engine_device *devices; /* [ndev], the engine's */
	uint32_t ndev; /* devices known (device_added) */
	/* Under lock from here, as the devices come and go: */
	int accel; /* device index, -1: none (the policy is plain dmda) */
	unsigned accel_node;
	int host_dev; /* a host device, for the CPU predictions */
	bool by_cost; /* policy.llm_tiers_by_cost */
	uint32_t host_cores; /* host devices: CPU attention's parallelism */
	pthread_mutex_t lock; /* the scratch below and the stats */
	uint32_t gen;
	struct seen *set;
	size_t set_cap; /* a power of 2 */
	struct res_data **kv; /* the step's KV buffers, first use first */
	double *kv_units; /* [2 * cap] the attention work over each */
	uint32_t *attn; /* the step's attention tasks */
	struct llm_step_req *req;
	uint8_t *where;
	uint32_t *scratch;
	size_t cap; /* of attn, req, where, scratch; kv holds 2 * cap */
	struct llm_policy_stats st;
};

static bool is_kv_attention(const struct engine_task *t)
{
	return t->kernel->id == KERNEL_ATTN_DECODE && t->call.nargs >= 4 && t->data[1] &&
	       t->data[2] && t->data[1]->keep_on_devices && t->data[2]->keep_on_devices;
}

static size_t hash_ptr(const void *p)
{
	uint64_t x = (uint64_t)(uintptr_t)p;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (size_t)x;
}

/* The entry of d in this scan; *fresh: it was not there yet. */
static struct seen *set_get(struct llm *L, struct res_data *d, bool *fresh)
{
	size_t mask = L->set_cap - 1;
	for (size_t i = hash_ptr(d) & mask;; i = (i + 1) & mask) {
		struct seen *e = &L->set[i];
		if (e->gen != L->gen) {
			*e = (struct seen){ .d = d, .gen = L->gen, .kv = false };
			*fresh = true;
			return e;
		}
		if (e->d == d) {
			*fresh = false;
			return e;
		}
	}
}

static int reserve(struct llm *L, size_t nattn, size_t nargs)
{
	size_t want = 16;
	while (want < 2 * nargs + 2)
		want <<= 1;
	if (want > L->set_cap) {
		struct seen *s = calloc(want, sizeof(*s));
		if (!s)
			return -TDM_ENOMEM;
		free(L->set);
		L->set = s;
		L->set_cap = want;
		L->gen = 0;
	}
	if (++L->gen == 0) { /* wrapped: clear the stale generations */
		memset(L->set, 0, L->set_cap * sizeof(*L->set));
		L->gen = 1;
	}
	if (nattn <= L->cap)
		return 0;
	size_t n = nattn;
	void *p[6] = { realloc(L->kv, 2 * n * sizeof(*L->kv)) };
	if (p[0])
		L->kv = p[0];
	p[5] = realloc(L->kv_units, 2 * n * sizeof(*L->kv_units));
	if (p[5])
		L->kv_units = p[5];
	p[1] = realloc(L->attn, n * sizeof(*L->attn));
	if (p[1])
		L->attn = p[1];
	p[2] = realloc(L->req, n * sizeof(*L->req));
	if (p[2])
		L->req = p[2];
	p[3] = realloc(L->where, n * sizeof(*L->where));
	if (p[3])
		L->where = p[3];
	p[4] = realloc(L->scratch, n * sizeof(*L->scratch));
	if (p[4])
		L->scratch = p[4];
	for (int i = 0; i < 6; i++)
		if (!p[i])
			return -TDM_ENOMEM;
	L->cap = n;
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

/* Homes the step's KV buffers: those on the accelerator stay while the
 * budget holds them (in first-use order), the rest fill what is left,
 * others live on the host. KV of other graphs homed on the accelerator
 * (other requests, other clients) counts against the budget: this graph
 * cannot demote what it does not see. `target`: the attention work the
 * cost models would have on the accelerator (INFINITY: as much as the
 * budget holds); a cache is promoted only while the work there stays
 * within it, and demoted only beyond 1.25 times it, so that predictions
 * that wobble do not move caches back and forth. Returns the budget left
 * (bytes). */
static uint64_t decide_tiers(struct llm *L, uint32_t nkv, uint64_t budget, double target)
{
	double work = 0;
	int an = (int)L->accel_node;
	uint64_t mine = 0, used;

	for (uint32_t k = 0; k < nkv; k++)
		if (residency_home(L->kv[k]) == an)
			mine += L->kv[k]->bytes;
	uint64_t all = residency_home_bytes(L->res, L->accel_node);
	used = all > mine ? all - mine : 0;

	for (uint32_t k = 0; k < nkv; k++) {
		struct res_data *d = L->kv[k];
		if (residency_home(d) != an)
			continue;
		if (used + d->bytes <= budget && work + L->kv_units[k] <= 1.25 * target) {
			used += d->bytes;
			work += L->kv_units[k];
		} else {
			residency_set_home(d, 0);
			L->st.demotes++;
		}
	}
	for (uint32_t k = 0; k < nkv; k++) {
		struct res_data *d = L->kv[k];
		int h = residency_home(d);
		if (h == an)
			continue;
		if (used + d->bytes <= budget && work + L->kv_units[k] <= target) {
			used += d->bytes;
			work += L->kv_units[k];
			residency_set_home(d, an);
			if (h == 0)
				L->st.promotes++;
		} else if (h != 0) {
			residency_set_home(d, 0);
		}
	}
	uint64_t host = 0;
	for (uint32_t k = 0; k < nkv; k++)
		if (residency_home(L->kv[k]) == 0)
			host += L->kv[k]->bytes;
	L->st.kv_accel_bytes = used;
	L->st.kv_host_bytes = host;
	return budget > used ? budget - used : 0;
}

static void llm_graph(void *ctx, struct engine_graph *g)
{
	struct llm *L = ctx;
	uint64_t t0 = clock_monotonic_ns();
	uint32_t nattn = 0;

	for (uint32_t i = 0; i < g->ntasks; i++)
		nattn += is_kv_attention(&g->tasks[i]);
	if (!nattn)
		return;
	if (nattn > LLM_STEP_MAX)
		nattn = LLM_STEP_MAX;
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
	if (reserve(L, nattn, (size_t)g->ntasks * TDM_MAX_ARGS)) {
		pthread_mutex_unlock(&L->lock);
		return; /* no memory for the scratch: plain dmda */
	}
	uint32_t n = 0, nkv = 0;
	bool fresh;
	struct feat_sum by_kernel[KERNEL_COUNT] = { 0 }, attn_sum = { 0 };

	/* The attention tasks and their KV buffers. */
	for (uint32_t i = 0; i < g->ntasks && n < nattn; i++) {
		struct engine_task *t = &g->tasks[i];
		if (!is_kv_attention(t))
			continue;
		L->attn[n++] = i;
		double u = t->feat.domain >= 1 ? fmin(t->feat.domain, 4e9) : 1;
		for (int a = 1; a <= 2; a++) {
			if (a == 2 && t->data[2] == t->data[1])
				break;
			struct seen *e = set_get(L, t->data[a], &fresh);
			if (fresh) {
				e->kv = true;
				e->kv_index = nkv;
				L->kv_units[nkv] = 0;
				L->kv[nkv++] = t->data[a];
			}
			/* K and V in two buffers: half the work each. */
			L->kv_units[e->kv_index] += t->data[2] == t->data[1] ? u : u / 2;
		}
		feat_add(&attn_sum, &t->feat);
	}
	/* What else the graph keeps on the accelerator: weights and
	 * activations (an upper bound: dmda may run some of it on the host);
	 * and the accelerator's other work. */
	uint64_t other = 0;
	double linear = 0;
	for (uint32_t i = 0; i < g->ntasks; i++) {
		struct engine_task *t = &g->tasks[i];
		for (uint32_t a = 0; a < t->call.nargs && a < TDM_MAX_ARGS; a++)
			if (t->data[a]) {
				set_get(L, t->data[a], &fresh);
				if (fresh)
					other += t->data[a]->bytes;
			}
		if (!is_kv_attention(t) && t->kernel->id < KERNEL_COUNT)
			feat_add(&by_kernel[t->kernel->id], &t->feat);
	}
	for (uint32_t kid = 0; L->prof && kid < KERNEL_COUNT; kid++)
		linear += predict_sum(L, kid, &by_kernel[kid], L->accel);
	double units = 0, gpu_ns = 0, cpu_ns = 0, qo = 0, missing = 0, host_units = 0;
	for (uint32_t k = 0; k < nkv; k++)
		units += L->kv_units[k];
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
		double g = gpu_ns / units, c = cpu_ns / units / cores;
		target = fmin(fmax((c * units - linear) / (g + c), 0), units);
	}
	uint64_t cap = L->res->nodes[L->accel_node].cap;
	uint64_t free_b = decide_tiers(L, nkv, cap > other ? cap - other : 0, target);

	/* The step: each attention task's tier. */
	units = 0;
	for (uint32_t k = 0; k < n; k++) {
		struct engine_task *t = &g->tasks[L->attn[k]];
		double u = t->feat.domain >= 1 ? fmin(t->feat.domain, 4e9) : 1;
		bool host = residency_home(t->data[1]) == 0;
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

	/* Attention where the plan says; writes of a KV buffer on its home. */
	for (uint32_t k = 0; k < n; k++) {
		struct engine_task *t = &g->tasks[L->attn[k]];
		bool cpu = L->where[k] == LLM_RUN_CPU;
		t->policy_node = (uint8_t)(1 + (cpu ? 0 : L->accel_node));
		L->st.attn_host += cpu;
		L->st.attn_accel += !cpu;
		L->st.attn_streamed += L->where[k] == LLM_RUN_STREAM;
	}
	for (uint32_t i = 0; i < g->ntasks; i++) {
		struct engine_task *t = &g->tasks[i];
		if (t->policy_node)
			continue;
		for (uint32_t a = 0; a < t->call.nargs && a < TDM_MAX_ARGS; a++) {
			struct res_data *d = t->data[a];
			if (!d || !(t->kernel->arg_modes[a] & TDM_W) || !set_get(L, d, &fresh)->kv)
				continue;
			int h = residency_home(d);
			if (h >= 0) {
				t->policy_node = (uint8_t)(1 + h);
				break;
			}
		}
	}
	uint64_t dt = clock_monotonic_ns() - t0;
	log_debug("llm: graph %llu: %u attention (%u on the host, %u streamed), KV %llu B on "
	          "node %u, %llu B on the host, mode %d, predicted %.0f us (gpu %.0f cpu %.0f "
	          "link %.0f), decided in %llu ns",
	          (unsigned long long)g->cookie, n, plan.ncpu, plan.nstream,
	          (unsigned long long)L->st.kv_accel_bytes, L->accel_node,
	          (unsigned long long)L->st.kv_host_bytes, (int)plan.mode, plan.t_step_ns / 1e3,
	          plan.t_gpu_ns / 1e3, plan.t_cpu_ns / 1e3, plan.t_link_ns / 1e3,
	          (unsigned long long)dt);
	L->st.steps++;
	L->st.last_mode = plan.mode;
	L->st.decide_ns_last = dt;
	if (dt > L->st.decide_ns_max)
		L->st.decide_ns_max = dt;
	pthread_mutex_unlock(&L->lock);
}

static void llm_fini(void *ctx)
{
	struct llm *L = ctx;
	pthread_mutex_destroy(&L->lock);
	free(L->set);
	free(L->kv);
	free(L->kv_units);
	free(L->attn);
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
	L->accel = L->host_dev = -1;
	L->devices = p->devices;
	L->ndev = (uint32_t)p->nworkers;
	for (uint32_t i = 0; i < L->ndev; i++)
		adopt(L, i);
	/* Without an accelerator or a host core there is nothing to tier
	 * (plain dmda) until a device comes (llm_graph looks each time). */
	struct dispatch_graph_hook h = { llm_graph, llm_fini, L };
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
		}
		pthread_mutex_unlock(&L->lock);
	}
	dispatch_device_draining(priv, w);
}

static void llm_device_removed(void *priv, unsigned w)
{
	dispatch_device_removed(priv, w);
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
	.graph_finished = dispatch_graph_finished,
	.peek = dispatch_peek,
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
