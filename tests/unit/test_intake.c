/* Intake: every field of every entry is validated; graphs are accepted or
 * rejected whole; implicit dependencies; ring protocol violations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "backends/backend.h"
#include "policies/policy.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"
#include "tests/harness/intake_harness.h"

static const uint32_t *succ_of(const struct engine_graph *g, uint32_t t, uint32_t *n)
{
	*n = g->succ_off[t + 1] - g->succ_off[t];
	return &g->succ[g->succ_off[t]];
}

static void test_implicit_dependencies(void **state)
{
	struct harness *h = *state;
	uint32_t x = h->handle[0], y = h->handle[1], n;

	/* 0: fill x   1: axpy x->y (RAW on x)   2: fill x (WAR after 1)
	 * 3: axpy x->y (RAW on x from 2, WAW on y from 1) */
	struct tdm_sqe e[] = { sqe_begin(7, 4),   sqe_fill(0, x, 0, HARNESS_BUFFER_BYTES),
		               sqe_axpy(1, x, y), sqe_fill(2, x, 0, HARNESS_BUFFER_BYTES),
		               sqe_axpy(3, x, y), sqe_end() };
	for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++)
		assert_true(harness_push(h, &e[i]));
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(h->naccepted, 1);
	struct engine_graph *g = h->accepted[0];
	assert_int_equal(g->ntasks, 4);
	assert_int_equal(g->cookie, 7);
	const uint32_t *s = succ_of(g, 0, &n);
	assert_int_equal(n, 1);
	assert_int_equal(s[0], 1);
	s = succ_of(g, 1, &n);
	assert_int_equal(n, 2); /* 1 -> 2 (WAR on x), 1 -> 3 (WAW on y) */
	assert_true((s[0] == 2 && s[1] == 3) || (s[0] == 3 && s[1] == 2));
	s = succ_of(g, 2, &n);
	assert_int_equal(n, 1);
	assert_int_equal(s[0], 3);
	assert_int_equal(atomic_load(&g->tasks[0].ndeps), 0);
	assert_int_equal(atomic_load(&g->tasks[3].ndeps), 2);
	/* Pointers resolve into the buffer the handle names. */
	assert_ptr_equal(g->tasks[1].call.ptr[1], session_buffer_lookup(h->s, y)->base);
	harness_finish_all(h);
	struct tdm_cqe c[4];
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].op, TDM_CQE_GRAPH_DONE);
	assert_int_equal(c[0].status, 0);
	assert_int_equal(c[0].cookie, 7);
}

/* A graph's policy hint and deadline reach the engine; a client's share
 * and default hint come from [clients] by its uid. */
static void test_hints_and_client_settings(void **state)
{
	struct harness *h = *state;
	struct tdm_sqe e[] = { sqe_begin(9, 1), sqe_fill(0, h->handle[0], 0, 64), sqe_end() };
	e[0].u.begin.policy = TDM_POLICY_PEFT;
	e[0].u.begin.deadline_ns = 123456789;
	for (size_t i = 0; i < 3; i++)
		assert_true(harness_push(h, &e[i]));
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(h->naccepted, 1);
	assert_int_equal(h->accepted[0]->policy_hint, TDM_POLICY_PEFT);
	assert_int_equal(h->accepted[0]->deadline_ns, 123456789);
	assert_int_equal(h->s->flow.weight, 1); /* the default */
	harness_finish_all(h);

	char toml[256], err[CONFIG_ERR_MAX];
	struct daemon_config cfg;
	struct session_env env = h->env;
	struct session *s;
	snprintf(toml, sizeof(toml),
	         "[clients]\ndefault_weight = 2\nweights = { %u = 7 }\npolicies = { %u = "
	         "\"heft\" }\n",
	         (unsigned)getuid(), (unsigned)getuid());
	assert_int_equal(config_load_string(toml, strlen(toml), "t", &cfg, err, sizeof(err)), 0);
	env.cfg = &cfg;
	assert_int_equal(session_create(&env, 2, (uint32_t)getuid(), NULL, &s), 0);
	assert_int_equal(s->flow.weight, 7);
	assert_int_equal(s->flow.policy_hint, TDM_POLICY_HEFT);
	session_close(s);
	session_unref(s);
	assert_int_equal(session_create(&env, 3, (uint32_t)getuid() + 1, NULL, &s), 0);
	assert_int_equal(s->flow.weight, 2); /* another uid: default_weight */
	assert_int_equal(s->flow.policy_hint, TDM_POLICY_DEFAULT);
	session_close(s);
	session_unref(s);
}

