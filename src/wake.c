/*
 * wake.c - the syscall side of sleeping and waking (see wake.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "wake.h"

int shunt_doorbell_new(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int shunt_doorbell_ring(int efd)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is saturated: the doorbell is rung anyway. */
	if (write(efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return -errno;
	return 0;
}

void shunt_doorbell_drain(int efd)
{
	uint64_t v;
	ssize_t rc = read(efd, &v, sizeof(v));

	(void)rc; /* EAGAIN: nothing pending, which is fine too */
}

int shunt_doorbell_sleep(int efd, int watch_fd, int timeout_ms)
{
	struct pollfd p[2] = {
		{ .fd = efd, .events = POLLIN },
		{ .fd = watch_fd, .events = POLLIN | POLLRDHUP },
	};
	int rc = poll(p, watch_fd >= 0 ? 2 : 1, timeout_ms);
	int out = 0;

	if (rc < 0)
		return errno == EINTR ? -EINTR : -errno;
	if (p[0].revents) {
		shunt_doorbell_drain(efd);
		out |= SHUNT_SLEPT_RUNG;
	}
	if (watch_fd >= 0 && p[1].revents)
		out |= SHUNT_SLEPT_WATCH;
	return out;
}
