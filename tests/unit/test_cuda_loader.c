/* The CUDA plugin loader: a missing or wrong plugin, or one of another
 * backend ABI version, gives NULL and a one-line reason; the backend
 * registry's order and version checks; the built plugin loads and probes
 * cleanly, finding no device and saying why on a machine without an NVIDIA
 * driver. Where there is a GPU, the backend itself: copies and event
 * chaining, then every kernel against a plain reference loop (double
 * accumulation). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "tandem.h"

#define MAX_DEVS 16

struct fixture {
	const struct backend_ops *ops;
	struct backend_device devs[MAX_DEVS];
	size_t ndevs;
	const struct backend_device *dev; /* the one the kernels run on */
};

/* ---- helpers ---------------------------------------------------------- */

static uint32_t rng_state = 12345;

/* Uniform in [lo, hi), deterministic. */
static float frand(float lo, float hi)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return lo + (hi - lo) * (float)(rng_state >> 8) / (float)(1u << 24);
}

static float *frand_array(size_t n, float lo, float hi)
{
	float *a = malloc(n * sizeof(float));
	assert_non_null(a);
	for (size_t i = 0; i < n; i++)
		a[i] = frand(lo, hi);
	return a;
}

static bool have_nvidia_driver(void)
{
	return access("/dev/nvidiactl", F_OK) == 0 ||
	       access("/proc/driver/nvidia/version", F_OK) == 0;
}

static const struct kernel_def *kdef(enum kernel_id id)
{
	static struct kernel_def defs[KERNEL_COUNT];
	defs[id].id = id;
	return &defs[id];
}

static void *upload(struct fixture *f, const void *host, size_t bytes)
{
	void *mem = NULL;
	struct backend_event *ev = NULL;

	assert_int_equal(f->ops->mem_alloc(f->dev, bytes, &mem), 0);
	assert_non_null(mem);
	if (host) {
		assert_int_equal(f->ops->copy_h2d(f->dev, mem, 0, host, bytes, NULL, &ev), 0);
		assert_int_equal(f->ops->event_wait(f->dev, ev), 0);
		f->ops->event_release(f->dev, ev);
	}
	return mem;
}

static void download(struct fixture *f, void *host, void *mem, size_t bytes)
{
	struct backend_event *ev = NULL;

	assert_int_equal(f->ops->copy_d2h(f->dev, host, mem, 0, bytes, NULL, &ev), 0);
	assert_int_equal(f->ops->event_wait(f->dev, ev), 0);
	f->ops->event_release(f->dev, ev);
}

static void set_arg(struct tdm_kernel_call *call, int i, void *mem, uint64_t off, uint64_t len)
{
	call->mem[i] = mem;
	call->off[i] = off;
	call->len[i] = len;
	if ((uint32_t)i >= call->nargs)
		call->nargs = (uint32_t)i + 1;
}

static void run(struct fixture *f, enum kernel_id id, const struct tdm_kernel_call *call)
{
	struct backend_event *ev = NULL;

	assert_true(f->ops->supports(f->dev, kdef(id)));
	assert_int_equal(f->ops->launch_async(f->dev, kdef(id), call, NULL, 0, &ev), 0);
	assert_int_equal(f->ops->event_wait(f->dev, ev), 0);
	f->ops->event_release(f->dev, ev);
}

/* Element-wise |got - want| <= atol + rtol |want|; prints the largest error. */
static void check_close(const char *what, const float *got, const double *want, size_t n,
                        double atol, double rtol)
{
	double max_err = 0;
	size_t bad = 0, first_bad = 0;

	for (size_t i = 0; i < n; i++) {
		double err = fabs((double)got[i] - want[i]);
		if (err > max_err || isnan(err))
			max_err = err;
		if (!(err <= atol + rtol * fabs(want[i])) && bad++ == 0)
			first_bad = i;
	}
	print_message("cuda %-12s max |err| %.3g over %zu values\n", what, max_err, n);
	if (bad)
		print_message(
		        "cuda %s: %zu values out of tolerance, first [%zu] got %.9g want %.9g\n",
		        what, bad, first_bad, (double)got[first_bad], want[first_bad]);
	assert_int_equal(bad, 0);
}

static struct fixture *gpu(void **state)
{
	struct fixture *f = *state;
	if (!f->dev)
		skip();
	return f;
}

/* ---- the loader ------------------------------------------------------- */

static void test_missing_plugin(void **state)
{
	char note[BACKEND_NOTE_MAX];
	const char *path = "/nonexistent/dir/tandem-cuda.so";

	(void)state;
	assert_null(backend_cuda_load(path, note, sizeof(note)));
	assert_non_null(strstr(note, path));
	assert_null(strchr(note, '\n'));
}

static void test_plugin_without_entry(void **state)
{
	char note[BACKEND_NOTE_MAX];

	(void)state;
	assert_null(backend_cuda_load("libm.so.6", note, sizeof(note)));
	assert_non_null(strstr(note, "tandem_cuda_backend"));
}

