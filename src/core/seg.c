/*
 * seg.c - the segment's header: written once by its creator, checked once
 * by the other side.
 */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>

#include "internal.h"
#include "seg.h"

/* The layout is an ABI between processes: pin every offset (docs/design.md). */
_Static_assert(offsetof(struct shunt_ctl, hdr) == 0, "hdr");
_Static_assert(offsetof(struct shunt_hdr, bell) == 24, "bell");
_Static_assert(offsetof(struct shunt_ctl, side) == 128, "side");
_Static_assert(offsetof(struct shunt_ctl, head) == 256, "head");
_Static_assert(offsetof(struct shunt_ctl, tail) == 512, "tail");
_Static_assert(offsetof(struct shunt_index, more) == 8, "more");
_Static_assert(offsetof(struct shunt_ctl, sw) == 768, "sw");
_Static_assert(offsetof(struct shunt_switch, tcp_off) == 8, "tcp_off");
_Static_assert(offsetof(struct shunt_switch, back_head) == 16, "back_head");
_Static_assert(offsetof(struct shunt_switch, back_tcp) == 24, "back_tcp");
_Static_assert(offsetof(struct shunt_switch, rx_tcp) == 32, "rx_tcp");
_Static_assert(offsetof(struct shunt_switch, fin_tcp) == 40, "fin_tcp");
_Static_assert(offsetof(struct shunt_switch, busy) == 64, "busy");
_Static_assert(offsetof(struct shunt_switch, bells) == 72, "bells");
_Static_assert(sizeof(struct shunt_switch) == 128, "switch size");
_Static_assert(sizeof(struct shunt_ctl) == 1024, "ctl size");
_Static_assert(sizeof(struct shunt_ctl) <= SHUNT_CTL_SIZE, "ctl fits its page");
_Static_assert(sizeof(struct shunt_side) == 12, "side size");

int shunt_seg_check_size(uint64_t cap)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	if (cap < SHUNT_RING_MIN || cap > SHUNT_RING_MAX || (cap & (cap - 1)))
		return -EINVAL;
	if (cap < page || SHUNT_CTL_SIZE % page)
		return -EINVAL;
	return 0;
}

void shunt_seg_init(struct shunt_seg *seg, uint8_t bell)
{
	/* The memory is fresh and zero-filled: indices, states and wait words
	 * all start at 0.  Only the header needs writing. */
	struct shunt_hdr *h = &seg->ctl->hdr;

	h->magic = SHUNT_SEG_MAGIC;
	h->version = SHUNT_SEG_VERSION;
	h->ctl_size = SHUNT_CTL_SIZE;
	h->ring_size = seg->cap;
	h->bell = bell;
}

int shunt_seg_check(const struct shunt_seg *seg, uint64_t cap, uint8_t *bell)
{
	/* Read once, through volatile: the peer may change it under us. */
	const volatile struct shunt_hdr *h = &seg->ctl->hdr;
	uint64_t magic = h->magic, size = h->ring_size;
	uint32_t version = h->version, ctl = h->ctl_size;
	uint8_t b = h->bell;

	if (magic != SHUNT_SEG_MAGIC || version != SHUNT_SEG_VERSION ||
	    ctl != SHUNT_CTL_SIZE || size != cap) {
		log_warn("peer segment header does not match (version %u)", (unsigned)version);
		return -EPROTO;
	}
	if (bell)
		*bell = b;
	return 0;
}
