/*
 * poll.c - poll, ppoll, select and pselect over moved and other fds.
 *
 * A moved socket's readiness comes from its rings (io.c): the kernel waits
 * on its TCP socket for a doorbell, and on every other fd as asked.  The
 * moved sockets' wait words are armed first, so that the peer rings only
 * when we sleep; a wake-up is a hint, and readiness is always read again
 * from the rings, so a stale ring only costs a loop.  Before it sleeps, a
 * wait on moved sockets alone spins for a while (spin.h).
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "spin.h"

static int to_poll(int events)
{
	return (events & POLLRDNORM ? POLLIN : 0) | (events & POLLWRNORM ? POLLOUT : 0) |
	       (events & (POLLIN | POLLOUT | POLLRDHUP | POLLPRI));
}

/* Readiness in the program's terms (RDNORM and WRNORM too). */
static int revents(struct tsock *t, int fd, int events, int arm, int kern)
{
	/* Between VMs the peer's proof alone is no input (not in epoll's
	 * wait: taken there, an edge-triggered set's reader waited for good
	 * with the ring's data there, t_shim_epoll epoll_et_short_read
	 * through a region, every run; why is not known yet). */
	shim_proof_seen(t, fd);
	int ev = shim_readiness(t, fd, to_poll(events), arm, &kern);

	if ((ev & POLLIN) && (events & POLLRDNORM))
		ev |= POLLRDNORM;
	if ((ev & POLLOUT) && (events & POLLWRNORM))
		ev |= POLLWRNORM;
	return ev & (events | POLLERR | POLLHUP);
}

struct pset {
	struct pollfd *fds;
	nfds_t n;
	struct tsock **t; /* per entry: a moved socket (referenced) or NULL */
	char *set;        /* per entry: an epoll set of ours */
	struct pollfd *k; /* what the kernel polls: the same entries */
	int on_tcp;       /* tracked sockets not moved (yet) among them */
	uint64_t kicks;   /* the connections whose doorbells concern us (kick.c) */
};

static int pset_init(struct pset *p, struct pollfd *fds, nfds_t n)
{
	p->fds = fds;
	p->n = n;
	p->t = calloc(n ? n : 1, sizeof(*p->t));
	p->k = calloc(n + 1, sizeof(*p->k)); /* and the thread's kick (kick.c) */
	p->set = calloc(n ? n : 1, 1);
	if (!p->t || !p->k || !p->set)
		return -ENOMEM;
	int any = 0;
	for (nfds_t i = 0; i < n; i++) {
		struct tsock *t = shim_get(fds[i].fd);
		if (t && t->slot)
			p->kicks |= shim_kick_bit(t->slot);
		if (t && !shim_moved(t)) {
			shim_put(t);
			t = NULL;
			p->on_tcp = 1;
		}
		p->t[i] = t;
		p->set[i] = !t && shim_epoll_ours(fds[i].fd);
		/* An epoll set, ours now or later (a socket in it may move while
		 * we sleep): kicked for whatever it holds. */
		if (p->set[i] || (!t && shim_kind(fds[i].fd) == FD_EPOLL))
			p->kicks = ~0ull;
		any |= t != NULL || p->set[i];
	}
	return any;
}

static void pset_free(struct pset *p)
{
	for (nfds_t i = 0; p->t && i < p->n; i++)
		shim_put(p->t[i]);
	free(p->t);
	free(p->k);
	free(p->set);
}

/* An epoll set of ours is readable when it has something for the program:
 * a stale doorbell in it is not that, and a ring with data is, whether or
 * not the kernel sees a doorbell (a wait before us may have taken it). */
static int set_revents(struct pset *p, nfds_t i, int use_kernel)
{
	if (!(p->fds[i].events & (POLLIN | POLLRDNORM)))
		return use_kernel ? p->k[i].revents : 0;
	int ev = shim_epoll_ready(p->fds[i].fd) ? POLLIN : 0;
	return (ev | (use_kernel ? p->k[i].revents & ~POLLIN : 0)) & (p->fds[i].events | POLLERR | POLLHUP | POLLNVAL);
}

