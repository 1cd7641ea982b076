/* StarPU 1.3 sampling files to a machine description (starpu_perfmodel.h).
 *
 * Files are read whole (at most 16 MiB) and walked line by line; blank lines
 * and lines starting with '#' are StarPU's comments and are skipped, as
 * StarPU's own reader does. Every value is checked; the first problem ends
 * the conversion with "FILE:LINE: message". */
#include "tools/starpu_perfmodel.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backends/backend.h"
#include "backends/kernels.h"
#include "sim/machine.h"
#include "profiler/calibrate.h"
#include "tandem.h"

#define FILE_MAX ((size_t)16 << 20)
#define PATH_LEN 4096
#define HOST_MAX 40
#define NB_MAX 4096
#define MAX_COMBS 4096
#define MAX_DEVTYPES 64
#define MAX_IMPLS 64
#define MAX_ENTRIES 100000
#define MAX_COEFFS 1024
#define MAX_ROWS 64 /* per kernel and model, as a description holds them */

/* Figures StarPU's files do not have. */
#define CPU_GFLOPS 20.0
#define CPU_MEM_GBPS 10.0
#define CPU_LAUNCH_NS 1000.0
#define GPU_GFLOPS 2000.0
#define GPU_MEM_GBPS 200.0
#define GPU_LAUNCH_NS 8000.0
#define GPU_MEM_BYTES ((uint64_t)16 << 30)

/* ---- reading lines ------------------------------------------------------- */

struct lines {
	const char *path;
	char *buf;
	size_t len, pos;
	int line; /* of the line last returned */
	char *err;
	size_t errlen;
};

__attribute__((format(printf, 2, 3))) static int bad(struct lines *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!l->err || !l->errlen)
		return -TDM_EINVAL;
	n = snprintf(l->err, l->errlen, "%s:%d: ", l->path, l->line);
	if (n >= 0 && (size_t)n < l->errlen) {
		va_start(ap, fmt);
		vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -TDM_EINVAL;
}

static int lines_open(struct lines *l, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	bool failed;

	memset(l, 0, sizeof(*l));
	l->path = path;
	l->err = err;
	l->errlen = errlen;
	if (!f) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -TDM_ESYS;
	}
	if (!(l->buf = malloc(FILE_MAX + 1))) {
		fclose(f);
		if (err && errlen)
			snprintf(err, errlen, "%s: out of memory", path);
		return -TDM_ENOMEM;
	}
	l->len = fread(l->buf, 1, FILE_MAX + 1, f);
	failed = ferror(f) != 0;
	fclose(f);
	if (failed || l->len > FILE_MAX) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path,
			         failed ? "cannot read" : "larger than 16 MiB");
		free(l->buf);
		l->buf = NULL;
		return failed ? -TDM_ESYS : -TDM_EINVAL;
	}
	if (memchr(l->buf, '\0', l->len)) {
		free(l->buf);
		l->buf = NULL;
		if (err && errlen)
			snprintf(err, errlen, "%s: NUL byte (not a text file)", path);
		return -TDM_EINVAL;
	}
	l->buf[l->len] = '\0';
	return 0;
}

static void lines_close(struct lines *l)
{
	free(l->buf);
	l->buf = NULL;
}

/* The next line (NUL-terminated in place, without '\r'), NULL at the end. */
static char *next_line(struct lines *l)
{
	char *s, *nl;

	if (l->pos >= l->len)
		return NULL;
	s = l->buf + l->pos;
	nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		l->pos = (size_t)(nl - l->buf) + 1;
	} else {
		l->pos = l->len;
	}
	l->line++;
	if (nl && nl > s && nl[-1] == '\r')
		nl[-1] = '\0';
	return s;
}

static bool blank_or_comment(const char *s)
{
	s += strspn(s, " \t");
	return *s == '\0' || *s == '#';
}

/* The next line that is not blank or a comment; NULL at the end. */
static char *next_data(struct lines *l)
{
	char *s;

	while ((s = next_line(l)) && blank_or_comment(s))
		;
	return s;
}

