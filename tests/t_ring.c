/*
 * t_ring.c - unit tests of the SPSC byte ring (src/ring.h) without processes.
 *
 * The ring runs over a real segment of the local medium, so the data
 * area is the double mapping the library uses.  Covered:
 *  - the double mapping itself (a byte written past cap shows at the start);
 *  - every message size 1..cap at every start offset that matters for the
 *    wrap (0, 1, just before / at / across the wrap, the middle, random);
 *  - full and empty rings;
 *  - random interleavings of partial commits and releases against a model,
 *    including free-running indices that wrap around 2^64;
 *  - validation: impossible values scribbled into the shared head/tail make
 *    shunt_ring_avail/space/peek_* say -EPROTO, never a size out of range;
 *  - one producer thread and one consumer thread (what TSan checks);
 *  - shunt_copy and shunt_copy_nt, the rings' copies (src/base/copy.h):
 *    every size to 3 KiB and more at every relative alignment, nothing
 *    written around them.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "copy.h"
#include "ring.h"
#include "medium.h"
#include "seg.h"
#include "testlib.h"

#define CAP 4096u

struct fixture {
	struct shunt_seg seg;
	int fd;
	struct shunt_ring p; /* producer view of ring 0 */
	struct shunt_ring c; /* consumer view of ring 0 */
	_Atomic uint64_t *head, *tail;
	uint8_t *data;
	uint64_t cap;
};

static void fixture_open(struct fixture *f, uint64_t cap)
{
	memset(f, 0, sizeof(*f));
	int64_t h = -1;
	ASSERT_OK(shunt_medium_local.create(&f->seg, cap, 0, &h));
	f->fd = (int)h;
	ASSERT_UEQ(f->seg.cap, cap);
	f->head = &f->seg.ctl->head[0].v;
	f->tail = &f->seg.ctl->tail[0].v;
	f->data = f->seg.data[0];
	f->cap = cap;
	shunt_ring_init(&f->p, f->head, f->tail, f->data, cap);
	shunt_ring_init(&f->c, f->head, f->tail, f->data, cap);
}

static void fixture_close(struct fixture *f)
{
	shunt_unmap(&f->seg);
	close(f->fd);
}

/* Put both ends at absolute index `at` with an empty ring (as if `at` bytes
 * had gone through already). */
static void fixture_seek(struct fixture *f, uint64_t at)
{
	f->p.pos = f->p.peer = at;
	f->c.pos = f->c.peer = at;
	atomic_store(&f->p.own, at);
	atomic_store(&f->c.own, at);
	atomic_store(f->head, at);
	atomic_store(f->tail, at);
}

/* --- The double mapping --------------------------------------------------- */

static void test_double_mapping(void)
{
	struct fixture f;
	struct test_rng r;

	fixture_open(&f, CAP);
	test_rng_seed(&r, test_seed());
	/* Both rings: a write through either alias shows through the other. */
	for (int ring = 0; ring < 2; ring++) {
		uint8_t *d = f.seg.data[ring];
		for (int i = 0; i < 1000; i++) {
			uint64_t at = test_rng_range(&r, 0, CAP - 1);
			uint8_t v = (uint8_t)test_rng_next(&r);
			d[at] = v;
			ASSERT_EQ(d[at + CAP], v);
			d[at + CAP] = (uint8_t)~v;
			ASSERT_EQ(d[at], (uint8_t)~v);
		}
	}
	/* The rings do not overlap each other or the control page. */
	memset(f.seg.data[0], 0xaa, CAP);
	memset(f.seg.data[1], 0x55, CAP);
	for (unsigned i = 0; i < CAP; i++) {
		ASSERT_EQ(f.seg.data[0][i], 0xaa);
		ASSERT_EQ(f.seg.data[1][i + CAP], 0x55);
	}
	ASSERT_UEQ(f.seg.ctl->hdr.magic, SHUNT_SEG_MAGIC);
	ASSERT_UEQ(atomic_load(f.head), 0);
	ASSERT_UEQ(atomic_load(f.tail), 0);
	fixture_close(&f);
	test_log("double mapping ok");
}

/* --- Every size at every offset that matters --------------------------- */

