/*
 * region.c - the ivshmem region: its geometry, its directory of offers and
 * its table of segment slots (region.h; docs/design.md, "Between virtual
 * machines").
 *
 * Every shared word that more than one party writes changes by one
 * compare-and-swap of the whole word, state and generation together, so a
 * party that acts on what it saw a while ago fails instead of undoing
 * somebody else's work.  Everything else in an entry or slot is written by
 * the party that holds it in a transient state (WRITING, ANSWERING, a
 * fresh allocation) and published by the release that leaves that state.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "internal.h"
#include "medium.h"
#include "region.h"
#include "sys.h"

/* The layout is an ABI between guests: pin every offset (docs/design.md). */
_Static_assert(offsetof(struct shunt_vmr_hdr, state) == 12, "state");
_Static_assert(offsetof(struct shunt_vmr_hdr, size) == 16, "size");
_Static_assert(offsetof(struct shunt_vmr_hdr, nentries) == 32, "nentries");
_Static_assert(offsetof(struct shunt_vmr_hdr, dir_off) == 40, "dir_off");
_Static_assert(offsetof(struct shunt_vmr_hdr, slot_size) == 64, "slot_size");
_Static_assert(offsetof(struct shunt_vmr_hdr, full) == 80, "full");
_Static_assert(sizeof(struct shunt_vmr_hdr) <= SHUNT_VMR_HDR_SIZE, "hdr fits its page");
_Static_assert(sizeof(struct shunt_addr) == 20, "addr");
_Static_assert(offsetof(struct shunt_vmr_entry, lo) == 16, "lo");
_Static_assert(offsetof(struct shunt_vmr_entry, hi) == 36, "hi");
_Static_assert(offsetof(struct shunt_vmr_entry, offer_nonce) == 56, "offer_nonce");
_Static_assert(offsetof(struct shunt_vmr_entry, slot) == 64, "slot");
_Static_assert(offsetof(struct shunt_vmr_entry, answer_nonce) == 72, "answer_nonce");
_Static_assert(sizeof(struct shunt_vmr_entry) == 128, "entry size");
_Static_assert(offsetof(struct shunt_vmr_slot, ring) == 8, "ring");
_Static_assert(offsetof(struct shunt_vmr_slot, owner) == 16, "owner");
_Static_assert(offsetof(struct shunt_vmr_slot, lo) == 64, "slot lo");
_Static_assert(sizeof(struct shunt_vmr_slot) == 128, "slot size");

#define PAGE 4096u
#define STALE_S 60 /* an offer this old was left by a party that died */
#define FORMAT_WAIT_NS (2ll * 1000000000)

#define EWORD(st, gen) ((uint64_t)(st) | (uint64_t)(gen) << 8)
#define ESTATE(w) ((uint32_t)((w) & 0xffu))
#define EGEN(w) ((uint32_t)((w) >> 8))
#define SWORD(bits, gen) ((uint64_t)(bits) | (uint64_t)(gen) << 16)

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* --- Geometry ---------------------------------------------------------------- */

int shunt_vmr_layout(uint64_t size, uint64_t ring_max, struct shunt_vmr_hdr *h)
{
	if (shunt_seg_check_size(ring_max) < 0 || size < SHUNT_VMR_MIN_SIZE || size % PAGE ||
	    size > (1ull << 40))
		return -EINVAL;
	uint64_t slot = shunt_seg_size(ring_max);
	uint64_t table = SHUNT_VMR_HDR_SIZE + (uint64_t)SHUNT_VMR_ENTRIES * 128;
	/* Each slot costs its segment and its line of the table. */
	uint64_t n = (size - table - PAGE) / (slot + 128);
	while (n && align_up(table + n * 128, PAGE) + n * slot > size)
		n--;
	if (n == 0 || n > UINT32_MAX)
		return -EINVAL;
	h->size = size;
	h->ring_max = ring_max;
	h->nentries = SHUNT_VMR_ENTRIES;
	h->nslots = (uint32_t)n;
	h->dir_off = SHUNT_VMR_HDR_SIZE;
	h->table_off = table;
	h->seg_off = align_up(table + n * 128, PAGE);
	h->slot_size = slot;
	return 0;
}

