/* Growable (KV) buffers in the daemon's session: capacity reserved up
 * front, quota charged by what is backed, growth refused past the quota or
 * the capacity, never shrunk, and tasks limited to the declared use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "placement/residency.h"
#include "tests/harness/fake_backend.h"
#include "tests/harness/intake_harness.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

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

/* ---- device replicas that grow ---------------------------------------------
 * A fake accelerator over host memory, with or without mem_reserve. */

static int n_reg;
static uint64_t reg_bytes;

/* Reserved: the whole capacity up front (contents must survive growth). */
static int fk_reserve(const struct backend_device *d, uint64_t capacity, void **mem)
{
	return fake_alloc(d, capacity, mem);
}
static int fk_grow(const struct backend_device *d, void *mem, uint64_t bytes)
{
	(void)d;
	(void)mem;
	(void)bytes;
	return 0;
}
static int fk_register(const struct backend_device *d, void *host, uint64_t bytes)
{
	(void)d;
	(void)host;
	n_reg++;
	reg_bytes += bytes;
	return 0;
}
static void fk_unregister(const struct backend_device *d, void *host)
{
	(void)d;
	(void)host;
	n_reg--;
}

static const struct backend_ops fk_vmm = {
	FAKE_ACCEL_MEM_OPS,           .name = "fakevmm",
	.mem_reserve = fk_reserve,    .mem_grow = fk_grow,
	.host_register = fk_register, .host_unregister = fk_unregister
};
static const struct backend_ops fk_plain = { FAKE_ACCEL_MEM_OPS, .name = "fake" };

/* A task on the device that appends `len` bytes of `v` at `off` of d
 * (a write-only slice: nothing is copied in, the rest of the replica is
 * left as it is). */
static void device_append(struct residency *r, struct res_data *d, uint64_t off, uint64_t len,
                          char v, void **mem_out)
{
	struct res_arg a = { .data = d, .off = off, .len = len, .mode = TDM_W };
	struct backend_event *waits[2];
	size_t nwaits = 0;
	void *mem[1];
	uint64_t moff[1];
	assert_int_equal(residency_acquire(r, 1, &a, 1, waits, &nwaits, mem, moff), 0);
	memset((char *)mem[0] + off, v, len);
	residency_release(r, 1, &a, 1, true);
	*mem_out = mem[0];
}

/* A residency of the host and dev (node 1) with d over host, growable to
 * cap and empty; the fake's counters from 0. */
static void growable_kv(struct residency *r, struct backend_device *dev, struct res_data *d,
                        void *host, uint64_t cap)
{
	residency_init(r);
	assert_int_equal(residency_add_node(r, dev, 0), 1);
	residency_data_init(r, d, host, 0, 1, true);
	residency_data_set_growable(r, d, cap);
	fake_h2d = fake_d2h = fake_allocs = 0;
	fake_h2d_bytes = 0;
}

/* The end of growable_kv: the device memory all given back. */
static void growable_kv_fini(struct residency *r, struct res_data *d, void *host)
{
	residency_data_fini(r, d);
	assert_int_equal(r->nodes[1].used, 0);
	residency_fini(r);
	free(host);
}

/* A KV replica that a device task appends to: where the backend reserves,
 * the replica grows in place, keeping its address and contents, with
 * nothing copied either way; where it cannot, the range it alone holds is
 * written back and the replica reallocated at the new size (the append is
 * write-only: nothing is copied in). Either way the contents survive. */
static void grow_on_device(const struct backend_ops *ops, bool in_place)
{
	struct residency r;
	struct backend_device dev = { .name = "fk0", .ops = ops, .mem_bytes = 64 * MiB };
	struct res_data d;
	char *host = calloc(1, MiB);
	void *mem0, *mem1;

	growable_kv(&r, &dev, &d, host, MiB);
	residency_data_grow(&r, &d, 4096);
	device_append(&r, &d, 0, 4096, 'a', &mem0);
	assert_int_equal(fake_h2d, 0); /* a fresh replica: nothing to read */
	assert_int_equal(d.rep[1].sole, 4096); /* the device alone holds it */
	assert_int_equal(d.rep[0].valid, 0);
	residency_data_grow(&r, &d, 8192);
	device_append(&r, &d, 4096, 4096, 'b', &mem1);
	if (in_place) {
		assert_int_equal(d.rep[1].mem_bytes, 8192);
		assert_ptr_equal(mem0, mem1);
		assert_int_equal(fake_h2d, 0);
		assert_int_equal(fake_d2h, 0);
		assert_int_equal(fake_allocs, 1);
	} else {
		assert_int_equal(fake_d2h, 1); /* its sole bytes went back to the host */
		assert_int_equal(fake_h2d, 0);
		assert_int_equal(fake_h2d_bytes, 0);
		assert_int_equal(fake_allocs, 2);
		assert_int_equal(d.rep[0].sole, 4096);
		assert_int_equal(d.rep[1].sole, 4096);
		/* Headroom for the next tokens: growing within it moves nothing. */
		assert_int_equal(d.rep[1].mem_bytes, 8192 + 8192 / 32);
		residency_data_grow(&r, &d, 8192 + 100);
		device_append(&r, &d, 8192, 100, 'c', &mem0);
		assert_ptr_equal(mem0, mem1);
		assert_int_equal(fake_h2d, 0);
		assert_int_equal(fake_allocs, 2);
	}
	assert_int_equal(r.nodes[1].used, d.rep[1].mem_bytes);
	struct res_data *dp = &d;
	assert_int_equal(residency_flush(&r, &dp, 1), 0);
	for (int i = 0; i < (int)d.bytes; i++)
		if (host[i] != (i < 4096 ? 'a' : i < 8192 ? 'b' : 'c'))
			fail_msg("host[%d] = %d", i, host[i]);
	growable_kv_fini(&r, &d, host);
}

