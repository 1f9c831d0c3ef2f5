/*
 * t_shim_fds.c - what programs do with their fds, on connections that moved
 * to shared memory: closefrom, fclose and freopen, closing every fd,
 * vfork and posix_spawn, dup before connect, two processes sharing one
 * connection, SCM_RIGHTS,
 * exec with and without the shim, stdio on a socket.
 *
 * Each case checks that the program sees what kernel TCP gives it
 * (SHUNT_DISABLE=1 is the reference, where every case passes).
 * SHUNT_TEST_ONLY=name,name runs some cases.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shimlib.h"
#include "testlib.h"

extern char **environ;

#define KIB 1024
#define MIB (1024 * 1024)

/* An environment without LD_PRELOAD (for programs run without the shim). */
static char **env_without_preload(void)
{
	size_t n = 0, k = 0;

	while (environ[n])
		n++;
	char **env = calloc(n + 1, sizeof(*env));
	ASSERT_NOT_NULL(env);
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			env[k++] = environ[i];
	return env;
}

static const char *find_prog(const char *a, const char *b)
{
	if (access(a, X_OK) == 0)
		return a;
	if (b && access(b, X_OK) == 0)
		return b;
	test_skip("neither %s nor %s here", a, b ? b : "-");
}

/* A temporary file name of this process. */
static void tmp_path(char *buf, size_t len, const char *what)
{
	const char *t = getenv("TMPDIR");

	snprintf(buf, len, "%s/t_shim_fds-%d-%s", t && *t ? t : "/tmp", (int)getpid(), what);
}

/* The whole content of a file (at most len - 1 bytes, NUL-terminated). */
static size_t file_content(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	ASSERT_SYS(fd);
	n = pread(fd, buf, len - 1, 0);
	ASSERT_SYS(n);
	buf[n] = '\0';
	close(fd);
	return (size_t)n;
}

/* open() a file until it gets fd number `want` (the lowest free number may
 * be lower); the extra fds are closed again. */
static int open_at_number(const char *path, int want)
{
	int extra[4096], n = 0, fd;

	for (;;) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		ASSERT_SYS(fd);
		if (fd == want || fd > want || n == 4096)
			break;
		extra[n++] = fd;
	}
	for (int i = 0; i < n; i++)
		close(extra[i]);
	ASSERT_MSG(fd == want, "open() gave fd %d, not the freed number %d", fd, want);
	return fd;
}

/* --- closefrom ------------------------------------------------------------- */

static void closefrom_client(int fd, void *arg)
{
	(void)arg;
	ts_make_accelerated_follow(fd);
	ts_send_stream(fd, shim_seed(1), 0, MIB, ts_ms(5000));
	ASSERT_SYS(close(fd));
}

/* A daemon moves its connection, closes every fd above it (as before an
 * exec), and reads: it must get all 1 MiB the client writes, then EOF. */
static void case_closefrom(void)
{
	struct shim_peer p;

	ts_peer_start(&p, closefrom_client, NULL);
	ts_make_accelerated_lead(p.fd);
	test_log("closefrom(%d)", p.fd + 1);
	closefrom(p.fd + 1);
	ts_recv_stream(p.fd, shim_seed(1), 0, MIB, ts_ms(5000));
	ts_expect_eof(p.fd, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

/* --- fclose, freopen, fcloseall ------------------------------------------- */

#define PRIVATE "PRIVATE FILE CONTENT\n"

/* The peer of a connection whose other end gets closed by stdio: it must
 * see end of stream and never a byte meant for a file. */
static void quiet_peer(int fd, void *arg)
{
	(void)arg;
	ts_make_accelerated_follow(fd);
	ts_expect_eof(fd, ts_ms(3000));
	ASSERT_SYS(close(fd));
}

static void case_fclose(void)
{
	struct shim_peer p;
	char path[PATH_MAX], got[256];

	ts_peer_start(&p, quiet_peer, NULL);
	ts_make_accelerated_lead(p.fd);
	int s = p.fd;
	FILE *f = fdopen(s, "r+");
	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fclose(f), 0);
	tmp_path(path, sizeof(path), "fclose");
	int fd = open_at_number(path, s);
	test_log("fclose(fdopen(%d)); open(%s) = %d", s, path, fd);
	ASSERT_EQ(write(fd, PRIVATE, strlen(PRIVATE)), (ssize_t)strlen(PRIVATE));
	file_content(path, got, sizeof(got));
	ASSERT_MSG(!strcmp(got, PRIVATE), "the file holds \"%s\", not what was written", got);
	ASSERT_SYS(close(fd));
	unlink(path);
	ts_peer_wait(&p, ts_ms(5000));
}

static void case_freopen(void)
{
	struct shim_peer p;
	char path[PATH_MAX], got[256];

	ts_peer_start(&p, quiet_peer, NULL);
	ts_make_accelerated_lead(p.fd);
	int s = p.fd;
	FILE *f = fdopen(s, "w");
	ASSERT_NOT_NULL(f);
	tmp_path(path, sizeof(path), "freopen");
	f = freopen(path, "w+", f);
	ASSERT_NOT_NULL(f);
	int fd = fileno(f);
	test_log("freopen(%s, fdopen(%d)): fd %d", path, s, fd);
	ASSERT_EQ(fprintf(f, "stdio: "), 7);
	ASSERT_EQ(fflush(f), 0);
	ASSERT_EQ(write(fd, PRIVATE, strlen(PRIVATE)), (ssize_t)strlen(PRIVATE));
	file_content(path, got, sizeof(got));
	ASSERT_MSG(!strcmp(got, "stdio: " PRIVATE), "the file holds \"%s\"", got);
	ASSERT_EQ(fclose(f), 0);
	unlink(path);
	ts_peer_wait(&p, ts_ms(5000));
}

/* fdopen() before connect(): stdio reads the socket with libc's own
 * calls, so the connection must never move.  Untracked at the fdopen, it
 * moved after the connect and fgets() took the doorbells for bytes (a
 * helper's client: end of file after 17 of 200 lines). */
static void echo_lines(void *arg)
{
	int lfd = *(int *)arg, fd = ts_tcp_accept(lfd, ts_ms(5000));
	char b[256];
	ssize_t n;

	while ((n = read(fd, b, sizeof(b))) > 0)
		ts_write_all(fd, b, (size_t)n, ts_ms(5000));
	ASSERT_SYS(close(fd));
}

static void case_fdopen_before_connect(void)
{
	int port, lfd = ts_tcp_listen(&port);
	pid_t child = test_fork(echo_lines, &lfd);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	char line[64], got[64];

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_SYS(s);
	FILE *in = fdopen(s, "r");
	ASSERT_NOT_NULL(in);
	ASSERT_SYS(connect(s, (struct sockaddr *)&a, sizeof(a)));
	for (int i = 0; i < 200; i++) {
		int len = snprintf(line, sizeof(line), "line %d\n", i);
		ts_write_all(s, line, (size_t)len, ts_ms(5000));
		ASSERT_MSG(fgets(got, sizeof(got), in) != NULL, "fgets() failed at line %d", i);
		ASSERT_MSG(!strcmp(got, line), "line %d came back as \"%s\"", i, got);
	}
	ASSERT_MSG(!ts_moved(s), "stdio's socket moved to shared memory");
	ASSERT_EQ(fclose(in), 0);
	test_wait_ok(child, 10);
	ASSERT_SYS(close(lfd));
}

/* A thread takes an fd table of its own and closes its copy of a moved
 * socket: the other threads' socket lives on, as over TCP (it ended the
 * connection: the peer read the end of the stream; a helper's
 * reproducer).  By unshare(CLONE_FILES), and by close_range's
 * CLOSE_RANGE_UNSHARE. */
struct own_table { int fd, how; };

static void *own_table_thread(void *arg)
{
	struct own_table *o = arg;

	if (o->how == 0) {
		ASSERT_SYS(unshare(CLONE_FILES));
		ASSERT_SYS(close(o->fd));
	} else {
		ASSERT_SYS(close_range(3, ~0u, CLOSE_RANGE_UNSHARE));
	}
	return NULL;
}

static void own_table_once(int how)
{
	int a, b;
	char got[16];
	pthread_t th;

	ts_moved_pair(&a, &b);
	struct own_table o = { a, how };
	ASSERT_EQ(pthread_create(&th, NULL, own_table_thread, &o), 0);
	ASSERT_EQ(pthread_join(th, NULL), 0);
	ts_write_all(a, "still-here", 10, ts_ms(2000));
	ts_read_exact(b, got, 10, ts_ms(2000));
	ASSERT_MEM_EQ(got, "still-here", 10);
	ts_write_all(b, "reply", 5, ts_ms(2000));
	ts_read_exact(a, got, 5, ts_ms(2000));
	ASSERT_MEM_EQ(got, "reply", 5);
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
}

/* Each in a process of its own: the first lets the library go. */
static void case_unshare_files(void)
{
	own_table_once(0);
}

static void case_close_range_unshare(void)
{
	own_table_once(1);
}

/* fcloseall() is not a case: glibc's flushes every stream but closes no fd
 * (it is _IO_cleanup), so the socket's number never becomes free. */

/* --- Closing every fd ---------------------------------------------------- */

/* An echo client: echoes until end of stream. */
static void echo_client(int fd, void *arg)
{
	char buf[65536];
	ssize_t n;

	(void)arg;
	ts_make_accelerated_follow(fd);
	while ((n = ts_read_wait(fd, buf, sizeof(buf), ts_ms(8000))) > 0)
		ts_write_all(fd, buf, (size_t)n, ts_ms(5000));
	ASSERT_MSG(n == 0, "echo client: %s", n < 0 ? test_errname(errno) : "?");
	ASSERT_SYS(close(fd));
}

struct echo_arg {
	int port;
};

static void echo_client_at(void *arg)
{
	const struct echo_arg *a = arg;

	ts_close_inherited_tcp(-1);
	echo_client(ts_tcp_connect(a->port), NULL);
}

static void echo_round(int fd, uint64_t seed, uint64_t *off, size_t n)
{
	ts_send_stream(fd, seed, *off, n, ts_ms(3000));
	ts_recv_stream(fd, seed, *off, n, ts_ms(3000));
	*off += n;
}

static int is_kept(int fd, const int *keep, int nkeep)
{
	for (int i = 0; i < nkeep; i++)
		if (keep[i] == fd)
			return 1;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* The fds this process has that it did not open itself. */
static int foreign_fds(const int *keep, int nkeep, int *out, int max)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)) && n < max) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d) && !is_kept(fd, keep, nkeep))
			out[n++] = fd;
	}
	closedir(d);
	qsort(out, (size_t)n, sizeof(int), cmp_int);
	return n;
}

struct sentinel {
	int num;          /* the number the library had */
	int other;        /* our end of the socketpair */
	dev_t dev;
	ino_t ino;
};

