/* Unit tests for sim/machine.c: machine descriptions (docs/machines.md).
 * Valid documents parse to the right values, each class of malformed input
 * is rejected with its line and column, restriction, the calibration and
 * cost-model document a description turns into (the latter checked through
 * a real profiler), write -> parse round trips, and every shipped machine
 * (every .toml file in machines/, from the repository root) parses. */
#include <glob.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sim/machine.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tandem.h"

#define NAME "t.toml"
#define ERR_MAX 512

static void parse_ok(const char *text, struct machine *m)
{
	char err[ERR_MAX] = "";
	int rc = machine_parse(text, strlen(text), NAME, m, err, sizeof(err));

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

/* Parsing text fails with exactly the message want. */
static void expect_error(const char *text, const char *want)
{
	struct machine m;
	char err[ERR_MAX] = "";
	int rc;

	memset(&m, 0x5a, sizeof(m));
	rc = machine_parse(text, strlen(text), NAME, &m, err, sizeof(err));
	if (rc != -TDM_EINVAL || strcmp(err, want))
		print_error("text:\n%s\nwant: %s\ngot:  %s (rc %d)\n", text, want, err, rc);
	assert_int_equal(rc, -TDM_EINVAL);
	assert_string_equal(err, want);
	/* a failed parse leaves m as machine_init does */
	assert_int_equal(m.ndevices, 0);
	assert_null(m.costs);
	machine_free(&m);
}

#define CPU                                                                                        \
	"[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ncount = 4\ngflops = 80\nmem_gbps = "      \
	"12\nlaunch_ns = 2000\n"
#define GPU(name, node)                                                                            \
	"[device." name "]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = " #node "\nmem_gib = "          \
	"16\ngflops = 8100\nmem_gbps = 320\nlaunch_ns = 8000\n"

static const char full[] =
        "name = \"box\"\n"
        "description = \"a test box\"\n"
        "wake_ns = 21500\n" CPU GPU("gpu0", 1)
                GPU("gpu1", 2) "[device.npu0]\nkind = \"npu\"\nmodel = \"xdna\"\nnode = 3\n"
                               "mem_gib = 0.5\ngflops = 4000\nmem_gbps = 60\nlaunch_ns = 3e4\n"
                               "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n"
                               "[link.2-0]\ngbps = 10\nlatency_ns = 9000\n"
                               "[link.0-2]\ngbps = 11.5\nlatency_ns = 9500\n"
                               "[link.0-3]\ngbps = 20\nlatency_ns = 20000\n"
                               "[link.1-3]\ngbps = 2\nlatency_ns = 50000\n"
                               "[cost.t4.sgemm_nt]\n"
                               "nb = [960, 320]\n"
                               "ns = [754514, 56335.59]\n"
                               "spread_ns = [46220, 10276.8]\n"
                               "[cost.xeon.sgemm]\n"
                               "flops = 2e9\nbytes = 1.2e7\ndomain = 1e6\nns = 3e7\n"
                               "[cost.xdna.sim_task]\n"
                               "flops = [1e9, 2e9]\nbytes = [0, 0]\ndomain = [0, 0]\n"
                               "ns = [1e6, 2e6]\n";

static struct kernel_features nb_features(int kernel, int64_t nb)
{
	const struct kernel_def *k = kernel_by_id((uint32_t)kernel);
	struct tdm_kernel_call call;
	struct kernel_features f;

	memset(&call, 0, sizeof(call));
	call.nargs = k->nargs;
	call.s[0].i64 = nb;
	for (unsigned i = 0; i < k->nargs; i++)
		call.len[i] = (uint64_t)(nb * nb * 4);
	k->features(&call, &f);
	return f;
}

static const struct machine_cost *find_cost(const struct machine *m, int kernel, const char *model,
                                            const struct kernel_features *f)
{
	for (uint32_t i = 0; i < m->ncosts; i++) {
		const struct machine_cost *c = &m->costs[i];

		if (c->kernel == kernel && !strcmp(c->model, model) && c->feat.flops == f->flops &&
		    c->feat.bytes == f->bytes && c->feat.domain == f->domain)
			return c;
	}
	return NULL;
}

/* ---- valid documents ------------------------------------------------------ */

static void test_parse_minimal(void **state)
{
	struct machine m;

	(void)state;
	parse_ok("[device.cpu0]\nkind = \"cpu\"\nmodel = \"m\"\ngflops = 1\nmem_gbps = 2\n"
	         "launch_ns = 0\n",
	         &m);
	assert_string_equal(m.name, NAME); /* none in the file */
	assert_int_equal(m.ndevices, 1);
	assert_int_equal(m.nnodes, 1);
	assert_string_equal(m.dev[0].name, "cpu0");
	assert_string_equal(m.dev[0].model, "m");
	assert_int_equal(m.dev[0].kind, TDM_DEV_CPU);
	assert_int_equal(m.dev[0].node, 0);
	assert_int_equal(m.dev[0].mem_bytes, 0);
	assert_true(m.dev[0].gemm_gflops == 1);
	assert_true(m.dev[0].mem_gbps == 2);
	assert_true(m.dev[0].launch_ns == 0);
	/* a copy within host memory reads and writes each byte */
	assert_true(m.link[0][0].gbps == 1);
	assert_int_equal(m.ncosts, 0);
	assert_null(m.costs);
	machine_free(&m);
}

static void test_parse_full(void **state)
{
	struct machine m;
	struct kernel_features f;
	const struct machine_cost *c;

	(void)state;
	parse_ok(full, &m);
	assert_string_equal(m.name, "box");
	assert_true(m.wake_ns == 21500);
	assert_int_equal(m.ndevices, 7);
	assert_int_equal(m.nnodes, 4);
	for (int i = 0; i < 4; i++) {
		char name[8];

		snprintf(name, sizeof(name), "cpu%d", i);
		assert_string_equal(m.dev[i].name, name);
		assert_int_equal(m.dev[i].node, 0);
		assert_string_equal(m.dev[i].model, "xeon");
		assert_true(m.dev[i].gemm_gflops == 80);
	}
	assert_string_equal(m.dev[4].name, "gpu0");
	assert_int_equal(m.dev[4].kind, TDM_DEV_GPU);
	assert_int_equal(m.dev[4].node, 1);
	assert_int_equal(m.dev[4].mem_bytes, UINT64_C(16) << 30);
	assert_string_equal(m.dev[5].name, "gpu1");
	assert_int_equal(m.dev[5].node, 2);
	assert_string_equal(m.dev[6].name, "npu0");
	assert_int_equal(m.dev[6].kind, TDM_DEV_NPU);
	assert_int_equal(m.dev[6].node, 3);
	assert_int_equal(m.dev[6].mem_bytes, UINT64_C(1) << 29);
	assert_true(m.dev[6].launch_ns == 3e4);

	/* given */
	assert_true(m.link[0][1].gbps == 12 && m.link[0][1].latency_ns == 10000);
	assert_true(m.link[0][1].measured);
	assert_true(m.link[2][0].gbps == 10 && m.link[0][2].gbps == 11.5);
	assert_true(m.link[1][3].gbps == 2 && m.link[1][3].latency_ns == 50000);
	/* the reverse of a link given in one direction */
	assert_true(m.link[1][0].gbps == 12 && m.link[1][0].latency_ns == 10000);
	assert_true(m.link[1][0].measured);
	assert_true(m.link[3][1].gbps == 2 && m.link[3][0].gbps == 20);
	/* between accelerators, through the host */
	assert_true(m.link[1][2].gbps == 1 / (1 / 12.0 + 1 / 11.5));
	assert_true(m.link[1][2].latency_ns == 10000 + 9500);
	assert_false(m.link[1][2].measured);
	assert_true(m.link[2][1].gbps == 1 / (1 / 10.0 + 1 / 12.0));
	assert_true(m.link[2][1].latency_ns == 9000 + 10000);
	/* within a node */
	assert_true(m.link[0][0].gbps == 6 && m.link[1][1].gbps == 160);
	assert_true(m.link[3][3].gbps == 30 && m.link[3][3].latency_ns == 0);

	assert_int_equal(m.ncosts, 5);
	f = nb_features(KERNEL_SGEMM_NT, 960);
	assert_true(f.flops == 2.0 * 960 * 960 * 960 && f.bytes == 3.0 * 960 * 960 * 4);
	c = find_cost(&m, KERNEL_SGEMM_NT, "t4", &f);
	assert_non_null(c);
	assert_true(c->ns == 754514 && c->spread_ns == 46220);
	f = nb_features(KERNEL_SGEMM_NT, 320);
	c = find_cost(&m, KERNEL_SGEMM_NT, "t4", &f);
	assert_non_null(c);
	assert_true(c->ns == 56335.59 && c->spread_ns == 10276.8);
	f = (struct kernel_features){ 2e9, 1.2e7, 1e6 };
	c = find_cost(&m, KERNEL_SGEMM, "xeon", &f);
	assert_non_null(c);
	assert_true(c->ns == 3e7 && c->spread_ns == 0);
	f = (struct kernel_features){ 2e9, 0, 0 };
	c = find_cost(&m, KERNEL_SIM_TASK, "xdna", &f);
	assert_non_null(c);
	assert_true(c->ns == 2e6);
	machine_free(&m);
}

/* Inline tables, dotted keys and tables in any order are the same document. */
static void test_other_forms(void **state)
{
	struct machine m;

	(void)state;
	parse_ok("[link.1-0]\ngbps = 5\nlatency_ns = 1\n"
	         "[cost.\"a.b\".spotrf]\nnb = 64\nns = 100\n"
	         "[device]\n"
	         "g = { kind = \"gpu\", model = \"a.b\", node = 1, mem_gib = 1, gflops = 1, "
	         "mem_gbps = 1, launch_ns = 1 }\n"
	         "c.kind = \"cpu\"\nc.model = \"x\"\nc.gflops = 1\nc.mem_gbps = 1\n"
	         "c.launch_ns = 1\n",
	         &m);
	assert_int_equal(m.ndevices, 2);
	assert_string_equal(m.dev[0].name, "g");
	assert_string_equal(m.dev[0].model, "a.b");
	assert_string_equal(m.dev[1].name, "c");
	assert_true(m.link[0][1].gbps == 5);
	assert_int_equal(m.ncosts, 1);
	assert_int_equal(m.costs[0].kernel, KERNEL_SPOTRF);
	assert_true(m.costs[0].feat.domain == 64);
	machine_free(&m);
}

/* ---- malformed documents -------------------------------------------------- */

#define DEV_HEAD "[device.cpu0]\nkind = \"cpu\"\nmodel = \"m\"\n"
#define DEV_FIGS "gflops = 1\nmem_gbps = 1\nlaunch_ns = 1\n"
#define CPU0 DEV_HEAD DEV_FIGS /* 6 lines */

static void test_errors_top_level(void **state)
{
	(void)state;
	expect_error("name = \"a\"\nname = \"b\"\n" CPU0,
	             "t.toml:2:8: Error while parsing key-value pair: cannot redefine existing "
	             "string 'name'");
	expect_error("foo = 1\n",
	             "t.toml:1:1: unknown key foo (expected name, description, "
	             "wake_ns, [device.NAME], [link.SRC-DST] or [cost.MODEL.KERNEL] (see "
	             "docs/machines.md))");
	expect_error("[gpu.x]\n",
	             "t.toml:1:2: unknown key gpu (expected name, description, "
	             "wake_ns, [device.NAME], [link.SRC-DST] or [cost.MODEL.KERNEL] (see "
	             "docs/machines.md))");
	expect_error("wake_ns = -1\n" CPU0,
	             "t.toml:1:11: wake_ns: -1 is out of range (expected ns in [0, 1e+07])");
	expect_error("wake_ns = 2e7\n" CPU0,
	             "t.toml:1:11: wake_ns: 2e+07 is out of range (expected ns in [0, 1e+07])");
	expect_error("wake_ns = \"20us\"\n" CPU0,
	             "t.toml:1:11: wake_ns: expected a number, got string");
	expect_error("name = 3\n", "t.toml:1:8: name: expected a string (a name: A-Z, a-z, 0-9, "
	                           "'.', '_', '-'), got integer");
	expect_error("name = \"a b\"\n",
	             "t.toml:1:8: name: \"a b\" is not a name: A-Z, a-z, 0-9, '.', '_', '-' of "
	             "1 to 63 characters");
	expect_error("description = \"a\\u0000b\"\n",
	             "t.toml:1:15: description: contains a NUL character");
	expect_error("[[device]]\nkind = \"cpu\"\n",
	             "t.toml:1:3: device: arrays of tables ([[device]]) are not supported: write "
	             "one table [device.NAME] each");
	expect_error("device = 1\n", "t.toml:1:10: device: expected tables [device.NAME], got "
	                             "integer");
	expect_error("", "t.toml: no devices: describe at least one in a [device.NAME] table");
	expect_error("[device.cpu0\n",
	             "t.toml:1:13: Error while parsing table header: expected ']', "
	             "saw '\\n'");
}

/* The socket's memory bandwidth, shared by its cores, and fp16 throughput. */
static void test_socket_gbps(void **state)
{
	struct machine m;

	(void)state;
	parse_ok("[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ncount = 8\ngflops = 70\n"
	         "mem_gbps = 12\nsocket_gbps = 140.8\nlaunch_ns = 2000\n"
	         "[device.gpu0]\nkind = \"gpu\"\nmodel = \"t4\"\nnode = 1\nmem_gib = 16\n"
	         "gflops = 8100\nfp16_gflops = 65000\nmem_gbps = 320\nlaunch_ns = 8000\n"
	         "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n",
	         &m);
	for (uint32_t i = 0; i < 8; i++) {
		assert_true(m.dev[i].socket_gbps == 140.8);
		assert_true(m.dev[i].fp16_gflops == 0);
	}
	assert_true(m.dev[8].socket_gbps == 0);
	assert_true(m.dev[8].fp16_gflops == 65000);
	machine_free(&m);
	parse_ok(CPU, &m); /* optional: 0 when left out */
	assert_true(m.dev[0].socket_gbps == 0);
	machine_free(&m);
	expect_error("[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ncount = 4\ngflops = 80\n"
	             "mem_gbps = 12\nsocket_gbps = 10\nlaunch_ns = 2000\n",
	             "t.toml:7:15: device.cpu.socket_gbps: 10 GB/s is less than one core's "
	             "mem_gbps (12): the socket's bandwidth is shared by its cores, not below "
	             "one");
	expect_error(CPU GPU("gpu0", 1) "socket_gbps = 400\n[link.0-1]\ngbps = 12\n"
	                                "latency_ns = 10000\n",
	             "t.toml:16:15: device.gpu0.socket_gbps: only host cores (kind \"cpu\") "
	             "share a socket's memory bandwidth: leave socket_gbps out");
	expect_error("[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ngflops = 80\n"
	             "mem_gbps = 12\nsocket_gbps = \"x\"\nlaunch_ns = 2000\n",
	             "t.toml:6:15: device.cpu.socket_gbps: expected a number, got string");
	expect_error("[device.cpu]\nkind = \"cpu\"\nmodel = \"xeon\"\ngflops = 80\n"
	             "mem_gbps = 12\nsocket_gbps = 0\nlaunch_ns = 2000\n",
	             "t.toml:6:15: device.cpu.socket_gbps: 0 is out of range (expected GB/s in "
	             "(0, 100000))");
}

static void test_errors_devices(void **state)
{
	(void)state;
	expect_error(CPU0 "colour = 1\n",
	             "t.toml:7:1: unknown key colour in [device.cpu0] (expected kind, model, "
	             "node, count, mem_gib, gflops, mem_gbps, launch_ns, socket_gbps, "
	             "fp16_gflops, present, shares_cores_with, core_slice_ns, "
	             "core_slice_every_ns, busy_core_share)");
	expect_error("[device.Cpu0]\n", "t.toml:1:9: device.Cpu0: a device name is 1 to 31 "
	                                "characters a-z, 0-9, _ (such as gpu0)");
	expect_error("[device.cpu0]\nkind = 1\n",
	             "t.toml:2:8: device.cpu0.kind: expected a string: \"cpu\", \"clcpu\", "
	             "\"gpu\" or \"npu\", got integer");
	expect_error("[device.cpu0]\nkind = \"tpu\"\n",
	             "t.toml:2:8: device.cpu0.kind: \"tpu\" is not a device kind (expected "
	             "\"cpu\", \"clcpu\", \"gpu\" or \"npu\")");
	expect_error("[device.cpu0]\nmodel = \"a b\"\n",
	             "t.toml:2:9: device.cpu0.model: \"a b\" is not a model: A-Z, a-z, 0-9, '.', "
	             "'_', ':', '-' of 1 to 63 characters");
	expect_error("[device.g]\nnode = 16\n", "t.toml:2:8: device.g.node: 16 is out of range "
	                                        "(expected an integer in 0..15)");
	expect_error("[device.g]\nnode = 1.0\n", "t.toml:2:8: device.g.node: expected an integer "
	                                         "in 0..15, got float");
	expect_error("[device.c]\ncount = 0\n", "t.toml:2:9: device.c.count: 0 is out of range "
	                                        "(expected an integer in 1..64)");
	expect_error("[device.c]\ngflops = 0\n", "t.toml:2:10: device.c.gflops: 0 is out of range "
	                                         "(expected GFLOP/s in (0, 1e+07))");
	expect_error("[device.c]\nmem_gbps = -1.5\n",
	             "t.toml:2:12: device.c.mem_gbps: -1.5 is out of range (expected GB/s in (0, "
	             "100000))");
	expect_error("[device.c]\nlaunch_ns = nan\n",
	             "t.toml:2:13: device.c.launch_ns: nan is out of range (expected ns in [0, "
	             "1e+09))");
	expect_error("[device.c]\nlaunch_ns = \"1\"\n",
	             "t.toml:2:13: device.c.launch_ns: expected a number, got string");
	expect_error("[device.g]\nmem_gib = 65537\n",
	             "t.toml:2:11: device.g.mem_gib: 65537 is out of range (expected GiB in (0, "
	             "65536])");
	expect_error(DEV_HEAD "gflops = 1\nlaunch_ns = 1\n",
	             "t.toml:1:9: device.cpu0: missing mem_gbps (copy bandwidth of its memory, "
	             "GB/s)");
	expect_error("[device.cpu0]\nmodel = \"m\"\n" DEV_FIGS,
	             "t.toml:1:9: device.cpu0: missing kind (\"cpu\", \"clcpu\", \"gpu\" or "
	             "\"npu\")");
	expect_error(CPU0 "node = 1\n", "t.toml:7:8: device.cpu0.node: 1: host devices (kind "
	                                "\"cpu\") are on node 0");
	expect_error(CPU0 "mem_gib = 1\n",
	             "t.toml:7:11: device.cpu0.mem_gib: host devices (kind \"cpu\") use host "
	             "memory: leave mem_gib out");
	expect_error("[device.g]\nkind = \"gpu\"\nmodel = \"m\"\nmem_gib = 1\n" DEV_FIGS,
	             "t.toml:1:9: device.g: missing node (an accelerator has a memory node of its "
	             "own, 1 to 15)");
	expect_error(
	        "[device.g]\nkind = \"clcpu\"\nmodel = \"m\"\nnode = 0\nmem_gib = 1\n" DEV_FIGS,
	        "t.toml:4:8: device.g.node: node 0 is the host's: an accelerator (kind "
	        "\"clcpu\") has a node of its own, 1 to 15");
	expect_error("[device.g]\nkind = \"gpu\"\nmodel = \"m\"\nnode = 1\n" DEV_FIGS,
	             "t.toml:1:9: device.g: missing mem_gib (the accelerator's memory, GiB)");
	expect_error(CPU0 GPU("a", 1) GPU("b", 1) "[link.0-1]\ngbps = 1\nlatency_ns = 1\n",
	             "t.toml:18:8: device.b.node: node 1 is a's already: each accelerator has a "
	             "memory node of its own");
	expect_error(CPU0 GPU("a", 1) GPU("b", 3),
	             "t.toml:18:8: device.b.node: node 2 has no device (accelerators' nodes are "
	             "numbered 1, 2, ... without gaps)");
	expect_error(DEV_HEAD DEV_FIGS "count = 2\n",
	             "t.toml:7:9: device.cpu0.count: with count > 1 the name is a prefix "
	             "(devices cpu00, cpu01, ...): use a name that does not end in a digit");
	expect_error(CPU "[device.cpu2]\nkind = \"cpu\"\nmodel = \"m\"\n" DEV_FIGS,
	             "t.toml:8:9: device.cpu2: device name cpu2 is taken already (by "
	             "[device.cpu], line 1)");
	expect_error(CPU0 "[device.g]\nkind = \"gpu\"\nmodel = \"m\"\nnode = 14\ncount = 3\n"
	                  "mem_gib = 1\n" DEV_FIGS,
	             "t.toml:11:9: device.g.count: 3 accelerators from node 14 need nodes up to 16 "
	             "(at most 15)");
	expect_error(CPU "[device.c]\nkind = \"cpu\"\nmodel = \"m\"\ncount = 61\n" DEV_FIGS,
	             "t.toml:11:9: device.c.count: more than 64 devices in all");
	expect_error(CPU0 GPU("g", 1),
	             "t.toml:7:9: device.g: no link between the host (node 0) and node 1: add a "
	             "[link.0-1] table");
}

static void test_too_many_device_tables(void **state)
{
	char text[65 * 120];
	size_t o = 0;

	(void)state;
	for (int i = 0; i < 65; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o,
		                      "[device.c%d]\nkind = \"cpu\"\nmodel = \"m\"\n" DEV_FIGS, i);
	expect_error(text, "t.toml:385:9: device.c64: more than 64 devices");
}

static void test_errors_links(void **state)
{
	(void)state;
	expect_error(CPU0 "[link.0to1]\n", "t.toml:7:7: link.0to1: a link is named by its source "
	                                   "and destination nodes, such as [link.0-1]");
	expect_error(CPU0 "[link.1-1]\n",
	             "t.toml:7:7: link.1-1: a node's link to itself is not described (copies "
	             "within a node use its devices' mem_gbps)");
	expect_error(CPU0 "[link.0-16]\n",
	             "t.toml:7:7: link.0-16: node 16 is out of range (nodes are 0 to 15)");
	expect_error(CPU0 "[link.0-1]\ngbps = 1\nlatency_ns = 1\n",
	             "t.toml:7:7: link.0-1: node 1 does not exist (this machine's nodes are 0 to "
	             "0)");
	expect_error(CPU0 GPU("g", 1) "[link.0-1]\nlatency_ns = 1\n",
	             "t.toml:15:7: link.0-1: missing gbps (bandwidth, GB/s)");
	expect_error(CPU0 GPU("g", 1) "[link.0-1]\ngbps = 1\n",
	             "t.toml:15:7: link.0-1: missing latency_ns (fixed cost of one copy, ns)");
	expect_error(CPU0 "[link.0-1]\ngbps = 0\n",
	             "t.toml:8:8: link.0-1.gbps: 0 is out of range (expected GB/s in (0, 100000))");
	expect_error(CPU0 "[link.0-1]\nlatency_ns = 1e9\n",
	             "t.toml:8:14: link.0-1.latency_ns: 1e+09 is out of range (expected ns in [0, "
	             "1e+09))");
	expect_error(CPU0 "[link.0-1]\nwidth = 1\n",
	             "t.toml:8:1: unknown key width in [link.0-1] (expected gbps, latency_ns)");
	expect_error(CPU0 "[link.0-1]\n[link.00-1]\n",
	             "t.toml:8:7: link.00-1: the same link as [link.0-1] (line 7)");
}

static void test_errors_costs(void **state)
{
	(void)state;
	expect_error(CPU0 "[cost.m.sgemx]\n",
	             "t.toml:7:9: cost.m.sgemx: unknown kernel \"sgemx\" (see docs/kernels.md)");
	expect_error(CPU0 "[cost.m.noop]\n",
	             "t.toml:7:9: cost.m.noop: no cost for the kernel \"noop\" (see "
	             "docs/kernels.md)");
	expect_error(CPU0 "[cost.\"m m\".spotrf]\n",
	             "t.toml:7:7: cost.\"m m\": a model is 1 to 63 characters A-Z, a-z, 0-9, '.', "
	             "'_', ':', '-' (quoted when it has '.' or ':')");
	expect_error(CPU0 "[cost.other.spotrf]\nnb = 1\nns = 1\n",
	             "t.toml:7:7: cost.other: no device has model \"other\"");
	expect_error(CPU0 "[cost.m.sgemm]\nnb = 1\n",
	             "t.toml:8:1: cost.m.sgemm.nb: sgemm is not a tile kernel: give its flops, "
	             "bytes and domain");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = 1\nflops = 1\nns = 1\n",
	             "t.toml:9:1: cost.m.spotrf.flops: give either nb or flops, bytes and domain, "
	             "not both");
	expect_error(CPU0 "[cost.m.sgemm]\nflops = 1\nbytes = 1\nns = 1\n",
	             "t.toml:7:9: cost.m.sgemm: missing domain (give nb, or flops, bytes and "
	             "domain)");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = 1\n",
	             "t.toml:7:9: cost.m.spotrf: missing ns (the mean time of each row)");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = [1, 2]\nns = [1]\n",
	             "t.toml:8:1: cost.m.spotrf.nb: 2 entries, but ns has 1");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = [1, 2, 1]\nns = [1, 2, 3]\n",
	             "t.toml:8:13: cost.m.spotrf.nb[2]: the same size as nb[0] (each size once)");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = [1]\nns = [0]\n",
	             "t.toml:9:7: cost.m.spotrf.ns[0]: 0 is out of range (expected ns in [1, "
	             "1e+15])");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = [1]\nns = -5\n",
	             "t.toml:9:6: cost.m.spotrf.ns: -5 is out of range (expected ns in [1, "
	             "1e+15])");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = [4097]\n",
	             "t.toml:8:7: cost.m.spotrf.nb[0]: 4097 is out of range (expected an integer "
	             "in 1..4096)");
	expect_error(CPU0 "[cost.m.sgemm]\nflops = [-1]\n",
	             "t.toml:8:10: cost.m.sgemm.flops[0]: -1 is out of range (expected [0, "
	             "1e+30])");
	expect_error(CPU0 "[cost.m.spotrf]\nspread_ns = [\"1\"]\n",
	             "t.toml:8:14: cost.m.spotrf.spread_ns[0]: expected a number, got string");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = []\n",
	             "t.toml:8:6: cost.m.spotrf.nb: empty array");
	expect_error(CPU0 "[cost.m.spotrf]\nnb = true\n",
	             "t.toml:8:6: cost.m.spotrf.nb: expected a number or an array of numbers, got "
	             "boolean");
	expect_error(CPU0 "[cost.m.spotrf]\nmean = 1\n",
	             "t.toml:8:1: unknown key mean in [cost.m.spotrf] (expected nb, or flops, "
	             "bytes and domain; ns; spread_ns)");
	expect_error(CPU0 "[cost.m]\nspotrf = 1\n",
	             "t.toml:8:10: cost.m.spotrf: expected a table [cost.m.spotrf], got integer");
}

