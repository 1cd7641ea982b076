/* One decoder layer of a small LLaMA-shaped model through tandemd.
 *
 * Random weights (fixed seed), batch 1, a prompt whose keys and values are
 * already in the KV cache (random), then --steps decode steps. Each step is
 * one task graph over shared buffers (docs/kernels.md):
 *
 *   xn = rmsnorm(x)                   q, k, v = xn Wq, xn Wk, xn Wv   (sgemm)
 *   rope(q), rope(k) at pos           K[pos] = k, V[pos] = v   (copy into a cache slice)
 *   a = attn_decode(q, K, V, kv_len = pos + 1)            x += a Wo   (sgemm, axpy)
 *   xn2 = rmsnorm(x)                  ids, w = topk_router(xn2 Wr)
 *   y = 0, then y += expert_e(xn2) for each expert e      x += y
 *
 * Every expert gets a task, guarded by the router's choice of it
 * (tdm_graph_set_guard): the daemon skips the experts no token chose and
 * prices the others by their routed tokens. The experts accumulate into y
 * (TDM_ACC): they need not wait for one another, so they may run at once on
 * different devices, and the daemon adds their contributions in task order.
 * --serial-experts gives each expert y as TDM_RW and no guard instead (the
 * experts then run one after another, each applying the routing itself).
 * No edge is given by hand. x stays in its buffer from one step to the next. --dense
 * replaces the router and the experts by one SwiGLU MLP (moe_expert, k = 1).
 *
 * After each step the client runs the same layer with plain loops in double
 * precision on its own copy of the state (hidden state and KV cache) and
 * compares x. The relative error of an element is |got - want| / |want|,
 * except that elements below 1% of the largest are measured against that 1%
 * (rounding noise on a near-zero element means nothing); above 1e-3 fails.
 */
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tandem.h"

static const char *prog = "llm_layer";

#include "llm_common.h"
#include "llm_layer.h"

struct kernel_ref {
	const char *name;
	tdm_kernel id;
};

struct kernels {
	struct kernel_ref fill, copy, axpy, sgemm, rmsnorm, rope, attn, moe, router;
};

struct stats {
	struct dev_stat *dev;
	uint32_t ndev;
	uint32_t tasks_per_step;
	uint64_t *step_ns;
};

