/* Names of the policy hints a client or the configuration may give for a
 * graph (enum tdm_policy_hint). */
#include <string.h>

#include "policies/policy.h"
#include "tandem.h"

static const char *const hint_names[TDM_POLICY_HINT_COUNT] = {
	[TDM_POLICY_DEFAULT] = "default", [TDM_POLICY_EAGER] = "eager", [TDM_POLICY_DMDA] = "dmda",
	[TDM_POLICY_HEFT] = "heft",       [TDM_POLICY_PEFT] = "peft",   [TDM_POLICY_PRIO] = "prio",
};

const char *policy_hint_name(unsigned hint)
{
	return hint < TDM_POLICY_HINT_COUNT ? hint_names[hint] : "unknown";
}

int policy_hint_by_name(const char *name)
{
	for (unsigned i = 0; i < TDM_POLICY_HINT_COUNT; i++)
		if (strcmp(hint_names[i], name) == 0)
			return (int)i;
	return -1;
}
