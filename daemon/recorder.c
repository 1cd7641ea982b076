/* The recorder behind `tandemctl trace`: capture on completion, write at the
 * end. See recorder.h. */
#include "daemon/recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/csr.h"
#include "common/log.h"
#include "workload/schedule_out.h"
#include "daemon/reply.h"
#include "daemon/session.h"
#include "workload/workload.h"
#include "tandem.h"

/* One buffer argument of a recorded task. */
struct rec_arg {
	uint32_t handle; /* the client's */
	uint8_t mode;
	bool keep; /* WEIGHTS or KV: kept on devices between graphs */
	uint64_t bytes; /* the buffer's size */
	uint64_t len; /* the part the task touches */
};

struct rec_task {
	struct kernel_features feat;
	uint64_t start_ns, end_ns;
	int32_t priority;
	uint16_t kernel;
	uint16_t device; /* engine index */
	uint8_t nargs;
	bool skipped; /* guarded, no token routed to it: completed unrun */
	uint32_t arg0; /* first of its args in rec_graph.args */
};

struct rec_graph {
	struct rec_graph *next;
	uint64_t submit_ns, deadline_ns, cookie;
	uint32_t session, ntasks, npreds;
	int32_t priority;
	uint8_t policy_hint;
	struct rec_task *tasks;
	struct rec_arg *args;
	uint32_t *pred_off; /* ntasks + 1 */
	uint32_t *pred; /* each task's predecessors, ascending */
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void recorder_init(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	atomic_init(&r->active, false);
	r->trace_fd = r->chrome_fd = -1;
}

static void free_graphs(struct rec_graph *g)
{
	while (g) {
		struct rec_graph *n = g->next;
		free(g);
		g = n;
	}
}

struct rec_counts {
	uint64_t ngraphs, dropped, skipped;
};

/* Ends the recording under the lock; returns its graphs (oldest first) and
 * what was counted with them. */
static struct rec_graph *take(struct recorder *r, struct rec_counts *c)
{
	pthread_mutex_lock(&r->lock);
	struct rec_graph *g = r->head;
	if (c)
		*c = (struct rec_counts){ r->ngraphs, r->dropped, r->skipped };
	atomic_store(&r->active, false);
	r->gen++;
	r->head = r->tail = NULL;
	pthread_mutex_unlock(&r->lock);
	return g;
}

void recorder_discard(struct recorder *r)
{
	free_graphs(take(r, NULL));
	close_fd(&r->trace_fd);
	close_fd(&r->chrome_fd);
	r->owner = NULL;
}

void recorder_fini(struct recorder *r)
{
	recorder_discard(r);
	pthread_mutex_destroy(&r->lock);
}

int recorder_start(struct recorder *r, void *owner, int trace_fd, int chrome_fd)
{
	if (atomic_load(&r->active))
		return -TDM_EBUSY;
	pthread_mutex_lock(&r->lock);
	r->ngraphs = r->ntasks = r->nedges = r->dropped = r->skipped = 0;
	r->gen++;
	atomic_store(&r->active, true);
	pthread_mutex_unlock(&r->lock);
	r->owner = owner;
	r->trace_fd = trace_fd;
	r->chrome_fd = chrome_fd;
	r->start_ns = clock_monotonic_ns();
	return 0;
}

/* ---- capture (worker threads) ---------------------------------------------- */

static void count_skipped(struct recorder *r)
{
	pthread_mutex_lock(&r->lock);
	if (atomic_load(&r->active))
		r->skipped++;
	pthread_mutex_unlock(&r->lock);
}

/* The buffer behind an argument's residency (intake points task data at
 * its buffer's). */
static const struct buffer *arg_buffer(const struct engine_task *t, unsigned i)
{
	return (const struct buffer *)((const char *)t->data[i] - offsetof(struct buffer, data));
}

void recorder_graph_done(struct recorder *r, const struct dgraph *dg)
{
	const struct engine_graph *g = &dg->g;
	uint32_t n = g->ntasks, nargs = 0, nedges;
	uint64_t gen;

	if (!atomic_load_explicit(&r->active, memory_order_relaxed))
		return;
	if (n == 0 || atomic_load(&g->status) != 0) {
		count_skipped(r);
		return;
	}
	nedges = g->succ_off[n];
	/* Predecessors must come first (a trace lists each task's earlier
	 * ones); intake only accepts such edges, but check rather than write
	 * a trace that does not load. */
	for (uint32_t i = 0; i < n; i++) {
		nargs += g->tasks[i].call.nargs;
		for (uint32_t k = g->succ_off[i]; k < g->succ_off[i + 1]; k++) {
			if (g->succ[k] <= i || g->succ[k] >= n) {
				log_warn("trace: graph %llu of client %u: edge %u -> %u does not "
				         "point forward: not recorded",
				         (unsigned long long)g->cookie, dg->s->id, i, g->succ[k]);
				count_skipped(r);
				return;
			}
		}
	}

	/* Reserve room within the bounds, then copy without the lock. */
	pthread_mutex_lock(&r->lock);
	if (!atomic_load(&r->active)) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	gen = r->gen;
	bool fits = r->ntasks + n <= RECORDER_MAX_TASKS && r->nedges + nedges <= RECORDER_MAX_EDGES;
	if (fits) {
		r->ntasks += n;
		r->nedges += nedges;
	} else {
		r->dropped++;
	}
	pthread_mutex_unlock(&r->lock);
	if (!fits)
		return;

	size_t sz = sizeof(struct rec_graph) + (size_t)n * sizeof(struct rec_task) +
	            (size_t)nargs * sizeof(struct rec_arg) + ((size_t)n + 1) * sizeof(uint32_t) +
	            (size_t)nedges * sizeof(uint32_t);
	struct rec_graph *rg = malloc(sz);
	if (!rg) {
		/* Give the room back, unless the recording ended meanwhile. */
		pthread_mutex_lock(&r->lock);
		if (r->gen == gen) {
			r->ntasks -= n;
			r->nedges -= nedges;
			r->dropped++;
		}
		pthread_mutex_unlock(&r->lock);
		return;
	}
	rg->next = NULL;
	rg->submit_ns = g->submit_ns;
	rg->deadline_ns = g->deadline_ns;
	rg->cookie = g->cookie;
	rg->session = dg->s->id;
	rg->ntasks = n;
	rg->npreds = nedges;
	rg->priority = g->priority;
	rg->policy_hint = g->policy_hint;
	rg->tasks = (struct rec_task *)(rg + 1);
	rg->args = (struct rec_arg *)(rg->tasks + n);
	rg->pred_off = (uint32_t *)(rg->args + nargs);
	rg->pred = rg->pred_off + n + 1;

	uint32_t a = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct engine_task *t = &g->tasks[i];
		struct rec_task *rt = &rg->tasks[i];
		rt->feat = t->feat;
		rt->start_ns = t->start_ns;
		rt->end_ns = t->end_ns;
		rt->priority = t->priority;
		rt->kernel = (uint16_t)t->kernel->id;
		rt->device = t->device;
		rt->skipped = (t->flags & TASK_SKIPPED) != 0;
		rt->nargs = t->call.nargs;
		rt->arg0 = a;
		for (unsigned k = 0; k < t->call.nargs; k++, a++) {
			const struct buffer *b = arg_buffer(t, k);
			rg->args[a] = (struct rec_arg){
				.handle = b->handle,
				.mode = t->acc && t->acc->arg == k ? TDM_ACC
				                                   : t->kernel->arg_modes[k],
				.keep = (b->flags & (TDM_BUF_WEIGHTS | TDM_BUF_KV)) != 0,
				.bytes = b->bytes,
				.len = t->call.len[k],
			};
		}
	}
	/* Sources visited in ascending order: each task's predecessors come
	 * out sorted. */
	csr_transpose(n, g->succ_off, g->succ, rg->pred_off, rg->pred);

