/*
 * move.c - when a TCP connection moves to shared memory, and how each of
 * its directions switches from the TCP stream to a ring.
 *
 * When: a connection starts on TCP and nothing is added to connect(),
 * accept() or its first bytes.  Once it has made upgrade-calls data calls
 * or carried upgrade-bytes (16 and 256 KiB by default) at one end, that end
 * starts to meet the other (meet.c), one non-blocking step per data call,
 * at calls n, n+2, n+4, n+8 ... (at most 64 apart), for at most 24 steps
 * and 10 s, then again later ("Later", below): a peer that does not run
 * shunt costs a few failed connect()s or accepts() per meeting, 17
 * meetings at most, and a connection that closes early never pays for
 * anything.  Between steps, every 64 KiB a call
 * carries counts as one call more: a bulk sender that writes megabytes a
 * call (nginx's sendfile: 5 MiB in 7 calls) steps as often as it needs to
 * meet its peer while the transfer lasts, and pays a step per 64 KiB at
 * most.
 *
 * The switch: each end moves its sends on its own.  It stops writing to
 * TCP, reads from the kernel how many bytes it ever wrote there (X),
 * publishes X in its switch word of the segment, then sends into its ring,
 * and one doorbell byte down TCP so that a peer blocked in a read of the
 * stream wakes.  The peer reads the TCP stream up to exactly X, then the
 * ring; every TCP byte after X is a doorbell.  No byte is lost, doubled or
 * reordered whatever each side does meanwhile: both count the same stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "internal.h"
#include "medium.h"
#include "meet.h"
#include "shim.h"
#include "sys.h"
#include "wake.h"

#define MAX_STEPS 24
#define MAX_MEET_NS (10ll * 1000000000)
#define STEP_GAP_MAX 64
#define STEP_BYTES (64u << 10) /* carried per call beyond this: more calls */

/* --- The ring budget -------------------------------------------------------
 * A stream wants big rings, but many connections with big rings walk
 * through more memory than the caches hold, and every message lands on
 * cold lines (nginx with 256 connections: 0.5x TCP with 512 KiB rings, 2x
 * with 32 KiB).  So a process's rings share a budget: the configured size
 * while they fit, halved down to 32 KiB beyond. */
#define RING_BUDGET (16u << 20)
#define RING_FLOOR (32u << 10)

static _Atomic int live_segments;

uint64_t shim_ring_size_now(void)
{
	uint64_t cap = shunt__config()->ring_size;
	uint64_t n = (uint64_t)atomic_load(&live_segments) + 1;

	while (cap > RING_FLOOR && n * 2 * cap > RING_BUDGET)
		cap /= 2;
	return cap;
}

void shim_segment_mapped(int delta)
{
	atomic_fetch_add(&live_segments, delta);
}

/* --- The mapping budget ------------------------------------------------------
 * Each moved connection maps its segment in pieces (three mappings on one
 * host, at most four: "The segment" in docs/design.md), and the kernel
 * allows a process vm.max_map_count of them in all.  Past that the
 * program's own mmap() fails with ENOMEM where over TCP it would not
 * (a helper's 1000 moved connections with the limit at 2000: the
 * server's malloc of 1 MiB and mmap of a page both failed).  So this
 * process's segments take at most half of what the program leaves free:
 * half the limit was too much for a program that used most of it itself
 * (a server at 64,730 mappings of 65,530, as a JVM or a search engine can
 * be: 300 connections from a hostile client and its own mmap() and
 * malloc() failed; a helper's attack).  The program's mappings are
 * counted (/proc/self/maps) at most once a second; the connections beyond
 * stay on TCP. */
#define SEG_MAPPINGS 4
#define MAP_LIMIT_DEFAULT 65530

static _Atomic long map_room; /* vm.max_map_count less the program's own mappings */
static _Atomic int64_t map_room_at;

static long read_map_limit(void)
{
	char buf[32];

	if (sys_read_text("/proc/sys/vm/max_map_count", buf, sizeof(buf)) <= 0)
		return MAP_LIMIT_DEFAULT;
	long v = strtol(buf, NULL, 10);
	return v > 0 ? v : MAP_LIMIT_DEFAULT;
}

