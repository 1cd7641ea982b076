/* A raw wire client, written from include/tandem/wire.h alone, feeds the
 * daemon malformed input: random entries, entries with every kind of bad
 * field, entries outside a graph, ring indices moved where they cannot be,
 * and garbage socket messages. Each must be answered with its specific
 * error or a disconnect of that client only, and the daemon must go on
 * serving everyone else. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"
#include "support_raw.h"

#define MS (1000000ll)
#define SQ_ENTRIES 64
#define CQ_ENTRIES 256
#define MAX_TASKS 1000
#define IO_TIMEOUT_MS 10000

static struct tdmt_daemon daemon_;

/* ---- the raw client (support_raw.h), with the assertions of these tests -- */

static int raw_socket(void)
{
	int fd = tdmt_raw_socket(daemon_.sock, IO_TIMEOUT_MS);
	assert_true(fd >= 0);
	return fd;
}

static void send_bytes(int fd, const void *p, size_t n)
{
	assert_int_equal(tdmt_raw_send_all(fd, p, n), 0);
}

static void send_msg(int fd, uint32_t type, const void *p, uint32_t len)
{
	assert_int_equal(tdmt_raw_send(fd, type, p, len), 0);
}

/* Receives one message of this type: payload into buf (exactly len bytes
 * expected), descriptors into fds. Returns the number of fds, or -1 on
 * EOF/error. */
static int recv_msg(int fd, uint32_t type, void *buf, uint32_t len, int *fds, int max_fds)
{
	struct tdm_msg_hdr h;
	int nfds = tdmt_raw_recv(fd, &h, buf, len, fds, max_fds);
	if (nfds < 0)
		return -1;
	assert_int_equal(h.type, type);
	assert_int_equal(h.length, len);
	return nfds;
}

/* Whether the daemon closes the socket within timeout_ms (reading and
 * dropping whatever it still sends). */
static bool wait_eof(int fd, int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		uint64_t now = tdmt_now_ns();
		if (now >= deadline)
			return false;
		struct pollfd p = { fd, POLLIN, 0 };
		int n = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
		if (n <= 0)
			continue;
		char buf[256];
		ssize_t k = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
			return true;
	}
}

/* Hello as role; for a client, maps the ring. Returns the hello status. */
static int raw_hello(struct tdmt_raw *r, uint32_t role)
{
	memset(r, 0, sizeof(*r));
	r->sock = raw_socket();
	int status = tdmt_raw_hello(r, role);
	assert_int_not_equal(status, -1000);
	if (status || role != TDM_ROLE_CLIENT)
		return status;
	struct tdm_hello_reply *hr = &r->hello;
	assert_int_equal(hr->sq_entries, SQ_ENTRIES);
	assert_int_equal(hr->cq_entries, CQ_ENTRIES);
	assert_int_equal(hr->max_tasks_per_graph, MAX_TASKS);
	assert_true(hr->sq_offset >= sizeof(struct tdm_ring_header));
	assert_true((uint64_t)hr->sq_offset + SQ_ENTRIES * sizeof(struct tdm_sqe) <=
	            hr->ring_bytes);
	assert_true((uint64_t)hr->cq_offset + CQ_ENTRIES * sizeof(struct tdm_cqe) <=
	            hr->ring_bytes);
	assert_int_equal(r->hdr->magic, TDM_WIRE_MAGIC);
	assert_int_equal(r->hdr->sq_entries, SQ_ENTRIES);
	return 0;
}

static void raw_connect(struct tdmt_raw *r)
{
	assert_int_equal(raw_hello(r, TDM_ROLE_CLIENT), 0);
}

static void raw_close(struct tdmt_raw *r)
{
	tdmt_raw_close(r);
}

static void raw_bell(struct tdmt_raw *r)
{
	assert_int_equal(tdmt_raw_bell(r), 0);
}

static void raw_publish(struct tdmt_raw *r)
{
	tdmt_raw_publish(r);
}

/* Reaps completions into a small log the tests inspect. */
#define CQ_LOG 4096
static struct tdm_cqe cq_log[CQ_LOG];
static size_t cq_nlog;

static bool raw_reap(struct tdmt_raw *r)
{
	uint32_t tail = __atomic_load_n(&r->hdr->cq_tail, __ATOMIC_ACQUIRE);
	assert_true(tail - r->cq_head <= r->cq_entries);
	if (tail == r->cq_head)
		return false;
	while (r->cq_head != tail) {
		struct tdm_cqe e = r->cq[r->cq_head & (r->cq_entries - 1)];
		r->cq_head++;
		if (cq_nlog < CQ_LOG)
			cq_log[cq_nlog++] = e;
	}
	__atomic_store_n(&r->hdr->cq_head, r->cq_head, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&r->hdr->daemon_flags, __ATOMIC_SEQ_CST) & TDM_DAEMON_CQ_OVERFLOW)
		raw_bell(r);
	return true;
}

/* Puts one entry, waiting (and reaping) while the ring is full. */
static void raw_put(struct tdmt_raw *r, const struct tdm_sqe *e)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)IO_TIMEOUT_MS * 1000000ull;
	while (r->sq_tail - __atomic_load_n(&r->hdr->sq_head, __ATOMIC_ACQUIRE) >= r->sq_entries) {
		raw_publish(r);
		raw_reap(r);
		assert_true(tdmt_now_ns() < deadline);
		tdmt_sleep_ms(1);
	}
	memcpy(&r->sq[r->sq_tail & (r->sq_entries - 1)], e, sizeof(*e));
	r->sq_tail++;
}

/* Reaps until a GRAPH_DONE for cookie arrives; returns its index in cq_log. */
static size_t raw_wait_done(struct tdmt_raw *r, uint64_t cookie)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)IO_TIMEOUT_MS * 1000000ull;
	size_t from = 0;
	for (;;) {
		for (size_t i = from; i < cq_nlog; i++)
			if (cq_log[i].op == TDM_CQE_GRAPH_DONE && cq_log[i].cookie == cookie)
				return i;
		from = cq_nlog;
		if (!raw_reap(r)) {
			if (tdmt_now_ns() >= deadline)
				fail_msg("no completion for graph %llu",
				         (unsigned long long)cookie);
			tdmt_sleep_ms(1);
		}
	}
}

static void raw_alloc(struct tdmt_raw *r, uint64_t bytes, uint32_t *handle, float **ptr)
{
	struct tdm_buf_alloc_req req = { .bytes = bytes };
	struct tdm_buf_alloc_reply rep;
	int fd = -1;
	send_msg(r->sock, TDM_MSG_BUF_ALLOC, &req, sizeof(req));
	assert_int_equal(recv_msg(r->sock, TDM_MSG_BUF_ALLOC_REPLY, &rep, sizeof(rep), &fd, 1), 1);
	assert_int_equal(rep.status, 0);
	assert_int_equal(rep.bytes, bytes);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p = mmap(NULL, (bytes + page - 1) / page * page, PROT_READ | PROT_WRITE, MAP_SHARED,
	               fd, 0);
	close(fd);
	assert_true(p != MAP_FAILED);
	*handle = rep.handle;
	*ptr = p;
}

