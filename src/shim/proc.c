/*
 * proc.c - processes: fork, vfork, _Fork, clone, daemon, exec, posix_spawn.
 *
 * fork: the child is a new process of the family; it holds every tracked
 * socket too (it is among each slot's holders before fork() returns, see
 * below), it maps the same segments at the same addresses, and it closes
 * its copies of the parent's meetings in progress and frees them (the
 * parent goes on with them; a copy of the named listener in a child would
 * take the peer's call).  vfork: the child runs in the parent's memory
 * until it execs, so it changes no table (fds.c asks
 * shim_in_vfork_child()); it joins the holders at exec.  A child of _Fork
 * (async-signal-safe: it may take no lock) or of a raw clone on a stack of
 * its own (no atfork handler runs) is treated the same, and its parent
 * adds it to the holders when the call returns; clone() and a raw clone
 * that copy the memory and the fd table are forks (preload.c, "Forks by
 * another name").  A child in another pid namespace runs without the
 * library (below, "A child the family cannot name").  exec: the new image
 * adopts the family's arena and the tracked sockets that survive, listed
 * in SHUNT_INHERIT ("ARENAFD;FD:SLOT:GEN:INO,..."), each checked against
 * what the slot says before it is believed.  posix_spawn: the same, for a
 * child.
 */
#include <elf.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "shim.h"
#include "sys.h"

static _Atomic int cached_pid SHUNT_FORK_HOT;

SHUNT_FORK_TEXT int shim_pid(void)
{
	int p = atomic_load_explicit(&cached_pid, memory_order_relaxed);

	if (!p) {
		p = sys_getpid();
		atomic_store_explicit(&cached_pid, p, memory_order_relaxed);
	}
	return p;
}

SHUNT_FORK_TEXT int shim_in_vfork_child(void)
{
	return sys_getpid() != shim_pid();
}

/* --- A new process holds our sockets ---------------------------------------
 * A child holds every socket of ours from the moment it exists, and the
 * parent must know it before fork() returns: a close of the parent's copy
 * is not the last one then (the peer must not be told the connection
 * ended), and the connection may not move.  The child can say so itself
 * only once it runs, and fork() knows its pid only once it is made.  So
 * before it is made, each socket it will hold gets a reservation among its
 * slot's holders (SLOT_FORKING, alive while we are), with no step of a move
 * running meanwhile and any meeting in progress called off (move.c).  Once
 * the pid is known the reservation becomes that pid, or goes if the child
 * put itself there first or no child was made: our fork() and posix_spawn()
 * do it in the parent, the child's atfork handler in the child, whichever
 * comes first.  A fork libc makes inside (forkpty, wordexp) leaves it to
 * the child: if one fails, its reservations stay while we live.
 *
 * The reserved sockets are kept on a list, each with a reference: one
 * closed between the reservation and the fork is still found (by the
 * parent: the child has it; by the child: it lets go of it at once).
 */

static struct tsock *births SHUNT_FORK_HOT; /* while moves are paused: one maker at a time */
static int32_t birth_tag SHUNT_FORK_HOT;     /* SLOT_FORKING(our pid, birth_seq) */
static uint32_t birth_seq SHUNT_FORK_HOT;    /* our forks, counted (one maker at a time) */
static _Thread_local int forking;  /* our fork's prepare reserved */
static _Thread_local int wrapped;  /* in our fork wrapper: it ends the parent's side */
static _Thread_local int spawning; /* in our posix_spawn wrapper */

static int cloexec(int fd)
{
	int fl = sys_fcntl(fd, F_GETFD, 0);

	return fl < 0 || (fl & FD_CLOEXEC);
}

/* arg: whether close-on-exec sockets count (a fork), or not (a spawn). */
static void reserve(int fd, struct tsock *t, void *arg)
{
	struct tsock *u = shim_get(fd); /* a reference: t may be closed now */

	(void)t;
	if (!u)
		return;
	if (u->birth || (!*(int *)arg && cloexec(fd))) {
		shim_put(u);
		return;
	}
	u->birth = 1;
	u->birth_next = births; /* the list keeps the reference */
	births = u;
	shim_slot_reserve(u->slot, birth_tag);
	shim_move_call_off(u, fd);
}

static void births_begin(int all)
{
	shim_moves_pause();
	birth_tag = SLOT_FORKING(shim_pid(), ++birth_seq);
	shim_each(reserve, &all);
}

/* In the parent.  child: the pid, -1 for none, 0 for not known (the child
 * turns the reservations into its own pid). */
static void births_end(int child)
{
	while (births) {
		struct tsock *t = births;
		births = t->birth_next;
		t->birth_next = NULL;
		t->birth = 0;
		if (child)
			shim_slot_born(t->slot, t->gen, birth_tag, child);
		shim_put(t);
	}
	shim_moves_resume();
}

/* In the child: each reservation becomes us; a socket closed in the parent
 * just before the fork is let go of at once.  Each fork reserves with a tag
 * of its own: with one tag for all of a parent's forks, a child that came
 * late to remove "its" reservation (the parent had turned it into the
 * child already) removed the next fork's, whose child then went
 * unrecorded; the slot was let go of while that child served the
 * connection, and taken by the next one (the soak's fork hand-over: bytes
 * skipped, resets). */
