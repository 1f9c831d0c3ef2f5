/*
 * shimlib.h - helpers for the tests/t_shim_*.c reproducers.
 *
 * Each t_shim_* program is linked with the socket shim's objects, so its
 * libc socket calls go through the shim's wrappers, instrumented under
 * SAN=asan and SAN=tsan.  A case is a function that makes
 * ordinary TCP connections over 127.0.0.1, moves them to shared memory
 * (ts_make_accelerated*: round trips until shunt__shim_is_accelerated()
 * is 1 at both ends), then does what some real program does with its fds
 * and checks that it sees exactly what kernel TCP gives.  With
 * SHUNT_DISABLE=1 the shim passes everything to the kernel: that run is the
 * reference, and every case must pass there.
 *
 * Each case runs in a process of its own (a crash or a hang fails that case
 * only), bounded in time; SHUNT_TEST_ONLY=name,name runs some of them.  The
 * program prints one PASS/FAIL line per case and exits 1 if any failed.
 */
#ifndef SHUNT_SHIMLIB_H
#define SHUNT_SHIMLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "testlib.h"

/* The shim's answer: 1 once fd's connection runs over shared memory.  Weak,
 * so that a build without it still links (every fd then counts as plain). */
extern int shunt__shim_is_accelerated(int fd) __attribute__((weak));
extern int shunt__shim_is_moved(int fd) __attribute__((weak));
extern int shunt__shim_arena_used(void) __attribute__((weak));
extern long long shunt__shim_moves(void) __attribute__((weak));

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

/* --- Mode ----------------------------------------------------------------- */

/* SHUNT_DISABLE=1: the reference run on kernel TCP. */
int ts_disabled(void);
/* shunt__shim_is_accelerated(fd), or 0 without a shim. */
int ts_accel(int fd);
/* shunt__shim_is_moved(fd): met its peer, a direction may still be on TCP. */
int ts_moved(int fd);
/* This program's path (for re-executing itself). */
const char *ts_self(void);
/* Milliseconds to allow for something that takes `ms` in a plain build
 * (times 3 under a sanitizer). */
int ts_ms(int ms);

/* --- Cases ---------------------------------------------------------------- */

struct shim_case {
	const char *name;
	void (*fn)(void);
};

/*
 * main() of a t_shim_* program: test_init, a private SHUNT_DIR, then every
 * selected case in a forked process of its own with a time limit (a case
 * that overstays is killed and fails).  Within the case's process a check
 * fails with the usual ASSERT macros.  Returns the exit status.
 */
int ts_main(const char *prog, const struct shim_case *cases, size_t n);

/* --- Connections ---------------------------------------------------------- */

/* A listening TCP socket on 127.0.0.1, port chosen by the kernel. */
int ts_tcp_listen(int *port);
/* A blocking connection to 127.0.0.1:port. */
int ts_tcp_connect(int port);
/* accept() with a time limit (fails the test past it). */
int ts_tcp_accept(int lfd, int ms);
/* A connection in this process: *c connected, *s accepted. */
void ts_pair(int *c, int *s);

/* A peer in a forked process: it connects to a listener of ours and runs
 * fn(fd, arg), then exits 0; p->fd is the end we accepted.  Before it
 * connects the child closes the TCP sockets it inherited (they would keep
 * other connections open), but nothing else. */
struct shim_peer {
	pid_t pid;
	int fd;
};
void ts_peer_start(struct shim_peer *p, void (*fn)(int fd, void *arg), void *arg);
/* Wait for the peer to exit 0 (within ms). */
void ts_peer_wait(struct shim_peer *p, int ms);
/* POSIX AIO: its result once it finished (5 s at most, or a failure). */
struct aiocb;
ssize_t ts_aio_wait(struct aiocb *cb);
/* In a forked child: close inherited TCP sockets except keep. */
void ts_close_inherited_tcp(int keep);

/*
 * Move a connection to shared memory: small round trips until
 * shunt__shim_is_accelerated() is 1 at both ends, within ~2 s; fails if it
 * never happens, unless SHUNT_DISABLE=1 (then a few round trips).  The
 * round trips consume their own bytes: the stream is clean afterwards.
 * ts_make_accelerated takes both ends in this process; across processes
 * one end calls _lead and the other _follow.
 */
