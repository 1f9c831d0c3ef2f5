# bench/plot.awk - an SVG chart from a TSV file; plain POSIX awk (mawk).
#
#   awk -f bench/plot.awk -v title=T -v xlabel=X -v ylabel=Y \
#       [-v kind=line|bar] [-v logx=1] [-v logy=1] [-v xbytes=1] \
#       [-v scol=1 -v xcol=2 -v ycol=3] [-v note=TEXT] DATA.tsv > CHART.svg
#
# DATA.tsv: tab-separated; lines starting with '#' are skipped.  Column scol
# names the series (one line or one bar colour each, in order of first
# appearance), xcol the x value and ycol the y value.  A y that is not a
# number ("", "nan", "invalid"), or not positive on a log axis, is left out.
#
# kind=line: x is numeric; each series is a path through its points, with a
# marker per point.  kind=bar: x is a category label (in order of first
# appearance), each category a group of bars, one per series.
# xbytes=1 labels a log x axis in bytes at powers of 2 (1, 16, 256, 4K ...).
#
# Every data element is a <path class="data" ...>, so a test can count them.

BEGIN {
	FS = "\t"
	if (kind == "") kind = "line"
	if (scol == "") scol = 1
	if (xcol == "") xcol = 2
	if (ycol == "") ycol = 3
	W = 760; H = 440
	ML = 78; MR = 20; MT = 44; MB = 64
	if (note != "") MB += 16
	PW = W - ML - MR; PH = H - MT - MB
	ns = 0; nc = 0; np = 0
	split("#4e79a7 #f28e2b #59a14f #e15759 #b07aa1 #76b7b2 #edc948 #9c755f #bab0ac #ff9da7", COL, " ")
}

function isnum(v) {
	return v ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/
}

function esc(s) {
	gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s)
	gsub(/"/, "\\&quot;", s)
	return s
}

/^#/ || NF < 2 { next }
{
	s = $scol; x = $xcol; y = $ycol
	if (!(s in sidx)) { sidx[s] = ++ns; sname[ns] = s }
	if (kind == "bar") {
		if (!(x in cidx)) { cidx[x] = ++nc; cname[nc] = x }
	} else if (!isnum(x) || (logx && x + 0 <= 0)) {
		next
	}
	if (!isnum(y) || (logy && y + 0 <= 0)) {
		if (kind == "bar") { nna++; nac[nna] = cidx[x]; nas[nna] = sidx[s] }
		next
	}
	np++
	ps[np] = sidx[s]; px[np] = (kind == "bar") ? cidx[x] : x + 0; py[np] = y + 0
}

function tx(v) {
	if (kind == "bar") return ML + PW * (v - 0.5) / nc
	if (logx) v = log(v) / log(10)
	return ML + PW * (v - x0) / (x1 - x0)
}
function ty(v) {
	if (logy) v = log(v) / log(10)
	return MT + PH * (1 - (v - y0) / (y1 - y0))
}
function floor_(v) { return (v == int(v) || v >= 0) ? int(v) : int(v) - 1 }
function ceil_(v) { return (v == int(v) || v < 0) ? int(v) : int(v) + 1 }

# A tick label: 3 significant digits, with k/M/G for large values.
function num(v,   a) {
	a = v < 0 ? -v : v
	if (a >= 1e9) return sprintf("%gG", v / 1e9)
	if (a >= 1e6) return sprintf("%gM", v / 1e6)
	if (a >= 1e4) return sprintf("%gk", v / 1e3)
	return sprintf("%.4g", v)
}
function bytes(v) {
	if (v >= 1048576) return sprintf("%gM", v / 1048576)
	if (v >= 1024) return sprintf("%gK", v / 1024)
	return sprintf("%g", v)
}

