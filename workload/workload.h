/* Workload graphs read from files: the Standard Task Graph Set (STG,
 * Kasahara lab) and WfCommons workflow instances (JSON). The simulation
 * front end and the benches share this in-memory form and turn it into a
 * placement/plan.h DAG for a given set of devices.
 *
 * Every parser treats its input as untrusted: the input size, the number of
 * tasks and edges, and every number are bounded; anything outside the
 * bounds or the format is rejected with -TDM_EINVAL and a one-line message,
 * never undefined behaviour. On any error *out is left empty (as wl_init
 * leaves it), with nothing to free.
 *
 * Messages:
 *   STG        "NAME:LINE: message"
 *   WfCommons  "NAME: JSON.PATH: message", or "NAME:LINE:COL: message" for
 *              JSON syntax errors
 *   files      "PATH: message" when the file cannot be read
 * where NAME is the name passed in (the path for the *_load functions). */
#ifndef TDM_WORKLOAD_WORKLOAD_H
#define TDM_WORKLOAD_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backends/kernels.h"
#include "graph/build.h"
#include "placement/plan.h"
#include "tandem/wire.h"

#define WL_NAME_MAX 64 /* task and workload names: up to 63 bytes and a NUL */
#define WL_MAX_TASKS 1000000u
#define WL_MAX_EDGES 10000000u
#define WL_MAX_INPUT ((size_t)256 << 20) /* bytes of text or JSON accepted */
#define WL_ERR_MAX 256 /* enough for any message */

/* Bounds on numbers. STG costs are integers in abstract units; WfCommons
 * runtimes are seconds (up to ~31 years) and file sizes bytes (up to 2^53,
 * where doubles stop being exact). */
#define WL_STG_MAX_COST 1000000000.0
#define WL_MAX_SECONDS 1e9
#define WL_MAX_BYTES 9007199254740992.0

enum wl_units {
	WL_UNITS_ABSTRACT = 0, /* STG: costs and data in the source's own units */
	WL_UNITS_SECONDS, /* WfCommons: costs in seconds, data in bytes */
	WL_UNITS_NS, /* traces and tiled generators: costs in ns, data in bytes */
};

/* An argument of a kernel task: one of w->bufs, with its access mode. */
struct wl_arg {
	uint32_t buf; /* index into w->bufs */
	uint8_t mode; /* enum tdm_access: TDM_R, TDM_W or TDM_RW */
};

struct wl_task {
	char name[WL_NAME_MAX]; /* the source's name or kind, printable, maybe truncated */
	double cost; /* finite, >= 0 */
	/* Total size of the data the task reads / writes (WfCommons: its input
	 * and output files); 0 where the source gives none (STG). */
	double data_in, data_out;
	/* Kernel tasks (traces, tiled generators): has_kernel is set, kernel is
	 * a backends/kernels.h id, feat its cost features and args[] the
	 * buffers it touches. Abstract tasks (STG, WfCommons, random DAGs):
	 * has_kernel is 0, the cost is `cost` (or the task's row of
	 * w->dev_cost) and data moves along edges (wl_edge.data). */
	bool has_kernel;
	uint16_t kernel;
	struct kernel_features feat;
	uint8_t nargs;
	struct wl_arg args[TDM_MAX_ARGS];
	int32_t priority;
	uint32_t graph; /* index into w->graphs; 0 when the workload has none */
	/* Traces recorded from a real run: where and when the task ran (ns
	 * since the trace began); rec_device is the device index + 1 in the
	 * trace's device list, 0 when not recorded. */
	uint32_t rec_device;
	double rec_start_ns, rec_end_ns;
	/* Recorded runs: guarded by a router that sent it no token, the task
	 * completed unrun when released (a kernel task with a predecessor);
	 * the simulator replays it so, never handing it to the policy. */
	bool skipped;
};

/* A submission: traces hold many graphs arriving over time; the other
 * sources one graph arriving at 0. Tasks of a graph are contiguous
 * (first .. first + ntasks - 1) and edges join tasks of the same graph. */
