/*
 * log.c - opt-in diagnostics.  The library runs inside other programs, so it
 * prints nothing unless SHUNT_LOG asks, and never on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "sys.h"

int shunt__log_level = SHUNT_LOG_NONE;
static int log_silenced; /* SHUNT_LOG=none was asked for explicitly */
static int log_fd = STDERR_FILENO;

static int parse_level(const char *s)
{
	static const char *const names[] = { "none", "error", "warn", "info", "debug" };

	for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0')
		return s[0] - '0';
	return -1;
}

void shunt__log_close(void)
{
	if (log_fd <= 2)
		return;
	int fd = log_fd;
	/* Unregistered before the close: the number is the program's again. */
	shunt__own_del(&log_fd);
	log_fd = STDERR_FILENO;
	sys_close(fd);
}

/*
 * The log goes to a file, or to a device, FIFO or socket (a terminal;
 * /dev/stderr as a pipe), never where another user's symlink says:
 * SHUNT_LOG_FILE may name a place such as /tmp, where such a symlink made
 * our lines go into a file of ours it named, and a FIFO held every program
 * in our constructor (a helper's attacks).  A symlink is followed only if
 * we or root made it; the open does not wait for a FIFO's reader (ENXIO),
 * and the fd stays non-blocking (see log_line).
 */
static int log_path_ours(const char *file, int *flags)
{
	struct stat st;

	if (sys_fstatat(AT_FDCWD, file, &st, AT_SYMLINK_NOFOLLOW) < 0)
		*flags |= O_NOFOLLOW; /* none yet: nobody's link may appear */
	else if (!S_ISLNK(st.st_mode))
		*flags |= O_NOFOLLOW;
	else if (st.st_uid != geteuid() && st.st_uid != 0)
		return -EPERM;
	return 0;
}

/*
 * Was the file planted by another user where anyone may make files (a
 * world-writable directory such as /tmp, whose owner it is not)?  Their
 * FIFO at a /tmp path, held open and full, hung a root program's data
 * calls in our write, and their file there collected root's lines for
 * them to read (a helper's attacks).  A file another user made for us in a
 * directory that is not open to all (a test's log that a server of
 * another user writes too) is taken, as the kernel's protected_regular
 * and protected_fifos draw the line.
 */
static int planted(const char *file, const struct stat *st)
{
	char dir[PATH_MAX] = ".";
	struct stat d;
	const char *slash = strrchr(file, '/');
	size_t n = slash ? (size_t)(slash - file) : 0;

	if (st->st_uid == geteuid() || st->st_uid == 0)
		return 0;
	if (n >= sizeof(dir))
		return 1;
	if (slash) { /* "/x": the root; "a/b/x": "a/b" */
		memcpy(dir, n ? file : "/", n ? n : 1);
		dir[n ? n : 1] = '\0';
	}
	if (sys_fstatat(AT_FDCWD, dir, &d, 0) < 0)
		return 1;
	return (d.st_mode & S_IWOTH) && d.st_uid != st->st_uid;
}

/* Devices (/dev/null, a terminal) and sockets are taken as they are: their
 * owner is whoever logged in, not who named them. */
static int log_file_kind(int fd, const char *file)
{
	struct stat st;

	if (sys_fstat(fd, &st) < 0)
		return -EBADF;
	if (S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode))
		return 0;
	if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
		return -EINVAL;
	return planted(file, &st) ? -EPERM : 0;
}

static int open_log_file(const char *file)
{
	int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
	int rc = log_path_ours(file, &flags);
	int fd = rc < 0 ? rc : sys_openat(AT_FDCWD, file, flags, 0600);

	if (fd < 0)
		return fd;
	rc = log_file_kind(fd, file);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	shunt__log_close(); /* a file named before: replaced, not leaked */
	/* Out of the program's way: a program that dup2()s onto a low fd (bash's
	 * `exec 3<>`) would otherwise send our lines down its own socket. */
	log_fd = shunt__hide_fd(fd);
	shunt__own_add(&log_fd);
	return 0;
}

void shunt__log_hide(void)
{
	if (log_fd <= 2)
		return;
	shunt__own_del(&log_fd);
	log_fd = shunt__hide_fd(log_fd);
	shunt__own_add(&log_fd);
}

/* Runs before main() so the level is known before any other call. */
__attribute__((constructor)) static void log_init(void)
{
	const char *lvl = secure_getenv("SHUNT_LOG");
	const char *file = secure_getenv("SHUNT_LOG_FILE");

	if (!lvl || !*lvl)
		return;
	int l = parse_level(lvl);
	log_silenced = l == SHUNT_LOG_NONE;
	if (l < 0) {
		/* Asked for logs but misspelt the level: say so once. */
		shunt__complain("SHUNT_LOG=%s is not one of none, error, warn, info, "
				"debug; using warn", lvl);
		l = SHUNT_LOG_WARN;
	}
	int rc = file && *file ? open_log_file(file) : 0;
	if (rc < 0)
		shunt__complain("cannot open SHUNT_LOG_FILE %s: %s", file, strerror(-rc));
	shunt__log_level = l;
}

/* The environment, read above, wins over the config file. */
int shunt__log_setup(const char *level, const char *file)
{
	const char *env = secure_getenv("SHUNT_LOG");

	if (env && *env)
		return 0;
	int l = parse_level(level);
	if (l < 0)
		return -EINVAL;
	if (file && *file) {
		int rc = open_log_file(file);
		if (rc < 0)
			return rc;
	}
	log_silenced = l == SHUNT_LOG_NONE;
	shunt__log_level = l;
	return 0;
}

/* A write past the program's RLIMIT_FSIZE would kill it (SIGXFSZ): OpenSSH
 * sets it to 0 in its sandbox.  Such a line is dropped.  So is one for a
 * stderr that is a socket: an inetd service's stderr is its connection,
 * and a line there would be bytes in the program's stream. */
static int fits(int fd, size_t n)
{
	struct rlimit rl;
	struct stat st;

	if (sys_fstat(fd, &st) < 0 || S_ISSOCK(st.st_mode))
		return 0;
	if (sys_prlimit(0, RLIMIT_FSIZE, NULL, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 1;
	return !S_ISREG(st.st_mode) || (uint64_t)st.st_size + n <= rl.rlim_cur;
}

static void log_line(int level, const char *fmt, va_list ap)
{
	static const char *const tag[] = { "", "error", "warn", "info", "debug" };
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "shunt[%d] %s: ", (int)getpid(), tag[level]);

	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	/* A value from a user, a file or a peer stays on its line: a newline
	 * in it made a line of its own in a file someone else reads. */
	for (int i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	buf[n++] = '\n';
	/* One write per line keeps lines whole across threads and processes.
	 * A file we opened is non-blocking: a line that would wait for a full
	 * FIFO or pipe is dropped, as the program's call must not wait on its
	 * log (whoever holds the other end could hold it for ever). */
	if (fits(log_fd, (size_t)n))
		sys_write(log_fd, buf, (size_t)n);
}

void shunt__log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(level, fmt, ap);
	va_end(ap);
}

void shunt__complain(const char *fmt, ...)
{
	va_list ap;

	if (log_silenced)
		return;
	va_start(ap, fmt);
	log_line(SHUNT_LOG_ERROR, fmt, ap);
	va_end(ap);
}
