/*
 * back.c - a moved connection goes back to plain TCP.
 *
 * Some holders cannot carry a moved connection: a program exec'd without
 * the library, another process the socket is passed to (SCM_RIGHTS), or
 * stdio, which reads and writes where no wrapper sees.  Before the socket
 * reaches one of those, the side that hands it over (the asker) takes the
 * connection back to TCP, with the peer's help, so that from then on the
 * kernel's socket alone carries every byte, in order, in both directions.
 * The switch words of the segment carry the protocol (docs/design.md,
 * "Going back"):
 *
 *   asker A                              peer P (runs the library)
 *   holds both directions' locks
 *   ASK; one doorbell if P may sleep
 *                                        stops sending into its ring;
 *                                        back_head = its ring's head,
 *                                        back_tcp = its TCP total; BACK
 *                                        (if its sends were on TCP: TCP)
 *   back_head, back_tcp; BACK
 *   reads P's doorbells off the stream
 *   up to P's back_tcp; state OFF
 *                                        copies what A left unread in P's
 *                                        ring into TCP, then sends there;
 *                                        reads A's ring to A's back_head,
 *                                        A's doorbells up to A's back_tcp,
 *                                        then TCP
 *
 * Both sides count the same TCP stream, so each knows exactly where the
 * other's data resumes, as at the switch (move.c).  The asker's unread
 * ring bytes cannot be put back into its own socket: only the peer can
 * send them, which is why it must answer.  It answers from any call on
 * the socket, or from a wait (the doorbell wakes it).  An asker that gets
 * no answer in ASK_NS, or whose stream holds doorbells behind data it has
 * not read yet, cannot go back exactly: it resets the connection (both
 * sides read ECONNRESET) and says why at level error, rather than let a
 * byte go astray.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"

#define ASK_NS (5ll * 1000000000)
/* How long an answer waits for the asker's BACK to send the rest at once,
 * and the asker for that rest to reach its socket. */
#define ANSWERED_NS (500ll * 1000000)
/* How long an asker waits for a peer that has bytes of its ring to
 * resend before it answers for it (wait_answer). */
#define LEFT_NS (1000ll * 1000000)
/* How long a close or an exit() sends what the asker left in our ring. */
#define LAST_NS (2000ll * 1000000)
#define UNKNOWN (~0ull)

static struct shunt_switch *sw_of(struct tslot *s, int side)
{
	return &s->end.seg.ctl->sw[side];
}

static uint32_t peer_flags(struct tslot *s)
{
	return atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->flags, memory_order_acquire);
}

int shim_peer_back(struct tsock *t)
{
	return (peer_flags(t->slot) & SHUNT_SW_BACK) != 0;
}

/* It asked, or its sends went back on TCP whoever asked: a peer that
 * answered an ask it read in our word, which it may write, not we (a
 * helper's attack: then it died, and a read that may not wait, knowing of
 * no ask, looked at the empty ring alone for good; rx_leave_locked resets
 * such a connection). */
int shim_peer_leaves(struct tsock *t)
{
	return atomic_load_explicit(&t->slot->state, memory_order_relaxed) == SLOT_MOVED &&
	       t->mapped && (peer_flags(t->slot) & (SHUNT_SW_ASK | SHUNT_SW_BACK));
}

int shim_peer_asks(struct tsock *t)
{
	return atomic_load_explicit(&t->slot->state, memory_order_relaxed) == SLOT_MOVED &&
	       t->mapped && (peer_flags(t->slot) & SHUNT_SW_ASK);
}

int shim_peer_fin(struct tslot *s)
{
	int64_t st = shunt_end_peer_state(&s->end);

	return st >= 0 && ((st & SHUNT_ST_SHUT_WR) ||
			   (st & (SHUNT_ST_CLOSED | SHUNT_ST_RESET)) == SHUNT_ST_CLOSED);
}

/* Our kernel's count of the peer's stream we read (shim_kern_rx_consumed).
 * Closed, the socket saw the peer's FIN as its ring says: both go back to
 * TCP with the kernel's FIN (flush_locked, back_quietly, a close); or, once
 * the peer went back to TCP and shut its socket down, as its switch word
 * says (shim_back_shutdown).  Without that word a reset after such a FIN
 * counted the FIN as a byte still queued: a doorbell of the peer's was
 * left in the stream and read as data (tests/diff_shim.c seeds
 * 110593490697306 and 78559881551636: FIONREAD one more than TCP's, then
 * a read of other bytes than TCP's). */
static int consumed(struct tslot *s, int fd, uint64_t *at)
{
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);
	uint64_t fin_at = (atomic_load_explicit(&p->flags, memory_order_acquire) & SHUNT_SW_FIN)
				  ? atomic_load_explicit(&p->fin_tcp, memory_order_relaxed)
				  : SHIM_FIN_UNKNOWN;

	return shim_kern_rx_consumed_fin(fd, at, shim_peer_fin(s), fin_at);
}

/* Our sends went back to TCP and end now: the peer may still read our
 * ring, and learns from FIN where our kernel's FIN follows (consumed).
 * Only once. */
static int fin_due(struct tsock *t)
{
	struct tslot *s = t->slot;

	if (!t->mapped)
		return 0;
	uint32_t f = shim_sw_mine(s);
	return (f & SHUNT_SW_BACK) && !(f & SHUNT_SW_FIN);
}

static void fin_tell(struct tsock *t, uint64_t at)
{
	struct shunt_switch *me = sw_of(t->slot, (int)t->slot->side);

	atomic_store_explicit(&me->fin_tcp, at, memory_order_relaxed);
	shim_sw_set(t->slot, SHUNT_SW_FIN);
}

int shim_back_shutdown(struct tsock *t, int fd, int how)
{
	uint64_t before = 0, after = 0;
	int tell = how != SHUT_RD && fin_due(t) && shim_kern_tx_total(fd, &before) == 0;
	int rc = sys_shutdown(fd, how);

	/* Only if no send of another thread came between: the total after
	 * counts the FIN while it waits to be sent. */
	if (tell && rc == 0 && shim_kern_tx_total(fd, &after) == 0 && after - before <= 1)
		fin_tell(t, before);
	return rc;
}

int shim_back_fin_sent(struct tsock *t)
{
	struct tslot *s = t->slot;

	return t->mapped && (shim_sw_mine(s) & SHUNT_SW_FIN);
}

/* The peer's word is checked against what our kernel received: its last
 * close tells FIN whether it sends a FIN or a reset (shim_back_close). */
int shim_back_fin_came(struct tsock *t, int fd)
{
	struct shunt_switch *p = t->mapped ? sw_of(t->slot, 1 - (int)t->slot->side) : NULL;
	uint64_t got;

	return p && (atomic_load_explicit(&p->flags, memory_order_acquire) & SHUNT_SW_FIN) &&
	       shim_kern_rx_received(fd, &got) == 0 &&
	       got > atomic_load_explicit(&p->fin_tcp, memory_order_relaxed);
}

/* Our last close: its FIN, if it sends one rather than a reset, follows
 * all we sent (a reset leaves the kernel's count at that total, which
 * consumed then takes for no FIN: right either way). */
SHUNT_FORK_TEXT void shim_back_close(struct tsock *t, int fd)
{
	uint64_t total;

	if (fin_due(t) && shim_kern_tx_total(fd, &total) == 0)
		fin_tell(t, total);
}

static void nap(int64_t *ns)
{
	struct timespec ts = shunt_ts(*ns);

	nanosleep(&ts, NULL);
	*ns = SHUNT_MIN(*ns * 2, 10000000);
}

/* A robust lock, taken before a deadline or not at all. */
static int lock_by(pthread_mutex_t *mu, int64_t deadline)
{
	int64_t ns = 50000;

	for (;;) {
		int rc = pthread_mutex_trylock(mu);
		if (rc == EOWNERDEAD) {
			pthread_mutex_consistent(mu);
			return 0;
		}
		if (rc == 0)
			return 0;
		if (shunt_now_ns() >= deadline)
			return -ETIMEDOUT;
		nap(&ns);
	}
}

/* Both locks of the rings (no call of ours on them meanwhile), by the
 * deadline: 0, or -ETIMEDOUT holding neither. */
static int lock_rings(struct tslot *s, int64_t deadline)
{
	int rc = lock_by(&s->tx_mu, deadline);

	if (rc == 0 && (rc = lock_by(&s->rx_mu, deadline)) < 0)
		shim_unlock(&s->tx_mu);
	return rc;
}

static void unlock_rings(struct tslot *s)
{
	shim_unlock(&s->rx_mu);
	shim_unlock(&s->tx_mu);
}

/* --- Answered for us ---------------------------------------------------------
 * A peer that hands the connection over (SCM_RIGHTS, exec, stdio) while we
 * make no call on it for seconds (we wait on a pipe, a disk, a user)
 * cannot get our answer: it answers for us once our ring is read to its
 * end and our doorbells are counted (take_over, below).  Each of our sends
 * into the ring, doorbells, ring shutdowns and answers runs inside our
 * busy word, so that it and the peer's take-over exclude each other: the
 * peer sets TAKEN only while nothing of ours is inside and nothing ended
 * since it looked, and nothing of ours enters once it is set. */

static _Atomic uint64_t *busy_of(struct tslot *s)
{
	return &sw_of(s, (int)s->side)->busy;
}

int shim_tx_enter(struct tslot *s)
{
	if (!(atomic_fetch_add(busy_of(s), SHUNT_BUSY_IN) & SHUNT_BUSY_TAKEN))
		return 0;
	atomic_fetch_sub(busy_of(s), SHUNT_BUSY_IN);
	return -EXDEV;
}

