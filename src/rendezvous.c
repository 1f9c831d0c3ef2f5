/*
 * rendezvous.c - listen, accept and connect by name (see rendezvous.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "rendezvous.h"

#include <shunt.h>

#define HELLO_TIMEOUT_MS 1000 /* a connector sends its hello right after connect */
#define MAX_FDS 4 /* the most a message carries */
#define OFFER_TIMEOUT_MS 100 /* an offer's hello follows its connect at once */

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

/* --- Policy ----------------------------------------------------------- */

/* Policy: a peer of our own effective user, or one the config allows. */
static int peer_allowed(int sock, const char *who)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	if (!shunt__peer_allowed(cr.uid)) {
		log_warn("refused %s pid %d: uid %u is neither ours (%u) nor allowed",
			 who, (int)cr.pid, (unsigned)cr.uid, (unsigned)geteuid());
		return -EACCES;
	}
	return 0;
}

/* --- Messages with file descriptors ------------------------------------ */

static int send_msg(int sock, const void *buf, size_t len, const int *fds, int nfds,
		    int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&ctl, 0, sizeof(ctl));
	if (nfds > 0) {
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EPROTO;
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * Receive one message of exactly len bytes carrying at most MAX_FDS fds
 * (*nfds says how many).  Whatever else arrives (short data, truncation)
 * is closed and refused with -EPROTO.  0 at end of stream is -ECONNRESET.
 * `hide` moves the fds above the program's (internal.h); a caller that
 * closes one before returning to the program may skip that cost.
 */
static int recv_any(int sock, void *buf, size_t len, int *fds, int *nfds, int flags,
		    int hide)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	int ngot = 0;

	ssize_t n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int *p = (int *)CMSG_DATA(cm);
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, p + i, sizeof(fd));
			if (ngot < MAX_FDS)
				fds[ngot++] = hide ? shunt__hide_fd(fd) : fd;
			else
				close(fd);
		}
	}
	if (n == 0 && ngot == 0)
		return -ECONNRESET;
	if ((size_t)n != len || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
		close_fds(fds, ngot);
		return -EPROTO;
	}
	*nfds = ngot;
	return 0;
}

/* As recv_any, for a message that must carry exactly nfds fds. */
static int recv_msg(int sock, void *buf, size_t len, int *fds, int nfds, int flags)
{
	int got[MAX_FDS], n = 0;
	int rc = recv_any(sock, buf, len, got, &n, flags, 1);

	if (rc == 0 && n != nfds) {
		close_fds(got, n);
		rc = -EPROTO;
	}
	if (rc == 0)
		memcpy(fds, got, sizeof(int) * (size_t)nfds);
	return rc;
}

/* --- Connecting ------------------------------------------------------- */

static int open_stream(const struct sockaddr_un *addr)
{
	int s = shunt__hide_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));

	if (s < 0)
		return -errno;
	if (connect(s, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
		int err = -errno;
		close(s);
		return err;
	}
	return s;
}

static int pick_spin(const struct shunt_opts *o)
{
	if (!o || o->spin_us == 0)
		return shunt__config()->spin_us;
	return o->spin_us > 0 ? o->spin_us : 0;
}

