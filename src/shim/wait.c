/*
 * wait.c - poll, select and epoll over upgraded and plain fds.
 *
 * An upgraded fd's TCP socket never carries data, so the kernel cannot say
 * when it is ready.  Its readiness is read from the rings instead, and a
 * wait sleeps on its doorbells: the shim arms the connection's wait words
 * (so that the peer rings only when we sleep), then lets the kernel wait on
 * the doorbells together with the program's plain fds, and re-reads the
 * rings when anything fires.  A wake-up is a hint; readiness is always
 * recomputed from the rings, so a stale ring only costs a loop.
 *
 * epoll: the doorbells of the upgraded fds of one epoll set go into a
 * hidden epoll set, which sits in the program's set under a random cookie.
 * They are edge-triggered there, so the wait words can stay armed across
 * calls (SHUNT_ARM_LAZY) with no syscall per fd per call: a stale ring
 * wakes the set once, not forever.
 */
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/random.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "shim.h"

#include <shunt.h>

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Deadlines: -1 for none (wait forever). */
static int64_t deadline_of(const struct timespec *t)
{
	return t ? mono_ns() + (int64_t)t->tv_sec * 1000000000 + t->tv_nsec : -1;
}

static struct timespec *left_of(int64_t deadline, struct timespec *ts)
{
	if (deadline < 0)
		return NULL;
	int64_t left = deadline - mono_ns();
	if (left < 0)
		left = 0;
	ts->tv_sec = left / 1000000000;
	ts->tv_nsec = left % 1000000000;
	return ts;
}

static int shim_events(int events)
{
	return events & (POLLIN | POLLOUT | POLLRDHUP | POLLRDNORM | POLLWRNORM);
}

static int to_poll(int events)
{
	return (events & POLLRDNORM ? POLLIN : 0) | (events & POLLWRNORM ? POLLOUT : 0) |
	       (events & (POLLIN | POLLOUT | POLLRDHUP));
}

/* Readiness of an upgraded fd in the program's terms (RDNORM/WRNORM too). */
static int sock_revents(struct shim_sock *s, int events, int arm)
{
	int ev = shunt__conn_poll(s->c, to_poll(events), arm);

	if ((ev & POLLIN) && (events & POLLRDNORM))
		ev |= POLLRDNORM;
	if ((ev & POLLOUT) && (events & POLLWRNORM))
		ev |= POLLWRNORM;
	return ev & (events | POLLERR | POLLHUP);
}

/* --- Spinning -----------------------------------------------------------------
 * A peer that answers within microseconds (a request/response loop) is
 * cheaper to wait for by watching the rings than by two kernel wake-ups.  As
 * in the core, the window adapts: a spin that found nothing halves it, one
 * that found something doubles it, and a window at zero is probed again now
 * and then; so an idle event loop goes back to sleeping at once. */

#define SPIN_PROBE 64

struct spin {
	int cur;
	unsigned skips;
};

static int spin_window(struct spin *sp)
{
	int max = shunt__config()->spin_us;

	if (max <= 0)
		return 0;
	if (sp->cur > max)
		sp->cur = max;
	if (sp->cur > 0)
		return sp->cur;
	return sp->skips++ % SPIN_PROBE ? 0 : max / 4 + 1;
}