/* A fake plugin next to this test (Makefile: FAKE_PLUGINS). */
static void fake_plugin_path(const char *name, char *buf, size_t len)
{
	char exe[4096];
	ssize_t r = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(r > 0);
	exe[r] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(buf, len, "%s/%s", exe, name);
	if (access(buf, F_OK) != 0)
		fail_msg("%s missing: built by make test-run (FAKE_PLUGINS)", buf);
}

/* A plugin whose backend speaks another ABI version is refused, says so
 * and which versions, and is not kept: the next load looks again. */
static void test_plugin_wrong_abi(void **state)
{
	char path[4200], note[BACKEND_NOTE_MAX], want[96];

	(void)state;
	fake_plugin_path("fake-cuda-abi.so", path, sizeof(path));
	assert_null(backend_cuda_load(path, note, sizeof(note)));
	print_message("%s\n", note);
	assert_non_null(strstr(note, path));
	snprintf(want, sizeof(want), "backend ABI version %u, tandemd speaks %u: refused",
	         BACKEND_ABI_VERSION + 1, BACKEND_ABI_VERSION);
	assert_non_null(strstr(note, want));
	assert_null(strchr(note, '\n'));
	assert_null(backend_cuda_load("/nonexistent/tandem-cuda.so", note, sizeof(note)));
	assert_non_null(strstr(note, "not found"));
}

/* A plugin of this version loads through its entry point, stays loaded
 * (the same ops whatever path is named next) until unloaded. */
static void test_fake_plugin_loads(void **state)
{
	char path[4200], note[BACKEND_NOTE_MAX];
	struct backend_probe_params p = { 0 };
	struct backend_device devs[MAX_DEVS];
	size_t n = 99;

	(void)state;
	fake_plugin_path("fake-cuda-ok.so", path, sizeof(path));
	const struct backend_ops *ops = backend_cuda_load(path, note, sizeof(note));
	assert_non_null(ops);
	assert_string_equal(note, "");
	assert_int_equal(ops->abi_version, BACKEND_ABI_VERSION);
	assert_int_equal(backend_check(ops, NULL, 0), 0);
	assert_string_equal(ops->name, "fakecuda");
	assert_ptr_equal(backend_cuda_load("/nonexistent/tandem-cuda.so", note, sizeof(note)), ops);
	assert_int_equal(ops->probe(&p, devs, MAX_DEVS, &n), 0);
	assert_int_equal(n, 0);
	assert_string_equal(p.note, "fakecuda: no device");
	backend_cuda_unload();
	/* forgotten: the next load looks again */
	assert_null(backend_cuda_load("/nonexistent/tandem-cuda.so", note, sizeof(note)));
}

/* The registry: cpu, then cuda, then opencl, as the daemon always probed
 * them; only the plugin loads and unloads; OpenCL yields a GPU that CUDA
 * drives. */
static void test_registry(void **state)
{
	const struct backend_component *c[8];
	char note[BACKEND_NOTE_MAX];

	(void)state;
	assert_int_equal(backend_registry(c, 8), 3);
	assert_string_equal(c[0]->name, "cpu");
	assert_string_equal(c[1]->name, "cuda");
	assert_string_equal(c[2]->name, "opencl");
	for (size_t i = 0; i < 3; i++) {
		assert_true(c[i]->enabled_by_default);
		assert_true(i == 0 || c[i]->priority < c[i - 1]->priority);
		assert_true((c[i]->ops != NULL) != (c[i]->load != NULL));
	}
	assert_ptr_equal(c[0]->ops, &backend_cpu);
	assert_ptr_equal(c[2]->ops, &backend_opencl);
	assert_non_null(c[1]->load);
	assert_non_null(c[1]->unload);
	assert_false(c[0]->yields_same_pci);
	assert_false(c[1]->yields_same_pci);
	assert_true(c[2]->yields_same_pci);
	/* a short list gets the first ones in order */
	const struct backend_component *two[2];
	assert_int_equal(backend_registry(two, 2), 3);
	assert_ptr_equal(two[0], c[0]);
	assert_ptr_equal(two[1], c[1]);
	/* built-in ones are checked and handed out as they are */
	assert_ptr_equal(backend_component_ops(c[0], NULL, note, sizeof(note)), &backend_cpu);
	assert_ptr_equal(backend_component_ops(c[2], NULL, note, sizeof(note)), &backend_opencl);
	assert_int_equal(backend_check(&backend_cpu, NULL, 0), 0);
	assert_int_equal(backend_check(&backend_opencl, NULL, 0), 0);
}

/* A component whose backend speaks another version is refused, plugin or
 * built in, with the versions in the note. */
static void test_component_wrong_abi(void **state)
{
	char path[4200], note[BACKEND_NOTE_MAX], why[BACKEND_NOTE_MAX];

	(void)state;
	struct backend_ops old = backend_cpu;
	old.abi_version = BACKEND_ABI_VERSION + 1;
	const struct backend_component builtin = { .name = "old", .ops = &old };
	assert_null(backend_component_ops(&builtin, NULL, note, sizeof(note)));
	assert_non_null(strstr(note, "ABI version"));
	assert_non_null(strstr(note, "refused"));
	assert_int_equal(backend_check(&old, why, sizeof(why)), -TDM_EINVAL);
	assert_string_equal(why, note);
	assert_int_equal(backend_check(NULL, why, sizeof(why)), -TDM_EINVAL);

	fake_plugin_path("fake-cuda-abi.so", path, sizeof(path));
	const struct backend_component plugin = { .name = "cuda",
		                                  .load = backend_cuda_load,
		                                  .unload = backend_cuda_unload };
	assert_null(backend_component_ops(&plugin, path, note, sizeof(note)));
	assert_non_null(strstr(note, "refused"));
}

