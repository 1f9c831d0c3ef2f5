/*
 * t_ivshmem - the ivshmem medium's region (src/medium/ivshmem/region.c) on
 * a file in /dev/shm, as a host process maps it:
 *   - geometry: format, open, and every field of a header checked (a
 *     header one byte off is refused; a region still being formatted is
 *     waited for a bounded time; a zero one formats itself only if asked)
 *   - the directory: offer, find, answer, answered, withdraw, and each
 *     transition failing for a party that acts on an old generation; two
 *     offers for one 4-tuple are nobody's
 *   - slots: alloc, attach and abandon deciding by one CAS, both sides
 *     letting go freeing it for a new generation, the double mapping
 *   - two processes allocating at once never share a slot
 *   - a hostile party: random bytes over the directory and the slot table,
 *     then every call returns a checked answer, maps stay inside the
 *     region (under ASan too), nothing crashes
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "medium.h"
#include "region.h"
#include "testlib.h"

#define SIZE (4u << 20)
#define RING (64u << 10)

static char g_path[64];

static int make_file(uint64_t size)
{
	unlink(g_path);
	int fd = open(g_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ASSERT_SYS(fd);
	ASSERT_SYS(ftruncate(fd, (off_t)size));
	return fd;
}

static uint8_t *map_file(int fd, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT(p != MAP_FAILED);
	return p;
}

/* A formatted region, opened as the library opens it. */
static void fresh(struct shunt_vmr *r)
{
	int fd = make_file(SIZE);
	uint8_t *p = map_file(fd, SIZE);
	ASSERT_OK(shunt_vmr_format(p, SIZE, RING, 42));
	munmap(p, SIZE);
	ASSERT_OK(shunt_vmr_open(r, fd, SHUNT_VMR_USE));
}

static struct shunt_addr addr(uint8_t last, uint16_t port)
{
	struct shunt_addr a = { .family = AF_INET, .port = port };
	a.a[0] = 169;
	a.a[1] = 254;
	a.a[2] = 1;
	a.a[3] = last;
	return a;
}

/* --- Geometry ------------------------------------------------------------- */

static void test_geometry(void)
{
	struct shunt_vmr_hdr h;

	ASSERT_OK(shunt_vmr_layout(SIZE, RING, &h));
	ASSERT_EQ(h.nentries, SHUNT_VMR_ENTRIES);
	ASSERT_UEQ(h.seg_off % 4096, 0);
	ASSERT_ULE(h.seg_off + (uint64_t)h.nslots * h.slot_size, SIZE);
	ASSERT_UEQ(h.slot_size, 4096 + 2 * RING);
	ASSERT_ERR(shunt_vmr_layout(SIZE, 1000, &h), -EINVAL);      /* not a power of two */
	ASSERT_ERR(shunt_vmr_layout(64 << 10, RING, &h), -EINVAL);  /* too small */
	ASSERT_ERR(shunt_vmr_layout(SIZE, 8u << 20, &h), -EINVAL);   /* no slot fits */

	struct shunt_vmr r;
	/* A zero region: refused unless formatting is asked for. */
	ASSERT_ERR(shunt_vmr_open(&r, make_file(SIZE), SHUNT_VMR_USE), -ENODATA);
	ASSERT_OK(shunt_vmr_open(&r, open(g_path, O_RDWR), SHUNT_VMR_FORMAT));
	ASSERT_EQ(r.ring_max, SHUNT_VMR_RING);
	shunt_vmr_close(&r);
	/* Formatting twice: the second finds it formatted. */
	int fd = open(g_path, O_RDWR);
	uint8_t *p = map_file(fd, SIZE);
	ASSERT_ERR(shunt_vmr_format(p, SIZE, RING, 1), -EBUSY);

	/* Every header field checked: one byte off anywhere is refused. */
	const size_t fields[] = { 0, 8, 16, 24, 32, 36, 40, 48, 56, 64 };
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		p[fields[i]] ^= 0x10;
		ASSERT_ERR(shunt_vmr_open(&r, open(g_path, O_RDWR), SHUNT_VMR_USE), -EPROTO);
		p[fields[i]] ^= 0x10;
	}
	ASSERT_OK(shunt_vmr_open(&r, open(g_path, O_RDWR), SHUNT_VMR_LOOK));
	shunt_vmr_close(&r);
	/* Being formatted by a party that died: waited for, bounded. */
	struct shunt_vmr_hdr *hp = (struct shunt_vmr_hdr *)p;
	atomic_store(&hp->state, SHUNT_VMR_FORMATTING);
	uint64_t t0 = test_now_ns();
	ASSERT_ERR(shunt_vmr_open(&r, open(g_path, O_RDWR), SHUNT_VMR_FORMAT), -ENODATA);
	ASSERT_ULT(test_now_ns() - t0, 5000000000ull);
	atomic_store(&hp->state, SHUNT_VMR_READY);
	munmap(p, SIZE);
	close(fd);
	/* A file of another size than its header says. */
	fd = open(g_path, O_RDWR);
	ASSERT_SYS(ftruncate(fd, SIZE * 2));
	ASSERT_ERR(shunt_vmr_open(&r, fd, SHUNT_VMR_USE), -EPROTO);
	test_log("geometry: format, open, every header field checked, a stuck format bounded");
}

