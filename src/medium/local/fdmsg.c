/*
 * fdmsg.c - messages with file descriptors (see fdmsg.h).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "fdmsg.h"
#include "internal.h"
#include "sys.h"

int shunt_fdmsg_send(int sock, const void *buf, size_t len, const int *fds, int nfds,
		     int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SHUNT_FDMSG_MAX)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds < 0 || nfds > SHUNT_FDMSG_MAX)
		return -EINVAL;
	memset(&ctl, 0, sizeof(ctl));
	if (nfds > 0) {
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	long n = sys_sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
	if (n < 0)
		return (int)n;
	return n == (long)len ? 0 : -EPROTO;
}

void shunt_close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			sys_close(fds[i]);
}

void shunt_close_untrusted(const int *fds, int n)
{
	static const struct linger off = { 0, 0 };

	for (int i = 0; i < n; i++) {
		struct stat st;
		if (fds[i] < 0)
			continue;
		/* Not ours to keep lingering: a sender that still holds it can
		 * set it again, but then its own copy is not the last. */
		if (sys_fstat(fds[i], &st) == 0 && S_ISSOCK(st.st_mode))
			sys_setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &off, sizeof(off));
		sys_close(fds[i]);
	}
}

/* Take the fds of one SCM_RIGHTS header: up to max into fds, the rest
 * closed at once (*extra counts them). */
static void take_fds(const struct cmsghdr *cm, int *fds, int max, int *ngot, int *extra)
{
	int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

	for (int i = 0; i < k; i++) {
		int fd;
		memcpy(&fd, CMSG_DATA(cm) + (size_t)i * sizeof(int), sizeof(fd));
		if (*ngot < max) {
			fds[(*ngot)++] = shunt__hide_fd(fd);
		} else {
			shunt_close_untrusted(&fd, 1);
			(*extra)++;
		}
	}
}

int shunt_fdmsg_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds,
		     int flags)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SHUNT_FDMSG_MAX)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	int ngot = 0, extra = 0;

	if (max < 0 || max > SHUNT_FDMSG_MAX)
		return -EINVAL;
	long n = sys_recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return (int)n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			take_fds(cm, fds, max, &ngot, &extra);
	if (n == 0 && ngot == 0 && extra == 0)
		return -ECONNRESET;
	if ((size_t)n != len || extra || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
		shunt_close_untrusted(fds, ngot);
		return -EPROTO;
	}
	*nfds = ngot;
	return 0;
}

int shunt_fdmsg_peek_parked(int s, char tag)
{
	int dom = 0, type = 0, fd = -1, n = 0;
	unsigned len = sizeof(int);
	char got = 0;

	if (sys_getsockopt(s, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0 || dom != AF_UNIX ||
	    sys_getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_DGRAM ||
	    shunt_fdmsg_recv(s, &got, 1, &fd, 1, &n, MSG_PEEK | MSG_DONTWAIT) < 0 || n != 1)
		return -1;
	if (got == tag)
		return fd;
	shunt_close_untrusted(&fd, 1); /* anything may have been parked */
	return -1;
}