static void test_too_many_cost_rows(void **state)
{
	char text[2048];
	size_t o;

	(void)state;
	o = (size_t)snprintf(text, sizeof(text), "%s[cost.m.spotrf]\nnb = [", CPU0);
	for (int i = 1; i <= 65; i++)
		o += (size_t)snprintf(text + o, sizeof(text) - o, "%s%d", i > 1 ? ", " : "", i);
	snprintf(text + o, sizeof(text) - o, "]\n");
	expect_error(text, "t.toml:8:6: cost.m.spotrf.nb: 65 entries, at most 64 per kernel and "
	                   "model (a cost model keeps 64 sizes)");
}

static void test_first_error_in_text_order(void **state)
{
	(void)state;
	/* both tables are wrong; the first in the text is reported */
	expect_error("[device.b]\nkind = \"gpu\"\n[device.a]\nkind = \"cpu\"\n",
	             "t.toml:1:9: device.b: missing model (the devices' model name)");
}

static void test_input_limits(void **state)
{
	struct machine m;
	char err[ERR_MAX];
	char *big = malloc(MACHINE_MAX_INPUT + 1);

	(void)state;
	assert_non_null(big);
	memset(big, '\n', MACHINE_MAX_INPUT + 1);
	assert_int_equal(machine_parse(big, MACHINE_MAX_INPUT + 1, NAME, &m, err, sizeof(err)),
	                 -TDM_EINVAL);
	assert_string_equal(err, "t.toml: larger than 16 MiB");
	free(big);
	assert_int_equal(machine_parse("\xff", 1, NAME, &m, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "t.toml:1:1: non-ASCII byte 0xff (only ASCII is accepted)");
	/* a short error buffer is cut, not overrun */
	assert_int_equal(machine_parse("x = 1", 5, NAME, &m, err, 8), -TDM_EINVAL);
	assert_string_equal(err, "t.toml:");
	assert_int_equal(machine_parse(NULL, 1, NAME, &m, err, sizeof(err)), -TDM_EINVAL);
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/test_machine_XXXXXX";
	struct machine m;
	char err[ERR_MAX];
	int fd;
	FILE *f;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(CPU0 "node = 2\n", f);
	fclose(f);
	assert_int_equal(machine_load(path, &m, err, sizeof(err)), -TDM_EINVAL);
	assert_non_null(strstr(err, ":7:8: device.cpu0.node: 2: host devices"));
	assert_int_equal(strncmp(err, path, strlen(path)), 0);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(CPU0, f);
	fclose(f);
	assert_int_equal(machine_load(path, &m, err, sizeof(err)), 0);
	assert_string_equal(m.name, path);
	machine_free(&m);
	unlink(path);
	assert_int_equal(machine_load(path, &m, err, sizeof(err)), -TDM_ESYS);
	assert_non_null(strstr(err, ": cannot open: "));
}

/* ---- restriction ---------------------------------------------------------- */

static void test_restrict(void **state)
{
	struct machine m;
	char err[ERR_MAX];
	struct cal_link l13;

	(void)state;
	parse_ok(full, &m);
	l13 = m.link[1][3];
	assert_int_equal(machine_restrict(&m, TDM_DEV_GPU, 3, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "box: cannot keep 3 gpu device(s): the machine has 2");
	assert_int_equal(m.ndevices, 7); /* untouched */

	/* one GPU: gpu1 and its node 2 go, the NPU's node 3 becomes 2 */
	assert_int_equal(machine_restrict(&m, TDM_DEV_GPU, 1, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 6);
	assert_int_equal(m.nnodes, 3);
	assert_string_equal(m.dev[4].name, "gpu0");
	assert_int_equal(m.dev[4].node, 1);
	assert_string_equal(m.dev[5].name, "npu0");
	assert_int_equal(m.dev[5].node, 2);
	assert_memory_equal(&m.link[1][2], &l13, sizeof(l13));
	assert_true(m.link[0][2].gbps == 20 && m.link[2][2].gbps == 30);
	assert_int_equal(m.ncosts, 5);

	/* no NPU: its cost table goes */
	assert_int_equal(machine_restrict(&m, TDM_DEV_NPU, 0, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 5);
	assert_int_equal(m.nnodes, 2);
	assert_int_equal(m.ncosts, 3);
	for (uint32_t i = 0; i < m.ncosts; i++)
		assert_int_not_equal(m.costs[i].kernel, KERNEL_SIM_TASK);

	/* two cores */
	assert_int_equal(machine_restrict(&m, TDM_DEV_CPU, 2, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 3);
	assert_string_equal(m.dev[0].name, "cpu0");
	assert_string_equal(m.dev[1].name, "cpu1");
	assert_string_equal(m.dev[2].name, "gpu0");
	assert_int_equal(m.ncosts, 3);

	/* no GPU and no CPU would leave nothing */
	assert_int_equal(machine_restrict(&m, TDM_DEV_GPU, 0, err, sizeof(err)), 0);
	assert_int_equal(m.nnodes, 1);
	assert_int_equal(m.ncosts, 1);
	assert_int_equal(machine_restrict(&m, TDM_DEV_CPU, 0, err, sizeof(err)), -TDM_EINVAL);
	assert_string_equal(err, "box: keeping 0 cpu device(s) leaves no device");
	machine_free(&m);
}

/* ---- shares_cores_with ---------------------------------------------------- */

#define CLCPU(extra)                                                                               \
	"[device.clcpu0]\nkind = \"clcpu\"\nmodel = \"pocl\"\nnode = 1\nmem_gib = 4\ngflops = "    \
	"9\nmem_gbps = 30\nlaunch_ns = 16000\n" extra "[link.0-1]\ngbps = 10\nlatency_ns = "       \
	"1000\n"

static void test_shares_cores(void **state)
{
	struct machine m;
	char err[ERR_MAX];

	(void)state;
	/* the PoCL device runs on cpu1 and cpu3 of four cores */
	parse_ok(CPU CLCPU("shares_cores_with = [\"cpu1\", \"cpu3\"]\n"), &m);
	assert_int_equal(m.ndevices, 5);
	assert_string_equal(m.dev[4].name, "clcpu0");
	assert_int_equal(m.dev[4].shares_cores, 0xa);
	for (int i = 0; i < 4; i++)
		assert_int_equal(m.dev[i].shares_cores, 0);
	/* keeping two cores: cpu3 goes, the relation with it too */
	assert_int_equal(machine_restrict(&m, TDM_DEV_CPU, 2, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 3);
	assert_int_equal(m.dev[2].shares_cores, 0x2);
	machine_free(&m);
	/* devices listed before the table that names them, in either order */
	parse_ok(CLCPU("shares_cores_with = [\"cpu0\"]\n") CPU, &m);
	assert_int_equal(m.dev[0].shares_cores, 0x2);
	machine_free(&m);

	/* what is not a relation with host cores */
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu7\"]\n"),
	             "t.toml:16:22: device.clcpu0.shares_cores_with[0]: no device is named cpu7");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\", \"clcpu0\"]\n"),
	             "t.toml:16:30: device.clcpu0.shares_cores_with[1]: clcpu0 is this device: a "
	             "device does not share cores with itself");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\", \"cpu1\", \"cpu0\"]\n"),
	             "t.toml:16:38: device.clcpu0.shares_cores_with[2]: cpu0 is listed already "
	             "(shares_cores_with[0])");
	expect_error(
	        CPU GPU("gpu0", 2) CLCPU("shares_cores_with = [\"gpu0\"]\n") "[link.0-2]\ngbps = "
	                                                                     "1\nlatency_ns = 1\n",
	        "t.toml:24:22: device.clcpu0.shares_cores_with[0]: gpu0 is not a host core (its "
	        "kind is \"gpu\"): list the \"cpu\" devices whose cores clcpu0 runs on");
	expect_error("[device.cpu]\nkind = \"cpu\"\nmodel = \"x\"\ncount = 2\ngflops = 1\n"
	             "mem_gbps = 1\nlaunch_ns = 1\nshares_cores_with = [\"cpu1\"]\n",
	             "t.toml:8:1: device.cpu.shares_cores_with: a host core (kind \"cpu\") is a "
	             "core of its own: give the relation on the accelerator that runs on host "
	             "cores");
	expect_error(CPU CLCPU("shares_cores_with = \"cpu0\"\n"),
	             "t.toml:16:21: device.clcpu0.shares_cores_with: expected an array of device "
	             "names, got string");
	expect_error(CPU CLCPU("shares_cores_with = []\n"),
	             "t.toml:16:21: device.clcpu0.shares_cores_with: 0 names (expected 1 to 64)");
	expect_error(CPU CLCPU("shares_cores_with = [0]\n"),
	             "t.toml:16:22: device.clcpu0.shares_cores_with[0]: expected a string (a "
	             "device name: a-z, 0-9, _), got integer");
	expect_error(CPU CLCPU("shares_cores_with = [\"CPU0\"]\n"),
	             "t.toml:16:22: device.clcpu0.shares_cores_with[0]: \"CPU0\" is not a device "
	             "name: a-z, 0-9, _ of 1 to 31 characters");
}

