/*
 * real.c - the libc functions the shim wraps, found with dlsym(RTLD_NEXT),
 * for the program's own calls.
 *
 * A wrapper can run before our constructor (another library's constructor
 * may make a socket), so each use resolves lazily through REAL().  Every
 * pointer is written with the same value by whichever thread gets there,
 * so a race only repeats the work.
 */
#include <dlfcn.h>

#include "shim.h"

struct shim_real shim_real;

#define FIND(fn) (*(void **)&shim_real.fn = dlsym(RTLD_NEXT, #fn))

void shim_real_init(void)
{
	FIND(socket);
	FIND(connect);
	FIND(accept4);
	FIND(close);
	FIND(dup);
	FIND(dup2);
	FIND(dup3);
	FIND(fcntl);
	FIND(ioctl);
	FIND(read);
	FIND(write);
	FIND(readv);
	FIND(writev);
	FIND(preadv2);
	FIND(pwritev2);
	FIND(recvfrom);
	FIND(sendto);
	FIND(recvmsg);
	FIND(sendmsg);
	FIND(recvmmsg);
	FIND(sendmmsg);
	FIND(sendfile);
	FIND(splice);
	FIND(shutdown);
	FIND(setsockopt);
	FIND(getsockopt);
	FIND(poll);
	FIND(select);
	FIND(pselect);
	FIND(ppoll);
	FIND(epoll_ctl);
	FIND(epoll_pwait);
	FIND(epoll_pwait2);
	FIND(execve);
	FIND(execvpe);
	FIND(fexecve);
	FIND(posix_spawn);
	FIND(posix_spawnp);
	FIND(fork);
	FIND(_Fork);
	FIND(daemon);
	FIND(clone);
	FIND(close_range);
	FIND(closefrom);
	FIND(fdopen);
	FIND(fclose);
	FIND(fcloseall);
	FIND(freopen);
	FIND(vdprintf);
	FIND(__vdprintf_chk);
	FIND(aio_read);
	FIND(aio_write);
	FIND(aio_read64);
	FIND(aio_write64);
	FIND(lio_listio);
	FIND(lio_listio64);
	FIND(unshare);
	FIND(setns);
	FIND(prctl);
	FIND(setuid);
	FIND(setgid);
	FIND(seteuid);
	FIND(setegid);
	FIND(setreuid);
	FIND(setregid);
	FIND(setresuid);
	FIND(setresgid);
	FIND(syscall);
}
