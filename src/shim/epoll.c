/*
 * epoll.c - epoll sets holding moved sockets.
 *
 * The program's socket stays in its epoll set, registered by the program
 * as it likes while the connection is on TCP.  When it moves, its
 * registration becomes ours: edge-triggered on input (each doorbell that
 * arrives wakes the set once), under a tag in place of the program's data.
 * A wait then reads each such socket's readiness from its rings and
 * reports it with the program's events and data.  Registrations of sockets
 * that did not move stay the program's own and untouched.
 *
 * The rules (issue "Invisible to the program"):
 *   - the program never receives an event it did not register: every
 *     event the kernel returns is checked for our tag, in every wait,
 *     including a wait that began before the socket moved;
 *   - a wait already asleep in the kernel when a socket moves still wakes
 *     on its doorbell, since the registration is modified in place;
 *   - no lock of ours is held across a call that could enter the library;
 *     entries hold references, so a socket closed meanwhile is not freed
 *     under a scan.
 *
 * A tag is a random 32-bit secret (top bit set: no user-space pointer
 * looks like it) above a 12-bit generation and a 20-bit entry number,
 * checked against the entry it names.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "spin.h"
#include "sys.h"

#define MAX_ENTRIES (1u << 20)

struct shim_ep;

struct ep_entry {
	struct shim_ep *ep;
	int fd;
	struct tsock *t;          /* a reference */
	uint32_t events;          /* as the program asked, EPOLLET etc. included */
	epoll_data_t data;        /* the program's */
	uint64_t tag;             /* its tag, for when the registration is ours */
	int ours;                 /* the kernel holds our tag, not the program's data */
	uint32_t id;
	int fired;                /* EPOLLONESHOT: reported, off until MOD */
	int hot;                  /* level-triggered and ready: look again */
	uint32_t seen;            /* the socket's io_gen when last looked at */
	uint64_t progress;        /* for edge triggering */
	uint64_t round;           /* the wait that last reported it */
};

struct shim_ep {
	int epfd;
	struct shunt_spin spin;
	pthread_mutex_t mu;
	int n, cap;
	struct ep_entry **e;
	int ntagged;
	uint64_t rounds;
	_Atomic int refs;         /* the list's, and each wait's in progress */
	struct shim_ep *next;
};

static pthread_mutex_t eps_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shim_ep *eps;
static _Atomic int n_eps;       /* fast path: no set of ours at all */
static _Atomic int n_tagged;    /* ... none with a moved socket */
static uint32_t secret;

/* --- Entries by number ------------------------------------------------------ */

static pthread_mutex_t ids_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ep_entry **ids;
static uint16_t *id_gen;
static uint32_t n_ids, id_hint;

static int id_alloc(struct ep_entry *e)
{
	pthread_mutex_lock(&ids_mu);
	if (!ids) {
		ids = calloc(MAX_ENTRIES, sizeof(*ids));
		id_gen = calloc(MAX_ENTRIES, sizeof(*id_gen));
		if (!ids || !id_gen) {
			free(ids);
			free(id_gen);
			ids = NULL;
			pthread_mutex_unlock(&ids_mu);
			return -ENOMEM;
		}
	}
	for (uint32_t k = 0; k < MAX_ENTRIES; k++) {
		uint32_t i = (id_hint + k) % MAX_ENTRIES;
		if (ids[i])
			continue;
		ids[i] = e;
		id_gen[i] = (uint16_t)((id_gen[i] + 1) & 0xfff);
		e->id = i;
		e->tag = (uint64_t)secret << 32 | (uint64_t)id_gen[i] << 20 | i;
		id_hint = i + 1;
		n_ids++;
		pthread_mutex_unlock(&ids_mu);
		return 0;
	}
	pthread_mutex_unlock(&ids_mu);
	return -ENOSPC;
}

static void id_free(struct ep_entry *e)
{
	pthread_mutex_lock(&ids_mu);
	if (ids && ids[e->id] == e) {
		ids[e->id] = NULL;
		n_ids--;
	}
	pthread_mutex_unlock(&ids_mu);
}

