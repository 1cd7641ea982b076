/* The simulator (sim/sim.c): published schedules reproduced through the
 * trace front end, determinism, lower bounds, kernel workloads with data
 * on a heterogeneous machine, and the errors a user sees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "sim/sim.h"
#include "policies/policy.h"
#include "tandem.h"

/* ---- machines ---- */

/* n processors, each on its own memory node, every link latency 0 and 1
 * byte per ns: an edge's data in bytes is its communication time in ns, as
 * in the papers' graphs. */
static void paper_machine(struct machine *m, unsigned n)
{
	machine_init(m);
	snprintf(m->name, sizeof(m->name), "paper%u", n);
	m->ndevices = n;
	m->nnodes = n + 1;
	for (unsigned d = 0; d < n; d++) {
		struct machine_device *md = &m->dev[d];
		snprintf(md->name, sizeof(md->name), "p%u", d);
		snprintf(md->model, sizeof(md->model), "proc%u", d);
		md->kind = TDM_DEV_GPU;
		md->node = (uint16_t)(d + 1);
		md->mem_bytes = 1ull << 30;
		md->gemm_gflops = 100;
		md->mem_gbps = 10;
		md->launch_ns = 1000;
	}
	for (unsigned a = 0; a < m->nnodes; a++)
		for (unsigned b = 0; b < m->nnodes; b++)
			m->link[a][b] =
			        (struct cal_link){ .gbps = 1, .latency_ns = 0, .measured = true };
}

/* ncpu cores on the host and ngpu accelerators of their own, with cost
 * tables for the Cholesky kernels at one tile size (GPUs ~8x faster on
 * gemm, as on sirocco). */
static void hetero_machine(struct machine *m, unsigned ncpu, unsigned ngpu, uint32_t nb)
{
	machine_init(m);
	snprintf(m->name, sizeof(m->name), "hetero");
	m->ndevices = ncpu + ngpu;
	m->nnodes = ngpu + 1;
	for (unsigned d = 0; d < m->ndevices; d++) {
		struct machine_device *md = &m->dev[d];
		bool gpu = d >= ncpu;
		snprintf(md->name, sizeof(md->name), gpu ? "gpu%u" : "cpu%u", gpu ? d - ncpu : d);
		snprintf(md->model, sizeof(md->model), gpu ? "gpu" : "cpu");
		md->kind = gpu ? TDM_DEV_GPU : TDM_DEV_CPU;
		md->node = (uint16_t)(gpu ? d - ncpu + 1 : 0);
		md->mem_bytes = gpu ? 1ull << 30 : 0;
		md->gemm_gflops = gpu ? 2000 : 50;
		md->mem_gbps = gpu ? 300 : 20;
		md->launch_ns = gpu ? 8000 : 1000;
	}
	for (unsigned a = 0; a < m->nnodes; a++)
		for (unsigned b = 0; b < m->nnodes; b++)
			m->link[a][b] = (struct cal_link){ .gbps = 10,
				                           .latency_ns = 10000,
				                           .measured = true };
	static const struct {
		uint16_t k;
		double cpu_us, gpu_us;
	} tab[] = { { KERNEL_SPOTRF, 3000, 2000 },
		    { KERNEL_STRSM, 5000, 700 },
		    { KERNEL_SSYRK, 5000, 600 },
		    { KERNEL_SGEMM_NT, 9000, 750 } };
	m->costs = calloc(8, sizeof(*m->costs));
	assert_non_null(m->costs);
	for (unsigned i = 0; i < 4; i++)
		for (unsigned g = 0; g < 2; g++) {
			struct machine_cost *c = &m->costs[m->ncosts++];
			struct tdm_kernel_call call = { 0 };
			call.s[0].i64 = nb;
			for (unsigned a = 0; a < TDM_MAX_ARGS; a++)
				call.len[a] = (uint64_t)nb * nb * 4;
			c->kernel = tab[i].k;
			snprintf(c->model, sizeof(c->model), g ? "gpu" : "cpu");
			kernel_by_id(tab[i].k)->features(&call, &c->feat);
			c->ns = 1000 * (g ? tab[i].gpu_us : tab[i].cpu_us);
			c->spread_ns = 0;
		}
}

/* ---- workloads ---- */

struct edge {
	uint32_t u, v;
	double c;
};

/* A 10-task graph with per-processor costs and edge data, built in memory
 * and then read back through the trace front end. */
static void paper_workload(struct workload *out, const double *cost, const struct edge *e,
                           size_t ne)
{
	struct workload w;
	wl_init(&w);
	snprintf(w.name, sizeof(w.name), "paper");
	w.units = WL_UNITS_NS;
	w.ntasks = 10;
	w.tasks = calloc(10, sizeof(*w.tasks));
	w.ndev_cost = 3;
	w.dev_cost = malloc(30 * sizeof(double));
	w.ndev_names = 3;
	w.dev_names = calloc(3, sizeof(*w.dev_names));
	w.nedges = (uint32_t)ne;
	w.edges = calloc(ne, sizeof(*w.edges));
	assert_true(w.tasks && w.dev_cost && w.dev_names && w.edges);
	for (unsigned d = 0; d < 3; d++)
		snprintf(w.dev_names[d], WL_NAME_MAX, "p%u", d);
	for (unsigned v = 0; v < 10; v++) {
		snprintf(w.tasks[v].name, WL_NAME_MAX, "t%u", v);
		w.tasks[v].cost = (cost[v * 3] + cost[v * 3 + 1] + cost[v * 3 + 2]) / 3;
		memcpy(&w.dev_cost[v * 3], &cost[v * 3], 3 * sizeof(double));
	}
	for (size_t i = 0; i < ne; i++)
		w.edges[i] = (struct wl_edge){ e[i].u, e[i].v, e[i].c };

	char *text = NULL, err[WL_ERR_MAX];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	assert_int_equal(wl_trace_write(f, &w), 0);
	fclose(f);
	wl_free(&w);
	int rc = wl_trace_parse(text, len, "paper.trace", out, err, sizeof(err));
	if (rc)
		fail_msg("%s", err);
	free(text);
}