struct wl_graph {
	uint32_t first, ntasks;
	double arrival_ns; /* since the trace began */
	uint32_t client; /* flows: tasks of different clients share devices fairly */
	int32_t priority;
	uint8_t policy_hint; /* enum tdm_policy_hint, 0: none */
	double deadline_ns; /* relative to arrival, 0: none */
};

struct wl_edge {
	uint32_t src, dst; /* task indices: src must finish before dst starts */
	double data; /* finite, >= 0: what src hands to dst (WfCommons: bytes) */
};

/* An acyclic task graph. Edges are sorted by (src, dst), with no duplicates
 * and no self-loops. */
struct workload {
	char name[WL_NAME_MAX];
	enum wl_units units;
	uint32_t ntasks, nedges;
	struct wl_task *tasks;
	struct wl_edge *edges;
	/* Optional per-device costs of abstract tasks (heterogeneous sources:
	 * random HEFT DAGs, traces with cost arrays): dev_cost[v * ndev_cost +
	 * d] is task v's cost on device d, < 0 where it cannot run; NULL with
	 * ndev_cost 0 when tasks[].cost holds for every device. */
	uint32_t ndev_cost;
	double *dev_cost;
	/* Buffers of kernel tasks: their sizes in bytes, and whether the
	 * client keeps them on devices between graphs (weights, KV). */
	uint32_t nbufs;
	double *buf_bytes;
	bool *buf_keep;
	/* Submissions; NULL with ngraphs 0 means one graph of every task
	 * arriving at 0. */
	uint32_t ngraphs;
	struct wl_graph *graphs;
	/* Traces: the devices of the recorded run, which rec_device and the
	 * columns of dev_cost name (ndev_names == ndev_cost when both are set). */
	uint32_t ndev_names;
	char (*dev_names)[WL_NAME_MAX];
};

void wl_init(struct workload *w);
void wl_free(struct workload *w); /* leaves w as wl_init does; NULL is fine */

/* Standard Task Graph Set text: the number of real tasks n on the first
 * line, then n + 2 lines "id cost npred pred..." for ids 0 .. n + 1 in
 * order, each predecessor an earlier task, then anything on lines starting
 * with '#' (such lines and blank lines may appear anywhere). Ids 0 and
 * n + 1 are the dummy entry and exit tasks: they must cost 0 (and the entry
 * have no predecessors) and are DROPPED, so real task k becomes task k - 1
 * and edges from the entry or to the exit disappear. Since they cost 0
 * and carry no data, every schedule's makespan is unchanged. Edges carry no
 * data (0). Costs are integers in 0 .. WL_STG_MAX_COST; a real task may
 * cost 0. Lines may end in CRLF; data lines must be printable ASCII.
 * name prefixes messages ("stg" when NULL) and its last component becomes
 * w->name. 0, -TDM_EINVAL or -TDM_ENOMEM. */
int wl_stg_parse(const char *text, size_t len, const char *name, struct workload *out, char *err,
                 size_t errlen);
/* Reads a regular file of at most WL_MAX_INPUT bytes and parses it, with the
 * path in messages and its last component as w->name. 0, -TDM_EINVAL,
 * -TDM_ENOMEM or -TDM_ESYS (cannot read). */
int wl_stg_load(const char *path, struct workload *out, char *err, size_t errlen);

/* A WfCommons instance (https://github.com/wfcommons/WfFormat):
 *   1.5 / 1.6: workflow.specification.tasks[] {id, name?, parents?,
 *     children?, inputFiles?, outputFiles?}, workflow.specification.files[]
 *     {id, sizeInBytes} (optional: without it, edges carry 0) and
 *     workflow.execution.tasks[] {id, runtimeInSeconds}, one per task;
 *   1.0 - 1.4: workflow.tasks[] (workflow.jobs[] before 1.3) {name, id?,
 *     runtimeInSeconds | runtime, parents?, children?, files?[] {link:
 *     "input" | "output", name, path?, sizeInBytes | size}}, tasks naming
 *     each other by name (or id).
 * An edge exists where either end lists the other (parents / children); its
 * data is the total size of the files that the parent outputs and the child
 * inputs. Costs are runtimes in seconds, data in bytes (WL_UNITS_SECONDS).
 * Task ids and names are case-sensitive strings; the graph must be acyclic.
 * Task names are the "name" (else the id), made printable and cut to 63
 * bytes. name prefixes messages ("wfcommons" when NULL) and its last
 * component becomes w->name. 0, -TDM_EINVAL or -TDM_ENOMEM. */
