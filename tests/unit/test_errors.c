/* Status codes and reject fields: the tables that make the enums and the
 * names keep every value and every string as released (they travel on the
 * wire and clients compare them). */
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tandem.h"

static const struct {
	int code;
	int value;
	const char *name;
} errors[] = {
	{ TDM_OK, 0, "success" },
	{ TDM_EINVAL, 1, "invalid argument" },
	{ TDM_ENOMEM, 2, "out of memory" },
	{ TDM_ECONNECT, 3, "cannot connect to tandemd" },
	{ TDM_EPERM, 4, "permission denied by tandemd (uid/gid not allowed)" },
	{ TDM_EVERSION, 5, "wire protocol version mismatch" },
	{ TDM_EPROTO, 6, "protocol violation" },
	{ TDM_EDISCONNECTED, 7, "disconnected from tandemd" },
	{ TDM_ETIMEDOUT, 8, "timed out" },
	{ TDM_EQUOTA, 9, "quota exceeded (a client's, its user's or the daemon's)" },
	{ TDM_EHANDLE, 10, "unknown buffer handle" },
	{ TDM_ERANGE, 11, "offset/length outside the buffer or wrong size for the kernel" },
	{ TDM_EKERNEL, 12, "unknown kernel" },
	{ TDM_EARITY, 13, "arguments do not match the kernel's signature" },
	{ TDM_EEDGE, 14, "edge does not point to an earlier task" },
	{ TDM_ECANCELED, 15, "canceled" },
	{ TDM_EDEVICE, 16, "kernel failed on its device" },
	{ TDM_ESHUTDOWN, 17, "tandemd is shutting down" },
	{ TDM_EBUSY, 18, "busy: too many clients or connections, or such a request runs already" },
	{ TDM_ESYS, 19, "system call failed" },
	{ TDM_ECONFIG, 20, "invalid configuration" },
	{ TDM_EPEER, 21, "the socket is not served by a tandemd we trust" },
	{ TDM_EDAEMON, 22, "daemon lost: tandemd exited" },
	{ TDM_ENOSPC, 23, "no room left (a capacity is full)" },
	{ TDM_ENODEV, 24, "no device left to run it, or its data was lost with a device" },
};

static const struct {
	unsigned field;
	unsigned value;
	const char *name;
} fields[] = {
	{ TDM_REJECT_NONE, 0, "none" },
	{ TDM_REJECT_OP, 1, "entry op" },
	{ TDM_REJECT_RESERVED, 2, "reserved field not zero" },
	{ TDM_REJECT_NTASKS, 3, "task count" },
	{ TDM_REJECT_FLAGS, 4, "graph flags" },
	{ TDM_REJECT_TASK_INDEX, 5, "task index" },
	{ TDM_REJECT_KERNEL, 6, "kernel id" },
	{ TDM_REJECT_ARITY, 7, "argument count" },
	{ TDM_REJECT_MODE, 8, "access mode" },
	{ TDM_REJECT_HANDLE, 9, "buffer handle" },
	{ TDM_REJECT_RANGE, 10, "offset/length" },
	{ TDM_REJECT_SCALAR_TYPE, 11, "scalar type" },
	{ TDM_REJECT_EDGE, 12, "edge" },
	{ TDM_REJECT_KERNEL_ARGS, 13, "kernel-specific argument check" },
	{ TDM_REJECT_QUOTA, 14, "client quota" },
	{ TDM_REJECT_SEQUENCE, 15, "entry sequence" },
	{ TDM_REJECT_POLICY, 16, "policy hint" },
	{ TDM_REJECT_COST, 17, "predicted task cost" },
	{ TDM_REJECT_GUARD, 18, "routing guard" },
};

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Every code keeps its value and its message, negative or positive. */
static void test_error_codes(void **state)
{
	(void)state;
	assert_int_equal(TDM_E__COUNT, LEN(errors));
	for (size_t i = 0; i < LEN(errors); i++) {
		assert_int_equal(errors[i].code, errors[i].value);
		assert_string_equal(tdm_strerror(errors[i].value), errors[i].name);
		assert_string_equal(tdm_strerror(-errors[i].value), errors[i].name);
	}
	assert_string_equal(tdm_strerror(TDM_E__COUNT), "unknown error");
	assert_string_equal(tdm_strerror(-TDM_E__COUNT), "unknown error");
	assert_string_equal(tdm_strerror(-12345), "unknown error");
}

