/*
 * upgrade.c - moving a TCP connection to shared memory, with proof.
 *
 * The kernel makes every TCP connection; shunt only offers a faster path
 * for one it made (docs/design.md, "Upgrading TCP connections"):
 *
 *  1. listen(): the listener publishes rendezvous UNIX sockets named by
 *     network namespace, address and port.
 *  2. connect(): before its SYN, the client offers a fresh segment over the
 *     rendezvous socket, passing its own TCP socket as proof; then it
 *     connects, and waits a bounded time for the decision.
 *  3. accept(): the server takes the offers waiting and upgrades the
 *     accepted connection only if an offer's socket is its exact mirror
 *     (the client's local address is the server's peer and the other way
 *     round).  It settles the decision word by compare-and-swap and rings
 *     the client.  A client that stops waiting settles it the other way.
 *
 * No byte moves on either path before the decision, so none can be lost or
 * doubled; anything that fails leaves the connection on TCP.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "rendezvous.h"
#include "shim.h"
#include "wake.h"

#include <shunt.h>

#define STASH_MAX 256              /* offers held per listener */
#define STASH_TTL_NS 10000000000ll /* an offer unmatched this long is dropped */

/* --- Addresses ------------------------------------------------------------ */

/* An address as compared and named: IPv4-mapped IPv6 counts as IPv4. */
struct shim_addr {
	int family;
	uint8_t a[16];
	uint16_t port;
};

static int to_addr(const struct sockaddr *sa, struct shim_addr *out)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		memcpy(out->a, &in->sin_addr, 4);
		out->port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
	int v4 = memcmp(in6->sin6_addr.s6_addr, mapped, 12) == 0;
	out->family = v4 ? AF_INET : AF_INET6;
	memcpy(out->a, in6->sin6_addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16);
	out->port = ntohs(in6->sin6_port);
	return 0;
}

static int sock_addr(int fd, int peer, struct shim_addr *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
		      : getsockname(fd, (struct sockaddr *)&ss, &len);

	return rc < 0 ? -errno : to_addr((struct sockaddr *)&ss, out);
}

static int addr_eq(const struct shim_addr *x, const struct shim_addr *y)
{
	return x->family == y->family && x->port == y->port && !memcmp(x->a, y->a, 16);
}

static int is_any(const struct shim_addr *x)
{
	static const uint8_t zero[16];

	return !memcmp(x->a, zero, 16);
}

static int is_loopback(const struct shim_addr *x)
{
	static const uint8_t lo6[16] = { [15] = 1 };

	return x->family == AF_INET ? x->a[0] == 127 : !memcmp(x->a, lo6, 16);
}

static void fmt_addr(const struct shim_addr *x, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	inet_ntop(x->family, x->a, ip, sizeof(ip));
	snprintf(buf, n, x->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)x->port);
}

/* Is fd a TCP socket?  (IPPROTO_TCP sockets are all SOCK_STREAM.) */
static int is_tcp(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) == 0 && v == IPPROTO_TCP;
}

/* --- Rendezvous names ------------------------------------------------------
 * DIR/<netns inode>/<4|6>-<hex address|any>-<port> for clients in the same
 * namespace; DIR/x/<4|6>-<hex address>-<port> for clients in others, which
 * reach only non-loopback addresses (the kernel still routes the SYN). */

/* Looked up once per process: a stat() of /proc costs a fifth of a TCP
 * connection.  A process that moves to another namespace afterwards names
 * the wrong rendezvous sockets, which costs it acceleration, never safety:
 * the server checks each offer's namespace itself (same_netns). */
static unsigned long long netns_id(void)
{
	static _Atomic unsigned long long id;
	unsigned long long v = atomic_load_explicit(&id, memory_order_relaxed);
	struct stat st;

	if (v == 0 && stat("/proc/self/ns/net", &st) == 0)
		atomic_store_explicit(&id, v = (unsigned long long)st.st_ino,
				      memory_order_relaxed);
	return v;
}

static int key_path(char *buf, size_t n, const char *scope, const struct shim_addr *x,
		    int any)
{
	char hex[33] = "any";

	if (!any)
		for (int i = 0; i < (x->family == AF_INET ? 4 : 16); i++)
			snprintf(hex + 2 * i, 3, "%02x", x->a[i]);
	int k = snprintf(buf, n, "%s/%s/%d-%s-%u", shunt__config()->dir, scope,
			 x->family == AF_INET ? 4 : 6, hex, (unsigned)x->port);
	return k > 0 && (size_t)k < n ? 0 : -ENAMETOOLONG;
}

