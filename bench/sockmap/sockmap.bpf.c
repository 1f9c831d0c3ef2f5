// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockmap.bpf.c - eBPF sockmap redirection of local TCP, the rival that
 * users deploy today (the technique of Cilium, Merbridge, istio-tcpip-bypass),
 * written for shunt's benchmarks.  Not part of shunt.
 *
 * Two programs and two maps:
 *
 *   shunt_sm_ops  (sock_ops, attached to a cgroup v2 directory): when a TCP
 *                 connection of a process in that cgroup becomes established
 *                 (active side: the connect()ing socket; passive side: the
 *                 accept()ed one) and both of its addresses are loopback, the
 *                 socket goes into shunt_sm_hash under its 4-tuple.
 *   shunt_sm_msg  (sk_msg, attached to shunt_sm_hash): runs on every
 *                 sendmsg()/write() of a socket in the map.  It looks up the
 *                 peer (the same 4-tuple reversed) and redirects the message
 *                 straight into the peer's receive queue (BPF_F_INGRESS): the
 *                 bytes never go through TCP, IP or the loopback device.  If
 *                 the peer is not in the map (the other end is outside the
 *                 cgroup, or not yet established), the message takes the
 *                 ordinary TCP path.
 *   shunt_sm_hash BPF_MAP_TYPE_SOCKHASH, key struct sm_key.
 *   shunt_sm_stat per-CPU counters (enum sm_stat), read by sockmap_ctl.
 *
 * Keys are family-independent: an IPv4 address is stored as the IPv4-mapped
 * IPv6 address ::ffff:a.b.c.d, so that an AF_INET client and an AF_INET6
 * server socket accepting it (a listener on [::] sees ::ffff:127.0.0.1)
 * produce the same tuple.  Ports are in host byte order.
 *
 * Build: clang -O2 -g -target bpf -c sockmap.bpf.c -o sockmap.bpf.o, plus
 * -I/usr/include/$(gcc -dumpmachine) on Debian (<asm/types.h>); see
 * sockmap_build in bench/sockmap.sh.
 */
#include <linux/bpf.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

struct sm_key {
	__u32 local_ip[4];	/* network byte order, IPv4 as ::ffff:a.b.c.d */
	__u32 remote_ip[4];
	__u32 local_port;	/* host byte order */
	__u32 remote_port;	/* host byte order */
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_key);
	__type(value, __u32);	/* a socket; the user space value is an fd */
} shunt_sm_hash SEC(".maps");

enum sm_stat {
	SM_INSERTED,		/* sockets put into the map */
	SM_INSERT_FAILED,	/* bpf_sock_hash_update() refused one */
	SM_REDIRECTED,		/* messages redirected to the peer */
	SM_REDIRECTED_BYTES,	/* ... and their bytes */
	SM_NO_PEER,		/* messages left to TCP: no peer in the map */
	SM_NO_PEER_BYTES,
	SM_NSTATS
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} shunt_sm_stat SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&shunt_sm_stat, &which);

	if (v)
		*v += n; /* per-CPU: no other writer */
}

static __always_inline void v4_mapped(__u32 *dst, __u32 ip4)
{
	dst[0] = 0;
	dst[1] = 0;
	dst[2] = bpf_htonl(0x0000ffff);
	dst[3] = ip4;
}

/* 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104 (addresses as in struct sm_key) */
static __always_inline int is_loopback(const __u32 *ip)
{
	if (ip[0] != 0 || ip[1] != 0)
		return 0;
	if (ip[2] == bpf_htonl(0x0000ffff))
		return (bpf_ntohl(ip[3]) >> 24) == 127;
	return ip[2] == 0 && ip[3] == bpf_htonl(1);
}

/*
 * The context fields are read one by one, at constant offsets and
 * unconditionally (READ), and only then chosen from: the verifier refuses a
 * load through a context pointer the compiler has offset at run time
 * ("dereference of modified ctx ptr"), which is what clang makes of
 * "if (family == AF_INET) read local_ip4 else read local_ip6[...]" when it
 * merges the two branches into one load from a selected address.
 */
