/*
 * fuzz_meet.c - the meeting's messages (src/shim/meetmsg.c) as a peer may
 * send them: any bytes, any length, any number of fds attached, received
 * the way a meeting step receives them (shunt_fdmsg_recv, then
 * shim_meet_parse).
 *
 * Input: byte 0 picks the fds to attach (0 to 7 copies of /dev/null's fd)
 * and the type asked for (bit 3: ACCEPT, else HELLO); the rest is the
 * message.  Checks: no fd is left behind (what was received is closed
 * after a refusal by the receiver, and the harness closes what a
 * well-formed message brought), a message the parser takes has exactly
 * the size and fd count of its type, and nothing reads or writes past
 * what it was given (ASan).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdmsg.h"
#include "meet.h"

/* Open fds of this process (0..255 that answer F_GETFD: no fd floor is
 * set here, so what a message brings lands low). */
static int open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 256; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

static void check(int ok)
{
	if (!ok)
		abort();
}

/* What a step makes of one message: 0 if taken (its fds closed here). */
static int receive(int rx, uint32_t type)
{
	struct shim_meet_msg m;
	int fds[SHUNT_FDMSG_MAX], n = -1;
	int rc = shunt_fdmsg_recv(rx, &m, sizeof(m), fds, SHUNT_FDMSG_MAX, &n, MSG_DONTWAIT);

	if (rc < 0)
		return rc;
	check(n >= 0 && n <= SHUNT_FDMSG_MAX);
	rc = shim_meet_parse(&m, n, type);
	/* Taken: the type's own fds (ACCEPT with PASS: one; else none). */
	check(rc < 0 || n == ((type == SHIM_MEET_ACCEPT && (m.flags & SHIM_MEET_PASS)) ? 1 : 0));
	check(rc < 0 || (m.magic == SHIM_MEET_MAGIC && m.type == type && m.tcp_fd >= 0));
	shunt_close_untrusted(fds, n);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], fds[7];

	if (size < 1 || size > 1 + 4096)
		return 0;
	int nfds = data[0] & 7;
	uint32_t type = (data[0] & 8) ? SHIM_MEET_ACCEPT : SHIM_MEET_HELLO;
	int before = open_fds();
	check(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	check(null >= 0);
	for (int i = 0; i < nfds; i++)
		fds[i] = null;
	/* shunt_fdmsg_send carries at most SHUNT_FDMSG_MAX: a peer's own
	 * sendmsg may attach more, as the kernel allows. */
	char ctl[CMSG_SPACE(sizeof(fds))];
	struct iovec iov = { (void *)(data + 1), size - 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		msg.msg_control = ctl;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(sv[0], &msg, MSG_DONTWAIT) >= 0)
		receive(sv[1], type);
	close(null);
	close(sv[0]);
	close(sv[1]);
	check(open_fds() == before);
	return 0;
}
