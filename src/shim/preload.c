/*
 * preload.c - the libc functions the shim takes over.
 *
 * Each wrapper is thin: an fd that is not a tracked TCP socket goes
 * straight to libc (one table load), a tracked one to io.c, poll.c,
 * epoll.c or fds.c.  errno is set only as the real call would set it, and
 * left alone on paths that did extra work.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"

#define EXPORT __attribute__((visibility("default")))

/* glibc's fortified entry points, which its headers declare only under
 * _FORTIFY_SOURCE. */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
		       struct sockaddr *addr, socklen_t *alen);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dir, const char *path, int flags);
int __openat64_2(int dir, const char *path, int flags);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t,
		const sigset_t *mask, size_t fdslen);

static int enabled = 1;

int shim_enabled(void)
{
	return enabled;
}

/* Our fds go in the top quarter of the fd limit, out of the program's way
 * (fd.c); a program that opens that many fds still gets every number.  From
 * 512 at most (so, under the usual limit of 1024, in its top half): the
 * kernel sizes each process's fd table to a power of two above its highest
 * fd, and each fork makes and copies one (at 8192, a fork and _exit took
 * 25 us more: PostgreSQL forks per connection: 2000 forks, 12-07; from
 * 1024, a table of 2048, 16 KiB, still 10 us more than one of 1024,
 * bench/forkfaults.c with the fd limit at 20000 and at 1024, 12-07). */
#define FD_FLOOR_MAX 512

static void set_fd_floor(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 64)
		return;
	rlim_t floor = rl.rlim_cur == RLIM_INFINITY ? FD_FLOOR_MAX : rl.rlim_cur - rl.rlim_cur / 4;
	shunt__fd_floor = (int)(floor < FD_FLOOR_MAX ? floor : FD_FLOOR_MAX);
}

/* --- Sandboxes --------------------------------------------------------------
 * A process under a seccomp filter may be killed for a system call it did
 * not make itself (OpenSSH's pre-authentication child is).  So when the
 * program installs a filter that may kill, the library first takes its moved
 * connections back to TCP and gives up every meeting, while it still may,
 * then makes no system call of its own: every wrapper passes the
 * program's call through unchanged.  A process that starts under a filter
 * (a container's, which fails calls with an errno) cannot tell what the
 * filter does: it runs as usual (docs/design.md, Limits). */

/* What this process holds leaves shared memory; a connection that has not
 * moved may still move in the family once this process lets go of it (it
 * is a holder while it lives, which keeps the others from moving it). */
static void let_go(int fd, struct tsock *t, void *arg)
{
	(void)arg;
	if (atomic_load(&t->slot->state) == SLOT_MOVED)
		shim_demote(t, fd);
	else
		shim_move_call_off(t, fd);
}

/* A child in another pid namespace (proc.c): its parent let go already. */
void shim_estranged(void)
{
	enabled = 0;
	atomic_store(&shim_hands_off, 1);
}

static void hands_off(const char *why)
{
	if (atomic_load(&shim_hands_off))
		return;
	enabled = 0;
	shim_each_held(let_go, NULL);
	log_info("%s: the library makes no system call of its own from here on", why);
	atomic_store(&shim_hands_off, 1);
}

/* --- Credentials --------------------------------------------------------------
 * A process that changes its credentials without exec (a worker dropping
 * privileges) leaves its family (arena.c, "Leaving the family").  The
 * moved connections it shares with the family's other processes go back
 * to TCP first; its own stay moved. */
static void back_if_shared(int fd, struct tsock *t, void *arg)
{
	(void)arg;
	if (atomic_load(&t->slot->state) == SLOT_MOVED && shim_slot_shared(t->slot))
		shim_demote(t, fd);
}

/* After a call that may have changed our credentials; rc is its result.
 * A vfork child runs in its parent's memory and changes none of it. */
static void creds_changed(long rc)
{
	if (rc != 0 || atomic_load(&shim_hands_off) || shim_in_vfork_child() ||
	    shim_arena_creds_same())
		return;
	shim_each_held(back_if_shared, NULL);
	if (shim_arena_leave() == 0)
		return;
	hands_off("the credentials changed and the family's state could not be left behind");
	shim_arena_drop();
}

/* glibc's own, which change every thread's credentials, then our look. */
#define CREDS_CALL(name, ...)                      \
	do {                                       \
		int rc_ = REAL(name)(__VA_ARGS__); \
		creds_changed(rc_);                \
		return rc_;                        \
	} while (0)

EXPORT int setuid(uid_t u) { CREDS_CALL(setuid, u); }
EXPORT int setgid(gid_t g) { CREDS_CALL(setgid, g); }
EXPORT int seteuid(uid_t u) { CREDS_CALL(seteuid, u); }
EXPORT int setegid(gid_t g) { CREDS_CALL(setegid, g); }
EXPORT int setreuid(uid_t r, uid_t e) { CREDS_CALL(setreuid, r, e); }
EXPORT int setregid(gid_t r, gid_t e) { CREDS_CALL(setregid, r, e); }
EXPORT int setresuid(uid_t r, uid_t e, uid_t s) { CREDS_CALL(setresuid, r, e, s); }
EXPORT int setresgid(gid_t r, gid_t e, gid_t s) { CREDS_CALL(setresgid, r, e, s); }

static int creds_nr(long nr)
{
	return nr == SYS_setuid || nr == SYS_setgid || nr == SYS_setreuid || nr == SYS_setregid ||
	       nr == SYS_setresuid || nr == SYS_setresgid;
}

/* An io_uring is about to be made: its reads and writes will pass us by
 * (uring.c), so what moved goes back to TCP first, a meeting stops (let_go,
 * as for a sandbox), and nothing moves from now on. */
static void uring_made(void)
{
	if (shim_uring_made())
		return; /* nothing of ours moved since the first */
	shim_each_held(let_go, NULL);
	log_info("an io_uring: this process's connections stay on TCP from here on");
}

/* May the filter kill for a call it does not list?  Any return of it that
 * kills or traps, or returns a computed action, says yes; one that only
 * allows, fails calls with an errno, traces or logs lets us run (a call of
 * ours it refuses fails, and the connection stays on TCP). */
static int may_kill(const struct sock_fprog *prog)
{
	if (!prog || !prog->filter || prog->len == 0 || prog->len > BPF_MAXINSNS)
		return 1;
	for (unsigned i = 0; i < prog->len; i++) {
		const struct sock_filter *f = &prog->filter[i];
		if (BPF_CLASS(f->code) != BPF_RET)
			continue;
		if (BPF_RVAL(f->code) != BPF_K)
			return 1;
		uint32_t act = f->k & SECCOMP_RET_ACTION_FULL;
		if (act != SECCOMP_RET_ALLOW && act != SECCOMP_RET_ERRNO &&
		    act != SECCOMP_RET_TRACE && act != SECCOMP_RET_LOG)
			return 1;
	}
	return 0;
}

EXPORT int prctl(int option, ...)
{
	va_list ap;

	va_start(ap, option);
	unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
	unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
	va_end(ap);
	if (option == PR_SET_SECCOMP &&
	    (a2 == SECCOMP_MODE_STRICT || may_kill((const struct sock_fprog *)a3)))
		hands_off("a seccomp filter that may kill");
	return REAL(prctl)(option, a2, a3, a4, a5);
}

/* --- Forks by another name ----------------------------------------------------
 * A clone that copies the memory and the fd table is a fork, whatever
 * makes it: vsftpd calls syscall(__NR_clone, CLONE_NEWPID | ... | SIGCHLD,
 * NULL), and a child made so without our fork handlers was taken for a
 * vfork child for the rest of its life: it changed no table, and a socket
 * that took the number of a TCP socket it had closed was taken for it
 * (sendto lost its address, recvfrom never gave one).  So the handlers run
 * around it, as around fork().  With a stack of its own the child runs
 * where no wrapper returns (a raw call; clone() runs it through ours). */
static int forklike(unsigned long flags)
{
	return !(flags & (CLONE_VM | CLONE_FILES | CLONE_THREAD | CLONE_VFORK | CLONE_SETTLS));
}

/*
 * A clone whose child shares our fd table but not our memory: what it does
 * to the fds, its copy of the library sees and ours does not (its close of
 * a moved socket, an open that took the number: our write went to the
 * peer where the kernel writes to the file).  Neither can keep the other's
 * books, so both let go of shared memory before it exists.
 */
static void files_not_memory(unsigned long flags)
{
	if ((flags & CLONE_FILES) && !(flags & CLONE_VM) && !shim_in_vfork_child())
		hands_off("a clone that shares the fd table and not the memory");
}

/* A raw clone's or clone3's flags (*stack: whether it gives the child a
 * stack), or -1.  clone3's arguments are read as the kernel would: a bad
 * pointer is its EFAULT, not our crash. */
