/* LLM serving in the simulator (llm_sim.h): the serving loop, the
 * baselines' rules, and `-w llm:...`. */
#include "sim/llm_sim.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "sim/sim_spec.h"
#include "tandem.h"

static const char *const policy_names[LLM_POL_COUNT] = { "tandem", "gpu_only", "neo",
	                                                 "apex",   "serial",   "nkvo" };

const char *llm_policy_name(enum llm_policy p)
{
	return (unsigned)p < LLM_POL_COUNT ? policy_names[p] : "?";
}

int llm_policy_by_name(const char *name, enum llm_policy *out)
{
	int i = sim_name_index(policy_names, LLM_POL_COUNT, name);
	if (i < 0)
		return -1;
	*out = (enum llm_policy)i;
	return 0;
}

int llm_hw_from_machine(const struct machine *m, double host_gbps, struct llm_hw *hw, char *err,
                        size_t errlen)
{
	const struct machine_device *gpu = NULL, *cpu = NULL;
	uint32_t ncpu = 0;

	memset(hw, 0, sizeof(*hw));
	for (uint32_t i = 0; i < m->ndevices; i++) {
		const struct machine_device *d = &m->dev[i];

		if (d->absent) /* joins by a scale event: elastic_serve.c */
			continue;
		if (d->kind == TDM_DEV_GPU && !gpu)
			gpu = d;
		if (d->kind == TDM_DEV_CPU) {
			cpu = cpu ? cpu : d;
			ncpu++;
		}
	}
	if (!gpu || !cpu) {
		snprintf(err, errlen, "%s: LLM serving needs a GPU and host cores", m->name);
		return -TDM_EINVAL;
	}
	if (!(host_gbps >= 0) || !isfinite(host_gbps)) {
		snprintf(err, errlen, "host_gbps: expected a bandwidth in GB/s");
		return -TDM_EINVAL;
	}
	hw->gpu_mem_bytes = (double)gpu->mem_bytes;
	hw->gpu_gbps = gpu->mem_gbps;
	hw->gpu_gflops = gpu->fp16_gflops > 0 ? gpu->fp16_gflops : gpu->gemm_gflops;
	/* With the step captured as one graph (CUDA graphs, as serving engines
	 * do), a launch costs a fraction of a lone launch and its event. */
	hw->gpu_launch_ns = gpu->launch_ns / 4;
	hw->cpu_cores = ncpu;
	hw->core_gbps = cpu->mem_gbps;
	hw->socket_gbps = host_gbps > 0 ? host_gbps : cpu->socket_gbps;
	if (host_gbps > 0 && host_gbps < hw->core_gbps)
		hw->core_gbps = host_gbps;
	hw->cpu_gflops = cpu->gemm_gflops;
	hw->cpu_launch_ns = cpu->launch_ns;
	hw->link_gbps = m->link[0][gpu->node].gbps;
	hw->link_latency_ns = m->link[0][gpu->node].latency_ns;
	return 0;
}

/* ---- the serving loop ---- */

enum phase { PH_WAIT = 0, PH_PREFILL, PH_DECODE, PH_DONE };

struct req {
	uint32_t prompt, output; /* a preemption moves generated tokens into the prompt */
	uint32_t orig_output;
	uint32_t prefilled, generated, kv;
	uint8_t phase, tier;
	bool tentative; /* being weighed for admission or demotion */
	double arrival, first_tok, done;
};

struct loop {
	const struct llm_cost *c;
	const struct llm_sim_opts *o;
	struct req *r;
	uint32_t n;
	uint32_t *run, nrun; /* admitted, in admission order */
	uint32_t *requeue, nrequeue; /* preempted, served before the queue (LIFO) */
	uint32_t qhead; /* next request of the trace not yet admitted */
	double kv_cap; /* GPU KV budget, tokens */
	double gpu_kv, host_kv; /* tokens reserved in each tier */
	double host_cap;
	uint32_t chunk; /* prefill tokens per step */
	double prefill_share; /* moving average of the steps' share carrying prefill */
	/* scratch for llm_step_plan */
	struct llm_step_req *sreq;
	uint32_t *sidx, *sscratch;
	uint8_t *where;
	double decide_ns, decisions;
};

/* The prefill chunk of the next step: up to L->chunk prompt tokens of the
 * prefilling requests, in admission order; a host request's KV goes down
 * the link as it is made. */
struct prefill_chunk {
	double tok, attn, link; /* tokens, their attention, their link time */
	uint32_t n, of[64], len[64]; /* requests (indices into L->r) and tokens taken */
};

