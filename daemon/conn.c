/* Connections: peer credentials and caps at accept, hello, slow-path
 * requests (buffers, kernel lookup, control), and replies that never block
 * the event loop. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/elastic.h"
#include "daemon/intake.h"
#include "common/log.h"
#include "daemon/models.h"
#include "daemon/reply.h"
#include "daemon/server.h"
#include "tandem.h"

#define HELLO_TIMEOUT_S 5
/* A peer that does not read a reply within this is dropped; the reply's
 * memory (at most TDM_CTL_REPLY_MAX) is not held longer. */
#define REPLY_TIMEOUT_S 10
#define OUT_MAX_BYTES (2 * (TDM_CTL_REPLY_MAX + sizeof(struct tdm_msg_hdr)))

static void on_socket(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void process_input(struct conn *c);

/* ---- output -------------------------------------------------------------- */

/* One sendmsg, never blocking: the bytes it took (0 when the socket is
 * full), or -1 when the connection failed. Descriptors go with the first
 * byte. */
static ssize_t send_some(int fd, const unsigned char *p, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { (void *)p, len };
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	ssize_t n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n >= 0)
		return n;
	return errno == EAGAIN || errno == EINTR ? 0 : -1;
}

static void out_free(struct conn_out *o)
{
	for (int i = 0; i < o->nfds; i++)
		close(o->fds[i]);
	free(o);
}

/* While output waits, the connection is not read (one request answered at
 * a time) and the peer has REPLY_TIMEOUT_S to take it. */
static void wait_for_peer(struct conn *c)
{
	struct timeval tv = { REPLY_TIMEOUT_S, 0 };
	event_del(c->ev_sock);
	event_add(c->ev_write, NULL);
	evtimer_add(c->ev_timer, &tv);
}

/* Sends what waits; true when nothing waits any more. false with *failed
 * when the connection must be closed. */
static bool flush_out(struct conn *c, bool *failed)
{
	*failed = false;
	while (c->out_head) {
		struct conn_out *o = c->out_head;
		ssize_t n = send_some(c->fd, o->buf + o->off, o->len - o->off, o->fds, o->nfds);
		if (n < 0) {
			*failed = true;
			return false;
		}
		if (n == 0)
			return false;
		if (o->nfds) { /* they went with the first byte */
			for (int i = 0; i < o->nfds; i++)
				close(o->fds[i]);
			o->nfds = 0;
		}
		o->off += (size_t)n;
		c->out_bytes -= (size_t)n;
		if (o->off < o->len)
			return false;
		c->out_head = o->next;
		if (!c->out_head)
			c->out_tail = NULL;
		free(o);
	}
	return true;
}

/* Queues one message (header + payload, descriptors with its first byte)
 * and sends what the socket takes now. The descriptors stay the caller's.
 * false when the connection failed or its output is over the bound. */
static bool send_msg(struct conn *c, uint32_t type, const void *payload, uint32_t len,
                     const int *fds, int nfds)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	size_t total = sizeof(h) + len;
	bool failed;

	if (c->out_bytes + total > OUT_MAX_BYTES)
		return false;
	struct conn_out *o = malloc(sizeof(*o) + total);
	if (!o)
		return false;
	memcpy(o->buf, &h, sizeof(h));
	if (len)
		memcpy(o->buf + sizeof(h), payload, len);
	o->next = NULL;
	o->len = total;
	o->off = 0;
	o->nfds = 0;
	for (int i = 0; i < nfds; i++) {
		/* Our own duplicates: the caller may close its copies at once. */
		int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
		if (d < 0) {
			out_free(o);
			return false;
		}
		o->fds[o->nfds++] = d;
	}
	bool was_idle = !c->out_head;
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	c->out_bytes += total;
	if (!was_idle)
		return true; /* the writable event sends it in turn */
	if (flush_out(c, &failed))
		return true;
	if (failed)
		return false;
	wait_for_peer(c);
	return true;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	bool failed;
	(void)fd;
	(void)what;
	if (!flush_out(c, &failed)) {
		if (failed)
			conn_close(c);
		return;
	}
	event_del(c->ev_write);
	evtimer_del(c->ev_timer);
	if (!c->awaiting) {
		event_add(c->ev_sock, NULL);
		process_input(c); /* requests that arrived meanwhile */
	}
}

