/*
 * t_preload.c - the socket shim (src/shim/) held to POSIX, inside this program.
 *
 * The Makefile links the shim's objects into this test, so its wrappers of
 * socket, read, poll, epoll_wait, fork, execve and the rest replace libc's
 * here: ordinary TCP connections on 127.0.0.1 and ::1 between this process
 * and forked peers are upgraded to shared memory.  Each case checks that a
 * call behaves exactly as it does on Linux TCP, and that the fd really was
 * upgraded (shunt__shim_is_accelerated()).
 *
 * The peer is a forked child that takes orders over a pipe (connect, write N
 * bytes of its stream, read and check N bytes, shut down, close, report its
 * addresses, ...) so that a case can put the connection in any state and then
 * look at it.  A "plain" peer execs this program again with SHUNT_DISABLE=1:
 * plain TCP, for the fallback case.
 *
 * Reference runs on kernel TCP: `SHUNT_DISABLE=1 t_preload` expects no fd to
 * be upgraded, and a build without the shim (shunt__shim_is_accelerated is a
 * weak symbol) runs every check, counts the upgrade checks it could not make
 * and fails at the end unless SHUNT_DISABLE=1.
 *
 * SHUNT_PRELOAD_ONLY=name,name runs only those cases.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

/* Provided by the shim: 1 if fd's connection runs over shared memory, 0 if
 * plain TCP or not a socket.  Weak, so that this test also builds against
 * plain libc as a reference. */
int shunt__shim_is_accelerated(int fd) __attribute__((weak));
/* Links to listeners, with the segments parked on them, are a bounded cache
 * that outlives a case (src/shim/link.c); counting fds leaves it out. */
void shunt__shim_drop_links(void) __attribute__((weak));

static void drop_links(void)
{
	if (shunt__shim_drop_links)
		shunt__shim_drop_links();
}

/* glibc's _FORTIFY_SOURCE entry points; a fortified program calls these
 * instead of read(), recv(), recvfrom() and poll(). */
extern ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen);
extern ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
extern ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
			      __SOCKADDR_ARG addr, socklen_t *addrlen);
extern int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);

#define CHUNK 65536
#define PUMP_MAX (256 * 1024)
#define MIB (1024 * 1024)

static int g_expect_accel = 1;      /* 0 under SHUNT_DISABLE=1 */
static _Atomic int g_accel_misses;  /* upgrade checks a shim-less build failed */
static char g_self[4096];           /* this program, for exec */
static _Atomic uint64_t g_conn_count;

/* -1 with errno err, else fail (shows what came back). */
#define ASSERT_FAILS(expr, err)                                            \
	do {                                                               \
		errno = 0;                                                 \
		intmax_t r_ = (intmax_t)(expr);                            \
		int e_ = errno;                                            \
		if (r_ != -1 || e_ != (err))                               \
			TEST_FAIL_MSG("%s returned %jd (%s), want -1 (%s)", #expr, r_, \
				      r_ == -1 ? test_errname(e_) : "no error", \
				      test_errname(err));                  \
	} while (0)

/* A saved result r with its saved errno e: -1 with errno err, else fail. */
#define ASSERT_FAILED(r, e, err)                                           \
	do {                                                               \
		intmax_t r_ = (intmax_t)(r);                               \
		if (r_ != -1 || (e) != (err))                              \
			TEST_FAIL_MSG("%s returned %jd (%s), want -1 (%s)", #r, r_, \
				      r_ == -1 ? test_errname(e) : "no error", \
				      test_errname(err));                  \
	} while (0)

/* --- Is it upgraded? ---------------------------------------------------- */

static int accel_state(int fd)
{
	if (!shunt__shim_is_accelerated)
		return -1; /* no shim linked */
	return shunt__shim_is_accelerated(fd);
}

static void check_accel_at(const char *file, int line, int st, int want, const char *what)
{
	if (st < 0 && !want)
		return;
	if (st < 0) {
		atomic_fetch_add(&g_accel_misses, 1);
		test_log("upgrade not checked (no shim linked): %s (%s:%d)", what, file, line);
		return;
	}
	if (st != want)
		test_fail_at(file, line, "%s: %s, want %s", what,
			     st ? "upgraded to shared memory" : "plain TCP",
			     want ? "upgraded to shared memory" : "plain TCP");
}

#define EXPECT_ACCEL(fd, what) \
	check_accel_at(__FILE__, __LINE__, accel_state(fd), g_expect_accel, what)
#define EXPECT_PLAIN(fd, what) check_accel_at(__FILE__, __LINE__, accel_state(fd), 0, what)

/* A child's verdict as an exit status: 0 as wanted, 2 wrong, 3 unknown. */
static int accel_code(int st, int want)
{
	if (st < 0)
		return want ? 3 : 0;
	return st == want ? 0 : 2;
}

static void check_child_code(int status, const char *what)
{
	char b[128];

	if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
		check_accel_at(__FILE__, __LINE__, -1, 1, what);
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
		TEST_FAIL_MSG("%s: the child found its fd %s", what,
			      g_expect_accel ? "on plain TCP" : "upgraded");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		TEST_FAIL_MSG("%s: child %s", what, test_status_str(status, b, sizeof(b)));
}

/* --- Addresses and sockets ---------------------------------------------- */

static socklen_t loopback(int family, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		return sizeof(*a);
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*a);
}

static int addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";
	const void *src = ss->ss_family == AF_INET6
		? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
		: (const void *)&((const struct sockaddr_in *)ss)->sin_addr;

	inet_ntop(ss->ss_family, src, a, sizeof(a));
	snprintf(buf, len, "%s port %d (family %d)", a, addr_port(ss), ss->ss_family);
	return buf;
}

static int addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family || addr_port(a) != addr_port(b))
		return 0;
	if (a->ss_family == AF_INET6)
		return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static int tcp_listen(int family, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, 0, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_SYS(fd);
	ASSERT_SYS(bind(fd, (struct sockaddr *)&ss, len));
	ASSERT_SYS(listen(fd, 16));
	len = sizeof(ss);
	ASSERT_SYS(getsockname(fd, (struct sockaddr *)&ss, &len));
	*port = addr_port(&ss);
	return fd;
}

static int tcp_connect(int family, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM, 0);
	int rc;

	ASSERT_SYS(fd);
	do
		rc = connect(fd, (struct sockaddr *)&ss, len);
	while (rc < 0 && errno == EINTR);
	ASSERT_SYS(rc);
	return fd;
}

static int ipv6_ok(void)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(AF_INET6, 0, &ss);
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	int ok = fd >= 0 && bind(fd, (struct sockaddr *)&ss, len) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

static void set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	ASSERT_SYS(fl);
	ASSERT_SYS(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK));
}

/* poll() one fd for up to ms; returns revents (0 on timeout). */
static short wait_fd(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int rc;

	do
		rc = poll(&p, 1, ms);
	while (rc < 0 && errno == EINTR);
	ASSERT_SYS(rc);
	return rc ? p.revents : 0;
}

/* FIONREAD once it reaches n, or what it is after ms. */
static int wait_fionread(int fd, int n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	int v;

	for (;;) {
		ASSERT_SYS(ioctl(fd, FIONREAD, &v));
		if (v >= n || test_now_ns() > end)
			return v;
		test_sleep_ms(1);
	}
}

static int fd_flags(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	ASSERT_SYS(fl);
	return fl;
}

/* --- Byte streams ------------------------------------------------------- */

static void check_stream(uint64_t seed, uint64_t off, const void *buf, size_t n)
{
	size_t bad = test_stream_check(seed, off, buf, n);

	if (bad != (size_t)-1)
		TEST_FAIL_MSG("stream byte %ju is wrong (0x%02x)", (uintmax_t)(off + bad),
			      ((const unsigned char *)buf)[bad]);
}

static void write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			wait_fd(fd, POLLOUT, 10000);
			continue;
		}
		ASSERT_SYS(w);
		ASSERT_GT(w, 0);
		p += w;
		n -= (size_t)w;
	}
}

/* Write n bytes of stream seed from *off (any mode of fd). */
static void send_stream(int fd, uint64_t seed, uint64_t *off, uint64_t n)
{
	unsigned char buf[CHUNK];

	while (n) {
		size_t k = n < CHUNK ? (size_t)n : CHUNK;
		test_stream_fill(seed, *off, buf, k);
		write_all(fd, buf, k);
		*off += k;
		n -= k;
	}
}

/* Read exactly n bytes and check them against stream seed at *off. */
static void recv_stream(int fd, uint64_t seed, uint64_t *off, uint64_t n)
{
	unsigned char buf[CHUNK];

	while (n) {
		size_t k = n < CHUNK ? (size_t)n : CHUNK;
		ssize_t r = read(fd, buf, k);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			wait_fd(fd, POLLIN, 10000);
			continue;
		}
		ASSERT_SYS(r);
		if (r == 0)
			TEST_FAIL_MSG("end of stream %ju bytes early", (uintmax_t)n);
		check_stream(seed, *off, buf, (size_t)r);
		*off += (uint64_t)r;
		n -= (uint64_t)r;
	}
}

/* One direction of a pump: n bytes of stream seed from offset off. */
struct flow {
	uint64_t seed, off, n, done;
};

static void pump_write(int fd, struct flow *w, unsigned char *buf, struct test_rng *rng)
{
	size_t k = (size_t)test_rng_size(rng, PUMP_MAX);

	if (k > w->n - w->done)
		k = (size_t)(w->n - w->done);
	test_stream_fill(w->seed, w->off + w->done, buf, k);
	ssize_t n = write(fd, buf, k);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	ASSERT_SYS(n);
	ASSERT_GT(n, 0);
	w->done += (uint64_t)n;
}

static void pump_read(int fd, struct flow *r, unsigned char *buf, struct test_rng *rng)
{
	size_t k = (size_t)test_rng_size(rng, PUMP_MAX);

	if (k > r->n - r->done)
		k = (size_t)(r->n - r->done);
	ssize_t n = read(fd, buf, k);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	ASSERT_SYS(n);
	if (n == 0)
		TEST_FAIL_MSG("end of stream after %ju of %ju bytes", (uintmax_t)r->done,
			      (uintmax_t)r->n);
	check_stream(r->seed, r->off + r->done, buf, (size_t)n);
	r->done += (uint64_t)n;
}

/* Send w and receive r at once on a non-blocking fd, driven by poll(), with
 * random sizes of each call. */
static void pump(int fd, struct flow *w, struct flow *r, uint64_t rng_seed)
{
	unsigned char *wb = malloc(PUMP_MAX), *rb = malloc(PUMP_MAX);
	struct test_rng rng;
	int fl = fcntl(fd, F_GETFL);

	ASSERT_NOT_NULL(wb);
	ASSERT_NOT_NULL(rb);
	ASSERT_SYS(fl);
	set_nonblock(fd, 1);
	test_rng_seed(&rng, rng_seed);
	while (w->done < w->n || r->done < r->n) {
		short ev = (short)((w->done < w->n ? POLLOUT : 0) | (r->done < r->n ? POLLIN : 0));
		short re = wait_fd(fd, ev, 10000);
		ASSERT_MSG(re, "pump stalled 10 s: sent %ju/%ju, received %ju/%ju",
			   (uintmax_t)w->done, (uintmax_t)w->n, (uintmax_t)r->done,
			   (uintmax_t)r->n);
		if ((re & POLLOUT) && w->done < w->n)
			pump_write(fd, w, wb, &rng);
		if ((re & (POLLIN | POLLHUP | POLLERR)) && r->done < r->n)
			pump_read(fd, r, rb, &rng);
		else if ((re & (POLLHUP | POLLERR)) && !(re & POLLOUT))
			TEST_FAIL_MSG("pump: revents 0x%x while sending", re);
	}
	ASSERT_SYS(fcntl(fd, F_SETFL, fl));
	free(wb);
	free(rb);
}

/* --- The peer ----------------------------------------------------------- */

enum op {
	OP_CONNECT = 1,  /* a port, b family: connect (closing the last one) */
	OP_LISTEN,       /* a family: listen; val = port */
	OP_ACCEPT,       /* accept one, close the listener */
	OP_WRITE,        /* a bytes of the peer's stream */
	OP_WRITE_PIECES, /* a bytes in b pieces, c ms apart */
	OP_READ,         /* read and check exactly a bytes */
	OP_DRAIN,        /* read and check to the end; val bytes, err errno */
	OP_SHUT,         /* shutdown(a) */
	OP_CLOSE,
	OP_SLEEP,        /* a ms */
	OP_EXPECT_EOF,   /* wait a ms for readability, read 1: val (-2 timeout), err */
	OP_EXPECT_QUIET, /* poll POLLIN a ms: val = poll's result, val2 revents */
	OP_ECHO,         /* echo to the end; val bytes */
	OP_PUMP,         /* send a, receive b at once; c: b is the echo of a */
	OP_ADDR,         /* name = getsockname, peer = getpeername */
	OP_ACCEL,        /* val = accel_state() */
	OP_DEMUX,        /* the two-writer check, a = message size */
	OP_READSUM,      /* read exactly a bytes; sum = test_sum */
	OP_FIONREAD,     /* wait until FIONREAD >= a (2 s); val = FIONREAD */
	OP_EXIT,
};

