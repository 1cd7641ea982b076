/* LLM and MoE serving through scale events (elastic.h; the model is
 * docs/elastic-sim.md's).
 *
 * A closed loop of `batch` requests decodes in lockstep steps; a request
 * that has produced its `output` tokens is replaced by a new one, whose
 * prompt is prefilled in the next step. Events take effect at the first
 * step boundary at or after their time.
 *
 * MoE (expert partition): one GPU, the primary, holds the dense part
 * (attention, shared experts, router, head) and every request's KV; every
 * active GPU holds an expert cache in what its memory leaves. The experts
 * cached are the most often chosen ones of a profiling trace, split over
 * the GPUs; an expert found on no GPU runs on the host's cores. Per layer
 * the GPUs' experts and the CPU's run at once: the layer takes the longest
 * of them, each plus its hand-off (hidden states to the GPU or the CPU and
 * back). When the placement changes, an expert that stays cached stays on
 * its GPU; a newly cached one comes from a GPU that has it when their
 * link is faster than the host's, else from host memory; copies to a GPU
 * go one at a time, hottest first, and an expert serves from its arrival.
 *
 * Dense LLM (data parallel): every active GPU holds a copy of the weights
 * and a share of the requests with their KV. A new GPU gets the weights
 * (from a peer when faster) and then the requests with the least KV, up to
 * an even share, each paused while its KV moves. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/errbuf.h"
#include "placement/llm_step.h"
#include "placement/moe_split.h"
#include "sim/elastic.h"
#include "sim/llm_sim.h"
#include "sim/moe_sim.h"
#include "sim/sim_spec.h"
#include "tandem.h"
#include "workload/moe_trace.h"

#define GIB 1073741824.0
#define RESERVE_PRIMARY GIB /* activations, load buffers */
#define RESERVE_OTHER (GIB / 2) /* a GPU with experts only */

/* KV bytes per token of each MoE model, all layers, fp16, from the
 * models' published configurations: Mixtral-8x7B 32 layers x 8 KV heads x
 * 128 x 2 (K, V) x 2 bytes; DeepSeek-V2-Lite's MLA keeps 512 + 64 values a
 * layer, 27 layers; Qwen1.5-MoE-A2.7B 24 layers x 16 heads x 128 x 2 x 2. */
static double moe_kv_tok_bytes(const char *model)
{
	if (!strncmp(model, "mixtral", 7))
		return 32.0 * 8 * 128 * 2 * 2;
	if (!strncmp(model, "qwen", 4))
		return 24.0 * 16 * 128 * 2 * 2;
	return 27.0 * 576 * 2;
}

struct gpu {
	int dev; /* machine device */
	uint16_t node;
	enum sim_dev_state st;
	double mem; /* the server's budget on it */
	double ready; /* its context is up */
	double dq; /* its copy stream is free from then */
	struct moe_cost mc;
	struct llm_cost lc;
	double w_ready; /* LLM: its copy of the weights is in (INFINITY: none) */
	uint32_t cap; /* MoE: experts it caches */
	double *hold; /* MoE: [layer * experts]: arrival of the expert (INFINITY: not held) */
	uint32_t nreq; /* LLM: requests on it */
};

struct req {
	int gpu; /* LLM: where it runs (-1: waiting for room) */
	uint32_t ctx, gen; /* KV tokens, tokens generated */
	uint32_t prefill; /* tokens to prefill before it decodes again */
	double move_at, arrive; /* its KV moves then, and is in then */
	int from; /* the GPU it moves from */
};

struct es {
	const struct machine *m;
	const struct es_opts *o;
	struct es_result *r;
	struct es_consts k;
	uint32_t ng;
	struct gpu g[ES_MAX_GPUS];
	int primary; /* MoE: the GPU with the dense part and the KV */
	double now, down_until;
	uint32_t batch, prompt, output, max_batch;
	struct req *req;
	/* MoE */
	struct moe_trace t;
	uint32_t L, E, K, pos;
	uint32_t *rank; /* keys (layer * E + expert), most chosen first */
	uint32_t *cnt; /* scratch [E] */
	uint16_t *ids; /* scratch [E] */
	double kv_tok;
	/* The timeline: each step's end and decode tokens. */
	double *tl_t, *tl_tok;
	size_t ntl, captl;
	int watch; /* the event whose first token is awaited, -1: none */
	int watch_gpu; /* the GPU that must take part (-1: any step) */
};

static double link_ns(const struct es *S, uint16_t a, uint16_t b, double bytes)
{
	const struct cal_link *l = &S->m->link[a][b];
	return l->latency_ns + bytes / l->gbps;
}

static bool serving(const struct gpu *g)
{
	return g->st == SIM_DEV_ACTIVE || g->st == SIM_DEV_DRAINING;
}

static double kv_bytes(const struct es *S, int gpu)
{
	double tok = 0;
	for (uint32_t i = 0; i < S->batch; i++)
		if (gpu < 0 || S->req[i].gpu == gpu)
			tok += S->req[i].ctx;
	return tok * (S->o->moe ? S->kv_tok : S->g[gpu < 0 ? 0 : gpu].lc.kv_tok_bytes);
}

/* ---- MoE placement ---- */

/* The experts GPU i caches in its budget. */
static uint32_t moe_cap(const struct es *S, int i)
{
	const struct gpu *g = &S->g[i];
	double room = g->mem - RESERVE_OTHER;
	if (g->st != SIM_DEV_ACTIVE)
		return 0;
	if (i == S->primary) /* the KV of requests at their longest */
		room = g->mem - g->mc.nonexpert_bytes - RESERVE_PRIMARY -
		       (double)S->batch * (S->prompt + S->output) * S->kv_tok;
	if (room <= 0)
		return 0;
	double n = floor(room / g->mc.expert_bytes);
	double all = (double)S->L * S->E;
	return (uint32_t)(n < all ? n : all);
}

/* Re-plans the expert caches from `from` on: the most chosen experts up to
 * the GPUs' caps, each staying where it is cached when that GPU keeps room
 * for it. Returns the bytes copied; *min_bytes gets what the new
 * placement needs that is not on the GPU that wants it (the same, by this
 * rule). */
