/* The model store (store.h).
 *
 * Decisions:
 *  - The state directory is created (with its parents, mode 0755) by the
 *    first save when it is missing.
 *  - Saving takes an exclusive flock on models-<host>.json.lock (kept in the
 *    directory), merges with the file on disk, writes the result to a
 *    temporary file in the same directory, fsyncs it, renames it over the
 *    file and fsyncs the directory. Loading takes no lock: the rename is
 *    atomic, a reader sees the old file or the new one.
 *  - A file on disk that is not a model document (corrupt, truncated, not
 *    JSON) makes store_load fail with -TDM_EINVAL and a message; store_save
 *    does not merge with it and replaces it with the profiler's models.
 *  - Merge: models are matched by (kernel, device), footprints by their
 *    exact (flops, bytes, domain); the entry with more samples (n) wins,
 *    ours on ties. The model-level figures (samples, outliers, errors,
 *    prior_scale, coefficients) come from the side whose model has more
 *    samples, ours on ties. A model keeps at most 64 footprints, those with
 *    the most samples. Links are matched by (src, dst), more copies wins.
 *    Entries without the fields that name them are dropped; the rest is
 *    checked by profiler_load_json when the file is loaded. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "profiler/state_file.h"
#include "profiler/store.h"
#include "tandem.h"

#define STORE_MAX_BYTES (64u << 20)
#define MERGE_MAX_MODELS 4096
#define MERGE_MAX_FOOTPRINTS 64 /* what a model holds */
#define MERGE_MAX_LINKS 1024

/* ---- path ------------------------------------------------------------------ */

int store_path(const char *dir, char *out, size_t len)
{
	char host[256];
	int n;

	if (!dir || !dir[0] || !out || !len)
		return -TDM_EINVAL;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if (!host[0])
		snprintf(host, sizeof(host), "localhost");
	for (char *c = host; *c; c++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
		            *c))
			*c = '_';
	n = snprintf(out, len, "%s/models-%s.json", dir, host);
	if (n < 0 || (size_t)n >= len)
		return -TDM_EINVAL;
	return 0;
}

/* ---- merge ----------------------------------------------------------------- */

static json_int_t int_field(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? json_integer_value(v) : 0;
}

static bool model_named(const json_t *m)
{
	return json_is_object(m) && json_is_string(json_object_get(m, "kernel")) &&
	       json_is_string(json_object_get(m, "device"));
}

static bool same_string(const json_t *a, const json_t *b, const char *k)
{
	return json_equal(json_object_get(a, k), json_object_get(b, k));
}

static bool footprint_named(const json_t *f)
{
	return json_is_object(f) && json_is_number(json_object_get(f, "flops")) &&
	       json_is_number(json_object_get(f, "bytes")) &&
	       json_is_number(json_object_get(f, "domain"));
}

static bool same_number(const json_t *a, const json_t *b, const char *k)
{
	return json_number_value(json_object_get(a, k)) == json_number_value(json_object_get(b, k));
}

static bool same_footprint(const json_t *a, const json_t *b)
{
	return same_number(a, b, "flops") && same_number(a, b, "bytes") &&
	       same_number(a, b, "domain");
}

/* Puts entry e into arr: a copy when none matches it (and arr has room),
 * else replaces the match when e has at least as many (ours) or more
 * (theirs) of count. */
static int merge_entry(json_t *arr, const json_t *e, bool (*match)(const json_t *, const json_t *),
                       const char *count, bool ours, size_t cap)
{
	size_t i;
	json_t *old;

	json_array_foreach(arr, i, old)
	{
		json_int_t a = int_field(e, count), b = int_field(old, count);

		if (!match(e, old))
			continue;
		if (a > b || (ours && a == b))
			return json_array_set_new(arr, i, json_deep_copy(e));
		return 0;
	}
	if (json_array_size(arr) >= cap)
		return 0;
	return json_array_append_new(arr, json_deep_copy(e));
}

