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
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "fdmsg.h"
#include "internal.h"
#include "shim.h"
#include "sys.h"

_Static_assert(sizeof(struct tslot) <= ARENA_SLOT_SIZE, "a slot fits");
_Static_assert(sizeof(struct arena_hdr) <= ARENA_SLOTS_OFF, "the header fits");
_Static_assert(WHY_N == ARENA_WHY, "reasons");
_Static_assert(offsetof(struct tslot, calls) == offsetof(struct arena_slot_view, calls),
	       "shunt stat's view of a slot");

const char *const shim_why_names[WHY_N] = {
	"short", "nopeer", "policy", "shared", "stdio", "options", "refused", "error", "full",
};

/*
 * The mapping is published once its header is written and this process
 * has its line (release), and read with acquire: a thread that sees the
 * pointer sees the rest.  Creating or adopting takes arena_mu.  arena_park
 * is in the registry of the library's own fds, which may move it (the
 * program dup2()s onto its number): atomic accesses.
 *
 * The arena's fd is not kept in the fd table: it lives in a datagram in
 * flight on a socket pair of ours (arena_park, the receiving end).
 * /proc/PID/fd opens files, not sockets, so a process that may ptrace-read
 * ours but not attach (a same-user process where Yama forbids attaching)
 * cannot reach the arena there: a helper's attack opened it so, rewrote a
 * slot's ring pointer and copied the victim's sends.  An exec takes a copy
 * out with MSG_PEEK (the datagram stays, for the family's forks, which
 * share the pair); `shunt stat` takes the pair with pidfd_getfd (ptrace
 * attach permission) and peeks the same way.
 */
static _Atomic(struct arena_hdr *) arena;
static int arena_park = -1;
static _Atomic(struct arena_proc *) me SHUNT_FORK_HOT;
static _Atomic int me_due SHUNT_FORK_HOT; /* a forked child's line: at its first count */
static pthread_mutex_t arena_mu = PTHREAD_MUTEX_INITIALIZER;

/* The credentials the arena was made or adopted under: a process that
 * changed them since (a forked helper that dropped privileges) must not
 * hand the family's arena, whose slots hold pointers every member follows,
 * to the program it execs (proc.c, shim_exec_prepare). */
static uid_t arena_uid[3];
static gid_t arena_gid[3];

static void creds_now(uid_t u[3], gid_t g[3])
{
	if (getresuid(&u[0], &u[1], &u[2]) < 0)
		u[0] = u[1] = u[2] = (uid_t)-1;
	if (getresgid(&g[0], &g[1], &g[2]) < 0)
		g[0] = g[1] = g[2] = (gid_t)-1;
}

int shim_arena_creds_same(void)
{
	uid_t u[3];
	gid_t g[3];

	creds_now(u, g);
	return !memcmp(u, arena_uid, sizeof(u)) && !memcmp(g, arena_gid, sizeof(g)) &&
	       u[0] != (uid_t)-1 && g[0] != (gid_t)-1;
}

static struct arena_hdr *arena_now(void)
{
	return atomic_load_explicit(&arena, memory_order_acquire);
}

static struct tslot *slot_of(struct arena_hdr *a, int i)
{
	return (struct tslot *)((uint8_t *)a + ARENA_SLOTS_OFF + (size_t)i * ARENA_SLOT_SIZE);
}

int shim_slot_index(const struct tslot *s)
{
	return (int)(((const uint8_t *)s - (const uint8_t *)arena_now() - ARENA_SLOTS_OFF) /
		     ARENA_SLOT_SIZE);
}

SHUNT_FORK_TEXT _Atomic uint32_t *shim_arena_pay_shift(void)
{
	static _Atomic uint32_t alone; /* before the arena exists, or without one */
	struct arena_hdr *a = arena_now();

	return a ? &a->pay_shift : &alone;
}

int shim_arena_fd(void)
{
	int park = __atomic_load_n(&arena_park, __ATOMIC_ACQUIRE);

	return park < 0 ? -1 : shunt_fdmsg_peek_parked(park, ARENA_PARK_TAG);
}

/* Parks fd (above) and closes it; without a pair the arena stays mapped
 * and no exec passes it on (the new image makes a family of its own). */
