/*
 * soak.c - many TCP connections through a server that serves them in every
 * way a real one does, every byte checked.  Plain POSIX sockets, no shunt
 * API: tests/t_soak.sh runs it unmodified under `shunt run` (and without
 * it, to check the checker), `make soak` for an hour.
 *
 *   soak server PORTFILE      listen on 127.0.0.1, port 0; write the port
 *   soak clients PORT SECS N  N client processes for SECS seconds, then
 *                             tell the server to end (a QUIT header)
 *   soak serve-fd FD ...      the server's exec'd handler (internal)
 *
 * A connection: the client sends a header (seed, length, hand-off point)
 * and `up` bytes of the deterministic stream `seed` (testlib's
 * test_stream_fill) in messages of random sizes, 1 B to 256 KiB.  The
 * server checks every byte against that stream and returns each one XORed
 * with a second stream (the transform), then a trailer: its Fletcher sums
 * of what it received.  The client checks every byte it gets back (loss,
 * duplication and reordering all break the match at a known offset; the
 * report then says where in the stream the bytes it got came from), the
 * trailer against its own sums, and that nothing follows but the end of
 * stream.
 *
 * The server (one process) starts each connection in its epoll loop, reads
 * the header there and, by the accept count, serves it to the end there or
 * hands it over, after serving its first `handoff` bytes (0 or up to
 * 1 MiB: before or after the connection moved to shared memory), to
 *   fork   a child forked for it (the parent closes its copy; the child
 *          closes its copies of every other connection)
 *   scm    one of two pre-forked workers, by SCM_RIGHTS (a thread there)
 *   exec   a child that execs this program with the fd number in argv
 *   thread a thread of the server process
 * The clients: blocking (a writer and a reader thread per connection),
 * non-blocking with poll() and with epoll (4 connections each at once),
 * and short (a few bytes each, one after the other); connections of a few
 * bytes, of 64 KiB to 4 MiB and of 8 to 64 MiB.
 *
 * At the end the server waits for every handler, counts its own fds and
 * each worker's against their start (listing any difference), looks for
 * shunt segments (memfd:shunt-conn) still mapped or open, and for
 * rendezvous names of its port left in /proc/net/unix or in SHUNT_DIR;
 * both roles count the "upgraded" and "stays on TCP" lines of their
 * SHUNT_LOG_FILE.  Every check that fails prints a line starting with
 * "soak: ERROR" and the exit status is 1.
 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "fdmsg.h"
#include "testlib.h"

#define MAGIC 0x4b414f53u /* "SOAK" */
#define F_QUIT 1u
#define MAX_MSG (256u * 1024u)
#define KEY 0x5bd1e995a5a5a5a5ull /* the transform's stream: seed ^ KEY */
#define STALL_S 20                /* no progress this long is a hang */
#define NB_CONNS 4                /* connections at once per non-blocking client */
#define LONG_LAST_S 20            /* no long connection starts this close to the end
                                   * (a third of a shorter run) */
#define MAX_FD 65536

struct hdr {
	uint32_t magic;
	uint32_t flags;
	uint64_t seed;
	uint64_t up;      /* bytes the client sends after the header */
	uint64_t handoff; /* bytes the epoll loop serves before handing over */
};

struct fl {
	uint64_t a, b;
};

/* What the epoll loop hands over: where the connection stands. */
struct handoff {
	struct hdr h;
	uint64_t in;
	struct fl sum;
};

enum way { W_EPOLL, W_FORK, W_SCM, W_EXEC, W_THREAD, W_N };
static const char *const way_names[W_N] = { "epoll", "fork", "scm", "exec", "thread" };

static atomic_ulong g_errors;
static const char *g_role = "soak";

__attribute__((format(printf, 1, 2))) static void err(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&g_errors, 1);
	fprintf(stderr, "soak: ERROR: %s[%d]: %s\n", g_role, (int)getpid(), line);
}

/* Where each thread of process pid is (gdb if there is one), for the
 * report of a hang: a blocking call that timed out, or a process killed;
 * with each frame's locals (full) for the watchdog's. */
static void stacks_of(pid_t pid, int full)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd),
		 "gdb -p %d -batch -ex 'thread apply all bt%s' </dev/null 2>/dev/null | "
		 "grep %s >&2", (int)pid, full ? " full" : "", full ? "-v '^\\['" : "'^#\\|^Thread'");
	if (system(cmd) != 0)
		fprintf(stderr, "soak: no gdb to show where process %d is\n", (int)pid);
}

static void stacks(pid_t pid)
{
	stacks_of(pid, 0);
}

/* The process at the other end of fd, if it is on this host: where it
 * is too (ss finds the socket whose ends are ours swapped). */
static void peer_stacks(int fd)
{
	struct sockaddr_in me, peer;
	socklen_t n = sizeof(me), m = sizeof(peer);
	char cmd[320];

	if (getsockname(fd, (struct sockaddr *)&me, &n) < 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &m) < 0)
		return;
	snprintf(cmd, sizeof(cmd),
		 "p=$(ss -Htnp state established '( sport = :%d and dport = :%d )' | "
		 "sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' | head -1); "
		 "[ -n \"$p\" ] && echo \"soak: the peer, $p:\" >&2 && "
		 "gdb -p $p -batch -ex 'thread apply all bt full' </dev/null 2>/dev/null | "
		 "grep -v '^\\[' >&2",
		 ntohs(peer.sin_port), ntohs(me.sin_port));
	if (system(cmd) != 0)
		fprintf(stderr, "soak: the peer of fd %d not shown\n", fd);
}

/* --- A watchdog: where a stuck blocking call is, while it is stuck ----------
 * A call that times out has left the place it was stuck in by the time it
 * reports (stacks_if_hung).  So each blocking call says when it began, and
 * a thread of the process shows, once per call, every thread's stack with
 * its locals (and the peer's) when one has waited WATCH_S, well before its
 * timeout.  Per process: a fork or exec starts its own. */
#define WATCH_MAX 64
#define WATCH_S 12

struct watch {
	atomic_int owner;    /* the thread's id; 0: free */
	atomic_int fd;       /* -1: not in a blocking call */
	atomic_llong since;  /* ms, now_ms() */
	atomic_int shown;
	const char *what;
};
static struct watch g_watch[WATCH_MAX];
static atomic_int g_watch_pid;
static pthread_key_t g_watch_key;
static pthread_once_t g_watch_once = PTHREAD_ONCE_INIT;
static _Thread_local int t_watch = -1, t_watch_pid;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void peer_stacks(int fd);

static void *watchdog_main(void *arg)
{
	(void)arg;
	for (;;) {
		sleep(1);
		long long t = now_ms();
		for (int i = 0; i < WATCH_MAX; i++) {
			struct watch *w = &g_watch[i];
			int fd = atomic_load(&w->fd);
			long long since = atomic_load(&w->since);
			if (!atomic_load(&w->owner) || fd < 0 || t - since < WATCH_S * 1000 ||
			    atomic_exchange(&w->shown, 1))
				continue;
			fprintf(stderr, "soak: WATCHDOG: %s[%d]: a blocking %s on fd %d has waited %d s:\n",
				g_role, (int)getpid(), w->what, fd, WATCH_S);
			stacks_of(getpid(), 1);
			peer_stacks(fd);
		}
	}
	return NULL;
}

