/* What the simulator's command line shares between its workloads:
 * `-w KIND:KEY=VALUE,...` specs (llm:, moe:, random:, layered:) and
 * `--policy LIST` against a workload's own policy names. */
#ifndef TDM_SIM_SIM_SPEC_H
#define TDM_SIM_SIM_SPEC_H

#include <stddef.h>

/* One KEY=VALUE of a spec: 0, or -1 with err set. */
typedef int (*sim_spec_key_fn)(void *ctx, const char *key, const char *val, char *err,
                               size_t errlen);

/* Hands each comma-separated KEY=VALUE of spec to on(). kind names the
 * workload in messages ("--workload KIND: ..."). 0, or -1 with err set: the
 * spec too long, a pair without '=', or on()'s own reason. */
int sim_spec_each(const char *kind, const char *spec, sim_spec_key_fn on, void *ctx, char *err,
                  size_t errlen);

/* val as a number in [lo, hi]: 0, or -1 with err set. */
int sim_spec_num(const char *kind, const char *key, const char *val, double lo, double hi,
                 double *out, char *err, size_t errlen);

/* The index of name in names[count], or -1. */
int sim_name_index(const char *const *names, int count, const char *name);

/* `--policy LIST` (comma-separated; NULL or "all": every one, in order) as
 * indexes into names[count], at most count of them, in idx[0 .. *n). 0, or
 * -1 after telling stderr which name is not one of kind's ("LLM", "MoE"). */
int sim_policy_list(const char *policies, const char *kind, const char *const *names, int count,
                    int *idx, size_t *n);

#endif
