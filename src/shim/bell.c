/*
 * bell.c - a moved connection's TCP stream as its doorbell.
 *
 * After the switch the stream carries no data, only rings: one byte each,
 * of the value both ends agreed on (the segment header's `bell`).  It wakes
 * a sleeper of the other end wherever it sleeps: in our wait below, in the
 * program's own epoll_wait or poll on its socket, or in a read that began
 * before the switch.  Its close is the peer's close or death, as the
 * kernel tells it.  It works the same between virtual machines.
 *
 * A byte that is not a ring means somebody wrote to the socket behind the
 * library's back (stdio's internal writes, raw system calls) after it had
 * moved: those bytes cannot be put in their place any more, so the
 * connection is broken loudly (-EPROTO, and a line at level error) rather
 * than handed over reordered.
 *
 * Sleeping: the rings of both directions arrive on one socket, and a byte
 * one thread consumes is gone for the others.  So at most one thread of the
 * family sleeps in the kernel at a time, the leader; the others wait on a
 * futex the leader bumps whenever it wakes, and all look again.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <sys/socket.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"
#include "wake.h"

#define FOLLOW_NS (100ll * 1000000) /* a follower checks on its leader this often */
#define LOOK_NS (100ll * 1000000)   /* a leader in poll() looks again this often: a
                                     * shutdown by another thread needs no byte */
#define KICKED_LOOK_NS (2000ll * 1000000) /* a blocking read listed for kicks */
#define QUIET_LOOK_NS (250ll * 1000000)   /* one not listed */
#define STUCK_NS_MAX (16ll * 1000000)

static struct tslot *slot_of(struct shunt_bell *b)
{
	return ((struct tsock *)b->ctx)->slot;
}

/* The socket a call on t rings and sleeps on: the dup its close kept
 * while the call was in progress (fdtab.c, "Closed under a call"), else
 * the program's fd. */
static int kfd(struct tsock *t, int fd)
{
	int k = __atomic_load_n(&t->kept, __ATOMIC_ACQUIRE);

	return k > 0 ? k : fd;
}

/* ... looked up at each use: the program may close its fd while we sleep. */
static int bell_fd(struct shunt_bell *b)
{
	return kfd(b->ctx, b->fd[0]);
}

/* fd, which a wait took before it slept, was closed meanwhile, and the
 * close kept the socket for us: not to be read again (its number may be
 * another file's now); the caller looks again, on the kept one. */
static int stale(struct tsock *t, int fd)
{
	return kfd(t, fd) != fd;
}

static int phase(struct tslot *s)
{
	return (int)atomic_load_explicit(&s->phase, memory_order_acquire);
}

/* A peer that cannot be rung on the stream waits on its wait word in the
 * segment (watch, below), which the core has just cleared for us: a futex
 * wake reaches it there.  Between VMs no futex crosses: it naps. */
static int wake_watcher(struct tslot *s)
{
	if (!s->vm.on)
		sys_futex_wake(&s->end.peer->wait, INT_MAX);
	return 0;
}

static int tb_ring(struct shunt_bell *b, uint32_t bits)
{
	struct tslot *s = slot_of(b);

	(void)bits;
	/* Before our switch, a byte down the stream would be data.  And a
	 * peer whose reads have not taken our TCP data before our switch
	 * cannot take a doorbell either: it would wait behind that data,
	 * where it keeps the connection from going back to TCP exactly
	 * (back.c; the soak's hand-overs, a sender waiting for room rung by
	 * its reader).  Its waits look again on their own (shim_room_unrung). */
	if (!(phase(s) & PH_TX_RING) || shim_peer_short_of_x(s))
		return wake_watcher(s);
	long n = shim_bell_send(s, bell_fd(b), 0);
	/* Full: the peer has rings waiting anyway.  Gone: it sees the close. */
	return n >= 0 || n == -EAGAIN || n == -EPIPE || n == -ECONNRESET ? 0 : (int)n;
}

