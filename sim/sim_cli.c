/* `tandemd --simulate`: options, machine and workload lookup, one run per
 * policy, and the outputs (table or JSON, Chrome trace, SVG Gantt). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "sim/elastic.h"
#include "sim/llm_sim.h"
#include "sim/moe_sim.h"
#include "sim/sim.h"
#include "sim/sim_spec.h"
#include "policies/policy.h"
#include "tandem.h"

#define MAX_POLICIES 16

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: tandemd --simulate -m MACHINE -w WORKLOAD [OPTIONS]\n"
	        "Replays a workload on a described machine with the daemon's own engine,\n"
	        "policies and cost models on a virtual clock, and prints one row per policy.\n"
	        "\n"
	        "  -m, --machine FILE|NAME  machine description (TOML, docs/machines.md); a NAME\n"
	        "                           is looked up as NAME.toml in $TANDEM_MACHINE_DIR, "
	        "then\n"
	        "                           ./machines, then next to the binary (../../machines,\n"
	        "                           ../share/tandem/machines)\n"
	        "  -w, --workload SPEC      FILE.stg            Standard Task Graph Set\n"
	        "                           FILE.json           WfCommons instance\n"
	        "                           FILE.trace|.jsonl   tandem trace (tandemctl trace)\n"
	        "                           cholesky:T[:NB]     tiled factorisations, T x T tiles\n"
	        "                           lu:T[:NB], qr:T[:NB]  of NB x NB (default 960)\n"
	        "                           random:n=N,ccr=X,alpha=X,out=N,beta=X,seed=N\n"
	        "                                               HEFT-paper random DAG\n"
	        "                           layered:n=N,p=P,costs=uniform|bimodal,seed=N[,ccr=X]\n"
	        "                                   [,levels=L]\n"
	        "                                               layered random DAG (about\n"
	        "                                               sqrt(N) levels, edges to earlier\n"
	        "                                               levels with probability P)\n"
	        "                           llm:model=M,trace=T[,requests=N,host_gbps=X,...]\n"
	        "                                               LLM serving (docs/llm.md): M\n"
	        "                                               llama2-7b|llama3.1-8b, T conv|\n"
	        "                                               code|FILE.csv (Azure format);\n"
	        "                                               policies tandem, gpu_only,\n"
	        "                                               neo, apex, serial, nkvo\n"
	        "                           moe:model=M,budget=PCT,batch=B[,prefill=P,...]\n"
	        "                                               MoE experts across CPU and GPU\n"
	        "                                               (docs/llm.md): M mixtral-8x7b|\n"
	        "                                               dsv2-lite|qwen1.5-moe; policies\n"
	        "                                               tandem, static, ncpumoe, hot,\n"
	        "                                               hybrimoe, lru, belady\n"
	        "  -p, --policy LIST        comma-separated policies, or all (default: all)\n"
	        "      --restrict KIND=N,.. keep the first N devices of each kind (cpu=4,gpu=4)\n"
	        "      --unit-ns X          abstract workloads: ns per cost unit (default 1e6)\n"
	        "      --unit-bytes X       abstract workloads: bytes per data unit (default 1e6)\n"
	        "      --refine N           heft/peft: extra candidate orders ([policy]\n"
	        "                           plan_refine_iters, default 0)\n"
	        "      --no-repair          heft/peft: never re-plan on drift\n"
	        "      --spin-us N          the daemon's workers spin N us before they sleep\n"
	        "                           (its spin_us, default 50; matters with the\n"
	        "                           machine's wake_ns)\n"
	        "      --trace-out FILE     Chrome/Perfetto trace JSON of the schedule (with\n"
	        "                           several policies: FILE gets .POLICY before its "
	        "suffix)\n"
	        "      --svg FILE           SVG Gantt chart (same naming)\n"
	        "      --events SPEC|@FILE  scale events (docs/elastic-sim.md): 't=5ms add gpu1;\n"
	        "                           t=12ms drain gpu0; t=20ms remove cpu3; t=30ms budget\n"
	        "                           gpu0=8GiB'; with llm:/moe: the serving runs through\n"
	        "                           them (keys model, batch, prompt, output, duration,\n"
	        "                           seed, util)\n"
	        "      --restart            llm:/moe: with --events, each event stops, "
	        "reconfigures\n"
	        "                           and restarts the server instead of applying it live\n"
	        "      --json               print the table as JSON\n"
	        "  -h, --help               show this help\n"
	        "\n"
	        "Everything printed is deterministic except decision time (wall clock).\n");
}

/* ---- machine and workload ---- */

