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
 *
 * A meeting's proof asks the kernel two more things (docs/design.md,
 * "Meeting and proof"): which socket of our network namespace has given
 * addresses (sock_diag), and which socket another process holds at an fd
 * (/proc).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "internal.h"
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

/* The kernel's numbers (linux/tcp.h does not name them): FIN_WAIT1 4,
 * FIN_WAIT2 5, TIME_WAIT 6, CLOSE_WAIT 8, LAST_ACK 9, CLOSING 11. */
int shim_kern_fins(uint8_t k)
{
	int out = k == 4 || k == 5 || k == 6 || k == 9 || k == 11;
	int in = k == 6 || k == 8 || k == 9 || k == 11;

	return (out ? SHIM_FIN_OUT : 0) | (in ? SHIM_FIN_IN : 0);
}

static int fin_in(uint8_t state)
{
	return !!(shim_kern_fins(state) & SHIM_FIN_IN);
}

/* The count of bytes read: received - still queued, read until the count
 * held still around the queue.  A closed socket (TCP_CLOSE) does not say
 * whether the peer's FIN came before its end, which a reset's did not:
 * `fin_if_closed` says, or the offset the peer said its FIN follows,
 * `fin_at` (SHIM_FIN_UNKNOWN: it did not say), which the count passed if
 * it came (back.c knows both from the peer's segment). */
int shim_kern_rx_consumed_fin(int fd, uint64_t *out, int fin_if_closed, uint64_t fin_at)
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
		int fin = fin_in(a.tcpi_state) ||
			  (a.tcpi_state == 7 /* TCP_CLOSE */ &&
			   (fin_if_closed ||
			    (fin_at != SHIM_FIN_UNKNOWN && a.tcpi_bytes_received > fin_at)));
		uint64_t got = a.tcpi_bytes_received - (uint64_t)fin;
		if (q < 0 || (uint64_t)q > got)
			return -EPROTO;
		*out = got - (uint64_t)q;
		return 0;
	}
	return -EAGAIN;
}

int shim_kern_rx_received(int fd, uint64_t *out)
{
	struct tcp_info ti;
	int rc = tcp_info(fd, &ti);

	if (rc == 0)
		*out = ti.tcpi_bytes_received;
	return rc;
}

int shim_kern_fin_in(int fd)
{
	struct tcp_info ti;

	return tcp_info(fd, &ti) == 0 && fin_in(ti.tcpi_state);
}

int shim_kern_closed(int fd)
{
	struct tcp_info ti;

	return tcp_info(fd, &ti) == 0 && ti.tcpi_state == 7 /* TCP_CLOSE */;
}

int shim_kern_rx_consumed(int fd, uint64_t *out)
{
	return shim_kern_rx_consumed_fin(fd, out, 0, SHIM_FIN_UNKNOWN);
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

int shim_kern_peer_done(int fd)
{
	struct tcp_info ti;

	if (tcp_info(fd, &ti) < 0)
		return 0;
	return fin_in(ti.tcpi_state) || ti.tcpi_state == 7 /* CLOSE: a reset */;
}

int shim_kern_fin_sent(int fd)
{
	struct tcp_info ti;

	return tcp_info(fd, &ti) == 0 && (shim_kern_fins(ti.tcpi_state) & SHIM_FIN_OUT);
}

uint64_t shim_kern_ino(int fd)
{
	struct stat st;

	return sys_fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

/* --- Which socket has these addresses: sock_diag ------------------------
 * The kernel tells any process the inode and owner of the TCP socket with
 * given addresses in its own network namespace (and only there): the
 * other end of our connection, whose holder a meeting's proof names
 * (docs/design.md, "Meeting and proof"). */

static void diag_addr(const struct shunt_addr *a, __be32 *out)
{
	memcpy(out, a->a, a->family == AF_INET ? 4 : 16);
}

/* An address of a sock_diag answer as the library spells it (an IPv6
 * socket talking IPv4 answers with mapped addresses). */
static int diag_addr_of(uint8_t family, const __be32 *a, __be16 port, struct shunt_addr *out)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = port };
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = port };

	if (family == AF_INET) {
		memcpy(&s4.sin_addr, a, 4);
		return shunt_addr_from((struct sockaddr *)&s4, out);
	}
	memcpy(&s6.sin6_addr, a, 16);
	return shunt_addr_from((struct sockaddr *)&s6, out);
}

/* The answer is that very socket: the addresses asked for (not a
 * listener the lookup fell back to). */
static int diag_same(const struct inet_diag_msg *m, const struct shunt_addr *src,
		     const struct shunt_addr *dst)
{
	struct shunt_addr s, d;

	return m->idiag_state != 10 /* TCP_LISTEN */ &&
	       diag_addr_of(m->idiag_family, m->id.idiag_src, m->id.idiag_sport, &s) == 0 &&
	       diag_addr_of(m->idiag_family, m->id.idiag_dst, m->id.idiag_dport, &d) == 0 &&
	       shunt_addr_eq(&s, src) && shunt_addr_eq(&d, dst);
}