static long raw_clone_flags(long nr, const long a[6], int *stack)
{
	if (nr == SYS_clone) {
		*stack = a[1] != 0;
		return a[0];
	}
	uint64_t args[6]; /* flags, pidfd, child_tid, parent_tid, exit_signal, stack */
	struct iovec mine = { args, sizeof(args) }, theirs = { (void *)a[0], sizeof(args) };
	if (nr == SYS_clone3 && (size_t)a[1] >= sizeof(args) &&
	    REAL(syscall)(SYS_process_vm_readv, sys_getpid(), &mine, 1, &theirs, 1, 0) ==
		    (long)sizeof(args)) {
		*stack = args[5] != 0;
		return (long)args[0] < 0 ? -1 : (long)args[0];
	}
	return -1;
}

/* The flags of a raw clone or clone3 that forks on the caller's stack, or
 * -1. */
static long raw_fork_flags(long nr, const long a[6])
{
	int stack = 0;

	if ((nr != SYS_clone && nr != SYS_clone3) || atomic_load(&shim_hands_off) ||
	    shim_in_vfork_child())
		return -1;
	long flags = raw_clone_flags(nr, a, &stack);
	if (flags >= 0)
		files_not_memory((unsigned long)flags);
	return flags >= 0 && forklike((unsigned long)flags) && !stack ? flags : -1;
}

/* Our fork handlers around a clone that forks; flags: the clone's. */
static void fork_begin(unsigned long flags)
{
	shim_fork_wrap();
	shim_fork_stranger((flags & CLONE_NEWPID) != 0);
	shim_fork_prepare();
}

static long fork_end(long rc, int in_child)
{
	int err = errno;

	if (in_child)
		shim_fork_child();
	else
		shim_fork_parent();
	shim_fork_unwrap(in_child ? 0 : rc < 0 ? -1 : (int)rc);
	errno = err;
	return rc;
}

/*
 * pidfd_getfd() copies an fd of the process a pidfd names: of another
 * process, a copy we cannot know (a write through it, behind our back,
 * resets a moved connection: bell.c); of our own, or of a process that
 * shares the file with us (a forked child), it names the same socket as
 * our fd of that number, which kcmp() tells: then it is a dup (before, its
 * reads took the raw stream, and the connection was reset).
 */
static void fd_taken(int srcfd, long rc)
{
	if (rc < 0 || shim_in_vfork_child())
		return;
	int pid = shim_pid();
	if (shim_has(srcfd) && SYS_(SYS_kcmp, pid, pid, KCMP_FILE, srcfd, rc, 0) == 0)
		shim_dup(srcfd, (int)rc);
	else
		shim_fresh_fd((int)rc);
}

/* The system call as the program asked it of libc. */
static long raw(long nr, const long a[6])
{
	return REAL(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static int exec_failed(int rc, char **env, char *const envp[]);

/* An exec through libc's syscall(), as through execve() or execveat():
 * unprepared, the new image took a moved socket for a plain one, and the
 * peer read its writes as bytes behind our back (a reset). */
static long raw_exec(long nr, const long a[6])
{
	int at = nr == SYS_execveat;
	int dir = at ? (int)a[0] : AT_FDCWD;
	const char *path = (const char *)a[at];
	char *const *envp = (char *const *)a[at + 2];
	char **env = shim_exec_prepare(envp, shim_image_look(dir, path, at ? (int)a[4] : 0), 1);
	long b[6] = { a[0], a[1], a[2], a[3], a[4], a[5] };

	b[at + 2] = (long)env; /* the same call, with our environment */
	return exec_failed((int)raw(nr, b), env, envp);
}

/* Six arguments, as libc's syscall() takes them whatever the caller
 * passed: the ones it did not pass are never used, but the sixth is read
 * from the caller's stack, perhaps from its sanitizer's red zone (the
 * sandbox case of t_shim_proc under ASan). */
__attribute__((no_sanitize_address)) EXPORT long syscall(long nr, ...)
{
	va_list ap;

	va_start(ap, nr);
	long a[6];
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (nr == SYS_seccomp &&
	    (a[0] == SECCOMP_SET_MODE_STRICT ||
	     (a[0] == SECCOMP_SET_MODE_FILTER && may_kill((const struct sock_fprog *)a[2]))))
		hands_off("a seccomp filter that may kill");
	if (nr == SYS_io_uring_setup && !atomic_load(&shim_hands_off))
		uring_made();
	if ((nr == SYS_execve || nr == SYS_execveat) && !atomic_load(&shim_hands_off))
		return raw_exec(nr, a);
	/* libuv (uvloop, Node.js) closes every fd by syscall(SYS_close), as
	 * glibc's close() is a cancellation point.  Unseen, a moved
	 * connection's close told the peer nothing, drained no doorbell and
	 * did not linger: the kernel's close of a socket with a doorbell
	 * unread is a reset, which threw away the bytes written before the
	 * switch and still unsent (uvloop's echo clients read a prefix, then
	 * the end of the stream; found by a helper).  The close itself stays
	 * the raw call. */
	if (nr == SYS_close) {
		int rc = shim_close_begin((int)a[0]);
		if (rc < 0)
			return shim_err(rc);
	}
	if (nr == SYS_close_range && REAL(close_range))
		return shim_close_range((unsigned)a[0], (unsigned)a[1], (int)a[2]);
	/* Credentials (this thread's alone) and a copied fd: the call, then
	 * our look at what it did, the call's errno kept. */
	if (creds_nr(nr) || nr == SYS_pidfd_getfd) {
		long rc = raw(nr, a);
		int err = errno;
		if (nr == SYS_pidfd_getfd)
			fd_taken((int)a[1], rc);
		else
			creds_changed(rc);
		errno = err;
		return rc;
	}
	if (nr == SYS_setns || (nr == SYS_unshare && (a[0] & CLONE_NEWPID))) {
		long rc = raw(nr, a);
		int err = errno;
		shim_kids_ns_changed();
		errno = err;
		return rc;
	}
	long flags = raw_fork_flags(nr, a);
	if (flags < 0)
		return raw(nr, a);
	fork_begin((unsigned long)flags);
	long rc = raw(nr, a);
	return fork_end(rc, rc == 0);
}

/* The loader's DT_FINI call at exit (Makefile: -Wl,-fini): beside the code
 * a forked child runs, where the _fini stub at the end of the code was a
 * page fault more for each child that exits. */
SHUNT_FORK_TEXT void shunt__fini(void);
SHUNT_FORK_TEXT void shunt__fini(void)
{
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *off = getenv("SHUNT_DISABLE");

	shim_real_init();
	shim_thread_key_init();
	set_fd_floor();
	shunt__log_hide(); /* whichever constructor ran first */
	pthread_atfork(shim_fork_prepare, shim_fork_parent, shim_fork_child);
	shim_proc_init();
	/* A secure execution (set-user-ID, set-group-ID, file capabilities;
	 * the library named in /etc/ld.so.preload) runs with credentials its
	 * caller lacks, from the caller's environment: the library reads none
	 * of it (secure_getenv), and moves nothing, as such programs stay on
	 * TCP when LD_PRELOAD names us. */
	if ((off && *off && strcmp(off, "0")) || shunt__config()->bad_file ||
	    getauxval(AT_SECURE))
		enabled = 0;
	shim_inherit(); /* even when off: an inherited connection is ours to carry */
}

/* --- Sockets ------------------------------------------------------------- */

/* The program's call failed for want of an fd (EMFILE, or ENFILE for the
 * whole system): give back what our meetings hold, and say whether to try
 * again.  errno is kept. */
static int out_of_fds(void)
{
	int err = errno;

	if ((err != EMFILE && err != ENFILE) || !shim_enabled())
		return 0;
	int n = shim_moves_reclaim_fds();
	errno = err;
	return n > 0;
}

static int tcp_type(int domain, int type, int proto)
{
	return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
	       (proto == 0 || proto == IPPROTO_TCP);
}

EXPORT int socket(int domain, int type, int proto)
{
	int rc = REAL(socket)(domain, type, proto);

	if (rc < 0 && out_of_fds())
		rc = REAL(socket)(domain, type, proto);

	if (rc >= 0) {
		shim_fresh_fd(rc);
		shim_set_kind(rc, tcp_type(domain, type, proto) ? FD_TCP : FD_OTHER);
	}
	return rc;
}

EXPORT int socketpair(int domain, int type, int proto, int sv[2])
{
	static int (*real)(int, int, int, int[2]);

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "socketpair");
	int rc = real(domain, type, proto, sv);
	if (rc < 0 && out_of_fds())
		rc = real(domain, type, proto, sv);
	if (rc == 0) {
		shim_fresh_fd(sv[0]);
		shim_fresh_fd(sv[1]);
	}
	return rc;
}

struct ending {
	struct tsock *t, *next;
	int fd;
	int ndups, cap;
	int *dups; /* every other number of the socket (malloc'd) */
};

/* Room for one more dup's number; 0 when none could be had. */
static int dup_room(struct ending *e)
{
	if (e->ndups < e->cap)
		return 1;
	int cap = e->cap ? e->cap * 2 : 8;
	int *d = realloc(e->dups, (size_t)cap * sizeof(*d));
	if (!d)
		return 0;
	e->dups = d;
	e->cap = cap;
	return 1;
}

/* Each dup is kept, however many: one left out read the next
 * connection's raw stream once it moved (a helper's 12 dups: the 9th
 * and on got no byte). */
static void forget_other(int fd, struct tsock *t, void *arg)
{
	struct ending *e = arg;

	if (t != e->t || fd == e->fd)
		return;
	if (dup_room(e))
		e->dups[e->ndups++] = fd;
	else
		log_error("fd %d: no memory to keep a dup across connect(AF_UNSPEC)", fd);
	shim_forget(fd, 0);
}

/* The socket, unconnected again, is tracked anew under every number that
 * named it, and its epoll registrations go on with it, as the kernel's
 * do: a dup read the raw stream of the next connection once it moved, and
 * no set reported it (the registrations named the old one). */
static void renew(struct ending *e)
{
	if (!e->ndups && !shim_epoll_registered(e->t))
		return;
	e->next = shim_track_unconnected(e->fd);
	if (!e->next)
		return;
	for (int i = 0; i < e->ndups; i++)
		shim_dup(e->fd, e->dups[i]);
	shim_epoll_renew(e->t, e->next);
	shim_put(e->next);
}

/*
 * connect(AF_UNSPEC) ends a TCP connection with a reset, and the socket
 * may connect again.  So the connection we tracked ends first as by a
 * close with SO_LINGER {1, 0}, under every fd that names it (a moved one's
 * peer reads ECONNRESET from its ring, as over TCP), and the socket is
 * ours anew for the next connect(); the SO_LINGER that close set goes back
 * to the program's.
 */
static int disconnect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct linger was;
	socklen_t wl = sizeof(was);
	struct ending e = { .t = shim_get(fd), .fd = fd };
	/* The program's, not one we hold while resending (io.c). */
	int have = (e.t ? shim_linger_get(e.t, fd, &was, &wl)
			: REAL(getsockopt)(fd, SOL_SOCKET, SO_LINGER, &was, &wl)) == 0;

	if (e.t) {
		atomic_fetch_or(&e.t->slot->flags, TF_LINGER0);
		shim_each(forget_other, &e);
		shim_forget(fd, 1);
	}
	int rc = REAL(connect)(fd, addr, len);
	int err = errno;
	if (have)
		shim_linger_put(fd, &was); /* the time too, set {1, 0} by the close */
	if (e.t) {
		if (rc == 0)
			renew(&e);
		shim_put(e.t);
	}
	free(e.dups);
	errno = err;
	return rc;
}

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	if (addr && len >= sizeof(sa_family_t) && addr->sa_family == AF_UNSPEC && shim_has(fd) &&
	    !shim_in_vfork_child())
		return disconnect(fd, addr, len);
	int rc = REAL(connect)(fd, addr, len);

	if ((rc == 0 || errno == EINPROGRESS) && shim_enabled() && !shim_has(fd) && shim_is_tcp(fd)) {
		int err = errno;
		shim_track(fd, 0);
		errno = err;
	}
	return rc;
}

