/* Azure LLM inference traces: the reader and the generators (llm_trace.h). */
#include "workload/llm_trace.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/splitmix.h"
#include "workload/workload.h"
#include "tandem.h"

void llm_trace_free(struct llm_trace *t)
{
	if (!t)
		return;
	free(t->req);
	t->req = NULL;
	t->n = 0;
}

static bool leap(uint32_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days since 1970-01-01 of a valid date (y >= 1970). */
static int64_t days_since_epoch(uint32_t y, uint32_t m, uint32_t d)
{
	static const uint16_t before[12] = {
		0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334
	};
	int64_t days = 0;

	for (uint32_t k = 1970; k < y; k++)
		days += leap(k) ? 366 : 365;
	days += before[m - 1] + (m > 2 && leap(y)) + (d - 1);
	return days;
}

/* A time as seconds and nanoseconds: ns since 1970 as one double would be
 * off by up to 256 ns. */
struct instant {
	int64_t s;
	uint32_t ns;
};

/* "YYYY-MM-DD HH:MM:SS[.F{1,9}]" in [s, s + n) since 1970, or what is
 * wrong. */
static const char *parse_time(const char *s, size_t n, struct instant *at)
{
	static const uint8_t mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	uint32_t y, mo, d, h, mi, se, frac = 0;

	if (n < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':')
		return "expected YYYY-MM-DD HH:MM:SS[.fraction]";
	if (!wl_digits(s, 4, &y) || !wl_digits(s + 5, 2, &mo) || !wl_digits(s + 8, 2, &d) ||
	    !wl_digits(s + 11, 2, &h) || !wl_digits(s + 14, 2, &mi) || !wl_digits(s + 17, 2, &se))
		return "expected digits in YYYY-MM-DD HH:MM:SS";
	if (y < 1970 || y > 9999)
		return "year out of range (1970 to 9999)";
	if (mo < 1 || mo > 12)
		return "month out of range (01 to 12)";
	if (d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap(y)))
		return "no such day in that month";
	if (h > 23 || mi > 59 || se > 60)
		return "time of day out of range";
	if (n > 19) {
		size_t f = n - 20;
		uint32_t scale = 1;

		if (s[19] != '.' || f < 1 || f > 9 || !wl_digits(s + 20, f, &frac))
			return "the fraction of a second is '.' and 1 to 9 digits";
		for (size_t k = f; k < 9; k++)
			scale *= 10;
		frac *= scale;
	}
	at->s = days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
	at->ns = frac;
	return NULL;
}

/* The field [s, s + n) fit to quote in a message: printable, at most 40
 * bytes. */
static const char *quote(char *buf, const char *s, size_t n)
{
	wl_copy_name(buf, s, n < 40 ? n : 40);
	return buf;
}

static const char *parse_tokens(const char *s, size_t n, const char *what, uint32_t *v, char *msg,
                                size_t msglen)
{
	char q[WL_NAME_MAX];
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	if (n == 0) {
		snprintf(msg, msglen, "%s is empty", what);
		return msg;
	}
	if (i < n) {
		snprintf(msg, msglen, "%s '%s' is not a whole number", what, quote(q, s, n));
		return msg;
	}
	for (i = 0; i + 1 < n && s[i] == '0'; i++)
		; /* leading zeros, so that wl_digits() cannot overflow */
	if (n - i > 7 || !wl_digits(s + i, n - i, v) || *v < 1 || *v > LLM_TRACE_MAX_TOKENS) {
		snprintf(msg, msglen, "%s %s is out of range (1 to %u)", what, quote(q, s, n),
		         LLM_TRACE_MAX_TOKENS);
		return msg;
	}
	return NULL;
}

int llm_trace_parse(const char *text, size_t len, const char *name, uint32_t max_reqs,
                    struct llm_trace *out, char *err, size_t errlen)
{
	static const char header[] = "TIMESTAMP,ContextTokens,GeneratedTokens";
	struct llm_trace t = { 0, NULL };
	uint32_t cap = 0;
	struct instant first = { 0, 0 }, prev = { 0, 0 };
	size_t line = 0, pos = 0;
	bool all = max_reqs == 0 || max_reqs > LLM_TRACE_MAX_REQS;
	int rc = 0;