static void spin_adapt(struct spin *sp, int window, int hit)
{
	sp->cur = hit ? window * 2 + 1 : window / 2;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Call check(arg) until it reports something or the window passes. */
static int spin_for(struct spin *sp, int (*check)(void *), void *arg)
{
	int window = spin_window(sp);

	if (window <= 0)
		return 0;
	int64_t end = mono_ns() + (int64_t)window * 1000;
	for (unsigned i = 1;; i++) {
		int k = check(arg);
		if (k) {
			spin_adapt(sp, window, 1);
			return k;
		}
		cpu_relax();
		if ((i & 15) == 0) {
			if (mono_ns() > end) {
				spin_adapt(sp, window, 0);
				return 0;
			}
			/* With more busy processes than cores, the peer (or the
			 * program's other workers) may need this core: give it. */
			sched_yield();
		}
	}
}

/* --- poll and select ------------------------------------------------------ */

struct pset {
	struct pollfd *k;       /* what the kernel polls */
	struct shim_sock **s;   /* per program entry: its sock or NULL */
	nfds_t nk;
};

static int pset_init(struct pset *p, const struct pollfd *fds, nfds_t n)
{
	p->s = calloc(n ? n : 1, sizeof(*p->s));
	p->k = calloc(2 * n + 1, sizeof(*p->k));
	if (!p->s || !p->k)
		return -ENOMEM;
	int any = 0;
	for (nfds_t i = 0; i < n; i++) {
		struct shim_sock *s = shim_get(fds[i].fd);
		if (s && s->kind != SHIM_CONN) {
			shim_put(s);
			s = NULL;
		}
		p->s[i] = s;
		any |= s != NULL;
	}
	return any;
}

static void pset_free(struct pset *p, nfds_t n)
{
	for (nfds_t i = 0; p->s && i < n; i++)
		shim_put(p->s[i]);
	free(p->s);
	free(p->k);
}

/* Fill revents of upgraded entries; the number of them that are ready. */
static int scan_socks(struct pollfd *fds, nfds_t n, struct pset *p, int arm)
{
	int ready = 0;

	for (nfds_t i = 0; i < n; i++) {
		if (!p->s[i])
			continue;
		fds[i].revents = (short)sock_revents(p->s[i], shim_events(fds[i].events),
						     arm ? SHUNT_ARM_DRAIN : SHUNT_ARM_NONE);
		ready += fds[i].revents != 0;
	}
	return ready;
}

/* What the kernel waits on: plain entries as they are, upgraded ones as
 * their doorbells. */
static void build_kernel_set(const struct pollfd *fds, nfds_t n, struct pset *p)
{
	p->nk = 0;
	for (nfds_t i = 0; i < n; i++) {
		if (!p->s[i]) {
			p->k[p->nk++] = fds[i];
			continue;
		}
		int ev = to_poll(shim_events(fds[i].events));
		if (ev & (POLLIN | POLLRDHUP))
			p->k[p->nk++] = (struct pollfd){ shunt__conn_bell(p->s[i]->c, 0), POLLIN, 0 };
		if (ev & POLLOUT)
			p->k[p->nk++] = (struct pollfd){ shunt__conn_bell(p->s[i]->c, 1), POLLIN, 0 };
	}
}

static int copy_plain(struct pollfd *fds, nfds_t n, struct pset *p)
{
	int ready = 0;
	nfds_t j = 0;

	for (nfds_t i = 0; i < n; i++) {
		if (p->s[i]) {
			int ev = to_poll(shim_events(fds[i].events));
			j += !!(ev & (POLLIN | POLLRDHUP)) + !!(ev & POLLOUT);
			continue;
		}
		fds[i].revents = p->k[j++].revents;
		ready += fds[i].revents != 0;
	}
	return ready;
}

struct poll_args {
	struct pollfd *fds;
	nfds_t n;
	struct pset *p;
};

static int poll_check(void *arg)
{
	struct poll_args *a = arg;

	return scan_socks(a->fds, a->n, a->p, 0);
}

static _Thread_local struct spin poll_spin;

static int poll_loop(struct pollfd *fds, nfds_t n, struct pset *p, int64_t deadline,
		     const sigset_t *mask)
{
	int all_upgraded = 1;

	for (nfds_t i = 0; i < n; i++)
		all_upgraded &= p->s[i] != NULL;
	/* Spin only when nothing else could be ready: plain fds are the kernel's. */
	if (all_upgraded && deadline != 0) {
		struct poll_args a = { fds, n, p };
		int k = spin_for(&poll_spin, poll_check, &a);
		if (k)
			return k;
	}
	for (;;) {
		int ready = scan_socks(fds, n, p, 0);
		int arm = !ready && deadline != 0;
		if (arm)
			ready = scan_socks(fds, n, p, 1);
		build_kernel_set(fds, n, p);
		struct timespec ts, *t = ready ? &(struct timespec){ 0, 0 } : left_of(deadline, &ts);
		int rc = REAL(ppoll)(p->k, p->nk, t, mask);
		if (rc < 0)
			return -errno;
		ready = copy_plain(fds, n, p) + scan_socks(fds, n, p, 0);
		if (ready || rc == 0 || deadline == 0)
			return ready;
		if (deadline > 0 && mono_ns() >= deadline)
			return 0;
	}
}

int shim_poll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
	      const sigset_t *mask)
{
	struct pset p = { 0 };
	int any = pset_init(&p, fds, n);
	int rc;

	if (any <= 0)
		rc = any < 0 ? shim_err(any) : REAL(ppoll)(fds, n, timeout, mask);
	else
		rc = (int)shim_err(poll_loop(fds, n, &p, timeout && !timeout->tv_sec &&
						   !timeout->tv_nsec ? 0 : deadline_of(timeout), mask));
	pset_free(&p, n);
	return rc;
}