/* ---- options -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: llm_layer [OPTIONS]\n"
	        "Runs decode steps of one LLaMA-shaped decoder layer (random weights) through\n"
	        "tandemd, one task graph per step, and checks each step against plain loops.\n"
	        "\n"
	        "  --steps N       decode steps (default 8)\n"
	        "  --dense         one SwiGLU MLP instead of the mixture of experts\n"
	        "  --serial-experts  experts read-write y, unguarded (run one after another)\n"
	        "  --socket PATH   daemon socket (default: $TANDEM_SOCKET, then the default path)\n"
	        "  --quiet         print only errors and the result line\n"
	        "  --d-model N     hidden size (256)        --d-ff N      expert FFN size (512)\n"
	        "  --heads N       query heads (8)          --kv-heads N  key/value heads (2)\n"
	        "  --head-dim N    head size, even (32)     --experts N   experts (8)\n"
	        "  --top-k N       experts per token (2)    --prompt N    cached positions (16)\n"
	        "  --kv-cap N      KV cache positions (256)\n"
	        "  --hold-ms N     stay connected N ms after the last step, buffers kept (for\n"
	        "                  `tandemctl buffers` to show where their copies are)\n"
	        "  --stop-on-eof   stop early once standard input reaches end of file (a driver\n"
	        "                  ends a run of unknown length by closing it; --steps is the "
	        "cap)\n"
	        "  --reconnect     when tandemd is lost (restarted), reconnect with backoff,\n"
	        "                  upload the weights and the state again and redo the step\n"
	        "  --help          this text\n");
}

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "llm_layer: --%s wants an integer in %d..%d\n", opt, lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static int check_shape(struct shape *s)
{
	const char *why = NULL;

	if (s->dense) {
		s->ne = 1;
		s->topk = 1;
	}
	if (s->nh % s->nkv)
		why = "--heads must be a multiple of --kv-heads";
	else if (s->hd % 2)
		why = "--head-dim must be even";
	else if (s->topk > s->ne)
		why = "--top-k must not exceed --experts";
	else if (s->prompt + s->steps > s->kv_cap)
		why = "--prompt plus --steps must fit in --kv-cap";
	if (why)
		fprintf(stderr, "llm_layer: %s\n", why);
	return why ? -1 : 0;
}

/* Returns 0 to run, 1 after --help, -1 on a bad option. */
static int parse_args(int argc, char **argv, struct shape *s, const char **sock, bool *quiet)
{
	enum {
		O_DM = 256,
		O_NH,
		O_NKV,
		O_HD,
		O_NE,
		O_TOPK,
		O_DFF,
		O_PROMPT,
		O_KVCAP,
		O_HOLD,
		O_EOF,
		O_RECONNECT
	};
	static const struct option opts[] = {
		{ "steps", required_argument, NULL, 's' },
		{ "dense", no_argument, NULL, 'd' },
		{ "serial-experts", no_argument, NULL, 'E' },
		{ "socket", required_argument, NULL, 'S' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "d-model", required_argument, NULL, O_DM },
		{ "heads", required_argument, NULL, O_NH },
		{ "kv-heads", required_argument, NULL, O_NKV },
		{ "head-dim", required_argument, NULL, O_HD },
		{ "experts", required_argument, NULL, O_NE },
		{ "top-k", required_argument, NULL, O_TOPK },
		{ "d-ff", required_argument, NULL, O_DFF },
		{ "prompt", required_argument, NULL, O_PROMPT },
		{ "kv-cap", required_argument, NULL, O_KVCAP },
		{ "hold-ms", required_argument, NULL, O_HOLD },
		{ "stop-on-eof", no_argument, NULL, O_EOF },
		{ "reconnect", no_argument, NULL, O_RECONNECT },
		{ NULL, 0, NULL, 0 },
	};
	int c, idx, err = 0;

	while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
		const char *name = c == '?' ? "" : opts[idx].name;
		switch (c) {
		case 's': err = parse_int(name, optarg, 1, 65536, &s->steps); break;
		case 'd': s->dense = true; break;
		case 'E': s->serial_experts = true; break;
		case 'S': *sock = optarg; break;
		case 'q': *quiet = true; break;
		case 'h': usage(stdout); return 1;
		case O_DM: err = parse_int(name, optarg, 1, 65536, &s->dm); break;
		case O_NH: err = parse_int(name, optarg, 1, 65536, &s->nh); break;
		case O_NKV: err = parse_int(name, optarg, 1, 65536, &s->nkv); break;
		case O_HD: err = parse_int(name, optarg, 2, 65536, &s->hd); break;
		case O_NE: err = parse_int(name, optarg, 1, 1024, &s->ne); break;
		case O_TOPK: err = parse_int(name, optarg, 1, 1024, &s->topk); break;
		case O_DFF: err = parse_int(name, optarg, 1, 65536, &s->dff); break;
		case O_PROMPT: err = parse_int(name, optarg, 0, 65535, &s->prompt); break;
		case O_KVCAP: err = parse_int(name, optarg, 1, 65536, &s->kv_cap); break;
		case O_HOLD: err = parse_int(name, optarg, 0, 600000, &s->hold_ms); break;
		case O_EOF: s->stop_on_eof = true; break;
		case O_RECONNECT: s->reconnect = true; break;
		default: err = -1; break;
		}
		if (err) {
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "llm_layer: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	return check_shape(s);
}

/* ---- buffers -------------------------------------------------------------- */

/* The layer's buffers from the daemon (layer_alloc's ctx: the client). */
static int daemon_carver(void *ctx, size_t nfloats, uint32_t flags, struct carver *cv)
{
	return alloc_carver(ctx, nfloats, flags, cv);
}

static int lookup_kernels(tdm_client *c, bool dense, struct kernels *k)
{
	struct {
		struct kernel_ref *ref;
		const char *name;
	} tab[] = { { &k->fill, "fill" },         { &k->copy, "copy" },
		    { &k->axpy, "axpy" },         { &k->sgemm, "sgemm" },
		    { &k->rmsnorm, "rmsnorm" },   { &k->rope, "rope" },
		    { &k->attn, "attn_decode" },  { &k->moe, "moe_expert" },
		    { &k->router, "topk_router" } };

	for (size_t i = 0; i < ARRAY_LEN(tab); i++) {
		tab[i].ref->name = tab[i].name;
		if (dense && tab[i].ref == &k->router)
			continue; /* no router in a dense MLP */
		int err = tdm_kernel_lookup(c, tab[i].name, &tab[i].ref->id);
		if (err) {
			fprintf(stderr, "llm_layer: kernel %s: %s\n", tab[i].name,
			        tdm_strerror(err));
			return err;
		}
	}
	return 0;
}

/* ---- one step as a graph ---------------------------------------------------- */

struct step {
	tdm_graph *g;
	const char **names; /* kernel of each task, for error messages */
	uint32_t cap;
};

static int add_task(struct step *st, const struct kernel_ref *k, const struct tdm_arg *args,
                    uint32_t nargs, const struct tdm_scalar *sc, uint32_t nsc)
{
	struct tdm_task_desc t = { .kernel = k->id, .nargs = nargs, .nscalars = nsc };
	uint32_t n = tdm_graph_task_count(st->g);
	int err;

	memcpy(t.args, args, nargs * sizeof(*args));
	if (nsc)
		memcpy(t.scalars, sc, nsc * sizeof(*sc));
	err = tdm_graph_add_task(st->g, &t, NULL);
	if (err) {
		fprintf(stderr, "llm_layer: adding task %u (%s): %s\n", n, k->name,
		        tdm_strerror(err));
		return err;
	}
	if (n < st->cap)
		st->names[n] = k->name;
	return 0;
}

#define ADD(st, k, args, sc) add_task(st, k, args, ARRAY_LEN(args), sc, ARRAY_LEN(sc))

/* C (m x n) = A (m x kk) B (kk x n); beta 0: C's old contents do not count. */
static int add_matmul(struct step *st, const struct kernels *k, const struct slice *a,
                      const struct slice *b, const struct slice *c, int m, int n, int kk)
{
	struct tdm_arg args[] = { arg(a, TDM_R), arg(b, TDM_R), arg(c, TDM_RW) };
	struct tdm_scalar sc[] = { TDM_I64(m), TDM_I64(n), TDM_I64(kk), TDM_F32(1.0f),
		                   TDM_F32(0.0f) };

	return ADD(st, &k->sgemm, args, sc);
}

static int add_rmsnorm(struct step *st, const struct kernels *k, const struct slice *x,
                       const struct slice *w, const struct slice *y, int dim)
{
	struct tdm_arg args[] = { arg(x, TDM_R), arg(w, TDM_R), arg(y, TDM_W) };
	struct tdm_scalar sc[] = { TDM_I64(1), TDM_I64(dim), TDM_F32(RMS_EPS) };

	return ADD(st, &k->rmsnorm, args, sc);
}

static int add_rope(struct step *st, const struct kernels *k, const struct slice *x, int nheads,
                    int hd, int pos)
{
	struct tdm_arg args[] = { arg(x, TDM_RW) };
	struct tdm_scalar sc[] = { TDM_I64(1), TDM_I64(nheads), TDM_I64(hd), TDM_I64(pos),
		                   TDM_F32(ROPE_THETA) };

	return ADD(st, &k->rope, args, sc);
}

/* Writes src into the cache row of position pos. */
static int add_append(struct step *st, const struct kernels *k, const struct slice *src,
                      const struct slice *cache, int pos)
{
	struct tdm_arg args[] = { arg(src, TDM_R),
		                  TDM_ARG(cache->h, TDM_W, cache->off + (uint64_t)pos * src->len,
		                          src->len) };

	return add_task(st, &k->copy, args, ARRAY_LEN(args), NULL, 0);
}

static int add_attention(struct step *st, const struct kernels *k, const struct shape *s,
                         const struct layer *L, int pos)
{
	struct tdm_arg args[] = { arg(&L->q, TDM_R), arg(&L->kc, TDM_R), arg(&L->vc, TDM_R),
		                  arg(&L->att, TDM_W) };
	struct tdm_scalar sc[] = { TDM_I64(1),     TDM_I64(s->nh),   TDM_I64(s->nkv),
		                   TDM_I64(s->hd), TDM_I64(pos + 1), TDM_I64(s->kv_cap) };

	return ADD(st, &k->attn, args, sc);
}

static int add_axpy(struct step *st, const struct kernels *k, const struct slice *x,
                    const struct slice *y)
{
	struct tdm_arg args[] = { arg(x, TDM_R), arg(y, TDM_RW) };
	struct tdm_scalar sc[] = { TDM_F32(1.0f) };

	return ADD(st, &k->axpy, args, sc);
}

static int add_router(struct step *st, const struct kernels *k, const struct shape *s,
                      const struct layer *L)
{
	struct tdm_arg args[] = { arg(&L->logits, TDM_R), arg(&L->ids, TDM_W),
		                  arg(&L->wts, TDM_W) };
	struct tdm_scalar sc[] = { TDM_I64(1), TDM_I64(s->ne), TDM_I64(s->topk) };

	TRY(add_matmul(st, k, &L->xn2, &L->wr, &L->logits, 1, s->ne, s->dm));
	return ADD(st, &k->router, args, sc);
}

/* y = sum over the experts of their share of xn2; then x += y. router: the
 * topk_router task's index, UINT32_MAX for none (dense). */
static int add_experts(struct step *st, const struct kernels *k, const struct shape *s,
                       const struct layer *L, uint32_t router)
{
	struct tdm_arg zero[] = { arg(&L->y, TDM_W) };
	struct tdm_scalar zero_sc[] = { TDM_F32(0.0f) };
	uint32_t ymode = s->serial_experts ? TDM_RW : TDM_ACC;

	TRY(ADD(st, &k->fill, zero, zero_sc));
	for (int e = 0; e < s->ne; e++) {
		struct tdm_arg args[] = { arg(&L->xn2, TDM_R),   arg(&L->gate[e], TDM_R),
			                  arg(&L->up[e], TDM_R), arg(&L->down[e], TDM_R),
			                  arg(&L->ids, TDM_R),   arg(&L->wts, TDM_R),
			                  arg(&L->y, ymode) };
		struct tdm_scalar sc[] = { TDM_I64(1), TDM_I64(s->dm), TDM_I64(s->dff),
			                   TDM_I64(s->topk), TDM_I64(e) };
		TRY(ADD(st, &k->moe, args, sc));
		if (router != UINT32_MAX && !s->serial_experts) {
			int err = tdm_graph_set_guard(st->g, tdm_graph_task_count(st->g) - 1,
			                              router, (uint32_t)e);
			if (err) {
				fprintf(stderr, "llm_layer: guarding expert %d: %s\n", e,
				        tdm_strerror(err));
				return err;
			}
		}
	}
	return add_axpy(st, k, &L->y, &L->x);
}

static int build_step(struct step *st, const struct kernels *k, const struct shape *s,
                      const struct layer *L, int pos)
{
	int dm = s->dm, qd = qdim(s), kvd = kvdim(s);

	TRY(add_rmsnorm(st, k, &L->x, &L->attn.norm1, &L->xn, dm));
	TRY(add_matmul(st, k, &L->xn, &L->attn.wq, &L->q, 1, qd, dm));
	TRY(add_matmul(st, k, &L->xn, &L->attn.wk, &L->k, 1, kvd, dm));
	TRY(add_matmul(st, k, &L->xn, &L->attn.wv, &L->v, 1, kvd, dm));
	TRY(add_rope(st, k, &L->q, s->nh, s->hd, pos));
	TRY(add_rope(st, k, &L->k, s->nkv, s->hd, pos));
	TRY(add_append(st, k, &L->k, &L->kc, pos));
	TRY(add_append(st, k, &L->v, &L->vc, pos));
	TRY(add_attention(st, k, s, L, pos));
	TRY(add_matmul(st, k, &L->att, &L->attn.wo, &L->o, 1, dm, qd));
	TRY(add_axpy(st, k, &L->o, &L->x));
	TRY(add_rmsnorm(st, k, &L->x, &L->attn.norm2, &L->xn2, dm));
	uint32_t router = UINT32_MAX;
	if (!s->dense) {
		TRY(add_router(st, k, s, L));
		router = tdm_graph_task_count(st->g) - 1;
	}
	return add_experts(st, k, s, L, router);
}

/* ---- schedule summary ------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void print_summary(struct stats *st, int steps)
{
	printf("schedule over %d steps (%u tasks each):\n", steps, st->tasks_per_step);
	printf("  %6s %8s %12s\n", "device", "tasks", "busy ms");
	for (uint32_t d = 0; d < st->ndev; d++)
		printf("  %6u %8llu %12.3f\n", d, (unsigned long long)st->dev[d].tasks,
		       st->dev[d].busy_ns / 1e6);
	qsort(st->step_ns, (size_t)steps, sizeof(*st->step_ns), cmp_u64);
	double median = steps % 2 ? st->step_ns[steps / 2]
	                          : (st->step_ns[steps / 2 - 1] + st->step_ns[steps / 2]) / 2.0;
	printf("step latency (submit to wait return): median %.1f us, min %.1f us, max %.1f us\n",
	       median / 1e3, st->step_ns[0] / 1e3, st->step_ns[steps - 1] / 1e3);
}

/* ---- main ----------------------------------------------------------------------- */

static void report_failure(const struct step *st, int err)
{
	uint32_t task = 0, field = 0;

	fprintf(stderr, "llm_layer: step graph: %s\n", tdm_strerror(err));
	tdm_graph_reject_detail(st->g, &task, &field);
	if (field)
		fprintf(stderr, "llm_layer: rejected at task %u (%s), field %s\n", task,
		        task < st->cap && st->names[task] ? st->names[task] : "?",
		        tdm_reject_field_name(field));
}

/* Runs decode step `step`; returns 0, or non-zero after saying why. */
static int run_step(tdm_client *c, const struct kernels *k, const struct shape *s,
                    const struct layer *L, struct ref *R, struct stats *stats, int step, bool quiet,
                    double *worst)
{
	int pos = s->prompt + step;
	/* 16 tasks besides the experts. */
	struct step st = { .g = tdm_graph_new(c), .cap = 16 + (uint32_t)s->ne };
	int err;

	st.names = calloc(st.cap, sizeof(*st.names));
	if (!st.g || !st.names) {
		err = check(-TDM_ENOMEM, "graph");
		goto out;
	}
	tdm_graph_want_task_info(st.g, 1);
	err = build_step(&st, k, s, L, pos);
	if (err)
		goto out;
	stats->tasks_per_step = tdm_graph_task_count(st.g);
	uint64_t t0 = now_ns();
	err = tdm_graph_submit(st.g);
	if (!err)
		err = tdm_wait(st.g, -1);
	stats->step_ns[step] = now_ns() - t0;
	if (err) {
		report_failure(&st, err);
		goto out;
	}
	if ((err = check(record_tasks(&stats->dev, &stats->ndev, st.g), "schedule")))
		goto out;

	const int32_t *got_ids = (const int32_t *)(const void *)L->ids.p;
	bool tie;
	struct error e;
	int bad = ref_check(s, L, R, step, &e, &tie);
	*worst = fmax(*worst, e.rel);
	if (!quiet) {
		printf("step %d pos %d: %8.1f us, max abs err %.2e, max rel err %.2e", step, pos,
		       stats->step_ns[step] / 1e3, e.abs, e.rel);
		if (!s->dense) {
			printf(", experts");
			for (int j = 0; j < s->topk; j++)
				printf(" %d", got_ids[j]);
		}
		printf("%s\n", tie ? " (near tie, the daemon's order kept)" : "");
		fflush(stdout); /* a driver reading a pipe times each step */
	}
	err = bad;
out:
	tdm_graph_free(st.g);
	free(st.names);
	return err;
}

/* Whether standard input has reached end of file (what it holds is read
 * and dropped); never blocks. */
static bool stdin_at_eof(void)
{
	struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
	char buf[256];

	while (poll(&p, 1, 0) > 0) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
		if (n <= 0)
			return true;
	}
	return false;
}

