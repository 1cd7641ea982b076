/* Cost models: predict(kernel, device, features) -> {time, spread} and
 * observe(kernel, device, features, measured), plus the transfer model.
 *
 * One model per (kernel, device key): devices with the same calibration key
 * share it. Each model answers from, in turn:
 *   - a roofline prior from calibration (before any sample),
 *   - a history keyed by the features' footprint, with robust statistics
 *     (median and MAD of the recent samples; an outlier is counted but does
 *     not move the estimate),
 *   - for sizes never seen: regressions over the features (robust least
 *     squares on a + b*flops + c*bytes (+ d*domain), and a power law in log
 *     space), the prior scaled by the sizes seen, and
 *     a piecewise interpolation in log-log space between the two nearest
 *     sizes seen (by flops, else bytes, else domain), which follows costs
 *     that move in steps (work-group or tile quantisation),
 * choosing among them by their held-out error: every sample is first
 * predicted by each method, then learned (prequential evaluation).
 *
 * predict is lock-free and meant for every placement decision (<= 100 ns).
 * observe takes the model's own lock; call it after the completion was
 * posted. Both are safe from any thread. */
#ifndef TDM_PROFILER_PROFILER_H
#define TDM_PROFILER_PROFILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "backends/kernels.h"
#include "profiler/calibrate.h"

enum cost_source {
	COST_PRIOR = 0, /* roofline from calibration, scaled by what was learned */
	COST_HISTORY, /* median of this footprint's samples */
	COST_LINEAR, /* least squares over the features */
	COST_POWER, /* power law in log space */
	COST_INTERP, /* log-log interpolation between the nearest sizes seen */
	COST_SOURCE_COUNT
};

struct cost_pred {
	double ns; /* expected device time */
	double spread_ns; /* robust spread (1.4826 * MAD, or a wide guess for a prior) */
	enum cost_source source;
};

struct profiler;

/* cal gives the devices (keys, nodes, figures) in engine order; it is
 * copied. More may join later (profiler_add_device). */
int profiler_create(const struct calibration *cal, struct profiler **out);
void profiler_destroy(struct profiler *p);
/* A device joining at run time, as engine id `device` (the next one, or
 * one given before that the engine never used): cal->dev[device] gives
 * its key, node and figures, and when its node is new, cal->link its links
 * (the other entries are not read). A key already known shares that
 * model, learned samples included: the device is priced at once; a new
 * key gets models of its own (learning what an earlier run saved for it).
 * Predictions for it are right from the moment this returns; call it
 * before the engine can place tasks there. 0, or -TDM_EINVAL (out of
 * order, out of range), -TDM_ENOMEM. */
int profiler_add_device(struct profiler *p, const struct calibration *cal, uint32_t device);
/* New figures (tandemctl calibrate): the priors move, learned data stays. */
void profiler_set_calibration(struct profiler *p, const struct calibration *cal);
/* A copy of the current figures. */
void profiler_calibration(const struct profiler *p, struct calibration *out);

void profiler_predict(const struct profiler *p, uint32_t kernel, uint32_t device,
                      const struct kernel_features *f, struct cost_pred *out);
/* The roofline of a task on a device from the calibration alone, nothing
 * learned: launch + max(flops / sgemm rate, bytes / memory bandwidth), or
 * launch + domain us when flops and bytes are 0 (spin). Below what the task
 * takes when its features count its work, the same for every client and
 * every run: what admission prices tasks with (daemon/intake.c). 0 for an
 * out-of-range device, infinity for invalid features. Lock-free. */
double profiler_roofline_ns(const struct profiler *p, uint32_t device,
                            const struct kernel_features *f);
/* measured_ns: device time only (not queueing). Ignores kernels with no
 * cost (noop), zero times and out-of-range ids. A footprint with a full
 * ring of recent samples learns one sample in 8 (the others are counted):
 * its median hardly moves, and the lock stays cold under many small tasks. */
void profiler_observe(struct profiler *p, uint32_t kernel, uint32_t device,
                      const struct kernel_features *f, uint64_t measured_ns);

