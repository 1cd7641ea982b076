/* Machine descriptions (sim/machine.h; the format is in docs/machines.md).
 *
 * The TOML document is walked once by toml_shim; each node is checked on
 * its own (type, range, known key) and stored, with its position, into a
 * "spec" per table: one per [device.NAME], [link.SRC-DST] and
 * [cost.MODEL.KERNEL]. What needs the whole document (required keys, nodes
 * against kinds, links against nodes, cost tables against models) is
 * checked afterwards, spec by spec in the order of the text, so that the
 * first problem reported is the first one in the file. The machine is built
 * into scratch space and handed over only when the whole document is valid.
 *
 * toml_shim does not visit the contents of the tables of an array ([[x]]):
 * the format uses named tables and parallel arrays instead. */
#include "sim/machine.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/toml_shim.h"
#include "profiler/calibrate_internal.h"
#include "tandem.h"

#define PART_MAX 256 /* one part of a dotted path, unquoted */
#define DEV_NAME_MAX 32 /* BACKEND_DEVICE_NAME_MAX: names after expansion */
#define DESC_MAX 4096
#define NB_MAX 4096 /* the tile kernels' largest nb (backends/kernels.c) */
#define MEM_GIB_MAX 65536.0
#define COST_ROWS_MAX 64 /* per kernel and model: a cost model keeps 64 footprints */
#define COST_NS_MAX 1e15 /* the cost models' largest time */
#define COST_FEAT_MAX 1e30 /* and largest feature */
#define MSG_MAX 512
#define LINKS_MAX (MACHINE_MAX_NODES * MACHINE_MAX_NODES)
#define GIB 1073741824.0

/* ---- small helpers ------------------------------------------------------- */

struct at {
	int line, col;
};

static bool dev_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Device keys' characters: a model is the part of a key after "kind:". */
static bool model_char(char c)
{
	return key_char(c);
}

static bool machine_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static bool all_chars(const char *s, size_t n, bool (*ok)(char))
{
	for (size_t i = 0; i < n; i++)
		if (!ok(s[i]))
			return false;
	return true;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static const char *kind_name(enum tdm_device_kind k)
{
	return device_kind_name(k);
}

static bool kind_by_name(const char *s, enum tdm_device_kind *out)
{
	for (int k = 0; k < TDM_DEV_KIND_COUNT; k++) {
		if (!strcmp(s, device_kind_name((enum tdm_device_kind)k))) {
			*out = (enum tdm_device_kind)k;
			return true;
		}
	}
	return false;
}

static bool is_tile_kernel(uint32_t id)
{
	switch (id) {
	case KERNEL_SPOTRF:
	case KERNEL_STRSM:
	case KERNEL_SSYRK:
	case KERNEL_SGEMM_NT:
	case KERNEL_SGETRF:
	case KERNEL_SGEQRT:
	case KERNEL_SORMQR:
	case KERNEL_STSQRT:
	case KERNEL_STSMQR: return true;
	default: return false;
	}
}

/* A tile kernel's features for nb x nb tiles, from its own features(). */
static struct kernel_features tile_features(uint32_t id, int64_t nb)
{
	const struct kernel_def *k = kernel_by_id(id);
	struct tdm_kernel_call call;
	struct kernel_features f = { 0 };

	memset(&call, 0, sizeof(call));
	call.nargs = k->nargs;
	call.s[0].i64 = nb;
	for (unsigned i = 0; i < k->nargs && i < TDM_MAX_ARGS; i++)
		call.len[i] = (uint64_t)nb * (uint64_t)nb * 4;
	k->features(&call, &f);
	f.flops += 0.0;
	f.bytes += 0.0;
	f.domain += 0.0;
	return f;
}

static bool same_features(const struct kernel_features *a, const struct kernel_features *b)
{
	return a->flops == b->flops && a->bytes == b->bytes && a->domain == b->domain;
}

static void device_key(enum tdm_device_kind kind, const char *model, char *out, size_t len)
{
	struct backend_device d;

	memset(&d, 0, sizeof(d));
	d.kind = kind;
	snprintf(d.model, sizeof(d.model), "%s", model);
	calibrate_device_key(&d, out, len);
}

/* ---- the parse context --------------------------------------------------- */

enum dfield {
	DF_KIND,
	DF_MODEL,
	DF_NODE,
	DF_COUNT,
	DF_MEM_GIB,
	DF_GFLOPS,
	DF_MEM_GBPS,
	DF_LAUNCH_NS,
	DF_SOCKET_GBPS,
	DF_FP16_GFLOPS,
	DF_PRESENT,
	DF_CORE_SLICE_NS,
	DF_CORE_SLICE_EVERY_NS,
	DF_BUSY_CORE_SHARE,
	DF_N
};

static const char *const dfield_name[DF_N] = { "kind",
	                                       "model",
	                                       "node",
	                                       "count",
	                                       "mem_gib",
	                                       "gflops",
	                                       "mem_gbps",
	                                       "launch_ns",
	                                       "socket_gbps",
	                                       "fp16_gflops",
	                                       "present",
	                                       "core_slice_ns",
	                                       "core_slice_every_ns",
	                                       "busy_core_share" };

enum cfield { CF_NB, CF_FLOPS, CF_BYTES, CF_DOMAIN, CF_NS, CF_SPREAD, CF_N };

static const char *const cfield_name[CF_N] = {
	"nb", "flops", "bytes", "domain", "ns", "spread_ns"
};

struct dev_spec {
	char name[DEV_NAME_MAX];
	char path[PART_MAX + 16]; /* "device.NAME", for messages */
	struct at at;
	bool set[DF_N];
	struct at fat[DF_N];
	enum tdm_device_kind kind;
	char model[MACHINE_NAME_MAX];
	int64_t node, count;
	double mem_gib, gflops, mem_gbps, launch_ns, socket_gbps, fp16_gflops;
	double core_slice_ns, core_slice_every_ns, busy_core_share;
	bool absent; /* present = false */
	/* shares_cores_with: the names as written, resolved by finish_shares */
	bool has_shares;
	struct at shares_key_at;
	uint32_t shares_len, nshares;
	char shares[MACHINE_MAX_DEVICES][DEV_NAME_MAX];
	struct at shares_at[MACHINE_MAX_DEVICES];
};

struct link_spec {
	char path[PART_MAX + 16];
	unsigned src, dst;
	struct at at;
	bool has_gbps, has_latency;
	double gbps, latency_ns;
};

struct cost_col {
	bool set;
	uint32_t len, n; /* elements declared, elements stored */
	struct at at;
	double v[COST_ROWS_MAX];
	struct at vat[COST_ROWS_MAX];
};

struct cost_spec {
	char model[MACHINE_NAME_MAX];
	char path[2 * PART_MAX + 16]; /* "cost.MODEL.KERNEL", as in the text */
	uint16_t kernel;
	struct at at;
	struct cost_col col[CF_N];
};

struct cost_model {
	char name[MACHINE_NAME_MAX];
	char path[PART_MAX + 16];
	struct at at;
};

struct pctx {
	struct machine *m; /* scratch, handed over on success */
	bool failed;
	int line, col;
	char msg[MSG_MAX];
	bool has_name;
	struct dev_spec dev[MACHINE_MAX_DEVICES];
	uint32_t ndev;
	struct link_spec link[LINKS_MAX];
	uint32_t nlink;
	struct cost_model model[MACHINE_MAX_DEVICES];
	uint32_t nmodel;
	struct cost_spec **cost;
	uint32_t ncost, cost_cap;
};

__attribute__((format(printf, 3, 4))) static int fail(struct pctx *c, struct at at, const char *fmt,
                                                      ...)
{
	va_list ap;

	c->failed = true;
	c->line = at.line;
	c->col = at.col;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
	va_end(ap);
	return 1;
}

static int oom(struct pctx *c)
{
	fail(c, (struct at){ 0, 0 }, "out of memory");
	return -TDM_ENOMEM;
}

static struct at value_at(const struct toml_item *it)
{
	return (struct at){ it->line, it->col };
}

static struct at key_at(const struct toml_item *it)
{
	return (struct at){ it->key_line, it->key_col };
}

/* Splits a dotted path as toml_shim writes it (bare parts, or quoted with
 * \" \\ and \uXXXX escapes) into its first max parts, unquoted. A part that
 * does not fit PART_MAX, or holds an escaped control character, becomes
 * "\x01", which no name accepts. Returns the number of parts in all. */
static int split_path(const char *p, char part[][PART_MAX], int max)
{
	int n = 0;

	while (*p) {
		char buf[PART_MAX];
		size_t o = 0;
		bool bad = false;

		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				char ch = *p;

				if (ch == '\\' && p[1] == 'u') {
					bad = true; /* only control characters are written so */
					for (int i = 0; i < 5 && p[1]; i++)
						p++;
					continue;
				}
				if (ch == '\\' && p[1])
					ch = *++p;
				if (o + 1 < sizeof(buf))
					buf[o++] = ch;
				else
					bad = true;
			}
			if (*p == '"')
				p++;
		} else {
			for (; *p && *p != '.'; p++) {
				if (o + 1 < sizeof(buf))
					buf[o++] = *p;
				else
					bad = true;
			}
		}
		buf[o] = '\0';
		if (n < max)
			snprintf(part[n], PART_MAX, "%s", bad ? "\x01" : buf);
		n++;
		if (*p == '.')
			p++;
	}
	return n;
}

