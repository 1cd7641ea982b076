/* libtandem: connection, requests over the socket, buffers, kernels. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/client_internal.h"

static size_t page_round(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	return (n + page - 1) / page * page;
}

static int send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -TDM_EDISCONNECTED;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static int recv_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n) {
		ssize_t k = recv(fd, c, n, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -TDM_EDISCONNECTED;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Receives one message header with up to max_fds descriptors attached. */
static int recv_header(int fd, struct tdm_msg_hdr *h, int *fds, int max_fds, int *nfds)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { h, sizeof(*h) };
	struct msghdr m = { .msg_iov = &iov,
		            .msg_iovlen = 1,
		            .msg_control = u.buf,
		            .msg_controllen = sizeof(u.buf) };
	ssize_t k;

	*nfds = 0;
	do
		k = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	while (k < 0 && errno == EINTR);
	if (k != (ssize_t)sizeof(*h))
		return -TDM_EDISCONNECTED;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int got[4];
		memcpy(got, CMSG_DATA(cm), (size_t)(n > 4 ? 4 : n) * sizeof(int));
		for (int i = 0; i < n && i < 4; i++) {
			if (*nfds < max_fds)
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);
		}
	}
	return 0;
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* How long a broken connection waits for the daemon's process to end
 * before it says "disconnected": a killed daemon's sockets close a moment
 * before its process counts as ended. Once per connection. */
#define LOST_GRACE_MS 200

/* Whether the daemon's process ended, waiting up to timeout_ms for it. */
static bool daemon_exited(tdm_client *c, int timeout_ms)
{
	if (c->daemon_pidfd >= 0) {
		struct pollfd p = { c->daemon_pidfd, POLLIN, 0 };
		int n;
		do
			n = poll(&p, 1, timeout_ms);
		while (n < 0 && errno == EINTR);
		return n > 0;
	}
	if (c->daemon_pid <= 0)
		return false;
	/* No pidfd: a zombie still counts as running here. */
	for (int waited = 0;; waited += 10) {
		if (kill(c->daemon_pid, 0) != 0 && errno == ESRCH)
			return true;
		if (waited >= timeout_ms)
			return false;
		usleep(10000);
	}
}

int client_lost(tdm_client *c)
{
	bool first = !c->lost_checked;
	c->broken = c->lost_checked = true;
	if (!c->daemon_gone)
		c->daemon_gone = daemon_exited(c, first ? LOST_GRACE_MS : 0);
	return c->daemon_gone ? -TDM_EDAEMON : -TDM_EDISCONNECTED;
}

/* A pidfd for the process at the other end of sock, or -1. */
static int open_peer_pidfd(int sock, int *pid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	*pid = 0;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0)
		return -1;
	*pid = cred.pid;
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, cred.pid, 0); /* close-on-exec by itself */
#else
	return -1;
#endif
}

/* One request, one reply of exactly reply_len bytes (+ at most one fd). */
int client_request(tdm_client *c, uint32_t type, const void *req, uint32_t len, uint32_t reply_type,
                   void *reply, uint32_t reply_len, int *fd_out)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	int fds[3], nfds, err;

	if (c->broken)
		return client_lost(c);
	if ((err = send_all(c->sock, &h, sizeof(h))) ||
	    (len && (err = send_all(c->sock, req, len))))
		goto broken;
	if ((err = recv_header(c->sock, &h, fds, 3, &nfds)))
		goto broken;
	if (h.type != reply_type || h.length != reply_len || nfds > (fd_out ? 1 : 0)) {
		close_fds(fds, nfds);
		err = -TDM_EPROTO;
		goto broken;
	}
	if ((err = recv_all(c->sock, reply, reply_len))) {
		close_fds(fds, nfds);
		goto broken;
	}
	if (fd_out)
		*fd_out = nfds ? fds[0] : -1;
	return 0;
broken:
	if (err == -TDM_EDISCONNECTED)
		return client_lost(c);
	c->broken = true;
	return err;
}

static int connect_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -TDM_EINVAL;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -TDM_ESYS;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -TDM_ECONNECT;
	}
	return fd;
}

/* A memfd the daemon made must be sealed against shrinking (else it could
 * cut the mapping under us: SIGBUS) and hold at least `bytes`. */
