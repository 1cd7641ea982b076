/* One client must never stop the daemon (issue 12). Each test plays one
 * attacker, an allowed client or a local user who is not allowed, bounded
 * in count and time, on the test daemon's socket only; meanwhile a victim
 * client and `tandemctl status` probe the daemon, and the test asserts
 * what a user relies on: the victim's graph completes within 1 s, status
 * answers within 1 s, SIGTERM ends the daemon within 5 s, memory and CPU
 * stay bounded. Each prints BENCH dos_probe_ms (the worst probe) and, for
 * the pending-completions attack, BENCH dos_rss_mb; the clients that never
 * read (completions, control replies) print BENCH slow_consumer_*, the
 * flood of refused connections BENCH refused_*.
 *
 * Tests that need a second uid run the attacker (or the daemon) as nobody
 * or as spare uids when root, and skip with a message otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"
#include "support_raw.h"

#define NOBODY 65534
#define UID_A 4242 /* an allowed attacker, or the impostor */
#define UID_B 4243 /* a victim user of its own */
#define PROBE_LIMIT_MS 1000
#define ATTACK_MS 2500
#define STOP_LIMIT_MS 5000

static struct tdmt_daemon daemon_;

static int test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	return 0;
}

/* Attackers still running (a test that failed half-way did not end them). */
#define MAX_CHILDREN 8
static pid_t children[MAX_CHILDREN];

/* A child that ended by itself (and was reaped) is no longer ours to end. */
static void forget_child(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

static void end_child(pid_t pid)
{
	kill(pid, SIGKILL);
	tdmt_wait_child(pid, 5000);
	forget_child(pid);
}

static int test_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i])
			end_child(children[i]);
	int rc = tdmt_after_test(&daemon_);
	tdmt_daemon_cleanup(&daemon_);
	return rc;
}

static bool root_or_skip(const char *test)
{
	if (geteuid() == 0)
		return true;
	fprintf(stderr, "%s: needs root to act as a second user: skipped\n", test);
	tdmt_test_ok();
	return false;
}

static void start(const char *toml)
{
	assert_int_equal(tdmt_daemon_start(&daemon_, toml), 0);
}

/* Runs fn in a child process as uid (0: as we are) for the length of the
 * attack; the child is killed when the test ends it. */
static pid_t spawn_as(uid_t uid, void (*fn)(void *), void *arg)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (uid && (setgroups(0, NULL) || setgid(uid) || setuid(uid)))
			_exit(2);
		/* Never outlive the test (it may fail before it ends us); after
		 * the change of uid, which clears this setting. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		fn(arg);
		_exit(0);
	}
	for (int i = 0; i < MAX_CHILDREN; i++) {
		if (!children[i]) {
			children[i] = pid;
			break;
		}
	}
	return pid;
}

/* ---- probes ---------------------------------------------------------------- */

/* A client of another program that keeps using the daemon while it is
 * attacked: one small graph (fill then axpy) per probe. */
struct victim {
	tdm_client *c;
	tdm_graph *g;
	float *x, *y;
	uint64_t worst_graph_ns, worst_status_ns;
	unsigned probes, late;
};

static void victim_up(struct victim *v)
{
	struct tdmt_kernels k;
	tdm_buffer bx, by;
	memset(v, 0, sizeof(*v));
	assert_int_equal(tdmt_connect(daemon_.sock, &v->c), 0);
	assert_int_equal(tdmt_lookup_kernels(v->c, &k), 0);
	assert_int_equal(tdm_buffer_alloc(v->c, 4096, 0, &bx, (void **)&v->x), 0);
	assert_int_equal(tdm_buffer_alloc(v->c, 4096, 0, &by, (void **)&v->y), 0);
	v->g = tdm_graph_new(v->c);
	assert_non_null(v->g);
	assert_int_equal(tdmt_add_fill(v->g, &k, bx, 0, 0, 2.0f, NULL), 0);
	assert_int_equal(tdmt_add_axpy(v->g, &k, bx, by, 1.0f, NULL), 0);
}

static void victim_down(struct victim *v)
{
	if (v->g)
		tdm_graph_free(v->g);
	if (v->c)
		tdm_disconnect(v->c);
	v->g = NULL;
	v->c = NULL;
}

/* One graph and one status request, each timed (a probe that fails or
 * takes more than 3 s counts as 3 s). */
static void probe(struct victim *v)
{
	uint64_t t0 = tdmt_now_ns();
	memset(v->y, 0, 4096);
	int rc = tdm_graph_submit(v->g);
	if (rc == 0)
		rc = tdm_wait(v->g, 3000ll * 1000000ll);
	uint64_t dt = tdmt_now_ns() - t0;
	if (rc != 0 || v->y[1023] != 2.0f)
		dt = 3000ull * 1000000ull;
	if (dt > v->worst_graph_ns)
		v->worst_graph_ns = dt;
	t0 = tdmt_now_ns();
	char *json = tdmt_control_json_timeout(daemon_.sock, TDM_MSG_CTL_STATUS, 3000);
	dt = json ? tdmt_now_ns() - t0 : 3000ull * 1000000ull;
	free(json);
	if (dt > v->worst_status_ns)
		v->worst_status_ns = dt;
	v->probes++;
}

