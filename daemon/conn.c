/* Connections: peer credentials, hello, slow-path requests (buffers,
 * kernel lookup, control), and the submission doorbell. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/intake.h"
#include "daemon/log.h"
#include "daemon/models.h"
#include "daemon/server.h"
#include "tandem.h"

#define HELLO_TIMEOUT_S 5
#define CONTROL_SEND_TIMEOUT_S 2

/* Sends one message, with up to three descriptors. Replies are small and
 * the socket buffer is empty in a well-behaved client; a client whose
 * buffer is full is not reading and is disconnected by the caller. */
static int send_msg(int fd, uint32_t type, const void *payload, uint32_t len, const int *fds,
                    int nfds)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, len } };
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

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
	ssize_t want = (ssize_t)(sizeof(h) + len);
	ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
	if (n == want)
		return 0;
	if (n < 0)
		return -TDM_ESYS;
	/* Partial send (large control replies): finish the payload. */
	const char *rest = (const char *)payload + (n - (ssize_t)sizeof(h));
	size_t left = (size_t)(want - n);
	if (n < (ssize_t)sizeof(h))
		return -TDM_EPROTO;
	while (left) {
		ssize_t k = send(fd, rest, left, MSG_NOSIGNAL);
		if (k <= 0)
			return -TDM_ESYS;
		rest += k;
		left -= (size_t)k;
	}
	return 0;
}

static bool peer_allowed(const struct tdm_config *cfg, uid_t uid, gid_t gid)
{
	if (uid == 0)
		return true;
	if (cfg->n_allowed_uids == 0 && uid == geteuid())
		return true;
	for (size_t i = 0; i < cfg->n_allowed_uids; i++)
		if (cfg->allowed_uids[i] == uid)
			return true;
	for (size_t i = 0; i < cfg->n_allowed_gids; i++)
		if (cfg->allowed_gids[i] == gid)
			return true;
	return false;
}

static void on_socket(evutil_socket_t fd, short what, void *arg);

/* A connection must say hello within HELLO_TIMEOUT_S; after that it may
 * stay quiet on its socket as long as it likes. */
static void on_hello_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	log_info("connection from pid %d: no hello within %d s", (int)c->pid, HELLO_TIMEOUT_S);
	conn_close(c);
}

void conn_accept(struct server *srv, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		log_warn("accept: SO_PEERCRED: %s", strerror(errno));
		close(fd);
		free(c);
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->nfds = 0;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->allowed = peer_allowed(&srv->cfg, cred.uid, cred.gid);
	c->ev_sock = event_new(srv->base, fd, EV_READ | EV_PERSIST, on_socket, c);
	c->ev_hello = evtimer_new(srv->base, on_hello_timeout, c);
	struct timeval hello_timeout = { HELLO_TIMEOUT_S, 0 };
	if (!c->ev_sock || !c->ev_hello || event_add(c->ev_sock, NULL) != 0 ||
	    evtimer_add(c->ev_hello, &hello_timeout) != 0) {
		if (c->ev_sock)
			event_free(c->ev_sock);
		if (c->ev_hello)
			event_free(c->ev_hello);
		close(fd);
		free(c);
		return;
	}
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

	if (c->ev_sock)
		event_free(c->ev_sock);
	if (c->ev_hello)
		event_free(c->ev_hello);
	close(c->fd);
	drop_fds(c);
	if (srv->rec.owner == c && recorder_active(&srv->rec)) {
		log_info("trace: tandemctl pid %d went away without stopping: recording discarded",
		         (int)c->pid);
		recorder_discard(&srv->rec);
	}
	if (c->s) {
		log_info("client %u (pid %d) disconnected", c->s->id, (int)c->pid);
		server_unregister(srv, c->s); /* no worker looks at it after this */
		session_close(c->s);
		session_unref(c->s);
		srv->nclients--;
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

static int hello_client(struct conn *c, struct tdm_hello_reply *r)
{
	struct server *srv = c->srv;
	struct session *s;
	int err;

	if (atomic_load(&srv->draining))
		return -TDM_ESHUTDOWN;
	if (srv->nclients >= srv->cfg.max_clients)
		return -TDM_EBUSY;
	err = session_create(&srv->env, ++srv->next_session_id, (uint32_t)c->uid, &s);
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
	else if (!c->allowed)
		status = -TDM_EPERM;
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
		log_info("refused connection from pid %d uid %d: %s", (int)c->pid, (int)c->uid,
		         tdm_strerror(status));
		send_msg(c->fd, TDM_MSG_HELLO_REPLY, &r, sizeof(r), NULL, 0);
		return false;
	}
	if (c->s) {
		int fds[3] = { c->s->ring_fd, c->srv->sq_bell, c->s->cq_bell };
		c->role = CONN_CLIENT;
		if (send_msg(c->fd, TDM_MSG_HELLO_REPLY, &r, sizeof(r), fds, 3) != 0)
			return false;
	} else if (send_msg(c->fd, TDM_MSG_HELLO_REPLY, &r, sizeof(r), NULL, 0) != 0) {
		return false;
	}
	event_free(c->ev_hello); /* hello done: no more deadline */
	c->ev_hello = NULL;
	return true;
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
	int err = send_msg(c->fd, TDM_MSG_BUF_ALLOC_REPLY, &r, sizeof(r), &fd, fd >= 0 ? 1 : 0);
	if (fd >= 0)
		close(fd); /* the mapping stays; the client has its own copy */
	if (err && r.status == 0) {
		pthread_mutex_lock(&c->s->intake_lock);
		session_buffer_free(c->s, r.handle);
		pthread_mutex_unlock(&c->s->intake_lock);
	}
	return err == 0;
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
	return send_msg(c->fd, TDM_MSG_BUF_FREE_REPLY, &r, sizeof(r), NULL, 0) == 0;
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
		}
	}
	return send_msg(c->fd, TDM_MSG_KERNEL_REPLY, &r, sizeof(r), NULL, 0) == 0;
}

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
		/* The document can exceed the socket buffer: send it blocking,
		 * bounded by a timeout so a stalled tandemctl cannot hang us. */
		struct timeval tv = { CONTROL_SEND_TIMEOUT_S, 0 };
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		int flags = fcntl(c->fd, F_GETFL);
		fcntl(c->fd, F_SETFL, flags & ~O_NONBLOCK);
		ok = send_msg(c->fd, TDM_MSG_CTL_REPLY, payload, (uint32_t)(sizeof(status) + jlen),
		              NULL, 0) == 0;
		fcntl(c->fd, F_SETFL, flags);
	}
	free(payload);
	free(text);
	return ok;
}

