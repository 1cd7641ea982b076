/* Fuzz target: arbitrary bytes as a calibration cache file
 * (state_dir/calibration.json), parsed as the daemon reads it.
 *
 * Besides not crashing or leaking, calibration_from_json must either fail
 * with -TDM_EINVAL, a "calibration: ..." message and the output untouched,
 * or succeed with every field within its bounds; what it accepted must
 * survive calibration_to_json and come back identical.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "profiler/calibrate.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_range(double v, double lo, double hi, int lo_open)
{
	if (!isfinite(v) || v >= hi || (lo_open ? v <= lo : v < lo))
		abort();
}

static void check_string(const char *s, size_t size, const char *allowed)
{
	size_t n = strnlen(s, size);

	if (n == 0 || n == size)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (allowed ? !strchr(allowed, s[i]) : (s[i] < 0x20 || s[i] > 0x7e))
			abort();
	}
}

static void check_valid(const struct calibration *c)
{
	static const char key_chars[] = "abcdefghijklmnopqrstuvwxyz"
	                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                                "0123456789._:-";

	if (c->ndevices > CAL_MAX_DEVICES || c->nnodes < 1 || c->nnodes > CAL_MAX_NODES)
		abort();
	if (c->from_cache)
		abort();
	check_string(c->fingerprint, sizeof(c->fingerprint), NULL);
	check_range(c->seconds, 0, 86400, 0);
	check_range(c->wake_ns, 0, CAL_WAKE_MAX_NS, 0);
	for (uint32_t i = 0; i < c->ndevices; i++) {
		const struct cal_device *d = &c->dev[i];
		check_string(d->key, sizeof(d->key), key_chars);
		if (d->node >= c->nnodes)
			abort();
		check_range(d->gemm_gflops, 0, 1e7, 1);
		check_range(d->mem_gbps, 0, 1e5, 1);
		check_range(d->launch_ns, 0, 1e9, 0);
	}
	for (uint32_t s = 0; s < c->nnodes; s++) {
		for (uint32_t d = 0; d < c->nnodes; d++) {
			check_range(c->link[s][d].gbps, 0, 1e5, 1);
			check_range(c->link[s][d].latency_ns, 0, 1e9, 0);
		}
	}
}

/* What was accepted is written and read back unchanged. */
static void check_round_trip(const struct calibration *c)
{
	struct calibration back;
	char err[256];
	json_t *doc = calibration_to_json(c);

	if (!doc)
		abort();
	memset(&back, 0x5a, sizeof(back));
	if (calibration_from_json(doc, &back, err, sizeof(err)) != 0)
		abort();
	json_decref(doc);
	if (memcmp(&back, c, sizeof(back)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct calibration cal, before;
	json_error_t jerr;
	char err[256];
	json_t *doc;
	int rc;

	/* NULs and bare values too: the checks must not rely on the parser's flags. */
	doc = json_loadb((const char *)data, size,
	                 JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
	if (!doc)
		return 0;
	/* a calibration that no document parses to, to see it left alone */
	memset(&cal, 0xa5, sizeof(cal));
	memcpy(&before, &cal, sizeof(cal));
	memset(err, 'x', sizeof(err));

	rc = calibration_from_json(doc, &cal, err, sizeof(err));
	json_decref(doc);
	if (rc == 0) {
		if (err[0] != '\0')
			abort();
		check_valid(&cal);
		check_round_trip(&cal);
		return 0;
	}
	if (rc != -TDM_EINVAL)
		abort();
	if (memcmp(&cal, &before, sizeof(cal)))
		abort();
	if (strnlen(err, sizeof(err)) == sizeof(err) || strncmp(err, "calibration: ", 13))
		abort();
	return 0;
}
