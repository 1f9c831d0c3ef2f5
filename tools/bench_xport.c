/*
 * bench_xport.c - one small send/receive API over every transport that
 * `shunt bench` compares, so that the measuring loops are the same code for
 * all of them and only the transport differs.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

volatile sig_atomic_t bench_stop;

const char *bench_strerror(int rc)
{
	if (rc == EP_EOF)
		return "end of stream where data was due (the peer closed or died)";
	if (rc == EP_PEER_EXITED)
		return "the peer process exited";
	return strerror(-rc);
}

/* --- Sending -------------------------------------------------------------- */

static int sock_send(struct ep *e, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(e->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR && !bench_stop)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int shunt_copy_send(struct ep *e, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = shunt_send(e->c, p, len, 0);
		if (n < 0) {
			if (n == -EINTR && !bench_stop)
				continue;
			return (int)n;
		}
		/* A blocking send returns less than len only when a signal
		 * interrupted it: go on unless we are told to stop. */
		if (bench_stop && (size_t)n < len)
			return -EINTR;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Zero-copy send: the message is copied once, from the caller's buffer
 * straight into the ring.  Waiting for a whole message (up to a quarter of
 * the ring) before copying is what an application building messages in
 * place does; asking for 1 byte would trickle tiny pieces when the ring is
 * nearly full.
 */
static int shunt_zc_send(struct ep *e, const uint8_t *p, size_t len)
{
	while (len > 0) {
		void *dst;
		size_t min = len < e->zc_chunk ? len : e->zc_chunk;
		ssize_t n = shunt_send_reserve(e->c, &dst, min, 0);
		if (n < 0) {
			if (n == -EINTR && !bench_stop)
				continue;
			return (int)n;
		}
		size_t k = (size_t)n < len ? (size_t)n : len;
		memcpy(dst, p, k);
		int rc = shunt_send_commit(e->c, k);
		if (rc < 0)
			return rc;
		p += k;
		len -= k;
	}
	return 0;
}

int ep_send(struct ep *e, const void *buf, size_t len)
{
	switch (e->x) {
	case X_SHUNT_ZC:
		return shunt_zc_send(e, buf, len);
	case X_SHUNT:
	case X_SHUNT_NOSPIN:
		return shunt_copy_send(e, buf, len);
	case X_UNIX:
	case X_TCP:
		return sock_send(e, buf, len);
	default:
		return -EINVAL;
	}
}

/* --- Receiving ------------------------------------------------------------ */

static ssize_t sock_recv(struct ep *e, void *buf, size_t max)
{
	for (;;) {
		ssize_t n = recv(e->fd, buf, max, 0);
		if (n >= 0)
			return n;
		if (errno != EINTR || bench_stop)
			return -errno;
	}
}

/*
 * Zero-copy receive: look at the bytes where they lie.  Reading one byte of
 * every cache line brings each line to the receiving core, as any consumer
 * must, without adding a second copy: shunt-zc moves each byte once end to
 * end, and shows what crossing between the cores costs by itself.
 */
static ssize_t shunt_zc_recv(struct ep *e, size_t max)
{
	const void *p;
	ssize_t n;

	do
		n = shunt_recv_peek(e->c, &p, 0);
	while (n == -EINTR && !bench_stop);
	if (n <= 0)
		return n;
	size_t k = (size_t)n < max ? (size_t)n : max;
	const volatile uint8_t *b = p;
	unsigned sum = b[k - 1];
	/* Give back 64 KiB at a time, as shunt_recv does, so that the sender
	 * refills while we read the rest. */
	for (size_t done = 0; done < k;) {
		size_t piece = k - done < 65536 ? k - done : 65536;
		for (size_t i = done; i < done + piece; i += 64)
			sum += b[i];
		int rc = shunt_recv_release(e->c, piece);
		if (rc < 0)
			return rc;
		done += piece;
	}
	e->touched += sum;
	return (ssize_t)k;
}

static ssize_t shunt_copy_recv(struct ep *e, void *buf, size_t max)
{
	ssize_t n;

	do
		n = shunt_recv(e->c, buf, max, 0);
	while (n == -EINTR && !bench_stop);
	return n;
}

ssize_t ep_recv(struct ep *e, void *buf, size_t max)
{
	switch (e->x) {
	case X_SHUNT_ZC:
		return shunt_zc_recv(e, max);
	case X_SHUNT:
	case X_SHUNT_NOSPIN:
		return shunt_copy_recv(e, buf, max);
	case X_UNIX:
	case X_TCP:
		return sock_recv(e, buf, max);
	default:
		return -EINVAL;
	}
}

int ep_recv_all(struct ep *e, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = ep_recv(e, p, len);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return EP_EOF;
		if (e->x != X_SHUNT_ZC)
			p += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * TCP_NODELAY for every test, as NetPIPE does: with Nagle on, a loopback
 * stream of 1-16 KiB messages stalls on delayed ACKs and its throughput
 * varies tenfold from run to run, which would make every ratio noise.
 */
static int set_nodelay(int fd)
{
	int on = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0)
		return -errno;
	return 0;
}

void ep_close(struct ep *e)
{
	if (e->c)
		shunt_close(e->c);
	if (e->fd >= 0)
		close(e->fd);
	e->c = NULL;
	e->fd = -1;
}

/* --- Setting up ----------------------------------------------------------- */

static int tcp_listen(struct rendezvous *rv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	int one = 1;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 8) < 0 ||
	    getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
		int err = -errno;
		close(s);
		return err;
	}
	rv->tcp_listen_fd = s;
	rv->tcp_port = ntohs(a.sin_port);
	return 0;
}

