/*
 * meet.h - the messages of a meeting (meet.c), byte by byte in
 * docs/design.md.  Declared here so that tests and the fuzzer can reach
 * the parser.
 */
#ifndef SHUNT_MEET_H
#define SHUNT_MEET_H

#include <stdint.h>
#include <sys/un.h>

#include "addr.h"

#define SHIM_MEET_MAGIC   0x45564f4d544e4853ull /* "SHNTMOVE" little-endian */
#define SHIM_MEET_VERSION 3u
#define SHIM_MEET_HELLO   1u /* dialer -> listener, no fds */
#define SHIM_MEET_ACCEPT  2u /* listener -> dialer, fds [segment] */
#define SHIM_MEET_PASS    0x1u /* ACCEPT: the segment is attached (always) */

/* 48 bytes, little-endian; the fd numbers are claims the receiver checks
 * in /proc (docs/design.md, "Meeting and proof"). */
struct shim_meet_msg {
	uint64_t magic;     /*  0 SHIM_MEET_MAGIC */
	uint32_t version;   /*  8 SHIM_MEET_VERSION */
	uint32_t type;      /* 12 SHIM_MEET_HELLO or SHIM_MEET_ACCEPT */
	uint64_t ring_size; /* 16 ACCEPT: each ring's size; HELLO: 0 */
	uint32_t medium;    /* 24 0: local (a memfd) */
	uint32_t flags;     /* 28 ACCEPT: SHIM_MEET_PASS; HELLO: 0 */
	int32_t tcp_fd;     /* 32 the sender's fd of its end of the connection */
	int32_t seg_fd;     /* 36 -1 (version 2 named a segment to open in /proc) */
	uint64_t seg_ino;   /* 40 0 */
};

/* 0 if m is a well-formed message of `type` that came with nfds fds. */
int shim_meet_parse(const struct shim_meet_msg *m, int nfds, uint32_t type);
/* The rendezvous name of a connection: abstract, or a file in the dir. */
int shim_meet_name(const struct shunt_addr *lower, const struct shunt_addr *higher,
		   int file, struct sockaddr_un *out, unsigned *len);
/* The ring size for a new segment: the per-process budget (move.c). */
uint64_t shim_ring_size_now(void);

#endif /* SHUNT_MEET_H */
