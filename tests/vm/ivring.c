/*
 * ivring.c - the raw-ring baseline: two peers exchange data through an
 * SPSC ring in a shared region, with no shunt code in between.  What the
 * ivshmem medium is measured against (its target: 80% of these figures).
 *
 *   ivring [OPTIONS] stream tx SECS [MSG]   write MSG-byte messages (default
 *                                           65536) for SECS seconds
 *   ivring [OPTIONS] stream rx              read them; prints
 *                                           "MB/s X bytes N secs S bad B"
 *   ivring [OPTIONS] pingpong ping SECS [SIZE]
 *                                           SIZE-byte round trips (default
 *                                           64) for SECS seconds; prints
 *                                           "rtt_us <median> msgs N secs S bad B"
 *   ivring [OPTIONS] pingpong pong          echo them
 *   ivring [OPTIONS] info                   where the region is, its size
 *   ivring [OPTIONS] read OFF LEN           LEN bytes of the region at OFF to
 *                                           stdout
 *   ivring [OPTIONS] write OFF              stdin into the region at OFF
 *
 * OPTIONS:
 *   -r PATH   the region: a file (on the host, the /dev/shm file QEMU maps
 *             with memory-backend-file), or "pci" (the default; also
 *             $IVRING_REGION): in a guest, BAR2 of the ivshmem device,
 *             PCI 1af4:1110, found by scanning
 *             /sys/bus/pci/devices/<BDF>/{vendor,device} and mapped through
 *             /sys/bus/pci/devices/<BDF>/resource2 (root only)
 *   -o OFF    where in the region this pair's rings live (default 0; a
 *             multiple of 4096), so that several pairs can run at once
 *   -s BYTES  ring size per direction (default 1 MiB, a power of two)
 *   -w SECS   how long to wait for the peer (default 60)
 *   -n        receive without checking: copy out only, as tcpbench's
 *             stream and ping-pong servers do (the fair baseline for them)
 *
 * Both peers may start in either order and the region may hold anything
 * left from an earlier run: each side resets the indices it owns, then
 * they shake hands with random nonces (hello/ack below) before a byte
 * moves.  Rings: free-running 64-bit indices, power-of-two size, the
 * producer's head and the consumer's tail each on a cache line of its own,
 * release stores paired with acquire loads.  Both sides spin.
 *
 * Every byte is checked, as tcpbench checks its stream: the sender copies
 * from a pattern whose period (a prime) divides no message size, the
 * receiver copies out and compares with the pattern at the same stream
 * offset, so a byte lost, doubled or moved shows.  The ping-pong reply
 * is checked the same way on both sides.
 *
 * Exit status: 0 ok, 1 bad data, 2 usage or setup error, 3 peer timeout.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PERIOD 131071u /* prime */
#define MAX_MSG (1u << 20)

/* Control block at OFF; ring data from OFF + CTL_SIZE. */
enum {
	C_MAGIC = 0x000,
	C_HELLO = 0x040,  /* [2], one line each: the peers' nonces */
	C_ACK = 0x0c0,    /* [2]: the nonce each has seen of the other */
	C_END = 0x140,    /* the sender's nonce once it is done ... */
	C_ENDIDX = 0x148, /* ... and its final head */
	C_RES = 0x180,    /* the receiver's nonce once its result is in: */
	C_RESBAD = 0x188, /* bad messages, */
	C_RESN = 0x190,   /* bytes or messages */
	C_HEAD0 = 0x200,  /* ring 0: head (producer), tail (consumer) */
	C_TAIL0 = 0x240,
	C_HEAD1 = 0x280, /* ring 1, the way back (ping-pong) */
	C_TAIL1 = 0x2c0,
	CTL_SIZE = 0x1000,
};

static uint8_t *base;         /* the control block */
static uint64_t ring_size = 1u << 20;
static double wait_secs = 60;
static const char *region_name;
static size_t region_size;
static int check = 1;

#define W(off) ((uint64_t *)(base + (off)))

