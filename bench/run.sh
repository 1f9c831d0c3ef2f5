#!/usr/bin/env bash
# bench/run.sh - the evaluation suite (`make bench`): real programs and
# tcpbench over TCP loopback and under shunt, side by side, written up as
# REPORT.md with SVG charts and the raw data as TSV.
#
# Each comparison is measured in this one run: a TCP run and a shunt run
# with the same command line (shunt: LD_PRELOAD of the preload library),
# alternating, round after round; figures are medians of the rounds.  Every
# shunt run's own log must show its connections upgraded, or the figure is
# marked invalid.  The report is written only by this script.
#
# Usage: bench/run.sh [--quick] [--rounds N] [--out DIR] [--only LIST] [--build DIR]
#   --quick      a subset of every section: short runs, 1 round (about 1 min)
#   --rounds N   rounds per comparison (default 3, 9 for tcpbench's set-up
#                rows; ignored with --quick): on a shared 2-vCPU machine a
#                5 % difference needs about 12
#   --out DIR    where REPORT.md, the SVGs and data/ go (default docs/bench,
#                with --quick build/bench-quick), and the run's lock,
#                .bench.lock: one run at a time per DIR
#   --only LIST  comma-separated sections: netpipe,streams,pairs,ring,cpu,
#                setup,apps,memory,mpi,sockmap,vm (default: all, and all
#                but vm with --quick; vm boots two QEMU guests: bench/vm.sh)
#   --build DIR  the build to measure (default: $SHUNT_BUILD, else build/)
# Exit status: 0 once the report is written (targets missed or not), 1 if
# it could not be, 2 on a usage error.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$BENCH_DIR/.." && pwd)

usage() {
	sed -n '/^# Usage:/,/^# Exit status/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

QUICK=0 OUT='' ONLY='' build=${SHUNT_BUILD:-$SRC/build}
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--rounds)
		case ${2:-} in '' | *[!0-9]* | 0) echo "bench/run.sh: --rounds wants a number from 1" >&2; usage ;; esac
		export BENCH_ROUNDS=$2
		shift
		;;
	--out) OUT=${2:?}; shift ;;
	--only) ONLY=${2:?}; shift ;;
	--build) build=${2:?}; shift ;;
	-h | --help) usage ;;
	*) echo "bench/run.sh: unknown option '$1'" >&2; usage ;;
	esac
	shift
done
[ -n "$OUT" ] || { [ $QUICK = 1 ] && OUT=$build/bench-quick || OUT=$SRC/docs/bench; }
# Every section; a quick run leaves out the guests (their boot alone takes
# longer than the rest of it), unless named.
[ -n "$ONLY" ] || { ONLY=netpipe,streams,pairs,ring,cpu,setup,apps,memory,mpi,sockmap
	[ $QUICK = 1 ] || ONLY+=,vm; }
SHUNT_BUILD=$(cd "$build" && pwd) || { echo "bench/run.sh: no build at $build (run make)" >&2; exit 2; }
export SHUNT_BUILD
mkdir -p "$OUT"
FINAL=$(cd "$OUT" && pwd)
# One run at a time per output directory: two at once would measure each
# other and mix their files.  The lock is a file of ours in that directory,
# closed to others and never truncated: under a predictable name in /tmp,
# another user's symlink there made a root run truncate the file it named,
# and their flock on it stopped the run.
if command -v flock >/dev/null 2>&1; then
	lock=$FINAL/.bench.lock
	if [ -L "$lock" ] || { [ -e "$lock" ] && { [ ! -f "$lock" ] || [ ! -O "$lock" ]; }; }; then
		echo "bench/run.sh: $lock is not a file of ours; refusing it" >&2
		exit 1
	fi
	umask_was=$(umask)
	umask 077
	exec 9>>"$lock"
	umask "$umask_was"
	flock -n 9 || { echo "bench/run.sh: another run is writing $FINAL" >&2; exit 1; }
fi

# shellcheck source=tests/apps_lib.sh
. "$SRC/tests/apps_lib.sh"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
# The sections, s1_netpipe.sh ... s8_memory.sh: s<digit>_ only, for
# bench/sockmap_compare.sh is a script of its own (sourced here, it ran
# the whole sockmap comparison before the first section).
for s in "$BENCH_DIR"/s[0-9]_*.sh "$BENCH_DIR"/s[0-9][0-9]_*.sh; do
	[ -e "$s" ] || continue
	# shellcheck source=/dev/null
	. "$s"
done

