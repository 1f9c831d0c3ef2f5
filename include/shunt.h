/*
 * shunt.h - the native API of libshunt.
 *
 * A shunt connection is a duplex byte stream between two processes on one
 * host, carried through a shared-memory segment instead of the TCP/IP stack.
 * Each direction is a lock-free single-producer/single-consumer ring.
 *
 * Conventions:
 *  - Every function that can fail returns a negative errno value and never
 *    touches errno.  Sizes are returned as ssize_t (>= 0 on success).
 *  - A connection may be used by one sending thread and one receiving thread
 *    at the same time; two threads sending (or two receiving) on the same
 *    connection must serialise themselves.
 *  - Flags: SHUNT_NONBLOCK makes a call return -EAGAIN instead of waiting.
 */
#ifndef SHUNT_H
#define SHUNT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHUNT_VERSION_MAJOR 0
#define SHUNT_VERSION_MINOR 1

/* Flags for accept, send, recv and their zero-copy variants. */
#define SHUNT_NONBLOCK 0x1

struct shunt_listener;
struct shunt_conn;

/* Options for shunt_connect().  A zero field means "the default", which comes
 * from the environment (SHUNT_RING_SIZE, SHUNT_SPIN_US) or built-in values. */
struct shunt_opts {
	size_t ring_size; /* bytes per direction, power of two, 4 KiB..1 GiB; an
	                   * acceptor drops a connection whose rings are bigger
	                   * than its own ring-size (SHUNT_RING_SIZE) */
	int spin_us;      /* 0: default; > 0: spin window; < 0: never spin */
};

/* Per-connection counters, kept by this end only. */
struct shunt_stats {
	uint64_t bytes_sent;
	uint64_t bytes_received;
	uint64_t wakeups;   /* wake-up syscalls this end made for its peer */
	uint64_t sleeps;    /* times this end blocked in the kernel */
	uint64_t spins;     /* times this end spun waiting for its peer */
	uint64_t spin_hits; /* spins that ended without having to sleep */
};

/* --- Rendezvous ------------------------------------------------------- */

/*
 * Listen on a name.  A name without '/' lives in the runtime directory
 * ($SHUNT_DIR, else $XDG_RUNTIME_DIR/shunt, else /tmp/shunt-$UID, created
 * with mode 0700); a name with '/' is a path to a UNIX socket.  Only peers
 * allowed by the policy (default: the same user) are accepted.
 */
int shunt_listen(const char *name, struct shunt_listener **out);
/* A file descriptor that polls readable when a connection is waiting (an
 * epoll set of the library's: poll, select or epoll it, nothing else). */
int shunt_listener_fd(const struct shunt_listener *l);
/* Accept one connection.  -EAGAIN with SHUNT_NONBLOCK when none waits. */
int shunt_accept(struct shunt_listener *l, struct shunt_conn **out, int flags);
/* Stop listening, remove the socket file and free the listener (a forked
 * child's call leaves the file to the process that listened). */
void shunt_listener_close(struct shunt_listener *l);

/* Connect to a listener.  opts may be NULL.  Like TCP, this completes
 * before the listener has accepted: data sent waits in the ring. */
int shunt_connect(const char *name, const struct shunt_opts *opts,
		  struct shunt_conn **out);

/* --- Data ------------------------------------------------------------- */

/* Copy len bytes in.  Blocking: returns len once all is in the ring.
 * Non-blocking: returns what fitted, or -EAGAIN if nothing did.
 * -EPIPE after the peer closed, -ECONNRESET if the peer died, -EPROTO if
 * the peer corrupted the shared segment. */
ssize_t shunt_send(struct shunt_conn *c, const void *buf, size_t len, int flags);
/* Copy up to len bytes out.  Returns > 0 bytes, 0 at end of stream (after
 * the peer's shutdown or close, once drained), or a negative errno. */
ssize_t shunt_recv(struct shunt_conn *c, void *buf, size_t len, int flags);

/* Zero-copy send: wait until at least min bytes (1..ring size) are free and
 * point *buf at them.  Returns how many bytes may be written there (>= min;
 * it can be less than all the free space, which costs no extra call to
 * learn).  Write in place, then publish with shunt_send_commit(). */
ssize_t shunt_send_reserve(struct shunt_conn *c, void **buf, size_t min, int flags);
/* Publish len bytes written at the reserved pointer (len <= reserved). */
int shunt_send_commit(struct shunt_conn *c, size_t len);

/* Zero-copy receive: wait for data and point *buf at all of it.  Returns the
 * contiguous byte count, 0 at end of stream, or a negative errno.  The bytes
 * live in memory the peer can write: copy before validating them. */
ssize_t shunt_recv_peek(struct shunt_conn *c, const void **buf, int flags);
/* Give back len bytes of what shunt_recv_peek() returned. */
int shunt_recv_release(struct shunt_conn *c, size_t len);

/* --- Control ---------------------------------------------------------- */

/* SHUT_RD, SHUT_WR or SHUT_RDWR, as shutdown(2). */
int shunt_shutdown(struct shunt_conn *c, int how);
/* Close this end and free the connection.  Always frees; returns 0. */
int shunt_close(struct shunt_conn *c);

/*
 * A file descriptor for event loops (poll, select, epoll).  It polls
 * readable when the peer made progress (data, free space) or changed state
 * (shutdown, close, death) after this end was told -EAGAIN, or while this
 * end blocks.  Readiness is a hint: call the operation again, and it may
 * say -EAGAIN once more.  The fd belongs to the connection: do not close it.
 */
int shunt_fd(struct shunt_conn *c);

/* Bytes waiting to be read, as FIONREAD.  Negative errno on failure. */
ssize_t shunt_readable(struct shunt_conn *c);

int shunt_get_stats(const struct shunt_conn *c, struct shunt_stats *out);
/* Change the spin window of this end: > 0 microseconds (used on a crowded
 * machine too, unlike the default window), or <= 0 never spin
 * (the accepting end starts with SHUNT_SPIN_US or the default). */
int shunt_set_spin(struct shunt_conn *c, int spin_us);
/* Ring size in bytes of each direction of this connection. */
size_t shunt_ring_size(const struct shunt_conn *c);

#ifdef __cplusplus
}
#endif
#endif /* SHUNT_H */
