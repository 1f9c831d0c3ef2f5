/*
 * t_hostile.c - a peer that scribbles over the shared segment.
 *
 * The segment is shared memory the peer can write at any time, so nothing
 * in it may be trusted.  A hostile process connects (or accepts) with the
 * public API, finds its own mapping of the segment's memfd in /proc, maps
 * it again and writes garbage over all of it - control page and data -
 * in rounds with different seeds and patterns, while a victim process uses
 * the connection with every call, blocking and non-blocking, copy and
 * zero-copy.  The victim must never crash, never hang, and every call must
 * return a sane size or one of 0 (end of stream), -EPROTO, -ECONNRESET,
 * -EPIPE, or -EAGAIN (non-blocking calls only).  The parent checks that
 * the victim exits normally (no signal) and finishes each round in bounded
 * time.
 *
 * The last rounds attack the doorbells instead.  The hostile peer speaks
 * the protocol itself: as the connecting end it hands over a WRITE
 * doorbell that is no UNIX stream socket (an eventfd at its maximum count,
 * pipes full or without a reader, a datagram socket), a socket full both
 * ways, or one whose other end is already closed; on either end it floods
 * both doorbells with bytes and passed fds, fills them, or half-closes
 * them.  The victim, which keeps SIGPIPE's default action, must neither
 * hang nor die nor leak a file descriptor; it may refuse the connection at
 * accept.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shunt.h>

#include "medium.h"
#include "native.h"
#include "seg.h"
#include "testlib.h"

#define ROUND_MS   250   /* how long a hostile peer scribbles */
#define SLACK_S    2.0   /* how long the victim may take after that */

enum pattern {
	P_ONES,       /* every byte 0xff */
	P_RANDOM,     /* every byte random, again and again */
	P_INDICES,    /* head/tail words: random and plausible lies */
	P_STATES,     /* state and wait words: random bits and valid states */
	P_SPOTS,      /* random bytes at random offsets */
	P_ZERO,       /* every byte 0 */
	P_LIES,       /* indices that look valid: rings always full/empty */
	P_RESIZE,     /* ftruncate (must fail: sealed), punch holes */
	P_DATA,       /* random bytes over the data areas only */
	P_MIX,        /* any of the above, at random */
	P_N
};
static const char *pattern_names[] = {
	"all-ones", "random", "indices", "states", "spots", "zero", "lies", "resize", "data",
	"mix",
};

enum ending { END_CLOSE, END_EXIT, END_KILL, END_N };
static const char *ending_names[] = { "close", "exit", "SIGKILL" };

/* Attacks on the doorbells (see the top of the file). */
enum evil {
	EVIL_NONE,
	EVIL_EVENTFD_FULL,   /* hand over: blocking eventfd at its maximum */
	EVIL_PIPE_FULL,      /* hand over: blocking pipe, full */
	EVIL_PIPE_NO_READER, /* hand over: pipe whose reader is closed */
	EVIL_DGRAM,          /* hand over: a UNIX datagram socket */
	EVIL_SOCK_NO_PEER,   /* hand over: stream socket, other end closed */
	EVIL_SOCK_FULL,      /* fill the doorbells both ways, make them blocking */
	EVIL_FLOOD,          /* flood both doorbells with bytes and fds */
	EVIL_HALF_CLOSE,     /* shutdown(SHUT_WR) both doorbells, stay alive */
	EVIL_N
};
static const char *evil_names[] = {
	"", "bell: eventfd at its maximum", "bell: full pipe", "bell: pipe without reader",
	"bell: datagram socket", "bell: socket without peer", "bells full both ways",
	"bells flooded with bytes and fds", "bells half-closed",
};

/* Attacks that only the connecting end can make (it picks the bell). */
static int evil_needs_connector(enum evil e)
{
	return e < EVIL_SOCK_FULL;
}

struct round {
	enum pattern pattern;
	enum evil evil;      /* a rendezvous attack instead of scribbling */
	enum ending ending;
	int victim_accepts;  /* else the victim connects, the hostile accepts */
	int early;           /* scribble before the victim accepts */
	size_t ring;
	uint64_t seed;
};

#define MAX_ROUNDS 64

