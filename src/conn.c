/*
 * conn.c - the data path of a connection end: send, receive, wait, close.
 *
 * The fast path reads top to bottom here: a send copies into the tx ring,
 * publishes the new head and rings the peer only if it sleeps; a receive is
 * the mirror image.  Everything the peer wrote (indices, states) is checked
 * before use; a peer that breaks the rules breaks the connection (-EPROTO),
 * never this process.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "wake.h"

#include <shunt.h>

/* --- State ----------------------------------------------------------- */

/* Remember the first fatal error; every later call returns it. */
static int conn_fail(struct shunt_conn *c, int err)
{
	int expected = 0;

	if (atomic_compare_exchange_strong(&c->broken, &expected, err))
		log_warn("connection broken: %s", strerror(-err));
	return atomic_load_explicit(&c->broken, memory_order_relaxed);
}

/* The peer's state word, or -EPROTO if it holds bits that mean nothing. */
static int64_t peer_state(struct shunt_conn *c)
{
	/* Acquire pairs with the release in set_state(): data the peer
	 * published before a shutdown is visible once we see the shutdown. */
	uint32_t st = atomic_load_explicit(&c->peer->state, memory_order_acquire);

	if (st & ~SHUNT_ST_KNOWN)
		return conn_fail(c, -EPROTO);
	return st;
}

/* The doorbell that rings waits for `bits` (one of READ, WRITE). */
static int bell_of(const struct shunt_conn *c, uint32_t bits)
{
	return c->bell[bits == SHUNT_WAIT_READ ? 0 : 1];
}

static void ring_peer(struct shunt_conn *c, uint32_t bits)
{
	uint32_t rung = shunt_wait_should_wake(&c->peer->wait, bits);

	if (__builtin_expect(rung == 0, 1))
		return;
	for (uint32_t b = SHUNT_WAIT_READ; b <= SHUNT_WAIT_WRITE; b <<= 1)
		if ((rung & b) && shunt_bell_ring(bell_of(c, b)) == 0)
			atomic_fetch_add_explicit(&c->wakeups, 1, memory_order_relaxed);
}

static void set_state(struct shunt_conn *c, uint32_t bits)
{
	uint32_t st = atomic_fetch_or(&c->my_state, bits) | bits;

	/* Release pairs with the acquire in peer_state(). */
	atomic_store_explicit(&c->me->state, st, memory_order_release);
	ring_peer(c, SHUNT_WAIT_ALL);
}

/* The peer hung up without a shutdown: it died, or (shim) closed its last
 * copy.  Data it published before is still ours, so re-read the head.  As
 * with TCP, that is end of stream if it had read all we sent, and a reset
 * if it left some unread. */
static int64_t gone_rx(struct shunt_conn *c, uint64_t want)
{
	int64_t n = shunt_ring_avail(&c->rx, want);

	if (n != 0)
		return n < 0 ? conn_fail(c, (int)n) : n;
	if (c->hangup_eof && shunt_ring_peek_space(&c->tx) == (int64_t)c->tx.cap)
		return 0;
	return -ECONNRESET;
}

/* --- Readiness --------------------------------------------------------
 * Each returns > 0 (bytes ready or free), 0 (end of stream, rx only),
 * -EAGAIN (would wait) or the error the caller must return.  `want` is how
 * much the caller could use: the peer's index is re-read only when the
 * cached one shows less, so each call loads it at most once. */

static int64_t rx_ready(struct shunt_conn *c, uint64_t want)
{
	int err = atomic_load_explicit(&c->broken, memory_order_relaxed);

	if (err)
		return err;
	if (c->rd_shut)
		return 0;
	int64_t n = shunt_ring_avail(&c->rx, want);
	if (n != 0)
		return n < 0 ? conn_fail(c, (int)n) : n;
	int64_t st = peer_state(c);
	if (st < 0)
		return st;
	if (st & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) {
		/* Re-read the head after the state: it may have grown. */
		n = shunt_ring_avail(&c->rx, want);
		if (n == 0 && (st & SHUNT_ST_RESET))
			return -ECONNRESET;
		return n < 0 ? conn_fail(c, (int)n) : n;
	}
	if (atomic_load_explicit(&c->peer_gone, memory_order_relaxed))
		return gone_rx(c, want);
	return -EAGAIN;
}