static inline uint64_t ld(uint64_t off)
{
	return __atomic_load_n(W(off), __ATOMIC_ACQUIRE);
}
static inline void st(uint64_t off, uint64_t v)
{
	__atomic_store_n(W(off), v, __ATOMIC_RELEASE);
}
/* Stores that the peer must see before our next load of its words (the
 * handshake) are sequentially consistent. */
static inline void st_sc(uint64_t off, uint64_t v)
{
	__atomic_store_n(W(off), v, __ATOMIC_SEQ_CST);
}
static inline void relax(void)
{
	__builtin_ia32_pause();
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* --- The region ----------------------------------------------------------- */

static int read_hex(const char *dir, const char *file, unsigned *v)
{
	char p[512], b[32];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	if (!(f = fopen(p, "r")))
		return -1;
	int ok = fgets(b, sizeof(b), f) != NULL;
	fclose(f);
	*v = (unsigned)strtoul(b, NULL, 16);
	return ok ? 0 : -1;
}

/* The resource2 file of the first PCI device 1af4:1110 (ivshmem). */
static char *find_ivshmem(void)
{
	static char path[512];
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;

	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		char dev[300];
		unsigned ven, id;
		if (e->d_name[0] == '.')
			continue;
		snprintf(dev, sizeof(dev), "/sys/bus/pci/devices/%s", e->d_name);
		if (read_hex(dev, "vendor", &ven) || read_hex(dev, "device", &id))
			continue;
		if (ven == 0x1af4 && id == 0x1110) {
			snprintf(path, sizeof(path), "%s/resource2", dev);
			closedir(d);
			return path;
		}
	}
	closedir(d);
	return NULL;
}

static uint8_t *map_region(const char *name, uint64_t off, uint64_t need)
{
	const char *path = name;
	struct stat sb;
	int fd;

	if (!name || !strcmp(name, "pci")) {
		path = find_ivshmem();
		if (!path) {
			fprintf(stderr, "ivring: no ivshmem device (PCI 1af4:1110) in "
					"/sys/bus/pci/devices\n");
			exit(2);
		}
	}
	region_name = path;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb))
		die(path);
	region_size = (size_t)sb.st_size;
	if (need == 0)
		need = region_size;
	if (off % 4096 || off + need > region_size) {
		fprintf(stderr, "ivring: %s: %zu bytes, too small for %llu bytes at offset %llu\n",
			path, region_size, (unsigned long long)need, (unsigned long long)off);
		exit(2);
	}
	void *p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)off);
	if (p == MAP_FAILED)
		die("mmap");
	close(fd);
	return p;
}

/* --- Handshake -------------------------------------------------------------- */

static uint64_t my_nonce, peer_nonce;

static uint64_t nonce(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		v = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(now() * 1e9);
	return v ? v : 1;
}

/*
 * Each side publishes a fresh nonce in HELLO[me] and keeps copying the
 * peer's HELLO into ACK[me]; it is through when ACK[peer] holds its own
 * nonce, i.e. the peer has seen this run's hello (not one left from an
 * earlier run).  The stores that reset our indices come before our hello,
 * so the peer, which only starts once it has seen our ack of its hello
 * (itself after our hello), finds them reset.
 */
static void handshake(int me)
{
	int peer = !me;
	double deadline = now() + wait_secs;

	my_nonce = nonce();
	st_sc(C_HELLO + 0x40 * (uint64_t)me, my_nonce);
	for (uint64_t i = 0;; i++) {
		st_sc(C_ACK + 0x40 * (uint64_t)me, ld(C_HELLO + 0x40 * (uint64_t)peer));
		if (ld(C_ACK + 0x40 * (uint64_t)peer) == my_nonce)
			break;
		relax();
		if (!(i & 1023) && now() > deadline) {
			fprintf(stderr, "ivring: no peer after %.0f s (region %s)\n", wait_secs,
				region_name);
			exit(3);
		}
	}
	/* The peer's hello came before its ack of ours: it is this run's. */
	peer_nonce = ld(C_HELLO + 0x40 * (uint64_t)peer);
	st_sc(C_ACK + 0x40 * (uint64_t)me, peer_nonce);
}

/* --- Pattern ----------------------------------------------------------------- */

