/*
 * tcpbench.c - an ordinary TCP client and server, with no shunt in it.
 *
 * `make demo` runs it plainly and under `shunt run` to show what the preload
 * library does to a program that knows nothing of it; `make bench`
 * (bench/run.sh) uses the other modes.
 *
 *   tcpbench server PORT            serve one connection, then exit
 *   tcpbench client PORT [MIB] [N]  stream MIB MiB (default 1024), then N
 *                                   64-byte round trips (default 100000)
 *   tcpbench server PORT N [RT]     serve N short connections, then exit
 *   tcpbench connect PORT N [RT]    N short connections: connect, one byte
 *                                   each way RT times (default 1), close;
 *                                   prints "conn/s <rate>"
 *
 * Time-bounded modes, for benchmarks (AT: start at this time, in seconds
 * since the epoch, once connected, so that many clients start together):
 *
 *   tcpbench respond PORT           serve connections one after another,
 *                                   each as its client asks (a stream or
 *                                   an echo); exit on a `quit` connection.
 *                                   After each prints "stream|pingpong
 *                                   cpu_s <user+sys seconds it took>"
 *   tcpbench stream PORT SECS [WRITE] [AT]
 *                                   write WRITE bytes at a time (default
 *                                   131072) for SECS seconds; prints
 *                                   "MB/s X bytes N secs S cpu_s C"
 *   tcpbench pingpong PORT SECS [SIZE] [AT] [GAP_US]
 *                                   round trips of SIZE bytes (default 64)
 *                                   for SECS seconds, GAP_US microseconds
 *                                   of sleep before each (default 0, not
 *                                   timed: a request after a quiet while);
 *                                   prints "rtt_us <median> msgs N secs S
 *                                   cpu_s C"
 *   tcpbench quit PORT              make a respond server exit
 *   tcpbench hold PORT N            accept N connections and wait in epoll
 *                                   on all of them until each is closed,
 *                                   echoing what arrives; prints "accepted
 *                                   N" once all are in
 *   tcpbench idle PORT N SECS [RT]  open N connections, make RT 64-byte
 *                                   round trips on each, one connection
 *                                   after the other (default 0; under
 *                                   shunt a few dozen move a connection
 *                                   to shared memory before it idles),
 *                                   print "connected N", leave them idle
 *                                   SECS seconds, close
 *   tcpbench accept PORT N          accept and close N connections, then
 *                                   echo a byte on one more
 *   tcpbench connect0 PORT N        N connections with no data (connect,
 *                                   close), then one with a byte each way,
 *                                   so that the server has taken them all;
 *                                   prints "conn/s <rate>"
 *
 * cpu_s is getrusage(RUSAGE_SELF) user+sys over the measured time.
 *
 * PORT may also be ADDR:PORT (an IPv4 address), for both ends: a server
 * listens on ADDR, a client connects to ADDR; the default is 127.0.0.1.
 * The VM tests (tests/t_vm_*.sh) run it between guests this way.
 *
 * `client` prints "MB/s <throughput> rtt_us <median round trip>" and
 * exits 1 if the server found a byte of the stream wrong.  The stream
 * repeats a pattern whose period (PERIOD) does not divide the write size, so
 * a byte lost, doubled or moved shifts everything after it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
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

/* The address of every socket, set by an ADDR:PORT argument. */
static struct in_addr bench_addr = { .s_addr = 0 };
static int bench_addr_set;

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	if (bench_addr_set)
		a.sin_addr = bench_addr;
	return a;
}

/* "PORT" or "ADDR:PORT": the port; the address goes to bench_addr. */
static int port_arg(const char *s)
{
	const char *colon = strrchr(s, ':');
	char host[64];

	if (!colon)
		return atoi(s);
	if ((size_t)(colon - s) >= sizeof(host)) {
		fprintf(stderr, "tcpbench: bad address %s\n", s);
		exit(2);
	}
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	if (inet_pton(AF_INET, host, &bench_addr) != 1) {
		fprintf(stderr, "tcpbench: bad address %s\n", s);
		exit(2);
	}
	bench_addr_set = 1;
	return atoi(colon + 1);
}

