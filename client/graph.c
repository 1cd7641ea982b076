/* libtandem: building, submitting and waiting for graphs. */
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "common/csr.h"

TDM_API tdm_graph *tdm_graph_new(tdm_client *c)
{
	if (!c)
		return NULL;
	tdm_graph *g = calloc(1, sizeof(*g));
	if (g)
		g->c = c;
	return g;
}

TDM_API void tdm_graph_free(tdm_graph *g)
{
	if (!g)
		return;
	if (g->inflight && g->c) {
		/* Forget it: its completion will find no graph and be dropped. */
		if (g->prev)
			g->prev->next = g->next;
		else
			g->c->inflight = g->next;
		if (g->next)
			g->next->prev = g->prev;
	}
	free(g->tasks);
	free(g->edges);
	free(g->guards);
	free(g->info);
	free(g);
}

TDM_API void tdm_graph_want_task_info(tdm_graph *g, int on)
{
	g->want_info = on != 0;
}

TDM_API void tdm_graph_set_priority(tdm_graph *g, int32_t priority)
{
	g->priority = priority;
}

TDM_API void tdm_graph_set_policy(tdm_graph *g, enum tdm_policy_hint hint)
{
	g->policy = (uint32_t)hint;
}

TDM_API void tdm_graph_set_deadline(tdm_graph *g, uint64_t deadline_ns)
{
	g->deadline_ns = deadline_ns;
}