struct cmd {
	int32_t op, pad;
	int64_t a, b, c;
};

struct resp {
	int64_t val, val2, val3;
	int32_t err, pad;
	uint64_t sum;
	struct sockaddr_storage name, peer;
};

/* The peer's side. */
struct pstate {
	int fd, lfd;
	uint64_t seed_in, seed_out, off_in, off_out;
};

/* This side's handle on a peer and on our end of its connection. */
struct peer {
	pid_t pid;
	int cmd, resp; /* pipes */
	int fd;        /* our end, -1 none */
	int plain;     /* the peer runs with SHUNT_DISABLE=1 */
	uint64_t seed_out, seed_in, off_out, off_in;
};

static void op_write_pieces(struct pstate *s, const struct cmd *c)
{
	for (int64_t i = 0; i < c->b; i++) {
		int64_t k = c->a / c->b + (i == c->b - 1 ? c->a % c->b : 0);
		if (i)
			test_sleep_ms((unsigned)c->c);
		send_stream(s->fd, s->seed_out, &s->off_out, (uint64_t)k);
	}
}

static void op_drain(struct pstate *s, struct resp *r)
{
	unsigned char buf[CHUNK];

	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r->err = errno;
		if (n <= 0)
			return;
		check_stream(s->seed_in, s->off_in, buf, (size_t)n);
		s->off_in += (uint64_t)n;
		r->val += n;
	}
}

static void op_expect_eof(struct pstate *s, const struct cmd *c, struct resp *r)
{
	char b;

	if (!wait_fd(s->fd, POLLIN, (int)c->a)) {
		r->val = -2;
		return;
	}
	errno = 0;
	r->val = read(s->fd, &b, 1);
	r->err = errno;
}

static void op_expect_quiet(struct pstate *s, const struct cmd *c, struct resp *r)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN };

	r->val = poll(&p, 1, (int)c->a);
	r->val2 = p.revents;
}

static void op_echo(struct pstate *s, struct resp *r)
{
	unsigned char buf[CHUNK];

	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r->err = errno;
		if (n <= 0)
			return;
		write_all(s->fd, buf, (size_t)n);
		r->val += n;
	}
}

static void op_pump(struct pstate *s, const struct cmd *c)
{
	struct flow w = { s->seed_out, s->off_out, (uint64_t)c->a, 0 };
	struct flow rd = { s->seed_in, s->off_in, (uint64_t)c->b, 0 };

	if (c->c)
		rd = (struct flow){ s->seed_out, s->off_out, (uint64_t)c->b, 0 };
	pump(s->fd, &w, &rd, s->seed_out ^ s->off_out);
	s->off_out += (uint64_t)c->a;
	if (!c->c)
		s->off_in += (uint64_t)c->b;
}

static void op_addr(struct pstate *s, struct resp *r)
{
	socklen_t l1 = sizeof(r->name), l2 = sizeof(r->peer);

	ASSERT_SYS(getsockname(s->fd, (struct sockaddr *)&r->name, &l1));
	ASSERT_SYS(getpeername(s->fd, (struct sockaddr *)&r->peer, &l2));
}

/* Writer t's stream in the two-writer case: high bit t, 7 bits of stream. */
static void sub_fill(uint64_t seed, int t, uint64_t off, unsigned char *b, size_t n)
{
	test_stream_fill(seed + (uint64_t)t, off, b, n);
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)((b[i] & 0x7f) | (t << 7));
}

/* Split the stream by the high bit into the two writers' streams, check each
 * in order, and count how often a writer's message was cut by the other. */
static void op_demux(struct pstate *s, const struct cmd *c, struct resp *r)
{
	unsigned char buf[CHUNK], exp[CHUNK];
	uint64_t off[2] = { 0, 0 };
	int cur = -1;

	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		ASSERT_SYS(n);
		if (n == 0)
			break;
		for (size_t i = 0, j; i < (size_t)n; i = j) {
			int t = buf[i] >> 7;
			for (j = i; j < (size_t)n && buf[j] >> 7 == t; j++)
				;
			if (cur >= 0 && t != cur && off[cur] % (uint64_t)c->a)
				r->val3++;
			cur = t;
			sub_fill(s->seed_in, t, off[t], exp, j - i);
			size_t bad = test_memdiff(exp, buf + i, j - i);
			if (bad != (size_t)-1)
				TEST_FAIL_MSG("writer %d: byte %ju of its stream is wrong", t,
					      (uintmax_t)(off[t] + bad));
			off[t] += j - i;
		}
	}
	r->val = (int64_t)off[0];
	r->val2 = (int64_t)off[1];
}

static void op_readsum(struct pstate *s, const struct cmd *c, struct resp *r)
{
	unsigned char buf[CHUNK];
	struct test_sum sum;
	uint64_t left = (uint64_t)c->a;

	test_sum_init(&sum);
	while (left) {
		ssize_t n = read(s->fd, buf, left < CHUNK ? (size_t)left : CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		ASSERT_SYS(n);
		if (n == 0)
			TEST_FAIL_MSG("end of stream %ju bytes early", (uintmax_t)left);
		test_sum_update(&sum, buf, (size_t)n);
		left -= (uint64_t)n;
	}
	r->sum = test_sum_final(&sum);
}

static void op_conn(struct pstate *s, const struct cmd *c, struct resp *r)
{
	int port;

	switch (c->op) {
	case OP_CONNECT:
		if (s->fd >= 0)
			close(s->fd);
		s->fd = tcp_connect((int)c->b, (int)c->a);
		break;
	case OP_LISTEN:
		s->lfd = tcp_listen((int)c->a, &port);
		r->val = port;
		break;
	case OP_ACCEPT:
		do
			s->fd = accept(s->lfd, NULL, NULL);
		while (s->fd < 0 && errno == EINTR);
		ASSERT_SYS(s->fd);
		close(s->lfd);
		s->lfd = -1;
		break;
	case OP_SHUT:
		r->val = shutdown(s->fd, (int)c->a) ? -errno : 0;
		break;
	case OP_CLOSE:
		ASSERT_SYS(close(s->fd));
		s->fd = -1;
		break;
	}
}

static void peer_exec_op(struct pstate *s, const struct cmd *c, struct resp *r)
{
	switch (c->op) {
	case OP_WRITE: send_stream(s->fd, s->seed_out, &s->off_out, (uint64_t)c->a); break;
	case OP_WRITE_PIECES: op_write_pieces(s, c); break;
	case OP_READ: recv_stream(s->fd, s->seed_in, &s->off_in, (uint64_t)c->a); break;
	case OP_DRAIN: op_drain(s, r); break;
	case OP_SLEEP: test_sleep_ms((unsigned)c->a); break;
	case OP_EXPECT_EOF: op_expect_eof(s, c, r); break;
	case OP_EXPECT_QUIET: op_expect_quiet(s, c, r); break;
	case OP_ECHO: op_echo(s, r); break;
	case OP_PUMP: op_pump(s, c); break;
	case OP_ADDR: op_addr(s, r); break;
	case OP_ACCEL: r->val = accel_state(s->fd); break;
	case OP_DEMUX: op_demux(s, c, r); break;
	case OP_READSUM: op_readsum(s, c, r); break;
	case OP_FIONREAD: r->val = wait_fionread(s->fd, (int)c->a, 2000); break;
	default: op_conn(s, c, r); break;
	}
}

static __attribute__((noreturn)) void peer_loop(int cmd, int resp, uint64_t seed_in,
						uint64_t seed_out)
{
	struct pstate s = { .fd = -1, .lfd = -1, .seed_in = seed_in, .seed_out = seed_out };

	for (;;) {
		struct cmd c;
		struct resp r;
		ssize_t n = read(cmd, &c, sizeof(c));
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n == sizeof(c) && c.op == OP_EXIT))
			exit(0);
		ASSERT_EQ(n, sizeof(c));
		memset(&r, 0, sizeof(r));
		peer_exec_op(&s, &c, &r);
		ASSERT_EQ(write(resp, &r, sizeof(r)), sizeof(r));
	}
}

/* In a forked child: close the TCP sockets and pipes it inherited (they
 * would keep other connections open), but not the shim's own fds. */
static int inherited_kind(int fd)
{
	struct stat st;
	int dom = 0;
	socklen_t l = sizeof(dom);

	if (fstat(fd, &st))
		return 0;
	if (S_ISFIFO(st.st_mode))
		return 1;
	if (!S_ISSOCK(st.st_mode) || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l))
		return 0;
	return dom == AF_INET || dom == AF_INET6;
}

static void close_inherited(int keep1, int keep2)
{
	int fds[1024], n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)) && n < 1024) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d) && fd != keep1 && fd != keep2)
			fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		if (inherited_kind(fds[i]))
			close(fds[i]);
}

/* A new image of this program logs the same seed. */
static void set_seed_env(void)
{
	char s[32];

	snprintf(s, sizeof(s), "%" PRIu64, test_seed());
	setenv("SHUNT_TEST_SEED", s, 1);
}

struct spawn_arg {
	int cmd, resp, plain;
	uint64_t seed_in, seed_out;
};

static void peer_child(void *arg)
{
	const struct spawn_arg *a = arg;
	char c[16], r[16], si[32], so[32];

	close_inherited(a->cmd, a->resp);
	if (!a->plain)
		peer_loop(a->cmd, a->resp, a->seed_in, a->seed_out);
	ASSERT_SYS(fcntl(a->cmd, F_SETFD, 0));
	ASSERT_SYS(fcntl(a->resp, F_SETFD, 0));
	snprintf(c, sizeof(c), "%d", a->cmd);
	snprintf(r, sizeof(r), "%d", a->resp);
	snprintf(si, sizeof(si), "%" PRIu64, a->seed_in);
	snprintf(so, sizeof(so), "%" PRIu64, a->seed_out);
	setenv("SHUNT_DISABLE", "1", 1);
	set_seed_env();
	char *argv[] = { g_self, "peer", c, r, si, so, NULL };
	execve(g_self, argv, environ);
	TEST_FAIL_MSG("execve(%s): %s", g_self, strerror(errno));
}

/* Start a peer process (plain: with SHUNT_DISABLE=1 in a fresh image). */
static void peer_spawn(struct peer *p, int plain)
{
	uint64_t k = atomic_fetch_add(&g_conn_count, 1);
	int c[2], r[2];

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	p->plain = plain;
	p->seed_out = test_mix64(test_seed() ^ (2 * k + 1));
	p->seed_in = test_mix64(test_seed() ^ (2 * k + 2));
	ASSERT_SYS(pipe2(c, O_CLOEXEC));
	ASSERT_SYS(pipe2(r, O_CLOEXEC));
	struct spawn_arg a = { c[0], r[1], plain, p->seed_out, p->seed_in };
	p->pid = test_fork(peer_child, &a);
	close(c[0]);
	close(r[1]);
	p->cmd = c[1];
	p->resp = r[0];
}

static void peer_send(struct peer *p, int op, int64_t a, int64_t b, int64_t c)
{
	struct cmd m = { .op = op, .a = a, .b = b, .c = c };

	ASSERT_EQ(write(p->cmd, &m, sizeof(m)), sizeof(m));
}

static struct resp peer_wait(struct peer *p)
{
	struct resp r;
	char b[128];
	ssize_t n;

	if (!wait_fd(p->resp, POLLIN, 25000))
		TEST_FAIL_MSG("peer %d did not answer within 25 s", (int)p->pid);
	do
		n = read(p->resp, &r, sizeof(r));
	while (n < 0 && errno == EINTR);
	if (n == 0) {
		int st = test_wait(p->pid, 5);
		p->pid = 0;
		TEST_FAIL_MSG("peer %s", test_status_str(st, b, sizeof(b)));
	}
	ASSERT_EQ(n, sizeof(r));
	return r;
}

static struct resp peer_do(struct peer *p, int op, int64_t a, int64_t b, int64_t c)
{
	peer_send(p, op, a, b, c);
	return peer_wait(p);
}

#define EXPECT_PEER_ACCEL(p, what)                                         \
	check_accel_at(__FILE__, __LINE__, (int)peer_do(p, OP_ACCEL, 0, 0, 0).val, \
		       (p)->plain ? 0 : g_expect_accel, what)

/* The peer connects to a fresh listener of ours; p->fd is what we accept. */
static void peer_accept_conn(struct peer *p, int family, int flags)
{
	int port, lfd = tcp_listen(family, &port), fd;

	peer_send(p, OP_CONNECT, port, family, 0);
	do
		fd = accept4(lfd, NULL, NULL, flags);
	while (fd < 0 && errno == EINTR);
	ASSERT_SYS(fd);
	close(lfd);
	peer_wait(p);
	p->fd = fd;
}

/* The peer listens and accepts; p->fd is our connected socket. */
static void peer_connect_conn(struct peer *p, int family)
{
	int port = (int)peer_do(p, OP_LISTEN, family, 0, 0).val;

	peer_send(p, OP_ACCEPT, 0, 0, 0);
	p->fd = tcp_connect(family, port);
	peer_wait(p);
}

static void peer_open(struct peer *p)
{
	peer_spawn(p, 0);
	peer_accept_conn(p, AF_INET, 0);
}

