/*
 * shim.h - the LD_PRELOAD socket shim: what its files share.
 *
 * The program keeps its own TCP sockets: the kernel makes every connection,
 * and getsockname, setsockopt, fcntl and fd numbering stay the kernel's.  A
 * connection starts on plain TCP; once it has carried enough to pay for it,
 * the two ends meet through a UNIX socket, prove to each other that they
 * hold the two ends of this very TCP connection, share a segment, and each
 * moves its sending to a ring at a byte offset of the TCP stream that the
 * other reads up to first (docs/design.md, "Moving a TCP connection").
 * From then on the TCP stream only carries doorbells, and its close is the
 * peer's close.
 *
 * Files, by concern:
 *   preload.c  the exported libc wrappers, thin
 *   real.c     the libc functions underneath, for the program's own calls
 *   fdtab.c    which fds are tracked TCP sockets: the table, references
 *   fds.c      close, dup, close_range, closefrom, fclose: the fd rule
 *   arena.c    state shared by the processes of one family (fork, exec)
 *   io.c       data calls: TCP, the switch, then the ring
 *   move.c     when to move, and the switch of each direction
 *   meet.c     the rendezvous: names, messages, proofs
 *   meet_vm.c  the rendezvous between VMs: an ivshmem region, TCP proofs
 *   kern.c     what the kernel knows of a TCP socket (offsets, owners)
 *   bell.c     the TCP stream as doorbell, and who sleeps on it
 *   poll.c     poll and select
 *   epoll.c    epoll
 *   proc.c     fork, vfork, exec, posix_spawn
 *   scm.c      sockets passed with SCM_RIGHTS
 *   back.c     a moved connection goes back to TCP (exec, SCM_RIGHTS, stdio)
 *   kick.c     waking the other waits when one took their doorbell
 *   linger.c   a moved socket's close that must wait for the peer's acks
 * The shim reaches the core only through end.h and medium.h.
 */
#ifndef SHUNT_SHIM_H
#define SHUNT_SHIM_H

#include <errno.h>
#include <poll.h>
#include <aio.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "addr.h"
#include "bell.h"
#include "end.h"

/* --- The libc functions underneath (real.c) ------------------------------
 * For the program's own calls on fds that are not ours, so that they keep
 * every property of libc's (cancellation points, fortify checks, errno).
 * The library's own calls go to sys.h instead. */

struct shim_real {
	int (*socket)(int, int, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*close)(int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	ssize_t (*preadv2)(int, const struct iovec *, int, off_t, int);
	ssize_t (*pwritev2)(int, const struct iovec *, int, off_t, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
	int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned);
	int (*shutdown)(int, int);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
	int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
		       const sigset_t *);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *,
			    const sigset_t *);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
	int (*posix_spawn)(pid_t *, const char *, const void *, const void *,
			   char *const[], char *const[]);
	int (*posix_spawnp)(pid_t *, const char *, const void *, const void *,
			    char *const[], char *const[]);
	pid_t (*fork)(void);
	pid_t (*_Fork)(void);
	int (*daemon)(int, int);
	int (*clone)(int (*)(void *), void *, int, void *, ...);
	int (*close_range)(unsigned, unsigned, int);
	void (*closefrom)(int);
	FILE *(*fdopen)(int, const char *);
	int (*fclose)(FILE *);
	int (*fcloseall)(void);
	FILE *(*freopen)(const char *, const char *, FILE *);
	int (*vdprintf)(int, const char *, va_list);
	int (*__vdprintf_chk)(int, int, const char *, va_list);
	int (*aio_read)(struct aiocb *);
	int (*aio_write)(struct aiocb *);
	int (*aio_read64)(struct aiocb64 *);
	int (*aio_write64)(struct aiocb64 *);
	int (*lio_listio)(int, struct aiocb *const[], int, struct sigevent *);
	int (*lio_listio64)(int, struct aiocb64 *const[], int, struct sigevent *);
	int (*unshare)(int);
	int (*setns)(int, int);
	int (*prctl)(int, ...);
	int (*setuid)(uid_t);
	int (*setgid)(gid_t);
	int (*seteuid)(uid_t);
	int (*setegid)(gid_t);
	int (*setreuid)(uid_t, uid_t);
	int (*setregid)(gid_t, gid_t);
	int (*setresuid)(uid_t, uid_t, uid_t);
	int (*setresgid)(gid_t, gid_t, gid_t);
	long (*syscall)(long, ...);
};

extern struct shim_real shim_real;
/* Resolve the real functions; idempotent, safe before constructors run. */
void shim_real_init(void);
#define REAL(fn) (shim_real.fn ? shim_real.fn : (shim_real_init(), shim_real.fn))

/* Is the shim on at all?  Off when SHUNT_DISABLE=1 or the config was bad;
 * inherited connections are still carried then. */
int shim_enabled(void);
void shim_estranged(void);
/* The pid this process had when the shim last looked: a vfork child runs
 * in its parent's memory and must change none of the shim's tables. */
int shim_pid(void);
int shim_in_vfork_child(void);

/* --- State shared by a family of processes (arena.c) ----------------------
 * A process and its forked children (and exec'd images) hold the same
 * sockets; what the shim knows of each tracked socket lives in a slot of a
 * memfd they all map, so that after fork both see one truth: who holds the
 * socket, whether it moved, the ring positions.  The peer never sees it. */

enum slot_state {
	SLOT_FREE = 0,
	SLOT_PLAIN,   /* on TCP, counting towards a move */
	SLOT_MEET,    /* on TCP, meeting the peer (this process) */
	SLOT_MOVED,   /* a segment is shared: the switch, then rings */
	SLOT_OFF,     /* stays on TCP for good */
};

/* Phases of a MOVED slot, set once each (docs/design.md, "The switch"). */
#define PH_TX_RING 0x1u /* our sends go to the ring */
#define PH_RX_KNOW 0x2u /* the peer's switch offset is known: x_peer */
#define PH_RX_RING 0x4u /* we read the ring: TCP carries only doorbells */
#define PH_NOBELL  0x8u /* our TCP sending side is shut: no more rings */
/* Going back to TCP (back.c), the peer asked: */
#define PH_TX_BACK  0x10u /* our sends left the ring: its unread bytes go first */
#define PH_TX_PLAIN 0x20u /* ... and went: our sends are the kernel's */
#define PH_RX_PLAIN 0x40u /* the peer's data is on TCP again: reads too */

/* Flags: why a socket may not move, and facts the data path needs. */
#define TF_STDIO    0x01u /* is (or was) fd 0, 1 or 2, or fdopen'ed */
#define TF_EXPORTED 0x02u /* sent to another process (SCM_RIGHTS) */
#define TF_FOREIGN  0x04u /* received from another process */
#define TF_OPTS     0x08u /* an option we cannot carry (OOB, zero-copy, ...) */
#define TF_SHUT     0x10u /* shut down while on TCP */
#define TF_LINGER0  0x20u /* SO_LINGER {1, 0}: the close is a reset */
#define TF_NONBLOCK 0x40u /* O_NONBLOCK on the file description */
#define TF_INQ      0x80u /* TCP_INQ set after the move: recvmsg says TCP_CM_INQ */
#define TF_JAM      0x100u /* both ends waited for room: back to TCP (bell.c) */
#define TF_FIN_DUE  0x200u /* shut for writing while going back: the FIN follows
                            * the ring's leftovers (back.c, flush_locked) */
#define TF_READERS  0x400u /* two reads of the stream in the kernel at once */
#define TF_NOMOVE   (TF_STDIO | TF_EXPORTED | TF_OPTS | TF_SHUT | TF_READERS)