/* Splits s into at most max whitespace-separated tokens (in place). */
static int tokens(char *s, char **tok, int max)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(s, " \t", &save); t;
	     t = strtok_r(NULL, " \t", &save)) {
		if (n == max)
			return max + 1;
		tok[n++] = t;
	}
	return n;
}

static bool to_double(const char *s, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return end != s && *end == '\0' && errno != ERANGE;
}

static bool to_uint(const char *s, uint64_t max, uint64_t *v)
{
	char *end;
	unsigned long long x;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (*end || errno || x > max)
		return false;
	*v = x;
	return true;
}

/* A line holding one unsigned integer in 0..max. */
static int read_count(struct lines *l, const char *what, uint64_t max, uint64_t *v)
{
	char *s = next_data(l), *tok[2];

	if (!s)
		return bad(l, "the file ends where %s was expected", what);
	if (tokens(s, tok, 1) != 1 || !to_uint(tok[0], max, v))
		return bad(l, "expected %s (an integer in 0..%" PRIu64 ")", what, max);
	return 0;
}

/* n numbers, over as many lines as they take. */
static int read_numbers(struct lines *l, const char *what, size_t n, double *out)
{
	size_t got = 0;

	while (got < n) {
		char *s = next_data(l), *tok[16];
		int k;

		if (!s)
			return bad(l, "the file ends where %s was expected", what);
		k = tokens(s, tok, 16);
		if (k > 16 || got + (size_t)k > n)
			return bad(l, "too many values for %s (expected %zu)", what, n);
		for (int i = 0; i < k; i++, got++) {
			double v;

			if (!to_double(tok[i], &v))
				return bad(l, "\"%.40s\" is not a number (in %s)", tok[i], what);
			if (out)
				out[got] = v;
		}
	}
	return 0;
}

/* ---- bus files ----------------------------------------------------------- */

static void bus_path(char *out, size_t len, const char *dir, const char *host, const char *ext)
{
	snprintf(out, len, "%s/bus_%s.%s", dir, host, ext);
}

static int read_config(const char *path, struct spm_bus *bus, char *err, size_t errlen)
{
	struct lines l;
	bool have_cpu = false, have_cuda = false;
	char *s;
	int rc = lines_open(&l, path, err, errlen);

	if (rc)
		return rc;
	while ((s = next_data(&l))) {
		char *hash = strchr(s, '#'), *tok[2];
		uint64_t v;

		if (!hash) {
			rc = bad(&l, "expected \"N # Number of ...\"");
			break;
		}
		*hash++ = '\0';
		if (tokens(s, tok, 1) != 1 || !to_uint(tok[0], 1000000, &v)) {
			rc = bad(&l, "expected a count before '#'");
			break;
		}
		if (strstr(hash, "Number of CPUs")) {
			bus->ncpus = (unsigned)v;
			have_cpu = true;
		} else if (strstr(hash, "Number of CUDA devices")) {
			bus->ncuda = (unsigned)v;
			have_cuda = true;
		} else if (strstr(hash, "Number of OpenCL devices")) {
			bus->nopencl = (unsigned)v;
		}
	}
	if (!rc && (!have_cpu || !have_cuda)) {
		if (err && errlen)
			snprintf(err, errlen, "%s: no \"# Number of %s\" line", path,
			         have_cpu ? "CUDA devices" : "CPUs");
		rc = -TDM_EINVAL;
	}
	lines_close(&l);
	return rc;
}

/* A square matrix of numbers ("nan" where there is none); lines[] receives
 * each row's line. */
static int read_matrix(const char *path, double m[SPM_MAX_NODES][SPM_MAX_NODES], unsigned *n,
                       int *rowline, char *err, size_t errlen)
{
	struct lines l;
	unsigned rows = 0, cols = 0;
	char *s;
	int rc = lines_open(&l, path, err, errlen);

	if (rc)
		return rc;
	while ((s = next_data(&l))) {
		char *tok[SPM_MAX_NODES + 1];
		int k = tokens(s, tok, SPM_MAX_NODES);

		if (k > SPM_MAX_NODES || rows >= SPM_MAX_NODES) {
			rc = bad(&l, "more than %d memory nodes", SPM_MAX_NODES);
			break;
		}
		if (rows == 0)
			cols = (unsigned)k;
		if ((unsigned)k != cols) {
			rc = bad(&l, "%d values, the first row has %u", k, cols);
			break;
		}
		for (int i = 0; i < k && !rc; i++)
			if (!to_double(tok[i], &m[rows][i]))
				rc = bad(&l, "\"%.40s\" is not a number", tok[i]);
		if (rc)
			break;
		rowline[rows++] = l.line;
	}
	if (!rc && rows != cols) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %u rows of %u values: not a square matrix", path,
			         rows, cols);
		rc = -TDM_EINVAL;
	}
	*n = rows;
	lines_close(&l);
	return rc;
}

