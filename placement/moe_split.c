/* The MoE layer decision (moe_split.h): costs by roofline, then the split
 * of the activated experts between the CPU, the GPU and the link. */
#include "placement/moe_split.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct moe_model known_models[] = {
	/* Mistral's Mixtral-8x7B: 32 layers, d 4096, 32 heads of 128 with 8
	 * KV heads (attention 2*4096^2 + 2*4096*1024), 8 experts top-2 of FFN
	 * 14336, vocab 32000: 46.7e9 parameters. */
	{ "mixtral-8x7b", 32, 0, 4096, 8, 2, 14336, 0, 0, 41943040.0, 32000, 2 },
	/* DeepSeek-V2-Lite: 27 layers, the first dense (FFN 10944), d 2048;
	 * 64 routed experts top-6 and 2 shared, each of FFN 1408; MLA
	 * attention (q 2048x3072, kv_a 2048x576, kv_b 512x4096, o 2048x2048:
	 * 13.76e6); vocab 102400: 15.7e9 parameters. */
	{ "dsv2-lite", 27, 1, 2048, 64, 6, 1408, 2816, 10944, 13762560.0, 102400, 2 },
	/* Qwen1.5-MoE-A2.7B: 24 layers, d 2048, 16 heads of 128 (attention
	 * 4*2048^2), 60 routed experts top-4 of FFN 1408 and a shared expert
	 * of FFN 5632; vocab 151936: 14.3e9 parameters. */
	{ "qwen1.5-moe", 24, 0, 2048, 60, 4, 1408, 5632, 0, 16777216.0, 151936, 2 },
};

int moe_model_by_name(const char *name, struct moe_model *out)
{
	for (size_t i = 0; i < sizeof(known_models) / sizeof(known_models[0]); i++)
		if (!strcmp(name, known_models[i].name)) {
			*out = known_models[i];
			return 0;
		}
	return -1;
}

int moe_cost_init(struct moe_cost *c, const struct moe_model *m, const struct llm_hw *hw)
{
	memset(c, 0, sizeof(*c));
	if (!m->layers || m->dense_layers >= m->layers || !m->d_model || !m->experts ||
	    m->experts > MOE_SPLIT_MAX || !m->topk || m->topk > m->experts || !m->expert_ffn ||
	    (m->dense_layers && !m->dense_ffn) || !cost_pos(m->attn_params) || !m->vocab ||
	    !m->dtype_bytes)
		return -1;
	if (!llm_hw_valid(hw))
		return -1;
	c->m = *m;
	c->hw = *hw;
	const double d = m->d_model, b = m->dtype_bytes;
	c->moe_layers = m->layers - m->dense_layers;
	/* A gated FFN: three d x ffn matrices. */
	double expert = 3 * d * m->expert_ffn;
	c->expert_bytes = expert * b;
	c->expert_flops_tok = 2 * expert;
	double moe_dense = m->attn_params + 3 * d * m->shared_ffn + d * m->experts;
	c->moe_dense_bytes = moe_dense * b;
	c->moe_dense_flops_tok = 2 * moe_dense;
	double dense = m->attn_params + 3 * d * m->dense_ffn;
	c->dense_bytes = dense * b;
	c->dense_flops_tok = 2 * dense;
	c->head_bytes = (double)m->vocab * d * b;
	c->head_flops_tok = 2.0 * m->vocab * d;
	/* The embedding table stays in host memory (one row a token). */
	c->nonexpert_bytes = c->moe_layers * c->moe_dense_bytes + m->dense_layers * c->dense_bytes +
	                     c->head_bytes;
	c->routed_bytes = (double)c->moe_layers * m->experts * c->expert_bytes;
	c->cpu_cores = hw->cpu_cores > 1 ? hw->cpu_cores - 1 : 1;
	double all = c->cpu_cores * hw->core_gbps;
	c->cpu_gbps = hw->socket_gbps > 0 && hw->socket_gbps < all ? hw->socket_gbps : all;
	c->cpu_gbps_shared = c->cpu_gbps;
	if (hw->socket_gbps > 0 && hw->socket_gbps - hw->link_gbps < c->cpu_gbps)
		c->cpu_gbps_shared = fmax(hw->socket_gbps - hw->link_gbps, c->cpu_gbps / 10);
	return 0;
}

double moe_t_expert_gpu(const struct moe_cost *c, double tokens)
{
	return fmax(c->expert_bytes / c->hw.gpu_gbps,
	            c->expert_flops_tok * tokens / c->hw.gpu_gflops) +
	       c->hw.gpu_launch_ns;
}