static void one_message(struct fixture *f, const uint8_t *pat, uint64_t n)
{
	uint64_t off = f->p.pos & (f->cap - 1);

	ASSERT_EQ(shunt_ring_space(&f->p, f->cap), f->cap);
	ASSERT_EQ(shunt_ring_avail(&f->c, 1), 0);
	memcpy(shunt_ring_wptr(&f->p), pat, n);
	shunt_ring_commit(&f->p, n);
	ASSERT_UEQ(atomic_load(f->head), f->p.pos);
	ASSERT_EQ(shunt_ring_peek_fill(&f->c), n);
	ASSERT_EQ(shunt_ring_peek_space(&f->p), f->cap - n);
	ASSERT_EQ(shunt_ring_avail(&f->c, 1), n);
	ASSERT_EQ(shunt_ring_space(&f->p, f->cap), f->cap - n);
	ASSERT_PTR_EQ(shunt_ring_rptr(&f->c), f->data + off);
	ASSERT_MEM_EQ(shunt_ring_rptr(&f->c), pat, n);
	/* The same bytes, seen in the first mapping only, split at the wrap. */
	uint64_t first = n < f->cap - off ? n : f->cap - off;
	ASSERT_MEM_EQ(f->data + off, pat, first);
	ASSERT_MEM_EQ(f->data, pat + first, n - first);
	shunt_ring_release(&f->c, n);
	ASSERT_UEQ(atomic_load(f->tail), f->c.pos);
	ASSERT_EQ(shunt_ring_avail(&f->c, 1), 0);
	ASSERT_EQ(shunt_ring_space(&f->p, f->cap), f->cap);
}

static void test_every_size_every_offset(void)
{
	struct fixture f;
	struct test_rng r;
	uint8_t *pat = malloc(2 * CAP);
	uint64_t msgs = 0;

	ASSERT_NOT_NULL(pat);
	test_rng_seed(&r, test_seed() + 1);
	test_rng_fill(&r, pat, 2 * CAP);
	fixture_open(&f, CAP);
	for (uint64_t n = 1; n <= CAP; n++) {
		uint64_t offs[] = {
			0, 1, CAP - 1, CAP / 2, (CAP - n) & (CAP - 1),
			(CAP - n + 1) & (CAP - 1), (CAP - n / 2) & (CAP - 1),
			test_rng_range(&r, 0, CAP - 1),
		};
		for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
			/* Move both indices to the offset through the ring. */
			uint64_t delta = (offs[i] - f.p.pos) & (CAP - 1);
			if (delta) {
				ASSERT_GE(shunt_ring_space(&f.p, delta), (int64_t)delta);
				shunt_ring_commit(&f.p, delta);
				ASSERT_EQ(shunt_ring_avail(&f.c, delta), delta);
				shunt_ring_release(&f.c, delta);
			}
			ASSERT_UEQ(f.p.pos & (CAP - 1), offs[i]);
			one_message(&f, pat + (msgs++ % CAP), n);
		}
	}
	fixture_close(&f);
	free(pat);
	test_log("every size 1..%u at every wrap offset: %" PRIu64 " messages ok", CAP, msgs);
}

/* --- The rings' copy ------------------------------------------------------ */