struct plan {
	int n;
	_Atomic int *progress; /* rounds the victim has finished (shared) */
	struct round r[MAX_ROUNDS];
	char name_v[64];     /* the victim listens here */
	char name_h[64];     /* the hostile peers listen here */
	char name_e[64];     /* and the evil ones here, by hand (accept4, the hello read) */
};

static void make_plan(struct plan *p, uint64_t seed, int rounds)
{
	struct test_rng r;

	test_rng_seed(&r, seed);
	p->n = rounds;
	for (int i = 0; i < rounds; i++) {
		struct round *x = &p->r[i];
		x->pattern = (enum pattern)(i % P_N);
		x->ending = (enum ending)((i / P_N + i) % END_N);
		x->victim_accepts = (i / 2) % 2 == 0;
		x->ring = test_rng_next(&r) % 3 == 0 ? 65536 : 4096;
		x->seed = test_rng_next(&r);
		x->early = x->victim_accepts && test_rng_next(&r) % 4 == 0;
	}
	/* Then each doorbell attack, against an accepting victim and, where
	 * it makes sense, a connecting one. */
	for (int e = EVIL_EVENTFD_FULL; e < EVIL_N; e++) {
		for (int acc = 1; acc >= 0 && p->n < MAX_ROUNDS; acc--) {
			if (!acc && evil_needs_connector((enum evil)e))
				continue;
			struct round *x = &p->r[p->n++];
			memset(x, 0, sizeof(*x));
			x->evil = (enum evil)e;
			x->victim_accepts = acc;
			x->ring = 4096;
			x->ending = (enum ending)((e + acc) % END_N);
			x->seed = test_rng_next(&r);
		}
	}
}

/* --- The hostile peer --------------------------------------------------- */

/* Open the memfd behind our own mapping of the segment: first as an fd we
 * hold (/proc/self/fd), else through the mapping (/proc/self/map_files). */