/* Why a connection stays on TCP, counted per process for `shunt stat`. */
enum shim_why {
	WHY_SHORT,    /* closed before it carried enough to pay */
	WHY_NOPEER,   /* the other end does not run shunt (or not in time) */
	WHY_POLICY,   /* a bypass rule, or an address we do not carry */
	WHY_SHARED,   /* another process holds the socket too */
	WHY_STDIO,    /* used as stdin/stdout or through stdio */
	WHY_OPTIONS,  /* options or flags we cannot carry */
	WHY_REFUSED,  /* the peer's user, namespace or proof was refused */
	WHY_ERROR,    /* a system call failed on the way */
	WHY_FULL,     /* both ends waited for room: the rings held too little */
	WHY_N
};
extern const char *const shim_why_names[WHY_N];

#define SLOT_HOLDERS 4
/* A holder entry reserved for a child being forked, made before the child
 * exists so that no close or move of ours takes it for gone (proc.c): alive
 * while the forking process is. */
/* A fork's reservation: the forker's pid (22 bits, Linux's largest
 * pid_max) and which of its forks (8 bits), so that each child and its
 * parent turn or remove their own reservation and no other fork's. */
#define SLOT_PID_BITS 22
#define SLOT_FORKING(pid, seq) \
	((int32_t)(-2 - (int32_t)((uint32_t)(pid) | ((uint32_t)(seq) & 0xffu) << SLOT_PID_BITS)))
#define SLOT_FORKER(tag)  ((int)((uint32_t)(-2 - (tag)) & ((1u << SLOT_PID_BITS) - 1)))

/* A connection that meets through an ivshmem region (meet_vm.c): where,
 * and the proof each side sends on TCP right after its switch offset. */
struct shim_vm {
	uint32_t on;               /* it meets through the region */
	uint32_t offerer;          /* 1: the lower endpoint, which offers */
	uint32_t has_entry;        /* the offerer's directory entry is out: */
	uint32_t entry, entry_gen;
	uint32_t has_seg;          /* a segment slot is ours: */
	uint32_t seg, seg_gen;
	uint64_t nonce;            /* ours, published in the region */
	uint64_t proof_tx;         /* sent right after our switch offset */
	uint64_t proof_rx;         /* expected right after the peer's */
	uint32_t proof_need;       /* its length, 0 without one (local) */
	uint32_t proof_sent;
	_Atomic uint32_t proof_got; /* bytes of the peer's taken so far */
	_Atomic uint32_t proof_taking;
	uint8_t got[8];
};

struct tslot {
	_Atomic uint32_t gen;      /* bumped when the slot is freed */
	_Atomic uint32_t state;    /* enum slot_state */
	_Atomic uint32_t flags;    /* TF_* */
	_Atomic uint32_t phase;    /* PH_* */
	_Atomic int32_t holders[SLOT_HOLDERS]; /* pids; -1: more than fit;
	                            * < -1: SLOT_FORKING */
	_Atomic uint32_t why;      /* enum shim_why + 1 once counted */
	uint32_t side;             /* 0: made the segment, 1: the other */
	uint64_t ino;              /* the socket's inode: its identity */
	struct shunt_addr local, peer; /* known from the move on */
	_Atomic uint64_t calls, bytes_in, bytes_out;
	_Atomic uint64_t next_step; /* `calls` at which the move takes a step */
	_Atomic uint32_t steps;
	_Atomic uint32_t retries;   /* meetings that found no peer, and looks
	                             * refused past MAX_STEPS (move.c, "Later") */
	_Atomic int64_t started_ns; /* first step of the move */
	_Atomic int64_t stepped_ns; /* the last step of the meeting */
	_Atomic uint32_t held_why; /* enum shim_why + 1: why the last step waited */
	_Atomic uint32_t retry_s;  /* no step before this second of CLOCK_MONOTONIC */
	_Atomic uint64_t rx_tcp;   /* TCP stream bytes consumed by our reads */
	_Atomic uint64_t x_peer;   /* with PH_RX_KNOW: where the peer's ring data starts */
	_Atomic uint32_t inflight; /* our sends inside the kernel (TCP phase) */
	_Atomic uint32_t rx_inflight; /* our reads of the stream inside the kernel,
	                            * until counted in rx_tcp (move.c, start) */
	_Atomic uint32_t switching; /* a thread is switching our sends to the ring */
	_Atomic uint32_t tx_owed;   /* a switch gave up on a send in the kernel:
	                             * that send makes it once out (io.c) */
	_Atomic uint32_t reset_told; /* the program was told of the reset: now end
	                            * of stream, and EPIPE (io.c) */
	_Atomic uint32_t kreset;   /* we took the kernel's reset (a doorbell read,
	                            * a read of the stream, SO_ERROR): the program
	                            * is still to be told, as reset_due says */
	_Atomic uint32_t sent_after; /* a send came after the peer's close */
	_Atomic int64_t rcvtimeo_ns, sndtimeo_ns; /* SO_RCVTIMEO, SO_SNDTIMEO; 0 none, < 0 no wait */
	_Atomic int32_t foreign_pid; /* TF_FOREIGN: who sent it to us (-1 unknown) */
	_Atomic uint64_t back_pos, back_end; /* PH_TX_BACK: our ring bytes to resend */
	_Atomic uint64_t back_more; /* the peer's TCP data put behind its ring (back.c) */
	_Atomic uint32_t appending; /* a read is putting it there */
	/* TCP_NODELAY and TCP_CORK as the program set them, while the kernel's
	 * socket has them on and off for the doorbells (io.c); under opt_mu. */
	_Atomic uint32_t nd_virtual; /* 1: the program's values are these */
	_Atomic uint32_t nd_takes; /* odd while a take runs; bumped twice by one
	                            * (io.c, "Before the move, no lock") */
	int32_t nd_nodelay, nd_cork;
	int32_t rcvlowat;          /* SO_RCVLOWAT the program set while moved (0:
	                            * none; the kernel's is 1 meanwhile) */
	/* SO_LINGER as the program set it, while the kernel's socket has
	 * {1, 0} for the ring's bytes we resend (io.c); under opt_mu. */
	uint32_t lg_virtual;       /* 1: the program's value is lg_program */
	struct linger lg_program;
	uint8_t bell;              /* the doorbell byte on the TCP stream */
	_Atomic uint32_t ringing;  /* doorbells on their way into the kernel */
	/* Sleeping on the TCP doorbell: one leader in the kernel, followers on
	 * a futex (bell.c). */
	_Atomic uint32_t leader;   /* pid of the leader, 0 for none */
	_Atomic uint32_t bell_seq; /* futex word: bumped when the leader wakes */
	_Atomic uint32_t followers;
	_Atomic uint32_t sw_mine;  /* our switch word's flags (shim_sw_mine) */
	pthread_mutex_t tx_mu, rx_mu; /* process-shared, robust */
	pthread_mutex_t opt_mu;    /* the same; held only around option calls */
	struct shunt_end end;      /* MOVED: the connection end */
	struct shim_vm vm;         /* between VMs (meet_vm.c) */
};

/*
 * Our switch word's flags (the segment's sw[side]): written there for the
 * peer and kept in the slot too, which is the family's alone, and read
 * from there, never back from the segment, where the peer may write
 * anything (a helper's attack set ASK in ours and exited: every read of
 * ours took itself for the asker and looped for good).
 */
static inline uint32_t shim_sw_mine(struct tslot *s)
{
	return atomic_load_explicit(&s->sw_mine, memory_order_acquire);
}

static inline void shim_sw_set(struct tslot *s, uint32_t bits)
{
	atomic_fetch_or(&s->sw_mine, bits);
	atomic_fetch_or(&s->end.seg.ctl->sw[s->side].flags, bits);
}