SHUNT_FORK_TEXT static void births_child(void)
{
	int me = shim_pid();

	while (births) {
		struct tsock *t = births;
		struct tslot *s = t->slot;
		births = t->birth_next;
		t->birth_next = NULL;
		t->birth = 0;
		if (atomic_load(&s->gen) == t->gen && !shim_slot_born(s, t->gen, birth_tag, me))
			shim_slot_hold(s, me); /* the parent's wrapper was first, or no room */
		if (atomic_load(&t->nfds) == 0)
			shim_slot_unhold(s, t->gen);
		shim_put(t);
	}
}

/* --- A child the family cannot name ----------------------------------------
 * A child in another pid namespace (a clone with CLONE_NEWPID, as vsftpd
 * makes its sessions; a fork after unshare(CLONE_NEWPID)) knows itself by
 * a pid that names another process here: it can hold no slot of ours nor
 * take a line in the arena (pid 1 would stay "alive" for good).  So it
 * runs without the library, as a sandboxed process does, and what it
 * inherits goes back to TCP before it is made and stays there, as a
 * socket passed to another process does. */

static _Thread_local int stranger; /* this fork's child: another pid namespace */
static int estranged;               /* we are such a child, or its descendant */

void shim_fork_stranger(int newpid)
{
	stranger = newpid;
}

/* Did unshare(CLONE_NEWPID) or setns() put our children elsewhere?  Our
 * own namespace never changes; our children's link names none until the
 * first child of an unshare() makes it (ENOENT, where the link is). */
static int children_elsewhere_now(void)
{
	static struct stat own;
	struct stat kids;

	if (!own.st_ino && sys_fstatat(AT_FDCWD, "/proc/self/ns/pid", &own, 0) < 0)
		return 0;
	if (sys_fstatat(AT_FDCWD, "/proc/self/ns/pid_for_children", &kids, 0) == 0)
		return own.st_ino != kids.st_ino || own.st_dev != kids.st_dev;
	return sys_fstatat(AT_FDCWD, "/proc/self/ns/pid_for_children", &kids,
			   AT_SYMLINK_NOFOLLOW) == 0;
}

/* ... looked at once, and again after an unshare() or setns() of ours
 * (shim_kids_ns_changed): the look at /proc cost every fork a few
 * microseconds (PostgreSQL forks per connection). */
static _Atomic int kids_ns = -1; /* -1: not looked; 0: ours; 1: elsewhere */

static int children_elsewhere(void)
{
	int k = atomic_load(&kids_ns);

	if (k < 0) {
		k = children_elsewhere_now();
		atomic_store(&kids_ns, k);
	}
	return k;
}

void shim_kids_ns_changed(void)
{
	atomic_store(&kids_ns, -1);
}

static void estrange(int fd, struct tsock *t, void *arg)
{
	(void)t;
	(void)arg;
	shim_export(fd, "went to a child in another pid namespace");
}

static void child_drops_exec_copies(void);
static void spawn_enters(void);
static _Atomic int spawns_now, exec_window; /* below, spawn_enters */

void shim_fork_prepare(void)
{
	/* A vfork-like child runs on a copy of tables that are not its own;
	 * a fork inside our posix_spawn (an old libc's) is that spawn's. */
	int ours = !spawning && !atomic_load(&shim_hands_off) && !shim_in_vfork_child();

	if (ours)
		shim_epoll_secret();
	stranger = ours && (stranger || children_elsewhere());
	if (stranger) {
		shim_moves_pause(); /* no step commits while we look */
		shim_each(estrange, NULL);
	} else if (ours) {
		births_begin(1);
		forking = 1;
	}
	shim_linger_fork(-1);
	shim_kept_fork(-1);
	shunt__own_lock();
}

void shim_fork_parent(void)
{
	if (stranger)
		shim_moves_resume();
	stranger = 0;
	shunt__own_unlock();
	shim_kept_fork(1);
	shim_linger_fork(1);
	if (forking && !wrapped) { /* a fork inside libc: the child will say */
		births_end(0);
		forking = 0;
	}
}

/* A socket the child got without a reservation (tracked by another thread
 * during the fork): it holds it too. */
SHUNT_FORK_TEXT static void child_holds(int fd, struct tsock *t, void *arg)
{
	(void)fd;
	(void)arg;
	/* Another thread may have held them. */
	pthread_mutex_init(&t->mu, NULL);
	atomic_store(&t->reg_lock, 0);
	/* The parent's meeting (called off before the fork) or its kept
	 * segment, not ours: the child closes its copies. */
	shim_meet_forget(t);
	if (!t->birth)
		shim_slot_hold(t->slot, shim_pid());
}