int shunt_vmr_format(uint8_t *base, uint64_t size, uint64_t ring_max, uint64_t id)
{
	struct shunt_vmr_hdr *h = (struct shunt_vmr_hdr *)base, g;
	uint32_t zero = SHUNT_VMR_ZERO;

	memset(&g, 0, sizeof(g));
	if (shunt_vmr_layout(size, ring_max, &g) < 0)
		return -EINVAL;
	if (!atomic_compare_exchange_strong(&h->state, &zero, SHUNT_VMR_FORMATTING))
		return -EBUSY;
	if (h->magic != 0) { /* someone else's, or ours half-wiped: not ours to erase */
		atomic_store(&h->state, zero);
		return -EBUSY;
	}
	memset(base + g.dir_off, 0, (size_t)(g.seg_off - g.dir_off));
	h->version = SHUNT_VMR_VERSION;
	h->size = g.size;
	h->ring_max = g.ring_max;
	h->nentries = g.nentries;
	h->nslots = g.nslots;
	h->dir_off = g.dir_off;
	h->table_off = g.table_off;
	h->seg_off = g.seg_off;
	h->slot_size = g.slot_size;
	h->format_id = id;
	atomic_store(&h->full, 0);
	h->magic = SHUNT_VMR_MAGIC;
	/* Release pairs with the acquire in read_geometry(): the geometry and
	 * the zeroed tables are visible before READY is. */
	atomic_store_explicit(&h->state, SHUNT_VMR_READY, memory_order_release);
	return 0;
}

/* Read the header once and accept it only if it is exactly the geometry
 * its size and ring size imply, for a region of our size. */
static int read_geometry(struct shunt_vmr *r, const struct shunt_vmr_hdr *hp)
{
	const volatile struct shunt_vmr_hdr *h = hp;
	struct shunt_vmr_hdr want;

	if (atomic_load_explicit(&hp->state, memory_order_acquire) != SHUNT_VMR_READY)
		return -EAGAIN;
	uint64_t magic = h->magic, size = h->size, ring = h->ring_max;
	uint32_t version = h->version;
	if (magic != SHUNT_VMR_MAGIC || version != SHUNT_VMR_VERSION || size != r->size ||
	    shunt_vmr_layout(size, ring, &want) < 0)
		return -EPROTO;
	if (h->nentries != want.nentries || h->nslots != want.nslots ||
	    h->dir_off != want.dir_off || h->table_off != want.table_off ||
	    h->seg_off != want.seg_off || h->slot_size != want.slot_size)
		return -EPROTO;
	r->ring_max = ring;
	r->nentries = want.nentries;
	r->nslots = want.nslots;
	r->dir_off = want.dir_off;
	r->table_off = want.table_off;
	r->seg_off = want.seg_off;
	r->slot_size = want.slot_size;
	r->format_id = h->format_id;
	return 0;
}

static long map_prot(void *addr, uint64_t len, int prot, int fd, uint64_t off, int flags)
{
	return sys_mmap(addr, len, prot, MAP_SHARED | flags, fd, (off_t)off);
}

static long map_shared(void *addr, uint64_t len, int fd, uint64_t off, int flags)
{
	return map_prot(addr, len, PROT_READ | PROT_WRITE, fd, off, flags);
}

static int map_failed(long v)
{
	return (unsigned long)v > -4096ul;
}

/* A zero region formats itself with the default geometry, once: whoever
 * wins the header's state word; the others wait for READY. */
static int maybe_format(struct shunt_vmr *r, int may_format)
{
	struct shunt_vmr_hdr g;

	if (!may_format || shunt_vmr_layout(r->size, SHUNT_VMR_RING, &g) < 0)
		return 0;
	long b = map_shared(NULL, g.seg_off, r->fd, 0, 0);
	if (map_failed(b))
		return (int)b;
	uint64_t id = 0;
	sys_getrandom(&id, sizeof(id), 0);
	int rc = shunt_vmr_format((uint8_t *)b, r->size, SHUNT_VMR_RING, id);
	sys_munmap((void *)b, g.seg_off);
	if (rc == 0)
		log_info("ivshmem: formatted the region (%llu bytes, %u slots of %llu-byte rings)",
			 (unsigned long long)r->size, g.nslots, (unsigned long long)g.ring_max);
	return rc == -EBUSY ? 0 : rc;
}

static int wait_geometry(struct shunt_vmr *r, const struct shunt_vmr_hdr *h, int may_format)
{
	int64_t until = shunt_now_ns() + FORMAT_WAIT_NS;
	int rc = read_geometry(r, h);

	if (rc == -EAGAIN && atomic_load(&h->state) == SHUNT_VMR_ZERO) {
		rc = maybe_format(r, may_format);
		if (rc < 0)
			return rc;
		rc = read_geometry(r, h);
	}
	while (rc == -EAGAIN && atomic_load(&h->state) == SHUNT_VMR_FORMATTING &&
	       shunt_now_ns() < until) {
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
		rc = read_geometry(r, h);
	}
	return rc == -EAGAIN ? -ENODATA : rc;
}