static inline void shim_sw_clear(struct tslot *s, uint32_t bits)
{
	atomic_fetch_and(&s->sw_mine, ~bits);
	atomic_fetch_and(&s->end.seg.ctl->sw[s->side].flags, ~bits);
}

/* The slot's end over a new segment, whose switch words start at 0;
 * a peer that vanished reads as TCP's close would (hangup_eof). */
static inline void shim_end_init(struct tslot *s, const struct shunt_seg *seg, int side,
				 int spin_us)
{
	atomic_store(&s->sw_mine, 0);
	shunt_end_init(&s->end, seg, side, spin_us, 1);
}

/* The first word of a segment's: flags, the whole of it. */
static inline void shim_sw_start(struct tslot *s, uint32_t flags)
{
	atomic_store(&s->sw_mine, flags);
	atomic_store(&s->end.seg.ctl->sw[s->side].flags, flags);
}

struct tslot *shim_slot_new(uint64_t ino, uint32_t *gen);
/* Let go of this process's hold; frees the slot when nobody holds it. */
void shim_slot_unhold(struct tslot *s, uint32_t gen);
/* Add a holder (fork, spawn, exec'd image); idempotent. */
void shim_slot_hold(struct tslot *s, int pid);
/* Reserve an entry for a child about to be made (tag: SLOT_FORKING). */
void shim_slot_reserve(struct tslot *s, int32_t tag);
/* The child of that reservation is pid (pid <= 0: none was made): the
 * entry becomes pid, or goes if pid is there already.  1 if it was found. */
int shim_slot_born(struct tslot *s, uint32_t gen, int32_t tag, int pid);
/* exec closes our copy (close-on-exec) while others hold the socket: we
 * are no holder from now on (1), unless we were the last (0: the new
 * image, same pid, keeps the place, as before). */
int shim_slot_let_go(struct tslot *s);
/* Is any process but us alive and holding it? */
int shim_slot_shared(struct tslot *s);
/* Does any entry name another process (alive or not, or a fork's
 * reservation)?  No system call. */
int shim_slot_others(struct tslot *s);
int shim_slot_index(const struct tslot *s);
struct tslot *shim_slot_at(int index, uint32_t gen);
void shim_lock(pthread_mutex_t *mu);
int shim_trylock(pthread_mutex_t *mu); /* 0, or -EBUSY: held */
/* n bytes of memory from the kernel, or NULL: for a vfork child and for a
 * read in a signal handler.  shim_scratch_free(p, n) gives them back. */
void *shim_scratch(size_t n);
void shim_scratch_free(void *p, size_t n);
void shim_unlock(pthread_mutex_t *mu);
/* The family's upgrade-calls shift (move.c), in the arena's header. */
_Atomic uint32_t *shim_arena_pay_shift(void);
/* The arena's fd, for exec; -1 if none. */
int shim_arena_fd(void);
/* Do we still run with the credentials the arena was made or adopted under? */
int shim_arena_creds_same(void);
/* Our credentials changed without exec: a family of our own, a copy of
 * the arena at the same address (arena.c, "Leaving the family"); 0 or
 * negative errno, and then shim_arena_drop() covers it with anonymous
 * memory. */
int shim_arena_leave(void);
void shim_arena_drop(void);
/* Map an inherited arena (exec); 0 or negative errno. */
int shim_arena_adopt(int fd);
/* A forked child is a new process of the family: its own line. */
void shim_arena_forked(void);
/* Mapped segments of this process (move.c's ring budget). */
void shim_segment_mapped(int delta);
/* Count for `shunt stat`. */
void shim_count_seen(void);
void shim_count_moved(void);
int shim_count_why(struct tslot *s, enum shim_why why);

/* --- Tracked sockets (fdtab.c) -------------------------------------------- */

struct tmeet; /* a meeting in progress (meet.c), this process's own */

#define SHIM_PLAIN_REGS 2

struct tsock {
	_Atomic int refs;          /* fds naming it + calls in progress */
	_Atomic int nfds;          /* fds of this process naming it */
	struct tslot *slot;
	uint32_t gen;
	pthread_mutex_t mu;        /* guards meet, and the step that ends it MOVED */
	struct tmeet *meet;        /* a meeting in progress, or a listener's segment
	                            * fd the dialer has yet to open (meet.c) */
	_Atomic uint32_t io_gen;   /* moves on I/O and rings: epoll looks again */
	_Atomic int nregs;         /* its entries in epoll sets of ours (epoll.c) */
	/* Its registrations while on TCP, the kernel's alone (epoll.c, "Plain
	 * registrations"); nplain -1: entries of ours only, for good. */
	_Atomic int reg_lock;
	int nplain;
	struct shim_plain_reg {
		int epfd, fd;
		struct epoll_event ev;
	} plain[SHIM_PLAIN_REGS];
	int mapped;                /* this process maps the segment */
	_Atomic(_Atomic uint64_t *) rx_pub; /* our reads' count for the peer (seg.h
	                            * sw[side].rx_tcp), from before our OPEN */
	_Atomic int publishing;    /* calls writing through rx_pub now */
	int unhold;                /* its last fd went: the slot's hold goes
	                            * with the last reference (fdtab.c) */
	_Atomic int kreads;        /* this process's reads of the stream inside
	                            * the kernel: a doorbell that comes is theirs
	                            * (bell.c).  The slot's rx_inflight counts the
	                            * family's, which a process killed in a read
	                            * leaves up: waits would spin on it for good. */
	_Atomic int no_turns;      /* a turn waited out: our reads take turns no
	                            * more (io.c, tcp_turn) */
	_Atomic int starting;      /* a thread of ours is in the first step, which
	                            * fills the slot's addresses (move.c) */
	_Atomic int splicing;      /* our splices in the kernel before the move: no
	                            * commit meanwhile (io.c, splice_plain) */
	_Atomic int64_t peer_looked; /* when a send last asked if the peer lives */
	_Atomic uint32_t sends;
	_Atomic int64_t peer_vouched; /* when an epoll event or a doorbell spared
	                            * the next send's look (io.c) */
	_Atomic int announced;     /* its move logged and counted (move.c) */
	_Atomic uint32_t after_move; /* data calls in shared memory, up to
	                            * SHIM_PAY_CALLS (move.c, "Whether a move pays") */
	_Atomic uint64_t met_at;   /* the slot's calls at the meeting's first step */
	_Atomic int judged;        /* that move's outcome was counted (once: exit
	                            * goes through every fd of a dup'ed socket) */
	/* Both ends full (io.c, shim_jam_at): since when, and the rings'
	 * progress then. */
	_Atomic int64_t jam_since;
	_Atomic uint64_t jam_progress;
	int kept;                  /* 0, or a dup of the socket its close kept for
	                            * calls still in progress (fdtab.c, "Closed
	                            * under a call"); an fd of the library's */
	struct tsock *birth_next;  /* reserved for a child being made (proc.c) */
	int birth;                 /* ... is on that list */
};

/* The process put itself under a seccomp filter (or started under one):
 * from then on the library makes no system call of its own, and every
 * wrapper passes the program's call through (preload.c, "Sandboxes"). */
extern _Atomic int shim_hands_off;

/* The tracked socket behind fd with a reference taken, or NULL (the fast
 * path: one load; always NULL once hands off).  Release with shim_put(). */
struct tsock *shim_get(int fd);
void shim_put(struct tsock *t);
/* One more reference to a socket the caller holds one to. */
void shim_ref(struct tsock *t);
/* A wrapper's call on fd: shim_get, the reference listed as this thread's
 * call in progress (*mark) until shim_release, which keeps errno.  A
 * thread cancelled or ended inside the call drops it at its end
 * (shim_calls_ended, from kick.c's thread end, shim_thread_watch). */