/* How a device on shared cores contends for them: the measured defaults
 * where the description is silent, its own figures where it gives them,
 * and nothing of it without shares_cores_with. */
static void test_core_contention(void **state)
{
	struct machine m;

	(void)state;
	parse_ok(CPU CLCPU("shares_cores_with = [\"cpu0\"]\n"), &m);
	assert_true(m.dev[4].core_slice_ns == MACHINE_CORE_SLICE_NS);
	assert_true(m.dev[4].core_slice_every_ns == MACHINE_CORE_SLICE_EVERY_NS);
	assert_true(m.dev[4].busy_core_share == MACHINE_BUSY_CORE_SHARE);
	assert_true(m.dev[0].core_slice_ns == 0 && m.dev[0].busy_core_share == 0);
	machine_free(&m);
	parse_ok(CPU CLCPU("shares_cores_with = [\"cpu0\"]\ncore_slice_ns = 0\n"
	                   "core_slice_every_ns = 2e6\nbusy_core_share = 1\n"),
	         &m);
	assert_true(m.dev[4].core_slice_ns == 0);
	assert_true(m.dev[4].core_slice_every_ns == 2e6);
	assert_true(m.dev[4].busy_core_share == 1);
	machine_free(&m);
	/* without the relation, none of it */
	parse_ok(CPU CLCPU(""), &m);
	assert_true(m.dev[4].core_slice_ns == 0 && m.dev[4].busy_core_share == 0);
	machine_free(&m);

	expect_error(CPU CLCPU("busy_core_share = 0.5\n"),
	             "t.toml:16:19: device.clcpu0.busy_core_share: says how this device contends "
	             "for host cores, so it needs shares_cores_with (the cores it runs on)");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\"]\nbusy_core_share = 1.5\n"),
	             "t.toml:17:19: device.clcpu0.busy_core_share: 1.5 is out of range (expected a "
	             "share in [0, 1])");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\"]\ncore_slice_every_ns = 0\n"),
	             "t.toml:17:23: device.clcpu0.core_slice_every_ns: 0 is out of range (expected "
	             "ns in [1000, 1e+12])");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\"]\ncore_slice_ns = -1\n"),
	             "t.toml:17:17: device.clcpu0.core_slice_ns: -1 is out of range (expected ns "
	             "in [0, 1e+09])");
	expect_error(CPU CLCPU("shares_cores_with = [\"cpu0\"]\ncore_slice_ns = nan\n"),
	             "t.toml:17:17: device.clcpu0.core_slice_ns: nan is out of range (expected ns "
	             "in [0, 1e+09])");
}

