/*
 * wake.c - the syscall side of sleeping and waking (see wake.h).
 */
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>

#include "internal.h"
#include "wake.h"

int shunt_bell_ring(int sock)
{
	char b = 'r';

	if (send(sock, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
		return 0;
	/* Full: rings are pending anyway.  Gone: the sleeper sees the hang-up. */
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EPIPE ||
	    errno == ECONNRESET)
		return 0;
	return -errno;
}

int shunt_bell_drain(int sock)
{
	char buf[64];
	ssize_t n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);

	if (n > 0)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	log_debug("bell %d drain: %s", sock, n == 0 ? "hang-up" : strerror(errno));
	return -ECONNRESET;
}

int shunt_bell_sleep(int sock)
{
	char buf[64];
	ssize_t n = recv(sock, buf, sizeof(buf), 0);

	/* One blocking recv() both sleeps and drains. */
	if (n > 0)
		return 1;
	if (n == 0)
		return -ECONNRESET;
	if (errno == EINTR)
		return -EINTR;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return -ECONNRESET;
	/* Someone who shares the file description made it non-blocking (a
	 * peer may hold it): then poll() sleeps and recv() drains. */
	struct pollfd p = { .fd = sock, .events = POLLIN | POLLRDHUP };
	if (poll(&p, 1, -1) < 0)
		return -errno;
	int rc = shunt_bell_drain(sock);
	/* Readable but nothing to read: another thread of ours drained it. */
	return rc == 0 ? 1 : rc;
}
