#!/usr/bin/env bash
# tools/compare.sh - real programs over TCP loopback and over shunt, side by
# side, against the evaluation targets:
#
#   (a) iperf3 -l 128K throughput              shunt/TCP >= 4x
#   (b) sockperf ping-pong 64 B median latency  shunt/TCP <= 0.2x
#   (c) redis-benchmark GET and SET, -c 1 and -c 50, requests/s   >= 1.5x
#   (d) nginx + wrk, keep-alive, 4 KiB file, -c 1, 2, 4 .. 256, requests/s:
#       the geometric mean of the ratios >= 1.3x, and shunt not below TCP
#       at any concurrency (every ratio >= 1.0x)
#
# A TCP run is the same command line as the shunt run, without LD_PRELOAD;
# each run starts its own server.  TCP and shunt runs alternate (TCP, shunt,
# TCP, shunt, ...) for ROUNDS rounds and each figure is the median of its
# rounds, since a small shared machine is noisy.  Each shunt run's client
# log must show upgraded connections, else its figure is marked invalid.
#
# Usage: tools/compare.sh [--quick] [--rounds N] [--only LIST] [--out FILE]
#                         [--check]
#   --quick      short runs, 2 rounds (about 2 minutes; default about 6-9)
#   --rounds N   rounds per figure (default 3, --quick 2)
#   --only LIST  comma-separated subset of: iperf3,sockperf,redis,nginx
#   --out FILE   also write the Markdown report to FILE
#   --check      exit 1 if a target is missed (default: exit 0 once measured)
# (bench/run.sh, `make bench`, is the full evaluation: these and more.)
# Environment: SHUNT_BUILD (default: build/ of this checkout); SHUNT_APPS_TCP=1
# runs the "shunt" column over plain TCP too (to try the script itself).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/apps_lib.sh
. "$here/../tests/apps_lib.sh"

usage() {
	sed -n '/^# Usage:/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

quick=0 rounds='' only=iperf3,sockperf,redis,nginx out='' check=0
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=${2:?}; shift ;;
	--only) only=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--check) check=1 ;;
	-h | --help) usage ;;
	*) echo "compare.sh: unknown option '$1'" >&2; usage ;;
	esac
	shift
done
if [ $quick = 1 ]; then
	rounds=${rounds:-2} d_iperf=2 d_sockperf=2 n_redis=20000 d_wrk=1
else
	rounds=${rounds:-3} d_iperf=5 d_sockperf=5 n_redis=100000 d_wrk=3
fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
wants() { [[ ,$only, == *",$1,"* ]]; }

SHUNT_TCP_ONLY=${SHUNT_APPS_TCP:-0}
apps_init compare
need jq
report=$T/report.md
rows=()   # Markdown rows of the summary table
notes=()  # lines printed under it
missed=0

# mode tcp|shunt: what the next start_server/run_client get.
mode() {
	if [ "$1" = tcp ] || [ "$SHUNT_TCP_ONLY" = 1 ]; then APPS_TCP=1; else APPS_TCP=0; fi
}

# judge NAME TCP SHUNT UNIT OP TARGET [VALID]: one summary row; OP is >= or
# <= on the ratio shunt/TCP.
judge() {
	local name=$1 tcp=$2 sh=$3 unit=$4 op=$5 target=$6 valid=${7:-1} r verdict
	r=$(ratio "$sh" "$tcp")
	if awk -v r="$r" -v t="$target" -v op="$op" \
		'BEGIN { exit !(r != "nan" && (op == ">=" ? r >= t : r <= t)) }'; then
		verdict=met
	else
		verdict=missed
		missed=$((missed + 1))
	fi
	[ "$valid" = 1 ] || verdict="invalid (a run failed, or was not accelerated)" missed=$((missed + 1))
	rows+=("| $name | $tcp $unit | $sh $unit | ${r}x | $op ${target}x | $verdict |")
	say "$name: TCP $tcp, shunt $sh $unit: ${r}x ($verdict)"
}

# accel LOG...: 1 if the shunt run's logs show an upgraded connection (or
# if the "shunt" column is plain TCP on purpose), else 0.
accel() {
	if [ "$SHUNT_TCP_ONLY" = 1 ] || [ "$(count_upgraded "$@")" -gt 0 ]; then echo 1; else echo 0; fi
}

# broken WHAT FILE STATUS: a run failed or timed out.  The comparison goes on;
# the figure is marked invalid and the note shows the end of FILE.
broken() {
	valid=0
	notes+=("$1 FAILED, status $3$([ "$3" = 124 ] && echo ' (timed out)'): $(tail -n 3 "$2" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ' | cut -c1-240)")
	say "$1 FAILED (see the notes)"
}

