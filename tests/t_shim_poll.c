/*
 * t_shim_poll.c - waiting on connections that moved to shared memory, the
 * cases t_shim_epoll leaves: poll, ppoll, select, pselect and glibc's
 * __poll_chk and __ppoll_chk one by one (nothing yet, data there, the
 * timeout kept, asleep when the data comes, writable), arrays with a
 * skipped entry and a pipe, a full send side (not writable until the peer
 * reads), epoll_wait, epoll_pwait and epoll_pwait2 (timeouts, a blocked
 * wait, DEL), a set with a pipe and a moved socket, HUP after the peer's
 * close and our shutdown, HUP|ERR when the peer dies, and waits that began
 * before the connection moved (a thread in poll, in read) and end after.
 *
 * Each case first moves its connection (ts_make_accelerated*), then checks
 * that the program sees exactly what kernel TCP gives it: SHUNT_DISABLE=1
 * runs the same checks on kernel TCP, where every case passes.
 * SHUNT_TEST_ONLY=name,name runs some cases.  (Ported from the former t_preload.)
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <linux/perf_event.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shimlib.h"
#include "testlib.h"

/* glibc's _FORTIFY_SOURCE entry points for poll and ppoll. */
extern int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);
extern int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
		       const sigset_t *ss, size_t fdslen);

#define KIB 1024
#define MIB (1024 * 1024)