# Linear ticks: a 1, 2 or 5 step giving about 5 intervals.
function linticks(lo, hi, T,   span, raw, mag, st, n, v) {
	span = hi - lo
	if (span <= 0) span = 1
	raw = span / 5
	mag = exp(log(10) * floor_(log(raw) / log(10)))
	st = mag
	if (raw / mag > 5) st = 10 * mag
	else if (raw / mag > 2) st = 5 * mag
	else if (raw / mag > 1) st = 2 * mag
	LSTEP = st
	n = 0
	for (v = ceil_(lo / st) * st; v <= hi + st * 1e-9; v += st) T[++n] = (v < st * 1e-9 && v > -st * 1e-9) ? 0 : v
	return n
}

function axis_line(x1_, y1_, x2_, y2_, cls) {
	printf "<line class=\"%s\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", cls, x1_, y1_, x2_, y2_
}

END {
	printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H
	printf "<style>.grid{stroke:#ddd;stroke-width:1}.axis{stroke:#333;stroke-width:1}.lbl{fill:#333}.data{fill:none;stroke-width:2}</style>\n"
	printf "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H
	printf "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", W / 2, esc(title)
	if (np == 0) {
		printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">no data</text>\n</svg>\n", W / 2, H / 2
		exit 0
	}

	# Ranges.
	ymin = ymax = py[1]; xmin = xmax = px[1]
	for (i = 1; i <= np; i++) {
		if (py[i] < ymin) ymin = py[i]
		if (py[i] > ymax) ymax = py[i]
		if (px[i] < xmin) xmin = px[i]
		if (px[i] > xmax) xmax = px[i]
	}
	if (logy) {
		y0 = floor_(log(ymin) / log(10)); y1 = ceil_(log(ymax) / log(10))
		if (y1 <= y0) y1 = y0 + 1
	} else {
		y0 = (ymin > 0) ? 0 : ymin; y1 = ymax * 1.08
		if (y1 <= y0) y1 = y0 + 1
		nyt = linticks(y0, y1, YT)
		if (YT[nyt] < ymax) { y1 = YT[nyt] + LSTEP; nyt = linticks(y0, y1, YT) }
		y1 = YT[nyt]
	}
	if (kind != "bar") {
		if (logx) {
			x0 = log(xmin) / log(10); x1 = log(xmax) / log(10)
			if (x1 <= x0) { x0 -= 0.5; x1 += 0.5 }
			pad = (x1 - x0) * 0.03; x0 -= pad; x1 += pad
		} else {
			x0 = xmin; x1 = xmax
			if (x1 <= x0) { x0 -= 1; x1 += 1 }
			pad = (x1 - x0) * 0.03; x0 -= pad; x1 += pad
		}
	}

	# Y grid and labels.
	if (logy) {
		for (e = y0; e <= y1; e++) {
			v = exp(log(10) * e); yy = ty(v)
			axis_line(ML, yy, ML + PW, yy, "grid")
			printf "<text class=\"lbl\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6, yy + 4, num(v)
		}
	} else {
		for (i = 1; i <= nyt; i++) {
			yy = ty(YT[i])
			axis_line(ML, yy, ML + PW, yy, "grid")
			printf "<text class=\"lbl\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", ML - 6, yy + 4, num(YT[i])
		}
	}
	# X ticks and labels.
	if (kind == "bar") {
		for (c = 1; c <= nc; c++)
			printf "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", tx(c), MT + PH + 16, esc(cname[c])
	} else if (logx && xbytes) {
		# Powers of 2, every other one or sparser so that labels fit.
		e0 = ceil_(x0 * log(10) / log(2) - 1e-9); e1 = floor_(x1 * log(10) / log(2) + 1e-9)
		stp = 1
		while ((e1 - e0) / stp > 12) stp *= 2
		for (e = e0; e <= e1; e += stp) {
			v = exp(log(2) * e); xx = tx(v)
			axis_line(xx, MT, xx, MT + PH, "grid")
			printf "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", xx, MT + PH + 16, bytes(v)
		}
	} else if (logx) {
		# The data's own x values when there are few, else decades.
		ndx = 0
		for (i = 1; i <= np; i++)
			if (!(px[i] in seenx)) { seenx[px[i]] = 1; ux[++ndx] = px[i] }
		if (ndx <= 12) {
			for (i = 1; i <= ndx; i++) {
				xx = tx(ux[i])
				axis_line(xx, MT, xx, MT + PH, "grid")
				printf "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", xx, MT + PH + 16, num(ux[i])
			}
		} else {
			for (e = ceil_(x0 - 1e-9); e <= x1 + 1e-9; e++) {
				v = exp(log(10) * e); xx = tx(v)
				axis_line(xx, MT, xx, MT + PH, "grid")
				printf "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", xx, MT + PH + 16, num(v)
			}
		}
	} else {
		nxt = linticks(x0, x1, XT)
		for (i = 1; i <= nxt; i++) {
			xx = tx(XT[i])
			axis_line(xx, MT, xx, MT + PH, "grid")
			printf "<text class=\"lbl\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", xx, MT + PH + 16, num(XT[i])
		}
	}
	axis_line(ML, MT + PH, ML + PW, MT + PH, "axis")
	axis_line(ML, MT, ML, MT + PH, "axis")
	printf "<text class=\"lbl\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", ML + PW / 2, MT + PH + 36, esc(xlabel)
	printf "<text class=\"lbl\" x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">%s</text>\n", MT + PH / 2, MT + PH / 2, esc(ylabel)
	if (note != "")
		printf "<text class=\"lbl\" x=\"%d\" y=\"%d\" font-size=\"11\">%s</text>\n", ML, H - 8, esc(note)

	# Data.
	if (kind == "bar") {
		gw = PW / nc * 0.8; bw = gw / ns
		base = logy ? exp(log(10) * y0) : (y0 > 0 ? y0 : 0)
		for (i = 1; i <= np; i++) {
			xl = tx(px[i]) - gw / 2 + (ps[i] - 1) * bw
			yt = ty(py[i]); yb = ty(base)
			printf "<path class=\"data\" style=\"fill:%s;stroke:none\" d=\"M%.1f %.1f h%.1f v%.1f h%.1f Z\"><title>%s %s: %s</title></path>\n", \
				COL[(ps[i] - 1) % 10 + 1], xl, yb, bw * 0.92, yt - yb, -bw * 0.92, esc(sname[ps[i]]), esc(cname[px[i]]), py[i]
		}
		for (i = 1; i <= nna; i++)
			printf "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">n/a</text>\n", \
				tx(nac[i]) - gw / 2 + (nas[i] - 0.5) * bw, ty(base) - 4
	} else {
		for (s = 1; s <= ns; s++) {
			d = ""; marks = ""
			for (i = 1; i <= np; i++) {
				if (ps[i] != s) continue
				d = d sprintf("%s%.1f %.1f", d == "" ? "M" : " L", tx(px[i]), ty(py[i]))
				marks = marks sprintf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"><title>%s: %s, %s</title></circle>\n", \
					tx(px[i]), ty(py[i]), COL[(s - 1) % 10 + 1], esc(sname[s]), px[i], py[i])
			}
			if (d == "") continue
			printf "<path class=\"data\" stroke=\"%s\" d=\"%s\"/>\n%s", COL[(s - 1) % 10 + 1], d, marks
		}
	}

	# Legend, top left inside the plot: the series that have data (a bar
	# chart's n/a bars count), in their colours.
	for (i = 1; i <= np; i++) has[ps[i]] = 1
	for (i = 1; i <= nna; i++) has[nas[i]] = 1
	lx = ML + 10; ly = MT + 8
	lw = 0; nl = 0
	for (s = 1; s <= ns; s++) if (s in has) { nl++; if (length(sname[s]) > lw) lw = length(sname[s]) }
	printf "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n", lx - 4, ly - 4, lw * 7 + 34, nl * 16 + 6
	k = 0
	for (s = 1; s <= ns; s++) {
		if (!(s in has)) continue
		yy = ly + k++ * 16 + 8
		printf "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", lx, yy - 2, COL[(s - 1) % 10 + 1]
		printf "<text x=\"%d\" y=\"%d\">%s</text>\n", lx + 20, yy + 4, esc(sname[s])
	}
	printf "</svg>\n"
}