/* Many short or idle connections can arrive faster than they are accepted:
 * a full accept queue drops SYNs, and a dropped SYN costs a 1 s retry. */
static int listen_backlog(int port, int backlog)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, backlog) < 0)
		die("listen");
	printf("listening\n");
	fflush(stdout);
	return l;
}

static int listen_on(int port)
{
	return listen_backlog(port, 128);
}

/*
 * N short connections in a row.  With `data`, each carries a byte each
 * way; without, each is connect, accept, close, and one more connection
 * with a byte each way ends the run: over TCP, connect() returns before
 * accept(), so that last one, taken last, marks the end of the server's
 * work too.
 */
/* data: the round trips each connection makes (0: none, but the last). */
static int serve_short(int port, long n, long data)
{
	int l = listen_backlog(port, data ? 128 : 4096);
	char b;

	for (long i = 0; i < n + !data; i++) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			die("accept");
		for (long k = 0; k < (data ? data : i == n); k++) {
			xread(c, &b, 1);
			xwrite(c, &b, 1);
		}
		close(c);
	}
	close(l);
	return 0;
}

static int connect_short(int port, long n, long data)
{
	struct sockaddr_in a = loopback(port);
	double t0 = now();
	char b = 'x';

	for (long i = 0; i < n + !data; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		for (long k = 0; k < (data ? data : i == n); k++) {
			xwrite(c, &b, 1);
			xread(c, &b, 1);
		}
		close(c);
	}
	printf("conn/s %.0f\n", n / (now() - t0));
	return 0;
}

static long round_trips(const char *s)
{
	long k = atol(s);

	return k > 0 ? k : 1;
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

/* --- Time-bounded modes, for bench/run.sh ------------------------------- */

enum { OP_QUIT, OP_STREAM, OP_PINGPONG };

struct request {
	uint32_t op;
	uint32_t size; /* ping-pong message size */
};

#define MAX_MSG (64u << 20)

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec * 1e-6;
}

static int connect_to(int port)
{
	struct sockaddr_in a = loopback(port);
	int one = 1, c = socket(AF_INET, SOCK_STREAM, 0);

	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return c;
}