/* Fill the moved entries' revents; how many are ready. */
static int scan(struct pset *p, int arm, int use_kernel)
{
	int ready = 0;

	for (nfds_t i = 0; i < p->n; i++) {
		if (p->set[i]) {
			p->fds[i].revents = (short)set_revents(p, i, use_kernel);
			ready += p->fds[i].revents != 0;
			continue;
		}
		if (!p->t[i])
			continue;
		/* Closed by another thread while the kernel waited: it holds
		 * the file, wakes at its timeout (or a doorbell), and finds the
		 * fd gone, as it says of a TCP socket. */
		if (use_kernel && (p->k[i].revents & POLLNVAL)) {
			p->fds[i].revents = POLLNVAL;
			ready++;
			continue;
		}
		/* Settled, its kernel side has only doorbells: the kernel's
		 * wait below tells of them (a system call per socket less). */
		int kern = use_kernel ? p->k[i].revents : shim_settled(p->t[i]) ? 0 : -1;
		p->fds[i].revents = (short)revents(p->t[i], p->fds[i].fd, p->fds[i].events,
						   arm, kern);
		ready += p->fds[i].revents != 0;
	}
	return ready;
}

/* What a moved socket's kernel side is asked for input: doorbells and the
 * peer's hang-up, unless it stays readable for good where the program
 * waits for room alone, and no doorbell can come or none can be heard (our own
 * SHUT_RD; the peer's bytes before its switch unread, shim_rings_no_room):
 * asked, it returned at once, again and again (t_shim_poll
 * poll_room_unheard_sleeps), and the wait naps instead (nap_ns).  Between
 * VMs too: there a peer rings for room all the same, but into a socket
 * that is readable already (a poll for room spun, 150 ms of CPU in a
 * 300 ms wait, t_shim_poll over a region). */
static int kernel_in(struct tsock *t, int events)
{
	if ((to_poll(events) & (POLLIN | POLLOUT)) != POLLOUT)
		return POLLIN | POLLRDHUP;
	if (shim_rd_shut(t))
		return 0;
	return shim_rings_no_room(t) ? POLLRDHUP : POLLIN | POLLRDHUP;
}

/* The kernel polls plain entries as they are, and a moved one's socket
 * for a doorbell or a hang-up (and for writing while our sends are not on
 * the ring).  Asked while they are, the stream's socket, holding nothing,
 * was always writable: a wait for room in a full ring returned at once,
 * again and again, a busy loop that took the reader's CPU (apache's h2
 * writer and curl: 4000 to 80000 ppolls per 100 MB, 2x TCP's time with the
 * CPUs crowded; t_shim_poll poll_room_sleeps).  Room comes as a doorbell;
 * a way back to TCP kicks the wait (back.c). */
static void kernel_set(struct pset *p)
{
	for (nfds_t i = 0; i < p->n; i++) {
		p->k[i] = p->fds[i];
		if (p->t[i])
			p->k[i].events = (short)(kernel_in(p->t[i], p->fds[i].events) |
						 (to_poll(p->fds[i].events) & POLLPRI) |
						 (shim_tx_ringed(p->t[i]) ? 0
						  : to_poll(p->fds[i].events) & POLLOUT) |
						 (shim_back_pending(p->t[i]) ? POLLOUT : 0));
		p->k[i].revents = 0;
	}
}

static int copy_plain(struct pset *p)
{
	int ready = 0;

	for (nfds_t i = 0; i < p->n; i++) {
		if (p->t[i] || p->set[i])
			continue;
		p->fds[i].revents = p->k[i].revents;
		ready += p->fds[i].revents != 0;
	}
	return ready;
}

static int check(void *arg)
{
	return scan(arg, SHUNT_ARM_NONE, 0);
}

static _Thread_local struct shunt_spin spin;
static _Thread_local int spin_set;