static bool is_path(const char *s)
{
	size_t n = strlen(s);
	return strchr(s, '/') || (n > 5 && strcmp(s + n - 5, ".toml") == 0);
}

static int load_machine(const char *spec, const char *argv0, struct machine *m, char *err,
                        size_t errlen)
{
	char path[PATH_MAX + 128], exe[PATH_MAX];
	const char *dirs[4];
	size_t nd = 0;

	if (is_path(spec))
		return machine_load(spec, m, err, errlen);
	for (const char *c = spec; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		      *c == '_')) {
			snprintf(err, errlen, "--machine: %s: not a file and not a machine name",
			         spec);
			return -TDM_EINVAL;
		}
	const char *env = getenv("TANDEM_MACHINE_DIR");
	if (env && *env)
		dirs[nd++] = env;
	dirs[nd++] = "machines";
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char rel1[PATH_MAX + 32], rel2[PATH_MAX + 32];
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		snprintf(rel1, sizeof(rel1), "%s/../../machines", exe);
		snprintf(rel2, sizeof(rel2), "%s/../share/tandem/machines", exe);
		dirs[nd++] = rel1;
		dirs[nd++] = rel2;
	}
	(void)argv0;
	for (size_t i = 0; i < nd; i++) {
		if (snprintf(path, sizeof(path), "%s/%s.toml", dirs[i], spec) >= (int)sizeof(path))
			continue;
		if (access(path, R_OK) == 0)
			return machine_load(path, m, err, errlen);
	}
	snprintf(err, errlen, "--machine: no machine named %s (looked for %s.toml in %s%s)", spec,
	         spec, env && *env ? "$TANDEM_MACHINE_DIR, " : "",
	         "./machines and next to the binary");
	return -TDM_EINVAL;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > UINT32_MAX || *s == '-')
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v == v))
		return -1;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

static int random_key(void *ctx, const char *kv, const char *v, char *err, size_t errlen)
{
	struct wl_random_params *p = ctx;
	uint32_t u;
	double d;
	int bad;

	if (!strcmp(kv, "n"))
		bad = parse_u32(v, &u) || !(p->n = u);
	else if (!strcmp(kv, "ccr"))
		bad = parse_double(v, &d) || (p->ccr = d, 0);
	else if (!strcmp(kv, "alpha"))
		bad = parse_double(v, &d) || (p->alpha = d, 0);
	else if (!strcmp(kv, "out"))
		bad = parse_u32(v, &u) || (p->out_degree = u, 0);
	else if (!strcmp(kv, "beta"))
		bad = parse_double(v, &d) || (p->beta = d, 0);
	else if (!strcmp(kv, "wdag"))
		bad = parse_double(v, &d) || (p->w_dag = d, 0);
	else if (!strcmp(kv, "seed"))
		bad = parse_u64(v, &p->seed);
	else {
		snprintf(err, errlen,
		         "--workload random: unknown parameter \"%s\" (n, ccr, "
		         "alpha, out, beta, wdag, seed)",
		         kv);
		return -1;
	}
	if (bad)
		snprintf(err, errlen, "--workload random: bad parameter \"%s\"", kv);
	return bad ? -1 : 0;
}

static int gen_random(const char *args, uint32_t ndev, struct workload *w, char *err, size_t errlen)
{
	struct wl_random_params p = { .n = 100,
		                      .ccr = 1,
		                      .alpha = 1,
		                      .out_degree = 3,
		                      .beta = 0.5,
		                      .ndev = ndev,
		                      .w_dag = 0,
		                      .seed = 1 };
	if (sim_spec_each("random", args, random_key, &p, err, errlen))
		return -TDM_EINVAL;
	return wl_gen_random(&p, w, err, errlen);
}