static void sleep_for(double d)
{
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Sleep until AT (CLOCK_REALTIME seconds; 0: do not wait). */
static void wait_until(double at)
{
	struct timespec ts;

	if (at <= 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	sleep_for(at - (ts.tv_sec + ts.tv_nsec * 1e-9));
}

static int cmp_float(const void *x, const void *y)
{
	float a = *(const float *)x, b = *(const float *)y;

	return (a > b) - (a < b);
}

static int respond(int port)
{
	int l = listen_on(port);
	unsigned char *buf = malloc(MAX_MSG);

	if (!buf)
		die("malloc");
	for (;;) {
		int one = 1, c = accept(l, NULL, NULL);
		struct request rq;
		if (c < 0)
			die("accept");
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		xread(c, &rq, sizeof(rq));
		double cpu0 = cpu_now();
		if (rq.op == OP_QUIT) {
			close(c);
			break;
		} else if (rq.op == OP_STREAM) {
			uint64_t n = 0;
			ssize_t k;
			while ((k = read(c, buf, 256 * 1024)) > 0)
				n += (uint64_t)k;
			if (k < 0)
				die("read");
			xwrite(c, &n, sizeof(n));
			printf("stream bytes %llu cpu_s %.4f\n", (unsigned long long)n, cpu_now() - cpu0);
		} else if (rq.op == OP_PINGPONG && rq.size > 0 && rq.size <= MAX_MSG) {
			uint64_t n = 0;
			for (;; n++) {
				size_t got = 0;
				while (got < rq.size) {
					ssize_t k = read(c, buf + got, rq.size - got);
					if (k < 0)
						die("read");
					if (k == 0)
						break;
					got += (size_t)k;
				}
				if (got < rq.size)
					break; /* the client is done */
				xwrite(c, buf, rq.size);
			}
			printf("pingpong msgs %llu cpu_s %.4f\n", (unsigned long long)n, cpu_now() - cpu0);
		} else {
			fprintf(stderr, "tcpbench: bad request %u/%u\n", rq.op, rq.size);
			exit(2);
		}
		fflush(stdout);
		close(c);
	}
	free(buf);
	close(l);
	return 0;
}

static int stream_for(int port, double secs, size_t wsize, double at)
{
	int c = connect_to(port);
	struct request rq = { OP_STREAM, 0 };
	unsigned char *ref = pattern();
	uint64_t sent = 0, got;

	if (wsize == 0 || wsize > CHUNK)
		wsize = wsize ? CHUNK : 1;
	xwrite(c, &rq, sizeof(rq));
	wait_until(at);
	double cpu0 = cpu_now(), t0 = now(), end = t0 + secs;
	do {
		xwrite(c, ref + sent % PERIOD, wsize);
		sent += wsize;
	} while (now() < end);
	/* The server answers with its count once it has read everything. */
	shutdown(c, SHUT_WR);
	xread(c, &got, sizeof(got));
	double t = now() - t0;
	printf("MB/s %.1f bytes %llu secs %.3f cpu_s %.4f\n", got / t / 1e6, (unsigned long long)got,
	       t, cpu_now() - cpu0);
	close(c);
	free(ref);
	if (got != sent) {
		fprintf(stderr, "tcpbench: sent %llu bytes, the server read %llu\n",
			(unsigned long long)sent, (unsigned long long)got);
		return 1;
	}
	return 0;
}

static int pingpong_for(int port, double secs, uint32_t size, double at, long gap_us)
{
	int c = connect_to(port);
	struct request rq = { OP_PINGPONG, size };
	size_t cap = 1 << 16, n = 0;
	float *rtt = malloc(cap * sizeof(*rtt));
	unsigned char *buf = calloc(1, size ? size : 1);

	if (size == 0 || size > MAX_MSG || !rtt || !buf) {
		fprintf(stderr, "tcpbench: bad size %u\n", size);
		return 2;
	}
	xwrite(c, &rq, sizeof(rq));
	wait_until(at);
	double cpu0 = cpu_now(), t0 = now(), end = t0 + secs, t = t0;
	do {
		if (gap_us > 0) {
			sleep_for((double)gap_us / 1e6);
			t = now();
		}
		xwrite(c, buf, size);
		xread(c, buf, size);
		double t1 = now();
		if (n == cap) {
			cap *= 2;
			rtt = realloc(rtt, cap * sizeof(*rtt));
			if (!rtt)
				die("realloc");
		}
		rtt[n++] = (float)((t1 - t) * 1e6);
		t = t1;
	} while (t < end);
	double cpu = cpu_now() - cpu0;
	close(c);
	qsort(rtt, n, sizeof(*rtt), cmp_float);
	printf("rtt_us %.3f msgs %zu secs %.3f cpu_s %.4f\n", rtt[n / 2], n, t - t0, cpu);
	free(rtt);
	free(buf);
	return 0;
}

static int quit(int port)
{
	int c = connect_to(port);
	struct request rq = { OP_QUIT, 0 };

	xwrite(c, &rq, sizeof(rq));
	close(c);
	return 0;
}

/* The fd limit must cover N connections (plus the library's own fds under
 * shunt): raise the soft limit to the hard one. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Like a real server: every connection in one epoll set, woken by data or
 * by the peer's close. */
static int hold(int port, long n)
{
	int l = listen_backlog(port, 4096), ep = epoll_create1(0);
	long in = 0, open_conns = 0;
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = l }, evs[64];
	char buf[4096];

	raise_nofile();
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0)
		die("epoll");
	while (in < n || open_conns > 0) {
		int k = epoll_wait(ep, evs, 64, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("epoll_wait");
		for (int i = 0; i < k; i++) {
			int fd = evs[i].data.fd;
			if (fd == l) {
				int c = accept(l, NULL, NULL);
				if (c < 0)
					die("accept");
				ev = (struct epoll_event){ .events = EPOLLIN | EPOLLRDHUP, .data.fd = c };
				if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
					die("epoll_ctl");
				open_conns++;
				if (++in == n) {
					epoll_ctl(ep, EPOLL_CTL_DEL, l, NULL);
					printf("accepted %ld\n", n);
					fflush(stdout);
				}
			} else {
				ssize_t got = read(fd, buf, sizeof(buf));
				if (got <= 0) {
					close(fd); /* closes its epoll registration too */
					open_conns--;
				} else {
					xwrite(fd, buf, (size_t)got);
				}
			}
		}
	}
	close(ep);
	close(l);
	return 0;
}

static int idle(int port, long n, double secs, long rounds)
{
	int *fds = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
	char msg[MSG] = { 0 }, back[MSG];

	if (!fds)
		die("malloc");
	raise_nofile();
	for (long i = 0; i < n; i++)
		fds[i] = connect_to(port);
	/* Each connection carries its round trips while the others wait, as a
	 * client that talks to one server and then goes quiet. */
	for (long i = 0; i < n; i++) {
		for (long r = 0; r < rounds; r++) {
			msg[0] = (char)r;
			xwrite(fds[i], msg, sizeof(msg));
			xread(fds[i], back, sizeof(back));
			if (back[0] != msg[0]) {
				fprintf(stderr, "tcpbench idle: connection %ld: round trip %ld came back wrong\n", i, r);
				exit(1);
			}
		}
	}
	printf("connected %ld\n", n);
	fflush(stdout);
	sleep_for(secs);
	for (long i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[1], "server"))
		return serve_short(port_arg(argv[2]), atol(argv[3]), argc > 4 ? round_trips(argv[4]) : 1);
	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return connect_short(port_arg(argv[2]), atol(argv[3]), argc > 4 ? round_trips(argv[4]) : 1);
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return serve(port_arg(argv[2]));
	if (argc >= 3 && !strcmp(argv[1], "client"))
		return client(port_arg(argv[2]), argc > 3 ? strtoull(argv[3], NULL, 10) : 1024,
			      argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 100000);
	if (argc >= 3 && !strcmp(argv[1], "respond"))
		return respond(port_arg(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "stream"))
		return stream_for(port_arg(argv[2]), atof(argv[3]),
				  argc > 4 ? strtoul(argv[4], NULL, 10) : CHUNK, argc > 5 ? atof(argv[5]) : 0);
	if (argc >= 4 && !strcmp(argv[1], "pingpong"))
		return pingpong_for(port_arg(argv[2]), atof(argv[3]),
				    argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : MSG,
				    argc > 5 ? atof(argv[5]) : 0, argc > 6 ? atol(argv[6]) : 0);
	if (argc >= 3 && !strcmp(argv[1], "quit"))
		return quit(port_arg(argv[2]));
	if (argc >= 4 && !strcmp(argv[1], "hold"))
		return hold(port_arg(argv[2]), atol(argv[3]));
	if (argc >= 5 && !strcmp(argv[1], "idle"))
		return idle(port_arg(argv[2]), atol(argv[3]), atof(argv[4]), argc > 5 ? atol(argv[5]) : 0);
	if (argc >= 4 && !strcmp(argv[1], "accept"))
		return serve_short(port_arg(argv[2]), atol(argv[3]), 0);
	if (argc >= 4 && !strcmp(argv[1], "connect0"))
		return connect_short(port_arg(argv[2]), atol(argv[3]), 0);
	fprintf(stderr, "usage: tcpbench server PORT [N [RT]] | tcpbench client PORT [MIB] [ROUNDS]"
			" | tcpbench connect PORT N [RT]\n"
			"       tcpbench respond PORT | stream PORT SECS [WRITE] [AT]"
			" | pingpong PORT SECS [SIZE] [AT] [GAP_US] | quit PORT\n"
			"       tcpbench hold PORT N | idle PORT N SECS [RT] | accept PORT N"
			" | connect0 PORT N\n"
			"       (every PORT may be ADDR:PORT; ADDR defaults to 127.0.0.1)\n");
	return 2;
}