struct bus_lines {
	int bw[SPM_MAX_NODES], lat[SPM_MAX_NODES];
	unsigned nlat;
};

static int bus_read(const char *dir, const char *host, struct spm_bus *bus, struct bus_lines *bl,
                    char *err, size_t errlen)
{
	char path[PATH_LEN];
	int rc;

	memset(bus, 0, sizeof(*bus));
	bus_path(path, sizeof(path), dir, host, "config");
	if ((rc = read_config(path, bus, err, errlen)))
		return rc;
	bus_path(path, sizeof(path), dir, host, "bandwidth");
	if ((rc = read_matrix(path, bus->bw, &bus->nnodes, bl->bw, err, errlen)))
		return rc;
	bus_path(path, sizeof(path), dir, host, "latency");
	if ((rc = read_matrix(path, bus->lat, &bl->nlat, bl->lat, err, errlen)))
		return rc;
	if (bl->nlat != bus->nnodes) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %u memory nodes, the bandwidth file has %u",
			         path, bl->nlat, bus->nnodes);
		return -TDM_EINVAL;
	}
	return 0;
}

int spm_bus_read(const char *dir, const char *host, struct spm_bus *bus, char *err, size_t errlen)
{
	struct bus_lines bl;

	return bus_read(dir, host, bus, &bl, err, errlen);
}

/* ---- codelet models ------------------------------------------------------ */

void spm_model_free(struct spm_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->narch; i++)
		free(m->arch[i].e);
	free(m->arch);
	m->arch = NULL;
	m->narch = 0;
}

/* One implementation's history (entries kept when keep is set). */
static int read_impl(struct lines *l, struct spm_arch *a, bool keep)
{
	uint64_t nentries, ncoeff;
	int rc;

	if ((rc = read_count(l, "the number of entries", MAX_ENTRIES, &nentries)) ||
	    (rc = read_numbers(l, "the regression's sums (9 values)", 9, NULL)) ||
	    (rc = read_numbers(l, "the regression's a, b, c", 3, NULL)) ||
	    (rc = read_count(l, "the number of multiple-regression coefficients", MAX_COEFFS,
	                     &ncoeff)) ||
	    (rc = read_numbers(l, "the multiple-regression coefficients", ncoeff, NULL)))
		return rc;
	if (keep && nentries && !(a->e = calloc(nentries, sizeof(*a->e))))
		return -TDM_ENOMEM;
	for (uint64_t i = 0; i < nentries; i++) {
		char *s = next_data(l), *tok[9], *end;
		struct spm_entry e;
		double sum, sum2;

		if (!s)
			return bad(l,
			           "the file ends where history entry %" PRIu64 " of %" PRIu64
			           " was expected",
			           i + 1, nentries);
		if (tokens(s, tok, 8) != 8)
			return bad(l, "expected 8 values: hash size flops mean dev sum sum2 n");
		(void)strtoul(tok[0], &end, 16);
		if (*end || !*tok[0])
			return bad(l, "\"%.40s\" is not a hash (hexadecimal)", tok[0]);
		if (!to_uint(tok[1], UINT64_MAX, &e.size))
			return bad(l, "size \"%.40s\" is not an unsigned integer", tok[1]);
		if (!to_double(tok[2], &e.flops) || !to_double(tok[3], &e.mean_us) ||
		    !to_double(tok[4], &e.dev_us) || !to_double(tok[5], &sum) ||
		    !to_double(tok[6], &sum2))
			return bad(l, "flops, mean, dev, sum and sum2 must be numbers");
		if (!to_uint(tok[7], UINT32_MAX, &e.n))
			return bad(l, "n \"%.40s\" is not an unsigned integer", tok[7]);
		if (keep)
			a->e[a->nentries++] = e;
	}
	return 0;
}

