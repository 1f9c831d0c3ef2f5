/*
 * sys.h - the library's private way into the kernel.
 *
 * The preload library exports close, send, poll and the rest: if its own
 * code called them by name, the dynamic linker would bind those calls to
 * its own wrappers, and every doorbell ring or internal close would run the
 * shim's bookkeeping (and could deadlock on its locks).  So the library
 * never calls a libc function it could be wrapping: it makes the system
 * call itself, here.  Each sys_* returns the result or a negative errno and
 * never touches errno, which belongs to the program.
 *
 * Calls the kernel restarts or not as for any program (EINTR passes up).
 * Nothing here is a cancellation point, on purpose: a thread cancelled in
 * the library would leave its locks held.
 */
#ifndef SHUNT_SYS_H
#define SHUNT_SYS_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>

#if defined(__x86_64__)
static inline long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			     : "rcx", "r11", "memory");
	return ret;
}
#elif defined(__aarch64__)
static inline long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ __volatile__("svc 0"
			     : "+r"(x0)
			     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			     : "memory", "cc");
	return x0;
}
#else
#include <errno.h>
#include <unistd.h>
/* Elsewhere libc's syscall(), saving errno around it: slower, same rules. */
static inline long sys_call6(long n, long a, long b, long c, long d, long e, long f)
{
	int saved = errno;
	long r = syscall(n, a, b, c, d, e, f);

	if (r == -1) {
		r = -errno;
	}
	errno = saved;
	return r;
}
#endif

#define SYS_(n, a, b, c, d, e, f) \
	sys_call6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

struct msghdr;
struct sockaddr;
struct pollfd;
struct timespec;
struct epoll_event;
struct stat;

static inline long sys_read(int fd, void *buf, size_t n) { return SYS_(SYS_read, fd, buf, n, 0, 0, 0); }
static inline long sys_write(int fd, const void *buf, size_t n) { return SYS_(SYS_write, fd, buf, n, 0, 0, 0); }
static inline long sys_pread(int fd, void *buf, size_t n, off_t off) { return SYS_(SYS_pread64, fd, buf, n, off, 0, 0); }
static inline long sys_pwrite(int fd, const void *buf, size_t n, off_t off) { return SYS_(SYS_pwrite64, fd, buf, n, off, 0, 0); }
static inline long sys_lseek(int fd, off_t off, int whence) { return SYS_(SYS_lseek, fd, off, whence, 0, 0, 0); }
static inline long sys_getxattr(const char *path, const char *name, void *v, size_t n) { return SYS_(SYS_getxattr, path, name, v, n, 0, 0); }
static inline int sys_close(int fd) { return (int)SYS_(SYS_close, fd, 0, 0, 0, 0, 0); }
static inline int sys_openat(int dir, const char *path, int flags, int mode) { return (int)SYS_(SYS_openat, dir, path, flags, mode, 0, 0); }
static inline int sys_fcntl(int fd, int cmd, long arg) { return (int)SYS_(SYS_fcntl, fd, cmd, arg, 0, 0, 0); }
static inline int sys_ioctl(int fd, unsigned long req, void *arg) { return (int)SYS_(SYS_ioctl, fd, req, arg, 0, 0, 0); }
static inline int sys_prctl(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d) { return (int)SYS_(SYS_prctl, op, a, b, c, d, 0); }
static inline int sys_dup3(int fd, int to, int flags) { return (int)SYS_(SYS_dup3, fd, to, flags, 0, 0, 0); }
static inline int sys_fstat(int fd, struct stat *st) { return (int)SYS_(SYS_fstat, fd, st, 0, 0, 0, 0); }
static inline int sys_prlimit(int pid, int res, const void *nw, void *old) { return (int)SYS_(SYS_prlimit64, pid, res, nw, old, 0, 0); }
#ifdef SYS_newfstatat
static inline int sys_fstatat(int dir, const char *path, struct stat *st, int flags) { return (int)SYS_(SYS_newfstatat, dir, path, st, flags, 0, 0); }
#else
static inline int sys_fstatat(int dir, const char *path, struct stat *st, int flags) { return (int)SYS_(SYS_fstatat64, dir, path, st, flags, 0, 0); }
#endif
static inline int sys_ftruncate(int fd, off_t len) { return (int)SYS_(SYS_ftruncate, fd, len, 0, 0, 0, 0); }
static inline int sys_memfd_create(const char *name, unsigned flags) { return (int)SYS_(SYS_memfd_create, name, flags, 0, 0, 0, 0); }
static inline long sys_readlinkat(int dir, const char *path, char *buf, size_t n) { return SYS_(SYS_readlinkat, dir, path, buf, n, 0, 0); }
static inline long sys_getdents64(int fd, void *buf, size_t n) { return SYS_(SYS_getdents64, fd, buf, n, 0, 0, 0); }
static inline int sys_unlinkat(int dir, const char *path, int flags) { return (int)SYS_(SYS_unlinkat, dir, path, flags, 0, 0, 0); }
static inline int sys_mkdirat(int dir, const char *path, int mode) { return (int)SYS_(SYS_mkdirat, dir, path, mode, 0, 0, 0); }

#if defined(__SANITIZE_THREAD__)
/* TSan must see mappings come and go, or memory a new mapping reuses
 * carries the old one's accesses (false races): its interceptors then. */
#include <errno.h>
#include <sys/mman.h>
static inline long sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(addr, len, prot, flags, fd, off);
	return p == MAP_FAILED ? -errno : (long)p;
}
static inline int sys_munmap(void *addr, size_t len) { return munmap(addr, len) < 0 ? -errno : 0; }
#else
static inline long sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return SYS_(SYS_mmap, addr, len, prot, flags, fd, off);
}
static inline int sys_munmap(void *addr, size_t len) { return (int)SYS_(SYS_munmap, addr, len, 0, 0, 0, 0); }
#endif