SHUNT_FORK_TEXT void shim_fork_child(void)
{
	atomic_store(&cached_pid, sys_getpid());
	child_drops_exec_copies();
	shunt__own_unlock();
	shim_kept_fork(0);
	shim_linger_fork(0);
	shim_kick_forked();
	if (stranger) {
		stranger = 0;
		estranged = 1;
		shim_moves_forked(); /* the pause (prepare) ends here too */
		shim_estranged();
	}
	if (estranged) /* our pids name other processes: we hold nothing */
		return;
	shim_arena_forked();
	shim_each(child_holds, NULL);
	if (forking) {
		births_child();
		shim_moves_forked();
		forking = 0;
	}
}

void shim_fork_wrap(void)
{
	wrapped = 1;
}

SHUNT_FORK_TEXT void shim_fork_unwrap(int pid)
{
	if (pid != 0 && forking) {
		births_end(pid > 0 ? pid : -1);
		forking = 0;
	}
	wrapped = 0;
}

void shim_spawn_begin(void)
{
	spawn_enters();
	births_begin(0); /* what the new image keeps */
	spawning = 1;
}

void shim_spawn_end(int child)
{
	spawning = 0;
	births_end(child > 0 ? child : -1);
	atomic_fetch_sub(&spawns_now, 1);
}

static void hold_all(int fd, struct tsock *t, void *arg)
{
	struct tsock *u = shim_get(fd);

	(void)t;
	if (u)
		shim_slot_hold(u->slot, *(int *)arg);
	shim_put(u);
}

void shim_spawned(int child)
{
	/* Made by a vfork-like child: its own exec will tell. */
	if (!shim_in_vfork_child())
		shim_each(hold_all, &child);
}

/* --- exec ------------------------------------------------------------------ */

#define INHERIT_MAX 4096

struct inherit {
	char *buf;
	size_t len, cap;
	int n;
	int vchild; /* a vfork child's pid (else 0) */
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

/* fn on each open fd (fn may close it). */
static void each_open_fd(void (*fn)(int fd, void *arg), void *arg)
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
			if (d->d_name[0] != '.' && fd != dir)
				fn(fd, arg);
		}
	}
	sys_close(dir);
}

struct survivors {
	void (*fn)(int fd, struct tsock *t, void *arg);
	void *arg;
};

static void if_survivor(int fd, void *arg)
{
	struct survivors *v = arg;
	int fl = sys_fcntl(fd, F_GETFD, 0);
	struct tsock *t = fl < 0 || (fl & FD_CLOEXEC) ? NULL : tracked_socket(fd);

	if (t)
		v->fn(fd, t, v->arg);
}

static void each_survivor(void (*fn)(int fd, struct tsock *t, void *arg), void *arg)
{
	struct survivors v = { fn, arg };

	each_open_fd(if_survivor, &v);
}

/*
 * An exec's copy of the arena is inheritable from our fcntl to the exec,
 * in the fd table the whole process shares, where a fork by another thread
 * takes it too; a program that child then execs without the library held
 * it for good (a reviewer's reproducer, two threads forking while the main
 * thread exec'd: 10 runs in 200).  So once an exec made one (exec_armed,
 * never cleared: the fork copies the fd table before the memory, and the
 * number may have changed meanwhile), a child closes every copy of the
 * arena at the numbers copies had (by inode): a fork's child first thing,
 * a vfork child, which shares this memory with its parent but not the fd
 * table, in its own exec.
 */
static _Atomic int exec_armed SHUNT_FORK_HOT;
static _Atomic uint64_t arena_dev, arena_ino;
/* The numbers the copies had (a child looks at those alone, a few fstat()s
 * per fork), unless more than fit: then at every fd. */
#define ARMED_MAX 8
static _Atomic int armed_fd[ARMED_MAX], narmed;

static void arm(int afd)
{
	struct stat st;
	int n = atomic_load(&narmed), known = 0;

	if (sys_fstat(afd, &st) < 0)
		return;
	for (int i = 0; i < n && i < ARMED_MAX; i++)
		known |= atomic_load(&armed_fd[i]) == afd;
	if (!known && n < ARMED_MAX)
		atomic_store(&armed_fd[n], afd);
	if (!known)
		atomic_store(&narmed, n + 1);
	atomic_store(&arena_dev, (uint64_t)st.st_dev);
	atomic_store(&arena_ino, (uint64_t)st.st_ino);
	atomic_store(&exec_armed, 1);
}

static void drop_if_copy(int fd, void *keep)
{
	struct stat st;

	if (fd != *(int *)keep && sys_fstat(fd, &st) == 0 &&
	    (uint64_t)st.st_ino == atomic_load(&arena_ino) &&
	    (uint64_t)st.st_dev == atomic_load(&arena_dev))
		sys_close(fd);
}

/* keep: the caller's own copy, or -1. */
SHUNT_FORK_TEXT static void drop_exec_copies(int keep)
{
	int n = atomic_load(&narmed);

	if (!atomic_load(&exec_armed))
		return;
	if (n > ARMED_MAX) {
		each_open_fd(drop_if_copy, &keep);
		return;
	}
	for (int i = 0; i < n; i++)
		drop_if_copy(atomic_load(&armed_fd[i]), &keep);
}