/* A thread that ends gives its entry back (thread-way handlers come and go). */
static void watch_release(void *arg)
{
	struct watch *w = &g_watch[(intptr_t)arg - 1];

	atomic_store(&w->fd, -1);
	atomic_store(&w->owner, 0);
}

static void watch_key(void)
{
	pthread_key_create(&g_watch_key, watch_release);
}

/* This thread's entry, the process's watchdog started first if need be.
 * No lock: a process forks while its other threads are anywhere (the
 * server's fork way beside its thread way), and a lock one of them held
 * stays held in the child for good.  A forked child has only the forking
 * thread, and the parent's entries are nobody's there. */
static struct watch *watch_entry(void)
{
	int pid = (int)getpid(), old = atomic_load(&g_watch_pid);

	if (t_watch >= 0 && t_watch_pid == pid)
		return &g_watch[t_watch];
	pthread_once(&g_watch_once, watch_key);
	if (old != pid && atomic_compare_exchange_strong(&g_watch_pid, &old, pid)) {
		pthread_t t;
		for (int i = 0; old && i < WATCH_MAX; i++) {
			atomic_store(&g_watch[i].fd, -1);
			atomic_store(&g_watch[i].owner, 0);
		}
		if (pthread_create(&t, NULL, watchdog_main, NULL) == 0)
			pthread_detach(t);
	}
	int tid = (int)syscall(SYS_gettid);
	t_watch = -1;
	for (int i = 0; i < WATCH_MAX && t_watch < 0; i++) {
		int free_ = 0;
		if (atomic_load(&g_watch[i].owner) == 0 &&
		    atomic_compare_exchange_strong(&g_watch[i].owner, &free_, tid)) {
			atomic_store(&g_watch[i].fd, -1);
			t_watch = i;
		}
	}
	t_watch_pid = pid;
	if (t_watch >= 0)
		pthread_setspecific(g_watch_key, (void *)(intptr_t)(t_watch + 1));
	return t_watch >= 0 ? &g_watch[t_watch] : NULL;
}

static void watch_begin(int fd, const char *what)
{
	struct watch *w = watch_entry();
	if (!w)
		return;
	w->what = what;
	atomic_store(&w->shown, 0);
	atomic_store(&w->since, now_ms());
	atomic_store(&w->fd, fd);
}

static void watch_end(void)
{
	if (t_watch >= 0)
		atomic_store(&g_watch[t_watch].fd, -1);
}

/* A blocking call on fd that failed: a timeout (STALL_S) is a hang,
 * shown on both ends. */