/* A thread that writes n bytes of a stream to fd after ms. */
struct later {
	int fd, ms;
	uint64_t seed, off, n;
	double sent_at; /* test_now() just before the write */
	pthread_t t;
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	test_sleep_ms((unsigned)l->ms);
	l->sent_at = test_now();
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

/* --- poll, ppoll, __poll_chk, __ppoll_chk, select, pselect ------------------ */

enum { W_POLL, W_PPOLL, W_POLL_CHK, W_PPOLL_CHK, W_SELECT, W_PSELECT, W_COUNT };
static const char *const wait_names[W_COUNT] = {
	"poll", "ppoll", "__poll_chk", "__ppoll_chk", "select", "pselect",
};

static int wait_sel(int how, int fd, short ev, int ms)
{
	fd_set s;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	sigset_t mask;
	int rc;

	sigemptyset(&mask);
	FD_ZERO(&s);
	FD_SET(fd, &s);
	fd_set *rd = ev == POLLIN ? &s : NULL, *wr = ev == POLLIN ? NULL : &s;
	if (how == W_SELECT)
		rc = select(fd + 1, rd, wr, NULL, &tv);
	else
		rc = pselect(fd + 1, rd, wr, NULL, &ts, &mask);
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
	else if (how == W_POLL_CHK)
		rc = __poll_chk(&p, 1, ms, sizeof(p));
	else
		rc = __ppoll_chk(&p, 1, &ts, NULL, sizeof(p));
	ASSERT_SYS(rc);
	ASSERT_EQ(rc, p.revents != 0);
	ASSERT_MSG(!(p.revents & ~ev), "%s: revents 0x%x for events 0x%x", wait_names[how],
		   p.revents, ev);
	return rc;
}

static void wait_script(int how, int a, int b, uint64_t seed, uint64_t *off)
{
	ASSERT_EQ(wait_how(how, a, POLLIN, 0), 0);
	ASSERT_EQ(wait_how(how, a, POLLOUT, 0), 1);
	ts_send_stream(b, seed, *off, 100, ts_ms(2000));
	ASSERT_EQ(wait_how(how, a, POLLIN, ts_ms(2000)), 1);
	ts_recv_stream(a, seed, *off, 100, ts_ms(2000));
	*off += 100;
	ASSERT_EQ(wait_how(how, a, POLLIN, 0), 0);
	double t0 = test_now();
	ASSERT_EQ(wait_how(how, a, POLLIN, 100), 0);
	ASSERT_GE((test_now() - t0) * 1000, 90);
	/* Asleep when the data comes. */
	struct later l = { .fd = b, .ms = 100, .seed = seed, .off = *off, .n = 10 };
	later_start(&l);
	t0 = test_now();
	ASSERT_EQ(wait_how(how, a, POLLIN, ts_ms(5000)), 1);
	double dt = test_now() - t0;
	later_join(&l);
	ASSERT_MSG(dt >= 0.05, "%s: readable after %.3f s, before the data was sent",
		   wait_names[how], dt);
	ASSERT_MSG(dt < 0.1 + ts_ms(1000) / 1000.0, "%s: woke %.3f s after the data was sent",
		   wait_names[how], dt - 0.1);
	ts_recv_stream(a, seed, *off, 10, ts_ms(2000));
	*off += 10;
}

static void case_wait_calls(void)
{
	int a, b;
	uint64_t seed = shim_seed(1), off = 0;

	ts_moved_pair(&a, &b);
	for (int how = 0; how < W_COUNT; how++) {
		test_log("%s", wait_names[how]);
		wait_script(how, a, b, seed, &off);
	}
	ts_expect_accel(a, "after the waits");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* Several entries: -1 is skipped, each gets its own revents. */
static void case_wait_array(void)
{
	int a, b, pp[2];
	uint64_t seed = shim_seed(2);
	struct pollfd f[4];
	char x;

	ts_moved_pair(&a, &b);
	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	f[0] = (struct pollfd){ .fd = -1, .events = POLLIN, .revents = 7 };
	f[1] = (struct pollfd){ .fd = pp[0], .events = POLLIN };
	f[2] = (struct pollfd){ .fd = a, .events = POLLIN };
	f[3] = (struct pollfd){ .fd = b, .events = POLLIN };
	ASSERT_EQ(poll(f, 4, 0), 0);
	ASSERT_EQ(f[0].revents, 0);
	ASSERT_EQ(write(pp[1], "x", 1), 1);
	ASSERT_EQ(poll(f, 4, ts_ms(1000)), 1);
	ASSERT(f[0].revents == 0 && f[1].revents == POLLIN && f[2].revents == 0 &&
	       f[3].revents == 0);
	ts_send_stream(b, seed, 0, 10, ts_ms(2000));
	ts_wait_arrived(a, 10, ts_ms(2000));
	ASSERT_EQ(poll(f, 4, ts_ms(1000)), 2);
	ASSERT(f[0].revents == 0 && f[1].revents == POLLIN && f[2].revents == POLLIN &&
	       f[3].revents == 0);
	/* The same fd twice, asking different things. */
	struct pollfd g[2] = { { a, POLLIN, 0 }, { a, POLLOUT, 0 } };
	ASSERT_EQ(poll(g, 2, 0), 2);
	ASSERT(g[0].revents == POLLIN && g[1].revents == POLLOUT);
	ts_recv_stream(a, seed, 0, 10, ts_ms(2000));
	ASSERT_EQ(read(pp[0], &x, 1), 1);
	ASSERT_EQ(poll(f, 4, 0), 0);
	/* select over all of them, readable and writable. */
	fd_set rd, wr;
	int maxfd = a > b ? a : b;
	maxfd = maxfd > pp[0] ? maxfd : pp[0];
	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_SET(a, &rd);
	FD_SET(b, &rd);
	FD_SET(pp[0], &rd);
	FD_SET(a, &wr);
	ts_send_stream(a, seed ^ 1, 0, 10, ts_ms(2000));
	ts_wait_arrived(b, 10, ts_ms(2000));
	ASSERT_EQ(select(maxfd + 1, &rd, &wr, NULL, &(struct timeval){ 1, 0 }), 2);
	ASSERT(!FD_ISSET(a, &rd) && FD_ISSET(b, &rd) && !FD_ISSET(pp[0], &rd) && FD_ISSET(a, &wr));
	ts_recv_stream(b, seed ^ 1, 0, 10, ts_ms(2000));
	close(pp[0]);
	close(pp[1]);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

struct reader {
	int fd;
	uint64_t seed, n;
	pthread_t t;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	test_sleep_ms(100);
	ts_recv_stream(r->fd, r->seed, 0, r->n, ts_ms(5000));
	return NULL;
}

/* Full: not writable (poll, select); the peer reads: writable again, and
 * a waiter asleep on POLLOUT wakes. */
static void case_wait_room(void)
{
	int a, b;
	unsigned char *buf = malloc(256 * KIB);
	uint64_t seed = shim_seed(3), total = 0;

	ASSERT_NOT_NULL(buf);
	ts_moved_pair(&a, &b);
	ts_set_nonblock(a, 1);
	for (;;) {
		test_stream_fill(seed, total, buf, 256 * KIB);
		ssize_t n = write(a, buf, 256 * KIB);
		if (n < 0) {
			ASSERT_MSG(errno == EAGAIN, "write: %s", test_errname(errno));
			break;
		}
		total += (uint64_t)n;
	}
	free(buf);
	ASSERT_EQ(ts_wait_fd(a, POLLOUT, 0), 0);
	ASSERT_EQ(wait_how(W_SELECT, a, POLLOUT, 0), 0);
	ASSERT_EQ(wait_how(W_PPOLL, a, POLLOUT, 100), 0);
	/* A reader takes it all, 100 ms from now. */
	struct pollfd p = { a, POLLOUT, 0 };
	struct reader r = { .fd = b, .seed = seed, .n = total };
	double t0 = test_now();
	ASSERT_EQ(pthread_create(&r.t, NULL, reader_main, &r), 0);
	int rc = poll(&p, 1, ts_ms(5000));
	double dt = test_now() - t0;
	ASSERT_EQ(pthread_join(r.t, NULL), 0);
	ASSERT_EQ(rc, 1);
	ASSERT_EQ(p.revents, POLLOUT);
	ASSERT_MSG(dt >= 0.05, "writable after %.3f s, before the reader started", dt);
	ts_expect_accel(a, "full, then writable");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A poll for room in a full ring sleeps: it asked the kernel for POLLOUT
 * on the stream's socket, which holds nothing and is always writable, and
 * went round at once, again and again (apache's h2 writer took curl's
 * CPU: a helper's measure, 12-04).  300 ms of poll with no reader: before,
 * some 300 ms of CPU; now a few. */
static double thread_cpu(void)
{
	struct timespec ts;

	ASSERT_SYS(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts));
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* a's ring filled, then 300 ms of poll for room in it with no reader:
 * the CPU that took (*dt: the time). */
static double poll_room_cpu(int a, const char *why, double *dt)
{
	static char buf[64 * KIB];

	ts_set_nonblock(a, 1);
	while (write(a, buf, sizeof(buf)) > 0)
		;
	ASSERT_EQ(errno, EAGAIN);
	struct pollfd p = { a, POLLOUT, 0 };
	double c0 = thread_cpu(), t0 = test_now();
	ASSERT_EQ(poll(&p, 1, 300), 0);
	double cpu = thread_cpu() - c0;
	*dt = test_now() - t0;
	test_log("%s: 300 ms of poll for room: %.3f s, %.1f ms of CPU", why, *dt, cpu * 1e3);
	return cpu;
}

static void case_poll_room_sleeps(void)
{
	int a, b;
	double dt;

	ts_moved_pair(&a, &b);
	double cpu = poll_room_cpu(a, "a full ring", &dt);
	ASSERT_MSG(cpu < 0.03, "a poll for room took %.1f ms of CPU in %.3f s", cpu * 1e3, dt);
	ts_expect_accel(a, "a poll for room");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* The same wait while the kernel's side of the socket stays readable for
 * good, which the program did not ask about: after its own
 * shutdown(SHUT_RD), or with the peer's bytes from before its switch left
 * unread by a program that only writes.  The library asked the kernel for
 * input there all the same, for doorbells, and went round at once (a
 * helper's measure: 500 ms of CPU in a 500 ms poll; TCP 0.1 ms). */
struct sipper {
	int fd;
	atomic_int stop;
	pthread_t t;
};

/* Reads a byte at a time what the writer sends, until told to stop. */
static void *sipper_main(void *arg)
{
	struct sipper *s = arg;
	char c;

	while (!atomic_load(&s->stop))
		if (ts_wait_fd(s->fd, POLLIN, 10) & POLLIN)
			ASSERT_EQ(read(s->fd, &c, 1), 1);
	return NULL;
}

/* a moved, with b's first bytes in a's socket, unread. */
static void moved_with_unread(int *a, int *b)
{
	struct sipper s = { .fd = 0 };
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(3000) * 1000000u;
	int q = 1;

	ts_pair(a, b);
	ts_write_all(*b, "unread", 6, ts_ms(2000));
	s.fd = *b;
	ASSERT_EQ(pthread_create(&s.t, NULL, sipper_main, &s), 0);
	while (!(ts_moved(*a) && ts_moved(*b)) && test_now_ns() < end) {
		ts_write_all(*a, "w", 1, ts_ms(2000));
		test_sleep_ms(1);
	}
	ASSERT_MSG(ts_moved(*a) && ts_moved(*b), "the writer never moved");
	for (int i = 0; i < 2000 && q; i++) {
		ASSERT_SYS(ioctl(*a, TIOCOUTQ, &q));
		test_sleep_ms(1);
	}
	atomic_store(&s.stop, 1);
	ASSERT_EQ(pthread_join(s.t, NULL), 0);
}

static void room_unheard(int a, const char *why)
{
	double dt, cpu = poll_room_cpu(a, why, &dt);

	ASSERT_MSG(cpu < dt / 3, "%s: a poll for room took %.1f ms of CPU in %.3f s", why,
		   cpu * 1e3, dt);
}

static void case_poll_room_unheard_sleeps(void)
{
	int a, b;

	ts_moved_pair(&a, &b);
	ASSERT_SYS(shutdown(a, SHUT_RD));
	room_unheard(a, "after shutdown(SHUT_RD)");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	moved_with_unread(&a, &b);
	room_unheard(a, "the peer's first bytes unread");
	ASSERT_MSG(ts_moved(a), "the writer went back to TCP");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* --- epoll_wait, epoll_pwait, epoll_pwait2 ------------------------------------ */

enum { E_WAIT, E_PWAIT, E_PWAIT_MASK, E_PWAIT2, E_COUNT };
static const char *const ep_names[E_COUNT] = {
	"epoll_wait", "epoll_pwait", "epoll_pwait (a mask)", "epoll_pwait2",
};

static int ep_call(int how, int ep, struct epoll_event *ev, int max, int ms)
{
	sigset_t mask;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	int n;

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	do {
		switch (how) {
		case E_PWAIT: n = epoll_pwait(ep, ev, max, ms, NULL); break;
		case E_PWAIT_MASK: n = epoll_pwait(ep, ev, max, ms, &mask); break;
		case E_PWAIT2: n = epoll_pwait2(ep, ev, max, ms < 0 ? NULL : &ts, NULL); break;
		default: n = epoll_wait(ep, ev, max, ms); break;
		}
	} while (n < 0 && errno == EINTR);
	ASSERT_SYS(n);
	return n;
}

/* Exactly one event, tagged tag; returns its events (0 for none). */
static uint32_t ep_one(int how, int ep, int ms, uint64_t tag)
{
	struct epoll_event ev[4];
	int n = ep_call(how, ep, ev, 4, ms);

	ASSERT_MSG(n <= 1, "%s: %d events, want at most 1", ep_names[how], n);
	if (n == 0)
		return 0;
	ASSERT_MSG(ev[0].data.u64 == tag, "%s: data 0x%jx, want 0x%jx", ep_names[how],
		   (uintmax_t)ev[0].data.u64, (uintmax_t)tag);
	return ev[0].events;
}

static void case_epoll_calls(void)
{
	int a, b;
	uint64_t seed = shim_seed(4), off = 0;

	ts_moved_pair(&a, &b);
	for (int how = 0; how < E_COUNT; how++) {
		test_log("%s", ep_names[how]);
		int ep = epoll_create1(EPOLL_CLOEXEC);
		ASSERT_SYS(ep);
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xabc };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
		ASSERT_UEQ(ep_one(how, ep, 0, 0xabc), 0);
		ts_send_stream(b, seed, off, 100, ts_ms(2000));
		ASSERT_UEQ(ep_one(how, ep, ts_ms(2000), 0xabc), EPOLLIN);
		ts_recv_stream(a, seed, off, 50, ts_ms(2000));
		ASSERT_UEQ(ep_one(how, ep, 0, 0xabc), EPOLLIN); /* still readable */
		ts_recv_stream(a, seed, off + 50, 50, ts_ms(2000));
		off += 100;
		ASSERT_UEQ(ep_one(how, ep, 0, 0xabc), 0);
		double t0 = test_now();
		ASSERT_UEQ(ep_one(how, ep, 100, 0xabc), 0);
		ASSERT_GE((test_now() - t0) * 1000, 90);
		/* Asleep when the data comes. */
		struct later l = { .fd = b, .ms = 100, .seed = seed, .off = off, .n = 10 };
		later_start(&l);
		t0 = test_now();
		ASSERT_UEQ(ep_one(how, ep, ts_ms(5000), 0xabc), EPOLLIN);
		double dt = test_now() - t0;
		later_join(&l);
		ASSERT_MSG(dt >= 0.05 && dt < 0.1 + ts_ms(1000) / 1000.0,
			   "%s: an event after %.3f s, the data came after 0.1 s", ep_names[how], dt);
		ts_recv_stream(a, seed, off, 10, ts_ms(2000));
		off += 10;
		/* EPOLLOUT too, then out of the set: nothing, data or not. */
		ev = (struct epoll_event){ .events = EPOLLIN | EPOLLOUT, .data.u64 = 0xabc };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_MOD, a, &ev));
		ASSERT_UEQ(ep_one(how, ep, 0, 0xabc), EPOLLOUT);
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL));
		ts_send_stream(b, seed, off, 10, ts_ms(2000));
		ts_wait_arrived(a, 10, ts_ms(2000));
		ASSERT_UEQ(ep_one(how, ep, 100, 0xabc), 0);
		ts_recv_stream(a, seed, off, 10, ts_ms(2000));
		off += 10;
		close(ep);
	}
	ts_expect_accel(a, "after epoll");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

#define TAG_SOCK 0x5ec0de00c0ffee01ull
#define TAG_PIPE 0x7171e00dfacade02ull

/* A set with a pipe and a moved socket: each reported for itself. */
static void case_epoll_mixed(void)
{
	int a, b, pp[2];
	uint64_t seed = shim_seed(5);
	struct epoll_event ev[4];
	char x;

	ts_moved_pair(&a, &b);
	ASSERT_SYS(pipe2(pp, O_CLOEXEC));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	ev[0] = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_SOCK };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev[0]));
	ev[0] = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_PIPE };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &ev[0]));
	ASSERT_EQ(epoll_wait(ep, ev, 4, 0), 0);
	ASSERT_EQ(write(pp[1], "x", 1), 1);
	ASSERT_EQ(epoll_wait(ep, ev, 4, ts_ms(1000)), 1);
	ASSERT_UEQ(ev[0].data.u64, TAG_PIPE);
	ts_send_stream(b, seed, 0, 10, ts_ms(2000));
	ts_wait_arrived(a, 10, ts_ms(2000));
	int n = epoll_wait(ep, ev, 4, ts_ms(1000));
	if (n != 2) {
		/* Level-triggered: is the socket ever reported while the pipe
		 * stays readable? */
		int seen = 0;
		for (int i = 0; i < 10; i++) {
			int m = epoll_wait(ep, ev + 2, 2, 10);
			for (int j = 0; j < m; j++)
				seen += ev[2 + j].data.u64 == TAG_SOCK;
		}
		TEST_FAIL_MSG("%d event(s) (data 0x%jx, events 0x%x), want the pipe's and the "
			      "socket's; the socket then came in %d of 10 more epoll_wait calls "
			      "while the pipe stayed readable", n, (uintmax_t)ev[0].data.u64,
			      ev[0].events, seen);
	}
	ASSERT((ev[0].data.u64 == TAG_PIPE && ev[1].data.u64 == TAG_SOCK) ||
	       (ev[0].data.u64 == TAG_SOCK && ev[1].data.u64 == TAG_PIPE));
	ASSERT_UEQ(ev[0].events, EPOLLIN);
	ASSERT_UEQ(ev[1].events, EPOLLIN);
	ASSERT_EQ(read(pp[0], &x, 1), 1);
	ASSERT_EQ(epoll_wait(ep, ev, 4, ts_ms(1000)), 1);
	ASSERT_UEQ(ev[0].data.u64, TAG_SOCK);
	ts_recv_stream(a, seed, 0, 10, ts_ms(2000));
	ASSERT_EQ(epoll_wait(ep, ev, 4, 50), 0);
	/* A blocked wait wakes for the pipe, then for the socket. */
	ASSERT_EQ(write(pp[1], "y", 1), 1);
	ASSERT_EQ(epoll_wait(ep, ev, 4, ts_ms(2000)), 1);
	ASSERT_UEQ(ev[0].data.u64, TAG_PIPE);
	ASSERT_EQ(read(pp[0], &x, 1), 1);
	struct later l = { .fd = b, .ms = 100, .seed = seed, .off = 10, .n = 10 };
	later_start(&l);
	ASSERT_EQ(epoll_wait(ep, ev, 4, ts_ms(5000)), 1);
	later_join(&l);
	ASSERT_UEQ(ev[0].data.u64, TAG_SOCK);
	ts_recv_stream(a, seed, 10, 10, ts_ms(2000));
	ts_expect_accel(a, "in a mixed epoll set");
	close(ep);
	close(pp[0]);
	close(pp[1]);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* --- Hang-ups ------------------------------------------------------------------- */

