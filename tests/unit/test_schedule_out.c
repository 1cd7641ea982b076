/* Schedule output: exact Chrome trace bytes, ts/dur formatting, escaping,
 * copy tracks, JSON that parses back, well-formed and deterministic SVG,
 * empty schedules, merging in large schedules, write errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "workload/schedule_out.h"
#include "tandem.h"

/* ---- helpers ------------------------------------------------------------- */

/* Output of one writer in a malloc'd string (caller frees). */
static char *chrome(const struct sched_view *v)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(sched_write_chrome(f, v), 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static char *svg(const struct sched_view *v, unsigned width)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(sched_write_svg(f, v, width), 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	if (!j)
		fail_msg("JSON does not parse: %s at line %d col %d", e.text, e.line, e.column);
	return j;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0, len = strlen(needle);
	for (const char *p = strstr(hay, needle); p; p = strstr(p + len, needle))
		n++;
	return n;
}

/* The "traceEvents" array, and its events of phase ph. */
static json_t *events(json_t *doc)
{
	json_t *ev = json_object_get(doc, "traceEvents");
	assert_true(json_is_array(ev));
	return ev;
}

static size_t count_ph(json_t *ev, const char *ph)
{
	size_t n = 0, i;
	json_t *e;
	json_array_foreach(ev, i, e)
	{
		n += strcmp(json_string_value(json_object_get(e, "ph")), ph) == 0;
	}
	return n;
}

/* A small well-formedness check: every tag closes in order, every '&'
 * starts an entity, no '<' or '>' in text or attribute values. Returns the
 * number of elements. */
static size_t check_xml(const char *s)
{
	const char *stack[64];
	size_t depth = 0, elems = 0;
	assert_true(strncmp(s, "<svg ", 5) == 0);
	for (const char *p = s; *p; p++) {
		if (*p == '&') {
			const char *ents[] = { "&amp;", "&lt;", "&gt;", "&quot;", "&#" };
			bool ok = false;
			for (size_t i = 0; i < 5; i++)
				ok |= strncmp(p, ents[i], strlen(ents[i])) == 0;
			assert_true(ok);
			assert_non_null(strchr(p, ';'));
			continue;
		}
		assert_true(*p != '>');
		if (*p != '<')
			continue;
		const char *end = strchr(p, '>');
		assert_non_null(end);
		for (const char *q = p + 1; q < end; q++)
			assert_true(*q != '<');
		if (p[1] == '/') {
			assert_true(depth > 0);
			depth--;
			size_t n = strcspn(stack[depth], " />");
			assert_true(strncmp(p + 2, stack[depth], n) == 0);
			assert_true(p[2 + n] == '>');
		} else {
			elems++;
			if (end[-1] != '/') {
				assert_true(depth < 64);
				stack[depth++] = p + 1;
			}
		}
		p = end;
	}
	assert_int_equal(depth, 0);
	size_t len = strlen(s);
	assert_true(len >= 7 && strcmp(s + len - 7, "</svg>\n") == 0);
	return elems;
}

static const char *const two_devices[] = { "cpu0", "gpu0" };

static const struct sched_span three_spans[] = {
	{ .device = 0, .start_ns = 0, .end_ns = 1500, .name = "potrf", .graph = 0, .task = 0 },
	{ .device = 1, .start_ns = 2000, .end_ns = 1236567, .name = "gemm", .graph = 1, .task = 2 },
	{ .device = 0,
	  .start_ns = 1000000,
	  .end_ns = 1000001,
	  .name = "trsm",
	  .graph = 0,
	  .task = 1 },
};

static const struct sched_view small_view = {
	.title = "demo / dmda",
	.ndevices = 2,
	.devices = two_devices,
	.nspans = 3,
	.spans = three_spans,
};

/* ---- Chrome trace ---------------------------------------------------------- */

static void test_chrome_exact(void **state)
{
	(void)state;
	static const char expected[] =
	        "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
	        "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,"
	        "\"args\":{\"name\":\"demo / dmda\"}},\n"
	        "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":1,"
	        "\"args\":{\"name\":\"cpu0\"}},\n"
	        "{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":1,"
	        "\"args\":{\"sort_index\":0}},\n"
	        "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":2,"
	        "\"args\":{\"name\":\"gpu0\"}},\n"
	        "{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":1,\"tid\":2,"
	        "\"args\":{\"sort_index\":1}},\n"
	        "{\"name\":\"potrf\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":0.000,\"dur\":1.500,"
	        "\"pid\":1,\"tid\":1,\"args\":{\"graph\":0,\"task\":0}},\n"
	        "{\"name\":\"gemm\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":2.000,\"dur\":1234.567,"
	        "\"pid\":1,\"tid\":2,\"args\":{\"graph\":1,\"task\":2}},\n"
	        "{\"name\":\"trsm\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":1000.000,\"dur\":0.001,"
	        "\"pid\":1,\"tid\":1,\"args\":{\"graph\":0,\"task\":1}}\n"
	        "]}\n";
	char *out = chrome(&small_view);
	assert_string_equal(out, expected);
	json_decref(parse(out));
	free(out);
}

static void test_chrome_times(void **state)
{
	(void)state;
	const char *dev[] = { "d" };
	struct sched_span s[] = {
		{ .start_ns = 1234567, .end_ns = 1234567 + 999, .name = "a" },
		{ .start_ns = 5, .end_ns = 5 + 1234567, .name = "b" },
		{ .start_ns = 7000, .end_ns = 6000, .name = "backwards" }, /* drawn as length 0 */
		{ .start_ns = UINT64_C(18446744073709551615),
		  .end_ns = UINT64_C(18446744073709551615),
		  .name = "max" },
	};
	struct sched_view v = {
		.title = "t", .ndevices = 1, .devices = dev, .nspans = 4, .spans = s
	};
	char *out = chrome(&v);
	assert_non_null(strstr(out, "\"ts\":1234.567,\"dur\":0.999,"));
	assert_non_null(strstr(out, "\"ts\":0.005,\"dur\":1234.567,"));
	assert_non_null(strstr(out, "\"ts\":7.000,\"dur\":0.000,"));
	assert_non_null(strstr(out, "\"ts\":18446744073709551.615,\"dur\":0.000,"));
	assert_null(strstr(out, "e+")); /* never exponent notation */
	json_t *doc = parse(out);
	json_t *ev = events(doc);
	assert_int_equal(json_array_size(ev), 1 + 2 + 4);
	json_t *a = json_array_get(ev, 3);
	assert_string_equal(json_string_value(json_object_get(a, "name")), "a");
	assert_true(json_real_value(json_object_get(a, "ts")) == 1234.567);
	assert_true(json_real_value(json_object_get(a, "dur")) == 0.999);
	json_decref(doc);
	free(out);
}

static void test_chrome_escaping(void **state)
{
	(void)state;
	const char *dev[] = { "dev \"0\"\\" };
	struct sched_span s[] = {
		{ .name = "q\"b\\s/n\nt\tc\x01\x1f" },
		{ .name = "caf\xc3\xa9 \xff bad \xed\xa0\x80 x" }, /* valid, invalid, surrogate */
		{ .name = NULL },
	};
	struct sched_view v = {
		.title = "<&>\x7f", .ndevices = 1, .devices = dev, .nspans = 3, .spans = s
	};
	char *out = chrome(&v);
	assert_non_null(strstr(out, "\"name\":\"q\\\"b\\\\s/n\\nt\\tc\\u0001\\u001f\""));
	assert_non_null(strstr(out, "\"name\":\"dev \\\"0\\\"\\\\\""));
	assert_non_null(strstr(out, "\"name\":\"<&>\\u007f\""));
	json_t *doc = parse(out);
	json_t *ev = events(doc);
	json_t *title = json_object_get(json_object_get(json_array_get(ev, 0), "args"), "name");
	assert_string_equal(json_string_value(title), "<&>\x7f");
	json_t *dname = json_object_get(json_object_get(json_array_get(ev, 1), "args"), "name");
	assert_string_equal(json_string_value(dname), "dev \"0\"\\");
	assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 3), "name")),
	                    "q\"b\\s/n\nt\tc\x01\x1f");
	assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 4), "name")),
	                    "caf\xc3\xa9 \xef\xbf\xbd bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd x");
	assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 5), "name")), "");
	json_decref(doc);
	free(out);
}