static void next_prefill(const struct loop *L, struct prefill_chunk *pc)
{
	const struct llm_cost *c = L->c;

	pc->tok = pc->attn = pc->link = 0;
	pc->n = 0;
	for (uint32_t k = 0; k < L->nrun && pc->tok < L->chunk && pc->n < 64; k++) {
		const struct req *q = &L->r[L->run[k]];
		if (q->phase != PH_PREFILL)
			continue;
		uint32_t take = q->prompt - q->prefilled;
		if (take > L->chunk - pc->tok)
			take = (uint32_t)(L->chunk - pc->tok);
		pc->attn += llm_t_prefill_attn(c, q->prefilled, take);
		if (q->tier == LLM_TIER_HOST)
			pc->link += llm_t_link(c, take * c->kv_tok_bytes, c->m.layers);
		pc->of[pc->n] = L->run[k];
		pc->len[pc->n++] = take;
		pc->tok += take;
	}
}

/* Skipping admitted host requests (LLM_ALLOW_SKIP) is left to admission:
 * a request admitted runs every step, so "offload does not pay" shows as
 * not admitting to the host tier, never as starving those admitted. */
static unsigned allow_of(enum llm_policy p)
{
	switch (p) {
	case LLM_POL_TANDEM: return LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE | LLM_ALLOW_STREAM;
	case LLM_POL_NEO: return LLM_ALLOW_PIPELINE;
	case LLM_POL_APEX: return LLM_ALLOW_OVERLAP | LLM_ALLOW_PIPELINE;
	case LLM_POL_SERIAL:
	case LLM_POL_NKVO: return LLM_FORCE_SERIAL;
	default: return 0;
	}
}

/* Which prefilling requests a planned step counts as decoding (with their
 * prompt as KV): none (the step as it runs), the host tier's, or all. */
enum prefilling { AS_DECODING_NONE, AS_DECODING_HOST, AS_DECODING_ALL };

/* The step of the running requests (prefilling ones counted as decoding as
 * `prefilling` says, for admission; tentative ones only when asked) with
 * prefill_tokens of prefill. */
static int plan_running(struct loop *L, enum prefilling prefilling, bool with_tentative,
                        double prefill_tokens, double prefill_attn, double link_busy,
                        unsigned allow, struct llm_step_plan *p)
{
	uint32_t n = 0;

	for (uint32_t k = 0; k < L->nrun; k++) {
		const struct req *q = &L->r[L->run[k]];

		if (q->tentative && !with_tentative)
			continue;
		bool prefilling_counts =
		        q->phase == PH_PREFILL &&
		        (prefilling == AS_DECODING_ALL ||
		         (prefilling == AS_DECODING_HOST && q->tier == LLM_TIER_HOST));
		if (q->phase == PH_DECODE || prefilling_counts) {
			L->sreq[n].kv_tokens = q->phase == PH_DECODE ? q->kv : q->prompt;
			L->sreq[n].tier = q->tier;
			L->sidx[n++] = L->run[k];
		}
	}
	double free_gpu = (L->kv_cap - L->gpu_kv) * L->c->kv_tok_bytes;
	struct llm_step_in in = {
		.cost = L->c,
		.req = L->sreq,
		.n = n,
		.prefill_tokens = prefill_tokens,
		.prefill_attn_ns = prefill_attn,
		.link_busy_ns = link_busy,
		/* Free KV memory and a share of the activation reserve. */
		.stream_scratch_bytes = (free_gpu > 0 ? free_gpu : 0) + (128u << 20),
		.allow = allow,
	};
	uint64_t t0 = clock_monotonic_ns();
	int rc = llm_step_plan(&in, L->where, L->sscratch, p);
	L->decide_ns += (double)(clock_monotonic_ns() - t0);
	L->decisions++;
	return rc;
}

/* The policy's rule for its host tier, over the running requests as they
 * are (tentative ones included). */