/* Length of the first n parts of a dotted path, quotes included. */
static size_t prefix_len(const char *p, int n)
{
	size_t i = 0;

	for (int k = 0; k < n && p[i]; k++) {
		if (k && p[i] == '.')
			i++;
		if (p[i] == '"') {
			for (i++; p[i] && p[i] != '"'; i++)
				if (p[i] == '\\' && p[i + 1])
					i++;
			if (p[i] == '"')
				i++;
		} else {
			while (p[i] && p[i] != '.')
				i++;
		}
	}
	return i;
}

/* What follows the first n parts of a dotted path. */
static const char *path_rest(const char *p, int n)
{
	size_t i = prefix_len(p, n);

	return p[i] == '.' ? p + i + 1 : p + i;
}

/* A number (integer or float) for key it, or a message. */
static int get_number(struct pctx *c, const struct toml_item *it, const char *path, double *v)
{
	if (it->type == TOML_ITEM_INT) {
		*v = (double)it->i;
		return 0;
	}
	if (it->type == TOML_ITEM_FLOAT) {
		*v = it->f;
		return 0;
	}
	return fail(c, value_at(it), "%s: expected a number, got %s", path,
	            toml_shim_type_name(it->type));
}

/* v within [lo, hi] (lo excluded when lo_open, hi excluded when hi_open). */
static int check_range(struct pctx *c, const struct toml_item *it, const char *path, double v,
                       double lo, bool lo_open, double hi, bool hi_open, const char *unit)
{
	bool ok = isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);

	if (ok)
		return 0;
	return fail(c, value_at(it), "%s: %g is out of range (expected %s%s%g, %g%c)", path, v,
	            unit, lo_open ? "(" : "[", lo, hi, hi_open ? ')' : ']');
}

static int check_cal_range(struct pctx *c, const struct toml_item *it, const char *path, double v,
                           const struct range *r, const char *unit)
{
	return check_range(c, it, path, v, r->lo, r->lo_open, r->hi, true, unit);
}

static int get_int(struct pctx *c, const struct toml_item *it, const char *path, int64_t lo,
                   int64_t hi, int64_t *v)
{
	if (it->type != TOML_ITEM_INT)
		return fail(c, value_at(it),
		            "%s: expected an integer in %" PRId64 "..%" PRId64 ", got %s", path, lo,
		            hi, toml_shim_type_name(it->type));
	if (it->i < lo || it->i > hi)
		return fail(c, value_at(it),
		            "%s: %" PRId64 " is out of range (expected an integer in %" PRId64
		            "..%" PRId64 ")",
		            path, it->i, lo, hi);
	*v = it->i;
	return 0;
}

/* A string of 1 to max-1 characters each accepted by ok, into out. */
static int get_name(struct pctx *c, const struct toml_item *it, const char *path, bool (*ok)(char),
                    const char *what, size_t max, char *out)
{
	if (it->type != TOML_ITEM_STRING)
		return fail(c, value_at(it), "%s: expected a string (%s), got %s", path, what,
		            toml_shim_type_name(it->type));
	if (memchr(it->s, '\0', it->s_len))
		return fail(c, value_at(it), "%s: contains a NUL character", path);
	if (it->s_len < 1 || it->s_len >= max || !all_chars(it->s, it->s_len, ok))
		return fail(c, value_at(it), "%s: \"%.80s\" is not %s of 1 to %zu characters", path,
		            it->s, what, max - 1);
	memcpy(out, it->s, it->s_len);
	out[it->s_len] = '\0';
	return 0;
}

/* ---- top level ----------------------------------------------------------- */

#define TOP_KEYS                                                                                   \
	"name, description, wake_ns, [device.NAME], [link.SRC-DST] or [cost.MODEL.KERNEL] (see "   \
	"docs/machines.md)"

static int visit_top(struct pctx *c, const struct toml_item *it, const char *key)
{
	if (!strcmp(key, "name")) {
		if (get_name(c, it, "name", machine_name_char,
		             "a name: A-Z, a-z, 0-9, '.', '_', '-'", MACHINE_NAME_MAX, c->m->name))
			return 1;
		c->has_name = true;
		return 0;
	}
	if (!strcmp(key, "description")) {
		if (it->type != TOML_ITEM_STRING)
			return fail(c, value_at(it), "description: expected a string, got %s",
			            toml_shim_type_name(it->type));
		if (memchr(it->s, '\0', it->s_len))
			return fail(c, value_at(it), "description: contains a NUL character");
		if (it->s_len > DESC_MAX)
			return fail(c, value_at(it), "description: %zu characters, at most %d",
			            it->s_len, DESC_MAX);
		return 0;
	}
	if (!strcmp(key, "wake_ns")) { /* 0: the daemon's workers wake at once */
		double v;
		if (get_number(c, it, "wake_ns", &v) ||
		    check_range(c, it, "wake_ns", v, 0, false, CAL_WAKE_MAX_NS, false, "ns in "))
			return 1;
		c->m->wake_ns = v;
		return 0;
	}
	if (!strcmp(key, "device") || !strcmp(key, "link") || !strcmp(key, "cost")) {
		const char *sub = !strcmp(key, "device") ? "NAME"
		                  : !strcmp(key, "link") ? "SRC-DST"
		                                         : "MODEL.KERNEL";

		if (it->type == TOML_ITEM_TABLE)
			return 0;
		if (it->type == TOML_ITEM_ARRAY)
			return fail(
			        c, key_at(it),
			        "%s: arrays of tables ([[%s]]) are not supported: write one table "
			        "[%s.%s] each",
			        key, key, key, sub);
		return fail(c, value_at(it), "%s: expected tables [%s.%s], got %s", key, key, sub,
		            toml_shim_type_name(it->type));
	}
	return fail(c, key_at(it), "unknown key %s (expected " TOP_KEYS ")", it->path);
}

/* [device.NAME], [link.SRC-DST] and [cost.MODEL.KERNEL] themselves. */
static int expect_table(struct pctx *c, const struct toml_item *it)
{
	if (it->type != TOML_ITEM_TABLE)
		return fail(c, value_at(it), "%s: expected a table [%s], got %s", it->path,
		            it->path, toml_shim_type_name(it->type));
	return 0;
}

/* ---- [device.NAME] -------------------------------------------------------- */

static struct dev_spec *find_device(struct pctx *c, const struct toml_item *it, const char *name)
{
	struct dev_spec *s;
	size_t n = strlen(name);

