/*
 * config.c - settings: built-in defaults, then the config file, then the
 * environment.  docs/config.md is the user's description of the file.
 *
 * Every variable is read with secure_getenv(): in a set-user-ID (or
 * set-group-ID, or file-capability) program, which runs the library when
 * /etc/ld.so.preload names it, the environment is the caller's, and a
 * SHUNT_LOG_FILE or SHUNT_CONFIG of the caller's choosing would have the
 * program write or read as its owner (a helper's attack appended a line
 * of its choosing to a root-only file).  Only the defaults and
 * /etc/shunt.conf apply there.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "seg.h"
#include "sys.h"

/* Bytes per direction; docs/design.md, "The segment", says why 2 MiB. */
#define DEFAULT_RING_SIZE (2u << 20)
#define DEFAULT_SPIN_US   50
/* A TCP connection moves to shared memory once it has made this many data
 * calls or carried this many bytes at one end: by then a set-up of about
 * ten round trips has paid for itself (docs/design.md, "When to move"). */
#define DEFAULT_UPGRADE_CALLS 16
#define DEFAULT_UPGRADE_BYTES (256u * 1024u)
#define SPIN_US_MAX       1000000
#define FILE_MAX          (64 * 1024)
#define MAX_ARGS          32

static struct shunt_config config;
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

int shunt__parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);

	if (errno || end == s || *s == '-')
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if ((*end == 'b' || *end == 'B') && end[1] == '\0')
		end++;
	if (*end != '\0' || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* A whole decimal number in [lo, hi], or -1. */
static long parse_num(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);

	return errno || end == s || *end || v < lo || v > hi ? -1 : v;
}

/* --- Settings ---------------------------------------------------------
 * One function per setting, shared by the file and the environment so both
 * accept the same values.  Each returns NULL or what is wrong. */

typedef const char *(*setter)(struct shunt_config *c, int argc, char **argv);

static const char *set_ring_size(struct shunt_config *c, int argc, char **argv)
{
	uint64_t v;

	if (argc != 1 || shunt__parse_size(argv[0], &v) < 0 || shunt_seg_check_size(v) < 0)
		return "ring-size wants one power of two from 4k to 1g";
	c->ring_size = v;
	return NULL;
}

static const char *set_spin(struct shunt_config *c, int argc, char **argv)
{
	long v = argc == 1 ? parse_num(argv[0], 0, SPIN_US_MAX) : -1;

	if (v < 0)
		return "spin-us wants one number of microseconds from 0 to 1000000";
	c->spin_us = (int)v;
	c->spin_set = 1;
	return NULL;
}

static const char *set_upgrade_calls(struct shunt_config *c, int argc, char **argv)
{
	long v = argc == 1 ? parse_num(argv[0], 0, 1000000000) : -1;

	if (v < 0)
		return "upgrade-calls wants one number of calls from 0 to 1000000000";
	c->upgrade_calls = (uint32_t)v;
	c->calls_set = 1;
	return NULL;
}

static const char *set_upgrade_bytes(struct shunt_config *c, int argc, char **argv)
{
	uint64_t v;

	if (argc != 1 || shunt__parse_size(argv[0], &v) < 0)
		return "upgrade-bytes wants one byte count (k, m, g suffixes)";
	c->upgrade_bytes = v;
	return NULL;
}

static const char *set_trust_netns(struct shunt_config *c, int argc, char **argv)
{
	if (argc != 1 || (strcmp(argv[0], "yes") && strcmp(argv[0], "no")))
		return "trust-netns wants yes or no";
	c->trust_netns = strcmp(argv[0], "yes") == 0;
	return NULL;
}

static const char *set_dir(struct shunt_config *c, int argc, char **argv)
{
	/* Leave room for "/" and a name in a 108-byte sun_path. */
	if (argc != 1 || argv[0][0] != '/' || strlen(argv[0]) >= sizeof(c->dir) - 32)
		return "dir wants one absolute path shorter than 76 bytes";
	snprintf(c->dir, sizeof(c->dir), "%s", argv[0]);
	c->dir_explicit = 1;
	return NULL;
}

static char log_level[16], log_file[256];

