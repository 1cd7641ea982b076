/* Every kernel on every accelerator backend found (OpenCL devices, CUDA
 * through its plugin) against the CPU implementation, element-wise within
 * the tolerances of docs/kernels.md. Each case runs the way the engine
 * drives a device: mem_alloc, copy_h2d, launch_async after the copies,
 * copy_d2h after the kernel, event_wait. Arguments sit at a byte offset in
 * larger buffers whose other bytes hold a sentinel that must survive.
 * Without an accelerator the tests skip (and say so). */
#include <hwloc.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "common/clock.h"
#include "tandem.h"
#include "tests/harness/splitmix.h"

#define MAX_DEVICES 32
#define TAIL_BYTES 64 /* sentinel after every argument */
#define SENTINEL 0xa5

static hwloc_topology_t topo;
static struct backend_device devices[MAX_DEVICES];
static size_t ndevices;

/* ---- random inputs, reproducible ---- */

static uint64_t rng_state;

/* ---- cases ---- */

enum elem { F32 = 0, I32 };

struct arg_spec {
	size_t count; /* elements the kernel uses */
	enum elem type;
	bool out; /* written by the kernel: compared afterwards */
	float lo, hi; /* range of random float contents */
	/* A square tile of tri x tri floats of which only the lower triangle
	 * (diagonal included) is defined after the kernel: only that part is
	 * compared. 0: every element. */
	size_t tri;
};

struct kcase {
	enum kernel_id id;
	char label[64];
	unsigned nargs;
	struct arg_spec arg[TDM_MAX_ARGS];
	union tdm_wire_scalar s[TDM_MAX_SCALARS];
	uint64_t off; /* byte offset of every argument in its device buffer */
	float rtol, atol;
	int64_t aux; /* for prepare: moe_expert's number of experts */
	/* moe_expert: the device's call carries the tokens routed to the
	 * expert (call.routed), as the engine hands a guarded expert; the CPU
	 * kernel runs both with and without them, bit for bit the same. */
	bool routed;
	bool routed_empty; /* the call carries an empty list: y must stay as it was */
	/* Adjusts the random inputs (ties, routing ids); may be NULL. */
	void (*prepare)(const struct kcase *c, void **in);
	/* When set, the outputs are compared with this double-precision
	 * reference instead of the CPU kernel (which is checked against it
	 * too): want[i] receives argument i's expected contents (outputs only;
	 * want[i] starts as a copy of the input). */
	void (*reference)(const struct kcase *c, void *const *in, void **want);
};

struct result {
	double max_err; /* max |got - want| */
	double max_ratio; /* max |got - want| / tolerance */
};

static struct arg_spec in_f32(size_t count, float lo, float hi)
{
	return (struct arg_spec){ .count = count, .type = F32, .lo = lo, .hi = hi };
}

static struct arg_spec out_f32(size_t count, float lo, float hi)
{
	return (struct arg_spec){ .count = count, .type = F32, .out = true, .lo = lo, .hi = hi };
}

static size_t arg_bytes(const struct arg_spec *a)
{
	return a->count * 4;
}

static void fill_random(const struct arg_spec *a, void *p)
{
	if (a->type == I32) {
		memset(p, 0, arg_bytes(a));
		return;
	}
	float *f = p;
	for (size_t i = 0; i < a->count; i++)
		f[i] = splitmix_float(&rng_state, a->lo, a->hi);
}

/* ---- running one case ---- */

struct dev_arg {
	void *mem;
	size_t size; /* off + bytes + TAIL_BYTES */
	unsigned char *image; /* the sentinel, uploaded over the whole buffer first */
	unsigned char *back; /* what came back */
};

static void wait_release(const struct backend_device *d, struct backend_event *ev)
{
	assert_int_equal(d->ops->event_wait(d, ev), 0);
	assert_int_equal(d->ops->event_query(d, ev), 1);
	d->ops->event_release(d, ev);
}

/* Uploads every argument: the sentinel over the whole buffer, then the input
 * at its offset, ordered after the first copy with `after`. */
static void upload(const struct backend_device *d, const struct kcase *c, void **in,
                   struct dev_arg *da, struct backend_event **whole, struct backend_event **ev)
{
	for (unsigned i = 0; i < c->nargs; i++) {
		size_t bytes = arg_bytes(&c->arg[i]);
		da[i].size = c->off + bytes + TAIL_BYTES;
		da[i].image = malloc(da[i].size);
		da[i].back = malloc(da[i].size);
		assert_non_null(da[i].image);
		assert_non_null(da[i].back);
		memset(da[i].image, SENTINEL, da[i].size);
		assert_int_equal(d->ops->mem_alloc(d, da[i].size, &da[i].mem), 0);
		assert_int_equal(
		        d->ops->copy_h2d(d, da[i].mem, 0, da[i].image, da[i].size, NULL, &whole[i]),
		        0);
		assert_int_equal(
		        d->ops->copy_h2d(d, da[i].mem, c->off, in[i], bytes, whole[i], &ev[i]), 0);
	}
}

static bool close_enough(float got, float want, float rtol, float atol, struct result *r)
{
	if (isnan(got) || isnan(want))
		return isnan(got) && isnan(want);
	double err = fabs((double)got - (double)want);
	double tol = atol + rtol * fabs((double)want);
	if (err > r->max_err)
		r->max_err = err;
	if (tol > 0 && err / tol > r->max_ratio)
		r->max_ratio = err / tol;
	return err <= tol;
}

/* Compares argument i as it came back with the CPU's result (inputs: with
 * what was sent, exactly), and checks that the bytes around it still hold
 * the sentinel. */
static void compare_arg(const struct backend_device *d, const struct kcase *c, unsigned i,
                        const struct dev_arg *da, const void *want, struct result *r)
{
	const struct arg_spec *a = &c->arg[i];
	const unsigned char *slice = da->back + c->off;
	for (size_t b = 0; b < da->size; b++) {
		if (b >= c->off && b < c->off + arg_bytes(a))
			continue;
		if (da->back[b] != SENTINEL)
			fail_msg("%s %s %s: arg %u byte %zu outside the argument changed", d->name,
			         kernel_by_id(c->id)->name, c->label, i, b);
	}
	if (!a->out) {
		if (memcmp(slice, want, arg_bytes(a)) != 0)
			fail_msg("%s %s %s: input arg %u changed", d->name,
			         kernel_by_id(c->id)->name, c->label, i);
		return;
	}
	for (size_t e = 0; e < a->count; e++) {
		if (a->tri && e % a->tri > e / a->tri)
			continue; /* strictly upper: not defined */
		if (a->type == I32) {
			int32_t g, w;
			memcpy(&g, slice + 4 * e, 4);
			memcpy(&w, (const char *)want + 4 * e, 4);
			if (g != w)
				fail_msg("%s %s %s: arg %u [%zu] = %d, want %d", d->name,
				         kernel_by_id(c->id)->name, c->label, i, e, g, w);
			continue;
		}
		float g, w = ((const float *)want)[e];
		memcpy(&g, slice + 4 * e, 4);
		if (!close_enough(g, w, c->rtol, c->atol, r))
			fail_msg("%s %s %s: arg %u [%zu] = %.9g, want %.9g", d->name,
			         kernel_by_id(c->id)->name, c->label, i, e, g, w);
	}
}

