/*
 * shim.h - the LD_PRELOAD socket shim: what its files share.
 *
 * The program keeps its own TCP socket fds: the kernel made every
 * connection, and getsockname, setsockopt, fcntl and fd numbering stay the
 * kernel's.  An fd whose connection was upgraded has a `struct shim_sock` in
 * a table indexed by fd, and the data calls on it go to a shunt connection
 * instead.  Everything the shim does through the core goes through the small
 * API of conn.h and rendezvous.h; the core knows nothing of the shim.
 *
 * Layers:  preload.c (the exported libc wrappers, thin)
 *          io.c      (data calls on an upgraded fd, POSIX semantics)
 *          wait.c    (poll, select, epoll over upgraded and plain fds)
 *          upgrade.c (listen/connect/accept: the offer and its proof)
 *          inherit.c (exec: upgraded fds survive into the new image)
 *          fdtab.c   (the table, references, dup and close)
 *          real.c    (the libc functions underneath)
 */
#ifndef SHUNT_SHIM_H
#define SHUNT_SHIM_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

struct shunt_conn;

/* --- The libc functions underneath (real.c) ------------------------------ */

struct shim_real {
	int (*socket)(int, int, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	int (*listen)(int, int);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*close)(int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	int (*shutdown)(int, int);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
	int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
		       const sigset_t *);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
};

extern struct shim_real shim_real;
/* Resolve the real functions; idempotent, safe before constructors run. */
void shim_real_init(void);
#define REAL(fn) (shim_real.fn ? shim_real.fn : (shim_real_init(), shim_real.fn))

/* --- Sockets and the fd table (fdtab.c) ---------------------------------- */

enum shim_kind { SHIM_CONN = 1, SHIM_LISTENER };
enum { SHIM_SETTLED = 0, SHIM_PENDING, SHIM_DECLINED };

#define SHIM_MAX_KEYS 8 /* rendezvous paths one listener publishes */

struct shim_stash; /* offers taken but not yet matched (upgrade.c) */
struct shim_link;  /* a link to another process (link.c) */

#define SHIM_LINK_SLOTS 64  /* reusable segments per link */
#define SHIM_LISTEN_LINKS 64 /* links a listener keeps */

struct shim_sock {
	_Atomic int refs;      /* fds of this process that refer to it */
	int kind;              /* enum shim_kind */
	/* SHIM_CONN */
	struct shunt_conn *c;
	int memfd;             /* kept for exec and for `shunt stat` */
	int side;              /* 0 connected, 1 accepted */
	int shared;            /* another process may hold it (fork, exec) */
	struct shim_link *link; /* the link whose slot the segment is, or NULL */
	uint32_t slot;
	int probing;           /* its offer asked for the link (link.c) */
	_Atomic int pending;   /* SHIM_PENDING until the server's decision is
	                        * known (connect does not wait for it) */
	int64_t deadline_ns;   /* while pending: when to stop waiting */
	_Atomic int reset_told; /* ECONNRESET was returned: from now on, EOF */
	_Atomic int64_t alive_ns; /* when a send last looked for a hang-up */
	_Atomic int nonblock;  /* O_NONBLOCK of the open file description */
	_Atomic int64_t rcvtimeo_us, sndtimeo_us; /* SO_RCVTIMEO/SNDTIMEO, 0 none */
	_Atomic uint32_t gen;  /* moves on the program's I/O and on doorbell
	                        * rings: epoll re-reads the rings only then */
	pthread_mutex_t rx_mu; /* one receiving thread at a time (core rule) */
	pthread_mutex_t tx_mu; /* one sending thread at a time */
	/* SHIM_LISTENER */
	int rv[SHIM_MAX_KEYS]; /* rendezvous UNIX listeners, -1 unused */
	char *paths[SHIM_MAX_KEYS];
	pid_t owner;           /* the process that published (and unlinks) */
	uint64_t netns_cookie; /* of its namespace, 0 if unknown */
	struct sockaddr_storage bound; /* its address, unless a wildcard */
	int bound_known;
	int queue[2];          /* offers in passing between accepting processes */
	_Atomic int *in_hand;  /* shared with them: how many hold offers now */
	struct shim_stash *stash;
	struct shim_link *links[SHIM_LISTEN_LINKS]; /* kept from clients */
	int nlinks;
	pthread_mutex_t mu;    /* guards stash and links */
};

/* Is the shim on at all?  Off when SHUNT_DISABLE=1 or the config was bad. */
int shim_enabled(void);

/* The sock of fd with a reference taken, or NULL (the fast path: one load).
 * A connection whose upgrade is still undecided is settled first (waiting
 * for the decision); one the server declined leaves the table, and NULL
 * comes back: the fd is plain TCP.  Release with shim_put(). */
struct shim_sock *shim_get(int fd);
void shim_put(struct shim_sock *s);
void shim_unset(int fd, struct shim_sock *s);
/* Close an unlinked connection's end: as TCP would when no other process
 * holds it, else only our copy. */
void shim_close_conn(struct shim_sock *s);
/* Does fd have a sock?  A peek with no reference, for the wait calls. */
int shim_has(int fd);

struct shim_sock *shim_sock_new(int kind);
/* Upgraded connections this process holds now. */
int shim_live_conns(void);
/* Put s in the table at fd (taking over the caller's reference). */
void shim_install(int fd, struct shim_sock *s);
/* fd was closed or replaced: drop its entry. */
void shim_forget(int fd);
/* newfd now refers to what oldfd does (dup, dup2, dup3, F_DUPFD). */
void shim_dup(int oldfd, int newfd);
/* Settle every undecided connection (before fork and exec). */
void shim_settle_all(void);
/* After fork: every connection may now be held by two processes; the
 * child also lets go of the links (link.c), which are the parent's. */