/* The process's mappings now, ours included: /proc/self/maps's lines. */
static long count_maps(void)
{
	char buf[4096];
	long n = 0, k;
	int fd = sys_openat(AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return fd;
	while ((k = sys_read(fd, buf, sizeof(buf))) > 0)
		for (long i = 0; i < k; i++)
			n += buf[i] == '\n';
	sys_close(fd);
	return k < 0 ? k : n;
}

/* The limit less the program's own mappings (ours counted SEG_MAPPINGS a
 * segment), read again when a second old, by one thread at a time (the
 * others take the last count: at 65,000 mappings the file is some 5 MB,
 * read under the kernel's mmap lock). */
static long room_now(long ours)
{
	int64_t now = shunt_now_ns(), at = atomic_load(&map_room_at);
	long room = atomic_load(&map_room);

	/* The thread that moves the time on counts. */
	if (room && (now - at < 1000000000ll || !atomic_compare_exchange_strong(&map_room_at, &at, now)))
		return room;
	long lim = read_map_limit(), all = count_maps();
	room = all < 0 ? lim / 2 : lim - SHUNT_MAX(all - ours, 0l);
	atomic_store(&map_room, SHUNT_MAX(room, 1l));
	atomic_store(&map_room_at, now);
	return room;
}

/* Would one more segment take this process's past half the room the
 * program leaves? */
static int maps_short(void)
{
	long ours = (long)atomic_load(&live_segments) * SEG_MAPPINGS;

	return ours + SEG_MAPPINGS > room_now(ours) / 2;
}

/* --- Deciding --------------------------------------------------------------- */

static void describe(const struct tslot *s, char *buf, size_t n)
{
	char a[64], b[64];

	shunt_addr_fmt(&s->local, a, sizeof(a));
	shunt_addr_fmt(&s->peer, b, sizeof(b));
	snprintf(buf, n, "%s <-> %s", a, b);
}

void shim_give_up(struct tsock *t, int fd, enum shim_why why)
{
	struct tslot *s = t->slot;
	uint32_t st = atomic_load(&s->state);

	/* One line per connection, as one count: a connection that met
	 * nobody said so at its first try (meet_later). */
	if ((st == SLOT_PLAIN || st == SLOT_MEET) &&
	    atomic_compare_exchange_strong(&s->state, &st, SLOT_OFF) && shim_count_why(s, why))
		log_info("fd %d stays on TCP: %s", fd, shim_why_names[why]);
	if (st == SLOT_MEET) {
		shim_meet_drop(t);
		shim_vm_drop(t);
	}
}

#define give_up shim_give_up

/* Is any of fds 0, 1 and 2 this socket?  Then stdio may read or write it
 * where we cannot see. */
static int is_stdio(struct tsock *t)
{
	for (int fd = 0; fd < 3; fd++) {
		struct tsock *u = shim_get(fd);
		shim_put(u);
		if (u == t)
			return 1;
	}
	return 0;
}

/* What the file description and the socket say now (a listener's
 * timeouts pass to the sockets it accepts, for one): from here on the
 * wrappers keep it up to date. */
static void learn_options(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	struct timeval tv;
	unsigned len = sizeof(tv);
	int fl = sys_fcntl(fd, F_GETFL, 0);

	shim_set_nonblock(t, fl >= 0 && (fl & O_NONBLOCK));
	if (fl >= 0 && (fl & O_ASYNC))
		atomic_fetch_or(&s->flags, TF_OPTS);
	if (sys_getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0)
		shim_sockopt(t, fd, SOL_SOCKET, SO_RCVTIMEO, &tv, len);
	len = sizeof(tv);
	if (sys_getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0)
		shim_sockopt(t, fd, SOL_SOCKET, SO_SNDTIMEO, &tv, len);
}

/* The slot's addresses, written only when they change: a retry's start
 * wrote the same bytes while another thread's meeting read them (TSan in
 * t_shim_epoll epoll_write_first, a reader's and a writer's steps). */
static int learn_addrs(struct tslot *s, int fd)
{
	struct shunt_addr local, peer;

	if (shunt_addr_of(fd, 0, &local) < 0 || shunt_addr_of(fd, 1, &peer) < 0)
		return -1;
	if (!shunt_addr_eq(&s->local, &local))
		s->local = local;
	if (!shunt_addr_eq(&s->peer, &peer))
		s->peer = peer;
	return 0;
}

/* Why this connection may not move now (-1: it may).  Some reasons pass
 * (another holder may close its copy): those only delay. */
static int refusal(struct tsock *t, int fd, int *final)
{
	struct tslot *s = t->slot;
	uint32_t f = atomic_load(&s->flags);

	*final = 1;
	if (!shim_enabled())
		return WHY_POLICY;
	if (f & TF_STDIO)
		return WHY_STDIO; /* stdio has it (fdopen): for good */
	if (is_stdio(t)) {
		/* stdin, stdout or stderr for now: stdio may read or write it
		 * where we cannot see, until the program puts it elsewhere
		 * (sshd dup2()s its connection to 0 and 1, and off again). */
		*final = 0;
		return WHY_STDIO;
	}
	if (f & (TF_EXPORTED | TF_READERS))
		return WHY_SHARED; /* passed on, or read by two at once (io.c, shim_rx_enter) */
	if (f & (TF_OPTS | TF_SHUT))
		return WHY_OPTIONS;
	if (learn_addrs(s, fd) < 0)
		return WHY_POLICY; /* not connected, or not IP */
	if (!shunt__tcp_allowed(&s->peer) || !shunt__tcp_allowed(&s->local))
		return WHY_POLICY;
	if (maps_short()) {
		log_info("fd %d: %d segments mapped, half of vm.max_map_count: no more",
			 fd, atomic_load(&live_segments));
		return WHY_ERROR;
	}
	*final = 0;
	if (shim_slot_shared(s))
		return WHY_SHARED;
	if (f & TF_FOREIGN) {
		/* Its sender may still hold it: then it is shared too. */
		int held = shim_proc_holds(atomic_load(&s->foreign_pid), shim_kern_ino(fd));
		*final = held < 0;
		if (held != 0)
			return WHY_SHARED;
	}
	/* Last, as it reads /proc: only a connection about to move pays. */
	if (shim_uring_seen()) {
		*final = 1;
		return WHY_OPTIONS;
	}
	return -1;
}

/* The first step: may it move, and from which point of the stream? */
static int start(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	int final;

	learn_options(t, fd);
	int why = refusal(t, fd, &final);

	if (why >= 0) {
		if (final)
			give_up(t, fd, (enum shim_why)why);
		else /* what the close says if it never passes */
			atomic_store(&s->held_why, (uint32_t)why + 1);
		return why;
	}
	uint64_t consumed, counted = atomic_load(&s->rx_tcp);
	if (shim_kern_rx_consumed(fd, &consumed) < 0) {
		give_up(t, fd, WHY_ERROR);
		return WHY_ERROR;
	}
	/* The kernel's count is the truth: it includes what an inherited
	 * socket carried before we knew it.  Unless another thread's read is
	 * between the kernel and its count (counted twice: its bytes in the
	 * kernel's count already, and added to ours after): then ours, which
	 * that read completes, exactly.  The compare-and-swap fails for a
	 * read counted since we looked. */
	uint32_t inflight = atomic_load(&s->rx_inflight);
	if (inflight == 0)
		atomic_compare_exchange_strong(&s->rx_tcp, &counted, consumed);
	log_debug("fd %d: the meeting starts: the kernel counts %llu read, we %llu (%u reads "
		  "in the kernel)", fd, (unsigned long long)consumed, (unsigned long long)counted,
		  inflight);
	s->ino = shim_kern_ino(fd);
	uint32_t plain = SLOT_PLAIN;
	if (!atomic_compare_exchange_strong(&s->state, &plain, SLOT_MEET))
		return WHY_ERROR; /* another thread or process is at it */
	/* The meeting's own steps: looks refused before (wait_later) spent
	 * none of them. */
	atomic_store(&s->steps, 0);
	atomic_store(&s->started_ns, shunt_now_ns());
	shim_vm_wanted(t); /* which medium: between VMs, or this host's */
	return -1;
}

static int switch_tx(struct tsock *t, int fd, int patient, int busy);
static int peer_ready(struct tslot *s);

/* The log's "upgraded" and shunt stat's count of moves, once per
 * connection, when both ends are attached: the dialer's when it attaches
 * (the listener made the segment), the listener's once it sees the dialer
 * there.  A listener's meeting ends before its dialer attaches, and a
 * dialer that then called it off (a fork in its step) or died left a move
 * logged and counted that never happened, and its "never attached"
 * counted as well. */
static void announce(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	char what[160];

	if (atomic_load_explicit(&t->announced, memory_order_relaxed) ||
	    (s->side == 0 && !(atomic_load(&s->end.peer->state) & SHUNT_ST_OPEN)) ||
	    atomic_exchange(&t->announced, 1))
		return;
	shim_count_moved();
	describe(s, what, sizeof(what));
	log_info("fd %d upgraded: %s, %s side, rings of %llu bytes, %s medium", fd, what,
		 s->side ? "dialing" : "listening", (unsigned long long)s->end.seg.cap,
		 s->end.seg.medium ? s->end.seg.medium->name : "?");
}

static void moved(struct tsock *t, int fd)
{
	shim_segment_mapped(1); /* SLOT_MOVED already: shim_meet_step, shim_vm_step */
	atomic_store(&t->announced, 0); /* a socket connected again moves again */
	atomic_store(&t->after_move, 0);
	atomic_store(&t->judged, 0);
	announce(t, fd);
	shim_epoll_moved(t);
	/* Not if a send of ours holds the lock of our sends (switching
	 * them, or asleep on a full ring once switched): that send switches
	 * them itself (io.c, tx_route).  Waiting for it, a read that finished
	 * the meeting left a blocking client's reader stuck behind its
	 * writer, whose peer echoed into the ring nobody read (the soak). */
	switch_tx(t, fd, 0, 1);
}

/* `work`: calls, and one more per STEP_BYTES carried (shim_count). */
static void schedule(struct tslot *s, uint64_t work)
{
	uint32_t n = atomic_fetch_add(&s->steps, 1) + 1;
	uint64_t gap = n >= 6 ? STEP_GAP_MAX : 1ull << n;

	atomic_store(&s->next_step, work + gap);
}

/* Past the first steps, steps are spaced in time too (1 ms, 2 ms, ...,
 * 128 ms at most, some 1.5 s in all): a peer that is not scheduled for a
 * while (a busy machine, a peer that makes a million calls a second and
 * so spends its steps in a millisecond) still meets us, and the steps
 * stay 24. */
#define STEP_NS_MIN 1000000ll
#define STEP_NS_MAX 128000000ll

static int too_soon(struct tslot *s, uint64_t work)
{
	uint32_t n = atomic_load(&s->steps);
	int64_t now = shunt_now_ns();

	if (n < 6) {
		atomic_store(&s->stepped_ns, now);
		return 0;
	}
	int64_t gap = n - 6 >= 7 ? STEP_NS_MAX : SHUNT_MIN(STEP_NS_MIN << (n - 6), STEP_NS_MAX);
	if (now - atomic_load(&s->stepped_ns) >= gap) {
		atomic_store(&s->stepped_ns, now);
		return 0;
	}
	atomic_store(&s->next_step, work + STEP_GAP_MAX);
	return 1;
}

/* --- Later -----------------------------------------------------------------
 * A connection long on TCP still moves once both ends can: a look refused
 * because another live process holds the socket (a fork child that will
 * exit, a parent that will close its copy) is tried again, and so is a
 * meeting that found no peer (the peer may have been the refused one).
 * Given up for good after 24 looks, a Redis replication link whose master
 * forked for each BGSAVE (every child holds every socket while it writes
 * its snapshot) stayed on TCP at both ends: the master's refused, the
 * replica's had met nobody (t_apps_redis_repl, 2 runs in 3).  The tries
 * come on a grid of CLOCK_MONOTONIC seconds, which all processes of a host
 * read alike: after its k-th failure an end tries at the next multiple of
 * 2^(k-1) seconds, 8 at most, so two ends that failed at different times
 * meet on the 8-second grid at the latest.  A peer without shunt costs a
 * meeting's failed connects (or accepts) every 8 s, for RETRY_MAX tries;
 * a look, a few system calls a second at most.
 */
#define RETRY_MAX_LOG 3
#define RETRY_MAX 16 /* then for good: some 2 minutes of tries */

static void retry_after(struct tslot *s, uint64_t work)
{
	uint32_t k = atomic_fetch_add(&s->retries, 1);
	uint64_t period = 1ull << SHUNT_MIN(k, (uint32_t)RETRY_MAX_LOG);
	uint64_t now = (uint64_t)shunt_now_ns() / 1000000000u;

	atomic_store(&s->retry_s, (uint32_t)((now / period + 1) * period));
	atomic_store(&s->next_step, work + STEP_GAP_MAX);
}

/* May a step be taken now?  Else the next is STEP_GAP_MAX calls on. */
static int retry_due(struct tslot *s, uint64_t work)
{
	uint32_t at = atomic_load(&s->retry_s);

	if (!at || (uint64_t)shunt_now_ns() / 1000000000u >= at)
		return 1;
	atomic_store(&s->next_step, work + STEP_GAP_MAX);
	return 0;
}

/* Refused for a reason that may pass: look again soon, then later. */
static void wait_later(struct tslot *s, uint64_t work)
{
	if (atomic_load(&s->steps) < MAX_STEPS)
		schedule(s, work);
	else
		retry_after(s, work);
}

/* A meeting that found no peer in its steps and time: TCP until the next
 * try.  The first such end is logged and counted as "nopeer" (once per
 * connection: a later move logs "upgraded" as well). */
static void meet_later(struct tsock *t, int fd, uint64_t work)
{
	struct tslot *s = t->slot;
	uint32_t st = SLOT_MEET;

	if (!atomic_compare_exchange_strong(&s->state, &st, SLOT_PLAIN))
		return;
	shim_meet_drop(t);
	shim_vm_drop(t);
	if (shim_count_why(s, WHY_NOPEER))
		log_info("fd %d stays on TCP: nopeer (it tries again now and then)", fd);
	if (atomic_load(&s->retries) >= RETRY_MAX) {
		give_up(t, fd, WHY_NOPEER);
		return;
	}
	atomic_store(&s->steps, MAX_STEPS);
	retry_after(s, work);
}

static void take_step(struct tsock *t, int fd, uint64_t calls)
{
	struct tslot *s = t->slot;

	if (atomic_load(&s->state) == SLOT_PLAIN) {
		if (!retry_due(s, calls))
			return;
		/* One thread of ours at a time (a reader's and a writer's calls
		 * both step): start() fills the slot's addresses. */
		if (atomic_exchange(&t->starting, 1))
			return;
		int why = start(t, fd);
		atomic_store(&t->starting, 0);
		if (why >= 0) {
			wait_later(s, calls);
			return;
		}
	}
	if (atomic_load(&s->state) != SLOT_MEET || too_soon(s, calls))
		return;
	int rc = s->vm.on ? shim_vm_step(t, fd) : shim_meet_step(t, fd);
	if (rc == 1) {
		moved(t, fd);
		return;
	}
	if (rc == -EBUSY) {
		/* Another process holds the socket now (a child made without
		 * a pause, below): back on TCP, as a refusal. */
		uint32_t st = SLOT_MEET;
		if (atomic_compare_exchange_strong(&s->state, &st, SLOT_PLAIN))
			log_info("fd %d: meeting called off: another process holds the socket", fd);
		wait_later(s, calls);
		return;
	}
	/* The peer's end of the meeting went away under it (it gave up its
	 * own steps, or its listener closed): no peer met, this time. */
	if (rc == -EPIPE || rc == -ECONNRESET || rc == -ECONNREFUSED || rc == -EAGAIN) {
		log_debug("fd %d: the meeting broke off: %s", fd,
			  rc == -EAGAIN ? "too many meetings held" : strerror(-rc));
		meet_later(t, fd, calls);
		return;
	}
	if (rc < 0) {
		log_info("fd %d: meeting failed: %s", fd, strerror(-rc));
		give_up(t, fd, rc == -EACCES || rc == -EPERM || rc == -EPROTO ? WHY_REFUSED
										: WHY_ERROR);
		return;
	}
	schedule(s, calls);
	if (atomic_load(&s->steps) > MAX_STEPS ||
	    shunt_now_ns() - atomic_load(&s->started_ns) > MAX_MEET_NS)
		meet_later(t, fd, calls);
}

/* --- Pausing for a new process -------------------------------------------------
 * fork() and posix_spawn() make a process that holds our sockets before it
 * can say so: proc.c reserves its place among each slot's holders first.
 * A step that had found a socket unshared just before must not start or
 * finish a move after: so the maker pauses, waiting for the steps under
 * way (short, never blocking), and a step that begins while paused is not
 * taken (the next data call takes it).  Then it calls off the meetings in
 * progress of the sockets the child will hold.  A child made without a
 * pause (vfork, _Fork, clone) is seen by the meeting's last check. */

static pthread_mutex_t pause_mu SHUNT_FORK_HOT = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int paused SHUNT_FORK_HOT, stepping SHUNT_FORK_HOT;

void shim_moves_pause(void)
{
	pthread_mutex_lock(&pause_mu);
	atomic_store(&paused, 1);
	while (atomic_load(&stepping))
		sys_sched_yield();
}

void shim_moves_resume(void)
{
	atomic_store(&paused, 0);
	pthread_mutex_unlock(&pause_mu);
}

SHUNT_FORK_TEXT void shim_moves_forked(void)
{
	atomic_store(&stepping, 0); /* a step that was backing off, in a thread not copied */
	shim_moves_resume();
}

void shim_move_call_off(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint32_t st = SLOT_MEET;

	if (atomic_load(&s->state) != SLOT_MEET)
		return;
	shim_meet_drop(t);
	shim_vm_drop(t); /* our offer in the region, if any (meet_vm.c) */
	if (atomic_compare_exchange_strong(&s->state, &st, SLOT_PLAIN))
		log_debug("fd %d: meeting called off: a new process will hold the socket", fd);
}

/* A meeting in progress called off from a program's call that found no fd
 * free, which may run in a signal handler: no lock waited for, no memory
 * freed (shim_meet_shed), and no meeting between VMs (its region's offer
 * is the region's to let go of). */
static void call_off_one(int fd, struct tsock *t, void *arg)
{
	struct tslot *s = t->slot;
	uint32_t st = SLOT_MEET;

	if (atomic_load(&s->state) != SLOT_MEET || s->vm.on || shim_meet_shed(t) < 0)
		return;
	if (atomic_compare_exchange_strong(&s->state, &st, SLOT_PLAIN)) {
		log_debug("fd %d: meeting called off: the program is out of fds", fd);
		(*(int *)arg)++;
	}
}

int shim_moves_reclaim_fds(void)
{
	int n = 0;

	if (!shim_meetings_held() || shim_in_vfork_child() || pthread_mutex_trylock(&pause_mu))
		return 0;
	/* seq_cst both, as in step(): a step that began before we paused is
	 * seen, and we leave it alone. */
	atomic_store(&paused, 1);
	if (!atomic_load(&stepping))
		shim_each(call_off_one, &n);
	shim_moves_resume();
	if (n)
		log_info("out of fds: %d meeting(s) called off, to start again later", n);
	return n;
}

static void step(struct tsock *t, int fd, uint64_t calls)
{
	/* A vfork child's tables are its parent's (and a _Fork or clone
	 * child's a copy of them): it moves nothing. */
	if (shim_in_vfork_child())
		return;
	/* seq_cst both: we see the pause, or the pauser sees us. */
	atomic_fetch_add(&stepping, 1);
	if (!atomic_load_explicit(&t->slot->steps, memory_order_relaxed))
		atomic_store(&t->met_at, atomic_load(&t->slot->calls)); /* whether it pays */
	if (!atomic_load(&paused))
		take_step(t, fd, calls);
	atomic_fetch_sub(&stepping, 1);
}

/* --- Whether a move pays ----------------------------------------------------------
 * A move costs both ends some 300 us (the meeting's sockets, the segment's
 * memfd and mappings: some 140 system calls in all), 30 to 40 TCP data
 * calls' worth.  A connection that starts meeting at 16 calls and closes a
 * few calls later pays that and never gets it back: 500 connections of 12
 * round trips each ran at 0.6x TCP, of 30 at 1.1x, of 60 at 2x.  So each
 * family of processes (the arena's, which holds the shift: a server that
 * forks a process per connection learns from them all) learns its
 * threshold, upgrade-calls << shift, from how its connections end (their
 * last close in a process), counted in calls of its end from the meeting's
 * first step on (the meeting itself takes some 12: on this machine a move
 * paid from about 12 round trips after it):
 *  - moved (or met) and closed within SHIM_PAY_CALLS calls of that step:
 *    the move did not pay; the threshold doubles (1024 at most);
 *  - moved and made SHIM_PAY_CALLS calls from there: it paid; it halves;
 *  - closed on TCP without meeting, after enough calls to have paid at
 *    half the threshold: it halves.
 * (Counted from the move instead, moves of 30 round trips, which pay
 * 1.3x, were taken for moves that did not, and stopped.)
 * A workload of short connections thus stops moving them after a few,
 * one of long ones moves as before (its first calls at most 1024 on TCP),
 * and a mixed one settles where the moves that do not pay are about as
 * many as those that do.  An upgrade-calls the user set is kept as is.
 */
#define PAY_SHIFT_MAX 6u

static uint32_t pay_shift(void)
{
	uint32_t s = atomic_load_explicit(shim_arena_pay_shift(), memory_order_relaxed);

	return SHUNT_MIN(s, PAY_SHIFT_MAX); /* shared memory: any value */
}

static uint64_t upgrade_calls(const struct shunt_config *c)
{
	return c->calls_set ? c->upgrade_calls : (uint64_t)c->upgrade_calls << pay_shift();
}

static void pay_shift_by(int d)
{
	uint32_t s = pay_shift();

	if ((d > 0 && s < PAY_SHIFT_MAX) || (d < 0 && s > 0))
		atomic_store_explicit(shim_arena_pay_shift(), s + (uint32_t)d, memory_order_relaxed);
}

SHUNT_FORK_TEXT void shim_move_outcome(struct tsock *t)
{
	struct tslot *s = t->slot;
	uint32_t st = atomic_load(&s->state);

	if (shunt__config()->calls_set || atomic_exchange(&t->judged, 1))
		return;
	if (st == SLOT_MOVED && t->mapped) {
		/* Its calls on TCP stop at the move; those in shared memory go on. */
		uint64_t since = atomic_load(&s->calls) - atomic_load(&t->met_at) +
				 atomic_load(&t->after_move);
		pay_shift_by(since >= SHIM_PAY_CALLS ? -1 : 1);
	} else if (st == SLOT_MEET)
		pay_shift_by(1);
	else if (st == SLOT_PLAIN && !atomic_load(&s->steps) &&
		 atomic_load(&s->calls) >= upgrade_calls(shunt__config()) / 2 + SHIM_PAY_CALLS)
		pay_shift_by(-1);
}

static int due(struct tslot *s, uint64_t calls, uint64_t work)
{
	const struct shunt_config *c = shunt__config();

	if (work >= atomic_load_explicit(&s->next_step, memory_order_relaxed) &&
	    (atomic_load_explicit(&s->steps, memory_order_relaxed) || calls >= upgrade_calls(c)))
		return 1;
	/* Before the first step, enough bytes count as much as enough calls. */
	return !atomic_load_explicit(&s->steps, memory_order_relaxed) &&
	       atomic_load_explicit(&s->bytes_in, memory_order_relaxed) +
			       atomic_load_explicit(&s->bytes_out, memory_order_relaxed) >=
		       c->upgrade_bytes;
}

SHUNT_FORK_TEXT void shim_count(struct tsock *t, int fd, uint64_t in, uint64_t out)
{
	struct tslot *s = t->slot;
	uint64_t calls = atomic_fetch_add_explicit(&s->calls, 1, memory_order_relaxed) + 1;
	uint64_t bin = in ? atomic_fetch_add_explicit(&s->bytes_in, in, memory_order_relaxed) + in
			  : atomic_load_explicit(&s->bytes_in, memory_order_relaxed);
	uint64_t bout = out ? atomic_fetch_add_explicit(&s->bytes_out, out, memory_order_relaxed) + out
			    : atomic_load_explicit(&s->bytes_out, memory_order_relaxed);
	uint32_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
	if (st != SLOT_PLAIN && st != SLOT_MEET)
		return;
	uint64_t work = calls + (bin + bout) / STEP_BYTES;
	if (!due(s, calls, work))
		return;
	int err = errno;
	step(t, fd, work);
	errno = err;
}

/* --- The switch ----------------------------------------------------------------- */

/* The peer attached (its side is open) and has not closed. */
static int peer_ready(struct tslot *s)
{
	uint32_t st = atomic_load_explicit(&s->end.peer->state, memory_order_acquire);

	return (st & SHUNT_ST_OPEN) && !(st & (SHUNT_ST_CLOSED | SHUNT_ST_RESET));
}

/* A listener whose dialer never attached gives the segment up. */
static void abandon(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	int late = shunt_now_ns() - atomic_load(&s->started_ns) >= MAX_MEET_NS &&
		   !(atomic_load(&s->end.peer->state) & SHUNT_ST_OPEN);
	if (!shim_vm_may_abandon(t, late))
		return;
	uint32_t st = SLOT_MOVED;
	if (!(atomic_load(&s->phase) & (PH_TX_RING | PH_RX_KNOW)) &&
	    atomic_compare_exchange_strong(&s->state, &st, SLOT_OFF)) {
		shim_count_why(s, WHY_NOPEER);
		log_info("fd %d stays on TCP: the peer never attached", fd);
	}
}

/* Wait a little for sends already inside the kernel to come out: `tries`
 * looks, a sched_yield() between two. */
static int quiet(struct tslot *s, int tries)
{
	for (int i = 0;; i++) {
		if (atomic_load(&s->inflight) == 0)
			return 1;
		if (i + 1 >= tries)
			return 0;
		sys_sched_yield();
	}
}

static struct shunt_switch *my_sw(struct tslot *s)
{
	return &s->end.seg.ctl->sw[s->side];
}

static uint32_t peer_sw(struct tslot *s)
{
	return atomic_load_explicit(&s->end.seg.ctl->sw[1 - s->side].flags, memory_order_acquire);
}

/*
 * Is the peer's socket (on this host) still holding some of the bytes we
 * sent before X?  Then no read of its can be asleep at X: it takes those,
 * and its next read learns of X from the segment before it waits (the
 * fence here and the one in io.c's tcp_part: one of the two sees the
 * other).  The doorbell that wakes a reader asleep at X is then left out,
 * and only then: a doorbell behind data the peer has not read keeps the
 * connection from ever going back to TCP exactly (back.c), which handing
 * it to another process (SCM_RIGHTS, exec) needs.  Between VMs the peer's
 * kernel is not ours to ask: the doorbell goes.
 */
int shim_peer_before_x(struct tslot *s)
{
	uint32_t unread = 0;

	if (shim_peer_short_of_x(s))
		return 1;
	return !s->vm.on && shim_kern_unread(&s->peer, &s->local, &unread) == 0 && unread > 0;
}

/* What the peer's reads say they took (io.c, shim_rx_publish): a count
 * short of X is a reader that has bytes before X to take, in its socket,
 * in our send queue or on the way between (which no kernel queue shows
 * while its socket is busy).  It only ever hurts the peer to lie: a
 * doorbell it does not get, or one it must skip.  Not between VMs. */
int shim_peer_short_of_x(struct tslot *s)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (s->vm.on)
		return 0;
	uint64_t x = atomic_load_explicit(&my_sw(s)->tcp_off, memory_order_relaxed);
	uint64_t took = atomic_load_explicit(&s->end.seg.ctl->sw[1 - s->side].rx_tcp,
					     memory_order_relaxed);
	return took < x;
}

