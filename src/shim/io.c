/*
 * io.c - the data calls on a tracked TCP socket, with TCP's semantics.
 *
 * A socket on TCP goes straight to the kernel and is counted (move.c).  A
 * moved one reads the TCP stream up to the peer's switch offset, then its
 * ring; it sends on TCP until its own switch, then into its ring.  Each
 * direction is serialised by a lock in the family's slot, so threads and
 * forked processes may share a connection; no lock is held across a call
 * into the kernel's TCP paths.  Once the peer has closed, sends go to the
 * kernel's socket again: the first "succeeds" and the next fail with
 * EPIPE, exactly as TCP's do, because they are TCP's.
 *
 * Every function returns what libc's call would, with errno set as it
 * would.
 */
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "copy.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"
#include "wake.h"

#define GO_RING (-4096) /* the TCP part is over: carry on in the ring */
#define RETRY (-4097)   /* going back to TCP (back.c): look again from the top */

static struct tslot *S(struct tsock *t)
{
	return t->slot;
}

static uint32_t phase_of(struct tsock *t)
{
	return atomic_load_explicit(&S(t)->phase, memory_order_acquire);
}

SHUNT_FORK_TEXT int shim_moved(struct tsock *t)
{
	return atomic_load_explicit(&S(t)->state, memory_order_acquire) == SLOT_MOVED &&
	       t->mapped;
}

#define moved shim_moved

/* The bits of `events` a moved socket's rings answer in phase ph (not
 * those of a direction that went back to TCP). */
static int ring_bits(int events, uint32_t ph)
{
	return ((ph & (PH_RX_RING | PH_RX_PLAIN)) == PH_RX_RING ? events & (POLLIN | POLLRDHUP)
								  : 0) |
	       ((ph & (PH_TX_RING | PH_TX_BACK)) == PH_TX_RING ? events & POLLOUT : 0);
}

static int64_t deadline_of(struct tsock *t, int flags, int tx)
{
	if ((flags & MSG_DONTWAIT) || (atomic_load(&S(t)->flags) & TF_NONBLOCK))
		return 0;
	int64_t to = atomic_load(tx ? &S(t)->sndtimeo_ns : &S(t)->rcvtimeo_ns);
	if (to < 0)
		return 0; /* a negative timeout set: no wait, as the kernel's */
	return to > 0 ? shunt_now_ns() + to : SHUNT_NEVER;
}

/* A direction's lock for a call that may not wait (dl 0), -EAGAIN
 * without it when such a call would wait anyway.  A blocking call holds
 * the lock across its wait (bell.c, lead), for as long as the peer is
 * quiet: a non-blocking recv() or send() in another thread waited as long
 * (TCP's returns at once), and one from a signal handler that interrupted
 * the holder waited for ever (a helper's attacks; t_shim_data
 * nonblock_beside_blocked, nonblock_in_handler).  One that could go on waits for the lock a
 * while (the holder is copying, or waking), then says EAGAIN rather than
 * wait: it may not. */
#define NOWAIT_TRIES 256

/*
 * A call that may wait, behind another call of its direction (another
 * thread's, or a process's of the family), waits for the lock as for the
 * ring: until its deadline (SO_RCVTIMEO, SO_SNDTIMEO: -EAGAIN), and a
 * cancellation acts on it.  It waited for the holder alone: a recv with a
 * 1 s timeout beside a reader asleep for 2.7 s returned after 2.7 s, and a
 * cancelled one was joined as late (a helper's reproducers, 12-07).  The
 * wait is in slices, each a timed lock, so that a cancellation is seen
 * within one.  A signal does not end it (the lock's wait restarts in
 * libc): design.md, Limits.
 */
#define LOCK_SLICE_NS (50ll * 1000000)

/* The end of a slice of the wait, left ns at most, on the clock
 * pthread_mutex_timedlock reads (CLOCK_REALTIME: the one a sanitizer's
 * interceptor knows; a step of that clock moves one slice's end only). */
