/* Elastic devices under load (issue 18), shared by test_elastic_stress and
 * bench_elastic: client workloads whose every graph is checked against a
 * host reference, and a control thread that changes the daemon's devices
 * at random while they run.
 *
 * The load: threads, each its own libtandem client, factorising a tiled
 * Cholesky matrix over and over (examples/cholesky_tiles.h), every graph
 * asked for task info (each task's status and device) and its factor
 * checked; and llm_layer processes (examples/llm_layer.c, MoE and dense
 * layers) decoding until their standard input closes, each step checked by
 * the example against its plain-loop reference (its exit status and
 * result line are the verdict).
 *
 * Like support.h, nothing here calls cmocka. */
#ifndef TDM_TEST_SUPPORT_ELASTIC_H
#define TDM_TEST_SUPPORT_ELASTIC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "tandem.h"

#define TDMT_EL_MAX_CLIENTS 8
#define TDMT_EL_MAX_IDS 256 /* device ids watched for their first task */
#define TDMT_EL_MAX_DONE 65536 /* completion times kept for client 0 */

/* What the clients saw; each figure summed over all clients. */
struct tdmt_el_counts {
	/* graphs (Cholesky factorisations and LLM steps) completed with every
	 * task done and the right result */
	atomic_ullong graphs_ok;
	/* graphs that failed, or never completed before the clients were
	 * stopped; their tasks: those reported not done (a graph that never
	 * completed counts all of its tasks; an LLM step that failed counts as
	 * one, llm_layer reporting no tasks) */
	atomic_ullong graphs_lost, tasks_lost;
	atomic_ullong graphs_wrong; /* completed, numerics off the reference */
	atomic_ullong tasks_done; /* of the Cholesky graphs (task info) */
};

struct tdmt_elastic;

struct tdmt_el_client {
	struct tdmt_elastic *e;
	int index;
	pthread_t thread;
	bool started;
	/* llm_layer processes */
	pid_t pid;
	int stdin_fd;
	char out_path[128], err_path[128];
};

struct tdmt_elastic {
	/* set by the caller */
	const char *sock;
	int chol_clients; /* threads (1 .. TDMT_EL_MAX_CLIENTS) */
	int chol_tiles, chol_nb; /* tiles per side and their size */
	int llm_clients; /* llm_layer processes: even ones MoE, odd ones dense */
	const char *tmpdir; /* where the llm_layer outputs go */
	int64_t graph_timeout_ms; /* a Cholesky graph not done by then is lost */

	/* state */
	atomic_bool stop;
	struct tdmt_el_client chol[TDMT_EL_MAX_CLIENTS], llm[TDMT_EL_MAX_CLIENTS];
	struct tdmt_el_counts n;
	/* The first task seen starting on each device id at or after
	 * watch_since[id] (CLOCK_MONOTONIC ns; 0: not watched). */
	atomic_ullong watch_since[TDMT_EL_MAX_IDS], first_start[TDMT_EL_MAX_IDS];
	/* Tasks each device id ran (Cholesky clients). */
	atomic_ullong tasks_on[TDMT_EL_MAX_IDS];
	/* Completion times of client 0's graphs, for its throughput. */
	uint64_t done_ns[TDMT_EL_MAX_DONE];
	atomic_uint ndone;
};

/* Starts the clients (after they connected and set up, or an error). */
int tdmt_elastic_start(struct tdmt_elastic *e);
/* Stops them: the threads finish the graph in flight (waiting up to
 * graph_timeout_ms for it), the llm_layer processes see end of file and
 * finish their step (killed after timeout_ms: their step counts as lost).
 * Returns 0, or -1 when a client could not be waited for. */
int tdmt_elastic_stop(struct tdmt_elastic *e, int timeout_ms);
/* Waits until the clients completed at least n graphs (so that every
 * device took work, and the injected faults were hit, before the changes
 * begin); 0, or -1 after timeout_ms. */
int tdmt_elastic_warm(struct tdmt_elastic *e, unsigned long long n, int timeout_ms);
/* Watches device id for its first task from now on. */
void tdmt_elastic_watch(struct tdmt_elastic *e, unsigned id, uint64_t since_ns);
/* Graphs client 0 completed in [t0, t1). */
unsigned tdmt_elastic_done_between(struct tdmt_elastic *e, uint64_t t0, uint64_t t1);

/* ---- device changes ---- */

/* Sends one TDM_MSG_CTL_DEVICE request (op enum tdm_ctl_device_op); returns
 * the daemon's status (0 or -TDM_E*; -1000 when no reply came) and the
 * reply document in *reply (json_decref it; may be NULL). */
int tdmt_device_ctl(const char *sock, uint32_t op, const char *name, uint64_t value,
                    json_t **reply);

/* What a device looks like from the status document: its latest id under
 * that name and that id's state ("active", "draining", "gone"), or
 * "available" when it is found but not in use (then id is -1); "" when the
 * daemon knows no such name. */
struct tdmt_dev_view {
	int id;
	char state[16];
	bool accelerator;
};
int tdmt_device_view(json_t *status, const char *name, struct tdmt_dev_view *v);

/* "cpu0 123, cpu1 456, clcpu0 78": the tasks each device name ran, over
 * all of its ids (status "tasks_run"), into out. */
void tdmt_tasks_per_name(json_t *status, char *out, size_t len);

/* Random device changes. */
struct tdmt_el_events {
	/* set by the caller */
	const char *sock;
	const char *const *names; /* the devices to change ("cpu1", "clcpu0") */
	int nnames;
	int count; /* events to fire */
	unsigned pause_min_ms, pause_max_ms; /* between two */
	uint64_t seed;
	/* counted */
	unsigned sent, applied, refused, no_reply;
	unsigned by_op[TDM_DEV_OP_COUNT]; /* applied, per op */
	unsigned capacity_refusals; /* adds refused for want of device ids */
	char last_error[256];
};
/* Sends e->count changes, each a random valid change of a random device of
 * the list as the status shows it: an active one is drained (3 in 4) or
 * removed, a draining one resumed (3 in 4) or removed, a gone or available
 * one added. One CPU worker of the list is always left taking tasks (the
 * CPU-only kernels need one). Device ids are never reused and there are at
 * most 64: once an add was refused for capacity, nothing more is removed
 * or added. Returns 0, or -1 when the status could not be read. */
int tdmt_elastic_fire_events(struct tdmt_el_events *ev);

#endif
