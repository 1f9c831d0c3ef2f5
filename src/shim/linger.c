/*
 * linger.c - a moved connection's TCP socket outlives the program's close
 * while bytes it sent before the switch are not yet acknowledged.
 *
 * After the move the peer still writes doorbells into the TCP stream.  One
 * that reaches our socket after the kernel closed it makes the kernel
 * answer with a reset, and a reset throws away what our socket had not yet
 * sent: the bytes written to TCP before our switch that the peer's full
 * window held back.  TCP would have delivered them.  So when the program
 * closes a moved connection whose socket still holds such bytes, the
 * library keeps a dup of it, shut for writing (the FIN follows our bytes,
 * as the close's would), drains the doorbells that arrive, and closes it
 * once the bytes are out, or LINGER_NS after.  The peer stops ringing once
 * it sees us closed: only a ring already on its way when we closed can
 * arrive, and the wait covers it.  A byte that is not a doorbell is the
 * peer's program writing after our close: the socket is reset then, as
 * TCP's closed socket would.
 *
 * Lingering sockets are the library's own fds (base/fd.c): the program
 * cannot close them.  They are looked at when the program closes an fd,
 * and closed in a forked child (the parent keeps them).
 */
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <pthread.h>
#include <sys/socket.h>

#include "clock.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"

#define LINGER_MAX 64
#define LINGER_NS (1000000000ll)

struct linger_fd {
	int fd;
	uint8_t bell;
	int64_t until;
};

static pthread_mutex_t linger_mu SHUNT_FORK_HOT = PTHREAD_MUTEX_INITIALIZER;
static struct linger_fd lingering[LINGER_MAX]; /* fd 0: free */
static _Atomic int nlinger SHUNT_FORK_HOT; /* the close path's one load */

/* Bytes the kernel still holds back (the peer's window is full).  Bytes
 * sent and not yet acknowledged are already in the peer's receive queue
 * on a local link, where a reset leaves them readable. */
static int unsent(int fd)
{
	int n = 0;

	return sys_ioctl(fd, SIOCOUTQNSD, &n) == 0 && n > 0;
}

/* Take the doorbells that arrived; 1 if a byte was not one: the peer's
 * program wrote after our close, which TCP answers with a reset. */
static int drain(const struct linger_fd *l)
{
	uint8_t buf[512];
	long n;

	while ((n = sys_recv(l->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		for (long i = 0; i < n; i++)
			if (buf[i] != l->bell)
				return 1;
	return 0;
}

/* Called with linger_mu held. */
static void release(struct linger_fd *l, int reset)
{
	shunt__own_del(&l->fd);
	if (reset) {
		struct linger lg = { 1, 0 };
		sys_setsockopt(l->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	sys_close(l->fd);
	l->fd = 0;
	atomic_fetch_sub(&nlinger, 1);
}

void shim_linger(int fd, uint8_t bell)
{
	if (!unsent(fd))
		return;
	pthread_mutex_lock(&linger_mu);
	for (int i = 0; i < LINGER_MAX; i++) {
		struct linger_fd *l = &lingering[i];
		if (l->fd)
			continue;
		int dup = shunt__hide_fd(sys_fcntl(fd, F_DUPFD_CLOEXEC, 3));
		if (dup < 0)
			break;
		sys_shutdown(dup, SHUT_WR);
		*l = (struct linger_fd){ dup, bell, shunt_now_ns() + LINGER_NS };
		shunt__own_add(&l->fd);
		atomic_fetch_add(&nlinger, 1);
		break;
	}
	pthread_mutex_unlock(&linger_mu);
}

SHUNT_FORK_TEXT int shim_linger_due(void)
{
	return atomic_load_explicit(&nlinger, memory_order_relaxed) != 0;
}

SHUNT_FORK_TEXT void shim_linger_tick(void)
{
	if (!shim_linger_due() || pthread_mutex_trylock(&linger_mu))
		return;
	int64_t now = shunt_now_ns();
	for (int i = 0; i < LINGER_MAX; i++) {
		struct linger_fd *l = &lingering[i];
		if (!l->fd)
			continue;
		if (drain(l))
			release(l, 1);
		else if (now >= l->until || !unsent(l->fd))
			release(l, 0);
	}
	pthread_mutex_unlock(&linger_mu);
}

/* Around fork (-1: before, 1: in the parent, 0: in the child). */
SHUNT_FORK_TEXT void shim_linger_fork(int phase)
{
	if (phase < 0) {
		pthread_mutex_lock(&linger_mu);
		return;
	}
	/* The child lets go of its copies: the parent waits on its own. */
	for (int i = 0; phase == 0 && i < LINGER_MAX; i++)
		if (lingering[i].fd) {
			shunt__own_del(&lingering[i].fd);
			sys_close(lingering[i].fd);
			lingering[i].fd = 0;
			atomic_fetch_sub(&nlinger, 1);
		}
	pthread_mutex_unlock(&linger_mu);
}
