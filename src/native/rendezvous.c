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

#define HELLO_TIMEOUT_MS 1000 /* a connector sends its hello right after connect */

struct shunt_listener {
	int fd;
	struct sockaddr_un addr;
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

SHUNT_EXPORT int shunt_listen(const char *name, struct shunt_listener **out)
{
	struct shunt_listener *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return -ENOMEM;
	l->fd = -1;
	rc = resolve(name, &l->addr, 1);
	if (rc == 0)
		rc = l->fd = listen_at(&l->addr);
	if (rc < 0) {
		free(l);
		return rc;
	}
	*out = l;
	return 0;
}

SHUNT_EXPORT int shunt_listener_fd(const struct shunt_listener *l)
{
	return l->fd;
}

SHUNT_EXPORT void shunt_listener_close(struct shunt_listener *l)
{
	if (!l)
		return;
	sys_unlinkat(AT_FDCWD, l->addr.sun_path, 0);
	sys_close(l->fd);
	free(l);
}

static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct timespec ts = shunt_ts((int64_t)timeout_ms * 1000000);
	int rc = sys_ppoll(&p, 1, timeout_ms < 0 ? NULL : &ts);

	if (rc < 0)
		return rc;
	return rc == 0 ? -ETIMEDOUT : 0;
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

/* Read the hello on a stream just accepted and build the end.  Owns s. */
static int answer(int s, struct shunt_conn **out)
{
	struct shunt_hello h;
	struct shunt_seg seg = { 0 };
	int fds[SHUNT_FDMSG_MAX], n = 0;
	int rc = wait_readable(s, HELLO_TIMEOUT_MS);

	if (rc == 0)
		rc = shunt_fdmsg_recv(s, &h, sizeof(h), fds, 2, &n, MSG_DONTWAIT);
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

static int accept_one(struct shunt_listener *l, struct shunt_conn **out)
{
	int s = shunt__hide_fd(sys_accept4(l->fd, NULL, NULL, SOCK_CLOEXEC));

	if (s < 0)
		return s;
	int rc = peer_allowed(s, "connector");
	if (rc == 0)
		rc = answer(s, out);
	else
		sys_close(s);
	if (rc < 0)
		log_info("dropped a connection: %s", strerror(-rc));
	return rc < 0 ? -ECONNABORTED : 0;
}

/*
 * A peer that is refused or breaks the hello is dropped (and logged), and
 * accept goes on with the next one, as the kernel does with a connection
 * reset before accept().  Only errors of the listener itself come back.
 */
SHUNT_EXPORT int shunt_accept(struct shunt_listener *l, struct shunt_conn **out, int flags)
{
	for (;;) {
		int rc = accept_one(l, out);
		if (rc == 0)
			return 0;
		if (rc == -ECONNABORTED)
			continue;
		if (rc != -EAGAIN || (flags & SHUNT_NONBLOCK))
			return rc;
		rc = wait_readable(l->fd, -1);
		if (rc < 0)
			return rc;
	}
}
