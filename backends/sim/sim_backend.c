/* Virtual devices on a virtual clock (sim_backend.h). */
#include "backends/sim/sim_backend.h"

#include <math.h>
#include <stdlib.h>

#include "common/grow.h"
#include "tandem.h"

struct backend_event {
	uint64_t start, done; /* on the virtual clock */
	struct backend_event *next_free;
};

/* The free list links events through next_free; sim_world keeps it as an
 * opaque pointer. */
struct sim_event;

static struct sim_device *sdev(const struct backend_device *d)
{
	return d->priv;
}

static int new_event(struct sim_world *w, uint64_t start, uint64_t done, struct backend_event **out)
{
	struct backend_event *ev = (struct backend_event *)w->free_events;
	if (ev)
		w->free_events = (struct sim_event *)ev->next_free;
	else if (!(ev = malloc(sizeof(*ev))))
		return -TDM_ENOMEM;
	ev->start = start;
	ev->done = done;
	ev->next_free = NULL;
	*out = ev;
	return 0;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

uint64_t sim_event_time(const struct backend_event *ev)
{
	return ev ? ev->done : 0;
}

void sim_event_retime(struct backend_event *ev, uint64_t start, uint64_t done)
{
	ev->start = start;
	ev->done = done;
}

void sim_world_fini(struct sim_world *w)
{
	struct backend_event *ev = (struct backend_event *)w->free_events;
	while (ev) {
		struct backend_event *next = ev->next_free;
		free(ev);
		ev = next;
	}
	w->free_events = NULL;
	free(w->ranges);
	w->ranges = NULL;
	w->nranges = w->ranges_cap = 0;
	w->mapped_bytes = 0;
}

static int sim_probe(struct backend_probe_params *p, struct backend_device *out, size_t max,
                     size_t *n)
{
	(void)p;
	(void)out;
	(void)max;
	*n = 0; /* the simulator builds its devices from a machine description */
	return 0;
}

/* The simulator decides (sim.c): a device runs what its machine prices. */
static bool sim_supports(const struct backend_device *d, const struct kernel_def *k)
{
	return k->id < KERNEL_COUNT && sdev(d)->runs[k->id];
}

static int sim_mem_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	struct sim_world *w = sdev(d)->world;
	(void)bytes; /* residency keeps each node within its capacity */
	*mem = (void *)(uintptr_t)(++w->next_mem * 64);
	return 0;
}

static uint64_t sim_granule(const struct sim_world *w)
{
	return w->vmm_granule ? w->vmm_granule : UINT64_C(2) << 20;
}

static struct sim_range *sim_range_of(struct sim_world *w, void *mem)
{
	for (size_t i = 0; i < w->nranges; i++)
		if (w->ranges[i].mem == (uint64_t)(uintptr_t)mem)
			return &w->ranges[i];
	return NULL;
}

static void sim_mem_free(const struct backend_device *d, void *mem)
{
	struct sim_world *w = sdev(d)->world;
	struct sim_range *r = sim_range_of(w, mem);
	if (r) {
		w->mapped_bytes -= r->mapped;
		*r = w->ranges[--w->nranges];
	}
}

static int sim_mem_reserve(const struct backend_device *d, uint64_t capacity, void **mem)
{
	struct sim_world *w = sdev(d)->world;
	uint64_t g = sim_granule(w);
	if (capacity > UINT64_MAX - g)
		return -TDM_ENOMEM;
	if (w->nranges == w->ranges_cap) {
		size_t ncap = w->ranges_cap ? w->ranges_cap * 2 : 16;
		struct sim_range *n = realloc(w->ranges, ncap * sizeof(*n));
		if (!n)
			return -TDM_ENOMEM;
		w->ranges = n;
		w->ranges_cap = ncap;
	}
	*mem = (void *)(uintptr_t)(++w->next_mem * 64);
	w->ranges[w->nranges++] =
	        (struct sim_range){ (uint64_t)(uintptr_t)*mem, (capacity + g - 1) / g * g, 0 };
	return 0;
}

