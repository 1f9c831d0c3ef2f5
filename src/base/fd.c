/*
 * fd.c - keeping the library's own fds out of the program's way.
 *
 * The socket shim runs inside programs that count on fd numbers: an event
 * loop sized for N connections (wrk, redis's ae) refuses an fd above its
 * size, and select() stops at FD_SETSIZE.  Each accelerated connection
 * may keep fds of its own, so the shim sets a floor, and every fd the
 * library keeps is moved above it.  With no floor (the native API) fds stay
 * where the kernel put them.
 */
#include <fcntl.h>

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
