/*
 * meet_vm.c - two ends of a TCP connection between virtual machines (or a
 * guest and its host) meet through an ivshmem region, and prove it through
 * their TCP stream.
 *
 * Nothing passes between guests but the TCP connection and the region, so
 * the rendezvous of meet.c (a UNIX socket, fds passed with SCM_RIGHTS) is
 * replaced by the region's directory (docs/design.md, "Between virtual
 * machines"):
 *
 *   offerer (lower endpoint)            taker (higher endpoint)
 *   OFFERED: lo, hi, offer nonce
 *                                        finds the one offer for its
 *                                        4-tuple, claims a segment slot,
 *                                        makes the segment (side 0);
 *                                        ANSWERED: slot, gen, answer nonce
 *   attaches (side 1), frees the entry
 *
 * Each step is one non-blocking look, made when a data call comes by
 * (move.c schedules them), as for a local meeting.  From there the move is
 * move.c's: each side switches its sends to its ring at a TCP offset, and
 * the stream carries doorbells.
 *
 * The proof.  Anyone who maps the region may write an offer or an answer
 * with any 4-tuple, and two connections in different networks may have
 * mirrored 4-tuples; neither may join two ends of different connections.
 * So right after its switch offset, before its first doorbell, each side
 * sends 8 bytes on the TCP stream: a mix of the nonce the *other* side
 * published and the slot.  Only the holder of the real TCP peer socket can
 * put bytes at that place of our stream, and only one who read this
 * slot's entry knows them.  A side reads the peer's ring only after those
 * 8 bytes came and matched; otherwise the connection is reset (EPROTO,
 * logged at level error), never joined to a stranger.
 *
 * A whole guest that dies sends no FIN: a connection moved between VMs
 * gets TCP keepalive and a user timeout, so that its sleepers learn of it
 * within about 20 s, as they would learn of a closed peer at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "find.h"
#include "internal.h"
#include "medium.h"
#include "meet.h"
#include "region.h"
#include "shim.h"
#include "sys.h"

#define PROOF_LEN 8
/* Bounds of the spin window of ends between VMs (spin_for). */
#define SPIN_MIN_US 50u
#define SPIN_MAX_US 5000u
#define INIT_WAIT_NS (3ll * 1000000000)
/* A dead guest is noticed by TCP: idle 10 s, then 5 probes 2 s apart, or
 * 20 s of doorbells unacknowledged. */
#define KEEPIDLE_S 10
#define KEEPINTVL_S 2
#define KEEPCNT 5
#define USER_TIMEOUT_MS 20000

/* --- The region of this process ----------------------------------------------
 * Found and mapped once, at the first connection that may use it; kept
 * for the life of the process (its fd is one of the library's own). */

enum { REGION_UNKNOWN, REGION_OPENING, REGION_OK, REGION_NONE };

static struct shunt_vmr region = { .fd = -1 };
static _Atomic int region_state;
static uint64_t boot_hash;
static uint64_t full_seen; /* the region's `full` count when we last reclaimed */

/* FNV-1a: the boot_id as one word (it only tells kernels apart). */
static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static void read_boot_id(void)
{
	char buf[64];

	sys_read_text("/proc/sys/kernel/random/boot_id", buf, sizeof(buf));
	boot_hash = buf[0] ? hash(buf) : 0;
}

/* The region is a PCI BAR: we run in a guest, and the peer in another VM
 * or on the host, never on this guest's CPUs. */
static int in_guest;

/* Open what the config names: a path (ours to format if still zero),
 * "pci" (the same), or by default the first ivshmem device, only if
 * somebody (`shunt vm region`) formatted it for shunt. */