void ts_make_accelerated(int a, int b);
void ts_make_accelerated_lead(int fd);
void ts_make_accelerated_follow(int fd);
/* Fail unless fd is accelerated (not checked under SHUNT_DISABLE=1). */
void ts_expect_accel(int fd, const char *what);
/* A moved connection in this process: *a connected, *b accepted. */
void ts_moved_pair(int *a, int *b);
/* fn(a, b, when) on a connected pair still on TCP ("on TCP"), then on a
 * moved one ("moved", which must still be moved after it); each pair is
 * closed after. */
void ts_tcp_then_moved(void (*fn)(int a, int b, const char *when));

/* --- Bytes -------------------------------------------------------------- */

/* Write all n bytes within ms (poll + non-blocking sends; fails on error). */
void ts_write_all(int fd, const void *buf, size_t n, int ms);
/* Read exactly n bytes within ms; fails on error, end of stream or time. */
void ts_read_exact(int fd, void *buf, size_t n, int ms);
/* Read up to n bytes: waits up to ms for readability; returns what read()
 * returned (-1 with errno, EAGAIN on timeout). */
ssize_t ts_read_wait(int fd, void *buf, size_t n, int ms);
/* Stream `seed` (test_stream_fill), bytes [off, off+n). */
void ts_send_stream(int fd, uint64_t seed, uint64_t off, uint64_t n, int ms);
void ts_recv_stream(int fd, uint64_t seed, uint64_t off, uint64_t n, int ms);
/* Within ms, the next read returns 0 (end of stream); fails otherwise. */
void ts_expect_eof(int fd, int ms);
/* Send n bytes of stream seed and receive their echo at once, then
 * shutdown(SHUT_WR) and expect end of stream: for an echoing peer. */
/* The local port of a TCP socket (for messages). */
int ts_local_port(int fd);
void ts_echo_check(int fd, uint64_t seed, uint64_t n, int ms);
/* poll() one fd; returns revents (0 on timeout). */
short ts_wait_fd(int fd, short events, int ms);
/* Poll until fd reports any of `want` (level: the data and the FIN may
 * come in two steps); returns revents.  Fails after ms. */
short ts_wait_revents(int fd, short events, short want, int ms);
/* Wait until FIONREAD on fd reaches n (the bytes arrived); fails after ms. */
void ts_wait_arrived(int fd, int n, int ms);
void ts_set_nonblock(int fd, int on);

/* A stream seed unique to this run and k. */
uint64_t shim_seed(uint64_t k);

/* --- Small things ------------------------------------------------------- */

/* One byte on a pipe (a token or a go-ahead), and its wait (fails after ms). */
void ts_token_send(int fd, char c);
char ts_token_recv(int fd, int ms);
/* Install a handler (no SA_RESTART unless flags say). */
void ts_set_handler(int sig, void (*fn)(int), int flags);
/* A call that should return at once but blocks is cut by SIGALRM after s
 * seconds (EINTR), and the check on its result fails. */
void ts_guard(unsigned s);
/* CPU seconds (user + system) of this process so far. */
double ts_cpu_seconds(void);
/* From here on this process's system calls numbered nrs[0..n) (32 at
 * most) meet the seccomp `action` (SECCOMP_RET_ERRNO | err, as a sandbox
 * or an older kernel answers; SECCOMP_RET_KILL_PROCESS); 0 if the kernel
 * would not have the filter. */
int ts_seccomp_deny(const int *nrs, int n, unsigned action);
/* A system call of up to three arguments that no wrapper sees, not even
 * libc's syscall() (-1 and errno on failure, as syscall()). */
long ts_own_syscall(long nr, long a, long b, long c);

/* The fds open now, once the library let go of what it keeps a little
 * after a close (waits up to 3 s for the count to fall to `before`). */
int ts_fds_settled(int before);

#endif /* SHUNT_SHIMLIB_H */
