/* Ringing an eventfd: the one way the engine wakes a worker, the event
 * loop wakes itself and a client rings the daemon. Header-only (client/
 * uses it too, see common/csr.h). */
#ifndef TDM_COMMON_EVENTFD_RING_H
#define TDM_COMMON_EVENTFD_RING_H

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

/* Adds 1 to the eventfd's counter. 0, or -errno. A full counter (EAGAIN on
 * a non-blocking eventfd) is not an error: whoever waits on it wakes
 * anyway. */
static inline int eventfd_ring(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN ? -errno : 0;
}

#endif
