/*
 * bench_opts.c - the options of `shunt bench`, its help text, and the
 * default message sizes.  A bad option is a usage error: exit status 2.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

/* --- Options -------------------------------------------------------------- */

#define MAX_MSG_SIZE (256u << 20)

int parse_size(const char *s, size_t *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;
	if (errno)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (shift && (*end == 'i' || *end == 'I'))
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || v > (SIZE_MAX >> shift))
		return -EINVAL;
	*out = (size_t)v << shift;
	return 0;
}

static void sizes_add(struct size_list *l, size_t v)
{
	int i = 0;

	while (i < l->n && l->v[i] < v)
		i++;
	if (i < l->n && l->v[i] == v)
		return;
	if (l->n == BENCH_MAX_SIZES)
		return; /* parse_sizes() refuses longer lists first */
	memmove(&l->v[i + 1], &l->v[i], (size_t)(l->n - i) * sizeof(l->v[0]));
	l->v[i] = v;
	l->n++;
}

/* Powers of `step` from lo to hi, always including hi. */
static void sizes_range(struct size_list *l, size_t lo, size_t hi, size_t step)
{
	for (size_t v = lo; v <= hi; v *= step) {
		sizes_add(l, v);
		if (v > hi / step)
			break;
	}
	sizes_add(l, hi);
}

/* How many sizes sizes_range() adds at most. */
static int range_len(size_t lo, size_t hi, size_t step)
{
	int n = 1;

	for (size_t v = lo; v <= hi / step; v *= step)
		n++;
	return n + 1;
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "shunt bench: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry 'shunt bench --help'.\n");
	return 2;
}

/* "64,1k,64k" or "64..4m" (powers of two) or a mix of both. */
static int parse_sizes(const char *arg, struct size_list *l)
{
	char buf[1024], *save = NULL;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	l->n = 0;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *dots = strstr(tok, "..");
		size_t lo, hi;
		if (dots) {
			*dots = '\0';
			if (parse_size(tok, &lo) || parse_size(dots + 2, &hi) || lo > hi)
				return -EINVAL;
		} else if (parse_size(tok, &lo)) {
			return -EINVAL;
		} else {
			hi = lo;
		}
		if (lo == 0 || hi > MAX_MSG_SIZE)
			return -ERANGE;
		if (l->n + range_len(lo, hi, 2) > BENCH_MAX_SIZES)
			return -E2BIG;
		sizes_range(l, lo, hi, 2);
	}
	return l->n ? 0 : -EINVAL;
}

/* "a,b,c" of names[]; sets a bit per name found. */
static int parse_names(const char *arg, const char *const *names, int n, unsigned *out)
{
	char buf[256], *save = NULL;

	if (strlen(arg) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, arg);
	*out = 0;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int i = 0;
		while (i < n && strcmp(tok, names[i]) != 0)
			i++;
		if (i == n)
			return -EINVAL;
		*out |= 1u << i;
	}
	return *out ? 0 : -EINVAL;
}

static void default_sizes(struct bench_cfg *cfg, int quick)
{
	struct size_list *s = &cfg->sizes[TEST_STREAM], *p = &cfg->sizes[TEST_PINGPONG];

	s->n = p->n = 0;
	/* 64 B and 64 KiB are always in: the targets are checked there. */
	if (quick) {
		sizes_range(s, 64, 4u << 20, 4);
		sizes_add(p, 8);
		sizes_add(p, 64);
		sizes_add(p, 512);
		sizes_add(p, 4096);
		sizes_add(p, 32768);
		sizes_add(p, 65536);
	} else {
		sizes_range(s, 64, 4u << 20, 2);
		sizes_range(p, 8, 65536, 2);
	}
}