double moe_t_expert_cpu(const struct moe_cost *c, double tokens)
{
	return fmax(c->expert_bytes / c->cpu_gbps,
	            c->expert_flops_tok * tokens / (c->cpu_cores * c->hw.cpu_gflops)) +
	       c->hw.cpu_launch_ns;
}

double moe_t_expert_cpu_shared(const struct moe_cost *c, double tokens)
{
	return fmax(c->expert_bytes / c->cpu_gbps_shared,
	            c->expert_flops_tok * tokens / (c->cpu_cores * c->hw.cpu_gflops)) +
	       c->hw.cpu_launch_ns;
}

double moe_t_load(const struct moe_cost *c)
{
	return c->hw.link_latency_ns + c->expert_bytes / c->hw.link_gbps;
}

double moe_t_dense(const struct moe_cost *c, bool dense_layer, double tokens)
{
	double bytes = dense_layer ? c->dense_bytes : c->moe_dense_bytes;
	double flops = (dense_layer ? c->dense_flops_tok : c->moe_dense_flops_tok) * tokens;
	/* Attention, its projections, the FFN or shared experts and the
	 * router: about four launches. */
	return fmax(bytes / c->hw.gpu_gbps, flops / c->hw.gpu_gflops) + 4 * c->hw.gpu_launch_ns;
}

double moe_t_head(const struct moe_cost *c, double tokens)
{
	return fmax(c->head_bytes / c->hw.gpu_gbps, c->head_flops_tok * tokens / c->hw.gpu_gflops) +
	       c->hw.gpu_launch_ns;
}

double moe_t_handoff(const struct moe_cost *c, double tokens)
{
	double bytes = tokens * c->m.d_model * c->m.dtype_bytes;
	return 2 * (c->hw.link_latency_ns + bytes / c->hw.link_gbps);
}

uint32_t moe_breakeven_tokens(const struct moe_cost *c)
{
	/* Both sides grow with tokens; find the first n where load + GPU is
	 * faster, by doubling then bisection (both are monotone in n). */
	uint32_t lo = 1, hi = 1;
	while (moe_t_load(c) + moe_t_expert_gpu(c, hi) >= moe_t_expert_cpu(c, hi)) {
		if (hi >= (1u << 24))
			return UINT32_MAX;
		lo = hi;
		hi *= 2;
	}
	if (hi == 1)
		return 1;
	while (lo + 1 < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (moe_t_load(c) + moe_t_expert_gpu(c, mid) < moe_t_expert_cpu(c, mid))
			hi = mid;
		else
			lo = mid;
	}
	return hi;
}

/* ---- the split ---- */

static bool bad_times(const struct moe_split_in *in)
{
	const struct moe_split_times *t = in->times;
	if (!t)
		return !in->cost;
	if ((in->n && (!t->gpu_ns || !t->cpu_ns)) || !cost_nonneg(t->load_ns) ||
	    !cost_nonneg(t->handoff_ns))
		return true;
	for (uint32_t i = 0; i < in->n; i++)
		if (!cost_nonneg(t->gpu_ns[i]) || !cost_nonneg(t->cpu_ns[i]))
			return true;
	return false;
}

static bool bad_input(const struct moe_split_in *in)
{
	return !in || in->n > MOE_SPLIT_MAX || (in->n && !in->e) || bad_times(in) ||
	       !cost_nonneg(in->tokens) || !cost_nonneg(in->link_free_ns) ||
	       !(in->allow & (MOE_ALLOW_CPU | MOE_ALLOW_LOAD));
}

/* Per-expert times, computed once per decision. */
struct times {
	double gpu[MOE_SPLIT_MAX], cpu[MOE_SPLIT_MAX];
	double cpu_shared[MOE_SPLIT_MAX]; /* while the link streams */
	double resident_gpu; /* the resident experts' GPU time */
	double load; /* one load */
	double handoff;
};

static void times_of(const struct moe_split_in *in, struct times *t)
{
	const struct moe_cost *c = in->cost;
	t->resident_gpu = 0;
	if (in->times) {
		const struct moe_split_times *m = in->times;
		t->load = m->load_ns;
		t->handoff = m->handoff_ns;
		for (uint32_t i = 0; i < in->n; i++) {
			t->gpu[i] = m->gpu_ns[i];
			t->cpu[i] = t->cpu_shared[i] = in->e[i].resident ? 0 : m->cpu_ns[i];
			if (in->e[i].resident)
				t->resident_gpu += t->gpu[i];
		}
		return;
	}
	t->load = moe_t_load(c);
	t->handoff = moe_t_handoff(c, in->tokens);
	for (uint32_t i = 0; i < in->n; i++) {
		t->gpu[i] = moe_t_expert_gpu(c, in->e[i].tokens);
		t->cpu[i] = in->e[i].resident ? 0 : moe_t_expert_cpu(c, in->e[i].tokens);
		t->cpu_shared[i] =
		        in->e[i].resident ? 0 : moe_t_expert_cpu_shared(c, in->e[i].tokens);
		if (in->e[i].resident)
			t->resident_gpu += t->gpu[i];
	}
}

