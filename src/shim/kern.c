/*
 * kern.c - what the kernel knows of a TCP socket, asked through the
 * library's own system calls.
 *
 * The switch of a direction happens at a byte offset of the TCP stream
 * (docs/design.md, "The switch").  The kernel counts that stream whichever
 * process wrote or read it, and whatever path (stdio's internal writes
 * too).  Written: bytes sent once (bytes_sent - bytes_retrans) plus those
 * not sent yet, all from one snapshot; bytes_acked would do too, but it
 * counts the SYN of the side that connected.  Read: bytes_received (less
 * the peer's FIN, which it counts) - the receive queue, read twice around the queue, and again if the count moved
 * in between, so that no arrival splits it.
 */
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "shim.h"
#include "sys.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static int tcp_info(int fd, struct tcp_info *ti)
{
	unsigned len = sizeof(*ti);

	memset(ti, 0, sizeof(*ti));
	int rc = sys_getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len);
	if (rc < 0)
		return rc;
	/* The counters arrived by Linux 4.19; without them there is no switch. */
	return len >= offsetof(struct tcp_info, tcpi_bytes_retrans) + 8 ? 0 : -ENOSYS;
}

/* States in which the peer's FIN has come in (the kernel's numbers:
 * TIME_WAIT 6, CLOSE_WAIT 8, LAST_ACK 9, CLOSING 11). */
static int fin_in(uint8_t state)
{
	return state == 6 || state == 8 || state == 9 || state == 11;
}

/* The count of bytes read: received - still queued, read until the count
 * held still around the queue. */
int shim_kern_rx_consumed(int fd, uint64_t *out)
{
	for (int tries = 0; tries < 100; tries++) {
		struct tcp_info a, b;
		int q = 0;
		int rc = tcp_info(fd, &a);
		if (rc == 0)
			rc = sys_ioctl(fd, SIOCINQ, &q);
		if (rc == 0)
			rc = tcp_info(fd, &b);
		if (rc < 0)
			return rc;
		if (a.tcpi_bytes_received != b.tcpi_bytes_received)
			continue;
		/* The peer's FIN counts as a byte received (it takes a
		 * sequence number), not as one queued. */
		uint64_t got = a.tcpi_bytes_received - (uint64_t)fin_in(a.tcpi_state);
		if (q < 0 || (uint64_t)q > got)
			return -EPROTO;
		*out = got - (uint64_t)q;
		return 0;
	}
	return -EAGAIN;
}

int shim_kern_tx_total(int fd, uint64_t *out)
{
	struct tcp_info ti;
	int rc = tcp_info(fd, &ti);

	if (rc < 0)
		return rc;
	if (ti.tcpi_bytes_retrans > ti.tcpi_bytes_sent)
		return -EPROTO;
	*out = ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes;
	return 0;
}

int shim_kern_netns_cookie(int fd, uint64_t *out)
{
	unsigned len = sizeof(*out);

	return sys_getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, out, &len);
}

int shim_kern_is_tcp(int fd)
{
	int v = 0, d = 0;
	unsigned len = sizeof(v);

	if (sys_getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) < 0 || v != IPPROTO_TCP)
		return 0;
	len = sizeof(d);
	return sys_getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &d, &len) == 0 &&
	       (d == AF_INET || d == AF_INET6);
}

uint64_t shim_kern_ino(int fd)
{
	struct stat st;

	return sys_fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

/* --- Who owns a socket: sock_diag ---------------------------------------
 * The kernel answers any process in the namespace with the owner's uid of
 * the TCP socket with given addresses: before we pass our socket to a peer
 * of another user, it must own the other end (docs/design.md, "Proof"). */

static void diag_addr(const struct shunt_addr *a, __be32 *out)
{
	memcpy(out, a->a, a->family == AF_INET ? 4 : 16);
}

/* The kernel's record of the TCP socket src -> dst in family fam:
 * 0 and *m, or -ENOENT. */
static int diag_find(int fam, const struct shunt_addr *src, const struct shunt_addr *dst,
		     struct inet_diag_msg *m)
{
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req;
	union {
		char buf[512];
		struct nlmsghdr align;
	} ans;
	int s = sys_socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (s < 0)
		return s;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.r.sdiag_family = (uint8_t)fam;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0u;
	req.r.id.idiag_sport = htons(src->port);
	req.r.id.idiag_dport = htons(dst->port);
	if (fam == AF_INET6 && src->family == AF_INET) {
		/* IPv4 as a dual-stack socket sees it: ::ffff:a.b.c.d */
		uint8_t m6[16] = { [10] = 0xff, [11] = 0xff };
		memcpy(m6 + 12, src->a, 4);
		memcpy(req.r.id.idiag_src, m6, 16);
		memcpy(m6 + 12, dst->a, 4);
		memcpy(req.r.id.idiag_dst, m6, 16);
	} else {
		diag_addr(src, req.r.id.idiag_src);
		diag_addr(dst, req.r.id.idiag_dst);
	}
	req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	int rc = (int)sys_send(s, &req, sizeof(req), 0);
	long n = rc < 0 ? rc : sys_recv(s, &ans, sizeof(ans), 0);
	sys_close(s);
	if (n < 0)
		return (int)n;
	const struct nlmsghdr *nh = &ans.align;
	if ((size_t)n < sizeof(*nh) || nh->nlmsg_len > (size_t)n)
		return -EPROTO;
	/* "No such socket" is an error message; any other error is not an
	 * answer (a caller may take ENOENT for "gone"). */
	if (nh->nlmsg_type == NLMSG_ERROR && nh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
		const struct nlmsgerr *e = NLMSG_DATA(nh);
		return e->error < 0 ? e->error : -EPROTO;
	}
	if (nh->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
		return -ENOENT;
	memcpy(m, NLMSG_DATA(nh), sizeof(*m));
	return 0;
}

int shim_kern_sock_uid(const struct shunt_addr *src, const struct shunt_addr *dst,
		       uint32_t *uid)
{
	struct inet_diag_msg m;
	int rc = diag_find(src->family, src, dst, &m);

	if (rc == 0)
		*uid = m.idiag_uid;
	return rc;
}

int shim_kern_sock_ino(const struct shunt_addr *src, const struct shunt_addr *dst,
		       uint64_t *ino)
{
	struct inet_diag_msg m;
	int rc = diag_find(src->family, src, dst, &m);

	if (rc == -ENOENT && src->family == AF_INET)
		rc = diag_find(AF_INET6, src, dst, &m);
	if (rc == 0)
		*ino = m.idiag_inode;
	return rc;
}
