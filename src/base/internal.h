/*
 * internal.h - what crosses files inside libshunt.  Not installed.
 */
#ifndef SHUNT_INTERNAL_H
#define SHUNT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Marks the definitions of public functions; everything else is hidden. */
#define SHUNT_EXPORT __attribute__((visibility("default")))

/* Each argument evaluated once (a call in one must not run twice); the
 * counter keeps the names of nested uses apart. */
#define SHUNT_PICK_(a, b, op, n) __extension__({ __typeof__(a) pick_a##n = (a); \
		__typeof__(b) pick_b##n = (b); pick_a##n op pick_b##n ? pick_a##n : pick_b##n; })
#define SHUNT_PICK(a, b, op, n) SHUNT_PICK_(a, b, op, n)
#define SHUNT_MIN(a, b) SHUNT_PICK(a, b, <, __COUNTER__)
#define SHUNT_MAX(a, b) SHUNT_PICK(a, b, >, __COUNTER__)
#define SHUNT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* State a fork writes on both sides (its atfork handlers' locks and
 * lists), gathered in one section: each page of it that either side
 * writes first after the fork costs that side a copy-on-write fault,
 * and scattered over the library's data they were five pages more a
 * fork (libc's and the program's own not counted). */
#define SHUNT_FORK_HOT __attribute__((section("shunt_fork_hot")))
/* The section's first variable in link order (src/base/ links first: fd.c's
 * own_mu) starts it on a page, so that the whole of it, 4 KiB at most, is
 * one page (tests/t_layout.sh checks both). */
#define SHUNT_FORK_HOT_FIRST __attribute__((section("shunt_fork_hot"), aligned(4096)))

/* Code a forked child runs (its fork handlers, a connection's reads,
 * writes and close, exit), gathered too: a child's first call into each
 * 64 KiB of the library's code is a page fault of its own (the kernel does
 * not copy a file mapping's page table at fork), and spread over the
 * library they were four a child (bench/forkfaults.c).  GNU ld puts
 * .text.hot input sections first. */
#define SHUNT_FORK_TEXT __attribute__((section(".text.hot.shunt_fork")))

/* --- Logging (log.c) ------------------------------------------------------
 * Silent unless SHUNT_LOG names a level; lines go to stderr or SHUNT_LOG_FILE,
 * never to stdout.  Levels: error, warn, info, debug. */
enum shunt_log_level {
	SHUNT_LOG_NONE = 0,
	SHUNT_LOG_ERROR,
	SHUNT_LOG_WARN,
	SHUNT_LOG_INFO,
	SHUNT_LOG_DEBUG,
};

extern int shunt__log_level;
void shunt__log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define shunt_log(level, ...)                                       \
	do {                                                        \
		if (__builtin_expect(shunt__log_level >= (level), 0)) \
			shunt__log((level), __VA_ARGS__);           \
	} while (0)
/* A user's mistake (a bad setting) is said on stderr even when logging is
 * off, since silence would hide it; SHUNT_LOG=none silences it too. */