/* `patient`: waits longer for sends in the kernel (a shutdown).  `busy`:
 * what to do when a send of ours holds the lock: wait (0), or leave the
 * switch to that send (1, -EAGAIN). */
static int switch_tx(struct tsock *t, int fd, int patient, int busy)
{
	struct tslot *s = t->slot;

	if (atomic_load_explicit(&s->phase, memory_order_acquire) & PH_TX_RING)
		return 0;
	if (atomic_load(&s->state) != SLOT_MOVED || !t->mapped)
		return -EAGAIN;
	/* The peer's sends stay on TCP for good: so do ours (it could not
	 * ring us when our ring fills).  The fence orders our attachment
	 * (shunt_end_init's OPEN) before this look: shim_switch_for_shutdown. */
	atomic_thread_fence(memory_order_seq_cst);
	if (peer_sw(s) & (SHUNT_SW_TCP | SHUNT_SW_ASK))
		return -EAGAIN;
	if (!peer_ready(s)) {
		abandon(t, fd);
		return -EAGAIN;
	}
	announce(t, fd);
	/* Our side of the stream is shut: no doorbell could follow the data. */
	if (atomic_load(&s->flags) & TF_SHUT) {
		atomic_fetch_or(&s->phase, PH_NOBELL);
		return -EAGAIN;
	}
	/* Between VMs, a proof goes with the switch (meet_vm.c). */
	if (shim_proof_ready(t, fd, patient) < 0)
		return -EAGAIN;
	if (!busy)
		shim_lock(&s->tx_mu);
	else if (shim_trylock(&s->tx_mu) < 0)
		return -EAGAIN;
	int rc = 0;
	if (!(atomic_load(&s->phase) & PH_TX_RING)) {
		atomic_store(&s->switching, 1);
		uint64_t x = 0;
		/* A switch that is not a send's (a read's, the move's) looks
		 * once: a send in the kernel may take seconds (one send() of
		 * 100 MB made before the move), and each read of the other
		 * thread yielded 1000 times for it, 10 times slower than TCP
		 * (a helper's test, 12-04: Python's echo client, sendall of
		 * 100 MB in one thread, recv in another: 3.1 s, TCP 0.4 s).
		 * The send switches them itself once it is out (io.c,
		 * tcp_leave: tx_owed). */
		int tries = patient ? 100000 : busy ? 1 : 1000;
		rc = quiet(s, tries) ? shim_kern_tx_total(fd, &x) : -EAGAIN;
		if (rc == -EAGAIN)
			atomic_store(&s->tx_owed, 1);
		if (rc == 0) {
			struct shunt_switch *sw = my_sw(s);
			/* From here the stream carries doorbells, which must not
			 * wait for Nagle's algorithm or a cork. */
			shim_nodelay_take(t, fd);
			atomic_store_explicit(&sw->tcp_off, x, memory_order_relaxed);
			/* Release: tcp_off before the flag that covers it. */
			shim_sw_start(s, SHUNT_SW_RING);
			shim_proof_send(t, fd); /* after the flag: the peer reads it as proof */
			atomic_fetch_or_explicit(&s->phase, PH_TX_RING, memory_order_release);
			/* A peer going back to TCP read our flags before it
			 * asked, or we see its ask now (a seq_cst fence each,
			 * back.c): then we go back before a byte or a doorbell
			 * went to the ring. */
			atomic_thread_fence(memory_order_seq_cst);
			if (peer_sw(s) & SHUNT_SW_ASK)
				shim_back_answer_locked(t, fd);
			log_debug("fd %d: sends go to the ring from TCP offset %llu (%llu bytes "
				  "sent through us, %llu read)", fd, (unsigned long long)x,
				  (unsigned long long)atomic_load(&s->bytes_out),
				  (unsigned long long)atomic_load(&s->bytes_in));
		}
		atomic_store(&s->switching, 0);
	}
	shim_unlock(&s->tx_mu);
	if (rc == 0 && !shim_peer_before_x(s))
		shim_bell_send(s, fd, 0); /* wakes a peer asleep in a read of the stream: past X */
	if (rc == 0)
		atomic_fetch_add(&t->io_gen, 1);
	return rc;
}

