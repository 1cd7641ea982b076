/* Schedules as files: Chrome / Perfetto trace JSON and an SVG Gantt chart.
 *
 * Both writers stream with stdio (a schedule may hold a million spans) and
 * format every number themselves from integers, or with a fixed "%.2f" for
 * SVG coordinates, so that the same schedule always gives the same bytes.
 *
 * Validation, before a byte is written: a span whose device (or a copy whose
 * link) names no track, or a non-empty array given as NULL, is -TDM_EINVAL.
 * A span with end < start is drawn as zero-length. NULL names write as "".
 * Strings are escaped for their format; bytes that are not valid UTF-8
 * become U+FFFD, so the output is always valid JSON / XML.
 *
 * SVG layout: title, then a time axis (ticks 1/2/5 x 10^k ns, labelled in
 * s, ms, us or ns by the last tick), then one row per track: devices, then
 * links. Time runs from the earliest start among all spans (t0); tooltips
 * give times in ms relative to t0. Tasks fill most of their row, copies are
 * thinner and translucent. Colours come from a fixed 10-colour palette by
 * graph number.
 *
 * Large schedules: with more than SVG_MERGE_ABOVE spans and copies together,
 * spans are drawn row by row in start order, and runs of spans narrower than
 * half a pixel whose gaps are under half a pixel are drawn as one rectangle
 * (class "m", tooltip "N spans: start-end ms", the graph's colour when all
 * are of one graph, else grey). Small schedules draw every span, in the
 * order given, each at least SVG_MIN_W px wide. */
#include "workload/schedule_out.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tandem.h"

#define SVG_DEFAULT_WIDTH 1200u
#define SVG_MIN_WIDTH 200u
#define SVG_MERGE_ABOVE 20000u
#define SVG_MERGE_PX 0.5
#define SVG_MIN_W 0.5
#define SVG_TOP 52 /* first row's top: below the title and the tick labels */
#define SVG_ROW_H 24
#define SVG_RIGHT 16 /* right margin */
#define SVG_CHAR_W 7 /* a 12px sans-serif character, roughly */
#define SVG_LABEL_CHARS 40 /* longest label the layout makes room for */

/* ---- checks shared by both writers ------------------------------------- */

static int check_view(const struct sched_view *v)
{
	if ((v->ndevices && !v->devices) || (v->nspans && !v->spans) || (v->nlinks && !v->links) ||
	    (v->ncopies && !v->copies))
		return -TDM_EINVAL;
	for (size_t i = 0; i < v->nspans; i++)
		if (v->spans[i].device >= v->ndevices)
			return -TDM_EINVAL;
	for (size_t i = 0; i < v->ncopies; i++)
		if (v->copies[i].device >= v->nlinks)
			return -TDM_EINVAL;
	return 0;
}

static uint64_t span_end(const struct sched_span *s)
{
	return s->end_ns > s->start_ns ? s->end_ns : s->start_ns;
}

static int finish(FILE *out)
{
	return fflush(out) != 0 || ferror(out) ? -TDM_ESYS : 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), 0 if it is not one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *p)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

/* ---- Chrome trace JSON --------------------------------------------------- */

/* A JSON string, quotes included. */
static void json_str(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	const unsigned char *q = p;

	while (*q >= 0x20 && *q < 0x7f && *q != '"' && *q != '\\')
		q++;
	putc('"', out);
	if (!*q) { /* plain ASCII, the usual case */
		fputs((const char *)p, out);
		putc('"', out);
		return;
	}
	while (*p) {
		unsigned char c = *p;
		size_t n;
		if (c == '"' || c == '\\') {
			putc('\\', out);
			putc(c, out);
			p++;
		} else if (c == '\n') {
			fputs("\\n", out);
			p++;
		} else if (c == '\t') {
			fputs("\\t", out);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(out, "\\u%04x", c);
			p++;
		} else if ((n = utf8_len(p)) != 0) {
			fwrite(p, 1, n, out);
			p += n;
		} else {
			fputs("\\ufffd", out);
			p++;
		}
	}
	putc('"', out);
}