/* A daemon's OpenCL CPU device is written as sharing every core worker's
 * core, and reads back so. */
static char *write_machine(const struct machine *m, const json_t *models);

static void test_write_shares_cores(void **state)
{
	struct machine a, b;
	char *text;

	(void)state;
	parse_ok(CPU CLCPU(""), &a);
	assert_int_equal(a.dev[4].shares_cores, 0);
	text = write_machine(&a, NULL);
	assert_non_null(strstr(text, "\nshares_cores_with = [ \"cpu0\", \"cpu1\", \"cpu2\", "
	                             "\"cpu3\" ]\n"));
	parse_ok(text, &b);
	assert_int_equal(b.dev[4].shares_cores, 0xf);
	free(text);
	machine_free(&b);
	machine_free(&a);
	/* GPUs compute on their own */
	parse_ok(full, &a);
	text = write_machine(&a, NULL);
	assert_null(strstr(text, "shares_cores_with"));
	free(text);
	machine_free(&a);
}

/* ---- what a description turns into --------------------------------------- */

static void test_calibration(void **state)
{
	struct machine m;
	struct calibration *cal = malloc(sizeof(*cal)), *back = malloc(sizeof(*back));
	char err[ERR_MAX];
	json_t *doc;

	(void)state;
	assert_non_null(cal);
	assert_non_null(back);
	parse_ok(full, &m);
	machine_calibration(&m, cal);
	assert_int_equal(cal->ndevices, 7);
	assert_int_equal(cal->nnodes, 4);
	assert_string_equal(cal->dev[0].key, "cpu:xeon");
	assert_string_equal(cal->dev[4].key, "gpu:t4");
	assert_string_equal(cal->dev[6].key, "npu:xdna");
	assert_int_equal(cal->dev[6].node, 3);
	assert_true(cal->dev[4].gemm_gflops == 8100 && cal->dev[4].mem_gbps == 320 &&
	            cal->dev[4].launch_ns == 8000);
	assert_memory_equal(&cal->link[1][2], &m.link[1][2], sizeof(m.link[1][2]));
	assert_string_equal(cal->fingerprint, "sim:box");
	/* within the ranges calibration documents are checked against */
	doc = calibration_to_json(cal);
	assert_non_null(doc);
	assert_int_equal(calibration_from_json(doc, back, err, sizeof(err)), 0);
	json_decref(doc);
	assert_int_equal(back->ndevices, cal->ndevices);
	free(cal);
	free(back);
	machine_free(&m);
}