static void default_plugin_path(char *buf, size_t len)
{
	char exe[4096];
	ssize_t r = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(r > 0);
	exe[r] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(buf, len, "%s/../lib/tandem-cuda.so", exe);
}

static void check_device(const struct backend_device *d)
{
	unsigned dom, bus, dev, fn;
	char again[16];

	print_message("%s: %s, %llu MiB, bus %s\n", d->name, d->model,
	              (unsigned long long)(d->mem_bytes >> 20), d->pci_busid);
	assert_int_equal(strncmp(d->name, "cuda", 4), 0);
	assert_int_equal(d->kind, TDM_DEV_GPU);
	assert_true(d->model[0] != '\0');
	assert_true(d->mem_bytes > 0);
	assert_int_equal(d->numa_node, -1);
	assert_null(d->bind_set);
	assert_non_null(d->priv);
	assert_true(backend_is_accelerator(d));
	/* hwloc's spelling: lowercase hex, four-digit domain. */
	assert_int_equal(sscanf(d->pci_busid, "%x:%x:%x.%x", &dom, &bus, &dev, &fn), 4);
	snprintf(again, sizeof(again), "%04x:%02x:%02x.%x", dom, bus, dev, fn);
	assert_string_equal(again, d->pci_busid);
}

static void test_default_plugin_probe(void **state)
{
	struct fixture *f = *state;
	char path[4200], note[BACKEND_NOTE_MAX];
	struct backend_probe_params p = { 0 };

	default_plugin_path(path, sizeof(path));
	const char *env = getenv("TANDEM_CUDA_PLUGIN");
	const char *expect = access(path, F_OK) == 0 ? path : env;
	f->ops = backend_cuda_load(NULL, note, sizeof(note));
	if (!expect || access(expect, F_OK) != 0) {
		/* Built without nvcc: the reason must say so. */
		print_message("%s\n", note);
		assert_null(f->ops);
		assert_non_null(strstr(note, expect ? "not found" : "not built"));
		return;
	}
	assert_non_null(f->ops);
	assert_string_equal(f->ops->name, "cuda");
	assert_int_equal(f->ops->abi_version, BACKEND_ABI_VERSION);
	assert_ptr_equal(backend_cuda_load(NULL, note, sizeof(note)), f->ops);
	assert_null(f->ops->launch);

	assert_int_equal(f->ops->probe(&p, f->devs, MAX_DEVS, &f->ndevs), 0);
	print_message("cuda probe: %zu device(s); note \"%s\"\n", f->ndevs, p.note);
	if (!have_nvidia_driver()) {
		assert_int_equal(f->ndevs, 0);
		assert_int_equal(strncmp(p.note, "cuda: ", 6), 0);
		assert_non_null(strstr(p.note, "error "));
		assert_null(strchr(p.note, '\n'));
		return;
	}
	assert_true(f->ndevs >= 1);
	for (size_t i = 0; i < f->ndevs; i++)
		check_device(&f->devs[i]);
	f->dev = &f->devs[0];
	assert_false(f->ops->supports(f->dev, kdef(KERNEL_SPIN)));
	assert_false(f->ops->supports(f->dev, kdef(KERNEL_SPOTRF))); /* CPU only (LAPACK) */
	for (int id = 0; id < KERNEL_COUNT; id++)
		if (id != KERNEL_SPIN && id != KERNEL_SPOTRF)
			assert_true(f->ops->supports(f->dev, kdef((enum kernel_id)id)));
}

/* ---- copies and events (GPU only) -------------------------------------- */

/* Shared host memory like the daemon's buffers: a memfd mapping, pinned. */
static float *memfd_floats(size_t n)
{
	int fd = memfd_create("tandem-test", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(n * sizeof(float))), 0);
	void *p = mmap(NULL, n * sizeof(float), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	assert_true(p != MAP_FAILED);
	return p;
}

/* x, y in; axpy waiting on both copies; y out after the kernel; one wait at
 * the end: the streams are chained by events alone. */