struct bad_case {
	const char *what;
	void (*mutate)(struct harness *h, struct tdm_sqe *e);
	int status;
	uint32_t field;
};

static void m_handle(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].handle = 0xdead;
}
static void m_range(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].offset = HARNESS_BUFFER_BYTES;
	e->u.task.args[0].length = 4;
}
static void m_range_wrap(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].offset = 8;
	e->u.task.args[0].length = UINT64_MAX - 4;
}
static void m_zero_len(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].length = 0;
}
static void m_kernel(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.kernel_id = 9999;
}
static void m_arity(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.nargs = 2;
	e->u.task.args[1] = e->u.task.args[0];
}
static void m_mode(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].mode = TDM_R;
}
static void m_scalar(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.scalar_types[0] = TDM_SCALAR_I64;
}
static void m_unused_arg(struct harness *h, struct tdm_sqe *e)
{
	e->u.task.args[3].handle = h->handle[1];
}
static void m_unused_scalar(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.scalars[5].i64 = 3;
}
static void m_reserved(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.reserved0 = 1;
}
static void m_arg_reserved(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].reserved[1] = 1;
}
static void m_edge(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.nedges = 1;
	e->u.task.edges[0] = 0; /* to itself: not an earlier task */
}
static void m_unused_edge(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.edges[3] = 1;
}
static void m_index(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.task_index = 1;
}
static void m_kernel_check(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.args[0].length = 5; /* fill needs whole floats */
}
static void m_many_edges(struct harness *h, struct tdm_sqe *e)
{
	(void)h;
	e->u.task.nedges = TDM_TASK_INLINE_EDGES + 1;
}

static const struct bad_case bad_cases[] = {
	{ "bad handle", m_handle, -TDM_EHANDLE, TDM_REJECT_HANDLE },
	{ "offset past end", m_range, -TDM_ERANGE, TDM_REJECT_RANGE },
	{ "offset+length wraps", m_range_wrap, -TDM_ERANGE, TDM_REJECT_RANGE },
	{ "zero length", m_zero_len, -TDM_ERANGE, TDM_REJECT_RANGE },
	{ "unknown kernel", m_kernel, -TDM_EKERNEL, TDM_REJECT_KERNEL },
	{ "wrong arity", m_arity, -TDM_EARITY, TDM_REJECT_ARITY },
	{ "wrong mode", m_mode, -TDM_EARITY, TDM_REJECT_MODE },
	{ "wrong scalar type", m_scalar, -TDM_EARITY, TDM_REJECT_SCALAR_TYPE },
	{ "unused argument set", m_unused_arg, -TDM_EPROTO, TDM_REJECT_RESERVED },
	{ "unused scalar set", m_unused_scalar, -TDM_EPROTO, TDM_REJECT_RESERVED },
	{ "reserved byte", m_reserved, -TDM_EPROTO, TDM_REJECT_RESERVED },
	{ "argument reserved byte", m_arg_reserved, -TDM_EPROTO, TDM_REJECT_RESERVED },
	{ "edge to itself", m_edge, -TDM_EEDGE, TDM_REJECT_EDGE },
	{ "unused edge set", m_unused_edge, -TDM_EPROTO, TDM_REJECT_RESERVED },
	{ "too many inline edges", m_many_edges, -TDM_EEDGE, TDM_REJECT_EDGE },
	{ "task index out of order", m_index, -TDM_EPROTO, TDM_REJECT_TASK_INDEX },
	{ "kernel size check", m_kernel_check, -TDM_ERANGE, TDM_REJECT_KERNEL_ARGS },
};