/* Simulation of workloads that state each task's cost on each device
 * (abstract tasks, KERNEL_SIM_TASK): predict answers fn's figure for that
 * kernel, exactly and with no spread, and observe ignores it. fn writes
 * ns[i] for device dev[i], i < n, a whole row in one call: the cost (>= 0)
 * raised to least where below it, or none where the task cannot run there
 * (a stated cost < 0 or NaN, or a NaN or < 0 product; none is a huge cost
 * >= least). The caller's bounds are applied in fn's own pass over the
 * row, not in another. Set before any predict; NULL fn removes it. */
typedef void (*profiler_oracle_fn)(void *ctx, const uint32_t *dev, uint32_t n,
                                   const struct kernel_features *f, double least, double none,
                                   double *ns);
void profiler_set_oracle(struct profiler *p, uint32_t kernel, profiler_oracle_fn fn, void *ctx);
/* The oracle's row for f will be asked for soon: fn may start fetching it
 * from memory now (a hint; it answers nothing). Called with the oracle's
 * ctx; NULL removes it. */
typedef void (*profiler_oracle_ahead_fn)(void *ctx, const struct kernel_features *f);
void profiler_set_oracle_ahead(struct profiler *p, profiler_oracle_ahead_fn fn);
/* A planner about to ask profiler_predict_row for a task of kernel with
 * features f, after other work: the oracle's hint, if it has one. */
void profiler_row_ahead(const struct profiler *p, uint32_t kernel, const struct kernel_features *f);
/* max(least, profiler_predict's ns) for devices dev[0..n) into ns[], in
 * one call, where that is cheaper than one by one (the oracle's kernel: a
 * planner wants a task's whole row, 33 figures on a 32-core + GPU machine).
 * dev_max: no dev[i] is above it (the caller's list is fixed between
 * device changes: checked here once a row, not per device). false: not
 * cheaper, or dev_max is not a device, nothing written; predict each
 * device instead. */
bool profiler_predict_row(const struct profiler *p, uint32_t kernel, const uint32_t *dev,
                          uint32_t n, uint32_t dev_max, const struct kernel_features *f,
                          double least, double *ns);

/* Transfers between memory nodes: calibration's latency + bytes/bandwidth,
 * refined by observed copies; the bandwidth is shared among the copies in
 * flight on the same link (copy_begin/copy_end count them). */
double profiler_predict_copy(const struct profiler *p, uint16_t src, uint16_t dst, uint64_t bytes);
void profiler_copy_begin(struct profiler *p, uint16_t src, uint16_t dst);
void profiler_copy_end(struct profiler *p, uint16_t src, uint16_t dst);
/* concurrent: copies that shared the link meanwhile, this one included. */
void profiler_observe_copy(struct profiler *p, uint16_t src, uint16_t dst, uint64_t bytes,
                           uint64_t measured_ns, unsigned concurrent);

/* The learned state, for the store and `tandemctl models`:
 *   {"version":1, "models":[{"kernel":NAME, "device":KEY, "samples":N,
 *     "learned":N (samples minus those a settled footprint skipped), "outliers":N,
 * "recent_err_pct":X (EWMA of relative errors), "recent_median_err_pct":X,
 * "recent_abs_err_us":X, "recent_time_us":X (medians over the last 32
 * predictions of observed samples; null before any), "recent_predictions":
 * [[predicted_ns, measured_ns], ...], "error_pct":{"prior":..,...}, "linear":[a,b,c,d]|null,
 * "power":[alpha,beta]|null, "prior_scale":X,
 *     "footprints":[{"flops":..,"bytes":..,"domain":..,"n":N,
 *       "estimate_ns":..,"spread_ns":..,"recent":[ns,...],
 *       "prior_ns":.. (the prior at its last sample; optional)}, ...]}, ...],
 *   "links":[{"src":S,"dst":D,"gbps":..,"latency_ns":..,"copies":N}, ...]}
 * Models with no sample are left out. */
json_t *profiler_to_json(const struct profiler *p);
/* Learns a document profiler_to_json wrote (untrusted: a file on disk).
 * Models of kernels or device keys this daemon lacks are kept aside and
 * written back by profiler_to_json, so one host's daemons with different
 * device sets do not erase each other's models. Fields out of range are
 * skipped with a count in *skipped; -TDM_EINVAL (err set) only when the
 * document is not a model document at all. */
int profiler_load_json(struct profiler *p, const json_t *doc, size_t *skipped, char *err,
                       size_t errlen);

#endif