static void close_all(int use_range)
{
	int port, lfd = ts_tcp_listen(&port);
	struct echo_arg ea = { port };
	pid_t c1 = test_fork(echo_client_at, &ea), c2 = test_fork(echo_client_at, &ea);
	int s1 = ts_tcp_accept(lfd, ts_ms(3000)), s2 = ts_tcp_accept(lfd, ts_ms(3000));
	uint64_t off1 = 0, off2 = 0, seed = shim_seed(7);

	ts_make_accelerated_lead(s1);
	ts_make_accelerated_lead(s2);
	echo_round(s1, seed, &off1, 100 * KIB);
	echo_round(s2, seed, &off2, 100 * KIB);

	int keep[3] = { lfd, s1, s2 }, lib[512];
	int nlib = foreign_fds(keep, 3, lib, 512);
	test_log("%d fds of the library: first %d, last %d", nlib, nlib ? lib[0] : -1,
		 nlib ? lib[nlib - 1] : -1);

	long max = sysconf(_SC_OPEN_MAX);
	double t0 = test_now(), cpu0 = ts_cpu_seconds();
	if (!use_range) {
		test_log("close() of every fd from 3 to %ld but %d, %d and %d", max, lfd, s1, s2);
		for (long fd = 3; fd < max; fd++)
			if (!is_kept((int)fd, keep, 3))
				close((int)fd);
	} else {
		int k[3] = { lfd, s1, s2 };
		qsort(k, 3, sizeof(int), cmp_int);
		unsigned from = 3;
		for (int i = 0; i < 3; i++) {
			if ((unsigned)k[i] > from)
				ASSERT_SYS(close_range(from, (unsigned)k[i] - 1, 0));
			from = (unsigned)k[i] + 1;
		}
		test_log("close_range() of every fd from 3 but %d, %d and %d", lfd, s1, s2);
		ASSERT_SYS(close_range(from, ~0U, 0));
	}

	/* The program reuses the numbers: each gets one end of a socketpair
	 * with one byte in it.  The library must not read, write or close it. */
	struct sentinel sn[512];
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_SYS(devnull);
	for (int i = 0; i < nlib; i++)
		ASSERT_SYS(dup2(devnull, lib[i])); /* hold the numbers first */
	for (int i = 0; i < nlib; i++) {
		int sp[2];
		struct stat st;
		ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
		ASSERT_SYS(dup3(sp[0], lib[i], O_CLOEXEC));
		ASSERT_SYS(close(sp[0]));
		ASSERT_SYS(fstat(lib[i], &st));
		sn[i] = (struct sentinel){ lib[i], sp[1], st.st_dev, st.st_ino };
		ASSERT_EQ(write(sp[1], "S", 1), 1);
	}
	close(devnull);

	/* Keeps serving: the old connections, a new one. */
	echo_round(s1, seed, &off1, 200 * KIB);
	echo_round(s2, seed, &off2, 200 * KIB);
	pid_t c3 = test_fork(echo_client_at, &ea);
	int s3 = ts_tcp_accept(lfd, ts_ms(2000));
	uint64_t off3 = 0;
	ts_make_accelerated_lead(s3);
	echo_round(s3, seed, &off3, 300 * KIB);
	test_log("new connection: %s", ts_accel(s3) ? "on shared memory" : "on TCP");
	echo_round(s1, seed, &off1, 10 * KIB);

	/* Idle: no thread may spin (on EBADF, say). */
	double cpu1 = ts_cpu_seconds();
	test_sleep_ms(500);
	double idle_cpu = ts_cpu_seconds() - cpu1;
	test_log("CPU: %.3f s while serving (%.3f s wall), %.3f s in 0.5 s idle",
		 cpu1 - cpu0, test_now() - t0, idle_cpu);
	ASSERT_MSG(idle_cpu < 0.2, "%.3f s of CPU in 0.5 s of idleness: something spins",
		   idle_cpu);

	for (int i = 0; i < nlib; i++) {
		struct stat st;
		int avail = -1;
		char b;
		ASSERT_MSG(fstat(sn[i].num, &st) == 0 && st.st_dev == sn[i].dev &&
				   st.st_ino == sn[i].ino,
			   "fd %d (the library's once, ours now) was closed or replaced", sn[i].num);
		ASSERT_SYS(ioctl(sn[i].num, FIONREAD, &avail));
		ASSERT_MSG(avail == 1, "fd %d (ours now): the library read from it", sn[i].num);
		ssize_t r = recv(sn[i].other, &b, 1, MSG_DONTWAIT);
		ASSERT_MSG(r < 0 && errno == EAGAIN, "fd %d (ours now): the library wrote to it",
			   sn[i].num);
		close(sn[i].num);
		close(sn[i].other);
	}

	ASSERT_SYS(close(s1));
	ASSERT_SYS(close(s2));
	ASSERT_SYS(close(s3));
	ASSERT_SYS(close(lfd));
	test_wait_ok(c1, ts_ms(5000) / 1000.0);
	test_wait_ok(c2, ts_ms(5000) / 1000.0);
	test_wait_ok(c3, ts_ms(5000) / 1000.0);
}

static void case_close_all(void)
{
	close_all(0);
}

static void case_close_all_range(void)
{
	close_all(1);
}

/* --- vfork, posix_spawn ----------------------------------------------------- */

enum {
	VF_CLOSE_EXIT,   /* vfork; close(S); _exit */
	VF_DUP2_EXEC,    /* vfork; dup2(S, 1); close(S); close_range(3, ~0); exec */
	VF_CPYTHON,      /* vfork; dup2(pipe, 1); close_range(3, ~0); exec echo */
	VF_SPAWN,        /* posix_spawn: adddup2(S, 1), addclose(S) */
	VF_SPAWN_CLOSEFROM, /* posix_spawn: addclosefrom_np(3) */
	VF_COUNT
};

static const char *const vf_names[VF_COUNT] = {
	"vfork+close+_exit", "vfork+dup2+close+close_range+exec", "vfork+close_range+exec (CPython)",
	"posix_spawn(dup2, close)", "posix_spawn(closefrom)",
};

struct vf {
	const char *truth, *echo;
	char **env;
};

/* The vfork child only calls these and never returns. */
static __attribute__((noinline)) pid_t vfork_variant(int how, int s, int out, const struct vf *v)
{
	pid_t pid = vfork();

	if (pid != 0)
		return pid;
	if (how == VF_CLOSE_EXIT) {
		close(s);
		_exit(0);
	}
	if (how == VF_DUP2_EXEC) {
		char *argv[] = { (char *)"true", NULL };
		dup2(s, 1);
		close(s);
		close_range(3, ~0U, 0);
		execve(v->truth, argv, v->env);
		_exit(127);
	}
	/* CPython's _posixsubprocess: the pipe to stdout, close the rest. */
	char *argv[] = { (char *)"echo", (char *)"from-the-child", NULL };
	dup2(out, 1);
	close_range(3, ~0U, 0);
	execve(v->echo, argv, v->env);
	_exit(127);
}

static void wait_exit0(pid_t pid, const char *what)
{
	int st;
	pid_t r;

	do
		r = waitpid(pid, &st, 0);
	while (r < 0 && errno == EINTR);
	ASSERT_SYS(r);
	ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status 0x%x", what, st);
}

static void vfork_one(int how, int s, const struct vf *v)
{
	int cp[2] = { -1, -1 };
	pid_t pid;

	if (how == VF_CPYTHON)
		ASSERT_SYS(pipe2(cp, O_CLOEXEC));
	if (how == VF_SPAWN || how == VF_SPAWN_CLOSEFROM) {
		posix_spawn_file_actions_t fa;
		char *argv[] = { (char *)"true", NULL };
		ASSERT_EQ(posix_spawn_file_actions_init(&fa), 0);
		if (how == VF_SPAWN) {
			ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, s, 1), 0);
			ASSERT_EQ(posix_spawn_file_actions_addclose(&fa, s), 0);
		} else {
			ASSERT_EQ(posix_spawn_file_actions_addclosefrom_np(&fa, 3), 0);
		}
		ASSERT_EQ(posix_spawn(&pid, v->truth, &fa, NULL, argv, v->env), 0);
		posix_spawn_file_actions_destroy(&fa);
	} else {
		pid = vfork_variant(how, s, cp[1], v);
		ASSERT_SYS(pid);
	}
	wait_exit0(pid, vf_names[how]);
	if (how == VF_CPYTHON) {
		char buf[64];
		close(cp[1]);
		ssize_t n = ts_read_wait(cp[0], buf, sizeof(buf) - 1, ts_ms(2000));
		ASSERT_SYS(n);
		buf[n] = '\0';
		ASSERT_MSG(!strcmp(buf, "from-the-child\n"), "the child's stdout gave \"%s\"", buf);
		close(cp[0]);
	}
}

struct vfork_arg {
	int out_w, out_r; /* our stdout: a pipe the test reads */
};

/* The program: its stdout is a pipe; after each way of starting a child it
 * moves bytes both ways on its connection, then writes to its stdout. */
static void vfork_program(int s, void *arg)
{
	const struct vfork_arg *a = arg;
	struct vf v = { find_prog("/bin/true", "/usr/bin/true"),
			find_prog("/bin/echo", "/usr/bin/echo"), env_without_preload() };
	uint64_t seed = shim_seed(11), off = 0;

	ASSERT_SYS(dup2(a->out_w, 1));
	close(a->out_w);
	close(a->out_r);
	ts_make_accelerated_follow(s);
	for (int how = 0; how < VF_COUNT; how++) {
		vfork_one(how, s, &v);
		ts_recv_stream(s, seed, off, 20000, ts_ms(3000));
		ts_send_stream(s, seed, off, 20000, ts_ms(3000));
		off += 20000;
		char line[80];
		int n = snprintf(line, sizeof(line), "stdout after %s\n", vf_names[how]);
		ASSERT_EQ(write(1, line, (size_t)n), n);
	}
	free(v.env);
	ASSERT_SYS(close(s));
}

static void case_vfork(void)
{
	struct shim_peer p;
	int out[2];
	uint64_t seed = shim_seed(11), off = 0;
	char want[1024] = "", got[1024];
	size_t have = 0;

	ASSERT_SYS(pipe2(out, O_CLOEXEC));
	struct vfork_arg a = { out[1], out[0] };
	ts_peer_start(&p, vfork_program, &a);
	close(out[1]);
	ts_make_accelerated_lead(p.fd);
	for (int how = 0; how < VF_COUNT; how++) {
		test_log("%s", vf_names[how]);
		ts_send_stream(p.fd, seed, off, 20000, ts_ms(3000));
		ts_recv_stream(p.fd, seed, off, 20000, ts_ms(3000));
		off += 20000;
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "stdout after %s\n",
			 vf_names[how]);
	}
	ts_expect_eof(p.fd, ts_ms(3000));
	for (;;) {
		ssize_t n = ts_read_wait(out[0], got + have, sizeof(got) - 1 - have, ts_ms(3000));
		ASSERT_SYS(n);
		if (n == 0)
			break;
		have += (size_t)n;
	}
	got[have] = '\0';
	ASSERT_MSG(!strcmp(got, want), "the program's stdout has \"%s\"", got);
	close(out[0]);
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

/* --- Two processes, one connection --------------------------------------- */

#define RECS 300

/* Record i: header {i, len} then len bytes of stream (seed, i << 32). */
static uint32_t rec_len(uint64_t seed, uint32_t i)
{
	struct test_rng r;

	test_rng_seed(&r, seed ^ i);
	return (uint32_t)test_rng_size(&r, 96 * KIB);
}

static void rec_write(int fd, uint64_t seed, uint32_t i)
{
	uint32_t len = rec_len(seed, i), hdr[2] = { i, len };
	unsigned char *buf = malloc(sizeof(hdr) + len);

	ASSERT_NOT_NULL(buf);
	memcpy(buf, hdr, sizeof(hdr));
	test_stream_fill(seed, (uint64_t)i << 32, buf + sizeof(hdr), len);
	ts_write_all(fd, buf, sizeof(hdr) + len, ts_ms(3000));
	free(buf);
}

static void rec_read(int fd, uint64_t seed, uint32_t i)
{
	uint32_t hdr[2], len = rec_len(seed, i);

	ts_read_exact(fd, hdr, sizeof(hdr), ts_ms(3000));
	ASSERT_MSG(hdr[0] == i && hdr[1] == len, "record %u expected, got header {%u, %u}", i,
		   hdr[0], hdr[1]);
	unsigned char *buf = malloc(len);
	ASSERT_NOT_NULL(buf);
	ts_read_exact(fd, buf, len, ts_ms(3000));
	size_t bad = test_stream_check(seed, (uint64_t)i << 32, buf, len);
	ASSERT_MSG(bad == (size_t)-1, "record %u: byte %zu of %u is wrong", i, bad, len);
	free(buf);
}