	for (uint32_t i = 0; i < c->ndev; i++)
		if (!strcmp(c->dev[i].name, name))
			return &c->dev[i];
	if (n < 1 || n >= DEV_NAME_MAX || !all_chars(name, n, dev_name_char)) {
		fail(c, key_at(it),
		     "%s: a device name is 1 to %d characters a-z, 0-9, _ (such as gpu0)", it->path,
		     DEV_NAME_MAX - 1);
		return NULL;
	}
	if (c->ndev >= MACHINE_MAX_DEVICES) {
		fail(c, key_at(it), "%s: more than %d devices", it->path, MACHINE_MAX_DEVICES);
		return NULL;
	}
	s = &c->dev[c->ndev++];
	memset(s, 0, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(s->path, sizeof(s->path), "device.%s", name);
	s->at = key_at(it);
	return s;
}

static int set_device_field(struct pctx *c, struct dev_spec *s, enum dfield f,
                            const struct toml_item *it)
{
	const char *p = it->path;
	double v = 0;

	switch (f) {
	case DF_KIND:
		if (it->type != TOML_ITEM_STRING)
			return fail(
			        c, value_at(it),
			        "%s: expected a string: \"cpu\", \"clcpu\", \"gpu\" or \"npu\", "
			        "got %s",
			        p, toml_shim_type_name(it->type));
		if (memchr(it->s, '\0', it->s_len))
			return fail(c, value_at(it), "%s: contains a NUL character", p);
		if (!kind_by_name(it->s, &s->kind))
			return fail(
			        c, value_at(it),
			        "%s: \"%.40s\" is not a device kind (expected \"cpu\", \"clcpu\", "
			        "\"gpu\" or \"npu\")",
			        p, it->s);
		break;
	case DF_MODEL:
		if (get_name(c, it, p, model_char, "a model: A-Z, a-z, 0-9, '.', '_', ':', '-'",
		             MACHINE_NAME_MAX, s->model))
			return 1;
		break;
	case DF_NODE:
		if (get_int(c, it, p, 0, MACHINE_MAX_NODES - 1, &s->node))
			return 1;
		break;
	case DF_COUNT:
		if (get_int(c, it, p, 1, MACHINE_MAX_DEVICES, &s->count))
			return 1;
		break;
	case DF_MEM_GIB:
		if (get_number(c, it, p, &v) ||
		    check_range(c, it, p, v, 0, true, MEM_GIB_MAX, false, "GiB in "))
			return 1;
		s->mem_gib = v;
		break;
	case DF_GFLOPS:
		if (get_number(c, it, p, &v) ||
		    check_cal_range(c, it, p, v, &r_gflops, "GFLOP/s in "))
			return 1;
		s->gflops = v;
		break;
	case DF_MEM_GBPS:
		if (get_number(c, it, p, &v) || check_cal_range(c, it, p, v, &r_gbps, "GB/s in "))
			return 1;
		s->mem_gbps = v;
		break;
	case DF_LAUNCH_NS:
		if (get_number(c, it, p, &v) || check_cal_range(c, it, p, v, &r_ns, "ns in "))
			return 1;
		s->launch_ns = v;
		break;
	case DF_SOCKET_GBPS:
		if (get_number(c, it, p, &v) || check_cal_range(c, it, p, v, &r_gbps, "GB/s in "))
			return 1;
		s->socket_gbps = v;
		break;
	case DF_FP16_GFLOPS:
		if (get_number(c, it, p, &v) ||
		    check_cal_range(c, it, p, v, &r_gflops, "GFLOP/s in "))
			return 1;
		s->fp16_gflops = v;
		break;
	case DF_CORE_SLICE_NS: /* 0: the device never takes a worker's core */
		if (get_number(c, it, p, &v) ||
		    check_range(c, it, p, v, 0, false, 1e9, false, "ns in "))
			return 1;
		s->core_slice_ns = v;
		break;
	case DF_CORE_SLICE_EVERY_NS:
		if (get_number(c, it, p, &v) ||
		    check_range(c, it, p, v, 1e3, false, 1e12, false, "ns in "))
			return 1;
		s->core_slice_every_ns = v;
		break;
	case DF_BUSY_CORE_SHARE:
		if (get_number(c, it, p, &v) ||
		    check_range(c, it, p, v, 0, false, 1, false, "a share in "))
			return 1;
		s->busy_core_share = v;
		break;
	case DF_PRESENT:
		if (it->type != TOML_ITEM_BOOL)
			return fail(c, value_at(it),
			            "%s: expected true or false (false: the device joins later, by "
			            "an \"add\" scale event), got %s",
			            p, toml_shim_type_name(it->type));
		s->absent = !it->b;
		break;
	case DF_N: break;
	}
	s->set[f] = true;
	s->fat[f] = value_at(it);
	return 0;
}

/* shares_cores_with = ["cpu0", ...]: the array, then each name (checked
 * against the devices by finish_shares). */
static int visit_shares(struct pctx *c, struct dev_spec *s, const struct toml_item *it)
{
	char path[sizeof(s->path) + 40];

	if (it->array_index < 0) {
		if (it->type != TOML_ITEM_ARRAY)
			return fail(
			        c, value_at(it),
			        "%s.shares_cores_with: expected an array of device names, got %s",
			        s->path, toml_shim_type_name(it->type));
		if (it->array_len < 1 || it->array_len > MACHINE_MAX_DEVICES)
			return fail(c, value_at(it),
			            "%s.shares_cores_with: %zu names (expected 1 to %d)", s->path,
			            it->array_len, MACHINE_MAX_DEVICES);
		s->has_shares = true;
		s->shares_key_at = key_at(it);
		s->shares_len = (uint32_t)it->array_len;
		s->nshares = 0;
		return 0;
	}
	snprintf(path, sizeof(path), "%s.shares_cores_with[%d]", s->path, it->array_index);
	if (s->nshares >= s->shares_len) /* the array's length came first */
		return fail(c, value_at(it), "%s: one element too many", path);
	if (get_name(c, it, path, dev_name_char, "a device name: a-z, 0-9, _", DEV_NAME_MAX,
	             s->shares[s->nshares]))
		return 1;
	for (uint32_t k = 0; k < s->nshares; k++)
		if (!strcmp(s->shares[k], s->shares[s->nshares]))
			return fail(c, value_at(it),
			            "%s: %s is listed already (shares_cores_with[%u])", path,
			            s->shares[k], k);
	s->shares_at[s->nshares++] = value_at(it);
	return 0;
}

static int visit_device(struct pctx *c, const struct toml_item *it, char part[][PART_MAX], int n)
{
	struct dev_spec *s = find_device(c, it, part[1]);

	if (!s)
		return 1;
	if (n == 2)
		return expect_table(c, it);
	if (n == 3) {
		for (int f = 0; f < DF_N; f++)
			if (!strcmp(part[2], dfield_name[f]))
				return set_device_field(c, s, (enum dfield)f, it);
		if (!strcmp(part[2], "shares_cores_with"))
			return visit_shares(c, s, it);
	}
	return fail(c, key_at(it),
	            "unknown key %s in [%s] (expected kind, model, node, count, mem_gib, gflops, "
	            "mem_gbps, launch_ns, socket_gbps, fp16_gflops, present, shares_cores_with, "
	            "core_slice_ns, core_slice_every_ns, busy_core_share)",
	            path_rest(it->path, 2), s->path);
}

/* ---- [link.SRC-DST] ------------------------------------------------------- */

/* "S-D", two node numbers. */
static bool parse_link_key(const char *k, unsigned *src, unsigned *dst)
{
	unsigned v[2] = { 0, 0 };
	int i = 0;

	for (int side = 0; side < 2; side++) {
		int digits = 0;

		for (; is_digit(k[i]); i++) {
			if (++digits > 3)
				return false;
			v[side] = v[side] * 10 + (unsigned)(k[i] - '0');
		}
		if (!digits || k[i] != (side == 0 ? '-' : '\0'))
			return false;
		i++;
	}
	*src = v[0];
	*dst = v[1];
	return true;
}

static struct link_spec *find_link(struct pctx *c, const struct toml_item *it, const char *key)
{
	unsigned s, d;
	struct link_spec *l;

	if (!parse_link_key(key, &s, &d)) {
		fail(c, key_at(it),
		     "%s: a link is named by its source and destination nodes, such as [link.0-1]",
		     it->path);
		return NULL;
	}
	for (uint32_t i = 0; i < c->nlink; i++) {
		l = &c->link[i];
		if (l->src != s || l->dst != d)
			continue;
		if (strcmp(l->path + 5, key)) {
			fail(c, key_at(it), "%s: the same link as [%s] (line %d)", it->path,
			     l->path, l->at.line);
			return NULL;
		}
		return l;
	}
	if (s >= MACHINE_MAX_NODES || d >= MACHINE_MAX_NODES) {
		fail(c, key_at(it), "%s: node %u is out of range (nodes are 0 to %d)", it->path,
		     s >= MACHINE_MAX_NODES ? s : d, MACHINE_MAX_NODES - 1);
		return NULL;
	}
	if (s == d) {
		fail(c, key_at(it),
		     "%s: a node's link to itself is not described (copies within a node use its "
		     "devices' mem_gbps)",
		     it->path);
		return NULL;
	}
	l = &c->link[c->nlink++]; /* at most LINKS_MAX distinct (s, d) */
	memset(l, 0, sizeof(*l));
	snprintf(l->path, sizeof(l->path), "link.%s", key);
	l->src = s;
	l->dst = d;
	l->at = key_at(it);
	return l;
}

static int visit_link(struct pctx *c, const struct toml_item *it, char part[][PART_MAX], int n)
{
	struct link_spec *l = find_link(c, it, part[1]);
	double v;

	if (!l)
		return 1;
	if (n == 2)
		return expect_table(c, it);
	if (n == 3 && !strcmp(part[2], "gbps")) {
		if (get_number(c, it, it->path, &v) ||
		    check_cal_range(c, it, it->path, v, &r_gbps, "GB/s in "))
			return 1;
		l->gbps = v;
		l->has_gbps = true;
		return 0;
	}
	if (n == 3 && !strcmp(part[2], "latency_ns")) {
		if (get_number(c, it, it->path, &v) ||
		    check_cal_range(c, it, it->path, v, &r_ns, "ns in "))
			return 1;
		l->latency_ns = v;
		l->has_latency = true;
		return 0;
	}
	return fail(c, key_at(it), "unknown key %s in [%s] (expected gbps, latency_ns)",
	            path_rest(it->path, 2), l->path);
}

/* ---- [cost.MODEL.KERNEL] -------------------------------------------------- */

static struct cost_model *find_model(struct pctx *c, const struct toml_item *it, const char *name)
{
	size_t n = strlen(name);
	struct cost_model *cm;