/* The entry a kernel event's data names, if it is one of our tags. */
static int is_tag(uint64_t data)
{
	return secret && (uint32_t)(data >> 32) == secret;
}

/* The entry of set ep a kernel event's data names, if it is our tag.
 * Under ep->mu: entries leave a set only under its lock. */
static struct ep_entry *tagged(struct shim_ep *ep, uint64_t data)
{
	if (!is_tag(data) || !ids)
		return NULL;
	uint32_t i = (uint32_t)data & (MAX_ENTRIES - 1);
	pthread_mutex_lock(&ids_mu);
	struct ep_entry *e = ids[i];
	if (e && (e->tag != data || !e->ours || e->ep != ep))
		e = NULL;
	pthread_mutex_unlock(&ids_mu);
	return e;
}

/* --- Sets -------------------------------------------------------------------- */

static void ep_free(struct shim_ep *ep);

/* The set with a reference (ep_put), or NULL. */
static struct shim_ep *ep_find(int epfd)
{
	if (!atomic_load_explicit(&n_eps, memory_order_relaxed))
		return NULL;
	pthread_mutex_lock(&eps_mu);
	struct shim_ep *ep = eps;
	while (ep && ep->epfd != epfd)
		ep = ep->next;
	if (ep)
		atomic_fetch_add(&ep->refs, 1);
	pthread_mutex_unlock(&eps_mu);
	return ep;
}

static void ep_put(struct shim_ep *ep)
{
	if (ep && atomic_fetch_sub(&ep->refs, 1) == 1)
		ep_free(ep);
}

static struct shim_ep *ep_create(int epfd)
{
	struct shim_ep *ep = calloc(1, sizeof(*ep));

	if (!ep)
		return NULL;
	while (!secret) {
		uint32_t r = 0;
		if (sys_getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)shunt_now_ns() * 2654435761u;
		secret = r | 0x80000000u;
	}
	ep->epfd = epfd;
	atomic_init(&ep->refs, 2); /* the list's and the caller's */
	shunt_spin_init(&ep->spin, shunt__config()->spin_us);
	pthread_mutex_init(&ep->mu, NULL);
	pthread_mutex_lock(&eps_mu);
	struct shim_ep *other = eps;
	while (other && other->epfd != epfd)
		other = other->next;
	if (other) { /* another thread made it first */
		atomic_fetch_add(&other->refs, 1);
		pthread_mutex_unlock(&eps_mu);
		pthread_mutex_destroy(&ep->mu);
		free(ep);
		return other;
	}
	ep->next = eps;
	eps = ep;
	atomic_fetch_add(&n_eps, 1);
	pthread_mutex_unlock(&eps_mu);
	return ep;
}

static struct ep_entry *entry_of(struct shim_ep *ep, int fd)
{
	for (int i = 0; i < ep->n; i++)
		if (ep->e[i]->fd == fd)
			return ep->e[i];
	return NULL;
}

static void entry_drop(struct shim_ep *ep, struct ep_entry *e)
{
	for (int i = 0; i < ep->n; i++) {
		if (ep->e[i] == e) {
			ep->e[i] = ep->e[--ep->n];
			break;
		}
	}
	if (e->ours) {
		ep->ntagged--;
		atomic_fetch_sub(&n_tagged, 1);
	}
	id_free(e);
	shim_put(e->t);
	free(e);
}

static struct ep_entry *entry_add(struct shim_ep *ep, int fd, struct tsock *t)
{
	if (ep->n == ep->cap) {
		int cap = ep->cap ? 2 * ep->cap : 8;
		struct ep_entry **v = realloc(ep->e, (size_t)cap * sizeof(*v));
		if (!v)
			return NULL;
		ep->e = v;
		ep->cap = cap;
	}
	struct ep_entry *e = calloc(1, sizeof(*e));
	if (!e || id_alloc(e) < 0) {
		free(e);
		return NULL;
	}
	e->ep = ep;
	e->fd = fd;
	e->t = t;
	ep->e[ep->n++] = e;
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

/* Our registration of a moved socket: every doorbell is an edge; its
 * output too while our sends are still on the TCP stream. */
static struct epoll_event ours(const struct ep_entry *e)
{
	return (struct epoll_event){
		.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT | EPOLLPRI | EPOLLET, .data.u64 = e->tag
	};
}

static int make_ours(struct shim_ep *ep, struct ep_entry *e, int op)
{
	struct epoll_event ev = ours(e);
	int rc = sys_epoll_ctl(ep->epfd, op, e->fd, &ev);

	if (rc < 0 || e->ours)
		return rc;
	e->ours = 1;
	e->hot = 1;
	ep->ntagged++;
	atomic_fetch_add(&n_tagged, 1);
	return 0;
}

/* --- epoll_ctl ---------------------------------------------------------------- */

static int ctl_locked(struct shim_ep *ep, int op, int fd, struct tsock *t,
		      struct epoll_event *ev)
{
	struct ep_entry *e = entry_of(ep, fd);

