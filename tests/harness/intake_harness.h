/* A session without a socket or an engine, for intake unit tests and the
 * intake fuzz target: entries are written straight into its ring, accepted
 * graphs are collected instead of run. */
#ifndef TDM_TESTS_INTAKE_HARNESS_H
#define TDM_TESTS_INTAKE_HARNESS_H

#include <string.h>
#include <unistd.h>

#include "daemon/intake.h"
#include "daemon/session.h"
#include "tandem.h"

#define HARNESS_MAX_GRAPHS 256
#define HARNESS_BUFFERS 3
#define HARNESS_BUFFER_BYTES 4096

struct harness {
	struct daemon_config cfg;
	struct daemon_counters counters;
	_Atomic bool draining;
	struct session_env env;
	struct session *s;
	struct engine_graph *accepted[HARNESS_MAX_GRAPHS];
	size_t naccepted;
	uint32_t handle[HARNESS_BUFFERS];
};

static void harness_submit(void *ctx, struct engine_graph *g)
{
	struct harness *h = ctx;
	if (h->naccepted < HARNESS_MAX_GRAPHS) {
		h->accepted[h->naccepted++] = g;
		return;
	}
	struct dgraph *dg = g->owner;
	session_graph_done(dg->s, dg);
}

static inline int harness_init(struct harness *h, uint32_t sq_entries, uint32_t cq_entries)
{
	memset(h, 0, sizeof(*h));
	config_defaults(&h->cfg);
	h->cfg.sq_entries = sq_entries;
	h->cfg.cq_entries = cq_entries;
	h->env.cfg = &h->cfg;
	h->env.counters = &h->counters;
	h->env.submit = harness_submit;
	h->env.submit_ctx = h;
	h->env.draining = &h->draining;
	int err = session_create(&h->env, 1, (uint32_t)getuid(), NULL, &h->s);
	if (err)
		return err;
	for (int i = 0; i < HARNESS_BUFFERS; i++) {
		int fd;
		err = session_buffer_alloc(h->s, HARNESS_BUFFER_BYTES, 0, &h->handle[i], &fd);
		if (err)
			return err;
		close(fd);
	}
	return 0;
}

/* Publishes one entry; returns false when the ring is full. */
static inline bool harness_push(struct harness *h, const struct tdm_sqe *e)
{
	struct session *s = h->s;
	uint32_t tail = s->hdr->sq_tail;
	if (tail - s->hdr->sq_head >= s->sq_entries)
		return false;
	s->sq[tail & (s->sq_entries - 1)] = *e;
	__atomic_store_n(&s->hdr->sq_tail, tail + 1, __ATOMIC_RELEASE);
	return true;
}

static inline int harness_run(struct harness *h)
{
	uint32_t n;
	return intake_run(h->s, &n);
}

/* Takes up to max completions out of the ring. */
static inline size_t harness_reap(struct harness *h, struct tdm_cqe *out, size_t max)
{
	struct session *s = h->s;
	size_t n = 0;
	while (n < max && s->hdr->cq_head != s->hdr->cq_tail) {
		out[n++] = s->cq[s->hdr->cq_head & (s->cq_entries - 1)];
		s->hdr->cq_head++;
	}
	return n;
}

/* Completes every accepted graph (posting GRAPH_DONE) and forgets them. */
static inline void harness_finish_all(struct harness *h)
{
	for (size_t i = 0; i < h->naccepted; i++)
		session_graph_done(h->s, h->accepted[i]->owner);
	h->naccepted = 0;
}

static inline void harness_fini(struct harness *h)
{
	harness_finish_all(h);
	session_close(h->s);
	session_unref(h->s);
}

/* Entry builders. */
static inline struct tdm_sqe sqe_begin(uint64_t cookie, uint32_t ntasks)
{
	struct tdm_sqe e = { .op = TDM_SQE_GRAPH_BEGIN };
	e.u.begin.cookie = cookie;
	e.u.begin.ntasks = ntasks;
	return e;
}

static inline struct tdm_sqe sqe_end(void)
{
	return (struct tdm_sqe){ .op = TDM_SQE_GRAPH_END };
}

static inline struct tdm_sqe sqe_task(uint32_t index, const char *kernel)
{
	struct tdm_sqe e = { .op = TDM_SQE_TASK };
	e.u.task.task_index = index;
	e.u.task.kernel_id = (uint32_t)kernel_lookup(kernel);
	return e;
}

/* fill(buffer, value) over [off, off + len). */
static inline struct tdm_sqe sqe_fill(uint32_t index, uint32_t handle, uint64_t off, uint64_t len)
{
	struct tdm_sqe e = sqe_task(index, "fill");
	e.u.task.nargs = 1;
	e.u.task.args[0] = (struct tdm_wire_arg){
		.handle = handle, .mode = TDM_W, .offset = off, .length = len
	};
	e.u.task.nscalars = 1;
	e.u.task.scalar_types[0] = TDM_SCALAR_F32;
	e.u.task.scalars[0].f32 = 1.0f;
	return e;
}

/* axpy(x, y): reads x, reads and writes y. */
static inline struct tdm_sqe sqe_axpy(uint32_t index, uint32_t x, uint32_t y)
{
	struct tdm_sqe e = sqe_task(index, "axpy");
	e.u.task.nargs = 2;
	e.u.task.args[0] =
	        (struct tdm_wire_arg){ .handle = x, .mode = TDM_R, .length = HARNESS_BUFFER_BYTES };
	e.u.task.args[1] = (struct tdm_wire_arg){ .handle = y,
		                                  .mode = TDM_RW,
		                                  .length = HARNESS_BUFFER_BYTES };
	e.u.task.nscalars = 1;
	e.u.task.scalar_types[0] = TDM_SCALAR_F32;
	e.u.task.scalars[0].f32 = 2.0f;
	return e;
}

/* cmocka fixtures: a harness with 64-entry rings as the test's state (one
 * static harness: for tests run one at a time). */
static inline int harness_setup(void **state)
{
	static struct harness h;
	if (harness_init(&h, 64, 64) != 0)
		return -1;
	*state = &h;
	return 0;
}

static inline int harness_teardown(void **state)
{
	harness_fini(*state);
	return 0;
}

#endif