/* When the CPU's experts end: alone they take `alone`, all under a busy
 * link `shared`; the link is busy for the first `link` ns of the layer,
 * and work done then goes at the shared rate. */
static double cpu_end(double alone, double shared, double link)
{
	if (link >= shared)
		return shared;
	if (link <= 0 || shared <= alone)
		return alone;
	/* The share of the work done while the link streams: link / shared. */
	return link + (1 - link / shared) * alone;
}

/* The layer's time: loads (in `order`, the non-resident experts) chained
 * on the link, each then on the GPU after the resident ones. */
static double eval_times(const struct moe_split_in *in, const struct times *t, const uint8_t *where,
                         const uint32_t *order, uint32_t nord, struct moe_split_plan *p)
{
	double g = t->resident_gpu, link = in->link_free_ns, cpu = 0, cpu_shared = 0;
	uint32_t nload = 0, ncpu = 0;

	for (uint32_t k = 0; k < nord; k++) {
		uint32_t i = order[k];
		if (where[i] == MOE_RUN_LOAD) {
			link += t->load;
			g = fmax(g, link) + t->gpu[i];
			nload++;
		} else {
			cpu += t->cpu[i];
			cpu_shared += t->cpu_shared[i];
			ncpu++;
		}
	}
	if (ncpu)
		cpu = cpu_end(cpu, cpu_shared, link) + t->handoff;
	if (p) {
		p->t_gpu_ns = g;
		p->t_cpu_ns = cpu;
		p->t_link_ns = nload ? link : in->link_free_ns;
		p->nload = nload;
		p->ncpu = ncpu;
		p->ngpu = in->n - nload - ncpu;
		p->t_ns = fmax(g, cpu);
	}
	return fmax(g, cpu);
}

int moe_split_eval(const struct moe_split_in *in, const uint8_t *where, const uint32_t *order,
                   struct moe_split_plan *out)
{
	static _Thread_local struct times t;
	static _Thread_local uint32_t ord[MOE_SPLIT_MAX];
	uint32_t nord = 0;

	if (bad_input(in) || !out || (in->n && !where))
		return -1;
	if (order) {
		/* Each non-resident expert exactly once. */
		static _Thread_local uint8_t seen[MOE_SPLIT_MAX];
		memset(seen, 0, in->n);
		for (uint32_t k = 0; k < in->n && order[k] != UINT32_MAX; k++) {
			if (order[k] >= in->n || seen[order[k]] || in->e[order[k]].resident)
				return -1;
			seen[order[k]] = 1;
			ord[nord++] = order[k];
		}
	}
	for (uint32_t i = 0; i < in->n; i++) {
		if (!in->e[i].tokens || where[i] > MOE_RUN_LOAD)
			return -1;
		if (in->e[i].resident != (where[i] == MOE_RUN_GPU))
			return -1;
		if ((where[i] == MOE_RUN_CPU && !(in->allow & MOE_ALLOW_CPU)) ||
		    (where[i] == MOE_RUN_LOAD && !(in->allow & MOE_ALLOW_LOAD)))
			return -1;
		if (!order && !in->e[i].resident)
			ord[nord++] = i;
	}
	if (order) {
		uint32_t want = 0;
		for (uint32_t i = 0; i < in->n; i++)
			want += !in->e[i].resident;
		if (want != nord)
			return -1;
	}
	times_of(in, &t);
	eval_times(in, &t, where, ord, nord, out);
	return 0;
}

static int cmp_tokens_desc(const void *a, const void *b, void *ctx)
{
	const struct moe_split_expert *e = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	if (e[x].tokens != e[y].tokens)
		return e[x].tokens > e[y].tokens ? -1 : 1;
	return x < y ? -1 : x > y;
}

static bool valid_experts(const struct moe_split_in *in)
{
	for (uint32_t i = 0; i < in->n; i++)
		if (!in->e[i].tokens)
			return false;
	return true;
}

/* What both splits start from, once the input is checked (-1 when bad):
 * the resident experts on the GPU, the non-resident ones in order[0 .. m),
 * most tokens first (Johnson's order for the link-then-GPU flow shop:
 * every load takes the same time, so the longer GPU job goes first), and
 * every expert's times in t. Returns m. */