/*
 * The children of posix_spawn, system() and popen() are made inside glibc
 * and run none of our code: they would keep the copy (a reviewer's case,
 * threads spawning while the main thread exec'd: 15 runs in 60 by
 * posix_spawn, 19 by system()).  So a spawn and an exec's window (from its
 * copy made inheritable to the exec's end) never overlap: a spawn waits for
 * an open window to close (the exec ends every thread, or fails and closes
 * it), and an exec that finds a spawn under way passes no arena (its new
 * image's sockets stay on TCP).  Each side says it is there, then looks at
 * the other (seq_cst): at least one sees the other.
 */
static void spawn_enters(void)
{
	for (;;) {
		atomic_fetch_add(&spawns_now, 1);
		if (!atomic_load(&exec_window))
			return;
		atomic_fetch_sub(&spawns_now, 1);
		nanosleep(&(struct timespec){ 0, 100000 }, NULL);
	}
}

/* 1 if the exec may open its window (the caller closes it). */
static int window_opens(void)
{
	atomic_store(&exec_window, 1);
	if (!atomic_load(&spawns_now))
		return 1;
	atomic_store(&exec_window, 0);
	return 0;
}

/* A store of 0 where there is one already writes the page all the same,
 * a copy-on-write fault in every forked child (bench/forkfaults.c). */
SHUNT_FORK_TEXT static void clear(_Atomic int *p)
{
	if (atomic_load_explicit(p, memory_order_relaxed))
		atomic_store(p, 0);
}