/* One line per X(...) entry: the list expands to the same count. */
#define COUNT_ONE(name, value, text) +1
static void test_tables(void **state)
{
	(void)state;
	assert_int_equal(0 TDM_ERRNO_MAP(COUNT_ONE), TDM_E__COUNT - 1);
	assert_int_equal(0 TDM_REJECT_FIELD_MAP(COUNT_ONE), TDM_REJECT__COUNT);
}

static void test_reject_fields(void **state)
{
	(void)state;
	assert_int_equal(TDM_REJECT__COUNT, LEN(fields));
	for (size_t i = 0; i < LEN(fields); i++) {
		assert_int_equal(fields[i].field, fields[i].value);
		assert_string_equal(tdm_reject_field_name(fields[i].value), fields[i].name);
	}
	assert_string_equal(tdm_reject_field_name(TDM_REJECT__COUNT), "unknown field");
	assert_string_equal(tdm_reject_field_name(~0u), "unknown field");
}

/* The symbols bindings mirror the tables by: each entry's own name, and
 * NULL right after the last, so that a walk from 0 finds every entry. */
static void test_symbols(void **state)
{
	(void)state;
	assert_string_equal(tdm_error_symbol(0), "OK");
	assert_string_equal(tdm_error_symbol(TDM_EINVAL), "EINVAL");
	assert_string_equal(tdm_error_symbol(-TDM_ETIMEDOUT), "ETIMEDOUT");
	assert_string_equal(tdm_error_symbol(-TDM_EPEER), "EPEER");
	assert_null(tdm_error_symbol(TDM_E__COUNT));
	assert_null(tdm_error_symbol(-TDM_E__COUNT));
	int n = 0;
	while (tdm_error_symbol(n))
		n++;
	assert_int_equal(n, TDM_E__COUNT);
	assert_string_equal(tdm_reject_field_symbol(TDM_REJECT_NONE), "NONE");
	assert_string_equal(tdm_reject_field_symbol(TDM_REJECT_RANGE), "RANGE");
	assert_string_equal(tdm_reject_field_symbol(TDM_REJECT_COST), "COST");
	assert_null(tdm_reject_field_symbol(TDM_REJECT__COUNT));
	assert_null(tdm_reject_field_symbol(~0u));
}

/* libtandem.so (next to this test's bin/: ../lib) exports its API under
 * the symbol version TANDEM_1, what came later under TANDEM_2
 * (client/libtandem.map), and nothing else. */
static void test_shared_library_versions(void **state)
{
	char exe[PATH_MAX], path[PATH_MAX + 32];
	(void)state;
	ssize_t r = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	assert_true(r > 0);
	exe[r] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(path, sizeof(path), "%s/../lib/libtandem.so", exe);
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		fail_msg("%s", dlerror());
	const char *(*name)(int);
	void *sym = dlvsym(h, "tdm_strerror", "TANDEM_1");
	assert_non_null(sym);
	memcpy(&name, &sym, sizeof(name));
	assert_string_equal(name(-TDM_EPEER), "the socket is not served by a tandemd we trust");
	assert_non_null(dlvsym(h, "tdm_connect", "TANDEM_1"));
	assert_non_null(dlvsym(h, "tdm_reject_field_name", "TANDEM_1"));
	assert_null(dlvsym(h, "tdm_strerror", "TANDEM_2"));
	/* added later, in a node of their own */
	assert_non_null(dlvsym(h, "tdm_error_symbol", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_reject_field_symbol", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_version", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_listen_socket_path", "TANDEM_2"));
	assert_null(dlvsym(h, "tdm_version", "TANDEM_1"));
	assert_null(dlvsym(h, "tdm_error_symbol", "TANDEM_1"));
	assert_non_null(dlvsym(h, "tdm_reconnect", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_connect_backoff", "TANDEM_2"));
	assert_null(dlvsym(h, "tdm_reconnect", "TANDEM_1"));
	assert_non_null(dlvsym(h, "tdm_buffer_reserve", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_buffer_grow", "TANDEM_2"));
	assert_non_null(dlvsym(h, "tdm_kv_admit", "TANDEM_2"));
	assert_null(dlvsym(h, "tdm_buffer_grow", "TANDEM_1"));
	/* what is not the API stays inside */
	assert_null(dlsym(h, "error_names"));
	assert_null(dlsym(h, "client_request"));
	assert_null(dlsym(h, "ring_publish"));
	dlclose(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_codes),
		cmocka_unit_test(test_tables),
		cmocka_unit_test(test_reject_fields),
		cmocka_unit_test(test_symbols),
		cmocka_unit_test(test_shared_library_versions),
	};
	return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