/*
 * Doorbells and their end.  The way back to TCP reads the kernel's count
 * of our stream as where our doorbells end (back.c), while a thread of
 * ours that frees room in the peer's ring may be ringing it: a doorbell
 * that lands after the count is read as data by the peer's next holder
 * (t_shim_fds scm_rights_unread_rung: its first byte wrong).  A ringer
 * counts itself, then looks for the end; the end is said, then the
 * ringers counted (seq_cst each): one sees the other.  A ringer that died
 * in between is not waited for past a while.  Each doorbell is counted in
 * the segment too, inside our busy word, for a peer that answers for us
 * (back.c, "Answered for us").
 */
long shim_bell_send(struct tslot *s, int fd, int flags)
{
	long n = 0;

	atomic_fetch_add(&s->ringing, 1);
	if (!(atomic_load(&s->phase) & PH_NOBELL) && shim_tx_enter(s) == 0) {
		n = sys_send(fd, &s->bell, 1, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == 1)
			shim_bell_counted(s);
		shim_tx_exit(s);
	}
	atomic_fetch_sub(&s->ringing, 1);
	return n;
}

void shim_bells_end(struct tslot *s)
{
	atomic_fetch_or(&s->phase, PH_NOBELL);
	for (int i = 0; atomic_load(&s->ringing) && i < 100000; i++)
		sys_sched_yield();
}

/*
 * A byte on the stream after the switch that is no ring: the connection
 * is broken loudly, and the kernel's with it (a reset), since whoever
 * wrote it holds a copy of the socket the library does not know (a raw
 * syscall(), pidfd_getfd()) and, its own stream intact, would wait for an
 * answer for good.
 */
int shim_behind_back(struct tslot *s, int fd)
{
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	log_error("bytes were written to a TCP socket behind the library's back after it moved "
		  "to shared memory (stdio, raw system calls?): the connection is reset");
	int rc = shunt_end_fail(&s->end, -EPROTO);
	sys_connect(fd, &sa, sizeof(sa));
	return rc;
}

/* Bytes taken off the stream after the switch must all be rings. */
static int check(struct tslot *s, int fd, const uint8_t *buf, long n)
{
	for (long i = 0; i < n; i++)
		if (buf[i] != s->bell)
			return shim_behind_back(s, fd);
	return 0;
}

static int asked(struct tslot *s);

/* The bells of buf, peeked at the head of the stream, taken off it.  A
 * byte that is not one stays where it is when a side asked to go back:
 * it is the asker's data, which may follow its last bell as soon as our
 * answer went (another thread of ours may give it while we sleep here);
 * with no ask it was written behind our back.  A take of what was
 * peeked takes only bells unless another thread took some meanwhile. */
static long take_peeked(struct tslot *s, int fd, const uint8_t *buf, long n)
{
	uint8_t got[64];
	long k = 0;

	while (k < n && buf[k] == s->bell)
		k++;
	if (k < n && !asked(s))
		return check(s, fd, buf, n);
	/* Said BACK by now, the peer may have sent data after them: no
	 * further than its last doorbell (not said, the peek saw none). */
	long left = k && asked(s) ? shim_back_bells_left(s, fd) : -1;
	if (left >= 0 && k > left)
		k = left;
	if (k == 0)
		return 0;
	long m = sys_recv(fd, got, (size_t)k, MSG_DONTWAIT);
	if (m > 0 && check(s, fd, got, m) < 0)
		return -EPROTO;
	return k;
}

/*
 * Doorbells taken at once, with no peek first: a byte other than a bell
 * can follow them only once a side asked to go back and ours answered,
 * and we answer (and ask) holding the lock of our sends.  Holding it, with
 * no ask made and no read of ours inside the kernel, what the stream has
 * is doorbells (or bytes written behind our back).  The peek cost every
 * drain a second system call (a reader asleep in epoll_wait drains per
 * message: haproxy's profile).  -EXDEV: not now, peek.
 */
static long take_now(struct tsock *t, int fd, uint8_t *buf, size_t len, int flags)
{
	struct tslot *s = t->slot;

	if (atomic_load(&t->kreads) || shim_trylock(&s->tx_mu) != 0)
		return -EXDEV;
	long n = asked(s) ? -EXDEV : sys_recv(fd, buf, len, flags);
	shim_unlock(&s->tx_mu);
	return n > 0 && check(s, fd, buf, n) < 0 ? -EPROTO : n;
}