struct share_arg {
	int fd, reading;
	int tok_in, tok_out; /* this process's token pipes */
	int first;           /* this process takes the even records */
	uint64_t seed;
};

static void share_turns(const struct share_arg *a)
{
	for (uint32_t i = 0; i < RECS; i++) {
		if ((i % 2 == 0) != a->first)
			continue;
		if (i)
			ASSERT_EQ(ts_token_recv(a->tok_in, ts_ms(5000)), 't');
		if (a->reading)
			rec_read(a->fd, a->seed, i);
		else
			rec_write(a->fd, a->seed, i);
		ts_token_send(a->tok_out, 't');
	}
}

static void share_child(void *arg)
{
	share_turns(arg);
	ASSERT_SYS(close(((const struct share_arg *)arg)->fd));
}

/* The program: forks; parent and child take turns on the connection. */
static void share_program(int fd, void *arg)
{
	const int *reading = arg;
	int p2c[2], c2p[2];

	ts_make_accelerated_follow(fd);
	ASSERT_SYS(pipe2(p2c, O_CLOEXEC));
	ASSERT_SYS(pipe2(c2p, O_CLOEXEC));
	struct share_arg child = { fd, *reading, p2c[0], c2p[1], 0, shim_seed(21) };
	struct share_arg parent = { fd, *reading, c2p[0], p2c[1], 1, shim_seed(21) };
	pid_t pid = test_fork(share_child, &child);
	share_turns(&parent);
	test_wait_ok(pid, ts_ms(10000) / 1000.0);
	ASSERT_SYS(close(fd));
}

static void fork_share(int reading)
{
	struct shim_peer p;
	uint64_t seed = shim_seed(21);

	ts_peer_start(&p, share_program, &reading);
	ts_make_accelerated_lead(p.fd);
	for (uint32_t i = 0; i < RECS; i++) {
		if (reading)
			rec_write(p.fd, seed, i);
		else
			rec_read(p.fd, seed, i);
	}
	ts_expect_eof(p.fd, ts_ms(5000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(10000));
}

/* dup() before connect(): both numbers name the one socket, and whichever
 * connects, reads and writes through either must be the connection's
 * (the library tracked the number that connected only: the other read the
 * raw TCP stream, doorbells and all, or reset the connection). */
static void case_dup_before_connect(void)
{
	int port, lfd = ts_tcp_listen(&port);
	int a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	uint64_t seed = shim_seed(371);

	ASSERT_SYS(a);
	int d = dup(a);
	ASSERT_SYS(d);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_SYS(connect(d, (struct sockaddr *)&sa, sizeof(sa)));
	int b = ts_tcp_accept(lfd, ts_ms(2000));
	ts_make_accelerated(d, b);
	for (int i = 0; i < 8; i++) {
		ts_send_stream(b, seed, (uint64_t)i << 16, 1 << 16, ts_ms(2000));
		ts_recv_stream(i % 2 ? a : d, seed, (uint64_t)i << 16, 1 << 16, ts_ms(2000));
		ts_send_stream(i % 2 ? d : a, seed + 1, (uint64_t)i << 16, 1 << 16, ts_ms(2000));
		ts_recv_stream(b, seed + 1, (uint64_t)i << 16, 1 << 16, ts_ms(2000));
	}
	ts_expect_accel(a, "the number dup'd before connect");
	ASSERT_SYS(close(d));
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
	ASSERT_SYS(close(lfd));
}

static void case_fork_share_write(void)
{
	fork_share(0);
}

static void case_fork_share_read(void)
{
	fork_share(1);
}

/* --- SCM_RIGHTS ------------------------------------------------------------- */

static void send_fd(int via, int fd)
{
	ASSERT_EQ(test_send_fd(via, fd, "F", 1), 1);
}

static int recv_fd(int via)
{
	char c;
	int fd;

	if (!(ts_wait_fd(via, POLLIN, ts_ms(5000)) & POLLIN))
		TEST_FAIL_MSG("no fd passed within 5 s");
	ASSERT_EQ(test_recv_fd(via, &c, 1, MSG_CMSG_CLOEXEC, &fd), 1);
	ASSERT_MSG(fd >= 0, "a message without an fd");
	return fd;
}

#define SCM_BEFORE (300 * KIB) /* written before the pass */
#define SCM_READ (100 * KIB)   /* of which the sender reads this much */
#define SCM_AFTER (200 * KIB)
#define SCM_BACK (100 * KIB)

struct scm_arg {
	int unix_fd, other_unix;
	int keep; /* the sender keeps its copy (unused) until the receiver is done */
	int after; /* bytes the other end sends after the pass (SCM_AFTER or 0) */
};

static void scm_sender(int fd, void *arg)
{
	const struct scm_arg *a = arg;

	close(a->other_unix);
	ts_make_accelerated_follow(fd);
	ts_recv_stream(fd, shim_seed(31), 0, SCM_READ, ts_ms(3000));
	test_log("sender: passing fd %d", fd);
	send_fd(a->unix_fd, fd);
	if (a->keep)
		ASSERT_EQ(ts_token_recv(a->unix_fd, ts_ms(10000)), 'd');
	ASSERT_SYS(close(fd));
}

static void scm_receiver(void *arg)
{
	const struct scm_arg *a = arg;

	close(a->unix_fd);
	int fd = recv_fd(a->other_unix);
	test_log("receiver: got fd %d", fd);
	ts_recv_stream(fd, shim_seed(31), SCM_READ, SCM_BEFORE + (uint64_t)a->after - SCM_READ,
		       ts_ms(5000));
	ts_send_stream(fd, shim_seed(32), 0, SCM_BACK, ts_ms(5000));
	ASSERT_SYS(close(fd));
	if (a->keep)
		ts_token_send(a->other_unix, 'd');
}

enum scm_wait { SCM_BLOCK, SCM_EPOLL, SCM_POLL };

static void wait_recv_stream(int fd, uint64_t seed, uint64_t n, int use_epoll);

/* The pass, with the end that stays sending SCM_AFTER more after it and
 * reading blocking (SCM_BLOCK), or reading only, waiting in epoll_wait or
 * poll while the other passes its copy on. */
static void scm_rights_run(int keep, enum scm_wait how)
{
	int u[2];
	struct shim_peer p;

	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u));
	struct scm_arg a = { u[0], u[1], keep, how == SCM_BLOCK ? SCM_AFTER : 0 };
	pid_t recv_pid = test_fork(scm_receiver, &a);
	ts_peer_start(&p, scm_sender, &a);
	close(u[0]);
	close(u[1]);
	ts_make_accelerated_lead(p.fd);
	ts_send_stream(p.fd, shim_seed(31), 0, SCM_BEFORE, ts_ms(5000));
	if (how == SCM_BLOCK) {
		ts_send_stream(p.fd, shim_seed(31), SCM_BEFORE, SCM_AFTER, ts_ms(5000));
		ts_recv_stream(p.fd, shim_seed(32), 0, SCM_BACK, ts_ms(5000));
	} else {
		wait_recv_stream(p.fd, shim_seed(32), SCM_BACK, how == SCM_EPOLL);
	}
	ts_expect_eof(p.fd, ts_ms(5000));
	ASSERT_SYS(close(p.fd));
	test_wait_ok(recv_pid, ts_ms(5000) / 1000.0);
	ts_peer_wait(&p, ts_ms(5000));
}

/* A socket passed to its own process (threads that hand connections to
 * each other over a socketpair), the old number closed: it is the same
 * connection under a new number.  Tracked as a second one, the close of
 * the old number ended the connection we knew, and an epoll set that
 * holds the socket (the kernel keeps it: the file lives on) went empty
 * (tests/diff_shim.c seed 322325039635632). */
static void case_scm_to_self(void)
{
	int a, b, u[2];
	char got[8];

	ts_moved_pair(&a, &b);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_SYS(ep);
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 7 }, out;
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev));
	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u));
	send_fd(u[0], a);
	int na = recv_fd(u[1]);
	close(u[0]);
	close(u[1]);
	ASSERT_SYS(close(a));
	ts_write_all(b, "ping", 4, ts_ms(2000));
	ASSERT_MSG(epoll_wait(ep, &out, 1, ts_ms(3000)) == 1,
		   "the epoll set lost the socket passed to ourselves");
	ASSERT_EQ(out.data.u32, 7u);
	ts_read_exact(na, got, 4, ts_ms(3000));
	ASSERT_MEM_EQ(got, "ping", 4);
	ts_write_all(na, "pong", 4, ts_ms(2000));
	ts_read_exact(b, got, 4, ts_ms(3000));
	ASSERT_MEM_EQ(got, "pong", 4);
	ASSERT_SYS(close(b));
	ts_expect_eof(na, ts_ms(3000));
	ASSERT_SYS(close(na));
	ASSERT_SYS(close(ep));
}

/* A vfork child runs in our memory: its dup2 onto stdout changes nothing
 * of ours.  It took the connection back to TCP there, and with the peer
 * gone and bytes unread, that way back reset our connection for a child
 * that then only exited (tests/diff_shim.c seed 325396016166023). */
/* A vfork child that puts s on its stdout, closes s and exits (it never
 * returns from here); its status. */
static __attribute__((noinline)) int vfork_onto_stdout(int s)
{
	pid_t pid = vfork();

	if (pid == 0) {
		dup2(s, 1);
		close(s);
		_exit(0);
	}
	ASSERT_SYS(pid);
	return test_wait(pid, 5);
}

static void case_vfork_dup2_stdout(void)
{
	int a, b;
	char got[8];

	if (test_tsan()) {
		/* Its vfork() is a fork() (the interceptor's), whose child's
		 * dup2 onto stdout is its own and goes back to TCP. */
		test_log("TSan makes vfork a fork: nothing of vfork's to check");
		return;
	}
	/* First a connection still on TCP: there is no peer's end to look
	 * at (the look crashed the child, SIGSEGV, in bffdcb8). */
	ts_pair(&a, &b);
	ASSERT_EQ(vfork_onto_stdout(a), 0);
	ts_write_all(a, "tcp", 3, ts_ms(2000));
	ts_read_exact(b, got, 3, ts_ms(3000));
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));

	ts_moved_pair(&a, &b);
	ts_write_all(b, "left", 4, ts_ms(2000));
	ASSERT_SYS(close(b));
	ts_wait_arrived(a, 4, ts_ms(3000));
	test_sleep_ms(50); /* the close's doorbell: the peer is gone */
	ASSERT_EQ(vfork_onto_stdout(a), 0);
	ts_read_exact(a, got, 4, ts_ms(3000));
	ASSERT_MEM_EQ(got, "left", 4);
	ts_expect_eof(a, ts_ms(3000));
	ASSERT_SYS(close(a));
}

/* CPython's subprocess with pass_fds: a vfork child keeps the moved
 * socket at 3, closes every fd above (the library's too) and execs a
 * program that writes there.  With no arena left to pass on, the exec
 * took nothing back to TCP, and the child's bytes went behind the ring:
 * "written to a TCP socket behind the library's back" (t_apps_python's cat
 * child, on stdout: the same once stdout's way back waits for the exec). */
#define VF_WANT "before|child-bytes|after"

