/* The graph builder (build.h). */
#include "graph/build.h"

#include <stdlib.h>
#include <string.h>

#include "common/csr.h"
#include "common/hugepage.h"
#include "tandem.h"

#define GB_NONE UINT32_MAX /* no task, no reader */
#define GB_MIN_BITS 4
/* What graph_build_reset keeps for the next graph: scratch up to these
 * sizes (a few KiB), so that a stream of small graphs allocates nothing
 * but their tasks and successors, and one large graph does not pin its
 * scratch. */
#define GB_KEEP_BUFS_BITS 8
#define GB_KEEP_EDGES 4096
#define GB_KEEP_READERS 1024
#define GB_KEEP_SEGS 512 /* pieces, in one spare array (12 KiB) */

/* A piece of a buffer: its last writer and the tasks that read it since
 * (a list in gb->readers, most recent first). */
struct gb_seg {
	uint64_t off, end;
	uint32_t writer; /* GB_NONE: none in this graph */
	uint32_t readers; /* GB_NONE: none */
	/* Accumulators (TDM_ACC) of this exact piece since its last write, a
	 * list like readers; GB_NONE: none. While the group is open (no
	 * plain access since) readers holds what each of them follows; once
	 * a read closed it, readers holds the reads since (which follow it). */
	uint32_t accs;
	uint32_t acc_leader; /* the group's first task */
	bool closed;
	bool whole; /* the piece is its group's whole range (not split since) */
};

/* A buffer's state: the pieces accessed so far, sorted and disjoint (gaps
 * were never accessed), found by binary search. A buffer used whole has
 * one piece, kept inline; a pool of N slices about 2N, so an access costs
 * O(log N) plus the pieces it touches. A slot is in use when its gen is
 * the builder's. */
struct gb_buffer {
	uint64_t key;
	uint32_t gen;
	uint32_t nsegs, segs_cap; /* segs_cap 1: the inline one */
	struct gb_seg *segs; /* NULL: &one */
	struct gb_seg one;
};

struct gb_reader {
	uint32_t task, next;
};

void graph_build_init(struct graph_build *gb, uint32_t ntasks_hint, uint32_t max_edges)
{
	memset(gb, 0, sizeof(*gb));
	gb->ntasks_hint = ntasks_hint;
	gb->max_edges = max_edges;
	gb->free_reader = GB_NONE;
	gb->acc_leader = GB_NONE;
	gb->gen = 1;
	gb->unique = true;
}

/* Frees the piece arrays of the current graph's buffers but one, kept as
 * the spare for the next graph's first buffer that needs one (a stream of
 * decode steps over one pooled buffer allocates nothing for it). */
static void free_segs(struct graph_build *gb, bool keep)
{
	for (uint32_t i = 0; gb->seg_arrays && i < (1u << gb->bufs_bits); i++) {
		struct gb_buffer *b = &gb->bufs[i];
		if (b->gen != gb->gen || !b->segs)
			continue;
		if (keep && b->segs_cap <= GB_KEEP_SEGS && b->segs_cap > gb->spare_cap) {
			free(gb->spare);
			gb->spare = b->segs;
			gb->spare_cap = b->segs_cap;
		} else {
			free(b->segs);
		}
		b->segs = NULL;
		gb->seg_arrays--;
	}
	if (!keep) {
		free(gb->spare);
		gb->spare = NULL;
		gb->spare_cap = 0;
	}
}

void task_acc_free(struct engine_task *t)
{
	struct task_acc *a = t->acc;
	if (!a)
		return;
	if (a->group && a->group->members[0] == t->index) {
		free(a->group->members);
		free(a->group);
	}
	free(a->partial);
	free(a->pdata);
	free(a);
	t->acc = NULL;
	t->flags &= (uint8_t)~TASK_ACC;
}

/* The tasks not handed over: what they own (last first: a group's first
 * member goes after the others). */
static void free_tasks(struct graph_build *gb)
{
	for (uint32_t i = gb->tasks ? gb->ntasks : 0; i-- > 0;)
		task_acc_free(&gb->tasks[i]);
	free(gb->tasks);
}

void graph_build_fini(struct graph_build *gb)
{
	free_segs(gb, false);
	free_tasks(gb);
	free(gb->edges);
	free(gb->data);
	free(gb->bufs);
	free(gb->readers);
	graph_build_init(gb, 0, 0);
}