void shim_tx_exit(struct tslot *s)
{
	/* Release: what ran inside (ring head, doorbell count, state) before
	 * the count of ended ones that the peer's take-over looks at. */
	atomic_fetch_add_explicit(busy_of(s), SHUNT_BUSY_OUT, memory_order_release);
}

/* A doorbell went: counted for a peer that may take our doorbells off its
 * stream without us (take_over). */
void shim_bell_counted(struct tslot *s)
{
	atomic_fetch_add_explicit(&sw_of(s, (int)s->side)->bells, 1, memory_order_relaxed);
}

/* An urgent byte of ours goes down the stream (inside our busy word):
 * the peer's count of our doorbells no longer says where our data
 * resumes, so it does not answer for us.  And its reads stop at the
 * mark, where our ring's bytes before the urgent byte end, as TCP's do
 * (shim_rx_to_mark). */
void shim_tx_urgent(struct tslot *s)
{
	struct shunt_switch *me = sw_of(s, (int)s->side);

	atomic_fetch_or_explicit(&me->bells, SHUNT_BELLS_URGENT, memory_order_relaxed);
	atomic_store_explicit(&me->urg_at, atomic_load(s->end.tx.head), memory_order_relaxed);
	shim_sw_set(s, SHUNT_SW_URG);
}

/* The peer's urgent mark in its ring, and our reads' place there: 1 if
 * it sent urgent data after its switch. */
static int urgent_mark(struct tslot *s, uint64_t *mark, uint64_t *at)
{
	if (!(peer_flags(s) & SHUNT_SW_URG))
		return 0;
	*mark = atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->urg_at, memory_order_relaxed);
	*at = atomic_load_explicit(s->end.rx.tail, memory_order_relaxed);
	return 1;
}

/* Free-running indices: a mark ahead of our reads is at most a ring away
 * (one passed is "behind", a distance past 2^63). */
size_t shim_rx_to_mark(struct tslot *s, size_t len)
{
	uint64_t mark, at;

	if (__builtin_expect(!urgent_mark(s, &mark, &at), 1) || mark == at ||
	    mark - at > s->end.rx.cap)
		return len;
	return (size_t)SHUNT_MIN(mark - at, (uint64_t)len);
}

int shim_rx_at_mark(struct tslot *s)
{
	uint64_t mark, at;

	return !urgent_mark(s, &mark, &at) ? -1 : mark == at;
}

/* Our answer, with tx_mu held: our ring's data ends at its head, our TCP
 * data resumes at `total`; what we resend of the ring starts at `from`
 * (UNKNOWN: where the asker's final tail says, flush_locked). */
static void say_back(struct tslot *s, uint64_t from, uint64_t total)
{
	struct shunt_switch *me = sw_of(s, (int)s->side);

	atomic_store(&s->back_pos, from);
	atomic_store(&s->back_end, s->end.tx.pos);
	atomic_store_explicit(&me->back_head, s->end.tx.pos, memory_order_relaxed);
	atomic_store_explicit(&me->back_tcp, total, memory_order_relaxed);
	/* Release: both numbers before the flag that covers them. */
	shim_sw_set(s, SHUNT_SW_BACK);
}

/* With tx_mu held: the peer answered for us, behind the doorbells it took
 * (nothing entered our ring since).  What it left unread in our ring goes
 * by TCP first, as after any answer (flush_locked, once its BACK says its
 * tail is final); with none, our sends are the kernel's at once. */
static void answered_for_us(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint64_t pos = s->end.tx.pos, total = 0;
	int left = atomic_load_explicit(s->end.tx.tail, memory_order_acquire) != pos;

	shim_bells_end(s);
	shim_kern_tx_total(fd, &total); /* as an answer says it, for our own looks */
	say_back(s, left ? UNKNOWN : pos, total);
	atomic_fetch_or(&s->phase, PH_NOBELL | PH_TX_BACK | (left ? 0 : PH_TX_PLAIN));
	if (left)
		shim_linger_hold(t, fd);
	else
		shim_tx_opts_restore(t, fd);
	shim_kick_others(s); /* a poll of ours for room asks the kernel now */
	log_debug("fd %d: the peer went back to TCP for us while we made no call%s", fd,
		  left ? ": what it did not read of our ring goes by TCP first" : "");
}

/* --- The peer's part ---------------------------------------------------------- */

/* Our ring's bytes the asker left unread: still ours to send, first. */
static int leftovers(struct tslot *s, uint64_t *from)
{
	struct shunt_ring *r = &s->end.tx;
	uint64_t tail = atomic_load_explicit(r->tail, memory_order_acquire);

	/* Free-running indices: only the distance counts (the asker may have
	 * moved its tail back before 0, unread_to_ring). */
	if (r->pos - tail > r->cap)
		return -EPROTO;
	*from = tail;
	return 0;
}

void shim_back_answer_locked(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint32_t ph = atomic_load(&s->phase);
	uint64_t total = 0;

	if (ph & PH_TX_BACK)
		return;
	if (!(ph & PH_TX_RING)) {
		/* Our data never left TCP: it stays there, with no doorbell. */
		shim_sw_set(s, SHUNT_SW_TCP | SHUNT_SW_BACK);
		atomic_fetch_or(&s->phase, PH_NOBELL | PH_TX_BACK | PH_TX_PLAIN);
		shim_tx_opts_restore(t, fd);
		return;
	}
	if (shim_tx_enter(s) < 0) {
		answered_for_us(t, fd);
		return;
	}
	/* A thread of the asker asleep on the ring must wake to let go of
	 * it: one last doorbell, before the offset that ends them.  Not when
	 * the asker still has our TCP data before our switch to read: none of
	 * its threads sleeps on the ring then (a wait for room naps, bell.c),
	 * and that doorbell behind the data was what kept it from going back
	 * exactly (the soak's hand-overs: "doorbells wait behind unread
	 * data", its wait bits armed from before). */
	if (atomic_load_explicit(&s->end.peer->wait, memory_order_acquire) &&
	    !shim_peer_before_x(s))
		shim_bell_send(s, fd, 0);
	shim_bells_end(s);
	if (shim_kern_tx_total(fd, &total) < 0) {
		shim_tx_exit(s);
		shunt_end_fail(&s->end, -EPROTO);
		return;
	}
	say_back(s, UNKNOWN, total);
	atomic_fetch_or(&s->phase, PH_NOBELL | PH_TX_BACK);
	shim_tx_exit(s);
	/* Bytes the asker has not read yet may be ours to resend. */
	if (atomic_load_explicit(s->end.tx.tail, memory_order_acquire) != s->end.tx.pos)
		shim_linger_hold(t, fd);
	/* A poll of ours for room asked the kernel nothing while our sends
	 * went to the ring (poll.c, kernel_set): it looks again now. */
	shim_kick_others(s);
	log_debug("fd %d: the peer asked to go back to TCP: our TCP data from %llu", fd,
		  (unsigned long long)total);
}

/* Our send lock: waited for when `block`ing, else by the deadline (0: only
 * if free), -EAGAIN past it.  A call that may not block never waits on it
 * unbounded: another thread's blocking flush holds it for as long as the
 * asker's new holder does not read (t_shim_flags hand_over_end_big). */
static int tx_lock(struct tslot *s, int block, int64_t deadline)
{
	if (!block)
		return lock_by(&s->tx_mu, deadline) < 0 ? -EAGAIN : 0;
	shim_lock(&s->tx_mu);
	return 0;
}

/* 1 when this call answered (not another thread, nor the asker for us);
 * 0 when the answer was given; -EAGAIN when our send lock was not had. */
static int answer(struct tsock *t, int fd, int block, int64_t deadline)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->phase) & PH_TX_BACK)
		return 0;
	int rc = tx_lock(s, block, deadline);
	if (rc < 0)
		return rc;
	int now = !(atomic_load(&s->phase) & PH_TX_BACK);
	shim_back_answer_locked(t, fd);
	shim_unlock(&s->tx_mu);
	return now;
}

int shim_back_answer(struct tsock *t, int fd)
{
	if (atomic_load(&t->slot->phase) & PH_TX_BACK)
		return 0;
	int now = answer(t, fd, 1, 0);
	shim_back_settle(t, fd);
	return now;
}

/* Send what is left of our ring into TCP.  0 when all of it went; -EAGAIN
 * (or another error) if some is left.  The asker's tail is final once it
 * said BACK (it holds its reading lock from before). */
static int flush_locked(struct tsock *t, int fd, int block)
{
	struct tslot *s = t->slot;
	struct shunt_ring *r = &s->end.tx;
	uint64_t pos = atomic_load(&s->back_pos), end = atomic_load(&s->back_end);

	if (pos == UNKNOWN) {
		atomic_thread_fence(memory_order_seq_cst); /* finish_quietly */
		uint32_t pf = peer_flags(s);
		if (!(pf & SHUNT_SW_BACK))
			return -EAGAIN;
		if (pf & SHUNT_SW_LAZY)
			pos = end; /* it reads our ring itself (back_quietly) */
		else if (leftovers(s, &pos) < 0)
			return -EPROTO;
		atomic_store(&s->back_pos, pos);
		log_debug("fd %d: %llu ring bytes the peer left unread go by TCP", fd,
			  (unsigned long long)(end - pos));
	}
	while (pos != end) { /* free-running: pos may lie "before" 0 */
		size_t n = (size_t)SHUNT_MIN(end - pos, r->cap);
		long k = sys_sendto(fd, r->data + (pos & r->mask), n,
				    MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT), NULL, 0);
		if (k == -EINTR)
			continue;
		if (k <= 0)
			return k ? (int)k : -EAGAIN;
		pos += (uint64_t)k;
		atomic_store(&s->back_pos, pos);
	}
	/* A shutdown that went to the ring is the stream's now. */
	if (shunt_end_state(&s->end) & SHUNT_ST_SHUT_WR)
		sys_shutdown(fd, SHUT_WR);
	atomic_fetch_or(&s->phase, PH_TX_PLAIN);
	/* One that came while these bytes waited for room follows them (io.c,
	 * fin_behind_leftovers).  Looked at after PLAIN, which that shutdown
	 * looks at after its flag: one of us sees the other's, and whoever
	 * takes the flag sends the FIN.  Looked at before, a shutdown between
	 * the two found neither, and its FIN never went (a helper's review,
	 * with a delay put there). */
	if (atomic_fetch_and(&s->flags, ~TF_FIN_DUE) & TF_FIN_DUE)
		shim_back_shutdown(t, fd, SHUT_WR);
	shim_tx_opts_restore(t, fd);
	shim_kick_others(s); /* as above */
	return 0;
}

