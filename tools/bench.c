/*
 * bench.c - `shunt bench`: shunt against memcpy, AF_UNIX and TCP loopback,
 * side by side, between the same two processes and at the same sizes.
 *
 * The parent measures; a forked child (bench_child.c) is the peer of every
 * transport.  For each test and size, each transport runs in turn, so a
 * row of the table is taken over a few seconds of the same machine state.
 *
 *   stream    the parent sends messages of one size back to back; the child
 *             receives the agreed total and acks with one byte; throughput
 *             is bytes / (first send .. ack received).
 *   pingpong  the parent sends a message, the child receives all of it and
 *             sends as many bytes back; each round trip is timed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

const char *const xport_names[NXPORT] = {
	[X_MEMCPY] = "memcpy", [X_SHUNT_ZC] = "shunt-zc", [X_SHUNT] = "shunt",
	[X_SHUNT_NOSPIN] = "shunt-nospin", [X_UNIX] = "unix", [X_TCP] = "tcp",
};
const char *const test_names[NTEST] = {
	[TEST_STREAM] = "stream", [TEST_PINGPONG] = "pingpong",
};

int xport_in_test(enum xport x, enum test t)
{
	if (x == X_MEMCPY)
		return t == TEST_STREAM;
	if (x == X_SHUNT_NOSPIN)
		return t == TEST_PINGPONG;
	return 1;
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define PILOT_BYTES    (256u << 10)
#define MIN_ROUNDTRIPS 100
#define MAX_ROUNDTRIPS 1000000

/* --- The parent ----------------------------------------------------------- */

struct parent {
	const struct bench_cfg *cfg;
	struct rendezvous rv;
	pid_t child;
	int ctl;
	struct ep ep[NXPORT];
	uint8_t *src;       /* what every transport sends: one cache-hot buffer */
	uint8_t *rbuf;      /* where ping-pong replies land */
	uint8_t *mc_dst;    /* memcpy's destination: as large as the ring */
	size_t max_size;
	struct results rs;
	const char *what;   /* the step under way, for error messages */
	struct shunt_stats peer_st[NXPORT]; /* the child's counters, per transport */
	int killed;         /* we killed the child ourselves */
	double peer_cpu;    /* the child's CPU time, as of its last reply */
	enum xport cur_x;   /* the transport of the last command */
	int done, total;    /* measurements, for the progress line */
	double t0;          /* when the first began */
};

static pid_t child_pid;
static volatile sig_atomic_t alarms;

/* First alarm: make blocking calls fail with EINTR so the run ends cleanly.
 * Second: the run is stuck outside any call that a signal interrupts. */
static void on_alarm(int sig)
{
	static const char msg[] = "shunt bench: stuck; killing the peer\n";

	(void)sig;
	bench_stop = 1;
	if (++alarms == 1) {
		alarm(5);
		return;
	}
	if (child_pid > 0)
		kill(child_pid, SIGKILL);
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(1);
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	if (interrupted++)
		signal(sig, SIG_DFL); /* a second ^C ends it at once */
	bench_stop = 1;
}

