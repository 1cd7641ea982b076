/* WfCommons workflow instance reader (see workload.h for the variants).
 *
 * Task and file names are looked up in sorted arrays (bsearch), so no input
 * can make a lookup worse than logarithmic. Edge data is the size of the
 * files in (parent outputs) ∩ (child inputs), found by walking the shorter
 * list and searching the longer one; a work budget bounds the total. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "workload/workload.h"
#include "tandem.h"

#define WFC_MATCH_BUDGET 300000000.0 /* steps spent matching files to edges */
#define WFC_PATH_MAX 96

struct ref {
	const char *s; /* NUL-free (jansson refuses \u0000 unless asked) */
	uint32_t idx; /* task or file index */
	uint32_t pos; /* position in the source array, for messages and order */
};

/* A file reference of a task, before and after resolution. */
struct fref {
	uint32_t task;
	uint32_t file;
	uint32_t out; /* 1: the task writes it, 0: reads it */
};

struct wfc {
	const char *name;
	char *err;
	size_t errlen;
	struct workload *w;
	bool v15; /* specification / execution layout */
	const char *tpath; /* where the tasks are: "workflow.specification.tasks"... */
	json_t *tasks;
	uint32_t n;

	struct ref *tref; /* by id (1.5) or name (older), sorted */
	struct ref *tref_id; /* older layouts: by id, sorted (may be empty) */
	uint32_t ntref_id;

	struct ref *fileref; /* file ids, sorted, unique; idx == position in fsize */
	uint32_t nfiles;
	double *fsize;

	struct fref *fr;
	size_t nfr, frcap;
	char **keys; /* older layouts: "path" + "name" keys we allocated */
	size_t nkeys, keycap;

	size_t edgecap;
	/* per task: its sorted, unique input and output file indices in io[] */
	uint32_t *io;
	uint32_t *in_off, *out_off; /* [n + 1] each */
};

static int fail(struct wfc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct wfc *c, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (c->err && c->errlen) {
		k = snprintf(c->err, c->errlen, "%s: ", c->name);
		if (k >= 0 && (size_t)k < c->errlen) {
			va_start(ap, fmt);
			vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
			va_end(ap);
		}
	}
	return -TDM_EINVAL;
}

static int nomem(struct wfc *c)
{
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s: out of memory", c->name);
	return -TDM_ENOMEM;
}

/* A string from the document, quoted, printable and cut short, for
 * messages. */
struct shown {
	char s[48];
};

static struct shown show(const char *s)
{
	struct shown o;
	size_t n = 0, i = 0;

	o.s[n++] = '"';
	for (; s[i] && n < sizeof(o.s) - 6; i++) {
		unsigned char b = (unsigned char)s[i];

		o.s[n++] = b < 0x20 || b >= 0x7f ? '?' : (char)b;
	}
	if (s[i]) {
		memcpy(o.s + n, "...", 3);
		n += 3;
	}
	o.s[n++] = '"';
	o.s[n] = '\0';
	return o;
}

