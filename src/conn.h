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
	uint32_t pid;                /* ours, as told in the segment */
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
	int hangup_eof;              /* a hang-up reads as end of stream when the
	                              * peer took all we sent, as a TCP close does
	                              * (the shim's connections) */
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

/* --- For the socket shim ------------------------------------------------ */

/* Readiness as poll(2) bits (POLLIN, POLLOUT, POLLRDHUP, POLLHUP, POLLERR)
 * for the `events` asked, without waiting.  With an arm mode, each direction
 * asked that is not ready is also armed, so that the peer's next progress
 * rings its bell (shunt__conn_bell), and then re-checked:
 *   SHUNT_ARM_DRAIN consumes stale rings first (for a level-triggered wait
 *     on the bells: a stale ring would wake it again and again);
 *   SHUNT_ARM_LAZY makes no syscall when the direction is still armed from
 *     before (for an edge-triggered wait: a stale ring wakes it once). */
#define SHUNT_ARM_NONE  0
#define SHUNT_ARM_DRAIN 1
#define SHUNT_ARM_LAZY  2
/* As LAZY, and reading is armed even while data waits: an edge-triggered
 * wait reports each new arrival, as TCP's does. */
#define SHUNT_ARM_EDGE  3
int shunt__conn_poll(struct shunt_conn *c, int events, int arm);
/* The doorbell that rings for READ (write = 0) or WRITE (write = 1) waits. */
int shunt__conn_bell(const struct shunt_conn *c, int write);
/* A number that changes whenever the peer makes progress: for edge
 * triggering.  Read from shared memory, so used for nothing else. */
uint64_t shunt__conn_progress(const struct shunt_conn *c);
/* Free this end without telling the peer it closed: another process may
 * still hold the connection (fork); the peer learns of the last close from
 * the doorbells' hang-up. */
void shunt__conn_free(struct shunt_conn *c);
/* Settle the upgrade decision: move it from PENDING to `to` unless the
 * other side did first.  Returns the decision that holds (SHUNT_DECIDE_*). */
uint32_t shunt__conn_decide(struct shunt_conn *c, uint32_t to);
/* The connecting side: wait up to timeout_ns for the decision (spinning a
 * little first), then settle it as DECLINED if it did not come. */
uint32_t shunt__conn_await_decision(struct shunt_conn *c, int64_t timeout_ns);
/* The accepting side, after settling it: ring the connector if it sleeps. */
void shunt__conn_wake_decided(struct shunt_conn *c);
/* Record the TCP addresses for `shunt stat` (informational only). */
void shunt__conn_set_info(struct shunt_conn *c, const struct shunt_tcp_info *info);
/* Take up an existing end again (in a new program image after exec): as
 * shunt__conn_new, but the ring positions and this side's state are resumed
 * from the segment (and validated on use, like everything shared). */
int shunt__conn_resume(struct shunt_conn **out, int side, struct shunt_seg *seg,
		       int bell_rd, int bell_wr, int spin_us);
/* Close this end knowing no other process holds it: the peer sees the
 * close at once, as TCP's FIN, or as its RST if we left data unread. */
void shunt__conn_close_last(struct shunt_conn *c);
/*
 * Segment reuse (docs/design.md, "Links").  A connection between the same
 * two processes can take over a closed one's segment and doorbells instead
 * of making new ones, which costs more than TCP's whole set-up.
 *   shunt__conn_close_keep: as close_last (the peer sees FIN or RST), but
 *     the segment and doorbells stay, for shunt__conn_renew.
 *   shunt__conn_renew: a fresh end over the same segment and doorbells
 *     (the old struct is freed); with `reset`, every shared word is zeroed
 *     first, which only the connecting side does, before its offer.
 *   parked words: a side publishes the generation it let go of; the other
 *     side reuses the segment only once it reads its own generation there.
 */
void shunt__conn_close_keep(struct shunt_conn *c);
int shunt__conn_renew(struct shunt_conn **c, int reset);
void shunt__conn_set_parked(struct shunt_conn *c, uint32_t gen);
uint32_t shunt__conn_peer_parked(const struct shunt_conn *c);
/* The accepting side keeps the offer's stream as a link (set before it
 * accepts); the connecting side reads it once the offer is accepted. */
void shunt__conn_set_linked(struct shunt_conn *c);
int shunt__conn_linked(const struct shunt_conn *c);
/* Look for the peer's hang-up without waiting or consuming a ring (the
 * peer died, or closed its last copy): a send cannot see it otherwise. */
void shunt__conn_check_peer(struct shunt_conn *c);
/* This end's state bits, as set by shutdown. */
uint32_t shunt__conn_state(const struct shunt_conn *c);

#endif /* SHUNT_CONN_H */