static void vfork_exec_peer(int fd, void *arg)
{
	char got[64];

	(void)arg;
	ts_make_accelerated_follow(fd);
	ts_read_exact(fd, got, strlen(VF_WANT), ts_ms(5000));
	ts_write_all(fd, memcmp(got, VF_WANT, strlen(VF_WANT)) ? "no" : "ok", 2, ts_ms(2000));
	ts_expect_eof(fd, ts_ms(5000));
}

static void case_vfork_exec_writes(void)
{
	const char *sh = find_prog("/bin/sh", "/usr/bin/sh");
	char *argv[] = { (char *)"sh", (char *)"-c", (char *)"printf child-bytes >&3", NULL };
	struct shim_peer p;
	char got[2];

	ts_peer_start(&p, vfork_exec_peer, NULL);
	ts_make_accelerated_lead(p.fd);
	ts_write_all(p.fd, "before|", 7, ts_ms(2000));
	pid_t pid = vfork();
	ASSERT_SYS(pid);
	if (pid == 0) {
		if (p.fd != 3 && dup2(p.fd, 3) < 0)
			_exit(126);
		close_range(4, ~0U, 0);
		execve(sh, argv, environ);
		_exit(127);
	}
	wait_exit0(pid, "sh -c printf");
	ts_write_all(p.fd, "|after", 6, ts_ms(2000));
	ts_read_exact(p.fd, got, 2, ts_ms(5000));
	ASSERT_MSG(!memcmp(got, "ok", 2), "the peer did not read \"%s\"", VF_WANT);
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

static void case_scm_rights(void)
{
	scm_rights_run(0, SCM_BLOCK);
}

static void case_scm_rights_keep(void)
{
	scm_rights_run(1, SCM_BLOCK);
}

/* Read n bytes of stream seed from a non-blocking fd, waiting in
 * epoll_wait on a set that holds it, or in poll() (5 s at most). */
static void wait_recv_stream(int fd, uint64_t seed, uint64_t n, int use_epoll)
{
	int ep = use_epoll ? epoll_create1(EPOLL_CLOEXEC) : -1;
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	uint64_t got = 0, end = test_now_ns() + (uint64_t)ts_ms(5000) * 1000000u;
	static uint8_t buf[64 * KIB], want[64 * KIB];

	if (use_epoll) {
		ASSERT_SYS(ep);
		ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	}
	ts_set_nonblock(fd, 1);
	while (got < n) {
		ASSERT_MSG(test_now_ns() < end, "%ju of %ju bytes within 5 s", (uintmax_t)got,
			   (uintmax_t)n);
		int k = use_epoll ? epoll_wait(ep, &ev, 1, 100) : ts_wait_fd(fd, POLLIN, 100) != 0;
		ASSERT_SYS(k);
		if (k == 0)
			continue;
		size_t want_n = n - got < sizeof(buf) ? (size_t)(n - got) : sizeof(buf);
		ssize_t r = read(fd, buf, want_n);
		ASSERT_MSG(r > 0 || (r < 0 && errno == EAGAIN), "read: %zd (%s)", r,
			   r < 0 ? test_errname(errno) : "end of stream");
		if (r <= 0)
			continue;
		test_stream_fill(seed, got, want, (size_t)r);
		ASSERT_MSG(!memcmp(buf, want, (size_t)r), "bytes %ju.. differ", (uintmax_t)got);
		got += (uint64_t)r;
	}
	ts_set_nonblock(fd, 0);
	if (use_epoll)
		ASSERT_SYS(close(ep));
}

/* The end that stays waits in epoll_wait (or poll) when the other passes
 * its copy on: the wait answers the way back from inside its scan, sends
 * what the other left in our ring by TCP, and gives the registration back
 * to the program once the scan let go of the set (it locked the set
 * again: a hang for good, found by the soak; and no doorbell told the
 * wait when to send: the bytes never came). */
static void case_scm_rights_epoll(void)
{
	scm_rights_run(0, SCM_EPOLL);
}

static void case_scm_rights_poll(void)
{
	scm_rights_run(0, SCM_POLL);
}

/* The end that passes the socket on read only a prefix of what the other
 * end sent by TCP before it switched to the ring, and the other end only
 * sends, then closes.  Going back to TCP needs the stream free of
 * doorbells behind that unread data (the switch's wake-up doorbell used to
 * land there: reset), and the writer's stream free of the asker's
 * doorbells at its close (the kernel reset the connection under the data
 * on its way to the new holder).  Found by the soak: tests/repro/scmback.c,
 * 2 to 5 rounds in 10 reset before.  32 MiB: more than the kernel's
 * buffers of both ends hold (10 MiB at most here), so that the writer
 * cannot be done and closed before the pass, which resets by design (a
 * ring's bytes that nobody is left to send again: docs/design.md, Limits;
 * 1 run in 30 with 8 MiB). */
#define UNREAD_TOTAL (32u << 20)
#define UNREAD_PREFIX (1u << 20)
#define UNREAD_MOVE_BY (4u << 20)
#define UNREAD_ROUNDS 10

/* scm_rights_unread_armed (1) and _rung (2): the passer sends and waits
 * too, and the writer reads what it sent, after its own sends (1) or
 * slowly meanwhile (2; below). */
static int g_unread_armed;

/* In 16 KiB writes: the meeting takes its steps on calls. */
static void unread_writer_send(int fd, void *arg)
{
	(void)arg;
	for (uint64_t off = 0; off < UNREAD_TOTAL; off += 16 * KIB)
		ts_send_stream(fd, shim_seed(41), off, 16 * KIB, ts_ms(20000));
}

static void *armed_read_back(void *arg);

static void unread_writer(int fd, void *arg)
{
	pthread_t th;

	if (g_unread_armed == 2)
		ASSERT_EQ(pthread_create(&th, NULL, armed_read_back, &fd), 0);
	unread_writer_send(fd, arg);
	if (g_unread_armed == 1)
		armed_read_back(&fd);
	if (g_unread_armed == 2)
		ASSERT_EQ(pthread_join(th, NULL), 0);
	ASSERT_SYS(close(fd));
}

static void unread_receiver(void *arg)
{
	const int *u = arg;
	uint64_t off;

	close(u[0]);
	ASSERT_EQ(read(u[1], &off, sizeof(off)), (ssize_t)sizeof(off));
	int fd = recv_fd(u[1]);
	ts_recv_stream(fd, shim_seed(41), off, UNREAD_TOTAL - off, ts_ms(20000));
	if (g_unread_armed)
		ASSERT_SYS(shutdown(fd, SHUT_WR)); /* the writer reads to here */
	ts_expect_eof(fd, ts_ms(20000));
	ASSERT_SYS(close(fd));
}

static void fill_and_wait(int fd);

/* One round: the first MiB or more, in 64 KiB reads as a server reads a
 * request, until the connection moved (4 MiB at most); then (armed) the
 * passer's own sends and wait, and the pass.  1 if it had moved. */
static int unread_round(void)
{
	int u[2], moved;
	struct shim_peer p;
	uint64_t off = 0;

	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u));
	pid_t recv_pid = test_fork(unread_receiver, u);
	ts_peer_start(&p, unread_writer, NULL);
	close(u[1]);
	while (off < UNREAD_PREFIX || (off < UNREAD_MOVE_BY && !ts_moved(p.fd))) {
		ts_recv_stream(p.fd, shim_seed(41), off, 64 * KIB, ts_ms(5000));
		off += 64 * KIB;
	}
	usleep(20000); /* the writer sends on meanwhile, and switches */
	moved = ts_moved(p.fd);
	if (moved && g_unread_armed)
		fill_and_wait(p.fd);
	ASSERT_EQ(write(u[0], &off, sizeof(off)), (ssize_t)sizeof(off));
	send_fd(u[0], p.fd);
	ASSERT_SYS(close(p.fd));
	ASSERT_SYS(close(u[0]));
	test_wait_ok(recv_pid, ts_ms(30000) / 1000.0);
	ts_peer_wait(&p, ts_ms(10000));
	return moved;
}

static void case_scm_rights_unread(void)
{
	int moved = 0;

	for (int r = 0; r < UNREAD_ROUNDS; r++)
		moved += unread_round();
	test_log("%d rounds of %u MiB, %d of them passed on moved", UNREAD_ROUNDS,
		 UNREAD_TOTAL >> 20, moved);
	ASSERT_MSG(ts_disabled() || moved > 0, "no round moved before its pass");
}

/*
 * As scm_rights_unread, and the passer's own sends fill its ring first
 * while the writer does not read, and it waits for room in epoll_wait
 * (which gives up): its wait stays armed.  The writer, answering the way
 * back, rang it "once more" for a wait asleep on the ring, a doorbell
 * behind megabytes the passer had not read, more than the ring's room:
 * the connection could not go back exactly and was reset (the soak's
 * hand-overs, "doorbells wait behind unread data", 5 in its first 14
 * minutes).  A passer with data before the writer's switch still to read
 * sleeps on no doorbell, and gets none now.  The writer then reads what
 * the passer sent, to the end the new holder gives it.
 */
#define ARMED_SEED2 (shim_seed(43))

/* The writer: what the passer sent, to the end its new holder gives (in
 * _rung, 16 KiB a millisecond while it sends). */
static void *armed_read_back(void *arg)
{
	static unsigned char buf[64 * KIB], want[64 * KIB];
	int fd = *(int *)arg;
	size_t chunk = g_unread_armed == 2 ? 16 * KIB : sizeof(buf);
	uint64_t got = 0;
	ssize_t r;

	while ((r = read(fd, buf, chunk)) > 0) {
		test_stream_fill(ARMED_SEED2, got, want, (size_t)r);
		ASSERT_MSG(memcmp(buf, want, (size_t)r) == 0, "the passer's byte %llu and on differ",
			   (unsigned long long)got);
		got += (uint64_t)r;
		if (g_unread_armed == 2)
			usleep(1000);
	}
	ASSERT_MSG(r == 0, "the writer's read: %s", strerror(errno));
	return NULL;
}

