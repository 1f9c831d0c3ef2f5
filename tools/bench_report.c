/*
 * bench_report.c - what `shunt bench` prints and writes: the table (or JSON
 * lines), the targets, a CSV file and an SVG chart.  Nothing here measures.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* --- Results -------------------------------------------------------------- */

int results_add(struct results *rs, const struct result *r)
{
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 64;
		struct result *v = realloc(rs->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		rs->v = v;
		rs->cap = cap;
	}
	rs->v[rs->n++] = *r;
	return 0;
}

const struct result *results_find(const struct results *rs, enum xport x,
				  enum test t, size_t size)
{
	for (size_t i = 0; i < rs->n; i++)
		if (rs->v[i].x == x && rs->v[i].t == t && rs->v[i].size == size)
			return &rs->v[i];
	return NULL;
}

/* The figure a test is judged by. */
static double figure(const struct result *r)
{
	return r->t == TEST_STREAM ? r->mb_per_s : r->rtt_p50_us;
}

double result_ratio_to_tcp(const struct results *rs, const struct result *r)
{
	const struct result *tcp = results_find(rs, X_TCP, r->t, r->size);

	if (!tcp || figure(tcp) <= 0)
		return 0;
	return figure(r) / figure(tcp);
}

const char *size_label(size_t size, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB" };
	int u = 0;

	while (u < 3 && size >= 1024 && size % 1024 == 0) {
		size /= 1024;
		u++;
	}
	snprintf(buf, len, "%zu %s", size, unit[u]);
	return buf;
}

/* --- Table ---------------------------------------------------------------- */

#define SIZE_W   9  /* the size column */
#define STREAM_W 20 /* "  12345.6 (4.31x)  " */
#define PP_W     25 /* "   1.23/4.56   (0.05x)" */

static const char *ratio_text(double ratio, char *buf, size_t len)
{
	if (ratio <= 0)
		snprintf(buf, len, " ");
	else if (ratio < 10)
		snprintf(buf, len, "(%.2fx)", ratio);
	else if (ratio < 100)
		snprintf(buf, len, "(%.1fx)", ratio);
	else
		snprintf(buf, len, "(%.0fx)", ratio);
	return buf;
}

/* Microseconds with about three significant digits. */
static const char *us_text(double us, char *buf, size_t len)
{
	snprintf(buf, len, us < 10 ? "%.2f" : us < 1000 ? "%.1f" : "%.0f", us);
	return buf;
}

static int shown(const struct bench_cfg *cfg, int x, enum test t)
{
	return (cfg->xports & (1u << x)) && xport_in_test((enum xport)x, t);
}

void report_header(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		   enum test t)
{
	int w = t == TEST_STREAM ? STREAM_W : PP_W;
	char ring[32];

	if (t == TEST_STREAM)
		fprintf(f, "\nstream throughput, MB/s (1 MB = 1e6 bytes); (Nx) = ratio to tcp, higher is better\n");
	else
		fprintf(f, "\nping-pong round trip, microseconds p50/p99; (Nx) = p50 ratio to tcp, lower is better\n");
	fprintf(f, "%.2g s per point, shunt ring %s\n", cfg->time_s,
		rs->ring_size ? size_label(rs->ring_size, ring, sizeof(ring)) :
		cfg->opts.ring_size ? size_label(cfg->opts.ring_size, ring, sizeof(ring)) :
		"default");
	fprintf(f, "%-*s", SIZE_W, "size");
	for (int x = 0; x < NXPORT; x++)
		if (shown(cfg, x, t))
			fprintf(f, "%*s%s%*s", w - 9, xport_names[x], x == X_MEMCPY ? "*" : " ", 8, "");
	fputc('\n', f);
}

void report_row(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		enum test t, size_t size)
{
	char sz[32], rt[32], a[32], b[32], cell[80];

	fprintf(f, "%-*s", SIZE_W, size_label(size, sz, sizeof(sz)));
	for (int x = 0; x < NXPORT; x++) {
		if (!shown(cfg, x, t))
			continue;
		const struct result *r = results_find(rs, (enum xport)x, t, size);
		double ratio = r && x != X_TCP ? result_ratio_to_tcp(rs, r) : 0;
		ratio_text(ratio, rt, sizeof(rt));
		const char *mark = r && r->others_cpu > OTHERS_CPU_MAX ? "!" : " ";
		if (!r)
			snprintf(cell, sizeof(cell), "-");
		else if (t == TEST_STREAM)
			snprintf(cell, sizeof(cell), "%.1f%s", r->mb_per_s, mark);
		else
			snprintf(cell, sizeof(cell), "%s/%s%s", us_text(r->rtt_p50_us, a, sizeof(a)),
				 us_text(r->rtt_p99_us, b, sizeof(b)), mark);
		int w = t == TEST_STREAM ? STREAM_W : PP_W;
		fprintf(f, "%*s %-8s", w - 9, cell, rt);
	}
	fputc('\n', f);
}

/* The most CPUs other processes kept busy during any one point, and how
 * many points they disturbed. */
static double others_worst(const struct results *rs, int *disturbed)
{
	double worst = 0;

	*disturbed = 0;
	for (size_t i = 0; i < rs->n; i++) {
		if (rs->v[i].others_cpu > worst)
			worst = rs->v[i].others_cpu;
		*disturbed += rs->v[i].others_cpu > OTHERS_CPU_MAX;
	}
	return worst;
}

void report_disturbed(FILE *f, const struct results *rs)
{
	int n;
	double worst = others_worst(rs, &n);

	if (n)
		fprintf(f,
"! %d point%s measured while other processes kept more than %.2g CPUs busy\n"
"  (up to %.2f): those figures are unreliable; run on a quiet machine.\n",
			n, n > 1 ? "s were" : " was", OTHERS_CPU_MAX, worst);
}

