/* Fuzz target: the daemon's socket messages (hello, buffers, kernel lookup,
 * control requests) through the real connection code (daemon/conn.c,
 * control.c, session.c) over real sockets, without a whole daemon.
 *
 * Set up once: a minimal struct server (embedded defaults with small
 * limits, an event base, a residency with only the host, an engine over
 * one fake CPU device and no worker threads, so that no graph ever runs:
 * rings are not exercised here), no cost models (srv->prof is NULL:
 * models, calibrate and export answer with an error).
 *
 * Input: a list of records, each
 *
 *   ctl (1 byte) | len (2 bytes, little-endian) | len bytes
 *
 * (a last record shorter than its len takes what is left). The bytes are
 * written with one non-blocking sendmsg on the client end of a connection
 * (what the socket does not take is dropped). ctl:
 *
 *   bits 0-1  which of 4 connections; one that is not open is opened first
 *             (socketpair + conn_accept). Connections 2 and 3 then pose as
 *             a user who is neither root nor the daemon's uid (FAKE_UID:
 *             limited, not an administrator), as if conn_accept had read
 *             that uid with SO_PEERCRED.
 *   bits 2-3  descriptors to pass with the bytes (SCM_RIGHTS): 0 to 3
 *             (a connection may hold 2; 3 at once is a protocol error)
 *   bits 4-5  what they are: 0 a fresh memfd open for writing, 1 a memfd
 *             sealed against writes, 2 a memfd opened read-only, 3 /dev/null
 *   bit 6     close the client end after the bytes
 *   bit 7     run the event loop after the bytes
 *
 * Running the event loop: event_base_loop(EVLOOP_NONBLOCK), then reading
 * what the daemon sent on every client end, again until nothing more comes
 * (2 to LOOP_RUNS times), and ending a calibration that was started
 * (conn_calibration_done). A client end the daemon closed is closed too,
 * so that the next record for it opens a fresh connection.
 *
 * What comes back is checked (abort otherwise): whole messages of the
 * reply types only, each of its type's size; statuses 0 or -TDM_E*; a
 * control reply with an error status carries an error document
 * ({"error": "..."}), one without carries a document; descriptors come
 * exactly as the replies announce them (2 with a client's hello, 1 with a
 * buffer, 1 with a growth that adds a chunk), never more than fit.
 *
 * After the input every client end is closed and the loop runs until every
 * connection is closed; then it must hold: no connection, client, session,
 * buffer, mapping or registered session left; every uid's totals at zero;
 * no recording running and no descriptor of one kept; no calibration
 * running; no event left in the base; and as many descriptors open in the
 * process as before the input.
 *
 * Not reached here: the rings and intake (fuzz_intake), the hello and reply
 * timeouts (seconds), draining, refusal of a uid that is not allowed and
 * the per-uid connection cap (the posing happens after conn_accept), and
 * the documents that need cost models.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "daemon/server.h"
#include "policies/policy.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NCONN 4
#define FAKE_UID 4242u
#define LOOP_RUNS 64
#define CLOSE_ROUNDS 1000

#define CTL_CONN(c) ((c)&3u)
#define CTL_NFDS(c) (((c) >> 2) & 3u)
#define CTL_KIND(c) (((c) >> 4) & 3u)
#define CTL_CLOSE 0x40u
#define CTL_RUN 0x80u

enum fd_kind { FD_MEMFD = 0, FD_MEMFD_SEALED, FD_MEMFD_RDONLY, FD_DEVNULL };

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_conn: invariant violated: %s (line %d)\n", #cond,    \
			        __LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The client end of a connection, and what came back on it. */
struct peer {
	int fd; /* -1: not open */
	unsigned char *in; /* bytes of a reply not complete yet */
	size_t len, cap;
	uint64_t fds_got, fds_due; /* descriptors received; announced by replies */
};

static struct server srv;
static bool ready;
static struct peer peers[NCONN] = { { .fd = -1 }, { .fd = -1 }, { .fd = -1 }, { .fd = -1 } };
static uid_t fake_uid = FAKE_UID;

static int fake_launch(const struct backend_device *d, const struct kernel_def *k,
                       const struct tdm_kernel_call *call)
{
	(void)d;
	(void)k;
	(void)call;
	return 0;
}

static const struct backend_ops fake_backend = { .abi_version = BACKEND_ABI_VERSION,
	                                         .name = "fake",
	                                         .launch = fake_launch };

static void submit_to_engine(void *ctx, struct engine_graph *g)
{
	engine_submit(ctx, g);
}