	for (uint32_t i = 0; i < c->nmodel; i++)
		if (!strcmp(c->model[i].name, name))
			return &c->model[i];
	if (n < 1 || n >= MACHINE_NAME_MAX || !all_chars(name, n, model_char)) {
		fail(c, key_at(it),
		     "%.*s: a model is 1 to %d characters A-Z, a-z, 0-9, '.', '_', ':', '-' "
		     "(quoted when it has '.' or ':')",
		     (int)prefix_len(it->path, 2), it->path, MACHINE_NAME_MAX - 1);
		return NULL;
	}
	if (c->nmodel >= MACHINE_MAX_DEVICES) {
		fail(c, key_at(it), "%.*s: cost tables for more than %d models",
		     (int)prefix_len(it->path, 2), it->path, MACHINE_MAX_DEVICES);
		return NULL;
	}
	cm = &c->model[c->nmodel++];
	snprintf(cm->name, sizeof(cm->name), "%s", name);
	snprintf(cm->path, sizeof(cm->path), "%.*s", (int)prefix_len(it->path, 2), it->path);
	cm->at = key_at(it);
	return cm;
}

static struct cost_spec *find_cost(struct pctx *c, const struct toml_item *it,
                                   const struct cost_model *cm, const char *kernel)
{
	struct cost_spec *s;
	int k;

	for (uint32_t i = 0; i < c->ncost; i++) {
		s = c->cost[i];
		if (!strcmp(s->model, cm->name) && !strcmp(kernel_by_id(s->kernel)->name, kernel))
			return s;
	}
	k = strlen(kernel) < 64 ? kernel_lookup(kernel) : -TDM_EKERNEL;
	if (k < 0 || k == KERNEL_NOOP) {
		fail(c, key_at(it), "%.*s: %s kernel \"%.64s\" (see docs/kernels.md)",
		     (int)prefix_len(it->path, 3), it->path, k < 0 ? "unknown" : "no cost for the",
		     kernel[0] == '\x01' ? "?" : kernel);
		return NULL;
	}
	if (c->ncost == c->cost_cap) {
		uint32_t cap = c->cost_cap ? 2 * c->cost_cap : 16;
		struct cost_spec **grown = realloc(c->cost, cap * sizeof(*grown));

		if (!grown) {
			oom(c);
			return NULL;
		}
		c->cost = grown;
		c->cost_cap = cap;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		oom(c);
		return NULL;
	}
	c->cost[c->ncost++] = s; /* at most 64 models times KERNEL_COUNT */
	snprintf(s->model, sizeof(s->model), "%s", cm->name);
	snprintf(s->path, sizeof(s->path), "%.*s", (int)prefix_len(it->path, 3), it->path);
	s->kernel = (uint16_t)k;
	s->at = key_at(it);
	return s;
}

/* One element of a column (or a column given as a single value). */
static int add_cost_value(struct pctx *c, struct cost_spec *s, enum cfield f,
                          const struct toml_item *it, int index)
{
	struct cost_col *col = &s->col[f];
	char path[sizeof(s->path) + 32];
	double v = 0;
	int64_t nb;

	if (index >= 0)
		snprintf(path, sizeof(path), "%s.%s[%d]", s->path, cfield_name[f], index);
	else
		snprintf(path, sizeof(path), "%s.%s", s->path, cfield_name[f]);
	if (col->n >= col->len || col->n >= COST_ROWS_MAX) /* the array's length came first */
		return fail(c, value_at(it), "%s: one element too many", path);
	switch (f) {
	case CF_NB:
		if (get_int(c, it, path, 1, NB_MAX, &nb))
			return 1;
		v = (double)nb;
		break;
	case CF_FLOPS:
	case CF_BYTES:
	case CF_DOMAIN:
		if (get_number(c, it, path, &v) ||
		    check_range(c, it, path, v, 0, false, COST_FEAT_MAX, false, ""))
			return 1;
		v += 0.0; /* -0 is 0 */
		break;
	case CF_NS:
		if (get_number(c, it, path, &v) ||
		    check_range(c, it, path, v, 1, false, COST_NS_MAX, false, "ns in "))
			return 1;
		break;
	case CF_SPREAD:
		if (get_number(c, it, path, &v) ||
		    check_range(c, it, path, v, 0, false, COST_NS_MAX, false, "ns in "))
			return 1;
		v += 0.0;
		break;
	case CF_N: break;
	}
	col->vat[col->n] = value_at(it);
	col->v[col->n++] = v;
	return 0;
}

static int visit_cost_field(struct pctx *c, struct cost_spec *s, enum cfield f,
                            const struct toml_item *it)
{
	struct cost_col *col = &s->col[f];

	if (it->array_index >= 0)
		return add_cost_value(c, s, f, it, it->array_index);
	if (f == CF_NB && !is_tile_kernel(s->kernel))
		return fail(c, key_at(it),
		            "%s.nb: %s is not a tile kernel: give its flops, bytes and domain",
		            s->path, kernel_by_id(s->kernel)->name);
	col->set = true;
	col->at = key_at(it);
	col->n = 0;
	if (it->type == TOML_ITEM_ARRAY) {
		if (it->array_len == 0)
			return fail(c, value_at(it), "%s.%s: empty array", s->path, cfield_name[f]);
		if (it->array_len > COST_ROWS_MAX)
			return fail(
			        c, value_at(it),
			        "%s.%s: %zu entries, at most %d per kernel and model (a cost model "
			        "keeps %d sizes)",
			        s->path, cfield_name[f], it->array_len, COST_ROWS_MAX,
			        COST_ROWS_MAX);
		col->len = (uint32_t)it->array_len;
		return 0;
	}
	if (it->type != TOML_ITEM_INT && it->type != TOML_ITEM_FLOAT)
		return fail(c, value_at(it),
		            "%s.%s: expected a number or an array of numbers, got %s", s->path,
		            cfield_name[f], toml_shim_type_name(it->type));
	col->len = 1; /* a single value: a table of one row */
	return add_cost_value(c, s, f, it, -1);
}

static int visit_cost(struct pctx *c, const struct toml_item *it, char part[][PART_MAX], int n)
{
	struct cost_model *cm = find_model(c, it, part[1]);
	struct cost_spec *s;

	if (!cm)
		return 1;
	if (n == 2) {
		if (it->type != TOML_ITEM_TABLE)
			return fail(c, value_at(it), "%s: expected tables [%s.KERNEL], got %s",
			            it->path, it->path, toml_shim_type_name(it->type));
		return 0;
	}
	if (!(s = find_cost(c, it, cm, part[2])))
		return 1;
	if (n == 3)
		return expect_table(c, it);
	if (n == 4) {
		for (int f = 0; f < CF_N; f++)
			if (!strcmp(part[3], cfield_name[f]))
				return visit_cost_field(c, s, (enum cfield)f, it);
	}
	return fail(c, key_at(it),
	            "unknown key %s in [%s] (expected nb, or flops, bytes and domain; ns; "
	            "spread_ns)",
	            path_rest(it->path, 3), s->path);
}

static int visit(void *p, const struct toml_item *it)
{
	struct pctx *c = p;
	char part[4][PART_MAX];
	int n = split_path(it->path, part, 4);

	if (n < 1)
		return fail(c, key_at(it), "empty key");
	if (n == 1)
		return visit_top(c, it, part[0]);
	if (!strcmp(part[0], "device"))
		return visit_device(c, it, part, n);
	if (!strcmp(part[0], "link"))
		return visit_link(c, it, part, n);
	if (!strcmp(part[0], "cost"))
		return visit_cost(c, it, part, n);
	/* a table defined after its subtables: [x.y] ... [x] */
	return fail(c, key_at(it), "unknown key %.*s (expected " TOP_KEYS ")",
	            (int)prefix_len(it->path, 1), it->path);
}

/* ---- checks on the whole document ---------------------------------------- */

static unsigned ndigits(unsigned v)
{
	unsigned n = 1;

	for (; v >= 10; v /= 10)
		n++;
	return n;
}

/* The spec each device came from: owner[i] indexes c->dev. */
static int finish_devices(struct pctx *c, struct machine *m, uint32_t *owner)
{
	static const enum dfield required[] = { DF_KIND, DF_MODEL, DF_GFLOPS, DF_MEM_GBPS,
		                                DF_LAUNCH_NS };
	static const char *const want[] = { "\"cpu\", \"clcpu\", \"gpu\" or \"npu\"",
		                            "the devices' model name", "sgemm throughput, GFLOP/s",
		                            "copy bandwidth of its memory, GB/s",
		                            "fixed cost of one task, ns" };
	int owner_node[MACHINE_MAX_NODES];

	for (int k = 0; k < MACHINE_MAX_NODES; k++)
		owner_node[k] = -1;
	for (uint32_t i = 0; i < c->ndev; i++) {
		struct dev_spec *s = &c->dev[i];
		bool host = s->kind == TDM_DEV_CPU;
		int64_t count = s->set[DF_COUNT] ? s->count : 1;
		struct at count_at = s->set[DF_COUNT] ? s->fat[DF_COUNT] : s->at;

		for (size_t r = 0; r < sizeof(required) / sizeof(required[0]); r++)
			if (!s->set[required[r]])
				return fail(c, s->at, "%s: missing %s (%s)", s->path,
				            dfield_name[required[r]], want[r]);
		if (host && s->set[DF_NODE] && s->node != 0)
			return fail(c, s->fat[DF_NODE],
			            "%s.node: %" PRId64
			            ": host devices (kind \"cpu\") are on node 0",
			            s->path, s->node);
		if (host && s->set[DF_MEM_GIB])
			return fail(
			        c, s->fat[DF_MEM_GIB],
			        "%s.mem_gib: host devices (kind \"cpu\") use host memory: leave "
			        "mem_gib out",
			        s->path);
		if (!host && s->set[DF_SOCKET_GBPS])
			return fail(
			        c, s->fat[DF_SOCKET_GBPS],
			        "%s.socket_gbps: only host cores (kind \"cpu\") share a socket's "
			        "memory bandwidth: leave socket_gbps out",
			        s->path);
		if (host && s->set[DF_SOCKET_GBPS] && s->socket_gbps < s->mem_gbps)
			return fail(
			        c, s->fat[DF_SOCKET_GBPS],
			        "%s.socket_gbps: %g GB/s is less than one core's mem_gbps (%g): "
			        "the socket's bandwidth is shared by its cores, not below one",
			        s->path, s->socket_gbps, s->mem_gbps);
		if (!host && !s->set[DF_NODE])
			return fail(
			        c, s->at,
			        "%s: missing node (an accelerator has a memory node of its own, 1 "
			        "to %d)",
			        s->path, MACHINE_MAX_NODES - 1);
		if (!host && s->node == 0)
			return fail(
			        c, s->fat[DF_NODE],
			        "%s.node: node 0 is the host's: an accelerator (kind \"%s\") has a "
			        "node of its own, 1 to %d",
			        s->path, kind_name(s->kind), MACHINE_MAX_NODES - 1);
		if (!host && !s->set[DF_MEM_GIB])
			return fail(c, s->at, "%s: missing mem_gib (the accelerator's memory, GiB)",
			            s->path);
		if (count > 1 && is_digit(s->name[strlen(s->name) - 1]))
			return fail(
			        c, count_at,
			        "%s.count: with count > 1 the name is a prefix (devices %s0, %s1, "
			        "...): use a name that does not end in a digit",
			        s->path, s->name, s->name);
		if (count > 1 && strlen(s->name) + ndigits((unsigned)count - 1) >= DEV_NAME_MAX)
			return fail(c, count_at,
			            "%s.count: names %s0 to %s%" PRId64 " would be longer than %d "
			            "characters",
			            s->path, s->name, s->name, count - 1, DEV_NAME_MAX - 1);
		if (!host && s->node + count - 1 >= MACHINE_MAX_NODES)
			return fail(c, count_at,
			            "%s.count: %" PRId64 " accelerators from node %" PRId64
			            " need nodes up to %" PRId64 " (at most %d)",
			            s->path, count, s->node, s->node + count - 1,
			            MACHINE_MAX_NODES - 1);
		if (m->ndevices + count > MACHINE_MAX_DEVICES)
			return fail(c, count_at, "%s%s: more than %d devices in all", s->path,
			            s->set[DF_COUNT] ? ".count" : "", MACHINE_MAX_DEVICES);
		for (int64_t j = 0; j < count; j++) {
			struct machine_device *d = &m->dev[m->ndevices];

			memset(d, 0, sizeof(*d));
			if (count > 1)
				snprintf(d->name, sizeof(d->name), "%s%" PRId64, s->name, j);
			else
				snprintf(d->name, sizeof(d->name), "%s", s->name);
			for (uint32_t e = 0; e < m->ndevices; e++)
				if (!strcmp(m->dev[e].name, d->name))
					return fail(c, s->at,
					            "%s: device name %s is taken already (by [%s], "
					            "line %d)",
					            s->path, d->name, c->dev[owner[e]].path,
					            c->dev[owner[e]].at.line);
			snprintf(d->model, sizeof(d->model), "%s", s->model);
			d->kind = s->kind;
			d->node = host ? 0 : (uint16_t)(s->node + j);
			d->mem_bytes = host ? 0 : (uint64_t)llround(s->mem_gib * GIB);
			d->gemm_gflops = s->gflops;
			d->mem_gbps = s->mem_gbps;
			d->launch_ns = s->launch_ns;
			d->socket_gbps = s->set[DF_SOCKET_GBPS] ? s->socket_gbps : 0;
			d->fp16_gflops = s->set[DF_FP16_GFLOPS] ? s->fp16_gflops : 0;
			d->absent = s->absent;
			if (!host && owner_node[d->node] >= 0)
				return fail(
				        c, s->fat[DF_NODE],
				        "%s.node: node %u is %s's already: each accelerator has a "
				        "memory node of its own",
				        s->path, (unsigned)d->node,
				        m->dev[owner_node[d->node]].name);
			if (!host)
				owner_node[d->node] = (int)m->ndevices;
			owner[m->ndevices++] = i;
		}
	}
	if (m->ndevices == 0)
		return fail(c, (struct at){ 0, 0 },
		            "no devices: describe at least one in a [device.NAME] table");
	uint32_t present = 0;
	for (uint32_t i = 0; i < m->ndevices; i++)
		present += !m->dev[i].absent;
	if (!present)
		return fail(c, c->dev[owner[0]].fat[DF_PRESENT],
		            "%s.present: every device is absent at start: at least one must be "
		            "present",
		            c->dev[owner[0]].path);
	m->nnodes = 1;
	for (int k = 1; k < MACHINE_MAX_NODES; k++)
		if (owner_node[k] >= 0)
			m->nnodes = (uint32_t)k + 1;
	for (uint32_t k = 1; k < m->nnodes; k++) {
		if (owner_node[k] >= 0)
			continue;
		for (uint32_t a = k + 1; a < m->nnodes; a++) {
			const struct dev_spec *s;

			if (owner_node[a] < 0)
				continue;
			s = &c->dev[owner[owner_node[a]]];
			return fail(
			        c, s->fat[DF_NODE],
			        "%s.node: node %u has no device (accelerators' nodes are numbered "
			        "1, 2, ... without gaps)",
			        s->path, k);
		}
	}
	return 0;
}

/* shares_cores_with by device: each name a host core (kind "cpu") other
 * than the device itself, on an accelerator. */
static int finish_shares(struct pctx *c, struct machine *m, const uint32_t *owner)
{
	for (uint32_t i = 0; i < m->ndevices; i++) {
		const struct dev_spec *s = &c->dev[owner[i]];
		struct machine_device *d = &m->dev[i];

		static const enum dfield with_shares[] = { DF_CORE_SLICE_NS, DF_CORE_SLICE_EVERY_NS,
			                                   DF_BUSY_CORE_SHARE };
		for (size_t k = 0;
		     !s->has_shares && k < sizeof(with_shares) / sizeof(with_shares[0]); k++)
			if (s->set[with_shares[k]])
				return fail(c, s->fat[with_shares[k]],
				            "%s.%s: says how this device contends for host cores, "
				            "so it needs shares_cores_with (the cores it runs on)",
				            s->path, dfield_name[with_shares[k]]);
		if (!s->has_shares)
			continue;
		d->core_slice_ns =
		        s->set[DF_CORE_SLICE_NS] ? s->core_slice_ns : MACHINE_CORE_SLICE_NS;
		d->core_slice_every_ns = s->set[DF_CORE_SLICE_EVERY_NS]
		                                 ? s->core_slice_every_ns
		                                 : MACHINE_CORE_SLICE_EVERY_NS;
		d->busy_core_share =
		        s->set[DF_BUSY_CORE_SHARE] ? s->busy_core_share : MACHINE_BUSY_CORE_SHARE;
		if (d->kind == TDM_DEV_CPU)
			return fail(
			        c, s->shares_key_at,
			        "%s.shares_cores_with: a host core (kind \"cpu\") is a core of "
			        "its own: give the relation on the accelerator that runs on host "
			        "cores",
			        s->path);
		for (uint32_t k = 0; k < s->nshares; k++) {
			const char *name = s->shares[k];
			uint32_t j = 0;

			while (j < m->ndevices && strcmp(m->dev[j].name, name))
				j++;
			if (j == m->ndevices)
				return fail(c, s->shares_at[k],
				            "%s.shares_cores_with[%u]: no device is named %s",
				            s->path, k, name);
			if (j == i)
				return fail(c, s->shares_at[k],
				            "%s.shares_cores_with[%u]: %s is this device: a device "
				            "does not share cores with itself",
				            s->path, k, name);
			if (m->dev[j].kind != TDM_DEV_CPU)
				return fail(c, s->shares_at[k],
				            "%s.shares_cores_with[%u]: %s is not a host core (its "
				            "kind is \"%s\"): list the \"cpu\" devices whose cores "
				            "%s runs on",
				            s->path, k, name, kind_name(m->dev[j].kind), d->name);
			d->shares_cores |= UINT64_C(1) << j;
		}
	}
	return 0;
}

/* The device computing from node k, or -1. */
static int node_device(const struct machine *m, unsigned k)
{
	for (uint32_t i = 0; i < m->ndevices; i++)
		if (m->dev[i].node == k)
			return (int)i;
	return -1;
}

/* Links the description leaves out, as calibration has them: the reverse
 * direction's figures when that one is given; between two accelerators,
 * through the host (the two copies in a row); within a node, a copy in its
 * memory (each byte read and written). */
static void derive_links(struct machine *m, bool given[MACHINE_MAX_NODES][MACHINE_MAX_NODES])
{
	struct calibration *def = NULL;

	for (uint32_t s = 0; s < m->nnodes; s++)
		for (uint32_t d = 0; d < m->nnodes; d++)
			if (s != d && !given[s][d] && given[d][s])
				m->link[s][d] = m->link[d][s];
	for (uint32_t a = 1; a < m->nnodes; a++) {
		for (uint32_t b = 1; b < m->nnodes; b++) {
			const struct cal_link *up = &m->link[a][0], *down = &m->link[0][b];

			if (a == b || given[a][b] || given[b][a])
				continue;
			m->link[a][b] = (struct cal_link){
				.gbps = 1 / (1 / up->gbps + 1 / down->gbps),
				.latency_ns = fmin(up->latency_ns + down->latency_ns, r_ns.hi / 2),
				.measured = false,
			};
		}
	}
	for (uint32_t k = 0; k < m->nnodes; k++) {
		int d = node_device(m, k);

		if (d >= 0) {
			m->link[k][k] = (struct cal_link){ .gbps = m->dev[d].mem_gbps / 2 };
			continue;
		}
		if (!def && (def = malloc(sizeof(*def))))
			calibrate_defaults(0, 1, def);
		m->link[k][k] = def ? def->link[0][0] : (struct cal_link){ .gbps = 1 };
		m->link[k][k].measured = false;
	}
	free(def);
}

static int finish_links(struct pctx *c, struct machine *m, const uint32_t *owner)
{
	bool given[MACHINE_MAX_NODES][MACHINE_MAX_NODES];

	memset(given, 0, sizeof(given));
	for (uint32_t i = 0; i < c->nlink; i++) {
		const struct link_spec *l = &c->link[i];

		if (l->src >= m->nnodes || l->dst >= m->nnodes)
			return fail(c, l->at,
			            "%s: node %u does not exist (this machine's nodes are 0 to %u)",
			            l->path, l->src >= m->nnodes ? l->src : l->dst, m->nnodes - 1);
		if (!l->has_gbps)
			return fail(c, l->at, "%s: missing gbps (bandwidth, GB/s)", l->path);
		if (!l->has_latency)
			return fail(c, l->at, "%s: missing latency_ns (fixed cost of one copy, ns)",
			            l->path);
		m->link[l->src][l->dst] = (struct cal_link){ l->gbps, l->latency_ns, true };
		given[l->src][l->dst] = true;
	}
	for (uint32_t k = 1; k < m->nnodes; k++) {
		int d = node_device(m, k);
		const struct dev_spec *s = &c->dev[owner[d]];

		if (!given[0][k] && !given[k][0])
			return fail(c, s->at,
			            "%s: no link between the host (node 0) and node %u: add a "
			            "[link.0-%u] "
			            "table",
			            s->path, k, k);
	}
	derive_links(m, given);
	return 0;
}

static bool model_in_use(const struct machine *m, const char *model)
{
	for (uint32_t i = 0; i < m->ndevices; i++)
		if (!strcmp(m->dev[i].model, model))
			return true;
	return false;
}

/* One cost table's rows into m->costs (room was made). */
static int finish_cost(struct pctx *c, struct machine *m, const struct cost_spec *s)
{
	const struct cost_col *col = s->col;
	bool by_nb = col[CF_NB].set;
	enum cfield first = by_nb ? CF_NB : CF_FLOPS;
	uint32_t n = col[CF_NS].len, base = m->ncosts;

	if (by_nb) {
		for (int f = CF_FLOPS; f <= CF_DOMAIN; f++)
			if (col[f].set)
				return fail(c, col[f].at,
				            "%s.%s: give either nb or flops, bytes and domain, not "
				            "both",
				            s->path, cfield_name[f]);
	} else {
		for (int f = CF_FLOPS; f <= CF_DOMAIN; f++)
			if (!col[f].set)
				return fail(c, s->at,
				            "%s: missing %s (give nb, or flops, bytes and domain)",
				            s->path, cfield_name[f]);
	}
	if (!col[CF_NS].set)
		return fail(c, s->at, "%s: missing ns (the mean time of each row)", s->path);
	for (int f = 0; f < CF_N; f++)
		if (col[f].set && col[f].len != n)
			return fail(c, col[f].at, "%s.%s: %u entries, but ns has %u", s->path,
			            cfield_name[f], col[f].len, n);
	for (uint32_t r = 0; r < n; r++) {
		struct machine_cost *mc = &m->costs[m->ncosts];

		memset(mc, 0, sizeof(*mc));
		mc->kernel = s->kernel;
		snprintf(mc->model, sizeof(mc->model), "%s", s->model);
		if (by_nb)
			mc->feat = tile_features(s->kernel, (int64_t)col[CF_NB].v[r]);
		else
			mc->feat = (struct kernel_features){ col[CF_FLOPS].v[r], col[CF_BYTES].v[r],
				                             col[CF_DOMAIN].v[r] };
		mc->ns = col[CF_NS].v[r];
		mc->spread_ns = col[CF_SPREAD].set ? col[CF_SPREAD].v[r] : 0;
		for (uint32_t e = base; e < m->ncosts; e++)
			if (same_features(&m->costs[e].feat, &mc->feat))
				return fail(c, col[first].vat[r],
				            "%s.%s[%u]: the same size as %s[%u] (each size once)",
				            s->path, cfield_name[first], r, cfield_name[first],
				            e - base);
		m->ncosts++;
	}
	return 0;
}

static int finish_costs(struct pctx *c, struct machine *m)
{
	size_t rows = 0;

	for (uint32_t i = 0; i < c->nmodel; i++)
		if (!model_in_use(m, c->model[i].name))
			return fail(c, c->model[i].at, "%s: no device has model \"%s\"",
			            c->model[i].path, c->model[i].name);
	for (uint32_t i = 0; i < c->ncost; i++)
		rows += c->cost[i]->col[CF_NS].len;
	if (rows > MACHINE_MAX_COSTS)
		return fail(c, (struct at){ 0, 0 }, "%zu cost rows, at most %d", rows,
		            MACHINE_MAX_COSTS);
	if (rows && !(m->costs = malloc(rows * sizeof(*m->costs))))
		return oom(c);
	for (uint32_t i = 0; i < c->ncost; i++)
		if (finish_cost(c, m, c->cost[i]))
			return 1;
	return 0;
}

/* ---- public -------------------------------------------------------------- */

void machine_init(struct machine *m)
{
	memset(m, 0, sizeof(*m));
}

void machine_free(struct machine *m)
{
	if (!m)
		return;
	free(m->costs);
	machine_init(m);
}

static void format_error(char *err, size_t errlen, const char *name, int line, int col,
                         const char *msg)
{
	if (!err || !errlen)
		return;
	if (line > 0)
		snprintf(err, errlen, "%s:%d:%d: %s", name, line, col, msg);
	else
		snprintf(err, errlen, "%s: %s", name, msg);
}

int machine_parse(const char *text, size_t len, const char *name, struct machine *m, char *err,
                  size_t errlen)
{
	struct pctx *c;
	struct machine *out;
	uint32_t owner[MACHINE_MAX_DEVICES];
	char msg[MSG_MAX];
	int line = 0, col = 0, rc;

	if (!name)
		name = "<machine>";
	if (err && errlen)
		err[0] = '\0';
	if (m)
		machine_init(m);
	if (!m || (!text && len)) {
		format_error(err, errlen, name, 0, 0, "invalid arguments");
		return -TDM_EINVAL;
	}
	if (len > MACHINE_MAX_INPUT) {
		format_error(err, errlen, name, 0, 0, "larger than 16 MiB");
		return -TDM_EINVAL;
	}
	c = calloc(1, sizeof(*c));
	out = calloc(1, sizeof(*out));
	if (!c || !out) {
		free(c);
		free(out);
		format_error(err, errlen, name, 0, 0, "out of memory");
		return -TDM_ENOMEM;
	}
	c->m = out;
	rc = toml_shim_walk(text, len, visit, c, &line, &col, msg, sizeof(msg));
	if (rc == 0 && !finish_devices(c, out, owner) && !finish_shares(c, out, owner) &&
	    !finish_links(c, out, owner) && !finish_costs(c, out)) {
		if (!c->has_name)
			snprintf(out->name, sizeof(out->name), "%s", name);
		memcpy(m, out, sizeof(*m));
		rc = 0;
	} else {
		if (c->failed)
			format_error(err, errlen, name, c->line, c->col, c->msg);
		else
			format_error(err, errlen, name, line, col, msg);
		rc = c->failed && !strcmp(c->msg, "out of memory") ? -TDM_ENOMEM : -TDM_EINVAL;
		free(out->costs);
	}
	for (uint32_t i = 0; i < c->ncost; i++)
		free(c->cost[i]);
	free(c->cost);
	free(c);
	free(out);
	return rc;
}

int machine_load(const char *path, struct machine *m, char *err, size_t errlen)
{
	char *buf;
	size_t n = 0;
	FILE *f;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (m)
		machine_init(m);
	if (!path || !m) {
		format_error(err, errlen, path ? path : "<machine>", 0, 0, "invalid arguments");
		return -TDM_EINVAL;
	}
	if (!(f = fopen(path, "rb"))) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -TDM_ESYS;
	}
	/* One byte more than the cap tells a file that is too large. */
	if (!(buf = malloc(MACHINE_MAX_INPUT + 1))) {
		fclose(f);
		format_error(err, errlen, path, 0, 0, "out of memory");
		return -TDM_ENOMEM;
	}
	n = fread(buf, 1, MACHINE_MAX_INPUT + 1, f);
	if (ferror(f)) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		fclose(f);
		free(buf);
		return -TDM_ESYS;
	}
	fclose(f);
	rc = machine_parse(buf, n, path, m, err, errlen);
	free(buf);
	return rc;
}

