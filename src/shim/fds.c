/*
 * fds.c - the fd rule: the library never acts on an fd it cannot show is
 * still its own, and the program never acts on one of the library's.
 *
 * Every way a program closes or replaces an fd comes through here, before
 * the kernel does it: close, dup2/dup3 onto it, close_range, closefrom,
 * fclose/fcloseall/freopen of a stream over it.  A tracked socket is then
 * forgotten while its number still names it, so that a last close can tell
 * the peer.  Calls that return a new fd (open, socket, accept, pipe, ...)
 * drop whatever the table still says of that number: it was closed where
 * we could not see (a raw system call), and must not be mistaken for the
 * socket.  The library's own fds (the family arena, the log file, epoll
 * kicks, lingering sockets: base/fd.c's registry) answer the program as if
 * they were not open (EBADF), and move out of the way of a dup2 onto their
 * number.  A vfork child shares its parent's memory: it
 * changes none of the tables, only its own fds (docs/design.md, "fds").
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

SHUNT_FORK_TEXT int shim_own_fd(int fd)
{
	return shunt__own_is(fd);
}

/*
 * Nothing of ours rides on fd: not tracked, its kind not noted, and not an
 * epoll set of ours.  Most fds a program opens and closes are files, and
 * these looks (a load each) spare them the vfork check's getpid().
 */
SHUNT_FORK_TEXT static int nothing_at(int fd)
{
	return !shim_has(fd) && shim_kind(fd) == FD_UNKNOWN && !shim_epoll_ours(fd);
}

void shim_fresh_fd(int fd)
{
	if (fd >= 0 && !nothing_at(fd) && !shim_in_vfork_child()) {
		if (shim_has(fd))
			shim_forget(fd, 0);
		shim_set_kind(fd, FD_UNKNOWN);
	}
}

/* fd is about to be closed or replaced by the program. */
SHUNT_FORK_TEXT static void going(int fd)
{
	shim_calls_reap(); /* a call jumped out of must not keep the socket */
	struct tsock *t = shim_get(fd);

	shim_epoll_forget(fd, t);
	if (t) {
		log_debug("tracked fd %d closed", fd);
		shim_forget(fd, 1);
		shim_put(t);
	} else {
		shim_set_kind(fd, FD_UNKNOWN);
	}
}

/* What a close of fd does before the kernel's: -EBADF for an fd of ours. */
SHUNT_FORK_TEXT int shim_close_begin(int fd)
{
	if (shim_own_fd(fd))
		return -EBADF;
	if (!atomic_load(&shim_hands_off) && (!nothing_at(fd) || shim_linger_due()) &&
	    !shim_in_vfork_child()) {
		going(fd);
		shim_linger_tick();
	}
	return 0;
}

SHUNT_FORK_TEXT int shim_close(int fd)
{
	int rc = shim_close_begin(fd);

	return rc < 0 ? (int)shim_err(rc) : REAL(close)(fd);
}

/* stdio may read or write stdin, stdout and stderr where we cannot see:
 * a moved connection put there goes back to TCP first.  A vfork child's
 * dup2 too, at once, while every fd of ours is open (a peer of ours
 * answers through them: t_shim_fds vfork_exec_writes), unless the peer
 * closed: that way back may have to reset, for a child that may only
 * _exit, or fail its exec (tests/diff_shim.c seed 325396016166023); its
 * exec, if it comes, takes every moved connection back (proc.c, leaving). */
static void to_stdio(int fd, int vfork_child)
{
	struct tsock *t = shim_get(fd);

	if (t && shim_moved(t) && !(vfork_child && shim_peer_closed(t)) && shim_demote(t, fd) < 0)
		log_warn("fd %d: a connection in shared memory became stdio and could not go "
			 "back to TCP: it was reset", fd);
	shim_put(t);
}

void shim_dup_landed(int oldfd, int newfd)
{
	/* close(0) and dup(), inetd's way (t_shim_fds stdin_by_dup) */
	if (newfd >= 0 && newfd <= 2 && oldfd != newfd)
		to_stdio(oldfd, 0);
	shim_dup(oldfd, newfd);
}

int shim_dup2(int oldfd, int newfd, int flags, int three)
{
	int child = shim_in_vfork_child();

	if (shim_own_fd(oldfd))
		return (int)shim_err(-EBADF);
	if (!child && oldfd != newfd && shim_own_fd(newfd)) {
		int rc = shunt__own_move(newfd);
		if (rc < 0)
			return (int)shim_err(rc);
	}
	if (!child && oldfd != newfd && sys_fcntl(oldfd, F_GETFD, 0) >= 0)
		going(newfd);
	/* Onto stdin, stdout or stderr. */
	if (newfd >= 0 && newfd <= 2 && oldfd != newfd)
		to_stdio(oldfd, child);
	int rc = three ? REAL(dup3)(oldfd, newfd, flags) : REAL(dup2)(oldfd, newfd);
	if (rc >= 0 && !child && oldfd != newfd)
		shim_dup(oldfd, newfd);
	return rc;
}

/* The program's range, without the library's fds in it: they split it
 * in pieces. */
static int close_pieces(unsigned first, unsigned last, int flags)
{
	int own[SHUNT_OWN_MAX];
	int n = shunt__own_list(own, SHUNT_OWN_MAX);
	unsigned lo = first;
	int rc = 0;

	for (int i = 0; i < n; i++) {
		if ((unsigned)own[i] < lo || (unsigned)own[i] > last)
			continue;
		if ((unsigned)own[i] > lo)
			rc |= REAL(close_range)(lo, (unsigned)own[i] - 1, flags);
		lo = (unsigned)own[i] + 1;
	}
	if (lo <= last)
		rc |= REAL(close_range)(lo, last, flags);
	return rc ? -1 : 0;
}

