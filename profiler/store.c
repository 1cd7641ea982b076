/* The model store (store.h).
 *
 * Decisions:
 *  - The state directory is created (with its parents, mode 0700) by the
 *    first save when it is missing; one that is a symbolic link or belongs
 *    to another uid is refused, and the files in it are opened through its
 *    descriptor, never through a link, and written 0600 (state_file.h).
 *  - Saving takes an exclusive flock on models-<host>.json.lock (kept in the
 *    directory), merges with the file on disk, writes the result to a
 *    temporary file in the same directory, fsyncs it, renames it over the
 *    file and fsyncs the directory. Loading takes no lock: the rename is
 *    atomic, a reader sees the old file or the new one.
 *  - The lock is asked for without blocking and asked again, sleeping in
 *    between, for at most the caller's wait: whoever holds it (a daemon
 *    that hangs, any process of the same uid) delays a save by that much
 *    and no more; the save then fails with -TDM_ETIMEDOUT.
 *  - A file on disk that is not a model document (corrupt, truncated, not
 *    JSON) makes store_load fail with -TDM_EINVAL and a message; store_save
 *    does not merge with it and replaces it with the profiler's models.
 *    Neither opens anything but a regular file (not a link, not a FIFO).
 *  - Merge: models are matched by (kernel, device), footprints by their
 *    exact (flops, bytes, domain); the entry with more samples (n) wins,
 *    ours on ties. The model-level figures (samples, outliers, errors,
 *    prior_scale, coefficients) come from the side whose model has more
 *    samples, ours on ties. A model keeps at most 64 footprints, those with
 *    the most samples. Links are matched by (src, dst), more copies wins.
 *    Entries without the fields that name them are dropped; the rest is
 *    checked by profiler_load_json when the file is loaded. The matches
 *    are found through hash indexes, so a merge takes time linear in the
 *    documents' sizes (a file of any size may be on disk). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/errbuf.h"
#include "profiler/state_file.h"
#include "profiler/store.h"
#include "tandem.h"

#define STORE_MAX_BYTES (64u << 20)
#define MERGE_MAX_MODELS 4096
#define MERGE_MAX_FOOTPRINTS 64 /* what a model holds */
#define MERGE_MAX_LINKS 1024
#define STORE_NAME_MAX 320 /* "models-" + a hostname (< 256) + ".json" */

/* ---- path ------------------------------------------------------------------ */

/* models-<hostname>.json, the hostname cut down to safe bytes. */
static void store_name(char *out, size_t len)
{
	char host[256];

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if (!host[0])
		snprintf(host, sizeof(host), "localhost");
	for (char *c = host; *c; c++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
		            *c))
			*c = '_';
	snprintf(out, len, "models-%s.json", host);
}