/* The reference's outputs in place of the CPU's: want[] held the CPU
 * kernel's results; they are checked against the reference on the way. */
static void reference_outputs(const struct kcase *c, void *const *in, void **want)
{
	void *ref[TDM_MAX_ARGS] = { 0 };
	struct result r = { 0 };

	for (unsigned i = 0; i < c->nargs; i++) {
		ref[i] = malloc(arg_bytes(&c->arg[i]));
		assert_non_null(ref[i]);
		memcpy(ref[i], in[i], arg_bytes(&c->arg[i]));
	}
	c->reference(c, in, ref);
	for (unsigned i = 0; i < c->nargs; i++) {
		const struct arg_spec *a = &c->arg[i];
		for (size_t e = 0; a->out && e < a->count; e++) {
			if (a->tri && e % a->tri > e / a->tri)
				continue;
			float g = ((float *)want[i])[e], w = ((float *)ref[i])[e];
			if (!close_enough(g, w, c->rtol, c->atol, &r))
				fail_msg("cpu %s %s: arg %u [%zu] = %.9g, want %.9g",
				         kernel_by_id(c->id)->name, c->label, i, e, g, w);
		}
		memcpy(want[i], ref[i], arg_bytes(a));
		free(ref[i]);
	}
}

/* The tokens that chose moe_expert's expert (ids, arg 4), ascending: what
 * the engine hands a guarded expert. tok has room for n. */
static uint32_t moe_routed_tokens(const struct kcase *c, void *const *in, uint32_t *tok)
{
	int64_t n = c->s[0].i64, k = c->s[3].i64, expert = c->s[4].i64;
	const int32_t *ids = in[4];
	uint32_t m = 0;
	for (int64_t t = 0; t < n; t++) {
		bool hit = false;
		for (int64_t j = 0; j < k; j++)
			hit |= ids[t * k + j] == expert;
		if (hit)
			tok[m++] = (uint32_t)t;
	}
	return m;
}

/* The CPU kernel once more, handed the routed tokens: the same bits as
 * without them (want). */
static void cpu_with_routed(const struct kcase *c, const struct tdm_kernel_call *cpu_call,
                            void *const *in, void *const *want)
{
	const struct kernel_def *k = kernel_by_id(c->id);
	struct tdm_kernel_call call = *cpu_call;
	void *buf[TDM_MAX_ARGS] = { 0 };
	for (unsigned i = 0; i < c->nargs; i++) {
		buf[i] = malloc(arg_bytes(&c->arg[i]));
		assert_non_null(buf[i]);
		memcpy(buf[i], in[i], arg_bytes(&c->arg[i]));
		call.ptr[i] = buf[i];
	}
	assert_int_equal(k->cpu(&call), 0);
	/* No row with an inf in x (moe_prepare_routed) reached y. */
	const float *y = want[6];
	for (size_t e = 0; e < c->arg[6].count; e++)
		if (!isfinite(y[e]))
			fail_msg("cpu %s %s: y[%zu] = %g", k->name, c->label, e, (double)y[e]);
	for (unsigned i = 0; i < c->nargs; i++) {
		if (memcmp(buf[i], want[i], arg_bytes(&c->arg[i])) != 0)
			fail_msg("cpu %s %s: arg %u differs with the routed tokens", k->name,
			         c->label, i);
		free(buf[i]);
	}
}

static void run_case(const struct backend_device *d, const struct kcase *c, struct result *r)
{
	const struct kernel_def *k = kernel_by_id(c->id);
	void *in[TDM_MAX_ARGS] = { 0 }, *cpu[TDM_MAX_ARGS] = { 0 };
	struct tdm_kernel_call cpu_call = { .nargs = c->nargs }, dev_call = { .nargs = c->nargs };
	struct dev_arg da[TDM_MAX_ARGS] = { 0 };
	struct backend_event *ev_whole[TDM_MAX_ARGS], *ev_in[TDM_MAX_ARGS], *ev_k;
	struct backend_event *ev_out[TDM_MAX_ARGS];

	assert_int_equal(c->nargs, k->nargs);
	for (unsigned i = 0; i < c->nargs; i++) {
		size_t bytes = arg_bytes(&c->arg[i]);
		in[i] = malloc(bytes);
		cpu[i] = malloc(bytes);
		assert_non_null(in[i]);
		assert_non_null(cpu[i]);
		fill_random(&c->arg[i], in[i]);
	}
	if (c->prepare)
		c->prepare(c, in);
	memcpy(cpu_call.s, c->s, sizeof(c->s));
	memcpy(dev_call.s, c->s, sizeof(c->s));
	for (unsigned i = 0; i < c->nargs; i++) {
		memcpy(cpu[i], in[i], arg_bytes(&c->arg[i]));
		cpu_call.ptr[i] = cpu[i];
		cpu_call.len[i] = dev_call.len[i] = arg_bytes(&c->arg[i]);
	}
	assert_int_equal(k->check(&cpu_call), 0); /* the case is one intake accepts */
	uint32_t *routed = NULL;
	if (c->routed) {
		routed = malloc((size_t)c->s[0].i64 * sizeof(*routed));
		assert_non_null(routed);
		dev_call.nrouted = moe_routed_tokens(c, in, routed);
		dev_call.routed = routed;
		assert_true(dev_call.nrouted > 0);
	} else if (c->routed_empty) {
		routed = malloc(sizeof(*routed));
		assert_non_null(routed);
		dev_call.routed = cpu_call.routed = routed;
	}
	assert_int_equal(k->cpu(&cpu_call), 0);
	if (c->routed_empty)
		assert_memory_equal(cpu[6], in[6], arg_bytes(&c->arg[6]));
	if (c->routed) {
		struct tdm_kernel_call with = cpu_call;
		with.routed = dev_call.routed, with.nrouted = dev_call.nrouted;
		cpu_with_routed(c, &with, in, cpu);
	}
	if (c->reference)
		reference_outputs(c, in, cpu);

	upload(d, c, in, da, ev_whole, ev_in);
	for (unsigned i = 0; i < c->nargs; i++) {
		dev_call.mem[i] = da[i].mem;
		dev_call.off[i] = c->off;
	}
	assert_int_equal(d->ops->launch_async(d, k, &dev_call, ev_in, c->nargs, &ev_k), 0);
	for (unsigned i = 0; i < c->nargs; i++)
		assert_int_equal(
		        d->ops->copy_d2h(d, da[i].back, da[i].mem, 0, da[i].size, ev_k, &ev_out[i]),
		        0);
	for (unsigned i = 0; i < c->nargs; i++) {
		wait_release(d, ev_out[i]);
		wait_release(d, ev_in[i]);
		wait_release(d, ev_whole[i]);
	}
	wait_release(d, ev_k);
	free(routed);
	for (unsigned i = 0; i < c->nargs; i++) {
		/* Inputs must come back unchanged too. */
		compare_arg(d, c, i, &da[i], c->arg[i].out ? cpu[i] : in[i], r);
		d->ops->mem_free(d, da[i].mem);
		free(da[i].image);
		free(da[i].back);
		free(in[i]);
		free(cpu[i]);
	}
}

