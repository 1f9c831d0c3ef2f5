/*
 * end.c - the data path of a connection end: send, receive, wait, close.
 *
 * The fast path reads top to bottom here: a send copies into the tx ring,
 * publishes the new head and rings the peer only if it sleeps; a receive is
 * the mirror image.  Everything the peer wrote (indices, states) is checked
 * before use; a peer that breaks the rules breaks the connection (-EPROTO),
 * never this process.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "copy.h"
#include "end.h"
#include "internal.h"
#include "sys.h"
#include "wake.h"

/* --- State ----------------------------------------------------------- */

int shunt_end_fail(struct shunt_end *e, int err)
{
	int expected = 0;

	if (atomic_compare_exchange_strong(&e->broken, &expected, err))
		log_warn("connection broken: %s", strerror(-err));
	return atomic_load_explicit(&e->broken, memory_order_relaxed);
}

int64_t shunt_end_peer_state(struct shunt_end *e)
{
	/* Acquire pairs with the release in set_state(): data the peer
	 * published before a shutdown is visible once we see the shutdown. */
	uint32_t st = atomic_load_explicit(&e->peer->state, memory_order_acquire);

	if (st & ~SHUNT_ST_KNOWN)
		return shunt_end_fail(e, -EPROTO);
	return st;
}

static void ring_peer(struct shunt_end *e, struct shunt_bell *b, uint32_t bits)
{
	uint32_t rung = shunt_wait_should_wake(&e->peer->wait, bits);

	if (__builtin_expect(rung == 0, 1))
		return;
	if (b->ops->ring(b, rung) == 0) {
		atomic_fetch_add_explicit(&e->wakeups, 1, memory_order_relaxed);
		shunt_spin_woke(&e->spin);
	}
}

static void set_state(struct shunt_end *e, struct shunt_bell *b, uint32_t bits)
{
	uint32_t st = atomic_fetch_or(&e->my_state, bits) | bits;

	/* Release pairs with the acquire in shunt_end_peer_state(). */
	atomic_store_explicit(&e->me->state, st, memory_order_release);
	ring_peer(e, b, SHUNT_WAIT_ALL);
}

void shunt_end_peer_gone(struct shunt_end *e)
{
	if (!atomic_exchange_explicit(&e->peer_gone, 1, memory_order_relaxed))
		log_debug("peer hung up");
}

/* Bytes ready: through the receiving thread's cache of the peer's index,
 * or (peek) from the shared indices alone, for readiness asked by any
 * thread while another may be receiving. */
static int64_t rx_avail(struct shunt_end *e, uint64_t want, int peek)
{
	return peek ? shunt_ring_look_fill(&e->rx) : shunt_ring_avail(&e->rx, want);
}

/* A peer that vanished having read all we sent closed as TCP's does, with
 * a FIN and no reset (the shim's ends).  The sending thread's state is not
 * ours to read here: the indices. */
static int gone_clean(struct shunt_end *e)
{
	return e->hangup_eof && shunt_ring_look_space(&e->tx) == (int64_t)e->tx.cap;
}

/* The peer vanished without a shutdown: it died, or (the shim) closed its
 * last copy without a word.  Data it published before is still ours, so
 * read the head again.  As with TCP, that is end of stream if it had read
 * all we sent, and a reset if it left some unread. */
static int64_t gone_rx(struct shunt_end *e, uint64_t want, int peek)
{
	int64_t n = rx_avail(e, want, peek);

	if (n != 0)
		return n < 0 ? shunt_end_fail(e, (int)n) : n;
	return gone_clean(e) ? 0 : -ECONNRESET;
}

/* The peer will send no more (TCP: its FIN is in), though data may wait. */
static int peer_done(struct shunt_end *e)
{
	uint32_t st = atomic_load_explicit(&e->peer->state, memory_order_relaxed);

	return (st & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) ||
	       atomic_load_explicit(&e->peer_gone, memory_order_relaxed);
}

/* Nothing more will arrive for our reads: the peer's FIN, or our own
 * SHUT_RD (TCP's RCV_SHUTDOWN either way). */
static int rx_over(struct shunt_end *e)
{
	return peer_done(e) || atomic_load_explicit(&e->rd_shut, memory_order_relaxed);
}

/* --- Readiness --------------------------------------------------------
 * Each returns > 0 (bytes ready or free), 0 (end of stream, rx only),
 * -EAGAIN (would wait) or the error the caller must return.  `want` is how
 * much the caller could use: the peer's index is re-read only when the
 * cached one shows less, so each call loads it at most once.  `peek`: for
 * poll, from any thread, touching no state of the direction's own thread. */