	name = name ? name : "llm-trace";
	out->n = 0;
	out->req = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (len > LLM_TRACE_MAX_INPUT)
		return wl_fail_at(err, errlen, name, 0, "more than %zu bytes", LLM_TRACE_MAX_INPUT);
	if (all)
		max_reqs = LLM_TRACE_MAX_REQS;
	while (pos < len && (all || t.n < max_reqs)) {
		size_t n;
		const char *s = wl_next_line(text, len, &pos, &n);

		line++;
		if (n > LLM_TRACE_MAX_LINE) {
			rc = wl_fail_at(err, errlen, name, line, "a line longer than %d bytes",
			                LLM_TRACE_MAX_LINE);
			goto out;
		}
		if (memchr(s, '\0', n) || memchr(s, '\r', n)) {
			rc = wl_fail_at(err, errlen, name, line, "a NUL or a stray CR in the line");
			goto out;
		}
		if (line == 1) {
			if (n != sizeof(header) - 1 || memcmp(s, header, n)) {
				rc = wl_fail_at(err, errlen, name, line, "expected the header %s",
				                header);
				goto out;
			}
			continue;
		}
		if (n == 0) {
			if (pos >= len)
				break; /* the last line's newline */
			rc = wl_fail_at(err, errlen, name, line, "an empty line");
			goto out;
		}
		if (t.n == max_reqs) {
			rc = wl_fail_at(err, errlen, name, line, "more than %u requests",
			                LLM_TRACE_MAX_REQS);
			goto out;
		}
		const char *c1 = memchr(s, ',', n);
		const char *c2 = c1 ? memchr(c1 + 1, ',', n - (size_t)(c1 + 1 - s)) : NULL;
		if (!c1 || !c2 || memchr(c2 + 1, ',', n - (size_t)(c2 + 1 - s))) {
			rc = wl_fail_at(
			        err, errlen, name, line,
			        "expected three fields: TIMESTAMP,ContextTokens,GeneratedTokens");
			goto out;
		}
		struct llm_trace_req r;
		char msg[160], q[WL_NAME_MAX];
		struct instant at;
		const char *why = parse_time(s, (size_t)(c1 - s), &at);
		if (why) {
			rc = wl_fail_at(err, errlen, name, line, "TIMESTAMP '%s': %s",
			                quote(q, s, (size_t)(c1 - s)), why);
			goto out;
		}
		why = parse_tokens(c1 + 1, (size_t)(c2 - c1 - 1), "ContextTokens", &r.prompt, msg,
		                   sizeof(msg));
		if (!why)
			why = parse_tokens(c2 + 1, n - (size_t)(c2 + 1 - s), "GeneratedTokens",
			                   &r.output, msg, sizeof(msg));
		if (!why && t.n && (at.s < prev.s || (at.s == prev.s && at.ns < prev.ns)))
			why = "TIMESTAMP: earlier than the line before (requests are in arrival "
			      "order)";
		if (why) {
			rc = wl_fail_at(err, errlen, name, line, "%s", why);
			goto out;
		}
		if (t.n == 0)
			first = at;
		prev = at;
		r.arrival_ns = (double)(at.s - first.s) * 1e9 + ((double)at.ns - first.ns);
		if (t.n == cap &&
		    wl_grow((void **)&t.req, &cap, t.n + 1, sizeof(*t.req), LLM_TRACE_MAX_REQS)) {
			rc = -TDM_ENOMEM;
			snprintf(err, errlen, "%s: out of memory", name);
			goto out;
		}
		t.req[t.n++] = r;
	}
	if (line == 0) {
		rc = wl_fail_at(err, errlen, name, 1, "empty: expected the header %s", header);
		goto out;
	}
	if (t.n == 0) {
		rc = wl_fail_at(err, errlen, name, line, "no requests after the header");
		goto out;
	}
	*out = t;
	return 0;
out:
	llm_trace_free(&t);
	return rc;
}

