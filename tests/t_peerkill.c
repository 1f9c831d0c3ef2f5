/*
 * t_peerkill.c - the peer dies (SIGKILL) while this side waits on it.
 *
 * A killed process cannot say goodbye: its state word stays "open" and its
 * indices stop.  This side must still learn of the death within a poll()
 * (the liveness socket) and return 0 or -ECONNRESET/-EPIPE, within 1 s of
 * the kill, from every kind of wait:
 *   recv      blocking shunt_recv on an empty ring
 *   peek      blocking shunt_recv_peek on an empty ring
 *   send      blocking shunt_send on a full ring
 *   reserve   blocking shunt_send_reserve on a full ring
 *   poll      an event loop: -EAGAIN, then poll() on shunt_fd()
 * and data the peer sent before it died can still be read in full.
 * Each case runs with this side accepting and with this side connecting.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shunt.h>

#include "testlib.h"

#define RING   65536u
#define PRESENT 100000u /* bytes the peer sends before dying (> RING) */
#define MAX_DELAY 1.0

enum role { WE_ACCEPT, WE_CONNECT };
enum wait_kind { W_RECV, W_PEEK, W_SEND, W_RESERVE, W_POLL, W_LEFTOVER };
static const char *wait_names[] = { "recv", "peek", "send", "reserve", "poll", "leftover" };

struct peer_args {
	char name[64];
	enum role role;     /* our role; the peer takes the other */
	size_t send_bytes;  /* what the peer sends before waiting to die */
	uint64_t seed;
	int ready_fd;       /* the peer writes one byte per step here */
};

/* The peer: connect or accept, send, say so, then wait to be killed. */
static void peer_main(void *arg)
{
	struct peer_args *a = arg;
	struct shunt_conn *c;
	char one = 1;

	if (a->role == WE_ACCEPT) {
		ASSERT_OK(shunt_connect(a->name, &(struct shunt_opts){ .ring_size = RING }, &c));
	} else {
		struct shunt_listener *l;
		ASSERT_OK(shunt_listen(a->name, &l));
		ASSERT_EQ(write(a->ready_fd, &one, 1), 1); /* listening */
		ASSERT_OK(shunt_accept(l, &c, 0));
	}
	/* Send what we can without blocking (the rest would need a reader;
	 * a non-blocking loop with a pause keeps the peer simple). */
	char *buf = malloc(a->send_bytes + 1);
	ASSERT_NOT_NULL(buf);
	test_stream_fill(a->seed, 0, buf, a->send_bytes);
	size_t done = 0;
	int told = 0;
	while (done < a->send_bytes) {
		ssize_t k = shunt_send(c, buf + done, a->send_bytes - done, SHUNT_NONBLOCK);
		if (k == -EAGAIN) {
			if (!told) { /* the ring is full: the other side may read */
				ASSERT_EQ(write(a->ready_fd, &one, 1), 1);
				told = 1;
			}
			test_sleep_ms(1);
			continue;
		}
		ASSERT_OK(k);
		done += (size_t)k;
	}
	if (!told)
		ASSERT_EQ(write(a->ready_fd, &one, 1), 1);
	ASSERT_EQ(write(a->ready_fd, &one, 1), 1); /* all sent */
	for (;;)
		pause();
}

struct killer {
	pthread_t th;
	pid_t pid;
	unsigned delay_ms;
	_Atomic uint64_t killed_at;
};

static void *killer_main(void *arg)
{
	struct killer *k = arg;

	test_sleep_ms(k->delay_ms);
	atomic_store(&k->killed_at, test_now_ns());
	kill(k->pid, SIGKILL);
	return NULL;
}

static void killer_start(struct killer *k, pid_t pid, unsigned delay_ms)
{
	k->pid = pid;
	k->delay_ms = delay_ms;
	atomic_store(&k->killed_at, 0);
	ASSERT_EQ(pthread_create(&k->th, NULL, killer_main, k), 0);
}

static double killer_join(struct killer *k)
{
	uint64_t now = test_now_ns();
	ASSERT_EQ(pthread_join(k->th, NULL), 0);
	uint64_t at = atomic_load(&k->killed_at);
	ASSERT_MSG(at != 0 && at <= now, "the call returned before the peer was killed");
	return (double)(now - at) / 1e9;
}