/* Whether err says the daemon went away (stopped, restarting, killed). */
static bool daemon_gone(int err)
{
	return err == -TDM_EDAEMON || err == -TDM_EDISCONNECTED || err == -TDM_ESHUTDOWN ||
	       err == -TDM_ECANCELED;
}

/* After the daemon was lost: a new session, the same weights (the seed
 * again, as main filled them), and the state the reference holds, x and
 * the KV cache up to pos (what a serving engine recomputes by prefilling
 * the context again). */
static int reconnect_layer(tdm_client **c, struct kernels *k, const struct shape *s,
                           struct layer *L, const struct ref *R, int pos)
{
	static const struct tdm_backoff backoff = { .initial_ms = 5,
		                                    .max_ms = 100,
		                                    .total_ms = 60000 };
	uint64_t seed = SEED;
	size_t kvd = (size_t)kvdim(s);

	TRY(check(tdm_reconnect(c, &backoff), "reconnect"));
	free(L->gate);
	free(L->up);
	free(L->down);
	memset(L, 0, sizeof(*L));
	TRY(lookup_kernels(*c, s->dense, k));
	struct layer_alloc a = { daemon_carver, *c };
	TRY(alloc_weights(&a, s, L, &seed));
	TRY(alloc_state(&a, s, L, &seed));
	for (int i = 0; i < s->dm; i++)
		L->x.p[i] = (float)R->x[i];
	for (size_t i = 0; i < (size_t)pos * kvd; i++) {
		L->kc.p[i] = (float)R->kc[i];
		L->vc.p[i] = (float)R->vc[i];
	}
	return 0;
}