# --- (a) iperf3 -----------------------------------------------------------
bench_iperf3() {
	need iperf3
	local r m port pid tcp=() sh=() valid=1 v
	for ((r = 1; r <= rounds; r++)); do
		for m in tcp shunt; do
			mode $m
			port=$(free_port)
			start_server "iperf3-$m-$r-server" iperf3 -s -p "$port" -B 127.0.0.1
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			run_client "iperf3-$m-$r" $((d_iperf + 15)) iperf3 -c 127.0.0.1 -p "$port" \
				-t "$d_iperf" -l 128K -J >"$T/iperf3-$m-$r.json" 2>&1 ||
				broken "iperf3 ($m, round $r)" "$T/iperf3-$m-$r.json" $?
			stop_server "$pid"
			v=$(jq -r '.end.sum_received.bits_per_second / 1e7 | round / 100' "$T/iperf3-$m-$r.json" 2>/dev/null) || v=0
			if [ $m = tcp ]; then tcp+=("$v"); else
				sh+=("$v")
				[ "$(accel "$T/iperf3-$m-$r.log")" = 1 ] || valid=0
			fi
		done
	done
	notes+=("iperf3 Gbit/s per round: TCP ${tcp[*]}; shunt ${sh[*]}")
	judge "(a) iperf3 -l 128K, ${d_iperf} s" "$(fmt "$(median "${tcp[@]}")" 1)" \
		"$(fmt "$(median "${sh[@]}")" 1)" Gbit/s '>=' 4 $valid
}

# --- (b) sockperf ---------------------------------------------------------
bench_sockperf() {
	need sockperf
	local r m port pid tcp=() sh=() valid=1 v f
	for ((r = 1; r <= rounds; r++)); do
		for m in tcp shunt; do
			mode $m
			port=$(free_port)
			start_server "sockperf-$m-$r-server" sockperf server --tcp -i 127.0.0.1 -p "$port"
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			f=$T/sockperf-$m-$r.out
			run_client "sockperf-$m-$r" $((d_sockperf + 20)) sockperf ping-pong --tcp \
				-i 127.0.0.1 -p "$port" -t "$d_sockperf" -m 64 --mps 10000000 >"$f" 2>&1 ||
				broken "sockperf ($m, round $r)" "$f" $?
			stop_server "$pid"
			v=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | awk '/percentile 50.000 =/ { print $NF; exit }')
			[ -n "$v" ] || { v=0; valid=0; }
			if [ $m = tcp ]; then tcp+=("$v"); else
				sh+=("$v")
				[ "$(accel "$T/sockperf-$m-$r.log")" = 1 ] || valid=0
			fi
		done
	done
	notes+=("sockperf 64 B median us per round: TCP ${tcp[*]}; shunt ${sh[*]}")
	judge "(b) sockperf ping-pong 64 B, median" "$(fmt "$(median "${tcp[@]}")" 2)" \
		"$(fmt "$(median "${sh[@]}")" 2)" us '<=' 0.2 $valid
}

# --- (c) redis-benchmark --------------------------------------------------
bench_redis() {
	need redis-server redis-benchmark
	local r m c t port pid valid=1 f v
	declare -A vals=()
	for ((r = 1; r <= rounds; r++)); do
		for m in tcp shunt; do
			mode $m
			port=$(free_port)
			start_redis "redis-$m-$r-server" "$port" "$T/redis-$m-$r"
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			for c in 1 50; do
				f=$T/redis-$m-$r-c$c.out
				run_client "redis-$m-$r-c$c" 120 redis-benchmark -p "$port" -t set,get \
					-n "$n_redis" -c "$c" --csv >"$f" 2>&1 ||
					broken "redis-benchmark ($m, -c $c, round $r)" "$f" $?
				for t in GET SET; do
					v=$(awk -F'"' -v t="$t" '$2 == t { print $4 }' "$f")
					[ -n "$v" ] || { v=0; valid=0; }
					vals[$t-$c-$m]="${vals[$t-$c-$m]:-} $v"
				done
				[ $m = tcp ] || [ "$(accel "$T/redis-$m-$r-c$c.log")" = 1 ] || valid=0
			done
			stop_server "$pid"
		done
	done
	for c in 1 50; do
		for t in GET SET; do
			# shellcheck disable=SC2086 # word lists on purpose
			judge "(c) redis-benchmark $t -c $c" "$(fmt "$(median ${vals[$t-$c-tcp]})")" \
				"$(fmt "$(median ${vals[$t-$c-shunt]})")" req/s '>=' 1.5 $valid
			notes+=("redis $t -c $c req/s per round: TCP${vals[$t-$c-tcp]}; shunt${vals[$t-$c-shunt]}")
		done
	done
}