/* Listen for every transport before the fork, so the child only connects. */
int rv_open(struct rendezvous *rv, unsigned xports)
{
	int rc = 0;

	rv->shunt_l = NULL;
	rv->tcp_listen_fd = -1;
	rv->unix_pair[0] = rv->unix_pair[1] = -1;
	snprintf(rv->shunt_name, sizeof(rv->shunt_name), "bench-%ld", (long)getpid());
	if (xports & (1u << X_TCP))
		rc = tcp_listen(rv);
	if (rc == 0 && (xports & (1u << X_UNIX)) &&
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, rv->unix_pair) < 0)
		rc = -errno;
	if (rc == 0 && (xports & ((1u << X_SHUNT) | (1u << X_SHUNT_ZC) |
				  (1u << X_SHUNT_NOSPIN)))) {
		rc = shunt_listen(rv->shunt_name, &rv->shunt_l);
		if (rc < 0)
			fprintf(stderr, "shunt bench: shunt_listen(\"%s\"): %s\n",
				rv->shunt_name, strerror(-rc));
	}
	if (rc < 0)
		rv_close_parent(rv);
	return rc;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void rv_close_parent(struct rendezvous *rv)
{
	if (rv->shunt_l)
		shunt_listener_close(rv->shunt_l);
	rv->shunt_l = NULL;
	close_fd(&rv->tcp_listen_fd);
	close_fd(&rv->unix_pair[0]);
	close_fd(&rv->unix_pair[1]);
}

/* The child must not unlink the parent's socket file: it only drops its
 * copies of the descriptors.  The listener struct stays with the parent. */
void rv_close_child(struct rendezvous *rv)
{
	if (rv->shunt_l)
		close(shunt_listener_fd(rv->shunt_l));
	close_fd(&rv->tcp_listen_fd);
	close_fd(&rv->unix_pair[0]);
}

static void ep_init(struct ep *e, enum xport x, size_t chunk)
{
	e->x = x;
	e->fd = -1;
	e->c = NULL;
	e->zc_chunk = chunk;
}

/* A quarter of the ring: see shunt_zc_send(). */
static size_t zc_chunk_of(const struct shunt_conn *c)
{
	size_t q = shunt_ring_size(c) / 4;

	return q ? q : 1;
}

int ep_accept(struct rendezvous *rv, enum xport x, struct ep *e)
{
	ep_init(e, x, 1);
	if (x == X_UNIX) {
		e->fd = rv->unix_pair[0];
		rv->unix_pair[0] = -1;
		return e->fd >= 0 ? 0 : -EBADF;
	}
	if (x == X_TCP) {
		e->fd = accept4(rv->tcp_listen_fd, NULL, NULL, SOCK_CLOEXEC);
		return e->fd >= 0 ? set_nodelay(e->fd) : -errno;
	}
	int rc = shunt_accept(rv->shunt_l, &e->c, 0);
	if (rc < 0)
		return rc;
	e->zc_chunk = zc_chunk_of(e->c);
	/* The accepting end takes its spin window from SHUNT_SPIN_US, read
	 * once per process; shunt_set_spin() is the way to change one end. */
	if (x == X_SHUNT_NOSPIN)
		rc = shunt_set_spin(e->c, -1);
	return rc;
}

static int tcp_connect(int port, int *out)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int err = -errno;
		close(s);
		return err;
	}
	*out = s;
	return 0;
}

int ep_connect(struct rendezvous *rv, enum xport x, const struct shunt_opts *opts,
	       struct ep *e)
{
	ep_init(e, x, 1);
	if (x == X_UNIX) {
		e->fd = rv->unix_pair[1];
		rv->unix_pair[1] = -1;
		return e->fd >= 0 ? 0 : -EBADF;
	}
	if (x == X_TCP) {
		int rc = tcp_connect(rv->tcp_port, &e->fd);
		return rc < 0 ? rc : set_nodelay(e->fd);
	}
	struct shunt_opts o = *opts;
	if (x == X_SHUNT_NOSPIN)
		o.spin_us = -1;
	int rc = shunt_connect(rv->shunt_name, &o, &e->c);
	if (rc == 0)
		e->zc_chunk = zc_chunk_of(e->c);
	return rc;
}
