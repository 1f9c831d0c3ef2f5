#!/usr/bin/env bash
# t_bench: `make bench QUICK=1` (bench/run.sh --quick) into a temp dir, and
# the structure of what it writes: REPORT.md with the machine, date and
# commit, the Targets table with one row per target and a verdict in each,
# every section, charts that are whole SVG documents with data in them
# (and each one shown in the report), and the raw data as TSV.  No
# performance figure is checked: this machine's numbers are its own.
# First, cheaply, the run's lock (lock_check).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init bench

# The run's lock (before the suite's tools are needed: this takes a
# second).  A file of ours in the output directory: another user's symlink
# at the old predictable name in $TMPDIR (here the old lock of $T/lock's
# output) does not truncate what it names, a symlink as the lock is
# refused, and a held lock stops a second run at once.
lock_check() {
	local d=$T/lock victim=$T/victim old
	mkdir -p "$d"
	echo precious >"$victim"
	old=$T/shunt-bench-$(printf '%s' "$d" | cksum | cut -d' ' -f1).lock
	ln -s "$victim" "$old"
	# Held by us: a run stops at once, at the old name or the new.
	exec 8<"$victim" 7>>"$d/.bench.lock"
	flock -n 8 && flock -n 7
	TMPDIR=$T timeout 20 "$APPS_SRC/bench/run.sh" --quick --build "$SHUNT_BUILD" --out "$d" \
		>"$T/lock.out" 2>&1 && fail "a second run went on: $(cat "$T/lock.out")"
	exec 8<&- 7>&-
	[ "$(cat "$victim")" = precious ] || fail "the run truncated $victim through a symlink in \$TMPDIR"
	grep -q "another run is writing" "$T/lock.out" || fail "the held lock: $(cat "$T/lock.out")"
	rm -f "$d/.bench.lock"
	ln -s "$victim" "$d/.bench.lock"
	timeout 20 "$APPS_SRC/bench/run.sh" --quick --build "$SHUNT_BUILD" --out "$d" \
		>"$T/lock.out" 2>&1 && fail "a run took a symlink as its lock"
	grep -q "not a file of ours" "$T/lock.out" || fail "the symlinked lock: $(cat "$T/lock.out")"
	[ "$(cat "$victim")" = precious ] || fail "the run truncated $victim through its lock"
	say "lock: in the output directory, a symlink refused, a held one stops a second run"
}
command -v flock >/dev/null && lock_check
# What the quick suite drives; without one, a section has no data.
need NPtcp iperf3 redis-server redis-benchmark nginx wrk jq
runner=$APPS_SRC/bench/run.sh
[ -x "$runner" ] || fail "no $runner"
[ -x "$SHUNT_BUILD/examples/tcpbench" ] || skip "no $SHUNT_BUILD/examples/tcpbench (make)"

out=$T/out
before=unknown
if git -C "$APPS_SRC" rev-parse --short HEAD >/dev/null 2>&1; then
	before=$(git -C "$APPS_SRC" rev-parse --short HEAD)
fi
# The quick suite takes about 60 s on a quiet 2-CPU machine (more when
# other jobs load it); tests/run.sh allows 120.
timeout -k 5 112 "$runner" --quick --build "$SHUNT_BUILD" --out "$out" >"$T/run.out" 2>&1 ||
	fail "bench/run.sh --quick exited with status $? (see run.out)"
say "quick suite: $(tail -n 1 "$T/run.out")"

r=$out/REPORT.md
[ -s "$r" ] || fail "no REPORT.md"
grep -Eq '^- \*\*Machine:\*\* [0-9]+ CPUs \(nproc\), .+, kernel [^ ,]+' "$r" || fail "no machine line (CPUs, CPU model, kernel)"
grep -Eq '^- \*\*Date:\*\* [0-9]{4}-[0-9]{2}-[0-9]{2} ' "$r" || fail "no date line"
# HEAD before the run, or after it (a commit may land while it runs).
now=unknown
if git -C "$APPS_SRC" rev-parse --short HEAD >/dev/null 2>&1; then
	now=$(git -C "$APPS_SRC" rev-parse --short HEAD)
fi
grep -Eq "^- \*\*Commit:\*\* ($before|$now)(-dirty)?\$" "$r" ||
	fail "no commit line with $before or $now: $(grep -F 'Commit:' "$r")"
grep -Eq 'make bench' "$r" || fail "the report does not say how it was made"