static void stacks_if_hung(int fd, int e)
{
	if (e != EAGAIN && e != EWOULDBLOCK)
		return;
	stacks(getpid());
	peer_stacks(fd);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* --- The streams and their checks --------------------------------------- */

static void fl_update(struct fl *s, const uint8_t *p, size_t n)
{
	uint64_t a = s->a, b = s->b;
	for (size_t i = 0; i < n; i++) {
		a += p[i];
		b += a;
	}
	s->a = a;
	s->b = b;
}

/* XOR buf (bytes off.. of a connection) with the transform's stream. */
static void xor_key(uint64_t seed, uint64_t off, uint8_t *buf, size_t n)
{
	uint8_t k[4096];
	for (size_t d = 0; d < n; d += sizeof(k)) {
		size_t m = n - d < sizeof(k) ? n - d : sizeof(k);
		test_stream_fill(seed ^ KEY, off + d, k, m);
		for (size_t i = 0; i < m; i++)
			buf[d + i] ^= k[i];
	}
}

/* The bytes off.. of direction `down` (0: client to server). */
static void expected(int down, uint64_t seed, uint64_t off, uint8_t *out, size_t n)
{
	test_stream_fill(seed, off, out, n);
	if (down)
		xor_key(seed, off, out, n);
}

/* Where, within 8 MiB of `off`, the stream holds the 32 bytes at p; or -1. */
static int64_t find_in_stream(int down, uint64_t seed, uint64_t off, const uint8_t *p, size_t n,
			      uint64_t limit)
{
	const size_t win = 8u << 20;
	uint64_t lo = off > win ? off - win : 0, hi = off + win < limit ? off + win : limit;
	if (n > 32)
		n = 32;
	if (n < 8 || hi <= lo + n)
		return -1;
	uint8_t *w = malloc((size_t)(hi - lo));
	if (!w)
		return -1;
	expected(down, seed, lo, w, (size_t)(hi - lo));
	int64_t at = -1;
	uint8_t *f = memmem(w, (size_t)(hi - lo), p, n);
	if (f)
		at = (int64_t)(lo + (uint64_t)(f - w));
	free(w);
	return at;
}

/* Check n received bytes at offset off; on a mismatch say where, and where
 * in the stream the bytes received there come from (a loss, a duplicate, a
 * reordering). */
static int check(int down, uint64_t seed, uint64_t off, const uint8_t *buf, size_t n,
		 uint64_t limit, const char *who)
{
	uint8_t e[4096];
	for (size_t d = 0; d < n; d += sizeof(e)) {
		size_t m = n - d < sizeof(e) ? n - d : sizeof(e);
		expected(down, seed, off + d, e, m);
		size_t k = test_memdiff(buf + d, e, m);
		if (k == (size_t)-1)
			continue;
		uint64_t at = off + d + k;
		int64_t src = find_in_stream(down, seed, at, buf + d + k, n - d - k, limit);
		char where[96] = "not found within 8 MiB";
		if (src >= 0)
			snprintf(where, sizeof(where), "the stream's bytes at %lld (%+lld)",
				 (long long)src, (long long)src - (long long)at);
		err("%s: seed %016llx %s byte %llu of %llu is 0x%02x, expected 0x%02x; "
		    "%zu bytes received there are %s",
		    who, (unsigned long long)seed, down ? "down" : "up", (unsigned long long)at,
		    (unsigned long long)limit, buf[d + k], e[k], n - d - k, where);
		return -1;
	}
	return 0;
}

/* --- Fds of ours, closed by a child forked for one connection ------------ */

static atomic_uchar g_ours[MAX_FD];

static void ours(int fd, int on)
{
	if (fd >= 0 && fd < MAX_FD)
		atomic_store(&g_ours[fd], (unsigned char)on);
}

static void close_ours_but(int keep)
{
	for (int fd = 0; fd < MAX_FD; fd++)
		if (fd != keep && atomic_load(&g_ours[fd]))
			close(fd);
}

/* --- Blocking I/O in several ways ---------------------------------------- */

static ssize_t rd_call(int fd, void *buf, size_t n, unsigned how)
{
	switch (how % 3) {
	case 0:
		return read(fd, buf, n);
	case 1:
		return recv(fd, buf, n, 0);
	default: {
		size_t h = n / 2;
		struct iovec iov[2] = { { buf, h }, { (char *)buf + h, n - h } };
		return h ? readv(fd, iov, 2) : read(fd, buf, n);
	}
	}
}

static ssize_t rd(int fd, void *buf, size_t n, unsigned how)
{
	watch_begin(fd, "read");
	ssize_t k = rd_call(fd, buf, n, how);
	int e = errno;
	watch_end();
	errno = e;
	return k;
}

static int write_all(int fd, const void *buf, size_t n, unsigned how)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t k;
		watch_begin(fd, "write");
		if (how % 3 == 0) {
			k = write(fd, p, n);
		} else if (how % 3 == 1) {
			k = send(fd, p, n, MSG_NOSIGNAL);
		} else {
			struct iovec iov = { (void *)p, n };
			struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
			k = sendmsg(fd, &m, MSG_NOSIGNAL);
		}
		int e = errno;
		watch_end();
		errno = e;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Sends give up a little later than reads: a reader that times out shows
 * (stacks) where its process's writer waits, still waiting. */
static void set_timeouts(int fd)
{
	struct timeval rcv = { STALL_S, 0 }, snd = { STALL_S + 4, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
}

/* The local port of fd, to find its connection in the library's log. */
static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t n = sizeof(a);

	return getsockname(fd, (struct sockaddr *)&a, &n) == 0 ? ntohs(a.sin_port) : 0;
}

static void set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

/* --- The server's handlers ------------------------------------------------ */

/* SOAK_FAULT=drop|dup|swap|flip: the server spoils its output once per
 * process, in its first chunk of 2 bytes or more past 64 KiB, so that a
 * run shows the clients' checks catch it.  buf has room for one more. */
static void fault(uint64_t off, uint8_t *buf, size_t *n)
{
	static atomic_int done;
	const char *f = getenv("SOAK_FAULT");

	if (!f || !*f || off < (64u << 10) || *n < 2 || atomic_exchange(&done, 1))
		return;
	if (strcmp(f, "drop") == 0) {
		memmove(buf, buf + 1, --*n);
	} else if (strcmp(f, "dup") == 0) {
		memmove(buf + 1, buf, (*n)++);
	} else if (strcmp(f, "swap") == 0) {
		uint8_t t = buf[0];
		buf[0] = buf[1];
		buf[1] = t;
	} else {
		buf[*n / 2] ^= 0x10;
	}
	fprintf(stderr, "soak: server[%d]: SOAK_FAULT=%s at byte %llu\n", (int)getpid(), f,
		(unsigned long long)off);
}

/* Serve a connection from where the epoll loop left it, blocking: check,
 * transform and return every byte, the trailer, then wait for the end of
 * stream.  0, or -1 after reporting. */
static int serve_blocking(int fd, const struct handoff *ho, const char *way)
{
	uint64_t seed = ho->h.seed, up = ho->h.up, in = ho->in;
	struct fl sum = ho->sum;
	uint8_t *buf = malloc(MAX_MSG + 1);
	struct test_rng r;
	char who[64];
	int rc = -1;

	snprintf(who, sizeof(who), "server %s fd %d", way, fd);
	test_rng_seed(&r, seed ^ in);
	set_timeouts(fd);
	while (buf && in < up) {
		size_t want = (size_t)test_rng_size(&r, MAX_MSG);
		if (want > up - in)
			want = (size_t)(up - in);
		ssize_t n = rd(fd, buf, want, (unsigned)test_rng_next(&r));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			err("%s: seed %016llx: %s at byte %llu of %llu", who, (unsigned long long)seed,
			    n == 0 ? "end of stream" : strerror(e), (unsigned long long)in,
			    (unsigned long long)up);
			if (n < 0)
				stacks_if_hung(fd, e);
			goto out;
		}
		if (check(0, seed, in, buf, (size_t)n, up, who) < 0)
			goto out;
		fl_update(&sum, buf, (size_t)n);
		xor_key(seed, in, buf, (size_t)n);
		size_t out = (size_t)n;
		fault(in, buf, &out);
		if (write_all(fd, buf, out, (unsigned)test_rng_next(&r)) < 0) {
			int e = errno;
			err("%s: seed %016llx: write at byte %llu: %s", who, (unsigned long long)seed,
			    (unsigned long long)in, strerror(e));
			stacks_if_hung(fd, e);
			goto out;
		}
		in += (uint64_t)n;
	}
	if (!buf || write_all(fd, &sum, sizeof(sum), 0) < 0) {
		err("%s: seed %016llx: trailer: %s", who, (unsigned long long)seed, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != 0) {
			err("%s: seed %016llx: %s after the last byte", who, (unsigned long long)seed,
			    n > 0 ? "more data" : strerror(errno));
			goto out;
		}
		break;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

struct thread_job {
	int fd;
	struct handoff ho;
	const char *way;
	atomic_int *live;
};

static void *thread_main(void *arg)
{
	struct thread_job *j = arg;
	serve_blocking(j->fd, &j->ho, j->way);
	ours(j->fd, 0);
	close(j->fd);
	atomic_fetch_sub(j->live, 1);
	free(j);
	return NULL;
}

static void start_thread(int fd, const struct handoff *ho, const char *way, atomic_int *live)
{
	struct thread_job *j = malloc(sizeof(*j));
	pthread_t t;
	pthread_attr_t a;

	j->fd = fd;
	j->ho = *ho;
	j->way = way;
	j->live = live;
	atomic_fetch_add(live, 1);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, thread_main, j) != 0) {
		err("pthread_create failed");
		atomic_fetch_sub(live, 1);
		close(fd);
		free(j);
	}
	pthread_attr_destroy(&a);
}

/* --- Leak checks from /proc ---------------------------------------------- */

#define MAX_LINKS 1024

struct fdset {
	int n;
	char *link[MAX_LINKS]; /* "FD -> TARGET" */
};

/* The library keeps its arena's fd as the one fd of a 1-byte datagram
 * (ARENA_PARK_TAG) in flight on a socket pair of its own (shim/arena.c): peeked here,
 * not taken. */
static int is_arena_park(int fd)
{
	int got = shunt_fdmsg_peek_parked(fd, ARENA_PARK_TAG);

	if (got >= 0)
		close(got);
	return got >= 0;
}

static void fd_snapshot(struct fdset *s)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	s->n = 0;
	if (!d)
		return;
	int dfd = dirfd(d);
	while ((e = readdir(d)) && s->n < MAX_LINKS) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dfd)
			continue;
		char path[300], target[256] = "?";
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, target, sizeof(target) - 1);
		if (k >= 0)
			target[k] = 0;
		if (!strncmp(target, "socket:", 7) && is_arena_park(atoi(e->d_name)))
			snprintf(target, sizeof(target), "shunt-arena (parked)");
		char line[600];
		snprintf(line, sizeof(line), "%s -> %s", e->d_name, target);
		s->link[s->n++] = strdup(line);
	}
	closedir(d);
}

static void fd_free(struct fdset *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->link[i]);
	s->n = 0;
}

/* The library's arena (its socket pair, above) is made at a process's
 * first tracked socket and lives as long as the process: a worker's
 * appears at its first connection.  Not a connection's, so not compared. */
static int fd_has(const struct fdset *s, const char *l)
{
	if (strstr(l, "shunt-arena"))
		return 1;
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->link[i], l) == 0)
			return 1;
	return 0;
}

