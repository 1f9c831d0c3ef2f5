/*
 * t_stress.c - move a lot of data through real connections and check every
 * byte.
 *
 * Each direction carries a deterministic byte stream (testlib's
 * test_stream_fill): the sender generates it, the receiver regenerates the
 * expected bytes at the same offsets and compares, and both keep a running
 * checksum that must agree at the end.  Message sizes are random, log-
 * uniform from 1 byte to 256 KiB, and each message goes through one of the
 * four ways to send (copy or zero-copy, blocking or non-blocking with
 * poll() on shunt_fd()); the receiver mixes its four ways the same way.
 *
 * Variants:
 *   procs-oneway   two processes, one direction, default ring, one thread
 *                  per end
 *   procs-duplex   two processes, both directions at once (a sending and a
 *                  receiving thread per end), default ring
 *   procs-tiny     two processes, a 4 KiB ring (constant wrapping and
 *                  blocking), both directions, one end never spins
 *   procs-sleep    two processes, 4 KiB ring, one direction, no spinning
 *                  at all: every wait sleeps and is woken
 *   threads        both ends in one process, four threads (what TSan sees)
 *
 * SHUNT_TEST_BYTES (default 1 GiB) is the volume of procs-oneway;
 * the other variants move a fraction of it.  SHUNT_STRESS_ONLY=name runs a
 * single variant.
 */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <shunt.h>

#include "testlib.h"

#define MAX_MSG (256u * 1024u)
#define POLL_MS 3000 /* longer than any honest wait in these tests */

enum op { OP_COPY, OP_COPY_NB, OP_ZC, OP_ZC_NB, OP_N };

/* What one direction did, as seen by one of its ends. */
struct dir_result {
	uint64_t bytes;
	uint64_t sum;
	uint64_t ops[OP_N];
	uint64_t polls;
	int done;
};

struct xfer {
	struct shunt_conn *c;
	uint64_t bytes;       /* to send or to expect */
	uint64_t stream_seed; /* the direction's stream */
	uint64_t rng_seed;    /* this end's choices */
	struct dir_result *out;
	const char *what;
};

/* Wait for shunt_fd() after -EAGAIN.  A wait that sees nothing for
 * POLL_MS while the peer is busy streaming is a lost wake-up. */
static void wait_fd(struct xfer *x, const char *op)
{
	struct pollfd p = { .fd = shunt_fd(x->c), .events = POLLIN };

	ASSERT_OK(p.fd);
	int rc = poll(&p, 1, POLL_MS);
	ASSERT_SYS(rc);
	ASSERT_MSG(rc == 1, "%s: %s got -EAGAIN, then shunt_fd() stayed quiet for %d ms "
		   "(%" PRIu64 " of %" PRIu64 " bytes done): lost wake-up", x->what, op, POLL_MS,
		   x->out->bytes, x->bytes);
	x->out->polls++;
}