static void test_chained_copies(void **state)
{
	struct fixture *f = gpu(state);
	enum { N = 1 << 20 };
	float *x = memfd_floats(N), *y = memfd_floats(N);
	double *want = malloc(N * sizeof(double));
	struct backend_event *ex, *ey, *ek, *eo;
	void *dx = upload(f, NULL, N * sizeof(float)), *dy = upload(f, NULL, N * sizeof(float));
	struct tdm_kernel_call call = { 0 };

	for (size_t i = 0; i < N; i++) {
		x[i] = frand(-1, 1);
		y[i] = frand(-1, 1);
		want[i] = (double)y[i] + 0.5 * (double)x[i];
	}
	assert_int_equal(f->ops->host_register(f->dev, x, N * sizeof(float)), 0);
	assert_int_equal(f->ops->host_register(f->dev, y, N * sizeof(float)), 0);
	assert_int_equal(f->ops->copy_h2d(f->dev, dx, 0, x, N * sizeof(float), NULL, &ex), 0);
	assert_int_equal(f->ops->copy_h2d(f->dev, dy, 0, y, N * sizeof(float), NULL, &ey), 0);
	set_arg(&call, 0, dx, 0, N * sizeof(float));
	set_arg(&call, 1, dy, 0, N * sizeof(float));
	call.s[0].f32 = 0.5f;
	struct backend_event *waits[] = { ex, ey };
	assert_int_equal(f->ops->launch_async(f->dev, kdef(KERNEL_AXPY), &call, waits, 2, &ek), 0);
	assert_int_equal(f->ops->copy_d2h(f->dev, y, dy, 0, N * sizeof(float), ek, &eo), 0);
	assert_int_equal(f->ops->event_wait(f->dev, eo), 0);
	assert_int_equal(f->ops->event_query(f->dev, eo), 1);
	assert_int_equal(f->ops->event_query(f->dev, ex), 1);
	check_close("chained", y, want, N, 1e-6, 1e-6);

	struct backend_event *evs[] = { ex, ey, ek, eo };
	for (size_t i = 0; i < 4; i++)
		f->ops->event_release(f->dev, evs[i]);
	f->ops->host_unregister(f->dev, x);
	f->ops->host_unregister(f->dev, y);
	f->ops->mem_free(f->dev, dx);
	f->ops->mem_free(f->dev, dy);
	munmap(x, N * sizeof(float));
	munmap(y, N * sizeof(float));
	free(want);
}

static void test_mem_alloc_too_big(void **state)
{
	struct fixture *f = gpu(state);
	void *mem = NULL;

	assert_int_equal(f->ops->mem_alloc(f->dev, f->dev->mem_bytes * 4, &mem), -TDM_ENOMEM);
	/* The failure must not leak into the next call. */
	assert_int_equal(f->ops->mem_alloc(f->dev, 4096, &mem), 0);
	f->ops->mem_free(f->dev, mem);
}

/* A misaligned float would be a sticky device error: refused up front, and
 * the device goes on working. */
static void test_misaligned_refused(void **state)
{
	struct fixture *f = gpu(state);
	float h[16] = { 0 }, got[16];
	double want[16];
	void *mem = upload(f, h, sizeof(h));
	struct tdm_kernel_call call = { 0 };
	struct backend_event *ev = NULL;

	set_arg(&call, 0, mem, 2, 32);
	call.s[0].f32 = 1.0f;
	assert_int_equal(f->ops->launch_async(f->dev, kdef(KERNEL_FILL), &call, NULL, 0, &ev),
	                 -TDM_EINVAL);
	assert_null(ev);
	call.off[0] = 4;
	run(f, KERNEL_FILL, &call);
	download(f, got, mem, sizeof(h));
	for (int i = 0; i < 16; i++)
		want[i] = i >= 1 && i < 9 ? 1.0 : 0.0;
	check_close("misaligned", got, want, 16, 0, 0);
	f->ops->mem_free(f->dev, mem);
}

/* copy between overlapping slices of one buffer, both ways: memmove. */
static void test_copy_overlap(void **state)
{
	struct fixture *f = gpu(state);
	enum { N = 10000, SHIFT = 37 };
	float *h = frand_array(N, -1, 1), *got = malloc(N * sizeof(float));
	double *want = malloc(N * sizeof(double));

	for (int dir = 0; dir < 2; dir++) {
		size_t src = dir ? SHIFT : 0, dst = dir ? 0 : SHIFT;
		void *mem = upload(f, h, N * sizeof(float));
		struct tdm_kernel_call call = { 0 };
		set_arg(&call, 0, mem, src * sizeof(float), (N - SHIFT) * sizeof(float));
		set_arg(&call, 1, mem, dst * sizeof(float), (N - SHIFT) * sizeof(float));
		run(f, KERNEL_COPY, &call);
		download(f, got, mem, N * sizeof(float));
		for (size_t i = 0; i < N; i++)
			want[i] = h[i];
		for (size_t i = 0; i < N - SHIFT; i++)
			want[dst + i] = h[src + i];
		check_close("copy overlap", got, want, N, 0, 0);
		f->ops->mem_free(f->dev, mem);
	}
	free(h);
	free(got);
	free(want);
}

/* ---- kernels (GPU only) ------------------------------------------------ */