/* Lines of /proc/self/maps and fd links naming a connection's segment. */
static int segments_held(int report)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "shunt-conn")) {
			if (report)
				err("a segment is still mapped: %s", strtok(line, "\n"));
			n++;
		}
	}
	if (f)
		fclose(f);
	struct fdset s;
	fd_snapshot(&s);
	for (int i = 0; i < s.n; i++) {
		if (strstr(s.link[i], "shunt-conn")) {
			if (report)
				err("a segment is still open: fd %s", s.link[i]);
			n++;
		}
	}
	fd_free(&s);
	return n;
}

/* The fds now against `start`: equal, or each difference reported.  The
 * library may still be closing (a moved socket's close can wait for the
 * peer's acknowledgements): it gets 3 s to settle. */
static int leak_check(const struct fdset *start, const char *who)
{
	double t0 = now_s();
	for (;;) {
		struct fdset s;
		int diff = 0;
		fd_snapshot(&s);
		for (int i = 0; i < s.n; i++)
			diff += !fd_has(start, s.link[i]);
		for (int i = 0; i < start->n; i++)
			diff += !fd_has(&s, start->link[i]);
		int segs = segments_held(0);
		int last = now_s() - t0 > 3;
		if ((diff == 0 && segs == 0) || last) {
			for (int i = 0; i < s.n; i++)
				if (!fd_has(start, s.link[i]))
					err("%s: fd opened and not closed: %s", who, s.link[i]);
			for (int i = 0; i < start->n; i++)
				if (!fd_has(&s, start->link[i]))
					err("%s: fd closed that was open at the start: %s", who,
					    start->link[i]);
			segments_held(1);
			printf("%s[%d]: fds at the start %d, at the end %d; %d segment(s) held%s\n", who,
			       (int)getpid(), start->n, s.n, segs,
			       now_s() - t0 > 0.2 ? " (after waiting for the library)" : "");
			fd_free(&s);
			return diff || segs ? -1 : 0;
		}
		fd_free(&s);
		usleep(100 * 1000);
	}
}

/* Rendezvous names of connections to `port` still bound: abstract ones in
 * /proc/net/unix, files in SHUNT_DIR. */
static int names_left(unsigned port)
{
	char tag[16], line[512];
	int n = 0;

	snprintf(tag, sizeof(tag), ".%04x", port);
	FILE *f = fopen("/proc/net/unix", "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *p = strstr(line, "@shunt1/");
		if (p && strstr(p, tag)) {
			err("a rendezvous name is still bound: %s", strtok(p, "\n"));
			n++;
		}
	}
	if (f)
		fclose(f);
	const char *dir = getenv("SHUNT_DIR");
	DIR *d = dir ? opendir(dir) : NULL;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, "m-", 2) != 0 && strncmp(e->d_name, "m6-", 3) != 0)
			continue;
		err("a rendezvous file is left: %s/%s", dir, e->d_name);
		n++;
	}
	if (d)
		closedir(d);
	printf("server: %d rendezvous name(s) of port %u left (/proc/net/unix, %s)\n", n, port,
	       dir ? dir : "SHUNT_DIR unset");
	return n;
}

/* The "upgraded" and "stays on TCP" lines of our SHUNT_LOG_FILE. */
static void log_counts(const char *who)
{
	const char *path = getenv("SHUNT_LOG_FILE");
	char line[1024];
	long up = 0, stays = 0;
	FILE *f = path ? fopen(path, "r") : NULL;

	if (!f) {
		printf("%s: no SHUNT_LOG_FILE to count moved connections in\n", who);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		up += strstr(line, " upgraded: ") != NULL;
		stays += strstr(line, " stays on TCP") != NULL;
	}
	fclose(f);
	printf("%s: log: %ld upgraded, %ld stays on TCP\n", who, up, stays);
}

/* --- The pre-forked workers (SCM_RIGHTS) --------------------------------- */