static int layered_key(void *ctx, const char *kv, const char *v, char *err, size_t errlen)
{
	struct wl_layered_params *p = ctx;
	uint32_t u;
	double d;
	int bad;

	if (!strcmp(kv, "n"))
		bad = parse_u32(v, &u) || !(p->n = u);
	else if (!strcmp(kv, "p"))
		bad = parse_double(v, &d) || (p->p = d, 0);
	else if (!strcmp(kv, "ccr"))
		bad = parse_double(v, &d) || (p->ccr = d, 0);
	else if (!strcmp(kv, "levels"))
		bad = parse_u32(v, &u) || (p->levels = u, 0);
	else if (!strcmp(kv, "costs")) {
		bad = strcmp(v, "uniform") && strcmp(v, "bimodal");
		p->costs = strcmp(v, "bimodal") ? WL_LAYERED_UNIFORM : WL_LAYERED_BIMODAL;
	} else if (!strcmp(kv, "seed"))
		bad = parse_u64(v, &p->seed);
	else {
		snprintf(err, errlen,
		         "--workload layered: unknown parameter \"%s\" (n, p, "
		         "costs, "
		         "ccr, levels, seed)",
		         kv);
		return -1;
	}
	if (bad)
		snprintf(err, errlen, "--workload layered: bad parameter \"%s\"", kv);
	return bad ? -1 : 0;
}

static int gen_layered(const char *args, struct workload *w, char *err, size_t errlen)
{
	struct wl_layered_params p = { .n = 100, .p = 0.1, .costs = WL_LAYERED_UNIFORM, .seed = 1 };
	if (sim_spec_each("layered", args, layered_key, &p, err, errlen))
		return -TDM_EINVAL;
	return wl_gen_layered(&p, w, err, errlen);
}

static int load_workload(const char *spec, uint32_t ndev, struct workload *w, char *err,
                         size_t errlen)
{
	static const struct {
		const char *prefix;
		enum wl_tiled_kind kind;
	} tiled[] = { { "cholesky:", WL_TILED_CHOLESKY },
		      { "lu:", WL_TILED_LU },
		      { "qr:", WL_TILED_QR } };
	for (size_t i = 0; i < sizeof(tiled) / sizeof(tiled[0]); i++) {
		size_t n = strlen(tiled[i].prefix);
		if (strncmp(spec, tiled[i].prefix, n))
			continue;
		char buf[64];
		uint32_t t, nb = 960;
		snprintf(buf, sizeof(buf), "%s", spec + n);
		char *colon = strchr(buf, ':');
		if (colon)
			*colon = '\0';
		if (parse_u32(buf, &t) || (colon && parse_u32(colon + 1, &nb))) {
			snprintf(err, errlen, "--workload %s: expected %sTILES[:NB]", spec,
			         tiled[i].prefix);
			return -TDM_EINVAL;
		}
		return wl_gen_tiled(tiled[i].kind, t, nb, w, err, errlen);
	}
	if (!strncmp(spec, "random:", 7))
		return gen_random(spec + 7, ndev, w, err, errlen);
	if (!strcmp(spec, "random"))
		return gen_random("", ndev, w, err, errlen);
	if (!strncmp(spec, "layered:", 8))
		return gen_layered(spec + 8, w, err, errlen);
	if (!strcmp(spec, "layered"))
		return gen_layered("", w, err, errlen);
	if (ends_with(spec, ".stg"))
		return wl_stg_load(spec, w, err, errlen);
	if (ends_with(spec, ".json"))
		return wl_wfcommons_load(spec, w, err, errlen);
	if (ends_with(spec, ".trace") || ends_with(spec, ".jsonl"))
		return wl_trace_load(spec, w, err, errlen);
	snprintf(err, errlen,
	         "--workload %s: unknown kind (.stg, .json, .trace, .jsonl, cholesky:, lu:, qr:, "
	         "random:, layered:)",
	         spec);
	return -TDM_EINVAL;
}