static int diag_ask(int s, const struct inet_diag_req_v2 *r, struct inet_diag_msg *out)
{
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req = { .nh = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			  .nlmsg_flags = NLM_F_REQUEST },
		  .r = *r };
	union {
		char buf[512];
		struct nlmsghdr align;
	} ans;
	long n = sys_send(s, &req, sizeof(req), 0);

	if (n >= 0)
		n = sys_recv(s, &ans, sizeof(ans), 0);
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
	memcpy(out, NLMSG_DATA(nh), sizeof(*out));
	return 0;
}

/* The kernel's record of the TCP socket with exactly these addresses. */
static int diag_lookup(const struct shunt_addr *src, const struct shunt_addr *dst,
		       struct inet_diag_msg *m)
{
	struct inet_diag_req_v2 r;
	int s = sys_socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (s < 0)
		return s;
	memset(&r, 0, sizeof(r));
	r.sdiag_family = src->family;
	r.sdiag_protocol = IPPROTO_TCP;
	r.idiag_states = ~0u;
	r.id.idiag_sport = htons(src->port);
	r.id.idiag_dport = htons(dst->port);
	diag_addr(src, r.id.idiag_src);
	diag_addr(dst, r.id.idiag_dst);
	r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	int rc = diag_ask(s, &r, m);
	sys_close(s);
	return rc == 0 && !diag_same(m, src, dst) ? -ENOENT : rc;
}

int shim_kern_sock_find(const struct shunt_addr *src, const struct shunt_addr *dst,
			uint64_t *ino, uint32_t *uid)
{
	struct inet_diag_msg m = { 0 };
	int rc = diag_lookup(src, dst, &m);

	if (rc < 0)
		return rc;
	*ino = m.idiag_inode; /* 0: orphaned, held by no process */
	*uid = m.idiag_uid;
	return 0;
}

int shim_kern_unread(const struct shunt_addr *src, const struct shunt_addr *dst, uint32_t *unread)
{
	struct inet_diag_msg m = { 0 };
	int rc = diag_lookup(src, dst, &m);

	if (rc == 0)
		*unread = m.idiag_rqueue;
	return rc;
}

/* Is a an address of our own network namespace?  Binding to it says (a
 * link-local one without its scope cannot be bound: taken for ours). */
int shim_kern_addr_ours(const struct shunt_addr *a)
{
	struct sockaddr_storage ss;
	unsigned len;

	if (shunt_addr_is_loopback(a))
		return 1;
	memset(&ss, 0, sizeof(ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, a->a, 4);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, a->a, 16);
		len = sizeof(*in6);
	}
	int s = sys_socket(a->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 1; /* cannot tell: the local medium, as before */
	int rc = sys_bind(s, (struct sockaddr *)&ss, len);
	sys_close(s);
	return rc != -EADDRNOTAVAIL;
}

/* --- Another process's fds: /proc -------------------------------------------
 * /proc/PID/fd/N names what process PID holds at fd N, to whoever may
 * ptrace-read it (same user and dumpable, or CAP_SYS_PTRACE; Yama's
 * ptrace_scope restricts attaching, not this).  PID must be a number of
 * our pid namespace (SO_PEERCRED's), so /proc must be that namespace's:
 * its "self" is our pid. */

static int proc_is_ours(void)
{
	char buf[24], want[24];
	long n = sys_readlinkat(AT_FDCWD, "/proc/self", buf, sizeof(buf) - 1);

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	snprintf(want, sizeof(want), "%d", sys_getpid());
	return strcmp(buf, want) == 0;
}

static int proc_fd_path(int pid, int fd, char *buf, size_t n)
{
	if (pid <= 0 || fd < 0 || !proc_is_ours())
		return -EACCES;
	snprintf(buf, n, "/proc/%d/fd/%d", pid, fd);
	return 0;
}

int shim_kern_proc_sock(int pid, int fd, uint64_t *ino)
{
	static const char tag[] = "socket:[";
	char path[48], link[48], *end;
	int rc = proc_fd_path(pid, fd, path, sizeof(path));
	long n = rc < 0 ? rc : sys_readlinkat(AT_FDCWD, path, link, sizeof(link) - 1);

	if (n < 0)
		return n == -EPERM ? -EACCES : (int)n;
	link[n] = '\0';
	if (strncmp(link, tag, sizeof(tag) - 1) || link[sizeof(tag) - 1] < '0' ||
	    link[sizeof(tag) - 1] > '9')
		return -ENOTSOCK;
	unsigned long long v = strtoull(link + sizeof(tag) - 1, &end, 10);
	if (end[0] != ']' || end[1] != '\0')
		return -ENOTSOCK;
	*ino = v;
	return 0;
}
