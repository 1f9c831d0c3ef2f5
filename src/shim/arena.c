/*
 * arena.c - the state a family of processes shares about its TCP sockets.
 *
 * After fork() both processes hold every socket; after exec() the new image
 * holds what the old one did.  Whether a socket may move (nobody else holds
 * it), whether it moved, and where its rings stand must be one truth for all
 * of them, or two processes using one connection would each keep their own
 * positions.  So each tracked socket has a slot in a memfd the family maps
 * shared (arena.h).  A slot's locks are process-shared and robust: a holder
 * killed while it held one leaves it to the next taker, never stuck.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "arena.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"

_Static_assert(sizeof(struct tslot) <= ARENA_SLOT_SIZE, "a slot fits");
_Static_assert(sizeof(struct arena_hdr) <= ARENA_SLOTS_OFF, "the header fits");
_Static_assert(WHY_N == ARENA_WHY, "reasons");
_Static_assert(offsetof(struct tslot, calls) == offsetof(struct arena_slot_view, calls),
	       "shunt stat's view of a slot");

const char *const shim_why_names[WHY_N] = {
	"short", "nopeer", "policy", "shared", "stdio", "options", "refused", "error",
};

static struct arena_hdr *arena;
static int arena_fd = -1;
static struct arena_proc *me;
static pthread_mutex_t arena_mu = PTHREAD_MUTEX_INITIALIZER;

static struct tslot *slot_of(int i)
{
	return (struct tslot *)((uint8_t *)arena + ARENA_SLOTS_OFF + (size_t)i * ARENA_SLOT_SIZE);
}

int shim_slot_index(const struct tslot *s)
{
	return (int)(((const uint8_t *)s - (const uint8_t *)arena - ARENA_SLOTS_OFF) /
		     ARENA_SLOT_SIZE);
}

int shim_arena_fd(void)
{
	return arena_fd;
}

/* A holder: a pid; -1, more than fit (held for good); or below -1, a child
 * that -holder is forking, which lives as long as its parent does until
 * it writes in its own pid (shim_slot_fork). */
static int alive(int pid)
{
	if (pid < -1)
		pid = -pid;
	return pid == -1 || (pid > 0 && sys_kill(pid, 0) != -ESRCH);
}

/* Take a line whose pid is `want` (0: free; else a dead process's). */
static struct arena_proc *proc_take(int pid, int dead)
{
	for (int i = 0; i < ARENA_PROCS; i++) {
		struct arena_proc *p = &arena->procs[i];
		int32_t old = atomic_load(&p->pid);
		if ((dead ? old > 0 && !alive(old) : old == 0) &&
		    atomic_compare_exchange_strong(&p->pid, &old, pid))
			return p;
	}
	return NULL;
}

/* This process's line in the table: its own after exec, else a new one. */
static void proc_enter(void)
{
	int pid = shim_pid();

	for (int i = 0; i < ARENA_PROCS; i++) {
		if (atomic_load(&arena->procs[i].pid) == pid) {
			me = &arena->procs[i];
			return;
		}
	}
	me = proc_take(pid, 0);
	if (!me)
		me = proc_take(pid, 1);
	if (!me)
		return;
	atomic_store(&me->seen, 0);
	atomic_store(&me->moved, 0);
	for (int i = 0; i < ARENA_WHY; i++)
		atomic_store(&me->why[i], 0);
	char comm[16] = "";
	prctl(PR_GET_NAME, comm, 0, 0, 0);
	memcpy(me->comm, comm, sizeof(comm));
}

static int arena_map(int fd)
{
	long p = sys_mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if ((unsigned long)p > -4096ul)
		return (int)p;
	arena = (struct arena_hdr *)p;
	arena_fd = fd;
	return 0;
}