static uint8_t *pattern(size_t msg)
{
	uint8_t *p = malloc(PERIOD + msg);

	if (!p)
		die("malloc");
	for (size_t i = 0; i < PERIOD + msg; i++)
		p[i] = (uint8_t)((i % PERIOD) * 2654435761u >> 13);
	return p;
}

/* --- Ring ---------------------------------------------------------------------- */

struct ring {
	uint8_t *data;
	uint64_t head_off, tail_off; /* control words */
	uint64_t pos;                /* my index: head if I produce, tail if I consume */
	uint64_t other;              /* last seen index of the other side */
};

static void ring_init(struct ring *r, int which, int produce)
{
	r->data = base + CTL_SIZE + (uint64_t)which * ring_size;
	r->head_off = which ? C_HEAD1 : C_HEAD0;
	r->tail_off = which ? C_TAIL1 : C_TAIL0;
	r->pos = r->other = 0;
	st_sc(produce ? r->head_off : r->tail_off, 0);
}

static void copy_in(struct ring *r, const uint8_t *src, size_t n)
{
	size_t at = r->pos & (ring_size - 1), first = ring_size - at;

	if (first >= n) {
		memcpy(r->data + at, src, n);
	} else {
		memcpy(r->data + at, src, first);
		memcpy(r->data, src + first, n - first);
	}
}

static void copy_out(struct ring *r, uint8_t *dst, size_t n)
{
	size_t at = r->pos & (ring_size - 1), first = ring_size - at;

	if (first >= n) {
		memcpy(dst, r->data + at, n);
	} else {
		memcpy(dst, r->data + at, first);
		memcpy(dst + first, r->data, n - first);
	}
}

static double stall_deadline;

static void stalled(const char *what)
{
	if (now() > stall_deadline) {
		fprintf(stderr, "ivring: %s: no progress for %.0f s\n", what, wait_secs);
		exit(3);
	}
}

/* Put n bytes (n <= ring size), spinning while the ring is full. */
static void put(struct ring *r, const uint8_t *src, size_t n)
{
	for (uint64_t i = 0; r->pos + n - r->other > ring_size; i++) {
		r->other = ld(r->tail_off); /* pairs with the consumer's st(tail) */
		if (r->pos + n - r->other <= ring_size)
			break;
		relax();
		if (!(i & 4095))
			stalled("ring full");
	}
	copy_in(r, src, n);
	r->pos += n;
	st(r->head_off, r->pos); /* the data before the index: pairs with ld(head) */
}

/* Get exactly n bytes, spinning while the ring is empty. */
static void get(struct ring *r, uint8_t *dst, size_t n)
{
	for (uint64_t i = 0; r->other - r->pos < n; i++) {
		r->other = ld(r->head_off); /* pairs with the producer's st(head) */
		if (r->other - r->pos >= n)
			break;
		relax();
		if (!(i & 4095))
			stalled("ring empty");
	}
	copy_out(r, dst, n);
	r->pos += n;
	st(r->tail_off, r->pos); /* we are done reading: pairs with ld(tail) */
}

/* --- Stream ---------------------------------------------------------------------- */

static int stream_tx(double secs, size_t msg)
{
	struct ring r;
	uint8_t *ref = pattern(msg);
	uint64_t sent = 0;

	ring_init(&r, 0, 1);
	st_sc(C_END, 0);
	handshake(0);
	stall_deadline = now() + wait_secs;
	double t0 = now(), end = t0 + secs, t;
	do {
		for (int k = 0; k < 16; k++) {
			put(&r, ref + sent % PERIOD, msg);
			sent += msg;
		}
		t = now();
		stall_deadline = t + wait_secs;
	} while (t < end);
	st(C_ENDIDX, r.pos);
	st(C_END, my_nonce);
	/* The receiver's verdict. */
	while (ld(C_RES) != my_nonce) {
		relax();
		stalled("waiting for the receiver's result");
	}
	uint64_t got = ld(C_RESN), bad = ld(C_RESBAD);
	t = now() - t0;
	printf("sent MB/s %.1f bytes %llu secs %.3f received %llu bad %llu\n", sent / t / 1e6,
	       (unsigned long long)sent, t, (unsigned long long)got, (unsigned long long)bad);
	free(ref);
	return bad || got != sent;
}