static uint32_t raw_lookup(struct tdmt_raw *r, const char *name)
{
	struct tdm_kernel_lookup_req req = { { 0 } };
	struct tdm_kernel_lookup_reply rep;
	snprintf(req.name, sizeof(req.name), "%s", name);
	send_msg(r->sock, TDM_MSG_KERNEL_LOOKUP, &req, sizeof(req));
	assert_int_equal(recv_msg(r->sock, TDM_MSG_KERNEL_REPLY, &rep, sizeof(rep), NULL, 0), 0);
	assert_int_equal(rep.status, 0);
	return rep.kernel_id;
}

/* ---- entries -------------------------------------------------------------- */

static struct tdm_sqe sqe_begin(uint64_t cookie, uint32_t ntasks, uint32_t flags)
{
	struct tdm_sqe e;
	memset(&e, 0, sizeof(e));
	e.op = TDM_SQE_GRAPH_BEGIN;
	e.u.begin.cookie = cookie;
	e.u.begin.ntasks = ntasks;
	e.u.begin.flags = flags;
	return e;
}

static struct tdm_sqe sqe_end(void)
{
	struct tdm_sqe e;
	memset(&e, 0, sizeof(e));
	e.op = TDM_SQE_GRAPH_END;
	return e;
}

static struct tdm_sqe sqe_noop(uint32_t kernel, uint32_t index)
{
	struct tdm_sqe e;
	memset(&e, 0, sizeof(e));
	e.op = TDM_SQE_TASK;
	e.u.task.task_index = index;
	e.u.task.kernel_id = kernel;
	return e;
}

static struct tdm_sqe sqe_fill(uint32_t kernel, uint32_t index, uint32_t handle, uint64_t off,
                               uint64_t len, float v)
{
	struct tdm_sqe e;
	memset(&e, 0, sizeof(e));
	e.op = TDM_SQE_TASK;
	e.u.task.task_index = index;
	e.u.task.kernel_id = kernel;
	e.u.task.nargs = 1;
	e.u.task.nscalars = 1;
	e.u.task.args[0].handle = handle;
	e.u.task.args[0].mode = TDM_W;
	e.u.task.args[0].offset = off;
	e.u.task.args[0].length = len;
	e.u.task.scalar_types[0] = TDM_SCALAR_F32;
	e.u.task.scalars[0].f32 = v;
	return e;
}

/* ---- fixture -------------------------------------------------------------- */

#define BUF_BYTES 4096

static struct {
	struct tdmt_raw r;
	uint32_t k_noop, k_fill;
	uint32_t target, check; /* buffers: target of bad graphs, check of good ones */
	float *target_p, *check_p;
	uint64_t next_cookie;
} fx;

static int group_setup(void **state)
{
	char toml[256];
	snprintf(toml, sizeof(toml),
	         "[engine]\nspin_us = 5000\n[rings]\nsq_entries = %d\ncq_entries = %d\n"
	         "[limits]\nmax_tasks_per_graph = %d\n",
	         SQ_ENTRIES, CQ_ENTRIES, MAX_TASKS);
	if (tdmt_group_start(state, &daemon_, toml) != 0)
		return -1;
	fx.r.sock = fx.r.sq_bell = fx.r.bell = -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	raw_close(&fx.r);
	tdmt_daemon_cleanup(&daemon_);
	return 0;
}

static int test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	cq_nlog = 0;
	return 0;
}

/* The shared raw session with its kernels and two buffers. */
static void session_up(void)
{
	if (fx.r.ring)
		return;
	raw_connect(&fx.r);
	fx.k_noop = raw_lookup(&fx.r, "noop");
	fx.k_fill = raw_lookup(&fx.r, "fill");
	raw_alloc(&fx.r, BUF_BYTES, &fx.target, &fx.target_p);
	raw_alloc(&fx.r, BUF_BYTES, &fx.check, &fx.check_p);
	fx.next_cookie = 1;
}