SHUNT_FORK_TEXT static void child_drops_exec_copies(void)
{
	drop_exec_copies(-1);
	/* Our own memory: none of ours is out, no spawn or exec under way. */
	clear(&exec_armed);
	clear(&narmed);
	clear(&spawns_now);
	clear(&exec_window);
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

	/* Our parent learns of a vfork child only from it: before the new
	 * image runs (and tells, if it runs the shim). */
	if (in->vchild)
		shim_slot_hold(s, in->vchild);
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

struct exec_env {
	size_t size;
	char **env;
	int afd; /* the arena's copy that crosses exec, or -1 */
	int window; /* this exec opened the window (no spawn meanwhile) */
	int lets_go; /* it replaces this image: let_go below is its */
	int var_at; /* where env holds SHUNT_INHERIT, or -1 */
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

static void leave_only(int fd, struct tsock *t, void *arg)
{
	int vchild = *(const int *)arg;

	if (vchild)
		shim_slot_hold(t->slot, vchild);
	leaving(fd, t);
}

/* No arena to pass on (a vfork child's close_range took our fds, as
 * CPython's subprocess does): the new image adopts nothing, and what
 * survives leaves the library all the same (t_apps_python: a cat child's
 * stdout, a moved socket, took its writes behind the ring). */
static char **nothing_crosses(char *const envp[])
{
	int vchild = shim_in_vfork_child() ? (int)sys_getpid() : 0;

	each_survivor(leave_only, &vchild);
	return (char **)envp;
}

/* --- Images that change credentials -------------------------------------------
 * The kernel runs a set-user-ID or set-group-ID file, or one with file
 * capabilities, with other credentials than the caller's (a secure exec:
 * the loader then ignores LD_PRELOAD), so the arena must not go along: a
 * helper's `su`-like set-user-ID program, which became another user and
 * exec'd a program with the fds it got, handed that user the arena, who
 * read the family's stream by rewriting a slot's ring pointer.  Nor for
 * posix_spawn's POSIX_SPAWN_RESETIDS with effective ids not our real ones
 * (spawn, preload.c).  All of it with system calls and the stack alone: a
 * vfork child asks too. */

static int has_caps(int dir, const char *path, int at_flags)
{
	char p[PATH_MAX + 32];
	int k = dir == AT_FDCWD ? snprintf(p, sizeof(p), "%s", path)
	      : (at_flags & AT_EMPTY_PATH) && !*path ? snprintf(p, sizeof(p), "/proc/self/fd/%d", dir)
						     : snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dir, path);

	if (k < 0 || (size_t)k >= sizeof(p))
		return 1;
	long n = sys_getxattr(p, "security.capability", NULL, 0);
	return n > 0 || (n < 0 && n != -ENODATA && n != -EOPNOTSUPP);
}

/* --- Images that cannot load us ---------------------------------------------
 * Nor may the arena go to an image that does not run the library: its fd
 * stayed open there for good, where a process of the same user (that may
 * not ptrace it) opened it through /proc/PID/fd and read the family's
 * stream by rewriting a slot's ring pointer (a helper's attack: a server
 * exec'd a helper with a clean environment, its socket on fd 0), and where
 * a program that checks its fds found one it never opened.  The library
 * runs in the new image when the environment's last LD_PRELOAD (or
 * /etc/ld.so.preload) names our file by a path, or the image is our own
 * executable (the shim linked in, as the tests' programs), and the dynamic
 * loader runs it at all: an ELF file of our class with a PT_INTERP header,
 * a script ("#!") whose interpreter is one (the kernel nests four deep),
 * or a file without either, which execvp runs with /bin/sh.  Unreadable
 * (execute permission only), the loader run by its own name, or anything
 * else: it may not (the library then runs there without the arena: what
 * the image inherits stays on TCP). */

static struct {
	dev_t dev;
	ino_t ino;
	int everywhere;   /* /etc/ld.so.preload names us */
	const char *name; /* what the loader loaded us by (the loader's own) */
} us;

/* fstatat of an item of the loader's list (n bytes, not terminated). */
static int stat_item(const char *item, size_t n, struct stat *st)
{
	char p[PATH_MAX];

	if (n >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, item, n);
	p[n] = '\0';
	return sys_fstatat(AT_FDCWD, p, st, 0);
}

/* An item of the loader's list that is our file.  Only a path is known
 * for sure: a bare name is searched for where the loader looks (an
 * LD_LIBRARY_PATH the image no longer had: not found, and the arena went
 * to a shell without the library; a reviewer's reproducer). */
static int is_us(const char *item, size_t n)
{
	struct stat st;

	return n && memchr(item, '/', n) && us.ino && stat_item(item, n, &st) == 0 &&
	       st.st_dev == us.dev && st.st_ino == us.ino;
}

/* The loader's list: items apart by blanks or colons. */
static int names_us(const char *list)
{
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, " :\t\n");
		if (is_us(p, n))
			return 1;
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

void shim_proc_init(void)
{
	Dl_info di;
	struct stat st;
	char buf[4096];
	int lib = dladdr((void *)shim_proc_init, &di) && di.dli_fname && *di.dli_fname;
	const char *f = lib ? di.dli_fname : "/proc/self/exe";

	if (sys_fstatat(AT_FDCWD, f, &st, 0) == 0) {
		us.dev = st.st_dev;
		us.ino = st.st_ino;
	}
	us.name = lib ? di.dli_fname : NULL;
	int fd = sys_openat(AT_FDCWD, "/etc/ld.so.preload", O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
	long n = fd >= 0 ? sys_pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (fd >= 0)
		sys_close(fd);
	buf[n > 0 ? n : 0] = '\0';
	us.everywhere = names_us(buf);
}

#define OUR_CLASS (__ELF_NATIVE_CLASS == 64 ? ELFCLASS64 : ELFCLASS32)

/* Has the ELF image h (n bytes read of fd) a loader (PT_INTERP)?  Of
 * either class: p_type leads both classes' program headers. */
static int has_interp(const unsigned char *h, size_t n, int fd)
{
	int c64 = h[EI_CLASS] == ELFCLASS64;
	size_t psz = c64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	unsigned char ph[64 * sizeof(Elf64_Phdr)];
	uint64_t off;
	unsigned entsize, num;

	if (n < sizeof(Elf64_Ehdr) || memcmp(h, ELFMAG, SELFMAG) ||
	    (!c64 && h[EI_CLASS] != ELFCLASS32))
		return 0;
	if (c64) {
		Elf64_Ehdr eh;
		memcpy(&eh, h, sizeof(eh));
		off = eh.e_phoff, entsize = eh.e_phentsize, num = eh.e_phnum;
	} else {
		Elf32_Ehdr eh;
		memcpy(&eh, h, sizeof(eh));
		off = eh.e_phoff, entsize = eh.e_phentsize, num = eh.e_phnum;
	}
	if (entsize != psz || num == 0 || num > 64 || off > (uint64_t)INT64_MAX ||
	    sys_pread(fd, ph, num * psz, (off_t)off) != (long)(num * psz))
		return 0;
	for (unsigned i = 0; i < num; i++) {
		uint32_t type;
		memcpy(&type, ph + i * psz, sizeof(type));
		if (type == PT_INTERP)
			return 1;
	}
	return 0;
}

/* What runs the image: 0, a loader of our class, which loads us;
 * IMG_STATIC, none; IMG_STATIC | IMG_FOREIGN, a loader of the other class
 * (a 32-bit program), which cannot load us and says so on stderr. */
static int image_kind(int dir, const char *path, int depth)
{
	unsigned char h[256];
	int fd = sys_openat(dir, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);

	if (fd < 0)
		return IMG_STATIC;
	long n = sys_pread(fd, h, sizeof(h) - 1, 0);
	int loader = n > 0 && has_interp(h, (size_t)n, fd);
	sys_close(fd);
	if (loader)
		return h[EI_CLASS] == OUR_CLASS ? 0 : IMG_STATIC | IMG_FOREIGN;
	if (n < 0 || depth >= 4 || (n >= SELFMAG && !memcmp(h, ELFMAG, SELFMAG)))
		return IMG_STATIC;
	/* Neither ELF nor "#!": execvp runs it with /bin/sh (execve fails). */
	if (n < 2 || h[0] != '#' || h[1] != '!')
		return image_kind(AT_FDCWD, "/bin/sh", depth + 1);
	/* "#!", blanks, the interpreter's path, then blanks or the line's end. */
	h[n] = '\0';
	char *p = (char *)h + 2;
	while (*p == ' ' || *p == '\t')
		p++;
	char *e = p;
	while (*e && *e != ' ' && *e != '\t' && *e != '\n')
		e++;
	if (!*e)
		return IMG_STATIC; /* the line goes on past what we read */
	*e = '\0';
	return *p == '/' ? image_kind(AT_FDCWD, p, depth + 1) : IMG_STATIC;
}

int shim_image_look(int dir, const char *path, int at_flags)
{
	struct stat st;
	char self[32];

	/* Let go (a seccomp filter that may kill): no call of ours at all. */
	if (atomic_load(&shim_hands_off))
		return IMG_SECURE;
	/* fexecve's fd may be O_PATH: opened anew, it reads. */
	if ((at_flags & AT_EMPTY_PATH) && !*path) {
		snprintf(self, sizeof(self), "/proc/self/fd/%d", dir);
		dir = AT_FDCWD;
		path = self;
		at_flags &= ~AT_EMPTY_PATH;
	}
	if (sys_fstatat(dir, path, &st, at_flags & AT_SYMLINK_NOFOLLOW) < 0)
		return IMG_SECURE;
	int img = image_kind(dir, path, 0);
	if (us.ino && st.st_dev == us.dev && st.st_ino == us.ino)
		img |= IMG_SELF;
	if ((st.st_mode & S_ISUID) || ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)) ||
	    has_caps(dir, path, at_flags))
		img |= IMG_SECURE;
	return img;
}