/* ---- accept --------------------------------------------------------------- */

/* Refuses a connection before it is one: the hello reply the peer will
 * wait for, with the reason, then close. Never blocks. */
static void refuse(struct server *srv, int fd, const struct ucred *cred, int status,
                   const char *why)
{
	struct tdm_hello_reply r = { .magic = TDM_WIRE_MAGIC,
		                     .version = TDM_WIRE_VERSION,
		                     .status = status };
	struct tdm_msg_hdr h = { .type = TDM_MSG_HELLO_REPLY, .length = sizeof(r) };
	unsigned char msg[sizeof(h) + sizeof(r)];
	memcpy(msg, &h, sizeof(h));
	memcpy(msg + sizeof(h), &r, sizeof(r));
	if (send_some(fd, msg, sizeof(msg), NULL, 0) < 0)
		(void)0; /* gone already */
	shutdown(fd, SHUT_WR);
	close(fd);
	atomic_fetch_add(&srv->counters.connections_refused, 1);
	log_ratelimited(LOG_INFO, "refused connection from pid %d uid %d: %s", (int)cred->pid,
	                (int)cred->uid, why);
}

static void on_hello_timeout(struct conn *c)
{
	log_ratelimited(LOG_INFO, "connection from pid %d: no hello within %d s", (int)c->pid,
	                HELLO_TIMEOUT_S);
	conn_close(c);
}

/* The peer's supplementary groups as they were when it connected
 * (SO_PEERGROUPS): a malloc'd array, or NULL with *n 0 when it has none or
 * they cannot be had (then only its primary gid counts). */
static gid_t *peer_groups(int fd, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = NULL;

	*n = 0;
	for (int tries = 0; tries < 2; tries++) {
		gid_t *bigger = realloc(g, len ? len : sizeof(gid_t));
		if (!bigger)
			break;
		g = bigger;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
			*n = len / sizeof(gid_t);
			return g;
		}
		if (errno != ERANGE) /* ERANGE: len now says how much it needs */
			break;
	}
	free(g);
	return NULL;
}