static int recv_fd(int s, struct handoff *ho)
{
	int fd;
	ssize_t k = test_recv_fd(s, ho, sizeof(*ho), MSG_CMSG_CLOEXEC, &fd);

	if (k <= 0)
		return k == 0 ? -2 : -1;
	if (k != (ssize_t)sizeof(*ho) || fd < 0) {
		err("worker: a bad hand-over message (%zd bytes)", k);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void worker_main(int s, int idx)
{
	char who[32];
	struct fdset start;
	atomic_int live = 0;
	long got = 0;

	snprintf(who, sizeof(who), "worker %d", idx);
	g_role = "worker";
	fd_snapshot(&start);
	for (;;) {
		struct handoff ho;
		int fd = recv_fd(s, &ho);
		if (fd == -2)
			break;
		if (fd < 0) {
			err("worker: recvmsg: %s", strerror(errno));
			break;
		}
		got++;
		start_thread(fd, &ho, "scm", &live);
	}
	while (atomic_load(&live) > 0)
		usleep(10 * 1000);
	printf("%s[%d]: %ld connections served\n", who, (int)getpid(), got);
	leak_check(&start, who);
	close(s);
	fflush(stdout);
	_exit(atomic_load(&g_errors) ? 1 : 0);
}

/* --- The server's epoll loop ------------------------------------------------ */

struct conn {
	int fd;
	enum way way;
	int phase; /* 0 header, 1 data, 2 trailer, 3 waiting for the end */
	unsigned hgot;
	struct hdr h;
	uint64_t in;
	struct fl sum;
	uint8_t *buf;
	size_t poff, plen; /* pending output in buf */
	uint32_t events;
};

struct server {
	int ep, lfd, wk[2];
	pid_t wpid[2];
	unsigned port;
	long accepted, by_way[W_N], children, child_fail;
	atomic_int threads;
	int conns, quit;
	char *self;
};

static void conn_close(struct server *sv, struct conn *c, int with_fd)
{
	if (with_fd) {
		epoll_ctl(sv->ep, EPOLL_CTL_DEL, c->fd, NULL);
		ours(c->fd, 0);
		close(c->fd);
	}
	free(c->buf);
	free(c);
	sv->conns--;
}

static void hand_over(struct server *sv, struct conn *c)
{
	struct handoff ho = { c->h, c->in, c->sum };
	int fd = c->fd;

	epoll_ctl(sv->ep, EPOLL_CTL_DEL, fd, NULL);
	set_nonblock(fd, 0);
	if (c->way == W_FORK || c->way == W_EXEC) {
		pid_t p = fork();
		if (p == 0) {
			if (c->way == W_FORK) {
				g_role = "fork";
				close_ours_but(fd);
				_exit(serve_blocking(fd, &ho, "fork") < 0 ? 1 : 0);
			}
			char a[7][32];
			snprintf(a[0], 32, "%d", fd);
			snprintf(a[1], 32, "%llu", (unsigned long long)ho.h.seed);
			snprintf(a[2], 32, "%llu", (unsigned long long)ho.h.up);
			snprintf(a[3], 32, "%llu", (unsigned long long)ho.in);
			snprintf(a[4], 32, "%llu", (unsigned long long)ho.sum.a);
			snprintf(a[5], 32, "%llu", (unsigned long long)ho.sum.b);
			fcntl(fd, F_SETFD, 0);
			execl(sv->self, "soak", "serve-fd", a[0], a[1], a[2], a[3], a[4], a[5],
			      (char *)NULL);
			err("exec %s: %s", sv->self, strerror(errno));
			_exit(1);
		}
		if (p < 0)
			err("fork: %s", strerror(errno));
		else
			sv->children++;
		ours(fd, 0);
		close(fd);
	} else if (c->way == W_SCM) {
		int w = (int)(sv->accepted & 1);
		if (test_send_fd(sv->wk[w], fd, &ho, sizeof(ho)) != (ssize_t)sizeof(ho))
			err("passing fd %d to worker %d: %s", fd, w, strerror(errno));
		ours(fd, 0);
		close(fd);
	} else {
		start_thread(fd, &ho, "thread", &sv->threads);
	}
	conn_close(sv, c, 0);
}

static void conn_want(struct server *sv, struct conn *c)
{
	uint32_t ev = c->plen ? EPOLLOUT : EPOLLIN;
	if (ev != c->events) {
		struct epoll_event e = { .events = ev, .data.ptr = c };
		epoll_ctl(sv->ep, EPOLL_CTL_MOD, c->fd, &e);
		c->events = ev;
	}
}

/* One step of a connection in the epoll loop; returns when it would block
 * (or is closed or handed over). */
static void conn_step(struct server *sv, struct conn *c)
{
	char who[64];
	snprintf(who, sizeof(who), "server epoll fd %d", c->fd);
	for (;;) {
		if (c->plen) {
			ssize_t k = send(c->fd, c->buf + c->poff, c->plen, MSG_NOSIGNAL);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (k <= 0) {
				err("%s: seed %016llx: send at byte %llu: %s", who,
				    (unsigned long long)c->h.seed, (unsigned long long)c->in,
				    strerror(errno));
				conn_close(sv, c, 1);
				return;
			}
			c->poff += (size_t)k;
			c->plen -= (size_t)k;
			continue;
		}
		if (c->phase == 0) {
			ssize_t k = read(c->fd, (char *)&c->h + c->hgot, sizeof(c->h) - c->hgot);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (k <= 0 || (c->hgot += (unsigned)k, c->hgot == sizeof(c->h) &&
							   c->h.magic != MAGIC)) {
				err("%s: header: %s", who, k < 0 ? strerror(errno) : k == 0 ? "end of stream" : "bad magic");
				conn_close(sv, c, 1);
				return;
			}
			if (c->hgot < sizeof(c->h))
				continue;
			if (c->h.flags & F_QUIT) {
				sv->quit = 1;
				conn_close(sv, c, 1);
				return;
			}
			c->phase = 1;
			if (getenv("SOAK_TRACE"))
				printf("trace: fd %d seed %016llx up %llu handoff %llu way %s\n", c->fd,
				       (unsigned long long)c->h.seed, (unsigned long long)c->h.up,
				       (unsigned long long)c->h.handoff, way_names[c->way]);
			continue;
		}
		if (c->phase == 1 && c->in == c->h.up) {
			memcpy(c->buf, &c->sum, sizeof(c->sum));
			c->poff = 0;
			c->plen = sizeof(c->sum);
			c->phase = 2;
			continue;
		}
		if (c->phase == 2) {
			c->phase = 3;
			continue;
		}
		if (c->phase == 1 && c->way != W_EPOLL && c->in >= c->h.handoff) {
			hand_over(sv, c);
			return;
		}
		size_t want = MAX_MSG;
		if (c->phase == 1 && want > c->h.up - c->in)
			want = (size_t)(c->h.up - c->in);
		if (c->phase == 1 && c->way != W_EPOLL && want > c->h.handoff - c->in)
			want = (size_t)(c->h.handoff - c->in);
		ssize_t k = read(c->fd, c->buf, c->phase == 3 ? 1 : want);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (c->phase == 3 && k == 0) { /* done */
			conn_close(sv, c, 1);
			return;
		}
		if (k <= 0 || c->phase == 3) {
			err("%s: seed %016llx: %s at byte %llu of %llu", who,
			    (unsigned long long)c->h.seed,
			    k < 0 ? strerror(errno) : k == 0 ? "end of stream" : "more data after the last byte",
			    (unsigned long long)c->in, (unsigned long long)c->h.up);
			conn_close(sv, c, 1);
			return;
		}
		if (check(0, c->h.seed, c->in, c->buf, (size_t)k, c->h.up, who) < 0) {
			conn_close(sv, c, 1);
			return;
		}
		fl_update(&c->sum, c->buf, (size_t)k);
		xor_key(c->h.seed, c->in, c->buf, (size_t)k);
		c->poff = 0;
		c->plen = (size_t)k;
		fault(c->in, c->buf, &c->plen);
		c->in += (uint64_t)k;
	}
	conn_want(sv, c);
}

static void reap(struct server *sv, int block)
{
	int st;
	pid_t p;
	while (sv->children > 0 && (p = waitpid(-1, &st, block ? 0 : WNOHANG)) > 0) {
		if (p == sv->wpid[0] || p == sv->wpid[1]) {
			err("worker %d ended early", (int)p);
			continue;
		}
		sv->children--;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			char b[64];
			sv->child_fail++;
			err("handler child %d: %s", (int)p, test_status_str(st, b, sizeof(b)));
		}
	}
}

static int run_server(const char *portfile, char *self)
{
	struct server sv = { .self = self };
	struct fdset start;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int one = 1;

	g_role = "server";
	/* SOAK_WAYS=exec,scm: only those (to narrow a failure down). */
	enum way ways[W_N];
	int nways = 0;
	const char *only = getenv("SOAK_WAYS");
	for (int w = 0; w < W_N; w++)
		if (!only || !*only || strstr(only, way_names[w]))
			ways[nways++] = (enum way)w;
	if (!nways) {
		err("SOAK_WAYS=%s names no way (epoll, fork, scm, exec, thread)", only);
		return 2;
	}
	sv.ep = epoll_create1(EPOLL_CLOEXEC);
	sv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(sv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sv.ep < 0 || sv.lfd < 0 || bind(sv.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(sv.lfd, 512) < 0 || getsockname(sv.lfd, (struct sockaddr *)&a, &al) < 0) {
		err("listen: %s", strerror(errno));
		return 1;
	}
	sv.port = ntohs(a.sin_port);
	ours(sv.ep, 1);
	ours(sv.lfd, 1);
	fd_snapshot(&start);
	for (int w = 0; w < 2; w++) {
		int sp[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
			err("socketpair: %s", strerror(errno));
			return 1;
		}
		sv.wpid[w] = fork();
		if (sv.wpid[w] == 0) {
			close(sp[0]);
			close(sv.lfd);
			close(sv.ep);
			if (w == 1)
				close(sv.wk[0]);
			worker_main(sp[1], w);
		}
		close(sp[1]);
		sv.wk[w] = sp[0];
		ours(sp[0], 1);
	}
	struct epoll_event le = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(sv.ep, EPOLL_CTL_ADD, sv.lfd, &le);
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", portfile);
	FILE *pf = fopen(tmp, "w");
	if (!pf || fprintf(pf, "%u\n", sv.port) < 0 || fclose(pf) != 0 || rename(tmp, portfile) < 0) {
		err("%s: %s", portfile, strerror(errno));
		return 1;
	}
	printf("server[%d]: listening on 127.0.0.1:%u, workers %d %d\n", (int)getpid(), sv.port,
	       (int)sv.wpid[0], (int)sv.wpid[1]);

	while (!sv.quit || sv.conns > 0 || sv.children > 0 || atomic_load(&sv.threads) > 0) {
		struct epoll_event ev[64];
		int n = epoll_wait(sv.ep, ev, 64, 100);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.ptr) {
				conn_step(&sv, ev[i].data.ptr);
				continue;
			}
			for (;;) {
				int fd = accept4(sv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (fd < 0) {
					if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
						err("accept4: %s", strerror(errno));
					break;
				}
				struct conn *c = calloc(1, sizeof(*c));
				c->buf = malloc(MAX_MSG + 1);
				c->fd = fd;
				c->way = ways[sv.accepted++ % nways];
				sv.by_way[c->way]++;
				c->events = EPOLLIN;
				ours(fd, 1);
				struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
				epoll_ctl(sv.ep, EPOLL_CTL_ADD, fd, &e);
				sv.conns++;
			}
		}
		reap(&sv, 0);
		if (sv.quit)
			epoll_ctl(sv.ep, EPOLL_CTL_DEL, sv.lfd, NULL);
	}
	/* The end: the workers go when their socket closes. */
	for (int w = 0; w < 2; w++) {
		ours(sv.wk[w], 0);
		close(sv.wk[w]);
	}
	for (int w = 0; w < 2; w++) {
		int st;
		char b[64];
		if (waitpid(sv.wpid[w], &st, 0) == sv.wpid[w] && (!WIFEXITED(st) || WEXITSTATUS(st)))
			err("worker %d: %s", w, test_status_str(st, b, sizeof(b)));
	}
	/* The epoll set goes too, and with it the library's eventfd in it
	 * (made with the set's first moved socket). */
	char epl[32];
	snprintf(epl, sizeof(epl), "%d -> ", sv.ep);
	for (int i = 0; i < start.n; i++)
		if (strncmp(start.link[i], epl, strlen(epl)) == 0)
			start.link[i] = start.link[--start.n];
	ours(sv.ep, 0);
	close(sv.ep);
	sv.accepted--; /* the QUIT connection */
	sv.by_way[ways[sv.accepted % nways]]--;
	printf("server: %ld connections:", sv.accepted);
	for (int w = 0; w < W_N; w++)
		printf(" %s %ld", way_names[w], sv.by_way[w]);
	printf("; %ld handler children failed\n", sv.child_fail);
	leak_check(&start, "server");
	names_left(sv.port);
	log_counts("server");
	unsigned long e = atomic_load(&g_errors);
	printf("server: errors %lu\n", e);
	return e ? 1 : 0;
}

static int run_serve_fd(char **argv)
{
	struct handoff ho = { { MAGIC, 0, 0, 0, 0 }, 0, { 0, 0 } };
	int fd = atoi(argv[0]);

	g_role = "exec";
	ho.h.seed = strtoull(argv[1], NULL, 10);
	ho.h.up = strtoull(argv[2], NULL, 10);
	ho.in = strtoull(argv[3], NULL, 10);
	ho.sum.a = strtoull(argv[4], NULL, 10);
	ho.sum.b = strtoull(argv[5], NULL, 10);
	int rc = serve_blocking(fd, &ho, "exec");
	close(fd);
	return rc < 0 ? 1 : 0;
}

/* --- Clients ---------------------------------------------------------------- */

enum kind { K_BLOCK, K_POLL, K_EPOLL, K_SHORT, K_N };
static const char *const kind_names[K_N] = { "blocking", "poll", "epoll", "short" };

struct stats {
	atomic_ulong conns, up, down, errors, big;
};

static struct stats *g_stats; /* shared by the client processes */
static unsigned g_port;
static double g_deadline, g_long_until;

static int dial(int nonblock)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0) {
		err("socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		err("connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* A connection's plan: short, medium or long, and where the server hands
 * it over. */
static void plan(struct test_rng *r, enum kind k, struct hdr *h)
{
	uint64_t p = test_rng_next(r) % 100;
	h->magic = MAGIC;
	h->flags = 0;
	h->seed = test_rng_next(r);
	if (k == K_SHORT || p < 35)
		h->up = test_rng_range(r, 1, k == K_SHORT && p < 10 ? 4096 : 64);
	else if (p < 88 || now_s() > g_long_until)
		h->up = (64u << 10) + test_rng_size(r, (4u << 20) - (64u << 10));
	else
		h->up = test_rng_range(r, 8u << 20, 64u << 20);
	h->handoff = test_rng_next(r) % 2 ? 0 : test_rng_range(r, 0, h->up < (1u << 20) ? h->up : 1u << 20);
}

/* Client side of one connection, for the non-blocking kinds. */
struct cconn {
	int fd;
	struct hdr h;
	uint64_t sent, got; /* data bytes (the header is sent first) */
	unsigned hsent;
	size_t msg_left;
	int shut, early;    /* SHUT_WR sent; send it before the echo is in */
	int phase;          /* 0 exchanging, 1 waiting for the end */
	struct fl sum;      /* of what we sent */
	uint8_t trailer[sizeof(struct fl)];
	unsigned tgot;
	double last;
	struct test_rng r;
};

static void cconn_finish(struct cconn *c, int ok)
{
	if (ok) {
		atomic_fetch_add(&g_stats->conns, 1);
		if (c->h.up >= (1u << 20))
			atomic_fetch_add(&g_stats->big, 1);
	}
	close(c->fd);
	c->fd = -1;
}

/* Take in what the server returned: data checked, then the trailer. */
static int take(struct cconn *c, const uint8_t *p, size_t n)
{
	char who[64];
	snprintf(who, sizeof(who), "client fd %d", c->fd);
	size_t d = 0;
	if (c->got < c->h.up) {
		d = n < c->h.up - c->got ? n : (size_t)(c->h.up - c->got);
		if (check(1, c->h.seed, c->got, p, d, c->h.up, who) < 0)
			return -1;
		c->got += d;
		atomic_fetch_add(&g_stats->down, d);
	}
	if (d < n && c->tgot + (n - d) > sizeof(c->trailer)) {
		err("%s: seed %016llx: %zu bytes more than the trailer", who,
		    (unsigned long long)c->h.seed, c->tgot + (n - d) - sizeof(c->trailer));
		return -1;
	}
	memcpy(c->trailer + c->tgot, p + d, n - d);
	c->tgot += (unsigned)(n - d);
	if (c->tgot == sizeof(c->trailer)) {
		if (c->sent != c->h.up || memcmp(c->trailer, &c->sum, sizeof(c->sum)) != 0) {
			struct fl t;
			memcpy(&t, c->trailer, sizeof(t));
			err("%s: seed %016llx: the server's sums %016llx/%016llx, ours %016llx/%016llx "
			    "(%llu of %llu bytes sent)", who, (unsigned long long)c->h.seed,
			    (unsigned long long)t.a, (unsigned long long)t.b,
			    (unsigned long long)c->sum.a, (unsigned long long)c->sum.b,
			    (unsigned long long)c->sent, (unsigned long long)c->h.up);
			return -1;
		}
		c->phase = 1;
	}
	return 0;
}

/* One non-blocking step: send what we can, read what there is.  -1 on an
 * error (reported), 1 when finished, 0 otherwise. */
static int cconn_step(struct cconn *c, uint8_t *buf)
{
	for (int progress = 1; progress;) {
		progress = 0;
		if (c->hsent < sizeof(c->h)) {
			ssize_t k = send(c->fd, (char *)&c->h + c->hsent, sizeof(c->h) - c->hsent, MSG_NOSIGNAL);
			if (k < 0 && errno != EAGAIN && errno != EINTR) {
				err("client: header: %s", strerror(errno));
				return -1;
			}
			if (k > 0)
				c->hsent += (unsigned)k, progress = 1;
		} else if (c->sent < c->h.up) {
			if (!c->msg_left) {
				c->msg_left = (size_t)test_rng_size(&c->r, MAX_MSG);
				if (c->msg_left > c->h.up - c->sent)
					c->msg_left = (size_t)(c->h.up - c->sent);
			}
			test_stream_fill(c->h.seed, c->sent, buf, c->msg_left);
			ssize_t k = send(c->fd, buf, c->msg_left, MSG_NOSIGNAL);
			if (k < 0 && errno != EAGAIN && errno != EINTR) {
				int e = errno;
				err("client: seed %016llx (port %d): send at %llu: %s",
				    (unsigned long long)c->h.seed, port_of(c->fd),
				    (unsigned long long)c->sent, strerror(e));
				return -1;
			}
			if (k > 0) {
				fl_update(&c->sum, buf, (size_t)k);
				c->sent += (uint64_t)k;
				c->msg_left -= (size_t)k;
				atomic_fetch_add(&g_stats->up, (uint64_t)k);
				progress = 1;
			}
		} else if (!c->shut && c->early) {
			shutdown(c->fd, SHUT_WR); /* sometimes before the echo is in */
			c->shut = 1;
		}
		ssize_t k = recv(c->fd, buf, MAX_MSG, 0);
		if (k < 0 && errno != EAGAIN && errno != EINTR) {
			int e = errno;
			err("client: seed %016llx (port %d): recv at %llu of %llu (trailer %u): %s",
			    (unsigned long long)c->h.seed, port_of(c->fd), (unsigned long long)c->got,
			    (unsigned long long)c->h.up, c->tgot, strerror(e));
			return -1;
		}
		if (k == 0) {
			if (c->phase == 1 && c->shut)
				return 1;
			err("client: seed %016llx (port %d): end of stream at %llu of %llu (trailer %u)",
			    (unsigned long long)c->h.seed, port_of(c->fd), (unsigned long long)c->got,
			    (unsigned long long)c->h.up, c->tgot);
			return -1;
		}
		if (k > 0) {
			if (c->phase == 1) {
				err("client: seed %016llx: %zd bytes after the trailer",
				    (unsigned long long)c->h.seed, k);
				return -1;
			}
			if (take(c, buf, (size_t)k) < 0)
				return -1;
			progress = 1;
		}
		if (c->phase == 1 && !c->shut) {
			shutdown(c->fd, SHUT_WR);
			c->shut = 1;
			progress = 1;
		}
		if (progress)
			c->last = now_s();
	}
	return 0;
}

static void cconn_events(const struct cconn *c, short *ev)
{
	*ev = POLLIN | (c->hsent < sizeof(c->h) || c->sent < c->h.up ? POLLOUT : 0);
}

static void client_nb(enum kind k, struct test_rng *r)
{
	struct cconn c[NB_CONNS];
	uint8_t *buf = malloc(MAX_MSG);
	int ep = k == K_EPOLL ? epoll_create1(EPOLL_CLOEXEC) : -1;

	for (int i = 0; i < NB_CONNS; i++)
		c[i].fd = -1;
	for (;;) {
		int live = 0;
		for (int i = 0; i < NB_CONNS; i++) {
			if (c[i].fd < 0 && now_s() < g_deadline) {
				memset(&c[i], 0, sizeof(c[i]));
				plan(r, k, &c[i].h);
				test_rng_seed(&c[i].r, c[i].h.seed);
				c[i].early = test_rng_next(&c[i].r) % 4 == 0;
				c[i].fd = dial(1);
				c[i].last = now_s();
				if (c[i].fd >= 0 && ep >= 0) {
					struct epoll_event e = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i };
					epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &e);
				}
			}
			live += c[i].fd >= 0;
		}
		if (!live)
			break;
		int ready[NB_CONNS] = { 0 };
		if (ep >= 0) {
			struct epoll_event ev[NB_CONNS];
			for (int i = 0; i < NB_CONNS; i++) {
				if (c[i].fd < 0)
					continue;
				short want;
				cconn_events(&c[i], &want);
				struct epoll_event e = { .events = (uint32_t)want, .data.u32 = (uint32_t)i };
				epoll_ctl(ep, EPOLL_CTL_MOD, c[i].fd, &e);
			}
			int n = epoll_wait(ep, ev, NB_CONNS, 1000);
			for (int j = 0; j < n; j++)
				ready[ev[j].data.u32] = 1;
		} else {
			struct pollfd p[NB_CONNS];
			for (int i = 0; i < NB_CONNS; i++) {
				p[i].fd = c[i].fd;
				cconn_events(&c[i], &p[i].events);
			}
			poll(p, NB_CONNS, 1000);
			for (int i = 0; i < NB_CONNS; i++)
				ready[i] = p[i].fd >= 0 && p[i].revents;
		}
		for (int i = 0; i < NB_CONNS; i++) {
			if (c[i].fd < 0)
				continue;
			int rc = ready[i] ? cconn_step(&c[i], buf) : 0;
			if (rc == 0 && now_s() - c[i].last > STALL_S) {
				err("client %s: seed %016llx: no progress for %d s at %llu sent, %llu back "
				    "of %llu, trailer %u, %s", kind_names[k], (unsigned long long)c[i].h.seed,
				    STALL_S, (unsigned long long)c[i].sent, (unsigned long long)c[i].got,
				    (unsigned long long)c[i].h.up, c[i].tgot,
				    c[i].phase ? "waiting for the end of stream" : c[i].shut ? "shut" : "");
				rc = -1;
			}
			if (rc != 0)
				cconn_finish(&c[i], rc > 0);
		}
	}
	if (ep >= 0)
		close(ep);
	free(buf);
}

