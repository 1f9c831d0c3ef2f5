/*
 * epoll.c - epoll sets holding tracked sockets.
 *
 * A tracked socket's registration is plain while the connection is on TCP
 * (the kernel's alone, under the program's data: "Plain registrations"
 * below) and an entry of ours from its move on, or once it needs one
 * (EPOLLONESHOT, EPOLLEXCLUSIVE).  An entry's registration carries a tag
 * of ours in place of the program's data: each event the kernel returns
 * for it comes back to us, and is given the program's data before the
 * program sees it.  While the connection is on TCP the entry keeps the
 * program's events, and the kernel's answer is the answer (we only note
 * that an EPOLLONESHOT fired).  When it moves,
 * the registration is modified in place to ours: edge-triggered on input
 * (each doorbell that arrives wakes the set once), and a wait reads the
 * socket's readiness from its rings.  An epoll set of ours that the
 * program puts in another set, or waits on with poll(), is looked into
 * the same way, so that a stale doorbell never makes it look ready.
 *
 * The rules (issue "Invisible to the program"):
 *   - the program never receives an event it did not register: every
 *     event the kernel returns is checked for our tag, in every wait,
 *     including one that began before the socket moved;
 *   - a wait asleep in the kernel when a socket moves still wakes on its
 *     doorbell: the registration is modified in place;
 *   - no lock of ours is held across a call that could enter the library;
 *     entries hold references, so a socket closed meanwhile is not freed
 *     under a scan, and a set is freed only once no wait uses it.
 *
 * A wait asleep in the kernel cannot see a moved socket become ready
 * through the program's own doing (an EPOLL_CTL_MOD that re-arms a socket
 * whose data waits in its ring, a read in another thread that took the
 * doorbell): the kernel sees no new byte.  So a set with moved sockets
 * holds an eventfd of ours as well, which such a change kicks when a wait
 * is in progress: the wait wakes and looks at the rings again.
 *
 * A tag is a random 32-bit secret (top bit set: no user-space pointer
 * looks like it) above a 12-bit generation and a 20-bit entry number,
 * checked against the entry it names, in the set the event came from.
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "spin.h"
#include "sys.h"

#define MAX_ENTRIES (1u << 20)
#define STASH 64

struct shim_ep;

enum { E_SOCK = 1, E_SET, E_KICK };

struct ep_entry {
	struct shim_ep *ep;       /* the set it is in */
	int kind;                 /* E_SOCK: a tracked socket; E_SET: a set of ours */
	int fd;                   /* the number it was added under */
	int sysfd;                /* for our calls on it: fd, or our dup once fd closed */
	struct tsock *t;          /* E_SOCK: a reference */
	struct shim_ep *inner;    /* E_SET: a reference */
	uint32_t events;          /* as the program asked, EPOLLET etc. included */
	epoll_data_t data;        /* the program's */
	uint64_t tag;
	uint32_t id;
	int at;                   /* its index in ep->e */
	struct ep_entry *hnext;   /* the next entry of ep->hb[fd % nb] */
	int ours;                 /* the socket moved: the registration is ours */
	int fired;                /* EPOLLONESHOT: reported, off until MOD */
	int hot;                  /* level-triggered and ready: look again */
	int quiet;                /* its kernel socket had only doorbells, taken */
	int news;                 /* poll bits of a kernel event not yet looked at */
	uint32_t seen;            /* the socket's io_gen when last looked at */
	uint32_t armed;           /* SHUNT_WAIT_* armed for it when last looked at */
	uint64_t progress;        /* for edge triggering */
	uint64_t round;           /* the wait that last reported it */
};

struct shim_ep {
	int epfd;
	struct shunt_spin spin;
	pthread_mutex_t mu;
	int n, cap;
	struct ep_entry **e;
	struct ep_entry **hb;     /* entries by fd: chains of hnext, nb = cap */
	_Atomic int nours;        /* entries whose socket moved (read unlocked by a wait) */
	_Atomic int unrung;       /* of those, news no doorbell tells at the last scan */
	_Atomic int shared;       /* of those, held by another process too (poll.c, nap_ns) */
	_Atomic int64_t jam_at;   /* the first wait for room to give up (io.c,
	                           * "Both ends full"), at the last scan */
	struct ep_entry *kick;    /* our eventfd in the set, once it has moved ones */
	_Atomic uint64_t kicks;   /* the connections whose doorbells concern its
	                           * waits: the tracked sockets added to it, and
	                           * all once a set of ours is in it (kick.c) */
	_Atomic int waiting;      /* waits inside the kernel now */
	uint64_t rounds;
	int scan_from;            /* where the next scan starts: after the last it reported */
	unsigned full_waits;      /* waits whose moved entries filled the array */
	_Atomic int refs;         /* the list's, and each user's in progress */
	struct epoll_event stash[STASH]; /* taken from the kernel, not yet given */
	struct ep_entry *stash_e[STASH]; /* whose (NULL: not ours) */
	int nstash;
	struct shim_ep *next;
};

#define UNRUNG_NAP_NS 1000000
#define SHARED_NAP_NS 10000000

static void ep_lock(struct shim_ep *ep);
static void ep_unlock(struct shim_ep *ep);
/* The list of sets: read by every wait and epoll_ctl of every thread,
 * written only when a set comes or goes. */
static pthread_rwlock_t eps_rw = PTHREAD_RWLOCK_INITIALIZER;
static struct shim_ep *eps;
static _Atomic int n_eps; /* fast path: no set of ours at all */
static uint32_t secret;

/* --- Entries by number ------------------------------------------------------ */

/*
 * Numbers are given out under ids_mu, lowest free first (a freed one
 * lowers the hint: the tables are touched on as few pages as entries need).
 * Every wait looks its events' numbers up without the lock: id_ep says
 * which set a number's entry is in, and only an entry of the caller's own
 * set, which cannot leave it while the caller holds the set's lock, is
 * read (an entry of another set may be freed meanwhile).
 */
static pthread_mutex_t ids_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ep_entry *_Atomic *ids;   /* published once, with id_ep */
static struct shim_ep *_Atomic *id_ep;
static uint16_t *id_gen;
static uint32_t id_hint;

static int id_tables(void)
{
	if (ids)
		return 0;
	id_ep = calloc(MAX_ENTRIES, sizeof(*id_ep));
	id_gen = calloc(MAX_ENTRIES, sizeof(*id_gen));
	struct ep_entry *_Atomic *v = calloc(MAX_ENTRIES, sizeof(*v));
	if (!v || !id_ep || !id_gen) {
		free(v);
		free(id_ep);
		free(id_gen);
		id_ep = NULL;
		id_gen = NULL;
		return -ENOMEM;
	}
	__atomic_store_n(&ids, v, __ATOMIC_RELEASE);
	return 0;
}

/* A number for e, whose set (e->ep) is known. */
static int id_alloc(struct ep_entry *e)
{
	int rc = -ENOSPC;

	pthread_mutex_lock(&ids_mu);
	if (id_tables() < 0) {
		pthread_mutex_unlock(&ids_mu);
		return -ENOMEM;
	}
	for (uint32_t k = 0; k < MAX_ENTRIES; k++) {
		uint32_t i = (id_hint + k) % MAX_ENTRIES;
		if (atomic_load_explicit(&ids[i], memory_order_relaxed))
			continue;
		id_gen[i] = (uint16_t)((id_gen[i] + 1) & 0xfff);
		e->id = i;
		e->tag = (uint64_t)secret << 32 | (uint64_t)id_gen[i] << 20 | i;
		atomic_store_explicit(&ids[i], e, memory_order_release);
		atomic_store_explicit(&id_ep[i], e->ep, memory_order_release);
		id_hint = i + 1;
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&ids_mu);
	return rc;
}

static void id_free(struct ep_entry *e)
{
	pthread_mutex_lock(&ids_mu);
	if (ids && atomic_load_explicit(&ids[e->id], memory_order_relaxed) == e) {
		atomic_store_explicit(&id_ep[e->id], NULL, memory_order_release);
		atomic_store_explicit(&ids[e->id], NULL, memory_order_release);
		if (e->id < id_hint)
			id_hint = e->id;
	}
	pthread_mutex_unlock(&ids_mu);
}

