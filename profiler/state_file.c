/* Files under the state directory (state_file.h). */
#include "profiler/state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem.h"

static int sys_err(char *err, size_t errlen, const char *what, const char *path)
{
	snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
	return -TDM_ESYS;
}

int state_mkdir_p(const char *dir, mode_t mode, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	size_t n = strlen(dir);
	struct stat st;

	if (n >= sizeof(buf)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -TDM_EINVAL;
	}
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return sys_err(err, errlen, "cannot create", buf);
		buf[i] = dir[i];
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is not a directory", dir);
		return -TDM_ESYS;
	}
	return 0;
}

static bool read_all(int fd, char *buf, size_t len, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t r = read(fd, buf + *got, len - *got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return false;
		if (r == 0)
			break;
		*got += (size_t)r;
	}
	return true;
}

int state_read_json(const char *path, size_t max, int open_flags, json_t **out, char *err,
                    size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | open_flags);
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	size_t got;
	int rc = 0;

	*out = NULL;
	if (fd < 0)
		return errno == ENOENT ? 0 : sys_err(err, errlen, "cannot read", path);
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		snprintf(err, errlen, "%s: not a regular file of at most %zu bytes", path, max);
		rc = -TDM_EINVAL;
	} else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
		snprintf(err, errlen, "%s: out of memory", path);
		rc = -TDM_ENOMEM;
	} else if (!read_all(fd, buf, (size_t)st.st_size, &got)) {
		rc = sys_err(err, errlen, "cannot read", path);
	} else if (!(*out = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		rc = -TDM_EINVAL;
	}
	free(buf);
	close(fd);
	return rc;
}

static bool write_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		s += w;
		n -= (size_t)w;
	}
	return true;
}

int state_write_atomic(const char *dir, const char *path, const char *text, mode_t mode, char *err,
                       size_t errlen)
{
	char tmp[PATH_MAX];
	int fd, rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -TDM_EINVAL;
	}
	fd = mkostemp(tmp, O_CLOEXEC); /* unique per writer: several may run at once */
	if (fd < 0)
		return sys_err(err, errlen, "cannot create", tmp);
	if (fchmod(fd, mode) != 0 || !write_all(fd, text, strlen(text)) ||
	    !write_all(fd, "\n", 1) || fsync(fd) != 0)
		rc = sys_err(err, errlen, "cannot write", tmp);
	if (close(fd) != 0 && rc == 0)
		rc = sys_err(err, errlen, "cannot write", tmp);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = sys_err(err, errlen, "cannot rename over", path);
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	/* The rename itself survives a crash once the directory is synced. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
		rc = sys_err(err, errlen, "cannot sync", dir);
	if (fd >= 0)
		close(fd);
	return rc;
}
