/*
 * t_shim_epoll.c - waiting on connections that moved to shared memory:
 * epoll with a poller already blocked when fds are added, nested epoll sets
 * (and poll() on an epoll fd, as libuv does), a multi-process multi-thread
 * reactor under load, the epoll semantics one by one (LT, ET, ONESHOT,
 * RDHUP, HUP/ERR, dup'd fds, DEL/ADD, a closed fd whose dup keeps the
 * registration, a socket added before its connect()), and
 * poll/ppoll/select/pselect.
 *
 * Every expected value is what Linux answers on TCP: SHUNT_DISABLE=1 runs
 * the same checks on kernel TCP, where every case passes.
 * SHUNT_TEST_ONLY=name,name runs some cases.
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include "shimlib.h"
#include "testlib.h"


#define KIB 1024

static int ep_wait(int ep, struct epoll_event *ev, int max, int ms)
{
	int n;

	do
		n = epoll_wait(ep, ev, max, ms);
	while (n < 0 && errno == EINTR);
	ASSERT_SYS(n);
	return n;
}

static void ep_add(int ep, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
}

/* Exactly one event within ms: its tag must be `tag`; returns its events. */
#define EP_ONE(ep, ms, tag) ep_one_at(__FILE__, __LINE__, ep, ms, tag)
static uint32_t ep_one_at(const char *file, int line, int ep, int ms, uint64_t tag)
{
	struct epoll_event ev[4];
	int n = ep_wait(ep, ev, 4, ms);

	if (n != 1)
		test_fail_at(file, line, "epoll_wait gave %d events, want 1", n);
	if (ev[0].data.u64 != tag)
		test_fail_at(file, line, "epoll_wait gave data 0x%jx, want 0x%jx",
			     (uintmax_t)ev[0].data.u64, (uintmax_t)tag);
	return ev[0].events;
}

#define EP_NONE(ep, ms) ep_none_at(__FILE__, __LINE__, ep, ms)
static void ep_none_at(const char *file, int line, int ep, int ms)
{
	struct epoll_event ev[4];
	int n = ep_wait(ep, ev, 4, ms);

	if (n != 0)
		test_fail_at(file, line, "epoll_wait gave %d events (data 0x%jx, events 0x%x), want none",
			     n, (uintmax_t)ev[0].data.u64, ev[0].events);
}

/* Wait until FIONREAD-free readability: poll says POLLIN within ms. */
static void wait_readable(int fd, int ms)
{
	if (!(ts_wait_fd(fd, POLLIN, ms) & POLLIN))
		TEST_FAIL_MSG("fd %d not readable within %d ms", fd, ms);
}

/* --- epoll_blocked_poller ------------------------------------------------ */

enum { R_MOVED, R_MOVING, R_CONNECTING, R_STOP };

struct reg {
	int kind, fd, peer;
	uint64_t seed, want;
	_Atomic uint64_t got;
	_Atomic uint32_t seen;
};

#define NREG 6
static struct reg *g_reg[NREG];

static struct reg *reg_find(void *p)
{
	for (int i = 0; i < NREG; i++)
		if (g_reg[i] == p)
			return g_reg[i];
	return NULL;
}

struct poller {
	int ep;
	_Atomic int events;
};

static void *poller_main(void *arg)
{
	struct poller *p = arg;
	unsigned char buf[16384];

	for (;;) {
		struct epoll_event ev[8];
		int n = ep_wait(p->ep, ev, 8, -1);
		for (int i = 0; i < n; i++) {
			struct reg *r = reg_find(ev[i].data.ptr);
			if (!r)
				TEST_FAIL_MSG("epoll_wait gave data %p (events 0x%x): not a pointer "
					      "the program registered", ev[i].data.ptr, ev[i].events);
			atomic_fetch_add(&p->events, 1);
			atomic_fetch_or(&r->seen, ev[i].events);
			if (r->kind == R_STOP)
				return NULL;
			if (r->kind == R_CONNECTING || !(ev[i].events & EPOLLIN))
				continue;
			for (;;) { /* edge-triggered: read until EAGAIN */
				ssize_t k = read(r->fd, buf, sizeof(buf));
				if (k < 0 && errno == EAGAIN)
					break;
				ASSERT_SYS(k);
				ASSERT_MSG(k > 0, "fd %d: end of stream", r->fd);
				uint64_t got = atomic_load(&r->got);
				size_t bad = test_stream_check(r->seed, got, buf, (size_t)k);
				ASSERT_MSG(bad == (size_t)-1, "fd %d: byte %ju wrong", r->fd,
					   (uintmax_t)(got + bad));
				atomic_store(&r->got, got + (uint64_t)k);
			}
		}
	}
}

struct moving_writer {
	struct reg **regs;
	int n;
};

/* The peers write: 64 KiB at once to each moved one, 40 small writes to
 * each moving one (which moves while in the set). */
static void *writer_main(void *arg)
{
	struct moving_writer *w = arg;
	unsigned char buf[1000];

	for (int i = 0; i < w->n; i++)
		if (w->regs[i]->kind == R_MOVED)
			ts_send_stream(w->regs[i]->peer, w->regs[i]->seed, 0, w->regs[i]->want,
					 ts_ms(3000));
	for (int k = 0; k < 40; k++) {
		for (int i = 0; i < w->n; i++) {
			struct reg *r = w->regs[i];
			if (r->kind != R_MOVING)
				continue;
			test_stream_fill(r->seed, (uint64_t)k * sizeof(buf), buf, sizeof(buf));
			ts_write_all(r->peer, buf, sizeof(buf), ts_ms(3000));
		}
		test_sleep_ms(2);
	}
	return NULL;
}

/* Wait until the poller has every byte of the first n registrations (and
 * EPOLLOUT of the connecting one if asked). */
static void poller_expect(int n, int connecting)
{
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(3000) * 1000000u;

	for (;;) {
		int done = !connecting || (atomic_load(&g_reg[4]->seen) & EPOLLOUT);
		for (int i = 0; i < n; i++)
			done &= atomic_load(&g_reg[i]->got) == g_reg[i]->want;
		if (done)
			return;
		if (test_now_ns() > end) {
			for (int i = 0; i < 5; i++)
				test_log("registration %d (kind %d): events 0x%x seen, %ju of %ju bytes",
					 i, g_reg[i]->kind, atomic_load(&g_reg[i]->seen),
					 (uintmax_t)atomic_load(&g_reg[i]->got),
					 (uintmax_t)g_reg[i]->want);
			TEST_FAIL_MSG("the blocked poller did not see it all within %d ms",
				      ts_ms(3000));
		}
		test_sleep_ms(5);
	}
}

static void case_epoll_blocked_poller(void)
{
	int ep = epoll_create1(EPOLL_CLOEXEC), stop[2], port;
	pthread_t pt, wt;
	struct poller p = { ep, 0 };

	ASSERT_SYS(ep);
	ASSERT_SYS(pipe2(stop, O_CLOEXEC | O_NONBLOCK));
	for (int i = 0; i < NREG; i++) {
		g_reg[i] = calloc(1, sizeof(struct reg));
		ASSERT_NOT_NULL(g_reg[i]);
		g_reg[i]->seed = shim_seed((uint64_t)i + 100);
	}
	/* 0, 1 moved; 2, 3 moving (a few round trips only); 4 connecting. */
	for (int i = 0; i < 4; i++) {
		struct reg *r = g_reg[i];
		r->kind = i < 2 ? R_MOVED : R_MOVING;
		r->want = i < 2 ? 64 * KIB : 40 * 1000;
		ts_pair(&r->fd, &r->peer);
		if (i < 2) {
			ts_make_accelerated(r->fd, r->peer);
		} else {
			char c = 'x';
			ts_write_all(r->fd, &c, 1, 1000);
			ts_read_exact(r->peer, &c, 1, 1000);
		}
		ts_set_nonblock(r->fd, 1);
	}
	int lfd = ts_tcp_listen(&port);
	g_reg[4]->kind = R_CONNECTING;
	g_reg[5]->kind = R_STOP;
	g_reg[5]->fd = stop[0];
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = g_reg[5] };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, stop[0], &ev));

	ASSERT_EQ(pthread_create(&pt, NULL, poller_main, &p), 0);
	test_sleep_ms(50); /* the poller is in epoll_wait(-1) now */
	/* First the moved fds alone: the poller's first wake-up is theirs. */
	for (int i = 0; i < 2; i++) {
		ev = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.ptr = g_reg[i] };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, g_reg[i]->fd, &ev));
	}
	struct moving_writer w = { g_reg, 2 };
	ASSERT_EQ(pthread_create(&wt, NULL, writer_main, &w), 0);
	ASSERT_EQ(pthread_join(wt, NULL), 0);
	poller_expect(2, 0);
	/* Then the moving ones and a connecting socket. */
	for (int i = 2; i < 4; i++) {
		ev = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.ptr = g_reg[i] };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, g_reg[i]->fd, &ev));
	}
	int cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ASSERT_SYS(cfd);
	g_reg[4]->fd = cfd;
	ev = (struct epoll_event){ .events = EPOLLOUT | EPOLLET, .data.ptr = g_reg[4] };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int rc = connect(cfd, (struct sockaddr *)&a, sizeof(a));
	ASSERT_MSG(rc == 0 || errno == EINPROGRESS, "connect: %s", test_errname(errno));
	test_log("non-blocking connect: %s", rc == 0 ? "done at once" : "EINPROGRESS");
	int afd = ts_tcp_accept(lfd, ts_ms(2000));
	w = (struct moving_writer){ g_reg + 2, 2 };
	ASSERT_EQ(pthread_create(&wt, NULL, writer_main, &w), 0);
	ASSERT_EQ(pthread_join(wt, NULL), 0);
	poller_expect(4, 1);
	ts_token_send(stop[1], 's');
	ASSERT_EQ(pthread_join(pt, NULL), 0);
	for (int i = 0; i < 4; i++) {
		ASSERT(atomic_load(&g_reg[i]->seen) & EPOLLIN);
		test_log("registration %d: %s", i,
			 ts_accel(g_reg[i]->fd) ? "on shared memory" : "on TCP");
		if (i < 2)
			ts_expect_accel(g_reg[i]->fd, "a moved connection");
	}
	test_log("%d events", atomic_load(&p.events));
	for (int i = 0; i < 4; i++) {
		close(g_reg[i]->fd);
		close(g_reg[i]->peer);
	}
	for (int i = 0; i < NREG; i++)
		free(g_reg[i]);
	close(cfd);
	close(afd);
	close(lfd);
	close(stop[0]);
	close(stop[1]);
	close(ep);
}

/* --- epoll_nested ---------------------------------------------------------- */

struct later {
	int fd, ms;
	uint64_t seed, off, n;
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	test_sleep_ms((unsigned)l->ms);
	ts_send_stream(l->fd, l->seed, l->off, l->n, ts_ms(2000));
	return NULL;
}

static void write_later(pthread_t *t, struct later *l)
{
	ASSERT_EQ(pthread_create(t, NULL, later_main, l), 0);
}

