/*
 * t_shim_connect.c - making connections, and what a connection says of
 * itself, with the shim on: a non-blocking connect (EINPROGRESS, SO_ERROR,
 * EISCONN, before and after the move), a refused one and a second connect
 * on the same socket; names and options over IPv4 and IPv6, at the
 * connecting and the accepting end, the same after the move as before;
 * short connections (connect, one byte each way, close, 100 times) that
 * must NOT move and leave no fd or mapping behind; connect() that does not
 * wait for a late accept(), connections closed before the accept, and a
 * client that wrote a burst before it; no fd or mapping left by 40 moved
 * connections; connect(AF_UNSPEC) on a moved connection (the peer reads
 * ECONNRESET) and a new connect on the same socket, which moves in turn.
 *
 * Each case checks that the program sees exactly what kernel TCP gives it
 * (SHUNT_DISABLE=1 is the reference, where every case passes), after the
 * connection moved when it is one that should move.
 * SHUNT_TEST_ONLY=name,name runs some cases.  (Ported from the former t_preload.)
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shimlib.h"
#include "testlib.h"

#define KIB 1024
#define MIB (1024 * 1024)

/* --- Addresses ------------------------------------------------------------------ */

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
	ASSERT_SYS(listen(fd, 64));
	len = sizeof(ss);
	ASSERT_SYS(getsockname(fd, (struct sockaddr *)&ss, &len));
	*port = addr_port(&ss);
	return fd;
}

static int tcp_connect(int family, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM, 0), rc;

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
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int ok = fd >= 0 && bind(fd, (struct sockaddr *)&ss, len) == 0;

	if (fd >= 0)
		close(fd);
	return ok;
}

/* --- connect ------------------------------------------------------------------- */

static int sockopt_get(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	ASSERT_SYS(getsockopt(fd, level, opt, &v, &len));
	ASSERT_EQ(len, sizeof(v));
	return v;
}

/* A non-blocking connect: EINPROGRESS (or at once), POLLOUT, SO_ERROR 0;
 * the first connect() after that reports the outcome (0), later ones
 * EISCONN; the same after the move. */