static int do_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	socklen_t len0 = len ? *len : 0;
	int rc = REAL(accept4)(fd, addr, len, flags);

	if (rc < 0 && out_of_fds()) {
		if (len)
			*len = len0;
		rc = REAL(accept4)(fd, addr, len, flags);
	}
	if (rc >= 0) {
		int err = errno;
		shim_fresh_fd(rc);
		if (shim_enabled() && shim_is_tcp(fd))
			shim_track(rc, flags & SOCK_NONBLOCK ? TF_NONBLOCK : 0);
		errno = err;
	}
	return rc;
}

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	return do_accept4(fd, addr, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	return do_accept4(fd, addr, len, 0);
}

#define ON_SOCK_BY(hold, fd, t, plain, expr)      \
	do {                                      \
		unsigned mark_;                   \
		struct tsock *t = hold(fd, &mark_); \
		if (!t)                           \
			return plain;             \
		long rc_ = (long)(expr);          \
		shim_release(t, mark_);           \
		return rc_;                       \
	} while (0)
#define ON_SOCK(fd, t, plain, expr) ON_SOCK_BY(shim_hold, fd, t, plain, expr)
/* A call that is a cancellation point: its waits for the ring act on one. */
#define ON_SOCK_CP(fd, t, plain, expr) ON_SOCK_BY(shim_hold_cp, fd, t, plain, expr)

EXPORT int shutdown(int fd, int how)
{
	ON_SOCK(fd, t, REAL(shutdown)(fd, how), shim_shutdown(t, fd, how));
}

/* Options the shim holds for the program once a connection moved. */
static int nagle_opt(int level, int opt)
{
	return level == IPPROTO_TCP && (opt == TCP_NODELAY || opt == TCP_CORK);
}

EXPORT int setsockopt(int fd, int level, int opt, const void *val, socklen_t len)
{
	if (nagle_opt(level, opt))
		ON_SOCK(fd, t, REAL(setsockopt)(fd, level, opt, val, len),
			shim_nodelay_set(t, fd, opt, val, len));
	if (level == SOL_SOCKET && opt == SO_RCVLOWAT)
		ON_SOCK(fd, t, REAL(setsockopt)(fd, level, opt, val, len),
			shim_rcvlowat_set(t, fd, val, len));
	if (level == SOL_SOCKET && opt == SO_LINGER)
		ON_SOCK(fd, t, REAL(setsockopt)(fd, level, opt, val, len),
			shim_linger_set(t, fd, val, len));
	int rc = REAL(setsockopt)(fd, level, opt, val, len);

	if (rc == 0)
		ON_SOCK(fd, t, 0, (shim_sockopt(t, fd, level, opt, val, len), 0));
	return rc;
}

EXPORT int getsockopt(int fd, int level, int opt, void *val, socklen_t *len)
{
	if (nagle_opt(level, opt))
		ON_SOCK(fd, t, REAL(getsockopt)(fd, level, opt, val, len),
			shim_nodelay_get(t, fd, opt, val, len));
	if (level == SOL_SOCKET && opt == SO_ERROR)
		ON_SOCK(fd, t, REAL(getsockopt)(fd, level, opt, val, len),
			shim_error_get(t, fd, val, len));
	if (level == SOL_SOCKET && opt == SO_RCVLOWAT)
		ON_SOCK(fd, t, REAL(getsockopt)(fd, level, opt, val, len),
			shim_rcvlowat_get(t, fd, val, len));
	if (level == SOL_SOCKET && opt == SO_LINGER)
		ON_SOCK(fd, t, REAL(getsockopt)(fd, level, opt, val, len),
			shim_linger_get(t, fd, val, len));
	if (level == IPPROTO_TCP && opt == TCP_INFO)
		ON_SOCK(fd, t, REAL(getsockopt)(fd, level, opt, val, len),
			shim_tcp_info_get(t, fd, val, len));
	return REAL(getsockopt)(fd, level, opt, val, len);
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	ON_SOCK(fd, t, (int)shim_err(sys_getpeername(fd, addr, len)),
		shim_getpeername(t, fd, addr, len));
}

/* --- fds ------------------------------------------------------------------- */

SHUNT_FORK_TEXT EXPORT int close(int fd)
{
	return shim_close(fd);
}

EXPORT int dup(int fd)
{
	if (shim_own_fd(fd))
		return (int)shim_err(-EBADF);
	int rc = REAL(dup)(fd);

	if (rc < 0 && out_of_fds())
		rc = REAL(dup)(fd);
	if (rc >= 0 && !shim_in_vfork_child())
		shim_dup_landed(fd, rc);
	return rc;
}

EXPORT int dup2(int oldfd, int newfd)
{
	return shim_dup2(oldfd, newfd, 0, 0);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
	return shim_dup2(oldfd, newfd, flags, 1);
}

