/* Intake: consume a session's submission ring. Each entry is copied once out
 * of shared memory, then every field of the copy is validated. A graph is
 * accepted whole or rejected whole: nothing of a rejected graph runs. */
#include "daemon/intake.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "tandem.h"

#define INTAKE_PUBLISH_EVERY 256 /* free ring space for a waiting client */
#define EDGES_PER_TASK_BUDGET 32 /* explicit + implicit edges, on average */

/* Whether n bytes of the daemon's own copy are all zero. Every entry's
 * unused bytes (a few hundred) pass through here: OR them 8 at a time,
 * without a branch per byte (byte by byte it was ~4k instructions a graph,
 * half of the intake of a one-task graph). */
static bool all_zero(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t acc = 0;
	size_t i = 0;
	for (; i + sizeof(acc) <= n; i += sizeof(acc)) {
		uint64_t w;
		memcpy(&w, c + i, sizeof(w));
		acc |= w;
	}
	for (; i < n; i++)
		acc |= c[i];
	return acc == 0;
}

static void post_graph_status(struct session *s, uint64_t cookie, int status, uint32_t task,
                              uint32_t field)
{
	struct tdm_cqe c = {
		.op = TDM_CQE_GRAPH_DONE,
		.status = status,
		.cookie = cookie,
		.task_index = task,
		.detail = field,
	};
	s->intake_errors++;
	atomic_fetch_add(&s->env->counters->graphs_rejected, 1);
	if (field < TDM_REJECT__COUNT)
		atomic_fetch_add(&s->env->counters->rejected_by_field[field], 1);
	session_post_cqe(s, &c);
}

/* Rejects the graph being built; its remaining entries are skipped. */
static void reject(struct session *s, int status, uint32_t field)
{
	struct dgraph *g = s->building;
	log_debug("session %u: graph %llu rejected at task %u: %s (%s)", s->id,
	          (unsigned long long)g->g.cookie, s->build.ntasks, tdm_strerror(status),
	          tdm_reject_field_name(field));
	post_graph_status(s, g->g.cookie, status, s->build.ntasks, field);
	s->building = NULL;
	s->skipping = true;
	dgraph_destroy(g);
}

static void stray_entry(struct session *s, uint16_t op, uint32_t field)
{
	struct tdm_cqe c = { .op = TDM_CQE_ERROR, .status = -TDM_EPROTO, .detail = field };
	c.task_index = op;
	s->intake_errors++;
	atomic_fetch_add(&s->env->counters->protocol_errors, 1);
	session_post_cqe(s, &c);
}

static void begin_graph(struct session *s, const struct tdm_sqe *e)
{
	const struct tdm_sqe_graph_begin *b = &e->u.begin;
	const struct daemon_config *cfg = s->env->cfg;
	uint32_t field = TDM_REJECT_NONE;
	int status = 0;

	if (e->reserved || e->reserved2 ||
	    !all_zero(e->u.raw + sizeof(*b), sizeof(e->u.raw) - sizeof(*b)))
		status = -TDM_EPROTO, field = TDM_REJECT_RESERVED;
	else if (b->flags & ~TDM_GRAPH_FLAGS_ALL)
		status = -TDM_EPROTO, field = TDM_REJECT_FLAGS;
	else if (b->policy >= TDM_POLICY_HINT_COUNT)
		status = -TDM_EINVAL, field = TDM_REJECT_POLICY;
	else if (atomic_load(s->env->draining))
		status = -TDM_ESHUTDOWN;
	else if (b->ntasks > cfg->max_tasks_per_graph)
		status = -TDM_EQUOTA, field = TDM_REJECT_NTASKS;
	else if ((uint64_t)atomic_load(&s->tasks_in_flight) + b->ntasks >
	                 cfg->max_tasks_in_flight ||
	         atomic_load(&s->graphs_in_flight) >= cfg->max_graphs_in_flight)
		status = -TDM_EQUOTA, field = TDM_REJECT_QUOTA;
	if (status) {
		post_graph_status(s, b->cookie, status, 0, field);
		s->skipping = true;
		return;
	}

	struct dgraph *g = calloc(1, sizeof(*g));
	if (!g) {
		post_graph_status(s, b->cookie, -TDM_ENOMEM, 0, TDM_REJECT_NONE);
		s->skipping = true;
		return;
	}
	session_ref(s);
	g->s = s;
	g->g.flow = &s->flow;
	g->g.owner = g;
	g->g.cookie = b->cookie;
	g->g.flags = b->flags;
	g->g.priority = b->priority;
	g->g.policy_hint = (uint8_t)b->policy;
	g->g.deadline_ns = b->deadline_ns;
	g->g.ntasks = b->ntasks;
	uint64_t budget = (uint64_t)EDGES_PER_TASK_BUDGET * b->ntasks + 1024;
	graph_build_reset(&s->build, b->ntasks,
	                  budget > UINT32_MAX ? UINT32_MAX : (uint32_t)budget);
	g->reserved_tasks = b->ntasks;
	atomic_fetch_add(&s->graphs_in_flight, 1);
	atomic_fetch_add(&s->graphs_unposted, 1);
	atomic_fetch_add(&s->tasks_in_flight, b->ntasks);
	atomic_fetch_add(&s->env->counters->session_tasks_in_flight, b->ntasks);
	s->building = g;
	s->skipping = false;
}