static void park(int fd)
{
	int sv[2];
	char tag = ARENA_PARK_TAG;

	if (sys_socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) == 0) {
		if (shunt_fdmsg_send(sv[0], &tag, 1, &fd, 1, MSG_DONTWAIT) == 0) {
			__atomic_store_n(&arena_park, shunt__hide_fd(sv[1]), __ATOMIC_RELEASE);
			shunt__own_add(&arena_park);
		} else {
			sys_close(sv[1]);
		}
		sys_close(sv[0]);
	}
	sys_close(fd);
}

/* A holder entry is a pid, -1 (shared for good), or a fork's reservation
 * (SLOT_FORKING), which lives as long as the forking process. */
static int alive(int32_t h)
{
	int pid = h < -1 ? SLOT_FORKER(h) : h;

	return h == -1 || (pid > 0 && sys_kill(pid, 0) != -ESRCH);
}

/*
 * Take a line from `from` on, among n: a free one or one a dead process of
 * our pid left, else (`dead`) a dead process's.  A forked child looks in
 * the page of lines its pid names first: lines are never given back, so a
 * fork-per-connection server's table fills, and each new child read all 8
 * pages of it twice (a fault on each: a shared mapping's pages are not the
 * child's until touched) before it took a dead one.
 */
#define PROCS_PAGE (4096 / (int)sizeof(struct arena_proc))
SHUNT_FORK_TEXT static struct arena_proc *proc_take(struct arena_hdr *a, int pid, int dead, int from, int n)
{
	for (int k = 0; k < n; k++) {
		struct arena_proc *p = &a->procs[(from + k) % ARENA_PROCS];
		int32_t old = atomic_load(&p->pid);
		if ((old == pid || (dead ? old > 0 && !alive(old) : old == 0)) &&
		    atomic_compare_exchange_strong(&p->pid, &old, pid))
			return p;
	}
	return NULL;
}

/* This process's line in the table: its own after exec (`forked`: none
 * can be), else a new one. */
SHUNT_FORK_TEXT static void proc_enter(struct arena_hdr *a, int forked)
{
	int pid = shim_pid();
	int page = pid % (ARENA_PROCS / PROCS_PAGE) * PROCS_PAGE;

	for (int i = 0; i < ARENA_PROCS && !forked; i++) {
		if (atomic_load(&a->procs[i].pid) == pid) {
			atomic_store(&me, &a->procs[i]);
			return;
		}
	}
	struct arena_proc *p = proc_take(a, pid, 0, page, PROCS_PAGE);
	if (!p)
		p = proc_take(a, pid, 1, page, PROCS_PAGE);
	if (!p)
		p = proc_take(a, pid, 0, 0, ARENA_PROCS);
	if (!p)
		p = proc_take(a, pid, 1, 0, ARENA_PROCS);
	if (!p)
		return;
	atomic_store(&p->seen, 0);
	atomic_store(&p->moved, 0);
	for (int i = 0; i < ARENA_WHY; i++)
		atomic_store(&p->why[i], 0);
	char comm[16] = "";
	sys_prctl(PR_GET_NAME, (unsigned long)comm, 0, 0, 0);
	memcpy(p->comm, comm, sizeof(comm));
	atomic_store(&me, p);
}

/* Map fd; the caller publishes it. */
static struct arena_hdr *arena_map(int fd, int *err)
{
	long p = sys_mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	*err = (unsigned long)p > -4096ul ? (int)p : 0;
	return *err ? NULL : (struct arena_hdr *)p;
}

/* Our fd from now on, registered so that the program never closes it. */
static void arena_publish(struct arena_hdr *a, int fd)
{
	creds_now(arena_uid, arena_gid);
	park(fd);
	proc_enter(a, 0);
	atomic_store_explicit(&arena, a, memory_order_release);
}