static int do_fcntl(int fd, int cmd, void *arg)
{
	int dup = cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC;
	int sets = cmd == F_SETFL || cmd == F_SETOWN || cmd == F_SETSIG || cmd == F_SETOWN_EX;

	if (dup && shim_own_fd(fd))
		return (int)shim_err(-EBADF);
	int rc = REAL(fcntl)(fd, cmd, arg);

	if (rc < 0 && dup && out_of_fds())
		rc = REAL(fcntl)(fd, cmd, arg);
	/* Only these act, and a setting only on a tracked socket: the
	 * F_GETFL before each F_SETFL (wrk, libuv, nginx), and wrk's F_SETFL
	 * before its connect, pay no vfork check's getpid(). */
	if (rc < 0 || !(dup || sets) || (sets && !shim_has(fd)) || shim_in_vfork_child())
		return rc;
	if (dup) {
		shim_dup_landed(fd, rc);
	} else {
		struct tsock *t = shim_get(fd);
		if (t && cmd == F_SETFL)
			shim_set_nonblock(t, !!((long)arg & O_NONBLOCK));
		/* Signal-driven I/O tells of TCP's arrivals, not the ring's. */
		if (t && (cmd != F_SETFL || ((long)arg & O_ASYNC)))
			shim_tcp_only(t, fd, 1);
		shim_put(t);
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
		ON_SOCK(fd, t, REAL(ioctl)(fd, req, arg),
			shim_bad_ptr(arg) ? shim_err(-EFAULT) : shim_fionread(t, fd, arg));
	if (req == SIOCATMARK)
		ON_SOCK(fd, t, REAL(ioctl)(fd, req, arg),
			shim_bad_ptr(arg) ? shim_err(-EFAULT) : shim_atmark(t, fd, arg));
	int rc = REAL(ioctl)(fd, req, arg);
	if (rc == 0 && (req == FIONBIO || req == FIOASYNC) && arg) {
		struct tsock *t = shim_get(fd);
		if (t && req == FIONBIO)
			shim_set_nonblock(t, *(int *)arg != 0);
		if (t && req == FIOASYNC && *(int *)arg)
			shim_tcp_only(t, fd, 1);
		shim_put(t);
	}
	return rc;
}

/* How many threads the process has (field 20 of /proc/self/stat, past
 * the name, which may hold spaces); 2 when it cannot tell. */
static int threads(void)
{
	char buf[1024];

	if (sys_read_text("/proc/self/stat", buf, sizeof(buf)) <= 0)
		return 2;
	const char *p = strrchr(buf, ')');
	for (int field = 2; p && *p && field < 20; p++)
		field += *p == ' ';
	return p && *p ? atoi(p) : 2;
}

/*
 * A thread about to take an fd table of its own (unshare(CLONE_FILES),
 * close_range's CLOSE_RANGE_UNSHARE): its closes and opens are then its
 * table's alone, which our one table cannot tell from the other threads'
 * (its close of its copy of a moved socket ended the connection the
 * others still used: a helper's reproducer, t_shim_fds unshare_files).
 * So the library lets go first, as for a clone that shares the table and
 * not the memory.  A process of one thread shares its table with nobody
 * (a forked child before its exec): nothing changes for it.
 */
static void own_table(void)
{
	if (!shim_in_vfork_child() && !atomic_load(&shim_hands_off) && threads() > 1)
		hands_off("a thread takes an fd table of its own");
}

EXPORT int unshare(int flags)
{
	if (flags & CLONE_FILES)
		own_table();
	int rc = REAL(unshare)(flags);
	if (flags & CLONE_NEWPID)
		shim_kids_ns_changed();
	return rc;
}

EXPORT int setns(int fd, int nstype)
{
	int rc = REAL(setns)(fd, nstype);

	shim_kids_ns_changed();
	return rc;
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	if (flags & CLOSE_RANGE_UNSHARE)
		own_table();
	return shim_close_range(first, last, flags);
}

EXPORT void closefrom(int first)
{
	shim_closefrom(first);
}

EXPORT FILE *fdopen(int fd, const char *mode)
{
	return shim_fdopen(fd, mode);
}

EXPORT int fclose(FILE *f)
{
	return shim_fclose(f);
}

EXPORT int fcloseall(void)
{
	return shim_fcloseall();
}

EXPORT FILE *freopen(const char *path, const char *mode, FILE *f)
{
	return shim_freopen(path, mode, f);
}

/* The fortified forms (_FORTIFY_SOURCE), which glibc's headers do not
 * declare. */
int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap);
int __dprintf_chk(int fd, int flag, const char *fmt, ...);

/* chk: the fortified form's flag, or -1 (no exported name of ours calls
 * another: t_bindings). */
static int vdprintf_by(int fd, int chk, const char *fmt, va_list ap)
{
	ON_SOCK(fd, t,
		chk < 0 ? REAL(vdprintf)(fd, fmt, ap) : REAL(__vdprintf_chk)(fd, chk, fmt, ap),
		shim_vdprintf(t, fd, chk, fmt, ap));
}

EXPORT int vdprintf(int fd, const char *fmt, va_list ap)
{
	return vdprintf_by(fd, -1, fmt, ap);
}

EXPORT int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap)
{
	return vdprintf_by(fd, flag < 0 ? 0 : flag, fmt, ap);
}

EXPORT int dprintf(int fd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int rc = vdprintf_by(fd, -1, fmt, ap);
	va_end(ap);
	return rc;
}

EXPORT int __dprintf_chk(int fd, int flag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int rc = vdprintf_by(fd, flag < 0 ? 0 : flag, fmt, ap);
	va_end(ap);
	return rc;
}

/* --- POSIX AIO ----------------------------------------------------------------
 * glibc's AIO reads and writes in threads of its own, with its internal
 * calls, which no wrapper sees: a connection it is given goes back to TCP
 * first, for good, as for an option only TCP honours.  In shared memory,
 * aio_write's bytes went down the stream behind the ring (lost, or a
 * reset) and aio_read took a doorbell for data or waited for good (a
 * helper's reproducer; t_shim_data aio_moved). */
static void aio_fd(int fd)
{
	struct tsock *t = shim_get(fd);

	if (t) {
		shim_tcp_only(t, fd, 0);
		shim_put(t);
	}
}

EXPORT int aio_read(struct aiocb *cb)
{
	aio_fd(cb->aio_fildes);
	return REAL(aio_read)(cb);
}

EXPORT int aio_write(struct aiocb *cb)
{
	aio_fd(cb->aio_fildes);
	return REAL(aio_write)(cb);
}

EXPORT int aio_read64(struct aiocb64 *cb)
{
	aio_fd(cb->aio_fildes);
	return REAL(aio_read64)(cb);
}

EXPORT int aio_write64(struct aiocb64 *cb)
{
	aio_fd(cb->aio_fildes);
	return REAL(aio_write64)(cb);
}

/* glibc looks at the mode first: a bad one is EINVAL, whatever the list. */
static int lio_mode(int mode)
{
	return mode == LIO_WAIT || mode == LIO_NOWAIT;
}

EXPORT int lio_listio(int mode, struct aiocb *const list[], int n, struct sigevent *sev)
{
	for (int i = 0; lio_mode(mode) && i < n; i++)
		if (list[i] && list[i]->aio_lio_opcode != LIO_NOP)
			aio_fd(list[i]->aio_fildes);
	return REAL(lio_listio)(mode, list, n, sev);
}

EXPORT int lio_listio64(int mode, struct aiocb64 *const list[], int n, struct sigevent *sev)
{
	for (int i = 0; lio_mode(mode) && i < n; i++)
		if (list[i] && list[i]->aio_lio_opcode != LIO_NOP)
			aio_fd(list[i]->aio_fildes);
	return REAL(lio_listio64)(mode, list, n, sev);
}

/* A new fd: whatever the table still says of its number goes. */
static int fresh(int fd)
{
	if (fd >= 0) {
		int err = errno;
		shim_fresh_fd(fd);
		errno = err;
	}
	return fd;
}

/* Calls that make a new fd: what we knew of its number is stale.  One
 * that found no fd free is tried once more if the meetings in progress
 * gave some back: the program gets as many fds as over TCP. */
#define FRESH(expr)                  \
	do {                         \
		int fd_ = (expr);    \
		if (fd_ < 0 && out_of_fds()) \
			fd_ = (expr); \
		return fresh(fd_);   \
	} while (0)

#define NEXT(name, type) \
	static __typeof__(type) real_; \
	if (!real_) *(void **)&real_ = dlsym(RTLD_NEXT, name)

static mode_t mode_arg(int flags, va_list ap)
{
	return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	NEXT("open", int (*)(const char *, int, ...));
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	FRESH(real_(path, flags, m));
}

EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	NEXT("open64", int (*)(const char *, int, ...));
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	FRESH(real_(path, flags, m));
}

