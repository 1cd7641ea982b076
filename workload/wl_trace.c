/* tandem traces: the JSON Lines reader and writer (docs/trace-format.md).
 *
 * The reader takes one record per line, each parsed on its own with
 * jansson, so that a message names the line at fault. Buffer and graph ids
 * are looked up in hash tables whose hash is keyed per parse with a random
 * seed, so that no input can be built to make lookups slow. */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "workload/workload.h"
#include "policies/policy.h"
#include "tandem.h"

#define TR_VERSION 1
#define TR_LINE_MAX ((size_t)1 << 20) /* bytes of one line, without its '\n' */
#define TR_MAX_NS 1e18 /* times, costs and edge data (about 31 years in ns) */
#define TR_MAX_DEVICES 64u
#define TR_MAX_BUFS WL_MAX_EDGES
#define TR_NOIDX UINT32_MAX

/* ---- shared by the reader and the writer ------------------------------------- */

static const char *mode_name(uint8_t mode)
{
	switch (mode) {
	case TDM_R: return "r";
	case TDM_W: return "w";
	case TDM_RW: return "rw";
	case TDM_ACC: return "acc";
	default: return NULL;
	}
}

/* A task's cost from its row of dev_cost: the mean over the devices it can
 * run on (entries >= 0), exactly the entry when they are all equal (as
 * workload/wl_gen.c computes it). */
static double row_mean(const double *row, uint32_t n)
{
	double sum = 0, first = -1;
	uint32_t k = 0;
	bool same = true;

	for (uint32_t d = 0; d < n; d++) {
		if (row[d] < 0)
			continue;
		if (k++ == 0)
			first = row[d];
		same = same && row[d] == first;
		sum += row[d];
	}
	return !k ? 0 : same ? first : sum / k;
}

/* ---- id maps ----------------------------------------------------------------- */

struct idslot {
	uint32_t key, val; /* val TR_NOIDX: empty */
};

struct idmap {
	struct idslot *slot;
	uint32_t cap, n; /* cap: a power of two, at least twice n */
	uint64_t seed;
};

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void idmap_init(struct idmap *m)
{
	uint64_t seed = 0;

	memset(m, 0, sizeof(*m));
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)m;
	}
	m->seed = seed;
}

static void idmap_free(struct idmap *m)
{
	free(m->slot);
	m->slot = NULL;
	m->cap = m->n = 0;
}

static uint32_t idmap_get(const struct idmap *m, uint32_t key)
{
	uint32_t i;

	if (!m->cap)
		return TR_NOIDX;
	for (i = (uint32_t)mix64(key ^ m->seed) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		if (m->slot[i].val == TR_NOIDX)
			return TR_NOIDX;
		if (m->slot[i].key == key)
			return m->slot[i].val;
	}
}

static void idmap_place(struct idslot *slot, uint32_t cap, uint64_t seed, uint32_t key,
                        uint32_t val)
{
	uint32_t i = (uint32_t)mix64(key ^ seed) & (cap - 1);

	while (slot[i].val != TR_NOIDX)
		i = (i + 1) & (cap - 1);
	slot[i] = (struct idslot){ .key = key, .val = val };
}

/* Adds key (absent) -> val. 0 or -TDM_ENOMEM. */
static int idmap_put(struct idmap *m, uint32_t key, uint32_t val)
{
	if ((uint64_t)(m->n + 1) * 2 > m->cap) {
		uint32_t cap = m->cap ? 2 * m->cap : 64;
		struct idslot *s = malloc((size_t)cap * sizeof(*s));

		if (!s)
			return -TDM_ENOMEM;
		for (uint32_t i = 0; i < cap; i++)
			s[i].val = TR_NOIDX;
		for (uint32_t i = 0; i < m->cap; i++)
			if (m->slot[i].val != TR_NOIDX)
				idmap_place(s, cap, m->seed, m->slot[i].key, m->slot[i].val);
		free(m->slot);
		m->slot = s;
		m->cap = cap;
	}
	idmap_place(m->slot, m->cap, m->seed, key, val);
	m->n++;
	return 0;
}

/* ---- reader ------------------------------------------------------------------ */

struct tr {
	const char *name;
	char *err;
	size_t errlen;
	unsigned long line;
	struct workload *w;
	uint32_t task_cap, edge_cap, graph_cap, buf_cap, cost_cap; /* cost_cap: rows */
	struct idmap bufs, gids;
	bool have_header;
	uint32_t gid; /* the last graph's id */
};

/* Bytes that are not printable ASCII become '?', so that messages stay
 * one printable line whatever the input held. */
static void clean(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

static int vfail(struct tr *s, int col, const char *fmt, va_list ap)
{
	int n;

	if (!s->err || !s->errlen)
		return -TDM_EINVAL;
	if (col > 0)
		n = snprintf(s->err, s->errlen, "%s:%lu:%d: ", s->name, s->line ? s->line : 1, col);
	else
		n = snprintf(s->err, s->errlen, "%s:%lu: ", s->name, s->line ? s->line : 1);
	if (n >= 0 && (size_t)n < s->errlen) {
		vsnprintf(s->err + n, s->errlen - (size_t)n, fmt, ap);
		clean(s->err + n);
	}
	return -TDM_EINVAL;
}

static int fail(struct tr *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct tr *s, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail(s, 0, fmt, ap);
	va_end(ap);
	return rc;
}

static int fail_col(struct tr *s, int col, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int fail_col(struct tr *s, int col, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vfail(s, col, fmt, ap);
	va_end(ap);
	return rc;
}

static int nomem(struct tr *s)
{
	if (s->err && s->errlen)
		snprintf(s->err, s->errlen, "%s: out of memory", s->name);
	return -TDM_ENOMEM;
}

/* A string from the input, quoted and cut short, for messages (the message
 * is made printable as a whole). */
struct shown {
	char s[48];
};

static struct shown show(const char *str)
{
	struct shown o;
	size_t n = strlen(str);

	if (n > 32)
		snprintf(o.s, sizeof(o.s), "\"%.32s...\"", str);
	else
		snprintf(o.s, sizeof(o.s), "\"%s\"", str);
	return o;
}

/* Every key of o is one of keys[] (NULL-terminated). */
static int check_keys(struct tr *s, json_t *o, const char *label, const char *const *keys)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v)
	{
		const char *const *k = keys;

		while (*k && strcmp(*k, key))
			k++;
		if (!*k)
			return fail(s, "%s: unknown key %s", label, show(key).s);
	}
	return 0;
}