static bool sealed_and_sized(int fd, uint64_t bytes)
{
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & F_SEAL_SHRINK) && fstat(fd, &st) == 0 &&
	       S_ISREG(st.st_mode) && (uint64_t)st.st_size >= bytes;
}

static int map_ring(tdm_client *c, const struct tdm_hello_reply *r, int ring_fd)
{
	/* Trust, but check: the geometry must fit the region we map. */
	if (!r->sq_entries || (r->sq_entries & (r->sq_entries - 1)) || !r->cq_entries ||
	    (r->cq_entries & (r->cq_entries - 1)) ||
	    (uint64_t)r->sq_offset + (uint64_t)r->sq_entries * sizeof(struct tdm_sqe) >
	            r->ring_bytes ||
	    (uint64_t)r->cq_offset + (uint64_t)r->cq_entries * sizeof(struct tdm_cqe) >
	            r->ring_bytes ||
	    r->sq_offset < sizeof(struct tdm_ring_header) ||
	    r->cq_offset < sizeof(struct tdm_ring_header))
		return -TDM_EPROTO;
	if (!sealed_and_sized(ring_fd, r->ring_bytes))
		return -TDM_EPEER;
	c->ring = mmap(NULL, r->ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, ring_fd, 0);
	if (c->ring == MAP_FAILED) {
		c->ring = NULL;
		return -TDM_ESYS;
	}
	c->ring_bytes = r->ring_bytes;
	c->hdr = c->ring;
	c->sq = (struct tdm_sqe *)((char *)c->ring + r->sq_offset);
	c->cq = (struct tdm_cqe *)((char *)c->ring + r->cq_offset);
	c->sq_entries = r->sq_entries;
	c->cq_entries = r->cq_entries;
	c->sq_tail = c->sq_published = __atomic_load_n(&c->hdr->sq_tail, __ATOMIC_ACQUIRE);
	c->cq_head = __atomic_load_n(&c->hdr->cq_head, __ATOMIC_ACQUIRE);
	return 0;
}

