/*
 * end.h - one end of a connection: two rings in a segment, the wait
 * protocol, and TCP's semantics of end of stream, reset and broken pipe.
 *
 * An end does not know which medium maps its segment nor how its doorbell
 * rings (bell.h): every call that may ring or sleep takes the bell.  It
 * holds no pointer into the caller's memory and no fd, so the socket shim
 * can keep it in memory shared by the processes that hold one socket (after
 * fork both use it, with the shim's locks around it).
 *
 * One thread sends and one receives at a time: callers serialise each
 * direction.  Every function returns a negative errno on failure.
 *
 * Waiting: `deadline` is 0 for a call that must not wait (-EAGAIN),
 * SHUNT_NEVER to wait as long as it takes, else an absolute shunt_now_ns().
 */
#ifndef SHUNT_END_H
#define SHUNT_END_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "bell.h"
#include "ring.h"
#include "seg.h"
#include "spin.h"

struct shunt_end {
	struct shunt_seg seg;
	struct shunt_ring tx;        /* ring[side]: we produce */
	struct shunt_ring rx;        /* ring[1 - side]: we consume */
	struct shunt_side *me;       /* our side's words in the segment */
	struct shunt_side *peer;     /* the peer's side: validated on every read */
	_Atomic uint64_t *tx_more;   /* our head's hint of a send under way */
	_Atomic uint64_t *rx_more;   /* the peer's: a hint, never trusted */
	int side;                    /* 0: the segment's creator, 1: the other */
	int hangup_eof;              /* a peer that vanished without a close
	                              * reads as end of stream if it took all we
	                              * sent, as a TCP close does (the shim) */
	_Atomic uint32_t my_state;   /* authoritative copy of me->state */
	_Atomic int broken;          /* 0, or the -errno every call now returns */
	_Atomic int peer_gone;       /* the bell hung up */
	_Atomic int rd_shut;         /* shutdown(SHUT_RD) was called */
	_Atomic uint32_t rcvlowat;   /* SO_RCVLOWAT: bytes a wait waits for (0, 1: any) */
	_Atomic uint32_t waited;     /* SHUNT_WAIT_* that said -EAGAIN lately */
	_Atomic uint32_t unrung;     /* SHUNT_WAIT_* our own disarm cleared since
	                              * they were last armed: no doorbell came
	                              * for them (end.c, shunt_end_poll) */
	_Atomic uint32_t owed;       /* doorbells rung for a wait that did not
	                              * sleep, to take: tries left */
	_Atomic int64_t alive_at;    /* the last look at the peer's life by a
	                              * call that may not wait (end.c, dead_yet) */
	struct shunt_spin spin;
	uint64_t zc_reserved;        /* bytes the last reserve gave */
	uint64_t zc_peeked;          /* bytes the last peek showed */
	uint64_t bytes_sent;         /* written by the sending thread only */
	uint64_t bytes_received;     /* written by the receiving thread only */
	uint32_t nt_left;            /* big copies in to make past the caches
	                              * before the next timed one (copy_in) */
	uint32_t nt_slow;            /* timed copies in a row that were slow */
	_Atomic uint64_t wakeups, sleeps, spins, spin_hits;
};

/* Set up an end over a mapped segment; marks this side open. */
void shunt_end_init(struct shunt_end *e, const struct shunt_seg *seg, int side,
		    int spin_us, int hangup_eof);

ssize_t shunt_end_send(struct shunt_end *e, struct shunt_bell *b, const void *buf,
		       size_t len, int64_t deadline);
/* The n pieces of iov, len bytes in all, as one send: published together
 * as far as the ring's room allows. */
ssize_t shunt_end_sendv(struct shunt_end *e, struct shunt_bell *b, const struct iovec *iov,
			int n, size_t len, int64_t deadline);
ssize_t shunt_end_recv(struct shunt_end *e, struct shunt_bell *b, void *buf, size_t len,
		       int64_t deadline);
/* Drop up to len bytes unread (TCP's MSG_TRUNC). */
ssize_t shunt_end_discard(struct shunt_end *e, struct shunt_bell *b, size_t len,
			  int64_t deadline);
ssize_t shunt_end_reserve(struct shunt_end *e, struct shunt_bell *b, void **buf, size_t min,
			  int64_t deadline);
int shunt_end_commit(struct shunt_end *e, struct shunt_bell *b, size_t len);
ssize_t shunt_end_peek(struct shunt_end *e, struct shunt_bell *b, const void **buf,
		       int64_t deadline);
/* As peek, but waits until at least min bytes wait (or the end comes). */
ssize_t shunt_end_peek_min(struct shunt_end *e, struct shunt_bell *b, const void **buf,
			   size_t min, int64_t deadline);