static int all_are(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

/* Sizes around the vector loops' threshold and their 64-byte steps, at every
 * alignment of source and destination within 64 bytes; the guard bytes on
 * both sides of the destination must stay as they were. */
static void test_copy(void)
{
	enum { MAXN = 3 * SHUNT_COPY_SMALL + 200, PAD = 80 };
	uint8_t *src = malloc(MAXN + 2 * PAD), *dst = malloc(MAXN + 2 * PAD);
	struct test_rng r;
	uint64_t copies = 0;

	ASSERT_NOT_NULL(src);
	ASSERT_NOT_NULL(dst);
	test_rng_seed(&r, test_seed() + 7);
	test_rng_fill(&r, src, MAXN + 2 * PAD);
	for (size_t n = 0; n <= MAXN; n += n < SHUNT_COPY_SMALL - 70 ? 37 : 1) {
		for (size_t so = 0; so < 64; so += n % 5 + 1) {
			size_t d0 = (n * 7 + so) % 64;
			memset(dst, 0xa5, MAXN + 2 * PAD);
			if (copies & 1)
				shunt_copy_nt(dst + PAD + d0, src + so, n);
			else
				shunt_copy(dst + PAD + d0, src + so, n);
			ASSERT_MSG(memcmp(dst + PAD + d0, src + so, n) == 0,
				   "%zu bytes from offset %zu to %zu differ", n, so, d0);
			ASSERT_MSG(all_are(dst, PAD + d0, 0xa5) &&
					   all_are(dst + PAD + d0 + n, MAXN + PAD - d0 - n, 0xa5),
				   "%zu bytes from offset %zu to %zu: a byte around them changed", n,
				   so, d0);
			copies++;
		}
	}
	free(src);
	free(dst);
	test_log("shunt_copy, shunt_copy_nt: %" PRIu64 " copies of 0..%d bytes, every alignment, exact", copies,
		 (int)MAXN);
}

/* --- Full and empty ------------------------------------------------------ */

static void test_full_empty(void)
{
	struct fixture f;
	uint64_t starts[] = { 0, 1, CAP - 1, 12345, UINT64_MAX - CAP / 2, UINT64_MAX };

	fixture_open(&f, CAP);
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		fixture_seek(&f, starts[i]);
		/* Empty. */
		ASSERT_EQ(shunt_ring_avail(&f.c, 1), 0);
		ASSERT_EQ(shunt_ring_peek_fill(&f.c), 0);
		ASSERT_EQ(shunt_ring_space(&f.p, 1), CAP);
		ASSERT_EQ(shunt_ring_peek_space(&f.p), CAP);
		/* Fill it in two steps, then it is full. */
		memset(shunt_ring_wptr(&f.p), 0x11, CAP);
		shunt_ring_commit(&f.p, CAP - 7);
		ASSERT_EQ(shunt_ring_space(&f.p, 8), 7);
		shunt_ring_commit(&f.p, 7);
		ASSERT_EQ(shunt_ring_space(&f.p, 1), 0);
		ASSERT_EQ(shunt_ring_peek_space(&f.p), 0);
		ASSERT_EQ(shunt_ring_avail(&f.c, 1), CAP);
		ASSERT_EQ(shunt_ring_peek_fill(&f.c), CAP);
		/* Still full however often it is asked. */
		ASSERT_EQ(shunt_ring_space(&f.p, CAP), 0);
		/* One byte out: exactly one byte of space, at the old start. */
		shunt_ring_release(&f.c, 1);
		ASSERT_EQ(shunt_ring_space(&f.p, 1), 1);
		ASSERT_PTR_EQ(shunt_ring_wptr(&f.p), f.data + (starts[i] & (CAP - 1)));
		shunt_ring_commit(&f.p, 1);
		ASSERT_EQ(shunt_ring_space(&f.p, 1), 0);
		/* Drain in uneven pieces; the consumer's cache serves a small
		 * want without a reload but never more than is there. */
		uint64_t left = CAP;
		ASSERT_EQ(shunt_ring_avail(&f.c, 1), CAP - 1);
		while (left) {
			int64_t a = shunt_ring_avail(&f.c, 1);
			ASSERT_GT(a, 0);
			ASSERT_LE(a, (int64_t)left);
			uint64_t k = left > 1000 ? 1000 : left;
			if ((uint64_t)a < k)
				k = (uint64_t)a;
			shunt_ring_release(&f.c, k);
			left = (uint64_t)(f.p.pos - f.c.pos);
		}
		ASSERT_EQ(shunt_ring_avail(&f.c, 1), 0);
		ASSERT_EQ(shunt_ring_space(&f.p, CAP), CAP);
	}
	fixture_close(&f);
	test_log("full and empty ok");
}

/* --- Random interleavings against a model --------------------------------- */

static void check_stream(uint64_t seed, uint64_t off, const uint8_t *p, uint64_t n)
{
	size_t bad = test_stream_check(seed, off, p, n);

	if (bad != (size_t)-1)
		TEST_FAIL_MSG("stream byte %" PRIu64 " is wrong (read at offset %zu of %" PRIu64 ")",
			      off + bad, bad, n);
}