const char *shunt_vmr_not_ours(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return "owned by another user";
	if (st->st_mode & S_IRWXO)
		return "open to every user";
	return NULL;
}

int shunt_vmr_open(struct shunt_vmr *r, int fd, int mode)
{
	struct stat st;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	r->prot = mode == SHUNT_VMR_LOOK ? PROT_READ : PROT_READ | PROT_WRITE;
	int rc = sys_fstat(fd, &st);
	if (rc == 0 && mode != SHUNT_VMR_LOOK && shunt_vmr_not_ours(&st))
		rc = -EPERM;
	if (rc == 0 && (st.st_size < SHUNT_VMR_MIN_SIZE || st.st_size % PAGE))
		rc = -EINVAL;
	if (rc < 0)
		goto fail;
	r->size = (uint64_t)st.st_size;
	long h = map_prot(NULL, PAGE, r->prot, fd, 0, 0);
	if (map_failed(h)) {
		rc = (int)h;
		goto fail;
	}
	rc = wait_geometry(r, (const struct shunt_vmr_hdr *)h, mode == SHUNT_VMR_FORMAT);
	sys_munmap((void *)h, PAGE);
	if (rc < 0)
		goto fail;
	long b = map_prot(NULL, r->seg_off, r->prot, fd, 0, 0);
	if (map_failed(b)) {
		rc = (int)b;
		goto fail;
	}
	r->base = (uint8_t *)b;
	r->map_len = r->seg_off;
	return 0;
fail:
	sys_close(fd);
	r->fd = -1;
	return rc;
}

void shunt_vmr_close(struct shunt_vmr *r)
{
	if (r->base)
		sys_munmap(r->base, r->map_len);
	if (r->fd >= 0)
		sys_close(r->fd);
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

/* --- The directory --------------------------------------------------------------- */

static struct shunt_vmr_hdr *hdr_of(const struct shunt_vmr *r)
{
	return (struct shunt_vmr_hdr *)r->base;
}

static struct shunt_vmr_entry *entry_at(const struct shunt_vmr *r, uint32_t i)
{
	return (struct shunt_vmr_entry *)(r->base + r->dir_off + (uint64_t)i * 128);
}

static int stale(const struct shunt_vmr_entry *e, uint64_t now_s)
{
	uint64_t t = ((const volatile struct shunt_vmr_entry *)e)->stamp;

	/* Clocks of guests differ: only an age far beyond any skew counts. */
	return t > now_s ? t - now_s > STALE_S : now_s - t > STALE_S;
}

int shunt_vmr_offer(struct shunt_vmr *r, const struct shunt_addr *lo, const struct shunt_addr *hi,
		    uint64_t nonce, uint64_t now_s, uint32_t *entry, uint32_t *gen)
{
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < r->nentries; i++) {
			struct shunt_vmr_entry *e = entry_at(r, i);
			uint64_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
			if (ESTATE(w) != SHUNT_VMR_FREE && !(pass && stale(e, now_s)))
				continue;
			uint32_t g = EGEN(w) + 1;
			if (!atomic_compare_exchange_strong(&e->word, &w, EWORD(SHUNT_VMR_WRITING, g)))
				continue;
			e->stamp = now_s;
			e->lo = *lo;
			e->hi = *hi;
			e->offer_nonce = nonce;
			e->slot = e->slot_gen = 0;
			e->answer_nonce = 0;
			/* Release pairs with the acquire in shunt_vmr_find(). */
			atomic_store_explicit(&e->word, EWORD(SHUNT_VMR_OFFERED, g),
					      memory_order_release);
			*entry = i;
			*gen = g;
			return 0;
		}
	}
	return -ENOSPC;
}