static int arena_create(void)
{
	int fd = shunt__hide_fd(sys_memfd_create("shunt-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	struct arena_hdr *a = NULL;

	if (fd < 0)
		return fd;
	int rc = sys_ftruncate(fd, (off_t)ARENA_SIZE);
	if (rc == 0)
		rc = sys_fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	if (rc == 0)
		a = arena_map(fd, &rc);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	a->magic = ARENA_MAGIC;
	a->version = ARENA_VERSION;
	a->nslots = ARENA_SLOTS;
	a->slot_size = ARENA_SLOT_SIZE;
	a->nprocs = ARENA_PROCS;
	a->slots_off = ARENA_SLOTS_OFF;
	arena_publish(a, fd);
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
	int rc = -EEXIST;
	struct arena_hdr *a = arena_now() ? NULL : arena_map(fd, &rc);
	if (a && (a->magic != ARENA_MAGIC || a->version != ARENA_VERSION)) {
		sys_munmap(a, ARENA_SIZE);
		a = NULL;
		rc = -EPROTO;
	}
	if (a)
		arena_publish(a, fd);
	pthread_mutex_unlock(&arena_mu);
	return rc;
}

/* The arena, made on first use; NULL if it cannot be. */
static struct arena_hdr *arena_get(void)
{
	struct arena_hdr *a = arena_now();

	if (__builtin_expect(a != NULL, 1))
		return a;
	pthread_mutex_lock(&arena_mu);
	if (!arena_now())
		arena_create();
	pthread_mutex_unlock(&arena_mu);
	return arena_now();
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

/* Memory of its own, from the kernel: for a vfork child, which may not
 * touch its parent's heap, and for a read, which may run in a signal
 * handler, where malloc may not.  NULL if there is none. */
void *shim_scratch(size_t n)
{
	long p = sys_mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return (unsigned long)p > -4096ul ? NULL : (void *)p;
}

void shim_scratch_free(void *p, size_t n)
{
	if (p)
		sys_munmap(p, n);
}

int shim_trylock(pthread_mutex_t *mu)
{
	int rc = pthread_mutex_trylock(mu);

	if (rc == EOWNERDEAD)
		pthread_mutex_consistent(mu);
	return rc == 0 || rc == EOWNERDEAD ? 0 : -EBUSY;
}

void shim_unlock(pthread_mutex_t *mu)
{
	pthread_mutex_unlock(mu);
}

/*
 * Where this process looks for a free slot: next fit within a window of
 * ARENA_REUSE_SPAN slots of its own (chosen by its line in the process
 * table), then through the whole arena.  A slot's cache lines stay with the
 * process (and mostly its CPU) that takes it: two nginx workers taking
 * slots in turn from one shared span missed the cache on every slot's
 * state and on every line its clearing wrote (perf: most of
 * shim_slot_new, itself the library's largest cost per short connection),
 * and a page first touched costs a fault, so the slots in use stay on few
 * pages.  A slot is taken again only after the window's others (a slot
 * reused at once made a fork-per-connection server's connections fail to
 * move now and then, t_shim_hostile serve_fork_per_conn, 2 runs in 12:
 * most likely the forks' shared reservation tag, proc.c, since fixed).
 */
static _Atomic uint32_t next_slot SHUNT_FORK_HOT = UINT32_MAX; /* UINT32_MAX: not chosen */

static struct arena_proc *mine(void);

static uint32_t window_base(struct arena_hdr *a)
{
	struct arena_proc *p = mine();
	uint32_t line = p ? (uint32_t)(p - a->procs) : 0;

	return line % (ARENA_SLOTS / ARENA_REUSE_SPAN) * ARENA_REUSE_SPAN;
}

/* Slot i, ours if it was free. */
static struct tslot *take_free(struct arena_hdr *a, uint32_t i)
{
	struct tslot *s = slot_of(a, (int)i);
	uint32_t free_ = SLOT_FREE;

	if (atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_FREE ||
	    !atomic_compare_exchange_strong(&s->state, &free_, SLOT_PLAIN))
		return NULL;
	return s;
}

static void let_go(struct tslot *s, uint32_t gen, int who);

/*
 * A slot whose holders all died is nobody's: a process that ended by
 * _exit() or a signal, or exited with the socket open, let go of nothing
 * (a fork-per-connection server's handlers), and its slots stayed taken
 * for good.  A slot being set up (shim_slot_new between taking it and
 * naming its holder) shows no holder at all and is left alone; one freed
 * and taken again meanwhile has another generation, which let_go checks.
 */
static void reclaim(struct tslot *s, int self)
{
	uint32_t g = atomic_load(&s->gen);
	int any = 0;

	if (atomic_load(&s->state) == SLOT_FREE)
		return;
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h == 0)
			continue;
		if (h == self || alive(h))
			return;
		any = 1;
	}
	if (any)
		let_go(s, g, 0);
}

#define SWEEP_SLOTS 64 /* looked at each time a window is full */
#define SWEEP_FAR   64 /* ... and the rest of the arena, one time in these */
static _Atomic uint32_t window_sweep, far_sweep, far_sweeps, far_slot;

/* The next SWEEP_SLOTS slots after *cursor among n from base. */
static void sweep(struct arena_hdr *a, _Atomic uint32_t *cursor, uint32_t base, uint32_t n)
{
	uint32_t from = atomic_fetch_add_explicit(cursor, SWEEP_SLOTS, memory_order_relaxed);
	int self = shim_pid();

	for (uint32_t k = 0; k < SWEEP_SLOTS; k++)
		reclaim(slot_of(a, (int)(base + (from + k) % n)), self);
}

/* Next fit within [base, base + span) from *next; NULL if all are taken. */
static struct tslot *next_fit(struct arena_hdr *a, _Atomic uint32_t *next, uint32_t base,
			      uint32_t span)
{
	uint32_t at = atomic_load_explicit(next, memory_order_relaxed);

	if (at - base >= span)
		at = base;
	for (uint32_t k = 0; k < span; k++) {
		uint32_t i = base + (at - base + k) % span;
		struct tslot *s = take_free(a, i);
		if (s) {
			atomic_store_explicit(next, i + 1, memory_order_relaxed);
			return s;
		}
	}
	return NULL;
}

/*
 * The slots this process freed last, taken again first, the oldest of
 * RECENT_SLOTS in turn: a short connection's slot is then one whose lines
 * and page are still in this CPU's caches and TLB.  The window's next fit
 * alone took a slot last touched 256 connections before, and the stores
 * that clear it waited on the misses (perf, nginx with `Connection: close`
 * and wrk -c 1, each pinned to a CPU: shim_slot_new 2.3 us a request, two
 * thirds of it at the first fenced store after the clearing).  A slot is
 * still taken again only after RECENT_SLOTS - 1 others were freed, not at
 * once (see above).  Entries are hints: take_free's compare-and-swap
 * decides, so a fork child or another thread taking one first is harmless.
 */
#define RECENT_SLOTS 8
static _Atomic uint32_t recent[RECENT_SLOTS] SHUNT_FORK_HOT; /* slot index + 1; 0: none */
static _Atomic uint32_t recent_next SHUNT_FORK_HOT;          /* where the next freed goes */

static void recent_put(const struct tslot *s)
{
	uint32_t k = atomic_fetch_add_explicit(&recent_next, 1, memory_order_relaxed);

	atomic_store_explicit(&recent[k % RECENT_SLOTS], (uint32_t)shim_slot_index(s) + 1,
			      memory_order_relaxed);
}

/* The oldest of the recently freed, if it is still free. */
static struct tslot *recent_take(struct arena_hdr *a)
{
	uint32_t k = atomic_load_explicit(&recent_next, memory_order_relaxed) % RECENT_SLOTS;
	uint32_t i = atomic_exchange_explicit(&recent[k], 0, memory_order_relaxed);

	return i && i <= ARENA_SLOTS ? take_free(a, i - 1) : NULL;
}

/* The window first; when it is full, what the dead held in it is freed
 * (a part at a time), then in the rest of the arena now and then (each
 * look at another process's slot costs a kill(pid, 0)), and the next free
 * slot anywhere is taken. */
static struct tslot *find_free(struct arena_hdr *a)
{
	uint32_t base = window_base(a);
	struct tslot *s = recent_take(a);

	if (s || (s = next_fit(a, &next_slot, base, ARENA_REUSE_SPAN)))
		return s;
	sweep(a, &window_sweep, base, ARENA_REUSE_SPAN);
	if ((s = next_fit(a, &next_slot, base, ARENA_REUSE_SPAN)))
		return s;
	if (atomic_fetch_add_explicit(&far_sweeps, 1, memory_order_relaxed) % SWEEP_FAR == 0)
		sweep(a, &far_sweep, 0, ARENA_SLOTS);
	return next_fit(a, &far_slot, 0, ARENA_SLOTS);
}

struct tslot *shim_slot_new(uint64_t ino, uint32_t *gen)
{
	struct arena_hdr *a = arena_get();
	struct tslot *s = a ? find_free(a) : NULL;

	if (!s)
		return NULL;
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

struct tslot *shim_slot_at(int index, uint32_t gen)
{
	struct arena_hdr *a = arena_now();

	if (!a || index < 0 || index >= ARENA_SLOTS)
		return NULL;
	struct tslot *s = slot_of(a, index);
	if (atomic_load(&s->gen) != gen || atomic_load(&s->state) == SLOT_FREE)
		return NULL;
	return s;
}

SHUNT_FORK_TEXT static int holds(struct tslot *s, int32_t h)
{
	for (int i = 0; i < SLOT_HOLDERS; i++)
		if (atomic_load(&s->holders[i]) == h)
			return 1;
	return 0;
}

/* A new entry: a free one, else a dead holder's; else the slot counts as
 * shared for good (more holders than fit). */
SHUNT_FORK_TEXT static void add_holder(struct tslot *s, int32_t h)
{
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < SLOT_HOLDERS; i++) {
			int32_t old = atomic_load(&s->holders[i]);
			if (old == -1)
				return;
			if ((pass == 0 ? old == 0 : old != 0 && !alive(old)) &&
			    atomic_compare_exchange_strong(&s->holders[i], &old, h))
				return;
		}
	}
	atomic_store(&s->holders[0], -1);
}