int wl_wfcommons_parse(const char *text, size_t len, const char *name, struct workload *out,
                       char *err, size_t errlen);
int wl_wfcommons_load(const char *path, struct workload *out, char *err, size_t errlen);

/* A workload as a plan_dag for ndev devices. With speed NULL the devices
 * are identical: cost[v * ndev + d] = tasks[v].cost for every d; else
 * cost[v * ndev + d] = tasks[v].cost / speed[d] (each speed finite, > 0).
 * Edge data is copied as is: the plan_machine's inv_bw must be in time per
 * data unit of the workload (seconds per byte for WL_UNITS_SECONDS). d->g
 * points into arrays that d owns until wl_dag_free. 0, -TDM_EINVAL or
 * -TDM_ENOMEM (d is then empty). */
struct wl_dag {
	struct plan_dag g;
	unsigned ndev;
	double *cost;
	uint32_t *succ_off;
	uint32_t *succ;
	double *edge_data;
};
int wl_to_dag(const struct workload *w, unsigned ndev, const double *speed, struct wl_dag *d);
void wl_dag_free(struct wl_dag *d); /* NULL is fine */

/* ---- tandem traces (docs/simulation.md, "Trace format") ---- */

/* A trace: JSON Lines, one record per line, times in ns (units
 * WL_UNITS_NS). Messages are "NAME:LINE: message" (the line of the record
 * at fault). 0, -TDM_EINVAL or -TDM_ENOMEM. */
int wl_trace_parse(const char *text, size_t len, const char *name, struct workload *out, char *err,
                   size_t errlen);
int wl_trace_load(const char *path, struct workload *out, char *err, size_t errlen);

/* Writes a whole workload as a trace that wl_trace_parse reads back into
 * the same workload (names, costs, kernels, features, arguments, buffers,
 * graphs, edges and recorded placements). 0, -TDM_EINVAL (an invalid
 * workload: nothing is written), -TDM_ENOMEM or -TDM_ESYS. */
int wl_trace_write(FILE *out, const struct workload *w);

/* Streaming, for the daemon's recorder: a header, then buffers as they are
 * first used, then each graph (its record and its tasks' records, edges
 * given as each task's predecessors inside the graph). Each call writes
 * whole lines; devices are written as indices into the header's list. 0,
 * -TDM_EINVAL (invalid input) or -TDM_ESYS. */
int wl_trace_write_header(FILE *out, const char *machine, const char *policy,
                          const char *const *devices, uint32_t ndevices);
int wl_trace_write_buffer(FILE *out, uint32_t id, double bytes, bool keep);
/* tasks[] of the graph (graph field ignored; args[].buf are buffer ids as
 * written by wl_trace_write_buffer); pred_off/pred give each task's
 * predecessors as indices into tasks[] (pred[pred_off[i] .. pred_off[i+1])),
 * each smaller than i. */
int wl_trace_write_graph(FILE *out, uint32_t id, const struct wl_graph *g,
                         const struct wl_task *tasks, const uint32_t *pred_off,
                         const uint32_t *pred);

/* ---- generators ---- */

enum wl_tiled_kind { WL_TILED_CHOLESKY = 0, WL_TILED_LU, WL_TILED_QR };

/* A tiled factorisation of a tiles x tiles matrix of nb x nb single-
 * precision tiles, as kernel tasks on one buffer per tile (and one per T
 * factor for QR), in the sequential order of the right-looking algorithm:
 * Cholesky spotrf/strsm/ssyrk/sgemm_nt (tiles (tiles+1)(tiles+2)/6 tasks),
 * LU sgetrf_nopiv/strsm/sgemm_nt, QR sgeqrt/sormqr/stsqrt/stsmqr. Edges are
 * those the daemon would infer on each tile (wl_infer_edges, graph/build.h:
 * read after write, write after read, write after write), with the bytes
 * the successor reads of what the predecessor wrote. 0, -TDM_EINVAL (tiles 1..1000, nb 1..4096) or
 * -TDM_ENOMEM. */
