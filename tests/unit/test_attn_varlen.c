/* attn_decode_varlen: several requests of different KV lengths in one task,
 * their K and V rows in shared pools located by an index buffer.
 *
 * - the intake check and the cost features (from the scalars);
 * - ragged batches (1, 3, 17 requests, KV lengths 1..2048, GQA, MHA, MQA)
 *   on the CPU against a double-precision reference loop, and against
 *   attn_decode run on each request alone (bit for bit: the same code);
 * - the same on every accelerator found (OpenCL through PoCL here, CUDA
 *   where its plugin finds a GPU), within attn_decode's tolerance, through
 *   the backend seam as the engine drives it;
 * - a bad index (out of the pools, empty, lengths that do not add up to the
 *   scalar total) fails the task with -TDM_ERANGE before anything is read,
 *   on every backend, and leaves the output as it was; the pools are
 *   allocated to their exact size, so that the sanitizer flavour catches a
 *   read outside them;
 * - the CPU gang: helpers of idle cores join a job, a busy core's helper
 *   stays out, and a varlen task spread over the cores gives the same bits
 *   as on one. */
#include <hwloc.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "backends/cpu/cpu_gang.h"
#include "tandem.h"
#include "tests/harness/splitmix.h"

#define MAX_DEVICES 32
#define ARG_OFF 64 /* accelerators: every argument at this byte offset */
#define TAIL 64 /* and this many sentinel bytes after it */
#define SENTINEL 0xa5
#define RTOL 1e-4
#define ATOL 1e-5

static hwloc_topology_t topo;
static struct backend_device cpus[MAX_DEVICES], accels[MAX_DEVICES];
static size_t ncpus, naccels;

/* ---- random inputs ---- */

static uint64_t rng_state;

static float *random_floats(size_t n)
{
	float *f = malloc(n * sizeof(float));
	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		f[i] = splitmix_float(&rng_state, -1, 1);
	return f;
}

/* ---- a case: requests laid out in a pool ---- */

struct vcase {
	char label[96];
	size_t nreq, nh, nkv, hd, rows;
	int64_t total;
	int32_t *index; /* nreq entries of (row, len) */
	float *q, *k, *v; /* exactly nreq*nh*hd and rows*nkv*hd floats */
};

/* Requests in a shuffled order in the pool, with gaps of 0..3 rows between
 * them; with share, the last request reads the first one's rows (a shared
 * prefix) instead of its own. */
static struct vcase make_case(size_t nreq, size_t nh, size_t nkv, size_t hd, const int32_t *lens,
                              bool share)
{
	struct vcase c = { .nreq = nreq, .nh = nh, .nkv = nkv, .hd = hd };
	size_t *order = malloc(nreq * sizeof(size_t));
	c.index = malloc(nreq * 2 * sizeof(int32_t));
	assert_non_null(order);
	assert_non_null(c.index);
	for (size_t r = 0; r < nreq; r++)
		order[r] = r;
	for (size_t r = nreq; r > 1; r--) {
		size_t j = splitmix64(&rng_state) % r, t = order[r - 1];
		order[r - 1] = order[j];
		order[j] = t;
	}
	size_t cursor = splitmix64(&rng_state) % 4;
	int32_t maxlen = 0;
	for (size_t i = 0; i < nreq; i++) {
		size_t r = order[i];
		c.index[2 * r] = (int32_t)cursor;
		c.index[2 * r + 1] = lens[r];
		cursor += (size_t)lens[r] + splitmix64(&rng_state) % 4;
		maxlen = lens[r] > maxlen ? lens[r] : maxlen;
	}
	if (share && nreq > 1) {
		c.index[2 * (nreq - 1)] = c.index[0];
		if (c.index[2 * nreq - 1] > c.index[1])
			c.index[2 * nreq - 1] = c.index[1];
	}
	c.rows = cursor;
	for (size_t r = 0; r < nreq; r++)
		c.total += c.index[2 * r + 1];
	c.q = random_floats(nreq * nh * hd);
	c.k = random_floats(c.rows * nkv * hd);
	c.v = random_floats(c.rows * nkv * hd);
	snprintf(c.label, sizeof(c.label), "%zu req nh%zu nkv%zu hd%zu tokens %lld max %d%s", nreq,
	         nh, nkv, hd, (long long)c.total, (int)maxlen, share ? " shared" : "");
	free(order);
	return c;
}

