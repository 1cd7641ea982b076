/* The CPU gang: one task on a core may spread its work over the other
 * cores the CPU backend drives, but only over those whose worker is idle
 * (docs/kernels.md, "Multi-core CPU kernels").
 *
 * Each CPU device has a gang slot: its core, a flag raised while the core's
 * worker runs a kernel (cpu_launch), and, once a gang job was first posted,
 * a helper thread bound to that core. A kernel that posts a job runs items
 * itself; the helpers of idle cores claim items too, and a helper stops
 * claiming as soon as its core's worker starts a kernel, so a core is
 * shared for at most one item. A helper never runs when its core has work
 * of its own, so the gang does not oversubscribe the cores. */
#ifndef TDM_BACKENDS_CPU_CPU_GANG_H
#define TDM_BACKENDS_CPU_CPU_GANG_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cpu_gang_slot;

/* Tunables (tests and benches change them; 0 = no limit). At most this
 * many threads run one job, the caller included. */
extern unsigned cpu_gang_max_threads;
/* A kernel posts a job only for at least this many bytes of reads:
 * below it, waking helpers costs more than they save. */
extern uint64_t cpu_gang_min_bytes;

/* A slot for the core(s) in cpus (NULL: its helper stays unbound), joined
 * to the gang; NULL when out of memory. */
struct cpu_gang_slot *cpu_gang_slot_add(const cpu_set_t *cpus);
/* Stops the slot's helper and leaves the gang. No kernel may be running on
 * the slot's device. */
void cpu_gang_slot_remove(struct cpu_gang_slot *s);

/* Around one kernel on the slot's core, on its worker thread: marks the
 * core busy and makes the slot the caller's for cpu_gang_run. */
void cpu_gang_enter(struct cpu_gang_slot *s);
void cpu_gang_leave(struct cpu_gang_slot *s);

/* Runs fn(ctx, i) for every i < nitems, in any order, on the calling thread
 * and on the helpers of idle cores (only on the calling thread when it is
 * no core's worker or when want_helpers is false). Returns 0, or the first
 * error an item returned; the items not started by then are skipped. */
int cpu_gang_run(size_t nitems, int (*fn)(void *ctx, size_t item), void *ctx, bool want_helpers);

/* How many items helpers (not the callers) have run since the start: for
 * tests and benches. */
uint64_t cpu_gang_helper_items(void);
/* Whether the slot's core is marked busy (tests). */
bool cpu_gang_slot_busy(const struct cpu_gang_slot *s);

#endif