/* A valid graph (noop, fill check=v) on the session: it must complete. */
static void good_graph_works(float v)
{
	uint64_t cookie = fx.next_cookie++;
	struct tdm_sqe e = sqe_begin(cookie, 2, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_fill(fx.k_fill, 1, fx.check, 0, BUF_BYTES, v);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	raw_publish(&fx.r);
	size_t i = raw_wait_done(&fx.r, cookie);
	assert_int_equal(cq_log[i].status, 0);
	for (int j = 0; j < BUF_BYTES / 4; j++)
		if (fx.check_p[j] != v)
			fail_msg("check buffer [%d] = %g, want %g", j, fx.check_p[j], v);
}

static int64_t counter(const char *name)
{
	int64_t v = -1;
	assert_int_equal(tdmt_counter(daemon_.sock, name, &v), 0);
	return v;
}

/* ---- rejected graphs ------------------------------------------------------ */

/* Mutations of task 1 (a valid fill of the target buffer) in a graph
 * [noop, fill]. */
enum task_case {
	TC_HANDLE_UNKNOWN,
	TC_HANDLE_ZERO,
	TC_HANDLE_OLD_GEN,
	TC_OFFSET_AT_END,
	TC_OFFSET_HUGE,
	TC_LENGTH_ZERO,
	TC_LENGTH_PAST_END,
	TC_LENGTH_WRAPS,
	TC_NARGS_2,
	TC_NARGS_0,
	TC_NSCALARS_0,
	TC_MODE_R,
	TC_MODE_BAD,
	TC_SCALAR_TYPE,
	TC_KERNEL_999,
	TC_KERNEL_MAX,
	TC_RESERVED,
	TC_RESERVED2,
	TC_RESERVED0,
	TC_ARG_RESERVED,
	TC_ARG_BEYOND_NARGS,
	TC_SCALAR_BEYOND,
	TC_SCALAR_TYPE_BEYOND,
	TC_EDGE_SELF,
	TC_EDGE_LATER,
	TC_NEDGES_9,
	TC_EDGE_BEYOND_NEDGES,
	TC_TASK_INDEX,
	TC_FILL_ODD_LENGTH,
	TC_COUNT
};

static const struct {
	const char *name;
	int status;
	uint32_t field;
} task_cases[TC_COUNT] = {
	[TC_HANDLE_UNKNOWN] = { "unknown handle", -TDM_EHANDLE, TDM_REJECT_HANDLE },
	[TC_HANDLE_ZERO] = { "handle 0", -TDM_EHANDLE, TDM_REJECT_HANDLE },
	[TC_HANDLE_OLD_GEN] = { "stale generation", -TDM_EHANDLE, TDM_REJECT_HANDLE },
	[TC_OFFSET_AT_END] = { "offset at end", -TDM_ERANGE, TDM_REJECT_RANGE },
	[TC_OFFSET_HUGE] = { "offset 2^63", -TDM_ERANGE, TDM_REJECT_RANGE },
	[TC_LENGTH_ZERO] = { "length 0", -TDM_ERANGE, TDM_REJECT_RANGE },
	[TC_LENGTH_PAST_END] = { "length past end", -TDM_ERANGE, TDM_REJECT_RANGE },
	[TC_LENGTH_WRAPS] = { "offset + length wraps", -TDM_ERANGE, TDM_REJECT_RANGE },
	[TC_NARGS_2] = { "2 args for fill", -TDM_EARITY, TDM_REJECT_ARITY },
	[TC_NARGS_0] = { "0 args for fill", -TDM_EARITY, TDM_REJECT_ARITY },
	[TC_NSCALARS_0] = { "0 scalars for fill", -TDM_EARITY, TDM_REJECT_ARITY },
	[TC_MODE_R] = { "mode R for a W arg", -TDM_EARITY, TDM_REJECT_MODE },
	[TC_MODE_BAD] = { "mode 9", -TDM_EARITY, TDM_REJECT_MODE },
	[TC_SCALAR_TYPE] = { "I64 for an F32", -TDM_EARITY, TDM_REJECT_SCALAR_TYPE },
	[TC_KERNEL_999] = { "kernel 999", -TDM_EKERNEL, TDM_REJECT_KERNEL },
	[TC_KERNEL_MAX] = { "kernel 2^32-1", -TDM_EKERNEL, TDM_REJECT_KERNEL },
	[TC_RESERVED] = { "sqe.reserved", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_RESERVED2] = { "sqe.reserved2", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_RESERVED0] = { "task.reserved0", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_ARG_RESERVED] = { "arg.reserved", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_ARG_BEYOND_NARGS] = { "arg beyond nargs", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_SCALAR_BEYOND] = { "scalar beyond nscalars", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_SCALAR_TYPE_BEYOND] = { "scalar type beyond", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_EDGE_SELF] = { "edge to itself", -TDM_EEDGE, TDM_REJECT_EDGE },
	[TC_EDGE_LATER] = { "edge to a later task", -TDM_EEDGE, TDM_REJECT_EDGE },
	[TC_NEDGES_9] = { "9 inline edges", -TDM_EEDGE, TDM_REJECT_EDGE },
	[TC_EDGE_BEYOND_NEDGES] = { "edge beyond nedges", -TDM_EPROTO, TDM_REJECT_RESERVED },
	[TC_TASK_INDEX] = { "task index 2 for 1", -TDM_EPROTO, TDM_REJECT_TASK_INDEX },
	[TC_FILL_ODD_LENGTH] = { "fill of 6 bytes", -TDM_ERANGE, TDM_REJECT_KERNEL_ARGS },
};

static void mutate(enum task_case c, struct tdm_sqe *e, uint32_t stale)
{
	struct tdm_sqe_task *t = &e->u.task;
	switch (c) {
	case TC_HANDLE_UNKNOWN: t->args[0].handle = 0xdeadbeef; break;
	case TC_HANDLE_ZERO: t->args[0].handle = 0; break;
	case TC_HANDLE_OLD_GEN: t->args[0].handle = stale; break;
	case TC_OFFSET_AT_END: t->args[0].offset = BUF_BYTES, t->args[0].length = 4; break;
	case TC_OFFSET_HUGE: t->args[0].offset = 1ull << 63, t->args[0].length = 4; break;
	case TC_LENGTH_ZERO: t->args[0].length = 0; break;
	case TC_LENGTH_PAST_END: t->args[0].length = BUF_BYTES + 4; break;
	case TC_LENGTH_WRAPS: t->args[0].offset = 8, t->args[0].length = UINT64_MAX - 3; break;
	case TC_NARGS_2:
		t->nargs = 2;
		t->args[1] = t->args[0];
		break;
	case TC_NARGS_0:
		t->nargs = 0;
		memset(&t->args[0], 0, sizeof(t->args[0]));
		break;
	case TC_NSCALARS_0:
		t->nscalars = 0;
		t->scalar_types[0] = 0;
		t->scalars[0].bits = 0;
		break;
	case TC_MODE_R: t->args[0].mode = TDM_R; break;
	case TC_MODE_BAD: t->args[0].mode = 9; break;
	case TC_SCALAR_TYPE: t->scalar_types[0] = TDM_SCALAR_I64; break;
	case TC_KERNEL_999: t->kernel_id = 999; break;
	case TC_KERNEL_MAX: t->kernel_id = UINT32_MAX; break;
	case TC_RESERVED: e->reserved = 1; break;
	case TC_RESERVED2: e->reserved2 = 0x80000000u; break;
	case TC_RESERVED0: t->reserved0 = 1; break;
	case TC_ARG_RESERVED: t->args[0].reserved[2] = 1; break;
	case TC_ARG_BEYOND_NARGS: t->args[3].length = 4; break;
	case TC_SCALAR_BEYOND: t->scalars[7].bits = 1; break;
	case TC_SCALAR_TYPE_BEYOND: t->scalar_types[5] = TDM_SCALAR_F32; break;
	case TC_EDGE_SELF: t->nedges = 1, t->edges[0] = 1; break;
	case TC_EDGE_LATER: t->nedges = 1, t->edges[0] = 5; break;
	case TC_NEDGES_9: t->nedges = 9; break;
	case TC_EDGE_BEYOND_NEDGES: t->nedges = 1, t->edges[0] = 0, t->edges[3] = 1; break;
	case TC_TASK_INDEX: t->task_index = 2; break;
	case TC_FILL_ODD_LENGTH: t->args[0].length = 6; break;
	case TC_COUNT: break;
	}
}

/* Reaps until the GRAPH_DONE of a bad graph and of the good one after it;
 * the bad one must carry the expected status, task and field, and nothing
 * else may arrive in between. */
static void expect_rejected(const char *what, uint64_t cookie, int status, uint32_t task,
                            uint32_t field)
{
	size_t i = raw_wait_done(&fx.r, cookie);
	const struct tdm_cqe *e = &cq_log[i];
	if (e->status != status || e->task_index != task || e->detail != field)
		fail_msg("%s: got %d (%s) at task %u field %u (%s), want %d (%s) at task %u "
		         "field %u (%s)",
		         what, e->status, tdm_strerror(e->status), e->task_index, e->detail,
		         tdm_reject_field_name(e->detail), status, tdm_strerror(status), task,
		         field, tdm_reject_field_name(field));
}

static void test_rejected_tasks(void **state)
{
	(void)state;
	session_up();
	/* A stale handle: the target's slot with another generation. */
	uint32_t tmp;
	float *tmp_p;
	raw_alloc(&fx.r, BUF_BYTES, &tmp, &tmp_p);
	struct tdm_buf_free_req fr = { .handle = tmp };
	struct tdm_status_reply sr;
	send_msg(fx.r.sock, TDM_MSG_BUF_FREE, &fr, sizeof(fr));
	assert_int_equal(recv_msg(fx.r.sock, TDM_MSG_BUF_FREE_REPLY, &sr, sizeof(sr), NULL, 0), 0);
	assert_int_equal(sr.status, 0);
	munmap(tmp_p, BUF_BYTES);
	/* the slot is taken again, under a new generation */
	uint32_t again;
	float *again_p;
	raw_alloc(&fx.r, BUF_BYTES, &again, &again_p);
	assert_int_equal(again & 0xfffff, tmp & 0xfffff);
	assert_int_not_equal(again, tmp);

	int64_t rejected0 = counter("graphs_rejected");
	int64_t perr0 = counter("protocol_errors");
	for (int c = 0; c < TC_COUNT; c++) {
		cq_nlog = 0;
		uint64_t bad = fx.next_cookie++;
		struct tdm_sqe e = sqe_begin(bad, 3, TDM_GRAPH_TASK_INFO);
		raw_put(&fx.r, &e);
		e = sqe_noop(fx.k_noop, 0);
		raw_put(&fx.r, &e);
		e = sqe_fill(fx.k_fill, 1, fx.target, 0, BUF_BYTES, 7.0f);
		mutate((enum task_case)c, &e, tmp);
		raw_put(&fx.r, &e);
		/* entries after the bad one are skipped up to the END */
		e = sqe_fill(fx.k_fill, 2, fx.target, 0, BUF_BYTES, 8.0f);
		raw_put(&fx.r, &e);
		e = sqe_end();
		raw_put(&fx.r, &e);
		good_graph_works((float)c);
		expect_rejected(task_cases[c].name, bad, task_cases[c].status, 1,
		                task_cases[c].field);
		/* one GRAPH_DONE for each graph and no TASK_INFO of the bad one */
		assert_int_equal(cq_nlog, 2);
	}
	/* Nothing of a rejected graph ran. */
	for (int j = 0; j < BUF_BYTES / 4; j++)
		assert_true(fx.target_p[j] == 0.0f);
	assert_int_equal(counter("graphs_rejected") - rejected0, TC_COUNT);
	assert_int_equal(counter("protocol_errors"), perr0);
	tdmt_test_ok();
}

/* Bad graphs as a whole: header fields, sequence, edges entries. */
static void test_rejected_graphs(void **state)
{
	(void)state;
	session_up();
	struct tdm_sqe e;
	uint64_t ck[16];
	int n = 0;

	/* 0: BEGIN with a policy hint no daemon knows */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 1, 0);
	e.u.begin.policy = TDM_POLICY_HINT_COUNT;
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 1: BEGIN with an unknown flag */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 1, 0x80);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 2: more tasks than max_tasks_per_graph */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], MAX_TASKS + 1, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 3: END before the declared tasks */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 3, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 1);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 4: more tasks than declared */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 1, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 1);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 5: END with payload */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 1, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_end();
	e.u.raw[100] = 1;
	raw_put(&fx.r, &e);
	/* 6: a BEGIN inside an open graph: the open one is rejected, the new
	 * one (7) goes on and completes */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 2, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 1, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 8: an unknown op inside a graph */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 2, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 0);
	raw_put(&fx.r, &e);
	e = sqe_noop(fx.k_noop, 1);
	e.op = 0x77;
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	/* 9..12: EDGES entries: for the wrong task, to a later task, too many,
	 * a reserved field */
	for (int v = 0; v < 4; v++) {
		ck[n] = fx.next_cookie++;
		e = sqe_begin(ck[n++], 3, 0);
		raw_put(&fx.r, &e);
		for (uint32_t t = 0; t < 3; t++) {
			e = sqe_noop(fx.k_noop, t);
			raw_put(&fx.r, &e);
		}
		memset(&e, 0, sizeof(e));
		e.op = TDM_SQE_EDGES;
		e.u.edges.task_index = 2;
		e.u.edges.nedges = 2;
		e.u.edges.edges[0] = 0;
		e.u.edges.edges[1] = 1;
		if (v == 0)
			e.u.edges.task_index = 1;
		else if (v == 1)
			e.u.edges.edges[1] = 2;
		else if (v == 2)
			e.u.edges.nedges = TDM_EDGES_PER_SQE + 1;
		else
			e.u.edges.edges[TDM_EDGES_PER_SQE - 1] = 1;
		raw_put(&fx.r, &e);
		e = sqe_end();
		raw_put(&fx.r, &e);
	}
	/* 13: a valid EDGES entry: task 2 after 0 and 1 */
	ck[n] = fx.next_cookie++;
	e = sqe_begin(ck[n++], 3, TDM_GRAPH_TASK_INFO);
	raw_put(&fx.r, &e);
	for (uint32_t t = 0; t < 3; t++) {
		e = sqe_noop(fx.k_noop, t);
		raw_put(&fx.r, &e);
	}
	memset(&e, 0, sizeof(e));
	e.op = TDM_SQE_EDGES;
	e.u.edges.task_index = 2;
	e.u.edges.nedges = 2;
	e.u.edges.edges[1] = 1;
	raw_put(&fx.r, &e);
	e = sqe_end();
	raw_put(&fx.r, &e);
	raw_publish(&fx.r);

	static const struct {
		int status;
		uint32_t task, field;
	} want[] = {
		{ -TDM_EINVAL, 0, TDM_REJECT_POLICY },   { -TDM_EPROTO, 0, TDM_REJECT_FLAGS },
		{ -TDM_EQUOTA, 0, TDM_REJECT_NTASKS },   { -TDM_EPROTO, 2, TDM_REJECT_SEQUENCE },
		{ -TDM_EPROTO, 1, TDM_REJECT_NTASKS },   { -TDM_EPROTO, 1, TDM_REJECT_RESERVED },
		{ -TDM_EPROTO, 1, TDM_REJECT_SEQUENCE }, { 0, 0, TDM_REJECT_NONE },
		{ -TDM_EPROTO, 1, TDM_REJECT_OP },       { -TDM_EPROTO, 3, TDM_REJECT_SEQUENCE },
		{ -TDM_EEDGE, 3, TDM_REJECT_EDGE },      { -TDM_EEDGE, 3, TDM_REJECT_EDGE },
		{ -TDM_EPROTO, 3, TDM_REJECT_RESERVED }, { 0, 0, TDM_REJECT_NONE },
	};
	assert_int_equal(n, sizeof(want) / sizeof(want[0]));
	for (int i = 0; i < n; i++) {
		char what[32];
		snprintf(what, sizeof(what), "graph case %d", i);
		expect_rejected(what, ck[i], want[i].status, want[i].task, want[i].field);
	}
	/* The valid EDGES entry ordered task 2 after tasks 0 and 1. */
	uint64_t end0 = 0, end1 = 0, start2 = 0;
	int infos = 0;
	for (size_t i = 0; i < cq_nlog; i++) {
		const struct tdm_cqe *c = &cq_log[i];
		if (c->op != TDM_CQE_TASK_INFO || c->cookie != ck[13])
			continue;
		infos++;
		assert_int_equal(c->status, 0);
		if (c->task_index == 0)
			end0 = c->end_ns;
		else if (c->task_index == 1)
			end1 = c->end_ns;
		else
			start2 = c->start_ns;
	}
	assert_int_equal(infos, 3);
	assert_true(start2 >= end0 && start2 >= end1);
	/* No stray errors: every entry belonged to a graph. */
	for (size_t i = 0; i < cq_nlog; i++)
		assert_int_not_equal(cq_log[i].op, TDM_CQE_ERROR);
	good_graph_works(42.0f);
	tdmt_test_ok();
}

