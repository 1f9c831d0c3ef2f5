/*
 * fdmsg.h - messages that carry file descriptors (SCM_RIGHTS), as the
 * local medium passes segments, doorbells and proofs.
 */
#ifndef SHUNT_FDMSG_H
#define SHUNT_FDMSG_H

#include <stddef.h>

#define SHUNT_FDMSG_MAX 4 /* the most fds a message of ours carries */

/* Send len bytes with nfds fds; 0, or a negative errno (a short send is
 * -EPROTO).  MSG_NOSIGNAL is always added. */
int shunt_fdmsg_send(int sock, const void *buf, size_t len, const int *fds, int nfds,
		     int flags);
/* Receive one message of exactly len bytes carrying at most max fds
 * (max <= SHUNT_FDMSG_MAX; fds has room for max) into fds (close-on-exec,
 * moved above the fd floor); *nfds says how many.  Anything else (more fds,
 * a short message, truncation) closes what came and returns -EPROTO; end
 * of stream is -ECONNRESET.  Whatever the sender attached, no more than max
 * fds are ever written to fds. */
int shunt_fdmsg_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds,
		     int flags);
void shunt_close_fds(const int *fds, int n);
/* A copy of the one fd of the 1-byte datagram `tag` waiting first on the
 * local datagram socket s, peeked (left there), or -1: how a process keeps
 * an fd out of its fd table (the shim's arena, shim/arena.c). */
int shunt_fdmsg_peek_parked(int s, char tag);
/* Close fds a peer sent that we will not use.  A socket among them is
 * made to close at once first: its last close() would otherwise wait out
 * an SO_LINGER its sender chose. */
void shunt_close_untrusted(const int *fds, int n);

#endif /* SHUNT_FDMSG_H */
