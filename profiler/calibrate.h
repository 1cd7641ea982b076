/* Start-up calibration: what each device and each link between memory nodes
 * can do, measured in about a second, cached under the state directory and
 * re-run when the hardware changes. The figures are the cost models' prior. */
#ifndef TDM_PROFILER_CALIBRATE_H
#define TDM_PROFILER_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "backends/backend.h"

#define CAL_MAX_DEVICES 64
#define CAL_MAX_NODES 16 /* memory nodes, as placement/residency.h counts them */
#define CAL_KEY_MAX 128
#define CAL_WAKE_MAX_NS 1e7

struct cal_device {
	/* Identity of the device's kind: "<kind>:<model>". Identical devices
	 * (every core of one CPU model) share a key, one measurement and one
	 * cost model. */
	char key[CAL_KEY_MAX];
	uint16_t node; /* memory node it computes from (0 = host) */
	double gemm_gflops; /* sgemm throughput, GFLOP/s */
	double mem_gbps; /* STREAM-like copy bandwidth of its memory, GB/s (bytes read + written) */
	double launch_ns; /* fixed cost of one task: an empty launch, to completion */
};

struct cal_link {
	double gbps; /* bytes per ns */
	double latency_ns;
	bool measured; /* false: derived (host-staged device to device, or same node) */
};

struct calibration {
	uint32_t ndevices; /* in the engine's device order */
	uint32_t nnodes;
	struct cal_device dev[CAL_MAX_DEVICES];
	struct cal_link link[CAL_MAX_NODES][CAL_MAX_NODES]; /* [src][dst] */
	/* A thread sleeping in epoll_wait on an eventfd runs this long after
	 * another core writes it (median; 0: not measured): what a sleeping
	 * worker of the daemon takes to start on work it is woken for. Below
	 * CAL_WAKE_MAX_NS (a machine description's limit too). */
	double wake_ns;
	char fingerprint[512]; /* the hardware these figures belong to */
	double seconds; /* time the measurement took (of the run that made them) */
	bool from_cache;
};

/* The key of a device: "<kind>:<model>" with characters outside
 * [A-Za-z0-9._:-] replaced by '_', truncated to CAL_KEY_MAX-1. */
void calibrate_device_key(const struct backend_device *d, char *out, size_t len);

/* A description of the devices (keys, nodes, memory sizes, core count) that
 * changes when the hardware does. */
void calibrate_fingerprint(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                           char *out, size_t len);

/* Measures everything now. devs/nodes in engine order; nodes[i] is device
 * i's memory node. Devices sharing a key are measured once. Must run before
 * the engine's workers start (it uses the devices directly). 0 or -TDM_E*. */
int calibrate_run(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                  struct calibration *out);

/* One device joining a running daemon, which no worker uses yet: its
 * figures into cal->dev[slot] (key, node, sgemm, memory, launch; slot may
 * be past cal->ndevices, which grows), and for an accelerator on memory
 * node `node` the links between that node and the host (measured) and the
 * other accelerators (derived through the host). Nothing else in cal
 * changes, and no other device is touched: the others keep running
 * meanwhile (their load may lower the figures, which the cost models then
 * correct from the tasks it runs). Takes about a second of this thread.
 * 0, or -TDM_EINVAL (a host device on an accelerator's node, a slot or
 * node out of range). */
int calibrate_one(const struct backend_device *d, uint16_t node, uint32_t slot,
                  struct calibration *cal);

/* The links of accelerator node `node` that are not measured: within its
 * memory (from its copy bandwidth mem_gbps; 0: left as it is) and to every
 * other accelerator node through the host, from the host links in cal. */
void calibrate_derive_node(struct calibration *cal, unsigned node, double mem_gbps);

/* The cache file for these devices: state_dir/calibration-<hash of the
 * fingerprint>.json. 0, or -TDM_EINVAL when it does not fit in len. */
int calibrate_cache_path(const char *state_dir, const struct backend_device *devs,
                         const uint16_t *nodes, size_t n, char *out, size_t len);

/* Uses the cache file (calibrate_cache_path) when its fingerprint matches
 * these devices and force is false; otherwise measures and writes the file
 * atomically (temp file + rename). state_dir NULL or "": measure, cache nothing. A
 * cache that cannot be read or written, or a state directory that is not
 * the daemon's own (profiler/state_file.h), is logged, not fatal. */
int calibrate_load_or_run(const char *state_dir, const struct backend_device *devs,
                          const uint16_t *nodes, size_t n, bool force, struct calibration *out);

/* Figures any machine could have, for when nothing was measured (unit tests,
 * simulation of unknown devices): every device gets the same modest numbers. */
void calibrate_defaults(size_t ndevices, size_t nnodes, struct calibration *out);

json_t *calibration_to_json(const struct calibration *c);
/* Untrusted input (a file on disk): every field is checked; on error returns
 * -TDM_EINVAL, writes why to err and leaves *out untouched. */
int calibration_from_json(const json_t *doc, struct calibration *out, char *err, size_t errlen);

#endif
