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
#ifndef TDM_DAEMON_WORKLOAD_H
#define TDM_DAEMON_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "placement/plan.h"

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
};

struct wl_task {
	char name[WL_NAME_MAX]; /* the source's name or kind, printable, maybe truncated */
	double cost; /* finite, >= 0 */
	/* Total size of the data the task reads / writes (WfCommons: its input
	 * and output files); 0 where the source gives none (STG). */
	double data_in, data_out;
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

/* Shared by the parsers (defined in wl_stg.c). */

/* Reads a regular file of at most max bytes into a malloc'd buffer (NUL
 * terminated, *len excluding the NUL). 0, -TDM_EINVAL (too big, not a
 * regular file), -TDM_ENOMEM or -TDM_ESYS, with "path: message". */
int wl_read_file(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen);
/* Sorts w->edges by (src, dst) and merges duplicates into one edge whose
 * data is the largest of theirs (w->nedges shrinks accordingly). */
void wl_sort_edges(struct workload *w);
/* 0 when the graph is acyclic; -TDM_EINVAL with a task on a cycle in
 * *on_cycle (UINT32_MAX if an edge names a task >= w->ntasks);
 * -TDM_ENOMEM. */
int wl_check_acyclic(const struct workload *w, uint32_t *on_cycle);
/* Copies up to len bytes of s (at most WL_NAME_MAX - 1) into dst, with
 * '?' for every byte that is not printable ASCII, and a NUL. */
void wl_copy_name(char *dst, const char *s, size_t len);
/* The last component of a path (after the last '/'). */
const char *wl_basename(const char *path);

#endif
