/* dmda: per ready task, the device of least predicted finish time, transfers included (StarPU's
 * dmda). Queues are fair across clients and FIFO within one. The shared machinery is in dispatch.c;
 * a graph or client may still ask for another strategy (enum tdm_policy_hint). */
#include "policies/dispatch.h"
#include "tandem.h"

static int dmda_init(const struct policy_params *p, void **priv)
{
	return dispatch_init(p, TDM_POLICY_DMDA, priv);
}

const struct policy_ops policy_dmda = DISPATCH_POLICY_OPS("dmda", dmda_init);
