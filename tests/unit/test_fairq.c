/* The weighted fair queue: shares by weight and by cost, newcomers next to
 * a flood, no banked credit, priority classes, heap order, filters, peek. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "placement/fairq.h"

#define NTASKS 12000

/* Task storage: which flow a popped task came from is told by its index. */
static struct engine_task *tasks;

static int setup(void **state)
{
	(void)state;
	tasks = calloc(NTASKS, sizeof(*tasks));
	return tasks ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(tasks);
	return 0;
}

static void push(struct fairq *q, struct fairq_flow *f, uint32_t i, int32_t prio, double key,
                 double cost)
{
	struct fairq_key k = { prio, key };
	tasks[i].index = i;
	assert_int_equal(fairq_push(q, f, &k, cost, &tasks[i]), 0);
}

static uint32_t pop_index(struct fairq *q)
{
	struct engine_task *t = fairq_pop(q, NULL, NULL, 0);
	assert_non_null(t);
	return t->index;
}

/* Flow a owns tasks [0, 6000), flow b [6000, 12000). */
#define B0 6000

static void fill_two(struct fairq *q, struct fairq_flow *a, struct fairq_flow *b, uint32_t n,
                     double cost_a, double cost_b)
{
	for (uint32_t i = 0; i < n; i++) {
		push(q, a, i, 0, i, cost_a);
		push(q, b, B0 + i, 0, i, cost_b);
	}
}

static void test_weights_share(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 3 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, &fb);
	fill_two(&q, &a, &b, 5000, 100, 100);
	uint32_t nb = 0;
	for (int i = 0; i < 4000; i++)
		nb += pop_index(&q) >= B0;
	/* 3000 expected: within 10% of the 1:3 share. */
	assert_in_range(nb, 2700, 3300);
	assert_int_equal(fairq_len(&q), 10000 - 4000);
	assert_int_equal(fairq_flow_fini(&q, &a), 5000 - (4000 - nb));
	assert_int_equal(fairq_flow_fini(&q, &b), 5000 - nb);
	assert_int_equal(fairq_len(&q), 0);
	fairq_fini(&q);
}

/* Equal weights, a's tasks cost 10x: a gets a tenth of b's tasks. */
static void test_cost_share(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 1 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, &fb);
	fill_two(&q, &a, &b, 5000, 1000, 100);
	uint32_t na = 0;
	for (int i = 0; i < 4400; i++)
		na += pop_index(&q) < B0;
	/* 400 of a, 4000 of b expected. */
	assert_in_range(na, 360, 440);
	fairq_flow_fini(&q, &a);
	fairq_flow_fini(&q, &b);
	fairq_fini(&q);
}

/* A flow weight of 0 reads as 1, and a flow with no engine_flow too. */
static void test_zero_weight(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 0 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, NULL);
	fill_two(&q, &a, &b, 1000, 100, 100);
	uint32_t na = 0;
	for (int i = 0; i < 1000; i++)
		na += pop_index(&q) < B0;
	assert_in_range(na, 490, 510);
	fairq_flow_fini(&q, &a);
	fairq_flow_fini(&q, &b);
	fairq_fini(&q);
}

/* A light flow that arrives behind a flood is served within two pops,
 * whether or not the flood already started. */
static void test_light_beside_flood(void **state)
{
	(void)state;
	for (int served = 0; served <= 100; served += 100) {
		struct fairq q;
		struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 1 };
		struct fairq_flow a, b;
		fairq_init(&q);
		fairq_flow_init(&a, &fa);
		fairq_flow_init(&b, &fb);
		for (uint32_t i = 0; i < 10000; i++)
			push(&q, &a, i, 0, i, 1000);
		for (int i = 0; i < served; i++)
			assert_true(pop_index(&q) < 10000);
		push(&q, &b, 10000, 0, 0, 1000);
		uint32_t x = pop_index(&q), y = pop_index(&q);
		assert_true(x == 10000 || y == 10000);
		fairq_flow_fini(&q, &a);
		fairq_flow_fini(&q, &b);
		fairq_fini(&q);
	}
}

/* A flow that idled while another was served does not get the time it
 * missed back: when it returns, the two alternate. */