/* fill into a slice at a byte offset: the floats around it stay. */
static void test_fill_copy_axpy(void **state)
{
	struct fixture *f = gpu(state);
	enum { N = 300007, OFF = 16 };
	float *h = frand_array(N, -1, 1), *got = malloc(N * sizeof(float));
	double *want = malloc(N * sizeof(double));
	void *a = upload(f, h, N * sizeof(float)), *b = upload(f, NULL, N * sizeof(float));
	struct tdm_kernel_call call = { 0 };

	set_arg(&call, 0, a, OFF * sizeof(float), (N - 2 * OFF) * sizeof(float));
	call.s[0].f32 = 3.25f;
	run(f, KERNEL_FILL, &call);
	download(f, got, a, N * sizeof(float));
	for (size_t i = 0; i < N; i++)
		want[i] = i < OFF || i >= N - OFF ? h[i] : 3.25;
	check_close("fill", got, want, N, 0, 0);

	memset(&call, 0, sizeof(call));
	set_arg(&call, 0, a, 0, N * sizeof(float));
	set_arg(&call, 1, b, 0, N * sizeof(float));
	run(f, KERNEL_COPY, &call);
	download(f, got, b, N * sizeof(float));
	check_close("copy", got, want, N, 0, 0);

	float *x = frand_array(N, -2, 2);
	void *dx = upload(f, x, N * sizeof(float));
	memset(&call, 0, sizeof(call));
	set_arg(&call, 0, dx, 0, N * sizeof(float));
	set_arg(&call, 1, b, 0, N * sizeof(float));
	call.s[0].f32 = -1.5f;
	run(f, KERNEL_AXPY, &call);
	download(f, got, b, N * sizeof(float));
	for (size_t i = 0; i < N; i++)
		want[i] += -1.5 * (double)x[i];
	check_close("axpy", got, want, N, 1e-6, 1e-6);

	f->ops->mem_free(f->dev, a);
	f->ops->mem_free(f->dev, b);
	f->ops->mem_free(f->dev, dx);
	free(h);
	free(x);
	free(got);
	free(want);
}

static void sgemm_case(struct fixture *f, int m, int n, int k, float alpha, float beta)
{
	float *a = frand_array((size_t)m * k, -1, 1), *b = frand_array((size_t)k * n, -1, 1);
	float *c = frand_array((size_t)m * n, -1, 1), *got = malloc((size_t)m * n * sizeof(float));
	double *want = malloc((size_t)m * n * sizeof(double));
	void *da = upload(f, a, (size_t)m * k * sizeof(float));
	void *db = upload(f, b, (size_t)k * n * sizeof(float));
	void *dc = upload(f, c, (size_t)m * n * sizeof(float));
	struct tdm_kernel_call call = { 0 };

	for (int i = 0; i < m; i++) {
		for (int j = 0; j < n; j++) {
			double s = 0;
			for (int l = 0; l < k; l++)
				s += (double)a[i * k + l] * b[l * n + j];
			want[i * n + j] = alpha * s + beta * (double)c[i * n + j];
		}
	}
	set_arg(&call, 0, da, 0, (size_t)m * k * sizeof(float));
	set_arg(&call, 1, db, 0, (size_t)k * n * sizeof(float));
	set_arg(&call, 2, dc, 0, (size_t)m * n * sizeof(float));
	call.s[0].i64 = m;
	call.s[1].i64 = n;
	call.s[2].i64 = k;
	call.s[3].f32 = alpha;
	call.s[4].f32 = beta;
	run(f, KERNEL_SGEMM, &call);
	download(f, got, dc, (size_t)m * n * sizeof(float));
	check_close("sgemm", got, want, (size_t)m * n, 1e-4 * k, 1e-4);
	f->ops->mem_free(f->dev, da);
	f->ops->mem_free(f->dev, db);
	f->ops->mem_free(f->dev, dc);
	free(a);
	free(b);
	free(c);
	free(got);
	free(want);
}

static void test_sgemm(void **state)
{
	struct fixture *f = gpu(state);
	sgemm_case(f, 37, 29, 41, 2.0f, 0.5f);
	sgemm_case(f, 256, 192, 1000, 1.0f, 0.0f);
	sgemm_case(f, 1, 515, 64, -0.5f, 1.0f);
}

static void test_rmsnorm(void **state)
{
	struct fixture *f = gpu(state);
	enum { ROWS = 7, DIM = 1000 };
	float eps = 1e-5f;
	float *x = frand_array(ROWS * DIM, -3, 3), *w = frand_array(DIM, 0.5f, 1.5f);
	float *got = malloc(ROWS * DIM * sizeof(float));
	double *want = malloc(ROWS * DIM * sizeof(double));
	void *dx = upload(f, x, sizeof(float) * ROWS * DIM),
	     *dw = upload(f, w, sizeof(float) * DIM);
	void *dy = upload(f, NULL, sizeof(float) * ROWS * DIM);
	struct tdm_kernel_call call = { 0 };

	for (int r = 0; r < ROWS; r++) {
		double ss = 0;
		for (int i = 0; i < DIM; i++)
			ss += (double)x[r * DIM + i] * x[r * DIM + i];
		double scale = 1.0 / sqrt(ss / DIM + eps);
		for (int i = 0; i < DIM; i++)
			want[r * DIM + i] = x[r * DIM + i] * scale * w[i];
	}
	set_arg(&call, 0, dx, 0, sizeof(float) * ROWS * DIM);
	set_arg(&call, 1, dw, 0, sizeof(float) * DIM);
	set_arg(&call, 2, dy, 0, sizeof(float) * ROWS * DIM);
	call.s[0].i64 = ROWS;
	call.s[1].i64 = DIM;
	call.s[2].f32 = eps;
	run(f, KERNEL_RMSNORM, &call);
	download(f, got, dy, sizeof(float) * ROWS * DIM);
	check_close("rmsnorm", got, want, ROWS * DIM, 1e-5, 1e-5);
	f->ops->mem_free(f->dev, dx);
	f->ops->mem_free(f->dev, dw);
	f->ops->mem_free(f->dev, dy);
	free(x);
	free(w);
	free(got);
	free(want);
}