static void free_case(struct vcase *c)
{
	free(c->index);
	free(c->q);
	free(c->k);
	free(c->v);
}

static size_t out_floats(const struct vcase *c)
{
	return c->nreq * c->nh * c->hd;
}

static struct tdm_kernel_call host_call(const struct vcase *c, const int32_t *index, float *out)
{
	struct tdm_kernel_call call = { .nargs = 5 };
	call.ptr[VARLEN_Q] = c->q;
	call.ptr[VARLEN_K] = c->k;
	call.ptr[VARLEN_V] = c->v;
	call.ptr[VARLEN_INDEX] = (void *)index;
	call.ptr[VARLEN_OUT] = out;
	call.len[VARLEN_Q] = call.len[VARLEN_OUT] = out_floats(c) * sizeof(float);
	call.len[VARLEN_K] = call.len[VARLEN_V] = c->rows * c->nkv * c->hd * sizeof(float);
	call.len[VARLEN_INDEX] = c->nreq * 2 * sizeof(int32_t);
	int64_t s[] = { (int64_t)c->nreq, (int64_t)c->nh, (int64_t)c->nkv, (int64_t)c->hd,
		        c->total };
	for (int i = 0; i < 5; i++)
		call.s[i].i64 = s[i];
	return call;
}

/* The reference: every request's attention in double precision. */
static double *reference(const struct vcase *c)
{
	double *want = malloc(out_floats(c) * sizeof(double));
	assert_non_null(want);
	size_t group = c->nh / c->nkv, stride = c->nkv * c->hd;
	for (size_t r = 0; r < c->nreq; r++) {
		size_t row = (size_t)c->index[2 * r], len = (size_t)c->index[2 * r + 1];
		double *s = malloc(len * sizeof(double));
		assert_non_null(s);
		for (size_t h = 0; h < c->nh; h++) {
			const float *q = c->q + (r * c->nh + h) * c->hd;
			size_t kv = row * stride + (h / group) * c->hd;
			double max = -INFINITY, sum = 0;
			for (size_t t = 0; t < len; t++) {
				double d = 0;
				for (size_t i = 0; i < c->hd; i++)
					d += (double)q[i] * c->k[kv + t * stride + i];
				s[t] = d / sqrt((double)c->hd);
				max = s[t] > max ? s[t] : max;
			}
			for (size_t t = 0; t < len; t++)
				sum += s[t] = exp(s[t] - max);
			for (size_t i = 0; i < c->hd; i++) {
				double o = 0;
				for (size_t t = 0; t < len; t++)
					o += s[t] * c->v[kv + t * stride + i];
				want[(r * c->nh + h) * c->hd + i] = o / sum;
			}
		}
		free(s);
	}
	return want;
}

static double compare(const char *who, const struct vcase *c, const float *got, const double *want)
{
	double worst = 0;
	for (size_t i = 0; i < out_floats(c); i++) {
		double err = fabs((double)got[i] - want[i]), tol = ATOL + RTOL * fabs(want[i]);
		if (!(err <= tol))
			fail_msg("%s %s: out[%zu] = %.9g, want %.9g", who, c->label, i, got[i],
			         want[i]);
		worst = err / tol > worst ? err / tol : worst;
	}
	return worst;
}

/* The cases every backend runs (seeded: the same on each). */
#define NCASES 7
static void make_cases(struct vcase *cs)
{
	static const int32_t one_long[] = { 2048 }, one_short[] = { 1 };
	static const int32_t three[] = { 1, 2048, 700 }, three_long[] = { 2500, 3, 1025 };
	int32_t seventeen[17], mqa[17];

	rng_state = 0x7661726c656eull;
	for (int r = 0; r < 17; r++) {
		seventeen[r] = (int32_t)(1 + splitmix64(&rng_state) % 2048);
		mqa[r] = (int32_t)(1 + splitmix64(&rng_state) % 300);
	}
	seventeen[3] = 1;
	seventeen[11] = 2048;
	cs[0] = make_case(1, 8, 2, 16, one_long, false);
	cs[1] = make_case(1, 4, 4, 8, one_short, false);
	cs[2] = make_case(3, 8, 2, 16, three, false);
	cs[3] = make_case(3, 4, 1, 32, three_long, true); /* more than two chunks */
	cs[4] = make_case(17, 32, 8, 64, seventeen, false); /* GQA, LLaMA-like heads */
	cs[5] = make_case(17, 8, 8, 16, mqa, true); /* MHA, a shared prefix */
	cs[6] = make_case(17, 16, 1, 24, mqa, false); /* MQA */
}

