/*
 * fdtab.c - which fds are tracked TCP sockets: a table indexed by fd.
 *
 * Every wrapped call looks its fd up, so the lookup is one load and no
 * lock: the table is made of chunks allocated on first use and never
 * freed, each entry an atomic pointer.  A tracked socket is reference
 * counted: each fd that names it holds one reference (dup adds one), and a
 * call in progress holds one, so that a close in another thread cannot
 * free it under us.  Tracked sockets are never given back to malloc, only
 * reused for other tracked sockets, so a lookup that races with a close
 * increments a count that is still a count (and then sees the entry gone).
 *
 * Beside each pointer, a byte says what kind of socket the fd is, learnt
 * when the program made it: connect() and accept() then know a TCP socket
 * without asking the kernel.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/single_threaded.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

#define CHUNK_BITS 12
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS 256 /* fds below 2^20, the usual hard limit */

/* An fd's entry and its kind side by side, in groups of 64 fds: a
 * fork-per-connection server and each child it forks write both for the
 * connection's fd (its close), and on two pages, the entries' and the
 * kinds' 32 KiB further, that was a copy-on-write fault more on each side
 * (bench/forkfaults.c). */
#define GROUP 64
struct group {
	_Atomic(struct tsock *) t[GROUP];
	_Atomic uint8_t kind[GROUP];
};

struct chunk {
	struct group g[CHUNK / GROUP];
};

static _Atomic(struct chunk *) chunks[NCHUNKS];

/* One past the highest fd ever given a tracked socket: a walk of the
 * table (each forked child makes one) stops there, not at the 4096th
 * entry of a chunk.  Raised before the entry is stored. */
static _Atomic int fd_top;

static void raise_top(int fd)
{
	int top = atomic_load_explicit(&fd_top, memory_order_relaxed);

	while (top <= fd && !atomic_compare_exchange_weak(&fd_top, &top, fd + 1))
		;
}

SHUNT_FORK_TEXT static struct chunk *chunk_of(int fd, int create)
{
	if (fd < 0 || fd >= CHUNK * NCHUNKS)
		return NULL;
	struct chunk *c = atomic_load_explicit(&chunks[fd >> CHUNK_BITS], memory_order_acquire);
	if (!c && create) {
		struct chunk *fresh = calloc(1, sizeof(*fresh));
		if (!fresh)
			return NULL;
		if (atomic_compare_exchange_strong(&chunks[fd >> CHUNK_BITS], &c, fresh))
			c = fresh;
		else
			free(fresh); /* another thread won; c is its chunk */
	}
	return c;
}

/*
 * The first fds' group and the first tracked sockets live in the page of
 * the state a fork writes (SHUNT_FORK_HOT), which both sides of every fork
 * write anyway.  A fork-per-connection server's connection is a low fd and
 * its record the one the last connection freed: each child's close and
 * holding, and the parent's close and end of the fork, wrote the group's
 * heap page and the record's, a copy-on-write fault each on each side
 * (bench/forkfaults.c: 4 a connection).  Chunk 0's own first group is
 * never used.
 */
#define HOT_SOCKS 4
static struct {
	struct group g0;
	struct tsock t[HOT_SOCKS];
} hot SHUNT_FORK_HOT;
static int hot_used SHUNT_FORK_HOT; /* records of hot.t handed out (under pool_mu) */

SHUNT_FORK_TEXT static struct group *group_of(int fd, int create)
{
	if ((unsigned)fd < GROUP)
		return &hot.g0;
	struct chunk *c = chunk_of(fd, create);

	return c ? &c->g[(fd & (CHUNK - 1)) / GROUP] : NULL;
}

SHUNT_FORK_TEXT static _Atomic(struct tsock *) *entry(int fd, int create)
{
	struct group *g = group_of(fd, create);

	return g ? &g->t[fd % GROUP] : NULL;
}

SHUNT_FORK_TEXT void shim_set_kind(int fd, enum fd_kind k)
{
	struct group *g = group_of(fd, k != FD_UNKNOWN);

	if (g)
		atomic_store_explicit(&g->kind[fd % GROUP], (uint8_t)k, memory_order_relaxed);
}

