/*
 * stat.c - `shunt stat [--json] [--all] [--watch]`: what the library does
 * on this host, per process and per connection.
 *
 * Every process running the preload library keeps its facts in its
 * family's arena (shim/arena.h), a memfd named "shunt-arena", whose fd it
 * keeps in a datagram in flight on a socket of its own (not in its fd
 * table, where any process that may ptrace-read it could open it).  So
 * each socket in /proc/PID/fd is copied with pidfd_getfd (which needs
 * ptrace-attach permission: our own processes where Yama allows it, or all
 * for root), and a datagram it holds is peeked, never taken.  The arena is
 * read with pread(), never mapped: it is written by other processes, which
 * may be hostile, so every count and size in it is checked before use and
 * nothing in it can make us fault.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "arena.h"
#include "cmds.h"
#include "fdmsg.h"

#define MAX_ARENAS 4096

static const char *const why_names[ARENA_WHY] = {
	"short", "nopeer", "policy", "shared", "stdio", "options", "refused", "error", "full",
};
static const char *const state_names[] = { "free", "tcp", "meeting", "moved", "tcp" };

struct opts {
	int json, all, watch;
};

/* Where a listing goes: stdout, or a frame of --watch being built. */
static FILE *out;

struct seen {
	dev_t dev;
	ino_t ino;
};

static struct seen seen[MAX_ARENAS];
static int nseen;

static int seen_before(const struct stat *st)
{
	for (int i = 0; i < nseen; i++)
		if (seen[i].dev == st->st_dev && seen[i].ino == st->st_ino)
			return 1;
	if (nseen < MAX_ARENAS)
		seen[nseen++] = (struct seen){ st->st_dev, st->st_ino };
	return 0;
}

static void fmt_addr(const uint8_t *raw, char *buf, size_t n)
{
	struct shunt_addr a;

	memcpy(&a, raw, sizeof(a));
	if (a.family != AF_INET && a.family != AF_INET6) {
		snprintf(buf, n, "?");
		return;
	}
	shunt_addr_fmt(&a, buf, n);
}

static void show_proc(const struct arena_proc *p, const struct opts *o)
{
	char comm[17];

	memcpy(comm, p->comm, 16);
	comm[16] = '\0';
	/* Any process may write the name: only printable ASCII reaches the
	 * terminal (a forged "sshd\x7f\x1b[2J" cleared root's screen). */
	for (char *c = comm; *c; c++)
		if ((unsigned char)*c < ' ' || (unsigned char)*c > '~' || *c == '"' || *c == '\\')
			*c = '?';
	unsigned long long stayed = 0;
	for (int i = 0; i < ARENA_WHY; i++)
		stayed += p->why[i];
	if (o->json) {
		fprintf(out, "{\"process\":%d,\"comm\":\"%s\",\"seen\":%llu,\"moved\":%llu,\"stayed\":{",
		       p->pid, comm, (unsigned long long)p->seen, (unsigned long long)p->moved);
		for (int i = 0; i < ARENA_WHY; i++)
			fprintf(out, "%s\"%s\":%llu", i ? "," : "", why_names[i],
			       (unsigned long long)p->why[i]);
		fprintf(out, "}}\n");
		return;
	}
	fprintf(out, "%7d %-16s %8llu %8llu %8llu ", p->pid, comm, (unsigned long long)p->seen,
	       (unsigned long long)p->moved, stayed);
	int any = 0;
	for (int i = 0; i < ARENA_WHY; i++)
		if (p->why[i])
			fprintf(out, "%s%s %llu", any++ ? ", " : "", why_names[i],
			       (unsigned long long)p->why[i]);
	fprintf(out, "\n");
}

static void show_slot(const struct arena_slot_view *v, const struct opts *o)
{
	char l[64], r[64], pids[64] = "";
	const char *st = v->state < 5 ? state_names[v->state] : "?";
	int k = 0;

	fmt_addr(v->local, l, sizeof(l));
	fmt_addr(v->peer, r, sizeof(r));
	for (int i = 0; i < 4; i++)
		if (v->holders[i] > 0 && (size_t)k < sizeof(pids) - 12)
			k += snprintf(pids + k, sizeof(pids) - (size_t)k, "%s%d", k ? "," : "",
				      v->holders[i]);
	if (o->json) {
		fprintf(out, "{\"pids\":[%s],\"local\":\"%s\",\"peer\":\"%s\",\"state\":\"%s\","
		       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"calls\":%llu,\"why\":\"%s\","
		       "\"phase\":%u,\"flags\":%u}\n",
		       pids, l, r, st, (unsigned long long)v->bytes_in,
		       (unsigned long long)v->bytes_out, (unsigned long long)v->calls,
		       v->why >= 1 && v->why <= ARENA_WHY ? why_names[v->why - 1] : "",
		       v->phase, v->flags);
		return;
	}
	fprintf(out, "%-12s %-24s %-24s %-8s %14llu %14llu\n", pids, l, r, st,
	       (unsigned long long)v->bytes_in, (unsigned long long)v->bytes_out);
}

