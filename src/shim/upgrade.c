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
#include <string.h>
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

/* Is fd a TCP stream socket? */
static int is_tcp(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) < 0 || v != IPPROTO_TCP)
		return 0;
	len = sizeof(v);
	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0 && v == SOCK_STREAM;
}

/* --- Rendezvous names ------------------------------------------------------
 * DIR/<netns inode>/<4|6>-<hex address|any>-<port> for clients in the same
 * namespace; DIR/x/<4|6>-<hex address>-<port> for clients in others, which
 * reach only non-loopback addresses (the kernel still routes the SYN). */

static unsigned long long netns_id(void)
{
	struct stat st;

	return stat("/proc/self/ns/net", &st) == 0 ? (unsigned long long)st.st_ino : 0;
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
	l->owner = getpid();
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

/* Offer to the first listener that answers, in order of likelihood. */
static int send_offer(int fd, const struct shim_addr *dst, struct shunt_conn **c,
		      int *memfd)
{
	char path[sizeof(struct sockaddr_un) + 16], ns[32];
	int rc = -ENOENT;

	snprintf(ns, sizeof(ns), "%llx", netns_id());
	for (int i = 0; i < 3 && rc < 0; i++) {
		if (i == 2 && is_loopback(dst))
			break; /* another namespace's loopback is out of reach */
		if (key_path(path, sizeof(path), i == 2 ? "x" : ns, dst, i == 1) < 0)
			break;
		rc = shunt__offer_send(path, ring_size_now(), fd, c, memfd);
	}
	return rc;
}

/* Wait for the server's decision, then settle it ourselves if it did not
 * come: a server that never accepts costs one bounded wait. */
static uint32_t await_decision(struct shunt_conn *c)
{
	int64_t deadline = now_ns() + (int64_t)shunt__config()->upgrade_ms * 1000000;
	int bell = shunt__conn_bell(c, 0);

	for (;;) {
		uint32_t d = shunt__conn_decide(c, SHUNT_DECIDE_PENDING);
		if (d != SHUNT_DECIDE_PENDING)
			return d;
		int64_t left = deadline - now_ns();
		if (left <= 0)
			break;
		struct pollfd p = { .fd = bell, .events = POLLIN };
		struct timespec ts = { left / 1000000000, left % 1000000000 };
		if (REAL(ppoll)(&p, 1, &ts, NULL) > 0 && (p.revents & (POLLHUP | POLLERR)))
			break; /* the server dropped the offer */
	}
	return shunt__conn_decide(c, SHUNT_DECIDE_DECLINED);
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
	return s;
}

static void drop_conn(struct shunt_conn *c, int memfd)
{
	shunt__conn_free(c);
	if (memfd >= 0)
		REAL(close)(memfd);
}

int shim_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct shim_addr dst;
	struct shunt_conn *c = NULL;
	int memfd = -1;

	if (!shim_enabled() || !addr || len < sizeof(sa_family_t) || shim_has(fd) ||
	    to_addr(addr, &dst) < 0 || !shunt__tcp_allowed(addr) || !is_tcp(fd) ||
	    send_offer(fd, &dst, &c, &memfd) < 0)
		return REAL(connect)(fd, addr, len);
	int rc = REAL(connect)(fd, addr, len);
	int err = errno;
	if (rc < 0 && err != EINPROGRESS) {
		shunt__conn_decide(c, SHUNT_DECIDE_DECLINED);
		drop_conn(c, memfd);
		errno = err;
		return rc;
	}
	struct shim_sock *s = NULL;
	if (await_decision(c) == SHUNT_DECIDE_ACCEPTED)
		s = conn_sock(c, memfd, 0, fd_nonblock(fd));
	if (s) {
		log_info("upgraded fd %d (connect)", fd);
		shim_install(fd, s);
	} else {
		log_debug("fd %d stays on TCP: the server did not take the offer", fd);
		drop_conn(c, memfd);
	}
	errno = err;
	return rc;
}

/* --- accept() -------------------------------------------------------------- */

struct stash_entry {
	struct shunt_offer o;
	struct shim_addr local, peer; /* of the proof socket, once connected */
	int known;
	int64_t t0;
};

struct shim_stash {
	int n;
	struct stash_entry e[STASH_MAX];
};

static void offer_drop(struct shunt_offer *o)
{
	shunt__conn_decide(o->c, SHUNT_DECIDE_DECLINED);
	drop_conn(o->c, o->memfd);
	REAL(close)(o->proof);
}

static void stash_remove(struct shim_stash *st, int i, int drop)
{
	if (drop)
		offer_drop(&st->e[i].o);
	st->e[i] = st->e[--st->n];
}

