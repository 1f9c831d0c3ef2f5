/*
 * region.h - the ivshmem medium: one shared region holding the rendezvous
 * and the segments of many connections.
 *
 * Between virtual machines nothing can pass an fd, so a segment cannot be
 * a memfd of its own: every connection's segment is carved out of one
 * region that all its parties map already.  In a QEMU guest the region is
 * BAR 2 of an ivshmem-plain PCI device (1af4:1110), mapped through
 * /sys/bus/pci/devices/<BDF>/resource2; on the host it is the device's
 * backing file (a file in /dev/shm).  The host's administrator decides who
 * maps it; everyone who does can read and write all of it.
 *
 * Region layout (docs/design.md, "Between virtual machines"), all
 * integers little-endian, offsets pinned by static asserts in region.c:
 *
 *   [0, 4096)               struct shunt_vmr_hdr: magic, version, geometry
 *   [dir_off, +n * 128)     the directory: offers of connection ends,
 *                           found by 4-tuple (struct shunt_vmr_entry)
 *   [table_off, +m * 128)   the slot table: one word per segment slot
 *                           (struct shunt_vmr_slot), claimed by CAS
 *   [seg_off + i * slot_size, ...)
 *                           segment i, laid out as core/seg.h says,
 *                           mapped with each ring twice back to back
 *
 * Atomics across guests need QEMU's multi-threaded TCG (or KVM): plain
 * TCG with one vCPU does not make lock-prefixed instructions atomic with
 * respect to other QEMU processes.
 *
 * Everything read from the region was written by parties that may be
 * hostile: the geometry is read and checked once per process and never
 * again; every index, generation and size read later is checked against
 * our own copy before use.  A scribbled region can fail connections; it
 * cannot make us touch memory outside our mapping.
 */
#ifndef SHUNT_REGION_H
#define SHUNT_REGION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "seg.h"

#define SHUNT_VMR_MAGIC    0x31524d56544e4853ull /* "SHNTVMR1" little-endian */
#define SHUNT_VMR_VERSION  1u
#define SHUNT_VMR_HDR_SIZE 4096u
#define SHUNT_VMR_ENTRIES  256u  /* directory entries of a region we format */
#define SHUNT_VMR_RING     (512u << 10) /* default ring size of its slots: the
                                         * library's default ring (config.c) */
#define SHUNT_VMR_MIN_SIZE (1u << 20)

/* hdr.state: formatting is claimed by one party, by compare-and-swap. */
#define SHUNT_VMR_ZERO       0u
#define SHUNT_VMR_FORMATTING 1u
#define SHUNT_VMR_READY      2u

struct shunt_vmr_hdr {
	uint64_t magic;           /* SHUNT_VMR_MAGIC */
	uint32_t version;         /* SHUNT_VMR_VERSION */
	_Atomic uint32_t state;   /* SHUNT_VMR_* */
	uint64_t size;            /* bytes of the region */
	uint64_t ring_max;        /* largest ring of a segment slot */
	uint32_t nentries;        /* directory entries */
	uint32_t nslots;          /* segment slots */
	uint64_t dir_off;         /* = SHUNT_VMR_HDR_SIZE */
	uint64_t table_off;       /* = dir_off + nentries * 128 */
	uint64_t seg_off;         /* page-aligned, after the slot table */
	uint64_t slot_size;       /* SHUNT_CTL_SIZE + 2 * ring_max */
	uint64_t format_id;       /* random, so that a reformat shows */
	_Atomic uint64_t full;    /* bumped when a taker found no free slot:
	                           * parties look for dead ones to reclaim */
};

/*
 * A directory entry: one connection end (the lower address of the two)
 * offers itself; the other end answers with a segment slot.  The word
 * holds the state in its low 8 bits and a generation above, so that every
 * transition is one compare-and-swap that a stale party cannot win.
 */
#define SHUNT_VMR_FREE      0u /* nobody's */
#define SHUNT_VMR_WRITING   1u /* an offerer fills it in */
#define SHUNT_VMR_OFFERED   2u /* lo, hi, offer_nonce are valid */
#define SHUNT_VMR_ANSWERING 3u /* a taker fills in its answer */
#define SHUNT_VMR_ANSWERED  4u /* slot, slot_gen, answer_nonce are valid */

