/*
 * inherit.c - upgraded sockets survive exec.
 *
 * The TCP socket crosses exec by itself (unless close-on-exec), but its
 * shared-memory half lives in this image's memory.  So before exec the shim
 * lets the connection's own fds (segment, doorbells) survive as well, and
 * names them in SHUNT_INHERIT; the new image's shim takes them up again at
 * start-up.  Entries are "fd:memfd:bell0:bell1:side:ringsize", separated by
 * ';'.  The variable comes from our own parent image, but it is still
 * checked like anything read from outside: every fd must be what it claims.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "segment.h"
#include "shim.h"

#include <shunt.h>

#define ENTRY_MAX 96

extern char **environ;

static void set_cloexec(int fd, int on)
{
	int fl = REAL(fcntl)(fd, F_GETFD);

	if (fl >= 0)
		REAL(fcntl)(fd, F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC);
}

static void hidden_cloexec(struct shim_sock *s, int on)
{
	set_cloexec(s->memfd, on);
	set_cloexec(shunt__conn_bell(s->c, 0), on);
	set_cloexec(shunt__conn_bell(s->c, 1), on);
}

struct buf {
	char *p;
	size_t len, cap;
	int oom;
};

static void add_entry(int fd, struct shim_sock *s, void *arg)
{
	struct buf *b = arg;
	int fl = REAL(fcntl)(fd, F_GETFD);

	if (s->kind != SHIM_CONN || fl < 0 || (fl & FD_CLOEXEC) || b->oom)
		return;
	if (b->cap - b->len < ENTRY_MAX) {
		char *p = realloc(b->p, b->cap + 4096);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap += 4096;
	}
	if (fd <= 2)
		log_warn("fd %d, an upgraded socket, goes to a new program as its std%s: "
			 "if it uses stdio there, those bytes bypass shunt "
			 "(README, Limitations)", fd, fd == 0 ? "in" : fd == 1 ? "out" : "err");
	hidden_cloexec(s, 0);
	b->len += (size_t)snprintf(b->p + b->len, b->cap - b->len, "%s%d:%d:%d:%d:%d:%zu",
				   b->len ? ";" : "", fd, s->memfd, shunt__conn_bell(s->c, 0),
				   shunt__conn_bell(s->c, 1), s->side, shunt_ring_size(s->c));
}

static int is_inherit_var(const char *e)
{
	return !strncmp(e, SHIM_INHERIT_ENV "=", sizeof(SHIM_INHERIT_ENV));
}

char **shim_exec_prepare(char *const envp[])
{
	struct buf b = { .p = NULL };

	shim_settle_all(); /* an undecided connection is no upgraded one yet */
	shim_each(add_entry, &b);
	if (!b.len) {
		free(b.p);
		return (char **)envp;
	}
	size_t n = 0;
	while (envp && envp[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	char *var = malloc(b.len + sizeof(SHIM_INHERIT_ENV) + 1);
	if (!env || !var) {
		free(env);
		free(var);
		free(b.p);
		return (char **)envp;
	}
	sprintf(var, "%s=%s", SHIM_INHERIT_ENV, b.p);
	free(b.p);
	size_t j = 0;
	for (size_t i = 0; i < n; i++)
		if (!is_inherit_var(envp[i]))
			env[j++] = envp[i];
	env[j++] = var;
	env[j] = NULL;
	return env;
}

static void restore(int fd, struct shim_sock *s, void *arg)
{
	(void)fd;
	(void)arg;
	if (s->kind == SHIM_CONN)
		hidden_cloexec(s, 1);
}

/* exec failed: we are still this image. */
void shim_exec_done(char **env, char *const envp[])
{
	if (env == (char **)envp)
		return;
	shim_each(restore, NULL);
	for (size_t i = 0; env[i]; i++)
		if (is_inherit_var(env[i]))
			free(env[i]);
	free(env);
}

static int is_socket(int fd, int domain)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) == 0 &&
	       (domain ? v == domain : v == AF_INET || v == AF_INET6);
}

static void adopt(int fd, int memfd, int b0, int b1, int side, uint64_t cap)
{
	struct shunt_seg seg;
	struct shunt_conn *c;

	if (side < 0 || side > 1 || !is_socket(fd, 0) || !is_socket(b0, AF_UNIX) ||
	    !is_socket(b1, AF_UNIX) || shunt_seg_attach(&seg, memfd, cap) < 0) {
		log_warn("cannot take up inherited fd %d: its shunt fds are not right", fd);
		return;
	}
	if (shunt__conn_resume(&c, side, &seg, b0, b1, shunt__config()->spin_us) < 0)
		return;
	struct shim_sock *s = shim_sock_new(SHIM_CONN);
	if (!s) {
		shunt__conn_free(c);
		return;
	}
	s->c = c;
	s->memfd = memfd;
	s->side = side;
	s->shared = 1; /* the image before exec may live on (a fork's parent) */
	c->hangup_eof = 1;
	int fl = REAL(fcntl)(fd, F_GETFL);
	atomic_init(&s->nonblock, fl >= 0 && (fl & O_NONBLOCK));
	hidden_cloexec(s, 1);
	log_info("took up fd %d across exec", fd);
	shim_install(fd, s);
}

void shim_inherit(void)
{
	const char *v = getenv(SHIM_INHERIT_ENV);

	if (!v)
		return;
	char *copy = strdup(v), *save = NULL;
	unsetenv(SHIM_INHERIT_ENV); /* our own children get their own list */
	for (char *e = copy ? strtok_r(copy, ";", &save) : NULL; e;
	     e = strtok_r(NULL, ";", &save)) {
		int fd, memfd, b0, b1, side;
		unsigned long long cap;
		if (sscanf(e, "%d:%d:%d:%d:%d:%llu", &fd, &memfd, &b0, &b1, &side, &cap) == 6)
			adopt(fd, memfd, b0, b1, side, cap);
	}
	free(copy);
}
