/* Byte counts as the configuration and tandemctl write them: digits, an
 * optional space, and a unit B, KiB, MiB, GiB or TiB (or none). Header-only,
 * like splitmix.h, so that tandemctl needs no daemon object for it. */
#ifndef TDM_COMMON_SIZE_H
#define TDM_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The n bytes at s as a byte count: 0, -1 if malformed, -2 if it
 * overflows 64 bits. */
static inline int size_parse(const char *s, size_t n, uint64_t *out)
{
	static const struct {
		const char *name;
		unsigned shift;
	} units[] = { { "", 0 },     { "B", 0 },    { "KiB", 10 },
		      { "MiB", 20 }, { "GiB", 30 }, { "TiB", 40 } };
	uint64_t v = 0;
	size_t i = 0;

	if (n == 0 || s[0] < '0' || s[0] > '9')
		return -1;
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -2;
		v = v * 10 + d;
	}
	while (i < n && s[i] == ' ')
		i++;
	for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
		if (n - i != strlen(units[u].name) || memcmp(s + i, units[u].name, n - i))
			continue;
		if (v > (UINT64_MAX >> units[u].shift))
			return -2;
		*out = v << units[u].shift;
		return 0;
	}
	return -1;
}

#endif
