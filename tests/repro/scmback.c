/* Reproducer of an open bug found by tests/t_soak.sh (not fixed): a
 * connection that moved to shared memory and is then passed by SCM_RIGHTS
 * while the passing process left TCP bytes unread before the peer's switch
 * offset cannot go back to TCP: it is reset.  Build and run:
 *   gcc -O2 -o scmback tests/repro/scmback.c
 *   SHUNT_LOG=info SHUNT_LOG_FILE=/tmp/log build/shunt run -- ./scmback 5
 * Plain: "0 of 5 rounds failed".  Under shunt 2 to 5 of 5 fail: the worker
 * reads ECONNRESET at byte 1048576, the client's write ECONNRESET, and the
 * server logs "cannot go back to TCP exactly (doorbells wait behind unread
 * data): it is reset". */
/* scmback: a server reads the first PREFIX bytes of a connection (enough
 * to move it to shared memory) while the client keeps sending, stops
 * reading, and passes the socket by SCM_RIGHTS to a worker process that
 * reads the rest and checks every byte.  Run under `shunt run`.
 * usage: scmback ROUNDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (8u << 20)
#define PREFIX (1u << 20)
static uint8_t byte_at(uint64_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

static int check(int fd, uint64_t *off, uint64_t upto, int r, const char *who)
{
	uint8_t b[65536];
	while (*off < upto) {
		size_t want = upto - *off < sizeof(b) ? (size_t)(upto - *off) : sizeof(b);
		ssize_t n = read(fd, b, want);
		if (n <= 0) {
			printf("round %d: %s: %s at byte %llu of %u\n", r, who,
			       n ? strerror(errno) : "EOF", (unsigned long long)*off, TOTAL);
			return -1;
		}
		for (ssize_t i = 0; i < n; i++)
			if (b[i] != byte_at(*off + i)) {
				printf("round %d: %s: byte %llu wrong\n", r, who, (unsigned long long)(*off + i));
				return -1;
			}
		*off += (uint64_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 20, bad = 0;
	setvbuf(stdout, NULL, _IONBF, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	bind(l, (void *)&a, sizeof(a));
	listen(l, 8);
	getsockname(l, (void *)&a, &al);
	for (int r = 0; r < rounds; r++) {
		int sp[2];
		socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
		pid_t w = fork();
		if (w == 0) { /* the worker: gets the socket, reads the rest */
			char d;
			char cb[CMSG_SPACE(sizeof(int))];
			struct iovec io = { &d, 1 };
			struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof(cb) };
			close(sp[0]);
			if (recvmsg(sp[1], &m, 0) != 1) _exit(1);
			int fd;
			memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof(fd));
			uint64_t off = PREFIX;
			_exit(check(fd, &off, TOTAL, r, "worker") < 0 ? 1 : 0);
		}
		close(sp[1]);
		pid_t c = fork();
		if (c == 0) { /* the client: 8 MiB in 16 KiB writes */
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			connect(fd, (void *)&a, sizeof(a));
			uint8_t b[16384];
			for (uint64_t off = 0; off < TOTAL; off += sizeof(b)) {
				for (size_t i = 0; i < sizeof(b); i++)
					b[i] = byte_at(off + i);
				if (write(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
					printf("round %d: client: write at %llu: %s\n", r, (unsigned long long)off, strerror(errno));
					_exit(1);
				}
			}
			_exit(0);
		}
		int s = accept(l, NULL, NULL);
		uint64_t off = 0;
		check(s, &off, PREFIX, r, "server"); /* moves on the way */
		usleep(20000);                       /* the client sends on meanwhile */
		char d = 0;
		char cb[CMSG_SPACE(sizeof(int))];
		struct iovec io = { &d, 1 };
		struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof(cb) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &s, sizeof(s));
		sendmsg(sp[0], &m, 0);
		close(s);
		close(sp[0]);
		int st1, st2;
		waitpid(w, &st1, 0);
		waitpid(c, &st2, 0);
		bad += !WIFEXITED(st1) || WEXITSTATUS(st1) || !WIFEXITED(st2) || WEXITSTATUS(st2);
	}
	printf("%d of %d rounds failed\n", bad, rounds);
	return bad ? 1 : 0;
}