/* select in terms of poll: readable includes end of stream and errors. */
int shim_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
		const struct timespec *timeout, const sigset_t *mask)
{
	struct pollfd *fds = calloc(nfds > 0 ? (size_t)nfds : 1, sizeof(*fds));
	nfds_t n = 0;

	if (!fds)
		return shim_err(-ENOMEM);
	for (int fd = 0; fd < nfds; fd++) {
		short ev = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) |
				   (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
				   (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
		if (ev)
			fds[n++] = (struct pollfd){ fd, ev, 0 };
	}
	int rc = shim_poll(fds, n, timeout, mask);
	if (rc >= 0) {
		rc = 0;
		for (nfds_t i = 0; i < n; i++) {
			int fd = fds[i].fd, re = fds[i].revents;
			if (re & POLLNVAL) {
				free(fds);
				return shim_err(-EBADF);
			}
			int r = (fds[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR));
			int w = (fds[i].events & POLLOUT) && (re & (POLLOUT | POLLERR));
			int x = (fds[i].events & POLLPRI) && (re & POLLPRI);
			if (rd && !r) FD_CLR(fd, rd);
			if (wr && !w) FD_CLR(fd, wr);
			if (ex && !x) FD_CLR(fd, ex);
			rc += r + w + x;
		}
	}
	free(fds);
	return rc;
}

/* --- epoll ----------------------------------------------------------------- */

/* An entry the program deleted stays, dormant, while its fd lives: event
 * loops add and delete the same fd over and over, and its doorbells then
 * stay in the hidden set at no cost. */
struct ep_entry {
	int fd;
	int active;               /* in the program's set; 0: dormant */
	struct shim_sock *s;      /* a reference */
	uint32_t events;          /* as the program asked, EPOLLET etc. included */
	epoll_data_t data;
	uint64_t progress;        /* for edge triggering */
	int fired;                /* EPOLLONESHOT: reported, off until MOD */
	int hot;                  /* level-triggered and ready: look again */
	uint32_t seen;            /* the sock's gen when last looked at */
};

struct shim_ep {
	int epfd;
	struct spin spin;
	int inner;                /* hidden epoll set with the doorbells */
	pthread_mutex_t mu;
	int n, cap;
	struct ep_entry *e;
	struct shim_ep *next;
};

static pthread_mutex_t eps_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shim_ep *eps;
static _Atomic int n_eps;     /* fast path: no epoll set has upgraded fds */
static uint64_t cookie;       /* tags the hidden set in the program's set */

static struct shim_ep *ep_find(int epfd)
{
	if (!atomic_load_explicit(&n_eps, memory_order_relaxed))
		return NULL;
	pthread_mutex_lock(&eps_mu);
	struct shim_ep *ep = eps;
	while (ep && ep->epfd != epfd)
		ep = ep->next;
	pthread_mutex_unlock(&eps_mu);
	return ep;
}

int shim_epoll_has(int epfd)
{
	return ep_find(epfd) != NULL;
}

static struct shim_ep *ep_create(int epfd, int *err)
{
	struct shim_ep *ep = calloc(1, sizeof(*ep));

	*err = -ENOMEM;
	if (!ep)
		return NULL;
	while (!cookie)
		if (getrandom(&cookie, sizeof(cookie), 0) != sizeof(cookie))
			cookie = (uint64_t)mono_ns() * 0x9e3779b97f4a7c15ull;
	ep->epfd = epfd;
	ep->inner = shunt__hide_fd(epoll_create1(EPOLL_CLOEXEC));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = cookie };
	if (ep->inner < 0 || REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, ep->inner, &ev) < 0) {
		*err = -errno;
		if (ep->inner >= 0)
			REAL(close)(ep->inner);
		free(ep);
		return NULL;
	}
	pthread_mutex_init(&ep->mu, NULL);
	pthread_mutex_lock(&eps_mu);
	ep->next = eps;
	eps = ep;
	atomic_fetch_add(&n_eps, 1);
	pthread_mutex_unlock(&eps_mu);
	return ep;
}

