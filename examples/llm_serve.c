/* An LLM serving client: a LLaMA-shaped model of N decoder layers served
 * through tandemd with continuous batching, requests replayed from a trace
 * in the Azure LLM inference 2023 format (docs/llm.md, "LLM serving
 * client").
 *
 * Random weights from a fixed seed; greedy decoding. Requests arrive at
 * their trace times (scaled by --time-scale), wait in a FCFS queue until
 * the batch has room (--max-batch) and their KV cache fits the budget
 * (--kv-budget: the KV-on-device-only baseline queues requests rather than
 * moving KV elsewhere), are prefilled (one graph per request), then decode
 * together, one graph per step, until each has produced its GeneratedTokens.
 *
 * A decode step graph, per layer, for the batch of B running requests:
 *
 *   xn = rmsnorm(x)          q, k, v = xn Wq, xn Wk, xn Wv   (sgemm, B rows)
 *   per request b, at its own position p:
 *     rope(q[b])  K_b[p] = k[b] (copy)  rope(K_b[p])  V_b[p] = v[b] (copy)
 *     att[b] = attn_decode(q[b], K_b, V_b, kv_len p+1)
 *   x += att Wo (sgemm, beta 1)    xn = rmsnorm(x)   x += SwiGLU(xn) (moe_expert)
 *
 * With --moe E,K[,S] (or a --model-preset) the SwiGLU becomes a mixture of
 * experts: logits_r = xn Wr (sgemm), ids, w = topk_router(logits_r), then E
 * routed experts (moe_expert, each guarded by the router so the daemon skips
 * those no row chose) and S shared ones (every row), all accumulating into x
 * (TDM_ACC).
 *
 * then logits = rmsnorm(x) Whead. Each request's KV is one TDM_BUF_KV buffer
 * per layer (K rows, then V rows), allocated at admission for its context
 * plus its output, freed when it ends: where it lives is the daemon's
 * decision. Each attention writes its own row of att: dependencies are per
 * byte range, so the attentions of one step do not depend on each other.
 * The embedding lookup is the client's: it writes x's rows before a step.
 *
 * Checking: for every --check-every'th request the client keeps the logits
 * the daemon computed for each token it generated, and after the replay runs
 * the same model over the same tokens with plain loops in double precision
 * (teacher forcing), comparing every logit row: relative error above 1e-3
 * (elements below 1% of the row's largest measured against that 1%) fails.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tandem.h"
#include "workload/llm_trace.h"

static const char *prog = "llm_serve";

#include "llm_common.h"

#define MAX_SUB 8 /* sub-batches */

#define MODEL_LINE_MAX 256 /* a model file's line, its end and a NUL */

/* ---- small helpers -------------------------------------------------------- */

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

/* Uniform in [0, n). */
static int irand(uint64_t *state, int n)
{
	return (int)((frand(state) + 1.0f) * 0.5f * (float)n) % n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of v[0..n) (sorted in place); 0 when n is 0. */
static double percentile(double *v, size_t n, double pct)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	size_t rank = (size_t)ceil(pct / 100.0 * (double)n);
	return v[rank ? rank - 1 : 0];
}

/* ---- the model's shape ------------------------------------------------------ */

/* ne routed experts (0: one dense SwiGLU MLP), top_k of them per token,
 * nshared shared experts every token runs; dff is each expert's. */
struct model {
	int layers, dm, nh, nkv, hd, dff, vocab, ne, topk, nshared;
};

/* The number of SwiGLU weight sets per layer. */
static int nexperts(const struct model *m)
{
	return m->ne ? m->ne + m->nshared : 1;
}

static int qdim(const struct model *m)
{
	return m->nh * m->hd;
}

static int kvdim(const struct model *m)
{
	return m->nkv * m->hd;
}

struct shape_key {
	const char *key, *flag;
	size_t off;
	int lo, hi;
};

static const struct shape_key shape_keys[] = {
	{ "layers", "layers", offsetof(struct model, layers), 1, 256 },
	{ "d_model", "d-model", offsetof(struct model, dm), 1, 65536 },
	{ "heads", "heads", offsetof(struct model, nh), 1, 1024 },
	{ "kv_heads", "kv-heads", offsetof(struct model, nkv), 1, 1024 },
	{ "head_dim", "head-dim", offsetof(struct model, hd), 2, 1024 },
	{ "d_ff", "d-ff", offsetof(struct model, dff), 1, 65536 },
	{ "vocab", "vocab", offsetof(struct model, vocab), 2, 65536 },
	{ "experts", "experts", offsetof(struct model, ne), 0, 1024 },
	{ "top_k", "top-k", offsetof(struct model, topk), 0, 1024 },
	{ "shared_experts", "shared-experts", offsetof(struct model, nshared), 0, 64 },
};

/* Small shapes of two MoE families (expert counts and routing as published;
 * dimensions tiny, for tests and demos). */
static const struct {
	const char *name;
	struct model m;
} presets[] = {
	{ "mixtral-tiny", { 2, 64, 4, 2, 16, 128, 128, 8, 2, 0 } },
	{ "dsv2-lite-tiny", { 2, 64, 4, 4, 16, 32, 128, 64, 6, 2 } },
};

/* A decimal integer in lo..hi and nothing else; -1 when not. */
static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;

	if (!isdigit((unsigned char)*s) && *s != '-')
		return -1;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (*end != '\0' || errno || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int set_preset(struct model *m, const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(presets); i++) {
		if (!strcmp(presets[i].name, name)) {
			*m = presets[i].m;
			return 0;
		}
	}
	fprintf(stderr, "%s: unknown --model-preset '%s' (mixtral-tiny, dsv2-lite-tiny)\n", prog,
	        name);
	return -1;
}

/* --moe E,K[,S]: experts, top_k, shared experts (0 when left out). */
static int parse_moe(const char *s, struct model *m)
{
	char buf[64], *save = NULL;
	long v[3] = { 0, 0, 0 };
	int n = 0;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == 3 || parse_int(t, n == 2 ? 0 : 1, n == 2 ? 64 : 1024, &v[n]))
			return -1;
		n++;
	}
	if (n < 2)
		return -1;
	m->ne = (int)v[0];
	m->topk = (int)v[1];
	m->nshared = (int)v[2];
	return 0;
}

static int set_shape(struct model *m, const struct shape_key *k, const char *val, const char *where)
{
	long v;

	if (parse_int(val, k->lo, k->hi, &v)) {
		fprintf(stderr, "%s: %s: %s wants an integer in %d..%d, not '%s'\n", prog, where,
		        k->key, k->lo, k->hi, val);
		return -1;
	}
	*(int *)(void *)((char *)m + k->off) = (int)v;
	return 0;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* A model file: `key = value` lines (keys as in shape_keys), `#` comments. */
static int read_model_file(const char *path, struct model *m)
{
	FILE *f = fopen(path, "r");
	char line[MODEL_LINE_MAX], where[512];
	int lineno = 0, rc = 0;

	if (!f) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	while (!rc && fgets(line, sizeof(line), f)) {
		lineno++;
		snprintf(where, sizeof(where), "%s:%d", path, lineno);
		if (!strchr(line, '\n') && !feof(f)) {
			fprintf(stderr, "%s: %s: line longer than %d bytes\n", prog, where,
			        MODEL_LINE_MAX - 2);
			rc = -1;
			break;
		}
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *s = trim(line);
		if (!*s)
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			fprintf(stderr, "%s: %s: want key = value\n", prog, where);
			rc = -1;
			break;
		}
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		size_t i;
		for (i = 0; i < ARRAY_LEN(shape_keys); i++)
			if (!strcmp(key, shape_keys[i].key))
				break;
		if (i == ARRAY_LEN(shape_keys)) {
			fprintf(stderr, "%s: %s: unknown key '%s'\n", prog, where, key);
			rc = -1;
		} else {
			rc = set_shape(m, &shape_keys[i], val, where);
		}
	}
	fclose(f);
	return rc;
}

/* ---- buffers ---------------------------------------------------------------- */

struct expert_w {
	struct slice gate, up, down; /* a SwiGLU MLP */
};

struct layer_w {
	struct attn_weights attn;
	struct slice wr; /* the router (dm x ne); MoE only */
	struct expert_w *ex; /* the ne routed experts, then the shared ones; dense: one */
};