/* Level-triggered: poll until revents include `until` (the data and the
 * FIN may be seen in two steps); returns revents. */
static short poll_until(int fd, short events, short until, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	short re;

	while (!((re = ts_wait_fd(fd, events, 10)) & until) && test_now_ns() < end)
		test_sleep_ms(1);
	if (!(re & until))
		TEST_FAIL_MSG("fd %d: revents 0x%x, still no 0x%x after %d ms", fd, re, until, ms);
	return re;
}

static uint32_t epoll_events_of(int ep, int ms)
{
	struct epoll_event ev[2];
	int n = epoll_wait(ep, ev, 2, ms);

	ASSERT_SYS(n);
	ASSERT_LE(n, 1);
	return n ? ev[0].events : 0;
}

/* The peer closes: readable with RDHUP, no HUP or ERR (our side is open);
 * we shut down too: HUP.  poll, select and epoll alike. */
static void case_hup_close(void)
{
	int a, b;

	ts_moved_pair(&a, &b);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_UEQ(epoll_events_of(ep, 0), EPOLLOUT);
	ASSERT_SYS(close(b));
	short re = poll_until(a, POLLIN | POLLOUT | POLLRDHUP, POLLRDHUP, ts_ms(2000));
	ASSERT_EQ(re, POLLIN | POLLOUT | POLLRDHUP);
	ASSERT_UEQ(epoll_events_of(ep, 0), EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	fd_set rd, wr, ex;
	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_ZERO(&ex);
	FD_SET(a, &rd);
	FD_SET(a, &wr);
	FD_SET(a, &ex);
	ASSERT_EQ(select(a + 1, &rd, &wr, &ex, &(struct timeval){ 0, 0 }), 2);
	ASSERT(FD_ISSET(a, &rd) && FD_ISSET(a, &wr) && !FD_ISSET(a, &ex));
	/* Reading the end changes nothing. */
	ts_expect_eof(a, ts_ms(1000));
	ASSERT_EQ(ts_wait_fd(a, POLLIN | POLLOUT | POLLRDHUP, 0), POLLIN | POLLOUT | POLLRDHUP);
	ASSERT_SYS(shutdown(a, SHUT_WR));
	re = poll_until(a, POLLIN | POLLOUT | POLLRDHUP, POLLHUP, ts_ms(2000));
	ASSERT_EQ(re, POLLIN | POLLOUT | POLLRDHUP | POLLHUP);
	ASSERT_UEQ(epoll_events_of(ep, 0), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP);
	/* Unasked, HUP still comes. */
	ASSERT_EQ(ts_wait_fd(a, 0, 0), POLLHUP);
	close(ep);
	ASSERT_SYS(close(a));
}

/* A close under a poll: the kernel's poll holds the file, so nothing
 * wakes it, and at its timeout it looks again and finds the fd gone:
 * POLLNVAL.  A moved socket's said 0 (design.md, Limits, before 12-08). */
struct closer {
	int fd;
	pthread_t t;
};

static void *closer_main(void *arg)
{
	struct closer *c = arg;

	test_sleep_ms(50);
	ASSERT_SYS(close(c->fd));
	return NULL;
}

static void close_under_poll(int a, int b, const char *when)
{
	struct closer c = { a, 0 };
	struct pollfd p = { .fd = a, .events = POLLIN };

	ASSERT_EQ(pthread_create(&c.t, NULL, closer_main, &c), 0);
	int rc = poll(&p, 1, 300);
	ASSERT_EQ(pthread_join(c.t, NULL), 0);
	ASSERT_MSG(rc == 1 && p.revents == POLLNVAL, "%s: poll %d, revents 0x%x (TCP: 1, POLLNVAL)",
		   when, rc, p.revents);
	ASSERT_SYS(close(b));
}

/* select's look at the start finds every fd open; one closed while it
 * waits is no EBADF: Linux 6.18 reports it ready in each set it was asked
 * in, at the timeout.  What the kernel's select says of a UNIX socket (no
 * socket of ours in the set: the kernel's select itself) is the answer. */
static int close_under_select(int a, const char *when, int want)
{
	struct closer c = { a, 0 };
	fd_set rd, ex;

	FD_ZERO(&rd);
	FD_SET(a, &rd);
	FD_ZERO(&ex);
	FD_SET(a, &ex);
	ASSERT_EQ(pthread_create(&c.t, NULL, closer_main, &c), 0);
	errno = 0;
	int rc = select(a + 1, &rd, NULL, &ex, &(struct timeval){ 0, 300000 });
	int err = errno;
	ASSERT_EQ(pthread_join(c.t, NULL), 0);
	int got = rc < 0 ? -err : rc * 4 + FD_ISSET(a, &rd) * 2 + FD_ISSET(a, &ex);
	ASSERT_MSG(want == INT_MIN || got == want,
		   "%s: select %d (%s), read %d, except %d; the kernel's: %d", when, rc,
		   strerror(err), FD_ISSET(a, &rd), FD_ISSET(a, &ex), want);
	return got;
}

static void case_close_under_poll(void)
{
	int a, b;

	ts_pair(&a, &b);
	close_under_poll(a, b, "on TCP");
	ts_moved_pair(&a, &b);
	close_under_poll(a, b, "moved");
	int sv[2];
	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	int want = close_under_select(sv[0], "UNIX", INT_MIN);
	ASSERT_SYS(close(sv[1]));
	ts_pair(&a, &b);
	close_under_select(a, "on TCP", want);
	ASSERT_SYS(close(b));
	ts_moved_pair(&a, &b);
	close_under_select(a, "moved", want);
	ASSERT_SYS(close(b));
}

/* The peer that will be killed: leaves our bytes unread (arg NULL) or
 * reads them, tells us with one byte 'k', then waits for SIGKILL. */
static void victim_peer(int fd, void *arg)
{
	ts_make_accelerated_follow(fd);
	if (arg)
		ts_recv_stream(fd, shim_seed(6), 0, 1000, ts_ms(3000));
	else
		ts_wait_arrived(fd, 1000, ts_ms(3000));
	ts_write_all(fd, "k", 1, ts_ms(2000));
	for (;;)
		pause();
}

/* The peer dies with data unread: TCP's reset.  poll and epoll report
 * HUP and ERR; select says readable and writable. */
static void case_hup_killed(void)
{
	struct shim_peer p;
	char k;

	ts_peer_start(&p, victim_peer, NULL);
	ts_make_accelerated_lead(p.fd);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev));
	ts_send_stream(p.fd, shim_seed(6), 0, 1000, ts_ms(2000));
	ts_read_exact(p.fd, &k, 1, ts_ms(3000));
	ASSERT_UEQ(epoll_events_of(ep, 0), 0);
	ASSERT_SYS(kill(p.pid, SIGKILL));
	ASSERT(WIFSIGNALED(test_wait(p.pid, 5)));
	short re = poll_until(p.fd, POLLIN | POLLOUT | POLLRDHUP, POLLHUP, ts_ms(2000));
	ASSERT_EQ(re, POLLIN | POLLOUT | POLLRDHUP | POLLHUP | POLLERR);
	ASSERT_UEQ(epoll_events_of(ep, ts_ms(1000)), EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
	fd_set rd, wr;
	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_SET(p.fd, &rd);
	FD_SET(p.fd, &wr);
	ASSERT_EQ(select(p.fd + 1, &rd, &wr, NULL, &(struct timeval){ 0, 0 }), 2);
	ASSERT_FAILS(recv(p.fd, &k, 1, MSG_DONTWAIT), ECONNRESET);
	close(ep);
	ASSERT_SYS(close(p.fd));
}

