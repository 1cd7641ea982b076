/* Unit tests for sessions (daemon/session.c) against misbehaving clients and
 * a lack of memory:
 *  - buffer handles: a freed handle never names a later buffer, even after
 *    its slot was reused as often as the generation bits allow; slots are
 *    reused without a scan (free list);
 *  - completions: a graph stays counted against the client's quotas until
 *    its completion is in the ring, and intake stops while completions
 *    wait for room;
 *  - out of memory: a completion that cannot be queued ends in a
 *    disconnect, not in a client waiting for ever; intake reports a failed
 *    allocation as -TDM_ENOMEM, not as a quota.
 *
 * malloc and realloc are interposed (glibc's allocator underneath) so that
 * the n-th call from now fails; under ASan or TSan, whose allocators this
 * would bypass, those cases are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/harness/fail_alloc.h"
#include "tests/harness/intake_harness.h"

/* ---- handles ---------------------------------------------------------------- */

static uint32_t alloc_handle(struct session *s)
{
	uint32_t h;
	int fd;
	assert_int_equal(session_buffer_alloc(s, 4096, 0, &h, &fd), 0);
	close(fd);
	return h;
}

/* Reusing one slot 4095 times would bring its generation back to the first
 * handle's: the slot is retired instead, and the stale handle stays stale. */
static void test_handle_never_reused(void **state)
{
	(void)state;
	struct harness h;
	assert_int_equal(harness_init(&h, 64, 64), 0);
	struct session *s = h.s;
	uint32_t first = alloc_handle(s);
	assert_int_equal(session_buffer_free(s, first), 0);
	uint32_t seen_slot = first & 0xfffff, reused = 0;
	for (int i = 0; i < 5000; i++) {
		uint32_t x = alloc_handle(s);
		assert_int_not_equal(x, first);
		if ((x & 0xfffff) == seen_slot)
			reused++;
		assert_null(session_buffer_lookup(s, first));
		assert_int_equal(session_buffer_free(s, x), 0);
	}
	/* The slot served until its generations were spent, then no more. */
	assert_int_equal(reused, 4094);
	assert_int_equal(session_buffer_free(s, first), -TDM_EHANDLE);
	harness_fini(&h);
}

/* A freed slot is taken again before the table grows. */
static void test_slots_reused(void **state)
{
	(void)state;
	struct harness h;
	enum { N = 512 };
	uint32_t hs[N];
	assert_int_equal(harness_init(&h, 64, 64), 0);
	struct session *s = h.s;
	uint32_t used0 = s->slots_used;
	for (int i = 0; i < N; i++)
		hs[i] = alloc_handle(s);
	assert_int_equal(s->slots_used, used0 + N);
	for (int i = 0; i < N; i += 2)
		assert_int_equal(session_buffer_free(s, hs[i]), 0);
	for (int i = 0; i < N; i += 2) {
		hs[i] = alloc_handle(s);
		assert_non_null(session_buffer_lookup(s, hs[i]));
	}
	assert_int_equal(s->slots_used, used0 + N);
	for (int i = 0; i < N; i++)
		assert_int_equal(session_buffer_free(s, hs[i]), 0);
	harness_fini(&h);
}

/* ---- completions and quotas --------------------------------------------------- */

static void push_empty_graph(struct harness *h, uint64_t cookie)
{
	struct tdm_sqe b = sqe_begin(cookie, 0), e = sqe_end();
	assert_true(harness_push(h, &b));
	assert_true(harness_push(h, &e));
}

/* Graphs whose completions the client does not reap stay counted, and
 * intake stops taking entries while their completions wait. */