/* Runs the cases of one kernel on every accelerator; one line per device. */
static void run_kernel(enum kernel_id id, const struct kcase *cases, size_t ncases)
{
	const struct kernel_def *k = kernel_by_id(id);
	size_t ran = 0;

	assert_non_null(k);
	if (!k->cpu) {
		print_message("%s: no CPU implementation to compare with\n", k->name);
		skip();
	}
	for (size_t i = 0; i < ndevices; i++) {
		const struct backend_device *d = &devices[i];
		if (!backend_is_accelerator(d))
			continue;
		if (!d->ops->supports(d, k)) {
			print_message("%-8s %-12s not supported\n", d->name, k->name);
			continue;
		}
		struct result r = { 0 };
		rng_state = 0x7a6e64656dull + id; /* the same inputs on every device */
		for (size_t j = 0; j < ncases; j++)
			run_case(d, &cases[j], &r);
		print_message("%-8s %-12s %zu cases, max |err| %.3g (%.3f of the tolerance)\n",
		              d->name, k->name, ncases, r.max_err, r.max_ratio);
		ran++;
	}
	if (ran == 0) {
		print_message("%s: no accelerator runs it\n", k->name);
		skip();
	}
}

/* ---- the kernels ---- */

static void test_fill(void **state)
{
	(void)state;
	struct kcase c[2];
	size_t n[2] = { 1001, (1u << 18) + 3 };
	for (int i = 0; i < 2; i++) {
		c[i] = (struct kcase){ .id = KERNEL_FILL, .nargs = 1, .off = i ? 64 : 0 };
		snprintf(c[i].label, sizeof(c[i].label), "n=%zu", n[i]);
		c[i].arg[0] = out_f32(n[i], -1, 1);
		c[i].s[0].f32 = i ? -0.0f : 3.25f;
	}
	run_kernel(KERNEL_FILL, c, 2);
}

static void test_copy(void **state)
{
	(void)state;
	struct kcase c[2];
	size_t n[2] = { 1001, 100003 };
	for (int i = 0; i < 2; i++) {
		c[i] = (struct kcase){ .id = KERNEL_COPY, .nargs = 2, .off = i ? 64 : 0 };
		snprintf(c[i].label, sizeof(c[i].label), "n=%zu", n[i]);
		c[i].arg[0] = in_f32(n[i], -100, 100);
		c[i].arg[1] = out_f32(n[i], -1, 1);
	}
	run_kernel(KERNEL_COPY, c, 2);
}

static void test_axpy(void **state)
{
	(void)state;
	struct kcase c[2];
	size_t n[2] = { 1001, (1u << 18) + 3 };
	for (int i = 0; i < 2; i++) {
		c[i] = (struct kcase){ .id = KERNEL_AXPY, .nargs = 2, .off = i ? 64 : 0 };
		snprintf(c[i].label, sizeof(c[i].label), "n=%zu", n[i]);
		c[i].arg[0] = in_f32(n[i], -1, 1);
		c[i].arg[1] = out_f32(n[i], -1, 1);
		c[i].s[0].f32 = 0.75f;
		c[i].rtol = c[i].atol = 1e-6f;
	}
	run_kernel(KERNEL_AXPY, c, 2);
}

static struct kcase sgemm_case(int64_t m, int64_t n, int64_t k, uint64_t off)
{
	struct kcase c = { .id = KERNEL_SGEMM, .nargs = 3, .off = off, .rtol = 1e-4f };
	snprintf(c.label, sizeof(c.label), "%ldx%ldx%ld", (long)m, (long)n, (long)k);
	c.arg[0] = in_f32((size_t)(m * k), -1, 1);
	c.arg[1] = in_f32((size_t)(k * n), -1, 1);
	c.arg[2] = out_f32((size_t)(m * n), -1, 1);
	c.s[0].i64 = m;
	c.s[1].i64 = n;
	c.s[2].i64 = k;
	c.s[3].f32 = 1.5f;
	c.s[4].f32 = 0.5f;
	c.atol = 1e-4f * (float)k;
	return c;
}

static void test_sgemm(void **state)
{
	(void)state;
	struct kcase c[] = { sgemm_case(37, 29, 53, 0), sgemm_case(37, 29, 53, 64),
		             sgemm_case(256, 192, 320, 64) };
	run_kernel(KERNEL_SGEMM, c, 3);
}

static struct kcase rmsnorm_case(int64_t rows, int64_t dim, uint64_t off)
{
	struct kcase c = { .id = KERNEL_RMSNORM, .nargs = 3, .off = off };
	snprintf(c.label, sizeof(c.label), "%ldx%ld", (long)rows, (long)dim);
	c.arg[0] = in_f32((size_t)(rows * dim), -2, 2);
	c.arg[1] = in_f32((size_t)dim, 0.5f, 1.5f);
	c.arg[2] = out_f32((size_t)(rows * dim), -1, 1);
	c.s[0].i64 = rows;
	c.s[1].i64 = dim;
	c.s[2].f32 = 1e-5f;
	c.rtol = c.atol = 1e-5f;
	return c;
}

static void test_rmsnorm(void **state)
{
	(void)state;
	struct kcase c[] = { rmsnorm_case(3, 37, 0), rmsnorm_case(64, 1024, 64) };
	run_kernel(KERNEL_RMSNORM, c, 2);
}

static struct kcase softmax_case(int64_t rows, int64_t cols, uint64_t off)
{
	struct kcase c = { .id = KERNEL_SOFTMAX, .nargs = 1, .off = off };
	snprintf(c.label, sizeof(c.label), "%ldx%ld", (long)rows, (long)cols);
	c.arg[0] = out_f32((size_t)(rows * cols), -8, 8);
	c.s[0].i64 = rows;
	c.s[1].i64 = cols;
	c.rtol = 1e-5f;
	c.atol = 1e-6f;
	return c;
}

static void test_softmax(void **state)
{
	(void)state;
	struct kcase c[] = { softmax_case(5, 37, 0), softmax_case(64, 2048, 64) };
	run_kernel(KERNEL_SOFTMAX, c, 2);
}

