/*
 * shimlib.c - helpers for the tests/t_shim_*.c reproducers (see shimlib.h).
 */
#include "shimlib.h"

#include <aio.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Links to listeners are a cache that outlives a case (src/shim/link.c);
 * counting fds leaves it out.  Weak: the rewrite may not have it. */
void shunt__shim_drop_links(void) __attribute__((weak));

static int g_disabled = -1;
static char g_self[4096];

int ts_disabled(void)
{
	if (g_disabled < 0) {
		const char *d = getenv("SHUNT_DISABLE");
		g_disabled = d && *d && strcmp(d, "0") != 0;
	}
	return g_disabled;
}

int ts_accel(int fd)
{
	if (!shunt__shim_is_accelerated)
		return 0;
	return shunt__shim_is_accelerated(fd) == 1;
}

int ts_moved(int fd)
{
	return shunt__shim_is_moved ? shunt__shim_is_moved(fd) : 0;
}

const char *ts_self(void)
{
	return g_self;
}

int ts_ms(int ms)
{
	return test_sanitized() ? 3 * ms : ms;
}

uint64_t shim_seed(uint64_t k)
{
	return test_mix64(test_seed() ^ (k * 0x9e3779b97f4a7c15ull) ^ 0x5eed);
}

/* --- Small things ------------------------------------------------------- */

short ts_wait_fd(int fd, short events, int ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	uint64_t end = test_now_ns() + (uint64_t)(ms < 0 ? 0 : ms) * 1000000u;
	int rc;

	for (;;) {
		uint64_t now = test_now_ns();
		int left = ms < 0 ? -1 : now >= end ? 0 : (int)((end - now + 999999u) / 1000000u);
		rc = poll(&p, 1, left);
		if (rc >= 0 || errno != EINTR)
			break;
	}
	ASSERT_SYS(rc);
	return rc ? p.revents : 0;
}

void ts_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	ASSERT_SYS(fl);
	ASSERT_SYS(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK));
}

void ts_token_send(int fd, char c)
{
	ssize_t n;

	do
		n = write(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	ASSERT_EQ(n, 1);
}

char ts_token_recv(int fd, int ms)
{
	char c;
	ssize_t n;

	if (!(ts_wait_fd(fd, POLLIN, ms) & (POLLIN | POLLHUP)))
		TEST_FAIL_MSG("no token on fd %d within %d ms", fd, ms);
	do
		n = read(fd, &c, 1);
	while (n < 0 && errno == EINTR);
	ASSERT_SYS(n);
	ASSERT_MSG(n == 1, "token pipe fd %d closed", fd);
	return c;
}

void ts_set_handler(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	ASSERT_SYS(sigaction(sig, &sa, NULL));
}

double ts_cpu_seconds(void)
{
	struct rusage ru;

	ASSERT_SYS(getrusage(RUSAGE_SELF, &ru));
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* --- Bytes -------------------------------------------------------------- */

static int left_ms(uint64_t end)
{
	uint64_t now = test_now_ns();

	return now >= end ? 0 : (int)((end - now) / 1000000u) + 1;
}

/* recv/send with MSG_DONTWAIT where fd is a socket, read/write otherwise:
 * the helpers never block past their time limit, whatever fd's mode. */
static ssize_t nb_read(int fd, void *buf, size_t n)
{
	ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);

	if (r < 0 && errno == ENOTSOCK)
		r = read(fd, buf, n);
	return r;
}

static ssize_t nb_write(int fd, const void *buf, size_t n)
{
	ssize_t r = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);

	if (r < 0 && errno == ENOTSOCK)
		r = write(fd, buf, n);
	return r;
}

void ts_write_all(int fd, const void *buf, size_t n, int ms)
{
	const unsigned char *p = buf;
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	while (n) {
		ssize_t w = nb_write(fd, p, n);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (!left_ms(end))
				TEST_FAIL_MSG("fd %d: could not write %zu more bytes within %d ms",
					      fd, n, ms);
			ts_wait_fd(fd, POLLOUT, left_ms(end));
			continue;
		}
		if (w < 0)
			TEST_FAIL_MSG("write to fd %d: %s", fd, test_errname(errno));
		ASSERT_GT(w, 0);
		p += w;
		n -= (size_t)w;
	}
}

ssize_t ts_read_wait(int fd, void *buf, size_t n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	for (;;) {
		ssize_t r = nb_read(fd, buf, n);
		if (r >= 0 || (errno != EAGAIN && errno != EINTR))
			return r;
		if (!left_ms(end)) {
			errno = EAGAIN;
			return -1;
		}
		ts_wait_fd(fd, POLLIN, left_ms(end));
	}
}