#define TAKE_MAX 64 /* bells one take reads at most */

/* What a take that got k bells (k >= 0) says: 1 rung, 2 perhaps more. */
static int rung(long k)
{
	return k < TAKE_MAX ? 1 : 2;
}

static int taken_none(struct tslot *s, long n, int flags);

/* 1 rung (a short read: nothing more, or the urgent mark; or the asker's
 * data is next), 2 rung with perhaps more behind, -EAGAIN or -EINTR, or
 * -ECONNRESET when closed.  A blocking take waits with the program's own
 * kind of read (libc's, peeking): a cancellation point, restarted or not
 * after a signal as any read is. */
static int take(struct tsock *t, int fd, int flags)
{
	struct tslot *s = t->slot;
	uint8_t buf[TAKE_MAX];
	long n;

	if (stale(t, fd))
		return flags & MSG_DONTWAIT ? -EAGAIN : 1;
	if (flags & MSG_DONTWAIT) {
		n = take_now(t, fd, buf, sizeof(buf), flags);
		if (n != -EXDEV)
			return n > 0 ? rung(n) : taken_none(s, n, flags);
		n = sys_recv(fd, buf, sizeof(buf), flags | MSG_PEEK);
	} else {
		int err = errno;
		n = REAL(recvfrom)(fd, buf, sizeof(buf), flags | MSG_PEEK, NULL, NULL);
		if (n < 0)
			n = -errno;
		errno = err;
		/* The read held the socket while its fd was closed: what it
		 * saw is taken through the one kept. */
		fd = kfd(t, fd);
	}

	/* A read of ours asleep in the kernel on the stream (io.c, tcp_part)
	 * wakes on this doorbell and takes it: taken here, that read would
	 * sleep on with the ring's data waiting (t_shim_epoll
	 * epoll_write_first, a reader blocked in read() while its writer
	 * polls).  Other waits look again until it has. */
	if (n > 0 && atomic_load(&t->kreads))
		return flags & MSG_DONTWAIT ? -EAGAIN : 1;
	if (n > 0) {
		long k = take_peeked(s, fd, buf, n);
		return k < 0 ? -ECONNRESET : rung(k);
	}
	return taken_none(s, n, flags);
}

/* A take that found no doorbell: n is what the read returned. */
static int taken_none(struct tslot *s, long n, int flags)
{
	/* Our own shutdown(SHUT_RD) (io.c) reads as the end of the stream. */
	if (n == 0 && atomic_load_explicit(&s->end.rd_shut, memory_order_relaxed))
		return flags & MSG_DONTWAIT ? -EAGAIN : 1;
	if (n == 0)
		return -ECONNRESET;
	if (n == -EAGAIN || n == -EINTR)
		return (int)n;
	/* Reading the reset cleared it from the socket: keep it for the
	 * program's next call that meets it (io.c, reset_due).  EPIPE: the
	 * reset that answered a send after the peer's close. */
	if (n == -ECONNRESET || n == -EPIPE)
		atomic_store(&s->kreset, 1);
	return -ECONNRESET;
}

/* --- Going back to TCP (back.c) ----------------------------------------------
 * Once either side asked to go back, the stream may soon carry data again
 * after the doorbells: nothing is taken off it blindly.  The asker takes
 * the peer's doorbells itself, exactly; the peer peeks, and takes what it
 * saw only if the asker had not said where its data resumes by then (the
 * asker says so before any of that data is sent, so a peek that sees data
 * is followed by a look that sees the asker's word). */

static uint32_t sw_flags(struct tslot *s, int side)
{
	return atomic_load_explicit(&s->end.seg.ctl->sw[side].flags, memory_order_acquire);
}

/* 0: no ask; 1: the peer asked, or we did quietly (back.c, back_quietly:
 * we read its ring to its end as an answer does); 2: we did. */