/* o[key] as an integer in lo .. hi; *have (if given) says whether it is
 * there; a missing key is an error when required. */
static int get_int(struct tr *s, json_t *o, const char *label, const char *key, long long lo,
                   long long hi, bool required, long long *out)
{
	json_t *v = json_object_get(o, key);
	long long x;

	if (!v)
		return required ? fail(s, "%s: missing \"%s\"", label, key) : 0;
	if (!json_is_integer(v))
		return fail(s, "%s: \"%s\" is not an integer", label, key);
	x = json_integer_value(v);
	if (x < 0 && lo == 0)
		return fail(s, "%s: \"%s\" is negative (%lld)", label, key, x);
	if (x < lo || x > hi)
		return fail(s, "%s: \"%s\" %lld is outside %lld..%lld", label, key, x, lo, hi);
	*out = x;
	return 0;
}

/* A JSON number in 0 .. max. */
static int num_value(struct tr *s, json_t *v, const char *label, const char *what, double max,
                     double *out)
{
	double x;

	if (!json_is_number(v))
		return fail(s, "%s: %s is not a number", label, what);
	x = json_number_value(v);
	if (!isfinite(x))
		return fail(s, "%s: %s is not finite", label, what);
	if (x < 0)
		return fail(s, "%s: %s is negative (%g)", label, what, x);
	if (x > max)
		return fail(s, "%s: %s %g exceeds %g", label, what, x, max);
	*out = x;
	return 0;
}

/* o[key] as a number in 0 .. max, left alone when absent. */
static int get_num(struct tr *s, json_t *o, const char *label, const char *key, double max,
                   double *out)
{
	json_t *v = json_object_get(o, key);
	char what[40];

	if (!v)
		return 0;
	snprintf(what, sizeof(what), "\"%s\"", key);
	return num_value(s, v, label, what, max, out);
}

static int get_str(struct tr *s, json_t *o, const char *label, const char *key, const char **out)
{
	json_t *v = json_object_get(o, key);

	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(s, "%s: \"%s\" is not a string", label, key);
	*out = json_string_value(v);
	return 0;
}

/* The header's device named by a string, or by its index in the list. */
static int find_device(struct tr *s, json_t *v, const char *label, uint32_t *dev)
{
	const struct workload *w = s->w;

	if (json_is_string(v)) {
		for (uint32_t d = 0; d < w->ndev_names; d++)
			if (!strcmp(w->dev_names[d], json_string_value(v))) {
				*dev = d;
				return 0;
			}
		return fail(s, "%s: device %s is not in the header's devices", label,
		            show(json_string_value(v)).s);
	}
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0 || json_integer_value(v) >= w->ndev_names)
			return fail(s,
			            "%s: device %lld is not an index into the header's %u devices",
			            label, (long long)json_integer_value(v), w->ndev_names);
		*dev = (uint32_t)json_integer_value(v);
		return 0;
	}
	return fail(s, "%s: \"device\" is not a device name or index", label);
}

static int rec_header(struct tr *s, json_t *o)
{
	static const char *const keys[] = { "tandem_trace", "machine", "policy", "devices", NULL };
	struct workload *w = s->w;
	json_t *v = json_object_get(o, "tandem_trace"), *devs, *d;
	const char *str = NULL;
	size_t i;
	int rc;

	if (s->have_header)
		return fail(s, "a second header");
	if (!json_is_integer(v))
		return fail(s, "header: \"tandem_trace\" is not an integer");
	if (json_integer_value(v) != TR_VERSION)
		return fail(s, "unsupported trace version %lld (this reader knows version %d)",
		            (long long)json_integer_value(v), TR_VERSION);
	rc = check_keys(s, o, "header", keys);
	if (!rc)
		rc = get_str(s, o, "header", "machine", &str);
	if (!rc)
		rc = get_str(s, o, "header", "policy", &str);
	if (rc)
		return rc;
	devs = json_object_get(o, "devices");
	if (devs && !json_is_array(devs))
		return fail(s, "header: \"devices\" is not an array");
	if (json_array_size(devs) > TR_MAX_DEVICES)
		return fail(s, "header: %zu devices, at most %u", json_array_size(devs),
		            TR_MAX_DEVICES);
	if (json_array_size(devs)) {
		w->dev_names = calloc(json_array_size(devs), sizeof(*w->dev_names));
		if (!w->dev_names)
			return nomem(s);
	}
	json_array_foreach(devs, i, d)
	{
		const char *name;
		size_t len;

		if (!json_is_string(d))
			return fail(s, "header: devices[%zu] is not a string", i);
		name = json_string_value(d);
		len = json_string_length(d);
		if (len == 0 || len >= WL_NAME_MAX)
			return fail(s, "header: devices[%zu] must have 1..%d bytes", i,
			            WL_NAME_MAX - 1);
		for (size_t k = 0; k < len; k++)
			if ((unsigned char)name[k] <= 0x20 || (unsigned char)name[k] >= 0x7f)
				return fail(s,
				            "header: devices[%zu] %s: only printable ASCII without "
				            "blanks",
				            i, show(name).s);
		for (uint32_t k = 0; k < w->ndev_names; k++)
			if (!strcmp(w->dev_names[k], name))
				return fail(s, "header: devices[%zu]: device %s listed twice", i,
				            show(name).s);
		memcpy(w->dev_names[i], name, len + 1);
		w->ndev_names = (uint32_t)i + 1;
	}
	s->have_header = true;
	return 0;
}