/* The asker says BACK right after our answer: 0 once it did; -EAGAIN
 * at once with no deadline (0); -ECONNRESET if it closed, or, `block`ing,
 * did not say it by the deadline (-EAGAIN past a deadline otherwise). */
static int wait_asker(struct tslot *s, int block, int64_t deadline)
{
	int64_t ns = 20000;

	while (!(peer_flags(s) & SHUNT_SW_BACK)) {
		int64_t st = shunt_end_peer_state(&s->end);
		if (!deadline)
			return -EAGAIN;
		if (st < 0 || (st & SHUNT_ST_CLOSED))
			return -ECONNRESET;
		if (shunt_now_ns() >= deadline)
			return block ? -ECONNRESET : -EAGAIN;
		nap(&ns);
	}
	return 0;
}

static int rx_leave(struct tsock *t, int fd, int wait, int try);

/* Our kernel counted the peer's TCP data up to its switch offset as read,
 * and between VMs its proof that follows (*at: how much): what follows in
 * our stream is its doorbells. */
static int past_peer_switch(struct tslot *s, int fd, uint64_t *at)
{
	return consumed(s, fd, at) == 0 && !shim_proof_pending(s) &&
	       *at >= atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->tcp_off,
					   memory_order_relaxed) + s->vm.proof_need;
}

/*
 * The asker's doorbells, taken off our stream for a program that may
 * never read again (a client that only sends, then exits): left there,
 * they are unread bytes at the kernel's close, which then resets the
 * connection under the data still on its way to the asker's new holder
 * (the soak's SCM_RIGHTS hand-over, tests/repro/scmback.c).  Only when
 * nothing of the asker's comes before them: its TCP data up to its switch
 * read (the kernel's count), its ring read to its end (rx_leave_locked).
 * Never waits: a read does the rest, as ever.
 */
static void take_asker_bells(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint64_t at;

	if ((atomic_load(&s->phase) & PH_RX_PLAIN) || !(peer_flags(s) & SHUNT_SW_BACK) ||
	    !past_peer_switch(s, fd, &at))
		return;
	rx_leave(t, fd, 0, 1); /* a read in progress takes them itself */
}

/* After a wait: fd still names t.  The program may have closed it
 * meanwhile, and the number may be another file's now: what we send
 * goes nowhere else (the close saw to the connection). */
static int still_ours(struct tsock *t, int fd)
{
	struct tsock *now = shim_get(fd);
	int same = now == t;

	shim_put(now);
	return same;
}

/* One try at sending what the asker left unread in our ring: 0 when all
 * of it went (tx_lock's `block` and deadline). */
static int flush_by(struct tsock *t, int fd, int block, int64_t deadline)
{
	struct tslot *s = t->slot;
	int rc = tx_lock(s, block, deadline);

	if (rc < 0)
		return rc;
	rc = (atomic_load(&s->phase) & PH_TX_PLAIN) ? 0 : flush_locked(t, fd, block);
	shim_unlock(&s->tx_mu);
	return rc;
}

/* Our sends leave the ring: what the asker left unread in it goes by TCP
 * first, once it said BACK (by the deadline; 0: no wait). */
static int back_tx_by(struct tsock *t, int fd, int block, int64_t deadline)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->phase) & PH_TX_PLAIN)
		return 0;
	if (!(atomic_load(&s->phase) & PH_TX_BACK) && shim_back_answer(t, fd) && !deadline)
		deadline = shunt_now_ns() + ANSWERED_NS; /* shim_back_answered */
	int rc = wait_asker(s, block, deadline);
	if (rc < 0)
		return rc;
	if (deadline && !still_ours(t, fd))
		return -EBADF;
	rc = flush_by(t, fd, block, deadline);
	if (rc == 0)
		take_asker_bells(t, fd);
	shim_back_settle(t, fd);
	return rc;
}

int shim_back_tx(struct tsock *t, int fd, int block)
{
	return back_tx_by(t, fd, block, block ? shunt_now_ns() + ASK_NS : 0);
}

/* Room in our socket's send buffer, or the deadline. */
static void wait_room(int fd, int64_t deadline)
{
	int64_t left = deadline - shunt_now_ns();
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	struct timespec ts = { 0, (long)SHUNT_MIN(left, 50000000) };

	if (left > 0)
		sys_ppoll(&p, 1, &ts);
}

/*
 * The socket's last call, its close or an exit() with it open: our answer
 * if not given yet, then what the asker left unread in our ring, by TCP,
 * for LAST_NS at most.  Answered here, not by the flush, which then checks
 * no fd (the table forgot a closed one already, and it is ours till the
 * kernel's close): answered by it, a close said EBADF and sent none of
 * those bytes, and an exit() sent none at all; its kernel's close then
 * ended the stream short of them, a FIN where TCP delivers them
 * (t_shim_flags hand_over_unread, "the peer closes", "the peer exits").
 * A helper's review (t_shim_flags hand_over_end_big, close_after_asker_reset):
 * no lock without a deadline (another thread's blocking flush held exit()
 * as long as the new holder did not read); an asker that closed is no
 * reason to wait (a close after its reset took 2 s); and what is left
 * unsent at the end makes the kernel's close a reset, never a FIN that
 * ends the stream short of bytes our sends said were sent.
 */
int shim_back_tx_last(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	int64_t until = shunt_now_ns() + LAST_NS;
	int rc = answer(t, fd, 0, until);

	if (rc >= 0 && !(atomic_load(&s->phase) & PH_TX_PLAIN))
		rc = wait_asker(s, 1, until);
	while (rc >= 0 && (rc = flush_by(t, fd, 0, until)) == -EAGAIN &&
	       shunt_now_ns() < until) {
		wait_room(fd, until);
		rc = 0;
	}
	if (rc == 0)
		take_asker_bells(t, fd);
	shim_back_settle(t, fd);
	if (rc < 0)
		shim_linger0(fd);
	return rc;
}

/*
 * This call just answered, from a read or a wait: the asker says BACK
 * within moments (it holds its locks and only takes our doorbells off its
 * stream first), and what it left unread in our ring goes by TCP then, as
 * far as the kernel takes it without waiting.  Left to our next call on
 * the socket, it waited for one that may come late or never: a program
 * that read the data its answer found, then waited elsewhere, left the
 * asker's new holder without bytes TCP had delivered long before (a
 * helper's reproducer: 8 s; t_shim_flags stdio_peer_answers_idle).
 */
void shim_back_answered(struct tsock *t, int fd)
{
	back_tx_by(t, fd, 0, shunt_now_ns() + ANSWERED_NS);
}

/* Where the asker's ring data ends and its data resumes on TCP, once it
 * said so: 1, else 0.  Both move on by what a read of ours took off TCP
 * past its way back and put behind its ring (shim_back_append_begin). */
static int asker_back(struct tslot *s, uint64_t *head, uint64_t *tcp)
{
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);

	if (!(atomic_load_explicit(&p->flags, memory_order_acquire) & SHUNT_SW_BACK))
		return 0;
	uint64_t more = atomic_load(&s->back_more);
	*head = atomic_load_explicit(&p->back_head, memory_order_relaxed) + more;
	*tcp = atomic_load_explicit(&p->back_tcp, memory_order_relaxed) + more;
	return 1;
}

/* Once the peer said BACK, how many bytes of our stream from where our
 * reads are still hold its doorbells: a take must stop there, as its data
 * follows and may begin with the doorbell's value (taken for one, it was
 * lost, and the stream could not be followed: t_shim_data
 * write_before_read, 1 run in 150).  -1 while it has not said BACK (the
 * stream holds doorbells only, bell.c). */
long shim_back_bells_left(struct tslot *s, int fd)
{
	uint64_t head, tcp, at;

	if (!asker_back(s, &head, &tcp))
		return -1;
	if (consumed(s, fd, &at) < 0 || at > tcp)
		return 0;
	return tcp - at > (uint64_t)INT32_MAX ? INT32_MAX : (long)(tcp - at);
}

/* The asker's TCP data since its way back that waits in our socket behind
 * its doorbells, while its ring still holds data for us: bytes TCP would
 * count as queued (io.c, shim_fionread).  Between VMs too: its proof
 * follows its switch offset, long before its way back.  No system call
 * before it said BACK: a count of the ring costs none. */
uint64_t shim_back_queued(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint64_t head, tcp, at;
	int q = 0;

	if (!asker_back(s, &head, &tcp) || sys_ioctl(fd, SIOCINQ, &q) < 0 || q <= 0 ||
	    consumed(s, fd, &at) < 0)
		return 0;
	uint64_t from = SHUNT_MAX(at, tcp), top = at + (uint64_t)q;
	return top > from ? top - from : 0;
}

