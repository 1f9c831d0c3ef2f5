/*
 * ring.c - the out-of-line part of the SPSC byte ring (see ring.h).
 */
#include "ring.h"

void shunt_ring_init(struct shunt_ring *r, _Atomic uint64_t *head,
		     _Atomic uint64_t *tail, uint8_t *data, uint64_t cap)
{
	r->head = head;
	r->tail = tail;
	r->data = data;
	r->cap = cap;
	r->mask = cap - 1;
	/* Both indices start at 0 in a fresh segment; a side that attaches later
	 * reads them through the validating calls, never trusts them here. */
	r->pos = 0;
	r->peer = 0;
	atomic_init(&r->own, 0);
}

int64_t shunt_ring_peek_fill(const struct shunt_ring *r)
{
	/* Acquire pairs with the release in shunt_ring_commit(). */
	uint64_t h = atomic_load_explicit(r->head, memory_order_acquire);

	if (h - r->pos > r->cap || h - r->pos < r->peer - r->pos)
		return -EPROTO;
	return (int64_t)(h - r->pos);
}

int64_t shunt_ring_peek_space(const struct shunt_ring *r)
{
	/* Acquire pairs with the release in shunt_ring_release(). */
	uint64_t t = atomic_load_explicit(r->tail, memory_order_acquire);

	if (t - r->peer > r->pos - r->peer)
		return -EPROTO;
	return (int64_t)(r->cap - (r->pos - t));
}

/* Head - tail, our own index from `own`: the shared copy is the peer's
 * to write too, and a peer that set our tail one short of its head had
 * every poll of ours say readable while each read found nothing (100%
 * CPU; a helper's attack).  The tail first: its writer acquired a head at
 * least as new before it released the tail (shunt_ring_avail, then
 * _release), so the head read after it is never behind it.  It may be far
 * ahead: between the two loads the reader may consume and the writer fill
 * the room that freed, so more than a ring apart is a look from another
 * thread (a poll) caught between them, and only a pair that stays so is
 * the peer's doing. */
#define LOOK_TRIES 16

static int64_t look(const struct shunt_ring *r, const _Atomic uint64_t *head,
		    const _Atomic uint64_t *tail)
{
	for (int i = 0; i < LOOK_TRIES; i++) {
		uint64_t t = atomic_load_explicit(tail, memory_order_acquire);
		uint64_t h = atomic_load_explicit(head, memory_order_acquire);
		if (h - t <= r->cap)
			return (int64_t)(h - t);
	}
	return -EPROTO;
}

int64_t shunt_ring_look_fill(const struct shunt_ring *r)
{
	return look(r, r->head, &r->own);
}

int64_t shunt_ring_look_space(const struct shunt_ring *r)
{
	int64_t n = look(r, &r->own, r->tail);

	return n < 0 ? n : (int64_t)r->cap - n;
}