static int rec_buffer(struct tr *s, json_t *o)
{
	static const char *const keys[] = { "buffer", "bytes", "keep", NULL };
	struct workload *w = s->w;
	char label[40] = "buffer record";
	long long id = 0;
	double bytes = 0;
	json_t *keep;
	uint32_t cap;
	int rc;

	rc = get_int(s, o, label, "buffer", 0, UINT32_MAX, true, &id);
	if (rc)
		return rc;
	snprintf(label, sizeof(label), "buffer %lld", id);
	rc = check_keys(s, o, label, keys);
	if (rc)
		return rc;
	if (!json_object_get(o, "bytes"))
		return fail(s, "%s: missing \"bytes\"", label);
	rc = get_num(s, o, label, "bytes", WL_MAX_BYTES, &bytes);
	if (rc)
		return rc;
	if (bytes != floor(bytes))
		return fail(s, "%s: \"bytes\" %g is not a whole number", label, bytes);
	keep = json_object_get(o, "keep");
	if (keep && !json_is_boolean(keep))
		return fail(s, "%s: \"keep\" is not true or false", label);
	if (idmap_get(&s->bufs, (uint32_t)id) != TR_NOIDX)
		return fail(s, "%s: buffer id declared twice", label);
	if (w->nbufs == TR_MAX_BUFS)
		return fail(s, "more than %u buffers", TR_MAX_BUFS);
	cap = s->buf_cap;
	if (wl_grow((void **)&w->buf_bytes, &cap, w->nbufs + 1, sizeof(*w->buf_bytes), TR_MAX_BUFS))
		return nomem(s);
	cap = s->buf_cap;
	if (wl_grow((void **)&w->buf_keep, &cap, w->nbufs + 1, sizeof(*w->buf_keep), TR_MAX_BUFS))
		return nomem(s);
	s->buf_cap = cap;
	if (idmap_put(&s->bufs, (uint32_t)id, w->nbufs))
		return nomem(s);
	w->buf_bytes[w->nbufs] = bytes;
	w->buf_keep[w->nbufs] = json_is_true(keep);
	w->nbufs++;
	return 0;
}

/* The graph waiting for tasks: the last one, if it has fewer than it
 * announced. */
static struct wl_graph *open_graph(struct tr *s)
{
	struct workload *w = s->w;
	struct wl_graph *g = w->ngraphs ? &w->graphs[w->ngraphs - 1] : NULL;

	return g && w->ntasks - g->first < g->ntasks ? g : NULL;
}

static int rec_graph(struct tr *s, json_t *o)
{
	static const char *const keys[] = { "graph",  "arrival_ns",  "client", "priority",
		                            "policy", "deadline_ns", "tasks",  NULL };
	struct workload *w = s->w;
	struct wl_graph g = { .first = w->ntasks };
	struct wl_graph *open = open_graph(s);
	char label[40] = "graph record";
	long long id = 0, v = 0;
	const char *policy = NULL;
	int rc;

	if (open)
		return fail(s, "graph %u announced %u tasks but has %u", s->gid, open->ntasks,
		            w->ntasks - open->first);
	rc = get_int(s, o, label, "graph", 0, UINT32_MAX, true, &id);
	if (rc)
		return rc;
	snprintf(label, sizeof(label), "graph %lld", id);
	rc = check_keys(s, o, label, keys);
	if (!rc)
		rc = get_int(s, o, label, "tasks", 1, WL_MAX_TASKS, true, &v);
	if (rc)
		return rc;
	g.ntasks = (uint32_t)v;
	if (g.ntasks > WL_MAX_TASKS - w->ntasks)
		return fail(s, "%s: more than %u tasks in the trace", label, WL_MAX_TASKS);
	rc = get_num(s, o, label, "arrival_ns", TR_MAX_NS, &g.arrival_ns);
	if (!rc)
		rc = get_num(s, o, label, "deadline_ns", TR_MAX_NS, &g.deadline_ns);
	if (!rc) {
		v = 0;
		rc = get_int(s, o, label, "client", 0, UINT32_MAX, false, &v);
		g.client = (uint32_t)v;
	}
	if (!rc) {
		v = 0;
		rc = get_int(s, o, label, "priority", INT32_MIN, INT32_MAX, false, &v);
		g.priority = (int32_t)v;
	}
	if (!rc)
		rc = get_str(s, o, label, "policy", &policy);
	if (rc)
		return rc;
	if (policy) {
		int hint = policy_hint_by_name(policy);

		if (hint < 0)
			return fail(s,
			            "%s: unknown policy hint %s (default, eager, dmda, heft, peft "
			            "or prio)",
			            label, show(policy).s);
		g.policy_hint = (uint8_t)hint;
	}
	if (idmap_get(&s->gids, (uint32_t)id) != TR_NOIDX)
		return fail(s, "%s: graph id used twice", label);
	if (wl_grow((void **)&w->graphs, &s->graph_cap, w->ngraphs + 1, sizeof(*w->graphs),
	            WL_MAX_TASKS))
		return nomem(s);
	if (idmap_put(&s->gids, (uint32_t)id, w->ngraphs))
		return nomem(s);
	w->graphs[w->ngraphs++] = g;
	s->gid = (uint32_t)id;
	return 0;
}

/* Room for task v's row of dev_cost, once the trace has cost arrays. */
static int cost_row(struct tr *s, uint32_t v, double **row)
{
	struct workload *w = s->w;
	uint32_t cap = s->cost_cap;
	double *p;

	if (v >= cap) {
		while (cap <= v)
			cap = cap ? (cap > WL_MAX_TASKS / 2 ? WL_MAX_TASKS : 2 * cap) : 64;
		p = realloc(w->dev_cost, (size_t)cap * w->ndev_cost * sizeof(*p));
		if (!p)
			return nomem(s);
		w->dev_cost = p;
		s->cost_cap = cap;
	}
	*row = w->dev_cost + (size_t)v * w->ndev_cost;
	return 0;
}

static int task_args(struct tr *s, json_t *o, const char *label, struct wl_task *t)
{
	json_t *args = json_object_get(o, "args"), *a;
	size_t i;

	if (!args)
		return 0;
	if (!json_is_array(args))
		return fail(s, "%s: \"args\" is not an array", label);
	if (json_array_size(args) > TDM_MAX_ARGS)
		return fail(s, "%s: %zu arguments, at most %d", label, json_array_size(args),
		            TDM_MAX_ARGS);
	json_array_foreach(args, i, a)
	{
		json_t *id = json_array_get(a, 0), *mode = json_array_get(a, 1);
		uint32_t b;
		uint8_t m;

		if (!json_is_array(a) || json_array_size(a) != 2)
			return fail(s, "%s: args[%zu] is not a [buffer, mode] pair", label, i);
		if (!json_is_integer(id) || json_integer_value(id) < 0 ||
		    json_integer_value(id) > UINT32_MAX)
			return fail(s, "%s: args[%zu]: the buffer is not an id in 0..%u", label, i,
			            UINT32_MAX);
		b = idmap_get(&s->bufs, (uint32_t)json_integer_value(id));
		if (b == TR_NOIDX)
			return fail(s,
			            "%s: args[%zu]: unknown buffer %lld (no buffer record before)",
			            label, i, (long long)json_integer_value(id));
		if (!json_is_string(mode))
			return fail(s, "%s: args[%zu]: the mode is not a string", label, i);
		if (!strcmp(json_string_value(mode), "r"))
			m = TDM_R;
		else if (!strcmp(json_string_value(mode), "w"))
			m = TDM_W;
		else if (!strcmp(json_string_value(mode), "rw"))
			m = TDM_RW;
		else if (!strcmp(json_string_value(mode), "acc"))
			m = TDM_ACC;
		else
			return fail(s,
			            "%s: args[%zu]: mode %s is not \"r\", \"w\", \"rw\" or \"acc\"",
			            label, i, show(json_string_value(mode)).s);
		t->args[i] = (struct wl_arg){ .buf = b, .mode = m };
		t->nargs = (uint8_t)(i + 1);
	}
	return 0;
}

