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

int shim_uring_seen(void)
{
	if (atomic_load(&made) || atomic_load(&mapped))
		return 1;
	if (!maps_name_a_ring())
		return 0;
	atomic_store(&mapped, 1);
	return 1;
}
