/* The backend seam's version check. */
#include <stdio.h>

#include "backends/backend.h"
#include "tandem.h"

int backend_check(const struct backend_ops *ops, char *why, size_t whylen)
{
	if (ops && ops->abi_version == BACKEND_ABI_VERSION)
		return 0;
	if (why && whylen) {
		if (!ops)
			snprintf(why, whylen, "no backend");
		else
			/* The name may not be where this version keeps it. */
			snprintf(why, whylen, "backend ABI version %u, tandemd speaks %u: refused",
			         ops->abi_version, BACKEND_ABI_VERSION);
	}
	return -TDM_EINVAL;
}
