/* Allocation failures on demand, for the tests of out-of-memory paths.
 * Defines malloc and realloc (include it in one file of a test binary):
 * they fail as the test arms them, on the arming thread only. Sanitizers
 * interpose the allocator themselves: under one CAN_FAIL_ALLOC is 0,
 * nothing fails and the tests that need a failure skip. */
#ifndef TANDEM_TESTS_FAIL_ALLOC_H
#define TANDEM_TESTS_FAIL_ALLOC_H

#include <stddef.h>
#include <stdio.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CAN_FAIL_ALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
        __has_feature(memory_sanitizer)
#define CAN_FAIL_ALLOC 0
#endif
#endif
#ifndef CAN_FAIL_ALLOC
#define CAN_FAIL_ALLOC 1
#endif

/* First in a test that needs a failure (cmocka's skip): skips it, saying
 * why, where none can be had. */
#define SKIP_UNLESS_CAN_FAIL_ALLOC()                                                               \
	do {                                                                                       \
		if (!CAN_FAIL_ALLOC) {                                                             \
			fprintf(stderr,                                                            \
			        "%s: allocator not interposable under this sanitizer: "            \
			        "skipped\n",                                                       \
			        __func__);                                                         \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

/* > 0: the n-th call from now fails (this thread only). */
static _Thread_local int malloc_fail_in __attribute__((unused));
static _Thread_local int realloc_fail_in __attribute__((unused));
/* > 0: the next malloc of exactly this many bytes fails, which sets it
 * back to 0 (this thread only). */
static _Thread_local size_t malloc_fail_size __attribute__((unused));

#if CAN_FAIL_ALLOC
extern void *__libc_malloc(size_t n);
extern void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n)
{
	if (malloc_fail_in > 0 && --malloc_fail_in == 0)
		return NULL;
	if (malloc_fail_size && n == malloc_fail_size) {
		malloc_fail_size = 0;
		return NULL;
	}
	return __libc_malloc(n);
}

void *realloc(void *p, size_t n)
{
	if (realloc_fail_in > 0 && --realloc_fail_in == 0)
		return NULL;
	return __libc_realloc(p, n);
}
#endif

#endif