/* --- The directory -------------------------------------------------------- */

static void test_directory(void)
{
	struct shunt_vmr r;
	struct shunt_addr lo = addr(1, 40000), hi = addr(2, 5000), other = addr(3, 5000);
	uint32_t e, g, e2, g2, slot, sgen;
	uint64_t n;

	fresh(&r);
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &hi, &e, &g, &n), 0);
	ASSERT_OK(shunt_vmr_offer(&r, &lo, &hi, 0xabcd, 1000, &e, &g));
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &hi, &e2, &g2, &n), 1);
	ASSERT_EQ(e2, e);
	ASSERT_EQ(g2, g);
	ASSERT_UEQ(n, 0xabcd);
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &other, &e2, &g2, &n), 0); /* not a mirror */
	ASSERT_EQ(shunt_vmr_answered(&r, e, g, &slot, &sgen, &n), 0);
	/* A taker with the wrong generation cannot answer. */
	ASSERT_ERR(shunt_vmr_answer(&r, e, g + 1, 7, 9, 0x1234), -ESTALE);
	ASSERT_OK(shunt_vmr_answer(&r, e, g, 7, 9, 0x1234));
	ASSERT_ERR(shunt_vmr_answer(&r, e, g, 8, 9, 0x1234), -ESTALE); /* once */
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &hi, &e2, &g2, &n), 0);      /* taken */
	ASSERT_EQ(shunt_vmr_answered(&r, e, g, &slot, &sgen, &n), 1);
	ASSERT_EQ(slot, 7);
	ASSERT_EQ(sgen, 9);
	ASSERT_UEQ(n, 0x1234);
	ASSERT(shunt_vmr_still_answered(&r, e, g));
	shunt_vmr_withdraw(&r, e, g);
	ASSERT(!shunt_vmr_still_answered(&r, e, g));
	ASSERT_ERR(shunt_vmr_answered(&r, e, g, &slot, &sgen, &n), -ESTALE);
	/* The entry is reused with a new generation: the old one is dead. */
	ASSERT_OK(shunt_vmr_offer(&r, &lo, &hi, 1, 1000, &e2, &g2));
	ASSERT_NE(g2, g);
	shunt_vmr_withdraw(&r, e, g); /* stale: changes nothing */
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &hi, &e, &g, &n), 1);
	/* Two offers for one 4-tuple: neither is taken. */
	ASSERT_OK(shunt_vmr_offer(&r, &lo, &hi, 2, 1000, &e, &g));
	ASSERT_EQ(shunt_vmr_find(&r, &lo, &hi, &e, &g, &n), -EEXIST);
	/* A full directory, then offers older than a minute are reclaimed. */
	int made = 0;
	for (;; made++) {
		struct shunt_addr x = addr(9, (uint16_t)(1000 + made));
		if (shunt_vmr_offer(&r, &x, &hi, 3, 1000, &e, &g) == -ENOSPC)
			break;
	}
	ASSERT_EQ(made, (int)SHUNT_VMR_ENTRIES - 2);
	ASSERT_ERR(shunt_vmr_offer(&r, &lo, &hi, 4, 1030, &e, &g), -ENOSPC);
	ASSERT_OK(shunt_vmr_offer(&r, &lo, &hi, 4, 1100, &e, &g));
	shunt_vmr_close(&r);
	test_log("directory: offer, find, answer once, withdraw, generations, ambiguity, full");
}