static double moe_replan(struct es *S, double from, double *min_bytes, double *last)
{
	uint32_t n = S->L * S->E, total = 0, used[ES_MAX_GPUS] = { 0 };
	int8_t *want = malloc(n);
	double bytes = 0;

	*min_bytes = 0;
	if (!want)
		return -1;
	for (uint32_t i = 0; i < S->ng; i++) {
		S->g[i].cap = moe_cap(S, (int)i);
		total += S->g[i].cap;
	}
	memset(want, -1, n);
	/* Stays where it is held (hottest first), while its GPU has room. */
	for (uint32_t r = 0; r < total && r < n; r++) {
		uint32_t key = S->rank[r];
		for (uint32_t i = 0; i < S->ng && want[key] < 0; i++)
			if (S->g[i].st == SIM_DEV_ACTIVE && isfinite(S->g[i].hold[key]) &&
			    used[i] < S->g[i].cap) {
				want[key] = (int8_t)i;
				used[i]++;
			}
	}
	/* The rest to the GPU with the most room left. */
	for (uint32_t r = 0; r < total && r < n; r++) {
		uint32_t key = S->rank[r];
		int best = -1;
		if (want[key] >= 0)
			continue;
		for (uint32_t i = 0; i < S->ng; i++)
			if (used[i] < S->g[i].cap &&
			    (best < 0 || S->g[i].cap - used[i] > S->g[best].cap - used[best]))
				best = (int)i;
		if (best < 0)
			break;
		want[key] = (int8_t)best;
		used[best]++;
	}
	/* Drop what is not wanted where it is; copy what is wanted where it
	 * is not, from the fastest source that has it. */
	for (uint32_t r = 0; r < n; r++) {
		uint32_t key = S->rank[r];
		int dst = want[key];
		for (uint32_t i = 0; i < S->ng; i++)
			if ((int)i != dst && S->g[i].st != SIM_DEV_DRAINING)
				S->g[i].hold[key] = INFINITY;
		if (dst < 0 || isfinite(S->g[dst].hold[key]))
			continue;
		struct gpu *d = &S->g[dst];
		double eb = d->mc.expert_bytes;
		double t = link_ns(S, 0, d->node, eb);
		for (uint32_t i = 0; i < S->ng; i++)
			if ((int)i != dst && serving(&S->g[i]) && S->g[i].hold[key] <= from &&
			    link_ns(S, S->g[i].node, d->node, eb) < t)
				t = link_ns(S, S->g[i].node, d->node, eb);
		double start = fmax(fmax(from, d->ready), d->dq);
		d->hold[key] = d->dq = start + t;
		*last = fmax(*last, d->dq);
		bytes += eb;
		*min_bytes += eb;
	}
	/* A draining GPU's experts are gone once nothing needs them. */
	for (uint32_t i = 0; i < S->ng; i++)
		if (S->g[i].st == SIM_DEV_DRAINING)
			for (uint32_t key = 0; key < n; key++)
				S->g[i].hold[key] = INFINITY;
	free(want);
	return bytes;
}

/* The union of the step's routing at layer l: ids[0..*n) with counts. */
static uint32_t moe_union(struct es *S, uint32_t l, uint32_t tokens)
{
	uint32_t n = 0;
	for (uint32_t k = 0; k < tokens; k++) {
		const uint16_t *ids = moe_trace_ids(&S->t, (S->pos + k) % S->t.tokens, l);
		for (uint32_t j = 0; j < S->K; j++) {
			if (!S->cnt[ids[j]])
				S->ids[n++] = ids[j];
			S->cnt[ids[j]]++;
		}
	}
	return n;
}

/* A MoE layer's expert phase, its parts in parallel: the primary's
 * (primary_part), each other GPU's experts (tg) plus the activations'
 * round trip over its link, the CPU's experts (tcpu) plus their hand-off. */
static double expert_phase(const struct es *S, const double *tg, double tcpu, double tokens,
                           double primary_part)
{
	const struct gpu *p = &S->g[S->primary];
	const struct moe_cost *c = &p->mc;
	double part = primary_part;
	for (uint32_t j = 0; j < S->ng; j++)
		if ((int)j != S->primary && tg[j] > 0)
			part = fmax(part,
			            tg[j] + 2 * link_ns(S, p->node, S->g[j].node,
			                                tokens * c->m.d_model * c->m.dtype_bytes));
	if (tcpu > 0)
		part = fmax(part, tcpu + moe_t_handoff(c, tokens));
	return part;
}

/* One decode step of `tokens` tokens: its time; took[i] set for the GPUs
 * that ran an expert. */
static double moe_step(struct es *S, double tokens, bool *took)
{
	const struct gpu *p = &S->g[S->primary];
	const struct moe_cost *c = &p->mc;
	double t = c->m.dense_layers * moe_t_dense(c, true, tokens) + moe_t_head(c, tokens) +
	           kv_bytes(S, -1) / c->hw.gpu_gbps;

	for (uint32_t l = 0; l < S->L; l++) {
		double tg[ES_MAX_GPUS] = { 0 }, tcpu = 0;
		uint32_t n = moe_union(S, l, (uint32_t)tokens);
		for (uint32_t i = 0; i < n; i++) {
			uint32_t e = S->ids[i], key = l * S->E + e;
			int on = -1;
			for (uint32_t j = 0; j < S->ng && on < 0; j++)
				if (serving(&S->g[j]) && S->g[j].hold[key] <= S->now)
					on = (int)j;
			if (on >= 0)
				tg[on] += moe_t_expert_gpu(&S->g[on].mc, S->cnt[e]);
			else
				tcpu += moe_t_expert_cpu(c, S->cnt[e]);
			S->cnt[e] = 0;
		}
		for (uint32_t j = 0; j < S->ng; j++)
			took[j] = took[j] || tg[j] > 0;
		t += moe_t_dense(c, false, tokens) +
		     expert_phase(S, tg, tcpu, tokens, tg[S->primary]);
	}
	S->pos = (S->pos + (uint32_t)tokens) % S->t.tokens;
	return t;
}

/* Prefill of `tokens` tokens on the primary: each expert sees tokens * k /
 * E of them; one not cached runs on the CPU or is loaded, whichever is
 * faster. */
