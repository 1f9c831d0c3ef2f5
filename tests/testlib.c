/*
 * testlib.c - the test harness (see testlib.h).
 */
#include "testlib.h"

#include <shunt.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *g_name = "test";
static uint64_t g_seed;
static uint64_t g_start_ns;

/* --- Child registry ----------------------------------------------------
 * Children are forked from one thread at a time in these tests; the slots
 * are atomics only so that a failing thread can read them safely. */
#define MAX_CHILDREN 64
static _Atomic pid_t g_children[MAX_CHILDREN];

static void register_child(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		pid_t expected = 0;
		if (atomic_compare_exchange_strong(&g_children[i], &expected, pid))
			return;
	}
	/* Not fatal: the child is still reaped by test_wait(). */
	fprintf(stderr, "%s: warning: child registry full\n", g_name);
}

void test_unregister(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		pid_t expected = pid;
		if (atomic_compare_exchange_strong(&g_children[i], &expected, 0))
			return;
	}
}

static void kill_children(void)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		pid_t pid = atomic_exchange(&g_children[i], 0);
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
	}
}

/* --- Reporting -------------------------------------------------------- */

uint64_t test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double test_now(void)
{
	return (double)test_now_ns() / 1e9;
}

void test_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double elapsed(void)
{
	return (double)(test_now_ns() - g_start_ns) / 1e9;
}

/* The last progress line, for the watchdog's message. */
static char g_last[512];

void test_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	memcpy(g_last, line, sizeof(g_last) - 1); /* line is longer: truncates */
	/* One write per line keeps lines whole when processes interleave. */
	printf("[%s %d %7.3fs] %s\n", g_name, (int)getpid(), elapsed(), line);
	fflush(stdout);
}

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fprintf(stderr, "[%s %d %7.3fs] fail: %s:%d: %s (seed %" PRIu64 ")\n", g_name,
		(int)getpid(), elapsed(), file, line, msg, g_seed);
	fflush(stderr);
	kill_children();
	/* _exit: no atexit handlers or leak reports to muddy the failure, and
	 * safe from any thread. */
	_exit(TEST_FAIL);
}

void test_skip(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("[%s %d %7.3fs] skip: %s\n", g_name, (int)getpid(), elapsed(), msg);
	fflush(stdout);
	kill_children();
	_exit(TEST_SKIP);
}

const char *test_errname(int err)
{
	switch (err) {
#define E(x) case x: return #x
	E(EPERM); E(ENOENT); E(ESRCH); E(EINTR); E(EIO); E(EBADF); E(EAGAIN);
	E(ENOMEM); E(EACCES); E(EFAULT); E(EBUSY); E(EEXIST); E(ENOTDIR);
	E(EINVAL); E(EMFILE); E(ENFILE); E(ENOSPC); E(EPIPE); E(ERANGE);
	E(ENAMETOOLONG); E(ENOSYS); E(EPROTO); E(ENOTSOCK); E(EMSGSIZE);
	E(EPROTONOSUPPORT); E(EOPNOTSUPP); E(EADDRINUSE); E(EADDRNOTAVAIL);
	E(ECONNABORTED); E(ECONNRESET); E(ENOBUFS); E(EISCONN); E(ENOTCONN);
	E(ETIMEDOUT); E(ECONNREFUSED); E(EALREADY); E(EINPROGRESS);
	E(EOVERFLOW); E(EBADMSG); E(ENXIO); E(E2BIG); E(ECHILD); E(ESPIPE);
#undef E
	default:
		return "E?";
	}
}

size_t test_memdiff(const void *a, const void *b, size_t n)
{
	const unsigned char *p = a, *q = b;

	if (memcmp(p, q, n) == 0)
		return (size_t)-1;
	for (size_t i = 0; i < n; i++)
		if (p[i] != q[i])
			return i;
	return (size_t)-1;
}

uint64_t test_seed(void)
{
	return g_seed;
}

void test_init(const char *name)
{
	const char *s = getenv("SHUNT_TEST_SEED");

	g_name = name;
	g_start_ns = test_now_ns();
	if (s && *s) {
		char *end;
		errno = 0;
		g_seed = strtoull(s, &end, 0);
		if (errno || *end) {
			fprintf(stderr, "%s: bad SHUNT_TEST_SEED=%s\n", name, s);
			exit(TEST_FAIL);
		}
	} else {
		g_seed = test_mix64(test_now_ns() ^ ((uint64_t)getpid() << 32));
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	test_log("start, seed %" PRIu64 " (replay with SHUNT_TEST_SEED=%" PRIu64 ")%s",
		 g_seed, g_seed, test_tsan() ? ", tsan" : test_sanitized() ? ", asan" : "");
}

/* --- Environment -------------------------------------------------------- */

uint64_t test_env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	char *end;

	if (!s || !*s)
		return dflt;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (errno || end == s || *s == '-' || *end || v > (UINT64_MAX >> shift))
		TEST_FAIL_MSG("bad %s=%s", name, s);
	return (uint64_t)v << shift;
}