void conn_accept(struct server *srv, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	size_t ngroups;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		log_ratelimited(LOG_WARN, "accept: SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	gid_t *groups = peer_groups(fd, &ngroups);
	if (!server_peer_allowed(srv, cred.uid, cred.gid, groups, ngroups)) {
		free(groups);
		refuse(srv, fd, &cred, -TDM_EPERM, "not allowed");
		return;
	}
	struct uid_usage *u = server_uid_usage(srv, cred.uid);
	if (!u) {
		free(groups);
		refuse(srv, fd, &cred, -TDM_ENOMEM, "out of memory");
		return;
	}
	if (srv->nconns >= srv->cfg.max_connections) {
		free(groups);
		refuse(srv, fd, &cred, -TDM_EBUSY, "daemon.max_connections reached");
		return;
	}
	if (u->limited && u->connections >= srv->cfg.max_connections_per_uid) {
		free(groups);
		refuse(srv, fd, &cred, -TDM_EBUSY, "daemon.max_connections_per_uid reached");
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		free(groups);
		refuse(srv, fd, &cred, -TDM_ENOMEM, "out of memory");
		return;
	}
	c->groups = groups;
	c->ngroups = ngroups;
	c->srv = srv;
	c->fd = fd;
	c->nfds = 0;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->usage = u;
	c->ev_sock = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_socket, c);
	c->ev_write = event_new(srv->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->ev_timer = evtimer_new(srv->base, on_timer, c);
	struct timeval hello_timeout = { HELLO_TIMEOUT_S, 0 };
	if (!c->ev_sock || !c->ev_write || !c->ev_timer || event_add(c->ev_sock, NULL) != 0 ||
	    evtimer_add(c->ev_timer, &hello_timeout) != 0) {
		if (c->ev_sock)
			event_free(c->ev_sock);
		if (c->ev_write)
			event_free(c->ev_write);
		if (c->ev_timer)
			event_free(c->ev_timer);
		close(fd);
		free(c->groups);
		free(c);
		return;
	}
	u->connections++;
	srv->nconns++;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
}

static void drop_fds(struct conn *c)
{
	for (int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
}

void conn_close(struct conn *c)
{
	struct server *srv = c->srv;

	event_free(c->ev_sock);
	event_free(c->ev_write);
	event_free(c->ev_timer);
	close(c->fd);
	drop_fds(c);
	while (c->out_head) {
		struct conn_out *o = c->out_head;
		c->out_head = o->next;
		out_free(o);
	}
	control_trace_gone(srv, c);
	if (srv->cal_conn == c)
		srv->cal_conn = NULL; /* its reply is dropped when it comes */
	elastic_conn_gone(srv, c);
	if (c->s) {
		log_info("client %u (pid %d) disconnected", c->s->id, (int)c->pid);
		server_unregister(srv, c->s); /* no worker looks at it after this */
		session_close(c->s);
		session_unref(c->s);
		srv->nclients--;
		c->usage->sessions--;
		notify_status_changed(srv);
	}
	c->usage->connections--;
	srv->nconns--;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->groups);
	free(c);
}

/* ---- hello ---------------------------------------------------------------- */

static int hello_client(struct conn *c, struct tdm_hello_reply *r)
{
	struct server *srv = c->srv;
	struct session *s;
	int err;

	if (atomic_load(&srv->draining))
		return -TDM_ESHUTDOWN;
	if (srv->nclients >= srv->cfg.max_clients)
		return -TDM_EBUSY;
	if (c->usage->limited && c->usage->sessions >= srv->cfg.max_clients_per_uid)
		return -TDM_EBUSY;
	err = session_create(&srv->env, ++srv->next_session_id, (uint32_t)c->uid, c->usage, &s);
	if (err)
		return err;
	s->pid = c->pid;
	s->uid = c->uid;
	s->gid = c->gid;
	if (server_register(srv, s) != 0) {
		session_close(s);
		session_unref(s);
		return -TDM_ENOMEM;
	}
	c->s = s;
	srv->nclients++;
	c->usage->sessions++;
	notify_status_changed(srv);
	r->session_id = s->id;
	r->ring_bytes = (uint32_t)s->ring_bytes;
	r->sq_entries = s->sq_entries;
	r->cq_entries = s->cq_entries;
	r->sq_offset = s->hdr->sq_offset;
	r->cq_offset = s->hdr->cq_offset;
	r->ndevices = (uint32_t)srv->ndevs;
	r->buffer_quota_bytes = srv->cfg.buffer_quota_bytes;
	r->max_tasks_per_graph = srv->cfg.max_tasks_per_graph;
	log_info("client %u connected (pid %d uid %d)", s->id, (int)c->pid, (int)c->uid);
	return 0;
}

/* Returns false when the connection must be closed. */
static bool handle_hello(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_hello h;
	struct tdm_hello_reply r = { .magic = TDM_WIRE_MAGIC, .version = TDM_WIRE_VERSION };
	int status = 0;

	if (len != sizeof(h))
		return false;
	memcpy(&h, p, sizeof(h));
	if (h.magic != TDM_WIRE_MAGIC)
		return false;
	if (h.version != TDM_WIRE_VERSION)
		status = -TDM_EVERSION;
	else if (h.flags)
		status = -TDM_EPROTO;
	else if (h.role == TDM_ROLE_CLIENT)
		status = hello_client(c, &r);
	else if (h.role == TDM_ROLE_CONTROL)
		c->role = CONN_CONTROL;
	else
		status = -TDM_EPROTO;
	r.status = status;
	if (status) {
		log_ratelimited(LOG_INFO, "refused connection from pid %d uid %d: %s", (int)c->pid,
		                (int)c->uid, tdm_strerror(status));
		/* The reply goes out at once (the socket is empty at hello),
		 * or is dropped with the connection. */
		send_msg(c, TDM_MSG_HELLO_REPLY, &r, sizeof(r), NULL, 0);
		return false;
	}
	evtimer_del(c->ev_timer); /* hello done: no more deadline */
	if (c->s) {
		int fds[3] = { c->s->ring_fd, c->s->sq_bell, c->s->bell_peer };
		c->role = CONN_CLIENT;
		if (!send_msg(c, TDM_MSG_HELLO_REPLY, &r, sizeof(r), fds, 3))
			return false;
		/* The client has (or will have) its end; ours is the other. */
		close(c->s->bell_peer);
		c->s->bell_peer = -1;
		return true;
	}
	return send_msg(c, TDM_MSG_HELLO_REPLY, &r, sizeof(r), NULL, 0);
}

/* ---- client requests ------------------------------------------------------ */

/* The reply that hands the client a new buffer, with its fd when it has
 * one (fd < 0: none). The fd is closed here: the mapping stays and the
 * reply holds its own copy. A reply that cannot go out frees the buffer,
 * which no one would otherwise know of. */
static bool send_new_buffer(struct conn *c, uint32_t type, const struct tdm_buf_alloc_reply *r,
                            int fd)
{
	bool ok = send_msg(c, type, r, sizeof(*r), &fd, fd >= 0 ? 1 : 0);
	if (fd >= 0)
		close(fd);
	if (!ok && r->status == 0) {
		pthread_mutex_lock(&c->s->intake_lock);
		session_buffer_free(c->s, r->handle);
		pthread_mutex_unlock(&c->s->intake_lock);
	}
	return ok;
}

static bool handle_buf_alloc(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_buf_alloc_req req;
	struct tdm_buf_alloc_reply r = { 0 };
	int fd = -1;

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	pthread_mutex_lock(&c->s->intake_lock);
	r.status = req.reserved ? -TDM_EPROTO
	                        : session_buffer_alloc(c->s, req.bytes, req.flags, &r.handle, &fd);
	pthread_mutex_unlock(&c->s->intake_lock);
	r.bytes = r.status ? 0 : req.bytes;
	return send_new_buffer(c, TDM_MSG_BUF_ALLOC_REPLY, &r, fd);
}

static bool handle_buf_reserve(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_buf_reserve_req req;
	struct tdm_buf_alloc_reply r = { 0 };

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	pthread_mutex_lock(&c->s->intake_lock);
	r.status = req.reserved ? -TDM_EPROTO
	                        : session_buffer_reserve(c->s, req.capacity, req.flags, &r.handle);
	pthread_mutex_unlock(&c->s->intake_lock);
	r.bytes = r.status ? 0 : req.capacity;
	return send_new_buffer(c, TDM_MSG_BUF_RESERVE_REPLY, &r, -1);
}

static bool handle_buf_grow(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_buf_grow_req req;
	struct tdm_buf_grow_reply r = { 0 };
	int fd = -1;

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	pthread_mutex_lock(&c->s->intake_lock);
	r.status = req.reserved ? -TDM_EPROTO
	                        : session_buffer_grow(c->s, req.handle, req.used, &r, &fd);
	pthread_mutex_unlock(&c->s->intake_lock);
	if (r.status)
		r.used = r.backed = r.chunk_off = r.chunk_bytes = 0;
	/* A client that cannot take the chunk has a hole in its view; the
	 * daemon's is whole, and the connection goes anyway. */
	bool ok = send_msg(c, TDM_MSG_BUF_GROW_REPLY, &r, sizeof(r), &fd, fd >= 0 ? 1 : 0);
	if (fd >= 0)
		close(fd);
	return ok;
}

static bool handle_kv_admit(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_kv_admit_req req;
	struct tdm_kv_admit_reply r;

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	pthread_mutex_lock(&c->s->intake_lock);
	int status = session_kv_admit(c->s, &req, &r);
	pthread_mutex_unlock(&c->s->intake_lock);
	r.status = status;
	return send_msg(c, TDM_MSG_KV_ADMIT_REPLY, &r, sizeof(r), NULL, 0);
}

static bool handle_buf_free(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_buf_free_req req;
	struct tdm_status_reply r = { 0 };

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	pthread_mutex_lock(&c->s->intake_lock);
	r.status = req.reserved ? -TDM_EPROTO : session_buffer_free(c->s, req.handle);
	pthread_mutex_unlock(&c->s->intake_lock);
	return send_msg(c, TDM_MSG_BUF_FREE_REPLY, &r, sizeof(r), NULL, 0);
}

static bool handle_kernel_lookup(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_kernel_lookup_req req;
	struct tdm_kernel_lookup_reply r = { 0 };

	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	if (!memchr(req.name, '\0', sizeof(req.name))) {
		r.status = -TDM_EINVAL;
	} else {
		int id = kernel_lookup(req.name);
		const struct kernel_def *k = id >= 0 ? kernel_by_id((uint32_t)id) : NULL;
		/* A kernel no device here implements is as good as unknown. */
		if (k && !engine_kernel_available(c->srv->engine, k))
			k = NULL;
		r.status = k ? 0 : -TDM_EKERNEL;
		if (k) {
			r.kernel_id = (uint32_t)id;
			r.nargs = k->nargs;
			r.nscalars = k->nscalars;
			memcpy(r.arg_modes, k->arg_modes, sizeof(r.arg_modes));
			memcpy(r.scalar_types, k->scalar_types, sizeof(r.scalar_types));
			r.acc_args = k->acc_args;
		}
	}
	return send_msg(c, TDM_MSG_KERNEL_REPLY, &r, sizeof(r), NULL, 0);
}

/* ---- control requests ----------------------------------------------------- */

bool conn_send_reply(struct conn *c, int32_t status, char *text)
{
	if (!text && status == 0)
		status = -TDM_ENOMEM;
	size_t jlen = text ? strlen(text) : 0;
	char *payload = malloc(sizeof(status) + jlen);
	bool ok = false;

	if (payload && jlen + sizeof(status) <= TDM_CTL_REPLY_MAX) {
		memcpy(payload, &status, sizeof(status));
		if (jlen)
			memcpy(payload + sizeof(status), text, jlen);
		ok = send_msg(c, TDM_MSG_CTL_REPLY, payload, (uint32_t)(sizeof(status) + jlen),
		              NULL, 0);
	}
	free(payload);
	free(text);
	return ok;
}

/* Models, calibration and the machine description concern every user's
 * work: administrators only (root, the daemon's uid, daemon.admin_*). */
static bool refuse_unless_admin(struct conn *c, const char *what, bool *ok)
{
	if (server_peer_admin(c->srv, c->uid, c->gid, c->groups, c->ngroups))
		return false;
	char msg[160];
	snprintf(msg, sizeof(msg),
	         "%s: only root, the daemon's uid and daemon.admin_uids/admin_gids may", what);
	*ok = conn_send_reply(c, -TDM_EPERM, reply_error("%s", msg));
	return true;
}

/* `tandemctl models` needs the cost models. Without them (srv->prof NULL:
 * a server set up without models_start, as the conn fuzz target's) the
 * answer says so, rather than a bare "out of memory". */
static bool refuse_without_models(struct conn *c, const char *what, bool *ok)
{
	if (c->srv->prof)
		return false;
	char msg[96];
	snprintf(msg, sizeof(msg), "%s: this daemon has no cost models", what);
	*ok = conn_send_reply(c, -TDM_EINVAL, reply_error("%s", msg));
	return true;
}

/* The descriptor count a request announces (a uint32 payload) must match
 * what came with it; the request then owns them. Returns that count, or -1
 * (descriptors closed). */
static int take_fds(struct conn *c, const void *p, uint32_t len, int min, int max)
{
	uint32_t n = 0;
	if (len == sizeof(n))
		memcpy(&n, p, sizeof(n));
	if (len != sizeof(n) || n < (uint32_t)min || n > (uint32_t)max || (int)n != c->nfds) {
		drop_fds(c);
		return -1;
	}
	c->nfds = 0; /* the caller's now */
	return (int)n;
}

static bool handle_trace_start(struct conn *c, const void *p, uint32_t len)
{
	char *doc = NULL;
	int fds[CONN_MAX_FDS];
	memcpy(fds, c->fds, sizeof(fds));
	int n = take_fds(c, p, len, 1, 2);
	if (n < 0)
		return conn_send_reply(
		        c, -TDM_EINVAL,
		        reply_error("trace: expected 1 or 2 descriptors, as announced"));
	int status = control_trace_start(c->srv, c, fds, n, &doc);
	if (status)
		for (int i = 0; i < n; i++)
			close(fds[i]);
	return conn_send_reply(c, status, doc);
}

static bool handle_trace_stop(struct conn *c)
{
	char *doc = NULL;
	int status = control_trace_stop(c->srv, c, &doc);
	return conn_send_reply(c, status, doc);
}

static bool handle_export(struct conn *c, const void *p, uint32_t len)
{
	char *doc = NULL;
	bool ok;
	if (refuse_unless_admin(c, "export", &ok)) {
		drop_fds(c);
		return ok;
	}
	int fd = c->nfds ? c->fds[0] : -1;
	if (len != 0 && take_fds(c, p, len, 1, 1) < 0)
		return conn_send_reply(c, -TDM_EINVAL,
		                       reply_error("export: expected 1 descriptor, as announced"));
	if (len == 0) {
		drop_fds(c); /* none announced: none taken */
		fd = -1;
	}
	int status = control_export(c->srv, fd, &doc);
	return conn_send_reply(c, status, doc);
}

static bool handle_models(struct conn *c)
{
	bool ok;
	if (refuse_unless_admin(c, "models", &ok) || refuse_without_models(c, "models", &ok))
		return ok;
	return conn_send_reply(c, 0, models_json(c->srv));
}

static void *calibration_main(void *arg)
{
	struct server *srv = arg;
	srv->cal_doc = models_calibrate(srv);
	atomic_store(&srv->cal_done, true);
	server_kick(srv);
	return NULL;
}

/* tandemctl calibrate measures for about a second: on a thread of its own,
 * one at a time, so that the loop keeps serving meanwhile. */
static bool handle_calibrate(struct conn *c)
{
	struct server *srv = c->srv;
	bool ok;
	if (refuse_unless_admin(c, "calibrate", &ok))
		return ok;
	if (srv->cal_running)
		return conn_send_reply(c, -TDM_EBUSY,
		                       reply_error("calibrate: a calibration is running already"));
	if (elastic_busy(srv)) /* it would change the device table under us */
		return conn_send_reply(
		        c, -TDM_EBUSY,
		        reply_error("calibrate: a device is being measured or probed; try again"));
	srv->cal_doc = NULL;
	atomic_store(&srv->cal_done, false);
	if (pthread_create(&srv->cal_thread, NULL, calibration_main, srv) != 0)
		return conn_send_reply(c, -TDM_ESYS,
		                       reply_error("calibrate: cannot start its thread"));
	srv->cal_running = true;
	srv->cal_conn = c;
	conn_defer_reply(c);
	return true;
}

void conn_defer_reply(struct conn *c)
{
	c->awaiting = true;
	event_del(c->ev_sock); /* one request at a time */
}

bool conn_deferred_reply(struct conn *c, int32_t status, char *doc)
{
	c->awaiting = false;
	if (!conn_send_reply(c, status, doc)) {
		conn_close(c);
		return false;
	}
	if (!c->out_head) {
		event_add(c->ev_sock, NULL);
		process_input(c);
	}
	return true;
}

void conn_calibration_done(struct server *srv)
{
	if (!srv->cal_running)
		return;
	pthread_join(srv->cal_thread, NULL);
	srv->cal_running = false;
	char *doc = srv->cal_doc;
	srv->cal_doc = NULL;
	struct conn *c = srv->cal_conn;
	srv->cal_conn = NULL;
	if (!c) {
		free(doc);
		return;
	}
	int32_t status = 0;
	if (!doc && !srv->prof) { /* without cost models, nothing was calibrated */
		status = -TDM_EINVAL;
		doc = reply_error("calibrate: this daemon has no cost models");
	}
	conn_deferred_reply(c, status, doc);
}

/* Device and client changes concern every user's work: administrators
 * only, with a reason a program can test. */
static bool refuse_change_unless_admin(struct conn *c, const char *what, bool *ok)
{
	if (server_peer_admin(c->srv, c->uid, c->gid, c->groups, c->ngroups))
		return false;
	*ok = conn_send_reply(c, -TDM_EPERM,
	                      reply_refusal(TDM_CTL_REASON_NOT_ADMIN,
	                                    "%s: only root, the daemon's uid and "
	                                    "daemon.admin_uids/admin_gids may",
	                                    what));
	return true;
}

/* A device name as backends make them: [A-Za-z0-9_.-], 1 to 31 bytes. */
static bool device_name_valid(const char *name, size_t max)
{
	size_t n = strnlen(name, max);
	if (n == 0 || n >= max || n >= BACKEND_DEVICE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.'))
			return false;
	}
	return true;
}

static bool handle_device(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_ctl_device req;
	bool ok;
	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req)); /* copied once, then checked */
	if (refuse_change_unless_admin(c, "device", &ok))
		return ok;
	const char *why = NULL;
	if (req.op < TDM_DEV_ADD || req.op >= TDM_DEV_OP_COUNT)
		why = "unknown operation";
	else if (req.reserved)
		why = "reserved field not zero";
	else if (!memchr(req.name, '\0', sizeof(req.name)))
		why = "device name not terminated";
	else if (req.op == TDM_DEV_RESCAN ? req.name[0] != '\0'
	                                  : !device_name_valid(req.name, sizeof(req.name)))
		why = req.op == TDM_DEV_RESCAN ? "rescan takes no device name"
		                               : "device name: 1 to 31 of [A-Za-z0-9_.-]";
	else if (req.op == TDM_DEV_BUDGET ? req.value < 4096 || req.value > (UINT64_C(1) << 48)
	                                  : req.value != 0)
		why = req.op == TDM_DEV_BUDGET ? "budget: 4096 bytes to 2^48" : "value not zero";
	if (why)
		return conn_send_reply(
		        c, -TDM_EINVAL,
		        reply_refusal(TDM_CTL_REASON_BAD_REQUEST, "device: %s", why));
	return elastic_device_request(c->srv, c, &req);
}

