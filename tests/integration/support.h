/* Integration test support: a private tandemd per test group, the control
 * protocol's status document, and small helpers for building graphs.
 *
 * Functions here return 0 / a negative value and never call cmocka, so that
 * forked client processes may use them too (a child reports by exit code). */
#ifndef TDM_TEST_SUPPORT_H
#define TDM_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "tandem.h"

#define TDMT_PATH_MAX 108

struct tdmt_daemon {
	char dir[64]; /* private directory (mkdtemp, 0755) */
	char sock[TDMT_PATH_MAX]; /* dir/tandemd.sock */
	char config[TDMT_PATH_MAX]; /* dir/tandemd.toml */
	char log[TDMT_PATH_MAX]; /* dir/tandemd.log: the daemon's stderr */
	pid_t pid; /* 0 when not running */
	int exit_status; /* after stop, or when it died before READY */
	bool failed; /* keep dir and print the log at cleanup */
	/* Set after prepare, before launch (0: unchanged): run the daemon as
	 * this uid/gid (as root only; the directory is given to it), with this
	 * descriptor limit (soft and hard). */
	uid_t run_uid;
	gid_t run_gid;
	unsigned long nofile;
};

/* The build directory with bin/tandemd: $BUILD, default "build". */
const char *tdmt_build_dir(void);
uint64_t tdmt_now_ns(void);
void tdmt_sleep_ms(unsigned ms);

/* Creates the directory and writes the configuration; does not start. */
int tdmt_daemon_prepare(struct tdmt_daemon *d, const char *toml);
/* Rewrites the configuration file (for SIGHUP). */
int tdmt_daemon_write_config(struct tdmt_daemon *d, const char *toml);
/* Starts tandemd on the prepared directory, waits for READY (timeout_ms);
 * socket_path NULL: its default path, with XDG_RUNTIME_DIR unset.
 * Returns 0; -1 if it exited first (d->exit_status set: the exit code,
 * or 128 + signal); -2 on timeout (it is then killed); -3 on a system error. */
int tdmt_daemon_launch(struct tdmt_daemon *d, const char *socket_path, int timeout_ms);
/* prepare + launch on d->sock; says on stderr when it did not start (the
 * log is printed at cleanup: d->failed is set). */
int tdmt_daemon_start(struct tdmt_daemon *d, const char *toml);
/* SIGTERM, then waits up to timeout_ms; SIGKILL when it hangs. Returns the
 * exit status (exit code, or 128 + signal), or -1 when it had to be killed. */
int tdmt_daemon_stop(struct tdmt_daemon *d, int timeout_ms);
/* Whether the daemon process still runs (reaps it if it exited). */
bool tdmt_daemon_alive(struct tdmt_daemon *d);
/* The body of every group's cmocka teardown: marks the daemon failed (its
 * log is printed at cleanup) when the test did not pass, and returns -1
 * (failing the test) when the daemon died during it. */
int tdmt_after_test(struct tdmt_daemon *d);
/* Kills a running daemon, prints the log when d->failed, removes the
 * directory otherwise. */
void tdmt_daemon_cleanup(struct tdmt_daemon *d);
/* Prints the daemon log (last 64 KiB) to stderr. */
void tdmt_daemon_dump_log(const struct tdmt_daemon *d);
/* Whether the daemon log contains text. */
bool tdmt_log_contains(const struct tdmt_daemon *d, const char *text);
/* Waits until the log contains text; 0 or -1 on timeout. */
int tdmt_wait_log(const struct tdmt_daemon *d, const char *text, int timeout_ms);

/* Runs build/bin/tandemd with args (NULL-terminated, without argv[0]),
 * capturing stdout and stderr into out (NUL-terminated). Returns the exit
 * status as above, or -1 on timeout/error. */
int tdmt_run_tandemd(const char *const *args, char *out, size_t outlen, int timeout_ms);

/* ---- control protocol ---- */

/* A control document (TDM_MSG_CTL_*) as JSON text (malloc'd), or NULL. */
char *tdmt_control_json(const char *sock, uint32_t type);
/* The same, giving up after timeout_ms (for probes of a daemon under attack). */
char *tdmt_control_json_timeout(const char *sock, uint32_t type, int timeout_ms);
/* The daemon's resident memory (KiB) and CPU time used so far (ns), from
 * /proc; -1 when it cannot be read. */
int64_t tdmt_daemon_rss_kib(const struct tdmt_daemon *d);
int64_t tdmt_daemon_cpu_ns(const struct tdmt_daemon *d);
/* The daemon's open descriptors, those of them that are shared memory
 * (memfds: rings, buffers), and its mappings of shared memory, from /proc
 * (the descriptor opendir itself uses is not counted); 0 or -1. */
struct tdmt_fds {
	int open, memfds, memfd_maps;
};
int tdmt_daemon_fds(const struct tdmt_daemon *d, struct tdmt_fds *out);
/* The status JSON text (malloc'd), or NULL. */
char *tdmt_status_json(const char *sock);
/* The status document parsed (json_decref it), or NULL. */
json_t *tdmt_status_doc(const char *sock);
/* The entry of doc's "devices" named name (doc owns it), or NULL. */
json_t *tdmt_status_device(json_t *doc, const char *name);
/* An integer field of the device named name in a fresh status document
 * ("index", "mem_used", ...) in *out, -1 when there is no such device;
 * returns 0, or -1 when the status cannot be read. */
