/* Unit tests for profiler/calibrate.c: device keys, fingerprints, the run
 * on this machine's real devices (CPU cores, OpenCL devices such as PoCL,
 * CUDA devices through the plugin), the cache file and the JSON document.
 * Timings are only checked for sanity (finite, > 0); the figures measured
 * are printed. Without an accelerator, its part skips and says why. */
#include <dirent.h>
#include <hwloc.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "profiler/calibrate.h"
#include "tandem.h"

#define MAX_DEVS 48

static hwloc_topology_t topo;
static struct backend_device devs[MAX_DEVS];
static uint16_t nodes[MAX_DEVS];
static size_t ndevs, ncpu;
static bool cuda_loaded;

/* ---- the machine's devices ---- */

static void add_backend(const struct backend_ops *ops)
{
	struct backend_probe_params pp = { .topology = topo };
	size_t found = 0;

	if (ops->probe(&pp, devs + ndevs, MAX_DEVS - ndevs, &found) != 0)
		found = 0;
	if (!found)
		printf("# %s: no device: %s\n", ops->name, pp.note);
	for (size_t i = ndevs; i < ndevs + found; i++) {
		/* Each accelerator has a memory node of its own, host devices node 0. */
		nodes[i] = backend_is_accelerator(&devs[i]) ? (uint16_t)(i - ncpu + 1) : 0;
		devs[i].node = nodes[i];
	}
	ndevs += found;
}

static int group_setup(void **state)
{
	char note[BACKEND_NOTE_MAX] = "";
	const struct backend_ops *cuda;

	(void)state;
	if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0)
		return -1;
	add_backend(&backend_cpu);
	ncpu = ndevs;
	add_backend(&backend_opencl);
	cuda = backend_cuda_load(NULL, note, sizeof(note));
	cuda_loaded = cuda != NULL;
	if (cuda)
		add_backend(cuda);
	else
		printf("# cuda: not used: %s\n", note);
	return ncpu ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < ndevs; i++)
		devs[i].ops->release(&devs[i]);
	if (cuda_loaded)
		backend_cuda_unload();
	hwloc_topology_destroy(topo);
	return 0;
}

static const struct backend_device *first_of_kind(enum tdm_device_kind kind)
{
	for (size_t i = 0; i < ndevs; i++)
		if (devs[i].kind == kind)
			return &devs[i];
	return NULL;
}

/* A host device that is not real hardware, for keys and fingerprints. */
static struct backend_device fake_cpu(const char *model)
{
	struct backend_device d = { .kind = TDM_DEV_CPU, .ops = &backend_cpu, .numa_node = -1 };
	snprintf(d.model, sizeof(d.model), "%s", model);
	return d;
}

/* ---- checks shared by the tests ---- */

static void assert_valid_link(const struct cal_link *l)
{
	assert_true(isfinite(l->gbps) && l->gbps > 0);
	assert_true(isfinite(l->latency_ns) && l->latency_ns >= 0);
}

static void assert_sane(const struct calibration *c, size_t n)
{
	assert_int_equal(c->ndevices, n);
	assert_true(c->nnodes >= 1 && c->nnodes <= CAL_MAX_NODES);
	for (size_t i = 0; i < n; i++) {
		const struct cal_device *d = &c->dev[i];
		assert_true(isfinite(d->gemm_gflops) && d->gemm_gflops > 0);
		assert_true(isfinite(d->mem_gbps) && d->mem_gbps > 0);
		assert_true(isfinite(d->launch_ns) && d->launch_ns > 0);
		assert_true(d->node < c->nnodes);
		assert_true(strlen(d->key) > 0 && strlen(d->key) < CAL_KEY_MAX);
	}
	for (uint32_t s = 0; s < c->nnodes; s++)
		for (uint32_t d = 0; d < c->nnodes; d++)
			assert_valid_link(&c->link[s][d]);
	assert_true(isfinite(c->seconds) && c->seconds >= 0);
	assert_true(isfinite(c->wake_ns) && c->wake_ns >= 0 && c->wake_ns <= 1e9);
}

static void assert_same_figures(const struct calibration *a, const struct calibration *b)
{
	assert_string_equal(a->fingerprint, b->fingerprint);
	assert_int_equal(a->ndevices, b->ndevices);
	assert_int_equal(a->nnodes, b->nnodes);
	assert_true(a->seconds == b->seconds);
	assert_true(a->wake_ns == b->wake_ns);
	for (uint32_t i = 0; i < a->ndevices; i++) {
		assert_string_equal(a->dev[i].key, b->dev[i].key);
		assert_int_equal(a->dev[i].node, b->dev[i].node);
		assert_true(a->dev[i].gemm_gflops == b->dev[i].gemm_gflops);
		assert_true(a->dev[i].mem_gbps == b->dev[i].mem_gbps);
		assert_true(a->dev[i].launch_ns == b->dev[i].launch_ns);
	}
	for (uint32_t s = 0; s < a->nnodes; s++) {
		for (uint32_t d = 0; d < a->nnodes; d++) {
			assert_true(a->link[s][d].gbps == b->link[s][d].gbps);
			assert_true(a->link[s][d].latency_ns == b->link[s][d].latency_ns);
			assert_int_equal(a->link[s][d].measured, b->link[s][d].measured);
		}
	}
}