static void slice_end(struct timespec *ts, int64_t left)
{
	int64_t d = left < LOCK_SLICE_NS ? left : LOCK_SLICE_NS;

	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += (time_t)(d / 1000000000);
	ts->tv_nsec += (long)(d % 1000000000);
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

static int lock_until(pthread_mutex_t *mu, int64_t dl)
{
	int rc = pthread_mutex_trylock(mu);

	while (rc == EBUSY) {
		int64_t now = shunt_now_ns();
		if (now >= dl)
			return -EAGAIN;
		if (shim_in_cancel_point())
			pthread_testcancel();
		struct timespec ts;
		slice_end(&ts, dl - now);
		rc = pthread_mutex_timedlock(mu, &ts);
		if (rc == ETIMEDOUT)
			rc = EBUSY;
	}
	if (rc == EOWNERDEAD)
		pthread_mutex_consistent(mu);
	else if (rc != 0)
		shim_lock(mu); /* not a wait's error: as before */
	return 0;
}

static int lock_for(pthread_mutex_t *mu, struct shunt_end *e, uint32_t bits, int64_t dl)
{
	if (dl != 0)
		return lock_until(mu, dl);
	for (int i = 0; i < NOWAIT_TRIES; i++) {
		int rc = pthread_mutex_trylock(mu);
		if (rc == EOWNERDEAD)
			pthread_mutex_consistent(mu);
		if (rc == 0 || rc == EOWNERDEAD)
			return 0;
		if (shunt_end_would_wait(e, bits))
			return -EAGAIN;
		sched_yield();
	}
	return -EAGAIN;
}

/* The kernel's pending error, taken (SO_ERROR): one told with the ring's
 * is not told again. */
static int kernel_error(int fd)
{
	int err = 0;
	unsigned len = sizeof(err);

	return sys_getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 ? err : 0;
}

/* The end of the stream after our shutdown both ways, unless the kernel
 * reset on the peer's data meanwhile (shut_both): then that, once.  Not
 * the reset our sends drew after the peer's clean close: its FIN came
 * before it, and TCP's read meets that FIN first, the error waiting for a
 * send (a read said ECONNRESET: tests/diff_shim.c seed 185145002601675,
 * 150 steps). */
static ssize_t shut_reset(struct tsock *t, int fd)
{
	int64_t st = shunt_end_peer_state(END(t));

	if (atomic_load(&S(t)->reset_told) ||
	    (atomic_load(&S(t)->sent_after) && st >= 0 &&
	     (st & (SHUNT_ST_CLOSED | SHUNT_ST_RESET)) == SHUNT_ST_CLOSED))
		return 0;
	if (atomic_load(&S(t)->kreset)) /* a doorbell's read took it */
		return -ECONNRESET;
	return kernel_error(fd) == ECONNRESET ? -ECONNRESET : 0; /* told by rx_result */
}

/* A ring read's n (>= 0, `done` before it) after our shutdown both ways:
 * an option that needs TCP, set since, acts from the end of the peer's
 * ring on (back.c, shim_back_past_shut: RETRY, reads are the kernel's);
 * at the end a read meets the kernel's reset, one of no bytes too unless
 * bytes wait (TCP's target of one byte: it copies none of them then). */
static ssize_t after_shut_both(struct tsock *t, int fd, ssize_t n, size_t len, size_t done)
{
	if ((atomic_load(&S(t)->flags) & TF_OPTS) && shim_back_past_shut(t, fd) && n + done == 0)
		return RETRY;
	if (n == 0 && !done && (len || shunt_end_readable(END(t)) == 0))
		return shut_reset(t, fd);
	return n;
}

/* A ring read's n (>= 0, `done` before it) with an option that needs TCP
 * set while the closed peer's ring held bytes for us: it acts from the
 * ring's end on (back.c, shim_back_past_close: RETRY, reads are the
 * kernel's: its end of stream or its reset). */
static ssize_t after_peer_close(struct tsock *t, int fd, ssize_t n, size_t done)
{
	if ((atomic_load(&S(t)->flags) & TF_OPTS) && shim_back_past_close(t, fd) &&
	    n + (ssize_t)done == 0)
		return RETRY;
	return n;
}

/* A ring read's n (>= 0), after a shutdown both ways at either end. */
static ssize_t after_closed(struct tsock *t, int fd, ssize_t n, size_t len, size_t done)
{
	if (shunt_end_state(END(t)) & SHUNT_ST_CLOSED)
		return after_shut_both(t, fd, n, len, done);
	return after_peer_close(t, fd, n, done);
}

/* Errors of the ring, as TCP gives them. */
static ssize_t rx_result(struct tsock *t, int fd, ssize_t n)
{
	if (n == -EPROTO)
		n = -ECONNRESET; /* the peer broke the rules: a reset (logged) */
	/* TCP reports a reset once; after that the socket reads end of stream.
	 * The kernel's socket saw the same reset: it is read now, with ours. */
	if (n == -ECONNRESET)
		log_info("fd %d: a reset from the ring (peer state %#x, gone %d, %lld of our bytes "
			 "unread by it, kernel reset %u)", fd,
			 (unsigned)atomic_load(&END(t)->peer->state), atomic_load(&END(t)->peer_gone),
			 (long long)shunt_end_unread_by_peer(END(t)), atomic_load(&S(t)->kreset));
	if (n == -ECONNRESET && atomic_exchange(&S(t)->reset_told, 1)) {
		n = 0;
	} else if (n == -ECONNRESET) {
		kernel_error(fd);
		atomic_store(&S(t)->kreset, 0);
	}
	return shim_err(n);
}

static void touched(struct tsock *t)
{
	atomic_fetch_add_explicit(&t->io_gen, 1, memory_order_relaxed);
}

/* --- Receiving -------------------------------------------------------------- */

static void rx_ring_from_now(struct tsock *t)
{
	atomic_fetch_or_explicit(&S(t)->phase, PH_RX_RING, memory_order_release);
	touched(t);
}

/* Up to n bytes between offset `from` of what a read put in iov and buf:
 * into buf, or (put) out of it. */
static size_t iov_xfer(const struct iovec *iov, int niov, size_t from, uint8_t *buf, size_t n,
		       int put)
{
	size_t base = 0, k = 0;

	for (int i = 0; i < niov && k < n; base += iov[i++].iov_len) {
		if (from + k >= base + iov[i].iov_len)
			continue;
		size_t at = from + k - base, m = SHUNT_MIN(iov[i].iov_len - at, n - k);
		uint8_t *p = (uint8_t *)iov[i].iov_base + at;
		memcpy(put ? p : buf + k, put ? buf + k : p, m);
		k += m;
	}
	return k;
}

static size_t iov_copy(const struct iovec *iov, int niov, size_t from, uint8_t *out, size_t n)
{
	return iov_xfer(iov, niov, from, out, n, 0);
}

/* n bytes of what a read put in iov, from offset `from` down to `to`. */
static void iov_move(const struct iovec *iov, int niov, size_t to, size_t from, size_t n)
{
	uint8_t tmp[4096];

	for (size_t k = 0; k < n; k += sizeof(tmp)) {
		size_t m = iov_copy(iov, niov, from + k, tmp, SHUNT_MIN(n - k, sizeof(tmp)));
		iov_xfer(iov, niov, to + k, tmp, m, 1);
	}
}

/* Bytes `from` to `to` of what a read put in iov lie past the switch
 * offset: the rest of the peer's proof if it sends one (between VMs:
 * meet_vm.c), then rings.  0, -1 (the end is broken), or -2: no proof,
 * and the connection is plain TCP again: all of it is data. */
static int past_x(struct tsock *t, int fd, const struct iovec *iov, int niov, size_t from,
		  size_t to)
{
	size_t base = 0;

	if (shim_proof_pending(S(t)) && from < to) {
		uint8_t head[sizeof(S(t)->vm.got)];
		size_t k = iov ? iov_copy(iov, niov, from, head, SHUNT_MIN(to - from, sizeof(head)))
			       : SHUNT_MIN(to - from, sizeof(head));
		long proof = shim_proof_take(t, iov ? head : NULL, k);
		if (proof < 0)
			return (int)proof;
		from += (size_t)proof;
	}
	for (int i = 0; iov && i < niov && base < to; base += iov[i++].iov_len) {
		const uint8_t *p = iov[i].iov_base;
		for (size_t k = from > base ? from - base : 0; k < iov[i].iov_len && base + k < to; k++) {
			if (p[k] == S(t)->bell)
				continue;
			shim_behind_back(S(t), fd);
			return -1;
		}
	}
	return 0;
}

/* Up to n of the ring's bytes now, into iov from offset `to`: what was
 * taken, or < 0 (another thread reads the ring: not now). */
static ssize_t ring_take_now(struct tsock *t, int fd, const struct iovec *iov, int niov, size_t to,
			     size_t n)
{
	struct shunt_bell b = shim_bell(t, fd);
	uint8_t *tmp = shim_scratch(n);
	ssize_t k = -ENOMEM;

	if (tmp && shim_trylock(&S(t)->rx_mu) == 0) {
		k = shunt_end_recv(END(t), &b, tmp, n, 0);
		shim_unlock(&S(t)->rx_mu);
	}
	if (k > 0)
		iov_xfer(iov, niov, to, tmp, (size_t)k, 1);
	shim_scratch_free(tmp, n);
	return k;
}

/*
 * The peer's data that a read took past its way back, bytes [from, from
 * + more) of it, while the peer's ring still has data for us: it waits in
 * the ring, behind that data (back.c), and the read returns what came
 * before the peer's switch (`data` bytes).  When the ring has no room for
 * it, the read takes the ring's bytes first, into its buffer right after
 * that data (the doorbells' and the new data's place: room enough), which
 * makes room for the new data behind the rest.
 */
static ssize_t behind_ring(struct tsock *t, int fd, const struct iovec *iov, int niov,
			   size_t from, size_t more, uint64_t at, size_t data)
{
	uint64_t head;
	uint8_t *p = iov ? shim_back_append_begin(t, at, more, &head) : NULL;
	uint8_t *keep = p || !iov ? NULL : shim_scratch(more);
	ssize_t took = 0;

	if (keep) {
		iov_copy(iov, niov, from, keep, more);
		took = ring_take_now(t, fd, iov, niov, data, from + more - data);
		p = took >= 0 ? shim_back_append_begin(t, at, more, &head) : NULL;
	}
	if (!p) {
		shim_scratch_free(keep, more);
		log_error("fd %d: a read took the peer's data past its way back to TCP, and its "
			  "ring, not read yet, cannot take it: the connection is reset", fd);
		shunt_end_fail(END(t), -EPROTO);
		return shim_err(-ECONNRESET);
	}
	if (keep)
		memcpy(p, keep, more);
	else
		iov_copy(iov, niov, from, p, more);
	shim_scratch_free(keep, more);
	shim_back_append_end(t, head, more);
	log_debug("fd %d: a read took the stream past the peer's way back at %llu: %zu bytes of "
		  "its data go behind its ring (%zd of the ring's taken first)", fd,
		  (unsigned long long)at, more, took);
	rx_ring_from_now(t);
	size_t n = data + (size_t)took;
	return n ? (ssize_t)n : GO_RING;
}

/*
 * A read that was in the kernel since before the peer's switch, and a
 * while more on a busy machine, took the stream past where the peer went
 * back to TCP (back.c): its data up to X, its doorbells up to its
 * back_tcp, its data again.  The read is exact without the doorbells:
 * once nothing of its ring is left for us, what follows them moves down
 * right after the data before X, and the stream is plain again; until
 * then it waits behind the ring.  RETRY when this is not such a read.
 */
static ssize_t past_back(struct tsock *t, int fd, const struct iovec *iov, int niov, ssize_t n,
			 uint64_t before, size_t data)
{
	uint64_t x = atomic_load(&S(t)->x_peer), resume;
	int how = shim_back_resumes(t, &resume);

	if (!how || resume < x || before + (uint64_t)n <= resume)
		return RETRY;
	size_t from = resume > before ? (size_t)(resume - before) : 0;
	if (from < data || past_x(t, fd, iov, niov, data, from) < 0)
		return shim_err(-ECONNRESET);
	size_t more = (size_t)n - from;
	if (how == 2)
		return behind_ring(t, fd, iov, niov, from, more, resume, data);
	if (iov)
		iov_move(iov, niov, data, from, more);
	log_debug("fd %d: a read took the stream past the peer's way back at %llu: %zu bytes of "
		  "its data there", fd, (unsigned long long)resume, more);
	shim_back_rx_done(t, fd);
	return (ssize_t)(data + more);
}

/*
 * MSG_WAITALL: TCP's read waits for all it was asked, unless the end, an
 * error, a signal or the timeout comes first.  A read of the stream that
 * stops at the peer's switch offset, or that asked the kernel without
 * MSG_WAITALL lest it wait for bytes now going by the ring, returns short
 * for neither reason: it says so here, and the read goes on for the rest
 * (a reader of 200000 bytes got 40000, then 4000s, and took them for
 * frames: t_shim_data waitall_across_switch).
 */
static _Thread_local int stopped_short;

static int waitall_goes_on(int flags)
{
	int was = stopped_short;

	stopped_short = 0;
	return was && (flags & (MSG_WAITALL | MSG_PEEK | MSG_DONTWAIT)) == MSG_WAITALL;
}

/*
 * A read of the TCP stream took n bytes from offset `before` into iov.
 * Once the peer switched, the stream is data up to its offset x and
 * doorbells after (between VMs, its proof first: meet_vm.c): the data is
 * the program's, the doorbells are not (the peer publishes x before its
 * first doorbell, so a read that took one sees x here).  Returns the
 * data, GO_RING when there was none, or RETRY when what followed x was
 * no proof and the connection is plain TCP again.
 */
static ssize_t tcp_cut(struct tsock *t, int fd, const struct iovec *iov, int niov, ssize_t n,
		       uint64_t before, int flags)
{
	if (!shim_peer_switched(t))
		return n;
	uint64_t x = atomic_load(&S(t)->x_peer);
	if (before + (uint64_t)n < x)
		return n;
	size_t data = before >= x ? 0 : (size_t)(x - before);
	log_debug("fd %d: the TCP stream ends at %llu: a read of %zd at %llu keeps %zu", fd,
		  (unsigned long long)x, n, (unsigned long long)before, data);
	/* The doorbells this read took may include another wait's: the
	 * peer's switch rings once, then its reads ring for room, and one
	 * read of the stream can take both.  A poll for room in another
	 * thread, woken with this read, would find the stream empty again and
	 * sleep on: such waits look again, as after the leader's take (by
	 * reasoning; no test makes the two bytes come together). */
	if (!(flags & MSG_PEEK)) {
		if ((size_t)n > data)
			shim_kick_others(S(t));
		ssize_t k = past_back(t, fd, (flags & MSG_TRUNC) ? NULL : iov, niov, n, before, data);
		if (k != RETRY)
			return k;
		int px = past_x(t, fd, (flags & MSG_TRUNC) ? NULL : iov, niov, data, (size_t)n);
		if (px == -2)
			return n; /* no proof came: plain TCP again, all of it data */
		if (px < 0)
			return shim_err(-ECONNRESET);
		/* Part of a proof still to come: data first, else wait for it. */
		if (shim_proof_pending(S(t))) {
			if (data) {
				stopped_short = 1;
				return (ssize_t)data;
			}
			int rc = shim_proof_recv(t, fd, deadline_of(t, flags, 0));
			if (rc == -ENOTCONN)
				return RETRY; /* no proof came: plain TCP again */
			if (rc < 0)
				return shim_err(rc);
		}
		rx_ring_from_now(t);
	}
	stopped_short = data != 0;
	return data ? (ssize_t)data : GO_RING;
}

/*
 * Our reads' count of the peer's TCP stream, where its switch looks
 * (move.c, shim_peer_before_x): raised, never lowered, as reads in several
 * threads or processes of a family come back in any order.  A read adds
 * to the count, then looks for rx_pub (both seq_cst); the meeting sets
 * rx_pub, then publishes the count, then opens: so a read that found no
 * rx_pub is in what the meeting published before the peer can look.
 */
SHUNT_FORK_TEXT void shim_rx_publish(struct tsock *t)
{
	if (!atomic_load(&t->rx_pub)) /* not met yet, or not on this host */
		return;
	atomic_fetch_add(&t->publishing, 1);
	_Atomic uint64_t *p = atomic_load(&t->rx_pub); /* again: stop() */
	if (p) {
		uint64_t v = atomic_load(&S(t)->rx_tcp);
		uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
		while (cur < v && !atomic_compare_exchange_weak(p, &cur, v))
			;
	}
	atomic_fetch_sub(&t->publishing, 1);
}

void shim_rx_publish_from(struct tsock *t, _Atomic uint64_t *where)
{
	atomic_store(&t->rx_pub, where);
	shim_rx_publish(t);
}

void shim_rx_publish_stop(struct tsock *t)
{
	atomic_store(&t->rx_pub, NULL);
	while (atomic_load(&t->publishing)) /* a few instructions: no unmap under them */
		sched_yield();
}

/* Where a read of n > 0 bytes of the stream began; counted unless peeked. */
SHUNT_FORK_TEXT static uint64_t took(struct tsock *t, ssize_t n, int flags)
{
	if (flags & MSG_PEEK)
		return atomic_load(&S(t)->rx_tcp);
	uint64_t before = atomic_fetch_add(&S(t)->rx_tcp, (uint64_t)n);
	shim_rx_publish(t);
	return before;
}

/*
 * A read of a connection on TCP came back from the kernel with n.  It is
 * counted; and if the connection moved while the read was in the kernel,
 * what it took is cut at the peer's switch as in tcp_part, and a read
 * that took only doorbells goes on in the ring: it was the peer's first
 * doorbell that woke it, and a doorbell is no data.
 */
SHUNT_FORK_TEXT uint32_t shim_rx_enter(struct tsock *t, int flags)
{
	atomic_fetch_add(&t->kreads, 1);
	uint32_t was = atomic_fetch_add(&S(t)->rx_inflight, 1);
	/* Two reads in the kernel at once (threads, or processes of a family,
	 * reading one socket): the peer's switch doorbell ends one of them,
	 * and the other slept on for good, its data in the ring, where TCP's
	 * FIN ends every read (a helper's reproducer: 2 to 4 threads
	 * reading to the end, 1 run in 4).  Such a connection stays on TCP.
	 * A peek that may not wait takes no doorbell and sleeps on none: it
	 * does not count (one kept a connection on TCP for good); a blocking
	 * one slept on as a read did (a helper's reproducer, 1 run in 7). */
	if (was > 0 && (!(flags & MSG_PEEK) || deadline_of(t, flags, 0) != 0) &&
	    !(atomic_load_explicit(&S(t)->flags, memory_order_relaxed) & TF_READERS))
		atomic_fetch_or(&S(t)->flags, TF_READERS);
	return was;
}

SHUNT_FORK_TEXT static void rx_left(struct tsock *t)
{
	atomic_fetch_sub(&S(t)->rx_inflight, 1);
	atomic_fetch_sub(&t->kreads, 1);
}

static int peer_clean(struct tsock *t);

/* The kernel's read, a cancellation point: a read cancelled inside left
 * its count raised for good, and the reads after it waited their turn
 * behind it (tcp_turn; a helper's review), the waits took no doorbell
 * (kreads).  One thread alone is not cancelled by another: its reads skip
 * the handler's setjmp. */
static void rx_cancelled(void *t)
{
	rx_left(t);
}

SHUNT_FORK_TEXT static ssize_t kread(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	ssize_t n;

	if (__libc_single_threaded)
		return REAL(recvfrom)(fd, buf, len, flags, NULL, NULL);
	pthread_cleanup_push(rx_cancelled, t);
	n = REAL(recvfrom)(fd, buf, len, flags, NULL, NULL);
	pthread_cleanup_pop(0);
	return n;
}

ssize_t shim_krecvmsg(struct tsock *t, int fd, struct msghdr *m, int flags)
{
	ssize_t n;

	if (__libc_single_threaded)
		return REAL(recvmsg)(fd, m, flags);
	pthread_cleanup_push(rx_cancelled, t);
	n = REAL(recvmsg)(fd, m, flags);
	pthread_cleanup_pop(0);
	return n;
}

/*
 * A read of the stream met the kernel's reset.  If the peer took all we
 * sent and closed (or died) without a reset of its own, TCP's peer would
 * have sent a FIN: only the doorbells it had not taken, one on its way
 * when it closed, made its kernel reset (the soak: a client read all and
 * then ECONNRESET where TCP ends the stream).  End of stream then, and
 * the reset waits for a send, as TCP's after a FIN (after_close).  Only
 * once our reads took all the peer's TCP bytes, up to its switch offset:
 * short of it, the reset threw away bytes it had sent, and that is loud
 * (a helper's uvloop clients read a prefix, then a quiet end).
 */
static ssize_t reset_as_fin(struct tsock *t, ssize_t n)
{
	if (n < 0 && errno == ECONNRESET && moved(t) && (phase_of(t) & PH_TX_RING) &&
	    !shim_peer_short_of_x(S(t)) && shim_peer_switched(t) &&
	    atomic_load(&S(t)->rx_tcp) >= atomic_load(&S(t)->x_peer) && peer_clean(t)) {
		atomic_store(&S(t)->kreset, 1);
		return 0;
	}
	return n;
}

SHUNT_FORK_TEXT ssize_t shim_recv_took(struct tsock *t, int fd, const struct iovec *iov, int niov, ssize_t n,
		       int flags)
{
	uint64_t before = n > 0 ? took(t, n, flags) : 0;

	rx_left(t); /* counted: shim_rx_enter */

	shim_count(t, fd, n > 0 ? (uint64_t)n : 0, 0);
	if (n < 0 && shim_moved_now(t))
		return reset_as_fin(t, n);
	if (n <= 0 || !shim_moved_now(t))
		return n;
	ssize_t k = tcp_cut(t, fd, iov, niov, n, before, flags);
	return k == GO_RING || k == RETRY ? shim_recvv(t, fd, iov, niov, flags) : k;
}

SHUNT_FORK_TEXT static ssize_t plain_recv(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	struct iovec v = { buf, len };

	shim_rx_enter(t, flags);
	return shim_recv_took(t, fd, &v, 1, kread(t, fd, buf, len, flags),
			      flags);
}

/*
 * One read at a time in the kernel on the stream, until the ring is ours:
 * the peer's switch doorbell ends one read, and a second asleep beside it
 * slept on for good, its data in the ring (a helper's reproducer: two
 * threads reading to the end).  Called when ours found `seen` others
 * inside (and left again): a read that may wait waits its turn (RETRY: it looks
 * again from the top), one that may not says EAGAIN (the other read takes
 * what comes).  A turn is waited for TURN_NS at most, then the read goes
 * in: a count that a cancelled read or a killed process left raised held
 * every read (a helper's review), and that bounds how far a wait passes
 * its SO_RCVTIMEO; once waited out, the connection's reads take turns
 * no more.  EINTR as a read's (shim_restarts: a timed futex wait
 * is never restarted).  0: go in.
 */
#define TURN_NS (100ll * 1000000)
static _Thread_local int64_t turn_since;

static ssize_t tcp_turn(struct tsock *t, int flags, uint32_t seen)
{
	int64_t dl = deadline_of(t, flags, 0), now = shunt_now_ns();

	if (dl == 0 || (dl != SHUNT_NEVER && now >= dl))
		return shim_err(-EAGAIN);
	if (!turn_since)
		turn_since = now;
	if (now - turn_since > TURN_NS) {
		atomic_store(&t->no_turns, 1); /* once: a count left raised */
		return 0;
	}
	if (sys_futex_wait(&S(t)->rx_inflight, seen, &(struct timespec){ 0, 1000000 }) == -EINTR &&
	    !shim_restarts()) {
		turn_since = 0;
		return shim_err(-EINTR);
	}
	return RETRY;
}

/*
 * The part of a read that comes from the TCP stream, before the peer's
 * switch offset x: bounded by x once known, and cut at x when the peer
 * switched while the read waited (its doorbell byte woke it).  Returns the
 * data, or GO_RING when the stream has no more data for us.
 */
static ssize_t tcp_part(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	struct tslot *s = S(t);
	/* Our last read took what the kernel held before this look: a peer
	 * that saw none of it unread rang us, else we see its switch
	 * (move.c, shim_peer_before_x). */
	atomic_thread_fence(memory_order_seq_cst);
	int knew = shim_peer_switched(t);
	size_t want = len;
	uint64_t x = atomic_load(&s->x_peer);

	if (knew) {
		uint64_t off = atomic_load(&s->rx_tcp);
		if (off >= x) {
			int rc = shim_proof_recv(t, fd, deadline_of(t, flags, 0));
			if (rc == -ENOTCONN)
				return RETRY; /* no proof came: plain TCP again */
			if (rc < 0)
				return shim_err(rc);
			log_debug("fd %d: at %llu, the peer's ring starts at %llu", fd,
				  (unsigned long long)off, (unsigned long long)x);
			rx_ring_from_now(t);
			return GO_RING;
		}
		want = (size_t)SHUNT_MIN((uint64_t)len, x - off);
	}
	/* Waiting for all of len could wait for bytes that now go by the ring.
	 * The peer's first doorbell may end this read: no other wait of ours
	 * takes it meanwhile (shim_rx_enter).  Entered, then looked: two
	 * that look first may both go in (a helper's review). */
	uint32_t others = shim_rx_enter(t, flags);
	if (others && !atomic_load_explicit(&t->no_turns, memory_order_relaxed)) {
		rx_left(t); /* not ours: the first one in goes on alone */
		ssize_t turn = tcp_turn(t, flags, others);
		if (turn != 0)
			return turn;
		shim_rx_enter(t, flags);
	}
	turn_since = 0;
	ssize_t n = reset_as_fin(t, kread(t, fd, buf, want, flags & ~MSG_WAITALL));
	uint64_t before = n > 0 ? took(t, n, flags) : 0;
	rx_left(t);
	if (n == 0)
		log_debug("fd %d: end of stream from TCP at %llu (peer's switch %s %llu)", fd,
			  (unsigned long long)atomic_load(&s->rx_tcp), knew ? "at" : "not yet",
			  (unsigned long long)x);
	if (n <= 0)
		return n;
	struct iovec v = { buf, (size_t)n };
	return tcp_cut(t, fd, &v, 1, n, before, flags);
}

/* Bytes off the ring into buf, or dropped (MSG_TRUNC: buf may be NULL). */
static ssize_t ring_take(struct shunt_end *e, struct shunt_bell *b, void *buf, size_t len,
			 int flags, int64_t dl)
{
	return (flags & MSG_TRUNC) ? shunt_end_discard(e, b, len, dl)
				   : shunt_end_recv(e, b, buf, len, dl);
}

/* ring_recv's part under rx_mu; -EXDEV if the ring is not ours to read. */
static ssize_t recv_locked(struct tsock *t, struct shunt_bell *bp, void *buf, size_t len,
			   int flags, int64_t dl)
{
	struct shunt_end *e = END(t);
	ssize_t n;

	if (!moved(t) || (phase_of(t) & PH_RX_PLAIN))
		return -EXDEV;
	len = shim_rx_to_mark(S(t), len); /* TCP's reads stop at the urgent mark */
	if (flags & MSG_PEEK || len == 0) {
		const void *p;
		/* A peek that waits waits for SO_RCVLOWAT's bytes too, as TCP's
		 * (it returned the 10 there of 20: a helper's reproducer). */
		n = (flags & MSG_WAITALL) && len > 1
			    ? shunt_end_peek_min(e, bp, &p, SHUNT_MIN(len, e->seg.cap), dl)
		    : dl != 0 && len ? shunt_end_peek_lowat(e, bp, &p, len, dl)
				     : shunt_end_peek(e, bp, &p, dl);
		/* A read of no bytes that waited out its SO_RCVTIMEO is 0, as
		 * TCP's (one pass of its loop, which waits, then ends with
		 * nothing copied): only one that may not wait says EAGAIN
		 * (t_shim_flags recv_empty_timeout). */
		if (len == 0 && n == -EAGAIN && dl != 0)
			n = 0;
		if (n > 0) {
			n = (ssize_t)SHUNT_MIN((size_t)n, len);
			if (n && !(flags & MSG_TRUNC))
				shunt_copy(buf, p, (size_t)n);
		}
	} else {
		n = ring_take(e, bp, buf, len, flags, dl);
		/* MSG_WAITALL: on until all of it, the end, an error or a
		 * signal (whatever SA_RESTART says: TCP returns what it has).
		 * With MSG_TRUNC too, as TCP's loop drops what it waits for
		 * (it returned the first piece: a helper's reproducer). */
		while ((flags & MSG_WAITALL) && n > 0 && (size_t)n < len) {
			shim_wait_eintr = 1;
			ssize_t k = ring_take(e, bp, buf ? (char *)buf + n : NULL, len - (size_t)n,
					      flags, deadline_of(t, flags, 0));
			shim_wait_eintr = 0;
			/* The ring is no longer ours to read (a way back): the
			 * rest comes by TCP, and the read goes on there.  It
			 * returned what it had (a helper's review, 12-07). */
			if (k == -EXDEV)
				stopped_short = 1;
			if (k <= 0)
				break;
			n += k;
		}
	}
	return n;
}

static ssize_t ring_recv(struct tsock *t, int fd, void *buf, size_t len, int flags,
			 size_t done)
{
	struct shunt_bell b = shim_bell(t, fd);
	struct shunt_end *e = END(t);
	int64_t dl = done ? 0 : deadline_of(t, flags, 0);
	ssize_t n = lock_for(&S(t)->rx_mu, e, SHUNT_WAIT_READ, dl);

	if (n == 0) {
		shim_call_locks(t, &S(t)->rx_mu);
		n = recv_locked(t, &b, buf, len, flags, dl);
		shim_call_locks(t, NULL);
		shim_unlock(&S(t)->rx_mu);
	} else if (len == 0 && dl != 0) {
		n = 0; /* a read of no bytes that waited out its timeout (recv_locked) */
	}
	touched(t);
	if (n == -EXDEV)
		return done ? (ssize_t)done : RETRY;
	if (n == 0 && len)
		log_debug("fd %d: end of stream from the ring (peer state %#x, gone %d)", fd,
			  (unsigned)atomic_load(&e->peer->state), atomic_load(&e->peer_gone));
	if (n >= 0) {
		n = after_closed(t, fd, n, len, done);
		if (n == RETRY)
			return RETRY;
	}
	if (done)
		return n > 0 ? (ssize_t)done + n : (ssize_t)done;
	return rx_result(t, fd, n);
}

/* The peer asked to go back or said its sends went back (with no ask,
 * a peer that wrote one in our word: back.c resets then), or we asked
 * quietly (back.c, back_quietly). */
static int going_back(struct tsock *t)
{
	return shim_peer_leaves(t) || (phase_of(t) & PH_TX_BACK);
}

/* While going back to TCP: 1 when our reads are the kernel's, 0 while
 * the ring still has the peer's data (or, for a call that may not wait,
 * `flags` or the socket's, while the doorbells before the peer's TCP data
 * are not all there), or a negative errno.  A non-blocking read waits for
 * no doorbell: a peer that claims more than it rang held it 5 s
 * (t_shim_hostile bell_lie_nonblock), where TCP's returns at once; what it
 * waits for follows them on the stream, so it is not there either. */
static int rx_back(struct tsock *t, int fd, int flags)
{
	if (phase_of(t) & PH_RX_PLAIN)
		return 1;
	if (!going_back(t))
		return 0;
	if (shim_back_answer(t, fd))
		shim_back_answered(t, fd);
	return shim_back_rx(t, fd, deadline_of(t, flags, 0) != 0);
}

/* The peer asked to go back to TCP: what can be done now (an answer
 * waits a moment for the asker's BACK, back.c shim_back_answered; not
 * under an epoll set's lock). */
static void back_steps(struct tsock *t, int fd)
{
	if (shim_back_answer(t, fd))
		shim_epoll_answered(t, fd);
	else
		shim_back_tx(t, fd, 0);
	shim_back_rx(t, fd, 0);
}

/* A look again from the top, for a call that found the connection
 * between the ring and TCP: a short nap, so that it does not spin. */
static void again(int *tries)
{
	if ((*tries)++)
		nanosleep(&(struct timespec){ 0, 200000 }, NULL);
}

int shim_back_pending(struct tsock *t)
{
	return (phase_of(t) & (PH_TX_BACK | PH_TX_PLAIN)) == PH_TX_BACK;
}

/* Back on TCP, but what the peer left unread in our ring is still on its
 * way: a read that would wait keeps sending it meanwhile (the peer may
 * wait for it before it answers). */
static ssize_t recv_flushing(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	int64_t dl = deadline_of(t, flags, 0);
	struct timespec ts;

	while (shim_back_pending(t)) {
		ssize_t n = REAL(recvfrom)(fd, buf, len, flags | MSG_DONTWAIT, NULL, NULL);
		if (n >= 0 || errno != EAGAIN || dl == 0)
			return n;
		if (shim_back_tx(t, fd, 0) == 0)
			break;
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
		int rc = sys_ppoll(&p, 1, shunt_left(dl, &ts));
		if (rc < 0 && rc != -EINTR)
			return shim_err(rc);
		if (rc == 0)
			return shim_err(-EAGAIN);
	}
	return REAL(recvfrom)(fd, buf, len, flags, NULL, NULL);
}

/*
 * At the peer's offset the stream has nothing more for us: our reads are
 * the ring's from now (between VMs, once a read took the peer's proof,
 * meet_vm.c; till then the kernel says when it is there to read).  1 if
 * they are.  A read of the stream that stopped short there goes on in the
 * ring, as a socket's read takes all that is there: returned short, it read
 * as "nothing more" to an edge-triggered reader (nginx reading its
 * upstream), which then waited for an edge that the ring's data, there
 * already, would not give: a 60 s stall and a cut response.
 */
int shim_ring_at_x(struct tsock *t)
{
	if (!(phase_of(t) & PH_RX_RING) && shim_peer_switched(t) &&
	    atomic_load(&S(t)->rx_tcp) >= atomic_load(&S(t)->x_peer) && !shim_proof_pending(S(t)))
		rx_ring_from_now(t);
	return (phase_of(t) & PH_RX_RING) != 0;
}

/*
 * A read that took the ring to its end while the peer goes back to TCP:
 * the peer's TCP bytes there now go on in it, as a socket's read takes
 * all that is there (it returned the ring's alone: tests/diff_shim.c,
 * t_shim_flags fionread_peer_back).  What `got` took is returned whatever
 * the kernel says.
 */
static ssize_t past_ring_end(struct tsock *t, int fd, char *buf, size_t len, size_t got,
			     int flags)
{
	if ((flags & MSG_PEEK) && going_back(t) && (ssize_t)got == shunt_end_readable(END(t)) &&
	    shim_back_queued(t, fd))
		return (ssize_t)(got + shim_back_peek_past(t, fd, buf ? buf + got : NULL, len - got,
							   flags & MSG_TRUNC));
	if ((flags & MSG_PEEK) || !going_back(t) || !shim_back_queued(t, fd) ||
	    rx_back(t, fd, MSG_DONTWAIT) <= 0)
		return (ssize_t)got;
	int err = errno;
	/* MSG_TRUNC (no buffer, bytes dropped) too: it stopped at the ring's
	 * end, 7 bytes of 1500 (tests/diff_shim.c seed 217602494426441). */
	ssize_t k = REAL(recvfrom)(fd, buf ? buf + got : NULL, len - got, flags | MSG_DONTWAIT,
				   NULL, NULL);
	errno = err;
	return k > 0 ? (ssize_t)got + k : (ssize_t)got;
}

/* A peek whose part of the stream reached the peer's switch offset: the
 * ring's first bytes come next, and a peek takes none of either, so it
 * looks on in the ring, as TCP's shows all its socket holds.  Stopped at
 * x, it came back short, with MSG_WAITALL for good: the ring was never
 * looked at until a read took the stream to x (t_shim_data peek_across_x:
 * 1000 of 1500 bytes). */
static int peek_reached_x(struct tsock *t, int flags, size_t n)
{
	return (flags & MSG_PEEK) && shim_peer_switched(t) &&
	       atomic_load(&S(t)->rx_tcp) + n == atomic_load(&S(t)->x_peer);
}

static ssize_t moved_recv(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	shim_count_moved_call(t);
	shim_switch_tx_reader(t, fd);
	int rb = rx_back(t, fd, flags);

	if (rb > 0)
		return recv_flushing(t, fd, buf, len, flags);
	if (rb < 0)
		return rx_result(t, fd, -ECONNRESET);
	size_t done = 0;
	if (!(phase_of(t) & PH_RX_RING) && len) {
		ssize_t n = tcp_part(t, fd, buf, len, flags);
		if (n != GO_RING) {
			if (n <= 0 || (size_t)n == len)
				return n;
			int at_x = peek_reached_x(t, flags, (size_t)n);
			if ((flags & MSG_PEEK) && !(flags & MSG_WAITALL) && !at_x)
				return n;
			done = (size_t)n;
			if (!at_x && !shim_ring_at_x(t)) {
				stopped_short = 1; /* asked without MSG_WAITALL */
				return (ssize_t)done;
			}
		}
	}
	ssize_t n = ring_recv(t, fd, (char *)buf + done, len - done, flags, done);
	return n > 0 && (size_t)n < len ? past_ring_end(t, fd, buf, len, (size_t)n, flags) : n;
}

SHUNT_FORK_TEXT static ssize_t recv_once(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	if (flags & MSG_WAITALL) /* only these look at it: no TLS access for others */
		stopped_short = 0;
	for (int tries = 0;; again(&tries)) {
		if (!moved(t))
			return plain_recv(t, fd, buf, len, flags);
		ssize_t n = moved_recv(t, fd, buf, len, flags);
		if (n != RETRY)
			return n;
	}
}

SHUNT_FORK_TEXT ssize_t shim_recv(struct tsock *t, int fd, void *buf, size_t len, int flags)
{
	/* What the ring does not carry is the kernel's: no error is queued,
	 * no urgent byte ever arrives there. */
	if (flags & (MSG_ERRQUEUE | MSG_OOB))
		return REAL(recvfrom)(fd, buf, len, flags, NULL, NULL);
	if (len && !(flags & MSG_TRUNC) && shim_bad_ptr(buf))
		return shim_err(-EFAULT);
	ssize_t n = recv_once(t, fd, buf, len, flags);

	while ((flags & MSG_WAITALL) && n > 0 && (size_t)n < len && waitall_goes_on(flags)) {
		shim_wait_eintr = 1;
		ssize_t k = recv_once(t, fd, buf ? (char *)buf + n : NULL, len - (size_t)n, flags);
		shim_wait_eintr = 0;
		if (k <= 0)
			break; /* what it has, as TCP; an error comes again */
		n += k;
	}
	return n;
}

/* A piece after the first met the reset, which the bytes before it leave
 * to the next call, as TCP's one recvmsg does (it copies them and leaves
 * the socket's error: SO_ERROR and poll said none after such a readv,
 * tests/diff_shim.c seed 273114627652044).  Its kernel's part is taken:
 * ours to tell (kreset). */
static void reset_untold(struct tsock *t)
{
	atomic_store(&S(t)->kreset, 1);
	atomic_store(&S(t)->reset_told, 0);
}

/* Where piece v starts once *skip bytes of a vector are passed over: its
 * offset, and *skip less what the piece covered (recvv_from, sendv_from). */
static size_t piece_past(const struct iovec *v, size_t *skip)
{
	size_t off = SHUNT_MIN(*skip, v->iov_len);

	*skip -= off;
	return off;
}

/* Above every user address (x86-64's 4-level paging; 48 bits elsewhere):
 * where the kernel's access_ok() ends. */
#if defined(__x86_64__)
#define USER_END (((uintptr_t)1 << 47) - 4096)
#else
#define USER_END (((uintptr_t)1 << 48) - 4096)
#endif
#define RW_MAX ((size_t)INT_MAX & ~(size_t)4095) /* the kernel's MAX_RW_COUNT */

/*
 * The bytes of n pieces, or an error, as the kernel's first look at a
 * vector says it before any byte moves (import_iovec): a length negative
 * as a ssize_t is EINVAL, then a piece reaching past user space EFAULT
 * (one piece alone is cut at MAX_RW_COUNT first, import_ubuf); the total
 * is cut at MAX_RW_COUNT.  (Summed up to SSIZE_MAX and EINVAL past it,
 * writev said EINVAL where TCP says EFAULT, and readv took the bytes
 * where TCP takes none: a helper's reproducer.)
 */
static ssize_t iov_len(const struct iovec *iov, int n)
{
	size_t len = 0;

	if (n && shim_bad_ptr(iov))
		return -EFAULT;
	for (int i = 0; i < n; i++)
		if ((ssize_t)iov[i].iov_len < 0)
			return -EINVAL;
	for (int i = 0; i < n; i++) {
		uintptr_t base = (uintptr_t)iov[i].iov_base;
		size_t l = n == 1 ? SHUNT_MIN(iov[i].iov_len, RW_MAX) : iov[i].iov_len;
		if (l > USER_END || base > USER_END - l)
			return -EFAULT;
		len += SHUNT_MIN(l, RW_MAX - len);
	}
	return (ssize_t)len;
}

/* The pieces past the first `done` bytes of iov, each as a recv: the
 * first as asked, the rest only what is there at once, unless
 * MSG_WAITALL. */
static ssize_t recvv_from(struct tsock *t, int fd, const struct iovec *iov, int n, int flags,
			  size_t done)
{
	size_t skip = done;

	for (int i = 0; i < n; i++) {
		size_t off = piece_past(&iov[i], &skip), left = iov[i].iov_len - off;
		char *base = iov[i].iov_base;

		if (left == 0)
			continue;
		ssize_t k = shim_recv(t, fd, base ? base + off : NULL, left,
				      done && !(flags & MSG_WAITALL) ? flags | MSG_DONTWAIT : flags);
		if (k < 0 && done && errno == ECONNRESET && moved(t))
			reset_untold(t);
		if (k <= 0)
			return done ? (ssize_t)done : k;
		done += (size_t)k;
		if ((size_t)k < left || (flags & MSG_PEEK))
			break;
	}
	return (ssize_t)done;
}

/* The most a peek into several pieces looks at: more than the ring and
 * the kernel's buffer hold together, so that it sees all TCP would. */
#define PEEKV_MAX (16u << 20)

/* A peek into several pieces fills them all from the same bytes, as TCP's
 * (a peek of the first piece alone left the rest empty: found by
 * tests/diff_shim.c).  A peek takes nothing and cannot go on where it
 * stopped, so it looks once into scratch memory (no malloc: recvmsg is
 * async-signal-safe) and hands that out across the pieces. */
static ssize_t peekv(struct tsock *t, int fd, const struct iovec *iov, int n, int flags)
{
	size_t total = 0;

	for (int i = 0; i < n; i++)
		total += SHUNT_MIN(iov[i].iov_len, (size_t)PEEKV_MAX);
	total = SHUNT_MIN(total, (size_t)PEEKV_MAX);
	char *b = shim_scratch(total);
	if (!b)
		return shim_err(-ENOMEM);
	ssize_t k = shim_recv(t, fd, b, total, flags);
	for (size_t off = 0, i = 0; k > 0 && !(flags & MSG_TRUNC) && off < (size_t)k; i++) {
		size_t c = SHUNT_MIN(iov[i].iov_len, (size_t)k - off);
		if (c && shim_bad_ptr(iov[i].iov_base)) {
			k = off ? (ssize_t)off : shim_err(-EFAULT);
			break;
		}
		if (c)
			shunt_copy(iov[i].iov_base, b + off, c);
		off += c;
	}
	shim_scratch_free(b, total);
	return k;
}

/* The pieces of a vector that hold room, counted up to `most` (none: a
 * read of no bytes; a peek into more than one is peekv's). */
static int vec_pieces(const struct iovec *iov, int n, int most)
{
	int k = 0;

	for (int i = 0; i < n && k < most; i++)
		k += iov[i].iov_len != 0;
	return k;
}

/* Vectors: the first non-empty piece as a recv; the rest only what is
 * there at once, as readv on a socket returns what it has. */
ssize_t shim_recvv(struct tsock *t, int fd, const struct iovec *iov, int n, int flags)
{
	if (flags & (MSG_ERRQUEUE | MSG_OOB)) {
		struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
		return REAL(recvmsg)(fd, &m, flags);
	}
	if (!moved(t)) {
		struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
		shim_rx_enter(t, flags);
		if (flags & MSG_WAITALL)
			stopped_short = 0;
		ssize_t k = shim_recv_took(t, fd, iov, n, shim_krecvmsg(t, fd, &m, flags), flags);
		return k > 0 && (flags & MSG_WAITALL) && waitall_goes_on(flags)
			       ? recvv_from(t, fd, iov, n, flags, (size_t)k)
			       : k;
	}
	ssize_t len = iov_len(iov, n);
	if (len < 0)
		return shim_err((int)len);
	/* No room at all: a read of no bytes, as TCP's recvmsg (EAGAIN with
	 * nothing there; it returned 0 at once: t_shim_flags recvmsg_empty). */
	int pieces = vec_pieces(iov, n, 2);
	if (pieces == 0)
		return shim_recv(t, fd, NULL, 0, flags);
	return (flags & MSG_PEEK) && pieces > 1 ? peekv(t, fd, iov, n, flags)
						: recvv_from(t, fd, iov, n, flags, 0);
}

/* No bytes to move, and nothing the kernel's look refuses (a piece of no
 * bytes past user space is EFAULT: a helper's review). */
int shim_vec_empty(const struct iovec *iov, int n)
{
	return iov_len(iov, n) == 0;
}

/* --- Sending --------------------------------------------------------------- */

/* A send on TCP while the connection is moving counts as in flight, so
 * that the switch waits for it to leave the kernel (move.c).  0: the
 * switch came first, send by the ring. */
static int tcp_enter(struct tslot *s)
{
	atomic_fetch_add(&s->inflight, 1);
	if (atomic_load(&s->switching) ||
	    (atomic_load_explicit(&s->phase, memory_order_acquire) & PH_TX_RING)) {
		atomic_fetch_sub(&s->inflight, 1);
		return 0;
	}
	return 1;
}

/* Out of the kernel.  A switch of our sends that gave up on this send
 * (move.c, switch_tx: a read's switch looks once) is made now: with no
 * send of ours after it, the peer never saw our switch, and a hand-over
 * waited for it for good (t_shim_fds scm_rights_unread_rung: 2 runs in
 * 10). */
SHUNT_FORK_TEXT static void tcp_leave(struct tsock *t, int fd)
{
	struct tslot *s = S(t);

	atomic_fetch_sub(&s->inflight, 1);
	if (atomic_load_explicit(&s->tx_owed, memory_order_relaxed) &&
	    atomic_exchange(&s->tx_owed, 0))
		shim_switch_tx(t, fd);
}

/* Sends before the move count too: another thread's data call may finish
 * the move and switch while this one is still in the kernel, and what it
 * sent past the switch offset would be taken for doorbells by the peer (a
 * reset) or lost.  Only `switching` is looked at: the phase may be a
 * former image's (exec), with this one's sends on TCP all the same.  The
 * seq_cst increment and load pair with the switch's store of `switching`
 * and load of `inflight` (quiet(), move.c): one of them sees the other. */
SHUNT_FORK_TEXT int shim_plain_enter(struct tsock *t)
{
	struct tslot *s = S(t);

	if (moved(t))
		return 0;
	atomic_fetch_add(&s->inflight, 1);
	if (!atomic_load(&s->switching))
		return 1;
	atomic_fetch_sub(&s->inflight, 1);
	return 0;
}

void shim_plain_leave(struct tsock *t, int fd)
{
	tcp_leave(t, fd);
}

/* Before the move, on TCP: in flight (tcp_enter) while in the kernel, and
 * counted (shim_count, which may take a step of the move) once out. */
static ssize_t plain_send(struct tsock *t, int fd, const void *buf, size_t len, int flags,
			  int count)
{
	ssize_t n = REAL(sendto)(fd, buf, len, flags, NULL, 0);

	tcp_leave(t, fd);
	if (count)
		shim_count(t, fd, 0, n > 0 ? (uint64_t)n : 0);
	return n;
}

/*
 * Both ends full.  A program that writes all it has before it reads, to a
 * peer that echoes as it reads, fills the peer's ring and then its own:
 * both ends wait for room in a ring the other does not read, for good.
 * TCP's buffers hold several MiB of that (an 8 MB echo passes), the rings
 * 2 MiB each way (with 512 KiB rings, t_shim_data write_before_read's
 * write of 3 MB ended at 1 MB + 64 KiB; Python's asyncio streams, which
 * stop reading while they wait to drain, hung at 4 MB).  A wait for room
 * in our full ring that finds the peer waiting for room too (its wait
 * word), our ring from it full, and neither ring moving for JAM_NS gives
 * up on the ring: TF_JAM, once per connection, and the send goes back to
 * TCP (tx_route), whose buffers take the rest.  The wait is a send's
 * (bell.c: it lets go of the ring) or a poll for room (shim_readiness:
 * writable, so that the program sends).  The side that made the segment
 * acts first and the other later, so that two ends stuck alike do not
 * both ask: the later one finds the ask and answers.  A hostile peer's
 * words only make us go back to TCP.
 */
#define JAM_NS (50ll * 1000000)

/* Any thread may look (a poll's), so the rings' indices are the shared
 * ones: the reader's and writer's own copies are theirs under their locks. */
int64_t shim_jam_at(struct tsock *t)
{
	struct shunt_end *e = END(t);

	if (!moved(t) || (atomic_load(&S(t)->flags) & TF_JAM) || (phase_of(t) & PH_TX_BACK) ||
	    !(atomic_load_explicit(&e->peer->wait, memory_order_relaxed) & SHUNT_WAIT_WRITE) ||
	    shunt_ring_look_fill(&e->rx) != (int64_t)e->rx.cap ||
	    shunt_ring_look_space(&e->tx) != 0) {
		if (atomic_load_explicit(&t->jam_since, memory_order_relaxed))
			atomic_store_explicit(&t->jam_since, 0, memory_order_relaxed);
		return SHUNT_NEVER;
	}
	uint64_t now = shunt_end_progress(e);
	int64_t since = atomic_load_explicit(&t->jam_since, memory_order_relaxed);
	if (!since || atomic_load_explicit(&t->jam_progress, memory_order_relaxed) != now) {
		since = shunt_now_ns();
		atomic_store_explicit(&t->jam_progress, now, memory_order_relaxed);
		atomic_store_explicit(&t->jam_since, since, memory_order_relaxed);
	}
	return since + (S(t)->side ? 3 : 1) * JAM_NS;
}

/* A wait for room gave up on the ring: the connection goes back to TCP
 * before the send goes on. */
static int jammed(struct tsock *t, uint32_t ph)
{
	return (atomic_load(&S(t)->flags) & TF_JAM) && moved(t) && !(ph & PH_TX_BACK);
}

/* A vfork child may not go back (shim_unjam): its waits wait on. */
int shim_jam_due(struct tsock *t)
{
	if (!jammed(t, phase_of(t))) {
		if (shim_jam_at(t) > shunt_now_ns())
			return 0;
		atomic_fetch_or(&S(t)->flags, TF_JAM);
	}
	return !shim_in_vfork_child();
}

#define TX_RING 0   /* into our ring */
#define TX_TCP 1    /* on TCP before our switch (in flight: tcp_leave after) */
#define TX_KERNEL 2 /* the kernel's again: the connection went back */

/* A send after our shutdown(SHUT_WR), its FIN still behind the ring's
 * leftovers: it fails at once, as TCP's: ECONNRESET if the peer reset
 * the connection (no SIGPIPE: a helper's review, t_shim_flags
 * deferred_fin_reset), else EPIPE and SIGPIPE. */
static int fin_due_send(int fd, int flags)
{
	if (kernel_error(fd) == ECONNRESET)
		return -ECONNRESET;
	if (!(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	return -EPIPE;
}

/* Where our sends go now, or a negative errno (while going back, what the
 * peer left unread in our ring must go first: -EAGAIN if it cannot yet). */
static int tx_route(struct tsock *t, int fd, int flags)
{
	/* A connected socket's kernel refuses MSG_FASTOPEN (EISCONN, or
	 * EOPNOTSUPP with the client side of TCP_FASTOPEN off) and sends
	 * nothing; the ring took the bytes (a helper's reproducer). */
	if (flags & MSG_FASTOPEN)
		return TX_KERNEL;
	for (;;) {
		uint32_t ph = phase_of(t);
		if (jammed(t, ph)) {
			shim_unjam(t, fd);
			ph = phase_of(t);
		}
		if ((ph & PH_TX_BACK) || shim_peer_asks(t)) {
			if (atomic_load(&S(t)->flags) & TF_FIN_DUE)
				return fin_due_send(fd, flags);
			int rc = shim_back_tx(t, fd, deadline_of(t, flags, 1) != 0);
			/* A peer that broke the rules: a reset, as TCP says it. */
			return rc == 0 ? TX_KERNEL : rc == -EPROTO ? -ECONNRESET : rc;
		}
		if ((ph & PH_TX_RING) || shim_switch_tx(t, fd) == 0)
			return TX_RING;
		if (tcp_enter(S(t)))
			return TX_TCP;
	}
}

/* The peer closed (or is gone): from now on the kernel's socket answers,
 * which is what TCP does after a FIN or a reset. */
static int peer_closed(struct tsock *t)
{
	struct shunt_end *e = END(t);
	int64_t st = shunt_end_peer_state(e);

	return st < 0 || (st & SHUNT_ST_CLOSED) ||
	       atomic_load_explicit(&e->peer_gone, memory_order_relaxed);
}

/* EPIPE after our own shutdown(SHUT_WR) raises SIGPIPE, as on a socket. */
static ssize_t broken_pipe(int flags)
{
	if (!(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	return shim_err(-EPIPE);
}

/* --- A reset, told once ---------------------------------------------------------
 * TCP keeps a reset as the socket's one pending error: the first call that
 * meets it reports it (a read, a send, getsockopt(SO_ERROR)), and from then
 * on reads see end of stream and sends EPIPE; until then poll says
 * POLLERR | POLLHUP.  A moved socket's reset is the ring's (the peer closed
 * with our bytes unread, or reset) or the kernel's, which a doorbell read
 * may have taken (bell.c: kreset).  But a peer that died having read all
 * we sent closed with a FIN over TCP: its kernel reset only for doorbells
 * it had not taken.  So, as TCP's, the first send after such a death
 * "succeeds" and only then is there a reset, EPIPE as TCP's after a FIN.
 */

/* The peer's ring closed, or it is gone, with all we sent read. */
static int peer_clean(struct tsock *t)
{
	int64_t st = shunt_end_peer_state(END(t));

	return st >= 0 && !(st & SHUNT_ST_RESET) && shunt_end_unread_by_peer(END(t)) == 0;
}

/* The peer shut its sends down, then reset (a close with our bytes
 * unread): its FIN came first, and TCP's reset in CLOSE_WAIT is EPIPE,
 * with reads at end of stream (Twisted's loseConnection does so). */
static int fin_then_reset(struct tsock *t)
{
	int64_t st = shunt_end_peer_state(END(t));

	return st >= 0 && (st & (SHUNT_ST_SHUT_WR | SHUNT_ST_RESET)) ==
				  (SHUNT_ST_SHUT_WR | SHUNT_ST_RESET);
}

/* The peer's FIN came (its shutdown, by its ring or, back on TCP, by its
 * socket) and ours did not go: TCP's state is CLOSE_WAIT, where its reset
 * is EPIPE (tcp_reset; it said ECONNRESET after the peer shut both ways
 * and reset on our data: tests/diff_shim.c seeds 34321763789843 and,
 * with the FIN on TCP, 178648778234228). */
static int close_wait(struct tsock *t, int fd)
{
	int64_t st = shunt_end_peer_state(END(t));

	if ((shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR) || shim_back_fin_sent(t))
		return 0;
	return (st >= 0 && (st & SHUNT_ST_SHUT_WR)) || shim_back_fin_came(t, fd);
}

/* The error of a reset the program has not been told of, else 0.
 * `kern_reset`: the kernel's socket shows one not taken yet; `ring`: ask
 * the ring too (poll and epoll have its answer already). */
static int reset_due(struct tsock *t, int fd, int kern_reset, int ring)
{
	struct tslot *s = S(t);

	if (atomic_load(&s->reset_told))
		return 0;
	if (kern_reset || atomic_load(&s->kreset)) {
		/* Ours, on the peer's data after we shut both ways (shut_both). */
		if (shunt_end_state(END(t)) & SHUNT_ST_CLOSED)
			return ECONNRESET;
		/* Both sides' sends went back to TCP (we quietly, the peer by
		 * its answer): no doorbell is left to draw a reset, so it is
		 * the peer's, as tcp_reset tells it (EPIPE in CLOSE_WAIT).  It
		 * was taken for a doorbell's after a clean close, and poll
		 * said no POLLERR (tests/diff_shim.c seed 121455858073981). */
		if ((phase_of(t) & PH_TX_PLAIN) && shim_peer_back(t))
			return close_wait(t, fd) ? EPIPE : ECONNRESET;
		int clean = peer_clean(t);
		if (!clean || atomic_load(&s->sent_after))
			return clean || fin_then_reset(t) || close_wait(t, fd) ? EPIPE : ECONNRESET;
	}
	if (ring && (ring_bits(POLLIN, phase_of(t)) & POLLIN)) {
		if (shunt_end_poll(END(t), NULL, POLLIN, SHUNT_ARM_NONE) & POLLERR)
			return ECONNRESET;
		if (fin_then_reset(t))
			return EPIPE;
	}
	return 0;
}

static void told_reset(struct tsock *t)
{
	atomic_store(&S(t)->reset_told, 1);
	atomic_store(&S(t)->kreset, 0);
}

/* A send after our own shutdown(SHUT_WR): EPIPE, but a reset not yet told
 * comes first, once (TCP's sk_stream_error: the socket's pending error
 * wins over EPIPE; ECONNRESET raises no SIGPIPE). */
static ssize_t shut_pipe(struct tsock *t, int fd, int flags)
{
	int err = reset_due(t, fd, 0, 1);

	/* After the peer's close our FIN went by the kernel (shim_shutdown),
	 * which may hold the reset it brought: past our FIN, TCP's reset is
	 * ECONNRESET (EPIPE only in CLOSE_WAIT), taken here as a send takes
	 * it (tests/diff_shim.c seed 135077436040505: EPIPE and SIGPIPE).
	 * Told once: the kernel's is taken with the ring's (rx_result). */
	if (err || (peer_closed(t) && !atomic_load(&S(t)->reset_told))) {
		int k = kernel_error(fd);
		if (!err && (k == ECONNRESET || k == EPIPE))
			err = ECONNRESET;
	}
	if (err)
		told_reset(t);
	return err == ECONNRESET ? shim_err(-ECONNRESET) : broken_pipe(flags);
}

static long pipe_io(int fd, void *p, size_t n, int out);

/* The kernel's call that a send becomes once the peer closed: a sendmsg
 * of the whole vector (and its control data), a sendfile or a splice from
 * a pipe.  `drop` takes the call's bytes as a send that "succeeds" after
 * a FIN does: they go nowhere (the peer's kernel resets on them). */
struct kcall {
	int kind; /* KC_MSG, KC_FILE, KC_PIPE */
	const struct msghdr *m;
	int in;       /* KC_FILE: the file; KC_PIPE: the pipe */
	off_t *off;   /* KC_FILE */
	unsigned sflags; /* KC_PIPE: splice's flags */
};
#define KC_MSG 0
#define KC_FILE 1
#define KC_PIPE 2

static ssize_t kcall_do(const struct kcall *k, int fd, size_t len, int flags)
{
	if (k->kind == KC_FILE)
		return REAL(sendfile)(fd, k->in, k->off, len);
	if (k->kind == KC_PIPE)
		return REAL(splice)(k->in, NULL, fd, NULL, len, k->sflags);
	return REAL(sendmsg)(fd, k->m, flags & ~MSG_ZEROCOPY);
}

static ssize_t kcall_drop(const struct kcall *k, size_t len)
{
	char buf[4096];
	size_t done = 0;

	if (k->kind == KC_MSG)
		return (ssize_t)len;
	while (done < len) {
		size_t want = SHUNT_MIN(sizeof(buf), len - done);
		long got = k->kind == KC_PIPE ? pipe_io(k->in, buf, want, 0)
			 : k->off	      ? sys_pread(k->in, buf, want, *k->off)
					      : sys_read(k->in, buf, want);
		if (got <= 0)
			return done ? (ssize_t)done : got == 0 ? 0 : shim_err(got);
		if (k->kind == KC_FILE && k->off)
			*k->off += got;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

/* The peer closed: the kernel's socket answers, as reset_due says, to the
 * whole call (one writev's pieces are one send, as TCP takes them: piece
 * by piece, the first "succeeded" after the FIN and the second met the
 * reset, 1 byte where TCP's took 66). */
static ssize_t after_closek(struct tsock *t, int fd, const struct kcall *k, size_t len,
			    int flags)
{
	struct tslot *s = S(t);
	int fin = peer_clean(t);

	if (atomic_load(&s->kreset)) {
		if (fin && !atomic_exchange(&s->sent_after, 1))
			return kcall_drop(k, len);
		told_reset(t);
		return fin || fin_then_reset(t) ? broken_pipe(flags) : shim_err(-ECONNRESET);
	}
	/* The program read the reset: a TCP socket is closed then (our
	 * kernel socket may only have seen the peer's FIN). */
	if (atomic_load(&s->reset_told))
		return broken_pipe(flags);
	/* The peer closed or died with our bytes unread in its ring: TCP's
	 * socket reset then, and a send meets that reset (poll said so too).
	 * The kernel's may have closed with a FIN alone (no doorbell was
	 * left unread), and took the send: lost, where TCP's said
	 * ECONNRESET (a helper's test: a writer whose reader was killed). */
	if (!fin && reset_due(t, fd, 0, 1) == ECONNRESET) {
		kernel_error(fd); /* told with it */
		told_reset(t);
		return shim_err(-ECONNRESET);
	}
	/* The kernel sends now: with the program's Nagle and cork, which
	 * held TCP's bytes back from the closed peer (a corked send went at
	 * once and drew its reset: tests/diff_shim.c seed 7718716936560). */
	shim_nodelay_restore(t, fd);
	ssize_t n = kcall_do(k, fd, len, flags);
	if (n < 0 && errno == ECONNRESET && fin && !atomic_exchange(&s->sent_after, 1)) {
		atomic_store(&s->kreset, 1);
		return kcall_drop(k, len);
	}
	if (n < 0 && errno == ECONNRESET) {
		told_reset(t);
		/* Our kernel saw no FIN before it (the peer's shutdown went
		 * by the ring): the FIN's order is the ring's. */
		if (fin_then_reset(t))
			return broken_pipe(flags);
	}
	/* Its FIN came first (the peer shut both ways: shut_both): the
	 * kernel told the reset as TCP's EPIPE, now or before. */
	if (n < 0 && errno == EPIPE)
		told_reset(t);
	atomic_store(&s->sent_after, 1);
	return n;
}

static ssize_t after_closev(struct tsock *t, int fd, const struct iovec *iov, int niov,
			    size_t len, int flags)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)niov };
	struct kcall k = { .kind = KC_MSG, .m = &m };

	return after_closek(t, fd, &k, len, flags);
}

static ssize_t after_close(struct tsock *t, int fd, const void *buf, size_t len, int flags)
{
	struct iovec v = { (void *)buf, len };

	return after_closev(t, fd, &v, 1, len, flags);
}

/* A sendfile's or a splice's failure in the ring (rc < 0), as the kernel's
 * socket answers it: EPIPE raises SIGPIPE (neither call can say
 * MSG_NOSIGNAL), and after the peer's close the kernel's socket answers. */
static ssize_t kcall_failed(struct tsock *t, int fd, const struct kcall *k, size_t len,
			    ssize_t rc)
{
	if (rc == -EPIPE && (shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR))
		return shut_pipe(t, fd, 0);
	if (rc == -EPIPE || rc == -ECONNRESET)
		return after_closek(t, fd, k, len, 0);
	return shim_err(rc);
}

/* Before such a call goes into the ring: -EPIPE after our own shutdown,
 * -ECONNRESET once the peer closed (kcall_failed answers both), else 0. */
static int kcall_closed(struct tsock *t)
{
	if (shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR)
		return -EPIPE;
	return peer_closed(t) ? -ECONNRESET : 0;
}

/* The TCP state of a moved connection from the kernel's (k) and the
 * rings': a FIN each way is a shutdown for writing or a close, by the
 * ring or the kernel, a reset a close with data unread or a reset told.
 * Both FINs in, the socket is closed (its TIME_WAIT is the kernel's, apart
 * from it), as a reset's is.  The kernel's own, when the rings add
 * nothing to it. */
static uint8_t tcp_state_of(struct tsock *t, uint8_t k)
{
	int64_t peer = shunt_end_peer_state(END(t));
	int peer_fin = peer < 0 || (peer & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) ||
		       atomic_load_explicit(&END(t)->peer_gone, memory_order_relaxed);
	int ring = ((shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR) ? SHIM_FIN_OUT : 0) |
		   (peer_fin ? SHIM_FIN_IN : 0);
	int kern = shim_kern_fins(k), all = ring | kern;

	if (k == TCP_CLOSE || (peer >= 0 && (peer & SHUNT_ST_RESET)) ||
	    atomic_load(&S(t)->reset_told) || all == (SHIM_FIN_OUT | SHIM_FIN_IN))
		return TCP_CLOSE;
	if (!(ring & ~kern))
		return k;
	return all == SHIM_FIN_OUT ? TCP_FIN_WAIT2 : TCP_CLOSE_WAIT;
}

/* getsockopt(TCP_INFO): its state is the kernel socket's, which a moved
 * connection's shutdowns and closes by the ring do not reach (it said
 * ESTABLISHED where TCP's says FIN_WAIT2, CLOSE_WAIT or CLOSE, and
 * CLOSE_WAIT after our FIN by the ring: tests/diff_shim.c with
 * SHUNT_DIFF_STATE=1).  The other fields stay the kernel's. */
int shim_tcp_info_get(struct tsock *t, int fd, void *val, socklen_t *len)
{
	int rc = REAL(getsockopt)(fd, IPPROTO_TCP, TCP_INFO, val, len);

	if (rc == 0 && *len >= 1 && moved(t))
		*(uint8_t *)val = tcp_state_of(t, *(uint8_t *)val);
	return rc;
}

/* A moved connection TCP would have closed (tcp_state_of): its kernel
 * socket may not know. */
static int closed_now(struct tsock *t, int fd)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	return moved(t) && shim_tcp_info_get(t, fd, &ti, &tl) == 0 && tl >= 1 &&
	       ti.tcpi_state == TCP_CLOSE;
}

/* getpeername() of a closed TCP socket says ENOTCONN (it named the peer
 * after both FINs went by the rings: tests/diff_shim.c). */
int shim_getpeername(struct tsock *t, int fd, struct sockaddr *addr, socklen_t *len)
{
	int rc = sys_getpeername(fd, addr, len);

	return (int)shim_err(rc == 0 && closed_now(t, fd) ? -ENOTCONN : rc);
}

/* getsockopt(SO_ERROR) takes a pending reset as a call that meets it.  The
 * kernel's own, taken here, counts as a doorbell read's would. */
int shim_error_get(struct tsock *t, int fd, void *val, socklen_t *len)
{
	int rc = REAL(getsockopt)(fd, SOL_SOCKET, SO_ERROR, val, len);
	int err;

	if (rc < 0 || !moved(t) || *len != sizeof(err))
		return rc;
	memcpy(&err, val, sizeof(err));
	if (err == ECONNRESET || err == EPIPE) {
		atomic_store(&S(t)->kreset, 1);
		err = 0;
	}
	if (!err && (err = reset_due(t, fd, 0, 1)))
		told_reset(t);
	memcpy(val, &err, sizeof(err));
	return 0;
}

/* A send the program asked to be zero-copy is copied into the ring; its
 * completion, which the program waits for on the error queue, comes from
 * one doorbell byte sent zero-copy down the stream (the kernel counts the
 * notifications per call). */
static void zerocopy_done(struct tsock *t, int fd)
{
	shim_bell_send(S(t), fd, MSG_ZEROCOPY);
}

/* Urgent data stays TCP's: the bytes before the last go by the ring, the
 * last one as the kernel's urgent byte, which the peer reads with MSG_OOB
 * (and which its reads of the stream skip, so no doorbell check sees it). */
static ssize_t ring_send(struct tsock *t, int fd, const void *buf, size_t len, int flags);

/* An urgent byte goes down our stream after our switch: inside our busy
 * word, marked first, as a peer answering for us counts only doorbells
 * there (back.c, shim_tx_urgent).  1 if inside (shim_tx_exit after the
 * send). */
static int urgent_enter(struct tsock *t)
{
	if (!t->mapped || shim_tx_enter(S(t)) < 0)
		return 0;
	shim_tx_urgent(S(t));
	return 1;
}

static ssize_t urgent(struct tsock *t, int fd, const void *buf, size_t len, int flags)
{
	ssize_t n = len > 1 ? ring_send(t, fd, buf, len - 1, flags & ~MSG_OOB) : 0;

	if (n < 0 || (size_t)n < len - 1)
		return n;
	int in = urgent_enter(t);
	ssize_t k = REAL(sendto)(fd, (const char *)buf + len - 1, 1, flags, NULL, 0);
	if (in)
		shim_tx_exit(S(t));
	return k < 0 ? (n ? n : k) : n + k;
}

/* A peer that died (no close of its own) is seen only on the TCP stream,
 * which a send into free ring space never looks at: look now and then, as
 * TCP's first send after such a death brings the reset. */
#define LOOK_NS 2000000

/* The kernel just said the stream has no FIN or reset (an epoll event of
 * a doorbell or room, its bits as of the wait's return, EPOLLRDHUP asked):
 * the next send, if it comes soon, needs no look.  A reply sent on
 * waking looked again each time (a getsockopt per send for proxies with
 * 50 connections, each sending every 2 to 3 ms).  One send only, as
 * TCP's first send after a death goes: counted as a look, the event let
 * 63 sends into the ring of a peer killed just after it (TCP: one, then
 * EPIPE). */
void shim_peer_seen(struct tsock *t)
{
	atomic_store_explicit(&t->peer_vouched, shunt_now_ns(), memory_order_relaxed);
}

static void look_at_peer(struct tsock *t, struct shunt_bell *b)
{
	int64_t now = shunt_now_ns();
	int64_t vouched = atomic_exchange_explicit(&t->peer_vouched, 0, memory_order_relaxed);

	if (vouched && now - vouched < LOOK_NS)
		return;
	if (now - atomic_load_explicit(&t->peer_looked, memory_order_relaxed) < LOOK_NS &&
	    (atomic_fetch_add_explicit(&t->sends, 1, memory_order_relaxed) & 63))
		return;
	atomic_store_explicit(&t->peer_looked, now, memory_order_relaxed);
	shunt_end_check_peer(END(t), b);
}

#define AFTER_CLOSE (-4098) /* the peer closed: the kernel's socket answers */

/* With tx_mu held: 1 if our sends go into the ring now, inside our busy
 * word (shim_tx_exit when done); 0 if they are TCP's (going back, or the
 * peer answered for us, which this call takes in: back.c). */
static int ring_open_locked(struct tsock *t, int fd)
{
	if (!moved(t) || (phase_of(t) & PH_TX_BACK))
		return 0;
	if (shim_tx_enter(S(t)) == 0)
		return 1;
	shim_back_answer_locked(t, fd);
	return 0;
}

/*
 * n pieces, len bytes in all, into the ring as one send under tx_mu, as
 * TCP queues one writev under its socket lock: another thread's send goes
 * before or after it, never between its pieces, and the reader sees it
 * whole.  Piece by piece, four threads' 64-byte records of five pieces
 * each came out interleaved (a helper's test, 12-04; Python's and Ruby's
 * threads too; t_shim_data writev_whole).
 */
static ssize_t ring_sendv(struct tsock *t, int fd, const struct iovec *iov, int n, size_t len,
			  int flags)
{
	struct shunt_bell b = shim_bell(t, fd);

	shim_count_moved_call(t);
	look_at_peer(t, &b);
	if (shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR)
		return shut_pipe(t, fd, flags);
	if (peer_closed(t))
		return AFTER_CLOSE;
	int64_t dl = deadline_of(t, flags, 1);
	/* A send of nothing beside a blocked one returns at once, as TCP's
	 * (it waited for that one's lock: a helper's review). */
	if (lock_for(&S(t)->tx_mu, END(t), SHUNT_WAIT_WRITE, len ? dl : 0) < 0)
		return len ? shim_err(-EAGAIN) : 0;
	if (!ring_open_locked(t, fd)) {
		shim_unlock(&S(t)->tx_mu);
		return RETRY;
	}
	shim_call_locks(t, &S(t)->tx_mu);
	ssize_t k = shunt_end_sendv(END(t), &b, iov, n, len, dl);
	shim_call_locks(t, NULL);
	shim_tx_exit(S(t));
	shim_unlock(&S(t)->tx_mu);
	touched(t);
	if (k == -EXDEV)
		return RETRY;
	if (k == -EPIPE && (shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR))
		return shut_pipe(t, fd, flags); /* our own shutdown, from another thread */
	if (k == -EPIPE || k == -ECONNRESET)
		return AFTER_CLOSE;
	if (k > 0 && (flags & MSG_ZEROCOPY))
		zerocopy_done(t, fd);
	return shim_err(k == -EPROTO ? -ECONNRESET : k);
}

/* Would the kernel have restarted the interrupted send?  TCP's blocking
 * send with no SO_SNDTIMEO that copied nothing yet is restarted after a
 * handler with SA_RESTART; our wait for room, a ppoll(), never is: the
 * send failed with EINTR where TCP's went on (a helper's reproducer).
 * Which signal came we cannot tell: yes when every handler there is has
 * SA_RESTART, but for the faults', which a wait does not raise (a
 * sanitizer's or a crash reporter's SIGSEGV handler has none).  A
 * cancellation that interrupted it acts first. */
static int sync_signal(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL ||
	       sig == SIGTRAP || sig == SIGSYS;
}

int shim_restarts(void)
{
	pthread_testcancel();
	return shim_handlers_restart();
}

int shim_handlers_restart(void)
{
	int err = errno;

	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;
		if (sig == SIGKILL || sig == SIGSTOP || sync_signal(sig) || sigaction(sig, NULL, &sa) < 0)
			continue; /* libc's own signals (EINVAL) */
		if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN &&
		    !(sa.sa_flags & SA_RESTART)) {
			errno = err;
			return 0;
		}
	}
	errno = err;
	return 1;
}

/* ring_sendv, restarted as the kernel's send would be (restarts). */
static ssize_t ring_sendv_restarted(struct tsock *t, int fd, const struct iovec *iov, int n,
				    size_t len, int flags)
{
	ssize_t k;

	while ((k = ring_sendv(t, fd, iov, n, len, flags)) == -1 && errno == EINTR &&
	       deadline_of(t, flags, 1) == SHUNT_NEVER && shim_restarts())
		;
	return k;
}

static ssize_t ring_send(struct tsock *t, int fd, const void *buf, size_t len, int flags)
{
	struct iovec v = { (void *)buf, len };
	ssize_t n = ring_sendv_restarted(t, fd, &v, 1, len, flags);

	return n == AFTER_CLOSE ? after_close(t, fd, buf, len, flags) : n;
}

/* A send the kernel's socket took (r: TX_TCP or TX_KERNEL).  A reset it
 * told is told: SO_ERROR and poll then say none from the ring (the peer's
 * reset, as it closed with our ring bytes unread, came again:
 * tests/diff_shim.c seed 62083118456932).  So is CLOSE_WAIT's, which the
 * kernel tells as EPIPE: once its socket is closed no error is left there
 * (SO_ERROR said ECONNRESET after it: seed 27192862901815). */
static ssize_t kernel_sent(struct tsock *t, int fd, int r, ssize_t n)
{
	int err = errno;

	if (r == TX_TCP)
		tcp_leave(t, fd);
	if (n < 0 && (err == ECONNRESET || (err == EPIPE && shim_kern_closed(fd))) && moved(t))
		told_reset(t);
	errno = err;
	return n;
}

static ssize_t moved_send(struct tsock *t, int fd, const void *buf, size_t len, int flags)
{
	int r = tx_route(t, fd, flags);

	if (r < 0)
		return shim_err(r);
	if (r == TX_RING)
		return flags & MSG_OOB ? urgent(t, fd, buf, len, flags)
				       : ring_send(t, fd, buf, len, flags);
	return kernel_sent(t, fd, r, REAL(sendto)(fd, buf, len, flags, NULL, 0));
}

/* A blocking send that the way back cut short goes on by TCP, as TCP
 * would have taken all of it. */
static int cut_short(struct tsock *t, int flags)
{
	return deadline_of(t, flags, 1) != 0 &&
	       (!moved(t) || (phase_of(t) & PH_TX_BACK) || shim_peer_asks(t) ||
		jammed(t, phase_of(t)));
}

SHUNT_FORK_TEXT ssize_t shim_send(struct tsock *t, int fd, const void *buf, size_t len, int flags)
{
	size_t done = 0;

	if (len && shim_bad_ptr(buf))
		return shim_err(-EFAULT);
	if (flags & MSG_OOB) /* urgent data is TCP's: such a stream stays there */
		atomic_fetch_or(&S(t)->flags, TF_OPTS);
	for (int tries = 0;; again(&tries)) {
		if (shim_plain_enter(t)) {
			ssize_t n = plain_send(t, fd, (const char *)buf + done, len - done, flags,
					       !done);
			return n < 0 ? (done ? (ssize_t)done : n) : (ssize_t)done + n;
		}
		ssize_t n = moved_send(t, fd, (const char *)buf + done, len - done, flags);
		if (n == RETRY)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : n;
		done += (size_t)n;
		if (done == len || !cut_short(t, flags))
			return (ssize_t)done;
	}
}

/* The pieces past the first `done` bytes of iov, each as a send (after
 * the peer's close, or while the connection goes back to TCP). */
static ssize_t sendv_from(struct tsock *t, int fd, const struct iovec *iov, int n, int flags,
			  size_t done)
{
	size_t skip = done;

	for (int i = 0; i < n; i++) {
		size_t off = piece_past(&iov[i], &skip), left = iov[i].iov_len - off;

		if (left == 0)
			continue;
		ssize_t k = shim_send(t, fd, (const char *)iov[i].iov_base + off, left,
				      done ? flags | MSG_NOSIGNAL : flags);
		if (k <= 0)
			return done ? (ssize_t)done : k;
		done += (size_t)k;
		if ((size_t)k < left)
			break;
	}
	return (ssize_t)done;
}

/* A send's bytes: the kernel's look, and EFAULT for a piece in the first
 * page (NULL above all), whose copy would crash.  TCP's copy faults
 * there: it says EFAULT, or sends the segments it had filled before the
 * fault when there were some (1048144 bytes of 1 MiB before a bad piece,
 * EFAULT after 10): this says EFAULT either way. */
static ssize_t send_iov_len(const struct iovec *iov, int n)
{
	ssize_t len = iov_len(iov, n);

	for (int i = 0; len > 0 && i < n; i++)
		if (iov[i].iov_len && shim_bad_ptr(iov[i].iov_base))
			return -EFAULT;
	return len;
}

/* sendmsg's urgent data, in one piece as send()'s (the last byte urgent,
 * the rest by the ring when the connection moved).  Whole to the kernel,
 * all its bytes went down the stream past the switch, and the peer reset
 * the connection (a helper's review, t_shim_flags sendmsg_oob).  Rare
 * (telnet's and FTP's aborts): a copy costs nothing that counts. */
static ssize_t urgent_v(struct tsock *t, int fd, const struct iovec *iov, int n, int flags)
{
	ssize_t len = send_iov_len(iov, n);

	if (len < 0)
		return shim_err((int)len);
	char *buf = malloc(len ? (size_t)len : 1);
	if (!buf)
		return shim_err(-ENOMEM);
	size_t at = 0;
	for (int i = 0; i < n; i++) {
		memcpy(buf + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	ssize_t k = shim_send(t, fd, buf, (size_t)len, flags);
	int err = errno;
	free(buf);
	errno = err;
	return k;
}

ssize_t shim_sendv(struct tsock *t, int fd, const struct iovec *iov, int n, int flags)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };

	if (shim_plain_enter(t)) {
		ssize_t k = REAL(sendmsg)(fd, &m, flags);
		tcp_leave(t, fd);
		shim_count(t, fd, 0, k > 0 ? (uint64_t)k : 0);
		return k;
	}
	if (flags & MSG_OOB)
		return urgent_v(t, fd, iov, n, flags);
	int r = tx_route(t, fd, flags);
	if (r < 0)
		return shim_err(r);
	if (r != TX_RING)
		return kernel_sent(t, fd, r, REAL(sendmsg)(fd, &m, flags));
	ssize_t len = send_iov_len(iov, n);
	if (len < 0)
		return shim_err((int)len);
	ssize_t k = ring_sendv_restarted(t, fd, iov, n, (size_t)len, flags);
	if (k == AFTER_CLOSE)
		return after_closev(t, fd, iov, n, (size_t)len, flags);
	if (k == RETRY)
		return sendv_from(t, fd, iov, n, flags, 0);
	if (k < 0 || k == len || !cut_short(t, flags))
		return k;
	return sendv_from(t, fd, iov, n, flags, (size_t)k);
}

/* sendfile into the ring: the file is read straight into shared memory. */
ssize_t shim_sendfile(struct tsock *t, int fd, int in_fd, off_t *off, size_t count)
{
	if (count == 0 && moved(t)) /* the kernel's: 0 before a look at the socket */
		return REAL(sendfile)(fd, in_fd, off, 0);
	if (shim_plain_enter(t)) {
		ssize_t n = REAL(sendfile)(fd, in_fd, off, count);
		tcp_leave(t, fd);
		shim_count(t, fd, 0, n > 0 ? (uint64_t)n : 0);
		return n;
	}
	int r = tx_route(t, fd, 0);
	if (r < 0)
		return shim_err(r);
	if (r != TX_RING)
		return kernel_sent(t, fd, r, REAL(sendfile)(fd, in_fd, off, count));
	/* The kernel's reads a file or a device, and says EINVAL, nothing
	 * taken, for a pipe, a socket, a directory or an eventfd.  Ours read
	 * a pipe or a socket into the ring, and hung on a moved socket's (a
	 * helper's reproducers). */
	struct stat st;
	if (sys_fstat(in_fd, &st) < 0)
		return shim_err(-EBADF);
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode))
		return shim_err(-EINVAL);
	struct kcall kc = { .kind = KC_FILE, .in = in_fd, .off = off };
	int closed = kcall_closed(t);
	if (closed)
		return kcall_failed(t, fd, &kc, count, closed);
	struct shunt_bell b = shim_bell(t, fd);
	int64_t dl = deadline_of(t, 0, 1);
	size_t done = 0;
	ssize_t rc = 0;

	shim_lock(&S(t)->tx_mu);
	if (!ring_open_locked(t, fd)) {
		shim_unlock(&S(t)->tx_mu);
		return shim_sendfile(t, fd, in_fd, off, count);
	}
	/* A blocking socket takes all of it, as TCP's does: each piece may
	 * wait for room (dl: none for a non-blocking one). */
	while (done < count) {
		void *p;
		rc = shunt_end_reserve(END(t), &b, &p, 1, dl);
		if (rc < 0)
			break;
		size_t want = SHUNT_MIN(SHUNT_MIN((size_t)rc, count - done), (size_t)65536);
		long got = off ? sys_pread(in_fd, p, want, *off) : sys_read(in_fd, p, want);
		if (got <= 0) {
			shunt_end_commit(END(t), &b, 0);
			rc = got;
			break;
		}
		shunt_end_commit(END(t), &b, (size_t)got);
		if (off)
			*off += got;
		done += (size_t)got;
	}
	shim_tx_exit(S(t));
	shim_unlock(&S(t)->tx_mu);
	touched(t);
	if (rc == -EXDEV) { /* going back to TCP: the rest there */
		ssize_t k = shim_sendfile(t, fd, in_fd, off, count - done);
		if (!done)
			return k;
		return k > 0 ? (ssize_t)done + k : (ssize_t)done;
	}
	if (done)
		return (ssize_t)done;
	return kcall_failed(t, fd, &kc, count, rc);
}