static double moe_prefill(const struct es *S, double tokens)
{
	const struct gpu *p = &S->g[S->primary];
	const struct moe_cost *c = &p->mc;
	double per = fmax(1, tokens * S->K / S->E);
	double t = c->m.dense_layers * moe_t_dense(c, true, tokens) + moe_t_head(c, 1);

	for (uint32_t l = 0; l < S->L; l++) {
		double tg[ES_MAX_GPUS] = { 0 }, tcpu = 0, tlink = 0;
		for (uint32_t e = 0; e < S->E; e++) {
			int on = -1;
			for (uint32_t j = 0; j < S->ng && on < 0; j++)
				if (serving(&S->g[j]) && S->g[j].hold[l * S->E + e] <= S->now)
					on = (int)j;
			double cpu = moe_t_expert_cpu(c, per), gpu = moe_t_expert_gpu(c, per);
			if (on >= 0)
				tg[on] += moe_t_expert_gpu(&S->g[on].mc, per);
			else if (cpu < moe_t_load(c) + gpu)
				tcpu += cpu;
			else {
				tlink += moe_t_load(c);
				tg[S->primary] += gpu;
			}
		}
		t += moe_t_dense(c, false, tokens) +
		     expert_phase(S, tg, tcpu, tokens, fmax(tg[S->primary], tlink));
	}
	return t;
}

/* ---- dense LLM placement ---- */

static double llm_room(const struct es *S, int i)
{
	const struct gpu *g = &S->g[i];
	return (g->mem - g->lc.weight_bytes - RESERVE_PRIMARY) / g->lc.kv_tok_bytes -
	       kv_bytes(S, i) / g->lc.kv_tok_bytes;
}

/* The active GPU with its weights in and the most room for `tokens`, or -1. */
static int llm_pick(const struct es *S, double tokens)
{
	int best = -1;
	for (uint32_t i = 0; i < S->ng; i++)
		if (S->g[i].st == SIM_DEV_ACTIVE && S->g[i].w_ready <= S->now &&
		    llm_room(S, (int)i) >= tokens && S->g[i].nreq < S->max_batch &&
		    (best < 0 || S->g[i].nreq < S->g[best].nreq))
			best = (int)i;
	return best;
}

static void req_lose_kv(struct es *S, struct req *q, struct es_event_result *er)
{
	/* What it had prefilled or generated is computed again (MoE: every
	 * request's KV is on the primary; dense: on its GPU, if any). */
	double lost = S->o->moe || q->gpu >= 0 ? q->ctx - q->prefill : 0;
	er->reprefill_tokens += lost;
	S->r->reprefill_tokens += lost;
	q->prefill = q->ctx;
	if (!S->o->moe && q->gpu >= 0) {
		S->g[q->gpu].nreq--;
		q->gpu = -1;
	}
}

/* Moves requests of `from` (or of the most loaded GPUs when from < 0) to
 * GPU `to` until `to` has its even share (or, draining, all of them), the
 * ones with least KV first. */
static void llm_move(struct es *S, int from, int to, uint32_t want, struct es_event_result *er,
                     double *last)
{
	struct gpu *d = &S->g[to];
	while (d->nreq < want) {
		int pick = -1;
		for (uint32_t i = 0; i < S->batch; i++) {
			struct req *q = &S->req[i];
			if (q->gpu < 0 || q->gpu == to || q->prefill || q->arrive > S->now)
				continue;
			if (from >= 0 ? q->gpu != from
			              : S->g[q->gpu].nreq <= want ||
			                        S->g[q->gpu].st != SIM_DEV_ACTIVE)
				continue;
			if (pick < 0 || q->ctx < S->req[pick].ctx)
				pick = (int)i;
		}
		if (pick < 0 || llm_room(S, to) < S->req[pick].ctx + S->output)
			return;
		struct req *q = &S->req[pick];
		double b = q->ctx * d->lc.kv_tok_bytes;
		double start = fmax(fmax(S->now, d->w_ready), d->dq);
		q->from = q->gpu;
		q->move_at = start;
		q->arrive = d->dq = start + link_ns(S, S->g[q->gpu].node, d->node, b);
		S->g[q->gpu].nreq--;
		q->gpu = to;
		d->nreq++;
		er->moved_requests++;
		er->bytes += b;
		er->min_bytes += b;
		*last = fmax(*last, q->arrive);
	}
}

/* The weights onto GPU i from its ready time: from a GPU that has them when
 * faster than the host. */
static double llm_weights(struct es *S, int i, bool any_peer)
{
	struct gpu *d = &S->g[i];
	double wb = d->lc.weight_bytes, t = link_ns(S, 0, d->node, wb);
	for (uint32_t j = 0; any_peer && j < S->ng; j++)
		if ((int)j != i && serving(&S->g[j]) && S->g[j].w_ready <= S->now &&
		    link_ns(S, S->g[j].node, d->node, wb) < t)
			t = link_ns(S, S->g[j].node, d->node, wb);
	d->w_ready = d->dq = fmax(d->ready, d->dq) + t;
	return wb;
}

/* ---- events ---- */

static int gpu_of(const struct es *S, const char *name)
{
	for (uint32_t i = 0; i < S->ng; i++)
		if (!strcmp(S->m->dev[S->g[i].dev].name, name))
			return (int)i;
	return -1;
}

static uint32_t active_gpus(const struct es *S)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < S->ng; i++)
		n += S->g[i].st == SIM_DEV_ACTIVE;
	return n;
}

/* The primary moves to another active GPU: the dense part and the KV go
 * there (peer copies when the old one is readable, else from the host and
 * the KV lost). The server pauses meanwhile. */
static void moe_move_primary(struct es *S, bool readable, struct es_event_result *er, double *last)
{
	int np = -1;
	for (uint32_t i = 0; i < S->ng && np < 0; i++)
		if (S->g[i].st == SIM_DEV_ACTIVE && (int)i != S->primary)
			np = (int)i;
	struct gpu *o = &S->g[S->primary], *d = &S->g[np];
	double dense = d->mc.nonexpert_bytes, kv = kv_bytes(S, -1), t;
	if (readable)
		t = link_ns(S, o->node, d->node, dense + kv);
	else {
		t = link_ns(S, 0, d->node, dense);
		for (uint32_t i = 0; i < S->batch; i++)
			req_lose_kv(S, &S->req[i], er);
		kv = 0;
	}
	er->bytes += dense + kv;
	er->min_bytes += dense + kv;
	S->down_until = fmax(S->down_until, fmax(S->now, d->ready) + t);
	*last = fmax(*last, S->down_until);
	S->primary = np;
}