/* The passer's ring full, and an epoll wait for room that gives up. */
static void fill_and_wait(int fd)
{
	static unsigned char buf[16 * KIB];
	uint64_t sent = 0;
	ssize_t n;

	ts_set_nonblock(fd, 1);
	do {
		test_stream_fill(ARMED_SEED2, sent, buf, sizeof(buf));
		n = send(fd, buf, sizeof(buf), MSG_NOSIGNAL);
		sent += n > 0 ? (uint64_t)n : 0;
	} while (n > 0 && sent < (4u << 20)); /* to EAGAIN: no room at all */
	ASSERT_MSG(n >= 0 || errno == EAGAIN, "the passer's send: %s", strerror(errno));
	ts_set_nonblock(fd, 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLOUT };
	ASSERT_SYS(ep);
	ASSERT_SYS(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
	/* Nobody frees room in _armed (in _rung the writer does), but with
	 * the writer waiting for room too, the wait may give up on the ring
	 * after 50 ms (io.c, "Both ends full"): writable then. */
	int k = epoll_wait(ep, &ev, 1, 50);
	ASSERT_SYS(k);
	ASSERT_SYS(close(ep));
	test_log("the passer sent %llu bytes and waited for room: %s", (unsigned long long)sent,
		 k ? "writable" : "none");
}

static void armed_rounds(int how)
{
	int moved = 0, r;

	g_unread_armed = how;
	for (r = 0; r < 20 && moved < 3; r++)
		moved += unread_round();
	g_unread_armed = 0;
	test_log("%d rounds, %d of them passed on moved", r, moved);
	ASSERT_MSG(ts_disabled() || moved > 0, "no round moved before its pass");
}

static void case_scm_rights_unread_armed(void)
{
	armed_rounds(1);
}

/* The same with a writer that reads the passer's bytes slowly meanwhile:
 * the room it freed rang the passer's wait, a doorbell behind the data
 * the passer had not read (the soak's hand-overs again, after the fix
 * above).  A peer short of our switch gets no doorbell now, and its waits
 * for room look again on their own. */
static void case_scm_rights_unread_rung(void)
{
	armed_rounds(2);
}

/*
 * A read in the kernel since before the passer's switch, and kept off the
 * CPU (as a loaded machine does) while the passer writes into its ring,
 * passes the socket on and its new holder sends by TCP: the read comes
 * back with the passer's doorbell and the new holder's data, while the
 * ring still holds the passer's bytes, which come first.  It was reset
 * ("bytes were written to a TCP socket behind the library's back": the
 * soak's hand-overs, most of its errors in an hour); the new holder's
 * bytes now wait behind the ring.  The reader sits on CPU 0 under a
 * SCHED_FIFO spinner from before the move until the new holder has sent.
 */
#define PB_HEAD (64 * KIB)  /* the passer's data read before the move */
#define PB_RING (128 * KIB) /* then, into its ring (_full: all but 8 KiB of it) */
#define PB_NEW (16 * KIB)   /* the new holder's, while the reader is off the CPU */
#define PB_TAIL (256 * KIB) /* and after */
#define PB_RING_FULL (504 * KIB)
#define PB_TOTAL (PB_HEAD + g_pb_ring + PB_NEW + PB_TAIL)

static uint64_t g_pb_ring = PB_RING;
#define PB_SPIN_MS 3000

enum { PB_START, PB_STARVING, PB_MOVED, PB_PASSED, PB_SENT };

struct pb_shared {
	_Atomic int stage;
	_Atomic uint32_t chunks; /* the passer's reads of the stayer's stream */
	_Atomic uint64_t got;    /* the stayer's reader's bytes */
	_Atomic int reader_tid;
	_Atomic int timed_out;   /* the spinner gave up */
	_Atomic uint64_t got_at_sent; /* the reader's bytes once the holder sent */
};

static struct pb_shared *g_pb;

static void pb_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ASSERT_SYS(sched_setaffinity(0, sizeof(set), &set));
}

static void pb_until(int stage, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	while (atomic_load(&g_pb->stage) < stage) {
		ASSERT_MSG(test_now_ns() < end, "stage %d not reached within %d ms (at %d)", stage,
			   ms, atomic_load(&g_pb->stage));
		usleep(200);
	}
}

/* The passer: its head, the stayer's stream until the connection moved,
 * its ring part while the stayer's reader is off the CPU, the pass. */
static void pb_passer(int fd, void *arg)
{
	const int *u = arg;

	close(u[1]);
	pb_cpu(1);
	ts_send_stream(fd, shim_seed(51), 0, PB_HEAD, ts_ms(5000));
	pb_until(PB_STARVING, ts_ms(5000));
	for (uint64_t off = 0;; off += 16 * KIB) {
		ts_recv_stream(fd, shim_seed(52), off, 16 * KIB, ts_ms(5000));
		if (ts_moved(fd))
			break;
		ASSERT_MSG(off < (8u << 20), "not moved after 8 MiB");
		atomic_fetch_add(&g_pb->chunks, 1);
	}
	atomic_store(&g_pb->stage, PB_MOVED);
	ts_send_stream(fd, shim_seed(51), PB_HEAD, g_pb_ring, ts_ms(5000));
	send_fd(u[0], fd);
	ASSERT_SYS(close(fd));
	atomic_store(&g_pb->stage, PB_PASSED);
	ASSERT_SYS(close(u[0]));
}

/* The new holder: the passer's stream on, by TCP. */
static void pb_holder(void *arg)
{
	const int *u = arg;

	close(u[0]);
	pb_cpu(1);
	int fd = recv_fd(u[1]);
	pb_until(PB_PASSED, ts_ms(5000));
	ts_send_stream(fd, shim_seed(51), PB_HEAD + g_pb_ring, PB_NEW, ts_ms(5000));
	/* In the reader's socket, not only on the way (its window). */
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(2000) * 1000000u;
	int outq;
	while (ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0 && test_now_ns() < end)
		usleep(200);
	atomic_store(&g_pb->stage, PB_SENT);
	ts_send_stream(fd, shim_seed(51), PB_HEAD + g_pb_ring + PB_NEW, PB_TAIL, ts_ms(5000));
	ASSERT_SYS(close(fd));
}

/* The stayer's reader, on CPU 0: blocking reads of 256 KiB to the end. */
static void *pb_reader(void *arg)
{
	static unsigned char buf[256 * KIB];
	int fd = *(int *)arg;
	ssize_t r;

	pb_cpu(0);
	atomic_store(&g_pb->reader_tid, (int)gettid());
	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		uint64_t got = atomic_load(&g_pb->got);
		size_t bad = test_stream_check(shim_seed(51), got, buf, (size_t)r);
		ASSERT_MSG(bad == (size_t)-1, "the passer's byte %ju is wrong",
			   (uintmax_t)(got + bad));
		atomic_store(&g_pb->got, got + (uint64_t)r);
	}
	ASSERT_MSG(r == 0, "the reader: %s after %ju bytes", test_errname(errno),
		   (uintmax_t)atomic_load(&g_pb->got));
	return NULL;
}

/* The reader's thread asleep (in its read): its state in /proc is S. */
static int pb_reader_sleeps(void)
{
	char path[64], st[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", atomic_load(&g_pb->reader_tid));
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;
	if (f)
		fclose(f);
	st[n] = 0;
	const char *p = strrchr(st, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

/* The spinner's loop: no call in it, not even a sanitizer's, which may
 * sleep on a lock of its own and so let the reader run (TSan's atomics
 * do): plain volatile loads, which TSan is told not to see. */
__attribute__((no_sanitize("thread"))) static uint64_t pb_spin_loop(void)
{
	volatile int *stage = (volatile int *)&g_pb->stage;
	volatile int *timed_out = (volatile int *)&g_pb->timed_out;

	while (*stage < PB_SENT && !*timed_out)
		;
	return *(volatile uint64_t *)&g_pb->got; /* before anything can sleep */
}

/* On CPU 0, above the reader, until the new holder has sent or the main
 * thread gives up (timed_out). */
static void *pb_spinner(void *arg)
{
	(void)arg;
	atomic_store(&g_pb->stage, PB_STARVING);
	atomic_store(&g_pb->got_at_sent, pb_spin_loop());
	return NULL;
}

static void pb_send_until_moved(int fd, uint64_t end);

/* The kernel lends a CPU's other threads 50 ms a second however busy its
 * real-time ones are (its fair server): a spin that lasted longer may
 * have let the reader run, and says nothing.  A sanitizer's build needs
 * about a second now and then. */
#define PB_LOAN_FREE_MS 800

/* The spinner, and meanwhile on CPU 1 the move and the stayer's answer to
 * the way back: sends of nothing, which read nothing. */
static void pb_spin(int fd)
{
	pthread_attr_t a;
	struct sched_param sp = { .sched_priority = 1 };
	cpu_set_t set;
	pthread_t th;

	CPU_ZERO(&set);
	CPU_SET(0, &set);
	ASSERT_EQ(pthread_attr_init(&a), 0);
	ASSERT_EQ(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED), 0);
	ASSERT_EQ(pthread_attr_setschedpolicy(&a, SCHED_FIFO), 0);
	ASSERT_EQ(pthread_attr_setschedparam(&a, &sp), 0);
	ASSERT_EQ(pthread_attr_setaffinity_np(&a, sizeof(set), &set), 0);
	ASSERT_EQ(pthread_create(&th, &a, pb_spinner, NULL), 0);
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(PB_SPIN_MS) * 1000000u;
	pb_until(PB_STARVING, ts_ms(1000));
	pb_send_until_moved(fd, end);
	while (atomic_load(&g_pb->stage) < PB_SENT) {
		if (test_now_ns() > end) {
			atomic_store(&g_pb->timed_out, 1);
			break;
		}
		ssize_t k = send(fd, "", 0, MSG_NOSIGNAL | MSG_DONTWAIT);
		ASSERT_MSG(k == 0 || errno == EAGAIN, "the stayer's send: %s", test_errname(errno));
		usleep(500);
	}
	ASSERT_EQ(pthread_join(th, NULL), 0);
	pthread_attr_destroy(&a);
}

/* The stayer's stream, 16 KiB at a time as the passer reads it, until
 * the connection moved (by `end`). */
static void pb_send_until_moved(int fd, uint64_t end)
{
	for (uint32_t k = 0; atomic_load(&g_pb->stage) < PB_MOVED; k++) {
		ts_send_stream(fd, shim_seed(52), (uint64_t)k * 16 * KIB, 16 * KIB, ts_ms(5000));
		while (atomic_load(&g_pb->chunks) <= k && atomic_load(&g_pb->stage) < PB_MOVED) {
			ASSERT_MSG(test_now_ns() < end, "the passer read %u chunks of %u",
				   atomic_load(&g_pb->chunks), k + 1);
			usleep(100);
		}
	}
}

/* One round; 1 if the reader was held off the CPU all along (it took
 * nothing between the passer's switch and the new holder's send). */
static int pb_round(void)
{
	int u[2];
	struct shim_peer p;
	pthread_t rd;

	memset(g_pb, 0, sizeof(*g_pb));
	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u));
	pid_t holder = test_fork(pb_holder, u);
	ts_peer_start(&p, pb_passer, u);
	close(u[0]);
	close(u[1]);
	ASSERT_EQ(pthread_create(&rd, NULL, pb_reader, &p.fd), 0);
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(5000) * 1000000u;
	while (atomic_load(&g_pb->got) < PB_HEAD || !pb_reader_sleeps()) {
		ASSERT_MSG(test_now_ns() < end, "the reader has %ju bytes, not asleep in its read",
			   (uintmax_t)atomic_load(&g_pb->got));
		usleep(1000);
	}
	uint64_t t0 = test_now_ns();
	pb_spin(p.fd);
	uint64_t spun_ms = (test_now_ns() - t0) / 1000000u;
	ASSERT_EQ(pthread_join(rd, NULL), 0);
	test_log("spun %ju ms; the reader had %ju bytes when the new holder had sent, %ju at "
		 "the end", (uintmax_t)spun_ms, (uintmax_t)atomic_load(&g_pb->got_at_sent),
		 (uintmax_t)atomic_load(&g_pb->got));
	ASSERT_MSG(!atomic_load(&g_pb->timed_out), "the new holder did not send within %d ms",
		   ts_ms(PB_SPIN_MS));
	ASSERT_EQ(atomic_load(&g_pb->got), (uint64_t)PB_TOTAL);
	ASSERT_SYS(close(p.fd));
	test_wait_ok(holder, ts_ms(5000) / 1000.0);
	ts_peer_wait(&p, ts_ms(5000));
	if (spun_ms >= PB_LOAN_FREE_MS) {
		usleep(1200 * 1000); /* the loan falls due at once after such a spin */
		return 0;
	}
	ASSERT_EQ(atomic_load(&g_pb->got_at_sent), (uint64_t)PB_HEAD);
	return 1;
}