static void test_device_grows_in_place(void **state)
{
	(void)state;
	grow_on_device(&fk_vmm, true);
}

static void test_device_reallocates_without_reserve(void **state)
{
	(void)state;
	grow_on_device(&fk_plain, false);
}

/* One task on `node` using [off, off + len) of d in `mode`; *mem_out: the
 * replica's memory (the host's for node 0). */
static void run_task(struct residency *r, unsigned node, struct res_data *d, uint64_t off,
                     uint64_t len, uint8_t mode, void **mem_out)
{
	struct res_arg a = { .data = d, .off = off, .len = len, .mode = mode };
	struct backend_event *waits[2];
	size_t nwaits = 0;
	void *mem[1] = { d->host };
	uint64_t moff[1];
	assert_int_equal(residency_acquire(r, node, &a, 1, waits, &nwaits, mem, moff), 0);
	*mem_out = node ? mem[0] : d->host;
	residency_release(r, node, &a, 1, true);
}

static uint32_t full_mask(struct res_data *d)
{
	return atomic_load(&d->full);
}

/* A KV cache grown in steps, rows appended on the host and the whole use
 * read on a device each step (the decode loop): the range a growth adds
 * is the host's alone, so each read moves exactly the appended rows. With
 * mem_reserve the replica grows in place and nothing else moves, ever.
 * Without it the replica is reallocated every few percent of growth; the
 * new memory holds nothing valid, so that step's read copies the rows the
 * old replica held again: counted apart (reallocs, recopied). */
static void host_appends_device_reads(const struct backend_ops *ops, bool in_place)
{
	enum { ROW = 64, FIRST = 16384, STEPS = 64 };
	const uint64_t cap = FIRST + STEPS * ROW + ROW;
	struct residency r;
	struct backend_device dev = { .name = "fk0", .ops = ops, .mem_bytes = 64 * MiB };
	struct res_data d;
	unsigned char *host = calloc(1, cap);
	void *mem;
	uint64_t used = 0, recopied = 0;
	int reallocs = 0;

	growable_kv(&r, &dev, &d, host, cap);
	for (int step = 0; step <= STEPS; step++) {
		uint64_t old = used;
		used += step ? ROW : FIRST;
		residency_data_grow(&r, &d, used);
		/* The new range is the host's alone: the device, which held
		 * every byte, no longer does. */
		assert_int_equal(full_mask(&d), 1u);
		assert_int_equal(d.rep[0].valid, used);
		assert_int_equal(d.rep[0].sole, used - old);
		assert_int_equal(d.rep[1].valid, old);
		assert_int_equal(residency_missing(&d, 1, 0, used), used - old);
		assert_int_equal(residency_missing(&d, 0, 0, used), 0);

		/* The host appends the new rows. */
		run_task(&r, 0, &d, old, used - old, TDM_W, &mem);
		for (uint64_t i = old; i < used; i++)
			host[i] = (unsigned char)(i * 7 + 1);

		int allocs = fake_allocs;
		uint64_t h2d = fake_h2d_bytes;
		run_task(&r, 1, &d, 0, used, TDM_R, &mem);
		uint64_t moved = fake_h2d_bytes - h2d;
		if (fake_allocs != allocs && step > 0) {
			reallocs++;
			recopied += old;
			assert_int_equal(moved, used); /* the old rows, again */
		} else {
			assert_int_equal(moved, used - old); /* the appended rows only */
		}
		assert_memory_equal(mem, host, used);
		assert_int_equal(full_mask(&d), 3u);
		assert_true(d.rep[1].mem_bytes >= used);
		assert_int_equal(fake_d2h, 0); /* nothing was the device's alone */
	}
	assert_int_equal(fake_h2d_bytes, used + recopied);
	if (in_place) {
		assert_int_equal(reallocs, 0);
		assert_int_equal(fake_allocs, 1);
		assert_int_equal(d.rep[1].mem_bytes, used);
	} else {
		/* Headroom of ~1/32: a handful of reallocations for 64 rows. */
		assert_true(reallocs >= 1);
		assert_true(reallocs <= STEPS / 8);
		assert_int_equal(fake_allocs, 1 + reallocs);
	}
	assert_int_equal(r.nodes[1].used, d.rep[1].mem_bytes);

	/* The device appends a row: it alone holds it, and holds every byte;
	 * a growth then leaves no node holding every byte. */
	uint64_t old = used;
	used += ROW;
	residency_data_grow(&r, &d, used);
	run_task(&r, 1, &d, 0, old, TDM_R, &mem); /* grown (or reallocated) */
	run_task(&r, 1, &d, old, ROW, TDM_W, &mem);
	memset((char *)mem + old, 0xab, ROW);
	assert_int_equal(full_mask(&d), 2u);
	assert_int_equal(d.rep[1].sole, ROW);
	assert_int_equal(fake_d2h, 0);
	residency_data_grow(&r, &d, used + ROW);
	assert_int_equal(full_mask(&d), 0u);
	assert_int_equal(d.rep[0].valid, old + ROW);
	assert_int_equal(d.rep[1].valid, used);
	/* The graph ends: the host gets that row back, and only it. */
	uint64_t out = r.nodes[1].bytes_out;
	struct res_data *dp = &d;
	assert_int_equal(residency_flush(&r, &dp, 1), 0);
	assert_int_equal(r.nodes[1].bytes_out - out, ROW);
	assert_int_equal(fake_d2h, 1);
	assert_int_equal(full_mask(&d) & 1u, 1u);
	for (uint64_t i = old; i < used; i++)
		assert_int_equal(host[i], 0xab);
	growable_kv_fini(&r, &d, host);
}