static bool handle_client_change(struct conn *c, const void *p, uint32_t len)
{
	struct tdm_ctl_client req;
	bool ok;
	if (len != sizeof(req))
		return false;
	memcpy(&req, p, sizeof(req));
	if (refuse_change_unless_admin(c, "client", &ok))
		return ok;
	char *doc = NULL;
	int status = control_client_change(c->srv, &req, &doc);
	return conn_send_reply(c, status, doc);
}

static bool handle_msg(struct conn *c, uint32_t type, const void *p, uint32_t len)
{
	if (c->role == CONN_NEW)
		return type == TDM_MSG_HELLO && handle_hello(c, p, len);
	switch (type) {
	case TDM_MSG_BUF_ALLOC: return c->role == CONN_CLIENT && handle_buf_alloc(c, p, len);
	case TDM_MSG_BUF_FREE: return c->role == CONN_CLIENT && handle_buf_free(c, p, len);
	case TDM_MSG_BUF_RESERVE: return c->role == CONN_CLIENT && handle_buf_reserve(c, p, len);
	case TDM_MSG_BUF_GROW: return c->role == CONN_CLIENT && handle_buf_grow(c, p, len);
	case TDM_MSG_KV_ADMIT: return c->role == CONN_CLIENT && handle_kv_admit(c, p, len);
	case TDM_MSG_KERNEL_LOOKUP: return handle_kernel_lookup(c, p, len);
	case TDM_MSG_CTL_STATUS:
		return len == 0 && conn_send_reply(c, 0, control_status_json(c->srv, c));
	case TDM_MSG_CTL_MODELS: return len == 0 && handle_models(c);
	/* Calibration, recordings and the machine description: tandemctl's. */
	case TDM_MSG_CTL_CALIBRATE:
		return len == 0 && c->role == CONN_CONTROL && handle_calibrate(c);
	case TDM_MSG_CTL_TRACE_START:
		return c->role == CONN_CONTROL && handle_trace_start(c, p, len);
	case TDM_MSG_CTL_TRACE_STOP:
		return len == 0 && c->role == CONN_CONTROL && handle_trace_stop(c);
	case TDM_MSG_CTL_EXPORT: return c->role == CONN_CONTROL && handle_export(c, p, len);
	/* Devices and clients while they run (daemon/elastic.c, control.c). */
	case TDM_MSG_CTL_DEVICE: return c->role == CONN_CONTROL && handle_device(c, p, len);
	case TDM_MSG_CTL_CLIENT: return c->role == CONN_CONTROL && handle_client_change(c, p, len);
	default: return false;
	}
}