static const char *set_log(struct shunt_config *c, int argc, char **argv)
{
	static const char *const levels[] = { "none", "error", "warn", "info", "debug" };
	int ok = 0;

	(void)c;
	for (int i = 0; argc >= 1 && i < 5; i++)
		ok |= strcmp(argv[0], levels[i]) == 0;
	if (!ok || argc > 2 || (argc == 2 && (argv[1][0] != '/' ||
					      strlen(argv[1]) >= sizeof(log_file))))
		return "log wants none, error, warn, info or debug, then maybe an absolute file";
	snprintf(log_level, sizeof(log_level), "%s", argv[0]);
	snprintf(log_file, sizeof(log_file), "%s", argc == 2 ? argv[1] : "");
	return NULL;
}

static const char *add_users(struct shunt_config *c, int argc, char **argv)
{
	if (argc < 1)
		return "allow-user wants user names or uids";
	for (int i = 0; i < argc; i++) {
		long uid = parse_num(argv[i], 0, UINT32_MAX - 1);
		if (uid < 0) {
			struct passwd pw, *res = NULL;
			char buf[1024];
			if (getpwnam_r(argv[i], &pw, buf, sizeof(buf), &res) != 0 || !res)
				return "allow-user names a user that does not exist";
			uid = (long)res->pw_uid;
		}
		if (c->n_users == SHUNT_MAX_USERS)
			return "allow-user: too many users (at most 32)";
		c->users[c->n_users++] = (uint32_t)uid;
	}
	return NULL;
}

/* "80" or "8000-8100" */
static int parse_ports(const char *s, struct shunt_rule *r)
{
	char lo[8], *dash = strchr(s, '-');
	size_t n = dash ? (size_t)(dash - s) : strlen(s);

	if (n == 0 || n >= sizeof(lo))
		return -1;
	memcpy(lo, s, n);
	lo[n] = '\0';
	long a = parse_num(lo, 1, 65535), b = dash ? parse_num(dash + 1, 1, 65535) : a;
	if (a < 0 || b < a)
		return -1;
	r->kind = SHUNT_RULE_PORT;
	r->port_lo = (uint16_t)a;
	r->port_hi = (uint16_t)b;
	return 0;
}

/* "10.0.0.0/8", "::1", "127.0.0.1" */
static int parse_addr(const char *s, struct shunt_rule *r)
{
	char a[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);

	if (n == 0 || n >= sizeof(a))
		return -1;
	memcpy(a, s, n);
	a[n] = '\0';
	r->kind = SHUNT_RULE_ADDR;
	if (inet_pton(AF_INET, a, r->addr) == 1)
		r->family = AF_INET;
	else if (inet_pton(AF_INET6, a, r->addr) == 1)
		r->family = AF_INET6;
	else
		return -1;
	int bits = r->family == AF_INET ? 32 : 128;
	long p = slash ? parse_num(slash + 1, 0, bits) : bits;
	if (p < 0)
		return -1;
	r->prefix = (uint8_t)p;
	return 0;
}

static const char *add_rules(struct shunt_config *c, int accelerate, int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "all") == 0)
		argc = 0; /* one rule that matches everything */
	else if (argc < 2 || (strcmp(argv[0], "port") && strcmp(argv[0], "addr")))
		return "accelerate and bypass want: all, port P[-Q]..., or addr A[/BITS]...";
	int is_port = argc && strcmp(argv[0], "port") == 0;
	for (int i = argc ? 1 : 0; i < (argc ? argc : 1); i++) {
		struct shunt_rule r = { .accelerate = (uint8_t)accelerate, .kind = SHUNT_RULE_ALL };
		if (argc && (is_port ? parse_ports(argv[i], &r) : parse_addr(argv[i], &r)) < 0)
			return is_port ? "a port is a number from 1 to 65535, or a range P-Q"
				       : "an address is IPv4 or IPv6, with an optional /BITS";
		if (c->n_rules == SHUNT_MAX_RULES)
			return "too many accelerate and bypass rules (at most 64)";
		c->rules[c->n_rules++] = r;
	}
	return NULL;
}

static const char *add_accelerate(struct shunt_config *c, int argc, char **argv)
{
	return add_rules(c, 1, argc, argv);
}