static bool host_rule_holds(struct loop *L)
{
	const struct llm_cost *c = L->c;
	enum llm_policy pol = L->o->policy;
	double gpu_tok = 0, host_tok = 0;
	uint32_t ngpu = 0, nhost = 0;

	if (L->host_kv > L->host_cap)
		return false;
	if (pol == LLM_POL_NKVO)
		return L->nrun <= (L->o->nkvo_slots ? L->o->nkvo_slots : 16);
	for (uint32_t k = 0; k < L->nrun; k++) {
		const struct req *x = &L->r[L->run[k]];
		double kv = x->phase == PH_DECODE ? x->kv : x->prompt;

		if (x->tier == LLM_TIER_GPU)
			gpu_tok += kv, ngpu++;
		else
			host_tok += kv, nhost++;
	}
	double tgpu = llm_t_linear(c, ngpu + nhost) + llm_t_attn_gpu(c, gpu_tok);
	double tcpu = llm_t_attn_cpu(c, nhost, host_tok);
	switch (pol) {
	case LLM_POL_APEX:
	case LLM_POL_SERIAL:
		/* APEX offloads while the CPU's attention stays within the GPU's
		 * linear and attention time of the same step. */
		return tcpu <= tgpu;
	case LLM_POL_NEO: {
		/* NEO balances the CPU's attention of each sub-batch against the
		 * other's linear layers: in all, within the two linear passes. */
		double two = llm_t_linear(c, ngpu + nhost / 2.0) + llm_t_linear(c, nhost / 2.0);
		return tcpu <= two;
	}
	case LLM_POL_TANDEM: {
		/* The planner's step, every arrangement, within (1 + slack) of
		 * the GPU's own work, on two steps: the running requests all
		 * prefilled, and the next step as it will run (its prefill
		 * chunk included) with the host tier decoding. The first
		 * alone counts the GPU-tier requests still prefilling as GPU
		 * attention that host attention hides under; when prefill
		 * dominates they are not decoding yet, and the host tier's
		 * attention would outlast the GPU's steps. */
		struct llm_step_plan p;
		double slack = L->o->tpot_slack >= 0 ? L->o->tpot_slack : 0.05;
		if (plan_running(L, AS_DECODING_ALL, true, 0, 0, 0, allow_of(pol), &p))
			return false;
		if (!(p.mode != LLM_STEP_GPU && p.t_step_ns <= (1 + slack) * tgpu))
			return false;
		struct prefill_chunk pc;
		next_prefill(L, &pc);
		if (plan_running(L, AS_DECODING_HOST, true, pc.tok, pc.attn, pc.link, allow_of(pol),
		                 &p))
			return false;
		return p.t_step_ns <= (1 + slack) * p.t_gpu_ns;
	}
	default: return false;
	}
}

/* The load-aware question (NEO's scheduler, APEX's predictor): does the
 * step with the tentative requests decode more per unit of time than the
 * step without them? Asked of a whole group, since one request alone may
 * not pay for switching the step to pipelining. */
static bool tentative_pays(struct loop *L)
{
	struct llm_step_plan with, without;
	unsigned allow = allow_of(L->o->policy);

	if (L->o->policy == LLM_POL_NKVO)
		return true; /* llama.cpp fills its slots */
	if (plan_running(L, AS_DECODING_ALL, true, 0, 0, 0, allow, &with) ||
	    plan_running(L, AS_DECODING_ALL, false, 0, 0, 0, allow, &without))
		return false;
	return without.decoded == 0 ||
	       with.decoded * without.t_step_ns > without.decoded * with.t_step_ns;
}

/* The i-th request in FCFS order not yet admitted (preempted ones first),
 * or UINT32_MAX. */
static uint32_t waiting(const struct loop *L, uint32_t j, double now)
{
	if (j < L->nrequeue)
		return L->requeue[L->nrequeue - 1 - j];
	uint32_t i = L->qhead + (j - L->nrequeue);
	return i < L->n && L->r[i].arrival <= now ? i : UINT32_MAX;
}

static void consume(struct loop *L, uint32_t m)
{
	uint32_t from_requeue = m < L->nrequeue ? m : L->nrequeue;
	L->nrequeue -= from_requeue;
	L->qhead += m - from_requeue;
}

static void start(struct loop *L, uint32_t i, uint8_t tier)
{
	struct req *q = &L->r[i];

	q->tier = tier;
	q->phase = PH_PREFILL;
	q->prefilled = 0;
	q->kv = 0;
	if (tier == LLM_TIER_GPU)
		L->gpu_kv += q->prompt;
	else
		L->host_kv += q->prompt;
	L->run[L->nrun++] = i;
}

static void admit(struct loop *L, double now)
{
	const uint32_t max_batch = L->o->max_batch ? L->o->max_batch : 256;
	enum llm_policy pol = L->o->policy;

	/* The GPU first (a block of room for the first decoded token). */
	for (;;) {
		uint32_t i = waiting(L, 0, now);
		if (i == UINT32_MAX || L->nrun >= max_batch)
			return;
		if (pol == LLM_POL_NKVO || L->gpu_kv + L->r[i].prompt + 1 > L->kv_cap)
			break;
		start(L, i, LLM_TIER_GPU);
		consume(L, 1);
	}
	if (pol == LLM_POL_GPU_ONLY)
		return; /* FCFS: nobody overtakes the head */
	/* Then the host tier, as a group, while the policy's rule holds. */
	uint32_t m = 0;
	for (;;) {
		uint32_t i = waiting(L, m, now);
		if (i == UINT32_MAX || L->nrun >= max_batch)
			break;
		start(L, i, LLM_TIER_HOST);
		L->r[i].tentative = true;
		if (!host_rule_holds(L)) {
			L->nrun--;
			L->host_kv -= L->r[i].prompt;
			L->r[i].tentative = false;
			L->r[i].phase = PH_WAIT;
			break;
		}
		m++;
	}
	bool keep = m && tentative_pays(L);
	for (uint32_t k = L->nrun - m; k < L->nrun; k++) {
		struct req *q = &L->r[L->run[k]];
		q->tentative = false;
		if (!keep) {
			L->host_kv -= q->prompt;
			q->phase = PH_WAIT;
		}
	}
	if (keep)
		consume(L, m);
	else
		L->nrun -= m;
}