static void print_figures(const struct calibration *c)
{
	printf("# calibration: %.3f s%s\n", c->seconds, c->from_cache ? " (from cache)" : "");
	for (uint32_t i = 0; i < c->ndevices; i++) {
		const struct cal_device *d = &c->dev[i];
		if (i && !strcmp(d->key, c->dev[i - 1].key))
			continue;
		printf("#   %s (node %u): sgemm %.1f GFLOP/s, memory %.2f GB/s, launch %.0f ns\n",
		       d->key, d->node, d->gemm_gflops, d->mem_gbps, d->launch_ns);
	}
	for (uint32_t s = 0; s < c->nnodes; s++)
		for (uint32_t d = 0; d < c->nnodes; d++)
			printf("#   link %u->%u: %.2f GB/s, latency %.2f us%s\n", s, d,
			       c->link[s][d].gbps, c->link[s][d].latency_ns / 1e3,
			       c->link[s][d].measured ? "" : " (derived)");
}

/* ---- keys ---- */

static void test_key_sanitized(void **state)
{
	struct backend_device d = fake_cpu("Intel(R) Xeon(R) Gold 6430 @ 2.1GHz");
	char key[CAL_KEY_MAX], small[8];

	(void)state;
	calibrate_device_key(&d, key, sizeof(key));
	assert_string_equal(key, "cpu:Intel_R__Xeon_R__Gold_6430___2.1GHz");
	d.kind = TDM_DEV_GPU;
	snprintf(d.model, sizeof(d.model), "NVIDIA H100 80GB HBM3/é");
	calibrate_device_key(&d, key, sizeof(key));
	assert_string_equal(key, "gpu:NVIDIA_H100_80GB_HBM3___");
	calibrate_device_key(&d, small, sizeof(small));
	assert_string_equal(small, "gpu:NVI");
	/* A whole model of 63 bytes still fits a key. */
	memset(d.model, 'x', sizeof(d.model) - 1);
	d.model[sizeof(d.model) - 1] = '\0';
	calibrate_device_key(&d, key, sizeof(key));
	assert_int_equal(strlen(key), 4 + sizeof(d.model) - 1);
}

static void test_keys_real_devices(void **state)
{
	const struct backend_device *cl = first_of_kind(TDM_DEV_CLCPU);
	char first[CAL_KEY_MAX], key[CAL_KEY_MAX];

	(void)state;
	calibrate_device_key(&devs[0], first, sizeof(first));
	printf("# %zu CPU device(s), key %s\n", ncpu, first);
	assert_true(!strncmp(first, "cpu:", 4));
	for (size_t i = 1; i < ncpu; i++) {
		calibrate_device_key(&devs[i], key, sizeof(key));
		assert_string_equal(key, first);
	}
	if (!cl) {
		printf("# skipped: no OpenCL CPU device to tell apart from the cores\n");
		skip();
	}
	calibrate_device_key(cl, key, sizeof(key));
	printf("# %s: key %s\n", cl->name, key);
	assert_true(!strncmp(key, "clcpu:", 6));
	assert_string_not_equal(key, first);
}

/* ---- fingerprints ---- */

static void fingerprint(const struct backend_device *d, const uint16_t *nd, size_t n, char *out)
{
	calibrate_fingerprint(d, nd, n, out, sizeof(((struct calibration *)0)->fingerprint));
}

static void test_fingerprint_real(void **state)
{
	char a[512], b[512];
	struct backend_device copy[MAX_DEVS];

	(void)state;
	fingerprint(devs, nodes, ndevs, a);
	fingerprint(devs, nodes, ndevs, b);
	printf("# fingerprint: %s\n", a);
	assert_string_equal(a, b);
	assert_true(strlen(a) > 0);

	memcpy(copy, devs, sizeof(copy));
	snprintf(copy[ncpu - 1].model, sizeof(copy[0].model), "another CPU");
	fingerprint(copy, nodes, ndevs, b);
	assert_string_not_equal(a, b);
	/* One core fewer. */
	fingerprint(devs + 1, nodes + 1, ndevs - 1, b);
	assert_string_not_equal(a, b);
	if (ndevs > ncpu) {
		memcpy(copy, devs, sizeof(copy));
		copy[ncpu].mem_bytes += 4096;
		fingerprint(copy, nodes, ndevs, b);
		assert_string_not_equal(a, b);
	}
}

