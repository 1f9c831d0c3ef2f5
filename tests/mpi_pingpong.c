/*
 * mpi_pingpong.c - a checked MPI ping-pong between ranks 0 and 1, for
 * tests/t_apps_mpi.sh (compiled there with mpicc at run time).
 *
 *   mpirun -np 2 mpi_pingpong [LAT_ITERS [BW_ITERS]]
 *
 * 0. First of all both ranks send to each other at once (MPI_Sendrecv), so
 *    that each opens a connection to the other at the same time
 *    (simultaneous connects; Open MPI's TCP transport keeps one of them).
 * 1. Every payload byte checked: that exchange, then round trips of 1 B ..
 *    3 MiB + 7 B, each message a pattern that depends on its size,
 *    direction and number.
 * 2. Latency: LAT_ITERS (default 20000) round trips of 8 bytes, each
 *    carrying its number, checked; prints half a round trip in us.
 * 3. Bandwidth: BW_ITERS (default 300) round trips of 1 MiB (a word in
 *    every 4 KiB and the last word carry the message's number, checked);
 *    prints the bytes moved both ways per second in MB/s (10^6 bytes).
 * Both figures are the medians over 10 blocks of the round trips.
 *
 * Rank 0 prints, last, one line "RESULT lat_us=X bw_MBps=Y".  A wrong
 * byte prints what and where and aborts with status 1.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG 7
#define MIB (1 << 20)

static int rank;

static uint64_t mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x9e3779b97f4a7c15ULL;
	x ^= x >> 29;
	return x;
}

/* The pattern of message `seq` of `n` bytes: byte i depends on all three. */
static void fill(unsigned char *b, size_t n, uint64_t seq)
{
	uint64_t s = mix(seq * 0x100000001b3ULL + n);
	for (size_t i = 0; i < n; i++) {
		if ((i & 7) == 0)
			s = mix(s + i);
		b[i] = (unsigned char)(s >> ((i & 7) * 8));
	}
}