/* The peer dies having read all we sent: TCP's FIN.  poll and epoll
 * report the end of the stream, writable, and no error until a send meets
 * the reset (the ring's end said POLLERR: a helper's case, 12-04). */
static void case_hup_killed_clean(void)
{
	struct shim_peer p;
	char k;

	ts_peer_start(&p, victim_peer, "read");
	ts_make_accelerated_lead(p.fd);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev));
	ts_send_stream(p.fd, shim_seed(6), 0, 1000, ts_ms(2000));
	ts_read_exact(p.fd, &k, 1, ts_ms(3000));
	ASSERT_SYS(kill(p.pid, SIGKILL));
	ASSERT(WIFSIGNALED(test_wait(p.pid, 5)));
	poll_until(p.fd, POLLIN | POLLOUT | POLLRDHUP, POLLRDHUP, ts_ms(2000));
	test_sleep_ms(100);
	ASSERT_EQ(ts_wait_fd(p.fd, POLLIN | POLLOUT | POLLRDHUP, 0), POLLIN | POLLOUT | POLLRDHUP);
	ASSERT_UEQ(epoll_events_of(ep, ts_ms(1000)), EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	ASSERT_EQ(recv(p.fd, &k, 1, MSG_DONTWAIT), 0);
	close(ep);
	ASSERT_SYS(close(p.fd));
}

