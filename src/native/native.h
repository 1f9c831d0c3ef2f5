/*
 * native.h - a connection of the native API (include/shunt.h): an end of
 * the core over the local medium, with UNIX-socket doorbells.
 */
#ifndef SHUNT_NATIVE_H
#define SHUNT_NATIVE_H

#include "bell.h"
#include "end.h"

#define SHUNT_HELLO_MAGIC 0x4f4c4c4548544e53ull /* "SNTHELLO" */
#define SHUNT_HELLO_VERSION 3u

/* The connector's first and only message: fds [segment memfd, the other
 * end of the WRITE doorbell pair]; the stream it comes on is the READ
 * doorbell.  Nothing is answered. */
struct shunt_hello {
	uint64_t magic;     /* SHUNT_HELLO_MAGIC */
	uint32_t version;   /* SHUNT_HELLO_VERSION */
	uint32_t flags;     /* 0; anything else is refused */
	uint64_t ring_size; /* of each ring; the memfd must match */
};

struct shunt_conn {
	struct shunt_end e;
	struct shunt_bell bell; /* fd[0]: READ doorbell, fd[1]: WRITE doorbell */
	_Atomic int pollfd;     /* epoll set for shunt_fd(), -1 until asked */
};

/* Build a connection over a mapped segment; takes the segment and both
 * doorbells (released on failure too). */
int shunt__conn_new(struct shunt_conn **out, int side, struct shunt_seg *seg,
		    int bell_rd, int bell_wr, int spin_us);

#endif /* SHUNT_NATIVE_H */