struct tsock *shim_hold(int fd, unsigned *mark);
/* ... for a call that is a cancellation point in glibc (read, write, send,
 * recv and their vectors and messages): a wait of the ring's inside it
 * acts on a pending cancellation (bell.c, tb_sleep), shim_in_cancel_point. */
struct tsock *shim_hold_cp(int fd, unsigned *mark);
int shim_in_cancel_point(void);
void shim_release(struct tsock *t, unsigned mark);
void shim_calls_ended(void);
/* The innermost call on t holds mu (a direction's lock) across its wait,
 * or (NULL) no longer; and the calls this thread jumped out of let go of,
 * their locks with them (fdtab.c). */
void shim_call_locks(struct tsock *t, pthread_mutex_t *mu);
void shim_calls_reap(void);
void shim_thread_watch(void);
void shim_thread_key_init(void); /* at load (kick.c) */
/* A peek with no reference (for the wait calls). */
int shim_has(int fd);
/* Start tracking a connected (or connecting) TCP socket at fd. */
struct tsock *shim_track(int fd, uint32_t flags);
/* Track fd now if it is a TCP socket not yet connected (nor listening),
 * as its connect() would: it is being added to an epoll set or dup'd.
 * A reference, or NULL. */
struct tsock *shim_track_unconnected(int fd);
/* Track fd as the holder of an existing slot (exec'd image). */
struct tsock *shim_track_slot(int fd, struct tslot *s, uint32_t gen);
/* newfd now names what oldfd does (dup, dup2, dup3, F_DUPFD). */
void shim_dup(int oldfd, int newfd);
/* fd is being closed (open: still names the socket, which we may tell
 * the peer through), or was closed behind our back (open = 0): drop it. */
void shim_forget(int fd, int open);
/* Around fork: -1 before, 1 in the parent, 0 in the child (fdtab.c,
 * "Closed under a call"). */
void shim_kept_fork(int phase);
/* Visit every tracked fd (fork, exec, close_range). */
void shim_each(void (*fn)(int fd, struct tsock *t, void *arg), void *arg);
/* The same, each with a reference for the call (not in a signal handler). */
void shim_each_held(void (*fn)(int fd, struct tsock *t, void *arg), void *arg);
/* The fd kind table: is fd a TCP socket we made or accepted from one? */
enum fd_kind {
	FD_UNKNOWN = 0, FD_TCP, FD_OTHER,
	FD_EPOLL,  /* made by our epoll_create */
	FD_LISTEN, /* a TCP socket found listening once (fdtab.c, shim_track_unconnected) */
};
void shim_set_kind(int fd, enum fd_kind k);
enum fd_kind shim_kind(int fd);
/* Is fd a TCP socket (IPv4 or IPv6)?  Asked once per fd, then cached. */
int shim_is_tcp(int fd);

/* For tests: 1 if fd's connection runs over shared memory, else 0. */
int shunt__shim_is_accelerated(int fd);
/* Its connection met its peer and maps the segment (either direction may
 * still be on TCP), for the tests. */
int shunt__shim_is_moved(int fd);
int shunt__shim_arena_used(void); /* slots in use */
long long shunt__shim_moves(void); /* moves this process counted */

/* --- The fd rule (fds.c) ----------------------------------------------------
 * The library never acts on an fd it cannot show is still its own, and the
 * program never acts on one of the library's: every way to close or replace
 * an fd passes here. */

int shim_close(int fd);
int shim_close_begin(int fd);
int shim_dup2(int oldfd, int newfd, int flags, int three);
/* dup() or F_DUPFD gave newfd, maybe stdin, stdout or stderr. */
void shim_dup_landed(int oldfd, int newfd);
int shim_close_range(unsigned first, unsigned last, int flags);
void shim_closefrom(int first);
/* A program's call returned a new fd: whatever we knew of that number is
 * stale (it was closed where we could not see). */
void shim_fresh_fd(int fd);
/* Is fd one of the library's own? */
int shim_own_fd(int fd);
/* stdio took fd (fdopen): it may read and write where we cannot see. */
FILE *shim_fdopen(int fd, const char *mode);
int shim_fclose(FILE *f);
int shim_fcloseall(void);
/* dprintf() on a tracked socket (chk: __vdprintf_chk's flag, or -1). */
int shim_vdprintf(struct tsock *t, int fd, int chk, const char *fmt, va_list ap);
FILE *shim_freopen(const char *path, const char *mode, FILE *f);

/* --- Moving (move.c, meet.c) --------------------------------------------- */

/* After a data call on a socket still on TCP: count it, and take a step
 * of the move when one is due.  Never blocks; keeps errno. */
void shim_count(struct tsock *t, int fd, uint64_t in, uint64_t out);
/* A data call in shared memory: counted up to SHIM_PAY_CALLS; that many
 * from the meeting's first step on, the move paid for itself (move.c). */
#define SHIM_PAY_CALLS 40
static inline void shim_count_moved_call(struct tsock *t)
{
	uint32_t n = atomic_load_explicit(&t->after_move, memory_order_relaxed);

	if (n < SHIM_PAY_CALLS) /* racing threads may lose one: it is a hint */
		atomic_store_explicit(&t->after_move, n + 1, memory_order_relaxed);
}
/* Its last fd here closes: what the connection's life says of the move
 * threshold (move.c, "Whether a move pays"). */
void shim_move_outcome(struct tsock *t);
/* A send on TCP before the move: 1, and in flight (the switch waits for
 * it) until shim_plain_leave(); 0 if the connection moved meanwhile. */
int shim_plain_enter(struct tsock *t);
void shim_plain_leave(struct tsock *t, int fd);
/* The connection stays on TCP for good, for this reason. */
void shim_give_up(struct tsock *t, int fd, enum shim_why why);
/* Switch our sends to the ring if we may now; 0 when they go there. */
int shim_switch_tx(struct tsock *t, int fd);
/* Does the peer (on this host) still have our TCP data before our switch
 * to read?  Then no read or wait of its sleeps on our doorbells (move.c). */
int shim_peer_before_x(struct tslot *s);
/* The same, from what the peer's reads published alone (no system call). */
int shim_peer_short_of_x(struct tslot *s);
/* Our ring has no room, and the peer will ring no doorbell when it frees
 * some: its sends are still on the stream, where a doorbell would be data,
 * or our reads have not yet taken its TCP data before its switch, and a
 * doorbell would wait behind that (bell.c).  A wait for room then looks
 * again on its own (epoll.c, poll.c; our own waits nap: bell.c). */
int shim_room_unrung(struct tsock *t);
/* The same, room or not: the peer rings none when its reads free room.
 * A wait that looked for room and napped only if there was none slept
 * for good when the room came in between (t_shim_flags
 * splice_reader_moves, 1 run in 40 to 170: poll.c, nap_ns). */
int shim_rings_no_room(struct tsock *t);
/* Our own shutdown(SHUT_RD) of a moved socket: the kernel's side reads as
 * ended for good and can tell of no doorbell (waits for room nap). */
int shim_rd_shut(struct tsock *t);
/* A vector with no bytes at all (a bad pointer to it is not: its call
 * fails with EFAULT). */
int shim_vec_empty(const struct iovec *iov, int n);
/* Our sends go to the ring (not back to TCP): the kernel's POLLOUT on the
 * stream says nothing of room there (io.c). */
int shim_tx_ringed(struct tsock *t);
/* shutdown(SHUT_WR) while our sends are on TCP: 1 if they moved to the
 * ring (the end of stream goes there), 0 if they stay on TCP for good. */
