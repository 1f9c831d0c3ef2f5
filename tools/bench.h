/*
 * bench.h - what the files of `shunt bench` share.
 *
 * bench.c       the measuring loops (the parent process)
 * bench_opts.c  options and help
 * bench_child.c the peer process that serves every transport
 * bench_xport.c one small API over shunt, shunt zero-copy, AF_UNIX and TCP
 * bench_report.c table, JSON lines, CSV and the targets
 * bench_svg.c   the SVG chart
 * bench_cpu.c   whether other processes disturbed a point
 *
 * Only the public API of shunt.h and libc are used.
 */
#ifndef SHUNT_TOOLS_BENCH_H
#define SHUNT_TOOLS_BENCH_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <shunt.h>

/* --- Transports and tests ------------------------------------------------ */

enum xport {
	X_MEMCPY,       /* no peer: the copy the sender must at least make */
	X_SHUNT_ZC,     /* reserve/commit and peek/release: one copy */
	X_SHUNT,        /* shunt_send/shunt_recv: a copy on each side */
	X_SHUNT_NOSPIN, /* shunt with spin_us = -1 on both ends */
	X_UNIX,         /* AF_UNIX SOCK_STREAM */
	X_TCP,          /* TCP over 127.0.0.1 */
	NXPORT
};

enum test { TEST_STREAM, TEST_PINGPONG, NTEST };

extern const char *const xport_names[NXPORT];
extern const char *const test_names[NTEST];

/* Does the transport take part in the test?  memcpy has no round trip, and
 * shunt-nospin only matters where a side waits for the other (ping-pong). */
int xport_in_test(enum xport x, enum test t);

/* --- Configuration -------------------------------------------------------- */

#define BENCH_MAX_SIZES 64

struct size_list {
	size_t v[BENCH_MAX_SIZES];
	int n;
};

struct bench_cfg {
	struct size_list sizes[NTEST]; /* message sizes per test, ascending */
	unsigned xports;               /* bit (1u << X_...) per transport */
	unsigned tests;                /* bit (1u << TEST_...) per test */
	double time_s;                 /* target measuring time per point */
	struct shunt_opts opts;        /* ring size for shunt connections */
	int json;                      /* JSON lines instead of the table */
	const char *csv_path;
	const char *svg_path;
	int progress;                  /* progress lines on stderr (a tty) */
	int stats;                     /* shunt counters per point on stderr */
};

/* --- Results -------------------------------------------------------------- */

struct result {
	enum xport x;
	enum test t;
	size_t size;
	double mb_per_s;   /* stream */
	double rtt_p50_us; /* ping-pong */
	double rtt_p99_us;
	uint64_t iters;    /* messages (stream) or round trips (ping-pong) */
	double others_cpu; /* CPUs other processes kept busy meanwhile, on average */
};

/* Above this many CPUs' worth of other work, a point is marked unreliable. */
#define OTHERS_CPU_MAX 0.25

struct results {
	struct result *v;
	size_t n, cap;
	size_t ring_size; /* the shunt ring size the run used (memcpy's buffer) */
};

int results_add(struct results *rs, const struct result *r);
const struct result *results_find(const struct results *rs, enum xport x,
				  enum test t, size_t size);
/* Ratio to tcp of the same test and size: throughput / tcp throughput for
 * stream (higher is better), p50 / tcp p50 for ping-pong (lower is better).
 * Returns 0 when either side is missing. */
double result_ratio_to_tcp(const struct results *rs, const struct result *r);

/* --- Reporting (bench_report.c) ------------------------------------------ */

void report_header(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		   enum test t);
void report_row(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		enum test t, size_t size);
void report_json_row(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		     enum test t, size_t size);
void report_footer(FILE *f, const struct bench_cfg *cfg, const struct results *rs);
/* A warning if other processes disturbed any point; nothing otherwise. */
void report_disturbed(FILE *f, const struct results *rs);
/* The targets section; returns how many targets were missed. */
int report_targets(FILE *f, const struct results *rs);
int report_csv(const char *path, const struct results *rs);
int report_svg(const char *path, const struct bench_cfg *cfg, const struct results *rs);
/* "64 B", "4 KiB", "1 MiB"; buf of at least 16 bytes. */
const char *size_label(size_t size, char *buf, size_t len);