/* --- splice ---------------------------------------------------------------------
 * SPLICE_F_NONBLOCK is the pipe's side only: the socket keeps its own mode
 * (O_NONBLOCK, its timeouts).  The kernel waits for room (or data) in the
 * pipe first, then for the socket, then moves what fits.  The program's
 * pipe may block, and its flags are the program's: the ring's bytes go
 * through a second, non-blocking description of the same pipe, so that a
 * write never waits for more room than there was (haproxy's splice-auto
 * blocked for good writing into its own full pipe), nor a read for data.
 */

/* Until the pipe has room (POLLOUT) or data (POLLIN): 0, -EAGAIN if
 * `nonblock` and it has none, -EINTR, -EINVAL if fd is not a pipe. */
static int pipe_wait(int fd, short ev, int nonblock)
{
	struct pollfd p = { .fd = fd, .events = ev };
	struct timespec zero = { 0, 0 };

	if (sys_fcntl(fd, F_GETPIPE_SZ, 0) < 0)
		return -EINVAL;
	int rc = sys_ppoll(&p, 1, nonblock ? &zero : NULL);
	return rc < 0 ? rc : rc == 0 ? -EAGAIN : 0;
}

/* Up to n bytes into (out) or from the pipe, without a wait.  Without
 * /proc, on the program's own description, at most PIPE_BUF bytes out:
 * the one free slot pipe_wait saw takes them at once. */
