/*
 * io.c - the data calls on an upgraded fd, with the errno semantics of TCP.
 *
 * A blocking call with no timeout lets the core block (it spins, then
 * sleeps on a doorbell, and returns -EINTR to a signal that does not restart
 * calls, as a socket read does).  A non-blocking call passes SHUNT_NONBLOCK.
 * A call with SO_RCVTIMEO/SO_SNDTIMEO waits in poll() on the doorbell, so
 * that the timeout is kept.  One thread sends and one receives at a time
 * (the core's rule), so each direction has a mutex.
 */
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "shim.h"

#include <shunt.h>

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wait for `events` until deadline_us: 0 to retry, -EAGAIN when the time is
 * up (what a socket timeout returns), -EINTR. */
static int wait_until(struct shim_sock *s, int events, int64_t deadline_us)
{
	if (shunt__conn_poll(s->c, events, SHUNT_ARM_DRAIN))
		return 0;
	int64_t left = deadline_us - mono_us();
	if (left <= 0)
		return -EAGAIN;
	struct pollfd p = { .fd = shunt__conn_bell(s->c, events == POLLOUT), .events = POLLIN };
	struct timespec ts = { left / 1000000, (left % 1000000) * 1000 };
	if (REAL(ppoll)(&p, 1, &ts, NULL) < 0)
		return -errno;
	return 0;
}

/* How a call waits: flags for the core, and a deadline if timed. */
struct how {
	int nb;            /* never wait */
	int core_flags;    /* SHUNT_NONBLOCK when we wait ourselves */
	int64_t deadline;  /* 0: none */
};

/* The program did I/O: readiness may have changed (wait.c re-reads it). */
static void touched(struct shim_sock *s)
{
	atomic_fetch_add_explicit(&s->gen, 1, memory_order_relaxed);
}

static struct how how_of(struct shim_sock *s, int flags, int tx)
{
	struct how h = { .nb = (flags & MSG_DONTWAIT) || atomic_load(&s->nonblock) };
	int64_t t = atomic_load(tx ? &s->sndtimeo_us : &s->rcvtimeo_us);

	if (!h.nb && t > 0)
		h.deadline = mono_us() + t;
	h.core_flags = h.nb || h.deadline ? SHUNT_NONBLOCK : 0;
	return h;
}

/* After -EAGAIN from the core: wait if this call may, 0 to retry. */
static int may_wait(struct shim_sock *s, const struct how *h, int events)
{
	if (h->nb)
		return -EAGAIN;
	if (h->deadline)
		return wait_until(s, events, h->deadline);
	return 0; /* the core waited already */
}

static ssize_t peek(struct shim_sock *s, void *buf, size_t len, const struct how *h)
{
	for (;;) {
		const void *p;
		ssize_t n = shunt_recv_peek(s->c, &p, h->core_flags);
		if (n > 0) {
			n = (ssize_t)SHUNT_MIN((size_t)n, len);
			if (n)
				memcpy(buf, p, (size_t)n);
			return n;
		}
		if (n != -EAGAIN)
			return n;
		int rc = may_wait(s, h, POLLIN);
		if (rc < 0)
			return rc;
	}
}

static ssize_t recv_locked(struct shim_sock *s, void *buf, size_t len, int flags,
			   const struct how *h)
{
	size_t done = 0;

	if (flags & MSG_OOB)
		return -EINVAL; /* no urgent data ever arrives here */
	/* A zero-length read still waits for a byte (or end of stream), as
	 * TCP's does: a peek of nothing. */
	if (len == 0 || (flags & MSG_PEEK))
		return peek(s, buf, len, h);
	for (;;) {
		ssize_t n = shunt_recv(s->c, (char *)buf + done, len - done, h->core_flags);
		if (n > 0) {
			done += (size_t)n;
			if (!(flags & MSG_WAITALL) || done == len)
				return (ssize_t)done;
			continue;
		}
		if (n == 0)
			return (ssize_t)done;
		if (n == -EAGAIN)
			n = may_wait(s, h, POLLIN);
		if (n < 0)
			return done ? (ssize_t)done : n;
	}
}

