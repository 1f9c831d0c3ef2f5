/*
 * rendezvous.c - the native API's listen, accept and connect by name.
 *
 * The connecting end creates the segment and a socket pair, and passes the
 * segment and one end of the pair over the rendezvous UNIX stream with
 * SCM_RIGHTS (the hello).  The accepting end checks the peer's credentials
 * and the hello.  Nothing is answered: the two sockets that now join the
 * ends are the doorbells, the rendezvous stream for READ waits and the pair
 * for WRITE waits.  When a process dies the kernel closes them, which is
 * how the other end learns of the death within a poll().  Message formats
 * are in docs/design.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "fdmsg.h"
#include "internal.h"
#include "medium.h"
#include "native.h"
#include "sys.h"

#include <shunt.h>

#define HELLO_TIMEOUT_NS (1000ll * 1000000) /* a connector sends its hello right after
                                              * connect: one that has not by then is dropped */
#define PENDING_MAX 64

/* A connection accepted from the kernel whose hello has not come yet. */
struct pending {
	int s;
	int64_t until;
};

/*
 * No accept ever waits for one connector: a stream whose hello is not in
 * yet waits among the pending (the oldest goes when they are full), and
 * whichever hello comes first is answered.  So the fd a program polls is
 * an epoll set of the listening socket and the pending streams: readable
 * when a connection waits in the kernel or a hello came.
 */
struct shunt_listener {
	int fd;                 /* the listening socket */
	int ep;                 /* shunt_listener_fd(): fd and the pending */
	struct sockaddr_un addr;
	struct pending pend[PENDING_MAX];
	int npend;
	int pid;                /* the process whose set ep is (see own_set) */
	int owner;              /* the process that listened: its name to unlink */
};

/* --- Names ------------------------------------------------------------ */

static int valid_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64 || name[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = name[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

/*
 * A name with '/' is a socket path; a plain name lives in the runtime dir,
 * which a listener creates or checks.  A connector needs neither: it checks
 * the credentials of whatever listens there.
 */
static int resolve(const char *name, struct sockaddr_un *addr, int listener)
{
	int n;

	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (!name)
		return -EINVAL;
	if (strchr(name, '/')) {
		n = snprintf(addr->sun_path, sizeof(addr->sun_path), "%s", name);
	} else {
		if (!valid_name(name))
			return -EINVAL;
		const char *dir = shunt__config()->dir;
		int rc = listener ? shunt__ensure_dir(dir) : 0;
		if (rc < 0)
			return rc;
		n = snprintf(addr->sun_path, sizeof(addr->sun_path), "%s/%s", dir, name);
	}
	return n > 0 && n < (int)sizeof(addr->sun_path) ? 0 : -ENAMETOOLONG;
}

/* Policy: a peer of our own effective user, or one the config allows. */
static int peer_allowed(int sock, const char *who)
{
	struct ucred cr;
	int rc = shunt__peer_cred(sock, &cr);

	if (rc == -EACCES)
		log_warn("refused %s pid %d: uid %u is neither ours (%u) nor allowed",
			 who, (int)cr.pid, (unsigned)cr.uid, (unsigned)geteuid());
	return rc;
}

/* --- Connecting ------------------------------------------------------- */

static int open_stream(const struct sockaddr_un *addr)
{
	int s = shunt__hide_fd(sys_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));

	if (s < 0)
		return s;
	int rc = sys_connect(s, (const struct sockaddr *)addr, sizeof(*addr));
	if (rc < 0) {
		sys_close(s);
		return rc;
	}
	return s;
}

static int pick_spin(const struct shunt_opts *o)
{
	if (!o || o->spin_us == 0)
		return shunt__config()->spin_us;
	return o->spin_us > 0 ? o->spin_us : 0;
}

/* Create the segment and the WRITE doorbell pair, send the hello, and
 * build our end; the stream s becomes the READ doorbell (owned from here). */
static int offer(int s, uint64_t cap, int spin_us, struct shunt_conn **out)
{
	struct shunt_seg seg = { 0 };
	int64_t memfd = -1;
	int wr[2] = { -1, -1 };
	int rc = shunt_medium_local.create(&seg, cap, 0, &memfd);

	if (rc == 0)
		rc = sys_socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, wr);
	if (rc == 0) {
		wr[0] = shunt__hide_fd(wr[0]);
		struct shunt_hello h = {
			.magic = SHUNT_HELLO_MAGIC, .version = SHUNT_HELLO_VERSION, .ring_size = cap,
		};
		rc = shunt_fdmsg_send(s, &h, sizeof(h), (int[]){ (int)memfd, wr[1] }, 2, 0);
	}
	shunt_close_fds((int[]){ wr[1], (int)memfd }, 2);
	if (rc == 0)
		return shunt__conn_new(out, 0, &seg, s, wr[0], spin_us);
	shunt_close_fds((int[]){ wr[0], s }, 2);
	shunt_unmap(&seg);
	return rc;
}

SHUNT_EXPORT int shunt_connect(const char *name, const struct shunt_opts *opts,
			       struct shunt_conn **out)
{
	struct sockaddr_un addr;

