/* Private to the cost models (profiler.c, profiler_json.c): the state
 * behind struct profiler, the limits both files check against, small
 * helpers both use, and the model operations the document loader shares
 * with observe. profiler.c explains the layout and the decisions. */
#ifndef TDM_PROFILER_PROFILER_INTERNAL_H
#define TDM_PROFILER_PROFILER_INTERNAL_H

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "profiler/profiler.h"

#define RING 32 /* recent samples kept per footprint */
#define FP_SLOTS 64 /* footprints per model, a power of two */
#define RATIOS 32 /* measured/prior ratios behind prior_scale */
#define NCOEF 4 /* linear: a + b*flops + c*bytes + d*domain */
#define ERR_CAP 10.0
#define ERR_WARM 10 /* samples averaged before the EWMA's alpha settles */
#define FEAT_MAX 1e30
#define NS_MAX 1e15 /* about 11 days */
#define COUNT_MAX 1000000000000000ULL /* counters saturate there */
#define SCALE_MIN 1e-6
#define SCALE_MAX 1e6
#define GBPS_MIN 1e-6
#define GBPS_MAX 1e6

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

/* ---- state ------------------------------------------------------------- */

/* What predict reads of a footprint: one cache line. */
struct fp_pub {
	_Alignas(64) _Atomic uint32_t seq;
	_Atomic uint64_t key; /* 0: empty slot */
	_Atomic double flops, bytes, domain;
	_Atomic double est, spread;
	_Atomic uint64_t n;
};

struct fp_priv {
	uint64_t key;
	struct kernel_features f;
	double ring[RING]; /* the last len samples, oldest at head - len */
	uint32_t len, head;
	uint64_t n, last_use;
	double est, spread;
	double fit_est; /* est when the regressions were last fitted (0: not yet) */
	double prior; /* the prior at its last sample (0: not known, loaded) */
};

struct model_pub {
	_Alignas(64) _Atomic uint32_t seq;
	_Atomic uint32_t nfp;
	_Atomic int best; /* enum cost_source for unseen footprints */
	_Atomic double lin[NCOEF];
	_Atomic double pw[2];
	_Atomic double scale;
	_Atomic double err[COST_SOURCE_COUNT]; /* < 0: not scored yet */
};

/* The sizes seen, sorted, for interpolation: (x, estimate) knots. */
struct knots_pub {
	_Alignas(64) _Atomic uint32_t seq;
	_Atomic uint32_t n;
	_Atomic int dim; /* the feature the sizes are (0 flops, 1 bytes, 2 domain) */
	_Atomic double x[FP_SLOTS], t[FP_SLOTS];
};

struct model {
	struct model_pub pub;
	struct knots_pub knots;
	struct fp_pub fp[FP_SLOTS];
	_Atomic uint64_t settled; /* samples of settled footprints, see observe */
	_Atomic uint64_t skipped; /* of those, not learned (counted in "samples") */
	pthread_mutex_t lock; /* live models only; scratch models are private */
	/* everything below: under lock */
	struct fp_priv priv[FP_SLOTS];
	uint32_t nfp;
	uint64_t samples, outliers, tick;
	double err[COST_SOURCE_COUNT];
	uint32_t err_n[COST_SOURCE_COUNT];
	double recent_err;
	uint32_t recent_n;
	/* The last RING predictions of observed samples and what they took:
	 * the medians of their relative and absolute errors are what
	 * `tandemctl models` shows (an EWMA of relative errors reads 100%+
	 * for a 2 us kernel off by 2 us). */
	double rp_pred[RING], rp_took[RING];
	uint32_t rp_n, rp_head;
	double lin[NCOEF], pw[2];
	bool lin_ok, pw_ok;
	double kx[FP_SLOTS], kt[FP_SLOTS]; /* knots: distinct sizes, ascending */
	uint32_t nknots; /* >= 2: interpolation available */
	int kdim; /* feature of the knots' sizes (see knots_pub) */
	/* Leave-one-out error of linear, power and interp over the footprints
	 * when the set of sizes last changed (< 0: not computed; see
	 * prof_model_refit). */
	double loo[COST_SOURCE_COUNT];
	uint32_t loo_wait; /* samples learned since the leave-one-out errors */
	double ratio[RATIOS];
	uint32_t nratio, ratio_head;
	double scale;
};