/* The blocking kind: a writer thread and this one reading. */
struct writer {
	int fd;
	const struct hdr *h;
	struct fl sum;
	int failed, shut;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t *buf = malloc(MAX_MSG);
	struct test_rng r;
	uint64_t off = 0;
	int e;

	test_rng_seed(&r, w->h->seed);
	if (write_all(w->fd, w->h, sizeof(*w->h), 0) < 0)
		goto fail;
	while (off < w->h->up) {
		size_t m = (size_t)test_rng_size(&r, MAX_MSG);
		if (m > w->h->up - off)
			m = (size_t)(w->h->up - off);
		test_stream_fill(w->h->seed, off, buf, m);
		fl_update(&w->sum, buf, m);
		if (write_all(w->fd, buf, m, (unsigned)test_rng_next(&r)) < 0)
			goto fail;
		off += m;
		atomic_fetch_add(&g_stats->up, m);
	}
	if (test_rng_next(&r) % 2) {
		shutdown(w->fd, SHUT_WR);
		w->shut = 1;
	}
	free(buf);
	return NULL;
fail:
	e = errno;
	err("client blocking: seed %016llx (port %d): write at %llu: %s",
	    (unsigned long long)w->h->seed, port_of(w->fd), (unsigned long long)off, strerror(e));
	stacks_if_hung(w->fd, e);
	w->failed = 1;
	free(buf);
	return NULL;
}

