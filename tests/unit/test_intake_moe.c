/* Intake of routing guards (TDM_SQE_GUARD) and of the accumulate mode
 * (TDM_ACC): what a graph that uses them becomes, and each way an entry can
 * be wrong, rejected with its field (docs/kernels.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/harness/intake_harness.h"

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

/* topk_router over buffer b: logits [0, 16) (1 token x 4 experts), ids
 * [16, 24), weights [24, 32) (k = 2). */
static struct tdm_sqe sqe_router(uint32_t index, uint32_t b)
{
	struct tdm_sqe e = sqe_task(index, "topk_router");
	e.u.task.nargs = 3;
	e.u.task.args[0] = (struct tdm_wire_arg){ .handle = b, .mode = TDM_R, .length = 16 };
	e.u.task.args[1] =
	        (struct tdm_wire_arg){ .handle = b, .mode = TDM_W, .offset = 16, .length = 8 };
	e.u.task.args[2] =
	        (struct tdm_wire_arg){ .handle = b, .mode = TDM_W, .offset = 24, .length = 8 };
	e.u.task.nscalars = 3;
	for (int i = 0; i < 3; i++)
		e.u.task.scalar_types[i] = TDM_SCALAR_I64;
	e.u.task.scalars[0].i64 = 1;
	e.u.task.scalars[1].i64 = 4;
	e.u.task.scalars[2].i64 = 2;
	return e;
}

static struct tdm_sqe sqe_guard(uint32_t task, uint32_t router, uint32_t expert)
{
	struct tdm_sqe e = { .op = TDM_SQE_GUARD };
	e.u.guard.task_index = task;
	e.u.guard.router_task = router;
	e.u.guard.expert = expert;
	return e;
}

static struct tdm_sqe sqe_acc(uint32_t index, uint32_t x, uint32_t y)
{
	struct tdm_sqe e = sqe_axpy(index, x, y);
	e.u.task.args[1].mode = TDM_ACC;
	return e;
}

static void push_all(struct harness *h, const struct tdm_sqe *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_true(harness_push(h, &e[i]));
	assert_int_equal(harness_run(h), 0);
}

static bool has_edge(const struct engine_graph *g, uint32_t from, uint32_t to)
{
	for (uint32_t k = g->succ_off[from]; k < g->succ_off[from + 1]; k++)
		if (g->succ[k] == to)
			return true;
	return false;
}

/* The router, then two axpys accumulating into y, each guarded by one
 * expert; then a read of y. */
static void test_guarded_accumulators(void **state)
{
	struct harness *h = *state;
	uint32_t r = h->handle[0], x = h->handle[1], y = h->handle[2];
	struct tdm_sqe e[] = { sqe_begin(1, 4),    sqe_router(0, r), sqe_acc(1, x, y),
		               sqe_guard(1, 0, 3), sqe_acc(2, x, y), sqe_guard(2, 0, 0),
		               sqe_axpy(3, y, x),  sqe_end() };
	push_all(h, e, sizeof(e) / sizeof(e[0]));
	assert_int_equal(h->naccepted, 1);
	struct engine_graph *g = h->accepted[0];
	assert_true(g->tasks[0].flags & TASK_ROUTES);
	assert_int_equal(g->tasks[1].guard_router, 1); /* index + 1 */
	assert_int_equal(g->tasks[1].guard_expert, 3);
	assert_int_equal(g->tasks[2].guard_expert, 0);
	assert_int_equal(g->tasks[3].guard_router, 0);
	/* The guard orders each after the router; the accumulators are not
	 * ordered between them; the read of y follows both. */
	assert_true(has_edge(g, 0, 1));
	assert_true(has_edge(g, 0, 2));
	assert_false(has_edge(g, 1, 2));
	assert_true(has_edge(g, 1, 3));
	assert_true(has_edge(g, 2, 3));
	assert_non_null(g->tasks[1].acc);
	assert_ptr_equal(g->tasks[1].acc->group, g->tasks[2].acc->group);
	assert_int_equal(g->tasks[1].acc->group->n, 2);
	assert_int_equal(g->tasks[1].acc->arg, 1);
	assert_null(g->tasks[3].acc);
	harness_finish_all(h);
	struct tdm_cqe c[4];
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].status, 0);
}

/* Each wrong guard or mode rejects the graph with its field, and the
 * session goes on taking graphs. */
