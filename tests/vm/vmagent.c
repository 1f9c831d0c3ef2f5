/*
 * vmagent.c - run commands in a guest of the VM test harness (tests/vm/lab.sh).
 *
 * One program, both ends of a virtio-serial port:
 *
 *   vmagent guest                      in the guest (busybox init respawns it):
 *                                      serve every port named shunt.agent.N
 *   vmagent exec SOCKS SECS CMD        on the host: run `sh -c CMD` in the
 *                                      guest; its stdout, stderr and exit
 *                                      status become ours
 *   vmagent get SOCKS SECS PATH        the guest's file PATH to stdout
 *   vmagent put SOCKS SECS PATH [MODE] stdin to the guest's file PATH
 *                                      (MODE octal, default 644)
 *
 * SOCKS is a comma-separated list of the unix sockets QEMU listens on for
 * one guest's agent ports (-chardev socket,server=on).  The host end takes
 * the first one whose SOCK.lock it can flock, so that several commands can
 * run in one guest at once (a server in the background of one, a client in
 * another), and waits for one to free up if all are busy.
 *
 * Exit status on the host: the command's (128+N if signal N killed it);
 * 124 if SECS passed first (the guest then kills the command's process
 * group); 125 if the agent could not be reached or the guest went away.
 *
 * The wire: frames of a 16-byte header (magic, type, request id, payload
 * length, all host-endian: both ends are x86-64) and the payload.  The host
 * sends one request (X exec, G get, P put then D data... E end); the guest
 * answers with O stdout, R stderr, F file data, and S status (4 bytes).
 * K (host to guest, during an exec) kills the command: the host's timeout.
 * Every answer carries the request's id, so the host drops anything left
 * over from an earlier connection on the same port.
 *
 * How the guest learns that the host went away: virtio_console reports
 * POLLHUP on a port whose host side is closed, and sends SIGIO (O_ASYNC)
 * when it opens again, so an idle agent sleeps in sigtimedwait() instead
 * of spinning.  A command whose host has been gone for 5 s is killed, or
 * at once when a new request comes on its port.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x414d5653u /* "SVMA" */
#define MAXPAY (32u * 1024)
#define NPORTS_MAX 16