/* Our own shutdown with the peer's bytes unread: TCP's poll says what its
 * own shutdown bits say, data or not: SHUT_RD reads as the stream's end
 * (POLLRDHUP), SHUT_RDWR hangs up (POLLHUP) too.  A moved socket said
 * neither while bytes waited (found by tests/diff_shim.c). */
static void own_shut_poll(int how, short want)
{
	int a, b;

	ts_moved_pair(&a, &b);
	ts_write_all(b, "xy", 2, ts_ms(2000));
	ts_wait_arrived(a, 2, ts_ms(2000));
	ASSERT_SYS(shutdown(a, how));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u64 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_EQ(ts_wait_fd(a, POLLIN | POLLOUT | POLLRDHUP, 0), want);
	ASSERT_UEQ(epoll_events_of(ep, 0), (uint32_t)want);
	char c[2];
	ASSERT_EQ(recv(a, c, 2, 0), 2);
	ASSERT_SYS(close(ep));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_hup_own_shutdown(void)
{
	own_shut_poll(SHUT_RD, POLLIN | POLLOUT | POLLRDHUP);
	own_shut_poll(SHUT_RDWR, POLLIN | POLLOUT | POLLRDHUP | POLLHUP);
}

/* --- Waits across the move ---------------------------------------------------- */

struct waiter {
	int fd, kind; /* 0: poll, 1: select, 2: blocking read */
	int rc;
	short revents;
	char got;
	ssize_t r;
	int err;
	double at;
	_Atomic int done;
	pthread_t t;
};

/* One-way data calls at each end: more than SHUNT_UPGRADE_CALLS (16) and
 * the steps of a meeting (at calls n, n+2, n+4, n+8 ...). */
#define MOVE_ROUNDS 200

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;

	if (w->kind == 0) {
		struct pollfd p = { w->fd, POLLIN, 0 };
		w->rc = poll(&p, 1, ts_ms(8000));
		w->revents = p.revents;
	} else if (w->kind == 1) {
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(w->fd, &rd);
		w->rc = select(w->fd + 1, &rd, NULL, NULL, &(struct timeval){ ts_ms(8000) / 1000, 0 });
		w->revents = w->rc > 0 && FD_ISSET(w->fd, &rd) ? POLLIN : 0;
	}
	if (w->kind < 2)
		w->at = test_now();
	errno = 0;
	/* What poll promised: a read that does not block. */
	w->r = w->kind == 2 ? read(w->fd, &w->got, 1) : recv(w->fd, &w->got, 1, MSG_DONTWAIT);
	w->err = errno;
	if (w->kind == 2)
		w->at = test_now();
	atomic_store(&w->done, 1);
	return NULL;
}

/* Fail if the waiter returned already (joined first: no thread left). */
static void waiter_check(struct waiter *w, const char *name, const char *when)
{
	if (!atomic_load(&w->done))
		return;
	ASSERT_EQ(pthread_join(w->t, NULL), 0);
	TEST_FAIL_MSG("%s returned (rc %d, revents 0x%x, then the read gave %zd: %s 0x%02x) %s, "
		      "with nothing sent", name, w->rc, w->revents, w->r,
		      w->r < 0 ? test_errname(w->err) : "byte", (unsigned char)w->got, when);
}