static void free_cases(struct vcase *cs)
{
	for (int i = 0; i < NCASES; i++)
		free_case(&cs[i]);
}

/* ---- intake: check and features ---- */

static void test_check_and_features(void **state)
{
	(void)state;
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	int32_t lens[] = { 5, 9, 2 };
	assert_non_null(k);
	assert_int_equal(kernel_lookup("attn_decode_varlen"), KERNEL_ATTN_DECODE_VARLEN);
	assert_false(kernel_sim_only(KERNEL_ATTN_DECODE_VARLEN));
	rng_state = 1;
	struct vcase c = make_case(3, 8, 2, 16, lens, false);
	float *out = calloc(out_floats(&c), sizeof(float));
	struct tdm_kernel_call good = host_call(&c, c.index, out), call;
	assert_int_equal(k->check(&good), 0);

	struct {
		int scalar;
		int64_t v;
		int want;
	} bad_scalars[] = {
		{ 0, 0, -TDM_EARITY }, /* no request */
		{ 1, 7, -TDM_EARITY }, /* nh not a multiple of nkv */
		{ 2, 0, -TDM_EARITY },
		{ 3, 65537, -TDM_EARITY },
		{ 4, 2, -TDM_EARITY }, /* fewer tokens than requests */
		{ 4, 3 * (int64_t)INT32_MAX + 1, -TDM_EARITY },
		{ 0, 4, -TDM_ERANGE }, /* q, index and out hold 3 requests only */
	};
	for (size_t i = 0; i < sizeof(bad_scalars) / sizeof(bad_scalars[0]); i++) {
		call = good;
		call.s[bad_scalars[i].scalar].i64 = bad_scalars[i].v;
		assert_int_equal(k->check(&call), bad_scalars[i].want);
	}
	for (int a = 0; a < 5; a++) {
		call = good;
		call.len[a] -= 4; /* every argument is needed whole... */
		int want = a == VARLEN_K || a == VARLEN_V ? 0 : -TDM_ERANGE;
		assert_int_equal(k->check(&call), want);
		call.len[a] += 2; /* ...and in whole words */
		assert_int_equal(k->check(&call), -TDM_ERANGE);
	}
	call = good;
	call.len[VARLEN_V] = c.nkv * c.hd * 4 - 4; /* less than one row */
	assert_int_equal(k->check(&call), -TDM_ERANGE);

	/* Features: those of attn_decode over total_tokens positions per
	 * head, the index read besides; the index's contents do not enter. */
	struct kernel_features f, g, d;
	k->features(&good, &f);
	double nh = 8, nkv = 2, hd = 16, total = 16, nreq = 3;
	assert_true(fabs(f.flops - nh * total * (4 * hd + 64)) < 1e-6);
	assert_true(fabs(f.domain - nh * total) < 1e-9);
	assert_true(fabs(f.bytes - 4 * (2 * nreq * nh * hd + 2 * total * nkv * hd + 2 * nreq)) <
	            1e-6);
	int32_t other[6] = { 0, 1, 0, 1, 0, 14 };
	call = host_call(&c, other, out);
	k->features(&call, &g);
	assert_memory_equal(&f, &g, sizeof(f));
	/* attn_decode of one sequence of 16 positions scores as many. */
	struct tdm_kernel_call ad = { .nargs = 4 };
	int64_t s[] = { 1, 8, 2, 16, 16, 16 };
	for (int i = 0; i < 6; i++)
		ad.s[i].i64 = s[i];
	kernel_by_id(KERNEL_ATTN_DECODE)->features(&ad, &d);
	assert_true(fabs(d.flops - f.flops) < 1e-6 && fabs(d.domain - f.domain) < 1e-9);
	free(out);
	free_case(&c);
}

/* ---- CPU ---- */