/* The peer reset with no FIN before it (a FIN first makes TCP's read
 * say the end of stream: the reset is a send's EPIPE). */
static int reset_alone(int64_t st)
{
	return st >= 0 && (st & (SHUNT_ST_RESET | SHUNT_ST_SHUT_WR)) == SHUNT_ST_RESET;
}

static int64_t rx_ready(struct shunt_end *e, uint64_t want, int peek)
{
	int err = atomic_load_explicit(&e->broken, memory_order_relaxed);

	if (err)
		return err;
	int64_t n = rx_avail(e, want, peek);
	if (n != 0)
		return n < 0 ? shunt_end_fail(e, (int)n) : n;
	int64_t st = shunt_end_peer_state(e);
	/* After our shutdown(SHUT_RD) what has arrived is still read, as
	 * TCP reads its receive queue; then the end, without a wait, but a
	 * reset that no FIN came before first, as TCP's tcp_recvmsg looks
	 * at the socket's error before its RCV_SHUTDOWN (it said 0 where
	 * TCP's said ECONNRESET: tests/diff_shim.c seed 40808813192150). */
	if (atomic_load_explicit(&e->rd_shut, memory_order_relaxed))
		return reset_alone(st) ? -ECONNRESET : 0;
	if (st < 0)
		return st;
	if (st & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) {
		/* Read the head again after the state: it may have grown.  A
		 * reset after the peer's shutdown came behind its FIN: TCP
		 * reads end of stream then (the reset is a send's EPIPE). */
		n = rx_avail(e, want, peek);
		if (n == 0 && reset_alone(st))
			return -ECONNRESET;
		return n < 0 ? shunt_end_fail(e, (int)n) : n;
	}
	if (atomic_load_explicit(&e->peer_gone, memory_order_relaxed))
		return gone_rx(e, want, peek);
	return -EAGAIN;
}

/* Free space of at least `need` bytes (need <= want). */
static int64_t tx_ready(struct shunt_end *e, uint64_t want, uint64_t need, int peek)
{
	int err = atomic_load_explicit(&e->broken, memory_order_relaxed);

	if (err)
		return err;
	if (atomic_load_explicit(&e->my_state, memory_order_relaxed) & SHUNT_ST_SHUT_WR)
		return -EPIPE;
	int64_t st = shunt_end_peer_state(e);
	if (st < 0)
		return st;
	if (st & SHUNT_ST_CLOSED)
		return -EPIPE;
	if (atomic_load_explicit(&e->peer_gone, memory_order_relaxed))
		return -ECONNRESET;
	int64_t n = peek ? shunt_ring_look_space(&e->tx) : shunt_ring_space(&e->tx, want);
	if (n < 0)
		return shunt_end_fail(e, (int)n);
	return (uint64_t)n >= need ? n : -EAGAIN;
}

/* --- Waiting ---------------------------------------------------------- */

struct want {
	struct shunt_end *e;
	uint32_t bits;
	uint64_t need;
};

static int ready(void *arg)
{
	struct want *w = arg;

	if (w->bits == SHUNT_WAIT_WRITE)
		return tx_ready(w->e, w->need, w->need, 0) != -EAGAIN;
	int64_t n = rx_ready(w->e, w->need, 0);
	return n != -EAGAIN && (n <= 0 || (uint64_t)n >= w->need || peer_done(w->e));
}

/* Our wait bits, armed and disarmed.  Bits our own disarm cleared had
 * no doorbell rung for them (the peer rings only a bit it cleared), so
 * the next poll's arm need not drain for them: a poll() after each read
 * drained for nothing (stunnel relaying round trips: a recvfrom() told
 * EAGAIN per message, a fifth of its system calls). */
static void arm_bits(struct shunt_end *e, uint32_t bits)
{
	atomic_fetch_and_explicit(&e->unrung, ~bits, memory_order_relaxed);
	shunt_wait_arm(&e->me->wait, bits);
}

/* Returns the bits the peer had cleared: its doorbell is on its way. */
static uint32_t disarm(struct shunt_end *e, uint32_t bits)
{
	uint32_t rung = shunt_wait_disarm(&e->me->wait, bits);

	atomic_fetch_or_explicit(&e->unrung, bits & ~rung, memory_order_relaxed);
	return rung;
}

/* Calls that try to take a doorbell owed (take_owed, below). */
#define OWED_TRIES 8

/*
 * The shim's calls that may not wait look at the rings alone: its waits
 * (poll, epoll, a blocking call) notice on the stream a peer that died
 * without a close.  A program that only reads without waiting (a loop of
 * recv(MSG_DONTWAIT), or "is the peer still there?") never learnt it, and
 * read EAGAIN for good where TCP's end of the stream came at once (a
 * helper's reproducer, 12-07).  So such a call asks the bell, at most once
 * a clock tick an end (a system call: the shim's looks at the kernel's
 * socket state); the tick's clock, as an event loop's every read until
 * EAGAIN comes here.  1: the peer is gone.
 */
