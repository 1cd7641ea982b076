/* MoE routing traces: the reader and the generator (moe_trace.h). */
#include "workload/moe_trace.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/splitmix.h"
#include "workload/workload.h"
#include "tandem.h"

void moe_trace_free(struct moe_trace *t)
{
	if (!t)
		return;
	free(t->ids);
	free(t->w);
	memset(t, 0, sizeof(*t));
}

/* A whole number of at most 9 digits in [s, s + n). */
static bool number(const char *s, size_t n, uint32_t *v)
{
	*v = 0;
	return n >= 1 && n <= 9 && wl_digits(s, n, v);
}

/* A decimal weight in [0, 1]: digits, '.', an exponent; nothing else
 * (no "nan", "inf", hex or spaces). */
static bool weight(const char *s, size_t n, float *v)
{
	char buf[32];
	char *end;

	if (n == 0 || n >= sizeof(buf))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("0123456789.eE+-", s[i]))
			return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	double d = strtod(buf, &end);
	if (end != buf + n || !isfinite(d) || d < 0 || d > 1)
		return false;
	*v = (float)d;
	return true;
}

/* "moe-trace v1 layers=L experts=E topk=K" */
static const char *parse_shape(const char *s, size_t n, struct moe_trace *t)
{
	static const char magic[] = "moe-trace v1 ";
	const char *keys[3] = { "layers=", "experts=", "topk=" };
	uint32_t *dst[3] = { &t->layers, &t->experts, &t->topk };
	size_t pos = sizeof(magic) - 1;

	if (n < pos || memcmp(s, magic, pos))
		return "expected 'moe-trace v1 layers=L experts=E topk=K'";
	for (int k = 0; k < 3; k++) {
		size_t kl = strlen(keys[k]);
		const char *sp = memchr(s + pos, ' ', n - pos);
		size_t end = sp ? (size_t)(sp - s) : n;
		if (end - pos < kl || memcmp(s + pos, keys[k], kl) ||
		    !number(s + pos + kl, end - pos - kl, dst[k]))
			return "expected 'moe-trace v1 layers=L experts=E topk=K'";
		pos = end + (sp ? 1 : 0);
		if ((k < 2) != (sp != NULL))
			return "expected 'moe-trace v1 layers=L experts=E topk=K'";
	}
	if (t->layers < 1 || t->layers > MOE_TRACE_MAX_LAYERS)
		return "layers out of range (1 to 256)";
	if (t->experts < 1 || t->experts > MOE_TRACE_MAX_EXPERTS)
		return "experts out of range (1 to 1024)";
	if (t->topk < 1 || t->topk > MOE_TRACE_MAX_TOPK || t->topk > t->experts)
		return "topk out of range (1 to 16, at most experts)";
	return NULL;
}

/* One data line: token,layer,ids,weights. */
static const char *parse_row(const char *s, size_t n, const struct moe_trace *t, uint32_t want_tok,
                             uint32_t want_layer, uint16_t *ids, float *w)
{
	const char *f[4];
	size_t fl[4];
	size_t start = 0;

	for (int k = 0; k < 4; k++) {
		const char *c = k < 3 ? memchr(s + start, ',', n - start) : NULL;
		size_t end = c ? (size_t)(c - s) : n;
		if (k < 3 && !c)
			return "expected four fields: token,layer,experts,weights";
		f[k] = s + start;
		fl[k] = end - start;
		start = end + 1;
	}
	if (memchr(f[3], ',', fl[3]))
		return "expected four fields: token,layer,experts,weights";
	uint32_t tok, layer;
	if (!number(f[0], fl[0], &tok))
		return "token: expected a whole number";
	if (tok != want_tok)
		return "token: tokens go from 0 in order, each with every layer";
	if (!number(f[1], fl[1], &layer))
		return "layer: expected a whole number";
	if (layer != want_layer)
		return "layer: each token lists its layers from 0 in order";
	for (int which = 0; which < 2; which++) {
		const char *p = f[2 + which];
		size_t left = fl[2 + which];
		uint32_t k = 0;
		for (;;) {
			const char *semi = memchr(p, ';', left);
			size_t len = semi ? (size_t)(semi - p) : left;
			if (k == t->topk)
				return which ? "weights: more than topk"
				             : "experts: more than topk";
			if (which == 0) {
				uint32_t id;
				if (!number(p, len, &id) || id >= t->experts)
					return "experts: expected ids below the experts count";
				for (uint32_t j = 0; j < k; j++)
					if (ids[j] == id)
						return "experts: an expert twice in one row";
				ids[k] = (uint16_t)id;
			} else if (!weight(p, len, &w[k])) {
				return "weights: expected numbers in [0, 1]";
			}
			k++;
			if (!semi)
				break;
			p = semi + 1;
			left -= len + 1;
		}
		if (k != t->topk)
			return which ? "weights: fewer than topk" : "experts: fewer than topk";
	}
	return NULL;
}