# The Targets table: from its header to the first line that is not a row.
awk '/^## Targets/ { on = 1; next } on && /^## / { exit } on && /^\|/' "$r" >"$T/targets"
rows=$(tail -n +3 "$T/targets")
n=$(printf '%s\n' "$rows" | grep -c '^|' || true)
expect=(
	"64 KiB stream: shunt vs TCP" "64 KiB stream: shunt vs UNIX" "64 KiB stream: shunt vs memcpy"
	"64 B ping-pong median, spinning" "SHUNT_SPIN_US=0" "iperf3 -l 128K throughput vs TCP"
	"sockperf ping-pong 64 B median latency vs TCP"
	"GET -c 1 " "SET -c 1 " "GET -c 50 " "SET -c 50 " "geometric mean" "lowest shunt/TCP at any -c"
	"lowest aggregate throughput" "highest median round trip" "1000 idle" "set-up (connect, 1 byte" "set-up with no data"
	"Connection: close, -c 1:" "Connection: close, -c 8:" "Connection: close, -c 64:" "redis-benchmark -k 0"
	"pgbench -C -S" "loaded by plain clients" "8-byte ping-pong latency" "1 MiB ping-pong bandwidth"
	"iperf3 -l 128K throughput: shunt vs eBPF sockmap" "sockperf ping-pong 64 B median latency: shunt vs eBPF"
	"GET and SET, -c 1 and -c 50, lowest"
	"two QEMU guests (TCG) sharing an ivshmem region" "two QEMU guests: tcpbench 64 B round trip"
	"two QEMU guests: tcpbench stream under the library vs a raw ring"
)
[ "$n" = ${#expect[@]} ] || fail "the Targets table has $n rows, expected ${#expect[@]}"
for e in "${expect[@]}"; do
	k=$(printf '%s\n' "$rows" | grep -cF -- "$e" || true)
	[ "$k" = 1 ] || fail "Targets: $k rows for '$e', expected 1"
done
# Four cells each, the last a verdict.
bad=$(printf '%s\n' "$rows" | awk -F'|' 'NF != 6 || $5 !~ /^ (\*\*)?(met|missed|invalid|not measured)(\*\*)? $/' | head -n 3)
[ -z "$bad" ] || fail "malformed Targets rows: $bad"
grep -Eq '^[0-9]+ of [0-9]+ targets met\.' "$r" || fail "no count of targets met"

# The side-by-side table: a row per workload, a ratio in each, and what
# the library logged of its connections.
awk '/^## Side by side/ { on = 1; next } on && /^## / { exit } on && /^\|/' "$r" >"$T/side"
srows=$(tail -n +3 "$T/side")
ns=$(printf '%s\n' "$srows" | grep -c '^|' || true)
[ "$ns" -ge 8 ] || fail "the side-by-side table has $ns rows, expected at least 8"
bad=$(printf '%s\n' "$srows" | awk -F'|' 'NF != 8 || $6 !~ /^ (nan|[0-9.]+)x( \(invalid\))? $/ || $7 !~ /(moved|no log)/' | head -n 3)
[ -z "$bad" ] || fail "malformed side-by-side rows: $bad"
want=("Connection: close\" -c 8" "redis-benchmark -t set,get -c 8 -k 0, GET" "plain wrk" "tcpbench connect "
	"tcpbench stream" "tcpbench ping-pong" "iperf3")
# The rows whose programs or privileges this machine may lack.
! command -v mpirun >/dev/null 2>&1 || want+=("Open MPI")
[ "$(id -u)" != 0 ] || ! command -v clang >/dev/null 2>&1 || want+=("eBPF sockmap")
for e in "${want[@]}"; do
	# A here-string, not a pipe: grep -q leaves at its first match, and a
	# printf still writing would die of SIGPIPE, failing the pipeline.
	grep -qF -- "$e" <<<"$srows" || fail "side by side: no row for '$e'"
done

for s in 1 2 3 4 5 6 7 8 9 10; do
	grep -Eq "^## $s\. " "$r" || fail "no section $s"
done
! grep -q 'stopped early' "$r" || fail "a section stopped early: $(grep -A1 'stopped early' "$r" | head -n 4)"

# Charts: each a whole SVG document with at least one data path, each
# shown in the report, and each one the report shows is there.
svgs=("$out"/*.svg)
[ -e "${svgs[0]}" ] || fail "no SVG charts"
[ ${#svgs[@]} -ge 10 ] || fail "only ${#svgs[@]} charts"
for f in "${svgs[@]}"; do
	b=${f##*/}
	[ "$(grep -c '<svg[ >]' "$f")" = 1 ] || fail "$b: not one <svg> element"
	[ "$(tail -n 1 "$f")" = '</svg>' ] || fail "$b: does not end with </svg>"
	grep -q '<svg [^>]*xmlns="http://www.w3.org/2000/svg"' "$f" || fail "$b: no SVG namespace"
	grep -Eq '<path class="data"[^>]* d="M[0-9.]+ [0-9.-]+' "$f" || fail "$b: no data path"
	# Every element opened is closed (a crude well-formedness check).
	o=$(grep -o '<[a-z]\+[ >]' "$f" | grep -vc '/>' || true)
	c=$(grep -o '</[a-z]\+>' "$f" | wc -l)
	sc=$(grep -o '<[a-z]\+ [^>]*/>' "$f" | wc -l)
	[ "$o" = $((c + sc)) ] || fail "$b: $o elements opened, $c closed and $sc self-closed"
	grep -qF "]($b)" "$r" || fail "$b is not shown in the report"
done
for b in $(grep -o "]([a-z0-9-]*\.svg)" "$r" | sed "s/^](//; s/)\$//"); do
	[ -f "$out/$b" ] || fail "the report shows $b, which is missing"
done

# Raw data: TSV files with a header and data, each listed in the report.
tsvs=("$out"/data/*.tsv)
[ -e "${tsvs[0]}" ] || fail "no data/*.tsv"
for f in "${tsvs[@]}"; do
	b=${f##*/}
	head -n 1 "$f" | grep -q '^# ' || fail "data/$b: no header line"
	[ "$(grep -vc '^#' "$f")" -ge 1 ] || fail "data/$b: no data"
	awk -F'\t' '!/^#/ && NF < 2 { exit 1 }' "$f" || fail "data/$b: a line that is not tab-separated"
	grep -qF "(data/$b)" "$r" || fail "data/$b is not listed in the report"
done
say "report: ${#svgs[@]} charts, ${#tsvs[@]} data files, $n targets"
say pass