	if (opts && opts->ring_size && shunt_seg_check_size(opts->ring_size) < 0)
		return -EINVAL;
	int rc = resolve(name, &addr, 0);
	if (rc < 0)
		return rc;
	int s = open_stream(&addr);
	if (s < 0)
		return s;
	rc = peer_allowed(s, "listener");
	if (rc < 0) {
		sys_close(s);
		return rc;
	}
	uint64_t cap = opts && opts->ring_size ? opts->ring_size : shunt__config()->ring_size;
	return offer(s, cap, pick_spin(opts), out);
}

/* --- Listening and accepting ---------------------------------------- */

/* A socket file left by a dead listener refuses connections: reuse it. */
static int clear_stale(const struct sockaddr_un *addr)
{
	struct stat st;

	if (lstat(addr->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EADDRINUSE;
	int s = open_stream(addr);
	if (s >= 0) {
		sys_close(s);
		return -EADDRINUSE;
	}
	if (s != -ECONNREFUSED)
		return s;
	int rc = sys_unlinkat(AT_FDCWD, addr->sun_path, 0);
	return rc < 0 && rc != -ENOENT ? rc : 0;
}

static int listen_at(const struct sockaddr_un *addr)
{
	int rc = clear_stale(addr);

	if (rc < 0)
		return rc;
	int fd = shunt__hide_fd(sys_socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (fd < 0)
		return fd;
	rc = sys_bind(fd, (const struct sockaddr *)addr, sizeof(*addr));
	if (rc == 0)
		rc = sys_listen(fd, SOMAXCONN);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	return fd;
}

static int watch(int ep, int fd, int op)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	return sys_epoll_ctl(ep, op, fd, &ev);
}

SHUNT_EXPORT int shunt_listen(const char *name, struct shunt_listener **out)
{
	struct shunt_listener *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return -ENOMEM;
	l->fd = l->ep = -1;
	rc = resolve(name, &l->addr, 1);
	if (rc == 0)
		rc = l->fd = listen_at(&l->addr);
	if (rc >= 0)
		rc = l->ep = shunt__hide_fd(sys_epoll_create1(EPOLL_CLOEXEC));
	if (rc >= 0)
		rc = watch(l->ep, l->fd, EPOLL_CTL_ADD);
	l->pid = l->owner = (int)sys_getpid();
	if (rc < 0) {
		if (l->fd >= 0) {
			sys_unlinkat(AT_FDCWD, l->addr.sun_path, 0);
			shunt_close_fds((int[]){ l->fd, l->ep }, 2);
		}
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

SHUNT_EXPORT int shunt_listener_fd(const struct shunt_listener *l)
{
	return l->ep;
}

/* The pending stay in the order they came: connections are answered in
 * the kernel's order when their hellos are in. */
static void pend_remove(struct shunt_listener *l, int i)
{
	memmove(&l->pend[i], &l->pend[i + 1], sizeof(l->pend[0]) * (size_t)(l->npend - i - 1));
	l->npend--;
}

/* Drop pending i (its stream closed: the connector sees it). */
static void pend_drop(struct shunt_listener *l, int i)
{
	sys_close(l->pend[i].s);
	pend_remove(l, i);
}

SHUNT_EXPORT void shunt_listener_close(struct shunt_listener *l)
{
	if (!l)
		return;
	while (l->npend)
		pend_drop(l, 0);
	/* A forked child's copy goes without the name: its parent may still
	 * listen there (a pre-forked worker that ends). */
	if (l->owner == (int)sys_getpid())
		sys_unlinkat(AT_FDCWD, l->addr.sun_path, 0);
	shunt_close_fds((int[]){ l->fd, l->ep }, 2);
	free(l);
}

/* A peer-supplied doorbell must be a UNIX stream socket. */
static int check_bell(int fd)
{
	int type = 0, domain = 0;
	unsigned len = sizeof(int);

	if (sys_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
	    type != SOCK_STREAM || domain != AF_UNIX) {
		log_warn("peer doorbell is not a UNIX stream socket");
		return -EPROTO;
	}
	return 0;
}

/* Read the hello on a stream accepted and build the end.  Owns s, unless
 * the hello is not in yet (-EAGAIN). */
static int answer(int s, struct shunt_conn **out)
{
	struct shunt_hello h;
	struct shunt_seg seg = { 0 };
	int fds[SHUNT_FDMSG_MAX], n = 0;
	int rc = shunt_fdmsg_recv(s, &h, sizeof(h), fds, 2, &n, MSG_DONTWAIT);

	if (rc == -EAGAIN)
		return rc; /* not yet: s stays pending */
	/* Its rings are our memory too, pinned as we send: none bigger than
	 * ours (a connector could ask 1 GiB a connection). */
	if (rc == 0 && (n != 2 || h.magic != SHUNT_HELLO_MAGIC ||
			h.version != SHUNT_HELLO_VERSION || h.flags != 0 ||
			h.ring_size > shunt__config()->ring_size)) {
		shunt_close_untrusted(fds, n);
		rc = -EPROTO;
	}
	if (rc == 0) {
		rc = check_bell(fds[1]);
		if (rc == 0)
			rc = shunt_medium_local.attach(&seg, fds[0], h.ring_size, NULL);
		sys_close(fds[0]);
		if (rc < 0)
			sys_close(fds[1]);
	}
	if (rc < 0) {
		sys_close(s);
		return rc;
	}
	return shunt__conn_new(out, 1, &seg, s, fds[1], shunt__config()->spin_us);
}

/* Take what the kernel has queued (a bounded number) among the pending,
 * each connector's credentials checked first; the oldest pending goes to
 * make room.  0, or an error of the listener's own. */
static int take_new(struct shunt_listener *l)
{
	for (int n = 0; n < PENDING_MAX; n++) {
		int s = shunt__hide_fd(sys_accept4(l->fd, NULL, NULL, SOCK_CLOEXEC));
		if (s < 0)
			return s == -EAGAIN ? 0 : s;
		if (peer_allowed(s, "connector") < 0 || watch(l->ep, s, EPOLL_CTL_ADD) < 0) {
			log_info("dropped a connection: refused, or cannot watch it");
			sys_close(s);
			continue;
		}
		if (l->npend == PENDING_MAX) {
			log_info("dropped a connection: %d newer ones came before its hello",
				 PENDING_MAX);
			pend_drop(l, 0); /* the oldest */
		}
		l->pend[l->npend++] = (struct pending){ s, shunt_now_ns() + HELLO_TIMEOUT_NS };
	}
	return 0;
}

/* The first pending connector whose hello came, answered: 0, or -EAGAIN.
 * The broken and the late are dropped on the way. */
static int answer_pending(struct shunt_listener *l, struct shunt_conn **out)
{
	int64_t now = shunt_now_ns();

	for (int i = 0; i < l->npend;) {
		int s = l->pend[i].s;
		int rc = answer(s, out);
		if (rc == -EAGAIN && now < l->pend[i].until) {
			i++;
			continue;
		}
		if (rc == 0 || rc == -EAGAIN)
			sys_epoll_ctl(l->ep, EPOLL_CTL_DEL, s, NULL);
		if (rc == -EAGAIN)
			sys_close(s);
		pend_remove(l, i);
		if (rc == 0)
			return 0;
		log_info("dropped a connection: %s",
			 rc == -EAGAIN ? "no hello within 1 s" : strerror(-rc));
	}
	return -EAGAIN;
}

/* Until the next pending connector's hello is late, in ms; -1: none. */
static int next_late_ms(const struct shunt_listener *l)
{
	int64_t first = INT64_MAX;

	for (int i = 0; i < l->npend; i++)
		first = SHUNT_MIN(first, l->pend[i].until);
	if (first == INT64_MAX)
		return -1;
	int64_t left = first - shunt_now_ns();
	return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/* After a fork the epoll set is shared, but the pending are each
 * process's own: another's pending would keep the set readable for us
 * (a program polling it spins) while that process is not in accept.  A
 * process that accepts where it did not listen takes a set of its own,
 * under the same number, and leaves the pending it inherited to the
 * process that took them. */
static void own_set(struct shunt_listener *l)
{
	int me = (int)sys_getpid();

	if (l->pid == me)
		return;
	l->pid = me;
	while (l->npend) {
		sys_close(l->pend[0].s); /* our copy: no DEL, the set is not ours */
		pend_remove(l, 0);
	}
	int ep = sys_epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return;
	if (watch(ep, l->fd, EPOLL_CTL_ADD) == 0)
		(void)sys_dup3(ep, l->ep, O_CLOEXEC);
	sys_close(ep);
}

/*
 * A peer that is refused, breaks the hello or sends none within 1 s is
 * dropped (and logged), as the kernel drops a connection reset before
 * accept(); no call waits for one.  Only errors of the listener itself
 * come back.
 */
SHUNT_EXPORT int shunt_accept(struct shunt_listener *l, struct shunt_conn **out, int flags)
{
	own_set(l);
	for (;;) {
		int err = take_new(l);
		if (answer_pending(l, out) == 0)
			return 0;
		if (err < 0)
			return err;
		if (flags & SHUNT_NONBLOCK)
			return -EAGAIN;
		/* Wait on our own fds, not on the set: after a fork the set is
		 * shared, and another process's pending would wake us for good
		 * (a spin) while that process is not in accept. */
		struct pollfd p[PENDING_MAX + 1] = { { .fd = l->fd, .events = POLLIN } };
		for (int i = 0; i < l->npend; i++)
			p[i + 1] = (struct pollfd){ .fd = l->pend[i].s, .events = POLLIN };
		int ms = next_late_ms(l);
		struct timespec ts = shunt_ts((int64_t)ms * 1000000);
		int rc = sys_ppoll(p, (unsigned)l->npend + 1, ms < 0 ? NULL : &ts);
		if (rc < 0 && rc != -EINTR)
			return rc;
	}
}