/* "cost_ns" of an abstract task: a number, or one per header device. */
static int task_cost(struct tr *s, json_t *o, const char *label, struct wl_task *t, uint32_t v)
{
	struct workload *w = s->w;
	json_t *c = json_object_get(o, "cost_ns"), *x;
	uint32_t nrun = 0;
	double *row;
	size_t d;
	int rc;

	if (!c || !json_is_array(c)) {
		rc = get_num(s, o, label, "cost_ns", TR_MAX_NS, &t->cost);
		if (rc || !w->dev_cost)
			return rc;
		rc = cost_row(s, v, &row);
		for (uint32_t k = 0; !rc && k < w->ndev_cost; k++)
			row[k] = t->cost;
		return rc;
	}
	if (!w->ndev_names)
		return fail(s, "%s: a \"cost_ns\" array needs the devices in the header", label);
	if (json_array_size(c) != w->ndev_names)
		return fail(s, "%s: \"cost_ns\" has %zu entries for %u devices", label,
		            json_array_size(c), w->ndev_names);
	if (!w->dev_cost) {
		/* the first array: earlier tasks cost the same everywhere */
		w->ndev_cost = w->ndev_names;
		for (uint32_t u = 0; u <= v; u++) {
			rc = cost_row(s, u, &row);
			if (rc)
				return rc;
			for (uint32_t k = 0; u < v && k < w->ndev_cost; k++)
				row[k] = w->tasks[u].cost;
		}
	}
	rc = cost_row(s, v, &row);
	if (rc)
		return rc;
	json_array_foreach(c, d, x)
	{
		char what[40];

		snprintf(what, sizeof(what), "cost_ns[%zu]", d);
		if (json_is_number(x) && json_number_value(x) == -1) {
			row[d] = -1;
			continue;
		}
		if (json_is_number(x) && json_number_value(x) < 0)
			return fail(s, "%s: %s is negative (%g) but not -1 (cannot run there)",
			            label, what, json_number_value(x));
		rc = num_value(s, x, label, what, TR_MAX_NS, &row[d]);
		if (rc)
			return rc;
		nrun++;
	}
	if (!nrun)
		return fail(s, "%s: \"cost_ns\" is -1 on every device: the task cannot run", label);
	t->cost = row_mean(row, w->ndev_cost);
	return 0;
}

static int task_after(struct tr *s, json_t *o, const char *label, uint32_t idx, uint32_t first)
{
	struct workload *w = s->w;
	json_t *after = json_object_get(o, "after"), *a;
	const struct wl_task *t = &w->tasks[first + idx];
	size_t i;
	int rc;

	if (!after)
		return 0;
	if (!json_is_array(after))
		return fail(s, "%s: \"after\" is not an array", label);
	json_array_foreach(after, i, a)
	{
		json_t *p = json_is_array(a) ? json_array_get(a, 0) : a;
		const struct wl_task *pt;
		double data = 0;
		long long pi;

		if (json_is_array(a) && json_array_size(a) != 2)
			return fail(s, "%s: after[%zu] is not a task index or [index, data_bytes]",
			            label, i);
		if (!json_is_integer(p))
			return fail(s, "%s: after[%zu]: the task index is not an integer", label,
			            i);
		pi = json_integer_value(p);
		if (pi < 0 || pi >= idx)
			return fail(s, "%s: after[%zu]: %lld is not an earlier task of this graph",
			            label, i, pi);
		pt = &w->tasks[first + (uint32_t)pi];
		if (json_is_array(a)) {
			char what[40];

			snprintf(what, sizeof(what), "after[%zu]: the data", i);
			rc = num_value(s, json_array_get(a, 1), label, what, TR_MAX_NS, &data);
			if (rc)
				return rc;
		} else if (pt->has_kernel && t->has_kernel) {
			data = wl_kernel_edge_data(pt, t, w->buf_bytes);
		}
		if (w->nedges == WL_MAX_EDGES)
			return fail(s, "more than %u edges", WL_MAX_EDGES);
		if (wl_grow((void **)&w->edges, &s->edge_cap, w->nedges + 1, sizeof(*w->edges),
		            WL_MAX_EDGES))
			return nomem(s);
		w->edges[w->nedges++] = (struct wl_edge){ .src = first + (uint32_t)pi,
			                                  .dst = first + idx,
			                                  .data = data };
		/* w->tasks may not move while t and pt are in use: the grow
		 * above is of edges only */
	}
	return 0;
}