static void drop_running(struct loop *L, uint32_t k)
{
	memmove(&L->run[k], &L->run[k + 1], (L->nrun - k - 1) * sizeof(*L->run));
	L->nrun--;
}

/* The GPU's KV grew past its budget: the newest GPU-resident request goes,
 * demoted to host memory where the policy's host rule takes it, else
 * preempted and recomputed later (vLLM). */
static void relieve_gpu(struct loop *L, double *link_next, struct llm_sim_result *r)
{
	while (L->gpu_kv > L->kv_cap) {
		uint32_t k = L->nrun;
		while (k-- > 0)
			if (L->r[L->run[k]].tier == LLM_TIER_GPU)
				break;
		if (k == UINT32_MAX)
			return;
		struct req *q = &L->r[L->run[k]];
		double kv = q->phase == PH_DECODE ? q->kv : q->prompt;

		/* Demoted only as the policy would admit it to the host tier. */
		bool demote = false;
		L->gpu_kv -= kv;
		if (L->o->policy != LLM_POL_GPU_ONLY && L->o->policy != LLM_POL_NKVO) {
			q->tier = LLM_TIER_HOST;
			q->tentative = true;
			L->host_kv += kv;
			demote = host_rule_holds(L) && tentative_pays(L);
			q->tier = LLM_TIER_GPU;
			q->tentative = false;
			L->host_kv -= kv;
		}
		if (!demote) {
			/* vLLM: drop the KV, recompute prompt + generated later. */
			q->prompt += q->phase == PH_DECODE ? q->generated : 0;
			q->output -= q->phase == PH_DECODE ? q->generated : 0;
			q->generated = 0;
			q->phase = PH_WAIT;
			q->kv = 0;
			L->requeue[L->nrequeue++] = L->run[k];
			drop_running(L, k);
			r->preemptions++;
		} else {
			/* Demote: its KV goes to host memory, the copy on the link
			 * under the next step. */
			q->tier = LLM_TIER_HOST;
			L->host_kv += kv;
			*link_next += llm_t_link(L->c, kv * L->c->kv_tok_bytes, 1);
			r->demotions++;
		}
	}
}

/* tandem: a request changes tier when the planner predicts the next step,
 * as it will run (its prefill chunk included), shorter after the move, the
 * copy on the link under that step. A host-resident request moves to the
 * GPU when the GPU's KV budget has room for it and some growth (promotion:
 * moving attention hidden under the GPU's work onto the GPU only lengthens
 * the step); a GPU-resident decoding request moves to host memory when its
 * attention, taken off the GPU, hides under the GPU's remaining work
 * (demotion: a compute-bound prefill step leaves the cores and the link
 * idle). One move a step. */
/* The step times a tier move is judged by: the next step as it will run
 * (its prefill chunk included), and the steps that follow once the running
 * requests are all prefilled (prefilling ones counted as decoding), with a
 * full prefill chunk in the share of steps that lately carried one: a move
 * that only pays under prefill pays in that share of the steps. */
struct step_views {
	double next, steady;
};

static int step_views(struct loop *L, const struct prefill_chunk *pc, double link_busy,
                      struct step_views *v)
{
	const unsigned allow = allow_of(L->o->policy);
	const double f = L->prefill_share;
	struct llm_step_plan p;

	if (plan_running(L, AS_DECODING_NONE, true, pc->tok, pc->attn, link_busy + pc->link, allow,
	                 &p))
		return -1;
	v->next = p.t_step_ns;
	if (plan_running(L, AS_DECODING_ALL, true, 0, 0, 0, allow, &p))
		return -1;
	v->steady = (1 - f) * p.t_step_ns;
	if (f > 0) {
		if (plan_running(L, AS_DECODING_ALL, true, L->chunk,
		                 llm_t_prefill_attn(L->c, 0, L->chunk), 0, allow, &p))
			return -1;
		v->steady += f * p.t_step_ns;
	}
	return 0;
}

/* A move pays when it shortens one view and lengthens neither. */
static bool move_pays(const struct step_views *before, const struct step_views *after)
{
	return after->next <= before->next && after->steady <= before->steady &&
	       (after->next < before->next || after->steady < before->steady);
}

