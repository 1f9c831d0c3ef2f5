/*
 * link.c - reusing segments between the same two processes.
 *
 * A new segment costs more than TCP's whole connection set-up: a memfd,
 * seals, four mmaps, two socket pairs and an munmap whose TLB shootdown
 * interrupts the other core.  Short connections between the same two
 * processes therefore take over segments that earlier ones closed
 * (docs/design.md, "Links"):
 *
 *  - A client's first offer to a listener asks that its rendezvous stream
 *    stay open as a link; a server that can keep it says so in the segment.
 *    Later offers to that listener go over the link, each naming a slot.
 *  - When both ends of a linked connection have closed, each keeps the
 *    segment and doorbells parked in its slot, and says so in the segment
 *    with the slot's generation.  The next connection over the link reuses
 *    a slot both sides have parked: one message and no mapping at all.
 *
 * The proof does not change: every offer, new or reused, passes the
 * client's TCP socket, and the server matches it at accept().  A slot is
 * only ever shared by the two processes of its link, so reuse shows no
 * byte to a third process.  After fork() the child drops every link: the
 * parked segments stay between the original two processes.
 */
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "rendezvous.h"
#include "shim.h"

#include <shunt.h>

#define CLIENT_LINKS 16  /* listeners a client keeps links to */
/* Parked segments a process keeps, in all: each holds three fds and the
 * pages its connection touched. */
#define PARK_MAX 64
#define PARK_BYTES (8u << 20)
#define NOLINK_MAX 8     /* listeners that refused to link, remembered */
#define NOLINK_NS 5000000000ll /* for this long */

struct link_slot {
	int state;             /* SLOT_* */
	uint32_t gen;          /* of the connection in it now or last */
	struct shunt_conn *c;  /* while parked: the closed end */
	int memfd;             /* while parked */
};

enum { SLOT_FREE, SLOT_LIVE, SLOT_PARKED };

struct shim_link {
	_Atomic int refs;      /* its table or listener, and each live slot */
	pthread_mutex_t mu;    /* guards everything below */
	int fd;                /* the stream; -1 once dropped */
	int confirmed;         /* client: the server keeps the link */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct link_slot slot[SHIM_LINK_SLOTS];
};

static _Atomic int parked_n;
static _Atomic uint64_t parked_bytes;

static uint64_t seg_bytes(const struct shunt_conn *c)
{
	return 2 * (uint64_t)shunt_ring_size(c);
}

/* Room to park c?  Counts it if so. */
static int park_take(const struct shunt_conn *c)
{
	if (atomic_fetch_add(&parked_n, 1) >= PARK_MAX ||
	    atomic_fetch_add(&parked_bytes, seg_bytes(c)) + seg_bytes(c) > PARK_BYTES) {
		atomic_fetch_sub(&parked_n, 1);
		atomic_fetch_sub(&parked_bytes, seg_bytes(c));
		return 0;
	}
	return 1;
}

static void park_give(const struct shunt_conn *c)
{
	atomic_fetch_sub(&parked_n, 1);
	atomic_fetch_sub(&parked_bytes, seg_bytes(c));
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- A link and its slots ------------------------------------------------ */

static struct shim_link *link_new(int fd, const char *path)
{
	struct shim_link *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	atomic_init(&k->refs, 1);
	pthread_mutex_init(&k->mu, NULL);
	k->fd = fd;
	snprintf(k->path, sizeof(k->path), "%s", path ? path : "");
	return k;
}

static void link_get(struct shim_link *k)
{
	atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
}

void shim_link_put(struct shim_link *k)
{
	if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
		pthread_mutex_destroy(&k->mu);
		free(k);
	}
}

static void slot_clear(struct link_slot *sl)
{
	if (sl->state == SLOT_PARKED) {
		park_give(sl->c);
		shunt__conn_free(sl->c);
		if (sl->memfd >= 0)
			REAL(close)(sl->memfd);
	}
	*sl = (struct link_slot){ .state = SLOT_FREE, .memfd = -1 };
}

/* Close the stream and free the parked slots; live ones go when they
 * close.  Under k->mu. */
static void link_drop_locked(struct shim_link *k)
{
	if (k->fd >= 0)
		REAL(close)(k->fd);
	k->fd = -1;
	for (int i = 0; i < SHIM_LINK_SLOTS; i++)
		if (k->slot[i].state == SLOT_PARKED)
			slot_clear(&k->slot[i]);
}

void shim_link_drop(struct shim_link *k)
{
	pthread_mutex_lock(&k->mu);
	link_drop_locked(k);
	pthread_mutex_unlock(&k->mu);
	shim_link_put(k);
}