void ts_read_exact(int fd, void *buf, size_t n, int ms)
{
	unsigned char *p = buf;
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	size_t want = n;

	while (n) {
		ssize_t r = ts_read_wait(fd, p, n, left_ms(end));
		if (r < 0 && errno == EAGAIN)
			TEST_FAIL_MSG("fd %d: %zu of %zu bytes within %d ms", fd, want - n, want, ms);
		if (r < 0)
			TEST_FAIL_MSG("read from fd %d: %s after %zu of %zu bytes", fd,
				      test_errname(errno), want - n, want);
		if (r == 0)
			TEST_FAIL_MSG("fd %d: end of stream after %zu of %zu bytes", fd, want - n,
				      want);
		p += r;
		n -= (size_t)r;
	}
}

#define SCHUNK 65536

void ts_send_stream(int fd, uint64_t seed, uint64_t off, uint64_t n, int ms)
{
	unsigned char *buf = malloc(SCHUNK);
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	ASSERT_NOT_NULL(buf);
	while (n) {
		size_t k = n < SCHUNK ? (size_t)n : SCHUNK;
		test_stream_fill(seed, off, buf, k);
		ts_write_all(fd, buf, k, left_ms(end));
		off += k;
		n -= k;
	}
	free(buf);
}

void ts_recv_stream(int fd, uint64_t seed, uint64_t off, uint64_t n, int ms)
{
	unsigned char *buf = malloc(SCHUNK);
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u, done = 0;

	ASSERT_NOT_NULL(buf);
	while (done < n) {
		size_t k = n - done < SCHUNK ? (size_t)(n - done) : SCHUNK;
		ssize_t r = ts_read_wait(fd, buf, k, left_ms(end));
		if (r < 0 && errno == EAGAIN)
			TEST_FAIL_MSG("fd %d: received %ju of %ju bytes within %d ms", fd,
				      (uintmax_t)done, (uintmax_t)n, ms);
		if (r < 0)
			TEST_FAIL_MSG("fd %d: %s after %ju of %ju bytes", fd, test_errname(errno),
				      (uintmax_t)done, (uintmax_t)n);
		if (r == 0)
			TEST_FAIL_MSG("fd %d: end of stream after %ju of %ju bytes", fd,
				      (uintmax_t)done, (uintmax_t)n);
		size_t bad = test_stream_check(seed, off + done, buf, (size_t)r);
		if (bad != (size_t)-1)
			TEST_FAIL_MSG("fd %d: byte %ju of the stream is wrong (0x%02x)", fd,
				      (uintmax_t)(off + done + bad), buf[bad]);
		done += (uint64_t)r;
	}
	free(buf);
}

void ts_expect_eof(int fd, int ms)
{
	char b[256];
	ssize_t r = ts_read_wait(fd, b, sizeof(b), ms);

	if (r < 0 && errno == EAGAIN)
		TEST_FAIL_MSG("fd %d: no end of stream within %d ms", fd, ms);
	if (r < 0)
		TEST_FAIL_MSG("fd %d: %s where end of stream was due", fd, test_errname(errno));
	if (r > 0)
		TEST_FAIL_MSG("fd %d: %zd more bytes where end of stream was due (\"%.*s\")", fd,
			      r, (int)(r < 40 ? r : 40), b);
}

int ts_local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	return getsockname(fd, (struct sockaddr *)&a, &len) == 0 ? ntohs(a.sin_port) : -1;
}