static int restrict_machine(struct machine *m, const char *spec, char *err, size_t errlen)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		uint32_t n;
		int kind = -1;
		if (eq) {
			*eq = '\0';
			for (int k = 0; k < TDM_DEV_KIND_COUNT; k++)
				if (!strcmp(kv, device_kind_name((enum tdm_device_kind)k)))
					kind = k;
		}
		if (!eq || kind < 0 || parse_u32(eq + 1, &n)) {
			snprintf(err, errlen,
			         "--restrict: expected KIND=N (cpu, clcpu, gpu, npu), got \"%s\"",
			         kv);
			return -TDM_EINVAL;
		}
		int rc = machine_restrict(m, (enum tdm_device_kind)kind, n, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- outputs ---- */

/* FILE, or FILE with ".policy" before its suffix when several policies run. */
static void out_name(const char *path, const char *policy, bool several, char *out, size_t len)
{
	const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
	if (!several) {
		snprintf(out, len, "%s", path);
		return;
	}
	if (!dot || (slash && dot < slash))
		snprintf(out, len, "%s.%s", path, policy);
	else
		snprintf(out, len, "%.*s.%s%s", (int)(dot - path), path, policy, dot);
}

static int write_schedule(const char *path, const struct sim_result *r, const char *title, bool svg)
{
	struct sched_view v;
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "tandemd: %s: %s\n", path, strerror(errno));
		return -1;
	}
	sim_schedule_view(r, title, &v);
	int rc = svg ? sched_write_svg(f, &v, 0) : sched_write_chrome(f, &v);
	if (fclose(f) || rc) {
		fprintf(stderr, "tandemd: %s: write failed\n", path);
		return -1;
	}
	return 0;
}

static double util(const struct sim_result *r, unsigned d)
{
	return r->makespan_ns > 0 ? (double)r->busy_ns[d] / r->makespan_ns : 0;
}

static double decision_us(const struct sim_result *r)
{
	return r->tasks ? r->engine_ns / 1e3 / (double)r->tasks : 0;
}

/* A trace recorded from a real run: its makespan (first arrival to last
 * end, ns); 0 when the tasks carry no recorded times. */
static double recorded_makespan(const struct workload *w)
{
	double first = 0, last = 0;
	bool any = false;
	for (uint32_t v = 0; v < w->ntasks; v++) {
		if (!w->tasks[v].rec_device)
			return 0;
		if (w->tasks[v].rec_end_ns > last)
			last = w->tasks[v].rec_end_ns;
	}
	for (uint32_t g = 0; g < w->ngraphs; g++) {
		if (!any || w->graphs[g].arrival_ns < first)
			first = w->graphs[g].arrival_ns;
		any = true;
	}
	return last > first ? last - first : 0;
}

static void print_table(const struct machine *m, const struct workload *w,
                        const struct sim_result *rs, size_t n)
{
	printf("workload %s: %u tasks, %u graphs; machine %s: %u devices\n", w->name, w->ntasks,
	       w->ngraphs ? w->ngraphs : 1, m->name, m->ndevices);
	double rec = recorded_makespan(w);
	if (rec > 0)
		printf("recorded run: makespan_ms %.3f\n", rec / 1e6);
	printf("%-8s %12s %12s %7s %7s %8s %12s %10s  %s\n", "policy", "makespan_ms", "bound_ms",
	       "ratio", "slr", "speedup", "moved_MB", "decide_us", "utilisation");
	for (size_t i = 0; i < n; i++) {
		const struct sim_result *r = &rs[i];
		double lo = 1, hi = 0, sum = 0;
		for (unsigned d = 0; d < r->ndevices; d++) {
			double u = util(r, d);
			lo = u < lo ? u : lo;
			hi = u > hi ? u : hi;
			sum += u;
		}
		printf("%-8s %12.3f %12.3f %7.3f %7.3f %8.3f %12.3f %10.3f  mean %.0f%% "
		       "(%.0f-%.0f%%)%s\n",
		       r->policy, r->makespan_ns / 1e6, r->lower_bound_ns / 1e6,
		       r->lower_bound_ns > 0 ? r->makespan_ns / r->lower_bound_ns : 0, r->slr,
		       r->speedup, (double)r->bytes_moved / 1e6, decision_us(r),
		       r->ndevices ? 100 * sum / r->ndevices : 0, 100 * lo, 100 * hi,
		       r->fallback ? "  [watchdog: fell back to fifo]" : "");
	}
	if (n && rs[0].ndevices <= 16) {
		printf("\nutilisation %%");
		for (unsigned d = 0; d < rs[0].ndevices; d++)
			printf(" %7s", rs[0].devname[d]);
		printf("\n");
		for (size_t i = 0; i < n; i++) {
			printf("%-13s", rs[i].policy);
			for (unsigned d = 0; d < rs[i].ndevices; d++)
				printf(" %7.1f", 100 * util(&rs[i], d));
			printf("\n");
		}
	}
}