/* Many long keys do not fit the readable form: a hash still tells them apart. */
static void test_fingerprint_long(void **state)
{
	static struct backend_device many[CAL_MAX_DEVICES];
	uint16_t nd[CAL_MAX_DEVICES] = { 0 };
	char a[512], b[512], small[24];
	char model[64];

	(void)state;
	for (size_t i = 0; i < CAL_MAX_DEVICES; i++) {
		/* Different models, so that no two entries merge. */
		snprintf(model, sizeof(model), "%055zu", i);
		many[i] = fake_cpu(model);
	}
	fingerprint(many, nd, CAL_MAX_DEVICES, a);
	assert_true(strlen(a) < sizeof(a));
	assert_non_null(strstr(a, " #"));
	snprintf(many[CAL_MAX_DEVICES - 1].model, sizeof(model), "changed");
	fingerprint(many, nd, CAL_MAX_DEVICES, b);
	assert_string_not_equal(a, b);
	calibrate_fingerprint(many, nd, CAL_MAX_DEVICES, small, sizeof(small));
	assert_true(strlen(small) < sizeof(small));
	/* Identical devices collapse into one entry with a count. */
	for (size_t i = 0; i < CAL_MAX_DEVICES; i++)
		many[i] = fake_cpu("same core");
	fingerprint(many, nd, CAL_MAX_DEVICES, a);
	assert_null(strstr(a, " #"));
	assert_non_null(strstr(a, "cpu:same_core@0/0x64"));
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
	struct calibration c;

	(void)state;
	calibrate_defaults(3, 2, &c);
	assert_sane(&c, 3);
	assert_int_equal(c.nnodes, 2);
	assert_string_equal(c.dev[0].key, "dev0");
	assert_string_equal(c.dev[2].key, "dev2");
	assert_false(c.from_cache);
	for (int s = 0; s < 2; s++)
		for (int d = 0; d < 2; d++)
			assert_false(c.link[s][d].measured);
	assert_true(c.link[0][0].latency_ns == 0);
	assert_true(c.link[0][1].latency_ns > 0);
	/* Out-of-range requests are clamped. */
	calibrate_defaults(CAL_MAX_DEVICES + 5, 0, &c);
	assert_int_equal(c.ndevices, CAL_MAX_DEVICES);
	assert_int_equal(c.nnodes, 1);
}

/* ---- the run on this machine ---- */

static void test_run_real_devices(void **state)
{
	struct calibration *c = calloc(1, sizeof(*c));
	uint32_t accel_nodes = 0;

	(void)state;
	assert_non_null(c);
	assert_int_equal(calibrate_run(devs, nodes, ndevs, c), 0);
	print_figures(c);
	assert_sane(c, ndevs);
	assert_false(c->from_cache);
	assert_true(c->seconds > 0);
	/* Two threads and two eventfds: nothing here can keep it from being
	 * measured, and a wake-up takes some time. */
	printf("# a sleeping thread wakes in %.1f us\n", c->wake_ns / 1e3);
	assert_true(c->wake_ns > 0);
	for (size_t i = 0; i < ndevs; i++) {
		char key[CAL_KEY_MAX];
		calibrate_device_key(&devs[i], key, sizeof(key));
		assert_string_equal(c->dev[i].key, key);
		assert_int_equal(c->dev[i].node, nodes[i]);
		if (nodes[i] > accel_nodes)
			accel_nodes = nodes[i];
	}
	/* Identical cores share one measurement. */
	for (size_t i = 1; i < ncpu; i++)
		if (!strcmp(c->dev[i].key, c->dev[0].key))
			assert_true(c->dev[i].gemm_gflops == c->dev[0].gemm_gflops);
	assert_int_equal(c->nnodes, accel_nodes + 1);
	assert_true(c->link[0][0].measured);
	for (uint32_t k = 1; k < c->nnodes; k++) {
		assert_true(c->link[0][k].measured);
		assert_true(c->link[k][0].measured);
		assert_false(c->link[k][k].measured);
		assert_true(c->link[k][k].latency_ns == 0);
	}
	if (ndevs == ncpu)
		printf("# no accelerator: only the host node was measured\n");
	free(c);
}

static void test_run_no_devices(void **state)
{
	struct calibration c;

	(void)state;
	assert_int_equal(calibrate_run(NULL, NULL, 0, &c), 0);
	assert_sane(&c, 0);
	assert_int_equal(c.nnodes, 1);
	assert_true(c.link[0][0].measured);
}