static struct ep_entry *entry_of(struct shim_ep *ep, int fd)
{
	for (int i = 0; i < ep->n; i++)
		if (ep->e[i].fd == fd)
			return &ep->e[i];
	return NULL;
}

static void bells(struct shim_ep *ep, struct shim_sock *s)
{
	for (int w = 0; w < 2; w++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = s };
		REAL(epoll_ctl)(ep->inner, EPOLL_CTL_ADD, shunt__conn_bell(s->c, w), &ev);
	}
}

static int entry_add(struct shim_ep *ep, int fd, struct shim_sock *s)
{
	if (ep->n == ep->cap) {
		int cap = ep->cap ? 2 * ep->cap : 8;
		struct ep_entry *e = realloc(ep->e, (size_t)cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		ep->e = e;
		ep->cap = cap;
	}
	ep->e[ep->n++] = (struct ep_entry){ .fd = fd, .s = s };
	/* EEXIST for a dup of a member is fine: one entry's rings wake all. */
	bells(ep, s);
	return 0;
}

/* Drop an entry for good (its fd closed).  The doorbells leave the hidden
 * set by themselves when the connection closes them, except for one on a
 * link, whose doorbells stay open, parked for the next connection: those
 * go now, unless a dup's entry still needs them. */
static void entry_del(struct shim_ep *ep, struct ep_entry *e)
{
	struct shim_sock *s = e->s;

	*e = ep->e[--ep->n];
	if (s->link) {
		int dup = 0;
		for (int i = 0; i < ep->n && !dup; i++)
			dup = ep->e[i].s == s;
		for (int w = 0; w < 2 && !dup; w++)
			REAL(epoll_ctl)(ep->inner, EPOLL_CTL_DEL, shunt__conn_bell(s->c, w), NULL);
	}
	shim_put(s); /* the entry's reference */
}

static void entry_set(struct ep_entry *e, const struct epoll_event *ev)
{
	e->active = 1;
	e->events = ev->events;
	e->data = ev->data;
	e->fired = 0;
	e->hot = 1;
	e->progress = ~0ull;
}

/* Keeps the caller's reference to s only when it makes a new entry (1). */
static int ctl_locked(struct shim_ep *ep, int op, int fd, struct shim_sock *s,
		      struct epoll_event *ev)
{
	struct ep_entry *e = entry_of(ep, fd);

	if (e && e->s != s) { /* the fd now names another connection */
		entry_del(ep, e);
		e = NULL;
	}
	switch (op) {
	case EPOLL_CTL_ADD:
		if (e && e->active)
			return -EEXIST;
		if (!e) {
			int rc = entry_add(ep, fd, s);
			if (rc < 0)
				return rc;
			e = &ep->e[ep->n - 1];
			entry_set(e, ev);
			return 1;
		}
		entry_set(e, ev);
		return 0;
	case EPOLL_CTL_MOD:
		if (!e || !e->active)
			return -ENOENT;
		entry_set(e, ev);
		return 0;
	case EPOLL_CTL_DEL:
		if (!e || !e->active)
			return -ENOENT;
		e->active = 0;
		return 0;
	}
	return -EINVAL;
}

int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	struct shim_sock *s = shim_get(fd);

	if (!s || s->kind != SHIM_CONN) {
		shim_put(s);
		return REAL(epoll_ctl)(epfd, op, fd, ev);
	}
	int rc = op != EPOLL_CTL_DEL && !ev ? -EFAULT : 0;
	struct shim_ep *ep = rc ? NULL : ep_find(epfd);
	if (!rc && !ep)
		ep = op == EPOLL_CTL_ADD ? ep_create(epfd, &rc) : NULL;
	if (!ep && !rc)
		rc = -ENOENT;
	if (ep) {
		pthread_mutex_lock(&ep->mu);
		rc = ctl_locked(ep, op, fd, s, ev);
		pthread_mutex_unlock(&ep->mu);
	}
	if (rc != 1)
		shim_put(s);
	return (int)shim_err(rc < 0 ? rc : 0);
}