TB=$SHUNT_BUILD/examples/tcpbench
[ -x "$TB" ] || { echo "bench/run.sh: no $TB (run make)" >&2; exit 2; }
# A fresh rendezvous directory for this run, whatever the caller had.
unset SHUNT_DIR
apps_init bench # temp dir $T, a fresh SHUNT_DIR, exit trap, empty config
need awk sed sort
# Up to 1000 connections per process, plus the library's fds.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Everything is written to a staging directory and moves to $FINAL only
# at the end, whole: old charts or data must not pass for this run's, and
# a run that is stopped leaves the previous report as it was.
OUT=$T/out DATA=$T/out/data
mkdir -p "$DATA" "$T/md"
: >"$T/targets.tsv"
: >"$T/headline.tsv"
: >"$T/notes.md"

# The targets set by the project's issues: id, what, required.
TARGETS=(
	"stream-tcp|shunt bench, 64 KiB stream: shunt vs TCP|>= 4x"
	"stream-unix|shunt bench, 64 KiB stream: shunt vs UNIX socket|>= 2x"
	"stream-memcpy|shunt bench, 64 KiB stream: shunt vs memcpy|>= 0.5x"
	"pingpong-spin|shunt bench, 64 B ping-pong median, spinning: shunt vs TCP|<= 0.1x"
	"pingpong-nospin|shunt bench, 64 B ping-pong median, SHUNT_SPIN_US=0 (shunt-nospin) vs TCP|<= 0.6x"
	"iperf3|iperf3 -l 128K throughput vs TCP|>= 4x"
	"sockperf|sockperf ping-pong 64 B median latency vs TCP|<= 0.2x"
	"redis-get-c1|redis-benchmark GET -c 1 requests/s vs TCP|>= 1.5x"
	"redis-set-c1|redis-benchmark SET -c 1 requests/s vs TCP|>= 1.5x"
	"redis-get-c50|redis-benchmark GET -c 50 requests/s vs TCP|>= 1.5x"
	"redis-set-c50|redis-benchmark SET -c 50 requests/s vs TCP|>= 1.5x"
	"nginx-gmean|nginx+wrk 4 KiB keep-alive, geometric mean of shunt/TCP over -c 1..256|>= 1.3x"
	"nginx-min|nginx+wrk 4 KiB keep-alive, lowest shunt/TCP at any -c 1..256|>= 1.0x"
	"pairs-throughput|1..16 pairs: lowest aggregate throughput shunt/TCP at any N|>= 1.0x"
	"pairs-rtt|1..16 pairs: highest median round trip shunt/TCP at any N|<= 1.0x"
	"idle|1000 idle connections, moved to shared memory before they went idle: CPU of both processes|< 1% of a core"
	"setup|connection set-up (connect, 1 byte each way, close; tcpbench connect), short so on TCP: rate vs TCP|>= 1.0x"
	"setup0|connection set-up with no data (connect, accept, close; tcpbench connect0): rate vs TCP|>= 1.0x"
	"nginx-close-c1|nginx (2 workers) + wrk 4 KiB, Connection: close, -c 1: requests/s vs TCP|>= 1.0x"
	"nginx-close-c8|nginx (2 workers) + wrk 4 KiB, Connection: close, -c 8: requests/s vs TCP|>= 1.0x"
	"nginx-close-c64|nginx (2 workers) + wrk 4 KiB, Connection: close, -c 64: requests/s vs TCP|>= 1.0x"
	"redis-k0|redis-benchmark -k 0 (a connection per request), lowest of GET and SET: requests/s vs TCP|>= 1.0x"
	"pgbench-C|pgbench -C -S (PostgreSQL, a connection per transaction): tps vs TCP|>= 1.0x"
	"plain-clients|a server under shunt (nginx, 2 workers) loaded by plain clients (wrk without shunt), lowest of keep-alive and Connection: close: requests/s vs the same server without shunt|>= 0.95x"
	"mpi-lat|Open MPI --mca btl tcp,self, 2 ranks: 8-byte ping-pong latency vs TCP|<= 0.5x"
	"mpi-bw|Open MPI --mca btl tcp,self, 2 ranks: 1 MiB ping-pong bandwidth vs TCP|>= 2x"
	"sockmap-iperf3|iperf3 -l 128K throughput: shunt vs eBPF sockmap|>= 2x"
	"sockmap-sockperf|sockperf ping-pong 64 B median latency: shunt vs eBPF sockmap|<= 0.5x"
	"sockmap-redis|redis-benchmark GET and SET, -c 1 and -c 50, lowest requests/s: shunt vs eBPF sockmap|>= 2x"
	"vm-stream|two QEMU guests (TCG) sharing an ivshmem region: tcpbench stream vs TCP between them|>= 5x"
	"vm-rtt|two QEMU guests: tcpbench 64 B round trip vs TCP between them|<= 0.1x"
	"vm-ring|two QEMU guests: tcpbench stream under the library vs a raw ring in the same region|>= 0.8x"
)

