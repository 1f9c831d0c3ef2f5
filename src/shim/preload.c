/*
 * preload.c - the libc functions the shim takes over.
 *
 * Each wrapper is thin: an fd that is not upgraded goes straight to libc
 * (one table load), an upgraded one to io.c, wait.c or upgrade.c.  errno is
 * set only as the real call would set it, and left alone on success paths
 * that did extra work.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "internal.h"
#include "shim.h"

#define EXPORT __attribute__((visibility("default")))

/* glibc's fortified entry points, which its headers declare only under
 * _FORTIFY_SOURCE. */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
		       struct sockaddr *addr, socklen_t *alen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t,
		const sigset_t *mask, size_t fdslen);

static int enabled = 1;

int shim_enabled(void)
{
	return enabled;
}

/* Our fds go in the top quarter of the fd limit, out of the program's way
 * (fd.c); a program that opens that many fds still gets every number.  At
 * most 8192: the kernel sizes each process's fd table to its highest fd. */
#define FD_FLOOR_MAX 8192

static void set_fd_floor(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 64)
		return;
	rlim_t floor = rl.rlim_cur == RLIM_INFINITY ? FD_FLOOR_MAX : rl.rlim_cur - rl.rlim_cur / 4;
	shunt__fd_floor = (int)(floor < FD_FLOOR_MAX ? floor : FD_FLOOR_MAX);
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *off = getenv("SHUNT_DISABLE");

	shim_real_init();
	set_fd_floor();
	shunt__log_hide(); /* whichever constructor ran first */
	pthread_atfork(shim_settle_all, shim_mark_shared, shim_forked_child);
	if ((off && *off && strcmp(off, "0")) || shunt__config()->bad_file)
		enabled = 0;
	shim_inherit(); /* even when off: an inherited fd only works through us */
}

/* The upgraded connection behind fd, with a reference, or NULL. */
static struct shim_sock *conn_of(int fd)
{
	struct shim_sock *s = shim_get(fd);

	if (s && s->kind != SHIM_CONN) {
		shim_put(s);
		return NULL;
	}
	return s;
}

int shunt__shim_is_accelerated(int fd)
{
	struct shim_sock *s = conn_of(fd);

	shim_put(s);
	return s != NULL;
}

/* Run expr (a negative-errno result) on the sock, then release it. */
#define ON_CONN(fd, s, plain, expr)            \
	do {                                   \
		struct shim_sock *s = conn_of(fd); \
		if (!s)                        \
			return plain;          \
		long rc_ = (long)(expr);       \
		shim_put(s);                   \
		return shim_err(rc_);          \
	} while (0)

/* --- Connections --------------------------------------------------------- */

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	return shim_connect(fd, addr, len);
}

EXPORT int listen(int fd, int backlog)
{
	int rc = REAL(listen)(fd, backlog);

	if (rc == 0) {
		int err = errno;
		shim_on_listen(fd);
		errno = err;
	}
	return rc;
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	struct shim_sock *l = shim_get(fd);
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	/* On a listener of ours the upgrade needs the peer's address: take it
	 * here, and give the program what the kernel would have. */
	int ours = l && l->kind == SHIM_LISTENER && (!addr || len);
	int rc = ours ? REAL(accept4)(fd, (struct sockaddr *)&peer, &plen, flags)
		      : REAL(accept4)(fd, addr, len, flags);
	int err = errno;

	if (rc >= 0) {
		if (ours && addr) {
			memcpy(addr, &peer, plen < *len ? plen : *len);
			*len = plen;
		}
		shim_forget(rc); /* a number we missed being closed (fclose, say) */
		if (ours)
			shim_on_accept(l, rc, flags, (struct sockaddr *)&peer);
	}
	shim_put(l);
	errno = err;
	return rc;
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return accept4(fd, addr, len, 0);
}

EXPORT int socket(int domain, int type, int proto)
{
	int rc = REAL(socket)(domain, type, proto);

	if (rc >= 0 && shim_has(rc))
		shim_forget(rc);
	return rc;
}

EXPORT int shutdown(int fd, int how)
{
	int rc = REAL(shutdown)(fd, how);

	if (rc == 0)
		ON_CONN(fd, s, 0, shim_shutdown(s, how));
	return rc;
}

EXPORT int setsockopt(int fd, int level, int opt, const void *val, socklen_t len)
{
	int rc = REAL(setsockopt)(fd, level, opt, val, len);

	if (rc == 0)
		ON_CONN(fd, s, 0, (shim_setsockopt(s, level, opt, val, len), 0));
	return rc;
}

/* --- fds ------------------------------------------------------------------- */

/* fd is about to be closed or replaced: drop what we know of it. */
static void fd_gone(int fd)
{
	if (shim_has(fd)) {
		log_debug("upgraded fd %d closed", fd);
		shim_wait_forget(fd);
		shim_forget(fd);
	} else {
		shim_wait_forget_set(fd);
	}
}