int machine_restrict(struct machine *m, enum tdm_device_kind kind, uint32_t count, char *err,
                     size_t errlen)
{
	int node_map[MACHINE_MAX_NODES], dev_map[MACHINE_MAX_DEVICES];
	struct cal_link link[MACHINE_MAX_NODES][MACHINE_MAX_NODES];
	uint32_t have = 0, kept = 0, n = 0, nnodes = 1;

	if (err && errlen)
		err[0] = '\0';
	if (!m || (unsigned)kind >= TDM_DEV_KIND_COUNT) {
		if (err && errlen)
			snprintf(err, errlen, "%s: invalid arguments", m ? m->name : "<machine>");
		return -TDM_EINVAL;
	}
	for (uint32_t i = 0; i < m->ndevices; i++)
		have += m->dev[i].kind == kind;
	if (count > have) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot keep %u %s device(s): the machine has %u",
			         m->name, count, kind_name(kind), have);
		return -TDM_EINVAL;
	}
	if (m->ndevices - (have - count) == 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s: keeping %u %s device(s) leaves no device",
			         m->name, count, kind_name(kind));
		return -TDM_EINVAL;
	}
	for (int k = 0; k < MACHINE_MAX_NODES; k++)
		node_map[k] = -1;
	node_map[0] = 0;
	for (uint32_t i = 0; i < m->ndevices; i++) {
		struct machine_device d = m->dev[i];

		dev_map[i] = -1;
		if (d.kind == kind && kept++ >= count)
			continue;
		if (d.node && node_map[d.node] < 0)
			node_map[d.node] = 0; /* numbered below, in node order */
		dev_map[i] = (int)n;
		m->dev[n++] = d;
	}
	/* The cores shared with devices that go are no longer described. */
	for (uint32_t i = 0; i < n; i++) {
		uint64_t old = m->dev[i].shares_cores, now = 0;

		for (uint32_t j = 0; old && j < m->ndevices; j++)
			if ((old >> j & 1) && dev_map[j] >= 0)
				now |= UINT64_C(1) << dev_map[j];
		m->dev[i].shares_cores = now;
	}
	m->ndevices = n;
	for (uint32_t k = 1; k < m->nnodes; k++)
		if (node_map[k] >= 0)
			node_map[k] = (int)nnodes++;
	for (uint32_t i = 0; i < m->ndevices; i++)
		m->dev[i].node = (uint16_t)node_map[m->dev[i].node];
	memset(link, 0, sizeof(link));
	for (uint32_t s = 0; s < m->nnodes; s++)
		for (uint32_t d = 0; d < m->nnodes; d++)
			if (node_map[s] >= 0 && node_map[d] >= 0)
				link[node_map[s]][node_map[d]] = m->link[s][d];
	memcpy(m->link, link, sizeof(link));
	m->nnodes = nnodes;
	n = 0;
	for (uint32_t i = 0; i < m->ncosts; i++)
		if (model_in_use(m, m->costs[i].model))
			m->costs[n++] = m->costs[i];
	m->ncosts = n;
	return 0;
}