static int client_block_one(struct test_rng *r, enum kind k, uint8_t *buf)
{
	struct cconn c = { 0 };
	plan(r, k, &c.h);
	c.fd = dial(0);
	if (c.fd < 0)
		return -1;
	set_timeouts(c.fd);
	struct writer w = { .fd = c.fd, .h = &c.h };
	pthread_t t;
	int rc = -1;
	if (k == K_SHORT) { /* one thread: header and data in one write */
		uint8_t m[sizeof(c.h) + 4096];
		memcpy(m, &c.h, sizeof(c.h));
		test_stream_fill(c.h.seed, 0, m + sizeof(c.h), (size_t)c.h.up);
		fl_update(&w.sum, m + sizeof(c.h), (size_t)c.h.up);
		if (write_all(c.fd, m, sizeof(c.h) + (size_t)c.h.up, 0) < 0) {
			err("client short: write: %s", strerror(errno));
			goto out;
		}
		atomic_fetch_add(&g_stats->up, c.h.up);
	} else if (pthread_create(&t, NULL, writer_main, &w) != 0) {
		err("pthread_create");
		goto out;
	}
	c.sent = c.h.up;
	int joined = k == K_SHORT;
	for (;;) {
		ssize_t n = rd(c.fd, buf, MAX_MSG, (unsigned)test_rng_next(r));
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0 && c.phase == 0) {
			/* The trailer holds the writer's sums: it has finished by
			 * the time anything past the data comes back. */
			if (!joined && c.got + (uint64_t)n > c.h.up) {
				pthread_join(t, NULL);
				joined = 1;
			}
			if (joined)
				c.sum = w.sum;
			if (take(&c, buf, (size_t)n) < 0)
				break;
			if (c.phase == 1 && !w.shut)
				shutdown(c.fd, SHUT_WR);
			continue;
		}
		if (n == 0 && c.phase == 1) {
			rc = 0;
			break;
		}
		int e = errno;
		err("client %s: seed %016llx (port %d): %s at %llu of %llu (trailer %u)",
		    kind_names[k], (unsigned long long)c.h.seed, port_of(c.fd),
		    n < 0 ? strerror(e) : n == 0 ? "end of stream" : "more data after the trailer",
		    (unsigned long long)c.got, (unsigned long long)c.h.up, c.tgot);
		if (n < 0)
			stacks_if_hung(c.fd, e);
		break;
	}
	if (!joined)
		pthread_join(t, NULL);
	if (w.failed)
		rc = -1;
