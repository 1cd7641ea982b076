/* The calibration's document and its cache file (profiler/calibrate.h):
 * calibration_to_json and calibration_from_json (untrusted input, every
 * field checked, the first error reported with where it is), and the file
 * under the state directory, one per hardware fingerprint, that
 * calibrate_load_or_run reads (a regular file, not a symbolic link, of at
 * most 1 MiB) before measuring again, and writes atomically (temp file,
 * fsync, rename). */
#include "profiler/calibrate.h"
#include "profiler/calibrate_internal.h"
#include "profiler/state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "tandem.h"

/* ---- JSON ---- */

static json_t *device_json(const struct cal_device *d)
{
	return json_pack("{s:s, s:i, s:f, s:f, s:f}", "key", d->key, "node", (int)d->node,
	                 "gemm_gflops", d->gemm_gflops, "mem_gbps", d->mem_gbps, "launch_ns",
	                 d->launch_ns);
}

static json_t *link_json(unsigned s, unsigned d, const struct cal_link *l)
{
	return json_pack("{s:i, s:i, s:f, s:f, s:b}", "src", (int)s, "dst", (int)d, "gbps", l->gbps,
	                 "latency_ns", l->latency_ns, "measured", (int)l->measured);
}

json_t *calibration_to_json(const struct calibration *c)
{
	json_t *devs = json_array(), *links = json_array(), *doc = NULL;
	bool ok = devs && links;
	uint32_t nnodes = c->nnodes < CAL_MAX_NODES ? c->nnodes : CAL_MAX_NODES;

	for (uint32_t i = 0; ok && i < c->ndevices && i < CAL_MAX_DEVICES; i++)
		ok = json_array_append_new(devs, device_json(&c->dev[i])) == 0;
	for (uint32_t s = 0; ok && s < nnodes; s++)
		for (uint32_t d = 0; ok && d < nnodes; d++)
			ok = json_array_append_new(links, link_json(s, d, &c->link[s][d])) == 0;
	if (ok)
		doc = json_pack("{s:i, s:s, s:f, s:i, s:f, s:O, s:O}", "version", CAL_VERSION,
		                "fingerprint", c->fingerprint, "seconds", c->seconds, "nnodes",
		                (int)nnodes, "wake_ns", c->wake_ns, "devices", devs, "links",
		                links);
	json_decref(devs);
	json_decref(links);
	return doc;
}

struct parser {
	char *err;
	size_t errlen;
	char where[32]; /* "devices[3]", or "" at the top */
};