#define ALIVE_LOOK_NS 1000000

static int dead_yet(struct shunt_end *e, struct shunt_bell *b)
{
	int64_t now = shunt_coarse_ns();
	int64_t last = atomic_load_explicit(&e->alive_at, memory_order_relaxed);

	if (now - last < ALIVE_LOOK_NS ||
	    !atomic_compare_exchange_strong_explicit(&e->alive_at, &last, now,
						     memory_order_relaxed, memory_order_relaxed) ||
	    b->ops->alive(b) == 0)
		return 0;
	shunt_end_peer_gone(e);
	return 1;
}

/* A call that must not wait is about to return -EAGAIN, and its caller
 * will wait on the bell (the native API's shunt_fd()): consume old rings
 * first, so that stale ones do not keep it readable, and arm after, so
 * that a ring for new progress stays pending.  Returns 0 if the condition
 * came true meanwhile.  The shim's callers wait through its poll and
 * epoll, which arm themselves: nothing to do (bell.h, waits_arm) but the
 * look above. */
static int nowait(struct shunt_end *e, struct shunt_bell *b, struct want *w)
{
	if (b->ops->waits_arm)
		return dead_yet(e, b) && ready(w) ? 0 : -EAGAIN;
	atomic_fetch_or_explicit(&e->waited, w->bits, memory_order_relaxed);
	if (b->ops->drain(b, w->bits) < 0)
		shunt_end_peer_gone(e);
	arm_bits(e, w->bits);
	if (ready(w)) {
		disarm(e, w->bits);
		return 0;
	}
	return -EAGAIN;
}

/*
 * Wait until `bits` (SHUNT_WAIT_READ or SHUNT_WAIT_WRITE) may have become
 * true for `need` bytes.  Returns 0 to look again (a hint, not a promise:
 * callers loop), -EAGAIN (no waiting allowed, or the deadline passed), or
 * -EINTR.
 */
static int end_wait(struct shunt_end *e, struct shunt_bell *b, uint32_t bits,
		    uint64_t need, int64_t deadline)
{
	struct want w = { e, bits, need };

	if (deadline == 0)
		return nowait(e, b, &w);
	int spun = shunt_spin(&e->spin, ready, &w);
	if (spun >= 0)
		atomic_fetch_add_explicit(&e->spins, 1, memory_order_relaxed);
	if (spun > 0) {
		atomic_fetch_add_explicit(&e->spin_hits, 1, memory_order_relaxed);
		return 0;
	}
	if (shunt_spin_yields(&e->spin)) {
		sys_sched_yield();
		if (ready(&w))
			return 0;
	}
	arm_bits(e, bits);
	if (ready(&w)) {
		if (disarm(e, bits) && b->ops->drain_spares)
			atomic_store_explicit(&e->owed, OWED_TRIES, memory_order_relaxed);
		return 0;
	}
	int rc = b->ops->sleep(b, bits, deadline);
	if (rc == -ECONNRESET)
		shunt_end_peer_gone(e);
	else if (rc < 0)
		return rc;
	atomic_fetch_add_explicit(&e->sleeps, 1, memory_order_relaxed);
	return 0;
}

/*
 * A wait armed, found its condition true and disarmed, but the peer had
 * cleared the bit already: its doorbell is on its way, and no sleep will
 * take it.  Left on the stream it is unread data at the end, where a
 * process that ends by _exit() gets its connection reset (a
 * fork-per-connection server's handler, found by the soak).  The next
 * calls take it; a few tries, as the peer may have died before it rang.
 */
static void take_owed(struct shunt_end *e, struct shunt_bell *b)
{
	uint32_t left = atomic_load_explicit(&e->owed, memory_order_relaxed);
	int rc = b->ops->drain(b, SHUNT_WAIT_ALL);

	if (rc < 0)
		shunt_end_peer_gone(e);
	atomic_store_explicit(&e->owed, rc != 0 || left <= 1 ? 0 : left - 1,
			      memory_order_relaxed);
}

/*
 * A call for `bits` succeeded.  If an earlier one said -EAGAIN, the ring
 * that ended that wait may still sit in the bell and would keep an event
 * loop's wait readable for nothing: consume it (once per episode).
 */