static void case_scm_rights_past_back(void)
{
	cpu_set_t all;
	int r;

	ASSERT_MSG(sysconf(_SC_NPROCESSORS_ONLN) >= 2, "two CPUs needed");
	ASSERT_SYS(sched_getaffinity(0, sizeof(all), &all));
	g_pb = mmap(NULL, sizeof(*g_pb), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT(g_pb != MAP_FAILED);
	pb_cpu(1);
	/* A sanitizer's build spins past the loan in a round now and then,
	 * and all of 6 once in CI: it has the rounds its 60 s allow. */
	int rounds = test_sanitized() ? 14 : 6;
	for (r = 0; r < rounds && !pb_round(); r++)
		;
	ASSERT_MSG(r < rounds, "%d rounds, each spun more than %d ms", rounds, PB_LOAN_FREE_MS);
	ASSERT_SYS(sched_setaffinity(0, sizeof(all), &all));
	munmap(g_pb, sizeof(*g_pb));
}

/* The same with the passer's ring all but full: the new holder's bytes
 * that the read took do not fit behind the ring's (reset before): the read
 * takes the ring's bytes first, which makes room. */
static void case_scm_rights_past_back_full(void)
{
	g_pb_ring = PB_RING_FULL;
	case_scm_rights_past_back();
	g_pb_ring = PB_RING;
}

/* The end that stays sends in small pieces up to a random offset, where
 * the other, having read each byte, passes the socket on; the stayer
 * pauses there a random while (0 to 300 us), then sends the rest: its
 * ring is empty and nothing of its is inside, so the passer may answer
 * for it (back.c, take_over) while its next send races the take-over, or
 * the send wins and it answers itself.  The new holder reads the rest:
 * each byte once, in order; then the stayer reads its answer and the
 * end.  30 rounds. */
#define SS_TOTAL (1024 * KIB)
#define SS_PIECE 512

struct ss_arg {
	int u[2];
	uint64_t seed, at;
};

static void ss_passer(int fd, void *arg)
{
	struct ss_arg *a = arg;
	uint64_t at = a->at;

	close(a->u[1]);
	ts_make_accelerated_follow(fd);
	ts_recv_stream(fd, a->seed, 0, at, ts_ms(5000));
	ASSERT_EQ(test_send_fd(a->u[0], fd, &at, sizeof(at)), (ssize_t)sizeof(at));
	ASSERT_SYS(close(fd));
	ASSERT_SYS(close(a->u[0]));
}

static void ss_holder(void *arg)
{
	struct ss_arg *a = arg;
	uint64_t at = 0;
	int fd = -1;

	close(a->u[0]);
	if (!(ts_wait_fd(a->u[1], POLLIN, ts_ms(5000)) & POLLIN))
		TEST_FAIL_MSG("no fd passed within 5 s");
	ASSERT_EQ(test_recv_fd(a->u[1], &at, sizeof(at), MSG_CMSG_CLOEXEC, &fd),
		  (ssize_t)sizeof(at));
	ASSERT_MSG(fd >= 0, "a message without an fd");
	ts_recv_stream(fd, a->seed, at, SS_TOTAL - at, ts_ms(10000));
	ts_send_stream(fd, a->seed + 1, 0, 4 * KIB, ts_ms(5000));
	ASSERT_SYS(close(fd));
}

static void ss_send(int fd, uint64_t seed, uint64_t from, uint64_t to)
{
	for (uint64_t off = from; off < to; off += SS_PIECE)
		ts_send_stream(fd, seed, off, to - off < SS_PIECE ? to - off : SS_PIECE, ts_ms(5000));
}

static void ss_round(uint64_t seed, uint64_t at, unsigned pause_us)
{
	struct ss_arg a = { .seed = seed, .at = at };
	struct shim_peer p;

	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a.u));
	pid_t holder = test_fork(ss_holder, &a);
	ts_peer_start(&p, ss_passer, &a);
	close(a.u[0]);
	close(a.u[1]);
	ts_make_accelerated_lead(p.fd);
	ss_send(p.fd, seed, 0, at);
	if (pause_us)
		usleep(pause_us);
	ss_send(p.fd, seed, at, SS_TOTAL);
	ts_recv_stream(p.fd, seed + 1, 0, 4 * KIB, ts_ms(5000));
	ts_expect_eof(p.fd, ts_ms(5000));
	ASSERT_SYS(close(p.fd));
	test_wait_ok(holder, 10);
	ts_peer_wait(&p, ts_ms(5000));
}

static void case_scm_rights_stayer_sends(void)
{
	struct test_rng r;

	test_rng_seed(&r, shim_seed(53));
	for (int i = 0; i < 30; i++)
		ss_round(shim_seed(54 + (uint64_t)i), test_rng_range(&r, 4 * KIB, SS_TOTAL - 1),
			 (unsigned)test_rng_range(&r, 0, 300));
}

/*
 * A thread's poll on moved sockets also waits on an eventfd of the
 * library's, which whoever takes a doorbell kicks (src/shim/kick.c).  A
 * forked child kept its parent's: one eventfd in two processes, and a
 * kick one of them took and reset was lost to the other, whose poll slept
 * on with its ring emptied (t_shim_fds scm_rights_unread_rung: the
 * writer's poll for room, kicked by its reader thread, its parent's poll
 * reset the kick first; 1 run in 40).  A child now waits on its own.
 */
#define KICK_IDS 16

struct kick_ids {
	long id[KICK_IDS];
	int n;
};

/* The eventfds of this process, by the id the kernel gives each (fdinfo). */
static void eventfd_ids(struct kick_ids *k)
{
	DIR *d = opendir("/proc/self/fdinfo");
	struct dirent *e;
	char path[300], buf[512];

	ASSERT(d != NULL);
	k->n = 0;
	while ((e = readdir(d)) && k->n < KICK_IDS) {
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		buf[n > 0 ? n : 0] = 0;
		const char *id = strstr(buf, "eventfd-id:");
		if (id)
			k->id[k->n++] = strtol(id + 11, NULL, 10);
	}
	closedir(d);
}

/* A poll that sleeps a little on a moved socket: it waits on the kick. */
static void kick_poll(int fd, struct kick_ids *k)
{
	struct pollfd p = { fd, POLLIN, 0 };

	ASSERT_EQ(poll(&p, 1, 20), 0);
	eventfd_ids(k);
}

static struct kick_ids g_parent_kicks;

static void kick_child(void *arg)
{
	struct kick_ids mine;

	kick_poll(*(int *)arg, &mine);
	ASSERT_MSG(ts_disabled() || mine.n > 0,
		   "the child's poll waits on no eventfd of the library");
	for (int i = 0; i < mine.n; i++)
		for (int j = 0; j < g_parent_kicks.n; j++)
			ASSERT_MSG(mine.id[i] != g_parent_kicks.id[j],
				   "the child holds its parent's eventfd %ld", mine.id[i]);
}