static long pipe_io(int fd, void *p, size_t n, int out)
{
	char path[40];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	int nb = sys_openat(AT_FDCWD, path, (out ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC, 0);
	int use = nb >= 0 ? nb : fd;
	if (nb < 0 && out)
		n = SHUNT_MIN(n, (size_t)PIPE_BUF);
	long k = out ? sys_write(use, p, n) : sys_read(use, p, n);
	if (nb >= 0)
		sys_close(nb);
	return k;
}

/*
 * splice between a pipe and a socket that has not moved: the kernel's, a
 * data call towards the move, and a read counts the stream it took, as a
 * recv does (unseen, the count fell behind, and the reads after the move
 * never reached the peer's switch offset: lighttpd's proxy stalled with
 * the ring full).  Never across the meeting's commit (shim_may_commit refuses
 * while one is in the kernel: the connection stays on TCP): the peer
 * switches and rings once we are attached, and a splice cannot put back
 * a doorbell it took, nor a send land after the offset we switch at.  A
 * step in progress is waited out first, as shim_moved_now does.  RETRY:
 * the connection moved; `out`: into the socket.
 */
static ssize_t splice_plain(struct tsock *t, int fd, int pipe, size_t len, unsigned flags,
			    int out)
{
	atomic_fetch_add(&t->splicing, 1);
	if (shim_moved_now(t)) {
		atomic_fetch_sub(&t->splicing, 1);
		return RETRY;
	}
	if (!out)
		shim_rx_enter(t, 0);
	ssize_t n = out ? REAL(splice)(pipe, NULL, fd, NULL, len, flags)
			: REAL(splice)(fd, NULL, pipe, NULL, len, flags);
	int err = errno;
	if (!out) {
		if (n > 0)
			took(t, n, 0);
		rx_left(t);
	}
	atomic_fetch_sub(&t->splicing, 1);
	shim_count(t, fd, !out && n > 0 ? (uint64_t)n : 0, out && n > 0 ? (uint64_t)n : 0);
	errno = err;
	return n;
}

/*
 * Up to len bytes of the pipe into the ring, under tx_mu: as the kernel's
 * splice into a socket, on while the pipe has bytes and len is not met,
 * waiting for room as a send would; it stops once the pipe is empty.  One
 * piece per call, a blocking splice of 64 KiB into a ring with room for
 * 464 bytes returned 464 where TCP's returns 65536 (a helper's test,
 * 12-04; t_shim_flags splice_in_whole).
 */
static ssize_t pipe_into_ring(struct tsock *t, struct shunt_bell *b, int pipe_in, size_t len)
{
	size_t done = 0;
	void *p;

	while (done < len) {
		ssize_t room = shunt_end_reserve(END(t), b, &p, 1, deadline_of(t, 0, 1));
		if (room <= 0)
			return done ? (ssize_t)done : room;
		size_t want = SHUNT_MIN((size_t)room, len - done);
		long got = pipe_io(pipe_in, p, want, 0);
		shunt_end_commit(END(t), b, got > 0 ? (size_t)got : 0);
		if (got <= 0)
			return done ? (ssize_t)done : got;
		done += (size_t)got;
		if ((size_t)got < want)
			break; /* the pipe is empty: what it had */
	}
	return (ssize_t)done;
}

/* splice from a pipe into a socket: the pipe is read into the ring. */
ssize_t shim_splice_in(struct tsock *t, int fd, int pipe_in, size_t len, unsigned flags)
{
	struct shunt_bell b = shim_bell(t, fd);

	if (!moved(t)) {
		ssize_t n = splice_plain(t, fd, pipe_in, len, flags, 1);
		if (n != RETRY)
			return n;
	}
	int w = pipe_wait(pipe_in, POLLIN, flags & SPLICE_F_NONBLOCK);
	if (w < 0)
		return shim_err(w);
	int r = tx_route(t, fd, 0);
	if (r < 0)
		return shim_err(r);
	if (r != TX_RING)
		return kernel_sent(t, fd, r, REAL(splice)(pipe_in, NULL, fd, NULL, len, flags));
	struct kcall kc = { .kind = KC_PIPE, .in = pipe_in, .sflags = flags };
	int closed = kcall_closed(t);
	if (closed)
		return kcall_failed(t, fd, &kc, len, closed);
	shim_lock(&S(t)->tx_mu);
	if (!ring_open_locked(t, fd)) {
		shim_unlock(&S(t)->tx_mu);
		return shim_splice_in(t, fd, pipe_in, len, flags);
	}
	ssize_t rc = pipe_into_ring(t, &b, pipe_in, len);
	shim_tx_exit(S(t));
	shim_unlock(&S(t)->tx_mu);
	touched(t);
	if (rc == -EXDEV)
		return shim_splice_in(t, fd, pipe_in, len, flags);
	return rc < 0 ? kcall_failed(t, fd, &kc, len, rc) : rc;
}

static ssize_t moved_splice_out(struct tsock *t, int fd, int pipe_out, size_t len,
				unsigned flags)
{
	struct shunt_bell b = shim_bell(t, fd);
	const void *p;

	int rb = rx_back(t, fd, (flags & SPLICE_F_NONBLOCK) ? MSG_DONTWAIT : 0);
	if (rb != 0)
		return rb > 0 ? REAL(splice)(fd, NULL, pipe_out, NULL, len, flags)
			      : rx_result(t, fd, -ECONNRESET);
	int w = pipe_wait(pipe_out, POLLOUT, flags & SPLICE_F_NONBLOCK);
	if (w < 0)
		return shim_err(w);
	if (!(phase_of(t) & PH_RX_RING)) {
		/* Read off the stream: the pipe takes PIPE_BUF bytes at once. */
		char buf[PIPE_BUF];
		ssize_t n = tcp_part(t, fd, buf, SHUNT_MIN(len, sizeof(buf)), 0);
		if (n == RETRY)
			return RETRY;
		if (n != GO_RING) {
			if (n > 0)
				n = sys_write(pipe_out, buf, (size_t)n);
			return shim_err(n);
		}
	}
	shim_lock(&S(t)->rx_mu);
	if (!moved(t) || (phase_of(t) & PH_RX_PLAIN)) {
		shim_unlock(&S(t)->rx_mu);
		return RETRY;
	}
	ssize_t rc = shunt_end_peek(END(t), &b, &p, deadline_of(t, 0, 0));
	int full = 0;
	if (rc > 0) {
		/* A splice stops at the urgent mark, as a read (recv_locked). */
		size_t want = shim_rx_to_mark(S(t), SHUNT_MIN((size_t)rc, len));
		long put = pipe_io(pipe_out, (void *)p, want, 1);
		if (put > 0)
			shunt_end_release(END(t), &b, (size_t)put);
		full = put == -EAGAIN;
		rc = put;
	}
	shim_unlock(&S(t)->rx_mu);
	touched(t);
	/* Room another writer took meanwhile: wait for it again, as the
	 * kernel would.  Not an empty ring's EAGAIN: that is the socket's
	 * O_NONBLOCK or SO_RCVTIMEO, which the kernel's splice honours too
	 * (retried, it spun for good: t_shim_flags splice_socket_timeo). */
	if (full && !(flags & SPLICE_F_NONBLOCK))
		return RETRY;
	/* After our shutdown both ways, as a read: the reset the peer's
	 * bytes brought, once (it said 0 where TCP's splice says
	 * ECONNRESET: tests/diff_shim.c seed 50703080695018). */
	if (rc >= 0)
		rc = after_closed(t, fd, rc, len, 0);
	return rc == -EXDEV || rc == RETRY ? RETRY : rx_result(t, fd, rc);
}

/* What a splice from the ring left of len, from TCP, where the peer's data
 * waits past its way back, as a read's (past_ring_end): TCP's splice takes
 * all there is (it returned the ring's 871 of 4000: tests/diff_shim.c seed
 * 258765204379962).  Never waits: only what is there, while the pipe has
 * room. */
static ssize_t splice_past_ring_end(struct tsock *t, int fd, int pipe_out, size_t len,
				    ssize_t got, unsigned flags)
{
	uint64_t q;

	if (got <= 0 || (size_t)got >= len || !going_back(t) || !(q = shim_back_queued(t, fd)) ||
	    rx_back(t, fd, MSG_DONTWAIT) <= 0)
		return got;
	int err = errno;
	ssize_t k = REAL(splice)(fd, NULL, pipe_out, NULL, SHUNT_MIN(len - (size_t)got, q),
				 flags | SPLICE_F_NONBLOCK);
	errno = err;
	return k > 0 ? got + k : got;
}

/* fd's status flags, if it is open for writing; else -EBADF (the
 * kernel's first look at a splice's or a sendfile's output: into a pipe's
 * read end ours waited for good for room it never has, a helper's
 * review), or the error of the look. */
int shim_writable_flags(int fd)
{
	int fl = sys_fcntl(fd, F_GETFL, 0);

	if (fl >= 0 && ((fl & O_ACCMODE) == O_RDONLY || (fl & O_PATH)))
		return -EBADF;
	return fl;
}

/* splice from a socket into a pipe: the ring is written to the pipe.
 * The caller saw pipe_out open for writing (shim_writable_flags). */
ssize_t shim_splice_out(struct tsock *t, int fd, int pipe_out, size_t len, unsigned flags)
{
	for (int tries = 0;; again(&tries)) {
		ssize_t n;
		if (phase_of(t) & PH_RX_PLAIN)
			return REAL(splice)(fd, NULL, pipe_out, NULL, len, flags);
		if (!moved(t))
			n = splice_plain(t, fd, pipe_out, len, flags, 0);
		else if ((n = moved_splice_out(t, fd, pipe_out, len, flags)) != RETRY)
			n = splice_past_ring_end(t, fd, pipe_out, len, n, flags);
		if (n != RETRY)
			return n;
	}
}

/* --- Control ------------------------------------------------------------------ */

/*
 * Both halves shut, our FIN in the ring or on TCP: data the peer sends
 * now must reset the connection, as it does TCP's (RFC 1122's abort on
 * data).  The peer sees a close (shunt_end_shut_both) and sends on its
 * kernel's socket from then on, as after a close (after_closek); ours is
 * shut both ways too, our doorbells ended first, so that its kernel
 * resets on those bytes: the peer's next send says EPIPE, and our next
 * read ECONNRESET (shut_reset).  The ring had taken them, for good: our
 * reads returned them, and a send of more than the ring holds waited
 * forever (t_shim_close data_to_shut_peer, big_send_to_shut_peer).
 */
static void shut_both(struct tsock *t, int fd, struct shunt_bell *b)
{
	struct shunt_end *e = END(t);

	if (!atomic_load(&e->rd_shut))
		return;
	if (!(shunt_end_state(e) & SHUNT_ST_CLOSED)) {
		if (!shim_kern_fin_sent(fd)) /* our FIN: neither the ring's nor TCP's */
			return;
		shunt_end_shut_both(e, b);
	}
	shim_bells_end(S(t));
	sys_shutdown(fd, SHUT_RDWR);
}

/*
 * A shutdown before the move: a half-closed stream can carry no doorbell,
 * so no meeting may finish after it.  The flag goes up under the lock the
 * meeting's last step holds (move.c, shim_may_commit), before the kernel's FIN:
 * a step that commits after the FIN made the peer take it for our death
 * (bell.c) and send its data by TCP past its switch, a reset (the soak's
 * blocking clients, tests/repro 5).  0: it had moved after all.
 */
static int unmoved_shutdown(struct tsock *t, int fd, int how, int *rc)
{
	uint32_t old = 0;

	pthread_mutex_lock(&t->mu);
	if (moved(t)) {
		pthread_mutex_unlock(&t->mu);
		return 0;
	}
	if (how != SHUT_RD)
		old = atomic_fetch_or(&S(t)->flags, TF_SHUT);
	pthread_mutex_unlock(&t->mu);
	*rc = (int)shim_err(shim_back_shutdown(t, fd, how));
	if (*rc < 0 && how != SHUT_RD && !(old & TF_SHUT))
		atomic_fetch_and(&S(t)->flags, ~TF_SHUT); /* nothing was shut */
	else if (how != SHUT_RD)
		shim_give_up(t, fd, WHY_OPTIONS);
	return 1;
}

/* shutdown(SHUT_WR) while going back: 1 when the FIN waits behind the
 * ring's leftovers, which wait for room, or went with the last of them
 * (the flush that sends it takes TF_FIN_DUE: back.c, flush_locked); 0
 * when they went, and the FIN is ours to send now; or a negative errno.
 * TCP's shutdown returns at once, its FIN queued behind what its buffer
 * holds.  Waiting for the leftovers to go, it deadlocked a peer's new
 * holder that sends all it has before it reads, and a non-blocking one
 * said EAGAIN (a helper's review, t_shim_flags shutdown_while_flushing). */
static int fin_behind_leftovers(struct tsock *t, int fd)
{
	atomic_fetch_or(&S(t)->flags, TF_FIN_DUE);
	int rc = shim_back_tx(t, fd, 0);
	if (rc < 0 && rc != -EAGAIN)
		return rc;
	if (!(phase_of(t) & PH_TX_PLAIN))
		return 1;
	return !(atomic_fetch_and(&S(t)->flags, ~TF_FIN_DUE) & TF_FIN_DUE);
}

int shim_shutdown(struct tsock *t, int fd, int how)
{
	struct shunt_bell b = shim_bell(t, fd);

	int done;
	if (unmoved_shutdown(t, fd, how, &done))
		return done;
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return (int)shim_err(-EINVAL);
	/* A connection the peer reset, or whose FINs both went (by the
	 * rings: our kernel saw at most one), is TCP_CLOSE: TCP's shutdown
	 * fails with ENOTCONN, and a reset is still read after it.  (Taken for
	 * a shutdown before, it returned 0 and the reads then saw end of
	 * stream: t_shim_flags shutdown_after_reset, shutdown_after_fins.) */
	if (closed_now(t, fd))
		return (int)shim_err(-ENOTCONN);
	if ((phase_of(t) & PH_TX_BACK) || shim_peer_asks(t)) {
		/* Going back to TCP: the ring's leftovers, then the kernel's FIN. */
		int later = how != SHUT_RD ? fin_behind_leftovers(t, fd) : 0;
		if (later < 0)
			return (int)shim_err(later);
		if (how != SHUT_WR && !(phase_of(t) & PH_RX_PLAIN))
			shunt_end_shutdown(END(t), &b, SHUT_RD);
		if (later)
			how = how == SHUT_RDWR ? SHUT_RD : -1;
		return how < 0 ? 0 : (int)shim_err(shim_back_shutdown(t, fd, how));
	}
	if (how != SHUT_RD && !(phase_of(t) & PH_TX_RING) && !shim_switch_for_shutdown(t, fd)) {
		/* Our sends stay on TCP, the peer's too: the FIN goes there. */
		int rc = REAL(shutdown)(fd, SHUT_WR);
		if (rc < 0 || how == SHUT_WR)
			return rc;
		how = SHUT_RD;
	}
	/* Inside our busy word: a shutdown that only our ring carries must
	 * not come after the peer answered for us (back.c), whose new holder
	 * would then wait for a FIN that never comes.  Answered so, our
	 * sends are TCP's: the shutdown goes there (once more, from the top). */
	int in = how != SHUT_RD;
	if (in && shim_tx_enter(S(t)) < 0) {
		shim_back_answer(t, fd);
		return shim_shutdown(t, fd, how);
	}
	int rc = shunt_end_shutdown(END(t), &b, how);
	if (in)
		shim_tx_exit(S(t));
	/* The kernel's SHUT_RD wakes a read or poll of ours asleep on the
	 * stream (the doorbells we still need to send go on). */
	if (rc == 0 && how != SHUT_WR)
		sys_shutdown(fd, SHUT_RD);
	/* After the peer's close our sends are the kernel's (after_closek):
	 * its FIN goes there, behind them, as TCP's, and brings the closed
	 * peer's reset on bytes a MSG_MORE held (it stayed in the ring:
	 * tests/diff_shim.c seed 135077436040505). */
	if (rc == 0 && how != SHUT_RD && peer_closed(t))
		sys_shutdown(fd, SHUT_WR);
	if (rc == 0)
		shut_both(t, fd, &b);
	shim_bell_wake_all(t);
	touched(t);
	return (int)shim_err(rc);
}

int shim_fionread(struct tsock *t, int fd, int *out)
{
	int k = 0;

	/* A program may wait for bytes by this count alone, with naps: it
	 * answers, or the asker waited 5 s for a call that never came, then
	 * reset (t_shim_flags fionread_peer_answers). */
	if (moved(t) && going_back(t))
		back_steps(t, fd);
	if (moved(t) && (phase_of(t) & PH_RX_PLAIN))
		return REAL(ioctl)(fd, FIONREAD, out);
	if (!moved(t) || !(phase_of(t) & PH_RX_RING)) {
		int rc = REAL(ioctl)(fd, FIONREAD, &k);
		if (rc < 0 || !moved(t)) {
			*out = k;
			return rc;
		}
		if (shim_peer_switched(t)) {
			uint64_t left = atomic_load(&S(t)->x_peer) - atomic_load(&S(t)->rx_tcp);
			k = (int)SHUNT_MIN((uint64_t)k, left > INT_MAX ? INT_MAX : left);
		}
		if (!(phase_of(t) & PH_RX_KNOW)) {
			*out = k;
			return 0;
		}
	}
	ssize_t n = shunt_end_readable(END(t));
	if (n < 0)
		return (int)shim_err(n == -EPROTO ? -ECONNRESET : n);
	/* TCP's count stops at an urgent mark ahead, as its reads do (it went
	 * on past it: t_shim_flags urgent_mark). */
	size_t upto = shim_rx_to_mark(S(t), (size_t)n);
	if (upto < (size_t)n) {
		*out = (int)SHUNT_MIN(upto, (size_t)INT_MAX);
		return 0;
	}
	/* The peer went back to TCP with its ring still holding data for
	 * us: its new TCP bytes count too (t_shim_flags fionread_peer_back). */
	if (phase_of(t) & PH_RX_RING)
		k = (int)SHUNT_MIN(shim_back_queued(t, fd), (uint64_t)INT_MAX);
	*out = (int)SHUNT_MIN((int64_t)k + n, INT_MAX);
	return 0;
}

/* SIOCATMARK: the kernel's, but once the peer sent urgent data after its
 * switch, only with our reads at its mark in the ring (said 1 with the
 * ring's bytes before the mark unread: a helper's reproducer).  There the
 * doorbells before the urgent byte go first, if the kernel's stream is
 * not at its mark yet: a drain takes them up to it.  (Not when it is: a
 * read from the mark skips the urgent byte, and the kernel drops it.) */
int shim_atmark(struct tsock *t, int fd, int *out)
{
	int at = moved(t) && (phase_of(t) & PH_RX_RING) ? shim_rx_at_mark(S(t)) : -1;
	int rc = REAL(ioctl)(fd, SIOCATMARK, out);

	if (rc == 0 && at == 1 && *out == 0) {
		struct shunt_bell b = shim_bell(t, fd);
		shim_bell_ops.drain(&b, SHUNT_WAIT_READ);
		rc = REAL(ioctl)(fd, SIOCATMARK, out);
	}
	if (rc == 0 && at == 0)
		*out = 0;
	return rc;
}

void shim_set_nonblock(struct tsock *t, int on)
{
	if (on)
		atomic_fetch_or(&S(t)->flags, TF_NONBLOCK);
	else
		atomic_fetch_and(&S(t)->flags, ~TF_NONBLOCK);
}

#ifndef SO_RCVTIMEO_NEW
#define SO_RCVTIMEO_NEW 66
#define SO_SNDTIMEO_NEW 67
#endif

/* A timeout as the kernel takes it (sock_set_timeout), which the call
 * accepted: {0, 0} none (0); a negative second, no wait at all (-1);
 * else the time, but none from some 106 days on, where nanoseconds would
 * overflow (the kernel's "none" starts later, where jiffies do).  The _NEW options
 * (64-bit fields, as timeval's here) were not looked at, and a negative or
 * huge time left the old one (a helper's reproducers). */
static int64_t tv_ns(const void *val, socklen_t len)
{
	if (len < 2 * sizeof(int64_t))
		return 0;
	const int64_t *tv = val; /* tv_sec, tv_usec */
	if (tv[0] < 0)
		return -1;
	if (tv[0] >= LONG_MAX / 1000 / 1000000000)
		return 0;
	return tv[0] * 1000000000 + tv[1] * 1000;
}

static int is_timeo(int level, int opt)
{
	return level == SOL_SOCKET && (opt == SO_RCVTIMEO || opt == SO_SNDTIMEO ||
				       opt == SO_RCVTIMEO_NEW || opt == SO_SNDTIMEO_NEW);
}

/* Options that change what the stream or a read means, or that only the
 * kernel's TCP can honour, when set to other than their default: 1 for
 * SO_RCVLOWAT (0 means 1), -1 for SO_PEEK_OFF, 0 for the others.  2: the
 * way back may be quiet (back.c), the option meaning nothing for the
 * ring's bytes (SO_OOBINLINE: the urgent byte is the kernel's, after them). */
static int tcp_only_opt(int level, int opt, const void *val, socklen_t len)
{
	int v = len >= sizeof(int) ? *(const int *)val : 1;

	if (level == SOL_SOCKET)
		switch (opt) {
		case SO_ATTACH_FILTER:
		case SO_ATTACH_BPF:
			return 1;
		case SO_RCVLOWAT:
			return v > 1;
		case SO_PEEK_OFF:
			return v != -1;
		case SO_OOBINLINE:
			return v != 0 ? 2 : 0;
		case SO_TIMESTAMP_OLD:
		case SO_TIMESTAMPNS_OLD:
		case SO_TIMESTAMPING_OLD:
		case SO_TIMESTAMP_NEW:
		case SO_TIMESTAMPNS_NEW:
		case SO_TIMESTAMPING_NEW:
			return v != 0;
		}
	if (level == IPPROTO_TCP)
		switch (opt) {
		case 31: /* TCP_ULP: kTLS and the like */
			return 1;
		case 36: /* TCP_INQ */
		case 19: /* TCP_REPAIR */
			return v != 0;
		}
	return 0;
}

/* --- TCP_INQ (shim.h) ------------------------------------------------------------
 * Set after the move it is the ring's, as SO_RCVLOWAT is: each recvmsg
 * gets TCP's TCP_CM_INQ, the kernel's tcp_inq_hint, which counts the
 * bytes left to read plus the peer's FIN once it came (a sequence number;
 * a reset adds nothing).  It took the connection back to TCP, which a peer
 * busy elsewhere did not answer: a reset (tests/diff_shim.c).  Set before
 * the move, it keeps the connection on TCP (tcp_only_opt). */
static void inq_set(struct tsock *t, int on)
{
	if (on)
		atomic_fetch_or(&S(t)->flags, TF_INQ);
	else
		atomic_fetch_and(&S(t)->flags, ~TF_INQ);
}

/* Whether the peer's FIN reached us, as TCP's count has it: its shutdown,
 * or its close with all of ours read (a close with bytes unread is a reset,
 * with no FIN before it), whatever reset came after; else the state TCP's
 * socket would be in, with no reset.  Not when we reset on its data after
 * we shut both ways (shut_both): its FIN, behind that data, never came. */
static int fin_came(struct tsock *t, int fd)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	int64_t peer = shunt_end_peer_state(END(t));

	if ((shunt_end_state(END(t)) & SHUNT_ST_CLOSED) &&
	    (atomic_load(&S(t)->reset_told) || atomic_load(&S(t)->kreset)))
		return 0;
	/* A peer back on TCP whose FIN our kernel counted: a reset after it
	 * leaves it counted, as TCP's rcv_nxt does (the hint was one short
	 * after the peer's shutdown and a reset on our data: tests/diff_shim.c
	 * seed 268277989848630). */
	if (shim_peer_fin(S(t)) || (shim_peer_back(t) && shim_back_fin_came(t, fd)))
		return 1;
	if ((peer >= 0 && (peer & SHUNT_ST_RESET)) || atomic_load(&S(t)->reset_told) ||
	    shim_tcp_info_get(t, fd, &ti, &tl) < 0 || tl < 1)
		return 0;
	if (shim_kern_fins(ti.tcpi_state) & SHIM_FIN_IN)
		return 1;
	/* A peer back on TCP told whether its close sent a FIN (its switch
	 * word, above): a reset alone leaves our socket closed too (the hint
	 * was one more than TCP's after its SO_LINGER {1, 0} close:
	 * tests/diff_shim.c seed 171949316579308). */
	return ti.tcpi_state == TCP_CLOSE && !shim_peer_back(t);
}

