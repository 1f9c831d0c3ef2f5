/*
 * arena.h - the layout of a family's arena (shim/arena.c), which `shunt
 * stat` also reads.  docs/design.md describes it byte by byte.
 *
 * A memfd named "shunt-arena", sealed against shrinking and growing, mapped
 * shared by a process and every process it forks or execs while the shim
 * is loaded.  Never shared with a connection's peer.  Readers other than
 * the family (`shunt stat`) read it with pread() and trust nothing in it.
 */
#ifndef SHUNT_ARENA_H
#define SHUNT_ARENA_H

#include <stdatomic.h>
#include <stdint.h>

#define ARENA_MAGIC     0x4e455241544e4853ull /* "SHNTAREN" little-endian */
#define ARENA_VERSION   6u
#define ARENA_PROCS     256
#define ARENA_SLOTS     16384
#define ARENA_REUSE_SPAN 256   /* a process's window: the slots its search cycles through first */
#define ARENA_SLOT_SIZE 1024u
#define ARENA_SLOTS_OFF 65536u
#define ARENA_SIZE      ((uint64_t)ARENA_SLOTS_OFF + (uint64_t)ARENA_SLOTS * ARENA_SLOT_SIZE)
#define ARENA_WHY       9 /* enum shim_why */
/* A process keeps the arena's fd as the one fd of a 1-byte datagram that
 * carries this byte, in flight on a socket pair of its own (shim/arena.c):
 * not in its fd table, where /proc/PID/fd would open it. */
#define ARENA_PARK_TAG  'A'

/* One process of the family, and what it saw: `shunt stat`'s "why not". */
struct arena_proc {
	_Atomic int32_t pid;        /* 0: free */
	uint32_t pad;
	_Atomic uint64_t seen;      /* TCP connections tracked */
	_Atomic uint64_t moved;     /* ... moved to shared memory */
	_Atomic uint64_t why[ARENA_WHY]; /* ... stayed on TCP, by reason */
	char comm[16];              /* the program's name */
	uint8_t pad2[16];           /* to 128 bytes: no two processes' counters share a cache line */
};

struct arena_hdr {
	uint64_t magic;             /* ARENA_MAGIC */
	uint32_t version;           /* ARENA_VERSION */
	uint32_t nslots;            /* ARENA_SLOTS */
	uint32_t slot_size;         /* ARENA_SLOT_SIZE */
	uint32_t nprocs;            /* ARENA_PROCS */
	uint64_t slots_off;         /* ARENA_SLOTS_OFF */
	_Atomic uint32_t pay_shift; /* the family's upgrade-calls shift (move.c,
	                             * "Whether a move pays"): a hint, clamped */
	uint8_t pad[28];            /* the process lines start at 64 */
	struct arena_proc procs[ARENA_PROCS];
};

/* The part of a slot `shunt stat` reads (the start of struct tslot). */
struct arena_slot_view {
	uint32_t gen, state, flags, phase;
	int32_t holders[4];         /* pids; -1: more than fit; < -1: a fork's reservation */
	uint32_t why, side;
	uint64_t ino;
	uint8_t local[20], peer[20]; /* struct shunt_addr */
	uint64_t calls, bytes_in, bytes_out;
};

_Static_assert(sizeof(struct arena_proc) == 128, "a process line is two cache lines");
_Static_assert(sizeof(struct arena_hdr) <= ARENA_SLOTS_OFF, "the header fits before slot 0");

#endif /* SHUNT_ARENA_H */