struct hdr {
	uint32_t magic, type, id, len;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* --- I/O on a non-blocking fd, bounded by a deadline (0: none) ---------- */

/*
 * Did the other end really go?  On the host a hang-up is final.  In the
 * guest, a port's POLLHUP is only as fresh as the guest's idea of the host
 * side, which comes on a control queue of its own: the first bytes of a
 * new connection can come before the news that it opened, and on a busy
 * machine the news can lag by a lot.  So there it counts once it has
 * lasted HUP_GRACE seconds.  (A timeout does not rely on this: the host
 * sends K.  This is for a host end that was killed.)
 */
#define HUP_GRACE 5.0
static double hup_grace; /* 0 on the host, HUP_GRACE in the guest */

static int gone(int fd)
{
	double end = now() + hup_grace;

	for (;;) {
		struct pollfd p = { fd, 0, 0 }; /* only POLLHUP/ERR/NVAL can come */
		if (poll(&p, 1, 0) == 0)
			return 0;
		if (now() >= end)
			return 1;
		usleep(20 * 1000);
	}
}

/* Wait for EV on fd.  1: ready; 0: hung up (and not ready); -1: deadline. */
static int wait_fd(int fd, short ev, double deadline)
{
	for (;;) {
		struct pollfd p = { fd, ev, 0 };
		int ms = -1;
		if (deadline > 0) {
			double left = deadline - now();
			if (left <= 0)
				return -1;
			ms = (int)(left * 1000) + 1;
		}
		int r = poll(&p, 1, ms);
		if (r < 0 && errno != EINTR)
			return 0;
		if (r <= 0)
			continue;
		if (p.revents & ev)
			return 1;
		if ((p.revents & (POLLHUP | POLLERR | POLLNVAL)) && gone(fd))
			return 0;
	}
}

/* 0, or -1 (hung up, error) or -2 (deadline). */
static int read_all(int fd, void *buf, size_t n, double deadline)
{
	char *p = buf;

	while (n) {
		ssize_t k = read(fd, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		if (k == 0) {
			/* In the guest, end of file is virtio_console's "no
			 * host", which may only mean that the news of the
			 * host's connection has not come yet: the request's
			 * bytes can come first.  Only a lasting one counts. */
			if (!hup_grace || gone(fd))
				return -1;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -1;
		int w = wait_fd(fd, POLLIN, deadline);
		if (w <= 0)
			return w < 0 ? -2 : -1;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t n, double deadline)
{
	const char *p = buf;

	while (n) {
		ssize_t k = write(fd, p, n);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0 || errno != EAGAIN)
			return -1;
		int w = wait_fd(fd, POLLOUT, deadline);
		if (w <= 0)
			return w < 0 ? -2 : -1;
	}
	return 0;
}

static int send_frame(int fd, uint32_t type, uint32_t id, const void *p, uint32_t len,
		      double deadline)
{
	struct hdr h = { MAGIC, type, id, len };

	if (write_all(fd, &h, sizeof(h), deadline))
		return -1;
	return len ? write_all(fd, p, len, deadline) : 0;
}

/* ======================================================================= */
/* Guest end                                                                */
/* ======================================================================= */

static sigset_t sigio;
static int chld_fd = -1;
static struct hdr pending; /* a request read while a command ran */
static int have_pending;

static void drain(int fd)
{
	char b[4096];

	while (read(fd, b, sizeof(b)) > 0)
		;
}

static void skip_bytes(int fd, uint32_t n)
{
	char b[4096];

	while (n) {
		uint32_t k = n < sizeof(b) ? n : (uint32_t)sizeof(b);
		if (read_all(fd, b, k, 0))
			return;
		n -= k;
	}
}

/*
 * A request's header, if one has begun to come: 1, or 0 if nothing is
 * there (end of file included), -1 if the port broke mid-header.  Never
 * waits for a header that has not begun: do_exec asks while its command
 * runs.
 */
static int read_header(int port, struct hdr *h)
{
	ssize_t k = read(port, h, sizeof(*h));

	if (k <= 0)
		return 0;
	return read_all(port, (char *)h + k, sizeof(*h) - (size_t)k, 0) ? -1 : 1;
}

static void status_frame(int port, uint32_t id, int st)
{
	int32_t v = st;

	send_frame(port, 'S', id, &v, sizeof(v), 0);
}

static void err_frame(int port, uint32_t id, const char *what, const char *path)
{
	char m[512];
	int n = snprintf(m, sizeof(m), "vmagent: %s %s: %s\n", what, path, strerror(errno));

	send_frame(port, 'R', id, m, (uint32_t)n, 0);
	status_frame(port, id, 1);
}

/* Forward what fd has to the host as frames of TYPE.  0: open; 1: EOF. */
static int forward(int port, int fd, uint32_t type, uint32_t id, int *hup)
{
	char b[MAXPAY];

	for (;;) {
		if (*hup)
			return 1;
		ssize_t k = read(fd, b, sizeof(b));
		if (k > 0) {
			if (send_frame(port, type, id, b, (uint32_t)k, 0))
				*hup = 1;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		return k == 0 || errno != EAGAIN;
	}
}

static void do_exec(int port, uint32_t id, const char *cmd)
{
	int po[2], pe[2];

	if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
		err_frame(port, id, "pipe", "");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		int nul = open("/dev/null", O_RDONLY);
		dup2(nul, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		if (chdir("/root"))
			(void)!chdir("/");
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		err_frame(port, id, "fork", "");
		return;
	}
	set_nonblock(po[0]);
	set_nonblock(pe[0]);
	int st = 0, done = 0, hup = 0, cancel = 0;
	struct pollfd p[4] = { { port, POLLIN, 0 }, { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 },
			       { chld_fd, POLLIN, 0 } };
	while (!done && !hup && !cancel) {
		if (poll(p, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents & POLLIN) {
			/* K: the host's timeout.  A new request: the host that
			 * asked for this command is gone (killed), and another
			 * has taken the port: that one is served next. */
			struct hdr h;
			int r = read_header(port, &h);
			if (r == 0) {
				/* Nothing after all, or end of file: virtio's
				 * "no host", final only once it lasts. */
				hup = gone(port);
			} else if (r < 0 || h.magic != MAGIC || h.len > MAXPAY) {
				hup = 1;
			} else if (h.type == 'X' || h.type == 'G' || h.type == 'P') {
				pending = h;
				have_pending = hup = 1;
			} else {
				skip_bytes(port, h.len);
				cancel = h.type == 'K' && h.id == id;
			}
		} else if ((p[0].revents & (POLLHUP | POLLERR)) && gone(port)) {
			hup = 1;
		}
		if (p[1].revents && forward(port, po[0], 'O', id, &hup))
			p[1].fd = -1;
		if (p[2].revents && forward(port, pe[0], 'R', id, &hup))
			p[2].fd = -1;
		if (p[3].revents) {
			struct signalfd_siginfo si;
			while (read(chld_fd, &si, sizeof(si)) > 0)
				;
			if (waitpid(pid, &st, WNOHANG) == pid)
				done = 1;
		}
	}
	if (!done) {
		/* The host timed out or went: the command goes, with its group. */
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	} else {
		/* What the shell wrote before it exited.  Background children
		 * that still hold the pipes get EPIPE from now on. */
		forward(port, po[0], 'O', id, &hup);
		forward(port, pe[0], 'R', id, &hup);
	}
	close(po[0]);
	close(pe[0]);
	if (!hup)
		status_frame(port, id, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

static void do_get(int port, uint32_t id, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char b[MAXPAY];
	ssize_t k;

	if (fd < 0) {
		err_frame(port, id, "open", path);
		return;
	}
	while ((k = read(fd, b, sizeof(b))) > 0)
		if (send_frame(port, 'F', id, b, (uint32_t)k, 0)) {
			close(fd);
			return;
		}
	if (k < 0) {
		err_frame(port, id, "read", path);
	} else {
		status_frame(port, id, 0);
	}
	close(fd);
}

/* Payload "MODE PATH"; D frames follow, then E. */
static void do_put(int port, uint32_t id, char *arg)
{
	char *sp = strchr(arg, ' '), tmp[4200], b[MAXPAY];
	mode_t mode = sp ? (mode_t)strtoul(arg, NULL, 8) : 0644;
	const char *path = sp ? sp + 1 : arg;
	int fd, bad = 0, err = 0;

	snprintf(tmp, sizeof(tmp), "%s.vmagent-%d", path, getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		bad = 1;
		err = errno;
	}
	for (;;) {
		struct hdr h;
		if (read_all(port, &h, sizeof(h), 0) || h.magic != MAGIC || h.len > MAXPAY) {
			if (fd >= 0) {
				close(fd);
				unlink(tmp);
			}
			return; /* the host went away: nothing to answer */
		}
		if (h.type == 'X' || h.type == 'G' || h.type == 'P') {
			/* Its host is gone; another has taken the port. */
			pending = h;
			have_pending = 1;
			if (fd >= 0) {
				close(fd);
				unlink(tmp);
			}
			return;
		}
		if (h.type == 'E')
			break;
		if (read_all(port, b, h.len, 0))
			return;
		if (!bad && write(fd, b, h.len) != (ssize_t)h.len) {
			bad = 1;
			err = errno ? errno : EIO;
		}
	}
	if (fd >= 0) {
		if (close(fd) && !bad) {
			bad = 1;
			err = errno;
		}
		if (!bad && rename(tmp, path)) {
			bad = 1;
			err = errno;
		}
		if (bad)
			unlink(tmp);
		else
			chmod(path, mode);
	}
	errno = err;
	if (bad)
		err_frame(port, id, "write", path);
	else
		status_frame(port, id, 0);
}

/* The next request's header.  0: got it; -1: nothing yet. */
static int next_header(int port, struct hdr *h)
{
	struct pollfd p = { port, POLLIN, 0 };

	if (poll(&p, 1, -1) < 0)
		return -1;
	int r = read_header(port, h);
	if (r == 0) {
		/* No host on this port (virtio_console then reports POLLIN
		 * with POLLHUP, and reads end of file: poll alone would
		 * spin, and three idle ports took the whole guest CPU).
		 * Sleep until one comes (SIGIO: a connection or data),
		 * looking again now and then in case the signal is missed. */
		struct timespec ts = { 0, 200 * 1000 * 1000 };
		sigtimedwait(&sigio, NULL, &ts);
		return -1;
	}
	return r > 0 ? 0 : -1;
}

static void serve_port(const char *dev)
{
	int port = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (port < 0) {
		perror(dev);
		exit(1);
	}
	fcntl(port, F_SETOWN, getpid());
	fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC);

	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	chld_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);

	char *arg = malloc(MAXPAY + 1);
	for (;;) {
		struct hdr h;
		if (have_pending) {
			h = pending;
			have_pending = 0;
		} else if (next_header(port, &h)) {
			continue;
		}
		if (h.magic != MAGIC || h.len > MAXPAY) {
			drain(port); /* out of step: drop what is there */
			continue;
		}
		if (h.type != 'X' && h.type != 'G' && h.type != 'P') {
			skip_bytes(port, h.len); /* left over from a cancelled put */
			continue;
		}
		if (read_all(port, arg, h.len, 0))
			continue;
		arg[h.len] = 0;
		if (h.type == 'X')
			do_exec(port, h.id, arg);
		else if (h.type == 'G')
			do_get(port, h.id, arg);
		else
			do_put(port, h.id, arg);
	}
}

/* The agent ports: /sys/class/virtio-ports/vportNpM/name = shunt.agent.K. */
static int find_ports(char devs[][64])
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) && n < NPORTS_MAX) {
		char p[300], name[64] = "";
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		if (!fgets(name, sizeof(name), f))
			name[0] = 0;
		fclose(f);
		if (strncmp(name, "shunt.agent.", 12))
			continue;
		snprintf(devs[n++], 64, "/dev/%.50s", e->d_name);
	}
	closedir(d);
	return n;
}

static int guest(void)
{
	char devs[NPORTS_MAX][64];
	pid_t pids[NPORTS_MAX];
	int n = 0;

	hup_grace = HUP_GRACE;
	sigemptyset(&sigio);
	sigaddset(&sigio, SIGIO);
	sigaddset(&sigio, SIGCHLD);
	sigprocmask(SIG_BLOCK, &sigio, NULL);
	sigdelset(&sigio, SIGCHLD);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < 100 && (n = find_ports(devs)) == 0; i++)
		usleep(100 * 1000);
	if (n == 0) {
		fprintf(stderr, "vmagent: no virtio port named shunt.agent.*\n");
		sleep(5);
		return 1;
	}
	for (int i = 0; i < n; i++)
		for (int t = 0; t < 100 && access(devs[i], F_OK); t++)
			usleep(50 * 1000);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			serve_port(devs[i]);
	}
	FILE *con = fopen("/dev/console", "w");
	if (con) {
		FILE *up = fopen("/proc/uptime", "r");
		double u = 0;
		if (up) {
			if (fscanf(up, "%lf", &u) != 1)
				u = 0;
			fclose(up);
		}
		fprintf(con, "SHUNTVM-READY uptime=%.2f agent ports=%d\n", u, n);
		fclose(con);
	}
	/* A port server that dies is started again. */
	for (;;) {
		int st;
		pid_t pid = wait(&st);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		for (int i = 0; i < n; i++)
			if (pids[i] == pid) {
				sleep(1);
				pids[i] = fork();
				if (pids[i] == 0)
					serve_port(devs[i]);
			}
	}
}

