/* Policies by name, and the seam's version check. */
#include <stdio.h>
#include <string.h>

#include "policies/policy.h"
#include "tandem.h"

static const struct policy_ops *const registry[] = {
	&policy_eager, &policy_ws,   &policy_fifo, &policy_dmda, &policy_heft,
	&policy_peft,  &policy_prio, &policy_llm,  NULL,
};

int policy_check(const struct policy_ops *p, char *why, size_t whylen)
{
	if (p && p->abi_version == POLICY_ABI_VERSION)
		return 0;
	if (why && whylen) {
		if (!p)
			snprintf(why, whylen, "no policy");
		else
			snprintf(why, whylen,
			         "policy %s: ABI version %u, tandemd speaks %u: refused",
			         p->name ? p->name : "(unnamed)", p->abi_version,
			         POLICY_ABI_VERSION);
	}
	return -TDM_EINVAL;
}

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
	.llm_tiers_by_cost = true,
};