static void test_chrome_copies(void **state)
{
	(void)state;
	const char *links[] = { "h2d gpu0", "d2h gpu0" };
	struct sched_span c[] = {
		{ .device = 1,
		  .start_ns = 100,
		  .end_ns = 2100,
		  .name = "x",
		  .graph = 3,
		  .task = 4,
		  .bytes = 4096 },
		{ .device = 0,
		  .start_ns = 0,
		  .end_ns = 50,
		  .name = "y",
		  .graph = 3,
		  .task = 1,
		  .bytes = UINT64_C(1) << 40 },
	};
	struct sched_view v = small_view;
	v.nlinks = 2;
	v.links = links;
	v.ncopies = 2;
	v.copies = c;
	char *out = chrome(&v);
	assert_non_null(strstr(out, "{\"name\":\"x\",\"cat\":\"copy\",\"ph\":\"X\",\"ts\":0.100,"
	                            "\"dur\":2.000,\"pid\":1,\"tid\":4,"
	                            "\"args\":{\"graph\":3,\"task\":4,\"bytes\":4096}}"));
	json_t *doc = parse(out);
	json_t *ev = events(doc);
	assert_int_equal(json_array_size(ev), 1 + 2 * 4 + 3 + 2);
	assert_int_equal(count_ph(ev, "M"), 1 + 2 * 4);
	assert_int_equal(count_ph(ev, "X"), 5);
	/* Tracks in order: devices, then links, sort index = tid - 1. */
	const char *names[] = { "cpu0", "gpu0", "h2d gpu0", "d2h gpu0" };
	for (size_t t = 0; t < 4; t++) {
		json_t *tn = json_array_get(ev, 1 + 2 * t), *si = json_array_get(ev, 2 + 2 * t);
		assert_string_equal(json_string_value(json_object_get(tn, "name")), "thread_name");
		assert_int_equal(json_integer_value(json_object_get(tn, "tid")), t + 1);
		assert_string_equal(
		        json_string_value(json_object_get(json_object_get(tn, "args"), "name")),
		        names[t]);
		assert_string_equal(json_string_value(json_object_get(si, "name")),
		                    "thread_sort_index");
		assert_int_equal(json_integer_value(json_object_get(si, "tid")), t + 1);
		assert_int_equal(json_integer_value(json_object_get(json_object_get(si, "args"),
		                                                    "sort_index")),
		                 t);
	}
	json_t *y = json_array_get(ev, 1 + 8 + 3 + 1);
	assert_string_equal(json_string_value(json_object_get(y, "cat")), "copy");
	assert_int_equal(json_integer_value(json_object_get(y, "tid")), 3);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(y, "args"), "bytes")),
	                 UINT64_C(1) << 40);
	/* Tasks carry no bytes. */
	json_t *task = json_array_get(ev, 9);
	assert_null(json_object_get(json_object_get(task, "args"), "bytes"));
	json_decref(doc);
	free(out);
}