static int read_comb(struct lines *l, struct spm_model *m)
{
	uint64_t ntypes, nimpls, type = 0, devid = 0, ncores = 0;
	struct spm_arch a = { 0 };
	int rc;

	if ((rc = read_count(l, "the number of device types", MAX_DEVTYPES, &ntypes)))
		return rc;
	if (ntypes == 0)
		return bad(l, "a combination of no device");
	for (uint64_t t = 0; t < ntypes; t++) {
		if ((rc = read_count(l, "a device type (0 CPU, 1 CUDA, 2 OpenCL, 3 MIC)", 3,
		                     &type)) ||
		    (rc = read_count(l, "a device id", 1000000, &devid)) ||
		    (rc = read_count(l, "a number of cores", 1000000, &ncores)))
			return rc;
	}
	a.type = (enum spm_type)type;
	a.devid = (int)devid;
	a.ncores = (int)ncores;
	if ((rc = read_count(l, "the number of implementations", MAX_IMPLS, &nimpls)))
		return rc;
	for (uint64_t i = 0; i < nimpls; i++) {
		/* the first implementation of single-device combinations */
		if ((rc = read_impl(l, &a, i == 0 && ntypes == 1))) {
			free(a.e);
			return rc;
		}
	}
	if (ntypes != 1 || nimpls == 0) {
		free(a.e);
		return 0;
	}
	m->arch[m->narch++] = a;
	return 0;
}

int spm_model_read(const char *path, struct spm_model *out, char *err, size_t errlen)
{
	struct lines l;
	uint64_t version, ncombs;
	int rc = lines_open(&l, path, err, errlen);

	memset(out, 0, sizeof(*out));
	if (rc)
		return rc;
	if ((rc = read_count(&l, "the model's version", 1000000, &version)))
		goto out;
	if (version != 45) {
		rc = bad(&l,
		         "performance model version %" PRIu64 ": only version 45 (StarPU 1.3) "
		         "is read",
		         version);
		goto out;
	}
	if ((rc = read_count(&l, "the number of combinations", MAX_COMBS, &ncombs)))
		goto out;
	if (ncombs && !(out->arch = calloc(ncombs, sizeof(*out->arch)))) {
		rc = -TDM_ENOMEM;
		goto out;
	}
	for (uint64_t c = 0; c < ncombs && !rc; c++)
		rc = read_comb(&l, out);
	if (!rc && next_data(&l))
		rc = bad(&l, "more data after the %" PRIu64 " combinations the file announces",
		         ncombs);
out:
	if (rc == -TDM_ENOMEM && err && errlen)
		snprintf(err, errlen, "%s: out of memory", path);
	if (rc)
		spm_model_free(out);
	lines_close(&l);
	return rc;
}

/* ---- conversion ---------------------------------------------------------- */

/* StarPU's examples' codelets, in the order they win: the single-precision
 * Cholesky ones first, then the double-precision LU ones for what they add. */
static const struct codelet {
	const char *file;
	enum kernel_id kernel;
	unsigned tiles, elt; /* buffers of nb x nb elements of elt bytes */
} codelets[] = {
	{ "chol_model_potrf", KERNEL_SPOTRF, 1, 4 },
	{ "chol_model_trsm", KERNEL_STRSM, 2, 4 },
	{ "chol_model_syrk", KERNEL_SSYRK, 2, 4 },
	{ "chol_model_gemm", KERNEL_SGEMM_NT, 3, 4 },
	{ "starpu_dlu_lu_model_getrf", KERNEL_SGETRF, 1, 8 },
	{ "starpu_dlu_lu_model_gemm", KERNEL_SGEMM_NT, 3, 8 },
	{ "starpu_dlu_lu_model_trsm_ll", KERNEL_STRSM, 2, 8 },
	{ "starpu_dlu_lu_model_trsm_ru", KERNEL_STRSM, 2, 8 },
};

