/*
 * scm.c - sockets that travel between processes with SCM_RIGHTS.
 *
 * Out: a tracked socket another process now holds too stays on TCP in
 * this family for good (the receiver cannot see our slot).  In: a TCP
 * socket that arrives is tracked like one we accepted, marked foreign with
 * the sender's pid: it moves only once the sender no longer holds it (its
 * /proc/PID/fd says so), as with Node's cluster, where the primary accepts,
 * passes each connection to a worker and closes its copy.
 *
 * And ancillary data sent on a TCP socket of ours (shim_tcp_cmsg).
 */
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

static void each_right(const struct msghdr *m, void (*fn)(int fd, void *arg), void *arg)
{
	if (!m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
		return;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)m); cm;
	     cm = CMSG_NXTHDR((struct msghdr *)m, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
		    cm->cmsg_len < CMSG_LEN(0))
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
			fn(fd, arg);
		}
	}
}

void shim_export(int fd, const char *where)
{
	struct tsock *t = shim_get(fd); /* a reference: fd may be closed meanwhile */

	if (!t)
		return;
	atomic_fetch_or(&t->slot->flags, TF_EXPORTED);
	if (atomic_load(&t->slot->state) == SLOT_MOVED && shim_demote(t, fd) < 0)
		log_error("fd %d: a connection in shared memory %s and could not go back to "
			  "TCP: it was reset", fd, where);
	shim_put(t);
}

static void leaving(int fd, void *arg)
{
	(void)arg;
	shim_export(fd, "was passed to another process");
}

int shim_scm_out(const struct msghdr *m)
{
	each_right(m, leaving, NULL);
	return 0;
}

struct arrival {
	int via;
	int sender;
};

/*
 * A socket we track may come back to us under a new number: sent to
 * ourselves (a program that hands its connections between its own threads
 * over a socketpair), or by a process that shares it.  Tracked anew, it
 * would be a second connection in our tables: the close of the old
 * number would end the only one we knew, and an epoll set would lose a
 * registration the kernel keeps (t_shim_fds scm_to_self).  Only a socket
 * that has travelled can come back, so only those are looked at; the
 * number must still name that very socket.
 */
struct same {
	uint64_t ino;
	int fd;   /* the arriving number */
	int seen; /* a number of ours for that socket, or -1 */
};

static void same_socket(int fd, struct tsock *t, void *arg)
{
	struct same *m = arg;
	uint64_t had = t->slot->ino;

	if (m->seen >= 0 || fd == m->fd ||
	    !(atomic_load(&t->slot->flags) & (TF_EXPORTED | TF_FOREIGN)) || (had && had != m->ino))
		return;
	if (shim_kern_ino(fd) == m->ino)
		m->seen = fd;
}

static int ours_already(int fd, uint64_t ino)
{
	struct same m = { ino, fd, -1 };

	if (ino)
		shim_each(same_socket, &m);
	return m.seen;
}

static void arriving(int fd, void *arg)
{
	struct arrival *a = arg;

	shim_fresh_fd(fd);
	if (!shim_enabled() || !shim_kern_is_tcp(fd))
		return;
	if (a->sender == 0) {
		struct ucred cr;
		unsigned len = sizeof(cr);
		a->sender = sys_getsockopt(a->via, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0
				    ? (int)cr.pid : -1;
	}
	uint64_t ino = shim_kern_ino(fd);
	int seen = ours_already(fd, ino);
	if (seen >= 0) {
		shim_dup(seen, fd); /* the same socket: one more number for it */
		return;
	}
	struct tsock *t = shim_track(fd, TF_FOREIGN);
	if (t) {
		atomic_store(&t->slot->foreign_pid, a->sender);
		/* known now, for the next arrival's look (a fstat spared) */
		t->slot->ino = ino;
	}
}

void shim_scm_in(int via, struct msghdr *m)
{
	struct arrival a = { via, 0 };

	each_right(m, arriving, &a);
}

/* Does process pid hold the socket with inode ino?  -1 if we cannot tell. */
int shim_proc_holds(int pid, uint64_t ino)
{
	char path[64], want[64], link[64];
	int found = 0;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	snprintf(want, sizeof(want), "socket:[%llu]", (unsigned long long)ino);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	for (struct dirent *e; !found && (e = readdir(d));) {
		char p[320];
		snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
		long n = sys_readlinkat(AT_FDCWD, p, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			found = strcmp(link, want) == 0;
		}
	}
	closedir(d);
	return found;
}

/*
 * Ancillary data on a send of a moved TCP connection.  TCP acts only on
 * its SOL_SOCKET ones (SO_MARK, SO_PRIORITY, timestamping, SCM_TXTIME:
 * the connection must go back to TCP for those), passes over SCM_RIGHTS,
 * SCM_CREDENTIALS and every other level, and refuses the rest, malformed
 * ones too, with EINVAL before any byte (tcp_sendmsg_locked,
 * sock_cmsg_send) but after its state: a connection shut for sending or
 * reset fails as without them.  The kernel's socket checks them with a
 * send of no bytes, which sends nothing (asked only while it holds no
 * error, which the send would take).  Returns the error TCP refuses them
 * with, 0 when TCP would send the bytes as without them, 1 when TCP must
 * send them.  (Each went back to TCP, where a peer that made no call
 * within 5 s had the connection reset: tests/diff_shim.c, t_shim_data
 * sendmsg_control_kinds.)
 */
int shim_tcp_cmsg(struct tsock *t, int fd, const struct msghdr *m)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	struct msghdr probe = *m;
	struct pollfd p = { .fd = fd, .events = POLLOUT };

	if (shim_tcp_info_get(t, fd, &ti, &tl) < 0 || tl < 1)
		return 1;
	if (ti.tcpi_state != TCP_ESTABLISHED && ti.tcpi_state != TCP_CLOSE_WAIT)
		return 0;
	if (sys_ppoll(&p, 1, &(struct timespec){ 0, 0 }) != 1 || p.revents != POLLOUT)
		return 1;
	probe.msg_iov = NULL;
	probe.msg_iovlen = 0;
	long rc = sys_sendmsg(fd, &probe, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (rc == -EINVAL || rc == -EFAULT || rc == -ENOBUFS)
		return (int)rc;
	if (rc < 0)
		return 1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&probe); cm; cm = CMSG_NXTHDR(&probe, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type != SCM_RIGHTS &&
		    cm->cmsg_type != SCM_CREDENTIALS)
			return 1;
	return 0;
}
