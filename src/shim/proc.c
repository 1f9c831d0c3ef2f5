/*
 * proc.c - processes: fork, vfork, exec, posix_spawn.
 *
 * fork: the child is a new process of the family; it holds every tracked
 * socket too (it is added to each slot's holders), it maps the same
 * segments at the same addresses, and it drops the parent's meetings in
 * progress (the parent goes on with them).  vfork: the child runs in the
 * parent's memory until it execs, so it changes no table (fds.c asks
 * shim_in_vfork_child()).  exec: the new image adopts the family's arena
 * and the tracked sockets that survive, listed in SHUNT_INHERIT
 * ("ARENAFD;FD:SLOT:GEN:INO,..."), each checked against what the slot says
 * before it is believed.  posix_spawn: the same, for a child.
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

static _Atomic int cached_pid;

int shim_pid(void)
{
	int p = atomic_load_explicit(&cached_pid, memory_order_relaxed);

	if (!p) {
		p = sys_getpid();
		atomic_store_explicit(&cached_pid, p, memory_order_relaxed);
	}
	return p;
}

int shim_in_vfork_child(void)
{
	return sys_getpid() != shim_pid();
}

/* --- fork ------------------------------------------------------------------ */

/* Who forks: the child reads it in its copy of our memory. */
static int fork_parent;

static void parent_stands_in(int fd, struct tsock *t, void *arg)
{
	(void)fd;
	shim_slot_fork(t->slot, *(int *)arg, 0, SHIM_FORK_PREPARE);
}

void shim_fork_prepare(void)
{
	fork_parent = shim_pid();
	if (!shim_sandboxed())
		shim_each(parent_stands_in, &fork_parent);
	shim_linger_fork(-1);
	shunt__own_lock();
}

static void parent_takes_back(int fd, struct tsock *t, void *arg)
{
	(void)fd;
	shim_slot_fork(t->slot, *(int *)arg, 0, SHIM_FORK_FAILED);
}

void shim_fork_failed(void)
{
	int me = shim_pid();

	if (!shim_sandboxed())
		shim_each(parent_takes_back, &me);
}

void shim_fork_parent(void)
{
	shunt__own_unlock();
	shim_linger_fork(1);
}

static void child_holds(int fd, struct tsock *t, void *arg)
{
	(void)fd;
	(void)arg;
	pthread_mutex_init(&t->mu, NULL); /* another thread may have held it */
	t->meet = NULL; /* the parent's: its fds are closed with the child's copy below */
	shim_slot_fork(t->slot, fork_parent, shim_pid(), SHIM_FORK_CHILD);
}

void shim_fork_child(void)
{
	atomic_store(&cached_pid, sys_getpid());
	shunt__own_unlock();
	if (shim_sandboxed()) /* the filter is the child's too */
		return;
	shim_linger_fork(0);
	shim_arena_forked();
	shim_each(child_holds, NULL);
}

/* --- seccomp (shim.h) ------------------------------------------------------- */

_Atomic int shim_sandboxed_;

/* From now on this process reads and writes the socket where the family
 * cannot count.  A move takes the stream's position from the kernel when
 * it starts and counts on from there (move.c, start()): so a move begun
 * before this point starts again, and none can start while we live (we
 * hold the socket: it is shared).  Once we are gone, another holder (sshd's
 * monitor, after its pre-authentication child) may move it, from the
 * kernel's count of then.  A moved one goes back to TCP now. */
static void sandbox_one(int fd, struct tsock *t, void *arg)
{
	struct tslot *s = t->slot;
	int *moved = arg;
	uint32_t meet = SLOT_MEET;

	shim_meet_drop(t); /* ours, if any: a forked child has none */
	if (atomic_compare_exchange_strong(&s->state, &meet, SLOT_PLAIN)) {
		atomic_store(&s->steps, 0);
		atomic_store(&s->next_step, 0);
	}
	if (atomic_load(&s->state) == SLOT_MOVED) {
		shim_demote(t, fd);
		(*moved)++;
	}
}