/* ======================================================================= */
/* Host end                                                                 */
/* ======================================================================= */

static int lock_fd = -1;

static int try_sock(const char *path, int block)
{
	char lp[4200];
	int lf, s;
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(lp, sizeof(lp), "%s.lock", path);
	lf = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lf < 0)
		return -1;
	if (flock(lf, LOCK_EX | (block ? 0 : LOCK_NB))) {
		close(lf);
		return -1;
	}
	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "vmagent: socket path too long: %s\n", path);
		exit(125);
	}
	strcpy(a.sun_path, path);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a))) {
		fprintf(stderr, "vmagent: connect %s: %s (is the guest running?)\n", path,
			strerror(errno));
		exit(125);
	}
	lock_fd = lf;
	return s;
}

/* Connect to the first free socket of the list; wait for one if all busy. */
static int connect_any(char *socks, double deadline)
{
	char *list[NPORTS_MAX];
	int n = 0;

	for (char *t = strtok(socks, ","); t && n < NPORTS_MAX; t = strtok(NULL, ","))
		list[n++] = t;
	if (n == 0) {
		fprintf(stderr, "vmagent: no socket\n");
		exit(125);
	}
	for (;;) {
		for (int i = 0; i < n; i++) {
			int s = try_sock(list[i], 0);
			if (s >= 0)
				return s;
		}
		if (now() > deadline)
			return -1;
		usleep(20 * 1000);
	}
}

