/*
 * testlib.h - a small test harness for the shunt test programs.
 *
 * Each tests/t_*.c is a standalone program: it exits 0 when every check
 * passed, 1 on the first failed check (TEST_FAIL) and 77 when it cannot run
 * here (TEST_SKIP), the automake convention that tests/run.sh understands.
 *
 * The ASSERT macros print the expression, both values and file:line, then
 * end the process (after killing any child started with test_fork()).  They
 * work in any thread and in forked children: a failing child exits 1, which
 * the parent sees through test_wait().
 *
 * Return conventions checked here: libshunt returns negative errno values
 * (ASSERT_OK, ASSERT_ERR); libc returns -1 and sets errno (ASSERT_SYS).
 */
#ifndef SHUNT_TESTLIB_H
#define SHUNT_TESTLIB_H

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define TEST_PASS 0
#define TEST_FAIL 1
#define TEST_SKIP 77

/* --- Reporting -------------------------------------------------------- */

/* Call first in main(): records the name, prints the seed, makes stdout
 * unbuffered-by-line, ignores SIGPIPE and sets up the child registry. */
void test_init(const char *name);
/* Print "fail: <file>:<line>: <message>", kill registered children, exit 1. */
__attribute__((noreturn, format(printf, 3, 4)))
void test_fail_at(const char *file, int line, const char *fmt, ...);
/* Print "skip: <message>" and exit 77. */
__attribute__((noreturn, format(printf, 1, 2)))
void test_skip(const char *fmt, ...);
/* Progress line on stdout, prefixed with the test name and elapsed time. */
__attribute__((format(printf, 1, 2)))
void test_log(const char *fmt, ...);
/* Name of an errno value ("EPIPE"), or "E?" for one not in the table. */
const char *test_errname(int err);

#define TEST_FAIL_MSG(...) test_fail_at(__FILE__, __LINE__, __VA_ARGS__)