static void check(const unsigned char *b, size_t n, uint64_t seq, const char *what)
{
	static unsigned char *want;
	static size_t cap;
	if (cap < n) {
		free(want);
		cap = n;
		want = malloc(cap);
		if (!want)
			MPI_Abort(MPI_COMM_WORLD, 2);
	}
	fill(want, n, seq);
	for (size_t i = 0; i < n; i++) {
		if (b[i] != want[i]) {
			fprintf(stderr, "rank %d: %s: message %llu of %zu bytes: byte %zu is 0x%02x, expected 0x%02x\n",
				rank, what, (unsigned long long)seq, n, i, b[i], want[i]);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	}
}

static void put_word(unsigned char *b, size_t at, uint64_t v)
{
	memcpy(b + at, &v, sizeof(v));
}

static uint64_t get_word(const unsigned char *b, size_t at)
{
	uint64_t v;
	memcpy(&v, b + at, sizeof(v));
	return v;
}

/* The last word is stamped too unless a 4 KiB word is there already. */
static int has_last(size_t n)
{
	return n >= 8 && (n - 8) % 4096 != 0;
}

/* Stamp message `it` of size n: a word every 4 KiB and the last 8 bytes. */
static void stamp(unsigned char *b, size_t n, uint64_t it)
{
	for (size_t at = 0; at + 8 <= n; at += 4096)
		put_word(b, at, it * 4099 + at);
	if (has_last(n))
		put_word(b, n - 8, ~it);
}

static void check_stamp(const unsigned char *b, size_t n, uint64_t it, const char *what)
{
	for (size_t at = 0; at + 8 <= n; at += 4096) {
		if (get_word(b, at) != it * 4099 + at) {
			fprintf(stderr, "rank %d: %s: round trip %llu: the word at byte %zu is wrong\n",
				rank, what, (unsigned long long)it, at);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
	}
	if (has_last(n) && get_word(b, n - 8) != ~it) {
		fprintf(stderr, "rank %d: %s: round trip %llu: the last word is wrong\n",
			rank, what, (unsigned long long)it);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
}

/* One checked round trip of n bytes, message numbers seq (ping), seq+1. */
static void checked_round(unsigned char *buf, size_t n, uint64_t seq)
{
	MPI_Status st;
	int got;

	if (rank == 0) {
		fill(buf, n, seq);
		MPI_Send(buf, (int)n, MPI_BYTE, 1, TAG, MPI_COMM_WORLD);
		memset(buf, 0, n);
		MPI_Recv(buf, (int)n, MPI_BYTE, 1, TAG, MPI_COMM_WORLD, &st);
		MPI_Get_count(&st, MPI_BYTE, &got);
		if ((size_t)got != n) {
			fprintf(stderr, "rank 0: pong of %zu bytes came as %d\n", n, got);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
		check(buf, n, seq + 1, "pong");
	} else {
		memset(buf, 0, n);
		MPI_Recv(buf, (int)n, MPI_BYTE, 0, TAG, MPI_COMM_WORLD, &st);
		MPI_Get_count(&st, MPI_BYTE, &got);
		if ((size_t)got != n) {
			fprintf(stderr, "rank 1: ping of %zu bytes came as %d\n", n, got);
			MPI_Abort(MPI_COMM_WORLD, 1);
		}
		check(buf, n, seq, "ping");
		fill(buf, n, seq + 1);
		MPI_Send(buf, (int)n, MPI_BYTE, 0, TAG, MPI_COMM_WORLD);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

#define BLOCKS 10

/*
 * iters timed round trips of n bytes after warm, in BLOCKS blocks; seconds
 * per round trip, the median over the blocks (so that a moment of a busy
 * machine moves the figure less).  Meaningful on rank 0.
 */
static double timed_rounds(unsigned char *buf, size_t n, long warm, long iters, const char *what)
{
	double per[BLOCKS], t0 = 0;
	long block = iters / BLOCKS > 0 ? iters / BLOCKS : 1;
	int b = 0;

	for (long i = 0; i < warm + block * BLOCKS; i++) {
		if (i == warm)
			MPI_Barrier(MPI_COMM_WORLD);
		if (i >= warm && (i - warm) % block == 0) {
			double t = MPI_Wtime();
			if (i > warm)
				per[b++] = (t - t0) / (double)block;
			t0 = t;
		}
		if (rank == 0) {
			stamp(buf, n, (uint64_t)i * 2);
			MPI_Send(buf, (int)n, MPI_BYTE, 1, TAG, MPI_COMM_WORLD);
			MPI_Recv(buf, (int)n, MPI_BYTE, 1, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			check_stamp(buf, n, (uint64_t)i * 2 + 1, what);
		} else {
			MPI_Recv(buf, (int)n, MPI_BYTE, 0, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			check_stamp(buf, n, (uint64_t)i * 2, what);
			stamp(buf, n, (uint64_t)i * 2 + 1);
			MPI_Send(buf, (int)n, MPI_BYTE, 0, TAG, MPI_COMM_WORLD);
		}
	}
	per[b++] = (MPI_Wtime() - t0) / (double)block;
	qsort(per, (size_t)b, sizeof(per[0]), cmp_double);
	return (per[(b - 1) / 2] + per[b / 2]) / 2;
}

int main(int argc, char **argv)
{
	int size;
	long lat_iters = argc > 1 ? atol(argv[1]) : 20000;
	long bw_iters = argc > 2 ? atol(argv[2]) : 300;
	size_t cap = 3 * MIB + 7;
	unsigned char *buf;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 2) {
		if (rank == 0)
			fprintf(stderr, "mpi_pingpong: run with exactly 2 ranks, not %d\n", size);
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	buf = malloc(cap);
	if (!buf)
		MPI_Abort(MPI_COMM_WORLD, 2);

	/* 0. Both at once: simultaneous connects.  Message numbers 1000000 + rank. */
	for (int i = 0; i < 4; i++) {
		size_t n = (size_t)65536 << i;
		unsigned char *out = malloc(n);
		if (!out)
			MPI_Abort(MPI_COMM_WORLD, 2);
		fill(out, n, 1000000 + 2 * (uint64_t)i + (uint64_t)rank);
		MPI_Sendrecv(out, (int)n, MPI_BYTE, 1 - rank, TAG, buf, (int)n, MPI_BYTE, 1 - rank, TAG,
			     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		check(buf, n, 1000000 + 2 * (uint64_t)i + (uint64_t)(1 - rank), "exchange");
		free(out);
	}

	/* 1. Every byte checked, sizes up to 3 MiB + 7. */
	static const size_t sizes[] = { 1, 7, 8, 100, 1500, 4096, 65535, 65536, 262144 + 3,
					MIB, 3 * MIB + 7 };
	uint64_t seq = 0, checked = 0;
	for (int rep = 0; rep < 4; rep++) {
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			checked_round(buf, sizes[k], seq);
			checked += 2 * sizes[k];
			seq += 2;
		}
	}
	/* Many small ones, so that even a cautious upgrade happens here. */
	for (int i = 0; i < 200; i++) {
		checked_round(buf, (size_t)(1 + i * 37 % 2000), seq);
		checked += 2 * (size_t)(1 + i * 37 % 2000);
		seq += 2;
	}
	for (int i = 0; i < 20; i++) {
		checked_round(buf, MIB, seq);
		checked += 2 * MIB;
		seq += 2;
	}
	if (rank == 0)
		printf("payloads: %llu messages, %llu bytes, every byte right\n",
		       (unsigned long long)seq, (unsigned long long)checked);

	/* 2. Latency, 3. bandwidth. */
	double rt8 = timed_rounds(buf, 8, 1000, lat_iters, "8-byte ping-pong");
	double rt1m = timed_rounds(buf, MIB, 10, bw_iters, "1 MiB ping-pong");
	MPI_Barrier(MPI_COMM_WORLD);
	if (rank == 0) {
		double lat_us = rt8 / 2 * 1e6;
		double bw = 2.0 * MIB / rt1m / 1e6;
		printf("latency: 8 bytes, %ld round trips: %.2f us (half a round trip)\n", lat_iters, lat_us);
		printf("bandwidth: 1 MiB, %ld round trips: %.0f MB/s\n", bw_iters, bw);
		printf("RESULT lat_us=%.3f bw_MBps=%.1f\n", lat_us, bw);
		fflush(stdout);
	}
	free(buf);
	MPI_Finalize();
	return 0;
}