/* Free space of at least `need` bytes (need <= want). */
static int64_t tx_ready(struct shunt_conn *c, uint64_t want, uint64_t need)
{
	int err = atomic_load_explicit(&c->broken, memory_order_relaxed);

	if (err)
		return err;
	if (atomic_load_explicit(&c->my_state, memory_order_relaxed) & SHUNT_ST_SHUT_WR)
		return -EPIPE;
	int64_t st = peer_state(c);
	if (st < 0)
		return st;
	if (st & SHUNT_ST_CLOSED)
		return -EPIPE;
	if (atomic_load_explicit(&c->peer_gone, memory_order_relaxed))
		return -ECONNRESET;
	int64_t n = shunt_ring_space(&c->tx, want);
	if (n < 0)
		return conn_fail(c, (int)n);
	return (uint64_t)n >= need ? n : -EAGAIN;
}

static int ready(struct shunt_conn *c, uint32_t bits, uint64_t need)
{
	int64_t n = bits == SHUNT_WAIT_READ ? rx_ready(c, need) : tx_ready(c, need, need);

	return n != -EAGAIN;
}

/* --- Waiting ---------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/*
 * The spin window adapts.  A spin that ends in a sleep means the peer did
 * not answer in time, most often because it was not running: with more busy
 * threads than cores, spinning only steals the CPU the peer needs.  So a
 * failed spin halves the window and a successful one doubles it back, up to
 * spin_us.  A window that fell to zero is probed again every SPIN_PROBE waits.
 */
#define SPIN_PROBE 64

static int spin_window(struct shunt_conn *c)
{
	int w = atomic_load_explicit(&c->spin_cur, memory_order_relaxed);

	if (w > 0 || c->spin_us == 0)
		return w;
	if (atomic_fetch_add_explicit(&c->spin_skips, 1, memory_order_relaxed) % SPIN_PROBE)
		return 0;
	return c->spin_us / 4 + 1;
}

static void spin_adapt(struct shunt_conn *c, int window, int hit)
{
	int w = hit ? window * 2 + 1 : window / 2;

	atomic_store_explicit(&c->spin_cur, SHUNT_MIN(w, c->spin_us), memory_order_relaxed);
}

/* Spin up to `window` microseconds for the condition; 1 if it came true. */
static int spin(struct shunt_conn *c, int window, uint32_t bits, uint64_t want)
{
	uint64_t deadline = now_ns() + (uint64_t)window * 1000u;

	atomic_fetch_add_explicit(&c->spins, 1, memory_order_relaxed);
	for (unsigned i = 1;; i++) {
		if (ready(c, bits, want)) {
			atomic_fetch_add_explicit(&c->spin_hits, 1, memory_order_relaxed);
			spin_adapt(c, window, 1);
			return 1;
		}
		cpu_relax();
		/* The clock costs more than a check: read it now and then. */
		if ((i & 63) == 0 && now_ns() > deadline) {
			spin_adapt(c, window, 0);
			return 0;
		}
	}
}

static void peer_hung_up(struct shunt_conn *c)
{
	if (!atomic_load_explicit(&c->peer_gone, memory_order_relaxed))
		log_debug("peer hung up (doorbells %d, %d)", c->bell[0], c->bell[1]);
	atomic_store_explicit(&c->peer_gone, 1, memory_order_relaxed);
}

/*
 * Wait until `bits` (SHUNT_WAIT_READ or SHUNT_WAIT_WRITE) may have become
 * ready.  Returns 0 to re-check (a hint, not a promise: callers loop),
 * -EAGAIN for a non-blocking caller, or -EINTR.
 */
