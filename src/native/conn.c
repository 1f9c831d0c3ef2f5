/*
 * conn.c - the native API's data calls: each is the core's, with the
 * connection's own doorbells and SHUNT_NONBLOCK as a deadline.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "clock.h"
#include "internal.h"
#include "medium.h"
#include "native.h"
#include "sockbell.h"
#include "sys.h"

#include <shunt.h>

static int64_t deadline_of(int flags)
{
	return flags & SHUNT_NONBLOCK ? 0 : SHUNT_NEVER;
}

SHUNT_EXPORT ssize_t shunt_send(struct shunt_conn *c, const void *buf, size_t len, int flags)
{
	return shunt_end_send(&c->e, &c->bell, buf, len, deadline_of(flags));
}

SHUNT_EXPORT ssize_t shunt_recv(struct shunt_conn *c, void *buf, size_t len, int flags)
{
	return shunt_end_recv(&c->e, &c->bell, buf, len, deadline_of(flags));
}

SHUNT_EXPORT ssize_t shunt_send_reserve(struct shunt_conn *c, void **buf, size_t min,
					int flags)
{
	return shunt_end_reserve(&c->e, &c->bell, buf, min, deadline_of(flags));
}

SHUNT_EXPORT int shunt_send_commit(struct shunt_conn *c, size_t len)
{
	return shunt_end_commit(&c->e, &c->bell, len);
}

SHUNT_EXPORT ssize_t shunt_recv_peek(struct shunt_conn *c, const void **buf, int flags)
{
	return shunt_end_peek(&c->e, &c->bell, buf, deadline_of(flags));
}

SHUNT_EXPORT int shunt_recv_release(struct shunt_conn *c, size_t len)
{
	return shunt_end_release(&c->e, &c->bell, len);
}

SHUNT_EXPORT ssize_t shunt_readable(struct shunt_conn *c)
{
	return shunt_end_readable(&c->e);
}

SHUNT_EXPORT int shunt_shutdown(struct shunt_conn *c, int how)
{
	return shunt_end_shutdown(&c->e, &c->bell, how);
}

SHUNT_EXPORT int shunt_fd(struct shunt_conn *c)
{
	int fd = atomic_load_explicit(&c->pollfd, memory_order_acquire);

	if (fd >= 0)
		return fd;
	/* One epoll set holds both doorbells, which also report the peer's
	 * hang-up.  Made on first use: most users never ask. */
	fd = shunt__hide_fd(sys_epoll_create1(EPOLL_CLOEXEC));
	if (fd < 0)
		return fd;
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
		int rc = sys_epoll_ctl(fd, EPOLL_CTL_ADD, c->bell.fd[i], &ev);
		if (rc < 0) {
			sys_close(fd);
			return rc;
		}
	}
	int expected = -1;
	if (!atomic_compare_exchange_strong(&c->pollfd, &expected, fd)) {
		sys_close(fd); /* another thread won the race */
		return expected;
	}
	return fd;
}

SHUNT_EXPORT int shunt_get_stats(const struct shunt_conn *c, struct shunt_stats *out)
{
	out->bytes_sent = c->e.bytes_sent;
	out->bytes_received = c->e.bytes_received;
	out->wakeups = atomic_load_explicit(&c->e.wakeups, memory_order_relaxed);
	out->sleeps = atomic_load_explicit(&c->e.sleeps, memory_order_relaxed);
	out->spins = atomic_load_explicit(&c->e.spins, memory_order_relaxed);
	out->spin_hits = atomic_load_explicit(&c->e.spin_hits, memory_order_relaxed);
	return 0;
}

SHUNT_EXPORT int shunt_set_spin(struct shunt_conn *c, int spin_us)
{
	shunt_spin_init(&c->e.spin, spin_us);
	c->e.spin.forced = 1; /* the program knows its CPUs: as it asked */
	return 0;
}

SHUNT_EXPORT size_t shunt_ring_size(const struct shunt_conn *c)
{
	return (size_t)c->e.seg.cap;
}

static void close_fd(int fd)
{
	if (fd >= 0)
		sys_close(fd);
}

static void conn_free(struct shunt_conn *c)
{
	shunt_unmap(&c->e.seg);
	close_fd(c->bell.fd[0]);
	close_fd(c->bell.fd[1]);
	close_fd(atomic_load(&c->pollfd));
	free(c);
}

SHUNT_EXPORT int shunt_close(struct shunt_conn *c)
{
	if (!c)
		return 0;
	shunt_end_close(&c->e, &c->bell, SHUNT_CLOSE_FIN);
	conn_free(c);
	return 0;
}

int shunt__conn_new(struct shunt_conn **out, int side, struct shunt_seg *seg,
		    int bell_rd, int bell_wr, int spin_us)
{
	struct shunt_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		shunt_unmap(seg);
		close_fd(bell_rd);
		close_fd(bell_wr);
		return -ENOMEM;
	}
	shunt_end_init(&c->e, seg, side, spin_us, 0);
	c->bell = (struct shunt_bell){ &shunt_sockbell_ops, { bell_rd, bell_wr }, NULL };
	atomic_init(&c->pollfd, -1);
	*out = c;
	return 0;
}