static void run_interleave(uint64_t start, uint64_t cap, uint64_t ops, uint64_t seed)
{
	struct fixture f;
	struct test_rng r;
	uint64_t wr = start, rd = start; /* the model: bytes produced/consumed */

	fixture_open(&f, cap);
	fixture_seek(&f, start);
	test_rng_seed(&r, seed);
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t fill = wr - rd;
		uint64_t want = test_rng_size(&r, cap);
		if (test_rng_next(&r) & 1) {
			int64_t s = shunt_ring_space(&f.p, want);
			ASSERT_GE(s, 0);
			ASSERT_LE(s, (int64_t)(cap - fill));
			/* A cached answer is enough for want; a fresh one is exact. */
			ASSERT(s >= (int64_t)want || s == (int64_t)(cap - fill));
			uint64_t k = test_rng_range(&r, 0, (uint64_t)s);
			test_stream_fill(seed, wr, shunt_ring_wptr(&f.p), k);
			/* Publish in up to three partial commits; the consumer
			 * sees each as it lands. */
			uint64_t done = 0;
			while (done < k) {
				uint64_t part = test_rng_range(&r, 1, k - done);
				shunt_ring_commit(&f.p, part);
				done += part;
				ASSERT_EQ(shunt_ring_peek_fill(&f.c), fill + done);
				if (test_rng_next(&r) % 3 == 0)
					break;
			}
			if (done < k) /* the rest is simply not published */
				k = done;
			wr += k;
		} else {
			int64_t a = shunt_ring_avail(&f.c, want);
			ASSERT_GE(a, 0);
			ASSERT_LE(a, (int64_t)fill);
			ASSERT(a == (int64_t)fill || (a >= (int64_t)want && a > 0));
			uint64_t k = test_rng_range(&r, 0, (uint64_t)a);
			check_stream(seed, rd, shunt_ring_rptr(&f.c), k);
			uint64_t done = 0;
			while (done < k) {
				uint64_t part = test_rng_range(&r, 1, k - done);
				shunt_ring_release(&f.c, part);
				done += part;
				ASSERT_EQ(shunt_ring_peek_space(&f.p), cap - (fill - done));
			}
			rd += k;
		}
		ASSERT_UEQ(atomic_load(f.head), wr);
		ASSERT_UEQ(atomic_load(f.tail), rd);
	}
	fixture_close(&f);
}

static void test_interleavings(void)
{
	uint64_t seed = test_seed();
	uint64_t ops = test_tsan() ? 20000 : 200000; /* TSan: ~40x slower */

	run_interleave(0, CAP, ops, seed + 2);
	run_interleave(UINT64_MAX - 3 * CAP, CAP, ops, seed + 3); /* crosses 2^64 */
	run_interleave((uint64_t)1 << 63, 65536, ops / 4, seed + 4);
	run_interleave(UINT64_MAX - 100, 65536, ops / 4, seed + 5);
	test_log("random partial commits/releases ok (including index wrap at 2^64)");
}

/* --- Validation of the peer's index ------------------------------------- */

/* Where the fixed checks start: 0, anywhere, and just before the indices
 * wrap. */
static const uint64_t g_starts[] = { 0, 5000, UINT64_MAX - 50 };

/* Both ends at s, then 100 bytes published and seen by the consumer. */
static void start_100(struct fixture *f, uint64_t s)
{
	fixture_seek(f, s);
	shunt_ring_commit(&f->p, 100);
	ASSERT_EQ(shunt_ring_avail(&f->c, 1), 100);
}