static int ref_cmp(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;
	int r = strcmp(x->s, y->s);

	if (r)
		return r;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static const struct ref *ref_find(const struct ref *r, uint32_t n, const char *s)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int cmp = strcmp(r[mid].s, s);

		if (!cmp)
			return &r[mid];
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The task a parents / children entry names: by id (1.5), or by name then
 * id (older). */
static const struct ref *task_find(struct wfc *c, const char *s)
{
	const struct ref *r = ref_find(c->tref, c->n, s);

	if (!r && c->ntref_id)
		r = ref_find(c->tref_id, c->ntref_id, s);
	return r;
}

/* ---- typed access ---------------------------------------------------------- */

/* obj[key] as a string: NULL with *rc = 0 when absent and optional. */
static const char *get_str(struct wfc *c, const char *path, json_t *obj, const char *key,
                           bool required, int *rc)
{
	json_t *v = json_object_get(obj, key);

	*rc = 0;
	if (!v) {
		if (required)
			*rc = fail(c, "%s.%s: missing", path, key);
		return NULL;
	}
	if (!json_is_string(v)) {
		*rc = fail(c, "%s.%s: not a string", path, key);
		return NULL;
	}
	if (!json_string_length(v)) {
		*rc = fail(c, "%s.%s: empty", path, key);
		return NULL;
	}
	return json_string_value(v);
}

/* obj[key] as an optional array (NULL when absent). */
static json_t *get_array(struct wfc *c, const char *path, json_t *obj, const char *key, int *rc)
{
	json_t *v = json_object_get(obj, key);

	*rc = 0;
	if (v && !json_is_array(v)) {
		*rc = fail(c, "%s.%s: not an array", path, key);
		return NULL;
	}
	return v;
}

/* obj[key] as a number in 0 .. max; *have false when absent. */
static int get_num(struct wfc *c, const char *path, json_t *obj, const char *key, const char *what,
                   double max, double *out, bool *have)
{
	json_t *v = json_object_get(obj, key);
	double x;

	*have = v != NULL;
	if (!v)
		return 0;
	if (!json_is_number(v))
		return fail(c, "%s.%s: not a number", path, key);
	x = json_number_value(v);
	if (!isfinite(x))
		return fail(c, "%s.%s: not a finite number", path, key);
	if (x < 0)
		return fail(c, "%s.%s: negative %s %g", path, key, what, x);
	if (x > max)
		return fail(c, "%s.%s: %s %g exceeds %g", path, key, what, x, max);
	*out = x;
	return 0;
}

static int push_fref(struct wfc *c, uint32_t task, uint32_t file, bool out)
{
	if (c->nfr == c->frcap) {
		size_t cap = c->frcap ? 2 * c->frcap : 256;
		struct fref *p = realloc(c->fr, cap * sizeof(*p));

		if (!p)
			return nomem(c);
		c->fr = p;
		c->frcap = cap;
	}
	c->fr[c->nfr++] = (struct fref){ .task = task, .file = file, .out = out };
	return 0;
}

static int push_edge(struct wfc *c, uint32_t src, uint32_t dst)
{
	struct workload *w = c->w;

	if (w->nedges == c->edgecap) {
		size_t cap = c->edgecap ? 2 * c->edgecap : 256;
		struct wl_edge *p;

		/* each edge may be named from both ends before duplicates merge */
		if (c->edgecap >= 2 * (size_t)WL_MAX_EDGES)
			return fail(c, "%s: more than %u dependencies", c->tpath, 2 * WL_MAX_EDGES);
		if (cap > 2 * (size_t)WL_MAX_EDGES)
			cap = 2 * (size_t)WL_MAX_EDGES;
		p = realloc(w->edges, cap * sizeof(*p));
		if (!p)
			return nomem(c);
		w->edges = p;
		c->edgecap = cap;
	}
	w->edges[w->nedges++] = (struct wl_edge){ .src = src, .dst = dst, .data = 0 };
	return 0;
}

/* ---- tasks ----------------------------------------------------------------- */

/* Every task: an object with its key (id, or name in older layouts), the
 * sorted lookup arrays, duplicates refused. */
static int index_tasks(struct wfc *c)
{
	char path[WFC_PATH_MAX];
	int rc;

	c->tref = malloc(c->n * sizeof(*c->tref));
	c->tref_id = malloc(c->n * sizeof(*c->tref_id));
	if (!c->tref || !c->tref_id)
		return nomem(c);
	for (uint32_t i = 0; i < c->n; i++) {
		json_t *t = json_array_get(c->tasks, i);
		const char *key, *id;

		snprintf(path, sizeof(path), "%s[%u]", c->tpath, i);
		if (!json_is_object(t))
			return fail(c, "%s: not an object", path);
		key = get_str(c, path, t, c->v15 ? "id" : "name", true, &rc);
		if (rc)
			return rc;
		c->tref[i] = (struct ref){ .s = key, .idx = i, .pos = i };
		if (!c->v15) {
			id = get_str(c, path, t, "id", false, &rc);
			if (rc)
				return rc;
			if (id)
				c->tref_id[c->ntref_id++] =
				        (struct ref){ .s = id, .idx = i, .pos = i };
		}
	}
	qsort(c->tref, c->n, sizeof(*c->tref), ref_cmp);
	for (uint32_t i = 1; i < c->n; i++)
		if (!strcmp(c->tref[i].s, c->tref[i - 1].s))
			return fail(c, "%s[%u].%s: duplicate task %s %s", c->tpath, c->tref[i].pos,
			            c->v15 ? "id" : "name", c->v15 ? "id" : "name",
			            show(c->tref[i].s).s);
	if (c->ntref_id) {
		qsort(c->tref_id, c->ntref_id, sizeof(*c->tref_id), ref_cmp);
		for (uint32_t i = 1; i < c->ntref_id; i++)
			if (!strcmp(c->tref_id[i].s, c->tref_id[i - 1].s))
				return fail(c, "%s[%u].id: duplicate task id %s", c->tpath,
				            c->tref_id[i].pos, show(c->tref_id[i].s).s);
	}
	return 0;
}

/* The task's name (or key) as the workload task's name. */
static void name_task(struct wfc *c, uint32_t i)
{
	json_t *t = json_array_get(c->tasks, i);
	json_t *nm = json_object_get(t, "name");
	const char *s = json_is_string(nm) && json_string_length(nm)
	                        ? json_string_value(nm)
	                        : json_string_value(json_object_get(t, c->v15 ? "id" : "name"));

	wl_copy_name(c->w->tasks[i].name, s, SIZE_MAX);
}

/* Calls each(c, i, k, path, j, name) for every string entry j of the array
 * keys[k] (k = 0, 1) of every task i, path naming the task; an entry that is
 * not a string is an error. */
typedef int (*task_string_fn)(struct wfc *c, uint32_t i, int k, const char *path, size_t j,
                              const char *name);

static int each_task_string(struct wfc *c, const char *const keys[2], task_string_fn each)
{
	char path[WFC_PATH_MAX];
	int rc;

	for (uint32_t i = 0; i < c->n; i++) {
		json_t *t = json_array_get(c->tasks, i);

		snprintf(path, sizeof(path), "%s[%u]", c->tpath, i);
		for (int k = 0; k < 2; k++) {
			json_t *a = get_array(c, path, t, keys[k], &rc), *e;
			size_t j;

			if (rc)
				return rc;
			json_array_foreach(a, j, e)
			{
				if (!json_is_string(e))
					return fail(c, "%s.%s[%zu]: not a string", path, keys[k],
					            j);
				rc = each(c, i, k, path, j, json_string_value(e));
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}

static const char *const edge_keys[2] = { "parents", "children" };

static int task_edge(struct wfc *c, uint32_t i, int k, const char *path, size_t j, const char *name)
{
	const struct ref *r = task_find(c, name);

	if (!r)
		return fail(c, "%s.%s[%zu]: unknown task %s", path, edge_keys[k], j, show(name).s);
	if (r->idx == i)
		return fail(c, "%s.%s[%zu]: task %s is its own %s", path, edge_keys[k], j,
		            show(name).s, k ? "child" : "parent");
	return k ? push_edge(c, i, r->idx) : push_edge(c, r->idx, i);
}

/* parents[] and children[] of every task, as edges. */
static int task_edges(struct wfc *c)
{
	return each_task_string(c, edge_keys, task_edge);
}

/* ---- 1.5: specification + execution ---------------------------------------- */

static int v15_files(struct wfc *c, json_t *spec)
{
	const char *path = "workflow.specification.files";
	json_t *files, *f;
	size_t i;
	int rc;

	files = get_array(c, "workflow.specification", spec, "files", &rc);
	if (rc || !files)
		return rc;
	if (json_array_size(files) > UINT32_MAX / 2)
		return fail(c, "%s: too many files", path);
	c->nfiles = (uint32_t)json_array_size(files);
	c->fileref = malloc((c->nfiles ? c->nfiles : 1) * sizeof(*c->fileref));
	c->fsize = malloc((c->nfiles ? c->nfiles : 1) * sizeof(*c->fsize));
	if (!c->fileref || !c->fsize)
		return nomem(c);
	json_array_foreach(files, i, f)
	{
		char fp[WFC_PATH_MAX];
		const char *id;
		bool have;

		snprintf(fp, sizeof(fp), "%s[%zu]", path, i);
		if (!json_is_object(f))
			return fail(c, "%s: not an object", fp);
		id = get_str(c, fp, f, "id", true, &rc);
		if (rc)
			return rc;
		rc = get_num(c, fp, f, "sizeInBytes", "size", WL_MAX_BYTES, &c->fsize[i], &have);
		if (rc)
			return rc;
		if (!have)
			return fail(c, "%s.sizeInBytes: missing", fp);
		c->fileref[i] = (struct ref){ .s = id, .idx = (uint32_t)i, .pos = (uint32_t)i };
	}
	qsort(c->fileref, c->nfiles, sizeof(*c->fileref), ref_cmp);
	for (uint32_t k = 1; k < c->nfiles; k++)
		if (!strcmp(c->fileref[k].s, c->fileref[k - 1].s))
			return fail(c, "%s[%u].id: duplicate file id %s", path, c->fileref[k].pos,
			            show(c->fileref[k].s).s);
	return 0;
}

static const char *const file_keys[2] = { "inputFiles", "outputFiles" };

static int task_file(struct wfc *c, uint32_t i, int k, const char *path, size_t j, const char *name)
{
	const struct ref *r = ref_find(c->fileref, c->nfiles, name);

	if (!r)
		return fail(c, "%s.%s[%zu]: unknown file %s", path, file_keys[k], j, show(name).s);
	return push_fref(c, i, r->idx, k);
}

static int task_file_checked(struct wfc *c, uint32_t i, int k, const char *path, size_t j,
                             const char *name)
{
	(void)c, (void)i, (void)k, (void)path, (void)j, (void)name;
	return 0;
}

/* inputFiles / outputFiles of every task (only checked to be strings
 * without a files list). */
static int v15_task_files(struct wfc *c, bool have_files)
{
	return each_task_string(c, file_keys, have_files ? task_file : task_file_checked);
}

static int v15_runtimes(struct wfc *c, json_t *wf)
{
	const char *path = "workflow.execution.tasks";
	json_t *ex = json_object_get(wf, "execution"), *a, *e;
	bool *have = NULL;
	size_t j;
	int rc = 0;

	if (!ex)
		return fail(c, "workflow.execution: missing (it holds the task runtimes)");
	if (!json_is_object(ex))
		return fail(c, "workflow.execution: not an object");
	a = json_object_get(ex, "tasks");
	if (!a)
		return fail(c, "%s: missing", path);
	if (!json_is_array(a))
		return fail(c, "%s: not an array", path);
	have = calloc(c->n, sizeof(*have));
	if (!have)
		return nomem(c);
	json_array_foreach(a, j, e)
	{
		char ep[WFC_PATH_MAX];
		const struct ref *r;
		const char *id;
		double rt = 0;
		bool got;

		snprintf(ep, sizeof(ep), "%s[%zu]", path, j);
		if (!json_is_object(e)) {
			rc = fail(c, "%s: not an object", ep);
			break;
		}
		id = get_str(c, ep, e, "id", true, &rc);
		if (rc)
			break;
		r = ref_find(c->tref, c->n, id);
		if (!r) {
			rc = fail(c, "%s.id: unknown task %s", ep, show(id).s);
			break;
		}
		if (have[r->idx]) {
			rc = fail(c, "%s.id: second runtime for task %s", ep, show(id).s);
			break;
		}
		rc = get_num(c, ep, e, "runtimeInSeconds", "runtime", WL_MAX_SECONDS, &rt, &got);
		if (rc)
			break;
		if (!got) {
			rc = fail(c, "%s: missing runtime (runtimeInSeconds)", ep);
			break;
		}
		have[r->idx] = true;
		c->w->tasks[r->idx].cost = rt;
	}
	for (uint32_t i = 0; !rc && i < c->n; i++)
		if (!have[i])
			rc = fail(c, "%s[%u]: missing runtime: task %s is not in %s", c->tpath, i,
			          show(json_string_value(
			                       json_object_get(json_array_get(c->tasks, i), "id")))
			                  .s,
			          path);
	free(have);
	return rc;
}

/* ---- 1.0 - 1.4: workflow.tasks / workflow.jobs ----------------------------- */

struct oldfile {
	const char *key;
	double size;
	uint32_t task, out, pos; /* pos: order of appearance */
};

static int oldfile_cmp(const void *a, const void *b)
{
	const struct oldfile *x = a, *y = b;
	int r = strcmp(x->key, y->key);

	if (r)
		return r;
	return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int keep_key(struct wfc *c, char *k)
{
	if (c->nkeys == c->keycap) {
		size_t cap = c->keycap ? 2 * c->keycap : 64;
		char **p = realloc(c->keys, cap * sizeof(*p));

		if (!p) {
			free(k);
			return nomem(c);
		}
		c->keys = p;
		c->keycap = cap;
	}
	c->keys[c->nkeys++] = k;
	return 0;
}

/* One task's runtime and files[] entries (appended to *of). */
static int old_task(struct wfc *c, uint32_t i, struct oldfile **of, size_t *nof, size_t *cap)
{
	json_t *t = json_array_get(c->tasks, i), *files, *f;
	char path[WFC_PATH_MAX];
	double rt = 0;
	bool got;
	size_t j;
	int rc;

	snprintf(path, sizeof(path), "%s[%u]", c->tpath, i);
	rc = get_num(c, path, t, "runtimeInSeconds", "runtime", WL_MAX_SECONDS, &rt, &got);
	if (!rc && !got)
		rc = get_num(c, path, t, "runtime", "runtime", WL_MAX_SECONDS, &rt, &got);
	if (rc)
		return rc;
	if (!got)
		return fail(c, "%s: missing runtime (runtimeInSeconds or runtime)", path);
	c->w->tasks[i].cost = rt;

	files = get_array(c, path, t, "files", &rc);
	if (rc)
		return rc;
	json_array_foreach(files, j, f)
	{
		char fp[WFC_PATH_MAX + 32];
		const char *name, *link, *dir;
		double size = 0;
		char *key;

		snprintf(fp, sizeof(fp), "%s.files[%zu]", path, j);
		if (!json_is_object(f))
			return fail(c, "%s: not an object", fp);
		name = get_str(c, fp, f, "name", true, &rc);
		if (rc)
			return rc;
		link = get_str(c, fp, f, "link", true, &rc);
		if (rc)
			return rc;
		if (strcasecmp(link, "input") && strcasecmp(link, "output"))
			return fail(c, "%s.link: %s is neither \"input\" nor \"output\"", fp,
			            show(link).s);
		rc = get_num(c, fp, f, "sizeInBytes", "size", WL_MAX_BYTES, &size, &got);
		if (!rc && !got)
			rc = get_num(c, fp, f, "size", "size", WL_MAX_BYTES, &size, &got);
		if (rc)
			return rc;
		if (!got)
			return fail(c, "%s: missing size (sizeInBytes or size)", fp);
		dir = get_str(c, fp, f, "path", false, &rc);
		if (rc)
			return rc;
		if (dir) {
			size_t dl = strlen(dir), nl = strlen(name);

			key = malloc(dl + nl + 1);
			if (!key)
				return nomem(c);
			memcpy(key, dir, dl);
			memcpy(key + dl, name, nl + 1);
			rc = keep_key(c, key);
			if (rc)
				return rc;
			name = key;
		}
		if (*nof == *cap) {
			size_t nc = *cap ? 2 * *cap : 256;
			struct oldfile *p = realloc(*of, nc * sizeof(*p));

			if (!p)
				return nomem(c);
			*of = p;
			*cap = nc;
		}
		if (*nof >= UINT32_MAX / 2)
			return fail(c, "%s: too many files", path);
		(*of)[*nof] = (struct oldfile){ .key = name,
			                        .size = size,
			                        .task = i,
			                        .out = !strcasecmp(link, "output"),
			                        .pos = (uint32_t)*nof };
		(*nof)++;
	}
	return 0;
}

/* Runtimes and files of the older layouts: files named alike are one file,
 * with the size its first mention gives. */
static int old_tasks(struct wfc *c)
{
	struct oldfile *of = NULL;
	size_t nof = 0, cap = 0;
	int rc = 0;

	for (uint32_t i = 0; !rc && i < c->n; i++)
		rc = old_task(c, i, &of, &nof, &cap);
	if (!rc && nof) {
		qsort(of, nof, sizeof(*of), oldfile_cmp);
		c->fsize = malloc(nof * sizeof(*c->fsize));
		if (!c->fsize)
			rc = nomem(c);
	}
	for (size_t k = 0; !rc && k < nof; k++) {
		if (!k || strcmp(of[k].key, of[k - 1].key))
			c->fsize[c->nfiles++] = of[k].size;
		rc = push_fref(c, of[k].task, c->nfiles - 1, of[k].out);
	}
	free(of);
	return rc;
}

/* ---- edge data --------------------------------------------------------------- */

static int fref_cmp(const void *a, const void *b)
{
	const struct fref *x = a, *y = b;

	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	if (x->out != y->out)
		return x->out < y->out ? -1 : 1;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	return 0;
}

static bool has_file(const uint32_t *a, uint32_t n, uint32_t f)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (a[mid] == f)
			return true;
		if (a[mid] < f)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Per-task sorted file lists, data_in / data_out, and each edge's data. */
static int edge_data(struct wfc *c)
{
	struct workload *w = c->w;
	double budget = WFC_MATCH_BUDGET;
	size_t nio = 0;

	if (c->nfr)
		qsort(c->fr, c->nfr, sizeof(*c->fr), fref_cmp);
	c->io = malloc((c->nfr ? c->nfr : 1) * sizeof(*c->io));
	c->in_off = calloc((size_t)c->n + 1, sizeof(*c->in_off));
	c->out_off = calloc((size_t)c->n + 1, sizeof(*c->out_off));
	if (!c->io || !c->in_off || !c->out_off)
		return nomem(c);
	/* io[] holds, task by task, its inputs then its outputs */
	for (size_t k = 0, t = 0; t < c->n; t++) {
		c->in_off[t] = (uint32_t)nio;
		for (; k < c->nfr && c->fr[k].task == t && !c->fr[k].out; k++)
			if (nio == c->in_off[t] || c->io[nio - 1] != c->fr[k].file) {
				c->io[nio++] = c->fr[k].file;
				w->tasks[t].data_in += c->fsize[c->fr[k].file];
			}
		c->out_off[t] = (uint32_t)nio;
		for (; k < c->nfr && c->fr[k].task == t; k++)
			if (nio == c->out_off[t] || c->io[nio - 1] != c->fr[k].file) {
				c->io[nio++] = c->fr[k].file;
				w->tasks[t].data_out += c->fsize[c->fr[k].file];
			}
	}
	c->in_off[c->n] = (uint32_t)nio;

	for (uint32_t e = 0; e < w->nedges; e++) {
		uint32_t u = w->edges[e].src, v = w->edges[e].dst;
		const uint32_t *out = c->io + c->out_off[u], *in = c->io + c->in_off[v];
		uint32_t nout = c->in_off[u + 1] - c->out_off[u];
		uint32_t nin = c->out_off[v] - c->in_off[v];
		const uint32_t *small = nout < nin ? out : in, *large = nout < nin ? in : out;
		uint32_t ns = nout < nin ? nout : nin, nl = nout < nin ? nin : nout;
		double data = 0;

		if (!ns)
			continue;
		budget -= (double)ns * (log2((double)nl) + 2);
		if (budget < 0)
			return fail(c, "%s: too many files shared along edges to match", c->tpath);
		for (uint32_t k = 0; k < ns; k++)
			if (has_file(large, nl, small[k]))
				data += c->fsize[small[k]];
		w->edges[e].data = data;
	}
	return 0;
}

/* ---- the document ------------------------------------------------------------ */

static int parse_doc(struct wfc *c, json_t *root)
{
	struct workload *w = c->w;
	json_t *wf, *spec = NULL;
	size_t n;
	uint32_t cyc;
	int rc;

	if (!json_is_object(root))
		return fail(c, "(document): not an object");
	wf = json_object_get(root, "workflow");
	if (!wf)
		return fail(c, "workflow: missing");
	if (!json_is_object(wf))
		return fail(c, "workflow: not an object");
	if ((spec = json_object_get(wf, "specification"))) {
		if (!json_is_object(spec))
			return fail(c, "workflow.specification: not an object");
		c->v15 = true;
		c->tpath = "workflow.specification.tasks";
		c->tasks = json_object_get(spec, "tasks");
	} else if ((c->tasks = json_object_get(wf, "tasks"))) {
		c->tpath = "workflow.tasks";
	} else if ((c->tasks = json_object_get(wf, "jobs"))) {
		c->tpath = "workflow.jobs";
	} else {
		return fail(c, "workflow: no specification, tasks or jobs");
	}
	if (!c->tasks)
		return fail(c, "%s: missing", c->tpath);
	if (!json_is_array(c->tasks))
		return fail(c, "%s: not an array", c->tpath);
	n = json_array_size(c->tasks);
	if (!n)
		return fail(c, "%s: no tasks", c->tpath);
	if (n > WL_MAX_TASKS)
		return fail(c, "%s: %zu tasks exceed the limit of %u", c->tpath, n, WL_MAX_TASKS);
	c->n = (uint32_t)n;

	rc = index_tasks(c);
	if (rc)
		return rc;
	w->tasks = calloc(c->n, sizeof(*w->tasks));
	if (!w->tasks)
		return nomem(c);
	w->ntasks = c->n;
	for (uint32_t i = 0; i < c->n; i++)
		name_task(c, i);

	if (c->v15) {
		rc = v15_files(c, spec);
		if (!rc)
			rc = v15_task_files(c, c->fileref != NULL);
		if (!rc)
			rc = task_edges(c);
		if (!rc)
			rc = v15_runtimes(c, wf);
	} else {
		rc = old_tasks(c);
		if (!rc)
			rc = task_edges(c);
	}
	if (rc)
		return rc;
	wl_sort_edges(w);
	if (w->nedges > WL_MAX_EDGES)
		return fail(c, "%s: %u edges exceed the limit of %u", c->tpath, w->nedges,
		            WL_MAX_EDGES);
	rc = wl_check_acyclic(w, &cyc);
	if (rc == -TDM_EINVAL) {
		json_t *t = json_array_get(c->tasks, cyc);

		return fail(c, "%s[%u]: cycle through task %s", c->tpath, cyc,
		            show(json_string_value(json_object_get(t, c->v15 ? "id" : "name"))).s);
	}
	if (rc)
		return nomem(c);
	return edge_data(c);
}

int wl_wfcommons_parse(const char *text, size_t len, const char *name, struct workload *out,
                       char *err, size_t errlen)
{
	struct wfc c = {
		.name = name ? name : "wfcommons", .err = err, .errlen = errlen, .w = out
	};
	json_error_t jerr;
	json_t *root;
	int rc;

	wl_init(out);
	if (err && errlen)
		err[0] = '\0';
	if (len > WL_MAX_INPUT)
		return fail(&c, "input of %zu bytes exceeds the limit of %zu", len,
		            (size_t)WL_MAX_INPUT);
	if (!text) {
		text = "";
		len = 0;
	}
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (err && errlen)
			snprintf(err, errlen, "%s:%d:%d: %s", c.name, jerr.line, jerr.column,
			         jerr.text);
		return -TDM_EINVAL;
	}
	rc = parse_doc(&c, root);
	json_decref(root);
	free(c.tref);
	free(c.tref_id);
	free(c.fileref);
	free(c.fsize);
	free(c.fr);
	for (size_t k = 0; k < c.nkeys; k++)
		free(c.keys[k]);
	free(c.keys);
	free(c.io);
	free(c.in_off);
	free(c.out_off);
	if (rc) {
		wl_free(out);
		return rc;
	}
	out->units = WL_UNITS_SECONDS;
	wl_copy_name(out->name, wl_basename(name), SIZE_MAX);
	return 0;
}

int wl_wfcommons_load(const char *path, struct workload *out, char *err, size_t errlen)
{
	return wl_load_file(path, wl_wfcommons_parse, out, err, errlen);
}