static int asked(struct tslot *s)
{
	uint32_t mine = shim_sw_mine(s);

	if (__builtin_expect(!((mine | sw_flags(s, 1 - (int)s->side)) & SHUNT_SW_ASK), 1))
		return 0;
	mine &= SHUNT_SW_ASK | SHUNT_SW_LAZY;
	return mine == SHUNT_SW_ASK ? 2 : 1;
}

/* We asked quietly: the peer answers when it next calls, perhaps much
 * later. */
static int asked_quietly(struct tslot *s)
{
	return (shim_sw_mine(s) & SHUNT_SW_LAZY) != 0;
}

/* The peer asked and we answered: take doorbells we can prove are ones.
 * Not while a reset waits on the socket: a peek takes it (sock_error),
 * and once the connection is plain nobody would tell it to the program
 * (tests/diff_shim.c seed 44375017551195: no POLLERR after the peer's
 * close with our bytes unread). */
static int careful_take(struct tslot *s, int fd)
{
	uint8_t buf[64];
	struct pollfd p = { .fd = fd, .events = 0 };
	struct timespec zero = { 0, 0 };

	if (sys_ppoll(&p, 1, &zero) > 0 && (p.revents & POLLERR))
		return 0;
	long n = sys_recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);

	/* Our own shutdown(SHUT_RD) reads as the stream's end (taken_none):
	 * it was taken for the peer's death (tests/diff_shim.c seed
	 * 98177848450040). */
	if (n == 0 && atomic_load_explicit(&s->end.rd_shut, memory_order_relaxed))
		return 0;
	if (n <= 0)
		return n == 0 ? -ECONNRESET : (n == -EAGAIN ? 0 : (int)n);
	if (sw_flags(s, 1 - (int)s->side) & SHUNT_SW_BACK)
		return 0; /* back.c takes the rest, exactly */
	if (check(s, fd, buf, n) < 0)
		return -ECONNRESET;
	return sys_recv(fd, buf, (size_t)n, MSG_DONTWAIT) == n ? 1 : 0;
}

/* A wait while going back: -EXDEV when the caller has something to do
 * first (answer; send by TCP; read by TCP once the ring is empty), else a
 * short nap on the stream that consumes nothing blindly. */
static int careful_sleep(struct tslot *s, int fd, uint32_t bits, int64_t deadline)
{
	if (!(phase(s) & PH_TX_BACK) || (bits & SHUNT_WAIT_WRITE) ||
	    (sw_flags(s, 1 - (int)s->side) & SHUNT_SW_BACK))
		return -EXDEV;
	if (!(phase(s) & PH_RX_RING))
		return -EXDEV; /* the stream still has its data for us */
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	/* Its answer rings us if we wait; the nap is a bound, and a peer
	 * that answers a quiet ask may not call for hours. */
	int64_t nap = asked_quietly(s) ? 50000000 : 1000000;
	int64_t until = SHUNT_MIN(deadline, shunt_now_ns() + nap);
	struct timespec ts;
	int rc = sys_ppoll(&p, 1, shunt_left(until, &ts));
	if (rc < 0)
		return rc;
	rc = careful_take(s, fd);
	if (rc < 0)
		return rc;
	return deadline != SHUNT_NEVER && shunt_now_ns() >= deadline ? -EAGAIN : 0;
}

/* Doorbells until a read comes short: it stopped at the end of what is
 * there, or at the kernel's urgent mark (MSG_OOB, io.c's urgent()).  A
 * read from the mark would skip the urgent byte and the kernel would drop
 * it before the program's recv(MSG_OOB). */
static int drain_all(struct tsock *t, int fd)
{
	int got = 0, rc = 0;

	for (int i = 0; i < 16; i++) {
		rc = take(t, fd, MSG_DONTWAIT);
		if (rc == -ECONNRESET)
			return rc;
		if (rc < 0)
			break;
		got = 1;
		if (rc == 1)
			break;
	}
	/* Taken to the end: no doorbell waits for a poll's next arm to drain
	 * (end.c, shunt_end_poll), once a wake-up's look took it (stunnel's
	 * relay: 4845 failing recvfrom() in 5000 round trips).  One on its
	 * way still comes, and wakes that poll at once; its look takes it. */
	if (rc == 1 || rc == -EAGAIN)
		atomic_fetch_or_explicit(&t->slot->end.unrung, SHUNT_WAIT_ALL,
					 memory_order_relaxed);
	/* What we took may have been another wait's: it looks again. */
	if (got)
		shim_kick_others(t->slot);
	return got;
}