static void test_softmax(void **state)
{
	struct fixture *f = gpu(state);
	enum { ROWS = 5, COLS = 3001 };
	float *x = frand_array(ROWS * COLS, -10, 10), *got = malloc(ROWS * COLS * sizeof(float));
	double *want = malloc(ROWS * COLS * sizeof(double));
	void *dx = upload(f, x, sizeof(float) * ROWS * COLS);
	struct tdm_kernel_call call = { 0 };

	for (int r = 0; r < ROWS; r++) {
		double m = -INFINITY, s = 0;
		for (int i = 0; i < COLS; i++)
			m = fmax(m, x[r * COLS + i]);
		for (int i = 0; i < COLS; i++)
			s += exp(x[r * COLS + i] - m);
		for (int i = 0; i < COLS; i++)
			want[r * COLS + i] = exp(x[r * COLS + i] - m) / s;
	}
	set_arg(&call, 0, dx, 0, sizeof(float) * ROWS * COLS);
	call.s[0].i64 = ROWS;
	call.s[1].i64 = COLS;
	run(f, KERNEL_SOFTMAX, &call);
	download(f, got, dx, sizeof(float) * ROWS * COLS);
	check_close("softmax", got, want, ROWS * COLS, 1e-6, 1e-5);
	f->ops->mem_free(f->dev, dx);
	free(x);
	free(got);
	free(want);
}

/* The angle as docs/kernels.md defines it, in single precision. */
static void rope_case(struct fixture *f, int ntok, int nh, int hd, int64_t pos0, float theta)
{
	size_t n = (size_t)ntok * nh * hd;
	float *x = frand_array(n, -1, 1), *got = malloc(n * sizeof(float));
	double *want = malloc(n * sizeof(double));
	void *dx = upload(f, x, n * sizeof(float));
	struct tdm_kernel_call call = { 0 };

	for (int t = 0; t < ntok; t++) {
		for (int h = 0; h < nh; h++) {
			const float *row = x + ((size_t)t * nh + h) * hd;
			double *out = want + ((size_t)t * nh + h) * hd;
			for (int i = 0; i < hd / 2; i++) {
				float p = (float)(pos0 + t);
				float ang = p * powf(theta, -2.0f * (float)i / (float)hd);
				float a = row[i], b = row[i + hd / 2];
				out[i] = a * cosf(ang) - b * sinf(ang);
				out[i + hd / 2] = a * sinf(ang) + b * cosf(ang);
			}
		}
	}
	set_arg(&call, 0, dx, 0, n * sizeof(float));
	call.s[0].i64 = ntok;
	call.s[1].i64 = nh;
	call.s[2].i64 = hd;
	call.s[3].i64 = pos0;
	call.s[4].f32 = theta;
	run(f, KERNEL_ROPE, &call);
	download(f, got, dx, n * sizeof(float));
	check_close("rope", got, want, n, 1e-4, 1e-4);
	f->ops->mem_free(f->dev, dx);
	free(x);
	free(got);
	free(want);
}

static void test_rope(void **state)
{
	struct fixture *f = gpu(state);
	rope_case(f, 5, 3, 64, 0, 10000.0f);
	rope_case(f, 4, 2, 128, 4000, 10000.0f);
	rope_case(f, 3, 2, 128, 60000, 500000.0f);
}

struct attn_dims {
	int batch, nh, nkv, hd, kv_len, kv_cap;
};

static void attn_reference(const struct attn_dims *d, const float *q, const float *kc,
                           const float *vc, double *out)
{
	double *s = malloc((size_t)d->kv_len * sizeof(double));

	for (int b = 0; b < d->batch; b++) {
		for (int h = 0; h < d->nh; h++) {
			int g = h / (d->nh / d->nkv);
			const float *qv = q + ((size_t)b * d->nh + h) * d->hd;
			double m = -INFINITY, sum = 0;
			for (int t = 0; t < d->kv_len; t++) {
				const float *kt =
				        kc + (((size_t)b * d->kv_cap + t) * d->nkv + g) * d->hd;
				double dot = 0;
				for (int i = 0; i < d->hd; i++)
					dot += (double)qv[i] * kt[i];
				s[t] = dot / sqrt((double)d->hd);
				m = fmax(m, s[t]);
			}
			for (int t = 0; t < d->kv_len; t++)
				sum += s[t] = exp(s[t] - m);
			double *o = out + ((size_t)b * d->nh + h) * d->hd;
			for (int i = 0; i < d->hd; i++) {
				double acc = 0;
				for (int t = 0; t < d->kv_len; t++)
					acc += s[t] * vc[(((size_t)b * d->kv_cap + t) * d->nkv +
					                  g) * d->hd +
					                 i];
				o[i] = acc / sum;
			}
		}
	}
	free(s);
}