/* A restart: the server stops, the configuration changes, it starts again,
 * loads what each GPU holds from host memory and prefills every request
 * again. */
static void restart(struct es *S, struct es_event_result *er, double *last)
{
	double load = 0;
	for (uint32_t i = 0; i < S->ng; i++) {
		struct gpu *g = &S->g[i];
		if (g->st != SIM_DEV_ACTIVE)
			continue;
		double b;
		if (S->o->moe) {
			g->cap = moe_cap(S, (int)i);
			b = g->cap * g->mc.expert_bytes +
			    ((int)i == S->primary ? g->mc.nonexpert_bytes : 0);
		} else
			b = g->lc.weight_bytes;
		er->bytes += b;
		load = fmax(load, link_ns(S, 0, g->node, b));
	}
	double up = S->now + S->k.proc_start_ns + S->k.ctx_init_ns + load + S->k.reconnect_ns;
	uint32_t n = S->L * S->E;
	for (uint32_t i = 0; i < S->ng; i++) {
		struct gpu *g = &S->g[i];
		g->ready = g->dq = up - load;
		for (uint32_t key = 0; S->o->moe && key < n; key++)
			g->hold[key] = INFINITY;
		g->nreq = 0;
		g->w_ready = g->st == SIM_DEV_ACTIVE ? up : INFINITY;
	}
	if (S->o->moe) { /* the caches as loaded: every expert in at `up` */
		double mb, l2 = 0;
		moe_replan(S, up, &mb, &l2);
		for (uint32_t i = 0; i < S->ng; i++)
			for (uint32_t key = 0; key < n; key++)
				if (isfinite(S->g[i].hold[key]))
					S->g[i].hold[key] = up;
	}
	for (uint32_t i = 0; i < S->batch; i++) {
		struct req *q = &S->req[i];
		/* Its KV is lost: what it had prefilled or generated (a request
		 * still waiting for a GPU had nothing). */
		double lost = S->o->moe || q->gpu >= 0 ? q->ctx - q->prefill : 0;
		er->reprefill_tokens += lost;
		S->r->reprefill_tokens += lost;
		q->gpu = S->o->moe ? S->primary : -1;
		q->prefill = q->ctx;
		q->arrive = 0;
	}
	S->down_until = up;
	*last = fmax(*last, up);
}

/* A dry run of the live placement for the event's minimum bytes (restart
 * mode reports its loads over what live would have needed). */
static void apply_event(struct es *S, const struct scale_event *e, struct es_event_result *er)
{
	int i = gpu_of(S, e->dev);
	double last = S->now, mb = 0;
	struct gpu *g = i >= 0 ? &S->g[i] : NULL;

	er->ev = *e;
	er->applied_ns = S->now;
	S->watch_gpu = -1; /* an add names the GPU whose first token counts */
	if (!g) { /* a host core: the serving models run the cores as one pool */
		er->settled_ns = S->now;
		return;
	}
	enum sim_dev_state was = g->st;
	switch (e->kind) {
	case SCALE_ADD:
		g->st = SIM_DEV_ACTIVE;
		g->ready = S->now + S->k.ctx_init_ns;
		break;
	case SCALE_DRAIN: g->st = SIM_DEV_DRAINING; break;
	case SCALE_RESUME: g->st = SIM_DEV_ACTIVE; break;
	case SCALE_REMOVE: g->st = SIM_DEV_GONE; break;
	case SCALE_BUDGET: g->mem = (double)e->bytes; break;
	case SCALE_KIND_COUNT: break;
	}
	if (S->o->restart) {
		/* What live would need: the new placement against what is
		 * where now (the caches, the weights), before the restart
		 * drops it all. */
		if (S->o->moe) {
			double *saved[ES_MAX_GPUS];
			uint32_t n = S->L * S->E;
			double dq[ES_MAX_GPUS];
			for (uint32_t j = 0; j < S->ng; j++) {
				saved[j] = malloc(n * sizeof(double));
				if (saved[j])
					memcpy(saved[j], S->g[j].hold, n * sizeof(double));
				dq[j] = S->g[j].dq;
			}
			moe_replan(S, S->now, &mb, &last);
			for (uint32_t j = 0; j < S->ng; j++) {
				if (saved[j])
					memcpy(S->g[j].hold, saved[j], n * sizeof(double));
				free(saved[j]);
				S->g[j].dq = dq[j];
			}
		} else if (e->kind == SCALE_ADD)
			mb = g->lc.weight_bytes;
		if ((e->kind == SCALE_REMOVE || e->kind == SCALE_DRAIN) && S->o->moe &&
		    i == S->primary) {
			for (uint32_t j = 0; j < S->ng; j++)
				if (S->g[j].st == SIM_DEV_ACTIVE) {
					S->primary = (int)j;
					break;
				}
		}
		if (e->kind == SCALE_DRAIN || e->kind == SCALE_REMOVE)
			g->st = SIM_DEV_GONE; /* a restart leaves it out */
		last = S->now;
		restart(S, er, &last);
		er->min_bytes = mb;
		er->settled_ns = last;
		if (e->kind == SCALE_ADD)
			S->watch_gpu = i;
		return;
	}
	if (S->o->moe) {
		if ((e->kind == SCALE_DRAIN || e->kind == SCALE_REMOVE) && i == S->primary)
			moe_move_primary(S, e->kind == SCALE_DRAIN, er, &last);
		if (e->kind == SCALE_REMOVE)
			for (uint32_t key = 0; key < S->L * S->E; key++)
				g->hold[key] = INFINITY;
		er->bytes += moe_replan(S, S->now, &mb, &last);
		er->min_bytes += mb;
	} else {
		switch (e->kind) {
		case SCALE_ADD: {
			double wb = llm_weights(S, i, true);
			er->bytes += wb;
			er->min_bytes += wb;
			last = fmax(last, g->w_ready);
			uint32_t share = S->batch / active_gpus(S);
			if (share > S->max_batch)
				share = S->max_batch;
			llm_move(S, -1, i, share, er, &last);
			break;
		}
		case SCALE_DRAIN:
			for (uint32_t j = 0; j < S->ng; j++)
				if (S->g[j].st == SIM_DEV_ACTIVE)
					llm_move(S, i, (int)j, S->batch, er, &last);
			break;
		case SCALE_REMOVE:
			for (uint32_t q = 0; q < S->batch; q++)
				if (S->req[q].gpu == i)
					req_lose_kv(S, &S->req[q], er);
			g->w_ready = INFINITY;
			break;
		case SCALE_BUDGET:
			/* KV beyond the new budget: the newest requests recompute. */
			while (llm_room(S, i) < 0) {
				int pick = -1;
				for (uint32_t q = 0; q < S->batch; q++)
					if (S->req[q].gpu == i &&
					    (pick < 0 || S->req[q].gen < S->req[pick].gen))
						pick = (int)q;
				if (pick < 0)
					break;
				req_lose_kv(S, &S->req[pick], er);
			}
			break;
		default: break;
		}
	}
	(void)was;
	er->settled_ns = last;
	if (e->kind == SCALE_ADD)
		S->watch_gpu = i;
}