void machine_calibration(const struct machine *m, struct calibration *out)
{
	calibrate_defaults(m->ndevices, m->nnodes, out);
	snprintf(out->fingerprint, sizeof(out->fingerprint), "sim:%s", m->name);
	for (char *p = out->fingerprint; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			*p = '_';
	for (uint32_t i = 0; i < out->ndevices; i++) {
		struct cal_device *d = &out->dev[i];

		device_key(m->dev[i].kind, m->dev[i].model, d->key, sizeof(d->key));
		d->node = m->dev[i].node;
		d->gemm_gflops = m->dev[i].gemm_gflops;
		d->mem_gbps = m->dev[i].mem_gbps;
		d->launch_ns = m->dev[i].launch_ns;
	}
	for (uint32_t s = 0; s < out->nnodes; s++)
		for (uint32_t d = 0; d < out->nnodes; d++)
			out->link[s][d] = m->link[s][d];
	out->wake_ns = m->wake_ns;
}

/* ---- the cost tables as a model document ---------------------------------- */

/* History that predicts exactly ns: three samples around it (the lower
 * median of three is the middle one), spread so that 1.4826 * MAD is the
 * row's spread as far as the samples' range allows. */
static json_t *footprint_json(const struct machine_cost *mc)
{
	double d = mc->spread_ns / 1.4826;

	d = fmin(d, fmin(mc->ns - 1, COST_NS_MAX - mc->ns));
	if (!(d > 0))
		d = 0;
	return json_pack("{s:f, s:f, s:f, s:I, s:f, s:f, s:[f, f, f]}", "flops", mc->feat.flops,
	                 "bytes", mc->feat.bytes, "domain", mc->feat.domain, "n", (json_int_t)3,
	                 "estimate_ns", mc->ns, "spread_ns", mc->spread_ns, "recent", mc->ns - d,
	                 mc->ns, mc->ns + d);
}

static json_t *model_json(const struct machine *m, uint32_t kernel, const char *model,
                          const char *key)
{
	json_t *fps = json_array(), *o;
	json_int_t n = 0;

	if (!fps)
		return NULL;
	for (uint32_t i = 0; i < m->ncosts; i++) {
		const struct machine_cost *mc = &m->costs[i];

		if (mc->kernel != kernel || strcmp(mc->model, model))
			continue;
		if (json_array_append_new(fps, footprint_json(mc))) {
			json_decref(fps);
			return NULL;
		}
		n += 3;
	}
	if (!json_array_size(fps)) {
		json_decref(fps);
		return json_null(); /* nothing for this kernel */
	}
	o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o}", "kernel", kernel_by_id(kernel)->name,
	              "device", key, "samples", n, "learned", n, "outliers", (json_int_t)0,
	              "footprints", fps);
	return o;
}

