/*
 * bell.h - how a connection end wakes its peer and sleeps: the doorbell.
 *
 * The data path (end.c) decides *when* to ring and sleep, with the wait
 * words of wake.h, so that a busy pair makes no system call at all.  A
 * bell is *how*: the native API rings a pair of UNIX sockets (one per
 * direction of waiting, medium/local/sockbell.c); the socket shim rings the
 * connection's own TCP stream (shim/bell.c), which also works between
 * virtual machines.  Either way a ring that lands before the sleeper
 * sleeps waits in the socket, so none is lost, and the socket's hang-up
 * tells the sleeper that its peer is gone.
 */
#ifndef SHUNT_BELL_H
#define SHUNT_BELL_H

#include <stdint.h>

struct shunt_bell;

struct shunt_bell_ops {
	/* The peer sleeps on `bits` (SHUNT_WAIT_READ and/or WRITE): wake it.
	 * 0, or a negative errno (a peer that is gone counts as rung). */
	int (*ring)(struct shunt_bell *b, uint32_t bits);
	/* Sleep until rung for `bits` or the deadline (clock.h; never 0).
	 * 0: look again (a hint, never a promise); -EINTR; -EAGAIN at the
	 * deadline; -ECONNRESET when the peer is gone. */
	int (*sleep)(struct shunt_bell *b, uint32_t bits, int64_t deadline);
	/* Consume old rings for `bits` without waiting: 1 there were some,
	 * 0 none, -ECONNRESET when the peer is gone. */
	int (*drain)(struct shunt_bell *b, uint32_t bits);
	/* Without consuming anything: 0 while the peer is there, else
	 * -ECONNRESET. */
	int (*alive)(struct shunt_bell *b);
	/* The user's own waits (the shim's poll and epoll) arm before they
	 * sleep, so a call told -EAGAIN arms and drains nothing: an armed
	 * end costs its peer a doorbell per message while it is busy. */
	int waits_arm;
	/* drain() never takes a ring that a sleeper of the same end waits for
	 * (the shim: its leader takes them, and a drain kicks the other
	 * waits), so a doorbell owed to a wait that did not sleep may be
	 * taken (end.c, take_owed). */
	int drain_spares;
};

struct shunt_bell {
	const struct shunt_bell_ops *ops;
	int fd[2];  /* the implementation's sockets */
	void *ctx;  /* the implementation's state */
};

#endif /* SHUNT_BELL_H */