static inline int sys_socket(int dom, int type, int proto) { return (int)SYS_(SYS_socket, dom, type, proto, 0, 0, 0); }
static inline int sys_socketpair(int dom, int type, int proto, int sv[2]) { return (int)SYS_(SYS_socketpair, dom, type, proto, sv, 0, 0); }
static inline int sys_bind(int fd, const struct sockaddr *a, unsigned len) { return (int)SYS_(SYS_bind, fd, a, len, 0, 0, 0); }
static inline int sys_listen(int fd, int backlog) { return (int)SYS_(SYS_listen, fd, backlog, 0, 0, 0, 0); }
static inline int sys_connect(int fd, const struct sockaddr *a, unsigned len) { return (int)SYS_(SYS_connect, fd, a, len, 0, 0, 0); }
static inline int sys_accept4(int fd, struct sockaddr *a, unsigned *len, int flags) { return (int)SYS_(SYS_accept4, fd, a, len, flags, 0, 0); }
static inline int sys_shutdown(int fd, int how) { return (int)SYS_(SYS_shutdown, fd, how, 0, 0, 0, 0); }
static inline int sys_getsockopt(int fd, int lvl, int opt, void *v, unsigned *len) { return (int)SYS_(SYS_getsockopt, fd, lvl, opt, v, len, 0); }
static inline int sys_setsockopt(int fd, int lvl, int opt, const void *v, unsigned len) { return (int)SYS_(SYS_setsockopt, fd, lvl, opt, v, len, 0); }
static inline int sys_getsockname(int fd, struct sockaddr *a, unsigned *len) { return (int)SYS_(SYS_getsockname, fd, a, len, 0, 0, 0); }
static inline int sys_getpeername(int fd, struct sockaddr *a, unsigned *len) { return (int)SYS_(SYS_getpeername, fd, a, len, 0, 0, 0); }
static inline long sys_sendto(int fd, const void *b, size_t n, int fl, const struct sockaddr *a, unsigned al) { return SYS_(SYS_sendto, fd, b, n, fl, a, al); }
static inline long sys_recvfrom(int fd, void *b, size_t n, int fl, struct sockaddr *a, unsigned *al) { return SYS_(SYS_recvfrom, fd, b, n, fl, a, al); }
static inline long sys_send(int fd, const void *b, size_t n, int fl) { return sys_sendto(fd, b, n, fl, NULL, 0); }
static inline long sys_recv(int fd, void *b, size_t n, int fl) { return sys_recvfrom(fd, b, n, fl, NULL, NULL); }
static inline long sys_sendmsg(int fd, const struct msghdr *m, int fl) { return SYS_(SYS_sendmsg, fd, m, fl, 0, 0, 0); }
static inline long sys_recvmsg(int fd, struct msghdr *m, int fl) { return SYS_(SYS_recvmsg, fd, m, fl, 0, 0, 0); }

/* ppoll's last argument is the size of the kernel's sigset (8 bytes). */
static inline int sys_ppoll(struct pollfd *p, unsigned long n, const struct timespec *t)
{
	return (int)SYS_(SYS_ppoll, p, n, t, 0, 8, 0);
}
static inline int sys_epoll_create1(int flags) { return (int)SYS_(SYS_epoll_create1, flags, 0, 0, 0, 0, 0); }
static inline int sys_epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) { return (int)SYS_(SYS_epoll_ctl, ep, op, fd, ev, 0, 0); }
static inline int sys_epoll_wait(int ep, struct epoll_event *ev, int n, int ms) { return (int)SYS_(SYS_epoll_pwait, ep, ev, n, ms, 0, 8); }

static inline int sys_getpid(void) { return (int)SYS_(SYS_getpid, 0, 0, 0, 0, 0, 0); }
static inline unsigned sys_geteuid(void) { return (unsigned)SYS_(SYS_geteuid, 0, 0, 0, 0, 0, 0); }
static inline int sys_gettid(void) { return (int)SYS_(SYS_gettid, 0, 0, 0, 0, 0, 0); }
static inline int sys_kill(int pid, int sig) { return (int)SYS_(SYS_kill, pid, sig, 0, 0, 0, 0); }
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424 /* Linux 5.1, one number on every architecture */
#endif
static inline int sys_pidfd_send_signal(int pidfd, int sig) { return (int)SYS_(SYS_pidfd_send_signal, pidfd, sig, 0, 0, 0, 0); }
static inline int sys_sched_yield(void) { return (int)SYS_(SYS_sched_yield, 0, 0, 0, 0, 0, 0); }
static inline long sys_getrandom(void *buf, size_t n, unsigned flags) { return SYS_(SYS_getrandom, buf, n, flags, 0, 0, 0); }

/* Futexes on shared memory (not FUTEX_PRIVATE: other processes wait too). */
static inline int sys_futex_wait(_Atomic uint32_t *w, uint32_t val, const struct timespec *t)
{
	return (int)SYS_(SYS_futex, w, 0 /* FUTEX_WAIT */, val, t, 0, 0);
}
static inline int sys_futex_wake(_Atomic uint32_t *w, int n)
{
	return (int)SYS_(SYS_futex, w, 1 /* FUTEX_WAKE */, n, 0, 0, 0);
}

/* A small file of the kernel's (/proc, /sys), NUL-terminated in buf:
 * the bytes read (> 0), or <= 0 (0: empty, or a negative errno). */
static inline long sys_read_text(const char *path, char *buf, size_t len)
{
	int fd = sys_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
	long n = fd < 0 ? fd : sys_read(fd, buf, len - 1);

	if (fd >= 0)
		sys_close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return n;
}

#endif /* SHUNT_SYS_H */