static void settle(struct shunt_end *e, struct shunt_bell *b, uint32_t bits)
{
	if (__builtin_expect(atomic_load_explicit(&e->owed, memory_order_relaxed) != 0, 0))
		take_owed(e, b);
	if (__builtin_expect(!(atomic_load_explicit(&e->waited, memory_order_relaxed) & bits), 1))
		return;
	atomic_fetch_and_explicit(&e->waited, ~bits, memory_order_relaxed);
	disarm(e, bits);
	/* The user's waits take their rings themselves (bell.h). */
	if (!b->ops->waits_arm && b->ops->drain(b, bits) < 0)
		shunt_end_peer_gone(e);
}

/* --- Sending ---------------------------------------------------------- */

/*
 * Copies publish (or release) at most this much at a time, so that the peer
 * starts on the first piece of a large message while we copy the next: a
 * message as large as the ring would otherwise leave each side idle while
 * the other copies.  64 KiB measured best with 512 KiB rings.
 */
#define COPY_CHUNK (64u * 1024u)

static size_t chunk(const struct shunt_ring *r, uint64_t avail, size_t left)
{
	uint64_t most = SHUNT_MIN((uint64_t)COPY_CHUNK, r->cap / 2);

	return (size_t)SHUNT_MIN(SHUNT_MIN(avail, most), (uint64_t)left);
}

/*
 * A big piece goes into the ring by plain stores, timed while the reader
 * keeps up (half the ring or more is free: the copy is what the stream
 * waits for): one that ran below NT_SLOW_MBPS (the receiver's CPU shares
 * no cache with ours, and each store waits for its line) sends the next
 * NT_RUN big pieces around the caches, which was twice as fast then and
 * half as fast otherwise (copy.h); then a plain one is timed again.
 * With the ring full the reader is what the stream waits for, and a slow
 * copy says nothing (timed then, plain stores lost a third of the fast
 * runs' rate).
 */
#define NT_MIN (16u << 10)
#define NT_SLOW_MBPS 7000u
#define NT_RUN 64

static void copy_in(struct shunt_end *e, void *dst, const void *src, size_t k, uint64_t room)
{
	if (k >= NT_MIN && e->nt_left) {
		e->nt_left--;
		shunt_copy_nt(dst, src, k);
		return;
	}
	if (k < NT_MIN || room < e->tx.cap / 2) { /* not timed */
		shunt_copy(dst, src, k);
		return;
	}
	int64_t t0 = shunt_now_ns();
	shunt_copy(dst, src, k);
	int64_t dt = shunt_now_ns() - t0;
	/* k bytes in dt ns is k * 1000 / dt MB/s; two slow ones in a row (one
	 * may have been preempted or faulted its source in). */
	if (dt > 0 && (uint64_t)k * 1000u < (uint64_t)dt * NT_SLOW_MBPS)
		e->nt_left = e->nt_slow++ ? NT_RUN : 0;
	else
		e->nt_slow = 0;
}

static void tx_publish(struct shunt_end *e, struct shunt_bell *b, uint64_t n)
{
	shunt_ring_commit(&e->tx, n);
	e->bytes_sent += n;
	ring_peer(e, b, SHUNT_WAIT_READ);
	settle(e, b, SHUNT_WAIT_WRITE);
}

/* Where a vectored send has come to: piece i, off bytes into it. */
struct iov_at {
	const struct iovec *iov;
	int n, i;
	size_t off;
};

/* The next k bytes of the pieces into dst, each piece's part a copy.  A
 * program that shortened a piece under us (another thread) gets zeros
 * past its pieces' end, never bytes from beyond them. */
static void gather_in(struct shunt_end *e, uint8_t *dst, struct iov_at *at, size_t k,
		      uint64_t room)
{
	while (k) {
		if (at->i >= at->n) {
			memset(dst, 0, k);
			return;
		}
		const struct iovec *v = &at->iov[at->i];
		size_t m = SHUNT_MIN(k, v->iov_len - SHUNT_MIN(at->off, v->iov_len));

		copy_in(e, dst, (const uint8_t *)v->iov_base + at->off, m, room);
		dst += m;
		k -= m;
		at->off += m;
		if (at->off >= v->iov_len) {
			at->i++;
			at->off = 0;
		}
	}
}

ssize_t shunt_end_send(struct shunt_end *e, struct shunt_bell *b, const void *buf,
		       size_t len, int64_t deadline)
{
	struct iovec v = { (void *)buf, len };

	return shunt_end_sendv(e, b, &v, 1, len, deadline);
}