int shim_switch_tx(struct tsock *t, int fd)
{
	return switch_tx(t, fd, 0, 0);
}

/*
 * A side that only reads switches its sends too, once the peer attached:
 * the listener's move ends before the dialer attaches, so its own switch
 * then failed, and with no send to switch them later the peer never saw
 * our switch: its writer, waiting for room, could not sleep on our
 * doorbells and napped 1 to 16 ms a wait (tcpbench stream: 33 MB/s
 * without spinning, 1 GB/s with it).  No wait for a send of ours.
 */
void shim_switch_tx_reader(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	announce(t, fd);
	if ((atomic_load_explicit(&s->phase, memory_order_relaxed) & (PH_TX_RING | PH_NOBELL)) ||
	    !peer_ready(s) || (peer_sw(s) & (SHUNT_SW_TCP | SHUNT_SW_ASK)))
		return;
	/* Nor once we said our sends stay on TCP for good (a shutdown before
	 * we could switch): the peer would take our FIN for our death, its
	 * word overwritten, and send by TCP after its switch, which reads as
	 * bytes behind our back (t_shim_epoll epoll_reactor_stress). */
	if ((shim_sw_mine(s) & SHUNT_SW_TCP) || (atomic_load(&s->flags) & TF_SHUT))
		return;
	switch_tx(t, fd, 0, 1);
}

