/* Files under the state directory (state_file.h). */
#include "profiler/state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "tandem.h"

static int sys_err(char *err, size_t errlen, const char *what, const char *dir, const char *name)
{
	snprintf(err, errlen, "%s %s%s%s: %s", what, dir, name ? "/" : "", name ? name : "",
	         strerror(errno));
	return -TDM_ESYS;
}

/* mkdir -p of dir's parents and dir itself, new ones 0700. */
static int mkdir_p(const char *dir, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	size_t n = strlen(dir);

	if (n >= sizeof(buf)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -TDM_EINVAL;
	}
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return sys_err(err, errlen, "cannot create", buf, NULL);
		buf[i] = dir[i];
	}
	return 0;
}

int state_dir_open(const char *dir, bool create, int *fd, char *err, size_t errlen)
{
	struct stat st;
	int rc;

	*fd = -1;
	if (!dir || !dir[0]) {
		snprintf(err, errlen, "no state directory");
		return -TDM_EINVAL;
	}
	if (create && (rc = mkdir_p(dir, err, errlen)) != 0)
		return rc;
	/* O_NOFOLLOW: the last component only; a parent may be a link
	 * (/var -> /private/var), the directory itself may not. */
	int d = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d < 0) {
		if (errno == ENOENT && !create)
			return 0;
		if ((errno == ELOOP || errno == ENOTDIR) && lstat(dir, &st) == 0) {
			if (S_ISLNK(st.st_mode)) {
				snprintf(err, errlen,
				         "state directory %s is a symbolic link: refused (give the "
				         "directory it points to)",
				         dir);
				return -TDM_EPERM;
			}
			snprintf(err, errlen, "%s is not a directory", dir);
			return -TDM_EINVAL;
		}
		return sys_err(err, errlen, "cannot open", dir, NULL);
	}
	if (fstat(d, &st) != 0) {
		rc = sys_err(err, errlen, "cannot stat", dir, NULL);
		close(d);
		return rc;
	}
	/* Another uid could replace or hold our files: refused, not fixed. */
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen,
		         "state directory %s belongs to uid %u, not to this daemon's (%u): refused",
		         dir, (unsigned)st.st_uid, (unsigned)geteuid());
		close(d);
		return -TDM_EPERM;
	}
	if (st.st_mode & 077) {
		if (fchmod(d, 0700) != 0) {
			rc = sys_err(err, errlen, "cannot chmod 0700", dir, NULL);
			close(d);
			return rc;
		}
		log_info("state directory %s was mode %04o: now 0700", dir,
		         (unsigned)(st.st_mode & 07777));
	}
	*fd = d;
	return 0;
}

/* name in dirfd, a regular file (never a link, never waiting on a FIFO),
 * in *fd; 0 with *fd = -1 when there is none (and flags do not create). */
static int open_regular(int dirfd, const char *dir, const char *name, int flags, int *fd, char *err,
                        size_t errlen)
{
	struct stat st;
	int f = openat(dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);

	*fd = -1;
	if (f < 0) {
		if (errno == ENOENT && !(flags & O_CREAT))
			return 0;
		if (errno == ELOOP) {
			snprintf(err, errlen, "%s/%s is a symbolic link: refused", dir, name);
			return -TDM_EINVAL;
		}
		return sys_err(err, errlen, "cannot open", dir, name);
	}
	if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s/%s: not a regular file: refused", dir, name);
		close(f);
		return -TDM_EINVAL;
	}
	if ((flags & O_ACCMODE) != O_RDONLY && (st.st_mode & 07777) != 0600 &&
	    st.st_uid == geteuid())
		(void)fchmod(f, 0600); /* one from an older version: private from now on */
	*fd = f;
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

int state_read_json(int dirfd, const char *dir, const char *name, size_t max, json_t **out,
                    char *err, size_t errlen)
{
	json_error_t jerr;
	struct stat st;
	char *buf = NULL;
	size_t got;
	int fd, rc;

	*out = NULL;
	rc = open_regular(dirfd, dir, name, O_RDONLY, &fd, err, errlen);
	if (rc || fd < 0)
		return rc;
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > max) {
		snprintf(err, errlen, "%s/%s: not a regular file of at most %zu bytes", dir, name,
		         max);
		rc = -TDM_EINVAL;
	} else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
		snprintf(err, errlen, "%s/%s: out of memory", dir, name);
		rc = -TDM_ENOMEM;
	} else if (!read_all(fd, buf, (size_t)st.st_size, &got)) {
		rc = sys_err(err, errlen, "cannot read", dir, name);
	} else if (!(*out = json_loadb(buf, got, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(err, errlen, "%s/%s:%d:%d: %s", dir, name, jerr.line, jerr.column,
		         jerr.text);
		rc = -TDM_EINVAL;
	}
	free(buf);
	close(fd);
	return rc;
}

int state_open_lock(int dirfd, const char *dir, const char *name, int *fd, char *err, size_t errlen)
{
	return open_regular(dirfd, dir, name, O_RDWR | O_CREAT, fd, err, errlen);
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

/* A suffix for a temp file: unique per writer, several may run at once. */
static uint64_t tmp_suffix(void)
{
	static _Atomic uint64_t seq;
	struct timespec ts;
	uint64_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r))
		return r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 40 ^
	       atomic_fetch_add(&seq, 1);
}

int state_write_atomic(int dirfd, const char *dir, const char *name, const char *text, char *err,
                       size_t errlen)
{
	char tmp[NAME_MAX + 1];
	int fd = -1, rc = 0;

	for (int tries = 0; fd < 0 && tries < 16; tries++) {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp-%016llx", name,
		             (unsigned long long)tmp_suffix()) >= (int)sizeof(tmp)) {
			snprintf(err, errlen, "%s/%s: name too long", dir, name);
			return -TDM_EINVAL;
		}
		/* O_EXCL: never a file (or link) that was there already */
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0)
		return sys_err(err, errlen, "cannot create", dir, tmp);
	if (fchmod(fd, 0600) != 0 || !write_all(fd, text, strlen(text)) ||
	    !write_all(fd, "\n", 1) || fsync(fd) != 0)
		rc = sys_err(err, errlen, "cannot write", dir, tmp);
	if (close(fd) != 0 && rc == 0)
		rc = sys_err(err, errlen, "cannot write", dir, tmp);
	/* A link at name is replaced, never followed. */
	if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0)
		rc = sys_err(err, errlen, "cannot rename over", dir, name);
	if (rc != 0) {
		unlinkat(dirfd, tmp, 0);
		return rc;
	}
	/* The rename itself survives a crash once the directory is synced. */
	if (fsync(dirfd) != 0)
		rc = sys_err(err, errlen, "cannot sync", dir, NULL);
	return rc;
}