EXPORT int close(int fd)
{
	fd_gone(fd);
	return REAL(close)(fd);
}

EXPORT int dup(int fd)
{
	int rc = REAL(dup)(fd);

	if (rc >= 0)
		shim_dup(fd, rc);
	return rc;
}

static int dup_into(int oldfd, int newfd, int rc)
{
	if (rc >= 0 && oldfd != newfd) {
		fd_gone(newfd);
		shim_dup(oldfd, newfd);
	}
	return rc;
}

EXPORT int dup2(int oldfd, int newfd)
{
	return dup_into(oldfd, newfd, REAL(dup2)(oldfd, newfd));
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return dup_into(oldfd, newfd, REAL(dup3)(oldfd, newfd, flags));
}

static int do_fcntl(int fd, int cmd, void *arg)
{
	int rc = REAL(fcntl)(fd, cmd, arg);

	if (rc < 0)
		return rc;
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
		shim_dup(fd, rc);
	} else if (cmd == F_SETFL) {
		struct shim_sock *s = conn_of(fd);
		if (s)
			atomic_store(&s->nonblock, !!((long)arg & O_NONBLOCK));
		shim_put(s);
	}
	return rc;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;

	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;

	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;

	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (req == FIONREAD)
		ON_CONN(fd, s, REAL(ioctl)(fd, req, arg), shim_fionread(s, arg));
	int rc = REAL(ioctl)(fd, req, arg);
	if (rc == 0 && req == FIONBIO && arg) {
		struct shim_sock *s = conn_of(fd);
		if (s)
			atomic_store(&s->nonblock, *(int *)arg != 0);
		shim_put(s);
	}
	return rc;
}

/* A program that closes a range of fds (often before exec) closes ours. */
EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	static int (*real_close_range)(unsigned, unsigned, int);

	if (!real_close_range)
		*(void **)&real_close_range = dlsym(RTLD_NEXT, "close_range");
	if (!real_close_range)
		return shim_err(-ENOSYS);
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		for (unsigned fd = first; fd <= last && fd < (1u << 20); fd++)
			fd_gone((int)fd);
	return real_close_range(first, last, flags);
}

/* --- Data ------------------------------------------------------------------ */

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	/* read() of nothing returns 0 before the socket sees it; recv() waits. */
	ON_CONN(fd, s, REAL(read)(fd, buf, n), n ? shim_recv(s, fd, buf, n, 0) : 0);
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		abort(); /* what glibc's own check does */
	return read(fd, buf, n);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	ON_CONN(fd, s, REAL(write)(fd, buf, n), shim_send(s, buf, n, 0));
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	ON_CONN(fd, s, REAL(recvfrom)(fd, buf, n, flags, NULL, NULL),
		shim_recv(s, fd, buf, n, flags));
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	if (n > buflen)
		abort();
	return recv(fd, buf, n, flags);
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	ON_CONN(fd, s, REAL(sendto)(fd, buf, n, flags, NULL, 0), shim_send(s, buf, n, flags));
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
			socklen_t *alen)
{
	/* A connected TCP socket gives no source address. */
	ON_CONN(fd, s, REAL(recvfrom)(fd, buf, n, flags, addr, alen),
		(alen && addr ? (*alen = 0) : 0, shim_recv(s, fd, buf, n, flags)));
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
			      struct sockaddr *addr, socklen_t *alen)
{
	if (n > buflen)
		abort();
	return recvfrom(fd, buf, n, flags, addr, alen);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
		      const struct sockaddr *addr, socklen_t alen)
{
	ON_CONN(fd, s, REAL(sendto)(fd, buf, n, flags, addr, alen),
		shim_send(s, buf, n, flags));
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	ON_CONN(fd, s, REAL(readv)(fd, iov, n),
		n < 0 || n > IOV_MAX ? -EINVAL : shim_recvv(s, fd, iov, n, 0));
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	ON_CONN(fd, s, REAL(writev)(fd, iov, n),
		n < 0 || n > IOV_MAX ? -EINVAL : shim_sendv(s, iov, n, 0));
}

static ssize_t recvmsg_conn(struct shim_sock *s, int fd, struct msghdr *m, int flags)
{
	if (m->msg_iovlen > IOV_MAX)
		return -EMSGSIZE;
	m->msg_namelen = 0;
	m->msg_controllen = 0;
	m->msg_flags = 0;
	return shim_recvv(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	ON_CONN(fd, s, REAL(recvmsg)(fd, m, flags), recvmsg_conn(s, fd, m, flags));
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	ON_CONN(fd, s, REAL(sendmsg)(fd, m, flags),
		m->msg_iovlen > IOV_MAX ? -EMSGSIZE
					: shim_sendv(s, m->msg_iov, (int)m->msg_iovlen, flags));
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	ON_CONN(out, s, REAL(sendfile)(out, in, off, count), shim_sendfile(s, in, off, count));
}

EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t count)
{
	return sendfile(out, in, off, count);
}

/* --- Waiting ------------------------------------------------------------- */