/* Entries outside any graph each get a TDM_CQE_ERROR. */
static void test_stray_entries(void **state)
{
	(void)state;
	session_up();
	int64_t perr0 = counter("protocol_errors");
	struct tdm_sqe e;
	static const uint16_t ops[] = { TDM_SQE_TASK, TDM_SQE_GRAPH_END, TDM_SQE_EDGES, 0, 0x55,
		                        0xffff };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		e = sqe_noop(fx.k_noop, 0);
		e.op = ops[i];
		raw_put(&fx.r, &e);
	}
	good_graph_works(3.0f);
	size_t nerr = 0;
	for (size_t i = 0; i < cq_nlog; i++) {
		const struct tdm_cqe *c = &cq_log[i];
		if (c->op != TDM_CQE_ERROR)
			continue;
		assert_true(nerr < sizeof(ops) / sizeof(ops[0]));
		assert_int_equal(c->status, -TDM_EPROTO);
		assert_int_equal(c->task_index, ops[nerr]); /* the op it refused */
		bool known = ops[nerr] >= TDM_SQE_TASK && ops[nerr] <= TDM_SQE_GRAPH_END;
		assert_int_equal(c->detail, known ? TDM_REJECT_SEQUENCE : TDM_REJECT_OP);
		nerr++;
	}
	assert_int_equal(nerr, sizeof(ops) / sizeof(ops[0]));
	assert_int_equal(counter("protocol_errors") - perr0, (int64_t)nerr);
	tdmt_test_ok();
}