/* A thread waits for data on a connection still on TCP; other threads make
 * it move meanwhile (a's sends, b's reads); then, 100 ms later, b sends
 * one byte.  The waiter wakes for that byte, not before (poll's POLLIN is
 * a promise that a read will not block), and reads it. */
static void across_move(int kind)
{
	static const char *const names[3] = { "poll", "select", "a blocking read" };
	int a, b;
	struct waiter w = { .kind = kind, .r = -2 };
	char c = 'm';

	ts_pair(&a, &b);
	w.fd = a;
	ASSERT_EQ(pthread_create(&w.t, NULL, waiter_main, &w), 0);
	test_sleep_ms(50);
	waiter_check(&w, names[kind], "at once");
	/* One way only, a to b (a's end cannot read: the waiter is there):
	 * enough data calls at both ends for the two to meet and a's sends to
	 * go by the ring.  b's own sends switch with its first one below. */
	for (int i = 0; i < MOVE_ROUNDS; i++) {
		ts_write_all(a, &c, 1, ts_ms(2000));
		ts_read_exact(b, &c, 1, ts_ms(2000));
		waiter_check(&w, names[kind], "while the connection moved");
	}
	test_sleep_ms(100);
	waiter_check(&w, names[kind], "after the move");
	double sent = test_now();
	ts_write_all(b, "x", 1, ts_ms(2000));
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	while (!atomic_load(&w.done) && test_now_ns() < end)
		test_sleep_ms(1);
	ASSERT_MSG(atomic_load(&w.done), "%s still waits 2 s after b sent a byte", names[kind]);
	ASSERT_EQ(pthread_join(w.t, NULL), 0);
	ASSERT_MSG(w.r == 1 && w.got == 'x', "after %s: read returned %zd (%s), byte 0x%02x",
		   names[kind], w.r, w.r < 0 ? test_errname(w.err) : "-", (unsigned char)w.got);
	test_log("%s woke %.1f ms after the byte was sent", names[kind], (w.at - sent) * 1e3);
	if (kind < 2)
		ASSERT_EQ(w.revents, POLLIN);
	/* Both ways on, and the connection ends up moved at both ends. */
	ts_make_accelerated(a, b);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_poll_across_move(void)
{
	across_move(0);
}

static void case_select_across_move(void)
{
	across_move(1);
}

static void case_read_across_move(void)
{
	across_move(2);
}


/* select() on a moved socket numbered past FD_SETSIZE: Linux takes sets as
 * large as nfds needs, and a program that raised RLIMIT_NOFILE passes them.
 * The wrapper looked at the first 1024 fds only and left the rest to the
 * kernel, which never saw the ring's data: a 2 s timeout with 5 bytes
 * waiting. */
static void case_select_past_setsize(void)
{
	enum { BIG = 1500, WORDS = 2048 / 64 };
	struct rlimit rl;
	int a, b;
	char buf[8];

	ASSERT_SYS(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_cur <= BIG) {
		rl.rlim_cur = rl.rlim_max > 2048 ? 2048 : rl.rlim_max;
		ASSERT_SYS(setrlimit(RLIMIT_NOFILE, &rl));
	}
	ts_moved_pair(&a, &b);
	ASSERT_EQ(dup2(b, BIG), BIG);
	ASSERT_EQ(send(a, "hello", 5, 0), 5);
	uint64_t rd[WORDS] = { 0 }, wr[WORDS] = { 0 };
	rd[BIG / 64] = wr[BIG / 64] = 1ULL << (BIG % 64);
	struct timeval tv = { 2, 0 };
	ASSERT_EQ(select(BIG + 1, (fd_set *)rd, (fd_set *)wr, NULL, &tv), 2);
	ASSERT(rd[BIG / 64] & (1ULL << (BIG % 64)));
	ASSERT_EQ(recv(BIG, buf, sizeof(buf), 0), 5);
	memset(rd, 0, sizeof(rd));
	rd[BIG / 64] = 1ULL << (BIG % 64);
	tv = (struct timeval){ 0, 50000 };
	ASSERT_EQ(select(BIG + 1, (fd_set *)rd, NULL, NULL, &tv), 0);
	ASSERT_UEQ(rd[BIG / 64], 0);
	ASSERT_SYS(close(BIG));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* select() with a bit set at nfds (a program that passes its highest fd,
 * not one more): the kernel writes the set's words back whole, that bit
 * zero.  The wrapper left it set: the program read the fd as ready and
 * blocked in read() (a helper's off-by-one program, killed by its alarm). */
static void case_select_bits_past_nfds(void)
{
	int a, b;
	char c;

	ts_moved_pair(&a, &b);
	int lo = a < b ? a : b, hi = a < b ? b : a;
	ASSERT_EQ(send(hi, "x", 1, 0), 1); /* lo readable, hi not */
	ts_wait_fd(lo, POLLIN, ts_ms(2000));
	fd_set rd, wr;
	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_SET(lo, &rd);
	FD_SET(hi, &rd);
	FD_SET(hi, &wr);
	ASSERT_EQ(select(lo + 1, &rd, &wr, NULL, &(struct timeval){ 1, 0 }), 1);
	ASSERT_MSG(FD_ISSET(lo, &rd), "fd %d, ready, not in the read set", lo);
	ASSERT_MSG(!FD_ISSET(hi, &rd) && !FD_ISSET(hi, &wr), "fd %d, at nfds, left set", hi);
	ASSERT_EQ(recv(lo, &c, 1, 0), 1);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* --- Doorbells ------------------------------------------------------------------ */

/* Bytes the kernel sent on fd's TCP socket: after the move, doorbells. */
static uint64_t tcp_sent(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	ASSERT_SYS(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len));
	return ti.tcpi_bytes_sent;
}

/* A busy event loop never sleeps, so its peer owes it no doorbell (a
 * system call each): not for a read told EAGAIN, nor for a socket an
 * epoll_wait looked at and found empty while another one was ready. */
static void case_busy_no_bells(void)
{
	int a[2], b[2];
	char x;

	for (int i = 0; i < 2; i++) {
		ts_moved_pair(&a[i], &b[i]);
		ASSERT_SYS(fcntl(b[i], F_SETFL, O_NONBLOCK));
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, b[i], &ev));
	}
	uint64_t before = tcp_sent(a[0]) + tcp_sent(a[1]);
	for (int n = 0; n < 1000; n++) {
		int i = n % 2;
		ASSERT_FAILS(recv(b[i], &x, 1, 0), EAGAIN);
		ASSERT_EQ(send(a[i], "y", 1, 0), 1);
		struct epoll_event ev[2];
		ASSERT_EQ(epoll_wait(ep, ev, 2, ts_ms(2000)), 1);
		ASSERT_UEQ(ev[0].data.u32, (uint32_t)i);
		ASSERT_EQ(recv(b[i], &x, 1, 0), 1);
	}
	uint64_t bells = tcp_sent(a[0]) + tcp_sent(a[1]) - before;
	test_log("1000 messages, %llu doorbells", (unsigned long long)bells);
	ASSERT(bells <= 4);
	close(ep);
	for (int i = 0; i < 2; i++) {
		ASSERT_SYS(close(a[i]));
		ASSERT_SYS(close(b[i]));
	}
}

/* A counter of this thread's entries into one system call (a tracepoint),
 * or -1 where the kernel does not let us count them. */
static int syscall_counter(const char *name)
{
	static const char *const dirs[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	char path[256];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/events/syscalls/sys_enter_%s/id", dirs[i], name);
		FILE *f = fopen(path, "r");
		unsigned long long id;
		if (!f)
			continue;
		int got = fscanf(f, "%llu", &id) == 1;
		fclose(f);
		if (!got)
			continue;
		struct perf_event_attr a = { .type = PERF_TYPE_TRACEPOINT, .size = sizeof(a),
					     .config = id, .disabled = 1 };
		int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

static uint64_t counted(int fd)
{
	uint64_t n = 0;

	ASSERT_EQ(read(fd, &n, sizeof(n)), (ssize_t)sizeof(n));
	return n;
}

/* N messages to a reader asleep in epoll_wait, counting the reader's
 * entries into one system call. */
static uint64_t sleeping_reader(const char *call, int n)
{
	int a, b, cnt = syscall_counter(call);
	char x;

	if (cnt < 0)
		test_skip("no syscall tracepoint to count %s with here", call);
	ts_moved_pair(&a, &b);
	ASSERT_SYS(fcntl(b, F_SETFL, O_NONBLOCK));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev));
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_ENABLE, 0));
	for (int i = 0; i < n; i++) {
		struct epoll_event got[2];
		ASSERT_EQ(epoll_wait(ep, got, 2, 1), 0); /* sleeps armed */
		ASSERT_EQ(send(a, "y", 1, 0), 1);
		ASSERT_EQ(epoll_wait(ep, got, 2, ts_ms(2000)), 1);
		ASSERT_EQ(recv(b, &x, 1, 0), 1);
	}
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_DISABLE, 0));
	uint64_t calls = counted(cnt);
	test_log("%d messages to a reader asleep in epoll_wait: %llu %s calls", n,
		 (unsigned long long)calls, call);
	close(cnt);
	close(ep);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	return calls;
}