static void test_run_bad_arguments(void **state)
{
	struct backend_device d[2] = { devs[0], devs[0] };
	uint16_t nd[2] = { 0, 0 };
	struct calibration c, before;

	(void)state;
	memset(&c, 0x5a, sizeof(c));
	memcpy(&before, &c, sizeof(c));
	nd[1] = 1; /* a host device on an accelerator's node */
	assert_int_equal(calibrate_run(d, nd, 2, &c), -TDM_EINVAL);
	nd[1] = CAL_MAX_NODES;
	assert_int_equal(calibrate_run(d, nd, 2, &c), -TDM_EINVAL);
	assert_int_equal(calibrate_run(d, nd, CAL_MAX_DEVICES + 1, &c), -TDM_EINVAL);
	assert_int_equal(calibrate_run(NULL, nd, 1, &c), -TDM_EINVAL);
	assert_memory_equal(&c, &before, sizeof(c));
	if (ndevs > ncpu) {
		d[1] = devs[ncpu]; /* an accelerator on the host's node */
		nd[1] = 0;
		assert_int_equal(calibrate_run(d, nd, 2, &c), -TDM_EINVAL);
	}
}

/* ---- one device joining a running daemon ---- */

/* A core calibrated alone into the slot after the others: its figures are
 * measured, every other figure stays as it was. */
static void test_one_host_device(void **state)
{
	struct calibration *c = calloc(1, sizeof(*c)), *before = calloc(1, sizeof(*c));
	(void)state;
	assert_non_null(c);
	assert_non_null(before);
	calibrate_defaults(ncpu, 1, c);
	memcpy(before, c, sizeof(*c));
	uint32_t slot = (uint32_t)ncpu + 2; /* a gap: ids of devices that left */
	assert_int_equal(calibrate_one(&devs[0], 0, slot, c), 0);
	assert_int_equal(c->ndevices, slot + 1);
	assert_int_equal(c->nnodes, 1);
	char key[CAL_KEY_MAX];
	calibrate_device_key(&devs[0], key, sizeof(key));
	assert_string_equal(c->dev[slot].key, key);
	assert_int_equal(c->dev[slot].node, 0);
	assert_sane(c, slot + 1);
	/* Measured: not the generic figures (a core does more than them). */
	assert_true(c->dev[slot].gemm_gflops != before->dev[0].gemm_gflops);
	assert_memory_equal(&c->dev[0], &before->dev[0], ncpu * sizeof(c->dev[0]));
	assert_memory_equal(c->link, before->link, sizeof(c->link));
	free(c);
	free(before);
}

/* An accelerator on a node the calibration did not have: its links to the
 * host are measured, those to the others derived. */
static void test_one_accelerator(void **state)
{
	const struct backend_device *a = first_of_kind(TDM_DEV_CLCPU);
	(void)state;
	if (!a) {
		printf("# skipped: no OpenCL device\n");
		skip();
	}
	struct calibration *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	calibrate_defaults(ncpu, 2, c); /* node 1: some accelerator already there */
	struct cal_link host_link = c->link[0][0];
	assert_int_equal(calibrate_one(a, 2, (uint32_t)ncpu, c), 0);
	assert_int_equal(c->nnodes, 3);
	assert_int_equal(c->dev[ncpu].node, 2);
	assert_sane(c, ncpu + 1);
	assert_true(c->link[0][2].measured);
	assert_true(c->link[2][0].measured);
	assert_false(c->link[1][2].measured);
	assert_true(c->link[1][2].gbps > 0 && c->link[1][2].gbps <= c->link[0][2].gbps);
	assert_memory_equal(&c->link[0][0], &host_link, sizeof(host_link));
	free(c);
}

static void test_one_bad_arguments(void **state)
{
	struct calibration c;
	(void)state;
	calibrate_defaults(1, 1, &c);
	assert_int_equal(calibrate_one(&devs[0], 1, 1, &c), -TDM_EINVAL); /* host on node 1 */
	assert_int_equal(calibrate_one(&devs[0], 0, CAL_MAX_DEVICES, &c), -TDM_EINVAL);
	assert_int_equal(calibrate_one(&devs[0], 0, 1, NULL), -TDM_EINVAL);
	assert_int_equal(c.ndevices, 1);
}

/* ---- measurements that fail ---- */

/* A host device without kernels and an accelerator whose every call fails:
 * the run still succeeds, with generic figures where nothing was measured. */
static bool fake_supports_none(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	(void)k;
	return false;
}

static bool fake_supports_all(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	(void)k;
	return true;
}

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d;
	(void)k;
	(void)call;
	return -TDM_EDEVICE;
}

static int fake_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	(void)d;
	(void)bytes;
	(void)mem;
	return -TDM_ENOMEM;
}

static int fake_launch_async(const struct backend_device *d, const struct kernel_def *k,
                             const struct tdm_kernel_call *call, struct backend_event *const *waits,
                             size_t nwaits, struct backend_event **done)
{
	(void)d;
	(void)k;
	(void)call;
	(void)waits;
	(void)nwaits;
	(void)done;
	return -TDM_EDEVICE;
}

static const struct backend_ops fake_host_ops = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "fakehost",
	.supports = fake_supports_none,
	.launch = fake_launch,
};