static uint32_t epoll_to_poll(uint32_t ev)
{
	return (ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0) |
	       (ev & EPOLLRDHUP ? POLLRDHUP : 0);
}

static uint32_t poll_to_epoll(int ev)
{
	return (ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0) |
	       (ev & POLLRDHUP ? EPOLLRDHUP : 0) | (ev & POLLHUP ? EPOLLHUP : 0) |
	       (ev & POLLERR ? EPOLLERR : 0);
}

/*
 * Report ready upgraded entries into out[0..max); how many.  Only entries
 * that may have changed are read: those ready last time (level-triggered),
 * and those whose sock saw I/O or a ring since.  The others were armed when
 * last read, so a change would have rung.  `look` (a spin) reads without
 * arming and leaves the entries to be read again.
 */
static int scan_entries(struct shim_ep *ep, struct epoll_event *out, int max, int look)
{
	int k = 0;

	pthread_mutex_lock(&ep->mu);
	for (int i = 0; i < ep->n && k < max; i++) {
		struct ep_entry *e = &ep->e[i];
		if (!e->active || e->fired)
			continue;
		uint32_t g = atomic_load_explicit(&e->s->gen, memory_order_acquire);
		if (!e->hot && g == e->seen)
			continue;
		/* Progress first: anything after it shows as a change next time. */
		uint64_t prog = shunt__conn_progress(e->s->c);
		int arm = e->events & EPOLLET ? SHUNT_ARM_EDGE : SHUNT_ARM_LAZY;
		int ev = shunt__conn_poll(e->s->c, (int)epoll_to_poll(e->events),
					  look ? SHUNT_ARM_NONE : arm);
		if (!look) {
			e->seen = g;
			e->hot = ev && !(e->events & EPOLLET);
			/* Now armed: an arrival before the arm shows in this
			 * read, one after it rings. */
			prog = shunt__conn_progress(e->s->c);
		}
		if (!ev || ((e->events & EPOLLET) && prog == e->progress))
			continue;
		e->progress = prog;
		if (e->events & EPOLLONESHOT)
			e->fired = 1;
		out[k].events = poll_to_epoll(ev);
		out[k++].data = e->data;
	}
	pthread_mutex_unlock(&ep->mu);
	return k;
}

struct ep_args {
	struct shim_ep *ep;
	struct epoll_event *ev;
	int max;
};

static int ep_check(void *arg)
{
	struct ep_args *a = arg;

	return scan_entries(a->ep, a->ev, a->max, 1);
}

/* The hidden set fired: consume its events.  A hung-up doorbell is the
 * peer's death or last close, which the lazy arming would not see: drain
 * that connection's bells so that it reads as such. */
