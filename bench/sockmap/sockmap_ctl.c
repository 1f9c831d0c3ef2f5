// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockmap_ctl - loads sockmap.bpf.o, attaches it, holds it while it runs,
 * and takes everything down when it stops.  For bench/sockmap.sh; not part
 * of shunt.
 *
 *   sockmap_ctl [options] OBJ CGROUP_DIR
 *
 * Loads the programs and maps of OBJ (built from sockmap.bpf.c), attaches
 * the sk_msg program to the sockhash (BPF_SK_MSG_VERDICT) and the sock_ops
 * program to CGROUP_DIR (a cgroup v2 directory, through a bpf_link), prints
 *
 *   ready pid=P ops_id=N msg_id=N hash_id=N stat_id=N link_id=N
 *
 * on stdout, and waits.  It pins nothing: every object lives only as long as
 * this process holds its file descriptor, so however it ends (even by
 * SIGKILL) the kernel detaches the programs and frees the maps and programs.
 *
 * It stops on SIGTERM, SIGINT or SIGHUP, when the process given by --parent
 * is gone, or after --max-seconds; then it detaches both programs, closes
 * everything, prints the counters of the BPF programs
 *
 *   stats inserted=N insert_failed=N redirected=N redirected_bytes=N
 *         no_peer=N no_peer_bytes=N
 *
 * (one line) and, with --rmdir, removes CGROUP_DIR if it is empty.  SIGUSR1
 * prints the counters without stopping.  Exit status 0, or 1 if loading or
 * attaching failed (libbpf's message, with the verifier log, on stderr).
 *
 *   sockmap_ctl --check OBJ
 *
 * loads OBJ and attaches its sk_msg program to its sockhash, then takes
 * everything down and prints "ok": whether the kernel accepts the programs
 * (verifier, map and program types, privileges).
 *
 * Options:
 *   --max-seconds N  stop after N seconds (default 3600)
 *   --parent PID     stop as soon as PID no longer exists (checked every
 *                    0.2 s): a benchmark that dies takes this down with it
 *   --rmdir          remove CGROUP_DIR on the way out (if it is empty)
 *   --verbose        libbpf's debug messages on stderr
 *
 * Build: cc -O2 -g -Wall -o sockmap_ctl sockmap_ctl.c -lbpf   (libbpf-dev)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/* As enum sm_stat in sockmap.bpf.c. */
static const char *const stat_names[] = {
	"inserted", "insert_failed", "redirected", "redirected_bytes", "no_peer", "no_peer_bytes",
};
#define NSTATS (sizeof(stat_names) / sizeof(stat_names[0]))

static int verbose;

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static void usage(void)
{
	fprintf(stderr, "usage: sockmap_ctl [--max-seconds N] [--parent PID] [--rmdir] [--verbose] OBJ CGROUP_DIR\n"
			"       sockmap_ctl --check [--verbose] OBJ\n");
	exit(2);
}

static __u32 obj_id(int fd)
{
	/* bpf_prog_info and bpf_map_info both begin with __u32 type, id. */
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
		return 0;
	return info.id;
}

static void print_stats(int stat_fd)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *v;
	unsigned int i;
	int c;

	if (ncpu <= 0)
		return;
	v = calloc((size_t)ncpu, sizeof(*v));
	if (!v)
		return;
	printf("stats");
	for (i = 0; i < NSTATS; i++) {
		__u32 key = i;
		unsigned long long sum = 0;

		if (bpf_map_lookup_elem(stat_fd, &key, v) == 0)
			for (c = 0; c < ncpu; c++)
				sum += v[c];
		printf(" %s=%llu", stat_names[i], sum);
	}
	printf("\n");
	fflush(stdout);
	free(v);
}

