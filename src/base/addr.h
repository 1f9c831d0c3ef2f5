/*
 * addr.h - TCP endpoint addresses as the library compares, names and prints
 * them.  An IPv4-mapped IPv6 address counts as the IPv4 address it carries,
 * so one connection has one spelling whichever socket family made it.
 */
#ifndef SHUNT_ADDR_H
#define SHUNT_ADDR_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

struct shunt_addr {
	uint8_t family;  /* AF_INET or AF_INET6 */
	uint8_t pad;
	uint16_t port;   /* host order */
	uint8_t a[16];   /* IPv4 in the first 4 bytes, the rest zero */
};

/* From a sockaddr; -EAFNOSUPPORT for anything but IPv4 and IPv6. */
int shunt_addr_from(const struct sockaddr *sa, struct shunt_addr *out);
/* The local (peer = 0) or remote (peer = 1) address of a socket, through
 * the library's own system calls. */
int shunt_addr_of(int fd, int peer, struct shunt_addr *out);
int shunt_addr_eq(const struct shunt_addr *x, const struct shunt_addr *y);
/* A total order on endpoints (family, address, port): which side of a
 * connection is "lower" is the same seen from both ends. */
int shunt_addr_cmp(const struct shunt_addr *x, const struct shunt_addr *y);
int shunt_addr_is_loopback(const struct shunt_addr *x);
int shunt_addr_is_any(const struct shunt_addr *x);
/* "1.2.3.4:80" or "[::1]:80". */
void shunt_addr_fmt(const struct shunt_addr *x, char *buf, size_t n);
/* Hex digits of the address then the port, for names: "7f000001.1f90". */
int shunt_addr_hex(const struct shunt_addr *x, char *buf, size_t n);

#endif /* SHUNT_ADDR_H */
