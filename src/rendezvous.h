/*
 * rendezvous.h - how two ends find each other and share a segment.
 *
 * The connecting end creates the segment and its doorbell and passes both
 * over a UNIX stream socket with SCM_RIGHTS (the hello).  The accepting end
 * checks the peer's credentials and the segment, then answers with its own
 * doorbell (the reply).  The socket stays open for the life of the
 * connection: when a process dies the kernel closes it, which is how the
 * other end learns of the death within a poll() instead of a timeout.
 * Message formats are in docs/design.md.
 */
#ifndef SHUNT_RENDEZVOUS_H
#define SHUNT_RENDEZVOUS_H

#include <stdint.h>

#define SHUNT_HELLO_MAGIC 0x4f4c4c4548544e53ull /* "SNTHELLO" */
#define SHUNT_REPLY_MAGIC 0x594c504552544e53ull /* "SNTREPLY" */
#define SHUNT_PROTO_VERSION 1u

struct shunt_hello {
	uint64_t magic;     /* SHUNT_HELLO_MAGIC */
	uint32_t version;   /* SHUNT_PROTO_VERSION */
	uint32_t flags;     /* 0; non-zero bits are refused */
	uint64_t ring_size; /* of each ring; the memfd must match */
};                          /* fds: [segment memfd, connector's doorbell] */

struct shunt_reply {
	uint64_t magic;     /* SHUNT_REPLY_MAGIC */
	uint32_t version;   /* SHUNT_PROTO_VERSION */
	uint32_t flags;     /* 0 */
};                          /* fds: [acceptor's doorbell] */

#endif /* SHUNT_RENDEZVOUS_H */