static int any_upgraded(const struct pollfd *fds, nfds_t n)
{
	for (nfds_t i = 0; i < n; i++)
		if (shim_has(fds[i].fd))
			return 1;
	return 0;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (!any_upgraded(fds, n))
		return REAL(poll)(fds, n, timeout);
	struct timespec ts = { timeout / 1000, (timeout % 1000) * 1000000L };
	return shim_poll(fds, n, timeout < 0 ? NULL : &ts, NULL);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return poll(fds, n, timeout);
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t,
		 const sigset_t *mask)
{
	if (!any_upgraded(fds, n))
		return REAL(ppoll)(fds, n, t, mask);
	return shim_poll(fds, n, t, mask);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t,
		       const sigset_t *mask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, t, mask);
}

static int any_in_sets(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
		if (((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e))) &&
		    shim_has(fd))
			return 1;
	return 0;
}

EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	if (!any_in_sets(nfds, r, w, e))
		return REAL(select)(nfds, r, w, e, tv);
	struct timespec ts = tv ? (struct timespec){ tv->tv_sec, tv->tv_usec * 1000 }
				: (struct timespec){ 0, 0 };
	return shim_select(nfds, r, w, e, tv ? &ts : NULL, NULL);
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t,
		   const sigset_t *mask)
{
	if (!any_in_sets(nfds, r, w, e))
		return REAL(pselect)(nfds, r, w, e, t, mask);
	return shim_select(nfds, r, w, e, t, mask);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	return shim_epoll_ctl(epfd, op, fd, ev);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
	return shim_epoll_wait(epfd, ev, max, timeout, NULL);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout,
		       const sigset_t *mask)
{
	return shim_epoll_wait(epfd, ev, max, timeout, mask);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
			const struct timespec *t, const sigset_t *mask)
{
	static int (*real_pwait2)(int, struct epoll_event *, int, const struct timespec *,
				  const sigset_t *);

	if (shim_epoll_has(epfd)) {
		long ms = t ? t->tv_sec * 1000 + (t->tv_nsec + 999999) / 1000000 : -1;
		return shim_epoll_wait(epfd, ev, max, ms > INT32_MAX ? INT32_MAX : (int)ms, mask);
	}
	if (!real_pwait2)
		*(void **)&real_pwait2 = dlsym(RTLD_NEXT, "epoll_pwait2");
	return real_pwait2 ? real_pwait2(epfd, ev, max, t, mask) : shim_err(-ENOSYS);
}

/* --- exec ------------------------------------------------------------------ */

extern char **environ;

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	char **env = shim_exec_prepare(envp);
	int rc = REAL(execve)(path, argv, env);
	int err = errno;

	shim_exec_done(env, envp);
	errno = err;
	return rc;
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	char **env = shim_exec_prepare(envp);
	int rc = REAL(execvpe)(file, argv, env);
	int err = errno;

	shim_exec_done(env, envp);
	errno = err;
	return rc;
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	char **env = shim_exec_prepare(envp);
	int rc = REAL(fexecve)(fd, argv, env);
	int err = errno;

	shim_exec_done(env, envp);
	errno = err;
	return rc;
}

EXPORT int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

EXPORT int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

/* execl, execlp, execle: the list as a vector (freed if exec fails), and
 * for execle the environment that follows the list's NULL. */
static char **list_argv(const char *first, va_list *ap, char ***envp)
{
	va_list c;
	size_t n = 0;

	va_copy(c, *ap);
	if (first)
		for (n = 1; va_arg(c, char *); n++)
			;
	va_end(c);
	char **argv = malloc((n + 1) * sizeof(*argv));
	if (argv) {
		argv[0] = (char *)first;
		for (size_t i = 1; i < n; i++)
			argv[i] = va_arg(*ap, char *);
		argv[n] = NULL;
	} else {
		for (size_t i = 1; i < n; i++)
			(void)va_arg(*ap, char *);
	}
	if (envp) {
		if (first)
			(void)va_arg(*ap, char *); /* the list's NULL */
		*envp = va_arg(*ap, char **);
	}
	return argv;
}

enum { EXEC_PATH, EXEC_SEARCH };

static int exec_list(int how, const char *file, char **argv, char **envp)
{
	if (!argv)
		return shim_err(-ENOMEM);
	int rc = how == EXEC_SEARCH ? execvpe(file, argv, envp) : execve(file, argv, envp);
	int err = errno;

	free(argv);
	errno = err;
	return rc;
}

EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	char **argv = list_argv(arg, &ap, NULL);
	va_end(ap);
	return exec_list(EXEC_PATH, path, argv, environ);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	char **argv = list_argv(arg, &ap, NULL);
	va_end(ap);
	return exec_list(EXEC_SEARCH, file, argv, environ);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	char **envp = NULL;

	va_start(ap, arg);
	char **argv = list_argv(arg, &ap, &envp);
	va_end(ap);
	return exec_list(EXEC_PATH, path, argv, envp);
}