/* --- Slots -------------------------------------------------------------------- */

static void test_slots(void)
{
	struct shunt_vmr r;
	uint32_t s, g, s2, g2;
	uint64_t cap;

	fresh(&r);
	ASSERT_ERR(shunt_vmr_alloc(&r, RING * 2, &s, &g), -EINVAL); /* bigger than a slot */
	ASSERT_OK(shunt_vmr_alloc(&r, RING, &s, &g));
	ASSERT_OK(shunt_vmr_slot_ring(&r, s, &cap));
	ASSERT_UEQ(cap, RING);
	/* Attach wins: the taker cannot abandon it any more. */
	ASSERT(!shunt_vmr_attached(&r, s, g));
	ASSERT_OK(shunt_vmr_attach(&r, s, g));
	ASSERT(shunt_vmr_attached(&r, s, g));
	ASSERT_ERR(shunt_vmr_attach(&r, s, g), -ESTALE);
	ASSERT_ERR(shunt_vmr_abandon(&r, s, g), -EBUSY);
	/* One side letting go frees nothing; both do. */
	shunt_vmr_done(&r, s, g, SHUNT_VMS_DONE0);
	ASSERT_OK(shunt_vmr_alloc(&r, RING, &s2, &g2));
	ASSERT_NE(s2, s);
	shunt_vmr_done(&r, s, g, SHUNT_VMS_DONE1);
	/* Abandon wins: the offerer cannot attach any more. */
	ASSERT_OK(shunt_vmr_abandon(&r, s2, g2));
	ASSERT_ERR(shunt_vmr_attach(&r, s2, g2), -ESTALE);
	/* Both free again, each in a new generation; stale words change nothing. */
	uint32_t a, ag, b, bg;
	ASSERT_OK(shunt_vmr_alloc(&r, RING, &a, &ag));
	ASSERT_OK(shunt_vmr_alloc(&r, RING, &b, &bg));
	ASSERT((a == s && ag == g + 1 && b == s2 && bg == g2 + 1) ||
	       (a == s2 && b == s));
	shunt_vmr_done(&r, s, g, SHUNT_VMS_DONE);
	ASSERT_ERR(shunt_vmr_attach(&r, s, g), -ESTALE);
	ASSERT_OK(shunt_vmr_attach(&r, a, ag));

	/* The double mapping: a write past the end of a ring's first copy
	 * lands at its start. */
	struct shunt_seg seg = { 0 };
	ASSERT_OK(shunt_vmr_map(&r, a, RING, &seg));
	seg.data[1][RING + 5] = 0x5a;
	ASSERT_EQ(seg.data[1][5], 0x5a);
	seg.data[0][3] = 0xa5;
	ASSERT_EQ(seg.data[0][RING + 3], 0xa5);
	shunt_unmap(&seg);
	ASSERT_ERR(shunt_vmr_map(&r, r.nslots, RING, &seg), -EINVAL);
	/* Until every slot is taken. */
	uint32_t n = 2;
	while (shunt_vmr_alloc(&r, RING, &s, &g) == 0)
		n++;
	ASSERT_EQ(n, r.nslots);
	ASSERT_UGT(shunt_vmr_full_count(&r), 0);
	shunt_vmr_close(&r);
	test_log("slots: attach or abandon by one CAS, both sides let go, generations, "
		 "double mapping, %u slots", n);
}

/* --- Two processes at once ---------------------------------------------------------- */