static int ensure_scope(const char *scope)
{
	char d[sizeof(shunt__config()->dir) + 32];
	int rc = shunt__ensure_dir(shunt__config()->dir);

	snprintf(d, sizeof(d), "%s/%s", shunt__config()->dir, scope);
	return rc < 0 ? rc : shunt__ensure_dir(d);
}

/* --- listen() --------------------------------------------------------------- */

static void publish(struct shim_sock *l, int *n, const char *scope,
		    const struct shim_addr *x, int any)
{
	char path[sizeof(struct sockaddr_un) + 16];

	if (*n >= SHIM_MAX_KEYS || ensure_scope(scope) < 0 ||
	    key_path(path, sizeof(path), scope, x, any) < 0)
		return;
	int fd = shunt__unix_listen(path);
	if (fd < 0) {
		log_info("cannot publish %s: %s", path, strerror(-fd));
		return;
	}
	l->rv[*n] = fd;
	l->paths[*n] = strdup(path);
	(*n)++;
}

/* A wildcard listener is reachable from other namespaces at each of its
 * namespace's non-loopback addresses. */
static void publish_ifaddrs(struct shim_sock *l, int *n, const struct shim_addr *x)
{
	struct ifaddrs *ifs, *i;

	if (getifaddrs(&ifs) < 0)
		return;
	for (i = ifs; i; i = i->ifa_next) {
		struct shim_addr a;
		if (!i->ifa_addr || to_addr(i->ifa_addr, &a) < 0 || is_loopback(&a))
			continue;
		if (a.family != x->family && x->family == AF_INET)
			continue; /* a v4 wildcard takes no v6 clients */
		if (a.family == AF_INET6 && i->ifa_addr->sa_family == AF_INET6 &&
		    IN6_IS_ADDR_LINKLOCAL((const struct in6_addr *)a.a))
			continue;
		a.port = x->port;
		publish(l, n, "x", &a, 0);
	}
	freeifaddrs(ifs);
}

static int netns_cookie(int fd, uint64_t *out)
{
	socklen_t len = sizeof(*out);

	return getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, out, &len);
}

static int v6only(int fd)
{
	int v = 1;
	socklen_t len = sizeof(v);

	return getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len) < 0 || v;
}

void shim_on_listen(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct shim_addr x;
	char ns[32];

	if (!shim_enabled() || shim_has(fd) || !is_tcp(fd) ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
	    to_addr((struct sockaddr *)&ss, &x) < 0 ||
	    !shunt__tcp_allowed((struct sockaddr *)&ss))
		return;
	struct shim_sock *l = shim_sock_new(SHIM_LISTENER);
	if (!l)
		return;
	int n = 0;
	snprintf(ns, sizeof(ns), "%llx", netns_id());
	publish(l, &n, ns, &x, is_any(&x));
	if (is_any(&x) && x.family == AF_INET6 && !v6only(fd)) {
		struct shim_addr v4 = { .family = AF_INET, .port = x.port };
		publish(l, &n, ns, &v4, 1); /* a dual-stack wildcard takes IPv4 too */
	}
	if (is_any(&x))
		publish_ifaddrs(l, &n, &x);
	else if (!is_loopback(&x))
		publish(l, &n, "x", &x, 0);
	if (n == 0 || socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
				 l->queue) < 0) {
		shim_put(l);
		return;
	}
	l->queue[0] = shunt__hide_fd(l->queue[0]);
	l->queue[1] = shunt__hide_fd(l->queue[1]);
	/* Shared with the workers it is inherited by, like the queue. */
	void *page = mmap(NULL, sizeof(*l->in_hand), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	l->in_hand = page == MAP_FAILED ? NULL : page;
	l->owner = getpid();
	if (netns_cookie(fd, &l->netns_cookie) < 0)
		l->netns_cookie = 0; /* read per accept instead */
	if (!is_any(&x)) {
		memcpy(&l->bound, &ss, len);
		l->bound_known = 1;
	}
	log_info("listening fd %d: %d rendezvous socket(s), first %s", fd, n, l->paths[0]);
	shim_install(fd, l);
}