	pthread_mutex_lock(&r->lock);
	if (atomic_load(&r->active) && r->gen == gen) {
		if (r->tail)
			r->tail->next = rg;
		else
			r->head = rg;
		r->tail = rg;
		r->ngraphs++;
		rg = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	free(rg); /* the recording ended meanwhile */
}

/* ---- output (event loop) --------------------------------------------------- */

struct fd_stream {
	int fd;
	uint64_t *bytes;
};

static ssize_t fd_stream_write(void *cookie, const char *buf, size_t len)
{
	struct fd_stream *s = cookie;
	size_t done = 0;
	while (done < len) {
		ssize_t k = write(s->fd, buf + done, len - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return done ? (ssize_t)done : -1;
		done += (size_t)k;
		*s->bytes += (uint64_t)k;
	}
	return (ssize_t)done;
}

static int fd_stream_close(void *cookie)
{
	struct fd_stream *s = cookie;
	int rc = close(s->fd);
	free(s);
	return rc;
}

FILE *recorder_fd_stream(int fd, uint64_t *bytes)
{
	struct fd_stream *s = malloc(sizeof(*s));
	if (!s)
		return NULL;
	s->fd = fd;
	s->bytes = bytes;
	*bytes = 0;
	FILE *f = fopencookie(
	        s, "w",
	        (cookie_io_functions_t){ .write = fd_stream_write, .close = fd_stream_close });
	if (!f)
		free(s);
	return f;
}

bool recorder_fd_writable(int fd)
{
	struct stat st;
	int fl = fcntl(fd, F_GETFL);
	return fl >= 0 && ((fl & O_ACCMODE) == O_WRONLY || (fl & O_ACCMODE) == O_RDWR) &&
	       fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static int by_arrival(const void *pa, const void *pb)
{
	const struct rec_graph *a = *(const struct rec_graph *const *)pa;
	const struct rec_graph *b = *(const struct rec_graph *const *)pb;
	if (a->submit_ns != b->submit_ns)
		return a->submit_ns < b->submit_ns ? -1 : 1;
	if (a->session != b->session)
		return a->session < b->session ? -1 : 1;
	return a->cookie < b->cookie ? -1 : a->cookie > b->cookie;
}

/* Trace buffer ids by (client, handle): open addressing, ids in order of
 * first use. */
struct buf_map {
	uint64_t *keys; /* client << 32 | handle; 0 = empty (handles are never 0) */
	uint32_t *ids;
	size_t cap, n;
};

static uint64_t mix(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

static bool map_grow(struct buf_map *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 256;
	uint64_t *keys = calloc(ncap, sizeof(*keys));
	uint32_t *ids = malloc(ncap * sizeof(*ids));
	if (!keys || !ids) {
		free(keys);
		free(ids);
		return false;
	}
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->keys[i])
			continue;
		size_t j = mix(m->keys[i]) & (ncap - 1);
		while (keys[j])
			j = (j + 1) & (ncap - 1);
		keys[j] = m->keys[i];
		ids[j] = m->ids[i];
	}
	free(m->keys);
	free(m->ids);
	m->keys = keys;
	m->ids = ids;
	m->cap = ncap;
	return true;
}

/* The id of a buffer; *fresh when it was not seen before. -1: ENOMEM. */
static int64_t map_id(struct buf_map *m, uint32_t client, uint32_t handle, bool *fresh)
{
	uint64_t key = (uint64_t)client << 32 | handle;
	*fresh = false;
	if ((m->n + 1) * 2 > m->cap && !map_grow(m))
		return -1;
	size_t j = mix(key) & (m->cap - 1);
	while (m->keys[j]) {
		if (m->keys[j] == key)
			return m->ids[j];
		j = (j + 1) & (m->cap - 1);
	}
	m->keys[j] = key;
	m->ids[j] = (uint32_t)m->n++;
	*fresh = true;
	return m->ids[j];
}

static double rel(uint64_t t, uint64_t t0)
{
	return t > t0 ? (double)(t - t0) : 0.0;
}

struct writer {
	const struct recorder_env *env;
	FILE *trace;
	struct buf_map bufs;
	struct wl_task *tasks; /* scratch for one graph */
	size_t tasks_cap;
	struct sched_span *spans; /* NULL: no Chrome trace */
	size_t nspans;
	uint64_t ntasks, nedges;
	const char *err;
};

/* Room for g's tasks; false when out of memory. */
static bool scratch(struct writer *w, const struct rec_graph *g)
{
	if (g->ntasks > w->tasks_cap || !w->tasks) {
		free(w->tasks);
		w->tasks = calloc((size_t)g->ntasks + 1, sizeof(*w->tasks));
		w->tasks_cap = w->tasks ? g->ntasks : 0;
	}
	return w->tasks && w->tasks_cap >= g->ntasks;
}

static int write_graph(struct writer *w, uint32_t id, const struct rec_graph *g, uint64_t t0)
{
	if (!scratch(w, g)) {
		w->err = "out of memory";
		return -TDM_ENOMEM;
	}
	for (uint32_t i = 0; i < g->ntasks; i++) {
		const struct rec_task *rt = &g->tasks[i];
		const struct kernel_def *k = kernel_by_id(rt->kernel);
		struct wl_task *t = &w->tasks[i];
		memset(t, 0, sizeof(*t));
		snprintf(t->name, sizeof(t->name), "%s", k ? k->name : "?");
		t->cost = rel(rt->end_ns, rt->start_ns);
		t->has_kernel = true;
		t->kernel = rt->kernel;
		t->feat = rt->feat;
		t->nargs = rt->nargs;
		t->priority = rt->priority;
		t->rec_device = rt->device < w->env->ndevices ? rt->device + 1u : 0;
		t->rec_start_ns = rel(rt->start_ns, t0);
		t->rec_end_ns = rel(rt->end_ns, t0);
		t->skipped = rt->skipped;
		for (unsigned a = 0; a < rt->nargs; a++) {
			const struct rec_arg *ra = &g->args[rt->arg0 + a];
			bool fresh;
			int64_t bid = map_id(&w->bufs, g->session, ra->handle, &fresh);
			if (bid < 0) {
				w->err = "out of memory";
				return -TDM_ENOMEM;
			}
			if (fresh && wl_trace_write_buffer(w->trace, (uint32_t)bid,
			                                   (double)ra->bytes, ra->keep) != 0) {
				w->err = strerror(errno);
				return -TDM_ESYS;
			}
			t->args[a].buf = (uint32_t)bid;
			t->args[a].mode = ra->mode;
			if (ra->mode & TDM_R)
				t->data_in += (double)ra->len;
			if (ra->mode & TDM_W)
				t->data_out += (double)ra->len;
		}
		if (w->spans && t->rec_device) {
			w->spans[w->nspans++] = (struct sched_span){
				.device = rt->device,
				.start_ns = (uint64_t)t->rec_start_ns,
				.end_ns = (uint64_t)t->rec_end_ns,
				.name = k ? k->name : "?",
				.graph = id,
				.task = i,
			};
		}
	}
	struct wl_graph wg = {
		.first = (uint32_t)w->ntasks,
		.ntasks = g->ntasks,
		.arrival_ns = rel(g->submit_ns, t0),
		.client = g->session,
		.priority = g->priority,
		.policy_hint = g->policy_hint,
		.deadline_ns = !g->deadline_ns ? 0.0
		               : g->deadline_ns > g->submit_ns
		                       ? (double)(g->deadline_ns - g->submit_ns)
		                       : 1.0,
	};
	/* Each edge once: the graph builder gave each pair one edge. */
	if (wl_trace_write_graph(w->trace, id, &wg, w->tasks, g->pred_off, g->pred) != 0) {
		w->err = strerror(errno);
		return -TDM_ESYS;
	}
	w->ntasks += g->ntasks;
	w->nedges += g->npreds;
	return 0;
}

int recorder_stop(struct recorder *r, const struct recorder_env *env, char **summary)
{
	struct writer w = { .env = env };
	uint64_t dropped, skipped, trace_bytes = 0, chrome_bytes = 0;
	struct rec_graph **order = NULL;
	size_t ngraphs = 0;
	int err = 0;

	*summary = NULL;
	if (!atomic_load(&r->active) || r->trace_fd < 0)
		return -TDM_EINVAL;
	struct rec_counts counts;
	struct rec_graph *list = take(r, &counts);
	dropped = counts.dropped;
	skipped = counts.skipped;
	ngraphs = counts.ngraphs;
	uint64_t seconds_ns = clock_monotonic_ns() - r->start_ns;
	int trace_fd = r->trace_fd, chrome_fd = r->chrome_fd;
	r->trace_fd = r->chrome_fd = -1;
	r->owner = NULL;

	/* Graphs in arrival order (they finish in another). */
	order = malloc((ngraphs + 1) * sizeof(*order));
	size_t total_tasks = 0;
	if (order) {
		size_t i = 0;
		for (struct rec_graph *g = list; g && i < ngraphs; g = g->next) {
			order[i++] = g;
			total_tasks += g->ntasks;
		}
		ngraphs = i;
		qsort(order, ngraphs, sizeof(*order), by_arrival);
	}
	if (chrome_fd >= 0 && order) {
		w.spans = malloc((total_tasks + 1) * sizeof(*w.spans));
		if (!w.spans)
			err = -TDM_ENOMEM;
	}
	w.trace = recorder_fd_stream(trace_fd, &trace_bytes);
	if (!w.trace)
		close(trace_fd);
	if (!order || !w.trace) {
		err = -TDM_ENOMEM;
		w.err = "out of memory";
	}
	/* order is NULL when its malloc failed (err is set, nothing is written) */
	uint64_t t0 = order && ngraphs ? order[0]->submit_ns : 0;
	if (!err && wl_trace_write_header(w.trace, env->machine, env->policy, env->devices,
	                                  env->ndevices) != 0) {
		err = -TDM_ESYS;
		w.err = strerror(errno);
	}
	for (size_t i = 0; !err && i < ngraphs; i++)
		err = write_graph(&w, (uint32_t)i, order[i], t0);
	if (w.trace && fclose(w.trace) != 0 && !err) {
		err = -TDM_ESYS;
		w.err = strerror(errno);
	}
	if (chrome_fd >= 0) {
		FILE *f = err ? NULL : recorder_fd_stream(chrome_fd, &chrome_bytes);
		if (f) {
			char title[256];
			snprintf(title, sizeof(title), "tandemd on %s / %s", env->machine,
			         env->policy);
			struct sched_view v = {
				.title = title,
				.ndevices = env->ndevices,
				.devices = env->devices,
				.nspans = w.nspans,
				.spans = w.spans,
			};
			int rc = sched_write_chrome(f, &v);
			if ((fclose(f) != 0 || rc != 0) && !err) {
				err = -TDM_ESYS;
				w.err = "cannot write the Chrome trace";
			}
		} else {
			close(chrome_fd);
			if (!err) {
				err = -TDM_ENOMEM;
				w.err = "out of memory";
			}
		}
	}
	if (err) {
		log_warn("trace: not written: %s", w.err ? w.err : tdm_strerror(err));
		*summary = reply_error("trace not written: %s", w.err ? w.err : tdm_strerror(err));
	} else {
		json_t *doc =
		        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "graphs",
		                  (json_int_t)ngraphs, "tasks", (json_int_t)w.ntasks, "edges",
		                  (json_int_t)w.nedges, "buffers", (json_int_t)w.bufs.n, "dropped",
		                  (json_int_t)dropped, "skipped", (json_int_t)skipped, "bytes",
		                  (json_int_t)trace_bytes, "chrome_bytes", (json_int_t)chrome_bytes,
		                  "seconds", (double)seconds_ns / 1e9);
		*summary = reply_text(doc);
		log_info(
		        "trace: recorded %zu graphs, %llu tasks, %zu buffers (%llu graphs dropped, "
		        "%llu skipped), %llu bytes",
		        ngraphs, (unsigned long long)w.ntasks, w.bufs.n,
		        (unsigned long long)dropped, (unsigned long long)skipped,
		        (unsigned long long)trace_bytes);
		if (dropped)
			log_warn("trace: %llu graphs dropped: over %u tasks or %u edges in memory",
			         (unsigned long long)dropped, RECORDER_MAX_TASKS,
			         RECORDER_MAX_EDGES);
	}
	free(order);
	free_graphs(list);
	free(w.spans);
	free(w.tasks);
	free(w.bufs.keys);
	free(w.bufs.ids);
	if (!*summary && !err)
		err = -TDM_ENOMEM;
	return err;
}