ssize_t shunt_end_sendv(struct shunt_end *e, struct shunt_bell *b, const struct iovec *iov,
			int niov, size_t len, int64_t deadline)
{
	struct iov_at at = { iov, niov, 0, 0 };
	size_t done = 0;

	if (len == 0) {
		int64_t n = tx_ready(e, 1, 1, 0);
		return n < 0 && n != -EAGAIN ? n : 0;
	}
	/* A send of more than one piece says how far it will go, so that a
	 * reader that empties the ring meanwhile waits for the next piece
	 * (take_more) rather than return short; and that it is done, after. */
	int pieces = len > COPY_CHUNK;
	if (pieces)
		atomic_store_explicit(e->tx_more, e->tx.pos + len, memory_order_relaxed);
	ssize_t rc = 0;
	while (done < len) {
		int64_t n = tx_ready(e, SHUNT_MIN(len - done, e->tx.cap), 1, 0);
		if (n == -EAGAIN) {
			rc = end_wait(e, b, SHUNT_WAIT_WRITE, 1, deadline);
			if (rc < 0)
				break;
			continue;
		}
		if (n < 0) {
			rc = n;
			break;
		}
		/* A vector's small pieces go in under one publish: the reader
		 * sees them whole, as TCP queues one writev. */
		size_t k = chunk(&e->tx, (uint64_t)n, len - done);
		gather_in(e, shunt_ring_wptr(&e->tx), &at, k, (uint64_t)n);
		tx_publish(e, b, k);
		done += k;
	}
	if (pieces)
		atomic_store_explicit(e->tx_more, e->tx.pos, memory_order_relaxed);
	return done ? (ssize_t)done : rc;
}

ssize_t shunt_end_reserve(struct shunt_end *e, struct shunt_bell *b, void **buf, size_t min,
			  int64_t deadline)
{
	if (min == 0)
		min = 1;
	if (min > e->tx.cap)
		return -EINVAL;
	for (;;) {
		int64_t n = tx_ready(e, min, min, 0);
		if (n > 0) {
			*buf = shunt_ring_wptr(&e->tx);
			e->zc_reserved = (uint64_t)n;
			return n;
		}
		if (n != -EAGAIN)
			return n;
		int rc = end_wait(e, b, SHUNT_WAIT_WRITE, min, deadline);
		if (rc < 0)
			return rc;
	}
}

int shunt_end_commit(struct shunt_end *e, struct shunt_bell *b, size_t len)
{
	if (len > e->zc_reserved)
		return -EINVAL;
	e->zc_reserved = 0;
	if (len)
		tx_publish(e, b, len);
	return 0;
}

/* --- Receiving -------------------------------------------------------- */

static void rx_consume(struct shunt_end *e, struct shunt_bell *b, uint64_t n)
{
	shunt_ring_release(&e->rx, n);
	e->bytes_received += n;
	ring_peer(e, b, SHUNT_WAIT_WRITE);
	settle(e, b, SHUNT_WAIT_READ);
}

/* A need that follows SO_RCVLOWAT as it changes (rx_wait_min). */
#define SHUNT_NEED_LOWAT UINT64_MAX

/* Wait for at least `need` bytes (fewer at the end of the stream);
 * > 0 available, 0 end of stream, < 0 error.  SHUNT_NEED_LOWAT: what
 * SO_RCVLOWAT says, as TCP's read: its target is the value at the start,
 * and its wake-ups look at the value then, so a read returns with the
 * larger of the two (raised by another thread while a read waited with 10
 * bytes there of 20, it took the 10: a helper's reproducer, 12-07; a
 * lowered one does not end a wait short of the start's). */
static int64_t rx_wait_min(struct shunt_end *e, struct shunt_bell *b, uint64_t want,
			   uint64_t need, int64_t deadline)
{
	uint64_t start = need == SHUNT_NEED_LOWAT ? shunt_end_rx_need(e, want) : need;

	for (;;) {
		uint64_t at_least = need == SHUNT_NEED_LOWAT
					    ? SHUNT_MAX(start, shunt_end_rx_need(e, want)) : need;
		int64_t n = rx_ready(e, want, 0);
		/* Short of `need` (MSG_PEEK | MSG_WAITALL) after our own
		 * SHUT_RD: what is there, as TCP's (it waited for good). */
		if (n != -EAGAIN && (n <= 0 || (uint64_t)n >= at_least || rx_over(e)))
			return n;
		int rc = end_wait(e, b, SHUNT_WAIT_READ, at_least, deadline);
		if (rc < 0)
			return n > 0 ? n : rc;
	}
}

static int64_t rx_wait(struct shunt_end *e, struct shunt_bell *b, uint64_t want,
		       int64_t deadline)
{
	return rx_wait_min(e, b, want, 1, deadline);
}

/* The peer's send under way will publish more than we have seen (its
 * hint: a peer may lie, which costs us a spin per piece it sends; take()
 * keeps the count). */
static int peer_sending(struct shunt_end *e)
{
	uint64_t m = atomic_load_explicit(e->rx_more, memory_order_relaxed);

	return m - e->rx.pos - 1 < (1ull << 62);
}

