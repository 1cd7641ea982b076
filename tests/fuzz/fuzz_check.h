/* What the fuzz targets share: libFuzzer's entry point, CHECK (an abort,
 * which the fuzzer and the corpus replay both report, where a property
 * does not hold), and what a parse that fails must leave. */
#ifndef TDM_TESTS_FUZZ_CHECK_H
#define TDM_TESTS_FUZZ_CHECK_H

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

/* A parse of source "fuzz" that failed: -TDM_EINVAL or -TDM_ENOMEM, and a
 * message in err (len bytes, filled with 'x' before the parse) that ends
 * inside it and starts with the source's name. */
static inline void fuzz_check_parse_failed(int rc, const char *err, size_t len)
{
	CHECK(rc == -TDM_EINVAL || rc == -TDM_ENOMEM);
	CHECK(strnlen(err, len) < len && !strncmp(err, "fuzz", 4));
}

#endif