static void test_chrome_empty(void **state)
{
	(void)state;
	struct sched_view v = { .title = NULL };
	char *out = chrome(&v);
	assert_string_equal(out, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
	                         "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,"
	                         "\"args\":{\"name\":\"\"}}\n]}\n");
	json_decref(parse(out));
	free(out);
}

static void test_invalid(void **state)
{
	(void)state;
	struct sched_span bad = { .device = 2, .name = "x" };
	struct sched_view v = small_view;
	v.nspans = 1;
	v.spans = &bad;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(sched_write_chrome(f, &v), -TDM_EINVAL);
	assert_int_equal(sched_write_svg(f, &v, 0), -TDM_EINVAL);
	v = small_view;
	v.ncopies = 1;
	v.copies = &three_spans[0]; /* device 0, but there are no links */
	assert_int_equal(sched_write_chrome(f, &v), -TDM_EINVAL);
	v.nlinks = 1;
	assert_int_equal(sched_write_chrome(f, &v), -TDM_EINVAL); /* links NULL */
	assert_int_equal(sched_write_chrome(f, NULL), -TDM_EINVAL);
	assert_int_equal(sched_write_svg(NULL, &small_view, 0), -TDM_EINVAL);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(len, 0); /* nothing written */
	free(buf);
}

static void test_write_error(void **state)
{
	(void)state;
	FILE *f = fopen("/dev/full", "w");
	if (!f) {
		skip(); /* no /dev/full here */
		return;
	}
	assert_int_equal(sched_write_chrome(f, &small_view), -TDM_ESYS);
	clearerr(f);
	assert_int_equal(sched_write_svg(f, &small_view, 0), -TDM_ESYS);
	fclose(f);
}

