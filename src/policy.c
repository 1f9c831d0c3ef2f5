/*
 * policy.c - who may connect, and which TCP connections to accelerate.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

int shunt__peer_allowed(uint32_t uid)
{
	const struct shunt_config *c = shunt__config();

	if (uid == (uint32_t)geteuid())
		return 1;
	for (unsigned i = 0; i < c->n_users; i++)
		if (c->users[i] == uid)
			return 1;
	return 0;
}

/* The first `bits` bits of a and b are equal. */
static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, bytes))
		return 0;
	return !rest || ((a[bytes] ^ b[bytes]) & (0xffu << (8 - rest)) & 0xffu) == 0;
}

/* Family, address bytes and port of sa; an IPv4-mapped IPv6 address counts
 * as the IPv4 address it carries, so one rule covers both spellings. */
static int unpack(const struct sockaddr *sa, int *family, const uint8_t **addr,
		  uint16_t *port)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		*family = AF_INET;
		*addr = (const uint8_t *)&in->sin_addr;
		*port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;
		int v4 = memcmp(a, mapped, sizeof(mapped)) == 0;
		*family = v4 ? AF_INET : AF_INET6;
		*addr = v4 ? a + 12 : a;
		*port = ntohs(in6->sin6_port);
		return 0;
	}
	return -1;
}

static int rule_matches(const struct shunt_rule *r, int family, const uint8_t *addr,
			uint16_t port)
{
	switch (r->kind) {
	case SHUNT_RULE_ALL:
		return 1;
	case SHUNT_RULE_PORT:
		return port >= r->port_lo && port <= r->port_hi;
	case SHUNT_RULE_ADDR:
		return r->family == family && prefix_eq(r->addr, addr, r->prefix);
	}
	return 0;
}

int shunt__tcp_allowed(const struct sockaddr *sa)
{
	const struct shunt_config *c = shunt__config();
	const uint8_t *addr;
	uint16_t port;
	int family;

	if (c->bad_file || unpack(sa, &family, &addr, &port) < 0)
		return 0;
	for (unsigned i = 0; i < c->n_rules; i++)
		if (rule_matches(&c->rules[i], family, addr, port))
			return c->rules[i].accelerate;
	return 1;
}