/* Random bytes as entries. First with an op that is never valid (each is
 * refused on its own), then entirely random, then valid graphs with a few
 * random bytes changed: the session stays usable throughout. */
static void test_random_entries(void **state)
{
	(void)state;
	session_up();
	uint64_t seed = 777;
	struct tdm_sqe e;
	enum { NBAD_OP = 200, NRANDOM = 300, NFLIP = 300 };

	uint16_t ops[NBAD_OP];
	for (int i = 0; i < NBAD_OP; i++) {
		for (size_t b = 0; b < sizeof(e); b += 8) {
			uint64_t x = tdmt_rand(&seed);
			memcpy((char *)&e + b, &x, sizeof(e) - b < 8 ? sizeof(e) - b : 8);
		}
		e.op = ops[i] = (uint16_t)tdmt_rand_range(&seed, TDM_SQE_GRAPH_END + 1, 0xffff);
		raw_put(&fx.r, &e);
		if (i % 32 == 31) {
			raw_publish(&fx.r);
			raw_reap(&fx.r); /* keep up: errors are not kept without limit */
		}
	}
	good_graph_works(1.0f);
	size_t nerr = 0;
	for (size_t i = 0; i < cq_nlog; i++) {
		if (cq_log[i].op != TDM_CQE_ERROR)
			continue;
		assert_true(nerr < NBAD_OP);
		assert_int_equal(cq_log[i].status, -TDM_EPROTO);
		assert_int_equal(cq_log[i].detail, TDM_REJECT_OP);
		assert_int_equal(cq_log[i].task_index, ops[nerr]);
		nerr++;
	}
	assert_int_equal(nerr, NBAD_OP);

	/* Entirely random entries, then an END to close anything they left
	 * open or skipping. */
	for (int i = 0; i < NRANDOM; i++) {
		for (size_t b = 0; b < sizeof(e); b += 8) {
			uint64_t x = tdmt_rand(&seed);
			memcpy((char *)&e + b, &x, sizeof(e) - b < 8 ? sizeof(e) - b : 8);
		}
		if (i % 4 == 0) /* a quarter with a known op */
			e.op = (uint16_t)tdmt_rand_range(&seed, 1, 4);
		raw_put(&fx.r, &e);
		if (i % 32 == 31) {
			raw_publish(&fx.r);
			raw_reap(&fx.r);
		}
	}
	e = sqe_end();
	raw_put(&fx.r, &e);
	cq_nlog = 0;
	good_graph_works(2.0f);

	/* Valid graphs with 1 to 4 random bytes of the task changed. */
	uint64_t cookies[NFLIP];
	for (int i = 0; i < NFLIP; i++) {
		cookies[i] = fx.next_cookie++;
		e = sqe_begin(cookies[i], 1, 0);
		raw_put(&fx.r, &e);
		e = sqe_fill(fx.k_fill, 0, fx.target, 0, BUF_BYTES, 5.0f);
		int flips = (int)tdmt_rand_range(&seed, 1, 4);
		for (int f = 0; f < flips; f++) {
			size_t at = tdmt_rand_range(&seed, 0, sizeof(e) - 1);
			((unsigned char *)&e)[at] ^= (unsigned char)tdmt_rand_range(&seed, 1, 255);
		}
		/* A changed op could start another graph or end this one: keep
		 * the op so that each graph gets exactly one answer. */
		e.op = TDM_SQE_TASK;
		raw_put(&fx.r, &e);
		e = sqe_end();
		raw_put(&fx.r, &e);
		if (i % 8 == 7) {
			raw_publish(&fx.r);
			raw_reap(&fx.r);
		}
	}
	raw_publish(&fx.r);
	int accepted = 0, rejected = 0;
	for (int i = 0; i < NFLIP; i++) {
		size_t at = raw_wait_done(&fx.r, cookies[i]);
		int st = cq_log[at].status;
		assert_true(st <= 0 && st > -TDM_E__COUNT);
		assert_true(cq_log[at].detail < TDM_REJECT__COUNT);
		if (st == 0)
			accepted++;
		else
			rejected++;
	}
	assert_true(rejected > NFLIP / 2);
	good_graph_works(3.0f);
	(void)accepted;
	tdmt_test_ok();
}

/* ---- disconnects ---------------------------------------------------------- */

/* A fresh raw session, a bad move, then EOF and protocol_errors + 1.
 * The daemon checks the completion head when it next posts a completion,
 * so after moving it the client submits a graph (or has one in flight):
 * its completion must never be written. */
enum ring_abuse { SQ_TAIL_BACK, SQ_TAIL_BEYOND, CQ_HEAD_BEYOND, CQ_HEAD_BACK, CQ_HEAD_IN_FLIGHT };