/* session_env.broken, as the daemon's: the loop is told through kick_fd. */
static void session_broken(void *ctx)
{
	struct server *s = ctx;
	uint64_t one = 1;
	if (write(s->kick_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		abort();
}

static bool setup(void)
{
	struct daemon_config *cfg = &srv.cfg;

	memset(&srv, 0, sizeof(srv));
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++)
		recorder_init(&srv.recs[i].rec);
	srv.bell_epoll = srv.kick_fd = srv.spare_fd = srv.ready_fd = -1;
	pthread_rwlock_init(&srv.registry_lock, NULL);
	pthread_mutex_init(&srv.polling_lock, NULL);
	config_defaults(cfg);
	cfg->log_level = LOG_ERROR;
	cfg->sq_entries = 64;
	cfg->cq_entries = 64;
	cfg->max_connections = 3; /* of NCONN: the last one may be refused at accept */
	cfg->max_clients = 2;
	cfg->max_clients_per_uid = 1;
	cfg->max_buffers = 4;
	cfg->buffer_quota_bytes = 64 << 10;
	cfg->uid_max_buffers = 6;
	cfg->uid_buffer_quota_bytes = 96 << 10;
	cfg->max_mappings = 8; /* rings and buffers of every client together */
	log_set_level(cfg->log_level);
	snprintf(srv.socket_path, sizeof(srv.socket_path), "/nonexistent/tandem-fuzz.sock");
	srv.start_ns = clock_monotonic_ns();
	if (fake_uid == geteuid())
		fake_uid++;

	struct backend_device *d = &srv.devs[0];
	snprintf(d->name, sizeof(d->name), "cpu0");
	snprintf(d->model, sizeof(d->model), "fake");
	d->kind = TDM_DEV_CPU;
	d->ops = &fake_backend;
	d->numa_node = -1;
	srv.ndevs = 1;
	residency_init(&srv.res);

	srv.bell_epoll = epoll_create1(EPOLL_CLOEXEC);
	srv.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv.bell_epoll < 0 || srv.kick_fd < 0)
		return false;
	srv.env = (struct session_env){
		.cfg = &srv.cfg,
		.counters = &srv.counters,
		.submit = submit_to_engine,
		.draining = &srv.draining,
		.res = &srv.res,
		.broken = session_broken,
		.broken_ctx = &srv,
		.mappings_cap = cfg->max_mappings,
	};
	const struct policy_ops *policy = policy_by_name(cfg->policy);
	if (!policy)
		return false;
	struct engine_params ep = {
		.clock = &clock_real,
		.policy = policy,
		.devices = srv.devs,
		.ndevices = srv.ndevs,
		.hooks = { .graph_done = session_engine_graph_done, .ctx = &srv },
		.poll_fd = -1,
		.start_workers = false, /* graphs never run: rings are not fuzzed here */
		.res = &srv.res,
	};
	if (engine_create(&ep, &srv.engine) != 0)
		return false;
	srv.env.engine = srv.engine;
	srv.env.submit_ctx = srv.engine;
	srv.base = event_base_new();
	if (!srv.base)
		return false;
	signal(SIGPIPE, SIG_IGN);
	return true;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* ---- the client side ---------------------------------------------------------- */

static void open_conn(unsigned i)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		return;
	/* The listener hands the daemon non-blocking sockets. A small send
	 * buffer on its end makes replies wait for the peer now and then. */
	int small = 4096;
	if (fcntl(sv[1], F_SETFL, O_NONBLOCK) != 0 ||
	    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) != 0)
		abort();
	uint32_t before = srv.nconns;
	conn_accept(&srv, sv[1]);
	if (i >= 2 && srv.nconns > before) {
		/* Another user's connection: what conn_accept sets from
		 * SO_PEERCRED, for that user. */
		struct conn *c = srv.conns;
		struct uid_usage *u = server_uid_usage(&srv, fake_uid);
		if (u) {
			c->usage->connections--;
			c->uid = fake_uid;
			c->gid = fake_uid;
			c->usage = u;
			u->connections++;
		}
	}
	peers[i].fd = sv[0];
}

static void close_peer(struct peer *pe)
{
	if (pe->fd >= 0)
		close(pe->fd);
	free(pe->in);
	*pe = (struct peer){ .fd = -1 };
}

static int make_fd(enum fd_kind kind)
{
	if (kind == FD_DEVNULL)
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	int fd = memfd_create("fuzz-conn", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -1;
	if (kind == FD_MEMFD_SEALED &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
		close(fd);
		return -1;
	}
	if (kind == FD_MEMFD_RDONLY) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int ro = open(path, O_RDONLY | O_CLOEXEC);
		close(fd);
		return ro;
	}
	return fd;
}

/* One non-blocking sendmsg; what does not fit is dropped. */
static void send_chunk(int fd, const uint8_t *p, size_t len, unsigned nfds, enum fd_kind kind)
{
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)p, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[3];
	unsigned n = 0;

	if (len == 0)
		return; /* a stream socket sends no descriptors without a byte */
	for (unsigned i = 0; i < nfds; i++) {
		int d = make_fd(kind);
		if (d >= 0)
			fds[n++] = d;
	}
	if (n) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(n * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	}
	if (sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN && errno != EPIPE &&
	    errno != ECONNRESET)
		abort();
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static bool is_error(int32_t status)
{
	return status < 0 && status > -TDM_E__COUNT;
}