/* Will the library run in the image, and take the arena?  The loader
 * takes the last LD_PRELOAD of the environment (getenv the first: an
 * environment with ours first and another appended handed the arena to a
 * shell without the library; a reviewer's reproducer). */
static int loads_us(int img, char *const envp[])
{
	const char *list = NULL;

	if (img & (IMG_SECURE | IMG_STATIC))
		return 0;
	if ((img & IMG_SELF) || us.everywhere)
		return 1;
	for (size_t i = 0; envp && envp[i]; i++)
		if (!strncmp(envp[i], "LD_PRELOAD=", 11))
			list = envp[i] + 11;
	return list && names_us(list);
}

int shim_image_look_search(const char *file)
{
	const char *p = getenv("PATH"); /* as execvp() looks */
	char buf[PATH_MAX];
	size_t len = strlen(file);
	struct stat st;

	if (atomic_load(&shim_hands_off))
		return IMG_SECURE;
	if (strchr(file, '/'))
		return shim_image_look(AT_FDCWD, file, 0);
	for (p = p ? p : "/bin:/usr/bin";; p++) {
		const char *e = p;
		while (*e && *e != ':')
			e++;
		/* An empty element is the current directory, as for execvp. */
		const char *dir = e > p ? p : ".";
		size_t n = e > p ? (size_t)(e - p) : 1;
		if (n + len + 2 <= sizeof(buf)) {
			memcpy(buf, dir, n);
			buf[n] = '/';
			memcpy(buf + n + 1, file, len + 1);
			if (sys_fstatat(AT_FDCWD, buf, &st, 0) == 0 && S_ISREG(st.st_mode) &&
			    (st.st_mode & 0111))
				return shim_image_look(AT_FDCWD, buf, 0);
		}
		if (!*e)
			return IMG_SECURE; /* not found: the exec fails */
		p = e;
	}
}

/*
 * The loader of the new image must not meet an item of LD_PRELOAD it
 * cannot load because of us: it says so on the program's stderr, a line
 * over TCP it never printed.  So the environment it gets leaves out
 *  - our file, when a loader of the other ELF class runs the image
 *    (IMG_FOREIGN, a 32-bit program: "wrong ELF class"; a helper's 32-bit
 *    program under shunt run), and
 *  - the name we were loaded by, when it names nothing any more (after a
 *    chroot(), or a mount over our directory: "cannot open shared object
 *    file"; the same helper's unshare -m).
 * What the image starts then runs without us.
 */
static int lost(const char *item, size_t n)
{
	struct stat st;

	return us.name && strlen(us.name) == n && !memcmp(item, us.name, n) &&
	       stat_item(item, n, &st) < 0;
}

static int left_out(const char *item, size_t n, int img)
{
	return n && (((img & IMG_FOREIGN) && is_us(item, n)) || lost(item, n));
}

/* Does an LD_PRELOAD of envp list an item left out? */
static int unlists(char *const envp[], int img)
{
	for (size_t i = 0; envp && envp[i]; i++) {
		if (strncmp(envp[i], "LD_PRELOAD=", 11))
			continue;
		for (const char *p = envp[i] + 11; *p;) {
			size_t n = strcspn(p, " :\t\n");
			if (left_out(p, n, img))
				return 1;
			p += n + (p[n] != '\0');
		}
	}
	return 0;
}

/* Room for the LD_PRELOAD entries of envp, written again. */
static size_t unlist_room(char *const envp[], int un)
{
	size_t room = 0;

	for (size_t i = 0; un && envp && envp[i]; i++)
		if (!strncmp(envp[i], "LD_PRELOAD=", 11))
			room += strlen(envp[i]) + 1;
	return room;
}

/* The entry without the items left out, written at *room; NULL when none
 * is left. */