/* Task t accesses argument a's range of buffer b: its implicit
 * dependencies (graph/build.h), and one reference per distinct buffer of
 * the graph. 0, -TDM_EQUOTA (the graph's edge budget) or -TDM_ENOMEM. */
static int track_buffer(struct session *s, struct buffer *b, const struct tdm_wire_arg *a,
                        uint32_t t)
{
	struct dgraph *g = s->building;
	int first = graph_build_access(&s->build, t, b->handle, a->offset, a->length, a->mode);
	if (first <= 0)
		return first;
	if (g->nbufs == g->bufs_cap) {
		uint32_t ncap = g->bufs_cap ? g->bufs_cap * 2 : 8;
		struct buffer **n = realloc(g->bufs, ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		g->bufs = n;
		g->bufs_cap = ncap;
	}
	atomic_fetch_add(&b->refs, 1);
	g->bufs[g->nbufs++] = b;
	return 0;
}

/* [limits] max_task_ms against the least time the task can take: its
 * features priced on the fastest device that runs its kernel, with the
 * calibrated roofline, not the learned models, which a client's own tasks
 * teach and which extrapolate to sizes never run: an admission decision must
 * be the same for every client and every day. The roofline is below what a
 * kernel takes (except moe_expert, priced as if every token were routed), so
 * a task is refused only when no device could run it within the limit. */
static uint32_t within_budget(struct session *s, const struct kernel_def *k,
                              const struct kernel_features *f, int *status)
{
	uint32_t max_ms = s->env->cfg->max_task_ms;
	if (!max_ms || !s->env->engine)
		return TDM_REJECT_NONE;
	if (engine_task_floor_ns(s->env->engine, k->id, f) > (double)max_ms * 1e6) {
		*status = -TDM_EQUOTA;
		return TDM_REJECT_COST;
	}
	return TDM_REJECT_NONE;
}

/* Validates a task entry into *task; returns the reject field or NONE. */
static uint32_t validate_task(struct session *s, const struct tdm_sqe *e, uint32_t index,
                              struct engine_task *task, struct buffer **bufs, int *status)
{
	const struct tdm_sqe_task *t = &e->u.task;
	const struct kernel_def *k;
	unsigned nacc = 0;

	*status = -TDM_EPROTO;
	if (e->reserved || e->reserved2 || t->reserved0)
		return TDM_REJECT_RESERVED;
	if (t->task_index != index)
		return TDM_REJECT_TASK_INDEX;
	k = kernel_by_id(t->kernel_id);
	if (!k || (s->env->engine && !engine_kernel_available(s->env->engine, k))) {
		*status = -TDM_EKERNEL;
		return TDM_REJECT_KERNEL;
	}
	*status = -TDM_EARITY;
	if (t->nargs != k->nargs || t->nscalars != k->nscalars)
		return TDM_REJECT_ARITY;
	if (t->nedges > TDM_TASK_INLINE_EDGES) {
		*status = -TDM_EEDGE;
		return TDM_REJECT_EDGE;
	}
	memset(task, 0, sizeof(*task));
	task->kernel = k;
	task->index = index;
	task->priority = t->priority;
	task->call.nargs = t->nargs;
	for (unsigned i = 0; i < TDM_MAX_ARGS; i++) {
		const struct tdm_wire_arg *a = &t->args[i];
		if (i >= t->nargs) {
			if (!all_zero(a, sizeof(*a))) {
				*status = -TDM_EPROTO;
				return TDM_REJECT_RESERVED;
			}
			continue;
		}
		if (!all_zero(a->reserved, sizeof(a->reserved))) {
			*status = -TDM_EPROTO;
			return TDM_REJECT_RESERVED;
		}
		if (a->mode != k->arg_modes[i] &&
		    !(a->mode == TDM_ACC && (k->acc_args >> i & 1) && !nacc++))
			return TDM_REJECT_MODE; /* TDM_ACC: on one argument at most */
		struct buffer *b = session_buffer_lookup(s, a->handle);
		if (!b) {
			*status = -TDM_EHANDLE;
			return TDM_REJECT_HANDLE;
		}
		/* Against the declared extent: a growable buffer's bytes past it
		 * may not be backed, and the daemon must never fault on them. */
		uint64_t extent = atomic_load(&b->extent);
		if (a->length == 0 || a->offset > extent || a->length > extent - a->offset) {
			*status = -TDM_ERANGE;
			return TDM_REJECT_RANGE;
		}
		bufs[i] = b;
		task->call.ptr[i] = (char *)b->base + a->offset;
		task->call.len[i] = a->length;
		task->call.off[i] = a->offset;
		task->data[i] = &b->data;
	}
	for (unsigned i = 0; i < TDM_MAX_SCALARS; i++) {
		if (i >= t->nscalars) {
			if (t->scalar_types[i] || t->scalars[i].bits) {
				*status = -TDM_EPROTO;
				return TDM_REJECT_RESERVED;
			}
			continue;
		}
		if (t->scalar_types[i] != k->scalar_types[i])
			return TDM_REJECT_SCALAR_TYPE;
		task->call.s[i] = t->scalars[i];
	}
	for (unsigned i = 0; i < TDM_TASK_INLINE_EDGES; i++) {
		if (i < t->nedges ? t->edges[i] >= index : t->edges[i] != 0) {
			*status = i < t->nedges ? -TDM_EEDGE : -TDM_EPROTO;
			return i < t->nedges ? TDM_REJECT_EDGE : TDM_REJECT_RESERVED;
		}
	}
	*status = k->check(&task->call);
	if (*status)
		return TDM_REJECT_KERNEL_ARGS;
	k->features(&task->call, &task->feat);
	return within_budget(s, k, &task->feat, status);
}

static void add_task(struct session *s, const struct tdm_sqe *e)
{
	struct dgraph *g = s->building;
	const struct tdm_sqe_task *t = &e->u.task;
	struct buffer *bufs[TDM_MAX_ARGS] = { 0 };
	struct engine_task *task;
	uint32_t index = s->build.ntasks;
	uint32_t field;
	int status, err;

	if (index >= g->g.ntasks) {
		reject(s, -TDM_EPROTO, TDM_REJECT_NTASKS);
		return;
	}
	/* Validated in place: a task is stored as it arrives, so memory
	 * follows what the client sent, not what it declared. */
	task = graph_build_next(&s->build);
	if (!task) {
		reject(s, -TDM_ENOMEM, TDM_REJECT_NONE);
		return;
	}
	field = validate_task(s, e, index, task, bufs, &status);
	if (field != TDM_REJECT_NONE) {
		reject(s, status, field);
		return;
	}
	err = graph_build_task(&s->build, task, &index);
	for (unsigned i = 0; !err && i < t->nargs; i++) {
		err = track_buffer(s, bufs[i], &t->args[i], index);
		if (err || t->args[i].mode != TDM_ACC)
			continue;
		/* Its partial is daemon memory, as much as the range. */
		g->acc_bytes += t->args[i].length;
		if (g->acc_bytes > s->env->cfg->buffer_quota_bytes) {
			reject(s, -TDM_EQUOTA, TDM_REJECT_QUOTA);
			return;
		}
		err = graph_build_accumulate(&s->build, index, i);
	}
	for (unsigned i = 0; !err && i < t->nedges; i++)
		err = graph_build_edge(&s->build, t->edges[i], index);
	if (err)
		reject(s, err, err == -TDM_EQUOTA ? TDM_REJECT_EDGE : TDM_REJECT_NONE);
}

static void add_edges(struct session *s, const struct tdm_sqe *e)
{
	const struct tdm_sqe_edges *x = &e->u.edges;

	if (e->reserved || e->reserved2) {
		reject(s, -TDM_EPROTO, TDM_REJECT_RESERVED);
		return;
	}
	if (s->build.ntasks == 0 || x->task_index != s->build.ntasks - 1) {
		reject(s, -TDM_EPROTO, TDM_REJECT_SEQUENCE);
		return;
	}
	if (x->nedges > TDM_EDGES_PER_SQE) {
		reject(s, -TDM_EEDGE, TDM_REJECT_EDGE);
		return;
	}
	for (uint32_t i = 0; i < TDM_EDGES_PER_SQE; i++) {
		if (i >= x->nedges ? x->edges[i] != 0 : x->edges[i] >= x->task_index) {
			if (i >= x->nedges)
				reject(s, -TDM_EPROTO, TDM_REJECT_RESERVED);
			else
				reject(s, -TDM_EEDGE, TDM_REJECT_EDGE);
			return;
		}
	}
	for (uint32_t i = 0; i < x->nedges; i++) {
		int err = graph_build_edge(&s->build, x->edges[i], x->task_index);
		if (err) {
			reject(s, err, err == -TDM_EQUOTA ? TDM_REJECT_EDGE : TDM_REJECT_NONE);
			return;
		}
	}
}

/* A routing guard on the task just sent: its router is an earlier task
 * whose kernel routes (topk_router), the expert one it routes among, one
 * guard per task. The guard orders the task after its router. */
static void add_guard(struct session *s, const struct tdm_sqe *e)
{
	const struct tdm_sqe_guard *x = &e->u.guard;

	if (e->reserved || e->reserved2 || x->reserved ||
	    !all_zero(e->u.raw + sizeof(*x), sizeof(e->u.raw) - sizeof(*x))) {
		reject(s, -TDM_EPROTO, TDM_REJECT_RESERVED);
		return;
	}
	if (s->build.ntasks == 0 || x->task_index != s->build.ntasks - 1) {
		reject(s, -TDM_EPROTO, TDM_REJECT_SEQUENCE);
		return;
	}
	struct engine_task *t = &s->build.tasks[x->task_index];
	struct engine_task *r =
	        x->router_task < x->task_index ? &s->build.tasks[x->router_task] : NULL;
	if (t->guard_router || !r || !r->kernel->route ||
	    x->expert >= r->kernel->route_experts(&r->call)) {
		reject(s, -TDM_EINVAL, TDM_REJECT_GUARD);
		return;
	}
	int err = graph_build_edge(&s->build, x->router_task, x->task_index);
	if (err) {
		reject(s, err, err == -TDM_EQUOTA ? TDM_REJECT_EDGE : TDM_REJECT_NONE);
		return;
	}
	t->guard_router = x->router_task + 1;
	t->guard_expert = x->expert;
	r->flags |= TASK_ROUTES;
}

static void end_graph(struct session *s, const struct tdm_sqe *e)
{
	struct dgraph *g = s->building;

	if (e->reserved || e->reserved2 || !all_zero(e->u.raw, sizeof(e->u.raw))) {
		reject(s, -TDM_EPROTO, TDM_REJECT_RESERVED);
		s->skipping = false;
		return;
	}
	if (s->build.ntasks != g->g.ntasks) {
		reject(s, -TDM_EPROTO, TDM_REJECT_SEQUENCE);
		s->skipping = false; /* END closes the graph either way */
		return;
	}
	int err = graph_build_finish(&s->build, &g->g);
	if (err) {
		reject(s, err, TDM_REJECT_NONE); /* -TDM_ENOMEM: edges were checked */
		s->skipping = false;
		return;
	}
	s->building = NULL;
	/* The client may have submitted this graph because it read a completion
	 * a worker posted under cq_lock; taking the lock orders that worker's
	 * writes to shared buffers before this graph's tasks for the daemon's
	 * own threads too (and for TSan, which cannot see the client). */
	pthread_mutex_lock(&s->cq_lock);
	pthread_mutex_unlock(&s->cq_lock);
	atomic_fetch_add(&s->env->counters->graphs_accepted, 1);
	s->env->submit(s->env->submit_ctx, &g->g);
}

static void intake_entry(struct session *s, const struct tdm_sqe *e)
{
	switch (e->op) {
	case TDM_SQE_GRAPH_BEGIN:
		if (s->building) {
			/* A new graph before END: the open one is incomplete. */
			reject(s, -TDM_EPROTO, TDM_REJECT_SEQUENCE);
		}
		begin_graph(s, e);
		return;
	case TDM_SQE_TASK:
	case TDM_SQE_EDGES:
	case TDM_SQE_GUARD:
		if (s->skipping)
			return;
		if (!s->building)
			stray_entry(s, e->op, TDM_REJECT_SEQUENCE);
		else if (e->op == TDM_SQE_TASK)
			add_task(s, e);
		else if (e->op == TDM_SQE_EDGES)
			add_edges(s, e);
		else
			add_guard(s, e);
		return;
	case TDM_SQE_GRAPH_END:
		if (s->skipping) {
			s->skipping = false;
			return;
		}
		if (!s->building)
			stray_entry(s, e->op, TDM_REJECT_SEQUENCE);
		else
			end_graph(s, e);
		return;
	default:
		if (s->building)
			reject(s, -TDM_EPROTO, TDM_REJECT_OP);
		else if (!s->skipping)
			stray_entry(s, e->op, TDM_REJECT_OP);
		return;
	}
}

bool intake_pending(const struct session *s)
{
	/* While completions wait for room, submissions wait too (see
	 * intake_run). Sequentially consistent: pairs with the client's store
	 * of its tail followed by its load of TDM_DAEMON_POLLING. sq_head is
	 * read without the intake lock: a stale value only causes a needless
	 * look. */
	return !atomic_load(&s->cq_backlog) &&
	       __atomic_load_n(&s->hdr->sq_tail, __ATOMIC_SEQ_CST) !=
	               __atomic_load_n(&s->sq_head, __ATOMIC_RELAXED);
}

int intake_run(struct session *s, uint32_t *consumed)
{
	uint32_t tail = ring_load_acquire(&s->hdr->sq_tail);
	uint32_t n = 0, errors = s->intake_errors;

	*consumed = 0;
	if (tail - s->sq_head > s->sq_entries) {
		log_warn("session %u: submission tail %u outside [%u, %u]: disconnecting", s->id,
		         tail, s->sq_head, s->sq_head + s->sq_entries);
		atomic_fetch_add(&s->env->counters->protocol_errors, 1);
		return -TDM_EPROTO;
	}
	/* A client that does not reap its completions gets no more work
	 * taken from it until it does: what it can make the daemon hold is
	 * bounded by its quotas, not by how fast it submits. */
	while (s->sq_head != tail && !atomic_load(&s->cq_backlog)) {
		struct tdm_sqe e;
		memcpy(&e, &s->sq[s->sq_head & (s->sq_entries - 1)], sizeof(e));
		__atomic_store_n(&s->sq_head, s->sq_head + 1, __ATOMIC_RELAXED);
		intake_entry(s, &e);
		if (++n % INTAKE_PUBLISH_EVERY == 0) {
			ring_store_publish(&s->hdr->sq_head, s->sq_head);
			session_wake_client_for_room(s);
		}
	}
	if (n) {
		ring_store_publish(&s->hdr->sq_head, s->sq_head);
		session_wake_client_for_room(s);
	}
	*consumed = n;
	if (atomic_load(&s->cq_broken))
		return -TDM_EPROTO; /* counted and said where it was found */
	if (s->intake_errors != errors && session_errors_overflowing(s)) {
		log_warn("session %u: %u invalid entries not reaped: disconnecting", s->id, n);
		return -TDM_EPROTO;
	}
	return 0;
}