static int stream_rx(void)
{
	struct ring r;
	size_t chunk = 65536;
	uint8_t *ref = pattern(chunk), *buf = malloc(chunk);
	uint64_t got = 0, bad = 0;

	ring_init(&r, 0, 0);
	handshake(1);
	stall_deadline = now() + wait_secs;
	double t0 = now();
	for (uint64_t i = 0;; i++) {
		r.other = ld(r.head_off);
		uint64_t avail = r.other - r.pos;
		if (avail == 0) {
			if (ld(C_END) == peer_nonce && ld(C_ENDIDX) == r.pos)
				break;
			relax();
			if (!(i & 4095))
				stalled("stream");
			continue;
		}
		size_t n = avail < chunk ? (size_t)avail : chunk;
		copy_out(&r, buf, n);
		r.pos += n;
		st(r.tail_off, r.pos);
		if (check)
			bad += memcmp(buf, ref + got % PERIOD, n) != 0;
		got += n;
		stall_deadline = now() + wait_secs;
	}
	double t = now() - t0;
	st(C_RESBAD, bad);
	st(C_RESN, got);
	st(C_RES, peer_nonce);
	printf("MB/s %.1f bytes %llu secs %.3f bad %llu checked %d\n", got / t / 1e6,
	       (unsigned long long)got, t, (unsigned long long)bad, check);
	free(ref);
	free(buf);
	return bad != 0;
}

/* --- Ping-pong ------------------------------------------------------------------------ */

static int cmp_float(const void *x, const void *y)
{
	float a = *(const float *)x, b = *(const float *)y;

	return (a > b) - (a < b);
}

static int ping(double secs, size_t size)
{
	struct ring out, in;
	uint8_t *ref = pattern(size), *buf = malloc(size);
	size_t cap = 1 << 16, n = 0;
	float *rtt = malloc(cap * sizeof(*rtt));
	uint64_t bad = 0, off = 0;

	ring_init(&out, 0, 1);
	ring_init(&in, 1, 0);
	st_sc(C_END, 0);
	handshake(0);
	double t0 = now(), end = t0 + secs, t = t0;
	stall_deadline = t0 + wait_secs;
	do {
		const uint8_t *m = ref + off % PERIOD;
		put(&out, m, size);
		get(&in, buf, size);
		if (check)
			bad += memcmp(buf, m, size) != 0;
		off += size;
		double t1 = now();
		if (n == cap) {
			cap *= 2;
			if (!(rtt = realloc(rtt, cap * sizeof(*rtt))))
				die("realloc");
		}
		rtt[n++] = (float)((t1 - t) * 1e6);
		t = t1;
		stall_deadline = t + wait_secs;
	} while (t < end);
	st(C_END, my_nonce);
	while (ld(C_RES) != my_nonce) {
		relax();
		stalled("waiting for the echo's result");
	}
	uint64_t pbad = ld(C_RESBAD), pn = ld(C_RESN);
	qsort(rtt, n, sizeof(*rtt), cmp_float);
	printf("rtt_us %.3f msgs %zu secs %.3f bad %llu echoed %llu echo_bad %llu\n", rtt[n / 2], n,
	       t - t0, (unsigned long long)bad, (unsigned long long)pn, (unsigned long long)pbad);
	free(rtt);
	free(ref);
	free(buf);
	return bad || pbad || pn != n;
}

static int pong(size_t size)
{
	struct ring in, out;
	uint8_t *ref = pattern(size), *buf = malloc(size);
	uint64_t bad = 0, n = 0;

	ring_init(&in, 0, 0);
	ring_init(&out, 1, 1);
	handshake(1);
	stall_deadline = now() + wait_secs;
	for (uint64_t i = 0;; i++) {
		in.other = ld(in.head_off);
		if (in.other - in.pos < size) {
			if (ld(C_END) == peer_nonce) {
				if (ld(in.head_off) - in.pos < size)
					break;
				continue;
			}
			relax();
			if (!(i & 4095))
				stalled("ping-pong");
			continue;
		}
		get(&in, buf, size);
		if (check)
			bad += memcmp(buf, ref + n * size % PERIOD, size) != 0;
		put(&out, buf, size);
		n++;
		stall_deadline = now() + wait_secs;
	}
	st(C_RESBAD, bad);
	st(C_RESN, n);
	st(C_RES, peer_nonce);
	printf("echoed msgs %llu bad %llu\n", (unsigned long long)n, (unsigned long long)bad);
	free(ref);
	free(buf);
	return bad != 0;
}