TDM_API int tdm_connect(const struct tdm_connect_opts *opts, tdm_client **out)
{
	char path[108];
	struct tdm_hello hello = { .magic = TDM_WIRE_MAGIC,
		                   .version = TDM_WIRE_VERSION,
		                   .role = TDM_ROLE_CLIENT };
	struct tdm_hello_reply r;
	struct tdm_msg_hdr h = { .type = TDM_MSG_HELLO, .length = sizeof(hello) };
	int fds[3], nfds = 0, err, sent;
	tdm_client *c;

	if (!out)
		return -TDM_EINVAL;
	*out = NULL;
	if (opts && opts->socket_path) {
		if (strlen(opts->socket_path) >= sizeof(path))
			return -TDM_EINVAL;
		strcpy(path, opts->socket_path);
	} else if ((err = tdm_default_socket_path(path, sizeof(path)))) {
		return err;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -TDM_ENOMEM;
	c->sq_bell = c->bell = c->daemon_pidfd = c->wait_ep = c->wait_timer = -1;
	c->spin_us = opts ? opts->spin_us : 0;
	c->daemon_uid = opts ? opts->daemon_uid : 0;
	strcpy(c->path, path);
	c->sock = connect_socket(path);
	if (c->sock < 0) {
		err = c->sock;
		free(c);
		return err;
	}
	if ((err = tdm_check_daemon(c->sock, c->daemon_uid)))
		goto fail;
	c->daemon_pidfd = open_peer_pidfd(c->sock, &c->daemon_pid);
	/* A daemon that refuses us may answer and close before our hello is
	 * out: read its reply even when the send failed. */
	sent = send_all(c->sock, &h, sizeof(h));
	if (!sent)
		sent = send_all(c->sock, &hello, sizeof(hello));
	if ((err = recv_header(c->sock, &h, fds, 3, &nfds))) {
		err = sent ? sent : err;
		goto fail;
	}
	if (h.type != TDM_MSG_HELLO_REPLY || h.length != sizeof(r)) {
		err = -TDM_EPROTO;
		goto fail;
	}
	if ((err = recv_all(c->sock, &r, sizeof(r))))
		goto fail;
	if (r.magic != TDM_WIRE_MAGIC || r.version != TDM_WIRE_VERSION) {
		err = -TDM_EVERSION;
		goto fail;
	}
	if (r.status) {
		err = r.status < 0 && r.status > -TDM_E__COUNT ? r.status : -TDM_EPROTO;
		goto fail;
	}
	if (nfds != 3) {
		err = -TDM_EPROTO;
		goto fail;
	}
	if ((err = map_ring(c, &r, fds[0])))
		goto fail;
	close(fds[0]);
	c->sq_bell = fds[1];
	c->bell = fds[2];
	if ((err = ring_wait_init(c))) {
		ring_wait_fini(c);
		close(c->sq_bell);
		close(c->bell);
		nfds = 0; /* closed above */
		goto fail;
	}
	c->session_id = r.session_id;
	c->ndevices = r.ndevices;
	c->max_tasks_per_graph = r.max_tasks_per_graph;
	*out = c;
	return 0;
fail:
	close_fds(fds, nfds);
	if (c->ring)
		munmap(c->ring, c->ring_bytes);
	if (c->daemon_pidfd >= 0)
		close(c->daemon_pidfd);
	close(c->sock);
	free(c);
	return err;
}

TDM_API void tdm_disconnect(tdm_client *c)
{
	if (!c)
		return;
	/* Graphs still in flight are detached: their results never come. */
	for (struct tdm_graph *g = c->inflight; g; g = g->next) {
		g->inflight = false;
		g->done = true;
		g->status = -TDM_EDISCONNECTED;
		g->c = NULL;
	}
	for (size_t i = 0; i < c->nmaps; i++)
		munmap(c->maps[i].ptr, c->maps[i].mapped);
	if (c->ring)
		munmap(c->ring, c->ring_bytes);
	if (c->sq_bell >= 0)
		close(c->sq_bell);
	if (c->bell >= 0)
		close(c->bell);
	ring_wait_fini(c);
	if (c->daemon_pidfd >= 0)
		close(c->daemon_pidfd);
	close(c->sock);
	free(c->maps);
	free(c->kernels);
	free(c);
}

TDM_API uint32_t tdm_session_id(const tdm_client *c)
{
	return c->session_id;
}

TDM_API uint32_t tdm_device_count(const tdm_client *c)
{
	return c->ndevices;
}

/* ---- buffers ---- */

const struct mapping *client_mapping(const tdm_client *c, tdm_buffer h)
{
	for (size_t i = 0; i < c->nmaps; i++)
		if (c->maps[i].handle == h)
			return &c->maps[i];
	return NULL;
}

/* Room for one more mapping in c->maps. 0 or -TDM_ENOMEM. */
static int maps_room(tdm_client *c)
{
	if (c->nmaps < c->maps_cap)
		return 0;
	size_t ncap = c->maps_cap ? c->maps_cap * 2 : 16;
	struct mapping *n = realloc(c->maps, ncap * sizeof(*n));
	if (!n)
		return -TDM_ENOMEM;
	c->maps = n;
	c->maps_cap = ncap;
	return 0;
}

/* A request whose reply may bring an fd: the request's error, or the
 * reply's status (then any fd that came with it is closed), or 0. */
static int request_fd(tdm_client *c, uint32_t type, const void *req, uint32_t len,
                      uint32_t reply_type, void *reply, uint32_t reply_len, const int32_t *status,
                      int *fd)
{
	int err = client_request(c, type, req, len, reply_type, reply, reply_len, fd);
	if (err)
		return err;
	if (*status) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return *status;
	}
	return 0;
}

TDM_API int tdm_buffer_alloc(tdm_client *c, size_t bytes, uint32_t flags, tdm_buffer *handle,
                             void **ptr)
{
	return tdm_buffer_alloc_request(c, bytes, flags, 0, handle, ptr);
}