EXPORT int openat(int dir, const char *path, int flags, ...)
{
	va_list ap;
	NEXT("openat", int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	FRESH(real_(dir, path, flags, m));
}

EXPORT int openat64(int dir, const char *path, int flags, ...)
{
	va_list ap;
	NEXT("openat64", int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	FRESH(real_(dir, path, flags, m));
}

/* The fortified opens (-D_FORTIFY_SOURCE, as Debian builds packages):
 * open(path, flags) with flags the compiler cannot see calls these. */
EXPORT int __open_2(const char *path, int flags)
{
	NEXT("__open_2", int (*)(const char *, int));
	FRESH(real_(path, flags));
}

EXPORT int __open64_2(const char *path, int flags)
{
	NEXT("__open64_2", int (*)(const char *, int));
	FRESH(real_(path, flags));
}

EXPORT int __openat_2(int dir, const char *path, int flags)
{
	NEXT("__openat_2", int (*)(int, const char *, int));
	FRESH(real_(dir, path, flags));
}

EXPORT int __openat64_2(int dir, const char *path, int flags)
{
	NEXT("__openat64_2", int (*)(int, const char *, int));
	FRESH(real_(dir, path, flags));
}

EXPORT int creat(const char *path, mode_t mode)
{
	NEXT("creat", int (*)(const char *, mode_t));
	FRESH(real_(path, mode));
}

static int fresh_pair(int rc, int fds[2])
{
	if (rc == 0) {
		int e = errno;
		shim_fresh_fd(fds[0]);
		shim_fresh_fd(fds[1]);
		errno = e;
	}
	return rc;
}

EXPORT int pidfd_getfd(int pidfd, int targetfd, unsigned flags)
{
	NEXT("pidfd_getfd", int (*)(int, int, unsigned));
	int rc = real_ ? real_(pidfd, targetfd, flags)
		       : (int)REAL(syscall)(SYS_pidfd_getfd, pidfd, targetfd, flags, 0, 0, 0);
	int err = errno;

	fd_taken(targetfd, rc);
	errno = err;
	return rc;
}

EXPORT int pipe(int fds[2])
{
	NEXT("pipe", int (*)(int[2]));
	int rc = real_(fds);
	if (rc < 0 && out_of_fds())
		rc = real_(fds);
	return fresh_pair(rc, fds);
}

EXPORT int pipe2(int fds[2], int flags)
{
	NEXT("pipe2", int (*)(int[2], int));
	int rc = real_(fds, flags);
	if (rc < 0 && out_of_fds())
		rc = real_(fds, flags);
	return fresh_pair(rc, fds);
}

EXPORT int eventfd(unsigned v, int flags)
{
	NEXT("eventfd", int (*)(unsigned, int));
	FRESH(real_(v, flags));
}

/* A new epoll set, marked: put in another set, it becomes a set of ours
 * (epoll.c, shim_epoll_ctl). */
static int epoll_made(int fd)
{
	if (fresh(fd) >= 0 && !shim_in_vfork_child())
		shim_set_kind(fd, FD_EPOLL);
	return fd;
}

EXPORT int epoll_create(int size)
{
	NEXT("epoll_create", int (*)(int));
	int fd = real_(size);

	return epoll_made(fd < 0 && out_of_fds() ? real_(size) : fd);
}

EXPORT int epoll_create1(int flags)
{
	NEXT("epoll_create1", int (*)(int));
	int fd = real_(flags);

	return epoll_made(fd < 0 && out_of_fds() ? real_(flags) : fd);
}

EXPORT int memfd_create(const char *name, unsigned flags)
{
	NEXT("memfd_create", int (*)(const char *, unsigned));
	FRESH(real_(name, flags));
}

EXPORT int timerfd_create(int clock, int flags)
{
	NEXT("timerfd_create", int (*)(int, int));
	FRESH(real_(clock, flags));
}

EXPORT int signalfd(int fd, const sigset_t *mask, int flags)
{
	NEXT("signalfd", int (*)(int, const sigset_t *, int));
	FRESH(real_(fd, mask, flags));
}

EXPORT int inotify_init1(int flags)
{
	NEXT("inotify_init1", int (*)(int));
	FRESH(real_(flags));
}

/* --- Data ------------------------------------------------------------------ */

SHUNT_FORK_TEXT static ssize_t do_read(int fd, void *buf, size_t n)
{
	/* read() of nothing returns 0 before the socket sees it; recv() waits. */
	ON_SOCK_CP(fd, t, REAL(read)(fd, buf, n), n ? shim_recv(t, fd, buf, n, 0) : 0);
}

SHUNT_FORK_TEXT EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	return do_read(fd, buf, n);
}

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen)
		abort(); /* what glibc's own check does */
	return do_read(fd, buf, n);
}

SHUNT_FORK_TEXT EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	ON_SOCK_CP(fd, t, REAL(write)(fd, buf, n), shim_send(t, fd, buf, n, 0));
}

static ssize_t do_recv(int fd, void *buf, size_t n, int flags)
{
	ON_SOCK_CP(fd, t, REAL(recvfrom)(fd, buf, n, flags, NULL, NULL),
		shim_recv(t, fd, buf, n, flags));
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	return do_recv(fd, buf, n, flags);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	if (n > buflen)
		abort();
	return do_recv(fd, buf, n, flags);
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	ON_SOCK_CP(fd, t, REAL(sendto)(fd, buf, n, flags, NULL, 0), shim_send(t, fd, buf, n, flags));
}

/* A connected TCP socket gives no source address: the kernel writes its
 * length 0 after a read, and returns EFAULT for a length it cannot write,
 * the bytes read all the same. */
static ssize_t recv_unnamed(struct tsock *t, int fd, void *buf, size_t n, int flags,
			    struct sockaddr *addr, socklen_t *alen)
{
	ssize_t r = shim_recv(t, fd, buf, n, flags);

	if (r < 0 || !addr)
		return r;
	if (shim_bad_ptr(alen))
		return shim_err(-EFAULT);
	*alen = 0;
	return r;
}

static ssize_t do_recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
			   socklen_t *alen)
{
	ON_SOCK_CP(fd, t, REAL(recvfrom)(fd, buf, n, flags, addr, alen),
		recv_unnamed(t, fd, buf, n, flags, addr, alen));
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
			socklen_t *alen)
{
	return do_recvfrom(fd, buf, n, flags, addr, alen);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
			      struct sockaddr *addr, socklen_t *alen)
{
	if (n > buflen)
		abort();
	return do_recvfrom(fd, buf, n, flags, addr, alen);
}

/* A destination given to a connected TCP socket is checked by the kernel
 * (move_addr_to_kernel), then ignored: 0, or the error it gives. */
static int dest_bad(const void *addr, socklen_t alen)
{
	if (!addr || !alen)
		return 0;
	if (alen > sizeof(struct sockaddr_storage))
		return -EINVAL;
	return shim_bad_ptr(addr) ? -EFAULT : 0;
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
		      const struct sockaddr *addr, socklen_t alen)
{
	int bad = dest_bad(addr, alen);

	ON_SOCK_CP(fd, t, REAL(sendto)(fd, buf, n, flags, addr, alen),
		bad ? shim_err(bad) : shim_send(t, fd, buf, n, flags));
}

/* readv and writev of no bytes at all are 0 without a look at the socket,
 * as the kernel's (vfs_readv and vfs_writev end there; recvmsg and sendmsg
 * go on to the socket): a writev of no bytes after a reset returned
 * ECONNRESET, after our shutdown EPIPE (tests/diff_shim.c). */

EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	ON_SOCK_CP(fd, t, REAL(readv)(fd, iov, n),
		n < 0 || n > IOV_MAX ? shim_err(-EINVAL)
		: shim_vec_empty(iov, n)  ? 0
				     : shim_recvv(t, fd, iov, n, 0));
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	ON_SOCK_CP(fd, t, REAL(writev)(fd, iov, n),
		n < 0 || n > IOV_MAX ? shim_err(-EINVAL)
		: shim_vec_empty(iov, n)  ? 0
				     : shim_sendv(t, fd, iov, n, 0));
}

/*
 * preadv2 and pwritev2 at offset -1 work at the file position, which a
 * socket lacks: they are its readv and writev (RWF_NOWAIT its
 * MSG_DONTWAIT, RWF_NOSIGNAL its MSG_NOSIGNAL), and the kernel ignores the
 * other flags a socket may be given.  Any other offset (ESPIPE) or flag
 * (EOPNOTSUPP) is the kernel's to refuse: it reads and writes nothing.
 */
#ifndef RWF_NOAPPEND
#define RWF_NOAPPEND 0x20
#endif
#ifndef RWF_NOSIGNAL
#define RWF_NOSIGNAL 0x100
#endif
#define RWF_ON_SOCKET \
	(RWF_HIPRI | RWF_DSYNC | RWF_SYNC | RWF_NOWAIT | RWF_APPEND | RWF_NOAPPEND | RWF_NOSIGNAL)

static int rwf_stream(int n, off_t off, int flags)
{
	return off == -1 && !(flags & ~RWF_ON_SOCKET) && n >= 0 && n <= IOV_MAX;
}

static int rwf_msg(int flags)
{
	return (flags & RWF_NOWAIT ? MSG_DONTWAIT : 0) | (flags & RWF_NOSIGNAL ? MSG_NOSIGNAL : 0);
}

static ssize_t do_preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	ON_SOCK_CP(fd, t, REAL(preadv2)(fd, iov, n, off, flags),
		!rwf_stream(n, off, flags) ? REAL(preadv2)(fd, iov, n, off, flags)
		: shim_vec_empty(iov, n)	   ? 0
					   : shim_recvv(t, fd, iov, n, rwf_msg(flags)));
}

static ssize_t do_pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	ON_SOCK_CP(fd, t, REAL(pwritev2)(fd, iov, n, off, flags),
		!rwf_stream(n, off, flags) ? REAL(pwritev2)(fd, iov, n, off, flags)
		: shim_vec_empty(iov, n)	   ? 0
					   : shim_sendv(t, fd, iov, n, rwf_msg(flags)));
}

EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	return do_preadv2(fd, iov, n, off, flags);
}

EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	return do_preadv2(fd, iov, n, off, flags);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	return do_pwritev2(fd, iov, n, off, flags);
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
	return do_pwritev2(fd, iov, n, off, flags);
}

/* A read of the kernel's socket on a tracked fd: the stream it consumed,
 * and a call towards the move while it is on TCP. */
static void kernel_read(struct tsock *t, int fd, int flags, ssize_t n)
{
	if (!(flags & (MSG_ERRQUEUE | MSG_OOB | MSG_PEEK)) && n > 0) {
		atomic_fetch_add(&t->slot->rx_tcp, (uint64_t)n);
		shim_rx_publish(t);
	}
	if (!(flags & (MSG_ERRQUEUE | MSG_OOB)) && !shim_moved(t))
		shim_count(t, fd, n > 0 ? (uint64_t)n : 0, 0);
}