# --- (d) nginx + wrk ------------------------------------------------------
bench_nginx() {
	need nginx wrk
	local r m c port pid dir f v valid=1 conns=(1 2 4 8 16 32 64 128 256)
	declare -A vals=()
	mkdir -p "$T/www"
	chmod 755 "$T/www"
	rand_file "$T/www/4k" 4096
	chmod 644 "$T/www/4k"
	for ((r = 1; r <= rounds; r++)); do
		for m in tcp shunt; do
			mode $m
			port=$(free_port)
			dir=$T/nginx-$m-$r
			mkdir -p "$dir/tmp"
			nginx_bench_conf "$dir" "$port" "$T/www"
			start_server "nginx-$m-$r-server" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.out"
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			for c in "${conns[@]}"; do
				f=$T/wrk-$m-$r-c$c.out
				run_client "wrk-$m-$r-c$c" $((d_wrk + 10)) wrk -t $((c < 2 ? c : 2)) -c "$c" \
					-d "${d_wrk}s" "http://127.0.0.1:$port/4k" >"$f" 2>&1 ||
					broken "wrk ($m, -c $c, round $r)" "$f" $?
				v=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
				[ -n "$v" ] || { v=0; valid=0; }
				if grep -q -E 'Socket errors|Non-2xx' "$f"; then
					notes+=("wrk $m -c $c round $r: $(grep -E 'Socket errors|Non-2xx' "$f" | tr '\n' ' ')")
					valid=0
				fi
				vals[$c-$m]="${vals[$c-$m]:-} $v"
				[ $m = tcp ] || [ "$(accel "$T/wrk-$m-$r-c$c.log")" = 1 ] || valid=0
			done
			stop_server "$pid"
		done
	done
	local lines=() gsum=0 min=999 t s rr
	for c in "${conns[@]}"; do
		# shellcheck disable=SC2086 # word lists on purpose
		t=$(median ${vals[$c-tcp]})
		# shellcheck disable=SC2086
		s=$(median ${vals[$c-shunt]})
		rr=$(ratio "$s" "$t")
		lines+=("| $c | $(fmt "$t") | $(fmt "$s") | ${rr}x |")
		# A failed point (ratio 0 or nan) counts as 0.01x.
		gsum=$(awk -v g="$gsum" -v r="$rr" 'BEGIN { if (r == "nan" || r + 0 <= 0) r = 0.01; print g + log(r) }')
		min=$(awk -v m="$min" -v r="$rr" 'BEGIN { if (r == "nan") r = 0; print (r + 0 < m + 0 ? r : m) }')
	done
	local gmean
	gmean=$(awk -v g="$gsum" -v n=${#conns[@]} 'BEGIN { printf "%.2f", exp(g / n) }')
	# The two nginx rows compare ratios, not rates: give them as such.
	local v1=met v2=met
	awk -v r="$gmean" 'BEGIN { exit !(r >= 1.3) }' || { v1=missed; missed=$((missed + 1)); }
	awk -v r="$min" 'BEGIN { exit !(r >= 1.0) }' || { v2=missed; missed=$((missed + 1)); }
	[ $valid = 1 ] || { v1="invalid (a run failed, or was not accelerated)" v2=$v1; missed=$((missed + 1)); }
	rows+=("| (d) nginx+wrk 4 KiB, geometric mean over -c 1..256 | | | ${gmean}x | >= 1.3x | $v1 |")
	rows+=("| (d) nginx+wrk 4 KiB, lowest ratio at any -c | | | $(fmt "$min" 2)x | >= 1.0x | $v2 |")
	say "nginx+wrk: geometric mean ${gmean}x ($v1), lowest $(fmt "$min" 2)x ($v2)"
	nginx_table=("" "nginx + wrk keep-alive, 4 KiB file, requests/s (median of $rounds, ${d_wrk} s each):" ""
		"| -c | TCP | shunt | ratio |" "|---|---|---|---|" "${lines[@]}")
}

nginx_table=()
start=$SECONDS
say "$(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $rounds round(s)$([ $quick = 1 ] && echo ', quick')"
[ "$SHUNT_TCP_ONLY" = 0 ] || say "SHUNT_APPS_TCP=1: the shunt column is plain TCP too"
for b in iperf3 sockperf redis nginx; do
	wants $b && "bench_$b"
done

{
	echo "## TCP loopback vs shunt, real programs"
	echo
	echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r);"
	echo "median of $rounds alternating TCP/shunt rounds$([ $quick = 1 ] && echo ', --quick'); load at the end $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - start)) s."
	[ "$SHUNT_TCP_ONLY" = 0 ] || echo "**SHUNT_APPS_TCP=1: the shunt column ran over plain TCP; the ratios mean nothing.**"
	echo
	echo "| figure | TCP | shunt | shunt/TCP | target | verdict |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
	[ ${#nginx_table[@]} -eq 0 ] || printf '%s\n' "${nginx_table[@]}"
	echo
	echo "Per round:"
	echo
	for n in "${notes[@]}"; do echo "* $n"; done
} >"$report"
echo
cat "$report"
[ -z "$out" ] || cp "$report" "$out"
[ $check = 0 ] || [ $missed = 0 ]