static int bad(struct parser *p, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int bad(struct parser *p, const char *field, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!p->err || !p->errlen)
		return -TDM_EINVAL;
	n = snprintf(p->err, p->errlen, "calibration: %s%s%s: ", p->where,
	             p->where[0] && field[0] ? "." : "", field);
	if (n >= 0 && (size_t)n < p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -TDM_EINVAL;
}

static int get_int(struct parser *p, const json_t *obj, const char *name, json_int_t lo,
                   json_int_t hi, json_int_t *v)
{
	const json_t *j = json_object_get(obj, name);

	if (!j)
		return bad(p, name, "missing");
	if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
		return bad(p, name,
		           "must be an integer in [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT
		           "]",
		           lo, hi);
	*v = json_integer_value(j);
	return 0;
}

static int get_num(struct parser *p, const json_t *obj, const char *name, const struct range *r,
                   double *v)
{
	const json_t *j = json_object_get(obj, name);

	if (!j)
		return bad(p, name, "missing");
	if (!json_is_number(j) || !in_range(json_number_value(j), r))
		return bad(p, name, "must be a number in %c%g, %g)", r->lo_open ? '(' : '[', r->lo,
		           r->hi);
	*v = json_number_value(j);
	return 0;
}

/* A string of 1..size-1 bytes, no NUL, every byte accepted by ok. */
static int get_str(struct parser *p, const json_t *obj, const char *name, bool (*ok)(char),
                   char *out, size_t size)
{
	const json_t *j = json_object_get(obj, name);
	const char *s;
	size_t len;

	if (!j)
		return bad(p, name, "missing");
	if (!json_is_string(j))
		return bad(p, name, "must be a string");
	s = json_string_value(j);
	len = json_string_length(j);
	if (len == 0 || len >= size)
		return bad(p, name, "must be 1 to %zu bytes long", size - 1);
	for (size_t i = 0; i < len; i++)
		if (!ok(s[i]))
			return bad(p, name, "byte %zu (0x%02x) is not allowed", i,
			           (unsigned char)s[i]);
	memcpy(out, s, len);
	out[len] = '\0';
	return 0;
}

static bool printable(char c)
{
	return c >= 0x20 && c < 0x7f;
}

static int parse_device(struct parser *p, const json_t *obj, uint32_t nnodes, struct cal_device *d)
{
	json_int_t node = 0;
	int err;

	if (!json_is_object(obj))
		return bad(p, "", "must be an object");
	if ((err = get_str(p, obj, "key", key_char, d->key, sizeof(d->key))) ||
	    (err = get_int(p, obj, "node", 0, nnodes - 1, &node)) ||
	    (err = get_num(p, obj, "gemm_gflops", &r_gflops, &d->gemm_gflops)) ||
	    (err = get_num(p, obj, "mem_gbps", &r_gbps, &d->mem_gbps)) ||
	    (err = get_num(p, obj, "launch_ns", &r_ns, &d->launch_ns)))
		return err;
	d->node = (uint16_t)node;
	return 0;
}

/* One link into c; each (src, dst) may appear once. */
static int parse_link(struct parser *p, const json_t *obj, struct calibration *c,
                      bool seen[CAL_MAX_NODES][CAL_MAX_NODES])
{
	json_int_t s = 0, d = 0;
	struct cal_link l;
	const json_t *m;
	int err;

	if (!json_is_object(obj))
		return bad(p, "", "must be an object");
	if ((err = get_int(p, obj, "src", 0, c->nnodes - 1, &s)) ||
	    (err = get_int(p, obj, "dst", 0, c->nnodes - 1, &d)) ||
	    (err = get_num(p, obj, "gbps", &r_gbps, &l.gbps)) ||
	    (err = get_num(p, obj, "latency_ns", &r_ns, &l.latency_ns)))
		return err;
	m = json_object_get(obj, "measured");
	if (!json_is_boolean(m))
		return bad(p, "measured", "must be true or false");
	if (seen[s][d])
		return bad(p, "src", "link %d->%d appears twice", (int)s, (int)d);
	seen[s][d] = true;
	l.measured = json_is_true(m);
	c->link[s][d] = l;
	return 0;
}

static int parse_devices(struct parser *p, const json_t *doc, struct calibration *c)
{
	const json_t *arr = json_object_get(doc, "devices");
	int err;

	if (!json_is_array(arr))
		return bad(p, "devices", "must be an array");
	if (json_array_size(arr) > CAL_MAX_DEVICES)
		return bad(p, "devices", "%zu devices, at most %d", json_array_size(arr),
		           CAL_MAX_DEVICES);
	c->ndevices = (uint32_t)json_array_size(arr);
	for (uint32_t i = 0; i < c->ndevices; i++) {
		snprintf(p->where, sizeof(p->where), "devices[%u]", i);
		if ((err = parse_device(p, json_array_get(arr, i), c->nnodes, &c->dev[i])))
			return err;
	}
	p->where[0] = '\0';
	return 0;
}

static int parse_links(struct parser *p, const json_t *doc, struct calibration *c)
{
	bool seen[CAL_MAX_NODES][CAL_MAX_NODES] = { { false } };
	const json_t *arr = json_object_get(doc, "links");
	size_t want = (size_t)c->nnodes * c->nnodes;
	int err;

	if (!json_is_array(arr))
		return bad(p, "links", "must be an array");
	if (json_array_size(arr) != want)
		return bad(p, "links", "%zu links, want one per pair of nodes (%zu)",
		           json_array_size(arr), want);
	for (size_t i = 0; i < want; i++) {
		snprintf(p->where, sizeof(p->where), "links[%zu]", i);
		if ((err = parse_link(p, json_array_get(arr, i), c, seen)))
			return err;
	}
	p->where[0] = '\0';
	return 0;
}

int calibration_from_json(const json_t *doc, struct calibration *out, char *err, size_t errlen)
{
	struct parser p = { .err = err, .errlen = errlen };
	struct calibration c;
	json_int_t version = 0, nnodes = 0;
	int rc;

	memset(&c, 0, sizeof(c));
	if (err && errlen)
		err[0] = '\0';
	if (!json_is_object(doc))
		return bad(&p, "document", "must be a JSON object");
	if ((rc = get_int(&p, doc, "version", CAL_VERSION, CAL_VERSION, &version)) ||
	    (rc = get_str(&p, doc, "fingerprint", printable, c.fingerprint,
	                  sizeof(c.fingerprint))) ||
	    (rc = get_num(&p, doc, "seconds", &r_seconds, &c.seconds)) ||
	    (rc = get_int(&p, doc, "nnodes", 1, CAL_MAX_NODES, &nnodes)) ||
	    (rc = get_num(&p, doc, "wake_ns", &r_wake, &c.wake_ns)))
		return rc;
	c.nnodes = (uint32_t)nnodes;
	if ((rc = parse_devices(&p, doc, &c)) || (rc = parse_links(&p, doc, &c)))
		return rc;
	memcpy(out, &c, sizeof(c));
	return 0;
}

/* ---- the cache file ---- */

/* One file per fingerprint: daemons of one host started with different
 * device sets (a test suite, a GPU-only instance) each keep theirs. */
#define CACHE_PREFIX "calibration-"
#define CACHE_MAX_BYTES (1u << 20) /* a full document is about 40 KiB */

/* Whether a cached calibration is for exactly these devices. */
static bool cache_matches(const struct calibration *cached, const struct backend_device *devs,
                          const uint16_t *nodes, size_t n)
{
	char fp[sizeof(cached->fingerprint)], key[CAL_KEY_MAX];
	uint32_t nnodes = 1;

	calibrate_fingerprint(devs, nodes, n, fp, sizeof(fp));
	if (strcmp(fp, cached->fingerprint) || cached->ndevices != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		calibrate_device_key(&devs[i], key, sizeof(key));
		if (strcmp(key, cached->dev[i].key) || cached->dev[i].node != nodes[i])
			return false;
		if (nodes[i] + 1u > nnodes)
			nnodes = nodes[i] + 1u;
	}
	return cached->nnodes == nnodes;
}

/* 0 when the file name in the state directory held figures for these
 * devices (now in *out); path names it in messages. */
static int cache_load(int dirfd, const char *dir, const char *name, const char *path,
                      const struct backend_device *devs, const uint16_t *nodes, size_t n,
                      struct calibration *out)
{
	char err[256] = "";
	json_t *doc;
	struct calibration *cached;
	int rc = state_read_json(dirfd, dir, name, CACHE_MAX_BYTES, &doc, err, sizeof(err));

	if (!doc) {
		if (rc == 0)
			log_info("calibration: no cache in %s yet", path);
		else
			log_warn("calibration: %s; measuring again", err);
		return -TDM_EINVAL;
	}
	cached = malloc(sizeof(*cached));
	rc = cached ? calibration_from_json(doc, cached, err, sizeof(err)) : -TDM_ENOMEM;
	json_decref(doc);
	if (rc) {
		log_warn("%s (in %s); measuring again", cached ? err : "calibration: out of memory",
		         path);
	} else if (!cache_matches(cached, devs, nodes, n)) {
		log_info("calibration: %s is for other hardware; measuring again", path);
		rc = -TDM_EINVAL;
	} else {
		memcpy(out, cached, sizeof(*out));
		out->from_cache = true;
	}
	free(cached);
	return rc;
}

static int cache_save(int dirfd, const char *dir, const char *name, const char *path,
                      const struct calibration *c)
{
	json_t *doc = calibration_to_json(c);
	char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL, err[256];
	int rc;

	json_decref(doc);
	if (!text) {
		log_warn("calibration: cannot write %s: out of memory", path);
		return -TDM_ENOMEM;
	}
	rc = state_write_atomic(dirfd, dir, name, text, err, sizeof(err));
	if (rc)
		log_warn("calibration: %s", err);
	free(text);
	return rc;
}

int calibrate_cache_path(const char *state_dir, const struct backend_device *devs,
                         const uint16_t *nodes, size_t n, char *out, size_t len)
{
	char fp[sizeof(((struct calibration *)0)->fingerprint)];

	calibrate_fingerprint(devs, nodes, n, fp, sizeof(fp));
	int w = snprintf(out, len, "%s/" CACHE_PREFIX "%016llx.json", state_dir,
	                 (unsigned long long)fnv1a(0xcbf29ce484222325ull, fp));
	return w < 0 || (size_t)w >= len ? -TDM_EINVAL : 0;
}

int calibrate_load_or_run(const char *state_dir, const struct backend_device *devs,
                          const uint16_t *nodes, size_t n, bool force, struct calibration *out)
{
	char path[PATH_MAX], err[256];
	bool cache = state_dir && state_dir[0];
	const char *name = NULL;
	int rc, dirfd = -1;

	if (cache && calibrate_cache_path(state_dir, devs, nodes, n, path, sizeof(path)) != 0) {
		log_warn("calibration: state directory path too long: not cached");
		cache = false;
	}
	if (cache && state_dir_open(state_dir, true, &dirfd, err, sizeof(err)) != 0) {
		log_warn("calibration: %s; not cached", err);
		cache = false;
	}
	if (cache)
		name = strrchr(path, '/') + 1; /* calibrate_cache_path wrote one */
	rc = 0;
	if (!cache || force || cal_check_devices(devs, nodes, n, &(uint32_t){ 0 }) != 0 ||
	    cache_load(dirfd, state_dir, name, path, devs, nodes, n, out) != 0) {
		rc = calibrate_run(devs, nodes, n, out);
		if (rc == 0 && cache)
			cache_save(dirfd, state_dir, name, path, out);
	}
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}