/* --- Endpoints (bench_xport.c) -------------------------------------------
 * One end of a connection of any transport.  Every call returns 0 (or a
 * byte count) or a negative errno, like libshunt itself. */

struct ep {
	enum xport x;
	int fd;                 /* sockets */
	struct shunt_conn *c;   /* shunt transports */
	size_t zc_chunk;        /* shunt-zc: smallest reservation worth waiting for */
	unsigned touched;       /* shunt-zc: what the receiver read in place */
};

/* Set by the parent's signal handlers: blocking calls that return EINTR
 * give up instead of retrying, so a stuck run ends. */
extern volatile sig_atomic_t bench_stop;

/* Send all of buf. */
int ep_send(struct ep *e, const void *buf, size_t len);
/* Receive 1..max bytes into buf (shunt-zc: look at them in place, copy
 * nothing).  0 means the peer closed. */
ssize_t ep_recv(struct ep *e, void *buf, size_t max);
/* Receive exactly len bytes; EP_EOF if the stream ended first. */
int ep_recv_all(struct ep *e, void *buf, size_t len);
/* Not an errno: the transport said "end of stream" (0 bytes) where data was
 * due, which is worth telling apart from the errors the library returns. */
#define EP_EOF (-100000)
/* strerror(-rc), knowing EP_EOF and the child's early exit too. */
const char *bench_strerror(int rc);
#define EP_PEER_EXITED (-100001)
void ep_close(struct ep *e);

/* Where the child connects: made by the parent before it forks. */
struct rendezvous {
	char shunt_name[64];
	struct shunt_listener *shunt_l;
	int tcp_listen_fd;
	int tcp_port;
	int unix_pair[2]; /* [0] parent, [1] child */
};

int rv_open(struct rendezvous *rv, unsigned xports);
void rv_close_parent(struct rendezvous *rv);
void rv_close_child(struct rendezvous *rv);
/* The parent's end, once the child has connected its own. */
int ep_accept(struct rendezvous *rv, enum xport x, struct ep *e);
/* The child's end. */
int ep_connect(struct rendezvous *rv, enum xport x, const struct shunt_opts *opts,
	       struct ep *e);

/* --- Parent/child control ------------------------------------------------ */

enum op { OP_CONNECT = 1, OP_STREAM, OP_PINGPONG, OP_CLOSE };

struct cmd {
	uint32_t op;
	uint32_t x;
	uint64_t size;
	uint64_t count; /* stream: messages; ping-pong: round trips */
};

/* The child's answer: a status and, for shunt, its end's counters. */
struct reply {
	int32_t rc;
	uint32_t pad;
	struct shunt_stats st;
	double cpu_s; /* the child's CPU time so far */
};

struct child_args {
	int ctl;                /* SOCK_SEQPACKET to the parent */
	struct rendezvous *rv;
	struct shunt_opts opts;
	size_t max_size;        /* largest message of the run */
	unsigned alarm_s;       /* last-resort limit per command */
};

/* The child's main loop; returns the exit status. */
int child_main(const struct child_args *a);

/* --- Other load (bench_cpu.c) -------------------------------------------- */

struct cpu_mark {
	double t;    /* monotonic seconds */
	double busy; /* CPU-seconds the whole machine was busy, or -1 */
	double self; /* ours */
	double peer; /* the child's, as of its last reply */
};

double cpu_self_s(void);
void cpu_mark(struct cpu_mark *m, double peer_cpu_s);
/* CPUs that other processes kept busy between a and b, on average. */
double cpu_others(const struct cpu_mark *a, const struct cpu_mark *b);

/* --- Helpers -------------------------------------------------------------- */

double now_s(void);
/* Parse "64", "4k", "1M", "2MiB" (powers of 1024). 0 or -EINVAL. */
int parse_size(const char *s, size_t *out);

/* Options (bench_opts.c): 0, or the exit status of a usage error. */
int bench_parse_args(int argc, char **argv, struct bench_cfg *cfg, int *help);
void bench_usage(FILE *f);

int bench_main(int argc, char **argv);

#endif /* SHUNT_TOOLS_BENCH_H */