json_t *machine_models_json(const struct machine *m)
{
	json_t *doc = json_pack("{s:i, s:[], s:[]}", "version", 1, "models", "links");
	json_t *models = doc ? json_object_get(doc, "models") : NULL;
	char key[CAL_KEY_MAX], other[CAL_KEY_MAX];

	if (!doc || !m)
		return doc;
	for (uint32_t i = 0; i < m->ndevices; i++) {
		bool seen = false;

		device_key(m->dev[i].kind, m->dev[i].model, key, sizeof(key));
		for (uint32_t j = 0; j < i && !seen; j++) {
			device_key(m->dev[j].kind, m->dev[j].model, other, sizeof(other));
			seen = !strcmp(key, other);
		}
		if (seen)
			continue;
		for (uint32_t k = 0; k < KERNEL_COUNT; k++) {
			json_t *o = model_json(m, k, m->dev[i].model, key);

			if (o && json_is_null(o))
				continue; /* no table for this kernel */
			if (!o || json_array_append_new(models, o)) {
				json_decref(doc);
				return NULL;
			}
		}
	}
	return doc;
}

/* ---- writing a description ------------------------------------------------- */

/* One cost row for machine_write, from a model document. */
struct wrow {
	uint16_t kernel;
	char model[MACHINE_NAME_MAX];
	struct kernel_features f;
	double ns, spread;
};

/* The shortest of %.15g, %.16g, %.17g that reads back as v. */
static void put_num(FILE *f, double v)
{
	char buf[40];

	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	fputs(buf, f);
}

/* A key as TOML has it: bare when it can be, else quoted (the names written
 * here hold no quote, backslash or control character). */
static void put_key(FILE *f, const char *k)
{
	bool bare = k[0] != '\0';

	for (const char *p = k; *p; p++)
		bare = bare && (machine_name_char(*p) && *p != '.');
	fprintf(f, bare ? "%s" : "\"%s\"", k);
}

/* The model part of a device key ("gpu:tesla-t4" -> "tesla-t4"). */
static void model_of_key(const char *key, char *out, size_t len)
{
	const char *colon = strchr(key, ':');

	snprintf(out, len, "%s", colon && colon[1] ? colon + 1 : "unknown");
}

static bool json_num(const json_t *o, const char *k, double lo, double hi, double *v)
{
	const json_t *j = json_object_get(o, k);

	if (!json_is_number(j))
		return false;
	*v = json_number_value(j);
	return isfinite(*v) && *v >= lo && *v <= hi;
}

/* The footprints of the models document for these device keys, at most 64
 * per kernel and model, each once. */
static int collect_rows(const json_t *doc, char (*keys)[CAL_KEY_MAX], size_t nkeys,
                        struct wrow **rows, size_t *nrows)
{
	const json_t *models = json_object_get(doc, "models"), *o;
	size_t cap = 0, i;

	*rows = NULL;
	*nrows = 0;
	json_array_foreach(models, i, o)
	{
		const char *kname = json_string_value(json_object_get(o, "kernel"));
		const char *key = json_string_value(json_object_get(o, "device"));
		const json_t *fps = json_object_get(o, "footprints"), *fp;
		char model[MACHINE_NAME_MAX];
		size_t j, per = 0;
		int k = kname && strlen(kname) < 64 ? kernel_lookup(kname) : -1;
		bool known = false;

		for (size_t d = 0; key && d < nkeys && !known; d++)
			known = !strcmp(keys[d], key);
		if (k <= KERNEL_NOOP || !known)
			continue;
		model_of_key(key, model, sizeof(model));
		for (size_t r = 0; r < *nrows; r++)
			per += (*rows)[r].kernel == k && !strcmp((*rows)[r].model, model);
		json_array_foreach(fps, j, fp)
		{
			struct wrow w = { .kernel = (uint16_t)k };
			bool dup = false;

			if (!json_num(fp, "flops", 0, COST_FEAT_MAX, &w.f.flops) ||
			    !json_num(fp, "bytes", 0, COST_FEAT_MAX, &w.f.bytes) ||
			    !json_num(fp, "domain", 0, COST_FEAT_MAX, &w.f.domain) ||
			    !json_num(fp, "estimate_ns", 1, COST_NS_MAX, &w.ns))
				continue;
			if (!json_num(fp, "spread_ns", 0, COST_NS_MAX, &w.spread))
				w.spread = 0;
			w.f.flops += 0.0;
			w.f.bytes += 0.0;
			w.f.domain += 0.0;
			w.spread += 0.0;
			snprintf(w.model, sizeof(w.model), "%s", model);
			for (size_t r = 0; r < *nrows && !dup; r++)
				dup = (*rows)[r].kernel == k && !strcmp((*rows)[r].model, model) &&
				      same_features(&(*rows)[r].f, &w.f);
			if (dup || per >= COST_ROWS_MAX || *nrows >= MACHINE_MAX_COSTS)
				continue;
			if (*nrows == cap) {
				size_t ncap = cap ? 2 * cap : 64;
				struct wrow *grown = realloc(*rows, ncap * sizeof(*grown));

				if (!grown)
					return -TDM_ENOMEM;
				*rows = grown;
				cap = ncap;
			}
			(*rows)[(*nrows)++] = w;
			per++;
		}
	}
	return 0;
}