void graph_build_reset(struct graph_build *gb, uint32_t ntasks_hint, uint32_t max_edges)
{
	free_tasks(gb);
	free(gb->data);
	gb->tasks = NULL;
	gb->data = NULL;
	gb->ntasks = gb->tasks_cap = gb->nedges = gb->ends = 0;
	gb->unique = true;
	gb->last_to = gb->last_from1 = 0;
	if (gb->edges_cap > GB_KEEP_EDGES) {
		free(gb->edges);
		gb->edges = NULL;
		gb->edges_cap = 0;
	}
	free_segs(gb, true);
	if (gb->bufs_bits > GB_KEEP_BUFS_BITS || ++gb->gen == 0) {
		free(gb->bufs);
		gb->bufs = NULL;
		gb->bufs_bits = 0;
		gb->gen = 1;
	}
	gb->nbufs = 0;
	if (gb->readers_cap > GB_KEEP_READERS) {
		free(gb->readers);
		gb->readers = NULL;
		gb->readers_cap = 0;
	}
	gb->nreaders = 0;
	gb->free_reader = GB_NONE;
	gb->ntasks_hint = ntasks_hint;
	gb->max_edges = max_edges;
}

/* The task array, grown to cap tasks (n in use). A large one (a graph
 * that does not stay in cache) starts on a line, as graph/task.h lays a
 * task out by lines: realloc keeps a large block's place in its page where
 * it moves it by remapping; where it does not, the tasks are copied once
 * more, to an aligned block (without one they stay where they are: only
 * slower). A small one is left where realloc puts it: the copy would cost
 * more than it saves (intake's graphs). */
#define TASKS_ALIGN_BYTES ((size_t)1 << 20)

static struct engine_task *grow_tasks(struct engine_task *old, uint32_t n, uint32_t cap)
{
	size_t bytes = (size_t)cap * sizeof(*old);
	bool align = bytes >= TASKS_ALIGN_BYTES;
	struct engine_task *t;
	if (align && !n) { /* nothing to keep (graph_build_reserve) */
		if ((t = aligned_alloc(ENGINE_TASK_LINE, bytes)))
			free(old);
	} else if ((t = realloc(old, bytes)) && align && (uintptr_t)t % ENGINE_TASK_LINE) {
		struct engine_task *a = aligned_alloc(ENGINE_TASK_LINE, bytes);
		if (a) {
			memcpy(a, t, (size_t)n * sizeof(*a));
			free(t);
			t = a;
		}
	}
	hugepage_advise(t, bytes); /* tasks are released and run in no order */
	return t;
}

int graph_build_reserve(struct graph_build *gb, uint32_t ntasks)
{
	if (ntasks <= gb->tasks_cap)
		return 0;
	struct engine_task *t = grow_tasks(gb->tasks, gb->ntasks, ntasks);
	if (!t)
		return -TDM_ENOMEM;
	gb->tasks = t;
	gb->tasks_cap = ntasks;
	return 0;
}

struct engine_task *graph_build_next(struct graph_build *gb)
{
	if (gb->ntasks == gb->tasks_cap) {
		uint32_t ncap = gb->tasks_cap ? gb->tasks_cap * 2 : 16;
		if (gb->ntasks < gb->ntasks_hint && ncap > gb->ntasks_hint)
			ncap = gb->ntasks_hint;
		struct engine_task *n = grow_tasks(gb->tasks, gb->ntasks, ncap);
		if (!n)
			return NULL;
		gb->tasks = n;
		gb->tasks_cap = ncap;
	}
	return &gb->tasks[gb->ntasks];
}

int graph_build_task(struct graph_build *gb, const struct engine_task *t, uint32_t *index)
{
	if (t) {
		struct engine_task *slot = gb->tasks ? gb->tasks + gb->ntasks : NULL;
		if (t != slot) { /* else filled in place, room made by graph_build_next */
			if (!(slot = graph_build_next(gb)))
				return -TDM_ENOMEM;
			*slot = *t;
		}
		slot->index = gb->ntasks;
	}
	*index = gb->ntasks++;
	return 0;
}