	if (e && e->t != t) { /* the number names another socket now */
		entry_drop(ep, e);
		e = NULL;
	}
	if (op == EPOLL_CTL_ADD) {
		if (e)
			return -EEXIST;
		e = entry_add(ep, fd, t);
		if (!e)
			return -ENOMEM;
		shim_ref(t); /* the entry's reference */
		entry_set(e, ev);
		int rc = shim_moved(t) ? make_ours(ep, e, EPOLL_CTL_ADD)
				       : sys_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, ev);
		if (rc < 0)
			entry_drop(ep, e);
		return rc;
	}
	if (!e)
		return op == EPOLL_CTL_MOD || op == EPOLL_CTL_DEL ? -ENOENT : -EINVAL;
	if (op == EPOLL_CTL_DEL) {
		int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, NULL);
		entry_drop(ep, e);
		return rc;
	}
	if (op != EPOLL_CTL_MOD)
		return -EINVAL;
	if (e->ours) { /* ours: only what we report changes */
		entry_set(e, ev);
		return 0;
	}
	int rc = sys_epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, ev);
	if (rc == 0)
		entry_set(e, ev);
	return rc;
}

int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct tsock *t = shim_get(fd);

	if (!t)
		return REAL(epoll_ctl)(epfd, op, fd, ev);
	int rc = op != EPOLL_CTL_DEL && !ev ? -EFAULT : 0;
	struct shim_ep *ep = rc ? NULL : ep_find(epfd);
	if (!rc && !ep && op == EPOLL_CTL_ADD)
		ep = ep_create(epfd);
	if (!rc && !ep) /* a set we never saw this fd in: the kernel's answer */
		rc = op == EPOLL_CTL_ADD ? -ENOMEM : REAL(epoll_ctl)(epfd, op, fd, ev) < 0 ? -errno : 0;
	else if (ep) {
		pthread_mutex_lock(&ep->mu);
		rc = ctl_locked(ep, op, fd, t, ev);
		pthread_mutex_unlock(&ep->mu);
	}
	ep_put(ep);
	shim_put(t);
	return (int)shim_err(rc);
}

/* --- A socket moved ----------------------------------------------------------- */

