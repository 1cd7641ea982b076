/* libtandem: the submission and completion rings, doorbells, waiting. */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "client/client_internal.h"
#include "common/cpu_relax.h"
#include "common/eventfd_ring.h"

#define PUBLISH_EVERY 64 /* entries: lets the daemon start on a large graph */
/* Spinning for a completion: the clock is read every SPIN_CLOCK_EVERY
 * pauses, and the core is offered every SPIN_YIELD_EVERY. A daemon worker on
 * the same core runs only when we yield: every 64 pauses (and clock reads)
 * was ~3 us of waiting per round trip before the worker even saw the graph. */
#define SPIN_CLOCK_EVERY 8
#define SPIN_YIELD_EVERY 16

uint64_t client_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The daemon watches every write, it never reads the counter (a full one
 * would take 2^64 rings); nothing to do about a failure here: the daemon
 * also looks at the ring when it polls. */
static void ring_bell(int fd)
{
	(void)eventfd_ring(fd);
}

/* Reads what the daemon rang (our end of the pipe is non-blocking, unless
 * we changed it); false when the daemon's end is closed. */
static bool drain_bell(int fd)
{
	char buf[64];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0 && (size_t)n < sizeof(buf))
			return true; /* all there was */
		if (n > 0)
			continue;
		return n < 0 && (errno == EAGAIN || errno == EINTR);
	}
}

void ring_publish(tdm_client *c, bool doorbell)
{
	if (c->sq_published != c->sq_tail) {
		__atomic_store_n(&c->hdr->sq_tail, c->sq_tail, __ATOMIC_SEQ_CST);
		c->sq_published = c->sq_tail;
	}
	/* A polling daemon sees the tail by itself; it clears the flag before
	 * it stops looking, and looks once more after (see server_poll_spin). */
	if (doorbell &&
	    !(__atomic_load_n(&c->hdr->daemon_flags, __ATOMIC_SEQ_CST) & TDM_DAEMON_POLLING))
		ring_bell(c->sq_bell);
}

static bool ring_has_space(tdm_client *c, void *arg)
{
	(void)arg;
	uint32_t head = __atomic_load_n(&c->hdr->sq_head, __ATOMIC_ACQUIRE);
	return c->sq_tail - head < c->sq_entries;
}

int ring_put(tdm_client *c, const struct tdm_sqe *e)
{
	while (!ring_has_space(c, NULL)) {
		ring_publish(c, true);
		/* Ask to be rung when the daemon takes entries (set before
		 * ring_wait_progress looks once more and sleeps). */
		__atomic_fetch_or(&c->hdr->client_flags, TDM_CLIENT_SQ_WAIT, __ATOMIC_SEQ_CST);
		int err = ring_wait_progress(c, 0, ring_has_space, NULL);
		__atomic_fetch_and(&c->hdr->client_flags, ~TDM_CLIENT_SQ_WAIT, __ATOMIC_SEQ_CST);
		if (err)
			return err;
	}
	memcpy(&c->sq[c->sq_tail & (c->sq_entries - 1)], e, sizeof(*e));
	c->sq_tail++;
	if (c->sq_tail - c->sq_published >= PUBLISH_EVERY)
		ring_publish(c, false);
	return 0;
}

static struct tdm_graph *find_inflight(tdm_client *c, uint64_t cookie)
{
	for (struct tdm_graph *g = c->inflight; g; g = g->next)
		if (g->cookie == cookie)
			return g;
	return NULL;
}

static void dispatch(tdm_client *c, const struct tdm_cqe *e)
{
	struct tdm_graph *g;

	if (e->op != TDM_CQE_TASK_INFO && e->op != TDM_CQE_GRAPH_DONE)
		return; /* TDM_CQE_ERROR: an entry outside any graph; nothing waits */
	g = find_inflight(c, e->cookie);
	if (!g)
		return;
	if (e->op == TDM_CQE_TASK_INFO) {
		if (g->info && e->task_index < g->ntasks)
			g->info[e->task_index] = (struct tdm_task_info){
				.status = e->status,
				.device = e->device,
				.queued_ns = e->queued_ns,
				.start_ns = e->start_ns,
				.end_ns = e->end_ns,
				.predicted_ns = e->predicted_ns,
				.predicted_spread_ns = e->predicted_spread_ns,
			};
		return;
	}
	g->done = true;
	g->inflight = false;
	g->status = e->status;
	g->reject_task = e->task_index;
	g->reject_field = e->detail;
	if (g->prev)
		g->prev->next = g->next;
	else
		c->inflight = g->next;
	if (g->next)
		g->next->prev = g->prev;
	g->next = g->prev = NULL;
}

int ring_reap(tdm_client *c)
{
	uint32_t tail = __atomic_load_n(&c->hdr->cq_tail, __ATOMIC_ACQUIRE);
	if (tail - c->cq_head > c->cq_entries)
		return client_lost(c); /* a daemon that lies about the ring */
	if (tail == c->cq_head)
		return c->broken ? client_lost(c) : 0;
	while (c->cq_head != tail) {
		struct tdm_cqe e = c->cq[c->cq_head & (c->cq_entries - 1)];
		c->cq_head++;
		dispatch(c, &e);
	}
	__atomic_store_n(&c->hdr->cq_head, c->cq_head, __ATOMIC_SEQ_CST);
	/* Completions waiting for room: tell the daemon we made some. */
	if (__atomic_load_n(&c->hdr->daemon_flags, __ATOMIC_SEQ_CST) & TDM_DAEMON_CQ_OVERFLOW)
		ring_bell(c->sq_bell);
	return 0;
}