/* Room for more edges: 0, -TDM_EQUOTA or -TDM_ENOMEM. */
static int grow_edges(struct graph_build *gb)
{
	uint32_t max = gb->max_edges ? gb->max_edges : UINT32_MAX;
	uint32_t ncap = gb->edges_cap ? gb->edges_cap * 2 : 64;
	if (gb->edges_cap >= max)
		return -TDM_EQUOTA;
	if (ncap > max || ncap < gb->edges_cap)
		ncap = max;
	uint32_t *n = realloc(gb->edges, (size_t)ncap * 2 * sizeof(*n));
	if (!n)
		return -TDM_ENOMEM;
	gb->edges = n;
	if (gb->data) {
		double *d = realloc(gb->data, (size_t)ncap * sizeof(*d));
		if (!d)
			return -TDM_ENOMEM;
		gb->data = d;
	}
	gb->edges_cap = ncap;
	return 0;
}

static inline int add_data_edge(struct graph_build *gb, uint32_t from, uint32_t to, double data)
{
	int err;
	if (gb->nedges == gb->edges_cap && (err = grow_edges(gb)))
		return err;
	gb->edges[2 * gb->nedges] = from;
	gb->edges[2 * gb->nedges + 1] = to;
	uint32_t hi = from > to ? from : to;
	if (hi >= gb->ends)
		gb->ends = hi + 1;
	if (to != gb->last_to ? to < gb->last_to : from < gb->last_from1)
		gb->unique = false;
	gb->last_to = to;
	gb->last_from1 = from + 1;
	if (gb->data)
		gb->data[gb->nedges] = data;
	gb->nedges++;
	return 0;
}

static inline int add_edge(struct graph_build *gb, uint32_t from, uint32_t to)
{
	return add_data_edge(gb, from, to, GRAPH_BUILD_NO_DATA);
}

int graph_build_edge(struct graph_build *gb, uint32_t from, uint32_t to)
{
	return from == to ? -TDM_EEDGE : add_edge(gb, from, to);
}

int graph_build_edge_data(struct graph_build *gb, uint32_t from, uint32_t to, double data)
{
	if (from == to)
		return -TDM_EEDGE;
	if (!gb->data) {
		gb->data = malloc((gb->edges_cap ? gb->edges_cap : 1) * sizeof(*gb->data));
		if (!gb->data)
			return -TDM_ENOMEM;
		for (uint32_t e = 0; e < gb->nedges; e++)
			gb->data[e] = GRAPH_BUILD_NO_DATA;
	}
	return add_data_edge(gb, from, to, data);
}

/* ---- the dependency rule -------------------------------------------------- */

static uint32_t slot_of(const struct graph_build *gb, uint64_t key)
{
	return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> (64 - gb->bufs_bits));
}

static int grow_bufs(struct graph_build *gb)
{
	uint32_t bits = gb->bufs_bits ? gb->bufs_bits + 1 : GB_MIN_BITS;
	uint32_t cap = 1u << bits, mask = cap - 1, old = gb->bufs ? 1u << gb->bufs_bits : 0;
	struct gb_buffer *n = calloc(cap, sizeof(*n)); /* gen 0: unused */
	if (!n)
		return -TDM_ENOMEM;
	struct gb_buffer *o = gb->bufs;
	gb->bufs = n;
	gb->bufs_bits = bits;
	for (uint32_t i = 0; i < old; i++) {
		if (o[i].gen != gb->gen)
			continue;
		uint32_t s = slot_of(gb, o[i].key);
		while (n[s].gen == gb->gen)
			s = (s + 1) & mask;
		n[s] = o[i];
	}
	free(o);
	return 0;
}

/* The buffer's state, made on first use (*fresh set). NULL: no memory. */
static struct gb_buffer *buffer_of(struct graph_build *gb, uint64_t key, bool *fresh)
{
	if (!gb->bufs && grow_bufs(gb))
		return NULL;
	uint32_t mask = (1u << gb->bufs_bits) - 1, s = slot_of(gb, key);
	while (gb->bufs[s].gen == gb->gen) {
		if (gb->bufs[s].key == key) {
			*fresh = false;
			return &gb->bufs[s];
		}
		s = (s + 1) & mask;
	}
	if (2 * (gb->nbufs + 1) > mask + 1) {
		/* At most half full: probes stay short. */
		if (grow_bufs(gb))
			return NULL;
		return buffer_of(gb, key, fresh);
	}
	gb->nbufs++;
	gb->bufs[s] = (struct gb_buffer){ .key = key, .gen = gb->gen, .segs_cap = 1 };
	*fresh = true;
	return &gb->bufs[s];
}