static int bell_pair(int pair[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
		return -errno;
	pair[0] = shunt__hide_fd(pair[0]);
	return pair[0] < 0 ? -EMFILE : 0;
}

/*
 * Create the segment and the doorbell pairs, send the hello (with `proof`
 * as a last fd if >= 0), and build our end.  Without `link`, the stream s
 * is the READ doorbell and is owned from here on; with it, s stays the
 * caller's and a second pair rings READ waits.  The mapping keeps the
 * segment alive: the memfd goes to *memfd if asked, else is closed.
 */
static int offer(int s, uint64_t cap, int spin_us, int proof, int link, uint32_t slot,
		 struct shunt_conn **out, int *memfd_out)
{
	struct shunt_seg seg = { 0 };
	int wr[2] = { -1, -1 }, rd[2] = { -1, -1 };
	int memfd = shunt_seg_create(&seg, cap);
	int rc = memfd;

	if (rc >= 0)
		rc = bell_pair(wr);
	if (rc >= 0 && link)
		rc = bell_pair(rd);
	if (rc >= 0) {
		struct shunt_hello h = {
			.magic = SHUNT_HELLO_MAGIC, .version = SHUNT_PROTO_VERSION,
			.flags = (proof >= 0 ? SHUNT_HELLO_OFFER : 0) | (link ? SHUNT_HELLO_LINK : 0),
			.ring_size = cap, .slot = slot, .gen = link ? 1 : 0,
		};
		int plain[3] = { memfd, wr[1], proof }, linked[4] = { memfd, rd[1], wr[1], proof };
		rc = link ? send_msg(s, &h, sizeof(h), linked, 4, MSG_DONTWAIT)
			  : send_msg(s, &h, sizeof(h), plain, proof >= 0 ? 3 : 2, 0);
	}
	close_fds((int[]){ wr[1], rd[1] }, 2);
	if (rc >= 0) {
		rc = shunt__conn_new(out, 0, &seg, link ? rd[0] : s, wr[0], spin_us);
	} else {
		close_fds((int[]){ wr[0], rd[0], link ? -1 : s }, 3);
		shunt_seg_detach(&seg);
	}
	if (memfd >= 0 && (rc < 0 || !memfd_out))
		close(memfd);
	else if (memfd_out)
		*memfd_out = memfd;
	return rc;
}

/* Connect to the listener at name and check its owner against the policy. */
static int dial(const char *name)
{
	struct sockaddr_un addr;
	int rc = resolve(name, &addr, 0);

	if (rc < 0)
		return rc;
	int s = open_stream(&addr);
	if (s < 0)
		return s;
	rc = peer_allowed(s, "listener");
	if (rc < 0) {
		close(s);
		return rc;
	}
	return s;
}

SHUNT_EXPORT int shunt_connect(const char *name, const struct shunt_opts *opts,
			       struct shunt_conn **out)
{
	if (opts && opts->ring_size && shunt_seg_check_size(opts->ring_size) < 0)
		return -EINVAL;
	int s = dial(name);
	if (s < 0)
		return s;
	uint64_t cap = opts && opts->ring_size ? opts->ring_size : shunt__config()->ring_size;
	return offer(s, cap, pick_spin(opts), -1, 0, 0, out, NULL);
}

int shunt__offer_send(const char *path, uint64_t cap, int proof,
		      struct shunt_conn **out, int *memfd)
{
	int s = dial(path);

	return s < 0 ? s : offer(s, cap, shunt__config()->spin_us, proof, 0, 0, out, memfd);
}

int shunt__link_dial(const char *path)
{
	return dial(path);
}

int shunt__link_offer(int s, uint64_t cap, int proof, uint32_t slot,
		      struct shunt_conn **out, int *memfd)
{
	return offer(s, cap, shunt__config()->spin_us, proof, 1, slot, out, memfd);
}

int shunt__link_reoffer(int s, int proof, uint32_t slot, uint32_t gen)
{
	struct shunt_hello h = {
		.magic = SHUNT_HELLO_MAGIC, .version = SHUNT_PROTO_VERSION,
		.flags = SHUNT_HELLO_OFFER | SHUNT_HELLO_REUSE, .slot = slot, .gen = gen,
	};
	int rc = send_msg(s, &h, sizeof(h), &proof, 1, MSG_DONTWAIT);

	return rc == -EWOULDBLOCK ? -EAGAIN : rc;
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
		close(s);
		return -EADDRINUSE;
	}
	if (s != -ECONNREFUSED)
		return s;
	return unlink(addr->sun_path) < 0 && errno != ENOENT ? -errno : 0;
}