/* Read past, the FIN leaves TCP's count, and its "done" puts the 1 back:
 * either way the count has it. */
static int inq_hint(struct tsock *t, int fd)
{
	int k = 0;

	if (shim_fionread(t, fd, &k) < 0)
		k = 0;
	return k + fin_came(t, fd);
}

void shim_inq_put(struct tsock *t, int fd, struct msghdr *m, void *ctl, size_t clen)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} c;
	int v = inq_hint(t, fd);

	memset(&c, 0, sizeof(c));
	c.h.cmsg_len = CMSG_LEN(sizeof(int));
	c.h.cmsg_level = SOL_TCP;
	c.h.cmsg_type = TCP_CM_INQ;
	memcpy(CMSG_DATA(&c.h), &v, sizeof(v));
	/* put_cmsg: no room for a header, nothing; a short room, the cmsg
	 * cut to it; MSG_CTRUNC either way. */
	if (!ctl || clen < sizeof(struct cmsghdr)) {
		m->msg_flags |= MSG_CTRUNC;
		return;
	}
	size_t n = CMSG_LEN(sizeof(int));
	if (clen < n) {
		m->msg_flags |= MSG_CTRUNC;
		n = clen;
		c.h.cmsg_len = n;
	}
	memcpy(ctl, &c, n);
	m->msg_control = ctl;
	m->msg_controllen = SHUNT_MIN(clen, CMSG_SPACE(sizeof(int)));
}

