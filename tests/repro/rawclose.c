/* Reproducer: a moved connection closed by syscall(SYS_close, fd), as libuv
 * (uvloop, Node.js) closes every fd (uv__close_nocancel), while its TCP
 * socket still holds bytes written before its switch that the peer's full
 * window held back, and a doorbell of the peer's waits unread in it.  The
 * library never sees that close: nothing drains the doorbell, nothing
 * lingers, and the kernel's close of a socket with unread bytes is a reset
 * that throws the unsent bytes away.  The reader gets a prefix, then
 * ECONNRESET (uvloop echo clients, about 1 run in 400).
 * Build and run (both ends are threads of one process):
 *   gcc -std=c11 -O2 -pthread -o rawclose tests/repro/rawclose.c
 *   LD_PRELOAD=build/libshunt-preload.so ./rawclose 10
 *   LD_PRELOAD=build/libshunt-preload.so ./rawclose 10 close   (libc close())
 * Each round: the server writes BIG bytes to TCP that the client does not
 * read yet (small client SO_RCVBUF); the client sends small messages that
 * the server reads until they met; the server sends 1 byte (its sends
 * switch: most of BIG is still unsent in its kernel); the server's epoll
 * wait arms its read; the client sends 1 byte (by its ring, and a
 * doorbell for the armed server); the server reads that byte and closes.
 * Then the client reads everything and checks it.  Plain TCP (no
 * LD_PRELOAD) passes every round. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BIG (2u << 20)
#define MSGS 300
#define MSG 1024

static uint8_t byte_at(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static void die(const char *what) { perror(what); exit(2); }

static void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EAGAIN) {
			struct pollfd q = { fd, POLLOUT, 0 };
			poll(&q, 1, 1000);
			continue;
		}
		if (k <= 0)
			die("write");
		p += k, n -= (size_t)k;
	}
}

static void read_all(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = read(fd, p, n);
		if (k <= 0)
			die(k ? "read" : "read: early end");
		p += k, n -= (size_t)k;
	}
}

static int to_srv[2], to_cli[2];
static void put(int *p) { char c = 1; if (write(p[1], &c, 1) != 1) die("sync"); }
static void get(int *p) { char c; if (read(p[0], &c, 1) != 1) die("sync"); }

static struct sockaddr_in where;
static size_t sent_big;

static void *client(void *arg)
{
	(void)arg;
	int c = socket(AF_INET, SOCK_STREAM, 0);
	int small = 8192;
	setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (connect(c, (void *)&where, sizeof(where)))
		die("connect");
	get(to_cli); /* the server's BIG bytes are written */
	uint8_t m[MSG];
	memset(m, 7, sizeof(m));
	for (int i = 0; i < MSGS; i++) { /* data calls: the meeting */
		write_all(c, m, MSG);
		usleep(500);
	}
	get(to_cli); /* the server switched, and its wait for a read is armed */
	write_all(c, m, 1); /* by our ring, and a doorbell for the server */
	put(to_srv);
	get(to_cli); /* the server closed */
	uint8_t *b = malloc(BIG + 64);
	size_t got = 0;
	ssize_t k;
	while ((k = read(c, b + got, BIG + 64 - got)) > 0)
		got += (size_t)k;
	int err = k < 0 ? errno : 0;
	size_t right = 0;
	while (right < got && b[right] == byte_at(right))
		right++;
	int bad = err || right != got || got != sent_big + 1;
	if (bad)
		printf("  the client got %zu bytes of %zu (%zu right), then %s\n", got,
		       sent_big + 1, right, err ? strerror(err) : "the end of the stream");
	close(c);
	free(b);
	return (void *)(intptr_t)bad;
}

static int one_round(int l, int raw)
{
	pthread_t th;
	pthread_create(&th, NULL, client, NULL);
	int s = accept(l, NULL, NULL);
	if (s < 0)
		die("accept");
	int sndbuf = 4 << 20;
	setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	uint8_t *b = malloc(BIG + 1);
	for (uint32_t i = 0; i <= BIG; i++)
		b[i] = byte_at(i);
	/* BIG bytes to TCP, that the client reads only at the end. */
	size_t off = 0;
	for (int tries = 0; off < BIG && tries < 100; tries++) {
		ssize_t k = send(s, b + off, BIG - off, MSG_DONTWAIT);
		if (k > 0)
			off += (size_t)k;
		else
			usleep(1000);
	}
	sent_big = off;
	put(to_cli);
	uint8_t m[MSG];
	for (int i = 0; i < MSGS; i++)
		read_all(s, m, MSG);
	usleep(20000);
	write_all(s, b + off, 1); /* our sends switch, most of BIG unsent */
	/* An epoll wait that finds nothing arms our read wait. */
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET };
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	epoll_wait(ep, &ev, 1, 20);
	put(to_cli);
	get(to_srv);
	usleep(50000); /* the doorbell arrives */
	read_all(s, m, 1);
	epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
	close(ep);
	int rc = raw ? (int)syscall(SYS_close, s) : close(s);
	if (rc)
		die("close");
	put(to_cli);
	void *bad;
	pthread_join(th, &bad);
	free(b);
	return (int)(intptr_t)bad;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 10;
	int raw = !(argc > 2 && strcmp(argv[2], "close") == 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (void *)&a, sizeof(a)) || listen(l, 8) ||
	    getsockname(l, (void *)&a, &al))
		die("listen");
	where = a;
	if (pipe(to_srv) || pipe(to_cli))
		die("pipe");
	int bad = 0;
	for (int r = 0; r < rounds; r++)
		bad += one_round(l, raw);
	printf("%d of %d rounds failed (%s)\n", bad, rounds,
	       raw ? "syscall(SYS_close)" : "close()");
	return bad != 0;
}
