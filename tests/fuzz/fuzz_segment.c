/*
 * fuzz_segment.c - a connection end (src/core/end.c) against a peer that
 * writes anything anywhere in the shared control page.
 *
 * The input is a program: each step sets one of the words the peer owns
 * (its state, its wait word, its ring's head, its consumer tail of ours,
 * its switch word, or the header) to a value from the input, then runs one
 * of our calls (send, receive, peek, discard, readiness, readable, close)
 * that must not wait.  Whatever the peer wrote, our calls return a size or
 * a negative errno, never touch memory outside the segment (ASan), and
 * never make a byte count larger than what was asked.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "end.h"
#include "medium.h"

#define CAP 4096u

static int no_ring(struct shunt_bell *b, uint32_t bits)
{
	(void)b;
	(void)bits;
	return 0;
}

static int no_sleep(struct shunt_bell *b, uint32_t bits, int64_t deadline)
{
	(void)b;
	(void)bits;
	(void)deadline;
	return -EAGAIN;
}

static int no_drain(struct shunt_bell *b, uint32_t bits)
{
	(void)b;
	(void)bits;
	return 0;
}

static int no_alive(struct shunt_bell *b)
{
	(void)b;
	return 0;
}

static const struct shunt_bell_ops quiet = { .ring = no_ring, .sleep = no_sleep, .drain = no_drain, .alive = no_alive };

struct input {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct input *in, size_t k)
{
	uint64_t v = 0;

	for (size_t i = 0; i < k && in->n; i++, in->n--)
		v |= (uint64_t)*in->p++ << (8 * i);
	return v;
}

/* The peer's words: side 1's, and whatever it may scribble. */
static void scribble(struct shunt_ctl *ctl, struct input *in)
{
	uint64_t v = take(in, 8);

	switch (take(in, 1) % 8) {
	case 0: atomic_store(&ctl->side[1].state, (uint32_t)v); break;
	case 1: atomic_store(&ctl->side[1].wait, (uint32_t)v); break;
	case 2: atomic_store(&ctl->head[1].v, v); break;
	case 3: atomic_store(&ctl->tail[0].v, v); break;
	case 4: atomic_store(&ctl->sw[1].flags, (uint32_t)v); break;
	case 5: ctl->hdr.ring_size = v; break;
	case 6: atomic_store(&ctl->head[1].v, atomic_load(&ctl->head[1].v) + (v & 0xffff)); break;
	case 7: atomic_store(&ctl->tail[0].v, atomic_load(&ctl->tail[0].v) + (v & 0xffff)); break;
	}
}

static void check(ssize_t n, size_t asked)
{
	if (n > 0 && (size_t)n > asked)
		abort();
}

static void call(struct shunt_end *e, struct shunt_bell *b, struct input *in)
{
	static uint8_t buf[2 * CAP];
	size_t len = (size_t)(take(in, 2) % sizeof(buf));
	const void *p;
	void *w;

	switch (take(in, 1) % 8) {
	case 0: check(shunt_end_send(e, b, buf, len, 0), len); break;
	case 1: check(shunt_end_recv(e, b, buf, len, 0), len); break;
	case 2: {
		ssize_t n = shunt_end_peek(e, b, &p, 0);
		if (n > 0) {
			memcpy(buf, p, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf));
			shunt_end_release(e, b, (size_t)n / 2);
		}
		break;
	}
	case 3: check(shunt_end_discard(e, b, len, 0), len); break;
	case 4: shunt_end_poll(e, b, POLLIN | POLLOUT | POLLRDHUP, SHUNT_ARM_LAZY); break;
	case 5: shunt_end_readable(e); shunt_end_unread_by_peer(e); break;
	case 6: {
		ssize_t n = shunt_end_reserve(e, b, &w, 1, 0);
		if (n > 0) {
			memset(w, 0x5a, (size_t)n);
			shunt_end_commit(e, b, (size_t)n / 3);
		}
		break;
	}
	case 7: shunt_end_shutdown(e, b, (int)(take(in, 1) % 3)); break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct shunt_seg seg;
	int64_t fd;

	if (shunt_medium_local.create(&seg, CAP, 0x5a, &fd) < 0)
		abort();
	close((int)fd);
	struct shunt_end e;
	struct shunt_bell b = { &quiet, { -1, -1 }, NULL };
	shunt_end_init(&e, &seg, 0, 0, 1);
	struct input in = { data, size };
	while (in.n) {
		scribble(seg.ctl, &in);
		call(&e, &b, &in);
	}
	shunt_end_close(&e, &b, SHUNT_CLOSE_TCP);
	seg.medium->release(&seg);
	return 0;
}