/*
 * A peek that took all the ring holds while the asker's TCP data waits in
 * our socket behind its doorbells: TCP's peek shows it too (tests/diff_shim.c
 * seed 35954857502457: 220 bytes where TCP's said 601).  The doorbells are
 * not ours to take while the ring has bytes, so the kernel's peek starts
 * past them (SO_PEEK_OFF, which a moved socket's program cannot have set:
 * it takes the connection back), each checked first.  Between VMs once
 * the peer's proof, which lies before them, was read (it stopped at the
 * ring's end there: seeds 66250295816691, 150631731147633 over a region;
 * t_vm_netns runs t_shim_flags peek_peer_back).  How many bytes it put at
 * buf (counted only, `trunc`: MSG_TRUNC), or 0.
 */
size_t shim_back_peek_past(struct tsock *t, int fd, void *buf, size_t len, int trunc)
{
	struct tslot *s = t->slot;
	uint64_t head, tcp, at;
	uint8_t bells[256];
	int off;

	if (shim_proof_pending(s) || !asker_back(s, &head, &tcp) || !len ||
	    consumed(s, fd, &at) < 0 || at > tcp || tcp - at > sizeof(bells) ||
	    at < atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->tcp_off, memory_order_relaxed))
		return 0;
	size_t n = (size_t)(tcp - at);
	if (n && sys_recv(fd, bells, n, MSG_PEEK | MSG_DONTWAIT) != (long)n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (bells[i] != s->bell)
			return 0;
	shim_lock(&s->rx_mu);
	off = (int)n;
	long k = sys_setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	if (k == 0) {
		k = sys_recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT | trunc);
		off = -1;
		sys_setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	}
	shim_unlock(&s->rx_mu);
	return k > 0 ? (size_t)k : 0;
}

/* Take exactly n doorbells off the stream (they were sent before the
 * asker's BACK, so they are there or on their way); -EAGAIN past the
 * deadline.  A try (deadline 0) takes what is queued now, no more: a peer
 * that claims more doorbells than it rang and keeps ringing held a
 * non-blocking read, a close or an exit() for as long as it rang (a
 * helper's review, t_shim_hostile bell_lie_flood). */
static int take_bells(struct tslot *s, int fd, uint64_t n, int64_t deadline)
{
	uint8_t buf[256];
	int64_t ns = 20000;
	uint64_t now = n;

	if (!deadline) {
		int q = 0;
		if (sys_ioctl(fd, SIOCINQ, &q) < 0 || q < 0)
			q = 0;
		now = SHUNT_MIN(n, (uint64_t)q);
		/* Nothing queued: the stream may have ended short of them (a
		 * peer that said BACK and died, or lied: a helper's attack).
		 * A wait reads that end; a call that may not wait said EAGAIN
		 * for good, and a poll said readable, at full CPU. */
		if (!now && n) {
			long k = sys_recv(fd, buf, 1, MSG_PEEK | MSG_DONTWAIT);
			if (k != -EAGAIN && k <= 0)
				return k ? (int)k : -ECONNRESET;
		}
	}
	while (now) {
		/* Looked at every pass: a peer that claims more doorbells than
		 * it rang, and keeps ringing, must not hold us past it. */
		if (deadline && shunt_now_ns() >= deadline)
			return -EAGAIN;
		long k = sys_recv(fd, buf, (size_t)SHUNT_MIN(now, sizeof(buf)), MSG_DONTWAIT);
		if (k == -EAGAIN && deadline) {
			nap(&ns);
			continue;
		}
		if (k <= 0)
			return k ? (int)k : -ECONNRESET;
		for (long i = 0; i < k; i++)
			if (buf[i] != s->bell)
				return -EPROTO;
		n -= (uint64_t)k;
		now -= (uint64_t)k;
	}
	return n ? -EAGAIN : 0;
}

/*
 * exit() with a moved socket open: the kernel closes it after us, and a
 * doorbell left unread in it makes that close a reset, which drops what
 * the kernel still had to send and tells the peer ECONNRESET where a close
 * gives end of stream.  Past the peer's switch offset its stream holds
 * only doorbells (up to its back_tcp if it went back): once our kernel
 * counted everything before the offset as read, the doorbells there are
 * taken off (peeked first: a byte that is not one stays).  Between VMs the
 * peer's proof follows the offset: the doorbells behind it once it was
 * read (a close with our reads on its ring, asked quietly, left one a
 * wait of ours had it ring, and reset the connection: t_vm_netns's
 * opt_peer_idle under load).
 */
void shim_back_exit_bells(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);
	uint32_t pf = peer_flags(s);
	uint64_t at, end = UNKNOWN;
	uint8_t buf[256];

	/* Between VMs the peer's proof lies past its switch offset, before
	 * its doorbells: once it went back and its ring is read to its end,
	 * a read's way off takes both, exactly, as far as they came (a try:
	 * an exit or a close waits for nobody).  Left there, the close of an
	 * end that read all it was owed reset the connection, and the
	 * kernel dropped what it still had to send (t_vm_netns, t_shim_flags
	 * et_out_peer_back over a region: 8 runs in 30). */
	if (s->vm.on && (pf & SHUNT_SW_BACK) && shunt_end_readable(&s->end) == 0)
		rx_leave(t, fd, 0, 1);
	if (!(pf & SHUNT_SW_RING) || !past_peer_switch(s, fd, &at))
		return;
	if (pf & SHUNT_SW_BACK)
		end = atomic_load_explicit(&p->back_tcp, memory_order_relaxed) +
		      atomic_load(&s->back_more);
	/* What is queued now, no more: a peer that keeps ringing (it may,
	 * hostile) must not hold our exit, and over TCP exit() waits for
	 * nobody. */
	int q = 0;
	if (sys_ioctl(fd, SIOCINQ, &q) < 0 || q <= 0)
		return;
	end = SHUNT_MIN(end, at + (uint64_t)q);
	while (at < end) {
		long k = sys_recv(fd, buf, (size_t)SHUNT_MIN(end - at, sizeof(buf)),
				  MSG_PEEK | MSG_DONTWAIT);
		long n = 0;
		/* Gone back since we looked, the peer may have sent data that
		 * starts with a bell's value right behind its bells: no
		 * further than its word says (its data follows the word). */
		if (!(pf & SHUNT_SW_BACK) && (peer_flags(s) & SHUNT_SW_BACK)) {
			pf |= SHUNT_SW_BACK;
			end = SHUNT_MIN(end, atomic_load_explicit(&p->back_tcp, memory_order_relaxed) +
						     atomic_load(&s->back_more));
			k = at < end ? SHUNT_MIN(k, (long)(end - at)) : 0;
		}
		while (n < k && buf[n] == s->bell)
			n++;
		if (n <= 0 || sys_recv(fd, buf, (size_t)n, MSG_DONTWAIT) != n || n < k)
			return;
		at += (uint64_t)n;
	}
}

/* Our side of the ring is read to where the asker's ring data ends:
 * 1, 0 (not yet), or -EPROTO for an impossible head. */
static int ring_read(struct tslot *s, uint64_t head)
{
	struct shunt_ring *r = &s->end.rx;

	if (head - r->pos > r->cap)
		return -EPROTO;
	return head == r->pos;
}

/* Called with rx_mu held: 1 when reads go to the kernel now. */
static int rx_leave_locked(struct tsock *t, int fd, int wait)
{
	struct tslot *s = t->slot;
	uint32_t pf = peer_flags(s);
	uint64_t head, tcp, at;

	if (atomic_load(&s->phase) & PH_RX_PLAIN)
		return 1;
	if ((pf & SHUNT_SW_TCP) && !(pf & SHUNT_SW_RING))
		goto plain; /* its data never left TCP */
	/* BACK with no ask on either side: the peer answered an ask that it
	 * wrote in our word itself (a helper's attack), and resent bytes of
	 * its ring we had read, or will: not a stream to follow. */
	if ((pf & SHUNT_SW_BACK) && !((pf | shim_sw_mine(s)) & SHUNT_SW_ASK)) {
		log_info("fd %d: the peer went back to TCP, and nobody asked", fd);
		return -EPROTO;
	}
	if (!asker_back(s, &head, &tcp))
		return 0;
	int rc = ring_read(s, head);
	if (rc < 0)
		log_info("fd %d: the peer's ring ends at %llu, ours is read to %llu", fd,
			 (unsigned long long)head, (unsigned long long)s->end.rx.pos);
	if (rc <= 0)
		return rc;
	/* Between VMs the peer's proof lies before its doorbells (meet_vm.c). */
	rc = shim_proof_settle(t, fd, wait ? shunt_now_ns() + ASK_NS : 0);
	if (rc < 0)
		return rc == -EAGAIN && !wait ? 0 : rc;
	rc = consumed(s, fd, &at);
	if (rc < 0) {
		log_info("fd %d: the kernel's count of our reads: %s", fd, strerror(-rc));
		return rc;
	}
	/* Its TCP data before its switch comes first, read as ever (tcp_cut
	 * in io.c): an asker that put nothing in its ring leaves us "read to
	 * its ring's end" before we reach its switch. */
	if (at < atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->tcp_off, memory_order_relaxed))
		return 0;
	/* The stream up to tcp is doorbells (a hostile number makes
	 * take_bells fail, not wait forever). */
	if (at > tcp) {
		log_info("fd %d: we read %llu of the stream, past %llu where the peer's TCP "
			 "data resumes", fd, (unsigned long long)at, (unsigned long long)tcp);
		return -EPROTO;
	}
	log_debug("fd %d: the peer's ring ends at %llu, its TCP data from %llu; we are at %llu",
		  fd, (unsigned long long)head, (unsigned long long)tcp, (unsigned long long)at);
	rc = take_bells(s, fd, tcp - at, wait ? shunt_now_ns() + ASK_NS : 0);
	if (rc < 0 && (rc != -EAGAIN || wait))
		log_info("fd %d: the doorbells from %llu to %llu: %s", fd, (unsigned long long)at,
			 (unsigned long long)tcp, rc == -EPROTO ? "a byte is not one" : strerror(-rc));
	if (rc < 0)
		return rc == -EAGAIN && !wait ? 0 : rc;