void shunt__complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_error(...) shunt_log(SHUNT_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  shunt_log(SHUNT_LOG_WARN, __VA_ARGS__)
#define log_info(...)  shunt_log(SHUNT_LOG_INFO, __VA_ARGS__)
#define log_debug(...) shunt_log(SHUNT_LOG_DEBUG, __VA_ARGS__)

/* --- Configuration (config.c) ---------------------------------------------
 * Read once: the built-in defaults, then the config file, then the
 * environment, each overriding the one before.  A bad environment value is
 * reported and replaced by the default; a bad config file is reported and
 * ignored as a whole (a typo in a bypass rule must not accelerate what the
 * user wanted left alone), and `bad_file` tells the shim to accelerate
 * nothing.  See docs/config.md. */
#define SHUNT_MAX_USERS 32
#define SHUNT_MAX_RULES 64
#define SHUNT_MAX_VM_NETS 16

enum shunt_rule_kind { SHUNT_RULE_ALL, SHUNT_RULE_PORT, SHUNT_RULE_ADDR };

/* "accelerate|bypass all | port LO[-HI] | addr ADDR[/PREFIX]" */
struct shunt_rule {
	uint8_t accelerate;  /* 1: accelerate, 0: bypass */
	uint8_t kind;        /* enum shunt_rule_kind */
	uint8_t family;      /* AF_INET or AF_INET6, for SHUNT_RULE_ADDR */
	uint8_t prefix;      /* bits of addr that must match */
	uint16_t port_lo, port_hi;
	uint8_t addr[16];
};

struct shunt_config {
	uint64_t ring_size; /* ring-size, SHUNT_RING_SIZE: bytes, k/m/g suffixes */
	int spin_us;        /* spin-us, SHUNT_SPIN_US: 0 = never spin */
	int spin_set;       /* spin-us was set, not defaulted */
	uint32_t upgrade_calls; /* upgrade-calls, SHUNT_UPGRADE_CALLS: a TCP
	                     * connection moves after this many data calls... */
	int calls_set;      /* upgrade-calls was set: kept as it is (not learnt:
	                     * shim/move.c, "Whether a move pays") */
	uint64_t upgrade_bytes; /* upgrade-bytes, SHUNT_UPGRADE_BYTES: ...or bytes */
	int trust_netns;    /* trust-netns: move connections between network
	                     * namespaces that share `dir` (off by default) */
	char dir[108];      /* dir, SHUNT_DIR: rendezvous directory (fits sun_path) */
	int dir_explicit;   /* dir was named, not defaulted: shared on purpose */
	unsigned n_users;   /* allow-user: other uids a peer may have */
	uint32_t users[SHUNT_MAX_USERS];
	unsigned n_rules;   /* accelerate / bypass, first match wins */
	struct shunt_rule rules[SHUNT_MAX_RULES];
	char ivshmem[108];  /* ivshmem, SHUNT_IVSHMEM: the region between VMs:
	                     * "" (default: an ivshmem PCI device's, if formatted),
	                     * "pci", a path, or "none" */
	unsigned n_vm_nets; /* ivshmem's addresses: the peers it is for */
	struct shunt_rule vm_nets[SHUNT_MAX_VM_NETS];
	char file[256];     /* the config file read, "" if none */
	int bad_file;       /* the file had an error and was ignored */
};

const struct shunt_config *shunt__config(void);
/* Parse a byte count such as "512k" or "1M".  0 or -EINVAL. */
int shunt__parse_size(const char *s, uint64_t *out);
/* Parse a config file's text into c (which holds defaults).  0, or -EINVAL
 * after reporting each bad line as "path:line: message" on stderr. */
int shunt__config_parse(struct shunt_config *c, const char *path, char *text);
/* Create (mode 0700) or check the runtime directory; 0 or negative errno. */
int shunt__ensure_dir(const char *dir);
/* Create (mode 0700) or check the directory of the shim's rendezvous
 * files: its owner and mode, and those of the directories above it
 * (config.c says the rule).  0, or -EPERM and the reason logged once. */
int shunt__safe_dir(const char *dir);
/* Apply a log level and file named by the config file (log.c). */
int shunt__log_setup(const char *level, const char *file);
/* Close the log file, if any: lines go to stderr again. */
void shunt__log_close(void);

/* --- fds (fd.c) ------------------------------------------------------------ */

/* Fds the library keeps go at or above this number when it is > 0. */
extern int shunt__fd_floor;
/* Move fd above the floor (close-on-exec); returns the fd to use, or the
 * negative errno fd already was. */
int shunt__hide_fd(int fd);
/* Move the log file's fd above the floor, once the floor is set. */
void shunt__log_hide(void);

/* The library's own fds, each registered by the address of the int that
 * holds it (> 2): the program never acts on those, the shim answers as if
 * they were not open.  shunt__own_add returns 0 or -ENOSPC (the fd works,
 * unguarded); unregister before closing.  shunt__own_move moves the one
 * at fd to another number (the program dup2()s onto it), updating its
 * holder.  shunt__own_list gives them sorted. */
#define SHUNT_OWN_MAX 512
int shunt__own_add(int *where);
void shunt__own_del(int *where);
int shunt__own_is(int fd);
int shunt__own_list(int *out, int max);
int shunt__own_move(int fd);
void shunt__own_lock(void);
void shunt__own_unlock(void);

/* --- Policy (policy.c) ---------------------------------------------------- */

/* May a peer running as uid reach us (and we it)?  Our own uid always may. */
int shunt__peer_allowed(uint32_t uid);
/* The credentials of a UNIX socket's peer (SO_PEERCRED): 0, -EACCES when
 * its user is not allowed (cr is filled), or the call's error. */
struct ucred;
int shunt__peer_cred(int sock, struct ucred *cr);
/* Does `allow-user` name uid (ours too only if named)?  The shim then
 * takes a peer of that user at the kernel's word on who owns a socket
 * when it may not look at the peer's fds (meet.c). */
int shunt__peer_named(uint32_t uid);
/* Should a TCP connection to or from this address be accelerated? */
struct shunt_addr;
int shunt__tcp_allowed(const struct shunt_addr *a);
/* Is a peer at this address one of those the config's `ivshmem` names
 * (all, when it names none)? */
int shunt__vm_peer(const struct shunt_addr *a);

#endif /* SHUNT_INTERNAL_H */
