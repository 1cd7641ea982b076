/* Virtual devices for simulation: they do no work and hold no memory; a
 * copy or a kernel "completes" at a time computed on the virtual clock of
 * the world they belong to. Every device is accelerator-shaped (copies,
 * launch_async, events), CPU cores included (on the host node), so the
 * engine's one staging path drives them all.
 *
 * Times: a copy starts when its link is free, what it waits for is done and
 * the clock has reached the issue; it takes latency + bytes / bandwidth and
 * holds the link (one copy at a time per direction of a link). A kernel
 * starts when its device is free and its inputs arrived; the front end
 * says how long it takes (sim_world.launch). Single-threaded: the
 * simulation driver is the only caller. */
#ifndef TDM_BACKENDS_SIM_BACKEND_H
#define TDM_BACKENDS_SIM_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"

struct sim_link {
	double latency_ns;
	double ns_per_byte;
	uint64_t free_at; /* the link is busy with earlier copies until then */
};

struct sim_world {
	uint64_t now; /* the virtual clock, ns */
	struct sim_link link[BACKEND_MAX_NODES][BACKEND_MAX_NODES]; /* [src][dst] */
	/* A kernel issued on device dev may start at *start (device free,
	 * copies done; a paced device's kernels do not wait for the device:
	 * the front end orders them); the front end moves *start later for
	 * what it models itself (data along edges of abstract tasks), records
	 * the task and returns its end (>= *start). ev is the kernel's event,
	 * for sim_event_retime. */
	uint64_t (*launch)(void *ctx, unsigned dev, const struct kernel_def *k,
	                   const struct tdm_kernel_call *call, struct backend_event *ev,
	                   uint64_t *start);
	/* Optional: a copy was issued (for the schedule's copy tracks). */
	void (*copied)(void *ctx, unsigned src, unsigned dst, uint64_t bytes, uint64_t start,
	               uint64_t end);
	void *ctx;
	/* A worker that waits for an event (a read-back to the host, which
	 * residency makes synchronously) is blocked until the event is done:
	 * the kernel it launches next starts no earlier. The front end clears
	 * it before each worker looks for work. */
	uint64_t blocked_until;
	uint64_t bytes_moved, copies;
	struct sim_event *free_events; /* recycled */
	uint64_t next_mem; /* fake device addresses */
	/* Growable memory (mem_reserve/mem_grow) as CUDA's VMM does it:
	 * chunks of vmm_granule (0: 2 MiB, CUDA's usual granularity) mapped
	 * as a range grows. mapped_bytes counts what all ranges hold. */
	uint64_t vmm_granule;
	uint64_t mapped_bytes;
	struct sim_range *ranges;
	size_t nranges, ranges_cap;
};

struct sim_range {
	uint64_t mem, reserved, mapped;
};

/* backend_device.priv of a simulated device. */
struct sim_device {
	struct sim_world *world;
	unsigned index; /* in the engine's device order */
	uint16_t node;
	uint64_t free_at; /* its compute queue is busy until then */
	/* Its kernels' times are set by the front end as they run (cores
	 * shared with other devices: sim.c), not when they are issued. */
	bool paced;
	bool runs[KERNEL_COUNT]; /* the kernels its machine prices for it */
};

extern const struct backend_ops backend_sim;

/* When ev completes on the virtual clock. */
uint64_t sim_event_time(const struct backend_event *ev);
/* A paced device's kernel ran from start to done after all. */
void sim_event_retime(struct backend_event *ev, uint64_t start, uint64_t done);
/* Frees the recycled events. */
void sim_world_fini(struct sim_world *w);

#endif