/* ---- the loop ---- */

static int timeline_add(struct es *S, double t, double tok)
{
	if (S->ntl == S->captl) {
		size_t cap = S->captl ? 2 * S->captl : 1024;
		double *a = realloc(S->tl_t, cap * sizeof(double));
		if (!a)
			return -1;
		S->tl_t = a;
		a = realloc(S->tl_tok, cap * sizeof(double));
		if (!a)
			return -1;
		S->tl_tok = a;
		S->captl = cap;
	}
	S->tl_t[S->ntl] = t;
	S->tl_tok[S->ntl++] = tok;
	return 0;
}

/* Decode tokens per second of the steps ending in (a, b]. */
static double rate(const struct es *S, double a, double b)
{
	double tok = 0;
	if (!(b > a))
		return 0;
	for (size_t i = 0; i < S->ntl; i++)
		if (S->tl_t[i] > a && S->tl_t[i] <= b)
			tok += S->tl_tok[i];
	return tok / ((b - a) / 1e9);
}

/* Requests that need a GPU (LLM) or a prefill: placed, and prefilled in
 * chunks (a step's prefill budget: step_prefill tokens while others decode,
 * prefill_chunk when nothing decodes); returns the MoE prefill time added
 * to this step (the LLM's goes into tokens_on / prefill_on). */
static double admit(struct es *S, double *tokens_on, double *prefill_on, bool decoding)
{
	double budget = decoding ? S->k.step_prefill : S->k.prefill_chunk, moe_tokens = 0;
	for (uint32_t i = 0; i < S->batch && budget > 0; i++) {
		struct req *q = &S->req[i];
		if (!q->prefill)
			continue;
		if (!S->o->moe && q->gpu < 0) {
			int g = llm_pick(S, q->prefill + S->output);
			if (g < 0)
				continue;
			q->gpu = g;
			S->g[g].nreq++;
		}
		double n = fmin(q->prefill, budget);
		budget -= n;
		if (S->o->moe)
			moe_tokens += n;
		else {
			tokens_on[q->gpu] += n;
			prefill_on[q->gpu] +=
			        llm_t_prefill_attn(&S->g[q->gpu].lc, q->ctx - q->prefill, n);
		}
		q->prefill -= (uint32_t)n;
	}
	return moe_tokens > 0 ? moe_prefill(S, moe_tokens) : 0;
}

static int run(struct es *S)
{
	const struct scale_events *ev = S->o->events;
	uint32_t next = 0, nev = ev ? ev->n : 0;
	double end = S->o->duration_ns > 0 ? S->o->duration_ns : 10e9;

	S->watch = -1;
	S->watch_gpu = -1;
	while (S->now < end) {
		while (next < nev && (double)ev->ev[next].t_ns <= S->now) {
			apply_event(S, &ev->ev[next], &S->r->ev[next]);
			S->watch = (int)next;
			next++;
		}
		if (S->now < S->down_until) {
			S->now = S->down_until;
			continue;
		}
		double tokens_on[ES_MAX_GPUS] = { 0 }, prefill_on[ES_MAX_GPUS] = { 0 };
		double kv_on[ES_MAX_GPUS] = { 0 };
		bool took[ES_MAX_GPUS] = { false };
		double decoded = 0;
		bool *live = calloc(S->batch, sizeof(bool));
		if (!live)
			return -1;
		for (uint32_t i = 0; i < S->batch; i++) {
			struct req *q = &S->req[i];
			int on = q->gpu;
			if (q->prefill || (!S->o->moe && on < 0))
				continue;
			if (!S->o->moe && q->arrive > S->now) {
				if (q->move_at > S->now)
					on = q->from; /* still decoding where it was */
				else
					continue; /* its KV is on the link */
			}
			live[i] = true;
			decoded++;
			if (!S->o->moe) {
				tokens_on[on] += 1;
				kv_on[on] += q->ctx;
				took[on] = true;
			}
		}
		double t = admit(S, tokens_on, prefill_on, decoded > 0);
		if (S->o->moe)
			t += decoded ? moe_step(S, decoded, took) : 0;
		else {
			double worst = 0;
			for (uint32_t j = 0; j < S->ng; j++)
				if (tokens_on[j] > 0)
					worst = fmax(worst,
					             llm_t_linear(&S->g[j].lc, tokens_on[j]) +
					                     llm_t_attn_gpu(&S->g[j].lc, kv_on[j]) +
					                     prefill_on[j]);
			t += worst;
		}
		if (!(t > 0)) { /* nothing to run: the next copy or event */
			double wake = end;
			for (uint32_t i = 0; i < S->batch; i++)
				if (S->req[i].arrive > S->now)
					wake = fmin(wake, S->req[i].arrive);
			for (uint32_t j = 0; j < S->ng; j++)
				if (S->g[j].w_ready > S->now && isfinite(S->g[j].w_ready))
					wake = fmin(wake, S->g[j].w_ready);
			if (next < nev)
				wake = fmin(wake, (double)ev->ev[next].t_ns);
			free(live);
			S->now = fmax(wake, S->now + 1);
			continue;
		}
		S->now += t;
		S->r->steps++;
		if (decoded > 0 && S->watch >= 0 && S->r->ev[S->watch].first_token_ns == 0 &&
		    (S->watch_gpu < 0 || took[S->watch_gpu] || S->o->restart))
			S->r->ev[S->watch].first_token_ns = S->now;
		if (timeline_add(S, S->now, decoded)) {
			free(live);
			return -1;
		}
		S->r->tokens += decoded;
		for (uint32_t i = 0; i < S->batch; i++) {
			struct req *q = &S->req[i];
			if (!live[i])
				continue;
			q->ctx++;
			if (++q->gen >= S->output) { /* the next request in its slot */
				q->gen = 0;
				q->ctx = S->prompt;
				q->prefill = S->prompt;
				if (!S->o->moe) {
					S->g[q->gpu].nreq--;
					q->gpu = -1;
				}
			}
		}
		free(live);
	}
	S->r->time_ns = S->now;
	return 0;
}