static int is_tag(uint64_t data)
{
	return secret && (uint32_t)(data >> 32) == secret;
}

/* The entry of set ep a kernel event's data names, if it is our tag.
 * Under ep->mu: entries leave a set only under its lock. */
static struct ep_entry *tagged(struct shim_ep *ep, uint64_t data)
{
	struct ep_entry *_Atomic *v = __atomic_load_n(&ids, __ATOMIC_ACQUIRE);
	uint32_t i = (uint32_t)data & (MAX_ENTRIES - 1);

	if (!is_tag(data) || !v || atomic_load_explicit(&id_ep[i], memory_order_acquire) != ep)
		return NULL;
	struct ep_entry *e = atomic_load_explicit(&v[i], memory_order_acquire);
	return e && e->tag == data && e->ep == ep ? e : NULL;
}

/* --- Sets -------------------------------------------------------------------- */

static void ep_free(struct shim_ep *ep);

/* The set with a reference (ep_put), or NULL. */
static struct shim_ep *ep_find(int epfd)
{
	if (!atomic_load_explicit(&n_eps, memory_order_relaxed))
		return NULL;
	pthread_rwlock_rdlock(&eps_rw);
	struct shim_ep *ep = eps;
	while (ep && ep->epfd != epfd)
		ep = ep->next;
	if (ep)
		atomic_fetch_add(&ep->refs, 1);
	pthread_rwlock_unlock(&eps_rw);
	return ep;
}

static void ep_put(struct shim_ep *ep)
{
	if (ep && atomic_fetch_sub(&ep->refs, 1) == 1)
		ep_free(ep);
}

/* Made before a fork too: a set the child shares may get tags of ours
 * after it (plain registrations made entries), and the child must know
 * them for ours. */
void shim_epoll_secret(void)
{
	while (!secret) {
		uint32_t r = 0;
		if (sys_getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)shunt_now_ns() * 2654435761u;
		secret = r | 0x80000000u;
	}
}

static struct shim_ep *ep_create(int epfd)
{
	struct shim_ep *ep = calloc(1, sizeof(*ep));

	if (!ep)
		return NULL;
	shim_epoll_secret();
	ep->epfd = epfd;
	ep->jam_at = SHUNT_NEVER;
	atomic_init(&ep->refs, 2); /* the list's and the caller's */
	shunt_spin_init(&ep->spin, shunt__config()->spin_us);
	pthread_mutex_init(&ep->mu, NULL);
	pthread_rwlock_wrlock(&eps_rw);
	struct shim_ep *other = eps;
	while (other && other->epfd != epfd)
		other = other->next;
	if (other) { /* another thread made it first */
		atomic_fetch_add(&other->refs, 1);
		pthread_rwlock_unlock(&eps_rw);
		pthread_mutex_destroy(&ep->mu);
		free(ep);
		return other;
	}
	ep->next = eps;
	eps = ep;
	atomic_fetch_add(&n_eps, 1);
	pthread_rwlock_unlock(&eps_rw);
	return ep;
}

/*
 * Entries by fd: a chain per bucket, as many buckets as ep->e has room
 * (a power of two).  epoll_ctl and every close of a registered socket look
 * an fd up, and a server's set holds thousands: a walk of all of them at
 * each close made a short connection's cost grow with the set.
 */
static struct ep_entry **bucket(struct shim_ep *ep, int fd)
{
	return &ep->hb[(unsigned)fd & (unsigned)(ep->cap - 1)];
}

/* The first entry of fd's bucket (none before the set has any). */
static struct ep_entry *first_of(struct shim_ep *ep, int fd)
{
	return ep->cap ? *bucket(ep, fd) : NULL;
}

static void hash_out(struct shim_ep *ep, struct ep_entry *e)
{
	struct ep_entry **pp = bucket(ep, e->fd);

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
}

/* The entry for fd as it names `t` (or `inner`) now.  The kernel keys a
 * registration by file and number: an old one stays, under the same
 * number, while a dup keeps its file open. */
static struct ep_entry *entry_of(struct shim_ep *ep, int fd, struct tsock *t,
				 struct shim_ep *inner)
{
	for (struct ep_entry *e = first_of(ep, fd); e; e = e->hnext)
		if (e->fd == fd && e->t == t && e->inner == inner)
			return e;
	return NULL;
}

/* Its events kept for the next wait (set_has_events) go: the entry is
 * gone, or asks for other events under other data now. */
static void unstash(struct shim_ep *ep, struct ep_entry *e)
{
	for (int i = 0; i < ep->nstash;) {
		if (ep->stash_e[i] != e) {
			i++;
			continue;
		}
		ep->nstash--;
		memmove(ep->stash + i, ep->stash + i + 1, (size_t)(ep->nstash - i) * sizeof(ep->stash[0]));
		memmove(ep->stash_e + i, ep->stash_e + i + 1, (size_t)(ep->nstash - i) * sizeof(e));
	}
}

static void entry_drop(struct shim_ep *ep, struct ep_entry *e)
{
	hash_out(ep, e);
	ep->e[e->at] = ep->e[--ep->n];
	ep->e[e->at]->at = e->at;
	if (e->t)
		atomic_fetch_sub(&e->t->nregs, 1);
	unstash(ep, e);
	if (e->ours)
		ep->nours--;
	id_free(e);
	if (e->sysfd != e->fd || e->kind == E_KICK) {
		shunt__own_del(&e->sysfd);
		sys_close(e->sysfd);
	}
	if (ep->kick == e)
		ep->kick = NULL;
	shim_put(e->t);
	ep_put(e->inner);
	free(e);
}

/* Room for twice the entries, and the buckets made again for it. */
static int grow(struct shim_ep *ep)
{
	int cap = ep->cap ? 2 * ep->cap : 8;
	struct ep_entry **v = realloc(ep->e, (size_t)cap * sizeof(*v));
	struct ep_entry **hb = calloc((size_t)cap, sizeof(*hb));

	if (v)
		ep->e = v;
	if (!v || !hb) {
		free(hb);
		return -ENOMEM;
	}
	free(ep->hb);
	ep->hb = hb;
	ep->cap = cap;
	for (int i = 0; i < ep->n; i++) {
		struct ep_entry **b = bucket(ep, ep->e[i]->fd);
		ep->e[i]->hnext = *b;
		*b = ep->e[i];
	}
	return 0;
}

static struct ep_entry *entry_add(struct shim_ep *ep, int fd)
{
	if (ep->n == ep->cap && grow(ep) < 0)
		return NULL;
	struct ep_entry *e = calloc(1, sizeof(*e));
	if (e)
		e->ep = ep;
	if (!e || id_alloc(e) < 0) {
		free(e);
		return NULL;
	}
	e->fd = e->sysfd = fd;
	e->at = ep->n;
	ep->e[ep->n++] = e;
	struct ep_entry **b = bucket(ep, fd);
	e->hnext = *b;
	*b = e;
	return e;
}

static void entry_set(struct ep_entry *e, const struct epoll_event *ev)
{
	e->events = ev->events;
	e->data = ev->data;
	e->fired = 0;
	e->hot = 1;
	e->progress = ~0ull;
}

/* The kernel's registration: the program's events under our tag while
 * the socket is on TCP; once it moved, every doorbell is an edge (and its
 * output too, while our sends may still be on the TCP stream). */
static struct epoll_event kernel_ev(const struct ep_entry *e)
{
	uint32_t ev = e->ours ? EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLPRI | EPOLLET : e->events;

	return (struct epoll_event){ .events = ev, .data.u64 = e->tag };
}

/* The set's eventfd, made with its first moved socket. */
static void kick_make(struct shim_ep *ep)
{
	if (ep->kick)
		return;
	int fd = shunt__hide_fd((int)SYS_(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK, 0, 0, 0, 0));
	if (fd < 0)
		return;
	struct ep_entry *k = entry_add(ep, fd);
	if (!k) {
		sys_close(fd);
		return;
	}
	k->kind = E_KICK;
	shunt__own_add(&k->sysfd);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = k->tag };
	if (sys_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		entry_drop(ep, k);
		return;
	}
	ep->kick = k;
}

