/* KV admission by predicted peak (see kv_admit.h). */
#include "placement/kv_admit.h"

#include <stdlib.h>

void kv_hist_add(struct kv_hist *h, uint32_t generated)
{
	h->len[h->next] = generated;
	h->next = (h->next + 1) % KV_HIST_MAX;
	if (h->n < KV_HIST_MAX)
		h->n++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

uint32_t kv_predict_remaining(const struct kv_hist *h, uint32_t generated, uint32_t max_left)
{
	uint32_t longer[KV_HIST_MAX];
	uint32_t n = 0;
	for (uint32_t i = 0; i < h->n; i++)
		if (h->len[i] > generated)
			longer[n++] = h->len[i];
	if (n < KV_HIST_MIN)
		return max_left;
	qsort(longer, n, sizeof(longer[0]), cmp_u32);
	uint32_t q = longer[(uint32_t)((double)(n - 1) * KV_ADMIT_QUANTILE + 0.5)] - generated;
	return q < max_left ? q : max_left;
}

static int cmp_remaining(const void *a, const void *b)
{
	const struct kv_req *x = a, *y = b;
	return (x->remaining > y->remaining) - (x->remaining < y->remaining);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

uint64_t kv_peak(struct kv_req *reqs, size_t n)
{
	if (n == 0)
		return 0;
	qsort(reqs, n, sizeof(*reqs), cmp_remaining);
	/* Suffix sums: the requests still running when the k-th finishes are
	 * k..n-1 (equal remainders finish together, the sum is the same). */
	uint64_t peak = 0, used = 0, rate = 0;
	for (size_t k = n; k-- > 0;) {
		used = sat_add(used, reqs[k].used);
		rate = sat_add(rate, reqs[k].bytes_per_token);
		uint64_t at = sat_add(used, sat_mul(rate, reqs[k].remaining));
		if (at > peak)
			peak = at;
	}
	return peak;
}