static int conn_wait(struct shunt_conn *c, uint32_t bits, uint64_t want, int flags)
{
	int nonblock = flags & SHUNT_NONBLOCK;
	int window = nonblock ? 0 : spin_window(c);
	int bell = bell_of(c, bits);

	if (window > 0 && spin(c, window, bits, want))
		return 0;
	/* No spinning: more threads want the CPU than there are cores, and the
	 * peer may be one of them, queued behind us.  Letting it run first
	 * often saves both sides the sleep and the wake-up. */
	if (window == 0 && !nonblock && c->spin_us > 0) {
		sched_yield();
		if (ready(c, bits, want))
			return 0;
	}
	/* A non-blocking caller is about to wait on shunt_fd(): consume old
	 * rings first, so that stale ones do not keep it readable, and arm
	 * after, so that a ring for new progress stays pending. */
	if (nonblock) {
		atomic_fetch_or_explicit(&c->waited, bits, memory_order_relaxed);
		if (shunt_bell_drain(bell) < 0)
			peer_hung_up(c);
	}
	shunt_wait_arm(&c->me->wait, bits);
	if (ready(c, bits, want)) {
		shunt_wait_disarm(&c->me->wait, bits);
		return 0;
	}
	if (nonblock)
		return -EAGAIN;
	int rc = shunt_bell_sleep(bell);
	if (rc == -EINTR)
		return rc;
	if (rc < 0)
		peer_hung_up(c);
	atomic_fetch_add_explicit(&c->sleeps, 1, memory_order_relaxed);
	return 0;
}

/*
 * A call for `bits` succeeded.  If an earlier one said -EAGAIN, the ring
 * that ended that wait may still sit in the doorbell and would keep
 * shunt_fd() readable for nothing: consume it (one syscall per episode).
 */