/* ---- SVG ----------------------------------------------------------------------- */

static void test_svg_small(void **state)
{
	(void)state;
	const char *links[] = { "h2d <gpu0>" };
	struct sched_span c[] = {
		{ .device = 0,
		  .start_ns = 500,
		  .end_ns = 1500,
		  .name = "buf",
		  .graph = 1,
		  .bytes = 64 },
	};
	struct sched_span s[4];
	memcpy(s, three_spans, sizeof(three_spans));
	s[3] = (struct sched_span){
		.device = 1, .start_ns = 3000, .end_ns = 9000, .name = "a<&>\"b", .graph = 12
	};
	struct sched_view v = { .title = "t & <u>",
		                .ndevices = 2,
		                .devices = two_devices,
		                .nspans = 4,
		                .spans = s,
		                .nlinks = 1,
		                .links = links,
		                .ncopies = 1,
		                .copies = c };
	char *out = svg(&v, 0);
	check_xml(out);
	assert_non_null(strstr(out, "width=\"1200\""));
	assert_int_equal(count(out, "<rect"), 5);
	assert_int_equal(count(out, "<rect class=\"t\""), 4);
	assert_int_equal(count(out, "<rect class=\"c\""), 1);
	assert_int_equal(count(out, "<title>"), 1 + 5);
	/* Escaped everywhere, never raw. */
	assert_null(strstr(out, "<&>"));
	assert_null(strstr(out, "<gpu0>"));
	assert_non_null(strstr(out, "<title>a&lt;&amp;&gt;&quot;b: 0.003&#8211;0.009 ms"));
	assert_non_null(strstr(out, ">h2d &lt;gpu0&gt;</text>"));
	assert_int_equal(count(out, "t &amp; &lt;u&gt;"), 2); /* <title> and heading */
	/* Tooltips: ms from the earliest start; copies say their bytes. */
	assert_non_null(strstr(out, "<title>gemm: 0.002&#8211;1.237 ms (graph 1, task 2)</title>"));
	assert_non_null(
	        strstr(out, "<title>buf: 0.001&#8211;0.002 ms (graph 1, task 0, 64 bytes)"));
	/* Colour by graph: graph 12 and graph 2 share, 0 and 1 differ. */
	assert_non_null(strstr(out, "fill=\"#e15759\"><title>a&lt;"));
	assert_non_null(strstr(out, "fill=\"#4e79a7\"><title>potrf"));
	assert_non_null(strstr(out, "fill=\"#f28e2b\"><title>gemm"));
	/* Labels in track order. */
	char *cpu = strstr(out, ">cpu0</text>"), *gpu = strstr(out, ">gpu0</text>"),
	     *h2d = strstr(out, ">h2d &lt;gpu0&gt;</text>");
	assert_true(cpu && gpu && h2d && cpu < gpu && gpu < h2d);
	/* 1.24 ms over ~1100 px: ticks every 200 us, labelled in ms. */
	assert_non_null(strstr(out, ">0.0 ms</text>"));
	assert_non_null(strstr(out, ">0.2 ms</text>"));
	assert_non_null(strstr(out, ">1.2 ms</text>"));
	assert_null(strstr(out, ">1.4 ms</text>"));
	assert_null(strstr(out, " us</text>"));
	free(out);
}