static int listen_at(const struct sockaddr_un *addr)
{
	int rc = clear_stale(addr);

	if (rc < 0)
		return rc;
	int fd = shunt__hide_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (fd < 0)
		return -errno;
	if (bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		rc = -errno;
		close(fd);
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

int shunt__unix_listen(const char *path)
{
	struct sockaddr_un addr;
	int rc = resolve(path, &addr, 0);

	return rc < 0 ? rc : listen_at(&addr);
}

SHUNT_EXPORT int shunt_listener_fd(const struct shunt_listener *l)
{
	return l->fd;
}

SHUNT_EXPORT void shunt_listener_close(struct shunt_listener *l)
{
	if (!l)
		return;
	unlink(l->addr.sun_path);
	close(l->fd);
	free(l);
}

static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc = poll(&p, 1, timeout_ms);

	if (rc < 0)
		return -errno;
	return rc == 0 ? -ETIMEDOUT : 0;
}

/* A peer-supplied doorbell must be a UNIX stream socket. */
static int check_bell(int fd)
{
	int type = 0, domain = 0;
	socklen_t len = sizeof(int);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
	    type != SOCK_STREAM || domain != AF_UNIX) {
		log_warn("peer doorbell is not a UNIX stream socket");
		return -EPROTO;
	}
	return 0;
}

/* How many fds a hello with these flags carries; -1 for one we refuse. */
static int hello_fds(const struct shunt_hello *h, int offer)
{
	if (h->magic != SHUNT_HELLO_MAGIC || h->version != SHUNT_PROTO_VERSION)
		return -1;
	if (!offer)
		return h->flags == 0 ? 2 : -1;
	if (h->flags == SHUNT_HELLO_OFFER)
		return 3;
	return h->flags == (SHUNT_HELLO_OFFER | SHUNT_HELLO_LINK) ? 4 : -1;
}

/*
 * Map a hello's segment and build the accepting end.  Takes the n fds (as
 * hello_fds counts them).  The stream s it came on is the READ doorbell,
 * and taken too, unless the hello asked for a link (n == 4): then s stays
 * the caller's.  An offer keeps the memfd and the proof in *o.
 */
static int build_end(int s, const struct shunt_hello *h, int *fds, int n,
		     struct shunt_conn **out, struct shunt_offer *o)
{
	struct shunt_seg seg = { 0 };
	int link = n == 4;
	int rd = link ? fds[1] : s, wr = fds[link ? 2 : 1];
	int rc = check_bell(wr);

	if (rc == 0 && link)
		rc = check_bell(rd);
	if (rc == 0)
		rc = shunt_seg_attach(&seg, fds[0], h->ring_size);
	if (rc < 0) {
		close_fds(fds, n);
		if (!link)
			close(s);
		return rc;
	}
	if (o) {
		o->memfd = fds[0];
		o->proof = fds[n - 1];
		o->flags = h->flags;
		o->slot = h->slot;
		o->gen = h->gen;
	} else {
		close(fds[0]);
	}
	rc = shunt__conn_new(out, 1, &seg, rd, wr, shunt__config()->spin_us);
	if (rc < 0 && o) {
		close_fds((int[]){ o->memfd, o->proof }, 2);
		o->memfd = o->proof = -1;
	}
	return rc;
}

/* Read the first hello on a stream just accepted and build the end.  Owns
 * s, except that an offer asking for a link leaves it in o->link. */
static int answer(int s, struct shunt_conn **out, struct shunt_offer *o)
{
	struct shunt_hello h;
	int fds[MAX_FDS], n = 0;
	int rc = wait_readable(s, o ? OFFER_TIMEOUT_MS : HELLO_TIMEOUT_MS);

	if (rc == 0)
		rc = recv_any(s, &h, sizeof(h), fds, &n, MSG_DONTWAIT, 1);
	if (rc == 0 && n != hello_fds(&h, o != NULL)) {
		close_fds(fds, n);
		rc = -EPROTO;
	}
	if (rc < 0) {
		close(s);
		return rc;
	}
	rc = build_end(s, &h, fds, n, out, o);
	if (n == 4 && rc < 0)
		close(s);
	else if (n == 4)
		o->link = s;
	return rc;
}

