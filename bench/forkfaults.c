/*
 * bench/forkfaults.c - a fork-per-connection server and its client in one
 * run: microseconds per connection, and the page faults each connection
 * costs the server and its children (what a library in the program adds to
 * a server like PostgreSQL's: every page of its data that either side
 * writes after a fork is a copy-on-write fault, every page of its code and
 * of the arena the child touches a fault of its own).  Not built by the
 * Makefile:
 *
 *   gcc -O2 -o /tmp/forkfaults bench/forkfaults.c
 *   /tmp/forkfaults 1000 23456                                    # TCP
 *   LD_PRELOAD=build/libshunt-preload.so /tmp/forkfaults 1000 23457
 *
 * Each connection: the client connects, writes 100 bytes, reads 1000 and
 * closes; the server accepts, forks, closes its copy; the child reads,
 * answers, closes and exit()s.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void client(const struct sockaddr_in *a, int n)
{
	char buf[4096];
	int one = 1;
	double t0 = now();

	memset(buf, 'q', sizeof(buf));
	for (int i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		size_t got = 0;
		ssize_t k;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(c, (const struct sockaddr *)a, sizeof(*a)) || write(c, buf, 100) != 100)
			_exit(1);
		while ((k = read(c, buf, sizeof(buf))) > 0)
			got += (size_t)k;
		if (got != 1000)
			_exit(2);
		close(c);
	}
	printf("client: %.1f us per connection\n", (now() - t0) / n * 1e6);
	fflush(stdout);
	_exit(0);
}

static void serve_one(int c)
{
	char b[1000];

	memset(b, 'r', sizeof(b));
	if (read(c, b, sizeof(b)) != 100 || write(c, b, sizeof(b)) != (ssize_t)sizeof(b))
		_exit(4);
	close(c);
	exit(0);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000, port = argc > 2 ? atoi(argv[2]) : 23456;
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1, st = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct rusage kids, self;

	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (n < 1 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 128)) {
		perror("forkfaults: bind");
		return 1;
	}
	pid_t cl = fork();
	if (cl == 0) {
		close(l);
		client(&a, n);
	}
	for (int i = 0; i < n; i++) {
		int c = accept(l, NULL, NULL);
		if (c < 0) {
			perror("forkfaults: accept");
			return 1;
		}
		if (fork() == 0) {
			close(l);
			serve_one(c);
		}
		close(c);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
	}
	waitpid(cl, &st, 0);
	while (wait(NULL) > 0)
		;
	getrusage(RUSAGE_CHILDREN, &kids);
	getrusage(RUSAGE_SELF, &self);
	printf("faults per connection: children %.1f, server %.1f; client status %d\n",
	       (double)kids.ru_minflt / n, (double)self.ru_minflt / n, st);
	return st != 0;
}
