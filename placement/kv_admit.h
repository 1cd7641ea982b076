/* KV admission by predicted peak (Past-Future scheduling, Gong et al.,
 * ASPLOS'25): the KV a set of running requests will hold at its peak is
 * predicted from the distribution of output lengths seen so far (the
 * past) and each request's progress, so that a new request is admitted
 * when the peak, not today's use, fits.
 *
 * A request that generated g tokens and may generate at most max_left more
 * is predicted to generate r more: the KV_ADMIT_QUANTILE quantile of the
 * past lengths L > g, minus g, clipped to max_left; with fewer than
 * KV_HIST_MIN such lengths, max_left (vLLM's worst case). Sorted by r, the
 * requests finish in that order; just before the k-th finishes the set
 * holds sum over those still running (r_j >= r_k) of used_j + r_k x
 * bytes_per_token_j, and the peak is the largest of these. */
#ifndef TDM_PLACEMENT_KV_ADMIT_H
#define TDM_PLACEMENT_KV_ADMIT_H

#include <stddef.h>
#include <stdint.h>

#define KV_HIST_MAX 1024 /* the last output lengths kept */
#define KV_HIST_MIN 8 /* lengths needed before the history is trusted */
#define KV_ADMIT_QUANTILE 0.9

struct kv_hist {
	uint32_t len[KV_HIST_MAX]; /* output lengths (tokens), a ring */
	uint32_t n, next;
};

struct kv_req {
	uint64_t used; /* bytes held now */
	uint64_t bytes_per_token;
	uint32_t remaining; /* predicted tokens still to come */
};

void kv_hist_add(struct kv_hist *h, uint32_t generated);
uint32_t kv_predict_remaining(const struct kv_hist *h, uint32_t generated, uint32_t max_left);
/* The predicted peak of the set, in bytes (saturating); sorts reqs by
 * remaining. */
uint64_t kv_peak(struct kv_req *reqs, size_t n);

#endif