SHUNT_FORK_TEXT void shim_slot_hold(struct tslot *s, int pid)
{
	if (!holds(s, pid))
		add_holder(s, pid);
}

/* One entry per fork, even when another fork of ours reserved too: each
 * reservation is turned into its own child. */
void shim_slot_reserve(struct tslot *s, int32_t tag)
{
	add_holder(s, tag);
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

/* Does an entry name a process but us (`live`: one alive)? */
SHUNT_FORK_TEXT static int others(struct tslot *s, int live)
{
	int pid = shim_pid();

	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h != 0 && h != pid && (!live || alive(h)))
			return 1;
	}
	return 0;
}

SHUNT_FORK_TEXT int shim_slot_shared(struct tslot *s)
{
	return others(s, 1);
}

int shim_slot_others(struct tslot *s)
{
	return others(s, 0);
}

/* Clear who's entries (0: nobody's) and dead ones; free the slot when no
 * entry is left. */
SHUNT_FORK_TEXT static void let_go(struct tslot *s, uint32_t gen, int who)
{
	int left = 0;

	if (atomic_load(&s->gen) != gen)
		return;
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h == 0)
			continue;
		if (!(who && h == who) && alive(h))
			left = 1;
		else if (!atomic_compare_exchange_strong(&s->holders[i], &h, 0))
			left = 1; /* it changed under us: somebody's */
	}
	if (left)
		return;
	/* Nobody holds it: free it for the next socket, once. */
	uint32_t g = gen;
	if (atomic_compare_exchange_strong(&s->gen, &g, gen + 1)) {
		atomic_store(&s->state, SLOT_FREE);
		recent_put(s);
	}
}