int main(int argc, char **argv)
{
	long max_seconds = 3600, parent = 0;
	int do_rmdir = 0, check = 0, i, rc = 1;
	const char *obj_path, *cg_path;
	struct bpf_object *obj = NULL;
	struct bpf_program *ops, *msg;
	struct bpf_link *link = NULL;
	int hash_fd, stat_fd, ops_fd, msg_fd, cg_fd = -1, msg_attached = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
			max_seconds = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--parent") && i + 1 < argc)
			parent = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--check"))
			check = 1;
		else if (!strcmp(argv[i], "--rmdir"))
			do_rmdir = 1;
		else if (!strcmp(argv[i], "--verbose"))
			verbose = 1;
		else
			usage();
	}
	if (argc - i != 2 - check || max_seconds <= 0)
		usage();
	obj_path = argv[i];
	cg_path = check ? NULL : argv[i + 1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_libbpf);

	/* Block the stop signals before anything is attached: they are taken
	 * by sigtimedwait() below, never by a handler. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);

	if (!check)
		cg_fd = open(cg_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!check && cg_fd < 0) {
		fprintf(stderr, "sockmap_ctl: %s: %s\n", cg_path, strerror(errno));
		goto out;
	}
	obj = bpf_object__open_file(obj_path, NULL);
	if (!obj) {
		fprintf(stderr, "sockmap_ctl: %s: cannot open: %s\n", obj_path, strerror(errno));
		goto out;
	}
	if (bpf_object__load(obj) != 0) {
		fprintf(stderr, "sockmap_ctl: %s: cannot load (verifier log above): %s\n", obj_path,
			strerror(errno));
		goto out;
	}
	ops = bpf_object__find_program_by_name(obj, "shunt_sm_ops");
	msg = bpf_object__find_program_by_name(obj, "shunt_sm_msg");
	hash_fd = bpf_object__find_map_fd_by_name(obj, "shunt_sm_hash");
	stat_fd = bpf_object__find_map_fd_by_name(obj, "shunt_sm_stat");
	if (!ops || !msg || hash_fd < 0 || stat_fd < 0) {
		fprintf(stderr, "sockmap_ctl: %s lacks shunt_sm_ops, shunt_sm_msg, shunt_sm_hash or shunt_sm_stat\n",
			obj_path);
		goto out;
	}
	ops_fd = bpf_program__fd(ops);
	msg_fd = bpf_program__fd(msg);

	/* The message verdict first, so that no socket enters the map before
	 * its messages are redirected. */
	if (bpf_prog_attach(msg_fd, hash_fd, BPF_SK_MSG_VERDICT, 0) != 0) {
		fprintf(stderr, "sockmap_ctl: attaching shunt_sm_msg to the sockhash: %s\n", strerror(errno));
		goto out;
	}
	msg_attached = 1;
	if (check) {
		msg_attached = 0;
		if (bpf_prog_detach2(msg_fd, hash_fd, BPF_SK_MSG_VERDICT) != 0) {
			fprintf(stderr, "sockmap_ctl: detaching shunt_sm_msg: %s\n", strerror(errno));
			goto out;
		}
		printf("ok\n");
		rc = 0;
		goto out;
	}
	link = bpf_program__attach_cgroup(ops, cg_fd);
	if (!link) {
		fprintf(stderr, "sockmap_ctl: attaching shunt_sm_ops to %s: %s\n", cg_path, strerror(errno));
		goto out;
	}
	printf("ready pid=%d ops_id=%u msg_id=%u hash_id=%u stat_id=%u link_id=%u\n", (int)getpid(),
	       obj_id(ops_fd), obj_id(msg_fd), obj_id(hash_fd), obj_id(stat_fd),
	       obj_id(bpf_link__fd(link)));

	struct timespec t0, now, tick = { 0, 200 * 1000 * 1000 };
	const char *why = "max-seconds";
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int sig = sigtimedwait(&set, NULL, &tick);

		if (sig == SIGUSR1) {
			print_stats(stat_fd);
			continue;
		}
		if (sig > 0) {
			why = strsignal(sig);
			break;
		}
		if (parent > 0 && kill((pid_t)parent, 0) != 0 && errno == ESRCH) {
			why = "parent gone";
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec >= max_seconds)
			break;
	}
	printf("stopping: %s\n", why);
	rc = 0;
out:
	/* Undo in reverse; closing the object would do it all anyway. */
	if (link && bpf_link__destroy(link) != 0) {
		fprintf(stderr, "sockmap_ctl: detaching shunt_sm_ops: %s\n", strerror(errno));
		rc = 1;
	}
	if (msg_attached) {
		print_stats(stat_fd);
		if (bpf_prog_detach2(msg_fd, hash_fd, BPF_SK_MSG_VERDICT) != 0) {
			fprintf(stderr, "sockmap_ctl: detaching shunt_sm_msg: %s\n", strerror(errno));
			rc = 1;
		}
	}
	bpf_object__close(obj);
	if (cg_fd >= 0)
		close(cg_fd);
	if (do_rmdir && cg_path && rmdir(cg_path) != 0 && errno != ENOENT)
		fprintf(stderr, "sockmap_ctl: rmdir %s: %s (left to the caller)\n", cg_path, strerror(errno));
	if (rc == 0 && !check)
		printf("stopped\n");
	return rc;
}
