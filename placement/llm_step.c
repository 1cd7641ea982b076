/* The LLM decode step decision (llm_step.h): costs by roofline, then the
 * arrangement of the step with the least predicted time per token. */
#include "placement/llm_step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct llm_model known_models[] = {
	/* Meta's LLaMA-2-7B: 32 layers, d 4096, 32 heads of 128, MHA, FFN 11008. */
	{ "llama2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 2 },
	/* Meta's LLaMA-3.1-8B: 32 layers, d 4096, 32 heads of 128, 8 KV heads
	 * (GQA), FFN 14336, vocabulary 128256. */
	{ "llama3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 2 },
};

int llm_model_by_name(const char *name, struct llm_model *out)
{
	for (size_t i = 0; i < sizeof(known_models) / sizeof(known_models[0]); i++)
		if (!strcmp(name, known_models[i].name)) {
			*out = known_models[i];
			return 0;
		}
	return -1;
}

bool llm_hw_valid(const struct llm_hw *hw)
{
	return cost_pos(hw->gpu_mem_bytes) && cost_pos(hw->gpu_gbps) && cost_pos(hw->gpu_gflops) &&
	       cost_nonneg(hw->gpu_launch_ns) && hw->cpu_cores && cost_pos(hw->core_gbps) &&
	       cost_nonneg(hw->socket_gbps) && cost_pos(hw->cpu_gflops) &&
	       cost_nonneg(hw->cpu_launch_ns) && cost_pos(hw->link_gbps) &&
	       cost_nonneg(hw->link_latency_ns);
}

int llm_cost_init(struct llm_cost *c, const struct llm_model *m, const struct llm_hw *hw)
{
	memset(c, 0, sizeof(*c));
	if (!m->layers || !m->d_model || !m->heads || !m->kv_heads || !m->head_dim || !m->ffn ||
	    !m->vocab || !m->dtype_bytes || m->kv_heads > m->heads)
		return -1;
	if (!llm_hw_valid(hw))
		return -1;
	c->m = *m;
	c->hw = *hw;
	double d = m->d_model, q = (double)m->heads * m->head_dim,
	       kv = (double)m->kv_heads * m->head_dim;
	/* Per layer: Q and O projections (d x q each), K and V (d x kv each),
	 * and the gated FFN's three matrices (d x ffn). Then the embedding and
	 * the LM head (vocab x d each); only the head is a matrix product. */
	double layer_params = 2 * d * q + 2 * d * kv + 3 * d * m->ffn;
	double params = m->layers * layer_params + 2.0 * m->vocab * d;
	c->weight_bytes = params * m->dtype_bytes;
	c->linear_flops_tok = 2 * (m->layers * layer_params + (double)m->vocab * d);
	c->kv_tok_bytes = 2.0 * m->layers * kv * m->dtype_bytes;
	c->qo_req_bytes = m->layers * (2 * q + 2 * kv) * m->dtype_bytes;
	/* One core drives the GPU (launches, copies); the others may attend. */
	c->attn_cores = hw->cpu_cores > 1 ? hw->cpu_cores - 1 : 1;
	double all = c->attn_cores * hw->core_gbps;
	c->cpu_attn_gbps = hw->socket_gbps > 0 && hw->socket_gbps < all ? hw->socket_gbps : all;
	return 0;
}

double llm_t_linear(const struct llm_cost *c, double tokens)
{
	if (tokens <= 0)
		return 0;
	double mem = c->weight_bytes / c->hw.gpu_gbps;
	double flops = c->linear_flops_tok * tokens / c->hw.gpu_gflops;
	return fmax(mem, flops) + c->m.layers * c->hw.gpu_launch_ns;
}

double llm_t_attn_gpu(const struct llm_cost *c, double kv_tokens)
{
	return kv_tokens > 0 ? kv_tokens * c->kv_tok_bytes / c->hw.gpu_gbps : 0;
}

uint32_t llm_cpu_cores_used(const struct llm_cost *c, uint32_t nreq)
{
	double units = (double)nreq * c->m.kv_heads;
	return units < c->attn_cores ? (uint32_t)units : c->attn_cores;
}

double llm_t_attn_cpu(const struct llm_cost *c, uint32_t nreq, double kv_tokens)
{
	if (!nreq || kv_tokens <= 0)
		return 0;
	uint32_t cores = llm_cpu_cores_used(c, nreq);
	double bw = cores * c->hw.core_gbps;
	if (c->hw.socket_gbps > 0 && c->hw.socket_gbps < bw)
		bw = c->hw.socket_gbps;
	/* Reading K and V dominates; the flops (4 per cached element) are far
	 * below what the cores do in that time, but take the larger anyway. */
	double bytes = kv_tokens * c->kv_tok_bytes;
	double flops = 2.0 * bytes / c->m.dtype_bytes * (double)c->m.heads / c->m.kv_heads;
	double t = fmax(bytes / bw, flops / (cores * c->hw.cpu_gflops));
	return t + c->m.layers * c->hw.cpu_launch_ns;
}

double llm_t_link(const struct llm_cost *c, double bytes, uint32_t copies)
{
	if (bytes <= 0 && !copies)
		return 0;
	return copies * c->hw.link_latency_ns + bytes / c->hw.link_gbps;
}

double llm_t_prefill_attn(const struct llm_cost *c, double ctx, double chunk)
{
	if (chunk <= 0)
		return 0;
	/* Each new token attends to the ctx earlier ones and the chunk's
	 * earlier ones: QK^T and PV, 4 flops per (query, key, head dim). */
	double pairs = chunk * ctx + chunk * (chunk + 1) / 2;
	double flops = 4.0 * pairs * c->m.heads * c->m.head_dim * c->m.layers;
	return flops / c->hw.gpu_gflops;
}

/* ---- the roofline as a cost table ---- */

static double roof_linear(void *c, double tokens)
{
	return llm_t_linear(c, tokens);
}

static double roof_attn_gpu(void *c, double kv_tokens)
{
	return llm_t_attn_gpu(c, kv_tokens);
}

static double roof_attn_cpu(void *c, uint32_t nreq, double kv_tokens)
{
	return llm_t_attn_cpu(c, nreq, kv_tokens);
}

static double roof_link(void *c, double bytes, uint32_t copies)
{
	return llm_t_link(c, bytes, copies);
}

static uint32_t roof_cores_used(void *c, uint32_t nreq)
{
	return llm_cpu_cores_used(c, nreq);
}

void llm_step_costs_roofline(const struct llm_cost *c, struct llm_step_costs *out)
{
	*out = (struct llm_step_costs){
		.ctx = (void *)c,
		.linear = roof_linear,
		.attn_gpu = roof_attn_gpu,
		.attn_cpu = roof_attn_cpu,
		.link = roof_link,
		.cores_used = roof_cores_used,
		.kv_tok_bytes = c->kv_tok_bytes,
		.qo_req_bytes = c->qo_req_bytes,
		.link_latency_ns = c->hw.link_latency_ns,
		.layers = c->m.layers,
	};
}

/* ---- the step ---- */

struct side {
	double gpu_tok, cpu_tok, stream_tok;
	uint32_t ngpu, ncpu, nstream;
};

static int cmp_desc(const void *a, const void *b, void *ctx)
{
	const struct llm_step_req *r = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	if (r[x].kv_tokens != r[y].kv_tokens)
		return r[x].kv_tokens > r[y].kv_tokens ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Overlap (or serial): every host request on the CPU or streamed, by
 * longest first to whichever finishes earlier. */
static double plan_overlap(const struct llm_step_in *in, const uint32_t *order, uint32_t nhost,
                           double gpu_tok, uint32_t ngpu, bool serial, uint8_t *where,
                           struct llm_step_plan *p)
{
	const struct llm_step_costs *K = in->costs;
	const double per_layer = K->kv_tok_bytes / K->layers;
	double cpu_tok = 0, stream_tok = 0;
	uint32_t ncpu = 0, nstream = 0;
	bool stream = !serial && (in->allow & LLM_ALLOW_STREAM);

	const double tg0 = K->linear(K->ctx, ngpu + nhost + in->prefill_tokens) +
	                   K->attn_gpu(K->ctx, gpu_tok) + in->prefill_attn_ns;
	for (uint32_t k = 0; k < nhost; k++) {
		uint32_t i = order[k];
		double tok = in->req[i].kv_tokens;
		bool to_stream = false;

		/* Two layers' worth in flight (double buffering). Streamed, the
		 * request's attention joins the GPU's work and its KV the link's;
		 * on the CPU, the CPU's: whichever leaves the step shorter. */
		if (stream && 2 * (stream_tok + tok) * per_layer <= in->stream_scratch_bytes) {
			double qo =
			        K->link(K->ctx, ncpu * K->qo_req_bytes, ncpu ? 2 * K->layers : 0);
			double tg_s = tg0 + K->attn_gpu(K->ctx, stream_tok + tok);
			double tg_c = tg0 + K->attn_gpu(K->ctx, stream_tok);
			double tl_s =
			        in->link_busy_ns + qo +
			        K->link(K->ctx, (stream_tok + tok) * K->kv_tok_bytes, K->layers);
			double tl_c =
			        in->link_busy_ns + qo +
			        (stream_tok > 0
			                 ? K->link(K->ctx, stream_tok * K->kv_tok_bytes, K->layers)
			                 : 0);
			double tc_s = K->attn_cpu(K->ctx, ncpu, cpu_tok);
			double tc_c = K->attn_cpu(K->ctx, ncpu + 1, cpu_tok + tok);
			double with_stream = fmax(fmax(tg_s, tc_s), tl_s);
			double with_cpu = fmax(fmax(tg_c, tc_c), tl_c);
			to_stream = with_stream < with_cpu;
		}
		if (to_stream) {
			where[i] = LLM_RUN_STREAM;
			stream_tok += tok;
			nstream++;
		} else {
			where[i] = LLM_RUN_CPU;
			cpu_tok += tok;
			ncpu++;
		}
	}
	double tg = K->linear(K->ctx, ngpu + nhost + in->prefill_tokens) +
	            K->attn_gpu(K->ctx, gpu_tok + stream_tok) + in->prefill_attn_ns;
	double tc = K->attn_cpu(K->ctx, ncpu, cpu_tok);
	double tl = in->link_busy_ns +
	            K->link(K->ctx, ncpu * K->qo_req_bytes + stream_tok * K->kv_tok_bytes,
	                    (ncpu ? 2 * K->layers : 0) + (nstream ? K->layers : 0));
	/* Per layer, o of the CPU's requests comes back before their next
	 * layer: one link latency per layer that nothing hides. */
	double handoff = ncpu ? K->layers * K->link_latency_ns : 0;
	p->mode = serial ? LLM_STEP_SERIAL : LLM_STEP_OVERLAP;
	p->t_gpu_ns = tg;
	p->t_cpu_ns = tc;
	p->t_link_ns = tl;
	p->t_step_ns = serial ? fmax(tg + tc + handoff, tl) : fmax(fmax(tg, tc + handoff), tl);
	p->ngpu = ngpu;
	p->ncpu = ncpu;
	p->nstream = nstream;
	p->nskip = 0;
	p->cpu_cores = K->cores_used(K->ctx, ncpu);
	p->decoded = ngpu + nhost;
	return p->t_step_ns;
}

/* NEO's asymmetric pipelining: sub-batch a holds the GPU-resident requests
 * and the prefill, b only host-resident ones; b's CPU attention runs under
 * a's GPU work, then a's under b's linear layers. The longest host
 * requests fill b until its CPU time covers a's GPU time; the rest join a. */
static double plan_pipeline(const struct llm_step_in *in, const uint32_t *order, uint32_t nhost,
                            double gpu_tok, uint32_t ngpu, uint8_t *where, struct llm_step_plan *p)
{
	const struct llm_step_costs *K = in->costs;
	uint32_t na = ngpu, nb = 0, nca = 0;
	double ca = 0, cb = 0;
	double ga = K->linear(K->ctx, ngpu + in->prefill_tokens) + K->attn_gpu(K->ctx, gpu_tok) +
	            in->prefill_attn_ns;

	for (uint32_t k = 0; k < nhost; k++) {
		uint32_t i = order[k];
		double tok = in->req[i].kv_tokens;

		where[i] = LLM_RUN_CPU;
		if (K->attn_cpu(K->ctx, nb, cb) < ga) {
			cb += tok;
			nb++;
		} else {
			ca += tok;
			nca++;
			na++;
		}
	}
	ga = K->linear(K->ctx, na + in->prefill_tokens) + K->attn_gpu(K->ctx, gpu_tok) +
	     in->prefill_attn_ns;
	double gb = K->linear(K->ctx, nb);
	double tcb = K->attn_cpu(K->ctx, nb, cb), tca = K->attn_cpu(K->ctx, nca, ca);
	double tl = in->link_busy_ns + K->link(K->ctx, nhost * K->qo_req_bytes, 4 * K->layers);
	p->mode = LLM_STEP_PIPELINE;
	p->t_gpu_ns = ga + gb;
	p->t_cpu_ns = tca + tcb;
	p->t_link_ns = tl;
	p->t_step_ns = fmax(fmax(ga, tcb) + fmax(gb, tca), tl);
	p->ngpu = ngpu;
	p->ncpu = nhost;
	p->nstream = 0;
	p->nskip = 0;
	p->cpu_cores = K->cores_used(K->ctx, nb > nca ? nb : nca);
	p->decoded = ngpu + nhost;
	return p->t_step_ns;
}

static double plan_gpu(const struct llm_step_in *in, double gpu_tok, uint32_t ngpu, uint32_t nhost,
                       struct llm_step_plan *p)
{
	const struct llm_step_costs *K = in->costs;

	memset(p, 0, sizeof(*p));
	p->mode = LLM_STEP_GPU;
	p->t_gpu_ns = K->linear(K->ctx, ngpu + in->prefill_tokens) + K->attn_gpu(K->ctx, gpu_tok) +
	              in->prefill_attn_ns;
	p->t_link_ns = in->link_busy_ns;
	p->t_step_ns = fmax(p->t_gpu_ns, p->t_link_ns);
	p->ngpu = ngpu;
	p->nskip = nhost;
	p->decoded = ngpu;
	return p->t_step_ns;
}

/* Time per token; a step that decodes nothing (only prefill, or nothing)
 * is compared by its time alone, after every step that decodes. */
static bool better(const struct llm_step_plan *a, const struct llm_step_plan *b)
{
	if ((a->decoded > 0) != (b->decoded > 0))
		return a->decoded > 0;
	if (a->decoded == 0)
		return a->t_step_ns < b->t_step_ns;
	return a->t_step_ns * b->decoded < b->t_step_ns * a->decoded;
}

static bool costs_ok(const struct llm_step_costs *k)
{
	return k->linear && k->attn_gpu && k->attn_cpu && k->link && k->cores_used && k->layers &&
	       cost_nonneg(k->kv_tok_bytes) && cost_nonneg(k->qo_req_bytes) &&
	       cost_nonneg(k->link_latency_ns);
}

int llm_step_plan(const struct llm_step_in *in_, uint8_t *where, uint32_t *scratch,
                  struct llm_step_plan *out)
{
	if (!in_ || (!in_->costs && !in_->cost))
		return -1;
	struct llm_step_costs roof;
	struct llm_step_in local = *in_;
	const struct llm_step_in *in = &local;
	if (!local.costs) {
		llm_step_costs_roofline(in_->cost, &roof);
		local.costs = &roof;
	}
	if (!costs_ok(in->costs) || !out || in->n > LLM_STEP_MAX ||
	    (in->n && (!in->req || !where)) || (in->n && !scratch) ||
	    !cost_nonneg(in->prefill_tokens) || !cost_nonneg(in->prefill_attn_ns) ||
	    !cost_nonneg(in->link_busy_ns) || !cost_nonneg(in->stream_scratch_bytes))
		return -1;
	double gpu_tok = 0;
	uint32_t ngpu = 0, nhost = 0;

	for (uint32_t i = 0; i < in->n; i++) {
		if (!in->req[i].kv_tokens || in->req[i].tier > LLM_TIER_HOST)
			return -1;
		if (in->req[i].tier == LLM_TIER_GPU) {
			where[i] = LLM_RUN_GPU;
			gpu_tok += in->req[i].kv_tokens;
			ngpu++;
		} else {
			scratch[nhost++] = i;
		}
	}
	qsort_r(scratch, nhost, sizeof(*scratch), cmp_desc, (void *)in->req);

	struct llm_step_plan best, cand;
	plan_gpu(in, gpu_tok, ngpu, nhost, &best);
	bool have = !nhost || (in->allow & LLM_ALLOW_SKIP);
	uint8_t mode_where = LLM_RUN_SKIP; /* host requests' fate in `best` */

	if (nhost && (in->allow & LLM_FORCE_SERIAL)) {
		plan_overlap(in, scratch, nhost, gpu_tok, ngpu, true, where, &cand);
		if (!have || better(&cand, &best))
			best = cand, mode_where = 0xff, have = true;
	}
	if (nhost && (in->allow & LLM_ALLOW_PIPELINE) && !(in->allow & LLM_FORCE_SERIAL)) {
		plan_pipeline(in, scratch, nhost, gpu_tok, ngpu, where, &cand);
		if (!have || better(&cand, &best))
			best = cand, mode_where = LLM_RUN_CPU, have = true;
	}
	if (nhost && (in->allow & LLM_ALLOW_OVERLAP) && !(in->allow & LLM_FORCE_SERIAL)) {
		/* Last, so that where[] holds its choice when it wins. */
		plan_overlap(in, scratch, nhost, gpu_tok, ngpu, false, where, &cand);
		if (!have || better(&cand, &best))
			best = cand, mode_where = 0xff, have = true;
	}
	if (!have) /* only skipping was left, and it is not allowed */
		return -1;
	if (mode_where != 0xff)
		for (uint32_t k = 0; k < nhost; k++)
			where[scratch[k]] = mode_where;
	*out = best;
	return 0;
}
