/* Scale events in simulation (docs/elastic-sim.md): the text form
 * (workload/scale_events.h), devices absent at start in a machine
 * description, the checks against a machine (sim_events_check) and LLM /
 * MoE serving through the events, live and by restart (sim/elastic.h). */
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/log.h"
#include "sim/elastic.h"
#include "sim/machine.h"
#include "sim/sim.h"
#include "workload/workload.h"
#include "workload/scale_events.h"
#include "tandem.h"

/* Two T4s as machines/t4x2-xeon.toml has them: gpu1 joins later. */
static const char t4x2[] = "name = \"t4x2\"\n"
                           "[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ncount = 8\n"
                           "gflops = 70\nmem_gbps = 12\nsocket_gbps = 140.8\nlaunch_ns = 2000\n"
                           "[device.gpu0]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 1\n"
                           "mem_gib = 16\ngflops = 8100\nfp16_gflops = 65000\nmem_gbps = 320\n"
                           "launch_ns = 8000\n"
                           "[device.gpu1]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 2\n"
                           "present = false\nmem_gib = 16\ngflops = 8100\nfp16_gflops = 65000\n"
                           "mem_gbps = 320\nlaunch_ns = 8000\n"
                           "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n"
                           "[link.0-2]\ngbps = 12\nlatency_ns = 10000\n";

/* Two H100s with NVLink between them (machines/h100x2.toml). */
static const char h100x2[] = "name = \"h100x2\"\n"
                             "[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ncount = 32\n"
                             "gflops = 90\nmem_gbps = 16\nsocket_gbps = 307\nlaunch_ns = 2000\n"
                             "[device.gpu0]\nkind = \"gpu\"\nmodel = \"h100\"\nnode = 1\n"
                             "mem_gib = 80\ngflops = 67000\nfp16_gflops = 989000\n"
                             "mem_gbps = 3350\nlaunch_ns = 6000\n"
                             "[device.gpu1]\nkind = \"gpu\"\nmodel = \"h100\"\nnode = 2\n"
                             "present = false\nmem_gib = 80\ngflops = 67000\n"
                             "fp16_gflops = 989000\nmem_gbps = 3350\nlaunch_ns = 6000\n"
                             "[link.0-1]\ngbps = 50\nlatency_ns = 10000\n"
                             "[link.0-2]\ngbps = 50\nlatency_ns = 10000\n"
                             "[link.1-2]\ngbps = 360\nlatency_ns = 10000\n";

static void load(const char *text, struct machine *m)
{
	char err[512];
	int rc = machine_parse(text, strlen(text), "test", m, err, sizeof(err));
	if (rc)
		fail_msg("%s", err);
}

static void parse_ok(const char *text, struct scale_events *ev)
{
	char err[512];
	int rc = scale_events_parse(text, strlen(text), "test", ev, err, sizeof(err));
	if (rc)
		fail_msg("%s: %s", text, err);
}

static void test_parse_valid(void **state)
{
	struct scale_events ev;
	char buf[128];

	(void)state;
	parse_ok("t=5ms add gpu1; t=12ms drain gpu0\n# a comment; t=1s add gpu9\n"
	         "t=20ms remove cpu3;t=1us budget gpu0=8GiB # shrink\n\n t=1.5ms resume gpu0 ",
	         &ev);
	assert_int_equal(ev.n, 5);
	/* By time; the text's order kept in index. */
	assert_int_equal(ev.ev[0].kind, SCALE_BUDGET);
	assert_true(ev.ev[0].t_ns == 1000 && ev.ev[0].bytes == 8ull << 30);
	assert_string_equal(ev.ev[0].dev, "gpu0");
	assert_int_equal(ev.ev[0].index, 3);
	assert_true(ev.ev[1].kind == SCALE_RESUME && ev.ev[1].t_ns == 1500000);
	assert_true(ev.ev[2].kind == SCALE_ADD && ev.ev[2].t_ns == 5000000);
	assert_string_equal(ev.ev[2].dev, "gpu1");
	assert_true(ev.ev[3].kind == SCALE_DRAIN && ev.ev[3].t_ns == 12000000);
	assert_true(ev.ev[4].kind == SCALE_REMOVE && ev.ev[4].t_ns == 20000000);
	assert_string_equal(ev.ev[4].dev, "cpu3");
	/* Written back, each parses to itself. */
	for (uint32_t i = 0; i < ev.n; i++) {
		struct scale_events one;
		scale_event_format(&ev.ev[i], buf, sizeof(buf));
		parse_ok(buf, &one);
		assert_int_equal(one.n, 1);
		assert_true(one.ev[0].t_ns == ev.ev[i].t_ns && one.ev[0].kind == ev.ev[i].kind &&
		            one.ev[0].bytes == ev.ev[i].bytes);
		assert_string_equal(one.ev[0].dev, ev.ev[i].dev);
		scale_events_free(&one);
	}
	scale_events_free(&ev);
	/* Events of one time stay in text order; units; nothing at all. */
	parse_ok("t=2s drain gpu0; t=2000ms add gpu1; t=2000000us budget gpu1=1500MB", &ev);
	assert_int_equal(ev.n, 3);
	for (uint32_t i = 0; i < 3; i++)
		assert_true(ev.ev[i].t_ns == 2000000000ull && ev.ev[i].index == i);
	assert_true(ev.ev[2].bytes == 1500000000ull);
	scale_events_free(&ev);
	parse_ok("  # nothing\n;;\n", &ev);
	assert_int_equal(ev.n, 0);
	scale_events_free(&ev);
}