int llm_trace_load(const char *path, uint32_t max_reqs, struct llm_trace *out, char *err,
                   size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	out->n = 0;
	out->req = NULL;
	rc = wl_read_file(path, LLM_TRACE_MAX_INPUT, &buf, &len, err, errlen);
	if (rc)
		return rc;
	rc = llm_trace_parse(buf, len, path, max_reqs, out, err, errlen);
	free(buf);
	return rc;
}

/* ---- generators ---- */

static double normal(uint64_t *s)
{
	return sqrt(-2 * log(splitmix_open_unit(s))) * cos(2 * M_PI * splitmix_open_unit(s));
}

/* A log-normal with the given median and mean (mean > median). */
static uint32_t lognormal(uint64_t *s, double median, double mean, uint32_t lo, uint32_t hi)
{
	double sigma = sqrt(2 * log(mean / median));
	double v = round(median * exp(sigma * normal(s)));
	return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

int llm_trace_generate(enum llm_trace_kind kind, uint32_t n, uint64_t seed, struct llm_trace *out,
                       char *err, size_t errlen)
{
	/* Published statistics of Azure's 2023 traces (1 h each): conv 19,366
	 * requests, prompts median 1020 mean 1155 max 14050, outputs median
	 * 129 mean 211 max 1000; code 8,819 requests, prompts median 1469 mean
	 * 2048 p99 7436, outputs median 13 mean 28 p99 249. */
	const double rate = kind == LLM_TRACE_CONV   ? 19366 / 3600.0
	                    : kind == LLM_TRACE_CODE ? 8819 / 3600.0
	                                             : 20.0;
	uint64_t s = seed;
	double t = 0;

	out->n = 0;
	out->req = NULL;
	if (n == 0 || n > LLM_TRACE_MAX_REQS ||
	    (kind != LLM_TRACE_CONV && kind != LLM_TRACE_CODE && kind != LLM_TRACE_SMALL)) {
		snprintf(err, errlen, "llm trace generator: n must be 1 to %u", LLM_TRACE_MAX_REQS);
		return -TDM_EINVAL;
	}
	out->req = calloc(n, sizeof(*out->req));
	if (!out->req) {
		snprintf(err, errlen, "llm trace generator: out of memory");
		return -TDM_ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct llm_trace_req *r = &out->req[i];

		r->arrival_ns = t;
		t += -log(splitmix_open_unit(&s)) / rate * 1e9;
		if (kind == LLM_TRACE_CONV) {
			r->prompt = lognormal(&s, 1020, 1155, 2, 14050);
			r->output = lognormal(&s, 129, 211, 10, 1000);
		} else if (kind == LLM_TRACE_CODE) {
			r->prompt = lognormal(&s, 1469, 2048, 3, 7437);
			r->output = lognormal(&s, 13, 28, 10, 2000);
		} else {
			r->prompt = 4 + (uint32_t)(splitmix_open_unit(&s) * 37);
			r->output = 2 + (uint32_t)(splitmix_open_unit(&s) * 23);
		}
	}
	out->n = n;
	return 0;
}

int llm_trace_write(FILE *f, const struct llm_trace *t)
{
	const time_t base = 1700092800; /* 2023-11-16 00:00:00 UTC */

	if (fprintf(f, "TIMESTAMP,ContextTokens,GeneratedTokens\n") < 0)
		return -TDM_ESYS;
	for (uint32_t i = 0; i < t->n; i++) {
		const struct llm_trace_req *r = &t->req[i];
		/* In 100 ns ticks, rounded down: never earlier than the one before. */
		uint64_t ticks = (uint64_t)(r->arrival_ns / 100);
		time_t secs = base + (time_t)(ticks / 10000000);
		struct tm tm;

		gmtime_r(&secs, &tm);
		if (fprintf(f, "%04d-%02d-%02d %02d:%02d:%02d.%07u,%u,%u\n", tm.tm_year + 1900,
		            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		            (unsigned)(ticks % 10000000), r->prompt, r->output) < 0)
			return -TDM_ESYS;
	}
	return fflush(f) ? -TDM_ESYS : 0;
}