/* Each bad task rejects its whole graph with the specific error, nothing
 * of it is accepted, and the next graph goes through. */
static void test_rejections(void **state)
{
	struct harness *h = *state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *bc = &bad_cases[i];
		struct tdm_sqe good = sqe_fill(0, h->handle[0], 0, 64);
		struct tdm_sqe bad = sqe_fill(0, h->handle[0], 0, 64);
		bc->mutate(h, &bad);
		struct tdm_sqe seq[] = { sqe_begin(100 + i, 2), good, bad,      sqe_end(),
			                 sqe_begin(200 + i, 1), good, sqe_end() };
		seq[2].u.task.task_index = bc->mutate == m_index ? 7 : 1;
		if (bc->mutate == m_edge)
			seq[2].u.task.edges[0] = 1; /* itself, at index 1 */
		for (size_t k = 0; k < sizeof(seq) / sizeof(seq[0]); k++)
			assert_true(harness_push(h, &seq[k]));
		assert_int_equal(harness_run(h), 0);
		struct tdm_cqe c[4];
		size_t n = harness_reap(h, c, 4);
		if (n != 1 || c[0].status != bc->status || c[0].detail != bc->field)
			fail_msg("%s: got %zu completions, status %d detail %u", bc->what, n,
			         n ? c[0].status : 0, n ? c[0].detail : 0);
		assert_int_equal(c[0].cookie, 100 + i);
		assert_int_equal(c[0].task_index, 1);
		assert_int_equal(h->naccepted, 1);
		assert_int_equal(h->accepted[0]->cookie, 200 + i);
		harness_finish_all(h);
		assert_int_equal(harness_reap(h, c, 4), 1);
	}
	assert_int_equal(atomic_load(&h->counters.graphs_rejected),
	                 sizeof(bad_cases) / sizeof(bad_cases[0]));
	/* Rejected graphs gave their task reservations back. */
	assert_int_equal(atomic_load(&h->s->tasks_in_flight), 0);
	assert_int_equal(atomic_load(&h->s->graphs_in_flight), 0);
}

static void expect_one(struct harness *h, uint16_t op, int status, uint32_t field)
{
	struct tdm_cqe c[4];
	size_t n = harness_reap(h, c, 4);
	assert_int_equal(n, 1);
	assert_int_equal(c[0].op, op);
	assert_int_equal(c[0].status, status);
	assert_int_equal(c[0].detail, field);
}

static void test_quotas(void **state)
{
	struct harness *h = *state;
	struct tdm_sqe e;

	h->cfg.max_tasks_per_graph = 4;
	e = sqe_begin(1, 5);
	assert_true(harness_push(h, &e));
	for (uint32_t i = 0; i < 5; i++) {
		e = sqe_task(i, "noop");
		assert_true(harness_push(h, &e));
	}
	e = sqe_end();
	assert_true(harness_push(h, &e));
	assert_int_equal(harness_run(h), 0);
	expect_one(h, TDM_CQE_GRAPH_DONE, -TDM_EQUOTA, TDM_REJECT_NTASKS);
	assert_int_equal(h->naccepted, 0);

	h->cfg.max_graphs_in_flight = 1;
	struct tdm_sqe seq[] = { sqe_begin(2, 1), sqe_task(0, "noop"), sqe_end(),
		                 sqe_begin(3, 1), sqe_task(0, "noop"), sqe_end() };
	for (size_t k = 0; k < 6; k++)
		assert_true(harness_push(h, &seq[k]));
	assert_int_equal(harness_run(h), 0);
	expect_one(h, TDM_CQE_GRAPH_DONE, -TDM_EQUOTA, TDM_REJECT_QUOTA);
	assert_int_equal(h->naccepted, 1); /* the first one still runs */
	harness_finish_all(h);
	expect_one(h, TDM_CQE_GRAPH_DONE, 0, 0);
	h->cfg.max_graphs_in_flight = 1024;
	h->cfg.max_tasks_per_graph = 1 << 20;
}