int wl_gen_tiled(enum wl_tiled_kind kind, uint32_t tiles, uint32_t nb, struct workload *out,
                 char *err, size_t errlen);
const char *wl_tiled_name(enum wl_tiled_kind kind); /* "cholesky", "lu", "qr" */

/* Topcuoglu, Hariri and Wu's random graphs (HEFT, TPDS 2002):
 *   n tasks in about sqrt(n)/alpha levels of mean width alpha*sqrt(n);
 *   each task's out-degree is drawn around out_degree (edges only go to
 *   later levels); the mean cost w_dag; each task's mean cost w_i uniform
 *   in [0, 2 w_dag] and its cost on device d uniform in
 *   [w_i (1 - beta/2), w_i (1 + beta/2)];
 *   edge data so that mean communication / mean computation = ccr.
 * Abstract units, costs per device in dev_cost. The same parameters and
 * seed give the same graph on every machine. */
struct wl_random_params {
	uint32_t n; /* 1 .. WL_MAX_TASKS */
	double ccr; /* >= 0 */
	double alpha; /* shape, > 0 */
	uint32_t out_degree; /* >= 1 */
	double beta; /* heterogeneity, 0 .. 2 */
	uint32_t ndev; /* 1 .. 64 devices the costs are drawn for */
	double w_dag; /* mean cost, > 0 (0: 100) */
	uint64_t seed;
};
int wl_gen_random(const struct wl_random_params *p, struct workload *out, char *err, size_t errlen);

/* Layered random graphs (the layer-by-layer method, Cordeiro et al.,
 * SIMUTools 2010): n tasks in `levels` levels (0: round(sqrt(n))) of
 * sizes as equal as can be (the first n % levels one larger); every pair
 * (u, v) with u in an earlier level than v is an edge u -> v with
 * probability p, independently (drawn by geometric skips, so in time
 * linear in the edges). Costs, the same on every device (tasks[].cost, no
 * dev_cost): uniform in [1, 10] (WL_LAYERED_UNIFORM), or uniform in
 * [1, 3] or [8, 20] with probability 1/2 each (WL_LAYERED_BIMODAL). Edge
 * data uniform in [0, 2), then scaled so that its mean is ccr times the
 * mean cost (0: none). Abstract units. The same parameters give the same
 * graph everywhere. */
enum wl_layered_costs { WL_LAYERED_UNIFORM = 0, WL_LAYERED_BIMODAL };
struct wl_layered_params {
	uint32_t n; /* 1 .. WL_MAX_TASKS */
	double p; /* edge probability, 0 .. 1 */
	enum wl_layered_costs costs;
	double ccr; /* 0 .. 1000 */
	uint32_t levels; /* 0: round(sqrt(n)); at most n */
	uint64_t seed;
};
/* 0, -TDM_EINVAL (a parameter out of range, or more than WL_MAX_EDGES
 * edges expected or drawn) or -TDM_ENOMEM, with a message in err. */
int wl_gen_layered(const struct wl_layered_params *p, struct workload *out, char *err,
                   size_t errlen);

/* Shared by the parsers (the input helpers in wl_io.c, the rest in wl_stg.c). */

/* Reads a regular file of at most max bytes into a malloc'd buffer (NUL
 * terminated, *len excluding the NUL). 0, -TDM_EINVAL (too big, not a
 * regular file), -TDM_ENOMEM or -TDM_ESYS, with "path: message". */
int wl_read_file(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen);
/* The line of text[0 .. len) that starts at *pos, without its '\n' and
 * a '\r' before it: its start, its length in *n; *pos moves past it. */
const char *wl_next_line(const char *text, size_t len, size_t *pos, size_t *n);
/* [s, s + n) all decimal digits: their value in *v (the caller bounds n:
 * ten digits may wrap), true; else false. n == 0 gives 0, true. */