static void retier(struct loop *L, double *link_next, struct llm_sim_result *r)
{
	const double headroom = 256; /* tokens, against demoting it right back */
	struct prefill_chunk pc;
	struct step_views now, moved;

	next_prefill(L, &pc);
	if (step_views(L, &pc, *link_next, &now))
		return;
	for (uint32_t k = 0; k < L->nrun; k++) {
		struct req *q = &L->r[L->run[k]];

		if (q->tier != LLM_TIER_HOST || q->phase != PH_DECODE ||
		    L->gpu_kv + q->kv + headroom > L->kv_cap)
			continue;
		double copy = llm_t_link(L->c, q->kv * L->c->kv_tok_bytes, 1);
		q->tier = LLM_TIER_GPU;
		if (step_views(L, &pc, *link_next + copy, &moved) || !move_pays(&now, &moved)) {
			q->tier = LLM_TIER_HOST;
			break;
		}
		L->gpu_kv += q->kv;
		L->host_kv -= q->kv;
		*link_next += copy;
		r->promotions++;
		return;
	}
	for (uint32_t k = L->nrun; k-- > 0;) {
		struct req *q = &L->r[L->run[k]];

		if (q->tier != LLM_TIER_GPU || q->phase != PH_DECODE ||
		    L->host_kv + q->kv > L->host_cap)
			continue;
		double copy = llm_t_link(L->c, q->kv * L->c->kv_tok_bytes, 1);
		q->tier = LLM_TIER_HOST;
		if (step_views(L, &pc, *link_next + copy, &moved) || !move_pays(&now, &moved)) {
			q->tier = LLM_TIER_GPU;
			return;
		}
		L->gpu_kv -= q->kv;
		L->host_kv += q->kv;
		*link_next += copy;
		r->demotions++;
		return;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, uint32_t n, double p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	double idx = p / 100.0 * (n - 1);
	uint32_t lo = (uint32_t)idx;
	double f = idx - lo;
	return lo + 1 < n ? v[lo] * (1 - f) + v[lo + 1] * f : v[lo];
}

int llm_sim_run(const struct llm_cost *c, const struct llm_trace *t, const struct llm_sim_opts *o,
                struct llm_sim_result *r, char *err, size_t errlen)
{
	struct loop L = { .c = c, .o = o };
	const double util = o->gpu_util > 0 ? o->gpu_util : 0.9;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	if ((unsigned)o->policy >= LLM_POL_COUNT || !t->n || !(util > 0 && util <= 1)) {
		snprintf(err, errlen, "llm: bad options");
		return -TDM_EINVAL;
	}
	/* Weights and KV share the GPU; activations and workspace take a
	 * quarter GiB beside them. */
	double kv_bytes = util * c->hw.gpu_mem_bytes - c->weight_bytes - (256u << 20);
	if (kv_bytes < c->kv_tok_bytes * 16) {
		snprintf(err, errlen,
		         "%s's weights (%.1f GB) leave no room for KV in %.1f GB of GPU memory",
		         c->m.name, c->weight_bytes / 1e9, c->hw.gpu_mem_bytes / 1e9);
		return -TDM_EINVAL;
	}
	L.kv_cap = floor(kv_bytes / c->kv_tok_bytes);
	L.chunk = o->chunk_tokens ? o->chunk_tokens : 512;
	L.host_cap =
	        (o->host_kv_bytes > 0 ? o->host_kv_bytes : 64.0 * (1u << 30)) / c->kv_tok_bytes;
	r->gpu_kv_tokens = L.kv_cap;
	L.r = calloc(t->n, sizeof(*L.r));
	L.run = calloc(t->n, sizeof(*L.run));
	L.requeue = calloc(t->n, sizeof(*L.requeue));
	uint32_t smax = (o->max_batch ? o->max_batch : 256) + 1;
	L.sreq = calloc(smax, sizeof(*L.sreq));
	L.sidx = calloc(smax, sizeof(*L.sidx));
	L.sscratch = calloc(smax, sizeof(*L.sscratch));
	L.where = calloc(smax, 1);
	double *tpot = calloc(t->n, sizeof(double)), *ttft = calloc(t->n, sizeof(double));
	if (!L.r || !L.run || !L.requeue || !L.sreq || !L.sidx || !L.sscratch || !L.where ||
	    !tpot || !ttft || smax > LLM_STEP_MAX) {
		snprintf(err, errlen, "llm: out of memory");
		rc = -TDM_ENOMEM;
		goto out;
	}
	/* The same workload for every policy: requests whose whole KV the GPU
	 * could never hold are left out (a GPU-only engine's max_model_len). */
	for (uint32_t i = 0; i < t->n; i++) {
		if ((double)t->req[i].prompt + t->req[i].output > L.kv_cap) {
			r->dropped++;
			continue;
		}
		struct req *q = &L.r[L.n++];
		q->prompt = t->req[i].prompt;
		q->output = t->req[i].output;
		q->orig_output = q->output;
		q->arrival = t->req[i].arrival_ns;
	}
	if (!L.n) {
		snprintf(err, errlen, "llm: no request fits the GPU's KV budget (%.0f tokens)",
		         L.kv_cap);
		rc = -TDM_EINVAL;
		goto out;
	}
	const unsigned allow = allow_of(o->policy);
	const double first = L.r[0].arrival;
	double now = first, link_next = 0, cpu_core_ns = 0, batch_sum = 0;
	uint32_t done = 0;
	uint64_t stall = 0;

	while (done < L.n) {
		admit(&L, now);
		if (!L.nrun) {
			if (L.qhead >= L.n) {
				snprintf(err, errlen, "llm: a request can be admitted nowhere");
				rc = -TDM_EINVAL;
				goto out;
			}
			now = fmax(now, L.r[L.qhead].arrival);
			continue;
		}
		struct prefill_chunk pc;
		next_prefill(&L, &pc);
		double link = link_next + pc.link;
		link_next = 0;
		struct llm_step_plan p;
		if (plan_running(&L, AS_DECODING_NONE, true, pc.tok, pc.attn, link, allow, &p)) {
			snprintf(err, errlen, "llm: the step could not be planned");
			rc = -TDM_EINVAL;
			goto out;
		}
		if (p.decoded == 0 && pc.n == 0) {
			if (++stall > 4) {
				snprintf(err, errlen, "llm: no progress (policy %s)",
				         llm_policy_name(o->policy));
				rc = -TDM_EINVAL;
				goto out;
			}
		} else {
			stall = 0;
		}
		now += p.t_step_ns;
		r->steps++;
		/* Over about the last 64 steps. */
		L.prefill_share += ((pc.n ? 1.0 : 0.0) - L.prefill_share) / 64;
		r->steps_mode[p.mode]++;
		cpu_core_ns += p.t_cpu_ns * p.cpu_cores;
		batch_sum += p.decoded;
		/* Decoded tokens (the plan's order is the decode set's). */
		uint32_t n = 0;
		for (uint32_t k = 0; k < L.nrun; k++) {
			struct req *q = &L.r[L.run[k]];
			if (q->phase != PH_DECODE)
				continue;
			if (L.where[n++] == LLM_RUN_SKIP)
				continue;
			q->generated++;
			q->kv++;
			if (q->tier == LLM_TIER_GPU)
				L.gpu_kv++;
			else
				L.host_kv++;
			r->tokens++;
		}
		for (uint32_t f = 0; f < pc.n; f++) {
			struct req *q = &L.r[pc.of[f]];
			q->prefilled += pc.len[f];
			if (q->prefilled < q->prompt)
				continue;
			q->phase = PH_DECODE;
			q->kv = q->prompt;
			q->generated = 1; /* the prefill's token */
			if (q->first_tok == 0)
				q->first_tok = now;
			r->tokens++;
		}
		/* Finished requests leave. */
		for (uint32_t k = L.nrun; k-- > 0;) {
			struct req *q = &L.r[L.run[k]];
			if (q->phase != PH_DECODE || q->generated < q->output)
				continue;
			q->phase = PH_DONE;
			q->done = now;
			if (q->tier == LLM_TIER_GPU)
				L.gpu_kv -= q->kv;
			else
				L.host_kv -= q->kv;
			drop_running(&L, k);
			done++;
		}
		relieve_gpu(&L, &link_next, r);
		if (o->policy == LLM_POL_TANDEM)
			retier(&L, &link_next, r);
		if (L.gpu_kv > r->peak_gpu_kv_tokens)
			r->peak_gpu_kv_tokens = L.gpu_kv;
	}
	uint32_t ntp = 0;
	for (uint32_t i = 0; i < L.n; i++) {
		const struct req *q = &L.r[i];
		ttft[i] = (q->first_tok - q->arrival) / 1e6;
		if (q->orig_output > 1)
			tpot[ntp++] = (q->done - q->first_tok) / 1e6 / (q->orig_output - 1);
	}
	r->requests = L.n;
	r->makespan_ns = now - first;
	r->decode_tok_s = r->tokens / (r->makespan_ns / 1e9);
	r->tpot_p50_ms = pct(tpot, ntp, 50);
	r->tpot_p99_ms = pct(tpot, ntp, 99);
	r->ttft_p50_ms = pct(ttft, L.n, 50);
	r->ttft_p99_ms = pct(ttft, L.n, 99);
	r->cpu_util = cpu_core_ns / (c->hw.cpu_cores * r->makespan_ns);
	r->mean_batch = batch_sum / (double)r->steps;
	r->decide_ns = L.decide_ns;
	r->decisions = L.decisions;
out:
	free(L.r);
	free(L.run);
	free(L.requeue);
	free(L.sreq);
	free(L.sidx);
	free(L.sscratch);
	free(L.where);
	free(tpot);
	free(ttft);
	return rc;
}

/* ---- -w llm:... ---- */

struct llm_spec {
	char model[32];
	char trace[512];
	uint32_t requests;
	uint64_t seed;
	double host_gbps, slack;
	uint32_t chunk, max_batch, slots;
	bool burst; /* every request arrives at 0 */
};

static int llm_spec_key(void *ctx, const char *kv, const char *v, char *err, size_t errlen)
{
	struct llm_spec *s = ctx;
	double d;

	if (!strcmp(kv, "model")) {
		struct llm_model m;
		if (llm_model_by_name(v, &m)) {
			snprintf(err, errlen,
			         "--workload llm: model=%s: unknown (llama2-7b, "
			         "llama3.1-8b)",
			         v);
			return -1;
		}
		snprintf(s->model, sizeof(s->model), "%s", v);
	} else if (!strcmp(kv, "trace")) {
		if (!*v || strlen(v) >= sizeof(s->trace)) {
			snprintf(err, errlen,
			         "--workload llm: trace: expected a file, conv, "
			         "code, gen-conv or gen-code");
			return -1;
		}
		snprintf(s->trace, sizeof(s->trace), "%s", v);
	} else if (!strcmp(kv, "requests")) {
		if (sim_spec_num("llm", kv, v, 1, 1e6, &d, err, errlen))
			return -1;
		s->requests = (uint32_t)d;
	} else if (!strcmp(kv, "seed")) {
		if (sim_spec_num("llm", kv, v, 0, 1e15, &d, err, errlen))
			return -1;
		s->seed = (uint64_t)d;
	} else if (!strcmp(kv, "host_gbps")) {
		if (sim_spec_num("llm", kv, v, 0.1, 1e5, &s->host_gbps, err, errlen))
			return -1;
	} else if (!strcmp(kv, "slack")) {
		if (sim_spec_num("llm", kv, v, 0, 10, &s->slack, err, errlen))
			return -1;
	} else if (!strcmp(kv, "chunk")) {
		if (sim_spec_num("llm", kv, v, 16, 65536, &d, err, errlen))
			return -1;
		s->chunk = (uint32_t)d;
	} else if (!strcmp(kv, "batch")) {
		if (sim_spec_num("llm", kv, v, 1, LLM_STEP_MAX - 1, &d, err, errlen))
			return -1;
		s->max_batch = (uint32_t)d;
	} else if (!strcmp(kv, "slots")) {
		if (sim_spec_num("llm", kv, v, 1, 4096, &d, err, errlen))
			return -1;
		s->slots = (uint32_t)d;
	} else if (!strcmp(kv, "arrivals")) {
		if (strcmp(v, "trace") && strcmp(v, "burst")) {
			snprintf(err, errlen, "--workload llm: arrivals: trace or burst");
			return -1;
		}
		s->burst = !strcmp(v, "burst");
	} else {
		snprintf(err, errlen,
		         "--workload llm: unknown key %s (model, trace, requests, seed, "
		         "host_gbps, slack, chunk, batch, slots, arrivals)",
		         kv);
		return -1;
	}
	return 0;
}

static int parse_spec(const char *spec, struct llm_spec *s, char *err, size_t errlen)
{
	*s = (struct llm_spec){
		.model = "llama2-7b", .trace = "conv", .requests = 500, .seed = 1, .slack = -1
	};
	return sim_spec_each("llm", spec, llm_spec_key, s, err, errlen);
}

/* conv / code: the Azure file when a directory holds it, else generated. */
int llm_trace_by_name(const char *name, uint32_t n, uint64_t seed, struct llm_trace *t, char *src,
                      size_t srclen, char *err, size_t errlen)
{
	bool conv = !strcmp(name, "conv") || !strcmp(name, "gen-conv");
	bool code = !strcmp(name, "code") || !strcmp(name, "gen-code");

	if (!conv && !code) {
		snprintf(src, srclen, "%s", name);
		return llm_trace_load(name, n, t, err, errlen);
	}
	if (strncmp(name, "gen-", 4)) {
		const char *env = getenv("TANDEM_LLM_TRACE_DIR");
		const char *dirs[] = { env && *env ? env : NULL, "../shared/benchmarks/llm-traces",
			               "../../shared/benchmarks/llm-traces" };
		for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
			char path[1024];
			if (!dirs[i])
				continue;
			snprintf(path, sizeof(path), "%s/AzureLLMInferenceTrace_%s_2023.csv",
			         dirs[i], conv ? "conv" : "code");
			FILE *f = fopen(path, "r");
			if (!f)
				continue;
			fclose(f);
			snprintf(src, srclen, "%s", path);
			return llm_trace_load(path, n, t, err, errlen);
		}
	}
	snprintf(src, srclen, "generated (%s-shaped, seed %" PRIu64 ")", conv ? "conv" : "code",
	         seed);
	return llm_trace_generate(conv ? LLM_TRACE_CONV : LLM_TRACE_CODE, n, seed, t, err, errlen);
}

