/* Machine descriptions for simulation: devices, memory nodes, the links
 * between them and optional per-kernel cost tables, read from TOML
 * (docs/machines.md) and written back by
 * `tandemctl calibrate --export`.
 *
 * A description turns into what the real daemon would have measured: a
 * struct calibration (device figures, link latency and bandwidth) for the
 * cost models' prior, and a cost-model document (profiler_load_json's
 * format) holding the cost tables as learned footprints. The simulated
 * devices complete work at what those models predict.
 *
 * Input is untrusted: every field is checked; errors are one line,
 * "PATH:LINE:COL: message" (or "PATH: message" when no position applies). */
#ifndef TDM_SIM_MACHINE_H
#define TDM_SIM_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "backends/kernels.h"
#include "profiler/calibrate.h"

#define MACHINE_MAX_DEVICES CAL_MAX_DEVICES /* 64 */
#define MACHINE_MAX_NODES CAL_MAX_NODES /* 16 */
#define MACHINE_MAX_COSTS 100000 /* cost table entries */
#define MACHINE_MAX_INPUT ((size_t)16 << 20)
#define MACHINE_NAME_MAX 64
_Static_assert(MACHINE_MAX_DEVICES <= 64, "shares_cores is a 64-bit mask");
/* What a device that shares cores does to them when the description does
 * not say (measured with PoCL 3.1 on a 2-vCPU Linux VM, docs/simulation.md,
 * "Shared cores"): a core worker loses a 4 ms slice to the device's threads
 * about once per 5 ms of its own compute while the device is busy, and the
 * device runs at half speed on a core whose worker computes. */
#define MACHINE_CORE_SLICE_NS 4e6
#define MACHINE_CORE_SLICE_EVERY_NS 5e6
#define MACHINE_BUSY_CORE_SHARE 0.5

struct machine_device {
	char name[MACHINE_NAME_MAX]; /* unique: "cpu0", "gpu1", ... */
	char model[MACHINE_NAME_MAX]; /* devices of one model share a cost model */
	enum tdm_device_kind kind; /* TDM_DEV_CPU, _CLCPU, _GPU, _NPU */
	uint16_t node; /* memory node: 0 = host; host devices (CPU) are on 0 */
	uint64_t mem_bytes; /* accelerators: device memory (0 for node 0) */
	double gemm_gflops; /* as calibration measures them */
	double mem_gbps;
	double launch_ns;
	/* Host cores: the memory bandwidth of their socket, shared by all of
	 * them (GB/s; 0 when the description gives none: the cores do not
	 * contend). A core alone reaches mem_gbps; n cores together reach
	 * min(n * mem_gbps, socket_gbps). */
	double socket_gbps;
	/* Half-precision matrix throughput (tensor cores), GFLOP/s; 0 when not
	 * given (then gemm_gflops holds for fp16 too). */
	double fp16_gflops;
	/* shares_cores_with: bit j set when this accelerator runs its kernels
	 * on the core of device j (a "cpu" device), as an OpenCL CPU device
	 * does; the simulator makes them contend (docs/simulation.md). */
	uint64_t shares_cores;
	/* With shares_cores (docs/simulation.md, "Shared cores"): a core
	 * worker computing while this device is busy loses its core to this
	 * device's threads for core_slice_ns once per core_slice_every_ns of its
	 * own compute; and while the worker computes this device still gets
	 * busy_core_share of that core. A description that does not give them
	 * gets MACHINE_CORE_SLICE_NS and the two after it; 0 (a machine built
	 * in code) leaves the workers their cores and the device none of a
	 * busy one. */
	double core_slice_ns, core_slice_every_ns, busy_core_share;
	/* present = false: not there when the simulation starts; it joins by
	 * an "add" scale event (docs/elastic-sim.md), so its kind and costs
	 * are known beforehand. Other simulators leave it out. */
	bool absent;
};

/* One measured cost: kernel on devices of a model, at one footprint. */
struct machine_cost {
	uint16_t kernel; /* backends/kernels.h id */
	char model[MACHINE_NAME_MAX];
	struct kernel_features feat;
	double ns; /* mean device time, > 0 */
	double spread_ns; /* >= 0 */
};

struct machine {
	char name[MACHINE_NAME_MAX];
	uint32_t ndevices, nnodes;
	/* A daemon worker that sleeps (idle for longer than its spin, sim_opts.
	 * spin_us) runs this long after work for it appears: the host's
	 * wake-up latency, calibration's wake_ns (0: at once, as if it spun). */
	double wake_ns;
	struct machine_device dev[MACHINE_MAX_DEVICES];
	/* [src][dst]; src == dst unused. A link the file leaves out is derived
	 * as calibration does (device to device through the host). */
	struct cal_link link[MACHINE_MAX_NODES][MACHINE_MAX_NODES];
	uint32_t ncosts;
	struct machine_cost *costs; /* malloc'd; machine_free releases it */
};

void machine_init(struct machine *m);
void machine_free(struct machine *m); /* leaves m as machine_init does */

/* Parses a TOML description into *m (cleared first; output only). name
 * prefixes messages and becomes m->name when the file has none. 0,
 * -TDM_EINVAL (err set), -TDM_ENOMEM, or -TDM_ESYS when the file cannot
 * be read. */
int machine_parse(const char *text, size_t len, const char *name, struct machine *m, char *err,
                  size_t errlen);
int machine_load(const char *path, struct machine *m, char *err, size_t errlen);

/* Keeps the first `count` devices of a kind (in file order) and drops the
 * others, with their nodes and cost entries when no device is left on
 * them; count larger than what the machine has is -TDM_EINVAL. */
int machine_restrict(struct machine *m, enum tdm_device_kind kind, uint32_t count, char *err,
                     size_t errlen);

/* The figures calibration would have measured on this machine. */
void machine_calibration(const struct machine *m, struct calibration *out);
/* The cost tables as a cost-model document for profiler_load_json (NULL
 * on ENOMEM; an empty "models" array when there are no tables). */
json_t *machine_models_json(const struct machine *m);

/* Writes a description of the machine a daemon runs on: its calibration
 * (device names, kinds, models, nodes and memory from devs[]) and, from
 * models (profiler_to_json's document, may be NULL), one cost entry per
 * learned footprint. The output parses back with machine_parse. 0,
 * -TDM_EINVAL (ndevs is not cal->ndevices) or -TDM_ESYS. */
int machine_write(FILE *out, const char *name, const struct backend_device *devs, size_t ndevs,
                  const struct calibration *cal, const json_t *models);

#endif
