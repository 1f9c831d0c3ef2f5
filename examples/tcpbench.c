/*
 * tcpbench.c - an ordinary TCP client and server, with no shunt in it.
 *
 * `make demo` runs it plainly and under `shunt run` to show what the preload
 * library does to a program that knows nothing of it.
 *
 *   tcpbench server PORT            serve one connection, then exit
 *   tcpbench client PORT [MIB] [N]  stream MIB MiB (default 1024), then N
 *                                   64-byte round trips (default 100000)
 *   tcpbench server PORT N          serve N short connections, then exit
 *   tcpbench connect PORT N         N short connections: connect, one byte
 *                                   each way, close; prints "conn/s <rate>"
 *
 * The client prints "MB/s <throughput> rtt_us <median round trip>" and
 * exits 1 if the server found a byte of the stream wrong.  The stream
 * repeats a pattern whose period (PERIOD) does not divide the write size, so
 * a byte lost, doubled or moved shifts everything after it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (128 * 1024)
#define PERIOD 131071 /* prime */
#define MSG 64

struct hello {
	uint64_t bytes;
	uint32_t rounds;
};

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

static void xwrite(int fd, const void *p, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t k = write(fd, (const char *)p + done, n - done);
		if (k <= 0)
			die("write");
		done += (size_t)k;
	}
}

static void xread(int fd, void *p, size_t n)
{
	for (size_t done = 0; done < n;) {
		ssize_t k = read(fd, (char *)p + done, n - done);
		if (k <= 0)
			die(k == 0 ? "read: early end of stream" : "read");
		done += (size_t)k;
	}
}

/* PERIOD + CHUNK bytes, so that any stream offset starts a CHUNK. */
static unsigned char *pattern(void)
{
	unsigned char *p = malloc(PERIOD + CHUNK);

	if (!p)
		die("malloc");
	for (size_t i = 0; i < PERIOD + CHUNK; i++)
		p[i] = (unsigned char)((i % PERIOD) * 2654435761u >> 13);
	return p;
}

static struct sockaddr_in loopback(int port)
{
	return (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				     .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
}

static int listen_on(int port)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 128) < 0)
		die("listen");
	printf("listening\n");
	fflush(stdout);
	return l;
}

/* N short connections: a byte each way, then close. */
static int serve_short(int port, long n)
{
	int l = listen_on(port);
	char b;

	for (long i = 0; i < n; i++) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			die("accept");
		xread(c, &b, 1);
		xwrite(c, &b, 1);
		close(c);
	}
	close(l);
	return 0;
}

static int connect_short(int port, long n)
{
	struct sockaddr_in a = loopback(port);
	double t0 = now();
	char b = 'x';

	for (long i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		xwrite(c, &b, 1);
		xread(c, &b, 1);
		close(c);
	}
	printf("conn/s %.0f\n", n / (now() - t0));
	return 0;
}

static int serve(int port)
{
	int one = 1, l = listen_on(port);
	int c = accept(l, NULL, NULL);
	if (c < 0)
		die("accept");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct hello h;
	xread(c, &h, sizeof(h));
	unsigned char *buf = malloc(CHUNK), *ref = pattern();
	uint64_t bad = 0;
	for (uint64_t off = 0; off < h.bytes;) {
		uint64_t left = h.bytes - off;
		ssize_t k = read(c, buf, left < CHUNK ? left : CHUNK);
		if (k <= 0)
			die("read");
		bad |= (uint64_t)memcmp(buf, ref + off % PERIOD, (size_t)k);
		off += (uint64_t)k;
	}
	bad = !!bad;
	xwrite(c, &bad, sizeof(bad));
	for (uint32_t i = 0; i < h.rounds; i++) {
		xread(c, buf, MSG);
		xwrite(c, buf, MSG);
	}
	free(buf);
	free(ref);
	close(c);
	close(l);
	return 0;
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

static int client(int port, uint64_t mib, uint32_t rounds)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, c = socket(AF_INET, SOCK_STREAM, 0);

	if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct hello h = { mib << 20, rounds };
	xwrite(c, &h, sizeof(h));
	unsigned char *ref = pattern(), buf[MSG] = { 0 };
	uint64_t bad;
	double t0 = now();
	for (uint64_t off = 0; off < h.bytes; off += CHUNK) {
		uint64_t n = h.bytes - off < CHUNK ? h.bytes - off : CHUNK;
		xwrite(c, ref + off % PERIOD, n);
	}
	xread(c, &bad, sizeof(bad));
	double secs = now() - t0;
	double *rtt = malloc(sizeof(double) * (rounds ? rounds : 1));
	for (uint32_t i = 0; i < rounds; i++) {
		double t = now();
		xwrite(c, buf, MSG);
		xread(c, buf, MSG);
		rtt[i] = (now() - t) * 1e6;
	}
	qsort(rtt, rounds, sizeof(double), cmp_double);
	printf("MB/s %.0f rtt_us %.2f\n", h.bytes / secs / 1e6, rounds ? rtt[rounds / 2] : 0.0);
	free(rtt);
	free(ref);
	close(c);
	if (bad) {
		fprintf(stderr, "tcpbench: the server read bytes that were not sent\n");
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "server"))
		return serve_short(atoi(argv[2]), atol(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return connect_short(atoi(argv[2]), atol(argv[3]));
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return serve(atoi(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "client"))
		return client(atoi(argv[2]), argc > 3 ? strtoull(argv[3], NULL, 10) : 1024,
			      argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 100000);
	fprintf(stderr, "usage: tcpbench server PORT [N] | tcpbench client PORT [MIB] [ROUNDS]"
			" | tcpbench connect PORT N\n");
	return 2;
}