static void consts_default(struct es_consts *k, bool moe)
{
	if (!(k->proc_start_ns > 0))
		k->proc_start_ns = 0.2e9;
	if (!(k->ctx_init_ns > 0))
		k->ctx_init_ns = 0.5e9;
	if (!(k->reconnect_ns > 0))
		k->reconnect_ns = 0.05e9;
	if (!(k->prefill_chunk >= 1))
		k->prefill_chunk = 2048;
	if (!(k->step_prefill >= 1))
		k->step_prefill = moe ? 128 : 512;
}

/* The hardware as the cost models see GPU d: the machine's host cores and
 * first GPU (llm_hw_from_machine), then d's own figures and link. */
static void gpu_hw(const struct machine *m, uint32_t d, const struct llm_hw *base,
                   struct llm_hw *hw)
{
	const struct machine_device *g = &m->dev[d];
	*hw = *base;
	hw->gpu_mem_bytes = (double)g->mem_bytes;
	hw->gpu_gbps = g->mem_gbps;
	hw->gpu_gflops = g->fp16_gflops > 0 ? g->fp16_gflops : g->gemm_gflops;
	hw->gpu_launch_ns = g->launch_ns / 4;
	hw->link_gbps = m->link[0][g->node].gbps;
	hw->link_latency_ns = m->link[0][g->node].latency_ns;
}

static int setup(struct es *S, char *err, size_t errlen)
{
	const struct machine *m = S->m;
	const struct es_opts *o = S->o;
	struct llm_hw base, hw;
	struct moe_model mm;
	struct llm_model lm;

	if (o->moe ? moe_model_by_name(o->model, &mm) : llm_model_by_name(o->model, &lm)) {
		err_printf(err, errlen, "elastic: unknown %s model %s", o->moe ? "MoE" : "LLM",
		           o->model);
		return -TDM_EINVAL;
	}
	if (llm_hw_from_machine(m, 0, &base, err, errlen))
		return -TDM_EINVAL;
	double util = o->gpu_util > 0 && o->gpu_util <= 1 ? o->gpu_util : 0.9;
	S->primary = -1;
	for (uint32_t d = 0; d < m->ndevices; d++) {
		if (m->dev[d].kind != TDM_DEV_GPU)
			continue;
		if (S->ng == ES_MAX_GPUS) {
			err_printf(err, errlen, "elastic: %s: more than %d GPUs", m->name,
			           ES_MAX_GPUS);
			return -TDM_EINVAL;
		}
		struct gpu *g = &S->g[S->ng];
		gpu_hw(m, d, &base, &hw);
		g->dev = (int)d;
		g->node = m->dev[d].node;
		g->st = m->dev[d].absent ? SIM_DEV_ABSENT : SIM_DEV_ACTIVE;
		g->mem = util * (double)m->dev[d].mem_bytes;
		g->w_ready = g->st == SIM_DEV_ACTIVE ? 0 : INFINITY;
		if (o->moe ? moe_cost_init(&g->mc, &mm, &hw) : llm_cost_init(&g->lc, &lm, &hw)) {
			err_printf(err, errlen, "elastic: %s: %s's figures are out of range",
			           m->name, m->dev[d].name);
			return -TDM_EINVAL;
		}
		if (S->primary < 0 && g->st == SIM_DEV_ACTIVE)
			S->primary = (int)S->ng;
		S->ng++;
	}
	if (S->primary < 0) {
		err_printf(err, errlen, "elastic: %s: no GPU present at start", m->name);
		return -TDM_EINVAL;
	}
	S->req = calloc(S->batch, sizeof(*S->req));
	if (!S->req)
		return -TDM_ENOMEM;
	/* Steady state: requests at staggered points of their output. */
	for (uint32_t i = 0; i < S->batch; i++) {
		struct req *q = &S->req[i];
		q->gen = (uint32_t)((uint64_t)i * S->output / S->batch);
		q->ctx = S->prompt + q->gen;
		q->gpu = o->moe ? S->primary : -1;
		q->prefill = o->moe ? 0 : q->ctx;
	}
	if (!o->moe) {
		/* What a GPU cannot take waits, to start from its prompt. */
		for (uint32_t i = 0; i < S->batch; i++) {
			int g = llm_pick(S, S->req[i].ctx + S->output);
			if (g < 0 && i == 0) {
				err_printf(err, errlen,
				           "elastic: a request of %u tokens does not fit %s's KV "
				           "budget",
				           S->prompt + S->output, m->name);
				return -TDM_EINVAL;
			}
			if (g < 0) {
				S->req[i].gen = 0;
				S->req[i].ctx = S->prompt;
				S->req[i].prefill = S->prompt;
				continue;
			}
			S->req[i].gpu = g;
			S->req[i].prefill = 0;
			S->g[g].nreq++;
		}
		return 0;
	}
	/* MoE: the routing trace, the profile's ranking, the caches at start. */
	struct gpu *p = &S->g[S->primary];
	struct moe_trace_shape shape;
	struct moe_trace prof;
	S->L = p->mc.moe_layers;
	S->E = mm.experts;
	S->K = mm.topk;
	S->kv_tok = moe_kv_tok_bytes(o->model);
	if (p->mem < p->mc.nonexpert_bytes + RESERVE_PRIMARY +
	                     (double)S->batch * (S->prompt + S->output) * S->kv_tok) {
		err_printf(err, errlen,
		           "elastic: %s's dense part and the KV of %u requests do not fit %s",
		           mm.name, S->batch, m->dev[p->dev].name);
		return -TDM_EINVAL;
	}
	moe_trace_shape_by_name(moe_shape_of_model(o->model), S->L, &shape);
	memset(&prof, 0, sizeof(prof));
	if (moe_trace_generate(&shape, 256, S->batch, o->seed, &S->t, err, errlen) ||
	    moe_trace_generate(&shape, 512, 1, o->seed + 1000, &prof, err, errlen))
		return -TDM_EINVAL;
	uint32_t n = S->L * S->E;
	uint64_t *score = calloc(n, sizeof(*score));
	S->rank = malloc(n * sizeof(*S->rank));
	S->cnt = calloc(S->E, sizeof(*S->cnt));
	S->ids = malloc(S->E * sizeof(*S->ids));
	for (uint32_t i = 0; i < S->ng; i++)
		if (!(S->g[i].hold = malloc(n * sizeof(double))))
			n = 0;
	if (!score || !S->rank || !S->cnt || !S->ids || !n) {
		free(score);
		moe_trace_free(&prof);
		return -TDM_ENOMEM;
	}
	for (uint32_t k = 0; k < prof.tokens; k++)
		for (uint32_t l = 0; l < S->L; l++)
			for (uint32_t j = 0; j < prof.topk; j++)
				score[l * S->E + moe_trace_ids(&prof, k, l)[j]]++;
	moe_trace_free(&prof);
	/* Ranked by count, then key: score * 2^32 + (2^32 - 1 - key), sorted down. */
	for (uint32_t key = 0; key < n; key++)
		score[key] = score[key] << 32 | (UINT32_MAX - key);
	for (uint32_t key = 0; key < n; key++)
		S->rank[key] = key;
	for (uint32_t a = 1; a < n; a++) { /* insertion sort: n is at most a few thousand */
		uint32_t x = S->rank[a], b = a;
		while (b > 0 && score[S->rank[b - 1]] < score[x]) {
			S->rank[b] = S->rank[b - 1];
			b--;
		}
		S->rank[b] = x;
	}
	free(score);
	for (uint32_t i = 0; i < S->ng; i++)
		for (uint32_t key = 0; key < n; key++)
			S->g[i].hold[key] = INFINITY;
	/* The caches at start: loaded before serving (time 0). */
	double mb, last = 0;
	moe_replan(S, 0, &mb, &last);
	for (uint32_t i = 0; i < S->ng; i++) {
		S->g[i].dq = 0;
		for (uint32_t key = 0; key < n; key++)
			if (isfinite(S->g[i].hold[key]))
				S->g[i].hold[key] = 0;
	}
	return 0;
}