static const struct backend_ops fake_accel_ops = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "fakeaccel",
	.supports = fake_supports_all,
	.mem_alloc = fake_alloc,
	.launch_async = fake_launch_async,
};

static void assert_generic(const struct cal_device *d)
{
	struct calibration def;

	calibrate_defaults(1, 1, &def);
	assert_true(d->gemm_gflops == def.dev[0].gemm_gflops);
	assert_true(d->mem_gbps == def.dev[0].mem_gbps);
	assert_true(d->launch_ns == def.dev[0].launch_ns);
}

static void test_run_failures_fall_back(void **state)
{
	struct backend_device d[3] = { fake_cpu("no kernels"), devs[0], fake_cpu("accel") };
	uint16_t nd[3] = { 0, 0, 1 };
	struct calibration c, def;

	(void)state;
	d[0].ops = &fake_host_ops;
	d[2].ops = &fake_accel_ops;
	snprintf(d[2].name, sizeof(d[2].name), "fake0");
	d[2].kind = TDM_DEV_GPU;
	assert_int_equal(calibrate_run(d, nd, 3, &c), 0);
	print_figures(&c);
	assert_sane(&c, 3);
	assert_generic(&c.dev[0]);
	assert_generic(&c.dev[2]);
	/* The real core beside them was measured. */
	assert_true(c.dev[1].gemm_gflops != c.dev[0].gemm_gflops);
	assert_true(c.link[0][0].measured);
	calibrate_defaults(1, 2, &def);
	assert_false(c.link[0][1].measured);
	assert_false(c.link[1][0].measured);
	assert_true(c.link[0][1].gbps == def.link[0][1].gbps);
	assert_true(c.link[1][0].latency_ns == def.link[1][0].latency_ns);
}

/* ---- JSON ---- */

/* A calibration with every field set to something distinct. */
static void sample(struct calibration *c)
{
	calibrate_defaults(3, 2, c);
	snprintf(c->fingerprint, sizeof(c->fingerprint), "cal1 cpus=2 cpu:x@0/0x2 gpu:y@1/16x1");
	snprintf(c->dev[2].key, sizeof(c->dev[2].key), "gpu:NVIDIA_H100");
	c->dev[2].node = 1;
	c->dev[0].gemm_gflops = 87.123456789;
	c->dev[2].mem_gbps = 2999.5;
	c->dev[1].launch_ns = 0;
	c->link[0][1] = (struct cal_link){ 24.75, 8123.25, true };
	c->link[1][0] = (struct cal_link){ 1.0 / 3.0, 1e-3, true };
	c->seconds = 0.8125;
	c->wake_ns = 23456.5;
}

static json_t *round_trip_text(const json_t *doc)
{
	char *text = json_dumps(doc, JSON_INDENT(2));
	json_error_t jerr;
	json_t *back;

	assert_non_null(text);
	back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	assert_non_null(back);
	return back;
}