int shunt__offer_take(int lfd, struct shunt_offer *o)
{
	int s = shunt__hide_fd(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));

	if (s < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	*o = (struct shunt_offer){ .memfd = -1, .proof = -1, .link = -1 };
	int rc = peer_allowed(s, "connector");
	if (rc < 0) {
		close(s);
		return rc;
	}
	return answer(s, &o->c, o);
}

int shunt__link_take(int s, struct shunt_offer *o)
{
	struct shunt_hello h;
	int fds[MAX_FDS], n = 0;
	/* Not hidden: the proof is closed before the program runs again, or
	 * hidden by the caller if kept; the rest is hidden below. */
	int rc = recv_any(s, &h, sizeof(h), fds, &n, MSG_DONTWAIT, 0);

	if (rc < 0)
		return rc == -EWOULDBLOCK ? -EAGAIN : rc;
	*o = (struct shunt_offer){ .memfd = -1, .proof = -1, .link = -1 };
	if (h.magic == SHUNT_HELLO_MAGIC && h.version == SHUNT_PROTO_VERSION &&
	    h.flags == (SHUNT_HELLO_OFFER | SHUNT_HELLO_REUSE) && n == 1) {
		o->proof = fds[0];
		o->flags = h.flags;
		o->slot = h.slot;
		o->gen = h.gen;
		return 0;
	}
	if (n != 4 || hello_fds(&h, 1) != 4) {
		close_fds(fds, n);
		return -EPROTO;
	}
	for (int i = 0; i < 3; i++)
		fds[i] = shunt__hide_fd(fds[i]);
	return build_end(s, &h, fds, n, &o->c, o);
}

static int accept_one(struct shunt_listener *l, struct shunt_conn **out)
{
	int s = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);

	if (s < 0)
		return -errno;
	int rc = peer_allowed(s, "connector");
	if (rc == 0)
		rc = answer(s, out, NULL);
	else
		close(s);
	if (rc < 0)
		log_info("dropped a connection: %s", strerror(-rc));
	return rc < 0 ? -ECONNABORTED : 0;
}

/*
 * A peer that is refused or breaks the hello is dropped (and logged), and
 * accept goes on with the next one, as the kernel does with a connection
 * reset before accept().  Only errors of the listener itself come back.
 */
SHUNT_EXPORT int shunt_accept(struct shunt_listener *l, struct shunt_conn **out,
			      int flags)
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

/* A passed offer: the ring size, and fds [memfd, READ bell, WRITE bell, proof]. */
struct passed_offer {
	uint64_t magic;
	uint64_t ring_size;
};

int shunt__offer_pass(int sock, struct shunt_offer *o)
{
	struct passed_offer m = { SHUNT_HELLO_MAGIC, shunt_ring_size(o->c) };
	struct shunt_conn *c = o->c;
	int fds[4] = { o->memfd, shunt__conn_bell(c, 0), shunt__conn_bell(c, 1), o->proof };
	int rc = send_msg(sock, &m, sizeof(m), fds, 4, MSG_DONTWAIT);

	shunt__conn_free(c);
	close(o->memfd);
	close(o->proof);
	return rc == -EWOULDBLOCK ? -EAGAIN : rc;
}

int shunt__offer_recv(int sock, struct shunt_offer *o)
{
	struct passed_offer m;
	struct shunt_seg seg = { 0 };
	int fds[4];
	int rc = recv_msg(sock, &m, sizeof(m), fds, 4, MSG_DONTWAIT);

	if (rc < 0)
		return rc == -EWOULDBLOCK ? -EAGAIN : rc;
	rc = m.magic == SHUNT_HELLO_MAGIC ? shunt_seg_attach(&seg, fds[0], m.ring_size) : -EPROTO;
	if (rc < 0) {
		close_fds(fds, 4);
		return rc;
	}
	o->memfd = fds[0];
	o->proof = fds[3];
	rc = shunt__conn_new(&o->c, 1, &seg, fds[1], fds[2], shunt__config()->spin_us);
	if (rc < 0) {
		close(o->memfd);
		close(o->proof);
	}
	return rc;
}