static void describe(const struct shape *s, uint32_t ndev)
{
	printf("llm_layer: d_model %d, %d heads (%d kv) of %d, ", s->dm, s->nh, s->nkv, s->hd);
	if (s->dense)
		printf("dense SwiGLU MLP d_ff %d", s->dff);
	else
		printf("MoE %d experts top-%d d_ff %d", s->ne, s->topk, s->dff);
	printf("; prompt %d, kv cap %d, %d steps; daemon has %u devices\n", s->prompt, s->kv_cap,
	       s->steps, ndev);
}

int main(int argc, char **argv)
{
	struct shape s = SHAPE_DEFAULT;
	const char *sock = NULL;
	bool quiet = false;
	int rc = parse_args(argc, argv, &s, &sock, &quiet);

	if (rc)
		return rc > 0 ? 0 : 2;

	tdm_client *c;
	struct kernels k;
	struct layer L = { 0 };
	struct ref R = { 0 };
	struct stats stats = { 0 };
	uint64_t seed = SEED;
	double worst = 0;

	if (check(tdm_connect(&(struct tdm_connect_opts){ .socket_path = sock, .spin_us = 20 }, &c),
	          "connect"))
		return 1;
	rc = 1;
	struct layer_alloc a = { daemon_carver, c };
	if (lookup_kernels(c, s.dense, &k) || alloc_weights(&a, &s, &L, &seed) ||
	    alloc_state(&a, &s, &L, &seed) || check(ref_alloc(&s, &L, &R), "reference"))
		goto out;
	/* Every device the daemon has, idle ones too; record_tasks grows it
	 * should a task report a higher index. */
	stats.ndev = tdm_device_count(c);
	stats.dev = calloc(stats.ndev ? stats.ndev : 1, sizeof(*stats.dev));
	stats.step_ns = calloc((size_t)s.steps, sizeof(*stats.step_ns));
	if (!stats.dev || !stats.step_ns) {
		check(-TDM_ENOMEM, "statistics");
		goto out;
	}
	if (!quiet)
		describe(&s, tdm_device_count(c));

	int done = 0;
	while (done < s.steps && !(s.stop_on_eof && stdin_at_eof())) {
		int err = run_step(c, &k, &s, &L, &R, &stats, done, quiet, &worst);
		if (err && s.reconnect && daemon_gone(err)) {
			if (reconnect_layer(&c, &k, &s, &L, &R, s.prompt + done))
				goto out;
			if (!quiet)
				printf("reconnected: step %d again\n", done);
			continue;
		}
		if (err)
			goto out;
		done++;
	}
	if (!quiet && done)
		print_summary(&stats, done);
	printf("result: %d steps correct (max rel err %.2e)\n", done, worst);
	fflush(stdout);
	rc = 0;
	if (s.hold_ms) {
		struct timespec ts = { s.hold_ms / 1000, (long)(s.hold_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
out:
	if (rc)
		printf("result: FAILED\n");
	tdm_disconnect(c);
	ref_free(&R);
	free(L.gate);
	free(L.up);
	free(L.down);
	free(stats.dev);
	free(stats.step_ns);
	return rc;
}