static void read_byte(int fd)
{
	char b;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	ASSERT_MSG(poll(&p, 1, 10000) == 1, "the peer did not report within 10 s");
	ASSERT_EQ(read(fd, &b, 1), 1);
}

static void check_end(ssize_t r, const char *what)
{
	ASSERT_MSG(r == 0 || r == -ECONNRESET || r == -EPIPE,
		   "%s after the peer's death returned %zd (%s), want 0, -ECONNRESET or -EPIPE",
		   what, r, r < 0 ? test_errname((int)-r) : "bytes");
}

static int poll_fd(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc = poll(&p, 1, ms);

	ASSERT_SYS(rc);
	return rc;
}

/* One case: set up, wait in the chosen way, have the peer killed. */
static double run_case(enum role role, enum wait_kind w, int spin)
{
	struct peer_args a = { .role = role, .seed = test_seed() ^ (uint64_t)(w * 31 + role) };
	struct shunt_listener *l = NULL;
	struct shunt_conn *c;
	struct killer k;
	int pfd[2];
	double delay = 0;

	/* The peer sends more than a ring for the leftover case (so we read
	 * while it still lives, then the rest after), a little otherwise. */
	a.send_bytes = w == W_LEFTOVER ? PRESENT : 1000;
	test_name_unique(a.name, sizeof(a.name));
	ASSERT_SYS(pipe(pfd));
	a.ready_fd = pfd[1];
	if (role == WE_ACCEPT)
		ASSERT_OK(shunt_listen(a.name, &l));
	pid_t pid = test_fork(peer_main, &a);
	close(pfd[1]);
	if (role == WE_ACCEPT) {
		ASSERT_OK(shunt_accept(l, &c, 0));
	} else {
		read_byte(pfd[0]); /* listening */
		ASSERT_OK(shunt_connect(a.name, &(struct shunt_opts){
			.ring_size = RING, .spin_us = spin ? 50 : -1 }, &c));
	}
	ASSERT_OK(shunt_set_spin(c, spin ? 50 : 0));
	read_byte(pfd[0]); /* ring full, or all sent */

	char *buf = malloc(RING * 2);
	ASSERT_NOT_NULL(buf);
	memset(buf, 0x5a, RING * 2);
	ssize_t r;
	void *wp;
	const void *rp;

	if (w != W_LEFTOVER) {
		/* Take what it sent first: our receive ring is empty after. */
		char *tmp = malloc(a.send_bytes);
		ASSERT_NOT_NULL(tmp);
		test_recv_exact(c, tmp, a.send_bytes);
		ASSERT_EQ(test_stream_check(a.seed, 0, tmp, a.send_bytes), (size_t)-1);
		free(tmp);
		read_byte(pfd[0]); /* all sent */
	}

	switch (w) {
	case W_LEFTOVER: {
		/* Read part of it while the peer lives, so that it can send the
		 * rest, then kill it and read what it left in the ring. */
		size_t early = 40000; /* > PRESENT - RING: lets the peer finish */
		char *tmp = malloc(early);
		ASSERT_NOT_NULL(tmp);
		test_recv_exact(c, tmp, early);
		ASSERT_EQ(test_stream_check(a.seed, 0, tmp, early), (size_t)-1);
		free(tmp);
		read_byte(pfd[0]); /* all sent */
		kill(pid, SIGKILL);
		int st = test_wait(pid, 10);
		ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		pid = 0;
		/* Continue the stream from where we stopped: all of it is there
		 * (copying on the accepting side, zero-copy on the other). */
		size_t rest = a.send_bytes - early;
		ASSERT_EQ(shunt_readable(c), rest);
		if (role == WE_CONNECT) {
			size_t got = 0;
			while (got < rest) {
				r = shunt_recv_peek(c, &rp, 0);
				ASSERT_MSG(r > 0, "peek after death with %zu of %zu left: %zd",
					   rest - got, rest, r);
				ASSERT_ULE((size_t)r, rest - got);
				ASSERT_EQ(test_stream_check(a.seed, early + got, rp, (size_t)r),
					  (size_t)-1);
				ASSERT_OK(shunt_recv_release(c, (size_t)r));
				got += (size_t)r;
			}
		} else {
			char *all = malloc(rest);
			ASSERT_NOT_NULL(all);
			test_recv_exact(c, all, rest);
			ASSERT_EQ(test_stream_check(a.seed, early, all, rest), (size_t)-1);
			free(all);
		}
		double t0 = test_now();
		check_end(shunt_recv(c, buf, RING, 0), "recv at the end of a dead peer's data");
		check_end(shunt_recv(c, buf, RING, SHUNT_NONBLOCK), "non-blocking recv");
		check_end(shunt_recv_peek(c, &rp, 0), "peek");
		delay = test_now() - t0;
		r = shunt_send(c, "x", 1, 0);
		ASSERT_MSG(r == -ECONNRESET || r == -EPIPE, "send to a dead peer: %zd", r);
		break;
	}
	case W_POLL: {
		int fd = shunt_fd(c);
		ASSERT_OK(fd);
		ASSERT_ERR(shunt_recv(c, buf, RING, SHUNT_NONBLOCK), -EAGAIN);
		killer_start(&k, pid, 150);
		/* Readiness is a hint: loop as an event loop does. */
		for (;;) {
			ASSERT_MSG(poll_fd(fd, 3000) == 1,
				   "shunt_fd not readable 3 s after the peer's death");
			r = shunt_recv(c, buf, RING, SHUNT_NONBLOCK);
			if (r != -EAGAIN)
				break;
			ASSERT_MSG(atomic_load(&k.killed_at) != 0, "shunt_fd readable, but nothing "
				   "happened: a spurious wake-up");
		}
		delay = killer_join(&k);
		check_end(r, wait_names[w]);
		check_end(shunt_recv(c, buf, RING, 0), "a second recv");
		break;
	}
	case W_RECV:
	case W_PEEK:
		killer_start(&k, pid, 150);
		if (w == W_RECV)
			r = shunt_recv(c, buf, RING, 0);
		else
			r = shunt_recv_peek(c, &rp, 0);
		delay = killer_join(&k);
		check_end(r, wait_names[w]);
		/* And it stays ended. */
		check_end(shunt_recv(c, buf, RING, 0), "a second recv");
		break;
	case W_SEND:
	case W_RESERVE:
		/* Fill our sending ring: the peer never reads. */
		for (;;) {
			r = shunt_send(c, buf, RING * 2, SHUNT_NONBLOCK);
			if (r == -EAGAIN)
				break;
			ASSERT_OK(r);
		}
		killer_start(&k, pid, 150);
		if (w == W_SEND)
			r = shunt_send(c, buf, RING, 0);
		else
			r = shunt_send_reserve(c, &wp, RING / 2, 0);
		delay = killer_join(&k);
		ASSERT_MSG(r == -ECONNRESET || r == -EPIPE,
			   "%s on a full ring after the peer's death: %zd (%s)", wait_names[w], r,
			   r < 0 ? test_errname((int)-r) : "bytes");
		r = shunt_send(c, "x", 1, SHUNT_NONBLOCK);
		ASSERT_MSG(r == -ECONNRESET || r == -EPIPE, "a second send: %zd", r);
		break;
	}

	if (pid) {
		int st = test_wait(pid, 10);
		ASSERT_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "peer did not die by SIGKILL");
	}
	ASSERT_LT(delay, MAX_DELAY);
	free(buf);
	shunt_close(c);
	if (l)
		shunt_listener_close(l);
	close(pfd[0]);
	return delay;
}

int main(void)
{
	test_init("t_peerkill");
	test_use_private_dir();
	test_watchdog(test_sanitized() ? 110 : 60);

	for (int w = W_RECV; w <= W_LEFTOVER; w++) {
		double worst = 0;
		for (int role = WE_ACCEPT; role <= WE_CONNECT; role++) {
			for (int spin = 0; spin <= 1; spin++) {
				double d = run_case((enum role)role, (enum wait_kind)w, spin);
				if (d > worst)
					worst = d;
			}
		}
		test_log("%-8s: returned within %.1f ms of the kill (worst of 4: accept/connect "
			 "side, spin on/off)", wait_names[w], worst * 1e3);
	}
	test_log("pass");
	return TEST_PASS;
}