static int prepare(const struct moe_split_in *in, uint8_t *where, uint32_t *order,
                   const struct moe_split_plan *out, struct times *t)
{
	uint32_t m = 0;

	if (bad_input(in) || !out || (in->n && (!where || !order)) || !valid_experts(in))
		return -1;
	for (uint32_t i = 0; i < in->n; i++) {
		if (in->e[i].resident)
			where[i] = MOE_RUN_GPU;
		else
			order[m++] = i;
	}
	qsort_r(order, m, sizeof(*order), cmp_tokens_desc, (void *)in->e);
	times_of(in, t);
	return (int)m;
}

int moe_split_plan(const struct moe_split_in *in, uint8_t *where, uint32_t *scratch,
                   struct moe_split_plan *out)
{
	static _Thread_local struct times t;

	int prepared = prepare(in, where, scratch, out, &t);
	if (prepared < 0)
		return -1;
	uint32_t *order = scratch, m = (uint32_t)prepared;
	const bool cpu_ok = in->allow & MOE_ALLOW_CPU, load_ok = in->allow & MOE_ALLOW_LOAD;

	/* Every prefix: the first k (most tokens) loaded, the rest on the
	 * CPU. With both allowed, all k from 0 to m; else the one allowed. */
	uint32_t kmin = cpu_ok ? 0 : m, kmax = load_ok ? m : 0, best_k = kmin;
	double best = INFINITY;
	{
		/* Incremental: the CPU's sum of the suffix, the loads' chain of
		 * the prefix. */
		double cpu_suffix = 0, shared_suffix = 0;
		for (uint32_t k = 0; k < m; k++) {
			cpu_suffix += t.cpu[order[k]];
			shared_suffix += t.cpu_shared[order[k]];
		}
		double g = t.resident_gpu, link = in->link_free_ns;
		for (uint32_t k = 0; k <= m; k++) {
			if (k >= kmin && k <= kmax) {
				double cpu =
				        k < m ? cpu_end(cpu_suffix, shared_suffix, link) + t.handoff
				              : 0;
				double v = fmax(g, cpu);
				if (v < best) {
					best = v;
					best_k = k;
				}
			}
			if (k == m)
				break;
			link += t.load;
			g = fmax(g, link) + t.gpu[order[k]];
			cpu_suffix -= t.cpu[order[k]];
			shared_suffix -= t.cpu_shared[order[k]];
		}
	}
	for (uint32_t k = 0; k < m; k++)
		where[order[k]] = k < best_k ? MOE_RUN_LOAD : MOE_RUN_CPU;
	/* Single moves while they shorten the layer (a later expert with few
	 * tokens may still be worth loading when the CPU is the bottleneck). */
	if (cpu_ok && load_ok) {
		for (int pass = 0; pass < 2; pass++) {
			bool moved = false;
			for (uint32_t k = 0; k < m; k++) {
				uint32_t i = order[k];
				uint8_t was = where[i];
				where[i] = was == MOE_RUN_CPU ? MOE_RUN_LOAD : MOE_RUN_CPU;
				double v = eval_times(in, &t, where, order, m, NULL);
				if (v < best * (1 - 1e-9)) {
					best = v;
					moved = true;
				} else {
					where[i] = was;
				}
			}
			if (!moved)
				break;
		}
	}
	eval_times(in, &t, where, order, m, out);
	return 0;
}

int moe_split_two_ended(const struct moe_split_in *in, uint8_t *where, uint32_t *scratch,
                        struct moe_split_plan *out)
{
	static _Thread_local struct times t;

	int prepared = prepare(in, where, scratch, out, &t);
	if (prepared < 0)
		return -1;
	uint32_t *order = scratch, m = (uint32_t)prepared;
	const bool cpu_ok = in->allow & MOE_ALLOW_CPU, load_ok = in->allow & MOE_ALLOW_LOAD;

	/* The GPU starts with the resident (cached) experts; then whichever
	 * side would be free first takes the next expert from its end. */
	double g = t.resident_gpu, link = in->link_free_ns, cpu = 0;
	uint32_t hi = 0, lo = m;
	while (hi < lo) {
		bool gpu_turn = load_ok && (!cpu_ok || g <= cpu + (cpu == 0 ? t.handoff : 0));
		if (gpu_turn) {
			uint32_t i = order[hi++];
			where[i] = MOE_RUN_LOAD;
			link += t.load;
			g = fmax(g, link) + t.gpu[i];
		} else {
			uint32_t i = order[--lo];
			where[i] = MOE_RUN_CPU;
			cpu += t.cpu[i] + (cpu == 0 ? t.handoff : 0);
		}
	}
	eval_times(in, &t, where, order, m, out);
	return 0;
}