int store_path(const char *dir, char *out, size_t len)
{
	char name[STORE_NAME_MAX];
	int n;

	if (!dir || !dir[0] || !out || !len)
		return -TDM_EINVAL;
	store_name(name, sizeof(name));
	n = snprintf(out, len, "%s/%s", dir, name);
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

static bool same_model(const json_t *a, const json_t *b)
{
	return same_string(a, b, "kernel") && same_string(a, b, "device");
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

/* Hashes: entries that match (same_*) hash the same. */

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static uint64_t number_bits(const json_t *o, const char *k)
{
	double d = json_number_value(json_object_get(o, k)) + 0.0; /* -0.0 == 0.0 */
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static uint64_t footprint_hash(const json_t *f)
{
	return mix(mix(mix(1, number_bits(f, "flops")), number_bits(f, "bytes")),
	           number_bits(f, "domain"));
}

static uint64_t string_hash(uint64_t h, const json_t *s)
{
	const unsigned char *c = (const unsigned char *)json_string_value(s);
	size_t n = json_string_length(s);

	h = mix(h, n);
	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 0x100000001b3ull; /* FNV-1a */
	return h;
}

static uint64_t model_hash(const json_t *m)
{
	return mix(string_hash(string_hash(2, json_object_get(m, "kernel")),
	                       json_object_get(m, "device")),
	           0);
}

static uint64_t link_hash(const json_t *l)
{
	return mix(mix(3, (uint64_t)int_field(l, "src")), (uint64_t)int_field(l, "dst"));
}

/* Where each entry of an array without duplicates is: open addressing on
 * the hash, the position + 1 per slot (0: empty). */
struct index {
	uint64_t *hash;
	size_t *pos;
	size_t cap, n;
};

static void ix_free(struct index *ix)
{
	free(ix->hash);
	free(ix->pos);
}

static int ix_grow(struct index *ix)
{
	size_t cap = ix->cap ? ix->cap * 2 : 64;
	uint64_t *hash = malloc(cap * sizeof(*hash));
	size_t *pos = calloc(cap, sizeof(*pos));

	if (!hash || !pos) {
		free(hash);
		free(pos);
		return -TDM_ENOMEM;
	}
	for (size_t i = 0; i < ix->cap; i++) {
		size_t j = ix->hash[i] & (cap - 1);

		if (!ix->pos[i])
			continue;
		while (pos[j])
			j = (j + 1) & (cap - 1);
		hash[j] = ix->hash[i];
		pos[j] = ix->pos[i];
	}
	ix_free(ix);
	ix->hash = hash;
	ix->pos = pos;
	ix->cap = cap;
	return 0;
}

/* The position in arr of the entry matching e (whose hash is h). */
static bool ix_find(const struct index *ix, const json_t *arr, const json_t *e, uint64_t h,
                    bool (*match)(const json_t *, const json_t *), size_t *at)
{
	for (size_t j = ix->cap ? h & (ix->cap - 1) : 0; ix->cap && ix->pos[j];
	     j = (j + 1) & (ix->cap - 1)) {
		if (ix->hash[j] == h && match(e, json_array_get(arr, ix->pos[j] - 1))) {
			*at = ix->pos[j] - 1;
			return true;
		}
	}
	return false;
}

static int ix_add(struct index *ix, uint64_t h, size_t at)
{
	size_t j;

	if ((ix->n + 1) * 2 > ix->cap && ix_grow(ix) != 0)
		return -TDM_ENOMEM;
	for (j = h & (ix->cap - 1); ix->pos[j]; j = (j + 1) & (ix->cap - 1))
		;
	ix->hash[j] = h;
	ix->pos[j] = at + 1;
	ix->n++;
	return 0;
}

/* Appends e (a new reference, taken) to arr and indexes it. */
static int append_indexed(json_t *arr, struct index *ix, json_t *e, uint64_t h)
{
	if (json_array_append_new(arr, e) != 0)
		return -1;
	return ix_add(ix, h, json_array_size(arr) - 1);
}

/* Puts entry e into arr: a copy when none matches it (and arr has room),
 * else replaces the match when e has at least as many (ours) or more
 * (theirs) of count. */
static int merge_entry(json_t *arr, struct index *ix, const json_t *e, uint64_t h,
                       bool (*match)(const json_t *, const json_t *), const char *count, bool ours,
                       size_t cap)
{
	size_t i;

	if (ix_find(ix, arr, e, h, match, &i)) {
		json_int_t a = int_field(e, count), b = int_field(json_array_get(arr, i), count);

		if (a > b || (ours && a == b))
			return json_array_set_new(arr, i, json_deep_copy(e));
		return 0;
	}
	if (json_array_size(arr) >= cap)
		return 0;
	return append_indexed(arr, ix, json_deep_copy(e), h);
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

static int add_footprints(json_t *arr, struct index *ix, const json_t *from, bool ours)
{
	size_t i;
	json_t *f;

	json_array_foreach(from, i, f)
	{
		if (footprint_named(f) && merge_entry(arr, ix, f, footprint_hash(f), same_footprint,
		                                      "n", ours, SIZE_MAX) != 0)
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
	struct index ix = { 0 };
	int rc = fps ? 0 : -1;

	if (rc == 0)
		rc = add_footprints(fps, &ix, json_object_get(theirs, "footprints"), false);
	if (rc == 0)
		rc = add_footprints(fps, &ix, json_object_get(ours, "footprints"), true);
	ix_free(&ix);
	if (rc != 0) {
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

static int add_model(json_t *arr, struct index *ix, const json_t *m, bool ours)
{
	uint64_t h;
	size_t i;

	if (!model_named(m))
		return 0;
	h = model_hash(m);
	if (ix_find(ix, arr, m, h, same_model, &i)) {
		const json_t *old = json_array_get(arr, i);

		return json_array_set_new(arr, i, ours ? merge_model(m, old) : merge_model(old, m));
	}
	if (json_array_size(arr) >= MERGE_MAX_MODELS)
		return 0;
	/* a copy through merge_model, so that its footprints are cleaned too */
	return append_indexed(arr, ix, merge_model(m, m), h);
}

static int add_models(json_t *arr, struct index *ix, const json_t *from, bool ours)
{
	size_t i;
	json_t *m;

	json_array_foreach(from, i, m)
	{
		if (add_model(arr, ix, m, ours) != 0)
			return -1;
	}
	return 0;
}

static int add_links(json_t *arr, struct index *ix, const json_t *from, bool ours)
{
	size_t i;
	json_t *l;

	json_array_foreach(from, i, l)
	{
		if (link_named(l) && merge_entry(arr, ix, l, link_hash(l), same_link, "copies",
		                                 ours, MERGE_MAX_LINKS) != 0)
			return -1;
	}
	return 0;
}

json_t *store_merge(const json_t *ours, const json_t *theirs)
{
	json_t *doc = json_object(), *models = json_array(), *links = json_array();
	struct index mx = { 0 }, lx = { 0 };
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
	if (!rc)
		rc = add_models(models, &mx, json_object_get(theirs, "models"), false) ||
		     add_models(models, &mx, json_object_get(ours, "models"), true) ||
		     add_links(links, &lx, json_object_get(theirs, "links"), false) ||
		     add_links(links, &lx, json_object_get(ours, "links"), true);
	ix_free(&mx);
	ix_free(&lx);
	if (rc) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

/* ---- files ----------------------------------------------------------------- */

static bool is_model_doc(const json_t *doc)
{
	const json_t *v = json_object_get(doc, "version");

	return json_is_object(doc) && json_is_integer(v) && json_integer_value(v) == 1 &&
	       json_is_array(json_object_get(doc, "models"));
}

int store_load(struct profiler *p, const char *dir, char *err, size_t errlen)
{
	char name[STORE_NAME_MAX], why[256] = "";
	size_t skipped;
	json_t *doc;
	int rc, dirfd;

	if (!p || !dir || !dir[0]) {
		err_printf(err, errlen, "no usable state directory");
		return -TDM_EINVAL;
	}
	store_name(name, sizeof(name));
	rc = state_dir_open(dir, false, &dirfd, err, errlen);
	if (rc || dirfd < 0) /* none yet: nothing to load */
		return rc;
	rc = state_read_json(dirfd, dir, name, STORE_MAX_BYTES, &doc, err, errlen);
	close(dirfd);
	if (rc || !doc)
		return rc;
	rc = profiler_load_json(p, doc, &skipped, why, sizeof(why));
	if (rc)
		err_printf(err, errlen, "%s/%s: %s", dir, name, why);
	json_decref(doc);
	return rc;
}

/* Under the lock: what is on disk (when it is a model document) merged
 * with ours, written back. */
static int merge_and_write(json_t *ours, int dirfd, const char *dir, const char *name, char *err,
                           size_t errlen)
{
	char ignored[256], *text;
	json_t *theirs, *merged;
	int rc;

	/* A file that cannot be read (not a regular file, corrupt) is
	 * replaced, see the top. */
	state_read_json(dirfd, dir, name, STORE_MAX_BYTES, &theirs, ignored, sizeof(ignored));
	if (theirs && !is_model_doc(theirs)) {
		json_decref(theirs);
		theirs = NULL;
	}
	merged = store_merge(ours, theirs);
	text = merged ? json_dumps(merged, JSON_INDENT(1)) : NULL;
	if (text) {
		rc = state_write_atomic(dirfd, dir, name, text, err, errlen);
	} else {
		err_printf(err, errlen, "out of memory");
		rc = -TDM_ENOMEM;
	}
	free(text);
	json_decref(merged);
	json_decref(theirs);
	return rc;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* flock(LOCK_EX) that gives up after wait_ms, or as soon as *cancel is
 * set: anyone who can open the lock file may hold it forever. */
static int lock_within(int fd, unsigned wait_ms, const atomic_bool *cancel)
{
	uint64_t start = now_ms();
	unsigned nap_ms = 1;

	for (;;) {
		uint64_t waited;

		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK)
			return -TDM_ESYS;
		if (cancel && atomic_load(cancel))
			return -TDM_ECANCELED;
		waited = now_ms() - start;
		if (waited >= wait_ms)
			return -TDM_ETIMEDOUT;
		if (nap_ms > wait_ms - waited)
			nap_ms = (unsigned)(wait_ms - waited);
		nanosleep(&(struct timespec){ nap_ms / 1000, (long)(nap_ms % 1000) * 1000000 },
		          NULL);
		if (nap_ms < 50)
			nap_ms *= 2;
	}
}

int store_save(const struct profiler *p, const char *dir, unsigned wait_ms,
               const atomic_bool *cancel, char *err, size_t errlen)
{
	char name[STORE_NAME_MAX], lock[STORE_NAME_MAX + 8];
	json_t *ours;
	int dirfd, fd, rc;

	if (!p || !dir || !dir[0]) {
		err_printf(err, errlen, "no usable state directory");
		return -TDM_EINVAL;
	}
	store_name(name, sizeof(name));
	snprintf(lock, sizeof(lock), "%s.lock", name);
	rc = state_dir_open(dir, true, &dirfd, err, errlen);
	if (rc)
		return rc;
	rc = state_open_lock(dirfd, dir, lock, &fd, err, errlen);
	if (rc) {
		close(dirfd);
		return rc;
	}
	/* Taken before the lock, so that the lock is held for the file work
	 * only. */
	ours = profiler_to_json(p);
	if (!ours) {
		err_printf(err, errlen, "out of memory");
		rc = -TDM_ENOMEM;
	} else if ((rc = lock_within(fd, wait_ms, cancel)) == -TDM_ETIMEDOUT) {
		err_printf(err, errlen, "%s/%s is held by another process: gave up after %u ms",
		           dir, lock, wait_ms);
	} else if (rc == -TDM_ECANCELED) {
		err_printf(err, errlen, "canceled while waiting for %s/%s", dir, lock);
	} else if (rc) {
		err_printf(err, errlen, "cannot lock %s/%s: %s", dir, lock, strerror(errno));
	} else {
		rc = merge_and_write(ours, dirfd, dir, name, err, errlen);
	}
	json_decref(ours);
	close(fd); /* releases the lock */
	close(dirfd);
	return rc;
}