struct weights {
	struct layer_w *L;
	struct slice normf, head;
	struct slice ids, wts; /* dense MLP, shared experts: expert 0, weight 1 */
	float *embed; /* vocab x dm, the client's own */
};

/* Activations of a decode step (max_batch rows) or of a prefill (max_ctx
 * rows). */
struct acts {
	int rows;
	struct slice x, xn, q, k, v, att, logits;
	struct slice rl, ids, wts; /* MoE only: router logits, its choices (int32), weights */
};

struct kernels {
	tdm_kernel copy, sgemm, rmsnorm, rope, attn, moe, router;
};

static int alloc_weights(tdm_client *c, const struct model *m, int max_rows, struct weights *W)
{
	size_t dm = (size_t)m->dm, qd = (size_t)qdim(m), kvd = (size_t)kvdim(m);
	size_t ff = (size_t)m->dff, V = (size_t)m->vocab;
	uint64_t seed = SEED;
	struct carver cv;

	W->L = calloc((size_t)m->layers, sizeof(*W->L));
	W->embed = malloc(V * dm * sizeof(float));
	if (!W->L || !W->embed)
		return check(-TDM_ENOMEM, "weights");
	fill_random(W->embed, V * dm, 1.0f, 0.0f, &seed);
	for (int l = 0; l < m->layers; l++) {
		struct layer_w *L = &W->L[l];
		size_t nx = (size_t)nexperts(m), ne = (size_t)m->ne;
		if (!(L->ex = calloc(nx, sizeof(*L->ex))))
			return check(-TDM_ENOMEM, "weights");
		TRY(alloc_carver(
		        c, 2 * dm + dm * (qd + 2 * kvd) + qd * dm + dm * ne + 3 * nx * dm * ff,
		        TDM_BUF_WEIGHTS, &cv));
		carve_attn_weights(&cv, dm, qd, kvd, &L->attn, &seed);
		for (size_t e = 0; e < nx; e++) {
			struct expert_w *X = &L->ex[e];
			X->gate = carve(&cv, dm * ff);
			X->up = carve(&cv, dm * ff);
			X->down = carve(&cv, ff * dm);
			fill_random(X->gate.p, dm * ff, 1.0f / sqrtf((float)dm), 0.0f, &seed);
			fill_random(X->up.p, dm * ff, 1.0f / sqrtf((float)dm), 0.0f, &seed);
			fill_random(X->down.p, ff * dm, 1.0f / sqrtf((float)ff), 0.0f, &seed);
		}
		if (ne) {
			L->wr = carve(&cv, dm * ne);
			fill_random(L->wr.p, dm * ne, 1.0f / sqrtf((float)dm), 0.0f, &seed);
		}
	}
	TRY(alloc_carver(c, dm + dm * V + 2 * (size_t)max_rows, TDM_BUF_WEIGHTS, &cv));
	W->normf = carve(&cv, dm);
	W->head = carve(&cv, dm * V);
	W->ids = carve(&cv, (size_t)max_rows); /* int32 zeros: expert 0 */
	W->wts = carve(&cv, (size_t)max_rows);
	fill_random(W->normf.p, dm, 0.1f, 1.0f, &seed);
	fill_random(W->head.p, dm * V, 1.0f / sqrtf((float)dm), 0.0f, &seed);
	for (int i = 0; i < max_rows; i++)
		W->wts.p[i] = 1.0f;
	return 0;
}

static int alloc_acts(tdm_client *c, const struct model *m, int nrows, struct acts *A)
{
	size_t n = (size_t)nrows, dm = (size_t)m->dm, qd = (size_t)qdim(m), kvd = (size_t)kvdim(m);
	const uint32_t tmp = TDM_BUF_SCRATCH;

	A->rows = nrows;
	TRY(alloc_slice(c, n * dm, 0, &A->x)); /* the client writes the embeddings */
	TRY(alloc_slice(c, n * dm, tmp, &A->xn));
	TRY(alloc_slice(c, n * qd, tmp, &A->q));
	TRY(alloc_slice(c, n * kvd, tmp, &A->k));
	TRY(alloc_slice(c, n * kvd, tmp, &A->v));
	TRY(alloc_slice(c, n * qd, tmp, &A->att));
	TRY(alloc_slice(c, n * (size_t)m->vocab, 0, &A->logits));
	if (m->ne) {
		TRY(alloc_slice(c, n * (size_t)m->ne, tmp, &A->rl));
		TRY(alloc_slice(c, n * (size_t)m->topk, tmp, &A->ids));
		TRY(alloc_slice(c, n * (size_t)m->topk, tmp, &A->wts));
	}
	return 0;
}

static int lookup_kernels(tdm_client *c, const struct model *m, struct kernels *k)
{
	struct {
		tdm_kernel *id;
		const char *name;
	} tab[] = { { &k->copy, "copy" }, { &k->sgemm, "sgemm" },      { &k->rmsnorm, "rmsnorm" },
		    { &k->rope, "rope" }, { &k->attn, "attn_decode" }, { &k->moe, "moe_expert" } };

	for (size_t i = 0; i < ARRAY_LEN(tab); i++) {
		int err = tdm_kernel_lookup(c, tab[i].name, tab[i].id);
		if (err) {
			fprintf(stderr, "%s: kernel %s: %s\n", prog, tab[i].name,
			        tdm_strerror(err));
			return err;
		}
	}
	int err = m->ne ? tdm_kernel_lookup(c, "topk_router", &k->router) : 0;
	if (err)
		fprintf(stderr, "%s: kernel topk_router: %s\n", prog, tdm_strerror(err));
	return err;
}

/* ---- requests ------------------------------------------------------------------- */

struct request {
	int id;
	double arrival_s; /* after the start of the replay */
	int ctx, gen;
	int *tokens; /* ctx prompt tokens, then the gen produced */
	int produced;
	int cap; /* KV positions: ctx + gen - 1 (the last token is never fed) */
	uint64_t kv_bytes;
	struct slice *kv; /* per layer: K rows [0, cap), then V rows */
	bool kv_waited; /* was at the head of the queue with no room for its KV */
	uint64_t t_admit, t_first, t_done; /* ns after the start */
	float *rec; /* checked requests: the daemon's logits for each output token */
};

static struct slice kv_k(const struct request *r, const struct model *m, int l)
{
	return rows(&r->kv[l], 0, r->cap, kvdim(m));
}

static struct slice kv_v(const struct request *r, const struct model *m, int l)
{
	return rows(&r->kv[l], r->cap, r->cap, kvdim(m));
}

/* ---- graphs --------------------------------------------------------------------- */

struct builder {
	tdm_graph *g;
	const struct kernels *k;
};

static int add_task(struct builder *b, tdm_kernel kern, const char *name,
                    const struct tdm_arg *args, uint32_t nargs, const struct tdm_scalar *sc,
                    uint32_t nsc)
{
	struct tdm_task_desc t = { .kernel = kern, .nargs = nargs, .nscalars = nsc };

	memcpy(t.args, args, nargs * sizeof(*args));
	if (nsc)
		memcpy(t.scalars, sc, nsc * sizeof(*sc));
	int err = tdm_graph_add_task(b->g, &t, NULL);
	if (err)
		fprintf(stderr, "%s: adding task %u (%s): %s\n", prog, tdm_graph_task_count(b->g),
		        name, tdm_strerror(err));
	return err;
}