static int find_segment(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char link[PATH_MAX], path[PATH_MAX + 64];
	int fd = -1;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)) && fd < 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strncmp(link, "/memfd:shunt", 12))
			fd = open(path, O_RDWR | O_CLOEXEC);
	}
	closedir(d);
	if (fd >= 0)
		return fd;

	FILE *f = fopen("/proc/self/maps", "r");
	char line[PATH_MAX + 128];
	ASSERT_NOT_NULL(f);
	while (fd < 0 && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, off;
		char *name = strchr(line, '/');
		if (!name || strncmp(name, "/memfd:shunt", 12))
			continue;
		if (sscanf(line, "%lx-%lx %*s %lx", &lo, &hi, &off) != 3 || off != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", lo, hi);
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	fclose(f);
	return fd;
}

struct target {
	uint8_t *base;  /* the whole file, mapped once */
	size_t len;
	uint64_t cap;
	struct shunt_ctl *ctl;
	int fd;
};

static uint64_t lie_index(struct test_rng *r, uint64_t near, uint64_t cap)
{
	switch (test_rng_next(r) % 6) {
	case 0: return test_rng_next(r);
	case 1: return near + test_rng_range(r, 0, 2 * cap) - cap;
	case 2: return near + test_rng_range(r, 0, 8) - 4;
	case 3: return near + cap;
	case 4: return ~near;
	default: return near ^ (1ull << test_rng_range(r, 0, 63));
	}
}

static void scribble(struct target *t, enum pattern p, struct test_rng *r)
{
	struct shunt_ctl *ctl = t->ctl;

	switch (p) {
	case P_ONES:
		memset(t->base, 0xff, t->len);
		break;
	case P_ZERO:
		memset(t->base, 0, t->len);
		break;
	case P_RANDOM:
		test_rng_fill(r, t->base, t->len);
		break;
	case P_INDICES:
		for (int i = 0; i < 2; i++) {
			uint64_t h = atomic_load_explicit(&ctl->head[i].v, memory_order_relaxed);
			uint64_t tl = atomic_load_explicit(&ctl->tail[i].v, memory_order_relaxed);
			atomic_store(&ctl->head[i].v, lie_index(r, test_rng_next(r) & 1 ? h : tl, t->cap));
			atomic_store(&ctl->tail[i].v, lie_index(r, test_rng_next(r) & 1 ? tl : h, t->cap));
		}
		break;
	case P_STATES:
		for (int i = 0; i < 2; i++) {
			static const uint32_t valid[] = {
				SHUNT_ST_OPEN, SHUNT_ST_OPEN | SHUNT_ST_SHUT_WR,
				SHUNT_ST_OPEN | SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED,
				SHUNT_ST_CLOSED, 0,
			};
			uint32_t st = test_rng_next(r) & 1 ? valid[test_rng_next(r) % 5]
							   : (uint32_t)test_rng_next(r);
			atomic_store(&ctl->side[i].state, st);
			atomic_store(&ctl->side[i].wait, (uint32_t)test_rng_next(r));
			atomic_store(&ctl->side[i].pid, (uint32_t)test_rng_next(r));
		}
		break;
	case P_SPOTS:
		for (int i = 0; i < 64; i++) {
			/* Mostly the control page, where the words are. */
			size_t at = test_rng_next(r) % 4 ? test_rng_range(r, 0, SHUNT_CTL_SIZE - 1)
							 : test_rng_range(r, 0, t->len - 1);
			t->base[at] = (uint8_t)test_rng_next(r);
		}
		break;
	case P_LIES: {
		/* Claim both rings are full of data and empty of space, or the
		 * reverse, with values that pass a naive check. */
		for (int i = 0; i < 2; i++) {
			uint64_t h = atomic_load_explicit(&ctl->head[i].v, memory_order_relaxed);
			uint64_t tl = atomic_load_explicit(&ctl->tail[i].v, memory_order_relaxed);
			if (test_rng_next(r) & 1)
				atomic_store(&ctl->head[i].v, tl + t->cap);
			else
				atomic_store(&ctl->tail[i].v, h);
		}
		break;
	}
	case P_RESIZE: {
		/* The seals must refuse any size change (a shrink would turn
		 * the victim's next access into SIGBUS). */
		ASSERT_MSG(ftruncate(t->fd, 0) < 0, "shrinking a sealed segment worked");
		ASSERT_MSG(ftruncate(t->fd, (off_t)t->len * 2) < 0, "growing a sealed segment worked");
		/* Punching a hole keeps the size: reads see zeros, no SIGBUS. */
		off_t at = (off_t)(test_rng_range(r, 0, t->len / 4096 - 1) * 4096);
		if (fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, 4096) < 0)
			memset(t->base + at, 0, 4096);
		break;
	}
	case P_DATA: {
		size_t at = SHUNT_CTL_SIZE + test_rng_range(r, 0, 2 * t->cap - 1);
		size_t n = test_rng_range(r, 1, t->len - at);
		test_rng_fill(r, t->base + at, n);
		break;
	}
	default:
		break;
	}
}

struct hostile_args {
	const struct plan *plan;
	int round;
	struct shunt_listener *lh;
	int le;              /* a plain UNIX listener at name_e */
};

/* --- Doorbell attacks ---------------------------------------------------- */

/* Fill a socket's peer's receive queue (and so our send queue). */
static void fill_socket(int fd)
{
	static const char junk[4096];

	while (send(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
	while (send(fd, junk, 1, MSG_DONTWAIT) > 0)
		;
}

/* The WRITE doorbell to hand over; *keep is our end of it, or -1. */
static int evil_bell(enum evil e, int *keep)
{
	int fd = -1, p[2];

	*keep = -1;
	switch (e) {
	case EVIL_EVENTFD_FULL: {
		/* Blocking, and at 0xfffffffffffffffe: a write of 1 sleeps. */
		fd = eventfd(0, EFD_CLOEXEC);
		ASSERT_SYS(fd);
		uint64_t v = 0xfffffffffffffffeull;
		ASSERT_EQ(write(fd, &v, sizeof(v)), sizeof(v));
		break;
	}
	case EVIL_PIPE_FULL:
	case EVIL_PIPE_NO_READER:
		ASSERT_SYS(pipe2(p, O_CLOEXEC | O_NONBLOCK));
		if (e == EVIL_PIPE_FULL) {
			char junk[4096] = { 0 };
			while (write(p[1], junk, sizeof(junk)) > 0)
				;
			while (write(p[1], junk, 1) > 0)
				;
			*keep = p[0]; /* a reader that never reads */
		} else {
			close(p[0]);
		}
		/* O_NONBLOCK is shared with whoever receives the fd: clear it. */
		ASSERT_SYS(fcntl(p[1], F_SETFL, 0));
		fd = p[1];
		break;
	case EVIL_DGRAM:
		ASSERT_SYS(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, p));
		*keep = p[0];
		fd = p[1];
		break;
	default:
		/* A proper stream pair; the attack comes later (or now). */
		ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p));
		if (e == EVIL_SOCK_NO_PEER) {
			close(p[0]);
		} else {
			*keep = p[0];
		}
		fd = p[1];
		break;
	}
	return fd;
}