static int by_n_desc(const void *a, const void *b)
{
	json_int_t x = int_field(*(json_t *const *)a, "n");
	json_int_t y = int_field(*(json_t *const *)b, "n");

	return x < y ? 1 : x > y ? -1 : 0;
}

/* Keeps the MERGE_MAX_FOOTPRINTS footprints with the most samples. */
static json_t *trim_footprints(json_t *arr)
{
	size_t n = json_array_size(arr);
	json_t **v, *out;

	if (n <= MERGE_MAX_FOOTPRINTS)
		return arr;
	v = malloc(n * sizeof(*v));
	out = json_array();
	if (!v || !out) {
		free(v);
		json_decref(out);
		json_decref(arr);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(arr, i);
	qsort(v, n, sizeof(*v), by_n_desc);
	for (size_t i = 0; i < MERGE_MAX_FOOTPRINTS; i++)
		json_array_append(out, v[i]);
	free(v);
	json_decref(arr);
	return out;
}

static int add_footprints(json_t *arr, const json_t *from, bool ours)
{
	size_t i;
	json_t *f;

	json_array_foreach(from, i, f)
	{
		if (footprint_named(f) &&
		    merge_entry(arr, f, same_footprint, "n", ours, SIZE_MAX) != 0)
			return -1;
	}
	return 0;
}

/* Two models with the same names: figures of the one with more samples,
 * the union of the footprints. */
static json_t *merge_model(const json_t *ours, const json_t *theirs)
{
	bool ours_base = int_field(ours, "samples") >= int_field(theirs, "samples");
	json_t *fps = json_array(), *m;

	if (!fps || add_footprints(fps, json_object_get(theirs, "footprints"), false) ||
	    add_footprints(fps, json_object_get(ours, "footprints"), true)) {
		json_decref(fps);
		return NULL;
	}
	fps = trim_footprints(fps);
	m = json_deep_copy(ours_base ? ours : theirs);
	if (!fps || !m || json_object_set_new(m, "footprints", fps) != 0) {
		if (!m)
			json_decref(fps);
		json_decref(m);
		return NULL;
	}
	return m;
}

static bool same_model(const json_t *a, const json_t *b)
{
	return same_string(a, b, "kernel") && same_string(a, b, "device");
}

static int add_model(json_t *arr, const json_t *m, bool ours)
{
	size_t i;
	json_t *old;

	if (!model_named(m))
		return 0;
	json_array_foreach(arr, i, old)
	{
		if (same_model(m, old))
			return json_array_set_new(arr, i,
			                          ours ? merge_model(m, old) : merge_model(old, m));
	}
	if (json_array_size(arr) >= MERGE_MAX_MODELS)
		return 0;
	/* a copy through merge_model, so that its footprints are cleaned too */
	return json_array_append_new(arr, merge_model(m, m));
}

static int add_models(json_t *arr, const json_t *from, bool ours)
{
	size_t i;
	json_t *m;

	json_array_foreach(from, i, m)
	{
		if (add_model(arr, m, ours) != 0)
			return -1;
	}
	return 0;
}

static bool link_named(const json_t *l)
{
	return json_is_object(l) && json_is_integer(json_object_get(l, "src")) &&
	       json_is_integer(json_object_get(l, "dst"));
}

static bool same_link(const json_t *a, const json_t *b)
{
	return int_field(a, "src") == int_field(b, "src") &&
	       int_field(a, "dst") == int_field(b, "dst");
}

static int add_links(json_t *arr, const json_t *from, bool ours)
{
	size_t i;
	json_t *l;

	json_array_foreach(from, i, l)
	{
		if (link_named(l) &&
		    merge_entry(arr, l, same_link, "copies", ours, MERGE_MAX_LINKS) != 0)
			return -1;
	}
	return 0;
}

json_t *store_merge(const json_t *ours, const json_t *theirs)
{
	json_t *doc = json_object(), *models = json_array(), *links = json_array();
	int rc;

	if (!doc || !models || !links) {
		json_decref(doc);
		json_decref(models);
		json_decref(links);
		return NULL;
	}
	rc = json_object_set_new(doc, "version", json_integer(1));
	rc |= json_object_set_new(doc, "models", models);
	rc |= json_object_set_new(doc, "links", links);
	if (rc)
		goto fail;
	if (add_models(models, json_object_get(theirs, "models"), false) ||
	    add_models(models, json_object_get(ours, "models"), true) ||
	    add_links(links, json_object_get(theirs, "links"), false) ||
	    add_links(links, json_object_get(ours, "links"), true))
		goto fail;
	return doc;
fail:
	json_decref(doc);
	return NULL;
}

/* ---- files ----------------------------------------------------------------- */

static void say(char *err, size_t errlen, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int sys_err(char *err, size_t errlen, const char *what, const char *path)
{
	say(err, errlen, "%s %s: %s", what, path, strerror(errno));
	return -TDM_ESYS;
}

static bool is_model_doc(const json_t *doc)
{
	const json_t *v = json_object_get(doc, "version");

	return json_is_object(doc) && json_is_integer(v) && json_integer_value(v) == 1 &&
	       json_is_array(json_object_get(doc, "models"));
}

int store_load(struct profiler *p, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX], why[256] = "";
	size_t skipped;
	json_t *doc;
	int rc;

	if (!p || store_path(dir, path, sizeof(path)) != 0) {
		say(err, errlen, "no usable state directory");
		return -TDM_EINVAL;
	}
	rc = state_read_json(path, STORE_MAX_BYTES, 0, &doc, err, errlen);
	if (rc || !doc)
		return rc;
	rc = profiler_load_json(p, doc, &skipped, why, sizeof(why));
	if (rc)
		say(err, errlen, "%s: %s", path, why);
	json_decref(doc);
	return rc;
}

/* doc to path through a temporary file in the same directory. */
static int write_doc(const char *dir, const char *path, const json_t *doc, char *err, size_t errlen)
{
	char *text = json_dumps(doc, JSON_INDENT(1));
	int rc;

	if (!text) {
		say(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	rc = state_write_atomic(dir, path, text, 0644, err, errlen);
	free(text);
	return rc;
}

/* Under the lock: what is on disk (when it is a model document) merged
 * with ours, written back. */
static int merge_and_write(const struct profiler *p, const char *dir, const char *path, char *err,
                           size_t errlen)
{
	char ignored[256];
	json_t *ours = profiler_to_json(p), *theirs, *merged;
	int rc;

	if (!ours) {
		say(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	state_read_json(path, STORE_MAX_BYTES, 0, &theirs, ignored, sizeof(ignored));
	if (theirs && !is_model_doc(theirs)) { /* replaced, see the top */
		json_decref(theirs);
		theirs = NULL;
	}
	merged = store_merge(ours, theirs);
	if (merged) {
		rc = write_doc(dir, path, merged, err, errlen);
	} else {
		say(err, errlen, "out of memory");
		rc = -TDM_ENOMEM;
	}
	json_decref(merged);
	json_decref(theirs);
	json_decref(ours);
	return rc;
}

int store_save(const struct profiler *p, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX], lock[PATH_MAX];
	int fd, rc;

	if (!p || store_path(dir, path, sizeof(path)) != 0 ||
	    snprintf(lock, sizeof(lock), "%s.lock", path) >= (int)sizeof(lock)) {
		say(err, errlen, "no usable state directory");
		return -TDM_EINVAL;
	}
	rc = state_mkdir_p(dir, 0755, err, errlen);
	if (rc)
		return rc;
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return sys_err(err, errlen, "cannot open", lock);
	while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
		;
	if (rc != 0)
		rc = sys_err(err, errlen, "cannot lock", lock);
	else
		rc = merge_and_write(p, dir, path, err, errlen);
	close(fd); /* releases the lock */
	return rc;
}
