/*
 * bench_child.c - the peer process of `shunt bench`.
 *
 * One child serves every transport, so all of them are measured between the
 * same two processes.  It obeys commands from the parent on a SOCK_SEQPACKET
 * control socket, one at a time, and answers each with a status once done:
 * the data itself only ever travels on the transport being measured.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

struct child {
	const struct child_args *a;
	struct ep ep[NXPORT];
	uint8_t *rbuf;  /* where copying transports receive */
	uint8_t *sbuf;  /* what ping-pong sends back */
};

static int child_error(const char *what, const struct cmd *c, int rc)
{
	fprintf(stderr, "shunt bench (peer): %s on %s, size %llu: %s\n", what,
		c->x < NXPORT ? xport_names[c->x] : "?", (unsigned long long)c->size,
		bench_strerror(rc));
	return rc;
}

/* Receive count messages of the size, then acknowledge with one byte: the
 * parent's clock stops when the ack arrives, so every byte was delivered. */
static int serve_stream(struct child *ch, const struct cmd *c)
{
	struct ep *e = &ch->ep[c->x];
	uint64_t left = c->size * c->count;

	while (left > 0) {
		size_t want = left < c->size ? (size_t)left : (size_t)c->size;
		ssize_t n = ep_recv(e, ch->rbuf, want);
		if (n <= 0)
			return child_error("stream receive", c, n ? (int)n : EP_EOF);
		left -= (uint64_t)n;
	}
	int rc = ep_send(e, "A", 1);
	return rc < 0 ? child_error("stream ack", c, rc) : 0;
}

/* Echo: take all of each message, then send as many bytes back. */
static int serve_pingpong(struct child *ch, const struct cmd *c)
{
	struct ep *e = &ch->ep[c->x];

	for (uint64_t i = 0; i < c->count; i++) {
		int rc = ep_recv_all(e, ch->rbuf, c->size);
		if (rc < 0)
			return child_error("ping-pong receive", c, rc);
		rc = ep_send(e, ch->sbuf, c->size);
		if (rc < 0)
			return child_error("ping-pong send", c, rc);
	}
	return 0;
}

static int serve(struct child *ch, const struct cmd *c)
{
	const struct child_args *a = ch->a;

	if (c->x >= NXPORT || c->x == X_MEMCPY || c->size > a->max_size)
		return -EINVAL;
	struct ep *e = &ch->ep[c->x];
	switch (c->op) {
	case OP_CONNECT: {
		int rc = ep_connect(a->rv, (enum xport)c->x, &a->opts, e);
		return rc < 0 ? child_error("connect", c, rc) : 0;
	}
	case OP_STREAM:
		return serve_stream(ch, c);
	case OP_PINGPONG:
		return serve_pingpong(ch, c);
	case OP_CLOSE:
		ep_close(e);
		return 0;
	default:
		return -EINVAL;
	}
}

static void child_cleanup(struct child *ch)
{
	for (int x = 0; x < NXPORT; x++)
		ep_close(&ch->ep[x]);
	free(ch->rbuf);
	free(ch->sbuf);
}

int child_main(const struct child_args *a)
{
	struct child ch = { .a = a };
	struct cmd c;
	int status = 0;

	for (int x = 0; x < NXPORT; x++)
		ch.ep[x] = (struct ep){ .x = (enum xport)x, .fd = -1 };
	ch.rbuf = malloc(a->max_size);
	ch.sbuf = malloc(a->max_size);
	if (!ch.rbuf || !ch.sbuf) {
		fprintf(stderr, "shunt bench (peer): out of memory\n");
		child_cleanup(&ch);
		return 1;
	}
	memset(ch.sbuf, 0x5a, a->max_size);
	for (;;) {
		/* The last resort if the parent stops talking without dying
		 * (PR_SET_PDEATHSIG covers its death). */
		alarm(a->alarm_s);
		ssize_t n = recv(a->ctl, &c, sizeof(c), 0);
		if (n == 0)
			break; /* the parent is done */
		if (n != (ssize_t)sizeof(c)) {
			if (n < 0 && errno == EINTR)
				continue;
			fprintf(stderr, "shunt bench (peer): bad control message\n");
			status = 1;
			break;
		}
		struct reply r = { .rc = serve(&ch, &c) };
		r.cpu_s = cpu_self_s();
		if (c.x < NXPORT && ch.ep[c.x].c)
			shunt_get_stats(ch.ep[c.x].c, &r.st);
		if (send(a->ctl, &r, sizeof(r), MSG_NOSIGNAL) != (ssize_t)sizeof(r) ||
		    r.rc < 0) {
			status = 1;
			break;
		}
	}
	alarm(0);
	child_cleanup(&ch);
	return status;
}