/* --- connect() ----------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * The ring size of a new connection.  A stream wants big rings (a 512 KiB
 * ring moved 2.5x what a 128 KiB one did with iperf3), but many connections
 * with big rings walk through more memory than the caches hold, and every
 * message lands on cold lines (nginx with 256 connections: 0.5x TCP with
 * 512 KiB rings, 2x with 32 KiB).  So a process's rings share a budget: the
 * configured size while they fit, halved down to 32 KiB beyond.
 */
#define RING_BUDGET (16u << 20)
#define RING_FLOOR (32u << 10)

static uint64_t ring_size_now(void)
{
	uint64_t cap = shunt__config()->ring_size;
	uint64_t n = (uint64_t)shim_live_conns() + 1;

	while (cap > RING_FLOOR && n * 2 * cap > RING_BUDGET)
		cap /= 2;
	return cap;
}

/* The rendezvous paths a client tries for dst, in order of likelihood. */
static int offer_paths(const struct shim_addr *dst, char (*paths)[SHIM_PATH_MAX])
{
	char ns[32];
	int n = 0;

	snprintf(ns, sizeof(ns), "%llx", netns_id());
	for (int i = 0; i < 3; i++) {
		if (i == 2 && is_loopback(dst))
			break; /* another namespace's loopback is out of reach */
		if (key_path(paths[n], SHIM_PATH_MAX, i == 2 ? "x" : ns, dst, i == 1) < 0)
			break;
		n++;
	}
	return n;
}

/* Offer over a link if one can be had, else the classic way, to the first
 * listener that answers. */
static int send_offer(int fd, const struct shim_addr *dst, struct shim_link_use *u)
{
	char paths[3][SHIM_PATH_MAX];
	int n = offer_paths(dst, paths);
	int rc = shim_link_offer(paths, n, ring_size_now(), fd, u);

	for (int i = 0; i < n && rc < 0; i++)
		rc = shunt__offer_send(paths[i], ring_size_now(), fd, &u->c, &u->memfd);
	return rc;
}

static int fd_nonblock(int fd)
{
	int fl = REAL(fcntl)(fd, F_GETFL);

	return fl >= 0 && (fl & O_NONBLOCK);
}

static struct shim_sock *conn_sock(struct shunt_conn *c, int memfd, int side, int nb)
{
	struct shim_sock *s = shim_sock_new(SHIM_CONN);

	if (!s)
		return NULL;
	s->c = c;
	s->memfd = memfd;
	s->side = side;
	atomic_init(&s->nonblock, nb);
	c->hangup_eof = 1;
	/* The peer was there a moment ago: no need to look at the first send. */
	atomic_init(&s->alive_ns, now_ns());
	return s;
}

static void drop_conn(struct shunt_conn *c, int memfd)
{
	shunt__conn_free(c);
	if (memfd >= 0)
		REAL(close)(memfd);
}

/* An offer that came to nothing: its segment goes (and its slot frees). */
static void drop_use(struct shim_link_use *u)
{
	if (u->link)
		shim_link_release(u->link, u->slot, u->c, u->memfd, 0);
	else
		drop_conn(u->c, u->memfd);
}

int shim_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct shim_addr dst;
	struct shim_link_use u = { .memfd = -1 };

	if (!shim_enabled() || !addr || len < sizeof(sa_family_t) || shim_has(fd) ||
	    to_addr(addr, &dst) < 0 || !shunt__tcp_allowed(addr) || !is_tcp(fd) ||
	    send_offer(fd, &dst, &u) < 0)
		return REAL(connect)(fd, addr, len);
	int rc = REAL(connect)(fd, addr, len);
	int err = errno;
	struct shim_sock *s = NULL;
	if (rc == 0 || err == EINPROGRESS)
		s = conn_sock(u.c, u.memfd, 0, fd_nonblock(fd));
	if (!s) { /* no connection (or no memory): nothing to decide */
		shunt__conn_decide(u.c, SHUNT_DECIDE_DECLINED);
		shim_link_decided(&u, 0);
		drop_use(&u);
		errno = err;
		return rc;
	}
	/* TCP's connect() does not wait for accept(), and neither do we: the
	 * first use of the fd waits for the decision (shim_settle). */
	s->link = u.link;
	s->slot = u.slot;
	s->probing = u.probing;
	s->deadline_ns = now_ns() + (int64_t)shunt__config()->upgrade_ms * 1000000;
	atomic_store_explicit(&s->pending, SHIM_PENDING, memory_order_release);
	shim_install(fd, s);
	errno = err;
	return rc;
}