static void *send_main(void *arg)
{
	struct xfer *x = arg;
	struct test_rng r;
	struct test_sum sum;
	uint8_t *buf = malloc(MAX_MSG);
	size_t cap = shunt_ring_size(x->c);
	uint64_t off = 0;

	ASSERT_NOT_NULL(buf);
	test_rng_seed(&r, x->rng_seed);
	test_sum_init(&sum);
	while (off < x->bytes) {
		size_t msg = (size_t)test_rng_size(&r, MAX_MSG);
		if (msg > x->bytes - off)
			msg = (size_t)(x->bytes - off);
		enum op op = (enum op)(test_rng_next(&r) % OP_N);
		int nb = op == OP_COPY_NB || op == OP_ZC_NB ? SHUNT_NONBLOCK : 0;
		size_t done = 0;
		x->out->ops[op]++;
		if (op == OP_COPY || op == OP_COPY_NB) {
			test_stream_fill(x->stream_seed, off, buf, msg);
			test_sum_update(&sum, buf, msg);
			while (done < msg) {
				ssize_t k = shunt_send(x->c, buf + done, msg - done, nb);
				if (k == -EAGAIN && nb) {
					wait_fd(x, "send");
					continue;
				}
				ASSERT_OK(k);
				ASSERT_GT(k, 0);
				ASSERT_LE(k, (ssize_t)(msg - done));
				if (!nb)
					ASSERT_EQ(k, (ssize_t)(msg - done)); /* blocking: all */
				done += (size_t)k;
				x->out->bytes = off + done;
			}
		} else {
			while (done < msg) {
				size_t left = msg - done;
				size_t min = (size_t)test_rng_range(&r, 1, left < cap ? left : cap);
				void *w;
				ssize_t n = shunt_send_reserve(x->c, &w, min, nb);
				if (n == -EAGAIN && nb) {
					wait_fd(x, "send_reserve");
					continue;
				}
				ASSERT_OK(n);
				ASSERT_GE(n, (ssize_t)min);
				ASSERT_LE(n, (ssize_t)cap);
				size_t k = (size_t)n < left ? (size_t)n : left;
				/* Sometimes publish less than we could. */
				if (test_rng_next(&r) % 4 == 0)
					k = (size_t)test_rng_range(&r, 1, k);
				test_stream_fill(x->stream_seed, off + done, w, k);
				test_sum_update(&sum, w, k);
				ASSERT_OK(shunt_send_commit(x->c, k));
				done += k;
				x->out->bytes = off + done;
			}
		}
		off += msg;
	}
	ASSERT_OK(shunt_shutdown(x->c, SHUT_WR));
	x->out->sum = test_sum_final(&sum);
	x->out->done = 1;
	free(buf);
	return NULL;
}

static void check_bytes(struct xfer *x, uint64_t off, const void *p, size_t n)
{
	size_t bad = test_stream_check(x->stream_seed, off, p, n);

	if (bad != (size_t)-1)
		TEST_FAIL_MSG("%s: byte %" PRIu64 " of the stream is wrong (got 0x%02x)", x->what,
			      off + bad, ((const uint8_t *)p)[bad]);
}

static void *recv_main(void *arg)
{
	struct xfer *x = arg;
	struct test_rng r;
	struct test_sum sum;
	uint8_t *buf = malloc(MAX_MSG);
	size_t cap = shunt_ring_size(x->c);
	uint64_t off = 0;

	ASSERT_NOT_NULL(buf);
	test_rng_seed(&r, x->rng_seed);
	test_sum_init(&sum);
	for (;;) {
		enum op op = (enum op)(test_rng_next(&r) % OP_N);
		int nb = op == OP_COPY_NB || op == OP_ZC_NB ? SHUNT_NONBLOCK : 0;
		ssize_t k;
		x->out->ops[op]++;
		if (op == OP_COPY || op == OP_COPY_NB) {
			size_t len = (size_t)test_rng_size(&r, MAX_MSG);
			k = shunt_recv(x->c, buf, len, nb);
			if (k == -EAGAIN && nb) {
				wait_fd(x, "recv");
				continue;
			}
			ASSERT_OK(k);
			ASSERT_LE(k, (ssize_t)len);
			if (k == 0)
				break;
			check_bytes(x, off, buf, (size_t)k);
			test_sum_update(&sum, buf, (size_t)k);
		} else {
			const void *p;
			k = shunt_recv_peek(x->c, &p, nb);
			if (k == -EAGAIN && nb) {
				wait_fd(x, "recv_peek");
				continue;
			}
			ASSERT_OK(k);
			ASSERT_LE(k, (ssize_t)cap);
			if (k == 0)
				break;
			/* Take some of it, maybe in two releases. */
			size_t take = (size_t)test_rng_range(&r, 1, (uint64_t)k);
			check_bytes(x, off, p, take);
			test_sum_update(&sum, p, take);
			size_t first = (size_t)test_rng_range(&r, 0, take);
			ASSERT_OK(shunt_recv_release(x->c, first));
			ASSERT_OK(shunt_recv_release(x->c, take - first));
			k = (ssize_t)take;
		}
		off += (uint64_t)k;
		x->out->bytes = off;
		ASSERT_MSG(off <= x->bytes, "%s: more bytes than were sent", x->what);
	}
	ASSERT_MSG(off == x->bytes, "%s: end of stream after %" PRIu64 " of %" PRIu64 " bytes",
		   x->what, off, x->bytes);
	/* The end is sticky. */
	ASSERT_EQ(shunt_recv(x->c, buf, 1, 0), 0);
	x->out->sum = test_sum_final(&sum);
	x->out->done = 1;
	free(buf);
	return NULL;
}