/* Close our end, let the peer exit and reap it. */
static void peer_end(struct peer *p)
{
	if (p->fd >= 0)
		ASSERT_SYS(close(p->fd));
	p->fd = -1;
	if (p->pid > 0) {
		peer_send(p, OP_EXIT, 0, 0, 0);
		test_wait_ok(p->pid, 10);
	}
	close(p->cmd);
	close(p->resp);
}

static void peer_kill(struct peer *p)
{
	ASSERT_SYS(kill(p->pid, SIGKILL));
	int st = test_wait(p->pid, 5);
	ASSERT(WIFSIGNALED(st));
	p->pid = 0;
}

/* n bytes each way through fd (our end of p's connection, or a dup). */
static void exchange(struct peer *p, int fd, uint64_t n)
{
	send_stream(fd, p->seed_out, &p->off_out, n);
	peer_do(p, OP_READ, (int64_t)n, 0, 0);
	peer_do(p, OP_WRITE, (int64_t)n, 0, 0);
	recv_stream(fd, p->seed_in, &p->off_in, n);
}

/* A connection that moved data both ways and is upgraded at both ends. */
static void peer_ready(struct peer *p)
{
	peer_open(p);
	exchange(p, p->fd, 1000);
	EXPECT_ACCEL(p->fd, "our end");
	EXPECT_PEER_ACCEL(p, "the peer's end");
}

/* Our SHUT_WR, then the peer's OP_DRAIN must count exactly n bytes. */
static void expect_drained(struct peer *p, uint64_t n)
{
	ASSERT_SYS(shutdown(p->fd, SHUT_WR));
	struct resp r = peer_do(p, OP_DRAIN, 0, 0, 0);
	ASSERT_EQ(r.err, 0);
	ASSERT_EQ(r.val, n);
}

static void set_handler(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	ASSERT_SYS(sigaction(sig, &sa, NULL));
}

/* --- Blocking, non-blocking, timeouts, signals -------------------------- */

static void case_nonblock(void)
{
	struct peer p;
	char b[64];
	int on = 1;

	peer_spawn(&p, 0);
	peer_accept_conn(&p, AF_INET, SOCK_NONBLOCK | SOCK_CLOEXEC);
	ASSERT(fcntl(p.fd, F_GETFL) & O_NONBLOCK);
	ASSERT(fd_flags(p.fd) & FD_CLOEXEC);
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EAGAIN);
	ASSERT_FAILS(recv(p.fd, b, sizeof(b), 0), EAGAIN);
	peer_do(&p, OP_WRITE, 10, 0, 0);
	ASSERT(wait_fd(p.fd, POLLIN, 1000) & POLLIN);
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EAGAIN);
	EXPECT_ACCEL(p.fd, "accept4(SOCK_NONBLOCK)");
	EXPECT_PEER_ACCEL(&p, "peer");

	set_nonblock(p.fd, 0);
	ASSERT(!(fcntl(p.fd, F_GETFL) & O_NONBLOCK));
	ASSERT_SYS(ioctl(p.fd, FIONBIO, &on));
	ASSERT(fcntl(p.fd, F_GETFL) & O_NONBLOCK);
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EAGAIN);
	on = 0;
	ASSERT_SYS(ioctl(p.fd, FIONBIO, &on));
	ASSERT(!(fcntl(p.fd, F_GETFL) & O_NONBLOCK));

	/* Blocking again: read waits for data sent 150 ms later. */
	peer_send(&p, OP_SLEEP, 150, 0, 0);
	peer_send(&p, OP_WRITE, 10, 0, 0);
	double t0 = test_now();
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_GE((test_now() - t0) * 1000, 100);
	peer_wait(&p);
	peer_wait(&p);
	peer_end(&p);
}

static void connect_refused(void)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(AF_INET, 0, &ss);
	int b = socket(AF_INET, SOCK_STREAM, 0), err = -1;

	/* A bound port that does not listen refuses connections. */
	ASSERT_SYS(b);
	ASSERT_SYS(bind(b, (struct sockaddr *)&ss, len));
	ASSERT_SYS(getsockname(b, (struct sockaddr *)&ss, &len));
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_FAILS(connect(fd, (struct sockaddr *)&ss, len), ECONNREFUSED);
	close(fd);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	errno = 0;
	int rc = connect(fd, (struct sockaddr *)&ss, len);
	ASSERT(rc == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED));
	if (errno == EINPROGRESS) {
		ASSERT(wait_fd(fd, POLLOUT, 2000) & (POLLOUT | POLLERR | POLLHUP));
		len = sizeof(err);
		ASSERT_SYS(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len));
		ASSERT_EQ(err, ECONNREFUSED);
	}
	close(fd);
	close(b);
}

static void case_connect_nonblock(void)
{
	struct peer p;
	struct sockaddr_storage ss;
	int err = -1;
	socklen_t len;

	peer_spawn(&p, 0);
	int port = (int)peer_do(&p, OP_LISTEN, AF_INET, 0, 0).val;
	peer_send(&p, OP_ACCEPT, 0, 0, 0);
	len = loopback(AF_INET, port, &ss);
	p.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	ASSERT_SYS(p.fd);
	errno = 0;
	int rc = connect(p.fd, (struct sockaddr *)&ss, len);
	ASSERT_MSG(rc == 0 || errno == EINPROGRESS, "connect: %d %s", rc, test_errname(errno));
	ASSERT(wait_fd(p.fd, POLLOUT, 2000) & POLLOUT);
	len = sizeof(err);
	ASSERT_SYS(getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len));
	ASSERT_EQ(err, 0);
	/* Linux: the first connect() after completion returns 0 (it reports the
	 * outcome), later ones EISCONN. */
	len = loopback(AF_INET, port, &ss);
	errno = 0;
	rc = connect(p.fd, (struct sockaddr *)&ss, len);
	ASSERT_MSG(rc == 0 || errno == EISCONN, "connect again: %d %s", rc, test_errname(errno));
	ASSERT_FAILS(connect(p.fd, (struct sockaddr *)&ss, len), EISCONN);
	peer_wait(&p);
	exchange(&p, p.fd, 5000);
	EXPECT_ACCEL(p.fd, "non-blocking connect");
	EXPECT_PEER_ACCEL(&p, "peer (accepted)");
	peer_end(&p);
	connect_refused();
}

static _Atomic int g_usr1, g_sigpipe;
static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_usr1, 1);
}
static void on_sigpipe(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_sigpipe, 1);
}

/* A thread that sends SIGUSR1 to another every 20 ms until stopped. */
struct kicker {
	pthread_t target, thread;
	_Atomic int stop, sent;
};

static void *kicker_main(void *arg)
{
	struct kicker *k = arg;

	while (!atomic_load(&k->stop)) {
		test_sleep_ms(20);
		pthread_kill(k->target, SIGUSR1);
		atomic_fetch_add(&k->sent, 1);
	}
	return NULL;
}

static void kicker_start(struct kicker *k)
{
	k->target = pthread_self();
	atomic_store(&k->stop, 0);
	atomic_store(&k->sent, 0);
	ASSERT_EQ(pthread_create(&k->thread, NULL, kicker_main, k), 0);
}

static void kicker_stop(struct kicker *k)
{
	atomic_store(&k->stop, 1);
	ASSERT_EQ(pthread_join(k->thread, NULL), 0);
}

static void case_eintr(void)
{
	struct peer p;
	struct kicker k;
	struct epoll_event ev;
	char b[64];

	peer_ready(&p);
	/* No SA_RESTART: a blocked read, poll and epoll_wait end with EINTR. */
	set_handler(SIGUSR1, on_usr1, 0);
	kicker_start(&k);
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EINTR);
	ASSERT_FAILS(recv(p.fd, b, sizeof(b), 0), EINTR);
	kicker_stop(&k);
	ASSERT_GT(atomic_load(&g_usr1), 0);

	/* SA_RESTART: read goes on and returns the data sent 300 ms later ... */
	set_handler(SIGUSR1, on_usr1, SA_RESTART);
	peer_send(&p, OP_SLEEP, 300, 0, 0);
	peer_send(&p, OP_WRITE, 10, 0, 0);
	kicker_start(&k);
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	int kicks = atomic_load(&k.sent); /* signals sent while read waited */
	/* ... but poll and epoll_wait are never restarted (signal(7)). */
	ASSERT_FAILS(poll(&(struct pollfd){ .fd = p.fd, .events = POLLIN }, 1, 5000), EINTR);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev));
	ASSERT_FAILS(epoll_wait(ep, &ev, 1, 5000), EINTR);
	close(ep);
	/* With SO_RCVTIMEO set, a socket read is not restarted either. */
	struct timeval tv = { 5, 0 };
	ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EINTR);
	kicker_stop(&k);
	ASSERT_GE(kicks, 3);
	peer_wait(&p);
	peer_wait(&p);
	signal(SIGUSR1, SIG_DFL);
	EXPECT_ACCEL(p.fd, "after signals");
	peer_end(&p);
}

static void case_rcvtimeo(void)
{
	struct peer p;
	struct timeval tv = { 0, 200000 };
	socklen_t len = sizeof(tv);
	char b[64];

	peer_ready(&p);
	ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	memset(&tv, 0, sizeof(tv));
	ASSERT_SYS(getsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len));
	ASSERT_EQ(tv.tv_sec * 1000000 + tv.tv_usec, 200000);
	double t0 = test_now();
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), EAGAIN);
	double dt = test_now() - t0;
	ASSERT_MSG(dt >= 0.15 && dt < 1.5, "read timed out after %.3f s, want 0.2", dt);
	t0 = test_now();
	ASSERT_FAILS(recv(p.fd, b, sizeof(b), 0), EAGAIN);
	ASSERT_GE((test_now() - t0) * 1000, 150);
	/* Data within the timeout is read; no timeout again means no limit. */
	peer_send(&p, OP_SLEEP, 50, 0, 0);
	peer_send(&p, OP_WRITE, 10, 0, 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	peer_wait(&p);
	peer_wait(&p);
	memset(&tv, 0, sizeof(tv));
	ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	peer_send(&p, OP_SLEEP, 400, 0, 0);
	peer_send(&p, OP_WRITE, 10, 0, 0);
	t0 = test_now();
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_GE((test_now() - t0) * 1000, 300);
	peer_wait(&p);
	peer_wait(&p);
	EXPECT_ACCEL(p.fd, "SO_RCVTIMEO");
	peer_end(&p);
}

static void case_sndtimeo(void)
{
	struct peer p;
	struct timeval tv = { 0, 200000 };
	unsigned char *buf = malloc(MIB);
	uint64_t total = 0;
	double dt = 0;
	ssize_t n = 0;
	int e = 0;

	ASSERT_NOT_NULL(buf);
	peer_ready(&p);
	ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	/* The peer reads nothing: writes fill, then one times out. */
	for (int i = 0; i < 256; i++) {
		test_stream_fill(p.seed_out, p.off_out, buf, MIB);
		double t0 = test_now();
		n = write(p.fd, buf, MIB);
		e = errno;
		dt = test_now() - t0;
		if (n < 0)
			break;
		p.off_out += (uint64_t)n;
		total += (uint64_t)n;
		if (n < MIB)
			ASSERT_MSG(dt >= 0.15, "short write after %.3f s", dt);
	}
	ASSERT_FAILED(n, e, EAGAIN);
	ASSERT_MSG(dt >= 0.15 && dt < 2, "write timed out after %.3f s, want 0.2", dt);
	test_log("%ju bytes went in before the timeout", (uintmax_t)total);
	EXPECT_ACCEL(p.fd, "SO_SNDTIMEO");
	expect_drained(&p, total);
	free(buf);
	peer_end(&p);
}

/* --- Reads and writes --------------------------------------------------- */

static void case_partial_write(void)
{
	struct peer p;
	const size_t len = MIB + 13;
	unsigned char *buf = malloc(len);
	uint64_t total = 0;
	int shorts = 0, e = 0;
	ssize_t n;

	ASSERT_NOT_NULL(buf);
	peer_ready(&p);
	set_nonblock(p.fd, 1);
	for (;;) {
		test_stream_fill(p.seed_out, p.off_out, buf, len);
		n = write(p.fd, buf, len);
		e = errno;
		if (n < 0)
			break;
		ASSERT_GT(n, 0);
		shorts += (size_t)n < len;
		p.off_out += (uint64_t)n;
		total += (uint64_t)n;
		ASSERT_LT(total, 1024 * MIB);
	}
	ASSERT_FAILED(n, e, EAGAIN);
	ASSERT_MSG(shorts > 0, "no short write before EAGAIN");
	ASSERT_FAILS(send(p.fd, buf, len, 0), EAGAIN);
	test_log("%ju bytes in, %d short writes", (uintmax_t)total, shorts);
	EXPECT_ACCEL(p.fd, "partial writes");
	set_nonblock(p.fd, 0);
	expect_drained(&p, total);
	free(buf);
	peer_end(&p);
}