static void test_json_round_trip(void **state)
{
	struct calibration a, b;
	char err[256] = "x";
	json_t *doc, *back;

	(void)state;
	sample(&a);
	doc = calibration_to_json(&a);
	assert_non_null(doc);
	assert_int_equal(json_integer_value(json_object_get(doc, "version")), 2);
	assert_int_equal(json_array_size(json_object_get(doc, "devices")), 3);
	assert_int_equal(json_array_size(json_object_get(doc, "links")), 4);
	back = round_trip_text(doc);
	memset(&b, 0xa5, sizeof(b));
	assert_int_equal(calibration_from_json(back, &b, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_same_figures(&a, &b);
	assert_false(b.from_cache);
	json_decref(back);
	json_decref(doc);
}

/* ---- malformed documents ---- */

/* A valid document to break: sample() as JSON. */
static json_t *valid_doc(void)
{
	struct calibration c;
	sample(&c);
	json_t *doc = calibration_to_json(&c);
	assert_non_null(doc);
	return doc;
}

/* from_json must fail with a message that names want, and leave out alone. */
static void expect_rejected(const json_t *doc, const char *label, const char *want)
{
	struct calibration out, before;
	char err[256] = "";
	int rc;

	memset(&out, 0xa5, sizeof(out));
	memcpy(&before, &out, sizeof(out));
	rc = calibration_from_json(doc, &out, err, sizeof(err));
	if (rc != -TDM_EINVAL)
		fail_msg("%s: accepted (rc %d)", label, rc);
	printf("# %s: %s\n", label, err);
	assert_true(!strncmp(err, "calibration: ", 13));
	if (!strstr(err, want))
		fail_msg("%s: message \"%s\" does not name \"%s\"", label, err, want);
	assert_memory_equal(&out, &before, sizeof(out));
}

struct mutation {
	const char *label;
	const char *where; /* "" the document, "dev" devices[1], "link" links[1] */
	const char *field;
	const char *value; /* JSON text; NULL: the field is removed */
	const char *want; /* in the message */
};

static const struct mutation mutations[] = {
	{ "version missing", "", "version", NULL, "version: missing" },
	{ "version 1", "", "version", "1", "version" },
	{ "version 3", "", "version", "3", "version" },
	{ "version string", "", "version", "\"1\"", "version" },
	{ "fingerprint missing", "", "fingerprint", NULL, "fingerprint: missing" },
	{ "fingerprint number", "", "fingerprint", "5", "fingerprint" },
	{ "fingerprint empty", "", "fingerprint", "\"\"", "fingerprint" },
	{ "fingerprint NUL", "", "fingerprint", "\"a\\u0000b\"", "fingerprint" },
	{ "fingerprint control", "", "fingerprint", "\"a\\nb\"", "fingerprint" },
	{ "seconds negative", "", "seconds", "-1", "seconds" },
	{ "seconds huge", "", "seconds", "1e300", "seconds" },
	{ "seconds string", "", "seconds", "\"0.5\"", "seconds" },
	{ "nnodes zero", "", "nnodes", "0", "nnodes" },
	{ "nnodes too many", "", "nnodes", "17", "nnodes" },
	{ "nnodes missing", "", "nnodes", NULL, "nnodes: missing" },
	{ "nnodes real", "", "nnodes", "2.0", "nnodes" },
	{ "wake_ns missing", "", "wake_ns", NULL, "wake_ns: missing" },
	{ "wake_ns negative", "", "wake_ns", "-1", "wake_ns" },
	{ "wake_ns huge", "", "wake_ns", "1e12", "wake_ns" },
	{ "wake_ns string", "", "wake_ns", "\"20us\"", "wake_ns" },
	{ "devices missing", "", "devices", NULL, "devices" },
	{ "devices object", "", "devices", "{}", "devices" },
	{ "links missing", "", "links", NULL, "links" },
	{ "links short", "", "links", "[]", "links" },
	{ "key missing", "dev", "key", NULL, "devices[1].key: missing" },
	{ "key number", "dev", "key", "7", "devices[1].key" },
	{ "key empty", "dev", "key", "\"\"", "devices[1].key" },
	{ "key space", "dev", "key", "\"cpu:a b\"", "devices[1].key" },
	{ "key NUL", "dev", "key", "\"cpu\\u0000x\"", "devices[1].key" },
	{ "node out of range", "dev", "node", "2", "devices[1].node" },
	{ "node negative", "dev", "node", "-1", "devices[1].node" },
	{ "node real", "dev", "node", "0.5", "devices[1].node" },
	{ "gflops zero", "dev", "gemm_gflops", "0", "devices[1].gemm_gflops" },
	{ "gflops negative", "dev", "gemm_gflops", "-3.5", "devices[1].gemm_gflops" },
	{ "gflops huge", "dev", "gemm_gflops", "1e308", "devices[1].gemm_gflops" },
	{ "gflops null", "dev", "gemm_gflops", "null", "devices[1].gemm_gflops" },
	{ "gflops missing", "dev", "gemm_gflops", NULL, "devices[1].gemm_gflops: missing" },
	{ "mem_gbps string", "dev", "mem_gbps", "\"NaN\"", "devices[1].mem_gbps" },
	{ "mem_gbps huge", "dev", "mem_gbps", "1e5", "devices[1].mem_gbps" },
	{ "launch negative", "dev", "launch_ns", "-1", "devices[1].launch_ns" },
	{ "launch huge", "dev", "launch_ns", "1e9", "devices[1].launch_ns" },
	{ "launch missing", "dev", "launch_ns", NULL, "devices[1].launch_ns" },
	{ "src out of range", "link", "src", "2", "links[1].src" },
	{ "dst negative", "link", "dst", "-1", "links[1].dst" },
	{ "gbps zero", "link", "gbps", "0", "links[1].gbps" },
	{ "gbps array", "link", "gbps", "[1]", "links[1].gbps" },
	{ "latency negative", "link", "latency_ns", "-5", "links[1].latency_ns" },
	{ "latency missing", "link", "latency_ns", NULL, "links[1].latency_ns" },
	{ "measured string", "link", "measured", "\"yes\"", "links[1].measured" },
	{ "measured missing", "link", "measured", NULL, "links[1].measured" },
	/* links[1] is 0->1; made 0->0 it repeats links[0]. */
	{ "duplicate link", "link", "dst", "0", "appears twice" },
};

static void apply(json_t *doc, const struct mutation *m)
{
	json_t *target = doc;
	json_error_t jerr;

	if (!strcmp(m->where, "dev"))
		target = json_array_get(json_object_get(doc, "devices"), 1);
	else if (!strcmp(m->where, "link"))
		target = json_array_get(json_object_get(doc, "links"), 1);
	assert_non_null(target);
	if (!m->value) {
		assert_int_equal(json_object_del(target, m->field), 0);
		return;
	}
	json_t *v = json_loads(m->value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!v)
		fail_msg("%s: bad test value %s: %s", m->label, m->value, jerr.text);
	assert_int_equal(json_object_set_new(target, m->field, v), 0);
}

static void test_json_malformed_fields(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
		json_t *doc = valid_doc();
		apply(doc, &mutations[i]);
		expect_rejected(doc, mutations[i].label, mutations[i].want);
		json_decref(doc);
	}
}

static void test_json_malformed_shapes(void **state)
{
	json_t *doc, *arr;
	char longer[600];

	(void)state;
	doc = json_array();
	expect_rejected(doc, "not an object", "must be a JSON object");
	json_decref(doc);

	/* Too many devices. */
	doc = valid_doc();
	arr = json_object_get(doc, "devices");
	while (json_array_size(arr) <= CAL_MAX_DEVICES)
		json_array_append(arr, json_array_get(arr, 0));
	expect_rejected(doc, "65 devices", "at most 64");
	json_decref(doc);

	/* A device that is not an object. */
	doc = valid_doc();
	json_array_set_new(json_object_get(doc, "devices"), 0, json_integer(3));
	expect_rejected(doc, "device not an object", "devices[0]: must be an object");
	json_decref(doc);

	/* One link too many. */
	doc = valid_doc();
	arr = json_object_get(doc, "links");
	json_array_append(arr, json_array_get(arr, 0));
	expect_rejected(doc, "five links", "links: 5 links");
	json_decref(doc);

	/* A fingerprint longer than the field. */
	doc = valid_doc();
	memset(longer, 'f', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	json_object_set_new(doc, "fingerprint", json_string(longer));
	expect_rejected(doc, "long fingerprint", "fingerprint");
	json_decref(doc);

	/* A key longer than CAL_KEY_MAX - 1. */
	doc = valid_doc();
	longer[CAL_KEY_MAX] = '\0';
	json_object_set_new(json_array_get(json_object_get(doc, "devices"), 0), "key",
	                    json_string(longer));
	expect_rejected(doc, "long key", "devices[0].key");
	json_decref(doc);
}

/* Unknown fields are ignored (a later version may add some). */
static void test_json_extra_fields(void **state)
{
	struct calibration c;
	char err[256];
	json_t *doc = valid_doc();

	(void)state;
	json_object_set_new(doc, "comment", json_string("hello"));
	json_object_set_new(json_array_get(json_object_get(doc, "devices"), 0), "extra",
	                    json_true());
	assert_int_equal(calibration_from_json(doc, &c, err, sizeof(err)), 0);
	json_decref(doc);
}

/* ---- the cache ---- */

struct tmpdir {
	char root[64]; /* mkdtemp */
	char state[128]; /* root/a/b: created by the code under test */
	char file[192];
};

static void tmpdir_make(struct tmpdir *t)
{
	snprintf(t->root, sizeof(t->root), "/tmp/test_calibrate.XXXXXX");
	assert_non_null(mkdtemp(t->root));
	snprintf(t->state, sizeof(t->state), "%s/a/b", t->root);
	assert_int_equal(calibrate_cache_path(t->state, devs, nodes, 1, t->file, sizeof(t->file)),
	                 0);
}

/* Files in the state directory: only ncache cache files (one per device
 * set), no temp file left over. */
static void assert_only_cache(const struct tmpdir *t, int ncache)
{
	DIR *d = opendir(t->state);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		size_t len = strlen(e->d_name);
		/* calibration-<16 hex digits>.json */
		assert_int_equal(len, 12 + 16 + 5);
		assert_memory_equal(e->d_name, "calibration-", 12);
		assert_string_equal(e->d_name + len - 5, ".json");
		n++;
	}
	closedir(d);
	assert_int_equal(n, ncache);
}

static void tmpdir_remove(const struct tmpdir *t)
{
	char path[600];
	DIR *d = opendir(t->state);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", t->state, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(t->state);
	snprintf(path, sizeof(path), "%s/a", t->root);
	rmdir(path);
	assert_int_equal(rmdir(t->root), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* The cache tests use one core: the cache logic, not the devices, is under test. */
static void test_cache(void **state)
{
	struct calibration *a = calloc(4, sizeof(*a)), *b = a + 1, *c = a + 2, *d = a + 3;
	struct backend_device other = devs[0];
	struct tmpdir t;
	struct stat st;

	(void)state;
	assert_non_null(a);
	tmpdir_make(&t);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, a), 0);
	assert_false(a->from_cache);
	assert_int_equal(stat(t.state, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(t.file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_only_cache(&t, 1);

	/* Second start: the figures come from the file. */
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, b), 0);
	assert_true(b->from_cache);
	assert_same_figures(a, b);

	/* Forced: measured again (the run's own time differs). */
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, true, c), 0);
	assert_false(c->from_cache);
	assert_string_equal(c->fingerprint, a->fingerprint);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, b), 0);
	assert_true(b->from_cache);
	assert_same_figures(c, b);

	/* Other hardware: measured, in a file of its own; the first device
	 * set's figures stay cached. */
	snprintf(other.model, sizeof(other.model), "another core");
	assert_int_equal(calibrate_load_or_run(t.state, &other, nodes, 1, false, d), 0);
	assert_false(d->from_cache);
	assert_string_not_equal(d->fingerprint, a->fingerprint);
	assert_int_equal(calibrate_load_or_run(t.state, &other, nodes, 1, false, b), 0);
	assert_true(b->from_cache);
	assert_same_figures(d, b);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, b), 0);
	assert_true(b->from_cache);
	assert_same_figures(c, b);
	assert_only_cache(&t, 2);

	/* A damaged file: measured again and rewritten. */
	write_file(t.file, "{\"version\": 1, \"fingerprint\": ");
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, b), 0);
	assert_false(b->from_cache);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, c), 0);
	assert_true(c->from_cache);
	assert_same_figures(b, c);
	assert_only_cache(&t, 2);

	tmpdir_remove(&t);
	free(a);
}