/* Send a message, with fds if nfds > 0; returns what sendmsg() does. */
static ssize_t send_fds(int s, const void *buf, size_t len, const int *fds, int nfds,
			int flags)
{
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&ctl, 0, sizeof(ctl));
	if (nfds > 0) {
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	return sendmsg(s, &msg, MSG_NOSIGNAL | flags);
}

/* Push bytes, and now and then fds, into a socket without blocking. */
static void flood(int s, struct test_rng *r)
{
	char junk[512];

	memset(junk, 'f', sizeof(junk));
	if (test_rng_next(r) % 4 == 0) {
		int fds[4] = { 0, 1, 2, s };
		(void)send_fds(s, junk, 1, fds, 4, MSG_DONTWAIT);
	} else {
		(void)send_fds(s, junk, test_rng_range(r, 1, sizeof(junk)), NULL, 0, MSG_DONTWAIT);
	}
}

static void hostile_evil(struct hostile_args *a, const struct round *x)
{
	struct shunt_ctl *ctl;
	struct test_rng r;
	int s, bell, me;

	test_rng_seed(&r, x->seed);
	if (x->victim_accepts) {
		/* Connect by hand, offer a good segment and our doorbell. */
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", getenv("SHUNT_DIR"),
			 a->plan->name_v);
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ASSERT_SYS(s);
		ASSERT_SYS(connect(s, (struct sockaddr *)&sa, sizeof(sa)));
		struct shunt_seg seg;
		int64_t memfd_ = -1;
		ASSERT_OK(shunt_medium_local.create(&seg, x->ring, 0, &memfd_));
		int memfd = (int)memfd_;
		int theirs = evil_bell(x->evil, &bell);
		if (x->evil == EVIL_SOCK_FULL) {
			/* Full both ways, and their end's description blocking. */
			fill_socket(bell);
			fill_socket(theirs);
			ASSERT_SYS(fcntl(theirs, F_SETFL, 0));
		}
		struct shunt_hello h = {
			.magic = SHUNT_HELLO_MAGIC, .version = SHUNT_HELLO_VERSION,
			.ring_size = x->ring,
		};
		ASSERT_EQ(send_fds(s, &h, sizeof(h), (int[]){ memfd, theirs }, 2, 0), sizeof(h));
		close(memfd);
		close(theirs);
		ctl = seg.ctl;
		me = 0;
	} else {
		/* Accept by hand and take the victim's hello: its doorbells are
		 * ours to hold too. */
		struct pollfd p = { .fd = a->le, .events = POLLIN };
		ASSERT_MSG(poll(&p, 1, 5000) == 1, "round %d: the victim did not connect", a->round);
		s = accept4(a->le, NULL, NULL, SOCK_CLOEXEC);
		ASSERT_SYS(s);
		struct shunt_hello h;
		union {
			char buf[CMSG_SPACE(2 * sizeof(int))];
			struct cmsghdr align;
		} cbuf;
		struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
		struct msghdr msg = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
		};
		ASSERT_EQ(recvmsg(s, &msg, MSG_CMSG_CLOEXEC), sizeof(h));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		ASSERT_NOT_NULL(cm);
		ASSERT_UEQ(cm->cmsg_len, CMSG_LEN(2 * sizeof(int)));
		int fds[2];
		memcpy(fds, CMSG_DATA(cm), sizeof(fds));
		struct stat st;
		ASSERT_SYS(fstat(fds[0], &st));
		void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
				  fds[0], 0);
		ASSERT(base != MAP_FAILED);
		close(fds[0]);
		ctl = base;
		atomic_store(&ctl->side[1].state, SHUNT_ST_OPEN);
		bell = fds[1];
		if (x->evil == EVIL_SOCK_FULL) {
			fill_socket(s);
			fill_socket(bell);
			ASSERT_SYS(fcntl(s, F_SETFL, 0));
			ASSERT_SYS(fcntl(bell, F_SETFL, 0));
		}
		me = 1;
	}
	if (x->evil == EVIL_HALF_CLOSE) {
		shutdown(s, SHUT_WR);
		if (bell >= 0)
			shutdown(bell, SHUT_WR);
	}
	/* Ask to be woken for everything, all the time; flood if asked. */
	uint64_t end = test_now_ns() + ROUND_MS * 1000000ull;
	while (test_now_ns() < end) {
		atomic_store(&ctl->side[me].wait, SHUNT_WAIT_ALL);
		if (x->evil == EVIL_FLOOD) {
			for (int i = 0; i < 16; i++) {
				flood(s, &r);
				if (bell >= 0)
					flood(bell, &r);
			}
		}
		test_sleep_ms(1);
	}
	if (x->ending == END_EXIT)
		_exit(0);
	if (x->ending == END_KILL)
		raise(SIGKILL);
	close(s);
	if (bell >= 0)
		close(bell);
}