static void attn_case(struct fixture *f, struct attn_dims d)
{
	size_t nq = (size_t)d.batch * d.nh * d.hd;
	size_t nc = (size_t)d.batch * d.kv_cap * d.nkv * d.hd;
	float *q = frand_array(nq, -1, 1), *kc = frand_array(nc, -1, 1),
	      *vc = frand_array(nc, -1, 1);
	float *got = malloc(nq * sizeof(float));
	double *want = malloc(nq * sizeof(double));
	void *dq = upload(f, q, nq * sizeof(float)), *dk = upload(f, kc, nc * sizeof(float));
	void *dv = upload(f, vc, nc * sizeof(float)), *dout = upload(f, NULL, nq * sizeof(float));
	struct tdm_kernel_call call = { 0 };

	attn_reference(&d, q, kc, vc, want);
	set_arg(&call, 0, dq, 0, nq * sizeof(float));
	set_arg(&call, 1, dk, 0, nc * sizeof(float));
	set_arg(&call, 2, dv, 0, nc * sizeof(float));
	set_arg(&call, 3, dout, 0, nq * sizeof(float));
	int64_t s[] = { d.batch, d.nh, d.nkv, d.hd, d.kv_len, d.kv_cap };
	for (int i = 0; i < 6; i++)
		call.s[i].i64 = s[i];
	run(f, KERNEL_ATTN_DECODE, &call);
	download(f, got, dout, nq * sizeof(float));
	check_close("attn_decode", got, want, nq, 1e-5, 1e-4);
	f->ops->mem_free(f->dev, dq);
	f->ops->mem_free(f->dev, dk);
	f->ops->mem_free(f->dev, dv);
	f->ops->mem_free(f->dev, dout);
	free(q);
	free(kc);
	free(vc);
	free(got);
	free(want);
}

static void test_attn_decode(void **state)
{
	struct fixture *f = gpu(state);
	attn_case(f, (struct attn_dims){ 2, 8, 2, 64, 37, 50 });
	attn_case(f, (struct attn_dims){ 3, 4, 4, 128, 1, 7 });
	/* Longer than shared memory holds: the scores go to scratch. */
	attn_case(f, (struct attn_dims){ 2, 2, 1, 32, 9000, 9100 });
}

static double silu(double z)
{
	return z / (1.0 + exp(-z));
}

/* Token 0 is routed nowhere and holds NaN: its y row must stay as it was. */
static void test_moe_expert(void **state)
{
	struct fixture *f = gpu(state);
	enum { N = 9, DM = 48, DFF = 80, K = 2, NE = 6, E = 3 };
	float *x = frand_array(N * DM, -1, 1), *wg = frand_array(DM * DFF, -0.3f, 0.3f);
	float *wu = frand_array(DM * DFF, -0.3f, 0.3f), *wd = frand_array(DFF * DM, -0.3f, 0.3f);
	float *tw = frand_array(N * K, 0.1f, 1), *y = frand_array(N * DM, -1, 1);
	float *got = malloc(N * DM * sizeof(float));
	double *want = malloc(N * DM * sizeof(double)), h[DFF];
	int32_t ids[N * K];

	for (int t = 0; t < N; t++) {
		ids[t * K] = (t * 5) % NE;
		ids[t * K + 1] = (ids[t * K] + 1 + t % 3) % NE;
	}
	ids[0] = 0;
	ids[1] = 1;
	x[5] = NAN;
	for (int t = 0; t < N; t++) {
		double r = 0;
		for (int j = 0; j < K; j++)
			r += ids[t * K + j] == E ? tw[t * K + j] : 0;
		for (int i = 0; i < DFF; i++) {
			double g = 0, u = 0;
			for (int c = 0; c < DM; c++) {
				g += (double)x[t * DM + c] * wg[c * DFF + i];
				u += (double)x[t * DM + c] * wu[c * DFF + i];
			}
			h[i] = silu(g) * u;
		}
		for (int c = 0; c < DM; c++) {
			double acc = 0;
			for (int i = 0; i < DFF; i++)
				acc += h[i] * wd[i * DM + c];
			want[t * DM + c] = r == 0 ? y[t * DM + c] : y[t * DM + c] + r * acc;
		}
	}
	void *args[] = {
		upload(f, x, sizeof(float) * N * DM),    upload(f, wg, sizeof(float) * DM * DFF),
		upload(f, wu, sizeof(float) * DM * DFF), upload(f, wd, sizeof(float) * DFF * DM),
		upload(f, ids, sizeof(int32_t) * N * K), upload(f, tw, sizeof(float) * N * K),
		upload(f, y, sizeof(float) * N * DM),
	};
	uint64_t lens[] = { N * DM, DM * DFF, DM * DFF, DFF * DM, N * K, N * K, N * DM };
	struct tdm_kernel_call call = { 0 };
	for (int i = 0; i < 7; i++)
		set_arg(&call, i, args[i], 0, lens[i] * 4);
	int64_t s[] = { N, DM, DFF, K, E };
	for (int i = 0; i < 5; i++)
		call.s[i].i64 = s[i];
	run(f, KERNEL_MOE_EXPERT, &call);
	download(f, got, args[6], sizeof(float) * N * DM);
	check_close("moe_expert", got, want, N * DM, 1e-4, 1e-4);
	assert_memory_equal(got, y, DM * sizeof(float)); /* bit for bit */
	for (int i = 0; i < 7; i++)
		f->ops->mem_free(f->dev, args[i]);
	free(x);
	free(wg);
	free(wu);
	free(wd);
	free(tw);
	free(y);
	free(got);
	free(want);
}