void report_footer(FILE *f, const struct bench_cfg *cfg, const struct results *rs)
{
	char ring[32];

	fputc('\n', f);
	report_disturbed(f, rs);
	if ((cfg->xports & (1u << X_MEMCPY)) && (cfg->tests & (1u << TEST_STREAM)))
		fprintf(f,
"* memcpy: no peer; one process copies each message from a source buffer into\n"
"  a destination that rotates through %s (the shunt ring size): the least a\n"
"  shunt sender must do, so the limit for any transport.\n",
			size_label(rs->ring_size, ring, sizeof(ring)));
	fprintf(f,
"  shunt-zc copies once end to end (into the ring; the receiver reads a byte of\n"
"  every cache line in place);\n"
"  shunt copies on both sides; shunt-nospin never spins (spin_us = -1).\n");
}

/* --- JSON lines ----------------------------------------------------------- */

void report_json_row(FILE *f, const struct bench_cfg *cfg, const struct results *rs,
		     enum test t, size_t size)
{
	for (int x = 0; x < NXPORT; x++) {
		const struct result *r = results_find(rs, (enum xport)x, t, size);
		if (!r || !shown(cfg, x, t))
			continue;
		fprintf(f, "{\"transport\":\"%s\",\"test\":\"%s\",\"size\":%zu,",
			xport_names[x], test_names[t], size);
		if (t == TEST_STREAM)
			fprintf(f, "\"mb_per_s\":%.1f", r->mb_per_s);
		else
			fprintf(f, "\"rtt_us_p50\":%.3f,\"rtt_us_p99\":%.3f", r->rtt_p50_us,
				r->rtt_p99_us);
		double ratio = result_ratio_to_tcp(rs, r);
		if (ratio > 0)
			fprintf(f, ",\"ratio_to_tcp\":%.3f", ratio);
		fputs("}\n", f);
	}
}

/* --- Targets -------------------------------------------------------------- */

struct target {
	enum test t;
	size_t size;
	enum xport x, ref;
	int at_most;   /* 1: x <= factor * ref (latency); 0: x >= factor * ref */
	double factor;
};

static const struct target targets[] = {
	{ TEST_STREAM, 65536, X_SHUNT, X_TCP, 0, 4.0 },
	{ TEST_STREAM, 65536, X_SHUNT, X_UNIX, 0, 2.0 },
	{ TEST_STREAM, 65536, X_SHUNT, X_MEMCPY, 0, 0.5 },
	{ TEST_PINGPONG, 64, X_SHUNT, X_TCP, 1, 0.1 },
	{ TEST_PINGPONG, 64, X_SHUNT_NOSPIN, X_TCP, 1, 0.6 },
};

static const char *figure_text(const struct result *r, char *buf, size_t len)
{
	if (r->t == TEST_STREAM)
		snprintf(buf, len, "%.1f MB/s", r->mb_per_s);
	else
		snprintf(buf, len, "%.2f us", r->rtt_p50_us);
	return buf;
}

/* One line; returns 1 if missed, 0 if met or not measured. */
static int report_target(FILE *f, const struct results *rs, const struct target *g)
{
	const struct result *a = results_find(rs, g->x, g->t, g->size);
	const struct result *b = results_find(rs, g->ref, g->t, g->size);
	char what[96], sz[32], fa[32], fb[32];

	snprintf(what, sizeof(what), "%s %s%s: %s %s %gx %s",
		 g->t == TEST_STREAM ? "stream" : "ping-pong",
		 size_label(g->size, sz, sizeof(sz)), g->t == TEST_PINGPONG ? " p50" : "",
		 xport_names[g->x], g->at_most ? "<=" : ">=", g->factor, xport_names[g->ref]);
	if (!a || !b || figure(b) <= 0) {
		fprintf(f, "  %-7s %-42s (not measured)\n", "n/a", what);
		return 0;
	}
	double ratio = figure(a) / figure(b);
	int met = g->at_most ? ratio <= g->factor : ratio >= g->factor;
	fprintf(f, "  %-7s %-42s %s = %.2fx %s %s\n", met ? "met" : "missed", what,
		figure_text(a, fa, sizeof(fa)), ratio, xport_names[g->ref],
		figure_text(b, fb, sizeof(fb)));
	return !met;
}

int report_targets(FILE *f, const struct results *rs)
{
	int missed = 0;

	fprintf(f, "\ntargets:\n");
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
		missed += report_target(f, rs, &targets[i]);
	return missed;
}

/* --- CSV ------------------------------------------------------------------ */

int report_csv(const char *path, const struct results *rs)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "shunt bench: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	fprintf(f, "transport,test,size,mb_per_s,rtt_us_p50,rtt_us_p99,ratio_to_tcp,iterations,others_cpu\n");
	for (size_t i = 0; i < rs->n; i++) {
		const struct result *r = &rs->v[i];
		double ratio = result_ratio_to_tcp(rs, r);
		fprintf(f, "%s,%s,%zu,", xport_names[r->x], test_names[r->t], r->size);
		if (r->t == TEST_STREAM)
			fprintf(f, "%.1f,,,", r->mb_per_s);
		else
			fprintf(f, ",%.3f,%.3f,", r->rtt_p50_us, r->rtt_p99_us);
		if (ratio > 0)
			fprintf(f, "%.3f", ratio);
		fprintf(f, ",%llu,%.2f\n", (unsigned long long)r->iters, r->others_cpu);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "shunt bench: %s: %s\n", path, strerror(errno));
		return -EIO;
	}
	return 0;
}