#define NCODELETS (sizeof(codelets) / sizeof(codelets[0]))

enum { M_CPU, M_CUDA, M_N };

/* Samples of one size of one kernel on one model, summed over devices. */
struct row {
	uint16_t kernel;
	int model;
	int64_t nb;
	unsigned codelet;
	double n, sx, sxx; /* samples, sum of times, sum of squares (us) */
};

struct rows {
	struct row *r;
	size_t n, cap;
};

static struct row *find_row(struct rows *rs, size_t from, unsigned kernel, int model, int64_t nb)
{
	for (size_t i = from; i < rs->n; i++)
		if (rs->r[i].kernel == kernel && rs->r[i].model == model && rs->r[i].nb == nb)
			return &rs->r[i];
	return NULL;
}

/* nb when size is exactly c's buffers for nb x nb tiles, else 0. */
static int64_t size_nb(const struct codelet *c, uint64_t size)
{
	uint64_t per = (uint64_t)c->tiles * c->elt, nb;

	if (size % per)
		return 0;
	nb = (uint64_t)llround(sqrt((double)(size / per)));
	return nb >= 1 && nb <= NB_MAX && nb * nb == size / per ? (int64_t)nb : 0;
}

/* File c's entries for the kept devices into rs (sizes an earlier file had
 * for the same kernel and model are left to it). */
static int add_codelet(const struct spm_options *o, unsigned ci, int ncpus, int ncuda,
                       struct rows *rs, char *err, size_t errlen)
{
	const struct codelet *c = &codelets[ci];
	char path[PATH_LEN];
	struct spm_model m;
	size_t first = rs->n;
	int rc;

	snprintf(path, sizeof(path), "%s/%s.%s", o->dir, c->file, o->host);
	rc = spm_model_read(path, &m, err, errlen);
	if (rc == -TDM_ESYS) {
		fprintf(stderr, "starpu2machine: %s: not found, skipped\n", path);
		return 0;
	}
	if (rc)
		return rc;
	for (size_t a = 0; a < m.narch; a++) {
		const struct spm_arch *ar = &m.arch[a];
		int model;

		if (ar->type == SPM_CPU && ar->ncores == 1 && ncpus > 0)
			model = M_CPU;
		else if (ar->type == SPM_CUDA && ar->devid < ncuda)
			model = M_CUDA;
		else
			continue;
		for (size_t i = 0; i < ar->nentries; i++) {
			const struct spm_entry *e = &ar->e[i];
			int64_t nb = size_nb(c, e->size);
			struct row *r;

			if (!nb) {
				fprintf(stderr,
				        "starpu2machine: %s: size %" PRIu64 " is not %u tile(s) of "
				        "nb x nb %s: skipped\n",
				        path, e->size, c->tiles,
				        c->elt == 4 ? "floats" : "doubles");
				continue;
			}
			if (!e->n || !isfinite(e->mean_us) || !(e->mean_us * 1000 >= 1) ||
			    !isfinite(e->dev_us) || e->mean_us * 1000 > 1e15)
				continue;
			if (find_row(rs, 0, c->kernel, model, nb) &&
			    !find_row(rs, first, c->kernel, model, nb))
				continue; /* an earlier file's: Cholesky's win */
			r = find_row(rs, first, c->kernel, model, nb);
			if (!r) {
				if (rs->n == rs->cap) {
					size_t cap = rs->cap ? 2 * rs->cap : 64;
					struct row *g = realloc(rs->r, cap * sizeof(*g));

					if (!g) {
						spm_model_free(&m);
						snprintf(err, errlen, "out of memory");
						return -TDM_ENOMEM;
					}
					rs->r = g;
					rs->cap = cap;
				}
				r = &rs->r[rs->n++];
				*r = (struct row){ .kernel = (uint16_t)c->kernel,
					           .model = model,
					           .nb = nb,
					           .codelet = ci };
			}
			r->n += (double)e->n;
			r->sx += (double)e->n * e->mean_us;
			r->sxx += (double)e->n * (e->dev_us * e->dev_us + e->mean_us * e->mean_us);
		}
	}
	spm_model_free(&m);
	return 0;
}

