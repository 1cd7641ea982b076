/* One LLaMA-shaped decoder layer with a mixture of experts, as
 * examples/llm_layer.c runs it through tandemd: its shape, its buffers
 * (random weights and state from a fixed seed) and the reference it is
 * checked against (plain loops in double precision). Shared with
 * tests/bench/moe_direct.c, which runs the same layer's kernels directly
 * in one process, so that both fill the same values and pass the same check.
 *
 * Static functions in a header: include it once per program, after
 * llm_common.h (and so after `static const char *prog`).
 */
#ifndef TANDEM_EXAMPLES_LLM_LAYER_H
#define TANDEM_EXAMPLES_LLM_LAYER_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_common.h"

/* Router probabilities closer than this may swap places in float rounding. */
#define ROUTER_TIE 1e-4

struct shape {
	int dm, nh, nkv, hd, ne, topk, dff, prompt, kv_cap, steps;
	int hold_ms; /* keep the session (and its buffers) this long at the end */
	bool stop_on_eof; /* end after the step during which stdin reached EOF */
	bool reconnect; /* on a lost daemon: reconnect, upload the state again, go on */
	bool dense;
	bool serial_experts; /* y as TDM_RW, no guards (the old way) */
};

/* The layer a run without shape options gets (llm_layer, moe_direct). */
#define SHAPE_DEFAULT                                                                              \
	{                                                                                          \
		.dm = 256, .nh = 8, .nkv = 2, .hd = 32, .ne = 8, .topk = 2, .dff = 512,            \
		.prompt = 16, .kv_cap = 256, .steps = 8                                            \
	}

static int qdim(const struct shape *s)
{
	return s->nh * s->hd;
}

static int kvdim(const struct shape *s)
{
	return s->nkv * s->hd;
}

/* Everything the daemon sees. */
struct layer {
	struct attn_weights attn; /* with wr, one WEIGHTS buffer */
	struct slice wr;
	struct slice *gate, *up, *down; /* one WEIGHTS buffer per expert */
	struct slice kc, vc; /* [kv_cap][nkv][hd] each, one KV buffer each */
	struct slice x, xn, q, k, v, att, o, xn2, logits, ids, wts, y;
};

/* The reference's own state and scratch, in double precision. */
struct ref {
	double *block; /* everything below but ids */
	double *x, *kc, *vc;
	double *xn, *q, *k, *v, *att, *o, *xn2, *logits, *probs, *y, *g, *u, *scores;
	double *w; /* topk routing weights */
	int *ids;
};

/* ---- buffers -------------------------------------------------------------- */

/* Where the layer's buffers come from: the daemon (llm_layer) or plain
 * memory (tests/bench/moe_direct.c, the same layer without a daemon). Each
 * call gives one buffer of nfloats floats as a carver. */
struct layer_alloc {
	int (*fn)(void *ctx, size_t nfloats, uint32_t flags, struct carver *cv);
	void *ctx;
};

/* A buffer of its own, as one slice. */
static int layer_slice(const struct layer_alloc *a, size_t nfloats, uint32_t flags, struct slice *s)
{
	struct carver cv;

	TRY(a->fn(a->ctx, nfloats, flags, &cv));
	*s = carve(&cv, nfloats);
	return 0;
}

/* The weights, filled from seed in a fixed order: the same values wherever
 * they are allocated. */
static int alloc_weights(const struct layer_alloc *a, const struct shape *s, struct layer *L,
                         uint64_t *seed)
{
	size_t dm = (size_t)s->dm, qd = (size_t)qdim(s), kvd = (size_t)kvdim(s);
	size_t ff = (size_t)s->dff, wr = s->dense ? 0 : dm * (size_t)s->ne;
	struct carver cv;

	TRY(a->fn(a->ctx, 2 * dm + dm * qd + 2 * dm * kvd + qd * dm + wr, TDM_BUF_WEIGHTS, &cv));
	carve_attn_weights(&cv, dm, qd, kvd, &L->attn, seed);
	if (wr) {
		L->wr = carve(&cv, wr);
		fill_random(L->wr.p, wr, 1.0f / sqrtf((float)dm), 0.0f, seed);
	}

	L->gate = calloc((size_t)s->ne, sizeof(*L->gate));
	L->up = calloc((size_t)s->ne, sizeof(*L->up));
	L->down = calloc((size_t)s->ne, sizeof(*L->down));
	if (!L->gate || !L->up || !L->down)
		return check(-TDM_ENOMEM, "experts");
	for (int e = 0; e < s->ne; e++) {
		TRY(a->fn(a->ctx, 3 * dm * ff, TDM_BUF_WEIGHTS, &cv));
		L->gate[e] = carve(&cv, dm * ff);
		L->up[e] = carve(&cv, dm * ff);
		L->down[e] = carve(&cv, ff * dm);
		fill_random(L->gate[e].p, dm * ff, 1.0f / sqrtf((float)dm), 0.0f, seed);
		fill_random(L->up[e].p, dm * ff, 1.0f / sqrtf((float)dm), 0.0f, seed);
		fill_random(L->down[e].p, ff * dm, 1.0f / sqrtf((float)ff), 0.0f, seed);
	}
	return 0;
}