void shim_mark_shared(void);
void shim_forked_child(void);
/* Visit every fd with a sock (for exec). */
void shim_each(void (*fn)(int fd, struct shim_sock *s, void *arg), void *arg);

/* Wait calls learn that an upgraded fd was closed (it leaves every epoll
 * set), or that a plain fd was (it may be an epoll set with upgraded fds). */
void shim_wait_forget(int fd);
void shim_wait_forget_set(int fd);

/* For tests: 1 if fd's connection runs over shared memory, else 0. */
int shunt__shim_is_accelerated(int fd);

/* --- Upgrade (upgrade.c) ------------------------------------------------- */

/* After a successful listen() on fd: publish its rendezvous sockets. */
void shim_on_listen(int fd);
/* connect() with the offer: returns what connect() returns, without
 * waiting for the decision, which the fd's first use waits for. */
int shim_connect(int fd, const struct sockaddr *addr, socklen_t len);
/* The wait for the decision (shim_get): s, or NULL (declined; the caller's
 * reference and fd's entry are dropped). */
struct shim_sock *shim_settle(int fd, struct shim_sock *s);
/* Free a connection closed before its decision was known. */
void shim_pending_free(struct shim_sock *s);
/* After accept() gave `fd` on listener l: upgrade it if an offer matches. */
void shim_on_accept(struct shim_sock *l, int fd, int flags, const struct sockaddr *peer);
void shim_listener_free(struct shim_sock *l);
/* In a child after fork(): let go of the parent's links. */
void shim_listener_forked(struct shim_sock *l);

/* --- Links (link.c) ------------------------------------------------------ */

#define SHIM_PATH_MAX 108 /* sun_path */

struct shunt_offer;

/* A connecting side's offer over a link (or a probe that asks for one). */
struct shim_link_use {
	struct shunt_conn *c;
	int memfd;
	struct shim_link *link; /* with a reference, for the connection */
	uint32_t slot;
	int probing;            /* the offer asked for the link */
};

/* Offer over a link to the first of paths that has one, reusing a parked
 * segment if one is ready, or else dial one and ask for a link.  -EBUSY:
 * offer the classic way (no link to be had now); other errors likewise. */
int shim_link_offer(char (*paths)[SHIM_PATH_MAX], int n, uint64_t cap, int proof,
		    struct shim_link_use *u);
/* The connecting side learnt the decision. */
void shim_link_decided(struct shim_link_use *u, int accepted);
/* A connection on slot `slot` of k ends here: with `keep` (the last close
 * anywhere) it is closed as TCP would be and parked; otherwise freed.
 * Drops the connection's reference on k. */
void shim_link_release(struct shim_link *k, uint32_t slot, struct shunt_conn *c,
		       int memfd, int keep);
/* The accepting side: keep a stream as a link (NULL without memory). */
struct shim_link *shim_link_adopt(int fd);
int shim_link_fd(struct shim_link *k);
/* Take slot o->slot for an offer that came over k: a new segment, or a
 * reused one (o->c NULL: filled in from the parked slot).  A reference on
 * k goes with it; shim_link_unclaim undoes it for an offer not accepted. */
int shim_link_claim(struct shim_link *k, struct shunt_offer *o);
void shim_link_unclaim(struct shim_link *k, uint32_t slot);
/* Close the stream and free the parked slots; drops the owner's reference. */
void shim_link_drop(struct shim_link *k);
void shim_link_put(struct shim_link *k);
/* For tests: drop this process's links to listeners, and the segments
 * parked on them, to count fds and mappings without the cache. */
void shunt__shim_drop_links(void);
/* In a child after fork(): the links are the parent's. */
void shim_link_forget_client(void);
void shim_link_forget(struct shim_link *k);

/* --- Data (io.c) -------------------------------------------------------- */

/* fd: the program's TCP socket, for bytes that bypassed us (io.c). */
ssize_t shim_recv(struct shim_sock *s, int fd, void *buf, size_t len, int flags);
ssize_t shim_send(struct shim_sock *s, const void *buf, size_t len, int flags);
ssize_t shim_recvv(struct shim_sock *s, int fd, const struct iovec *iov, int n, int flags);
ssize_t shim_sendv(struct shim_sock *s, const struct iovec *iov, int n, int flags);
ssize_t shim_sendfile(struct shim_sock *s, int in_fd, off_t *off, size_t count);
int shim_shutdown(struct shim_sock *s, int how);
int shim_fionread(struct shim_sock *s, int *out);
void shim_setsockopt(struct shim_sock *s, int level, int opt, const void *val,
		     socklen_t len);

/* --- Waiting (wait.c) --------------------------------------------------- */

int shim_poll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
	      const sigset_t *mask);
int shim_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
		const struct timespec *timeout, const sigset_t *mask);
int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout_ms,
		    const sigset_t *mask);
/* Does this epoll fd have upgraded fds in it? */
int shim_epoll_has(int epfd);

/* --- Exec (inherit.c) ---------------------------------------------------- */

#define SHIM_INHERIT_ENV "SHUNT_INHERIT"
/* Before exec: let upgraded fds survive; returns the environment to pass
 * (envp itself, or a copy with SHUNT_INHERIT set, freed by shim_exec_done). */
char **shim_exec_prepare(char *const envp[]);
void shim_exec_done(char **env, char *const envp[]);
/* At start-up: adopt the fds a parent image left in SHUNT_INHERIT. */
void shim_inherit(void);

/* --- Errors -------------------------------------------------------------- */

/* Set errno from a negative errno and return -1. */
static inline long shim_err(long rc)
{
	if (rc >= 0)
		return rc;
	errno = (int)-rc;
	return -1;
}

#endif /* SHUNT_SHIM_H */