static ssize_t recvmsg_sock(struct tsock *t, int fd, struct msghdr *m, int flags)
{
	if (shim_bad_ptr(m))
		return shim_err(-EFAULT);
	if (m->msg_iovlen > IOV_MAX)
		return shim_err(-EMSGSIZE);
	if (flags & (MSG_ERRQUEUE | MSG_OOB))
		return REAL(recvmsg)(fd, m, flags);
	if (!shim_moved(t)) {
		shim_rx_enter(t, flags);
		ssize_t n = shim_krecvmsg(t, fd, m, flags);
		return shim_recv_took(t, fd, m->msg_iov, (int)m->msg_iovlen, n, flags);
	}
	void *ctl = m->msg_control;
	size_t clen = m->msg_controllen;
	m->msg_namelen = 0;
	m->msg_controllen = 0;
	m->msg_flags = 0;
	ssize_t n = shim_recvv(t, fd, m->msg_iov, (int)m->msg_iovlen, flags);
	if (n >= 0 && (atomic_load(&t->slot->flags) & TF_INQ)) {
		int err = errno;
		shim_inq_put(t, fd, m, ctl, clen);
		errno = err;
	}
	return n;
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	unsigned mark;
	struct tsock *t = shim_hold_cp(fd, &mark);

	if (t) {
		ssize_t n = recvmsg_sock(t, fd, m, flags);
		shim_release(t, mark);
		return n;
	}
	ssize_t n = REAL(recvmsg)(fd, m, flags);
	if (n >= 0 && m->msg_controllen > 0 && !(flags & MSG_ERRQUEUE)) {
		int err = errno;
		shim_scm_in(fd, m);
		errno = err;
	}
	return n;
}

static ssize_t sendmsg_sock(struct tsock *t, int fd, const struct msghdr *m, int flags)
{
	/* Its vector is shim_sendv's to check (the kernel's, on TCP). */
	if (shim_bad_ptr(m) || (m->msg_name && m->msg_namelen && shim_bad_ptr(m->msg_name)))
		return shim_err(-EFAULT);
	if (m->msg_iovlen > IOV_MAX)
		return shim_err(-EMSGSIZE);
	/* Ancillary data TCP acts on is TCP's: the connection goes back to it
	 * first and stays there.  (Sent by the kernel on a moved socket, the
	 * bytes went behind the ring, where the peer reset or lost them;
	 * before the move, past the stream's count: t_shim_data
	 * sendmsg_control.)  What TCP refuses or ignores costs no way back. */
	int cm = m->msg_controllen && shim_moved_now(t) ? shim_tcp_cmsg(t, fd, m) : 1;
	if (cm < 0)
		return shim_err(cm);
	if (m->msg_controllen && cm) {
		shim_tcp_only(t, fd, 0);
		return REAL(sendmsg)(fd, m, flags);
	}
	return shim_sendv(t, fd, m->msg_iov, (int)m->msg_iovlen, flags);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	unsigned mark;
	struct tsock *t = shim_hold_cp(fd, &mark);

	if (!t) {
		if (m && m->msg_controllen)
			shim_scm_out(m);
		return REAL(sendmsg)(fd, m, flags);
	}
	ssize_t n = sendmsg_sock(t, fd, m, flags);
	shim_release(t, mark);
	return n;
}

/* --- Many messages ---------------------------------------------------------
 * On a stream socket each message of sendmmsg and recvmmsg is a piece of
 * the stream, sent or read as by sendmsg and recvmsg (net/socket.c).  While
 * the connection is on TCP the kernel does it all; once it moved, one
 * message at a time through the calls above, with the kernel's rules. */

static size_t msg_bytes(const struct msghdr *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->msg_iovlen; i++)
		n += m->msg_iov[i].iov_len;
	return n;
}

/* The next message only after a whole one; the count of messages sent (a
 * short one counts), or the first one's error: a later error is not
 * reported, and errno stays the program's. */
static int sendmmsg_moved(struct tsock *t, int fd, struct mmsghdr *v, unsigned n, int flags)
{
	int err = errno;
	unsigned i;

	if (n > IOV_MAX)
		n = IOV_MAX; /* the kernel's cap, UIO_MAXIOV */
	if (n && !v)
		return (int)shim_err(-EFAULT);
	for (i = 0; i < n; i++) {
		ssize_t k = sendmsg_sock(t, fd, &v[i].msg_hdr, flags);
		if (k < 0 && i == 0)
			return -1;
		if (k < 0)
			break;
		v[i].msg_len = (unsigned)k;
		if ((size_t)k < msg_bytes(&v[i].msg_hdr)) {
			i++;
			break;
		}
	}
	errno = err;
	return (int)i;
}

static int sendmmsg_sock(struct tsock *t, int fd, struct mmsghdr *v, unsigned n, int flags)
{
	if (flags & MSG_OOB) /* urgent data is TCP's, as in shim_send() */
		atomic_fetch_or(&t->slot->flags, TF_OPTS);
	if (!shim_plain_enter(t))
		return n && shim_bad_ptr(v) ? (int)shim_err(-EFAULT) : sendmmsg_moved(t, fd, v, n, flags);
	int k = REAL(sendmmsg)(fd, v, n, flags);
	shim_plain_leave(t, fd);
	uint64_t out = 0;
	for (int i = 0; i < k; i++)
		out += v[i].msg_len;
	shim_count(t, fd, 0, out);
	return k;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags)
{
	unsigned mark;
	struct tsock *t = shim_hold_cp(fd, &mark);

	if (!t) {
		int err = errno;
		for (unsigned i = 0; v && i < n && i < IOV_MAX; i++)
			if (v[i].msg_hdr.msg_controllen)
				shim_scm_out(&v[i].msg_hdr);
		errno = err;
		return REAL(sendmmsg)(fd, v, n, flags);
	}
	int k = sendmmsg_sock(t, fd, v, n, flags);
	shim_release(t, mark);
	return k;
}

/* recvmmsg's timeout is no bound on a wait: after each message, what is
 * left of it is written back, and the call ends once nothing is. */
static int timeout_spent(struct timespec *tmo, int64_t end)
{
	int64_t left = end - shunt_now_ns();

	*tmo = shunt_ts(left);
	return left <= 0;
}

static int64_t timeout_end(const struct timespec *tmo)
{
	int64_t now = shunt_now_ns();

	if (tmo->tv_sec >= (SHUNT_NEVER - now) / 1000000000 - 1)
		return SHUNT_NEVER;
	return now + (int64_t)tmo->tv_sec * 1000000000 + tmo->tv_nsec;
}

/* An error after some messages: the kernel keeps it in the socket for the
 * next read (sk_err).  A reset is the one that matters, and the ring still
 * has it: the next read reports it again. */
static int recvmmsg_cut(struct tsock *t, unsigned got, int err)
{
	if (errno == ECONNRESET)
		atomic_store(&t->slot->reset_told, 0);
	errno = err;
	return (int)got;
}

static int recvmmsg_moved(struct tsock *t, int fd, struct mmsghdr *v, unsigned n, int flags,
			  struct timespec *tmo)
{
	int64_t end = tmo ? timeout_end(tmo) : 0;
	int err = errno;
	unsigned got = 0;

	if (n && !v)
		return (int)shim_err(-EFAULT);
	while (got < n) {
		ssize_t k = recvmsg_sock(t, fd, &v[got].msg_hdr, flags & ~MSG_WAITFORONE);
		if (k < 0)
			return got ? recvmmsg_cut(t, got, err) : -1;
		v[got++].msg_len = (unsigned)k;
		if (flags & MSG_WAITFORONE)
			flags |= MSG_DONTWAIT;
		if ((tmo && timeout_spent(tmo, end)) || (v[got - 1].msg_hdr.msg_flags & MSG_OOB))
			break;
	}
	errno = err;
	return (int)got;
}

static int recvmmsg_sock(struct tsock *t, int fd, struct mmsghdr *v, unsigned n, int flags,
			 struct timespec *tmo)
{
	/* A socket that may still move is read message by message: each
	 * read is cut at the peer's switch (io.c), as recvmsg's is. */
	if ((flags & (MSG_ERRQUEUE | MSG_OOB)) || (!shim_moved(t) && !shim_may_move(t))) {
		int k = REAL(recvmmsg)(fd, v, n, flags, tmo);
		ssize_t in = k < 0 ? -1 : 0;
		for (int i = 0; i < k; i++)
			in += v[i].msg_len;
		kernel_read(t, fd, flags, in);
		return k;
	}
	if ((tmo && shim_bad_ptr(tmo)) || (n && shim_bad_ptr(v)))
		return (int)shim_err(-EFAULT);
	/* The kernel's first check, before the socket's. */
	if (tmo && (tmo->tv_sec < 0 || (unsigned long)tmo->tv_nsec >= 1000000000ul))
		return (int)shim_err(-EINVAL);
	return recvmmsg_moved(t, fd, v, n, flags, tmo);
}

EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int flags, struct timespec *tmo)
{
	unsigned mark;
	struct tsock *t = shim_hold_cp(fd, &mark);

	if (t) {
		int k = recvmmsg_sock(t, fd, v, n, flags, tmo);
		shim_release(t, mark);
		return k;
	}
	int k = REAL(recvmmsg)(fd, v, n, flags, tmo);
	int err = errno;
	for (int i = 0; i < k && !(flags & MSG_ERRQUEUE); i++)
		if (v[i].msg_hdr.msg_controllen > 0)
			shim_scm_in(fd, &v[i].msg_hdr);
	errno = err;
	return k;
}

/*
 * sendfile from one of our sockets: the kernel splices it into the pipe
 * that out is, taking what is there as a splice does, so ours is a splice
 * too; it refuses any other out, taking nothing (EINVAL: t_shim_data
 * sendfile_inputs), and so do we.  Unseen, it took the raw stream of a
 * moved connection: it slept while the bytes were in the ring, or put the
 * peer's doorbell byte in the pipe (a helper's reproducer, 12-07).  With
 * an offset the kernel refuses a socket before it reads (ESPIPE).
 */
static ssize_t sendfile_from(struct tsock *t, int out, int in, size_t count)
{
	struct stat st;
	int fl = shim_writable_flags(out);
	int rc = fl < 0 ? fl : sys_fstat(out, &st);

	if (rc < 0)
		return shim_err(rc);
	if (!S_ISFIFO(st.st_mode))
		return shim_err(-EINVAL);
	return shim_splice_out(t, in, out, count, (fl & O_NONBLOCK) ? SPLICE_F_NONBLOCK : 0);
}

static ssize_t do_sendfile(int out, int in, off_t *off, size_t count)
{
	unsigned mark = 0;
	struct tsock *from = off || !count ? NULL : shim_hold(in, &mark);

	if (from) {
		ssize_t n = sendfile_from(from, out, in, count);
		shim_release(from, mark);
		return n;
	}
	ON_SOCK(out, t, REAL(sendfile)(out, in, off, count), shim_sendfile(t, out, in, off, count));
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	return do_sendfile(out, in, off, count);
}

EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t count)
{
	return do_sendfile(out, in, off, count);
}

EXPORT ssize_t splice(int in, loff_t *in_off, int out, loff_t *out_off, size_t len,
		      unsigned flags)
{
	/* The kernel's splice of no bytes returns 0 before it looks at
	 * anything: so does ours (a moved socket's waited for data, or
	 * failed with EAGAIN; t_shim_flags splice_zero). */
	if (!len)
		return REAL(splice)(in, in_off, out, out_off, len, flags);
	unsigned mark = 0;
	struct tsock *t = in_off ? NULL : shim_hold(in, &mark);
	ssize_t n;

	if (t) {
		int wr = shim_writable_flags(out);
		n = wr < 0 ? shim_err(wr) : shim_splice_out(t, in, out, len, flags);
	} else {
		t = out_off ? NULL : shim_hold(out, &mark);
		n = t ? shim_splice_in(t, out, in, len, flags)
		      : REAL(splice)(in, in_off, out, out_off, len, flags);
	}
	shim_release(t, mark);
	return n;
}

/* --- Waiting --------------------------------------------------------------- */

/* Does the set name a moved socket, one that may move while the kernel
 * waits, or an epoll set that holds tracked ones? */
static int any_ours(const struct pollfd *fds, nfds_t n)
{
	for (nfds_t i = 0; i < n; i++) {
		if (!shim_has(fds[i].fd)) {
			if (shim_epoll_ours(fds[i].fd))
				return 1;
			continue;
		}
		struct tsock *t = shim_get(fds[i].fd);
		int m = t && (shim_moved(t) || shim_may_move(t));
		shim_put(t);
		if (m)
			return 1;
	}
	return 0;
}

/* glibc declares poll's and ppoll's array write-only; it is read too. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

static int do_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	if (!any_ours(fds, n))
		return REAL(poll)(fds, n, timeout);
	struct timespec ts = { timeout / 1000, (timeout % 1000) * 1000000L };
	return shim_poll(fds, n, timeout < 0 ? NULL : &ts, NULL);
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	return do_poll(fds, n, timeout);
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return do_poll(fds, n, timeout);
}

/* A timeout the kernel refuses (EINVAL, having looked at nothing): its
 * call says so.  Ours took {0, -1} for no wait and {-1, 0} for none (a
 * helper's reproducers). */
static int bad_ts(const struct timespec *t)
{
	return t && (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1000000000);
}

static int do_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t,
		    const sigset_t *mask)
{
	if (bad_ts(t) || !any_ours(fds, n))
		return REAL(ppoll)(fds, n, t, mask);
	return shim_poll(fds, n, t, mask);
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t,
		 const sigset_t *mask)
{
	return do_ppoll(fds, n, t, mask);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t,
		       const sigset_t *mask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n)
		abort();
	return do_ppoll(fds, n, t, mask);
}

#pragma GCC diagnostic pop

static int any_in_sets(int nfds, fd_set *r, fd_set *w, fd_set *e)
{
	for (int fd = 0; fd < nfds; fd++) {
		if (!((r && shim_fd_isset(r, fd)) || (w && shim_fd_isset(w, fd)) ||
		      (e && shim_fd_isset(e, fd))))
			continue;
		struct pollfd p = { .fd = fd };
		if (any_ours(&p, 1))
			return 1;
	}
	return 0;
}

EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
	/* The kernel refuses a negative part, and carries whole seconds of
	 * tv_usec over. */
	if ((tv && (tv->tv_sec < 0 || tv->tv_usec < 0)) || !any_in_sets(nfds, r, w, e))
		return REAL(select)(nfds, r, w, e, tv);
	struct timespec ts = tv ? (struct timespec){ tv->tv_sec + tv->tv_usec / 1000000,
						     tv->tv_usec % 1000000 * 1000 }
				: (struct timespec){ 0, 0 };
	int64_t end = shunt_now_ns() + (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	int rc = shim_select(nfds, r, w, e, tv ? &ts : NULL, NULL);
	/* Linux's select says how much of the timeout is left, as glibc's. */
	if (tv && (rc >= 0 || errno == EINTR)) {
		int64_t left = SHUNT_MAX(end - shunt_now_ns(), (int64_t)0);
		*tv = (struct timeval){ left / 1000000000, left % 1000000000 / 1000 };
	}
	return rc;
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t,
		   const sigset_t *mask)
{
	if (bad_ts(t) || !any_in_sets(nfds, r, w, e))
		return REAL(pselect)(nfds, r, w, e, t, mask);
	return shim_select(nfds, r, w, e, t, mask);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	return shim_epoll_ctl(epfd, op, fd, ev);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
	return shim_epoll_wait(epfd, ev, max, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout,
		       const sigset_t *mask)
{
	return shim_epoll_wait(epfd, ev, max, timeout < 0 ? -1 : (int64_t)timeout * 1000000, mask);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
			const struct timespec *t, const sigset_t *mask)
{
	if (!REAL(epoll_pwait2))
		return (int)shim_err(-ENOSYS);
	if (bad_ts(t))
		return REAL(epoll_pwait2)(epfd, ev, max, t, mask);
	return shim_epoll_wait(epfd, ev, max,
			       t ? (int64_t)t->tv_sec * 1000000000 + t->tv_nsec : -1, mask);
}

/* --- exec and spawn ------------------------------------------------------------ */

extern char **environ;

/* An exec that returned (it failed): the environment prepared for it goes,
 * and the program sees the exec's errno. */
static int exec_failed(int rc, char **env, char *const envp[])
{
	int err = errno;

	shim_exec_done(env, envp);
	errno = err;
	return rc;
}

/* An exec's way back to TCP takes each direction's lock (a spawn's too):
 * not one a call this thread jumped out of still holds (fdtab.c).  Looked for here, in
 * the wrapper's first frames: the frame compared is this one. */
static void exec_reap(void)
{
	if (!shim_in_vfork_child())
		shim_calls_reap();
}

static int do_execve(const char *path, char *const argv[], char *const envp[])
{
	exec_reap();
	char **env = shim_exec_prepare(envp, shim_image_look(AT_FDCWD, path, 0), 1);

	return exec_failed(REAL(execve)(path, argv, env), env, envp);
}

static int do_execvpe(const char *file, char *const argv[], char *const envp[])
{
	exec_reap();
	char **env = shim_exec_prepare(envp, shim_image_look_search(file), 1);

	return exec_failed(REAL(execvpe)(file, argv, env), env, envp);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	exec_reap();
	char **env = shim_exec_prepare(envp, shim_image_look(fd, "", AT_EMPTY_PATH), 1);

	return exec_failed(REAL(fexecve)(fd, argv, env), env, envp);
}

/* glibc 2.34 and later; the image it runs is known by a directory and a
 * name, or an fd (AT_EMPTY_PATH), so it is not looked at, as fexecve's. */
EXPORT int execveat(int dir, const char *path, char *const argv[], char *const envp[], int flags)
{
	static int (*real)(int, const char *, char *const[], char *const[], int);

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "execveat");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	exec_reap();
	char **env = shim_exec_prepare(envp, shim_image_look(dir, path, flags), 1);
	return exec_failed(real(dir, path, argv, env, flags), env, envp);
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	return do_execve(path, argv, envp);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	return do_execvpe(file, argv, envp);
}