/* What an option the program set means for us. */
void shim_sockopt(struct tsock *t, int fd, int level, int opt, const void *val,
		  socklen_t len)
{
	struct tslot *s = S(t);
	int only;

	if (is_timeo(level, opt)) {
		int rx = opt == SO_RCVTIMEO || opt == SO_RCVTIMEO_NEW;
		atomic_store(rx ? &s->rcvtimeo_ns : &s->sndtimeo_ns, tv_ns(val, len));
	} else if (level == SOL_SOCKET && opt == SO_LINGER && len >= sizeof(struct linger)) {
		const struct linger *l = val;
		if (l->l_onoff && l->l_linger == 0)
			atomic_fetch_or(&s->flags, TF_LINGER0);
		else
			atomic_fetch_and(&s->flags, ~TF_LINGER0);
	} else if (level == IPPROTO_TCP && opt == TCP_INQ && moved(t)) {
		inq_set(t, len >= sizeof(int) && *(const int *)val != 0);
	} else if ((only = tcp_only_opt(level, opt, val, len))) {
		shim_tcp_only(t, fd, only == 2);
	}
}

/* --- TCP_NODELAY and TCP_CORK (shim.h) ------------------------------------------ */

static int32_t *nd_value(struct tslot *s, int opt)
{
	return opt == TCP_CORK ? &s->nd_cork : &s->nd_nodelay;
}

