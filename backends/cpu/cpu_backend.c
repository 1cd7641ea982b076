/* CPU backend: one device per core (or per listed CPU), each driven by a
 * worker thread bound to it with hwloc. Every device is a slot of the CPU
 * gang (cpu_gang.h), through which a kernel may use idle cores. */
#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include <stdio.h>

#include "backends/backend.h"
#include "backends/cpu/cpu_gang.h"
#include "common/log.h"
#include "tandem.h"

/* The NUMA node whose CPUs include all of set, or -1. */
static int numa_node_of(hwloc_topology_t topo, hwloc_const_cpuset_t set)
{
	hwloc_obj_t node = NULL;

	while ((node = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, node)))
		if (node->cpuset && hwloc_bitmap_isincluded(set, node->cpuset))
			return (int)node->os_index;
	return -1;
}

/* The package's "CPUModel" string, or "core N" when hwloc has none. */
static void model_of(hwloc_topology_t topo, hwloc_const_cpuset_t set, int os_index, char *out,
                     size_t size)
{
	hwloc_obj_t obj = hwloc_get_obj_covering_cpuset(topo, set);
	const char *model = NULL;

	for (; obj && !model; obj = obj->parent)
		model = hwloc_obj_get_info_by_name(obj, "CPUModel");
	if (model && *model)
		snprintf(out, size, "%s", model);
	else
		snprintf(out, size, "core %d", os_index);
}

static int add_device(hwloc_topology_t topo, struct backend_device *out, size_t max, size_t *n,
                      hwloc_const_cpuset_t set, int os_index)
{
	if (*n >= max)
		return 0;
	struct backend_device *d = &out[*n];
	hwloc_bitmap_t copy = hwloc_bitmap_dup(set);
	cpu_set_t cpus;
	bool bound = hwloc_cpuset_to_glibc_sched_affinity(topo, set, &cpus, sizeof(cpus)) == 0;
	struct cpu_gang_slot *slot = copy ? cpu_gang_slot_add(bound ? &cpus : NULL) : NULL;
	if (!slot) {
		hwloc_bitmap_free(copy);
		return -TDM_ENOMEM;
	}
	*d = (struct backend_device){
		.kind = TDM_DEV_CPU,
		.ops = &backend_cpu,
		.os_index = os_index,
		.bind_set = copy,
		.priv = slot,
		.mem_bytes = 0, /* host memory */
		.numa_node = numa_node_of(topo, set),
		.node = 0,
	};
	snprintf(d->name, sizeof(d->name), "cpu%zu", *n);
	model_of(topo, set, os_index, d->model, sizeof(d->model));
	(*n)++;
	return 0;
}

static int cpu_probe(struct backend_probe_params *p, struct backend_device *out, size_t max,
                     size_t *n)
{
	hwloc_topology_t topo = p->topology;
	int err = 0;

	*n = 0;
	kernels_cpu_init();
	if (p->ncores) {
		for (size_t i = 0; i < p->ncores && !err; i++) {
			hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(topo, (unsigned)p->cores[i]);
			if (!pu) {
				log_error("cpu.cores: CPU %d is not in this machine's allowed set",
				          p->cores[i]);
				return -TDM_ECONFIG;
			}
			err = add_device(topo, out, max, n, pu->cpuset, p->cores[i]);
		}
		return err;
	}
	int ncores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
	for (int i = 0; i < ncores && !err; i++) {
		hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, (unsigned)i);
		int first = hwloc_bitmap_first(core->cpuset);
		err = add_device(topo, out, max, n, core->cpuset, first);
	}
	if (!err && *n == 0) {
		/* No core objects (some VMs): fall back to one device per PU. */
		int npus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
		for (int i = 0; i < npus && !err; i++) {
			hwloc_obj_t pu = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PU, (unsigned)i);
			err = add_device(topo, out, max, n, pu->cpuset, (int)pu->os_index);
		}
	}
	return err;
}

static void cpu_release(struct backend_device *d)
{
	hwloc_bitmap_free(d->bind_set);
	d->bind_set = NULL;
	cpu_gang_slot_remove(d->priv);
	d->priv = NULL;
}

static int cpu_worker_init(const struct backend_device *d, void *topology)
{
	if (!topology || !d->bind_set)
		return 0;
	if (hwloc_set_cpubind(topology, d->bind_set, HWLOC_CPUBIND_THREAD) != 0) {
		log_warn("%s: cannot bind worker to CPU %d", d->name, d->os_index);
		return -TDM_ESYS;
	}
	return 0;
}

static int cpu_launch(const struct backend_device *d, const struct kernel_def *k,
                      const struct tdm_kernel_call *call)
{
	struct cpu_gang_slot *slot = d->priv;
	if (!slot)
		return k->cpu(call);
	cpu_gang_enter(slot);
	int err = k->cpu(call);
	cpu_gang_leave(slot);
	return err;
}

static bool cpu_supports(const struct backend_device *d, const struct kernel_def *k)
{
	(void)d;
	return k->cpu != NULL;
}

const struct backend_ops backend_cpu = {
	.abi_version = BACKEND_ABI_VERSION,
	.name = "cpu",
	.probe = cpu_probe,
	.release = cpu_release,
	.worker_init = cpu_worker_init,
	.supports = cpu_supports,
	.launch = cpu_launch,
};