void ts_echo_check(int fd, uint64_t seed, uint64_t n, int ms)
{
	unsigned char *wb = malloc(SCHUNK), *rb = malloc(SCHUNK);
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u, sent = 0, got = 0;
	int shut = 0;

	ASSERT_NOT_NULL(wb);
	ASSERT_NOT_NULL(rb);
	for (;;) {
		if (sent == n && !shut) {
			ASSERT_SYS(shutdown(fd, SHUT_WR));
			shut = 1;
		}
		short ev = (short)(POLLIN | (sent < n ? POLLOUT : 0));
		if (!left_ms(end))
			TEST_FAIL_MSG("echo: sent %ju, received %ju of %ju bytes within %d ms",
				      (uintmax_t)sent, (uintmax_t)got, (uintmax_t)n, ms);
		short re = ts_wait_fd(fd, ev, left_ms(end));
		if ((re & POLLOUT) && sent < n) {
			size_t k = n - sent < SCHUNK ? (size_t)(n - sent) : SCHUNK;
			test_stream_fill(seed, sent, wb, k);
			ssize_t w = nb_write(fd, wb, k);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				TEST_FAIL_MSG("echo: send: %s after %ju bytes", test_errname(errno),
					      (uintmax_t)sent);
			if (w > 0)
				sent += (uint64_t)w;
		}
		if (re & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = nb_read(fd, rb, SCHUNK);
			if (r < 0 && errno != EAGAIN && errno != EINTR)
				TEST_FAIL_MSG("echo: recv: %s after %ju bytes (local port %d)",
					      test_errname(errno), (uintmax_t)got, ts_local_port(fd));
			if (r == 0) {
				ASSERT_MSG(got == n, "echo: end of stream after %ju of %ju bytes",
					   (uintmax_t)got, (uintmax_t)n);
				break;
			}
			if (r > 0) {
				size_t bad = test_stream_check(seed, got, rb, (size_t)r);
				if (bad != (size_t)-1)
					TEST_FAIL_MSG("echo: byte %ju is wrong (0x%02x)",
						      (uintmax_t)(got + bad), rb[bad]);
				got += (uint64_t)r;
				ASSERT_MSG(got <= sent, "echo: %ju bytes back, only %ju sent",
					   (uintmax_t)got, (uintmax_t)sent);
			}
		}
	}
	free(wb);
	free(rb);
}

/* --- Connections ---------------------------------------------------------- */

static void loopback(struct sockaddr_in *a, int port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

int ts_tcp_listen(int *port)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ASSERT_SYS(fd);
	loopback(&a, 0);
	ASSERT_SYS(bind(fd, (struct sockaddr *)&a, sizeof(a)));
	ASSERT_SYS(listen(fd, 64));
	ASSERT_SYS(getsockname(fd, (struct sockaddr *)&a, &len));
	*port = ntohs(a.sin_port);
	return fd;
}

int ts_tcp_connect(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), rc;

	ASSERT_SYS(fd);
	loopback(&a, port);
	do
		rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
	while (rc < 0 && errno == EINTR);
	ASSERT_SYS(rc);
	return fd;
}

int ts_tcp_accept(int lfd, int ms)
{
	int fd;

	if (!(ts_wait_fd(lfd, POLLIN, ms) & POLLIN))
		TEST_FAIL_MSG("no connection to accept on fd %d within %d ms", lfd, ms);
	do
		fd = accept(lfd, NULL, NULL);
	while (fd < 0 && errno == EINTR);
	ASSERT_SYS(fd);
	return fd;
}

void ts_pair(int *c, int *s)
{
	int port, lfd = ts_tcp_listen(&port);

	*c = ts_tcp_connect(port);
	*s = ts_tcp_accept(lfd, ts_ms(2000));
	ASSERT_SYS(close(lfd));
}

static int inet_socket(int fd)
{
	struct stat st;
	int dom = 0;
	socklen_t l = sizeof(dom);

	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l))
		return 0;
	return dom == AF_INET || dom == AF_INET6;
}

void ts_close_inherited_tcp(int keep)
{
	int fds[4096], n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)) && n < 4096) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d) && fd != keep)
			fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		if (inet_socket(fds[i]))
			close(fds[i]);
}

struct peer_arg {
	int port;
	void (*fn)(int fd, void *arg);
	void *arg;
};

static void peer_main(void *arg)
{
	const struct peer_arg *a = arg;

	ts_close_inherited_tcp(-1);
	int fd = ts_tcp_connect(a->port);
	a->fn(fd, a->arg);
}

void ts_peer_start(struct shim_peer *p, void (*fn)(int fd, void *arg), void *arg)
{
	struct peer_arg a;
	int lfd = ts_tcp_listen(&a.port);

	a.fn = fn;
	a.arg = arg;
	p->pid = test_fork(peer_main, &a);
	p->fd = ts_tcp_accept(lfd, ts_ms(3000));
	ASSERT_SYS(close(lfd));
}

void ts_peer_wait(struct shim_peer *p, int ms)
{
	test_wait_ok(p->pid, ms / 1000.0);
	p->pid = 0;
}

ssize_t ts_aio_wait(struct aiocb *cb)
{
	uint64_t until = test_now_ns() + 5000000000ull;

	while (aio_error(cb) == EINPROGRESS && test_now_ns() < until)
		test_sleep_ms(1);
	ASSERT_MSG(aio_error(cb) != EINPROGRESS, "the aio call did not finish in 5 s");
	return aio_return(cb);
}

/* --- Moving a connection -------------------------------------------------- */

static int accel_rounds(void)
{
	return 4;
}

static void accel_fail(int fd, const char *who)
{
	TEST_FAIL_MSG("%s: fd %d never moved to shared memory within %d ms of round trips",
		      who, fd, ts_ms(2000));
}