static void settle(struct shunt_conn *c, uint32_t bits)
{
	if (__builtin_expect(!(atomic_load_explicit(&c->waited, memory_order_relaxed) & bits), 1))
		return;
	atomic_fetch_and_explicit(&c->waited, ~bits, memory_order_relaxed);
	shunt_wait_disarm(&c->me->wait, bits);
	if (shunt_bell_drain(bell_of(c, bits)) < 0)
		peer_hung_up(c);
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

static void tx_publish(struct shunt_conn *c, uint64_t n)
{
	shunt_ring_commit(&c->tx, n);
	c->bytes_sent += n;
	ring_peer(c, SHUNT_WAIT_READ);
	settle(c, SHUNT_WAIT_WRITE);
}

SHUNT_EXPORT ssize_t shunt_send(struct shunt_conn *c, const void *buf, size_t len,
				int flags)
{
	const uint8_t *p = buf;
	size_t done = 0;

	if (len == 0) {
		int64_t n = tx_ready(c, 1, 1);
		return n < 0 && n != -EAGAIN ? n : 0;
	}
	while (done < len) {
		int64_t n = tx_ready(c, SHUNT_MIN(len - done, c->tx.cap), 1);
		if (n == -EAGAIN) {
			int rc = conn_wait(c, SHUNT_WAIT_WRITE, 1, flags);
			if (rc < 0)
				return done ? (ssize_t)done : rc;
			continue;
		}
		if (n < 0)
			return done ? (ssize_t)done : n;
		size_t k = chunk(&c->tx, (uint64_t)n, len - done);
		memcpy(shunt_ring_wptr(&c->tx), p + done, k);
		tx_publish(c, k);
		done += k;
	}
	return (ssize_t)done;
}

SHUNT_EXPORT ssize_t shunt_send_reserve(struct shunt_conn *c, void **buf, size_t min,
					int flags)
{
	if (min == 0)
		min = 1;
	if (min > c->tx.cap)
		return -EINVAL;
	for (;;) {
		int64_t n = tx_ready(c, min, min);
		if (n > 0) {
			*buf = shunt_ring_wptr(&c->tx);
			c->zc_reserved = (uint64_t)n;
			return n;
		}
		if (n != -EAGAIN)
			return n;
		int rc = conn_wait(c, SHUNT_WAIT_WRITE, min, flags);
		if (rc < 0)
			return rc;
	}
}

SHUNT_EXPORT int shunt_send_commit(struct shunt_conn *c, size_t len)
{
	if (len > c->zc_reserved)
		return -EINVAL;
	c->zc_reserved = 0;
	if (len)
		tx_publish(c, len);
	return 0;
}

/* --- Receiving -------------------------------------------------------- */

static void rx_consume(struct shunt_conn *c, uint64_t n)
{
	shunt_ring_release(&c->rx, n);
	c->bytes_received += n;
	ring_peer(c, SHUNT_WAIT_WRITE);
	settle(c, SHUNT_WAIT_READ);
}

/* Wait for at least one byte; > 0 available, 0 end of stream, < 0 error. */
static int64_t rx_wait(struct shunt_conn *c, uint64_t want, int flags)
{
	for (;;) {
		int64_t n = rx_ready(c, want);
		if (n != -EAGAIN)
			return n;
		int rc = conn_wait(c, SHUNT_WAIT_READ, 1, flags);
		if (rc < 0)
			return rc;
	}
}

SHUNT_EXPORT ssize_t shunt_recv(struct shunt_conn *c, void *buf, size_t len, int flags)
{
	if (len == 0)
		return 0;
	int64_t n = rx_wait(c, SHUNT_MIN(len, c->rx.cap), flags);
	size_t done = 0;

	/* Take what is there, piece by piece; n was counted once, so this
	 * loop ends even if the peer keeps sending. */
	while (n > 0 && done < len) {
		size_t k = chunk(&c->rx, (uint64_t)n, len - done);
		memcpy((uint8_t *)buf + done, shunt_ring_rptr(&c->rx), k);
		rx_consume(c, k);
		done += k;
		n -= (int64_t)k;
	}
	return done ? (ssize_t)done : n;
}

SHUNT_EXPORT ssize_t shunt_recv_peek(struct shunt_conn *c, const void **buf, int flags)
{
	int64_t n = rx_wait(c, c->rx.cap, flags); /* "all of it": re-read the head */

	c->zc_peeked = n > 0 ? (uint64_t)n : 0;
	if (n > 0)
		*buf = shunt_ring_rptr(&c->rx);
	return n;
}

SHUNT_EXPORT int shunt_recv_release(struct shunt_conn *c, size_t len)
{
	if (len > c->zc_peeked)
		return -EINVAL;
	c->zc_peeked -= len;
	if (len)
		rx_consume(c, len);
	return 0;
}

SHUNT_EXPORT ssize_t shunt_readable(struct shunt_conn *c)
{
	int err = atomic_load_explicit(&c->broken, memory_order_relaxed);

	if (err)
		return err;
	int64_t n = shunt_ring_peek_fill(&c->rx);
	return n < 0 ? conn_fail(c, (int)n) : n;
}

/* --- Control ---------------------------------------------------------- */

SHUNT_EXPORT int shunt_shutdown(struct shunt_conn *c, int how)
{
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	if (how != SHUT_WR)
		c->rd_shut = 1;
	if (how != SHUT_RD)
		set_state(c, SHUNT_ST_SHUT_WR);
	return 0;
}

SHUNT_EXPORT int shunt_fd(struct shunt_conn *c)
{
	int fd = atomic_load_explicit(&c->pollfd, memory_order_acquire);

	if (fd >= 0)
		return fd;
	/* One epoll set holds both doorbells, which also report the peer's
	 * hang-up.  Made on first use: most users never ask. */
	fd = shunt__hide_fd(epoll_create1(EPOLL_CLOEXEC));
	if (fd < 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
		if (epoll_ctl(fd, EPOLL_CTL_ADD, c->bell[i], &ev) < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
	}
	int expected = -1;
	if (!atomic_compare_exchange_strong(&c->pollfd, &expected, fd)) {
		close(fd); /* another thread won the race */
		return expected;
	}
	return fd;
}

SHUNT_EXPORT int shunt_get_stats(const struct shunt_conn *c, struct shunt_stats *out)
{
	out->bytes_sent = c->bytes_sent;
	out->bytes_received = c->bytes_received;
	out->wakeups = atomic_load_explicit(&c->wakeups, memory_order_relaxed);
	out->sleeps = atomic_load_explicit(&c->sleeps, memory_order_relaxed);
	out->spins = atomic_load_explicit(&c->spins, memory_order_relaxed);
	out->spin_hits = atomic_load_explicit(&c->spin_hits, memory_order_relaxed);
	return 0;
}

SHUNT_EXPORT int shunt_set_spin(struct shunt_conn *c, int spin_us)
{
	c->spin_us = spin_us > 0 ? spin_us : 0;
	atomic_store_explicit(&c->spin_cur, c->spin_us, memory_order_relaxed);
	return 0;
}

SHUNT_EXPORT size_t shunt_ring_size(const struct shunt_conn *c)
{
	return (size_t)c->seg.cap;
}

static void close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

SHUNT_EXPORT int shunt_close(struct shunt_conn *c)
{
	if (!c)
		return 0;
	if (c->seg.ctl)
		set_state(c, SHUNT_ST_CLOSED);
	shunt__conn_free(c);
	return 0;
}

static int conn_init(struct shunt_conn **out, int side, struct shunt_seg *seg,
		     int bell_rd, int bell_wr, int spin_us, uint32_t pid)
{
	struct shunt_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		shunt_seg_detach(seg);
		close_fd(bell_rd);
		close_fd(bell_wr);
		return -ENOMEM;
	}
	struct shunt_ctl *ctl = seg->ctl;
	c->seg = *seg;
	c->side = side;
	c->bell[0] = bell_rd;
	c->bell[1] = bell_wr;
	atomic_init(&c->pollfd, -1);
	c->spin_us = spin_us;
	atomic_init(&c->spin_cur, spin_us);
	c->me = &ctl->side[side];
	c->peer = &ctl->side[1 - side];
	shunt_ring_init(&c->tx, &ctl->head[side].v, &ctl->tail[side].v,
			seg->data[side], seg->cap);
	shunt_ring_init(&c->rx, &ctl->head[1 - side].v, &ctl->tail[1 - side].v,
			seg->data[1 - side], seg->cap);
	c->pid = pid;
	atomic_store_explicit(&c->me->pid, pid, memory_order_relaxed);
	atomic_init(&c->my_state, SHUNT_ST_OPEN);
	atomic_store_explicit(&c->me->state, SHUNT_ST_OPEN, memory_order_release);
	*out = c;
	return 0;
}

int shunt__conn_new(struct shunt_conn **out, int side, struct shunt_seg *seg,
		    int bell_rd, int bell_wr, int spin_us)
{
	return conn_init(out, side, seg, bell_rd, bell_wr, spin_us, (uint32_t)getpid());
}

/* --- For the socket shim ---------------------------------------------- */

/* The peer will send no more (TCP: its FIN is in), though data may wait. */
static int peer_done(struct shunt_conn *c)
{
	uint32_t st = atomic_load_explicit(&c->peer->state, memory_order_relaxed);

	return (st & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) ||
	       atomic_load_explicit(&c->peer_gone, memory_order_relaxed);
}

static int poll_rx(struct shunt_conn *c)
{
	int64_t n = rx_ready(c, 1);

	if (n == -EAGAIN)
		return 0;
	if (n > 0)
		return peer_done(c) ? POLLIN | POLLRDHUP : POLLIN;
	if (n == 0)
		return POLLIN | POLLRDHUP;
	return POLLIN | POLLRDHUP | POLLERR | POLLHUP;
}

/* Writable; an error only for a reset or a broken segment: after the
 * peer's orderly close a TCP socket still polls writable and no more. */
static int poll_tx(struct shunt_conn *c)
{
	int64_t n = tx_ready(c, 1, 1);

	if (n == -EAGAIN)
		return 0;
	return n > 0 || n == -EPIPE ? POLLOUT : POLLOUT | POLLERR;
}

/* POLLHUP as TCP gives it: both directions are shut. */
static int poll_bits(struct shunt_conn *c, int events)
{
	int rx = poll_rx(c), tx = poll_tx(c);
	int ev = rx | tx;

	if ((rx & POLLRDHUP) && (shunt__conn_state(c) & SHUNT_ST_SHUT_WR))
		ev |= POLLHUP;
	return ev & (events | POLLERR | POLLHUP);
}

int shunt__conn_poll(struct shunt_conn *c, int events, int arm)
{
	int ev = poll_bits(c, events);

	if (arm == SHUNT_ARM_NONE)
		return ev;
	uint32_t bits = 0;
	if ((events & (POLLIN | POLLRDHUP)) && !(ev & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)))
		bits |= SHUNT_WAIT_READ;
	if ((events & POLLOUT) && !(ev & (POLLOUT | POLLHUP | POLLERR)))
		bits |= SHUNT_WAIT_WRITE;
	if (arm == SHUNT_ARM_EDGE && (events & (POLLIN | POLLRDHUP)))
		bits |= SHUNT_WAIT_READ; /* each arrival is an edge, read or not */
	if (arm != SHUNT_ARM_DRAIN) /* still armed: no ring came since */
		bits &= ~atomic_load_explicit(&c->me->wait, memory_order_relaxed);
	if (!bits)
		return ev;
	/* As a non-blocking conn_wait(): consume old rings, then arm, so a
	 * ring for new progress stays pending in the bell. */
	atomic_fetch_or_explicit(&c->waited, bits, memory_order_relaxed);
	for (uint32_t b = SHUNT_WAIT_READ; b <= SHUNT_WAIT_WRITE; b <<= 1)
		if ((bits & b) && arm == SHUNT_ARM_DRAIN && shunt_bell_drain(bell_of(c, b)) < 0)
			peer_hung_up(c);
	shunt_wait_arm(&c->me->wait, bits);
	return poll_bits(c, events);
}