struct range {
	unsigned first, last;
};

static void in_range(int fd, struct tsock *t, void *arg)
{
	struct range *r = arg;

	(void)t;
	if ((unsigned)fd >= r->first && (unsigned)fd <= r->last)
		going(fd);
}

int shim_close_range(unsigned first, unsigned last, int flags)
{
	if (!REAL(close_range))
		return (int)shim_err(-ENOSYS);
	if (first > last)
		return (int)shim_err(-EINVAL);
	if (shim_in_vfork_child() || (flags & CLOSE_RANGE_CLOEXEC))
		return REAL(close_range)(first, last, flags);
	struct range r = { first, last };
	shim_each(in_range, &r);
	/* Epoll sets of ours in the range are forgotten one by one. */
	shim_epoll_forget_range(first, last);
	return close_pieces(first, last, flags);
}

void shim_closefrom(int first)
{
	int err = errno;

	if (first < 0)
		first = 0;
	/* A kernel without close_range: close what is open, one by one. */
	if (shim_close_range((unsigned)first, ~0u, 0) < 0) {
		for (int fd = first; fd < (1 << 20) && fd < sysconf(_SC_OPEN_MAX); fd++)
			if (!shim_own_fd(fd))
				shim_close(fd);
	}
	errno = err;
}

/* --- stdio ----------------------------------------------------------------- */

FILE *shim_fdopen(int fd, const char *mode)
{
	struct tsock *t = shim_get(fd);

	/* Before its connect() too: tracked now, the connection is marked
	 * for good.  Untracked, it moved after the connect and stdio's reads
	 * took the doorbells (a helper's client: fgets() read end of file
	 * after 17 lines, t_shim_fds fdopen_before_connect). */
	if (!t)
		t = shim_track_unconnected(fd);
	if (t) {
		/* stdio reads and writes with libc's internal calls, which no
		 * wrapper sees: this connection stays on TCP. */
		atomic_fetch_or(&t->slot->flags, TF_STDIO);
		if (shim_demote(t, fd) < 0)
			log_warn("fd %d: stdio over a connection already in shared memory: "
				 "its bytes cannot be carried", fd);
		shim_put(t);
	}
	return REAL(fdopen)(fd, mode);
}

int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap);

struct dprintf_to {
	struct tsock *t;
	int fd;
};

/* stdio's write, through our send: what it took (short: an error). */
static ssize_t dprintf_write(void *cookie, const char *buf, size_t n)
{
	struct dprintf_to *to = cookie;
	size_t done = 0;

	while (done < n) {
		ssize_t k = shim_send(to->t, to->fd, buf + done, n - done, 0);
		if (k <= 0)
			break;
		done += (size_t)k;
	}
	return (ssize_t)done;
}

/*
 * dprintf() on a tracked socket: libc's own writes its bytes with its
 * internal write, which no wrapper sees (after a move they went down the
 * stream behind the ring, and the peer lost them without a word: a
 * helper's client, five lines of six; t_shim_data dprintf_moved).  So the
 * same formatting runs into a stream of ours whose writes are our sends,
 * flushed at its close, as libc's dprintf flushes its own: the same bytes
 * (those before a format error too), each conversion made once (formatted
 * into a buffer first, a long output was formatted twice: a helper's
 * review, dprintf_as_libc).  chk: __vdprintf_chk's flag, or -1.
 */
int shim_vdprintf(struct tsock *t, int fd, int chk, const char *fmt, va_list ap)
{
	struct dprintf_to to = { t, fd };
	FILE *f = fopencookie(&to, "w", (cookie_io_functions_t){ .write = dprintf_write });

	if (!f)
		return -1;
	int n = chk < 0 ? vfprintf(f, fmt, ap) : __vfprintf_chk(f, chk, fmt, ap);
	int err = errno;
	if (REAL(fclose)(f) != 0 && n >= 0) {
		n = -1;
		err = errno;
	}
	errno = err;
	return n;
}

int shim_fclose(FILE *f)
{
	int fd = f ? fileno(f) : -1;

	if (fd >= 0 && shim_own_fd(fd))
		return REAL(fclose)(f);
	/* A file's stream (most are) costs no vfork check (PostgreSQL's
	 * backends fclose several per connection). */
	if (fd >= 0 && !nothing_at(fd) && !shim_in_vfork_child())
		going(fd);
	return REAL(fclose)(f);
}

static void stdio_fd(int fd, struct tsock *t, void *arg)
{
	(void)arg;
	if (atomic_load(&t->slot->flags) & TF_STDIO)
		going(fd);
}

int shim_fcloseall(void)
{
	/* Every stream goes: every socket stdio took goes with it (a socket
	 * that was fd 0, 1 or 2 too, which is what fcloseall closes). */
	if (!shim_in_vfork_child())
		shim_each(stdio_fd, NULL);
	return REAL(fcloseall)();
}

FILE *shim_freopen(const char *path, const char *mode, FILE *f)
{
	int fd = f ? fileno(f) : -1;

	if (fd >= 0 && !nothing_at(fd) && !shim_in_vfork_child() && !shim_own_fd(fd))
		going(fd);
	return REAL(freopen)(path, mode, f);
}