int moe_trace_parse(const char *text, size_t len, const char *name, uint32_t max_tokens,
                    struct moe_trace *out, char *err, size_t errlen)
{
	static const char header[] = "token,layer,experts,weights";
	struct moe_trace t;
	uint32_t cap = 0, tok = 0, layer = 0;
	size_t line = 0, pos = 0, data_lines = 0;
	int rc = 0;
	const char *why;

	memset(&t, 0, sizeof(t));
	memset(out, 0, sizeof(*out));
	name = name ? name : "moe-trace";
	if (err && errlen)
		err[0] = '\0';
	if (len > MOE_TRACE_MAX_INPUT)
		return wl_fail_at(err, errlen, name, 0, "more than %zu bytes", MOE_TRACE_MAX_INPUT);
	while (pos < len && (!max_tokens || tok < max_tokens)) {
		size_t n;
		const char *s = wl_next_line(text, len, &pos, &n);

		line++;
		if (memchr(s, '\0', n) || memchr(s, '\r', n)) {
			rc = wl_fail_at(err, errlen, name, line, "a NUL or a stray CR in the line");
			goto out;
		}
		if (n && s[0] == '#')
			continue;
		if (n == 0) {
			if (pos >= len)
				break;
			rc = wl_fail_at(err, errlen, name, line, "an empty line");
			goto out;
		}
		if (!t.layers) {
			if ((why = parse_shape(s, n, &t))) {
				rc = wl_fail_at(err, errlen, name, line, "%s", why);
				goto out;
			}
			continue;
		}
		if (data_lines++ == 0) {
			if (n != sizeof(header) - 1 || memcmp(s, header, n)) {
				rc = wl_fail_at(err, errlen, name, line, "expected the header %s",
				                header);
				goto out;
			}
			continue;
		}
		if (layer == 0 && tok == cap) {
			uint32_t limit = MOE_TRACE_MAX_ENTRIES / (t.layers * t.topk);
			uint32_t old = cap;
			void *w = t.w;
			if (tok >= limit) {
				rc = wl_fail_at(err, errlen, name, line, "more than %u tokens",
				                limit);
				goto out;
			}
			if (wl_grow((void **)&t.ids, &cap, tok + 1, (size_t)t.layers * t.topk * 2,
			            limit) ||
			    wl_grow(&w, &old, tok + 1, (size_t)t.layers * t.topk * 4, limit)) {
				t.w = w;
				rc = -TDM_ENOMEM;
				if (err && errlen)
					snprintf(err, errlen, "%s: out of memory", name);
				goto out;
			}
			t.w = w;
		}
		size_t at = ((size_t)tok * t.layers + layer) * t.topk;
		if ((why = parse_row(s, n, &t, tok, layer, t.ids + at, t.w + at))) {
			rc = wl_fail_at(err, errlen, name, line, "%s", why);
			goto out;
		}
		if (++layer == t.layers) {
			layer = 0;
			tok++;
		}
	}
	if (!t.layers) {
		rc = wl_fail_at(err, errlen, name, line ? line : 1,
		                "empty: expected 'moe-trace v1 layers=L experts=E topk=K'");
		goto out;
	}
	if (layer != 0) {
		rc = wl_fail_at(err, errlen, name, line, "token %u stops at layer %u of %u", tok,
		                layer, t.layers);
		goto out;
	}
	if (tok == 0) {
		rc = wl_fail_at(err, errlen, name, line, "no tokens");
		goto out;
	}
	t.tokens = tok;
	*out = t;
	return 0;
out:
	moe_trace_free(&t);
	return rc;
}