static int all_moved(const struct pset *p)
{
	for (nfds_t i = 0; i < p->n; i++)
		if (!p->t[i] && !p->set[i])
			return 0;
	return 1;
}

#define UNRUNG_NAP_NS 1000000
#define SHARED_NAP_NS 10000000

/* How long the wait may sleep before it looks at the rings again (0: as
 * long as it likes).  A moved entry waiting for room that no doorbell
 * will announce (the peer rings none while our reads have not reached its
 * switch: shim_rings_no_room, with room or not, as room may come between
 * the look and the sleep), or none the kernel can tell of (after our
 * SHUT_RD, kernel_in), naps 1 ms.  One whose socket another process
 * of the family holds too naps 10 ms: the kernel wakes the waits of both
 * for a doorbell, and the first to look drains it, perhaps before the
 * other's wait began (rsync's receiver, polling to read, slept out its
 * timeout while its generator polled the socket to write).  One stuck
 * with its peer in full rings naps until it gives up on them (io.c,
 * "Both ends full"). */
static int64_t nap_min(int64_t nap, int64_t ns)
{
	return nap && nap < ns ? nap : ns;
}

static int64_t nap_ns(const struct pset *p)
{
	int64_t nap = 0;

	for (nfds_t i = 0; i < p->n; i++) {
		if (!p->t[i])
			continue;
		int out = p->fds[i].events & (POLLOUT | POLLWRNORM);
		if (out && (shim_rings_no_room(p->t[i]) || shim_rd_shut(p->t[i])))
			return UNRUNG_NAP_NS;
		int64_t jam = out ? shim_jam_at(p->t[i]) : SHUNT_NEVER;
		if (jam != SHUNT_NEVER)
			nap = nap_min(nap, SHUNT_MAX(jam - shunt_now_ns(), UNRUNG_NAP_NS));
		if (shim_slot_others(p->t[i]->slot))
			nap = nap_min(nap, SHARED_NAP_NS);
	}
	return nap;
}

#define MOVED_MEANWHILE (-4096) /* look again: a socket moved while the kernel waited */

/* Did a socket that was on TCP when the kernel began to wait move since,
 * and wake it (k: the kernel's answer; NULL: any that moved, woken or
 * not)?  Its peer's first doorbell does (move.c), and that is no
 * readiness: only its rings can tell. */
static int moved_meanwhile(const struct pset *p, const struct pollfd *k)
{
	for (nfds_t i = 0; p->on_tcp && i < p->n; i++) {
		if ((k && !k[i].revents) || p->t[i] || p->set[i])
			continue;
		struct tsock *t = shim_get(p->fds[i].fd);
		int moved = t && shim_moved_now(t);
		shim_put(t);
		if (moved)
			return 1;
	}
	return 0;
}

/* Listening for kicks (kick.c) from before the last look at the rings: a
 * kick after that look stays in the thread's eventfd, and the kernel's
 * wait returns at once.  Listening only from the wait on, a doorbell taken
 * by another thread between the look and the wait went unnoticed, the
 * taker's kick with it (t_shim_epoll epoll_write_first: a reader polling
 * while its writer's leader took the doorbell).  -1: not listening. */
static int kick_listen(const struct pset *p, int *kfd)
{
	*kfd = shim_kick_thread_fd();
	int slot = shim_kick_listen(*kfd, p->kicks);

	if (slot < 0)
		*kfd = -1;
	return slot;
}

/* The kernel's wait on p->k, with the thread's kick kfd (>= 0) beside the
 * program's fds. */
static int kernel_wait(struct pset *p, int kfd, const struct timespec *t, const sigset_t *mask)
{
	nfds_t n = p->n;

	if (kfd >= 0)
		p->k[n++] = (struct pollfd){ kfd, POLLIN, 0 };
	int rc = REAL(ppoll)(p->k, n, t, mask);
	int err = errno;
	/* A kick counts as news (the loop looks again), never as the
	 * program's: its entry is past the program's. */
	if (kfd >= 0 && rc > 0 && p->k[p->n].revents)
		shim_kick_reset(kfd);
	errno = err;
	return rc;
}