/* Each message rings, and the wait that finds it in the ring also takes
 * the doorbell's event from the kernel, reported already in that wait.
 * Its next scan used to ask the kernel again with a ppoll (one more
 * system call per message than TCP: haproxy, wrk); the event's bits say
 * enough. */
static void case_bell_event_no_ppoll(void)
{
	ASSERT(sleeping_reader("ppoll", 200) <= 20);
}

/* The drain of each message's doorbell peeked, then took: two reads of
 * the stream where TCP's reader makes one. */
static void case_bell_one_read(void)
{
	ASSERT(sleeping_reader("recvfrom", 200) <= 240);
}

struct pacer {
	int fd, n;
};

/* One byte every 3 ms, then its answer. */
static void *pace(void *arg)
{
	struct pacer *p = arg;
	char x = 'y';

	for (int i = 0; i < p->n; i++) {
		test_sleep_ms(3);
		if (send(p->fd, &x, 1, 0) != 1 || recv(p->fd, &x, 1, MSG_WAITALL) != 1)
			break;
	}
	return NULL;
}

/* A server asleep in epoll_wait answers each request as it wakes, some
 * 3 ms apart: the event that woke it says its peer sent no FIN, so its
 * answer need not ask the kernel whether the peer lives (a getsockopt
 * per answer before: a proxy with 50 connections, each sending every 2
 * to 3 ms, paid one per message). */
/* fcntl(F_GETFL) on a tracked socket, as every F_SETFL follows one
 * (wrk, libuv, nginx), and F_SETFL on a socket not yet connected (wrk's):
 * only the commands that act pay the vfork check's getpid() (a short
 * connection made three, one more than it needs; then wrk's two, one
 * more). */
static void case_getfl_no_getpid(void)
{
	int c, s, cnt = syscall_counter("getpid");
	enum { N = 100 };

	if (cnt < 0)
		test_skip("no syscall tracepoint to count getpid with here");
	ts_pair(&c, &s);
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_ENABLE, 0));
	for (int i = 0; i < N; i++)
		ASSERT_SYS(fcntl(c, F_GETFL));
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_DISABLE, 0));
	uint64_t n = counted(cnt);
	test_log("%d fcntl(F_GETFL) on a tracked socket: %llu getpid calls", N,
		 (unsigned long long)n);
	ASSERT_MSG(n == 0, "%llu getpid calls for %d F_GETFL", (unsigned long long)n, N);
	/* wrk's, before its connect: nothing of ours to change on it. */
	int fresh = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_SYS(fresh);
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_RESET, 0));
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_ENABLE, 0));
	for (int i = 0; i < N; i++)
		ASSERT_SYS(fcntl(fresh, F_SETFL, i % 2 ? O_NONBLOCK : 0));
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_DISABLE, 0));
	n = counted(cnt);
	test_log("%d fcntl(F_SETFL) on a socket not connected: %llu getpid calls", N,
		 (unsigned long long)n);
	ASSERT_MSG(n == 0, "%llu getpid calls for %d F_SETFL", (unsigned long long)n, N);
	ASSERT_SYS(close(fresh));
	ASSERT_SYS(close(cnt));
	ASSERT_SYS(close(c));
	ASSERT_SYS(close(s));
}

static void case_answer_no_look(void)
{
	enum { N = 100 };
	int a, b, cnt = syscall_counter("getsockopt");
	pthread_t th;
	char x;

	if (cnt < 0)
		test_skip("no syscall tracepoint to count getsockopt with here");
	ts_moved_pair(&a, &b);
	ts_set_nonblock(b, 1);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 1 };
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev));
	struct pacer p = { a, N };
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_ENABLE, 0));
	ASSERT(pthread_create(&th, NULL, pace, &p) == 0);
	for (int i = 0; i < N; i++) {
		struct epoll_event got;
		ASSERT_EQ(epoll_wait(ep, &got, 1, ts_ms(2000)), 1);
		ASSERT_EQ(recv(b, &x, 1, 0), 1);
		ASSERT_EQ(send(b, &x, 1, 0), 1);
	}
	ASSERT(pthread_join(th, NULL) == 0);
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_DISABLE, 0));
	uint64_t looks = counted(cnt);
	test_log("%d answers on waking, 3 ms apart: %llu getsockopt calls", N,
		 (unsigned long long)looks);
	ASSERT(looks <= N / 10);
	close(cnt);
	close(ep);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* One thread asleep in poll() on its own connection, another's round trips
 * on a second one, whose reads sleep and take their doorbells: those are
 * no news for the poller, whose wait no kick may wake.  Every sleeper was
 * kicked at every doorbell (an eventfd write each): four threads that each
 * polled their own connection ran at 0.6x TCP's round trips (a helper's
 * finding, mariadb's sysbench at 0.5x). */