/* Row 0 is all equal: ties go to the lower expert index. */
static void test_topk_router(void **state)
{
	struct fixture *f = gpu(state);
	enum { N = 33, NE = 64, K = 4 };
	float *l = frand_array(N * NE, -4, 4), w[N * K];
	double want_w[N * K];
	int32_t ids[N * K], want_ids[N * K];

	for (int i = 0; i < NE; i++)
		l[i] = 0.5f;
	for (int t = 0; t < N; t++) {
		const float *row = l + t * NE;
		double m = -INFINITY, s = 0, picked = 0;
		bool used[NE] = { false };
		for (int i = 0; i < NE; i++)
			m = fmax(m, row[i]);
		for (int i = 0; i < NE; i++)
			s += exp(row[i] - m);
		for (int j = 0; j < K; j++) {
			int best = -1;
			for (int i = 0; i < NE; i++)
				if (!used[i] && (best < 0 || row[i] > row[best]))
					best = i;
			used[best] = true;
			want_ids[t * K + j] = best;
			want_w[t * K + j] = exp(row[best] - m) / s;
			picked += want_w[t * K + j];
		}
		for (int j = 0; j < K; j++)
			want_w[t * K + j] /= picked;
	}
	void *dl = upload(f, l, sizeof(float) * N * NE), *di = upload(f, NULL, sizeof(ids));
	void *dw = upload(f, NULL, sizeof(w));
	struct tdm_kernel_call call = { 0 };
	set_arg(&call, 0, dl, 0, sizeof(float) * N * NE);
	set_arg(&call, 1, di, 0, sizeof(ids));
	set_arg(&call, 2, dw, 0, sizeof(w));
	call.s[0].i64 = N;
	call.s[1].i64 = NE;
	call.s[2].i64 = K;
	run(f, KERNEL_TOPK_ROUTER, &call);
	download(f, ids, di, sizeof(ids));
	download(f, w, dw, sizeof(w));
	assert_memory_equal(ids, want_ids, sizeof(ids));
	check_close("topk_router", w, want_w, N * K, 1e-6, 1e-5);
	f->ops->mem_free(f->dev, dl);
	f->ops->mem_free(f->dev, di);
	f->ops->mem_free(f->dev, dw);
	free(l);
}

/* ---- release, unload, load again ---------------------------------------- */

static void release_all(struct fixture *f)
{
	for (size_t i = 0; i < f->ndevs; i++)
		f->ops->release(&f->devs[i]);
	f->ndevs = 0;
	f->dev = NULL;
}

static void test_unload_reload(void **state)
{
	struct fixture *f = *state;
	char note[BACKEND_NOTE_MAX];
	struct backend_probe_params p = { 0 };
	size_t before = f->ndevs;

	if (!f->ops)
		skip();
	release_all(f);
	backend_cuda_unload();
	f->ops = backend_cuda_load(NULL, note, sizeof(note));
	assert_non_null(f->ops);
	assert_int_equal(f->ops->probe(&p, f->devs, MAX_DEVS, &f->ndevs), 0);
	assert_int_equal(f->ndevs, before);
	release_all(f);
	backend_cuda_unload();
	f->ops = NULL;
}

static int group_setup(void **state)
{
	*state = calloc(1, sizeof(struct fixture));
	return *state ? 0 : -1;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;
	if (f->ops)
		release_all(f);
	backend_cuda_unload();
	free(f);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_plugin),
		cmocka_unit_test(test_plugin_without_entry),
		cmocka_unit_test(test_plugin_wrong_abi),
		cmocka_unit_test(test_fake_plugin_loads),
		cmocka_unit_test(test_registry),
		cmocka_unit_test(test_component_wrong_abi),
		cmocka_unit_test(test_default_plugin_probe),
		cmocka_unit_test(test_chained_copies),
		cmocka_unit_test(test_mem_alloc_too_big),
		cmocka_unit_test(test_misaligned_refused),
		cmocka_unit_test(test_copy_overlap),
		cmocka_unit_test(test_fill_copy_axpy),
		cmocka_unit_test(test_sgemm),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_softmax),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_attn_decode),
		cmocka_unit_test(test_moe_expert),
		cmocka_unit_test(test_topk_router),
		cmocka_unit_test(test_unload_reload),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