static const char *add_bypass(struct shunt_config *c, int argc, char **argv)
{
	return add_rules(c, 0, argc, argv);
}

/* "ivshmem none|pci|PATH [ADDR/BITS...]": the region between VMs, and
 * the peers it is for. */
static const char *set_ivshmem(struct shunt_config *c, int argc, char **argv)
{
	const char *why = "ivshmem wants none, pci or an absolute path shorter than 108 bytes, "
			  "then maybe peer addresses A[/BITS]";

	if (argc < 1 || argc > 1 + SHUNT_MAX_VM_NETS || strlen(argv[0]) >= sizeof(c->ivshmem) ||
	    (strcmp(argv[0], "none") && strcmp(argv[0], "pci") && argv[0][0] != '/'))
		return why;
	c->n_vm_nets = 0;
	for (int i = 1; i < argc; i++) {
		struct shunt_rule r = { .accelerate = 1 };
		if (parse_addr(argv[i], &r) < 0)
			return why;
		c->vm_nets[c->n_vm_nets++] = r;
	}
	snprintf(c->ivshmem, sizeof(c->ivshmem), "%s", argv[0]);
	return NULL;
}

static const struct {
	const char *key;
	setter fn;
} settings[] = {
	{ "ring-size", set_ring_size }, { "spin-us", set_spin },
	{ "upgrade-calls", set_upgrade_calls }, { "upgrade-bytes", set_upgrade_bytes },
	{ "trust-netns", set_trust_netns },
	{ "dir", set_dir }, { "log", set_log },
	{ "allow-user", add_users }, { "accelerate", add_accelerate },
	{ "bypass", add_bypass }, { "ivshmem", set_ivshmem },
};

/* --- The file ---------------------------------------------------------- */

static const char *parse_line(struct shunt_config *c, char *line)
{
	char *argv[MAX_ARGS];
	int argc = 0;

	*strchrnul(line, '#') = '\0';
	for (char *tok = strtok(line, " \t\r"); tok; tok = strtok(NULL, " \t\r")) {
		if (argc == MAX_ARGS)
			return "too many words on one line";
		argv[argc++] = tok;
	}
	if (argc == 0)
		return NULL;
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		if (strcmp(argv[0], settings[i].key) == 0)
			return settings[i].fn(c, argc - 1, argv + 1);
	return "unknown setting (ring-size, spin-us, upgrade-calls, upgrade-bytes, "
	       "trust-netns, dir, log, allow-user, accelerate, bypass, ivshmem)";
}

int shunt__config_parse(struct shunt_config *c, const char *path, char *text)
{
	int bad = 0, lineno = 0;
	char *next;

	for (char *line = text; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		const char *why = parse_line(c, line);
		if (why) {
			shunt__complain("%s:%d: %s", path, lineno, why);
			bad = 1;
		}
	}
	return bad ? -EINVAL : 0;
}

/* $SHUNT_CONFIG (which must exist), else the first of the user's and the
 * system's files that does.  0 if none is to be read. */
static int find_file(char *out, size_t n)
{
	const char *env = secure_getenv("SHUNT_CONFIG");
	const char *xdg = secure_getenv("XDG_CONFIG_HOME"), *home = secure_getenv("HOME");

	if (env && *env) {
		snprintf(out, n, "%s", env);
		return 1;
	}
	if (xdg && *xdg == '/' && snprintf(out, n, "%s/shunt/shunt.conf", xdg) < (int)n &&
	    access(out, F_OK) == 0)
		return 1;
	if (home && *home == '/' &&
	    snprintf(out, n, "%s/.config/shunt/shunt.conf", home) < (int)n &&
	    access(out, F_OK) == 0)
		return 1;
	snprintf(out, n, "/etc/shunt.conf");
	return access(out, F_OK) == 0;
}

/* In a user namespace other than the first, a file of a user it does not
 * map (the host's root, whose config a container bind-mounts, as
 * docs/containers.md does) shows as the overflow uid (65534 unless
 * the host changed /proc/sys/kernel/overflowuid): no user of the
 * container can have written it (a user of the host may have; the host's
 * directories are the host's to guard). */