/* A moved entry may be ready with no new byte for the kernel to see. */
static void kick(struct shim_ep *ep)
{
	uint64_t one = 1;

	if (ep->kick && atomic_load(&ep->waiting))
		sys_write(ep->kick->sysfd, &one, sizeof(one));
}

struct fd_of {
	struct tsock *t;
	int fd;
};

static void find_fd(int fd, struct tsock *t, void *arg)
{
	struct fd_of *f = arg;

	if (f->fd < 0 && t == f->t)
		f->fd = fd;
}

/*
 * EPOLL_CTL_MOD of e's registration.  The kernel keys it by file and fd
 * number, and keeps it when the program closes that number while a dup
 * holds the socket open (epoll(7)): only that number reaches it then.  So
 * a dup of the socket goes there for the call, if the number is free (a
 * program that registered fd 5, closed it and went on with its dup: the
 * way back left the registration ours, and epoll_wait said nothing where
 * TCP's said 1: tests/diff_shim.c seed 22300273703459).
 */
static int ep_mod(struct shim_ep *ep, struct ep_entry *e, struct epoll_event *ev)
{
	int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_MOD, e->fd, ev);

	if (rc != -EBADF)
		return rc;
	struct fd_of f = { e->t, -1 };
	shim_each(find_fd, &f);
	if (f.fd < 0 || f.fd == e->fd)
		return rc;
	int d = sys_fcntl(f.fd, F_DUPFD_CLOEXEC, e->fd);
	if (d == e->fd)
		rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_MOD, d, ev);
	if (d >= 0)
		sys_close(d);
	return rc;
}

static int make_ours(struct shim_ep *ep, struct ep_entry *e)
{
	e->ours = 1;
	struct epoll_event ev = kernel_ev(e);
	int rc = ep_mod(ep, e, &ev);
	/* The kernel takes no MOD of an EPOLLEXCLUSIVE registration: made
	 * again (exclusivity only spares wake-ups; ours wakes one set). */
	if (rc == -EINVAL && (e->events & EPOLLEXCLUSIVE) &&
	    sys_epoll_ctl(ep->epfd, EPOLL_CTL_DEL, e->fd, NULL) == 0) {
		rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, e->fd, &ev);
		if (rc < 0) { /* back as it was, under the program's events */
			struct epoll_event was = { .events = e->events, .data.u64 = e->tag };
			(void)sys_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, e->fd, &was);
		}
	}
	if (rc < 0) {
		e->ours = 0;
		return rc;
	}
	e->hot = 1;
	e->quiet = 0;
	e->news = 0;
	ep->nours++;
	atomic_fetch_or(&ep->kicks, shim_kick_bit(e->t->slot));
	kick_make(ep);
	kick(ep);
	return 0;
}

/* --- epoll_ctl ---------------------------------------------------------------- */

/* The kernel's rules for EPOLLEXCLUSIVE (fs/eventpoll.c): with only these
 * bits, at EPOLL_CTL_ADD only, not on an epoll set; a moved socket's
 * registration, ours and not exclusive, let a MOD through (a helper's
 * test, 12-04; t_shim_epoll epoll_exclusive_rules). */
#define EXCLUSIVE_OK (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | \
		      EPOLLEXCLUSIVE)

static int exclusive_refused(int op, const struct epoll_event *ev, const struct shim_ep *inner)
{
	if (op == EPOLL_CTL_DEL || !(ev->events & EPOLLEXCLUSIVE))
		return 0;
	return op == EPOLL_CTL_MOD || inner || (ev->events & ~(uint32_t)EXCLUSIVE_OK);
}

static int ctl_locked(struct shim_ep *ep, int op, int fd, struct tsock *t,
		      struct shim_ep *inner, struct epoll_event *ev)
{
	if (exclusive_refused(op, ev, inner))
		return -EINVAL;
	struct ep_entry *e = entry_of(ep, fd, t, inner);

	if (op == EPOLL_CTL_ADD) {
		if (e)
			return -EEXIST;
		e = entry_add(ep, fd);
		if (!e)
			return -ENOMEM;
		e->kind = t ? E_SOCK : E_SET;
		e->t = t;
		e->inner = inner;
		if (t) {
			shim_ref(t);
			atomic_fetch_add(&t->nregs, 1);
		}
		else
			atomic_fetch_add(&inner->refs, 1);
		/* Tracked sockets count from here, moved or not: one that moves
		 * while a wait sleeps wakes it with its first doorbell, unless
		 * another wait takes that byte, and kicks.  A set within: its
		 * sockets' doorbells may be taken anywhere. */
		if (inner)
			atomic_store(&ep->kicks, ~0ull);
		else if (t->slot)
			atomic_fetch_or(&ep->kicks, shim_kick_bit(t->slot));
		entry_set(e, ev);
		e->ours = t && shim_moved(t);
		/* Its first look asks the kernel: the event the kernel queues
		 * for what the socket has now (a reset) may come after a scan
		 * that found the rings ready. */
		e->quiet = 0;
		struct epoll_event kev = kernel_ev(e);
		int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &kev);
		if (rc < 0) {
			entry_drop(ep, e);
		} else if (e->ours) {
			ep->nours++;
			kick_make(ep);
			kick(ep);
		}
		return rc;
	}
	if (!e)
		return op == EPOLL_CTL_MOD || op == EPOLL_CTL_DEL ? -ENOENT : -EINVAL;
	if (op == EPOLL_CTL_DEL) {
		int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, NULL);
		entry_drop(ep, e);
		return rc;
	}
	if (op != EPOLL_CTL_MOD || (e->events & EPOLLEXCLUSIVE))
		return -EINVAL;
	struct epoll_event old = { .events = e->events, .data = e->data };
	entry_set(e, ev);
	struct epoll_event kev = kernel_ev(e);
	int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &kev);
	if (rc < 0) {
		entry_set(e, &old);
		return rc;
	}
	unstash(ep, e);
	if (e->ours)
		kick(ep);
	return rc;
}

/* --- Plain registrations -------------------------------------------------------
 * A tracked socket still on TCP needs nothing of ours in a set: the
 * kernel's answer is the answer.  So its registrations are the kernel's
 * alone, under the program's own events and data, and the socket only
 * notes them (SHIM_PLAIN_REGS at most, under t->reg_lock).  They become
 * entries of ours, as if made through them from the start, when a
 * registration needs one (EPOLLONESHOT, whose firing we note;
 * EPOLLEXCLUSIVE; one set more than fit), when the socket moves
 * (shim_epoll_moved), reconnects (shim_epoll_renew) or loses a number
 * while a dup keeps it open (shim_epoll_forget).  A set that holds only
 * such registrations is not ours, and its waits are the kernel's alone: a
 * short connection's epoll_ctl and epoll_wait cost what they cost over
 * TCP (with an entry each, wrk's -c 1 requests without keep-alive cost
 * some 6,500 instructions more each, most of the library's cost: callgrind).
 */

/* Held for a system call at most (plain_ctl), or while a socket's
 * registrations become entries (rare): a mutex cost a short connection
 * about 300 instructions more in its six epoll_ctl calls. */
static void reg_lock(struct tsock *t)
{
	while (atomic_exchange_explicit(&t->reg_lock, 1, memory_order_acquire))
		sys_sched_yield();
}

static void reg_unlock(struct tsock *t)
{
	atomic_store_explicit(&t->reg_lock, 0, memory_order_release);
}

static int plain_at(const struct tsock *t, int epfd, int fd)
{
	for (int i = 0; i < t->nplain; i++)
		if (t->plain[i].epfd == epfd && t->plain[i].fd == fd)
			return i;
	return -1;
}

/* Does the kernel still hold the registration?  (Its set may have been
 * closed, and its number given to another, since.)  kcmp() tells without
 * touching it; where a sandbox forbids kcmp, a MOD to what it is. */