TDM_API int tdm_buffer_alloc_request(tdm_client *c, size_t bytes, uint32_t flags, uint32_t request,
                                     tdm_buffer *handle, void **ptr)
{
	struct tdm_buf_alloc_req req = { .bytes = bytes, .flags = flags, .request = request };
	struct tdm_buf_alloc_reply r;
	int fd = -1, err;

	if (!c || !handle || !ptr || bytes == 0 || (flags & ~TDM_BUF_FLAGS_ALL) ||
	    (request && !(flags & TDM_BUF_KV)))
		return -TDM_EINVAL;
	err = maps_room(c);
	if (err)
		return err;
	err = request_fd(c, TDM_MSG_BUF_ALLOC, &req, sizeof(req), TDM_MSG_BUF_ALLOC_REPLY, &r,
	                 sizeof(r), &r.status, &fd);
	if (err)
		return err;
	if (fd < 0 || r.bytes != bytes)
		return -TDM_EPROTO;
	size_t mapped = page_round(bytes);
	if (!sealed_and_sized(fd, mapped)) {
		close(fd);
		return -TDM_EPEER;
	}
	void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		struct tdm_buf_free_req fr = { .handle = r.handle };
		struct tdm_status_reply sr;
		client_request(c, TDM_MSG_BUF_FREE, &fr, sizeof(fr), TDM_MSG_BUF_FREE_REPLY, &sr,
		               sizeof(sr), NULL);
		return -TDM_ENOMEM;
	}
	c->maps[c->nmaps++] = (struct mapping){ r.handle, p, bytes, mapped, mapped, false };
	*handle = r.handle;
	*ptr = p;
	return 0;
}

TDM_API int tdm_buffer_reserve(tdm_client *c, size_t capacity, uint32_t flags, tdm_buffer *handle,
                               void **ptr)
{
	return tdm_buffer_reserve_request(c, capacity, flags, 0, handle, ptr);
}