/* Sends a control reply: status + the JSON text (NULL: out of memory). */
static bool send_document(struct conn *c, char *json)
{
	return conn_send_reply(c, 0, json);
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
		return conn_send_reply(c, -TDM_EINVAL,
		                       strdup("{\"error\":\"trace: expected 1 or 2 descriptors, "
		                              "as announced\"}"));
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
	int fd = c->nfds ? c->fds[0] : -1;
	if (len != 0 && take_fds(c, p, len, 1, 1) < 0)
		return conn_send_reply(c, -TDM_EINVAL,
		                       strdup("{\"error\":\"export: expected 1 descriptor, as "
		                              "announced\"}"));
	if (len == 0) {
		drop_fds(c); /* none announced: none taken */
		fd = -1;
	}
	int status = control_export(c->srv, fd, &doc);
	return conn_send_reply(c, status, doc);
}

static bool handle_status(struct conn *c)
{
	return send_document(c, control_status_json(c->srv));
}

static bool handle_msg(struct conn *c, uint32_t type, const void *p, uint32_t len)
{
	if (c->role == CONN_NEW)
		return type == TDM_MSG_HELLO && handle_hello(c, p, len);
	switch (type) {
	case TDM_MSG_BUF_ALLOC: return c->role == CONN_CLIENT && handle_buf_alloc(c, p, len);
	case TDM_MSG_BUF_FREE: return c->role == CONN_CLIENT && handle_buf_free(c, p, len);
	case TDM_MSG_KERNEL_LOOKUP: return handle_kernel_lookup(c, p, len);
	case TDM_MSG_CTL_STATUS: return len == 0 && handle_status(c);
	case TDM_MSG_CTL_MODELS: return len == 0 && send_document(c, models_json(c->srv));
	/* Measures for about a second: only for tandemctl, not for clients. */
	case TDM_MSG_CTL_CALIBRATE:
		return len == 0 && c->role == CONN_CONTROL &&
		       send_document(c, models_calibrate(c->srv));
	/* Recordings and the machine description: tandemctl's too. */
	case TDM_MSG_CTL_TRACE_START:
		return c->role == CONN_CONTROL && handle_trace_start(c, p, len);
	case TDM_MSG_CTL_TRACE_STOP:
		return len == 0 && c->role == CONN_CONTROL && handle_trace_stop(c);
	case TDM_MSG_CTL_EXPORT: return c->role == CONN_CONTROL && handle_export(c, p, len);
	default: return false;
	}
}

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
		log_warn("pid %d: too many descriptors passed: disconnecting", (int)c->pid);
		atomic_fetch_add(&c->srv->counters.protocol_errors, 1);
		errno = EPROTO;
		return -1;
	}
	return n;
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)what;
	ssize_t n = recv_with_fds(c, fd);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_close(c);
		return;
	}
	if (n < 0)
		return;
	c->inlen += (size_t)n;
	while (c->inlen >= sizeof(struct tdm_msg_hdr)) {
		struct tdm_msg_hdr h;
		memcpy(&h, c->in, sizeof(h));
		if (h.length > TDM_MSG_MAX_PAYLOAD) {
			log_warn("pid %d: message of %u bytes: disconnecting", (int)c->pid,
			         h.length);
			atomic_fetch_add(&c->srv->counters.protocol_errors, 1);
			conn_close(c);
			return;
		}
		size_t whole = sizeof(h) + h.length;
		if (c->inlen < whole)
			return;
		if (!handle_msg(c, h.type, c->in + sizeof(h), h.length)) {
			if (c->role != CONN_NEW || h.type != TDM_MSG_HELLO)
				log_info("pid %d: bad or failed request (type %u, %u bytes): "
				         "disconnecting",
				         (int)c->pid, h.type, h.length);
			conn_close(c);
			return;
		}
		memmove(c->in, c->in + whole, c->inlen - whole);
		c->inlen -= whole;
	}
}

void conn_close_broken(struct server *srv)
{
	for (struct conn *c = srv->conns, *next; c; c = next) {
		next = c->next;
		if (c->s && atomic_load(&c->s->proto_error))
			conn_close(c);
	}
}