static void case_epoll_nested(void)
{
	int a1, b1, a2, b2;
	uint64_t seed = shim_seed(200), off1 = 0, off2 = 0;
	pthread_t t;

	ts_moved_pair(&a1, &b1);
	ts_moved_pair(&a2, &b2);
	int inner = epoll_create1(EPOLL_CLOEXEC), outer = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(inner);
	ASSERT_SYS(outer);
	ep_add(inner, a1, EPOLLIN, 1);
	ep_add(inner, a2, EPOLLIN, 2);
	ep_add(outer, inner, EPOLLIN, 99);
	EP_NONE(outer, 0);
	ASSERT_EQ(ts_wait_fd(inner, POLLIN, 0), 0);

	test_log("the outer set waits; data arrives on a moved fd of the inner set");
	struct later l1 = { b1, 100, seed, off1, 100 };
	write_later(&t, &l1);
	double t0 = test_now();
	ASSERT_EQ(EP_ONE(outer, ts_ms(3000), 99), EPOLLIN);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	test_log("woke after %.3f s", test_now() - t0);
	ASSERT_EQ(EP_ONE(inner, 0, 1), EPOLLIN);
	ts_recv_stream(a1, seed, off1, 100, 1000);
	off1 += 100;
	EP_NONE(outer, 0);
	EP_NONE(inner, 0);

	test_log("poll() on the inner epoll fd (as libuv's backend fd)");
	struct later l2 = { b2, 100, seed ^ 1, off2, 100 };
	write_later(&t, &l2);
	short re = ts_wait_fd(inner, POLLIN, ts_ms(3000));
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(re, POLLIN);
	ASSERT_EQ(EP_ONE(inner, 0, 2), EPOLLIN);
	ts_recv_stream(a2, seed ^ 1, off2, 100, 1000);
	off2 += 100;
	ASSERT_EQ(ts_wait_fd(inner, POLLIN, 0), 0);

	test_log("data there before the waits");
	ts_send_stream(b1, seed, off1, 100, 1000);
	wait_readable(a1, 2000);
	ASSERT_EQ(EP_ONE(outer, ts_ms(1000), 99), EPOLLIN);
	ASSERT_EQ(ts_wait_fd(inner, POLLIN, ts_ms(1000)), POLLIN);
	ASSERT_EQ(EP_ONE(inner, 0, 1), EPOLLIN);
	ts_recv_stream(a1, seed, off1, 100, 1000);
	EP_NONE(outer, 0);
	ASSERT_EQ(ts_wait_fd(inner, POLLIN, 0), 0);

	test_log("a doubly nested set, blocked");
	int top = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(top);
	ep_add(top, outer, EPOLLIN, 7);
	struct later l3 = { b2, 100, seed ^ 1, off2, 100 };
	write_later(&t, &l3);
	ASSERT_EQ(EP_ONE(top, ts_ms(3000), 7), EPOLLIN);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(EP_ONE(outer, 0, 99), EPOLLIN);
	ASSERT_EQ(EP_ONE(inner, 0, 2), EPOLLIN);
	ts_recv_stream(a2, seed ^ 1, off2, 100, 1000);
	close(top);
	close(outer);
	close(inner);
	close(a1);
	close(b1);
	close(a2);
	close(b2);
}

/* --- epoll semantics ---------------------------------------------------- */

/* EPOLLRDNORM and EPOLLWRNORM name EPOLLIN and EPOLLOUT: with data waiting
 * and room to send, each mask gets the bits it asked of those four, as
 * over TCP, before the move and after it.  A moved socket asked RDNORM
 * alone gave no event, and IN|RDNORM gave IN (a helper's attack, 12-04). */
static void epoll_rdnorm_on(int a, int b, const char *when)
{
	static const uint32_t masks[] = {
		EPOLLRDNORM, EPOLLWRNORM, EPOLLIN | EPOLLRDNORM, EPOLLOUT | EPOLLWRNORM,
		EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM | EPOLLRDHUP,
		EPOLLRDNORM | EPOLLET,
	};
	const uint32_t all = EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM;

	ts_write_all(b, "0123456789", 10, ts_ms(2000));
	ts_wait_arrived(a, 10, ts_ms(2000));
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		int ep = epoll_create1(EPOLL_CLOEXEC);
		ep_add(ep, a, masks[i], 7);
		uint32_t got = EP_ONE(ep, ts_ms(1000), 7);
		ASSERT_MSG(got == (masks[i] & all), "%s: asked %#x, got %#x, want %#x", when,
			   masks[i], got, masks[i] & all);
		ASSERT_SYS(close(ep));
	}
	char buf[10];
	ts_read_exact(a, buf, 10, ts_ms(2000));
}

static void case_epoll_rdnorm(void)
{
	ts_tcp_then_moved(epoll_rdnorm_on);
}

/* EPOLLEXCLUSIVE's rules hold for a moved socket as for TCP's: a MOD of an
 * exclusive registration, or to one, and an exclusive ADD with other bits
 * than input, output, ET and wakeup, are EINVAL.  A moved socket's MOD
 * succeeded (a helper's test, 12-04). */
static void ctl_is(int ep, int op, int fd, uint32_t events, int want, const char *what,
		   const char *when)
{
	struct epoll_event ev = { .events = events, .data.u64 = 1 };
	int rc = epoll_ctl(ep, op, fd, &ev);

	ASSERT_MSG(want ? rc == -1 && errno == want : rc == 0, "%s %s: %d (%s), want %s", what,
		   when, rc, rc < 0 ? test_errname(errno) : "ok", want ? test_errname(want) : "0");
}

static void epoll_exclusive_on(int a, int b, const char *when)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	const uint32_t x = EPOLLIN | EPOLLEXCLUSIVE;

	(void)b;
	ctl_is(ep, EPOLL_CTL_ADD, a, x | EPOLLRDHUP, EINVAL, "ADD IN|EXCLUSIVE|RDHUP", when);
	ctl_is(ep, EPOLL_CTL_ADD, a, x | EPOLLONESHOT, EINVAL, "ADD IN|EXCLUSIVE|ONESHOT", when);
	ctl_is(ep, EPOLL_CTL_ADD, a, x, 0, "ADD IN|EXCLUSIVE", when);
	ctl_is(ep, EPOLL_CTL_MOD, a, EPOLLIN, EINVAL, "MOD of an exclusive one", when);
	ctl_is(ep, EPOLL_CTL_MOD, a, x, EINVAL, "MOD of an exclusive one to IN|EXCLUSIVE", when);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	ctl_is(ep, EPOLL_CTL_ADD, a, EPOLLIN, 0, "ADD IN", when);
	ctl_is(ep, EPOLL_CTL_MOD, a, x, EINVAL, "MOD to IN|EXCLUSIVE", when);
	ctl_is(ep, EPOLL_CTL_MOD, a, EPOLLIN | EPOLLOUT, 0, "MOD to IN|OUT", when);
	ASSERT_SYS(close(ep));
}

static void case_epoll_exclusive_rules(void)
{
	ts_tcp_then_moved(epoll_exclusive_on);
}

static void case_epoll_lt(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(300);

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 1);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 0, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLIN); /* level: again */
	ts_recv_stream(a, seed, 0, 50, 1000);
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLIN);
	ts_recv_stream(a, seed, 50, 50, 1000);
	EP_NONE(ep, 0);
	/* EPOLLOUT: level-triggered, always there while there is room. */
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLOUT);
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLOUT);
	close(ep);
	close(a);
	close(b);
}

static void case_epoll_et(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(301);

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN | EPOLLET, 1);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 0, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	EP_NONE(ep, 50); /* unread, but no new arrival */
	ts_send_stream(b, seed, 100, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	EP_NONE(ep, 50);
	ts_recv_stream(a, seed, 0, 150, 1000);
	EP_NONE(ep, 0); /* reading is no arrival */
	ts_send_stream(b, seed, 200, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	EP_NONE(ep, 0);
	ts_recv_stream(a, seed, 150, 150, 1000);
	/* EPOLLOUT|EPOLLET: once when added, not again without a change. */
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLET, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLOUT);
	EP_NONE(ep, 0);
	close(ep);
	close(a);
	close(b);
}

/* A socket put in an epoll set before its connect() (nginx does so with
 * every upstream: socket, EPOLL_CTL_ADD with EPOLLET, connect): the set
 * must know it when it moves, and DEL and MOD must find it.  The library
 * knew it only from connect() on: DEL and MOD failed with ENOENT (postfix's
 * smtp-source: "fatal: epoll_ctl EPOLL_CTL_DEL"), and once it moved no
 * wait reported its data (nginx's proxy to php-fpm hung). */
static void added_before_connect(int a, const char *what)
{
	int port, lfd = ts_tcp_listen(&port), ep = epoll_create1(EPOLL_CLOEXEC);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	uint64_t seed = shim_seed(351);
	char buf[4096];

	ASSERT_SYS(a);
	ep_add(ep, a, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, 7);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = connect(a, (struct sockaddr *)&sa, sizeof(sa));
	ASSERT_MSG(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
	int b = ts_tcp_accept(lfd, ts_ms(2000));
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 7) & EPOLLOUT, EPOLLOUT);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = 7 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ts_set_nonblock(a, 0);
	ts_make_accelerated(a, b);
	ts_set_nonblock(a, 1);
	while (ep_wait(ep, &ev, 1, 0) > 0) /* what the moves left */
		while (recv(a, buf, sizeof(buf), 0) > 0)
			;
	uint64_t off = 0;
	for (int i = 0; i < 50; i++) {
		size_t n = 1 + (size_t)(i * 997) % sizeof(buf);
		ts_send_stream(b, seed, off, n, ts_ms(2000));
		ASSERT_MSG(ep_wait(ep, &ev, 1, ts_ms(2000)) == 1,
			   "round %d: no event for %zu bytes waiting", i, n);
		ASSERT_UEQ(ev.data.u64, 7);
		ts_recv_stream(a, seed, off, n, ts_ms(2000));
		off += n;
	}
	ts_expect_accel(a, what);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	close(ep);
	close(a);
	close(b);
	close(lfd);
	test_log("%s: 50 arrivals after the move each woke the set; MOD, DEL and ADD again "
		 "found it", what);
}

static void case_epoll_added_before_connect(void)
{
	added_before_connect(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
			     "the client added before its connect");
}

/* The library notes a listener it met in an epoll set (nginx's workers
 * add theirs and take it out again as they take turns to accept): its
 * number closed and given to a new socket where no wrapper sees either,
 * the socket added before its connect is still the set's as above. */
static void case_epoll_listener_number_reused(void)
{
	int port, l = ts_tcp_listen(&port), ep = epoll_create1(EPOLL_CLOEXEC);

	for (int i = 0; i < 3; i++) {
		ep_add(ep, l, EPOLLIN, 1);
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, l, NULL));
	}
	close(ep);
	ASSERT_SYS(ts_own_syscall(SYS_close, l, 0, 0));
	int a = (int)ts_own_syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ASSERT_EQ(a, l);
	if (!ts_disabled() && shunt__shim_arena_used) {
		int before = shunt__shim_arena_used(), other = epoll_create1(EPOLL_CLOEXEC);
		ep_add(other, a, EPOLLIN, 2);
		ASSERT_MSG(shunt__shim_arena_used() == before + 1,
			   "the socket at the listener's number was not tracked at its epoll_ctl");
		ASSERT_SYS(epoll_ctl(other, EPOLL_CTL_DEL, a, NULL));
		close(other);
	}
	added_before_connect(a, "a socket at a listener's number, added before its connect");
}

static void move_and_drain(int ep, int a, int b)
{
	struct epoll_event ev;
	char buf[4096];

	ts_make_accelerated(a, b);
	ts_set_nonblock(a, 1);
	while (ep_wait(ep, &ev, 1, 0) > 0) /* what the moves left */
		while (recv(a, buf, sizeof(buf), 0) > 0)
			;
	ts_set_nonblock(a, 0);
}