static void test_rejects(void **state)
{
	struct harness *h = *state;
	uint32_t r = h->handle[0], x = h->handle[1], y = h->handle[2];
	struct {
		struct tdm_sqe guard;
		bool acc_x; /* TDM_ACC on axpy's x, which only reads */
		int status;
		uint32_t field;
	} cases[] = {
		{ sqe_guard(1, 0, 4), false, -TDM_EINVAL, TDM_REJECT_GUARD }, /* no expert 4 */
		{ sqe_guard(1, 1, 0), false, -TDM_EINVAL, TDM_REJECT_GUARD }, /* itself */
		{ sqe_guard(0, 0, 0), false, -TDM_EPROTO, TDM_REJECT_SEQUENCE }, /* not the last */
		{ sqe_guard(1, 0, 0), true, -TDM_EARITY, TDM_REJECT_MODE },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tdm_sqe t = sqe_acc(1, x, y);
		if (cases[i].acc_x)
			t.u.task.args[0].mode = TDM_ACC;
		struct tdm_sqe e[] = { sqe_begin(10 + i, 2), sqe_router(0, r), t, cases[i].guard,
			               sqe_end() };
		push_all(h, e, sizeof(e) / sizeof(e[0]));
		assert_int_equal(h->naccepted, 0);
		struct tdm_cqe c[4];
		assert_int_equal(harness_reap(h, c, 4), 1);
		assert_int_equal(c[0].status, cases[i].status);
		assert_int_equal(c[0].detail, cases[i].field);
	}
	/* The router named is not a router: an axpy. */
	struct tdm_sqe e2[] = { sqe_begin(20, 2), sqe_axpy(0, x, y), sqe_acc(1, x, y),
		                sqe_guard(1, 0, 0), sqe_end() };
	push_all(h, e2, sizeof(e2) / sizeof(e2[0]));
	struct tdm_cqe c[4];
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].detail, TDM_REJECT_GUARD);
	/* A second guard on one task. */
	struct tdm_sqe e3[] = { sqe_begin(21, 2),   sqe_router(0, r),   sqe_acc(1, x, y),
		                sqe_guard(1, 0, 0), sqe_guard(1, 0, 1), sqe_end() };
	push_all(h, e3, sizeof(e3) / sizeof(e3[0]));
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].detail, TDM_REJECT_GUARD);
	/* Reserved bytes of a guard entry. */
	struct tdm_sqe bad = sqe_guard(1, 0, 0);
	bad.u.guard.reserved = 1;
	struct tdm_sqe e4[] = { sqe_begin(22, 2), sqe_router(0, r), sqe_acc(1, x, y), bad,
		                sqe_end() };
	push_all(h, e4, sizeof(e4) / sizeof(e4[0]));
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].detail, TDM_REJECT_RESERVED);
	bad = sqe_guard(1, 0, 0);
	bad.u.raw[100] = 1;
	struct tdm_sqe e5[] = { sqe_begin(23, 2), sqe_router(0, r), sqe_acc(1, x, y), bad,
		                sqe_end() };
	push_all(h, e5, sizeof(e5) / sizeof(e5[0]));
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].detail, TDM_REJECT_RESERVED);
	/* A guard outside a graph: a stray entry. */
	struct tdm_sqe stray = sqe_guard(0, 0, 0);
	push_all(h, &stray, 1);
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].op, TDM_CQE_ERROR);
	/* Partials beyond the client's buffer quota (4 KiB each here). */
	uint64_t quota = h->cfg.buffer_quota_bytes;
	h->cfg.buffer_quota_bytes = 6000;
	struct tdm_sqe e6[] = { sqe_begin(24, 2), sqe_acc(0, x, y), sqe_acc(1, x, y), sqe_end() };
	push_all(h, e6, sizeof(e6) / sizeof(e6[0]));
	h->cfg.buffer_quota_bytes = quota;
	assert_int_equal(h->naccepted, 0);
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].status, -TDM_EQUOTA);
	assert_int_equal(c[0].detail, TDM_REJECT_QUOTA);
	/* And the session still takes a good graph. */
	struct tdm_sqe ok[] = { sqe_begin(30, 2), sqe_router(0, r), sqe_acc(1, x, y),
		                sqe_guard(1, 0, 2), sqe_end() };
	push_all(h, ok, sizeof(ok) / sizeof(ok[0]));
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].status, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_guarded_accumulators, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejects, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