#define ADD(b, kern, args, sc)                                                                     \
	add_task(b, (b)->k->kern, #kern, args, ARRAY_LEN(args), sc, ARRAY_LEN(sc))

/* C (m x n) = A (m x kk) B (kk x n) + beta C */
static int add_matmul(struct builder *b, const struct slice *a, const struct slice *w,
                      const struct slice *c, int m, int n, int kk, float beta)
{
	struct tdm_arg args[] = { arg(a, TDM_R), arg(w, TDM_R), arg(c, TDM_RW) };
	struct tdm_scalar sc[] = { TDM_I64(m), TDM_I64(n), TDM_I64(kk), TDM_F32(1.0f),
		                   TDM_F32(beta) };

	return ADD(b, sgemm, args, sc);
}

static int add_rmsnorm(struct builder *b, const struct slice *x, const struct slice *w,
                       const struct slice *y, int nrows, int dim)
{
	struct tdm_arg args[] = { arg(x, TDM_R), arg(w, TDM_R), arg(y, TDM_W) };
	struct tdm_scalar sc[] = { TDM_I64(nrows), TDM_I64(dim), TDM_F32(RMS_EPS) };

	return ADD(b, rmsnorm, args, sc);
}

static int add_rope(struct builder *b, const struct slice *x, int ntok, int nheads, int hd,
                    int pos0)
{
	struct tdm_arg args[] = { arg(x, TDM_RW) };
	struct tdm_scalar sc[] = { TDM_I64(ntok), TDM_I64(nheads), TDM_I64(hd), TDM_I64(pos0),
		                   TDM_F32(ROPE_THETA) };

	return ADD(b, rope, args, sc);
}

static int add_copy(struct builder *b, const struct slice *src, const struct slice *dst)
{
	struct tdm_arg args[] = { arg(src, TDM_R), arg(dst, TDM_W) };

	return add_task(b, b->k->copy, "copy", args, ARRAY_LEN(args), NULL, 0);
}

static int add_attention(struct builder *b, const struct model *m, const struct slice *q,
                         const struct slice *K, const struct slice *V, const struct slice *out,
                         int kv_len, int cap)
{
	struct tdm_arg args[] = { arg(q, TDM_R), arg(K, TDM_R), arg(V, TDM_R), arg(out, TDM_W) };
	struct tdm_scalar sc[] = { TDM_I64(1),     TDM_I64(m->nh),  TDM_I64(m->nkv),
		                   TDM_I64(m->hd), TDM_I64(kv_len), TDM_I64(cap) };

	return ADD(b, attn, args, sc);
}

/* x += SwiGLU(xn) over n rows, X's weights: moe_expert with every row routed
 * to expert 0. mode: TDM_RW, or TDM_ACC beside other experts. */
static int add_swiglu(struct builder *b, const struct model *m, const struct weights *W,
                      const struct expert_w *X, const struct slice *xn, const struct slice *x,
                      int n, uint32_t mode)
{
	struct slice ids = rows(&W->ids, 0, n, 1), wts = rows(&W->wts, 0, n, 1);
	struct tdm_arg args[] = { arg(xn, TDM_R),       arg(&X->gate, TDM_R), arg(&X->up, TDM_R),
		                  arg(&X->down, TDM_R), arg(&ids, TDM_R),     arg(&wts, TDM_R),
		                  arg(x, mode) };
	struct tdm_scalar sc[] = { TDM_I64(n), TDM_I64(m->dm), TDM_I64(m->dff), TDM_I64(1),
		                   TDM_I64(0) };

	return ADD(b, moe, args, sc);
}

/* The layer's MLP over n rows: x += SwiGLU(xn) (dense), or x += the top_k
 * routed experts' weighted outputs + the shared experts' (MoE). The routed
 * experts are guarded by the router (the daemon skips those no row chose);
 * all experts accumulate into x (TDM_ACC), so they need not wait for one
 * another. */
static int add_mlp(struct builder *b, const struct model *m, const struct weights *W,
                   const struct acts *A, const struct layer_w *L, const struct slice *xn,
                   const struct slice *x, int n)
{
	if (!m->ne)
		return add_swiglu(b, m, W, &L->ex[0], xn, x, n, TDM_RW);

	struct slice rl = rows(&A->rl, 0, n, m->ne), ids = rows(&A->ids, 0, n, m->topk);
	struct slice wts = rows(&A->wts, 0, n, m->topk);
	struct tdm_arg rargs[] = { arg(&rl, TDM_R), arg(&ids, TDM_W), arg(&wts, TDM_W) };
	struct tdm_scalar rsc[] = { TDM_I64(n), TDM_I64(m->ne), TDM_I64(m->topk) };

	TRY(add_matmul(b, xn, &L->wr, &rl, n, m->ne, m->dm, 0.0f));
	TRY(ADD(b, router, rargs, rsc));
	uint32_t router = tdm_graph_task_count(b->g) - 1;
	for (int e = 0; e < m->ne; e++) {
		const struct expert_w *X = &L->ex[e];
		struct tdm_arg args[] = { arg(xn, TDM_R),     arg(&X->gate, TDM_R),
			                  arg(&X->up, TDM_R), arg(&X->down, TDM_R),
			                  arg(&ids, TDM_R),   arg(&wts, TDM_R),
			                  arg(x, TDM_ACC) };
		struct tdm_scalar sc[] = { TDM_I64(n), TDM_I64(m->dm), TDM_I64(m->dff),
			                   TDM_I64(m->topk), TDM_I64(e) };
		TRY(ADD(b, moe, args, sc));
		int err = tdm_graph_set_guard(b->g, tdm_graph_task_count(b->g) - 1, router,
		                              (uint32_t)e);
		if (err) {
			fprintf(stderr, "%s: guarding expert %d: %s\n", prog, e, tdm_strerror(err));
			return err;
		}
	}
	for (int e = m->ne; e < m->ne + m->nshared; e++)
		TRY(add_swiglu(b, m, W, &L->ex[e], xn, x, n, TDM_ACC));
	return 0;
}

/* The prefill of one request: its ctx prompt rows already in A->x. Writes
 * the KV of positions [0, ctx) and the logits of the last one (A->logits
 * row 0). Attention is causal: one attn_decode per prompt position. */
static int build_prefill(struct builder *b, const struct model *m, const struct weights *W,
                         const struct acts *A, const struct request *r)
{
	int n = r->ctx, dm = m->dm, qd = qdim(m), kvd = kvdim(m);
	struct slice x = rows(&A->x, 0, n, dm), xn = rows(&A->xn, 0, n, dm);
	struct slice q = rows(&A->q, 0, n, qd), att = rows(&A->att, 0, n, qd);

	for (int l = 0; l < m->layers; l++) {
		const struct layer_w *L = &W->L[l];
		struct slice K = kv_k(r, m, l), V = kv_v(r, m, l);
		struct slice Kp = rows(&K, 0, n, kvd), Vp = rows(&V, 0, n, kvd);
		TRY(add_rmsnorm(b, &x, &L->attn.norm1, &xn, n, dm));
		TRY(add_matmul(b, &xn, &L->attn.wq, &q, n, qd, dm, 0.0f));
		TRY(add_matmul(b, &xn, &L->attn.wk, &Kp, n, kvd, dm, 0.0f));
		TRY(add_matmul(b, &xn, &L->attn.wv, &Vp, n, kvd, dm, 0.0f));
		TRY(add_rope(b, &q, n, m->nh, m->hd, 0));
		TRY(add_rope(b, &Kp, n, m->nkv, m->hd, 0));
		for (int t = 0; t < n; t++) {
			struct slice qt = rows(&q, t, 1, qd), at = rows(&att, t, 1, qd);
			TRY(add_attention(b, m, &qt, &K, &V, &at, t + 1, r->cap));
		}
		TRY(add_matmul(b, &att, &L->attn.wo, &x, n, dm, qd, 1.0f));
		TRY(add_rmsnorm(b, &x, &L->attn.norm2, &xn, n, dm));
		TRY(add_mlp(b, m, W, A, L, &xn, &x, n));
	}
	struct slice xl = rows(&A->x, n - 1, 1, dm), xnl = rows(&A->xn, 0, 1, dm);
	struct slice lg = rows(&A->logits, 0, 1, m->vocab);
	TRY(add_rmsnorm(b, &xl, &W->normf, &xnl, 1, dm));
	return add_matmul(b, &xnl, &W->head, &lg, 1, m->vocab, dm, 0.0f);
}

/* One decode step of the batch run[0..nb): row i's input token embedding
 * already in A->x row i; logits into A->logits row i. */
static int build_decode(struct builder *b, const struct model *m, const struct weights *W,
                        const struct acts *A, struct request *const *run, int nb)
{
	int dm = m->dm, qd = qdim(m), kvd = kvdim(m);
	struct slice x = rows(&A->x, 0, nb, dm), xn = rows(&A->xn, 0, nb, dm);
	struct slice q = rows(&A->q, 0, nb, qd), k = rows(&A->k, 0, nb, kvd);
	struct slice v = rows(&A->v, 0, nb, kvd), att = rows(&A->att, 0, nb, qd);

	for (int l = 0; l < m->layers; l++) {
		const struct layer_w *L = &W->L[l];
		TRY(add_rmsnorm(b, &x, &L->attn.norm1, &xn, nb, dm));
		TRY(add_matmul(b, &xn, &L->attn.wq, &q, nb, qd, dm, 0.0f));
		TRY(add_matmul(b, &xn, &L->attn.wk, &k, nb, kvd, dm, 0.0f));
		TRY(add_matmul(b, &xn, &L->attn.wv, &v, nb, kvd, dm, 0.0f));
		for (int i = 0; i < nb; i++) {
			const struct request *r = run[i];
			int pos = r->ctx + r->produced - 1;
			struct slice qi = rows(&q, i, 1, qd), ki = rows(&k, i, 1, kvd);
			struct slice vi = rows(&v, i, 1, kvd), ai = rows(&att, i, 1, qd);
			struct slice K = kv_k(r, m, l), V = kv_v(r, m, l);
			struct slice Kp = rows(&K, pos, 1, kvd), Vp = rows(&V, pos, 1, kvd);
			TRY(add_rope(b, &qi, 1, m->nh, m->hd, pos));
			/* The append of the new K/V row: a task, placed by the daemon. */
			TRY(add_copy(b, &ki, &Kp));
			TRY(add_rope(b, &Kp, 1, m->nkv, m->hd, pos));
			TRY(add_copy(b, &vi, &Vp));
			TRY(add_attention(b, m, &qi, &K, &V, &ai, pos + 1, r->cap));
		}
		TRY(add_matmul(b, &att, &L->attn.wo, &x, nb, dm, qd, 1.0f));
		TRY(add_rmsnorm(b, &x, &L->attn.norm2, &xn, nb, dm));
		TRY(add_mlp(b, m, W, A, L, &xn, &x, nb));
	}
	struct slice lg = rows(&A->logits, 0, nb, m->vocab);
	TRY(add_rmsnorm(b, &x, &W->normf, &xn, nb, dm));
	return add_matmul(b, &xn, &W->head, &lg, nb, m->vocab, dm, 0.0f);
}

/* ---- the reference: plain loops, double precision ---------------------------------- */

struct ref {
	const struct model *m;
	const struct weights *W;
	const float *norm1_0; /* layer 0's norm1 as the reference sees it */
	double *x, *xn, *q, *k, *v, *att, *g, *u, *scores, *logits;
	double *rl, *probs; /* MoE: router logits, probabilities */
	int *ids; /* MoE: the experts chosen */
	double *kc, *vc; /* [layers][cap][kvd] each */
};

static void ref_attention(const struct model *m, const double *q, const double *kc,
                          const double *vc, int kv_len, double *scores, double *out)
{
	int hd = m->hd, kvd = kvdim(m), group = m->nh / m->nkv;

	for (int h = 0; h < m->nh; h++) {
		const double *qh = q + (size_t)h * hd;
		size_t g = (size_t)(h / group) * hd;
		double max = -INFINITY, sum = 0;
		for (int t = 0; t < kv_len; t++) {
			double dot = 0;
			for (int d = 0; d < hd; d++)
				dot += qh[d] * kc[(size_t)t * kvd + g + d];
			scores[t] = dot / sqrt(hd);
			max = fmax(max, scores[t]);
		}
		for (int t = 0; t < kv_len; t++)
			sum += scores[t] = exp(scores[t] - max);
		for (int d = 0; d < hd; d++) {
			double acc = 0;
			for (int t = 0; t < kv_len; t++)
				acc += scores[t] * vc[(size_t)t * kvd + g + d];
			out[(size_t)h * hd + d] = acc / sum;
		}
	}
}

/* x += w * SwiGLU(xn), X's weights. */
static void ref_expert(struct ref *R, const struct expert_w *X, double w)
{
	int dm = R->m->dm, ff = R->m->dff;

	ref_swiglu_hidden(R->xn, X->gate.p, X->up.p, R->g, R->u, dm, ff);
	for (int j = 0; j < dm; j++) {
		double acc = 0;
		for (int i = 0; i < ff; i++)
			acc += R->g[i] * X->down.p[(size_t)i * dm + j];
		R->x[j] += w * acc;
	}
}

/* The layer's MLP, as add_mlp's tasks compute it. Routing: softmax of the
 * router logits, the top_k most probable (ties to the lower index, as the
 * backends' topk_router), weights renormalized over those chosen. */
static void ref_mlp(struct ref *R, const struct layer_w *L)
{
	const struct model *m = R->m;
	double sum = 0;

	if (!m->ne) {
		ref_expert(R, &L->ex[0], 1.0);
		return;
	}
	ref_matvec(R->xn, L->wr.p, R->rl, m->dm, m->ne, false);
	ref_softmax(R->rl, R->probs, m->ne);
	ref_topk(R->probs, m->ne, m->topk, R->ids);
	for (int j = 0; j < m->topk; j++)
		sum += R->probs[R->ids[j]];
	for (int j = 0; j < m->topk; j++)
		ref_expert(R, &L->ex[R->ids[j]], R->probs[R->ids[j]] / sum);
	for (int e = m->ne; e < m->ne + m->nshared; e++)
		ref_expert(R, &L->ex[e], 1.0);
}

/* The logits after token `tok` at position pos; the KV of positions below
 * pos already in R->kc, R->vc (cap positions per layer). */
static void ref_token(struct ref *R, int tok, int pos, int cap)
{
	const struct model *m = R->m;
	int dm = m->dm, qd = qdim(m), kvd = kvdim(m);

	for (int i = 0; i < dm; i++)
		R->x[i] = R->W->embed[(size_t)tok * dm + i];
	for (int l = 0; l < m->layers; l++) {
		const struct layer_w *L = &R->W->L[l];
		double *kc = R->kc + (size_t)l * cap * kvd, *vc = R->vc + (size_t)l * cap * kvd;
		ref_rmsnorm(R->x, l == 0 ? R->norm1_0 : L->attn.norm1.p, R->xn, dm);
		ref_matvec(R->xn, L->attn.wq.p, R->q, dm, qd, false);
		ref_matvec(R->xn, L->attn.wk.p, R->k, dm, kvd, false);
		ref_matvec(R->xn, L->attn.wv.p, R->v, dm, kvd, false);
		ref_rope(R->q, m->nh, m->hd, pos);
		ref_rope(R->k, m->nkv, m->hd, pos);
		memcpy(kc + (size_t)pos * kvd, R->k, (size_t)kvd * sizeof(double));
		memcpy(vc + (size_t)pos * kvd, R->v, (size_t)kvd * sizeof(double));
		ref_attention(m, R->q, kc, vc, pos + 1, R->scores, R->att);
		ref_matvec(R->att, L->attn.wo.p, R->x, qd, dm, true);
		ref_rmsnorm(R->x, L->attn.norm2.p, R->xn, dm);
		ref_mlp(R, L);
	}
	ref_rmsnorm(R->x, R->W->normf.p, R->xn, dm);
	ref_matvec(R->xn, R->W->head.p, R->logits, dm, m->vocab, false);
}

/* Runs the reference over r's tokens and compares every logit row the
 * daemon produced; returns the worst relative error (INFINITY on failure
 * to allocate). */
static double ref_check(const struct model *m, const struct weights *W, const float *norm1_0,
                        const struct request *r)
{
	size_t dm = (size_t)m->dm, qd = (size_t)qdim(m), kvd = (size_t)kvdim(m);
	size_t cache = (size_t)m->layers * (size_t)r->cap * kvd;
	size_t total = 2 * dm + 2 * qd + 2 * kvd + 2 * (size_t)m->dff + (size_t)r->cap +
	               (size_t)m->vocab + 2 * cache + 2 * (size_t)m->ne;
	double *block = calloc(total, sizeof(double)), *p = block, worst = 0;
	struct ref R = { .m = m, .W = W, .norm1_0 = norm1_0 };

	R.ids = calloc((size_t)m->topk + 1, sizeof(int));
	if (!block || !R.ids) {
		free(block);
		free(R.ids);
		return INFINITY;
	}
	double **parts[] = { &R.x, &R.xn,     &R.q,      &R.k,  &R.v,  &R.att, &R.g,
		             &R.u, &R.scores, &R.logits, &R.kc, &R.vc, &R.rl,  &R.probs };
	size_t sizes[] = { dm,
		           dm,
		           qd,
		           kvd,
		           kvd,
		           qd,
		           (size_t)m->dff,
		           (size_t)m->dff,
		           (size_t)r->cap,
		           (size_t)m->vocab,
		           cache,
		           cache,
		           (size_t)m->ne,
		           (size_t)m->ne };
	for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
		*parts[i] = p;
		p += sizes[i];
	}
	for (int pos = 0; pos < r->ctx + r->gen - 1; pos++) {
		ref_token(&R, r->tokens[pos], pos, r->cap);
		if (pos >= r->ctx - 1) {
			const float *got = r->rec + (size_t)(pos - r->ctx + 1) * (size_t)m->vocab;
			worst = fmax(worst, compare(got, R.logits, m->vocab).rel);
		}
	}
	free(block);
	free(R.ids);
	return worst;
}

