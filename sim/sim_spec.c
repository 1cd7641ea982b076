/* The simulator's workload specs and policy lists (sim_spec.h). */
#include "sim/sim_spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sim_spec_each(const char *kind, const char *spec, sim_spec_key_fn on, void *ctx, char *err,
                  size_t errlen)
{
	char buf[1024];

	if (strlen(spec) >= sizeof(buf)) {
		snprintf(err, errlen, "--workload %s: the spec is too long", kind);
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq) {
			snprintf(err, errlen, "--workload %s: %s: expected KEY=VALUE", kind, kv);
			return -1;
		}
		*eq = '\0';
		if (on(ctx, kv, eq + 1, err, errlen))
			return -1;
	}
	return 0;
}

int sim_spec_num(const char *kind, const char *key, const char *val, double lo, double hi,
                 double *out, char *err, size_t errlen)
{
	char *end;
	errno = 0;
	double d = strtod(val, &end);
	if (errno || end == val || *end || !(d >= lo && d <= hi)) {
		snprintf(err, errlen, "--workload %s: %s=%s: expected a number in [%g, %g]", kind,
		         key, val, lo, hi);
		return -1;
	}
	*out = d;
	return 0;
}

int sim_name_index(const char *const *names, int count, const char *name)
{
	for (int i = 0; i < count; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

int sim_policy_list(const char *policies, const char *kind, const char *const *names, int count,
                    int *idx, size_t *n)
{
	char buf[256];

	*n = 0;
	if (!policies || !strcmp(policies, "all")) {
		for (int i = 0; i < count; i++)
			idx[(*n)++] = i;
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", policies);
	for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
		int i = sim_name_index(names, count, p);
		if (*n == (size_t)count || i < 0) {
			fprintf(stderr, "--policy %s: %s policies are", p, kind);
			for (int k = 0; k < count; k++)
				fprintf(stderr, "%s %s", k ? "," : "", names[k]);
			fprintf(stderr, "\n");
			return -1;
		}
		idx[(*n)++] = i;
	}
	return 0;
}