/* One whole message from the daemon: a reply of a known type and size,
 * with the descriptors it announces; a control reply with an error status
 * carries an error document ({"error": "..."}). */
static void check_reply(struct peer *pe, uint32_t type, const unsigned char *p, uint32_t len)
{
	int32_t status;
	CHECK(len >= sizeof(status));
	memcpy(&status, type == TDM_MSG_HELLO_REPLY ? p + 8 : p, sizeof(status));
	CHECK(status == 0 || is_error(status));
	switch (type) {
	case TDM_MSG_HELLO_REPLY: {
		struct tdm_hello_reply r;
		CHECK(len == sizeof(r));
		memcpy(&r, p, sizeof(r));
		CHECK(r.magic == TDM_WIRE_MAGIC && r.version == TDM_WIRE_VERSION);
		if (status == 0 && r.session_id) /* a client's: ring and doorbells */
			pe->fds_due += 3;
		break;
	}
	case TDM_MSG_BUF_ALLOC_REPLY: {
		struct tdm_buf_alloc_reply r;
		CHECK(len == sizeof(r));
		memcpy(&r, p, sizeof(r));
		CHECK(status ? r.handle == 0 && r.bytes == 0 : r.handle != 0 && r.bytes != 0);
		if (status == 0)
			pe->fds_due++;
		break;
	}
	case TDM_MSG_BUF_RESERVE_REPLY: { /* no descriptor: nothing is backed yet */
		struct tdm_buf_alloc_reply r;
		CHECK(len == sizeof(r));
		memcpy(&r, p, sizeof(r));
		CHECK(status ? r.handle == 0 && r.bytes == 0 : r.handle != 0 && r.bytes != 0);
		break;
	}
	case TDM_MSG_BUF_GROW_REPLY: { /* a chunk's memfd when it adds one */
		struct tdm_buf_grow_reply r;
		CHECK(len == sizeof(r));
		memcpy(&r, p, sizeof(r));
		CHECK(!status || (r.backed == 0 && r.chunk_bytes == 0));
		CHECK(r.backed >= r.used && r.chunk_bytes <= r.backed);
		if (r.chunk_bytes)
			pe->fds_due++;
		break;
	}
	case TDM_MSG_KV_ADMIT_REPLY: {
		struct tdm_kv_admit_reply r;
		CHECK(len == sizeof(r));
		memcpy(&r, p, sizeof(r));
		CHECK(r.tier <= TDM_TIER_HOST && (!status || status == -TDM_EQUOTA || r.tier == 0));
		break;
	}
	case TDM_MSG_BUF_FREE_REPLY: CHECK(len == sizeof(struct tdm_status_reply)); break;
	case TDM_MSG_KERNEL_REPLY: CHECK(len == sizeof(struct tdm_kernel_lookup_reply)); break;
	case TDM_MSG_CTL_REPLY:
		CHECK(len <= TDM_CTL_REPLY_MAX);
		if (status) {
			json_error_t err;
			json_t *doc = json_loadb((const char *)p + 4, len - 4, 0, &err);
			CHECK(json_is_object(doc) && json_is_string(json_object_get(doc, "error")));
			json_decref(doc);
		} else {
			CHECK(len > sizeof(status)); /* a document */
		}
		break;
	default: CHECK(!"a reply of an unknown type");
	}
}

/* Takes the whole messages out of pe->in. */
static void parse_replies(struct peer *pe)
{
	size_t off = 0;
	while (pe->len - off >= sizeof(struct tdm_msg_hdr)) {
		struct tdm_msg_hdr h;
		memcpy(&h, pe->in + off, sizeof(h));
		CHECK(h.length <= TDM_CTL_REPLY_MAX);
		if (pe->len - off - sizeof(h) < h.length)
			break;
		check_reply(pe, h.type, pe->in + off + sizeof(h), h.length);
		off += sizeof(h) + h.length;
	}
	memmove(pe->in, pe->in + off, pe->len - off);
	pe->len -= off;
	/* Descriptors come with the first byte of their message. */
	if (pe->len == 0)
		CHECK(pe->fds_got == pe->fds_due);
}

/* Reads what waits on a client end and checks it (closing the descriptors
 * that came along); closes the end when the daemon closed its own.
 * Whether anything came. */
