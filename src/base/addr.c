/*
 * addr.c - endpoint addresses (see addr.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "addr.h"
#include "sys.h"

int shunt_addr_from(const struct sockaddr *sa, struct shunt_addr *out)
{
	static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };

	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		memcpy(out->a, &in->sin_addr, 4);
		out->port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -EAFNOSUPPORT;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
	int v4 = memcmp(in6->sin6_addr.s6_addr, mapped, 12) == 0;
	out->family = v4 ? AF_INET : AF_INET6;
	memcpy(out->a, in6->sin6_addr.s6_addr + (v4 ? 12 : 0), v4 ? 4 : 16);
	out->port = ntohs(in6->sin6_port);
	return 0;
}

int shunt_addr_of(int fd, int peer, struct shunt_addr *out)
{
	struct sockaddr_storage ss;
	unsigned len = sizeof(ss);
	int rc = peer ? sys_getpeername(fd, (struct sockaddr *)&ss, &len)
		      : sys_getsockname(fd, (struct sockaddr *)&ss, &len);

	return rc < 0 ? rc : shunt_addr_from((struct sockaddr *)&ss, out);
}

int shunt_addr_eq(const struct shunt_addr *x, const struct shunt_addr *y)
{
	return shunt_addr_cmp(x, y) == 0;
}

int shunt_addr_cmp(const struct shunt_addr *x, const struct shunt_addr *y)
{
	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	int c = memcmp(x->a, y->a, 16);
	if (c)
		return c < 0 ? -1 : 1;
	return x->port == y->port ? 0 : x->port < y->port ? -1 : 1;
}

int shunt_addr_is_loopback(const struct shunt_addr *x)
{
	static const uint8_t lo6[16] = { [15] = 1 };

	return x->family == AF_INET ? x->a[0] == 127 : !memcmp(x->a, lo6, 16);
}

int shunt_addr_is_any(const struct shunt_addr *x)
{
	static const uint8_t zero[16];

	return !memcmp(x->a, zero, 16);
}

void shunt_addr_fmt(const struct shunt_addr *x, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	inet_ntop(x->family, x->a, ip, sizeof(ip));
	snprintf(buf, n, x->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)x->port);
}

int shunt_addr_hex(const struct shunt_addr *x, char *buf, size_t n)
{
	int len = x->family == AF_INET ? 4 : 16, k = 0;

	for (int i = 0; i < len && (size_t)k + 3 < n; i++)
		k += snprintf(buf + k, n - (size_t)k, "%02x", x->a[i]);
	int r = snprintf(buf + k, n - (size_t)k, ".%04x", (unsigned)x->port);
	return r > 0 && (size_t)(k + r) < n ? 0 : -ENAMETOOLONG;
}