static void hostile_round(void *arg)
{
	struct hostile_args *a = arg;
	const struct round *x = &a->plan->r[a->round];
	struct shunt_conn *c;
	struct test_rng r;
	char buf[8192];

	if (x->evil) {
		hostile_evil(a, x);
		return;
	}
	test_rng_seed(&r, x->seed);
	if (x->victim_accepts) {
		struct shunt_opts o = { .ring_size = x->ring };
		ASSERT_OK(shunt_connect(a->plan->name_v, &o, &c));
	} else {
		struct pollfd p = { .fd = shunt_listener_fd(a->lh), .events = POLLIN };
		ASSERT_MSG(poll(&p, 1, 5000) == 1, "round %d: the victim did not connect", a->round);
		ASSERT_OK(shunt_accept(a->lh, &c, 0));
	}
	/* Behave for a moment: give the victim data to read. */
	test_rng_fill(&r, buf, sizeof(buf));
	(void)shunt_send(c, buf, sizeof(buf), SHUNT_NONBLOCK);

	struct target t = { .cap = shunt_ring_size(c) };
	t.fd = find_segment();
	ASSERT_MSG(t.fd >= 0, "cannot find the segment's memfd in /proc/self");
	struct stat st;
	ASSERT_SYS(fstat(t.fd, &st));
	ASSERT_UEQ((uint64_t)st.st_size, shunt_seg_size(t.cap));
	t.len = (size_t)st.st_size;
	t.base = mmap(NULL, t.len, PROT_READ | PROT_WRITE, MAP_SHARED, t.fd, 0);
	ASSERT(t.base != MAP_FAILED);
	t.ctl = (struct shunt_ctl *)t.base;
	if (x->victim_accepts && !x->early) {
		/* Connect completes before accept: wait until the victim has
		 * accepted (its side says open), else it would only see a
		 * wrecked segment at accept and refuse it (the early rounds). */
		uint64_t give_up = test_now_ns() + 3000000000ull;
		while (!atomic_load(&t.ctl->side[1].state)) {
			ASSERT_MSG(test_now_ns() < give_up, "round %d: the victim did not accept",
				   a->round);
			test_sleep_ms(1);
		}
	}

	uint64_t end = test_now_ns() + ROUND_MS * 1000000ull;
	uint64_t n = 0;
	while (test_now_ns() < end) {
		enum pattern p = x->pattern == P_MIX ? (enum pattern)(test_rng_next(&r) % P_MIX)
						      : x->pattern;
		scribble(&t, p, &r);
		n++;
		/* Keep using the connection, so that the victim has data to
		 * read, space to write and wake-ups to take. */
		(void)shunt_send(c, buf, test_rng_range(&r, 1, sizeof(buf)), SHUNT_NONBLOCK);
		(void)shunt_recv(c, buf, sizeof(buf), SHUNT_NONBLOCK);
		if (test_rng_next(&r) % 4 == 0)
			(void)shunt_readable(c);
		if (test_rng_next(&r) % 16 == 0)
			test_sleep_ms(1); /* let the victim run on this state */
	}
	munmap(t.base, t.len);
	close(t.fd);
	switch (x->ending) {
	case END_CLOSE:
		shunt_close(c);
		break;
	case END_EXIT:
		_exit(0); /* no close: the kernel hangs up the socket */
	case END_KILL:
		raise(SIGKILL);
		break;
	default:
		break;
	}
}