int shim_switch_for_shutdown(struct tsock *t, int fd);
/* May the connection still move (it is on TCP, not for good)?  A wait
 * the kernel answers for it then needs a second look (poll.c). */
int shim_may_move(struct tsock *t);
/* Is the connection moved, once a meeting step another thread is taking
 * is over?  For a call that was inside the kernel while it moved. */
int shim_moved_now(struct tsock *t);
/* Learn whether the peer switched its sends; updates PH_RX_KNOW. */
int shim_peer_switched(struct tsock *t);
/* --- Going back to TCP (back.c) --------------------------------------------
 * A moved connection must go back to plain TCP (before exec, SCM_RIGHTS,
 * stdio): 0 when it is, or a negative errno (it was reset). */
int shim_demote(struct tsock *t, int fd);
/* Has the peer of a moved connection closed its end?  0 if not moved. */
int shim_peer_closed(struct tsock *t);
/* Something only the kernel's TCP honours was asked for (an option,
 * O_ASYNC): the connection stays on TCP, or goes back to it, `quiet`ly
 * (no answer awaited: the peer's ring is ours to read to its end) when
 * the option means nothing for bytes already there. */
void shim_tcp_only(struct tsock *t, int fd, int quiet);
/* Both ends waited for room: back to TCP (io.c, "Both ends full"). */
void shim_unjam(struct tsock *t, int fd);
/* When a wait of ours for room in a full ring gives up on it, if nothing
 * moves meanwhile (SHUNT_NEVER: the peer is not stuck too); and whether
 * it does now (TF_JAM set: the next send goes back to TCP). */
int64_t shim_jam_at(struct tsock *t);
int shim_jam_due(struct tsock *t);
/* After our shutdown both ways, an option that needs TCP makes our reads
 * the kernel's once the peer's ring is read: 1 if they are now. */
int shim_back_past_shut(struct tsock *t, int fd);
/* The same once the peer closed (or shut both ways) with its ring unread. */
int shim_back_past_close(struct tsock *t, int fd);
/* shutdown() of a socket whose sends went back to TCP: where our FIN
 * follows is told to a peer that may still read our ring.  0 or -errno. */
int shim_back_shutdown(struct tsock *t, int fd, int how);
/* The same for our last close of it (fd still open). */
void shim_back_close(struct tsock *t, int fd);
/* We shut our sends down so (our kernel's FIN went). */
int shim_back_fin_sent(struct tsock *t);
/* The peer's FIN so sent reached our kernel's socket. */
int shim_back_fin_came(struct tsock *t, int fd);
/* The peer asked us to go back (the data paths look first). */
int shim_peer_asks(struct tsock *t);
/* The peer asked, or said its sends went back to TCP: our reads follow. */
int shim_peer_leaves(struct tsock *t);
/* The peer's sends went back to TCP (it said BACK). */
int shim_peer_back(struct tsock *t);
/* The peer's FIN came, as its ring says: it shut its sends down, or closed
 * with all of ours read (with bytes unread, a reset and no FIN). */
int shim_peer_fin(struct tslot *s);
/* The asker's TCP bytes since its way back queued in our socket, while
 * its ring still holds data for us. */
uint64_t shim_back_queued(struct tsock *t, int fd);
/* Once the peer said BACK: its doorbells left in our stream before its
 * data (-1 before). */
long shim_back_bells_left(struct tslot *s, int fd);
/* A peek past the ring's end into the asker's TCP data behind its
 * doorbells: the bytes put at buf (at most len; trunc: MSG_TRUNC, counted
 * only), or 0. */
size_t shim_back_peek_past(struct tsock *t, int fd, void *buf, size_t len, int trunc);
/* Answer it: our sends leave the ring; 1 when this call answered.
 * _locked: tx_mu is held.  shim_back_answered, after a read's or a wait's
 * answer: what the peer left unread in our ring goes by TCP at once. */
int shim_back_answer(struct tsock *t, int fd);
void shim_back_answer_locked(struct tsock *t, int fd);
void shim_back_answered(struct tsock *t, int fd);
/* The same once this thread holds no epoll set's lock (epoll.c). */
void shim_epoll_answered(struct tsock *t, int fd);
/* Our sends after the answer (made now if need be: then a moment's wait
 * for the peer's BACK, as shim_back_answered's): send what the peer left
 * unread in our ring first.  0 when the kernel's socket carries our sends
 * now; -EAGAIN (not `block`) or another negative errno while some is
 * left. */
int shim_back_tx(struct tsock *t, int fd, int block);
/* The last call on the socket (close, exit): answer, then send what the
 * asker left unread in our ring, for 2 s at most; 0 or < 0. */
int shim_back_tx_last(struct tsock *t, int fd);
/* The peer's data is on TCP again once its ring is read: 1 when our reads
 * go to the kernel, 0 not yet, < 0 the stream broke.  `wait`: for the
 * peer's last doorbells to arrive. */
int shim_back_rx(struct tsock *t, int fd, int wait);
/* Where the asker's data resumes on TCP (its back_tcp) once it went back:
 * 1 when nothing of its ring is left for us, 2 while some is, 0 not gone
 * back.  A read that took the stream past it keeps what follows the
 * doorbells (io.c, past_back): in its buffer, then says so (rx_done), or
 * behind the ring: append_begin gives where (NULL: it cannot), and
 * append_end publishes it there. */
int shim_back_resumes(struct tsock *t, uint64_t *tcp);
uint8_t *shim_back_append_begin(struct tsock *t, uint64_t at, size_t n, uint64_t *head);
void shim_back_append_end(struct tsock *t, uint64_t head, size_t n);
void shim_back_rx_done(struct tsock *t, int fd);
/* At exit(): the doorbells in a moved socket's stream, off it. */
void shim_back_exit_bells(struct tsock *t, int fd);
/* The last call while going back, for our reads (move.c): 1 a reset, 0 a
 * FIN, -1 our reads are the kernel's. */
int shim_back_rx_last(struct tsock *t, int fd);
/* SO_LINGER {1, 0} on the kernel's socket: its close is a reset (move.c). */
void shim_linger0(int fd);
/* Both directions are back: the connection is plain TCP. */
void shim_back_settle(struct tsock *t, int fd);
/* Our ring's leftovers still wait for room on TCP: a wait must watch for
 * writing too (io.c). */
int shim_back_pending(struct tsock *t);
/* The process lets go of a moving connection (close, give up). */
void shim_meet_drop(struct tsock *t);
/* The same, safe in a signal handler: its fds closed now, its memory
 * freed later; -EBUSY when another call holds t (nothing done). */
int shim_meet_shed(struct tsock *t);
/* A forked child lets go of its copy of its parent's meeting, which goes
 * on in the parent: the child's copies of the sockets are closed (the
 * listener's named socket among them), the name is left alone. */
void shim_meet_forget(struct tsock *t);
/* Around the making of a process that will hold our sockets: no step of a
 * move runs from pause to resume (one thread pauses at a time); in the
 * child, shim_moves_forked() instead of resume. */
void shim_moves_pause(void);
void shim_moves_resume(void);
void shim_moves_forked(void);
/* While paused: another process is about to hold t's socket; a meeting in
 * progress is called off, and the connection waits on TCP. */
void shim_move_call_off(struct tsock *t, int fd);
/* Meetings of this process in progress (meet.c). */
int shim_meetings_held(void);
/* The program is out of fds: call off the meetings in progress, whose
 * sockets wait for peers (each starts again at its connection's next data
 * call).  How many were called off; 0 when none, or when a step is under
 * way or another thread pauses (never waits: it may run in a signal
 * handler). */
int shim_moves_reclaim_fds(void);
/* 0 if a meeting may commit now, else -ECANCELED or -EBUSY (move.c). */
int shim_may_commit(struct tsock *t);
/* One step of meeting the peer (meet.c): 1 done (moved: the slot says
 * SLOT_MOVED), 0 not yet, < 0 given up (the reason is counted). */