/* v to 10 significant digits: StarPU's files have 7, and a unit changed
 * (us to ns, MB/s to GB/s) reads better without the binary noise. */
static double tidy(double v)
{
	char buf[40];

	snprintf(buf, sizeof(buf), "%.10g", v);
	return strtod(buf, NULL);
}

static double row_mean_ns(const struct row *r)
{
	return tidy(r->sx / r->n * 1000);
}

static double row_spread_ns(const struct row *r)
{
	double mean = r->sx / r->n;

	return tidy(sqrt(fmax(0, r->sxx / r->n - mean * mean)) * 1000);
}

/* Rows by codelet, model, then size. */
static int row_order(const void *pa, const void *pb)
{
	const struct row *a = pa, *b = pb;

	if (a->codelet != b->codelet)
		return a->codelet < b->codelet ? -1 : 1;
	if (a->model != b->model)
		return a->model < b->model ? -1 : 1;
	return (a->nb > b->nb) - (a->nb < b->nb);
}

/* A tile kernel's features for nb, from its own features(). */
static struct kernel_features tile_features(unsigned kernel, int64_t nb)
{
	const struct kernel_def *k = kernel_by_id(kernel);
	struct tdm_kernel_call call;
	struct kernel_features f = { 0 };

	memset(&call, 0, sizeof(call));
	call.nargs = k->nargs;
	call.s[0].i64 = nb;
	for (unsigned i = 0; i < k->nargs && i < TDM_MAX_ARGS; i++)
		call.len[i] = (uint64_t)nb * (uint64_t)nb * 4;
	k->features(&call, &f);
	return f;
}

/* GFLOP/s of the largest sgemm_nt size of model, or 0. */
static double gemm_gflops(const struct rows *rs, int model)
{
	const struct row *best = NULL;

	for (size_t i = 0; i < rs->n; i++) {
		const struct row *r = &rs->r[i];

		if (r->kernel == KERNEL_SGEMM_NT && r->model == model &&
		    (!best || r->nb > best->nb))
			best = r;
	}
	if (!best)
		return 0;
	return tidy(tile_features(KERNEL_SGEMM_NT, best->nb).flops / row_mean_ns(best));
}

static json_t *models_doc(const struct rows *rs, const char *key[M_N])
{
	json_t *doc = json_pack("{s:i, s:[]}", "version", 1, "models");
	json_t *arr = doc ? json_object_get(doc, "models") : NULL;
	size_t per[M_N][KERNEL_COUNT];

	memset(per, 0, sizeof(per));
	for (size_t i = 0; doc && i < rs->n; i++) {
		const struct row *r = &rs->r[i];
		struct kernel_features f = tile_features(r->kernel, r->nb);
		json_t *o;

		if (per[r->model][r->kernel]++ >= MAX_ROWS)
			continue;
		o = json_pack("{s:s, s:s, s:[{s:f, s:f, s:f, s:I, s:f, s:f, s:[]}]}", "kernel",
		              kernel_by_id(r->kernel)->name, "device", key[r->model], "footprints",
		              "flops", f.flops, "bytes", f.bytes, "domain", f.domain, "n",
		              (json_int_t)r->n, "estimate_ns", row_mean_ns(r), "spread_ns",
		              row_spread_ns(r), "recent");
		if (!o || json_array_append_new(arr, o)) {
			json_decref(doc);
			return NULL;
		}
	}
	return doc;
}