static int alloc_state(const struct layer_alloc *a, const struct shape *s, struct layer *L,
                       uint64_t *seed)
{
	size_t dm = (size_t)s->dm, qd = (size_t)qdim(s), kvd = (size_t)kvdim(s);
	size_t cache = (size_t)s->kv_cap * kvd, nk = (size_t)s->topk;
	const uint32_t tmp = TDM_BUF_SCRATCH;

	TRY(layer_slice(a, cache, TDM_BUF_KV, &L->kc));
	TRY(layer_slice(a, cache, TDM_BUF_KV, &L->vc));
	/* The prompt: positions [0, prompt) hold random keys and values. */
	fill_random(L->kc.p, (size_t)s->prompt * kvd, 1.0f, 0.0f, seed);
	fill_random(L->vc.p, (size_t)s->prompt * kvd, 1.0f, 0.0f, seed);

	TRY(layer_slice(a, dm, 0, &L->x));
	fill_random(L->x.p, dm, 1.0f, 0.0f, seed);
	TRY(layer_slice(a, dm, tmp, &L->xn));
	TRY(layer_slice(a, qd, tmp, &L->q));
	TRY(layer_slice(a, kvd, tmp, &L->k));
	TRY(layer_slice(a, kvd, tmp, &L->v));
	TRY(layer_slice(a, qd, tmp, &L->att));
	TRY(layer_slice(a, dm, tmp, &L->o));
	TRY(layer_slice(a, dm, tmp, &L->xn2));
	TRY(layer_slice(a, (size_t)s->ne, tmp, &L->logits));
	/* int32, the size of a float; read back after each step, so not scratch. */
	TRY(layer_slice(a, nk, 0, &L->ids));
	TRY(layer_slice(a, nk, tmp, &L->wts));
	TRY(layer_slice(a, dm, tmp, &L->y));
	if (s->dense) {
		/* A dense MLP: every token goes to expert 0 with weight 1. */
		((int32_t *)(void *)L->ids.p)[0] = 0;
		L->wts.p[0] = 1.0f;
	}
	return 0;
}

/* ---- the reference: plain loops, double precision -------------------------------- */

static int ref_alloc(const struct shape *s, const struct layer *L, struct ref *R)
{
	size_t dm = (size_t)s->dm, qd = (size_t)qdim(s), kvd = (size_t)kvdim(s);
	size_t cache = (size_t)s->kv_cap * kvd, ne = (size_t)s->ne, ff = (size_t)s->dff;
	struct {
		double **p;
		size_t n;
	} parts[] = { { &R->x, dm },
		      { &R->xn, dm },
		      { &R->xn2, dm },
		      { &R->o, dm },
		      { &R->y, dm },
		      { &R->kc, cache },
		      { &R->vc, cache },
		      { &R->q, qd },
		      { &R->att, qd },
		      { &R->k, kvd },
		      { &R->v, kvd },
		      { &R->logits, ne },
		      { &R->probs, ne },
		      { &R->g, ff },
		      { &R->u, ff },
		      { &R->w, (size_t)s->topk },
		      { &R->scores, (size_t)s->kv_cap } };
	size_t total = 0;

	for (size_t i = 0; i < ARRAY_LEN(parts); i++)
		total += parts[i].n;
	R->block = calloc(total, sizeof(double));
	R->ids = calloc((size_t)s->topk, sizeof(*R->ids));
	if (!R->block || !R->ids)
		return -TDM_ENOMEM;
	double *p = R->block;
	for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
		*parts[i].p = p;
		p += parts[i].n;
	}
	/* The same starting point as the daemon's buffers. */
	for (size_t i = 0; i < dm; i++)
		R->x[i] = L->x.p[i];
	for (size_t i = 0; i < (size_t)s->prompt * kvd; i++) {
		R->kc[i] = L->kc.p[i];
		R->vc[i] = L->vc.p[i];
	}
	return 0;
}

static void ref_free(struct ref *R)
{
	free(R->block);
	free(R->ids);
}

static void ref_attention(const struct shape *s, struct ref *R, int kv_len)
{
	int hd = s->hd, kvd = kvdim(s), group = s->nh / s->nkv;

	for (int h = 0; h < s->nh; h++) {
		const double *q = R->q + (size_t)h * hd;
		size_t g = (size_t)(h / group) * hd;
		for (int t = 0; t < kv_len; t++) {
			double dot = 0;
			for (int d = 0; d < hd; d++)
				dot += q[d] * R->kc[(size_t)t * kvd + g + d];
			R->scores[t] = dot / sqrt(hd);
		}
		ref_softmax(R->scores, R->scores, kv_len);
		for (int d = 0; d < hd; d++) {
			double acc = 0;
			for (int t = 0; t < kv_len; t++)
				acc += R->scores[t] * R->vc[(size_t)t * kvd + g + d];
			R->att[(size_t)h * hd + d] = acc;
		}
	}
}

/* Whether the daemon's choice differs from ours only among experts whose
 * probabilities are too close for float rounding to order them. */