/* ---- input ---------------------------------------------------------------- */

/* recv into c->in, keeping descriptors that come along (at most
 * CONN_MAX_FDS waiting; more, or a truncated list, is a protocol error:
 * -1 with errno EPROTO). */
static ssize_t recv_with_fds(struct conn *c, int fd)
{
	union {
		char buf[CMSG_SPACE(CONN_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { c->in + c->inlen, sizeof(c->in) - c->inlen };
	struct msghdr m = { .msg_iov = &iov,
		            .msg_iovlen = 1,
		            .msg_control = u.buf,
		            .msg_controllen = sizeof(u.buf) };
	bool bad = false;

	ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int got;
			memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof(got));
			if (c->nfds < CONN_MAX_FDS) {
				c->fds[c->nfds++] = got;
			} else {
				close(got);
				bad = true;
			}
		}
	}
	if (bad || (m.msg_flags & MSG_CTRUNC)) {
		log_ratelimited(LOG_WARN, "pid %d: too many descriptors passed: disconnecting",
		                (int)c->pid);
		atomic_fetch_add(&c->srv->counters.protocol_errors, 1);
		errno = EPROTO;
		return -1;
	}
	return n;
}

/* Handles the whole requests in c->in, one at a time: it stops while a
 * reply waits for the peer or a calibration runs (the rest stays in c->in
 * and in the socket). May close c. */
