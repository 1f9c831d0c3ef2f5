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
#define SHUNT_PROTO_VERSION 2u

struct shunt_hello {
	uint64_t magic;     /* SHUNT_HELLO_MAGIC */
	uint32_t version;   /* SHUNT_PROTO_VERSION */
	uint32_t flags;     /* 0; non-zero bits are refused */
	uint64_t ring_size; /* of each ring; the memfd must match */
	uint32_t slot;      /* LINK, REUSE: the connector's number for the segment */
	uint32_t gen;       /* REUSE: the generation the segment starts */
};                          /* fds: [segment memfd, WRITE doorbell socket] */

/* flags: a TCP upgrade offer from the socket shim.  It carries a third fd,
 * the connector's own TCP socket, as proof that it holds that connection. */
#define SHUNT_HELLO_OFFER 0x1u
/* With OFFER: the connector asks that this stream stay open as a link, for
 * its later offers to this listener (docs/design.md, "Links").  The stream
 * is then no doorbell: fds [memfd, READ doorbell, WRITE doorbell, proof]. */
#define SHUNT_HELLO_LINK 0x2u
/* With OFFER, on a link: take up segment `slot` again, both ends parked,
 * as generation `gen`.  fds: [proof]. */
#define SHUNT_HELLO_REUSE 0x4u

struct shunt_conn;

/* --- For the socket shim ------------------------------------------------- */

/* Listen on a UNIX socket path (non-blocking, close-on-exec), replacing a
 * stale socket file.  Returns the fd or a negative errno. */
int shunt__unix_listen(const char *path);

/*
 * Connect to the rendezvous socket at path, check its owner against the
 * policy, and offer a new connection with ring size cap, passing `proof`.
 * On success *out is the connecting end and *memfd the segment's fd, which
 * the caller keeps or closes.
 */
int shunt__offer_send(const char *path, uint64_t cap, int proof,
		      struct shunt_conn **out, int *memfd);

/* An offer taken from a rendezvous listener: the accepting end, the
 * segment's fd and the connector's TCP socket, all owned by the taker. */
struct shunt_offer {
	struct shunt_conn *c; /* NULL for REUSE: the taker has the segment */
	int memfd;
	int proof;
	int link;             /* the stream, when the offer asks for a link */
	uint32_t flags, slot, gen;
};

/* Take one offer without blocking: 0, -EAGAIN when none waits, or another
 * negative errno for an offer that was refused (and dropped). */
int shunt__offer_take(int lfd, struct shunt_offer *o);

/* --- Links: one stream per pair of processes, for all their offers ------- */

/* Connect to the rendezvous socket at path (policy checked): the stream. */
int shunt__link_dial(const char *path);
/* Offer a new segment `slot` of ring size cap over stream s, asking for a
 * link.  As shunt__offer_send, but s stays the caller's. */
int shunt__link_offer(int s, uint64_t cap, int proof, uint32_t slot,
		      struct shunt_conn **out, int *memfd);
/* Offer segment `slot` again, as generation gen.  Never blocks: -EAGAIN
 * when the link is full. */
int shunt__link_reoffer(int s, int proof, uint32_t slot, uint32_t gen);
/* Take the next offer on a link without blocking: a LINK offer as
 * shunt__offer_take gives it, or a REUSE one with o->c NULL.  -EAGAIN when
 * none waits, -ECONNRESET when the connector hung up. */
int shunt__link_take(int s, struct shunt_offer *o);

/*
 * Offers travel between the processes that accept on one listener (forked
 * workers) through a datagram socket pair they share: the one that took an
 * offer is not always the one that accepts its connection.  Passing gives
 * the offer away (its fds are closed here, whatever the result); receiving
 * maps it afresh.  Both without blocking; -EAGAIN when nothing waits.
 */
int shunt__offer_pass(int sock, struct shunt_offer *o);
int shunt__offer_recv(int sock, struct shunt_offer *o);

#endif /* SHUNT_RENDEZVOUS_H */
