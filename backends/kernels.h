/* The kernel table: every built-in kernel's name, signature, argument check,
 * cost features and CPU implementation. Accelerator backends keep their own
 * implementations, looked up by kernel id (backend_ops.supports). The
 * semantics of every kernel are in docs/kernels.md. */
#ifndef TDM_BACKENDS_KERNELS_H
#define TDM_BACKENDS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem/kernel_abi.h"

/* Device classes, as the configuration and tandemctl name them. */
enum tdm_device_kind {
	TDM_DEV_CPU = 0, /* a core driven by a worker thread */
	TDM_DEV_CLCPU, /* an OpenCL CPU device (PoCL) */
	TDM_DEV_GPU, /* OpenCL or CUDA GPU */
	TDM_DEV_NPU, /* OpenCL ACCELERATOR */
	TDM_DEV_KIND_COUNT
};

/* Kernel ids, in table order (what tdm_kernel_lookup returns). */
enum kernel_id {
	KERNEL_NOOP = 0,
	KERNEL_SPIN,
	KERNEL_FILL,
	KERNEL_AXPY,
	KERNEL_SGEMM,
	KERNEL_COPY,
	KERNEL_RMSNORM,
	KERNEL_SOFTMAX,
	KERNEL_ROPE,
	KERNEL_ATTN_DECODE,
	KERNEL_MOE_EXPERT,
	KERNEL_TOPK_ROUTER,
	/* Tiled Cholesky (single precision, nb x nb tiles, lower). */
	KERNEL_SPOTRF,
	KERNEL_STRSM,
	KERNEL_SSYRK,
	KERNEL_SGEMM_NT,
	/* Decode attention over a ragged batch whose KV sits in a shared pool,
	 * located by an index buffer (docs/kernels.md). */
	KERNEL_ATTN_DECODE_VARLEN,
	/* Simulation only (no backend implements them; clients cannot submit
	 * them): the other tiled factorisations' kernels, for the workload
	 * generators, and an abstract task whose cost the workload states. */
	KERNEL_SGETRF, /* LU without pivoting of one tile */
	KERNEL_SGEQRT, /* QR of one tile: A, T */
	KERNEL_SORMQR, /* apply its reflectors to a tile: V, T, C */
	KERNEL_STSQRT, /* QR of a triangle on top of a tile: R, A, T */
	KERNEL_STSMQR, /* apply those to a pair of tiles: A1, A2, V, T */
	KERNEL_SIM_TASK,
	KERNEL_COUNT
};

#define KERNEL_SIM_FIRST KERNEL_SGETRF
static inline bool kernel_sim_only(uint32_t id)
{
	return id >= KERNEL_SIM_FIRST;
}

/* What a task costs, from its scalars and argument lengths (docs/kernels.md). */
struct kernel_features {
	double flops;
	double bytes; /* read + written */
	double domain; /* kernel-specific size, e.g. kv_len*nkv*hd*batch */
};