static void test_unposted_graphs_counted(void **state)
{
	(void)state;
	struct harness h;
	struct tdm_cqe out[64];
	assert_int_equal(harness_init(&h, 64, 64), 0);
	h.cfg.max_graphs_in_flight = 100;
	struct session *s = h.s;
	/* 64 graphs fill the completion ring once done; 10 more wait. */
	for (uint64_t i = 0; i < 32; i++)
		push_empty_graph(&h, i + 1);
	assert_int_equal(harness_run(&h), 0);
	harness_finish_all(&h);
	for (uint64_t i = 32; i < 64; i++)
		push_empty_graph(&h, i + 1);
	assert_int_equal(harness_run(&h), 0);
	harness_finish_all(&h);
	assert_int_equal(atomic_load(&s->graphs_in_flight), 0);
	for (uint64_t i = 64; i < 74; i++)
		push_empty_graph(&h, i + 1);
	assert_int_equal(harness_run(&h), 0);
	harness_finish_all(&h);
	/* The 10 completions that found no room keep their graphs counted. */
	assert_int_equal(atomic_load(&s->graphs_in_flight), 10);
	assert_true(atomic_load(&s->cq_backlog));
	/* Entries published now are not taken while the completions wait. */
	push_empty_graph(&h, 1000);
	uint32_t head = s->hdr->sq_head;
	assert_int_equal(harness_run(&h), 0);
	assert_false(intake_pending(s));
	assert_int_equal(s->hdr->sq_head, head);
	/* Reaping makes room: the waiting completions go out, the counts with
	 * them, and intake goes on. */
	assert_int_equal(harness_reap(&h, out, 64), 64);
	session_flush(s);
	assert_false(atomic_load(&s->cq_backlog));
	assert_int_equal(atomic_load(&s->graphs_in_flight), 0);
	assert_true(intake_pending(s));
	assert_int_equal(harness_run(&h), 0);
	harness_finish_all(&h);
	assert_int_equal(harness_reap(&h, out, 64), 11);
	assert_int_equal(out[10].cookie, 1000);
	harness_fini(&h);
}

/* ---- out of memory -------------------------------------------------------------- */

static int broken_calls;
static void on_broken(void *ctx)
{
	(void)ctx;
	broken_calls++;
}

/* A completion that cannot be queued for want of memory ends the session:
 * the client hears of it through the disconnect. */
static void test_lost_completion_disconnects(void **state)
{
	(void)state;
	SKIP_UNLESS_CAN_FAIL_ALLOC();
	struct harness h;
	assert_int_equal(harness_init(&h, 64, 64), 0);
	h.env.broken = on_broken;
	broken_calls = 0;
	struct tdm_cqe c = { .op = TDM_CQE_GRAPH_DONE, .status = -TDM_EQUOTA, .cookie = 7 };
	malloc_fail_in = 1;
	session_post_cqe(h.s, &c);
	malloc_fail_in = 0;
	assert_int_equal(broken_calls, 1);
	assert_true(atomic_load(&h.s->proto_error));
	harness_fini(&h);
}

/* A failed allocation while a task's dependencies are tracked is reported
 * as such, not as a quota the client exceeded. */
static void test_intake_reports_enomem(void **state)
{
	(void)state;
	SKIP_UNLESS_CAN_FAIL_ALLOC();
	struct harness h;
	struct tdm_cqe out[4];
	assert_int_equal(harness_init(&h, 64, 64), 0);
	struct tdm_sqe b = sqe_begin(5, 1), t = sqe_fill(0, h.handle[0], 0, 64), e = sqe_end();
	assert_true(harness_push(&h, &b));
	assert_true(harness_push(&h, &t));
	assert_true(harness_push(&h, &e));
	/* The task array grows first; the second realloc is the graph's list
	 * of the buffers it holds, made while dependencies are tracked. */
	realloc_fail_in = 2;
	assert_int_equal(harness_run(&h), 0);
	realloc_fail_in = 0;
	assert_int_equal(harness_reap(&h, out, 4), 1);
	assert_int_equal(out[0].cookie, 5);
	assert_int_equal(out[0].status, -TDM_ENOMEM);
	harness_fini(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handle_never_reused),
		cmocka_unit_test(test_slots_reused),
		cmocka_unit_test(test_unposted_graphs_counted),
		cmocka_unit_test(test_lost_completion_disconnects),
		cmocka_unit_test(test_intake_reports_enomem),
	};
	return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