static struct kcase rope_case(int64_t ntok, int64_t nheads, int64_t hd, int64_t pos0, float theta,
                              uint64_t off)
{
	struct kcase c = { .id = KERNEL_ROPE, .nargs = 1, .off = off };
	snprintf(c.label, sizeof(c.label), "%ldx%ldx%ld@%ld", (long)ntok, (long)nheads, (long)hd,
	         (long)pos0);
	c.arg[0] = out_f32((size_t)(ntok * nheads * hd), -1, 1);
	c.s[0].i64 = ntok;
	c.s[1].i64 = nheads;
	c.s[2].i64 = hd;
	c.s[3].i64 = pos0;
	c.s[4].f32 = theta;
	c.rtol = c.atol = 1e-4f;
	return c;
}

static void test_rope(void **state)
{
	(void)state;
	/* Late positions make large angles: the case that needs the same
	 * inverse frequencies as the CPU. */
	struct kcase c[] = { rope_case(3, 4, 16, 0, 10000.0f, 0),
		             rope_case(17, 8, 128, 4000, 500000.0f, 64),
		             rope_case(2, 2, 64, 30000, 10000.0f, 64) };
	run_kernel(KERNEL_ROPE, c, 3);
}

static struct kcase attn_case(int64_t batch, int64_t nh, int64_t nkv, int64_t hd, int64_t kv_len,
                              int64_t kv_cap, uint64_t off)
{
	struct kcase c = { .id = KERNEL_ATTN_DECODE, .nargs = 4, .off = off };
	snprintf(c.label, sizeof(c.label), "b%ld nh%ld nkv%ld hd%ld len%ld/%ld", (long)batch,
	         (long)nh, (long)nkv, (long)hd, (long)kv_len, (long)kv_cap);
	size_t cache = (size_t)(batch * kv_cap * nkv * hd);
	c.arg[0] = in_f32((size_t)(batch * nh * hd), -1, 1);
	c.arg[1] = in_f32(cache, -1, 1);
	c.arg[2] = in_f32(cache, -1, 1);
	c.arg[3] = out_f32((size_t)(batch * nh * hd), -1, 1);
	int64_t s[] = { batch, nh, nkv, hd, kv_len, kv_cap };
	for (int i = 0; i < 6; i++)
		c.s[i].i64 = s[i];
	c.rtol = 1e-4f;
	c.atol = 1e-5f;
	return c;
}

static void test_attn_decode(void **state)
{
	(void)state;
	/* Query heads sharing a KV head: 4 (one block of a device's kernel), 20
	 * (blocks of 8, 8 and 4 where a device takes them 8 at a time), 1 (MHA),
	 * and 3 KV heads of 3; a head dimension that is not a multiple of four
	 * (OpenCL reads K and V four floats at a time, then one by one). */
	struct kcase c[] = {
		attn_case(2, 8, 2, 16, 13, 20, 0),      attn_case(2, 8, 2, 16, 13, 20, 64),
		attn_case(3, 32, 8, 128, 500, 512, 64), attn_case(2, 40, 2, 16, 37, 40, 0),
		attn_case(1, 5, 5, 8, 9, 9, 0),         attn_case(2, 9, 3, 32, 70, 71, 0),
		attn_case(2, 12, 4, 7, 19, 19, 64)
	};
	run_kernel(KERNEL_ATTN_DECODE, c, 7);
}

/* Token t is routed to experts (3t + j) % ne, j < k: a mix of tokens that
 * go to the tested expert and tokens that do not. */
static void moe_prepare(const struct kcase *c, void **in)
{
	int64_t n = c->s[0].i64, k = c->s[3].i64, ne = c->aux;
	int32_t *ids = in[4];
	bool routed = false, skipped = false;
	for (int64_t t = 0; t < n; t++) {
		bool hit = false;
		for (int64_t j = 0; j < k; j++) {
			ids[t * k + j] = (int32_t)((3 * t + j) % ne);
			hit |= ids[t * k + j] == c->s[4].i64;
		}
		routed |= hit;
		skipped |= !hit;
	}
	assert_true(routed && skipped);
}

static struct kcase moe_case(int64_t n, int64_t dm, int64_t dff, int64_t k, int64_t ne,
                             int64_t expert, uint64_t off)
{
	struct kcase c = { .id = KERNEL_MOE_EXPERT, .nargs = 7, .off = off };
	snprintf(c.label, sizeof(c.label), "n%ld dm%ld dff%ld k%ld e%ld", (long)n, (long)dm,
	         (long)dff, (long)k, (long)expert);
	float wr = 1.0f / sqrtf((float)dm), dr = 1.0f / sqrtf((float)dff);
	c.arg[0] = in_f32((size_t)(n * dm), -1, 1);
	c.arg[1] = in_f32((size_t)(dm * dff), -wr, wr);
	c.arg[2] = in_f32((size_t)(dm * dff), -wr, wr);
	c.arg[3] = in_f32((size_t)(dff * dm), -dr, dr);
	c.arg[4] = (struct arg_spec){ .count = (size_t)(n * k), .type = I32 };
	c.arg[5] = in_f32((size_t)(n * k), 0.1f, 1);
	c.arg[6] = out_f32((size_t)(n * dm), -1, 1);
	int64_t s[] = { n, dm, dff, k, expert };
	for (int i = 0; i < 5; i++)
		c.s[i].i64 = s[i];
	c.aux = ne;
	c.rtol = c.atol = 1e-4f;
	c.prepare = moe_prepare;
	return c;
}

static void test_moe_expert(void **state)
{
	(void)state;
	struct kcase c[] = { moe_case(5, 24, 40, 2, 4, 3, 0), moe_case(5, 24, 40, 2, 4, 3, 64),
		             moe_case(32, 256, 512, 2, 8, 5, 64) };
	run_kernel(KERNEL_MOE_EXPERT, c, 3);
}

/* As moe_prepare, then: the first token routed to the expert has weight 0
 * there (it is in the routed list, yet its y row must stay as it was) and
 * an inf in its x row, and so has the first token not routed there: a
 * kernel that computed either row into y would leave inf or NaN. */
static void moe_prepare_routed(const struct kcase *c, void **in)
{
	int64_t n = c->s[0].i64, dm = c->s[1].i64, k = c->s[3].i64, expert = c->s[4].i64;
	const int32_t *ids = in[4];
	float *x = in[0], *w = in[5];
	bool zeroed = false, blocked = false;
	moe_prepare(c, in);
	for (int64_t t = 0; t < n; t++) {
		bool hit = false;
		for (int64_t j = 0; j < k; j++)
			hit |= ids[t * k + j] == expert;
		if (hit && zeroed)
			continue;
		if (!hit && blocked)
			continue;
		for (int64_t j = 0; hit && j < k; j++)
			if (ids[t * k + j] == expert)
				w[t * k + j] = 0.0f;
		x[t * dm + dm / 2] = INFINITY;
		zeroed |= hit;
		blocked |= !hit;
	}
	assert_true(zeroed && blocked);
}

