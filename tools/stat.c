/*
 * stat.c - `shunt stat [--json]`: the live accelerated connections.
 *
 * Every upgraded connection keeps its segment's memfd open in both
 * processes.  So the connections are found in /proc/PID/fd (those we may
 * look at: our own user's, or all for root), each segment is mapped read-only
 * once, and its control page gives the addresses, pids, byte counts and
 * ring fill.  The page is written by other processes: its values are only
 * printed, checked for nothing but what printing needs.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmds.h"
#include "segment.h"

#define MEMFD_LINK "/memfd:shunt-conn (deleted)"
#define MAX_SEEN 65536

struct seen {
	dev_t dev;
	ino_t ino;
};

static struct seen seen[MAX_SEEN];
static int nseen;

static int seen_before(const struct stat *st)
{
	for (int i = 0; i < nseen; i++)
		if (seen[i].dev == st->st_dev && seen[i].ino == st->st_ino)
			return 1;
	if (nseen < MAX_SEEN)
		seen[nseen++] = (struct seen){ st->st_dev, st->st_ino };
	return 0;
}

static void fmt(int family, const uint8_t *a, unsigned port, char *buf, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	inet_ntop(family, a, ip, sizeof(ip));
	snprintf(buf, n, family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}

static void show(const struct shunt_ctl *ctl, int json)
{
	struct shunt_tcp_info info;
	char cl[64], sv[64];

	memcpy(&info, (const void *)&ctl->info, sizeof(info));
	if (atomic_load(&ctl->decide) != SHUNT_DECIDE_ACCEPTED ||
	    (info.family != AF_INET && info.family != AF_INET6))
		return; /* a native connection, or an offer still being decided */
	if ((atomic_load(&ctl->side[0].state) & SHUNT_ST_CLOSED) &&
	    (atomic_load(&ctl->side[1].state) & SHUNT_ST_CLOSED))
		return; /* both ends closed: parked for reuse (docs/design.md) */
	fmt(info.family, info.client_addr, info.client_port, cl, sizeof(cl));
	fmt(info.family, info.server_addr, info.server_port, sv, sizeof(sv));
	unsigned long long h0 = atomic_load(&ctl->head[0].v), t0 = atomic_load(&ctl->tail[0].v);
	unsigned long long h1 = atomic_load(&ctl->head[1].v), t1 = atomic_load(&ctl->tail[1].v);
	unsigned cpid = atomic_load(&ctl->side[0].pid), spid = atomic_load(&ctl->side[1].pid);
	unsigned long long ring = ctl->hdr.ring_size;
	if (json)
		printf("{\"client\":\"%s\",\"server\":\"%s\",\"client_pid\":%u,\"server_pid\":%u,"
		       "\"bytes_c2s\":%llu,\"bytes_s2c\":%llu,\"ring_size\":%llu,"
		       "\"fill_c2s\":%llu,\"fill_s2c\":%llu}\n",
		       cl, sv, cpid, spid, h0, h1, ring, h0 - t0, h1 - t1);
	else
		printf("%-24s %-24s %7u %7u %14llu %14llu %9llu %9llu/%llu\n", cl, sv, cpid, spid,
		       h0, h1, h0 - t0, h1 - t1, ring);
}

static void scan_fd(const char *pid, const char *fd, int json)
{
	char path[300], link[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%s/fd/%s", pid, fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n != (ssize_t)strlen(MEMFD_LINK) || memcmp(link, MEMFD_LINK, (size_t)n))
		return;
	int m = open(path, O_RDONLY | O_CLOEXEC);
	if (m < 0)
		return;
	if (fstat(m, &st) == 0 && st.st_size >= (off_t)SHUNT_CTL_SIZE && !seen_before(&st)) {
		void *p = mmap(NULL, SHUNT_CTL_SIZE, PROT_READ, MAP_SHARED, m, 0);
		if (p != MAP_FAILED) {
			const struct shunt_ctl *ctl = p;
			if (ctl->hdr.magic == SHUNT_SEG_MAGIC)
				show(ctl, json);
			munmap(p, SHUNT_CTL_SIZE);
		}
	}
	close(m);
}

static void scan_pid(const char *pid, int json)
{
	char path[300];

	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.')
			scan_fd(pid, e->d_name, json);
	closedir(d);
}

int stat_main(int argc, char **argv)
{
	int json = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			printf("Usage: shunt stat [--json]\n\n"
			       "List the live accelerated TCP connections on this host that\n"
			       "this user may see: both endpoints, pids, bytes each way and ring\n"
			       "fill.  --json prints one JSON object per connection and line.\n");
			return 0;
		} else {
			fprintf(stderr, "shunt stat: unknown option '%s'\n", argv[i]);
			return 2;
		}
	}
	DIR *d = opendir("/proc");
	if (!d) {
		perror("shunt stat: /proc");
		return 1;
	}
	if (!json)
		printf("%-24s %-24s %7s %7s %14s %14s %9s %9s\n", "CLIENT", "SERVER", "C-PID",
		       "S-PID", "BYTES C->S", "BYTES S->C", "FILL C->S", "FILL S->C/RING");
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
			scan_pid(e->d_name, json);
	closedir(d);
	return 0;
}