/* --- The victim --------------------------------------------------------- */

struct tally {
	uint64_t calls, ok, eof, eproto, econnreset, epipe, eagain, refused;
};

/* A call's result is a size within bounds, or an allowed error. */
static void judge(struct tally *t, const char *op, ssize_t r, ssize_t max, int nonblock,
		  int eof_ok, int round)
{
	t->calls++;
	if (r > 0) {
		ASSERT_MSG(r <= max, "round %d: %s returned %zd, more than %zd", round, op, r, max);
		t->ok++;
		return;
	}
	if (r == 0) {
		ASSERT_MSG(eof_ok, "round %d: %s returned 0", round, op);
		t->eof++;
		return;
	}
	switch (-r) {
	case EPROTO: t->eproto++; return;
	case ECONNRESET: t->econnreset++; return;
	case EPIPE: t->epipe++; return;
	case EAGAIN:
		ASSERT_MSG(nonblock, "round %d: blocking %s returned -EAGAIN", round, op);
		t->eagain++;
		return;
	default:
		TEST_FAIL_MSG("round %d: %s returned %zd (%s): not an allowed error", round, op, r,
			      test_errname((int)-r));
	}
}

static void victim_round(const struct plan *plan, int i, struct shunt_listener *lv,
			 struct tally *t)
{
	const struct round *x = &plan->r[i];
	struct shunt_conn *c;
	struct test_rng r;
	static uint8_t buf[1 << 17];

	test_rng_seed(&r, x->seed ^ 0x5eed);
	int fds_before = test_count_fds();
	if (x->victim_accepts) {
		struct pollfd p = { .fd = shunt_listener_fd(lv), .events = POLLIN };
		ASSERT_MSG(poll(&p, 1, 5000) == 1, "round %d: no hostile peer connected", i);
		int rc = shunt_accept(lv, &c, SHUNT_NONBLOCK);
		/* The hello may come a moment after the connection: the
		 * listener's fd polls readable again then. */
		while (rc == -EAGAIN && poll(&p, 1, 300) == 1)
			rc = shunt_accept(lv, &c, SHUNT_NONBLOCK);
		if (rc == -EAGAIN && (x->early || x->evil)) {
			/* The segment was wrecked before we looked, or the
			 * doorbell is no socket: refused and dropped at accept,
			 * which is right. */
			t->refused++;
			ASSERT_EQ(test_count_fds(), fds_before);
			return;
		}
		ASSERT_OK(rc);
	} else {
		struct shunt_opts o = { .ring_size = x->ring };
		ASSERT_OK(shunt_connect(x->evil ? plan->name_e : plan->name_h, &o, &c));
	}
	ssize_t cap = (ssize_t)shunt_ring_size(c);
	int fd = shunt_fd(c);
	ASSERT_OK(fd);