/* With the routed tokens in the call (a guarded expert, as the engine
 * launches it): the device computes those rows only (CUDA gathers them),
 * to the same result. */
static void test_moe_expert_routed(void **state)
{
	(void)state;
	struct kcase c[] = { moe_case(9, 24, 40, 2, 4, 3, 0), moe_case(9, 24, 40, 2, 4, 3, 64),
		             moe_case(64, 256, 512, 2, 8, 5, 64),
		             moe_case(300, 128, 256, 4, 16, 7, 64) };
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		c[i].routed = true;
		c[i].prepare = moe_prepare_routed;
		strncat(c[i].label, " routed", sizeof(c[i].label) - strlen(c[i].label) - 1);
	}
	run_kernel(KERNEL_MOE_EXPERT, c, sizeof(c) / sizeof(c[0]));
}

/* An empty list (which the engine never hands: it skips such a task)
 * computes nothing. */
static void test_moe_expert_routed_empty(void **state)
{
	(void)state;
	struct kcase c = moe_case(9, 24, 40, 2, 4, 3, 64);
	c.routed_empty = true;
	strncat(c.label, " empty", sizeof(c.label) - strlen(c.label) - 1);
	run_kernel(KERNEL_MOE_EXPERT, &c, 1);
}

/* Ties, which go to the lower expert index: in row 0 two experts share the
 * largest logit, in row 1 every logit is the same, in row 2 one logit
 * dwarfs the others, whose probabilities underflow to exactly 0. */
static void topk_prepare(const struct kcase *c, void **in)
{
	int64_t n = c->s[0].i64, ne = c->s[1].i64;
	float *l = in[0];
	assert_true(n >= 3 && ne >= 6);
	l[1] = l[5] = 5.0f; /* above the random range */
	for (int64_t e = 0; e < ne; e++) {
		l[ne + e] = 0.25f;
		l[2 * ne + e] = e == 3 ? 100.0f : -100.0f;
	}
}

static struct kcase topk_case(int64_t n, int64_t ne, int64_t k, uint64_t off)
{
	struct kcase c = { .id = KERNEL_TOPK_ROUTER, .nargs = 3, .off = off };
	snprintf(c.label, sizeof(c.label), "n%ld ne%ld k%ld", (long)n, (long)ne, (long)k);
	c.arg[0] = in_f32((size_t)(n * ne), -4, 4);
	c.arg[1] = (struct arg_spec){ .count = (size_t)(n * k), .type = I32, .out = true };
	c.arg[2] = out_f32((size_t)(n * k), 0, 1);
	c.s[0].i64 = n;
	c.s[1].i64 = ne;
	c.s[2].i64 = k;
	c.rtol = 1e-5f;
	c.prepare = topk_prepare;
	return c;
}

static void test_topk_router(void **state)
{
	(void)state;
	struct kcase c[] = { topk_case(7, 8, 2, 0), topk_case(7, 8, 3, 64),
		             topk_case(64, 256, 8, 64), topk_case(5, 1024, 1024, 64) };
	run_kernel(KERNEL_TOPK_ROUTER, c, 4);
}

/* NaN logits: a NaN (or +inf) makes its row's softmax NaN, and NaN ranks
 * after every number with ties to the lower index, so the row picks
 * experts 0..k-1, as on the CPU (ids compared exactly, weights NaN on
 * both). Row 0: one NaN; row 1: NaN first; row 2: all NaN; row 3: +inf;
 * the other rows are plain. A device whose selection skipped NaN used to
 * run out of candidates and write past its arrays. */
static void topk_nan_prepare(const struct kcase *c, void **in)
{
	int64_t n = c->s[0].i64, ne = c->s[1].i64;
	float *l = in[0];
	assert_true(n >= 5 && ne >= 6);
	l[5] = NAN;
	l[ne] = NAN;
	for (int64_t e = 0; e < ne; e++)
		l[2 * ne + e] = NAN;
	l[3 * ne + 4] = INFINITY;
}

static void test_topk_router_nan(void **state)
{
	(void)state;
	struct kcase c[] = { topk_case(6, 8, 3, 0), topk_case(6, 256, 8, 64),
		             topk_case(5, 64, 64, 64) };
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		c[i].prepare = topk_nan_prepare;
		strcat(c[i].label, " NaN");
	}
	run_kernel(KERNEL_TOPK_ROUTER, c, sizeof(c) / sizeof(c[0]));
}

/* ---- tiled Cholesky ---- */

/* The CPU kernel alone against the reference, the way run_case does for a
 * device but on host memory: for kernels no accelerator has (spotrf), and
 * so that every tiled-Cholesky kernel is checked on the CPU here too. */
static void cpu_case(const struct kcase *c, struct result *r)
{
	const struct kernel_def *k = kernel_by_id(c->id);
	void *in[TDM_MAX_ARGS] = { 0 }, *got[TDM_MAX_ARGS] = { 0 }, *want[TDM_MAX_ARGS] = { 0 };
	struct tdm_kernel_call call = { .nargs = c->nargs };

	for (unsigned i = 0; i < c->nargs; i++) {
		size_t bytes = arg_bytes(&c->arg[i]);
		in[i] = malloc(bytes);
		got[i] = malloc(bytes);
		want[i] = malloc(bytes);
		assert_non_null(in[i]);
		assert_non_null(got[i]);
		assert_non_null(want[i]);
		fill_random(&c->arg[i], in[i]);
	}
	if (c->prepare)
		c->prepare(c, in);
	memcpy(call.s, c->s, sizeof(c->s));
	for (unsigned i = 0; i < c->nargs; i++) {
		memcpy(got[i], in[i], arg_bytes(&c->arg[i]));
		memcpy(want[i], in[i], arg_bytes(&c->arg[i]));
		call.ptr[i] = got[i];
		call.len[i] = arg_bytes(&c->arg[i]);
	}
	assert_int_equal(k->check(&call), 0);
	assert_int_equal(k->cpu(&call), 0);
	c->reference(c, in, want);
	for (unsigned i = 0; i < c->nargs; i++) {
		const struct arg_spec *a = &c->arg[i];
		if (!a->out && memcmp(got[i], in[i], arg_bytes(a)) != 0)
			fail_msg("cpu %s %s: input arg %u changed", k->name, c->label, i);
		for (size_t e = 0; a->out && e < a->count; e++) {
			if (a->tri && e % a->tri > e / a->tri)
				continue;
			float g = ((float *)got[i])[e], w = ((float *)want[i])[e];
			if (!close_enough(g, w, c->rtol, c->atol, r))
				fail_msg("cpu %s %s: arg %u [%zu] = %.9g, want %.9g", k->name,
				         c->label, i, e, g, w);
		}
		free(in[i]);
		free(got[i]);
		free(want[i]);
	}
}

/* The CPU and every accelerator that has the kernel, against the
 * reference; one line each. */