static int plain_held(const struct shim_plain_reg *r)
{
	struct kcmp_epoll_slot slot = { (uint32_t)r->epfd, (uint32_t)r->fd, 0 };
	int pid = shim_pid();
	long rc = SYS_(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, r->fd, (long)&slot, 0);

	if (rc == -ENOSYS || rc == -EPERM || rc == -EACCES) {
		struct epoll_event ev = r->ev;
		rc = sys_epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->fd, &ev);
	}
	return rc == 0;
}

/* An entry for a plain registration, under the program's data in the
 * kernel until the socket moves (make_ours tags it). */
static void plain_entry(struct tsock *t, const struct shim_plain_reg *r)
{
	if (!plain_held(r))
		return;
	struct shim_ep *ep = ep_find(r->epfd);
	if (!ep)
		ep = ep_create(r->epfd);
	if (!ep) {
		log_debug("epoll set %d: no memory for fd %d's registration", r->epfd, r->fd);
		return;
	}
	ep_lock(ep);
	struct ep_entry *e = entry_of(ep, r->fd, t, NULL) ? NULL : entry_add(ep, r->fd);
	if (e) {
		e->kind = E_SOCK;
		e->t = t;
		shim_ref(t);
		atomic_fetch_add(&t->nregs, 1);
		entry_set(e, &r->ev);
	}
	ep_unlock(ep);
	ep_put(ep);
}

/* t's registrations are entries of ours from now on.  Not under a set's
 * lock (each_registration defers), as each takes one. */
static void plain_to_entries(struct tsock *t)
{
	reg_lock(t);
	for (int i = 0; i < t->nplain; i++)
		plain_entry(t, &t->plain[i]);
	t->nplain = -1;
	reg_unlock(t);
}

static int plain_fits(const struct tsock *t, int op, const struct epoll_event *ev, int at)
{
	if (op == EPOLL_CTL_DEL)
		return 1;
	return (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) &&
	       !(ev->events & (EPOLLONESHOT | EPOLLEXCLUSIVE)) &&
	       (at >= 0 || t->nplain < SHIM_PLAIN_REGS);
}

/* The program's epoll_ctl on t as a plain registration, the kernel's
 * answer in *rc; 0 if it needs entries of ours (made now). */
static int plain_ctl(struct tsock *t, int epfd, int op, int fd, struct epoll_event *ev, int *rc)
{
	if (op != EPOLL_CTL_DEL && !ev)
		return 0; /* EFAULT, below */
	reg_lock(t);
	int at = t->nplain >= 0 ? plain_at(t, epfd, fd) : -1;
	int plain = t->nplain >= 0 && !shim_moved(t) && plain_fits(t, op, ev, at);
	if (plain) {
		/* The program's pointer: the kernel's EFAULT for a bad one. */
		*rc = sys_epoll_ctl(epfd, op, fd, ev);
		if (*rc == 0 && op == EPOLL_CTL_DEL && at >= 0)
			t->plain[at] = t->plain[--t->nplain];
		else if (*rc == 0 && op != EPOLL_CTL_DEL)
			t->plain[at >= 0 ? at : t->nplain++] = (struct shim_plain_reg){ epfd, fd, *ev };
	}
	int convert = !plain && t->nplain >= 0;
	reg_unlock(t);
	if (convert)
		plain_to_entries(t);
	return plain;
}

/* fd, a number of t, is being closed: with it the last, its plain
 * registrations go as the kernel's do; with a dup left, the kernel keeps
 * them, and so does an entry of ours (forget_in). */
static void plain_forget(struct tsock *t)
{
	reg_lock(t);
	int convert = t->nplain > 0 && atomic_load(&t->nfds) > 1;
	if (t->nplain > 0 && !convert)
		t->nplain = 0;
	reg_unlock(t);
	if (convert)
		plain_to_entries(t);
}

int shim_epoll_registered(struct tsock *t)
{
	reg_lock(t);
	int plain = t->nplain > 0;
	reg_unlock(t);
	return plain || atomic_load(&t->nregs) > 0;
}

/* Is fd an epoll set still?  Its number may have been closed where no
 * wrapper saw (close_range, a raw system call) and given to another file
 * (fopen's open, which no wrapper sees either). */
static int is_epoll(int fd)
{
	static const char name[] = "anon_inode:[eventpoll]";
	char path[32], buf[sizeof(name)];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	long n = sys_readlinkat(AT_FDCWD, path, buf, sizeof(buf));
	return n == (long)sizeof(name) - 1 && !memcmp(buf, name, sizeof(name) - 1);
}

/* A plain fd's DEL or MOD in a set of ours: the events a poll of the set
 * kept for plain fds go (we cannot tell whose they are).  Kept, a removed
 * fd's event came with data the program may have freed (a reviewer's
 * reproducer).  A level-triggered one the kernel gives again; an edge of
 * another plain fd kept meanwhile is lost (libuv, whose backend fd outer
 * loops poll and which applies its changes just before its wait, uses
 * none). */
static void unstash_plain(int epfd)
{
	struct shim_ep *ep = ep_find(epfd);

	if (!ep)
		return;
	ep_lock(ep);
	int j = 0;
	for (int i = 0; i < ep->nstash; i++)
		if (ep->stash_e[i]) {
			ep->stash[j] = ep->stash[i];
			ep->stash_e[j++] = ep->stash_e[i];
		}
	ep->nstash = j;
	ep_unlock(ep);
	ep_put(ep);
}

int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct tsock *t = shim_get(fd);

	if (!t && op == EPOLL_CTL_ADD)
		t = shim_track_unconnected(fd); /* nginx's upstreams: fdtab.c */
	int rc;
	if (t && plain_ctl(t, epfd, op, fd, ev, &rc)) {
		shim_put(t);
		return (int)shim_err(rc);
	}

	struct shim_ep *inner = t ? NULL : ep_find(fd);
	/* A set of the program's put in another: ours from now on, so that
	 * the outer one sees its sockets once they move (its plain
	 * registrations kept it the kernel's). */
	if (!t && !inner && op == EPOLL_CTL_ADD && shim_kind(fd) == FD_EPOLL && is_epoll(fd))
		inner = ep_create(fd);

	if (!t && !inner) {
		if (op != EPOLL_CTL_ADD)
			unstash_plain(epfd);
		return REAL(epoll_ctl)(epfd, op, fd, ev);
	}
	rc = op != EPOLL_CTL_DEL && !ev ? -EFAULT : 0;
	struct shim_ep *ep = rc ? NULL : ep_find(epfd);
	if (!rc && !ep && op == EPOLL_CTL_ADD)
		ep = ep_create(epfd);
	if (!rc && !ep) /* not a set we know it in: the kernel's answer */
		rc = op == EPOLL_CTL_ADD ? -ENOMEM : REAL(epoll_ctl)(epfd, op, fd, ev) < 0 ? -errno : 0;
	else if (ep) {
		ep_lock(ep);
		rc = ctl_locked(ep, op, fd, t, inner, ev);
		ep_unlock(ep);
	}
	ep_put(ep);
	ep_put(inner);
	shim_put(t);
	return (int)shim_err(rc);
}

/* --- A socket moved ----------------------------------------------------------- */

/*
 * A socket that moves, or goes back to TCP, changes each of its
 * registrations, which takes eps_rw and then each set's lock.  Readiness
 * asked under a set's lock (a scan) may finish a way back (back.c): that
 * thread holds a set's lock already, so the change waits in the thread's
 * list until it let go of its last set lock (a self-deadlock in
 * epoll_wait otherwise, found by the soak).
 */
struct later {
	struct tsock *t;
	void (*fn)(struct shim_ep *, struct ep_entry *); /* NULL: answered on fd */
	int fd;
};

static _Thread_local int held;         /* set locks (and registration walks) held */
static _Thread_local struct later *later;
static _Thread_local int nlater, caplater;

static void each_registration(struct tsock *t, void (*fn)(struct shim_ep *, struct ep_entry *));

static void hold(void)
{
	held++;
}