static void inner_drain(struct shim_ep *ep)
{
	struct epoll_event ev[16];
	int n;

	/* Under the lock: an entry's reference keeps each sock alive, and its
	 * doorbells leave the hidden set only when it is freed (or, on a link,
	 * when the entry goes: entry_del). */
	pthread_mutex_lock(&ep->mu);
	do {
		n = REAL(epoll_pwait)(ep->inner, ev, 16, 0, NULL);
		for (int i = 0; i < n; i++) {
			struct shim_sock *s = ev[i].data.ptr;
			if (ev[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))
				shunt__conn_poll(s->c, POLLIN | POLLOUT, SHUNT_ARM_DRAIN);
			atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
		}
	} while (n == 16);
	pthread_mutex_unlock(&ep->mu);
}

/* Take the hidden set's event out of what the kernel returned. */
static int strip_cookie(struct shim_ep *ep, struct epoll_event *ev, int n, int *inner)
{
	int j = 0;

	for (int i = 0; i < n; i++) {
		if (ev[i].data.u64 == cookie) {
			*inner = 1;
			continue;
		}
		ev[j++] = ev[i];
	}
	if (*inner)
		inner_drain(ep);
	return j;
}

int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout_ms,
		    const sigset_t *mask)
{
	struct shim_ep *ep = ep_find(epfd);

	if (!ep || max <= 0)
		return REAL(epoll_pwait)(epfd, ev, max, timeout_ms, mask);
	int64_t deadline = timeout_ms < 0 ? -1 : mono_ns() + (int64_t)timeout_ms * 1000000;
	int spun = timeout_ms == 0;
	for (;;) {
		int k = 0;
		if (!spun) {
			/* Plain fds wait for the end of the window: it is short. */
			struct ep_args a = { ep, ev, max };
			k = spin_for(&ep->spin, ep_check, &a);
			spun = 1;
		}
		if (!k)
			k = scan_entries(ep, ev, max, 0);
		int wait = k ? 0 : deadline < 0 ? -1 : (int)((deadline - mono_ns() + 999999) / 1000000);
		if (wait < -1 || (deadline >= 0 && wait < 0))
			wait = 0;
		int rc = k == max ? 0 : REAL(epoll_pwait)(epfd, ev + k, max - k, wait, mask);
		if (rc < 0)
			return k ? k : -1;
		int inner = 0;
		rc = strip_cookie(ep, ev + k, rc, &inner);
		/* Rescan only if the first scan found nothing: it would report
		 * the same fds twice, and a program may take the second report's
		 * EAGAIN for an error. */
		if (inner && k == 0 && rc < max)
			k = scan_entries(ep, ev + rc, max - rc, 0);
		if (k + rc > 0 || timeout_ms == 0 || (deadline >= 0 && mono_ns() >= deadline))
			return k + rc;
	}
}

static void ep_free(struct shim_ep *ep)
{
	atomic_fetch_sub(&n_eps, 1);
	for (int i = 0; i < ep->n; i++)
		shim_put(ep->e[i].s);
	REAL(close)(ep->inner);
	pthread_mutex_destroy(&ep->mu);
	free(ep->e);
	free(ep);
}

/* A plain fd was closed: if it was an epoll set of ours, forget the set. */
void shim_wait_forget_set(int fd)
{
	if (!atomic_load_explicit(&n_eps, memory_order_relaxed))
		return;
	pthread_mutex_lock(&eps_mu);
	for (struct shim_ep **pp = &eps; *pp; pp = &(*pp)->next) {
		if ((*pp)->epfd == fd) {
			struct shim_ep *ep = *pp;
			*pp = ep->next;
			ep_free(ep);
			break;
		}
	}
	pthread_mutex_unlock(&eps_mu);
}

/* An upgraded fd was closed: it leaves every epoll set, as the kernel's
 * would. */
void shim_wait_forget(int fd)
{
	if (!atomic_load_explicit(&n_eps, memory_order_relaxed))
		return;
	pthread_mutex_lock(&eps_mu);
	for (struct shim_ep *ep = eps; ep; ep = ep->next) {
		pthread_mutex_lock(&ep->mu);
		struct ep_entry *e = entry_of(ep, fd);
		if (e)
			entry_del(ep, e);
		pthread_mutex_unlock(&ep->mu);
	}
	pthread_mutex_unlock(&eps_mu);
}