static void test_sequence_errors(void **state)
{
	struct harness *h = *state;
	struct tdm_sqe e = sqe_task(0, "noop");

	assert_true(harness_push(h, &e)); /* a task outside any graph */
	assert_int_equal(harness_run(h), 0);
	expect_one(h, TDM_CQE_ERROR, -TDM_EPROTO, TDM_REJECT_SEQUENCE);

	e = (struct tdm_sqe){ .op = 77 };
	assert_true(harness_push(h, &e));
	assert_int_equal(harness_run(h), 0);
	expect_one(h, TDM_CQE_ERROR, -TDM_EPROTO, TDM_REJECT_OP);

	/* END too early, and BEGIN inside an open graph. */
	struct tdm_sqe seq[] = { sqe_begin(5, 2), sqe_task(0, "noop"), sqe_end(), sqe_begin(6, 2),
		                 sqe_begin(8, 1), sqe_task(0, "noop"), sqe_end() };
	for (size_t k = 0; k < sizeof(seq) / sizeof(seq[0]); k++)
		assert_true(harness_push(h, &seq[k]));
	assert_int_equal(harness_run(h), 0);
	struct tdm_cqe c[4];
	assert_int_equal(harness_reap(h, c, 4), 2);
	assert_int_equal(c[0].cookie, 5);
	assert_int_equal(c[0].detail, TDM_REJECT_SEQUENCE);
	assert_int_equal(c[1].cookie, 6);
	assert_int_equal(c[1].detail, TDM_REJECT_SEQUENCE);
	assert_int_equal(h->naccepted, 1);
	assert_int_equal(h->accepted[0]->cookie, 8);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);

	h->draining = true;
	struct tdm_sqe d[] = { sqe_begin(9, 1), sqe_task(0, "noop"), sqe_end() };
	for (size_t k = 0; k < 3; k++)
		assert_true(harness_push(h, &d[k]));
	assert_int_equal(harness_run(h), 0);
	expect_one(h, TDM_CQE_GRAPH_DONE, -TDM_ESHUTDOWN, 0);
	h->draining = false;
}

static void test_tail_outside_ring(void **state)
{
	struct harness *h = *state;
	struct session *s = h->s;

	s->hdr->sq_tail = s->sq_head + s->sq_entries + 1; /* beyond the ring */
	assert_int_equal(harness_run(h), -TDM_EPROTO);
	s->hdr->sq_tail = s->sq_head - 1; /* moved backwards */
	assert_int_equal(harness_run(h), -TDM_EPROTO);
	s->hdr->sq_tail = s->sq_head;
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(atomic_load(&h->counters.protocol_errors), 2);
}

static void test_cq_head_outside_ring(void **state)
{
	struct harness *h = *state;
	struct tdm_sqe e = sqe_task(0, "noop");

	h->s->hdr->cq_head = h->s->cq_tail + 5;
	assert_true(harness_push(h, &e)); /* makes an error completion */
	assert_int_equal(harness_run(h), -TDM_EPROTO);
}

/* More completions than the ring holds wait, flagged, until reaped. */
static void test_completion_overflow(void **state)
{
	struct harness *h = *state;
	struct tdm_sqe e = sqe_begin(11, 100);
	e.u.begin.flags = TDM_GRAPH_TASK_INFO;
	uint32_t pushed = 0, reaped = 0, done = 0;
	struct tdm_cqe c[64];

	assert_true(harness_push(h, &e));
	while (pushed <= 100) {
		e = pushed < 100 ? sqe_task(pushed, "noop") : sqe_end();
		if (!harness_push(h, &e)) {
			assert_int_equal(harness_run(h), 0);
			continue;
		}
		pushed++;
	}
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_true(h->s->hdr->daemon_flags & TDM_DAEMON_CQ_OVERFLOW);
	for (int round = 0; round < 4 && !done; round++) {
		size_t n = harness_reap(h, c, 64);
		for (size_t i = 0; i < n; i++) {
			if (c[i].op == TDM_CQE_TASK_INFO)
				assert_int_equal(c[i].task_index, reaped++);
			else
				done++;
		}
		session_flush(h->s);
	}
	assert_int_equal(reaped, 100);
	assert_int_equal(done, 1);
	assert_false(h->s->hdr->daemon_flags & TDM_DAEMON_CQ_OVERFLOW);
}