static int unmapped_owner(uid_t uid)
{
	char buf[64];
	unsigned inner = 1, outer = 1, count = 0;

	if (uid != 65534 || sys_read_text("/proc/self/uid_map", buf, sizeof(buf)) <= 0)
		return 0;
	return sscanf(buf, "%u %u %u", &inner, &outer, &count) == 3 &&
	       !(inner == 0 && outer == 0 && count == 4294967295u);
}

/* Settings are taken only from a file another user could not have
 * written: SHUNT_CONFIG may name a place such as /tmp (a helper's attack:
 * another user's file there said `allow-user` and `trust-netns yes`, and
 * was taken silently).  NULL if it is such a file. */
static const char *not_ours(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_uid != geteuid() && st->st_uid != 0 && !unmapped_owner(st->st_uid))
		return "owned by another user";
	if ((st->st_mode & S_IWOTH) || ((st->st_mode & S_IWGRP) && st->st_gid != getegid()))
		return "writable by other users";
	return NULL;
}

/* Non-blocking: a FIFO there would hold every program in our constructor. */
static int read_file(const char *path, char *buf, size_t size, const char **why)
{
	int fd = sys_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0);
	struct stat st;

	if (fd < 0)
		return fd;
	*why = sys_fstat(fd, &st) < 0 ? "cannot stat it" : not_ours(&st);
	if (*why) {
		sys_close(fd);
		return -EPERM;
	}
	long n = sys_read(fd, buf, size - 1);
	int err = n < 0 ? (int)n : 0;
	if (n == (long)size - 1 && sys_read(fd, buf, 1) > 0)
		err = -EFBIG;
	sys_close(fd);
	if (err)
		return err;
	buf[n] = '\0';
	return 0;
}

static void load_file(struct shunt_config *c)
{
	static char text[FILE_MAX];
	struct shunt_config parsed = *c;

	if (!find_file(c->file, sizeof(c->file))) {
		c->file[0] = '\0';
		return;
	}
	const char *why = NULL;
	int rc = read_file(c->file, text, sizeof(text), &why);
	if (rc < 0) {
		shunt__complain("cannot read config file %s: %s", c->file,
				why ? why : strerror(-rc));
	} else if (shunt__config_parse(&parsed, c->file, text) == 0) {
		snprintf(parsed.file, sizeof(parsed.file), "%s", c->file);
		*c = parsed;
		if (log_level[0] && shunt__log_setup(log_level, log_file) < 0)
			shunt__complain("%s: cannot log to %s", c->file, log_file);
		return;
	}
	/* Nothing of a file with errors is used. */
	shunt__complain("ignoring %s: defaults are used, and no TCP connection "
			"will be accelerated", c->file);
	c->bad_file = 1;
}

/* --- Defaults and the environment --------------------------------------- */

/* Spinning only pays when the peer can run at the same time on another core. */
static void defaults(struct shunt_config *c)
{
	const char *xdg = secure_getenv("XDG_RUNTIME_DIR");

	memset(c, 0, sizeof(*c));
	c->ring_size = DEFAULT_RING_SIZE;
	c->spin_us = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? DEFAULT_SPIN_US : 0;
	c->upgrade_calls = DEFAULT_UPGRADE_CALLS;
	c->upgrade_bytes = DEFAULT_UPGRADE_BYTES;
	if (!xdg || *xdg != '/' ||
	    snprintf(c->dir, sizeof(c->dir), "%s/shunt", xdg) >= (int)sizeof(c->dir) - 32)
		snprintf(c->dir, sizeof(c->dir), "/tmp/shunt-%u", (unsigned)geteuid());
}

static void apply_env(struct shunt_config *c, const char *var, setter fn)
{
	char *v = secure_getenv(var);

	if (!v || !*v)
		return;
	const char *why = fn(c, 1, &v);
	if (why)
		shunt__complain("%s=%s: %s; ignored", var, v, why);
}