int shunt__conn_bell(const struct shunt_conn *c, int write)
{
	return c->bell[write ? 1 : 0];
}

uint64_t shunt__conn_progress(const struct shunt_conn *c)
{
	return atomic_load_explicit(c->rx.head, memory_order_relaxed) +
	       atomic_load_explicit(c->tx.tail, memory_order_relaxed) +
	       atomic_load_explicit(&c->peer->state, memory_order_relaxed) +
	       (uint64_t)atomic_load_explicit(&c->peer_gone, memory_order_relaxed);
}

uint32_t shunt__conn_state(const struct shunt_conn *c)
{
	return atomic_load_explicit(&c->my_state, memory_order_relaxed);
}

void shunt__conn_free(struct shunt_conn *c)
{
	if (!c)
		return;
	shunt_seg_detach(&c->seg);
	close_fd(c->bell[0]);
	close_fd(c->bell[1]);
	close_fd(atomic_load(&c->pollfd));
	free(c);
}

uint32_t shunt__conn_decide(struct shunt_conn *c, uint32_t to)
{
	uint32_t d = SHUNT_DECIDE_PENDING;

	if (to == SHUNT_DECIDE_PENDING) /* only look */
		d = atomic_load(&c->seg.ctl->decide);
	else if (atomic_compare_exchange_strong(&c->seg.ctl->decide, &d, to))
		return to;
	/* A value the peer scribbled is no decision we made: treat it as a
	 * decline, so that nobody uses shared memory on a maybe. */
	return d == SHUNT_DECIDE_ACCEPTED || d == SHUNT_DECIDE_PENDING ? d
								       : SHUNT_DECIDE_DECLINED;
}

