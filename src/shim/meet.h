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
#define SHIM_MEET_VERSION 1u
#define SHIM_MEET_HELLO   1u /* dialer -> listener, fds [proof] */
#define SHIM_MEET_ACCEPT  2u /* listener -> dialer, fds [proof, segment] */

struct shim_meet_msg {
	uint64_t magic;     /* SHIM_MEET_MAGIC */
	uint32_t version;   /* SHIM_MEET_VERSION */
	uint32_t type;      /* SHIM_MEET_HELLO or SHIM_MEET_ACCEPT */
	uint64_t ring_size; /* ACCEPT: each ring's size; HELLO: 0 */
	uint32_t medium;    /* 0: local (a memfd) */
	uint32_t flags;     /* 0 */
};

/* 0 if m is a well-formed message of `type` that came with nfds fds. */
int shim_meet_parse(const struct shim_meet_msg *m, int nfds, uint32_t type);
/* The rendezvous name of a connection: abstract, or a file in the dir. */
int shim_meet_name(const struct shunt_addr *lower, const struct shunt_addr *higher,
		   int file, struct sockaddr_un *out, unsigned *len);
/* Is proof the other end of our socket `ours` (local, peer addresses)? */
int shim_meet_check_proof(int ours, int proof, const struct shunt_addr *local,
			  const struct shunt_addr *peer);
/* The ring size for a new segment: the per-process budget (move.c). */
uint64_t shim_ring_size_now(void);

#endif /* SHUNT_MEET_H */
