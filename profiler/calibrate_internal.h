/* Private to calibration (calibrate.c, calibrate_store.c): the document's
 * version (also part of the fingerprint), the sane ranges that figures are
 * checked against both when measured and when read back from a document,
 * and the helpers both files use. */
#ifndef TDM_PROFILER_CALIBRATE_INTERNAL_H
#define TDM_PROFILER_CALIBRATE_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "profiler/calibrate.h"

#define CAL_VERSION 2 /* 2: wake_ns */

/* Sane ranges, for measured figures and for documents read back. */
struct range {
	double lo, hi; /* hi itself is out */
	bool lo_open; /* lo itself is out */
};

static const struct range r_gflops = { 0, 1e7, true };
static const struct range r_gbps = { 0, 1e5, true };
static const struct range r_ns = { 0, 1e9, false };
static const struct range r_seconds = { 0, 86400, false };
static const struct range r_wake = { 0, CAL_WAKE_MAX_NS, false };

static inline bool in_range(double v, const struct range *r)
{
	return isfinite(v) && (r->lo_open ? v > r->lo : v >= r->lo) && v < r->hi;
}

/* The characters of a device key: [A-Za-z0-9._:-]. */
static inline bool key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '-';
}

/* FNV-1a: h continued over the bytes of s. */
static inline uint64_t fnv1a(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* Devices and nodes as calibrate.h says: host devices on node 0, every
 * accelerator on a node of its own numbering. Sets *nnodes to the number of
 * memory nodes they use; 0 or -TDM_EINVAL. */
int cal_check_devices(const struct backend_device *devs, const uint16_t *nodes, size_t n,
                      uint32_t *nnodes);

#endif