int shim_meet_step(struct tsock *t, int fd);

/* --- Between virtual machines (meet_vm.c) -----------------------------------
 * The ivshmem medium's rendezvous, for a peer that is not in our own
 * network namespace when a region is configured or found (docs/design.md,
 * "Between virtual machines").  move.c asks shim_vm_wanted() once, at the
 * first step, and then steps through shim_vm_step() (as shim_meet_step). */
int shim_vm_wanted(struct tsock *t);
int shim_vm_step(struct tsock *t, int fd);
/* The meeting is given up, or the fd closed during it. */
void shim_vm_drop(struct tsock *t);
/* move.c's abandon(): may a segment whose peer never attached be left
 * now?  `late`: the local medium's answer (waited long enough). */
int shim_vm_may_abandon(struct tsock *t, int late);
/* The family's last close: our side lets go of the region's slot. */
void shim_vm_let_go(struct tsock *t);
/* The proof.  shim_proof_ready() before our switch (no lock held): 0 we
 * may switch, -EAGAIN not now (no room on the socket for the proof).  shim_proof_send() once our offset is published (under
 * tx_mu), before any doorbell: the peer, seeing the bytes, sees the
 * offset too. */
int shim_proof_ready(struct tsock *t, int fd, int patient);
void shim_proof_send(struct tsock *t, int fd);
/* Reading at the peer's offset: 0 when reads may go to its ring (the
 * proof came and matched, or it did not and the end is broken), -ENOTCONN
 * when it was no proof and the connection is plain TCP again (nothing
 * consumed), else -EAGAIN (at deadline) or -EINTR. */
int shim_proof_recv(struct tsock *t, int fd, int64_t deadline);
/* Going back to TCP (back.c, under rx_mu): take the peer's proof off the
 * stream if it sent one, so that only doorbells are left: 0, -EAGAIN,
 * -EINTR. */
int shim_proof_settle(struct tsock *t, int fd, int64_t deadline);
/* A poll's look: take the peer's proof if that is what the stream has. */
void shim_proof_seen(struct tsock *t, int fd);
/* A read took n bytes past the peer's offset: how many of them were
 * proof (checked); -1 wrong, the end is broken; -2 wrong, and the
 * connection is plain TCP again: all n bytes are data. */
long shim_proof_take(struct tsock *t, const uint8_t *p, size_t n);
static inline int shim_proof_pending(struct tslot *s)
{
	return s->vm.proof_need &&
	       atomic_load_explicit(&s->vm.proof_got, memory_order_acquire) < s->vm.proof_need;
}

/* --- What the kernel knows (kern.c) ---------------------------------------- */

/* Bytes written into the TCP stream so far (acknowledged + queued). */
int shim_kern_tx_total(int fd, uint64_t *out);
/* Bytes of the TCP stream received (the peer's FIN counts one). */
int shim_kern_rx_received(int fd, uint64_t *out);
/* 1 if the kernel's socket received the peer's FIN (its state says so). */
int shim_kern_fin_in(int fd);
/* 1 if the kernel's socket is closed (TCP_CLOSE: a reset, or both FINs). */
int shim_kern_closed(int fd);
/* Bytes of the TCP stream consumed by reads so far. */
int shim_kern_rx_consumed(int fd, uint64_t *out);
/* The same, where a closed socket's count holds the peer's FIN if
 * fin_if_closed, or if it passed fin_at (SHIM_FIN_UNKNOWN: not known). */
#define SHIM_FIN_UNKNOWN (~0ull)
int shim_kern_rx_consumed_fin(int fd, uint64_t *out, int fin_if_closed, uint64_t fin_at);
int shim_kern_netns_cookie(int fd, uint64_t *out);
/* 1 if a is an address of our network namespace (or we cannot tell). */
int shim_kern_addr_ours(const struct shunt_addr *a);
/* The TCP socket with these addresses in our network namespace: its
 * inode (0 if no process holds it) and owner's uid; -ENOENT if none. */
int shim_kern_sock_find(const struct shunt_addr *src, const struct shunt_addr *dst,
			uint64_t *ino, uint32_t *uid);
/* The bytes the socket with these addresses holds unread (sock_diag's
 * rqueue): -ENOENT if no such socket is in our network namespace. */
int shim_kern_unread(const struct shunt_addr *src, const struct shunt_addr *dst, uint32_t *unread);
/* The inode of the socket process pid holds at fd, read from /proc: 0,
 * -EACCES if we may not look (or pid is no process of our /proc), -ENOENT
 * if no such fd, -ENOTSOCK if no socket. */
int shim_kern_proc_sock(int pid, int fd, uint64_t *ino);
/* Is fd a TCP socket (inet or inet6)? */
int shim_kern_is_tcp(int fd);
uint64_t shim_kern_ino(int fd);
/* Has the peer's FIN or a reset come in?  (Whatever our own shutdowns.) */
int shim_kern_peer_done(int fd);
/* The FINs a kernel TCP state has seen: ours sent, the peer's in. */
#define SHIM_FIN_OUT 1
#define SHIM_FIN_IN 2
int shim_kern_fins(uint8_t state);
/* Has our FIN gone down the kernel's stream? */
int shim_kern_fin_sent(int fd);

/* uring.c: a process with an io_uring moves nothing (the ring's reads and
 * writes pass every wrapper).  Made: one is made through syscall(); 1 if
 * one was before.  Seen: made, or mapped now. */
int shim_uring_made(void);
int shim_uring_seen(void);

/* --- The TCP doorbell (bell.c) --------------------------------------------- */

extern const struct shunt_bell_ops shim_bell_ops;
/* Our own state changed (shutdown): every thread of ours waiting on the
 * bell looks again (followers now, a leader in poll() within 100 ms; a
 * leader blocked in a read wakes through the kernel's SHUT_RD). */
void shim_bell_wake_all(struct tsock *t);
/* One doorbell down our stream unless our doorbells ended (PH_NOBELL),
 * with send flags beyond MSG_DONTWAIT | MSG_NOSIGNAL: what sys_send
 * returns, or 0 when they had. */
long shim_bell_send(struct tslot *s, int fd, int flags);
/* Our sends into the ring, doorbells, ring shutdowns and answers run
 * between these (back.c, "Answered for us"): enter is -EXDEV when the peer
 * answered for us (our sends are TCP's then: shim_back_answer_locked). */
int shim_tx_enter(struct tslot *s);
void shim_tx_exit(struct tslot *s);
void shim_bell_counted(struct tslot *s);
void shim_tx_urgent(struct tslot *s);
/* A read of the ring stops at the peer's urgent mark, as TCP's: how much
 * of len it may take (back.c). */
size_t shim_rx_to_mark(struct tslot *s, size_t len);
/* Our reads are at the peer's urgent mark in its ring: 1, 0, or -1 when it
 * sent no urgent data after its switch. */
int shim_rx_at_mark(struct tslot *s);
/* Our reads reached the peer's switch offset: the stream holds only
 * doorbells from here, and the ring is ours to read (io.c).  1 if so. */
int shim_ring_at_x(struct tsock *t);
/* A read's chance to switch our sends, once the peer attached (move.c). */
void shim_switch_tx_reader(struct tsock *t, int fd);
/* A byte that is no ring came: the connection is reset, the kernel's too. */
int shim_behind_back(struct tslot *s, int fd);
/* Our doorbells end: once this returns, none is on its way, and the
 * kernel's count of our stream is final as far as they go. */
