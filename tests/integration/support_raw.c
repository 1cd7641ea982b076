/* The raw wire client (support_raw.h). */
#include "support_raw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int tdmt_raw_socket(const char *path, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int tdmt_raw_send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

int tdmt_raw_send(int fd, uint32_t type, const void *p, uint32_t len)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	if (tdmt_raw_send_all(fd, &h, sizeof(h)))
		return -1;
	return len ? tdmt_raw_send_all(fd, p, len) : 0;
}

int tdmt_raw_recv(int fd, struct tdm_msg_hdr *h, void *buf, uint32_t cap, int *fds, int max_fds)
{
	union {
		char b[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { h, sizeof(*h) };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b)
	};
	int nfds = 0;
	ssize_t k;
	do
		k = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | MSG_WAITALL);
	while (k < 0 && errno == EINTR);
	if (k != (ssize_t)sizeof(*h))
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int got[4];
		memcpy(got, CMSG_DATA(cm), (size_t)(n > 4 ? 4 : n) * sizeof(int));
		for (int i = 0; i < n && i < 4; i++) {
			if (nfds < max_fds)
				fds[nfds++] = got[i];
			else
				close(got[i]);
		}
	}
	if (h->length > cap)
		goto fail;
	char *c = buf;
	for (uint32_t left = h->length; left;) {
		k = recv(fd, c, left, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			goto fail;
		c += k;
		left -= (uint32_t)k;
	}
	return nfds;
fail:
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return -1;
}

int tdmt_raw_hello(struct tdmt_raw *r, uint32_t role)
{
	struct tdm_hello h = { TDM_WIRE_MAGIC, TDM_WIRE_VERSION, role, 0 };
	struct tdm_msg_hdr rh;
	int fds[4];
	r->sq_bell = r->bell = -1;
	r->ring = NULL;
	if (tdmt_raw_send(r->sock, TDM_MSG_HELLO, &h, sizeof(h)))
		return -1000;
	int nfds = tdmt_raw_recv(r->sock, &rh, &r->hello, sizeof(r->hello), fds, 4);
	if (nfds < 0 || rh.type != TDM_MSG_HELLO_REPLY || rh.length != sizeof(r->hello))
		return -1000;
	if (r->hello.status || role != TDM_ROLE_CLIENT) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return r->hello.status;
	}
	if (nfds != 3) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return -1000;
	}
	const struct tdm_hello_reply *hr = &r->hello;
	r->ring = mmap(NULL, hr->ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	r->sq_bell = fds[1];
	r->bell = fds[2];
	if (r->ring == MAP_FAILED) {
		r->ring = NULL;
		return -1000;
	}
	r->ring_bytes = hr->ring_bytes;
	r->hdr = r->ring;
	r->sq = (struct tdm_sqe *)((char *)r->ring + hr->sq_offset);
	r->cq = (struct tdm_cqe *)((char *)r->ring + hr->cq_offset);
	r->sq_entries = hr->sq_entries;
	r->cq_entries = hr->cq_entries;
	r->sq_tail = r->cq_head = 0;
	return 0;
}

int tdmt_raw_connect(struct tdmt_raw *r, const char *path, uint32_t role, int timeout_ms)
{
	memset(r, 0, sizeof(*r));
	r->sq_bell = r->bell = -1;
	r->sock = tdmt_raw_socket(path, timeout_ms);
	if (r->sock < 0)
		return -1000;
	return tdmt_raw_hello(r, role);
}

void tdmt_raw_close(struct tdmt_raw *r)
{
	if (r->ring)
		munmap(r->ring, r->ring_bytes);
	if (r->sq_bell >= 0)
		close(r->sq_bell);
	if (r->bell >= 0)
		close(r->bell);
	if (r->sock >= 0)
		close(r->sock);
	memset(r, 0, sizeof(*r));
	r->sock = r->sq_bell = r->bell = -1;
}

int tdmt_raw_bell(struct tdmt_raw *r)
{
	uint64_t one = 1;
	return write(r->sq_bell, &one, sizeof(one)) == sizeof(one) || errno == EAGAIN ? 0 : -1;
}

void tdmt_raw_publish(struct tdmt_raw *r)
{
	__atomic_store_n(&r->hdr->sq_tail, r->sq_tail, __ATOMIC_SEQ_CST);
	tdmt_raw_bell(r);
}

int tdmt_raw_try_put(struct tdmt_raw *r, const struct tdm_sqe *e)
{
	if (r->sq_tail - __atomic_load_n(&r->hdr->sq_head, __ATOMIC_ACQUIRE) >= r->sq_entries)
		return 0;
	memcpy(&r->sq[r->sq_tail & (r->sq_entries - 1)], e, sizeof(*e));
	r->sq_tail++;
	return 1;
}

/* Header and payload in one sendmsg, the descriptors with them. */
static int send_with_fds(int fd, uint32_t type, const void *p, uint32_t len, const int *fds,
                         int nfds)
{
	struct tdm_msg_hdr h = { .type = type, .length = len };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)p, len } };
	union {
		char b[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	if (nfds > 4)
		return -1;
	if (nfds) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.b;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
	}
	return sendmsg(fd, &m, MSG_NOSIGNAL) == (ssize_t)(sizeof(h) + len) ? 0 : -1;
}

int tdmt_raw_control_ex(int fd, uint32_t type, const void *p, uint32_t len, const int *fds,
                        int nfds, char **text)
{
	struct tdm_msg_hdr h;
	int32_t status;
	if (text)
		*text = NULL;
	if (send_with_fds(fd, type, p, len, fds, nfds))
		return -1000;
	char *buf = malloc(TDM_CTL_REPLY_MAX + 1);
	if (!buf)
		return -1000;
	int n = tdmt_raw_recv(fd, &h, buf, TDM_CTL_REPLY_MAX, NULL, 0);
	int rc = -1000;
	if (n >= 0 && h.type == TDM_MSG_CTL_REPLY && h.length >= sizeof(status)) {
		memcpy(&status, buf, sizeof(status));
		rc = status;
		if (text) {
			buf[h.length] = '\0';
			*text = strdup(buf + sizeof(status));
		}
	}
	free(buf);
	return rc;
}

int tdmt_raw_control(int fd, uint32_t type)
{
	return tdmt_raw_control_ex(fd, type, NULL, 0, NULL, 0, NULL);
}

int64_t tdmt_raw_lookup(struct tdmt_raw *r, const char *name)
{
	struct tdm_kernel_lookup_req req = { { 0 } };
	struct tdm_kernel_lookup_reply rep;
	struct tdm_msg_hdr h;
	snprintf(req.name, sizeof(req.name), "%s", name);
	if (tdmt_raw_send(r->sock, TDM_MSG_KERNEL_LOOKUP, &req, sizeof(req)) ||
	    tdmt_raw_recv(r->sock, &h, &rep, sizeof(rep), NULL, 0) != 0 ||
	    h.type != TDM_MSG_KERNEL_REPLY || h.length != sizeof(rep) || rep.status)
		return -1;
	return rep.kernel_id;
}
