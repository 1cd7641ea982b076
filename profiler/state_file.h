/* Files under the state directory (the calibration cache, the model store):
 * creating the directory, reading a bounded JSON document, and replacing a
 * file whole (temp file in the same directory, fsync, rename, directory
 * fsync). Every function writes why it failed to err. */
#ifndef TDM_PROFILER_STATE_FILE_H
#define TDM_PROFILER_STATE_FILE_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* mkdir -p: the directories it creates get mode; dir must end up a
 * directory. 0, -TDM_EINVAL (too long) or -TDM_ESYS. */
int state_mkdir_p(const char *dir, mode_t mode, char *err, size_t errlen);

/* The JSON document at path, a regular file of at most max bytes, in *out.
 * 0 with *out NULL when there is no such file. open_flags are added to
 * open(2)'s (O_NOFOLLOW: refuse a symbolic link). -TDM_EINVAL with
 * "path:line:col: message" when it does not parse or is not such a file,
 * -TDM_ESYS when it cannot be read. */
int state_read_json(const char *path, size_t max, int open_flags, json_t **out, char *err,
                    size_t errlen);

/* text and a newline replace path whole or not at all; the file gets mode.
 * Several processes may write the same path at once: the last rename wins
 * and no temp file is left behind. 0, -TDM_EINVAL or -TDM_ESYS. */
int state_write_atomic(const char *dir, const char *path, const char *text, mode_t mode, char *err,
                       size_t errlen);

#endif