static void case_peek_fionread(void)
{
	struct peer p;
	unsigned char b[4096];
	int v;

	peer_ready(&p);
	peer_do(&p, OP_WRITE, 1234, 0, 0);
	ASSERT_EQ(wait_fionread(p.fd, 1234, 1000), 1234);
	ASSERT_EQ(recv(p.fd, b, 100, MSG_PEEK), 100);
	check_stream(p.seed_in, p.off_in, b, 100);
	ASSERT_EQ(recv(p.fd, b, sizeof(b), MSG_PEEK), 1234);
	check_stream(p.seed_in, p.off_in, b, 1234);
	ASSERT_SYS(ioctl(p.fd, FIONREAD, &v));
	ASSERT_EQ(v, 1234);
	recv_stream(p.fd, p.seed_in, &p.off_in, 234);
	ASSERT_SYS(ioctl(p.fd, FIONREAD, &v));
	ASSERT_EQ(v, 1000);
	ASSERT_EQ(recv(p.fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT), 1000);
	check_stream(p.seed_in, p.off_in, b, 1000);
	recv_stream(p.fd, p.seed_in, &p.off_in, 1000);
	ASSERT_SYS(ioctl(p.fd, FIONREAD, &v));
	ASSERT_EQ(v, 0);
	ASSERT_FAILS(recv(p.fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT), EAGAIN);
	EXPECT_ACCEL(p.fd, "MSG_PEEK");
	/* At end of stream: peek gives 0, FIONREAD 0. */
	peer_do(&p, OP_SHUT, SHUT_WR, 0, 0);
	ASSERT(wait_fd(p.fd, POLLIN, 1000) & POLLIN);
	ASSERT_EQ(recv(p.fd, b, sizeof(b), MSG_PEEK), 0);
	ASSERT_SYS(ioctl(p.fd, FIONREAD, &v));
	ASSERT_EQ(v, 0);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	peer_end(&p);
}

static void case_dontwait(void)
{
	struct peer p;
	unsigned char *buf = malloc(256 * 1024);
	uint64_t total = 0;
	ssize_t n;
	int e = 0;

	ASSERT_NOT_NULL(buf);
	peer_ready(&p);
	ASSERT_FAILS(recv(p.fd, buf, 100, MSG_DONTWAIT), EAGAIN);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT(wait_fd(p.fd, POLLIN, 1000) & POLLIN);
	ASSERT_EQ(wait_fionread(p.fd, 100, 1000), 100);
	ASSERT_EQ(recv(p.fd, buf, 256 * 1024, MSG_DONTWAIT), 100);
	check_stream(p.seed_in, p.off_in, buf, 100);
	p.off_in += 100;
	for (;;) {
		test_stream_fill(p.seed_out, p.off_out, buf, 256 * 1024);
		n = send(p.fd, buf, 256 * 1024, MSG_DONTWAIT);
		e = errno;
		if (n < 0)
			break;
		p.off_out += (uint64_t)n;
		total += (uint64_t)n;
		ASSERT_LT(total, 1024 * MIB);
	}
	ASSERT_FAILED(n, e, EAGAIN);
	ASSERT(!(fcntl(p.fd, F_GETFL) & O_NONBLOCK));
	EXPECT_ACCEL(p.fd, "MSG_DONTWAIT");
	expect_drained(&p, total);
	free(buf);
	peer_end(&p);
}

static void case_waitall(void)
{
	struct peer p;
	static unsigned char b[40000];

	peer_ready(&p);
	peer_send(&p, OP_WRITE_PIECES, 40000, 4, 60);
	double t0 = test_now();
	ASSERT_EQ(recv(p.fd, b, 40000, MSG_WAITALL), 40000);
	ASSERT_GE((test_now() - t0) * 1000, 150);
	check_stream(p.seed_in, p.off_in, b, 40000);
	p.off_in += 40000;
	peer_wait(&p);
	/* End of stream cuts MSG_WAITALL short. */
	peer_do(&p, OP_WRITE, 100, 0, 0);
	peer_do(&p, OP_SHUT, SHUT_WR, 0, 0);
	ASSERT_EQ(recv(p.fd, b, 4000, MSG_WAITALL), 100);
	check_stream(p.seed_in, p.off_in, b, 100);
	ASSERT_EQ(recv(p.fd, b, 4000, MSG_WAITALL), 0);
	EXPECT_ACCEL(p.fd, "MSG_WAITALL");
	peer_end(&p);
}

/* After the peer's close, send until it fails: EPIPE within 1 s. */
static int send_until_epipe(int fd, int flags)
{
	double end = test_now() + 1;
	char x = 'x';

	while (test_now() < end) {
		errno = 0;
		ssize_t n = send(fd, &x, 1, flags);
		if (n < 0)
			return errno;
		test_sleep_ms(10);
	}
	TEST_FAIL_MSG("sends still succeed 1 s after the peer closed");
}

static void case_nosignal(void)
{
	struct peer p;
	char b[16];

	peer_ready(&p);
	peer_do(&p, OP_CLOSE, 0, 0, 0);
	ASSERT(wait_fd(p.fd, POLLIN, 1000) & POLLIN);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	atomic_store(&g_sigpipe, 0);
	set_handler(SIGPIPE, on_sigpipe, 0);
	int err = send_until_epipe(p.fd, MSG_NOSIGNAL);
	signal(SIGPIPE, SIG_IGN);
	ASSERT_MSG(err == EPIPE, "send failed with %s, want EPIPE", test_errname(err));
	ASSERT_EQ(atomic_load(&g_sigpipe), 0);
	peer_end(&p);
}

static void case_sigpipe(void)
{
	struct peer p;

	peer_ready(&p);
	peer_do(&p, OP_CLOSE, 0, 0, 0);
	atomic_store(&g_sigpipe, 0);
	set_handler(SIGPIPE, on_sigpipe, 0);
	int err = send_until_epipe(p.fd, 0);
	int sigs = atomic_load(&g_sigpipe);
	/* A write() too, now that the connection is known to be gone. */
	ASSERT_FAILS(write(p.fd, "y", 1), EPIPE);
	int sigs2 = atomic_load(&g_sigpipe);
	signal(SIGPIPE, SIG_IGN);
	ASSERT_MSG(err == EPIPE, "send failed with %s, want EPIPE", test_errname(err));
	ASSERT_EQ(sigs, 1);
	ASSERT_EQ(sigs2, 2);
	peer_end(&p);
}

/* --- End of stream and errors ------------------------------------------- */

static void case_eof_shutdown(void)
{
	struct peer p;
	char b[16];

	peer_ready(&p);
	peer_do(&p, OP_WRITE, 5000, 0, 0);
	peer_do(&p, OP_SHUT, SHUT_WR, 0, 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 5000);
	ASSERT(wait_fd(p.fd, POLLIN | POLLRDHUP, 0) & POLLRDHUP);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	/* Half-closed: we can still send. */
	send_stream(p.fd, p.seed_out, &p.off_out, 3000);
	peer_do(&p, OP_READ, 3000, 0, 0);
	EXPECT_ACCEL(p.fd, "half-closed");
	ASSERT_SYS(shutdown(p.fd, SHUT_WR));
	ASSERT_FAILS(send(p.fd, b, 1, MSG_NOSIGNAL), EPIPE);
	ASSERT_EQ(peer_do(&p, OP_EXPECT_EOF, 1000, 0, 0).val, 0);
	peer_end(&p);
}

static void case_eof_close(void)
{
	struct peer p;
	char b[16];

	peer_ready(&p);
	peer_do(&p, OP_WRITE, 5000, 0, 0);
	peer_do(&p, OP_CLOSE, 0, 0, 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 5000);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	ASSERT_EQ(recv(p.fd, b, sizeof(b), MSG_DONTWAIT), 0);
	peer_end(&p);
}

/* The peer dies by SIGKILL with 1000 bytes of ours unread. */
static void kill_with_unread(struct peer *p)
{
	peer_ready(p);
	send_stream(p->fd, p->seed_out, &p->off_out, 1000);
	ASSERT_EQ(peer_do(p, OP_FIONREAD, 1000, 0, 0).val, 1000);
	peer_kill(p);
}

static void case_reset(void)
{
	struct peer p;
	char b[16];

	kill_with_unread(&p);
	double t0 = test_now();
	short re = wait_fd(p.fd, POLLIN, 1000);
	ASSERT_MSG(re & (POLLIN | POLLERR | POLLHUP), "not readable 1 s after the peer died");
	ASSERT_FAILS(read(p.fd, b, sizeof(b)), ECONNRESET);
	ASSERT_LT(test_now() - t0, 1);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	ASSERT_FAILS(send(p.fd, b, 1, MSG_NOSIGNAL), EPIPE);
	peer_end(&p);

	/* Writing first. */
	kill_with_unread(&p);
	int err = send_until_epipe(p.fd, MSG_NOSIGNAL);
	ASSERT_MSG(err == ECONNRESET || err == EPIPE, "send failed with %s", test_errname(err));
	peer_end(&p);
}

/* --- Socket information ------------------------------------------------- */

static int sockopt_get(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	ASSERT_SYS(getsockopt(fd, level, opt, &v, &len));
	ASSERT_EQ(len, sizeof(v));
	return v;
}

/* Set a boolean option and read it back. */
static void sockopt_flag(int fd, int level, int opt, int on)
{
	ASSERT_SYS(setsockopt(fd, level, opt, &on, sizeof(on)));
	ASSERT_MSG(!!sockopt_get(fd, level, opt) == on, "option %d: set %d, read back %d",
		   opt, on, sockopt_get(fd, level, opt));
}

static void check_names(struct peer *p)
{
	struct sockaddr_storage name, peer;
	socklen_t l1 = sizeof(name), l2 = sizeof(peer);
	char b1[96], b2[96];

	ASSERT_SYS(getsockname(p->fd, (struct sockaddr *)&name, &l1));
	ASSERT_SYS(getpeername(p->fd, (struct sockaddr *)&peer, &l2));
	struct resp r = peer_do(p, OP_ADDR, 0, 0, 0);
	ASSERT_MSG(addr_eq(&name, &r.peer), "our name %s, the peer sees %s",
		   addr_str(&name, b1, sizeof(b1)), addr_str(&r.peer, b2, sizeof(b2)));
	ASSERT_MSG(addr_eq(&peer, &r.name), "our peer %s, the peer's name %s",
		   addr_str(&peer, b1, sizeof(b1)), addr_str(&r.name, b2, sizeof(b2)));
}

static void check_sockopts(int fd, int family)
{
	int big = 65536;

	sockopt_flag(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	sockopt_flag(fd, IPPROTO_TCP, TCP_NODELAY, 0);
	sockopt_flag(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	sockopt_flag(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	ASSERT_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big)));
	ASSERT_GE(sockopt_get(fd, SOL_SOCKET, SO_RCVBUF), big); /* Linux doubles it */
	ASSERT_SYS(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big)));
	ASSERT_GE(sockopt_get(fd, SOL_SOCKET, SO_SNDBUF), big);
	ASSERT_EQ(sockopt_get(fd, SOL_SOCKET, SO_TYPE), SOCK_STREAM);
	ASSERT_EQ(sockopt_get(fd, SOL_SOCKET, SO_PROTOCOL), IPPROTO_TCP);
	ASSERT_EQ(sockopt_get(fd, SOL_SOCKET, SO_DOMAIN), family);
	ASSERT_EQ(sockopt_get(fd, SOL_SOCKET, SO_ERROR), 0);
	ASSERT_EQ(sockopt_get(fd, SOL_SOCKET, SO_ACCEPTCONN), 0);
}

static void sockinfo_one(int family, int we_accept)
{
	struct peer p;

	peer_spawn(&p, 0);
	if (we_accept)
		peer_accept_conn(&p, family, 0);
	else
		peer_connect_conn(&p, family);
	exchange(&p, p.fd, 100);
	EXPECT_ACCEL(p.fd, family == AF_INET6 ? "::1" : "127.0.0.1");
	EXPECT_PEER_ACCEL(&p, "peer");
	check_names(&p);
	check_sockopts(p.fd, family);
	exchange(&p, p.fd, 100000);
	EXPECT_ACCEL(p.fd, "after setsockopt");
	peer_end(&p);
}

static void case_sockinfo(void)
{
	sockinfo_one(AF_INET, 1);
	sockinfo_one(AF_INET, 0);
	if (ipv6_ok()) {
		sockinfo_one(AF_INET6, 1);
		sockinfo_one(AF_INET6, 0);
	} else {
		test_log("no IPv6 loopback here: ::1 not checked");
	}
}

/* --- The I/O calls ------------------------------------------------------ */

enum { IO_RW, IO_V, IO_SEND, IO_MSG, IO_TO, IO_CHK, IO_COUNT };
static const char *const io_names[IO_COUNT] = {
	"read/write", "readv/writev", "recv/send", "recvmsg/sendmsg",
	"recvfrom/sendto", "__read_chk/__recv_chk/__recvfrom_chk",
};

/* Split n bytes at p into 4 iovecs (one empty). */
static void split4(struct iovec *iov, void *p, size_t n)
{
	size_t a = n / 3, b = n > a ? 1 : 0;
	unsigned char *c = p;

	iov[0] = (struct iovec){ c, a };
	iov[1] = (struct iovec){ c + a, 0 };
	iov[2] = (struct iovec){ c + a, b };
	iov[3] = (struct iovec){ c + a + b, n - a - b };
}

static ssize_t io_write(int how, int fd, unsigned char *p, size_t n)
{
	struct iovec iov[4];
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = 4 };

	split4(iov, p, n);
	switch (how) {
	case IO_V: return writev(fd, iov, 4);
	case IO_SEND: return send(fd, p, n, 0);
	case IO_MSG: return sendmsg(fd, &m, 0);
	case IO_TO: return sendto(fd, p, n, 0, NULL, 0);
	default: return write(fd, p, n);
	}
}