struct shunt_vmr_entry {
	_Atomic uint64_t word;    /* state | generation << 8 */
	uint64_t stamp;           /* CLOCK_REALTIME seconds of the offer */
	struct shunt_addr lo;     /* the offering end (lower endpoint) */
	struct shunt_addr hi;     /* the end it waits for */
	uint64_t offer_nonce;     /* random, the offerer's */
	uint32_t slot;            /* the answer: a segment slot ... */
	uint32_t slot_gen;        /* ... in this generation */
	uint64_t answer_nonce;    /* random, the taker's */
	uint8_t pad[48];
};

/*
 * A segment slot.  word: bits 0-7 state (free or used), bit 8 the offerer
 * attached, bits 9 and 10 side 0 and side 1 let go, bits 16-63 the
 * generation, bumped at each allocation.  A used slot whose two sides both
 * let go is free again.
 */
#define SHUNT_VMS_USED  1u
#define SHUNT_VMS_OPEN1 (1u << 8)
#define SHUNT_VMS_DONE0 (1u << 9)
#define SHUNT_VMS_DONE1 (1u << 10)
#define SHUNT_VMS_DONE  (SHUNT_VMS_DONE0 | SHUNT_VMS_DONE1)
#define SHUNT_VMS_GEN(w) ((uint32_t)((w) >> 16))

/* Where one side's TCP socket lives, so that a party on the same kernel
 * can tell that it is gone (and the slot with it). */
struct shunt_vmr_owner {
	uint64_t boot;            /* hash of the kernel's boot_id */
	uint64_t netns;           /* network namespace cookie */
	uint64_t ino;             /* the TCP socket's inode */
};

struct shunt_vmr_slot {
	_Atomic uint64_t word;    /* see above */
	uint64_t ring;            /* ring size of the segment in it */
	struct shunt_vmr_owner owner[2]; /* side 0: the taker; side 1: the offerer */
	struct shunt_addr lo, hi; /* the connection (informational, and reclaim) */
	uint8_t pad[24];
};

/* This process's view of a region: the geometry it checked, and the
 * mapping of the header, directory and slot table. */
struct shunt_vmr {
	int fd;                   /* the region's file, kept to map segments */
	uint8_t *base;            /* [0, seg_off) mapped */
	size_t map_len;
	uint64_t size, ring_max, slot_size, dir_off, table_off, seg_off, format_id;
	uint32_t nentries, nslots;
	int prot;                 /* how it is mapped */
};

/* The geometry of a region of `size` bytes with rings of ring_max; 0 or
 * -EINVAL.  Only h's geometry fields are written. */
int shunt_vmr_layout(uint64_t size, uint64_t ring_max, struct shunt_vmr_hdr *h);
/* Format the region mapped at base (size bytes, all zero or a region
 * whose header is zero): 0, -EBUSY if someone else did or does, -EINVAL. */
int shunt_vmr_format(uint8_t *base, uint64_t size, uint64_t ring_max, uint64_t id);
/* Whoever can open a region reads and writes every connection in it: one
 * we use must be a regular file owned by us or root that no other user may
 * open (a group of the owner's choosing may).  NULL, or why not. */
struct stat;
const char *shunt_vmr_not_ours(const struct stat *st);
/* Map and check the region in fd (its size from fstat; -EPERM for one
 * shunt_vmr_not_ours refuses, unless only looked at).  Takes fd. */
#define SHUNT_VMR_USE    0 /* read and write */
#define SHUNT_VMR_FORMAT 1 /* the same; a region still zero is formatted
                            * with the default geometry */
#define SHUNT_VMR_LOOK   2 /* read only (`shunt vm show`) */
int shunt_vmr_open(struct shunt_vmr *r, int fd, int mode);
void shunt_vmr_close(struct shunt_vmr *r);

/* --- The directory (taker = the higher endpoint, offerer = the lower) --- */

int shunt_vmr_offer(struct shunt_vmr *r, const struct shunt_addr *lo, const struct shunt_addr *hi,
		    uint64_t nonce, uint64_t now_s, uint32_t *entry, uint32_t *gen);