int test_tsan(void)
{
#if defined(__SANITIZE_THREAD__)
	return 1;
#else
	return 0;
#endif
}

int test_sanitized(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
	return 1;
#else
	return 0;
#endif
}

/* --- Processes ---------------------------------------------------------- */

pid_t test_fork(void (*fn)(void *arg), void *arg)
{
	pid_t parent = getpid();

	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ASSERT_SYS(pid);
	if (pid == 0) {
		/* The registry belongs to the parent: this child must not kill
		 * its siblings when it fails. */
		for (int i = 0; i < MAX_CHILDREN; i++)
			atomic_store(&g_children[i], 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(TEST_FAIL); /* the parent died before prctl */
		fn(arg);
		exit(0);
	}
	register_child(pid);
	return pid;
}

const char *test_status_str(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
			 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
	else
		snprintf(buf, len, "status 0x%x", status);
	return buf;
}

int test_wait(pid_t pid, double timeout_s)
{
	uint64_t deadline = test_now_ns() + (uint64_t)(timeout_s * 1e9);
	unsigned nap_us = 100;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			TEST_FAIL_MSG("waitpid(%d): %s", (int)pid, strerror(errno));
		if (test_now_ns() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			test_unregister(pid);
			TEST_FAIL_MSG("child %d still running after %.1f s: killed it",
				      (int)pid, timeout_s);
		}
		usleep(nap_us);
		if (nap_us < 10000)
			nap_us *= 2;
	}
	test_unregister(pid);
	return status;
}

void test_wait_ok(pid_t pid, double timeout_s)
{
	char buf[128];
	int status = test_wait(pid, timeout_s);

	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		TEST_FAIL_MSG("child %d %s", (int)pid, test_status_str(status, buf, sizeof(buf)));
}

/* --- Names -------------------------------------------------------------- */

static char g_dir[PATH_MAX];
static pid_t g_dir_owner;