plain:
	atomic_fetch_or(&s->phase, PH_RX_PLAIN);
	return 1;
}

/* 1 when reads go to the kernel now; 0 not yet (or, trying, the lock was
 * held); < 0 when the stream cannot be followed: the connection is reset. */
static int rx_leave(struct tsock *t, int fd, int wait, int try)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->phase) & PH_RX_PLAIN)
		return 1;
	if (!try)
		shim_lock(&s->rx_mu);
	else if (shim_trylock(&s->rx_mu) < 0)
		return 0;
	int rc = rx_leave_locked(t, fd, wait);
	shim_unlock(&s->rx_mu);
	/* After a reset the program was told of, there is nothing left to
	 * follow, nor to tell again: TCP's socket reads end of stream then
	 * (every call said it anew, and FIONREAD said ECONNRESET where TCP
	 * says 0: a region seed of tests/diff_shim.c, 381220858533253). */
	if (rc < 0 && atomic_load(&s->reset_told)) {
		log_debug("fd %d: the peer went back to TCP after the reset", fd);
		return rc;
	}
	if (rc < 0) {
		log_error("fd %d: the peer went back to TCP with a stream we cannot follow: "
			  "the connection is reset", fd);
		shunt_end_fail(&s->end, -EPROTO);
		return rc;
	}
	if (rc)
		shim_back_settle(t, fd);
	return rc;
}

/* The asker went back, and its data resumes on TCP at *tcp: 1 when our
 * side of its ring is read to its end, 2 while it is not; else 0. */
int shim_back_resumes(struct tsock *t, uint64_t *tcp)
{
	struct tslot *s = t->slot;
	uint64_t head;

	if (s->vm.on || (atomic_load(&s->phase) & PH_RX_PLAIN) || !asker_back(s, &head, tcp))
		return 0;
	uint64_t tail = atomic_load_explicit(s->end.rx.tail, memory_order_acquire);
	return head - tail > s->end.rx.cap ? 0 : head == tail ? 1 : 2;
}

/*
 * A read of ours took the asker's new TCP data, from stream offset `at`,
 * while its ring still holds data for us (io.c, past_back: a read in the
 * kernel since before its switch, on a busy machine).  Those n bytes go
 * into the ring right after its last byte there, as though it had sent
 * them by the ring, and for us its ring end and its TCP resume point move
 * on by n (back_more, which asker_back adds).  The asker wrote its last
 * byte into the ring before it said BACK: we are the ring's only producer
 * now.  Where the bytes go (*head: the ring's end now), or NULL: between
 * VMs, another read putting its own there, bytes that do not follow the
 * last ones, no room.  shim_back_append_end publishes them.
 */
uint8_t *shim_back_append_begin(struct tsock *t, uint64_t at, size_t n, uint64_t *head)
{
	struct tslot *s = t->slot;
	struct shunt_ring *r = &s->end.rx;
	uint32_t idle = 0;
	uint64_t tcp;

	if (s->vm.on || !atomic_compare_exchange_strong(&s->appending, &idle, 1))
		return NULL;
	uint64_t tail = atomic_load_explicit(r->tail, memory_order_acquire);
	if (asker_back(s, head, &tcp) && at == tcp && *head - tail <= r->cap &&
	    r->cap - (*head - tail) >= n)
		return r->data + (*head & r->mask);
	atomic_store(&s->appending, 0);
	return NULL;
}

void shim_back_append_end(struct tsock *t, uint64_t head, size_t n)
{
	struct tslot *s = t->slot;

	/* The new end before the bytes that reach it: a read that takes them
	 * finds the ring not yet read to its end (ring_read). */
	atomic_fetch_add(&s->back_more, n);
	atomic_store_explicit(s->end.rx.head, head + n, memory_order_release);
	atomic_store(&s->appending, 0);
}

void shim_back_rx_done(struct tsock *t, int fd)
{
	shim_lock(&t->slot->rx_mu);
	atomic_fetch_or(&t->slot->phase, PH_RX_PLAIN);
	shim_unlock(&t->slot->rx_mu);
	shim_back_settle(t, fd);
}

int shim_back_rx(struct tsock *t, int fd, int wait)
{
	/* A call that may not wait does not wait for the lock either: its
	 * holder may be a read of another thread asleep on the ring, which
	 * leaves the ring itself when it wakes, and which only this call's
	 * caller may wake (its sends, which the way back needs: a writer
	 * thread polling for room hung there while its reader slept). */
	return rx_leave(t, fd, wait, !wait);
}

/* The connection is plain: what every way back ends with.  The kernel
 * acknowledges at once what it received (TCP_QUICKACK): the peer's last
 * doorbells draw no answer from a program, so their ACK waited for the
 * delayed-ACK timer, and meanwhile Nagle held the peer's next small send
 * back: every round trip after a hand-over to stdio took 40 ms more
 * (a helper's Python and bash peers, 14 runs in 14; t_shim_flags
 * nagle_after_back). */
static void plain_again(struct tsock *t, int fd, const char *how)
{
	int one = 1;

	sys_setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
	shim_nodelay_restore(t, fd);
	shim_epoll_back(t);
	log_info("fd %d: back on TCP%s", fd, how);
}

static void went_back(struct tsock *t, int fd, enum shim_why why, const char *how)
{
	shim_count_why(t->slot, why);
	plain_again(t, fd, how);
}

/* Both directions are on the kernel's socket: the connection is plain. */
void shim_back_settle(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint32_t all = PH_TX_PLAIN | PH_RX_PLAIN;
	uint32_t st = SLOT_MOVED;

	if ((atomic_load(&s->phase) & all) == all &&
	    atomic_compare_exchange_strong(&s->state, &st, SLOT_OFF)) {
		if (atomic_load(&s->flags) & TF_JAM)
			went_back(t, fd, WHY_FULL, " (quietly: both ends waited for room)");
		else if (shim_sw_mine(s) & SHUNT_SW_LAZY)
			went_back(t, fd, WHY_OPTIONS, " (quietly: an option needs it)");
		else
			plain_again(t, fd, ", as the peer asked");
	}
}

/* --- The asker's part ----------------------------------------------------------- */

/* The peer's sends never reached its ring, and never will: it reads our
 * ASK before it could (move.c, switch_tx). */
static int peer_stays(struct tslot *s)
{
	atomic_thread_fence(memory_order_seq_cst);
	return !(peer_flags(s) & SHUNT_SW_RING);
}

/*
 * Holding both locks, the peer not answering yet: answer for it (its part
 * "Answered for us", above).  Its TCP data before its switch read (or no
 * doorbell behind it), no shutdown of its that only its ring carries, no
 * ask of its own: then its TCP stream holds its doorbells and nothing else
 * of it, and its doorbell count says how many: they lie at span[0] to
 * span[1] of our stream, where its data resumes.  What we did not read of
 * its ring it resends there at its next call, as an answer does: our new
 * holder waits for it as for bytes TCP had not delivered yet (the wait
 * held our hand-over 5 s, then reset the connection: t_shim_flags
 * hand_over_unread).  Between VMs its proof comes first,
 * after its switch offset: we must have read it all.  TAKEN only if
 * nothing of its ran meanwhile (the busy word as first seen): then all we
 * read stands.  1 when taken.
 */
static int take_over(struct tslot *s, int fd, uint64_t span[2])
{
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);
	uint64_t w = atomic_load_explicit(&p->busy, memory_order_acquire), at;

	if ((w & (SHUNT_BUSY_TAKEN | SHUNT_BUSY_INSIDE)) || shim_proof_pending(s))
		return 0;
	if (peer_flags(s) != SHUNT_SW_RING || shunt_end_peer_state(&s->end) != SHUNT_ST_OPEN ||
	    consumed(s, fd, &at) < 0)
		return 0;
	/* Between VMs its proof follows its switch offset: we read it all. */
	uint64_t x = atomic_load_explicit(&p->tcp_off, memory_order_relaxed) + s->vm.proof_need;
	uint64_t bells = atomic_load_explicit(&p->bells, memory_order_relaxed);
	uint64_t end = x + bells;
	if ((bells & SHUNT_BELLS_URGENT) || end < x || (at < x && end != x) || at > end)
		return 0;
	if (!atomic_compare_exchange_strong(&p->busy, &w, w | SHUNT_BUSY_TAKEN))
		return 0;
	span[0] = x;
	span[1] = end;
	return 1;
}

/* 0 once the peer answered, 1 once we answered for it (take_over: span),
 * or -ETIMEDOUT.  With bytes of its ring unread, it gets LEFT_NS to answer
 * itself first (a call of its, or a wait the doorbell ends, answers in
 * moments): they are in our socket then before our new holder has it, as
 * TCP's were, so that a close of ours with them unread is a reset there
 * too (t_shim_flags stdio_close_peer_answers). */