static ssize_t io_read_msg(int fd, unsigned char *p, size_t n)
{
	struct iovec iov[4];
	struct sockaddr_storage ss;
	struct msghdr m = { .msg_name = &ss, .msg_namelen = sizeof(ss), .msg_iov = iov,
			    .msg_iovlen = 4, .msg_flags = -1 };

	split4(iov, p, n);
	ssize_t r = recvmsg(fd, &m, 0);
	if (r >= 0) {
		ASSERT_EQ(m.msg_flags, 0);
		ASSERT_EQ(m.msg_namelen, 0); /* TCP gives no source address */
	}
	return r;
}

static ssize_t io_read_from(int fd, unsigned char *p, size_t n, int chk)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	ssize_t r = chk ? __recvfrom_chk(fd, p, n, n, 0, (struct sockaddr *)&ss, &len)
			: recvfrom(fd, p, n, 0, (struct sockaddr *)&ss, &len);

	if (r >= 0)
		ASSERT_EQ(len, 0); /* TCP gives no source address */
	return r;
}

static ssize_t io_read(int how, int fd, unsigned char *p, size_t n, int turn)
{
	struct iovec iov[4];

	split4(iov, p, n);
	switch (how) {
	case IO_V: return readv(fd, iov, 4);
	case IO_SEND: return recv(fd, p, n, 0);
	case IO_MSG: return io_read_msg(fd, p, n);
	case IO_TO: return turn & 1 ? recvfrom(fd, p, n, 0, NULL, NULL)
				    : io_read_from(fd, p, n, 0);
	case IO_CHK:
		if (turn % 3 == 0)
			return __read_chk(fd, p, n, n);
		return turn % 3 == 1 ? __recv_chk(fd, p, n, n, 0) : io_read_from(fd, p, n, 1);
	default: return read(fd, p, n);
	}
}

static void io_one(struct peer *p, int how, size_t n, unsigned char *buf)
{
	size_t done = 0;
	int turn = 0;

	test_stream_fill(p->seed_out, p->off_out, buf, n);
	while (done < n) {
		ssize_t k = io_write(how, p->fd, buf + done, n - done);
		ASSERT_SYS(k);
		done += (size_t)k;
	}
	p->off_out += n;
	peer_do(p, OP_READ, (int64_t)n, 0, 0);
	peer_do(p, OP_WRITE, (int64_t)n, 0, 0);
	for (done = 0; done < n; turn++) {
		ssize_t k = io_read(how, p->fd, buf, n - done, turn);
		ASSERT_SYS(k);
		ASSERT_MSG(k > 0, "%s: end of stream", io_names[how]);
		check_stream(p->seed_in, p->off_in, buf, (size_t)k);
		p->off_in += (uint64_t)k;
		done += (size_t)k;
	}
}

static void case_io_calls(void)
{
	static const size_t sizes[] = { 1, 7, 1000, 65536, 300001 };
	unsigned char *buf = malloc(300001);
	struct peer p;

	ASSERT_NOT_NULL(buf);
	peer_ready(&p);
	for (int how = 0; how < IO_COUNT; how++) {
		test_log("%s", io_names[how]);
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
			io_one(&p, how, sizes[i], buf);
	}
	ASSERT_EQ(write(p.fd, buf, 0), 0);
	ASSERT_EQ(send(p.fd, buf, 0, 0), 0);
	ASSERT_EQ(read(p.fd, buf, 0), 0);
	/* Linux: read() of 0 bytes returns 0 at once, recv() of 0 bytes waits
	 * for data like any recv (so EAGAIN here, where nothing is unread). */
	ASSERT_FAILS(recv(p.fd, buf, 0, MSG_DONTWAIT), EAGAIN);
	exchange(&p, p.fd, 10);
	EXPECT_ACCEL(p.fd, "after every I/O call");
	free(buf);
	peer_end(&p);
}

static void case_sendfile(void)
{
	char path[4096];
	const char *tmp = getenv("TMPDIR");
	unsigned char *data = malloc(MIB);
	struct test_rng rng;
	struct peer p;

	ASSERT_NOT_NULL(data);
	snprintf(path, sizeof(path), "%s/t_preload-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int f = mkstemp(path);
	ASSERT_SYS(f);
	unlink(path);
	test_rng_seed(&rng, test_seed() ^ 0x5e4df11e);
	test_rng_fill(&rng, data, MIB);
	write_all(f, data, MIB);
	uint64_t sum = test_sum(data, MIB);
	peer_ready(&p);
	peer_send(&p, OP_READSUM, MIB, 0, 0);
	off_t off = 0;
	while (off < MIB) {
		ssize_t n = sendfile(p.fd, f, &off, (size_t)(MIB - off));
		ASSERT_SYS(n);
		ASSERT_GT(n, 0);
	}
	ASSERT_EQ(lseek(f, 0, SEEK_CUR), MIB); /* an offset given: position kept */
	ASSERT_UEQ(peer_wait(&p).sum, sum);
	/* From the file position, asking for more than is left. */
	ASSERT_SYS(lseek(f, 0, SEEK_SET));
	peer_send(&p, OP_READSUM, MIB, 0, 0);
	for (uint64_t done = 0; done < MIB;) {
		ssize_t n = sendfile(p.fd, f, NULL, 2 * MIB);
		ASSERT_SYS(n);
		ASSERT_GT(n, 0);
		done += (uint64_t)n;
	}
	ASSERT_EQ(sendfile(p.fd, f, NULL, MIB), 0);
	ASSERT_UEQ(peer_wait(&p).sum, sum);
	EXPECT_ACCEL(p.fd, "sendfile");
	close(f);
	free(data);
	peer_end(&p);
}

/* --- Duplicated fds ----------------------------------------------------- */

enum { DUP_DUP, DUP_DUP2, DUP_DUP3, DUP_FDDUP, DUP_FDDUP_CLOEXEC, DUP_COUNT };
static const char *const dup_names[DUP_COUNT] = {
	"dup", "dup2", "dup3", "F_DUPFD", "F_DUPFD_CLOEXEC",
};

/* dup2/dup3 onto an open pipe: the pipe's read end is closed silently. */
static int dup_onto_pipe(int fd, int cloexec)
{
	int pp[2], d;

	ASSERT_SYS(pipe(pp));
	if (cloexec) {
		ASSERT_FAILS(dup3(fd, fd, 0), EINVAL);
		d = dup3(fd, pp[0], O_CLOEXEC);
	} else {
		ASSERT_EQ(dup2(fd, fd), fd);
		d = dup2(fd, pp[0]);
	}
	ASSERT_EQ(d, pp[0]);
	ASSERT_FAILS(write(pp[1], "x", 1), EPIPE); /* no reader left */
	close(pp[1]);
	return d;
}

static int make_dup(int how, int fd)
{
	int d = -1;

	switch (how) {
	case DUP_DUP: d = dup(fd); break;
	case DUP_DUP2: d = dup_onto_pipe(fd, 0); break;
	case DUP_DUP3: d = dup_onto_pipe(fd, 1); break;
	case DUP_FDDUP: d = fcntl(fd, F_DUPFD, 200); break;
	case DUP_FDDUP_CLOEXEC: d = fcntl(fd, F_DUPFD_CLOEXEC, 300); break;
	}
	ASSERT_SYS(d);
	ASSERT_NE(d, fd);
	if (how == DUP_FDDUP || how == DUP_FDDUP_CLOEXEC)
		ASSERT_GE(d, how == DUP_FDDUP ? 200 : 300);
	int want = how == DUP_DUP3 || how == DUP_FDDUP_CLOEXEC;
	ASSERT_EQ(!!(fd_flags(d) & FD_CLOEXEC), want);
	return d;
}

/* Close the original: the duplicate still works, then its close is EOF. */
static void dup_keep_dup(int how)
{
	struct peer p;
	char b[8];

	peer_ready(&p);
	int d = make_dup(how, p.fd);
	EXPECT_ACCEL(d, dup_names[how]);
	exchange(&p, d, 1000);
	if (how == DUP_DUP) { /* one open file description: shared O_NONBLOCK */
		set_nonblock(d, 1);
		ASSERT(fcntl(p.fd, F_GETFL) & O_NONBLOCK);
		ASSERT_FAILS(read(p.fd, b, sizeof(b)), EAGAIN);
		set_nonblock(p.fd, 0);
		ASSERT(!(fcntl(d, F_GETFL) & O_NONBLOCK));
	}
	ASSERT_SYS(close(p.fd));
	p.fd = d;
	exchange(&p, d, 1000);
	EXPECT_ACCEL(d, "the duplicate, original closed");
	ASSERT_SYS(close(d));
	p.fd = -1;
	ASSERT_EQ(peer_do(&p, OP_EXPECT_EOF, 1000, 0, 0).val, 0);
	peer_end(&p);
}

/* Close the duplicate: the original still works; dup2 over it is a close. */
static void dup_keep_orig(int how)
{
	struct peer p;
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ASSERT_SYS(null);
	peer_ready(&p);
	int d = make_dup(how, p.fd);
	ASSERT_SYS(close(d));
	exchange(&p, p.fd, 1000);
	EXPECT_ACCEL(p.fd, "original, duplicate closed");
	struct resp r = peer_do(&p, OP_EXPECT_QUIET, 100, 0, 0);
	ASSERT_MSG(r.val == 0, "the peer saw revents 0x%jx after we closed a duplicate",
		   (intmax_t)r.val2);
	ASSERT_EQ(dup2(null, p.fd), p.fd);
	ASSERT_EQ(peer_do(&p, OP_EXPECT_EOF, 1000, 0, 0).val, 0);
	ASSERT_EQ(accel_state(p.fd) > 0, 0);
	close(null);
	peer_end(&p);
}

static void case_dup(void)
{
	for (int how = 0; how < DUP_COUNT; how++) {
		test_log("%s", dup_names[how]);
		dup_keep_dup(how);
		dup_keep_orig(how);
	}
}

/* --- Waiting: poll, ppoll, select, pselect, __poll_chk ------------------ */

enum { W_POLL, W_PPOLL, W_POLL_CHK, W_SELECT, W_PSELECT, W_COUNT };
static const char *const wait_names[W_COUNT] = {
	"poll", "ppoll", "__poll_chk", "select", "pselect",
};

static int wait_sel(int how, int fd, short ev, int ms)
{
	fd_set s;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	int rc;

	FD_ZERO(&s);
	FD_SET(fd, &s);
	fd_set *rd = ev == POLLIN ? &s : NULL, *wr = ev == POLLIN ? NULL : &s;
	if (how == W_SELECT)
		rc = select(fd + 1, rd, wr, NULL, &tv);
	else
		rc = pselect(fd + 1, rd, wr, NULL, &ts, NULL);
	ASSERT_SYS(rc);
	ASSERT_EQ(rc, !!FD_ISSET(fd, &s));
	return rc;
}

/* 1 if fd is ready for ev (POLLIN or POLLOUT) within ms, else 0. */
static int wait_how(int how, int fd, short ev, int ms)
{
	struct pollfd p = { .fd = fd, .events = ev };
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	int rc;

	if (how == W_SELECT || how == W_PSELECT)
		return wait_sel(how, fd, ev, ms);
	if (how == W_POLL)
		rc = poll(&p, 1, ms);
	else if (how == W_PPOLL)
		rc = ppoll(&p, 1, &ts, NULL);
	else
		rc = __poll_chk(&p, 1, ms, sizeof(p));
	ASSERT_SYS(rc);
	ASSERT_EQ(rc, p.revents != 0);
	ASSERT_MSG(!(p.revents & ~ev), "%s: revents 0x%x for events 0x%x", wait_names[how],
		   p.revents, ev);
	return rc;
}

static void wait_script(struct peer *p, int how)
{
	ASSERT_EQ(wait_how(how, p->fd, POLLIN, 0), 0);
	ASSERT_EQ(wait_how(how, p->fd, POLLOUT, 0), 1);
	peer_do(p, OP_WRITE, 100, 0, 0);
	ASSERT_EQ(wait_how(how, p->fd, POLLIN, 2000), 1);
	recv_stream(p->fd, p->seed_in, &p->off_in, 100);
	ASSERT_EQ(wait_how(how, p->fd, POLLIN, 0), 0);
	double t0 = test_now();
	ASSERT_EQ(wait_how(how, p->fd, POLLIN, 100), 0);
	ASSERT_GE((test_now() - t0) * 1000, 90);
	/* Asleep when the data comes. */
	peer_send(p, OP_SLEEP, 100, 0, 0);
	peer_send(p, OP_WRITE, 10, 0, 0);
	t0 = test_now();
	ASSERT_EQ(wait_how(how, p->fd, POLLIN, 5000), 1);
	ASSERT_GE((test_now() - t0) * 1000, 50);
	recv_stream(p->fd, p->seed_in, &p->off_in, 10);
	peer_wait(p);
	peer_wait(p);
}

/* Several entries: -1 is skipped, each gets its own revents. */
static void wait_array(struct peer *p)
{
	int pp[2];
	struct pollfd f[3];

	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	f[0] = (struct pollfd){ .fd = -1, .events = POLLIN, .revents = 7 };
	f[1] = (struct pollfd){ .fd = pp[0], .events = POLLIN };
	f[2] = (struct pollfd){ .fd = p->fd, .events = POLLIN };
	ASSERT_EQ(poll(f, 3, 0), 0);
	ASSERT_EQ(write(pp[1], "x", 1), 1);
	ASSERT_EQ(poll(f, 3, 1000), 1);
	ASSERT(f[0].revents == 0 && f[1].revents == POLLIN && f[2].revents == 0);
	peer_do(p, OP_WRITE, 10, 0, 0);
	ASSERT(wait_fd(p->fd, POLLIN, 1000));
	ASSERT_EQ(poll(f, 3, 1000), 2);
	ASSERT(f[0].revents == 0 && f[1].revents == POLLIN && f[2].revents == POLLIN);
	recv_stream(p->fd, p->seed_in, &p->off_in, 10);
	close(pp[0]);
	close(pp[1]);
}

/* Full: not writable; the peer reads: writable again. */
static void wait_room(struct peer *p)
{
	unsigned char *buf = malloc(MIB);
	uint64_t total = 0;
	ssize_t n;
	int e;

	ASSERT_NOT_NULL(buf);
	set_nonblock(p->fd, 1);
	for (;;) {
		test_stream_fill(p->seed_out, p->off_out, buf, MIB);
		n = write(p->fd, buf, MIB);
		e = errno;
		if (n < 0)
			break;
		total += (uint64_t)n;
		p->off_out += (uint64_t)n;
	}
	free(buf);
	ASSERT_FAILED(n, e, EAGAIN);
	ASSERT_EQ(wait_fd(p->fd, POLLOUT, 0), 0);
	ASSERT_EQ(wait_how(W_SELECT, p->fd, POLLOUT, 0), 0);
	set_nonblock(p->fd, 0);
	peer_send(p, OP_READ, (int64_t)total, 0, 0);
	ASSERT(wait_fd(p->fd, POLLOUT, 5000) & POLLOUT);
	peer_wait(p);
}

static void case_wait(void)
{
	struct peer p;

	peer_ready(&p);
	for (int how = 0; how < W_COUNT; how++) {
		test_log("%s", wait_names[how]);
		wait_script(&p, how);
	}
	wait_array(&p);
	wait_room(&p);
	EXPECT_ACCEL(p.fd, "after the waits");
	peer_end(&p);
}

/* --- epoll -------------------------------------------------------------- */

#define TAG_SOCK 0x5ec0de00c0ffee01ull
#define TAG_PIPE 0x7171e00dfacade02ull

static int ep_wait(int ep, struct epoll_event *ev, int max, int ms)
{
	int n;

	do
		n = epoll_wait(ep, ev, max, ms);
	while (n < 0 && errno == EINTR);
	ASSERT_SYS(n);
	return n;
}

static int ep_new(int fd, uint32_t events, uint64_t tag)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	ASSERT_SYS(ep);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	return ep;
}