/* The cost tables, loaded into a real profiler, predict exactly their
 * times for every device of the model, from history. */
static void test_models_json_predicts(void **state)
{
	struct machine m;
	struct calibration *cal = malloc(sizeof(*cal));
	struct profiler *p = NULL;
	char err[ERR_MAX] = "";
	size_t skipped = 99;
	struct cost_pred pred;
	json_t *doc;

	(void)state;
	assert_non_null(cal);
	parse_ok(full, &m);
	machine_calibration(&m, cal);
	assert_int_equal(profiler_create(cal, &p), 0);
	doc = machine_models_json(&m);
	assert_non_null(doc);
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 3);
	assert_int_equal(profiler_load_json(p, doc, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 0);
	json_decref(doc);
	for (uint32_t i = 0; i < m.ncosts; i++) {
		const struct machine_cost *c = &m.costs[i];

		for (uint32_t d = 0; d < m.ndevices; d++) {
			if (strcmp(m.dev[d].model, c->model))
				continue;
			profiler_predict(p, c->kernel, d, &c->feat, &pred);
			assert_int_equal(pred.source, COST_HISTORY);
			assert_true(pred.ns == c->ns);
			/* the spread follows the row's (at least 1% of the time) */
			assert_true(fabs(pred.spread_ns - fmax(c->spread_ns, 0.01 * c->ns)) <=
			            1e-6 * c->ns);
		}
	}
	/* a size without a row is predicted otherwise */
	pred.source = COST_HISTORY;
	profiler_predict(p, KERNEL_SGEMM_NT, 4, &(struct kernel_features){ 1e6, 1e4, 10 }, &pred);
	assert_int_not_equal(pred.source, COST_HISTORY);
	profiler_destroy(p);
	free(cal);
	machine_free(&m);

	/* no tables: an empty "models" array */
	parse_ok(CPU0, &m);
	doc = machine_models_json(&m);
	assert_non_null(doc);
	assert_true(json_is_array(json_object_get(doc, "models")));
	assert_int_equal(json_array_size(json_object_get(doc, "models")), 0);
	json_decref(doc);
	machine_free(&m);
}