/* A parked slot whose peer has parked it too, or -1.  *waiting counts
 * those parked here that the peer has not let go of yet. */
static int ready_slot(struct shim_link *k, int *waiting)
{
	*waiting = 0;
	for (int i = 0; i < SHIM_LINK_SLOTS; i++) {
		struct link_slot *sl = &k->slot[i];
		if (sl->state != SLOT_PARKED)
			continue;
		if (shunt__conn_peer_parked(sl->c) == sl->gen)
			return i;
		(*waiting)++;
	}
	return -1;
}

/*
 * A slot to reuse, waiting a little when the server is behind: a client
 * that opens and closes connections faster than the server accepts them
 * would otherwise make a new segment each time, which slows the server
 * further.  The wait paces it as TCP's full accept queue would.  Under k->mu.
 */
#define PACE_SLOTS 4
#define PACE_NS 2000000

static int ready_slot_paced(struct shim_link *k)
{
	int64_t end = 0;
	int waiting, i;

	while ((i = ready_slot(k, &waiting)) < 0 && waiting >= PACE_SLOTS) {
		int64_t now = mono_ns();
		if (!end)
			end = now + PACE_NS;
		else if (now > end)
			break;
		pthread_mutex_unlock(&k->mu);
		sched_yield();
		pthread_mutex_lock(&k->mu);
	}
	return i;
}

/* A free slot; failing that, a parked one whose peer hung up (it closed a
 * copy another process held, so it will never park it), freed.  One poll
 * looks at them all. */
static int free_slot(struct shim_link *k)
{
	struct pollfd p[SHIM_LINK_SLOTS];
	int n = 0, got = -1;

	for (int i = 0; i < SHIM_LINK_SLOTS; i++) {
		struct link_slot *sl = &k->slot[i];
		if (sl->state == SLOT_FREE)
			return i;
		p[i] = (struct pollfd){ .fd = sl->state == SLOT_PARKED ?
						      shunt__conn_bell(sl->c, 1) : -1 };
		n += p[i].fd >= 0;
	}
	if (n == 0 || REAL(poll)(p, SHIM_LINK_SLOTS, 0) <= 0)
		return -1;
	for (int i = 0; i < SHIM_LINK_SLOTS; i++) {
		if (p[i].revents & (POLLHUP | POLLERR)) {
			slot_clear(&k->slot[i]);
			got = got < 0 ? i : got;
		}
	}
	return got;
}

void shim_link_release(struct shim_link *k, uint32_t slot, struct shunt_conn *c,
		       int memfd, int keep)
{
	int parked = 0;

	if (keep)
		shunt__conn_close_keep(c);
	pthread_mutex_lock(&k->mu);
	struct link_slot *sl = &k->slot[slot];
	if (keep && k->fd >= 0 && sl->state == SLOT_LIVE && park_take(c)) {
		sl->state = SLOT_PARKED;
		sl->c = c;
		sl->memfd = memfd;
		shunt__conn_set_parked(c, sl->gen);
		parked = 1;
	} else if (sl->state == SLOT_LIVE) {
		sl->state = SLOT_FREE;
	}
	pthread_mutex_unlock(&k->mu);
	if (!parked) {
		shunt__conn_free(c);
		if (memfd >= 0)
			REAL(close)(memfd);
	}
	shim_link_put(k);
}

/* --- The client's links ---------------------------------------------------- */

static pthread_mutex_t clients_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shim_link *clients[CLIENT_LINKS];
static struct {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int64_t until;
} nolink[NOLINK_MAX];
static unsigned nolink_next;

static int refused(const char *path, int64_t now)
{
	for (int i = 0; i < NOLINK_MAX; i++)
		if (nolink[i].until > now && !strcmp(nolink[i].path, path))
			return 1;
	return 0;
}

/* Offer to path the classic way for a while.  Under clients_mu. */
static void refuse(const char *path)
{
	unsigned j = nolink_next++ % NOLINK_MAX;

	snprintf(nolink[j].path, sizeof(nolink[j].path), "%s", path);
	nolink[j].until = mono_ns() + NOLINK_NS;
}

static struct shim_link *client_find(const char *path)
{
	for (int i = 0; i < CLIENT_LINKS; i++)
		if (clients[i] && !strcmp(clients[i]->path, path))
			return clients[i];
	return NULL;
}

static void client_remove(struct shim_link *k)
{
	for (int i = 0; i < CLIENT_LINKS; i++)
		if (clients[i] == k)
			clients[i] = NULL;
	shim_link_drop(k);
}

