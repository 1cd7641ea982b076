/* Accelerators for the benchmarks that drive backends directly (header
 * only, like bench_util.h): every OpenCL device and every CUDA device the
 * plugin finds, with each backend's note printed when it finds none. */
#ifndef TDM_BENCH_ACCEL_H
#define TDM_BENCH_ACCEL_H

#include <hwloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "backends/backend.h"
#include "tandem.h"

#define BENCH_MAX_ACCELS 32

struct bench_accels {
	const char *who; /* prefix of the lines printed */
	hwloc_topology_t topo;
	struct backend_device devs[BENCH_MAX_ACCELS];
	size_t n;
	bool cuda_loaded;
};

static inline void bench_accels_probe(struct bench_accels *a, const struct backend_ops *ops)
{
	struct backend_probe_params pp = { .topology = a->topo };
	size_t found = 0;
	int err = ops->probe(&pp, a->devs + a->n, BENCH_MAX_ACCELS - a->n, &found);

	if (pp.note[0])
		printf("%s: %s\n", a->who, pp.note);
	if (err)
		printf("%s: %s: probe failed: %s\n", a->who, ops->name, tdm_strerror(err));
	else if (found == 0 && !pp.note[0])
		printf("%s: %s: no device\n", a->who, ops->name);
	else
		a->n += found;
}

/* 0, or -1 when the topology cannot be loaded. Finding no device is no error. */
static inline int bench_accels_open(struct bench_accels *a, const char *who)
{
	char note[BACKEND_NOTE_MAX] = "";

	memset(a, 0, sizeof(*a));
	a->who = who;
	if (hwloc_topology_init(&a->topo) != 0 || hwloc_topology_load(a->topo) != 0) {
		fprintf(stderr, "%s: hwloc: cannot load the topology\n", who);
		return -1;
	}
	bench_accels_probe(a, &backend_opencl);
	const struct backend_ops *cuda = backend_cuda_load(NULL, note, sizeof(note));
	a->cuda_loaded = cuda != NULL;
	if (cuda)
		bench_accels_probe(a, cuda);
	else
		printf("%s: cuda: not used: %s\n", who, note[0] ? note : "no plugin");
	if (a->n == 0)
		printf("%s: no accelerator found, nothing to measure\n", who);
	return 0;
}

static inline void bench_accels_close(struct bench_accels *a)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->devs[i].ops->release)
			a->devs[i].ops->release(&a->devs[i]);
	if (a->cuda_loaded)
		backend_cuda_unload();
	hwloc_topology_destroy(a->topo);
}

#endif