void shim_sandbox(void)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	int moved = 0;

	if (shim_sandboxed() || shim_in_vfork_child())
		return;
	pthread_mutex_lock(&mu);
	if (!shim_sandboxed()) {
		/* Not a word from here on if a file may not grow (sshd's child
		 * sets RLIMIT_FSIZE to 0 first): a write to the log file would
		 * raise SIGXFSZ. */
		struct rlimit rl;
		if (getrlimit(RLIMIT_FSIZE, &rl) < 0 || rl.rlim_cur != RLIM_INFINITY)
			shunt__log_level = SHUNT_LOG_NONE;
		shim_each(sandbox_one, &moved);
		atomic_store(&shim_sandboxed_, 1);
		log_info("confined (seccomp or no_new_privs): this process's connections stay "
			 "on TCP%s", moved ? ", those in shared memory went back" : "");
	}
	pthread_mutex_unlock(&mu);
}

/* --- exec ------------------------------------------------------------------ */

#define INHERIT_MAX 4096

struct inherit {
	char *buf;
	size_t len, cap;
	int n;
	struct tsock *kept[256]; /* the tracked sockets that survive */
	int nkept;
};

/* --- What survives exec ------------------------------------------------------
 * Not only the table's fds: a vfork child's dup2(sock, 1) changed no table
 * (fds.c), and a socket whose own number is close-on-exec may survive under
 * another.  So the open fds are listed from /proc/self/fd, with
 * getdents64 into the stack (a vfork child must not touch the heap), and
 * each socket among those without close-on-exec is matched by inode. */

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

struct by_ino {
	uint64_t ino;
	struct tsock *t;
};

static void find_ino(int fd, struct tsock *t, void *arg)
{
	struct by_ino *b = arg;
	struct tslot *s = t->slot;

	if (!s->ino)
		s->ino = shim_kern_ino(fd);
	if (!b->t && s->ino == b->ino)
		b->t = t;
}

/* The tracked socket behind a surviving fd, or NULL. */
static struct tsock *tracked_socket(int fd)
{
	struct tsock *t = shim_get(fd);
	uint64_t ino = shim_kern_ino(fd);

	shim_put(t); /* the table holds it for as long as we look */
	if (!ino || (t && t->slot->ino == ino))
		return ino ? t : NULL;
	struct by_ino b = { ino, NULL };
	shim_each(find_ino, &b);
	return b.t;
}

static void each_survivor(void (*fn)(int fd, struct tsock *t, void *arg), void *arg)
{
	int dir = sys_openat(AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	char buf[2048];
	long n;

	if (dir < 0)
		return;
	while ((n = sys_getdents64(dir, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			off += d->d_reclen;
			int fd = atoi(d->d_name);
			int fl = d->d_name[0] == '.' || fd == dir ? -1 : sys_fcntl(fd, F_GETFD, 0);
			struct tsock *t = fl < 0 || (fl & FD_CLOEXEC) ? NULL : tracked_socket(fd);
			if (t)
				fn(fd, t, arg);
		}
	}
	sys_close(dir);
}

/* A socket goes to an image that may not run the library: a moved one
 * goes back to TCP, a meeting stops (a vfork child leaves the meeting,
 * its parent's memory, to its parent: the flag stops it there). */
static void leaving(int fd, struct tsock *t)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->state) == SLOT_MOVED && shim_demote(t, fd) < 0)
		log_error("fd %d: a connection in shared memory survives exec and could "
			  "not go back to TCP: it was reset", fd);
	else if (atomic_load(&s->state) == SLOT_MEET && shim_in_vfork_child())
		atomic_fetch_or(&s->flags, TF_EXPORTED);
	else if (atomic_load(&s->state) == SLOT_MEET)
		shim_give_up(t, fd, WHY_SHARED);
}

/* A tracked socket survives the exec at fd: whatever the new image is, it
 * holds the socket (a vfork child registers itself here: its parent must
 * not move a connection it writes into); a moved one goes back to TCP,
 * and the new image is told where the slot is. */
static void add_fd(int fd, struct tsock *t, void *arg)
{
	struct inherit *in = arg;
	struct tslot *s = t->slot;

	shim_slot_hold(s, sys_getpid());
	leaving(fd, t);
	if (in->nkept < (int)(sizeof(in->kept) / sizeof(in->kept[0])))
		in->kept[in->nkept++] = t;
	else
		in->nkept = -1; /* too many to tell: let go of none */
	int k = snprintf(in->buf + in->len, in->cap - in->len, "%s%d:%d:%u:%llu",
			 in->n ? "," : "", fd, shim_slot_index(s), t->gen,
			 (unsigned long long)s->ino);
	if (k > 0 && in->len + (size_t)k < in->cap) {
		in->len += (size_t)k;
		in->n++;
	}
}