/* ---- the server loop ------------------------------------------------------------------ */

struct opts {
	const char *sock, *trace, *label, *task_log;
	int max_requests, max_batch, sub_batches, check_every, max_ctx, max_gen;
	double time_scale, len_scale, duration_s, start_at;
	uint64_t kv_budget; /* bytes; 0: no limit */
	bool quiet, perturb;
};

/* A sub-batch: requests that decode together, one graph per step. With
 * several, their step graphs are in flight at once (they share nothing but
 * the weights), so each client offers the daemon more independent work. */
struct batch {
	struct acts dec;
	struct request **run;
	int nrun;
};

struct server {
	tdm_client *c;
	const struct model *m;
	const struct opts *o;
	struct kernels k;
	struct weights W;
	struct acts pre;
	struct request *req;
	int n;
	struct batch *sub;
	int nsub, sub_cap, nrun; /* nrun: in every sub-batch */
	uint64_t t0, kv_used, kv_peak, weight_bytes;
	struct dev_stat *dev;
	uint32_t ndev;
	FILE *task_log; /* --task-log: each task's queued, start, end (ns) */
	uint64_t steps, step_tasks, prefills, kv_queued, max_queue;
};

/* Waits for a submitted graph (err: the submission's result). */
static int wait_graph(struct server *S, struct builder *b, int err, const char *what)
{
	if (!err)
		err = tdm_wait(b->g, -1);
	if (err) {
		uint32_t task = 0, field = 0;
		fprintf(stderr, "%s: %s graph: %s\n", prog, what, tdm_strerror(err));
		tdm_graph_reject_detail(b->g, &task, &field);
		if (field)
			fprintf(stderr, "%s: rejected at task %u, field %s\n", prog, task,
			        tdm_reject_field_name(field));
		return err;
	}
	if (S->task_log) {
		uint32_t n = tdm_graph_task_count(b->g);
		for (uint32_t i = 0; i < n; i++) {
			const struct tdm_task_info *ti = tdm_graph_task_info(b->g, i);
			if (ti && ti->end_ns > ti->start_ns)
				fprintf(S->task_log, "%llu %llu %llu %llu\n",
				        (unsigned long long)ti->queued_ns,
				        (unsigned long long)ti->start_ns,
				        (unsigned long long)ti->end_ns,
				        (unsigned long long)ti->predicted_ns);
		}
	}
	return check(record_tasks(&S->dev, &S->ndev, b->g), "task info");
}

