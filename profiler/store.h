/* The model store: one readable JSON file per host under the state
 * directory (models-<hostname>.json). Saves merge with what is on disk under
 * an exclusive lock and replace the file atomically (temp file + fsync +
 * rename), so several daemons sharing a state directory add to each other's
 * models instead of the last writer winning. The directory and its files
 * are the daemon's own (profiler/state_file.h: 0700, 0600, no links). */
#ifndef TDM_PROFILER_STORE_H
#define TDM_PROFILER_STORE_H

#include <stdatomic.h>
#include <stddef.h>

#include <jansson.h>

#include "profiler/profiler.h"

/* The store's path for this host: dir/models-<hostname>.json. */
int store_path(const char *dir, char *out, size_t len);
/* Loads the store into p. A missing file or directory is not an error (0).
 * A file that is not a model document, or not a regular file (a link, a
 * FIFO): -TDM_EINVAL with err set (the daemon logs it and starts with empty
 * models); a directory that is a link or another uid's: -TDM_EPERM. Never
 * blocks on what is at the path. */
int store_load(struct profiler *p, const char *dir, char *err, size_t errlen);
/* Merges p's models into the file, creating dir (0700) when missing. Waits
 * at most wait_ms for the lock: -TDM_ETIMEDOUT when another process held
 * it that long, -TDM_ECANCELED when cancel (may be NULL) was set meanwhile.
 * 0 or -TDM_E* with err set. Any thread (profiler_to_json takes the
 * profiler's locks). */
int store_save(const struct profiler *p, const char *dir, unsigned wait_ms,
               const atomic_bool *cancel, char *err, size_t errlen);
/* The merge itself, on documents (exposed for tests): entries of `ours`
 * replace those of `theirs` with the same (kernel, device, footprint) when
 * they have at least as many samples; everything else is kept. Returns a
 * new document. */
json_t *store_merge(const json_t *ours, const json_t *theirs);

#endif