/* The slot's option lock, this thread's signals held off meanwhile: a
 * handler may call setsockopt() or getsockopt() (both async-signal-safe),
 * which take it too, and the thread would wait on itself for good (a
 * helper's review: setsockopt(SO_LINGER) from a handler hung a loop of
 * getsockopt(SO_LINGER)). */
static void opt_lock(struct tslot *s, sigset_t *was)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, was);
	shim_lock(&s->opt_mu);
}

static void opt_unlock(struct tslot *s, const sigset_t *was)
{
	shim_unlock(&s->opt_mu);
	pthread_sigmask(SIG_SETMASK, was, NULL);
}

static int nd_kernel_get(int fd, int opt, int32_t *out)
{
	int v = 0;
	unsigned len = sizeof(v);
	int rc = sys_getsockopt(fd, IPPROTO_TCP, opt, &v, &len);

	*out = !!v;
	return rc;
}

static void nd_kernel_set(int fd, int opt, int v)
{
	sys_setsockopt(fd, IPPROTO_TCP, opt, &v, sizeof(v));
}

/* What the doorbells need, from the kernel's values nodelay and cork:
 * Nagle's off first, as uncorking then sends what waits at once. */
static void nd_kernel_force(int fd, int nodelay, int cork)
{
	if (!nodelay)
		nd_kernel_set(fd, TCP_NODELAY, 1);
	if (cork)
		nd_kernel_set(fd, TCP_CORK, 0);
}

void shim_nodelay_take(struct tsock *t, int fd)
{
	struct tslot *s = S(t);

	sigset_t was;
	opt_lock(s, &was);
	/* Once: while we hold them, the kernel's values are not the program's.
	 * Values we cannot read we cannot give back: then we leave them.  Odd
	 * from before the reads: a call without the lock that overlapped them
	 * does its work again under it (below, "Before the move, no lock"). */
	atomic_fetch_add(&s->nd_takes, 1);
	if (!s->nd_virtual && nd_kernel_get(fd, TCP_NODELAY, &s->nd_nodelay) == 0 &&
	    nd_kernel_get(fd, TCP_CORK, &s->nd_cork) == 0) {
		atomic_store(&s->nd_virtual, 1);
		nd_kernel_force(fd, s->nd_nodelay, s->nd_cork);
	}
	atomic_fetch_add(&s->nd_takes, 1);
	opt_unlock(s, &was);
}

/* --- SO_LINGER while the ring's leftovers are resent (shim.h) ----------------
 * Our answer to a peer going back resends what it left unread of our
 * ring (back.c, flush_locked): bytes send() told the program were sent.
 * A process that ended by _exit() or a signal before they all went closed
 * its kernel's socket with a FIN behind the part that had: the new holder
 * read a clean end of stream short of them (a helper's reproducer: 114788
 * of 2097152 bytes; TCP's had them all in its queue).  Meanwhile the
 * kernel's socket has SO_LINGER {1, 0}, so that such an end resets the
 * connection: loud (`t_shim_flags` `answer_exit_loud`).  The program's
 * value comes back once they went; its own calls meanwhile set it on the
 * kernel's socket (its value first), which checks it, read it back and
 * hold again. */
static int linger_read(int fd, struct linger *l)
{
	unsigned len = sizeof(*l);

	return sys_getsockopt(fd, SOL_SOCKET, SO_LINGER, l, &len);
}

void shim_linger_hold(struct tsock *t, int fd)
{
	struct tslot *s = S(t);

	sigset_t was;
	opt_lock(s, &was);
	if (!s->lg_virtual && linger_read(fd, &s->lg_program) == 0) {
		s->lg_virtual = 1;
		shim_linger0(fd);
	}
	opt_unlock(s, &was);
}

void shim_linger_put(int fd, const struct linger *l)
{
	struct linger on = { 1, l->l_linger };

	sys_setsockopt(fd, SOL_SOCKET, SO_LINGER, &on, sizeof(on));
	if (!l->l_onoff)
		sys_setsockopt(fd, SOL_SOCKET, SO_LINGER, l, sizeof(*l));
}

/* Called with opt_mu held (shim_tx_opts_restore: our sends left the
 * ring for good, the resend's bytes went). */
static void linger_restore_locked(struct tslot *s, int fd)
{
	if (s->lg_virtual)
		shim_linger_put(fd, &s->lg_program);
	s->lg_virtual = 0;
}

int shim_linger_set(struct tsock *t, int fd, const void *val, socklen_t len)
{
	struct tslot *s = S(t);

	sigset_t was;
	opt_lock(s, &was);
	if (s->lg_virtual)
		shim_linger_put(fd, &s->lg_program); /* the kernel keeps a time it is not told */
	int rc = REAL(setsockopt)(fd, SOL_SOCKET, SO_LINGER, val, len);
	int err = errno;
	if (s->lg_virtual && linger_read(fd, &s->lg_program) == 0)
		shim_linger0(fd);
	opt_unlock(s, &was);
	if (rc == 0)
		shim_sockopt(t, fd, SOL_SOCKET, SO_LINGER, val, len);
	errno = err;
	return rc;
}

/* getsockopt of a SOL_SOCKET option whose value we keep for the program
 * while the kernel's socket has ours: the kernel's call (its checks, its
 * length), then the program's value over it, where kept() says it is
 * (NULL: the kernel's is the program's), under opt_mu. */