static int open_region(void)
{
	const char *spec = shunt__config()->ivshmem;
	char path[256];
	int mode = spec[0] ? SHUNT_VMR_FORMAT : SHUNT_VMR_USE;

	if (!strcmp(spec, "none"))
		return -ENODEV;
	if (spec[0] == '/') {
		snprintf(path, sizeof(path), "%s", spec);
	} else {
		int rc = shunt_vmr_pci_path(0, path, sizeof(path));
		if (rc < 0)
			return rc;
	}
	/* A symlink is followed only if ours or root's: one another user put
	 * in a shared directory (/dev/shm) could name a file of ours. */
	struct stat ln;
	if (sys_fstatat(AT_FDCWD, path, &ln, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(ln.st_mode) &&
	    ln.st_uid != geteuid() && ln.st_uid != 0) {
		log_warn("ivshmem: %s is not used: a symlink of another user's", path);
		return -EPERM;
	}
	int fd = shunt__hide_fd(sys_openat(AT_FDCWD, path, O_RDWR | O_CLOEXEC, 0));
	if (fd < 0) {
		/* The config named it: a user who made a typo, or forgot to make
		 * it (shunt vm region), hears why nothing goes through it.  A
		 * guest without the device is the usual case: quiet. */
		if (spec[0] == '/')
			log_warn("ivshmem: %s cannot be opened (%s): no connection goes through a "
				 "region", path, strerror(-fd));
		return fd;
	}
	int rc = shunt_vmr_open(&region, fd, mode);
	if (rc == -EPERM) {
		log_warn("ivshmem: %s is not used: another user owns it, or every user may open it "
			 "(and read every connection in it)", path);
		return rc;
	}
	if (rc < 0) {
		log_info("ivshmem: %s is no region of ours: %s", path, strerror(-rc));
		return rc;
	}
	in_guest = !strncmp(path, "/sys/", 5);
	shunt__own_add(&region.fd); /* ours for the life of the process: no count sees it */
	shunt_vmr_use(&region);
	read_boot_id();
	log_info("ivshmem: region %s, %llu bytes, %u slots of %llu-byte rings", path,
		 (unsigned long long)region.size, region.nslots,
		 (unsigned long long)region.ring_max);
	return 0;
}

/* The region, or NULL.  One thread opens it; the others wait for it a
 * bounded time (a fork child whose parent was opening it gives up). */
static struct shunt_vmr *get_region(void)
{
	int st = atomic_load_explicit(&region_state, memory_order_acquire);
	int64_t until = 0;

	while (st != REGION_OK && st != REGION_NONE) {
		int unknown = REGION_UNKNOWN;
		if (st == REGION_UNKNOWN &&
		    atomic_compare_exchange_strong(&region_state, &unknown, REGION_OPENING)) {
			st = open_region() == 0 ? REGION_OK : REGION_NONE;
			atomic_store_explicit(&region_state, st, memory_order_release);
			break;
		}
		if (!until)
			until = shunt_now_ns() + INIT_WAIT_NS;
		if (shunt_now_ns() > until)
			return NULL;
		sys_sched_yield();
		st = atomic_load_explicit(&region_state, memory_order_acquire);
	}
	return st == REGION_OK ? &region : NULL;
}

/* --- Choosing the medium ---------------------------------------------------------- */

int shim_vm_wanted(struct tsock *t)
{
	struct tslot *s = t->slot;

	const struct shunt_config *c = shunt__config();

	memset(&s->vm, 0, sizeof(s->vm));
	/* Peers named in the config go through the region wherever they are
	 * (tests use loopback that way); else those not in our namespace. */
	if (!strcmp(c->ivshmem, "none") ||
	    (c->n_vm_nets ? !shunt__vm_peer(&s->peer) : shim_kern_addr_ours(&s->peer)) || !get_region())
		return 0;
	s->vm.on = 1;
	s->vm.offerer = shunt_addr_cmp(&s->local, &s->peer) < 0;
	return 1;
}

/* --- Reclaiming slots of ends that are gone ----------------------------------------
 * A side that closes lets go of its slot; one killed, or that exits
 * without closing, cannot.  Its TCP socket is gone then, which any party
 * on the same kernel and in the same namespace can ask sock_diag about.
 * So when a taker finds no free slot it says so in the header, and every
 * party that sees that looks for dead ends of its own kernel. */

static void owner_of(int fd, struct shunt_vmr_owner *o)
{
	memset(o, 0, sizeof(*o));
	o->boot = boot_hash;
	if (shim_kern_netns_cookie(fd, &o->netns) < 0)
		o->netns = 0;
	o->ino = shim_kern_ino(fd);
}

static void reclaim(struct shunt_vmr *r, uint64_t netns)
{
	unsigned freed = 0;

	for (uint32_t i = 0; i < r->nslots; i++) {
		struct shunt_vmr_slot sl;
		shunt_vmr_slot_copy(r, i, &sl);
		uint64_t w = atomic_load_explicit(&sl.word, memory_order_relaxed);
		if ((w & 0xffu) != SHUNT_VMS_USED)
			continue;
		for (int side = 0; side < 2; side++) {
			const struct shunt_vmr_owner *o = &sl.owner[side];
			uint32_t bit = side ? SHUNT_VMS_DONE1 : SHUNT_VMS_DONE0;
			if ((w & bit) || !o->boot || o->boot != boot_hash || !o->netns ||
			    o->netns != netns || !o->ino)
				continue;
			/* Side 0 is the taker, the higher endpoint. */
			const struct shunt_addr *mine = side ? &sl.lo : &sl.hi;
			const struct shunt_addr *theirs = side ? &sl.hi : &sl.lo;
			uint64_t ino = 0;
			uint32_t uid;
			/* Alive, or not known to be gone (an error that is no
			 * answer): kept.  A dual-stack socket is found by its
			 * IPv4 addresses too (kern.c). */
			int rc = shim_kern_sock_find(mine, theirs, &ino, &uid);
			if (rc != -ENOENT && (rc < 0 || ino == o->ino))
				continue;
			/* A taker gone before the offerer came: the offerer must
			 * not come any more (the same CAS as the taker's own). */
			if (!(w & SHUNT_VMS_OPEN1))
				shunt_vmr_abandon(r, i, SHUNT_VMS_GEN(w));
			else
				shunt_vmr_done(r, i, SHUNT_VMS_GEN(w), bit);
			freed++;
		}
	}
	if (freed)
		log_info("ivshmem: let go of %u slot side(s) whose sockets are gone", freed);
}

static void maybe_reclaim(struct shunt_vmr *r, int fd)
{
	uint64_t full = shunt_vmr_full_count(r), netns = 0;

	if (full == full_seen || shim_kern_netns_cookie(fd, &netns) < 0)
		return;
	full_seen = full;
	reclaim(r, netns);
}

/* --- The proof ------------------------------------------------------------------------ */

/* splitmix64's finaliser over the nonce and the slot it goes with. */
static uint64_t proof_of(uint64_t nonce, uint32_t slot, uint32_t gen)
{
	uint64_t z = nonce ^ ((uint64_t)slot << 32 | gen);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void set_proof(struct tslot *s, uint64_t mine, uint64_t theirs)
{
	s->vm.proof_tx = proof_of(theirs, s->vm.seg, s->vm.seg_gen);
	s->vm.proof_rx = proof_of(mine, s->vm.seg, s->vm.seg_gen);
	atomic_store(&s->vm.proof_got, 0);
	s->vm.proof_need = PROOF_LEN;
}

static void le64(uint64_t v, uint8_t *out)
{
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(v >> (8 * i));
}

/*
 * Not a proof, and our sends never left TCP: whoever answered our offer
 * is not our TCP peer (a stranger's mirrored 4-tuple, or a hostile
 * guest).  The connection goes back to being plain TCP, whole: the bytes
 * we looked at are the real peer's data, left for the program.
 */
static void unmove(struct tsock *t)
{
	struct tslot *s = t->slot;
	uint32_t st = SLOT_MOVED;

	atomic_store(&s->vm.proof_got, PROOF_LEN);
	if (!atomic_compare_exchange_strong(&s->state, &st, SLOT_OFF))
		return;
	atomic_fetch_and(&s->phase, ~PH_RX_KNOW);
	shim_count_why(s, WHY_REFUSED);
	shim_epoll_back(t);
	log_error("ivshmem: whoever answered for slot %u does not hold the other end of this "
		  "TCP connection (no proof after its offset): it stays on TCP", s->vm.seg);
	if (get_region())
		shunt_vmr_done(&region, s->vm.seg, s->vm.seg_gen, SHUNT_VMS_DONE1);
	s->vm.has_seg = 0;
}

/* Not a proof after we moved our sends: nothing can be put back. */
static void proof_failed(struct tslot *s, const char *why)
{
	atomic_store(&s->vm.proof_got, PROOF_LEN);
	log_error("ivshmem: %s (slot %u): the connection is reset", why, s->vm.seg);
	shunt_end_fail(&s->end, -EPROTO);
}

/* The bytes p[0..n) come at offset `got` of the proof: 1 they fit, 0 not. */
static int proof_fits(struct tslot *s, uint32_t got, const uint8_t *p, size_t n)
{
	uint8_t want[PROOF_LEN];

	le64(s->vm.proof_rx, want);
	return memcmp(want + got, p, n) == 0;
}

/* A mismatch: plain TCP again if nothing was consumed and our sends are
 * still on TCP (-ENOTCONN; -EAGAIN when the caller may not `act`: it
 * holds locks that unmove() takes, and a data call will do it), else a
 * reset (0: the ring reports it). */
static int not_proof(struct tsock *t, uint32_t got, int act)
{
	struct tslot *s = t->slot;

	if (got == 0 && !(atomic_load(&s->phase) & PH_TX_RING)) {
		if (!act)
			return -EAGAIN;
		unmove(t);
		return -ENOTCONN;
	}
	proof_failed(s, "the bytes after the peer's switch offset are not its proof");
	return 0;
}

/* Look at what the stream has of the proof without taking anything
 * that does not fit it: 1 complete, 0 not yet, -ENOTCONN, or -errno. */
static int proof_look(struct tsock *t, int fd, int act)
{
	struct tslot *s = t->slot;
	uint32_t zero = 0;
	uint8_t buf[PROOF_LEN];

	if (!atomic_compare_exchange_strong(&s->vm.proof_taking, &zero, 1))
		return 0; /* another thread is at it */
	uint32_t got = atomic_load(&s->vm.proof_got);
	long n = got < PROOF_LEN ? sys_recv(fd, buf, PROOF_LEN - got, MSG_PEEK | MSG_DONTWAIT) : 0;
	int rc = 0;
	if (got >= PROOF_LEN)
		rc = 1;
	else if (n == 0 || (n > 0 && !proof_fits(s, got, buf, (size_t)n))) {
		rc = not_proof(t, got, act); /* none, or the stream ended first */
		rc = rc ? rc : 1;
	} else if (n < 0)
		rc = n == -EAGAIN ? 0 : (int)n;
	else if (sys_recv(fd, buf, (size_t)n, MSG_DONTWAIT) == n) {
		/* What we took is what we peeked unless a read of the
		 * program's entered the kernel in between (a poll takes the
		 * proof too, shim_proof_seen): then the stream is lost. */
		if (!proof_fits(s, got, buf, (size_t)n))
			proof_failed(s, "a read took part of the peer's proof");
		atomic_fetch_add(&s->rx_tcp, (uint64_t)n);
		atomic_store(&s->vm.proof_got, got + (uint32_t)n);
		rc = got + (uint32_t)n == PROOF_LEN;
		if (rc)
			log_debug("ivshmem: the peer's proof came: its ring is ours to read");
	}
	atomic_store(&s->vm.proof_taking, 0);
	return rc;
}

long shim_proof_take(struct tsock *t, const uint8_t *p, size_t n)
{
	struct tslot *s = t->slot;

	if (!shim_proof_pending(s))
		return 0;
	uint32_t got = atomic_load(&s->vm.proof_got);
	size_t k = SHUNT_MIN(n, (size_t)(PROOF_LEN - got));
	if (!p) { /* MSG_TRUNC took them unseen */
		proof_failed(s, "a read with MSG_TRUNC took the peer's proof unseen");
		return -1;
	}
	if (!proof_fits(s, got, p, k))
		return not_proof(t, got, 1) == -ENOTCONN ? -2 : -1;
	atomic_store(&s->vm.proof_got, got + (uint32_t)k);
	if (got + k == PROOF_LEN)
		log_debug("ivshmem: the peer's proof came: its ring is ours to read");
	return (long)k;
}

static int proof_wait(struct tsock *t, int fd, int64_t deadline, int act)
{
	struct tslot *s = t->slot;
	struct timespec ts;

	for (;;) {
		if (!shim_proof_pending(s))
			return 0;
		/* Only right at the peer's offset: before it, the stream is data. */
		if (!shim_peer_switched(t) || atomic_load(&s->rx_tcp) < atomic_load(&s->x_peer))
			return -EAGAIN;
		int rc = proof_look(t, fd, act);
		if (rc == -EAGAIN)
			return rc;
		if (rc < 0 && rc != -ENOTCONN) {
			proof_failed(s, "the stream broke inside the peer's proof");
			return 0;
		}
		if (rc < 0 || rc == 1)
			return rc < 0 ? rc : 0;
		if (deadline == 0 || (deadline != SHUNT_NEVER && shunt_now_ns() >= deadline))
			return -EAGAIN;
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
		int64_t until = SHUNT_MIN(deadline, shunt_now_ns() + 100000000);
		rc = sys_ppoll(&p, 1, shunt_left(until, &ts));
		if (rc == -EINTR)
			return rc;
	}
}

int shim_proof_recv(struct tsock *t, int fd, int64_t deadline)
{
	return proof_wait(t, fd, deadline, 1);
}

int shim_proof_settle(struct tsock *t, int fd, int64_t deadline)
{
	if (!shim_proof_pending(t->slot) || !shim_peer_switched(t))
		return 0;
	return proof_wait(t, fd, deadline, 0);
}

/*
 * A poll or select at the peer's offset: what the stream has there is its
 * proof (nothing before the offset is left to read).  Told as readable, a
 * blocking read took the proof, found the ring empty and waited there (a
 * reader that polls first, then reads, as select() loops do, hung where
 * TCP's poll would have slept on: t_shim_poll poll_across_move over a
 * region).  So the wait takes it, unless a read of the program's is in
 * the kernel (it takes the proof itself, tcp_cut).
 */
void shim_proof_seen(struct tsock *t, int fd)
{
	if (shim_proof_pending(t->slot) && !atomic_load(&t->slot->rx_inflight))
		shim_proof_settle(t, fd, 0);
}

/*
 * May our sends switch to the ring now?  The proof follows our offset, so
 * the socket needs room for it (writable: far more than 8 bytes, and the
 * switch holds the program's sends off meanwhile).  A patient switch (at
 * shutdown, which must not fail for want of room) waits in
 * shim_proof_send instead.
 *
 * Neither side waits for the other's proof before it switches: the
 * offerer could only see the taker's after reading the stream up to the
 * taker's offset, and meanwhile its sends would pile up on TCP in front of
 * every doorbell it rings (measured: an epoll echo server whose sends
 * wait for ring space, and does not read while they do, never heard the
 * client's doorbells behind 200 KiB of data it had not read).  So a
 * stranger who answers an offer gets the offerer's ring data, as anyone
 * who maps the region could read it; it never gets our reads.
 */
int shim_proof_ready(struct tsock *t, int fd, int patient)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	struct timespec zero = { 0, 0 };

	if (!t->slot->vm.proof_need || patient)
		return 0;
	return sys_ppoll(&p, 1, &zero) == 1 && (p.revents & POLLOUT) ? 0 : -EAGAIN;
}

/* Once the offset is out, the proof must follow it before anything else:
 * wait for room a little (shim_proof_ready saw some, so this is for a
 * stream that broke meanwhile), then give up on the connection. */
void shim_proof_send(struct tsock *t, int fd)
{
	struct tslot *s = t->slot;
	int64_t until = shunt_now_ns() + 1000000000;
	uint8_t b[PROOF_LEN], *p = b;
	long left = PROOF_LEN;

	if (!s->vm.proof_need || s->vm.proof_sent)
		return;
	s->vm.proof_sent = 1;
	le64(s->vm.proof_tx, b);
	while (left > 0) {
		long n = sys_send(fd, p, (size_t)left, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			left -= n;
			continue;
		}
		if (n != -EAGAIN || shunt_now_ns() > until)
			break;
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		struct timespec ts = { 0, 10000000 };
		sys_ppoll(&pf, 1, &ts);
	}
	if (left > 0)
		proof_failed(s, "our proof could not be sent");
}

/* --- Meeting ----------------------------------------------------------------------------- */

static uint64_t random64(void)
{
	uint64_t v = 0;

	if (sys_getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = (uint64_t)shunt_now_ns() * 0x9e3779b97f4a7c15ull;
	return v;
}

static uint8_t bell_byte(void)
{
	uint8_t b = (uint8_t)random64();

	return b ? b : 0x5a;
}

/* Whoever meets between VMs watches for a dead peer as TCP can. */
static void keepalive(int fd)
{
	int on = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT, uto = USER_TIMEOUT_MS;

	sys_setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	sys_setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	sys_setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	sys_setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	sys_setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

/*
 * How long a waiting end spins before it sleeps.  Asleep, it is woken by a
 * doorbell on the TCP stream, which costs about what one trip over the
 * VMs' network does (a millisecond or two under TCG, tens of microseconds
 * under KVM, measured: docs/design.md); spinning up to that long never
 * costs more than twice the best choice (the ski-rental bound), and the
 * window still shrinks when spins fail (spin.h).  So the default window is
 * the connection's own smoothed round trip, as TCP measured it, and not
 * the local default, which is 0 in the one-vCPU guests that need it most:
 * the peer runs on another VM's CPU.  A spin-us that was set wins.
 */
static int spin_for(int fd)
{
	const struct shunt_config *c = shunt__config();
	struct tcp_info ti;
	unsigned len = sizeof(ti);

	if (c->spin_set)
		return c->spin_us;
	memset(&ti, 0, sizeof(ti));
	if (sys_getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || !ti.tcpi_rtt)
		return (int)(SPIN_MAX_US / 4);
	return (int)SHUNT_MAX(SPIN_MIN_US, SHUNT_MIN(ti.tcpi_rtt, (uint32_t)SPIN_MAX_US));
}

static void start_end(struct tsock *t, int fd, struct shunt_seg *seg, int side, uint8_t bell)
{
	struct tslot *sl = t->slot;

	sl->side = (uint32_t)side;
	sl->bell = bell;
	shim_end_init(sl, seg, side, spin_for(fd));
	/* A guest's run queue says nothing of the peer's CPU, and a one-vCPU
	 * guest counts its kernel threads as crowding it at any load
	 * (/proc/loadavg showed 4 runnable in an idle guest): spinning there
	 * takes no CPU the peer needs, so the crowding rule does not apply
	 * (the window still adapts, and the spin yields now and then). */
	if (in_guest)
		sl->end.spin.forced = 1;
	t->mapped = 1;
}

/* The offerer: publish the offer, then attach to the answer. */
static int offer_step(struct tsock *t, int fd, struct shunt_vmr *r)
{
	struct tslot *sl = t->slot;
	struct shim_vm *v = &sl->vm;

	if (!v->has_entry) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		v->nonce = random64();
		int rc = shunt_vmr_offer(r, &sl->local, &sl->peer, v->nonce, (uint64_t)now.tv_sec,
					 &v->entry, &v->entry_gen);
		if (rc == -ENOSPC)
			return 0; /* the directory is full: maybe later */
		if (rc < 0)
			return rc;
		v->has_entry = 1;
		return 0;
	}
	uint32_t slot, gen;
	uint64_t theirs, cap;
	int rc = shunt_vmr_answered(r, v->entry, v->entry_gen, &slot, &gen, &theirs);
	if (rc <= 0)
		return rc == 0 ? 0 : -EPROTO; /* our entry was taken from us */
	if ((rc = shim_may_commit(t)) < 0)
		return rc; /* the taker lets its slot go when we withdraw */
	struct shunt_seg seg = { 0 };
	uint8_t bell = 0;
	rc = shunt_vmr_slot_ring(r, slot, &cap);
	if (rc == 0)
		rc = shunt_medium_ivshmem.attach(&seg, (int64_t)((uint64_t)gen << 32 | slot), cap,
						 &bell);
	if (rc == 0 && bell == 0)
		rc = -EPROTO;
	if (rc == 0 && (rc = shunt_vmr_attach(r, slot, gen)) < 0)
		log_info("ivshmem: the taker let slot %u go before we came", slot);
	if (rc < 0) {
		if (seg.base)
			shunt_unmap(&seg);
		return rc == -ESTALE ? -ECONNREFUSED : rc;
	}
	v->seg = slot;
	v->seg_gen = gen;
	v->has_seg = 1;
	set_proof(sl, v->nonce, theirs);
	struct shunt_vmr_owner o;
	owner_of(fd, &o);
	shunt_vmr_own(r, slot, 1, &o, &sl->local, &sl->peer);
	start_end(t, fd, &seg, 1, bell);
	shunt_vmr_withdraw(r, v->entry, v->entry_gen);
	v->has_entry = 0;
	return 1;
}

/* The taker: find the offer, make the segment in a slot, answer.  All in
 * one step, so that nothing is left half done between calls.  The move is
 * ours from here, as a local listener's is once it answered (meet.c): the
 * offerer attaches at its next step and switches at once; we switch at
 * our next send.  Should it never come, move.c's abandon() lets the slot
 * go (shim_vm_may_abandon); should we shut down first, the switch words
 * keep its sends on TCP (move.c, shim_switch_for_shutdown). */
static int take_step(struct tsock *t, int fd, struct shunt_vmr *r)
{
	struct tslot *sl = t->slot;
	struct shim_vm *v = &sl->vm;
	uint32_t entry, gen;
	uint64_t theirs;
	int rc = shunt_vmr_find(r, &sl->peer, &sl->local, &entry, &gen, &theirs);

	if (rc == -EEXIST)
		log_info("ivshmem: two offers for one connection; waiting for one to go");
	if (rc <= 0)
		return 0;
	if ((rc = shim_may_commit(t)) < 0)
		return rc;
	uint64_t cap = SHUNT_MIN(shim_ring_size_now(), r->ring_max);
	struct shunt_seg seg = { 0 };
	int64_t handle;
	uint8_t bell = bell_byte();
	rc = shunt_medium_ivshmem.create(&seg, cap, bell, &handle);
	if (rc == -ENOSPC) {
		log_info("ivshmem: no free slot in the region");
		return 0;
	}
	if (rc < 0)
		return rc;
	v->seg = (uint32_t)handle;
	v->seg_gen = (uint32_t)((uint64_t)handle >> 32);
	v->nonce = random64();
	struct shunt_vmr_owner o;
	owner_of(fd, &o);
	shunt_vmr_own(r, v->seg, 0, &o, &sl->peer, &sl->local);
	/* Our side is open before the answer names the slot: the offerer
	 * may attach as soon as it sees it. */
	start_end(t, fd, &seg, 0, bell);
	rc = shunt_vmr_answer(r, entry, gen, v->seg, v->seg_gen, v->nonce);
	if (rc < 0) {
		t->mapped = 0;
		shunt_unmap(&sl->end.seg);
		shunt_vmr_done(r, v->seg, v->seg_gen, SHUNT_VMS_DONE);
		return 0;
	}
	v->entry = entry;
	v->entry_gen = gen;
	v->has_seg = 1;
	set_proof(sl, v->nonce, theirs);
	return 1;
}

/* Let go of a segment the offerer never attached to: 0, or -EBUSY if it
 * did attach meanwhile (one CAS decides, region.c). */
static int abandon(struct tsock *t, struct shunt_vmr *r)
{
	struct shim_vm *v = &t->slot->vm;
	int rc = shunt_vmr_abandon(r, v->seg, v->seg_gen);

	if (rc < 0)
		return rc;
	v->has_seg = 0;
	return 0;
}

int shim_vm_step(struct tsock *t, int fd)
{
	struct shunt_vmr *r = get_region();

	if (!r)
		return -ENODEV;
	maybe_reclaim(r, fd);
	pthread_mutex_lock(&t->mu);
	int rc = t->slot->vm.offerer ? offer_step(t, fd, r) : take_step(t, fd, r);
	/* Said under the lock, as meet.c does: a read that took the peer's
	 * first doorbell learns of the move by waiting for it
	 * (shim_moved_now). */
	if (rc == 1)
		atomic_store(&t->slot->state, SLOT_MOVED);
	pthread_mutex_unlock(&t->mu);
	if (rc < 0)
		shim_vm_drop(t); /* our offer, if it is out (move.c may not) */
	if (rc == 1) {
		char a[64], b[64];
		keepalive(fd);
		shunt_addr_fmt(&t->slot->local, a, sizeof(a));
		shunt_addr_fmt(&t->slot->peer, b, sizeof(b));
		log_info("fd %d: %s <-> %s meets through the ivshmem region: slot %u, %s", fd, a, b,
			 t->slot->vm.seg, t->slot->vm.offerer ? "attached" : "answered");
	}
	return rc;
}

void shim_vm_drop(struct tsock *t)
{
	struct shim_vm *v = &t->slot->vm;

	if (!v->on || !v->has_entry || !get_region())
		return;
	shunt_vmr_withdraw(&region, v->entry, v->entry_gen);
	v->has_entry = 0;
}

int shim_vm_may_abandon(struct tsock *t, int late)
{
	struct shim_vm *v = &t->slot->vm;

	if (!v->on || !v->has_seg || v->offerer || !get_region())
		return late;
	/* The offerer took its entry back without attaching: no need to wait. */
	if (!late && shunt_vmr_still_answered(&region, v->entry, v->entry_gen))
		return 0;
	if (abandon(t, &region) < 0)
		return 0; /* it came after all: the move goes on */
	log_info("ivshmem: the offerer never attached to slot %u", v->seg);
	return 1;
}

void shim_vm_let_go(struct tsock *t)
{
	struct tslot *s = t->slot;
	struct shim_vm *v = &s->vm;

	if (!v->on || !v->has_seg || shim_slot_shared(s) || !get_region())
		return;
	/* A taker whose offerer never came: the offerer must not come now. */
	if (!v->offerer && abandon(t, &region) == 0)
		return;
	uint32_t bits = s->side ? SHUNT_VMS_DONE1 : SHUNT_VMS_DONE0;
	/* A peer whose TCP end closed under it (killed, or gone without a
	 * close) will never say so itself. */
	if (t->mapped && atomic_load(&s->end.peer_gone))
		bits = SHUNT_VMS_DONE;
	shunt_vmr_done(&region, v->seg, v->seg_gen, bits);
	v->has_seg = 0;
}
