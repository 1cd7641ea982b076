/* Whole-graph planning on published benchmark graphs.
 *
 * Standard Task Graph Set (rand50, rand100), m in {2, 4, 8, 16} identical
 * devices on one memory node (no communication): HEFT and PEFT, plain and
 * with refinement, against the published optimum of each graph
 * (optimal/Case<50|100>_<m>_OPT.csv; rows "file,m,LB,UB" are unsolved
 * graphs, planned and checked but left out of the figures and counted).
 *
 *   BENCH stg_pct_above_opt <mean> pct policy=P set=S procs=M graphs=N ...
 *   BENCH stg_pct_above_opt_max <max> pct ...
 *   BENCH stg_plan_us <mean> us ...            (time of one plan_schedule)
 *
 * WfCommons workflows (runtimes in seconds, file sizes in bytes) on 4 and 16
 * identical devices, each on its own memory node, with 1 Gbit/s links
 * (1.25e8 bytes/s) and 50 us latency between nodes:
 *
 *   BENCH wfcommons_makespan_over_lb <ratio> ratio policy=P workflow=W procs=M
 *
 * where lb is plan_lower_bound(critical path, area). Every schedule goes
 * through plan_check, and must not beat the lower bound or the published
 * optimum (it aborts with a message if one does).
 *
 * The data is read at run time from TANDEM_BENCH_DATA, else
 * ../shared/benchmarks or ../../shared/benchmarks; without it the bench
 * says so and exits 0.
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "workload/workload.h"
#include "placement/plan.h"

/* Perturbed candidate orders tried after the published one: a 100-task
 * graph on 16 devices plans in a few ms with these (see stg_plan_us). */
#define REFINE_ITERS 64
#define REFINE_SEED 1

#define MAX_FILES 512
#define MAX_OPT_ROWS 1024

static const unsigned stg_procs[] = { 2, 4, 8, 16 };
static const unsigned wfc_procs[] = { 4, 16 };

struct policy {
	const char *name;
	enum plan_method method;
	uint32_t refine_iters;
};

static const struct policy policies[] = {
	{ "heft", PLAN_HEFT, 0 },
	{ "peft", PLAN_PEFT, 0 },
	{ "heft_refined", PLAN_HEFT, REFINE_ITERS },
	{ "peft_refined", PLAN_PEFT, REFINE_ITERS },
};
#define NPOL (sizeof(policies) / sizeof(policies[0]))

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool is_dir(const char *path)
{
	struct stat st;

	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

static void die(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "bench_stg: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\n");
	exit(1);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dir ending in suffix, sorted; returns how many. */
static size_t list_files(const char *dir, const char *suffix, char **names, size_t max)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0, sl = strlen(suffix);

	if (!d)
		return 0;
	while ((e = readdir(d)) && n < max) {
		size_t l = strlen(e->d_name);

		if (e->d_name[0] == '.' || l <= sl || strcmp(e->d_name + l - sl, suffix))
			continue;
		names[n] = strdup(e->d_name);
		if (!names[n])
			die("%s%s", "out of memory", "");
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_str);
	return n;
}

/* ---- published optima ---------------------------------------------------------- */

struct opt_row {
	char file[64]; /* last component, e.g. rand0000.stg */
	bool solved;
	double opt; /* solved: the optimum; else the lower bound */
	double ub;
};

/* Rows "DIR/FILE,m,opt" or "DIR/FILE,m,LB,UB"; returns how many. */
static size_t read_opt(const char *path, unsigned m, struct opt_row *rows, size_t max)
{
	FILE *f = fopen(path, "r");
	char line[256];
	size_t n = 0;

	if (!f)
		die("cannot read %s%s", path, "");
	while (fgets(line, sizeof(line), f) && n < max) {
		char *field[5], *save = NULL, *tok;
		int nf = 0;

		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		for (tok = strtok_r(line, ",", &save); tok && nf < 5;
		     tok = strtok_r(NULL, ",", &save))
			field[nf++] = tok;
		if ((nf != 3 && nf != 4) || (unsigned)atoi(field[1]) != m)
			die("%s: unexpected row \"%s\"", path, line);
		snprintf(rows[n].file, sizeof(rows[n].file), "%s", wl_basename(field[0]));
		rows[n].solved = nf == 3;
		rows[n].opt = atof(field[2]);
		rows[n].ub = nf == 4 ? atof(field[3]) : rows[n].opt;
		n++;
	}
	fclose(f);
	return n;
}

static const struct opt_row *find_opt(const struct opt_row *rows, size_t n, const char *file)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(rows[i].file, file))
			return &rows[i];
	return NULL;
}

/* ---- planning ----------------------------------------------------------------- */

struct planned {
	double makespan;
	double seconds; /* time plan_schedule took */
};