static void test_no_banked_credit(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 1 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, &fb);
	for (uint32_t i = 0; i < 5000; i++)
		push(&q, &a, i, 0, i, 100);
	for (uint32_t i = 0; i < 50; i++)
		push(&q, &b, B0 + i, 0, i, 100);
	for (int i = 0; i < 100; i++) /* b drains */
		pop_index(&q);
	assert_int_equal(b.n, 0);
	for (int i = 0; i < 2000; i++) /* a alone */
		assert_true(pop_index(&q) < B0);
	for (uint32_t i = 0; i < 1000; i++)
		push(&q, &b, B0 + 100 + i, 0, i, 100);
	uint32_t nb = 0;
	for (int i = 0; i < 200; i++)
		nb += pop_index(&q) >= B0;
	assert_in_range(nb, 95, 105);
	fairq_flow_fini(&q, &a);
	fairq_flow_fini(&q, &b);
	fairq_fini(&q);
}

/* The highest priority class goes first, whatever the virtual times; within
 * a flow too. */
static void test_prio_classes(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 1 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, &fb);
	for (uint32_t i = 0; i < 100; i++)
		push(&q, &a, i, 0, i, 100);
	for (uint32_t i = 0; i < 100; i++)
		push(&q, &b, B0 + i, 5, i, 100);
	push(&q, &a, 100, 7, 1e18, 100); /* pushed last, highest class */
	assert_int_equal(pop_index(&q), 100);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(pop_index(&q), B0 + i);
	for (uint32_t i = 0; i < 100; i++)
		assert_int_equal(pop_index(&q), i);
	assert_null(fairq_pop(&q, NULL, NULL, 0));
	fairq_flow_fini(&q, &a);
	fairq_flow_fini(&q, &b);
	fairq_fini(&q);
}

/* Within a flow: key ascending, then push order. */
static void test_heap_order(void **state)
{
	(void)state;
	struct fairq q;
	struct fairq_flow a;
	fairq_init(&q);
	fairq_flow_init(&a, NULL);
	static double keys[3000];
	unsigned seed = 1;
	for (uint32_t i = 0; i < 3000; i++) {
		seed = seed * 1103515245u + 12345u;
		keys[i] = (double)((seed >> 8) % 200);
		push(&q, &a, i, 0, keys[i], 1);
	}
	double last = -1;
	uint32_t last_i = 0;
	for (uint32_t i = 0; i < 3000; i++) {
		uint32_t k = pop_index(&q);
		assert_true(keys[k] >= last);
		if (keys[k] == last)
			assert_true(k > last_i);
		last = keys[k];
		last_i = k;
	}
	fairq_flow_fini(&q, &a);
	fairq_fini(&q);
}

static bool odd_only(void *ctx, const struct engine_task *t)
{
	(void)ctx;
	return t->index & 1;
}

/* A filter passes over tasks the worker may not run, within the scan. */
static void test_filter(void **state)
{
	(void)state;
	struct fairq q;
	struct fairq_flow a;
	fairq_init(&q);
	fairq_flow_init(&a, NULL);
	push(&q, &a, 0, 0, 0, 1);
	push(&q, &a, 2, 0, 1, 1);
	push(&q, &a, 3, 0, 2, 1);
	struct engine_task *t = fairq_pop(&q, odd_only, NULL, 8);
	assert_non_null(t);
	assert_int_equal(t->index, 3);
	assert_null(fairq_pop(&q, odd_only, NULL, 8));
	assert_int_equal(fairq_len(&q), 2);
	assert_int_equal(pop_index(&q), 0);
	assert_int_equal(pop_index(&q), 2);
	fairq_flow_fini(&q, &a);
	fairq_fini(&q);
}

/* peek gives what the next pops give, and removes nothing. */
static void test_peek(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 1 }, fb = { .id = 2, .weight = 3 };
	struct fairq_flow a, b;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	fairq_flow_init(&b, &fb);
	unsigned seed = 5;
	for (uint32_t i = 0; i < 40; i++) {
		seed = seed * 1103515245u + 12345u;
		push(&q, &a, i, (seed >> 20) % 2, (seed >> 8) % 50, 100 + (seed >> 12) % 300);
		seed = seed * 1103515245u + 12345u;
		push(&q, &b, B0 + i, (seed >> 20) % 2, (seed >> 8) % 50, 100 + (seed >> 12) % 300);
	}
	for (int round = 0; round < 4; round++) {
		struct engine_task *seen[FAIRQ_PEEK_MAX];
		size_t n = fairq_peek(&q, seen, FAIRQ_PEEK_MAX);
		assert_int_equal(n, FAIRQ_PEEK_MAX);
		assert_int_equal(fairq_len(&q), 80 - round * FAIRQ_PEEK_MAX);
		for (size_t i = 0; i < n; i++)
			assert_ptr_equal(fairq_pop(&q, NULL, NULL, 0), seen[i]);
	}
	struct engine_task *rest[FAIRQ_PEEK_MAX];
	assert_int_equal(fairq_peek(&q, rest, FAIRQ_PEEK_MAX), FAIRQ_PEEK_MAX);
	fairq_flow_fini(&q, &a);
	fairq_flow_fini(&q, &b);
	assert_int_equal(fairq_peek(&q, rest, FAIRQ_PEEK_MAX), 0);
	fairq_fini(&q);
}

