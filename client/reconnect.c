/* libtandem: connecting again after the daemon was lost, with bounded
 * exponential backoff and jitter (tandem.h: struct tdm_backoff). */
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "client/client_internal.h"
#include "common/xorshift.h"

#define BACKOFF_INITIAL_MS 10
#define BACKOFF_MAX_MS 1000
#define BACKOFF_TOTAL_MS 30000

/* The errors of a daemon that is not there yet, or still going away. */
static bool transient(int err)
{
	return err == -TDM_ECONNECT || err == -TDM_EDISCONNECTED || err == -TDM_EDAEMON ||
	       err == -TDM_ESHUTDOWN || err == -TDM_EBUSY;
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000l };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

TDM_API int tdm_connect_backoff(const struct tdm_connect_opts *opts, const struct tdm_backoff *b,
                                tdm_client **out)
{
	uint64_t initial = b && b->initial_ms ? b->initial_ms : BACKOFF_INITIAL_MS;
	uint64_t cap = b && b->max_ms ? b->max_ms : BACKOFF_MAX_MS;
	uint64_t total = b && b->total_ms ? b->total_ms : BACKOFF_TOTAL_MS;
	uint64_t start = client_now_ns(), delay = initial < cap ? initial : cap;
	/* Seeded per process and call: clients of one restart spread out. */
	uint64_t seed = start ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)&start;

	for (;;) {
		int err = tdm_connect(opts, out);
		if (err == 0 || !transient(err))
			return err;
		uint64_t spent_ms = (client_now_ns() - start) / 1000000u;
		if (spent_ms >= total)
			return err;
		uint64_t pause = delay / 2 + xorshift64s(&seed) % (delay - delay / 2 + 1);
		if (pause > total - spent_ms)
			pause = total - spent_ms;
		sleep_ms((uint32_t)pause);
		delay = delay * 2 < cap ? delay * 2 : cap;
	}
}

TDM_API int tdm_reconnect(tdm_client **c, const struct tdm_backoff *b)
{
	if (!c || !*c)
		return -TDM_EINVAL;
	const tdm_client *old = *c;
	struct tdm_connect_opts opts = { .socket_path = old->path,
		                         .spin_us = old->spin_us,
		                         .daemon_uid = old->daemon_uid };
	tdm_client *fresh;
	int err = tdm_connect_backoff(&opts, b, &fresh);
	if (err)
		return err;
	tdm_disconnect(*c);
	*c = fresh;
	return 0;
}
