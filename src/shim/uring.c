/*
 * uring.c - io_uring, which the library cannot see.
 *
 * A program's io_uring reads and writes its sockets inside the kernel,
 * past every wrapper: on a moved socket it would take the peer's
 * doorbells for data and write beside the ring.  So a process with a ring
 * moves no connection, and one that makes a ring takes its moved
 * connections back to TCP first (preload.c, syscall).  A ring is seen when
 * it is made through libc's syscall(), or once it is mapped: liburing
 * makes its rings with a system call of its own, then maps them, and
 * /proc/self/maps names them "anon_inode:[io_uring]", looked for before
 * each move.  A ring made by the program's own system call after a
 * connection moved, or one in the program's own memory
 * (IORING_SETUP_NO_MMAP), is not seen (docs/design.md, Limits).
 */
#include <fcntl.h>
#include <string.h>

#include "clock.h"
#include "shim.h"
#include "sys.h"

static _Atomic int made, mapped;

int shim_uring_made(void)
{
	return atomic_exchange(&made, 1);
}

/* Does this process map an io_uring?  A read at a time into a small
 * buffer (a move may start in a signal handler, on a small stack), with
 * the last bytes kept so that a name cut in two is still found. */
static int maps_name_a_ring(void)
{
	static const char name[] = "anon_inode:[io_uring]";
	enum { KEEP = sizeof(name) - 2 };
	char buf[1024];
	size_t kept = 0;
	long n;
	int found = 0;
	int fd = sys_openat(AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	while (!found && (n = sys_read(fd, buf + kept, sizeof(buf) - kept)) > 0) {
		size_t len = kept + (size_t)n;
		found = memmem(buf, len, name, sizeof(name) - 1) != NULL;
		kept = len < KEEP ? len : KEEP;
		memmove(buf, buf + len - kept, kept);
	}
	sys_close(fd);
	return found;
}

/*
 * The look reads all of /proc/self/maps, which our own segments lengthen:
 * 0.035 ms with few mappings, 3.4 ms at 6000 (2000 moved connections), so
 * a process that moves thousands paid for each move in proportion to the
 * ones before (2000 connections set up in 16.1 s, 1.1 s over TCP).  A look
 * that took long is taken again only after twenty times as long: the
 * answer "no ring" then stands for a while, as it stands for a ring made
 * by the program's own system call after a move; a cheap look is never
 * reused.
 */
#define REUSE_FROM_NS 100000 /* 0.1 ms */
#define REUSE_TIMES 20

static _Atomic int64_t no_ring_until;

int shim_uring_seen(void)
{
	if (atomic_load(&made) || atomic_load(&mapped))
		return 1;
	int64_t t0 = shunt_now_ns();
	if (t0 < atomic_load(&no_ring_until))
		return 0;
	if (!maps_name_a_ring()) {
		int64_t took = shunt_now_ns() - t0;
		if (took >= REUSE_FROM_NS)
			atomic_store(&no_ring_until, t0 + REUSE_TIMES * took);
		return 0;
	}
	atomic_store(&mapped, 1);
	return 1;
}
