/*
 * meet.c - two ends of one TCP connection find each other and prove it.
 *
 * Each end knows the connection's two addresses; the lower of the two
 * endpoints listens on a UNIX socket named after both, the higher dials it.
 * The name is in the abstract namespace, which the kernel keeps per network
 * namespace and cleans when the socket closes; with `trust-netns yes` it is
 * a file in the shared directory instead.  Neither end ever waits: each
 * step is tried when a data call comes by (move.c schedules them), and
 * anything that fails leaves the connection on TCP.
 *
 *   dialer   -> listener  HELLO   fds [dialer's TCP socket]            (proof)
 *   listener -> dialer    ACCEPT  fds [listener's TCP socket, segment] (proof)
 *
 * A proof is the sender's own end of the connection: the receiver checks
 * that its addresses mirror its own socket's, that it is another socket
 * than its own, and that it lives in the same network namespace, then
 * closes it at once (a copy held elsewhere would delay the FIN).  The
 * dialer proves first; before it passes its socket to a process of another
 * user, the kernel (sock_diag) must say that user owns the listener's end.
 * docs/design.md, "Meeting and proof", has the messages byte by byte.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "fdmsg.h"
#include "internal.h"
#include "medium.h"
#include "meet.h"
#include "shim.h"
#include "sys.h"

struct tmeet {
	int dialer;                /* 1: we dial; 0: we listen */
	int lfd;                   /* listener: the named socket */
	int s;                     /* the stream to the other end */
	int sent;                  /* our message went out */
	uint32_t peer_uid;
	struct sockaddr_un name;
	unsigned name_len;
	int file;                  /* the name is a file (unlink it) */
};

/* --- Names ------------------------------------------------------------------ */

int shim_meet_name(const struct shunt_addr *lower, const struct shunt_addr *higher,
		   int file, struct sockaddr_un *out, unsigned *len)
{
	char a[48], b[48];

	if (shunt_addr_hex(lower, a, sizeof(a)) < 0 || shunt_addr_hex(higher, b, sizeof(b)) < 0)
		return -ENAMETOOLONG;
	memset(out, 0, sizeof(*out));
	out->sun_family = AF_UNIX;
	int n;
	if (file)
		n = snprintf(out->sun_path, sizeof(out->sun_path), "%s/m-%s-%s",
			     shunt__config()->dir, a, b);
	else /* abstract: a leading NUL, and the length tells the end */
		n = snprintf(out->sun_path + 1, sizeof(out->sun_path) - 1, "shunt1/%s-%s", a, b) + 1;
	if (n <= 0 || (size_t)n >= sizeof(out->sun_path))
		return -ENAMETOOLONG;
	*len = (unsigned)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + (file ? 1 : 0));
	return 0;
}

/* --- Messages ---------------------------------------------------------------- */

int shim_meet_parse(const struct shim_meet_msg *m, int nfds, uint32_t type)
{
	if (m->magic != SHIM_MEET_MAGIC || m->version != SHIM_MEET_VERSION || m->type != type ||
	    m->flags != 0 || m->medium != 0)
		return -EPROTO;
	if (type == SHIM_MEET_HELLO)
		return nfds == 1 && m->ring_size == 0 ? 0 : -EPROTO;
	if (type != SHIM_MEET_ACCEPT || nfds != 2 || shunt_seg_check_size(m->ring_size) < 0)
		return -EPROTO;
	return 0;
}

static int send_msg(int s, uint32_t type, uint64_t cap, const int *fds, int nfds)
{
	struct shim_meet_msg m = {
		.magic = SHIM_MEET_MAGIC, .version = SHIM_MEET_VERSION, .type = type,
		.ring_size = cap,
	};

	return shunt_fdmsg_send(s, &m, sizeof(m), fds, nfds, MSG_DONTWAIT);
}

/* One message of `type`: 0 and its fds (as many as the type has: fds holds
 * that many), -EAGAIN, or another error (the fds of a bad message are
 * closed here).  What comes is received into room for the most a message
 * may carry: a peer that sends more must not write past the caller's. */
static int recv_msg(int s, uint32_t type, struct shim_meet_msg *m, int *fds)
{
	int got[SHUNT_FDMSG_MAX], n = 0;
	int rc = shunt_fdmsg_recv(s, m, sizeof(*m), got, &n, MSG_DONTWAIT);

	if (rc < 0)
		return rc;
	rc = shim_meet_parse(m, n, type);
	if (rc < 0) {
		log_info("meeting: malformed message from the peer");
		shunt_close_fds(got, n);
		return rc;
	}
	memcpy(fds, got, (size_t)n * sizeof(int));
	return 0;
}

/* --- Proof ------------------------------------------------------------------- */