/* Reuse a slot both sides parked, or offer a new one, over link k. */
static int offer_on(struct shim_link *k, uint64_t cap, int proof, struct shim_link_use *u)
{
	int rc = -ENOSPC, i;

	pthread_mutex_lock(&k->mu);
	if (k->fd < 0) {
		rc = -ECONNRESET;
	} else if ((i = ready_slot_paced(k)) >= 0) {
		struct link_slot *sl = &k->slot[i];
		uint32_t gen = sl->gen + 1 ? sl->gen + 1 : 1;
		park_give(sl->c);
		sl->state = SLOT_LIVE; /* from here, slot_clear only forgets it */
		rc = shunt__conn_renew(&sl->c, 1);
		if (rc == 0)
			rc = shunt__link_reoffer(k->fd, proof, (uint32_t)i, gen);
		if (rc == 0) {
			*u = (struct shim_link_use){ sl->c, sl->memfd, k, (uint32_t)i, 0 };
			*sl = (struct link_slot){ .state = SLOT_LIVE, .gen = gen, .memfd = -1 };
		} else { /* renew failed and freed it, or the link broke */
			shunt__conn_free(sl->c);
			if (sl->memfd >= 0)
				REAL(close)(sl->memfd);
			*sl = (struct link_slot){ .state = SLOT_FREE, .memfd = -1 };
		}
	} else if ((i = free_slot(k)) >= 0) {
		struct shunt_conn *c = NULL;
		int memfd = -1;
		rc = shunt__link_offer(k->fd, cap, proof, (uint32_t)i, &c, &memfd);
		if (rc == 0) {
			*u = (struct shim_link_use){ c, memfd, k, (uint32_t)i, 0 };
			k->slot[i] = (struct link_slot){ .state = SLOT_LIVE, .gen = 1, .memfd = -1 };
		}
	}
	if (rc == 0) {
		link_get(k);
	} else if (rc != -ENOSPC && rc != -EAGAIN && rc != -ENOMEM) {
		log_debug("link to %s broke: %s", k->path, strerror(-rc));
		link_drop_locked(k); /* nothing more goes over it */
	}
	pthread_mutex_unlock(&k->mu);
	return rc;
}

/* Dial path and make it a link with a first offer; the server confirms it
 * in the segment (shim_link_decided). */
static int probe(const char *path, uint64_t cap, int proof, struct shim_link_use *u)
{
	int free_i = -1;

	for (int i = CLIENT_LINKS - 1; i >= 0; i--)
		if (!clients[i])
			free_i = i;
	if (free_i < 0)
		return -ENOSPC;
	int s = shunt__link_dial(path);
	if (s < 0)
		return s;
	struct shim_link *k = link_new(s, path);
	if (!k) {
		REAL(close)(s);
		return -ENOMEM;
	}
	int rc = shunt__link_offer(s, cap, proof, 0, &u->c, &u->memfd);
	if (rc < 0) {
		shim_link_drop(k);
		return rc;
	}
	k->slot[0] = (struct link_slot){ .state = SLOT_LIVE, .gen = 1, .memfd = -1 };
	link_get(k);
	u->link = k;
	u->slot = 0;
	u->probing = 1;
	clients[free_i] = k;
	return 0;
}

/* Is a probing link kept by now?  1 yes, 0 not known yet, -1 not kept
 * (removed: the next connection probes again).  Under clients_mu. */
static int probed(struct shim_link *k)
{
	int st = 0;

	pthread_mutex_lock(&k->mu);
	struct link_slot *sl = &k->slot[0];
	if (sl->state == SLOT_PARKED && shunt__conn_linked(sl->c))
		st = 1;
	else if (sl->state != SLOT_LIVE) /* the server dropped the stream? */
		st = REAL(poll)(&(struct pollfd){ .fd = k->fd }, 1, 0) != 0 ? -1 : 0;
	int hung_up = st < 0;
	if (st == 0 && sl->state == SLOT_FREE)
		st = -1;
	pthread_mutex_unlock(&k->mu);
	if (hung_up) /* the server closed the stream: it keeps no links */
		refuse(k->path);
	log_debug("link to %s: %s", k->path, st > 0 ? "kept" : st < 0 ? "not kept" : "not known yet");
	if (st > 0)
		k->confirmed = 1;
	else if (st < 0)
		client_remove(k);
	return st;
}

int shim_link_offer(char (*paths)[SHIM_PATH_MAX], int n, uint64_t cap, int proof,
		    struct shim_link_use *u)
{
	int64_t now = mono_ns();
	int rc = -ENOENT;