int shunt_vmr_find(struct shunt_vmr *r, const struct shunt_addr *lo, const struct shunt_addr *hi,
		   uint32_t *entry, uint32_t *gen, uint64_t *nonce)
{
	int found = 0;

	for (uint32_t i = 0; i < r->nentries; i++) {
		struct shunt_vmr_entry *e = entry_at(r, i);
		uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);
		if (ESTATE(w) != SHUNT_VMR_OFFERED)
			continue;
		struct shunt_addr l, h;
		uint64_t n;
		memcpy(&l, &e->lo, sizeof(l));
		memcpy(&h, &e->hi, sizeof(h));
		memcpy(&n, &e->offer_nonce, sizeof(n));
		/* What we copied belongs to w only if the word held still. */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&e->word, memory_order_relaxed) != w ||
		    !shunt_addr_eq(&l, lo) || !shunt_addr_eq(&h, hi))
			continue;
		if (found++)
			return -EEXIST;
		*entry = i;
		*gen = EGEN(w);
		*nonce = n;
	}
	return found;
}

int shunt_vmr_answer(struct shunt_vmr *r, uint32_t entry, uint32_t gen, uint32_t slot,
		     uint32_t slot_gen, uint64_t nonce)
{
	if (entry >= r->nentries)
		return -EINVAL;
	struct shunt_vmr_entry *e = entry_at(r, entry);
	uint64_t w = EWORD(SHUNT_VMR_OFFERED, gen);

	if (!atomic_compare_exchange_strong(&e->word, &w, EWORD(SHUNT_VMR_ANSWERING, gen)))
		return -ESTALE;
	e->slot = slot;
	e->slot_gen = slot_gen;
	e->answer_nonce = nonce;
	/* A CAS, not a store: the offerer may have withdrawn meanwhile.
	 * Release pairs with the acquire in shunt_vmr_answered(). */
	w = EWORD(SHUNT_VMR_ANSWERING, gen);
	if (!atomic_compare_exchange_strong_explicit(&e->word, &w, EWORD(SHUNT_VMR_ANSWERED, gen),
						     memory_order_release, memory_order_relaxed))
		return -ESTALE;
	return 0;
}

int shunt_vmr_answered(struct shunt_vmr *r, uint32_t entry, uint32_t gen, uint32_t *slot,
		       uint32_t *slot_gen, uint64_t *nonce)
{
	if (entry >= r->nentries)
		return -ESTALE;
	struct shunt_vmr_entry *e = entry_at(r, entry);
	uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);

	if (w == EWORD(SHUNT_VMR_OFFERED, gen) || w == EWORD(SHUNT_VMR_ANSWERING, gen))
		return 0;
	if (w != EWORD(SHUNT_VMR_ANSWERED, gen))
		return -ESTALE;
	const volatile struct shunt_vmr_entry *v = e;
	*slot = v->slot;
	*slot_gen = v->slot_gen;
	*nonce = v->answer_nonce;
	return 1;
}

int shunt_vmr_still_answered(struct shunt_vmr *r, uint32_t entry, uint32_t gen)
{
	return entry < r->nentries &&
	       atomic_load(&entry_at(r, entry)->word) == EWORD(SHUNT_VMR_ANSWERED, gen);
}

void shunt_vmr_withdraw(struct shunt_vmr *r, uint32_t entry, uint32_t gen)
{
	if (entry >= r->nentries)
		return;
	struct shunt_vmr_entry *e = entry_at(r, entry);

	/* A taker between ANSWERING and ANSWERED moves the word under us:
	 * try each state a few times; its own CAS fails once we win. */
	for (int i = 0; i < 8; i++) {
		uint64_t w = atomic_load(&e->word);
		uint32_t st = ESTATE(w);
		if (EGEN(w) != gen || st < SHUNT_VMR_OFFERED)
			return;
		if (atomic_compare_exchange_strong(&e->word, &w, EWORD(SHUNT_VMR_FREE, gen)))
			return;
	}
}

/* --- Segment slots --------------------------------------------------------------- */

static struct shunt_vmr_slot *slot_at(const struct shunt_vmr *r, uint32_t i)
{
	return (struct shunt_vmr_slot *)(r->base + r->table_off + (uint64_t)i * 128);
}

static int slot_free(uint64_t w)
{
	return (w & 0xffu) != SHUNT_VMS_USED || (w & SHUNT_VMS_DONE) == SHUNT_VMS_DONE;
}

uint64_t shunt_vmr_full_count(const struct shunt_vmr *r)
{
	return atomic_load_explicit(&hdr_of(r)->full, memory_order_relaxed);
}