static void test_validation_fixed(void)
{
	struct fixture f;

	fixture_open(&f, CAP);
	for (size_t i = 0; i < sizeof(g_starts) / sizeof(g_starts[0]); i++) {
		uint64_t s = g_starts[i];
		start_100(&f, s);

		/* Consumer side: impossible heads. */
		uint64_t bad_heads[] = {
			s - 1,              /* behind our tail */
			s + CAP + 1,        /* more than a ring's worth */
			s + 50,             /* behind the head we already saw */
			s + 99,
			s - CAP,
			s + ((uint64_t)1 << 63),
			~s,
			s ^ 0xffffffff00000000ull,
		};
		for (size_t j = 0; j < sizeof(bad_heads) / sizeof(bad_heads[0]); j++) {
			if (bad_heads[j] - s <= CAP && bad_heads[j] - s >= 100)
				continue; /* happens to be valid for this start */
			atomic_store(f.head, bad_heads[j]);
			ASSERT_ERR(shunt_ring_avail(&f.c, 101), -EPROTO);
			ASSERT_ERR(shunt_ring_avail(&f.c, UINT64_MAX), -EPROTO);
			ASSERT_ERR(shunt_ring_peek_fill(&f.c), -EPROTO);
			/* A want the cache covers does not reload: still 100. */
			ASSERT_EQ(shunt_ring_avail(&f.c, 1), 100);
		}
		/* Valid extremes: exactly full, and unchanged. */
		atomic_store(f.head, s + CAP);
		ASSERT_EQ(shunt_ring_avail(&f.c, 101), CAP);
		ASSERT_EQ(shunt_ring_peek_fill(&f.c), CAP);
		atomic_store(f.head, s + CAP);
		ASSERT_EQ(shunt_ring_avail(&f.c, UINT64_MAX), CAP);
		/* Now that CAP was seen, a smaller head is a rewind. */
		atomic_store(f.head, s + 100);
		ASSERT_ERR(shunt_ring_avail(&f.c, UINT64_MAX), -EPROTO);
		ASSERT_ERR(shunt_ring_peek_fill(&f.c), -EPROTO);

		/* Producer side: impossible tails.  Our head is s + 100. */
		fixture_seek(&f, s);
		shunt_ring_commit(&f.p, 100);
		atomic_store(f.tail, s + 40);
		ASSERT_EQ(shunt_ring_space(&f.p, UINT64_MAX), CAP - 60);
		uint64_t bad_tails[] = {
			s + 101,            /* ahead of our head */
			s + 39,             /* behind the tail we already saw */
			s,
			s - 1,
			s + CAP,
			s + ((uint64_t)1 << 63),
			~s,
		};
		for (size_t j = 0; j < sizeof(bad_tails) / sizeof(bad_tails[0]); j++) {
			if (bad_tails[j] - (s + 40) <= 60)
				continue;
			atomic_store(f.tail, bad_tails[j]);
			ASSERT_ERR(shunt_ring_space(&f.p, CAP), -EPROTO);
			ASSERT_ERR(shunt_ring_space(&f.p, UINT64_MAX), -EPROTO);
			ASSERT_ERR(shunt_ring_peek_space(&f.p), -EPROTO);
			/* Served from the cache without a reload. */
			ASSERT_EQ(shunt_ring_space(&f.p, 1), CAP - 60);
		}
		atomic_store(f.tail, s + 100);
		ASSERT_EQ(shunt_ring_space(&f.p, UINT64_MAX), CAP);
		ASSERT_EQ(shunt_ring_peek_space(&f.p), CAP);
	}
	fixture_close(&f);
	test_log("fixed impossible indices give -EPROTO");
}

/* The looks other threads make (a poll's) take our own index from our
 * copy, not from the segment, where the peer can write it: a producer that
 * set the consumer's tail one short of its head had every poll say
 * readable while each read found nothing (a helper's attack, 100% CPU),
 * and one that rewound the producer's head had its polls say writable. */
static void test_looks_own_index(void)
{
	struct fixture f;

	fixture_open(&f, CAP);
	for (size_t i = 0; i < sizeof(g_starts) / sizeof(g_starts[0]); i++) {
		uint64_t s = g_starts[i];
		start_100(&f, s);
		shunt_ring_release(&f.c, 100);
		ASSERT_EQ(shunt_ring_look_fill(&f.c), 0);
		atomic_store(f.tail, s + 99); /* the peer's lie about our tail */
		ASSERT_EQ(shunt_ring_look_fill(&f.c), 0);
		atomic_store(f.tail, s + 100);
		/* The ring full, then the peer's lie about our head. */
		shunt_ring_commit(&f.p, CAP);
		ASSERT_EQ(shunt_ring_look_space(&f.p), 0);
		atomic_store(f.head, s + 100);
		ASSERT_EQ(shunt_ring_look_space(&f.p), 0);
		atomic_store(f.head, s + 100 + CAP);
		ASSERT_EQ(shunt_ring_look_fill(&f.c), CAP);
	}
	fixture_close(&f);
	test_log("looks take our own index from our copy");
}

