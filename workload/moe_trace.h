/* Mixture-of-experts routing traces: which experts each token's router
 * chose at each MoE layer, and with what weights.
 *
 *   moe-trace v1 layers=24 experts=60 topk=4
 *   token,layer,experts,weights
 *   0,0,12;3;40;7,0.41;0.27;0.19;0.13
 *   0,1,...
 *
 * The first line gives the shape; the second is the column header; then
 * one line per (token, layer): tokens from 0 in order, and for each token
 * every MoE layer from 0 in order (a complete grid), topk distinct expert
 * ids below `experts` separated by ';', and as many weights, each finite
 * and in [0, 1]. Lines starting with '#' are comments. Lines end in LF or
 * CRLF. What vLLM's --enable-return-routed-experts or llama.cpp's moe
 * trace example record converts to this with one line per row.
 *
 * Input is untrusted: every field is checked; errors are one line,
 * "NAME:LINE: message".
 *
 * Also a generator calibrated to published routing properties (docs/llm.md,
 * "MoE routing traces"): Zipf-like skew per layer over a per-layer
 * permutation of the experts, temporal locality (a token keeps each of the
 * previous token's experts with probability `reuse`), top-k. */
#ifndef TDM_WORKLOAD_MOE_TRACE_H
#define TDM_WORKLOAD_MOE_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MOE_TRACE_MAX_LAYERS 256u
#define MOE_TRACE_MAX_EXPERTS 1024u
#define MOE_TRACE_MAX_TOPK 16u
#define MOE_TRACE_MAX_ENTRIES (64u << 20) /* tokens x layers x topk */
#define MOE_TRACE_MAX_INPUT ((size_t)1 << 30)

struct moe_trace {
	uint32_t layers, experts, topk, tokens;
	uint16_t *ids; /* [tokens][layers][topk], malloc'd */
	float *w; /* same shape */
};

static inline const uint16_t *moe_trace_ids(const struct moe_trace *t, uint32_t tok, uint32_t l)
{
	return t->ids + ((size_t)tok * t->layers + l) * t->topk;
}

static inline const float *moe_trace_w(const struct moe_trace *t, uint32_t tok, uint32_t l)
{
	return t->w + ((size_t)tok * t->layers + l) * t->topk;
}

void moe_trace_free(struct moe_trace *t); /* leaves it empty; NULL is fine */

/* 0, -TDM_EINVAL (err: "NAME:LINE: message") or -TDM_ENOMEM; on error *out
 * is empty. max_tokens (0: all) stops after that many complete tokens. */
int moe_trace_parse(const char *text, size_t len, const char *name, uint32_t max_tokens,
                    struct moe_trace *out, char *err, size_t errlen);
int moe_trace_load(const char *path, uint32_t max_tokens, struct moe_trace *out, char *err,
                   size_t errlen);

/* Writes t in the format above (weights with 6 significant digits). 0, or
 * -TDM_ESYS when the stream fails. */
int moe_trace_write(FILE *out, const struct moe_trace *t);

/* The generator's knobs. */
struct moe_trace_shape {
	uint32_t layers, experts, topk;
	double zipf_first, zipf_last; /* Zipf exponent at layer 0 and at the last layer */
	double reuse; /* P(a token keeps each of the previous token's experts) */
	/* Which experts are popular in each layer is the model's, not the
	 * text's: traces of one shape with different seeds share it. */
	uint64_t popularity_seed;
};

/* Published routing shapes, by name: "mixtral" (8 experts top-2, flat,
 * adjacent-token reuse), "qwen" (60 top-4, near-uniform: about 5.88 bits
 * at layer 0), "dsv2" (64 top-6, skewed). 0 or -1. */
int moe_trace_shape_by_name(const char *name, uint32_t layers, struct moe_trace_shape *out);

/* `streams` independent sequences of `tokens` tokens each, interleaved
 * (token i of stream s is trace token i * streams + s): a decode batch of
 * `streams` requests. Deterministic in seed. 0, -TDM_EINVAL or
 * -TDM_ENOMEM. */
int moe_trace_generate(const struct moe_trace_shape *s, uint32_t tokens, uint32_t streams,
                       uint64_t seed, struct moe_trace *out, char *err, size_t errlen);

/* Entropy in bits of the experts' selection frequencies at one layer. */
double moe_trace_entropy(const struct moe_trace *t, uint32_t layer);

#endif