static int tb_drain(struct shunt_bell *b, uint32_t bits)
{
	struct tslot *s = slot_of(b);

	(void)bits;
	if (!(phase(s) & PH_RX_RING))
		return 0; /* the stream still carries data: not ours to take */
	/* A leader asleep in a read takes them, and tells its followers. */
	if (atomic_load_explicit(&s->leader, memory_order_acquire))
		return 0;
	switch (asked(s)) {
	case 2:
		return 0;
	case 1:
		return (phase(s) & PH_TX_BACK) ? careful_take(s, bell_fd(b)) : 0;
	}
	return drain_all(b->ctx, bell_fd(b));
}

/*
 * Has the peer died?  A reset says so; so does a FIN from a peer whose
 * sends are in its ring, as a live one shuts down through the segment.
 * But a peer whose sends stay on TCP for good (its shutdown came before it
 * could switch: move.c, shim_switch_for_shutdown) sends its FIN alive, and
 * ours may be in the ring all the same (we switched first): on this host
 * it is dead only once no process holds its socket.  Taking that FIN for
 * its death sent our data by TCP behind our switch (the soak's blocking
 * clients).  Between VMs its socket is not ours to see: the FIN counts.
 * The kernel's state, not poll(): after our own shutdown(SHUT_RD) the
 * socket polls as hung up whatever the peer did.
 */
static int peer_dead(struct tslot *s, int fd)
{
	uint64_t ino = 0;
	uint32_t uid;

	if (!shim_kern_peer_done(fd))
		return 0;
	uint32_t pf = sw_flags(s, 1 - (int)s->side);
	/* A peer that said BACK sends on TCP, its FIN behind its data, alive
	 * or not: our reads come to that FIN, or to its reset (back.c).  Its
	 * shutdown on TCP was taken for its death: SO_ERROR said ECONNRESET
	 * (tests/diff_shim.c seed 177813955005252). */
	if (pf & SHUNT_SW_BACK)
		return 0;
	if (s->vm.on || !(pf & SHUNT_SW_TCP))
		return 1;
	return shim_kern_sock_find(&s->peer, &s->local, &ino, &uid) < 0 || ino == 0;
}

static int tb_alive(struct shunt_bell *b)
{
	return peer_dead(slot_of(b), bell_fd(b)) ? -ECONNRESET : 0;
}

/* Before the stream is ours, a sleeper may only watch it: data the program
 * has not asked for may sit there.  So it sleeps a growing while instead,
 * and a wait for room on its wait word, which the peer wakes when it frees
 * some (wake_watcher): the peer's sends are still on the stream, where a
 * doorbell would be data.  A send of 100 MB in one call made before the
 * move kept them there for all of it, and the echo of it, a ring's worth
 * per nap, ran 7 times slower than TCP (a helper's Python client, 12-04:
 * 2.8 s against 0.4).  Room or the peer's death ends the wait early; a
 * hostile peer that rewrites the word only makes us look again. */
static _Thread_local int64_t stuck_ns;

static void watch_word(struct tslot *s, uint32_t bits, int64_t until)
{
	_Atomic uint32_t *w = &s->end.me->wait;
	uint32_t v = atomic_load(w);
	int64_t left = until - shunt_now_ns();

	if (!(v & bits) || left <= 0)
		return; /* rung (cleared) already, or time */
	struct timespec ts = shunt_ts(left);
	sys_futex_wait(w, v, &ts);
}