static int rec_task(struct tr *s, json_t *o)
{
	static const char *const keys[] = { "task",     "name",   "kernel",  "flops",    "bytes",
		                            "domain",   "args",   "after",   "priority", "device",
		                            "start_ns", "end_ns", "cost_ns", "skipped",  NULL };
	static const char *const kernel_only[] = { "flops", "bytes",   "domain",
		                                   "args",  "skipped", NULL };
	struct workload *w = s->w;
	struct wl_graph *g = open_graph(s);
	char label[40] = "task record";
	const char *kernel = NULL, *name = NULL;
	long long idx = 0, prio = 0;
	json_t *dev, *start, *end, *skipped;
	struct wl_task *t;
	uint32_t v = w->ntasks;
	int rc;

	rc = get_int(s, o, label, "task", 0, UINT32_MAX, true, &idx);
	if (rc)
		return rc;
	snprintf(label, sizeof(label), "task %lld", idx);
	rc = check_keys(s, o, label, keys);
	if (rc)
		return rc;
	if (!g) {
		if (!w->ngraphs)
			return fail(s, "%s: no graph record before it", label);
		return fail(s, "%s: graph %u already has its %u tasks", label, s->gid,
		            w->graphs[w->ngraphs - 1].ntasks);
	}
	if (idx != v - g->first)
		return fail(s, "%s: expected task %u of graph %u (tasks are numbered 0, 1, 2...)",
		            label, v - g->first, s->gid);
	if (wl_grow((void **)&w->tasks, &s->task_cap, v + 1, sizeof(*w->tasks), WL_MAX_TASKS))
		return nomem(s);
	t = &w->tasks[v];
	memset(t, 0, sizeof(*t));
	t->graph = w->ngraphs - 1;

	rc = get_str(s, o, label, "kernel", &kernel);
	if (!rc)
		rc = get_str(s, o, label, "name", &name);
	if (!rc)
		rc = get_int(s, o, label, "priority", INT32_MIN, INT32_MAX, false, &prio);
	if (rc)
		return rc;
	t->priority = (int32_t)prio;
	if (kernel) {
		int id = kernel_lookup(kernel);

		if (id < 0)
			return fail(s, "%s: unknown kernel %s", label, show(kernel).s);
		if (json_object_get(o, "cost_ns"))
			return fail(
			        s,
			        "%s: \"cost_ns\" is for tasks without a kernel (the cost models "
			        "give a kernel's)",
			        label);
		t->has_kernel = true;
		t->kernel = (uint16_t)id;
		rc = get_num(s, o, label, "flops", DBL_MAX, &t->feat.flops);
		if (!rc)
			rc = get_num(s, o, label, "bytes", DBL_MAX, &t->feat.bytes);
		if (!rc)
			rc = get_num(s, o, label, "domain", DBL_MAX, &t->feat.domain);
		if (!rc)
			rc = task_args(s, o, label, t);
		if (rc)
			return rc;
		for (unsigned i = 0; i < t->nargs; i++) {
			double b = w->buf_bytes[t->args[i].buf];

			if (t->args[i].mode & TDM_R)
				t->data_in += b;
			if (t->args[i].mode & TDM_W)
				t->data_out += b;
		}
		if (w->dev_cost) {
			double *row;

			rc = cost_row(s, v, &row);
			if (rc)
				return rc;
			for (uint32_t k = 0; k < w->ndev_cost; k++)
				row[k] = 0;
		}
	} else {
		for (const char *const *k = kernel_only; *k; k++)
			if (json_object_get(o, *k))
				return fail(
				        s,
				        "%s: \"%s\" is for kernel tasks (the task has no kernel)",
				        label, *k);
		rc = task_cost(s, o, label, t, v);
		if (rc)
			return rc;
	}
	if (name)
		wl_copy_name(t->name, name, SIZE_MAX);
	else if (kernel)
		wl_copy_name(t->name, kernel_by_id(t->kernel)->name, SIZE_MAX);
	else
		snprintf(t->name, sizeof(t->name), "t%lld", idx);

	dev = json_object_get(o, "device");
	if (dev) {
		uint32_t d = 0;

		rc = find_device(s, dev, label, &d);
		if (rc)
			return rc;
		t->rec_device = d + 1;
	}
	start = json_object_get(o, "start_ns");
	end = json_object_get(o, "end_ns");
	if (!start != !end)
		return fail(s, "%s: \"%s\" without \"%s\"", label, start ? "start_ns" : "end_ns",
		            start ? "end_ns" : "start_ns");
	rc = get_num(s, o, label, "start_ns", TR_MAX_NS, &t->rec_start_ns);
	if (!rc)
		rc = get_num(s, o, label, "end_ns", TR_MAX_NS, &t->rec_end_ns);
	if (rc)
		return rc;
	if (t->rec_start_ns > t->rec_end_ns)
		return fail(s, "%s: \"start_ns\" %.17g is after \"end_ns\" %.17g", label,
		            t->rec_start_ns, t->rec_end_ns);

	uint32_t nedges = w->nedges;
	rc = task_after(s, o, label, (uint32_t)idx, g->first);
	if (rc)
		return rc;
	/* Skipped when released: released by a predecessor (its router). */
	skipped = json_object_get(o, "skipped");
	if (skipped && !json_is_boolean(skipped))
		return fail(s, "%s: \"skipped\" is not true or false", label);
	t->skipped = json_is_true(skipped);
	if (t->skipped && w->nedges == nedges)
		return fail(s,
		            "%s: \"skipped\" without \"after\" (a task is skipped when its "
		            "router, run before it, sent it no token)",
		            label);
	w->ntasks = v + 1;
	return 0;
}

static int tr_record(struct tr *s, const char *text, size_t len)
{
	json_error_t je;
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	int rc;

	if (!o)
		return fail_col(s, je.column, "%s", je.text);
	if (!json_is_object(o))
		rc = fail(s, "a record must be a JSON object");
	else if (json_object_get(o, "tandem_trace"))
		rc = rec_header(s, o);
	else if (!s->have_header)
		rc = fail(s, "missing header: the first record must be {\"tandem_trace\":%d,...}",
		          TR_VERSION);
	else if (json_object_get(o, "task"))
		rc = rec_task(s, o);
	else if (json_object_get(o, "graph"))
		rc = rec_graph(s, o);
	else if (json_object_get(o, "buffer"))
		rc = rec_buffer(s, o);
	else
		rc = fail(s, "not a header, buffer, graph or task record");
	json_decref(o);
	return rc;
}

static int tr_parse(struct tr *s, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	const struct wl_graph *g;

	if (len > WL_MAX_INPUT)
		return fail(s, "input of %zu bytes exceeds the limit of %zu", len,
		            (size_t)WL_MAX_INPUT);
	while (p < end) {
		const char *ls = p, *le = memchr(p, '\n', (size_t)(end - p)), *q;
		int rc;

		p = le ? le + 1 : end;
		if (!le)
			le = end;
		s->line++;
		if ((size_t)(le - ls) > TR_LINE_MAX)
			return fail(s, "line of %zu bytes exceeds the limit of %zu",
			            (size_t)(le - ls), TR_LINE_MAX);
		for (q = ls; q < le && (*q == ' ' || *q == '\t' || *q == '\r');)
			q++;
		if (q == le || *q == '#')
			continue; /* blank or comment */
		rc = tr_record(s, ls, (size_t)(le - ls));
		if (rc)
			return rc;
	}
	if (!s->have_header)
		return fail(s, "empty trace: expected the header {\"tandem_trace\":%d,...}",
		            TR_VERSION);
	g = open_graph(s);
	if (g)
		return fail(s, "graph %u announced %u tasks but the trace ends after %u", s->gid,
		            g->ntasks, s->w->ntasks - g->first);
	return 0;
}