/* The last set lock went: the changes that waited for it. */
static void let_go(void)
{
	if (--held > 0)
		return;
	while (nlater > 0) {
		struct later l = later[--nlater];
		if (l.fn)
			each_registration(l.t, l.fn);
		else
			shim_back_answered(l.t, l.fd);
		shim_put(l.t);
	}
	free(later);
	later = NULL;
	caplater = 0;
}

static void ep_lock(struct shim_ep *ep)
{
	pthread_mutex_lock(&ep->mu);
	hold();
}

static void ep_unlock(struct shim_ep *ep)
{
	pthread_mutex_unlock(&ep->mu);
	let_go();
}

/* 0, or -ENOMEM: the change could not wait (it is then lost, as a failed
 * take-over is: the registration stays as it was). */
static int defer(struct tsock *t, void (*fn)(struct shim_ep *, struct ep_entry *), int fd)
{
	if (nlater == caplater) {
		int cap = caplater ? caplater * 2 : 8;
		struct later *n = realloc(later, sizeof(*n) * (size_t)cap);
		if (!n)
			return -ENOMEM;
		later = n;
		caplater = cap;
	}
	shim_ref(t);
	later[nlater++] = (struct later){ t, fn, fd };
	return 0;
}

/* An answer to a peer going back made under a set's lock (a scan): its
 * moment's wait for the peer's BACK and its resend (back.c) come once
 * this thread holds no set lock, as the other threads' waits and changes
 * on the set would wait behind it.  Out of memory: at the next call. */
void shim_epoll_answered(struct tsock *t, int fd)
{
	if (!held)
		shim_back_answered(t, fd);
	else if (defer(t, NULL, fd) < 0)
		log_debug("epoll: fd %d's resend waits for its next call (out of memory)", fd);
}