/* Nanoseconds as microseconds with exactly three decimals. */
static void json_us(FILE *out, uint64_t ns)
{
	fprintf(out, "%" PRIu64 ".%03u", ns / 1000, (unsigned)(ns % 1000));
}

static void json_track_meta(FILE *out, size_t track, const char *name)
{
	fprintf(out,
	        ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%zu,\"args\":{"
	        "\"name\":",
	        track + 1);
	json_str(out, name);
	fprintf(out,
	        "}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":%zu,"
	        "\"args\":{\"sort_index\":%zu}}",
	        track + 1, track);
}

static void json_span(FILE *out, const struct sched_span *s, size_t tid, bool copy)
{
	fputs(",\n{\"name\":", out);
	json_str(out, s->name);
	fputs(copy ? ",\"cat\":\"copy\",\"ph\":\"X\",\"ts\":"
	           : ",\"cat\":\"task\",\"ph\":\"X\",\"ts\":",
	      out);
	json_us(out, s->start_ns);
	fputs(",\"dur\":", out);
	json_us(out, span_end(s) - s->start_ns);
	fprintf(out, ",\"pid\":1,\"tid\":%zu,\"args\":{\"graph\":%" PRIu32 ",\"task\":%" PRIu32,
	        tid, s->graph, s->task);
	if (copy)
		fprintf(out, ",\"bytes\":%" PRIu64, s->bytes);
	fputs("}}", out);
}

int sched_write_chrome(FILE *out, const struct sched_view *v)
{
	if (!out || !v)
		return -TDM_EINVAL;
	int err = check_view(v);
	if (err)
		return err;

	/* One event a line; every event after the first starts with ",\n". */
	fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
	      "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":",
	      out);
	json_str(out, v->title);
	fputs("}}", out);
	for (size_t i = 0; i < v->ndevices; i++)
		json_track_meta(out, i, v->devices[i]);
	for (size_t i = 0; i < v->nlinks; i++)
		json_track_meta(out, v->ndevices + i, v->links[i]);
	for (size_t i = 0; i < v->nspans; i++) {
		json_span(out, &v->spans[i], (size_t)v->spans[i].device + 1, false);
		if ((i & 4095) == 4095 && ferror(out))
			return -TDM_ESYS;
	}
	for (size_t i = 0; i < v->ncopies; i++) {
		json_span(out, &v->copies[i], v->ndevices + v->copies[i].device + 1, true);
		if ((i & 4095) == 4095 && ferror(out))
			return -TDM_ESYS;
	}
	fputs("\n]}\n", out);
	return finish(out);
}

/* ---- SVG Gantt ------------------------------------------------------------ */

static const char *const palette[10] = {
	"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
	"#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
};
#define MIXED_FILL "#888888"

/* XML character data or attribute value; no quotes added. */
static void xml_str(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	while (*p) {
		unsigned char c = *p;
		size_t n;
		if (c == '&')
			fputs("&amp;", out);
		else if (c == '<')
			fputs("&lt;", out);
		else if (c == '>')
			fputs("&gt;", out);
		else if (c == '"')
			fputs("&quot;", out);
		else if (c == '\t' || c == '\n' || c == '\r')
			putc(' ', out);
		else if (c < 0x20 || c == 0x7f)
			fputs("&#xFFFD;", out); /* not allowed in XML 1.0 */
		else if (c < 0x80)
			putc(c, out);
		else if ((n = utf8_len(p)) != 0) {
			/* U+FFFE and U+FFFF are not XML characters either. */
			if (n == 3 && p[0] == 0xef && p[1] == 0xbf && p[2] >= 0xbe)
				fputs("&#xFFFD;", out);
			else
				fwrite(p, 1, n, out);
			p += n;
			continue;
		} else
			fputs("&#xFFFD;", out);
		p++;
	}
}