static void expect_error(const char *text, size_t len, const char *want)
{
	struct scale_events ev;
	char err[512] = "";
	int rc = scale_events_parse(text, len, "test", &ev, err, sizeof(err));
	if (rc != -TDM_EINVAL || !strstr(err, want) || strncmp(err, "test: ", 6))
		fail_msg("\"%.60s\": rc %d, \"%s\", wanted \"%s\"", text, rc, err, want);
	assert_true(ev.n == 0 && ev.ev == NULL);
}

static void test_parse_errors(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "t=5 add gpu1", "t: 5 has no unit (ns, us, ms, s)" },
		{ "t=5min add gpu1", "t: unknown unit \"min\"" },
		{ "t=ms add gpu1", "t: \"ms\" does not start with a decimal number" },
		{ "t=-5ms add gpu1", "does not start with a decimal number" },
		{ "t=5.ms add gpu1", "does not start with a decimal number" },
		{ "add gpu1 t=5ms", "event 1 (column 1): expected t=TIME first" },
		{ "t=5ms grow gpu1", "event 1 (column 7): unknown action \"grow\"" },
		{ "t=5ms", "missing the action after the time" },
		{ "t=5ms add", "add: expected a device name" },
		{ "t=5ms add GPU1", "add: expected a device name" },
		{ "t=5ms add gpu-1", "add: a device name is a-z, 0-9 and _" },
		{ "t=5ms add gpu1 now", "unexpected text after the event" },
		{ "t=5ms budget gpu0", "budget: expected DEVICE=SIZE" },
		{ "t=5ms budget gpu0=0GiB", "budget: 0GiB is out of range" },
		{ "t=5ms budget gpu0=2048TiB", "budget: 2048TiB is out of range" },
		{ "t=5ms budget gpu0=8XB", "budget: unknown unit \"XB\"" },
		{ "t=5ms budget gpu0=8", "budget: 8 has no unit" },
		{ "t=2000000s add gpu1", "t: 2000000s is out of range" },
		{ "t=1ms add gpu1; t=2ms bogus gpu0", "event 2 (column 23): unknown action" },
		{ "t=1ms add gpu1\nt=2ms add\tgpu1\x01",
		  "event 2 (column 15): a control character" },
		{ "t=1ms add aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		  "a device name of more than 31" },
		{ "t=12345678901234567890123456789012ms add gpu1", "a number of more than 31" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(cases[i].text, strlen(cases[i].text), cases[i].want);
	/* A NUL inside the text, too many events, too long a text. */
	expect_error("t=1ms add gpu1\0x", 16, "a control character (0x00)");
	size_t n = (SCALE_MAX_EVENTS + 1) * 16;
	char *many = malloc(n + 1), *p = many;
	assert_non_null(many);
	for (uint32_t i = 0; i <= SCALE_MAX_EVENTS; i++)
		p += sprintf(p, "t=%uus add g%u;", i, i % 10);
	expect_error(many, strlen(many), "more than 1024 events");
	free(many);
	char *big = calloc(1, SCALE_MAX_INPUT + 2);
	assert_non_null(big);
	memset(big, ' ', SCALE_MAX_INPUT + 1);
	expect_error(big, SCALE_MAX_INPUT + 1, "bytes, at most");
	free(big);
}

static void test_machine_present(void **state)
{
	static struct machine m;
	char err[512];
	const char *bad = "[device.gpu0]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 1\nmem_gib = 16\n"
	                  "gflops = 8100\nmem_gbps = 320\nlaunch_ns = 8000\npresent = \"no\"\n";
	const char *none = "[device.gpu0]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 1\nmem_gib = 16\n"
	                   "gflops = 8100\nmem_gbps = 320\nlaunch_ns = 8000\npresent = false\n";

	(void)state;
	load(t4x2, &m);
	assert_int_equal(m.ndevices, 10);
	assert_false(m.dev[8].absent);
	assert_true(m.dev[9].absent);
	assert_string_equal(m.dev[9].name, "gpu1");
	machine_free(&m);
	assert_int_equal(machine_parse(bad, strlen(bad), "t", &m, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "device.gpu0.present: expected true or false"));
	assert_int_equal(machine_parse(none, strlen(none), "t", &m, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "every device is absent at start"));
}

static void check_error(const struct machine *m, const char *text, const char *want)
{
	struct scale_events ev;
	char err[512] = "";

	parse_ok(text, &ev);
	int rc = sim_events_check(m, &ev, NULL, err, sizeof(err));
	if (rc != -TDM_EINVAL || !strstr(err, want) || strncmp(err, "events: ", 8))
		fail_msg("%s: rc %d, \"%s\", wanted \"%s\"", text, rc, err, want);
	scale_events_free(&ev);
}

static void test_events_check(void **state)
{
	static struct machine m;
	struct scale_events ev;
	enum sim_dev_state st[MACHINE_MAX_DEVICES];
	char err[512];

	(void)state;
	load(t4x2, &m);
	parse_ok("t=1ms add gpu1; t=2ms drain gpu0; t=3ms resume gpu0; t=4ms budget gpu1=8GiB;"
	         "t=5ms remove cpu7; t=6ms drain gpu1",
	         &ev);
	assert_int_equal(sim_events_check(&m, &ev, st, err, sizeof(err)), 0);
	assert_int_equal(st[8], SIM_DEV_ACTIVE); /* gpu0 */
	assert_int_equal(st[9], SIM_DEV_DRAINING); /* gpu1 */
	assert_int_equal(st[7], SIM_DEV_GONE); /* cpu7 */
	assert_int_equal(st[0], SIM_DEV_ACTIVE);
	scale_events_free(&ev);
	check_error(&m, "t=1ms add gpu7", "event 1 (t=1ms add gpu7): t4x2 has no device gpu7");
	check_error(&m, "t=1ms add gpu0", "present from the start");
	check_error(&m, "t=1ms add gpu1; t=2ms add gpu1",
	            "event 2 (t=2ms add gpu1): gpu1 "
	            "is active: it was added already");
	check_error(&m, "t=1ms add gpu1; t=2ms remove gpu1; t=3ms add gpu1",
	            "gpu1 is gone: it was removed");
	check_error(&m, "t=1ms drain gpu1", "gpu1 is absent: only an active device can be drained");
	check_error(&m, "t=1ms resume gpu0", "only a draining device can resume");
	check_error(&m, "t=1ms remove gpu1", "only a device that is there");
	check_error(&m, "t=1ms budget cpu0=1GiB", "budgets are for accelerators");
	check_error(&m, "t=1ms budget gpu1=1GiB", "the device is not there");
	check_error(&m, "t=1ms budget gpu0=17GiB", "is more than gpu0's memory");
	check_error(&m,
	            "t=0s drain gpu0; t=0s remove cpu0; t=0s remove cpu1; t=0s remove cpu2;"
	            "t=0s remove cpu3; t=0s remove cpu4; t=0s remove cpu5; t=0s remove cpu6;"
	            "t=0s drain cpu7",
	            "event 9 (t=0ns drain cpu7): no device would be left active");
	machine_free(&m);
}

static void run_serve(const struct machine *m, bool moe, const char *model, uint32_t batch,
                      const char *events, bool restart, double dur_s, struct es_result *r)
{
	struct scale_events ev;
	char err[512];

	parse_ok(events, &ev);
	struct es_opts o = { .moe = moe,
		             .model = model,
		             .batch = batch,
		             .prompt = 256,
		             .output = 512,
		             .duration_ns = dur_s * 1e9,
		             .restart = restart,
		             .seed = 7,
		             .events = &ev };
	int rc = es_run(m, &o, r, err, sizeof(err));
	scale_events_free(&ev);
	if (rc)
		fail_msg("%s", err);
}

/* A second GPU added live: more throughput after than before, every
 * request kept (nothing prefilled again), the first token from the new
 * GPU after its context is up, exactly the bytes the new placement needs;
 * the same run again is the same. */
static void test_moe_add_live(void **state)
{
	static struct machine m;
	struct es_result r, again;

	(void)state;
	load(t4x2, &m);
	run_serve(&m, true, "dsv2-lite", 8, "t=5s add gpu1", false, 15, &r);
	assert_int_equal(r.nevents, 1);
	const struct es_event_result *x = &r.ev[0];
	assert_true(x->applied_ns >= 5e9);
	assert_true(x->tok_s_after > 1.2 * x->tok_s_before);
	assert_true(x->reprefill_tokens == 0 && r.reprefill_tokens == 0);
	assert_true(x->first_token_ns >= x->applied_ns + 0.5e9); /* the context, then a step */
	assert_true(x->bytes > 0 && x->bytes == x->min_bytes);
	assert_true(x->settled_ns > x->applied_ns);
	assert_int_equal(r.gpus_at_end, 2);
	run_serve(&m, true, "dsv2-lite", 8, "t=5s add gpu1", false, 15, &again);
	assert_true(again.tokens == r.tokens && again.time_ns == r.time_ns &&
	            again.ev[0].first_token_ns == x->first_token_ns);
	es_result_free(&again);
	es_result_free(&r);
	machine_free(&m);
}

/* The restart path: every running request loses its KV and prefills
 * again, nothing decodes while the server is down, the first token comes
 * later than live and the weights load again (more than the minimum). */
static void test_moe_restart_loses_kv(void **state)
{
	static struct machine m;
	struct es_result live, rs;

	(void)state;
	load(h100x2, &m);
	run_serve(&m, true, "mixtral-8x7b", 16, "t=5s add gpu1", false, 15, &live);
	run_serve(&m, true, "mixtral-8x7b", 16, "t=5s add gpu1", true, 15, &rs);
	const struct es_event_result *l = &live.ev[0], *x = &rs.ev[0];
	assert_true(l->applied_ns == x->applied_ns);
	/* 16 requests of 256 prompt tokens and up to 512 generated. */
	assert_true(x->reprefill_tokens >= 16 * 256 && x->reprefill_tokens <= 16 * 768);
	assert_true(rs.reprefill_tokens == x->reprefill_tokens);
	assert_true(live.reprefill_tokens == 0);
	assert_true(x->tok_s_during == 0);
	assert_true(x->first_token_ns - x->applied_ns > l->first_token_ns - l->applied_ns);
	assert_true(x->bytes > 1.5 * x->min_bytes);
	assert_true(fabs(x->min_bytes - l->min_bytes) < 1);
	assert_true(live.tokens > rs.tokens);
	es_result_free(&live);
	es_result_free(&rs);
	machine_free(&m);
}

/* Dense LLM, data parallel: the added GPU takes the weights and half the
 * requests (their KV moved, none lost); removing it again loses its
 * requests' KV (prefilled again elsewhere); a budget below the KV held
 * makes requests recompute. */
static void test_llm_add_remove_budget(void **state)
{
	static struct machine m;
	struct es_result r;

	(void)state;
	load(h100x2, &m);
	run_serve(&m, false, "llama2-7b", 64, "t=2s add gpu1; t=6s remove gpu1", false, 10, &r);
	assert_true(r.ev[0].tok_s_after > 1.2 * r.ev[0].tok_s_before);
	assert_int_equal(r.ev[0].moved_requests, 32);
	assert_true(r.ev[0].reprefill_tokens == 0);
	assert_true(r.ev[1].reprefill_tokens > 0);
	assert_int_equal(r.gpus_at_end, 1);
	es_result_free(&r);
	run_serve(&m, false, "llama2-7b", 64, "t=2s budget gpu0=16GiB", false, 4, &r);
	assert_true(r.ev[0].reprefill_tokens > 0);
	es_result_free(&r);
	machine_free(&m);
}

/* MoE drain and remove of the primary GPU after a second one joined: a
 * drain moves the dense part and the KV GPU to GPU (nothing prefilled
 * again), a remove loses the KV; the only GPU cannot be drained. */
static void test_moe_drain_remove(void **state)
{
	static struct machine m;
	struct es_result r;
	struct scale_events ev;
	char err[512];

	(void)state;
	load(h100x2, &m);
	run_serve(&m, true, "mixtral-8x7b", 16, "t=2s add gpu1; t=6s drain gpu0", false, 10, &r);
	assert_true(r.ev[1].reprefill_tokens == 0 && r.ev[1].bytes > 0);
	assert_true(r.ev[1].tok_s_after > 0);
	assert_int_equal(r.gpus_at_end, 1);
	es_result_free(&r);
	run_serve(&m, true, "mixtral-8x7b", 16, "t=2s add gpu1; t=6s remove gpu0", false, 10, &r);
	assert_true(r.ev[1].reprefill_tokens >= 16 * 256);
	assert_true(r.ev[1].tok_s_after > 0);
	es_result_free(&r);
	parse_ok("t=1s drain gpu0", &ev);
	struct es_opts o = { .moe = true, .model = "mixtral-8x7b", .batch = 4, .events = &ev };
	assert_int_equal(es_run(&m, &o, &r, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, "leaves no active GPU"));
	scale_events_free(&ev);
	machine_free(&m);
}

/* Four cores, gpu0, and gpu1 absent at start (a small machine for the
 * engine simulation). */
static const char small[] = "name = \"small\"\n"
                            "[device.cpu]\nkind = \"cpu\"\nmodel = \"c\"\ncount = 4\n"
                            "gflops = 50\nmem_gbps = 10\nlaunch_ns = 2000\n"
                            "[device.gpu1]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 2\n"
                            "present = false\nmem_gib = 16\ngflops = 8000\nmem_gbps = 300\n"
                            "launch_ns = 8000\n"
                            "[device.gpu0]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 1\n"
                            "mem_gib = 16\ngflops = 8000\nmem_gbps = 300\nlaunch_ns = 8000\n"
                            "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n"
                            "[link.0-2]\ngbps = 12\nlatency_ns = 10000\n";

static int run_engine(const struct machine *m, const struct workload *w, const char *policy,
                      const char *events, bool record, struct sim_result *r, char *err,
                      size_t errlen)
{
	struct scale_events ev = { 0 };
	if (events)
		parse_ok(events, &ev);
	struct sim_opts o = { .policy = policy, .record = record, .events = events ? &ev : NULL };
	int rc = sim_run(m, w, &o, r, err, errlen);
	scale_events_free(&ev);
	return rc;
}

static unsigned dev_index(const struct sim_result *r, const char *name)
{
	for (unsigned d = 0; d < r->ndevices; d++)
		if (!strcmp(r->devname[d], name))
			return d;
	fail_msg("no device %s", name);
	return 0;
}

/* A Cholesky run through add, drain and remove: every task completes
 * (none lost, none twice), the events take effect when due, the added
 * GPU runs tasks, the drained one empties; the same run again gives the
 * same makespan. */
static void test_engine_add_drain_remove(void **state)
{
	static struct machine m;
	struct workload w;
	struct sim_result r, again;
	char err[512];
	const char *events = "t=20ms add gpu1; t=60ms drain gpu0; t=100ms remove cpu3";
	static const char *const policies[] = { "dmda", "heft", "eager", "ws", "fifo" };

	(void)state;
	load(small, &m);
	wl_init(&w);
	assert_int_equal(wl_gen_tiled(WL_TILED_CHOLESKY, 16, 960, &w, err, sizeof(err)), 0);
	for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
		if (run_engine(&m, &w, policies[p], events, false, &r, err, sizeof(err)))
			fail_msg("%s: %s", policies[p], err);
		assert_int_equal(r.tasks, w.ntasks);
		assert_int_equal(r.graphs, 1);
		uint64_t sum = 0;
		for (unsigned d = 0; d < r.ndevices; d++)
			sum += r.tasks_on[d];
		assert_int_equal(sum, w.ntasks);
		assert_int_equal(r.nevents, 3);
		for (uint32_t k = 0; k < 3; k++) {
			assert_true(r.events[k].applied);
			assert_int_equal(r.events[k].rc, 0);
			assert_true(r.events[k].applied_ns == (double)r.events[k].ev.t_ns);
		}
		/* gpu1 takes work once added; gpu0 empties once drained. */
		assert_true(r.tasks_on[dev_index(&r, "gpu1")] > 0);
		assert_true(r.events[0].first_task_ns >= 20e6);
		assert_true(r.events[1].empty_ns >= 60e6);
		assert_true(r.events[1].empty_ns < r.makespan_ns);
		assert_true(r.events[2].empty_ns >= 100e6);
		if (run_engine(&m, &w, policies[p], events, false, &again, err, sizeof(err)))
			fail_msg("%s: %s", policies[p], err);
		assert_true(again.makespan_ns == r.makespan_ns);
		assert_int_equal(again.bytes_moved, r.bytes_moved);
		sim_result_free_events(&again);
		sim_result_free_events(&r);
	}
	wl_free(&w);
	machine_free(&m);
}

