/* Scale events: the text form (scale_events.h). */
#include "workload/scale_events.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errbuf.h"
#include "tandem.h"

static const char *const kind_names[SCALE_KIND_COUNT] = { "add", "drain", "remove", "resume",
	                                                  "budget" };

const char *scale_kind_name(enum scale_kind k)
{
	return (unsigned)k < SCALE_KIND_COUNT ? kind_names[k] : "?";
}

struct unit {
	const char *name;
	double mul;
};

static const struct unit time_units[] = { { "ns", 1 }, { "us", 1e3 }, { "ms", 1e6 }, { "s", 1e9 } };
static const struct unit size_units[] = {
	{ "B", 1 },           { "KB", 1e3 },           { "MB", 1e6 },
	{ "GB", 1e9 },        { "TB", 1e12 },          { "KiB", 1024.0 },
	{ "MiB", 1048576.0 }, { "GiB", 1073741824.0 }, { "TiB", 1099511627776.0 },
};

/* One event's text, [p, end): the cursor and where the event began. */
struct cur {
	const char *p, *end, *line; /* line: the start of the current line */
	uint32_t index;
	const char *name;
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int bad(struct cur *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_printf(c->err, c->errlen, "%s: event %u (column %u): %s", c->name, c->index + 1,
	           (unsigned)(c->p - c->line) + 1, msg);
	return -TDM_EINVAL;
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

static void skip_blanks(struct cur *c)
{
	while (c->p < c->end && is_blank(*c->p))
		c->p++;
}

/* A token: up to a blank or the end of the event. */
static size_t token_len(const struct cur *c)
{
	size_t n = 0;
	while (c->p + n < c->end && !is_blank(c->p[n]))
		n++;
	return n;
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* A decimal number with a unit of units[], within (or at) [lo, hi] once
 * scaled; the token is s[0, n). */
static int number(struct cur *c, const char *s, size_t n, const struct unit *units, size_t nunits,
                  const char *what, double lo, double hi, double *out)
{
	char buf[32];
	size_t i = 0, digits = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++, digits++;
	if (i < n && s[i] == '.') {
		i++;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++, digits++;
	}
	if (!digits || s[i - 1] == '.')
		return bad(c,
		           "%s: \"%.*s\" does not start with a decimal number (such as 5 or 2.5)",
		           what, (int)(n < 40 && printable(s, n) ? n : 0), s);
	if (i >= sizeof(buf))
		return bad(c, "%s: a number of more than %zu characters", what, sizeof(buf) - 1);
	memcpy(buf, s, i);
	buf[i] = '\0';
	for (size_t u = 0; u < nunits; u++) {
		size_t ul = strlen(units[u].name);
		if (n - i == ul && !memcmp(s + i, units[u].name, ul)) {
			double v = strtod(buf, NULL) * units[u].mul;
			if (!(v >= lo && v <= hi))
				return bad(c, "%s: %.*s is out of range", what, (int)n, s);
			*out = v;
			return 0;
		}
	}
	char list[96] = "";
	for (size_t u = 0; u < nunits; u++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", u ? ", " : "",
		         units[u].name);
	if (i == n)
		return bad(c, "%s: %s has no unit (%s)", what, buf, list);
	return bad(c, "%s: unknown unit \"%.*s\" (%s)", what,
	           (int)(n - i < 16 && printable(s + i, n - i) ? n - i : 3),
	           n - i < 16 && printable(s + i, n - i) ? s + i : "...", list);
}

static bool dev_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/* One event in [c->p, c->end), blanks trimmed, not empty. */
static int parse_one(struct cur *c, struct scale_event *e)
{
	size_t n = token_len(c);
	double v;

	memset(e, 0, sizeof(*e));
	e->index = c->index;
	if (n < 2 || c->p[0] != 't' || c->p[1] != '=')
		return bad(c, "expected t=TIME first (such as t=5ms)");
	c->p += 2;
	if (number(c, c->p, n - 2, time_units, sizeof(time_units) / sizeof(time_units[0]), "t", 0,
	           SCALE_MAX_T_NS, &v))
		return -TDM_EINVAL;
	e->t_ns = (uint64_t)llround(v);
	c->p += n - 2;
	skip_blanks(c);
	n = token_len(c);
	int k = -1;
	for (int i = 0; i < SCALE_KIND_COUNT; i++)
		if (strlen(kind_names[i]) == n && !memcmp(c->p, kind_names[i], n))
			k = i;
	if (k < 0)
		return bad(c, "%s \"%.*s\" (expected add, drain, remove, resume or budget)",
		           n ? "unknown action" : "missing the action after the time",
		           (int)(n < 24 && printable(c->p, n) ? n : 0), c->p);
	e->kind = (enum scale_kind)k;
	c->p += n;
	skip_blanks(c);
	n = token_len(c);
	size_t name = 0;
	while (name < n && dev_char(c->p[name]))
		name++;
	if (!name)
		return bad(c, "%s: expected a device name (a-z, 0-9, _), such as gpu1",
		           kind_names[k]);
	if (name >= SCALE_DEV_MAX)
		return bad(c, "%s: a device name of more than %d characters", kind_names[k],
		           SCALE_DEV_MAX - 1);
	memcpy(e->dev, c->p, name);
	e->dev[name] = '\0';
	if (e->kind == SCALE_BUDGET) {
		if (name == n || c->p[name] != '=')
			return bad(c, "budget: expected DEVICE=SIZE, such as gpu0=8GiB");
		c->p += name + 1;
		if (number(c, c->p, n - name - 1, size_units,
		           sizeof(size_units) / sizeof(size_units[0]), "budget", 1,
		           (double)SCALE_MAX_BYTES, &v))
			return -TDM_EINVAL;
		e->bytes = (uint64_t)llround(v);
		c->p += n - name - 1;
	} else {
		if (name != n) {
			c->p += name;
			return bad(c, "%s: a device name is a-z, 0-9 and _", kind_names[k]);
		}
		c->p += n;
	}
	skip_blanks(c);
	if (c->p < c->end)
		return bad(c, "unexpected text after the event (events are separated by ';' or "
		              "new lines)");
	return 0;
}

static int by_time(const void *a, const void *b)
{
	const struct scale_event *x = a, *y = b;
	if (x->t_ns != y->t_ns)
		return x->t_ns < y->t_ns ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

int scale_events_parse(const char *text, size_t len, const char *name, struct scale_events *out,
                       char *err, size_t errlen)
{
	struct cur c = { .name = name, .err = err, .errlen = errlen };
	const char *p = text, *end = text + len;
	uint32_t cap = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (len > SCALE_MAX_INPUT) {
		err_printf(err, errlen, "%s: %zu bytes, at most %zu", name, len, SCALE_MAX_INPUT);
		return -TDM_EINVAL;
	}
	c.line = text;
	while (p < end) {
		/* One event: up to ';', a new line, '#' or the end. */
		const char *q = p;
		while (q < end && *q != ';' && *q != '\n' && *q != '#')
			q++;
		c.p = p;
		c.end = q;
		skip_blanks(&c);
		for (const char *x = c.p; x < q; x++)
			if (*x == '\0' || ((unsigned char)*x < 0x20 && !is_blank(*x))) {
				c.p = x;
				rc = bad(&c, "a control character (0x%02x)", (unsigned char)*x);
				goto fail;
			}
		if (c.p < q) {
			if (out->n == SCALE_MAX_EVENTS) {
				rc = bad(&c, "more than %u events", SCALE_MAX_EVENTS);
				goto fail;
			}
			if (out->n == cap) {
				uint32_t ncap = cap ? 2 * cap : 16;
				struct scale_event *g = realloc(out->ev, ncap * sizeof(*g));
				if (!g) {
					err_printf(err, errlen, "%s: out of memory", name);
					rc = -TDM_ENOMEM;
					goto fail;
				}
				out->ev = g;
				cap = ncap;
			}
			if ((rc = parse_one(&c, &out->ev[out->n])))
				goto fail;
			out->n++;
			c.index++;
		}
		if (q < end && *q == '#')
			while (q < end && *q != '\n')
				q++;
		if (q < end && *q == '\n')
			c.line = q + 1;
		p = q < end ? q + 1 : q;
	}
	if (out->n)
		qsort(out->ev, out->n, sizeof(*out->ev), by_time);
	return 0;
fail:
	scale_events_free(out);
	return rc;
}

void scale_events_free(struct scale_events *s)
{
	free(s->ev);
	s->ev = NULL;
	s->n = 0;
}

/* v in the largest of units[] (by decreasing size) that divides it. */
static const char *exact_unit(uint64_t v, const uint64_t *mul, const char *const *name, size_t n,
                              uint64_t *out)
{
	for (size_t i = 0; i < n; i++)
		if (v && v % mul[i] == 0) {
			*out = v / mul[i];
			return name[i];
		}
	*out = v;
	return name[n - 1];
}

int scale_event_format(const struct scale_event *e, char *buf, size_t len)
{
	static const uint64_t tmul[] = { 1000000000, 1000000, 1000, 1 };
	static const char *const tname[] = { "s", "ms", "us", "ns" };
	static const uint64_t bmul[] = { 1ull << 40, 1ull << 30, 1ull << 20, 1ull << 10, 1 };
	static const char *const bname[] = { "TiB", "GiB", "MiB", "KiB", "B" };
	uint64_t t, b;
	const char *tu = exact_unit(e->t_ns, tmul, tname, 4, &t);

	if (e->kind == SCALE_BUDGET) {
		const char *bu = exact_unit(e->bytes, bmul, bname, 5, &b);
		return snprintf(buf, len, "t=%" PRIu64 "%s budget %s=%" PRIu64 "%s", t, tu, e->dev,
		                b, bu);
	}
	return snprintf(buf, len, "t=%" PRIu64 "%s %s %s", t, tu, scale_kind_name(e->kind), e->dev);
}