	/* Go on until both directions have ended, within a time limit. */
	double deadline = test_now() + ROUND_MS / 1000.0 + SLACK_S + 1.0;
	int rx_done = 0, tx_done = 0;
	while (!(rx_done && tx_done)) {
		ASSERT_MSG(test_now() < deadline, "round %d (%s): the victim is still busy %.1f s "
			   "after the hostile peer stopped", i, pattern_names[x->pattern], SLACK_S);
		int nb = test_rng_next(&r) % 8 ? SHUNT_NONBLOCK : 0;
		ssize_t k;
		switch (test_rng_next(&r) % 7) {
		case 0: {
			size_t len = test_rng_size(&r, sizeof(buf));
			k = shunt_recv(c, buf, len, nb);
			judge(t, "recv", k, (ssize_t)len, nb, 1, i);
			if (k == 0 || (k < 0 && k != -EAGAIN))
				rx_done = 1;
			break;
		}
		case 1: {
			const void *p;
			k = shunt_recv_peek(c, &p, nb);
			judge(t, "recv_peek", k, cap, nb, 1, i);
			if (k > 0) {
				/* Read it all (it may change under us: fine). */
				volatile uint8_t sink = 0;
				for (ssize_t j = 0; j < k; j += 64)
					sink ^= ((const volatile uint8_t *)p)[j];
				(void)sink;
				ASSERT_ERR(shunt_recv_release(c, test_rng_range(&r, 0, (uint64_t)k)), 0);
			} else if (k != -EAGAIN) {
				rx_done = 1;
			}
			break;
		}
		case 2: {
			size_t len = test_rng_size(&r, sizeof(buf));
			/* A blocking send of more than fits could wait for the
			 * hostile to read; it ends when the hostile is gone. */
			k = shunt_send(c, buf, len, nb);
			judge(t, "send", k, (ssize_t)len, nb, 0, i);
			if (k < 0 && k != -EAGAIN)
				tx_done = 1;
			break;
		}
		case 3: {
			void *w;
			size_t min = test_rng_range(&r, 1, (uint64_t)cap);
			k = shunt_send_reserve(c, &w, min, nb);
			judge(t, "send_reserve", k, cap, nb, 0, i);
			if (k > 0) {
				ASSERT_MSG(k >= (ssize_t)min, "round %d: reserve gave %zd < min %zu", i, k,
					   min);
				memset(w, 0xab, (size_t)k); /* all of it must be ours to write */
				ASSERT_ERR(shunt_send_commit(c, test_rng_range(&r, 0, (uint64_t)k)), 0);
			} else if (k != -EAGAIN) {
				tx_done = 1;
			}
			break;
		}
		case 4:
			k = shunt_readable(c);
			judge(t, "readable", k, cap, 1, 1, i);
			break;
		case 5: {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			ASSERT_SYS(poll(&p, 1, (int)test_rng_range(&r, 0, 2)));
			break;
		}
		default: {
			struct shunt_stats s;
			ASSERT_OK(shunt_get_stats(c, &s));
			break;
		}
		}
	}
	shunt_close(c);
	/* Nothing the peer passed or left behind stays open here. */
	int fds_after = test_count_fds();
	ASSERT_MSG(fds_after == fds_before, "round %d: %d fds before the connection, %d after "
		   "closing it", i, fds_before, fds_after);
}

struct victim_args {
	const struct plan *plan;
	struct shunt_listener *lv;
};

static void victim_main(void *arg)
{
	struct victim_args *a = arg;
	struct tally t = { 0 };
	double worst = 0;

	/* Like most programs: a library must not raise SIGPIPE on us. */
	signal(SIGPIPE, SIG_DFL);
	for (int i = 0; i < a->plan->n; i++) {
		double t0 = test_now();
		victim_round(a->plan, i, a->lv, &t);
		double dt = test_now() - t0;
		if (dt > worst)
			worst = dt;
		atomic_store(a->plan->progress, i + 1);
	}
	test_log("victim: %" PRIu64 " calls: %" PRIu64 " ok, %" PRIu64 " eof, %" PRIu64
		 " EPROTO, %" PRIu64 " ECONNRESET, %" PRIu64 " EPIPE, %" PRIu64
		 " EAGAIN; %" PRIu64 " wrecked segments refused at accept; longest round %.2f s",
		 t.calls, t.ok, t.eof, t.eproto, t.econnreset, t.epipe, t.eagain, t.refused, worst);
	ASSERT_MSG(t.eproto > 0, "no call ever said -EPROTO: the scribbling had no effect?");
}

/* The first word of /proc/PID/FILE, for a diagnosis of a stuck process. */
static void proc_line(pid_t pid, const char *file, char *out, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (fscanf(f, "%63s", out) != 1)
		snprintf(out, len, "?");
	fclose(f);
}