static void test_svg_ticks(void **state)
{
	(void)state;
	const char *dev[] = { "d" };
	struct {
		uint64_t start, end;
		const char *has, *hasnt;
	} cases[] = {
		{ 0, 10000000, ">4 ms</text>", ">12 ms</text>" },
		{ 1000, 51000, ">20 us</text>", ">60 us</text>" },
		{ 0, 30000000000ull, ">30 s</text>", ">35 s</text>" },
		{ 0, 700, ">500 ns</text>", ">800 ns</text>" },
		{ 5, 5, ">0 ns</text>", ">2 ns</text>" }, /* one zero-length span */
		{ 0, 3500000, ">0.5 ms</text>", ">500 us</text>" },
		{ 0, 1234567890123ull, ">1200 s</text>", ">1400 s</text>" },
		{ 0, 1500000000ull, ">1.4 s</text>", ">1.6 s</text>" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sched_span s = { .start_ns = cases[i].start,
			                .end_ns = cases[i].end,
			                .name = "k" };
		struct sched_view v = {
			.title = "x", .ndevices = 1, .devices = dev, .nspans = 1, .spans = &s
		};
		char *out = svg(&v, 1000);
		check_xml(out);
		assert_non_null(strstr(out, cases[i].has));
		assert_null(strstr(out, cases[i].hasnt));
		size_t ticks = count(out, "text-anchor=\"middle\"");
		assert_in_range(ticks, 2, 11);
		free(out);
	}
}

static void test_svg_empty(void **state)
{
	(void)state;
	struct sched_view none = { 0 };
	char *out = svg(&none, 0);
	check_xml(out);
	assert_int_equal(count(out, "<rect"), 0);
	free(out);

	struct sched_view devs = { .title = "idle", .ndevices = 2, .devices = two_devices };
	out = svg(&devs, 50); /* below the minimum width */
	check_xml(out);
	assert_int_equal(count(out, "<rect"), 0);
	assert_non_null(strstr(out, ">gpu0</text>"));
	assert_non_null(strstr(out, "width=\"200\""));
	free(out);
}

static void test_deterministic(void **state)
{
	(void)state;
	char *a = svg(&small_view, 800), *b = svg(&small_view, 800);
	assert_string_equal(a, b);
	free(a);
	free(b);
	a = chrome(&small_view);
	b = chrome(&small_view);
	assert_string_equal(a, b);
	free(a);
	free(b);
}

/* A large schedule: 4 devices, back-to-back 10 us tasks, and one long task
 * per device that stays a rectangle of its own. */
#define NLARGE 100000

static void large_view(struct sched_view *v, struct sched_span *s, const char *const *dev)
{
	uint64_t t[4] = { 0 };
	for (size_t i = 0; i < NLARGE; i++) {
		uint32_t d = (uint32_t)(i % 4);
		uint64_t len = i < 4 ? 50000000 : 10000 + i % 7;
		s[i] = (struct sched_span){ .device = d,
			                    .start_ns = t[d],
			                    .end_ns = t[d] + len,
			                    .name = "kernel",
			                    .graph = (uint32_t)(i / 1000),
			                    .task = (uint32_t)i };
		t[d] += len;
	}
	*v = (struct sched_view){
		.title = "large", .ndevices = 4, .devices = dev, .nspans = NLARGE, .spans = s
	};
}

static void test_large(void **state)
{
	(void)state;
	const char *dev[] = { "cpu0", "cpu1", "gpu0", "gpu1" };
	struct sched_span *s = malloc(NLARGE * sizeof(*s));
	assert_non_null(s);
	struct sched_view v;
	large_view(&v, s, dev);

	clock_t c0 = clock();
	char *out = chrome(&v);
	clock_t c1 = clock();
	json_t *doc = parse(out);
	json_t *ev = events(doc);
	assert_int_equal(json_array_size(ev), 1 + 2 * 4 + NLARGE);
	json_t *last = json_array_get(ev, 1 + 8 + NLARGE - 1);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(last, "args"), "task")),
	                 NLARGE - 1);
	json_decref(doc);
	free(out);

	clock_t c2 = clock();
	out = svg(&v, 0);
	clock_t c3 = clock();
	check_xml(out);
	/* Merged: a few rectangles a row, not 100k; the long tasks are their own. */
	size_t rects = count(out, "<rect");
	assert_in_range(rects, 4, 40);
	assert_int_equal(count(out, "<rect class=\"t\""), 4);
	assert_non_null(strstr(out, "<title>24999 spans: 50.000&#8211;"));
	char *again = svg(&v, 0);
	assert_string_equal(out, again);
	print_message("large: chrome %.3f s (%zu spans), svg %.3f s (%zu rects)\n",
	              (double)(c1 - c0) / CLOCKS_PER_SEC, (size_t)NLARGE,
	              (double)(c3 - c2) / CLOCKS_PER_SEC, rects);
	free(again);
	free(out);
	free(s);
}