static void put_graph(struct tdmt_raw *r, uint64_t cookie, uint32_t kernel, int64_t spin_us)
{
	struct tdm_sqe e = sqe_begin(cookie, 1, 0);
	raw_put(r, &e);
	e = sqe_noop(kernel, 0);
	if (spin_us) {
		e.u.task.nscalars = 1;
		e.u.task.scalar_types[0] = TDM_SCALAR_I64;
		e.u.task.scalars[0].i64 = spin_us;
	}
	raw_put(r, &e);
	e = sqe_end();
	raw_put(r, &e);
	raw_publish(r);
}

static void ring_abuse(enum ring_abuse how)
{
	struct tdmt_raw r;
	raw_connect(&r);
	uint32_t noop = raw_lookup(&r, "noop"), spin = raw_lookup(&r, "spin");
	/* One valid graph first, so the indices are not all zero. */
	put_graph(&r, 1, noop, 0);
	uint64_t deadline = tdmt_now_ns() + (uint64_t)IO_TIMEOUT_MS * 1000000ull;
	while (__atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE) == 0 ||
	       __atomic_load_n(&r.hdr->sq_head, __ATOMIC_ACQUIRE) != 3)
		assert_true(tdmt_now_ns() < deadline);
	raw_reap(&r);
	int64_t perr0 = counter("protocol_errors");
	uint32_t head = __atomic_load_n(&r.hdr->sq_head, __ATOMIC_ACQUIRE);
	switch (how) {
	case SQ_TAIL_BACK: __atomic_store_n(&r.hdr->sq_tail, head - 1, __ATOMIC_SEQ_CST); break;
	case SQ_TAIL_BEYOND:
		__atomic_store_n(&r.hdr->sq_tail, head + SQ_ENTRIES + 1, __ATOMIC_SEQ_CST);
		break;
	case CQ_HEAD_BEYOND:
		__atomic_store_n(&r.hdr->cq_head, r.cq_head + 10, __ATOMIC_SEQ_CST);
		break;
	case CQ_HEAD_BACK:
		__atomic_store_n(&r.hdr->cq_head, r.cq_head - CQ_ENTRIES - 1, __ATOMIC_SEQ_CST);
		break;
	case CQ_HEAD_IN_FLIGHT:
		put_graph(&r, 2, spin, 50000);
		while (__atomic_load_n(&r.hdr->sq_head, __ATOMIC_ACQUIRE) != 6)
			assert_true(tdmt_now_ns() < deadline);
		__atomic_store_n(&r.hdr->cq_head, r.cq_head + 1000, __ATOMIC_SEQ_CST);
		break;
	}
	raw_bell(&r);
	if (how == CQ_HEAD_BEYOND || how == CQ_HEAD_BACK)
		put_graph(&r, 3, noop, 0);
	bool eof = wait_eof(r.sock, IO_TIMEOUT_MS);
	uint32_t cq_tail = __atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE);
	raw_close(&r);
	assert_true(eof);
	assert_true(counter("protocol_errors") > perr0);
	assert_int_equal(cq_tail, 1); /* nothing was written past a bad head */
}

static void test_sq_tail_backwards(void **state)
{
	(void)state;
	ring_abuse(SQ_TAIL_BACK);
	tdmt_test_ok();
}

static void test_sq_tail_beyond(void **state)
{
	(void)state;
	ring_abuse(SQ_TAIL_BEYOND);
	tdmt_test_ok();
}

static void test_cq_head_beyond(void **state)
{
	(void)state;
	ring_abuse(CQ_HEAD_BEYOND);
	tdmt_test_ok();
}

static void test_cq_head_backwards(void **state)
{
	(void)state;
	ring_abuse(CQ_HEAD_BACK);
	tdmt_test_ok();
}

static void test_cq_head_beyond_in_flight(void **state)
{
	(void)state;
	ring_abuse(CQ_HEAD_IN_FLIGHT);
	tdmt_test_ok();
}

/* One violation, one protocol error: many clients each move their
 * submission tail out of the ring once; the counter must rise by exactly
 * their number (idle workers all wake on the doorbell and race to run
 * intake for the same session). */
static void test_protocol_errors_counted_once(void **state)
{
	(void)state;
	enum { N = 1000 };
	int64_t perr0 = counter("protocol_errors");
	for (int i = 0; i < N; i++) {
		struct tdmt_raw r;
		raw_connect(&r);
		uint32_t noop = raw_lookup(&r, "noop");
		/* a graph first: its completion keeps the workers polling */
		put_graph(&r, 1, noop, 0);
		uint64_t deadline = tdmt_now_ns() + (uint64_t)IO_TIMEOUT_MS * 1000000ull;
		while (__atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE) == 0)
			assert_true(tdmt_now_ns() < deadline);
		__atomic_store_n(&r.hdr->sq_tail, 3 + SQ_ENTRIES + 1 + (uint32_t)i,
		                 __ATOMIC_SEQ_CST);
		raw_bell(&r);
		bool eof = wait_eof(r.sock, IO_TIMEOUT_MS);
		raw_close(&r);
		assert_true(eof);
	}
	int64_t perr = counter("protocol_errors") - perr0;
	if (perr != N)
		fail_msg("%d clients broke the protocol once each; protocol_errors rose by %lld", N,
		         (long long)perr);
	tdmt_test_ok();
}

/* Fills the submission ring with e as far as there is room; publishes. */
static uint32_t fill_sq(struct tdmt_raw *r, const struct tdm_sqe *e)
{
	uint32_t head = __atomic_load_n(&r->hdr->sq_head, __ATOMIC_ACQUIRE), n = 0;
	while (r->sq_tail - head < r->sq_entries) {
		r->sq[r->sq_tail & (r->sq_entries - 1)] = *e;
		r->sq_tail++;
		n++;
	}
	raw_publish(r);
	return n;
}

/* A client that makes errors and never reaps them: once its completion
 * ring is full, the daemon stops reading its entries, so what the daemon
 * holds for it stays bounded however fast it submits; once it reaps, the
 * daemon goes on where it stopped, and every entry is answered. */