out:
	cconn_finish(&c, rc == 0);
	return rc;
}

static void client_main(enum kind k, uint64_t seed)
{
	struct test_rng r;
	uint8_t *buf = malloc(MAX_MSG);

	test_rng_seed(&r, seed);
	if (k == K_POLL || k == K_EPOLL) {
		client_nb(k, &r);
	} else {
		while (now_s() < g_deadline) {
			client_block_one(&r, k, buf);
			if (k == K_SHORT)
				usleep(5000); /* keep TIME_WAIT sockets few */
		}
	}
	free(buf);
	_exit(atomic_load(&g_errors) ? 1 : 0);
}

static int run_clients(unsigned port, double secs, int nproc)
{
	pid_t pid[64];
	double t0 = now_s();
	int fail = 0;

	g_role = "client";
	test_init("soak");
	uint64_t seed = test_seed();
	g_port = port;
	g_deadline = t0 + secs;
	g_long_until = g_deadline - (secs / 3 < LONG_LAST_S ? secs / 3 : LONG_LAST_S);
	g_stats = mmap(NULL, sizeof(*g_stats), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_stats == MAP_FAILED || nproc < 1 || nproc > 64)
		return 2;
	printf("clients: %d processes for %.0f s to port %u, seed %llu\n", nproc, secs, port,
	       (unsigned long long)seed);
	fflush(stdout);
	/* SOAK_KINDS=poll,epoll: only those kinds of client. */
	enum kind kinds[K_N], kind_of[64];
	int nkinds = 0;
	const char *only = getenv("SOAK_KINDS");
	for (int k = 0; k < K_N; k++)
		if (!only || !*only || strstr(only, kind_names[k]))
			kinds[nkinds++] = (enum kind)k;
	if (!nkinds) {
		err("SOAK_KINDS=%s names no kind (blocking, poll, epoll, short)", only);
		return 2;
	}
	for (int i = 0; i < nproc; i++) {
		kind_of[i] = kinds[i % nkinds];
		pid[i] = fork();
		if (pid[i] == 0)
			client_main(kind_of[i], test_mix64(seed + (uint64_t)i));
	}
	for (int i = 0; i < nproc; i++) {
		int st;
		pid_t p;
		/* The clients finish the connections they started (4 MiB at most
		 * in the last LONG_LAST_S), however slow the machine; one that
		 * makes no progress for STALL_S reports it.  Past that, a hang. */
		while ((p = waitpid(pid[i], &st, WNOHANG)) == 0 &&
		       now_s() < t0 + secs + STALL_S + 8)
			usleep(50 * 1000);
		if (p == 0) {
			err("client %d (%s) hangs: killed", (int)pid[i], kind_names[kind_of[i]]);
			stacks(pid[i]);
			kill(pid[i], SIGKILL);
			waitpid(pid[i], &st, 0);
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			char b[64];
			err("client %d (%s): %s", (int)pid[i], kind_names[kind_of[i]],
			    test_status_str(st, b, sizeof(b)));
			fail = 1;
		}
	}
	/* Tell the server to end. */
	struct hdr q = { MAGIC, F_QUIT, 0, 0, 0 };
	int fd = dial(0);
	if (fd < 0 || write_all(fd, &q, sizeof(q), 0) < 0)
		err("the QUIT connection: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	unsigned long e = atomic_load(&g_errors) + atomic_load(&g_stats->errors);
	printf("clients: %.1f s, %lu connections (%lu of 1 MiB or more), %.1f MiB up, %.1f MiB down, "
	       "errors %lu\n", now_s() - t0, atomic_load(&g_stats->conns), atomic_load(&g_stats->big),
	       (double)atomic_load(&g_stats->up) / (1 << 20),
	       (double)atomic_load(&g_stats->down) / (1 << 20), e + (unsigned long)fail);
	log_counts("clients");
	return e || fail ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: soak server PORTFILE | soak clients PORT SECS NPROC\n");
	exit(2);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && strcmp(argv[1], "server") == 0) {
		char self[4096];
		ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (k < 0)
			return 2;
		self[k] = 0;
		return run_server(argv[2], self);
	}
	if (argc == 5 && strcmp(argv[1], "clients") == 0)
		return run_clients((unsigned)atoi(argv[2]), atof(argv[3]), atoi(argv[4]));
	if (argc == 8 && strcmp(argv[1], "serve-fd") == 0)
		return run_serve_fd(argv + 2);
	usage();
}
