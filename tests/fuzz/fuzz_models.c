/* Fuzz target: arbitrary bytes as a model store document (store_load's
 * input, untrusted: a file on disk).
 *
 * Besides not crashing or leaking: a document that parses as JSON either is
 * rejected with -TDM_EINVAL and a message, or is learned; then
 * profiler_to_json succeeds, what it wrote loads again with nothing
 * skipped, and every prediction is finite and >= 0, before and after more
 * samples are observed.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiler/profiler.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two device keys, the ones the seed corpus names. */
static void fuzz_calibration(struct calibration *c)
{
	memset(c, 0, sizeof(*c));
	c->ndevices = 3;
	c->nnodes = 2;
	for (uint32_t i = 0; i < c->ndevices; i++) {
		snprintf(c->dev[i].key, sizeof(c->dev[i].key), "%s",
		         i < 2 ? "cpu:fuzz" : "clcpu:fuzz");
		c->dev[i].gemm_gflops = 50;
		c->dev[i].mem_gbps = 10;
		c->dev[i].launch_ns = 1000;
	}
	for (int s = 0; s < 2; s++)
		for (int t = 0; t < 2; t++)
			c->link[s][t] = (struct cal_link){ .gbps = 8, .latency_ns = 2000 };
}

static void check_pred(const struct cost_pred *cp)
{
	if (!isfinite(cp->ns) || cp->ns < 0 || !isfinite(cp->spread_ns) || cp->spread_ns < 0 ||
	    cp->source < COST_PRIOR || cp->source >= COST_SOURCE_COUNT)
		abort();
}

/* Every kernel on every device, at the document's own footprints and at a
 * few sizes of ours. */
static void check_predictions(const struct profiler *p, const json_t *doc)
{
	static const struct kernel_features ours[] = {
		{ 0, 0, 0 },   { 1e3, 4e3, 1e3 },    { 2e9, 1e7, 1e9 },
		{ 0, 0, 250 }, { 1e30, 1e30, 1e30 },
	};
	size_t i, j;
	json_t *m, *f;

	for (uint32_t k = 0; k <= KERNEL_COUNT; k++) {
		for (uint32_t d = 0; d <= 3; d++) {
			struct cost_pred cp;

			for (i = 0; i < sizeof(ours) / sizeof(ours[0]); i++) {
				profiler_predict(p, k, d, &ours[i], &cp);
				check_pred(&cp);
			}
			json_array_foreach(json_object_get(doc, "models"), i, m)
			{
				json_array_foreach(json_object_get(m, "footprints"), j, f)
				{
					struct kernel_features x = {
						json_number_value(json_object_get(f, "flops")),
						json_number_value(json_object_get(f, "bytes")),
						json_number_value(json_object_get(f, "domain")),
					};

					profiler_predict(p, k, d, &x, &cp);
					check_pred(&cp);
				}
			}
		}
	}
	for (uint16_t s = 0; s < 3; s++) {
		double t = profiler_predict_copy(p, s, 1, 1 << 20);

		if (!isfinite(t) || t < 0)
			abort();
	}
}

/* What p writes must load back whole. */
static json_t *round_trip(const struct profiler *p, const struct calibration *cal)
{
	struct profiler *q;
	json_t *out = profiler_to_json(p);
	size_t skipped = 0;
	char err[256];

	if (!out)
		abort();
	if (profiler_create(cal, &q) != 0)
		abort();
	if (profiler_load_json(q, out, &skipped, err, sizeof(err)) != 0 || skipped != 0)
		abort();
	profiler_destroy(q);
	return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct calibration *cal = malloc(sizeof(*cal));
	struct kernel_features f = { 3e6, 1e5, 1e6 };
	struct profiler *p = NULL;
	char err[256] = "";
	size_t skipped = 0;
	json_t *doc, *out;
	int rc;

	if (!cal)
		return 0;
	fuzz_calibration(cal);
	doc = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
	if (!doc || profiler_create(cal, &p) != 0) {
		json_decref(doc);
		free(cal);
		return 0;
	}
	rc = profiler_load_json(p, doc, &skipped, err, sizeof(err));
	if (rc != 0 && (rc != -TDM_EINVAL || !err[0]))
		abort();
	out = round_trip(p, cal);
	check_predictions(p, doc);
	check_predictions(p, out);
	json_decref(out);

	/* learning goes on from whatever was loaded */
	for (uint32_t k = 1; k < KERNEL_COUNT; k++) {
		profiler_observe(p, k, 0, &f, 12345);
		profiler_observe(p, k, 2, &f, 999);
	}
	profiler_observe_copy(p, 0, 1, 1 << 22, 900000, 2);
	out = round_trip(p, cal);
	check_predictions(p, doc);
	json_decref(out);

	profiler_destroy(p);
	json_decref(doc);
	free(cal);
	return 0;
}