static void remove_dir(void)
{
	DIR *d;
	struct dirent *e;

	/* Forked children run atexit handlers too: only the maker cleans up. */
	if (getpid() != g_dir_owner)
		return;
	d = opendir(g_dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		char p[PATH_MAX + 256];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", g_dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(g_dir);
}

void test_use_private_dir(void)
{
	const char *cur = getenv("SHUNT_DIR");
	pid_t me = getpid();

	if (cur && *cur)
		return;
	const char *tmp = getenv("TMPDIR");
	snprintf(g_dir, sizeof(g_dir), "%s/shunt-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(g_dir))
		TEST_FAIL_MSG("mkdtemp(%s): %s", g_dir, strerror(errno));
	setenv("SHUNT_DIR", g_dir, 1);
	g_dir_owner = me;
	atexit(remove_dir);
}

const char *test_name_unique(char *buf, size_t len)
{
	static _Atomic unsigned counter;

	snprintf(buf, len, "t-%d-%u", (int)getpid(), atomic_fetch_add(&counter, 1));
	return buf;
}

/* --- PRNG, stream, checksum --------------------------------------------- */

uint64_t test_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void test_rng_seed(struct test_rng *r, uint64_t seed)
{
	r->s[0] = test_mix64(seed);
	r->s[1] = test_mix64(seed + 0x9e3779b97f4a7c15ull);
	if (!r->s[0] && !r->s[1])
		r->s[0] = 1;
}

/* xoroshiro128+ */
uint64_t test_rng_next(struct test_rng *r)
{
	uint64_t s0 = r->s[0], s1 = r->s[1];
	uint64_t out = s0 + s1;

	s1 ^= s0;
	r->s[0] = rotl64(s0, 24) ^ s1 ^ (s1 << 16);
	r->s[1] = rotl64(s1, 37);
	return out;
}

uint64_t test_rng_range(struct test_rng *r, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	uint64_t span = hi - lo + 1;
	if (span == 0) /* the whole 64-bit range */
		return test_rng_next(r);
	/* The modulo bias is irrelevant at test sizes. */
	return lo + test_rng_next(r) % span;
}

uint64_t test_rng_size(struct test_rng *r, uint64_t max)
{
	if (max <= 1)
		return 1;
	int bits = 64 - __builtin_clzll(max);
	int b = (int)test_rng_range(r, 1, (uint64_t)bits);
	uint64_t top = b >= 64 ? UINT64_MAX : (1ull << b) - 1;
	if (top > max)
		top = max;
	return test_rng_range(r, (top >> 1) + 1, top);
}

void test_rng_fill(struct test_rng *r, void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n >= 8) {
		uint64_t v = test_rng_next(r);
		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	if (n) {
		uint64_t v = test_rng_next(r);
		memcpy(p, &v, n);
	}
}

static inline uint64_t to_le64(uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return __builtin_bswap64(v);
#else
	return v;
#endif
}

/* Word k of the stream covers bytes 8k..8k+7.  Offsets are taken modulo
 * 2^64, so word indices are modulo 2^61: the stream is the same whether a
 * range crossing 2^64 is generated in one piece or two. */
static inline uint64_t stream_word(uint64_t seed, uint64_t k)
{
	k &= UINT64_MAX >> 3;
	return test_mix64(seed ^ (k * 0xd1342543de82ef95ull));
}

void test_stream_fill(uint64_t seed, uint64_t off, void *buf, size_t n)
{
	unsigned char *p = buf;

	/* Leading bytes up to a word boundary of the stream. */
	while (n && (off & 7)) {
		*p++ = (unsigned char)(stream_word(seed, off >> 3) >> (8 * (off & 7)));
		off++;
		n--;
	}
	uint64_t k = off >> 3;
	while (n >= 8) {
		uint64_t v = to_le64(stream_word(seed, k++));
		memcpy(p, &v, 8);
		p += 8;
		n -= 8;
	}
	off = k << 3;
	for (size_t i = 0; i < n; i++, off++)
		p[i] = (unsigned char)(stream_word(seed, off >> 3) >> (8 * (off & 7)));
}

size_t test_stream_check(uint64_t seed, uint64_t off, const void *buf, size_t n)
{
	unsigned char tmp[4096];
	const unsigned char *p = buf;
	size_t done = 0;

	while (done < n) {
		size_t k = n - done < sizeof(tmp) ? n - done : sizeof(tmp);
		test_stream_fill(seed, off + done, tmp, k);
		if (memcmp(tmp, p + done, k)) {
			for (size_t i = 0; i < k; i++)
				if (tmp[i] != p[done + i])
					return done + i;
		}
		done += k;
	}
	return (size_t)-1;
}

#define P1 0x9e3779b185ebca87ull
#define P2 0xc2b2ae3d27d4eb4full
#define P3 0x165667b19e3779f9ull

static inline uint64_t sum_round(uint64_t acc, uint64_t w)
{
	return rotl64(acc + w * P2, 31) * P1;
}

static inline uint64_t load_le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return to_le64(v);
}

static void sum_block(struct test_sum *s, const unsigned char *p)
{
	s->v[0] = sum_round(s->v[0], load_le64(p));
	s->v[1] = sum_round(s->v[1], load_le64(p + 8));
	s->v[2] = sum_round(s->v[2], load_le64(p + 16));
	s->v[3] = sum_round(s->v[3], load_le64(p + 24));
}

void test_sum_init(struct test_sum *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = P1 + P2;
	s->v[1] = P2;
	s->v[2] = 0;
	s->v[3] = (uint64_t)0 - P1;
}

void test_sum_update(struct test_sum *s, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	s->len += n;
	if (s->nbuf) {
		size_t k = 32 - s->nbuf < n ? 32 - s->nbuf : n;
		memcpy(s->buf + s->nbuf, p, k);
		s->nbuf += (unsigned)k;
		p += k;
		n -= k;
		if (s->nbuf < 32)
			return;
		sum_block(s, s->buf);
		s->nbuf = 0;
	}
	while (n >= 32) {
		sum_block(s, p);
		p += 32;
		n -= 32;
	}
	memcpy(s->buf, p, n);
	s->nbuf = (unsigned)n;
}

uint64_t test_sum_final(const struct test_sum *s)
{
	uint64_t h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) +
		     rotl64(s->v[3], 18);

	h += s->len;
	for (unsigned i = 0; i < s->nbuf; i++)
		h = rotl64(h ^ (s->buf[i] * P3), 11) * P1;
	return test_mix64(h);
}

uint64_t test_sum(const void *buf, size_t n)
{
	struct test_sum s;

	test_sum_init(&s);
	test_sum_update(&s, buf, n);
	return test_sum_final(&s);
}

/* --- /proc -------------------------------------------------------------- */

/* The library's own fds, when the shim is linked in (base/fd.c). */
int shunt__own_is(int fd) __attribute__((weak));