/*
 * shutdown(SHUT_WR) before our sends reached the ring: they go there now,
 * so that the end of stream is the segment's and the TCP stream can still
 * carry our doorbells.  When they cannot (the peer has not attached), our
 * sends stay on TCP for good, which the peer learns before it switches
 * its own: "our sends stay" is written, then the peer's attachment read;
 * the peer writes its attachment, then reads ours (a seq_cst fence each:
 * one of them sees the other).  1: on the ring; 0: stays on TCP.
 */
int shim_switch_for_shutdown(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	shim_sw_set(s, SHUNT_SW_TCP);
	atomic_thread_fence(memory_order_seq_cst);
	if (peer_ready(s) && !(peer_sw(s) & SHUNT_SW_TCP) && switch_tx(t, fd, 1, 0) == 0)
		return 1;
	atomic_fetch_or(&s->phase, PH_NOBELL);
	return 0;
}

int shim_may_move(struct tsock *t)
{
	uint32_t st = atomic_load_explicit(&t->slot->state, memory_order_relaxed);

	return st == SLOT_PLAIN || st == SLOT_MEET;
}

/* The last look before our side commits a meeting (meet.c, meet_vm.c):
 * shut down, passed on or taken by stdio meanwhile (-ECANCELED), held by
 * a process made meanwhile without a pause (-EBUSY: vfork, _Fork, clone),
 * or a splice of ours in the kernel, which would not see the move (-EBUSY:
 * io.c, splice_plain). */
