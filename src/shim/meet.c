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
 *   dialer   -> listener  HELLO   "my TCP socket is my fd T"        no fds
 *   listener -> dialer    ACCEPT  "mine is my fd T, the segment my fd M"
 *                                 (or the segment by SCM_RIGHTS: PASS)
 *
 * No TCP socket ever crosses: a socket in a message keeps its connection
 * open (no FIN) for as long as the message waits, goes to whoever bound the
 * name, and its last close() may linger.  Instead each end checks the
 * other's claim with the kernel.  The UNIX stream's SO_PEERCRED names the
 * other process (pid, uid; a pidfd since Linux 6.5, SO_PEERPIDFD);
 * sock_diag names the socket in our network namespace whose addresses
 * mirror ours (its inode and owner); /proc/PID/fd/T must be that socket.
 * Looking there needs ptrace-read permission; a peer we may not look at is
 * taken only if `allow-user` names its user and the kernel says that user
 * owns the mirror socket.  Its end in no namespace of ours: refused, unless
 * `trust-netns yes` (then its user's word is all).  The segment is passed
 * with the ACCEPT; no other message may carry fds (SO_PASSRIGHTS off,
 * Linux 6.16).  docs/design.md, "Meeting
 * and proof", has the messages byte by byte and the limits.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
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

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

_Static_assert(sizeof(struct shim_meet_msg) == 48, "docs/design.md's layout");

/* The process at the other end of the UNIX stream, as the kernel says. */
struct peer {
	int pid;                   /* in our pid namespace; 0 if not in it */
	uint32_t uid;
	int sock;                  /* the stream SO_PEERCRED was read from, or -1 */
};

struct tmeet {
	int dialer;                /* 1: we dial; 0: we listen */
	int lfd;                   /* listener: the named socket */
	int s;                     /* the stream to the other end */
	struct peer peer;          /* the process at the other end of s */
	struct sockaddr_un name;
	unsigned name_len;
	int file;                  /* the name is a file (unlink it) */
	struct tmeet *shed_next;   /* on the list of shed ones (shim_meet_shed) */
};

/* --- Names ------------------------------------------------------------------
 * Abstract: "shunt1/<lower>-<higher>" in hex, which always fits.  A file
 * in the directory (`dir` may take 75 of sun_path's 108 bytes):
 * "m-<lower>-<higher>" for IPv4 (29 bytes), and for IPv6, whose spelling
 * would not fit, "m6-" and 112 bits of a hash of both (31 bytes).  The
 * hash needs no secret: a name is public anyway, and whoever binds one
 * first gains nothing but keeping that connection on TCP (the proof). */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Two lanes over family, port and address of both ends. */
static void name_hash(const struct shunt_addr *lo, const struct shunt_addr *hi, char *out,
		      size_t n)
{
	const struct shunt_addr *ends[2] = { lo, hi };
	uint64_t h1 = 0x736e7568743a6d36ull, h2 = 0x6d363a7468756e73ull;

	for (int e = 0; e < 2; e++) {
		uint8_t b[19] = { ends[e]->family, (uint8_t)(ends[e]->port >> 8),
				  (uint8_t)ends[e]->port };
		memcpy(b + 3, ends[e]->a, 16);
		for (size_t i = 0; i < sizeof(b); i++) {
			h1 = mix64(h1 ^ b[i]);
			h2 = mix64(h2 + b[i] + 1);
		}
	}
	snprintf(out, n, "%016llx%012llx", (unsigned long long)h1,
		 (unsigned long long)(h2 >> 16));
}

int shim_meet_name(const struct shunt_addr *lower, const struct shunt_addr *higher,
		   int file, struct sockaddr_un *out, unsigned *len)
{
	char a[48], b[48];

	if (shunt_addr_hex(lower, a, sizeof(a)) < 0 || shunt_addr_hex(higher, b, sizeof(b)) < 0)
		return -ENAMETOOLONG;
	memset(out, 0, sizeof(*out));
	out->sun_family = AF_UNIX;
	int n;
	const char *dir = shunt__config()->dir;
	if (file && (lower->family == AF_INET6 || higher->family == AF_INET6)) {
		name_hash(lower, higher, a, sizeof(a));
		n = snprintf(out->sun_path, sizeof(out->sun_path), "%s/m6-%s", dir, a);
	} else if (file) {
		n = snprintf(out->sun_path, sizeof(out->sun_path), "%s/m-%s-%s", dir, a, b);
	} else { /* abstract: a leading NUL, and the length tells the end */
		n = snprintf(out->sun_path + 1, sizeof(out->sun_path) - 1, "shunt1/%s-%s", a, b) + 1;
	}
	if (n <= 0 || (size_t)n >= sizeof(out->sun_path))
		return -ENAMETOOLONG;
	*len = (unsigned)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + (file ? 1 : 0));
	return 0;
}