/* connect(AF_UNSPEC) and a new connect() on a socket in an epoll set, and
 * dup'd: the set reports the new connection, through the same
 * registration, and the dup reads its bytes, as over TCP.  The library
 * tracked the new connection afresh: once it moved no wait reported its
 * data (a helper's `unspec`: hung 3 runs of 3), MOD and DEL failed with
 * ENOENT, and the dup read the raw stream. */
static void case_epoll_unspec_reconnect(void)
{
	int port, lfd = ts_tcp_listen(&port), ep = epoll_create1(EPOLL_CLOEXEC);
	int a = ts_tcp_connect(port), b = ts_tcp_accept(lfd, ts_ms(2000)), d = dup(a);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct sockaddr un = { .sa_family = AF_UNSPEC };
	uint64_t seed = shim_seed(371);
	char c;

	ASSERT_SYS(d);
	ep_add(ep, a, EPOLLIN | EPOLLRDHUP, 11);
	move_and_drain(ep, a, b);
	ASSERT_SYS(connect(a, &un, sizeof(un)));
	errno = 0;
	ASSERT_EQ(ts_read_wait(b, &c, 1, ts_ms(2000)), -1);
	ASSERT_MSG(errno == ECONNRESET, "the old peer read %s", strerror(errno));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_SYS(connect(a, (struct sockaddr *)&sa, sizeof(sa)));
	int b2 = ts_tcp_accept(lfd, ts_ms(2000));
	move_and_drain(ep, a, b2);
	struct epoll_event ev;
	for (int i = 0; i < 20; i++) {
		ts_send_stream(b2, seed, (uint64_t)i * 100, 100, ts_ms(2000));
		ASSERT_MSG(ep_wait(ep, &ev, 1, ts_ms(2000)) == 1, "round %d: no event for data", i);
		ASSERT_UEQ(ev.data.u64, 11);
		ts_recv_stream(i % 2 ? a : d, seed, (uint64_t)i * 100, 100, ts_ms(2000));
	}
	ts_expect_accel(a, "the reconnected socket");
	ev.events = EPOLLIN;
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	close(ep);
	close(a);
	close(d);
	close(b);
	close(b2);
	close(lfd);
	test_log("reconnected after connect(AF_UNSPEC): 20 arrivals each woke the set, read "
		 "through the socket and its dup; MOD and DEL found it");
}

/* connect(AF_UNSPEC) on a socket with more than 8 dups, then a new
 * connection that moves: every dup reads its bytes, as over TCP.  The
 * library kept 8 of them: the 9th and on read the raw stream and got no
 * byte (a helper's 12 dups). */
#define UNSPEC_DUPS 12

static void case_epoll_unspec_many_dups(void)
{
	int port, lfd = ts_tcp_listen(&port), d[UNSPEC_DUPS];
	int a = ts_tcp_connect(port), b = ts_tcp_accept(lfd, ts_ms(2000));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct sockaddr un = { .sa_family = AF_UNSPEC };
	uint64_t seed = shim_seed(372);

	for (int i = 0; i < UNSPEC_DUPS; i++)
		ASSERT_SYS(d[i] = dup(a));
	ts_make_accelerated(a, b);
	ASSERT_SYS(connect(a, &un, sizeof(un)));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_SYS(connect(a, (struct sockaddr *)&sa, sizeof(sa)));
	int b2 = ts_tcp_accept(lfd, ts_ms(2000));
	ts_make_accelerated(a, b2);
	for (int i = 0; i < UNSPEC_DUPS; i++) {
		ts_send_stream(b2, seed, (uint64_t)i * 100, 100, ts_ms(2000));
		ts_recv_stream(d[i], seed, (uint64_t)i * 100, 100, ts_ms(2000));
		ASSERT_SYS(close(d[i]));
	}
	close(a), close(b), close(b2), close(lfd);
}

/* The peer's message wakes us in epoll_wait, then the peer is killed: as
 * over TCP, a send or two go, then EPIPE.  The event counted as the send
 * path's look at the peer for 2 ms: 63 sends went into the ring of the
 * dead process (TCP: 1). */
static void killed_peer(int fd, void *arg)
{
	char c;

	(void)arg;
	ts_make_accelerated_follow(fd);
	ASSERT_EQ(read(fd, &c, 1), 1);
	test_sleep_ms(10); /* our own sends' look at the peer is old then */
	ASSERT_EQ(write(fd, "m", 1), 1);
	pause();
}

static void case_epoll_peer_killed_on_wake(void)
{
	struct shim_peer p;
	int ep = epoll_create1(EPOLL_CLOEXEC), st, ok = 0;
	char c;

	ts_peer_start(&p, killed_peer, NULL);
	ts_make_accelerated_lead(p.fd);
	ep_add(ep, p.fd, EPOLLIN, 1);
	ASSERT_EQ(write(p.fd, "g", 1), 1);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	ASSERT_SYS(kill(p.pid, SIGKILL));
	ASSERT_EQ(waitpid(p.pid, &st, 0), p.pid);
	ASSERT_EQ(read(p.fd, &c, 1), 1);
	while (ok < 200 && send(p.fd, "r", 1, MSG_NOSIGNAL) == 1)
		ok++;
	ASSERT_MSG(errno == EPIPE || errno == ECONNRESET, "send: %s", strerror(errno));
	test_log("%d sends to the killed peer went, then %s", ok, strerror(errno));
	ASSERT_MSG(ok <= 2, "%d sends went to a dead peer (TCP: 1)", ok);
	close(ep);
	close(p.fd);
}

/* EPOLLEXCLUSIVE on a socket that moves: the kernel takes no MOD of such a
 * registration, so the set's entry stayed the program's and no wait saw
 * data in the ring (a helper's attack: epoll_wait hung, 3 runs of 3). */
static void case_epoll_exclusive(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(361);

	ts_pair(&a, &b);
	ep_add(ep, a, EPOLLIN | EPOLLEXCLUSIVE, 9);
	ts_make_accelerated(a, b);
	struct epoll_event ev;
	while (ep_wait(ep, &ev, 1, 0) > 0) /* what the moves left */
		ts_set_nonblock(a, 1), (void)read(a, &ev, 1), ts_set_nonblock(a, 0);
	for (int i = 0; i < 20; i++) {
		ts_send_stream(b, seed, (uint64_t)i * 100, 100, ts_ms(2000));
		ASSERT_MSG(ep_wait(ep, &ev, 1, ts_ms(2000)) == 1, "round %d: no event for data", i);
		ASSERT_UEQ(ev.data.u64, 9);
		ts_recv_stream(a, seed, (uint64_t)i * 100, 100, ts_ms(2000));
	}
	ts_expect_accel(a, "the exclusive registration's socket");
	close(ep);
	close(a);
	close(b);
}

static void case_epoll_oneshot(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(302);

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN | EPOLLONESHOT, 1);
	ts_send_stream(b, seed, 0, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 100, 100, 1000);
	EP_NONE(ep, 50); /* disarmed */
	struct epoll_event ev = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 2 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_EQ(EP_ONE(ep, ts_ms(1000), 2), EPOLLIN); /* re-armed, data there */
	EP_NONE(ep, 0);
	ts_recv_stream(a, seed, 0, 200, 1000);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 200, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 2), EPOLLIN);
	ts_recv_stream(a, seed, 200, 100, 1000);
	close(ep);
	close(a);
	close(b);
}

static void case_epoll_rdhup(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(303);

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN | EPOLLRDHUP, 1);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 0, 100, 1000);
	ASSERT_SYS(shutdown(b, SHUT_WR));
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	uint32_t e;
	do /* the data and the FIN may be seen in two steps */
		e = EP_ONE(ep, ts_ms(2000), 1);
	while (e == EPOLLIN && test_now_ns() < end && (test_sleep_ms(1), 1));
	ASSERT_EQ(e, EPOLLIN | EPOLLRDHUP);
	ts_recv_stream(a, seed, 0, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLIN | EPOLLRDHUP);
	ts_expect_eof(a, 1000);
	/* Our half is still open: the peer reads what we send. */
	ts_send_stream(a, seed, 100, 100, 1000);
	ts_recv_stream(b, seed, 100, 100, 1000);
	close(ep);
	close(a);
	close(b);
}

static void case_epoll_hup(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	struct linger l = { 1, 0 };
	char c;

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN | EPOLLOUT | EPOLLRDHUP, 1);
	ASSERT_EQ(EP_ONE(ep, 0, 1), EPOLLOUT);
	ASSERT_SYS(setsockopt(b, SOL_SOCKET, SO_LINGER, &l, sizeof(l)));
	ASSERT_SYS(close(b));
	uint32_t want = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	uint32_t e;
	while ((e = EP_ONE(ep, ts_ms(2000), 1)) != want && test_now_ns() < end)
		test_sleep_ms(1);
	ASSERT_UEQ(e, want);
	ASSERT_FAILS(recv(a, &c, 1, 0), ECONNRESET);
	/* The error was taken: HUP stays, ERR goes. */
	ASSERT_UEQ(EP_ONE(ep, 0, 1), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP);
	ASSERT_EQ(recv(a, &c, 1, 0), 0);
	/* EPOLLHUP and EPOLLERR come even unasked. */
	struct epoll_event ev = { .events = 0, .data.u64 = 2 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
	ASSERT_UEQ(EP_ONE(ep, 0, 2), EPOLLHUP);
	close(ep);
	close(a);
}

static void case_epoll_dup(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(305);
	struct epoll_event ev[4];

	ts_moved_pair(&a, &b);
	int d = dup(a);
	ASSERT_SYS(d);
	ep_add(ep, a, EPOLLIN, 1);
	ep_add(ep, d, EPOLLIN, 2);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 0, 100, 1000);
	wait_readable(a, ts_ms(2000));
	int n = ep_wait(ep, ev, 4, ts_ms(1000));
	ASSERT_EQ(n, 2);
	ASSERT_UEQ(ev[0].data.u64 + ev[1].data.u64, 3);
	ASSERT_EQ(ev[0].events, EPOLLIN);
	ASSERT_EQ(ev[1].events, EPOLLIN);
	ts_recv_stream(d, seed, 0, 100, 1000);
	EP_NONE(ep, 0);
	/* Each registration on its own: DEL one, the other stays. */
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	ts_send_stream(b, seed, 100, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 2), EPOLLIN);
	ts_recv_stream(a, seed, 100, 100, 1000);
	close(ep);
	close(d);
	close(a);
	close(b);
}

static void case_epoll_del_add(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(306);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 1);
	ASSERT_FAILS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev), EEXIST);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
	ASSERT_FAILS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL), ENOENT);
	ASSERT_FAILS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev), ENOENT);
	ts_send_stream(b, seed, 0, 100, 1000);
	wait_readable(a, ts_ms(2000));
	EP_NONE(ep, 50);
	ep_add(ep, a, EPOLLIN, 2);
	ASSERT_EQ(EP_ONE(ep, ts_ms(1000), 2), EPOLLIN);
	ts_recv_stream(a, seed, 0, 100, 1000);
	EP_NONE(ep, 0);
	/* Over and over, with data arriving in between. */
	for (int i = 0; i < 50; i++) {
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
		ts_send_stream(b, seed, 100 + (uint64_t)i * 10, 10, 1000);
		ep_add(ep, a, EPOLLIN | EPOLLET, 3 + (uint64_t)i);
		ASSERT_EQ(EP_ONE(ep, ts_ms(1000), 3 + (uint64_t)i), EPOLLIN);
		ts_recv_stream(a, seed, 100 + (uint64_t)i * 10, 10, 1000);
	}
	/* A closed fd is not in the set any more: ADD it anew after a dup2. */
	close(ep);
	close(a);
	close(b);
}

