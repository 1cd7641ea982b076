/* What the parser fuzz targets share: libFuzzer's entry point, CHECK (a
 * broken invariant aborts, which the fuzzer reports with its input) and
 * the rule every rejected input must keep. */
#ifndef TDM_TESTS_FUZZ_FUZZ_CHECK_H
#define TDM_TESTS_FUZZ_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

/* A rejected parse: -TDM_EINVAL (or -TDM_ENOMEM) and a message that fits
 * err[] (an array) and names the input, "fuzz". */
#define CHECK_REJECTED(rc, err)                                                                    \
	do {                                                                                       \
		CHECK((rc) == -TDM_EINVAL || (rc) == -TDM_ENOMEM);                                 \
		CHECK(strnlen(err, sizeof(err)) < sizeof(err) && !strncmp(err, "fuzz", 4));        \
	} while (0)

#endif
