/* Schedules as pictures and files: Chrome / Perfetto trace JSON (the
 * "Trace Event Format": load it in ui.perfetto.dev or chrome://tracing) and
 * an SVG Gantt chart. The simulator writes both for simulated schedules,
 * and `tandemctl trace` makes the daemon write the same JSON for real runs,
 * so that the two can be opened side by side.
 *
 * Output is deterministic: the same schedule gives the same bytes (fixed
 * number formatting, tasks in the order given, no timestamps of the run). */
#ifndef TDM_WORKLOAD_SCHEDULE_OUT_H
#define TDM_WORKLOAD_SCHEDULE_OUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One interval on a device's timeline: a task, or a copy on a link. */
struct sched_span {
	uint32_t device; /* index into sched_view.devices */
	uint64_t start_ns, end_ns; /* end >= start */
	const char *name; /* kernel or task name; printable ASCII */
	uint32_t graph; /* the submission it belongs to (colour in the Gantt) */
	uint32_t task; /* index in its graph */
	uint64_t bytes; /* copies: bytes moved; tasks: 0 */
};

struct sched_view {
	const char *title; /* workload and policy, e.g. "cholesky-20 / dmda" */
	size_t ndevices;
	const char *const *devices; /* device names, one track each */
	size_t nspans;
	const struct sched_span *spans;
	/* Copies between memory nodes, drawn on tracks of their own after the
	 * devices ("h2d gpu0", ...); may be 0 / NULL. */
	size_t nlinks;
	const char *const *links;
	size_t ncopies;
	const struct sched_span *copies; /* .device indexes links[] */
};

/* {"displayTimeUnit":"ns","traceEvents":[...]}: one "M" thread_name event
 * per track, then one "X" complete event per span with ts/dur in
 * microseconds (three decimals), pid 1, tid = track + 1, args {graph, task}
 * (and bytes for copies). 0 or -TDM_ESYS when the write fails. */
int sched_write_chrome(FILE *out, const struct sched_view *v);

/* A self-contained SVG: one row per track, a time axis with round ticks,
 * one rectangle per span (colour by graph, a <title> tooltip with name,
 * start, end), width px wide (0: 1200). 0 or -TDM_ESYS. */
int sched_write_svg(FILE *out, const struct sched_view *v, unsigned width);

#endif