void ts_make_accelerated(int a, int b)
{
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	int ms = ts_ms(3000);
	char x = 'a', y;

	for (int round = 0;; round++) {
		ts_write_all(a, &x, 1, ms);
		ts_read_exact(b, &y, 1, ms);
		ASSERT_EQ(y, x);
		ts_write_all(b, &y, 1, ms);
		ts_read_exact(a, &x, 1, ms);
		ASSERT_EQ(y, x);
		x = (char)('a' + (round + 1) % 26);
		if (ts_disabled()) {
			if (round + 1 >= accel_rounds())
				break;
			continue;
		}
		if (ts_accel(a) && ts_accel(b))
			break;
		if (test_now_ns() > end) {
			if (!ts_accel(a))
				accel_fail(a, "connected end");
			accel_fail(b, "accepted end");
		}
	}
	ASSERT(ts_disabled() || (ts_accel(a) && ts_accel(b)));
}

/* The lead sends (its state | 2 when it is the last round); the follower
 * answers with its state; both stop on the same pair of bytes. */
void ts_make_accelerated_lead(int fd)
{
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	int ms = ts_ms(3000);

	for (int round = 0;; round++) {
		int last = ts_disabled() ? round + 1 >= accel_rounds() : test_now_ns() > end;
		char l = (char)(0x40 | ts_accel(fd) | (last ? 2 : 0)), f;
		ts_write_all(fd, &l, 1, ms);
		ts_read_exact(fd, &f, 1, ms);
		ASSERT_EQ(f & 0x7e, 0x40);
		if (last || ((l & 1) && (f & 1)))
			break;
	}
	if (!ts_disabled() && !ts_accel(fd))
		accel_fail(fd, "lead");
}

void ts_make_accelerated_follow(int fd)
{
	int ms = ts_ms(5000);

	for (;;) {
		char l, f;
		ts_read_exact(fd, &l, 1, ms);
		ASSERT_EQ(l & 0x7c, 0x40);
		f = (char)(0x40 | ts_accel(fd));
		ts_write_all(fd, &f, 1, ms);
		if ((l & 2) || ((l & 1) && (f & 1)))
			break;
	}
	if (!ts_disabled() && !ts_accel(fd))
		accel_fail(fd, "follower");
}

void ts_expect_accel(int fd, const char *what)
{
	if (!ts_disabled() && !ts_accel(fd))
		TEST_FAIL_MSG("%s: fd %d is not on shared memory", what, fd);
}

/* --- Cases ---------------------------------------------------------------- */

/* Is name in the comma-separated list? */
static int listed(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *s = list; (s = strstr(s, name)); s += n)
		if ((s == list || s[-1] == ',') && (s[n] == ',' || s[n] == '\0'))
			return 1;
	return 0;
}

/* SHUNT_TEST_ONLY=a,b runs only those cases; SHUNT_TEST_SKIP=c leaves c
 * out (a caller that knows a case does not apply, and says why). */
static int selected(const char *name)
{
	const char *only = getenv("SHUNT_TEST_ONLY"), *skip = getenv("SHUNT_TEST_SKIP");

	if (skip && *skip && listed(skip, name))
		return 0;
	return !only || !*only || listed(only, name);
}

static char g_case_name[256];

int ts_fds_settled(int before)
{
	if (shunt__shim_drop_links)
		shunt__shim_drop_links();
	/* A moved socket closed before its peer acknowledged its TCP bytes
	 * lingers (src/shim/linger.c): at most a second, let go of at the
	 * program's next close. */
	double end = test_now() + 3;
	while (test_count_fds() > before && test_now() < end) {
		test_sleep_ms(10);
		close(-1);
	}
	return test_count_fds();
}

static void run_in_child(const struct shim_case *c)
{
	test_init(g_case_name);
	int fds = test_count_fds();
	c->fn();
	int after = ts_fds_settled(fds);
	ASSERT_MSG(after <= fds, "%d fds open before the case, %d after", fds, after);
	test_log("ok");
	exit(TEST_PASS);
}

/* Each case gets this long in a plain build before it is killed. */
#define CASE_LIMIT_S 20