static int watch(struct shunt_bell *b, uint32_t bits, int64_t deadline)
{
	struct tslot *s = slot_of(b);
	struct pollfd p = { .fd = bell_fd(b), .events = POLLIN | POLLRDHUP };
	int64_t now = shunt_now_ns(), until = deadline;
	struct timespec ts;

	stuck_ns = stuck_ns ? SHUNT_MIN(stuck_ns * 2, STUCK_NS_MAX) : 1000000;
	if (until == SHUNT_NEVER || until - now > stuck_ns)
		until = now + stuck_ns;
	/* Room alone: on the word, then a look at the stream for a death. */
	int on_word = bits == SHUNT_WAIT_WRITE && !s->vm.on;
	if (on_word)
		watch_word(s, bits, until);
	int rc = sys_ppoll(&p, 1, on_word ? &(struct timespec){ 0, 0 } : shunt_left(until, &ts));
	if (rc < 0)
		return rc;
	/* Reset, or closed both ways (a killed peer, or TCP's timeouts after a
	 * guest died): gone, whatever data is still unread before it. */
	if (rc > 0 && (p.revents & (POLLERR | POLLHUP)))
		return -ECONNRESET;
	/* The peer's FIN, when it means its socket was closed under it
	 * (killed, or gone without a close): peer_dead.  A killed peer that
	 * had read everything sends a FIN and no reset, and our unread data
	 * keeps POLLIN up: a writer waiting for room slept through it for a
	 * minute. */
	if (rc > 0 && (p.revents & POLLRDHUP) && peer_dead(slot_of(b), bell_fd(b)))
		return -ECONNRESET;
	if (rc > 0 && (p.revents & POLLIN) && !on_word) {
		/* Readable at once: unread data, not news.  Sleep it off. */
		ts = shunt_ts(until - shunt_now_ns());
		nanosleep(&ts, NULL);
	}
	return deadline != SHUNT_NEVER && shunt_now_ns() >= deadline ? -EAGAIN : 0;
}

_Thread_local int shim_wait_eintr;

/* Every handler has SA_RESTART (or there is none): looked at most once
 * a second.  A hint, safe both ways: said yes wrongly, the ppoll's EINTR
 * looks again (sleep_kickable); said no wrongly, the read is the
 * kernel's, exact, only not kickable. */
static _Atomic int64_t restart_looked_at;
static _Atomic int restart_all = 1;

static int restarts_hint(void)
{
	int64_t now = shunt_now_ns();

	if (now - atomic_load_explicit(&restart_looked_at, memory_order_relaxed) > 1000000000) {
		atomic_store_explicit(&restart_looked_at, now, memory_order_relaxed);
		atomic_store_explicit(&restart_all, shim_handlers_restart(), memory_order_relaxed);
	}
	return atomic_load_explicit(&restart_all, memory_order_relaxed);
}

/*
 * Does a blocking read sleep where a way back can wake it (sleep_kickable)?
 * Another thread of ours may ask while it sleeps, or another process that
 * holds the socket too.  In the kernel's blocking read nothing woke it
 * short of the idle peer's next byte: the way back waited 5 s for its
 * lock, then reset the connection (t_shim_flags way_back_beside_reader).
 * One thread alone keeps the kernel's read, which wakes sooner (64-byte
 * round trips after 2 ms quiet: 7.6 us against 8.3); and so does a
 * program with a handler without SA_RESTART, whose signals interrupt the
 * read or not exactly as TCP's (ppoll's EINTR cannot tell which signal
 * came: an SA_RESTART one read as EINTR, a helper's reproducer).
 */
static int kickable(struct tslot *s)
{
	if (__libc_single_threaded && !shim_slot_others(s))
		return 0;
	return restarts_hint();
}

/*
 * A blocking read's sleep: on the stream, and on the thread's kick eventfd
 * if it has one (it polled before), listed for this connection, so that a
 * way back of another thread of ours (back.c, ask) wakes it to let go of
 * the ring.  A thread without an eventfd gets none here (a thread per
 * connection would hold twice the fds), and looks again every
 * QUIET_LOOK_NS; a listed one every KICKED_LOOK_NS, for an asker in another
 * process of its family, which cannot kick it (a way back waits ASK_NS for
 * the lock).  1 when the stream has something, 0 to look again, or -EINTR
 * for a handler without SA_RESTART.
 */