/* Plans g on m with one policy, checks the schedule and the bound. */
static struct planned plan_one(const struct plan_dag *g, const struct plan_machine *m,
                               const struct policy *p, struct plan_ws *ws, struct plan_slot *slots,
                               double lb, const char *what)
{
	struct plan_opts o = { .method = p->method,
		               .refine_iters = p->refine_iters,
		               .seed = REFINE_SEED };
	struct planned r;
	char why[256];
	double t0 = now_s();
	int rc = plan_schedule(g, m, &o, ws, slots, &r.makespan);

	r.seconds = now_s() - t0;
	if (rc) {
		fprintf(stderr, "bench_stg: %s: plan_schedule (%s) failed: %d\n", what, p->name,
		        rc);
		exit(1);
	}
	if (plan_check(g, m, slots, why, sizeof(why))) {
		fprintf(stderr, "bench_stg: %s: %s schedule is invalid: %s\n", what, p->name, why);
		abort();
	}
	if (!(r.makespan >= lb * (1 - 1e-9) - 1e-12)) {
		fprintf(stderr, "bench_stg: %s: %s makespan %.17g below the lower bound %.17g\n",
		        what, p->name, r.makespan, lb);
		abort();
	}
	return r;
}

static double lower_bound(const struct plan_dag *g, const struct plan_machine *m, const char *what)
{
	double cp = 0, area = 0;
	int rc = plan_lower_bounds(g, m, &cp, &area);

	if (rc) {
		fprintf(stderr, "bench_stg: %s: plan_lower_bounds failed: %d\n", what, rc);
		exit(1);
	}
	return plan_lower_bound(cp, area);
}

/* ---- STG ---------------------------------------------------------------------- */

static void bench_stg_set(const char *data, const char *set, unsigned size)
{
	char dir[4096], path[4200], what[300];
	char *names[MAX_FILES];
	struct workload *w;
	size_t n;

	snprintf(dir, sizeof(dir), "%s/stg/%s", data, set);
	n = list_files(dir, ".stg", names, MAX_FILES);
	if (!n) {
		printf("bench_stg: no .stg files in %s, set skipped\n", dir);
		return;
	}
	w = calloc(n, sizeof(*w));
	if (!w)
		die("%s%s", "out of memory", "");
	for (size_t i = 0; i < n; i++) {
		char err[WL_ERR_MAX];

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (wl_stg_load(path, &w[i], err, sizeof(err)))
			die("%s%s", err, "");
	}

	for (size_t pi = 0; pi < sizeof(stg_procs) / sizeof(stg_procs[0]); pi++) {
		unsigned m = stg_procs[pi];
		static struct opt_row rows[MAX_OPT_ROWS];
		size_t nrows;
		uint16_t node[16] = { 0 };
		const double zero[1] = { 0 };
		struct plan_machine mach = {
			.ndev = m, .node = node, .nnodes = 1, .lat = zero, .inv_bw = zero
		};
		double sum[NPOL] = { 0 }, max[NPOL] = { 0 }, secs[NPOL] = { 0 };
		unsigned at_opt[NPOL] = { 0 }, graphs = 0, unsolved = 0, unlisted = 0, planned = 0;
		struct plan_ws *ws = plan_ws_new();

		if (!ws)
			die("%s%s", "out of memory", "");
		snprintf(path, sizeof(path), "%s/stg/optimal/Case%u_%u_OPT.csv", data, size, m);
		nrows = read_opt(path, m, rows, MAX_OPT_ROWS);
		for (size_t i = 0; i < n; i++) {
			const struct opt_row *row = find_opt(rows, nrows, w[i].name);
			struct plan_slot *slots;
			struct wl_dag d;
			double lb;

			if (!row) {
				unlisted++;
				continue;
			}
			if (wl_to_dag(&w[i], m, NULL, &d))
				die("%s: cannot build the DAG%s", w[i].name, "");
			slots = calloc(w[i].ntasks, sizeof(*slots));
			if (!slots)
				die("%s%s", "out of memory", "");
			snprintf(what, sizeof(what), "%s/%s on %u devices", set, w[i].name, m);
			lb = lower_bound(&d.g, &mach, what);
			/* the published bound (or optimum) is a bound too */
			if (row->opt > lb)
				lb = row->opt;
			planned++;
			if (row->solved)
				graphs++;
			else
				unsolved++;
			for (size_t k = 0; k < NPOL; k++) {
				struct planned r =
				        plan_one(&d.g, &mach, &policies[k], ws, slots, lb, what);

				secs[k] += r.seconds;
				if (!row->solved)
					continue;
				double pct = 100 * (r.makespan - row->opt) / row->opt;

				sum[k] += pct;
				if (pct > max[k])
					max[k] = pct;
				if (r.makespan <= row->opt * (1 + 1e-9))
					at_opt[k]++;
			}
			free(slots);
			wl_dag_free(&d);
		}
		plan_ws_free(ws);
		for (size_t k = 0; k < NPOL; k++) {
			char keys[256];

			snprintf(keys, sizeof(keys),
			         "policy=%s set=%s procs=%u graphs=%u unsolved=%u at_opt=%u "
			         "iters=%u",
			         policies[k].name, set, m, graphs, unsolved, at_opt[k],
			         policies[k].refine_iters);
			printf("BENCH stg_pct_above_opt %.3f pct %s\n",
			       graphs ? sum[k] / graphs : 0, keys);
			printf("BENCH stg_pct_above_opt_max %.3f pct %s\n", max[k], keys);
			printf("BENCH stg_plan_us %.1f us policy=%s set=%s procs=%u iters=%u\n",
			       planned ? 1e6 * secs[k] / planned : 0, policies[k].name, set, m,
			       policies[k].refine_iters);
		}
		if (unlisted)
			printf("bench_stg: %u graphs of %s have no row in Case%u_%u_OPT.csv\n",
			       unlisted, set, size, m);
		fflush(stdout);
	}
	for (size_t i = 0; i < n; i++) {
		wl_free(&w[i]);
		free(names[i]);
	}
	free(w);
}