static int run_graph(struct server *S, struct builder *b, const char *what)
{
	return wait_graph(S, b, tdm_graph_submit(b->g), what);
}

static int argmax(const float *v, int n)
{
	int best = 0;

	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

/* Takes the logits row of r's newest token. */
static void take_token(struct server *S, struct request *r, const float *logits)
{
	int V = S->m->vocab;

	if (r->rec)
		memcpy(r->rec + (size_t)r->produced * V, logits, (size_t)V * sizeof(float));
	r->tokens[r->ctx + r->produced] = argmax(logits, V);
	r->produced++;
	if (r->produced == 1)
		r->t_first = now_ns() - S->t0;
}

static void write_embedding(const struct server *S, float *dst, int tok)
{
	memcpy(dst, S->W.embed + (size_t)tok * S->m->dm, (size_t)S->m->dm * sizeof(float));
}

static void release_kv(struct server *S, struct request *r)
{
	for (int l = 0; l < S->m->layers && r->kv; l++)
		if (r->kv[l].p)
			tdm_buffer_free(S->c, r->kv[l].h);
	free(r->kv);
	r->kv = NULL;
	S->kv_used -= r->kv_bytes;
}

static int admit(struct server *S, struct request *r)
{
	const struct model *m = S->m;
	size_t per_layer = 2 * (size_t)r->cap * (size_t)kvdim(m);

	r->t_admit = now_ns() - S->t0;
	r->kv = calloc((size_t)m->layers, sizeof(*r->kv));
	if (!r->kv)
		return check(-TDM_ENOMEM, "request");
	S->kv_used += r->kv_bytes;
	if (S->kv_used > S->kv_peak)
		S->kv_peak = S->kv_used;
	/* Every layer's KV under the request's id: the daemon moves them as
	 * one (its tier, where its attention runs). */
	for (int l = 0; l < m->layers; l++) {
		void *p;
		int err = tdm_buffer_alloc_request(S->c, per_layer * sizeof(float), TDM_BUF_KV,
		                                   (uint32_t)r->id + 1, &r->kv[l].h, &p);
		TRY(check(err, "KV buffer"));
		r->kv[l] = (struct slice){
			.h = r->kv[l].h, .off = 0, .len = per_layer * sizeof(float), .p = p
		};
	}

	for (int t = 0; t < r->ctx; t++)
		write_embedding(S, S->pre.x.p + (size_t)t * m->dm, r->tokens[t]);
	struct builder b = { .g = tdm_graph_new(S->c), .k = &S->k };
	if (!b.g)
		return check(-TDM_ENOMEM, "graph");
	tdm_graph_want_task_info(b.g, 1);
	int err = build_prefill(&b, m, &S->W, &S->pre, r);
	if (!err)
		err = run_graph(S, &b, "prefill");
	tdm_graph_free(b.g);
	if (err)
		return err;
	S->prefills++;
	take_token(S, r, S->pre.logits.p);
	struct batch *best = &S->sub[0];
	for (int i = 1; i < S->nsub; i++)
		if (S->sub[i].nrun < best->nrun)
			best = &S->sub[i];
	best->run[best->nrun++] = r;
	S->nrun++;
	return 0;
}

/* One decode step of every sub-batch: their graphs submitted together. */
static int decode_step(struct server *S)
{
	const struct model *m = S->m;
	struct builder b[MAX_SUB] = { 0 };
	int err = 0, errs[MAX_SUB] = { 0 };

	for (int s = 0; s < S->nsub && !err; s++) {
		struct batch *B = &S->sub[s];
		if (!B->nrun)
			continue;
		for (int i = 0; i < B->nrun; i++) {
			const struct request *r = B->run[i];
			write_embedding(S, B->dec.x.p + (size_t)i * m->dm,
			                r->tokens[r->ctx + r->produced - 1]);
		}
		b[s] = (struct builder){ .g = tdm_graph_new(S->c), .k = &S->k };
		if (!b[s].g) {
			err = check(-TDM_ENOMEM, "graph");
			break;
		}
		tdm_graph_want_task_info(b[s].g, 1);
		err = build_decode(&b[s], m, &S->W, &B->dec, B->run, B->nrun);
		if (!err)
			errs[s] = tdm_graph_submit(b[s].g);
	}
	for (int s = 0; s < S->nsub; s++) {
		struct batch *B = &S->sub[s];
		if (!b[s].g)
			continue;
		int e = err ? 0 : wait_graph(S, &b[s], errs[s], "decode step");
		if (!err && !e) {
			S->steps++;
			S->step_tasks += tdm_graph_task_count(b[s].g);
			for (int i = 0; i < B->nrun; i++)
				take_token(S, B->run[i], B->dec.logits.p + (size_t)i * m->vocab);
		}
		err = err ? err : e;
		/* After an error a graph may still be in flight: freeing it
		 * drops its completion, and the run ends anyway. */
		tdm_graph_free(b[s].g);
	}
	return err;
}

/* Retires the requests that have all their tokens. */
static void retire(struct server *S)
{
	for (int s = 0; s < S->nsub; s++) {
		struct batch *B = &S->sub[s];
		int j = 0;
		for (int i = 0; i < B->nrun; i++) {
			struct request *r = B->run[i];
			if (r->produced == r->gen) {
				r->t_done = now_ns() - S->t0;
				release_kv(S, r);
				S->nrun--;
			} else {
				B->run[j++] = r;
			}
		}
		B->nrun = j;
	}
}

/* The replay; 0, or an error after saying why. */
static int serve(struct server *S)
{
	const struct opts *o = S->o;
	int arrived = 0, admitted = 0;
	uint64_t end = o->duration_s > 0 ? (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;

	S->t0 = now_ns();
	for (;;) {
		uint64_t t = now_ns() - S->t0;
		if (t >= end)
			break;
		while (arrived < S->n &&
		       (uint64_t)(S->req[arrived].arrival_s * o->time_scale * 1e9) <= t)
			arrived++;
		if ((uint64_t)(arrived - admitted) > S->max_queue)
			S->max_queue = (uint64_t)(arrived - admitted);
		/* FCFS: the head of the queue goes first or nobody does. */
		while (admitted < arrived && S->nrun < o->max_batch) {
			struct request *r = &S->req[admitted];
			if (o->kv_budget && S->kv_used + r->kv_bytes > o->kv_budget) {
				if (!r->kv_waited)
					S->kv_queued++;
				r->kv_waited = true;
				break;
			}
			TRY(admit(S, r));
			admitted++;
		}
		retire(S); /* requests of one token end at their prefill */
		if (S->nrun == 0) {
			if (admitted == S->n)
				break;
			if (arrived == S->n)
				continue; /* not reached: every request fits the budget alone */
			uint64_t next = (uint64_t)(S->req[arrived].arrival_s * o->time_scale * 1e9);
			if (next > t)
				sleep_ns(next - t < end - t ? next - t : end - t);
			continue;
		}
		TRY(decode_step(S));
		retire(S);
	}
	return 0;
}

/* ---- set-up and report ---------------------------------------------------------------- */

static int build_requests(struct server *S, const struct llm_trace *t)
{
	const struct model *m = S->m;
	const struct opts *o = S->o;
	uint64_t seed = SEED ^ 0x5bd1e995u;

	int n = (int)t->n;

	S->req = calloc((size_t)n, sizeof(*S->req));
	if (!S->req)
		return check(-TDM_ENOMEM, "requests");
	S->n = n;
	for (int i = 0; i < n; i++) {
		struct request *r = &S->req[i];
		double ctx = fmax(1.0, round(t->req[i].prompt * o->len_scale));
		double gen = fmax(1.0, round(t->req[i].output * o->len_scale));
		r->id = i;
		r->arrival_s = t->req[i].arrival_ns * 1e-9;
		r->ctx = (int)fmin(ctx, (double)o->max_ctx);
		r->gen = (int)fmin(gen, (double)o->max_gen);
		r->cap = r->ctx + r->gen - 1;
		r->kv_bytes = (uint64_t)m->layers * 2 * (uint64_t)r->cap * (uint64_t)kvdim(m) *
		              sizeof(float);
		if (o->kv_budget && r->kv_bytes > o->kv_budget) {
			fprintf(stderr,
			        "%s: request %d needs %llu bytes of KV, more than --kv-budget "
			        "%llu: "
			        "raise the budget or lower --max-context/--max-gen\n",
			        prog, i, (unsigned long long)r->kv_bytes,
			        (unsigned long long)o->kv_budget);
			return -1;
		}
		r->tokens = malloc((size_t)(r->ctx + r->gen) * sizeof(int));
		if (!r->tokens)
			return check(-TDM_ENOMEM, "requests");
		for (int t = 0; t < r->ctx; t++)
			r->tokens[t] = irand(&seed, m->vocab);
		if (o->check_every && i % o->check_every == 0) {
			r->rec = malloc((size_t)r->gen * (size_t)m->vocab * sizeof(float));
			if (!r->rec)
				return check(-TDM_ENOMEM, "requests");
		}
	}
	return 0;
}

static void report(const struct server *S, const char *keys, double *worst_err, int nchecked)
{
	const struct model *m = S->m;
	int n = S->n, done = 0;
	uint64_t tokens = 0, want = 0, last = 0, busy = 0;
	double *ttft = calloc((size_t)n, sizeof(double)), *tpot = calloc((size_t)n, sizeof(double));
	double *qwait = calloc((size_t)n, sizeof(double));
	size_t nt = 0, np = 0, nq = 0;

	if (!ttft || !tpot || !qwait) {
		free(ttft);
		free(tpot);
		free(qwait);
		return;
	}
	for (int i = 0; i < n; i++) {
		const struct request *r = &S->req[i];
		uint64_t arrival = (uint64_t)(r->arrival_s * S->o->time_scale * 1e9);
		tokens += (uint64_t)r->produced;
		want += (uint64_t)r->gen;
		if (r->produced == 0)
			continue;
		ttft[nt++] = (double)(r->t_first - arrival) / 1e6;
		qwait[nq++] = (double)(r->t_admit > arrival ? r->t_admit - arrival : 0) / 1e6;
		if (r->produced == r->gen && r->t_done) {
			done++;
			last = r->t_done > last ? r->t_done : last;
			if (r->gen > 1)
				tpot[np++] = (double)(r->t_done - r->t_first) / 1e6 / (r->gen - 1);
		}
	}
	for (uint32_t d = 0; d < S->ndev; d++)
		busy += S->dev[d].busy_ns;
	double span = (double)(S->o->duration_s > 0 ? (uint64_t)(S->o->duration_s * 1e9) : last);
	double tok_s = span > 0 ? (double)tokens / (span / 1e9) : 0;

	if (!S->o->quiet) {
		printf("%s: %d layers, d_model %d, %d heads (%d kv) of %d, d_ff %d, vocab %d\n",
		       prog, m->layers, m->dm, m->nh, m->nkv, m->hd, m->dff, m->vocab);
		if (m->ne)
			printf("%s: MoE: %d experts, top-%d, %d shared (d_ff is each expert's)\n",
			       prog, m->ne, m->topk, m->nshared);
		printf("%s: %llu prefills, %llu decode steps (%.1f tasks each); device time:\n",
		       prog, (unsigned long long)S->prefills, (unsigned long long)S->steps,
		       S->steps ? (double)S->step_tasks / (double)S->steps : 0.0);
		for (uint32_t d = 0; d < S->ndev; d++)
			printf("  device %u: %llu tasks, %.1f ms\n", d,
			       (unsigned long long)S->dev[d].tasks, S->dev[d].busy_ns / 1e6);
	}
	printf("BENCH llm_serve_tok_s %.2f tok/s %s\n", tok_s, keys);
	printf("BENCH llm_ttft_p50_ms %.3f ms %s\n", percentile(ttft, nt, 50), keys);
	printf("BENCH llm_ttft_p99_ms %.3f ms %s\n", percentile(ttft, nt, 99), keys);
	printf("BENCH llm_tpot_p50_ms %.3f ms %s\n", percentile(tpot, np, 50), keys);
	printf("BENCH llm_tpot_p99_ms %.3f ms %s\n", percentile(tpot, np, 99), keys);
	printf("BENCH llm_queue_wait_p50_ms %.3f ms %s\n", percentile(qwait, nq, 50), keys);
	printf("BENCH llm_queue_wait_p99_ms %.3f ms %s\n", percentile(qwait, nq, 99), keys);
	printf("BENCH llm_kv_queued %llu requests %s max_queue=%llu\n",
	       (unsigned long long)S->kv_queued, keys, (unsigned long long)S->max_queue);
	printf("BENCH llm_device_ms %.1f ms %s\n", busy / 1e6, keys);
	printf("BENCH llm_kv_peak_mib %.2f MiB %s weights_mib=%.2f\n", S->kv_peak / 1048576.0, keys,
	       S->weight_bytes / 1048576.0);
	if (nchecked)
		printf("BENCH llm_check_max_rel_err %.3g ratio %s checked=%d\n", *worst_err, keys,
		       nchecked);
	printf("requests: %d/%d complete, %llu/%llu tokens, %d checked (max rel err %.2e)\n", done,
	       n, (unsigned long long)tokens, (unsigned long long)want, nchecked, *worst_err);
	free(ttft);
	free(tpot);
	free(qwait);
}

/* ---- options ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: llm_serve [OPTIONS]\n"
	        "Serves the requests of a trace (Azure LLM inference 2023 CSV:\n"
	        "TIMESTAMP,ContextTokens,GeneratedTokens) with a LLaMA-shaped model (random\n"
	        "weights) through tandemd: continuous batching, one task graph per prefill\n"
	        "and per decode step; reports tokens/s, TTFT and TPOT, and checks a sample of\n"
	        "requests against plain loops.\n"
	        "\n"
	        "  --trace FILE        the requests (default: a generated trace of 24)\n"
	        "  --gen-trace N       write a generated trace of N requests to stdout, exit\n"
	        "  --model FILE        model shape, `key = value` lines: layers, d_model, heads,\n"
	        "                      kv_heads, head_dim, d_ff, vocab (flags given after it win)\n"
	        "  --layers N (2)  --d-model N (128)  --heads N (4)  --kv-heads N (2)\n"
	        "  --head-dim N (32, even)  --d-ff N (256)  --vocab N (256)\n"
	        "  --moe E,K[,S]       each MLP a mixture of E experts, top-K routed per token,\n"
	        "                      plus S shared ones (model keys experts, top_k,\n"
	        "                      shared_experts; --experts --top-k --shared-experts)\n"
	        "  --model-preset NAME mixtral-tiny (8 experts, top-2) or dsv2-lite-tiny (64,\n"
	        "                      top-6, 2 shared); flags given after it win\n"
	        "  --max-requests N    the first N rows of the trace only\n"
	        "  --len-scale F       multiply the trace's lengths by F (1)\n"
	        "  --max-context N     clamp prompts to N tokens (64)\n"
	        "  --max-gen N         clamp outputs to N tokens (64)\n"
	        "  --time-scale F      multiply arrival times by F (1; 0: all at once)\n"
	        "  --max-batch N       requests decoding together (8)\n"
	        "  --sub-batches N     split them into N sub-batches whose step graphs are in\n"
	        "                      flight at once (1; at most 8)\n"
	        "  --kv-budget BYTES   KV of the running requests at most this (K/M/G suffix;\n"
	        "                      default no limit); others wait in FCFS order\n"
	        "  --check-every N     check every Nth request against the reference (1; 0 none)\n"
	        "  --duration S        stop after S seconds (for fixed-window measurements)\n"
	        "  --start-at T        wait until CLOCK_REALTIME T (seconds) before starting\n"
	        "  --keys TEXT         more `key=value` words for the BENCH lines\n"
	        "  --perturb-reference testing: the reference uses a slightly different weight,\n"
	        "                      so the check must fail\n"
	        "  --socket PATH       daemon socket (default: $TANDEM_SOCKET, then the default)\n"
	        "  --task-log FILE     write each task's queued, start and end times (ns,\n"
	        "                      CLOCK_MONOTONIC) and predicted run time to FILE\n"
	        "  --quiet             only the BENCH and result lines\n"
	        "  --help              this text\n");
}

static int parse_bytes(const char *s, uint64_t *out)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = 0;
	if (*end == 'K' || *end == 'k')
		shift = 10;
	else if (*end == 'M' || *end == 'm')
		shift = 20;
	else if (*end == 'G' || *end == 'g')
		shift = 30;
	if (shift)
		end++;
	if (*end || errno || v > (1ull << 48) >> shift)
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_real(const char *s, double lo, double hi, double *out)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* Returns 0 to run, 1 after --help or --gen-trace, -1 on a bad option. */
static int parse_args(int argc, char **argv, struct model *m, struct opts *o)
{
	enum {
		O_TRACE = 256,
		O_GEN,
		O_MODEL,
		O_MAXREQ,
		O_LENSCALE,
		O_MAXCTX,
		O_MAXGEN,
		O_TIMESCALE,
		O_BATCH,
		O_SUB,
		O_BUDGET,
		O_CHECK,
		O_DURATION,
		O_START,
		O_LABEL,
		O_PERTURB,
		O_SOCK,
		O_QUIET,
		O_TASK_LOG,
		O_HELP,
		O_MOE,
		O_PRESET,
		O_SHAPE /* + index into shape_keys */
	};
	struct option opts[] = {
		{ "trace", required_argument, NULL, O_TRACE },
		{ "gen-trace", required_argument, NULL, O_GEN },
		{ "model", required_argument, NULL, O_MODEL },
		{ "max-requests", required_argument, NULL, O_MAXREQ },
		{ "len-scale", required_argument, NULL, O_LENSCALE },
		{ "max-context", required_argument, NULL, O_MAXCTX },
		{ "max-gen", required_argument, NULL, O_MAXGEN },
		{ "time-scale", required_argument, NULL, O_TIMESCALE },
		{ "max-batch", required_argument, NULL, O_BATCH },
		{ "sub-batches", required_argument, NULL, O_SUB },
		{ "kv-budget", required_argument, NULL, O_BUDGET },
		{ "check-every", required_argument, NULL, O_CHECK },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "start-at", required_argument, NULL, O_START },
		{ "keys", required_argument, NULL, O_LABEL },
		{ "perturb-reference", no_argument, NULL, O_PERTURB },
		{ "socket", required_argument, NULL, O_SOCK },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "task-log", required_argument, NULL, O_TASK_LOG },
		{ "help", no_argument, NULL, O_HELP },
		{ "layers", required_argument, NULL, O_SHAPE + 0 },
		{ "d-model", required_argument, NULL, O_SHAPE + 1 },
		{ "heads", required_argument, NULL, O_SHAPE + 2 },
		{ "kv-heads", required_argument, NULL, O_SHAPE + 3 },
		{ "head-dim", required_argument, NULL, O_SHAPE + 4 },
		{ "d-ff", required_argument, NULL, O_SHAPE + 5 },
		{ "vocab", required_argument, NULL, O_SHAPE + 6 },
		{ "experts", required_argument, NULL, O_SHAPE + 7 },
		{ "top-k", required_argument, NULL, O_SHAPE + 8 },
		{ "shared-experts", required_argument, NULL, O_SHAPE + 9 },
		{ "moe", required_argument, NULL, O_MOE },
		{ "model-preset", required_argument, NULL, O_PRESET },
		{ NULL, 0, NULL, 0 },
	};
	int c, idx;
	long v;

	while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
		int err = 0;
		const char *name = c == '?' ? "" : opts[idx].name;
		switch (c) {
		case O_TRACE: o->trace = optarg; break;
		case O_GEN: {
			struct llm_trace t;
			char why[160];
			if (parse_int(optarg, 1, LLM_TRACE_MAX_REQS, &v)) {
				err = -1;
				break;
			}
			if (llm_trace_generate(LLM_TRACE_SMALL, (uint32_t)v, SEED, &t, why,
			                       sizeof(why))) {
				fprintf(stderr, "%s: %s\n", prog, why);
				return -1;
			}
			err = llm_trace_write(stdout, &t);
			llm_trace_free(&t);
			if (err) {
				fprintf(stderr, "%s: writing the trace: %s\n", prog,
				        strerror(errno));
				return -1;
			}
			return 1;
		}
		case O_MODEL: err = read_model_file(optarg, m); break;
		case O_MAXREQ:
			err = parse_int(optarg, 1, (long)LLM_TRACE_MAX_REQS, &v);
			o->max_requests = (int)v;
			break;
		case O_LENSCALE: err = parse_real(optarg, 1e-6, 1e6, &o->len_scale); break;
		case O_MAXCTX:
			err = parse_int(optarg, 1, 65536, &v);
			o->max_ctx = (int)v;
			break;
		case O_MAXGEN:
			err = parse_int(optarg, 1, 65536, &v);
			o->max_gen = (int)v;
			break;
		case O_TIMESCALE: err = parse_real(optarg, 0, 1e6, &o->time_scale); break;
		case O_BATCH:
			err = parse_int(optarg, 1, 1024, &v);
			o->max_batch = (int)v;
			break;
		case O_SUB:
			err = parse_int(optarg, 1, MAX_SUB, &v);
			o->sub_batches = (int)v;
			break;
		case O_BUDGET: err = parse_bytes(optarg, &o->kv_budget); break;
		case O_CHECK:
			err = parse_int(optarg, 0, (long)LLM_TRACE_MAX_REQS, &v);
			o->check_every = (int)v;
			break;
		case O_DURATION: err = parse_real(optarg, 0, 1e6, &o->duration_s); break;
		case O_START: err = parse_real(optarg, 0, 1e12, &o->start_at); break;
		case O_LABEL: o->label = optarg; break;
		case O_PERTURB: o->perturb = true; break;
		case O_SOCK: o->sock = optarg; break;
		case O_QUIET: o->quiet = true; break;
		case O_TASK_LOG: o->task_log = optarg; break;
		case O_HELP: usage(stdout); return 1;
		case O_MOE: err = parse_moe(optarg, m); break;
		case O_PRESET:
			if (set_preset(m, optarg))
				return -1;
			break;
		default:
			if (c >= O_SHAPE && c < O_SHAPE + (int)ARRAY_LEN(shape_keys)) {
				char where[64];
				snprintf(where, sizeof(where), "--%s", name);
				err = set_shape(m, &shape_keys[c - O_SHAPE], optarg, where);
				if (err)
					return -1;
			} else {
				err = -1;
			}
			break;
		}
		if (err) {
			if (c != O_MODEL && c != '?')
				fprintf(stderr, "%s: bad value for --%s: '%s'\n", prog, name,
				        optarg);
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
		return -1;
	}
	const char *why = NULL;
	if (m->nh % m->nkv)
		why = "heads must be a multiple of kv_heads";
	else if (m->hd % 2)
		why = "head_dim must be even";
	else if (m->ne && (m->topk < 1 || m->topk > m->ne))
		why = "top_k must be in 1..experts";
	else if (!m->ne && (m->topk || m->nshared))
		why = "top_k and shared_experts need experts";
	else if (o->max_ctx + o->max_gen > 65536)
		why = "--max-context plus --max-gen must not exceed 65536";
	if (why) {
		fprintf(stderr, "%s: %s\n", prog, why);
		return -1;
	}
	return 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

int main(int argc, char **argv)
{
	struct model m = {
		.layers = 2, .dm = 128, .nh = 4, .nkv = 2, .hd = 32, .dff = 256, .vocab = 256
	};
	struct opts o = { .max_batch = 8,
		          .sub_batches = 1,
		          .check_every = 1,
		          .max_ctx = 64,
		          .max_gen = 64,
		          .time_scale = 1.0,
		          .len_scale = 1.0 };
	int rc = parse_args(argc, argv, &m, &o);

	if (rc)
		return rc > 0 ? 0 : 2;

	struct llm_trace trace;
	char why[512];
	if (o.trace)
		rc = llm_trace_load(o.trace, (uint32_t)o.max_requests, &trace, why, sizeof(why));
	else /* No trace: a generated one of 24 (or --max-requests). */
		rc = llm_trace_generate(LLM_TRACE_SMALL,
		                        o.max_requests ? (uint32_t)o.max_requests : 24, SEED,
		                        &trace, why, sizeof(why));
	if (rc) {
		fprintf(stderr, "%s: trace %s\n", prog, why);
		return 2;
	}

	struct server S = { .m = &m, .o = &o };
	int max_rows = o.max_batch > o.max_ctx ? o.max_batch : o.max_ctx;
	double worst = 0;
	int nchecked = 0;
	char keys[256];

	char moe[48] = "";
	if (m.ne)
		snprintf(moe, sizeof(moe), " moe=%d,%d,%d", m.ne, m.topk, m.nshared);
	snprintf(keys, sizeof(keys), "model=%dx%d%s trace=%s requests=%u batch=%d sub=%d%s%s",
	         m.layers, m.dm, moe, o.trace ? base_name(o.trace) : "generated", trace.n,
	         o.max_batch, o.sub_batches, o.label ? " " : "", o.label ? o.label : "");
	rc = build_requests(&S, &trace) ? 2 : 0;
	llm_trace_free(&trace);
	if (rc)
		goto done;
	rc = 1;
	if (check(tdm_connect(&(struct tdm_connect_opts){ .socket_path = o.sock, .spin_us = 20 },
	                      &S.c),
	          "connect"))
		goto done;
	S.nsub = o.sub_batches;
	S.sub_cap = (o.max_batch + S.nsub - 1) / S.nsub;
	S.sub = calloc((size_t)S.nsub, sizeof(*S.sub));
	S.ndev = tdm_device_count(S.c);
	S.dev = calloc(S.ndev ? S.ndev : 1, sizeof(*S.dev));
	for (int i = 0; S.sub && i < S.nsub; i++)
		if (!(S.sub[i].run = calloc((size_t)S.sub_cap, sizeof(*S.sub[i].run))))
			S.nsub = i; /* the ones to free */
	if (!S.sub || S.nsub < o.sub_batches || !S.dev) {
		check(-TDM_ENOMEM, "server");
		goto out;
	}
	if (lookup_kernels(S.c, &m, &S.k) || alloc_weights(S.c, &m, max_rows, &S.W) ||
	    alloc_acts(S.c, &m, o.max_ctx, &S.pre))
		goto out;
	for (int i = 0; i < S.nsub; i++)
		if (alloc_acts(S.c, &m, S.sub_cap, &S.sub[i].dec))
			goto out;
	S.weight_bytes = (uint64_t)m.layers *
	                         ((uint64_t)2 * m.dm + (uint64_t)m.dm * (qdim(&m) + 2 * kvdim(&m)) +
	                          (uint64_t)qdim(&m) * m.dm + (uint64_t)m.dm * m.ne +
	                          (uint64_t)3 * nexperts(&m) * m.dm * m.dff) *
	                         sizeof(float) +
	                 ((uint64_t)m.dm + (uint64_t)m.dm * m.vocab + 2 * (uint64_t)max_rows) *
	                         sizeof(float);
	if (o.task_log && !(S.task_log = fopen(o.task_log, "w"))) {
		fprintf(stderr, "%s: %s: %s\n", prog, o.task_log, strerror(errno));
		goto out;
	}
	if (o.start_at > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		double wait = o.start_at - ((double)ts.tv_sec + ts.tv_nsec / 1e9);
		if (wait > 0)
			sleep_ns((uint64_t)(wait * 1e9));
	}
	if (serve(&S))
		goto out;

	/* The reference, after the timed part. */
	float *norm1_0 = malloc((size_t)m.dm * sizeof(float));
	if (!norm1_0) {
		check(-TDM_ENOMEM, "reference");
		goto out;
	}
	memcpy(norm1_0, S.W.L[0].attn.norm1.p, (size_t)m.dm * sizeof(float));
	if (o.perturb)
		norm1_0[0] *= 1.01f;
	bool bad = false;
	for (int i = 0; i < S.n; i++) {
		const struct request *r = &S.req[i];
		if (!r->rec || r->produced != r->gen)
			continue;
		double e = ref_check(&m, &S.W, norm1_0, r);
		nchecked++;
		worst = fmax(worst, e);
		if (!(e <= MAX_REL_ERR)) {
			fprintf(stderr,
			        "%s: request %d: logits differ from the reference: max rel "
			        "err %.2e exceeds %.0e\n",
			        prog, r->id, e, MAX_REL_ERR);
			bad = true;
		}
	}
	free(norm1_0);
	report(&S, keys, &worst, nchecked);
	bool complete = true;
	for (int i = 0; i < S.n && o.duration_s <= 0; i++)
		complete = complete && S.req[i].produced == S.req[i].gen;
	if (!complete)
		fprintf(stderr, "%s: not every request got its tokens\n", prog);
	rc = bad || !complete ? 1 : 0;
out:
	printf("result: %s\n", rc ? "FAILED" : "ok");
done:
	for (int i = 0; i < S.n; i++) {
		if (S.req[i].kv)
			release_kv(&S, &S.req[i]);
		free(S.req[i].tokens);
		free(S.req[i].rec);
	}
	tdm_disconnect(S.c);
	if (S.task_log)
		fclose(S.task_log);
	free(S.req);
	for (int i = 0; S.sub && i < S.nsub; i++)
		free(S.sub[i].run);
	free(S.sub);
	free(S.dev);
	for (int l = 0; S.W.L && l < m.layers; l++)
		free(S.W.L[l].ex);
	free(S.W.L);
	free(S.W.embed);
	return rc;
}