int wl_trace_parse(const char *text, size_t len, const char *name, struct workload *out, char *err,
                   size_t errlen)
{
	struct tr s = { .name = name ? name : "trace", .err = err, .errlen = errlen, .w = out };
	int rc;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	if (!text && len)
		return fail(&s, "no input");
	idmap_init(&s.bufs);
	idmap_init(&s.gids);
	rc = tr_parse(&s, text ? text : "", len);
	idmap_free(&s.bufs);
	idmap_free(&s.gids);
	if (rc) {
		wl_free(out);
		return rc;
	}
	wl_sort_edges(out);
	out->units = WL_UNITS_NS;
	wl_copy_name(out->name, wl_basename(s.name), SIZE_MAX);
	return 0;
}

int wl_trace_load(const char *path, struct workload *out, char *err, size_t errlen)
{
	return wl_load_file(path, wl_trace_parse, out, err, errlen);
}

/* ---- writer ------------------------------------------------------------------ */

/* The shortest of %.15g, %.16g and %.17g that reads back as the same
 * double: integers come out as integers, and every value round-trips. */
static void put_num(FILE *f, double v)
{
	char b[40];

	if (v == 0) {
		fputs("0", f);
		return;
	}
	if (fabs(v) < 9007199254740992.0 && v == (double)(long long)v) {
		fprintf(f, "%lld", (long long)v); /* the common case, quickly */
		return;
	}
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(b, sizeof(b), "%.*g", prec, v);
		if (strtod(b, NULL) == v)
			break;
	}
	fputs(b, f);
}

static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static int done(FILE *f)
{
	return ferror(f) ? -TDM_ESYS : 0;
}

int wl_trace_write_header(FILE *out, const char *machine, const char *policy,
                          const char *const *devices, uint32_t ndevices)
{
	if (!out || ndevices > TR_MAX_DEVICES || (ndevices && !devices))
		return -TDM_EINVAL;
	for (uint32_t d = 0; d < ndevices; d++)
		if (!devices[d])
			return -TDM_EINVAL;
	fprintf(out, "{\"tandem_trace\":%d", TR_VERSION);
	if (machine) {
		fputs(",\"machine\":", out);
		put_str(out, machine);
	}
	if (policy) {
		fputs(",\"policy\":", out);
		put_str(out, policy);
	}
	if (ndevices) {
		fputs(",\"devices\":[", out);
		for (uint32_t d = 0; d < ndevices; d++) {
			if (d)
				fputc(',', out);
			put_str(out, devices[d]);
		}
		fputc(']', out);
	}
	fputs("}\n", out);
	return done(out);
}

int wl_trace_write_buffer(FILE *out, uint32_t id, double bytes, bool keep)
{
	if (!out)
		return -TDM_EINVAL;
	fprintf(out, "{\"buffer\":%u,\"bytes\":", id);
	put_num(out, bytes);
	fputs(keep ? ",\"keep\":true}\n" : "}\n", out);
	return done(out);
}

/* What one graph's lines need beyond wl_trace_write_graph's arguments, when
 * wl_trace_write writes a whole workload. */
struct tw_graph {
	const uint32_t *order; /* position -> index into tasks[]; NULL: the same */
	const double *pred_data; /* beside pred[]; NULL: data is the default */
	const double *cost; /* dev_cost rows of tasks[] (by index), or NULL */
	uint32_t ncost;
	const double *buf_bytes; /* to tell default edge data */
	const char (*dev)[WL_NAME_MAX]; /* names for "device"; NULL: indices */
	double scale; /* of costs, to ns */
};

static int check_task(const struct wl_task *t)
{
	if (t->nargs > TDM_MAX_ARGS)
		return -TDM_EINVAL;
	if (t->has_kernel ? !kernel_by_id(t->kernel) : t->skipped)
		return -TDM_EINVAL;
	for (unsigned a = 0; t->has_kernel && a < t->nargs; a++)
		if (!mode_name(t->args[a].mode))
			return -TDM_EINVAL;
	return 0;
}

static void put_task(FILE *f, const struct tw_graph *x, const struct wl_task *tasks, uint32_t pos,
                     const uint32_t *pred_off, const uint32_t *pred)
{
	uint32_t v = x->order ? x->order[pos] : pos;
	const struct wl_task *t = &tasks[v];

	fprintf(f, "{\"task\":%u,\"name\":", pos);
	put_str(f, t->name);
	if (t->has_kernel) {
		fputs(",\"kernel\":", f);
		put_str(f, kernel_by_id(t->kernel)->name);
		if (t->feat.flops != 0) {
			fputs(",\"flops\":", f);
			put_num(f, t->feat.flops);
		}
		if (t->feat.bytes != 0) {
			fputs(",\"bytes\":", f);
			put_num(f, t->feat.bytes);
		}
		if (t->feat.domain != 0) {
			fputs(",\"domain\":", f);
			put_num(f, t->feat.domain);
		}
		if (t->nargs) {
			fputs(",\"args\":[", f);
			for (unsigned a = 0; a < t->nargs; a++)
				fprintf(f, "%s[%u,\"%s\"]", a ? "," : "", t->args[a].buf,
				        mode_name(t->args[a].mode));
			fputc(']', f);
		}
	} else if (x->cost) {
		const double *row = x->cost + (size_t)v * x->ncost;

		fputs(",\"cost_ns\":[", f);
		for (uint32_t d = 0; d < x->ncost; d++) {
			if (d)
				fputc(',', f);
			if (row[d] < 0)
				fputs("-1", f);
			else
				put_num(f, row[d] * x->scale);
		}
		fputc(']', f);
	} else {
		fputs(",\"cost_ns\":", f);
		put_num(f, t->cost * x->scale);
	}
	if (pred_off && pred_off[pos + 1] > pred_off[pos]) {
		fputs(",\"after\":[", f);
		for (uint32_t e = pred_off[pos]; e < pred_off[pos + 1]; e++) {
			uint32_t p = pred[e];
			const struct wl_task *pt = &tasks[x->order ? x->order[p] : p];
			double def = 0;

			if (e > pred_off[pos])
				fputc(',', f);
			if (x->pred_data && pt->has_kernel && t->has_kernel)
				def = wl_kernel_edge_data(pt, t, x->buf_bytes);
			if (!x->pred_data || x->pred_data[e] == def) {
				fprintf(f, "%u", p);
			} else {
				fprintf(f, "[%u,", p);
				put_num(f, x->pred_data[e]);
				fputc(']', f);
			}
		}
		fputc(']', f);
	}
	if (t->priority)
		fprintf(f, ",\"priority\":%d", t->priority);
	if (t->rec_device) {
		fputs(",\"device\":", f);
		if (x->dev)
			put_str(f, x->dev[t->rec_device - 1]);
		else
			fprintf(f, "%u", t->rec_device - 1);
	}
	if (t->rec_start_ns != 0 || t->rec_end_ns != 0) {
		fputs(",\"start_ns\":", f);
		put_num(f, t->rec_start_ns);
		fputs(",\"end_ns\":", f);
		put_num(f, t->rec_end_ns);
	}
	if (t->skipped)
		fputs(",\"skipped\":true", f);
	fputs("}\n", f);
}