struct kick_idler {
	int fd;
	_Atomic int asleep;
};

static void *idle_poller(void *arg)
{
	struct kick_idler *k = arg;
	struct pollfd p = { .fd = k->fd, .events = POLLIN };
	char x;

	atomic_store(&k->asleep, 1);
	ASSERT_EQ(poll(&p, 1, ts_ms(10000)), 1);
	ASSERT_EQ(recv(k->fd, &x, 1, 0), 1);
	return NULL;
}

static void *late_echo(void *arg)
{
	int fd = *(int *)arg;
	char x;

	for (;;) {
		ssize_t n = recv(fd, &x, 1, 0);
		if (n <= 0)
			return NULL;
		usleep(300); /* past the reader's spin: it sleeps on its doorbell */
		ASSERT_EQ(send(fd, &x, 1, 0), 1);
	}
}

static void case_kick_own_connection(void)
{
	int a, b, c, d, cnt = syscall_counter("write");
	pthread_t idler, echo;
	struct kick_idler k = { 0 };
	char x = 'k';

	if (cnt < 0)
		test_skip("no syscall tracepoint to count write with here");
	ts_moved_pair(&a, &b);
	ts_moved_pair(&c, &d);
	k.fd = d;
	ASSERT_EQ(pthread_create(&idler, NULL, idle_poller, &k), 0);
	ASSERT_EQ(pthread_create(&echo, NULL, late_echo, &b), 0);
	while (!atomic_load(&k.asleep))
		usleep(1000);
	usleep(20000);
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_ENABLE, 0));
	for (int i = 0; i < 300; i++) {
		ASSERT_EQ(send(a, &x, 1, 0), 1);
		ASSERT_EQ(recv(a, &x, 1, 0), 1);
	}
	ASSERT_SYS(ioctl(cnt, PERF_EVENT_IOC_DISABLE, 0));
	uint64_t kicks = counted(cnt);
	test_log("300 round trips whose reads slept: %llu writes (kicks) by the reader",
		 (unsigned long long)kicks);
	ASSERT_MSG(kicks < 30, "%llu kicks for a poll on another connection",
		   (unsigned long long)kicks);
	ASSERT_EQ(send(c, "q", 1, 0), 1); /* the poller still hears its own */
	ASSERT_EQ(pthread_join(idler, NULL), 0);
	ASSERT_SYS(shutdown(a, SHUT_WR));
	ASSERT_EQ(pthread_join(echo, NULL), 0);
	close(cnt);
	for (int fd = 0; fd < 4; fd++)
		ASSERT_SYS(close((int[]){ a, b, c, d }[fd]));
}

/* Arguments the kernel refuses get its error, with a moved socket in the
 * set as on TCP: invalid timeouts EINVAL (ours waited none, or for ever),
 * epoll_wait's array in the first page EFAULT (ours wrote to it: SIGSEGV),
 * its maxevents past INT_MAX / 12 EINVAL (a helper's reproducers). */
static void expect_err(int rc, int want, const char *what, const char *when)
{
	ASSERT_MSG(rc == -1 && errno == want, "%s: %s said %d (%s), TCP's %s", when, what, rc,
		   rc < 0 ? test_errname(errno) : "", test_errname(want));
}

static void bad_args_on(int a, int b, const char *when)
{
	struct pollfd p = { .fd = a, .events = POLLIN };
	const struct timespec bad[] = { { 0, -1 }, { -1, 0 }, { 0, 1000000000 } };
	fd_set r;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN }, out[1];
	struct epoll_event *volatile none = NULL;

	ASSERT_EQ(send(b, "x", 1, 0), 1);
	ASSERT_EQ(poll(&p, 1, 2000), 1);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		expect_err(ppoll(&p, 1, &bad[i], NULL), EINVAL, "ppoll", when);
		FD_ZERO(&r);
		FD_SET(a, &r);
		expect_err(pselect(a + 1, &r, NULL, NULL, &bad[i], NULL), EINVAL, "pselect", when);
	}
	FD_ZERO(&r);
	FD_SET(a, &r);
	struct timeval tv = { 0, -5 };
	expect_err(select(a + 1, &r, NULL, NULL, &tv), EINVAL, "select", when);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	expect_err(epoll_wait(ep, none, 1, 0), EFAULT, "epoll_wait(NULL)", when);
	volatile int huge = (int)(INT_MAX / sizeof(out[0])) + 1;
	expect_err(epoll_wait(ep, out, huge, 0), EINVAL,
		   "epoll_wait(huge maxevents)", when);
	ASSERT_EQ(epoll_wait(ep, out, 1, 0), 1);
	close(ep);
}

static void case_bad_args(void)
{
	ts_tcp_then_moved(bad_args_on);
}

static const struct shim_case g_cases[] = {
	{ "select_bits_past_nfds", case_select_bits_past_nfds },
	{ "wait_calls", case_wait_calls },
	{ "wait_array", case_wait_array },
	{ "wait_room", case_wait_room },
	{ "poll_room_sleeps", case_poll_room_sleeps },
	{ "poll_room_unheard_sleeps", case_poll_room_unheard_sleeps },
	{ "epoll_calls", case_epoll_calls },
	{ "epoll_mixed", case_epoll_mixed },
	{ "hup_close", case_hup_close },
	{ "hup_killed", case_hup_killed },
	{ "hup_killed_clean", case_hup_killed_clean },
	{ "hup_own_shutdown", case_hup_own_shutdown },
	{ "close_under_poll", case_close_under_poll },
	{ "busy_no_bells", case_busy_no_bells },
	{ "bell_event_no_ppoll", case_bell_event_no_ppoll },
	{ "bell_one_read", case_bell_one_read },
	{ "answer_no_look", case_answer_no_look },
	{ "getfl_no_getpid", case_getfl_no_getpid },
	{ "poll_across_move", case_poll_across_move },
	{ "select_across_move", case_select_across_move },
	{ "read_across_move", case_read_across_move },
	{ "select_past_setsize", case_select_past_setsize },
	{ "kick_own_connection", case_kick_own_connection },
	{ "bad_args", case_bad_args },
};

int main(void)
{
	return ts_main("t_shim_poll", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
}
