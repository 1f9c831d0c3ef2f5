/*
 * seg.h - the layout of a connection's shared segment.
 *
 * A segment is a control page and the data areas of two rings, one per
 * direction.  This layer knows nothing of files, sockets or virtual
 * machines: a medium (src/medium/) provides the memory and maps it, each
 * data area twice back to back (see struct shunt_seg).  The byte layout is
 * described in docs/design.md and pinned by static asserts in seg.c;
 * change both together.
 *
 * Segment layout (cap = ring size, a power of two >= the page size):
 *   [0, 4096)                 struct shunt_ctl (control page)
 *   [4096, 4096 + cap)        data of ring 0: side 0 -> side 1
 *   [4096 + cap, 4096 + 2cap) data of ring 1: side 1 -> side 0
 */
#ifndef SHUNT_SEG_H
#define SHUNT_SEG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHUNT_SEG_MAGIC   0x33474553544e5553ull /* "SUNTSEG3" little-endian */
#define SHUNT_SEG_VERSION 5u
#define SHUNT_CTL_SIZE    4096u
#define SHUNT_LINE        128u /* two cache lines: defeats adjacent-line prefetch */
#define SHUNT_RING_MIN    4096ull
#define SHUNT_RING_MAX    (1ull << 30)

/* Side state bits, each written only by the side it describes. */
#define SHUNT_ST_OPEN    0x1u /* mapped and running */
#define SHUNT_ST_SHUT_WR 0x2u /* will send no more: peer reads EOF after the data */
#define SHUNT_ST_CLOSED  0x4u /* gone: will neither send nor receive */
#define SHUNT_ST_RESET   0x8u /* closed with data unread (TCP's RST): the
                               * peer reads what is left, then ECONNRESET */
#define SHUNT_ST_KNOWN   (SHUNT_ST_OPEN | SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED | SHUNT_ST_RESET)

/* Wait bits: set by a side about to sleep, cleared by the peer that wakes it. */
#define SHUNT_WAIT_READ  0x1u /* waiting for data or a state change */
#define SHUNT_WAIT_WRITE 0x2u /* waiting for free space or a state change */
#define SHUNT_WAIT_ALL   (SHUNT_WAIT_READ | SHUNT_WAIT_WRITE)

struct shunt_hdr {
	uint64_t magic;     /* SHUNT_SEG_MAGIC */
	uint32_t version;   /* SHUNT_SEG_VERSION */
	uint32_t ctl_size;  /* SHUNT_CTL_SIZE */
	uint64_t ring_size; /* cap of each ring */
	uint8_t bell;       /* TCP connections: the byte value of a doorbell
	                     * ring on the TCP stream (never 0); else 0 */
	uint8_t pad[7];
};

struct shunt_side {
	_Atomic uint32_t state; /* SHUNT_ST_*, written by this side */
	_Atomic uint32_t wait;  /* SHUNT_WAIT_*, set by this side, cleared by peer */
	_Atomic uint32_t pid;   /* informational only */
};

/* One index alone on its line, so producer and consumer never share one.
 * `more`, on a head's line only (written by the producer, read with the
 * head at no extra line): the head the send under way will reach, a hint
 * that lets a reader that emptied the ring wait a moment for the next
 * piece instead of returning short; at most `v` when no send is under way.
 * Zero on a tail's line. */
struct shunt_index {
	_Alignas(SHUNT_LINE) _Atomic uint64_t v;
	_Atomic uint64_t more;
};

/*
 * How a TCP connection's side moved its sending between the TCP stream and
 * its ring (the shim's; docs/design.md, "The switch").  Written only by
 * that side, each field before the flag that covers it (release).
 */
#define SHUNT_SW_RING 0x1u /* sends go to the ring from TCP offset tcp_off on */
#define SHUNT_SW_BACK 0x2u /* sends went back to TCP: ring data ends at
                            * back_head, TCP data resumes at back_tcp */
#define SHUNT_SW_ASK  0x4u /* asks the peer to go back to TCP too */
#define SHUNT_SW_TCP  0x8u /* its sends stay on TCP for good (it shut the
                            * stream down first): the peer keeps its on TCP too */