/* read OFF LEN / write OFF: raw access, for tests (sysfs resource files of
 * memory BARs can be mapped, not read). */
static int peek_poke(int poke, uint64_t off, uint64_t len)
{
	if (poke) {
		static uint8_t buf[1 << 16];
		size_t n;
		uint64_t at = off;
		while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
			if (at + n > region_size) {
				fprintf(stderr, "ivring: write past the end of the region\n");
				return 2;
			}
			memcpy(base + at, buf, n);
			at += n;
		}
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		return 0;
	}
	if (off + len > region_size || len > region_size) {
		fprintf(stderr, "ivring: read past the end of the region\n");
		return 2;
	}
	return fwrite(base + off, 1, len, stdout) == len ? 0 : 2;
}

static void usage(void)
{
	fprintf(stderr, "usage: ivring [-r PATH|pci] [-o OFF] [-s RING] [-w SECS] [-n] stream tx SECS [MSG]\n"
			"       ivring [...] stream rx\n"
			"       ivring [...] pingpong ping SECS [SIZE]\n"
			"       ivring [...] pingpong pong [SIZE]\n"
			"       ivring [-r PATH|pci] info | read OFF LEN | write OFF\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *region = getenv("IVRING_REGION");
	uint64_t off = 0;
	int c;

	while ((c = getopt(argc, argv, "+r:o:s:w:n")) != -1) {
		switch (c) {
		case 'r':
			region = optarg;
			break;
		case 'o':
			off = strtoull(optarg, NULL, 0);
			break;
		case 's':
			ring_size = strtoull(optarg, NULL, 0);
			break;
		case 'w':
			wait_secs = atof(optarg);
			break;
		case 'n':
			check = 0;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (ring_size < 4096 || (ring_size & (ring_size - 1)))
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[0], "info")) {
		base = map_region(region, 0, CTL_SIZE);
		printf("region %s size %zu\n", region_name, region_size);
		return 0;
	}
	if (!strcmp(argv[0], "read") || !strcmp(argv[0], "write")) {
		if (argc < 2 || (argv[0][0] == 'r' && argc < 3))
			usage();
		base = map_region(region, 0, 0);
		return peek_poke(argv[0][0] == 'w', strtoull(argv[1], NULL, 0),
				 argc > 2 ? strtoull(argv[2], NULL, 0) : 0);
	}
	if (argc < 2)
		usage();
	base = map_region(region, off, CTL_SIZE + 2 * ring_size);
	if (!strcmp(argv[0], "stream") && !strcmp(argv[1], "tx") && argc >= 3) {
		size_t msg = argc > 3 ? strtoul(argv[3], NULL, 0) : 65536;
		if (msg == 0 || msg > ring_size || msg > MAX_MSG)
			usage();
		return stream_tx(atof(argv[2]), msg);
	}
	if (!strcmp(argv[0], "stream") && !strcmp(argv[1], "rx"))
		return stream_rx();
	if (!strcmp(argv[0], "pingpong") && !strcmp(argv[1], "ping") && argc >= 3) {
		size_t size = argc > 3 ? strtoul(argv[3], NULL, 0) : 64;
		if (size == 0 || size > ring_size || size > MAX_MSG)
			usage();
		return ping(atof(argv[2]), size);
	}
	if (!strcmp(argv[0], "pingpong") && !strcmp(argv[1], "pong")) {
		size_t size = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
		if (size == 0 || size > ring_size || size > MAX_MSG)
			usage();
		return pong(size);
	}
	usage();
	return 2;
}