/* The only accelerator drained: the work finishes on the cores, and no
 * task starts on it once it is empty. A device absent at start and never
 * added runs nothing. */
static void test_engine_drain_only_gpu(void **state)
{
	static struct machine m;
	struct workload w;
	struct sim_result r;
	char err[512];

	(void)state;
	load(small, &m);
	wl_init(&w);
	assert_int_equal(wl_gen_tiled(WL_TILED_CHOLESKY, 12, 960, &w, err, sizeof(err)), 0);
	if (run_engine(&m, &w, "dmda", "t=5ms drain gpu0", true, &r, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(r.tasks, w.ntasks);
	unsigned g0 = dev_index(&r, "gpu0"), g1 = dev_index(&r, "gpu1");
	assert_int_equal(r.tasks_on[g1], 0);
	assert_true(r.tasks_on[g0] > 0 && r.tasks_on[g0] < w.ntasks);
	double empty = r.events[0].empty_ns;
	assert_true(empty >= 5e6);
	uint32_t after = 0;
	for (size_t i = 0; i < r.nspans; i++) {
		if ((double)r.spans[i].start_ns >= empty) {
			assert_int_not_equal(r.spans[i].device, g0);
			after++;
		}
	}
	assert_true(after > 0); /* the cores did the rest */
	sim_result_free(&r);
	sim_result_free_events(&r);
	/* Without events: gpu1 stays out. */
	if (run_engine(&m, &w, "dmda", NULL, false, &r, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(r.tasks, w.ntasks);
	assert_int_equal(r.tasks_on[dev_index(&r, "gpu1")], 0);
	assert_int_equal(r.nevents, 0);
	sim_result_free_events(&r);
	/* An event the machine does not allow: the run says why. */
	assert_int_equal(run_engine(&m, &w, "dmda", "t=1ms add gpu0", false, &r, err, sizeof(err)),
	                 -TDM_EINVAL);
	assert_non_null(strstr(err, "present from the start"));
	wl_free(&w);
	machine_free(&m);
}

/* Random events (valid by construction, a fixed seed) under several
 * policies: every task completes exactly once, every event is applied
 * with rc 0 while work remains. */
static void test_engine_random_events(void **state)
{
	static const char three[] =
	        "name = \"three\"\n"
	        "[device.cpu]\nkind = \"cpu\"\nmodel = \"c\"\ncount = 3\ngflops = 50\n"
	        "mem_gbps = 10\nlaunch_ns = 2000\n"
	        "[device.gpu0]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 1\nmem_gib = 16\n"
	        "gflops = 8000\nmem_gbps = 300\nlaunch_ns = 8000\n"
	        "[device.gpu1]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 2\npresent = false\n"
	        "mem_gib = 16\ngflops = 8000\nmem_gbps = 300\nlaunch_ns = 8000\n"
	        "[device.gpu2]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 3\npresent = false\n"
	        "mem_gib = 16\ngflops = 8000\nmem_gbps = 300\nlaunch_ns = 8000\n"
	        "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n"
	        "[link.0-2]\ngbps = 12\nlatency_ns = 10000\n"
	        "[link.0-3]\ngbps = 12\nlatency_ns = 10000\n";
	static const char *const policies[] = { "dmda", "heft", "ws" };
	static const char *const names[] = { "cpu1", "cpu2", "gpu0", "gpu1", "gpu2" };
	static struct machine m;
	struct workload w;
	char err[512], text[2048];
	uint64_t seed = 12345;
	uint32_t applied = 0, kinds[SCALE_KIND_COUNT] = { 0 };

	(void)state;
	load(three, &m);
	wl_init(&w);
	assert_int_equal(wl_gen_tiled(WL_TILED_CHOLESKY, 10, 960, &w, err, sizeof(err)), 0);
	for (int round = 0; round < 12; round++) {
		/* States of names[]: 0 absent, 1 active, 2 draining, 3 gone. */
		int st[5] = { 1, 1, 1, 0, 0 };
		size_t len = 0;
		for (int k = 0; k < 10; k++) {
			int d, kind;
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			d = (int)(seed >> 33) % 5;
			kind = (int)(seed >> 40) % 5;
			const char *what = NULL;
			if (st[d] == 0 && (d == 3 || d == 4))
				what = "add", st[d] = 1;
			else if (st[d] == 1 && kind < 2)
				what = "drain", st[d] = 2;
			else if (st[d] == 2 && kind < 2)
				what = "resume", st[d] = 1;
			else if ((st[d] == 1 || st[d] == 2) && kind == 2)
				what = "remove", st[d] = 3;
			if (what)
				len += (size_t)snprintf(text + len, sizeof(text) - len,
				                        "t=%dms %s %s;", 2 * k + 1, what, names[d]);
			else if (d >= 2 && (st[d] == 1 || st[d] == 2))
				len += (size_t)snprintf(text + len, sizeof(text) - len,
				                        "t=%dms budget %s=%dMiB;", 2 * k + 1,
				                        names[d], 64 << (kind % 5));
		}
		for (size_t p = 0; p < sizeof(policies) / sizeof(policies[0]); p++) {
			struct sim_result r;
			if (run_engine(&m, &w, policies[p], text, false, &r, err, sizeof(err)))
				fail_msg("%s, %s: %s", policies[p], text, err);
			if (r.tasks != w.ntasks)
				fail_msg("%s, %s: %" PRIu64 " of %u tasks", policies[p], text,
				         r.tasks, w.ntasks);
			uint64_t sum = 0;
			for (unsigned d = 0; d < r.ndevices; d++)
				sum += r.tasks_on[d];
			assert_int_equal(sum, w.ntasks);
			for (uint32_t k = 0; k < r.nevents; k++) {
				applied += r.events[k].applied;
				kinds[r.events[k].ev.kind] += r.events[k].applied;
			}
			for (uint32_t k = 0; k < r.nevents; k++)
				if (r.events[k].applied && r.events[k].rc)
					fail_msg("%s, %s: event %u: rc %d", policies[p], text, k,
					         r.events[k].rc);
			sim_result_free_events(&r);
		}
	}
	/* The rounds did exercise every kind of event. */
	print_message("%u events applied\n", applied);
	assert_true(applied >= 100);
	for (int k = 0; k < SCALE_KIND_COUNT; k++)
		assert_true(kinds[k] > 0);
	wl_free(&w);
	machine_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_machine_present),
		cmocka_unit_test(test_events_check),
		cmocka_unit_test(test_moe_add_live),
		cmocka_unit_test(test_moe_restart_loses_kv),
		cmocka_unit_test(test_llm_add_remove_budget),
		cmocka_unit_test(test_moe_drain_remove),
		cmocka_unit_test(test_engine_add_drain_remove),
		cmocka_unit_test(test_engine_drain_only_gpu),
		cmocka_unit_test(test_engine_random_events),
	};
	log_set_level(LOG_WARN); /* the engine tells of each device added or removed */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