#define READ(x) (*(volatile __u32 *)&(x))
#define FILL_KEY(key, ctx)                                                        \
	({                                                                        \
		__u32 fam_ = READ((ctx)->family);                                 \
		__u32 l4_ = READ((ctx)->local_ip4), r4_ = READ((ctx)->remote_ip4);\
		__u32 l6_[4], r6_[4];                                             \
		l6_[0] = READ((ctx)->local_ip6[0]);                               \
		l6_[1] = READ((ctx)->local_ip6[1]);                               \
		l6_[2] = READ((ctx)->local_ip6[2]);                               \
		l6_[3] = READ((ctx)->local_ip6[3]);                               \
		r6_[0] = READ((ctx)->remote_ip6[0]);                              \
		r6_[1] = READ((ctx)->remote_ip6[1]);                              \
		r6_[2] = READ((ctx)->remote_ip6[2]);                              \
		r6_[3] = READ((ctx)->remote_ip6[3]);                              \
		/* remote_port holds the port in network order in its upper  \
		 * 16 bits on little-endian hosts, its lower 16 on big-endian  \
		 * ones: bpf_ntohl() gives the host-order port on both. */      \
		(key)->local_port = READ((ctx)->local_port);                      \
		(key)->remote_port = bpf_ntohl(READ((ctx)->remote_port));         \
		if (fam_ == AF_INET) {                                            \
			v4_mapped((key)->local_ip, l4_);                          \
			v4_mapped((key)->remote_ip, r4_);                         \
		} else {                                                          \
			__builtin_memcpy((key)->local_ip, l6_, sizeof(l6_));      \
			__builtin_memcpy((key)->remote_ip, r6_, sizeof(r6_));     \
		}                                                                 \
		fam_ == AF_INET || fam_ == AF_INET6;                              \
	})

SEC("sockops")
int shunt_sm_ops(struct bpf_sock_ops *skops)
{
	struct sm_key key = {};

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		break;
	default:
		return 1;
	}
	if (!FILL_KEY(&key, skops))
		return 1;
	if (!is_loopback(key.local_ip) || !is_loopback(key.remote_ip))
		return 1;
	if (bpf_sock_hash_update(skops, &shunt_sm_hash, &key, BPF_ANY) == 0)
		count(SM_INSERTED, 1);
	else
		count(SM_INSERT_FAILED, 1);
	return 1;
}

SEC("sk_msg")
int shunt_sm_msg(struct sk_msg_md *msg)
{
	struct sm_key me = {}, peer;
	__u32 size = msg->size;

	if (!FILL_KEY(&me, msg))
		return SK_PASS;
	peer.local_ip[0] = me.remote_ip[0];
	peer.local_ip[1] = me.remote_ip[1];
	peer.local_ip[2] = me.remote_ip[2];
	peer.local_ip[3] = me.remote_ip[3];
	peer.remote_ip[0] = me.local_ip[0];
	peer.remote_ip[1] = me.local_ip[1];
	peer.remote_ip[2] = me.local_ip[2];
	peer.remote_ip[3] = me.local_ip[3];
	peer.local_port = me.remote_port;
	peer.remote_port = me.local_port;
	/*
	 * On success the helper marks the message for redirection and returns
	 * SK_PASS.  On failure (no such peer) it returns SK_DROP and marks
	 * nothing: returning SK_PASS then sends the message over TCP as if
	 * this program did not exist, where returning the helper's value
	 * would drop it.
	 */
	if (bpf_msg_redirect_hash(msg, &shunt_sm_hash, &peer, BPF_F_INGRESS) == SK_PASS) {
		count(SM_REDIRECTED, 1);
		count(SM_REDIRECTED_BYTES, size);
	} else {
		count(SM_NO_PEER, 1);
		count(SM_NO_PEER_BYTES, size);
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