TDM_API int tdm_buffer_reserve_request(tdm_client *c, size_t capacity, uint32_t flags,
                                       uint32_t request, tdm_buffer *handle, void **ptr)
{
	struct tdm_buf_reserve_req req = { .capacity = capacity,
		                           .flags = flags,
		                           .request = request };
	struct tdm_buf_alloc_reply r;
	int err;

	if (!c || !handle || !ptr || capacity == 0 || (flags & ~TDM_BUF_FLAGS_ALL) ||
	    !(flags & TDM_BUF_KV) || (flags & TDM_BUF_SCRATCH))
		return -TDM_EINVAL;
	if ((err = maps_room(c)) != 0)
		return err;
	size_t mapped = page_round(capacity);
	if (mapped < capacity)
		return -TDM_EINVAL;
	/* Our view: address space only, chunks are mapped over it as they
	 * come (tdm_buffer_grow). */
	void *p = mmap(NULL, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -TDM_ENOMEM;
	err = client_request(c, TDM_MSG_BUF_RESERVE, &req, sizeof(req), TDM_MSG_BUF_RESERVE_REPLY,
	                     &r, sizeof(r), NULL);
	if (!err && !r.status && r.bytes != capacity)
		err = -TDM_EPROTO;
	if (err || r.status) {
		munmap(p, mapped);
		return err ? err : r.status;
	}
	c->maps[c->nmaps++] = (struct mapping){ r.handle, p, 0, mapped, 0, true };
	*handle = r.handle;
	*ptr = p;
	return 0;
}

TDM_API int tdm_kv_admit(tdm_client *c, tdm_buffer h, struct tdm_kv_admission *a)
{
	if (!c || !a)
		return -TDM_EINVAL;
	struct tdm_kv_admit_req req = { .handle = h,
		                        .tier = a->tier,
		                        .bytes_per_token = a->bytes_per_token,
		                        .context_tokens = a->context_tokens,
		                        .max_new_tokens = a->max_new_tokens };
	struct tdm_kv_admit_reply r;
	int err = client_request(c, TDM_MSG_KV_ADMIT, &req, sizeof(req), TDM_MSG_KV_ADMIT_REPLY, &r,
	                         sizeof(r), NULL);
	if (err)
		return err;
	if (r.tier > TDM_TIER_HOST)
		return -TDM_EPROTO;
	a->tier = r.tier;
	a->predicted_new_tokens = r.predicted_new_tokens;
	a->history = r.history;
	a->peak_bytes = r.peak_bytes;
	a->device_free_bytes = r.device_free_bytes;
	a->host_free_bytes = r.host_free_bytes;
	return r.status;
}

TDM_API int tdm_buffer_grow(tdm_client *c, tdm_buffer handle, size_t used)
{
	struct tdm_buf_grow_req req = { .handle = handle, .used = used };
	struct tdm_buf_grow_reply r;
	struct mapping *m = NULL;
	int fd = -1;

	if (!c)
		return -TDM_EINVAL;
	for (size_t i = 0; i < c->nmaps; i++)
		if (c->maps[i].handle == handle)
			m = &c->maps[i];
	if (!m)
		return -TDM_EHANDLE;
	if (!m->growable || used < m->bytes)
		return -TDM_EINVAL;
	if (used > m->mapped)
		return -TDM_ERANGE;
	int err = request_fd(c, TDM_MSG_BUF_GROW, &req, sizeof(req), TDM_MSG_BUF_GROW_REPLY, &r,
	                     sizeof(r), &r.status, &fd);
	if (err)
		return err;
	/* The new chunk must continue what we have, and be what it says. */
	if (r.used != used || (r.chunk_bytes != 0) != (fd >= 0) ||
	    (r.chunk_bytes && (r.chunk_off != m->backed || r.chunk_bytes > m->mapped - m->backed ||
	                       r.chunk_bytes % page_round(1))) ||
	    r.backed != m->backed + r.chunk_bytes || r.backed < used) {
		if (fd >= 0)
			close(fd);
		return -TDM_EPROTO;
	}
	if (fd >= 0) {
		if (!sealed_and_sized(fd, r.chunk_bytes)) {
			close(fd);
			return -TDM_EPEER;
		}
		void *at = (char *)m->ptr + m->backed;
		void *p = mmap(at, r.chunk_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		               fd, 0);
		close(fd);
		if (p != at)
			return -TDM_ENOMEM;
		m->backed += r.chunk_bytes;
	}
	m->bytes = used;
	return 0;
}

TDM_API int tdm_buffer_free(tdm_client *c, tdm_buffer handle)
{
	struct tdm_buf_free_req req = { .handle = handle };
	struct tdm_status_reply r;
	size_t i;

	if (!c)
		return -TDM_EINVAL;
	for (i = 0; i < c->nmaps && c->maps[i].handle != handle; i++)
		;
	if (i == c->nmaps)
		return -TDM_EHANDLE;
	int err = client_request(c, TDM_MSG_BUF_FREE, &req, sizeof(req), TDM_MSG_BUF_FREE_REPLY, &r,
	                         sizeof(r), NULL);
	munmap(c->maps[i].ptr, c->maps[i].mapped);
	c->maps[i] = c->maps[--c->nmaps];
	return err ? err : r.status;
}

/* ---- kernels ---- */

const struct kernel_sig *client_kernel_by_id(const tdm_client *c, tdm_kernel id)
{
	for (size_t i = 0; i < c->nkernels; i++)
		if (c->kernels[i].id == id)
			return &c->kernels[i];
	return NULL;
}

TDM_API int tdm_kernel_lookup(tdm_client *c, const char *name, tdm_kernel *out)
{
	struct tdm_kernel_lookup_req req = { { 0 } };
	struct tdm_kernel_lookup_reply r;

	if (!c || !name || !out || strlen(name) >= sizeof(req.name))
		return -TDM_EINVAL;
	for (size_t i = 0; i < c->nkernels; i++) {
		if (strcmp(c->kernels[i].name, name) == 0) {
			*out = c->kernels[i].id;
			return 0;
		}
	}
	strcpy(req.name, name);
	int err = client_request(c, TDM_MSG_KERNEL_LOOKUP, &req, sizeof(req), TDM_MSG_KERNEL_REPLY,
	                         &r, sizeof(r), NULL);
	if (err)
		return err;
	if (r.status)
		return r.status;
	if (r.nargs > TDM_MAX_ARGS || r.nscalars > TDM_MAX_SCALARS)
		return -TDM_EPROTO;
	struct kernel_sig *n = realloc(c->kernels, (c->nkernels + 1) * sizeof(*n));
	if (!n)
		return -TDM_ENOMEM;
	c->kernels = n;
	n[c->nkernels].id = r.kernel_id;
	strcpy(n[c->nkernels].name, name);
	n[c->nkernels].r = r;
	c->nkernels++;
	*out = r.kernel_id;
	return 0;
}