static void install_handlers(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };

	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocked call must come back with EINTR. */
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_interrupt;
	sigaction(SIGTERM, &sa, NULL);
	/* A shell that started us with ^C ignored (a background job) meant it. */
	struct sigaction old;
	if (sigaction(SIGINT, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
		sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int fail(struct parent *p, enum xport x, size_t size, int rc)
{
	char sz[32];

	if (bench_stop && alarms)
		fprintf(stderr, "shunt bench: %s on %s, %s: timed out\n", p->what,
			xport_names[x], size_label(size, sz, sizeof(sz)));
	else if (!bench_stop)
		fprintf(stderr, "shunt bench: %s on %s, %s: %s\n", p->what,
			xport_names[x], size_label(size, sz, sizeof(sz)), bench_strerror(rc));
	return rc;
}

/* --- Control messages ----------------------------------------------------- */

static int ctl_send(struct parent *p, enum op op, enum xport x, size_t size, uint64_t count)
{
	struct cmd c = { .op = op, .x = x, .size = size, .count = count };

	p->cur_x = x;
	if (send(p->ctl, &c, sizeof(c), MSG_NOSIGNAL) == (ssize_t)sizeof(c))
		return 0;
	if (errno == EPIPE || errno == ECONNRESET)
		return EP_PEER_EXITED;
	return -errno;
}

/* The child's answer to the last command: its status, or EP_PEER_EXITED. */
static int ctl_wait(struct parent *p)
{
	struct reply r;
	ssize_t n;

	do
		n = recv(p->ctl, &r, sizeof(r), 0);
	while (n < 0 && errno == EINTR && !bench_stop);
	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(r))
		return EP_PEER_EXITED; /* it said why on stderr */
	p->peer_st[p->cur_x] = r.st;
	p->peer_cpu = r.cpu_s;
	return r.rc;
}

static int ctl_call(struct parent *p, enum op op, enum xport x, size_t size, uint64_t count)
{
	int rc = ctl_send(p, op, x, size, count);

	return rc < 0 ? rc : ctl_wait(p);
}

/* --- Connections ---------------------------------------------------------- */

/* The child connects first and says so; only then can accept not block
 * forever on a child that failed. */
static int connect_one(struct parent *p, enum xport x)
{
	p->what = "connect";
	alarm(30);
	int rc = ctl_call(p, OP_CONNECT, x, 0, 0);
	if (rc == 0)
		rc = ep_accept(&p->rv, x, &p->ep[x]);
	alarm(0);
	return rc < 0 ? fail(p, x, 0, rc) : 0;
}

/* The ring size the run really got (the library may pick it): the table
 * shows it, and memcpy's buffer is as large. */
static int learn_ring_size(struct parent *p)
{
	enum xport shunts[] = { X_SHUNT, X_SHUNT_ZC, X_SHUNT_NOSPIN };

	for (size_t i = 0; i < sizeof(shunts) / sizeof(shunts[0]); i++)
		if (p->ep[shunts[i]].c) {
			p->rs.ring_size = shunt_ring_size(p->ep[shunts[i]].c);
			return 0;
		}
	if (!(p->cfg->xports & (1u << X_MEMCPY)))
		return 0;
	/* memcpy without a shunt transport: one connection tells the size. */
	int rc = connect_one(p, X_SHUNT);
	if (rc < 0)
		return rc;
	p->rs.ring_size = shunt_ring_size(p->ep[X_SHUNT].c);
	return 0;
}

static int connect_all(struct parent *p)
{
	for (int x = 0; x < NXPORT; x++) {
		if (x == X_MEMCPY || !(p->cfg->xports & (1u << x)))
			continue;
		int rc = connect_one(p, (enum xport)x);
		if (rc < 0)
			return rc;
	}
	return learn_ring_size(p);
}

/* --- Stream --------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* What a shunt sender must at least do: copy each message into the ring,
 * whose write position moves on and wraps around. */
static double memcpy_once(struct parent *p, size_t size, uint64_t count)
{
	size_t ring = p->rs.ring_size, off = 0;
	double t0 = now_s();

	for (uint64_t i = 0; i < count && !bench_stop; i++) {
		for (size_t done = 0; done < size;) {
			size_t k = size - done < ring - off ? size - done : ring - off;
			memcpy(p->mc_dst + off, p->src + done, k);
			done += k;
			off = (off + k) & (ring - 1);
		}
		/* Keep the compiler from merging or dropping the copies. */
		__asm__ __volatile__("" ::: "memory");
	}
	return now_s() - t0;
}

/* One timed stream of count messages; its duration or a negative errno. */
static int stream_once(struct parent *p, enum xport x, size_t size, uint64_t count,
		       double *secs)
{
	struct ep *e = &p->ep[x];
	uint8_t ack;

	if (x == X_MEMCPY) {
		*secs = memcpy_once(p, size, count);
		return bench_stop ? -EINTR : 0;
	}
	int rc = ctl_send(p, OP_STREAM, x, size, count);
	double t0 = now_s();
	/* A signal that lands between system calls interrupts none: the
	 * loops look at the flag its handler sets. */
	for (uint64_t i = 0; rc == 0 && i < count; i++)
		rc = bench_stop ? -EINTR : ep_send(e, p->src, size);
	if (rc == 0)
		rc = ep_recv_all(e, &ack, 1);
	*secs = now_s() - t0;
	return rc < 0 ? rc : ctl_wait(p);
}

/*
 * Grow a pilot run until it lasts a twentieth of the target time (its
 * first run also warms caches, pages and the peer up), then scale the
 * message count so that STREAM_RUNS measured runs fill the target time.
 * The median run is reported: small messages between two busy cores settle
 * into different regimes (ring nearly full or nearly empty) from one run
 * to the next, and one odd run should not make the figure.
 */
#define STREAM_RUNS 3

static int measure_stream(struct parent *p, enum xport x, size_t size, struct result *r)
{
	uint64_t count = PILOT_BYTES / size ? PILOT_BYTES / size : 1;
	double t = p->cfg->time_s / STREAM_RUNS, secs, mbps[STREAM_RUNS];
	int rc;

	p->what = "stream";
	while ((rc = stream_once(p, x, size, count, &secs)) == 0 && secs < t / 20)
		count *= 8;
	if (rc < 0)
		return rc;
	count = (uint64_t)ceil((double)count * t / (secs > 1e-9 ? secs : 1e-9));
	for (int i = 0; i < STREAM_RUNS; i++) {
		rc = stream_once(p, x, size, count, &secs);
		if (rc < 0)
			return rc;
		mbps[i] = (double)size * (double)count / secs / 1e6;
	}
	qsort(mbps, STREAM_RUNS, sizeof(mbps[0]), cmp_double);
	r->iters = count * STREAM_RUNS;
	r->mb_per_s = mbps[STREAM_RUNS / 2];
	return 0;
}

/* --- Ping-pong ------------------------------------------------------------ */

/* n round trips; each one's time into us[] (if given), the total in *secs. */
static int pingpong_once(struct parent *p, enum xport x, size_t size, uint64_t n,
			 double *us, double *secs)
{
	struct ep *e = &p->ep[x];
	int rc = ctl_send(p, OP_PINGPONG, x, size, n);
	double t0 = now_s(), prev = t0;

	for (uint64_t i = 0; rc == 0 && i < n; i++) {
		rc = bench_stop ? -EINTR : ep_send(e, p->src, size);
		if (rc == 0)
			rc = ep_recv_all(e, p->rbuf, size);
		/* One clock read per round trip: each ends where the next starts. */
		double now = now_s();
		if (us)
			us[i] = (now - prev) * 1e6;
		prev = now;
	}
	*secs = prev - t0;
	return rc < 0 ? rc : ctl_wait(p);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, uint64_t n, double q)
{
	uint64_t k = (uint64_t)ceil(q * (double)n);

	return v[k ? k - 1 : 0];
}

static int measure_pingpong(struct parent *p, enum xport x, size_t size, struct result *r)
{
	uint64_t n = 16;
	double t = p->cfg->time_s, secs;
	int rc;

	p->what = "ping-pong";
	/* Warm-up, grown until it gives a usable estimate of one round trip. */
	while ((rc = pingpong_once(p, x, size, n, NULL, &secs)) == 0 && secs < t / 20)
		n *= 8;
	if (rc < 0)
		return rc;
	double est = (double)n * t / (secs > 1e-9 ? secs : 1e-9);
	n = est < MIN_ROUNDTRIPS ? MIN_ROUNDTRIPS : est > MAX_ROUNDTRIPS ? MAX_ROUNDTRIPS : (uint64_t)est;
	double *us = malloc(n * sizeof(*us));
	if (!us)
		return -ENOMEM;
	rc = pingpong_once(p, x, size, n, us, &secs);
	if (rc == 0) {
		qsort(us, n, sizeof(*us), cmp_double);
		r->iters = n;
		r->rtt_p50_us = percentile(us, n, 0.50);
		r->rtt_p99_us = percentile(us, n, 0.99);
	}
	free(us);
	return rc;
}

/* --- The run -------------------------------------------------------------- */

static void stats_delta(struct shunt_stats *d, const struct shunt_stats *a,
			const struct shunt_stats *b)
{
	d->wakeups = b->wakeups - a->wakeups;
	d->sleeps = b->sleeps - a->sleeps;
	d->spins = b->spins - a->spins;
	d->spin_hits = b->spin_hits - a->spin_hits;
}

/* Why a shunt figure is what it is: how often each end slept and woke. */
static void print_stats(enum xport x, enum test t, size_t size, uint64_t msgs,
			const struct shunt_stats *me, const struct shunt_stats *peer)
{
	char sz[32];

	fprintf(stderr, "  stats %s %s %s (%llu measured): "
		"parent wakeups %llu sleeps %llu spins %llu hits %llu; "
		"peer wakeups %llu sleeps %llu spins %llu hits %llu\n",
		xport_names[x], test_names[t], size_label(size, sz, sizeof(sz)),
		(unsigned long long)msgs,
		(unsigned long long)me->wakeups, (unsigned long long)me->sleeps,
		(unsigned long long)me->spins, (unsigned long long)me->spin_hits,
		(unsigned long long)peer->wakeups, (unsigned long long)peer->sleeps,
		(unsigned long long)peer->spins, (unsigned long long)peer->spin_hits);
}

/* "[k/n] stream 64K shunt ..., about 40 s left": the estimate is the
 * measurements' mean so far times those remaining. */
static void show_progress(struct parent *p, enum xport x, enum test t, const char *sz)
{
	double spent = now_s() - p->t0;

	fprintf(stderr, "\r\033[K  [%d/%d] %s %s %s ...", p->done + 1, p->total, test_names[t],
		sz, xport_names[x]);
	if (p->done > 0)
		fprintf(stderr, " about %.0f s left", spent / p->done * (p->total - p->done));
}

static int measure(struct parent *p, enum xport x, enum test t, size_t size)
{
	struct result r = { .x = x, .t = t, .size = size };
	char sz[32];

	if (p->cfg->progress)
		show_progress(p, x, t, size_label(size, sz, sizeof(sz)));
	struct shunt_stats me0 = { 0 }, me1 = { 0 }, peer0 = p->peer_st[x], d_me, d_peer;
	struct cpu_mark c0, c1;
	if (p->ep[x].c)
		shunt_get_stats(p->ep[x].c, &me0);
	cpu_mark(&c0, p->peer_cpu);
	/* A generous limit: pilot, warm-up and a run several times too long. */
	alarm(30 + (unsigned)(20 * p->cfg->time_s));
	int rc = t == TEST_STREAM ? measure_stream(p, x, size, &r)
				  : measure_pingpong(p, x, size, &r);
	alarm(0);
	p->done++;
	if (rc < 0)
		return fail(p, x, size, rc);
	cpu_mark(&c1, p->peer_cpu);
	r.others_cpu = cpu_others(&c0, &c1);
	if (p->cfg->stats && p->ep[x].c) {
		shunt_get_stats(p->ep[x].c, &me1);
		stats_delta(&d_me, &me0, &me1);
		stats_delta(&d_peer, &peer0, &p->peer_st[x]);
		if (p->cfg->progress)
			fputs("\r\033[K", stderr);
		print_stats(x, t, size, r.iters, &d_me, &d_peer);
	}
	return results_add(&p->rs, &r);
}

/* A row as soon as it is complete; no point measuring on once nobody reads
 * (SIGPIPE is ignored, for the sockets' sake). */
static int emit_row(struct parent *p, enum test t, size_t size)
{
	if (p->cfg->progress)
		fputs("\r\033[K", stderr);
	if (p->cfg->json)
		report_json_row(stdout, p->cfg, &p->rs, t, size);
	else
		report_row(stdout, p->cfg, &p->rs, t, size);
	if (fflush(stdout) == 0 && !ferror(stdout))
		return 0;
	int err = errno ? -errno : -EIO;
	fprintf(stderr, "shunt bench: writing the results: %s\n", strerror(-err));
	return err;
}

static int run_test(struct parent *p, enum test t)
{
	const struct size_list *sl = &p->cfg->sizes[t];
	int rc = 0;

	if (!p->cfg->json && rc == 0)
		report_header(stdout, p->cfg, &p->rs, t);
	errno = 0;
	for (int i = 0; rc == 0 && i < sl->n; i++) {
		for (int x = 0; rc == 0 && x < NXPORT; x++)
			if ((p->cfg->xports & (1u << x)) && xport_in_test((enum xport)x, t))
				rc = measure(p, (enum xport)x, t, sl->v[i]);
		if (rc == 0)
			rc = emit_row(p, t, sl->v[i]);
	}
	return rc;
}

static int alloc_memcpy_dst(struct parent *p);

static int count_measurements(const struct bench_cfg *cfg)
{
	int n = 0;

	for (int t = 0; t < NTEST; t++)
		for (int x = 0; (cfg->tests & (1u << t)) && x < NXPORT; x++)
			if ((cfg->xports & (1u << x)) && xport_in_test((enum xport)x, (enum test)t))
				n += cfg->sizes[t].n;
	return n;
}

static int run_all(struct parent *p)
{
	int rc = connect_all(p);

	if (rc == 0 && alloc_memcpy_dst(p) < 0) {
		fprintf(stderr, "shunt bench: out of memory\n");
		rc = -ENOMEM;
	}

	p->total = count_measurements(p->cfg);
	p->t0 = now_s();
	for (int t = 0; rc == 0 && t < NTEST; t++)
		if (p->cfg->tests & (1u << t))
			rc = run_test(p, (enum test)t);
	return rc;
}

/* --- Process pair --------------------------------------------------------- */

static size_t max_size_of(const struct bench_cfg *cfg)
{
	size_t m = 1;

	for (int t = 0; t < NTEST; t++)
		for (int i = 0; i < cfg->sizes[t].n; i++)
			if (cfg->sizes[t].v[i] > m)
				m = cfg->sizes[t].v[i];
	return m;
}

/* In the child: die with the parent, drop the parent's ends, serve. */
static void become_child(struct parent *p, int ctl, pid_t parent)
{
	struct child_args a = {
		.ctl = ctl, .rv = &p->rv, .opts = p->cfg->opts,
		.max_size = p->max_size,
		.alarm_s = 60 + (unsigned)(40 * p->cfg->time_s),
	};

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1); /* the parent died before prctl() took effect */
	signal(SIGALRM, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_IGN); /* ^C goes to both: the parent ends the child */
	rv_close_child(&p->rv);
	close(p->ctl);
	_exit(child_main(&a));
}