/* --- Variants ------------------------------------------------------------- */

struct variant {
	const char *name;
	size_t ring;         /* 0: the default */
	int spin_connect;    /* spin_us of the connecting end: >0, or -1 never */
	int spin_accept;     /* likewise for the accepting end */
	uint64_t bytes[2];   /* [0]: connect -> accept, [1]: accept -> connect */
	int threads;         /* both ends in this process */
};

/* Shared between the processes: what each end saw. */
struct results {
	struct dir_result send[2]; /* by direction */
	struct dir_result recv[2];
};

struct child_args {
	const struct variant *v;
	char name[64];
	struct results *res;
	uint64_t seed;
};

/* Run one end: its sender in a thread, its receiver here (or only one). */
static void run_end(struct shunt_conn *c, const struct variant *v, struct results *res,
		    uint64_t seed, int side)
{
	int tx = side == 0 ? 0 : 1, rx = 1 - tx;
	struct xfer s = {
		.c = c, .bytes = v->bytes[tx], .stream_seed = seed + (uint64_t)tx,
		.rng_seed = seed * 7 + (uint64_t)side, .out = &res->send[tx],
		.what = side == 0 ? "connector sending" : "acceptor sending",
	};
	struct xfer r = {
		.c = c, .bytes = v->bytes[rx], .stream_seed = seed + (uint64_t)rx,
		.rng_seed = seed * 13 + (uint64_t)side, .out = &res->recv[rx],
		.what = side == 0 ? "connector receiving" : "acceptor receiving",
	};
	pthread_t th;

	if (s.bytes && r.bytes) {
		/* Full duplex: a sending and a receiving thread at once. */
		ASSERT_EQ(pthread_create(&th, NULL, send_main, &s), 0);
		recv_main(&r);
		ASSERT_EQ(pthread_join(th, NULL), 0);
	} else if (s.bytes) {
		/* One way: one thread, and only then wait for the peer's end. */
		send_main(&s);
		ASSERT_EQ(shunt_recv(c, &(char){ 0 }, 1, 0), 0);
	} else {
		ASSERT_OK(shunt_shutdown(c, SHUT_WR));
		recv_main(&r);
	}
}

static void child_main(void *arg)
{
	struct child_args *a = arg;
	struct shunt_opts o = { .ring_size = a->v->ring, .spin_us = a->v->spin_connect };
	struct shunt_conn *c;

	ASSERT_OK(shunt_connect(a->name, &o, &c));
	run_end(c, a->v, a->res, a->seed, 0);
	shunt_close(c);
}

struct thread_end {
	struct shunt_conn *c;
	const struct variant *v;
	struct results *res;
	uint64_t seed;
	int side;
};

static void *thread_end_main(void *arg)
{
	struct thread_end *e = arg;

	run_end(e->c, e->v, e->res, e->seed, e->side);
	return NULL;
}