static int sim_mem_grow(const struct backend_device *d, void *mem, uint64_t bytes)
{
	struct sim_world *w = sdev(d)->world;
	struct sim_range *r = sim_range_of(w, mem);
	if (!r || bytes > r->reserved)
		return -TDM_EINVAL;
	uint64_t g = sim_granule(w);
	uint64_t step = grow_step(r->mapped, bytes, g, g, r->reserved);
	r->mapped += step;
	w->mapped_bytes += step;
	return 0;
}

static int sim_copy(struct sim_world *w, unsigned src, unsigned dst, uint64_t bytes,
                    struct backend_event *after, struct backend_event **done)
{
	struct sim_link *l = &w->link[src][dst];
	uint64_t start = max64(max64(w->now, l->free_at), after ? after->done : 0);
	uint64_t end = start + (uint64_t)llround(l->latency_ns + (double)bytes * l->ns_per_byte);
	int err = new_event(w, start, end, done);
	if (err)
		return err;
	l->free_at = end;
	w->bytes_moved += bytes;
	w->copies++;
	if (w->copied)
		w->copied(w->ctx, src, dst, bytes, start, end);
	return 0;
}

static int sim_copy_h2d(const struct backend_device *d, void *mem, uint64_t off, const void *host,
                        uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)mem;
	(void)off;
	(void)host;
	return sim_copy(sdev(d)->world, 0, sdev(d)->node, bytes, after, done);
}

static int sim_copy_d2h(const struct backend_device *d, void *host, void *mem, uint64_t off,
                        uint64_t bytes, struct backend_event *after, struct backend_event **done)
{
	(void)mem;
	(void)off;
	(void)host;
	return sim_copy(sdev(d)->world, sdev(d)->node, 0, bytes, after, done);
}

static int sim_launch_async(const struct backend_device *d, const struct kernel_def *k,
                            const struct tdm_kernel_call *call, struct backend_event *const *waits,
                            size_t nwaits, struct backend_event **done)
{
	struct sim_device *sd = sdev(d);
	struct sim_world *w = sd->world;
	uint64_t earliest = max64(w->now, sd->paced ? 0 : sd->free_at);
	for (size_t i = 0; i < nwaits; i++)
		earliest = max64(earliest, waits[i] ? waits[i]->done : 0);
	earliest = max64(earliest, w->blocked_until);
	uint64_t start = earliest;
	int err = new_event(w, start, start, done);
	if (err)
		return err;
	uint64_t end = w->launch(w->ctx, sd->index, k, call, *done, &start);
	sim_event_retime(*done, start, end);
	sd->free_at = end;
	return 0;
}

/* Time is the driver's: it completes tasks in time order, so a kernel's
 * event is done when it is waited for. A copy waited for at once (a
 * read-back to the host) blocks its worker until it is done. */
static int sim_event_wait(const struct backend_device *d, struct backend_event *ev)
{
	struct sim_world *w = sdev(d)->world;
	w->blocked_until = max64(w->blocked_until, ev->done);
	return 0;
}

static int sim_event_query(const struct backend_device *d, struct backend_event *ev)
{
	return sdev(d)->world->now >= ev->done;
}

static uint64_t sim_event_started(const struct backend_device *d, struct backend_event *ev)
{
	(void)d;
	return ev->start;
}

static void sim_event_release(const struct backend_device *d, struct backend_event *ev)
{
	struct sim_world *w = sdev(d)->world;
	ev->next_free = (struct backend_event *)w->free_events;
	w->free_events = (struct sim_event *)ev;
}

const struct backend_ops backend_sim = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "sim",
	.probe = sim_probe,
	.supports = sim_supports,
	.mem_alloc = sim_mem_alloc,
	.mem_free = sim_mem_free,
	.mem_reserve = sim_mem_reserve,
	.mem_grow = sim_mem_grow,
	.copy_h2d = sim_copy_h2d,
	.copy_d2h = sim_copy_d2h,
	.launch_async = sim_launch_async,
	.event_wait = sim_event_wait,
	.event_query = sim_event_query,
	.event_release = sim_event_release,
	.event_started = sim_event_started,
};