/* Nanoseconds as milliseconds, rounded to three decimals. */
static void svg_ms(FILE *out, uint64_t ns)
{
	uint64_t us = ns / 1000 + (ns % 1000 >= 500);
	fprintf(out, "%" PRIu64 ".%03u", us / 1000, (unsigned)(us % 1000));
}

struct svg {
	FILE *out;
	const struct sched_view *v;
	uint64_t t0, span; /* time origin and extent (>= 1) in ns */
	double left, plot; /* plot area: x from left to left + plot */
};

static double svg_x(const struct svg *g, uint64_t t)
{
	return g->left + (double)(t - g->t0) * g->plot / (double)g->span;
}

static double row_y(size_t track, bool copy)
{
	return SVG_TOP + (double)track * SVG_ROW_H + (copy ? 7 : 3);
}

static void svg_rect(const struct svg *g, const char *cls, double x, double w, double y, bool copy,
                     const char *fill)
{
	if (w < SVG_MIN_W)
		w = SVG_MIN_W;
	fprintf(g->out,
	        "<rect class=\"%s\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%d\" "
	        "fill=\"%s\">",
	        cls, x, y, w, copy ? 10 : 18, fill);
}

static void svg_span(const struct svg *g, const struct sched_span *s, size_t track, bool copy)
{
	uint64_t end = span_end(s);
	double x0 = svg_x(g, s->start_ns), x1 = svg_x(g, end);
	svg_rect(g, copy ? "c" : "t", x0, x1 - x0, row_y(track, copy), copy,
	         palette[s->graph % 10]);
	fputs("<title>", g->out);
	xml_str(g->out, s->name);
	fputs(": ", g->out);
	svg_ms(g->out, s->start_ns - g->t0);
	fputs("&#8211;", g->out);
	svg_ms(g->out, end - g->t0);
	fprintf(g->out, " ms (graph %" PRIu32 ", task %" PRIu32, s->graph, s->task);
	if (copy)
		fprintf(g->out, ", %" PRIu64 " bytes", s->bytes);
	fputs(")</title></rect>\n", g->out);
}

/* A run of merged narrow spans on one row. */
struct merged {
	size_t count;
	uint64_t start, end;
	uint32_t graph;
	bool mixed;
};

static void svg_merged(const struct svg *g, const struct merged *m, size_t track, bool copy)
{
	if (m->count == 1)
		return; /* written as itself by the caller */
	double x0 = svg_x(g, m->start), x1 = svg_x(g, m->end);
	svg_rect(g, "m", x0, x1 - x0, row_y(track, copy), copy,
	         m->mixed ? MIXED_FILL : palette[m->graph % 10]);
	fprintf(g->out, "<title>%zu spans: ", m->count);
	svg_ms(g->out, m->start - g->t0);
	fputs("&#8211;", g->out);
	svg_ms(g->out, m->end - g->t0);
	fputs(" ms</title></rect>\n", g->out);
}

/* Sort key for the merged drawing: track, then start, then input order. */
struct span_ref {
	uint32_t track;
	uint64_t start;
	size_t index; /* spans first, then copies at nspans + i */
};