/* Each scale event's outcome, per policy (times in ms of virtual time). */
static void print_events(const struct sim_result *rs, size_t n)
{
	if (!n || !rs[0].nevents)
		return;
	printf("\n%-8s %-36s %10s %4s %6s %10s %13s\n", "policy", "event", "applied_ms", "rc",
	       "busy", "empty_ms", "first_task_ms");
	for (size_t i = 0; i < n; i++)
		for (uint32_t k = 0; k < rs[i].nevents; k++) {
			const struct sim_event_result *x = &rs[i].events[k];
			char txt[96];
			scale_event_format(&x->ev, txt, sizeof(txt));
			if (!x->applied) {
				printf("%-8s %-36s %10s (after the last task)\n", rs[i].policy, txt,
				       "-");
				continue;
			}
			printf("%-8s %-36s %10.3f %4d %6u %10.3f %13.3f\n", rs[i].policy, txt,
			       x->applied_ns / 1e6, x->rc, x->busy,
			       x->empty_ns >= 0 ? x->empty_ns / 1e6 : -1,
			       x->first_task_ns >= 0 ? x->first_task_ns / 1e6 : -1);
		}
}

static json_t *events_json(const struct sim_result *r)
{
	json_t *a = json_array();
	for (uint32_t k = 0; a && k < r->nevents; k++) {
		const struct sim_event_result *x = &r->events[k];
		char txt[96];
		scale_event_format(&x->ev, txt, sizeof(txt));
		json_t *o = json_pack("{s:s,s:b,s:i,s:f,s:i,s:f,s:f}", "event", txt, "applied",
		                      x->applied, "rc", x->rc, "applied_at", x->applied_ns / 1e9,
		                      "busy", (int)x->busy, "empty_at",
		                      x->empty_ns >= 0 ? x->empty_ns / 1e9 : -1.0, "first_task_at",
		                      x->first_task_ns >= 0 ? x->first_task_ns / 1e9 : -1.0);
		if (!o || json_array_append_new(a, o)) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static int print_json(const struct machine *m, const struct workload *w,
                      const struct sim_result *rs, size_t n)
{
	json_t *doc = json_object(), *pol = json_array(), *devs = json_array();
	if (!doc || !pol || !devs)
		goto nomem;
	for (unsigned d = 0; d < m->ndevices; d++)
		json_array_append_new(devs, json_string(m->dev[d].name));
	json_object_set_new(doc, "machine", json_string(m->name));
	json_object_set_new(doc, "workload", json_string(w->name));
	json_object_set_new(doc, "tasks", json_integer(w->ntasks));
	json_object_set_new(doc, "devices", devs);
	json_object_set_new(doc, "time_unit", json_string("s"));
	if (recorded_makespan(w) > 0)
		json_object_set_new(doc, "recorded_makespan",
		                    json_real(recorded_makespan(w) / 1e9));
	for (size_t i = 0; i < n; i++) {
		const struct sim_result *r = &rs[i];
		json_t *u = json_object();
		if (!u)
			goto nomem;
		for (unsigned d = 0; d < r->ndevices; d++)
			json_object_set_new(u, r->devname[d], json_real(util(r, d)));
		json_t *o = json_pack(
		        "{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:f, s:o, s:b}",
		        "policy", r->policy, "makespan", r->makespan_ns / 1e9, "lower_bound",
		        r->lower_bound_ns / 1e9, "makespan_over_lb",
		        r->lower_bound_ns > 0 ? r->makespan_ns / r->lower_bound_ns : 0.0, "slr",
		        r->slr, "speedup", r->speedup, "critical_path", r->cp_ns / 1e9,
		        "bytes_moved", (json_int_t)r->bytes_moved, "copies", (json_int_t)r->copies,
		        "tasks", (json_int_t)r->tasks, "decision_us_per_task", decision_us(r),
		        "utilisation", u, "fallback", r->fallback);
		if (!o)
			goto nomem;
		if (r->nevents) {
			json_t *evs = events_json(r);
			if (!evs || json_object_set_new(o, "events", evs)) {
				json_decref(o);
				goto nomem;
			}
		}
		json_array_append_new(pol, o);
	}
	json_object_set_new(doc, "policies", pol);
	pol = NULL;
	if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)))
		goto nomem;
	printf("\n");
	json_decref(doc);
	return 0;