/* ---- WfCommons ------------------------------------------------------------------ */

#define LINK_BYTES_PER_S 1.25e8
#define LINK_LATENCY_S 50e-6

static void bench_wfcommons(const char *data)
{
	char dir[4096], path[4200], what[300];
	char *names[MAX_FILES];
	size_t n;

	snprintf(dir, sizeof(dir), "%s/wfcommons", data);
	n = list_files(dir, ".json", names, MAX_FILES);
	if (!n) {
		printf("bench_stg: no workflows in %s, skipped\n", dir);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct workload w;
		char err[WL_ERR_MAX], stem[256];

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (wl_wfcommons_load(path, &w, err, sizeof(err)))
			die("%s%s", err, "");
		snprintf(stem, sizeof(stem), "%.*s", (int)(strlen(names[i]) - 5), names[i]);
		for (size_t pi = 0; pi < sizeof(wfc_procs) / sizeof(wfc_procs[0]); pi++) {
			unsigned m = wfc_procs[pi];
			uint16_t node[16];
			double lat[16 * 16], inv_bw[16 * 16];
			struct plan_machine mach = {
				.ndev = m, .node = node, .nnodes = m, .lat = lat, .inv_bw = inv_bw
			};
			struct plan_ws *ws = plan_ws_new();
			struct plan_slot *slots = calloc(w.ntasks, sizeof(*slots));
			struct wl_dag d;
			double lb;

			if (!ws || !slots || wl_to_dag(&w, m, NULL, &d))
				die("%s: cannot build the DAG%s", names[i], "");
			for (unsigned a = 0; a < m; a++) {
				node[a] = (uint16_t)a;
				for (unsigned b = 0; b < m; b++) {
					lat[a * m + b] = a == b ? 0 : LINK_LATENCY_S;
					inv_bw[a * m + b] = a == b ? 0 : 1 / LINK_BYTES_PER_S;
				}
			}
			snprintf(what, sizeof(what), "%s on %u devices", stem, m);
			lb = lower_bound(&d.g, &mach, what);
			for (size_t k = 0; k < 2; k++) { /* heft, peft */
				struct planned r =
				        plan_one(&d.g, &mach, &policies[k], ws, slots, lb, what);

				printf("BENCH wfcommons_makespan_over_lb %.4f ratio policy=%s "
				       "workflow=%s procs=%u\n",
				       lb > 0 ? r.makespan / lb : 1, policies[k].name, stem, m);
			}
			fflush(stdout);
			wl_dag_free(&d);
			free(slots);
			plan_ws_free(ws);
		}
		wl_free(&w);
		free(names[i]);
	}
}

int main(void)
{
	static const char *const candidates[] = { "../shared/benchmarks",
		                                  "../../shared/benchmarks" };
	const char *env = getenv("TANDEM_BENCH_DATA");
	const char *data = NULL;
	char sub[4200];

	if (env && *env) {
		if (is_dir(env))
			data = env;
		else
			printf("bench_stg: %s not found, skipped\n", env);
	} else {
		for (size_t i = 0; i < 2 && !data; i++)
			if (is_dir(candidates[i]))
				data = candidates[i];
		if (!data)
			printf("bench_stg: ../shared/benchmarks not found, skipped\n");
	}
	if (!data)
		return 0;

	snprintf(sub, sizeof(sub), "%s/stg", data);
	if (is_dir(sub)) {
		bench_stg_set(data, "rand50", 50);
		bench_stg_set(data, "rand100", 100);
	} else {
		printf("bench_stg: %s not found, STG skipped\n", sub);
	}
	bench_wfcommons(data);
	return 0;
}