static bool host_ok(const char *h)
{
	size_t n = h ? strlen(h) : 0;

	if (n < 1 || n > HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

struct conv {
	struct spm_bus bus;
	struct bus_lines bl;
	struct backend_device devs[MACHINE_MAX_DEVICES];
	struct calibration cal;
	struct rows rows;
};

static int check_link(const struct spm_options *o, const struct conv *cv, unsigned s, unsigned d,
                      char *err, size_t errlen)
{
	double bw = cv->bus.bw[s][d], lat = cv->bus.lat[s][d];

	if (!(isfinite(bw) && bw > 0 && bw / 1000 < 1e5)) {
		snprintf(err, errlen,
		         "%s/bus_%s.bandwidth:%d: no usable bandwidth from node %u to %u", o->dir,
		         o->host, cv->bl.bw[s], s, d);
		return -TDM_EINVAL;
	}
	if (!(isfinite(lat) && lat >= 0 && lat * 1000 < 1e9)) {
		snprintf(err, errlen, "%s/bus_%s.latency:%d: no usable latency from node %u to %u",
		         o->dir, o->host, cv->bl.lat[s], s, d);
		return -TDM_EINVAL;
	}
	return 0;
}

/* Devices, figures and links into cv. */
static int build_devices(const struct spm_options *o, struct conv *cv, int ncpus, int ncuda,
                         const char *model[M_N], char *err, size_t errlen)
{
	double gf[M_N] = { gemm_gflops(&cv->rows, M_CPU), gemm_gflops(&cv->rows, M_CUDA) };
	size_t n = 0;
	int rc;

	if (!(gf[M_CPU] > 0 && gf[M_CPU] < 1e7))
		gf[M_CPU] = CPU_GFLOPS;
	if (!(gf[M_CUDA] > 0 && gf[M_CUDA] < 1e7))
		gf[M_CUDA] = GPU_GFLOPS;
	calibrate_defaults((size_t)(ncpus + ncuda), (size_t)ncuda + 1, &cv->cal);
	snprintf(cv->cal.fingerprint, sizeof(cv->cal.fingerprint), "starpu:%s", o->host);
	for (int i = 0; i < ncpus + ncuda; i++, n++) {
		struct backend_device *d = &cv->devs[n];
		struct cal_device *c = &cv->cal.dev[n];
		bool gpu = i >= ncpus;

		memset(d, 0, sizeof(*d));
		snprintf(d->name, sizeof(d->name), gpu ? "gpu%d" : "cpu%d", gpu ? i - ncpus : i);
		snprintf(d->model, sizeof(d->model), "%s", model[gpu ? M_CUDA : M_CPU]);
		d->kind = gpu ? TDM_DEV_GPU : TDM_DEV_CPU;
		d->node = gpu ? (uint16_t)(i - ncpus + 1) : 0;
		d->mem_bytes = gpu ? GPU_MEM_BYTES : 0;
		calibrate_device_key(d, c->key, sizeof(c->key));
		c->node = d->node;
		c->gemm_gflops = gf[gpu ? M_CUDA : M_CPU];
		c->mem_gbps = gpu ? GPU_MEM_GBPS : CPU_MEM_GBPS;
		c->launch_ns = gpu ? GPU_LAUNCH_NS : CPU_LAUNCH_NS;
	}
	for (unsigned s = 0; s <= (unsigned)ncuda; s++) {
		for (unsigned d = 0; d <= (unsigned)ncuda; d++) {
			if (s == d)
				continue;
			if ((rc = check_link(o, cv, s, d, err, errlen)))
				return rc;
			cv->cal.link[s][d] =
			        (struct cal_link){ tidy(cv->bus.bw[s][d] / 1000),
				                   tidy(cv->bus.lat[s][d] * 1000), true };
		}
	}
	return 0;
}

static void header(FILE *out, const struct spm_options *o, int ncpus, int ncuda,
                   const struct conv *cv)
{
	bool lu = false;

	for (size_t i = 0; i < cv->rows.n; i++)
		lu = lu || codelets[cv->rows.r[i].codelet].elt == 8;
	fprintf(out,
	        "# Converted by starpu2machine from the StarPU 1.3 sampling files of host\n"
	        "# \"%s\": %d of its %u CPU cores, %d of its %u CUDA devices (OpenCL devices\n"
	        "# are left out). Links: StarPU's bus measurements. gflops: the largest\n"
	        "# gemm size measured (defaults when there is none); mem_gbps, launch_ns and\n"
	        "# the GPUs' memory are defaults: StarPU's files do not have them.\n"
	        "# CUDA costs are the mean over the devices kept, weighted by their samples.\n",
	        o->host, ncpus, cv->bus.ncpus, ncuda, cv->bus.ncuda);
	if (lu)
		fputs("# Some rows come from StarPU's LU example, which is double precision\n"
		      "# (sgetrf_nopiv; sgemm_nt and strsm only where Cholesky's single-precision\n"
		      "# models lack the size): they overstate single-precision times.\n",
		      out);
}

int spm_convert(const struct spm_options *o, FILE *out, char *err, size_t errlen)
{
	char m0[MACHINE_NAME_MAX], m1[MACHINE_NAME_MAX], k0[CAL_KEY_MAX], k1[CAL_KEY_MAX];
	const char *model[M_N] = { m0, m1 }, *key[M_N] = { k0, k1 };
	struct backend_device tmp;
	struct conv *cv;
	json_t *doc = NULL;
	int ncpus, ncuda, rc = 0;

	if (err && errlen)
		err[0] = '\0';
	if (!o || !o->dir || !host_ok(o->host) || !out) {
		snprintf(err, errlen,
		         "a host name is 1 to %d characters A-Z, a-z, 0-9, '.', '_', '-'",
		         HOST_MAX);
		return -TDM_EINVAL;
	}
	if (!(cv = calloc(1, sizeof(*cv)))) {
		snprintf(err, errlen, "out of memory");
		return -TDM_ENOMEM;
	}
	if ((rc = bus_read(o->dir, o->host, &cv->bus, &cv->bl, err, errlen)))
		goto done;
	ncpus = o->ncpus < 0 ? (int)cv->bus.ncpus : o->ncpus;
	ncuda = o->ncuda < 0 ? (int)cv->bus.ncuda : o->ncuda;
	if ((unsigned)ncpus > cv->bus.ncpus || (unsigned)ncuda > cv->bus.ncuda) {
		snprintf(err, errlen, "%s/bus_%s.config: the host has %u CPUs and %u CUDA devices",
		         o->dir, o->host, cv->bus.ncpus, cv->bus.ncuda);
		rc = -TDM_EINVAL;
		goto done;
	}
	if (ncpus + ncuda < 1 || ncpus + ncuda > MACHINE_MAX_DEVICES ||
	    ncuda >= MACHINE_MAX_NODES || (unsigned)ncuda >= cv->bus.nnodes) {
		snprintf(err, errlen,
		         "%d CPUs and %d CUDA devices: a machine has 1 to %d devices, at most %d "
		         "CUDA devices, and this bus file %u memory nodes",
		         ncpus, ncuda, MACHINE_MAX_DEVICES, MACHINE_MAX_NODES - 1, cv->bus.nnodes);
		rc = -TDM_EINVAL;
		goto done;
	}
	snprintf(m0, sizeof(m0), "%s-cpu", o->host);
	snprintf(m1, sizeof(m1), "%s-cuda", o->host);
	memset(&tmp, 0, sizeof(tmp));
	tmp.kind = TDM_DEV_CPU;
	snprintf(tmp.model, sizeof(tmp.model), "%s", m0);
	calibrate_device_key(&tmp, k0, sizeof(k0));
	tmp.kind = TDM_DEV_GPU;
	snprintf(tmp.model, sizeof(tmp.model), "%s", m1);
	calibrate_device_key(&tmp, k1, sizeof(k1));
	for (unsigned c = 0; c < NCODELETS && !rc; c++)
		rc = add_codelet(o, c, ncpus, ncuda, &cv->rows, err, errlen);
	if (rc || (rc = build_devices(o, cv, ncpus, ncuda, model, err, errlen)))
		goto done;
	if (cv->rows.n)
		qsort(cv->rows.r, cv->rows.n, sizeof(*cv->rows.r), row_order);
	if (!(doc = models_doc(&cv->rows, key))) {
		snprintf(err, errlen, "out of memory");
		rc = -TDM_ENOMEM;
		goto done;
	}
	header(out, o, ncpus, ncuda, cv);
	rc = machine_write(out, o->host, cv->devs, (size_t)(ncpus + ncuda), &cv->cal, doc);
	if (rc)
		snprintf(err, errlen, "cannot write the description: %s", tdm_strerror(rc));
done:
	json_decref(doc);
	free(cv->rows.r);
	free(cv);
	return rc;
}