/* Request r alone through attn_decode (batch 1, its rows as the cache). */
static void attn_decode_alone(const struct vcase *c, size_t r, float *out)
{
	size_t row = (size_t)c->index[2 * r], len = (size_t)c->index[2 * r + 1];
	size_t cache = len * c->nkv * c->hd, qn = c->nh * c->hd;
	struct tdm_kernel_call call = { .nargs = 4 };
	call.ptr[0] = c->q + r * qn;
	call.ptr[1] = c->k + row * c->nkv * c->hd;
	call.ptr[2] = c->v + row * c->nkv * c->hd;
	call.ptr[3] = out + r * qn;
	call.len[0] = call.len[3] = qn * sizeof(float);
	call.len[1] = call.len[2] = cache * sizeof(float);
	int64_t s[] = { 1,           (int64_t)c->nh, (int64_t)c->nkv, (int64_t)c->hd, (int64_t)len,
		        (int64_t)len };
	for (int i = 0; i < 6; i++)
		call.s[i].i64 = s[i];
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE);
	assert_int_equal(k->check(&call), 0);
	assert_int_equal(k->cpu(&call), 0);
}

static void test_cpu_ragged(void **state)
{
	(void)state;
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct vcase cs[NCASES];
	double worst = 0;

	make_cases(cs);
	for (int i = 0; i < NCASES; i++) {
		const struct vcase *c = &cs[i];
		float *got = malloc(out_floats(c) * sizeof(float));
		float *alone = malloc(out_floats(c) * sizeof(float));
		assert_non_null(got);
		assert_non_null(alone);
		struct tdm_kernel_call call = host_call(c, c->index, got);
		assert_int_equal(k->check(&call), 0);
		assert_int_equal(k->cpu(&call), 0);
		double *want = reference(c);
		double w = compare("cpu", c, got, want);
		worst = w > worst ? w : worst;
		for (size_t r = 0; r < c->nreq; r++)
			attn_decode_alone(c, r, alone);
		if (memcmp(got, alone, out_floats(c) * sizeof(float)) != 0)
			fail_msg("cpu %s: differs from attn_decode per request", c->label);
		free(want);
		free(got);
		free(alone);
	}
	print_message("cpu      %d ragged cases, %.3f of the tolerance at worst, attn_decode's "
	              "bits\n",
	              NCASES, worst);
	free_cases(cs);
}

/* Each way an entry can be wrong, applied to a valid index. */
struct bad_index {
	const char *what;
	int entry, word; /* word 0 row, 1 len */
	int64_t value; /* absolute; or, with rel, added */
	bool rel_rows; /* value is added to the pool's row count */
};

static const struct bad_index bad_indexes[] = {
	{ "negative row", 1, 0, -1, false },
	{ "row INT32_MIN", 0, 0, INT32_MIN, false },
	{ "empty request", 2, 1, 0, false },
	{ "negative length", 1, 1, -5, false },
	{ "row past the pool", 2, 0, 0, true },
	{ "row INT32_MAX", 1, 0, INT32_MAX, false },
	{ "length INT32_MAX", 0, 1, INT32_MAX, false },
	{ "lengths above the total", -1, 0, +1, false },
	{ "lengths below the total", -1, 0, -1, false },
};
#define NBAD (sizeof(bad_indexes) / sizeof(bad_indexes[0]))

/* A copy of c's index with bad_indexes[b] applied, and the total to claim. */
static int32_t *bad_copy(const struct vcase *c, size_t b, int64_t *total)
{
	const struct bad_index *bi = &bad_indexes[b];
	int32_t *idx = malloc(c->nreq * 2 * sizeof(int32_t));
	assert_non_null(idx);
	memcpy(idx, c->index, c->nreq * 2 * sizeof(int32_t));
	*total = c->total;
	if (bi->entry < 0) {
		*total += bi->value; /* the index is fine; the scalar lies */
		return idx;
	}
	int32_t *w = &idx[2 * bi->entry + bi->word];
	if (bi->rel_rows)
		*w = (int32_t)(c->rows - (size_t)idx[2 * bi->entry + 1] + 1);
	else
		*w = (int32_t)bi->value;
	/* The lengths still add up to the total the scalar claims where that
	 * can be: the entry alone is what is wrong. */
	int64_t sum = 0;
	for (size_t r = 0; r < c->nreq; r++)
		sum += idx[2 * r + 1];
	if (sum >= (int64_t)c->nreq && sum <= (int64_t)c->nreq * INT32_MAX)
		*total = sum;
	return idx;
}