static const double topc_cost[10 * 3] = {
	14, 16, 9, 13, 19, 18, 11, 13, 19, 13, 8,  17, 12, 13, 10,
	13, 16, 9, 7,  15, 11, 5,  11, 14, 18, 12, 20, 21, 7,  16,
};
static const struct edge topc_edges[] = {
	{ 0, 1, 18 }, { 0, 2, 12 }, { 0, 3, 9 },  { 0, 4, 11 }, { 0, 5, 14 },
	{ 1, 7, 19 }, { 1, 8, 16 }, { 2, 6, 23 }, { 3, 7, 27 }, { 3, 8, 23 },
	{ 4, 8, 13 }, { 5, 7, 15 }, { 6, 9, 17 }, { 7, 9, 11 }, { 8, 9, 13 },
};
static const double arab_cost[10 * 3] = {
	22, 21, 36, 22, 18, 18, 32, 27, 43, 7,  10, 4, 29, 27, 35,
	26, 17, 24, 14, 25, 30, 29, 23, 36, 15, 21, 8, 13, 16, 33,
};
static const struct edge arab_edges[] = {
	{ 0, 1, 17 }, { 0, 2, 31 }, { 0, 3, 29 }, { 0, 4, 13 }, { 0, 5, 7 },
	{ 1, 7, 3 },  { 1, 8, 30 }, { 2, 6, 16 }, { 3, 7, 11 }, { 3, 8, 7 },
	{ 4, 8, 57 }, { 5, 7, 5 },  { 6, 9, 9 },  { 7, 9, 42 }, { 8, 9, 7 },
};
#define NEDGES 15

static double simulate(const struct machine *m, const struct workload *w, const char *policy,
                       struct sim_result *r, bool record)
{
	struct sim_opts o = { .policy = policy, .record = record };
	char err[256];
	int rc = sim_run(m, w, &o, r, err, sizeof(err));
	if (rc)
		fail_msg("%s: %s", policy, err);
	return r->makespan_ns;
}

/* Every task ran once, no two overlap on a device, dependencies held. */
static void check_schedule(const struct workload *w, const struct sim_result *r)
{
	assert_int_equal(r->nspans, w->ntasks);
	assert_int_equal(r->tasks, w->ntasks);
	for (uint32_t i = 0; i < w->nedges; i++) {
		const struct sched_span *a = &r->spans[w->edges[i].src],
		                        *b = &r->spans[w->edges[i].dst];
		assert_true(b->start_ns >= a->end_ns);
	}
	for (uint32_t v = 0; v < w->ntasks; v++)
		for (uint32_t u = v + 1; u < w->ntasks && u < v + 400; u++) {
			const struct sched_span *a = &r->spans[v], *b = &r->spans[u];
			if (a->device != b->device || a->end_ns == a->start_ns ||
			    b->end_ns == b->start_ns)
				continue;
			assert_true(a->end_ns <= b->start_ns || b->end_ns <= a->start_ns);
		}
}

/* ---- tests ---- */

static void test_golden_heft_topcuoglu(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	paper_machine(&m, 3);
	paper_workload(&w, topc_cost, topc_edges, NEDGES);
	assert_true(simulate(&m, &w, "heft", &r, true) == 80);
	check_schedule(&w, &r);
	assert_true(r.lower_bound_ns > 0 && r.lower_bound_ns <= 80);
	sim_result_free(&r);
	wl_free(&w);
	machine_free(&m);
}

static void test_golden_arabnejad(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	paper_machine(&m, 3);
	paper_workload(&w, arab_cost, arab_edges, NEDGES);
	assert_true(simulate(&m, &w, "peft", &r, true) == 122);
	check_schedule(&w, &r);
	sim_result_free(&r);
	assert_true(simulate(&m, &w, "heft", &r, false) == 133);
	sim_result_free(&r);
	wl_free(&w);
	machine_free(&m);
}

static char *chrome_bytes(const struct sim_result *r, size_t *len)
{
	struct sched_view v;
	char *text = NULL;
	FILE *f = open_memstream(&text, len);
	assert_non_null(f);
	sim_schedule_view(r, "t", &v);
	assert_int_equal(sched_write_chrome(f, &v), 0);
	fclose(f);
	return text;
}

/* The same inputs give the same schedule, byte for byte, for every policy. */
static void test_deterministic(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	char err[256];
	struct wl_random_params p = { .n = 300,
		                      .ccr = 1,
		                      .alpha = 1,
		                      .out_degree = 3,
		                      .beta = 1,
		                      .ndev = 4,
		                      .w_dag = 50,
		                      .seed = 7 };
	paper_machine(&m, 4);
	wl_init(&w);
	if (wl_gen_random(&p, &w, err, sizeof(err)))
		fail_msg("%s", err);
	for (const struct policy_ops *const *pol = policy_list(); *pol; pol++) {
		struct sim_result a, b;
		size_t la, lb;
		simulate(&m, &w, (*pol)->name, &a, true);
		simulate(&m, &w, (*pol)->name, &b, true);
		char *ta = chrome_bytes(&a, &la), *tb = chrome_bytes(&b, &lb);
		assert_int_equal(la, lb);
		assert_memory_equal(ta, tb, la);
		assert_true(a.makespan_ns == b.makespan_ns);
		assert_int_equal(a.bytes_moved, b.bytes_moved);
		free(ta);
		free(tb);
		sim_result_free(&a);
		sim_result_free(&b);
	}
	wl_free(&w);
	machine_free(&m);
}