/* The fds of this process, but for those the socket shim keeps for the
 * life of a process or a thread (its family's arena, a polling thread's
 * kick: base/fd.c's registry): made once, never per connection. */
int test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		TEST_FAIL_MSG("opendir(/proc/self/fd): %s", strerror(errno));
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		if (shunt__own_is ? shunt__own_is(fd) : test_fd_is(fd, "/memfd:shunt-arena"))
			continue;
		n++;
	}
	closedir(d);
	return n;
}

int test_fd_is(int fd, const char *prefix)
{
	char p[64], target[PATH_MAX];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t k = readlink(p, target, sizeof(target) - 1);
	if (k < 0)
		return 0;
	target[k] = '\0';
	return !strncmp(target, prefix, strlen(prefix));
}

int test_count_fd_links(const char *prefix)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		TEST_FAIL_MSG("opendir(/proc/self/fd): %s", strerror(errno));
	while ((e = readdir(d))) {
		char p[300], target[PATH_MAX];
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(p, target, sizeof(target) - 1);
		if (k < 0)
			continue;
		target[k] = '\0';
		if (!strncmp(target, prefix, strlen(prefix)))
			n++;
	}
	closedir(d);
	return n;
}

int test_count_maps(const char *prefix)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[PATH_MAX + 128];
	int n = 0;

	if (!f)
		TEST_FAIL_MSG("fopen(/proc/self/maps): %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');
		if (path && !strncmp(path, prefix, strlen(prefix)))
			n++;
	}
	fclose(f);
	return n;
}

/* --- libshunt helpers --------------------------------------------------- */

void test_pair(const struct shunt_opts *opts, struct shunt_conn **client,
	       struct shunt_conn **server, struct shunt_listener **lp)
{
	struct shunt_listener *l;
	char name[64];

	test_name_unique(name, sizeof(name));
	ASSERT_OK(shunt_listen(name, &l));
	ASSERT_OK(shunt_connect(name, opts, client));
	ASSERT_OK(shunt_accept(l, server, 0));
	if (lp)
		*lp = l;
	else
		shunt_listener_close(l);
}

void test_send_all(struct shunt_conn *c, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	while (n) {
		ssize_t k = shunt_send(c, p, n, 0);
		ASSERT_OK(k);
		ASSERT_GT(k, 0);
		ASSERT_LE(k, (ssize_t)n);
		p += k;
		n -= (size_t)k;
	}
}

void test_recv_exact(struct shunt_conn *c, void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n) {
		ssize_t k = shunt_recv(c, p, n, 0);
		ASSERT_OK(k);
		if (k == 0)
			TEST_FAIL_MSG("unexpected end of stream, %zu bytes short", n);
		ASSERT_LE(k, (ssize_t)n);
		p += k;
		n -= (size_t)k;
	}
}

/* --- Watchdog ------------------------------------------------------------ */

static unsigned g_watchdog_s;

static void on_alarm(int sig)
{
	char msg[800];
	(void)sig;
	int n = snprintf(msg, sizeof(msg),
			 "[%s %d] fail: watchdog: still running after %u s; last step: %s "
			 "(seed %" PRIu64 ")\n", g_name, (int)getpid(), g_watchdog_s, g_last,
			 g_seed);
	if (n > 0) {
		ssize_t w = write(2, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
		(void)w;
	}
	/* Children die with us through PR_SET_PDEATHSIG. */
	_exit(TEST_FAIL);
}

void test_watchdog(unsigned seconds)
{
	g_watchdog_s = seconds;
	signal(SIGALRM, on_alarm);
	alarm(seconds);
}

/* --- Passing an fd -------------------------------------------------------- */

/* The control buffer of one fd, aligned as a cmsghdr wants. */
union one_fd {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

ssize_t test_send_fd(int via, int fd, const void *msg, size_t len)
{
	union one_fd u;
	struct iovec iov = { (void *)msg, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf) };

	memset(u.buf, 0, sizeof(u.buf));
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(fd));
	return sendmsg(via, &m, MSG_NOSIGNAL);
}

ssize_t test_recv_fd(int via, void *msg, size_t len, int flags, int *fd)
{
	union one_fd u;
	struct iovec iov = { msg, len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf) };
	ssize_t k;

	*fd = -1;
	do
		k = recvmsg(via, &m, flags);
	while (k < 0 && errno == EINTR);
	struct cmsghdr *c = k >= 0 ? CMSG_FIRSTHDR(&m) : NULL;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(fd, CMSG_DATA(c), sizeof(*fd));
	return k;
}
