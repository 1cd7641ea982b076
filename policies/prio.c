/* prio: dmda placement; each device's queue serves higher priorities (task + graph) first, then
 * earlier deadlines, then ready order; fair across clients at equal priority. The shared machinery
 * is in dispatch.c; a graph or client may still ask for another strategy (enum tdm_policy_hint). */
#include "policies/dispatch.h"
#include "tandem.h"

static int prio_init(const struct policy_params *p, void **priv)
{
	return dispatch_init(p, TDM_POLICY_PRIO, priv);
}

const struct policy_ops policy_prio = DISPATCH_POLICY_OPS("prio", prio_init);
