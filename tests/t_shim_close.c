/*
 * t_shim_close.c - the ends of connections that moved to shared memory,
 * and the calls that wait on them: end of stream after the peer's
 * shutdown and close (both ways, and half-closed streams), a close with
 * unread data (a reset), ECONNRESET when the peer process dies with data
 * unread, end of stream when it dies with none, a blocked reader when it
 * dies, SIGPIPE and EPIPE, shutdown() waking a blocked reader, writer and
 * poller, SO_RCVTIMEO (set before the move, after it, inherited from the
 * listener) and SO_SNDTIMEO, and EINTR with and without SA_RESTART.
 *
 * Each case first moves its connection (ts_make_accelerated*), then checks
 * that the program sees exactly what kernel TCP gives it: SHUNT_DISABLE=1
 * runs the same checks on kernel TCP, where every case passes.  Timing
 * bounds are generous (a shared, noisy machine).
 * SHUNT_TEST_ONLY=name,name runs some cases.  (Ported from the former t_preload.)
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/sendfile.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shimlib.h"
#include "testlib.h"

#define KIB 1024
#define MIB (1024 * 1024)

static _Atomic int g_sigpipe, g_usr1;

static void on_sigpipe(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_sigpipe, 1);
}

static void on_usr1(int sig)
{
	(void)sig;
	atomic_fetch_add(&g_usr1, 1);
}

/* Fill fd's send side until EAGAIN (the peer reads nothing), and again
 * after a pause until not one more byte goes in (TCP frees some room as
 * its segments are acknowledged); returns how many bytes of stream seed
 * went in.  fd is left blocking. */
static uint64_t fill(int fd, uint64_t seed)
{
	unsigned char *buf = malloc(256 * KIB);
	uint64_t total = 0, before;

	ASSERT_NOT_NULL(buf);
	do {
		before = total;
		/* Big sends, then single bytes (TCP appends them to a segment
		 * that has room when a bigger send finds none). */
		for (size_t len = 256 * KIB;; len = 1) {
			for (;;) {
				test_stream_fill(seed, total, buf, len);
				ssize_t n = send(fd, buf, len, MSG_DONTWAIT);
				if (n < 0) {
					ASSERT_MSG(errno == EAGAIN, "send: %s", test_errname(errno));
					break;
				}
				total += (uint64_t)n;
				ASSERT_LT(total, 1024ull * MIB);
			}
			if (len == 1)
				break;
		}
		test_sleep_ms(20);
	} while (total != before);
	free(buf);
	return total;
}

/* A thread that writes n bytes of a stream to fd after ms. */
struct later {
	int fd, ms;
	uint64_t seed, off, n;
	pthread_t t;
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	test_sleep_ms((unsigned)l->ms);
	ts_send_stream(l->fd, l->seed, l->off, l->n, ts_ms(3000));
	return NULL;
}

static void later_start(struct later *l)
{
	ASSERT_EQ(pthread_create(&l->t, NULL, later_main, l), 0);
}

static void later_join(struct later *l)
{
	ASSERT_EQ(pthread_join(l->t, NULL), 0);
}

static void check_stream(uint64_t seed, uint64_t off, const void *buf, size_t n)
{
	size_t bad = test_stream_check(seed, off, buf, n);

	if (bad != (size_t)-1)
		TEST_FAIL_MSG("stream byte %ju is wrong (0x%02x)", (uintmax_t)(off + bad),
			      ((const unsigned char *)buf)[bad]);
}

/* --- End of stream ----------------------------------------------------------- */

/* The peer shuts down its side after 5000 bytes: we read them, see
 * POLLRDHUP, then 0 as often as we ask; our side still sends; our own
 * SHUT_WR ends it (EPIPE, SIGPIPE once without MSG_NOSIGNAL), and the
 * peer sees the end too. */
static void case_eof_shutdown(void)
{
	int a, b;
	char c;
	uint64_t seed = shim_seed(1);

	ts_moved_pair(&a, &b);
	ts_set_handler(SIGPIPE, on_sigpipe, 0);
	ts_send_stream(b, seed, 0, 5000, ts_ms(2000));
	ASSERT_SYS(shutdown(b, SHUT_WR));
	ts_recv_stream(a, seed, 0, 5000, ts_ms(2000));
	short re = ts_wait_revents(a, POLLIN | POLLRDHUP, POLLRDHUP, ts_ms(2000));
	ASSERT_EQ(re, POLLIN | POLLRDHUP);
	ts_guard(3);
	ASSERT_EQ(read(a, &c, 1), 0);
	ASSERT_EQ(read(a, &c, 1), 0);
	ASSERT_EQ(recv(a, &c, 1, MSG_DONTWAIT), 0);
	alarm(0);
	/* Half-closed: we still send, the peer still reads. */
	ts_send_stream(a, seed ^ 1, 0, 3000, ts_ms(2000));
	ts_recv_stream(b, seed ^ 1, 0, 3000, ts_ms(2000));
	ts_expect_accel(a, "half-closed");
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ASSERT_FAILS(send(a, &c, 1, MSG_NOSIGNAL), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 0);
	ASSERT_FAILS(write(a, &c, 1), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 1);
	ts_expect_eof(b, ts_ms(2000));
	/* Both sides shut: HUP at both ends, and still writable (it fails). */
	short want = POLLIN | POLLOUT | POLLRDHUP | POLLHUP;
	ASSERT_EQ(ts_wait_revents(a, POLLIN | POLLOUT | POLLRDHUP, POLLHUP, ts_ms(2000)), want);
	ASSERT_EQ(ts_wait_revents(b, POLLIN | POLLOUT | POLLRDHUP, POLLHUP, ts_ms(2000)), want);
	ts_set_handler(SIGPIPE, SIG_IGN, 0);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* The peer writes 5000 bytes and closes: all arrive, then 0 from every
 * read call.  Both ways (the connecting and the accepting end closing). */
static void case_eof_close(void)
{
	uint64_t seed = shim_seed(2);

	for (int k = 0; k < 2; k++) {
		int c, s;
		char buf[16];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

		ts_moved_pair(&c, &s);
		int closer = k ? c : s, reader = k ? s : c;
		test_log("the %s end closes", k ? "connected" : "accepted");
		ts_send_stream(closer, seed, 0, 5000, ts_ms(2000));
		ASSERT_SYS(close(closer));
		ts_recv_stream(reader, seed, 0, 5000, ts_ms(2000));
		ts_guard(3);
		ASSERT_EQ(read(reader, buf, sizeof(buf)), 0);
		ASSERT_EQ(recv(reader, buf, sizeof(buf), MSG_DONTWAIT), 0);
		ASSERT_EQ(readv(reader, &iov, 1), 0);
		ASSERT_EQ(recvmsg(reader, &m, 0), 0);
		ASSERT_EQ(recv(reader, buf, sizeof(buf), MSG_PEEK), 0);
		alarm(0);
		ASSERT_EQ(ts_wait_fd(reader, POLLIN | POLLRDHUP, 0), POLLIN | POLLRDHUP);
		ASSERT_SYS(close(reader));
	}
}

/* A close with bytes unread is a reset on TCP: the peer reads ECONNRESET
 * (once), then end of stream, and its sends fail with EPIPE. */
static void case_close_unread(void)
{
	int a, b;
	char buf[64];
	uint64_t seed = shim_seed(3);

	ts_moved_pair(&a, &b);
	ts_send_stream(a, seed, 0, 100, ts_ms(2000));
	ts_wait_arrived(b, 100, ts_ms(2000));
	ASSERT_SYS(close(b));
	if (!(ts_wait_fd(a, POLLIN, ts_ms(2000)) & (POLLIN | POLLERR | POLLHUP)))
		TEST_FAIL_MSG("nothing to read 2 s after the peer closed with data unread");
	ts_guard(3);
	ASSERT_FAILS(recv(a, buf, sizeof(buf), 0), ECONNRESET);
	ASSERT_EQ(recv(a, buf, sizeof(buf), 0), 0);
	ASSERT_FAILS(send(a, buf, 1, MSG_NOSIGNAL), EPIPE);
	alarm(0);
	ASSERT_SYS(close(a));
}

/* libuv (uvloop, Node.js) closes every fd by syscall(SYS_close), not
 * close().  The accepted end writes 2 MiB to TCP that its peer, with a
 * small receive buffer, does not read yet; both ends meet (the peer's
 * small messages); the accepted end's sends switch with most of those
 * bytes unsent in its kernel; its epoll wait arms its read, so the peer's
 * next byte rings it a doorbell, which it leaves unread; it closes by the
 * raw system call.  The peer must read all 2 MiB and the byte after them,
 * then the end of the stream (uvloop's echo clients: a prefix, then
 * ECONNRESET, when the library did not see that close: the kernel's close
 * of a socket with a byte unread is a reset, which throws its unsent
 * bytes away). */
static void case_close_syscall(void)
{
	enum { BIG = 2 * MIB, MSGS = 300, MSG = KIB };
	uint64_t seed = shim_seed(40);
	int port, l = ts_tcp_listen(&port);
	int c = socket(AF_INET, SOCK_STREAM, 0), small = 8192, large = 4 * MIB;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	ASSERT_SYS(c);
	ASSERT_SYS(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
	ASSERT_SYS(connect(c, (struct sockaddr *)&a, sizeof(a)));
	int s = ts_tcp_accept(l, ts_ms(2000));
	ASSERT_SYS(close(l));
	ASSERT_SYS(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &large, sizeof(large)));
	unsigned char *buf = malloc(BIG + 64), m[MSG];
	ASSERT(buf != NULL);
	test_stream_fill(seed, 0, buf, BIG + 1);
	size_t off = 0;
	for (int tries = 0; off < BIG && tries < 100; tries++) {
		ssize_t k = send(s, buf + off, BIG - off, MSG_DONTWAIT);
		if (k > 0)
			off += (size_t)k;
		else
			usleep(1000);
	}
	memset(m, 7, sizeof(m));
	for (int i = 0; i < MSGS; i++) { /* data calls at both ends: they meet */
		ts_write_all(c, m, MSG, ts_ms(2000));
		ts_read_exact(s, m, MSG, ts_ms(2000));
		usleep(200);
	}
	usleep(20000);
	ts_write_all(s, buf + off, 1, ts_ms(2000)); /* switches, most of BIG unsent */
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	ASSERT_SYS(ep);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	ASSERT_EQ(epoll_wait(ep, &ev, 1, 20), 0); /* arms our read */
	ts_write_all(c, m, 1, ts_ms(2000)); /* rings us */
	if (!ts_disabled() && !ts_moved(c))
		TEST_FAIL_MSG("the connection did not move: nothing tested");
	usleep(50000);
	ts_read_exact(s, m, 1, ts_ms(2000));
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL));
	ASSERT_SYS(close(ep));
	ASSERT_SYS(syscall(SYS_close, s));
	size_t got = 0;
	ssize_t k;
	ts_guard(10);
	while ((k = read(c, buf + got, BIG + 64 - got)) > 0)
		got += (size_t)k;
	alarm(0);
	if (k < 0)
		TEST_FAIL_MSG("%s after %zu bytes of %zu", test_errname(errno), got, off + 1);
	ASSERT_EQ(got, off + 1);
	check_stream(seed, 0, buf, got);
	free(buf);
	ASSERT_SYS(close(c));
}