struct kernel_def {
	const char *name;
	enum kernel_id id;
	uint8_t nargs;
	uint8_t nscalars;
	uint8_t arg_modes[TDM_MAX_ARGS]; /* enum tdm_access */
	uint8_t scalar_types[TDM_MAX_SCALARS]; /* enum tdm_scalar_type */
	/* Bit i: argument i (TDM_RW, float32) only has a contribution added
	 * to it (out += f(in)), so a client may pass it as TDM_ACC. */
	uint8_t acc_args;
	/* Checks buffer sizes against scalars once, at intake; 0 or -TDM_E*. */
	int (*check)(const struct tdm_kernel_call *call);
	void (*features)(const struct tdm_kernel_call *call, struct kernel_features *out);
	tdm_kernel_fn cpu; /* implementation on host memory; NULL: none */
	/* Routing seen at run time (docs/kernels.md), for a router: how many
	 * experts it routes among, and, once it ran, a check of its outputs
	 * (out[i]: a private host copy of argument i for each written
	 * argument, NULL for the others) that counts per expert the tokens
	 * that chose it into routed[0 .. experts). 0, or -TDM_EINVAL with why
	 * filled in. NULL: not a router. */
	uint32_t (*route_experts)(const struct tdm_kernel_call *call);
	int (*route)(const struct tdm_kernel_call *call, const void *const *out, uint32_t *routed,
	             char *why, size_t whylen);
	/* Once route accepted out: each token that chose expert e, in token
	 * order, at tokens[csr_slot(next, e)] (common/csr.h: next[e] starts
	 * where e's tokens go, as route counted them). */
	void (*route_tokens)(const struct tdm_kernel_call *call, const void *const *out,
	                     uint32_t *next, uint32_t *tokens);
	/* For a task a router guards: its features when `tokens` of its
	 * call's tokens were routed to it. NULL: features stay as at intake. */
	void (*routed_features)(const struct tdm_kernel_call *call, uint32_t tokens,
	                        struct kernel_features *out);
	/* For a task a router guards on expert `expert`: whether it computes
	 * exactly the router's tokens for that expert (it reads the router's
	 * own outputs, the same ranges, for the same tokens), so that it may be
	 * handed them (call.routed). NULL: never. */
	bool (*takes_routed)(const struct tdm_kernel_call *call, uint32_t expert,
	                     const struct kernel_def *router, const struct tdm_kernel_call *rcall);
};

/* attn_decode_varlen's arguments: a0 q, a1 K pool, a2 V pool, a3 index, a4
 * out; scalars nreq, nh, nkv, hd, total_tokens. Request r's index entry is
 * two int32 at a3[2r]: the pool row of its position 0 and its KV length. */
enum { VARLEN_Q, VARLEN_K, VARLEN_V, VARLEN_INDEX, VARLEN_OUT };
#define VARLEN_ENTRY_WORDS 2

/* The whole rows of nkv x hd floats that both pools hold: an index entry
 * may name rows [0, this) only. Sizes were checked at intake. */
static inline uint64_t attn_varlen_pool_rows(const struct tdm_kernel_call *call)
{
	uint64_t row_bytes = (uint64_t)call->s[2].i64 * (uint64_t)call->s[3].i64 * 4;
	uint64_t k = call->len[VARLEN_K], v = call->len[VARLEN_V];
	return (k < v ? k : v) / row_bytes;
}

size_t kernel_count(void);
/* NULL when id is out of range. */
const struct kernel_def *kernel_by_id(uint32_t id);
/* Returns the id, or -TDM_EKERNEL. */
int kernel_lookup(const char *name);
/* Makes the CPU kernels single-threaded (one worker per core already). */
void kernels_cpu_init(void);
const char *device_kind_name(enum tdm_device_kind k);

/* CPU implementations (backends/cpu/cpu_kernels.c). Large GEMM-shaped calls
 * (sgemm and the tile kernels) run in row panels of about this many flops,
 * with a look at the cancel flag between two; tests lower it. */
extern uint64_t cpu_panel_flops;

int cpu_noop(const struct tdm_kernel_call *call);
int cpu_spin(const struct tdm_kernel_call *call);
int cpu_fill(const struct tdm_kernel_call *call);
int cpu_copy(const struct tdm_kernel_call *call);
int cpu_axpy(const struct tdm_kernel_call *call);
int cpu_sgemm(const struct tdm_kernel_call *call);
int cpu_rmsnorm(const struct tdm_kernel_call *call);
int cpu_softmax(const struct tdm_kernel_call *call);
int cpu_rope(const struct tdm_kernel_call *call);
int cpu_attn_decode(const struct tdm_kernel_call *call);
int cpu_attn_decode_varlen(const struct tdm_kernel_call *call);
int cpu_moe_expert(const struct tdm_kernel_call *call);
int cpu_topk_router(const struct tdm_kernel_call *call);
int cpu_spotrf(const struct tdm_kernel_call *call);
int cpu_strsm(const struct tdm_kernel_call *call);
int cpu_ssyrk(const struct tdm_kernel_call *call);
int cpu_sgemm_nt(const struct tdm_kernel_call *call);

#endif