/* peek with one flow queued (its own path): what the next pops give, in
 * priority and key order, also once fewer than asked for are left. */
static void test_peek_one_flow(void **state)
{
	(void)state;
	struct fairq q;
	struct engine_flow fa = { .id = 1, .weight = 2 };
	struct fairq_flow a;
	fairq_init(&q);
	fairq_flow_init(&a, &fa);
	unsigned seed = 11;
	for (uint32_t i = 0; i < 30; i++) {
		seed = seed * 1103515245u + 12345u;
		push(&q, &a, i, (seed >> 20) % 3, (seed >> 8) % 20, 100 + (seed >> 12) % 300);
	}
	for (size_t left = 30; left > 0;) {
		struct engine_task *seen[FAIRQ_PEEK_MAX];
		size_t n = fairq_peek(&q, seen, FAIRQ_PEEK_MAX);
		assert_int_equal(n, left < FAIRQ_PEEK_MAX ? left : FAIRQ_PEEK_MAX);
		assert_int_equal(fairq_len(&q), left);
		for (size_t i = 0; i < n && i < 3; i++) /* pop fewer than peeked */
			assert_ptr_equal(fairq_pop(&q, NULL, NULL, 0), seen[i]);
		left -= n < 3 ? n : 3;
	}
	struct engine_task *rest[FAIRQ_PEEK_MAX];
	assert_int_equal(fairq_peek(&q, rest, FAIRQ_PEEK_MAX), 0);
	fairq_flow_fini(&q, &a);
	fairq_fini(&q);
}

/* Two queues on one clock: the clock counts a flow as waiting while it has a
 * task on either queue (the dispatch core's fair steal looks at peers only
 * while two wait), also when its sub-queue is dropped with tasks in it. */
static void test_backlogged_flows(void **state)
{
	(void)state;
	struct fairq_clock c;
	struct fairq q[2];
	struct fairq_flow a[2], b[2];
	struct fairq_share sa = { 0 }, sb = { 0 };
	fairq_clock_init(&c);
	for (int i = 0; i < 2; i++) {
		fairq_init_shared(&q[i], &c);
		fairq_flow_init_shared(&a[i], NULL, &sa);
		fairq_flow_init_shared(&b[i], NULL, &sb);
	}
	assert_int_equal(fairq_clock_backlogged(&c), 0);
	push(&q[0], &a[0], 0, 0, 0, 10);
	push(&q[1], &a[1], 1, 0, 0, 10);
	assert_int_equal(fairq_clock_backlogged(&c), 1);
	push(&q[1], &b[1], B0, 0, 0, 10);
	assert_int_equal(fairq_clock_backlogged(&c), 2);
	assert_int_equal(pop_index(&q[0]), 0); /* a still waits on q[1] */
	assert_int_equal(fairq_clock_backlogged(&c), 2);
	assert_int_equal(fairq_flow_fini(&q[1], &b[1]), 1);
	assert_int_equal(fairq_clock_backlogged(&c), 1);
	assert_int_equal(pop_index(&q[1]), 1);
	assert_int_equal(fairq_clock_backlogged(&c), 0);
	for (int i = 0; i < 2; i++) {
		fairq_flow_fini(&q[i], &a[i]);
		if (i == 0)
			fairq_flow_fini(&q[i], &b[i]);
		fairq_fini(&q[i]);
	}
	assert_int_equal(fairq_clock_backlogged(&c), 0);
	fairq_clock_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_weights_share),
		cmocka_unit_test(test_cost_share),
		cmocka_unit_test(test_zero_weight),
		cmocka_unit_test(test_light_beside_flood),
		cmocka_unit_test(test_no_banked_credit),
		cmocka_unit_test(test_prio_classes),
		cmocka_unit_test(test_heap_order),
		cmocka_unit_test(test_filter),
		cmocka_unit_test(test_peek),
		cmocka_unit_test(test_peek_one_flow),
		cmocka_unit_test(test_backlogged_flows),
	};
	return cmocka_run_group_tests_name("fairq", tests, setup, teardown);
}