int shim_meet_check_proof(int ours, int proof, const struct shunt_addr *local,
			  const struct shunt_addr *peer)
{
	struct shunt_addr pl, pp;
	uint64_t c1 = 0, c2 = 0;

	if (!shim_kern_is_tcp(proof) || shunt_addr_of(proof, 0, &pl) < 0 ||
	    shunt_addr_of(proof, 1, &pp) < 0)
		return -EPROTO;
	/* The other end of our connection: its local address is our peer's,
	 * its peer is us, and it is not our own socket handed back. */
	if (!shunt_addr_eq(&pl, peer) || !shunt_addr_eq(&pp, local) ||
	    shim_kern_ino(proof) == shim_kern_ino(ours))
		return -EPERM;
	if (shunt__config()->trust_netns)
		return 0;
	/* Addresses can be made up in a namespace of one's own; the namespace
	 * cannot.  Loopback, or any other address: same rule. */
	if (shim_kern_netns_cookie(ours, &c1) < 0 || shim_kern_netns_cookie(proof, &c2) < 0 ||
	    c1 != c2)
		return -EPERM;
	return 0;
}

/* May we pass our socket to the process at the other end of s?  Its user
 * must be allowed, and if it is not ours, it must own the peer's TCP end. */
static int peer_ok(struct tsock *t, int s, uint32_t *uid)
{
	struct ucred cr;
	unsigned len = sizeof(cr);
	int rc = sys_getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len);

	if (rc < 0)
		return rc;
	*uid = cr.uid;
	if (!shunt__peer_allowed(cr.uid)) {
		log_info("meeting: the peer's uid %u is not allowed", (unsigned)cr.uid);
		return -EACCES;
	}
	if (cr.uid == (uint32_t)geteuid())
		return 0;
	uint32_t owner = ~0u;
	rc = shim_kern_sock_uid(&t->slot->peer, &t->slot->local, &owner);
	if (rc < 0 || owner != cr.uid) {
		log_info("meeting: uid %u does not own the peer's socket", (unsigned)cr.uid);
		return -EACCES;
	}
	return 0;
}

/* --- Steps ------------------------------------------------------------------- */

static void meet_close(struct tmeet *m)
{
	if (m->s >= 0)
		sys_close(m->s);
	if (m->lfd >= 0) {
		if (m->file)
			sys_unlinkat(AT_FDCWD, m->name.sun_path, 0);
		sys_close(m->lfd);
	}
	m->s = m->lfd = -1;
}

void shim_meet_drop(struct tsock *t)
{
	pthread_mutex_lock(&t->mu);
	struct tmeet *m = t->meet;
	t->meet = NULL;
	pthread_mutex_unlock(&t->mu);
	if (m) {
		meet_close(m);
		free(m);
	}
}

static struct tmeet *meet_new(struct tsock *t)
{
	struct tslot *sl = t->slot;
	struct tmeet *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->lfd = m->s = -1;
	m->dialer = shunt_addr_cmp(&sl->local, &sl->peer) > 0;
	m->file = shunt__config()->trust_netns;
	const struct shunt_addr *lo = m->dialer ? &sl->peer : &sl->local;
	const struct shunt_addr *hi = m->dialer ? &sl->local : &sl->peer;
	if (shim_meet_name(lo, hi, m->file, &m->name, &m->name_len) < 0) {
		free(m);
		return NULL;
	}
	return m;
}