static void test_unreaped_errors(void **state)
{
	(void)state;
	struct tdmt_raw r;
	raw_connect(&r);
	struct tdm_sqe e;
	memset(&e, 0, sizeof(e));
	e.op = 0x99;
	uint64_t deadline = tdmt_now_ns() + (uint64_t)IO_TIMEOUT_MS * 1000000ull;
	uint32_t sent = fill_sq(&r, &e), last_head = UINT32_MAX;
	uint64_t still_since = tdmt_now_ns();
	/* Keep submitting until the daemon stops taking entries for 300 ms. */
	while (tdmt_now_ns() - still_since < 300000000ull) {
		assert_true(tdmt_now_ns() < deadline);
		uint32_t head = __atomic_load_n(&r.hdr->sq_head, __ATOMIC_ACQUIRE);
		if (head != last_head) {
			last_head = head;
			still_since = tdmt_now_ns();
		}
		sent += fill_sq(&r, &e);
		tdmt_sleep_ms(5);
	}
	uint32_t cq_tail = __atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE);
	assert_false(wait_eof(r.sock, 10));
	assert_int_equal(cq_tail, CQ_ENTRIES); /* the ring is full */
	assert_int_equal(r.sq_tail - last_head, SQ_ENTRIES); /* and so is the other */
	/* Entries taken but not answered yet: a handful, not thousands. */
	if (last_head - cq_tail > 16)
		fail_msg("the daemon took %u entries it could not answer",
		         (unsigned)(last_head - cq_tail));
	/* Reap everything as it comes, ringing after each pass: the daemon
	 * answers every entry sent. */
	uint32_t reaped = 0;
	while (reaped < sent) {
		assert_true(tdmt_now_ns() < deadline);
		uint32_t tail = __atomic_load_n(&r.hdr->cq_tail, __ATOMIC_ACQUIRE);
		for (; r.cq_head != tail; r.cq_head++, reaped++)
			assert_int_equal(r.cq[r.cq_head & (r.cq_entries - 1)].op, TDM_CQE_ERROR);
		__atomic_store_n(&r.hdr->cq_head, r.cq_head, __ATOMIC_SEQ_CST);
		raw_bell(&r);
		tdmt_sleep_ms(1);
	}
	assert_int_equal(reaped, sent);
	assert_false(wait_eof(r.sock, 10));
	raw_close(&r);
	tdmt_test_ok();
}

static void expect_eof_after(const void *bytes, size_t n, bool after_hello, const char *what)
{
	struct tdmt_raw r;
	if (after_hello) {
		raw_connect(&r);
	} else {
		memset(&r, 0, sizeof(r));
		r.bell = -1;
		r.sock = raw_socket();
	}
	send_bytes(r.sock, bytes, n);
	bool eof = wait_eof(r.sock, IO_TIMEOUT_MS);
	raw_close(&r);
	if (!eof)
		fail_msg("%s: the daemon kept the connection", what);
}

static void test_bad_socket_messages(void **state)
{
	(void)state;
	struct {
		struct tdm_msg_hdr h;
		unsigned char p[TDM_MSG_MAX_PAYLOAD + 8];
	} m;
	int64_t perr0 = counter("protocol_errors");
	memset(&m, 0, sizeof(m));

	/* oversize payload, after hello and before */
	m.h.type = TDM_MSG_BUF_ALLOC;
	m.h.length = TDM_MSG_MAX_PAYLOAD + 1;
	expect_eof_after(&m, sizeof(m.h) + m.h.length, true, "oversize message");
	m.h.type = TDM_MSG_HELLO;
	m.h.length = UINT32_MAX;
	expect_eof_after(&m, sizeof(m.h) + 64, false, "oversize hello");
	assert_int_equal(counter("protocol_errors") - perr0, 2);

	/* unknown type after hello */
	m.h.type = 999;
	m.h.length = 16;
	expect_eof_after(&m, sizeof(m.h) + 16, true, "unknown message type");
	/* something other than hello first */
	m.h.type = TDM_MSG_BUF_ALLOC;
	m.h.length = sizeof(struct tdm_buf_alloc_req);
	expect_eof_after(&m, sizeof(m.h) + m.h.length, false, "request before hello");
	/* a second hello */
	struct tdm_hello hello = { TDM_WIRE_MAGIC, TDM_WIRE_VERSION, TDM_ROLE_CLIENT, 0 };
	m.h.type = TDM_MSG_HELLO;
	m.h.length = sizeof(hello);
	memcpy(m.p, &hello, sizeof(hello));
	expect_eof_after(&m, sizeof(m.h) + m.h.length, true, "second hello");
	/* hello of the wrong length, with a bad magic */
	m.h.length = sizeof(hello) - 4;
	expect_eof_after(&m, sizeof(m.h) + m.h.length, false, "short hello");
	hello.magic = 0x12345678;
	memcpy(m.p, &hello, sizeof(hello));
	m.h.length = sizeof(hello);
	expect_eof_after(&m, sizeof(m.h) + m.h.length, false, "hello with a bad magic");
	/* requests of the wrong size */
	m.h.type = TDM_MSG_BUF_ALLOC;
	m.h.length = 8;
	expect_eof_after(&m, sizeof(m.h) + 8, true, "short alloc request");
	m.h.type = TDM_MSG_KERNEL_LOOKUP;
	m.h.length = 4;
	expect_eof_after(&m, sizeof(m.h) + 4, true, "short kernel lookup");
	m.h.type = TDM_MSG_CTL_STATUS;
	m.h.length = 4;
	expect_eof_after(&m, sizeof(m.h) + 4, true, "status with a payload");
	/* random garbage, before and after hello */
	uint64_t seed = 99;
	for (int i = 0; i < 8; i++) {
		unsigned char junk[512];
		for (size_t b = 0; b < sizeof(junk); b++)
			junk[b] = (unsigned char)tdmt_rand(&seed);
		/* keep the length sane half of the time, so that the type is judged */
		if (i % 2) {
			uint32_t len = (uint32_t)tdmt_rand_range(&seed, 0, 64);
			memcpy(junk + 4, &len, sizeof(len));
			uint32_t type = (uint32_t)tdmt_rand_range(&seed, 100, UINT32_MAX);
			memcpy(junk, &type, sizeof(type));
		}
		expect_eof_after(junk, sizeof(junk), i >= 4, "random bytes");
	}
	/* a control connection may not allocate */
	struct tdmt_raw r;
	assert_int_equal(raw_hello(&r, TDM_ROLE_CONTROL), 0);
	struct tdm_buf_alloc_req req = { .bytes = 4096 };
	send_msg(r.sock, TDM_MSG_BUF_ALLOC, &req, sizeof(req));
	bool eof = wait_eof(r.sock, IO_TIMEOUT_MS);
	raw_close(&r);
	assert_true(eof);
	tdmt_test_ok();
}

