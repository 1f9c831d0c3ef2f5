/* Reproducer of the bug fixed by "shim: a send on TCP before the move
 * counts as in flight" (found by tests/t_soak.sh).  Build and run:
 *   gcc -O2 -pthread -o txrace tests/repro/txrace.c
 *   SHUNT_LOG=debug SHUNT_LOG_FILE=/tmp/log build/shunt run -- ./txrace 10
 * Before the fix about 1 round in 30 was reset ("bytes were written to a
 * TCP socket behind the library's back") after "sends go to the ring from
 * TCP offset N (0 bytes sent through us ...)" while the 16 MiB write was
 * still in the kernel. */
/* txrace: a client whose writer thread is blocked in a big TCP send while
 * its reader thread's data calls move the connection to shared memory.
 * The server reads slowly and checks every byte.  usage: txrace ROUNDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <errno.h>

#define TOTAL (16u << 20)
#define MSG (16u << 20)
static uint8_t byte_at(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static void *writer(void *arg)
{
	int fd = *(int *)arg;
	uint8_t *b = malloc(MSG);
	for (uint64_t off = 0; off < TOTAL; off += MSG) {
		for (uint32_t i = 0; i < MSG; i++)
			b[i] = byte_at(off + i);
		if (write(fd, b, MSG) != MSG) { perror("write"); exit(1); }
	}
	shutdown(fd, SHUT_WR);
	return NULL;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 20, bad = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	bind(l, (void *)&a, sizeof(a));
	listen(l, 8);
	getsockname(l, (void *)&a, &al);
	for (int r = 0; r < rounds; r++) {
		pid_t p = fork();
		if (p == 0) { /* server: slow reader, 1 byte back now and then */
			int s = accept(l, NULL, NULL);
			uint8_t *b = malloc(65536);
			uint64_t off = 0;
			ssize_t n;
			while ((n = read(s, b, 4096)) > 0) {
				for (ssize_t i = 0; i < n; i++)
					if (b[i] != byte_at(off + i)) {
						printf("round %d: byte %llu wrong (0x%02x, want 0x%02x)\n", r,
						       (unsigned long long)(off + i), b[i], byte_at(off + i));
						_exit(1);
					}
				off += (uint64_t)n;
				write(s, "x", 1);
				usleep(20);
			}
			if (off != TOTAL) {
				printf("round %d: %llu bytes, want %u (%s)\n", r, (unsigned long long)off,
				       TOTAL, n < 0 ? strerror(errno) : "EOF");
				_exit(1);
			}
			_exit(0);
		}
		int c = socket(AF_INET, SOCK_STREAM, 0);
		connect(c, (void *)&a, sizeof(a));
		pthread_t t;
		pthread_create(&t, NULL, writer, &c);
		char x[64];
		while (read(c, x, sizeof(x)) > 0) /* the reader's calls step the move */
			;
		pthread_join(t, NULL);
		close(c);
		int st;
		waitpid(p, &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st);
	}
	printf("%d of %d rounds lost or damaged bytes\n", bad, rounds);
	return bad ? 1 : 0;
}