static int more_ready(void *arg)
{
	struct shunt_end *e = arg;

	if (atomic_load_explicit(&e->broken, memory_order_relaxed))
		return 1;
	int64_t n = shunt_ring_avail(&e->rx, 1);
	return n != 0 || !peer_sending(e);
}

/* After the ring's bytes: what came meanwhile, and while the peer's send
 * is under way, what comes within a spin (one trip through the program's
 * poll loop costs more than the peer's next piece).  > 0, or 0: no more. */
static int64_t take_more(struct shunt_end *e, uint64_t want, int64_t *spin_until)
{
	int64_t n = shunt_ring_avail(&e->rx, want);

	/* The hint is the peer's word: the spins of one call last about one
	 * window per piece (COPY_CHUNK) taken, no more (a peer that says
	 * "more" and drips a byte a spin must not hold a call for ever). */
	if (n == 0 && peer_sending(e)) {
		int64_t now = shunt_now_ns();
		if (*spin_until == 0)
			*spin_until = now + (int64_t)e->spin.max * 1000;
		if (now >= *spin_until)
			return 0;
		if (shunt_spin(&e->spin, more_ready, e) > 0)
			n = shunt_ring_avail(&e->rx, want);
	}
	if (n < 0)
		shunt_end_fail(e, (int)n);
	return n > 0 ? n : 0;
}

/* The bytes a wait for input waits for: SO_RCVLOWAT's, at most `len`
 * (TCP's target) and the ring's size. */
uint64_t shunt_end_rx_need(struct shunt_end *e, uint64_t len)
{
	uint64_t v = atomic_load_explicit(&e->rcvlowat, memory_order_relaxed);

	return v > 1 ? SHUNT_MIN(SHUNT_MIN(v, len), e->rx.cap) : 1;
}

void shunt_end_set_rcvlowat(struct shunt_end *e, uint32_t v)
{
	atomic_store_explicit(&e->rcvlowat, v, memory_order_relaxed);
}

/* Take what is there, piece by piece, into buf (or nowhere: discard),
 * and what the peer's send under way adds meanwhile, up to len. */
static ssize_t take(struct shunt_end *e, struct shunt_bell *b, void *buf, size_t len,
		    int64_t deadline)
{
	if (len == 0)
		return 0;
	/* One that may not wait takes what there is, as TCP's. */
	int64_t n = rx_wait_min(e, b, SHUNT_MIN(len, e->rx.cap), deadline ? SHUNT_NEED_LOWAT : 1, deadline);
	size_t done = 0;
	int64_t spin_until = 0;
	size_t paid = 0;

	while (n > 0 && done < len) {
		size_t k = chunk(&e->rx, (uint64_t)n, len - done);
		if (buf)
			shunt_copy((uint8_t *)buf + done, shunt_ring_rptr(&e->rx), k);
		rx_consume(e, b, k);
		done += k;
		n -= (int64_t)k;
		if (n == 0 && done < len) {
			/* A piece's worth since the budget began: a new budget. */
			if (done - paid >= COPY_CHUNK) {
				spin_until = 0;
				paid = done;
			}
			n = take_more(e, SHUNT_MIN(len - done, e->rx.cap), &spin_until);
		}
	}
	return done ? (ssize_t)done : n;
}

ssize_t shunt_end_recv(struct shunt_end *e, struct shunt_bell *b, void *buf, size_t len,
		       int64_t deadline)
{
	return take(e, b, buf, len, deadline);
}

ssize_t shunt_end_discard(struct shunt_end *e, struct shunt_bell *b, size_t len,
			  int64_t deadline)
{
	return take(e, b, NULL, len, deadline);
}

/* What a peek found: n bytes at the ring's read pointer. */
static ssize_t peeked(struct shunt_end *e, int64_t n, const void **buf)
{
	e->zc_peeked = n > 0 ? (uint64_t)n : 0;
	if (n > 0)
		*buf = shunt_ring_rptr(&e->rx);
	return n;
}

ssize_t shunt_end_peek(struct shunt_end *e, struct shunt_bell *b, const void **buf,
		       int64_t deadline)
{
	/* "all of it": read the head again */
	return peeked(e, rx_wait(e, b, e->rx.cap, deadline), buf);
}

ssize_t shunt_end_peek_min(struct shunt_end *e, struct shunt_bell *b, const void **buf,
			   size_t min, int64_t deadline)
{
	return peeked(e, rx_wait_min(e, b, e->rx.cap, min ? min : 1, deadline), buf);
}