SHUNT_FORK_TEXT void shim_slot_unhold(struct tslot *s, uint32_t gen)
{
	let_go(s, gen, shim_pid());
}

SHUNT_FORK_TEXT int shim_slot_born(struct tslot *s, uint32_t gen, int32_t tag, int pid)
{
	if (atomic_load(&s->gen) != gen)
		return 0;
	/* The child may have put itself there first (its atfork handler, or
	 * an exec'd image): then the reservation only goes. */
	int32_t to = pid > 0 && !holds(s, pid) ? pid : 0;
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = tag;
		if (atomic_compare_exchange_strong(&s->holders[i], &h, to)) {
			if (!to) /* the last holder may have left meanwhile */
				let_go(s, gen, 0);
			return 1;
		}
	}
	return 0;
}

void shim_count_seen(void)
{
	struct arena_proc *p = mine();

	if (p)
		atomic_fetch_add_explicit(&p->seen, 1, memory_order_relaxed);
}

void shim_count_moved(void)
{
	struct arena_proc *p = mine();

	if (p)
		atomic_fetch_add_explicit(&p->moved, 1, memory_order_relaxed);
}

SHUNT_FORK_TEXT int shim_count_why(struct tslot *s, enum shim_why why)
{
	uint32_t none = 0;
	struct arena_proc *p = mine();

	/* Once per connection: the first reason is the one that counts. */
	if (!atomic_compare_exchange_strong(&s->why, &none, (uint32_t)why + 1))
		return 0;
	if (p)
		atomic_fetch_add_explicit(&p->why[why], 1, memory_order_relaxed);
	return 1;
}

