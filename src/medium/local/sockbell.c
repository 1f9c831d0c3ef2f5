/*
 * sockbell.c - doorbells made of UNIX stream sockets (the native API's).
 *
 * Each direction of waiting has its own socket, so that a sending and a
 * receiving thread of one end never consume each other's rings: fd[0]
 * rings READ waits, fd[1] WRITE waits.  A ring is one byte.  Rings and
 * drains pass MSG_DONTWAIT, so no flag the peer sets on a file description
 * it shares can make this side block (an eventfd would: its writer blocks
 * when a peer has cleared O_NONBLOCK and filled the counter).  A blocking
 * sleep is one blocking recv() on our own end, which sleeps and drains at
 * once; a hang-up (the peer's process is gone) ends it at once.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "bell.h"
#include "clock.h"
#include "internal.h"
#include "seg.h"
#include "sockbell.h"
#include "sys.h"
#include "wake.h"

static int sock_of(const struct shunt_bell *b, uint32_t bits)
{
	return b->fd[bits & SHUNT_WAIT_READ ? 0 : 1];
}

static int ring_one(int fd)
{
	char c = 'r';
	long n = sys_send(fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);

	/* Full: rings are pending anyway.  Gone: the sleeper sees the hang-up. */
	if (n == 1 || n == -EAGAIN || n == -EPIPE || n == -ECONNRESET)
		return 0;
	return (int)n;
}

static int sock_ring(struct shunt_bell *b, uint32_t bits)
{
	int rc = 0;

	if (bits & SHUNT_WAIT_READ)
		rc = ring_one(b->fd[0]);
	if ((bits & SHUNT_WAIT_WRITE) && rc == 0)
		rc = ring_one(b->fd[1]);
	return rc;
}

static int drain_one(int fd)
{
	char buf[64];
	long n = sys_recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n > 0)
		return 1;
	if (n == -EAGAIN || n == -EINTR)
		return 0;
	return -ECONNRESET;
}

static int sock_drain(struct shunt_bell *b, uint32_t bits)
{
	int r = 0, w = 0;

	if (bits & SHUNT_WAIT_READ)
		r = drain_one(b->fd[0]);
	if (bits & SHUNT_WAIT_WRITE)
		w = drain_one(b->fd[1]);
	return r < 0 || w < 0 ? -ECONNRESET : r | w;
}

/* Sleep in poll() (with a deadline, or when someone sharing the file
 * description made it non-blocking), then drain. */
static int poll_sleep(int fd, int64_t deadline)
{
	struct timespec ts;
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	int rc = sys_ppoll(&p, 1, shunt_left(deadline, &ts));

	if (rc < 0)
		return rc;
	if (rc == 0)
		return -EAGAIN;
	rc = drain_one(fd);
	/* Readable but nothing to read: another thread of ours drained it. */
	return rc < 0 ? rc : 0;
}

static int sock_sleep(struct shunt_bell *b, uint32_t bits, int64_t deadline)
{
	int fd = sock_of(b, bits);
	char buf[64];

	if (deadline != SHUNT_NEVER)
		return poll_sleep(fd, deadline);
	long n = sys_recv(fd, buf, sizeof(buf), 0); /* sleeps and drains at once */
	if (n > 0)
		return 0;
	if (n == 0)
		return -ECONNRESET;
	if (n == -EINTR)
		return -EINTR;
	if (n != -EAGAIN)
		return -ECONNRESET;
	return poll_sleep(fd, SHUNT_NEVER);
}

static int sock_alive(struct shunt_bell *b)
{
	/* poll() consumes nothing: a thread asleep on the bell keeps its ring. */
	struct pollfd p = { .fd = b->fd[1], .events = 0 };
	struct timespec zero = { 0, 0 };

	if (sys_ppoll(&p, 1, &zero) > 0 && (p.revents & (POLLHUP | POLLERR)))
		return -ECONNRESET;
	return 0;
}

const struct shunt_bell_ops shunt_sockbell_ops = {
	.ring = sock_ring,
	.sleep = sock_sleep,
	.drain = sock_drain,
	.alive = sock_alive,
};