nomem:
	json_decref(doc);
	json_decref(pol);
	fprintf(stderr, "tandemd: out of memory\n");
	return -1;
}

/* ---- main ---- */

static int pick_policies(const char *list, const char **names, size_t *n)
{
	static char buf[512];
	*n = 0;
	if (!list || !strcmp(list, "all")) {
		for (const struct policy_ops *const *p = policy_list(); *p && *n < MAX_POLICIES;
		     p++)
			names[(*n)++] = (*p)->name;
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save = NULL, *s = strtok_r(buf, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		if (!policy_by_name(s)) {
			fprintf(stderr, "tandemd: unknown policy \"%s\" (try --list-policies)\n",
			        s);
			return -1;
		}
		if (*n == MAX_POLICIES) {
			fprintf(stderr, "tandemd: at most %d policies\n", MAX_POLICIES);
			return -1;
		}
		names[(*n)++] = s;
	}
	return *n ? 0 : -1;
}

int sim_main(int argc, char **argv)
{
	enum {
		OPT_SIM = 256,
		OPT_RESTRICT,
		OPT_UNIT_NS,
		OPT_UNIT_BYTES,
		OPT_REFINE,
		OPT_NO_REPAIR,
		OPT_SPIN_US,
		OPT_TRACE,
		OPT_SVG,
		OPT_JSON,
		OPT_EVENTS,
		OPT_RESTART
	};
	static const struct option opts[] = {
		{ "simulate", no_argument, NULL, OPT_SIM },
		{ "machine", required_argument, NULL, 'm' },
		{ "workload", required_argument, NULL, 'w' },
		{ "policy", required_argument, NULL, 'p' },
		{ "restrict", required_argument, NULL, OPT_RESTRICT },
		{ "unit-ns", required_argument, NULL, OPT_UNIT_NS },
		{ "unit-bytes", required_argument, NULL, OPT_UNIT_BYTES },
		{ "refine", required_argument, NULL, OPT_REFINE },
		{ "no-repair", no_argument, NULL, OPT_NO_REPAIR },
		{ "spin-us", required_argument, NULL, OPT_SPIN_US },
		{ "trace-out", required_argument, NULL, OPT_TRACE },
		{ "svg", required_argument, NULL, OPT_SVG },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "events", required_argument, NULL, OPT_EVENTS },
		{ "restart", no_argument, NULL, OPT_RESTART },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *machine_spec = NULL, *workload_spec = NULL, *policies = NULL,
	           *restrict_spec = NULL;
	const char *trace_out = NULL, *svg_out = NULL;
	struct sim_opts so = { 0 };
	struct policy_tuning tuning = policy_tuning_defaults;
	bool json = false, restart = false;
	const char *events = NULL;
	struct scale_events ev = { 0 };
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "m:w:p:h", opts, NULL)) != -1) {
		uint32_t u;
		switch (opt) {
		case OPT_SIM: break;
		case 'm': machine_spec = optarg; break;
		case 'w': workload_spec = optarg; break;
		case 'p': policies = optarg; break;
		case OPT_RESTRICT: restrict_spec = optarg; break;
		case OPT_UNIT_NS:
		case OPT_UNIT_BYTES: {
			double v;
			if (parse_double(optarg, &v) || !(v > 0) || v > 1e15) {
				fprintf(stderr, "tandemd: --%s: expected a positive number\n",
				        opt == OPT_UNIT_NS ? "unit-ns" : "unit-bytes");
				return 2;
			}
			*(opt == OPT_UNIT_NS ? &so.unit_ns : &so.unit_bytes) = v;
			break;
		}
		case OPT_REFINE:
			if (parse_u32(optarg, &u) || u > 10000) {
				fprintf(stderr, "tandemd: --refine: expected 0..10000\n");
				return 2;
			}
			tuning.plan_refine_iters = u;
			break;
		case OPT_NO_REPAIR: tuning.plan_repair = false; break;
		case OPT_SPIN_US:
			if (parse_u32(optarg, &u) || u > 10000) {
				fprintf(stderr,
				        "tandemd: --spin-us: expected 0..10000 (as spin_us)\n");
				return 2;
			}
			so.spin_us = u ? (double)u : -1;
			break;
		case OPT_TRACE: trace_out = optarg; break;
		case OPT_SVG: svg_out = optarg; break;
		case OPT_JSON: json = true; break;
		case OPT_EVENTS: events = optarg; break;
		case OPT_RESTART: restart = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tandemd: --simulate: unexpected argument: %s\n", argv[optind]);
		return 2;
	}
	if (!machine_spec || !workload_spec) {
		fprintf(stderr, "tandemd: --simulate needs --machine and --workload\n");
		usage(stderr);
		return 2;
	}
	if (restart && !events) {
		fprintf(stderr, "tandemd: --restart goes with --events (and llm: or moe:)\n");
		return 2;
	}
	if (restart && strncmp(workload_spec, "llm:", 4) && strncmp(workload_spec, "moe:", 4)) {
		fprintf(stderr, "tandemd: --restart is for llm: and moe: workloads\n");
		return 2;
	}
	if (!strncmp(workload_spec, "llm:", 4) || !strncmp(workload_spec, "moe:", 4)) {
		static struct machine lm;
		char lerr[512];
		int lrc = 1;
		machine_init(&lm);
		if (load_machine(machine_spec, argv[0], &lm, lerr, sizeof(lerr)))
			fprintf(stderr, "%s\n", lerr);
		else if (events)
			lrc = es_cli(&lm, workload_spec[0] == 'm', workload_spec + 4, events,
			             restart, json);
		else
			lrc = workload_spec[0] == 'l'
			              ? llm_sim_cli(&lm, workload_spec + 4, policies, json)
			              : moe_sim_cli(&lm, workload_spec + 4, policies, json);
		machine_free(&lm);
		return lrc;
	}
	const char *names[MAX_POLICIES];
	size_t npol;
	if (pick_policies(policies, names, &npol))
		return 2;
	/* Simulated policies are judged, not debugged: warnings only. */
	log_set_level(LOG_WARN);

	static struct machine m;
	struct workload w;
	char err[512];
	int rc = 1;
	machine_init(&m);
	wl_init(&w);
	if (load_machine(machine_spec, argv[0], &m, err, sizeof(err)) ||
	    (restrict_spec && restrict_machine(&m, restrict_spec, err, sizeof(err))) ||
	    load_workload(workload_spec, m.ndevices, &w, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	if (events) {
		char *text;
		size_t len;
		if (sim_events_text(events, &text, &len, err, sizeof(err)) ||
		    scale_events_parse(text, len, events[0] == '@' ? events + 1 : "--events", &ev,
		                       err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			free(text);
			rc = 2;
			goto out;
		}
		free(text);
		so.events = &ev;
	}
	struct sim_result *rs = calloc(npol, sizeof(*rs));
	if (!rs) {
		fprintf(stderr, "tandemd: out of memory\n");
		goto out;
	}
	so.tuning = &tuning;
	so.record = trace_out || svg_out;
	size_t done = 0;
	for (; done < npol; done++) {
		so.policy = names[done];
		if (sim_run(&m, &w, &so, &rs[done], err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", names[done], err);
			break;
		}
		char title[160], path[PATH_MAX];
		snprintf(title, sizeof(title), "%s on %s / %s", w.name, m.name, names[done]);
		if (trace_out) {
			out_name(trace_out, names[done], npol > 1, path, sizeof(path));
			if (write_schedule(path, &rs[done], title, false))
				break;
		}
		if (svg_out) {
			out_name(svg_out, names[done], npol > 1, path, sizeof(path));
			if (write_schedule(path, &rs[done], title, true))
				break;
		}
		sim_result_free(&rs[done]); /* the figures stay */
	}
	if (done == npol)
		rc = json ? (print_json(&m, &w, rs, npol) ? 1 : 0)
		          : (print_table(&m, &w, rs, npol), print_events(rs, npol), 0);
	for (size_t i = 0; i < npol; i++) {
		sim_result_free(&rs[i]);
		sim_result_free_events(&rs[i]);
	}
	free(rs);
out:
	scale_events_free(&ev);
	wl_free(&w);
	machine_free(&m);
	return rc;
}