static void run_kernel_ref(enum kernel_id id, const struct kcase *cases, size_t ncases)
{
	const struct kernel_def *k = kernel_by_id(id);
	struct result r = { 0 };

	rng_state = 0x7a6e64656dull + id;
	for (size_t j = 0; j < ncases; j++)
		cpu_case(&cases[j], &r);
	print_message("%-8s %-12s %zu cases, max |err| %.3g (%.3f of the tolerance)\n", "cpu",
	              k->name, ncases, r.max_err, r.max_ratio);
	for (size_t i = 0; i < ndevices; i++) {
		const struct backend_device *d = &devices[i];
		if (!backend_is_accelerator(d))
			continue;
		if (!d->ops->supports(d, k)) {
			print_message("%-8s %-12s not supported\n", d->name, k->name);
			continue;
		}
		r = (struct result){ 0 };
		rng_state = 0x7a6e64656dull + id; /* the same inputs on every device */
		for (size_t j = 0; j < ncases; j++)
			run_case(d, &cases[j], &r);
		print_message("%-8s %-12s %zu cases, max |err| %.3g (%.3f of the tolerance)\n",
		              d->name, k->name, ncases, r.max_err, r.max_ratio);
	}
}

/* A = M M^T / nb + I (M uniform in [-1, 1)): symmetric positive definite,
 * eigenvalues in [1, about 5], in double. */
static double *spd(size_t nb)
{
	double *m = malloc(nb * nb * sizeof(double)), *a = malloc(nb * nb * sizeof(double));
	assert_non_null(m);
	assert_non_null(a);
	for (size_t i = 0; i < nb * nb; i++)
		m[i] = splitmix_float(&rng_state, -1, 1);
	for (size_t i = 0; i < nb; i++) {
		for (size_t j = 0; j <= i; j++) {
			double s = 0;
			for (size_t l = 0; l < nb; l++)
				s += m[i * nb + l] * m[j * nb + l];
			a[i * nb + j] = a[j * nb + i] = s / (double)nb + (i == j);
		}
	}
	free(m);
	return a;
}

/* In-place lower Cholesky factor of the row-major a, in double; the upper
 * part is left alone. */
static void cholesky(double *a, size_t nb)
{
	for (size_t j = 0; j < nb; j++) {
		double d = a[j * nb + j];
		for (size_t l = 0; l < j; l++)
			d -= a[j * nb + l] * a[j * nb + l];
		assert_true(d > 0);
		a[j * nb + j] = sqrt(d);
		for (size_t i = j + 1; i < nb; i++) {
			double s = a[i * nb + j];
			for (size_t l = 0; l < j; l++)
				s -= a[i * nb + l] * a[j * nb + l];
			a[i * nb + j] = s / a[j * nb + j];
		}
	}
}

static size_t tile_nb(const struct kcase *c)
{
	return (size_t)c->s[0].i64;
}

static void spotrf_prepare(const struct kcase *c, void **in)
{
	size_t nb = tile_nb(c);
	double *a = spd(nb);
	for (size_t i = 0; i < nb * nb; i++)
		((float *)in[0])[i] = (float)a[i];
	free(a);
}

static void spotrf_reference(const struct kcase *c, void *const *in, void **want)
{
	size_t nb = tile_nb(c);
	double *a = malloc(nb * nb * sizeof(double));
	assert_non_null(a);
	for (size_t i = 0; i < nb * nb; i++)
		a[i] = ((const float *)in[0])[i];
	cholesky(a, nb);
	for (size_t i = 0; i < nb * nb; i++)
		((float *)want[0])[i] = (float)a[i];
	free(a);
}

/* L: the factor of an SPD matrix, with NaN above the diagonal (a strsm that
 * reads there fails). */
static void strsm_prepare(const struct kcase *c, void **in)
{
	size_t nb = tile_nb(c);
	double *a = spd(nb);
	cholesky(a, nb);
	for (size_t i = 0; i < nb; i++)
		for (size_t j = 0; j < nb; j++)
			((float *)in[0])[i * nb + j] = j <= i ? (float)a[i * nb + j] : NAN;
	free(a);
}

/* X L^T = B, row by row: L x = b by forward substitution. */
static void strsm_reference(const struct kcase *c, void *const *in, void **want)
{
	size_t nb = tile_nb(c);
	const float *l = in[0], *b = in[1];
	double *x = malloc(nb * sizeof(double));
	assert_non_null(x);
	for (size_t r = 0; r < nb; r++) {
		for (size_t i = 0; i < nb; i++) {
			double s = b[r * nb + i];
			for (size_t j = 0; j < i; j++)
				s -= (double)l[i * nb + j] * x[j];
			x[i] = s / l[i * nb + i];
		}
		for (size_t i = 0; i < nb; i++)
			((float *)want[1])[r * nb + i] = (float)x[i];
	}
	free(x);
}

static void ssyrk_reference(const struct kcase *c, void *const *in, void **want)
{
	size_t nb = tile_nb(c);
	const float *a = in[0], *c0 = in[1];
	for (size_t i = 0; i < nb; i++) {
		for (size_t j = 0; j <= i; j++) {
			double s = c0[i * nb + j];
			for (size_t l = 0; l < nb; l++)
				s -= (double)a[i * nb + l] * a[j * nb + l];
			((float *)want[1])[i * nb + j] = (float)s;
		}
	}
}

static void sgemm_nt_reference(const struct kcase *c, void *const *in, void **want)
{
	size_t nb = tile_nb(c);
	const float *a = in[0], *b = in[1], *c0 = in[2];
	for (size_t i = 0; i < nb; i++) {
		for (size_t j = 0; j < nb; j++) {
			double s = c0[i * nb + j];
			for (size_t l = 0; l < nb; l++)
				s -= (double)a[i * nb + l] * b[j * nb + l];
			((float *)want[2])[i * nb + j] = (float)s;
		}
	}
}

static struct kcase tile_case(enum kernel_id id, int64_t nb, uint64_t off)
{
	size_t n2 = (size_t)(nb * nb);
	struct kcase c = { .id = id, .off = off, .rtol = 1e-4f };
	snprintf(c.label, sizeof(c.label), "nb=%ld off=%lu", (long)nb, (unsigned long)off);
	c.s[0].i64 = nb;
	switch (id) {
	case KERNEL_SPOTRF:
		c.nargs = 1;
		c.arg[0] = out_f32(n2, -1, 1);
		c.arg[0].tri = (size_t)nb;
		c.atol = 1e-5f * (float)nb;
		c.prepare = spotrf_prepare;
		c.reference = spotrf_reference;
		break;
	case KERNEL_STRSM:
		c.nargs = 2;
		c.arg[0] = in_f32(n2, -1, 1);
		c.arg[1] = out_f32(n2, -1, 1);
		c.atol = 1e-5f * (float)nb;
		c.prepare = strsm_prepare;
		c.reference = strsm_reference;
		break;
	case KERNEL_SSYRK:
		c.nargs = 2;
		c.arg[0] = in_f32(n2, -1, 1);
		c.arg[1] = out_f32(n2, -1, 1);
		c.arg[1].tri = (size_t)nb;
		c.atol = 1e-4f * (float)nb;
		c.reference = ssyrk_reference;
		break;
	default: /* KERNEL_SGEMM_NT */
		c.nargs = 3;
		c.arg[0] = in_f32(n2, -1, 1);
		c.arg[1] = in_f32(n2, -1, 1);
		c.arg[2] = out_f32(n2, -1, 1);
		c.atol = 1e-4f * (float)nb;
		c.reference = sgemm_nt_reference;
		break;
	}
	return c;
}

