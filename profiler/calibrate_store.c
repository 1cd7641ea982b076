/* The calibration's document and its cache file (profiler/calibrate.h):
 * calibration_to_json and calibration_from_json (untrusted input, every
 * field checked, the first error reported with where it is), and the file
 * under the state directory, one per hardware fingerprint, that
 * calibrate_load_or_run reads (a regular file, not a symbolic link, of at
 * most 1 MiB) before measuring again, and writes atomically (temp file,
 * fsync, rename). */
#include "profiler/calibrate.h"
#include "profiler/calibrate_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/log.h"
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
		doc = json_pack("{s:i, s:s, s:f, s:i, s:O, s:O}", "version", CAL_VERSION,
		                "fingerprint", c->fingerprint, "seconds", c->seconds, "nnodes",
		                (int)nnodes, "devices", devs, "links", links);
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
	    (rc = get_int(&p, doc, "nnodes", 1, CAL_MAX_NODES, &nnodes)))
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

/* mkdir -p; directories it creates are private to the daemon's user. */
static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t n = strlen(dir);
	struct stat st;

	if (n >= sizeof(path))
		return -TDM_EINVAL;
	memcpy(path, dir, n + 1);
	for (char *s = path + 1;; s++) {
		char saved = *s;
		if (saved != '/' && saved != '\0')
			continue;
		*s = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			log_warn("calibration: cannot create %s: %s", path, strerror(errno));
			return -TDM_ESYS;
		}
		*s = saved;
		if (!saved)
			break;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		log_warn("calibration: %s is not a directory", dir);
		return -TDM_ESYS;
	}
	return 0;
}

/* The whole file, at most CACHE_MAX_BYTES, parsed; why not in err, and
 * *missing when there is no such file. */
static json_t *read_doc(const char *path, char *err, size_t errlen, bool *missing)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	json_t *doc = NULL;
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	size_t got = 0;

	*missing = fd < 0 && errno == ENOENT;
	if (fd < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > CACHE_MAX_BYTES) {
		snprintf(err, errlen, "not a regular file of at most %u bytes", CACHE_MAX_BYTES);
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	doc = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		snprintf(err, errlen, "line %d: %s", jerr.line, jerr.text);
out:
	free(buf);
	close(fd);
	return doc;
}

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

/* 0 when path held figures for these devices (now in *out). */
static int cache_load(const char *path, const struct backend_device *devs, const uint16_t *nodes,
                      size_t n, struct calibration *out)
{
	char err[256] = "";
	bool missing = false;
	json_t *doc = read_doc(path, err, sizeof(err), &missing);
	struct calibration *cached;
	int rc;

	if (!doc) {
		if (missing)
			log_info("calibration: no cache in %s yet", path);
		else
			log_warn("calibration: cannot read %s (%s); measuring again", path, err);
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

static bool write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		len -= (size_t)w;
	}
	return true;
}

/* text replaces path whole or not at all: a temp file of this process's
 * own (several daemons may start at once), synced, renamed over it. */
static int write_atomic(const char *dir, const char *path, const char *text)
{
	char tmp[PATH_MAX];
	int fd, e = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.%ld.XXXXXX", path, (long)getpid()) >= (int)sizeof(tmp))
		return -TDM_EINVAL;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		log_warn("calibration: cannot create %s: %s", tmp, strerror(errno));
		return -TDM_ESYS;
	}
	errno = 0;
	if (!write_all(fd, text, strlen(text)) || !write_all(fd, "\n", 1) || fsync(fd) != 0)
		e = errno ? errno : EIO;
	if (close(fd) != 0 && !e)
		e = errno;
	if (!e && rename(tmp, path) != 0)
		e = errno;
	if (e) {
		unlink(tmp);
		log_warn("calibration: cannot write %s: %s", path, strerror(e));
		return -TDM_ESYS;
	}
	/* The rename itself survives a crash once the directory is synced. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

static int cache_save(const char *dir, const char *path, const struct calibration *c)
{
	json_t *doc = calibration_to_json(c);
	char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
	int rc;

	json_decref(doc);
	if (!text) {
		log_warn("calibration: cannot write %s: out of memory", path);
		return -TDM_ENOMEM;
	}
	rc = write_atomic(dir, path, text);
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
	char path[PATH_MAX];
	bool cache = state_dir && state_dir[0];
	int rc;

	if (cache && calibrate_cache_path(state_dir, devs, nodes, n, path, sizeof(path)) != 0) {
		log_warn("calibration: state directory path too long: not cached");
		cache = false;
	}
	if (cache && mkdir_p(state_dir) != 0) {
		log_warn("calibration: %s unusable: not cached", state_dir);
		cache = false;
	}
	if (cache && !force && cal_check_devices(devs, nodes, n, &(uint32_t){ 0 }) == 0 &&
	    cache_load(path, devs, nodes, n, out) == 0)
		return 0;
	if ((rc = calibrate_run(devs, nodes, n, out)))
		return rc;
	if (cache)
		cache_save(state_dir, path, out);
	return 0;
}
