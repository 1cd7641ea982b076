/* The one graph builder: tasks in program order, the buffers each touches,
 * explicit edges; out comes an engine graph (tasks, CSR successors,
 * dependency counts) or a plain successor CSR. The daemon's intake builds
 * every client graph with it, the simulator every workload graph, and the
 * workload generators their edges, so that a program has the same edges
 * wherever it runs.
 *
 * The dependency rule (graph_build_access), per byte of each buffer, in
 * the order the accesses are given (program order); accesses name byte
 * ranges, and only overlapping ranges are ordered:
 *   - a read follows the last writer of each byte it reads (read after
 *     write);
 *   - a write (TDM_W or TDM_RW) follows every task that read one of its
 *     bytes since that byte's last write (write after read), and the last
 *     writer of its bytes (write after write, or read after write for
 *     TDM_RW) unless one such reader read all that writer wrote in the
 *     range: that reader already follows it.
 *   - accumulators (TDM_ACC: each adds into the range, which it neither
 *     reads nor writes otherwise) of the same range are not ordered among
 *     themselves: the first after a plain access follows what a write
 *     would, the next ones of exactly that range the same tasks; a plain
 *     access after them follows them all, and one of another range (a new
 *     group) follows them as a write does.
 * So tasks on disjoint slices of one buffer (requests sharing a pooled KV
 * cache) get no edge between them, and accesses to whole buffers get the
 * edges of the per-buffer rule. A task never depends on itself (a buffer
 * it uses twice adds nothing between its own accesses).
 *
 * Edges are unique in the result (a pair given twice, or both by the rule
 * and explicitly, is one edge); the successors of a task are in the order
 * their first edge was given (ascending when every edge goes to the task
 * added last, as intake's and the simulator's do). Bounded: at most
 * max_edges edges may be given (duplicates count), else -TDM_EQUOTA; out of
 * memory is -TDM_ENOMEM. After an error the builder is only good for
 * graph_build_fini. */
#ifndef TDM_GRAPH_BUILD_H
#define TDM_GRAPH_BUILD_H

#include <stdint.h>

#include "graph/task.h"

struct gb_buffer; /* a buffer's dependency state (build.c) */
struct gb_seg;
struct gb_reader;

struct graph_build {
	uint32_t ntasks, tasks_cap, ntasks_hint;
	struct engine_task *tasks; /* NULL when tasks are only counted */
	uint32_t max_edges; /* 0: no limit */
	uint32_t nedges, edges_cap, ends; /* ends: past the highest task an edge names */
	/* The edges so far came grouped by target, sources ascending in each
	 * group: none can repeat (last_to, last_from1: the last edge's target
	 * and source + 1). */
	bool unique;
	uint32_t last_to, last_from1;
	uint32_t *edges; /* (from, to) pairs, as given */
	double *data; /* per edge, once graph_build_edge_data was called */
	struct gb_buffer *bufs; /* open addressing on the key */
	uint32_t nbufs, bufs_bits, gen;
	uint32_t seg_arrays; /* buffers whose pieces went to the heap */
	struct gb_seg *spare; /* a piece array kept from the last graph */
	uint32_t spare_cap;
	struct gb_reader *readers; /* each buffer's readers since its last write */
	uint32_t nreaders, readers_cap, free_reader;
	uint32_t acc_leader; /* see graph_build_access */
};

/* ntasks_hint: how many tasks are expected (0: unknown); storage grows
 * with the tasks given, up to the hint before it goes past it. */
void graph_build_init(struct graph_build *gb, uint32_t ntasks_hint, uint32_t max_edges);
void graph_build_fini(struct graph_build *gb); /* frees all not handed over */
/* Starts another graph as graph_build_init would, but keeps some of the
 * last one's scratch memory (a few KiB at most) for it. */
void graph_build_reset(struct graph_build *gb, uint32_t ntasks_hint, uint32_t max_edges);

/* Room for ntasks tasks in all, made at once, for a caller that knows
 * how many it gives (the simulator: one block, not a chain of copies as
 * it grows); intake grows as a client's tasks come. 0 or -TDM_ENOMEM. */
int graph_build_reserve(struct graph_build *gb, uint32_t ntasks);

/* Adds the next task (a copy of *t, or only a count when t is NULL, for
 * graph_build_csr); its index is returned in *index. 0 or -TDM_ENOMEM. */
int graph_build_task(struct graph_build *gb, const struct engine_task *t, uint32_t *index);
/* Room for the next task, to fill in place and then pass to
 * graph_build_task (no copy); until then it is not part of the graph.
 * Valid until the builder is called again; NULL: out of memory. */
struct engine_task *graph_build_next(struct graph_build *gb);

/* Task `task`, which must be the one added last, accesses [offset, offset
 * + length) of the buffer named by key (length 0: to its end) in mode
 * (TDM_R, TDM_W, TDM_RW, TDM_ACC):
 * adds the edges of the rule (after TDM_ACC, acc_leader names the first
 * task of the group it joined, itself when it started one). 1 when this is the graph's first access
 * to the buffer, 0 when not; -TDM_EINVAL (task is not the last one, or no mode), -TDM_EQUOTA or
 * -TDM_ENOMEM. */
int graph_build_access(struct graph_build *gb, uint32_t task, uint64_t key, uint64_t offset,
                       uint64_t length, uint8_t mode);

/* After task's TDM_ACC access of its argument arg (call.ptr, off and len
 * set): its task_acc, in the group the access joined (a zeroed partial;
 * the engine sums the group, see graph/task.h). 0, -TDM_EINVAL (not the
 * last task, or no TDM_ACC access just before) or -TDM_ENOMEM. */
int graph_build_accumulate(struct graph_build *gb, uint32_t task, unsigned arg);

/* An explicit edge: `to` runs after `from` (both below the final task
 * count, checked at the end; the caller keeps the graph acyclic). 0,
 * -TDM_EEDGE (from == to), -TDM_EQUOTA or -TDM_ENOMEM. */
int graph_build_edge(struct graph_build *gb, uint32_t from, uint32_t to);
/* The same with what the edge hands over (>= 0), for graph.edge_data: a
 * pair given twice keeps the largest. Once any edge has data, those
 * without (the rule's, graph_build_edge's) carry GRAPH_BUILD_NO_DATA in
 * the result, for the caller to fill in. */
int graph_build_edge_data(struct graph_build *gb, uint32_t from, uint32_t to, double data);
#define GRAPH_BUILD_NO_DATA (-1.0)

/* Hands the tasks and the successors over to g: g->ntasks, tasks (each
 * with its graph, index and ndeps), succ_off, succ, and edge_data when
 * graph_build_edge_data was used (else NULL). g's other fields are left
 * alone. 0, -TDM_EEDGE (an edge names a task past the last),
 * -TDM_EINVAL (tasks were only counted) or -TDM_ENOMEM; g is untouched on
 * error. */
int graph_build_finish(struct graph_build *gb, struct engine_graph *g);

/* The successors alone, for builders of other graphs (workload edges):
 * *off (ntasks + 1) and *succ (off[ntasks]), and when data is not NULL
 * *data beside succ (NULL unless graph_build_edge_data was used), all
 * malloc'd. 0, -TDM_EEDGE or -TDM_ENOMEM. */
int graph_build_csr(struct graph_build *gb, uint32_t **off, uint32_t **succ, double **data);

#endif