static void run_tiles(enum kernel_id id)
{
	struct kcase c[] = { tile_case(id, 1, 0), tile_case(id, 7, 64), tile_case(id, 64, 0),
		             tile_case(id, 64, 64) };
	run_kernel_ref(id, c, sizeof(c) / sizeof(c[0]));
}

static void test_spotrf(void **state)
{
	(void)state;
	run_tiles(KERNEL_SPOTRF);
}

static void test_strsm(void **state)
{
	(void)state;
	run_tiles(KERNEL_STRSM);
}

static void test_ssyrk(void **state)
{
	(void)state;
	run_tiles(KERNEL_SSYRK);
}

static void test_sgemm_nt(void **state)
{
	(void)state;
	run_tiles(KERNEL_SGEMM_NT);
}

static size_t for_each_accelerator(void (*fn)(const struct backend_device *d));

/* spotrf is CPU only: an accelerator must say so rather than take it. */
static void spotrf_not_on(const struct backend_device *d)
{
	assert_false(d->ops->supports(d, kernel_by_id(KERNEL_SPOTRF)));
}

static void test_spotrf_cpu_only(void **state)
{
	(void)state;
	for_each_accelerator(spotrf_not_on);
}

/* ---- the rest of the seam ---- */

static size_t for_each_accelerator(void (*fn)(const struct backend_device *d))
{
	size_t n = 0;
	for (size_t i = 0; i < ndevices; i++) {
		if (backend_is_accelerator(&devices[i])) {
			fn(&devices[i]);
			n++;
		}
	}
	if (n == 0) {
		print_message("no accelerator found\n");
		skip();
	}
	return n;
}

static void noop_and_spin(const struct backend_device *d)
{
	const struct kernel_def *noop = kernel_by_id(KERNEL_NOOP),
	                        *spin = kernel_by_id(KERNEL_SPIN);
	struct tdm_kernel_call call = { 0 };
	struct backend_event *ev;

	assert_false(d->ops->supports(d, spin));
	assert_true(d->ops->supports(d, noop));
	assert_int_equal(d->ops->launch_async(d, noop, &call, NULL, 0, &ev), 0);
	wait_release(d, ev);
	print_message("%-8s noop         ok, spin not supported\n", d->name);
}

static void test_noop(void **state)
{
	(void)state;
	for_each_accelerator(noop_and_spin);
}

/* An argument offset that is not a whole float is refused. */
static void odd_offset(const struct backend_device *d)
{
	const struct kernel_def *fill = kernel_by_id(KERNEL_FILL);
	struct tdm_kernel_call call = { .nargs = 1, .len = { 64 }, .off = { 2 } };
	struct backend_event *ev = NULL;

	assert_int_equal(d->ops->mem_alloc(d, 128, &call.mem[0]), 0);
	assert_int_equal(d->ops->launch_async(d, fill, &call, NULL, 0, &ev), -TDM_EINVAL);
	assert_null(ev);
	d->ops->mem_free(d, call.mem[0]);
}

static void test_odd_offset(void **state)
{
	(void)state;
	for_each_accelerator(odd_offset);
}

#define ROUND_TRIP_BYTES (1u << 20)
#define ROUND_TRIP_OFF 4099 /* copies take any byte offset */

/* 1 MiB up and back, at offset 0 and at an odd offset, each d2h chained to
 * its h2d with `after` and only the last event waited for. */
static void round_trip(const struct backend_device *d)
{
	size_t size = ROUND_TRIP_BYTES + ROUND_TRIP_OFF;
	unsigned char *src = malloc(ROUND_TRIP_BYTES), *dst = malloc(ROUND_TRIP_BYTES);
	void *mem;
	uint64_t offs[] = { 0, ROUND_TRIP_OFF };

	assert_non_null(src);
	assert_non_null(dst);
	for (size_t i = 0; i < ROUND_TRIP_BYTES; i++)
		src[i] = (unsigned char)(splitmix64(&rng_state) >> 56);
	assert_int_equal(d->ops->mem_alloc(d, size, &mem), 0);
	for (int i = 0; i < 2; i++) {
		struct backend_event *up, *down;
		memset(dst, 0, ROUND_TRIP_BYTES);
		assert_int_equal(
		        d->ops->copy_h2d(d, mem, offs[i], src, ROUND_TRIP_BYTES, NULL, &up), 0);
		assert_int_equal(
		        d->ops->copy_d2h(d, dst, mem, offs[i], ROUND_TRIP_BYTES, up, &down), 0);
		wait_release(d, down);
		assert_int_equal(d->ops->event_query(d, up), 1);
		d->ops->event_release(d, up);
		assert_memory_equal(src, dst, ROUND_TRIP_BYTES);
	}
	d->ops->mem_free(d, mem);
	free(src);
	free(dst);
	print_message("%-8s copies       1 MiB round trips at offsets 0 and %u ok\n", d->name,
	              ROUND_TRIP_OFF);
}

static void test_copies_round_trip(void **state)
{
	(void)state;
	rng_state = 1;
	for_each_accelerator(round_trip);
}

/* More than the device has: -TDM_ENOMEM, not a crash. */
static void too_big(const struct backend_device *d)
{
	void *mem = NULL;
	if (d->mem_bytes == 0 || d->mem_bytes > UINT64_MAX / 2)
		return;
	assert_int_equal(d->ops->mem_alloc(d, d->mem_bytes * 2, &mem), -TDM_ENOMEM);
}

static void test_alloc_too_big(void **state)
{
	(void)state;
	for_each_accelerator(too_big);
}

#define OVERLAP_FLOATS 4096
#define OVERLAP_SHIFT 64 /* bytes */

/* copy between overlapping slices of one buffer, both ways: memmove, like
 * the CPU kernel. */