/* A freed buffer stays mapped until the graphs using it are done. */
static void test_buffer_outlives_free(void **state)
{
	struct harness *h = *state;
	uint64_t live = atomic_load(&h->counters.buffers_live);
	struct tdm_sqe seq[] = { sqe_begin(12, 1), sqe_fill(0, h->handle[2], 0, 64), sqe_end() };

	for (size_t k = 0; k < 3; k++)
		assert_true(harness_push(h, &seq[k]));
	assert_int_equal(harness_run(h), 0);
	assert_int_equal(session_buffer_free(h->s, h->handle[2]), 0);
	assert_null(session_buffer_lookup(h->s, h->handle[2]));
	assert_int_equal(session_buffer_free(h->s, h->handle[2]), -TDM_EHANDLE);
	assert_int_equal(atomic_load(&h->counters.buffers_live), live);
	harness_finish_all(h);
	assert_int_equal(atomic_load(&h->counters.buffers_live), live - 1);
}

/* ---- the cost budget ([limits] max_task_ms) ---------------------------------- */

/* The harness with an engine of one CPU core and cost models on generic
 * figures (calibrate_defaults), which intake prices tasks with. */
struct priced {
	struct harness h;
	struct calibration cal;
	struct profiler *prof;
	struct engine *e;
	uint32_t big; /* a 256 MiB buffer (sparse: never touched) */
};

#define BIG_BYTES (256u << 20)

static void no_graph_done(void *ctx, struct engine_graph *g)
{
	(void)ctx;
	(void)g;
}

static int setup_priced(void **state)
{
	static struct priced p;
	struct backend_device dev = { .kind = TDM_DEV_CPU, .ops = &backend_cpu, .name = "cpu0" };
	int fd;

	if (harness_init(&p.h, 64, 64) != 0)
		return -1;
	calibrate_defaults(1, 1, &p.cal);
	if (profiler_create(&p.cal, &p.prof) != 0)
		return -1;
	struct engine_params ep = { .clock = &clock_real,
		                    .policy = policy_by_name("eager"),
		                    .devices = &dev,
		                    .ndevices = 1,
		                    .hooks = { .graph_done = no_graph_done },
		                    .prof = p.prof };
	if (engine_create(&ep, &p.e) != 0)
		return -1;
	/* The session was created without it: it adds no flow to the policy. */
	p.h.env.engine = p.e;
	if (session_buffer_alloc(p.h.s, BIG_BYTES, 0, &p.big, &fd) != 0)
		return -1;
	close(fd);
	*state = &p;
	return 0;
}

static int teardown_priced(void **state)
{
	struct priced *p = *state;
	p->h.env.engine = NULL;
	harness_fini(&p->h);
	engine_destroy(p->e);
	profiler_destroy(p->prof);
	return 0;
}

/* A task of kernel `name` on slices of buffer buf laid end to end (lens in
 * bytes, the kernel's access modes), scalars from s[] as the kernel types
 * them. */
static struct tdm_sqe sqe_kernel(uint32_t index, const char *name, uint32_t buf,
                                 const uint64_t *lens, const double *s)
{
	const struct kernel_def *k = kernel_by_id((uint32_t)kernel_lookup(name));
	struct tdm_sqe e = sqe_task(index, name);
	uint64_t off = 0;

	e.u.task.nargs = k->nargs;
	for (unsigned i = 0; i < k->nargs; i++) {
		e.u.task.args[i] = (struct tdm_wire_arg){
			.handle = buf, .mode = k->arg_modes[i], .offset = off, .length = lens[i]
		};
		off += lens[i];
	}
	assert_true(off <= BIG_BYTES);
	e.u.task.nscalars = k->nscalars;
	for (unsigned i = 0; i < k->nscalars; i++) {
		e.u.task.scalar_types[i] = k->scalar_types[i];
		if (k->scalar_types[i] == TDM_SCALAR_F32)
			e.u.task.scalars[i].f32 = (float)s[i];
		else
			e.u.task.scalars[i].i64 = (int64_t)s[i];
	}
	return e;
}