int llm_sim_cli(const struct machine *m, const char *spec, const char *policies, bool json)
{
	struct llm_spec s;
	struct llm_model model;
	struct llm_hw hw;
	struct llm_cost cost;
	struct llm_trace t = { 0, NULL };
	int pol[LLM_POL_COUNT];
	size_t npol = 0;
	char err[512], src[1100];

	if (parse_spec(spec, &s, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (sim_policy_list(policies, "LLM", policy_names, LLM_POL_COUNT, pol, &npol))
		return 2;
	llm_model_by_name(s.model, &model);
	if (llm_hw_from_machine(m, s.host_gbps, &hw, err, sizeof(err)) ||
	    llm_cost_init(&cost, &model, &hw)) {
		fprintf(stderr, "%s\n", *err ? err : "llm: the machine's figures are out of range");
		return 1;
	}
	if (llm_trace_by_name(s.trace, s.requests, s.seed, &t, src, sizeof(src), err,
	                      sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (s.burst)
		for (uint32_t i = 0; i < t.n; i++)
			t.req[i].arrival_ns = 0;
	fprintf(stderr, "llm: %s on %s, %u requests from %s; CPU attention %.1f GB/s on %u cores\n",
	        model.name, m->name, t.n, src, cost.cpu_attn_gbps, cost.attn_cores);
	json_t *rows = json ? json_array() : NULL;
	if (!json)
		printf("%-9s %10s %9s %9s %9s %8s %8s %7s %7s %7s %7s\n", "policy", "tok/s",
		       "tpot_p50", "tpot_p99", "ttft_p50", "cpu_util", "batch", "gpu", "overlap",
		       "pipe", "serial");
	int rc = 0;
	for (size_t i = 0; i < npol; i++) {
		struct llm_sim_opts o = { .policy = pol[i],
			                  .chunk_tokens = s.chunk,
			                  .max_batch = s.max_batch,
			                  .nkvo_slots = s.slots,
			                  .tpot_slack = s.slack };
		struct llm_sim_result r;
		if (llm_sim_run(&cost, &t, &o, &r, err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", llm_policy_name(pol[i]), err);
			rc = 1;
			break;
		}
		if (json) {
			json_array_append_new(
			        rows,
			        json_pack("{s:s,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I}",
			                  "policy", llm_policy_name(pol[i]), "decode_tok_s",
			                  r.decode_tok_s, "tpot_p50_ms", r.tpot_p50_ms,
			                  "tpot_p99_ms", r.tpot_p99_ms, "ttft_p50_ms",
			                  r.ttft_p50_ms, "ttft_p99_ms", r.ttft_p99_ms, "cpu_util",
			                  r.cpu_util, "mean_batch", r.mean_batch, "steps",
			                  (json_int_t)r.steps, "requests", (json_int_t)r.requests,
			                  "dropped", (json_int_t)r.dropped, "preemptions",
			                  (json_int_t)r.preemptions));
		} else {
			printf("%-9s %10.1f %9.1f %9.1f %9.0f %8.3f %8.2f %7" PRIu64 " %7" PRIu64
			       " %7" PRIu64 " %7" PRIu64 "\n",
			       llm_policy_name(pol[i]), r.decode_tok_s, r.tpot_p50_ms,
			       r.tpot_p99_ms, r.ttft_p50_ms, r.cpu_util, r.mean_batch,
			       r.steps_mode[LLM_STEP_GPU], r.steps_mode[LLM_STEP_OVERLAP],
			       r.steps_mode[LLM_STEP_PIPELINE], r.steps_mode[LLM_STEP_SERIAL]);
			if (i == 0 && r.dropped)
				printf("(%u requests longer than the GPU's KV budget of %.0f "
				       "tokens "
				       "left out for every policy)\n",
				       r.dropped, r.gpu_kv_tokens);
		}
	}
	if (json && !rc) {
		json_dumpf(rows, stdout, JSON_INDENT(1));
		printf("\n");
	}
	json_decref(rows);
	llm_trace_free(&t);
	return rc;
}