/* The one offer from lo waiting for hi: 1 (entry, gen, its nonce), 0 none,
 * -EEXIST more than one (nobody can tell which is ours: none is). */
int shunt_vmr_find(struct shunt_vmr *r, const struct shunt_addr *lo, const struct shunt_addr *hi,
		   uint32_t *entry, uint32_t *gen, uint64_t *nonce);
/* Answer an offer: 0, or -ESTALE if it is no longer there. */
int shunt_vmr_answer(struct shunt_vmr *r, uint32_t entry, uint32_t gen, uint32_t slot,
		     uint32_t slot_gen, uint64_t nonce);
/* The offerer looks: 1 answered (slot, slot_gen, nonce), 0 not yet,
 * -ESTALE the entry is not ours any more. */
int shunt_vmr_answered(struct shunt_vmr *r, uint32_t entry, uint32_t gen, uint32_t *slot,
		       uint32_t *slot_gen, uint64_t *nonce);
/* Is the entry still as the taker left it (answered, this generation)? */
int shunt_vmr_still_answered(struct shunt_vmr *r, uint32_t entry, uint32_t gen);
/* The offerer is done with its entry (attached, or gave up). */
void shunt_vmr_withdraw(struct shunt_vmr *r, uint32_t entry, uint32_t gen);

/* --- Segment slots ---------------------------------------------------------- */

/* Claim a free slot for rings of cap: 0 (slot, gen), -ENOSPC, -EINVAL. */
int shunt_vmr_alloc(struct shunt_vmr *r, uint64_t cap, uint32_t *slot, uint32_t *gen);
/* Map slot's segment with rings of cap (each twice, back to back). */
int shunt_vmr_map(struct shunt_vmr *r, uint32_t slot, uint64_t cap, struct shunt_seg *seg);
/* The ring size the slot claims, checked: 0 or -EPROTO. */
int shunt_vmr_slot_ring(struct shunt_vmr *r, uint32_t slot, uint64_t *cap);
/* The offerer attaches: 0, or -ESTALE if the taker let the slot go. */
int shunt_vmr_attach(struct shunt_vmr *r, uint32_t slot, uint32_t gen);
/* Has the offerer attached (and nobody let go)? */
int shunt_vmr_attached(struct shunt_vmr *r, uint32_t slot, uint32_t gen);
/* The taker lets go of a slot the offerer never attached to: 0, or
 * -EBUSY if it did attach (then the connection must go on). */
int shunt_vmr_abandon(struct shunt_vmr *r, uint32_t slot, uint32_t gen);
/* Side(s) `bits` (SHUNT_VMS_DONE0/1) let go of slot in generation gen. */
void shunt_vmr_done(struct shunt_vmr *r, uint32_t slot, uint32_t gen, uint32_t bits);
/* Record who holds side `side` of the slot, and the connection. */
void shunt_vmr_own(struct shunt_vmr *r, uint32_t slot, int side, const struct shunt_vmr_owner *o,
		   const struct shunt_addr *lo, const struct shunt_addr *hi);
/* A copy of slot i as it is now (for reclaim and `shunt vm show`). */
void shunt_vmr_slot_copy(const struct shunt_vmr *r, uint32_t i, struct shunt_vmr_slot *out);
uint64_t shunt_vmr_full_count(const struct shunt_vmr *r);
/* A copy of directory entry i as it is now. */
void shunt_vmr_entry_copy(const struct shunt_vmr *r, uint32_t i, struct shunt_vmr_entry *out);
/* Map the control page of slot i (read only with SHUNT_VMR_LOOK): NULL
 * or the page, for munmap(p, SHUNT_CTL_SIZE). */
const struct shunt_ctl *shunt_vmr_ctl(const struct shunt_vmr *r, uint32_t i);

/* --- The medium ----------------------------------------------------------------
 * create/attach/release over the process's region (shunt_vmr_use);
 * handles are slot | generation << 32.  The protocol around them (who
 * may attach, when a slot is free) is the rendezvous's (shim/meet_vm.c). */
void shunt_vmr_use(struct shunt_vmr *r);
struct shunt_medium;
extern const struct shunt_medium shunt_medium_ivshmem;

#endif /* SHUNT_REGION_H */