/* --- The peer dies ------------------------------------------------------------ */

struct victim {
	size_t unread; /* leave this many of our bytes unread (else read them) */
};

/* The peer that will be killed: takes (or leaves) our bytes, tells us
 * with one byte 'k', then waits for SIGKILL. */
static void victim_peer(int fd, void *arg)
{
	const struct victim *v = arg;

	ts_make_accelerated_follow(fd);
	if (v->unread)
		ts_wait_arrived(fd, (int)v->unread, ts_ms(3000));
	else
		ts_recv_stream(fd, shim_seed(4), 0, 1000, ts_ms(3000));
	ts_write_all(fd, "k", 1, ts_ms(2000));
	for (;;)
		pause();
}

/* A moved connection to a peer that is now dead (SIGKILL), after it took
 * the 1000 bytes we sent (unread = 0) or left them unread. */
static int killed_peer(size_t unread, pid_t *pid)
{
	static struct victim v;
	struct shim_peer p;
	char k;

	v.unread = unread;
	ts_peer_start(&p, victim_peer, &v);
	ts_make_accelerated_lead(p.fd);
	ts_send_stream(p.fd, shim_seed(4), 0, 1000, ts_ms(2000));
	ts_read_exact(p.fd, &k, 1, ts_ms(3000));
	ASSERT_EQ(k, 'k');
	ASSERT_SYS(kill(p.pid, SIGKILL));
	if (pid) {
		*pid = p.pid;
		return p.fd;
	}
	int st = test_wait(p.pid, 5);
	ASSERT(WIFSIGNALED(st));
	return p.fd;
}

/* The peer dies with data unread: TCP resets.  ECONNRESET within 1 s
 * (once), then end of stream, then EPIPE; writing first, the send fails
 * with ECONNRESET or EPIPE. */
static void case_reset(void)
{
	char b[16];

	int fd = killed_peer(1000, NULL);
	double t0 = test_now();
	short re = ts_wait_fd(fd, POLLIN, ts_ms(2000));
	ASSERT_MSG(re & (POLLIN | POLLERR | POLLHUP), "not readable 2 s after the peer died");
	ts_guard(3);
	ASSERT_FAILS(read(fd, b, sizeof(b)), ECONNRESET);
	alarm(0);
	double dt = test_now() - t0;
	ASSERT_MSG(dt < ts_ms(1000) / 1000.0, "ECONNRESET %.3f s after the peer died", dt);
	ASSERT_EQ(read(fd, b, sizeof(b)), 0);
	ASSERT_FAILS(send(fd, b, 1, MSG_NOSIGNAL), EPIPE);
	/* The error was taken: no POLLERR any more. */
	ASSERT_EQ(ts_wait_fd(fd, POLLIN | POLLOUT, 0), POLLIN | POLLOUT | POLLHUP);
	ASSERT_SYS(close(fd));

	test_log("writing first");
	fd = killed_peer(1000, NULL);
	double end = test_now() + ts_ms(1000) / 1000.0;
	int err = 0;
	while (!err && test_now() < end) {
		if (send(fd, "x", 1, MSG_NOSIGNAL) < 0)
			err = errno;
		else
			test_sleep_ms(10);
	}
	ASSERT_MSG(err == ECONNRESET || err == EPIPE, "send failed with %s",
		   err ? test_errname(err) : "nothing, 1 s after the peer died");
	ASSERT_SYS(close(fd));
}

struct blocked_read {
	int fd;
	ssize_t r;
	int err;
	_Atomic int done;
	pthread_t t;
};

static void *blocked_read_main(void *arg)
{
	struct blocked_read *b = arg;
	char c;

	errno = 0;
	b->r = recv(b->fd, &c, 1, 0);
	b->err = errno;
	atomic_store(&b->done, 1);
	return NULL;
}

static void blocked_read_start(struct blocked_read *b, int fd)
{
	*b = (struct blocked_read){ .fd = fd, .r = -2 };
	ASSERT_EQ(pthread_create(&b->t, NULL, blocked_read_main, b), 0);
	test_sleep_ms(50); /* it is blocked now */
	if (atomic_load(&b->done)) {
		ASSERT_EQ(pthread_join(b->t, NULL), 0);
		TEST_FAIL_MSG("recv returned %zd (%s) with nothing to read", b->r,
			      test_errname(b->err));
	}
}

/* The blocked call returns within ms. */
static void blocked_read_join(struct blocked_read *b, int ms, const char *after)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	while (!atomic_load(&b->done)) {
		if (test_now_ns() > end)
			TEST_FAIL_MSG("a blocked recv still waits %d ms after %s", ms, after);
		test_sleep_ms(1);
	}
	ASSERT_EQ(pthread_join(b->t, NULL), 0);
}

/* The peer dies while we wait in recv with nothing to read: the reset ends
 * the wait within 1 s. */
static void case_reset_blocked(void)
{
	static struct victim v = { 1000 };
	struct shim_peer p;
	struct blocked_read br;
	char k;

	ts_peer_start(&p, victim_peer, &v);
	ts_make_accelerated_lead(p.fd);
	ts_send_stream(p.fd, shim_seed(4), 0, 1000, ts_ms(2000));
	ts_read_exact(p.fd, &k, 1, ts_ms(3000));
	blocked_read_start(&br, p.fd);
	ASSERT_SYS(kill(p.pid, SIGKILL));
	blocked_read_join(&br, ts_ms(1000), "the peer died");
	ASSERT(WIFSIGNALED(test_wait(p.pid, 5)));
	ASSERT_MSG(br.r == -1 && br.err == ECONNRESET, "recv returned %zd (%s), want ECONNRESET",
		   br.r, br.r < 0 ? test_errname(br.err) : "no error");
	ASSERT_EQ(recv(p.fd, &k, 1, MSG_DONTWAIT), 0);
	ASSERT_SYS(close(p.fd));
}

/* The peer dies while we only read without waiting (recv(MSG_DONTWAIT) or
 * an O_NONBLOCK socket, a nap between reads, no poll): TCP's end of the
 * stream (it took our bytes) or reset (it left them) comes within 1 s.
 * Such reads looked at the empty ring alone and said EAGAIN for good (a
 * helper's reproducer, 12-07). */
static void case_killed_nowait(void)
{
	for (int way = 0; way < 4; way++) {
		int unread = way & 1, nonblock = way & 2;
		int fd = killed_peer(unread ? 1000 : 0, NULL);
		double t0 = test_now();
		char b[16];
		ssize_t n;

		if (nonblock)
			ts_set_nonblock(fd, 1);
		while ((n = recv(fd, b, sizeof(b), nonblock ? 0 : MSG_DONTWAIT)) < 0 &&
		       errno == EAGAIN && test_now() - t0 < 3.0)
			test_sleep_ms(1);
		int err = n < 0 ? errno : 0;
		ASSERT_MSG(unread ? n == -1 && err == ECONNRESET : n == 0,
			   "%s, %s: recv returned %zd (%s), want %s", unread ? "unread" : "read",
			   nonblock ? "O_NONBLOCK" : "MSG_DONTWAIT", n, n < 0 ? test_errname(err) : "-",
			   unread ? "ECONNRESET" : "end of stream");
		ASSERT_MSG(test_now() - t0 < 1.0, "the end came after %.2f s", test_now() - t0);
		ASSERT_SYS(close(fd));
	}
}

/* The peer dies with nothing unread: TCP sends a FIN, not a reset.  End of
 * stream; the first send succeeds and draws the reset, later ones fail. */
static void case_killed_idle(void)
{
	char b[16];
	int fd = killed_peer(0, NULL);

	ts_expect_eof(fd, ts_ms(2000));
	ts_guard(3);
	ASSERT_EQ(read(fd, b, sizeof(b)), 0);
	alarm(0);
	ssize_t n = send(fd, "x", 1, MSG_NOSIGNAL);
	ASSERT_MSG(n == 1, "the first send after the peer died with nothing unread returned "
		   "%zd (%s), want 1", n, n < 0 ? test_errname(errno) : "-");
	double end = test_now() + ts_ms(1000) / 1000.0;
	int err = 0;
	while (!err && test_now() < end) {
		if (send(fd, "x", 1, MSG_NOSIGNAL) < 0)
			err = errno;
		else
			test_sleep_ms(10);
	}
	ASSERT_MSG(err == EPIPE || err == ECONNRESET, "send failed with %s",
		   err ? test_errname(err) : "nothing, 1 s after the peer died");
	ASSERT_SYS(close(fd));
}