static void grab(void *arg)
{
	struct shunt_vmr r;
	uint8_t *mine = arg;
	uint32_t s, g;

	ASSERT_OK(shunt_vmr_open(&r, open(g_path, O_RDWR), SHUNT_VMR_USE));
	for (int round = 0; round < 200; round++) {
		int k = 0;
		uint32_t got[4], gen[4];
		while (k < 4 && shunt_vmr_alloc(&r, RING, &s, &g) == 0) {
			/* A slot both processes think theirs shows as a 2. */
			ASSERT_EQ(__atomic_add_fetch(&mine[s], 1, __ATOMIC_SEQ_CST), 1);
			got[k] = s;
			gen[k++] = g;
		}
		while (k--) {
			__atomic_sub_fetch(&mine[got[k]], 1, __ATOMIC_SEQ_CST);
			shunt_vmr_done(&r, got[k], gen[k], SHUNT_VMS_DONE);
		}
	}
	shunt_vmr_close(&r);
}

static void test_race(void)
{
	struct shunt_vmr r;

	fresh(&r);
	uint8_t *mine = mmap(NULL, r.nslots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);
	ASSERT(mine != MAP_FAILED);
	pid_t a = test_fork(grab, mine), b = test_fork(grab, mine);
	test_wait_ok(a, 60);
	test_wait_ok(b, 60);
	munmap(mine, r.nslots);
	shunt_vmr_close(&r);
	test_log("race: two processes allocating and freeing 200 rounds never shared a slot");
}

/* --- A hostile party ------------------------------------------------------------------- */

static void test_hostile(void)
{
	struct shunt_vmr r;
	struct test_rng rng;
	struct shunt_addr lo = addr(1, 40000), hi = addr(2, 5000);

	test_rng_seed(&rng, test_seed());
	fresh(&r);
	uint8_t *p = map_file(open(g_path, O_RDWR), SIZE);
	unsigned answered = 0, mapped = 0;
	for (int i = 0; i < 2000; i++) {
		/* Random bytes over part of the directory and the table. */
		size_t off = (size_t)test_rng_range(&rng, r.dir_off, r.seg_off - 1);
		size_t n = (size_t)test_rng_size(&rng, SHUNT_MIN((size_t)4096, (size_t)r.seg_off - off));
		test_rng_fill(&rng, p + off, n);
		uint32_t e = 0, g = 0, s, sg, s2, g2;
		uint64_t nonce, cap;
		shunt_vmr_offer(&r, &lo, &hi, 5, 1000, &e, &g);
		if (shunt_vmr_find(&r, &lo, &hi, &e, &g, &nonce) == 1)
			shunt_vmr_answer(&r, e, g, 3, 4, 6);
		if (shunt_vmr_answered(&r, e, g, &s, &sg, &nonce) == 1) {
			answered++;
			/* What a scribbled answer names is checked before use. */
			struct shunt_seg seg = { 0 };
			if (shunt_vmr_slot_ring(&r, s, &cap) == 0 &&
			    shunt_vmr_map(&r, s, cap, &seg) == 0) {
				ASSERT_ULT(s, r.nslots);
				ASSERT_ULE(cap, r.ring_max);
				memset(seg.data[0], 1, 2 * cap);
				memset(seg.data[1], 2, 2 * cap);
				shunt_unmap(&seg);
				mapped++;
			}
			shunt_vmr_attach(&r, s, sg);
		}
		shunt_vmr_withdraw(&r, e, g);
		if (shunt_vmr_alloc(&r, RING, &s2, &g2) == 0)
			shunt_vmr_done(&r, s2, g2, SHUNT_VMS_DONE0);
	}
	munmap(p, SIZE);
	shunt_vmr_close(&r);
	test_log("hostile: 2000 scribbles over the directory and the slot table; %u answers "
		 "read, %u slots mapped after checks, no fault", answered, mapped);
}

int main(void)
{
	test_init("t_ivshmem");
	snprintf(g_path, sizeof(g_path), "/dev/shm/t_ivshmem-%d", (int)getpid());
	if (access("/dev/shm", W_OK) < 0)
		test_skip("no writable /dev/shm");
	test_geometry();
	test_directory();
	test_slots();
	test_race();
	test_hostile();
	unlink(g_path);
	return TEST_PASS;
}