static int arena_create(void)
{
	int fd = shunt__hide_fd(sys_memfd_create("shunt-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING));

	if (fd < 0)
		return fd;
	int rc = sys_ftruncate(fd, (off_t)ARENA_SIZE);
	if (rc == 0)
		rc = sys_fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	if (rc == 0)
		rc = arena_map(fd);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	arena->magic = ARENA_MAGIC;
	arena->version = ARENA_VERSION;
	arena->nslots = ARENA_SLOTS;
	arena->slot_size = ARENA_SLOT_SIZE;
	arena->nprocs = ARENA_PROCS;
	arena->slots_off = ARENA_SLOTS_OFF;
	shunt__own_add(&arena_fd);
	proc_enter();
	return 0;
}

/* An inherited fd is the family's arena only if it is a sealed memfd of
 * the right size whose header agrees: the program could have put anything
 * at that number before exec. */
int shim_arena_adopt(int fd)
{
	struct stat st;
	int seals = sys_fcntl(fd, F_GET_SEALS, 0);

	if (seals < 0 || !(seals & F_SEAL_SHRINK) || sys_fstat(fd, &st) < 0 ||
	    !S_ISREG(st.st_mode) || (uint64_t)st.st_size != ARENA_SIZE)
		return -EPROTO;
	pthread_mutex_lock(&arena_mu);
	int rc = arena ? -EEXIST : arena_map(fd);
	if (rc == 0 && (arena->magic != ARENA_MAGIC || arena->version != ARENA_VERSION)) {
		sys_munmap(arena, ARENA_SIZE);
		arena = NULL;
		arena_fd = -1;
		rc = -EPROTO;
	}
	if (rc == 0) {
		arena_fd = shunt__hide_fd(fd);
		sys_fcntl(arena_fd, F_SETFD, FD_CLOEXEC);
		shunt__own_add(&arena_fd);
		proc_enter();
	}
	pthread_mutex_unlock(&arena_mu);
	return rc;
}

static int arena_get(void)
{
	if (__builtin_expect(arena != NULL, 1))
		return 0;
	pthread_mutex_lock(&arena_mu);
	int rc = arena ? 0 : arena_create();
	pthread_mutex_unlock(&arena_mu);
	return rc;
}

static void init_locks(struct tslot *s)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&s->tx_mu, &a);
	pthread_mutex_init(&s->rx_mu, &a);
	pthread_mutex_init(&s->opt_mu, &a);
	pthread_mutexattr_destroy(&a);
}

void shim_lock(pthread_mutex_t *mu)
{
	/* A holder died with it: its half-done step is the same as a process
	 * killed in the middle of a write(), and the rings' indices stay
	 * consistent (each is published after its bytes). */
	if (pthread_mutex_lock(mu) == EOWNERDEAD)
		pthread_mutex_consistent(mu);
}

void shim_unlock(pthread_mutex_t *mu)
{
	pthread_mutex_unlock(mu);
}

struct tslot *shim_slot_new(uint64_t ino, uint32_t *gen)
{
	if (arena_get() < 0)
		return NULL;
	uint32_t start = atomic_load_explicit(&arena->hint, memory_order_relaxed);
	for (uint32_t k = 0; k < ARENA_SLOTS; k++) {
		uint32_t i = (start + k) % ARENA_SLOTS;
		struct tslot *s = slot_of((int)i);
		uint32_t free_ = SLOT_FREE;
		if (atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_FREE ||
		    !atomic_compare_exchange_strong(&s->state, &free_, SLOT_PLAIN))
			continue;
		atomic_store_explicit(&arena->hint, i + 1, memory_order_relaxed);
		/* Ours alone now: clear all but the generation. */
		uint32_t g = atomic_load(&s->gen);
		memset((uint8_t *)s + offsetof(struct tslot, flags), 0,
		       sizeof(*s) - offsetof(struct tslot, flags));
		init_locks(s);
		s->ino = ino;
		atomic_store(&s->holders[0], shim_pid());
		*gen = g;
		shim_count_seen();
		return s;
	}
	return NULL;
}

struct tslot *shim_slot_at(int index, uint32_t gen)
{
	if (!arena || index < 0 || index >= ARENA_SLOTS)
		return NULL;
	struct tslot *s = slot_of(index);
	if (atomic_load(&s->gen) != gen || atomic_load(&s->state) == SLOT_FREE)
		return NULL;
	return s;
}

