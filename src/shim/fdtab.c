/*
 * fdtab.c - which fds are upgraded: a table indexed by fd.
 *
 * Every wrapped call looks its fd up, so the lookup is one or two loads and
 * no lock: the table is made of chunks allocated on first use and never
 * freed, each slot an atomic pointer.  A sock is reference counted: each fd
 * that names it holds one reference (dup adds one), and a call in progress
 * holds one, so that a close in another thread cannot free it under us.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "shim.h"

#include <shunt.h>

#define CHUNK_BITS 12
#define CHUNK (1 << CHUNK_BITS)
#define NCHUNKS 256 /* fds below 2^20, the usual hard limit */

static _Atomic(_Atomic(struct shim_sock *) *) chunks[NCHUNKS];
static _Atomic int live_conns;

int shim_live_conns(void)
{
	return atomic_load_explicit(&live_conns, memory_order_relaxed);
}

static _Atomic(struct shim_sock *) *slot(int fd, int create)
{
	if (fd < 0 || fd >= CHUNK * NCHUNKS)
		return NULL;
	_Atomic(struct shim_sock *) *c = atomic_load_explicit(&chunks[fd >> CHUNK_BITS],
								memory_order_acquire);
	if (!c && create) {
		_Atomic(struct shim_sock *) *fresh = calloc(CHUNK, sizeof(*fresh));
		if (!fresh)
			return NULL;
		if (atomic_compare_exchange_strong(&chunks[fd >> CHUNK_BITS], &c, fresh))
			c = fresh;
		else
			free(fresh); /* another thread won; c is its chunk */
	}
	return c ? &c[fd & (CHUNK - 1)] : NULL;
}

int shim_has(int fd)
{
	_Atomic(struct shim_sock *) *p = slot(fd, 0);

	return p && atomic_load_explicit(p, memory_order_relaxed) != NULL;
}

struct shim_sock *shim_get(int fd)
{
	_Atomic(struct shim_sock *) *p = slot(fd, 0);
	struct shim_sock *s = p ? atomic_load_explicit(p, memory_order_acquire) : NULL;

	if (s)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	if (s && atomic_load_explicit(&s->pending, memory_order_acquire) != SHIM_SETTLED)
		s = shim_settle(fd, s);
	return s;
}

/* fd's entry goes if it is still s (a declined connection). */
void shim_unset(int fd, struct shim_sock *s)
{
	_Atomic(struct shim_sock *) *p = slot(fd, 0);

	if (p && atomic_compare_exchange_strong(p, &s, NULL))
		shim_put(s);
}

void shim_close_conn(struct shim_sock *s)
{
	if (s->shared)
		shunt__conn_free(s->c); /* the peer learns from the hang-up */
	else
		shunt__conn_close_last(s->c);
	if (s->memfd >= 0)
		REAL(close)(s->memfd);
}

static void sock_free(struct shim_sock *s)
{
	if (s->kind == SHIM_CONN) {
		atomic_fetch_sub_explicit(&live_conns, 1, memory_order_relaxed);
		if (atomic_load(&s->pending) != SHIM_SETTLED)
			shim_pending_free(s);
		else if (s->link) /* parked for the next connection, or freed */
			shim_link_release(s->link, s->slot, s->c, s->memfd, !s->shared);
		else
			shim_close_conn(s);
		pthread_mutex_destroy(&s->rx_mu);
		pthread_mutex_destroy(&s->tx_mu);
	} else {
		shim_listener_free(s);
	}
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void shim_put(struct shim_sock *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		sock_free(s);
}

struct shim_sock *shim_sock_new(int kind)
{
	struct shim_sock *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	atomic_init(&s->refs, 1);
	s->kind = kind;
	if (kind == SHIM_CONN)
		atomic_fetch_add_explicit(&live_conns, 1, memory_order_relaxed);
	s->memfd = -1;
	for (int i = 0; i < SHIM_MAX_KEYS; i++)
		s->rv[i] = -1;
	s->queue[0] = s->queue[1] = -1;
	pthread_mutex_init(&s->rx_mu, NULL);
	pthread_mutex_init(&s->tx_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	return s;
}

void shim_install(int fd, struct shim_sock *s)
{
	_Atomic(struct shim_sock *) *p = slot(fd, 1);

	if (!p) { /* no memory for the table: the fd stays plain */
		shim_put(s);
		return;
	}
	shim_put(atomic_exchange_explicit(p, s, memory_order_acq_rel));
}

void shim_forget(int fd)
{
	_Atomic(struct shim_sock *) *p = slot(fd, 0);

	if (p)
		shim_put(atomic_exchange_explicit(p, NULL, memory_order_acq_rel));
}

void shim_dup(int oldfd, int newfd)
{
	struct shim_sock *s = shim_get(oldfd);

	if (s)
		shim_install(newfd, s);
	else
		shim_forget(newfd);
}

void shim_each(void (*fn)(int fd, struct shim_sock *s, void *arg), void *arg)
{
	for (int c = 0; c < NCHUNKS; c++) {
		_Atomic(struct shim_sock *) *ch = atomic_load(&chunks[c]);
		if (!ch)
			continue;
		for (int i = 0; i < CHUNK; i++) {
			struct shim_sock *s = atomic_load(&ch[i]);
			if (s)
				fn(c * CHUNK + i, s, arg);
		}
	}
}

static void mark(int fd, struct shim_sock *s, void *arg)
{
	(void)fd;
	s->shared = 1;
	if (arg && s->kind == SHIM_LISTENER)
		shim_listener_forked(s);
}

void shim_mark_shared(void)
{
	shim_each(mark, NULL);
}

static void settle(int fd, struct shim_sock *s, void *arg)
{
	(void)arg;
	if (atomic_load(&s->pending) == SHIM_PENDING)
		shim_put(shim_get(fd));
}

void shim_settle_all(void)
{
	shim_each(settle, NULL);
}

void shim_forked_child(void)
{
	shim_link_forget_client();
	shim_each(mark, (void *)1);
}