/* ---- writing -------------------------------------------------------------- */

/* spread: whether spreads must be equal too (a profiler's document has the
 * spread of its samples instead: at least 1% of the time). */
static void assert_same_machine(const struct machine *a, const struct machine *b, bool spread)
{
	assert_string_equal(a->name, b->name);
	assert_true(a->wake_ns == b->wake_ns);
	assert_int_equal(a->ndevices, b->ndevices);
	assert_int_equal(a->nnodes, b->nnodes);
	for (uint32_t i = 0; i < a->ndevices; i++) {
		const struct machine_device *x = &a->dev[i], *y = &b->dev[i];

		assert_string_equal(x->name, y->name);
		assert_string_equal(x->model, y->model);
		assert_int_equal(x->kind, y->kind);
		assert_int_equal(x->node, y->node);
		assert_int_equal(x->mem_bytes, y->mem_bytes);
		assert_memory_equal(&x->gemm_gflops, &y->gemm_gflops, sizeof(double));
		assert_memory_equal(&x->mem_gbps, &y->mem_gbps, sizeof(double));
		assert_memory_equal(&x->launch_ns, &y->launch_ns, sizeof(double));
		assert_int_equal(x->shares_cores, y->shares_cores);
	}
	for (uint32_t s = 0; s < a->nnodes; s++) {
		for (uint32_t d = 0; d < a->nnodes; d++) {
			assert_memory_equal(&a->link[s][d].gbps, &b->link[s][d].gbps,
			                    sizeof(double));
			assert_memory_equal(&a->link[s][d].latency_ns, &b->link[s][d].latency_ns,
			                    sizeof(double));
			assert_int_equal(a->link[s][d].measured, b->link[s][d].measured);
		}
	}
	/* the same rows, in any order */
	assert_int_equal(a->ncosts, b->ncosts);
	for (uint32_t i = 0; i < a->ncosts; i++) {
		const struct machine_cost *x = &a->costs[i];
		const struct machine_cost *y = find_cost(b, x->kernel, x->model, &x->feat);

		assert_non_null(y);
		assert_memory_equal(&x->ns, &y->ns, sizeof(double));
		if (spread)
			assert_memory_equal(&x->spread_ns, &y->spread_ns, sizeof(double));
		else
			assert_true(fabs(y->spread_ns - fmax(x->spread_ns, 0.01 * x->ns)) <=
			            1e-6 * x->ns);
	}
}