/* Each registration of t in any set of ours, with its set locked. */
static void each_registration(struct tsock *t, void (*fn)(struct shim_ep *, struct ep_entry *))
{
	if (held) {
		if (defer(t, fn, -1) < 0)
			log_debug("epoll: a registration change was lost (out of memory)");
		return;
	}
	plain_to_entries(t);
	if (!atomic_load(&n_eps))
		return;
	hold();
	pthread_rwlock_rdlock(&eps_rw);
	for (struct shim_ep *ep = eps; ep; ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		for (int i = 0; i < ep->n; i++)
			if (ep->e[i]->t == t)
				fn(ep, ep->e[i]);
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_rwlock_unlock(&eps_rw);
	let_go();
}

static void take_over(struct shim_ep *ep, struct ep_entry *e)
{
	if (!e->ours && make_ours(ep, e) < 0)
		log_debug("epoll set %d: fd %d could not be taken over", ep->epfd, e->fd);
}

void shim_epoll_moved(struct tsock *t)
{
	each_registration(t, take_over);
}

/* Back to TCP: each registration of the socket is the program's again.
 * One whose number was closed and given to another file (the kernel keeps
 * the registration while the socket lives on in a dup) cannot be changed
 * by that number (ENOENT, or another file's): it stays ours, answered
 * through our own dup (sysfd).  Given back half done, the set said nothing
 * of the socket any more (tests/diff_shim.c seed 54892045693306). */
static void give_back(struct shim_ep *ep, struct ep_entry *e)
{
	if (!e->ours)
		return;
	e->ours = 0;
	struct epoll_event ev = kernel_ev(e);
	ev.events &= ~(uint32_t)EPOLLEXCLUSIVE; /* no MOD takes it (see make_ours) */
	int rc = ep_mod(ep, e, &ev);
	if (rc < 0) {
		e->ours = 1;
		log_debug("epoll set %d: fd %d stays ours (%s)", ep->epfd, e->fd, strerror(-rc));
	} else {
		ep->nours--;
	}
	kick(ep); /* a wait asleep on our events looks again */
}

void shim_epoll_back(struct tsock *t)
{
	each_registration(t, give_back);
}

/* In one set: t's registrations name `to` now, the program's events under
 * the same tag (the kernel's registration stays: it is keyed by file). */
static void renew_in(struct shim_ep *ep, struct tsock *from, struct tsock *to)
{
	for (int i = 0; i < ep->n; i++) {
		struct ep_entry *e = ep->e[i];
		if (e->t != from)
			continue;
		give_back(ep, e);
		shim_ref(to);
		atomic_fetch_add(&to->nregs, 1);
		atomic_fetch_sub(&from->nregs, 1);
		e->t = to;
		e->quiet = 0;
		e->hot = 1;
		e->seen = e->armed = 0;
		e->news = 0;
		e->progress = ~0ull;
		shim_put(from); /* the caller holds one: not the last */
	}
}

/* The socket of `from` connects anew as `to` (connect(AF_UNSPEC), then a
 * connect): its registrations go on, as the kernel's do, with the new
 * connection's. */
void shim_epoll_renew(struct tsock *from, struct tsock *to)
{
	plain_to_entries(from);
	if (!atomic_load(&n_eps) || !atomic_load(&from->nregs))
		return;
	hold();
	pthread_rwlock_rdlock(&eps_rw);
	for (struct shim_ep *ep = eps; ep && atomic_load(&from->nregs); ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		renew_in(ep, from, to);
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_rwlock_unlock(&eps_rw);
	let_go();
}

/* --- Readiness -------------------------------------------------------------------- */

/* EPOLLRDNORM and EPOLLWRNORM are EPOLLIN and EPOLLOUT by other names
 * (a socket has no priority bands): asked, they ask for those. */
static uint32_t asked_bits(uint32_t ev)
{
	return ev | (ev & EPOLLRDNORM ? EPOLLIN : 0) | (ev & EPOLLWRNORM ? EPOLLOUT : 0);
}

/* What we found, in the program's terms: the names it asked by, and only
 * what it asked (and errors and hang-ups), as the kernel reports.  A
 * program that asked EPOLLRDNORM alone had no event, and one that asked
 * both names had EPOLLIN alone (t_shim_epoll epoll_rdnorm). */
static uint32_t program_terms(uint32_t got, uint32_t asked)
{
	got |= (got & EPOLLIN ? EPOLLRDNORM : 0) | (got & EPOLLOUT ? EPOLLWRNORM : 0);
	return got & (asked | EPOLLERR | EPOLLHUP);
}

static uint32_t epoll_to_poll(uint32_t ev)
{
	ev = asked_bits(ev);
	return (ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0) |
	       (ev & EPOLLPRI ? POLLPRI : 0) | (ev & EPOLLRDHUP ? POLLRDHUP : 0) |
	       (ev & EPOLLHUP ? POLLHUP : 0) | (ev & EPOLLERR ? POLLERR : 0);
}

static uint32_t poll_to_epoll(int ev)
{
	return (ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0) |
	       (ev & POLLPRI ? EPOLLPRI : 0) | (ev & POLLRDHUP ? EPOLLRDHUP : 0) |
	       (ev & POLLHUP ? EPOLLHUP : 0) | (ev & POLLERR ? EPOLLERR : 0);
}

static int set_has_events(struct shim_ep *ep);

/* The wait bits that stand for an entry's events. */
static uint32_t wait_bits(uint32_t events)
{
	events = asked_bits(events);
	return (events & (EPOLLIN | EPOLLRDHUP) ? SHUNT_WAIT_READ : 0) |
	       (events & EPOLLOUT ? SHUNT_WAIT_WRITE : 0);
}

/* Did the peer ring for the entry since it was last looked at?  It clears
 * the bit first, and its doorbell may come much later: a peer's TCP holds
 * a small segment back until our ACK of the last one (Nagle's algorithm),
 * and meanwhile a wait that other fds keep returning must still see the
 * ring's data, as a TCP socket's data is seen as soon as it is there. */
static int rung(const struct ep_entry *e)
{
	return (e->armed & ~shunt_end_armed(END(e->t))) != 0;
}

/* Did the kernel tell of more than doorbells: an arrival on a direction
 * still on the stream, or back on it, or news of its own (urgent byte,
 * error queue)?  A doorbell is no arrival: what it rang for shows as
 * progress, and it may come after a look that saw that already (rung).
 * A direction back on the stream while the other is not yet moves no
 * ring: its edge is all an edge-triggered wait gets (a sender waiting
 * for room with EPOLLOUT | EPOLLET after its peer handed the socket on
 * waited for good: t_shim_flags et_out_peer_back). */
static int kernel_news(struct tsock *t, int kern)
{
	uint32_t ph = atomic_load_explicit(&t->slot->phase, memory_order_acquire);
	int rx_ring = (ph & (PH_RX_RING | PH_RX_PLAIN)) == PH_RX_RING;
	int tx_ring = (ph & (PH_TX_RING | PH_TX_PLAIN)) == PH_TX_RING;
	int own = POLLPRI | POLLERR | (rx_ring ? 0 : POLLIN | POLLRDHUP) | (tx_ring ? 0 : POLLOUT);

	return kern > 0 && (kern & own);
}

/*
 * Is the entry of a moved socket ready, and to be reported now?  `kern`:
 * what the kernel said of its socket in this wait (poll bits), or -1.
 * `look` (a spin) reads without arming and leaves it to be read again.
 */
static int report_moved(struct ep_entry *e, int kern, int look, struct epoll_event *out)
{
	int et = e->events & EPOLLET;
	uint32_t g = atomic_load_explicit(&e->t->io_gen, memory_order_acquire);
	/* Progress first: anything after it shows as a change next time. */
	uint64_t prog = shunt_end_progress(END(e->t));
	/* A settled socket's kernel side is registered edge-triggered on all
	 * it can say: quiet once, it stays so until an event comes (kern),
	 * and a scan need not ask it (a system call per socket per wait). */
	int settled = shim_settled(e->t);
	if (kern < 0 && settled && (e->quiet || e->news) && !(e->news & ~(POLLIN | POLLOUT)))
		kern = e->news;
	int ev = shim_readiness(e->t, e->sysfd, (int)epoll_to_poll(e->events),
				look ? SHUNT_ARM_NONE : et ? SHUNT_ARM_EDGE : SHUNT_ARM_LAZY, &kern);
	e->quiet = settled && kern >= 0 && !(kern & ~(POLLIN | POLLOUT));
	if (kern >= 0)
		e->news = 0;
	if (!look) {
		e->seen = g;
		e->hot = ev && !et;
		e->armed = shunt_end_armed(END(e->t)) & wait_bits(e->events);
		/* Now armed: an arrival before the arm shows in this read, one
		 * after it rings. */
		prog = shunt_end_progress(END(e->t));
	}
	if (!ev || (et && prog == e->progress && !kernel_news(e->t, kern)))
		return 0;
	e->progress = prog;
	out->events = program_terms(poll_to_epoll(ev), e->events);
	return 1;
}

/* What the program gets for an entry now, if anything; `kern` as above,
 * with the kernel's own bits for an entry that is still the program's. */
static int entry_report(struct ep_entry *e, int kern, int look, uint64_t round,
			struct epoll_event *out)
{
	if (e->fired || e->round == round)
		return 0;
	int got;
	if (e->kind == E_KICK) {
		uint64_t v;
		sys_read(e->sysfd, &v, sizeof(v));
		return 0;
	}
	if (e->kind == E_SET) {
		/* Ready only if the set inside has something to give. */
		got = kern > 0 && set_has_events(e->inner);
		out->events = got ? EPOLLIN : 0;
	} else if (!e->ours && !shim_moved_now(e->t)) {
		out->events = kern > 0 ? program_terms(poll_to_epoll(kern), e->events) : 0;
		got = out->events != 0;
	} else {
		/* Moved, if not yet made ours (shim_epoll_moved): what woke the
		 * kernel may be the peer's first doorbell, which is no event. */
		got = report_moved(e, kern, look, out);
	}
	if (!got)
		return 0;
	e->round = round;
	if (e->events & EPOLLONESHOT)
		e->fired = 1;

	out->data = e->data;
	return 1;
}

/* News no doorbell announces: the way back to TCP takes steps (the peer's
 * BACK, room in the kernel's socket for our ring's leftovers), and a peer
 * rings no room in our ring while our reads have not reached its switch
 * (shim_room_unrung).  Such an entry is looked at every scan, and the wait
 * naps (wait_set). */
static int unrung(struct ep_entry *e)
{
	return shim_back_pending(e->t) || shim_peer_asks(e->t) ||
	       ((asked_bits(e->events) & EPOLLOUT) && shim_room_unrung(e->t));
}

/* A wait for room stuck with its peer in full rings: looked at when it
 * gives up on them (io.c, "Both ends full"); SHUNT_NEVER if not stuck. */
static int64_t jam_at(struct ep_entry *e)
{
	return (asked_bits(e->events) & EPOLLOUT) && !e->fired ? shim_jam_at(e->t) : SHUNT_NEVER;
}

/* A scan's `look`: 0 arms what is not ready, 1 arms nothing, LOOK_BUSY
 * arms only past IDLE_LOOKS entries found not ready (an entry left unarmed
 * is looked at by every scan until one arms it: a bound on the cost). */
#define LOOK_BUSY 2
#define IDLE_LOOKS 64

/* Our moved entries that may have changed: those ready last time (level-
 * triggered), those whose socket saw I/O since, those the peer rang for,
 * and those whose news rings no doorbell.  The others were armed when
 * last read, so a change would ring. */
static int scan_locked(struct shim_ep *ep, struct epoll_event *out, int max, int look,
		       uint64_t round, struct ep_entry **whose)
{
	int k = 0, idle = 0, from = ep->scan_from < ep->n ? ep->scan_from : 0;
	int64_t jam = SHUNT_NEVER;

	ep->unrung = 0;
	ep->shared = 0;
	/* From after the last one reported, round the list: from its start
	 * each time, with fewer slots than ready entries the first ones took
	 * every wait and the others none (a helper's reproducer), where the
	 * kernel's ready list goes round. */
	for (int m = 0; m < ep->n && k < max && ep->nours; m++) {
		int i = (from + m) % ep->n;
		struct ep_entry *e = ep->e[i];
		if (!e->ours)
			continue;
		uint32_t g = atomic_load_explicit(&e->t->io_gen, memory_order_acquire);
		int look_anyway = unrung(e);
		ep->unrung += look_anyway;
		int64_t j = jam_at(e);
		jam = SHUNT_MIN(jam, j);
		look_anyway |= j != SHUNT_NEVER;
		ep->shared += shim_slot_others(e->t->slot);
		if (!e->hot && g == e->seen && !rung(e) && !look_anyway)
			continue;
		int mode = look != LOOK_BUSY ? look : idle < IDLE_LOOKS;
		if (entry_report(e, -1, mode, round, &out[k])) {
			if (whose)
				whose[k] = e;
			k++;
			ep->scan_from = i + 1;
		} else {
			idle++;
		}
	}
	ep->jam_at = jam;
	return k;
}

/* Replace our tagged events among n kernel events of set ep (locked) by
 * what the program asked for; returns how many remain.  A tag of an entry
 * gone meanwhile is nobody's event. */
static int translate_locked(struct shim_ep *ep, struct epoll_event *ev, int n,
			    uint64_t round, struct ep_entry **whose)
{
	int j = 0;

	for (int i = 0; i < n; i++) {
		if (!is_tag(ev[i].data.u64)) {
			if (whose)
				whose[j] = NULL;
			ev[j++] = ev[i];
			continue;
		}
		struct ep_entry *e = ep ? tagged(ep, ev[i].data.u64) : NULL;
		/* News from the kernel: until a look takes it (which the
		 * report below may not, an entry reported already in this
		 * round), a scan of a settled entry takes these bits if they
		 * are doorbells and room alone (a drain that finds the
		 * doorbells gone takes nothing), and asks the kernel again
		 * for anything else (an error a read may have taken since).
		 * Asked at every scan, each doorbell cost a ppoll more
		 * (haproxy, wrk: about one per request each). */
		if (e) {
			e->quiet = 0;
			e->news |= (int)epoll_to_poll(ev[i].events);
			if (e->ours && !(ev[i].events & ~(uint32_t)(EPOLLIN | EPOLLOUT)))
				shim_peer_seen(e->t);
		}
		if (e && entry_report(e, (int)epoll_to_poll(ev[i].events), 0, round, &ev[j])) {
			if (whose)
				whose[j] = e;
			j++;
		}
	}
	return j;
}

/* Events the set has for the program without waiting: what a wait took
 * from the kernel and kept (poll on the set), then those our scan finds. */
static int take_stash(struct shim_ep *ep, struct epoll_event *out, int max, uint64_t round)
{
	int k = SHUNT_MIN(max, ep->nstash);

	memcpy(out, ep->stash, (size_t)k * sizeof(*out));
	/* Reported in this wait: the scan that follows must not again. */
	for (int i = 0; i < k; i++)
		if (ep->stash_e[i])
			ep->stash_e[i]->round = round;
	memmove(ep->stash, ep->stash + k, (size_t)(ep->nstash - k) * sizeof(*out));
	memmove(ep->stash_e, ep->stash_e + k, (size_t)(ep->nstash - k) * sizeof(ep->stash_e[0]));
	ep->nstash -= k;
	return k;
}

/* The kernel's events for the set, translated in `round`, kept from
 * stash index k on for the next wait (ep locked); how many. */
static int stash_kernel(struct shim_ep *ep, int k, uint64_t round)
{
	int n = sys_epoll_wait(ep->epfd, ep->stash + k, STASH - k, 0);

	return n > 0 ? translate_locked(ep, ep->stash + k, n, round, ep->stash_e + k) : 0;
}

/* Does the set (an inner one, or one polled) have anything for the
 * program?  What the kernel holds is taken and kept for its next wait,
 * and what our scan finds (which took moved entries' edges).  A plain
 * fd's level-triggered event the kernel gives that wait again: the wait
 * drops the copy (dedup_plain). */
static int set_has_events(struct shim_ep *ep)
{
	ep_lock(ep);
	if (!ep->nstash) {
		uint64_t round = ++ep->rounds;
		int k = scan_locked(ep, ep->stash, STASH, 0, round, ep->stash_e);
		ep->nstash = k + stash_kernel(ep, k, round);
	}
	int any = ep->nstash > 0;
	ep_unlock(ep);
	return any;
}

int shim_epoll_ready(int epfd)
{
	struct shim_ep *ep = ep_find(epfd);
	int ready = ep && set_has_events(ep);

	ep_put(ep);
	return ready;
}

int shim_epoll_ours(int epfd)
{
	struct shim_ep *ep = ep_find(epfd);
	int ours = ep != NULL;

	ep_put(ep);
	return ours;
}

/* --- Waiting ------------------------------------------------------------------- */

struct spin_args {
	struct shim_ep *ep;
	struct epoll_event *ev;
	int max;
	uint64_t round;
};

static int spin_check(void *arg)
{
	struct spin_args *a = arg;

	ep_lock(a->ep);
	int k = scan_locked(a->ep, a->ev, a->max, 1, a->round, NULL);
	ep_unlock(a->ep);
	return k;
}

/*
 * epoll_pwait2 (Linux 5.11) waits to the nanosecond, where epoll_pwait
 * rounds up to the millisecond.  Older kernels answer ENOSYS, and a
 * seccomp profile older than it (container engines', valgrind's
 * emulation) ENOSYS or EPERM, an error it has not otherwise: the program,
 * which called epoll_wait, got it (every timed wait failed, SHUNT_DISABLE
 * or not; t_shim_epoll epoll_no_pwait2).  Then epoll_pwait, for good.
 */
static _Atomic int no_pwait2;

/* The kernel's wait for `left` ns (< 0: no end): in milliseconds, as
 * epoll_wait asked, when it is a whole number of them. */
static int wait_for(int epfd, struct epoll_event *ev, int max, int64_t left, const sigset_t *mask)
{
	if (left < 0 || left % 1000000 == 0) {
		int ms = left < 0 ? -1 : (int)SHUNT_MIN(left / 1000000, INT32_MAX);
		return REAL(epoll_pwait)(epfd, ev, max, ms, mask);
	}
	if (REAL(epoll_pwait2) && !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
		struct timespec ts = shunt_ts(left);
		int err = errno;
		int n = REAL(epoll_pwait2)(epfd, ev, max, &ts, mask);
		if (n >= 0 || (errno != ENOSYS && errno != EPERM))
			return n;
		errno = err;
		atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
	}
	return REAL(epoll_pwait)(epfd, ev, max, (int)SHUNT_MIN((left + 999999) / 1000000, INT32_MAX),
				 mask);
}

static int kernel_wait(int epfd, struct epoll_event *ev, int max, int64_t deadline,
		       const sigset_t *mask)
{
	if (deadline == SHUNT_NEVER)
		return wait_for(epfd, ev, max, -1, mask);
	return wait_for(epfd, ev, max, SHUNT_MAX(deadline - shunt_now_ns(), 0), mask);
}

/* The n kernel events at ev + k, translated; a plain fd's event that this
 * wait took already (its first `first` events: what a poll of the set
 * kept) goes.  A level-triggered one the kernel gives each time: it came
 * twice in one wait (a helper's reproducer, an outer loop polling a set
 * as libuv's backend fd is).  How many remain. */
static int dedup_plain(struct shim_ep *ep, struct epoll_event *ev, int first, int k, int n,
		       uint64_t round)
{
	struct ep_entry *whose[STASH];
	int j = k;

	for (int at = k; at < k + n; at += STASH) {
		int m = translate_locked(ep, ev + at, SHUNT_MIN(STASH, k + n - at), round, whose);
		for (int i = 0; i < m; i++) {
			int dup = 0;
			for (int x = 0; x < first && !whose[i] && !dup; x++)
				dup = ev[x].events == ev[at + i].events &&
				      ev[x].data.u64 == ev[at + i].data.u64;
			if (!dup)
				ev[j++] = ev[at + i];
		}
	}
	return j - k;
}

/* What is there without the kernel: the stash, then ready moved entries.
 * A look, which arms (almost) nothing: an armed ring makes the peer ring
 * the bell (a system call) for each message, which only a wait about to
 * sleep needs.  A busy loop that never sleeps thus costs its peers none. */
static int ready_now(struct shim_ep *ep, struct epoll_event *ev, int max, uint64_t *round,
		     int *first)
{
	ep_lock(ep);
	*round = ++ep->rounds;
	int k = take_stash(ep, ev, max, *round);
	*first = k; /* the kernel's already, some of them */
	if (k < max)
		k += scan_locked(ep, ev + k, max - k, LOOK_BUSY, *round, NULL);
	ep_unlock(ep);
	return k;
}

static int wait_set(struct shim_ep *ep, int epfd, struct epoll_event *ev, int max,
		    int64_t timeout_ns, const sigset_t *mask)
{
	int64_t deadline = timeout_ns < 0 ? SHUNT_NEVER : shunt_now_ns() + timeout_ns;
	int spun = timeout_ns == 0 || !ep->nours;

	for (;;) {
		uint64_t round;
		int first;
		int k = ready_now(ep, ev, max, &round, &first);
		if (!k && !spun) {
			/* Plain fds wait for the end of the window: it is short. */
			struct spin_args a = { ep, ev, max, round };
			k = SHUNT_MAX(shunt_spin(&ep->spin, spin_check, &a), 0);
			spun = 1;
		}
		atomic_fetch_add(&ep->waiting, 1);
		/* Listed from before the look that arms: another wait that takes
		 * one of our doorbells after it kicks the set (kick.c), whose
		 * eventfd then wakes the wait below at once.  Listed only from
		 * the wait on, such a kick went unnoticed (poll.c, kick_listen). */
		int slot = -1;
		/* A change after the look above kicks the set: the wait sees it. */
		if (!k && timeout_ns != 0) { /* armed: the wait may sleep */
			ep_lock(ep);
			slot = shim_kick_listen(ep->kick ? ep->kick->sysfd : -1,
						atomic_load(&ep->kicks));
			k = scan_locked(ep, ev, max, 0, round, NULL);
			ep_unlock(ep);
		}
		int64_t until = k ? 0 : deadline;
		if (ep->unrung || ep->shared) /* naps: see unrung(), and poll.c's nap_ns */
			until = SHUNT_MIN(until, shunt_now_ns() + (ep->unrung ? UNRUNG_NAP_NS
									  : SHARED_NAP_NS));
		if (ep->jam_at != SHUNT_NEVER)
			until = SHUNT_MIN(until, SHUNT_MAX(ep->jam_at, shunt_now_ns() + UNRUNG_NAP_NS));
		int rc = k == max ? 0 : kernel_wait(epfd, ev + k, max - k, until, mask);
		/* Moved sockets filled the array: every fourth such wait takes
		 * the kernel's events, after the scan as a wait's are, and keeps
		 * them for the next wait, whose first they are.  Not asked, a
		 * pipe, a listener or a timer waited as long as moved sockets
		 * filled every wait (a helper's reproducer: 0 of 20 waits).
		 * Taken first, before the scan, an edge-triggered socket lost an
		 * edge over a region.  Every fourth: a loop of maxevents 1 on a
		 * socket always ready pays a system call in four. */
		if (k == max) {
			ep_lock(ep);
			if (!ep->nstash && ++ep->full_waits % 4 == 0)
				ep->nstash = stash_kernel(ep, 0, round);
			ep_unlock(ep);
		}
		shim_kick_unlisten(slot);
		atomic_fetch_sub(&ep->waiting, 1);

		if (rc < 0)
			return k ? k : -1;
		ep_lock(ep);
		rc = dedup_plain(ep, ev, first, k, rc, round);
		ep_unlock(ep);
		if (k + rc > 0 || timeout_ns == 0 ||
		    (deadline != SHUNT_NEVER && shunt_now_ns() >= deadline))
			return k + rc;
	}
}

/* Our tags among n kernel events of a set we did not know when the wait
 * began: translated if it is ours now, else dropped (a set shared with a
 * parent, which made its registration of a socket it moved an entry);
 * how many remain. */
static int untag(int epfd, struct epoll_event *ev, int n)
{
	int i = 0;

	while (i < n && !is_tag(ev[i].data.u64))
		i++;
	if (i == n)
		return n;
	int err = errno;
	struct shim_ep *ep = ep_find(epfd);
	if (ep)
		ep_lock(ep);
	n = translate_locked(ep, ev, n, ep ? ++ep->rounds : 0, NULL);
	if (ep)
		ep_unlock(ep);
	ep_put(ep);
	errno = err;
	return n;
}

/* A set that is not ours: the kernel's wait, but no tag of ours may
 * reach the program (the set may have become ours while we slept). */
static int wait_plain(int epfd, struct epoll_event *ev, int max, int64_t timeout_ns,
		      const sigset_t *mask)
{
	/* The wait the program asked for, no clock read but for a timed
	 * one's start: most end at the first. */
	int64_t start = timeout_ns > 0 ? shunt_now_ns() : 0, left = timeout_ns;

	for (;;) {
		int n = wait_for(epfd, ev, max, left, mask);
		if (n <= 0 || !secret || (n = untag(epfd, ev, n)) > 0 || timeout_ns == 0)
			return n;
		if (timeout_ns > 0 && (left = start + timeout_ns - shunt_now_ns()) <= 0)
			return 0;
	}
}

/* The kernel's answer to arguments it refuses (EINVAL for maxevents
 * past INT_MAX / 12, EFAULT for an array in the first page): the wait
 * below wrote into a NULL array (SIGSEGV) and took any maxevents (a
 * helper's reproducers). */
static int args_refused(const struct epoll_event *ev, int max)
{
	return max <= 0 || max > (int)(INT_MAX / sizeof(struct epoll_event)) ||
	       (uintptr_t)ev < 4096;
}

int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t timeout_ns,
		    const sigset_t *mask)
{
	struct shim_ep *ep = args_refused(ev, max) ? NULL : ep_find(epfd);

	if (!ep)
		return wait_plain(epfd, ev, max, timeout_ns, mask);
	int n = wait_set(ep, epfd, ev, max, timeout_ns, mask);
	int err = errno;

	ep_put(ep);
	errno = err;
	return n;
}

/* --- Forgetting ------------------------------------------------------------------ */

static void ep_free(struct shim_ep *ep)
{
	while (ep->n)
		entry_drop(ep, ep->e[ep->n - 1]);
	atomic_fetch_sub(&n_eps, 1);
	pthread_mutex_destroy(&ep->mu);
	free(ep->e);
	free(ep->hb);
	free(ep);
}

/* Is any set's fd one match() takes?  (Most closes are of other fds: a
 * look under the read lock spares them the write lock.) */
static int any_set(int (*match)(int fd, void *arg), void *arg)
{
	int found = 0;

	pthread_rwlock_rdlock(&eps_rw);
	for (struct shim_ep *ep = eps; ep && !found; ep = ep->next)
		found = match(ep->epfd, arg);
	pthread_rwlock_unlock(&eps_rw);
	return found;
}

static void forget_sets(int (*match)(int fd, void *arg), void *arg)
{
	struct shim_ep *gone = NULL;

	if (!any_set(match, arg))
		return;
	pthread_rwlock_wrlock(&eps_rw);
	for (struct shim_ep **pp = &eps; *pp;) {
		struct shim_ep *ep = *pp;
		if (match(ep->epfd, arg)) {
			*pp = ep->next;
			ep->next = gone;
			gone = ep;
		} else {
			pp = &ep->next;
		}
	}
	pthread_rwlock_unlock(&eps_rw);
	/* Freed outside the list's lock (dropping an entry may free a
	 * socket), once nobody uses it. */
	while (gone) {
		struct shim_ep *next = gone->next;
		ep_put(gone);
		gone = next;
	}
}

static int is_fd(int fd, void *arg)
{
	return fd == *(int *)arg;
}

struct urange {
	unsigned first, last;
};

static int in_urange(int fd, void *arg)
{
	struct urange *r = arg;

	return (unsigned)fd >= r->first && (unsigned)fd <= r->last;
}

void shim_epoll_forget_range(unsigned first, unsigned last)
{
	struct urange r = { first, last };

	if (atomic_load(&n_eps))
		forget_sets(in_urange, &r);
}

/* In one set, under its lock: the last fd of t goes, and its entries with
 * it (under fd first; under other numbers, dups registered, by a walk); or
 * a dup stays, and the entry under fd keeps a dup of ours for our calls. */
static void forget_in(struct shim_ep *ep, int fd, struct tsock *t, int last)
{
	struct ep_entry *e = first_of(ep, fd);

	while (e) {
		struct ep_entry *next = e->hnext;
		if (e->t == t && e->fd == fd) {
			if (last) {
				entry_drop(ep, e); /* the caller holds a reference */
			} else if (e->sysfd == fd) {
				e->sysfd = shunt__hide_fd(sys_fcntl(fd, F_DUPFD_CLOEXEC, 0));
				shunt__own_add(&e->sysfd);
			}
		}
		e = next;
	}
	for (int i = 0; last && atomic_load(&t->nregs) && i < ep->n;) {
		if (ep->e[i]->t == t)
			entry_drop(ep, ep->e[i]);
		else
			i++;
	}
}

/* fd is being closed: an epoll set of ours goes; a socket's registrations
 * under that number go with its last fd, as the kernel's do.  With a dup
 * still open the kernel keeps them, and so do we, through a dup of ours
 * for our own calls. */
SHUNT_FORK_TEXT void shim_epoll_forget(int fd, struct tsock *t)
{
	if (t)
		plain_forget(t);
	if (!atomic_load(&n_eps))
		return;
	if (!t) {
		forget_sets(is_fd, &fd);
		return;
	}
	if (!atomic_load(&t->nregs))
		return;
	int last = atomic_load(&t->nfds) <= 1;
	hold();
	pthread_rwlock_rdlock(&eps_rw);
	for (struct shim_ep *ep = eps; ep && atomic_load(&t->nregs); ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		forget_in(ep, fd, t, last);
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_rwlock_unlock(&eps_rw);
	let_go();
}