static struct shim_link_use use_of(const struct shim_sock *s)
{
	return (struct shim_link_use){ s->c, s->memfd, s->link, s->slot, s->probing };
}

struct shim_sock *shim_settle(int fd, struct shim_sock *s)
{
	pthread_mutex_lock(&s->mu);
	if (atomic_load(&s->pending) == SHIM_PENDING) {
		int64_t left = s->deadline_ns - now_ns();
		struct shim_link_use u = use_of(s);
		int ok = shunt__conn_await_decision(s->c, left > 0 ? left : 0) ==
			 SHUNT_DECIDE_ACCEPTED;
		shim_link_decided(&u, ok);
		if (ok)
			log_info("upgraded fd %d (connect%s)", fd, s->link ? ", linked" : "");
		else
			log_debug("fd %d stays on TCP: the server did not take the offer%s", fd,
				  s->probing ? " (asking for a link)" : s->link ? " (over a link)" : "");
		atomic_store_explicit(&s->pending, ok ? SHIM_SETTLED : SHIM_DECLINED,
				      memory_order_release);
	}
	int declined = atomic_load(&s->pending) == SHIM_DECLINED;
	pthread_mutex_unlock(&s->mu);
	if (!declined)
		return s;
	shim_unset(fd, s);
	shim_put(s);
	return NULL;
}

void shim_pending_free(struct shim_sock *s)
{
	struct shim_link_use u = use_of(s);
	uint32_t d = SHUNT_DECIDE_DECLINED;

	if (atomic_load(&s->pending) == SHIM_PENDING) { /* closed before any use */
		d = shunt__conn_decide(s->c, SHUNT_DECIDE_DECLINED);
		shim_link_decided(&u, d == SHUNT_DECIDE_ACCEPTED);
	}
	if (d != SHUNT_DECIDE_ACCEPTED && s->link) /* unused: parked as it is */
		shim_link_release(s->link, s->slot, s->c, s->memfd, 1);
	else if (d != SHUNT_DECIDE_ACCEPTED)
		drop_use(&u);
	else if (s->link) /* the server took it first: a close like any other */
		shim_link_release(s->link, s->slot, s->c, s->memfd, !s->shared);
	else
		shim_close_conn(s);
}

/* --- accept() -------------------------------------------------------------- */

struct stash_entry {
	struct shunt_offer o;
	struct shim_link *link; /* the link it came over (a reference), or NULL */
	struct shim_addr local, peer; /* of the proof socket, once connected */
	int known;
	int64_t t0;
};

struct shim_stash {
	int n;
	struct stash_entry e[STASH_MAX];
};

static void offer_drop(struct stash_entry *e)
{
	struct shunt_offer *o = &e->o;

	shunt__conn_decide(o->c, SHUNT_DECIDE_DECLINED);
	if (e->link) /* parked: the client may take it up again */
		shim_link_release(e->link, o->slot, o->c, o->memfd, 1);
	else
		drop_conn(o->c, o->memfd);
	REAL(close)(o->proof);
}

static void stash_remove(struct shim_stash *st, int i, int drop)
{
	if (drop)
		offer_drop(&st->e[i]);
	st->e[i] = st->e[--st->n];
}

static void stash_add(struct shim_stash *st, const struct shunt_offer *o,
		      struct shim_link *link)
{
	if (st->n == STASH_MAX)
		stash_remove(st, 0, 1);
	st->e[st->n++] = (struct stash_entry){ .o = *o, .link = link, .t0 = now_ns() };
}

/* Links are kept by a listener no other process accepts on: an offer over
 * a link reaches only the process that holds it. */
static int linkable(const struct shim_sock *l)
{
	return !l->shared && l->owner == getpid() && l->nlinks < SHIM_LISTEN_LINKS;
}

static void link_remove(struct shim_sock *l, int i)
{
	shim_link_drop(l->links[i]);
	l->links[i] = l->links[--l->nlinks];
}

/* An offer that came over link k (or asked for it): claim its slot. */
static void stash_linked(struct shim_sock *l, struct shim_link *k, struct shunt_offer *o)
{
	if (shim_link_claim(k, o) < 0) {
		if (o->c)
			drop_conn(o->c, o->memfd);
		REAL(close)(o->proof);
		return;
	}
	stash_add(l->stash, o, k);
}