/* Pushes begin, the tasks and end, runs intake and reaps what it posted. */
static size_t submit(struct harness *h, uint64_t cookie, const struct tdm_sqe *tasks, uint32_t n,
                     struct tdm_cqe *c)
{
	struct tdm_sqe b = sqe_begin(cookie, n), e = sqe_end();
	assert_true(harness_push(h, &b));
	for (uint32_t i = 0; i < n; i++)
		assert_true(harness_push(h, &tasks[i]));
	assert_true(harness_push(h, &e));
	assert_int_equal(harness_run(h), 0);
	return harness_reap(h, c, 4);
}

/* The attn_decode of issue 12: head dim 1, one kv head read by 65536 query
 * heads over 65536 positions, 1 MiB of buffers; it ran a minute on a core. */
static struct tdm_sqe sqe_report_attn(uint32_t index, uint32_t buf)
{
	const uint64_t len[] = { 4 * 65536, 4 * 65536, 4 * 65536, 4 * 65536 };
	const double s[] = { 1, 65536, 1, 1, 65536, 65536 };
	return sqe_kernel(index, "attn_decode", buf, len, s);
}

/* A task over the budget rejects its whole graph with -TDM_EQUOTA and
 * TDM_REJECT_COST at its index; without a budget the same graph goes. */
static void test_budget_rejects_long_task(void **state)
{
	struct priced *p = *state;
	struct harness *h = &p->h;
	struct tdm_cqe c[4];
	struct tdm_sqe tasks[] = { sqe_fill(0, h->handle[0], 0, 64), sqe_report_attn(1, p->big),
		                   sqe_fill(2, h->handle[0], 0, 64) };

	assert_int_equal(h->cfg.max_task_ms, 1000); /* the default */
	assert_int_equal(submit(h, 41, tasks, 3, c), 1);
	assert_int_equal(c[0].op, TDM_CQE_GRAPH_DONE);
	assert_int_equal(c[0].cookie, 41);
	assert_int_equal(c[0].status, -TDM_EQUOTA);
	assert_int_equal(c[0].detail, TDM_REJECT_COST);
	assert_int_equal(c[0].task_index, 1);
	assert_string_equal(tdm_reject_field_name(TDM_REJECT_COST), "predicted task cost");
	assert_int_equal(h->naccepted, 0);
	assert_int_equal(atomic_load(&h->s->tasks_in_flight), 0);

	/* The next graph is not affected. */
	assert_int_equal(submit(h, 42, tasks, 1, c), 0);
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);

	h->cfg.max_task_ms = 0; /* no limit */
	assert_int_equal(submit(h, 43, tasks, 3, c), 0);
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].status, 0);
	h->cfg.max_task_ms = 1000;
}

/* One decode step of a 7B-class model (and a 1024-tile of a blocked
 * Cholesky) passes the default budget, even priced on generic figures
 * (10 GFLOP/s, 20 GB/s): the budget is no obstacle to real work. */