ssize_t shunt_end_peek_lowat(struct shunt_end *e, struct shunt_bell *b, const void **buf,
			     size_t len, int64_t deadline)
{
	uint64_t want = SHUNT_MIN((uint64_t)(len ? len : 1), e->rx.cap);

	return peeked(e, rx_wait_min(e, b, want, SHUNT_NEED_LOWAT, deadline), buf);
}

int shunt_end_release(struct shunt_end *e, struct shunt_bell *b, size_t len)
{
	if (len > e->zc_peeked)
		return -EINVAL;
	e->zc_peeked -= len;
	if (len)
		rx_consume(e, b, len);
	return 0;
}

ssize_t shunt_end_readable(struct shunt_end *e)
{
	int err = atomic_load_explicit(&e->broken, memory_order_relaxed);

	if (err)
		return err;
	int64_t n = shunt_ring_peek_fill(&e->rx);
	return n < 0 ? shunt_end_fail(e, (int)n) : n;
}

ssize_t shunt_end_unread_by_peer(struct shunt_end *e)
{
	int64_t n = shunt_ring_peek_space(&e->tx);

	return n < 0 ? shunt_end_fail(e, (int)n) : (ssize_t)(e->tx.cap - (uint64_t)n);
}

/* --- Control ---------------------------------------------------------- */

int shunt_end_shutdown(struct shunt_end *e, struct shunt_bell *b, int how)
{
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	if (how != SHUT_WR)
		atomic_store(&e->rd_shut, 1);
	if (how != SHUT_RD)
		set_state(e, b, SHUNT_ST_SHUT_WR);
	if (atomic_load(&e->rd_shut) && (shunt_end_state(e) & SHUNT_ST_SHUT_WR))
		shunt_end_shut_both(e, b);
	return 0;
}

/* Both halves shut: TCP's FIN_WAIT with its reads shut, where data that
 * arrives resets the connection (RFC 1122).  To the peer that is a close:
 * its sends stop at once (EPIPE; the shim sends them on the kernel's
 * socket, shut the same way, which resets on them), and it rings us no
 * more (our wait bits go first, as a close's), while what it had sent is
 * still ours to read. */
void shunt_end_shut_both(struct shunt_end *e, struct shunt_bell *b)
{
	atomic_store(&e->rd_shut, 1);
	atomic_fetch_and_explicit(&e->me->wait, ~SHUNT_WAIT_ALL, memory_order_relaxed);
	set_state(e, b, SHUNT_ST_CLOSED);
}

void shunt_end_close(struct shunt_end *e, struct shunt_bell *b, enum shunt_close_how how)
{
	int reset = how == SHUNT_CLOSE_RST ||
		    (how == SHUNT_CLOSE_TCP && shunt_ring_peek_fill(&e->rx) != 0);

	/* A wait of ours the peer still sees would have it ring a closed
	 * socket: we sleep no more. */
	atomic_fetch_and_explicit(&e->me->wait, ~SHUNT_WAIT_ALL, memory_order_relaxed);
	set_state(e, b, SHUNT_ST_CLOSED | (reset ? SHUNT_ST_RESET : 0));
}

uint32_t shunt_end_state(const struct shunt_end *e)
{
	return atomic_load_explicit(&e->my_state, memory_order_relaxed);
}

void shunt_end_init(struct shunt_end *e, const struct shunt_seg *seg, int side,
		    int spin_us, int hangup_eof)
{
	struct shunt_ctl *ctl = seg->ctl;

	memset(e, 0, sizeof(*e));
	e->seg = *seg;
	e->side = side;
	e->hangup_eof = hangup_eof;
	shunt_spin_init(&e->spin, spin_us);
	e->me = &ctl->side[side];
	e->peer = &ctl->side[1 - side];
	shunt_ring_init(&e->tx, &ctl->head[side].v, &ctl->tail[side].v, seg->data[side],
			seg->cap);
	shunt_ring_init(&e->rx, &ctl->head[1 - side].v, &ctl->tail[1 - side].v,
			seg->data[1 - side], seg->cap);
	e->tx_more = &ctl->head[side].more;
	e->rx_more = &ctl->head[1 - side].more;
	atomic_store_explicit(&e->me->pid, (uint32_t)sys_getpid(), memory_order_relaxed);
	atomic_init(&e->my_state, SHUNT_ST_OPEN);
	atomic_store_explicit(&e->me->state, SHUNT_ST_OPEN, memory_order_release);
}

/* --- Readiness for poll and epoll -------------------------------------- */

/* Our own SHUT_RD reads as the stream's end in poll with data unread too,
 * as TCP's RCV_SHUTDOWN (t_shim_poll hup_own_shutdown). */