/* --- SIGPIPE ----------------------------------------------------------------- */

/* After the peer's close, sends fail with EPIPE within 1 s, raising SIGPIPE
 * once per failed send. */
static void case_sigpipe(void)
{
	int a, b;

	ts_moved_pair(&a, &b);
	ts_set_handler(SIGPIPE, on_sigpipe, 0);
	ASSERT_SYS(close(b));
	ts_expect_eof(a, ts_ms(2000));
	double end = test_now() + 1;
	int err = 0;
	while (!err && test_now() < end) {
		if (send(a, "x", 1, 0) < 0)
			err = errno;
		else
			test_sleep_ms(10);
	}
	ASSERT_MSG(err == EPIPE, "send failed with %s, want EPIPE",
		   err ? test_errname(err) : "nothing (still succeeds after 1 s)");
	ASSERT_EQ(atomic_load(&g_sigpipe), 1);
	ASSERT_FAILS(write(a, "y", 1), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 2);
	struct iovec iov = { "z", 1 };
	ASSERT_FAILS(writev(a, &iov, 1), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 3);
	ASSERT_FAILS(send(a, "w", 1, MSG_NOSIGNAL), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 3);
	ts_set_handler(SIGPIPE, SIG_IGN, 0);
	ASSERT_SYS(close(a));
}

/* After the peer's close (a FIN: it had read all), TCP takes the first
 * send whole and the peer's kernel answers it with a reset; the next send
 * fails with EPIPE and SIGPIPE, a zero-length one too.  A writev is one
 * send: shunt sent its pieces one by one, the first "succeeded" and the
 * second met the reset (1 byte where TCP took 66, a census of
 * tests/diff_shim.c), a zero-length sendmsg returned 0, and a writev of no
 * bytes, which the kernel answers 0 without the socket, EPIPE. */
static void case_writev_after_close(void)
{
	int a, b;
	char buf[64] = { 0 };
	struct iovec v[3] = { { buf, 1 }, { buf, 64 }, { buf, 1 } };
	struct msghdr m = { .msg_iov = v, .msg_iovlen = 3 };
	struct msghdr none = { 0 };

	ts_moved_pair(&a, &b);
	ts_set_handler(SIGPIPE, on_sigpipe, 0);
	ASSERT_SYS(close(b));
	ts_expect_eof(a, ts_ms(2000));
	ASSERT_EQ(writev(a, v, 3), 66);
	test_sleep_ms(100); /* the reset comes back */
	ASSERT_FAILS(sendmsg(a, &m, 0), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 1);
	ASSERT_FAILS(sendmsg(a, &none, MSG_NOSIGNAL), EPIPE);
	ASSERT_FAILS(send(a, buf, 0, 0), EPIPE);
	ASSERT_EQ(atomic_load(&g_sigpipe), 2);
	/* A writev of no bytes never reaches the socket: 0. */
	struct iovec z = { buf, 0 };
	ASSERT_EQ(writev(a, &z, 1), 0);
	ASSERT_EQ(writev(a, NULL, 0), 0);
	ASSERT_EQ(atomic_load(&g_sigpipe), 2);
	ts_set_handler(SIGPIPE, SIG_IGN, 0);
	ASSERT_SYS(close(a));
}

/* The peer closes with our bytes unread: a reset.  TCP's next send,
 * sendfile or splice into the socket reports ECONNRESET once, then
 * EPIPE with SIGPIPE (sendfile and splice cannot say MSG_NOSIGNAL).
 * shunt's sendfile said EPIPE at once, and neither raised SIGPIPE. */
static void reset_then(int how)
{
	int a, b, p[2];
	char buf[100] = { 0 };
	FILE *f = tmpfile();

	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
	ASSERT_EQ(fflush(f), 0);
	int file = fileno(f);
	ASSERT_SYS(pipe(p));
	ts_moved_pair(&a, &b);
	ts_set_handler(SIGPIPE, on_sigpipe, 0);
	ASSERT_EQ(send(a, buf, 100, 0), 100);
	ts_wait_arrived(b, 100, ts_ms(2000));
	if (how == 2) { /* our own SHUT_WR first: the reset still comes first */
		ASSERT_SYS(shutdown(a, SHUT_WR));
		ASSERT_FAILS(send(a, buf, 1, MSG_NOSIGNAL), EPIPE);
		how = 0;
	}
	ASSERT_SYS(close(b));
	if (!(ts_wait_fd(a, POLLIN, ts_ms(2000)) & POLLERR))
		TEST_FAIL_MSG("no POLLERR 2 s after the peer's reset");
	off_t off = 0;
	for (int k = 0; k < 3; k++) {
		int want = k == 0 ? ECONNRESET : EPIPE;
		int mode = k == 0 ? how : k == 1 ? 1 : 2;
		ASSERT_EQ(write(p[1], buf, 10), 10);
		if (mode == 0)
			ASSERT_FAILS(send(a, buf, 10, MSG_NOSIGNAL), want);
		else if (mode == 1)
			ASSERT_FAILS(sendfile(a, file, &off, 10), want);
		else
			ASSERT_FAILS(splice(p[0], NULL, a, NULL, 10, 0), want);
		ASSERT_EQ(atomic_load(&g_sigpipe), k);
		char junk[16];
		(void)!read(p[0], junk, sizeof(junk));
	}
	ts_set_handler(SIGPIPE, SIG_IGN, 0);
	ASSERT_SYS(close(a));
	close(p[0]);
	close(p[1]);
	fclose(f);
}

static void case_sendfile_after_reset(void)
{
	reset_then(1);
}

static void case_send_after_reset(void)
{
	reset_then(0);
}

static void case_shut_wr_then_reset(void)
{
	reset_then(2);
}

/* --- shutdown() wakes waiters ------------------------------------------------ */

struct blocked_send {
	int fd;
	uint64_t seed, off;
	ssize_t r;
	int err;
	_Atomic int done;
	pthread_t t;
};

/* A send bigger than any buffer the peer leaves unread: it blocks. */
#define BIG_SEND (16 * MIB)

/* A blocking send of BIG_SEND bytes of stream seed from off: what TCP
 * took before it blocked, then -1 or a short count when woken. */
static ssize_t big_send(int fd, uint64_t seed, uint64_t off, int flags)
{
	unsigned char *buf = malloc(BIG_SEND);

	ASSERT_NOT_NULL(buf);
	test_stream_fill(seed, off, buf, BIG_SEND);
	errno = 0;
	ssize_t r = send(fd, buf, BIG_SEND, flags);
	int e = errno;
	free(buf);
	errno = e;
	return r;
}

static void *blocked_send_main(void *arg)
{
	struct blocked_send *b = arg;

	b->r = big_send(b->fd, b->seed, b->off, MSG_NOSIGNAL);
	b->err = errno;
	atomic_store(&b->done, 1);
	return NULL;
}

struct blocked_poll {
	int fd, r;
	short revents;
	_Atomic int done;
	pthread_t t;
};

static void *blocked_poll_main(void *arg)
{
	struct blocked_poll *b = arg;
	struct pollfd p = { b->fd, POLLIN | POLLRDHUP, 0 };

	b->r = poll(&p, 1, 10000);
	b->revents = p.revents;
	atomic_store(&b->done, 1);
	return NULL;
}

static void wait_done(_Atomic int *done, int ms, const char *what)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	while (!atomic_load(done)) {
		if (test_now_ns() > end)
			TEST_FAIL_MSG("%s still waits %d ms after shutdown()", what, ms);
		test_sleep_ms(1);
	}
}

/* A thread blocked in recv wakes with 0 when another shuts the socket
 * down for reading (a common way to stop a reader thread); our sending
 * side stays open. */