static int add_reader(struct graph_build *gb, uint32_t *head, uint32_t task)
{
	uint32_t r = gb->free_reader;
	if (r != GB_NONE) {
		gb->free_reader = gb->readers[r].next;
	} else {
		if (gb->nreaders == gb->readers_cap) {
			uint32_t ncap = gb->readers_cap ? gb->readers_cap * 2 : 16;
			struct gb_reader *n = realloc(gb->readers, (size_t)ncap * sizeof(*n));
			if (!n)
				return -TDM_ENOMEM;
			gb->readers = n;
			gb->readers_cap = ncap;
		}
		r = gb->nreaders++;
	}
	gb->readers[r] = (struct gb_reader){ .task = task, .next = *head };
	*head = r;
	return 0;
}

/* Gives a reader list back to the pool. */
static void free_readers(struct graph_build *gb, uint32_t head)
{
	if (head == GB_NONE)
		return;
	uint32_t last = head;
	while (gb->readers[last].next != GB_NONE)
		last = gb->readers[last].next;
	gb->readers[last].next = gb->free_reader;
	gb->free_reader = head;
}

static struct gb_seg *segs_of(struct gb_buffer *b)
{
	return b->segs ? b->segs : &b->one;
}

/* The first piece ending after x. */
static uint32_t seg_after(struct gb_buffer *b, uint64_t x)
{
	const struct gb_seg *s = segs_of(b);
	uint32_t lo = 0, hi = b->nsegs;
	/* At or near the end first: slices accessed in order, rows appended. */
	if (!hi || s[hi - 1].end <= x)
		return hi;
	if (hi == 1 || s[hi - 2].end <= x)
		return hi - 1;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (s[mid].end <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Inserts v as piece i. */
static int seg_insert(struct graph_build *gb, struct gb_buffer *b, uint32_t i, struct gb_seg v)
{
	if (b->nsegs == b->segs_cap) {
		uint32_t ncap = b->segs_cap * 2;
		struct gb_seg *n;
		if (!b->segs && gb->spare) {
			n = gb->spare;
			ncap = gb->spare_cap;
			gb->spare = NULL;
			gb->spare_cap = 0;
		} else {
			n = b->segs ? realloc(b->segs, ncap * sizeof(*n))
			            : malloc(ncap * sizeof(*n));
			if (!n)
				return -TDM_ENOMEM;
		}
		if (!b->segs) {
			n[0] = b->one;
			gb->seg_arrays++;
		}
		b->segs = n;
		b->segs_cap = ncap;
	}
	struct gb_seg *s = segs_of(b);
	memmove(&s[i + 1], &s[i], (b->nsegs - i) * sizeof(*s));
	s[i] = v;
	b->nsegs++;
	return 0;
}

/* A copy of a task list, in the same order, into *out. */
static int copy_list(struct graph_build *gb, uint32_t head, uint32_t *out)
{
	uint32_t copy = GB_NONE, last = GB_NONE; /* indexes: the pool may move */
	for (uint32_t r = head; r != GB_NONE; r = gb->readers[r].next) {
		uint32_t n = GB_NONE;
		int err = add_reader(gb, &n, gb->readers[r].task);
		if (err) {
			free_readers(gb, copy);
			return err;
		}
		if (last == GB_NONE)
			copy = n;
		else
			gb->readers[last].next = n;
		last = n;
	}
	*out = copy;
	return 0;
}

/* Splits piece i at x (inside it); the second half reads as the first. */
static int seg_split(struct graph_build *gb, struct gb_buffer *b, uint32_t i, uint64_t x)
{
	struct gb_seg v = segs_of(b)[i];
	int err = copy_list(gb, v.readers, &v.readers);
	if (err)
		return err;
	if ((err = copy_list(gb, v.accs, &v.accs))) {
		free_readers(gb, v.readers);
		return err;
	}
	v.off = x;
	v.whole = false;
	err = seg_insert(gb, b, i + 1, v);
	if (err) {
		free_readers(gb, v.readers);
		free_readers(gb, v.accs);
		return err;
	}
	segs_of(b)[i].end = x;
	segs_of(b)[i].whole = false;
	return 0;
}

/* Makes pieces i0..*i1 (out) tile [a, b) exactly: splits those that
 * straddle an end, fills the gaps with fresh pieces. */
static int seg_cover(struct graph_build *gb, struct gb_buffer *bf, uint64_t a, uint64_t b,
                     uint32_t *i0, uint32_t *i1)
{
	uint32_t i = seg_after(bf, a);
	int err;
	if (i < bf->nsegs && segs_of(bf)[i].off < a) {
		if ((err = seg_split(gb, bf, i, a)))
			return err;
		i++;
	}
	*i0 = i;
	for (uint64_t x = a; x < b; i++) {
		struct gb_seg *s = segs_of(bf);
		if (i < bf->nsegs && s[i].off == x) {
			if (s[i].end > b && (err = seg_split(gb, bf, i, b)))
				return err;
			x = segs_of(bf)[i].end;
		} else {
			uint64_t end = i < bf->nsegs && s[i].off < b ? s[i].off : b;
			struct gb_seg v = { .off = x,
				            .end = end,
				            .writer = GB_NONE,
				            .readers = GB_NONE,
				            .accs = GB_NONE };
			if ((err = seg_insert(gb, bf, i, v)))
				return err;
			x = end;
		}
	}
	*i1 = i;
	return 0;
}

/* An edge from -> task unless it is the one just added (pieces of one
 * range often share their writer or readers). */
static inline int rule_edge(struct graph_build *gb, uint32_t from, uint32_t task)
{
	if (from == GB_NONE || from == task ||
	    (gb->nedges && gb->last_to == task && gb->last_from1 == from + 1))
		return 0;
	return add_edge(gb, from, task);
}

/* Whether piece s has a group of accumulators no plain access followed. */
static inline bool acc_open(const struct gb_seg *s)
{
	return s->accs != GB_NONE && !s->closed;
}

/* Edges from every task of a list. */
static int list_edges(struct graph_build *gb, uint32_t head, uint32_t task)
{
	for (uint32_t r = head; r != GB_NONE; r = gb->readers[r].next) {
		int err = rule_edge(gb, gb->readers[r].task, task);
		if (err)
			return err;
	}
	return 0;
}

/* What a writer of piece s must follow: an open group's accumulators (they
 * follow everything before them), else the reads since the last write (or
 * since the group they closed), else the last writer. With `pre`, each
 * source also goes to that list (what a new group's members follow). */
static int write_edges(struct graph_build *gb, const struct gb_seg *s, uint32_t task, uint32_t *pre)
{
	uint32_t head = acc_open(s) ? s->accs : s->readers;
	int err;
	if (head == GB_NONE) {
		if ((err = rule_edge(gb, s->writer, task)))
			return err;
		if (pre && s->writer != GB_NONE && s->writer != task)
			return add_reader(gb, pre, s->writer);
		return 0;
	}
	for (uint32_t r = head; r != GB_NONE; r = gb->readers[r].next) {
		uint32_t from = gb->readers[r].task;
		if ((err = rule_edge(gb, from, task)))
			return err;
		if (pre && from != task && (*pre == GB_NONE || gb->readers[*pre].task != from) &&
		    (err = add_reader(gb, pre, from)))
			return err;
	}
	return 0;
}

/* Replaces pieces i0 .. i1 by one, v, freeing their lists. */
static void seg_merge(struct graph_build *gb, struct gb_buffer *buf, uint32_t i0, uint32_t i1,
                      struct gb_seg v)
{
	struct gb_seg *s = segs_of(buf);
	for (uint32_t i = i0; i < i1; i++) {
		free_readers(gb, s[i].readers);
		free_readers(gb, s[i].accs);
	}
	s[i0] = v;
	if (i1 - i0 > 1) {
		memmove(&s[i0 + 1], &s[i1], (buf->nsegs - i1) * sizeof(*s));
		buf->nsegs -= i1 - i0 - 1;
	}
}

/* An accumulator of [a, b), pieces i0 .. i1: it joins the open group of
 * exactly that range (the same edges as its first member: from what the
 * group follows), or starts a new one after everything before. */
static int acc_access(struct graph_build *gb, struct gb_buffer *buf, uint32_t i0, uint32_t i1,
                      uint32_t task, uint64_t a, uint64_t b)
{
	struct gb_seg *s = segs_of(buf);
	int err;
	if (i1 - i0 == 1 && acc_open(&s[i0]) && s[i0].whole && s[i0].off == a && s[i0].end == b) {
		if (s[i0].readers == GB_NONE)
			err = rule_edge(gb, s[i0].writer, task);
		else
			err = list_edges(gb, s[i0].readers, task);
		if (!err && gb->readers[s[i0].accs].task != task)
			err = add_reader(gb, &s[i0].accs, task);
		gb->acc_leader = s[i0].acc_leader;
		return err;
	}
	uint32_t pre = GB_NONE, accs = GB_NONE;
	for (uint32_t i = i0; i < i1; i++)
		if ((err = write_edges(gb, &segs_of(buf)[i], task, &pre))) {
			free_readers(gb, pre);
			return err;
		}
	if ((err = add_reader(gb, &accs, task))) {
		free_readers(gb, pre);
		return err;
	}
	/* The group follows pre: no last writer needed beside it. */
	seg_merge(gb, buf, i0, i1,
	          (struct gb_seg){ .off = a,
	                           .end = b,
	                           .writer = GB_NONE,
	                           .readers = pre,
	                           .accs = accs,
	                           .acc_leader = task,
	                           .whole = true });
	gb->acc_leader = task;
	return 0;
}

int graph_build_access(struct graph_build *gb, uint32_t task, uint64_t key, uint64_t offset,
                       uint64_t length, uint8_t mode)
{
	gb->acc_leader = GB_NONE;
	if (!gb->ntasks || task != gb->ntasks - 1 || !(mode & TDM_RW))
		return -TDM_EINVAL;
	uint64_t a = offset, b = length && offset + length > offset ? offset + length : UINT64_MAX;
	bool fresh;
	struct gb_buffer *buf = buffer_of(gb, key, &fresh);
	uint32_t i0, i1;
	int err;
	if (!buf)
		return -TDM_ENOMEM;
	struct gb_seg *s = segs_of(buf);
	if (buf->nsegs == 0) { /* the first access: the inline piece */
		s[0] = (struct gb_seg){
			.off = a, .end = b, .writer = GB_NONE, .readers = GB_NONE, .accs = GB_NONE
		};
		buf->nsegs = 1;
		i0 = 0, i1 = 1;
	} else if (buf->nsegs == 1 && s[0].off == a && s[0].end == b) {
		i0 = 0, i1 = 1; /* the same range again (a buffer used whole) */
	} else {
		if ((err = seg_cover(gb, buf, a, b, &i0, &i1)))
			return err;
		s = segs_of(buf);
	}
	if (mode == TDM_ACC) {
		err = acc_access(gb, buf, i0, i1, task, a, b);
		return err ? err : fresh;
	}
	if (mode & TDM_W) {
		/* Per piece: after the readers since its last write, or with
		 * none after that write (the readers already follow it). */
		for (uint32_t i = i0; i < i1; i++)
			if ((err = write_edges(gb, &s[i], task, NULL)))
				return err;
		/* One piece now: this task wrote it. */
		seg_merge(gb, buf, i0, i1,
		          (struct gb_seg){ .off = a,
		                           .end = b,
		                           .writer = task,
		                           .readers = GB_NONE,
		                           .accs = GB_NONE });
		return fresh;
	}
	for (uint32_t i = i0; i < i1; i++) {
		if (acc_open(&s[i])) {
			/* The first read after a group closes it: it and the reads
			 * after it follow every accumulator, which follow what
			 * readers held. */
			if ((err = list_edges(gb, s[i].accs, task)))
				return err;
			free_readers(gb, s[i].readers);
			s[i].readers = GB_NONE;
			s[i].closed = true;
		} else if (s[i].closed) {
			if ((err = list_edges(gb, s[i].accs, task)))
				return err;
		} else if ((err = rule_edge(gb, s[i].writer, task))) {
			return err;
		}
		uint32_t h = s[i].readers;
		if (h != GB_NONE && gb->readers[h].task == task)
			continue; /* read twice by this task */
		if ((err = add_reader(gb, &s[i].readers, task)))
			return err;
	}
	return fresh;
}

int graph_build_accumulate(struct graph_build *gb, uint32_t task, unsigned arg)
{
	if (!gb->tasks || task != gb->ntasks - 1 || arg >= TDM_MAX_ARGS)
		return -TDM_EINVAL;
	uint32_t leader = gb->acc_leader;
	struct engine_task *t = &gb->tasks[task];
	struct task_acc *a = calloc(1, sizeof(*a));
	if (!a)
		return -TDM_ENOMEM;
	t->acc = a; /* from now on freed with the tasks */
	t->flags |= TASK_ACC;
	a->arg = (uint8_t)arg;
	a->out_ptr = t->call.ptr[arg];
	a->out_off = t->call.off[arg];
	a->partial = calloc(1, t->call.len[arg] ? t->call.len[arg] : 1);
	if (leader == task)
		a->group = calloc(1, sizeof(*a->group));
	else if (leader < task && gb->tasks[leader].acc)
		a->group = gb->tasks[leader].acc->group;
	if (!a->partial || !a->group)
		return a->group || leader == task ? -TDM_ENOMEM : -TDM_EINVAL;
	struct acc_group *g = a->group;
	if (g->n == g->cap) {
		uint32_t ncap = g->cap ? 2 * g->cap : 8;
		uint32_t *n = realloc(g->members, ncap * sizeof(*n));
		if (!n) {
			if (leader == task) {
				free(g);
				a->group = NULL;
			}
			return -TDM_ENOMEM;
		}
		g->members = n;
		g->cap = ncap;
	}
	g->members[g->n++] = task;
	atomic_store_explicit(&g->left, g->n, memory_order_relaxed);
	return 0;
}

/* ---- the result ------------------------------------------------------------ */

/* Successor rows, each pair once (the largest data kept), into off, succ
 * and, when data is not NULL and edges carry data, *data (else NULL);
 * *indeg (unless NULL): each task's number of predecessors, n entries. */
static int successors(const struct graph_build *gb, uint32_t n, uint32_t **off_out,
                      uint32_t **succ_out, double **data_out, uint32_t **indeg_out)
{
	uint32_t m = gb->nedges;
	if (gb->ends > n)
		return -TDM_EEDGE;
	bool with_data = data_out && gb->data;
	uint32_t *off = malloc(((size_t)n + 1) * sizeof(*off));
	uint32_t *succ = malloc((m ? m : 1) * sizeof(*succ));
	uint32_t *at = malloc((n ? n : 1) * sizeof(*at));
	double *data = with_data ? malloc((m ? m : 1) * sizeof(*data)) : NULL;
	if (!off || !succ || !at || (with_data && !data)) {
		free(off);
		free(succ);
		free(at);
		free(data);
		return -TDM_ENOMEM;
	}
	csr_group(off, succ, n, gb->edges, 2 * sizeof(*gb->edges), m);
	/* succ[k] names the edge in slot k: replace it by its target, keeping
	 * each target once per row (at[t]: where t went last), unless no edge
	 * can repeat. */
	uint32_t w = 0;
	if (gb->unique) {
		for (; w < m; w++) {
			uint32_t e = succ[w];
			if (data)
				data[w] = gb->data[e];
			succ[w] = gb->edges[2 * e + 1];
		}
	} else {
		memset(at, 0xff, (n ? n : 1) * sizeof(*at));
		for (uint32_t r = 0; r < n; r++) {
			uint32_t start = w, end = off[r + 1];
			for (uint32_t k = off[r]; k < end; k++) {
				uint32_t e = succ[k], t = gb->edges[2 * e + 1];
				if (at[t] != GB_NONE && at[t] >= start) {
					if (data && gb->data[e] > data[at[t]])
						data[at[t]] = gb->data[e];
					continue;
				}
				at[t] = w;
				if (data)
					data[w] = gb->data[e];
				succ[w++] = t;
			}
			off[r] = start;
		}
		off[n] = w;
	}
	if (indeg_out) {
		memset(at, 0, (size_t)n * sizeof(*at));
		for (uint32_t k = 0; k < w; k++)
			at[succ[k]]++;
		*indeg_out = at;
	} else {
		free(at);
	}
	*off_out = off;
	*succ_out = succ;
	if (data_out)
		*data_out = data;
	return 0;
}

int graph_build_csr(struct graph_build *gb, uint32_t **off, uint32_t **succ, double **data)
{
	return successors(gb, gb->ntasks, off, succ, data, NULL);
}

int graph_build_finish(struct graph_build *gb, struct engine_graph *g)
{
	uint32_t n = gb->ntasks, *off, *succ, *indeg;
	double *data;
	if (n && !gb->tasks)
		return -TDM_EINVAL; /* tasks were only counted */
	int err = successors(gb, n, &off, &succ, &data, &indeg);
	if (err)
		return err;
	for (uint32_t i = 0; i < n; i++) {
		gb->tasks[i].graph = g;
		atomic_init(&gb->tasks[i].ndeps, indeg[i]);
	}
	free(indeg);
	g->ntasks = n;
	g->tasks = gb->tasks;
	g->succ_off = off;
	g->succ = succ;
	g->edge_data = data;
	gb->tasks = NULL;
	gb->ntasks = gb->tasks_cap = 0;
	return 0;
}