/* One arena, read whole and checked.  Connections on TCP are shown only
 * with --all; moved ones always. */
static void show_arena(int fd, const struct opts *o, int slots_pass)
{
	struct arena_hdr h;

	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != ARENA_MAGIC ||
	    h.version != ARENA_VERSION || h.nslots != ARENA_SLOTS ||
	    h.slot_size != ARENA_SLOT_SIZE || h.nprocs != ARENA_PROCS ||
	    h.slots_off != ARENA_SLOTS_OFF)
		return;
	if (!slots_pass) {
		for (int i = 0; i < ARENA_PROCS; i++)
			if (h.procs[i].pid > 0 && kill(h.procs[i].pid, 0) == 0)
				show_proc(&h.procs[i], o);
		return;
	}
	size_t len = (size_t)ARENA_SLOTS * ARENA_SLOT_SIZE;
	uint8_t *buf = malloc(len);
	if (!buf || pread(fd, buf, len, ARENA_SLOTS_OFF) != (ssize_t)len) {
		free(buf);
		return;
	}
	for (int i = 0; i < ARENA_SLOTS; i++) {
		struct arena_slot_view v;
		memcpy(&v, buf + (size_t)i * ARENA_SLOT_SIZE, sizeof(v));
		if (v.state == 0 || v.state > 4 || (v.state != 3 && !o->all))
			continue;
		show_slot(&v, o);
	}
	free(buf);
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* Linux 5.3, one number on every architecture */
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438 /* Linux 5.6 */
#endif

/* The arena parked on socket fd of the process behind pidfd: a copy of
 * its fd, or -1.  Only a local datagram socket is looked at, and only a
 * 1-byte datagram of ours that carries one fd is believed to hold it.
 * Every fd copied from another process is closed as untrusted (SO_LINGER
 * cleared first): its owner may drop its own copies while we hold ours,
 * and a close of the last copy of a TCP socket with unsent data and
 * SO_LINGER {1, 1000000} waited as long as that owner liked (a helper's
 * attack hung root's `shunt stat`). */
static int parked_arena(int pidfd, int fd)
{
	int s = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	int m = s < 0 ? -1 : shunt_fdmsg_peek_parked(s, ARENA_PARK_TAG);

	shunt_close_untrusted(&s, 1);
	return m;
}

/* Only AF_UNIX sockets are copied: another program's TCP socket is not
 * ours to close, nor its SO_LINGER ours to clear.  The socket's protocol
 * name (an attribute of the socket itself) says which without a copy;
 * "UNIX-STREAM" on Linux 5.15 and later, where a stream has its own. */
static int unix_dgram_maybe(const char *path)
{
	char proto[16];
	ssize_t n = getxattr(path, "system.sockprotoname", proto, sizeof(proto) - 1);

	if (n <= 0)
		return 0;
	proto[n] = '\0';
	return strcmp(proto, "UNIX") == 0;
}

