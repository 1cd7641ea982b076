/* Where tandemd listens by default; shared by libtandem and tandemd. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tandem.h"

#define TDM_API __attribute__((visibility("default")))

TDM_API int tdm_default_socket_path(char *out, size_t len)
{
	const char *env = getenv("TANDEM_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env && env[0])
		n = snprintf(out, len, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(out, len, "/run/tandem/tandemd.sock");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, len, "%s/tandem/tandemd.sock", xdg);
	else
		n = snprintf(out, len, "/tmp/tandem-%u/tandemd.sock", (unsigned)geteuid());
	return n > 0 && (size_t)n < len ? 0 : -TDM_EINVAL;
}