/* A UNIX listener of our own where shunt_listen() would put name. */
static int plain_listener(const char *name)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_SYS(fd);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", getenv("SHUNT_DIR"), name);
	ASSERT_SYS(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_SYS(listen(fd, 16));
	return fd;
}

int main(void)
{
	static struct plan plan;
	struct shunt_listener *lv, *lh;
	char buf[128];

	test_init("t_hostile");
	test_use_private_dir();
	int rounds = (int)test_env_u64("SHUNT_HOSTILE_ROUNDS", 2 * P_N + 2);
	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	make_plan(&plan, test_seed(), rounds);
	plan.progress = mmap(NULL, sizeof(*plan.progress), PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT(plan.progress != MAP_FAILED);
	atomic_store(plan.progress, 0);
	test_name_unique(plan.name_v, sizeof(plan.name_v));
	test_name_unique(plan.name_h, sizeof(plan.name_h));
	ASSERT_OK(shunt_listen(plan.name_v, &lv));
	ASSERT_OK(shunt_listen(plan.name_h, &lh));
	test_name_unique(plan.name_e, sizeof(plan.name_e));
	int le = plain_listener(plan.name_e);

	struct victim_args va = { .plan = &plan, .lv = lv };
	pid_t victim = test_fork(victim_main, &va);
	int victim_status = -1;
	for (int i = 0; i < plan.n; i++) {
		const struct round *x = &plan.r[i];
		struct hostile_args ha = { .plan = &plan, .round = i, .lh = lh, .le = le };
		pid_t h = test_fork(hostile_round, &ha);
		int st = test_wait(h, ROUND_MS / 1000.0 + 10);
		/* The hostile peer uses the library on the segment it wrecks:
		 * it must survive that too. */
		int want_kill = x->ending == END_KILL;
		ASSERT_MSG(want_kill ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL
				     : WIFEXITED(st) && WEXITSTATUS(st) == 0,
			   "round %d: hostile peer %s", i, test_status_str(st, buf, sizeof(buf)));
		const char *what = x->evil ? evil_names[x->evil] : pattern_names[x->pattern];
		/* The victim must be done with this round soon after, and
		 * alive unless that was its last round. */
		double until = test_now() + SLACK_S;
		while (atomic_load(plan.progress) <= i && test_now() < until &&
		       victim_status < 0) {
			int vst;
			if (waitpid(victim, &vst, WNOHANG) == victim) {
				test_unregister(victim);
				victim_status = vst;
			}
			test_sleep_ms(2);
		}
		if (victim_status >= 0 &&
		    !(atomic_load(plan.progress) == plan.n && WIFEXITED(victim_status) &&
		      WEXITSTATUS(victim_status) == 0))
			TEST_FAIL_MSG("round %d (%s, victim %s): the victim %s", i, what,
				      x->victim_accepts ? "accepting" : "connecting",
				      test_status_str(victim_status, buf, sizeof(buf)));
		if (atomic_load(plan.progress) <= i) {
			char wchan[64] = "?", sc[64] = "?";
			proc_line(victim, "wchan", wchan, sizeof(wchan));
			proc_line(victim, "syscall", sc, sizeof(sc));
			TEST_FAIL_MSG("round %d (%s, victim %s): the victim is stuck %.1f s after the "
				      "hostile peer left (kernel wait channel %s, syscall %s)", i,
				      what, x->victim_accepts ? "accepting" : "connecting", SLACK_S,
				      wchan, sc);
		}
		test_log("round %2d: %-8s ring %5zu, victim %s, hostile ends by %s", i, what,
			 x->ring,
			 x->victim_accepts ? x->early ? "accepts late" : "accepts" : "connects",
			 ending_names[x->ending]);
	}
	int st = victim_status >= 0 ? victim_status : test_wait(victim, SLACK_S + 3);
	ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "victim %s",
		   test_status_str(st, buf, sizeof(buf)));
	shunt_listener_close(lv);
	shunt_listener_close(lh);
	close(le);
	test_log("pass");
	return TEST_PASS;
}