static void copy_overlap(const struct backend_device *d)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_COPY);
	const size_t bytes = OVERLAP_FLOATS * sizeof(float);
	const uint64_t len = bytes - OVERLAP_SHIFT;
	float *host = malloc(bytes), *want = malloc(bytes), *got = malloc(bytes);

	assert_non_null(host);
	assert_non_null(want);
	assert_non_null(got);
	for (int dir = 0; dir < 2; dir++) {
		uint64_t src = dir ? OVERLAP_SHIFT : 0, dst = dir ? 0 : OVERLAP_SHIFT;
		for (size_t i = 0; i < OVERLAP_FLOATS; i++)
			host[i] = splitmix_float(&rng_state, -1, 1);
		memcpy(want, host, bytes);
		struct tdm_kernel_call cpu_call = { .nargs = 2, .len = { len, len } };
		cpu_call.ptr[0] = (char *)want + src;
		cpu_call.ptr[1] = (char *)want + dst;
		assert_int_equal(k->cpu(&cpu_call), 0);

		void *mem;
		struct backend_event *up, *ev, *down;
		assert_int_equal(d->ops->mem_alloc(d, bytes, &mem), 0);
		assert_int_equal(d->ops->copy_h2d(d, mem, 0, host, bytes, NULL, &up), 0);
		struct tdm_kernel_call call = {
			.nargs = 2, .len = { len, len }, .mem = { mem, mem }, .off = { src, dst }
		};
		assert_int_equal(d->ops->launch_async(d, k, &call, &up, 1, &ev), 0);
		assert_int_equal(d->ops->copy_d2h(d, got, mem, 0, bytes, ev, &down), 0);
		wait_release(d, down);
		wait_release(d, ev);
		wait_release(d, up);
		assert_memory_equal(got, want, bytes);
		d->ops->mem_free(d, mem);
	}
	free(host);
	free(want);
	free(got);
	print_message("%-8s copy         overlapping slices ok\n", d->name);
}

static void test_copy_overlap(void **state)
{
	(void)state;
	rng_state = 2;
	for_each_accelerator(copy_overlap);
}

/* A kernel's end as the device saw it (event_ended): a worker that comes
 * to wait for it late does not move it. The OpenCL backend must answer;
 * another (CUDA) that does not is said to. */
#define LATE_MS 100

static void one_fill(const struct backend_device *d, void *mem, uint64_t bytes,
                     struct backend_event **ev, uint64_t *launched)
{
	struct tdm_kernel_call call = { .nargs = 1, .len = { bytes }, .mem = { mem } };
	call.s[0].f32 = 1.5f;
	*launched = clock_monotonic_ns();
	assert_int_equal(d->ops->launch_async(d, kernel_by_id(KERNEL_FILL), &call, NULL, 0, ev), 0);
	assert_int_equal(d->ops->event_wait(d, *ev), 0);
}

static void late_wait(const struct backend_device *d)
{
	if (!d->ops->event_ended) {
		assert_string_not_equal(d->ops->name, "opencl");
		print_message("%-8s event_ended  not given by %s\n", d->name, d->ops->name);
		return;
	}
	const uint64_t bytes = 4u << 20;
	void *mem;
	struct backend_event *ev;
	uint64_t launched;
	assert_int_equal(d->ops->mem_alloc(d, bytes, &mem), 0);
	/* Waits that return at once: the clocks' offset is learned. */
	for (int i = 0; i < 8; i++) {
		one_fill(d, mem, bytes, &ev, &launched);
		uint64_t waited = clock_monotonic_ns();
		uint64_t end = d->ops->event_ended(d, ev, waited);
		assert_true(end >= launched && end <= waited);
		d->ops->event_release(d, ev);
	}
	/* A wait that returns LATE_MS after the kernel ended. */
	one_fill(d, mem, bytes, &ev, &launched);
	nanosleep(&(struct timespec){ .tv_nsec = LATE_MS * 1000000L }, NULL);
	uint64_t waited = clock_monotonic_ns();
	uint64_t end = d->ops->event_ended(d, ev, waited);
	d->ops->event_release(d, ev);
	/* No earlier than the launch; and the sleep is not in it (the end is
	 * off by the quickest wake-up of the waits above at most). */
	assert_true(end >= launched);
	assert_true(end + (uint64_t)LATE_MS * 1000000u / 2 <= waited);
	print_message("%-8s event_ended  %.3f ms before a wait %d ms late returned\n", d->name,
	              (double)(waited - end) / 1e6, LATE_MS);
	d->ops->mem_free(d, mem);
}

static void test_late_wait(void **state)
{
	(void)state;
	for_each_accelerator(late_wait);
}

/* ---- setup ---- */

static void add_backend(const struct backend_ops *ops, struct backend_probe_params *p)
{
	size_t n = 0;
	assert_int_equal(ops->probe(p, devices + ndevices, MAX_DEVICES - ndevices, &n), 0);
	if (p->note[0])
		print_message("%s\n", p->note);
	for (size_t i = ndevices; i < ndevices + n; i++) {
		const struct backend_device *d = &devices[i];
		print_message("%-8s %s, %.1f GiB, pci \"%s\", numa %d\n", d->name, d->model,
		              (double)d->mem_bytes / (1u << 30), d->pci_busid, d->numa_node);
	}
	ndevices += n;
}

static int group_setup(void **state)
{
	(void)state;
	if (hwloc_topology_init(&topo) != 0)
		return -1;
	/* PCI objects, so that devices find their NUMA node. */
	hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	if (hwloc_topology_load(topo) != 0)
		return -1;
	struct backend_probe_params p = { .topology = topo };
	add_backend(&backend_opencl, &p);

	char note[BACKEND_NOTE_MAX] = "";
	const struct backend_ops *cuda = backend_cuda_load(NULL, note, sizeof(note));
	if (cuda) {
		p = (struct backend_probe_params){ .topology = topo };
		add_backend(cuda, &p);
	} else {
		print_message("%s\n", note);
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < ndevices; i++)
		devices[i].ops->release(&devices[i]);
	ndevices = 0;
	backend_cuda_unload();
	/* The topology stays until exit: destroying the last one unloads
	 * hwloc's PCI plugin, which then leaks what libpciaccess allocated,
	 * and LeakSanitizer fails the sanitizer flavour for it. */
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copies_round_trip),
		cmocka_unit_test(test_noop),
		cmocka_unit_test(test_odd_offset),
		cmocka_unit_test(test_alloc_too_big),
		cmocka_unit_test(test_fill),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_copy_overlap),
		cmocka_unit_test(test_late_wait),
		cmocka_unit_test(test_axpy),
		cmocka_unit_test(test_sgemm),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_softmax),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_attn_decode),
		cmocka_unit_test(test_moe_expert),
		cmocka_unit_test(test_moe_expert_routed),
		cmocka_unit_test(test_moe_expert_routed_empty),
		cmocka_unit_test(test_topk_router),
		cmocka_unit_test(test_topk_router_nan),
		cmocka_unit_test(test_spotrf),
		cmocka_unit_test(test_strsm),
		cmocka_unit_test(test_ssyrk),
		cmocka_unit_test(test_sgemm_nt),
		cmocka_unit_test(test_spotrf_cpu_only),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