static char *unlist(const char *entry, char **room, int img)
{
	char *out = *room, *at = out + 11;

	memcpy(out, entry, 11);
	for (const char *p = entry + 11; *p;) {
		size_t n = strcspn(p, " :\t\n");
		if (n && !left_out(p, n, img)) {
			if (at > out + 11)
				*at++ = ':';
			memcpy(at, p, n);
			at += n;
		}
		p += n + (p[n] != '\0');
	}
	*at++ = '\0';
	*room = at;
	return at - 1 > out + 11 ? out : NULL;
}

/* envp into to (at least its length and one), without SHUNT_INHERIT, and
 * with LD_PRELOAD unlisted at room when un: the count. */
static size_t env_copy(char **to, char *const envp[], int img, int un, char *room)
{
	size_t j = 0;

	for (size_t i = 0; envp && envp[i]; i++) {
		if (!strncmp(envp[i], SHIM_INHERIT_ENV "=", sizeof(SHIM_INHERIT_ENV)))
			continue;
		if (un && !strncmp(envp[i], "LD_PRELOAD=", 11)) {
			char *e = unlist(envp[i], &room, img);
			if (e)
				to[j++] = e;
			continue;
		}
		to[j++] = envp[i];
	}
	to[j] = NULL;
	return j;
}

/* What crosses when nothing of the family does: envp, or a copy unlisted. */
static char **bare_env(char *const envp[], int img, int un)
{
	size_t n = 0;

	while (envp && envp[n])
		n++;
	if (!un)
		return (char **)envp;
	size_t size = sizeof(struct exec_env) + (n + 1) * sizeof(char *) + unlist_room(envp, un);
	struct exec_env *x = shim_scratch(size);
	if (!x)
		return (char **)envp;
	*x = (struct exec_env){ .size = size, .env = (char **)(x + 1), .afd = -1, .var_at = -1 };
	env_copy(x->env, envp, img, un, (char *)(x->env + n + 1));
	return x->env;
}

char **shim_exec_prepare(char *const envp[], int img, int replaces)
{
	if (atomic_load(&shim_hands_off))
		return (char **)envp;
	int afd = shim_arena_fd(); /* a copy, ours to close */
	int vchild = shim_in_vfork_child(), own = replaces && !vchild; /* this image goes */
	/* A vfork child's image drops the copies other threads' execs made
	 * inheritable, whatever it passes (none, when the steps below fail). */
	if (vchild)
		drop_exec_copies(afd);
	int un = unlists(envp, img);
	if (afd < 0)
		return bare_env(nothing_crosses(envp), img, un);
	size_t n = 0;
	while (envp && envp[n])
		n++;
	size_t size = sizeof(struct exec_env) + (n + 2) * sizeof(char *) + INHERIT_MAX + 64 +
		      unlist_room(envp, un);
	struct exec_env *x = shim_scratch(size); /* not the heap: a vfork child's */
	if (!x) {
		sys_close(afd);
		return bare_env(nothing_crosses(envp), img, un);
	}
	x->size = size;
	x->afd = afd;
	x->env = (char **)(x + 1);
	char *var = (char *)(x->env + n + 2);
	struct inherit in = { .buf = var, .cap = INHERIT_MAX + 64,
			      .vchild = vchild ? (int)sys_getpid() : 0 };
	in.len = (size_t)snprintf(var, in.cap, "%s=%d;", SHIM_INHERIT_ENV, afd);
	each_survivor(add_fd, &in);
	/* posix_spawn closes nothing of ours (and leaves the list to an exec
	 * of another thread: TSan saw them share it); a vfork child held
	 * nothing. */
	x->lets_go = own;
	if (x->lets_go)
		nlet_go = 0;
	if (x->lets_go && in.nkept >= 0)
		shim_each(let_go_one, &in);
	/* The arena crosses exec only to a new image with sockets of the
	 * family to adopt, run with the credentials the family had: after a
	 * setuid() it gave another user the slots' pointers, which every
	 * member follows (a helper's attack read a root server's stream from
	 * a program it exec'd as another user, without the library); and
	 * only to one that runs the library (above). */
	int pass = in.n > 0 && shim_arena_creds_same() && loads_us(img, envp);
	x->window = pass && own && window_opens();
	if (own)
		pass = x->window;
	size_t j = env_copy(x->env, envp, img, un, var + INHERIT_MAX + 64);
	x->var_at = pass ? (int)j : -1;
	if (pass)
		x->env[j++] = var;
	x->env[j] = NULL;
	/* Closed if the exec fails (shim_exec_done).  posix_spawn's child
	 * gets it by a file action (shim_spawn_actions). */
	if (pass && replaces) {
		if (own)
			arm(afd);
		sys_fcntl(afd, F_SETFD, 0);
	} else if (!pass) {
		sys_close(afd);
		x->afd = -1;
	}
	return x->env;
}