/* Memory for the new environment that a vfork child may take without
 * touching its parent's heap. */
static void *grab(size_t n)
{
	long p = sys_mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return (unsigned long)p > -4096ul ? NULL : (void *)p;
}

struct exec_env {
	size_t size;
	char **env;
};

/* What exec closes: a holder that stays (its pid lives on as the new
 * image) would keep the connection "shared" for the family, which then
 * never moves it (socat's EXEC: the child that execs cat held the
 * accepted socket, close-on-exec).  So the old image lets go of those
 * others hold too, and takes them back if the exec fails. */
struct let_go_entry {
	struct tslot *s;
	uint32_t gen;
};
static struct let_go_entry let_go[256];
static int nlet_go;

static void let_go_one(int fd, struct tsock *t, void *arg)
{
	const struct inherit *in = arg;

	(void)fd;
	for (int i = 0; i < in->nkept; i++)
		if (in->kept[i] == t)
			return;
	for (int i = 0; i < nlet_go; i++)
		if (let_go[i].s == t->slot)
			return;
	if (nlet_go < (int)(sizeof(let_go) / sizeof(let_go[0])) && shim_slot_let_go(t->slot))
		let_go[nlet_go++] = (struct let_go_entry){ t->slot, t->gen };
}

char **shim_exec_prepare(char *const envp[], const char *path, int replaces)
{
	(void)path;
	int afd = shim_arena_fd();
	if (afd < 0)
		return (char **)envp;
	size_t n = 0;
	while (envp && envp[n])
		n++;
	size_t size = sizeof(struct exec_env) + (n + 2) * sizeof(char *) + INHERIT_MAX + 64;
	struct exec_env *x = grab(size);
	if (!x)
		return (char **)envp;
	x->size = size;
	x->env = (char **)(x + 1);
	char *var = (char *)(x->env + n + 2);
	struct inherit in = { .buf = var, .cap = INHERIT_MAX + 64 };
	in.len = (size_t)snprintf(var, in.cap, "%s=%d;", SHIM_INHERIT_ENV, afd);
	each_survivor(add_fd, &in);
	nlet_go = 0;
	/* posix_spawn closes nothing of ours; a vfork child held nothing. */
	if (replaces && in.nkept >= 0 && !shim_in_vfork_child())
		shim_each(let_go_one, &in);
	size_t j = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], SHIM_INHERIT_ENV "=", sizeof(SHIM_INHERIT_ENV)))
			x->env[j++] = envp[i];
	x->env[j++] = var;
	x->env[j] = NULL;
	/* The arena crosses exec; close-on-exec again if the exec fails. */
	sys_fcntl(afd, F_SETFD, 0);
	return x->env;
}

void shim_exec_done(char **env, char *const envp[])
{
	if (env == (char **)envp)
		return;
	struct exec_env *x = (struct exec_env *)env - 1;
	int afd = shim_arena_fd();
	if (afd >= 0)
		sys_fcntl(afd, F_SETFD, FD_CLOEXEC);
	/* The exec failed: we hold what we let go of. */
	for (int i = 0; !shim_in_vfork_child() && i < nlet_go; i++)
		if (atomic_load(&let_go[i].s->gen) == let_go[i].gen)
			shim_slot_hold(let_go[i].s, shim_pid());
	nlet_go = 0;
	sys_munmap(x, x->size);
}

/* --- posix_spawn ------------------------------------------------------------
 * glibc's child runs the file actions and execs by itself, where no
 * wrapper sees it: a socket it dup2()s into place survives whatever its
 * own flag.  The actions are read from glibc's layout (stable since 2.x;
 * anything that does not look like it reads as no action), and the
 * sockets they name are treated as survivors, before the spawn (a moved
 * one goes back to TCP) and after (the child holds them). */

struct glibc_spawn_action {
	int tag; /* 1: dup2 */
	int pad;
	union {
		struct {
			int fd, newfd;
		} dup2;
		char other[24];
	} u;
};

#define SPAWN_DUP2 1

static int spawn_dup2_from(const posix_spawn_file_actions_t *fa, int i)
{
	if (!fa || fa->__used <= 0 || fa->__used > fa->__allocated || fa->__used > 4096 ||
	    !fa->__actions || i >= fa->__used)
		return -1;
	const struct glibc_spawn_action *a = (const struct glibc_spawn_action *)fa->__actions;
	return a[i].tag == SPAWN_DUP2 ? a[i].u.dup2.fd : -1;
}