static void stash_add(struct shim_stash *st, const struct shunt_offer *o)
{
	if (st->n == STASH_MAX)
		stash_remove(st, 0, 1);
	st->e[st->n++] = (struct stash_entry){ .o = *o, .t0 = now_ns() };
}

/* Take every offer waiting: new ones on the rendezvous sockets, and those
 * that other processes of this listener took but could not match. */
static void stash_fill(struct shim_sock *l)
{
	struct shunt_offer o;
	int rc;

	for (int k = 0; k < SHIM_MAX_KEYS && l->rv[k] >= 0; k++) {
		while ((rc = shunt__offer_take(l->rv[k], &o)) != -EAGAIN) {
			if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM)
				break;
			if (rc == 0)
				stash_add(l->stash, &o);
		}
	}
	while ((rc = shunt__offer_recv(l->queue[1], &o)) != -EAGAIN) {
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM)
			break;
		if (rc == 0)
			stash_add(l->stash, &o);
	}
}

/* Offers left unmatched go back to the queue at once: the connection may be
 * another process's to accept (a pre-forked server), and an offer held here
 * would also hold the client's FIN back (docs/design.md).  An offer the
 * queue cannot take is dropped; its client sees the hang-up and uses TCP. */
static void stash_pass(struct shim_sock *l)
{
	struct shim_stash *st = l->stash;

	for (int i = 0; i < st->n; i++)
		shunt__offer_pass(l->queue[0], &st->e[i].o);
	st->n = 0;
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

/* Loopback addresses are the same in every namespace: an offer for one must
 * come from a socket in ours, or a process in another namespace could claim
 * a connection it cannot reach. */
static int same_netns(int a, int b)
{
	uint64_t ca = 0, cb = 0;
	socklen_t la = sizeof(ca), lb = sizeof(cb);

	if (getsockopt(a, SOL_SOCKET, SO_NETNS_COOKIE, &ca, &la) < 0 ||
	    getsockopt(b, SOL_SOCKET, SO_NETNS_COOKIE, &cb, &lb) < 0)
		return 0;
	return ca == cb;
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
	struct shunt_offer o = st->e[i].o;

	stash_remove(st, i, 0);
	REAL(close)(o.proof); /* at once: it holds the client's FIN back */
	if (shunt__conn_decide(o.c, SHUNT_DECIDE_ACCEPTED) != SHUNT_DECIDE_ACCEPTED) {
		drop_conn(o.c, o.memfd);
		return;
	}
	set_info(o.c, local, peer);
	shunt_bell_ring(shunt__conn_bell(o.c, 0));
	struct shim_sock *s = conn_sock(o.c, o.memfd, 1, nb);
	if (!s) {
		drop_conn(o.c, o.memfd); /* the client sees the hang-up: reset */
		return;
	}
	if (shunt__log_level >= SHUNT_LOG_INFO) {
		char a[64], b[64];
		fmt_addr(peer, a, sizeof(a));
		fmt_addr(local, b, sizeof(b));
		log_info("upgraded fd %d %s -> %s (accept)", fd, a, b);
	}
	shim_install(fd, s);
}

/* Drop offers that are decided, expired, or whose client hung up. */
static int stale(struct stash_entry *e, int64_t now)
{
	if (shunt__conn_decide(e->o.c, SHUNT_DECIDE_PENDING) != SHUNT_DECIDE_PENDING ||
	    now - e->t0 > STASH_TTL_NS)
		return 1;
	struct pollfd p = { .fd = shunt__conn_bell(e->o.c, 0), .events = 0 };
	return REAL(ppoll)(&p, 1, &(struct timespec){ 0, 0 }, NULL) > 0 &&
	       (p.revents & (POLLHUP | POLLERR));
}

void shim_on_accept(struct shim_sock *l, int fd, int flags)
{
	struct shim_addr local, peer;

	if (sock_addr(fd, 0, &local) < 0 || sock_addr(fd, 1, &peer) < 0)
		return;
	pthread_mutex_lock(&l->mu);
	if (!l->stash)
		l->stash = calloc(1, sizeof(*l->stash));
	if (l->stash) {
		struct shim_stash *st = l->stash;
		int64_t now = now_ns();
		stash_fill(l);
		for (int i = st->n - 1; i >= 0; i--) {
			if (stale(&st->e[i], now)) {
				stash_remove(st, i, 1);
			} else if (proves(&st->e[i], &local, &peer) &&
				   (!is_loopback(&local) || same_netns(fd, st->e[i].o.proof))) {
				upgrade_accepted(st, i, fd, !!(flags & SOCK_NONBLOCK), &local,
						 &peer);
				break;
			}
		}
		stash_pass(l);
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
	free(l->stash);
}