/* Short: the accepting side usually decides within microseconds, and a
 * sleep costs two scheduler trips, but it may also be busy elsewhere. */
#define DECIDE_SPIN_NS 30000

uint32_t shunt__conn_await_decision(struct shunt_conn *c, int64_t timeout_ns)
{
	uint64_t t0 = now_ns(), spin_end = t0 + (c->spin_us > 0 ? DECIDE_SPIN_NS : 0);
	uint64_t deadline = t0 + (uint64_t)(timeout_ns > 0 ? timeout_ns : 0);
	uint32_t d;

	while ((d = shunt__conn_decide(c, SHUNT_DECIDE_PENDING)) == SHUNT_DECIDE_PENDING) {
		uint64_t now = now_ns();
		if (now >= deadline)
			return shunt__conn_decide(c, SHUNT_DECIDE_DECLINED);
		if (now < spin_end) {
			cpu_relax();
			continue;
		}
		/* Armed as a read wait: the decider rings only if it sees this. */
		shunt_wait_arm(&c->me->wait, SHUNT_WAIT_READ);
		if (shunt__conn_decide(c, SHUNT_DECIDE_PENDING) != SHUNT_DECIDE_PENDING)
			continue;
		uint64_t left = deadline - now;
		struct pollfd p = { .fd = c->bell[0], .events = POLLIN };
		struct timespec ts = { (time_t)(left / 1000000000), (long)(left % 1000000000) };
		if (ppoll(&p, 1, &ts, NULL) > 0 && (p.revents & (POLLHUP | POLLERR)))
			return shunt__conn_decide(c, SHUNT_DECIDE_DECLINED); /* dropped */
		if (p.revents & POLLIN)
			shunt_bell_drain(c->bell[0]);
	}
	shunt_wait_disarm(&c->me->wait, SHUNT_WAIT_READ);
	return d;
}

