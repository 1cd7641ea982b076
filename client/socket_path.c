/* Where tandemd listens by default, and whether what listens there is a
 * tandemd to trust; shared by libtandem, tandemctl and tandemd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem.h"

#define TDM_API __attribute__((visibility("default")))

#define SYSTEM_SOCKET "/run/tandem/tandemd.sock"

TDM_API int tdm_listen_socket_path(char *out, size_t len)
{
	const char *env = getenv("TANDEM_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env && env[0])
		n = snprintf(out, len, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(out, len, SYSTEM_SOCKET);
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, len, "%s/tandem/tandemd.sock", xdg);
	else
		n = snprintf(out, len, "/tmp/tandem-%u/tandemd.sock", (unsigned)geteuid());
	return n > 0 && (size_t)n < len ? 0 : -TDM_EINVAL;
}

TDM_API int tdm_default_socket_path(char *out, size_t len)
{
	int err = tdm_listen_socket_path(out, len);
	const char *env = getenv("TANDEM_SOCKET");
	struct stat st;

	/* A user without a daemon of their own reaches the system's. */
	if (!err && !(env && env[0]) && geteuid() != 0 && lstat(out, &st) != 0 && errno == ENOENT &&
	    lstat(SYSTEM_SOCKET, &st) == 0 && S_ISSOCK(st.st_mode)) {
		if (len <= strlen(SYSTEM_SOCKET))
			return -TDM_EINVAL;
		snprintf(out, len, SYSTEM_SOCKET);
	}
	return err;
}

TDM_API int tdm_check_daemon(int sock, uint32_t daemon_uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	const char *env = getenv("TANDEM_DAEMON_UID");
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return -TDM_ESYS;
	if (cred.uid == 0 || cred.uid == geteuid() || (daemon_uid && cred.uid == daemon_uid))
		return 0;
	if (env && env[0]) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);
		if (!*end && v == cred.uid)
			return 0;
	}
	return -TDM_EPEER;
}