/* Merging joins only narrow neighbours on one row: a gap wider than half a
 * pixel starts a new rectangle, and runs of one are drawn as themselves. */
static void test_svg_merge_rules(void **state)
{
	(void)state;
	const char *dev[] = { "a", "b" };
	const char *links[] = { "h2d" };
	size_t n = 30000;
	struct sched_span *s = calloc(n, sizeof(*s));
	assert_non_null(s);
	/* Row a: 10000 tasks of 1 ns from 0, a gap, 9999 more; one 1 ns task
	 * alone at the far end. Row b: 10000 tasks of graph 7 (one colour). */
	for (size_t i = 0; i < 10000; i++)
		s[i] = (struct sched_span){
			.device = 0, .start_ns = i, .end_ns = i + 1, .name = "x"
		};
	for (size_t i = 0; i < 9999; i++)
		s[10000 + i] = (struct sched_span){ .device = 0,
			                            .start_ns = 500000 + i,
			                            .end_ns = 500000 + i + 1,
			                            .name = "y",
			                            .graph = (uint32_t)i };
	s[19999] = (struct sched_span){
		.device = 0, .start_ns = 999999, .end_ns = 1000000, .name = "lonely"
	};
	for (size_t i = 0; i < 10000; i++)
		s[20000 + i] = (struct sched_span){ .device = 1,
			                            .start_ns = 20000 - 2 * i,
			                            .end_ns = 20000 - 2 * i + 1,
			                            .name = "z",
			                            .graph = 7 };
	struct sched_span copy = {
		.device = 0, .start_ns = 0, .end_ns = 1000000, .name = "big", .bytes = 1
	};
	struct sched_view v = { .title = "m",
		                .ndevices = 2,
		                .devices = dev,
		                .nspans = n,
		                .spans = s,
		                .nlinks = 1,
		                .links = links,
		                .ncopies = 1,
		                .copies = &copy };
	char *out = svg(&v, 1000);
	check_xml(out);
	assert_int_equal(count(out, "<rect"), 5);
	assert_int_equal(count(out, "<rect class=\"m\""), 3);
	assert_non_null(strstr(out, "<title>10000 spans: 0.000&#8211;0.010 ms</title>"));
	assert_non_null(strstr(out, "fill=\"#888888\"><title>9999 spans: 0.500&#8211;0.510 ms"));
	assert_non_null(strstr(out, "fill=\"#ff9da7\"><title>10000 spans: 0.000&#8211;0.020 ms"));
	assert_non_null(strstr(out, "<rect class=\"t\""));
	assert_non_null(strstr(out, "<title>lonely: 1.000&#8211;1.000 ms"));
	assert_non_null(strstr(out, "<rect class=\"c\""));
	free(out);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chrome_exact),    cmocka_unit_test(test_chrome_times),
		cmocka_unit_test(test_chrome_escaping), cmocka_unit_test(test_chrome_copies),
		cmocka_unit_test(test_chrome_empty),    cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_write_error),     cmocka_unit_test(test_svg_small),
		cmocka_unit_test(test_svg_ticks),       cmocka_unit_test(test_svg_empty),
		cmocka_unit_test(test_deterministic),   cmocka_unit_test(test_large),
		cmocka_unit_test(test_svg_merge_rules),
	};
	return cmocka_run_group_tests_name("schedule_out", tests, NULL, NULL);
}