int shunt_vmr_alloc(struct shunt_vmr *r, uint64_t cap, uint32_t *slot, uint32_t *gen)
{
	if (shunt_seg_check_size(cap) < 0 || cap > r->ring_max)
		return -EINVAL;
	for (uint32_t i = 0; i < r->nslots; i++) {
		struct shunt_vmr_slot *s = slot_at(r, i);
		uint64_t w = atomic_load_explicit(&s->word, memory_order_relaxed);
		if (!slot_free(w))
			continue;
		uint32_t g = SHUNT_VMS_GEN(w) + 1;
		if (!atomic_compare_exchange_strong(&s->word, &w, SWORD(SHUNT_VMS_USED, g)))
			continue;
		/* Ours until the answer that names it is published (release). */
		s->ring = cap;
		memset(s->owner, 0, sizeof(s->owner));
		memset(&s->lo, 0, sizeof(s->lo));
		memset(&s->hi, 0, sizeof(s->hi));
		*slot = i;
		*gen = g;
		return 0;
	}
	atomic_fetch_add(&hdr_of(r)->full, 1);
	return -ENOSPC;
}

int shunt_vmr_slot_ring(struct shunt_vmr *r, uint32_t slot, uint64_t *cap)
{
	if (slot >= r->nslots)
		return -EPROTO;
	uint64_t c = ((volatile struct shunt_vmr_slot *)slot_at(r, slot))->ring;
	if (shunt_seg_check_size(c) < 0 || c > r->ring_max)
		return -EPROTO;
	*cap = c;
	return 0;
}

/*
 * Map the slot's segment with each ring twice, back to back.  A sysfs
 * resource file refuses a mapping that runs past its BAR, so the address
 * range is reserved first and the four pieces, each inside the slot, go
 * over it (a local segment's first piece may run past its file instead:
 * medium/local/mem.c).  One munmap undoes it all.
 */
static int map_double(struct shunt_seg *seg, int fd, uint64_t off, uint64_t cap)
{
	uint64_t len = SHUNT_CTL_SIZE + 4 * cap;
	long b = sys_mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (map_failed(b))
		return (int)b;
	uint8_t *base = (uint8_t *)b, *r0 = base + SHUNT_CTL_SIZE, *r1 = r0 + 2 * cap;
	uint64_t off0 = off + SHUNT_CTL_SIZE, off1 = off0 + cap;
	long rc = map_shared(base, SHUNT_CTL_SIZE + cap, fd, off, MAP_FIXED);
	if (!map_failed(rc))
		rc = map_shared(r0 + cap, cap, fd, off0, MAP_FIXED);
	if (!map_failed(rc))
		rc = map_shared(r1, cap, fd, off1, MAP_FIXED);
	if (!map_failed(rc))
		rc = map_shared(r1 + cap, cap, fd, off1, MAP_FIXED);
	if (map_failed(rc)) {
		sys_munmap(base, len);
		return (int)rc;
	}
	seg->base = base;
	seg->map_len = len;
	seg->ctl = (struct shunt_ctl *)base;
	seg->data[0] = r0;
	seg->data[1] = r1;
	seg->cap = cap;
	return 0;
}

int shunt_vmr_map(struct shunt_vmr *r, uint32_t slot, uint64_t cap, struct shunt_seg *seg)
{
	if (slot >= r->nslots || shunt_seg_check_size(cap) < 0 || cap > r->ring_max)
		return -EINVAL;
	return map_double(seg, r->fd, r->seg_off + (uint64_t)slot * r->slot_size, cap);
}

/* Add bits to a slot's word if it is still used in generation gen and
 * none of `forbid` is set: 0, -ESTALE (not that slot any more), -EBUSY. */
static int slot_set(struct shunt_vmr *r, uint32_t slot, uint32_t gen, uint64_t bits,
		    uint64_t forbid)
{
	if (slot >= r->nslots)
		return -ESTALE;
	struct shunt_vmr_slot *s = slot_at(r, slot);
	uint64_t w = atomic_load(&s->word);

	for (;;) {
		if (SHUNT_VMS_GEN(w) != gen || (w & 0xffu) != SHUNT_VMS_USED)
			return -ESTALE;
		if (w & forbid)
			return -EBUSY;
		if (atomic_compare_exchange_weak(&s->word, &w, w | bits))
			return 0;
	}
}

int shunt_vmr_attach(struct shunt_vmr *r, uint32_t slot, uint32_t gen)
{
	int rc = slot_set(r, slot, gen, SHUNT_VMS_OPEN1, SHUNT_VMS_DONE | SHUNT_VMS_OPEN1);

	return rc == -EBUSY ? -ESTALE : rc;
}

