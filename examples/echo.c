/*
 * echo.c - the native API in one small program.
 *
 *   build/examples/echo server NAME     echo every byte back, one client at a time
 *   build/examples/echo client NAME     send stdin, print what comes back
 *
 * Both ends must run as the same user (or be allowed by the config file).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <shunt.h>

static int fail(const char *what, long rc)
{
	fprintf(stderr, "echo: %s: %s\n", what, strerror((int)-rc));
	return 1;
}

/* Zero-copy both ways: send back the received bytes straight from the ring. */
static int serve(struct shunt_conn *c)
{
	for (;;) {
		const void *in;
		void *out;
		ssize_t n = shunt_recv_peek(c, &in, 0);
		if (n <= 0)
			return n == 0 ? 0 : fail("recv", n);
		ssize_t room = shunt_send_reserve(c, &out, 1, 0);
		if (room < 0)
			return fail("send", room);
		size_t k = (size_t)n < (size_t)room ? (size_t)n : (size_t)room;
		memcpy(out, in, k);
		shunt_send_commit(c, k);
		shunt_recv_release(c, k);
	}
}

static int server(const char *name)
{
	struct shunt_listener *l;
	int rc = shunt_listen(name, &l);

	if (rc < 0)
		return fail("listen", rc);
	for (;;) {
		struct shunt_conn *c;
		rc = shunt_accept(l, &c, 0);
		if (rc < 0)
			break;
		serve(c);
		shunt_close(c);
	}
	shunt_listener_close(l);
	return fail("accept", rc);
}

/* A connection takes one sending and one receiving thread at once: the
 * sender here, the main thread receiving, so neither ring can fill up. */
static void *send_stdin(void *arg)
{
	struct shunt_conn *c = arg;
	char buf[65536];
	ssize_t n;

	while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0)
		if (shunt_send(c, buf, (size_t)n, 0) < 0)
			break;
	shunt_shutdown(c, SHUT_WR); /* the server sees end of stream */
	return NULL;
}

static int client(const char *name)
{
	struct shunt_conn *c;
	pthread_t t;
	char buf[65536];
	ssize_t n;
	int rc = shunt_connect(name, NULL, &c);

	if (rc < 0)
		return fail("connect", rc);
	if ((rc = pthread_create(&t, NULL, send_stdin, c)) != 0)
		return fail("thread", -rc);
	while ((n = shunt_recv(c, buf, sizeof(buf), 0)) > 0)
		if (write(STDOUT_FILENO, buf, (size_t)n) != n)
			break;
	pthread_join(t, NULL);
	shunt_close(c);
	return n < 0 ? fail("recv", n) : 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "server") == 0)
		return server(argv[2]);
	if (argc == 3 && strcmp(argv[1], "client") == 0)
		return client(argv[2]);
	fprintf(stderr, "usage: echo server NAME | echo client NAME\n");
	return 2;
}