static void config_init(void)
{
	defaults(&config);
	load_file(&config);
	apply_env(&config, "SHUNT_RING_SIZE", set_ring_size);
	apply_env(&config, "SHUNT_SPIN_US", set_spin);
	apply_env(&config, "SHUNT_UPGRADE_CALLS", set_upgrade_calls);
	apply_env(&config, "SHUNT_UPGRADE_BYTES", set_upgrade_bytes);
	apply_env(&config, "SHUNT_DIR", set_dir);
	apply_env(&config, "SHUNT_IVSHMEM", set_ivshmem);
}

/* Once loaded, one load: pthread_once is a call into libc, a page of its
 * code a forked child's first call faults in (bench/forkfaults.c). */
static _Atomic int config_ready;

const struct shunt_config *shunt__config(void)
{
	if (!atomic_load_explicit(&config_ready, memory_order_acquire)) {
		pthread_once(&config_once, config_init);
		atomic_store_explicit(&config_ready, 1, memory_order_release);
	}
	return &config;
}

/*
 * The directory holds the rendezvous sockets: whoever can create files in it
 * could pose as a listener.  A directory we create is 0700.  An existing one
 * must be a real directory owned by us and closed to others, unless the user
 * named it (e.g. one shared among containers on purpose).
 */
int shunt__ensure_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (!shunt__config()->dir_explicit &&
	    (st.st_uid != geteuid() || (st.st_mode & 077))) {
		log_error("%s is not a private directory of uid %u; refusing it",
			  dir, (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

/* --- The directory of the shim's rendezvous files ------------------------
 * With `trust-netns yes` a connection's name is a file in the directory:
 * whoever can create entries in it can bind a name before us (a squatter,
 * who at worst keeps that connection on TCP: the proof stops the rest),
 * and without the sticky bit can remove or replace ours.  So, as a careful
 * program checks a path (sshd's StrictModes):
 *   - every directory above it (symlinks followed): owned by us or root,
 *     and not writable by group or others unless sticky (as /tmp is);
 *   - the directory itself, not a symlink, made 0700 if missing, and
 *       default (not named by `dir` or SHUNT_DIR): ours, closed to group
 *       and others (a /tmp/shunt-$UID made in advance by someone else, or
 *       opened to others, is refused);
 *       named: ours or root's; writable by group or others only if it is
 *       ours and sticky (shared on purpose: others may bind names, never
 *       remove ours).
 * Anything else: the meeting is refused and the connection stays on TCP. */

static int dir_ok(const struct stat *st, unsigned me, int named)
{
	if (!S_ISDIR(st->st_mode))
		return 0;
	if (!named)
		return st->st_uid == me && !(st->st_mode & 077);
	if (st->st_uid != me && st->st_uid != 0)
		return 0;
	return !(st->st_mode & 022) || (st->st_uid == me && (st->st_mode & S_ISVTX));
}

static int above_ok(const char *dir, unsigned me)
{
	char path[sizeof(((struct shunt_config *)0)->dir)];
	struct stat st;

	snprintf(path, sizeof(path), "%s", dir);
	for (char *slash = strrchr(path, '/'); slash; slash = strrchr(path, '/')) {
		slash[slash == path ? 1 : 0] = '\0'; /* "/a/b" -> "/a" -> "/" */
		if (sys_fstatat(AT_FDCWD, path, &st, 0) < 0 || !S_ISDIR(st.st_mode) ||
		    (st.st_uid != me && st.st_uid != 0) ||
		    ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))
			return 0;
		if (slash == path)
			return 1;
	}
	return 0;
}

int shunt__safe_dir(const char *dir)
{
	static _Atomic int said;
	const struct shunt_config *c = shunt__config();
	unsigned me = sys_geteuid();
	struct stat st;

	if (dir[0] != '/')
		return -EINVAL;
	int rc = sys_mkdirat(AT_FDCWD, dir, 0700);
	if (rc < 0 && rc != -EEXIST)
		return rc;
	rc = sys_fstatat(AT_FDCWD, dir, &st, AT_SYMLINK_NOFOLLOW);
	if (rc < 0)
		return rc;
	if (dir_ok(&st, me, c->dir_explicit) && above_ok(dir, me))
		return 0;
	if (!atomic_exchange(&said, 1))
		log_warn("%s (or a directory above it) is open to other users: no rendezvous "
			 "there (docs/config.md, dir)", dir);
	return -EPERM;
}