/* Linux: closing an fd whose file another fd still holds does not take it
 * out of an epoll set; events keep coming, with the data it was added with,
 * and EPOLL_CTL_DEL by the closed number is EBADF. */
static void case_epoll_close_dup(void)
{
	int a, b, ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(307);

	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 1);
	int d = dup(a);
	ASSERT_SYS(d);
	ASSERT_SYS(close(a));
	ts_send_stream(b, seed, 0, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	ASSERT_FAILS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL), EBADF);
	ts_recv_stream(d, seed, 0, 100, 1000);
	EP_NONE(ep, 0);
	ts_send_stream(b, seed, 100, 100, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	ts_recv_stream(d, seed, 100, 100, 1000);
	/* The number reused by another socket: the old registration stays, and
	 * the new one can be added next to it. */
	int c2, s2;
	ts_moved_pair(&c2, &s2);
	ASSERT_SYS(dup2(c2, a));
	ASSERT_SYS(close(c2));
	ep_add(ep, a, EPOLLIN, 2);
	ts_send_stream(s2, seed ^ 1, 0, 10, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 2), EPOLLIN);
	ts_recv_stream(a, seed ^ 1, 0, 10, 1000);
	ts_send_stream(b, seed, 200, 10, 1000);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 1), EPOLLIN);
	ts_recv_stream(d, seed, 200, 10, 1000);
	/* The last fd closed: gone from the set. */
	ASSERT_SYS(close(d));
	EP_NONE(ep, 50);
	close(ep);
	close(a);
	close(s2);
	close(b);
}

/* --- poll, ppoll, select, pselect ----------------------------------------- */

static void case_poll_select(void)
{
	int a, b, c, d, pp[2];
	uint64_t seed = shim_seed(400);
	fd_set rd, wr;
	struct timeval tv;
	struct timespec ts;
	sigset_t mask;
	double t0;

	ts_moved_pair(&a, &b);
	ts_moved_pair(&c, &d);
	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	sigemptyset(&mask);

	/* Nothing readable: the timeout is kept. */
	struct pollfd p[3] = { { a, POLLIN, 0 }, { pp[0], POLLIN, 0 }, { c, POLLIN, 0 } };
	t0 = test_now();
	ASSERT_EQ(poll(p, 3, 100), 0);
	ASSERT_GE(test_now() - t0, 0.09);
	ts = (struct timespec){ 0, 50000000 };
	t0 = test_now();
	ASSERT_EQ(ppoll(p, 3, &ts, &mask), 0);
	ASSERT_GE(test_now() - t0, 0.045);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	FD_SET(pp[0], &rd);
	tv = (struct timeval){ 0, 100000 };
	t0 = test_now();
	ASSERT_EQ(select(FD_SETSIZE > 1024 ? 1024 : FD_SETSIZE, &rd, NULL, NULL, &tv), 0);
	ASSERT_GE(test_now() - t0, 0.09);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	ts = (struct timespec){ 0, 50000000 };
	t0 = test_now();
	ASSERT_EQ(pselect(a + 1, &rd, NULL, NULL, &ts, &mask), 0);
	ASSERT_GE(test_now() - t0, 0.045);

	/* Data on the socket: it alone is readable; a blocked wait wakes. */
	ts_send_stream(b, seed, 0, 100, 1000);
	p[0].revents = p[1].revents = p[2].revents = 0;
	ASSERT_EQ(poll(p, 3, ts_ms(2000)), 1);
	ASSERT_EQ(p[0].revents, POLLIN);
	ASSERT_EQ(p[1].revents, 0);
	ASSERT_EQ(p[2].revents, 0);
	/* The pipe too. */
	ASSERT_EQ(write(pp[1], "p", 1), 1);
	ASSERT_EQ(poll(p, 3, 1000), 2);
	ASSERT_EQ(p[0].revents, POLLIN);
	ASSERT_EQ(p[1].revents, POLLIN);
	ts = (struct timespec){ 1, 0 };
	ASSERT_EQ(ppoll(p, 3, &ts, &mask), 2);
	/* select: readable a and pipe, writable a and c. */
	int maxfd = a > c ? a : c;
	maxfd = maxfd > pp[0] ? maxfd : pp[0];
	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_SET(a, &rd);
	FD_SET(c, &rd);
	FD_SET(pp[0], &rd);
	FD_SET(a, &wr);
	FD_SET(c, &wr);
	tv = (struct timeval){ 1, 0 };
	ASSERT_EQ(select(maxfd + 1, &rd, &wr, NULL, &tv), 4);
	ASSERT(FD_ISSET(a, &rd) && FD_ISSET(pp[0], &rd) && !FD_ISSET(c, &rd));
	ASSERT(FD_ISSET(a, &wr) && FD_ISSET(c, &wr));
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	FD_SET(c, &rd);
	ts = (struct timespec){ 1, 0 };
	ASSERT_EQ(pselect(maxfd + 1, &rd, NULL, NULL, &ts, &mask), 1);
	ASSERT(FD_ISSET(a, &rd) && !FD_ISSET(c, &rd));
	ts_recv_stream(a, seed, 0, 100, 1000);
	char x;
	ASSERT_EQ(read(pp[0], &x, 1), 1);
	ASSERT_EQ(poll(p, 3, 0), 0);

	/* A blocked select wakes for data on a moved fd. */
	pthread_t t;
	struct later l = { d, 100, seed ^ 1, 0, 10 };
	write_later(&t, &l);
	FD_ZERO(&rd);
	FD_SET(a, &rd);
	FD_SET(c, &rd);
	FD_SET(pp[0], &rd);
	tv = (struct timeval){ 3, 0 };
	ASSERT_EQ(select(maxfd + 1, &rd, NULL, NULL, &tv), 1);
	ASSERT(FD_ISSET(c, &rd));
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ts_recv_stream(c, seed ^ 1, 0, 10, 1000);

	/* POLLRDHUP when the peer shuts down its side. */
	ASSERT_SYS(shutdown(b, SHUT_WR));
	struct pollfd q = { a, POLLIN | POLLRDHUP, 0 };
	uint64_t end = test_now_ns() + 2000000000ull;
	while (poll(&q, 1, ts_ms(2000)) == 1 && q.revents == POLLIN && test_now_ns() < end)
		test_sleep_ms(1);
	ASSERT_EQ(q.revents, POLLIN | POLLRDHUP);

	/* A reset: everything at once. */
	struct linger lg = { 1, 0 };
	ASSERT_SYS(setsockopt(d, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	ASSERT_SYS(close(d));
	test_sleep_ms(50);
	q = (struct pollfd){ c, POLLIN | POLLOUT | POLLRDHUP, 0 };
	ASSERT_EQ(poll(&q, 1, ts_ms(2000)), 1);
	ASSERT_EQ(q.revents, POLLIN | POLLOUT | POLLRDHUP | POLLHUP | POLLERR);

	/* A closed fd: POLLNVAL from poll, EBADF from select. */
	ASSERT_SYS(close(c));
	struct pollfd r[2] = { { c, POLLIN, 0 }, { pp[0], POLLIN, 0 } };
	ASSERT_EQ(poll(r, 2, 100), 1);
	ASSERT_EQ(r[0].revents, POLLNVAL);
	ASSERT_EQ(r[1].revents, 0);
	FD_ZERO(&rd);
	FD_SET(c, &rd);
	tv = (struct timeval){ 0, 100000 };
	ASSERT_FAILS(select(c + 1, &rd, NULL, NULL, &tv), EBADF);
	/* A negative fd is skipped. */
	struct pollfd s = { -1, POLLIN, 0x7 };
	ASSERT_EQ(poll(&s, 1, 0), 0);
	ASSERT_EQ(s.revents, 0);
	close(pp[0]);
	close(pp[1]);
	close(a);
	close(b);
}

/* --- epoll_reactor_stress ---------------------------------------------------- */

#define SLOTS 512
#define POOL 3
#define SBUF 32768
#define TAG_LISTEN (~0ull)
#define TAG_STOP (~0ull - 1)

struct sconn {
	int fd;
	uint32_t gen;
	int used;
	_Atomic int busy; /* a pool thread has it (its ONESHOT fired) */
	/* Held by the pool thread serving it until its re-arm returned: the
	 * next thread to get it waits for that (TSan cannot see the order the
	 * kernel gives through EPOLL_CTL_MOD). */
	pthread_mutex_t mu;
	int rd_eof;
	size_t len;
	unsigned char buf[SBUF];
};

struct server {
	int ep, lfd, stopfd, stop_w;
	struct sconn *slots;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int queue[SLOTS + POOL + 8];
	unsigned qhead, qtail;
	int stopping;
	_Atomic int active;
	_Atomic uint64_t accepted, bytes, readds;
	struct test_rng rng;
};

static uint64_t slot_tag(int i, uint32_t gen)
{
	return (uint64_t)gen << 32 | (uint32_t)i;
}

static void q_push(struct server *s, int v)
{
	pthread_mutex_lock(&s->mu);
	s->queue[s->qtail++ % (sizeof(s->queue) / sizeof(int))] = v;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static int q_pop(struct server *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->qhead == s->qtail)
		pthread_cond_wait(&s->cv, &s->mu);
	int v = s->queue[s->qhead++ % (sizeof(s->queue) / sizeof(int))];
	pthread_mutex_unlock(&s->mu);
	return v;
}

static void srv_accept(struct server *s)
{
	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED))
			return;
		ASSERT_SYS(fd);
		pthread_mutex_lock(&s->mu);
		int i = 0;
		while (i < SLOTS && s->slots[i].used)
			i++;
		ASSERT_MSG(i < SLOTS, "server: no free slot");
		struct sconn *c = &s->slots[i];
		c->used = 1;
		c->fd = fd;
		c->gen++;
		c->rd_eof = 0;
		c->len = 0;
		atomic_store(&c->busy, 0);
		uint32_t gen = c->gen;
		pthread_mutex_unlock(&s->mu);
		atomic_fetch_add(&s->active, 1);
		atomic_fetch_add(&s->accepted, 1);
		ep_add(s->ep, fd, EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, slot_tag(i, gen));
	}
}