static int start_child(struct parent *p)
{
	int sv[2];
	pid_t me = getpid();

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	p->ctl = sv[0];
	fflush(NULL); /* the child must not write our buffered output again */
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(sv[0]);
		close(sv[1]);
		p->ctl = -1;
		return err;
	}
	if (pid == 0)
		become_child(p, sv[1], me);
	close(sv[1]);
	/* The child's end of the AF_UNIX pair lives in the child only, so that
	 * either side sees end of file when the other goes. */
	if (p->rv.unix_pair[1] >= 0) {
		close(p->rv.unix_pair[1]);
		p->rv.unix_pair[1] = -1;
	}
	p->child = child_pid = pid;
	return 0;
}

/* Wait for the child a little, then make sure: no process is left behind. */
static int reap_child(struct parent *p)
{
	int st = 0;

	for (int i = 0; i < 300; i++) {
		pid_t w = waitpid(p->child, &st, WNOHANG);
		if (w == p->child)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (w < 0 && errno != EINTR)
			return 1;
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "shunt bench: the peer did not exit; killing it\n");
	kill(p->child, SIGKILL);
	while (waitpid(p->child, &st, 0) < 0 && errno == EINTR)
		;
	return 1;
}

static int stop_child(struct parent *p)
{
	/* Interrupted or stuck mid-point: the child is in the middle of a
	 * transfer that will not end, and would only complain about it. */
	if (bench_stop && p->child > 0) {
		kill(p->child, SIGKILL);
		p->killed = 1;
	}
	/* Otherwise closing the data ends first wakes a child blocked on one;
	 * closing the control socket then ends its loop. */
	for (int x = 0; x < NXPORT; x++)
		ep_close(&p->ep[x]);
	if (p->ctl >= 0)
		close(p->ctl);
	p->ctl = -1;
	int st = p->child > 0 ? reap_child(p) : 0;
	p->child = child_pid = 0;
	return st;
}

