/* The recorder behind `tandemctl trace`: while a recording runs, every graph
 * that completes is copied (on the worker that completed it) into memory,
 * within bounds; at the end the event loop writes the tandem trace (JSON
 * Lines, workload/workload.h's streaming writer) and, optionally, a Chrome /
 * Perfetto trace of the real schedule (workload/schedule_out.h) to the files
 * tandemctl opened and passed over the control connection.
 *
 * One recording at a time. Times in the trace are ns since the earliest
 * arrival among the recorded graphs; graphs are written in arrival order,
 * buffers (the client's handle, per client) once each, before their first
 * use. */
#ifndef TDM_DAEMON_RECORDER_H
#define TDM_DAEMON_RECORDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define RECORDER_MAX_TASKS 1000000u /* tasks kept in memory, over all graphs */
#define RECORDER_MAX_EDGES 10000000u

struct dgraph;
struct rec_graph;

struct recorder {
	pthread_mutex_t lock;
	_Atomic bool active; /* read without the lock on every completion */
	/* Under lock (workers add, the event loop takes): */
	uint64_t gen; /* numbers recordings, so a late capture is not mixed in */
	struct rec_graph *head, *tail;
	uint64_t ngraphs, ntasks, nedges; /* kept, and reserved by captures */
	uint64_t dropped; /* graphs over the bounds (or out of memory) */
	uint64_t skipped; /* failed or empty graphs, graphs with backward edges */
	/* Event loop only: */
	void *owner; /* the control connection that started it */
	int trace_fd, chrome_fd; /* chrome_fd -1: none */
	uint64_t start_ns;
};

/* What the files name: the machine, the policy, the engine's devices. */
struct recorder_env {
	const char *machine;
	const char *policy;
	const char *const *devices;
	uint32_t ndevices;
};

void recorder_init(struct recorder *r);
/* Discards a recording still running (its descriptors are closed). */
void recorder_fini(struct recorder *r);

/* Starts recording into trace_fd (and chrome_fd, -1 for none), which it
 * owns from then on. 0, or -TDM_EBUSY when a recording already runs (the
 * descriptors stay the caller's). Event loop. */
int recorder_start(struct recorder *r, void *owner, int trace_fd, int chrome_fd);
static inline bool recorder_active(const struct recorder *r)
{
	return atomic_load(&r->active);
}
/* Engine hook side, any thread: copies a finished graph when recording. */
void recorder_graph_done(struct recorder *r, const struct dgraph *g);
/* Ends the recording: writes both files, closes the descriptors and returns
 * the summary (malloc'd JSON: graphs, tasks, edges, buffers, dropped,
 * skipped, bytes, chrome_bytes, seconds) in *summary, or an error document
 * ({"error": ...}). 0, -TDM_EINVAL (nothing recording) or -TDM_ESYS (a
 * write failed) / -TDM_ENOMEM. Event loop. */
int recorder_stop(struct recorder *r, const struct recorder_env *env, char **summary);
/* Ends the recording without writing anything; closes the descriptors. */
void recorder_discard(struct recorder *r);

/* A stdio stream that writes to fd (a regular file), closes it at fclose and
 * counts the bytes written in *bytes (which must outlive the stream). NULL
 * on failure, fd then still the caller's. */
FILE *recorder_fd_stream(int fd, uint64_t *bytes);
/* Whether fd is a regular file open for writing. */
bool recorder_fd_writable(int fd);

#endif