void shim_epoll_moved(struct tsock *t)
{
	if (!atomic_load(&n_eps))
		return;
	pthread_mutex_lock(&eps_mu);
	for (struct shim_ep *ep = eps; ep; ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		for (int i = 0; i < ep->n; i++) {
			struct ep_entry *e = ep->e[i];
			if (e->t == t && !e->ours && make_ours(ep, e, EPOLL_CTL_MOD) < 0)
				log_debug("epoll set %d: fd %d could not be taken over", ep->epfd, e->fd);
		}
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_mutex_unlock(&eps_mu);
}

/* --- Waiting ------------------------------------------------------------------- */

static uint32_t epoll_to_poll(uint32_t ev)
{
	return (ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0) |
	       (ev & EPOLLPRI ? POLLPRI : 0) |
	       (ev & EPOLLRDHUP ? POLLRDHUP : 0) | (ev & EPOLLHUP ? POLLHUP : 0) |
	       (ev & EPOLLERR ? POLLERR : 0);
}

static uint32_t poll_to_epoll(int ev)
{
	return (ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0) |
	       (ev & POLLPRI ? EPOLLPRI : 0) |
	       (ev & POLLRDHUP ? EPOLLRDHUP : 0) | (ev & POLLHUP ? EPOLLHUP : 0) |
	       (ev & POLLERR ? EPOLLERR : 0);
}

/*
 * Is e ready, and is it to be reported now?  `kern`: what the kernel said
 * of its socket in this wait (poll bits), or -1.  `look` (a spin) reads
 * without arming and leaves the entry to be read again.
 */
static int entry_report(struct ep_entry *e, int kern, int look, uint64_t round,
			struct epoll_event *out)
{
	if (e->fired || e->round == round)
		return 0;
	int et = e->events & EPOLLET;
	uint32_t g = atomic_load_explicit(&e->t->io_gen, memory_order_acquire);
	/* Progress first: anything after it shows as a change next time. */
	uint64_t prog = shunt_end_progress(END(e->t));
	int ev = shim_readiness(e->t, e->fd, (int)epoll_to_poll(e->events),
				look ? SHUNT_ARM_NONE : et ? SHUNT_ARM_EDGE : SHUNT_ARM_LAZY, kern);
	if (!look) {
		e->seen = g;
		e->hot = ev && !et;
		/* Now armed: an arrival before the arm shows in this read, one
		 * after it rings. */
		prog = shunt_end_progress(END(e->t));
	}
	if (!ev || (et && prog == e->progress && kern <= 0))
		return 0;
	e->progress = prog;
	e->round = round;
	if (e->events & EPOLLONESHOT)
		e->fired = 1;
	out->events = poll_to_epoll(ev);
	out->data = e->data;
	return 1;
}

/* Our entries that may have changed: those ready last time (level-
 * triggered), and those whose socket saw I/O since.  The others were
 * armed when last read, so a change would have rung. */
static int scan(struct shim_ep *ep, struct epoll_event *out, int max, int look,
		uint64_t round)
{
	int k = 0;

	pthread_mutex_lock(&ep->mu);
	for (int i = 0; i < ep->n && k < max; i++) {
		struct ep_entry *e = ep->e[i];
		if (!e->ours)
			continue;
		uint32_t g = atomic_load_explicit(&e->t->io_gen, memory_order_acquire);
		if (!e->hot && g == e->seen)
			continue;
		k += entry_report(e, -1, look, round, &out[k]);
	}
	pthread_mutex_unlock(&ep->mu);
	return k;
}

/* Replace our tagged events among n kernel events of set ep by what the
 * program asked for; returns how many remain.  A tag of an entry gone
 * meanwhile is nobody's event. */
static int translate(struct shim_ep *ep, struct epoll_event *ev, int n, uint64_t round)
{
	int j = 0;

	if (ep)
		pthread_mutex_lock(&ep->mu);
	for (int i = 0; i < n; i++) {
		if (!is_tag(ev[i].data.u64)) {
			ev[j++] = ev[i];
			continue;
		}
		struct ep_entry *e = ep ? tagged(ep, ev[i].data.u64) : NULL;
		if (e && entry_report(e, (int)epoll_to_poll(ev[i].events), 0, round, &ev[j]))
			j++;
	}
	if (ep)
		pthread_mutex_unlock(&ep->mu);
	return j;
}

struct spin_args {
	struct shim_ep *ep;
	struct epoll_event *ev;
	int max;
	uint64_t round;
};

static int spin_check(void *arg)
{
	struct spin_args *a = arg;

	return scan(a->ep, a->ev, a->max, 1, a->round);
}

static int kernel_wait(int epfd, struct epoll_event *ev, int max, int64_t deadline,
		       const sigset_t *mask)
{
	if (deadline == SHUNT_NEVER)
		return REAL(epoll_pwait)(epfd, ev, max, -1, mask);
	int64_t left = deadline - shunt_now_ns();
	if (left <= 0)
		return REAL(epoll_pwait)(epfd, ev, max, 0, mask);
	if (REAL(epoll_pwait2)) {
		struct timespec ts = shunt_ts(left);
		return REAL(epoll_pwait2)(epfd, ev, max, &ts, mask);
	}
	return REAL(epoll_pwait)(epfd, ev, max, (int)SHUNT_MIN((left + 999999) / 1000000, INT32_MAX),
				 mask);
}

static int wait_ours(struct shim_ep *ep, int epfd, struct epoll_event *ev, int max,
		     int64_t timeout_ns, int64_t deadline, const sigset_t *mask);

int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t timeout_ns,
		    const sigset_t *mask)
{
	struct shim_ep *ep = max > 0 ? ep_find(epfd) : NULL;
	int64_t deadline = timeout_ns < 0 ? SHUNT_NEVER : shunt_now_ns() + timeout_ns;

	if (!ep || !ep->ntagged) {
		/* Nothing of ours in the set now; a socket may move while we
		 * sleep, and its tag must not reach the program. */
		int n = kernel_wait(epfd, ev, max, deadline, mask);
		if (n > 0 && atomic_load(&n_tagged)) {
			int err = errno;
			if (!ep)
				ep = ep_find(epfd);
			n = translate(ep, ev, n, 0);
			errno = err;
		}
		ep_put(ep);
		return n;
	}
	int n = wait_ours(ep, epfd, ev, max, timeout_ns, deadline, mask);
	ep_put(ep);
	return n;
}