static int sleep_kickable(struct tslot *s, int fd)
{
	int kfd = shim_kick_thread_fd_had();
	int slot = kfd >= 0 ? shim_kick_listen(kfd, shim_kick_bit(s)) : -1;
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN | POLLRDHUP },
			       { .fd = kfd, .events = POLLIN } };
	struct timespec ts = shunt_ts(slot < 0 ? QUIET_LOOK_NS : KICKED_LOOK_NS);
	int rc = 0;

	/* Listed before this look: an ask after it kicks us (its flag and
	 * our listing each a seq_cst write before the other's look). */
	atomic_thread_fence(memory_order_seq_cst);
	if (!asked(s))
		rc = REAL(ppoll)(p, slot < 0 ? 1 : 2, &ts, NULL) < 0 ? -errno : 0;
	shim_kick_unlisten(slot);
	if (slot >= 0 && p[1].revents)
		shim_kick_reset(kfd);
	if (rc == -EINTR)
		return shim_restarts() ? 0 : -EINTR;
	return p[0].revents ? 1 : 0;
}

/* The leader sleeps in the kernel: when it waits to read with no deadline,
 * a blocking read of one ring (a socket read for signals), or a kickable
 * ppoll (kickable), else poll() and a drain.  A doorbell it took may have
 * been a poll's of another thread (its writer's leader took its reader's):
 * those look again (kick.c). */
static int lead(struct tsock *t, int fd, uint32_t bits, int64_t deadline)
{
	int rc;

	/* A blocking read waits as the program's read of TCP would: restarted
	 * under SA_RESTART (sleep_kickable's ppoll by its own look). */
	if (bits == SHUNT_WAIT_READ && deadline == SHUNT_NEVER && !shim_wait_eintr) {
		/* Rung since our wait armed (the peer clears the bit as it
		 * rings), its doorbell may be gone already: a drain took it
		 * before we led (tb_drain takes none once one leads).  Asleep in
		 * the kernel we would wait for the next one with the data there.
		 * (Suspected in t_shim_epoll epoll_write_first under TSan, which
		 * hung once in CI and once in about 300 runs here while its
		 * writer's polls looked every 1 ms: a reader blocked in read()
		 * beside a writer that polls.) */
		if (!(atomic_load(&t->slot->end.me->wait) & SHUNT_WAIT_READ))
			return 0;
		if (!kickable(t->slot)) {
			rc = take(t, fd, 0);
		} else {
			rc = sleep_kickable(t->slot, fd);
			if (rc == 1)
				rc = take(t, fd, MSG_DONTWAIT);
		}
		if (rc > 0)
			shim_kick_others(t->slot);
		return rc > 0 || rc == -EAGAIN ? 0 : rc;
	}
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	struct timespec ts;
	int64_t until = SHUNT_MIN(deadline, shunt_now_ns() + LOOK_NS);
	rc = sys_ppoll(&p, 1, shunt_left(until, &ts));
	if (rc < 0)
		return rc;
	if (rc == 0)
		return until == deadline ? -EAGAIN : 0;
	rc = take(t, fd, MSG_DONTWAIT);
	if (rc > 0)
		shim_kick_others(t->slot);
	return rc > 0 || rc == -EAGAIN || rc == -EINTR ? 0 : rc;
}

static void leader_done(void *arg)
{
	struct tslot *s = arg;

	atomic_store(&s->leader, 0);
	atomic_fetch_add(&s->bell_seq, 1);
	if (atomic_load(&s->followers))
		sys_futex_wake(&s->bell_seq, INT_MAX);
}

static int follow(struct tslot *s, int64_t deadline)
{
	uint32_t seq = atomic_load(&s->bell_seq);
	uint32_t who = atomic_load(&s->leader);

	if (!who)
		return 0; /* the leader just left: look again, maybe lead */
	int64_t left = deadline == SHUNT_NEVER ? FOLLOW_NS : deadline - shunt_now_ns();
	if (left <= 0)
		return -EAGAIN;
	struct timespec ts = shunt_ts(SHUNT_MIN(left, FOLLOW_NS));
	atomic_fetch_add(&s->followers, 1);
	int rc = sys_futex_wait(&s->bell_seq, seq, &ts);
	atomic_fetch_sub(&s->followers, 1);
	if (rc == -EINTR)
		return rc;
	if (rc == -ETIMEDOUT && sys_kill((int)who, 0) == -ESRCH)
		atomic_compare_exchange_strong(&s->leader, &who, 0); /* it died */
	return 0;
}