/* One turn of a connection in a pool thread. */
static void srv_serve(struct server *s, int i)
{
	struct sconn *c = &s->slots[i];

	pthread_mutex_lock(&c->mu);
	for (int turn = 0; turn < 16; turn++) {
		int progress = 0;
		if (c->len) {
			ssize_t w = send(c->fd, c->buf, c->len, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN)
				TEST_FAIL_MSG("server: send: %s", test_errname(errno));
			if (w > 0) {
				memmove(c->buf, c->buf + w, c->len - (size_t)w);
				c->len -= (size_t)w;
				atomic_fetch_add(&s->bytes, (uint64_t)w);
				progress = 1;
			}
		}
		if (!c->rd_eof && c->len < SBUF) {
			ssize_t r = read(c->fd, c->buf + c->len, SBUF - c->len);
			if (r < 0 && errno != EAGAIN)
				TEST_FAIL_MSG("server: read: %s", test_errname(errno));
			if (r == 0)
				c->rd_eof = 1;
			if (r > 0) {
				c->len += (size_t)r;
				progress = 1;
			}
		}
		if (!progress)
			break;
	}
	if (c->rd_eof && !c->len) {
		ASSERT_SYS(close(c->fd));
		pthread_mutex_lock(&s->mu);
		c->used = 0;
		c->fd = -1;
		pthread_mutex_unlock(&s->mu);
		atomic_store(&c->busy, 0);
		atomic_fetch_sub(&s->active, 1);
		pthread_mutex_unlock(&c->mu);
		return;
	}
	uint32_t ev = EPOLLONESHOT | EPOLLRDHUP | (c->len ? EPOLLOUT : 0) |
		      (!c->rd_eof && c->len < SBUF ? EPOLLIN : 0);
	struct epoll_event e = { .events = ev, .data.u64 = slot_tag(i, c->gen) };
	pthread_mutex_lock(&s->mu);
	int readd = test_rng_range(&s->rng, 0, 7) == 0;
	pthread_mutex_unlock(&s->mu);
	atomic_store(&c->busy, 0);
	if (readd) { /* take it out and put it back, as some reactors do */
		ASSERT_SYS(epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL));
		ASSERT_SYS(epoll_ctl(s->ep, EPOLL_CTL_ADD, c->fd, &e));
		atomic_fetch_add(&s->readds, 1);
	} else {
		ASSERT_SYS(epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e));
	}
	pthread_mutex_unlock(&c->mu);
}

static void *pool_main(void *arg)
{
	struct server *s = arg;

	for (;;) {
		int i = q_pop(s);
		if (i < 0)
			return NULL;
		srv_serve(s, i);
	}
}

static void server_main(void *arg)
{
	struct server *s = arg;
	pthread_t pool[POOL];

	ts_close_inherited_tcp(s->lfd);
	ASSERT_SYS(close(s->stop_w));
	int fds0 = test_count_fds();
	s->slots = calloc(SLOTS, sizeof(struct sconn));
	ASSERT_NOT_NULL(s->slots);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	for (int i = 0; i < SLOTS; i++)
		pthread_mutex_init(&s->slots[i].mu, NULL);
	test_rng_seed(&s->rng, shim_seed((uint64_t)getpid()));
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(s->ep);
	ep_add(s->ep, s->lfd, EPOLLIN, TAG_LISTEN);
	ep_add(s->ep, s->stopfd, EPOLLIN, TAG_STOP);
	for (int i = 0; i < POOL; i++)
		ASSERT_EQ(pthread_create(&pool[i], NULL, pool_main, s), 0);
	/* The reactor. */
	int stop = 0;
	while (!stop) {
		struct epoll_event ev[64];
		int n = ep_wait(s->ep, ev, 64, -1);
		for (int k = 0; k < n; k++) {
			uint64_t tag = ev[k].data.u64;
			if (tag == TAG_STOP) {
				stop = 1;
				continue;
			}
			if (tag == TAG_LISTEN) {
				srv_accept(s);
				continue;
			}
			uint32_t i = (uint32_t)tag, gen = (uint32_t)(tag >> 32);
			ASSERT_MSG(i < SLOTS, "epoll gave data 0x%jx: no such registration",
				   (uintmax_t)tag);
			pthread_mutex_lock(&s->mu);
			int ok = s->slots[i].used && s->slots[i].gen == gen;
			pthread_mutex_unlock(&s->mu);
			ASSERT_MSG(ok, "epoll gave data 0x%jx (events 0x%x) of a closed connection",
				   (uintmax_t)tag, ev[k].events);
			ASSERT_MSG(atomic_exchange(&s->slots[i].busy, 1) == 0,
				   "epoll gave data 0x%jx (events 0x%x) while its ONESHOT was "
				   "not re-armed", (uintmax_t)tag, ev[k].events);
			q_push(s, (int)i);
		}
	}
	for (int i = 0; i < POOL; i++)
		q_push(s, -1);
	for (int i = 0; i < POOL; i++)
		ASSERT_EQ(pthread_join(pool[i], NULL), 0);
	test_log("server: %ju connections, %ju bytes echoed, %ju re-adds, %d still open",
		 (uintmax_t)atomic_load(&s->accepted), (uintmax_t)atomic_load(&s->bytes),
		 (uintmax_t)atomic_load(&s->readds), atomic_load(&s->active));
	ASSERT_EQ(atomic_load(&s->active), 0);
	ASSERT_GT(atomic_load(&s->accepted), 0);
	close(s->ep);
	int after = ts_fds_settled(fds0);
	ASSERT_MSG(after == fds0, "server: %d fds before, %d after", fds0, after);
	free(s->slots);
}

struct client {
	pthread_t t;
	int port, id;
	double until;
	uint64_t conns, bytes, accel;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct test_rng rng;

	test_rng_seed(&rng, shim_seed(1000 + (uint64_t)c->id));
	while (test_now() < c->until) {
		int fd = ts_tcp_connect(c->port);
		uint64_t n = test_rng_size(&rng, 512 * KIB);
		ts_echo_check(fd, test_rng_next(&rng), n, ts_ms(10000));
		c->accel += (uint64_t)ts_accel(fd);
		ASSERT_SYS(close(fd));
		c->conns++;
		c->bytes += n;
	}
	return NULL;
}

static void case_epoll_reactor_stress(void)
{
	int port, lfd = ts_tcp_listen(&port), stop[2];
	double secs = test_sanitized() ? 4 : 5;
	struct server srv[2];
	pid_t pid[2];
	struct client cl[4];

	ts_set_nonblock(lfd, 1);
	ASSERT_SYS(pipe2(stop, O_CLOEXEC));
	for (int i = 0; i < 2; i++) {
		memset(&srv[i], 0, sizeof(srv[i]));
		srv[i].lfd = lfd;
		srv[i].stopfd = stop[0];
		srv[i].stop_w = stop[1];
		pid[i] = test_fork(server_main, &srv[i]);
	}
	close(stop[0]);
	/* The listener stays open here, as in a prefork master. */
	test_log("2 servers (a reactor and %d pool threads each), 4 clients, %.0f s", POOL, secs);
	for (int i = 0; i < 4; i++) {
		cl[i] = (struct client){ .port = port, .id = i, .until = test_now() + secs };
		ASSERT_EQ(pthread_create(&cl[i].t, NULL, client_main, &cl[i]), 0);
	}
	uint64_t conns = 0, bytes = 0, accel = 0;
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(pthread_join(cl[i].t, NULL), 0);
		conns += cl[i].conns;
		bytes += cl[i].bytes;
		accel += cl[i].accel;
	}
	test_log("clients: %ju connections, %ju bytes each way checked, %ju on shared memory",
		 (uintmax_t)conns, (uintmax_t)bytes, (uintmax_t)accel);
	close(stop[1]); /* the servers stop */
	close(lfd);
	for (int i = 0; i < 2; i++)
		test_wait_ok(pid[i], ts_ms(10000) / 1000.0);
	ASSERT_GT(conns, 0);
	ASSERT(ts_disabled() || accel > 0);
}


/* --- A reactor that writes before it reads again --------------------------
 * Java's NIO echo (and many reactors): read only into an empty buffer,
 * write it, and while a write stays partial wait for EPOLLOUT alone.  The
 * client writes with one thread and reads with another, each polling
 * first or in blocking calls (as the JVM's), all four ways by turns.  After the move
 * the server's sends are in its ring while the client's stay on TCP until
 * its writer's next call, which the kernel holds: the server reads nothing
 * more, so the client's window stays shut.  The client's reader empties
 * the server's ring, but a peer whose sends are still on the stream rings
 * no doorbell (it would be data): the server's wait for room must look
 * again on its own.  And the client's reader, if its poll began while the
 * socket was on TCP, sleeps until kicked when its writer's poll takes the
 * doorbell meant for it.  Either slept until the program's timeout: a
 * Java NIO echo server under shunt stalled in about 1 connection in 20. */

#define WF_CONNS 12
#define WF_BYTES (8u << 20)
#define WF_BUF (64 * KIB)
#define WF_READS 1
#define WF_WRITES 2

struct wf_client {
	int fd;
	uint64_t seed;
	int blocking; /* WF_READS, WF_WRITES: plain blocking calls (as the
	               * JVM's) for them, else poll first */
};

static void *wf_writer_main(void *arg)
{
	struct wf_client *w = arg;
	unsigned char *buf = malloc(50000);

	ASSERT_NOT_NULL(buf);
	for (uint64_t off = 0; (w->blocking & WF_WRITES) && off < WF_BYTES;) {
		size_t k = WF_BYTES - off < 50000 ? (size_t)(WF_BYTES - off) : 50000;
		test_stream_fill(w->seed, off, buf, k);
		for (size_t done = 0; done < k;) {
			ssize_t n = write(w->fd, buf + done, k - done);
			ASSERT_MSG(n > 0, "client: write at %ju: %s", (uintmax_t)(off + done),
				   test_errname(errno));
			done += (size_t)n;
		}
		off += k;
	}
	if (!(w->blocking & WF_WRITES))
		ts_send_stream(w->fd, w->seed, 0, WF_BYTES, ts_ms(20000));
	free(buf);
	ASSERT_SYS(shutdown(w->fd, SHUT_WR));
	return NULL;
}

static void *wf_reader_main(void *arg)
{
	struct wf_client *w = arg;
	unsigned char *buf = malloc(70000);
	uint64_t got = 0;

	ASSERT_NOT_NULL(buf);
	while (w->blocking & WF_READS) {
		ssize_t n = read(w->fd, buf, 70000);
		ASSERT_MSG(n >= 0, "client: read at %ju: %s", (uintmax_t)got, test_errname(errno));
		if (n == 0)
			break;
		size_t bad = test_stream_check(w->seed, got, buf, (size_t)n);
		ASSERT_MSG(bad == (size_t)-1, "client: byte %ju is wrong", (uintmax_t)(got + bad));
		got += (uint64_t)n;
	}
	if (w->blocking & WF_READS)
		ASSERT_MSG(got == WF_BYTES, "client: %ju of %u bytes", (uintmax_t)got, WF_BYTES);
	free(buf);
	if (!(w->blocking & WF_READS)) {
		ts_recv_stream(w->fd, w->seed, 0, WF_BYTES, ts_ms(20000));
		ts_expect_eof(w->fd, ts_ms(5000));
	}
	return NULL;
}

/* One connection served to its end: 1 if it had moved. */
static int wf_serve(int fd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	unsigned char *buf = malloc(WF_BUF);
	size_t have = 0;
	uint32_t want = EPOLLIN;
	int moved = 0;

	ASSERT_NOT_NULL(buf);
	ts_set_nonblock(fd, 1);
	ep_add(ep, fd, want, 1);
	for (;;) {
		struct epoll_event ev;
		int n = ep_wait(ep, &ev, 1, ts_ms(10000));
		ASSERT_MSG(n == 1, "server: no event in %d ms with %zu bytes to write (interest %s)",
			   ts_ms(10000), have, want == EPOLLOUT ? "EPOLLOUT" : "EPOLLIN");
		if ((ev.events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && have == 0) {
			ssize_t r = read(fd, buf, WF_BUF);
			if (r == 0)
				break;
			if (r < 0 && errno != EAGAIN)
				TEST_FAIL_MSG("server: read: %s", test_errname(errno));
			have = r > 0 ? (size_t)r : 0;
		}
		if (have > 0) {
			ssize_t w = write(fd, buf, have);
			if (w < 0 && errno != EAGAIN)
				TEST_FAIL_MSG("server: write: %s", test_errname(errno));
			if (w > 0) {
				memmove(buf, buf + w, have - (size_t)w);
				have -= (size_t)w;
			}
		}
		uint32_t now = have ? EPOLLOUT : EPOLLIN;
		if (now != want) {
			struct epoll_event mod = { .events = now, .data.u64 = 1 };
			ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &mod));
			want = now;
		}
		moved |= ts_moved(fd);
	}
	free(buf);
	close(ep);
	ASSERT_SYS(close(fd));
	return moved;
}