static int wait_ours(struct shim_ep *ep, int epfd, struct epoll_event *ev, int max,
		     int64_t timeout_ns, int64_t deadline, const sigset_t *mask)
{
	int spun = timeout_ns == 0;
	for (;;) {
		pthread_mutex_lock(&ep->mu);
		uint64_t round = ++ep->rounds;
		pthread_mutex_unlock(&ep->mu);
		int k = 0;
		if (!spun) {
			/* Plain fds wait for the end of the window: it is short. */
			struct spin_args a = { ep, ev, max, round };
			k = shunt_spin(&ep->spin, spin_check, &a);
			k = k > 0 ? k : 0;
			spun = 1;
		}
		if (!k)
			k = scan(ep, ev, max, 0, round);
		int rc = k == max ? 0 : kernel_wait(epfd, ev + k, max - k, k ? 0 : deadline, mask);
		if (rc < 0)
			return k ? k : -1;
		rc = translate(ep, ev + k, rc, round);
		if (k + rc > 0 || timeout_ns == 0 ||
		    (deadline != SHUNT_NEVER && shunt_now_ns() >= deadline))
			return k + rc;
	}
}

int shim_epoll_ready(int epfd)
{
	struct shim_ep *ep = ep_find(epfd);
	struct epoll_event ev;
	int ready = ep && ep->ntagged && scan(ep, &ev, 1, 1, 0) > 0;

	ep_put(ep);
	return ready;
}

/* --- Forgetting ------------------------------------------------------------------ */

static void ep_free(struct shim_ep *ep)
{
	while (ep->n)
		entry_drop(ep, ep->e[ep->n - 1]);
	atomic_fetch_sub(&n_eps, 1);
	pthread_mutex_destroy(&ep->mu);
	free(ep->e);
	free(ep);
}

static void forget_sets(int (*match)(int fd, void *arg), void *arg)
{
	struct shim_ep *gone = NULL;

	pthread_mutex_lock(&eps_mu);
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
	pthread_mutex_unlock(&eps_mu);
	/* Freed outside the list's lock (dropping an entry may free a
	 * socket), once no wait uses it. */
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

/* fd is being closed: an epoll set of ours goes; a socket's registrations
 * go with its last fd, as the kernel's do (a dup keeps them). */
void shim_epoll_forget(int fd, struct tsock *t)
{
	if (!atomic_load(&n_eps))
		return;
	if (!t) {
		forget_sets(is_fd, &fd);
		return;
	}
	if (atomic_load(&t->nfds) > 1)
		return;
	pthread_mutex_lock(&eps_mu);
	for (struct shim_ep *ep = eps; ep; ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		for (int i = 0; i < ep->n;) {
			struct ep_entry *e = ep->e[i];
			if (e->t != t) {
				i++;
				continue;
			}
			/* The socket's reference outlives this call: the caller
			 * holds one. */
			entry_drop(ep, e);
		}
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_mutex_unlock(&eps_mu);
}