#define SHUNT_SW_LAZY 0x10u /* with ASK: the asker reads the peer's ring to
                             * its end itself; the peer resends none of it */
#define SHUNT_SW_FIN  0x20u /* back on TCP, it shut its sends down or
                             * closed: its kernel's FIN, if any, follows
                             * TCP offset fin_tcp */
#define SHUNT_SW_URG  0x40u /* an urgent byte went down its TCP stream
                             * after its switch, marked at ring index urg_at */
struct shunt_switch {
	_Alignas(SHUNT_LINE) _Atomic uint32_t flags;
	uint32_t pad;
	_Atomic uint64_t tcp_off;   /* bytes this side had written to TCP */
	_Atomic uint64_t back_head; /* ring index where its ring data ends */
	_Atomic uint64_t back_tcp;  /* TCP offset where its TCP data resumes */
	_Atomic uint64_t rx_tcp;    /* TCP bytes its reads took of the other's stream */
	_Atomic uint64_t fin_tcp;   /* with FIN: its TCP data before its FIN */
	_Atomic uint64_t urg_at;    /* with URG: its ring's head at its last urgent byte */
	/* Written by its sends: a line of their own, away from the flags
	 * that the other side reads on each call. */
	_Alignas(64) _Atomic uint64_t busy; /* SHUNT_BUSY_*: the other side sets TAKEN only */
	_Atomic uint64_t bells;     /* doorbells it rang on TCP since its switch */
};

/*
 * `busy`: this side's sends into its ring, doorbells, shutdowns and
 * answers under way (INSIDE), how many ended (from bit 16 up, wrapping),
 * and TAKEN: the other side answered for it (a peer that makes no call
 * while the connection is handed over, docs/design.md "Answering for an
 * idle peer").  TAKEN is set only while nothing is inside and the count of
 * ended ones is what the other side saw; nothing enters once it is set.
 */
#define SHUNT_BUSY_IN     0x1ull    /* added on entering */
#define SHUNT_BUSY_OUT    0xffffull /* added on leaving: one fewer inside, one more ended */
#define SHUNT_BUSY_INSIDE 0x7fffull
#define SHUNT_BUSY_TAKEN  0x8000ull
/* In `bells`: an urgent byte (MSG_OOB) went down its stream after its
 * switch, a TCP byte that is no doorbell: the other side does not answer
 * for it. */
#define SHUNT_BELLS_URGENT (1ull << 63)

struct shunt_ctl {
	_Alignas(SHUNT_LINE) struct shunt_hdr hdr;
	_Alignas(SHUNT_LINE) struct shunt_side side[2];
	struct shunt_index head[2]; /* head[r]: producer index of ring r */
	struct shunt_index tail[2]; /* tail[r]: consumer index of ring r */
	struct shunt_switch sw[2];  /* sw[s]: written by side s only */
};

/* A mapped segment, as one process sees it:
 *   ctl | ring0 data | ring0 again | ring1 data | ring1 again
 * so that the cap bytes starting at any offset of a ring's first copy are
 * contiguous in memory. */
struct shunt_seg {
	struct shunt_ctl *ctl;
	uint8_t *data[2];   /* data[r]: 2 * cap bytes of ring r */
	uint64_t cap;       /* our own copy; the shared header is never re-read */
	void *base;
	size_t map_len;
	const struct shunt_medium *medium; /* who made the mapping, and undoes it */
	uint64_t where;     /* the medium's: which slot of its memory */
};

/* Bytes of a segment for a ring size. */
static inline uint64_t shunt_seg_size(uint64_t cap)
{
	return SHUNT_CTL_SIZE + 2 * cap;
}

/* 0 if cap is a usable ring size, else -EINVAL. */
int shunt_seg_check_size(uint64_t cap);
/* The creator, on fresh zeroed memory: write the header. */
void shunt_seg_init(struct shunt_seg *seg, uint8_t bell);
/* The attacher: read the header once and check it against what the peer
 * claimed; from here on only our own copy of cap is used.  -EPROTO if it
 * does not match.  *bell gets the doorbell byte. */
int shunt_seg_check(const struct shunt_seg *seg, uint64_t cap, uint8_t *bell);

#endif /* SHUNT_SEG_H */
