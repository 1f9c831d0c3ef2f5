/*
 * kick.c - waking the program's other waits when a doorbell was taken.
 *
 * Both directions' doorbells of a moved connection arrive on its one TCP
 * socket, and a byte one wait takes is gone for the others.  The blocking
 * calls share it through a leader (bell.c), but a poll() or an epoll_wait
 * sleeps in the kernel on its own: when one of them takes a doorbell that
 * was another's (a thread polling for writing takes the ring meant for a
 * thread polling for reading), the other would sleep on with data waiting.
 * So every poll() and epoll_wait of ours that sleeps on moved sockets
 * waits on an eventfd of its own too (a thread's, or its epoll set's), and
 * lists it here while it sleeps; whoever takes doorbells kicks every
 * listed one that may wait on that connection, and each kicked wait looks
 * at its rings again.  Which ones: each lists a mask of 64 bits, one per
 * connection it waits on (the slot's index modulo 64; an epoll set's
 * gathers those of the tracked sockets added to it, and all for a set
 * within it).  Every sleeper kicked by every doorbell, threads that each polled
 * their own connection woke each other at each message: 4 threads' round
 * trips ran at 0.6x TCP's, mariadb's sysbench point selects at 0.5x (a
 * helper's finding).  The list is lock-free: a kick may come from inside
 * an epoll scan that holds its set.
 * A process's waits only: another process of the family polling the same
 * socket is not kicked (docs/design.md, Limits).
 */
#include <pthread.h>
#include <sys/eventfd.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

#define SLEEPERS 256

static _Atomic int sleepers[SLEEPERS] SHUNT_FORK_HOT; /* eventfds of waits asleep; 0: free */
static _Atomic uint64_t masks[SLEEPERS]; /* the connections each waits on */
static _Atomic int nsleepers SHUNT_FORK_HOT;

static pthread_key_t key;
static _Thread_local int thread_fd = -1;

/* The slots this thread listed and has not unlisted yet (index + 1; 0:
 * none): a wait cancelled inside its kernel call (ppoll is a cancellation
 * point) never unlists, and its listing stayed for good, with the number
 * of an eventfd closed since: kicks wrote 8 bytes into whatever took that
 * number, a file of the program's or another connection's stream (a
 * helper's reproducers, 12-07).  The thread's end unlists them. */
#define MINE_MAX 4
static _Thread_local int mine[MINE_MAX];
static _Thread_local int key_set;

static void unlisten_mine(void)
{
	for (int i = 0; i < MINE_MAX; i++)
		if (mine[i])
			shim_kick_unlisten(mine[i] - 1);
}

static void thread_gone(void *arg)
{
	(void)arg;
	unlisten_mine();
	if (thread_fd >= 0) {
		shunt__own_del(&thread_fd);
		sys_close(thread_fd);
		thread_fd = -1;
	}
}

/* The thread's end (a cancellation, pthread_exit): what its calls in
 * progress held goes too (fdtab.c, shim_calls_ended). */
static void thread_end(void *arg)
{
	shim_calls_ended();
	thread_gone(arg);
}

/*
 * Made when the library loads, not at a thread's first call: that call may
 * run in a signal handler (a read or a poll), where a pthread_once that the
 * handler interrupted in the same thread waits for itself for good.  A key
 * among glibc's first 32 has its value kept in the thread itself, so that
 * pthread_setspecific takes no lock and allocates nothing; past them (a
 * program that made that many before us) threads are not watched: a
 * cancelled one leaks as it did before.
 */
#define KEYS_IN_THREAD 32
static int key_ok;

void shim_thread_key_init(void)
{
	key_ok = pthread_key_create(&key, thread_end) == 0 && key < KEYS_IN_THREAD;
}

/* The thread's end runs thread_end (a non-NULL value). */
void shim_thread_watch(void)
{
	if (key_set || !key_ok)
		return;
	pthread_setspecific(key, &thread_fd);
	key_set = 1;
}

int shim_kick_thread_fd_had(void)
{
	return thread_fd;
}

int shim_kick_thread_fd(void)
{
	if (thread_fd >= 0)
		return thread_fd;
	int fd = shunt__hide_fd((int)SYS_(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK, 0, 0, 0, 0));
	if (fd < 0)
		return -1;
	thread_fd = fd;
	shunt__own_add(&thread_fd);
	shim_thread_watch();
	return fd;
}

/*
 * A forked child: the calling thread's eventfd is its parent's, and a
 * kick one of the two took and reset was lost to the other, whose wait
 * slept on (t_shim_fds fork_kick_own; scm_rights_unread_rung 1 run in
 * 40).  Its own comes with its first wait.  The parent's waits asleep at
 * the fork are not the child's: none is listed.
 */
SHUNT_FORK_TEXT void shim_kick_forked(void)
{
	/* Written only where set: each page a child writes is a copy (a
	 * fork per connection pays it). */
	for (int i = 0; i < SLEEPERS; i++)
		if (atomic_load_explicit(&sleepers[i], memory_order_relaxed))
			atomic_store(&sleepers[i], 0);
	if (atomic_load(&nsleepers))
		atomic_store(&nsleepers, 0);
	for (int i = 0; i < MINE_MAX; i++)
		if (mine[i])
			mine[i] = 0; /* the parent's listings, cleared above */
	if (thread_fd >= 0)
		thread_gone(NULL);
}

/* Replace entry `was` of mine[] by `now`. */
static void mine_note(int now, int was)
{
	if (now)
		shim_thread_watch();
	for (int i = 0; i < MINE_MAX; i++)
		if (mine[i] == was) {
			mine[i] = now;
			return;
		}
}

int shim_kick_listen(int fd, uint64_t mask)
{
	for (int i = 0; fd > 0 && i < SLEEPERS; i++) {
		int none = 0;
		/* The mask before the fd, which a kicker reads first (seq_cst):
		 * the previous sleeper's mask never covers ours. */
		if (atomic_load_explicit(&sleepers[i], memory_order_relaxed))
			continue;
		atomic_fetch_or(&masks[i], mask);
		if (atomic_compare_exchange_strong(&sleepers[i], &none, fd)) {
			atomic_store(&masks[i], mask);
			atomic_fetch_add(&nsleepers, 1);
			mine_note(i + 1, 0);
			return i;
		}
	}
	return -1; /* too many at once: this one may wait for its own rings */
}

void shim_kick_unlisten(int slot)
{
	if (slot < 0)
		return;
	mine_note(0, slot + 1);
	atomic_store(&sleepers[slot], 0);
	atomic_fetch_sub(&nsleepers, 1);
}

void shim_kick_reset(int fd)
{
	uint64_t v;

	if (fd >= 0)
		sys_read(fd, &v, sizeof(v));
}

void shim_kick_others(const struct tslot *s)
{
	uint64_t one = 1, bit = shim_kick_bit(s);

	if (!atomic_load_explicit(&nsleepers, memory_order_acquire))
		return;
	for (int i = 0; i < SLEEPERS; i++) {
		/* Acquire: the mask listed before the fd is seen with it. */
		int fd = atomic_load_explicit(&sleepers[i], memory_order_acquire);
		if (fd > 0 && (atomic_load(&masks[i]) & bit))
			sys_write(fd, &one, sizeof(one));
	}
}