/* --- Messages (parsed in meetmsg.c) ------------------------------------------- */

static int send_msg(int s, const struct shim_meet_msg *m, const int *fds, int nfds)
{
	return shunt_fdmsg_send(s, m, sizeof(*m), fds, nfds, MSG_DONTWAIT);
}

/* One message of `type`: 0 and its fds (as many as the type has, which
 * fds has room for), -EAGAIN, or another error (the fds of a bad message
 * are closed here).  Whatever the peer attached, only an array of the
 * most any message may carry receives it. */
static int recv_msg(int s, uint32_t type, struct shim_meet_msg *m, int *fds)
{
	int got[SHUNT_FDMSG_MAX], n = 0;
	int rc = shunt_fdmsg_recv(s, m, sizeof(*m), got, SHUNT_FDMSG_MAX, &n, MSG_DONTWAIT);

	if (rc == -EPROTO)
		log_info("meeting: malformed message from the peer");
	if (rc < 0)
		return rc;
	rc = shim_meet_parse(m, n, type);
	if (rc < 0) {
		log_info("meeting: malformed message from the peer");
		shunt_close_untrusted(got, n);
		return rc;
	}
	memcpy(fds, got, sizeof(int) * (size_t)n);
	return 0;
}

/* --- The process at the other end ---------------------------------------------- */

static void peer_clear(struct peer *p)
{
	p->pid = 0;
	p->sock = -1;
}

/* A pidfd of the process at the other end of s (SO_PEERPIDFD, Linux 6.5),
 * or a negative errno.  Taken when needed and closed at once: a meeting
 * that waits for its peer across calls holds no fd but its stream (each
 * connection left idle in the middle of one held its pidfd too, and
 * under `ulimit -n 64` a client made 21 connections instead of 59). */
static int peer_pidfd(int s)
{
	int fd = -1;
	unsigned len = sizeof(fd);
	int rc = sys_getsockopt(s, SOL_SOCKET, SO_PEERPIDFD, &fd, &len);

	return rc < 0 ? rc : fd;
}

/* Who is at the other end of s: SO_PEERCRED is the process that called
 * connect() (the listener's view) or listen() (the dialer's); its user
 * must be allowed. */
static int peer_of(int s, struct peer *p)
{
	struct ucred cr = { 0, 0, 0 };
	int rc = shunt__peer_cred(s, &cr);

	/* Named even when refused: the log says whom (it said pid 0, uid 0). */
	p->pid = cr.pid;
	p->uid = cr.uid;
	p->sock = s;
	if (rc == -EACCES)
		log_info("meeting: the peer's uid %u is not allowed", (unsigned)cr.uid);
	if (rc < 0)
		return rc;
	int pidfd = peer_pidfd(s);
	if (pidfd >= 0)
		sys_close(pidfd);
	/* Gone already (a kernel without pidfds says ENOPROTOOPT). */
	return pidfd == -ESRCH ? pidfd : 0;
}

/* The peer has not exited since SO_PEERCRED named it: its pid was not
 * reused in between, so what /proc/PID showed was its.  The pidfd names
 * the process the kernel recorded at connect() or listen(), whenever it is
 * taken, so one taken now is as good as one taken then.  Without pidfds
 * (Linux < 6.5) a pid reused in between cannot be told (design.md); with
 * them, no pidfd to be had (no fd left) is no proof. */
static int peer_alive(const struct peer *p)
{
	int pidfd = p->sock >= 0 ? peer_pidfd(p->sock) : -ENOPROTOOPT;

	if (pidfd == -ENOPROTOOPT)
		return sys_kill(p->pid, 0) != -ESRCH;
	if (pidfd < 0)
		return 0;
	int rc = sys_pidfd_send_signal(pidfd, 0);
	sys_close(pidfd);
	return rc != -ESRCH;
}

/* --- Proof ------------------------------------------------------------------- */

/*
 * Does the peer hold the other end of our connection at its fd `claim`?
 * The kernel decides: the mirror socket (sock_diag, our namespace) must be
 * what /proc/PID/fd/claim is, and the peer alive after we looked.  A peer
 * whose fds we may not look at: its user named by `allow-user` and the
 * mirror's owner.  A mirror in no namespace of ours: only with
 * `trust-netns yes`, on its user's word (allowed, peer_of).  claim < 0:
 * could it prove itself at all (before the HELLO)?  0, or why not.
 */
