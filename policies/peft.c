/* peft: as heft, with PEFT's optimistic cost table (looks one step ahead at the successors' best
 * devices). The shared machinery is in dispatch.c; a graph or client may still ask for another
 * strategy (enum tdm_policy_hint). */
#include "policies/dispatch.h"
#include "tandem.h"

static int peft_init(const struct policy_params *p, void **priv)
{
	return dispatch_init(p, TDM_POLICY_PEFT, priv);
}

const struct policy_ops policy_peft = DISPATCH_POLICY_OPS("peft", peft_init);
