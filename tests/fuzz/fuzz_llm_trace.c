/* Fuzz target: arbitrary bytes as an Azure LLM inference trace
 * (workload/llm_trace.h), as `-w llm:trace=FILE` reads one.
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz:LINE: " message and an empty trace, or
 * succeeds with every request inside its bounds: arrivals finite, from 0,
 * never going back; prompt and output lengths 1 .. LLM_TRACE_MAX_TOKENS.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workload/llm_trace.h"
#include "tandem.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct llm_trace t;
	char err[256];
	int rc;

	memset(err, 'x', sizeof(err));
	rc = llm_trace_parse((const char *)data, size, "fuzz", 0, &t, err, sizeof(err));
	if (rc) {
		fuzz_check_parse_failed(rc, err, sizeof(err));
		CHECK(t.n == 0 && !t.req);
		return 0;
	}
	CHECK(t.n >= 1 && t.n <= LLM_TRACE_MAX_REQS && t.req);
	CHECK(t.req[0].arrival_ns == 0);
	for (uint32_t i = 0; i < t.n; i++) {
		CHECK(isfinite(t.req[i].arrival_ns) && t.req[i].arrival_ns >= 0);
		CHECK(i == 0 || t.req[i].arrival_ns >= t.req[i - 1].arrival_ns);
		CHECK(t.req[i].prompt >= 1 && t.req[i].prompt <= LLM_TRACE_MAX_TOKENS);
		CHECK(t.req[i].output >= 1 && t.req[i].output <= LLM_TRACE_MAX_TOKENS);
	}
	llm_trace_free(&t);
	return 0;
}
