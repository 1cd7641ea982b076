/* StarPU 1.3 sampling files (a directory such as ~/.starpu/sampling) read
 * and turned into a machine description (docs/machines.md): the bus files
 * (bus_HOST.config, .bandwidth, .latency) give the devices and the links,
 * the history-based codelet models of StarPU's Cholesky and LU examples the
 * cost tables. Used by tools/starpu2machine.c; docs/machines.md says what is
 * mapped to what.
 *
 * The files are untrusted: a malformed one is rejected with
 * "FILE:LINE: message". */
#ifndef TDM_TOOLS_STARPU_PERFMODEL_H
#define TDM_TOOLS_STARPU_PERFMODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SPM_MAX_NODES 64 /* bus matrices: at most this many memory nodes */

/* StarPU's device types, as the model files number them. */
enum spm_type { SPM_CPU = 0, SPM_CUDA = 1, SPM_OPENCL = 2, SPM_MIC = 3 };

/* bus_HOST.config, .bandwidth (MB/s) and .latency (us). [src][dst], node 0
 * is RAM, 1..ncuda the CUDA devices, then the OpenCL ones; NAN where the
 * file has none. */
struct spm_bus {
	unsigned ncpus, ncuda, nopencl;
	unsigned nnodes; /* rows (and columns) of the matrices */
	double bw[SPM_MAX_NODES][SPM_MAX_NODES];
	double lat[SPM_MAX_NODES][SPM_MAX_NODES];
};

/* One row of a history table. */
struct spm_entry {
	uint64_t size; /* bytes of the task's buffers */
	double flops; /* as the codelet gave it; 0 when it gives none */
	double mean_us, dev_us;
	uint64_t n; /* samples */
};

/* One combination of a model (a device type, id and core count) and its
 * first implementation's history. Combinations of several device types
 * (parallel tasks) are read and left out. */
struct spm_arch {
	enum spm_type type;
	int devid, ncores;
	size_t nentries;
	struct spm_entry *e;
};

struct spm_model {
	size_t narch;
	struct spm_arch *arch;
};

int spm_bus_read(const char *dir, const char *host, struct spm_bus *bus, char *err, size_t errlen);
/* 0, -TDM_EINVAL (err set) or -TDM_ENOMEM; a file that does not exist is
 * -TDM_ESYS. */
int spm_model_read(const char *path, struct spm_model *out, char *err, size_t errlen);
void spm_model_free(struct spm_model *m);

struct spm_options {
	const char *dir, *host;
	int ncpus, ncuda; /* devices to keep; < 0: all the bus file lists */
};

/* Writes the machine description of opts->host to out. 0, or a negative
 * error with a message in err. */
int spm_convert(const struct spm_options *opts, FILE *out, char *err, size_t errlen);

#endif
