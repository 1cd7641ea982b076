/* heft: each graph planned at submission by HEFT (upward ranks, insertion-based EFT); its tasks
 * wait on their planned device in planned order, and the rest of the graph is re-planned when tasks
 * drift from their predictions. The shared machinery is in dispatch.c; a graph or client may still
 * ask for another strategy (enum tdm_policy_hint). */
#include "policies/dispatch.h"
#include "tandem.h"

static int heft_init(const struct policy_params *p, void **priv)
{
	return dispatch_init(p, TDM_POLICY_HEFT, priv);
}

const struct policy_ops policy_heft = DISPATCH_POLICY_OPS("heft", heft_init);