/* Exactly one event, for the socket; returns its events. */
static uint32_t ep_one_at(const char *file, int line, int ep, int ms)
{
	struct epoll_event ev[4];
	int n = ep_wait(ep, ev, 4, ms);

	if (n != 1 || ev[0].data.u64 != TAG_SOCK)
		test_fail_at(file, line, "epoll_wait(%d ms): %d events, want 1 (data 0x%" PRIx64
			     ", events 0x%x)", ms, n, n ? ev[0].data.u64 : 0,
			     n ? ev[0].events : 0);
	return ev[0].events;
}
#define ep_one(ep, ms) ep_one_at(__FILE__, __LINE__, ep, ms)

/* Level-triggered events of the socket once they include `until` (1 s). */
static uint32_t ep_until_at(const char *file, int line, int ep, uint32_t until)
{
	double end = test_now() + 1;
	uint32_t e;

	do
		e = ep_one_at(file, line, ep, 1000);
	while (!(e & until) && test_now() < end && (test_sleep_ms(1), 1));
	if (!(e & until))
		test_fail_at(file, line, "events 0x%x, still no 0x%x after 1 s", e, until);
	return e;
}
#define ep_until(ep, until) ep_until_at(__FILE__, __LINE__, ep, until)

static void case_epoll_lt(void)
{
	struct peer p;
	struct epoll_event ev[4];

	peer_ready(&p);
	int ep = ep_new(p.fd, EPOLLIN, TAG_SOCK);
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN);
	recv_stream(p.fd, p.seed_in, &p.off_in, 50);
	ASSERT_UEQ(ep_one(ep, 0), EPOLLIN); /* still readable */
	ASSERT_EQ(epoll_pwait(ep, ev, 4, 0, NULL), 1);
	recv_stream(p.fd, p.seed_in, &p.off_in, 50);
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0);
	double t0 = test_now();
	ASSERT_EQ(ep_wait(ep, ev, 4, 100), 0);
	ASSERT_GE((test_now() - t0) * 1000, 90);
	ev[0] = (struct epoll_event){ .events = EPOLLIN | EPOLLOUT, .data.u64 = TAG_SOCK };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, p.fd, &ev[0]));
	ASSERT_UEQ(ep_one(ep, 0), EPOLLOUT);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, p.fd, NULL));
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_EQ(ep_wait(ep, ev, 4, 100), 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 100);
	EXPECT_ACCEL(p.fd, "epoll LT");
	close(ep);
	peer_end(&p);
}

static uint64_t drain_nonblock(int fd, struct peer *p)
{
	unsigned char b[CHUNK];
	uint64_t total = 0;
	ssize_t n;

	while ((n = read(fd, b, sizeof(b))) > 0) {
		check_stream(p->seed_in, p->off_in, b, (size_t)n);
		p->off_in += (uint64_t)n;
		total += (uint64_t)n;
	}
	int e = errno;
	ASSERT_FAILED(n, e, EAGAIN);
	return total;
}

static void case_epoll_et(void)
{
	struct peer p;
	struct epoll_event ev[4];

	peer_ready(&p);
	set_nonblock(p.fd, 1);
	int ep = ep_new(p.fd, EPOLLIN | EPOLLET, TAG_SOCK);
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN);
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0); /* unread, but nothing new */
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_EQ(ep_wait(ep, ev, 4, 50), 0);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN); /* a new arrival */
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0);
	ASSERT_EQ(drain_nonblock(p.fd, &p), 190);
	ASSERT_EQ(ep_wait(ep, ev, 4, 50), 0);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN);
	ASSERT_EQ(drain_nonblock(p.fd, &p), 100);
	ASSERT_EQ(ep_wait(ep, ev, 4, 0), 0);
	EXPECT_ACCEL(p.fd, "epoll ET");
	close(ep);
	peer_end(&p);
}

static void case_epoll_oneshot(void)
{
	struct peer p;
	struct epoll_event ev[4];

	peer_ready(&p);
	int ep = ep_new(p.fd, EPOLLIN | EPOLLONESHOT, TAG_SOCK);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN);
	recv_stream(p.fd, p.seed_in, &p.off_in, 100);
	peer_do(&p, OP_WRITE, 100, 0, 0);
	ASSERT_EQ(ep_wait(ep, ev, 4, 200), 0); /* disarmed */
	ev[0] = (struct epoll_event){ .events = EPOLLIN | EPOLLONESHOT, .data.u64 = TAG_SOCK };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, p.fd, &ev[0]));
	ASSERT_UEQ(ep_one(ep, 1000), EPOLLIN); /* re-armed, data waiting */
	ASSERT_EQ(ep_wait(ep, ev, 4, 50), 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 100);
	EXPECT_ACCEL(p.fd, "EPOLLONESHOT");
	close(ep);
	peer_end(&p);
}

static void case_epoll_rdhup(void)
{
	struct peer p;
	char b[16];

	peer_ready(&p);
	int ep = ep_new(p.fd, EPOLLIN | EPOLLRDHUP, TAG_SOCK);
	peer_do(&p, OP_WRITE, 10, 0, 0);
	peer_do(&p, OP_SHUT, SHUT_WR, 0, 0);
	uint32_t e = ep_until(ep, EPOLLRDHUP);
	ASSERT_UEQ(e, EPOLLIN | EPOLLRDHUP);
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0);
	ASSERT_UEQ(ep_one(ep, 0), EPOLLIN | EPOLLRDHUP);
	ASSERT_UEQ(wait_fd(p.fd, POLLIN | POLLRDHUP, 0), POLLIN | POLLRDHUP);
	EXPECT_ACCEL(p.fd, "EPOLLRDHUP");
	close(ep);
	peer_end(&p);
}

static void case_epoll_hup(void)
{
	struct peer p;

	/* The peer closes: RDHUP; we shut down too: HUP. */
	peer_ready(&p);
	int ep = ep_new(p.fd, EPOLLIN | EPOLLRDHUP, TAG_SOCK);
	peer_do(&p, OP_CLOSE, 0, 0, 0);
	uint32_t e = ep_until(ep, EPOLLRDHUP);
	ASSERT_UEQ(e, EPOLLIN | EPOLLRDHUP); /* no HUP or ERR yet */
	ASSERT_SYS(shutdown(p.fd, SHUT_WR));
	e = ep_until(ep, EPOLLHUP);
	ASSERT_UEQ(e & ~(uint32_t)EPOLLOUT, EPOLLIN | EPOLLRDHUP | EPOLLHUP);
	close(ep);
	peer_end(&p);

	/* The peer dies with unread data: HUP and ERR (TCP's reset). */
	kill_with_unread(&p);
	ep = ep_new(p.fd, EPOLLIN | EPOLLRDHUP, TAG_SOCK);
	e = ep_until(ep, EPOLLHUP);
	ASSERT_MSG((e & (EPOLLHUP | EPOLLERR)) == (EPOLLHUP | EPOLLERR),
		   "events 0x%x after the peer died", e);
	close(ep);
	peer_end(&p);
}

static void ep_tags(int ep, int want, uint64_t *tags)
{
	struct epoll_event ev[4];

	ASSERT_EQ(ep_wait(ep, ev, 4, 1000), want);
	for (int i = 0; i < want; i++) {
		ASSERT_UEQ(ev[i].events, EPOLLIN);
		tags[i] = ev[i].data.u64;
	}
}

static void case_epoll_mixed(void)
{
	struct peer p;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_PIPE };
	uint64_t t[2];
	int pp[2];
	char x;

	peer_ready(&p);
	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	int ep = ep_new(p.fd, EPOLLIN, TAG_SOCK);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev));
	ASSERT_EQ(ep_wait(ep, &ev, 1, 0), 0);
	ASSERT_EQ(write(pp[1], "x", 1), 1);
	ep_tags(ep, 1, t);
	ASSERT_UEQ(t[0], TAG_PIPE);
	peer_do(&p, OP_WRITE, 10, 0, 0);
	ASSERT(wait_fd(p.fd, POLLIN, 1000));
	ep_tags(ep, 2, t);
	ASSERT((t[0] == TAG_PIPE && t[1] == TAG_SOCK) || (t[0] == TAG_SOCK && t[1] == TAG_PIPE));
	ASSERT_EQ(read(pp[0], &x, 1), 1);
	ep_tags(ep, 1, t);
	ASSERT_UEQ(t[0], TAG_SOCK);
	recv_stream(p.fd, p.seed_in, &p.off_in, 10);
	ASSERT_EQ(ep_wait(ep, &ev, 1, 50), 0);
	EXPECT_ACCEL(p.fd, "in a mixed epoll set");
	close(ep);
	close(pp[0]);
	close(pp[1]);
	peer_end(&p);
}

/* --- Processes and threads ---------------------------------------------- */

struct fork_arg {
	int fd, ctl_r, ctl_w;
	uint64_t n;
};

/* The forked child: echo n bytes, wait for the word, report, close. */
static void fork_child(void *arg)
{
	const struct fork_arg *a = arg;
	unsigned char buf[CHUNK];
	char x;

	close(a->ctl_w);
	for (uint64_t done = 0; done < a->n;) {
		size_t k = a->n - done < CHUNK ? (size_t)(a->n - done) : CHUNK;
		ssize_t r = read(a->fd, buf, k);
		ASSERT_SYS(r);
		ASSERT_MSG(r > 0, "end of stream after %ju bytes", (uintmax_t)done);
		write_all(a->fd, buf, (size_t)r);
		done += (uint64_t)r;
	}
	ASSERT_EQ(read(a->ctl_r, &x, 1), 1);
	int code = accel_code(accel_state(a->fd), g_expect_accel);
	ASSERT_SYS(close(a->fd));
	exit(code);
}

static void case_fork(void)
{
	struct peer p;
	int ctl[2];
	const uint64_t n = 300000;

	peer_ready(&p);
	ASSERT_SYS(pipe2(ctl, O_CLOEXEC));
	struct fork_arg a = { p.fd, ctl[0], ctl[1], n };
	pid_t child = test_fork(fork_child, &a);
	ASSERT_SYS(close(p.fd));
	p.fd = -1;
	close(ctl[0]);
	peer_do(&p, OP_PUMP, (int64_t)n, (int64_t)n, 1);
	struct resp r = peer_do(&p, OP_EXPECT_QUIET, 200, 0, 0);
	ASSERT_MSG(r.val == 0, "the client saw revents 0x%jx while the child holds the socket",
		   (intmax_t)r.val2);
	ASSERT_EQ(write(ctl[1], "x", 1), 1);
	ASSERT_EQ(peer_do(&p, OP_EXPECT_EOF, 2000, 0, 0).val, 0);
	check_child_code(test_wait(child, 10), "forked child");
	close(ctl[1]);
	peer_end(&p);
}