static int alloc_buffers(struct parent *p)
{
	p->max_size = max_size_of(p->cfg);
	p->src = malloc(p->max_size);
	p->rbuf = malloc(p->max_size);
	if (!p->src || !p->rbuf)
		return -ENOMEM;
	/* Touch the pages now, so no transport pays for first faults. */
	memset(p->src, 0xa5, p->max_size);
	memset(p->rbuf, 0, p->max_size);
	return 0;
}

/* memcpy's destination, once the ring size is known; pre-faulted too. */
static int alloc_memcpy_dst(struct parent *p)
{
	if (!(p->cfg->xports & (1u << X_MEMCPY)))
		return 0;
	p->mc_dst = malloc(p->rs.ring_size);
	if (!p->mc_dst)
		return -ENOMEM;
	memset(p->mc_dst, 0, p->rs.ring_size);
	return 0;
}

static void free_parent(struct parent *p)
{
	free(p->src);
	free(p->rbuf);
	free(p->mc_dst);
	free(p->rs.v);
}

/* After the rows: the footnotes, the targets, and the files. */
static int finish(struct parent *p)
{
	int rc = 0;

	if (!p->cfg->json) {
		report_footer(stdout, p->cfg, &p->rs);
		report_targets(stdout, &p->rs);
	} else {
		/* stdout holds JSON only; the verdicts are still worth seeing. */
		report_disturbed(stderr, &p->rs);
		report_targets(stderr, &p->rs);
	}
	FILE *say = p->cfg->json ? stderr : stdout;
	if (p->cfg->csv_path) {
		if (report_csv(p->cfg->csv_path, &p->rs) < 0)
			rc = 1;
		else
			fprintf(say, "\nwrote %s\n", p->cfg->csv_path);
	}
	if (p->cfg->svg_path) {
		if (report_svg(p->cfg->svg_path, p->cfg, &p->rs) < 0)
			rc = 1;
		else
			fprintf(say, "wrote %s\n", p->cfg->svg_path);
	}
	return rc;
}