static void test_budget_passes_ordinary_tasks(void **state)
{
	struct priced *p = *state;
	struct harness *h = &p->h;
	const uint32_t b = p->big;
	struct tdm_cqe c[4];

	const uint64_t norm_len[] = { 4 * 4096, 4 * 4096, 4 * 4096 };
	const double norm_s[] = { 1, 4096, 1e-5 };
	const uint64_t proj_len[] = { 4 * 4096, 4 * 4096 * 4096, 4 * 4096 };
	const double proj_s[] = { 1, 4096, 4096, 1, 0 };
	const uint64_t rope_len[] = { 4 * 32 * 128 };
	const double rope_s[] = { 1, 32, 128, 4095, 10000 };
	const uint64_t attn_len[] = { 4 * 32 * 128, 4 * 4096 * 8 * 128, 4 * 4096 * 8 * 128,
		                      4 * 32 * 128 };
	const double attn_s[] = { 1, 32, 8, 128, 4096, 4096 };
	const uint64_t router_len[] = { 4 * 64, 4 * 2, 4 * 2 };
	const double router_s[] = { 1, 64, 2 };
	const uint64_t moe_len[] = { 4 * 2048, 4 * 2048 * 5632, 4 * 2048 * 5632, 4 * 5632 * 2048,
		                     4 * 2,    4 * 2,           4 * 2048 };
	const double moe_s[] = { 1, 2048, 5632, 2, 0 };
	const uint64_t tile_len[] = { 4 * 1024 * 1024, 4 * 1024 * 1024, 4 * 1024 * 1024 };
	const double tile_s[] = { 1024 };
	struct tdm_sqe tasks[] = {
		sqe_kernel(0, "rmsnorm", b, norm_len, norm_s),
		sqe_kernel(1, "sgemm", b, proj_len, proj_s),
		sqe_kernel(2, "rope", b, rope_len, rope_s),
		sqe_kernel(3, "attn_decode", b, attn_len, attn_s),
		sqe_kernel(4, "topk_router", b, router_len, router_s),
		sqe_kernel(5, "moe_expert", b, moe_len, moe_s),
		sqe_kernel(6, "sgemm_nt", b, tile_len, tile_s),
	};
	uint32_t n = sizeof(tasks) / sizeof(tasks[0]);

	assert_int_equal(submit(h, 51, tasks, n, c), 0);
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);
	assert_int_equal(c[0].status, 0);
}

/* The limit is on the calibrated roofline: spin's is its duration plus the
 * launch, so the longest spin admitted ends exactly at the limit. */
static void test_budget_boundary(void **state)
{
	struct priced *p = *state;
	struct harness *h = &p->h;
	struct tdm_cqe c[4];
	h->cfg.max_task_ms = 3;
	double launch_us = p->cal.dev[0].launch_ns / 1000;
	int64_t longest = (int64_t)(3000 - launch_us);
	struct tdm_sqe spin = sqe_task(0, "spin");
	spin.u.task.nscalars = 1;
	spin.u.task.scalar_types[0] = TDM_SCALAR_I64;

	spin.u.task.scalars[0].i64 = longest;
	assert_int_equal(submit(h, 61, &spin, 1, c), 0);
	assert_int_equal(h->naccepted, 1);
	harness_finish_all(h);
	assert_int_equal(harness_reap(h, c, 4), 1);

	spin.u.task.scalars[0].i64 = longest + 1;
	assert_int_equal(submit(h, 62, &spin, 1, c), 1);
	assert_int_equal(c[0].status, -TDM_EQUOTA);
	assert_int_equal(c[0].detail, TDM_REJECT_COST);
	assert_int_equal(h->naccepted, 0);
	h->cfg.max_task_ms = 1000;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_implicit_dependencies, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_rejections, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(test_hints_and_client_settings, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_quotas, harness_setup, harness_teardown),
		cmocka_unit_test_setup_teardown(test_sequence_errors, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_tail_outside_ring, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_cq_head_outside_ring, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_completion_overflow, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_buffer_outlives_free, harness_setup,
		                                harness_teardown),
		cmocka_unit_test_setup_teardown(test_budget_rejects_long_task, setup_priced,
		                                teardown_priced),
		cmocka_unit_test_setup_teardown(test_budget_passes_ordinary_tasks, setup_priced,
		                                teardown_priced),
		cmocka_unit_test_setup_teardown(test_budget_boundary, setup_priced,
		                                teardown_priced),
	};
	return cmocka_run_group_tests_name("intake", tests, NULL, NULL);
}