/*
 * The kernel alone answers: no socket of ours moved, yet.  One that moves
 * while we sleep wakes us with its peer's first doorbell, unless another
 * thread's wait takes that byte first (its poll for room, say): that one
 * kicks us then, so a wait with sockets that may move listens, and looks
 * once more whether one moved before it listened.  It slept on with the
 * ring full (t_shim_epoll epoll_write_first, whose reader and writer
 * threads poll one socket).
 */
static int kernel_only(struct pset *p, const struct timespec *timeout, const sigset_t *mask)
{
	int sleeps = !timeout || timeout->tv_sec || timeout->tv_nsec;

	if (p->on_tcp && sleeps) {
		int kfd, slot = kick_listen(p, &kfd), rc = MOVED_MEANWHILE;
		if (!moved_meanwhile(p, NULL)) {
			memcpy(p->k, p->fds, p->n * sizeof(*p->k));
			rc = kernel_wait(p, kfd, timeout, mask);
			int mine = rc < 0 ? 0 : copy_plain(p);
			if (rc < 0)
				rc = -errno;
			else if (rc > mine || (mine && moved_meanwhile(p, p->fds)))
				rc = MOVED_MEANWHILE;
		}
		shim_kick_unlisten(slot);
		return rc;
	}
	int rc = REAL(ppoll)(p->fds, p->n, timeout, mask);

	if (rc < 0)
		return -errno;
	return rc > 0 && moved_meanwhile(p, p->fds) ? MOVED_MEANWHILE : rc;
}

static int poll_loop(struct pset *p, int64_t deadline, const sigset_t *mask)
{
	if (!spin_set) {
		shunt_spin_init(&spin, shunt__config()->spin_us);
		spin_set = 1;
	}
	/* Spin only when nothing else could be ready: plain fds are the
	 * kernel's.  What the spin finds, the loop tells with the kernel's
	 * word (a hang-up, an urgent byte), which the spin does not ask. */
	if (deadline != 0 && all_moved(p))
		shunt_spin(&spin, check, p);
	for (;;) {
		int kfd, slot = deadline != 0 ? kick_listen(p, &kfd) : (kfd = -1, -1);
		int ready = scan(p, SHUNT_ARM_NONE, 0);
		if (!ready && deadline != 0)
			ready = scan(p, SHUNT_ARM_DRAIN, 0);
		kernel_set(p);
		int64_t nap = !ready && deadline != 0 ? nap_ns(p) : 0;
		int64_t until = nap ? SHUNT_MIN(deadline, shunt_now_ns() + nap) : deadline;
		struct timespec ts, *t = ready ? &(struct timespec){ 0, 0 } : shunt_left(until, &ts);
		int rc = kernel_wait(p, kfd, t, mask);
		int err = errno;
		shim_kick_unlisten(slot);
		if (rc < 0)
			return -err;
		if (rc > 0 && moved_meanwhile(p, p->k))
			return MOVED_MEANWHILE;
		ready = copy_plain(p) + scan(p, SHUNT_ARM_NONE, 1);
		if (ready || (rc == 0 && !nap) || deadline == 0)
			return ready;
		if (deadline != SHUNT_NEVER && shunt_now_ns() >= deadline)
			return 0;
	}
}

static void pset_free_at(void *p)
{
	pset_free(p);
}

static int poll_set(struct pset *p, struct pollfd *fds, nfds_t n, int64_t dl,
		    const struct timespec *timeout, const sigset_t *mask)
{
	int any = pset_init(p, fds, n);

	return any < 0 ? any : any ? poll_loop(p, dl, mask) : kernel_only(p, timeout, mask);
}

/* The kernel's wait is a cancellation point: a thread cancelled there
 * leaked the set (ASan in t_shim_close cancel_in_wait). */