static int prove(struct tsock *t, const struct peer *p, int claim)
{
	uint64_t ino = 0, held = 0;
	uint32_t owner = ~0u;
	int rc = shim_kern_sock_find(&t->slot->peer, &t->slot->local, &ino, &owner);

	/* Not found: its end is in a namespace of another's, or one our
	 * lookup misses (bound to a device: SO_BINDTODEVICE, a link-local
	 * address's scope).  Only the first may be taken on its word, and
	 * only if trusted: a peer with an address of ours has its end here. */
	if (rc == -ENOENT)
		return shunt__config()->trust_netns && !shim_kern_addr_ours(&t->slot->peer) ? 0
											   : -EPERM;
	if (rc < 0)
		return rc;
	rc = shim_kern_proc_sock(p->pid, claim < 0 ? INT_MAX : claim, &held);
	if (rc == -EACCES) /* and some process holds the mirror */
		return shunt__peer_named(p->uid) && owner == p->uid && ino ? 0 : -EACCES;
	if (claim < 0)
		return rc == -ENOENT ? 0 : -EPERM;
	return rc == 0 && ino && held == ino && peer_alive(p) ? 0 : -EPERM;
}

static void refused(const char *who, const struct peer *p, int rc)
{
	log_info("meeting: refused %s (pid %d, uid %u): %s", who, p->pid, (unsigned)p->uid,
		 rc == -EACCES ? "we may not look at its fds, and allow-user does not name "
				 "its user (or it does not own the connection)"
		 : rc == -EPERM ? "it does not hold the other end of the connection"
				: strerror(-rc));
}

/* --- Steps ------------------------------------------------------------------- */

/* Close the meeting's sockets; the name's file goes too unless keep_name
 * (a forked child: the file is its parent's, which goes on meeting). */
static void meet_close_sockets(struct tmeet *m, int keep_name)
{
	if (m->s >= 0)
		sys_close(m->s);
	if (m->lfd >= 0) {
		if (m->file && !keep_name)
			sys_unlinkat(AT_FDCWD, m->name.sun_path, 0);
		sys_close(m->lfd);
	}
	m->s = m->lfd = -1;
	peer_clear(&m->peer);
}

/* Meetings of this process in progress: each holds a socket or two
 * between steps (shim_moves_reclaim_fds). */
static _Atomic int meetings;

int shim_meetings_held(void)
{
	return atomic_load_explicit(&meetings, memory_order_relaxed);
}

static void meet_free(struct tmeet *m, int keep_name)
{
	meet_close_sockets(m, keep_name);
	free(m);
	atomic_fetch_sub(&meetings, 1);
}

SHUNT_FORK_TEXT void shim_meet_drop(struct tsock *t)
{
	pthread_mutex_lock(&t->mu);
	struct tmeet *m = t->meet;
	t->meet = NULL;
	pthread_mutex_unlock(&t->mu);
	if (m)
		meet_free(m, 0);
}

/* Meetings shed in a signal handler, freed by the next meeting made. */
static _Atomic(struct tmeet *) shed;

int shim_meet_shed(struct tsock *t)
{
	if (pthread_mutex_trylock(&t->mu))
		return -EBUSY;
	struct tmeet *m = t->meet;
	t->meet = NULL;
	pthread_mutex_unlock(&t->mu);
	if (!m)
		return 0;
	meet_close_sockets(m, 0);
	atomic_fetch_sub(&meetings, 1);
	m->shed_next = atomic_load(&shed);
	while (!atomic_compare_exchange_weak(&shed, &m->shed_next, m))
		;
	return 0;
}

static void free_shed(void)
{
	struct tmeet *m = atomic_load(&shed) ? atomic_exchange(&shed, NULL) : NULL;

	while (m) {
		struct tmeet *next = m->shed_next;
		free(m);
		m = next;
	}
}

SHUNT_FORK_TEXT void shim_meet_forget(struct tsock *t)
{
	struct tmeet *m = t->meet;

	t->meet = NULL;
	if (m)
		meet_free(m, 1);
}

/* Room for one more meeting?  Each holds a socket or two between steps,
 * which come only with its connection's calls: peers without the shim
 * that go quiet left every meeting holding them, and a server at 64 fds
 * with 50 such clients had none left for an open inside glibc (opendir),
 * which cannot be given back as ours are (shim_moves_reclaim_fds): it
 * failed with EMFILE where over TCP it works (a helper's attack).  So
 * meetings hold at most a 16th of the fd limit (a 32nd as many meetings,
 * of two sockets at most), two meetings at least. */