static void case_shutdown_rd_wakes(void)
{
	int a, b;
	struct blocked_read br;
	uint64_t seed = shim_seed(5);
	char c;

	ts_moved_pair(&a, &b);
	blocked_read_start(&br, a);
	ASSERT_SYS(shutdown(a, SHUT_RD));
	blocked_read_join(&br, ts_ms(2000), "shutdown(SHUT_RD)");
	ASSERT_MSG(br.r == 0, "recv returned %zd (%s), want 0", br.r, test_errname(br.err));
	ts_guard(3);
	ASSERT_EQ(recv(a, &c, 1, 0), 0);
	alarm(0);
	ts_send_stream(a, seed, 0, 1000, ts_ms(2000));
	ts_recv_stream(b, seed, 0, 1000, ts_ms(2000));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* Bytes that arrived before our shutdown(SHUT_RD or SHUT_RDWR) are still
 * read, as TCP reads its receive queue, and FIONREAD says so; then the
 * end of the stream, without a wait.  The ring's reads ended at once and
 * lost them (a helper's attack, 12-04). */
static void shutdown_rd_keeps(int how)
{
	int a, b, n = -1;
	char got[16];

	ts_moved_pair(&a, &b);
	ts_write_all(b, "hello", 5, ts_ms(2000));
	ts_wait_arrived(a, 5, ts_ms(2000));
	ASSERT_SYS(shutdown(a, how));
	ASSERT_SYS(ioctl(a, FIONREAD, &n));
	ASSERT_EQ(n, 5);
	ts_guard(3);
	ssize_t r = recv(a, got, sizeof(got), 0);
	ASSERT_MSG(r == 5 && memcmp(got, "hello", 5) == 0,
		   "recv after shutdown(%s) returned %zd (%s), want the 5 bytes that had arrived",
		   how == SHUT_RD ? "SHUT_RD" : "SHUT_RDWR", r, r < 0 ? test_errname(errno) : "-");
	ASSERT_EQ(recv(a, got, sizeof(got), 0), 0);
	alarm(0);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_shutdown_rd_keeps(void)
{
	shutdown_rd_keeps(SHUT_RD);
}

static void case_shutdown_rdwr_keeps(void)
{
	shutdown_rd_keeps(SHUT_RDWR);
}

static int onto_null(int fd)
{
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (null < 0)
		return -1;
	int rc = dup2(null, fd);
	close(null);
	return rc < 0 ? -1 : 0;
}

/* Another thread closes the fd a recv waits on (close, dup2 onto it,
 * close_range).  Linux's close does not end the call, which holds the
 * file: the connection lives on until the recv returns (no FIN
 * meanwhile), the recv takes what the peer sends next, and only then does
 * the peer see the end. */
static void close_under_recv(int (*shut)(int fd))
{
	int a, b;
	struct blocked_read br;
	char c;

	ts_moved_pair(&a, &b);
	blocked_read_start(&br, a);
	ASSERT_SYS(shut(a));
	test_sleep_ms(100);
	ASSERT_MSG(!atomic_load(&br.done), "the close ended the blocked recv: %zd (%s)", br.r,
		   test_errname(br.err));
	struct pollfd pf = { .fd = b, .events = POLLIN };
	int n = poll(&pf, 1, 100);
	ASSERT_MSG(n == 0, "the peer saw %#x while the recv still held the socket", pf.revents);
	ASSERT_EQ(send(b, "x", 1, MSG_NOSIGNAL), 1);
	blocked_read_join(&br, ts_ms(2000), "the peer sent a byte");
	ASSERT_MSG(br.r == 1, "recv returned %zd (%s), want 1", br.r, test_errname(br.err));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_EQ(recv(b, &c, 1, MSG_DONTWAIT), 0);
	ASSERT_SYS(close(b));
	if (shut == onto_null)
		ASSERT_SYS(close(a));
}

static int close_range_one(int fd)
{
	return (int)syscall(SYS_close_range, fd, fd, 0);
}

static void case_close_under_recv(void)
{
	close_under_recv(close);
}

/* A child forked after such a close inherits no part of the connection:
 * the end reaches the peer when the call returns, while the child lives. */
static pid_t forked_after;

static int close_then_fork(int fd)
{
	if (close(fd) < 0)
		return -1;
	forked_after = fork();
	if (forked_after == 0) {
		/* The harness waits for its output to end: not for us. */
		close(1);
		close(2);
		sleep(60);
		_exit(0);
	}
	return forked_after < 0 ? -1 : 0;
}

static void case_close_under_recv_fork(void)
{
	close_under_recv(close_then_fork);
	ASSERT_SYS(kill(forked_after, SIGKILL));
	ASSERT_SYS(waitpid(forked_after, NULL, 0));
}

static void case_dup2_under_recv(void)
{
	close_under_recv(onto_null);
}

static void case_close_range_under_recv(void)
{
	close_under_recv(close_range_one);
}

/* The same for a send waiting for room: it goes on after the close, all
 * of it arrives, then the end. */
static void case_close_under_send(void)
{
	int a, b;
	struct blocked_send bs = { .seed = shim_seed(11) };

	ts_moved_pair(&a, &b);
	bs.fd = a;
	ASSERT_EQ(pthread_create(&bs.t, NULL, blocked_send_main, &bs), 0);
	/* It is blocked once what it sent waits unread and stops growing. */
	int was = -1, now = 0;
	for (int i = 0; i < 500 && (now < 65536 || now != was); i++) {
		test_sleep_ms(20);
		was = now;
		ASSERT_SYS(ioctl(b, FIONREAD, &now));
	}
	ASSERT_MSG(!atomic_load(&bs.done), "a %d MiB send did not wait for room", BIG_SEND / MIB);
	ASSERT_SYS(close(a));
	ts_recv_stream(b, bs.seed, 0, BIG_SEND, ts_ms(10000));
	ASSERT_EQ(pthread_join(bs.t, NULL), 0);
	ASSERT_MSG(bs.r == BIG_SEND, "send returned %zd (%s), want %d", bs.r,
		   test_errname(bs.err), BIG_SEND);
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
}

/* Many at once, and the numbers taken again: 6 moved connections, a
 * reader blocked on each, their fds closed (or dup2'd onto) in a random
 * order while new pipes take the numbers that free.  Each reader takes its
 * own peer's byte, nothing of the pipes' (a wait that read its old number
 * again would take a pipe's bytes or lose its doorbell), and each peer
 * sees the end after. */
#define UNDER_N 6

static void case_close_under_recv_many(void)
{
	int a[UNDER_N], b[UNDER_N], order[UNDER_N], pipes[UNDER_N][2];
	struct blocked_read br[UNDER_N];
	uint64_t rnd = shim_seed(13);

	for (int i = 0; i < UNDER_N; i++) {
		ts_moved_pair(&a[i], &b[i]);
		order[i] = i;
	}
	for (int i = UNDER_N - 1; i > 0; i--) {
		rnd = test_mix64(rnd);
		int j = (int)(rnd % (uint64_t)(i + 1)), x = order[i];
		order[i] = order[j];
		order[j] = x;
	}
	for (int i = 0; i < UNDER_N; i++)
		blocked_read_start(&br[i], a[i]);
	for (int k = 0; k < UNDER_N; k++) {
		int i = order[k];
		ASSERT_SYS(k % 2 ? onto_null(a[i]) : close(a[i]));
		ASSERT_SYS(pipe(pipes[i]));
		ASSERT_SYS(write(pipes[i][1], "pp", 2));
	}
	test_sleep_ms(50);
	for (int i = 0; i < UNDER_N; i++)
		ASSERT_MSG(!atomic_load(&br[i].done), "reader %d returned %zd (%s) before any byte", i,
			   br[i].r, test_errname(br[i].err));
	for (int i = 0; i < UNDER_N; i++)
		ASSERT_EQ(send(b[i], "x", 1, MSG_NOSIGNAL), 1);
	for (int i = 0; i < UNDER_N; i++) {
		blocked_read_join(&br[i], ts_ms(3000), "its peer sent a byte");
		ASSERT_MSG(br[i].r == 1, "reader %d: recv returned %zd (%s), want 1", i, br[i].r,
			   test_errname(br[i].err));
	}
	for (int i = 0; i < UNDER_N; i++) {
		char p[4];
		ts_expect_eof(b[i], ts_ms(2000));
		ASSERT_EQ(read(pipes[i][0], p, sizeof(p)), 2);
		ASSERT_SYS(close(b[i]));
		ASSERT_SYS(close(pipes[i][0]));
		ASSERT_SYS(close(pipes[i][1]));
	}
	for (int k = 0; k < UNDER_N; k++)
		if (k % 2)
			ASSERT_SYS(close(a[order[k]]));
}

/* SHUT_RDWR wakes the blocked reader too, and the peer sees the end. */
static void case_shutdown_rdwr_wakes(void)
{
	int a, b;
	struct blocked_read br;

	ts_moved_pair(&a, &b);
	blocked_read_start(&br, a);
	ASSERT_SYS(shutdown(a, SHUT_RDWR));
	blocked_read_join(&br, ts_ms(2000), "shutdown(SHUT_RDWR)");
	ASSERT_MSG(br.r == 0, "recv returned %zd (%s), want 0", br.r, test_errname(br.err));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A thread blocked in a send into a full buffer wakes when another shuts
 * the socket down for writing: EPIPE, or the count it sent before; what
 * went in before arrives. */
static void case_shutdown_wr_wakes(void)
{
	int a, b;
	uint64_t seed = shim_seed(5);

	ts_moved_pair(&a, &b);
	uint64_t total = fill(a, seed);
	struct blocked_send bs = { .fd = a, .seed = seed, .off = total, .r = -2 };
	ASSERT_EQ(pthread_create(&bs.t, NULL, blocked_send_main, &bs), 0);
	test_sleep_ms(100);
	if (atomic_load(&bs.done)) {
		ASSERT_EQ(pthread_join(bs.t, NULL), 0);
		TEST_FAIL_MSG("a send of %d MiB into a full buffer returned %zd (%s)",
			      BIG_SEND / MIB, bs.r, test_errname(bs.err));
	}
	ASSERT_SYS(shutdown(a, SHUT_WR));
	wait_done(&bs.done, ts_ms(2000), "a blocked send");
	ASSERT_EQ(pthread_join(bs.t, NULL), 0);
	/* EPIPE, or what went in before it blocked. */
	ASSERT_MSG((bs.r == -1 && bs.err == EPIPE) || (bs.r >= 0 && bs.r < BIG_SEND),
		   "send returned %zd (%s), want EPIPE or a short count", bs.r,
		   bs.r < 0 ? test_errname(bs.err) : "no error");
	test_log("the blocked send returned %zd (%s)", bs.r, bs.r < 0 ? test_errname(bs.err) : "-");
	if (bs.r > 0)
		total += (uint64_t)bs.r;
	ts_recv_stream(b, seed, 0, total, ts_ms(5000));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* Data that reaches a peer that shut both ways (its FIN sent, its reads
 * shut) makes its TCP reset (RFC 1122's abort on data): the first send
 * "succeeds", the next fail with EPIPE, and the peer's next read says
 * ECONNRESET once, then end of stream.  A moved connection's ring took
 * it all: the peer read the bytes sent after its shutdown, the sends went
 * on, and a send of more than the ring holds waited for good. */
/* by_splice: the reads are splices into a pipe, which said 0 where TCP's
 * says ECONNRESET (tests/diff_shim.c seed 50703080695018). */
static void data_to_shut_peer_once(int by_splice)
{
	int a, b, p[2];
	char buf[64];

	ts_moved_pair(&a, &b);
	ASSERT_SYS(shutdown(a, SHUT_RDWR));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_EQ(send(b, "hello", 5, MSG_NOSIGNAL), 5);
	ts_wait_revents(b, POLLOUT, POLLERR, ts_ms(2000));
	ASSERT_FAILS(send(b, "hello", 5, MSG_NOSIGNAL), EPIPE);
	short ev = ts_wait_revents(a, POLLIN, POLLERR, ts_ms(2000));
	ASSERT_MSG((ev & (POLLIN | POLLHUP)) == (POLLIN | POLLHUP), "a's poll says 0x%x", ev);
	if (by_splice) {
		ASSERT_SYS(pipe(p));
		ASSERT_FAILS(splice(a, NULL, p[1], NULL, sizeof(buf), SPLICE_F_NONBLOCK),
			     ECONNRESET);
		ASSERT_EQ(splice(a, NULL, p[1], NULL, sizeof(buf), SPLICE_F_NONBLOCK), 0);
		ASSERT_SYS(close(p[0]));
		ASSERT_SYS(close(p[1]));
	} else {
		ASSERT_FAILS(recv(a, buf, sizeof(buf), MSG_DONTWAIT), ECONNRESET);
		ASSERT_EQ(recv(a, buf, sizeof(buf), MSG_DONTWAIT), 0);
	}
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_data_to_shut_peer(void)
{
	data_to_shut_peer_once(0);
	data_to_shut_peer_once(1);
}

/* Both sides shut their sends down, then one closes with the other's bytes
 * unread (or SO_LINGER {1, 0}): TCP's sockets are closed by then, and that
 * close resets nothing; the other reads the end of stream, poll says
 * POLLHUP and no POLLERR, also after an option takes it back to TCP.
 * Under shunt the close reset (tests/diff_shim.c seeds 267537594241091,
 * 139706242921640), and the way back left POLLHUP out (our FIN had gone
 * by the ring only). */
static void close_after_fins_once(int linger)
{
	struct linger l = { 1, 0 };
	int a, b, on = 1;
	char c;

	ts_moved_pair(&a, &b);
	ts_send_stream(a, shim_seed(9), 0, 100, ts_ms(2000));
	ts_wait_arrived(b, 100, ts_ms(2000));
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ASSERT_SYS(shutdown(b, SHUT_WR));
	ts_expect_eof(a, ts_ms(2000));
	if (linger)
		ASSERT_SYS(setsockopt(b, SOL_SOCKET, SO_LINGER, &l, sizeof(l)));
	ASSERT_SYS(close(b));
	test_sleep_ms(50);
	short re = ts_wait_fd(a, POLLIN | POLLOUT, 0);
	ASSERT_MSG((re & (POLLERR | POLLHUP)) == POLLHUP, "linger %d: poll 0x%x", linger, re);
	ASSERT_EQ(recv(a, &c, 1, MSG_DONTWAIT), 0);
	ASSERT_SYS(setsockopt(a, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on)));
	re = ts_wait_fd(a, POLLIN | POLLOUT, 0);
	ASSERT_MSG((re & (POLLERR | POLLHUP)) == POLLHUP, "linger %d, back on TCP: poll 0x%x",
		   linger, re);
	ASSERT_SYS(close(a));
}

static void case_close_after_fins(void)
{
	close_after_fins_once(0);
	close_after_fins_once(1);
}

/* Our shutdown(SHUT_RD), then the peer's reset (SO_LINGER {1, 0}): TCP's
 * read tells the reset once, then the end of stream (tcp_recvmsg looks at
 * the socket's error before its RCV_SHUTDOWN); a peek too.  Under shunt
 * our shutdown's end of stream came first, the reset never (tests/diff_shim.c
 * seed 40808813192150). */
static void reset_after_shut_rd_once(int peek)
{
	struct linger l = { 1, 0 };
	int a, b;
	char c;

	ts_moved_pair(&a, &b);
	ASSERT_SYS(shutdown(a, SHUT_RD));
	ASSERT_SYS(setsockopt(b, SOL_SOCKET, SO_LINGER, &l, sizeof(l)));
	ASSERT_SYS(close(b));
	ts_wait_revents(a, POLLIN, POLLERR, ts_ms(2000));
	ASSERT_FAILS(recv(a, &c, 1, MSG_DONTWAIT | (peek ? MSG_PEEK : 0)), ECONNRESET);
	ASSERT_EQ(recv(a, &c, 1, MSG_DONTWAIT), 0);
	ASSERT_SYS(close(a));
}

static void case_reset_after_shut_rd(void)
{
	reset_after_shut_rd_once(0);
	reset_after_shut_rd_once(1);
}

/* An option only TCP honours (TCP_INQ), set after our shutdown both
 * ways: it acts (recvmsg's TCP_CM_INQ, truncated with no room for it),
 * and the peer's data still resets.  The way back to TCP it asks for had
 * the peer's answer reset the shut socket, and the reads lost the
 * peer's bytes sent before the shutdown (tests/diff_shim.c). */
static void case_opt_after_shut_both(void)
{
	int a, b, one = 1;
	char buf[64];
	uint64_t seed = shim_seed(7);

	ts_moved_pair(&a, &b);
	ts_send_stream(b, seed, 0, 100, ts_ms(2000));
	ts_wait_arrived(a, 100, ts_ms(2000));
	ASSERT_SYS(shutdown(a, SHUT_RDWR));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(setsockopt(a, IPPROTO_TCP, TCP_INQ, &one, sizeof(one)));
	ts_recv_stream(a, seed, 0, 100, ts_ms(2000));
	struct iovec v = { buf, sizeof(buf) };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
	ASSERT_EQ(recvmsg(a, &m, MSG_DONTWAIT), 0);
	ASSERT_MSG(m.msg_flags & MSG_CTRUNC, "recvmsg's flags 0x%x: no TCP_CM_INQ truncated",
		   m.msg_flags);
	ASSERT_EQ(send(b, "hello", 5, MSG_NOSIGNAL), 5);
	ts_wait_revents(a, POLLIN, POLLERR, ts_ms(2000));
	ASSERT_FAILS(recv(a, buf, sizeof(buf), MSG_DONTWAIT), ECONNRESET);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A peer that shut both ways, then closed with our bytes unread: its FIN
 * came first, so TCP's reset is EPIPE, told once (the send that meets
 * it); getsockopt(SO_ERROR) then says 0.  It said EPIPE again: the
 * kernel's EPIPE was not taken for the reset told (tests/diff_shim.c). */
static void case_reset_after_shut_both(void)
{
	int a, b, err = -1;
	socklen_t l = sizeof(err);

	ts_moved_pair(&a, &b);
	ts_send_stream(b, shim_seed(8), 0, 100, ts_ms(2000));
	ts_wait_arrived(a, 100, ts_ms(2000));
	ASSERT_SYS(shutdown(a, SHUT_RDWR));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(a));
	ts_wait_revents(b, POLLOUT, POLLERR, ts_ms(2000));
	ASSERT_FAILS(send(b, "x", 1, MSG_NOSIGNAL), EPIPE);
	ASSERT_SYS(getsockopt(b, SOL_SOCKET, SO_ERROR, &err, &l));
	ASSERT_MSG(err == 0, "SO_ERROR after the reset was told: %s", test_errname(err));
	ASSERT_FAILS(send(b, "x", 1, MSG_NOSIGNAL), EPIPE);
	ASSERT_SYS(close(b));
}

/* The same after the two halves were shut one by one (SHUT_WR, then
 * SHUT_RD), and a big send after it: it ends (EPIPE, ECONNRESET or a
 * short count) instead of waiting for room no read will make. */
static void case_big_send_to_shut_peer(void)
{
	int a, b;
	char buf[64];

	ts_moved_pair(&a, &b);
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(shutdown(a, SHUT_RD));
	struct blocked_send bs = { .fd = b, .seed = shim_seed(6), .r = -2 };
	ASSERT_EQ(pthread_create(&bs.t, NULL, blocked_send_main, &bs), 0);
	wait_done(&bs.done, ts_ms(3000), "a send to a peer that shut both ways");
	ASSERT_EQ(pthread_join(bs.t, NULL), 0);
	ASSERT_MSG((bs.r == -1 && (bs.err == EPIPE || bs.err == ECONNRESET)) ||
			   (bs.r >= 0 && bs.r < BIG_SEND),
		   "send returned %zd (%s), want EPIPE, ECONNRESET or a short count", bs.r,
		   bs.r < 0 ? test_errname(bs.err) : "no error");
	ASSERT_FAILS(recv(a, buf, sizeof(buf), MSG_DONTWAIT), ECONNRESET);
	ASSERT_EQ(recv(a, buf, sizeof(buf), MSG_DONTWAIT), 0);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A thread blocked in poll wakes at SHUT_RDWR. */
static void case_shutdown_poll_wakes(void)
{
	int a, b;

	ts_moved_pair(&a, &b);
	struct blocked_poll bp = { .fd = a, .r = -2 };
	ASSERT_EQ(pthread_create(&bp.t, NULL, blocked_poll_main, &bp), 0);
	test_sleep_ms(50);
	if (atomic_load(&bp.done)) {
		ASSERT_EQ(pthread_join(bp.t, NULL), 0);
		TEST_FAIL_MSG("poll returned %d (revents 0x%x) with nothing to read", bp.r,
			      bp.revents);
	}
	ASSERT_SYS(shutdown(a, SHUT_RDWR));
	wait_done(&bp.done, ts_ms(2000), "a blocked poll");
	ASSERT_EQ(pthread_join(bp.t, NULL), 0);
	ASSERT_EQ(bp.r, 1);
	ASSERT_EQ(bp.revents, POLLIN | POLLRDHUP | POLLHUP);
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* --- Timeouts ------------------------------------------------------------------ */

static void set_timeo(int fd, int opt, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	ASSERT_SYS(setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)));
}

/* getsockopt gives the timeout back in the kernel's ticks (HZ): within
 * 10 ms of what was set. */
#define ASSERT_TIMEO(fd, opt, ms)                                          \
	do {                                                               \
		int got_ = get_timeo_ms(fd, opt);                          \
		ASSERT_MSG(got_ >= (ms) - 10 && got_ <= (ms) + 10,         \
			   "getsockopt(%s) gives %d ms, %d set", #opt, got_, (ms)); \
	} while (0)

static int get_timeo_ms(int fd, int opt)
{
	struct timeval tv;
	socklen_t len = sizeof(tv);

	ASSERT_SYS(getsockopt(fd, SOL_SOCKET, opt, &tv, &len));
	return (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
}

/* A read with nothing to read fails with EAGAIN after about ms. */
static void expect_rcvtimeo(int fd, int ms, int use_recv)
{
	char b[64];
	double t0 = test_now();

	if (use_recv)
		ASSERT_FAILS(recv(fd, b, sizeof(b), 0), EAGAIN);
	else
		ASSERT_FAILS(read(fd, b, sizeof(b)), EAGAIN);
	double dt = test_now() - t0;
	ASSERT_MSG(dt >= ms * 0.7 / 1000 && dt < ms / 1000.0 + ts_ms(2000) / 1000.0,
		   "%s timed out after %.3f s, want %.3f", use_recv ? "recv" : "read", dt,
		   ms / 1000.0);
}

static void case_rcvtimeo(void)
{
	int a, b;
	uint64_t seed = shim_seed(6);

	/* Set before the move: it holds after. */
	ts_pair(&a, &b);
	set_timeo(a, SO_RCVTIMEO, 200);
	ts_make_accelerated(a, b);
	ASSERT_TIMEO(a, SO_RCVTIMEO, 200);
	expect_rcvtimeo(a, 200, 0);
	expect_rcvtimeo(a, 200, 1);
	/* Changed after the move. */
	set_timeo(a, SO_RCVTIMEO, 100);
	ASSERT_TIMEO(a, SO_RCVTIMEO, 100);
	expect_rcvtimeo(a, 100, 0);
	/* Data within the timeout is read. */
	struct later l = { .fd = b, .ms = 30, .seed = seed, .off = 0, .n = 10 };
	later_start(&l);
	char buf[16];
	size_t got = 0;
	while (got < 10) {
		ssize_t n = read(a, buf + got, 10 - got);
		ASSERT_SYS(n);
		ASSERT_GT(n, 0);
		got += (size_t)n;
	}
	later_join(&l);
	check_stream(seed, 0, buf, 10);
	/* No timeout again: no limit. */
	set_timeo(a, SO_RCVTIMEO, 0);
	l = (struct later){ .fd = b, .ms = 400, .seed = seed, .off = 10, .n = 10 };
	later_start(&l);
	double t0 = test_now();
	for (got = 0; got < 10;) {
		ssize_t n = read(a, buf + got, 10 - got);
		ASSERT_SYS(n);
		ASSERT_GT(n, 0);
		got += (size_t)n;
	}
	ASSERT_GE(test_now() - t0, 0.3);
	later_join(&l);
	check_stream(seed, 10, buf, 10);
	ts_expect_accel(a, "SO_RCVTIMEO");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));

	/* An accepted socket has its listener's timeout (Linux copies it). */
	int port, lfd = ts_tcp_listen(&port);
	set_timeo(lfd, SO_RCVTIMEO, 150);
	int c = ts_tcp_connect(port);
	int s = ts_tcp_accept(lfd, ts_ms(2000));
	ASSERT_SYS(close(lfd));
	ASSERT_TIMEO(s, SO_RCVTIMEO, 150);
	ts_make_accelerated(c, s);
	expect_rcvtimeo(s, 150, 1);
	ASSERT_SYS(close(c));
	ASSERT_SYS(close(s));
}

/* The peer reads nothing: writes of 1 MiB fill, then one times out with
 * EAGAIN after about 200 ms (a short write only after the timeout); the
 * peer then reads exactly what went in. */
static void case_sndtimeo(void)
{
	int a, b;
	unsigned char *buf = malloc(MIB);
	uint64_t seed = shim_seed(7), total = 0;
	double dt = 0;
	ssize_t n = 0;
	int e = 0;

	ASSERT_NOT_NULL(buf);
	ts_moved_pair(&a, &b);
	set_timeo(a, SO_SNDTIMEO, 200);
	ASSERT_TIMEO(a, SO_SNDTIMEO, 200);
	for (int i = 0; i < 256; i++) {
		test_stream_fill(seed, total, buf, MIB);
		double t0 = test_now();
		n = write(a, buf, MIB);
		e = errno;
		dt = test_now() - t0;
		if (n < 0)
			break;
		total += (uint64_t)n;
		if (n < MIB)
			ASSERT_MSG(dt >= 0.14, "a short write (%zd) after %.3f s", n, dt);
	}
	ASSERT_MSG(n == -1 && e == EAGAIN, "write returned %zd (%s), want EAGAIN", n,
		   n < 0 ? test_errname(e) : "no error");
	ASSERT_MSG(dt >= 0.14 && dt < 0.2 + ts_ms(2000) / 1000.0,
		   "write timed out after %.3f s, want 0.2", dt);
	test_log("%ju bytes went in before the timeout", (uintmax_t)total);
	ts_expect_accel(a, "SO_SNDTIMEO");
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ts_recv_stream(b, seed, 0, total, ts_ms(5000));
	ts_expect_eof(b, ts_ms(2000));
	free(buf);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* --- Signals ----------------------------------------------------------------- */

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

/* A blocked read of a while signals come (the kicker, left running) and
 * b sends 10 bytes of `seed` 300 ms later: it must return them.  The
 * signals sent meanwhile. */
static int read_through_signals(int a, int b, uint64_t seed, struct kicker *k)
{
	struct later l = { .fd = b, .ms = 300, .seed = seed, .off = 0, .n = 10 };
	char buf[16];
	size_t got = 0;

	later_start(&l);
	kicker_start(k);
	while (got < 10) {
		ssize_t n = read(a, buf + got, 10 - got);
		ASSERT_MSG(n > 0, "read with SA_RESTART returned %zd (%s)", n,
			   n < 0 ? test_errname(errno) : "end of stream");
		got += (size_t)n;
	}
	int kicks = atomic_load(&k->sent);
	later_join(&l);
	check_stream(seed, 0, buf, 10);
	return kicks;
}

static void case_eintr(void)
{
	int a, b;
	struct kicker k;
	uint64_t seed = shim_seed(8);
	char buf[64];

	ts_moved_pair(&a, &b);
	/* No SA_RESTART: a blocked read and recv end with EINTR, a send with
	 * EINTR or what went in before. */
	ts_set_handler(SIGUSR1, on_usr1, 0);
	kicker_start(&k);
	ASSERT_FAILS(read(a, buf, sizeof(buf)), EINTR);
	ASSERT_FAILS(recv(a, buf, sizeof(buf), 0), EINTR);
	kicker_stop(&k);
	ASSERT_GT(atomic_load(&g_usr1), 0);
	uint64_t total = fill(a, seed);
	kicker_start(&k);
	ssize_t r = big_send(a, seed, total, 0);
	int e = errno;
	kicker_stop(&k);
	/* EINTR, or what went in before the signal. */
	ASSERT_MSG((r == -1 && e == EINTR) || (r >= 0 && r < BIG_SEND),
		   "a blocked send returned %zd (%s), want EINTR or a short count", r,
		   r < 0 ? test_errname(e) : "no error");
	test_log("the interrupted send returned %zd (%s)", r, r < 0 ? test_errname(e) : "-");
	if (r > 0)
		total += (uint64_t)r;

	/* SA_RESTART: a read goes on and returns the data sent 300 ms later ... */
	ts_set_handler(SIGUSR1, on_usr1, SA_RESTART);
	int kicks = read_through_signals(a, b, seed ^ 1, &k);
	/* ... but poll, select and epoll_wait are never restarted (signal(7)). */
	ASSERT_FAILS(poll(&(struct pollfd){ .fd = a, .events = POLLIN }, 1, 5000), EINTR);
	fd_set rd;
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ASSERT_FAILS(select(a + 1, &rd, NULL, NULL, &(struct timeval){ 5, 0 }), EINTR);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_FAILS(epoll_wait(ep, &ev, 1, 5000), EINTR);
	close(ep);
	/* With SO_RCVTIMEO set, a socket read is not restarted either. */
	set_timeo(a, SO_RCVTIMEO, 5000);
	ASSERT_FAILS(read(a, buf, sizeof(buf)), EINTR);
	kicker_stop(&k);
	test_log("%d signals while read waited 300 ms", kicks);
	ASSERT_GE(kicks, 3);
	ts_set_handler(SIGUSR1, SIG_DFL, 0);
	/* The stream is whole. */
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ts_recv_stream(b, seed, 0, total, ts_ms(5000));
	ts_expect_eof(b, ts_ms(2000));
	ts_expect_accel(a, "after signals");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void on_usr2(int sig)
{
	(void)sig;
}

/* An SA_RESTART signal while another handler has no SA_RESTART (never
 * sent here): a blocked read goes on, as TCP's is restarted.  A read of
 * several threads' process that slept in ppoll could not tell which
 * signal came, and said EINTR (a helper's reproducer, 12-07). */
static void case_eintr_mixed(void)
{
	int a, b;
	struct kicker k;
	uint64_t seed = shim_seed(9);

	ts_moved_pair(&a, &b);
	ts_set_handler(SIGUSR2, on_usr2, 0);
	ts_set_handler(SIGUSR1, on_usr1, SA_RESTART);
	int kicks = read_through_signals(a, b, seed, &k);
	kicker_stop(&k);
	ASSERT_GE(kicks, 3);
	ts_set_handler(SIGUSR1, SIG_DFL, 0);
	ts_set_handler(SIGUSR2, SIG_DFL, 0);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A thread cancelled while it sleeps in poll() on a moved connection,
 * after a poll that slept (its thread has a kick eventfd): its listing for
 * kicks stayed, and once its eventfd closed with the thread, later kicks
 * wrote 8 bytes into whatever took that number (a helper's reproducers,
 * 12-07: a file of the program's, or another connection's stream); and
 * the poll's set leaked (ASan).  Here the program's file takes it, and a
 * read of the connection that takes a doorbell kicks.  (A thread
 * cancelled in a blocking read is unlisted the same way, but leaks its
 * reference to the socket: docs/design.md, Limits.) */
static int cw_fd;

static void *cw_reader(void *arg)
{
	struct pollfd p = { .fd = cw_fd, .events = POLLIN };

	(void)arg;
	(void)poll(&p, 1, 50); /* sleeps: the thread gets its kick eventfd */
	(void)poll(&p, 1, -1); /* cancelled here */
	return NULL;
}

static int eventfds(int *out, int max)
{
	int n = 0;

	for (int fd = 3; fd < 4096 && n < max; fd++) {
		char path[64], to[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t k = readlink(path, to, sizeof(to) - 1);
		if (k > 0 && (to[k] = 0, strstr(to, "eventfd")))
			out[n++] = fd;
	}
	return n;
}

static void case_cancel_in_wait(void)
{
	int a, b, before[64], after[64], gone = -1;
	pthread_t th;
	char buf[64];
	uint64_t seed = shim_seed(40);

	ts_moved_pair(&a, &b);
	cw_fd = a;
	ASSERT_EQ(pthread_create(&th, NULL, cw_reader, NULL), 0);
	test_sleep_ms(300); /* asleep */
	int n1 = eventfds(before, 64);
	ASSERT_EQ(pthread_cancel(th), 0);
	ASSERT_EQ(pthread_join(th, NULL), 0);
	int n2 = eventfds(after, 64);
	for (int i = 0; i < n1; i++) {
		int kept = 0;
		for (int j = 0; j < n2; j++)
			kept |= before[i] == after[j];
		if (!kept)
			gone = before[i];
	}
	test_log("the thread's eventfd %d closed with it", gone);
	ASSERT_MSG(gone > 0, "no eventfd closed with the thread");
	/* The program's file at that number. */
	char name[] = "/tmp/shunt-cw-XXXXXX";
	int f = mkstemp(name);
	ASSERT_SYS(f);
	ASSERT_SYS(unlink(name));
	ASSERT_EQ(dup2(f, gone), gone);
	/* A read that takes the peer's doorbell kicks the listed waits. */
	struct later l = { .fd = b, .ms = 200, .seed = seed, .off = 0, .n = 10 };
	later_start(&l);
	ts_read_exact(a, buf, 10, ts_ms(3000));
	later_join(&l);
	check_stream(seed, 0, buf, 10);
	struct stat st;
	ASSERT_SYS(fstat(f, &st));
	ASSERT_MSG(st.st_size == 0, "the program's file at fd %d holds %lld bytes it never wrote",
		   gone, (long long)st.st_size);
	ASSERT_SYS(close(gone));
	ASSERT_SYS(close(f));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/*
 * A thread cancelled asleep in a read of a socket lets go of it with the
 * thread: its call's reference to the socket's record stayed for good,
 * and with it the slot and the mapped segment after the program closed
 * both ends (ASan; a helper's reproducer, 12-07).  In a read of a moved
 * connection (asleep in ppoll), of one on TCP (in the kernel), in a
 * recvmsg, and in a write on TCP that fills the kernel's buffers.
 */
static int cr_fd, cr_how; /* how: 0 read, 1 recvmsg, 2 a write that fills the kernel's buffers */
static char cr_big[64 << 20];

static void *cr_reader(void *arg)
{
	char c;
	struct iovec v = { &c, 1 };
	struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };

	(void)arg;
	if (cr_how == 2)
		(void)write(cr_fd, cr_big, sizeof(cr_big)); /* the peer reads none: cancelled here */
	else if (cr_how)
		(void)recvmsg(cr_fd, &m, 0); /* cancelled here */
	else
		(void)read(cr_fd, &c, 1); /* cancelled here */
	return NULL;
}

/* ASan does not unpoison the frames a cancellation unwinds, and the
 * thread's end reuses that stack (its sigaltstack, in ASan's own thread
 * end): a false stack-buffer-overflow there.  The cancelled call runs
 * below a pad deeper than that end reaches, itself without redzones. */
__attribute__((no_sanitize_address)) static void *below_pad(void *(*fn)(void *))
{
	volatile char pad[32 << 10];

	pad[0] = 1;
	void *r = fn(NULL);
	return pad[0] ? r : NULL; /* read after the call: the pad stays in the frame */
}

static void *cr_thread(void *arg)
{
	(void)arg;
	return below_pad(cr_reader);
}

static void cancel_in_read(int moved, int how)
{
	int a, b, before = shunt__shim_arena_used(), used = -1;
	pthread_t th;

	if (moved)
		ts_moved_pair(&a, &b);
	else
		ts_pair(&a, &b);
	cr_fd = a;
	cr_how = how;
	ASSERT_EQ(pthread_create(&th, NULL, cr_thread, NULL), 0);
	test_sleep_ms(300); /* asleep */
	ASSERT_EQ(pthread_cancel(th), 0);
	ASSERT_EQ(pthread_join(th, NULL), 0);
	/* The connection goes on: the next read takes the next bytes. */
	char buf[16];
	uint64_t seed = shim_seed(41);
	struct later l = { .fd = b, .ms = 100, .seed = seed, .off = 0, .n = 16 };
	later_start(&l);
	ts_read_exact(a, buf, 16, ts_ms(3000));
	later_join(&l);
	check_stream(seed, 0, buf, 16);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	for (int i = 0; i < 100 && (used = shunt__shim_arena_used()) > before; i++)
		test_sleep_ms(20);
	test_log("%s, %s cancelled: %d slots in use after the close, %d before",
		 moved ? "moved" : "on TCP", how == 2 ? "write" : how ? "recvmsg" : "read", used,
		 before);
	ASSERT_MSG(used <= before, "the cancelled call's socket still holds %d slot(s)",
		   used - before);
}

static void case_cancel_in_read(void)
{
	if (ts_disabled() || !shunt__shim_arena_used) {
		test_log("no arena: nothing to check");
		return;
	}
	cancel_in_read(1, 0);
	cancel_in_read(0, 0);
	cancel_in_read(1, 1);
	cancel_in_read(0, 2); /* a moved one: cancel_in_room */
}

/*
 * A thread cancelled while its send waits for room in the ring, the peer
 * reading nothing: over TCP the send, a cancellation point, ends at once;
 * the ring's wait for room slept in no cancellation point, so the thread
 * never ended and pthread_join waited for good.  The wait acts on it now.
 */
static void case_cancel_in_room(void)
{
	int a, b, before = shunt__shim_arena_used ? shunt__shim_arena_used() : 0, used = -1;
	pthread_t th;
	struct timespec until;

	ts_moved_pair(&a, &b);
	cr_fd = a;
	cr_how = 2; /* a write the ring cannot hold */
	ASSERT_EQ(pthread_create(&th, NULL, cr_thread, NULL), 0);
	test_sleep_ms(300); /* the ring is full: the writer waits for room */
	ASSERT_EQ(pthread_cancel(th), 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 3;
	int rc = pthread_timedjoin_np(th, NULL, &until);
	if (rc != 0) { /* end the wait the other way, and say so */
		ASSERT_SYS(close(b));
		ASSERT_EQ(pthread_join(th, NULL), 0);
		ASSERT_MSG(0, "the cancelled writer still waited for room after 3 s (%s)",
			   strerror(rc));
	}
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	for (int i = 0; shunt__shim_arena_used && i < 100 &&
			(used = shunt__shim_arena_used()) > before; i++)
		test_sleep_ms(20);
	test_log("the writer ended; %d slots in use after the close, %d before", used, before);
	ASSERT_MSG(!shunt__shim_arena_used || used <= before,
		   "the cancelled send's socket still holds %d slot(s)", used - before);
}

/* A timeout by siglongjmp out of a blocked recv (alarm(), then a jump out
 * of the SIGALRM handler, as older programs time out a read): over TCP
 * the next recv takes what comes, and the close ends the stream at once.
 * Ours left the direction's lock held by the frame it jumped out of: the
 * next blocking recv waited for good (design.md, Limits, before 12-08). */
static sigjmp_buf g_jump;

static void on_alarm_jump(int sig)
{
	(void)sig;
	siglongjmp(g_jump, 1);
}

static unsigned char g_big[BIG_SEND]; /* no malloc to leak in a jump */

static void jump_out_of(int a, int sending)
{
	char buf[64];

	ts_set_handler(SIGALRM, on_alarm_jump, 0);
	if (sigsetjmp(g_jump, 1) == 0) {
		setitimer(ITIMER_REAL, &(struct itimerval){ { 0, 0 }, { 0, 100000 } }, NULL);
		if (sending)
			send(a, g_big, sizeof(g_big), 0);
		else
			recv(a, buf, sizeof(buf), 0);
		ASSERT_MSG(0, "the blocked %s returned", sending ? "send" : "recv");
	}
	signal(SIGALRM, SIG_DFL);
}

static void jump_then_go_on(int a, int b, const char *when)
{
	char buf[64];

	ASSERT_SYS(setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 3, 0 },
			      sizeof(struct timeval)));
	jump_out_of(a, 0);
	ASSERT_EQ(send(b, "after", 5, 0), 5);
	double t0 = test_now();
	ssize_t n = recv(a, buf, sizeof(buf), 0);
	ASSERT_MSG(n == 5 && !memcmp(buf, "after", 5), "%s: the recv after the jump: %zd (%s), %.2f s",
		   when, n, n < 0 ? test_errname(errno) : "-", test_now() - t0);
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
}

/* The close right after the jump: the peer reads the end at once. */
static void jump_then_close(int a, int b, const char *when)
{
	jump_out_of(a, 0);
	ASSERT_SYS(close(a));
	double t0 = test_now();
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_MSG(test_now() - t0 < 1.0, "%s: the end came %.2f s after the close", when,
		   test_now() - t0);
	ASSERT_SYS(close(b));
}

/* Out of a send blocked on a full buffer: what went in before stays, in
 * order, and the next send and the close follow it. */
static void jump_out_of_send(int a, int b, const char *when)
{
	static unsigned char got[BIG_SEND + 64];
	size_t n = 0;
	ssize_t k;

	memset(g_big, 'x', sizeof(g_big));
	jump_out_of(a, 1);
	while ((k = recv(b, got + n, sizeof(got) - n, MSG_DONTWAIT)) > 0)
		n += (size_t)k;
	ASSERT_GT(n, 0);
	ASSERT_MSG(n < BIG_SEND, "%s: %zu bytes of a send that blocked", when, n);
	ASSERT_EQ(send(a, "after", 5, 0), 5);
	ASSERT_SYS(close(a));
	ASSERT_SYS(setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 3, 0 },
			      sizeof(struct timeval)));
	while ((k = recv(b, got + n, sizeof(got) - n, 0)) > 0)
		n += (size_t)k;
	ASSERT_MSG(k == 0, "%s: after %zu bytes: %s", when, n, test_errname(errno));
	ASSERT_MSG(n > 5 && !memcmp(got + n - 5, "after", 5), "%s: the stream does not end with the last send", when);
	for (size_t i = 0; i < n - 5; i++)
		ASSERT_MSG(got[i] == 'x', "%s: byte %zu of %zu is wrong", when, i, n);
	ASSERT_SYS(close(b));
}

/* An exec right after the jump takes the moved connection back to TCP,
 * which takes the direction's lock: it waited for the lock, gave up and
 * reset the connection. */
static void jump_then_exec(int fd, void *arg)
{
	(void)arg;
	ts_make_accelerated_follow(fd);
	jump_out_of(fd, 0);
	ASSERT_SYS(fcntl(fd, F_SETFD, 0)); /* kept across the exec */
	execl("/bin/true", "true", (char *)NULL);
	TEST_FAIL_MSG("execl(/bin/true): %s", strerror(errno));
}

/* The same with posix_spawn, the socket the child's stdin (a file
 * action's dup2, which takes it back to TCP first). */
static void jump_then_spawn(int fd, void *arg)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = { "true", NULL };
	pid_t child;
	int st;

	(void)arg;
	ts_make_accelerated_follow(fd);
	jump_out_of(fd, 0);
	ASSERT_EQ(posix_spawn_file_actions_init(&fa), 0);
	ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, fd, 0), 0);
	ASSERT_EQ(posix_spawn(&child, "/bin/true", &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	ASSERT_EQ(waitpid(child, &st, 0), child);
	ASSERT_SYS(close(fd));
}

/* Our end: the peer's jump, then its exec or spawn and close, end the
 * stream at once. */
static void jumped_peer_ends(void (*fn)(int, void *), const char *what)
{
	struct shim_peer p;
	char buf[16];

	ts_peer_start(&p, fn, NULL);
	ts_make_accelerated_lead(p.fd);
	ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 4, 0 },
			      sizeof(struct timeval)));
	double t0 = test_now();
	ssize_t n = recv(p.fd, buf, sizeof(buf), 0);
	ASSERT_MSG(n == 0 && test_now() - t0 < 2.0,
		   "the peer jumped out of a recv, then %s: recv %zd (%s) after %.2f s (TCP: the end, at once)",
		   what, n, n < 0 ? test_errname(errno) : "-", test_now() - t0);
	ts_peer_wait(&p, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
}

static void case_jump_out_of_call(void)
{
	jumped_peer_ends(jump_then_exec, "exec'd");
	jumped_peer_ends(jump_then_spawn, "spawned a child on it");

	void (*const how[])(int, int, const char *) = { jump_then_go_on, jump_then_close,
							 jump_out_of_send };
	int a, b;

	for (size_t i = 0; i < sizeof(how) / sizeof(how[0]); i++) {
		ts_pair(&a, &b);
		how[i](a, b, "on TCP");
		ts_moved_pair(&a, &b);
		how[i](a, b, "moved");
	}
}

/* A server that sends, then makes no call until it closes (varnish at a
 * backend's stall, a proxy waiting on its upstream): its connection moved
 * while it sent, but it never read again, so its reads never switched to
 * the ring, and the doorbell the client's switch put on the stream was
 * still unread at the close: the kernel answered the close with a reset,
 * and the client read ECONNRESET after every byte where TCP's reads the
 * end (a helper's reproducer, 12-08: 5 tries in 8). */
static void sends_then_closes(int fd, void *arg)
{
	static char x[300000];
	char req[4];

	(void)arg;
	memset(x, 'x', sizeof(x));
	ts_read_exact(fd, req, sizeof(req), ts_ms(3000));
	for (int i = 0; i < 3; i++) {
		ts_write_all(fd, x, sizeof(x), ts_ms(3000));
		test_sleep_ms(100);
	}
	test_sleep_ms(300);
	ASSERT_SYS(close(fd));
}

static void case_close_unswitched(void)
{
	static char buf[1 << 16];

	for (int round = 0; round < 12; round++) {
		struct shim_peer p;
		size_t n = 0;
		ssize_t k;

		ts_peer_start(&p, sends_then_closes, NULL);
		ASSERT_SYS(setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 5, 0 },
				      sizeof(struct timeval)));
		ts_write_all(p.fd, "GET\n", 4, ts_ms(3000));
		while ((k = recv(p.fd, buf, sizeof(buf), 0)) > 0)
			n += (size_t)k;
		ASSERT_MSG(k == 0 && n == 900000, "round %d: %s after %zu bytes (TCP: the end after 900000)",
			   round, k < 0 ? test_errname(errno) : "the end", n);
		ts_peer_wait(&p, ts_ms(3000));
		ASSERT_SYS(close(p.fd));
	}
}

static const struct shim_case g_cases[] = {
	{ "eof_shutdown", case_eof_shutdown },
	{ "eof_close", case_eof_close },
	{ "close_unread", case_close_unread },
	{ "close_syscall", case_close_syscall },
	{ "reset", case_reset },
	{ "reset_blocked", case_reset_blocked },
	{ "killed_idle", case_killed_idle },
	{ "killed_nowait", case_killed_nowait },
	{ "sigpipe", case_sigpipe },
	{ "writev_after_close", case_writev_after_close },
	{ "sendfile_after_reset", case_sendfile_after_reset },
	{ "send_after_reset", case_send_after_reset },
	{ "shut_wr_then_reset", case_shut_wr_then_reset },
	{ "shutdown_rd_wakes", case_shutdown_rd_wakes },
	{ "shutdown_rd_keeps", case_shutdown_rd_keeps },
	{ "shutdown_rdwr_keeps", case_shutdown_rdwr_keeps },
	{ "shutdown_rdwr_wakes", case_shutdown_rdwr_wakes },
	{ "close_under_recv", case_close_under_recv },
	{ "close_under_recv_fork", case_close_under_recv_fork },
	{ "dup2_under_recv", case_dup2_under_recv },
	{ "close_range_under_recv", case_close_range_under_recv },
	{ "close_under_send", case_close_under_send },
	{ "close_under_recv_many", case_close_under_recv_many },
	{ "shutdown_wr_wakes", case_shutdown_wr_wakes },
	{ "data_to_shut_peer", case_data_to_shut_peer },
	{ "close_after_fins", case_close_after_fins },
	{ "reset_after_shut_rd", case_reset_after_shut_rd },
	{ "opt_after_shut_both", case_opt_after_shut_both },
	{ "reset_after_shut_both", case_reset_after_shut_both },
	{ "big_send_to_shut_peer", case_big_send_to_shut_peer },
	{ "shutdown_poll_wakes", case_shutdown_poll_wakes },
	{ "rcvtimeo", case_rcvtimeo },
	{ "sndtimeo", case_sndtimeo },
	{ "eintr", case_eintr },
	{ "cancel_in_wait", case_cancel_in_wait },
	{ "cancel_in_read", case_cancel_in_read },
	{ "cancel_in_room", case_cancel_in_room },
	{ "eintr_mixed", case_eintr_mixed },
	{ "jump_out_of_call", case_jump_out_of_call },
	{ "close_unswitched", case_close_unswitched },
};

int main(void)
{
	return ts_main("t_shim_close", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
}
