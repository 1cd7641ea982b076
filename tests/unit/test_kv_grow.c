/* Growable (KV) buffers in the daemon's session: capacity reserved up
 * front, quota charged by what is backed, growth refused past the quota or
 * the capacity, never shrunk, and tasks limited to the declared use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness/intake_harness.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static int setup(void **state)
{
	static struct harness h;
	if (harness_init(&h, 64, 64) != 0)
		return -1;
	*state = &h;
	return 0;
}

static int teardown(void **state)
{
	harness_fini(*state);
	return 0;
}

/* Grows and checks the reply against the buffer; returns the status. */
static int grow(struct harness *h, uint32_t handle, uint64_t used, struct tdm_buf_grow_reply *r)
{
	int fd = -1;
	memset(r, 0, sizeof(*r));
	int err = session_buffer_grow(h->s, handle, used, r, &fd);
	if (err) {
		assert_int_equal(fd, -1);
		return err;
	}
	assert_int_equal(r->used, used);
	assert_true(r->backed >= used);
	assert_int_equal(fd >= 0, r->chunk_bytes != 0);
	if (fd >= 0) {
		/* The chunk the client maps: sealed so that it can neither grow
		 * it (touching pages nobody charged) nor shrink it (making the
		 * daemon's view fault), nor unseal it. */
		int seals = fcntl(fd, F_GET_SEALS);
		assert_true(seals & F_SEAL_GROW);
		assert_true(seals & F_SEAL_SHRINK);
		assert_true(seals & F_SEAL_SEAL);
		assert_int_not_equal(ftruncate(fd, (off_t)(r->chunk_bytes * 2)), 0);
		assert_int_not_equal(ftruncate(fd, 0), 0);
		assert_int_not_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0);
		struct stat st;
		assert_int_equal(fstat(fd, &st), 0);
		assert_int_equal((uint64_t)st.st_size, r->chunk_bytes);
		close(fd);
	}
	return 0;
}

/* 100 GiB of capacity with 1 MiB in use is charged about 1 MiB, under a
 * 64 MiB quota, and the daemon's view of the used part is memory. */
static void test_charged_by_backed(void **state)
{
	struct harness *h = *state;
	struct tdm_buf_grow_reply r;
	uint32_t kv;

	h->cfg.buffer_quota_bytes = 64 * MiB;
	uint64_t before = atomic_load(&h->s->buffer_bytes);
	assert_int_equal(session_buffer_reserve(h->s, 100 * GiB, TDM_BUF_KV, &kv), 0);
	assert_int_equal(atomic_load(&h->s->buffer_bytes), before);
	struct buffer *b = session_buffer_lookup(h->s, kv);
	assert_non_null(b);
	assert_int_equal(atomic_load(&b->extent), 0);

	assert_int_equal(grow(h, kv, MiB, &r), 0);
	uint64_t charged = atomic_load(&h->s->buffer_bytes) - before;
	assert_int_equal(charged, r.backed);
	assert_true(charged >= MiB && charged <= MiB + MiB / 25);
	assert_int_equal(atomic_load(&b->extent), MiB);
	memset(b->base, 0x5a, MiB); /* the daemon's view is backed where declared */

	/* Token by token: the charge follows the use within a few percent. */
	uint64_t used = MiB;
	for (int t = 0; t < 2000; t++) {
		used += 16 << 10;
		assert_int_equal(grow(h, kv, used, &r), 0);
		charged = atomic_load(&h->s->buffer_bytes) - before;
		assert_int_equal(charged, r.backed);
		assert_true(charged - used <= used / 32 + (64 << 10));
	}
	assert_true(b->nchunks < 200);
	((char *)b->base)[used - 1] = 1;
	/* Growing within what is backed makes no chunk. */
	if (r.backed > used) {
		assert_int_equal(grow(h, kv, used + 1, &r), 0);
		assert_int_equal(r.chunk_bytes, 0);
	}
	assert_int_equal(session_buffer_free(h->s, kv), 0);
	assert_int_equal(atomic_load(&h->s->buffer_bytes), before);
}

/* Growth past the quota fails with EQUOTA and leaves the buffer as it
 * was; up to the quota the geometric step gives way to the exact need. */
static void test_grow_past_quota(void **state)
{
	struct harness *h = *state;
	struct tdm_buf_grow_reply r;
	uint32_t kv;

	uint64_t before = atomic_load(&h->s->buffer_bytes);
	h->cfg.buffer_quota_bytes = before + 8 * MiB;
	assert_int_equal(session_buffer_reserve(h->s, 100 * GiB, TDM_BUF_KV, &kv), 0);
	assert_int_equal(grow(h, kv, 4 * MiB, &r), 0);
	uint64_t backed = r.backed;
	assert_int_equal(grow(h, kv, 8 * MiB + 4096, &r), -TDM_EQUOTA);
	struct buffer *b = session_buffer_lookup(h->s, kv);
	assert_int_equal(atomic_load(&b->extent), 4 * MiB);
	assert_int_equal(b->backed, backed);
	assert_int_equal(atomic_load(&h->s->buffer_bytes), before + backed);
	/* Exactly the quota: allowed, backed exactly. */
	assert_int_equal(grow(h, kv, 8 * MiB, &r), 0);
	assert_int_equal(r.backed, 8 * MiB);
	assert_int_equal(atomic_load(&h->s->buffer_bytes), before + 8 * MiB);
	assert_int_equal(session_buffer_free(h->s, kv), 0);
}