static void run_variant(const struct variant *v)
{
	struct results *res = mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct child_args a = { .v = v, .seed = test_seed() ^ test_mix64((uintptr_t)v->name) };
	struct shunt_listener *l;
	struct shunt_conn *c;
	double t0 = test_now();
	char ring[32];

	ASSERT(res != MAP_FAILED);
	memset(res, 0, sizeof(*res));
	a.res = res;
	test_name_unique(a.name, sizeof(a.name));
	ASSERT_OK(shunt_listen(a.name, &l));
	if (v->threads) {
		struct shunt_opts o = { .ring_size = v->ring, .spin_us = v->spin_connect };
		struct shunt_conn *cc;
		pthread_t th;
		ASSERT_OK(shunt_connect(a.name, &o, &cc));
		ASSERT_OK(shunt_accept(l, &c, 0));
		ASSERT_OK(shunt_set_spin(c, v->spin_accept));
		struct thread_end e = { .c = cc, .v = v, .res = res, .seed = a.seed, .side = 0 };
		ASSERT_EQ(pthread_create(&th, NULL, thread_end_main, &e), 0);
		run_end(c, v, res, a.seed, 1);
		ASSERT_EQ(pthread_join(th, NULL), 0);
		shunt_close(cc);
	} else {
		pid_t pid = test_fork(child_main, &a);
		ASSERT_OK(shunt_accept(l, &c, 0));
		ASSERT_OK(shunt_set_spin(c, v->spin_accept));
		run_end(c, v, res, a.seed, 1);
		test_wait_ok(pid, 60);
	}
	snprintf(ring, sizeof(ring), "%zu KiB", shunt_ring_size(c) / 1024);
	shunt_close(c);
	shunt_listener_close(l);
	double dt = test_now() - t0;

	uint64_t total = 0;
	for (int d = 0; d < 2; d++) {
		if (!v->bytes[d])
			continue;
		ASSERT_MSG(res->send[d].done && res->recv[d].done, "direction %d did not finish", d);
		ASSERT_UEQ(res->send[d].bytes, v->bytes[d]);
		ASSERT_UEQ(res->recv[d].bytes, v->bytes[d]);
		ASSERT_MSG(res->send[d].sum == res->recv[d].sum,
			   "direction %d: checksum sent %016" PRIx64 " != received %016" PRIx64, d,
			   res->send[d].sum, res->recv[d].sum);
		total += v->bytes[d];
		const struct dir_result *s = &res->send[d], *r = &res->recv[d];
		test_log("  %s: %s, %" PRIu64 " MiB, checksum %016" PRIx64 "; send ops "
			 "copy/nb/zc/zc-nb %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
			 ", recv %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 ", polls %" PRIu64,
			 v->name, d == 0 ? "connector->acceptor" : "acceptor->connector",
			 v->bytes[d] >> 20, s->sum, s->ops[0], s->ops[1], s->ops[2], s->ops[3],
			 r->ops[0], r->ops[1], r->ops[2], r->ops[3], s->polls + r->polls);
	}
	test_log("%s: %" PRIu64 " MiB through a %s ring in %.2f s (%.0f MiB/s)", v->name,
		 total >> 20, ring, dt, (double)total / 1048576.0 / dt);
	munmap(res, sizeof(*res));
}

int main(void)
{
	test_init("t_stress");
	test_use_private_dir();

	uint64_t total = test_env_u64("SHUNT_TEST_BYTES", 1ull << 30);
	const char *only = getenv("SHUNT_STRESS_ONLY");
	if (total < 1024)
		total = 1024;
	const struct variant variants[] = {
		{ "procs-oneway", 0, 50, 50, { total, 0 }, 0 },
		{ "procs-duplex", 0, 50, 50, { total / 2, total / 2 }, 0 },
		{ "procs-tiny", 4096, -1, 50, { total / 8, total / 8 }, 0 },
		{ "procs-sleep", 4096, -1, -1, { 0, total / 16 }, 0 },
		{ "threads", 65536, 50, -1, { total / 4, total / 4 }, 1 },
	};
	/* A stuck transfer fails with the last progress line, not a bare
	 * runner timeout. */
	uint64_t limit = test_env_u64("SHUNT_TEST_TIMEOUT", 120);
	test_watchdog((unsigned)(limit > 10 ? limit - 5 : limit));

	int ran = 0;
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		if (only && *only && strcmp(only, variants[i].name))
			continue;
		test_log("%s ...", variants[i].name);
		run_variant(&variants[i]);
		ran++;
	}
	if (!ran)
		test_skip("SHUNT_STRESS_ONLY=%s names no variant", only);
	test_log("pass");
	return TEST_PASS;
}
