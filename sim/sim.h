/* The simulator: a workload replayed on a described machine by the real
 * engine, policies, placement, residency and cost models, with virtual
 * devices (backends/sim) on a virtual clock instead of hardware and a
 * workload reader instead of client sessions (docs/simulation.md).
 *
 * What a simulated task costs:
 *   - kernel tasks: the machine's cost model (its cost tables as learned
 *     footprints, else the roofline of its device figures), as the daemon
 *     would predict it on that machine;
 *   - abstract tasks: the cost the workload states (per device when it
 *     gives dev_cost), in its units.
 * Data: kernel tasks move their buffers through residency (copies on the
 * machine's links, one at a time per link direction); abstract tasks hand
 * their edge data to successors on other memory nodes (latency + data /
 * bandwidth, without contention, as list-scheduling papers assume).
 * Devices that share host cores (machine_device.shares_cores) contend for
 * them: the core workers lose their cores to the sharing device in slices,
 * the sharing device runs on what they leave (docs/simulation.md, "Shared
 * cores").
 *
 * Single-threaded and deterministic: the same machine, workload and
 * options give the same schedule, byte for byte. Only the wall-clock
 * figures (wall_ns, engine_ns) vary. */
#ifndef TDM_SIM_SIM_H
#define TDM_SIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "sim/machine.h"
#include "workload/scale_events.h"
#include "workload/schedule_out.h"
#include "workload/workload.h"

struct sim_opts {
	const char *policy; /* a registered policy name */
	/* Abstract units (WL_UNITS_ABSTRACT): ns per cost unit and bytes per
	 * data unit (0: 1e6 and 1e6). */
	double unit_ns, unit_bytes;
	bool record; /* keep the schedule for sched_write_* */
	const struct policy_tuning *tuning; /* NULL: defaults */
	uint32_t pipeline_depth; /* accelerators (0: the engine's default) */
	uint32_t watchdog_ms; /* 0: the engine's default */
	/* How long the simulated daemon's idle workers spin before they sleep,
	 * in us (its spin_us; 0: its default, ENGINE_SPIN_US_DEFAULT; < 0:
	 * they do not spin). Matters on a machine with wake_ns only. */
	double spin_us;
	/* Scale events (docs/elastic-sim.md), applied at their virtual times
	 * with the engine's device calls; NULL: none. Devices described with
	 * present = false join only by an "add". */
	const struct scale_events *events;
};

/* What one scale event did. Times are virtual, on the clock of the
 * workload's arrivals (as the events' own); -1 in empty_ns /
 * first_task_ns: not within the run. */
struct sim_event_result {
	struct scale_event ev;
	bool applied; /* false: every graph was done before its time */
	int rc; /* the engine's or the residency's answer */
	double applied_ns;
	uint32_t busy; /* drain, remove: tasks staged or running there then */
	double empty_ns; /* drain, remove: nothing staged or running there any more */
	double first_task_ns; /* add: its first task started */
};

struct sim_result {
	char policy[32];
	uint32_t ndevices;
	const char *devname[MACHINE_MAX_DEVICES]; /* point into the machine */
	uint64_t busy_ns[MACHINE_MAX_DEVICES], tasks_on[MACHINE_MAX_DEVICES];
	/* From the first arrival to the last task's end. */
	double makespan_ns;
	/* max(critical path, area bound) of the whole workload on this
	 * machine, arrivals ignored; 0 above 4M task x device costs. */
	double lower_bound_ns;
	double cp_ns; /* critical path with each task's best cost, free data */
	double seq_ns; /* everything on the best single device (or each task's best) */
	double slr, speedup; /* makespan / cp_ns, seq_ns / makespan */
	uint64_t bytes_moved, copies, tasks, graphs;
	bool fallback; /* the watchdog replaced the policy */
	double wall_ns; /* the whole run, wall clock */
	double engine_ns; /* wall time inside the engine (policy, placement, models) */
	double loop_ns; /* wall time of the event loop alone (no set-up, no bounds) */
	/* The schedule (opts.record): spans[] one per task in workload order,
	 * copy_spans[] on links named link_names[]. */
	struct sched_span *spans;
	size_t nspans;
	struct sched_span *copy_spans;
	size_t ncopies, copies_cap;
	char link_names[RES_MAX_NODES * RES_MAX_NODES][40];
	const char *link_name_ptr[RES_MAX_NODES * RES_MAX_NODES];
	size_t nlinks;
	int link_track[RES_MAX_NODES][RES_MAX_NODES]; /* -1: none yet */
	/* opts.events, one each, in time order (devname[], busy_ns[] and
	 * tasks_on[] are in engine id order: present devices first). */
	struct sim_event_result *events;
	uint32_t nevents;
};

/* Runs w on m under o->policy. 0, or -TDM_EINVAL / -TDM_ENOMEM with a one-
 * line reason in err (a workload that does not fit the machine, a policy
 * that does not exist, a task no device can run, ...). */
int sim_run(const struct machine *m, const struct workload *w, const struct sim_opts *o,
            struct sim_result *r, char *err, size_t errlen);
/* Frees the schedule (spans); the figures and events stay. */
void sim_result_free(struct sim_result *r);
/* Frees the events' results. */
void sim_result_free_events(struct sim_result *r);

/* The schedule as a sched_view for sched_write_chrome / _svg (points into
 * r and m; valid while both are). */
void sim_schedule_view(const struct sim_result *r, const char *title, struct sched_view *v);

/* `tandemd --simulate ...` (sim_cli.c): parses its own options, runs
 * each policy, prints the table; returns the exit status. */
int sim_main(int argc, char **argv);

#endif