/* After our shutdown(SHUT_RD) the stream always reads as ended: a wait
 * (for room to send) naps instead. */
static int nap(int64_t deadline)
{
	int64_t now = shunt_now_ns();

	if (deadline != SHUNT_NEVER && now >= deadline)
		return -EAGAIN;
	struct timespec ts = shunt_ts(SHUNT_MIN(deadline - now, 1000000ll));
	nanosleep(&ts, NULL);
	return 0;
}

static int sleep_ringing(struct shunt_bell *b, uint32_t bits, int64_t deadline);

static int tb_sleep(struct shunt_bell *b, uint32_t bits, int64_t deadline)
{
	struct tslot *s = slot_of(b);

	/* A wait inside a call that is a cancellation point (a send waiting
	 * for room, a read with a timeout) acts on a pending cancellation
	 * before each sleep, which is bounded (LOOK_NS, STUCK_NS_MAX,
	 * FOLLOW_NS): its sleeps are not, and a thread cancelled while it
	 * waited for room from a peer that never reads was never cancelled
	 * (pthread_join waited for good; t_shim_close cancel_in_room).  What
	 * it holds then: the slot's robust locks, which its end gives back,
	 * and its call's reference, which its end puts (fdtab.c). */
	if (shim_in_cancel_point())
		pthread_testcancel();

	if (atomic_load_explicit(&s->end.rd_shut, memory_order_relaxed))
		return nap(deadline);
	switch (asked(s)) {
	case 2: /* we asked: let go of the ring, the asker takes over */
		return -EXDEV;
	case 1:
		return careful_sleep(s, bell_fd(b), bits, deadline);
	}
	/* Both ends full (io.c): the send lets go of the ring, and goes on by
	 * TCP (tx_route). */
	if ((bits & SHUNT_WAIT_WRITE) && shim_jam_due(b->ctx))
		return -EXDEV;
	int64_t until = (bits & SHUNT_WAIT_WRITE) ? shim_jam_at(b->ctx) : SHUNT_NEVER;
	until = SHUNT_MIN(until, deadline);
	int rc = sleep_ringing(b, bits, until);
	return rc == -EAGAIN && until != deadline ? 0 : rc;
}

/* A wait on the doorbell: 0 to look again, -EAGAIN at the deadline. */
static int sleep_ringing(struct shunt_bell *b, uint32_t bits, int64_t deadline)
{
	struct tslot *s = slot_of(b);

	/* A writer that never reads reaches the peer's switch offset only
	 * here (the peer sent nothing by TCP): it napped 1 to 16 ms per wait
	 * for room, its doorbells left unheard (tcpbench stream: 33 MB/s
	 * without spinning). */
	if (!shim_ring_at_x(b->ctx))
		return watch(b, bits, deadline);
	stuck_ns = 0;
	uint32_t none = 0;
	if (!atomic_compare_exchange_strong(&s->leader, &none, (uint32_t)shim_pid()))
		return follow(s, deadline);
	int rc;
	/* A thread cancelled in its blocking read must not leave the lead. */
	pthread_cleanup_push(leader_done, s);
	rc = lead(b->ctx, bell_fd(b), bits, deadline);
	pthread_cleanup_pop(1);
	return rc;
}

void shim_bell_wake_all(struct tsock *t)
{
	struct tslot *s = t->slot;

	atomic_fetch_add(&s->bell_seq, 1);
	if (atomic_load(&s->followers))
		sys_futex_wake(&s->bell_seq, INT_MAX);
}

const struct shunt_bell_ops shim_bell_ops = {
	.ring = tb_ring,
	.sleep = tb_sleep,
	.drain = tb_drain,
	.alive = tb_alive,
	.waits_arm = 1,
	.drain_spares = 1,
};