int shim_may_commit(struct tsock *t)
{
	if (atomic_load(&t->slot->flags) & TF_NOMOVE)
		return -ECANCELED;
	if (atomic_load(&t->splicing))
		return -EBUSY;
	return shim_slot_shared(t->slot) ? -EBUSY : 0;
}

/* The peer may switch, and ring, as soon as our end is attached: the
 * meeting step attaches it and says MOVED under t->mu (meet.c, meet_vm.c),
 * so once a step in progress is over, a doorbell that came means MOVED. */
SHUNT_FORK_TEXT int shim_moved_now(struct tsock *t)
{
	if (atomic_load(&t->slot->state) == SLOT_MEET) {
		pthread_mutex_lock(&t->mu);
		pthread_mutex_unlock(&t->mu);
	}
	return shim_moved(t);
}

int shim_peer_switched(struct tsock *t)
{
	struct tslot *s = t->slot;
	uint32_t ph = atomic_load_explicit(&s->phase, memory_order_acquire);

	if (ph & PH_RX_KNOW)
		return 1;
	if (atomic_load(&s->state) != SLOT_MOVED || !t->mapped)
		return 0;
	struct shunt_switch *sw = &s->end.seg.ctl->sw[1 - s->side];
	/* Acquire pairs with the peer's release in shim_switch_tx(). */
	if (!(atomic_load_explicit(&sw->flags, memory_order_acquire) & SHUNT_SW_RING))
		return 0;
	atomic_store(&s->x_peer, atomic_load_explicit(&sw->tcp_off, memory_order_relaxed));
	atomic_fetch_or_explicit(&s->phase, PH_RX_KNOW, memory_order_release);
	return 1;
}