static int poll_rx(struct shunt_end *e)
{
	int64_t n = rx_ready(e, 1, 1);

	if (n == -EAGAIN)
		return 0;
	int done = n > 0 && rx_over(e);
	if (n > 0 && !done && (uint64_t)n < shunt_end_rx_need(e, UINT64_MAX))
		return 0; /* short of SO_RCVLOWAT */
	if (n > 0)
		return done ? POLLIN | POLLRDHUP : POLLIN;
	if (n == 0)
		return POLLIN | POLLRDHUP;
	return POLLIN | POLLRDHUP | POLLERR | POLLHUP;
}

/* Writable; an error only for a reset or a broken segment: after the
 * peer's orderly close a TCP socket still polls writable and no more, a
 * vanished peer's clean one too (it said POLLERR at once: t_shim_poll
 * hup_killed_clean; the reset comes to a send, the shim's after_close). */
static int poll_tx(struct shunt_end *e)
{
	int64_t n = tx_ready(e, 1, 1, 1);

	if (n == -EAGAIN)
		return 0;
	if (n == -ECONNRESET && !atomic_load_explicit(&e->broken, memory_order_relaxed) &&
	    gone_clean(e))
		return POLLOUT;
	return n > 0 || n == -EPIPE ? POLLOUT : POLLOUT | POLLERR;
}

int shunt_end_would_wait(struct shunt_end *e, uint32_t bits)
{
	return (bits == SHUNT_WAIT_WRITE ? tx_ready(e, 1, 1, 1) : rx_ready(e, 1, 1)) == -EAGAIN;
}

/* POLLHUP as TCP gives it: both directions are shut. */
static int poll_bits(struct shunt_end *e, int events)
{
	int rx = poll_rx(e), tx = poll_tx(e);
	int ev = rx | tx;

	if ((rx & POLLRDHUP) && (shunt_end_state(e) & SHUNT_ST_SHUT_WR))
		ev |= POLLHUP;
	return ev & (events | POLLERR | POLLHUP);
}

int shunt_end_poll(struct shunt_end *e, struct shunt_bell *b, int events, int arm)
{
	int ev = poll_bits(e, events);

	if (arm == SHUNT_ARM_NONE)
		return ev;
	uint32_t bits = 0;
	if ((events & (POLLIN | POLLRDHUP)) && !(ev & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)))
		bits |= SHUNT_WAIT_READ;
	if ((events & POLLOUT) && !(ev & (POLLOUT | POLLHUP | POLLERR)))
		bits |= SHUNT_WAIT_WRITE;
	if (arm == SHUNT_ARM_EDGE && (events & (POLLIN | POLLRDHUP)))
		bits |= SHUNT_WAIT_READ; /* each arrival is an edge, read or not */
	/* Still armed: no ring came since, so no doorbell of the peer's waits
	 * to be drained either (it clears the bit before it rings), unless an
	 * edge-triggered arm left one; that one wakes the level-triggered wait
	 * at once, and the look after it drains what the kernel shows (the
	 * shim's shim_readiness).  Drained each time, a poll() of 1000 moved
	 * sockets made a failing recvfrom() for almost each (a helper's
	 * server: 0.4x TCP's round trips, at 2.8x the CPU). */
	bits &= ~atomic_load_explicit(&e->me->wait, memory_order_relaxed);
	if (!bits)
		return ev;
	/* As a call that must not wait: consume old rings, then arm, so that
	 * a ring for new progress stays pending in the bell. */
	atomic_fetch_or_explicit(&e->waited, bits, memory_order_relaxed);
	uint32_t drain = bits & ~atomic_load_explicit(&e->unrung, memory_order_relaxed);
	if (arm == SHUNT_ARM_DRAIN && drain && b->ops->drain(b, drain) < 0)
		shunt_end_peer_gone(e);
	arm_bits(e, bits);
	return poll_bits(e, events);
}

uint32_t shunt_end_armed(const struct shunt_end *e)
{
	/* Acquire: the peer cleared the bit after it published what it rang
	 * for (shunt_wait_should_wake's fence), which is then visible. */
	return atomic_load_explicit(&e->me->wait, memory_order_acquire) & SHUNT_WAIT_ALL;
}

uint64_t shunt_end_progress(const struct shunt_end *e)
{
	return atomic_load_explicit(e->rx.head, memory_order_relaxed) +
	       atomic_load_explicit(e->tx.tail, memory_order_relaxed) +
	       atomic_load_explicit(&e->peer->state, memory_order_relaxed) +
	       (uint64_t)atomic_load_explicit(&e->peer_gone, memory_order_relaxed);
}

void shunt_end_check_peer(struct shunt_end *e, struct shunt_bell *b)
{
	if (b->ops->alive(b) < 0)
		shunt_end_peer_gone(e);
}