/* A peer index: fully random, or near a plausible value. */
static uint64_t scribble_value(struct test_rng *r, uint64_t near, uint64_t cap)
{
	switch (test_rng_next(r) % 6) {
	case 0:
		return test_rng_next(r);
	case 1:
		return near + test_rng_range(r, 0, 2 * cap) - cap;
	case 2:
		return near + test_rng_range(r, 0, 8) - 4;
	case 3:
		return near + cap + test_rng_range(r, 0, 4) - 2;
	case 4:
		return ~near;
	default:
		return near ^ (1ull << test_rng_range(r, 0, 63));
	}
}

static void test_validation_fuzz(void)
{
	struct fixture f;
	struct test_rng r;
	uint64_t n_bad = 0, n_good = 0;

	fixture_open(&f, CAP);
	test_rng_seed(&r, test_seed() + 6);
	for (int round = 0; round < 4; round++) {
		fixture_seek(&f, round & 1 ? UINT64_MAX - 2 * CAP : test_rng_next(&r));
		for (int i = 0; i < 200000; i++) {
			/* Consumer: head scribbled.  The model says whether it is
			 * possible: our tail <= h <= tail + cap and h >= last seen. */
			uint64_t h = scribble_value(&r, f.c.peer, CAP);
			uint64_t pos = f.c.pos, seen = f.c.peer;
			int ok = h - pos <= CAP && h - pos >= seen - pos;
			atomic_store(f.head, h);
			int64_t pf = shunt_ring_peek_fill(&f.c);
			int64_t a = shunt_ring_avail(&f.c, UINT64_MAX);
			if (ok) {
				ASSERT_EQ(a, (int64_t)(h - pos));
				ASSERT_EQ(pf, (int64_t)(h - pos));
				n_good++;
				/* Sometimes consume some of it. */
				if (a > 0 && test_rng_next(&r) % 4 == 0)
					shunt_ring_release(&f.c, test_rng_range(&r, 1, (uint64_t)a));
			} else {
				ASSERT_ERR(a, -EPROTO);
				ASSERT_ERR(pf, -EPROTO);
				ASSERT_UEQ(f.c.peer, seen); /* nothing cached from it */
				n_bad++;
			}
			ASSERT(a == -EPROTO || (a >= 0 && a <= (int64_t)CAP));

			/* Producer: tail scribbled.  Possible: seen <= t <= head. */
			uint64_t t = scribble_value(&r, f.p.peer, CAP);
			pos = f.p.pos;
			seen = f.p.peer;
			ok = t - seen <= pos - seen;
			atomic_store(f.tail, t);
			int64_t ps = shunt_ring_peek_space(&f.p);
			int64_t s = shunt_ring_space(&f.p, UINT64_MAX);
			if (ok) {
				ASSERT_EQ(s, (int64_t)(CAP - (pos - t)));
				ASSERT_EQ(ps, s);
				n_good++;
				if (s > 0 && test_rng_next(&r) % 4 == 0) {
					uint64_t k = test_rng_range(&r, 1, (uint64_t)s);
					shunt_ring_commit(&f.p, k);
				}
			} else {
				ASSERT_ERR(s, -EPROTO);
				ASSERT_ERR(ps, -EPROTO);
				ASSERT_UEQ(f.p.peer, seen);
				n_bad++;
			}
			ASSERT(s == -EPROTO || (s >= 0 && s <= (int64_t)CAP));
		}
	}
	fixture_close(&f);
	test_log("fuzzed peer indices: %" PRIu64 " rejected, %" PRIu64 " accepted, all in range",
		 n_bad, n_good);
}

/* --- Two threads --------------------------------------------------------- */

struct spsc {
	struct fixture f;
	uint64_t bytes;         /* the most to move */
	uint64_t deadline_ns;   /* ...or until then (a loaded machine) */
	_Atomic uint64_t total; /* what the producer moved, once it stops */
	uint64_t seed;
	uint64_t sum_tx, sum_rx;
	uint64_t stalls_tx, stalls_rx;
};