void bench_usage(FILE *f)
{
	fprintf(f,
"Usage: shunt bench [options]\n"
"\n"
"Measure shunt against memcpy, AF_UNIX and TCP loopback between the same two\n"
"processes (this one and a forked peer), at the same message sizes.\n"
"\n"
"Tests:\n"
"  stream     messages back to back; the peer acks once it has them all;\n"
"             MB/s = bytes / (first send .. ack), 1 MB = 1e6 bytes\n"
"  pingpong   send a message, the peer sends as many bytes back; round-trip\n"
"             time per iteration, median (p50) and p99 in microseconds\n"
"\n"
"Transports:\n"
"  memcpy        no peer: copying each message into a buffer the size of the\n"
"                shunt ring, the least a sender must do (stream only)\n"
"  shunt-zc      shunt_send_reserve + memcpy + commit; shunt_recv_peek, read\n"
"                a byte of every cache line, release: one copy end to end\n"
"  shunt         shunt_send / shunt_recv: a copy on each side\n"
"  shunt-nospin  shunt with spin_us = -1 on both ends (ping-pong only)\n"
"  unix          AF_UNIX SOCK_STREAM\n"
"  tcp           TCP over 127.0.0.1 with TCP_NODELAY (as NetPIPE: with Nagle,\n"
"                loopback streams of 1-16 KiB messages stall on delayed ACKs)\n"
"\n"
"Options:\n"
"  --quick               fewer sizes and shorter points (a few seconds)\n"
"  --time SECONDS        measuring time per point (default 0.3, quick 0.08)\n"
"  --sizes LIST          message sizes for both tests: 64,1k,64k or 64..4m\n"
"                        (powers of two); default stream 64..4m, pingpong 8..64k\n"
"  --transports LIST     e.g. shunt,tcp (default: all)\n"
"  --tests LIST          stream,pingpong (default: both)\n"
"  --ring-size BYTES     shunt ring size per direction (power of two, 4k..1g;\n"
"                        default: $SHUNT_RING_SIZE or the library's)\n"
"  --json                one JSON object per line instead of the table\n"
"  --csv FILE            also write the results as CSV\n"
"  --svg FILE            also write an SVG chart (throughput and latency vs size)\n"
"  --out DIR             write DIR/bench.csv and DIR/bench.svg\n"
"  --stats               after each shunt point, both ends' counters (wake-up\n"
"                        syscalls, sleeps, spins, spins that sufficed) on stderr\n"
"  -h, --help            this text\n"
"\n"
"Ratios are to tcp: throughput / tcp's (higher is better), and round trip /\n"
"tcp's (lower is better).  A '!' marks a figure taken while other processes\n"
"kept more than a quarter of a CPU busy: unreliable.  Exit status: 0 done,\n"
"1 error, 2 bad usage.\n");
}

enum {
	O_QUICK = 256, O_TIME, O_SIZES, O_XPORTS, O_TESTS, O_RING, O_JSON, O_CSV,
	O_SVG, O_OUT, O_STATS,
};