/* A forked child is a new process of the family: its own line, and so
 * its own window of slots. */
/*
 * Its line is taken at its first count (or slot): a fork-per-connection
 * server's child that only serves the connection it was given counts
 * nothing, and taking a line at the fork cost it a page of the table (a
 * fault: a shared mapping's pages are not the child's until touched) and a
 * prctl() for its name.  It is listed by `shunt stat` once it has one.
 */
SHUNT_FORK_TEXT void shim_arena_forked(void)
{
	atomic_store_explicit(&next_slot, UINT32_MAX, memory_order_relaxed);
	atomic_store_explicit(&me, NULL, memory_order_relaxed);
	atomic_store_explicit(&me_due, arena_now() != NULL, memory_order_relaxed);
}

/* This process's line, taken now if it is a forked child's first use;
 * NULL if none (a thread beside the one taking it counts nothing). */
SHUNT_FORK_TEXT static struct arena_proc *mine(void)
{
	struct arena_proc *p = atomic_load_explicit(&me, memory_order_acquire);
	struct arena_hdr *a;

	if (!p && atomic_load_explicit(&me_due, memory_order_relaxed) &&
	    atomic_exchange(&me_due, 0) && (a = arena_now())) {
		proc_enter(a, 1);
		p = atomic_load_explicit(&me, memory_order_acquire);
	}
	return p;
}

/* Test hook: the moves this process counted (shunt stat's "moved"). */
long long shunt__shim_moves(void)
{
	struct arena_proc *p = mine();

	return p ? (long long)atomic_load(&p->moved) : -1;
}

/* Test hook: the slots of the arena in use (not free). */
int shunt__shim_arena_used(void)
{
	struct arena_hdr *a = arena_now();
	int n = 0;

	for (int i = 0; a && i < ARENA_SLOTS; i++)
		n += atomic_load(&slot_of(a, i)->state) != SLOT_FREE;
	return n;
}

/* --- Leaving the family --------------------------------------------------
 * A process whose credentials changed without an exec (a worker that
 * dropped privileges) must not keep the family's arena writable: its slots
 * hold pointers every member follows and locks every member takes, and
 * another user, or this process once compromised, could rewrite them (a
 * helper's attack: a root server's worker setuid() to another user and
 * made itself dumpable again, as nginx's do; that user rewrote a ring
 * pointer in the server's slot through /proc/PID/mem and read its stream,
 * or crashed it).  So it makes a family of its own: a new arena holding a
 * copy of its own slots, mapped over the old one at the same address
 * (every pointer into it stays good), and it lets go of the old one's fd.
 * Its slots keep the old family's holders, so that a socket the others
 * still hold does not move here while they live; the moved ones they
 * share went back to TCP first (preload.c, creds_changed): two copies of
 * one slot would each keep their own ring positions.  A thread of ours
 * that changes a slot between the copy and the mapping changes the old
 * one: the window is the copy's, once per change of credentials. */

/* Each range [d, h) of data in memfd fd from `at` on, to fn, which may
 * stop the walk with an error.  Only its data: a hole is zeros, and
 * reading one through a mapping would fill it. */
