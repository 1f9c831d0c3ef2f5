/*
 * bench_svg.c - a NetPIPE-style chart of a `shunt bench` run, written as
 * plain SVG text: throughput against message size in one panel, round-trip
 * latency against message size in the other.  Sizes go on a log2 axis (each
 * step doubles), figures on a log10 axis, because both span several orders
 * of magnitude and the transports differ by factors, not by amounts.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

#define SVG_W    960
#define PANEL_H  440
#define M_LEFT   80
#define M_RIGHT  170 /* room for the legend */
#define M_TOP    60
#define M_BOTTOM 50
#define TITLE_H  40

static const char *const colors[NXPORT] = {
	[X_MEMCPY] = "#7f7f7f", [X_SHUNT_ZC] = "#2ca02c", [X_SHUNT] = "#1f77b4",
	[X_SHUNT_NOSPIN] = "#9467bd", [X_UNIX] = "#ff7f0e", [X_TCP] = "#d62728",
};

/* The plot area of one panel and the ranges it shows. */
struct panel {
	double x0, y0, w, h;     /* pixels */
	double lx_lo, lx_hi;     /* log2 of the sizes */
	double ly_lo, ly_hi;     /* log10 of the figures */
	enum test t;
};

static double value_of(const struct result *r)
{
	return r->t == TEST_STREAM ? r->mb_per_s : r->rtt_p50_us;
}

static double px(const struct panel *p, double size)
{
	return p->x0 + (log2(size) - p->lx_lo) / (p->lx_hi - p->lx_lo) * p->w;
}

static double py(const struct panel *p, double v)
{
	return p->y0 + p->h - (log10(v) - p->ly_lo) / (p->ly_hi - p->ly_lo) * p->h;
}

/* Ranges from the data: whole powers of two and of ten, never empty. */
static int panel_ranges(struct panel *p, const struct results *rs)
{
	double smin = INFINITY, smax = 0, vmin = INFINITY, vmax = 0;

	for (size_t i = 0; i < rs->n; i++) {
		const struct result *r = &rs->v[i];
		if (r->t != p->t || value_of(r) <= 0)
			continue;
		smin = fmin(smin, (double)r->size);
		smax = fmax(smax, (double)r->size);
		vmin = fmin(vmin, value_of(r));
		vmax = fmax(vmax, value_of(r));
	}
	if (smax == 0)
		return 0;
	p->lx_lo = floor(log2(smin));
	p->lx_hi = ceil(log2(smax));
	if (p->lx_hi <= p->lx_lo)
		p->lx_hi = p->lx_lo + 1;
	p->ly_lo = floor(log10(vmin));
	p->ly_hi = ceil(log10(vmax));
	if (p->ly_hi <= p->ly_lo)
		p->ly_hi = p->ly_lo + 1;
	return 1;
}

static const char *short_size(double s, char *buf, size_t len)
{
	if (s >= 1 << 30)
		snprintf(buf, len, "%gG", s / (1 << 30));
	else if (s >= 1 << 20)
		snprintf(buf, len, "%gM", s / (1 << 20));
	else if (s >= 1 << 10)
		snprintf(buf, len, "%gK", s / (1 << 10));
	else
		snprintf(buf, len, "%g", s);
	return buf;
}

static void draw_x_axis(FILE *f, const struct panel *p)
{
	int steps = (int)(p->lx_hi - p->lx_lo);
	int every = steps > 12 ? 2 : 1; /* keep labels apart */
	char lab[32];

	for (int i = 0; i <= steps; i++) {
		double x = p->x0 + p->w * i / steps;
		fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' class='grid'/>\n",
			x, p->y0, x, p->y0 + p->h);
		if (i % every == 0)
			fprintf(f, "<text x='%.1f' y='%.1f' class='tick' text-anchor='middle'>%s</text>\n",
				x, p->y0 + p->h + 16, short_size(exp2(p->lx_lo + i), lab, sizeof(lab)));
	}
	fprintf(f, "<text x='%.1f' y='%.1f' class='axis' text-anchor='middle'>message size, bytes (log2)</text>\n",
		p->x0 + p->w / 2, p->y0 + p->h + 38);
}

static void draw_y_axis(FILE *f, const struct panel *p, const char *label)
{
	for (int d = (int)p->ly_lo; d <= (int)p->ly_hi; d++) {
		double y = py(p, pow(10, d));
		fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' class='grid'/>\n",
			p->x0, y, p->x0 + p->w, y);
		fprintf(f, "<text x='%.1f' y='%.1f' class='tick' text-anchor='end'>%g</text>\n",
			p->x0 - 6, y + 4, pow(10, d));
		/* Fainter lines at 2x and 5x, so values can be read off. */
		for (int m = 2; d < (int)p->ly_hi && m <= 5; m += 3)
			fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' class='minor'/>\n",
				p->x0, py(p, m * pow(10, d)), p->x0 + p->w, py(p, m * pow(10, d)));
	}
	fprintf(f, "<text transform='translate(%.1f,%.1f) rotate(-90)' class='axis' text-anchor='middle'>%s</text>\n",
		p->x0 - 55, p->y0 + p->h / 2, label);
}