/* A classic offer, or the first one of a client that asks for a link. */
static void stash_new(struct shim_sock *l, struct shunt_offer *o)
{
	struct shim_link *k = NULL;

	if (o->link >= 0 && linkable(l) && (k = shim_link_adopt(o->link)) != NULL) {
		l->links[l->nlinks++] = k;
		shunt__conn_set_linked(o->c);
		stash_linked(l, k, o);
		return;
	}
	if (o->link >= 0)
		REAL(close)(o->link); /* the client learns it in the segment */
	stash_add(l->stash, o, NULL);
}

static void take_rendezvous(struct shim_sock *l, int fd)
{
	struct shunt_offer o;
	int rc;

	while ((rc = shunt__offer_take(fd, &o)) != -EAGAIN) {
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM)
			break;
		if (rc == 0)
			stash_new(l, &o);
	}
}

static void take_queue(struct shim_sock *l)
{
	struct shunt_offer o;
	int rc;

	while ((rc = shunt__offer_recv(l->queue[1], &o)) != -EAGAIN) {
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM)
			break;
		if (rc == 0)
			stash_add(l->stash, &o, NULL);
	}
}

/* Does the offer's proof socket mirror the accepted connection? */
static int proves(struct stash_entry *e, const struct shim_addr *local,
		  const struct shim_addr *peer)
{
	if (!e->known) {
		if (sock_addr(e->o.proof, 0, &e->local) < 0 ||
		    sock_addr(e->o.proof, 1, &e->peer) < 0)
			return 0; /* not connected yet: its SYN is still to come */
		e->known = 1;
	}
	return addr_eq(&e->local, peer) && addr_eq(&e->peer, local);
}

/* The stash entry from `from` on that proves the accepted connection, or -1.
 * An offer its client already declined (it closed the socket unused) is no
 * match worth two syscalls: it leaves as stale. */
static int find_match(struct shim_stash *st, int from, const struct shim_addr *local,
		      const struct shim_addr *peer)
{
	for (int i = st->n - 1; i >= from; i--)
		if (shunt__conn_decide(st->e[i].o.c, SHUNT_DECIDE_PENDING) ==
			    SHUNT_DECIDE_PENDING &&
		    proves(&st->e[i], local, peer))
			return i;
	return -1;
}

/* Offers on link i, one at a time until one proves the connection (most
 * often the first: clients offer in the order they connect): its stash
 * index, or -1.  A link that broke is removed. */
static int take_link(struct shim_sock *l, int i, const struct shim_addr *local,
		     const struct shim_addr *peer)
{
	struct shim_link *k = l->links[i];
	struct shunt_offer o;
	int rc;

	while ((rc = shunt__link_take(shim_link_fd(k), &o)) == 0) {
		int n0 = l->stash->n;
		stash_linked(l, k, &o);
		if (l->stash->n >= n0 && l->stash->n > 0 &&
		    find_match(l->stash, l->stash->n - 1, local, peer) >= 0)
			return l->stash->n - 1;
	}
	if (rc != -EAGAIN && rc != -EMFILE && rc != -ENFILE && rc != -ENOMEM) {
		log_debug("dropping a link: %s", strerror(-rc));
		link_remove(l, i);
	}
	return -1;
}

/*
 * Take the offers waiting, until one proves the connection accepted: new
 * clients on the rendezvous sockets, offers over links, and those that
 * other processes of this listener took but could not match.  One ppoll()
 * says where to look.  Returns the matching stash index, or -1.
 */
static int stash_fill(struct shim_sock *l, const struct shim_addr *local,
		      const struct shim_addr *peer)
{
	struct pollfd p[SHIM_MAX_KEYS + 1 + SHIM_LISTEN_LINKS];
	int nrv = 0, n, m;

	while (nrv < SHIM_MAX_KEYS && l->rv[nrv] >= 0) {
		p[nrv] = (struct pollfd){ .fd = l->rv[nrv], .events = POLLIN };
		nrv++;
	}
	p[nrv] = (struct pollfd){ .fd = l->queue[1], .events = POLLIN };
	n = nrv + 1;
	for (int i = 0; i < l->nlinks; i++)
		p[n++] = (struct pollfd){ .fd = shim_link_fd(l->links[i]), .events = POLLIN };
	if (REAL(ppoll)(p, (nfds_t)n, &(struct timespec){ 0, 0 }, NULL) <= 0)
		return find_match(l->stash, 0, local, peer);
	for (int i = 0; i < nrv; i++)
		if (p[i].revents)
			take_rendezvous(l, l->rv[i]);
	if (p[nrv].revents)
		take_queue(l);
	if ((m = find_match(l->stash, 0, local, peer)) >= 0)
		return m;
	/* Backwards: link_remove moves the last link into slot i. */
	for (int i = n - nrv - 2; i >= 0; i--)
		if (p[nrv + 1 + i].revents && (m = take_link(l, i, local, peer)) >= 0)
			return m;
	return -1;
}