bool wl_digits(const char *s, size_t n, uint32_t *v);
/* A reader's rejection of line `line` of name: "name:line: message" into
 * err (when given, the message cut at 200 bytes). Returns -TDM_EINVAL. */
int wl_fail_at(char *err, size_t errlen, const char *name, size_t line, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
/* The readers' shared *_load: wl_init(out), read path (at most
 * WL_MAX_INPUT bytes), parse it with parse, naming it path. */
typedef int (*wl_parse_fn)(const char *text, size_t len, const char *name, struct workload *out,
                           char *err, size_t errlen);
int wl_load_file(const char *path, wl_parse_fn parse, struct workload *out, char *err,
                 size_t errlen);
/* Grows *p (an array of *cap elements of elem bytes) to hold at least
 * need, doubling from 64 and never past limit elements. 0, or -TDM_ENOMEM
 * (*p and *cap unchanged). */
int wl_grow(void **p, uint32_t *cap, uint32_t need, size_t elem, uint32_t limit);
/* Sorts w->edges by (src, dst) and merges duplicates into one edge whose
 * data is the largest of theirs (w->nedges shrinks accordingly). */
void wl_sort_edges(struct workload *w);
/* 0 when the graph is acyclic; -TDM_EINVAL with a task on a cycle in
 * *on_cycle (UINT32_MAX if an edge names a task >= w->ntasks);
 * -TDM_ENOMEM. */
int wl_check_acyclic(const struct workload *w, uint32_t *on_cycle);
/* ---- edges as graphs (wl_graph.c) ---- */

/* w->edges grouped by source (by_dst false) or destination, stably:
 * off[0 .. ntasks] (ntasks + 1 entries) and perm[k], the index in w->edges
 * of the edge in slot k (nedges entries). Every end must be < ntasks. */
void wl_group_edges(const struct workload *w, bool by_dst, uint32_t *off, uint32_t *perm);
/* Each task's listed predecessors: wl_group_edges by destination into
 * malloc'd *off and *edge (sources ascending, as w->edges is sorted).
 * 0, -TDM_EINVAL (an edge names no task) or -TDM_ENOMEM. */
int wl_preds(const struct workload *w, uint32_t **off, uint32_t **edge);
/* What an edge hands over unless it says: between two kernel tasks, the
 * bytes of every buffer that src writes (w or rw) and dst accesses, each
 * counted once (wl_kernel_edge_data); else 0. */
double wl_edge_data(const struct workload *w, uint32_t src, uint32_t dst);
double wl_kernel_edge_data(const struct wl_task *src, const struct wl_task *dst,
                           const double *buf_bytes);
/* Task v's dependencies given to gb, where it is the task added last (as
 * v - first, in the graph [first, first + n)): its buffer accesses (kernel
 * tasks; graph/build.h's rule, as the daemon applies it), then its listed
 * predecessors (pred_off/pred_edge from wl_preds), with their data when
 * with_data. 0, -TDM_EINVAL (a predecessor outside the graph), or the
 * builder's error. */
int wl_task_deps(const struct workload *w, uint32_t v, uint32_t first, uint32_t n,
                 const uint32_t *pred_off, const uint32_t *pred_edge, bool with_data,
                 struct graph_build *gb);
/* Makes w->edges, graph by graph, what the daemon would make of its tasks:
 * the listed edges (with their data) and those of the rule on the kernel
 * tasks' buffers (with wl_edge_data), each once, sorted. What the
 * generators of kernel tasks use. 0, -TDM_EINVAL (an edge leaves its graph,
 * or more than WL_MAX_EDGES) or -TDM_ENOMEM (w unchanged on error). */
int wl_infer_edges(struct workload *w);

/* Copies up to len bytes of s (at most WL_NAME_MAX - 1) into dst, with
 * '?' for every byte that is not printable ASCII, and a NUL. */
void wl_copy_name(char *dst, const char *s, size_t len);
/* The last component of a path (after the last '/'). */
const char *wl_basename(const char *path);

#endif
