/*
 * fd.c - keeping the library's own fds out of the program's way.
 *
 * The socket shim runs inside programs that count on fd numbers: an event
 * loop sized for N connections (wrk, redis's ae) refuses an fd above its
 * size, and select() stops at FD_SETSIZE.  Each accelerated connection
 * may keep fds of its own, so the shim sets a floor, and every fd the
 * library keeps is moved above it.  With no floor (the native API) fds stay
 * where the kernel put them.
 *
 * The fds the library keeps for itself are registered here, each with the
 * address of the int that holds it: the shim answers the program's close,
 * close_range or dup2 of one as if it were not open, and moves one out of
 * the way of a dup2 onto its number, updating its holder.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "sys.h"

int shunt__fd_floor;

int shunt__hide_fd(int fd)
{
	if (fd < 0 || shunt__fd_floor <= 0 || fd >= shunt__fd_floor)
		return fd;
	int high = sys_fcntl(fd, F_DUPFD_CLOEXEC, shunt__fd_floor);
	if (high < 0)
		return fd; /* no room up there: a low number still works */
	sys_close(fd);
	return high;
}

/* --- The registry ---------------------------------------------------------
 * Numbers are read without the lock (every close of the program asks);
 * holders change only under it, so a holder is never written after it
 * unregistered (and maybe freed itself). */
#define OWN_MAX SHUNT_OWN_MAX

static pthread_mutex_t own_mu SHUNT_FORK_HOT_FIRST = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int own_fd[OWN_MAX]; /* -1 or 0: free (0 is never ours) */
static int *own_at[OWN_MAX];
static _Atomic int own_top; /* entries in use lie below */

int shunt__own_add(int *where)
{
	int fd = *where;

	if (fd <= 2)
		return -EINVAL;
	pthread_mutex_lock(&own_mu);
	int top = atomic_load(&own_top);
	for (int i = 0; i < OWN_MAX; i++) {
		if (atomic_load(&own_fd[i]) > 0)
			continue;
		own_at[i] = where;
		atomic_store(&own_fd[i], fd);
		if (i >= top)
			atomic_store(&own_top, i + 1);
		pthread_mutex_unlock(&own_mu);
		return 0;
	}
	pthread_mutex_unlock(&own_mu);
	return -ENOSPC; /* works, unguarded */
}

void shunt__own_del(int *where)
{
	pthread_mutex_lock(&own_mu);
	int top = atomic_load(&own_top);
	for (int i = 0; i < top; i++) {
		if (own_at[i] == where) {
			own_at[i] = NULL;
			atomic_store(&own_fd[i], -1);
		}
	}
	pthread_mutex_unlock(&own_mu);
}

SHUNT_FORK_TEXT int shunt__own_is(int fd)
{
	int top = atomic_load_explicit(&own_top, memory_order_acquire);

	if (fd <= 2)
		return 0;
	for (int i = 0; i < top; i++)
		if (atomic_load_explicit(&own_fd[i], memory_order_relaxed) == fd)
			return 1;
	return 0;
}

int shunt__own_list(int *out, int max)
{
	int top = atomic_load_explicit(&own_top, memory_order_acquire);
	int n = 0;

	for (int i = 0; i < top && n < max; i++) {
		int fd = atomic_load_explicit(&own_fd[i], memory_order_relaxed);
		if (fd <= 0)
			continue;
		int j = n++;
		for (; j > 0 && out[j - 1] > fd; j--) /* sorted: close_range's pieces */
			out[j] = out[j - 1];
		out[j] = fd;
	}
	return n;
}

int shunt__own_move(int fd)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&own_mu);
	int top = atomic_load(&own_top);
	for (int i = 0; i < top; i++) {
		if (atomic_load(&own_fd[i]) != fd)
			continue;
		int to = sys_fcntl(fd, F_DUPFD_CLOEXEC, fd + 1);
		if (to < 0) {
			rc = to;
			break;
		}
		to = shunt__hide_fd(to);
		/* CLOEXEC or not, as it was (the arena passes through exec). */
		sys_fcntl(to, F_SETFD, sys_fcntl(fd, F_GETFD, 0));
		__atomic_store_n(own_at[i], to, __ATOMIC_RELEASE);
		atomic_store(&own_fd[i], to);
		sys_close(fd);
		rc = 0;
		break;
	}
	pthread_mutex_unlock(&own_mu);
	return rc;
}

/* Around fork: no other thread is inside the registry when the child's
 * copy is taken. */
SHUNT_FORK_TEXT void shunt__own_lock(void)
{
	pthread_mutex_lock(&own_mu);
}

SHUNT_FORK_TEXT void shunt__own_unlock(void)
{
	pthread_mutex_unlock(&own_mu);
}