static struct vcase bad_case(void)
{
	int32_t lens[] = { 40, 7, 300 };
	rng_state = 0x626164;
	return make_case(3, 8, 2, 16, lens, false);
}

static void test_cpu_bad_index(void **state)
{
	(void)state;
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct vcase c = bad_case();
	float *out = malloc(out_floats(&c) * sizeof(float));
	assert_non_null(out);

	for (size_t b = 0; b < NBAD; b++) {
		int64_t total;
		int32_t *idx = bad_copy(&c, b, &total);
		struct tdm_kernel_call call = host_call(&c, idx, out);
		call.s[4].i64 = total;
		memset(out, SENTINEL, out_floats(&c) * sizeof(float));
		assert_int_equal(k->check(&call), 0); /* intake cannot know */
		int rc = k->cpu(&call);
		if (rc != -TDM_ERANGE)
			fail_msg("cpu: %s: %d, want -TDM_ERANGE", bad_indexes[b].what, rc);
		for (size_t i = 0; i < out_floats(&c) * sizeof(float); i++)
			if (((unsigned char *)out)[i] != SENTINEL)
				fail_msg("cpu: %s: out written", bad_indexes[b].what);
		free(idx);
	}
	print_message("cpu      %zu bad indexes refused with -TDM_ERANGE, out untouched\n", NBAD);
	free(out);
	free_case(&c);
}

/* Random entries, each drawn near a boundary (negative, zero, the pool's
 * end, INT32_MAX) or inside the pool: the kernel must succeed exactly when
 * every entry is good and the lengths add up, and fail with -TDM_ERANGE
 * otherwise, never reading outside the pools (the sanitizer flavour would
 * stop it). */
static int32_t edgy(size_t rows)
{
	static const int64_t picks[] = { -1, 0, 1, INT32_MAX, INT32_MIN };
	uint64_t x = splitmix64(&rng_state);
	switch (x % 4) {
	case 0: return (int32_t)picks[(x >> 8) % 5];
	case 1: return (int32_t)(rows - (x >> 8) % 3); /* rows - 2 .. rows */
	default: return (int32_t)((x >> 8) % (rows + 1));
	}
}

static bool index_good(const int32_t *idx, size_t nreq, size_t rows, int64_t total)
{
	int64_t sum = 0;
	for (size_t r = 0; r < nreq; r++) {
		int64_t row = idx[2 * r], len = idx[2 * r + 1];
		if (row < 0 || len < 1 || row + len > (int64_t)rows)
			return false;
		sum += len;
	}
	return sum == total;
}

#define RANDOM_ROUNDS 3000

static void test_cpu_random_indexes(void **state)
{
	(void)state;
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct vcase c = bad_case();
	float *out = malloc(out_floats(&c) * sizeof(float));
	int32_t *idx = malloc(c.nreq * 2 * sizeof(int32_t));
	size_t good = 0;
	assert_non_null(out);
	assert_non_null(idx);
	rng_state = 0x72616e64;
	for (int round = 0; round < RANDOM_ROUNDS; round++) {
		int64_t sum = 0;
		for (size_t w = 0; w < c.nreq * 2; w++)
			idx[w] = edgy(c.rows);
		for (size_t r = 0; r < c.nreq; r++)
			sum += idx[2 * r + 1];
		/* Mostly the true sum, so that the entries are what is judged. */
		int64_t total = splitmix64(&rng_state) % 8 ? sum : sum + 1;
		if (total < (int64_t)c.nreq || total > (int64_t)c.nreq * INT32_MAX)
			total = (int64_t)c.nreq;
		struct tdm_kernel_call call = host_call(&c, idx, out);
		call.s[4].i64 = total;
		assert_int_equal(k->check(&call), 0);
		bool ok = index_good(idx, c.nreq, c.rows, total);
		int rc = k->cpu(&call);
		if (rc != (ok ? 0 : -TDM_ERANGE))
			fail_msg("round %d: %d for an index that is %s", round, rc,
			         ok ? "good" : "bad");
		good += ok;
	}
	print_message("cpu      %d random indexes (%zu good): each judged right\n", RANDOM_ROUNDS,
	              good);
	free(idx);
	free(out);
	free_case(&c);
}