static const struct option bench_options[] = {
	{ "quick", no_argument, NULL, O_QUICK },
	{ "time", required_argument, NULL, O_TIME },
	{ "sizes", required_argument, NULL, O_SIZES },
	{ "transports", required_argument, NULL, O_XPORTS },
	{ "tests", required_argument, NULL, O_TESTS },
	{ "ring-size", required_argument, NULL, O_RING },
	{ "json", no_argument, NULL, O_JSON },
	{ "csv", required_argument, NULL, O_CSV },
	{ "svg", required_argument, NULL, O_SVG },
	{ "out", required_argument, NULL, O_OUT },
	{ "stats", no_argument, NULL, O_STATS },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct parsed {
	int quick, help;
	double time_s;            /* 0: not given */
	const char *sizes;
	const char *out_dir;
};

static int parse_one(int o, const char *name, struct bench_cfg *cfg, struct parsed *p)
{
	size_t v;
	char *end;

	switch (o) {
	case O_QUICK: p->quick = 1; return 0;
	case O_JSON: cfg->json = 1; return 0;
	case O_STATS: cfg->stats = 1; return 0;
	case O_CSV: cfg->csv_path = optarg; return 0;
	case O_SVG: cfg->svg_path = optarg; return 0;
	case O_OUT: p->out_dir = optarg; return 0;
	case O_SIZES: p->sizes = optarg; return 0;
	case 'h': p->help = 1; return 0;
	case O_TIME:
		p->time_s = strtod(optarg, &end);
		if (*end || end == optarg || !(p->time_s > 0 && p->time_s <= 60))
			return usage_error("--time wants seconds, more than 0 and at most 60, not '%s'", optarg);
		return 0;
	case O_XPORTS:
		if (parse_names(optarg, xport_names, NXPORT, &cfg->xports))
			return usage_error("--transports wants a list of memcpy, shunt-zc, shunt, shunt-nospin, unix, tcp, not '%s'", optarg);
		return 0;
	case O_TESTS:
		if (parse_names(optarg, test_names, NTEST, &cfg->tests))
			return usage_error("--tests wants stream, pingpong or both, not '%s'", optarg);
		return 0;
	case O_RING:
		if (parse_size(optarg, &v) || v < 4096 || v > (1u << 30) || (v & (v - 1)))
			return usage_error("--ring-size wants a power of two from 4k to 1g, not '%s'", optarg);
		cfg->opts.ring_size = v;
		return 0;
	case ':':
		return usage_error("option '%s' needs a value", name);
	default:
		if (optopt >= 256) /* a known long option, given a value */
			return usage_error("option '%s' takes no value", name);
		return usage_error("unknown option '%s'", name);
	}
}

/* The option as the user wrote it, for messages about it. */
static const char *opt_name(char **argv, char *buf, size_t len)
{
	if (optopt && optopt < 256) {
		snprintf(buf, len, "-%c", optopt);
		return buf;
	}
	snprintf(buf, len, "%s", argv[optind - 1]);
	char *eq = strchr(buf, '=');
	if (eq)
		*eq = '\0';
	return buf;
}

static int finish_cfg(struct bench_cfg *cfg, const struct parsed *p)
{
	static char csv[4096], svg[4096];

	default_sizes(cfg, p->quick);
	if (p->sizes) {
		struct size_list l;
		if (parse_sizes(p->sizes, &l))
			return usage_error("--sizes wants sizes from 1 to 256m such as 64,1k,64k or 64..4m (at most 64 of them), not '%s'", p->sizes);
		cfg->sizes[TEST_STREAM] = cfg->sizes[TEST_PINGPONG] = l;
	}
	cfg->time_s = p->time_s > 0 ? p->time_s : p->quick ? 0.08 : 0.3;
	if (p->out_dir) {
		if (mkdir(p->out_dir, 0777) < 0 && errno != EEXIST) {
			fprintf(stderr, "shunt bench: mkdir %s: %s\n", p->out_dir, strerror(errno));
			return 1;
		}
		snprintf(csv, sizeof(csv), "%s/bench.csv", p->out_dir);
		snprintf(svg, sizeof(svg), "%s/bench.svg", p->out_dir);
		cfg->csv_path = csv;
		cfg->svg_path = svg;
	}
	return 0;
}

/* Returns 0, or the exit status for a usage error; *help for --help. */
int bench_parse_args(int argc, char **argv, struct bench_cfg *cfg, int *help)
{
	struct parsed p = { 0 };
	char name[64];
	int o, rc;

	cfg->xports = (1u << NXPORT) - 1;
	cfg->tests = (1u << NTEST) - 1;
	optind = 1;
	opterr = 0; /* our own messages, which name the subcommand */
	while ((o = getopt_long(argc, argv, ":h", bench_options, NULL)) != -1) {
		rc = parse_one(o, opt_name(argv, name, sizeof(name)), cfg, &p);
		if (rc)
			return rc;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	*help = p.help;
	return p.help ? 0 : finish_cfg(cfg, &p);
}
