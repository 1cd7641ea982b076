/* A raw wire client, written from include/tandem/wire.h alone, for tests
 * that play a misbehaving client or a hostile local user: it speaks the
 * protocol without libtandem's checks. Functions return 0 (or a count) and
 * -1 on failure and never call cmocka, so forked attackers may use them. */
#ifndef TDM_TEST_SUPPORT_RAW_H
#define TDM_TEST_SUPPORT_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tandem.h"

struct tdmt_raw {
	int sock;
	int sq_bell; /* the eventfd we write to ring the daemon */
	int bell; /* the read end of the pipe the daemon wakes us on */
	void *ring;
	size_t ring_bytes;
	struct tdm_ring_header *hdr;
	struct tdm_sqe *sq;
	struct tdm_cqe *cq;
	uint32_t sq_entries, cq_entries;
	uint32_t sq_tail, cq_head;
	struct tdm_hello_reply hello;
};

/* A socket connected to path, with send and receive timeouts; -1 on error. */
int tdmt_raw_socket(const char *path, int timeout_ms);
int tdmt_raw_send_all(int fd, const void *p, size_t n);
/* One message: header + payload. */
int tdmt_raw_send(int fd, uint32_t type, const void *p, uint32_t len);
/* Receives one message: its header into *h, its payload into buf (at most
 * cap bytes; a longer one is an error), descriptors into fds. Returns the
 * number of descriptors, or -1 on EOF, error or timeout. */
int tdmt_raw_recv(int fd, struct tdm_msg_hdr *h, void *buf, uint32_t cap, int *fds, int max_fds);
/* Says hello on r->sock (already connected) as role and reads the reply
 * into r->hello; for an accepted client, maps the ring and keeps the bell.
 * Returns the hello status, or -1000 when the exchange failed. */
int tdmt_raw_hello(struct tdmt_raw *r, uint32_t role);
/* tdmt_raw_socket + tdmt_raw_hello. */
int tdmt_raw_connect(struct tdmt_raw *r, const char *path, uint32_t role, int timeout_ms);
void tdmt_raw_close(struct tdmt_raw *r);
/* Rings the daemon; tdmt_raw_publish publishes sq_tail first. */
int tdmt_raw_bell(struct tdmt_raw *r);
void tdmt_raw_publish(struct tdmt_raw *r);
/* Writes one entry when the submission ring has room (1), else 0. */
int tdmt_raw_try_put(struct tdmt_raw *r, const struct tdm_sqe *e);
/* A control request and its reply's status (the JSON text is dropped);
 * -1000 when the exchange failed. */
int tdmt_raw_control(int fd, uint32_t type);
/* The same with a payload and descriptors, keeping the reply's text
 * (malloc'd, NUL-terminated) in *text when text is not NULL. */
int tdmt_raw_control_ex(int fd, uint32_t type, const void *p, uint32_t len, const int *fds,
                        int nfds, char **text);
/* Kernel id by name, or -1. */
int64_t tdmt_raw_lookup(struct tdmt_raw *r, const char *name);

#endif
