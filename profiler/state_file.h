/* Files under the state directory (the calibration cache, the model store):
 * opening the directory, reading a bounded JSON document, opening a lock
 * file and replacing a file whole (temp file in the same directory, fsync,
 * rename, directory fsync). Every function writes why it failed to err.
 *
 * The directory is this daemon's alone: it must belong to the effective
 * uid and must not be a symbolic link; it is created 0700 and an existing
 * one loses its group and other permission bits. Files in it are opened
 * through the directory's descriptor (so the directory cannot be swapped
 * between the check and the use), never through a symbolic link
 * (O_NOFOLLOW), never blocking on a FIFO or a device (O_NONBLOCK, then
 * only a regular file is accepted), and are written with mode 0600. */
#ifndef TDM_PROFILER_STATE_FILE_H
#define TDM_PROFILER_STATE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* The state directory dir as an O_DIRECTORY descriptor in *fd (the caller
 * closes it). create: missing directories, parents included, are made with
 * mode 0700; otherwise a missing dir gives 0 with *fd = -1. -TDM_EPERM when
 * dir is a symbolic link or belongs to another uid, -TDM_EINVAL (too long,
 * not a directory) or -TDM_ESYS. */
int state_dir_open(const char *dir, bool create, int *fd, char *err, size_t errlen);

/* The JSON document name in the directory dirfd (dir: for messages), a
 * regular file of at most max bytes, in *out. 0 with *out NULL when there
 * is no such file. -TDM_EINVAL with "path:line:col: message" when it does
 * not parse, or when it is not a regular file (a symbolic link, a FIFO),
 * -TDM_ESYS when it cannot be read. */
int state_read_json(int dirfd, const char *dir, const char *name, size_t max, json_t **out,
                    char *err, size_t errlen);

/* Opens name in dirfd for locking (read-write, created 0600 when missing,
 * an existing one of ours set to 0600) in *fd. -TDM_EINVAL when it is not a
 * regular file (a symbolic link, a FIFO), -TDM_ESYS. */
int state_open_lock(int dirfd, const char *dir, const char *name, int *fd, char *err,
                    size_t errlen);

/* text and a newline replace name in dirfd whole or not at all; the file
 * gets mode 0600. Several processes may write the same name at once: the
 * last rename wins and no temp file is left behind. 0, -TDM_EINVAL or
 * -TDM_ESYS. */
int state_write_atomic(int dirfd, const char *dir, const char *name, const char *text, char *err,
                       size_t errlen);

#endif