static int write_graph(FILE *f, uint32_t id, const struct wl_graph *g, const struct wl_task *tasks,
                       const uint32_t *pred_off, const uint32_t *pred, const struct tw_graph *x)
{
	if (!f || !g || !g->ntasks || !tasks || g->policy_hint >= TDM_POLICY_HINT_COUNT)
		return -TDM_EINVAL;
	for (uint32_t i = 0; i < g->ntasks; i++) {
		if (check_task(&tasks[i]))
			return -TDM_EINVAL;
		if (pred_off && pred_off[i + 1] < pred_off[i])
			return -TDM_EINVAL;
		for (uint32_t e = pred_off ? pred_off[i] : 0; pred_off && e < pred_off[i + 1]; e++)
			if (pred[e] >= i)
				return -TDM_EINVAL;
		/* What the reader requires: a skipped task has a predecessor. */
		if (tasks[x->order ? x->order[i] : i].skipped &&
		    !(pred_off && pred_off[i + 1] > pred_off[i]))
			return -TDM_EINVAL;
	}
	fprintf(f, "{\"graph\":%u,\"arrival_ns\":", id);
	put_num(f, g->arrival_ns);
	if (g->client)
		fprintf(f, ",\"client\":%u", g->client);
	if (g->priority)
		fprintf(f, ",\"priority\":%d", g->priority);
	if (g->policy_hint)
		fprintf(f, ",\"policy\":\"%s\"", policy_hint_name(g->policy_hint));
	if (g->deadline_ns != 0) {
		fputs(",\"deadline_ns\":", f);
		put_num(f, g->deadline_ns);
	}
	fprintf(f, ",\"tasks\":%u}\n", g->ntasks);
	for (uint32_t i = 0; i < g->ntasks; i++)
		put_task(f, x, tasks, i, pred_off, pred);
	return done(f);
}

int wl_trace_write_graph(FILE *out, uint32_t id, const struct wl_graph *g,
                         const struct wl_task *tasks, const uint32_t *pred_off,
                         const uint32_t *pred)
{
	struct tw_graph x = { .scale = 1 };

	if (pred_off && !pred && g && g->ntasks && pred_off[g->ntasks] > pred_off[0])
		return -TDM_EINVAL;
	return write_graph(out, id, g, tasks, pred_off, pred, &x);
}

/* Checks what the writer relies on: indices in range, graphs contiguous
 * from task 0, edges inside a graph. */
static int check_workload(const struct workload *w, uint32_t ndev)
{
	uint32_t next = 0;

	if ((w->ntasks && !w->tasks) || (w->nedges && !w->edges) || (w->nbufs && !w->buf_bytes) ||
	    (w->ngraphs && !w->graphs) || (w->ndev_names && !w->dev_names) ||
	    (w->ndev_cost && !w->dev_cost) || (w->dev_cost && !w->ndev_cost) ||
	    ndev > TR_MAX_DEVICES ||
	    (w->ndev_names && w->ndev_cost && w->ndev_names != w->ndev_cost))
		return -TDM_EINVAL;
	for (uint32_t v = 0; v < w->ntasks; v++) {
		const struct wl_task *t = &w->tasks[v];

		if (check_task(t) || t->rec_device > ndev)
			return -TDM_EINVAL;
		for (unsigned a = 0; t->has_kernel && a < t->nargs; a++)
			if (t->args[a].buf >= w->nbufs)
				return -TDM_EINVAL;
	}
	for (uint32_t i = 0; i < w->ngraphs; i++) {
		if (w->graphs[i].first != next || !w->graphs[i].ntasks ||
		    w->graphs[i].ntasks > w->ntasks - next ||
		    w->graphs[i].policy_hint >= TDM_POLICY_HINT_COUNT)
			return -TDM_EINVAL;
		next += w->graphs[i].ntasks;
	}
	if (w->ngraphs && next != w->ntasks)
		return -TDM_EINVAL;
	for (uint32_t e = 0; e < w->nedges; e++)
		if (w->edges[e].src >= w->ntasks || w->edges[e].dst >= w->ntasks ||
		    w->edges[e].src == w->edges[e].dst)
			return -TDM_EINVAL;
	return 0;
}

struct tw_state {
	uint32_t *poff, *psrc; /* predecessors of each task, global (CSR) */
	double *pdata;
	uint32_t *soff, *sdst; /* successors, for reordering */
	uint32_t *order, *pos, *indeg; /* per graph, by local index */
	uint32_t *lpoff, *lpred; /* per graph, by position */
	double *ldata;
};

static void tw_free(struct tw_state *st)
{
	free(st->poff);
	free(st->psrc);
	free(st->pdata);
	free(st->soff);
	free(st->sdst);
	free(st->order);
	free(st->pos);
	free(st->indeg);
	free(st->lpoff);
	free(st->lpred);
	free(st->ldata);
}

/* The graph [first, first + n) in a topological order: the tasks' own when
 * every edge goes forward, else Kahn's (FIFO, from the lowest index), and
 * its predecessors by position. -TDM_EINVAL for an edge that leaves the
 * graph or a cycle. */