/* Classic offers left unmatched go back to the queue at once: the
 * connection may be another process's to accept (a pre-forked server), and
 * an offer held here would also hold the client's FIN back (docs/design.md).
 * An offer the queue cannot take is dropped; its client sees the hang-up
 * and uses TCP.  Offers over a link stay: only this process can take them.
 * Their proofs move out of the program's fd range (shunt__link_take left
 * them where they came). */
static void stash_pass(struct shim_sock *l)
{
	struct shim_stash *st = l->stash;

	for (int i = st->n - 1; i >= 0; i--) {
		struct stash_entry *e = &st->e[i];
		if (e->link) {
			e->o.proof = shunt__hide_fd(e->o.proof);
			continue;
		}
		shunt__offer_pass(l->queue[0], &e->o);
		stash_remove(st, i, 0);
	}
}

/* Loopback addresses are the same in every namespace: an offer for one must
 * come from a socket in ours, or a process in another namespace could claim
 * a connection it cannot reach.  The accepted socket is in its listener's
 * namespace, whose cookie was read once. */
static int same_netns(const struct shim_sock *l, int fd, int proof)
{
	uint64_t mine = l->netns_cookie, c = 0;

	if (!mine && netns_cookie(fd, &mine) < 0)
		return 0;
	return netns_cookie(proof, &c) == 0 && c == mine;
}

static void set_info(struct shunt_conn *c, const struct shim_addr *local,
		     const struct shim_addr *peer)
{
	struct shunt_tcp_info info = {
		.family = (uint16_t)local->family,
		.client_port = peer->port,
		.server_port = local->port,
	};
	memcpy(info.client_addr, peer->a, 16);
	memcpy(info.server_addr, local->a, 16);
	shunt__conn_set_info(c, &info);
}

static void upgrade_accepted(struct shim_stash *st, int i, int fd, int nb,
			     const struct shim_addr *local, const struct shim_addr *peer)
{
	struct stash_entry e = st->e[i];
	struct shunt_offer *o = &e.o;

	stash_remove(st, i, 0);
	REAL(close)(o->proof); /* at once: it holds the client's FIN back */
	o->proof = -1;
	struct shim_sock *s = NULL;
	if (shunt__conn_decide(o->c, SHUNT_DECIDE_ACCEPTED) == SHUNT_DECIDE_ACCEPTED) {
		set_info(o->c, local, peer);
		shunt__conn_wake_decided(o->c);
		s = conn_sock(o->c, o->memfd, 1, nb);
	}
	if (!s) { /* declined (the client closed first), or no memory */
		if (e.link) /* declined, the segment is good for the next one */
			shim_link_release(e.link, o->slot, o->c, o->memfd, 1);
		else
			drop_conn(o->c, o->memfd);
		return;
	}
	s->link = e.link;
	s->slot = o->slot;
	if (shunt__log_level >= SHUNT_LOG_INFO) {
		char a[64], b[64];
		fmt_addr(peer, a, sizeof(a));
		fmt_addr(local, b, sizeof(b));
		log_info("upgraded fd %d %s -> %s (accept%s)", fd, a, b,
			 e.link ? ", linked" : "");
	}
	shim_install(fd, s);
}

/* Drop offers that are decided, expired, or whose client hung up. */
static int stale(struct stash_entry *e, int64_t now)
{
	if (shunt__conn_decide(e->o.c, SHUNT_DECIDE_PENDING) != SHUNT_DECIDE_PENDING ||
	    now - e->t0 > STASH_TTL_NS)
		return 1;
	if (e->known)
		return 0; /* connected: a hang-up would have settled it */
	struct pollfd p = { .fd = shunt__conn_bell(e->o.c, 0), .events = 0 };
	return REAL(ppoll)(&p, 1, &(struct timespec){ 0, 0 }, NULL) > 0 &&
	       (p.revents & (POLLHUP | POLLERR));
}