/* What a daemon on machine m would write, parsed back. */
static char *write_machine(const struct machine *m, const json_t *models)
{
	struct backend_device devs[MACHINE_MAX_DEVICES];
	struct calibration *cal = malloc(sizeof(*cal));
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(cal);
	assert_non_null(f);
	memset(devs, 0, sizeof(devs));
	for (uint32_t i = 0; i < m->ndevices; i++) {
		snprintf(devs[i].name, sizeof(devs[i].name), "%s", m->dev[i].name);
		snprintf(devs[i].model, sizeof(devs[i].model), "%s", m->dev[i].model);
		devs[i].kind = m->dev[i].kind;
		devs[i].mem_bytes = m->dev[i].mem_bytes;
		devs[i].node = m->dev[i].node;
	}
	machine_calibration(m, cal);
	assert_int_equal(machine_write(f, m->name, devs, m->ndevices, cal, models), 0);
	fclose(f);
	free(cal);
	return text;
}

static void test_write_round_trip(void **state)
{
	struct machine a, b;
	json_t *models;
	char *text;

	(void)state;
	parse_ok(full, &a);
	models = machine_models_json(&a);
	assert_non_null(models);
	text = write_machine(&a, models);
	json_decref(models);
	parse_ok(text, &b);
	assert_same_machine(&a, &b, true);
	/* tile kernels' rows are written by their tile size */
	assert_non_null(strstr(text, "\n[cost.t4.sgemm_nt]\nnb = [ 960, 320 ]\n"));
	assert_non_null(strstr(text, "\n[cost.xdna.sim_task]\nflops = [ 1000000000, "));
	free(text);
	machine_free(&b);

	/* without models: no cost table */
	text = write_machine(&a, NULL);
	parse_ok(text, &b);
	assert_int_equal(b.ncosts, 0);
	assert_int_equal(b.ndevices, a.ndevices);
	free(text);
	machine_free(&b);
	machine_free(&a);
}