void shim_bells_end(struct tslot *s);
static inline struct shunt_bell shim_bell(struct tsock *t, int fd)
{
	return (struct shunt_bell){ &shim_bell_ops, { fd, -1 }, t };
}

/* --- Data (io.c) ----------------------------------------------------------
 * Each returns what the libc call would, with errno set as it would. */

ssize_t shim_recv(struct tsock *t, int fd, void *buf, size_t len, int flags);
ssize_t shim_send(struct tsock *t, int fd, const void *buf, size_t len, int flags);
ssize_t shim_recvv(struct tsock *t, int fd, const struct iovec *iov, int n, int flags);
/* The kernel's read of a socket on TCP into iov returned n: what the
 * program gets of it. */
/* Around a read of the kernel's stream before the move: enter before the
 * system call (the reads in the kernel before this one); shim_recv_took
 * leaves once the read is counted. */
uint32_t shim_rx_enter(struct tsock *t, int flags);
/* The kernel's recvmsg between the two: a cancellation there leaves. */
ssize_t shim_krecvmsg(struct tsock *t, int fd, struct msghdr *m, int flags);
ssize_t shim_recv_took(struct tsock *t, int fd, const struct iovec *iov, int niov, ssize_t n,
		       int flags);
ssize_t shim_sendv(struct tsock *t, int fd, const struct iovec *iov, int n, int flags);
ssize_t shim_sendfile(struct tsock *t, int fd, int in_fd, off_t *off, size_t count);
ssize_t shim_splice_in(struct tsock *t, int fd, int pipe_in, size_t len, unsigned flags);
/* fd's status flags if it is open for writing, else -EBADF (or the
 * look's error). */
int shim_writable_flags(int fd);
ssize_t shim_splice_out(struct tsock *t, int fd, int pipe_out, size_t len, unsigned flags);
int shim_shutdown(struct tsock *t, int fd, int how);
int shim_fionread(struct tsock *t, int fd, int *out);
int shim_atmark(struct tsock *t, int fd, int *out);
/* A setsockopt or fcntl the program made: what it means for us. */
void shim_sockopt(struct tsock *t, int fd, int level, int opt, const void *val,
		  socklen_t len);
void shim_set_nonblock(struct tsock *t, int on);
/*
 * TCP_NODELAY and TCP_CORK.  Once our sends go to the ring, the TCP stream
 * carries only doorbells, which must leave at once: Nagle's algorithm would
 * hold one back until the previous one is acknowledged (40 ms with a
 * delayed ACK), a cork for 200 ms.  So the switch (move.c) calls
 * shim_nodelay_take(), which keeps the program's values of both in the
 * slot and sets the kernel's socket to TCP_NODELAY 1, TCP_CORK 0; from
 * then on the program's setsockopt and getsockopt of them (IPPROTO_TCP)
 * use the slot's values, as the kernel would, and the kernel's stay.
 * shim_nodelay_restore() puts the program's values back on the kernel's
 * socket and ends that, for a connection that goes back to TCP; it may be
 * called any number of times, and also when nothing was taken.
 * shim_tx_opts_restore() puts back TCP_NODELAY and TCP_CORK alone (and the
 * SO_LINGER of shim_linger_hold), once our sends left the ring for good.  Each takes the slot's opt_mu, which comes
 * after tx_mu when both are held.
 */
void shim_nodelay_take(struct tsock *t, int fd);
void shim_nodelay_restore(struct tsock *t, int fd);
void shim_tx_opts_restore(struct tsock *t, int fd);
/* The program's setsockopt and getsockopt of IPPROTO_TCP TCP_NODELAY or
 * TCP_CORK: what libc's would return, errno set as it would. */
int shim_nodelay_set(struct tsock *t, int fd, int opt, const void *val, socklen_t len);
int shim_nodelay_get(struct tsock *t, int fd, int opt, void *val, socklen_t *len);
/* setsockopt and getsockopt of SO_RCVLOWAT: on a moved connection the
 * ring's, and the kernel's 1 (io.c). */
/* A moved socket's recvmsg with TCP_INQ on: its TCP_CM_INQ into the
 * program's control buffer (ctl, clen), as the kernel's put_cmsg. */
void shim_inq_put(struct tsock *t, int fd, struct msghdr *m, void *ctl, size_t clen);
int shim_rcvlowat_set(struct tsock *t, int fd, const void *val, socklen_t len);
int shim_rcvlowat_get(struct tsock *t, int fd, void *val, socklen_t *len);
/* SO_LINGER {1, 0} on the kernel's socket while we resend the ring's
 * bytes a peer going back left unread (back.c), the program's value kept
 * for its calls and put back with shim_tx_opts_restore (io.c). */
void shim_linger_hold(struct tsock *t, int fd);
/* SO_LINGER l on the kernel's socket as the program's setsockopt left it:
 * the kernel keeps the time when lingering is turned off, so on first. */
void shim_linger_put(int fd, const struct linger *l);
int shim_linger_set(struct tsock *t, int fd, const void *val, socklen_t len);
int shim_linger_get(struct tsock *t, int fd, void *val, socklen_t *len);
/* getsockopt(TCP_INFO), getpeername() and getsockopt(SO_ERROR) as TCP's
 * would answer. */
int shim_tcp_info_get(struct tsock *t, int fd, void *val, socklen_t *len);
int shim_getpeername(struct tsock *t, int fd, struct sockaddr *addr, socklen_t *len);
int shim_error_get(struct tsock *t, int fd, void *val, socklen_t *len);
/* Readiness of a moved socket as poll bits, from its rings and, for a
 * direction still on the TCP stream, from the kernel: *kern is what the
 * kernel said of fd (revents), or -1 to ask it, and on return what it
 * said, asked or given.  A doorbell the kernel reported is drained; `arm`
 * as in end.h. */
int shim_readiness(struct tsock *t, int fd, int events, int arm, int *kern);
/* After our reads' TCP count (slot rx_tcp) grew: tell the peer (seg.h). */
void shim_rx_publish(struct tsock *t);
/* From now on to `where` (a mapped segment's sw[side].rx_tcp), before our
 * OPEN; _stop before that segment is unmapped. */
void shim_rx_publish_from(struct tsock *t, _Atomic uint64_t *where);
void shim_rx_publish_stop(struct tsock *t);
/* Both directions on the rings, nothing but doorbells left on the stream. */
int shim_settled(struct tsock *t);
/* Is the ring path ours in this process (a moved socket)? */
int shim_moved(struct tsock *t);
/* The last holder closes: the peer sees FIN or RST. */
void shim_close_end(struct tsock *t, int fd);
/* linger.c: keep fd's socket open while the kernel holds back bytes it
 * sent to TCP (a doorbell arriving after the close would reset them);
 * look at the lingering ones (each close); around fork. */
void shim_linger(int fd, uint8_t bell);
void shim_linger_tick(void);
int shim_linger_due(void); /* some are lingering: the next close looks */
void shim_linger_fork(int phase);

/* --- Waiting (poll.c, epoll.c) -------------------------------------------- */

int shim_poll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
	      const sigset_t *mask);
int shim_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
		const struct timespec *timeout, const sigset_t *mask);
/* An fd_set's bit, and clearing it, for any fd below select's nfds: a
 * program that raised RLIMIT_NOFILE passes sets larger than FD_SETSIZE,
 * as Linux allows (FD_ISSET stops there, or aborts when fortified). */
static inline int shim_fd_isset(const fd_set *s, int fd)
{
	const unsigned long *w = (const unsigned long *)(const void *)s;
	unsigned bits = 8 * sizeof(*w);

	return (w[(unsigned)fd / bits] >> ((unsigned)fd % bits)) & 1;
}

