/*
 * wake.h - sleeping and waking across processes without losing a wake-up.
 *
 * Each side of a connection has a wait word in shared memory and a doorbell
 * per direction of waiting.  A side that runs out of work sets bits in its
 * wait word (arm), re-checks its condition, and only then blocks on the
 * doorbell of that direction.  A side that makes progress (publishes data, frees space, changes
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
 * not sleep, or the waker sees the bit and rings.  A ring that lands before
 * the sleeper reaches poll() is not missed: it waits in the socket.
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

/* This side no longer waits for `bits` (it found its condition true).
 * Returns those the peer had cleared already: it rings, or is about to,
 * for a wait that will not sleep. */
static inline uint32_t shunt_wait_disarm(_Atomic uint32_t *mine, uint32_t bits)
{
	uint32_t old = atomic_load_explicit(mine, memory_order_relaxed);

	if (old & bits)
		old = atomic_fetch_and_explicit(mine, ~bits, memory_order_relaxed);
	return bits & ~old;
}

/*
 * After making progress that satisfies `bits`: does the peer sleep on it?
 * Returns the bits whose doorbells the caller must ring (0 almost always).
 * They are cleared here, so that concurrent wakers ring only once.
 */
static inline uint32_t shunt_wait_should_wake(_Atomic uint32_t *peer, uint32_t bits)
{
	/* Pairs with the fence in shunt_wait_arm(). */
	atomic_thread_fence(memory_order_seq_cst);
	if (!(atomic_load_explicit(peer, memory_order_relaxed) & bits))
		return 0;
	return atomic_fetch_and_explicit(peer, ~bits, memory_order_relaxed) & bits;
}

/*
 * Doorbells are connected UNIX stream sockets: a ring is one byte.  Rings
 * and drains pass MSG_DONTWAIT, so no flag the peer sets on a shared file
 * description can make this side block, and a hang-up (the peer's process
 * is gone) ends a sleep at once.  A side sleeps only on its own end.
 */

/* Ring the peer: 0, or a negative errno.  A full socket counts as rung. */
int shunt_bell_ring(int sock);
/* Consume pending rings without blocking: 1 if there were some, 0 if none,
 * -ECONNRESET if the peer hung up. */
int shunt_bell_drain(int sock);
/* Block until the bell rings or hangs up, and drain it.  Returns 1 (rung),
 * -ECONNRESET (hung up) or -EINTR. */
int shunt_bell_sleep(int sock);

#endif /* SHUNT_WAKE_H */