static bool socket_closed(tdm_client *c)
{
	char b;
	ssize_t n = recv(c->sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

int ring_wait_init(tdm_client *c)
{
	const int fds[] = { c->bell, c->sock, c->daemon_pidfd };
	c->wait_ep = epoll_create1(EPOLL_CLOEXEC);
	c->wait_timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	c->timer_at = 0;
	if (c->wait_ep < 0 || c->wait_timer < 0)
		return -TDM_ESYS;
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[i] };
		if (fds[i] >= 0 && epoll_ctl(c->wait_ep, EPOLL_CTL_ADD, fds[i], &ev) != 0)
			return -TDM_ESYS;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = c->wait_timer };
	return epoll_ctl(c->wait_ep, EPOLL_CTL_ADD, c->wait_timer, &ev) ? -TDM_ESYS : 0;
}

void ring_wait_fini(tdm_client *c)
{
	if (c->wait_ep >= 0)
		close(c->wait_ep);
	if (c->wait_timer >= 0)
		close(c->wait_timer);
	c->wait_ep = c->wait_timer = -1;
}

/* Makes the wait timer fire by deadline_ns: kept when it is armed for that
 * or sooner (it then wakes us early and we look again). False when it
 * cannot be armed. */
static bool arm_timer(tdm_client *c, uint64_t deadline_ns)
{
	if (c->timer_at && c->timer_at <= deadline_ns)
		return true;
	struct itimerspec t = { .it_value = { .tv_sec = (time_t)(deadline_ns / 1000000000u),
		                              .tv_nsec = (long)(deadline_ns % 1000000000u) } };
	if (timerfd_settime(c->wait_timer, TFD_TIMER_ABSTIME, &t, NULL) != 0)
		return false;
	c->timer_at = deadline_ns;
	return true;
}

/* Sleeps until the daemon rings, goes away, or the timer fires (a wait
 * until deadline_ns, 0: none); reads what woke it. The daemon's process is
 * watched too: its end means "daemon lost" even where a descriptor of ours
 * outlives it. */
static void sleep_on_bell(tdm_client *c, uint64_t deadline_ns, uint64_t now)
{
	struct epoll_event evs[4];
	int timeout_ms = -1;
	if (deadline_ns && !arm_timer(c, deadline_ns))
		timeout_ms = (int)((deadline_ns - now + 999999) / 1000000);
	int n = epoll_wait(c->wait_ep, evs, 4, timeout_ms);
	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd;
		bool in = evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR);
		if (fd == c->bell && in && !drain_bell(c->bell))
			c->broken = true;
		else if (fd == c->sock && in && socket_closed(c))
			c->broken = true;
		else if (fd == c->daemon_pidfd)
			c->broken = c->daemon_gone = true;
		else if (fd == c->wait_timer) {
			uint64_t fired;
			if (read(c->wait_timer, &fired, sizeof(fired)) < 0 && errno != EAGAIN)
				c->broken = true; /* never: a timerfd read of 8 bytes */
			c->timer_at = 0;
		}
	}
}

int ring_wait_progress(tdm_client *c, uint64_t deadline_ns, bool (*ready)(tdm_client *, void *),
                       void *arg)
{
	for (;;) {
		int err = ring_reap(c);
		if (err)
			return err;
		if (ready(c, arg))
			return 0;
		/* Spin: the answer is often a few microseconds away. */
		if (c->spin_us) {
			uint64_t until = client_now_ns() + (uint64_t)c->spin_us * 1000u;
			unsigned iter = 0;
			while (__atomic_load_n(&c->hdr->cq_tail, __ATOMIC_ACQUIRE) == c->cq_head &&
			       !ready(c, arg)) {
				cpu_relax();
				if (++iter % SPIN_CLOCK_EVERY)
					continue;
				if (client_now_ns() >= until)
					break;
				if (iter % SPIN_YIELD_EVERY == 0)
					sched_yield(); /* the daemon may share our core */
			}
			if (__atomic_load_n(&c->hdr->cq_tail, __ATOMIC_ACQUIRE) != c->cq_head ||
			    ready(c, arg))
				continue;
		}
		/* Sleep: say so, then look once more before blocking, so a
		 * completion posted in between is not missed. */
		__atomic_fetch_or(&c->hdr->client_flags, TDM_CLIENT_SLEEPING, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&c->hdr->cq_tail, __ATOMIC_SEQ_CST) == c->cq_head &&
		    !ready(c, arg)) {
			uint64_t now = deadline_ns ? client_now_ns() : 0;
			if (deadline_ns && now >= deadline_ns) {
				__atomic_fetch_and(&c->hdr->client_flags, ~TDM_CLIENT_SLEEPING,
				                   __ATOMIC_SEQ_CST);
				return -TDM_ETIMEDOUT;
			}
			sleep_on_bell(c, deadline_ns, now);
		}
		__atomic_fetch_and(&c->hdr->client_flags, ~TDM_CLIENT_SLEEPING, __ATOMIC_SEQ_CST);
		if (c->broken) {
			ring_reap(c); /* what the daemon posted before it went counts */
			return ready(c, arg) ? 0 : client_lost(c);
		}
		if (deadline_ns && client_now_ns() >= deadline_ns && !ready(c, arg)) {
			ring_reap(c);
			return ready(c, arg) ? 0 : -TDM_ETIMEDOUT;
		}
	}
}