/*
 * Ask the guest to kill the command, and wait a little for its status, so
 * that the port is free of it for whoever takes it next.  Hanging up
 * alone would do, but only once the guest noticed; a new connection on
 * the same port could come first.
 */
static void cancel(int s, uint32_t id)
{
	double deadline = now() + 5;
	char b[MAXPAY];
	struct hdr h;

	if (send_frame(s, 'K', id, NULL, 0, deadline))
		return;
	while (!read_all(s, &h, sizeof(h), deadline) && h.magic == MAGIC && h.len <= MAXPAY &&
	       !read_all(s, b, h.len, deadline))
		if (h.type == 'S' && h.id == id)
			return;
}

static int host(int argc, char **argv)
{
	const char *op = argv[1];
	double secs = atof(argv[3]), deadline = now() + (secs > 0 ? secs : 1e9);
	uint32_t id, type;
	char *arg;

	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(op, "exec")) {
		type = 'X';
		arg = argv[4];
	} else if (!strcmp(op, "get")) {
		type = 'G';
		arg = argv[4];
	} else {
		type = 'P';
		if (asprintf(&arg, "%s %s", argc > 5 ? argv[5] : "644", argv[4]) < 0)
			return 125;
	}
	if (strlen(arg) > MAXPAY) {
		fprintf(stderr, "vmagent: command too long (%zu bytes, at most %u)\n", strlen(arg),
			MAXPAY);
		return 125;
	}
	int s = connect_any(argv[2], deadline);
	if (s < 0) {
		fprintf(stderr, "vmagent: timed out after %.0f s waiting for a free agent port\n",
			secs);
		return 124;
	}
	set_nonblock(s);
	id = (uint32_t)getpid() ^ (uint32_t)(now() * 1e6);
	if (send_frame(s, type, id, arg, (uint32_t)strlen(arg), deadline))
		goto gone;
	if (type == 'P') {
		char b[MAXPAY];
		ssize_t k;
		while ((k = read(0, b, sizeof(b))) > 0)
			if (send_frame(s, 'D', id, b, (uint32_t)k, deadline))
				goto gone;
		if (k < 0) {
			perror("vmagent: stdin");
			return 125;
		}
		if (send_frame(s, 'E', id, NULL, 0, deadline))
			goto gone;
	}
	for (;;) {
		struct hdr h;
		char b[MAXPAY];
		int r = read_all(s, &h, sizeof(h), deadline);
		if (r == -2)
			goto timeout;
		if (r)
			goto gone;
		if (h.magic != MAGIC || h.len > MAXPAY) {
			fprintf(stderr, "vmagent: garbage from the guest\n");
			return 125;
		}
		r = read_all(s, b, h.len, deadline);
		if (r == -2)
			goto timeout;
		if (r)
			goto gone;
		if (h.id != id)
			continue; /* an answer to an earlier, abandoned request */
		if (h.type == 'S') {
			int32_t st;
			memcpy(&st, b, sizeof(st));
			return st;
		}
		int out = h.type == 'R' ? 2 : 1;
		size_t off = 0;
		while (off < h.len) {
			ssize_t k = write(out, b + off, h.len - off);
			if (k <= 0) {
				if (k < 0 && errno == EINTR)
					continue;
				break;
			}
			off += (size_t)k;
		}
	}
timeout:
	fprintf(stderr, "vmagent: timed out after %.0f s: %s %.200s\n", secs, op, argv[4]);
	if (type == 'X')
		cancel(s, id);
	return 124;
gone:
	fprintf(stderr, "vmagent: the guest closed the connection (did it die?): %s %.200s\n", op,
		argv[4]);
	return 125;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "guest"))
		return guest();
	if (argc == 5 && (!strcmp(argv[1], "exec") || !strcmp(argv[1], "get")))
		return host(argc, argv);
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "put"))
		return host(argc, argv);
	fprintf(stderr, "usage: vmagent guest\n"
			"       vmagent exec SOCK[,SOCK...] SECS CMD\n"
			"       vmagent get SOCK[,SOCK...] SECS PATH   (to stdout)\n"
			"       vmagent put SOCK[,SOCK...] SECS PATH [MODE]   (from stdin)\n");
	return 125;
}