/* A matching fingerprint is not enough: the figures must be in range too. */
static void test_cache_bad_figures(void **state)
{
	struct calibration *a = calloc(2, sizeof(*a)), *b = a + 1;
	struct tmpdir t;
	json_t *doc;

	(void)state;
	assert_non_null(a);
	tmpdir_make(&t);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, a), 0);
	a->dev[0].gemm_gflops = -1;
	doc = calibration_to_json(a);
	assert_non_null(doc);
	assert_int_equal(json_dump_file(doc, t.file, 0), 0);
	json_decref(doc);
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, b), 0);
	assert_false(b->from_cache);
	assert_true(b->dev[0].gemm_gflops > 0);
	tmpdir_remove(&t);
	free(a);
}

static void test_cache_unusable_dir(void **state)
{
	struct calibration c;
	struct tmpdir t;
	char dir[256];

	(void)state;
	tmpdir_make(&t);
	/* A regular file where the directory should be: measured, not cached. */
	snprintf(dir, sizeof(dir), "%s/file", t.root);
	write_file(dir, "x");
	strcat(dir, "/sub");
	assert_int_equal(calibrate_load_or_run(dir, devs, nodes, 1, false, &c), 0);
	assert_false(c.from_cache);
	assert_sane(&c, 1);
	/* No state directory at all: measured. */
	assert_int_equal(calibrate_load_or_run(NULL, devs, nodes, 1, false, &c), 0);
	assert_false(c.from_cache);
	assert_int_equal(calibrate_load_or_run("", devs, nodes, 1, false, &c), 0);
	assert_false(c.from_cache);
	snprintf(dir, sizeof(dir), "%s/file", t.root);
	unlink(dir);
	assert_int_equal(rmdir(t.root), 0);
}