static void test_host_appends_device_reads_in_place(void **state)
{
	(void)state;
	host_appends_device_reads(&fk_vmm, true);
}

static void test_host_appends_device_reads_realloc(void **state)
{
	(void)state;
	host_appends_device_reads(&fk_plain, false);
}

/* Host memory is pinned chunk by chunk as it is backed, never the whole
 * reservation, and unpinned when the buffer goes. */
static void test_host_pinned_as_backed(void **state)
{
	struct harness *h = *state;
	struct residency r;
	struct backend_device dev = { .name = "fk0", .ops = &fk_vmm, .mem_bytes = 64 * MiB };
	struct tdm_buf_grow_reply gr;
	uint32_t kv;

	residency_init(&r);
	assert_int_equal(residency_add_node(&r, &dev, 0), 1);
	h->env.res = &r;
	n_reg = 0;
	reg_bytes = 0;
	assert_int_equal(session_buffer_reserve(h->s, 10 * GiB, TDM_BUF_KV, &kv), 0);
	assert_int_equal(n_reg, 0);
	uint64_t used = 0;
	for (int t = 0; t < 300; t++) {
		used += 40000;
		assert_int_equal(grow(h, kv, used, &gr), 0);
		assert_int_equal(reg_bytes, gr.backed);
	}
	struct buffer *b = session_buffer_lookup(h->s, kv);
	assert_int_equal(n_reg, (int)b->nchunks);
	assert_true(reg_bytes < used + used / 16);
	assert_int_equal(session_buffer_free(h->s, kv), 0);
	assert_int_equal(n_reg, 0);
	h->env.res = NULL;
	residency_fini(&r);
}

/* A request's KV buffers carry one daemon-wide key (the session's id and
 * the client's request id): two sessions' request 7 are two units. */
static void test_request_key(void **state)
{
	struct harness *h = *state;
	struct residency r;
	uint32_t a, b, c;

	residency_init(&r);
	h->env.res = &r;
	assert_int_equal(session_buffer_reserve(h->s, MiB, TDM_BUF_KV, &a), 0);
	assert_int_equal(session_buffer_reserve(h->s, MiB, TDM_BUF_KV, &b), 0);
	assert_int_equal(session_buffer_reserve(h->s, MiB, TDM_BUF_KV, &c), 0);
	session_buffer_set_request(h->s, a, 7);
	session_buffer_set_request(h->s, b, 7);
	struct buffer *ba = session_buffer_lookup(h->s, a), *bb = session_buffer_lookup(h->s, b),
	              *bc = session_buffer_lookup(h->s, c);
	assert_int_equal(ba->data.request, (uint64_t)h->s->id << 32 | 7);
	assert_int_equal(bb->data.request, ba->data.request);
	assert_int_equal(bc->data.request, 0); /* no id: a unit of its own */
	session_buffer_set_request(h->s, 0xdead, 7); /* no such handle: nothing */
	assert_int_equal(session_buffer_free(h->s, a), 0);
	assert_int_equal(session_buffer_free(h->s, b), 0);
	assert_int_equal(session_buffer_free(h->s, c), 0);
	h->env.res = NULL;
	residency_fini(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_charged_by_backed, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_grow_past_quota, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_refusals, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(test_intake_limits_to_declared, harness_setup,
		                                harness_teardown),
		cmocka_unit_test(test_device_grows_in_place),
		cmocka_unit_test_setup_teardown(test_host_pinned_as_backed, harness_setup,
		                                harness_teardown),
		cmocka_unit_test(test_device_reallocates_without_reserve),
		cmocka_unit_test_setup_teardown(test_request_key, harness_setup, harness_teardown),
		cmocka_unit_test(test_host_appends_device_reads_in_place),
		cmocka_unit_test(test_host_appends_device_reads_realloc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