static int wait_answer(struct tsock *t, int fd, int64_t deadline, uint64_t span[2])
{
	struct tslot *s = t->slot;
	int64_t ns = 20000, left_at = shunt_now_ns() + LEFT_NS;

	while (!(peer_flags(s) & SHUNT_SW_BACK)) {
		if ((shunt_end_readable(&s->end) == 0 || shunt_now_ns() >= left_at) &&
		    take_over(s, fd, span))
			return 1;
		int64_t st = shunt_end_peer_state(&s->end);
		if (st < 0 || (st & SHUNT_ST_CLOSED) || shunt_now_ns() >= deadline)
			return -ETIMEDOUT;
		nap(&ns);
	}
	return 0;
}

/* Our sends leave the ring: the peer reads it to back_head, then TCP.
 * BACK also tells the peer that our tail is final (we hold rx_mu): what
 * lies beyond it in its ring is its to resend. */
static int leave_tx(struct tslot *s, int fd)
{
	struct shunt_switch *me = sw_of(s, (int)s->side);
	uint64_t total = 0, head = s->end.tx.pos;

	if (!(atomic_load(&s->phase) & PH_TX_RING))
		shim_sw_set(s, SHUNT_SW_TCP);
	else if (shim_bells_end(s), shim_kern_tx_total(fd, &total) < 0)
		return -EPROTO;
	atomic_store_explicit(&me->back_head, head, memory_order_relaxed);
	atomic_store_explicit(&me->back_tcp, total, memory_order_relaxed);
	shim_sw_set(s, SHUNT_SW_BACK);
	/* A shutdown that went to the ring follows its bytes: without it our
	 * sends after the way back reached the peer (tests/diff_shim.c seed
	 * 261523549751905: 1500 sent where TCP says EPIPE). */
	if (shunt_end_state(&s->end) & SHUNT_ST_SHUT_WR)
		sys_shutdown(fd, SHUT_WR);
	log_debug("fd %d: our sends leave the ring at %llu, TCP data from %llu", fd,
		  (unsigned long long)head, (unsigned long long)total);
	return 0;
}

/* Exactly n bytes of the stream into buf, waiting for them until the
 * deadline (the peer sent them long ago: they are here or on their way). */
static int recv_exactly(int fd, uint8_t *buf, uint64_t n, int64_t deadline)
{
	int64_t ns = 20000;

	while (n) {
		long k = sys_recv(fd, buf, (size_t)n, MSG_DONTWAIT);
		if (k == -EAGAIN && shunt_now_ns() < deadline) {
			nap(&ns);
			continue;
		}
		if (k <= 0)
			return k ? (int)k : -ECONNRESET;
		buf += k;
		n -= (uint64_t)k;
	}
	return 0;
}

/*
 * The peer's TCP data we have not read, [at, x), lies in our stream before
 * its doorbells: it moves into our ring, just before our tail, and the
 * tail moves back over it, so that the peer resends it with the rest of
 * its ring that we did not read.  Taking the doorbells off our stream
 * needs it out of the way, and our new holder must get it first.  The room
 * is the ring's free space (the peer sends no more into the ring once it
 * answered); a read of ours inside the kernel (another thread) would take
 * part of it: the count must then show exactly what we took, or it is
 * -ENOTRECOVERABLE, as it is without room.  Between VMs the peer's proof
 * follows x: not there.
 */
static int unread_to_ring(struct tslot *s, int fd, uint64_t at, uint64_t x, int64_t deadline)
{
	struct shunt_ring *r = &s->end.rx;
	uint64_t head = atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->back_head,
					     memory_order_relaxed);
	uint64_t n = x - at, now;

	if (head - r->pos > r->cap)
		return -EPROTO;
	if (s->vm.on || n > r->cap - (head - r->pos) || atomic_load(&s->rx_inflight))
		return -ENOTRECOVERABLE;
	uint64_t from = r->pos - n;
	int rc = recv_exactly(fd, r->data + (from & r->mask), n, deadline);
	if (rc < 0)
		return rc;
	if (consumed(s, fd, &now) < 0 || now != x)
		return -ENOTRECOVERABLE;
	r->pos = from;
	atomic_store_explicit(&r->own, from, memory_order_release);
	/* Release: the bytes before the tail that covers them; our BACK
	 * (after this) tells the peer the tail is final. */
	atomic_store_explicit(r->tail, from, memory_order_release);
	atomic_fetch_add(&s->rx_tcp, n);
	log_debug("fd %d: %llu bytes of the peer's TCP data we had not read go back by the ring",
		  fd, (unsigned long long)n);
	return 0;
}

/* The peer's doorbells leave our stream, so that what follows in it is
 * the peer's data: the ring bytes we did not read, resent, then new. */
static int leave_rx(struct tslot *s, int fd, int64_t deadline)
{
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);
	uint64_t x = atomic_load_explicit(&p->tcp_off, memory_order_relaxed);
	uint64_t bt = atomic_load_explicit(&p->back_tcp, memory_order_relaxed);
	uint64_t at;

	int rc = consumed(s, fd, &at);
	if (rc < 0)
		return rc;
	if (bt < x)
		return -EPROTO;
	if (at < x && bt == x)
		return 0; /* no doorbell: the unread data stays where it is */
	if (at < x && (rc = unread_to_ring(s, fd, at, x, deadline)) < 0)
		return rc;
	if (at < x)
		at = x;
	return at > bt ? -EPROTO : take_bells(s, fd, bt - at, deadline);
}

/*
 * What we left unread in the peer's ring comes by TCP right after its
 * answer (shim_back_answered): our socket holds it before the socket is
 * the new holder's, as TCP's held it long before.  Without it a close
 * right after (an exec'd image's) sent a FIN where TCP's resets with data
 * unread, the resend met a closed socket, and the peer, its socket reset
 * after a FIN it could no longer tell of, left our last doorbell in its
 * stream and read it as a byte (a helper's clone_files_close, 2 runs in
 * 3).  Bounded: a peer whose kernel does not take it all at once sends
 * the rest at its next call on the socket, or as our new holder reads.
 */
static void wait_resent(struct tslot *s, int fd)
{
	struct shunt_switch *p = sw_of(s, 1 - (int)s->side);
	uint64_t head = atomic_load_explicit(&p->back_head, memory_order_relaxed);
	uint64_t bt = atomic_load_explicit(&p->back_tcp, memory_order_relaxed);
	uint64_t want = bt + (head - s->end.rx.pos), got, last = 0;
	int64_t deadline = shunt_now_ns() + ANSWERED_NS, ns = 20000, st;
	int still = 0;

	if ((peer_flags(s) & (SHUNT_SW_TCP | SHUNT_SW_LAZY)) || head - s->end.rx.pos > s->end.rx.cap)
		return;
	while (shim_kern_rx_received(fd, &got) == 0 && got < want && shunt_now_ns() < deadline &&
	       (st = shunt_end_peer_state(&s->end)) >= 0 && !(st & SHUNT_ST_CLOSED)) {
		/* Begun, then held still: our socket's window is full (a
		 * helper's review: the whole bound for each hand-off of a
		 * ring's worth). */
		still = got == last ? still + 1 : 0;
		if (got > bt && still >= 2)
			return;
		last = got;
		nap(&ns);
	}
}

static void give_up_loudly(struct tsock *t, int fd, int why)
{
	struct tslot *s = t->slot;
	struct shunt_bell b = shim_bell(t, fd);
	struct sockaddr sa = { .sa_family = AF_UNSPEC };

	log_error("fd %d: a connection in shared memory cannot go back to TCP exactly (%s): "
		  "it is reset", fd,
		  why == -ETIMEDOUT	      ? "the peer did not answer"
		  : why == -ENOTRECOVERABLE ? "doorbells wait behind unread data"
		  : why == -EALREADY	      ? "the peer answered the quiet way at that moment"
					      : strerror(-why));
	/* The kernel's reset first, to the peer too: the close's doorbell
	 * (for a peer asleep on the rings) cannot follow it, whereas sent
	 * before it, past the back_tcp we may have published, a peer already
	 * back on TCP read it as a byte of data before the reset (the soak's
	 * exec hand-over: "a byte never sent" at the hand-over offset).
	 * Not on a kernel socket closed already (the peer's reset came, say):
	 * it can tell nobody anything, and the disconnect made it another
	 * socket than TCP's (a pass after the peer's reset: no POLLIN for the
	 * new holder, tests/diff_shim.c with SHUNT_DIFF_FDOPS=1, seed
	 * 509863046461456). */
	if (!shim_kern_closed(fd))
		sys_connect(fd, &sa, sizeof(sa));
	/* The socket may connect again: with the program's options, not the
	 * SO_LINGER {1, 0} of a resend we held (io.c, shim_linger_hold). */
	shim_tx_opts_restore(t, fd);
	atomic_fetch_or(&s->phase, PH_NOBELL);
	shunt_end_close(&s->end, &b, SHUNT_CLOSE_RST);
}

/* A way back that cannot be exact: reset (give_up_loudly), the slot off. */
static int went_back_reset(struct tsock *t, int fd, enum shim_why why, int rc)
{
	give_up_loudly(t, fd, rc);
	atomic_store(&t->slot->state, SLOT_OFF);
	went_back(t, fd, why, " (reset)");
	return rc;
}

/* We answered for the peer (take_over): its doorbells, span[0] to span[1]
 * of our stream, leave it (what it sent before its switch and we did not
 * read stays: no doorbell follows it then), and our sends leave the ring
 * unless they did (a quiet asker's, finish_quietly).  1, or < 0. */