struct dev_fig {
	_Atomic double launch, gflops, gbps;
};

struct link_state {
	_Atomic double latency, gbps_cal, gbps_seen; /* gbps_seen 0: no copy observed */
	_Atomic uint64_t copies;
	_Atomic int inflight;
};

struct profiler {
	/* Devices join at run time (profiler_add_device): a device, slot or
	 * node is made whole, then counted (release); readers load the counts. */
	_Atomic uint32_t ndev, nslots, nnodes;
	uint32_t nkernels;
	uint32_t dev_slot[CAL_MAX_DEVICES];
	char slot_key[CAL_MAX_DEVICES][CAL_KEY_MAX];
	struct dev_fig fig[CAL_MAX_DEVICES];
	struct link_state link[CAL_MAX_NODES][CAL_MAX_NODES];
	struct model *slot_models[CAL_MAX_DEVICES]; /* [slot][kernel] */
	pthread_mutex_t cal_lock; /* cal */
	struct calibration cal;
	pthread_mutex_t link_lock; /* observe_copy's read-modify-write */
	pthread_mutex_t aside_lock; /* aside */
	json_t *aside; /* models of kernels or keys this daemon lacks */
	/* Simulation: the cost of oracle_kernel's tasks, stated by the workload. */
	uint32_t oracle_kernel;
	profiler_oracle_fn oracle;
	profiler_oracle_ahead_fn oracle_ahead; /* NULL: none */
	void *oracle_ctx;
};

static inline struct model *prof_model(const struct profiler *p, uint32_t slot, uint32_t kernel)
{
	return &p->slot_models[slot][kernel];
}

/* The models kept aside for device key `key`, which now has a slot, are
 * learned into it (profiler_json.c). */
void prof_adopt_aside(struct profiler *p, const char *key);

struct fp_view {
	double est, spread;
	uint64_t n;
};

/* ---- small helpers ------------------------------------------------------- */

/* NaN fails both comparisons and the infinities one: finite implied. */
static inline bool feat_ok(double v)
{
	return v >= 0 && v <= FEAT_MAX;
}

/* Invalid features read as zero; -0.0 as 0.0 so that it hashes the same. */
static inline struct kernel_features clean_features(const struct kernel_features *f)
{
	struct kernel_features c = { 0 };

	if (f) {
		c.flops = feat_ok(f->flops) ? f->flops + 0.0 : 0;
		c.bytes = feat_ok(f->bytes) ? f->bytes + 0.0 : 0;
		c.domain = feat_ok(f->domain) ? f->domain + 0.0 : 0;
	}
	return c;
}

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static inline uint64_t dbits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

/* Never 0, which marks an empty slot. */
static inline uint64_t footprint_key(const struct kernel_features *f)
{
	uint64_t h = mix64(dbits(f->flops) ^ 0x9e3779b97f4a7c15ULL);

	h = mix64(h ^ dbits(f->bytes));
	h = mix64(h ^ dbits(f->domain));
	return h | 1;
}

/* Sorts v[0..n) and returns its lower median. */
static inline double lower_median(double *v, unsigned n)
{
	for (unsigned i = 1; i < n; i++) {
		double x = v[i];
		unsigned j = i;

		for (; j > 0 && v[j - 1] > x; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
	return v[(n - 1) / 2];
}

/* ---- model operations (profiler.c) ----------------------------------------- */

/* Footprints: lock-free lookup; the others under the model's lock, or on a
 * private scratch model. */
int prof_fp_find(const struct model *m, uint64_t key, const struct kernel_features *f,
                 struct fp_view *out);
void prof_fp_publish(struct model *m, unsigned slot);
void prof_fp_stats(struct fp_priv *v);
void prof_fp_push(struct fp_priv *v, double x);
unsigned prof_fp_insert(struct model *m, uint64_t key, const struct kernel_features *f);

/* A model's learning. */
struct model *prof_scratch_new(void);
void prof_push_ratio(struct model *m, double r);
/* Refits the regressions and knots to the footprints' estimates, and the
 * leave-one-out errors when sizes_changed or enough samples came since. */
void prof_model_refit(struct model *m, bool sizes_changed);
void prof_model_publish(struct model *m);
/* One more (prediction, measured) pair into the model's recent ring. */
void prof_recent_push(struct model *m, double pred, double took);

#endif