static void process_input(struct conn *c)
{
	while (c->inlen >= sizeof(struct tdm_msg_hdr) && !c->out_head && !c->awaiting) {
		struct tdm_msg_hdr h;
		memcpy(&h, c->in, sizeof(h));
		if (h.length > TDM_MSG_MAX_PAYLOAD) {
			log_ratelimited(LOG_WARN, "pid %d: message of %u bytes: disconnecting",
			                (int)c->pid, h.length);
			atomic_fetch_add(&c->srv->counters.protocol_errors, 1);
			conn_close(c);
			return;
		}
		size_t whole = sizeof(h) + h.length;
		if (c->inlen < whole)
			return;
		if (!handle_msg(c, h.type, c->in + sizeof(h), h.length)) {
			if (c->role != CONN_NEW || h.type != TDM_MSG_HELLO)
				log_ratelimited(
				        LOG_INFO,
				        "pid %d: bad or failed request (type %u, %u bytes): "
				        "disconnecting",
				        (int)c->pid, h.type, h.length);
			conn_close(c);
			return;
		}
		memmove(c->in, c->in + whole, c->inlen - whole);
		c->inlen -= whole;
	}
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)what;
	if (c->inlen == sizeof(c->in)) {
		/* Full of a request not handled yet: wait for it (we are only
		 * called while nothing waits, so this does not last). */
		process_input(c);
		return;
	}
	ssize_t n = recv_with_fds(c, fd);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (n < 0)
		return;
	c->inlen += (size_t)n;
	process_input(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (c->role == CONN_NEW && !c->out_head) {
		on_hello_timeout(c);
		return;
	}
	log_ratelimited(LOG_INFO, "pid %d: did not read its reply within %d s: disconnecting",
	                (int)c->pid, REPLY_TIMEOUT_S);
	conn_close(c);
}

void conn_close_broken(struct server *srv)
{
	for (struct conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (c->s && atomic_load(&c->s->proto_error))
			conn_close(c);
	}
}