static void case_fork_kick_own(void)
{
	int a, b;

	ts_moved_pair(&a, &b);
	kick_poll(a, &g_parent_kicks);
	ASSERT_MSG(ts_disabled() || g_parent_kicks.n > 0,
		   "a poll on a moved socket waits on no eventfd of the library");
	test_wait_ok(test_fork(kick_child, &a), ts_ms(5000) / 1000.0);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

/* A child that ends by _exit() while it still holds sockets (a
 * fork-per-connection server's handler, after its parent closed its copy)
 * lets go of nothing: its slots kept a dead holder for good, and after
 * 16384 of them no connection of the family could move.  They are
 * reclaimed now once a process's window is full. */
#define EXIT_SLOTS_ROUNDS 400

static void case_fork_exit_slots(void)
{
	if (ts_disabled() || !shunt__shim_arena_used) {
		test_log("no arena: nothing to check");
		return;
	}
	int before = shunt__shim_arena_used();
	for (int i = 0; i < EXIT_SLOTS_ROUNDS; i++) {
		int c, sv, go[2];
		char b;
		ts_pair(&c, &sv);
		ASSERT_SYS(pipe(go));
		pid_t pid = fork();
		ASSERT_SYS(pid);
		if (pid == 0) {
			close(go[1]);
			_exit(read(go[0], &b, 1) == 0 ? 0 : 1); /* holding c and sv */
		}
		ASSERT_SYS(close(go[0]));
		ASSERT_SYS(close(c));
		ASSERT_SYS(close(sv));
		ASSERT_SYS(close(go[1]));
		int st;
		ASSERT_EQ(waitpid(pid, &st, 0), pid);
		ASSERT_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	}
	int used = shunt__shim_arena_used();
	test_log("%d sockets held by children that ended by _exit(): %d slots in use "
		 "(%d before)", 2 * EXIT_SLOTS_ROUNDS, used, before);
	/* A window of dead holders may wait for its next sweep: at most
	 * 256 slots, against one per socket. */
	ASSERT_MSG(used - before <= 320, "%d slots still taken by dead holders", used - before);
}

/* --- exec ---------------------------------------------------------------- */

#define EXEC_BEFORE (50 * KIB)
#define EXEC_TOTAL (200 * KIB)
#define EXEC_BACK (100 * KIB)

/* The new image (this program with "exec-helper FD"): the rest of the
 * stream in, its answer out. */
static int exec_helper_main(int argc, char **argv)
{
	test_init("t_shim_fds:exec-helper");
	ASSERT_EQ(argc, 3);
	int fd = atoi(argv[2]);
	ASSERT_SYS(fcntl(fd, F_GETFD));
	test_log("after exec: fd %d, on shared memory: %d", fd, ts_accel(fd));
	ts_recv_stream(fd, shim_seed(41), EXEC_BEFORE, EXEC_TOTAL - EXEC_BEFORE, ts_ms(5000));
	ts_send_stream(fd, shim_seed(42), 0, EXEC_BACK, ts_ms(5000));
	ASSERT_SYS(close(fd));
	return 0;
}

/* By execve, or by execveat (a glibc 2.34 function of its own). */
static void exec_self_program(int fd, void *arg)
{
	char n[16];
	const char *self = ts_self();

	ts_make_accelerated_follow(fd);
	ts_recv_stream(fd, shim_seed(41), 0, EXEC_BEFORE, ts_ms(3000));
	snprintf(n, sizeof(n), "%d", fd);
	char *argv[] = { (char *)self, (char *)"exec-helper", n, NULL };
	if (arg)
		execveat(AT_FDCWD, self, argv, environ, 0);
	else
		execve(self, argv, environ);
	TEST_FAIL_MSG("exec(%s): %s", self, strerror(errno));
}

static void exec_moved(int at)
{
	struct shim_peer p;

	ts_peer_start(&p, exec_self_program, at ? &p : NULL);
	ts_make_accelerated_lead(p.fd);
	ts_send_stream(p.fd, shim_seed(41), 0, EXEC_TOTAL, ts_ms(5000));
	ts_recv_stream(p.fd, shim_seed(42), 0, EXEC_BACK, ts_ms(5000));
	ts_expect_eof(p.fd, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

static void case_exec(void)
{
	exec_moved(0);
}

static void case_execveat(void)
{
	exec_moved(1);
}

/* Exec a program without the shim, the socket as its stdin and stdout. */
struct plain_exec {
	const char *path;
	const char *argv[6];
};

static void plain_exec_program(int fd, void *arg)
{
	const struct plain_exec *e = arg;

	ts_make_accelerated_follow(fd);
	ASSERT_SYS(dup2(fd, 0));
	ASSERT_SYS(dup2(fd, 1));
	ASSERT_SYS(close(fd));
	execve(e->path, (char **)e->argv, env_without_preload());
	_exit(127);
}

static void run_plain_exec(const struct plain_exec *e, uint64_t n)
{
	struct shim_peer p;

	test_log("exec %s without the shim, %ju bytes through it", e->path, (uintmax_t)n);
	ts_peer_start(&p, plain_exec_program, (void *)e);
	ts_make_accelerated_lead(p.fd);
	ts_echo_check(p.fd, shim_seed(43), n, ts_ms(5000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

static void case_exec_plain(void)
{
	struct plain_exec cat = { find_prog("/bin/cat", "/usr/bin/cat"), { "cat", NULL } };
	struct plain_exec env = { find_prog("/usr/bin/env", "/bin/env"),
				  { "env", "-u", "LD_PRELOAD", cat.path, NULL } };

	run_plain_exec(&cat, MIB);
	run_plain_exec(&env, 300 * KIB);
}

/* --- stdio ----------------------------------------------------------------- */

static void case_stdio_exec(void)
{
	struct plain_exec sh = { find_prog("/bin/sh", "/usr/bin/sh"),
				 { "sh", "-c", "read line; echo \"got $line\"", NULL } };
	struct plain_exec head = { find_prog("/usr/bin/head", "/bin/head"),
				   { "head", "-c", "300000", NULL } };
	struct shim_peer p;
	const char *hello = "hello over shared memory\n", *want = "got hello over shared memory\n";
	char got[64];

	test_log("sh -c 'read line; echo \"got $line\"' on the socket");
	ts_peer_start(&p, plain_exec_program, &sh);
	ts_make_accelerated_lead(p.fd);
	ts_write_all(p.fd, hello, strlen(hello), ts_ms(2000));
	ts_read_exact(p.fd, got, strlen(want), ts_ms(3000));
	ASSERT_MEM_EQ(got, want, strlen(want));
	ts_expect_eof(p.fd, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));

	test_log("head -c 300000 on the socket");
	run_plain_exec(&head, 300000);
}

#define LINES 200

static void line_of(int i, char *buf, size_t len)
{
	/* Some long lines, to cross stdio's buffer. */
	int pad = i % 50 == 49 ? 6000 : i % 37;

	snprintf(buf, len, "line %d %.*s\n", i, pad,
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	if (pad > 100) { /* a long line: fill it */
		size_t n = strlen(buf) - 1;
		while (n < (size_t)pad + 8 && n + 2 < len)
			buf[n++] = 'y';
		buf[n++] = '\n';
		buf[n] = '\0';
	}
}

static void stdio_program(int fd, void *arg)
{
	char line[8192];

	(void)arg;
	ts_make_accelerated_follow(fd);
	int rfd = dup(fd);
	ASSERT_SYS(rfd);
	FILE *in = fdopen(rfd, "r"), *out = fdopen(fd, "w");
	ASSERT_NOT_NULL(in);
	ASSERT_NOT_NULL(out);
	while (fgets(line, sizeof(line), in)) {
		ASSERT_GT(fprintf(out, "got %s", line), 0);
		ASSERT_EQ(fflush(out), 0);
	}
	ASSERT(!ferror(in));
	ASSERT_EQ(fclose(in), 0);
	ASSERT_EQ(fclose(out), 0);
}

static void case_stdio_fgets(void)
{
	struct shim_peer p;
	char line[8192], want[8200], got[8200];

	ts_peer_start(&p, stdio_program, NULL);
	ts_make_accelerated_lead(p.fd);
	for (int i = 0; i < LINES; i++) {
		line_of(i, line, sizeof(line));
		snprintf(want, sizeof(want), "got %s", line);
		ts_write_all(p.fd, line, strlen(line), ts_ms(2000));
		ts_read_exact(p.fd, got, strlen(want), ts_ms(3000));
		ASSERT_MSG(!memcmp(got, want, strlen(want)), "line %d came back as \"%.40s\"", i,
			   got);
	}
	ASSERT_SYS(shutdown(p.fd, SHUT_WR));
	ts_expect_eof(p.fd, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

/* inetd's way to stdin: close(0), then dup() takes the lowest number.  The
 * bytes already waiting (in the ring once moved) must reach stdio's
 * reads, which go past every wrapper. */
static void stdin_dup_program(int fd, void *arg)
{
	char line[256];

	(void)arg;
	ts_make_accelerated_follow(fd);
	/* the lead's first line waits for us before we look */
	test_sleep_ms(100);
	ASSERT_SYS(close(0));
	ASSERT_EQ(dup(fd), 0);
	ASSERT_SYS(close(fd));
	for (int i = 0; i < 2; i++) {
		ASSERT_NOT_NULL(fgets(line, sizeof(line), stdin));
		ts_write_all(0, line, strlen(line), ts_ms(2000));
	}
}

static void case_stdin_by_dup(void)
{
	struct shim_peer p;
	const char *l1 = "first line, sent before the dup\n", *l2 = "second line\n";
	char got[128];

	ts_peer_start(&p, stdin_dup_program, NULL);
	ts_make_accelerated_lead(p.fd);
	ts_write_all(p.fd, l1, strlen(l1), ts_ms(2000));
	ts_read_exact(p.fd, got, strlen(l1), ts_ms(3000));
	ASSERT_MEM_EQ(got, l1, strlen(l1));
	ts_write_all(p.fd, l2, strlen(l2), ts_ms(2000));
	ts_read_exact(p.fd, got, strlen(l2), ts_ms(3000));
	ASSERT_MEM_EQ(got, l2, strlen(l2));
	ts_expect_eof(p.fd, ts_ms(3000));
	ASSERT_SYS(close(p.fd));
	ts_peer_wait(&p, ts_ms(5000));
}

/* --- The log and a socket on stderr --------------------------------------------- */

int shunt__log_setup(const char *level, const char *file);

/* An inetd service's stderr is its connection: with SHUNT_LOG set and no
 * log file, a line there would be bytes in the program's stream. */
static void case_log_not_into_socket(void)
{
	int sv[2], a, b, saved = dup(2);
	char buf[256];

	ASSERT_SYS(saved);
	ASSERT_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_SYS(dup2(sv[0], 2));
	ASSERT_EQ(shunt__log_setup("info", NULL), 0);
	ts_pair(&a, &b); /* closed at once: "stays on TCP: short" at level info */
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	shunt__log_setup("none", NULL);
	ASSERT_SYS(dup2(saved, 2));
	ASSERT_SYS(close(saved));
	ssize_t n = recv(sv[1], buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n > 0)
		buf[n] = 0;
	ASSERT_MSG(n < 0 && errno == EAGAIN, "the stream on stderr got %zd bytes: %s", n,
		   n > 0 ? buf : "");
	ASSERT_SYS(close(sv[0]));
	ASSERT_SYS(close(sv[1]));
}

/*
 * A byte written behind the library's back after the move (a raw
 * syscall(), or a copy of the socket taken by pidfd_getfd(), which no
 * wrapper sees): the reader's connection is reset, and the kernel's with
 * it, so that the writer, whose own stream looks intact, does not wait
 * for an answer for good (a helper's pidfd_getfd() child hung in recv:
 * the kernel's connection stayed established, 100 bytes unread).  Two
 * bytes that differ: one may be the connection's doorbell byte (random,
 * so a lone "x" was one in CI's run 1 of 255 times, and read as a ring).
 */
static void case_raw_write_resets(void)
{
	int a, b;
	char c;

	if (ts_disabled())
		test_skip("a write behind the library's back means nothing on TCP");
	ts_moved_pair(&a, &b);
	ASSERT_EQ(syscall(SYS_sendto, a, "xy", 2, MSG_NOSIGNAL, NULL, 0), 2);
	errno = 0;
	ASSERT_EQ(ts_read_wait(b, &c, 1, ts_ms(2000)), -1);
	ASSERT_MSG(errno == ECONNRESET, "the reader got %s", strerror(errno));
	long n, bells = 0;
	while ((n = syscall(SYS_recvfrom, a, &c, 1, MSG_DONTWAIT, NULL, NULL)) == 1)
		bells++; /* b's doorbells come before the reset */
	ASSERT_MSG(n < 0 && errno == ECONNRESET,
		   "the raw writer's own read after %ld bytes: %ld (%s), where a reset was due",
		   bells, n, n < 0 ? strerror(errno) : "end of stream");
	ASSERT_MSG(bells < 64, "%ld bytes on the stream", bells);
	close(a);
	close(b);
}

/*
 * glibc's public second names for calls the library wraps (__read,
 * __write, __poll, __fcntl, __dup2, __close ...), called on a moved
 * connection: the same as the first names.  Unseen, __read took the
 * peer's doorbell byte for data or slept, __poll timed out, __write
 * reset the peer, __fcntl's O_NONBLOCK left a recv blocking and __dup2
 * left the table naming the socket at a pipe's number (a helper's
 * reproducers, 12-07).  The fortified opens (__open_2 ...) are seen too:
 * an fd number they give again is forgotten as open()'s is.
 */
extern ssize_t __read(int, void *, size_t);
extern ssize_t __write(int, const void *, size_t);
extern ssize_t __send(int, const void *, size_t, int);
extern int __poll(struct pollfd *, nfds_t, int);
extern int __fcntl(int, int, ...);
extern int __dup2(int, int);
extern int __close(int);
extern int __open_2(const char *, int);

static void case_glibc_second_names(void)
{
	int a, b, p[2];
	char buf[64], path[PATH_MAX];

	ts_moved_pair(&a, &b);
	ASSERT_EQ(__write(a, "first", 5), 5);
	ASSERT_EQ(__send(a, "second", 6, 0), 6);
	struct pollfd pf = { b, POLLIN, 0 };
	ASSERT_EQ(__poll(&pf, 1, ts_ms(2000)), 1);
	ASSERT_EQ(pf.revents & POLLIN, POLLIN);
	ts_read_exact(b, buf, 11, ts_ms(2000));
	ASSERT_MEM_EQ(buf, "firstsecond", 11);
	ASSERT_EQ(__write(a, "third", 5), 5);
	ts_wait_arrived(b, 5, ts_ms(2000));
	ASSERT_EQ(__read(b, buf, sizeof(buf)), 5);
	ASSERT_MEM_EQ(buf, "third", 5);
	ASSERT_SYS(__fcntl(b, F_SETFL, __fcntl(b, F_GETFL) | O_NONBLOCK));
	errno = 0;
	ASSERT_EQ(recv(b, buf, sizeof(buf), 0), -1);
	ASSERT_MSG(errno == EAGAIN, "recv after __fcntl(O_NONBLOCK): %s", strerror(errno));
	ts_expect_accel(b, "after the second names");
	/* The socket kept at another number; a pipe's end put at its own. */
	int keep = dup(b);
	ASSERT_SYS(keep);
	ASSERT_SYS(pipe(p));
	ASSERT_SYS(__dup2(p[0], b));
	ASSERT_EQ(write(p[1], "PIPEDATA", 8), 8);
	ASSERT_EQ(read(b, buf, sizeof(buf)), 8);
	ASSERT_MEM_EQ(buf, "PIPEDATA", 8);
	ASSERT_EQ(__write(a, "fourth", 6), 6);
	ts_read_exact(keep, buf, 6, ts_ms(2000));
	ASSERT_MEM_EQ(buf, "fourth", 6);
	/* A file opened by the fortified open at a number we tracked. */
	ASSERT_SYS(__close(b));
	ASSERT_SYS(__close(keep));
	ASSERT_SYS(__close(p[0]));
	ASSERT_SYS(__close(p[1]));
	tmp_path(path, sizeof(path), "second_names");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ASSERT_SYS(fd);
	ASSERT_SYS(close(fd));
	int flags = O_RDWR; /* not a constant to the compiler: as fortify's caller */
	__asm__ volatile("" : "+r"(flags));
	fd = __open_2(path, flags);
	ASSERT_SYS(fd);
	ASSERT_EQ(write(fd, "FILE", 4), 4);
	ASSERT_SYS(close(fd));
	ts_expect_eof(a, ts_ms(3000));
	ASSERT_SYS(__close(a));
	unlink(path);
}

/*
 * pidfd_getfd() of one of our own moved sockets, through a pidfd of our
 * own process (by syscall() and by glibc's function): the copy is a dup,
 * and reads and writes through it carry the stream.  Unseen, its reads
 * took the raw stream (a helper's case: ECONNRESET, then SIGPIPE).
 */
static void case_pidfd_getfd_self(void)
{
	int a, b, pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	uint64_t seed = shim_seed(381);

	if (pidfd < 0 && (errno == ENOSYS || errno == EPERM))
		test_skip("no pidfd_open here: %s", strerror(errno));
	ASSERT_SYS(pidfd);
	ts_moved_pair(&a, &b);
	int c1 = (int)syscall(SYS_pidfd_getfd, pidfd, a, 0);
	ASSERT_SYS(c1);
	int c2 = pidfd_getfd(pidfd, a, 0);
	ASSERT_SYS(c2);
	uint64_t off = 0;
	for (int i = 0; i < 6; i++) {
		int via = i % 3 == 0 ? a : i % 3 == 1 ? c1 : c2;
		ts_send_stream(b, seed, off, 4096, ts_ms(2000));
		ts_recv_stream(via, seed, off, 4096, ts_ms(2000));
		ts_send_stream(via, seed, off, 4096, ts_ms(2000));
		ts_recv_stream(b, seed, off, 4096, ts_ms(2000));
		off += 4096;
	}
	ts_expect_accel(b, "the peer of a socket copied by pidfd_getfd");
	ASSERT_SYS(close(c1));
	ASSERT_SYS(close(c2));
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
	ASSERT_SYS(close(pidfd));
}

/* --- Out of fds ------------------------------------------------------------
 * A connection left idle in the middle of its meeting (it made its 16 data
 * calls, then waits) holds the meeting's sockets until its next call.
 * Under a tight RLIMIT_NOFILE, where the top of the range is full and
 * they stay low, the program's own open() found EMFILE that many fds
 * early (a helper's client under ulimit -n 64: 21 connections, not 59).
 * Now a call that finds no fd free calls the meetings off and tries
 * again: the program gets every fd TCP leaves it, but the arena's. */
#define EMFILE_LIMIT 96
#define EMFILE_PAIRS 8

static int fds_below(int limit)
{
	int n = 0;

	for (int fd = 0; fd < limit; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

static int open_until_emfile(int *fds, int max)
{
	int n = 0;

	while (n < max) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ASSERT_MSG(errno == EMFILE, "open: %s", test_errname(errno));
			break;
		}
		fds[n++] = fd;
	}
	return n;
}

static void idle_meeting_pair(int *c, int *s)
{
	char b = 'x';

	ts_pair(c, s);
	for (int i = 0; i < 8; i++) { /* 16 data calls each end: the meeting starts */
		ASSERT_CMP(write(*c, &b, 1), ==, 1);
		ASSERT_CMP(read(*s, &b, 1), ==, 1);
		ASSERT_CMP(write(*s, &b, 1), ==, 1);
		ASSERT_CMP(read(*c, &b, 1), ==, 1);
	}
}

extern int shunt__own_list(int *out, int max) __attribute__((weak));

/* The fds the library keeps for the process's life (the arena's parked
 * socket; a VM region's file when one is configured): its meetings'
 * sockets are not among them. */
static int own_fds(void)
{
	int fds[64];

	return shunt__own_list ? shunt__own_list(fds, 64) : 0;
}

static void case_emfile_meetings(void)
{
	struct rlimit rl = { EMFILE_LIMIT, EMFILE_LIMIT };
	int c[EMFILE_PAIRS], s[EMFILE_PAIRS], got[EMFILE_LIMIT];

	ASSERT_SYS(setrlimit(RLIMIT_NOFILE, &rl));
	int base = fds_below(EMFILE_LIMIT);
	for (int i = 0; i < EMFILE_PAIRS; i++)
		idle_meeting_pair(&c[i], &s[i]);
	int n = open_until_emfile(got, EMFILE_LIMIT);
	/* TCP leaves limit - base - 2 * pairs; the library's own fds take
	 * theirs. */
	int tcp = EMFILE_LIMIT - base - 2 * EMFILE_PAIRS, own = own_fds();
	test_log("%d fds opened before EMFILE (TCP: %d; the library's own: %d)", n, tcp, own);
	ASSERT_CMP(n, >=, tcp - own);
	for (int i = 0; i < n; i++)
		ASSERT_SYS(close(got[i]));
	/* The connections work on, and move once their calls come again. */
	for (int i = 0; i < EMFILE_PAIRS; i++) {
		ts_make_accelerated(c[i], s[i]);
		ASSERT_SYS(close(c[i]));
		ASSERT_SYS(close(s[i]));
	}
}

/* --- Out of mappings ---------------------------------------------------------
 * Each moved connection maps its segment in three pieces, and a process
 * has vm.max_map_count mappings in all: past it the program's own mmap()
 * failed with ENOMEM where over TCP it works.  The limit is lowered to
 * twice what this process maps now and MAPS_ROOM (a sanitizer's runtime
 * maps much, and more as the program maps): moving MAPS_PAIRS pairs (two
 * segments each here, six mappings) would take all that is left; the
 * library stops at half the limit, and the program still maps MAPS_OWN
 * pages of its own.  Root only: the limit is the whole system's, and goes
 * back. */
#define MAPS_ROOM 400
#define MAPS_PAIRS 200
#define MAPS_OWN 64
#define MAP_COUNT "/proc/sys/vm/max_map_count"

static long maps_now(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	ASSERT(f != NULL);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static int map_count_set(long v)
{
	FILE *f = fopen(MAP_COUNT, "w");

	if (!f)
		return -1;
	int rc = fprintf(f, "%ld\n", v) < 0;
	return fclose(f) || rc ? -1 : 0;
}

static void pair_check(int c, int s)
{
	char out[64], in[64];

	memset(out, 'q', sizeof(out));
	ts_write_all(c, out, sizeof(out), ts_ms(2000));
	ts_read_exact(s, in, sizeof(in), ts_ms(2000));
	ASSERT(memcmp(in, out, sizeof(in)) == 0);
}

static void try_move(int c, int s)
{
	char b = 'x';

	for (int i = 0; i < 40 && !(ts_accel(c) && ts_accel(s)); i++) {
		ASSERT_CMP(write(c, &b, 1), ==, 1);
		ASSERT_CMP(read(s, &b, 1), ==, 1);
		ASSERT_CMP(write(s, &b, 1), ==, 1);
		ASSERT_CMP(read(c, &b, 1), ==, 1);
	}
}

/* Separate mappings of our own (alternate protections: no two merge). */
static int own_maps(void **p)
{
	int n = 0;

	for (; n < MAPS_OWN; n++) {
		int prot = n & 1 ? PROT_READ : PROT_READ | PROT_WRITE;
		p[n] = mmap(NULL, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p[n] == MAP_FAILED)
			break;
	}
	return n;
}

static long g_map_count_was;

static void map_count_restore(void)
{
	if (g_map_count_was > 0)
		map_count_set(g_map_count_was);
}

/* crowd: mappings the program makes first, then the limit leaves it only
 * MAPS_ROOM more (else twice its mappings and MAPS_ROOM): with segments
 * allowed half the limit, a program that used most of it itself had its
 * own mmap() fail (a helper's attack). */
static void map_count_run(int crowd)
{
	FILE *f = fopen(MAP_COUNT, "r");
	long was = 0;
	int c[MAPS_PAIRS], s[MAPS_PAIRS], moved = 0;
	void *p[MAPS_OWN], **q = calloc((size_t)crowd + 1, sizeof(*q));

	ASSERT(q);
	if (!f || fscanf(f, "%ld", &was) != 1 || geteuid() != 0)
		test_skip("needs root and %s", MAP_COUNT);
	fclose(f);
	g_map_count_was = was;
	atexit(map_count_restore); /* a failed check exits */
	for (int i = 0; i < crowd; i++) {
		q[i] = mmap(NULL, 4096, i & 1 ? PROT_READ : PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT(q[i] != MAP_FAILED);
	}
	long now = maps_now();
	ASSERT_SYS(map_count_set(crowd ? now + MAPS_ROOM : 2 * (now + MAPS_ROOM)));
	usleep(1100 * 1000); /* the library counts the mappings once a second */
	for (int i = 0; i < MAPS_PAIRS; i++) {
		ts_pair(&c[i], &s[i]);
		try_move(c[i], s[i]);
		moved += ts_accel(c[i]) && ts_accel(s[i]);
	}
	int own = own_maps(p);
	ASSERT_SYS(map_count_set(was));
	test_log("%d of %d pairs moved; %d of %d mappings of our own", moved, MAPS_PAIRS, own,
		 MAPS_OWN);
	ASSERT_CMP(own, ==, MAPS_OWN);
	ASSERT(ts_disabled() || moved > 0);
	for (int i = 0; i < own; i++)
		ASSERT_SYS(munmap(p[i], 4096));
	for (int i = 0; i < MAPS_PAIRS; i++) { /* moved or not, they work */
		pair_check(c[i], s[i]);
		ASSERT_SYS(close(c[i]));
		ASSERT_SYS(close(s[i]));
	}
	for (int i = 0; i < crowd; i++)
		ASSERT_SYS(munmap(q[i], 4096));
	free(q);
}

static void case_map_count(void)
{
	map_count_run(0);
}

static void case_map_count_crowded(void)
{
	map_count_run(3000);
}

static const struct shim_case g_cases[] = {
	{ "closefrom", case_closefrom },
	{ "raw_write_resets", case_raw_write_resets },
	{ "glibc_second_names", case_glibc_second_names },
	{ "pidfd_getfd_self", case_pidfd_getfd_self },
	{ "fclose", case_fclose },
	{ "freopen", case_freopen },
	{ "fdopen_before_connect", case_fdopen_before_connect },
	{ "unshare_files", case_unshare_files },
	{ "close_range_unshare", case_close_range_unshare },
	{ "close_all", case_close_all },
	{ "close_all_range", case_close_all_range },
	{ "vfork", case_vfork },
	{ "dup_before_connect", case_dup_before_connect },
	{ "fork_share_write", case_fork_share_write },
	{ "fork_share_read", case_fork_share_read },
	{ "scm_rights", case_scm_rights },
	{ "scm_rights_keep", case_scm_rights_keep },
	{ "scm_rights_epoll", case_scm_rights_epoll },
	{ "scm_rights_poll", case_scm_rights_poll },
	{ "scm_rights_unread", case_scm_rights_unread },
	{ "scm_rights_unread_armed", case_scm_rights_unread_armed },
	{ "scm_rights_unread_rung", case_scm_rights_unread_rung },
	{ "scm_rights_past_back", case_scm_rights_past_back },
	{ "scm_rights_past_back_full", case_scm_rights_past_back_full },
	{ "scm_rights_stayer_sends", case_scm_rights_stayer_sends },
	{ "fork_kick_own", case_fork_kick_own },
	{ "fork_exit_slots", case_fork_exit_slots },
	{ "exec", case_exec },
	{ "execveat", case_execveat },
	{ "exec_plain", case_exec_plain },
	{ "stdio_exec", case_stdio_exec },
	{ "stdio_fgets", case_stdio_fgets },
	{ "stdin_by_dup", case_stdin_by_dup },
	{ "scm_to_self", case_scm_to_self },
	{ "vfork_dup2_stdout", case_vfork_dup2_stdout },
	{ "vfork_exec_writes", case_vfork_exec_writes },
	{ "log_not_into_socket", case_log_not_into_socket },
	{ "emfile_meetings", case_emfile_meetings },
	{ "map_count", case_map_count },
	{ "map_count_crowded", case_map_count_crowded },
};

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "exec-helper"))
		return exec_helper_main(argc, argv);
	return ts_main("t_shim_fds", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
}