static void case_epoll_write_first(void)
{
	int port, lfd = ts_tcp_listen(&port), moved = 0;

	for (int i = 0; i < WF_CONNS; i++) {
		int c = ts_tcp_connect(port), s = ts_tcp_accept(lfd, ts_ms(5000));
		struct wf_client w = { c, shim_seed(1200 + (uint64_t)i), i % 4 };
		struct timeval tv = { 20, 0 };

		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		pthread_t wt, rt;

		ASSERT_EQ(pthread_create(&wt, NULL, wf_writer_main, &w), 0);
		ASSERT_EQ(pthread_create(&rt, NULL, wf_reader_main, &w), 0);
		moved += wf_serve(s);
		ASSERT_EQ(pthread_join(wt, NULL), 0);
		ASSERT_EQ(pthread_join(rt, NULL), 0);
		ASSERT_SYS(close(c));
	}
	test_log("%d connections of %u MiB echoed, %d of them moved", WF_CONNS, WF_BYTES >> 20,
		 moved);
	close(lfd);
	ASSERT(ts_disabled() || moved > 0);
}

/* --- Many fds, several sets, one lock order ----------------------------------
 * Closing, duplicating and polling moved fds while several epoll sets hold
 * them takes the library's locks (the sets' list, each set, each socket's
 * own) in every order the program's calls can make: one thread waits on
 * the sets and polls the fds, another sends, this one dups, registers,
 * unregisters, closes and polls.  TSan reports any lock-order inversion;
 * every call must return, and the pairs stay moved and whole. */

#define CHURN_PAIRS 8
#define CHURN_SETS 3
#define CHURN_ROUNDS 3000

struct churn {
	int a[CHURN_PAIRS], b[CHURN_PAIRS], sets[CHURN_SETS];
	_Atomic int stop;
};

static void *churn_waiter(void *arg)
{
	struct churn *c = arg;
	struct epoll_event ev[16];
	struct pollfd p[CHURN_PAIRS];
	char buf[256];

	while (!atomic_load(&c->stop)) {
		for (int s = 0; s < CHURN_SETS; s++)
			(void)epoll_wait(c->sets[s], ev, 16, 1);
		for (int i = 0; i < CHURN_PAIRS; i++)
			p[i] = (struct pollfd){ c->a[i], POLLIN, 0 };
		if (poll(p, CHURN_PAIRS, 1) > 0)
			for (int i = 0; i < CHURN_PAIRS; i++)
				if (p[i].revents & POLLIN)
					(void)recv(c->a[i], buf, sizeof(buf), MSG_DONTWAIT);
	}
	return NULL;
}

static void *churn_sender(void *arg)
{
	struct churn *c = arg;

	for (int r = 0; !atomic_load(&c->stop); r++) {
		(void)send(c->b[r % CHURN_PAIRS], "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r % 64 == 0)
			test_sleep_ms(1);
	}
	return NULL;
}

static void churn_round(struct churn *c, int r)
{
	int i = r % CHURN_PAIRS, s = r % CHURN_SETS;
	int d = dup(c->a[i]);

	ASSERT_SYS(d);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = d };
	/* A dup closed while registered stays in the set as the kernel keeps
	 * it (the file is still open): the same number again is EEXIST. */
	if (epoll_ctl(c->sets[s], EPOLL_CTL_ADD, d, &ev) < 0) {
		ASSERT_EQ(errno, EEXIST);
		ASSERT_SYS(epoll_ctl(c->sets[s], EPOLL_CTL_MOD, d, &ev));
	}
	if (r % 3 == 0)
		ASSERT_SYS(epoll_ctl(c->sets[s], EPOLL_CTL_DEL, d, NULL));
	ASSERT_SYS(close(d)); /* registered or not: the set forgets it */
	struct pollfd p = { c->a[i], POLLIN | POLLOUT, 0 };
	ASSERT_SYS(poll(&p, 1, 0));
}

static void case_epoll_sets_churn(void)
{
	struct churn c = { .stop = 0 };
	pthread_t w, snd;

	for (int i = 0; i < CHURN_PAIRS; i++) {
		ts_moved_pair(&c.a[i], &c.b[i]);
		ts_set_nonblock(c.a[i], 1);
	}
	for (int s = 0; s < CHURN_SETS; s++) {
		c.sets[s] = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_SYS(c.sets[s]);
		for (int i = 0; i < CHURN_PAIRS; i++)
			ep_add(c.sets[s], c.a[i], EPOLLIN, (uint64_t)i);
	}
	ASSERT_EQ(pthread_create(&w, NULL, churn_waiter, &c), 0);
	ASSERT_EQ(pthread_create(&snd, NULL, churn_sender, &c), 0);
	for (int r = 0; r < CHURN_ROUNDS; r++)
		churn_round(&c, r);
	atomic_store(&c.stop, 1);
	ASSERT_EQ(pthread_join(w, NULL), 0);
	ASSERT_EQ(pthread_join(snd, NULL), 0);
	for (int s = 0; s < CHURN_SETS; s++)
		ASSERT_SYS(close(c.sets[s]));
	/* Still moved, still whole: a last byte on every pair. */
	for (int i = 0; i < CHURN_PAIRS; i++) {
		char got = 0;
		ts_set_nonblock(c.a[i], 0);
		ASSERT_EQ(send(c.b[i], "z", 1, 0), 1);
		while (got != 'z') { /* the sender's last x's first */
			ASSERT_EQ(ts_read_wait(c.a[i], &got, 1, ts_ms(2000)), 1);
			ASSERT_MSG(got == 'x' || got == 'z', "pair %d: byte 0x%02x", i, got);
		}
		ts_expect_accel(c.a[i], "after the churn");
		ASSERT_SYS(close(c.a[i]));
		ASSERT_SYS(close(c.b[i]));
	}
	test_log("%d rounds of dup, register, close and poll over %d moved fds in %d sets",
		 CHURN_ROUNDS, CHURN_PAIRS, CHURN_SETS);
}

/* --- epoll_et_short_read ------------------------------------------------------ */

/* The writer: another process, as nginx's upstream is. */
static void et_writer(int fd, void *arg)
{
	ts_send_stream(fd, *(const uint64_t *)arg, 0, 16u << 20, ts_ms(10000));
}

/* An edge-triggered reader that takes a short read for "nothing more" (as
 * nginx reads its upstream): a read that stopped at the peer's switch
 * while the ring held the rest already left it waiting for an edge that
 * never came (nginx before php-fpm: 60 s stalls, a cut response).  A
 * socket's read takes all that is there. */
static void case_epoll_et_short_read(void)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	uint64_t seed = shim_seed(309), got = 0;
	const uint64_t total = 16u << 20;
	const size_t piece = 16 << 10;
	unsigned char *buf = malloc(piece);
	struct shim_peer p;

	ASSERT_NOT_NULL(buf);
	ts_peer_start(&p, et_writer, &seed);
	int s = p.fd;
	/* A small window: the writer's kernel holds bytes from before its
	 * switch, which arrive after its ring filled, each an edge. */
	int small = 32 << 10;
	ASSERT_SYS(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
	ts_set_nonblock(s, 1);
	ep_add(ep, s, EPOLLIN | EPOLLRDHUP | EPOLLET, 1);
	while (got < total) {
		struct epoll_event ev;
		int n = epoll_wait(ep, &ev, 1, ts_ms(5000));
		ASSERT_SYS(n);
		ASSERT_MSG(n == 1, "no event in %d ms, %ju of %ju bytes read", ts_ms(5000),
			   (uintmax_t)got, (uintmax_t)total);
		for (;;) {
			ssize_t k = recv(s, buf, piece, 0);
			if ((k < 0 && errno == EAGAIN) || (k == 0 && got == total))
				break; /* the end may follow the last full piece at once */
			ASSERT_MSG(k > 0, "recv at %ju: %zd (%s)", (uintmax_t)got, k,
				   k < 0 ? test_errname(errno) : "end");
			ASSERT_EQ(test_stream_check(seed, got, buf, (size_t)k), (size_t)-1);
			got += (uint64_t)k;
			if ((size_t)k < piece)
				break; /* short: the socket is empty */
			nanosleep(&(struct timespec){ 0, 200000 }, NULL); /* slow: the ring fills */
		}
	}
	ts_peer_wait(&p, ts_ms(5000));
	free(buf);
	close(ep);
	close(s);
}

/* --- A hang-up before the peer's switch offset -------------------------------------
 * libuv ends a stream when epoll says EPOLLHUP after a short read: over TCP
 * a hang-up means both FINs are in, after every byte.  Here the writer's
 * switch offset lies far past what the reader's small receive buffer
 * holds (much of its TCP data still in the writer's kernel), then its
 * tail goes by the ring and it shuts down, as the reader had: the ring
 * says both are shut while the stream still carries data.  uvloop's echo
 * clients lost the tail so (a helper's reproducer: 4096 bytes of 3260416
 * read, every run). */

#define HUP_CHUNK 65536
#define HUP_TAIL (200 * 1024)

static unsigned char hup_pat(uint64_t off)
{
	return (unsigned char)(off * 131 + (off >> 9));
}

/* The reader, in a child: talks a little (so that it meets the writer),
 * shuts down, then reads as libuv does. */
static void hup_reader(void *arg)
{
	static unsigned char buf[HUP_CHUNK];
	int port = *(int *)arg, small = 4096, fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint64_t got = 0;

	ASSERT_SYS(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
	ASSERT_SYS(connect(fd, (struct sockaddr *)&a, sizeof(a)));
	for (int i = 0; i < 150; i++) {
		ASSERT_EQ(write(fd, "0123456789", 10), 10);
		usleep(2000);
	}
	ASSERT_SYS(shutdown(fd, SHUT_WR));
	usleep(800000); /* the writer is done and shut down by now */
	ASSERT_SYS(fcntl(fd, F_SETFL, O_NONBLOCK));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	for (;;) {
		ASSERT_MSG(epoll_wait(ep, &ev, 1, ts_ms(5000)) == 1, "no event at %ju",
			   (uintmax_t)got);
		ssize_t r = 0;
		for (int c = 0; c < 32; c++) {
			r = read(fd, buf, sizeof(buf));
			if (r <= 0)
				break;
			for (ssize_t i = 0; i < r; i++)
				ASSERT_MSG(buf[i] == hup_pat(got + (uint64_t)i), "byte %ju is wrong",
					   (uintmax_t)(got + (uint64_t)i));
			got += (uint64_t)r;
			if (r < (ssize_t)sizeof(buf))
				break;
		}
		ASSERT_MSG(r >= 0 || errno == EAGAIN, "read at %ju: %s", (uintmax_t)got,
			   strerror(errno));
		if (r == 0)
			break;
		/* libuv's rule: a hang-up after a short read is the end.  So
		 * the stream must hold no more. */
		if ((ev.events & EPOLLHUP) && r != (ssize_t)sizeof(buf)) {
			ASSERT_SYS(fcntl(fd, F_SETFL, 0));
			ssize_t more = read(fd, buf, sizeof(buf));
			ASSERT_MSG(more == 0, "EPOLLHUP (events %#x) after a short read at %ju, and "
				   "the stream still held %zd bytes", ev.events, (uintmax_t)got, more);
			break;
		}
	}
	test_log("the reader read %ju bytes to the end", (uintmax_t)got);
	ASSERT_SYS(close(ep));
	ASSERT_SYS(close(fd));
}

/* The writer's TCP stream stopped growing: its sends go to the ring. */
static int hup_switched(int fd, uint64_t sent)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
	       sent > ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes + 4096;
}