SECTIONS=(netpipe streams pairs ring cpu setup apps memory mpi sockmap vm)
# A section's usual time in seconds on this project's 2-CPU machines (full
# run; quick run), for the progress line's estimate only.
declare -A EST=([netpipe]=60 [streams]=75 [pairs]=130 [ring]=110 [cpu]=60 [setup]=150
	[apps]=260 [memory]=20 [mpi]=90 [sockmap]=190 [vm]=150)
declare -A EST_QUICK=([netpipe]=4 [streams]=5 [pairs]=4 [ring]=4 [cpu]=5 [setup]=10
	[apps]=10 [memory]=2 [mpi]=8 [sockmap]=10 [vm]=60)
wants() { [[ ,$ONLY, == *",$1,"* ]]; }

commit=unknown
if git -C "$SRC" rev-parse --short HEAD >/dev/null 2>&1; then
	commit=$(git -C "$SRC" rev-parse --short HEAD)
	# Dirty: tracked files changed (untracked ones, this report included, are not).
	[ -z "$(git -C "$SRC" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit=$commit-dirty
fi
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$SECONDS
say "$(nproc) CPUs, kernel $(uname -r), commit $commit, $([ $QUICK = 1 ] && echo quick || echo full) run into $FINAL"

# est SECTION: its usual time (EST, or EST_QUICK with --quick).
est() { if [ "$QUICK" = 1 ]; then echo "${EST_QUICK[$1]:-10}"; else echo "${EST[$1]:-60}"; fi; }
# human SECS: "40 s" or "7 min".
human() { if [ "$1" -lt 90 ]; then echo "$1 s"; else echo "$(((${1} + 30) / 60)) min"; fi; }
# progress K N SECTION: "[K/N] SECTION - about X left" on stderr.  What is
# left is the usual time of this section and those after it, scaled by how
# long the sections done so far took against their usual time.
PLAN=()
for sec in "${SECTIONS[@]}"; do wants "$sec" && PLAN+=("$sec"); done
est_done=0
progress() {
	local k=$1 total=$2 sec=$3 left=0 i scale
	for ((i = k - 1; i < total; i++)); do left=$((left + $(est "${PLAN[i]}"))); done
	scale=$(awk -v a="$((SECONDS - t_start))" -v b="$est_done" 'BEGIN { s = b > 0 ? a / b : 1
		if (s < 0.5) s = 0.5; if (s > 4) s = 4; print s }')
	left=$(awk -v l="$left" -v s="$scale" 'BEGIN { printf "%d", l * s + 0.5 }')
	printf '%s: [%d/%d] %s - about %s left\n' "$APPS_NAME" "$k" "$total" "$sec" "$(human "$left")" >&2
}

n=0 k=0
for sec in "${SECTIONS[@]}"; do
	n=$((n + 1))
	wants "$sec" || continue
	k=$((k + 1))
	SEC=$sec MD=$T/md/$(printf '%02d' $n)-$sec.md
	t0=$SECONDS load=$(cut -d" " -f1 /proc/loadavg)
	progress "$k" "${#PLAN[@]}" "$sec"
	printf '%s\t%s\n' "$n" "$load" >>"$T/loads"
	say "--- $n. $sec"
	# A subshell: a failing step ends this section only, and its servers
	# are killed by pid on the way out.
	rc=0
	(
		trap 'kill_pids "${APPS_PIDS[@]}"' EXIT
		trap 'exit 130' INT TERM
		APPS_PIDS=()
		"section_$sec" "$n"
	) || rc=$?
	[ $rc != 130 ] || exit 130
	if [ $rc != 0 ]; then
		note "the section stopped early (status $rc); what it measured before is shown"
		md "" "**This section stopped early (status $rc); see the notes.**"
	fi
	md "" "_Section time: $((SECONDS - t0)) s; load average (1 min) at its start: $load._"
	say "--- $n. $sec: $((SECONDS - t0)) s"
	est_done=$((est_done + $(est "$sec")))
done
printf '%s: [done] %d section(s) in %s\n' "$APPS_NAME" "${#PLAN[@]}" "$(human $((SECONDS - t_start)))" >&2

# headline_md: the headline table, every workload's TCP and shunt figures
# and their ratio, with what the library logged of the connections.
headline_md() {
	echo "| workload | unit | TCP | shunt | shunt/TCP | connections under shunt (library's logs, all rounds: ends logged moved / short / nopeer) |"
	echo "|---|---|---|---|---|---|"
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$T/headline.tsv"
}

# --- The report ----------------------------------------------------------
report=$OUT/REPORT.md
{
	echo "# shunt: evaluation report"
	echo
	echo "Written by \`make bench$([ $QUICK = 1 ] && echo ' QUICK=1')\` (\`bench/run.sh$([ $QUICK = 1 ] && echo ' --quick')\`): every"
	echo "figure, table and chart here comes from the run that wrote this file; nothing is"
	echo "edited by hand. The raw data is in [data/](data/) as TSV."
	echo
	echo "- **Machine:** $(nproc) CPUs (nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)$(. /etc/os-release 2>/dev/null && echo ", $PRETTY_NAME")"
	echo "- **Date:** $started"
	echo "- **Commit:** $commit"
	echo "- **Run:** $([ $QUICK = 1 ] && echo 'QUICK (a subset, short runs, 1 round: rough figures)' || echo full), $((SECONDS - t_start)) s; load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
	echo
	echo "How: each comparison runs the same command line twice, over TCP loopback"
	echo "and with \`LD_PRELOAD=build/libshunt-preload.so\` (what \`shunt run --\` does),"
	echo "TCP and shunt alternating round after round; a figure is the median of its"
	echo "rounds. Each run starts its own servers, on a free port, with a fresh"
	echo "rendezvous directory (\`SHUNT_DIR\`) for the whole run. Every shunt run logs"
	echo "with \`SHUNT_LOG=info\`. A connection starts on TCP and moves to shared memory"
	echo "once one end has made \`upgrade-calls\` (16) data calls or carried"
	echo "\`upgrade-bytes\` (256 KiB): a figure of long connections whose runs did not log"
	echo "them as upgraded is marked invalid (the idle and memory figures are checked with"
	echo "\`shunt stat --json\` as well), and so is a figure of short connections (section"
	echo "6) where one moved or none was logged as \`stays on TCP: short\`. The machine is"
	echo "small and shared with other work: expect noise, and read the load averages."
	echo
	echo "Load average (1 min) at the start of each section: $(cut -f2 "$T/loads" 2>/dev/null | tr '\n' ' ' | sed 's/ $//') (sections $(cut -f1 "$T/loads" 2>/dev/null | tr '\n' ' ' | sed 's/ $//'))."
	echo
	echo "## Side by side"
	echo
	echo "Every workload, TCP and shunt in this one run (medians; the sections below"
	echo "give each round). shunt/TCP: above 1 is better for rates (req/s, tps, MB/s,"
	echo "Gbit/s, conn/s), below 1 is better for times (us). A connection moves only"
	echo "after 16 data calls or 256 KiB, so the short-connection rows must show"
	echo "0 moved (they stay on TCP by design); \"(invalid)\" marks a figure whose"
	echo "logs did not show what it needs."
	echo
	if [ -s "$T/headline.tsv" ]; then headline_md; else echo "Nothing measured."; fi
	echo
	echo "## Targets"
	echo
	echo "Every target set by the project's issues, as measured in this run."
	echo
	echo "| target | required | measured | verdict |"
	echo "|---|---|---|---|"
	met=0 total=0
	for t in "${TARGETS[@]}"; do
		IFS='|' read -r id what req <<<"$t"
		row=$(awk -F'\t' -v id="$id" '$1 == id { m = $2; v = $3 } END { if (m != "") print m "\t" v }' "$T/targets.tsv")
		meas=${row%%$'\t'*} verd=${row#*$'\t'}
		[ -n "$row" ] || { meas="-" verd="not measured"; }
		total=$((total + 1))
		[ "$verd" != met ] || met=$((met + 1))
		[ "$verd" = met ] || verd="**$verd**"
		echo "| $what | $req | $meas | $verd |"
	done
	echo
	echo "$met of $total targets met."
	for f in "$T"/md/*.md; do
		[ -e "$f" ] || continue
		echo
		cat "$f"
	done
	echo
	echo "## Notes"
	echo
	if [ -s "$T/notes.md" ]; then
		cat "$T/notes.md"
	else
		echo "Nothing failed, and every shunt run was accelerated."
	fi
	echo
	echo "## Raw data"
	echo
	for f in "$DATA"/*.tsv; do
		[ -e "$f" ] || continue
		echo "* [data/${f##*/}](data/${f##*/}): $(sed -n '1s/^# //p' "$f" | sed 's/	/, /g')"
	done
} >"$report"
rm -rf "$FINAL/data"
rm -f "$FINAL"/*.svg "$FINAL/REPORT.md"
cp -R "$OUT"/. "$FINAL"/
# The side-by-side table on the terminal too.
if [ -s "$T/headline.tsv" ]; then
	echo
	awk -F'\t' 'BEGIN { printf "%-76s %-7s %10s %10s %9s  %s\n", "workload", "unit", "TCP", "shunt", "shunt/TCP", "under shunt (logs)" }
		{ printf "%-76s %-7s %10s %10s %9s  %s\n", substr($1, 1, 76), $2, $3, $4, $5, $6 }' "$T/headline.tsv"
fi
say "wrote $FINAL/REPORT.md ($((SECONDS - t_start)) s)"