int shunt_vmr_attached(struct shunt_vmr *r, uint32_t slot, uint32_t gen)
{
	if (slot >= r->nslots)
		return 0;
	uint64_t w = atomic_load(&slot_at(r, slot)->word);

	return SHUNT_VMS_GEN(w) == gen && (w & 0xffu) == SHUNT_VMS_USED && (w & SHUNT_VMS_OPEN1);
}

int shunt_vmr_abandon(struct shunt_vmr *r, uint32_t slot, uint32_t gen)
{
	int rc = slot_set(r, slot, gen, SHUNT_VMS_DONE, SHUNT_VMS_OPEN1);

	return rc == -ESTALE ? 0 : rc;
}

void shunt_vmr_done(struct shunt_vmr *r, uint32_t slot, uint32_t gen, uint32_t bits)
{
	slot_set(r, slot, gen, bits & SHUNT_VMS_DONE, 0);
}

void shunt_vmr_own(struct shunt_vmr *r, uint32_t slot, int side, const struct shunt_vmr_owner *o,
		   const struct shunt_addr *lo, const struct shunt_addr *hi)
{
	if (slot >= r->nslots || side < 0 || side > 1)
		return;
	struct shunt_vmr_slot *s = slot_at(r, slot);

	s->owner[side] = *o;
	if (side == 0) {
		s->lo = *lo;
		s->hi = *hi;
	}
}

/* Copies through memcpy of the whole line: the word read this way may be
 * torn against a concurrent CAS only in ways the callers tolerate (they
 * act on it through CAS, or only print it). */
void shunt_vmr_slot_copy(const struct shunt_vmr *r, uint32_t i, struct shunt_vmr_slot *out)
{
	memset(out, 0, sizeof(*out));
	if (i < r->nslots)
		memcpy(out, slot_at(r, i), sizeof(*out));
}

void shunt_vmr_entry_copy(const struct shunt_vmr *r, uint32_t i, struct shunt_vmr_entry *out)
{
	memset(out, 0, sizeof(*out));
	if (i < r->nentries)
		memcpy(out, entry_at(r, i), sizeof(*out));
}

const struct shunt_ctl *shunt_vmr_ctl(const struct shunt_vmr *r, uint32_t i)
{
	if (i >= r->nslots)
		return NULL;
	long p = map_prot(NULL, SHUNT_CTL_SIZE, r->prot, r->fd, r->seg_off + (uint64_t)i * r->slot_size,
			  0);
	return map_failed(p) ? NULL : (const struct shunt_ctl *)p;
}

/* --- The medium -------------------------------------------------------------------- */

static struct shunt_vmr *current;

void shunt_vmr_use(struct shunt_vmr *r)
{
	current = r;
}

/* Claim a slot and write a fresh segment header into it.  The control
 * page is zeroed (indices, states, wait words start at 0); ring data is
 * not: no byte of it is read before it is written. */
static int vm_create(struct shunt_seg *seg, uint64_t cap, uint8_t bell, int64_t *handle)
{
	struct shunt_vmr *r = current;
	uint32_t slot, gen;

	if (!r)
		return -ENODEV;
	int rc = shunt_vmr_alloc(r, cap, &slot, &gen);
	if (rc < 0)
		return rc;
	rc = shunt_vmr_map(r, slot, cap, seg);
	if (rc < 0) {
		shunt_vmr_done(r, slot, gen, SHUNT_VMS_DONE);
		return rc;
	}
	memset(seg->ctl, 0, SHUNT_CTL_SIZE);
	seg->medium = &shunt_medium_ivshmem;
	seg->where = (uint64_t)slot | (uint64_t)gen << 32;
	shunt_seg_init(seg, bell);
	*handle = (int64_t)seg->where;
	return 0;
}

static int vm_attach(struct shunt_seg *seg, int64_t handle, uint64_t cap, uint8_t *bell)
{
	struct shunt_vmr *r = current;

	if (!r)
		return -ENODEV;
	int rc = shunt_vmr_map(r, (uint32_t)handle, cap, seg);
	if (rc < 0)
		return rc;
	seg->medium = &shunt_medium_ivshmem;
	seg->where = (uint64_t)handle;
	rc = shunt_seg_check(seg, cap, bell);
	if (rc < 0)
		shunt_unmap(seg);
	return rc;
}

const struct shunt_medium shunt_medium_ivshmem = {
	.name = "ivshmem",
	.create = vm_create,
	.attach = vm_attach,
	.release = shunt_unmap,
};