/* ---- the CPU gang ---- */

struct rendezvous {
	_Atomic unsigned entered;
	pthread_t threads[64];
	_Atomic unsigned nthreads;
	unsigned want; /* threads that must be inside at once */
	bool timed_out;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Each item waits (up to 5 s) until `want` items are inside at once: that
 * can only happen when that many threads run the job. */
static int rendezvous_item(void *ctx, size_t i)
{
	struct rendezvous *rv = ctx;
	(void)i;
	atomic_fetch_add(&rv->entered, 1);
	uint64_t deadline = now_ms() + 5000;
	while (atomic_load(&rv->entered) < rv->want) {
		if (now_ms() > deadline) {
			rv->timed_out = true;
			return -TDM_ETIMEDOUT;
		}
		sched_yield();
	}
	return 0;
}

static void test_gang_helpers_join(void **state)
{
	(void)state;
	if (ncpus < 2) {
		print_message("fewer than 2 CPU devices: no gang\n");
		skip();
	}
	struct cpu_gang_slot *me = cpus[0].priv;
	uint64_t before = cpu_gang_helper_items();
	struct rendezvous rv = { .want = 2 };

	assert_non_null(me);
	cpu_gang_enter(me);
	int rc = cpu_gang_run(2, rendezvous_item, &rv, true);
	cpu_gang_leave(me);
	assert_false(rv.timed_out);
	assert_int_equal(rc, 0);
	assert_int_equal(cpu_gang_helper_items() - before, 1);
	/* Without helpers asked for, the caller runs every item. */
	struct rendezvous alone = { .want = 1 };
	before = cpu_gang_helper_items();
	cpu_gang_enter(me);
	assert_int_equal(cpu_gang_run(8, rendezvous_item, &alone, false), 0);
	cpu_gang_leave(me);
	assert_int_equal(cpu_gang_helper_items(), before);
}

struct who {
	pthread_t caller;
	_Atomic unsigned others;
};

static int note_thread(void *ctx, size_t i)
{
	struct who *w = ctx;
	(void)i;
	if (!pthread_equal(pthread_self(), w->caller))
		atomic_fetch_add(&w->others, 1);
	struct timespec ms = { 0, 1000000 };
	nanosleep(&ms, NULL); /* long enough for a helper to be woken and join */
	return 0;
}

/* A core whose worker runs a kernel lends nothing: with every other core
 * busy, the caller runs all the items. */
static void test_gang_busy_core_stays_out(void **state)
{
	(void)state;
	if (ncpus < 2) {
		print_message("fewer than 2 CPU devices: no gang\n");
		skip();
	}
	struct who w = { .caller = pthread_self() };
	for (size_t i = 1; i < ncpus; i++)
		cpu_gang_enter(cpus[i].priv); /* as if their workers ran kernels */
	for (size_t i = 1; i < ncpus; i++)
		assert_true(cpu_gang_slot_busy(cpus[i].priv));
	cpu_gang_enter(cpus[0].priv);
	assert_int_equal(cpu_gang_run(64, note_thread, &w, true), 0);
	cpu_gang_leave(cpus[0].priv);
	for (size_t i = 1; i < ncpus; i++)
		cpu_gang_leave(cpus[i].priv);
	assert_int_equal(atomic_load(&w.others), 0);
	/* The cores free again, a helper takes part. */
	struct rendezvous rv = { .want = 2 };
	cpu_gang_enter(cpus[0].priv);
	assert_int_equal(cpu_gang_run(2, rendezvous_item, &rv, true), 0);
	cpu_gang_leave(cpus[0].priv);
}

/* Through the CPU device's launch, with every job spread: the same bits as
 * on one thread, and the helpers did take part. */
static void test_cpu_gang_same_bits(void **state)
{
	(void)state;
	if (ncpus < 2) {
		print_message("fewer than 2 CPU devices: no gang\n");
		skip();
	}
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct vcase cs[NCASES];
	uint64_t min_bytes = cpu_gang_min_bytes, before = cpu_gang_helper_items();

	make_cases(cs);
	cpu_gang_min_bytes = 0;
	for (int i = 0; i < NCASES; i++) {
		const struct vcase *c = &cs[i];
		float *one = malloc(out_floats(c) * sizeof(float));
		float *many = malloc(out_floats(c) * sizeof(float));
		assert_non_null(one);
		assert_non_null(many);
		struct tdm_kernel_call call = host_call(c, c->index, one);
		assert_int_equal(k->cpu(&call), 0); /* no device: one thread */
		call.ptr[VARLEN_OUT] = many;
		assert_int_equal(cpus[0].ops->launch(&cpus[0], k, &call), 0);
		assert_memory_equal(one, many, out_floats(c) * sizeof(float));
		free(one);
		free(many);
	}
	cpu_gang_min_bytes = min_bytes;
	print_message("cpu gang %d cases on %zu cores: same bits, %llu items run by helpers\n",
	              NCASES, ncpus, (unsigned long long)(cpu_gang_helper_items() - before));
	free_cases(cs);
}

/* ---- accelerators ---- */

struct dev_buf {
	void *mem;
	size_t size;
};

static void wait_ok(const struct backend_device *d, struct backend_event *ev)
{
	assert_int_equal(d->ops->event_wait(d, ev), 0);
	d->ops->event_release(d, ev);
}

/* Bytes at ARG_OFF in a buffer of sentinel bytes with a tail. */
static struct dev_buf upload(const struct backend_device *d, const void *host, size_t bytes)
{
	struct dev_buf b = { .size = ARG_OFF + bytes + TAIL };
	unsigned char *img = malloc(b.size);
	struct backend_event *ev;
	assert_non_null(img);
	memset(img, SENTINEL, b.size);
	if (host)
		memcpy(img + ARG_OFF, host, bytes);
	assert_int_equal(d->ops->mem_alloc(d, b.size, &b.mem), 0);
	assert_int_equal(d->ops->copy_h2d(d, b.mem, 0, img, b.size, NULL, &ev), 0);
	wait_ok(d, ev);
	free(img);
	return b;
}

static unsigned char *download(const struct backend_device *d, const struct dev_buf *b)
{
	unsigned char *img = malloc(b->size);
	struct backend_event *ev;
	assert_non_null(img);
	assert_int_equal(d->ops->copy_d2h(d, img, b->mem, 0, b->size, NULL, &ev), 0);
	wait_ok(d, ev);
	return img;
}

/* Runs c on d with index idx and total; returns the launch's status (from
 * event_wait) and the whole out buffer as it came back in *img. */
static int run_on(const struct backend_device *d, const struct vcase *c, const int32_t *idx,
                  int64_t total, unsigned char **img)
{
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	struct tdm_kernel_call call = host_call(c, idx, NULL);
	struct dev_buf b[5];
	const void *host[5] = { c->q, c->k, c->v, idx, NULL };
	struct backend_event *ev;

	call.s[4].i64 = total;
	for (int i = 0; i < 5; i++) {
		b[i] = upload(d, host[i], call.len[i]);
		call.ptr[i] = NULL;
		call.mem[i] = b[i].mem;
		call.off[i] = ARG_OFF;
	}
	assert_int_equal(d->ops->launch_async(d, k, &call, NULL, 0, &ev), 0);
	int rc = d->ops->event_wait(d, ev);
	/* Once done, query says the same. */
	int q = d->ops->event_query(d, ev);
	assert_int_equal(q, rc ? rc : 1);
	d->ops->event_release(d, ev);
	*img = download(d, &b[VARLEN_OUT]);
	for (int i = 0; i < 5; i++)
		d->ops->mem_free(d, b[i].mem);
	return rc;
}

static void check_sentinel(const struct backend_device *d, const struct vcase *c,
                           const unsigned char *img, bool whole)
{
	size_t bytes = out_floats(c) * sizeof(float);
	for (size_t i = 0; i < ARG_OFF + bytes + TAIL; i++) {
		bool inside = i >= ARG_OFF && i < ARG_OFF + bytes;
		if ((whole || !inside) && img[i] != SENTINEL)
			fail_msg("%s %s: out byte %zu changed", d->name, c->label, i);
	}
}

static size_t for_each_accel(void (*fn)(const struct backend_device *d))
{
	const struct kernel_def *k = kernel_by_id(KERNEL_ATTN_DECODE_VARLEN);
	size_t n = 0;
	for (size_t i = 0; i < naccels; i++) {
		if (!accels[i].ops->supports(&accels[i], k)) {
			print_message("%-8s attn_decode_varlen not supported\n", accels[i].name);
			continue;
		}
		fn(&accels[i]);
		n++;
	}
	if (n == 0) {
		print_message("no accelerator runs attn_decode_varlen\n");
		skip();
	}
	return n;
}

static void ragged_on(const struct backend_device *d)
{
	struct vcase cs[NCASES];
	double worst = 0;

	make_cases(cs);
	for (int i = 0; i < NCASES; i++) {
		const struct vcase *c = &cs[i];
		unsigned char *img;
		assert_int_equal(run_on(d, c, c->index, c->total, &img), 0);
		check_sentinel(d, c, img, false);
		float *got = malloc(out_floats(c) * sizeof(float));
		assert_non_null(got);
		memcpy(got, img + ARG_OFF, out_floats(c) * sizeof(float));
		double *want = reference(c);
		double w = compare(d->name, c, got, want);
		worst = w > worst ? w : worst;
		free(want);
		free(got);
		free(img);
	}
	print_message("%-8s %d ragged cases, %.3f of the tolerance at worst\n", d->name, NCASES,
	              worst);
	free_cases(cs);
}

static void test_accel_ragged(void **state)
{
	(void)state;
	for_each_accel(ragged_on);
}

static void bad_on(const struct backend_device *d)
{
	struct vcase c = bad_case();
	for (size_t b = 0; b < NBAD; b++) {
		int64_t total;
		int32_t *idx = bad_copy(&c, b, &total);
		unsigned char *img;
		int rc = run_on(d, &c, idx, total, &img);
		if (rc != -TDM_ERANGE)
			fail_msg("%s: %s: %d, want -TDM_ERANGE", d->name, bad_indexes[b].what, rc);
		check_sentinel(d, &c, img, true); /* nothing written */
		free(img);
		free(idx);
	}
	/* The device is fine afterwards: a good index runs. */
	unsigned char *img;
	assert_int_equal(run_on(d, &c, c.index, c.total, &img), 0);
	free(img);
	print_message("%-8s %zu bad indexes refused with -TDM_ERANGE, out untouched\n", d->name,
	              NBAD);
	free_case(&c);
}

static void test_accel_bad_index(void **state)
{
	(void)state;
	for_each_accel(bad_on);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
	(void)state;
	if (hwloc_topology_init(&topo) != 0)
		return -1;
	hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
	if (hwloc_topology_load(topo) != 0)
		return -1;
	struct backend_probe_params p = { .topology = topo };
	if (backend_cpu.probe(&p, cpus, MAX_DEVICES, &ncpus) != 0)
		return -1;
	p = (struct backend_probe_params){ .topology = topo };
	if (backend_opencl.probe(&p, accels, MAX_DEVICES, &naccels) != 0)
		return -1;
	if (p.note[0])
		print_message("%s\n", p.note);
	char note[BACKEND_NOTE_MAX] = "";
	const struct backend_ops *cuda = backend_cuda_load(NULL, note, sizeof(note));
	if (cuda) {
		size_t n = 0;
		p = (struct backend_probe_params){ .topology = topo };
		if (cuda->probe(&p, accels + naccels, MAX_DEVICES - naccels, &n) != 0)
			return -1;
		if (p.note[0])
			print_message("%s\n", p.note);
		naccels += n;
	} else {
		print_message("%s\n", note);
	}
	for (size_t i = 0; i < naccels; i++)
		print_message("%-8s %s\n", accels[i].name, accels[i].model);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < naccels; i++)
		accels[i].ops->release(&accels[i]);
	for (size_t i = 0; i < ncpus; i++)
		cpus[i].ops->release(&cpus[i]);
	naccels = ncpus = 0;
	backend_cuda_unload();
	return 0; /* the topology stays: see test_backend_kernels.c */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_and_features),
		cmocka_unit_test(test_cpu_ragged),
		cmocka_unit_test(test_cpu_bad_index),
		cmocka_unit_test(test_cpu_random_indexes),
		cmocka_unit_test(test_gang_helpers_join),
		cmocka_unit_test(test_gang_busy_core_stays_out),
		cmocka_unit_test(test_cpu_gang_same_bits),
		cmocka_unit_test(test_accel_ragged),
		cmocka_unit_test(test_accel_bad_index),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