static int ref_cmp(const void *a, const void *b)
{
	const struct span_ref *x = a, *y = b;
	if (x->track != y->track)
		return x->track < y->track ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static const struct sched_span *ref_span(const struct sched_view *v, const struct span_ref *r)
{
	return r->index < v->nspans ? &v->spans[r->index] : &v->copies[r->index - v->nspans];
}

/* Every span and copy, sorted by track, start and input order; NULL when
 * out of memory. */
static struct span_ref *sorted_refs(const struct sched_view *v)
{
	size_t n = v->nspans + v->ncopies;
	struct span_ref *refs = malloc(n * sizeof(*refs));
	if (!refs)
		return NULL;
	for (size_t i = 0; i < v->nspans; i++)
		refs[i] = (struct span_ref){ v->spans[i].device, v->spans[i].start_ns, i };
	for (size_t i = 0; i < v->ncopies; i++)
		refs[v->nspans + i] =
		        (struct span_ref){ (uint32_t)(v->ndevices + v->copies[i].device),
			                   v->copies[i].start_ns, v->nspans + i };
	qsort(refs, n, sizeof(*refs), ref_cmp);
	return refs;
}

static void svg_spans_merged(const struct svg *g, const struct span_ref *refs)
{
	const struct sched_view *v = g->v;
	size_t n = v->nspans + v->ncopies;

	/* A pending run; a run of one is drawn as the span itself. */
	struct merged m = { 0 };
	const struct sched_span *first = NULL;
	size_t track = 0;
	bool copy = false;
	for (size_t i = 0; i <= n; i++) {
		const struct sched_span *s = i < n ? ref_span(v, &refs[i]) : NULL;
		bool narrow = false;
		if (s) {
			uint64_t end = span_end(s);
			narrow = svg_x(g, end) - svg_x(g, s->start_ns) < SVG_MERGE_PX;
			if (narrow && m.count && refs[i].track == track &&
			    svg_x(g, s->start_ns) - svg_x(g, m.end) < SVG_MERGE_PX) {
				m.count++;
				if (end > m.end)
					m.end = end;
				m.mixed |= s->graph != m.graph;
				continue;
			}
		}
		if (m.count == 1)
			svg_span(g, first, track, copy);
		else if (m.count)
			svg_merged(g, &m, track, copy);
		m.count = 0;
		if (!s)
			break;
		track = refs[i].track;
		copy = track >= v->ndevices;
		if (narrow) {
			m = (struct merged){ 1, s->start_ns, span_end(s), s->graph, false };
			first = s;
		} else {
			svg_span(g, s, track, copy);
		}
		if ((i & 4095) == 4095 && ferror(g->out))
			break;
	}
}

/* Ticks every step ns, step = 1/2/5 x 10^k, about one per 100 px. */
static void svg_axis(const struct svg *g, double bottom)
{
	uint64_t target = (uint64_t)(g->plot / 100);
	if (target < 2)
		target = 2;
	uint64_t raw = g->span / target + (g->span % target != 0);
	uint64_t mag = 1;
	while (mag <= raw / 10)
		mag *= 10;
	uint64_t step = mag * 10;
	if (mag >= raw)
		step = mag;
	else if (2 * mag >= raw)
		step = 2 * mag;
	else if (5 * mag >= raw)
		step = 5 * mag;

	/* The unit by the last tick: 0.5 ms rather than 500 us when the axis
	 * reaches 1 ms; as many decimals as the step needs, on every label. */
	uint64_t last = g->span / step * step;
	uint64_t unit = 1;
	const char *uname = "ns";
	if (last >= 1000000000) {
		unit = 1000000000;
		uname = "s";
	} else if (last >= 1000000) {
		unit = 1000000;
		uname = "ms";
	} else if (last >= 1000) {
		unit = 1000;
		uname = "us";
	}
	uint64_t frac = unit; /* step is a multiple of frac */
	int decimals = 0;
	while (step % frac != 0) {
		frac /= 10;
		decimals++;
	}

	FILE *out = g->out;
	fputs("<g class=\"axis\">\n", out);
	for (uint64_t t = 0;; t += step) {
		double x = svg_x(g, g->t0 + t);
		fprintf(out,
		        "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%.2f\"/>"
		        "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%" PRIu64,
		        x, SVG_TOP - 6, x, bottom, x, SVG_TOP - 10, t / unit);
		if (decimals)
			fprintf(out, ".%0*" PRIu64, decimals, t % unit / frac);
		fprintf(out, " %s</text>\n", uname);
		if (t == last)
			break;
	}
	fputs("</g>\n", out);
}

int sched_write_svg(FILE *out, const struct sched_view *v, unsigned width)
{
	if (!out || !v)
		return -TDM_EINVAL;
	int err = check_view(v);
	if (err)
		return err;
	struct span_ref *refs = NULL;
	if (v->nspans + v->ncopies > SVG_MERGE_ABOVE) {
		refs = sorted_refs(v);
		if (!refs)
			return -TDM_ENOMEM;
	}
	if (width == 0)
		width = SVG_DEFAULT_WIDTH;
	if (width < SVG_MIN_WIDTH)
		width = SVG_MIN_WIDTH;

	size_t ntracks = v->ndevices + v->nlinks;
	size_t chars = 0;
	for (size_t i = 0; i < ntracks; i++) {
		const char *name = i < v->ndevices ? v->devices[i] : v->links[i - v->ndevices];
		size_t len = name ? strlen(name) : 0;
		if (len > chars)
			chars = len;
	}
	if (chars > SVG_LABEL_CHARS)
		chars = SVG_LABEL_CHARS;
	double left = (double)(chars * SVG_CHAR_W + 16);
	if (left > width / 3)
		left = width / 3;

	struct svg g = { .out = out, .v = v, .left = left };
	g.plot = width - left - SVG_RIGHT;
	uint64_t t0 = UINT64_MAX, t1 = 0;
	for (size_t i = 0; i < v->nspans + v->ncopies; i++) {
		const struct sched_span *s =
		        i < v->nspans ? &v->spans[i] : &v->copies[i - v->nspans];
		if (s->start_ns < t0)
			t0 = s->start_ns;
		if (span_end(s) > t1)
			t1 = span_end(s);
	}
	if (t0 > t1) { /* nothing to draw: an axis of 0..1 ms */
		t0 = 0;
		t1 = 1000000;
	}
	g.t0 = t0;
	g.span = t1 - t0 ? t1 - t0 : 1;

	double bottom = SVG_TOP + (double)ntracks * SVG_ROW_H;
	unsigned height = (unsigned)bottom + 12;
	fprintf(out,
	        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" height=\"%u\" "
	        "viewBox=\"0 0 %u %u\" font-family=\"sans-serif\" font-size=\"12\" "
	        "style=\"background:#ffffff\">\n"
	        "<style>.axis line{stroke:#dddddd}.axis text{fill:#555555;font-size:10px}"
	        ".rows line{stroke:#eeeeee}.c{fill-opacity:0.75}.m{fill-opacity:0.85}</style>\n",
	        width, height, width, height);
	fputs("<title>", out);
	xml_str(out, v->title);
	fputs("</title>\n<text x=\"8\" y=\"20\" font-size=\"16\" font-weight=\"bold\">", out);
	xml_str(out, v->title);
	fputs("</text>\n", out);

	svg_axis(&g, bottom);

	fputs("<g class=\"rows\">\n", out);
	for (size_t i = 0; i < ntracks; i++) {
		const char *name = i < v->ndevices ? v->devices[i] : v->links[i - v->ndevices];
		double y = SVG_TOP + (double)i * SVG_ROW_H;
		fprintf(out, "<line x1=\"0\" y1=\"%.2f\" x2=\"%u\" y2=\"%.2f\"/>", y + SVG_ROW_H,
		        width, y + SVG_ROW_H);
		fprintf(out, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">", left - 6, y + 16);
		xml_str(out, name);
		fputs("</text>\n", out);
	}
	fputs("</g>\n<g class=\"spans\">\n", out);

	if (refs) {
		svg_spans_merged(&g, refs);
		free(refs);
	} else {
		for (size_t i = 0; i < v->nspans; i++)
			svg_span(&g, &v->spans[i], v->spans[i].device, false);
		for (size_t i = 0; i < v->ncopies; i++)
			svg_span(&g, &v->copies[i], v->ndevices + v->copies[i].device, true);
	}
	fputs("</g>\n</svg>\n", out);
	return finish(out);
}