SHUNT_FORK_TEXT enum fd_kind shim_kind(int fd)
{
	struct group *g = group_of(fd, 0);

	return g ? (enum fd_kind)atomic_load_explicit(&g->kind[fd % GROUP], memory_order_relaxed)
		 : FD_UNKNOWN;
}

int shim_is_tcp(int fd)
{
	enum fd_kind k = shim_kind(fd);

	if (k == FD_UNKNOWN) {
		k = shim_kern_is_tcp(fd) ? FD_TCP : FD_OTHER;
		shim_set_kind(fd, k);
	}
	return k == FD_TCP || k == FD_LISTEN;
}

/* --- The pool of tracked sockets ------------------------------------------ */

static pthread_mutex_t pool_mu SHUNT_FORK_HOT = PTHREAD_MUTEX_INITIALIZER;
static struct tsock *pool SHUNT_FORK_HOT; /* free ones, linked through `meet` */

static struct tsock *tsock_alloc(void)
{
	pthread_mutex_lock(&pool_mu);
	struct tsock *t = pool, *fresh = NULL;
	if (t)
		pool = (struct tsock *)t->meet;
	else if (hot_used < HOT_SOCKS)
		t = fresh = &hot.t[hot_used++];
	pthread_mutex_unlock(&pool_mu);
	if (!t && !(t = fresh = calloc(1, sizeof(*t))))
		return NULL;
	if (fresh)
		pthread_mutex_init(&t->mu, NULL);
	/* Ours alone until install() publishes it (a release): no fences. */
	const memory_order R = memory_order_relaxed;

	atomic_store_explicit(&t->reg_lock, 0, R);
	t->nplain = 0;
	t->meet = NULL;
	t->mapped = 0;
	atomic_store_explicit(&t->rx_pub, NULL, R);
	atomic_store_explicit(&t->publishing, 0, R);
	atomic_store_explicit(&t->kreads, 0, R);
	atomic_store_explicit(&t->no_turns, 0, R);
	atomic_store_explicit(&t->starting, 0, R);
	atomic_store_explicit(&t->splicing, 0, R);
	t->unhold = 0;
	t->kept = 0;
	atomic_store_explicit(&t->nregs, 0, R);
	atomic_store_explicit(&t->io_gen, 0, R);
	atomic_store_explicit(&t->nfds, 0, R);
	atomic_store_explicit(&t->peer_vouched, 0, R);
	atomic_store_explicit(&t->after_move, 0, R); /* a pooled one's count was its last socket's */
	atomic_store_explicit(&t->judged, 0, R);
	atomic_store_explicit(&t->met_at, 0, R);
	atomic_store_explicit(&t->refs, 1, memory_order_release);
	return t;
}

static void end_kept(struct tsock *t);

/* errno kept: a wrapper's last reference may go after its call's result
 * (shim_release), and errno is a call into libc, so only here. */
SHUNT_FORK_TEXT static void tsock_free(struct tsock *t)
{
	int err = errno;

	if (__atomic_load_n(&t->kept, __ATOMIC_ACQUIRE) > 0)
		end_kept(t);
	if (t->mapped) {
		/* Our mapping only: the slot is shared with the family, whose
		 * other processes may map the segment still. */
		sys_munmap(END(t)->seg.base, END(t)->seg.map_len);
		shim_segment_mapped(-1);
	}
	if (t->unhold)
		shim_slot_unhold(t->slot, t->gen);
	t->slot = NULL;
	pthread_mutex_lock(&pool_mu);
	t->meet = (struct tmeet *)pool;
	pool = t;
	pthread_mutex_unlock(&pool_mu);
	errno = err;
}

/* --- References ---------------------------------------------------------- */

_Atomic int shim_hands_off;

SHUNT_FORK_TEXT int shim_has(int fd)
{
	if (__builtin_expect(atomic_load_explicit(&shim_hands_off, memory_order_relaxed), 0))
		return 0;
	_Atomic(struct tsock *) *p = entry(fd, 0);

	return p && atomic_load_explicit(p, memory_order_relaxed) != NULL;
}