int es_run(const struct machine *m, const struct es_opts *o, struct es_result *r, char *err,
           size_t errlen)
{
	struct es S = { .m = m, .o = o, .r = r, .k = o->k };
	uint32_t nev = o->events ? o->events->n : 0;
	int rc;

	memset(r, 0, sizeof(*r));
	consts_default(&S.k, o->moe);
	S.batch = o->batch ? o->batch : 16;
	S.prompt = o->prompt ? o->prompt : 512;
	S.output = o->output ? o->output : 256;
	S.max_batch = o->max_batch ? o->max_batch : UINT32_MAX;
	if (S.batch > 4096 || S.prompt > 1u << 20 || S.output > 1u << 20) {
		err_printf(err, errlen,
		           "elastic: batch at most 4096, prompt and output at most 2^20");
		return -TDM_EINVAL;
	}
	if (o->events && (rc = sim_events_check(m, o->events, NULL, err, errlen)))
		return rc;
	r->nevents = nev;
	r->ev = calloc(nev ? nev : 1, sizeof(*r->ev));
	if (!r->ev) {
		err_printf(err, errlen, "elastic: out of memory");
		return -TDM_ENOMEM;
	}
	rc = setup(&S, err, errlen);
	if (!rc) {
		/* The serving model needs a GPU throughout. */
		enum sim_dev_state st[ES_MAX_GPUS];
		for (uint32_t i = 0; i < S.ng; i++)
			st[i] = S.g[i].st;
		for (uint32_t e = 0; e < nev && !rc; e++) {
			int i = gpu_of(&S, o->events->ev[e].dev);
			uint32_t act = 0;
			enum scale_kind k = o->events->ev[e].kind;
			if (i >= 0)
				st[i] = k == SCALE_ADD || k == SCALE_RESUME ? SIM_DEV_ACTIVE
				        : k == SCALE_DRAIN                  ? SIM_DEV_DRAINING
				        : k == SCALE_REMOVE                 ? SIM_DEV_GONE
				                                            : st[i];
			for (uint32_t j = 0; j < S.ng; j++)
				act += st[j] == SIM_DEV_ACTIVE;
			if (!act) {
				err_printf(
				        err, errlen,
				        "elastic: event %u (%s %s) leaves no active GPU to serve "
				        "on",
				        o->events->ev[e].index + 1, scale_kind_name(k),
				        o->events->ev[e].dev);
				rc = -TDM_EINVAL;
			}
		}
	}
	if (!rc && run(&S)) {
		err_printf(err, errlen, "elastic: out of memory");
		rc = -TDM_ENOMEM;
	}
	if (!rc) {
		r->tok_s = r->time_ns > 0 ? r->tokens / (r->time_ns / 1e9) : 0;
		for (uint32_t i = 0; i < S.ng; i++)
			r->gpus_at_end += S.g[i].st == SIM_DEV_ACTIVE;
		for (uint32_t e = 0; e < nev; e++) {
			struct es_event_result *x = &r->ev[e];
			double prev = e ? r->ev[e - 1].settled_ns : 0;
			double nxt = e + 1 < nev ? r->ev[e + 1].applied_ns : r->time_ns;
			r->bytes_moved += x->bytes;
			x->tok_s_before = rate(&S, prev, x->applied_ns);
			/* During: until settled, at least one step. */
			double until = x->settled_ns;
			for (size_t s = 0; s < S.ntl && !(until > x->applied_ns); s++)
				if (S.tl_t[s] > x->applied_ns)
					until = S.tl_t[s];
			x->tok_s_during = rate(&S, x->applied_ns, until);
			x->tok_s_after = rate(&S, until, nxt);
		}
	} else
		es_result_free(r);
	for (uint32_t i = 0; i < S.ng; i++)
		free(S.g[i].hold);
	free(S.req);
	free(S.rank);
	free(S.cnt);
	free(S.ids);
	free(S.tl_t);
	free(S.tl_tok);
	moe_trace_free(&S.t);
	return rc;
}

void es_result_free(struct es_result *r)
{
	free(r->ev);
	r->ev = NULL;
	r->nevents = 0;
}