static int meeting_room(void)
{
	struct rlimit rl;

	if (sys_prlimit(0, RLIMIT_NOFILE, NULL, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 1;
	rlim_t most = rl.rlim_cur / 32 > 2 ? rl.rlim_cur / 32 : 2;
	return (rlim_t)atomic_load(&meetings) < most;
}

/* A new meeting for t: its role and name (the directory checked); -EAGAIN
 * without room (meeting_room), tried again later. */
static int meet_new(struct tsock *t, struct tmeet **out)
{
	struct tslot *sl = t->slot;
	free_shed();
	if (!meeting_room())
		return -EAGAIN;
	struct tmeet *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->lfd = m->s = m->peer.sock = -1;
	m->dialer = shunt_addr_cmp(&sl->local, &sl->peer) > 0;
	m->file = shunt__config()->trust_netns;
	const struct shunt_addr *lo = m->dialer ? &sl->peer : &sl->local;
	const struct shunt_addr *hi = m->dialer ? &sl->local : &sl->peer;
	int rc = shim_meet_name(lo, hi, m->file, &m->name, &m->name_len);
	if (rc == 0 && m->file)
		rc = shunt__safe_dir(shunt__config()->dir);
	if (rc < 0) {
		free(m);
		return rc;
	}
	atomic_fetch_add(&meetings, 1);
	*out = m;
	return 0;
}

/* Takes fds only when told (rights = 1): nobody can make a meeting close a
 * socket it did not ask for, whose close() could linger (Linux 6.16; an
 * older kernel takes fds anyway, and shunt_close_untrusted copes). */
static void take_fds(int s, int rights)
{
	sys_setsockopt(s, SOL_SOCKET, SO_PASSRIGHTS, &rights, sizeof(rights));
}

static int seqpacket(void)
{
	int fd = shunt__hide_fd(sys_socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));

	if (fd >= 0)
		take_fds(fd, 0); /* a listener's setting passes to what it accepts */
	return fd;
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

static struct shim_meet_msg msg_of(uint32_t type, int fd)
{
	struct shim_meet_msg m = {
		.magic = SHIM_MEET_MAGIC, .version = SHIM_MEET_VERSION, .type = type,
		.tcp_fd = fd, .seg_fd = -1,
	};

	return m;
}

/* The ACCEPT, with the segment's memfd passed (SCM_RIGHTS), never left
 * open for the dialer to open through /proc/PID/fd: there, any process
 * that may ptrace-read ours but not attach (a same-user one where Yama
 * forbids attaching) opened it too, and read both rings for the
 * connection's life (a helper's attack, 9 runs in 13). */
static int send_accept(struct tmeet *m, int fd, uint64_t cap, int memfd)
{
	struct shim_meet_msg a = msg_of(SHIM_MEET_ACCEPT, fd);

	a.ring_size = cap;
	a.flags = SHIM_MEET_PASS;
	int rc = send_msg(m->s, &a, &memfd, 1);
	sys_close(memfd);
	return rc;
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
	/* Before our OPEN, which the peer reads before it switches. */
	shim_rx_publish_from(t, &seg.ctl->sw[0].rx_tcp);
	shim_end_init(sl, &seg, 0, shunt__config()->spin_us);
	t->mapped = 1;
	rc = send_accept(m, fd, seg.cap, (int)memfd);
	if (rc < 0) {
		t->mapped = 0;
		shim_rx_publish_stop(t);
		shunt_unmap(&sl->end.seg);
	}
	return rc;
}

/* The dialer at the door: who it is (the right one may still come). */
static int take_dialer(struct tmeet *m)
{
	int s = shunt__hide_fd(sys_accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK));

	if (s < 0)
		return s == -EAGAIN ? 0 : s;
	m->s = s;
	if (peer_of(m->s, &m->peer) < 0) {
		sys_close(m->s);
		m->s = -1;
		peer_clear(&m->peer);
	}
	return 0;
}

static int listen_step(struct tsock *t, int fd, struct tmeet *m)
{
	struct shim_meet_msg msg;
	int none[SHUNT_FDMSG_MAX];

	if (m->lfd < 0 && m->s < 0) {
		int rc = bind_name(m);
		if (rc < 0)
			return rc == -EADDRINUSE ? -EACCES : rc;
	}
	if (m->s < 0) {
		int rc = take_dialer(m);
		if (rc < 0 || m->s < 0)
			return rc;
	}
	int rc = recv_msg(m->s, SHIM_MEET_HELLO, &msg, none);
	if (rc == -EAGAIN)
		return 0;
	if (rc == 0)
		rc = prove(t, &m->peer, msg.tcp_fd);
	if (rc < 0) {
		refused("a dialer", &m->peer, rc);
		sys_close(m->s);
		m->s = -1;
		peer_clear(&m->peer);
		return 0;
	}
	rc = shim_may_commit(t);
	if (rc < 0)
		return rc;
	rc = answer(t, fd, m);
	if (rc < 0)
		return rc;
	/* The dialer has what it needs; the segment tells the rest. */
	meet_close_sockets(m, 0);
	return 1;
}

/* Connect to the listener's name and say HELLO: whether it can prove
 * itself to us decides first (no use otherwise). */
static int dial(struct tsock *t, int fd, struct tmeet *m)
{
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
	rc = peer_of(s, &m->peer);
	if (rc == 0)
		rc = prove(t, &m->peer, -1);
	if (rc < 0) {
		refused("the listener", &m->peer, rc);
		return rc;
	}
	take_fds(s, 1); /* the segment comes that way */
	struct shim_meet_msg h = msg_of(SHIM_MEET_HELLO, fd);
	return send_msg(s, &h, NULL, 0);
}

/* The listener's ACCEPT (its one fd, the segment, checked by
 * shim_meet_parse): its proof, then the segment.  0 and the segment's fd in
 * *seg, or why not (fds closed). */
static int take_accept(struct tsock *t, struct tmeet *m, const struct shim_meet_msg *a,
		       int *fds, int *seg)
{
	int rc = 0;

	if (atomic_load(&t->slot->flags) & TF_NOMOVE)
		rc = -ECANCELED; /* shut down, passed on or taken by stdio meanwhile */
	/* Its rings are our memory, pinned as we send: never bigger than
	 * ours would be (a listener could ask 1 GiB a connection). */
	if (rc == 0 && a->ring_size > shunt__config()->ring_size) {
		log_warn("the listener offered rings of %llu bytes, more than our ring-size",
			 (unsigned long long)a->ring_size);
		rc = -EPROTO;
	}
	if (rc == 0)
		rc = prove(t, &m->peer, a->tcp_fd);
	if (rc == 0) {
		*seg = fds[0];
		return 0;
	}
	shunt_close_untrusted(fds, 1);
	if (rc == -EACCES || rc == -EPERM)
		refused("the listener", &m->peer, rc);
	return rc;
}

static int dial_step(struct tsock *t, int fd, struct tmeet *m)
{
	struct shim_meet_msg msg;
	int fds[SHUNT_FDMSG_MAX], segfd = -1;

	int rc = m->s < 0 ? dial(t, fd, m) : 0;
	if (rc == 0 && m->s >= 0)
		rc = recv_msg(m->s, SHIM_MEET_ACCEPT, &msg, fds);
	else if (rc == 0)
		return 0;
	if (rc == -EAGAIN)
		return 0;
	if (rc == -ECONNRESET || rc == -EPIPE) {
		/* The listener went without an answer: it refused us, or the
		 * process that bound the name exited while another still holds
		 * the connection (sshd's pre-authentication child).  Dial again
		 * at a later step; the steps are counted. */
		sys_close(m->s);
		m->s = -1;
		peer_clear(&m->peer);
		return 0;
	}
	if (rc < 0)
		return rc;
	rc = take_accept(t, m, &msg, fds, &segfd);
	if (rc < 0)
		return rc;
	rc = shim_may_commit(t);
	if (rc < 0) {
		shunt_close_untrusted(&segfd, 1);
		return rc;
	}
	struct shunt_seg seg = { 0 };
	uint8_t bell = 0;
	rc = shunt_medium_local.attach(&seg, segfd, msg.ring_size, &bell);
	shunt_close_untrusted(&segfd, 1); /* passed: anything may have come */
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
	shim_rx_publish_from(t, &seg.ctl->sw[1].rx_tcp); /* as in answer() */
	shim_end_init(sl, &seg, 1, shunt__config()->spin_us);
	t->mapped = 1;
	meet_close_sockets(m, 0);
	return 1;
}

/* Done or given up, the meeting goes. */
int shim_meet_step(struct tsock *t, int fd)
{
	pthread_mutex_lock(&t->mu);
	struct tmeet *m = t->meet;
	int rc = m ? 0 : meet_new(t, &m);
	t->meet = m;
	if (rc == 0)
		rc = m->dialer ? dial_step(t, fd, m) : listen_step(t, fd, m);
	int keep = rc == 0;
	if (!keep)
		t->meet = NULL;
	/* Said under the lock: a read that took the peer's first doorbell
	 * learns of the move by waiting for it (shim_moved_now). */
	if (rc == 1)
		atomic_store(&t->slot->state, SLOT_MOVED);
	pthread_mutex_unlock(&t->mu);
	if (!keep && m)
		meet_free(m, 0);
	return rc;
}