static bool drain_peer(struct peer *pe)
{
	static unsigned char buf[1 << 16];
	union {
		char buf[CMSG_SPACE(16 * sizeof(int))];
		struct cmsghdr align;
	} u;
	bool got = false;
	for (;;) {
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov,
			            .msg_iovlen = 1,
			            .msg_control = u.buf,
			            .msg_controllen = sizeof(u.buf) };
		ssize_t n = recvmsg(pe->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n > 0) {
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
				if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t j = 0; j < k; j++) {
					int fd;
					memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof(fd));
					close(fd);
				}
				pe->fds_got += k;
			}
			CHECK(!(m.msg_flags & MSG_CTRUNC)); /* at most 2 per reply */
			if (pe->len + (size_t)n > pe->cap) {
				size_t cap = pe->len + (size_t)n + 4096;
				unsigned char *grown = realloc(pe->in, cap);
				if (!grown)
					abort();
				pe->in = grown;
				pe->cap = cap;
			}
			memcpy(pe->in + pe->len, buf, (size_t)n);
			pe->len += (size_t)n;
			parse_replies(pe);
			got = true;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return got;
		close_peer(pe); /* the daemon closed the connection */
		return true;
	}
}

/* A calibration thread was started: wait for it, then do what the loop's
 * kick does (conn_calibration_done). */
static void end_calibration(void)
{
	uint64_t v;
	if (srv.cal_running)
		while (!atomic_load(&srv.cal_done))
			sched_yield();
	if (read(srv.kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		abort();
	if (atomic_exchange(&srv.cal_done, false))
		conn_calibration_done(&srv);
	conn_close_broken(&srv);
}

/* Runs the loop, reading the replies, until nothing more comes back (at
 * least twice, at most LOOP_RUNS times). */
static void run_loop(void)
{
	for (int r = 0; r < LOOP_RUNS; r++) {
		bool got = false;
		event_base_loop(srv.base, EVLOOP_NONBLOCK);
		for (unsigned i = 0; i < NCONN; i++)
			if (peers[i].fd >= 0)
				got |= drain_peer(&peers[i]);
		end_calibration();
		if (!got && r >= 1)
			break;
	}
}

static void record(uint8_t ctl, const uint8_t *p, size_t len)
{
	unsigned i = CTL_CONN(ctl);
	if (peers[i].fd < 0)
		open_conn(i);
	if (peers[i].fd >= 0)
		send_chunk(peers[i].fd, p, len, CTL_NFDS(ctl), (enum fd_kind)CTL_KIND(ctl));
	if (ctl & CTL_CLOSE)
		close_peer(&peers[i]);
	if (ctl & CTL_RUN)
		run_loop();
}

/* ---- after the input -------------------------------------------------------------- */

static void close_everything(void)
{
	for (unsigned i = 0; i < NCONN; i++)
		close_peer(&peers[i]);
	for (int r = 0; r < CLOSE_ROUNDS && (srv.nconns || srv.cal_running); r++) {
		event_base_loop(srv.base, EVLOOP_NONBLOCK);
		end_calibration();
	}
}

static void check_invariants(void)
{
	CHECK(srv.nconns == 0);
	CHECK(srv.conns == NULL);
	CHECK(srv.nclients == 0);
	CHECK(srv.nsessions == 0);
	CHECK(!srv.cal_running && srv.cal_conn == NULL && srv.cal_doc == NULL);
	CHECK(atomic_load(&srv.counters.sessions_live) == 0);
	CHECK(atomic_load(&srv.counters.buffers_live) == 0);
	CHECK(atomic_load(&srv.counters.buffer_bytes_live) == 0);
	CHECK(atomic_load(&srv.counters.session_tasks_in_flight) == 0);
	CHECK(atomic_load(&srv.env.mappings) == 0);
	for (size_t i = 0; i < srv.nuids; i++) {
		const struct uid_usage *u = srv.uids[i];
		CHECK(u->connections == 0 && u->sessions == 0 && u->recordings == 0);
		CHECK(atomic_load(&u->buffers) == 0 && atomic_load(&u->buffer_bytes) == 0);
	}
	for (size_t i = 0; i < SERVER_MAX_RECORDINGS; i++) {
		const struct recorder *r = &srv.recs[i].rec;
		CHECK(!recorder_active(r) && r->owner == NULL);
		CHECK(r->trace_fd < 0 && r->chrome_fd < 0);
	}
	CHECK(event_base_get_num_events(srv.base, EVENT_BASE_COUNT_ADDED) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ready) {
		if (!setup())
			abort();
		ready = true;
	}
	int fds_before = count_fds();
	size_t off = 0;
	while (size - off >= 3) {
		uint8_t ctl = data[off];
		size_t len = (size_t)data[off + 1] | (size_t)data[off + 2] << 8;
		off += 3;
		if (len > size - off)
			len = size - off;
		record(ctl, data + off, len);
		off += len;
	}
	close_everything();
	check_invariants();
	CHECK(count_fds() == fds_before);
	return 0;
}
