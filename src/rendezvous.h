/*
 * rendezvous.h - how two ends find each other and share a segment.
 *
 * The connecting end creates the segment and a socket pair, and passes the
 * segment and one end of the pair over the rendezvous UNIX stream with
 * SCM_RIGHTS (the hello).  The accepting end checks the peer's credentials
 * and the hello.  Nothing is answered: the two sockets that now join the
 * ends are the doorbells (wake.h), the rendezvous stream for READ waits and
 * the pair for WRITE waits.  When a process dies the kernel closes them,
 * which is how the other end learns of the death within a poll().
 * Message formats are in docs/design.md.
 */
#ifndef SHUNT_RENDEZVOUS_H
#define SHUNT_RENDEZVOUS_H

#include <stdint.h>

#define SHUNT_HELLO_MAGIC 0x4f4c4c4548544e53ull /* "SNTHELLO" */
#define SHUNT_PROTO_VERSION 1u

struct shunt_hello {
	uint64_t magic;     /* SHUNT_HELLO_MAGIC */
	uint32_t version;   /* SHUNT_PROTO_VERSION */
	uint32_t flags;     /* 0; non-zero bits are refused */
	uint64_t ring_size; /* of each ring; the memfd must match */
};                          /* fds: [segment memfd, WRITE doorbell socket] */

#endif /* SHUNT_RENDEZVOUS_H */