/* Two daemons starting at once, as threads writing the same state
 * directory: whatever order the renames land in, the file is whole. */
struct writer {
	const char *dir;
	int rc;
	struct calibration c;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int i = 0; i < 3 && !w->rc; i++)
		w->rc = calibrate_load_or_run(w->dir, devs, nodes, 1, true, &w->c);
	return NULL;
}

static void test_cache_concurrent(void **state)
{
	struct writer *w = calloc(2, sizeof(*w));
	struct calibration *c = calloc(1, sizeof(*c));
	pthread_t th[2];
	struct tmpdir t;

	(void)state;
	assert_non_null(w);
	assert_non_null(c);
	tmpdir_make(&t);
	for (int i = 0; i < 2; i++) {
		w[i].dir = t.state;
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].rc, 0);
	}
	assert_int_equal(calibrate_load_or_run(t.state, devs, nodes, 1, false, c), 0);
	assert_true(c->from_cache);
	assert_only_cache(&t, 1);
	tmpdir_remove(&t);
	free(c);
	free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_sanitized),
		cmocka_unit_test(test_keys_real_devices),
		cmocka_unit_test(test_fingerprint_real),
		cmocka_unit_test(test_fingerprint_long),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_run_real_devices),
		cmocka_unit_test(test_run_no_devices),
		cmocka_unit_test(test_run_bad_arguments),
		cmocka_unit_test(test_run_failures_fall_back),
		cmocka_unit_test(test_one_host_device),
		cmocka_unit_test(test_one_accelerator),
		cmocka_unit_test(test_one_bad_arguments),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_malformed_fields),
		cmocka_unit_test(test_json_malformed_shapes),
		cmocka_unit_test(test_json_extra_fields),
		cmocka_unit_test(test_cache),
		cmocka_unit_test(test_cache_bad_figures),
		cmocka_unit_test(test_cache_unusable_dir),
		cmocka_unit_test(test_cache_concurrent),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