/* One more reference, unless the count already fell to zero (freed). */
SHUNT_FORK_TEXT static int ref(struct tsock *t)
{
	int r = atomic_load_explicit(&t->refs, memory_order_relaxed);

	while (r > 0)
		if (atomic_compare_exchange_weak_explicit(&t->refs, &r, r + 1,
							  memory_order_acquire,
							  memory_order_relaxed))
			return 1;
	return 0;
}

SHUNT_FORK_TEXT struct tsock *shim_get(int fd)
{
	if (__builtin_expect(atomic_load_explicit(&shim_hands_off, memory_order_relaxed), 0))
		return NULL; /* sandboxed: every call is the program's alone */
	_Atomic(struct tsock *) *p = entry(fd, 0);

	if (!p)
		return NULL;
	for (;;) {
		struct tsock *t = atomic_load_explicit(p, memory_order_acquire);
		if (!t)
			return NULL;
		if (ref(t)) {
			if (atomic_load_explicit(p, memory_order_acquire) == t)
				return t;
			shim_put(t); /* closed and maybe reused meanwhile */
		}
	}
}

void shim_ref(struct tsock *t)
{
	atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

SHUNT_FORK_TEXT void shim_put(struct tsock *t)
{
	if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
		tsock_free(t);
}

/*
 * The references this thread's wrapped calls hold while they run, a stack
 * (calls nest in signal handlers).  A thread cancelled in a blocking call
 * (a read asleep in the kernel or in ppoll, a send, recvmsg) never came
 * back to its shim_put: the socket's record (256 bytes), its slot and its
 * mapped segment stayed for good (ASan, a helper's reproducer, 12-07).
 * Its end puts them.  A list and not a cleanup handler per call: that is
 * a setjmp on every call of the fast path.  Deeper than CALLS_MAX (nested
 * handlers) a call is not listed, and leaks as before if cancelled.
 *
 * A call the thread jumped out of (siglongjmp from a handler that
 * interrupted it: a read timed out by alarm()) never came back either, and
 * one asleep on the ring held the direction's lock (shim_call_locks): the
 * thread's next blocking read of that socket waited for good, and the
 * close kept the socket for that call, so the peer never saw the end
 * (t_shim_close jump_out_of_call).  Each entry keeps its frame's address:
 * a new call whose frame is not below it, on the same stack, is not
 * nested inside it (a handler's frames lie below the call it interrupted,
 * past the kernel's signal frame, a kilobyte or more), so that call is
 * gone: its lock is let go and its reference put.  Not on a handler's own
 * stack (sigaltstack), where the frames compare with nothing.
 */
#define CALLS_MAX 8
#define JUMP_SLACK 256        /* frames of two wrappers at one depth differ by less */
#define JUMP_SPAN (16u << 20) /* farther than a thread's stack: another stack */
struct calls {
	struct tsock *t[CALLS_MAX];
	uintptr_t sp[CALLS_MAX];        /* the call's frame */
	pthread_mutex_t *mu[CALLS_MAX]; /* the direction's lock it holds over a wait */
	unsigned n;
	int watched;
	unsigned cp; /* the innermost call is a cancellation point (shim_hold_cp) */
};
#define MARK_CP (1u << 31) /* a mark keeps the caller's cp */
/* initial-exec: a register's offset, where the default model called
 * __tls_get_addr three times a call (the library is preloaded, so in the
 * static TLS block; a dlopen takes its 212 bytes from glibc's surplus). */
static _Thread_local struct calls calls __attribute__((tls_model("initial-exec")));

/* Is the entry i of a call this thread left (its frame not below sp)? */
static int jumped_out(const struct calls *c, unsigned i, uintptr_t sp)
{
	return c->sp[i] <= sp + JUMP_SLACK && c->sp[i] + JUMP_SPAN >= sp;
}

/* The lock mu of t's slot, held by this thread (the futex word of a
 * robust mutex names its owner), let go; a send's busy word (io.c,
 * ring_open_locked) with tx_mu. */
static void unlock_own(struct tsock *t, pthread_mutex_t *mu)
{
	if ((unsigned)(mu->__data.__lock & FUTEX_TID_MASK) != (unsigned)gettid())
		return;
	if (mu == &t->slot->tx_mu)
		shim_tx_exit(t->slot);
	pthread_mutex_unlock(mu);
}

/* Let go of the calls this thread jumped out of, newest first. */
static void reap_jumped(struct calls *c, uintptr_t sp)
{
	stack_t ss;

	if (c->n > CALLS_MAX || !jumped_out(c, c->n - 1, sp) || sigaltstack(NULL, &ss) < 0 ||
	    (ss.ss_flags & SS_ONSTACK))
		return;
	while (c->n && jumped_out(c, c->n - 1, sp)) {
		unsigned i = --c->n;
		log_debug("a call on this thread ended by a jump: its hold let go");
		if (c->mu[i])
			unlock_own(c->t[i], c->mu[i]);
		c->mu[i] = NULL;
		shim_put(c->t[i]);
	}
	c->cp = 0;
	shim_wait_eintr = 0;
}

SHUNT_FORK_TEXT void shim_calls_reap(void)
{
	struct calls *c = &calls;

	if (__builtin_expect(c->n != 0, 0))
		reap_jumped(c, (uintptr_t)__builtin_frame_address(0));
}

SHUNT_FORK_TEXT struct tsock *shim_hold(int fd, unsigned *mark)
{
	struct tsock *t = shim_get(fd);

	if (!t)
		return NULL;
	struct calls *c = &calls;
	uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
	if (__builtin_expect(c->n != 0, 0))
		reap_jumped(c, sp);
	/* Only another thread cancels: one alone skips the key (a forked
	 * child's first call made it, a page of glibc's copied). */
	if (__builtin_expect(!c->watched, 0) && !__libc_single_threaded) {
		shim_thread_watch();
		c->watched = 1;
	}
	*mark = c->n | (c->cp ? MARK_CP : 0);
	if (c->n < CALLS_MAX) {
		c->t[c->n] = t;
		c->sp[c->n] = sp;
		c->mu[c->n] = NULL;
	}
	c->n++;
	c->cp = 0;
	return t;
}

/* The innermost call, on t, now holds mu across its wait (NULL: no more). */
void shim_call_locks(struct tsock *t, pthread_mutex_t *mu)
{
	struct calls *c = &calls;

	if (c->n && c->n <= CALLS_MAX && c->t[c->n - 1] == t)
		c->mu[c->n - 1] = mu;
}

SHUNT_FORK_TEXT struct tsock *shim_hold_cp(int fd, unsigned *mark)
{
	struct tsock *t = shim_hold(fd, mark);

	if (t)
		calls.cp = 1;
	return t;
}

int shim_in_cancel_point(void)
{
	return calls.cp != 0;
}

SHUNT_FORK_TEXT void shim_release(struct tsock *t, unsigned mark)
{
	if (!t)
		return;
	calls.n = mark & ~MARK_CP;
	calls.cp = !!(mark & MARK_CP);
	shim_put(t); /* errno kept (tsock_free) */
}

void shim_calls_ended(void)
{
	struct calls *c = &calls;
	unsigned n = c->n < CALLS_MAX ? c->n : CALLS_MAX;

	c->n = 0;
	for (unsigned i = 0; i < n; i++)
		shim_put(c->t[i]);
}

/* --- fds ------------------------------------------------------------------ */

/* A connection that ends before it moved, by the close of its last
 * holder (a parent that handed it to a child does not end it), or by the
 * exit of the process, stayed on TCP: because it was short, or, if it had
 * carried enough to start meeting its peer, because the peer did not
 * answer in its time (it does not run shunt, or did not come by).
 * `shared`: the caller's look (each is a kill() per other holder: a
 * fork-per-connection server's close of its copy made three). */
SHUNT_FORK_TEXT static void note_short(struct tslot *s, int fd, int shared)
{
	uint32_t st = atomic_load(&s->state);

	if ((st != SLOT_PLAIN && st != SLOT_MEET) || atomic_load(&s->why) != 0 || shared)
		return;
	uint32_t held = atomic_load(&s->held_why);
	enum shim_why why = held    ? (enum shim_why)(held - 1)
			    : st == SLOT_PLAIN ? WHY_SHORT
					       : WHY_NOPEER;
	shim_count_why(s, why);
	log_info("fd %d stays on TCP: %s (closed after %llu calls, %llu bytes)", fd,
		 shim_why_names[why], (unsigned long long)atomic_load(&s->calls),
		 (unsigned long long)(atomic_load(&s->bytes_in) + atomic_load(&s->bytes_out)));
}

/* Held by a thread now (a call under way on the socket). */
static int held_now(pthread_mutex_t *mu)
{
	int rc = pthread_mutex_trylock(mu);

	if (rc == EOWNERDEAD)
		pthread_mutex_consistent(mu);
	if (rc == 0 || rc == EOWNERDEAD)
		pthread_mutex_unlock(mu);
	return rc == EBUSY;
}

static void exit_one(int fd, struct tsock *t, void *arg)
{
	(void)arg;
	if (!t->slot)
		return;
	int last = !shim_slot_shared(t->slot); /* its last close (a server's child that exits) */
	if (last)
		shim_move_outcome(t);
	note_short(t->slot, fd, !last);
	if (atomic_load(&t->slot->state) != SLOT_MOVED || !t->mapped || !last)
		return;
	/* Going back (the peer asked, or answered for us): what it left
	 * unread in our ring is ours to send, and what we left unread in its
	 * ring resets, as at a close.  A thread of ours inside a send may
	 * hold the send lock for as long as the new holder does not read:
	 * shim_back_tx_last waits for it a while, then resets.  Skipped, the
	 * FIN ended the stream short of bytes sends had said were sent (a
	 * helper's review, t_shim_flags exit_held_flush). */
	if ((atomic_load(&t->slot->phase) & PH_TX_BACK) || shim_peer_asks(t)) {
		shim_back_tx_last(t, fd);
		if (shim_back_rx_last(t, fd) >= 0)
			return;
	}
	shim_back_exit_bells(t, fd);
}

/* exit() with sockets open (a client that never closes): the kernel
 * closes them after us. */
SHUNT_FORK_TEXT __attribute__((destructor)) static void shim_exit(void)
{
	if (!atomic_load(&shim_hands_off) && !shim_in_vfork_child())
		shim_each_held(exit_one, NULL);
}

/*
 * Closed under a call.  Linux's close() of an fd another thread is blocked
 * on (a recv with nothing to read, a send into a full buffer) does not end
 * the call: it holds the file, so the connection lives on, takes what the
 * peer sends, and ends (the FIN) only when the call returns.  A moved
 * connection's reader or writer waits on the ring under rx_mu or tx_mu:
 * when one of them is held here, the close keeps a dup of the socket (an
 * fd of the library's) for the calls' doorbells, and the end waits for the
 * last reference, which such a call holds (tsock_free).  A call that has
 * not yet taken its lock when the close comes finds the connection ended,
 * as it would have had it come a moment later.
 */
#define KEPT_MAX 64
static pthread_mutex_t kept_mu SHUNT_FORK_HOT = PTHREAD_MUTEX_INITIALIZER;
static struct tsock *kept_list[KEPT_MAX] SHUNT_FORK_HOT; /* for a fork child to let go of */

static int kept_enlist(struct tsock *t, struct tsock *was)
{
	int done = 0;

	pthread_mutex_lock(&kept_mu);
	for (int i = 0; !done && i < KEPT_MAX; i++)
		if (kept_list[i] == was) {
			kept_list[i] = t;
			done = 1;
		}
	pthread_mutex_unlock(&kept_mu);
	return done;
}

static int keep_for_calls(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	if (!held_now(&s->rx_mu) && !held_now(&s->tx_mu))
		return 0;
	int k = shunt__hide_fd(sys_fcntl(fd, F_DUPFD_CLOEXEC, 3));
	if (k < 0)
		return 0;
	if (!kept_enlist(t, NULL)) {
		sys_close(k);
		return 0;
	}
	__atomic_store_n(&t->kept, k, __ATOMIC_RELEASE);
	shunt__own_add(&t->kept);
	return 1;
}

static void let_go_kept(struct tsock *t)
{
	int k = __atomic_load_n(&t->kept, __ATOMIC_ACQUIRE);

	shunt__own_del(&t->kept);
	sys_close(k);
	__atomic_store_n(&t->kept, 0, __ATOMIC_RELAXED);
}

/* The last call is done: the end the close put off, if the connection is
 * still in shared memory (the call may have taken it back to TCP, where
 * the kernel's close says it all). */
static void end_kept(struct tsock *t)
{
	if (atomic_load(&t->slot->state) == SLOT_MOVED && t->mapped)
		shim_close_end(t, __atomic_load_n(&t->kept, __ATOMIC_ACQUIRE));
	let_go_kept(t);
	kept_enlist(NULL, t);
}

/* Around fork (-1: before, 1: in the parent, 0: in the child).  A child's
 * copy of a kept socket would hold the connection open after the parent's
 * call ended it: the child, which has no such call, lets go of them. */
SHUNT_FORK_TEXT void shim_kept_fork(int phase)
{
	if (phase < 0) {
		pthread_mutex_lock(&kept_mu);
		return;
	}
	for (int i = 0; phase == 0 && i < KEPT_MAX; i++)
		if (kept_list[i]) {
			let_go_kept(kept_list[i]);
			kept_list[i] = NULL;
		}
	pthread_mutex_unlock(&kept_mu);
}

/* The last fd of this process that named t is gone.  fd is that number if
 * it is still open (the close is about to happen), else -1. */
SHUNT_FORK_TEXT static void last_fd(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	shim_meet_drop(t);
	if (!s)
		return;
	int last = !shim_slot_shared(s); /* the connection's last close */
	if (last)
		shim_move_outcome(t);
	if (atomic_load(&s->state) == SLOT_MOVED && t->mapped && fd >= 0 && last) {
		if (!keep_for_calls(t, fd))
			shim_close_end(t, fd);
	} else {
		note_short(s, fd, !last);
		if (fd >= 0)
			shim_back_close(t, fd);
	}
	if (s->vm.on) { /* the region's offer and slot (meet_vm.c) */
		shim_vm_drop(t);
		shim_vm_let_go(t);
	}
	/* Our hold goes with the last reference, not now: a call still in
	 * progress in another thread reads the slot (and the segment mapped
	 * from it), and a slot let go is the next socket's once a search
	 * comes by. */
	t->unhold = 1;
}

SHUNT_FORK_TEXT static void drop_fd(struct tsock *t, int fd)
{
	if (atomic_fetch_sub(&t->nfds, 1) == 1)
		last_fd(t, fd);
	shim_put(t);
}

/* Put t at fd, taking over the caller's reference. */
static void install(int fd, struct tsock *t)
{
	_Atomic(struct tsock *) *p = entry(fd, 1);

	if (!p) { /* no memory for the table: the fd stays plain */
		shim_put(t);
		return;
	}
	atomic_fetch_add(&t->nfds, 1);
	raise_top(fd);
	struct tsock *old = atomic_exchange_explicit(p, t, memory_order_acq_rel);
	if (old)
		drop_fd(old, -1); /* closed where we could not see */
}

struct tsock *shim_track(int fd, uint32_t flags)
{
	struct tsock *t = tsock_alloc();

	if (!t)
		return NULL;
	t->slot = shim_slot_new(0, &t->gen);
	if (!t->slot) { /* the arena is full or failed: the fd stays plain */
		shim_put(t);
		return NULL;
	}
	atomic_fetch_or(&t->slot->flags, flags);
	shim_set_kind(fd, FD_TCP);
	install(fd, t);
	return t;
}

struct tsock *shim_track_slot(int fd, struct tslot *s, uint32_t gen)
{
	struct tsock *t = tsock_alloc();

	if (!t)
		return NULL;
	t->slot = s;
	t->gen = gen;
	shim_slot_hold(s, shim_pid());
	shim_set_kind(fd, FD_TCP);
	install(fd, t);
	return t;
}

SHUNT_FORK_TEXT void shim_forget(int fd, int open)
{
	_Atomic(struct tsock *) *p = entry(fd, 0);
	struct tsock *t = p ? atomic_exchange_explicit(p, NULL, memory_order_acq_rel) : NULL;

	shim_set_kind(fd, FD_UNKNOWN);
	if (t)
		drop_fd(t, open ? fd : -1);
}

/*
 * A TCP socket added to an epoll set, or dup'd, before its connect(): tracked
 * then, as connect() would, so that the registration is ours from the
 * start and both numbers name one tracked socket.  Left alone, the set's
 * entry was the kernel's (nginx adds every upstream so, edge-triggered:
 * DEL and MOD failed with ENOENT, and once it moved no wait saw its
 * rings), and a number dup'd before the connect read the raw stream.  Not
 * a listener, nor a socket connected before we knew it (those stay the
 * program's).
 */
static int still_listening(int fd)
{
	int listening = 0;
	unsigned ll = sizeof(listening);

	return shim_kind(fd) == FD_LISTEN &&
	       sys_getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 && listening;
}

struct tsock *shim_track_unconnected(int fd)
{
	struct sockaddr_storage ss;
	unsigned len = sizeof(ss);
	int listening = 0;
	unsigned ll = sizeof(listening);

	/* Cheapest first: the kind is cached, the vfork check a getpid().  A
	 * listener found once is looked at once after, as its number may
	 * have gone to a socket made where no wrapper saw it: nginx's workers
	 * add theirs to their sets and take it out again as they take turns
	 * to accept, a getpid(), a getpeername() and a getsockopt() each
	 * time before. */
	if (!shim_enabled() || !shim_is_tcp(fd) || still_listening(fd) ||
	    shim_in_vfork_child() ||
	    sys_getpeername(fd, (struct sockaddr *)&ss, &len) != -ENOTCONN ||
	    sys_getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0)
		return NULL;
	if (listening) {
		shim_set_kind(fd, FD_LISTEN);
		return NULL;
	}
	shim_track(fd, 0);
	return shim_get(fd);
}

void shim_dup(int oldfd, int newfd)
{
	struct tsock *t = shim_get(oldfd);

	if (!t)
		t = shim_track_unconnected(oldfd);

	shim_forget(newfd, 0); /* the kernel already replaced it */
	if (t) {
		shim_set_kind(newfd, FD_TCP);
		install(newfd, t);
	} else {
		shim_set_kind(newfd, shim_kind(oldfd));
	}
}

SHUNT_FORK_TEXT static void each(void (*fn)(int fd, struct tsock *t, void *arg), void *arg, int held)
{
	int top = atomic_load(&fd_top);

	for (int fd = 0; fd < top; fd++) {
		_Atomic(struct tsock *) *at = entry(fd, 0);
		if (!at) {
			fd |= CHUNK - 1; /* a chunk never made: on to the next */
			continue;
		}
		struct tsock *t = atomic_load(at);
		if (!t)
			continue;
		if (!held) {
			fn(fd, t, arg);
			continue;
		}
		if (!ref(t))
			continue;
		if (atomic_load(at) == t)
			fn(fd, t, arg);
		shim_put(t);
	}
}

SHUNT_FORK_TEXT void shim_each(void (*fn)(int fd, struct tsock *t, void *arg), void *arg)
{
	each(fn, arg, 0);
}

/* Each with a reference for the call, for one that takes long (a way
 * back) while other threads may close: a thread's unshare() let go while
 * others closed, and a helper's review saw the socket freed under its
 * way back (SIGSEGV, 1 run in 3).  Not from a signal handler: the last
 * reference frees, which takes a lock. */
void shim_each_held(void (*fn)(int fd, struct tsock *t, void *arg), void *arg)
{
	each(fn, arg, 1);
}

/* fd's connection moved, each of these phases is reached, and (if
 * asked) this process maps its segment. */
static int moved_with(int fd, uint32_t phases, int mapped)
{
	struct tsock *t = shim_get(fd);
	int on = t && atomic_load(&t->slot->state) == SLOT_MOVED && (!mapped || t->mapped) &&
		 (atomic_load(&t->slot->phase) & phases) == phases;

	shim_put(t);
	return on;
}

int shunt__shim_is_moved(int fd)
{
	return moved_with(fd, 0, 1);
}

int shunt__shim_is_accelerated(int fd)
{
	return moved_with(fd, PH_TX_RING | PH_RX_RING, 0);
}