/*
 * The ring is at its end (end of stream, or a reset).  A peer program that
 * wrote with stdio sent those bytes down its TCP socket, out of our reach
 * (README, Limitations); deliver any that arrived before saying so.  An
 * upgraded peer never writes there, so this is one recv() at the end.
 */
static ssize_t tcp_leftover(int fd, void *buf, size_t len, int flags, ssize_t end)
{
	if ((end != 0 && end != -ECONNRESET) || len == 0)
		return end;
	ssize_t n = REAL(recvfrom)(fd, buf, len, (flags & MSG_PEEK) | MSG_DONTWAIT, NULL, NULL);
	return n > 0 ? n : end;
}

ssize_t shim_recv(struct shim_sock *s, int fd, void *buf, size_t len, int flags)
{
	struct how h = how_of(s, flags, 0);

	pthread_mutex_lock(&s->rx_mu);
	ssize_t n = recv_locked(s, buf, len, flags, &h);
	pthread_mutex_unlock(&s->rx_mu);
	touched(s);
	n = tcp_leftover(fd, buf, len, flags, n);
	/* TCP reports a reset once; after that the socket reads end of stream. */
	if (n == -ECONNRESET && atomic_exchange(&s->reset_told, 1))
		n = 0;
	if (n <= 0 && n != -EAGAIN && len)
		log_debug("recv of %zu bytes: %s", len, n ? strerror((int)-n) : "end of stream");
	return n;
}