static int tw_layout(struct tw_state *st, uint32_t first, uint32_t n, bool *identity)
{
	uint32_t head = 0, tail = 0, k = 0;

	*identity = true;
	for (uint32_t v = first; v < first + n; v++)
		for (uint32_t e = st->poff[v]; e < st->poff[v + 1]; e++) {
			if (st->psrc[e] < first || st->psrc[e] >= first + n)
				return -TDM_EINVAL;
			if (st->psrc[e] >= v)
				*identity = false;
		}
	if (*identity) {
		for (uint32_t i = 0; i < n; i++)
			st->pos[i] = i;
	} else {
		for (uint32_t i = 0; i < n; i++) {
			st->indeg[i] = st->poff[first + i + 1] - st->poff[first + i];
			if (!st->indeg[i])
				st->order[tail++] = i;
		}
		while (head < tail) {
			uint32_t u = st->order[head++];

			for (uint32_t e = st->soff[first + u]; e < st->soff[first + u + 1]; e++)
				if (--st->indeg[st->sdst[e] - first] == 0)
					st->order[tail++] = st->sdst[e] - first;
		}
		if (tail != n)
			return -TDM_EINVAL;
		for (uint32_t i = 0; i < n; i++)
			st->pos[st->order[i]] = i;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint32_t v = first + (*identity ? i : st->order[i]);

		st->lpoff[i] = k;
		for (uint32_t e = st->poff[v]; e < st->poff[v + 1]; e++) {
			st->lpred[k] = st->pos[st->psrc[e] - first];
			st->ldata[k++] = st->pdata[e];
		}
	}
	st->lpoff[n] = k;
	return 0;
}

static int tw_prepare(const struct workload *w, struct tw_state *st, bool *forward)
{
	uint32_t n = w->ntasks, m = w->nedges;

	st->poff = malloc(((size_t)n + 1) * sizeof(*st->poff));
	st->psrc = malloc((m ? m : 1) * sizeof(*st->psrc));
	st->pdata = malloc((m ? m : 1) * sizeof(*st->pdata));
	st->order = malloc((n ? n : 1) * sizeof(*st->order));
	st->pos = malloc((n ? n : 1) * sizeof(*st->pos));
	st->indeg = malloc((n ? n : 1) * sizeof(*st->indeg));
	st->lpoff = malloc(((size_t)n + 1) * sizeof(*st->lpoff));
	st->lpred = malloc((m ? m : 1) * sizeof(*st->lpred));
	st->ldata = malloc((m ? m : 1) * sizeof(*st->ldata));
	if (!st->poff || !st->psrc || !st->pdata || !st->order || !st->pos || !st->indeg ||
	    !st->lpoff || !st->lpred || !st->ldata)
		return -TDM_ENOMEM;
	/* predecessors by destination, in edge order (by source when sorted) */
	*forward = true;
	for (uint32_t e = 0; e < m; e++)
		if (w->edges[e].src > w->edges[e].dst)
			*forward = false;
	wl_group_edges(w, true, st->poff, st->psrc);
	for (uint32_t k = 0; k < m; k++) {
		st->pdata[k] = w->edges[st->psrc[k]].data;
		st->psrc[k] = w->edges[st->psrc[k]].src;
	}
	if (*forward)
		return 0;
	st->soff = malloc(((size_t)n + 1) * sizeof(*st->soff));
	st->sdst = malloc((m ? m : 1) * sizeof(*st->sdst));
	if (!st->soff || !st->sdst)
		return -TDM_ENOMEM;
	wl_group_edges(w, false, st->soff, st->sdst);
	for (uint32_t k = 0; k < m; k++)
		st->sdst[k] = w->edges[st->sdst[k]].dst;
	return 0;
}

int wl_trace_write(FILE *out, const struct workload *w)
{
	const uint32_t ndev = w && w->ndev_names ? w->ndev_names : w ? w->ndev_cost : 0;
	char(*names)[WL_NAME_MAX] = NULL;
	const char *dev[TR_MAX_DEVICES];
	struct tw_state st = { 0 };
	struct wl_graph one = { .first = 0 };
	uint32_t ngraphs;
	bool forward;
	int rc;

	if (!out || !w)
		return -TDM_EINVAL;
	/* no graphs: one of every task, arriving at 0 */
	one.ntasks = w->ntasks;
	ngraphs = w->ngraphs ? w->ngraphs : w->ntasks ? 1 : 0;
	rc = check_workload(w, ndev);
	if (rc)
		return rc;
	names = w->dev_names;
	if (!names && ndev) {
		/* costs per device but no names: d0, d1, ... */
		names = calloc(ndev, sizeof(*names));
		if (!names)
			return -TDM_ENOMEM;
		for (uint32_t d = 0; d < ndev; d++)
			snprintf(names[d], sizeof(names[d]), "d%u", d);
	}
	for (uint32_t d = 0; d < ndev; d++)
		dev[d] = names[d];
	/* every graph laid out once before anything is written, so that an
	 * invalid workload leaves out untouched */
	rc = tw_prepare(w, &st, &forward);
	/* What the reader requires: a skipped task has a predecessor. */
	for (uint32_t v = 0; !rc && v < w->ntasks; v++)
		if (w->tasks[v].skipped && st.poff[v + 1] == st.poff[v])
			rc = -TDM_EINVAL;
	for (uint32_t i = 0; !rc && i < ngraphs; i++) {
		const struct wl_graph *g = w->ngraphs ? &w->graphs[i] : &one;
		bool identity;

		rc = tw_layout(&st, g->first, g->ntasks, &identity);
	}
	if (!rc)
		rc = wl_trace_write_header(out, NULL, NULL, dev, ndev);
	for (uint32_t b = 0; !rc && b < w->nbufs; b++)
		rc = wl_trace_write_buffer(out, b, w->buf_bytes[b], w->buf_keep && w->buf_keep[b]);
	for (uint32_t i = 0; !rc && i < ngraphs; i++) {
		const struct wl_graph *g = w->ngraphs ? &w->graphs[i] : &one;
		struct tw_graph x = {
			.pred_data = st.ldata,
			.cost = w->dev_cost ? w->dev_cost + (size_t)g->first * w->ndev_cost : NULL,
			.ncost = w->ndev_cost,
			.buf_bytes = w->buf_bytes,
			.dev = names,
			.scale = w->units == WL_UNITS_SECONDS ? 1e9 : 1,
		};
		bool identity;

		rc = tw_layout(&st, g->first, g->ntasks, &identity);
		if (rc)
			break;
		x.order = identity ? NULL : st.order;
		rc = write_graph(out, i, g, w->tasks + g->first, st.lpoff, st.lpred, &x);
	}
	tw_free(&st);
	if (names != w->dev_names)
		free(names);
	return rc;
}
