/* libtandem internals. */
#ifndef TDM_CLIENT_INTERNAL_H
#define TDM_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem.h"

#define TDM_API __attribute__((visibility("default")))

struct kernel_sig {
	tdm_kernel id;
	char name[TDM_KERNEL_NAME_MAX];
	struct tdm_kernel_lookup_reply r;
};

struct mapping {
	tdm_buffer handle;
	void *ptr;
	size_t bytes, mapped; /* growable: bytes in use as declared; the reservation */
	size_t backed; /* growable: chunks mapped so far, [0, backed) */
	bool growable;
};

struct tdm_client {
	int sock;
	uint32_t session_id, ndevices, max_tasks_per_graph;
	void *ring;
	size_t ring_bytes;
	struct tdm_ring_header *hdr;
	struct tdm_sqe *sq;
	struct tdm_cqe *cq;
	uint32_t sq_entries, cq_entries;
	uint32_t sq_tail, sq_published, cq_head; /* our indices */
	int sq_bell; /* an eventfd: we write it to ring the daemon */
	int bell; /* the read end of the pipe the daemon wakes us on */
	/* A blocked wait sleeps in epoll_wait on wait_ep (bell, socket, the
	 * daemon's pidfd, wait_timer): registered once, not per sleep as with
	 * poll(). wait_timer (a timerfd) holds the deadline, armed at timer_at
	 * (0: not armed) and left armed across waits: a sleep with a timeout
	 * would arm and cancel a timer each time (~0.6 us of a 9 us round trip
	 * here), and a timer that fires before a later deadline only makes a
	 * wait look again. */
	int wait_ep, wait_timer;
	uint64_t timer_at;
	uint32_t spin_us;
	bool broken;
	/* What tdm_reconnect connects with again. */
	char path[108];
	uint32_t daemon_uid;
	/* The daemon's process (SO_PEERCRED), to tell "daemon lost" from a
	 * closed connection: a pidfd, readable once it exited (-1 where the
	 * kernel has none: kill(pid, 0) then). */
	int daemon_pid;
	int daemon_pidfd;
	bool daemon_gone, lost_checked;
	struct kernel_sig *kernels;
	size_t nkernels;
	struct mapping *maps;
	size_t nmaps, maps_cap;
	struct tdm_graph *inflight;
	uint64_t next_cookie;
};

struct tdm_graph {
	tdm_client *c;
	struct tdm_sqe_task *tasks;
	uint32_t ntasks, tasks_cap;
	uint32_t *edges; /* (from, to) pairs */
	uint32_t nedges, edges_cap;
	/* Routing guards by task: (router + 1, expert); router 0: none. */
	uint32_t (*guards)[2];
	uint32_t guards_cap;
	bool want_info;
	int32_t priority;
	uint32_t policy; /* enum tdm_policy_hint */
	uint64_t deadline_ns;
	bool inflight, done;
	int status;
	uint64_t cookie;
	struct tdm_task_info *info;
	uint32_t reject_task, reject_field;
	struct tdm_graph *next, *prev; /* in c->inflight */
};

/* client.c */
int client_request(tdm_client *c, uint32_t type, const void *req, uint32_t len, uint32_t reply_type,
                   void *reply, uint32_t reply_len, int *fd_out);
const struct kernel_sig *client_kernel_by_id(const tdm_client *c, tdm_kernel id);
const struct mapping *client_mapping(const tdm_client *c, tdm_buffer h);

/* Marks the connection broken and says why: -TDM_EDAEMON when the
 * daemon's process ended, else -TDM_EDISCONNECTED. */
int client_lost(tdm_client *c);

/* ring.c */
int ring_put(tdm_client *c, const struct tdm_sqe *e);
void ring_publish(tdm_client *c, bool doorbell);
/* Reaps completions; returns 0 or client_lost()'s error. */
int ring_reap(tdm_client *c);
/* Sets up and tears down c's wait set (c->bell, c->sock and c->daemon_pidfd
 * are open). */
int ring_wait_init(tdm_client *c);
void ring_wait_fini(tdm_client *c);
/* Waits for any progress (completion, ring space) until deadline_ns
 * (CLOCK_MONOTONIC; 0 = forever). Returns 0, -TDM_ETIMEDOUT or
 * client_lost()'s error. */
int ring_wait_progress(tdm_client *c, uint64_t deadline_ns, bool (*ready)(tdm_client *, void *),
                       void *arg);
uint64_t client_now_ns(void);

#endif