static int answered_for_peer(struct tslot *s, int fd, const uint64_t span[2], int64_t deadline)
{
	uint64_t at;
	int rc = consumed(s, fd, &at);

	/* Time for doorbells on their way, even at the way back's deadline. */
	deadline = SHUNT_MAX(deadline, shunt_now_ns() + ANSWERED_NS);
	if (rc == 0 && span[1] > SHUNT_MAX(at, span[0]))
		rc = take_bells(s, fd, span[1] - SHUNT_MAX(at, span[0]), deadline);
	if (rc == 0 && !(shim_sw_mine(s) & SHUNT_SW_BACK))
		rc = leave_tx(s, fd);
	if (rc == 0)
		log_debug("fd %d: the peer made no call: we went back to TCP for it (its TCP "
			  "data from %llu)", fd, (unsigned long long)span[1]);
	return rc < 0 ? rc : 1;
}

/* Holding both locks: our part, once the peer answered (0), or once we
 * answered for it (1: it resends nothing, wait_resent), or < 0. */
static int ask_locked(struct tsock *t, int fd, int peer_ring, int64_t deadline)
{
	struct tslot *s = t->slot;
	uint64_t span[2];

	if (peer_ring) {
		int rc = wait_answer(t, fd, deadline, span);
		if (rc == 1)
			return answered_for_peer(s, fd, span, deadline);
		if (rc < 0)
			return rc;
	}
	/* The peer went back quietly at the same time (back_quietly): it
	 * resends nothing of ours, we nothing of its. */
	if (peer_flags(s) & SHUNT_SW_LAZY)
		return -EBUSY;
	/* Our stream first: it may move the tail that our BACK declares
	 * final (unread_to_ring). */
	int rc = 0;
	if (peer_ring && !(peer_flags(s) & SHUNT_SW_TCP))
		rc = leave_rx(s, fd, deadline);
	/* A quiet asker said BACK long ago (finish_quietly). */
	if (rc < 0 || (shim_sw_mine(s) & SHUNT_SW_BACK))
		return rc;
	return leave_tx(s, fd);
}

/* Ask (quietly: LAZY first), and wake the peer if it may sleep (our
 * doorbell is no data once our sends are on our ring); 1 if the peer's
 * sends are on its ring, 0 if not.  Inside our busy word: a peer that
 * asked at the same moment and answers for us (take_over) reads our flags
 * once, and an ask set after that look left it answering for an asker,
 * which then took its doorbells for an answer's and lost the bytes of its
 * ring it had not read (a helper's review).  -EXDEV: it answered for us
 * first, our part is an answer's (as_answerer). */
static int ask(struct tsock *t, int fd, int lazy)
{
	struct tslot *s = t->slot;

	if (shim_tx_enter(s) < 0)
		return -EXDEV;
	if (lazy)
		shim_sw_set(s, SHUNT_SW_LAZY);
	shim_sw_set(s, SHUNT_SW_ASK);
	int ring = !peer_stays(s);
	if (ring && (atomic_load(&s->phase) & PH_TX_RING))
		shim_bell_send(s, fd, 0);
	shim_tx_exit(s);
	/* A thread of ours asleep in a blocking read holds the ring's lock
	 * that we are about to take: it wakes, sees the ask and lets go
	 * (bell.c, sleep_kickable). */
	shim_kick_others(s);
	return ring;
}

static int as_answerer(struct tsock *t, int fd, enum shim_why why);

/* --- A peer in our own family -------------------------------------------------
 * Both ends of a connection may live in one process family (a program
 * talking to itself, or to a child).  Then the peer's slot is in our arena
 * and its socket in our fd table: we answer for it, rather than wait for
 * it to come by its socket (it may be waiting on us). */

struct family_peer {
	struct tslot *s;
	struct tsock *t;
	int fd;
};

static void find_peer(int fd, struct tsock *t, void *arg)
{
	struct family_peer *fp = arg;
	struct tslot *p = t->slot;

	if (fp->t || !t->mapped || atomic_load(&p->state) != SLOT_MOVED || p == fp->s ||
	    p->bell != fp->s->bell || !shunt_addr_eq(&p->local, &fp->s->peer) ||
	    !shunt_addr_eq(&p->peer, &fp->s->local))
		return;
	shim_ref(t);
	fp->t = t;
	fp->fd = fd;
}

static struct family_peer family_peer(struct tslot *s)
{
	struct family_peer fp = { s, NULL, -1 };

	shim_each_held(find_peer, &fp); /* other threads may close meanwhile */
	return fp;
}

/* After our part: what the peer can do now without waiting. */
static void family_steps(struct family_peer *fp)
{
	if (!fp->t)
		return;
	shim_back_tx(fp->t, fp->fd, 0);
	shim_back_rx(fp->t, fp->fd, 0);
	shim_put(fp->t);
}

/*
 * No answer needed (the peer closed, or we shut both ways): once our reads
 * took all the peer sent, by TCP before its switch and by its ring, the
 * connection is plain from here, its doorbells off our stream, and `fin`:
 * the peer hears our close.  Not while a reset the kernel gave only us is
 * still to be told (kreset): the kernel would not tell it again (poll
 * lost its POLLERR: tests/diff_shim.c seed 173976263962728).  1 if done.
 */
static int plain_once_read(struct tsock *t, int fd, int fin)
{
	struct tslot *s = t->slot;
	struct shunt_bell b = shim_bell(t, fd);
	uint64_t at;

	if (atomic_load(&s->kreset) && !atomic_load(&s->reset_told))
		return 0;
	if ((peer_flags(s) & SHUNT_SW_RING) && !past_peer_switch(s, fd, &at))
		return 0; /* its data before the doorbells is still to read */
	if (lock_rings(s, shunt_now_ns() + ASK_NS) < 0)
		return 0;
	int quiet = shunt_ring_peek_fill(&s->end.rx) == 0;
	if (quiet) {
		shim_back_exit_bells(t, fd);
		atomic_fetch_or(&s->phase, PH_NOBELL | PH_TX_PLAIN | PH_RX_PLAIN);
		/* Our FIN went by the ring: the kernel's socket sends its own,
		 * so that it stands where TCP's would (POLLHUP once both went). */
		if (fin && (shunt_end_state(&s->end) & SHUNT_ST_SHUT_WR))
			sys_shutdown(fd, SHUT_WR);
		if (fin)
			shunt_end_close(&s->end, &b, SHUNT_CLOSE_FIN);
		atomic_store(&s->state, SLOT_OFF);
	}
	unlock_rings(s);
	return quiet;
}

/*
 * The peer closed: no answer will come, and none is needed once our reads
 * took all it sent.  The kernel's socket is then where TCP's would be (the
 * peer's close reached it as a FIN or a reset): the peer's doorbells leave
 * our stream and the connection is plain.  The loud way back disconnected
 * our socket, and reads said ENOTCONN where TCP's say end of stream
 * (t_shim_flags opt_after_peer_close; found by tests/diff_shim.c).  1 if
 * done.
 */
static int back_past_close(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	int64_t st = shunt_end_peer_state(&s->end);

	if (st < 0 || !(st & SHUNT_ST_CLOSED) || s->vm.on)
		return 0;
	return plain_once_read(t, fd, 1);
}

/* The peer closed, or shut both ways (io.c, shut_both): it sends nothing
 * more, by its ring or by its socket, which is shut.  Between VMs too,
 * where the ring is then read to its end and stays ours (an option
 * acts on nothing more; the loud way waited 5 s for an answer that
 * could not come, then reset). */
static int peer_sends_no_more(struct tslot *s)
{
	int64_t st = shunt_end_peer_state(&s->end);

	return st >= 0 && (st & SHUNT_ST_CLOSED);
}

int shim_peer_closed(struct tsock *t)
{
	/* A slot not moved has no peer's end to look at. */
	return shim_moved(t) && peer_sends_no_more(t->slot);
}

/* The peer's FIN went by its ring alone: our kernel's socket never saw
 * one.  Made plain then, it stood where TCP's would not (below). */
static int fin_by_ring_only(struct tsock *t, int fd)
{
	return shim_peer_fin(t->slot) && !shim_kern_fin_in(fd);
}

/*
 * An option that needs TCP, set while the closed peer's ring still held
 * bytes for us: the loud way had the peer resend them into its shut
 * socket, and reset the connection with them unread (tests/diff_shim.c
 * seed 106480757018364: 3351 bytes lost, ECONNRESET at the peer).  No way
 * back is needed: once our reads took the ring to its end, they are the
 * kernel's, as after our own shutdown both ways (below).  Until then the
 * option does not act on those bytes.  1 if our reads are the kernel's.
 */
int shim_back_past_close(struct tsock *t, int fd)
{
	/* Nor while its FIN went by its ring alone (its close then a reset):
	 * the TCP_INQ hint said 0 at the end where TCP's says 1 (seed
	 * 107806998519929, 150 steps). */
	if (fin_by_ring_only(t, fd) || !back_past_close(t, fd))
		return 0;
	went_back(t, fd, WHY_OPTIONS, " (the peer had closed)");
	return 1;
}

/*
 * We shut both ways (io.c, shut_both): nothing more comes by the ring (the
 * peer's sends go to its kernel's socket, which our shut one resets), and
 * our last bytes stay there for the peer, which reads them to our
 * shutdown.  An option that needs TCP costs no way back then, which would
 * have the peer send its answer into our shut socket (a reset:
 * tests/diff_shim.c): once we read all the peer's ring held, our reads
 * are the kernel's (its end of stream, or its reset).  Until then the
 * option does not act on those bytes (io.c asks again as they are
 * read).  1 if done.
 */
int shim_back_past_shut(struct tsock *t, int fd)
{
	/* Not while the peer's FIN went by its ring alone: our kernel's socket
	 * waits for one (FIN_WAIT2) where TCP's is closed, and getpeername()
	 * named the peer where TCP's says ENOTCONN (tests/diff_shim.c seed
	 * 124455626426073, 150 steps).  The ring has it all then. */
	if (t->slot->vm.on || fin_by_ring_only(t, fd) || !plain_once_read(t, fd, 0))
		return 0;
	went_back(t, fd, WHY_OPTIONS, " (we had shut it both ways)");
	return 1;
}