/* No shrinking, nothing past the capacity, only growable KV buffers. */
static void test_refusals(void **state)
{
	struct harness *h = *state;
	struct tdm_buf_grow_reply r;
	uint32_t kv, other;

	assert_int_equal(session_buffer_reserve(h->s, MiB, 0, &other), -TDM_EINVAL);
	assert_int_equal(session_buffer_reserve(h->s, MiB, TDM_BUF_KV | TDM_BUF_SCRATCH, &other),
	                 -TDM_EINVAL);
	assert_int_equal(session_buffer_reserve(h->s, MiB, TDM_BUF_KV | 0x80, &other), -TDM_EINVAL);
	assert_int_equal(session_buffer_reserve(h->s, 0, TDM_BUF_KV, &other), -TDM_EINVAL);
	assert_int_equal(session_buffer_reserve(h->s, UINT64_MAX, TDM_BUF_KV, &other), -TDM_EQUOTA);
	assert_int_equal(session_buffer_reserve(h->s, MiB + 100, TDM_BUF_KV, &kv), 0);
	assert_int_equal(grow(h, kv, 2 * MiB, &r), -TDM_ERANGE);
	assert_int_equal(grow(h, kv, UINT64_MAX, &r), -TDM_ERANGE);
	assert_int_equal(grow(h, kv, 4096, &r), 0);
	assert_int_equal(grow(h, kv, 4095, &r), -TDM_EINVAL); /* shrinking */
	assert_int_equal(grow(h, kv, 4096, &r), 0); /* the same use: nothing to do */
	assert_int_equal(grow(h, kv, MiB + 100, &r), 0); /* the whole capacity */
	assert_int_equal(r.backed, MiB + 4096);
	assert_int_equal(grow(h, h->handle[0], 4096, &r), -TDM_EINVAL); /* not growable */
	assert_int_equal(grow(h, 0xdead, 4096, &r), -TDM_EHANDLE);
	assert_int_equal(session_buffer_free(h->s, kv), 0);
	assert_int_equal(grow(h, kv, 4096 * 2, &r), -TDM_EHANDLE);
}

static void expect_reject(struct harness *h, uint64_t cookie, int status, uint32_t field)
{
	struct tdm_cqe c;
	assert_int_equal(harness_reap(h, &c, 1), 1);
	assert_int_equal(c.cookie, cookie);
	assert_int_equal(c.status, status);
	assert_int_equal(c.detail, field);
}

/* A task may name only the declared use: bytes past it are refused at
 * intake with ERANGE even where they are backed (the chunk runs ahead),
 * and far past it (unbacked) as well, so the daemon never touches them. */
static void test_intake_limits_to_declared(void **state)
{
	struct harness *h = *state;
	struct tdm_buf_grow_reply r;
	uint32_t kv;

	assert_int_equal(session_buffer_reserve(h->s, GiB, TDM_BUF_KV, &kv), 0);
	/* Nothing declared: nothing may be named. */
	struct tdm_sqe e0[] = { sqe_begin(1, 1), sqe_fill(0, kv, 0, 4096), sqe_end() };
	for (size_t i = 0; i < 3; i++)
		assert_true(harness_push(h, &e0[i]));
	assert_int_equal(harness_run(h), 0);
	expect_reject(h, 1, -TDM_ERANGE, TDM_REJECT_RANGE);

	assert_int_equal(grow(h, kv, 4096, &r), 0);
	assert_true(r.backed > 4096);
	struct tdm_sqe ok[] = { sqe_begin(2, 1), sqe_fill(0, kv, 0, 4096), sqe_end() };
	for (size_t i = 0; i < 3; i++)
		assert_true(harness_push(h, &ok[i]));
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(h->naccepted, 1);
	assert_ptr_equal(h->accepted[0]->tasks[0].call.ptr[0],
	                 session_buffer_lookup(h->s, kv)->base);
	harness_finish_all(h);
	struct tdm_cqe c;
	assert_int_equal(harness_reap(h, &c, 1), 1);
	assert_int_equal(c.status, 0);

	const struct {
		uint64_t off, len;
	} bad[] = { { 4096, 4 }, { 0, 8192 }, { 4092, 8 }, { 512 * MiB, 4096 }, { 0, GiB } };
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		struct tdm_sqe e[] = { sqe_begin(10 + k, 1),
			               sqe_fill(0, kv, bad[k].off, bad[k].len), sqe_end() };
		for (size_t i = 0; i < 3; i++)
			assert_true(harness_push(h, &e[i]));
		assert_int_equal(harness_run(h), 0);
		expect_reject(h, 10 + k, -TDM_ERANGE, TDM_REJECT_RANGE);
	}
	assert_int_equal(h->naccepted, 0);
	assert_int_equal(session_buffer_free(h->s, kv), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_charged_by_backed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grow_past_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intake_limits_to_declared, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