static int run_case(const char *prog, const struct shim_case *c, char *verdict, size_t vlen)
{
	double limit = test_sanitized() ? 3 * CASE_LIMIT_S : CASE_LIMIT_S;
	double t0 = test_now();
	int status = 0;

	snprintf(g_case_name, sizeof(g_case_name), "%s:%s", prog, c->name);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ASSERT_SYS(pid);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		run_in_child(c);
	}
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		ASSERT_SYS(r);
		if (r == pid)
			break;
		if (test_now() - t0 > limit) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			snprintf(verdict, vlen, "FAIL  %-28s timed out after %.0f s (killed)",
				 c->name, limit);
			return 1;
		}
		test_sleep_ms(5);
	}
	char how[128];
	int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	snprintf(verdict, vlen, "%s  %-28s %6.2fs%s%s", ok ? "PASS" : "FAIL", c->name,
		 test_now() - t0, ok ? "" : "  ", ok ? "" : test_status_str(status, how, sizeof(how)));
	return !ok;
}

int ts_main(const char *prog, const struct shim_case *cases, size_t n)
{
	char verdicts[64][200];
	size_t nv = 0;
	int failed = 0, ran = 0;

	test_init(prog);
	test_use_private_dir();
	/* Every case's process logs the same seed. */
	char s[32];
	snprintf(s, sizeof(s), "%" PRIu64, test_seed());
	setenv("SHUNT_TEST_SEED", s, 1);
	ssize_t k = readlink("/proc/self/exe", g_self, sizeof(g_self) - 1);
	ASSERT_SYS(k);
	g_self[k] = '\0';
	if (ts_disabled())
		test_log("SHUNT_DISABLE=1: the reference run on kernel TCP");
	else if (!shunt__shim_is_accelerated)
		test_log("no shim linked: nothing can move to shared memory");
	{
		int port, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a;
		loopback(&a, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 1))
			test_skip("no TCP on 127.0.0.1 here: %s", strerror(errno));
		(void)port;
		close(fd);
	}
	for (size_t i = 0; i < n; i++) {
		if (!selected(cases[i].name))
			continue;
		ran++;
		test_log("case %s", cases[i].name);
		failed += run_case(prog, &cases[i], verdicts[nv], sizeof(verdicts[nv]));
		test_log("%s", verdicts[nv]);
		if (nv < 63)
			nv++;
	}
	test_log("summary (%s):", ts_disabled() ? "SHUNT_DISABLE=1" : "shim on");
	for (size_t i = 0; i < nv; i++)
		test_log("  %s", verdicts[i]);
	if (!ran)
		TEST_FAIL_MSG("no case matches SHUNT_TEST_ONLY=%s", getenv("SHUNT_TEST_ONLY"));
	test_log("%d of %d cases failed", failed, ran);
	return failed ? TEST_FAIL : TEST_PASS;
}

void ts_moved_pair(int *a, int *b)
{
	ts_pair(a, b);
	ts_make_accelerated(*a, *b);
}

void ts_tcp_then_moved(void (*fn)(int a, int b, const char *when))
{
	int a, b;

	ts_pair(&a, &b);
	fn(a, b, "on TCP");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	ts_moved_pair(&a, &b);
	fn(a, b, "moved");
	ts_expect_accel(a, "after the moved pair's case");
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

void ts_wait_arrived(int fd, int n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	int v = 0;

	for (;;) {
		ASSERT_SYS(ioctl(fd, FIONREAD, &v));
		if (v >= n)
			return;
		if (test_now_ns() > end)
			TEST_FAIL_MSG("fd %d: FIONREAD is %d after %d ms, want %d", fd, v, ms, n);
		test_sleep_ms(1);
	}
}

short ts_wait_revents(int fd, short events, short want, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	for (;;) {
		short re = ts_wait_fd(fd, events, 10);
		if (re & want)
			return re;
		if (test_now_ns() > end)
			TEST_FAIL_MSG("fd %d: revents 0x%x after %d ms, want 0x%x", fd, re, ms, want);
		test_sleep_ms(1);
	}
}

static void on_guard_alarm(int sig)
{
	(void)sig;
}

void ts_guard(unsigned s)
{
	ts_set_handler(SIGALRM, on_guard_alarm, 0);
	alarm(s);
}

long ts_own_syscall(long nr, long a, long b, long c)
{
#if defined(__x86_64__)
	long rc;

	__asm__ volatile("syscall" : "=a"(rc) : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	if (rc < 0 && rc > -4096) {
		errno = (int)-rc;
		return -1;
	}
	return rc;
#else
	return syscall(nr, a, b, c);
#endif
}

int ts_seccomp_deny(const int *nrs, int n, unsigned action)
{
	struct sock_filter f[32 + 3];

	if (n < 1 || n > 32)
		return 0;
	f[0] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (int i = 0; i < n; i++) /* a match jumps to the last: the action */
		f[1 + i] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nrs[i],
							(unsigned char)(n - i), 0);
	f[1 + n] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[2 + n] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action);
	struct sock_fprog prog = { (unsigned short)(n + 3), f };

	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
	       prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}