static int kept_get(struct tsock *t, int fd, int opt, void *val, socklen_t *len,
		    const void *(*kept)(const struct tslot *s), size_t size)
{
	struct tslot *s = S(t);
	sigset_t was;

	opt_lock(s, &was);
	int rc = REAL(getsockopt)(fd, SOL_SOCKET, opt, val, len);
	int err = errno;
	const void *mine = rc == 0 ? kept(s) : NULL;
	if (mine)
		memcpy(val, mine, SHUNT_MIN((size_t)*len, size));
	opt_unlock(s, &was);
	errno = err;
	return rc;
}

static const void *linger_kept(const struct tslot *s)
{
	return s->lg_virtual ? &s->lg_program : NULL;
}

int shim_linger_get(struct tsock *t, int fd, void *val, socklen_t *len)
{
	return kept_get(t, fd, SO_LINGER, val, len, linger_kept, sizeof(struct linger));
}

/* Called with opt_mu held. */
static void nd_restore_locked(struct tslot *s, int fd)
{
	if (s->nd_virtual) {
		if (!s->nd_nodelay)
			nd_kernel_set(fd, TCP_NODELAY, 0);
		if (s->nd_cork)
			nd_kernel_set(fd, TCP_CORK, 1);
		s->nd_virtual = 0;
	}
}

/* Our sends left the ring for good (back.c): the kernel's socket sends
 * them with the program's Nagle and cork, as TCP's would.  Until our reads
 * too were the kernel's, a corked send went at once and drew the closed
 * peer's reset (tests/diff_shim.c seed 220796898074283, through a region). */
void shim_tx_opts_restore(struct tsock *t, int fd)
{
	struct tslot *s = S(t);

	sigset_t was;
	opt_lock(s, &was);
	nd_restore_locked(s, fd);
	linger_restore_locked(s, fd);
	opt_unlock(s, &was);
}

void shim_nodelay_restore(struct tsock *t, int fd)
{
	struct tslot *s = S(t);

	sigset_t was;
	opt_lock(s, &was);
	nd_restore_locked(s, fd);
	if (s->rcvlowat > 1)
		sys_setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &s->rcvlowat, sizeof(s->rcvlowat));
	s->rcvlowat = 0;
	opt_unlock(s, &was);
}

/* --- SO_RCVLOWAT (shim.h) ---------------------------------------------------------
 * Set after the move it acts on the ring's bytes (end.c, rx_need), with no
 * way back to TCP, which needs the peer's answer (a peer that made no call
 * within 5 s had the connection reset: tests/diff_shim.c).  The kernel's
 * socket keeps 1 meanwhile: it carries one-byte doorbells, and its own
 * SO_RCVLOWAT would keep a wait for them asleep.  It checks and caps the
 * value first (set, read back, set back), and gets it back with the rest
 * on the way back (shim_nodelay_restore). */
int shim_rcvlowat_set(struct tsock *t, int fd, const void *val, socklen_t len)
{
	struct tslot *s = S(t);
	int v = 1, one = 1;
	unsigned l = sizeof(v);

	sigset_t was;
	opt_lock(s, &was);
	int rc = REAL(setsockopt)(fd, SOL_SOCKET, SO_RCVLOWAT, val, len);
	int err = errno, ring = rc == 0 && moved(t) && !(phase_of(t) & PH_RX_PLAIN);
	if (ring && sys_getsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, &l) == 0) {
		s->rcvlowat = v;
		shunt_end_set_rcvlowat(END(t), (uint32_t)v);
		sys_setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	}
	opt_unlock(s, &was);
	if (rc == 0 && !ring)
		shim_sockopt(t, fd, SOL_SOCKET, SO_RCVLOWAT, val, len);
	errno = err;
	return rc;
}

static const void *rcvlowat_kept(const struct tslot *s)
{
	return s->rcvlowat ? &s->rcvlowat : NULL;
}

int shim_rcvlowat_get(struct tsock *t, int fd, void *val, socklen_t *len)
{
	return kept_get(t, fd, SO_RCVLOWAT, val, len, rcvlowat_kept, sizeof(int32_t));
}

/* The kernel's checks of an int option: a negative length (the socket
 * call), a short one (TCP's), then the copy of the value. */
static int int_option(const void *val, socklen_t len, int *out)
{
	if ((int)len < 0 || len < sizeof(int))
		return -EINVAL;
	if (!val)
		return -EFAULT;
	memcpy(out, val, sizeof(*out));
	return 0;
}

/*
 * Before the move, no lock: the kernel's values are the program's, and a
 * call goes straight to the kernel, unless a take (shim_nodelay_take, odd
 * nd_takes) ran meanwhile; then it does its work again under opt_mu.  The
 * lock costs a signal mask set and put back, two system calls, on every
 * connection of a client that turns Nagle off (wrk, curl, most HTTP
 * clients: 2 of wrk's 17 system calls a request, strace).  A take's reads
 * of the kernel follow its odd store, and the call's second look follows
 * its kernel call and a fence: one of them sees the other (the fences
 * order the two pairs as a seqlock's reader and writer).
 */
static int nd_unlocked(struct tslot *s, uint32_t *takes)
{
	*takes = atomic_load(&s->nd_takes);
	return !(*takes & 1) && !atomic_load(&s->nd_virtual);
}

static int nd_overlapped(struct tslot *s, uint32_t takes)
{
	atomic_thread_fence(memory_order_seq_cst);
	return atomic_load(&s->nd_takes) != takes;
}

int shim_nodelay_set(struct tsock *t, int fd, int opt, const void *val, socklen_t len)
{
	struct tslot *s = S(t);
	uint32_t takes;
	int rc, v, again = 0;

	if (nd_unlocked(s, &takes)) {
		rc = REAL(setsockopt)(fd, IPPROTO_TCP, opt, val, len);
		if (rc != 0 || !(again = nd_overlapped(s, takes)))
			return rc;
	}
	sigset_t was;
	opt_lock(s, &was);
	if (!s->nd_virtual) {
		rc = REAL(setsockopt)(fd, IPPROTO_TCP, opt, val, len);
	} else {
		/* Our set that overlapped the take may have reached the
		 * kernel after it: the doorbells' values again. */
		if (again)
			nd_kernel_force(fd, 0, 1);
		rc = int_option(val, len, &v);
		if (rc == 0)
			*nd_value(s, opt) = !!v; /* the kernel keeps a flag */
		/* TCP's setting sends what a MSG_MORE send left waiting, which
		 * after the peer's close is in our kernel socket: set again,
		 * the kernel's Nagle off does the same (t_shim_flags
		 * more_after_close_pushed). */
		if (rc == 0 && !s->nd_cork && (opt == TCP_CORK) != !!v)
			nd_kernel_set(fd, TCP_NODELAY, 1);
		rc = (int)shim_err(rc);
	}
	opt_unlock(s, &was);
	return rc;
}

int shim_nodelay_get(struct tsock *t, int fd, int opt, void *val, socklen_t *len)
{
	struct tslot *s = S(t);
	uint32_t takes;

	if (nd_unlocked(s, &takes)) {
		int rc = REAL(getsockopt)(fd, IPPROTO_TCP, opt, val, len);
		if (rc != 0 || !nd_overlapped(s, takes))
			return rc;
	}
	sigset_t was;
	opt_lock(s, &was);
	/* The kernel checks the arguments and writes its length (at most an
	 * int) and its value; while we hold the options, the program's value
	 * goes over its own, as many bytes of it. */
	int rc = REAL(getsockopt)(fd, IPPROTO_TCP, opt, val, len);
	if (rc == 0 && s->nd_virtual && *len > 0) {
		int v = *nd_value(s, opt);
		memcpy(val, &v, SHUNT_MIN((size_t)*len, sizeof(v)));
	}
	opt_unlock(s, &was);
	return rc;
}

/* --- Readiness ----------------------------------------------------------------- */

static int kernel_revents(int fd, int events)
{
	struct pollfd p = { .fd = fd, .events = (short)events };
	struct timespec zero = { 0, 0 };

	return sys_ppoll(&p, 1, &zero) > 0 ? p.revents : 0;
}

/*
 * A peer whose sends have not switched yet may have emptied our ring all
 * the same: a reactor that waits for room before it reads again (Java's
 * NIO echo) leaves that peer's writer blocked in the kernel, short of its
 * switch, for good (t_shim_epoll epoll_write_first: stalled until the
 * program's timeout in 3 runs of 5).
 */
int shim_rings_no_room(struct tsock *t)
{
	uint32_t ph = phase_of(t);

	return moved(t) && (ph & PH_TX_RING) && !(ph & (PH_RX_RING | PH_RX_PLAIN | PH_TX_BACK)) &&
	       (!shim_peer_switched(t) || atomic_load(&S(t)->rx_tcp) < atomic_load(&S(t)->x_peer));
}

int shim_room_unrung(struct tsock *t)
{
	return shim_rings_no_room(t) &&
	       !(shunt_end_poll(END(t), NULL, POLLOUT, SHUNT_ARM_NONE) & POLLOUT);
}

int shim_rd_shut(struct tsock *t)
{
	return moved(t) && atomic_load_explicit(&END(t)->rd_shut, memory_order_relaxed);
}

int shim_tx_ringed(struct tsock *t)
{
	return moved(t) &&
	       (phase_of(t) & (PH_TX_RING | PH_TX_BACK | PH_TX_PLAIN)) == PH_TX_RING;
}

/* Both directions on the rings for good, nothing pending on the stream but
 * doorbells: the kernel's side of the socket has news only in an event. */
int shim_settled(struct tsock *t)
{
	uint32_t ph = phase_of(t);

	return moved(t) &&
	       (ph & (PH_TX_RING | PH_RX_RING | PH_TX_BACK | PH_TX_PLAIN | PH_RX_PLAIN | PH_NOBELL)) ==
		       (PH_TX_RING | PH_RX_RING) &&
	       !shim_peer_asks(t) && !shim_back_pending(t) && !shim_proof_pending(S(t));
}

/*
 * A connection whose reads went back to TCP: the kernel's word that it is
 * readable, taken while the peer's doorbells were still on the stream (by
 * our caller, or by us before another thread or process of the family
 * took them and went plain), may be those doorbells alone.  Asked again:
 * a peer's exec'd child going back while we polled showed POLLIN where TCP
 * shows nothing (t_shim_proc vfork_close_at_once with fork(), 3 runs in
 * 100).  Only such connections pay the call.
 */
static int kern_fresh(struct tsock *t, int fd, int events, int kern)
{
	if (kern > 0 && (kern & POLLIN) && (phase_of(t) & PH_RX_PLAIN))
		return kernel_revents(fd, events);
	return kern;
}

/* Our sends back on TCP, our reads still on the ring: the peer's FIN in
 * the ring and ours, by the ring or by TCP, hang up, as TCP's both FINs
 * do.  The ring's hang-up was not asked, and the kernel's socket has not
 * seen the peer's FIN: POLLHUP came only once our reads left the ring
 * (tests/diff_shim.c seed 59431592097002). */
static int half_back_hup(struct tsock *t, int fd, int ph, struct shunt_bell *b)
{
	if ((ph & (PH_RX_RING | PH_RX_PLAIN)) != PH_RX_RING)
		return 0;
	if (!(shunt_end_poll(END(t), b, POLLRDHUP, SHUNT_ARM_NONE) & POLLRDHUP))
		return 0;
	int ours = (shunt_end_state(END(t)) & SHUNT_ST_SHUT_WR) || shim_kern_fin_sent(fd);
	return ours ? POLLHUP : 0;
}

/* SO_RCVLOWAT above the ring's bytes: the peer's TCP bytes queued behind
 * its ring once it went back count too, as TCP counts all it queued (the
 * ring's 1 byte of 106 kept POLLIN off: tests/diff_shim.c seed
 * 56424222423672). */
static int lowat_met_past_ring(struct tsock *t, int fd)
{
	uint32_t lowat = atomic_load_explicit(&END(t)->rcvlowat, memory_order_relaxed);
	/* The shared indices alone: any thread may ask (the reader's own
	 * cache is its thread's; TSan saw the race). */
	int64_t n = lowat > 1 ? shunt_ring_look_fill(&END(t)->rx) : 0;

	return n > 0 && (uint64_t)n + shim_back_queued(t, fd) >= lowat;
}

static int readiness(struct tsock *t, int fd, int events, int arm, int *kernp)
{
	struct shunt_bell b = shim_bell(t, fd);
	int kern = *kernp;

	if ((phase_of(t) & PH_TX_BACK) || shim_peer_asks(t))
		back_steps(t, fd);
	if (!moved(t))
		return *kernp = kern >= 0 ? kern_fresh(t, fd, events, kern)
					  : kernel_revents(fd, events);
	uint32_t ph = phase_of(t);
	/* Our ring's leftovers still go first: not writable yet. */
	if ((ph & (PH_TX_BACK | PH_TX_PLAIN)) == PH_TX_BACK)
		events &= ~POLLOUT;
	int on_kernel = events & ~ring_bits(events, ph) & (POLLIN | POLLRDHUP | POLLOUT);

	/* The kernel first: a doorbell it shows was sent after the peer had
	 * published its switch, which the look below then sees, so that it is
	 * never taken for data.  Its POLLRDHUP tells of the stream's end,
	 * which is the peer's close or death, whatever the rings are asked. */
	if (kern < 0)
		kern = kernel_revents(fd, (on_kernel ? on_kernel | POLLIN : 0) | POLLPRI | POLLRDHUP);
	*kernp = kern;
	/* The stream has nothing more for us once we are at the peer's offset. */
	shim_ring_at_x(t);
	ph = phase_of(t);
	int ring = ring_bits(events, ph), ev = 0;
	on_kernel = events & ~ring & (POLLIN | POLLRDHUP | POLLOUT);
	/* A ring that came: take it off the stream, so that it wakes once;
	 * the stream's end marks the peer gone (bell.c). */
	if ((ph & (PH_RX_RING | PH_RX_PLAIN)) == PH_RX_RING &&
	    (kern & (POLLIN | POLLRDHUP | POLLHUP)) && shim_bell_ops.drain(&b, SHUNT_WAIT_ALL) < 0)
		shunt_end_peer_gone(END(t));
	/* A FIN behind doorbells: the drain stops at them, and an epoll
	 * set's edge-triggered kernel side tells of that FIN once.  Asked
	 * now (bell.c, peer_dead), or a writer waiting for room in the ring of
	 * a peer that exited never heard of it (lighttpd kept wrk's
	 * connections in CLOSE-WAIT, waiting to write, for minutes). */
	if ((ph & (PH_RX_RING | PH_RX_PLAIN)) == PH_RX_RING && (kern & POLLRDHUP) &&
	    !atomic_load(&END(t)->peer_gone))
		shunt_end_check_peer(END(t), &b);
	/* The ring's side says hang-ups and errors even when nothing is asked;
	 * half back on TCP, only what the ring is asked, and the hang-up of
	 * both FINs (half_back_hup). */
	if (ph & (PH_RX_PLAIN | PH_TX_BACK))
		ev = (ring ? shunt_end_poll(END(t), &b, ring, arm) & ring : 0) |
		     half_back_hup(t, fd, ph, &b);
	else if (ph & (PH_RX_RING | PH_TX_RING))
		ev = shunt_end_poll(END(t), &b, ring, arm);
	/* The ring's hang-up (both sides shut their rings) is none while our
	 * reads are short of the peer's switch offset: its TCP bytes before it
	 * come first, perhaps still in its kernel, and TCP's FIN follows them.
	 * libuv takes a hang-up after a short read for the end of the stream
	 * (uvloop's echo clients lost the tail of a stream).  Our own
	 * SHUT_RD and SHUT_WR hang up at once, as TCP's. */
	if (!(ph & PH_RX_RING) && !(ev & POLLERR) && !shim_rd_shut(t))
		ev &= ~POLLHUP;
	/* Whatever the ring does, the socket's own error queue (zero-copy
	 * completions) and urgent byte are the kernel's to report; a reset of
	 * its socket (hung up too) is one as reset_due says. */
	int kern_reset = (kern & (POLLERR | POLLHUP)) == (POLLERR | POLLHUP);
	ev |= kern & ((kern_reset ? 0 : POLLERR) | (events & POLLPRI));
	if (reset_due(t, fd, kern_reset, 0))
		ev |= POLLERR | POLLHUP;
	else if ((kern & POLLHUP) && (!peer_clean(t) || atomic_load(&S(t)->sent_after)))
		ev |= POLLHUP; /* TCP's socket is closed by that reset too */
	if (on_kernel)
		ev |= kern_fresh(t, fd, on_kernel | POLLPRI | POLLRDHUP, kern) & (on_kernel | POLLHUP);
	/* A reset the program has read is no error any more; the hang-up stays. */
	if (atomic_load(&S(t)->reset_told) && !(kern & POLLERR))
		ev &= ~POLLERR;
	/* Both ends full: the send that follows goes back to TCP. */
	if ((events & POLLOUT) && !(ev & POLLOUT) && shim_jam_due(t))
		ev |= POLLOUT;
	if ((events & POLLIN) && !(ev & POLLIN) && lowat_met_past_ring(t, fd))
		ev |= POLLIN;
	return ev;
}

/* Shut for writing, its FIN behind the ring's leftovers: TCP's socket is
 * writable at once (a send fails at once, fin_due_send); ours waited for
 * room the leftovers took (a helper's review, t_shim_flags
 * deferred_fin_pollout). */
int shim_readiness(struct tsock *t, int fd, int events, int arm, int *kernp)
{
	int ev = readiness(t, fd, events, arm, kernp);

	if ((events & POLLOUT) && (atomic_load(&S(t)->flags) & TF_FIN_DUE))
		ev |= POLLOUT;
	return ev;
}