TDM_API int tdm_graph_set_guard(tdm_graph *g, uint32_t task, uint32_t router, uint32_t expert)
{
	if (!g || task >= g->ntasks || router >= task)
		return -TDM_EINVAL;
	if (task >= g->guards_cap) {
		uint32_t ncap = g->guards_cap ? g->guards_cap : 16;
		while (ncap <= task)
			ncap *= 2;
		uint32_t(*n)[2] = realloc(g->guards, (size_t)ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		memset(n + g->guards_cap, 0, (size_t)(ncap - g->guards_cap) * sizeof(*n));
		g->guards = n;
		g->guards_cap = ncap;
	}
	if (g->guards[task][0])
		return -TDM_EINVAL;
	g->guards[task][0] = router + 1;
	g->guards[task][1] = expert;
	return 0;
}

TDM_API uint32_t tdm_graph_task_count(const tdm_graph *g)
{
	return g->ntasks;
}

/* The daemon checks all of this again; checking here gives the caller the
 * error at the call that caused it. */
static int check_task(const tdm_client *c, const struct tdm_task_desc *t, struct tdm_sqe_task *out)
{
	const struct kernel_sig *k = client_kernel_by_id(c, t->kernel);
	if (!k)
		return -TDM_EKERNEL; /* look kernels up with tdm_kernel_lookup */
	if (t->nargs != k->r.nargs || t->nscalars != k->r.nscalars)
		return -TDM_EARITY;
	memset(out, 0, sizeof(*out));
	out->kernel_id = t->kernel;
	out->nargs = (uint8_t)t->nargs;
	out->nscalars = (uint8_t)t->nscalars;
	out->priority = t->priority;
	for (uint32_t i = 0; i < t->nargs; i++) {
		const struct tdm_arg *a = &t->args[i];
		const struct mapping *m = client_mapping(c, a->buffer);
		if (a->mode != k->r.arg_modes[i] &&
		    !(a->mode == TDM_ACC && (k->r.acc_args >> i & 1)))
			return -TDM_EARITY;
		if (!m)
			return -TDM_EHANDLE;
		uint64_t len =
		        a->length ? a->length : (a->offset < m->bytes ? m->bytes - a->offset : 0);
		if (len == 0 || a->offset > m->bytes || len > m->bytes - a->offset)
			return -TDM_ERANGE;
		out->args[i] = (struct tdm_wire_arg){ .handle = a->buffer,
			                              .mode = (uint8_t)a->mode,
			                              .offset = a->offset,
			                              .length = len };
	}
	for (uint32_t i = 0; i < t->nscalars; i++) {
		if (t->scalars[i].type != k->r.scalar_types[i])
			return -TDM_EARITY;
		out->scalar_types[i] = (uint8_t)t->scalars[i].type;
		out->scalars[i].bits = 0;
		if (t->scalars[i].type == TDM_SCALAR_F32)
			out->scalars[i].f32 = t->scalars[i].v.f32;
		else
			out->scalars[i] = t->scalars[i].v;
	}
	return 0;
}

TDM_API int tdm_graph_add_task(tdm_graph *g, const struct tdm_task_desc *t, uint32_t *index)
{
	struct tdm_sqe_task st;
	int err;

	if (!g || !t || !g->c || g->inflight)
		return -TDM_EINVAL;
	if (t->nargs > TDM_MAX_ARGS || t->nscalars > TDM_MAX_SCALARS)
		return -TDM_EARITY;
	if (g->c->max_tasks_per_graph && g->ntasks >= g->c->max_tasks_per_graph)
		return -TDM_EQUOTA;
	if ((err = check_task(g->c, t, &st)))
		return err;
	if (g->ntasks == g->tasks_cap) {
		uint32_t ncap = g->tasks_cap ? g->tasks_cap * 2 : 64;
		struct tdm_sqe_task *n = realloc(g->tasks, (size_t)ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		g->tasks = n;
		g->tasks_cap = ncap;
	}
	st.task_index = g->ntasks;
	g->tasks[g->ntasks] = st;
	if (index)
		*index = g->ntasks;
	g->ntasks++;
	return 0;
}

TDM_API int tdm_graph_add_edge(tdm_graph *g, uint32_t from, uint32_t to)
{
	if (!g || g->inflight)
		return -TDM_EINVAL;
	if (from >= to || to >= g->ntasks)
		return -TDM_EEDGE;
	if (g->nedges == g->edges_cap) {
		uint32_t ncap = g->edges_cap ? g->edges_cap * 2 : 64;
		uint32_t *n = realloc(g->edges, (size_t)ncap * 2 * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		g->edges = n;
		g->edges_cap = ncap;
	}
	g->edges[2 * g->nedges] = from;
	g->edges[2 * g->nedges + 1] = to;
	g->nedges++;
	return 0;
}

/* Predecessors grouped by task, in the order they were added. */
static int group_edges(const tdm_graph *g, uint32_t **off_out, uint32_t **pred_out)
{
	uint32_t *off = malloc(((size_t)g->ntasks + 1) * sizeof(*off));
	uint32_t *pred = malloc(((size_t)g->nedges + 1) * sizeof(*pred));
	if (!off || !pred) {
		free(off);
		free(pred);
		return -TDM_ENOMEM;
	}
	csr_group(off, pred, g->ntasks, g->edges ? g->edges + 1 : NULL, 2 * sizeof(*g->edges),
	          g->nedges);
	for (uint32_t k = 0; k < g->nedges; k++)
		pred[k] = g->edges[2 * pred[k]];
	*off_out = off;
	*pred_out = pred;
	return 0;
}

static int put_task(tdm_client *c, const tdm_graph *g, uint32_t i, const uint32_t *pred,
                    uint32_t npred)
{
	struct tdm_sqe e = { .op = TDM_SQE_TASK };
	uint32_t inline_n = npred < TDM_TASK_INLINE_EDGES ? npred : TDM_TASK_INLINE_EDGES;
	int err;

	e.u.task = g->tasks[i];
	e.u.task.nedges = (uint8_t)inline_n;
	if (inline_n) /* pred is NULL without edges */
		memcpy(e.u.task.edges, pred, inline_n * sizeof(*pred));
	if ((err = ring_put(c, &e)))
		return err;
	for (uint32_t done = inline_n; done < npred;) {
		struct tdm_sqe x = { .op = TDM_SQE_EDGES };
		uint32_t n = npred - done < TDM_EDGES_PER_SQE ? npred - done : TDM_EDGES_PER_SQE;
		x.u.edges.task_index = i;
		x.u.edges.nedges = n;
		memcpy(x.u.edges.edges, pred + done, n * sizeof(*pred));
		if ((err = ring_put(c, &x)))
			return err;
		done += n;
	}
	if (i < g->guards_cap && g->guards[i][0]) {
		struct tdm_sqe x = { .op = TDM_SQE_GUARD };
		x.u.guard.task_index = i;
		x.u.guard.router_task = g->guards[i][0] - 1;
		x.u.guard.expert = g->guards[i][1];
		if ((err = ring_put(c, &x)))
			return err;
	}
	return 0;
}

TDM_API int tdm_graph_submit(tdm_graph *g)
{
	tdm_client *c;
	uint32_t *off = NULL, *pred = NULL;
	int err;

	if (!g || !g->c || g->inflight)
		return -TDM_EINVAL;
	c = g->c;
	if (c->broken)
		return client_lost(c);
	free(g->info);
	g->info = NULL;
	if (g->want_info && g->ntasks) {
		g->info = calloc(g->ntasks, sizeof(*g->info));
		if (!g->info)
			return -TDM_ENOMEM;
	}
	/* Without explicit edges (the common small graph) there is nothing to
	 * group: no allocation per submit. */
	if (g->nedges && (err = group_edges(g, &off, &pred)))
		return err;
	g->cookie = ++c->next_cookie;
	g->done = false;
	g->status = 0;
	g->reject_task = g->reject_field = 0;
	/* In flight before the first entry: completions reaped while we wait
	 * for ring space must find it. */
	g->inflight = true;
	g->prev = NULL;
	g->next = c->inflight;
	if (c->inflight)
		c->inflight->prev = g;
	c->inflight = g;

	struct tdm_sqe e = { .op = TDM_SQE_GRAPH_BEGIN };
	e.u.begin.cookie = g->cookie;
	e.u.begin.ntasks = g->ntasks;
	e.u.begin.flags = g->want_info ? TDM_GRAPH_TASK_INFO : 0;
	e.u.begin.priority = g->priority;
	e.u.begin.policy = g->policy;
	e.u.begin.deadline_ns = g->deadline_ns;
	err = ring_put(c, &e);
	for (uint32_t i = 0; !err && i < g->ntasks; i++)
		err = off ? put_task(c, g, i, pred + off[i], off[i + 1] - off[i])
		          : put_task(c, g, i, NULL, 0);
	if (!err) {
		struct tdm_sqe end = { .op = TDM_SQE_GRAPH_END };
		err = ring_put(c, &end);
	}
	free(off);
	free(pred);
	if (err)
		return err; /* the connection is gone; the graph stays in flight */
	ring_publish(c, true);
	return 0;
}

static bool graph_done(tdm_client *c, void *arg)
{
	(void)c;
	return ((tdm_graph *)arg)->done;
}

TDM_API int tdm_wait(tdm_graph *g, int64_t timeout_ns)
{
	if (!g)
		return -TDM_EINVAL;
	if (g->done)
		return g->status;
	if (!g->inflight || !g->c)
		return -TDM_EINVAL;
	uint64_t deadline = timeout_ns < 0 ? 0 : client_now_ns() + (uint64_t)timeout_ns;
	if (timeout_ns == 0)
		deadline = client_now_ns(); /* poll once */
	int err = ring_wait_progress(g->c, deadline, graph_done, g);
	return err ? err : g->status;
}

TDM_API const struct tdm_task_info *tdm_graph_task_info(const tdm_graph *g, uint32_t index)
{
	if (!g || !g->done || !g->info || index >= g->ntasks)
		return NULL;
	return &g->info[index];
}

TDM_API void tdm_graph_reject_detail(const tdm_graph *g, uint32_t *task_index, uint32_t *field)
{
	if (task_index)
		*task_index = g->reject_task;
	if (field)
		*field = g->reject_field;
}
