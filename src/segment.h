/*
 * segment.h - the shared-memory segment of one connection.
 *
 * A segment is a sealed memfd holding a control page and the data areas of
 * two rings, one per direction.  It knows nothing of sockets.  The byte
 * layout is described in docs/design.md and pinned by static asserts in
 * segment.c; change both together.
 *
 * File layout (cap = ring size, a power of two >= the page size):
 *   [0, 4096)                 struct shunt_ctl (control page)
 *   [4096, 4096 + cap)        data of ring 0: side 0 -> side 1
 *   [4096 + cap, 4096 + 2cap) data of ring 1: side 1 -> side 0
 *
 * Address-space layout of a mapping (each data area mapped twice):
 *   ctl | ring0 | ring0 again | ring1 | ring1 again
 */
#ifndef SHUNT_SEGMENT_H
#define SHUNT_SEGMENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHUNT_SEG_MAGIC   0x31474553544e5553ull /* "SUNTSEG1" little-endian */
#define SHUNT_SEG_VERSION 2u
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
};

struct shunt_side {
	_Atomic uint32_t state; /* SHUNT_ST_*, written by this side */
	_Atomic uint32_t wait;  /* SHUNT_WAIT_*, set by this side, cleared by peer */
	_Atomic uint32_t pid;   /* informational only */
};

/* One index alone on its line, so producer and consumer never share one. */
struct shunt_index {
	_Alignas(SHUNT_LINE) _Atomic uint64_t v;
};

/* Upgrade decision of a TCP connection (the shim's), settled by one CAS:
 * the accepting side moves PENDING to ACCEPTED, the connecting side that
 * stops waiting moves PENDING to DECLINED.  Native connections leave it 0. */
#define SHUNT_DECIDE_PENDING  0u
#define SHUNT_DECIDE_ACCEPTED 1u
#define SHUNT_DECIDE_DECLINED 2u

/* The TCP addresses of an upgraded connection, written by the accepting
 * side for `shunt stat`.  Informational: the library never reads it. */
struct shunt_tcp_info {
	uint16_t family;      /* AF_INET or AF_INET6, 0 until written */
	uint16_t client_port; /* host byte order */
	uint16_t server_port;
	uint16_t pad;
	uint8_t client_addr[16];
	uint8_t server_addr[16];
};

struct shunt_ctl {
	_Alignas(SHUNT_LINE) struct shunt_hdr hdr;
	_Alignas(SHUNT_LINE) struct shunt_side side[2];
	struct shunt_index head[2]; /* head[r]: producer index of ring r */
	struct shunt_index tail[2]; /* tail[r]: consumer index of ring r */
	_Alignas(SHUNT_LINE) _Atomic uint32_t decide; /* SHUNT_DECIDE_* */
	/* Reuse of a segment by the next connection between the same two
	 * processes (docs/design.md, "Links"): parked[s] is the generation
	 * side s last closed and let go of; `linked` is set by the accepting
	 * side when it keeps the offer's rendezvous stream as a link. */
	_Atomic uint32_t parked[2];
	_Atomic uint32_t linked;
	_Alignas(SHUNT_LINE) struct shunt_tcp_info info;
};

/* A mapped segment, as one process sees it. */
struct shunt_seg {
	struct shunt_ctl *ctl;
	uint8_t *data[2];   /* data[r]: 2 * cap bytes of ring r */
	uint64_t cap;       /* our own copy; the shared header is never re-read */
	void *base;
	size_t map_len;
};

/* Bytes of the memfd for a ring size. */
static inline uint64_t shunt_seg_file_size(uint64_t cap)
{
	return SHUNT_CTL_SIZE + 2 * cap;
}

/* 0 if cap is a usable ring size, else -EINVAL. */
int shunt_seg_check_size(uint64_t cap);

/* Create a sealed memfd of ring size cap, map it and write the header.
 * Returns the memfd (>= 0) or a negative errno. */
int shunt_seg_create(struct shunt_seg *seg, uint64_t cap);

/* Map a memfd received from a peer that claims ring size cap.  Checks that
 * it is a sealed memfd of exactly the right size and that the header agrees.
 * Returns 0 or a negative errno (-EPROTO for a malformed segment). */
int shunt_seg_attach(struct shunt_seg *seg, int memfd, uint64_t cap);

void shunt_seg_detach(struct shunt_seg *seg);

/* Make a mapped segment as new for its next connection: every shared word
 * but the header back to zero.  Only while neither side uses it. */
void shunt_seg_reset(struct shunt_seg *seg);

#endif /* SHUNT_SEGMENT_H */