/* EPIPE raises SIGPIPE, as on a socket, unless MSG_NOSIGNAL. */
static ssize_t send_error(ssize_t rc, int flags)
{
	if (rc == -ECONNRESET)
		rc = -EPIPE; /* the peer is gone: TCP reports that as EPIPE after its RST */
	if (rc == -EPIPE && !(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	return rc;
}

static ssize_t send_locked(struct shim_sock *s, const void *buf, size_t len, int flags,
			   const struct how *h)
{
	size_t done = 0;

	if (flags & MSG_OOB)
		return -EOPNOTSUPP;
	for (;;) {
		ssize_t n = shunt_send(s->c, (const char *)buf + done, len - done,
				       h->core_flags);
		if (n >= 0) {
			done += (size_t)n;
			if (done == len || !h->deadline)
				return (ssize_t)done;
			continue;
		}
		if (n == -EAGAIN)
			n = may_wait(s, h, POLLOUT);
		if (n < 0)
			return done ? (ssize_t)done : send_error(n, flags);
	}
}

/* A send into free space never looks at the doorbells, so it would not see
 * a peer that died, or closed its last copy in another process (a last close
 * in a process of its own marks the segment, which needs no syscall to see):
 * look, with a poll(), at most every 100 ms.  Once a millisecond cost nginx
 * with 256 connections a third of its rate: each connection sends only every
 * few milliseconds, so nearly every send made the syscall. */
#define ALIVE_CHECK_NS 100000000

static void check_peer(struct shim_sock *s)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	if (now - atomic_load_explicit(&s->alive_ns, memory_order_relaxed) < ALIVE_CHECK_NS)
		return;
	atomic_store_explicit(&s->alive_ns, now, memory_order_relaxed);
	shunt__conn_check_peer(s->c);
}

ssize_t shim_send(struct shim_sock *s, const void *buf, size_t len, int flags)
{
	struct how h = how_of(s, flags, 1);

	check_peer(s);
	pthread_mutex_lock(&s->tx_mu);
	ssize_t n = send_locked(s, buf, len, flags, &h);
	pthread_mutex_unlock(&s->tx_mu);
	touched(s);
	return n;
}

/* Vectors: the first non-empty piece waits as the call may; the rest take
 * only what is there at once (as readv on a socket returns what it has). */
ssize_t shim_recvv(struct shim_sock *s, int fd, const struct iovec *iov, int n, int flags)
{
	struct how h = how_of(s, flags, 0);
	size_t done = 0;
	ssize_t rc = 0;

	pthread_mutex_lock(&s->rx_mu);
	for (int i = 0; i < n; i++) {
		if (iov[i].iov_len == 0)
			continue;
		rc = recv_locked(s, iov[i].iov_base, iov[i].iov_len, flags, &h);
		if (rc <= 0)
			break;
		done += (size_t)rc;
		if ((size_t)rc < iov[i].iov_len || (flags & MSG_PEEK))
			break;
		if (!(flags & MSG_WAITALL))
			h.nb = 1, h.core_flags = SHUNT_NONBLOCK, h.deadline = 0;
	}
	pthread_mutex_unlock(&s->rx_mu);
	touched(s);
	if (done)
		return (ssize_t)done;
	for (int i = 0; i < n && (rc == 0 || rc == -ECONNRESET); i++)
		if (iov[i].iov_len) /* the first piece: see shim_recv() */
			return tcp_leftover(fd, iov[i].iov_base, iov[i].iov_len, flags, rc);
	return rc;
}

ssize_t shim_sendv(struct shim_sock *s, const struct iovec *iov, int n, int flags)
{
	struct how h = how_of(s, flags, 1);

	check_peer(s);
	size_t done = 0;
	ssize_t rc = 0;

	pthread_mutex_lock(&s->tx_mu);
	for (int i = 0; i < n; i++) {
		if (iov[i].iov_len == 0)
			continue;
		rc = send_locked(s, iov[i].iov_base, iov[i].iov_len, flags | MSG_NOSIGNAL, &h);
		if (rc <= 0)
			break;
		done += (size_t)rc;
		if ((size_t)rc < iov[i].iov_len)
			break;
	}
	pthread_mutex_unlock(&s->tx_mu);
	touched(s);
	if (done)
		return (ssize_t)done;
	return rc < 0 ? send_error(rc, flags) : rc;
}

/* sendfile into the ring: the file is read straight into shared memory. */
ssize_t shim_sendfile(struct shim_sock *s, int in_fd, off_t *off, size_t count)
{
	struct how h = how_of(s, 0, 1);
	size_t done = 0;
	ssize_t rc = 0;

	pthread_mutex_lock(&s->tx_mu);
	while (done < count) {
		void *p;
		rc = shunt_send_reserve(s->c, &p, 1, h.core_flags);
		if (rc == -EAGAIN && (rc = may_wait(s, &h, POLLOUT)) == 0)
			continue;
		if (rc < 0)
			break;
		size_t want = SHUNT_MIN(SHUNT_MIN((size_t)rc, count - done), (size_t)65536);
		ssize_t got = off ? pread(in_fd, p, want, *off) : REAL(read)(in_fd, p, want);
		if (got <= 0) {
			shunt_send_commit(s->c, 0);
			rc = got < 0 ? -errno : 0;
			break;
		}
		shunt_send_commit(s->c, (size_t)got);
		if (off)
			*off += got;
		done += (size_t)got;
	}
	pthread_mutex_unlock(&s->tx_mu);
	touched(s);
	if (done)
		return (ssize_t)done;
	return rc < 0 ? send_error(rc, MSG_NOSIGNAL) : 0;
}

int shim_shutdown(struct shim_sock *s, int how)
{
	int rc = shunt_shutdown(s->c, how);

	touched(s);
	return rc;
}

int shim_fionread(struct shim_sock *s, int *out)
{
	ssize_t n = shunt_readable(s->c);

	if (n < 0)
		return (int)n;
	*out = n > INT32_MAX ? INT32_MAX : (int)n;
	return 0;
}

void shim_setsockopt(struct shim_sock *s, int level, int opt, const void *val,
		     socklen_t len)
{
	if (level != SOL_SOCKET || (opt != SO_RCVTIMEO && opt != SO_SNDTIMEO) ||
	    len < sizeof(struct timeval))
		return;
	const struct timeval *tv = val;
	int64_t us = (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
	atomic_store(opt == SO_RCVTIMEO ? &s->rcvtimeo_us : &s->sndtimeo_us, us);
}