/* Probes every 50 ms for ms milliseconds. */
static void probe_for(struct victim *v, unsigned ms)
{
	uint64_t until = tdmt_now_ns() + (uint64_t)ms * 1000000ull;
	while (tdmt_now_ns() < until) {
		probe(v);
		tdmt_sleep_ms(50);
	}
}

static void report(struct victim *v, const char *attack)
{
	uint64_t worst =
	        v->worst_graph_ns > v->worst_status_ns ? v->worst_graph_ns : v->worst_status_ns;
	printf("BENCH dos_probe_ms %.1f ms attack=%s graph_ms=%.1f status_ms=%.1f probes=%u\n",
	       (double)worst / 1e6, attack, (double)v->worst_graph_ns / 1e6,
	       (double)v->worst_status_ns / 1e6, v->probes);
	if (v->worst_graph_ns > PROBE_LIMIT_MS * 1000000ull)
		fail_msg("%s: the victim's graph took %.0f ms", attack,
		         (double)v->worst_graph_ns / 1e6);
	if (v->worst_status_ns > PROBE_LIMIT_MS * 1000000ull)
		fail_msg("%s: status took %.0f ms", attack, (double)v->worst_status_ns / 1e6);
}

/* SIGTERM while the attacker is still at it: the daemon exits 0 in time. */
static void stop_in_time(const char *attack)
{
	uint64_t t0 = tdmt_now_ns();
	int st = tdmt_daemon_stop(&daemon_, 20000);
	double ms = (double)(tdmt_now_ns() - t0) / 1e6;
	printf("# %s: SIGTERM to exit %.0f ms (status %d)\n", attack, ms, st);
	if (st != 0 || ms > STOP_LIMIT_MS)
		fail_msg("%s: SIGTERM took %.0f ms, exit status %d", attack, ms, st);
}

/* The victim's graph back to back for ms milliseconds: how long each
 * took. A graph that fails counts as 3 s, as in probe(). (The churn costs
 * the daemon memory of its own, under ASan a quarantine of hundreds of
 * MB: RSS bounds are checked before it.) */
