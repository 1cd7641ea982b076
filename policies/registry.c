/* Policies by name. */
#include <string.h>

#include "policies/policy.h"

static const struct policy_ops *const registry[] = {
	&policy_eager, &policy_ws,   &policy_fifo, &policy_dmda,
	&policy_heft,  &policy_peft, &policy_prio, NULL,
};

const struct policy_ops *policy_by_name(const char *name)
{
	for (size_t i = 0; registry[i]; i++)
		if (strcmp(registry[i]->name, name) == 0)
			return registry[i];
	return NULL;
}

const struct policy_ops *const *policy_list(void)
{
	return registry;
}

const struct policy_tuning policy_tuning_defaults = {
	.dmda_alpha = 1.0,
	.dmda_beta = 1.0,
	.plan_refine_iters = 0,
	.plan_repair = true,
};