/* No policy beats the lower bound; each gives a valid schedule. */
static void test_lower_bound_respected(void **state)
{
	(void)state;
	struct machine m;
	char err[256];
	paper_machine(&m, 4);
	for (uint64_t seed = 1; seed <= 6; seed++) {
		struct workload w;
		struct wl_random_params p = { .n = 120,
			                      .ccr = seed % 3 ? 0.5 : 5,
			                      .alpha = 1,
			                      .out_degree = 3,
			                      .beta = 1.5,
			                      .ndev = 4,
			                      .w_dag = 40,
			                      .seed = seed };
		wl_init(&w);
		if (wl_gen_random(&p, &w, err, sizeof(err)))
			fail_msg("%s", err);
		for (const struct policy_ops *const *pol = policy_list(); *pol; pol++) {
			struct sim_result r;
			simulate(&m, &w, (*pol)->name, &r, true);
			check_schedule(&w, &r);
			assert_true(r.lower_bound_ns > 0);
			assert_true(r.makespan_ns >= r.lower_bound_ns * (1 - 1e-9));
			assert_true(r.slr >= 1 - 1e-9);
			sim_result_free(&r);
		}
		wl_free(&w);
	}
	machine_free(&m);
}

/* Kernel tasks with buffers: data moves to the accelerators, the devices'
 * busy time is the tables' cost of what they ran, cost-aware policies use
 * the fast devices, and nobody beats the bound. */