static int each_data(int fd, long at, int (*fn)(long d, long h, void *arg), void *arg)
{
	while (at < (long)ARENA_SIZE) {
		long d = sys_lseek(fd, at, SEEK_DATA);
		if (d == -ENXIO)
			return 0;
		long h = d < 0 ? d : sys_lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return (int)h;
		h = SHUNT_MIN(h, (long)ARENA_SIZE);
		int rc = fn(d, h, arg);
		if (rc < 0)
			return rc;
		at = h;
	}
	return 0;
}

struct leaving {
	struct arena_hdr *a;
	int fd;  /* the new arena's memfd */
	int pid;
};

/* The old arena's data in [d, h), written into the new one's memfd. */
static int copy_range(long d, long h, void *arg)
{
	const struct leaving *l = arg;

	for (long p = d; p < h;) {
		long n = sys_pwrite(l->fd, (const uint8_t *)l->a + p, (size_t)(h - p), p);
		if (n <= 0)
			return n < 0 ? (int)n : -EIO;
		p += n;
	}
	return 0;
}

/* Is the slot ours to keep: held by us, by a fork of ours on its way, or
 * by more processes than its entries name? */
static int ours(struct tslot *s, int pid)
{
	for (int i = 0; i < SLOT_HOLDERS; i++) {
		int32_t h = atomic_load(&s->holders[i]);
		if (h == pid || h == -1 || (h < -1 && SLOT_FORKER(h) == pid))
			return 1;
	}
	return 0;
}

/* The slots in [d, h) of the copy that are not ours, zeroed. */
static int forget_range(long d, long h, void *arg)
{
	const struct leaving *l = arg;
	int i = (int)((d - ARENA_SLOTS_OFF) / ARENA_SLOT_SIZE);

	for (; i < ARENA_SLOTS && ARENA_SLOTS_OFF + (long)i * ARENA_SLOT_SIZE < h; i++) {
		struct tslot *s = slot_of(l->a, i);
		if (atomic_load(&s->state) != SLOT_FREE && !ours(s, l->pid))
			memset(s, 0, sizeof(*s));
	}
	return 0;
}

/* What the copy holds of the processes we leave behind is theirs: their
 * lines, and their slots, whose pointers name places in their address
 * space (a program we exec would get them with the arena). */
static void forget_theirs(struct leaving *l)
{
	for (int i = 0; i < ARENA_PROCS; i++)
		if (atomic_load(&l->a->procs[i].pid) != l->pid)
			atomic_store(&l->a->procs[i].pid, 0);
	each_data(l->fd, ARENA_SLOTS_OFF, forget_range, l);
}

static int leave(struct arena_hdr *a)
{
	int old = shim_arena_fd();
	int fd = shunt__hide_fd(sys_memfd_create("shunt-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	struct leaving l = { a, fd, shim_pid() };
	int rc = old < 0 ? old : fd;

	if (rc >= 0)
		rc = sys_ftruncate(fd, (off_t)ARENA_SIZE);
	if (rc == 0)
		rc = sys_fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	if (rc == 0)
		rc = each_data(old, 0, copy_range, &l);
	if (rc == 0) {
		long p = sys_mmap(a, ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
		rc = (unsigned long)p > -4096ul ? (int)p : 0;
	}
	if (old >= 0)
		sys_close(old);
	if (rc < 0) {
		if (fd >= 0)
			sys_close(fd);
		return rc;
	}
	int park_fd = __atomic_exchange_n(&arena_park, -1, __ATOMIC_ACQ_REL);
	if (park_fd >= 0) {
		shunt__own_del(&arena_park);
		sys_close(park_fd);
	}
	forget_theirs(&l);
	creds_now(arena_uid, arena_gid);
	park(fd);
	return 0;
}

int shim_arena_leave(void)
{
	pthread_mutex_lock(&arena_mu);
	struct arena_hdr *a = arena_now();
	int rc = a ? leave(a) : 0;
	pthread_mutex_unlock(&arena_mu);
	return rc;
}

/* Leaving failed: nothing of the family's may stay writable here, even if
 * our tables are lost with it (the library is off by then: preload.c).
 * Anonymous memory over the arena, so that no pointer into it faults. */
void shim_arena_drop(void)
{
	struct arena_hdr *a = arena_now();

	if (a)
		sys_mmap(a, ARENA_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}