/* The new image: echo to the end on the inherited fd, exit with the
 * verdict of accel_code(). */
static int exec_child_main(void)
{
	const char *f = getenv("T_PRELOAD_FD"), *n = getenv("T_PRELOAD_N");
	unsigned char buf[CHUNK];
	uint64_t done = 0;
	ssize_t r;

	test_init("t_preload-exec");
	ASSERT(f && n);
	int fd = atoi(f);
	int st0 = accel_state(fd);
	ASSERT_SYS(fcntl(fd, F_GETFD));
	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		write_all(fd, buf, (size_t)r);
		done += (uint64_t)r;
	}
	ASSERT_SYS(r);
	ASSERT_UEQ(done, strtoull(n, NULL, 10));
	int st1 = accel_state(fd);
	ASSERT_SYS(close(fd));
	test_log("after exec: fd %d upgraded %d at start, %d after %ju bytes", fd, st0, st1,
		 (uintmax_t)done);
	int c0 = accel_code(st0, g_expect_accel);
	return c0 ? c0 : accel_code(st1, g_expect_accel);
}

struct exec_arg {
	int fd;
	uint64_t n;
};

static void exec_launch(void *arg)
{
	const struct exec_arg *a = arg;
	char fd[16], n[32];

	snprintf(fd, sizeof(fd), "%d", a->fd);
	snprintf(n, sizeof(n), "%ju", (uintmax_t)a->n);
	setenv("T_PRELOAD_FD", fd, 1);
	setenv("T_PRELOAD_N", n, 1);
	set_seed_env();
	char *argv[] = { g_self, "exec-child", NULL };
	execve(g_self, argv, environ);
	TEST_FAIL_MSG("execve(%s): %s", g_self, strerror(errno));
}

static void case_exec(void)
{
	struct peer p;
	const uint64_t n = 300000;

	peer_ready(&p);
	ASSERT_EQ(fd_flags(p.fd) & FD_CLOEXEC, 0);
	struct exec_arg a = { p.fd, n };
	pid_t child = test_fork(exec_launch, &a);
	ASSERT_SYS(close(p.fd));
	p.fd = -1;
	peer_do(&p, OP_PUMP, (int64_t)n, (int64_t)n, 1);
	peer_do(&p, OP_SHUT, SHUT_WR, 0, 0);
	check_child_code(test_wait(child, 10), "exec'd image");
	ASSERT_EQ(peer_do(&p, OP_EXPECT_EOF, 2000, 0, 0).val, 0);
	peer_end(&p);
}

struct techo {
	struct peer *p;
	uint64_t n;
};

static void *techo_main(void *arg)
{
	struct techo *t = arg;
	struct peer *p = t->p;
	struct flow w = { p->seed_out, p->off_out, t->n, 0 };
	struct flow r = { p->seed_out, p->off_out, t->n, 0 };

	pump(p->fd, &w, &r, p->seed_out);
	p->off_out += t->n;
	return NULL;
}

static uint64_t volume(uint64_t want, unsigned div)
{
	uint64_t cap = test_env_u64("SHUNT_TEST_BYTES", 1ull << 30) / div;

	return want < cap ? want : cap;
}

static void case_threads(void)
{
	struct peer p[4];
	struct techo t[4];
	pthread_t th[4];
	uint64_t n = volume(8 * MIB, 32);

	for (int i = 0; i < 4; i++) /* all forks first: no child inherits a connection */
		peer_spawn(&p[i], 0);
	for (int i = 0; i < 4; i++) {
		peer_accept_conn(&p[i], AF_INET, 0);
		peer_send(&p[i], OP_ECHO, 0, 0, 0);
		t[i] = (struct techo){ &p[i], n };
	}
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(pthread_create(&th[i], NULL, techo_main, &t[i]), 0);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(pthread_join(th[i], NULL), 0);
	for (int i = 0; i < 4; i++) {
		EXPECT_ACCEL(p[i].fd, "a thread's connection");
		ASSERT_SYS(shutdown(p[i].fd, SHUT_WR));
		struct resp r = peer_wait(&p[i]);
		ASSERT_EQ(r.err, 0);
		ASSERT_UEQ(r.val, n);
		EXPECT_PEER_ACCEL(&p[i], "echo peer");
		peer_end(&p[i]);
	}
}

#define MSG_SIZE 1024

struct writer {
	int fd, t, msgs, split;
	uint64_t seed;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	unsigned char m[MSG_SIZE];

	for (int i = 0; i < w->msgs; i++) {
		sub_fill(w->seed, w->t, (uint64_t)i * MSG_SIZE, m, MSG_SIZE);
		for (size_t done = 0; done < MSG_SIZE;) {
			ssize_t n = write(w->fd, m + done, MSG_SIZE - done);
			if (n < 0 && errno == EINTR)
				continue;
			ASSERT_SYS(n);
			w->split += done == 0 && n < MSG_SIZE;
			done += (size_t)n;
		}
	}
	return NULL;
}

/* Two threads write one connection at once.  POSIX promises no atomicity
 * on a stream socket, so the check is that each writer's bytes all arrive,
 * once, in its order; whole-message interleaving is only reported. */
static void case_shared_writes(void)
{
	struct peer p;
	struct writer w[2];
	pthread_t th[2];
	int msgs = (int)(volume(4 * MIB, 64) / MSG_SIZE);

	peer_ready(&p);
	peer_send(&p, OP_DEMUX, MSG_SIZE, 0, 0);
	for (int t = 0; t < 2; t++) {
		w[t] = (struct writer){ p.fd, t, msgs, 0, p.seed_out };
		ASSERT_EQ(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
	}
	for (int t = 0; t < 2; t++)
		ASSERT_EQ(pthread_join(th[t], NULL), 0);
	EXPECT_ACCEL(p.fd, "two writers");
	ASSERT_SYS(shutdown(p.fd, SHUT_WR));
	struct resp r = peer_wait(&p);
	ASSERT_UEQ(r.val, (uint64_t)msgs * MSG_SIZE);
	ASSERT_UEQ(r.val2, (uint64_t)msgs * MSG_SIZE);
	test_log("%d messages each; %jd cut by the other writer; short writes %d and %d",
		 msgs, (intmax_t)r.val3, w[0].split, w[1].split);
	peer_end(&p);
}

/* --- Data integrity ----------------------------------------------------- */

struct bflow {
	int fd;
	struct flow f;
	uint64_t rs;
};

/* Blocking writes of random sizes by write, send and writev. */
static void *bwriter_main(void *arg)
{
	struct bflow *b = arg;
	unsigned char *buf = malloc(PUMP_MAX);
	struct test_rng rng;

	ASSERT_NOT_NULL(buf);
	test_rng_seed(&rng, b->rs);
	while (b->f.done < b->f.n) {
		size_t k = (size_t)test_rng_size(&rng, PUMP_MAX);
		if (k > b->f.n - b->f.done)
			k = (size_t)(b->f.n - b->f.done);
		test_stream_fill(b->f.seed, b->f.off + b->f.done, buf, k);
		struct iovec iov[2] = { { buf, k / 2 }, { buf + k / 2, k - k / 2 } };
		uint64_t how = test_rng_next(&rng) % 3;
		ssize_t n = how == 0 ? write(b->fd, buf, k)
			  : how == 1 ? send(b->fd, buf, k, 0) : writev(b->fd, iov, 2);
		ASSERT_SYS(n);
		ASSERT_GT(n, 0);
		b->f.done += (uint64_t)n;
	}
	free(buf);
	return NULL;
}

/* Blocking reads of random sizes by read, recv and readv. */
static void breader(struct bflow *b)
{
	unsigned char *buf = malloc(PUMP_MAX);
	struct test_rng rng;

	ASSERT_NOT_NULL(buf);
	test_rng_seed(&rng, b->rs);
	while (b->f.done < b->f.n) {
		size_t k = (size_t)test_rng_size(&rng, PUMP_MAX);
		if (k > b->f.n - b->f.done)
			k = (size_t)(b->f.n - b->f.done);
		struct iovec iov[2] = { { buf, k / 3 }, { buf + k / 3, k - k / 3 } };
		uint64_t how = test_rng_next(&rng) % 3;
		ssize_t n = how == 0 ? read(b->fd, buf, k)
			  : how == 1 ? recv(b->fd, buf, k, 0) : readv(b->fd, iov, 2);
		ASSERT_SYS(n);
		ASSERT_MSG(n > 0, "end of stream after %ju bytes", (uintmax_t)b->f.done);
		check_stream(b->f.seed, b->f.off + b->f.done, buf, (size_t)n);
		b->f.done += (uint64_t)n;
	}
	free(buf);
}

static void case_integrity(void)
{
	struct peer p;
	pthread_t th;
	uint64_t n = volume(64 * MIB, 4);

	peer_ready(&p);
	peer_send(&p, OP_PUMP, (int64_t)n, (int64_t)n, 0);
	struct bflow w = { p.fd, { p.seed_out, p.off_out, n, 0 }, test_seed() ^ 1 };
	struct bflow r = { p.fd, { p.seed_in, p.off_in, n, 0 }, test_seed() ^ 2 };
	double t0 = test_now();
	ASSERT_EQ(pthread_create(&th, NULL, bwriter_main, &w), 0);
	breader(&r);
	ASSERT_EQ(pthread_join(th, NULL), 0);
	peer_wait(&p);
	p.off_out += n;
	p.off_in += n;
	test_log("%ju MiB each way in %.2f s", (uintmax_t)(n / MIB), test_now() - t0);
	EXPECT_ACCEL(p.fd, "after the volume");
	exchange(&p, p.fd, 10);
	peer_end(&p);
}

/* --- Plain TCP fallback ------------------------------------------------- */

static void plain_one(int we_accept)
{
	struct peer p;
	char b[16];

	peer_spawn(&p, 1);
	if (we_accept)
		peer_accept_conn(&p, AF_INET, 0);
	else
		peer_connect_conn(&p, AF_INET);
	peer_send(&p, OP_DRAIN, 0, 0, 0);
	struct bflow w = { p.fd, { p.seed_out, 0, 200000, 0 }, test_seed() ^ 3 };
	bwriter_main(&w);
	p.off_out += 200000;
	ASSERT_SYS(shutdown(p.fd, SHUT_WR));
	struct resp r = peer_wait(&p);
	ASSERT_EQ(r.err, 0);
	ASSERT_EQ(r.val, 200000); /* not a byte more */
	peer_do(&p, OP_WRITE, 100000, 0, 0);
	peer_do(&p, OP_CLOSE, 0, 0, 0);
	recv_stream(p.fd, p.seed_in, &p.off_in, 100000);
	ASSERT_EQ(read(p.fd, b, sizeof(b)), 0); /* not a byte more */
	EXPECT_PLAIN(p.fd, we_accept ? "accepted from a plain client" : "connected to a plain server");
	peer_end(&p);
}

static void case_plain_fallback(void)
{
	plain_one(0);
	plain_one(1);
}

/* The client writes before the server accepts: whatever path it takes,
 * every byte arrives and both ends agree on the path. */
static void case_early_write(void)
{
	struct peer p;
	int port, lfd;

	peer_spawn(&p, 0);
	lfd = tcp_listen(AF_INET, &port);
	peer_send(&p, OP_CONNECT, port, AF_INET, 0);
	peer_send(&p, OP_WRITE, 1000, 0, 0);
	test_sleep_ms(100);
	p.fd = accept(lfd, NULL, NULL);
	ASSERT_SYS(p.fd);
	close(lfd);
	recv_stream(p.fd, p.seed_in, &p.off_in, 1000);
	peer_wait(&p);
	peer_wait(&p);
	exchange(&p, p.fd, 100000);
	int ours = accel_state(p.fd);
	int theirs = (int)peer_do(&p, OP_ACCEL, 0, 0, 0).val;
	test_log("written before accept: ours %d, the peer's %d", ours, theirs);
	ASSERT_EQ(ours, theirs);
	peer_end(&p);
}

/* --- Leaks -------------------------------------------------------------- */

/* Rendezvous files of our listeners' ports under SHUNT_DIR.  The shim
 * names them .../<family>-<address>-<port>; other processes' files (a
 * shared SHUNT_DIR) do not count. */
static int g_ports[64], g_nports, g_port_files;

static int count_port_file(const char *path, const struct stat *st, int type,
			   struct FTW *f)
{
	size_t len = strlen(path + f->base);
	char suffix[16];

	(void)st;
	if (type == FTW_D || type == FTW_DP || type == FTW_DNR)
		return 0;
	for (int i = 0; i < g_nports; i++) {
		size_t k = (size_t)snprintf(suffix, sizeof(suffix), "-%d", g_ports[i]);
		if (len >= k && !strcmp(path + f->base + len - k, suffix))
			g_port_files++;
	}
	return 0;
}

static int count_port_files(void)
{
	const char *d = getenv("SHUNT_DIR");

	g_port_files = 0;
	if (d && *d)
		nftw(d, count_port_file, 16, FTW_PHYS);
	return g_port_files;
}

/* Listeners that never accept: published while open, gone once closed. */
static void listeners_leave_nothing(int fam6)
{
	g_nports = 0;
	for (int i = 0; i < 20; i++) {
		int port, fd = tcp_listen(i % 2 ? fam6 : AF_INET, &port);
		g_ports[g_nports++] = port;
		if (i == 0 && g_expect_accel && shunt__shim_is_accelerated)
			ASSERT_MSG(count_port_files() > 0, "no rendezvous file for port %d", port);
		ASSERT_SYS(close(fd));
	}
	ASSERT_EQ(count_port_files(), 0);
}

static void case_leaks(void)
{
	int fds = test_count_fds(), maps = test_count_maps("/memfd:shunt");
	int fam6 = ipv6_ok() ? AF_INET6 : AF_INET;
	struct peer p;

	peer_spawn(&p, 0);
	for (int i = 0; i < 40; i++) {
		peer_accept_conn(&p, i % 2 ? AF_INET : fam6, 0);
		exchange(&p, p.fd, 1 + (uint64_t)i * 1000);
		if (i < 2)
			EXPECT_ACCEL(p.fd, "leak loop");
		ASSERT_SYS(close(p.fd));
		p.fd = -1;
	}
	peer_end(&p);
	listeners_leave_nothing(fam6);
	drop_links();
	ASSERT_EQ(test_count_fds(), fds);
	ASSERT_EQ(test_count_maps("/memfd:shunt"), maps);
}

/* --- Driver ------------------------------------------------------------- */

struct tcase {
	const char *name;
	void (*fn)(void);
};

/* --- Short connections: segments reused over a link ---------------------- */

#define REUSE_CONNS 120

/* Distinct memfd segments mapped here now, added to seen[] (inodes). */
static void note_segments(unsigned long *seen, int *nseen, int max)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");

	ASSERT(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		unsigned long ino = 0;
		if (!strstr(line, "/memfd:shunt-conn") ||
		    sscanf(line, "%*s %*s %*s %*s %lu", &ino) != 1)
			continue;
		int known = 0;
		for (int i = 0; i < *nseen && !known; i++)
			known = seen[i] == ino;
		if (!known && *nseen < max)
			seen[(*nseen)++] = ino;
	}
	fclose(f);
}