static void test_cholesky_on_hetero(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	char err[256];
	hetero_machine(&m, 4, 2, 512);
	wl_init(&w);
	if (wl_gen_tiled(WL_TILED_CHOLESKY, 10, 512, &w, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(w.ntasks, 220);
	double eager = 0, dmda = 0;
	for (const struct policy_ops *const *pol = policy_list(); *pol; pol++) {
		struct sim_result r;
		double ms = simulate(&m, &w, (*pol)->name, &r, true);
		check_schedule(&w, &r);
		assert_true(ms >= r.lower_bound_ns * (1 - 1e-9));
		assert_true(r.bytes_moved > 0);
		uint64_t busy = 0, want = 0;
		for (unsigned d = 0; d < r.ndevices; d++)
			busy += r.busy_ns[d];
		for (uint32_t v = 0; v < w.ntasks; v++)
			want += r.spans[v].end_ns - r.spans[v].start_ns;
		assert_int_equal(busy, want);
		if (!strcmp((*pol)->name, "eager"))
			eager = ms;
		if (!strcmp((*pol)->name, "dmda"))
			dmda = ms;
		assert_false(r.fallback);
		sim_result_free(&r);
	}
	/* GPUs are ~10x faster on most of the work: placing by cost wins. */
	assert_true(dmda < eager);
	wl_free(&w);
	machine_free(&m);
}

/* Many graphs arriving over time from two clients. */
static void test_arrivals(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	const char *text = "{\"tandem_trace\":1}\n"
	                   "{\"graph\":1,\"arrival_ns\":0,\"client\":1,\"tasks\":2}\n"
	                   "{\"task\":0,\"cost_ns\":1000}\n"
	                   "{\"task\":1,\"cost_ns\":1000,\"after\":[0]}\n"
	                   "{\"graph\":2,\"arrival_ns\":50000,\"client\":2,\"tasks\":1}\n"
	                   "{\"task\":0,\"cost_ns\":500}\n";
	char err[WL_ERR_MAX];
	struct sim_result r;
	paper_machine(&m, 2);
	wl_init(&w);
	if (wl_trace_parse(text, strlen(text), "arr.trace", &w, err, sizeof(err)))
		fail_msg("%s", err);
	simulate(&m, &w, "dmda", &r, true);
	/* The second graph starts when it arrives: the makespan runs from the
	 * first arrival to its end. */
	assert_true(r.spans[2].start_ns >= 50000);
	assert_true(r.makespan_ns == 50500);
	assert_int_equal(r.graphs, 2);
	sim_result_free(&r);
	wl_free(&w);
	machine_free(&m);
}

static void test_errors(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	char err[256];
	struct sim_opts o = { .policy = "nosuch" };
	struct wl_random_params p = { .n = 20,
		                      .ccr = 1,
		                      .alpha = 1,
		                      .out_degree = 2,
		                      .beta = 0.5,
		                      .ndev = 3,
		                      .w_dag = 10,
		                      .seed = 1 };
	paper_machine(&m, 2);
	wl_init(&w);
	assert_int_equal(wl_gen_random(&p, &w, err, sizeof(err)), 0);
	assert_int_equal(sim_run(&m, &w, &o, &r, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "unknown policy"));
	o.policy = "eager";
	/* Costs for 3 devices on a 2-device machine. */
	assert_int_equal(sim_run(&m, &w, &o, &r, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "3 devices"));
	wl_free(&w);
	machine_free(&m);
}

/* A machine of CPU cores only (item 2 of issue 14: the STG case), as a user
 * describes it, and an STG diamond written out here:
 *
 *   entry 0 (dummy) -> a=1 (2) -> b=2 (5), c=3 (3), d=4 (4), e=5 (1) -> f=6 (2) -> exit 7
 *
 * Four branches on four identical cores: every task can start when its
 * predecessors end, so the makespan is the critical path a, b, f:
 * 2 + 5 + 2 = 9 units, 9 ms at the default 1e6 ns per unit, against 17
 * units on one core. STG graphs carry no data, so nothing moves. */
static const char cores4_toml[] = "name = \"cores4\"\n"
                                  "[device.cpu]\n"
                                  "kind = \"cpu\"\n"
                                  "model = \"core\"\n"
                                  "count = 4\n"
                                  "gflops = 50\n"
                                  "mem_gbps = 10\n"
                                  "launch_ns = 2000\n";
static const char diamond_stg[] = "6\n"
                                  "0 0 0\n"
                                  "1 2 1 0\n"
                                  "2 5 1 1\n"
                                  "3 3 1 1\n"
                                  "4 4 1 1\n"
                                  "5 1 1 1\n"
                                  "6 2 4 2 3 4 5\n"
                                  "7 0 1 6\n";

static void test_cores_only(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	char err[256];
	assert_int_equal(
	        machine_parse(cores4_toml, strlen(cores4_toml), "cores4", &m, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 4);
	assert_int_equal(m.nnodes, 1);
	wl_init(&w);
	assert_int_equal(
	        wl_stg_parse(diamond_stg, strlen(diamond_stg), "diamond.stg", &w, err, sizeof(err)),
	        0);
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct sim_result r;
		double ms = simulate(&m, &w, (*p)->name, &r, true) / 1e6;
		if (ms != 9.0)
			fail_msg("%s: makespan %.3f ms, not 9", (*p)->name, ms);
		check_schedule(&w, &r);
		assert_true(r.lower_bound_ns == 9e6);
		assert_true(r.seq_ns == 17e6);
		assert_int_equal(r.bytes_moved, 0);
		assert_int_equal(r.fallback, 0);
		sim_result_free(&r);
	}
	wl_free(&w);
	machine_free(&m);
}

/* A task skipped in the recorded run (guarded, its router sent it no
 * token) is replayed as the engine ran it: completed at no cost when its
 * predecessor ends, never handed to the policy. A chain of three sgemm
 * tasks whose middle one was skipped takes what the two others take. */
static void test_skipped_replayed(void **state)
{
#define ARGS "\"args\":[[0,\"r\"],[0,\"r\"],[0,\"rw\"]]"
	(void)state;
	static const char chain[] =
	        "{\"tandem_trace\":1}\n{\"buffer\":0,\"bytes\":4096}\n"
	        "{\"graph\":0,\"tasks\":3}\n"
	        "{\"task\":0,\"kernel\":\"sgemm\",\"flops\":5e6," ARGS "}\n"
	        "{\"task\":1,\"kernel\":\"sgemm\",\"flops\":5e6," ARGS ",\"after\":[0]%s}\n"
	        "{\"task\":2,\"kernel\":\"sgemm\",\"flops\":5e6," ARGS ",\"after\":[1]}\n";
	struct machine m;
	char text[512], err[WL_ERR_MAX];
	assert_int_equal(
	        machine_parse(cores4_toml, strlen(cores4_toml), "cores4", &m, err, sizeof(err)), 0);
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct workload ran, skipped;
		struct sim_result a, b;
		snprintf(text, sizeof(text), chain, "");
		assert_int_equal(wl_trace_parse(text, strlen(text), "ran", &ran, err, sizeof(err)),
		                 0);
		snprintf(text, sizeof(text), chain, ",\"skipped\":true");
		assert_int_equal(
		        wl_trace_parse(text, strlen(text), "skipped", &skipped, err, sizeof(err)),
		        0);
		double all = simulate(&m, &ran, (*p)->name, &a, true);
		double two = simulate(&m, &skipped, (*p)->name, &b, true);
		double one = a.spans[0].end_ns - a.spans[0].start_ns;
		if (!(one > 0 && two < all && two == b.spans[2].end_ns - b.spans[0].start_ns &&
		      b.spans[1].start_ns == b.spans[0].end_ns &&
		      b.spans[1].end_ns == b.spans[1].start_ns &&
		      b.spans[2].start_ns >= b.spans[0].end_ns))
			fail_msg("%s: all %.0f ns, skipped %.0f ns (task 1 %llu..%llu)", (*p)->name,
			         all, two, (unsigned long long)b.spans[1].start_ns,
			         (unsigned long long)b.spans[1].end_ns);
		assert_int_equal(b.tasks, 3);
		uint64_t on = 0;
		for (unsigned d = 0; d < m.ndevices; d++)
			on += b.tasks_on[d];
		assert_int_equal(on, 2); /* the skipped one ran nowhere */
		sim_result_free(&a);
		sim_result_free(&b);
		wl_free(&ran);
		wl_free(&skipped);
	}
	machine_free(&m);
#undef ARGS
}

/* An accelerator on a memory node the machine lacks (a description built
 * by hand, past the parser): the engine refuses it and says why. */
static void test_engine_refusal_named(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	char err[256];
	struct sim_opts o = { .policy = "heft" };
	assert_int_equal(
	        machine_parse(cores4_toml, strlen(cores4_toml), "cores4", &m, err, sizeof(err)), 0);
	for (unsigned d = 2; d < 4; d++) {
		m.dev[d].kind = TDM_DEV_GPU;
		m.dev[d].node = (uint16_t)(d - 1);
		m.dev[d].mem_bytes = 1ull << 30;
	}
	m.nnodes = 2; /* node 1 is cpu2's; cpu3's node 2 is not there */
	wl_init(&w);
	assert_int_equal(
	        wl_stg_parse(diamond_stg, strlen(diamond_stg), "diamond.stg", &w, err, sizeof(err)),
	        0);
	int rc = sim_run(&m, &w, &o, &r, err, sizeof(err));
	assert_int_not_equal(rc, 0);
	assert_null(strstr(err, "invalid argument"));
	if (!strstr(err, "cpu3") || !strstr(err, "node 2"))
		fail_msg("the message does not name the device and its node: %s", err);
	wl_free(&w);
	machine_free(&m);
}

/* ---- shared cores ---- */

/* ncpu cores (cpu0 ...) and nacc OpenCL CPU devices (cl0 ..., nodes 1 ...)
 * that run on the cores of mask (bit j: cpu j); links cost nothing. */
static void shared_machine(struct machine *m, unsigned ncpu, unsigned nacc, uint64_t mask)
{
	machine_init(m);
	snprintf(m->name, sizeof(m->name), "shared");
	m->ndevices = ncpu + nacc;
	m->nnodes = nacc + 1;
	for (unsigned d = 0; d < m->ndevices; d++) {
		struct machine_device *md = &m->dev[d];
		bool acc = d >= ncpu;
		snprintf(md->name, sizeof(md->name), acc ? "cl%u" : "cpu%u", acc ? d - ncpu : d);
		snprintf(md->model, sizeof(md->model), acc ? "pocl" : "core");
		md->kind = acc ? TDM_DEV_CLCPU : TDM_DEV_CPU;
		md->node = (uint16_t)(acc ? d - ncpu + 1 : 0);
		md->mem_bytes = acc ? 1ull << 30 : 0;
		md->gemm_gflops = 10;
		md->mem_gbps = 10;
		md->launch_ns = 0;
		md->shares_cores = acc ? mask : 0;
	}
	for (unsigned a = 0; a < m->nnodes; a++)
		for (unsigned b = 0; b < m->nnodes; b++)
			m->link[a][b] = (struct cal_link){ .gbps = 1, .measured = true };
}

/* A trace in text form, read into w (named in its errors). */
static void parse_trace(const char *text, const char *name, struct workload *w)
{
	char err[WL_ERR_MAX];
	wl_init(w);
	if (wl_trace_parse(text, strlen(text), name, w, err, sizeof(err)))
		fail_msg("%s", err);
}

/* A task on a core that reads what an accelerator wrote waits for the
 * bytes to come back: the residency reads them back synchronously, and the
 * core's worker waits for that copy before its kernel starts. Each kernel
 * is priced for one device's model only, so each has one place to run. */
static void test_read_back_delays_core_task(void **state)
{
	(void)state;
	static const char machine[] = "name = \"readback\"\n"
	                              "[device.cpu0]\nkind = \"cpu\"\nmodel = \"core\"\n"
	                              "gflops = 10\nmem_gbps = 10\nlaunch_ns = 0\n"
	                              "[device.gpu0]\nkind = \"gpu\"\nmodel = \"gpu\"\nnode = 1\n"
	                              "mem_gib = 1\ngflops = 1000\nmem_gbps = 100\nlaunch_ns = 0\n"
	                              "[link.0-1]\ngbps = 1\nlatency_ns = 10000\n"
	                              "[link.1-0]\ngbps = 1\nlatency_ns = 10000\n"
	                              "[cost.gpu.sgemm]\nflops = [ 1000 ]\nbytes = [ 1000 ]\n"
	                              "domain = [ 1000 ]\nns = [ 1000000 ]\n"
	                              "[cost.core.spotrf]\nflops = [ 1000 ]\nbytes = [ 1000 ]\n"
	                              "domain = [ 1000 ]\nns = [ 2000000 ]\n";
#define FEAT "\"flops\":1000,\"bytes\":1000,\"domain\":1000"
	static const char trace[] =
	        "{\"tandem_trace\":1}\n{\"buffer\":0,\"bytes\":1000000}\n"
	        "{\"graph\":0,\"tasks\":2}\n"
	        "{\"task\":0,\"kernel\":\"sgemm\"," FEAT
	        ",\"args\":[[0,\"r\"],[0,\"r\"],[0,\"rw\"]]}\n"
	        "{\"task\":1,\"kernel\":\"spotrf\"," FEAT ",\"args\":[[0,\"rw\"]],\"after\":[0]}\n";
#undef FEAT
	struct machine m;
	struct workload w;
	char err[256];
	assert_int_equal(machine_parse(machine, strlen(machine), "readback", &m, err, sizeof(err)),
	                 0);
	parse_trace(trace, "readback.trace", &w);
	/* A copy of the buffer, either way: latency + 1e6 bytes at 1 byte/ns.
	 * The links are idle otherwise, so each task starts when its copy
	 * ends. */
	const double copy_ns = 1e4 + 1e6;
	for (const struct policy_ops *const *p = policy_list(); *p; p++) {
		struct sim_result r;
		simulate(&m, &w, (*p)->name, &r, true);
		const struct sched_span *gemm = &r.spans[0], *potrf = &r.spans[1];
		if (gemm->device != 1 || potrf->device != 0 || gemm->start_ns != copy_ns ||
		    potrf->start_ns != gemm->end_ns + copy_ns)
			fail_msg("%s: sgemm on %u at %llu..%llu, spotrf on %u at %llu..%llu",
			         (*p)->name, gemm->device, (unsigned long long)gemm->start_ns,
			         (unsigned long long)gemm->end_ns, potrf->device,
			         (unsigned long long)potrf->start_ns,
			         (unsigned long long)potrf->end_ns);
		sim_result_free(&r);
	}
	wl_free(&w);
	machine_free(&m);
}

/* Independent tasks of 1 ms, task i only on the devices of node[i]. */
static void pinned_tasks(struct workload *w, unsigned ndev, const unsigned *dev_node,
                         const unsigned *node, unsigned n)
{
	char text[2048];
	int len = snprintf(text, sizeof(text), "{\"tandem_trace\":1,\"devices\":[");
	for (unsigned d = 0; d < ndev; d++)
		len += snprintf(text + len, sizeof(text) - (size_t)len, "%s\"d%u\"", d ? "," : "",
		                d);
	len += snprintf(text + len, sizeof(text) - (size_t)len, "]}\n{\"graph\":0,\"tasks\":%u}\n",
	                n);
	for (unsigned i = 0; i < n; i++) {
		len += snprintf(text + len, sizeof(text) - (size_t)len,
		                "{\"task\":%u,\"cost_ns\":[", i);
		for (unsigned d = 0; d < ndev; d++)
			len += snprintf(text + len, sizeof(text) - (size_t)len, "%s%s",
			                d ? "," : "", dev_node[d] == node[i] ? "1e6" : "-1");
		len += snprintf(text + len, sizeof(text) - (size_t)len, "]}\n");
	}
	parse_trace(text, "pinned.trace", w);
}

/* The model of docs/simulation.md ("Shared cores") with busy_core_share
 * and core_slice_ns 0, as a machine built in code has them: a core worker
 * keeps its core; a device on shared cores runs at the share of its cores
 * no core worker is busy on, each idle core split among the devices busy
 * on it. With tasks of 1 ms started together: */
static void test_shared_cores(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	static const char *const policies[] = { "eager", "dmda", "heft" };

	for (unsigned p = 0; p < 3; p++) {
		/* One core, and the accelerator on it: the core's task first, then
		 * the accelerator's, 2 ms; 1 ms when they do not share. */
		static const unsigned n1[] = { 0, 1 }, t1[] = { 0, 1 };
		pinned_tasks(&w, 2, n1, t1, 2);
		shared_machine(&m, 1, 1, 0);
		assert_true(simulate(&m, &w, policies[p], &r, true) == 1e6);
		sim_result_free(&r);
		shared_machine(&m, 1, 1, 0x1);
		assert_true(simulate(&m, &w, policies[p], &r, true) == 2e6);
		assert_true(r.spans[0].end_ns == 1e6 && r.spans[1].end_ns == 2e6);
		assert_true(r.spans[1].device == 1);
		sim_result_free(&r);
		wl_free(&w);

		/* Two cores, one busy for 1 ms: the accelerator on both runs at
		 * half speed meanwhile (0.5 ms of its work), then at full: 1.5 ms. */
		static const unsigned n2[] = { 0, 0, 1 };
		pinned_tasks(&w, 3, n2, t1, 2);
		shared_machine(&m, 2, 1, 0x3);
		assert_true(simulate(&m, &w, policies[p], &r, true) == 1.5e6);
		assert_true(r.spans[0].end_ns == 1e6 && r.spans[1].end_ns == 1.5e6);
		sim_result_free(&r);
		wl_free(&w);

		/* Two accelerators on one idle core share it: 2 ms each. */
		static const unsigned n3[] = { 0, 1, 2 }, t3[] = { 1, 2 };
		pinned_tasks(&w, 3, n3, t3, 2);
		shared_machine(&m, 1, 2, 0x1);
		assert_true(simulate(&m, &w, policies[p], &r, true) == 2e6);
		assert_true(r.spans[0].end_ns == 2e6 && r.spans[1].end_ns == 2e6);
		sim_result_free(&r);
		shared_machine(&m, 1, 2, 0);
		assert_true(simulate(&m, &w, policies[p], &r, true) == 1e6);
		sim_result_free(&r);
		wl_free(&w);
	}
}

/* The measured refinements of that model (docs/simulation.md, "Shared
 * cores"): a device on shared cores keeps busy_core_share of a core whose
 * worker computes, and a worker computing while the device is busy loses
 * its core for core_slice_ns once per core_slice_every_ns of its compute. */
static void test_core_contention(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	static const char *const policies[] = { "eager", "dmda", "heft" };

	for (unsigned p = 0; p < 3; p++) {
		/* Two cores, one busy for 1 ms, the accelerator on both keeping
		 * half of the busy one: 0.75 ms of its work meanwhile, then the
		 * rest at full speed: 1.25 ms (1.5 ms with none of it). */
		static const unsigned n2[] = { 0, 0, 1 }, t1[] = { 0, 1 };
		pinned_tasks(&w, 3, n2, t1, 2);
		shared_machine(&m, 2, 1, 0x3);
		m.dev[2].busy_core_share = 0.5;
		assert_true(simulate(&m, &w, policies[p], &r, true) == 1.25e6);
		assert_true(r.spans[0].end_ns == 1e6 && r.spans[1].end_ns == 1.25e6);
		sim_result_free(&r);
		wl_free(&w);

		/* One core and the accelerator on it, which keeps nothing of a
		 * busy core but takes a 2 ms slice per 1.5 ms of the worker's
		 * compute while it is busy. Three core tasks of 1 ms and the
		 * accelerator's X of 10 ms: the first task starts before X (the
		 * core looks first), the second has 1 ms of compute behind it,
		 * the third 2 ms: it loses 2 ms, when X computes, and ends at
		 * 5 ms (3 ms without slices); X gets 2 ms of its work done by
		 * then and ends at 13 ms either way: the core is one. */
		parse_trace("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cl0\"]}\n"
		            "{\"graph\":0,\"tasks\":4}\n"
		            "{\"task\":0,\"cost_ns\":[-1,1e7]}\n"
		            "{\"task\":1,\"cost_ns\":[1e6,-1]}\n"
		            "{\"task\":2,\"cost_ns\":[1e6,-1]}\n"
		            "{\"task\":3,\"cost_ns\":[1e6,-1]}\n",
		            "slices.trace", &w);
		for (int sliced = 0; sliced < 2; sliced++) {
			shared_machine(&m, 1, 1, 0x1);
			m.dev[1].core_slice_ns = sliced ? 2e6 : 0;
			m.dev[1].core_slice_every_ns = 1.5e6;
			assert_true(simulate(&m, &w, policies[p], &r, true) == 13e6);
			assert_true(r.spans[0].device == 1 && r.spans[0].end_ns == 13e6);
			uint64_t last = 0;
			for (unsigned v = 1; v < 4; v++) {
				assert_int_equal(r.spans[v].device, 0);
				if (r.spans[v].end_ns > last)
					last = r.spans[v].end_ns;
			}
			if (last != (sliced ? 5e6 : 3e6))
				fail_msg("%s: the core's last task ends at %.3f ms with%s slices",
				         policies[p], last / 1e6, sliced ? "" : "out");
			sim_result_free(&r);
		}
		wl_free(&w);
	}
}

/* A machine with wake_ns: idle workers spin spin_us, then sleep and start
 * wake_ns after a wake-up (docs/simulation.md, "Waking workers"). */
static void start_pair(const struct sim_result *r, unsigned x, unsigned y, uint64_t *first,
                       uint64_t *second)
{
	const struct sched_span *a = &r->spans[x], *b = &r->spans[y];
	assert_int_not_equal(a->device, b->device);
	*first = a->start_ns < b->start_ns ? a->start_ns : b->start_ns;
	*second = a->start_ns < b->start_ns ? b->start_ns : a->start_ns;
}

static void test_wake_ups(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	static const char *const policies[] = { "eager", "dmda", "heft" };

	/* A0 (1 ms) and A1 (0.5 ms) come in at 0; A0 releases B and C; D
	 * and E come in at 5 ms. */
	parse_trace("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cpu1\"]}\n"
	            "{\"graph\":0,\"arrival_ns\":0,\"tasks\":4}\n"
	            "{\"task\":0,\"name\":\"A0\",\"cost_ns\":[1e6,1e6]}\n"
	            "{\"task\":1,\"name\":\"A1\",\"cost_ns\":[5e5,5e5]}\n"
	            "{\"task\":2,\"name\":\"B\",\"cost_ns\":[1e6,1e6],\"after\":[0]}\n"
	            "{\"task\":3,\"name\":\"C\",\"cost_ns\":[1e6,1e6],\"after\":[0]}\n"
	            "{\"graph\":1,\"arrival_ns\":5e6,\"tasks\":2}\n"
	            "{\"task\":0,\"name\":\"D\",\"cost_ns\":[1e6,1e6]}\n"
	            "{\"task\":1,\"name\":\"E\",\"cost_ns\":[1e6,1e6]}\n",
	            "wake.trace", &w);
	for (unsigned p = 0; p < 3; p++) {
		for (int c = 0; c < 4; c++) {
			/* c = 0: no wake_ns; 1: the default spin (50 us); 2: a spin
			 * of 2 ms; 3: none */
			static const double spin_us[] = { 0, 0, 2000, -1 };
			struct sim_opts o = { .policy = policies[p],
				              .record = true,
				              .spin_us = spin_us[c] };
			uint64_t wake = c ? 20000 : 0, first, second;
			char err[256];
			shared_machine(&m, 2, 0, 0);
			m.wake_ns = (double)wake;
			if (sim_run(&m, &w, &o, &r, err, sizeof(err)))
				fail_msg("%s: %s", policies[p], err);
			/* The doorbell wakes one core, which takes the graph in
			 * and one root; the engine wakes the other for the other. */
			start_pair(&r, 0, 1, &first, &second);
			assert_true(first == 0 && second == wake);
			/* The core that ran A0 takes B or C at once; the other ran
			 * A1 and, 0.5 ms idle, sleeps (unless it spins 2 ms): woken
			 * for the other, it starts wake_ns later. */
			uint64_t a0 = r.spans[0].end_ns;
			start_pair(&r, 2, 3, &first, &second);
			if (first != a0 || second != a0 + (c == 2 ? 0 : wake))
				fail_msg("%s, case %d: A0 ends at %.3f ms, B and C start at %.3f "
				         "and %.3f",
				         policies[p], c, a0 / 1e6, first / 1e6, second / 1e6);
			/* Both sleep at 5 ms: as at 0. */
			start_pair(&r, 4, 5, &first, &second);
			assert_true(first == 5000000 && second == 5000000 + wake);
			assert_true(r.makespan_ns == 6e6 + (double)wake);
			sim_result_free(&r);
		}
	}
	wl_free(&w);
}

/* A task released when a worker's task ends goes to a worker that spins,
 * when one does: the releasing worker still completes its task (learning
 * the sample) while the spinning one sees the release at once. One core
 * runs A (1 ms), the other Z (0.5 ms) and then idles; B follows A. Spinning
 * 2 ms, the other core takes B as A ends; with the default spin (50 us) it
 * sleeps by then, and A's core takes B itself; without wake_ns too. */
static void test_spinner_takes_release(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	static const char *const pull[] = { "eager", "ws", "fifo" };

	parse_trace("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cpu1\"]}\n"
	            "{\"graph\":0,\"arrival_ns\":0,\"tasks\":3}\n"
	            "{\"task\":0,\"name\":\"A\",\"cost_ns\":[1e6,1e6]}\n"
	            "{\"task\":1,\"name\":\"Z\",\"cost_ns\":[5e5,5e5]}\n"
	            "{\"task\":2,\"name\":\"B\",\"cost_ns\":[1e6,1e6],\"after\":[0]}\n",
	            "release.trace", &w);
	for (unsigned p = 0; p < 3; p++) {
		for (int c = 0; c < 3; c++) {
			/* c = 0: spin 2 ms; 1: the default spin; 2: no wake_ns */
			struct sim_opts o = { .policy = pull[p],
				              .record = true,
				              .spin_us = c == 0 ? 2000 : 0 };
			char err[256];
			shared_machine(&m, 2, 0, 0);
			m.wake_ns = c == 2 ? 0 : 20000;
			if (sim_run(&m, &w, &o, &r, err, sizeof(err)))
				fail_msg("%s: %s", pull[p], err);
			unsigned a = r.spans[0].device, want = c == 0 ? 1 - a : a;
			assert_int_equal(r.spans[1].device, 1 - a);
			if (r.spans[2].device != want || r.spans[2].start_ns != r.spans[0].end_ns)
				fail_msg("%s, case %d: A on cpu%u ends at %.3f ms, B on cpu%u at "
				         "%.3f ms (expected cpu%u, at once)",
				         pull[p], c, a, r.spans[0].end_ns / 1e6, r.spans[2].device,
				         r.spans[2].start_ns / 1e6, want);
			check_schedule(&w, &r);
			sim_result_free(&r);
			machine_free(&m);
		}
	}
	wl_free(&w);
}

/* Devices look for work as the daemon's workers do (docs/simulation.md,
 * "The driver"), under the pull policies, whose choice depends on who
 * looks first. */
static void test_looks_as_workers_do(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	static const char *const pull[] = { "eager", "ws", "fifo" };

	for (unsigned p = 0; p < 3; p++) {
		/* A device with a task in flight takes no more until it
		 * completes: cl0 runs X (10 ms); A's successors C and D
		 * (1 ms anywhere), released at 1 ms while cl0 computes, both
		 * go to cpu0, one after the other, not D behind X on cl0. */
		parse_trace("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cl0\"]}\n"
		            "{\"graph\":0,\"tasks\":4}\n"
		            "{\"task\":0,\"name\":\"X\",\"cost_ns\":[-1,1e7]}\n"
		            "{\"task\":1,\"name\":\"A\",\"cost_ns\":[1e6,-1]}\n"
		            "{\"task\":2,\"name\":\"C\",\"cost_ns\":[1e6,1e6],\"after\":[1]}\n"
		            "{\"task\":3,\"name\":\"D\",\"cost_ns\":[1e6,1e6],\"after\":[1]}\n",
		            "busy.trace", &w);
		shared_machine(&m, 1, 1, 0);
		double ms = simulate(&m, &w, pull[p], &r, true) / 1e6;
		if (ms != 10.0 || r.spans[2].device != 0 || r.spans[3].device != 0)
			fail_msg("%s: makespan %.3f ms, C on %u, D on %u (expected 10 ms, both on "
			         "cpu0)",
			         pull[p], ms, r.spans[2].device, r.spans[3].device);
		check_schedule(&w, &r);
		sim_result_free(&r);
		wl_free(&w);
		machine_free(&m);

		/* The worker whose task completed looks first: cpu0 takes A
		 * (1 ms), cpu1 B (2 ms); cpu1 ends B and takes its successor
		 * C, though cpu0 (idle since 1 ms) comes first in device order. */
		parse_trace("{\"tandem_trace\":1,\"devices\":[\"cpu0\",\"cpu1\"]}\n"
		            "{\"graph\":0,\"tasks\":3}\n"
		            "{\"task\":0,\"name\":\"A\",\"cost_ns\":[1e6,1e6]}\n"
		            "{\"task\":1,\"name\":\"B\",\"cost_ns\":[2e6,2e6]}\n"
		            "{\"task\":2,\"name\":\"C\",\"cost_ns\":[1e6,1e6],\"after\":[1]}\n",
		            "taker.trace", &w);
		shared_machine(&m, 2, 0, 0);
		ms = simulate(&m, &w, pull[p], &r, true) / 1e6;
		if (ms != 3.0 || r.spans[2].device != 1)
			fail_msg("%s: makespan %.3f ms, C on %u (expected 3 ms, on cpu1)", pull[p],
			         ms, r.spans[2].device);
		sim_result_free(&r);
		wl_free(&w);
		machine_free(&m);
	}
}

/* ~1M simulated tasks per second is the target; here only that a large
 * workload goes through and the engine's time per task is reported. */
static void test_large(void **state)
{
	(void)state;
	struct machine m;
	struct workload w;
	struct sim_result r;
	char err[256];
	hetero_machine(&m, 4, 4, 960);
	wl_init(&w);
	assert_int_equal(wl_gen_tiled(WL_TILED_CHOLESKY, 30, 960, &w, err, sizeof(err)), 0);
	simulate(&m, &w, "dmda", &r, false);
	assert_int_equal(r.tasks, w.ntasks);
	assert_true(r.engine_ns > 0 && r.wall_ns >= r.engine_ns);
	sim_result_free(&r);
	wl_free(&w);
	machine_free(&m);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_heft_topcuoglu),
		cmocka_unit_test(test_golden_arabnejad),
		cmocka_unit_test(test_deterministic),
		cmocka_unit_test(test_lower_bound_respected),
		cmocka_unit_test(test_cholesky_on_hetero),
		cmocka_unit_test(test_arrivals),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_cores_only),
		cmocka_unit_test(test_skipped_replayed),
		cmocka_unit_test(test_engine_refusal_named),
		cmocka_unit_test(test_read_back_delays_core_task),
		cmocka_unit_test(test_shared_cores),
		cmocka_unit_test(test_core_contention),
		cmocka_unit_test(test_wake_ups),
		cmocka_unit_test(test_spinner_takes_release),
		cmocka_unit_test(test_looks_as_workers_do),
		cmocka_unit_test(test_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