static void scan_fd(const char *pid, int pidfd, const char *fd, const struct opts *o, int pass)
{
	char path[600], link[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%s/fd/%s", pid, fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 7 || memcmp(link, "socket:", 7) || pidfd < 0 || !unix_dgram_maybe(path))
		return;
	int m = parked_arena(pidfd, atoi(fd));
	if (m < 0)
		return;
	if (fstat(m, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == (off_t)ARENA_SIZE &&
	    !seen_before(&st))
		show_arena(m, o, pass);
	shunt_close_untrusted(&m, 1); /* whatever was parked: a socket too */
}

static void scan(const struct opts *o, int pass)
{
	DIR *d = opendir("/proc");

	nseen = 0;
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		char path[300];
		snprintf(path, sizeof(path), "/proc/%s/fd", e->d_name);
		DIR *f = opendir(path);
		if (!f)
			continue;
		int pidfd = (int)syscall(SYS_pidfd_open, atoi(e->d_name), 0);
		for (struct dirent *x; (x = readdir(f));)
			if (x->d_name[0] != '.')
				scan_fd(e->d_name, pidfd, x->d_name, o, pass);
		if (pidfd >= 0)
			close(pidfd);
		closedir(f);
	}
	closedir(d);
}

static void once(const struct opts *o)
{
	if (!o->json)
		fprintf(out, "%7s %-16s %8s %8s %8s %s\n", "PID", "PROGRAM", "SEEN", "MOVED", "ON TCP",
		       "WHY ON TCP");
	scan(o, 0);
	if (!o->json)
		fprintf(out, "\n%-12s %-24s %-24s %-8s %14s %14s\n", "PIDS", "LOCAL", "PEER", "STATE",
		       "BYTES IN", "BYTES OUT");
	scan(o, 1);
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: shunt stat [--json] [--all] [--watch]\n\n"
		   "What the library does on this host, among the processes this user may\n"
		   "see.  Per process: the TCP connections it tracked, how many moved to\n"
		   "shared memory, and why the others stayed on TCP (short: closed before\n"
		   "they carried enough; nopeer: the other end does not run shunt; policy:\n"
		   "a bypass rule; shared: another process holds the socket; stdio: used\n"
		   "through stdio; options: flags only TCP carries; refused: another user or\n"
		   "namespace; full: both ends waited for room, more than the rings\n"
		   "hold; error).  Then the connections in shared memory (--all: also\n"
		   "those on TCP), with their processes and bytes each way.\n"
		   "  --json   one JSON object per process and per connection, one per line\n"
		   "  --watch  refresh every second, like top (Ctrl-C to stop)\n");
}

/* One frame of --watch on a terminal, like top: the cursor goes home, each
 * line overwrites the one before it and erases what is left of it, lines
 * that would not fit above the window's last row (where the cursor rests:
 * a newline there would scroll) are cut, the last shown saying how many,
 * and what the previous frame had below is erased.  So nothing scrolls or
 * flickers. */
static void draw(const char *frame, size_t len, int first)
{
	struct winsize ws;
	int rows = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 1 ? ws.ws_row : 0;
	int lines = 0, shown = 0;

	for (size_t i = 0; i < len; i++)
		lines += frame[i] == '\n';
	fputs(first ? "\033[H\033[2J" : "\033[H", stdout);
	for (const char *p = frame, *end = frame + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (rows && shown == rows - 2 && lines > rows - 1) {
			printf("... %d more lines (a taller window shows them)\033[K\n", lines - shown);
			break;
		}
		printf("%.*s\033[K\n", (int)n, p);
		shown++;
		p += n + 1;
	}
	fputs("\033[J", stdout);
}

static _Noreturn void watch(const struct opts *o)
{
	int tty = isatty(STDOUT_FILENO);
	struct timespec tick;

	/* A frame a second on the clock, however long a scan takes (reading
	 * every process's fds, as root on a busy host, takes a while). */
	clock_gettime(CLOCK_MONOTONIC, &tick);
	for (int first = 1;; first = 0) {
		char *frame = NULL;
		size_t len = 0;
		out = tty ? open_memstream(&frame, &len) : stdout;
		if (!out) {
			out = stdout;
			tty = 0;
		}
		time_t now = time(NULL);
		fprintf(out, "shunt stat, %s", ctime(&now));
		once(o);
		if (tty) {
			fclose(out);
			draw(frame, len, first);
			free(frame);
		} else {
			putchar('\n');
		}
		fflush(stdout);
		struct timespec now_ts;
		tick.tv_sec++;
		clock_gettime(CLOCK_MONOTONIC, &now_ts);
		if (now_ts.tv_sec > tick.tv_sec ||
		    (now_ts.tv_sec == tick.tv_sec && now_ts.tv_nsec >= tick.tv_nsec))
			tick = now_ts; /* late: the next frame now, and a second after */
		else
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL) == EINTR)
				;
	}
}

int stat_main(int argc, char **argv)
{
	struct opts o = { 0 };

	out = stdout;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			o.json = 1;
		} else if (!strcmp(argv[i], "--all")) {
			o.all = 1;
		} else if (!strcmp(argv[i], "--watch")) {
			o.watch = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "shunt stat: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!o.watch) {
		once(&o);
		return 0;
	}
	watch(&o);
}