void shim_exec_done(char **env, char *const envp[])
{
	if (env == (char **)envp)
		return;
	struct exec_env *x = (struct exec_env *)env - 1;
	if (x->afd >= 0)
		sys_close(x->afd);
	if (x->window)
		atomic_store(&exec_window, 0);
	/* The exec failed: we hold what we let go of. */
	for (int i = 0; x->lets_go && i < nlet_go; i++)
		if (atomic_load(&let_go[i].s->gen) == let_go[i].gen)
			shim_slot_hold(let_go[i].s, shim_pid());
	if (x->lets_go)
		nlet_go = 0;
	shim_scratch_free(x, x->size);
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

/* Do glibc's file actions lie as struct glibc_spawn_action says?  Asked
 * of two dup2 actions of its own making: their tags and fds at our stride. */
static int layout_known(void)
{
	static _Atomic int known; /* 0 not asked, 1 yes, -1 no */
	posix_spawn_file_actions_t fa;

	if (atomic_load(&known))
		return atomic_load(&known) > 0;
	int ok = posix_spawn_file_actions_init(&fa) == 0;
	if (ok) {
		ok = posix_spawn_file_actions_adddup2(&fa, 5, 6) == 0 &&
		     posix_spawn_file_actions_adddup2(&fa, 7, 8) == 0 && fa.__used == 2;
		const struct glibc_spawn_action *a = (const struct glibc_spawn_action *)fa.__actions;
		ok = ok && a[0].tag == SPAWN_DUP2 && a[0].u.dup2.fd == 5 && a[0].u.dup2.newfd == 6 &&
		     a[1].tag == SPAWN_DUP2 && a[1].u.dup2.fd == 7 && a[1].u.dup2.newfd == 8;
		posix_spawn_file_actions_destroy(&fa);
	}
	atomic_store(&known, ok ? 1 : -1);
	return ok;
}

/*
 * The file actions posix_spawn's child runs: first a dup2 of the arena's
 * fd onto itself, which clears its close-on-exec in the child alone, then
 * the program's (mine holds a copy of their entries; the strings they name
 * stay the program's).  Made inheritable in our own table for the spawn's
 * while instead, it went to every child another thread forked meanwhile:
 * to a program exec'd without the library 478 times in 2000 (a helper's
 * reproducer), where a process of the same user could open it.  Returns
 * mine when the arena goes by it, else fa (when it cannot go, the
 * environment no longer names it).  shim_spawn_actions_done frees mine.
 */
const posix_spawn_file_actions_t *shim_spawn_actions(const posix_spawn_file_actions_t *fa,
						     char **env, char *const envp[],
						     posix_spawn_file_actions_t *mine)
{
	if (env == (char **)envp)
		return fa;
	struct exec_env *x = (struct exec_env *)env - 1;
	int used = fa ? fa->__used : 0;
	if (x->afd < 0)
		return fa;
	struct glibc_spawn_action *a = NULL;
	if (layout_known() && used >= 0 && used <= 4096 && (!fa || used <= fa->__allocated) &&
	    (!used || fa->__actions))
		a = calloc((size_t)used + 1, sizeof(*a));
	memset(mine, 0, sizeof(*mine));
	if (a) {
		mine->__actions = (void *)a;
		mine->__allocated = used + 1;
	}
	if (a && posix_spawn_file_actions_adddup2(mine, x->afd, x->afd) == 0 &&
	    (void *)mine->__actions == (void *)a && mine->__used == 1) {
		if (used)
			memcpy(a + 1, fa->__actions, (size_t)used * sizeof(*a));
		mine->__used = used + 1;
		return mine;
	}
	free(mine->__actions);
	mine->__actions = NULL;
	x->env[x->var_at] = NULL; /* it was the last */
	return fa;
}

void shim_spawn_actions_done(posix_spawn_file_actions_t *mine)
{
	free(mine->__actions);
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

static void spawn_lost(int fd, struct tsock *t, void *arg)
{
	(void)arg;
	if (survives_spawn(fd, NULL))
		atomic_fetch_or(&t->slot->flags, TF_EXPORTED);
}

void shim_spawn_lost(void)
{
	shim_each(spawn_lost, NULL);
}

/* --- The new image --------------------------------------------------------- */

/* The sockets the new image took, each with one fd of its: a second fd
 * of the same socket names the same tracked socket (a dup), or its last
 * close would say the socket is gone while another fd still holds it. */
struct adopted {
	struct tslot *s;
	int fd;
};

static void adopt_fd(int fd, struct tslot *s, uint32_t gen, struct adopted *seen, int *nseen)
{
	for (int i = 0; i < *nseen; i++) {
		if (seen[i].s == s) {
			shim_dup(seen[i].fd, fd);
			return;
		}
	}
	if (*nseen < 64 && shim_track_slot(fd, s, gen))
		seen[(*nseen)++] = (struct adopted){ s, fd };
}

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
	adopt_fd(fd, s, gen, seen, nseen);
}

/* A socket of ours that came in as stdin, stdout or stderr without being
 * listed (a spawn's file actions put it there): it is held, and does not
 * move while it is there (move.c). */
static void adopt_stdio(struct adopted *seen, int nseen)
{
	for (int fd = 0; fd < 3; fd++) {
		uint64_t ino = shim_kern_ino(fd);
		for (int i = 0; ino && i < nseen; i++)
			if (seen[i].s->ino == ino && !shim_has(fd))
				shim_dup(seen[i].fd, fd);
	}
}

void shim_inherit(void)
{
	const char *v = secure_getenv(SHIM_INHERIT_ENV);
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