/* nb when f is exactly what the tile kernel has for nb x nb tiles, else 0. */
static int64_t tile_nb(uint32_t kernel, const struct kernel_features *f)
{
	struct kernel_features t;
	int64_t nb;

	if (!is_tile_kernel(kernel) || !(f->domain >= 1 && f->domain <= NB_MAX) ||
	    f->domain != floor(f->domain))
		return 0;
	nb = (int64_t)f->domain;
	t = tile_features(kernel, nb);
	return same_features(&t, f) ? nb : 0;
}

static void put_column(FILE *f, const char *name, const struct wrow *rows, size_t n, const bool *in,
                       int which)
{
	bool first = true;

	fprintf(f, "%s = [", name);
	for (size_t r = 0; r < n; r++) {
		double v;

		if (!in[r])
			continue;
		switch (which) {
		case CF_NB: v = rows[r].f.domain; break;
		case CF_FLOPS: v = rows[r].f.flops; break;
		case CF_BYTES: v = rows[r].f.bytes; break;
		case CF_DOMAIN: v = rows[r].f.domain; break;
		case CF_NS: v = rows[r].ns; break;
		default: v = rows[r].spread; break;
		}
		fputs(first ? " " : ", ", f);
		put_num(f, v);
		first = false;
	}
	fputs(" ]\n", f);
}

/* Each kernel and model's rows as one [cost.MODEL.KERNEL] table, in the
 * order they first appear. */
static int write_costs(FILE *f, const struct wrow *rows, size_t n)
{
	bool *done = calloc(n ? n : 1, sizeof(bool)), *in = calloc(n ? n : 1, sizeof(bool));

	if (!done || !in) {
		free(done);
		free(in);
		return -TDM_ENOMEM;
	}
	for (size_t g = 0; g < n; g++) {
		bool by_nb = true;

		if (done[g])
			continue;
		for (size_t r = g; r < n; r++) {
			in[r] = !done[r] && rows[r].kernel == rows[g].kernel &&
			        !strcmp(rows[r].model, rows[g].model);
			if (in[r]) {
				done[r] = true;
				by_nb = by_nb && tile_nb(rows[r].kernel, &rows[r].f) > 0;
			}
		}
		for (size_t r = 0; r < g; r++)
			in[r] = false;
		fputs("\n[cost.", f);
		put_key(f, rows[g].model);
		fprintf(f, ".%s]\n", kernel_by_id(rows[g].kernel)->name);
		if (by_nb) {
			put_column(f, "nb", rows, n, in, CF_NB);
		} else {
			put_column(f, "flops", rows, n, in, CF_FLOPS);
			put_column(f, "bytes", rows, n, in, CF_BYTES);
			put_column(f, "domain", rows, n, in, CF_DOMAIN);
		}
		put_column(f, "ns", rows, n, in, CF_NS);
		put_column(f, "spread_ns", rows, n, in, CF_SPREAD);
	}
	free(done);
	free(in);
	return 0;
}

/* Device i's name as the format has it: [a-z0-9_], 1 to 31 characters,
 * unique among the first i; "devI" otherwise. */
static void write_name(const struct backend_device *devs, size_t i, char (*names)[DEV_NAME_MAX])
{
	char *out = names[i];
	size_t n = 0;

	for (const char *p = devs[i].name; *p && n + 1 < DEV_NAME_MAX; p++) {
		char ch = (*p >= 'A' && *p <= 'Z') ? (char)(*p - 'A' + 'a') : *p;

		out[n++] = dev_name_char(ch) ? ch : '_';
	}
	out[n] = '\0';
	for (size_t j = 0; j < i && n; j++)
		if (!strcmp(names[j], out))
			n = 0;
	if (!n)
		snprintf(out, DEV_NAME_MAX, "dev%zu", i);
}

/* The OpenCL CPU device (PoCL) runs its kernels on threads spread over
 * every core of the host, and the core workers are bound one to each of
 * those cores (their os_index, from hwloc): it shares cores with every
 * "cpu" device. GPUs and NPUs compute on their own silicon. */
static void write_shares(FILE *out, const struct backend_device *devs, size_t ndevs, size_t i,
                         char (*names)[DEV_NAME_MAX])
{
	bool first = true;

	if (devs[i].kind != TDM_DEV_CLCPU)
		return;
	for (size_t j = 0; j < ndevs; j++) {
		if (devs[j].kind != TDM_DEV_CPU)
			continue;
		fprintf(out, "%s\"%s\"", first ? "shares_cores_with = [ " : ", ", names[j]);
		first = false;
	}
	if (!first)
		fputs(" ]\n", out);
}

int machine_write(FILE *out, const char *name, const struct backend_device *devs, size_t ndevs,
                  const struct calibration *cal, const json_t *models)
{
	char(*keys)[CAL_KEY_MAX] = NULL;
	char(*names)[DEV_NAME_MAX] = NULL;
	struct wrow *rows = NULL;
	size_t nrows = 0;
	int rc = 0;

	if (!out || !cal || ndevs != cal->ndevices || ndevs > MACHINE_MAX_DEVICES ||
	    (ndevs && !devs) || cal->nnodes < 1 || cal->nnodes > MACHINE_MAX_NODES)
		return -TDM_EINVAL;
	keys = calloc(ndevs ? ndevs : 1, sizeof(*keys));
	names = calloc(ndevs ? ndevs : 1, sizeof(*names));
	if (!keys || !names) {
		rc = -TDM_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < ndevs; i++) {
		calibrate_device_key(&devs[i], keys[i], sizeof(keys[i]));
		write_name(devs, i, names);
	}
	if (models && (rc = collect_rows(models, keys, ndevs, &rows, &nrows)))
		goto out;

	fputs("# Machine description (docs/machines.md).\n", out);
	if (name && name[0]) {
		char clean[MACHINE_NAME_MAX];
		size_t n = 0;

		for (; name[n] && n + 1 < sizeof(clean); n++)
			clean[n] = machine_name_char(name[n]) ? name[n] : '_';
		clean[n] = '\0';
		fprintf(out, "name = \"%s\"\n", clean);
	}
	if (cal->wake_ns > 0) {
		fputs("wake_ns = ", out);
		put_num(out, cal->wake_ns);
		fputs(" # a sleeping worker, woken\n", out);
	}
	for (size_t i = 0; i < ndevs; i++) {
		const struct cal_device *d = &cal->dev[i];
		char model[MACHINE_NAME_MAX];

		model_of_key(keys[i], model, sizeof(model));
		fprintf(out, "\n[device.%s]\nkind = \"%s\"\nmodel = ", names[i],
		        kind_name(devs[i].kind));
		fprintf(out, "\"%s\"\nnode = %u\n", model, (unsigned)d->node);
		if (devs[i].kind != TDM_DEV_CPU) {
			fputs("mem_gib = ", out);
			if (devs[i].mem_bytes)
				put_num(out, (double)devs[i].mem_bytes / GIB);
			else
				fputs("1 # not known", out);
			fputc('\n', out);
		}
		fputs("gflops = ", out);
		put_num(out, d->gemm_gflops);
		fputs("\nmem_gbps = ", out);
		put_num(out, d->mem_gbps);
		fputs("\nlaunch_ns = ", out);
		put_num(out, d->launch_ns);
		fputc('\n', out);
		write_shares(out, devs, ndevs, i, names);
	}
	for (uint32_t s = 0; s < cal->nnodes; s++) {
		for (uint32_t d = 0; d < cal->nnodes; d++) {
			const struct cal_link *l = &cal->link[s][d];

			/* the others are derived from these when read back */
			if (s == d || (s && d && !l->measured))
				continue;
			fprintf(out, "\n[link.%u-%u]\ngbps = ", s, d);
			put_num(out, l->gbps);
			fputs("\nlatency_ns = ", out);
			put_num(out, l->latency_ns);
			fputc('\n', out);
		}
	}
	if ((rc = write_costs(out, rows, nrows)))
		goto out;
	if (fflush(out) || ferror(out))
		rc = -TDM_ESYS;
out:
	free(rows);
	free(keys);
	free(names);
	return rc;
}