static void read_exact(int fd, void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		ASSERT_SYS(r);
		ASSERT_GT(r, 0);
		p += r;
		n -= (size_t)r;
	}
}

/* Serve n connections on lfd one after another: read a length-prefixed
 * message, send it back reversed in stream order (so stale ring bytes
 * would show), close first on odd connections. */
static void reuse_server(int lfd, int n)
{
	for (int i = 0; i < n; i++) {
		int fd;
		do
			fd = accept(lfd, NULL, NULL);
		while (fd < 0 && errno == EINTR);
		ASSERT_SYS(fd);
		uint32_t len;
		uint64_t off = 0, out = 0;
		read_exact(fd, &len, sizeof(len));
		recv_stream(fd, (uint64_t)i, &off, len);
		send_stream(fd, (uint64_t)i + 1000, &out, len);
		if (i % 2) {
			ASSERT_SYS(close(fd));
		} else {
			char b;
			ASSERT_EQ(read(fd, &b, 1), 0); /* the client closes first */
			ASSERT_SYS(close(fd));
		}
	}
}

static void reuse_client(int family, int port, int from, int to, unsigned long *seen,
			 int *nseen)
{
	for (int i = from; i < to; i++) {
		int fd = tcp_connect(family, port);
		uint32_t len = (uint32_t)(1 + ((uint64_t)i * 7919) % 300000);
		uint64_t off = 0, in = 0;
		char what[64];
		snprintf(what, sizeof(what), "short connection %d", i);
		EXPECT_ACCEL(fd, what);
		note_segments(seen, nseen, REUSE_CONNS);
		write_all(fd, &len, sizeof(len));
		send_stream(fd, (uint64_t)i, &off, len);
		recv_stream(fd, (uint64_t)i + 1000, &in, len);
		if (i % 2) {
			char b;
			ASSERT_EQ(read(fd, &b, 1), 0); /* the server closes first */
		}
		ASSERT_SYS(close(fd));
	}
}

struct reuse_arg {
	int pipe, n;
};

/* The listener is the child's own: one inherited across fork() is shared,
 * and links are made only by a listener no other process accepts on. */
static void reuse_server_child(void *arg)
{
	const struct reuse_arg *a = arg;
	int port, lfd = tcp_listen(AF_INET, &port);

	write_all(a->pipe, &port, sizeof(port));
	reuse_server(lfd, a->n);
	ASSERT_SYS(close(lfd));
}

struct reuse_fork_arg {
	int family, port, from, to;
};

static void reuse_client_child(void *arg)
{
	const struct reuse_fork_arg *a = arg;
	unsigned long seen[REUSE_CONNS];
	int nseen = 0;

	reuse_client(a->family, a->port, a->from, a->to, seen, &nseen);
}

/*
 * Many short connections from one process to one listener, each checked
 * byte by byte with a different length, either side closing first: the
 * segments are reused (far fewer distinct segments than connections), and
 * a child forked in the middle connects on its own, leaving the parent's
 * link alone.
 */
static void case_reuse(void)
{
	int port, pp[2];
	unsigned long seen[REUSE_CONNS];
	int nseen = 0;

	ASSERT_SYS(pipe(pp));
	struct reuse_arg sa = { pp[1], REUSE_CONNS + 10 };
	pid_t srv = test_fork(reuse_server_child, &sa);
	ASSERT_SYS(close(pp[1]));
	read_exact(pp[0], &port, sizeof(port));
	ASSERT_SYS(close(pp[0]));
	reuse_client(AF_INET, port, 0, REUSE_CONNS / 2, seen, &nseen);
	struct reuse_fork_arg ca = { AF_INET, port, REUSE_CONNS / 2, REUSE_CONNS / 2 + 10 };
	test_wait_ok(test_fork(reuse_client_child, &ca), 30);
	reuse_client(AF_INET, port, REUSE_CONNS / 2 + 10, REUSE_CONNS + 10, seen, &nseen);
	test_wait_ok(srv, 30);
	test_log("%d connections used %d segments", REUSE_CONNS, nseen);
	if (g_expect_accel && shunt__shim_is_accelerated)
		ASSERT_MSG(nseen > 0 && nseen <= REUSE_CONNS / 4,
			   "%d segments for %d connections: not reused", nseen, REUSE_CONNS);
}

/* A server that accepts late: the first connection after `delay_ms`; then
 * every connection is read to EOF, except the last, which echoes 4 KiB. */
struct late_arg {
	int pipe, n, delay_ms;
};

static void late_server_child(void *arg)
{
	const struct late_arg *a = arg;
	int port, lfd = tcp_listen(AF_INET, &port);
	char buf[4096];

	write_all(a->pipe, &port, sizeof(port));
	test_sleep_ms((unsigned)a->delay_ms);
	for (int i = 0; i < a->n; i++) {
		int fd;
		do
			fd = accept(lfd, NULL, NULL);
		while (fd < 0 && errno == EINTR);
		ASSERT_SYS(fd);
		if (i == a->n - 1) {
			read_exact(fd, buf, sizeof(buf));
			write_all(fd, buf, sizeof(buf));
		}
		ASSERT_EQ(read(fd, buf, 1), 0);
		ASSERT_SYS(close(fd));
	}
	ASSERT_SYS(close(lfd));
}

/*
 * connect() does not wait for the server's accept(), as TCP's does not: the
 * first use of the fd does.  Connections closed before any use end cleanly
 * on both sides whichever way their decision went.
 */
static void case_connect_early(void)
{
	int port, pp[2];
	char out[4096], in[4096];

	ASSERT_SYS(pipe(pp));
	struct late_arg a = { pp[1], 11, 100 };
	pid_t srv = test_fork(late_server_child, &a);
	ASSERT_SYS(close(pp[1]));
	read_exact(pp[0], &port, sizeof(port));
	ASSERT_SYS(close(pp[0]));
	for (int i = 0; i < 10; i++) { /* fewer than the backlog */
		double t0 = test_now();
		int fd = tcp_connect(AF_INET, port);
		ASSERT_MSG(test_now() - t0 < 0.05, "connect took %.3f s", test_now() - t0);
		ASSERT_SYS(close(fd));
	}
	int fd = tcp_connect(AF_INET, port);
	test_stream_fill(1, 0, out, sizeof(out));
	write_all(fd, out, sizeof(out));
	read_exact(fd, in, sizeof(in));
	ASSERT_EQ(memcmp(in, out, sizeof(in)), 0);
	EXPECT_ACCEL(fd, "connection used after a late accept");
	ASSERT_SYS(close(fd));
	test_wait_ok(srv, 30);
}

static const struct tcase g_cases[] = {
	{ "nonblock", case_nonblock },
	{ "connect-nonblock", case_connect_nonblock },
	{ "eintr", case_eintr },
	{ "rcvtimeo", case_rcvtimeo },
	{ "sndtimeo", case_sndtimeo },
	{ "partial-write", case_partial_write },
	{ "peek-fionread", case_peek_fionread },
	{ "dontwait", case_dontwait },
	{ "waitall", case_waitall },
	{ "nosignal", case_nosignal },
	{ "sigpipe", case_sigpipe },
	{ "eof-shutdown", case_eof_shutdown },
	{ "eof-close", case_eof_close },
	{ "reset", case_reset },
	{ "sockinfo", case_sockinfo },
	{ "io-calls", case_io_calls },
	{ "sendfile", case_sendfile },
	{ "dup", case_dup },
	{ "wait", case_wait },
	{ "epoll-lt", case_epoll_lt },
	{ "epoll-et", case_epoll_et },
	{ "epoll-oneshot", case_epoll_oneshot },
	{ "epoll-rdhup", case_epoll_rdhup },
	{ "epoll-hup", case_epoll_hup },
	{ "epoll-mixed", case_epoll_mixed },
	{ "fork", case_fork },
	{ "exec", case_exec },
	{ "threads", case_threads },
	{ "shared-writes", case_shared_writes },
	{ "integrity", case_integrity },
	{ "plain-fallback", case_plain_fallback },
	{ "early-write", case_early_write },
	{ "leaks", case_leaks },
	{ "reuse", case_reuse },
	{ "connect-early", case_connect_early },
};

static int selected(const char *name)
{
	const char *only = getenv("SHUNT_PRELOAD_ONLY");
	size_t n = strlen(name);

	if (!only || !*only)
		return 1;
	for (const char *s = only; (s = strstr(s, name)); s += n)
		if ((s == only || s[-1] == ',') && (s[n] == ',' || s[n] == '\0'))
			return 1;
	return 0;
}

/* Every case leaves as many fds as it found (the shim may close its own a
 * moment later: 1 s of grace). */
static void run_case(const struct tcase *c)
{
	int fds = test_count_fds();
	double end;

	test_log("case %s", c->name);
	test_watchdog(test_sanitized() ? 90 : 30);
	c->fn();
	drop_links();
	for (end = test_now() + 1; test_count_fds() != fds && test_now() < end;)
		test_sleep_ms(10);
	ASSERT_MSG(test_count_fds() == fds, "case %s: %d fds open before, %d after", c->name,
		   fds, test_count_fds());
	test_watchdog(0);
	test_log("case %s: ok", c->name);
}

static void setup_mode(void)
{
	const char *d = getenv("SHUNT_DISABLE");

	g_expect_accel = !(d && !strcmp(d, "1"));
	ssize_t n = readlink("/proc/self/exe", g_self, sizeof(g_self) - 1);
	ASSERT_SYS(n);
	g_self[n] = '\0';
}

/* Without TCP on 127.0.0.1 there is nothing to test. */
static void need_loopback(void)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(AF_INET, 0, &ss);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 1))
		test_skip("no TCP on 127.0.0.1 here: %s", strerror(errno));
	close(fd);
}

static int peer_exec_main(int argc, char **argv)
{
	test_init("t_preload-peer");
	setup_mode();
	ASSERT_EQ(argc, 6);
	peer_loop(atoi(argv[2]), atoi(argv[3]), strtoull(argv[4], NULL, 10),
		  strtoull(argv[5], NULL, 10));
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "peer"))
		return peer_exec_main(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "exec-child")) {
		setup_mode();
		return exec_child_main();
	}
	test_init("t_preload");
	test_use_private_dir();
	setup_mode();
	need_loopback();
	if (!shunt__shim_is_accelerated)
		test_log("no shim linked (shunt__shim_is_accelerated is missing): %s",
			 g_expect_accel ? "upgrade checks will fail" : "reference run on TCP");
	else if (!g_expect_accel)
		test_log("SHUNT_DISABLE=1: every fd must stay plain TCP");
	for (size_t i = 0; i < sizeof(g_cases) / sizeof(g_cases[0]); i++)
		if (selected(g_cases[i].name))
			run_case(&g_cases[i]);
	int misses = atomic_load(&g_accel_misses);
	if (misses)
		TEST_FAIL_MSG("%d upgrade checks could not pass: no shim linked "
			      "(SHUNT_DISABLE=1 runs the POSIX checks alone)", misses);
	test_log("pass");
	return TEST_PASS;
}