static int poll_freed(struct pset *p, struct pollfd *fds, nfds_t n, int64_t dl,
		      const struct timespec *timeout, const sigset_t *mask)
{
	int rc;

	pthread_cleanup_push(pset_free_at, p);
	rc = poll_set(p, fds, n, dl, timeout, mask);
	pthread_cleanup_pop(1);
	return rc;
}

int shim_poll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
	      const sigset_t *mask)
{
	int64_t dl = !timeout ? SHUNT_NEVER
		     : timeout->tv_sec || timeout->tv_nsec
			     ? shunt_now_ns() + (int64_t)timeout->tv_sec * 1000000000 +
				       timeout->tv_nsec
			     : 0;
	struct timespec left;
	int rc;

	do {
		struct pset p = { 0 };
		rc = poll_freed(&p, fds, n, dl, timeout, mask);
		/* Once more, with the socket that moved, in the time left. */
		timeout = dl ? shunt_left(dl, &left) : timeout;
	} while (rc == MOVED_MEANWHILE);
	return (int)shim_err(rc);
}

/* The bits past nfds in the set's last word: the kernel's select writes
 * whole words back, those bits zero.  Left as they were, a program that
 * passed the highest fd as nfds (not one more) read that fd as ready and
 * blocked in its read. */
static void clear_past(fd_set *s, int nfds)
{
	unsigned long *w = (unsigned long *)(void *)s;
	unsigned bits = 8 * sizeof(*w), n = (unsigned)nfds;

	if (s && n % bits)
		w[n / bits] &= (1UL << (n % bits)) - 1;
}

/* select in terms of poll: readable includes end of stream and errors.
 * The kernel's select refuses an fd closed when it starts (EBADF), and
 * reports one closed while it waits ready in every set it was asked in
 * (Linux 6.18); a poll says POLLNVAL for both.  A socket of ours was open
 * at the start: its POLLNVAL is the second kind (t_shim_poll
 * close_under_poll: it said EBADF). */
int shim_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
		const struct timespec *timeout, const sigset_t *mask)
{
	size_t cap = nfds > 0 ? (size_t)nfds : 1;
	struct pollfd *fds = calloc(cap, sizeof(*fds) + 1); /* and a byte each: ours */
	nfds_t n = 0;

	if (!fds)
		return (int)shim_err(-ENOMEM);
	char *ours = (char *)(fds + cap);
	for (int fd = 0; fd < nfds; fd++) {
		short ev = (short)((rd && shim_fd_isset(rd, fd) ? POLLIN : 0) |
				   (wr && shim_fd_isset(wr, fd) ? POLLOUT : 0) |
				   (ex && shim_fd_isset(ex, fd) ? POLLPRI : 0));
		if (ev) {
			ours[n] = (char)shim_has(fd);
			fds[n++] = (struct pollfd){ fd, ev, 0 };
		}
	}
	int rc = shim_poll(fds, n, timeout, mask);
	if (rc >= 0) {
		rc = 0;
		for (nfds_t i = 0; i < n; i++) {
			int fd = fds[i].fd, re = fds[i].revents;
			if ((re & POLLNVAL) && !ours[i]) {
				free(fds);
				return (int)shim_err(-EBADF);
			}
			if (re & POLLNVAL)
				re = POLLIN | POLLOUT | POLLPRI;
			int r = (fds[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR));
			int w = (fds[i].events & POLLOUT) && (re & (POLLOUT | POLLERR));
			int x = (fds[i].events & POLLPRI) && (re & POLLPRI);
			if (rd && !r)
				shim_fd_clr(rd, fd);
			if (wr && !w)
				shim_fd_clr(wr, fd);
			if (ex && !x)
				shim_fd_clr(ex, fd);
			rc += r + w + x;
		}
		clear_past(rd, nfds);
		clear_past(wr, nfds);
		clear_past(ex, nfds);
	}
	free(fds);
	return rc;
}