static void case_epoll_hup_before_x(void)
{
	static unsigned char buf[HUP_CHUNK];
	int port, l = ts_tcp_listen(&port), eof = 0, moved = 0;
	pid_t c = test_fork(hup_reader, &port);
	int fd = ts_tcp_accept(l, ts_ms(2000));
	uint64_t sent = 0, tail_end = 0, t0 = test_now_ns();

	ASSERT_SYS(close(l));
	ASSERT_SYS(fcntl(fd, F_SETFL, O_NONBLOCK));
	while (!eof || sent < tail_end) {
		ASSERT_MSG(test_now_ns() - t0 < 10000000000u, "the writer took 10 s");
		if (!eof) {
			char r[4096];
			ssize_t n = read(fd, r, sizeof(r));
			if (n == 0) {
				eof = 1;
				tail_end = sent + HUP_TAIL;
			}
		}
		/* Moved, it waits for the reader's end with the ring empty, then
		 * its tail fits. */
		moved = moved || ts_disabled() ? moved : hup_switched(fd, sent);
		uint64_t lim = eof ? tail_end : moved ? sent : UINT64_MAX;
		size_t k = (size_t)(lim - sent < HUP_CHUNK ? lim - sent : HUP_CHUNK);
		for (size_t i = 0; i < k; i++)
			buf[i] = hup_pat(sent + i);
		ssize_t n = k ? write(fd, buf, k) : 0;
		if (n > 0)
			sent += (uint64_t)n;
		struct pollfd p = { fd, (short)((eof ? 0 : POLLIN) | (eof || !moved ? POLLOUT : 0)), 0 };
		poll(&p, 1, 5);
	}
	ASSERT_SYS(shutdown(fd, SHUT_WR));
	test_log("the writer sent %ju bytes, its sends %s", (uintmax_t)sent,
		 moved ? "switched to the ring" : "on TCP");
	int st = test_wait(c, 20);
	ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader failed (status %#x)", st);
	ASSERT_SYS(close(fd));
}

/* --- Plain registrations ---------------------------------------------------------
 * A socket's registrations made while it is on TCP are the kernel's alone
 * (epoll.c); when it moves they must become ours: a set (and a set nested
 * in another before the move) wakes for its ring's data under the
 * program's own data; a set closed since, whose number another set took,
 * gets no registration of ours; and a set shared with a forked child never
 * gives the child a tag of ours. */

static void case_epoll_plain_then_moved(void)
{
	int a, b, ep = epoll_create1(0), inner = epoll_create1(0), outer = epoll_create1(0);
	char c;

	ts_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 0x51);
	ep_add(inner, a, EPOLLIN | EPOLLET, 0x52);
	ep_add(outer, inner, EPOLLIN, 0x53);
	ASSERT(!ts_moved(a));
	ts_make_accelerated(a, b);
	EP_NONE(ep, 0);
	EP_NONE(outer, 0);
	ASSERT_EQ(write(b, "x", 1), 1);
	ASSERT_EQ(EP_ONE(ep, ts_ms(2000), 0x51), EPOLLIN);
	ASSERT_EQ(EP_ONE(outer, ts_ms(2000), 0x53), EPOLLIN);
	ASSERT_EQ(EP_ONE(inner, 0, 0x52), EPOLLIN);
	EP_NONE(inner, 0); /* edge-triggered: once */
	ASSERT_EQ(read(a, &c, 1), 1);
	EP_NONE(ep, 0);
	EP_NONE(outer, 0);
	close(outer);
	close(inner);
	close(ep);
	close(a);
	close(b);
}

/* A registered fd closed while its dup keeps the socket open stays in the
 * set, keyed by its old number (epoll(7)); the peer closes, and the
 * connection goes back to TCP (SO_OOBINLINE): TCP's level-triggered set
 * says the end of stream again.  The way back could not give the
 * registration back under a closed number, and epoll_wait said nothing
 * (tests/diff_shim.c seed 22300273703459). */
static void case_epoll_closed_dup_back(void)
{
	int a, b, on = 1;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 77 }, out[2];
	int ep = epoll_create1(EPOLL_CLOEXEC);

	ASSERT_SYS(ep);
	ts_pair(&a, &b);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev)); /* on TCP, as a server does */
	ts_make_accelerated(a, b);
	int d = dup(a);
	ASSERT_SYS(d);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	ts_expect_eof(d, ts_ms(2000));
	ASSERT_EQ(epoll_wait(ep, out, 2, ts_ms(2000)), 1); /* level-triggered: again below */
	ASSERT_SYS(setsockopt(d, SOL_SOCKET, SO_OOBINLINE, &on, sizeof(on)));
	int n = epoll_wait(ep, out, 2, 0);
	ASSERT_MSG(n == 1 && out[0].data.u64 == 77 && (out[0].events & EPOLLIN),
		   "epoll_wait said %d (data %llu, events 0x%x)", n,
		   n > 0 ? (unsigned long long)out[0].data.u64 : 0ull, n > 0 ? out[0].events : 0);
	ASSERT_SYS(close(d));
	ASSERT_SYS(close(ep));
}

static void case_epoll_plain_stale_set(void)
{
	int a, b, ep = epoll_create1(0);

	ts_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 0x61);
	ASSERT_SYS(close(ep));
	int again = epoll_create1(0); /* the same number, another set */
	ASSERT_EQ(again, ep);
	ts_make_accelerated(a, b);
	/* Not in it: the program's ADD is the first. */
	ep_add(again, a, EPOLLIN, 0x62);
	ASSERT_EQ(write(b, "y", 1), 1);
	ASSERT_EQ(EP_ONE(again, ts_ms(2000), 0x62), EPOLLIN);
	close(again);
	close(a);
	close(b);
}

struct shared_set {
	int ep, a, b, go[2], done[2];
};

/* The child shares the set, closes its copies of the sockets and waits on
 * the set while its parent moves them: any event it gets carries the
 * program's data (over TCP the kernel's registration outlives the child's
 * copy), never a tag of ours. */
static void shared_set_child(void *arg)
{
	struct shared_set *s = arg;
	struct epoll_event ev[4];
	char x = 0;
	int got = 0;

	close(s->a);
	close(s->b);
	ASSERT_EQ(write(s->go[1], "g", 1), 1);
	uint64_t end = test_now_ns() + 3000000000ull;
	while (test_now_ns() < end && read(s->done[0], &x, 1) != 1) {
		int n = epoll_wait(s->ep, ev, 4, 1000);
		got += n > 0 ? n : 0;
		for (int i = 0; i < n; i++)
			if (ev[i].data.u64 != 0x71)
				test_fail_at(__FILE__, __LINE__, "the child got data 0x%jx",
					     (uintmax_t)ev[i].data.u64);
	}
	test_log("the child had %d events, each the program's", got);
}

static void *late_byte(void *arg)
{
	test_sleep_ms(20);
	ASSERT_EQ(write(*(int *)arg, "z", 1), 1);
	return NULL;
}

static void case_epoll_plain_fork_shared(void)
{
	struct shared_set s;

	ASSERT_SYS(pipe(s.go));
	ASSERT_SYS(pipe(s.done));
	ASSERT_SYS(fcntl(s.done[0], F_SETFL, O_NONBLOCK));
	s.ep = epoll_create1(0);
	ts_pair(&s.a, &s.b);
	ep_add(s.ep, s.a, EPOLLIN, 0x71);
	pid_t pid = test_fork(shared_set_child, &s);
	char g;
	ASSERT_EQ(read(s.go[0], &g, 1), 1);
	ts_make_accelerated(s.a, s.b);
	/* The parent waits on a set of its own, which arms the ring: each
	 * byte rings, and the shared set's event for it (the parent's
	 * registration there, made ours) goes to the child alone. */
	int own = epoll_create1(0);
	ep_add(own, s.a, EPOLLIN, 0x72);
	for (int i = 0; i < 20; i++) {
		pthread_t w;
		char c;
		ASSERT_EQ(pthread_create(&w, NULL, late_byte, &s.b), 0);
		ASSERT_EQ(EP_ONE(own, ts_ms(2000), 0x72), EPOLLIN);
		ASSERT_EQ(pthread_join(w, NULL), 0);
		ASSERT_EQ(read(s.a, &c, 1), 1);
	}
	close(own);
	ASSERT_EQ(write(s.done[1], "d", 1), 1);
	test_wait_ok(pid, 30);
	close(s.ep);
	close(s.a);
	close(s.b);
	close(s.go[0]);
	close(s.go[1]);
	close(s.done[0]);
	close(s.done[1]);
}

/* An epoll set's number closed where no wrapper sees it (close_range) and
 * given to a FIFO by fopen (whose open no wrapper sees either): put in a
 * set, the FIFO is a file, not a set of ours, and its data wakes the set. */
static void case_epoll_stale_kind(void)
{
	char path[64];
	snprintf(path, sizeof(path), "/tmp/shunt-fifo-%d", (int)getpid());
	unlink(path);
	ASSERT_SYS(mkfifo(path, 0600));
	int old = epoll_create1(0), outer = epoll_create1(0);
	ASSERT_SYS(syscall(SYS_close_range, old, old, 0));
	FILE *f = fopen(path, "r+");
	ASSERT(f != NULL);
	ASSERT_EQ(fileno(f), old);
	ep_add(outer, fileno(f), EPOLLIN, 0x81);
	EP_NONE(outer, 0);
	int w = open(path, O_WRONLY);
	ASSERT_SYS(w);
	ASSERT_EQ(write(w, "f", 1), 1);
	ASSERT_EQ(EP_ONE(outer, ts_ms(2000), 0x81), EPOLLIN);
	close(w);
	fclose(f);
	close(outer);
	unlink(path);
}

/* --- A kernel without epoll_pwait2 -------------------------------------------
 * epoll_pwait2 came with Linux 5.11; older kernels answer ENOSYS, and a
 * seccomp profile written before it (older container engines', valgrind's
 * own emulation) ENOSYS or EPERM.  The program never called it: a timed
 * epoll_wait must still wait, on a set of ours and on one that is not. */

#ifndef __NR_epoll_pwait2
#define __NR_epoll_pwait2 441
#endif