int moe_trace_load(const char *path, uint32_t max_tokens, struct moe_trace *out, char *err,
                   size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = wl_read_file(path, MOE_TRACE_MAX_INPUT, &buf, &len, err, errlen);
	if (rc)
		return rc;
	rc = moe_trace_parse(buf, len, path, max_tokens, out, err, errlen);
	free(buf);
	return rc;
}

int moe_trace_write(FILE *out, const struct moe_trace *t)
{
	fprintf(out, "moe-trace v1 layers=%u experts=%u topk=%u\ntoken,layer,experts,weights\n",
	        t->layers, t->experts, t->topk);
	for (uint32_t i = 0; i < t->tokens; i++)
		for (uint32_t l = 0; l < t->layers; l++) {
			const uint16_t *ids = moe_trace_ids(t, i, l);
			const float *w = moe_trace_w(t, i, l);
			fprintf(out, "%u,%u,", i, l);
			for (uint32_t k = 0; k < t->topk; k++)
				fprintf(out, "%s%u", k ? ";" : "", ids[k]);
			fputc(',', out);
			for (uint32_t k = 0; k < t->topk; k++)
				fprintf(out, "%s%.6g", k ? ";" : "", w[k]);
			fputc('\n', out);
		}
	return fflush(out) || ferror(out) ? -TDM_ESYS : 0;
}

/* ---- the generator ---- */

int moe_trace_shape_by_name(const char *name, uint32_t layers, struct moe_trace_shape *out)
{
	/* Calibration (docs/llm.md): Mixtral's routing is close to flat over 8
	 * experts, with consecutive tokens choosing the same expert well above
	 * chance (Mixtral of Experts, arXiv 2401.04088, section 5); Qwen-MoE's
	 * is near uniform (5.88 of 6 bits at layer 0, as the issue cites);
	 * DeepSeek-style fine-grained experts are skewed, more so in deeper
	 * layers, with little adjacent-token reuse once shared experts take the
	 * common part (Liang et al., arXiv 2505.16056). */
	if (!strcmp(name, "mixtral"))
		*out = (struct moe_trace_shape){ layers, 8, 2, 0.3, 0.5, 0.35, 0x8a7b };
	else if (!strcmp(name, "qwen"))
		*out = (struct moe_trace_shape){ layers, 60, 4, 0.12, 0.5, 0.1, 0x2a7b };
	else if (!strcmp(name, "dsv2"))
		*out = (struct moe_trace_shape){ layers, 64, 6, 0.7, 1.1, 0.15, 0xd5f2 };
	else
		return -1;
	return layers ? 0 : -1;
}