	*u = (struct shim_link_use){ .memfd = -1 };
	pthread_mutex_lock(&clients_mu);
	for (int i = 0; i < n; i++) {
		struct shim_link *k = client_find(paths[i]);
		if (!k)
			continue;
		if (!k->confirmed && probed(k) <= 0) { /* not known yet */
			rc = -EBUSY;
			break;
		}
		rc = offer_on(k, cap, proof, u);
		if (rc == -ECONNRESET)
			client_remove(k);
		break;
	}
	for (int i = 0; i < n && rc == -ENOENT; i++) {
		if (refused(paths[i], now)) {
			rc = -EBUSY; /* the classic offer, without a link */
			break;
		}
		rc = probe(paths[i], cap, proof, u);
		if (rc == -ENOSPC || rc == -ENOMEM)
			rc = -EBUSY;
	}
	pthread_mutex_unlock(&clients_mu);
	return rc;
}

void shim_link_decided(struct shim_link_use *u, int accepted)
{
	struct shim_link *k = u->link;

	if (!k || !u->probing)
		return;
	pthread_mutex_lock(&clients_mu);
	if (shunt__conn_linked(u->c)) {
		k->confirmed = 1;
	} else if (accepted) {
		/* Not kept (a server forked into workers, say): offer the
		 * classic way for a while, and keep the connection as it is. */
		refuse(k->path);
		client_remove(k);
	}
	/* Declined (closed before any use, say): the server may still keep
	 * the link when it gets to the offer; probed() looks again. */
	pthread_mutex_unlock(&clients_mu);
}

/* --- The server's links ------------------------------------------------------ */

struct shim_link *shim_link_adopt(int fd)
{
	return link_new(fd, NULL);
}

int shim_link_fd(struct shim_link *k)
{
	return k->fd;
}

int shim_link_claim(struct shim_link *k, struct shunt_offer *o)
{
	int rc = 0;

	if (o->slot >= SHIM_LINK_SLOTS) {
		log_warn("link offer for slot %u refused", (unsigned)o->slot);
		return -EPROTO;
	}
	pthread_mutex_lock(&k->mu);
	struct link_slot *sl = &k->slot[o->slot];
	if (!o->c) { /* reuse: the slot must be parked here */
		if (sl->state != SLOT_PARKED) {
			rc = -EPROTO;
		} else {
			park_give(sl->c);
			rc = shunt__conn_renew(&sl->c, 0);
			if (rc < 0 && sl->memfd >= 0) /* renew freed the end */
				REAL(close)(sl->memfd);
			o->c = sl->c;
			o->memfd = rc == 0 ? sl->memfd : -1;
			*sl = (struct link_slot){ .state = rc == 0 ? SLOT_LIVE : SLOT_FREE,
						  .memfd = -1 };
		}
	} else if (sl->state == SLOT_LIVE) {
		rc = -EPROTO; /* the client gave a slot in use a new segment */
	} else {
		slot_clear(sl);
		sl->state = SLOT_LIVE;
	}
	if (rc == 0) {
		sl->gen = o->gen;
		link_get(k);
	} else {
		log_debug("link offer for slot %u refused: %s", (unsigned)o->slot,
			  strerror(-rc));
	}
	pthread_mutex_unlock(&k->mu);
	return rc;
}

void shim_link_unclaim(struct shim_link *k, uint32_t slot)
{
	pthread_mutex_lock(&k->mu);
	if (k->slot[slot].state == SLOT_LIVE)
		k->slot[slot].state = SLOT_FREE;
	pthread_mutex_unlock(&k->mu);
	shim_link_put(k);
}

/* --- fork() ------------------------------------------------------------------ */

/* In the child: the links belong to the parent.  Only this thread runs, so
 * the locks are made anew rather than taken. */
void shim_link_forget_client(void)
{
	pthread_mutex_init(&clients_mu, NULL);
	for (int i = 0; i < CLIENT_LINKS; i++) {
		struct shim_link *k = clients[i];
		if (!k)
			continue;
		pthread_mutex_init(&k->mu, NULL);
		clients[i] = NULL;
		shim_link_drop(k);
	}
}

void shunt__shim_drop_links(void)
{
	pthread_mutex_lock(&clients_mu);
	for (int i = 0; i < CLIENT_LINKS; i++)
		if (clients[i])
			client_remove(clients[i]);
	pthread_mutex_unlock(&clients_mu);
}

void shim_link_forget(struct shim_link *k)
{
	pthread_mutex_init(&k->mu, NULL);
	shim_link_drop(k);
}
