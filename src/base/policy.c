/*
 * policy.c - who may connect, and which TCP connections to accelerate.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "internal.h"
#include "sys.h"

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

int shunt__peer_cred(int sock, struct ucred *cr)
{
	unsigned len = sizeof(*cr);
	int rc = sys_getsockopt(sock, SOL_SOCKET, SO_PEERCRED, cr, &len);

	if (rc < 0)
		return rc;
	return shunt__peer_allowed(cr->uid) ? 0 : -EACCES;
}

int shunt__peer_named(uint32_t uid)
{
	const struct shunt_config *c = shunt__config();

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

int shunt__tcp_allowed(const struct shunt_addr *a)
{
	const struct shunt_config *c = shunt__config();

	if (c->bad_file)
		return 0;
	for (unsigned i = 0; i < c->n_rules; i++)
		if (rule_matches(&c->rules[i], a->family, a->a, a->port))
			return c->rules[i].accelerate;
	return 1;
}

int shunt__vm_peer(const struct shunt_addr *a)
{
	const struct shunt_config *c = shunt__config();

	for (unsigned i = 0; i < c->n_vm_nets; i++)
		if (rule_matches(&c->vm_nets[i], a->family, a->a, a->port))
			return 1;
	return c->n_vm_nets == 0;
}