int moe_trace_generate(const struct moe_trace_shape *sh, uint32_t tokens, uint32_t streams,
                       uint64_t seed, struct moe_trace *out, char *err, size_t errlen)
{
	const uint32_t L = sh->layers, E = sh->experts, K = sh->topk;
	uint64_t s = seed;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (!L || L > MOE_TRACE_MAX_LAYERS || !E || E > MOE_TRACE_MAX_EXPERTS || !K ||
	    K > MOE_TRACE_MAX_TOPK || K > E || !tokens || !streams ||
	    (uint64_t)tokens * streams * L * K > MOE_TRACE_MAX_ENTRIES ||
	    !(sh->reuse >= 0 && sh->reuse <= 1) || !(sh->zipf_first >= 0) ||
	    !(sh->zipf_last >= 0)) {
		snprintf(err, errlen, "moe trace generator: shape or size out of range");
		return -TDM_EINVAL;
	}
	uint32_t n = tokens * streams;
	out->ids = malloc((size_t)n * L * K * sizeof(*out->ids));
	out->w = malloc((size_t)n * L * K * sizeof(*out->w));
	double *cdf = malloc((size_t)L * E * sizeof(double));
	uint16_t *perm = malloc((size_t)L * E * sizeof(uint16_t));
	double *pick = malloc(E * sizeof(double));
	if (!out->ids || !out->w || !cdf || !perm || !pick) {
		snprintf(err, errlen, "moe trace generator: out of memory");
		rc = -TDM_ENOMEM;
		goto out;
	}
	/* Per layer: which expert is the r-th most popular (a permutation of
	 * the model's), and the Zipf weights 1 / (r + 1)^a, a from zipf_first
	 * to zipf_last. */
	uint64_t ps = sh->popularity_seed;
	for (uint32_t l = 0; l < L; l++) {
		double a = sh->zipf_first +
		           (L > 1 ? (sh->zipf_last - sh->zipf_first) * l / (L - 1) : 0);
		uint16_t *p = perm + (size_t)l * E;
		for (uint32_t e = 0; e < E; e++)
			p[e] = (uint16_t)e;
		for (uint32_t e = E - 1; e > 0; e--) {
			uint32_t j = (uint32_t)(splitmix64(&ps) % (e + 1));
			uint16_t x = p[e];
			p[e] = p[j];
			p[j] = x;
		}
		for (uint32_t r = 0; r < E; r++)
			cdf[(size_t)l * E + p[r]] = pow(r + 1.0, -a);
	}
	out->layers = L;
	out->experts = E;
	out->topk = K;
	out->tokens = n;
	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t l = 0; l < L; l++) {
			uint16_t *ids = out->ids + ((size_t)i * L + l) * K;
			float *w = out->w + ((size_t)i * L + l) * K;
			const uint16_t *prev =
			        i >= streams ? out->ids + ((size_t)(i - streams) * L + l) * K
			                     : NULL;
			uint32_t k = 0;
			double total = 0;
			/* Temporal locality: keep each of the previous token's
			 * experts with probability reuse. */
			for (uint32_t j = 0; prev && j < K; j++)
				if (splitmix_unit(&s) < sh->reuse)
					ids[k++] = prev[j];
			memcpy(pick, cdf + (size_t)l * E, E * sizeof(double));
			for (uint32_t j = 0; j < k; j++)
				pick[ids[j]] = 0;
			for (uint32_t e = 0; e < E; e++)
				total += pick[e];
			/* The rest by the layer's skew, without replacement. */
			while (k < K) {
				double u = splitmix_unit(&s) * total, acc = 0;
				uint32_t e = 0;
				for (; e + 1 < E; e++) {
					acc += pick[e];
					if (u < acc && pick[e] > 0)
						break;
				}
				while (pick[e] == 0) /* rounding at the top end */
					e = (e + E - 1) % E;
				ids[k++] = (uint16_t)e;
				total -= pick[e];
				pick[e] = 0;
			}
			/* Weights: decreasing softmax-like shares summing to 1. */
			double sum = 0;
			for (uint32_t j = 0; j < K; j++) {
				w[j] = (float)exp(-1.5 * splitmix_unit(&s) - 0.3 * j);
				sum += w[j];
			}
			for (uint32_t j = 0; j < K; j++)
				w[j] = (float)(w[j] / sum);
		}
	}
out:
	free(cdf);
	free(perm);
	free(pick);
	if (rc)
		moe_trace_free(out);
	return rc;
}

double moe_trace_entropy(const struct moe_trace *t, uint32_t layer)
{
	double h = 0, total = (double)t->tokens * t->topk;
	uint32_t *count = calloc(t->experts, sizeof(*count));

	if (!count || layer >= t->layers || !t->tokens) {
		free(count);
		return 0;
	}
	for (uint32_t i = 0; i < t->tokens; i++) {
		const uint16_t *ids = moe_trace_ids(t, i, layer);
		for (uint32_t k = 0; k < t->topk; k++)
			count[ids[k]]++;
	}
	for (uint32_t e = 0; e < t->experts; e++)
		if (count[e])
			h -= count[e] / total * log2(count[e] / total);
	free(count);
	return h;
}