#define LAT_MAX 400000
struct latency {
	double p50_us, p99_us;
	unsigned samples;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static void latency_for(struct victim *v, unsigned ms, struct latency *out)
{
	static uint32_t us[LAT_MAX];
	unsigned n = 0;
	uint64_t now = tdmt_now_ns(), until = now + (uint64_t)ms * 1000000ull;
	while (now < until && n < LAT_MAX) {
		memset(v->y, 0, 4096);
		int rc = tdm_graph_submit(v->g);
		if (rc == 0)
			rc = tdm_wait(v->g, 3000ll * 1000000ll);
		uint64_t t = tdmt_now_ns();
		us[n++] = rc != 0 || v->y[1023] != 2.0f ? 3000000u : (uint32_t)((t - now) / 1000u);
		now = t;
	}
	qsort(us, n, sizeof(us[0]), cmp_u32);
	out->samples = n;
	out->p50_us = n ? us[n / 2] : 0;
	out->p99_us = n ? us[(size_t)n * 99 / 100] : 0;
}

/* ---- attackers -------------------------------------------------------------- */

/* Graph with one noop task (or none), published without waiting. */
static void put_graph(struct tdmt_raw *r, uint64_t cookie, int64_t noop)
{
	struct tdm_sqe b = { .op = TDM_SQE_GRAPH_BEGIN }, t = { .op = TDM_SQE_TASK },
	               e = { .op = TDM_SQE_GRAPH_END };
	b.u.begin.cookie = cookie;
	b.u.begin.ntasks = noop >= 0 ? 1 : 0;
	t.u.task.kernel_id = (uint32_t)noop;
	while (!tdmt_raw_try_put(r, &b))
		tdmt_raw_publish(r);
	if (noop >= 0)
		while (!tdmt_raw_try_put(r, &t))
			tdmt_raw_publish(r);
	while (!tdmt_raw_try_put(r, &e))
		tdmt_raw_publish(r);
	tdmt_raw_publish(r);
}

static void reap_all(struct tdmt_raw *r)
{
	r->cq_head = __atomic_load_n(&r->hdr->cq_tail, __ATOMIC_ACQUIRE);
	__atomic_store_n(&r->hdr->cq_head, r->cq_head, __ATOMIC_SEQ_CST);
}

static void make_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* Finding 1: the doorbell the daemon rings to wake us is made blocking,
 * shrunk and never read, and we say we sleep, so every completion rings it. */
static void attack_wake_bell(void *arg)
{
	(void)arg;
	struct tdmt_raw r;
	if (tdmt_raw_connect(&r, daemon_.sock, TDM_ROLE_CLIENT, 5000) != 0)
		_exit(3);
	int64_t noop = tdmt_raw_lookup(&r, "noop");
	make_blocking(r.bell);
	fcntl(r.bell, F_SETPIPE_SZ, 4096);
	for (uint64_t i = 1;; i++) {
		__atomic_fetch_or(&r.hdr->client_flags, TDM_CLIENT_SLEEPING, __ATOMIC_SEQ_CST);
		put_graph(&r, i, noop);
		reap_all(&r); /* completions keep coming, so do the rings */
		if (i % 64 == 0)
			usleep(1000);
	}
}

/* Finding 2: the doorbell we ring the daemon with made blocking and read
 * all the time, to steal wake-ups meant for the daemon (and filled, so
 * that a daemon reading it would find it full). */
static void attack_ring_bell(void *arg)
{
	(void)arg;
	struct tdmt_raw r;
	if (tdmt_raw_connect(&r, daemon_.sock, TDM_ROLE_CLIENT, 5000) != 0)
		_exit(3);
	make_blocking(r.sq_bell);
	for (;;) {
		uint64_t v = 0xfffffffffffffffeull;
		if (write(r.sq_bell, &v, sizeof(v)) < 0 || read(r.sq_bell, &v, sizeof(v)) < 0)
			usleep(1000);
	}
}

/* Finding 3: empty graphs as fast as the ring takes them, never reaped. */
static void attack_pending(void *arg)
{
	(void)arg;
	struct tdmt_raw r;
	if (tdmt_raw_connect(&r, daemon_.sock, TDM_ROLE_CLIENT, 5000) != 0)
		_exit(3);
	struct tdm_sqe b = { .op = TDM_SQE_GRAPH_BEGIN }, e = { .op = TDM_SQE_GRAPH_END };
	for (uint64_t i = 1;; i++) {
		b.u.begin.cookie = i;
		int put = tdmt_raw_try_put(&r, &b);
		put += tdmt_raw_try_put(&r, &e);
		tdmt_raw_publish(&r);
		if (put < 2)
			usleep(200);
	}
}

/* ---- finding 1 and 2: the doorbells ---------------------------------------- */

/* Starts a daemon with toml, a victim, then the attacker (as root); probes
 * for the length of the attack and, when stop is set, stops the daemon with
 * the attacker still at it. */
static void probed_attack(const char *attack, const char *toml, void (*attacker)(void *), bool stop)
{
	struct victim v;
	start(toml);
	victim_up(&v);
	pid_t a = spawn_as(0, attacker, NULL);
	tdmt_sleep_ms(200);
	probe_for(&v, ATTACK_MS);
	report(&v, attack);
	victim_down(&v);
	if (stop)
		stop_in_time(attack);
	end_child(a);
}

static void test_wake_bell_made_blocking(void **state)
{
	(void)state;
	probed_attack("wake_bell", "[engine]\nspin_us = 0\n", attack_wake_bell, true);
	tdmt_test_ok();
}

static void test_ring_bell_stolen(void **state)
{
	(void)state;
	probed_attack("ring_bell", "[engine]\nspin_us = 0\n", attack_ring_bell, true);
	tdmt_test_ok();
}

/* ---- finding 3: completions never reaped ------------------------------------ */

#define PENDING_RSS_BOUND_MIB 64 /* growth allowed while the attack runs */
#define SLOW_LATENCY_MS 1000 /* the victim's graphs back to back, alone and attacked */

/* What a client that never reads costs the daemon and the others:
 *   BENCH slow_consumer_rss_mb <growth> MB attack=..     peak RSS over the start,
 *       while the attacker runs and another client probes every 50 ms
 *   BENCH slow_consumer_other_p99_us <p99> us attack=..  that client's graphs
 *       back to back, the attacker still at it
 * with the same client's figures once the attacker is gone beside them. */
static void slow_consumer_report(const char *attack, int64_t rss0, int64_t peak,
                                 const struct latency *alone, const struct latency *attacked)
{
	printf("BENCH slow_consumer_rss_mb %.1f MB attack=%s start_mb=%.1f peak_mb=%.1f "
	       "bound_mb=%d\n",
	       (double)(peak - rss0) / 1024.0, attack, (double)rss0 / 1024.0, (double)peak / 1024.0,
	       PENDING_RSS_BOUND_MIB);
	printf("BENCH slow_consumer_other_p99_us %.0f us attack=%s p50_us=%.0f samples=%u "
	       "alone_p99_us=%.0f alone_p50_us=%.0f\n",
	       attacked->p99_us, attack, attacked->p50_us, attacked->samples, alone->p99_us,
	       alone->p50_us);
}

static void test_unreaped_completions(void **state)
{
	(void)state;
	struct victim v;
	struct latency alone, attacked;
	start("");
	victim_up(&v);
	probe(&v);
	int64_t rss0 = tdmt_daemon_rss_kib(&daemon_), peak = rss0;
	pid_t a = spawn_as(0, attack_pending, NULL);
	uint64_t until = tdmt_now_ns() + 3 * (uint64_t)ATTACK_MS * 1000000ull;
	while (tdmt_now_ns() < until) {
		probe(&v);
		int64_t rss = tdmt_daemon_rss_kib(&daemon_);
		if (rss > peak)
			peak = rss;
		tdmt_sleep_ms(50);
	}
	latency_for(&v, SLOW_LATENCY_MS, &attacked);
	end_child(a);
	tdmt_sleep_ms(200);
	latency_for(&v, SLOW_LATENCY_MS, &alone);
	slow_consumer_report("pending", rss0, peak, &alone, &attacked);
	printf("BENCH dos_rss_mb %.1f MB attack=pending start_mb=%.1f bound_mb=%d\n",
	       (double)peak / 1024.0, (double)rss0 / 1024.0, PENDING_RSS_BOUND_MIB);
	report(&v, "pending");
	if (peak - rss0 > PENDING_RSS_BOUND_MIB * 1024)
		fail_msg("the daemon's RSS grew from %lld to %lld KiB", (long long)rss0,
		         (long long)peak);
	victim_down(&v);
	tdmt_test_ok();
}

/* ---- finding 4: the socket directory and the daemon's identity ------------- */

static void rm_tree(const char *dir)
{
	if (tdmt_remove_tree(dir) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* Another user made the fallback directory /tmp/tandem-<uid> first: the
 * daemon refuses it; left to itself, it makes it 0700 and its socket 0666
 * (reached only through the directory). */
static void test_socket_dir_taken(void **state)
{
	(void)state;
	char dir[64], sock[96];
	struct stat st;
	if (!root_or_skip("test_socket_dir_taken"))
		return;
	snprintf(dir, sizeof(dir), "/tmp/tandem-%d", UID_B);
	snprintf(sock, sizeof(sock), "%s/tandemd.sock", dir);
	rm_tree(dir);
	const char *toml = "[profiler]\ncalibrate = false\npersist_models = false\n"
	                   "[opencl]\nenabled = false\n";
	/* The attacker's directory, open to all. */
	assert_int_equal(mkdir(dir, 0777), 0);
	assert_int_equal(chmod(dir, 0777), 0);
	assert_int_equal(chown(dir, UID_A, UID_A), 0);
	assert_int_equal(tdmt_daemon_prepare(&daemon_, toml), 0);
	daemon_.run_uid = UID_B;
	daemon_.run_gid = UID_B;
	assert_int_equal(tdmt_daemon_launch(&daemon_, NULL, 30000), -1);
	assert_int_equal(daemon_.exit_status, 1);
	assert_true(tdmt_log_contains(&daemon_, "refusing the socket directory"));
	assert_int_not_equal(lstat(sock, &st), 0); /* nothing was put there */
	rm_tree(dir);
	/* A symbolic link in its place: refused too. */
	assert_int_equal(symlink("/tmp", dir), 0);
	assert_int_equal(tdmt_daemon_launch(&daemon_, NULL, 30000), -1);
	assert_true(tdmt_log_contains(&daemon_, "not a directory"));
	unlink(dir);
	/* Made by the daemon: 0700, its socket 0666. */
	assert_int_equal(tdmt_daemon_launch(&daemon_, NULL, 30000), 0);
	assert_int_equal(lstat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_uid, UID_B);
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(lstat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	rm_tree(dir);
	tdmt_test_ok();
}

/* A daemon run by UID_A that allows UID_B too, without calibration or
 * OpenCL (neither is set up for that user). */
static void start_as_uid_a(void)
{
	assert_int_equal(tdmt_daemon_prepare(&daemon_,
	                                     "[daemon]\nallowed_uids = [4243]\n[profiler]\n"
	                                     "calibrate = false\npersist_models = false\n"
	                                     "[opencl]\nenabled = false\n"),
	                 0);
	daemon_.run_uid = UID_A;
	daemon_.run_gid = UID_A;
	assert_int_equal(tdmt_daemon_launch(&daemon_, daemon_.sock, 30000), 0);
}

struct impostor_probe {
	const char *sock;
	uint32_t daemon_uid;
};

static void connect_as_victim(void *arg)
{
	const struct impostor_probe *p = arg;
	tdm_client *c;
	int rc = tdm_connect(
	        &(struct tdm_connect_opts){ .socket_path = p->sock, .daemon_uid = p->daemon_uid },
	        &c);
	if (rc == 0)
		tdm_disconnect(c);
	_exit(rc == 0 ? 0 : rc == -TDM_EPEER ? 10 : 20);
}

/* A daemon run by another user on a socket the victim was pointed to:
 * libtandem refuses it before saying anything, unless told to trust that
 * uid. */
static void test_impostor_daemon(void **state)
{
	(void)state;
	if (!root_or_skip("test_impostor_daemon"))
		return;
	start_as_uid_a();
	struct impostor_probe p = { daemon_.sock, 0 };
	assert_int_equal(tdmt_wait_child(spawn_as(UID_B, connect_as_victim, &p), 20000), 10);
	assert_false(tdmt_log_contains(&daemon_, "client 1 connected"));
	p.daemon_uid = UID_A; /* trusted by name: it may serve */
	assert_int_equal(tdmt_wait_child(spawn_as(UID_B, connect_as_victim, &p), 20000), 0);
	assert_true(tdmt_log_contains(&daemon_, "client 1 connected"));
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	tdmt_test_ok();
}

/* ---- finding 5: connection floods -------------------------------------------- */

#define FLOOD_CONNECTIONS 600

/* Opens connections, never says hello, holds them until killed. */
static void attack_flood(void *arg)
{
	(void)arg;
	for (int i = 0; i < FLOOD_CONNECTIONS; i++)
		if (tdmt_raw_socket(daemon_.sock, 1000) < 0)
			usleep(1000); /* refused at once, or out of descriptors */
	for (;;) /* what was accepted stays open */
		pause();
}

static void test_connection_flood(void **state)
{
	(void)state;
	struct victim v;
	if (!root_or_skip("test_connection_flood"))
		return;
	assert_int_equal(tdmt_daemon_prepare(&daemon_, "[daemon]\nallowed_uids = [4242]\n"
	                                               "max_connections_per_uid = 32\n"),
	                 0);
	daemon_.nofile = 256; /* so that a flood could reach EMFILE */
	assert_int_equal(tdmt_daemon_launch(&daemon_, daemon_.sock, 30000), 0);
	victim_up(&v);
	struct stat st;
	assert_int_equal(stat(daemon_.log, &st), 0);
	off_t log0 = st.st_size;
	int64_t cpu0 = tdmt_daemon_cpu_ns(&daemon_);
	uint64_t t0 = tdmt_now_ns();
	pid_t stranger = spawn_as(NOBODY, attack_flood, NULL);
	pid_t allowed = spawn_as(UID_A, attack_flood, NULL);
	probe_for(&v, ATTACK_MS);
	double cpu = (double)(tdmt_daemon_cpu_ns(&daemon_) - cpu0) / (double)(tdmt_now_ns() - t0);
	assert_int_equal(stat(daemon_.log, &st), 0);
	int64_t refused = -1;
	assert_int_equal(tdmt_counter(daemon_.sock, "connections_refused", &refused), 0);
	end_child(stranger);
	end_child(allowed);
	printf("# flood: daemon CPU %.2f cores, log grew %lld bytes, %lld connections refused\n",
	       cpu, (long long)(st.st_size - log0), (long long)refused);
	report(&v, "flood");
	/* The refusals cost little; a daemon spinning on accept costs a core. */
	if (cpu > 0.5)
		fail_msg("the daemon used %.2f cores during the flood", cpu);
	if (st.st_size - log0 > 64 * 1024)
		fail_msg("the log grew %lld bytes during the flood",
		         (long long)(st.st_size - log0));
	assert_true(refused >= FLOOD_CONNECTIONS); /* the stranger's, at least */
	victim_down(&v);
	stop_in_time("flood");
	tdmt_test_ok();
}

/* A user who is not allowed, connecting again and again as fast as two
 * processes can: each connection is refused (-TDM_EPERM, through
 * libtandem as any client would see it). How many the daemon turns away
 * per second, and what an allowed client's graphs take meanwhile:
 *   BENCH refused_conn_per_s <rate> conn/s attackers=2 uid=65534
 *   BENCH refused_flood_other_p99_us <p99> us ... alone_p99_us=..  */
#define REFUSERS 2

static void attack_refused(void *arg)
{
	int out = *(int *)arg;
	uint32_t counts[2] = { 0, 0 }; /* refused with EPERM, anything else */
	uint64_t until = tdmt_now_ns() + (uint64_t)ATTACK_MS * 1000000ull;
	while (tdmt_now_ns() < until) {
		tdm_client *c;
		int rc = tdm_connect(&(struct tdm_connect_opts){ .socket_path = daemon_.sock }, &c);
		if (rc == 0)
			tdm_disconnect(c);
		counts[rc == -TDM_EPERM ? 0 : 1]++;
	}
	if (write(out, counts, sizeof(counts)) != sizeof(counts))
		_exit(3);
	_exit(0);
}

static void test_refused_rate(void **state)
{
	(void)state;
	struct victim v;
	struct latency alone, attacked;
	int pfd[2];
	if (!root_or_skip("test_refused_rate"))
		return;
	start("[daemon]\nallowed_uids = [4242]\n");
	victim_up(&v);
	latency_for(&v, SLOW_LATENCY_MS, &alone);
	int64_t refused0 = 0, refused1 = 0;
	assert_int_equal(tdmt_counter(daemon_.sock, "connections_refused", &refused0), 0);
	assert_int_equal(pipe(pfd), 0);
	pid_t att[REFUSERS];
	for (int i = 0; i < REFUSERS; i++)
		att[i] = spawn_as(NOBODY, attack_refused, &pfd[1]);
	close(pfd[1]);
	latency_for(&v, ATTACK_MS - 500, &attacked);
	uint32_t refused = 0, other = 0;
	for (int i = 0; i < REFUSERS; i++) {
		uint32_t counts[2];
		struct pollfd p = { pfd[0], POLLIN, 0 };
		assert_true(poll(&p, 1, 20000) == 1);
		assert_int_equal(read(pfd[0], counts, sizeof(counts)), sizeof(counts));
		refused += counts[0];
		other += counts[1];
	}
	close(pfd[0]);
	for (int i = 0; i < REFUSERS; i++) {
		int st = tdmt_wait_child(att[i], 10000);
		forget_child(att[i]);
		assert_int_equal(st, 0);
	}
	assert_int_equal(tdmt_counter(daemon_.sock, "connections_refused", &refused1), 0);
	printf("BENCH refused_conn_per_s %.0f conn/s attackers=%d uid=%d refused=%u other=%u "
	       "daemon_counted=%lld\n",
	       refused / (ATTACK_MS / 1000.0), REFUSERS, NOBODY, refused, other,
	       (long long)(refused1 - refused0));
	printf("BENCH refused_flood_other_p99_us %.0f us p50_us=%.0f samples=%u alone_p99_us=%.0f "
	       "alone_p50_us=%.0f\n",
	       attacked.p99_us, attacked.p50_us, attacked.samples, alone.p99_us, alone.p50_us);
	/* Every attempt was refused as not allowed, and counted. */
	assert_int_equal(other, 0);
	assert_true(refused > 0);
	assert_true(refused1 - refused0 >= (int64_t)refused);
	/* The allowed client was served throughout (no graph failed). */
	assert_true(attacked.samples > 0 && attacked.p99_us < 3000000.0);
	victim_down(&v);
	tdmt_test_ok();
}

/* ---- finding 6: a reader that does not read ---------------------------------- */

static void attack_slow_reader(void *arg)
{
	(void)arg;
	struct tdmt_raw r;
	int small = 1;
	if (tdmt_raw_connect(&r, daemon_.sock, TDM_ROLE_CONTROL, 5000) != 0)
		_exit(3);
	setsockopt(r.sock, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	/* Many requests at once, then a trickle of reading. */
	for (int i = 0; i < 2000; i++)
		if (tdmt_raw_send(r.sock, TDM_MSG_CTL_STATUS, NULL, 0))
			break;
	char buf[4096];
	for (;;) {
		sleep(1);
		if (recv(r.sock, buf, sizeof(buf), MSG_DONTWAIT) == 0)
			pause(); /* dropped: stay until killed */
	}
}

static void test_slow_reader(void **state)
{
	(void)state;
	struct victim v;
	struct latency alone, attacked;
	start("");
	victim_up(&v);
	probe(&v);
	int64_t rss0 = tdmt_daemon_rss_kib(&daemon_);
	int64_t peak = rss0;
	pid_t a = spawn_as(0, attack_slow_reader, NULL);
	tdmt_sleep_ms(200);
	uint64_t until = tdmt_now_ns() + (uint64_t)ATTACK_MS * 1000000ull;
	while (tdmt_now_ns() < until) {
		probe(&v);
		int64_t rss = tdmt_daemon_rss_kib(&daemon_);
		if (rss > peak)
			peak = rss;
		tdmt_sleep_ms(50);
	}
	latency_for(&v, SLOW_LATENCY_MS, &attacked);
	end_child(a);
	tdmt_sleep_ms(200);
	latency_for(&v, SLOW_LATENCY_MS, &alone);
	report(&v, "slow_reader");
	slow_consumer_report("slow_reader", rss0, peak, &alone, &attacked);
	/* 2000 status replies held for it: no more than its output cap. */
	if (peak - rss0 > PENDING_RSS_BOUND_MIB * 1024)
		fail_msg("the daemon's RSS grew from %lld to %lld KiB", (long long)rss0,
		         (long long)peak);
	victim_down(&v);
	tdmt_test_ok();
}

/* ---- finding 9: limits per uid ------------------------------------------------- */

struct uid_attack {
	int sessions, buffers, buffer_refusal;
};

static void attack_uid_limits(void *arg)
{
	(void)arg;
	static struct tdmt_raw r[16];
	int sessions = 0, buffers = 0, refusal = 0;
	for (int i = 0; i < 16; i++)
		if (tdmt_raw_connect(&r[i], daemon_.sock, TDM_ROLE_CLIENT, 5000) == 0)
			sessions++;
	for (int s = 0; s < 16 && !refusal; s++) {
		if (!r[s].ring)
			continue;
		for (int i = 0; i < 100000; i++) {
			struct tdm_buf_alloc_req req = { .bytes = 4096 };
			struct tdm_buf_alloc_reply rep;
			struct tdm_msg_hdr h;
			int fd = -1;
			if (tdmt_raw_send(r[s].sock, TDM_MSG_BUF_ALLOC, &req, sizeof(req)) ||
			    tdmt_raw_recv(r[s].sock, &h, &rep, sizeof(rep), &fd, 1) < 0)
				_exit(4);
			if (fd >= 0)
				close(fd);
			if (rep.status) {
				refusal = rep.status;
				break;
			}
			buffers++;
		}
	}
	/* Report through the exit code: sessions, buffers over 100, refusal. */
	printf("# uid attacker: %d sessions, %d buffers, then %s\n", sessions, buffers,
	       tdm_strerror(refusal));
	fflush(stdout);
	if (sessions != 4 || buffers != 200 || refusal != -TDM_EQUOTA)
		_exit(5);
	for (;;)
		pause();
}

static void test_uid_limits(void **state)
{
	(void)state;
	struct victim v;
	if (!root_or_skip("test_uid_limits"))
		return;
	start("[daemon]\nallowed_uids = [4242]\nmax_clients = 8\nmax_clients_per_uid = 4\n"
	      "[limits]\nuid_max_buffers = 200\n");
	pid_t a = spawn_as(UID_A, attack_uid_limits, NULL);
	/* Wait until the attacker holds what it can get. */
	int64_t n = 0;
	uint64_t deadline = tdmt_now_ns() + 20000ull * 1000000ull;
	while ((tdmt_counter(daemon_.sock, "buffers_live", &n) != 0 || n < 200) &&
	       tdmt_now_ns() < deadline) {
		int st;
		if (waitpid(a, &st, WNOHANG) == a)
			fail_msg("the attacker did not get what the limits allow (exit %d)",
			         WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		tdmt_sleep_ms(20);
	}
	assert_int_equal(n, 200);
	/* The rest of the machine is still open to others. */
	victim_up(&v);
	probe_for(&v, 500);
	tdm_client *more[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(tdmt_connect(daemon_.sock, &more[i]), 0);
	for (int i = 0; i < 3; i++)
		tdm_disconnect(more[i]);
	report(&v, "uid_limits");
	victim_down(&v);
	end_child(a);
	tdmt_test_ok();
}

/* The daemon's mapping budget holds whoever allocates. */
static void test_mapping_budget(void **state)
{
	(void)state;
	tdm_client *c;
	start("[limits]\nmax_mappings = 300\n");
	assert_int_equal(tdmt_connect(daemon_.sock, &c), 0);
	int got = 0, rc = 0;
	for (int i = 0; i < 1000; i++) {
		tdm_buffer b;
		void *p;
		rc = tdm_buffer_alloc(c, 4096, 0, &b, &p);
		if (rc)
			break;
		got++;
	}
	assert_int_equal(rc, -TDM_EQUOTA);
	int64_t maps = -1;
	assert_int_equal(tdmt_counter(daemon_.sock, "mappings", &maps), 0);
	printf("# mapping budget 300: %d buffers, %lld mappings\n", got, (long long)maps);
	assert_int_equal(maps, 300);
	assert_int_equal(got, 299); /* one is the ring */
	tdm_disconnect(c);
	assert_int_equal(tdmt_wait_counter(daemon_.sock, "mappings", 0, 10000, NULL), 0);
	tdmt_test_ok();
}

/* ---- finding 10: what one user may see of another ------------------------------ */

struct tenant_view {
	int status_clients, status_all, models, calibrate, export_, trace_graphs;
	pid_t own_pid;
};

/* As nobody: status, models, calibrate, export; then a recording of its
 * own while it runs one graph. Results through a pipe. */
static void tenant(void *arg)
{
	int out = *(int *)arg;
	struct tenant_view tv = { .own_pid = getpid() };
	struct tdmt_raw ctl;
	char *text = NULL;
	if (tdmt_raw_connect(&ctl, daemon_.sock, TDM_ROLE_CONTROL, 10000) != 0)
		_exit(3);
	tdm_client *c;
	struct tdmt_kernels k;
	if (tdmt_connect(daemon_.sock, &c) || tdmt_lookup_kernels(c, &k))
		_exit(4);
	if (tdmt_raw_control_ex(ctl.sock, TDM_MSG_CTL_STATUS, NULL, 0, NULL, 0, &text) == 0) {
		json_t *doc = json_loads(text, 0, NULL);
		tv.status_clients = (int)json_array_size(json_object_get(doc, "clients"));
		tv.status_all = json_is_true(json_object_get(doc, "all_clients"));
		json_decref(doc);
	}
	free(text);
	tv.models = tdmt_raw_control(ctl.sock, TDM_MSG_CTL_MODELS);
	tv.calibrate = tdmt_raw_control(ctl.sock, TDM_MSG_CTL_CALIBRATE);
	tv.export_ = tdmt_raw_control(ctl.sock, TDM_MSG_CTL_EXPORT);
	char path[] = "/tmp/tdmt-tenant-XXXXXX";
	int fd = mkstemp(path);
	uint32_t one = 1;
	unlink(path);
	if (fd < 0 ||
	    tdmt_raw_control_ex(ctl.sock, TDM_MSG_CTL_TRACE_START, &one, sizeof(one), &fd, 1, NULL))
		_exit(5);
	tdm_graph *g = tdm_graph_new(c);
	if (tdmt_add_noop(g, &k, NULL) || tdm_graph_submit(g) || tdm_wait(g, 10000000000ll))
		_exit(6);
	tdmt_sleep_ms(300); /* the other user's graphs run meanwhile */
	if (tdmt_raw_control_ex(ctl.sock, TDM_MSG_CTL_TRACE_STOP, NULL, 0, NULL, 0, &text) == 0) {
		json_t *doc = json_loads(text, 0, NULL);
		tv.trace_graphs = (int)json_integer_value(json_object_get(doc, "graphs"));
		json_decref(doc);
	}
	free(text);
	if (write(out, &tv, sizeof(tv)) != sizeof(tv))
		_exit(7);
	_exit(0);
}

static void test_tenancy(void **state)
{
	(void)state;
	struct victim v;
	if (!root_or_skip("test_tenancy"))
		return;
	start("[daemon]\nallowed_uids = [65534]\n");
	victim_up(&v);
	/* Root records everything meanwhile: one user's recording does not
	 * keep another's out. */
	char tpath[TDMT_PATH_MAX + 16];
	snprintf(tpath, sizeof(tpath), "%s/root.jsonl", daemon_.dir);
	int tfd = open(tpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(tfd >= 0);
	struct tdmt_raw ctl;
	assert_int_equal(tdmt_raw_connect(&ctl, daemon_.sock, TDM_ROLE_CONTROL, 10000), 0);
	uint32_t one = 1;
	assert_int_equal(tdmt_raw_control_ex(ctl.sock, TDM_MSG_CTL_TRACE_START, &one, sizeof(one),
	                                     &tfd, 1, NULL),
	                 0);
	close(tfd);
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t t = spawn_as(NOBODY, tenant, &pfd[1]);
	close(pfd[1]);
	probe_for(&v, 800);
	struct tenant_view tv;
	memset(&tv, 0, sizeof(tv));
	ssize_t got = read(pfd[0], &tv, sizeof(tv));
	close(pfd[0]);
	assert_int_equal(tdmt_wait_child(t, 20000), 0);
	assert_int_equal(got, sizeof(tv));
	char *text = NULL;
	assert_int_equal(
	        tdmt_raw_control_ex(ctl.sock, TDM_MSG_CTL_TRACE_STOP, NULL, 0, NULL, 0, &text), 0);
	json_t *doc = json_loads(text, 0, NULL);
	int root_graphs = (int)json_integer_value(json_object_get(doc, "graphs"));
	json_decref(doc);
	free(text);
	tdmt_raw_close(&ctl);
	printf("# tenant: sees %d client(s) (all=%d); models %d, calibrate %d, export %d; "
	       "its recording %d graph(s), root's %d\n",
	       tv.status_clients, tv.status_all, tv.models, tv.calibrate, tv.export_,
	       tv.trace_graphs, root_graphs);
	assert_int_equal(tv.status_clients, 1); /* its own, not root's */
	assert_false(tv.status_all);
	assert_int_equal(tv.models, -TDM_EPERM);
	assert_int_equal(tv.calibrate, -TDM_EPERM);
	assert_int_equal(tv.export_, -TDM_EPERM);
	assert_int_equal(tv.trace_graphs, 1); /* its own graph only */
	assert_true(root_graphs > 1); /* everyone's */
	report(&v, "tenancy");
	victim_down(&v);
	tdmt_test_ok();
}

/* ---- finding 15: the daemon's own uid ----------------------------------------- */

static void connect_expect(void *arg)
{
	const int *want = arg;
	tdm_client *c;
	setenv("TANDEM_DAEMON_UID", "4242", 1); /* the daemon's user, trusted by the others */
	int rc = tdmt_connect(daemon_.sock, &c);
	if (rc == 0)
		tdm_disconnect(c);
	if (rc != *want)
		fprintf(stderr, "connect as uid %d: %s\n", (int)getuid(), tdm_strerror(rc));
	_exit(rc == *want ? 0 : 10);
}

/* A list of other allowed uids does not shut out the daemon's own user. */
static void test_own_uid_allowed(void **state)
{
	(void)state;
	if (!root_or_skip("test_own_uid_allowed"))
		return;
	start_as_uid_a();
	int ok = 0, refused = -TDM_EPERM;
	assert_int_equal(tdmt_wait_child(spawn_as(UID_A, connect_expect, &ok), 20000), 0);
	assert_int_equal(tdmt_wait_child(spawn_as(UID_B, connect_expect, &ok), 20000), 0);
	assert_int_equal(tdmt_wait_child(spawn_as(NOBODY, connect_expect, &refused), 20000), 0);
	assert_int_equal(tdmt_daemon_stop(&daemon_, 20000), 0);
	tdmt_test_ok();
}

/* ---- finding 16: calibration requests ------------------------------------------- */

/* Calibrations asked for over and over, pipelined, on several connections. */
static void attack_calibrate(void *arg)
{
	(void)arg;
	struct tdmt_raw r[4];
	for (int i = 0; i < 4; i++)
		if (tdmt_raw_connect(&r[i], daemon_.sock, TDM_ROLE_CONTROL, 20000) != 0)
			_exit(3);
	for (int k = 0; k < 8; k++)
		for (int i = 0; i < 4; i++)
			tdmt_raw_send(r[i].sock, TDM_MSG_CTL_CALIBRATE, NULL, 0);
	for (;;)
		pause();
}

static void test_calibrate_off_loop(void **state)
{
	(void)state;
	struct victim v;
	start("");
	victim_up(&v);
	/* One calibration at a time: a second asker hears so at once. */
	struct tdmt_raw a, b;
	assert_int_equal(tdmt_raw_connect(&a, daemon_.sock, TDM_ROLE_CONTROL, 20000), 0);
	assert_int_equal(tdmt_raw_connect(&b, daemon_.sock, TDM_ROLE_CONTROL, 20000), 0);
	assert_int_equal(tdmt_raw_send(a.sock, TDM_MSG_CTL_CALIBRATE, NULL, 0), 0);
	tdmt_sleep_ms(20);
	int busy = tdmt_raw_control(b.sock, TDM_MSG_CTL_CALIBRATE);
	struct tdm_msg_hdr h;
	char *buf = malloc(TDM_CTL_REPLY_MAX);
	int n = tdmt_raw_recv(a.sock, &h, buf, TDM_CTL_REPLY_MAX, NULL, 0);
	int32_t status = -1;
	if (n >= 0 && h.length >= sizeof(status))
		memcpy(&status, buf, sizeof(status));
	free(buf);
	tdmt_raw_close(&a);
	tdmt_raw_close(&b);
	assert_int_equal(status, 0);
	/* The second came while the first ran, or after it: busy, or done. */
	assert_true(busy == -TDM_EBUSY || busy == 0);
	pid_t att = spawn_as(0, attack_calibrate, NULL);
	tdmt_sleep_ms(100);
	probe_for(&v, ATTACK_MS);
	end_child(att);
	report(&v, "calibrate");
	victim_down(&v);
	tdmt_test_ok();
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_wake_bell_made_blocking),
		T(test_ring_bell_stolen),
		T(test_unreaped_completions),
		T(test_socket_dir_taken),
		T(test_impostor_daemon),
		T(test_connection_flood),
		T(test_refused_rate),
		T(test_slow_reader),
		T(test_uid_limits),
		T(test_mapping_budget),
		T(test_tenancy),
		T(test_own_uid_allowed),
		T(test_calibrate_off_loop),
	};
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return cmocka_run_group_tests_name("dos", tests, NULL, NULL);
}