static void no_pwait2_child(void *arg)
{
	static const int pwait2[] = { __NR_epoll_pwait2 };
	struct timespec ts = { 0, 1000000 };

	(void)arg;
	ASSERT(ts_seccomp_deny(pwait2, 1, SECCOMP_RET_ERRNO | ENOSYS));
	ASSERT_EQ(syscall(__NR_epoll_pwait2, -1, NULL, 1, &ts, NULL, 8), -1);
	ASSERT_EQ(errno, ENOSYS);
	int a, b, p[2];
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1234 }, got[4];

	ts_moved_pair(&a, &b);
	ASSERT_SYS(pipe(p));
	int ours = epoll_create1(0), plain = epoll_create1(0);
	ASSERT_SYS(epoll_ctl(ours, EPOLL_CTL_ADD, a, &ev));
	ASSERT_SYS(epoll_ctl(plain, EPOLL_CTL_ADD, p[0], &ev));
	/* Nothing there: each waits its 50 ms and finds nothing. */
	ASSERT_EQ(epoll_wait(ours, got, 4, 50), 0);
	ASSERT_EQ(epoll_wait(plain, got, 4, 50), 0);
	ASSERT_EQ(write(b, "x", 1), 1);
	ASSERT_EQ(write(p[1], "y", 1), 1);
	ASSERT_EQ(epoll_wait(ours, got, 4, 2000), 1);
	ASSERT_EQ(got[0].data.u64, 0x1234);
	ASSERT_EQ(epoll_wait(plain, got, 4, 2000), 1);
	ASSERT_EQ(got[0].data.u64, 0x1234);
	close(ours);
	close(plain);
	close(a);
	close(b);
	close(p[0]);
	close(p[1]);
}

static void case_epoll_no_pwait2(void)
{
	test_wait_ok(test_fork(no_pwait2_child, NULL), 30);
}

/* More ready fds than maxevents: each gets its turn, as the kernel's
 * ready list goes round.  Four moved sockets writable and a pipe
 * readable, level-triggered, 2 events a wait, 20 waits: the first two
 * sockets took every wait and the pipe and the others none (a helper's
 * reproducer; a server with maxevents below its busy connections never
 * saw its listener again).  On TCP too. */
#define FAIR_SOCKS 4
#define FAIR_WAITS 20

static void fair_on(int moved)
{
	int a[FAIR_SOCKS], b[FAIR_SOCKS], pfd[2], ep = epoll_create1(EPOLL_CLOEXEC);
	int seen[FAIR_SOCKS + 1] = { 0 };

	ASSERT_SYS(ep);
	for (int i = 0; i < FAIR_SOCKS; i++) {
		if (moved)
			ts_moved_pair(&a[i], &b[i]);
		else
			ts_pair(&a[i], &b[i]);
		struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = (uint32_t)i };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a[i], &ev));
	}
	ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	ASSERT_EQ(write(pfd[1], "p", 1), 1);
	struct epoll_event pe = { .events = EPOLLIN, .data.u32 = FAIR_SOCKS };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &pe));
	for (int w = 0; w < FAIR_WAITS; w++) {
		struct epoll_event out[2];
		int n = epoll_wait(ep, out, 2, 1000);
		ASSERT_EQ(n, 2);
		for (int k = 0; k < n; k++)
			seen[out[k].data.u32]++;
	}
	test_log("%s: sockets %d %d %d %d, pipe %d times in %d waits", moved ? "moved" : "TCP",
		 seen[0], seen[1], seen[2], seen[3], seen[4], FAIR_WAITS);
	for (int i = 0; i <= FAIR_SOCKS; i++)
		ASSERT_MSG(seen[i] >= 3, "%s: fd %d reported %d times in %d waits",
			   moved ? "moved" : "TCP", i, seen[i], FAIR_WAITS);
	for (int i = 0; i < FAIR_SOCKS; i++) {
		ASSERT_SYS(close(a[i]));
		ASSERT_SYS(close(b[i]));
	}
	close(pfd[0]);
	close(pfd[1]);
	close(ep);
}

/* After a wait whose moved sockets filled the array, the next with room
 * gives a level-triggered pipe once (a first fix for the pipe's turn gave
 * it twice: a reviewer's reproducer). */
static void case_epoll_turn_once(void)
{
	int a[2], b[2], pfd[2], ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event out[8];
	char c;

	ASSERT_SYS(ep);
	ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	for (int i = 0; i < 2; i++) {
		ts_moved_pair(&a[i], &b[i]);
		ASSERT_EQ(send(b[i], "s", 1, 0), 1);
		ep_add(ep, a[i], EPOLLIN, (uint64_t)i);
	}
	ASSERT_EQ(write(pfd[1], "p", 1), 1);
	ep_add(ep, pfd[0], EPOLLIN, 9);
	ASSERT_EQ(ts_wait_fd(a[0], POLLIN, ts_ms(2000)) & POLLIN, POLLIN);
	ASSERT_EQ(ts_wait_fd(a[1], POLLIN, ts_ms(2000)) & POLLIN, POLLIN);
	ASSERT_EQ(epoll_wait(ep, out, 2, 1000), 2);
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(read(a[i], &c, 1), 1);
	int n = epoll_wait(ep, out, 8, 1000), pipe_seen = 0;
	for (int i = 0; i < n; i++)
		pipe_seen += out[i].data.u64 == 9;
	ASSERT_MSG(n == 1 && pipe_seen == 1, "%d events, the pipe %d times", n, pipe_seen);
	for (int i = 0; i < 2; i++) {
		ASSERT_SYS(close(a[i]));
		ASSERT_SYS(close(b[i]));
	}
	close(pfd[0]);
	close(pfd[1]);
	close(ep);
}

static void case_epoll_fair(void)
{
	fair_on(0);
	fair_on(1);
	case_epoll_turn_once();
}

/* A set polled from outside (poll() on it, as an outer loop polls
 * libuv's backend fd), then waited on: each event once, as it is now.  The
 * poll took the kernel's events and kept them: the next wait gave the same
 * pipe twice, and a socket under the data it had before a MOD (a helper's
 * reproducer). */
static void polled_peer(int fd, void *arg)
{
	char x[64];

	if (*(int *)arg)
		ts_make_accelerated_follow(fd);
	ASSERT_EQ(send(fd, "s", 1, 0), 1);
	while (read(fd, x, sizeof(x)) > 0)
		;
}

static void polled_on(int moved)
{
	struct shim_peer peer;
	int pfd[2], ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event out[4];
	char c;

	ASSERT_SYS(ep);
	ts_peer_start(&peer, polled_peer, &moved);
	int a = peer.fd;
	if (moved)
		ts_make_accelerated_lead(a);
	usleep(100 * 1000); /* its byte is in */
	ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	ASSERT_EQ(write(pfd[1], "p", 1), 1);
	struct epoll_event se = { .events = EPOLLIN, .data.u64 = 1 };
	struct epoll_event pe = { .events = EPOLLIN, .data.u64 = 2 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &se));
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &pe));
	struct pollfd p = { .fd = ep, .events = POLLIN };
	ASSERT_EQ(poll(&p, 1, 2000), 1);
	int n = epoll_wait(ep, out, 4, 1000);
	ASSERT_MSG(n == 2 && out[0].data.u64 + out[1].data.u64 == 3, "%s: %d events, data %ju, %ju, %ju",
		   moved ? "moved" : "TCP", n, (uintmax_t)(n > 0 ? out[0].data.u64 : 0),
		   (uintmax_t)(n > 1 ? out[1].data.u64 : 0), (uintmax_t)(n > 2 ? out[2].data.u64 : 0));
	ASSERT_EQ(read(a, &c, 1), 1);
	ASSERT_EQ(poll(&p, 1, 2000), 1);
	struct epoll_event me = { .events = EPOLLOUT, .data.u64 = 3 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &me));
	n = epoll_wait(ep, out, 4, 1000);
	int got[4] = { 0 };
	for (int i = 0; i < n; i++) {
		ASSERT(out[i].data.u64 < 4);
		got[out[i].data.u64]++;
	}
	ASSERT_MSG(n == 2 && got[2] == 1 && got[3] == 1, "%s: after a MOD, %d events: data 1 %d, 2 %d, 3 %d",
		   moved ? "moved" : "TCP", n, got[1], got[2], got[3]);
	close(pfd[0]);
	close(pfd[1]);
	close(ep);
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ts_peer_wait(&peer, ts_ms(5000));
	ASSERT_SYS(close(a));
}

/* A plain fd removed from a set between a poll of the set and its wait:
 * no event of it comes (the poll kept its edge, and the wait gave it, data
 * the program may have freed: a reviewer's reproducer). */
static void polled_del(void)
{
	int a, b, pfd[2], ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event out[4];

	ASSERT_SYS(ep);
	ts_moved_pair(&a, &b);
	ep_add(ep, a, EPOLLIN, 1);
	ASSERT_SYS(pipe2(pfd, O_CLOEXEC));
	ep_add(ep, pfd[0], EPOLLIN | EPOLLET, 2);
	ASSERT_EQ(write(pfd[1], "p", 1), 1);
	struct pollfd p = { .fd = ep, .events = POLLIN };
	ASSERT_EQ(poll(&p, 1, 2000), 1);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, pfd[0], NULL));
	close(pfd[0]);
	close(pfd[1]);
	int n = epoll_wait(ep, out, 4, 100);
	ASSERT_MSG(n == 0, "after DEL and close: %d events, the first with data %ju", n,
		   (uintmax_t)(n > 0 ? out[0].data.u64 : 0));
	close(ep);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_epoll_polled_stale(void)
{
	polled_on(0);
	polled_on(1);
	polled_del();
}

static const struct shim_case g_cases[] = {
	{ "epoll_blocked_poller", case_epoll_blocked_poller },
	{ "epoll_hup_before_x", case_epoll_hup_before_x },
	{ "epoll_nested", case_epoll_nested },
	{ "epoll_rdnorm", case_epoll_rdnorm },
	{ "epoll_exclusive_rules", case_epoll_exclusive_rules },
	{ "epoll_lt", case_epoll_lt },
	{ "epoll_et", case_epoll_et },
	{ "epoll_added_before_connect", case_epoll_added_before_connect },
	{ "epoll_exclusive", case_epoll_exclusive },
	{ "epoll_unspec_reconnect", case_epoll_unspec_reconnect },
	{ "epoll_unspec_many_dups", case_epoll_unspec_many_dups },
	{ "epoll_peer_killed_on_wake", case_epoll_peer_killed_on_wake },
	{ "epoll_oneshot", case_epoll_oneshot },
	{ "epoll_rdhup", case_epoll_rdhup },
	{ "epoll_hup", case_epoll_hup },
	{ "epoll_dup", case_epoll_dup },
	{ "epoll_del_add", case_epoll_del_add },
	{ "epoll_close_dup", case_epoll_close_dup },
	{ "poll_select", case_poll_select },
	{ "epoll_reactor_stress", case_epoll_reactor_stress },
	{ "epoll_sets_churn", case_epoll_sets_churn },
	{ "epoll_write_first", case_epoll_write_first },
	{ "epoll_et_short_read", case_epoll_et_short_read },
	{ "epoll_no_pwait2", case_epoll_no_pwait2 },
	{ "epoll_plain_then_moved", case_epoll_plain_then_moved },
	{ "epoll_plain_stale_set", case_epoll_plain_stale_set },
	{ "epoll_plain_fork_shared", case_epoll_plain_fork_shared },
	{ "epoll_stale_kind", case_epoll_stale_kind },
	{ "epoll_listener_number_reused", case_epoll_listener_number_reused },
	{ "epoll_closed_dup_back", case_epoll_closed_dup_back },
	{ "epoll_fair", case_epoll_fair },
	{ "epoll_polled_stale", case_epoll_polled_stale },
};

int main(void)
{
	return ts_main("t_shim_epoll", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
}
