/*
 * wake.h - sleeping and waking across processes without losing a wake-up.
 *
 * Each side of a connection has a wait word in shared memory and a doorbell,
 * an eventfd it created itself.  A side that runs out of work sets bits in
 * its wait word (arm), re-checks its condition, and only then blocks on its
 * doorbell.  A side that makes progress (publishes data, frees space, changes
 * state) checks the peer's wait word and rings the peer's doorbell only if
 * the matching bit is set, clearing it first, so a busy pair makes no
 * syscalls at all and a sleeping peer is rung once per sleep.
 *
 * Why no wake-up is lost (store-buffering, docs/design.md): the sleeper does
 *   W(wait |= bit); FENCE; R(ring state)      (shunt_wait_arm + re-check)
 * and the waker does
 *   W(ring state); FENCE; R(wait & bit)        (shunt_wait_should_wake)
 * With a seq_cst fence between each side's write and read, at least one
 * side sees the other's write: either the sleeper sees the progress and does
 * not sleep, or the waker sees the bit and rings.  An eventfd counts rings,
 * so a ring that lands before the sleeper reaches poll() is not missed.
 *
 * This layer knows nothing of rings or sockets; the fence and check cost a
 * few nanoseconds per call, the syscalls happen only around sleeps.
 */
#ifndef SHUNT_WAKE_H
#define SHUNT_WAKE_H

#include <stdatomic.h>
#include <stdint.h>

/* Announce that this side is about to wait for `bits`.  The caller must
 * re-check its condition after this and before sleeping. */
static inline void shunt_wait_arm(_Atomic uint32_t *mine, uint32_t bits)
{
	atomic_fetch_or_explicit(mine, bits, memory_order_relaxed);
	/* Pairs with the fence in shunt_wait_should_wake(). */
	atomic_thread_fence(memory_order_seq_cst);
}

/* This side no longer waits for `bits` (it found its condition true). */
static inline void shunt_wait_disarm(_Atomic uint32_t *mine, uint32_t bits)
{
	if (atomic_load_explicit(mine, memory_order_relaxed) & bits)
		atomic_fetch_and_explicit(mine, ~bits, memory_order_relaxed);
}

/*
 * After making progress that satisfies `bits`: does the peer sleep on it?
 * Returns non-zero when the caller must ring the peer's doorbell; the bits
 * are cleared so that concurrent wakers ring only once.
 */
static inline int shunt_wait_should_wake(_Atomic uint32_t *peer, uint32_t bits)
{
	/* Pairs with the fence in shunt_wait_arm(). */
	atomic_thread_fence(memory_order_seq_cst);
	if (!(atomic_load_explicit(peer, memory_order_relaxed) & bits))
		return 0;
	return (atomic_fetch_and_explicit(peer, ~bits, memory_order_relaxed) & bits) != 0;
}

/* Result bits of shunt_doorbell_sleep(). */
#define SHUNT_SLEPT_RUNG  0x1 /* our doorbell rang (and was drained) */
#define SHUNT_SLEPT_WATCH 0x2 /* the watched fd is readable or hung up */

/* Create a doorbell: a non-blocking, close-on-exec eventfd. */
int shunt_doorbell_new(void);
/* Ring a doorbell.  0 or a negative errno. */
int shunt_doorbell_ring(int efd);
/* Consume any pending rings without blocking. */
void shunt_doorbell_drain(int efd);
/*
 * Block until our doorbell rings or watch_fd (if >= 0) becomes readable or
 * hangs up, or timeout_ms passes (-1: no limit).  Returns SHUNT_SLEPT_* bits,
 * 0 on timeout, or -EINTR.
 */
int shunt_doorbell_sleep(int efd, int watch_fd, int timeout_ms);

#endif /* SHUNT_WAKE_H */