/* ---- `-w moe:...|llm:... --events ...` ---- */

struct es_spec {
	char model[32];
	double batch, prompt, output, duration_ms, seed, util, max_batch;
};

static int es_spec_key(void *ctx, const char *key, const char *val, char *err, size_t errlen)
{
	struct es_spec *s = ctx;
	struct {
		const char *name;
		double *v, lo, hi;
	} nums[] = { { "batch", &s->batch, 1, 4096 },      { "prompt", &s->prompt, 1, 1 << 20 },
		     { "output", &s->output, 1, 1 << 20 }, { "duration", &s->duration_ms, 1, 1e9 },
		     { "seed", &s->seed, 0, 1e15 },        { "max_batch", &s->max_batch, 0, 1e6 },
		     { "util", &s->util, 0.01, 1 } };

	if (!strcmp(key, "model")) {
		if (strlen(val) >= sizeof(s->model)) {
			err_printf(err, errlen, "--workload: model=%s: too long", val);
			return -1;
		}
		snprintf(s->model, sizeof(s->model), "%s", val);
		return 0;
	}
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		if (!strcmp(key, nums[i].name))
			return sim_spec_num("elastic", key, val, nums[i].lo, nums[i].hi, nums[i].v,
			                    err, errlen);
	err_printf(err, errlen,
	           "--workload with --events: unknown key %s (model, batch, prompt, output, "
	           "duration (ms), seed, util, max_batch)",
	           key);
	return -1;
}

int es_cli(const struct machine *m, bool moe, const char *spec, const char *events, bool restart,
           bool json)
{
	struct es_spec s = { .batch = 16,
		             .prompt = 512,
		             .output = 256,
		             .duration_ms = 10000,
		             .seed = 1,
		             .util = 0.9 };
	struct scale_events ev = { 0 };
	struct es_result r;
	char err[512], *text = NULL;
	size_t len = 0;
	int rc = 1;

	snprintf(s.model, sizeof(s.model), "%s", moe ? "dsv2-lite" : "llama2-7b");
	if (sim_spec_each(moe ? "moe" : "llm", spec, es_spec_key, &s, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (sim_events_text(events, &text, &len, err, sizeof(err)) ||
	    scale_events_parse(text, len, events[0] == '@' ? events + 1 : "--events", &ev, err,
	                       sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		free(text);
		return 2;
	}
	free(text);
	struct es_opts o = { .moe = moe,
		             .model = s.model,
		             .batch = (uint32_t)s.batch,
		             .prompt = (uint32_t)s.prompt,
		             .output = (uint32_t)s.output,
		             .max_batch = (uint32_t)s.max_batch,
		             .duration_ns = s.duration_ms * 1e6,
		             .restart = restart,
		             .gpu_util = s.util,
		             .seed = (uint64_t)s.seed,
		             .events = &ev };
	if (es_run(m, &o, &r, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	if (json) {
		json_t *doc =
		        json_pack("{s:s,s:s,s:s,s:s,s:f,s:f,s:f,s:I,s:f,s:f,s:i}", "machine",
		                  m->name, "model", s.model, "kind", moe ? "moe" : "llm", "mode",
		                  restart ? "restart" : "live", "makespan", r.time_ns / 1e9,
		                  "tokens", r.tokens, "tok_s", r.tok_s, "steps",
		                  (json_int_t)r.steps, "reprefill_tokens", r.reprefill_tokens,
		                  "bytes_moved", r.bytes_moved, "gpus_at_end", (int)r.gpus_at_end);
		json_t *arr = json_array();
		for (uint32_t i = 0; doc && arr && i < r.nevents; i++) {
			const struct es_event_result *x = &r.ev[i];
			char txt[96];
			scale_event_format(&x->ev, txt, sizeof(txt));
			json_array_append_new(
			        arr,
			        json_pack("{s:s,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:f}", "event",
			                  txt, "applied", x->applied_ns / 1e9, "settled",
			                  x->settled_ns / 1e9, "first_token",
			                  x->first_token_ns / 1e9, "bytes", x->bytes, "min_bytes",
			                  x->min_bytes, "tok_s_before", x->tok_s_before,
			                  "tok_s_during", x->tok_s_during, "tok_s_after",
			                  x->tok_s_after, "moved_requests", (int)x->moved_requests,
			                  "reprefill_tokens", x->reprefill_tokens));
		}
		if (!doc || !arr) {
			json_decref(doc);
			json_decref(arr);
			fprintf(stderr, "tandemd: out of memory\n");
			es_result_free(&r);
			goto out;
		}
		json_object_set_new(doc, "time_unit", json_string("s"));
		json_object_set_new(doc, "events", arr);
		json_dumpf(doc, stdout,
		           JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
		printf("\n");
		json_decref(doc);
	} else {
		printf("%s %s on %s, %s: %.3f s, %.0f decode tokens, %.1f tok/s, %.0f tokens "
		       "prefilled again, %.1f MB moved\n",
		       moe ? "MoE" : "LLM", s.model, m->name, restart ? "restart" : "live",
		       r.time_ns / 1e9, r.tokens, r.tok_s, r.reprefill_tokens, r.bytes_moved / 1e6);
		printf("%-32s %10s %10s %12s %10s %8s %10s %10s %10s\n", "event", "applied_ms",
		       "settled_ms", "1st_token_ms", "moved_MB", "over_min", "tok/s_pre",
		       "tok/s_dur", "tok/s_post");
		for (uint32_t i = 0; i < r.nevents; i++) {
			const struct es_event_result *x = &r.ev[i];
			char txt[96];
			scale_event_format(&x->ev, txt, sizeof(txt));
			char over[16] = "-"; /* nothing needed to move */
			if (x->min_bytes > 0)
				snprintf(over, sizeof(over), "%.3f", x->bytes / x->min_bytes);
			printf("%-32s %10.3f %10.3f %12.3f %10.1f %8s %10.1f %10.1f %10.1f\n", txt,
			       x->applied_ns / 1e6, x->settled_ns / 1e6,
			       x->first_token_ns > 0 ? (x->first_token_ns - x->applied_ns) / 1e6
			                             : -1.0,
			       x->bytes / 1e6, over, x->tok_s_before, x->tok_s_during,
			       x->tok_s_after);
		}
	}
	es_result_free(&r);
	rc = 0;
out:
	scale_events_free(&ev);
	return rc;
}
