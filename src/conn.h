/*
 * conn.h - a connection end: two rings, a segment, doorbells and a liveness
 * socket.  Shared by conn.c (the data path) and rendezvous.c (set-up).
 */
#ifndef SHUNT_CONN_H
#define SHUNT_CONN_H

#include <stdatomic.h>
#include <stdint.h>

#include "ring.h"
#include "segment.h"

struct shunt_conn {
	struct shunt_seg seg;
	struct shunt_ring tx;        /* ring[side]: we produce */
	struct shunt_ring rx;        /* ring[1 - side]: we consume */
	struct shunt_side *me;       /* our side's words in the segment */
	struct shunt_side *peer;     /* the peer's side: validated on every read */
	int side;                    /* 0: connected, 1: accepted */
	int bell[2];                 /* our ends of the doorbells (wake.h):
	                              * [0] rings READ waits: the rendezvous
	                              * stream; [1] rings WRITE waits: a pair */
	_Atomic uint32_t waited;     /* SHUNT_WAIT_* that said -EAGAIN lately */
	_Atomic int pollfd;          /* epoll set for shunt_fd(), -1 until asked */
	int spin_us;                 /* configured spin window; 0: never spin */
	_Atomic int spin_cur;        /* adapted window now in use, <= spin_us */
	_Atomic unsigned spin_skips; /* waits since the window fell to zero */
	_Atomic uint32_t my_state;   /* authoritative copy of me->state */
	_Atomic int broken;          /* 0, or the -errno every call now returns */
	_Atomic int peer_gone;       /* the liveness socket hung up */
	int rd_shut;                 /* shutdown(SHUT_RD) was called */
	uint64_t zc_reserved;        /* bytes the last shunt_send_reserve() gave */
	uint64_t zc_peeked;          /* bytes the last shunt_recv_peek() showed */
	uint64_t bytes_sent;         /* written by the sending thread only */
	uint64_t bytes_received;     /* written by the receiving thread only */
	_Atomic uint64_t wakeups, sleeps, spins, spin_hits;
};

/*
 * Build a connection end over a mapped segment.  Takes ownership of seg and
 * of both doorbell sockets (released by shunt_close(), also on failure).
 */
int shunt__conn_new(struct shunt_conn **out, int side, struct shunt_seg *seg,
		    int bell_rd, int bell_wr, int spin_us);

#endif /* SHUNT_CONN_H */