/* One transport's curve, points in size order as they were measured. */
static int draw_curve(FILE *f, const struct panel *p, const struct results *rs, int x)
{
	int n = 0;

	for (size_t i = 0; i < rs->n; i++) {
		const struct result *r = &rs->v[i];
		if ((int)r->x != x || r->t != p->t || value_of(r) <= 0)
			continue;
		if (n++ == 0)
			fprintf(f, "<polyline class='curve' stroke='%s'%s points='", colors[x],
				x == X_MEMCPY ? " stroke-dasharray='6,4'" : "");
		fprintf(f, "%.1f,%.1f ", px(p, (double)r->size), py(p, value_of(r)));
	}
	if (n == 0)
		return 0;
	fprintf(f, "'/>\n");
	for (size_t i = 0; i < rs->n; i++) {
		const struct result *r = &rs->v[i];
		if ((int)r->x == x && r->t == p->t && value_of(r) > 0)
			fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'/>\n",
				px(p, (double)r->size), py(p, value_of(r)), colors[x]);
	}
	return 1;
}

static void draw_legend_entry(FILE *f, const struct panel *p, int row, int x)
{
	double lx = p->x0 + p->w + 20, ly = p->y0 + 10 + row * 22;

	fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2.5'%s/>\n",
		lx, ly, lx + 28, ly, colors[x], x == X_MEMCPY ? " stroke-dasharray='6,4'" : "");
	fprintf(f, "<text x='%.1f' y='%.1f' class='legend'>%s</text>\n", lx + 36, ly + 4,
		xport_names[x]);
}

static void draw_panel(FILE *f, struct panel *p, const struct results *rs,
		       const char *title, const char *ylabel)
{
	int row = 0;

	fprintf(f, "<text x='%.1f' y='%.1f' class='title'>%s</text>\n", p->x0, p->y0 - 14, title);
	fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' class='frame'/>\n",
		p->x0, p->y0, p->w, p->h);
	draw_x_axis(f, p);
	draw_y_axis(f, p, ylabel);
	for (int x = 0; x < NXPORT; x++)
		if (draw_curve(f, p, rs, x))
			draw_legend_entry(f, p, row++, x);
}

static void svg_head(FILE *f, int height, const struct bench_cfg *cfg,
		     const struct results *rs)
{
	char ring[32];

	fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n"
		"<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d'>\n",
		SVG_W, height, SVG_W, height);
	fprintf(f, "<style>\n"
		"text { font-family: sans-serif; fill: #222; }\n"
		".title { font-size: 15px; font-weight: bold; }\n"
		".tick { font-size: 11px; }\n"
		".axis, .legend { font-size: 12px; }\n"
		".grid { stroke: #ccc; stroke-width: 0.6; }\n"
		".minor { stroke: #eee; stroke-width: 0.6; }\n"
		".frame { fill: none; stroke: #444; stroke-width: 1; }\n"
		".curve { fill: none; stroke-width: 2.5; stroke-linejoin: round; }\n"
		"</style>\n"
		"<rect width='100%%' height='100%%' fill='white'/>\n");
	fprintf(f, "<text x='%d' y='26' class='title'>shunt bench: shunt ring %s, %.2g s per point</text>\n",
		M_LEFT, size_label(rs->ring_size, ring, sizeof(ring)), cfg->time_s);
}

int report_svg(const char *path, const struct bench_cfg *cfg, const struct results *rs)
{
	struct panel panels[NTEST];
	int np = 0;

	for (int t = 0; t < NTEST; t++) {
		struct panel *p = &panels[np];
		p->t = (enum test)t;
		p->x0 = M_LEFT;
		p->y0 = TITLE_H + np * PANEL_H + M_TOP;
		p->w = SVG_W - M_LEFT - M_RIGHT;
		p->h = PANEL_H - M_TOP - M_BOTTOM;
		np += panel_ranges(p, rs);
	}
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "shunt bench: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	svg_head(f, TITLE_H + (np ? np : 1) * PANEL_H, cfg, rs);
	for (int i = 0; i < np; i++)
		if (panels[i].t == TEST_STREAM)
			draw_panel(f, &panels[i], rs, "Stream throughput",
				   "MB/s (log10, 1 MB = 1e6 bytes)");
		else
			draw_panel(f, &panels[i], rs, "Ping-pong round trip, median",
				   "round trip, &#956;s (log10)");
	fprintf(f, "</svg>\n");
	if (fclose(f) != 0) {
		fprintf(stderr, "shunt bench: %s: %s\n", path, strerror(errno));
		return -EIO;
	}
	return 0;
}