static bool near_tie(const double *p, const int *want, const int32_t *got, int k, int ne)
{
	for (int j = 0; j < k; j++) {
		if (got[j] < 0 || got[j] >= ne || fabs(p[got[j]] - p[want[j]]) > ROUTER_TIE)
			return false;
	}
	return true;
}

/* Routing for the reference: its own, unless the daemon broke a near tie the
 * other way (then the daemon's, so that one rounding does not fail the run).
 * Returns false when the choices differ for real. */
static bool ref_route(const struct shape *s, struct ref *R, const int32_t *got, bool *tie)
{
	int k = s->topk;
	double sum = 0;
	bool same = true;

	*tie = false;
	if (s->dense) {
		R->ids[0] = 0;
		R->w[0] = 1.0;
		return true;
	}
	ref_softmax(R->logits, R->probs, s->ne);
	ref_topk(R->probs, s->ne, k, R->ids);
	for (int j = 0; j < k; j++)
		same = same && R->ids[j] == got[j];
	if (!same && near_tie(R->probs, R->ids, got, k, s->ne)) {
		for (int j = 0; j < k; j++)
			R->ids[j] = got[j];
		*tie = same = true;
	}
	for (int j = 0; j < k; j++)
		sum += R->probs[R->ids[j]];
	for (int j = 0; j < k; j++)
		R->w[j] = R->probs[R->ids[j]] / sum;
	return same;
}

/* y += r * (silu(x Wg) * (x Wu)) Wd */
static void ref_expert(const struct shape *s, const struct layer *L, struct ref *R, int e, double r)
{
	int dm = s->dm, ff = s->dff;

	ref_swiglu_hidden(R->xn2, L->gate[e].p, L->up[e].p, R->g, R->u, dm, ff);
	for (int j = 0; j < dm; j++) {
		double acc = 0;
		for (int i = 0; i < ff; i++)
			acc += R->g[i] * L->down[e].p[(size_t)i * dm + j];
		R->y[j] += r * acc;
	}
}

/* One step of the layer on the reference's state. got_ids: the daemon's
 * routing of this step. Returns false when the routing differs. */
static bool ref_step(const struct shape *s, const struct layer *L, struct ref *R, int pos,
                     const int32_t *got_ids, bool *tie)
{
	int dm = s->dm, qd = qdim(s), kvd = kvdim(s);
	bool same;

	ref_rmsnorm(R->x, L->attn.norm1.p, R->xn, dm);
	ref_matvec(R->xn, L->attn.wq.p, R->q, dm, qd, false);
	ref_matvec(R->xn, L->attn.wk.p, R->k, dm, kvd, false);
	ref_matvec(R->xn, L->attn.wv.p, R->v, dm, kvd, false);
	ref_rope(R->q, s->nh, s->hd, pos);
	ref_rope(R->k, s->nkv, s->hd, pos);
	memcpy(R->kc + (size_t)pos * kvd, R->k, (size_t)kvd * sizeof(double));
	memcpy(R->vc + (size_t)pos * kvd, R->v, (size_t)kvd * sizeof(double));
	ref_attention(s, R, pos + 1);
	ref_matvec(R->att, L->attn.wo.p, R->o, qd, dm, false);
	for (int i = 0; i < dm; i++)
		R->x[i] += R->o[i];

	ref_rmsnorm(R->x, L->attn.norm2.p, R->xn2, dm);
	if (!s->dense)
		ref_matvec(R->xn2, L->wr.p, R->logits, dm, s->ne, false);
	same = ref_route(s, R, got_ids, tie);
	for (int i = 0; i < dm; i++)
		R->y[i] = 0;
	for (int j = 0; j < s->topk; j++)
		ref_expert(s, L, R, R->ids[j], R->w[j]);
	for (int i = 0; i < dm; i++)
		R->x[i] += R->y[i];
	return same;
}

/* The check after a step: the reference runs step `step` (its position:
 * prompt + step) on its own state with the routing the step chose (in
 * L->ids), and x is compared with it (*e). Returns 0, or 1 after saying
 * why: other experts picked, or an error above MAX_REL_ERR. */
static int ref_check(const struct shape *s, const struct layer *L, struct ref *R, int step,
                     struct error *e, bool *tie)
{
	const int32_t *got_ids = (const int32_t *)(const void *)L->ids.p;
	bool same = ref_step(s, L, R, s->prompt + step, got_ids, tie);
	int bad = 0;

	*e = compare(L->x.p, R->x, s->dm);
	if (!same) {
		fprintf(stderr, "%s: step %d: the router picked other experts:", prog, step);
		for (int j = 0; j < s->topk; j++)
			fprintf(stderr, " %d (want %d)", got_ids[j], R->ids[j]);
		fprintf(stderr, "\n");
		bad = 1;
	}
	if (!(e->rel <= MAX_REL_ERR)) {
		fprintf(stderr, "%s: step %d: max rel err %.2e exceeds %.0e\n", prog, step, e->rel,
		        MAX_REL_ERR);
		bad = 1;
	}
	return bad;
}

#endif
