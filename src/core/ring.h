/*
 * ring.h - a single-producer/single-consumer byte ring in shared memory.
 *
 * This layer knows nothing of connections or sockets: it moves bytes through
 * a data area of `cap` bytes (a power of two) with two free-running 64-bit
 * indices.  `head` counts bytes ever produced, `tail` bytes ever consumed;
 * head - tail is the fill.  The data area is mapped twice back to back (see
 * segment.c), so any span of up to `cap` bytes starting anywhere in the first
 * mapping is contiguous in memory and no call has to split at the wrap.
 *
 * Each side keeps its own index privately (`pos`) and never reads it back
 * from shared memory, so a peer that scribbles on the shared indices can only
 * make this side see a bad *peer* index, which every load validates.
 *
 * The hot path is inline; every acquire names the release it pairs with.
 */
#ifndef SHUNT_RING_H
#define SHUNT_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* One side's view of a ring. */
struct shunt_ring {
	_Atomic uint64_t *head; /* shared: written by the producer only */
	_Atomic uint64_t *tail; /* shared: written by the consumer only */
	uint8_t *data;          /* 2 * cap bytes: the data area, mapped twice */
	uint64_t cap;           /* power of two, our own copy (never re-read) */
	uint64_t mask;
	uint64_t pos;           /* our index: head if producer, tail if consumer */
	uint64_t peer;          /* last validated value of the peer's index */
	_Atomic uint64_t own;   /* pos as its thread last stored it: other threads' looks */
};

void shunt_ring_init(struct shunt_ring *r, _Atomic uint64_t *head,
		     _Atomic uint64_t *tail, uint8_t *data, uint64_t cap);

/* --- Producer --------------------------------------------------------- */

/*
 * Free bytes, or -EPROTO if the consumer's index is impossible.  The shared
 * tail is loaded only when the cached value does not already show `want`
 * free bytes, so a sender with room reads it at most once per call.
 */
static inline int64_t shunt_ring_space(struct shunt_ring *r, uint64_t want)
{
	uint64_t used = r->pos - r->peer;

	if (r->cap - used >= want)
		return (int64_t)(r->cap - used);
	/* Acquire pairs with the release in shunt_ring_release(): bytes the
	 * consumer gave back are no longer read by it once we see its tail. */
	uint64_t t = atomic_load_explicit(r->tail, memory_order_acquire);
	/* Valid only if old tail <= t <= head (unsigned distances). */
	if (t - r->peer > r->pos - r->peer)
		return -EPROTO;
	r->peer = t;
	return (int64_t)(r->cap - (r->pos - t));
}

/* Where the next byte goes; valid for up to shunt_ring_space() bytes. */
static inline uint8_t *shunt_ring_wptr(const struct shunt_ring *r)
{
	return r->data + (r->pos & r->mask);
}

/* Publish n bytes written at shunt_ring_wptr().  n <= free space. */
static inline void shunt_ring_commit(struct shunt_ring *r, uint64_t n)
{
	r->pos += n;
	atomic_store_explicit(&r->own, r->pos, memory_order_release);
	/* Release pairs with the acquire in shunt_ring_avail(): the consumer
	 * sees the bytes before it sees the index that covers them. */
	atomic_store_explicit(r->head, r->pos, memory_order_release);
}

/* --- Consumer --------------------------------------------------------- */

/*
 * Bytes ready, or -EPROTO if the producer's index is impossible.  The shared
 * head is loaded only when the cached value shows fewer than `want` bytes.
 */
static inline int64_t shunt_ring_avail(struct shunt_ring *r, uint64_t want)
{
	uint64_t avail = r->peer - r->pos;

	if (avail >= want && avail > 0)
		return (int64_t)avail;
	/* Acquire pairs with the release in shunt_ring_commit(). */
	uint64_t h = atomic_load_explicit(r->head, memory_order_acquire);
	/* Valid only if old head <= h <= tail + cap. */
	if (h - r->pos > r->cap || h - r->pos < avail)
		return -EPROTO;
	r->peer = h;
	return (int64_t)(h - r->pos);
}

/* Where the next unread byte is; valid for shunt_ring_avail() bytes. */
static inline const uint8_t *shunt_ring_rptr(const struct shunt_ring *r)
{
	return r->data + (r->pos & r->mask);
}

/* Give back n bytes read at shunt_ring_rptr().  n <= available. */
static inline void shunt_ring_release(struct shunt_ring *r, uint64_t n)
{
	r->pos += n;
	atomic_store_explicit(&r->own, r->pos, memory_order_release);
	/* Release pairs with the acquire in shunt_ring_space(): our reads of
	 * the bytes happen before the producer may overwrite them. */
	atomic_store_explicit(r->tail, r->pos, memory_order_release);
}

/* Bytes the producer has published but we have not consumed, without
 * updating the cache; used to test readiness.  -EPROTO if impossible. */
int64_t shunt_ring_peek_fill(const struct shunt_ring *r);
/* Free bytes as the consumer's index now says, without caching. */
int64_t shunt_ring_peek_space(const struct shunt_ring *r);

/*
 * The same for readiness asked by any thread, touching neither `pos` nor
 * `peer`, which belong to the thread that produces or consumes and may
 * change under the caller: our index as that thread last stored it
 * (`own`), the peer's from shared memory.  Fill on a ring we consume,
 * space on one we produce.  -EPROTO if impossible.
 */
int64_t shunt_ring_look_fill(const struct shunt_ring *r);
int64_t shunt_ring_look_space(const struct shunt_ring *r);

#endif /* SHUNT_RING_H */