/* As peek, waiting as a read of len would for SO_RCVLOWAT's bytes,
 * as it changes. */
ssize_t shunt_end_peek_lowat(struct shunt_end *e, struct shunt_bell *b, const void **buf,
			     size_t len, int64_t deadline);
int shunt_end_release(struct shunt_end *e, struct shunt_bell *b, size_t len);
/* Bytes waiting to be read (FIONREAD), or a negative errno. */
ssize_t shunt_end_readable(struct shunt_end *e);
/* Bytes sent and not yet read by the peer (SIOCOUTQ). */
ssize_t shunt_end_unread_by_peer(struct shunt_end *e);

int shunt_end_shutdown(struct shunt_end *e, struct shunt_bell *b, int how);
/* SO_RCVLOWAT as TCP's: a blocking read waits for that many bytes (or
 * what it asks, if less), poll says readable from that many on (or a full
 * ring: TCP's closing window); the end of the stream and errors as ever. */
void shunt_end_set_rcvlowat(struct shunt_end *e, uint32_t v);
/* The bytes a wait for input of len waits for: SO_RCVLOWAT's, at most len
 * and the ring's size; 1 without one. */
uint64_t shunt_end_rx_need(struct shunt_end *e, uint64_t len);
/* Both halves shut (shutdown(SHUT_RDWR), or the two one by one, or our
 * FIN sent on TCP and SHUT_RD here): the peer's sends fail as after our
 * close; what it sent before is still read.  shunt_end_shutdown calls it. */
void shunt_end_shut_both(struct shunt_end *e, struct shunt_bell *b);
/* This end is closed for good.  How the peer sees it: */
enum shunt_close_how {
	SHUNT_CLOSE_FIN,  /* end of stream once drained (the native API) */
	SHUNT_CLOSE_TCP,  /* as TCP: a reset if we left data unread, else FIN */
	SHUNT_CLOSE_RST,  /* a reset (SO_LINGER {1, 0}) */
};
void shunt_end_close(struct shunt_end *e, struct shunt_bell *b, enum shunt_close_how how);

/*
 * Readiness as poll(2) bits (POLLIN, POLLOUT, POLLRDHUP, POLLHUP, POLLERR)
 * for the `events` asked, without waiting.  With an arm mode, each
 * direction asked that is not ready is also armed, so that the peer's next
 * progress rings the bell, and then looked at again:
 *   SHUNT_ARM_DRAIN consumes old rings first (a level-triggered wait on
 *     the bell: an old ring would wake it again and again);
 *   SHUNT_ARM_LAZY makes no system call when the direction is still armed
 *     from before (an edge-triggered wait: an old ring wakes it once);
 *   SHUNT_ARM_EDGE is LAZY, and arms reading even while data waits: an
 *     edge-triggered wait reports each new arrival, as TCP's does.
 */
#define SHUNT_ARM_NONE  0
#define SHUNT_ARM_DRAIN 1
#define SHUNT_ARM_LAZY  2
#define SHUNT_ARM_EDGE  3
int shunt_end_poll(struct shunt_end *e, struct shunt_bell *b, int events, int arm);

/* 1 if a call that reads (bits SHUNT_WAIT_READ) or writes (SHUNT_WAIT_WRITE)
 * would wait now: nothing to read and no end, or no room.  From the shared
 * indices, as a poll's look: any thread may ask. */
int shunt_end_would_wait(struct shunt_end *e, uint32_t bits);
/* The SHUNT_WAIT_* bits this end has armed now.  The peer clears one as
 * it rings for it, before its doorbell reaches us (which the medium may
 * delay), so an armed bit gone means "look again". */
uint32_t shunt_end_armed(const struct shunt_end *e);
/* A number that changes whenever the peer makes progress: for edge
 * triggering.  Read from shared memory, so used for nothing else. */
uint64_t shunt_end_progress(const struct shunt_end *e);
/* Look at the bell for a peer that is gone, without waiting or consuming
 * a ring: a send into free space would not see it otherwise. */
void shunt_end_check_peer(struct shunt_end *e, struct shunt_bell *b);
/* The peer's process is gone (the caller saw the bell hang up). */
void shunt_end_peer_gone(struct shunt_end *e);
/* Break the connection: every later call returns err. */
int shunt_end_fail(struct shunt_end *e, int err);
uint32_t shunt_end_state(const struct shunt_end *e);
/* The peer's state word as last published (validated), or -EPROTO. */
int64_t shunt_end_peer_state(struct shunt_end *e);

#endif /* SHUNT_END_H */