static void case_connect_nonblock(void)
{
	int port, lfd = ts_tcp_listen(&port);
	struct sockaddr_storage ss;
	socklen_t len = loopback(AF_INET, port, &ss);
	uint64_t seed = shim_seed(1);

	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ASSERT_SYS(c);
	errno = 0;
	int rc = connect(c, (struct sockaddr *)&ss, len);
	ASSERT_MSG(rc == 0 || errno == EINPROGRESS, "connect: %d %s", rc, test_errname(errno));
	test_log("non-blocking connect: %s", rc == 0 ? "done at once" : "EINPROGRESS");
	ASSERT(ts_wait_fd(c, POLLOUT, ts_ms(2000)) & POLLOUT);
	ASSERT_EQ(sockopt_get(c, SOL_SOCKET, SO_ERROR), 0);
	errno = 0;
	rc = connect(c, (struct sockaddr *)&ss, len);
	ASSERT_MSG(rc == 0 || errno == EISCONN, "connect again: %d %s", rc, test_errname(errno));
	ASSERT_FAILS(connect(c, (struct sockaddr *)&ss, len), EISCONN);
	int s = ts_tcp_accept(lfd, ts_ms(2000));
	ASSERT_SYS(close(lfd));
	ts_make_accelerated(c, s);
	ASSERT_EQ(sockopt_get(c, SOL_SOCKET, SO_ERROR), 0);
	ASSERT_FAILS(connect(c, (struct sockaddr *)&ss, len), EISCONN);
	ASSERT(fcntl(c, F_GETFL) & O_NONBLOCK);
	ts_send_stream(c, seed, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(s, seed, 0, 100 * KIB, ts_ms(2000));
	ts_send_stream(s, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(c, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	ts_expect_accel(c, "a non-blocking connect");
	ASSERT_SYS(close(c));
	ts_expect_eof(s, ts_ms(2000));
	ASSERT_SYS(close(s));
}

/* A bound port that does not listen refuses: ECONNREFUSED from a blocking
 * connect, from SO_ERROR after a non-blocking one; the socket refused by a
 * blocking connect then connects elsewhere, and that connection moves and
 * works. */
static void case_connect_refused(void)
{
	struct sockaddr_storage ss, to;
	socklen_t len = loopback(AF_INET, 0, &ss), tolen;
	int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err = -1;
	uint64_t seed = shim_seed(2);

	ASSERT_SYS(b);
	ASSERT_SYS(bind(b, (struct sockaddr *)&ss, len));
	ASSERT_SYS(getsockname(b, (struct sockaddr *)&ss, &len));
	int nb = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ASSERT_SYS(nb);
	errno = 0;
	int rc = connect(nb, (struct sockaddr *)&ss, len);
	ASSERT(rc == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED));
	if (errno == EINPROGRESS) {
		ASSERT(ts_wait_fd(nb, POLLOUT, ts_ms(2000)) & (POLLOUT | POLLERR | POLLHUP));
		socklen_t l = sizeof(err);
		ASSERT_SYS(getsockopt(nb, SOL_SOCKET, SO_ERROR, &err, &l));
		ASSERT_EQ(err, ECONNREFUSED);
	}
	ASSERT_EQ(sockopt_get(nb, SOL_SOCKET, SO_ERROR), 0); /* taken */
	ASSERT_SYS(close(nb));
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_SYS(fd);
	ASSERT_FAILS(connect(fd, (struct sockaddr *)&ss, len), ECONNREFUSED);
	/* The same socket, to a listener now. */
	int port, lfd = ts_tcp_listen(&port);
	tolen = loopback(AF_INET, port, &to);
	ASSERT_SYS(connect(fd, (struct sockaddr *)&to, tolen));
	int s = ts_tcp_accept(lfd, ts_ms(2000));
	ts_make_accelerated(fd, s);
	ts_send_stream(fd, seed, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(s, seed, 0, 100 * KIB, ts_ms(2000));
	ts_send_stream(s, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(fd, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	ASSERT_SYS(close(fd));
	ts_expect_eof(s, ts_ms(2000));
	ASSERT_SYS(close(s));
	ASSERT_SYS(close(lfd));
	ASSERT_SYS(close(b));
}

/* --- Names and options ------------------------------------------------------------ */

struct names {
	struct sockaddr_storage name, peer;
};

static void get_names(int fd, struct names *n)
{
	socklen_t l1 = sizeof(n->name), l2 = sizeof(n->peer);

	memset(n, 0, sizeof(*n));
	ASSERT_SYS(getsockname(fd, (struct sockaddr *)&n->name, &l1));
	ASSERT_SYS(getpeername(fd, (struct sockaddr *)&n->peer, &l2));
}

static void check_names(int a, int b, const struct names *a0, const struct names *b0)
{
	struct names na, nb;
	char s1[96], s2[96];

	get_names(a, &na);
	get_names(b, &nb);
	ASSERT_MSG(addr_eq(&na.name, &nb.peer), "a's name %s, b's peer %s",
		   addr_str(&na.name, s1, sizeof(s1)), addr_str(&nb.peer, s2, sizeof(s2)));
	ASSERT_MSG(addr_eq(&na.peer, &nb.name), "a's peer %s, b's name %s",
		   addr_str(&na.peer, s1, sizeof(s1)), addr_str(&nb.name, s2, sizeof(s2)));
	if (a0) {
		ASSERT_MSG(addr_eq(&na.name, &a0->name) && addr_eq(&na.peer, &a0->peer),
			   "a's names changed: %s, %s", addr_str(&na.name, s1, sizeof(s1)),
			   addr_str(&na.peer, s2, sizeof(s2)));
		ASSERT_MSG(addr_eq(&nb.name, &b0->name) && addr_eq(&nb.peer, &b0->peer),
			   "b's names changed: %s, %s", addr_str(&nb.name, s1, sizeof(s1)),
			   addr_str(&nb.peer, s2, sizeof(s2)));
	}
}

/* Set a boolean option and read it back. */
static void sockopt_flag(int fd, int level, int opt, int on)
{
	ASSERT_SYS(setsockopt(fd, level, opt, &on, sizeof(on)));
	ASSERT_MSG(!!sockopt_get(fd, level, opt) == on, "option %d: set %d, read back %d", opt,
		   on, sockopt_get(fd, level, opt));
}

static void check_sockopts(int fd, int family)
{
	int big = 65536;

	sockopt_flag(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	sockopt_flag(fd, IPPROTO_TCP, TCP_NODELAY, 0);
	sockopt_flag(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	sockopt_flag(fd, SOL_SOCKET, SO_KEEPALIVE, 0);
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
	ASSERT_GT(sockopt_get(fd, IPPROTO_TCP, TCP_MAXSEG), 0);
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	ASSERT_SYS(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len));
	ASSERT_EQ(ti.tcpi_state, TCP_ESTABLISHED);
}

static void sockinfo_one(int family, int swap)
{
	int port, lfd = tcp_listen(family, &port);
	int c = tcp_connect(family, port);
	int s = ts_tcp_accept(lfd, ts_ms(2000));
	int a = swap ? s : c, b = swap ? c : s;
	int fl = fcntl(a, F_GETFL), fd_fl = fcntl(a, F_GETFD);
	struct names a0, b0;
	uint64_t seed = shim_seed(3);

	ASSERT_SYS(close(lfd));
	get_names(a, &a0);
	get_names(b, &b0);
	check_names(a, b, NULL, NULL);
	ts_make_accelerated(a, b);
	check_names(a, b, &a0, &b0);
	ASSERT_EQ(fcntl(a, F_GETFL), fl);
	ASSERT_EQ(fcntl(a, F_GETFD), fd_fl);
	check_sockopts(a, family);
	ts_send_stream(a, seed, 0, 100000, ts_ms(2000));
	ts_recv_stream(b, seed, 0, 100000, ts_ms(2000));
	ts_send_stream(b, seed ^ 1, 0, 100000, ts_ms(2000));
	ts_recv_stream(a, seed ^ 1, 0, 100000, ts_ms(2000));
	ts_expect_accel(a, "after setsockopt");
	check_names(a, b, &a0, &b0);
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
}

/* getsockname, getpeername, F_GETFL, F_GETFD the same after the move as
 * before; options set and read back after it; over 127.0.0.1 and ::1, the
 * options checked at the connected and at the accepted end. */
static void case_sockinfo(void)
{
	for (int six = 0; six < 2; six++) {
		int family = six ? AF_INET6 : AF_INET;
		if (six && !ipv6_ok()) {
			test_log("no IPv6 loopback here: ::1 not checked");
			continue;
		}
		for (int swap = 0; swap < 2; swap++) {
			test_log("%s, the %s end", six ? "::1" : "127.0.0.1",
				 swap ? "accepted" : "connected");
			sockinfo_one(family, swap);
		}
	}
}

/* --- Short connections -------------------------------------------------------- */

#define SHORT_CONNS 100

/* May short connections move here?  Only with SHUNT_UPGRADE_CALLS or
 * SHUNT_UPGRADE_BYTES turned down below what one of them does. */
static int short_may_move(void)
{
	const char *c = getenv("SHUNT_UPGRADE_CALLS"), *b = getenv("SHUNT_UPGRADE_BYTES");

	return (c && *c && atoi(c) < 4) || (b && *b && atoi(b) < 4);
}

struct short_srv {
	int lfd, n;
};

/* The server: one byte in, one out, then the end (the client closes first
 * on even connections, the server on odd ones). */
static void short_server(void *arg)
{
	const struct short_srv *s = arg;
	int maps = -1, fds = -1;

	for (int i = 0; i < s->n; i++) {
		int fd = ts_tcp_accept(s->lfd, ts_ms(5000));
		char c;
		ts_read_exact(fd, &c, 1, ts_ms(3000));
		ASSERT_EQ(c, (char)i);
		ts_write_all(fd, &c, 1, ts_ms(3000));
		if (i % 2 == 0)
			ts_expect_eof(fd, ts_ms(3000));
		ASSERT_MSG(short_may_move() || !ts_accel(fd),
			   "server: short connection %d moved to shared memory", i);
		ASSERT_SYS(close(fd));
		if (i == 0) {
			fds = test_count_fds();
			maps = test_count_maps("/memfd:shunt");
		}
	}
	ASSERT_SYS(close(s->lfd));
	ASSERT_EQ(test_count_fds(), fds - 1);
	ASSERT_EQ(test_count_maps("/memfd:shunt"), maps);
}

/* connect, a byte each way, close: 100 times, to a server process and in
 * this process.  None moves (it would not pay), every byte arrives, and
 * neither side keeps an fd or a mapping. */
static void case_short_connections(void)
{
	int port, lfd = ts_tcp_listen(&port);
	struct short_srv srv = { lfd, SHORT_CONNS };
	pid_t pid = test_fork(short_server, &srv);
	int fds = -1, maps = -1;
	double t0 = test_now();

	ASSERT_SYS(close(lfd));
	if (short_may_move())
		test_log("SHUNT_UPGRADE_CALLS or _BYTES is set low: short connections may move");
	for (int i = 0; i < SHORT_CONNS; i++) {
		int fd = ts_tcp_connect(port);
		char c = (char)i;
		ts_write_all(fd, &c, 1, ts_ms(3000));
		ts_read_exact(fd, &c, 1, ts_ms(3000));
		ASSERT_EQ(c, (char)i);
		if (i % 2)
			ts_expect_eof(fd, ts_ms(3000));
		ASSERT_MSG(short_may_move() || !ts_accel(fd), "short connection %d moved", i);
		ASSERT_SYS(close(fd));
		if (i == 0) {
			fds = test_count_fds();
			maps = test_count_maps("/memfd:shunt");
		}
	}
	test_wait_ok(pid, ts_ms(10000) / 1000.0);
	test_log("%d short connections to another process in %.3f s", SHORT_CONNS,
		 test_now() - t0);
	/* Both ends here. */
	t0 = test_now();
	for (int i = 0; i < SHORT_CONNS; i++) {
		int a, b;
		char c = (char)i, d;
		ts_pair(&a, &b);
		ts_write_all(a, &c, 1, ts_ms(3000));
		ts_read_exact(b, &d, 1, ts_ms(3000));
		ts_write_all(b, &d, 1, ts_ms(3000));
		ts_read_exact(a, &c, 1, ts_ms(3000));
		ASSERT_EQ(c, (char)i);
		ASSERT_MSG(short_may_move() || (!ts_accel(a) && !ts_accel(b)),
			   "short connection %d in this process moved", i);
		ASSERT_SYS(close(i % 2 ? a : b));
		ts_expect_eof(i % 2 ? b : a, ts_ms(3000));
		ASSERT_SYS(close(i % 2 ? b : a));
	}
	test_log("%d short connections in this process in %.3f s", SHORT_CONNS, test_now() - t0);
	ASSERT_EQ(test_count_fds(), fds);
	ASSERT_EQ(test_count_maps("/memfd:shunt"), maps);
}

/* --- Moves that pay ---------------------------------------------------------------- */

/* A pair of this process: k round trips of a byte, then both close.  1 if
 * both ends were in shared memory before the close. */
static int pair_of_round_trips(int k)
{
	int a, b, moved;
	char c = 'x';

	ts_pair(&a, &b);
	for (int i = 0; i < k; i++) {
		ts_write_all(a, &c, 1, ts_ms(3000));
		ts_read_exact(b, &c, 1, ts_ms(3000));
		ts_write_all(b, &c, 1, ts_ms(3000));
		ts_read_exact(a, &c, 1, ts_ms(3000));
	}
	moved = ts_accel(a) && ts_accel(b);
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(3000));
	ASSERT_SYS(close(b));
	return moved;
}

/* How many of n pairs of k round trips moved; first: of the first 3. */
static int pairs_moved(int n, int k, int *first)
{
	int moved = 0;

	for (int i = 0; i < n; i++) {
		int m = pair_of_round_trips(k);
		moved += m;
		if (i == 2)
			*first = moved;
	}
	return moved;
}

/* Connections of 12 round trips (24 calls an end) start meeting at 16
 * calls and close before the move pays (0.6x TCP, 500 of them): after a
 * few the process stops moving them.  Connections of 300 then move, and
 * bring the threshold back down: short ones move again at first, and are
 * learnt again. */
static void case_moves_learn_pay(void)
{
	int first = 0, long_first = 0, again_first = 0;

	if (getenv("SHUNT_UPGRADE_CALLS")) {
		test_log("SHUNT_UPGRADE_CALLS is set: the threshold is not learnt");
		return;
	}
	int short_moved = pairs_moved(12, 12, &first);
	int late = pairs_moved(10, 12, &again_first);
	test_log("short pairs: %d of the first 3 moved, %d of 12, then %d of 10", first,
		 short_moved, late);
	ASSERT_MSG(first >= 1, "none of the first short pairs moved (%d)", first);
	ASSERT_MSG(late == 0, "%d of 10 short pairs moved after %d did", late, short_moved);
	int long_moved = pairs_moved(8, 300, &long_first);
	test_log("long pairs: %d of 8 moved", long_moved);
	ASSERT_MSG(long_moved == 8, "only %d of 8 pairs of 300 round trips moved", long_moved);
	/* Learnt again: the long pairs' counts of calls in shared memory, left
	 * in pooled sockets, made every short pair after them a move that paid
	 * (20 of 20 moved, a reviewer's case). */
	int again = pairs_moved(10, 12, &again_first);
	test_log("short pairs after them: %d of the first 3 moved, %d of 10", again_first, again);
	ASSERT_MSG(again_first >= 1, "no short pair moved after the long ones");
	ASSERT_MSG(again <= 3, "%d of 10 short pairs moved after the long ones", again);
}

/* --- Accept late ------------------------------------------------------------------ */

#define EARLY 10       /* connections closed before they are accepted */
#define BURST 200      /* writes a client makes before its accept */

struct late_srv {
	int out;   /* the port goes here */
	int delay; /* ms before the first accept */
};

/* The server: listens, waits, then accepts EARLY connections that must
 * each end cleanly with nothing in them, then one that wrote BURST bytes
 * one by one before it was accepted: it takes them, moves, and echoes. */
static void late_server(void *arg)
{
	const struct late_srv *l = arg;
	int port, lfd = ts_tcp_listen(&port);
	char buf[BURST];

	ts_write_all(l->out, &port, sizeof(port), ts_ms(2000));
	close(l->out);
	test_sleep_ms((unsigned)l->delay);
	for (int i = 0; i < EARLY; i++) {
		int fd = ts_tcp_accept(lfd, ts_ms(5000));
		ts_expect_eof(fd, ts_ms(3000));
		ASSERT_SYS(close(fd));
	}
	int fd = ts_tcp_accept(lfd, ts_ms(5000));
	ASSERT_SYS(close(lfd));
	ts_read_exact(fd, buf, BURST, ts_ms(3000));
	for (int i = 0; i < BURST; i++)
		ASSERT_EQ(buf[i], (char)i);
	ts_make_accelerated_follow(fd);
	char big[65536];
	ssize_t n;
	while ((n = ts_read_wait(fd, big, sizeof(big), ts_ms(5000))) > 0)
		ts_write_all(fd, big, (size_t)n, ts_ms(5000));
	ASSERT_MSG(n == 0, "echo: %s", n < 0 ? test_errname(errno) : "?");
	ASSERT_SYS(close(fd));
}

/* connect() does not wait for the server's accept(), as TCP's does not;
 * connections closed before any use end cleanly at the server; a client
 * that writes a burst before the accept loses nothing, and its connection
 * still moves once both ends talk. */
static void case_accept_late(void)
{
	int pp[2], port;
	int delay = ts_ms(1000);

	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	struct late_srv l = { pp[1], delay };
	pid_t pid = test_fork(late_server, &l);
	close(pp[1]);
	ts_read_exact(pp[0], &port, sizeof(port), ts_ms(3000));
	close(pp[0]);
	double t0 = test_now();
	for (int i = 0; i < EARLY; i++) {
		double t1 = test_now();
		int fd = ts_tcp_connect(port);
		ASSERT_MSG(test_now() - t1 < delay / 2000.0, "connect took %.3f s (the server "
			   "accepts after %.3f s)", test_now() - t1, delay / 1000.0);
		ASSERT_SYS(close(fd));
	}
	int fd = ts_tcp_connect(port);
	for (int i = 0; i < BURST; i++) {
		char c = (char)i;
		ASSERT_EQ(write(fd, &c, 1), 1);
	}
	double dt = test_now() - t0;
	test_log("%d connects and %d writes in %.3f s, before the server's first accept", EARLY + 1,
		 BURST, dt);
	ASSERT_MSG(dt < delay / 1000.0, "%d connects and %d writes took %.3f s: they waited for "
		   "the accept", EARLY + 1, BURST, dt);
	ts_make_accelerated_lead(fd);
	ts_echo_check(fd, shim_seed(4), MIB, ts_ms(10000));
	ASSERT_SYS(close(fd));
	test_wait_ok(pid, ts_ms(10000) / 1000.0);
}

/* --- Leaks ------------------------------------------------------------------------ */

static void echo_peer(int fd, void *arg)
{
	char buf[65536];
	ssize_t n;

	(void)arg;
	ts_make_accelerated_follow(fd);
	while ((n = ts_read_wait(fd, buf, sizeof(buf), ts_ms(8000))) > 0)
		ts_write_all(fd, buf, (size_t)n, ts_ms(5000));
	ASSERT_MSG(n == 0, "echo peer: %s", n < 0 ? test_errname(errno) : "?");
	ASSERT_SYS(close(fd));
}

/* 40 moved connections, half with both ends here, half to another process,
 * of different lengths, closed by either end: as many fds and mappings
 * after as before. */
static void case_leaks(void)
{
	int fds = -1, maps = -1;

	for (int i = 0; i < 40; i++) {
		uint64_t n = 1 + (uint64_t)i * 7919;
		if (i % 2) {
			struct shim_peer p;
			ts_peer_start(&p, echo_peer, NULL);
			ts_make_accelerated_lead(p.fd);
			ts_echo_check(p.fd, shim_seed(5), n, ts_ms(5000));
			ASSERT_SYS(close(p.fd));
			ts_peer_wait(&p, ts_ms(5000));
		} else {
			int a, b;
			ts_pair(&a, &b);
			ts_make_accelerated(a, b);
			ts_send_stream(a, shim_seed(6), 0, n, ts_ms(3000));
			ts_recv_stream(b, shim_seed(6), 0, n, ts_ms(3000));
			ASSERT_SYS(close(i % 4 ? a : b));
			ts_expect_eof(i % 4 ? b : a, ts_ms(2000));
			ASSERT_SYS(close(i % 4 ? b : a));
		}
		if (i == 1) {
			fds = test_count_fds();
			maps = test_count_maps("/memfd:shunt");
			test_log("after the first two: %d fds, %d shunt mappings", fds, maps);
		}
	}
	double end = test_now() + 1;
	while ((test_count_fds() != fds || test_count_maps("/memfd:shunt") != maps) &&
	       test_now() < end)
		test_sleep_ms(10);
	ASSERT_EQ(test_count_fds(), fds);
	ASSERT_EQ(test_count_maps("/memfd:shunt"), maps);
}

/* --- connect(AF_UNSPEC) ----------------------------------------------------------- */

static void case_connect_unspec(void)
{
	int a, b, port;
	unsigned char buf[64];
	uint64_t seed = shim_seed(6);

	ts_moved_pair(&a, &b);
	int a2 = dup(a);
	ASSERT_SYS(a2);
	ASSERT_SYS(connect(a, &(struct sockaddr){ .sa_family = AF_UNSPEC }, sizeof(struct sockaddr)));
	errno = 0;
	ASSERT_EQ(ts_read_wait(b, buf, sizeof(buf), ts_ms(2000)), -1);
	ASSERT_MSG(errno == ECONNRESET, "the old peer read %s, want ECONNRESET", test_errname(errno));
	ASSERT_SYS(close(b));

	/* The same socket connects again: a new connection, every byte its own. */
	int l = ts_tcp_listen(&port);
	struct sockaddr_storage ss;
	socklen_t len = loopback(AF_INET, port, &ss);
	ASSERT_SYS(connect(a, (struct sockaddr *)&ss, len));
	int c = ts_tcp_accept(l, ts_ms(2000));
	struct linger lg = { -1, -1 };
	socklen_t lgl = sizeof(lg);
	ASSERT_SYS(getsockopt(a, SOL_SOCKET, SO_LINGER, &lg, &lgl));
	ASSERT_MSG(lg.l_onoff == 0, "SO_LINGER is {%d, %d} after the reconnect, want off",
		   lg.l_onoff, lg.l_linger);
	ts_send_stream(a2, seed, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(c, seed, 0, 100 * KIB, ts_ms(2000));
	ts_make_accelerated(a, c);
	ts_send_stream(c, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	ts_recv_stream(a, seed ^ 1, 0, 100 * KIB, ts_ms(2000));
	/* Its close is a FIN, not the reset of the first one's. */
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(a2));
	ts_expect_eof(c, ts_ms(2000));
	ASSERT_SYS(close(c));
	ASSERT_SYS(close(l));
}

static const struct shim_case g_cases[] = {
	{ "connect_nonblock", case_connect_nonblock },
	{ "connect_refused", case_connect_refused },
	{ "sockinfo", case_sockinfo },
	{ "short_connections", case_short_connections },
	{ "moves_learn_pay", case_moves_learn_pay },
	{ "accept_late", case_accept_late },
	{ "leaks", case_leaks },
	{ "connect_unspec", case_connect_unspec },
};

int main(void)
{
	return ts_main("t_shim_connect", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
}