static int seqpacket(void)
{
	return shunt__hide_fd(sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
}

/* A stale file of a dead listener refuses connections: replace it. */
static int bind_name(struct tmeet *m)
{
	int fd = seqpacket();

	if (fd < 0)
		return fd;
	int rc = sys_bind(fd, (struct sockaddr *)&m->name, m->name_len);
	if (rc == -EADDRINUSE && m->file) {
		int probe = seqpacket();
		if (probe >= 0 &&
		    sys_connect(probe, (struct sockaddr *)&m->name, m->name_len) == -ECONNREFUSED)
			sys_unlinkat(AT_FDCWD, m->name.sun_path, 0);
		if (probe >= 0)
			sys_close(probe);
		rc = sys_bind(fd, (struct sockaddr *)&m->name, m->name_len);
	}
	if (rc == 0)
		rc = sys_listen(fd, 4);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	m->lfd = fd;
	return 0;
}

/* The bell byte: any value but 0, so that a stray NUL is never a ring. */
static uint8_t bell_byte(void)
{
	uint8_t b = 0;

	while (b == 0)
		if (sys_getrandom(&b, 1, GRND_NONBLOCK) != 1)
			b = (uint8_t)(shunt_now_ns() | 1);
	return b;
}

/* The listener took a good HELLO: make the segment and answer. */
static int answer(struct tsock *t, int fd, struct tmeet *m)
{
	struct tslot *sl = t->slot;
	struct shunt_seg seg = { 0 };
	int64_t memfd = -1;
	uint8_t bell = bell_byte();
	int rc = shunt_medium_local.create(&seg, shim_ring_size_now(), bell, &memfd);

	if (rc < 0)
		return rc;
	sl->side = 0;
	sl->bell = bell;
	shunt_end_init(&sl->end, &seg, 0, shunt__config()->spin_us, 1);
	t->mapped = 1;
	rc = send_msg(m->s, SHIM_MEET_ACCEPT, seg.cap, (int[]){ fd, (int)memfd }, 2);
	sys_close((int)memfd);
	if (rc < 0) {
		t->mapped = 0;
		shunt_unmap(&sl->end.seg);
	}
	return rc;
}

static int listen_step(struct tsock *t, int fd, struct tmeet *m)
{
	struct shim_meet_msg msg;
	int proof;

	if (m->lfd < 0 && m->s < 0) {
		int rc = bind_name(m);
		if (rc < 0)
			return rc == -EADDRINUSE ? -EACCES : rc;
	}
	if (m->s < 0) {
		m->s = shunt__hide_fd(sys_accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK));
		if (m->s < 0)
			return m->s == -EAGAIN ? 0 : m->s;
		if (peer_ok(t, m->s, &m->peer_uid) < 0) {
			sys_close(m->s); /* not the one: the right one may still come */
			m->s = -1;
			return 0;
		}
	}
	int rc = recv_msg(m->s, SHIM_MEET_HELLO, &msg, &proof);
	if (rc == -EAGAIN)
		return 0;
	if (rc == 0) {
		rc = shim_meet_check_proof(fd, proof, &t->slot->local, &t->slot->peer);
		sys_close(proof);
	}
	if (rc < 0) {
		log_info("meeting: refused a dialer: %s", strerror(-rc));
		sys_close(m->s);
		m->s = -1;
		return 0;
	}
	if (atomic_load(&t->slot->flags) & TF_NOMOVE)
		return -ECANCELED;
	rc = answer(t, fd, m);
	if (rc < 0)
		return rc;
	meet_close(m); /* the dialer has what it needs; the segment tells the rest */
	return 1;
}

static int dial_step(struct tsock *t, int fd, struct tmeet *m)
{
	struct shim_meet_msg msg;
	int fds[2];

	if (m->s < 0) {
		int s = seqpacket();
		if (s < 0)
			return s;
		int rc = sys_connect(s, (struct sockaddr *)&m->name, m->name_len);
		if (rc < 0) {
			sys_close(s);
			/* Not there (yet), or its queue is full. */
			return rc == -ECONNREFUSED || rc == -ENOENT || rc == -EAGAIN ? 0 : rc;
		}
		m->s = s;
		rc = peer_ok(t, s, &m->peer_uid);
		if (rc < 0)
			return rc;
		rc = send_msg(s, SHIM_MEET_HELLO, 0, &fd, 1);
		if (rc < 0)
			return rc;
	}
	int rc = recv_msg(m->s, SHIM_MEET_ACCEPT, &msg, fds);
	if (rc == -EAGAIN)
		return 0;
	if (rc < 0)
		return rc == -ECONNRESET ? -EACCES : rc;
	/* Shut down, passed on or taken by stdio meanwhile: not now. */
	if (atomic_load(&t->slot->flags) & TF_NOMOVE) {
		shunt_close_fds(fds, 2);
		return -ECANCELED;
	}
	struct shunt_seg seg = { 0 };
	uint8_t bell = 0;
	rc = shim_meet_check_proof(fd, fds[0], &t->slot->local, &t->slot->peer);
	if (rc == 0)
		rc = shunt_medium_local.attach(&seg, fds[1], msg.ring_size, &bell);
	shunt_close_fds(fds, 2);
	if (rc == 0 && bell == 0)
		rc = -EPROTO;
	if (rc < 0) {
		if (seg.base)
			shunt_unmap(&seg);
		return rc;
	}
	struct tslot *sl = t->slot;
	sl->side = 1;
	sl->bell = bell;
	shunt_end_init(&sl->end, &seg, 1, shunt__config()->spin_us, 1);
	t->mapped = 1;
	meet_close(m);
	return 1;
}

int shim_meet_step(struct tsock *t, int fd)
{
	pthread_mutex_lock(&t->mu);
	struct tmeet *m = t->meet;
	if (!m)
		m = t->meet = meet_new(t);
	int rc = !m ? -ENOMEM : m->dialer ? dial_step(t, fd, m) : listen_step(t, fd, m);
	if (rc != 0) {
		t->meet = NULL;
		/* Said under the lock: a read that took the peer's first doorbell
		 * learns of the move by waiting for it (shim_moved_now). */
		if (rc == 1)
			atomic_store(&t->slot->state, SLOT_MOVED);
		pthread_mutex_unlock(&t->mu);
		if (m) {
			meet_close(m);
			free(m);
		}
		return rc;
	}
	pthread_mutex_unlock(&t->mu);
	return 0;
}