int tdmt_device_field(const char *sock, const char *name, const char *key, int64_t *out);
/* One counter of status.counters; 0 or -1. */
int tdmt_counter(const char *sock, const char *name, int64_t *out);
/* Polls until counter == want; 0, or -1 on timeout (*last gets the last
 * value seen, may be NULL). */
int tdmt_wait_counter(const char *sock, const char *name, int64_t want, int timeout_ms,
                      int64_t *last);
/* A field of the status document's entry for the client with this pid
 * ("buffers", "buffer_bytes", "graphs_in_flight", "tasks_in_flight");
 * 0, or -1 when no such client is connected. */
int tdmt_client_field(const char *sock, pid_t pid, const char *key, int64_t *out);
/* Polls until that field is at least min; 0 or -1 on timeout. */
int tdmt_wait_client_field(const char *sock, pid_t pid, const char *key, int64_t min,
                           int timeout_ms);
/* Polls until every listed counter is 0 ("sessions_live", ...); returns 0 or
 * -1, with the first counter still non-zero named in *which. */
int tdmt_wait_counters_zero(const char *sock, const char *const *names, int timeout_ms,
                            const char **which, int64_t *value);
/* The counters that must be 0 when no client is connected. */
extern const char *const tdmt_baseline_counters[];

/* ---- graphs ---- */

struct tdmt_kernels {
	tdm_kernel noop, spin, fill, axpy, sgemm;
};

int tdmt_connect(const char *sock, tdm_client **c);
int tdmt_lookup_kernels(tdm_client *c, struct tdmt_kernels *k);
int tdmt_add_noop(tdm_graph *g, const struct tdmt_kernels *k, uint32_t *idx);
int tdmt_add_spin(tdm_graph *g, const struct tdmt_kernels *k, int64_t us, uint32_t *idx);
/* fill of the whole buffer (off 0, len 0 = to the end) or a range */
int tdmt_add_fill(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer b, uint64_t off,
                  uint64_t len, float v, uint32_t *idx);
/* y += alpha x over whole buffers */
int tdmt_add_axpy(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer x, tdm_buffer y,
                  float alpha, uint32_t *idx);
/* C = alpha A B + beta C, row-major, A MxK, B KxN, C MxN */
int tdmt_add_sgemm(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer a, tdm_buffer b,
                   tdm_buffer c, int64_t m, int64_t n, int64_t kk, float alpha, float beta,
                   uint32_t *idx);

/* A small deterministic PRNG (xorshift64*). */
uint64_t tdmt_rand(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t tdmt_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* ---- processes ---- */

/* Removes a directory and everything below it (rm -rf); 0 or -1. */
int tdmt_remove_tree(const char *dir);

/* Forks and runs exe with argv (argv[0] first, NULL-terminated), its
 * stdout and stderr into these files (NULL: the test's own); the child dies
 * with the test. Returns the pid, or -1. Exit status 126: a file could not
 * be opened, 127: exec failed. */
pid_t tdmt_spawn(const char *exe, const char *const *argv, const char *out_path,
                 const char *err_path);

/* Forks a child that runs fn(stop_fd) and exits with what it returns; fn
 * should end once stop_fd reads end of file, that is when the test closes
 * *stop (tdmt_stop_child). Returns the pid, or -1. */
pid_t tdmt_fork_stoppable(int (*fn)(int stop_fd), int *stop);
/* Closes stop and waits for the child as tdmt_wait_child does. */
int tdmt_stop_child(pid_t pid, int stop, int timeout_ms);

/* Waits for pid up to timeout_ms; returns exit status (exit code or
 * 128 + signal), or -1 on timeout (the child is then killed and reaped). */
int tdmt_wait_child(pid_t pid, int timeout_ms);

/* ---- cmocka glue ---- */

/* Per-test teardown bookkeeping: tests call tdmt_test_ok() as their last
 * statement; a test that failed earlier never gets there, and the fixture
 * then marks the daemon failed so its log is printed at cleanup. */
void tdmt_test_begin(void);
void tdmt_test_ok(void);
bool tdmt_test_passed(void);

/* Fixtures for a group of tests served by one daemon, which the group's
 * setup hands to the others as cmocka's state:
 *   static int group_setup(void **state)
 *   { return tdmt_group_start(state, &d, "toml"); }
 *   cmocka_run_group_tests(tests, group_setup, tdmt_group_end) with each
 *   test set up and torn down by tdmt_test_setup and tdmt_test_teardown.
 * tdmt_group_start starts d (*state = d); when it does not start, cleans
 * up (printing the log) and returns -1. tdmt_group_end cleans the daemon
 * up; tdmt_test_teardown returns tdmt_after_test's verdict on it. */
int tdmt_group_start(void **state, struct tdmt_daemon *d, const char *toml);
int tdmt_group_end(void **state);
int tdmt_test_setup(void **state);
int tdmt_test_teardown(void **state);
/* The body of the teardown of a test that starts its own daemon:
 * tdmt_after_test's verdict; then a daemon still running is asked to stop
 * (SIGTERM, up to stop_ms; 0: killed at once), cleaned up, and d zeroed
 * for the next test. */
int tdmt_test_end(struct tdmt_daemon *d, int stop_ms);

#endif