/*
 * A listener shared by several accepting processes: the offer for the
 * connection just accepted may be in another's hands, taken from the
 * rendezvous socket with others and about to be passed on.  Each process
 * counts itself in a shared word while it holds offers; with no match here
 * and someone holding some, wait a little for them in the queue.
 */
#define PASS_WAIT_NS 2000000

static int await_passed(struct shim_sock *l, const struct shim_addr *local,
			const struct shim_addr *peer)
{
	int64_t end = now_ns() + PASS_WAIT_NS;
	int m = -1;

	while (m < 0 && atomic_load(l->in_hand) > 0 && now_ns() < end) {
		sched_yield();
		take_queue(l);
		if ((m = find_match(l->stash, 0, local, peer)) < 0)
			stash_pass(l);
	}
	return m;
}

void shim_on_accept(struct shim_sock *l, int fd, int flags, const struct sockaddr *from)
{
	struct shim_addr local, peer;

	/* The accepted socket's local address is its listener's, unless that
	 * is a wildcard; its peer's came with accept(). */
	if ((l->bound_known ? to_addr((struct sockaddr *)&l->bound, &local)
			    : sock_addr(fd, 0, &local)) < 0 ||
	    to_addr(from, &peer) < 0)
		return;
	pthread_mutex_lock(&l->mu);
	if (!l->stash)
		l->stash = calloc(1, sizeof(*l->stash));
	if (l->stash) {
		struct shim_stash *st = l->stash;
		int64_t now = now_ns();
		_Atomic int *in_hand = l->shared ? l->in_hand : NULL;
		if (in_hand)
			atomic_fetch_add(in_hand, 1);
		int m = stash_fill(l, &local, &peer);
		if (m < 0 && in_hand) {
			stash_pass(l);
			atomic_fetch_sub(in_hand, 1);
			in_hand = NULL;
			m = await_passed(l, &local, &peer);
		}
		if (m >= 0 && (!is_loopback(&local) || same_netns(l, fd, st->e[m].o.proof)))
			upgrade_accepted(st, m, fd, !!(flags & SOCK_NONBLOCK), &local, &peer);
		for (int i = st->n - 1; i >= 0; i--)
			if (stale(&st->e[i], now))
				stash_remove(st, i, 1);
		stash_pass(l);
		if (in_hand)
			atomic_fetch_sub(in_hand, 1);
	}
	pthread_mutex_unlock(&l->mu);
}

void shim_listener_free(struct shim_sock *l)
{
	for (int k = 0; k < SHIM_MAX_KEYS; k++) {
		if (l->rv[k] < 0)
			continue;
		/* Only the publisher removes the name: a forked worker closing
		 * its copy must not hide the listener from new clients. */
		if (l->owner == getpid() && l->paths[k])
			unlink(l->paths[k]);
		REAL(close)(l->rv[k]);
		free(l->paths[k]);
	}
	for (int i = 0; i < 2; i++)
		if (l->queue[i] >= 0)
			REAL(close)(l->queue[i]);
	if (l->in_hand)
		munmap((void *)l->in_hand, sizeof(*l->in_hand));
	if (l->stash)
		while (l->stash->n > 0)
			stash_remove(l->stash, l->stash->n - 1, 1);
	while (l->nlinks > 0)
		link_remove(l, l->nlinks - 1);
	free(l->stash);
}

/* In a child after fork(): the listener's links, and the offers that came
 * over them, are the parent's.  The child lets go of its copies without a
 * word in the segments, which are the parent's to settle. */
void shim_listener_forked(struct shim_sock *l)
{
	struct shim_stash *st = l->stash;

	pthread_mutex_init(&l->mu, NULL);
	for (int i = st ? st->n - 1 : -1; i >= 0; i--) {
		struct stash_entry *e = &st->e[i];
		if (!e->link)
			continue;
		shim_link_release(e->link, e->o.slot, e->o.c, e->o.memfd, 0);
		REAL(close)(e->o.proof);
		stash_remove(st, i, 0);
	}
	for (int i = 0; i < l->nlinks; i++)
		shim_link_forget(l->links[i]);
	l->nlinks = 0;
}