/* --- Closing ------------------------------------------------------------------ */

void shim_linger0(int fd)
{
	struct linger l = { 1, 0 };

	sys_setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

/* The last call while going back (a close, an exit() with the socket
 * open), for our reads still on the peer's ring (we went back quietly, or
 * it has not answered): its bytes unread there reset the connection, as
 * TCP's close with data unread; else its doorbells leave our stream, where
 * the kernel's close would answer them with a reset.  1: a reset; 0: a FIN;
 * -1: our reads are the kernel's already.  An exit() took the doorbells
 * off in either case, and ended a new holder's stream with a FIN short of
 * the bytes its passer sent (a helper's review, t_shim_flags
 * exit_asker_ring_unread). */
int shim_back_rx_last(struct tsock *t, int fd)
{
	uint32_t ph = atomic_load(&t->slot->phase);

	if ((ph & (PH_RX_RING | PH_RX_PLAIN)) != PH_RX_RING)
		return -1;
	int rst = (atomic_load(&t->slot->flags) & TF_LINGER0) ||
		  shunt_end_readable(&t->slot->end) > 0;
	if (rst)
		shim_linger0(fd);
	else
		shim_back_exit_bells(t, fd);
	return rst;
}

/* Closing while going back to TCP: the ring's leftovers first (a little
 * while at most), then the kernel's close says the rest. */
static void close_back(struct tsock *t, int fd)
{
	int rc = shim_back_tx_last(t, fd);

	if (rc < 0)
		log_error("fd %d: closed while going back to TCP: %s; the peer's last bytes "
			  "may be lost", fd, strerror(-rc));
	int rst = shim_back_rx_last(t, fd);
	if (rst < 0)
		return;
	/* Our ring says so too (no doorbell: ours ended), so that the peer
	 * knows whether our kernel's close was a FIN (back.c, consumed):
	 * its reads go to TCP before they could take the ring's end for
	 * the stream's. */
	struct shunt_bell b = shim_bell(t, fd);
	shunt_end_close(&t->slot->end, &b, rst ? SHUNT_CLOSE_RST : SHUNT_CLOSE_TCP);
}

/*
 * The phase our close goes by.  Reads that never switched (none since the
 * move: a server that sent, then waited on something else until it
 * closed) while the stream holds nothing of the peer's before its switch:
 * what is left on it is the peer's doorbells (between VMs, its proof
 * first), and the kernel's close answered them with a reset, where TCP's
 * close of a socket with nothing unread is a FIN (varnish at a backend's
 * stall; t_shim_close close_unswitched, a helper's reproducer).  Such
 * reads are the ring's from here on, as a read at the offset makes them.
 */
static uint32_t close_phase(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	uint32_t ph = atomic_load(&s->phase);

	if ((ph & (PH_RX_RING | PH_RX_PLAIN)) || !shim_peer_switched(t) ||
	    atomic_load(&s->rx_tcp) < atomic_load(&s->x_peer))
		return ph;
	if (shim_proof_pending(s) && (shim_proof_settle(t, fd, 0) < 0 || shim_proof_pending(s)))
		return ph; /* its proof is not all there yet: as before */
	return atomic_fetch_or(&s->phase, PH_RX_RING) | PH_RX_RING;
}

void shim_close_end(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;

	if ((atomic_load(&s->phase) & PH_TX_BACK) || shim_peer_asks(t)) {
		close_back(t, fd);
		return;
	}
	struct shunt_bell b = shim_bell(t, fd);
	uint32_t ph = close_phase(t, fd);
	int64_t peer = shunt_end_peer_state(&s->end);
	/* Both FINs went (by the rings): TCP's socket is closed, and its close
	 * resets nothing, bytes unread or SO_LINGER {1, 0} (tcp_close; it
	 * reset, and the peer's poll said POLLERR: tests/diff_shim.c seed
	 * 267537594241091). */
	int done = (shunt_end_state(&s->end) & SHUNT_ST_SHUT_WR) && peer >= 0 &&
		   (peer & (SHUNT_ST_SHUT_WR | SHUNT_ST_CLOSED)) && !(peer & SHUNT_ST_RESET);
	int rst = !done && ((atomic_load(&s->flags) & TF_LINGER0) ||
			    ((ph & PH_RX_RING) && shunt_end_readable(&s->end) > 0));

	char what[160];
	describe(s, what, sizeof(what));
	log_debug("fd %d: closed in shared memory (%s, phase %#x, %s, %zd unread; waits: "
		  "%llu spun, %llu of them found it, %llu slept, %llu doorbells rung)", fd, what, ph,
		  rst ? "reset" : "end", shunt_end_readable(&s->end),
		  (unsigned long long)atomic_load(&s->end.spins),
		  (unsigned long long)atomic_load(&s->end.spin_hits),
		  (unsigned long long)atomic_load(&s->end.sleeps),
		  (unsigned long long)atomic_load(&s->end.wakeups));
	shunt_end_close(&s->end, &b,
			rst ? SHUNT_CLOSE_RST : done ? SHUNT_CLOSE_FIN : SHUNT_CLOSE_TCP);
	if (done && (atomic_load(&s->flags) & TF_LINGER0)) {
		struct linger l = { 0, 0 }; /* the kernel's socket is not closed yet */
		sys_setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	/* The kernel's close then says the same to anyone watching the TCP
	 * socket: a reset, or a FIN once the doorbells are drained (a byte
	 * left unread makes the kernel send a reset). */
	if (rst) {
		shim_linger0(fd);
		return;
	}
	if (ph & PH_RX_RING)
		shim_bell_ops.drain(&b, SHUNT_WAIT_ALL);
	shim_linger(fd, s->bell);
}