static void *producer(void *arg)
{
	struct spsc *t = arg;
	struct shunt_ring *p = &t->f.p;
	struct test_rng r;
	struct test_sum sum;
	uint64_t done = 0;

	test_rng_seed(&r, t->seed ^ 0x1111);
	test_sum_init(&sum);
	for (uint64_t iter = 1; done < t->bytes; iter++) {
		if ((iter & 0xff) == 0 && test_now_ns() > t->deadline_ns)
			break;
		uint64_t want = test_rng_size(&r, t->f.cap);
		if (want > t->bytes - done)
			want = t->bytes - done;
		int64_t s = shunt_ring_space(p, want);
		ASSERT_GE(s, 0);
		ASSERT_LE(s, (int64_t)t->f.cap);
		if ((uint64_t)s < want) {
			t->stalls_tx++;
			sched_yield();
			continue;
		}
		uint8_t *w = shunt_ring_wptr(p);
		test_stream_fill(t->seed, done, w, want);
		test_sum_update(&sum, w, want);
		shunt_ring_commit(p, want);
		done += want;
	}
	t->sum_tx = test_sum_final(&sum);
	atomic_store(&t->total, done);
	return NULL;
}

static void *consumer(void *arg)
{
	struct spsc *t = arg;
	struct shunt_ring *c = &t->f.c;
	struct test_rng r;
	struct test_sum sum;
	uint64_t done = 0;

	test_rng_seed(&r, t->seed ^ 0x2222);
	test_sum_init(&sum);
	for (;;) {
		int64_t a = shunt_ring_avail(c, 1);
		ASSERT_GE(a, 0);
		ASSERT_LE(a, (int64_t)t->f.cap);
		if (a == 0) {
			/* The producer has stopped and we have all of it. */
			if (atomic_load(&t->total) == done)
				break;
			t->stalls_rx++;
			sched_yield();
			continue;
		}
		uint64_t k = test_rng_range(&r, 1, (uint64_t)a);
		const uint8_t *p = shunt_ring_rptr(c);
		check_stream(t->seed, done, p, k);
		test_sum_update(&sum, p, k);
		shunt_ring_release(c, k);
		done += k;
	}
	ASSERT_EQ(shunt_ring_avail(c, 1), 0);
	t->sum_rx = test_sum_final(&sum);
	return NULL;
}

static void test_two_threads(uint64_t cap, uint64_t bytes)
{
	struct spsc *t = calloc(1, sizeof(*t));
	pthread_t a, b;

	ASSERT_NOT_NULL(t);
	fixture_open(&t->f, cap);
	t->bytes = bytes;
	t->deadline_ns = test_now_ns() + 5000000000ull;
	atomic_store(&t->total, UINT64_MAX);
	t->seed = test_seed() + cap;
	double t0 = test_now();
	ASSERT_EQ(pthread_create(&a, NULL, producer, t), 0);
	ASSERT_EQ(pthread_create(&b, NULL, consumer, t), 0);
	ASSERT_EQ(pthread_join(a, NULL), 0);
	ASSERT_EQ(pthread_join(b, NULL), 0);
	double dt = test_now() - t0;
	ASSERT_UEQ(t->sum_tx, t->sum_rx);
	ASSERT_UEQ(t->sum_tx != 0, 1);
	bytes = atomic_load(&t->total);
	ASSERT_UGE(bytes, 1u << 20); /* however loaded the machine */
	test_log("two threads, cap %" PRIu64 ": %" PRIu64 " MiB in %.2f s (%.0f MiB/s), "
		 "stalls tx %" PRIu64 " rx %" PRIu64 ", checksum %016" PRIx64,
		 cap, bytes >> 20, dt, (double)bytes / 1048576.0 / dt, t->stalls_tx,
		 t->stalls_rx, t->sum_rx);
	fixture_close(&t->f);
	free(t);
}

int main(void)
{
	test_init("t_ring");
	/* The double mapping needs the ring to be at least a page. */
	if (shunt_seg_check_size(CAP) < 0)
		test_skip("ring size %u is below the page size here", CAP);

	uint64_t bytes = test_env_u64("SHUNT_TEST_BYTES", 1ull << 30) / 4;
	if (bytes < (1u << 20))
		bytes = 1u << 20;

	test_double_mapping();
	test_every_size_every_offset();
	test_copy();
	test_full_empty();
	test_interleavings();
	test_validation_fixed();
	test_looks_own_index();
	test_validation_fuzz();
	test_two_threads(CAP, bytes / 4);
	test_two_threads(1u << 16, bytes);
	test_log("pass");
	return TEST_PASS;
}