void shim_slot_hold(struct tslot *s, int pid)
{
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < SLOT_HOLDERS; i++) {
			int32_t h = atomic_load(&s->holders[i]);
			if (h == pid || h == -1)
				return;
			/* Second pass: take a dead holder's place. */
			if (pass == 1 && h != 0 && !alive(h) &&
			    atomic_compare_exchange_strong(&s->holders[i], &h, pid))
				return;
			int32_t zero = 0;
			if (pass == 0 && h == 0 &&
			    atomic_compare_exchange_strong(&s->holders[i], &zero, pid))
				return;
		}
	}
	/* More holders than fit: the slot counts as shared for good. */
	atomic_store(&s->holders[0], -1);
}

/*
 * fork: the child holds every socket of its parent, but it writes itself
 * in only when it runs, and the parent may have gone on and closed its
 * copy by then (a pre-forking server closes the accepted socket as soon as
 * fork() returns): that close would find nobody else, free the slot, and
 * the next socket would take it while the child still uses it.  So before
 * the fork the parent writes a stand-in for the child (-parent), which the
 * child turns into its own pid (or, if the fork failed, the parent takes
 * out again).  A child that closes the socket at once then takes out what
 * it wrote, and nobody writes it in after.
 */
void shim_slot_fork(struct tslot *s, int parent, int child, int how)
{
	int32_t stand_in = -parent;

	if (how == SHIM_FORK_CHILD || how == SHIM_FORK_FAILED) {
		int32_t to = how == SHIM_FORK_CHILD ? child : 0;
		for (int i = 0; i < SLOT_HOLDERS; i++) {
			int32_t h = stand_in;
			if (atomic_compare_exchange_strong(&s->holders[i], &h, to))
				return;
		}
		if (how == SHIM_FORK_CHILD)
			shim_slot_hold(s, child);
		return;
	}
	/* SHIM_FORK_PREPARE: a free place, or a dead holder's; once (a slot
	 * is seen once per fd that names it).  Two threads forking at once
	 * share one stand-in: the second child writes itself in as before. */
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h == -1 || h == stand_in)
			return;
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < SLOT_HOLDERS; i++) {
			int32_t h = atomic_load(&s->holders[i]);
			if ((pass == 0 && h == 0) || (pass == 1 && h != 0 && !alive(h))) {
				if (atomic_compare_exchange_strong(&s->holders[i], &h, stand_in))
					return;
			}
		}
	}
	atomic_store(&s->holders[0], -1);
}

int shim_slot_let_go(struct tslot *s)
{
	int pid = shim_pid();

	if (!shim_slot_shared(s))
		return 0;
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = pid;
		atomic_compare_exchange_strong(&s->holders[i], &h, 0);
	}
	return 1;
}

int shim_slot_shared(struct tslot *s)
{
	int pid = shim_pid();

	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h != 0 && h != pid && alive(h))
			return 1;
	}
	return 0;
}

void shim_slot_unhold(struct tslot *s, uint32_t gen)
{
	int pid = shim_pid(), left = 0;

	if (atomic_load(&s->gen) != gen)
		return;
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h == pid || (h != 0 && h != -1 && !alive(h)))
			atomic_compare_exchange_strong(&s->holders[i], &h, 0);
		else if (h != 0)
			left = 1;
	}
	if (left)
		return;
	/* Nobody holds it: free it for the next socket, once. */
	uint32_t g = gen;
	if (atomic_compare_exchange_strong(&s->gen, &g, gen + 1))
		atomic_store(&s->state, SLOT_FREE);
}

void shim_count_seen(void)
{
	if (me)
		atomic_fetch_add_explicit(&me->seen, 1, memory_order_relaxed);
}

void shim_count_moved(void)
{
	if (me)
		atomic_fetch_add_explicit(&me->moved, 1, memory_order_relaxed);
}

void shim_count_why(struct tslot *s, enum shim_why why)
{
	uint32_t none = 0;

	/* Once per connection: the first reason is the one that counts. */
	if (atomic_compare_exchange_strong(&s->why, &none, (uint32_t)why + 1) && me)
		atomic_fetch_add_explicit(&me->why[why], 1, memory_order_relaxed);
}

/* A forked child is a new process of the family: its own line. */
void shim_arena_forked(void)
{
	if (arena)
		proc_enter();
}