#define ASSERT(expr)                                                       \
	do {                                                               \
		if (!(expr))                                               \
			TEST_FAIL_MSG("assertion failed: %s", #expr);      \
	} while (0)

/* Like ASSERT, with a printf-style explanation. */
#define ASSERT_MSG(expr, ...)                                              \
	do {                                                               \
		if (!(expr)) {                                             \
			test_log("assertion failed: %s", #expr);           \
			TEST_FAIL_MSG(__VA_ARGS__);                        \
		}                                                          \
	} while (0)

/* Signed comparison: both sides are converted to intmax_t. */
#define ASSERT_CMP(a, op, b)                                               \
	do {                                                               \
		intmax_t a_ = (intmax_t)(a);                               \
		intmax_t b_ = (intmax_t)(b);                               \
		if (!(a_ op b_))                                           \
			TEST_FAIL_MSG("assertion failed: %s %s %s "        \
				      "(%jd %s %jd)", #a, #op, #b, a_, #op, b_); \
	} while (0)

/* Unsigned comparison: both sides are converted to uintmax_t. */
#define ASSERT_UCMP(a, op, b)                                              \
	do {                                                               \
		uintmax_t a_ = (uintmax_t)(a);                             \
		uintmax_t b_ = (uintmax_t)(b);                             \
		if (!(a_ op b_))                                           \
			TEST_FAIL_MSG("assertion failed: %s %s %s "        \
				      "(%ju %s %ju = 0x%jx %s 0x%jx)", #a, #op, #b, \
				      a_, #op, b_, a_, #op, b_);           \
	} while (0)

#define ASSERT_EQ(a, b) ASSERT_CMP(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_CMP(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_CMP(a, <, b)
#define ASSERT_LE(a, b) ASSERT_CMP(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_CMP(a, >, b)
#define ASSERT_GE(a, b) ASSERT_CMP(a, >=, b)

#define ASSERT_UEQ(a, b) ASSERT_UCMP(a, ==, b)
#define ASSERT_UNE(a, b) ASSERT_UCMP(a, !=, b)
#define ASSERT_ULT(a, b) ASSERT_UCMP(a, <, b)
#define ASSERT_ULE(a, b) ASSERT_UCMP(a, <=, b)
#define ASSERT_UGT(a, b) ASSERT_UCMP(a, >, b)
#define ASSERT_UGE(a, b) ASSERT_UCMP(a, >=, b)

#define ASSERT_PTR_EQ(a, b)                                                \
	do {                                                               \
		const void *a_ = (a), *b_ = (b);                           \
		if (a_ != b_)                                              \
			TEST_FAIL_MSG("assertion failed: %s == %s (%p != %p)", \
				      #a, #b, a_, b_);                     \
	} while (0)
#define ASSERT_NULL(a) ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a)                                                 \
	do {                                                               \
		if ((a) == NULL)                                           \
			TEST_FAIL_MSG("assertion failed: %s != NULL", #a); \
	} while (0)

/* A libshunt-style return: >= 0 is success, < 0 is a negative errno. */
#define ASSERT_OK(expr)                                                    \
	do {                                                               \
		intmax_t r_ = (intmax_t)(expr);                            \
		if (r_ < 0)                                                \
			TEST_FAIL_MSG("%s failed: %jd (%s: %s)", #expr, r_, \
				      test_errname((int)-r_), strerror((int)-r_)); \
	} while (0)

/* A libshunt-style return that must be exactly the negative errno `err`
 * (or any other exact value such as 0). */
#define ASSERT_ERR(expr, err)                                              \
	do {                                                               \
		intmax_t r_ = (intmax_t)(expr);                            \
		intmax_t e_ = (intmax_t)(err);                             \
		if (r_ != e_)                                              \
			TEST_FAIL_MSG("%s returned %jd (%s), want %jd (%s)", #expr, \
				      r_, r_ < 0 ? test_errname((int)-r_) : "not an error", \
				      e_, e_ < 0 ? test_errname((int)-e_) : "not an error"); \
	} while (0)

/* A libc-style return: -1 with errno is failure. */
#define ASSERT_SYS(expr)                                                   \
	do {                                                               \
		if ((intmax_t)(expr) == -1) {                              \
			int e_ = errno;                                    \
			TEST_FAIL_MSG("%s failed: errno %d (%s: %s)", #expr, \
				      e_, test_errname(e_), strerror(e_)); \
		}                                                          \
	} while (0)

/* Two byte ranges are equal; prints the first differing offset. */
#define ASSERT_MEM_EQ(a, b, n)                                             \
	do {                                                               \
		size_t off_ = test_memdiff((a), (b), (n));                 \
		if (off_ != (size_t)-1)                                    \
			TEST_FAIL_MSG("%s and %s differ at byte %zu of %zu " \
				      "(0x%02x != 0x%02x)", #a, #b, off_,  \
				      (size_t)(n),                         \
				      ((const unsigned char *)(a))[off_],  \
				      ((const unsigned char *)(b))[off_]); \
	} while (0)

/* Offset of the first differing byte, or (size_t)-1 if equal. */
size_t test_memdiff(const void *a, const void *b, size_t n);

/* --- Time --------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds / seconds. */
uint64_t test_now_ns(void);
double test_now(void);
void test_sleep_ms(unsigned ms);

/* --- Environment -------------------------------------------------------- */

/* An unsigned number from the environment (k/m/g suffixes allowed), or dflt
 * if unset or empty.  A malformed value fails the test. */
uint64_t test_env_u64(const char *name, uint64_t dflt);
/* Non-zero when built with ASan or TSan (slower; tests may scale down). */
int test_sanitized(void);
/* Non-zero when built with TSan. */
int test_tsan(void);

/* --- Processes ---------------------------------------------------------- */

/*
 * Fork a child that runs fn(arg) and then exits 0 (or exits with what fn
 * passed to exit(), or 1 on a failed ASSERT).  The child dies with SIGKILL
 * if the parent dies.  The pid is registered: a failing parent kills it.
 */
pid_t test_fork(void (*fn)(void *arg), void *arg);
/*
 * Wait for a child for at most timeout_s seconds.  Returns the wait status.
 * Past the timeout the child is killed with SIGKILL, reaped and the test
 * fails.  Unregisters the pid.
 */
int test_wait(pid_t pid, double timeout_s);
/* test_wait(), then fail unless the child exited with status 0. */
void test_wait_ok(pid_t pid, double timeout_s);
/* Describe a wait status ("exited 1", "killed by SIGSEGV") into buf. */
const char *test_status_str(int status, char *buf, size_t len);
/* Forget a pid the caller reaped itself (e.g. after killing it). */
void test_unregister(pid_t pid);

/* --- Names -------------------------------------------------------------- */

/*
 * Point SHUNT_DIR at a fresh private directory for this test (unless one is
 * set already by the runner) so listeners never collide with the user's.
 * Must run before the first libshunt call (the library reads it once).
 */
void test_use_private_dir(void);
/* A listener name unique to this process: "t-<pid>-<counter>". */
const char *test_name_unique(char *buf, size_t len);

/* --- Checksums and deterministic data ----------------------------------- */

/* splitmix64: a good 64-bit mixer and PRNG step. */
uint64_t test_mix64(uint64_t x);

/* A deterministic PRNG (xoshiro-like quality via splitmix64 seeding). */
struct test_rng {
	uint64_t s[2];
};
void test_rng_seed(struct test_rng *r, uint64_t seed);
uint64_t test_rng_next(struct test_rng *r);
/* Uniform in [lo, hi] (inclusive). */
uint64_t test_rng_range(struct test_rng *r, uint64_t lo, uint64_t hi);
/* Log-uniform in [1, max]: small sizes as likely as large ones. */
uint64_t test_rng_size(struct test_rng *r, uint64_t max);
/* Fill a buffer with random bytes. */
void test_rng_fill(struct test_rng *r, void *buf, size_t n);

/* The seed of this run: SHUNT_TEST_SEED if set, else from the clock.
 * Printed by test_init() so that a failure can be replayed. */
uint64_t test_seed(void);

/*
 * A deterministic byte stream, addressable by offset: byte i of stream
 * `seed` is the same whoever computes it, so a receiver regenerates exactly
 * what the sender sent, chunk by chunk, at any chunk boundaries.
 */
void test_stream_fill(uint64_t seed, uint64_t off, void *buf, size_t n);
/* Compare buf with the stream at off; returns the index of the first bad
 * byte in buf, or (size_t)-1 if all n bytes match. */
size_t test_stream_check(uint64_t seed, uint64_t off, const void *buf, size_t n);

/* A fast streaming 64-bit checksum (8 bytes per step, any chunking gives
 * the same result as one call over the concatenation). */
struct test_sum {
	uint64_t v[4];        /* four independent lanes */
	unsigned char buf[32]; /* bytes not yet making a full block */
	unsigned nbuf;
	uint64_t len;
};
void test_sum_init(struct test_sum *s);
void test_sum_update(struct test_sum *s, const void *buf, size_t n);
uint64_t test_sum_final(const struct test_sum *s);
/* One-shot. */
uint64_t test_sum(const void *buf, size_t n);

/* --- libshunt helpers --------------------------------------------------- */

struct shunt_conn;
struct shunt_listener;
struct shunt_opts;

/* Both ends of one connection in this process: listen on a fresh name,
 * connect with opts (may be NULL), accept, close the listener unless lp is
 * given (then *lp keeps it). */
void test_pair(const struct shunt_opts *opts, struct shunt_conn **client,
	       struct shunt_conn **server, struct shunt_listener **lp);
/* Send all n bytes (blocking); fails the test on an error. */
void test_send_all(struct shunt_conn *c, const void *buf, size_t n);
/* Receive exactly n bytes (blocking); fails the test on an error or EOF. */
void test_recv_exact(struct shunt_conn *c, void *buf, size_t n);

/* --- Watchdog ------------------------------------------------------------ */

/* After `seconds`, print the last test_log() line and exit 1 (0: cancel).
 * Gives a hang a useful message before the runner's timeout would. */
void test_watchdog(unsigned seconds);

/* --- /proc -------------------------------------------------------------- */

/* Number of open file descriptors of this process. */
int test_count_fds(void);
/* Number of fds / mappings whose target starts with prefix
 * (e.g. "/memfd:shunt"). */
/* Does fd point at something whose /proc link starts with prefix? */
int test_fd_is(int fd, const char *prefix);
int test_count_fd_links(const char *prefix);
int test_count_maps(const char *prefix);

/* --- Passing an fd -------------------------------------------------------- */

/* One message of len bytes carrying fd (SCM_RIGHTS) on the UNIX socket
 * via, MSG_NOSIGNAL: what sendmsg returned. */
ssize_t test_send_fd(int via, int fd, const void *msg, size_t len);
/* One message of at most len bytes into msg from via (recvmsg's flags,
 * EINTR retried), and in *fd the fd it carried, -1 if none: what recvmsg
 * returned. */
ssize_t test_recv_fd(int via, void *msg, size_t len, int flags, int *fd);

#endif /* SHUNT_TESTLIB_H */