/* A profiler's own document (with models for other devices, kept aside)
 * writes the same tables. */
static void test_write_from_profiler(void **state)
{
	struct machine a, b;
	struct calibration *cal = malloc(sizeof(*cal));
	struct profiler *p = NULL;
	json_t *doc, *learned;
	char *text;

	(void)state;
	assert_non_null(cal);
	parse_ok(full, &a);
	machine_calibration(&a, cal);
	assert_int_equal(profiler_create(cal, &p), 0);
	doc = machine_models_json(&a);
	assert_non_null(doc);
	json_array_append_new(
	        json_object_get(doc, "models"),
	        json_pack("{s:s, s:s, s:i, s:[{s:f, s:f, s:f, s:i, s:f, s:f, s:[f]}]}", "kernel",
	                  "spotrf", "device", "gpu:elsewhere", "samples", 1, "footprints", "flops",
	                  1.0, "bytes", 1.0, "domain", 1.0, "n", 1, "estimate_ns", 5.0, "spread_ns",
	                  0.0, "recent", 5.0));
	assert_int_equal(profiler_load_json(p, doc, NULL, NULL, 0), 0);
	json_decref(doc);
	learned = profiler_to_json(p);
	assert_non_null(learned);
	text = write_machine(&a, learned);
	json_decref(learned);
	assert_null(strstr(text, "elsewhere"));
	parse_ok(text, &b);
	assert_same_machine(&a, &b, false);
	free(text);
	machine_free(&b);
	machine_free(&a);
	profiler_destroy(p);
	free(cal);
}

/* Names that are not the format's are made so. */
static void test_write_odd_names(void **state)
{
	struct backend_device devs[3];
	struct calibration *cal = malloc(sizeof(*cal));
	struct machine m;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)state;
	assert_non_null(cal);
	memset(devs, 0, sizeof(devs));
	snprintf(devs[0].name, sizeof(devs[0].name), "CPU-0");
	snprintf(devs[0].model, sizeof(devs[0].model), "Intel(R) Xeon(R) @ 3.20GHz");
	snprintf(devs[1].name, sizeof(devs[1].name), "cpu_0");
	snprintf(devs[1].model, sizeof(devs[1].model), "Intel(R) Xeon(R) @ 3.20GHz");
	snprintf(devs[2].name, sizeof(devs[2].name), "cuda0");
	devs[2].kind = TDM_DEV_GPU;
	calibrate_defaults(3, 2, cal);
	cal->dev[2].node = 1;
	assert_int_equal(machine_write(f, "my box!", devs, 3, cal, NULL), 0);
	fclose(f);
	parse_ok(text, &m);
	assert_string_equal(m.name, "my_box_");
	assert_string_equal(m.dev[0].name, "cpu_0");
	assert_string_equal(m.dev[1].name, "dev1");
	assert_string_equal(m.dev[0].model, "Intel_R__Xeon_R____3.20GHz");
	assert_string_equal(m.dev[2].model, "unknown");
	assert_int_equal(m.dev[2].mem_bytes, UINT64_C(1) << 30);
	machine_free(&m);
	free(text);
	/* inconsistent arguments */
	assert_int_equal(machine_write(stdout, "x", devs, 2, cal, NULL), -TDM_EINVAL);
	free(cal);
}

/* ---- shipped machines ----------------------------------------------------- */

static void test_shipped_machines(void **state)
{
	struct calibration *cal = malloc(sizeof(*cal)), *back = malloc(sizeof(*back));
	glob_t g;

	(void)state;
	assert_non_null(cal);
	assert_non_null(back);
	assert_int_equal(glob("machines/*.toml", 0, NULL, &g), 0);
	assert_true(g.gl_pathc >= 4);
	for (size_t i = 0; i < g.gl_pathc; i++) {
		struct machine m;
		char err[ERR_MAX] = "";
		json_t *doc;
		int rc = machine_load(g.gl_pathv[i], &m, err, sizeof(err));

		if (rc)
			print_error("%s\n", err);
		assert_int_equal(rc, 0);
		printf("# %s: \"%s\", %u devices, %u nodes, %u cost rows\n", g.gl_pathv[i], m.name,
		       m.ndevices, m.nnodes, m.ncosts);
		machine_calibration(&m, cal);
		doc = calibration_to_json(cal);
		assert_non_null(doc);
		rc = calibration_from_json(doc, back, err, sizeof(err));
		if (rc)
			print_error("%s: %s\n", g.gl_pathv[i], err);
		assert_int_equal(rc, 0);
		json_decref(doc);
		doc = machine_models_json(&m);
		assert_non_null(doc);
		json_decref(doc);
		machine_free(&m);
	}
	globfree(&g);
	free(cal);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_minimal),
		cmocka_unit_test(test_parse_full),
		cmocka_unit_test(test_other_forms),
		cmocka_unit_test(test_errors_top_level),
		cmocka_unit_test(test_errors_devices),
		cmocka_unit_test(test_socket_gbps),
		cmocka_unit_test(test_too_many_device_tables),
		cmocka_unit_test(test_errors_links),
		cmocka_unit_test(test_errors_costs),
		cmocka_unit_test(test_too_many_cost_rows),
		cmocka_unit_test(test_first_error_in_text_order),
		cmocka_unit_test(test_input_limits),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_restrict),
		cmocka_unit_test(test_shares_cores),
		cmocka_unit_test(test_core_contention),
		cmocka_unit_test(test_write_shares_cores),
		cmocka_unit_test(test_calibration),
		cmocka_unit_test(test_models_json_predicts),
		cmocka_unit_test(test_write_round_trip),
		cmocka_unit_test(test_write_from_profiler),
		cmocka_unit_test(test_write_odd_names),
		cmocka_unit_test(test_shipped_machines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