static int bench_run(const struct bench_cfg *cfg)
{
	struct parent p = { .cfg = cfg, .ctl = -1 };
	int rc;

	for (int x = 0; x < NXPORT; x++)
		p.ep[x] = (struct ep){ .x = (enum xport)x, .fd = -1 };
	install_handlers();
	rc = alloc_buffers(&p);
	if (rc == 0)
		rc = rv_open(&p.rv, cfg->xports | (cfg->xports & (1u << X_MEMCPY) ? 1u << X_SHUNT : 0));
	if (rc < 0) {
		fprintf(stderr, "shunt bench: setting up: %s\n", strerror(-rc));
		free_parent(&p);
		return 1;
	}
	rc = start_child(&p);
	if (rc < 0)
		fprintf(stderr, "shunt bench: fork: %s\n", strerror(-rc));
	if (rc == 0)
		rc = run_all(&p);
	int st = stop_child(&p);
	rv_close_parent(&p.rv);
	int out = rc < 0 ? 1 : finish(&p);
	free_parent(&p);
	if (interrupted) {
		fprintf(stderr, "shunt bench: interrupted\n");
		return 130;
	}
	if (p.killed)
		st = 0;
	else if (st > 128)
		fprintf(stderr, "shunt bench: the peer process was killed by signal %d\n", st - 128);
	else if (st != 0)
		fprintf(stderr, "shunt bench: the peer process failed (exit status %d)\n", st);
	if (st != 0 && out == 0)
		out = 1;
	return out;
}

int bench_main(int argc, char **argv)
{
	struct bench_cfg cfg = { 0 };
	int help = 0;
	int rc = bench_parse_args(argc, argv, &cfg, &help);

	if (rc)
		return rc;
	if (help) {
		bench_usage(stdout);
		return 0;
	}
	cfg.progress = isatty(2) && !cfg.json;
	return bench_run(&cfg);
}