static inline void shim_fd_clr(fd_set *s, int fd)
{
	unsigned long *w = (unsigned long *)(void *)s;
	unsigned bits = 8 * sizeof(*w);

	w[(unsigned)fd / bits] &= ~(1UL << ((unsigned)fd % bits));
}
int shim_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int shim_epoll_wait(int epfd, struct epoll_event *ev, int max, int64_t timeout_ns,
		    const sigset_t *mask);
/* A tracked fd moved: its registrations in epoll sets become ours. */
void shim_epoll_moved(struct tsock *t);
/* ... and went back to TCP: the program's again. */
void shim_epoll_back(struct tsock *t);
/* ... and its socket connects anew (AF_UNSPEC): they name `to` now. */
void shim_epoll_renew(struct tsock *from, struct tsock *to);
/* The kernel's word that t's peer sent no FIN or reset, just now: the
 * next send need not look (io.c). */
void shim_peer_seen(struct tsock *t);
/* fd was closed: an epoll set of ours, or a tracked fd in sets. */
void shim_epoll_forget(int fd, struct tsock *t);
/* The secret in our epoll tags, made now if not yet (before a fork). */
void shim_epoll_secret(void);
/* Is t in an epoll set (its own registration or an entry of ours)? */
int shim_epoll_registered(struct tsock *t);
/* close_range: epoll sets in the range are gone. */
void shim_epoll_forget_range(unsigned first, unsigned last);
/* Is epfd an epoll set of ours (holding tracked sockets)?  Has it anything
 * for the program now (poll, or another set, waiting on it)? */
int shim_epoll_ours(int epfd);
int shim_epoll_ready(int epfd);

/* kick.c: a poll() or epoll_wait asleep on moved sockets also waits on an
 * eventfd (its thread's, or its set's) that it lists while it sleeps, with
 * the mask of the connections it waits on (shim_kick_bit of each, ~0 for
 * any); whoever takes doorbells of a connection kicks every listed one
 * whose mask has its bit (it may have taken theirs).  listen returns a
 * slot for unlisten (-1: not listed). */
int shim_kick_thread_fd(void);
int shim_kick_thread_fd_had(void); /* the thread's, if made: -1 if not */
/* io.c: would the kernel have restarted a blocking call that a handled
 * signal interrupted?  Yes when every handler has SA_RESTART. */
int shim_restarts(void);
int shim_handlers_restart(void); /* the same look, not a cancellation point */
void shim_kick_forked(void); /* in a forked child: eventfds of its own */
static inline uint64_t shim_kick_bit(const struct tslot *s)
{
	return 1ull << (shim_slot_index(s) & 63);
}
int shim_kick_listen(int fd, uint64_t mask);
void shim_kick_unlisten(int slot);
void shim_kick_reset(int fd);
void shim_kick_others(const struct tslot *s);

/* --- Processes (proc.c, scm.c) --------------------------------------------- */

#define SHIM_INHERIT_ENV "SHUNT_INHERIT"
/* Before exec (replaces 1: this process's image; 0: posix_spawn's child;
 * `img`: what shim_image_look said of the image): returns the environment
 * to pass (envp itself, or a copy with SHUNT_INHERIT, freed by
 * shim_exec_done). */
char **shim_exec_prepare(char *const envp[], int img, int replaces);
/* What the image at dir/path (execveat's flags) is to us: IMG_SECURE, the
 * kernel runs it with other credentials than ours (set-user-ID,
 * set-group-ID, file capabilities; also when unknown); IMG_STATIC, no
 * dynamic loader runs it, to load us (IMG_FOREIGN: one of the other ELF
 * class does, which cannot); IMG_SELF, our own executable.
 * _search: found as execvp finds it. */
#define IMG_SECURE 1
#define IMG_STATIC 2
#define IMG_SELF 4
#define IMG_FOREIGN 8 /* with IMG_STATIC: a loader of the other ELF class runs it */
int shim_image_look(int dir, const char *path, int at_flags);
int shim_image_look_search(const char *file);
/* At start-up: which file is ours, to know it in an image's LD_PRELOAD. */
void shim_proc_init(void);
void shim_exec_done(char **env, char *const envp[]);
/* At start-up: adopt what a parent image left in SHUNT_INHERIT. */
void shim_inherit(void);
/* posix_spawn: the sockets its child inherits (file actions too) go back
 * to TCP first if they moved, and are held by the child after. */
void shim_spawn_prepare(const posix_spawn_file_actions_t *fa);
/* The file actions that hand the arena to the child (proc.c): mine, or
 * fa when it does not go; shim_spawn_actions_done(mine) after the spawn
 * when it returned mine. */
const posix_spawn_file_actions_t *shim_spawn_actions(const posix_spawn_file_actions_t *fa,
						     char **env, char *const envp[],
						     posix_spawn_file_actions_t *mine);
void shim_spawn_actions_done(posix_spawn_file_actions_t *mine);
void shim_spawn_done(const posix_spawn_file_actions_t *fa, int child);
/* A child we cannot name (popen's) holds what survives exec: it stays on
 * TCP for good. */
void shim_spawn_lost(void);
void shim_fork_stranger(int newpid);
/* unshare(CLONE_NEWPID) or setns(): our children's pid namespace may
 * have changed (proc.c looks again at the next fork). */
void shim_kids_ns_changed(void);
void shim_fork_prepare(void);
void shim_fork_parent(void);
void shim_fork_child(void);
/* Our fork() and daemon() wrappers: around the real call, so that the
 * parent's side ends knowing the child's pid (-1: the fork failed, 0: we
 * are the child). */
void shim_fork_wrap(void);
void shim_fork_unwrap(int pid);
/* posix_spawn: around the real call (child: its pid, or -1). */
void shim_spawn_begin(void);
void shim_spawn_end(int child);
/* _Fork, clone: a child made without the atfork handlers holds every
 * socket of ours. */
void shim_spawned(int child);
/* sendmsg with SCM_RIGHTS: tracked sockets leave for another process. */
/* fd goes where the library cannot follow it (another process by
 * SCM_RIGHTS, a child in another pid namespace): it stays on TCP for good
 * (a meeting in progress cannot commit), back there first if it moved. */
void shim_export(int fd, const char *where);
/* Ancillary data on a moved TCP send: 0 TCP ignores it, 1 TCP acts on
 * it, or the -errno TCP refuses it with (scm.c). */
int shim_tcp_cmsg(struct tsock *t, int fd, const struct msghdr *m);
int shim_scm_out(const struct msghdr *m);
/* recvmsg brought fds: track the TCP sockets among them. */
void shim_scm_in(int via, struct msghdr *m);
/* Does process pid hold the socket with inode ino?  1, 0, or -1 when we
 * cannot tell. */
int shim_proc_holds(int pid, uint64_t ino);

/* Set while a read that has bytes already waits for more (MSG_WAITALL):
 * a signal ends that wait whatever SA_RESTART says, as TCP's read then
 * returns what it has (bell.c, lead). */
extern _Thread_local int shim_wait_eintr;

/* --- Errors -------------------------------------------------------------- */

/* Set errno from a negative errno and return -1. */
static inline long shim_err(long rc)
{
	if (rc >= 0)
		return rc;
	errno = (int)-rc;
	return -1;
}

/*
 * A buffer in the first page, NULL above all, which no process maps: the
 * kernel answers EFAULT for it, where our copies to and from a ring would
 * fault and kill the program (send(fd, NULL, 5, 0)).  Other bad pointers
 * are past what a load can check: docs/design.md, Limits.
 */
static inline int shim_bad_ptr(const void *p)
{
	return (uintptr_t)p < 4096;
}

/* A pointer to a slot's end and a bell for this call. */
#define END(t) (&(t)->slot->end)

#endif /* SHUNT_SHIM_H */
