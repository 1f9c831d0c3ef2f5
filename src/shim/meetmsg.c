/*
 * meetmsg.c - the meeting's two messages (meet.c), checked field by field.
 *
 * A file of its own, with nothing of the shim's state, so that the fuzzer
 * (tests/fuzz/fuzz_meet.c) runs exactly what a step runs on what a peer
 * sent.
 */
#include <errno.h>

#include "meet.h"
#include "seg.h"

static int parse_hello(const struct shim_meet_msg *m, int nfds)
{
	return nfds == 0 && m->flags == 0 && m->ring_size == 0 && m->seg_fd == -1 &&
			       m->seg_ino == 0
		       ? 0
		       : -EPROTO;
}

/* The segment comes with it, always (meet.c, send_accept). */
static int parse_accept(const struct shim_meet_msg *m, int nfds)
{
	if (shunt_seg_check_size(m->ring_size) < 0)
		return -EPROTO;
	return nfds == 1 && m->flags == SHIM_MEET_PASS && m->seg_fd == -1 && m->seg_ino == 0
		       ? 0
		       : -EPROTO;
}

int shim_meet_parse(const struct shim_meet_msg *m, int nfds, uint32_t type)
{
	if (m->magic != SHIM_MEET_MAGIC || m->version != SHIM_MEET_VERSION || m->type != type ||
	    (m->flags & ~SHIM_MEET_PASS) || m->medium != 0 || m->tcp_fd < 0)
		return -EPROTO;
	if (type == SHIM_MEET_HELLO)
		return parse_hello(m, nfds);
	return type == SHIM_MEET_ACCEPT ? parse_accept(m, nfds) : -EPROTO;
}