void shunt__conn_wake_decided(struct shunt_conn *c)
{
	if (shunt_wait_should_wake(&c->peer->wait, SHUNT_WAIT_READ))
		shunt_bell_ring(c->bell[0]);
}

void shunt__conn_set_info(struct shunt_conn *c, const struct shunt_tcp_info *info)
{
	memcpy(&c->seg.ctl->info, info, sizeof(*info));
}

int shunt__conn_resume(struct shunt_conn **out, int side, struct shunt_seg *seg,
		       int bell_rd, int bell_wr, int spin_us)
{
	struct shunt_ctl *ctl = seg->ctl;
	uint32_t st = atomic_load(&ctl->side[side].state) & SHUNT_ST_KNOWN;
	int rc = shunt__conn_new(out, side, seg, bell_rd, bell_wr, spin_us);

	if (rc < 0)
		return rc;
	struct shunt_conn *c = *out;
	/* Our own indices: we are their only writer.  The cached peer indices
	 * start where they force a fresh, validated read. */
	c->tx.pos = atomic_load(c->tx.head);
	c->tx.peer = c->tx.pos - c->tx.cap;
	c->rx.pos = atomic_load(c->rx.tail);
	c->rx.peer = c->rx.pos;
	set_state(c, st | SHUNT_ST_OPEN);
	return 0;
}

void shunt__conn_close_keep(struct shunt_conn *c)
{
	int64_t unread = shunt_ring_peek_fill(&c->rx);

	set_state(c, SHUNT_ST_CLOSED | (unread != 0 ? SHUNT_ST_RESET : 0));
}

void shunt__conn_close_last(struct shunt_conn *c)
{
	shunt__conn_close_keep(c);
	shunt__conn_free(c);
}

int shunt__conn_renew(struct shunt_conn **cp, int reset)
{
	struct shunt_conn *old = *cp;

	if (reset)
		shunt_seg_reset(&old->seg);
	struct shunt_seg seg = old->seg;
	int rd = old->bell[0], wr = old->bell[1];
	close_fd(atomic_load(&old->pollfd));
	int side = old->side, spin = old->spin_us;
	uint32_t pid = old->pid; /* a parked end never crosses a fork */
	free(old);
	*cp = NULL;
	/* On failure conn_init releases the segment and doorbells: the peer
	 * sees the hang-up and drops its end too. */
	return conn_init(cp, side, &seg, rd, wr, spin, pid);
}

void shunt__conn_set_parked(struct shunt_conn *c, uint32_t gen)
{
	/* Release: every access of ours to the segment comes before it. */
	atomic_store_explicit(&c->seg.ctl->parked[c->side], gen, memory_order_release);
}

uint32_t shunt__conn_peer_parked(const struct shunt_conn *c)
{
	/* Acquire: pairs with the peer's release in shunt__conn_set_parked. */
	return atomic_load_explicit(&c->seg.ctl->parked[1 - c->side], memory_order_acquire);
}

void shunt__conn_set_linked(struct shunt_conn *c)
{
	atomic_store_explicit(&c->seg.ctl->linked, 1, memory_order_relaxed);
}

int shunt__conn_linked(const struct shunt_conn *c)
{
	return atomic_load_explicit(&c->seg.ctl->linked, memory_order_relaxed) == 1;
}

void shunt__conn_check_peer(struct shunt_conn *c)
{
	/* poll() consumes nothing: a thread asleep on the bell keeps its ring. */
	struct pollfd p = { .fd = c->bell[1], .events = 0 };

	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)))
		peer_hung_up(c);
}