/* Hellos refused with a reason, and requests refused without a disconnect. */
static void test_refused_requests(void **state)
{
	(void)state;
	struct tdmt_raw r;
	struct tdm_hello hello = { TDM_WIRE_MAGIC, TDM_WIRE_VERSION + 1, TDM_ROLE_CLIENT, 0 };
	struct tdm_hello_reply hr;

	static const struct {
		uint32_t version, role, flags;
		int status;
	} hellos[] = {
		{ TDM_WIRE_VERSION + 1, TDM_ROLE_CLIENT, 0, -TDM_EVERSION },
		{ TDM_WIRE_VERSION, TDM_ROLE_CLIENT, 1, -TDM_EPROTO },
		{ TDM_WIRE_VERSION, 7, 0, -TDM_EPROTO },
	};
	for (size_t i = 0; i < sizeof(hellos) / sizeof(hellos[0]); i++) {
		int fd = raw_socket();
		hello.version = hellos[i].version;
		hello.role = hellos[i].role;
		hello.flags = hellos[i].flags;
		send_msg(fd, TDM_MSG_HELLO, &hello, sizeof(hello));
		assert_int_equal(recv_msg(fd, TDM_MSG_HELLO_REPLY, &hr, sizeof(hr), NULL, 0), 0);
		assert_int_equal(hr.status, hellos[i].status);
		assert_true(wait_eof(fd, IO_TIMEOUT_MS));
		close(fd);
	}

	/* A hello sent one byte at a time is put together. */
	memset(&r, 0, sizeof(r));
	r.sock = raw_socket();
	struct {
		struct tdm_msg_hdr h;
		struct tdm_hello b;
	} msg = { { TDM_MSG_HELLO, sizeof(struct tdm_hello) },
		  { TDM_WIRE_MAGIC, TDM_WIRE_VERSION, TDM_ROLE_CONTROL, 0 } };
	for (size_t i = 0; i < sizeof(msg); i++) {
		send_bytes(r.sock, (char *)&msg + i, 1);
		if (i % 8 == 0)
			tdmt_sleep_ms(1);
	}
	assert_int_equal(recv_msg(r.sock, TDM_MSG_HELLO_REPLY, &hr, sizeof(hr), NULL, 0), 0);
	assert_int_equal(hr.status, 0);
	close(r.sock);

	/* Requests with bad values get an error status and the session goes on. */
	raw_connect(&r);
	struct tdm_buf_alloc_req req;
	struct tdm_buf_alloc_reply rep;
	int fd;
	static const struct tdm_buf_alloc_req bad_allocs[] = {
		{ .bytes = 4096, .request = 1 }, /* a request's KV that is not TDM_BUF_KV */
		{ .bytes = 0 },
		{ .bytes = 4096, .flags = 0x100 },
		{ .bytes = UINT64_MAX },
	};
	static const int bad_status[] = { -TDM_EINVAL, -TDM_EINVAL, -TDM_EINVAL, -TDM_EQUOTA };
	for (size_t i = 0; i < 4; i++) {
		req = bad_allocs[i];
		send_msg(r.sock, TDM_MSG_BUF_ALLOC, &req, sizeof(req));
		assert_int_equal(
		        recv_msg(r.sock, TDM_MSG_BUF_ALLOC_REPLY, &rep, sizeof(rep), &fd, 1), 0);
		assert_int_equal(rep.status, bad_status[i]);
	}
	struct tdm_buf_free_req fr = { .handle = 0x12345 };
	struct tdm_status_reply sr;
	send_msg(r.sock, TDM_MSG_BUF_FREE, &fr, sizeof(fr));
	assert_int_equal(recv_msg(r.sock, TDM_MSG_BUF_FREE_REPLY, &sr, sizeof(sr), NULL, 0), 0);
	assert_int_equal(sr.status, -TDM_EHANDLE);
	fr.handle = 0;
	fr.reserved = 3;
	send_msg(r.sock, TDM_MSG_BUF_FREE, &fr, sizeof(fr));
	assert_int_equal(recv_msg(r.sock, TDM_MSG_BUF_FREE_REPLY, &sr, sizeof(sr), NULL, 0), 0);
	assert_int_equal(sr.status, -TDM_EPROTO);
	struct tdm_kernel_lookup_req kr;
	struct tdm_kernel_lookup_reply krep;
	memset(&kr, 'x', sizeof(kr)); /* no NUL */
	send_msg(r.sock, TDM_MSG_KERNEL_LOOKUP, &kr, sizeof(kr));
	assert_int_equal(recv_msg(r.sock, TDM_MSG_KERNEL_REPLY, &krep, sizeof(krep), NULL, 0), 0);
	assert_int_equal(krep.status, -TDM_EINVAL);
	memset(&kr, 0, sizeof(kr));
	strcpy(kr.name, "no_such_kernel");
	send_msg(r.sock, TDM_MSG_KERNEL_LOOKUP, &kr, sizeof(kr));
	assert_int_equal(recv_msg(r.sock, TDM_MSG_KERNEL_REPLY, &krep, sizeof(krep), NULL, 0), 0);
	assert_int_equal(krep.status, -TDM_EKERNEL);
	/* still a working session */
	uint32_t h;
	float *p;
	raw_alloc(&r, 4096, &h, &p);
	assert_true(raw_lookup(&r, "fill") != raw_lookup(&r, "noop"));
	munmap(p, 4096);
	raw_close(&r);
	tdmt_test_ok();
}

/* After all of it: the daemon is alive, a libtandem client is served
 * correctly, and nothing is left of the raw sessions. */
static void test_daemon_still_serves(void **state)
{
	(void)state;
	raw_close(&fx.r);
	assert_true(tdmt_daemon_alive(&daemon_));
	tdm_client *c;
	struct tdmt_kernels k;
	tdm_buffer hx, hy;
	float *x, *y;
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	assert_int_equal(tdmt_lookup_kernels(c, &k), 0);
	assert_int_equal(tdm_buffer_alloc(c, 1 << 16, 0, &hx, (void **)&x), 0);
	assert_int_equal(tdm_buffer_alloc(c, 1 << 16, 0, &hy, (void **)&y), 0);
	tdm_graph *g = tdm_graph_new(c);
	assert_non_null(g);
	assert_int_equal(tdmt_add_fill(g, &k, hx, 0, 0, 1.5f, NULL), 0);
	assert_int_equal(tdmt_add_fill(g, &k, hy, 0, 0, 2.0f, NULL), 0);
	assert_int_equal(tdmt_add_axpy(g, &k, hx, hy, 4.0f, NULL), 0);
	assert_int_equal(tdm_graph_submit(g), 0);
	int rc = tdm_wait(g, 30000 * MS);
	size_t bad = 0;
	for (int i = 0; rc == 0 && i < (1 << 14); i++)
		bad += y[i] != 8.0f;
	tdm_graph_free(g);
	tdm_disconnect(c);
	assert_int_equal(rc, 0);
	assert_int_equal(bad, 0);
	const char *which = NULL;
	int64_t v = 0;
	if (tdmt_wait_counters_zero(daemon_.sock, tdmt_baseline_counters, 10000, &which, &v))
		fail_msg("counter %s stays at %lld", which, (long long)v);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, tdmt_test_teardown)

int main(void)
{
	static const struct CMUnitTest tests[] = {
		T(test_rejected_tasks),
		T(test_rejected_graphs),
		T(test_stray_entries),
		T(test_random_entries),
		T(test_sq_tail_backwards),
		T(test_sq_tail_beyond),
		T(test_cq_head_beyond),
		T(test_cq_head_backwards),
		T(test_cq_head_beyond_in_flight),
		T(test_protocol_errors_counted_once),
		T(test_unreaped_errors),
		T(test_bad_socket_messages),
		T(test_refused_requests),
		T(test_daemon_still_serves),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("malformed", tests, group_setup, group_teardown);
}