/*
 * The quiet way back, for an option set on a socket that stays ours
 * (shim_tcp_only): no answer awaited.  Our sends leave the ring at once,
 * as an answer's do, and the peer's ring we read to its end ourselves once
 * it says BACK, which it does on its next call on the socket, as an
 * answer.  LAZY (before ASK) tells it that our tail is not final: it
 * resends nothing (flush_locked).  The loud way waited up to 5 s in the
 * program's setsockopt() for a peer busy elsewhere, then reset the
 * connection (t_shim_flags opt_peer_idle).  0, or < 0 when it reset.
 */
static int back_quietly(struct tsock *t, int fd, enum shim_why why)
{
	struct tslot *s = t->slot;

	shim_switch_tx(t, fd);
	if (ask(t, fd, 1) == -EXDEV)
		return as_answerer(t, fd, why);
	/* A send of ours asleep on a full ring sees the ask and lets go. */
	int rc = lock_by(&s->tx_mu, shunt_now_ns() + ASK_NS);
	if (rc < 0)
		return went_back_reset(t, fd, why, rc);
	rc = leave_tx(s, fd);
	atomic_fetch_or(&s->phase, PH_NOBELL | PH_TX_BACK | PH_TX_PLAIN);
	shim_tx_opts_restore(t, fd);
	shim_unlock(&s->tx_mu);
	if (rc < 0)
		return went_back_reset(t, fd, why, rc);
	shim_kick_others(s); /* a poll of ours for room asks the kernel now */
	shim_back_rx(t, fd, 0);
	shim_back_settle(t, fd);
	return 0;
}

/*
 * A connection that went back quietly leaves the library (exec, SCM_RIGHTS,
 * stdio): its new holder reads only the kernel's socket, so nothing may be
 * left in the peer's ring for us.  A peer that has not answered yet is
 * asked to resend what we did not read, as the loud way has it: LAZY off,
 * our tail final under rx_mu; the fences order that against its BACK and
 * the look at LAZY that follows it (flush_locked), so either it sees LAZY
 * off or we see its BACK.  One that answered resends nothing: its ring
 * must be read to its end already.  0, or < 0 when it reset (as the loud
 * way does when the peer does not answer in 5 s).
 */
static int finish_quietly(struct tsock *t, int fd, enum shim_why why)
{
	struct tslot *s = t->slot;
	int64_t deadline = shunt_now_ns() + ASK_NS;
	uint64_t at;
	int rc = lock_rings(s, deadline);

	if (rc < 0)
		return went_back_reset(t, fd, why, rc);
	if (!(peer_flags(s) & SHUNT_SW_BACK) && consumed(s, fd, &at) == 0 &&
	    at >= atomic_load_explicit(&sw_of(s, 1 - (int)s->side)->tcp_off,
				       memory_order_relaxed)) {
		shim_sw_clear(s, SHUNT_SW_LAZY);
		atomic_thread_fence(memory_order_seq_cst);
		/* Its BACK since our first look: it may have seen LAZY still
		 * set, and then resends nothing.  With bytes of its ring
		 * unread that cannot be told: reset (a helper's review). */
		if ((peer_flags(s) & SHUNT_SW_BACK) && shunt_end_readable(&s->end) > 0)
			rc = -EALREADY;
	}
	if (rc == 0 && (shim_sw_mine(s) & SHUNT_SW_LAZY)) {
		rc = shunt_end_readable(&s->end) > 0 ? -ENOTRECOVERABLE : rx_leave_locked(t, fd, 1);
		rc = rc > 0 ? 0 : rc == 0 ? -ETIMEDOUT : rc;
	} else if (rc == 0 && (rc = ask_locked(t, fd, 1, deadline)) == 0) {
		wait_resent(s, fd);
	}
	if (rc < 0)
		give_up_loudly(t, fd, rc);
	atomic_store(&s->state, SLOT_OFF);
	unlock_rings(s);
	went_back(t, fd, why, rc < 0 ? " (reset)" : "");
	return rc < 0 ? rc : 0;
}

/* The socket leaves the library (another process, an exec) while the
 * peer's way back is under way: its new holder reads only the kernel's
 * socket, so whatever the peer's ring still holds for us is out of its
 * reach, and the stream holds the peer's doorbells (between VMs its proof
 * too) before its TCP data.  Handed over so, the new holder read those as
 * data (t_shim_fds scm_rights_unread_armed over a region: "byte 1048576
 * of the stream is wrong"): it is reset, loudly.  0 once plain. */
static int leave_half_back(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->state) != SLOT_MOVED)
		return 0;
	shim_back_rx(t, fd, 1);
	shim_back_settle(t, fd);
	if (atomic_load(&s->state) != SLOT_MOVED)
		return 0;
	return went_back_reset(t, fd, WHY_SHARED, -ENOTRECOVERABLE);
}

/* The peer asked, or answered for us: our part is an answer's, and what
 * it sent into its ring before is still ours to read. */
static int as_answerer(struct tsock *t, int fd, enum shim_why why)
{
	shim_back_tx(t, fd, 0);
	shim_back_rx(t, fd, 0);
	shim_back_settle(t, fd);
	return why == WHY_SHARED ? leave_half_back(t, fd) : 0;
}

static int demote(struct tsock *t, int fd, enum shim_why why, int quiet)
{
	struct tslot *s = t->slot;
	int64_t deadline = shunt_now_ns() + ASK_NS;

	if (atomic_load(&s->state) == SLOT_PLAIN || atomic_load(&s->state) == SLOT_MEET) {
		shim_give_up(t, fd, why);
		return 0;
	}
	if (atomic_load(&s->state) != SLOT_MOVED || !t->mapped)
		return 0;
	/* The peer is on its way back already (it asked; we answered or do
	 * now): our part follows from our calls, as any answer's, and what it
	 * sent into its ring before is still ours to read.  Asking in turn
	 * set the slot off with those bytes unread: lost (tests/diff_shim.c,
	 * t_shim_flags opt_after_peer_back). */
	if ((shim_sw_mine(s) & SHUNT_SW_LAZY) && why != WHY_OPTIONS &&
	    !(atomic_load(&s->phase) & PH_RX_PLAIN))
		return finish_quietly(t, fd, why);
	if ((atomic_load(&s->phase) & PH_TX_BACK) || shim_peer_asks(t))
		return as_answerer(t, fd, why);
	if (why == WHY_OPTIONS && (shunt_end_state(&s->end) & SHUNT_ST_CLOSED)) {
		shim_back_past_shut(t, fd);
		return 0;
	}
	if (why == WHY_OPTIONS && peer_sends_no_more(s)) {
		shim_back_past_close(t, fd); /* now, or from the end of its ring */
		return 0;
	}
	if (back_past_close(t, fd)) {
		went_back(t, fd, why, " (the peer had closed)");
		return 0;
	}
	/* Quietly unless the peer is in our family, which answers at once
	 * (and then resends what we did not read: our reads are all TCP's
	 * at once). */
	struct family_peer fp = family_peer(s);
	if (quiet && !fp.t)
		return back_quietly(t, fd, why);
	shim_switch_tx(t, fd);
	int peer_ring = ask(t, fd, 0);
	if (peer_ring == -EXDEV)
		return as_answerer(t, fd, why);
	if (fp.t)
		shim_back_answer(fp.t, fp.fd);
	/* Our own threads asleep on the rings see the ask and let go. */
	int rc = lock_rings(s, deadline);
	if (rc == 0) {
		rc = ask_locked(t, fd, peer_ring, deadline);
		if (rc < 0)
			give_up_loudly(t, fd, rc);
		atomic_store(&s->state, SLOT_OFF);
		unlock_rings(s);
	} else {
		give_up_loudly(t, fd, rc);
		atomic_store(&s->state, SLOT_OFF);
	}
	family_steps(&fp);
	if (rc == 0 && peer_ring)
		wait_resent(s, fd);
	went_back(t, fd, why,
		  rc < 0 ? " (reset)" : why == WHY_FULL ? " (both ends waited for room)" : "");
	return rc < 0 ? rc : 0;
}

/* Passed on, or handed to stdio (fdopen): the reason shunt stat gives is
 * the flag's (stdio's was counted as shared: a helper's finding). */
int shim_demote(struct tsock *t, int fd)
{
	return demote(t, fd, (atomic_load(&t->slot->flags) & TF_STDIO) ? WHY_STDIO : WHY_SHARED, 0);
}

/* Both ends waited for room (io.c, "Both ends full"): TCP's buffers
 * take what the rings could not.  Quietly, as an option's way back: the
 * peer answers from its own wait for room. */
void shim_unjam(struct tsock *t, int fd)
{
	if (!shim_in_vfork_child())
		demote(t, fd, WHY_FULL, 1);
}

/* Set after the move, SO_RCVLOWAT, a filter, kTLS or signal-driven I/O
 * would mean nothing for the ring's bytes (a wait would end at the first
 * byte, no SIGIO would come): so the connection goes back to TCP, where
 * they mean what they say, as one that has not moved stays there. */
void shim_tcp_only(struct tsock *t, int fd, int quiet)
{
	/* A vfork child runs in its parent's memory, whose tables it must
	 * not change: it sets the flag only (no later move then). */
	if (!(atomic_fetch_or(&t->slot->flags, TF_OPTS) & TF_OPTS) && !shim_in_vfork_child())
		demote(t, fd, WHY_OPTIONS, quiet);
}
