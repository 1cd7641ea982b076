/* Fuzz target: arbitrary bytes as a MoE routing trace
 * (workload/moe_trace.h), as `-w moe:trace=FILE` reads one.
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz:LINE: " message and an empty trace, or
 * succeeds with a complete grid inside its bounds: the shape in range,
 * every expert id below the experts count and distinct within its row,
 * every weight finite and in [0, 1].
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workload/moe_trace.h"
#include "tandem.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct moe_trace t;
	char err[256];
	int rc;

	memset(err, 'x', sizeof(err));
	rc = moe_trace_parse((const char *)data, size, "fuzz", 0, &t, err, sizeof(err));
	if (rc) {
		fuzz_check_parse_failed(rc, err, sizeof(err));
		CHECK(t.tokens == 0 && !t.ids && !t.w);
		return 0;
	}
	CHECK(t.tokens >= 1 && t.ids && t.w);
	CHECK(t.layers >= 1 && t.layers <= MOE_TRACE_MAX_LAYERS);
	CHECK(t.experts >= 1 && t.experts <= MOE_TRACE_MAX_EXPERTS);
	CHECK(t.topk >= 1 && t.topk <= MOE_TRACE_MAX_TOPK && t.topk <= t.experts);
	for (uint32_t i = 0; i < t.tokens; i++)
		for (uint32_t l = 0; l < t.layers; l++) {
			const uint16_t *ids = moe_trace_ids(&t, i, l);
			const float *w = moe_trace_w(&t, i, l);
			for (uint32_t k = 0; k < t.topk; k++) {
				CHECK(ids[k] < t.experts);
				CHECK(isfinite(w[k]) && w[k] >= 0 && w[k] <= 1);
				for (uint32_t j = 0; j < k; j++)
					CHECK(ids[j] != ids[k]);
			}
		}
	moe_trace_free(&t);
	return 0;
}