struct spawned {
	const posix_spawn_file_actions_t *fa;
	int child;
};

static int named_by_actions(int fd, const posix_spawn_file_actions_t *fa)
{
	for (int i = 0; fa && i < fa->__used; i++)
		if (spawn_dup2_from(fa, i) == fd)
			return 1;
	return 0;
}

static int survives_spawn(int fd, const posix_spawn_file_actions_t *fa)
{
	int fl = sys_fcntl(fd, F_GETFD, 0);

	return fl >= 0 && (!(fl & FD_CLOEXEC) || named_by_actions(fd, fa));
}

static void spawn_before(int fd, struct tsock *t, void *arg)
{
	struct spawned *sp = arg;

	if (survives_spawn(fd, sp->fa))
		leaving(fd, t);
}

static void spawn_after(int fd, struct tsock *t, void *arg)
{
	struct spawned *sp = arg;

	if (survives_spawn(fd, sp->fa))
		shim_slot_hold(t->slot, sp->child);
}

void shim_spawn_prepare(const posix_spawn_file_actions_t *fa)
{
	struct spawned sp = { fa, 0 };

	shim_each(spawn_before, &sp);
}

void shim_spawn_done(const posix_spawn_file_actions_t *fa, int child)
{
	struct spawned sp = { fa, child };

	shim_each(spawn_after, &sp);
}

/* --- The new image --------------------------------------------------------- */

/* What the new image adopted: one tracked socket per slot, however many
 * numbers name it (sshd's re-exec gets its connection as fds 0 and 1), as
 * dup() makes it: else the close of one number would end this process's
 * hold on the others'. */
struct adopted {
	struct tslot *s;
	int fd;
};

static void adopt_one(const char *item, struct adopted *seen, int *nseen)
{
	int fd, idx;
	unsigned gen;
	unsigned long long ino;
	char end;

	if (sscanf(item, "%d:%d:%u:%llu%c", &fd, &idx, &gen, &ino, &end) != 4 || fd < 0)
		return;
	struct tslot *s = shim_slot_at(idx, gen);
	/* The number must still name that very socket. */
	if (!s || !ino || s->ino != ino || shim_kern_ino(fd) != ino)
		return;
	for (int i = 0; i < *nseen; i++) {
		if (seen[i].s == s) {
			shim_dup(seen[i].fd, fd);
			return;
		}
	}
	if (!shim_track_slot(fd, s, gen))
		return;
	if (*nseen < 64)
		seen[(*nseen)++] = (struct adopted){ s, fd };
}

/* A socket of ours that came in as stdin, stdout or stderr (a spawn's
 * file actions put it there): it is held.  It may not move while it is
 * one of them (move.c asks at each step), since stdio may use it; once the
 * program put something else there (sshd: dup, then /dev/null over 0 and
 * 1), stdin, stdout and stderr no longer reach it. */
static void adopt_stdio(struct adopted *seen, int nseen)
{
	for (int fd = 0; fd < 3; fd++) {
		uint64_t ino = shim_kern_ino(fd);
		for (int i = 0; ino && i < nseen; i++) {
			if (seen[i].s->ino != ino || shim_has(fd))
				continue;
			shim_dup(seen[i].fd, fd);
		}
	}
}

void shim_inherit(void)
{
	const char *v = getenv(SHIM_INHERIT_ENV);
	char buf[INHERIT_MAX + 64];
	struct adopted seen[64];
	int nseen = 0;

	if (!v)
		return;
	snprintf(buf, sizeof(buf), "%s", v);
	unsetenv(SHIM_INHERIT_ENV); /* for this image only */
	char *semi = strchr(buf, ';');
	int afd = -1;
	if (!semi || sscanf(buf, "%d", &afd) != 1 || afd < 0 || shim_arena_adopt(afd) < 0) {
		log_info("%s is not ours, or stale: ignored", SHIM_INHERIT_ENV);
		return;
	}
	char *save = NULL;
	for (char *it = strtok_r(semi + 1, ",", &save); it; it = strtok_r(NULL, ",", &save))
		adopt_one(it, seen, &nseen);
	adopt_stdio(seen, nseen);
}