EXPORT int execv(const char *path, char *const argv[])
{
	return do_execve(path, argv, environ);
}

EXPORT int execvp(const char *file, char *const argv[])
{
	return do_execvpe(file, argv, environ);
}

/* execl, execlp, execle: the list as a vector (on the stack: a vfork
 * child must not take its parent's heap), and for execle the environment
 * that follows the list's NULL. */
static size_t list_len(const char *first, va_list ap)
{
	va_list c;
	size_t n = 0;

	va_copy(c, ap);
	if (first)
		for (n = 1; va_arg(c, char *); n++)
			;
	va_end(c);
	return n;
}

static void list_fill(char **argv, size_t n, const char *first, va_list *ap)
{
	argv[0] = (char *)first;
	for (size_t i = 1; i < n; i++)
		argv[i] = va_arg(*ap, char *);
	argv[n] = NULL;
}

EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	size_t n = list_len(arg, ap);
	char *argv[n + 1];
	list_fill(argv, n, arg, &ap);
	va_end(ap);
	return do_execve(path, argv, environ);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	size_t n = list_len(arg, ap);
	char *argv[n + 1];
	list_fill(argv, n, arg, &ap);
	va_end(ap);
	return do_execvpe(file, argv, environ);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	size_t n = list_len(arg, ap);
	char *argv[n + 1];
	list_fill(argv, n, arg, &ap);
	const char *volatile first = arg; /* declared non-null, may be NULL */
	if (first)
		(void)va_arg(ap, char *); /* the list's NULL */
	char **envp = va_arg(ap, char **);
	va_end(ap);
	return do_execve(path, argv, envp);
}

static int spawn(int search, pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
		 const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
	pid_t child = 0;
	short fl = 0;
	exec_reap(); /* its file actions' way back takes the locks too */
	if (at)
		posix_spawnattr_getflags(at, &fl);
	/* RESETIDS: the child takes our real ids for its effective ones. */
	int img = search ? shim_image_look_search(path) : shim_image_look(AT_FDCWD, path, 0);
	if ((fl & POSIX_SPAWN_RESETIDS) && (getuid() != geteuid() || getgid() != getegid()))
		img |= IMG_SECURE;
	shim_spawn_prepare(fa);
	char **env = shim_exec_prepare(envp ? envp : environ, img, 0);
	posix_spawn_file_actions_t mine;
	const posix_spawn_file_actions_t *acts = shim_spawn_actions(fa, env, envp ? envp : environ, &mine);
	shim_spawn_begin();
	int rc = search ? REAL(posix_spawnp)(&child, path, acts, at, argv, env)
			: REAL(posix_spawn)(&child, path, acts, at, argv, env);
	if (acts == &mine)
		shim_spawn_actions_done(&mine);

	/* The child holds what it inherits, shim or not. */
	shim_spawn_end(rc == 0 ? child : -1);
	shim_exec_done(env, envp ? envp : environ);
	if (rc == 0) {
		shim_spawn_done(fa, child); /* and what its file actions dup2 */
		if (pid)
			*pid = child;
	}
	return rc;
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
		       const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
	return spawn(0, pid, path, fa, at, argv, envp);
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			const posix_spawnattr_t *at, char *const argv[], char *const envp[])
{
	return spawn(1, pid, file, fa, at, argv, envp);
}

/* system() and popen() start their shell inside libc, where no wrapper
 * sees it (glibc's own spawn): what it inherits goes back to TCP first, as
 * for posix_spawn, and is held while system() waits.  A popen() child
 * lives on, and nobody tells us its pid: what it inherits stays on TCP. */
#define LIBC_FN(fn) \
	static __typeof__(fn) *real_##fn; \
	if (!real_##fn) \
		*(void **)&real_##fn = dlsym(RTLD_NEXT, #fn)

EXPORT int system(const char *cmd)
{
	LIBC_FN(system);
	if (!cmd || shim_in_vfork_child())
		return real_system(cmd);
	shim_spawn_prepare(NULL);
	shim_spawn_begin();
	int rc = real_system(cmd);
	int err = errno;
	shim_spawn_end(-1);
	errno = err;
	return rc;
}

EXPORT FILE *popen(const char *cmd, const char *type)
{
	LIBC_FN(popen);
	if (shim_in_vfork_child())
		return real_popen(cmd, type);
	shim_spawn_prepare(NULL);
	shim_spawn_begin();
	FILE *f = real_popen(cmd, type);
	int err = errno;
	shim_spawn_end(-1);
	if (f)
		shim_spawn_lost();
	errno = err;
	return f;
}

/* --- fork and its kin -------------------------------------------------------------
 * The child holds every socket of ours before the program hears of it
 * (proc.c).  vfork() is not wrapped: its child must return into the
 * caller's own frame; it joins the holders at exec. */

SHUNT_FORK_TEXT EXPORT pid_t fork(void)
{
	shim_fork_wrap();
	pid_t pid = REAL(fork)();
	int err = errno;

	shim_fork_unwrap(pid);
	errno = err;
	return pid;
}

/* glibc's fork without the atfork handlers, for async-signal contexts:
 * nothing here takes a lock. */
EXPORT pid_t _Fork(void)
{
	if (!REAL(_Fork))
		return (pid_t)shim_err(-ENOSYS);
	pid_t pid = REAL(_Fork)();
	int err = errno;

	if (pid > 0)
		shim_spawned(pid);
	errno = err;
	return pid;
}

/* Its parent returns only if the fork failed (it exits otherwise). */
EXPORT int daemon(int nochdir, int noclose)
{
	int me = shim_pid();

	shim_fork_wrap();
	int rc = REAL(daemon)(nochdir, noclose);
	int err = errno;

	shim_fork_unwrap(shim_pid() == me ? -1 : 0);
	errno = err;
	return rc;
}

/* A fork's child starts here, on its own stack, in its copy of our
 * memory (the caller's frame, where `k` lives, is copied too). */
struct kin_start {
	int (*fn)(void *);
	void *arg;
};

static int kin_begins(void *p)
{
	struct kin_start k = *(struct kin_start *)p;

	fork_end(0, 1);
	return k.fn(k.arg);
}

/* A child with a copy of our memory and fd table is a fork's (above); one
 * that shares only the memory (posix_spawn's) holds our sockets from its
 * exec on; one that shares the table (CLONE_FILES: threads too) is us. */
EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	va_list ap;

	/* Passed on as they came: the kernel looks at each only under the
	 * flag that names it (what a caller left out is never read). */
	va_start(ap, arg);
	pid_t *ptid = va_arg(ap, pid_t *);
	void *tls = va_arg(ap, void *);
	pid_t *ctid = va_arg(ap, pid_t *);
	va_end(ap);
	files_not_memory((unsigned long)flags);
	if (forklike((unsigned long)flags) && fn && !atomic_load(&shim_hands_off) &&
	    !shim_in_vfork_child()) {
		struct kin_start k = { fn, arg };
		fork_begin((unsigned long)flags);
		return (int)fork_end(REAL(clone)(kin_begins, stack, flags, &k, ptid, tls, ctid), 0);
	}
	int rc = REAL(clone)(fn, stack, flags, arg, ptid, tls, ctid);
	int err = errno;

	if (rc > 0 && !(flags & CLONE_FILES))
		shim_spawned(rc);
	errno = err;
	return rc;
}

/* --- glibc's public second names ---------------------------------------------
 * glibc exports some of these calls under a second name as well (__read,
 * __write, __close ...: GLIBC_2.2.5, for programs of old and a few
 * runtimes): a call by that name went past the library, a read of a moved
 * socket took the peer's doorbell byte for data and a dup2 left our table
 * naming the socket at a pipe's number (a helper's reproducers, 12-07).
 * Each is the wrapper itself under the other name. */
/* glibc's prototypes carry attributes (nonnull, leaf, and with
 * _FORTIFY_SOURCE its inline wrappers' own) that an alias need not repeat. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define SECOND_NAME(second, name, ret, args) EXPORT ret second args __attribute__((alias(#name)))
SECOND_NAME(__read, read, ssize_t, (int, void *, size_t));
SECOND_NAME(__write, write, ssize_t, (int, const void *, size_t));
SECOND_NAME(__send, send, ssize_t, (int, const void *, size_t, int));
SECOND_NAME(__close, close, int, (int));
SECOND_NAME(__dup2, dup2, int, (int, int));
SECOND_NAME(__fcntl, fcntl, int, (int, int, ...));
SECOND_NAME(__poll, poll, int, (struct pollfd *, nfds_t, int));
SECOND_NAME(__select, select, int, (int, fd_set *, fd_set *, fd_set *, struct timeval *));
SECOND_NAME(__connect, connect, int, (int, const struct sockaddr *, socklen_t));
SECOND_NAME(__pipe, pipe, int, (int[2]));
SECOND_NAME(__fork, fork, pid_t, (void));
SECOND_NAME(__clone, clone, int, (int (*)(void *), void *, int, void *, ...));
SECOND_NAME(__open, open, int, (const char *, int, ...));
SECOND_NAME(__open64, open64, int, (const char *, int, ...));
#pragma GCC diagnostic pop
