#!/usr/bin/env bash
# bench/sockmap_compare.sh - real programs over plain TCP loopback, over
# eBPF sockmap redirection (bench/sockmap.sh: what Cilium, Merbridge and
# istio-tcpip-bypass do for local TCP) and under shunt (`shunt run --`,
# server and client), side by side:
#
#   iperf3 -l 128K throughput                     Gbit/s, higher is better
#   sockperf ping-pong 64 B, median latency        us, lower is better
#   redis-benchmark GET and SET, -c 1 and -c 50   requests/s, higher is better
#
# Each mode (column) runs the same command lines, under its own command
# prefix: none for tcp, `bench/sockmap/in_cgroup CGROUP` for sockmap (server
# and client both join the cgroup the sock_ops program is attached to),
# `build/shunt run --` for shunt (outside that cgroup: plain TCP until the
# connection moves to shared memory).
# Each run starts its own server on a free port below 32768.  The modes
# alternate (tcp, sockmap, tcp, sockmap, ...) for ROUNDS rounds and each
# figure is the median of its rounds.  The table gives every mode's figure,
# its ratio to the first mode (tcp), and shunt's to sockmap's.
#
# Proof of the path taken: during each iperf3, sockperf and redis run, the
# kernel's TCP byte counters of the live connections on the server's port
# are read at 0.2 s, then every 0.5 s (ss -ti: bytes_received + bytes_acked).
# A mode declared "bypass" (sockmap, shunt) must keep them near zero (at
# most 64 KiB, or 1% of what iperf3 moved), else its figure is marked
# invalid; the values are listed.  (A shunt connection carries its first
# data calls over TCP before it moves: well under those limits.)
# For sockmap the BPF programs' own counters must also show that no more
# than 1% of the bytes took the TCP path (a peer not found in the map); for
# shunt the client's log must show a connection moved ("upgraded").
#
# Usage: bench/sockmap_compare.sh [--quick] [--rounds N] [--only LIST]
#                                 [--modes LIST] [--out FILE] [--tsv FILE]
#                                 [--logs DIR]
#   --quick      1 s runs, 2 rounds (about 40 s; default about 2 minutes)
#   --tiny       1 s runs and few redis requests, 1 round (bench/run.sh
#                --quick: it exercises the script, its figures are rough)
#   --rounds N   rounds per figure (default 3, --quick 2)
#   --only LIST  comma-separated subset of: iperf3,sockperf,redis
#   --modes LIST the columns, tcp first: a subset of tcp,sockmap,shunt
#                (default all three; shunt needs a build: make)
#   --out FILE   also write the Markdown report to FILE
#   --tsv FILE   also write the figures as TSV to FILE: figure, unit,
#                better (higher|lower), mode, median, valid (1|0), the
#                per-round values (for bench/run.sh)
#   --logs DIR   copy the shunt runs' logs (SHUNT_LOG=info, NAME.log for
#                each server and client) into DIR at the end
# Needs root (BPF), clang, libbpf-dev; iperf3, sockperf, redis-server,
# redis-benchmark, jq, ss.  SOCKMAP_BUILD: where the BPF object and loader
# are built (default build/sockmap); SHUNT_BUILD: the shunt build (default
# build/).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/apps_lib.sh
. "$here/../tests/apps_lib.sh"
# shellcheck source=bench/sockmap.sh
. "$here/sockmap.sh"

usage() {
	sed -n '/^# Usage:/,/^# Needs/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

quick=0 rounds='' only=iperf3,sockperf,redis out='' tsv_out='' logs_out='' modes=tcp,sockmap,shunt
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--tiny) quick=2 ;;
	--rounds) rounds=${2:?}; shift ;;
	--only) only=${2:?}; shift ;;
	--modes) modes=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--tsv) tsv_out=${2:?}; shift ;;
	--logs) logs_out=${2:?}; shift ;;
	-h | --help) usage ;;
	*) echo "sockmap_compare.sh: unknown option '$1'" >&2; usage ;;
	esac
	shift
done
if [ $quick = 2 ]; then
	rounds=${rounds:-1} d_iperf=1 d_sockperf=1 n_redis1=2000 n_redis50=5000
elif [ $quick = 1 ]; then
	rounds=${rounds:-2} d_iperf=1 d_sockperf=1 n_redis1=10000 n_redis50=50000
else
	rounds=${rounds:-3} d_iperf=3 d_sockperf=3 n_redis1=30000 n_redis50=150000
fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
wants() { [[ ,$only, == *",$1,"* ]]; }
mode_wanted() { [[ ,$modes, == *",$1,"* ]]; }
[[ ,$modes, == ,tcp,* ]] || { echo "sockmap_compare.sh: --modes must start with tcp" >&2; usage; }
if mode_wanted shunt && [ ! -f "$SHUNT_PRELOAD" ]; then
	echo "sockmap_compare.sh: no $SHUNT_PRELOAD (make), or leave shunt out of --modes" >&2
	exit 1
fi

# apps_init without its preload checks: the modes' prefixes say what runs
# how (start_server and run_client add no LD_PRELOAD with APPS_TCP=1).
APPS_NAME=sockmap-compare
APPS_TCP=1
need timeout ss jq
T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-smcmp-XXXXXX")
trap 'apps_exit $?' EXIT
trap 'exit 130' INT TERM
# What apps_init gives a shunt run (for a shunt column): an empty config, so
# that a host's shunt.conf cannot change the result, and a rendezvous dir.
: >"$T/shunt.conf"
export SHUNT_CONFIG=$T/shunt.conf
if [ -z "${SHUNT_DIR:-}" ]; then
	SHUNT_DIR=$(mktemp -d /tmp/shunt-XXXXXX)
	APPS_CLEANUP+=("rm -rf '$SHUNT_DIR'")
fi
export SHUNT_DIR

if mode_wanted sockmap; then
	sockmap_start || { echo "sockmap_compare.sh: no sockmap here: ${SOCKMAP_REASON:-sockmap_start failed}" >&2; exit 1; }
fi

# --- Modes: the columns ------------------------------------------------------
# add_mode NAME KIND [PREFIX...]: a column.  Its servers and clients run as
# PREFIX CMD...  KIND is "tcp" (the kernel's TCP carries the bytes: the
# reference, the first mode) or "bypass" (the kernel's TCP counters of its
# connections must stay near zero, else its figures are invalid).  A mode may
# define mode_before_NAME / mode_after_NAME WHAT (called around each client
# run; mode_after_NAME returning non-zero invalidates the figure).
MODES=()
declare -A MODE_PRE=() MODE_KIND=()
add_mode() {
	local name=$1 kind=$2
	shift 2
	MODES+=("$name")
	MODE_KIND[$name]=$kind
	MODE_PRE[$name]=
	[ $# -eq 0 ] || MODE_PRE[$name]=$(printf '%q ' "$@")
}
add_mode tcp tcp
if mode_wanted sockmap; then add_mode sockmap bypass "${SOCKMAP_PREFIX[@]}"; fi
if mode_wanted shunt; then add_mode shunt bypass "$SHUNT_BIN" run --; fi

# prefix MODE: the mode's command prefix in the array P.
prefix() { eval "P=(${MODE_PRE[$1]})"; }

# sockmap: the BPF counters must show every byte redirected (a message whose
# peer was not in the map yet went over TCP).
sm_before=
mode_before_sockmap() { sm_before=$(sockmap_stats); }
mode_after_sockmap() {
	local now rb nb
	now=$(sockmap_stats)
	rb=$(($(sockmap_stat redirected_bytes "$now") - $(sockmap_stat redirected_bytes "$sm_before")))
	nb=$(($(sockmap_stat no_peer_bytes "$now") - $(sockmap_stat no_peer_bytes "$sm_before")))
	[ "$nb" -eq 0 ] || notes+=("$1: $nb bytes not redirected (no peer in the map), $rb redirected")
	[ "$nb" -le $((rb / 100)) ]
}
# shunt: the client's log (start_server and run_client log every run to
# $T/NAME.log with SHUNT_LOG=info) must show a connection moved.
mode_after_shunt() {
	[ "$(count_upgraded "$T/$LAST_CLIENT.log")" -gt 0 ] && return 0
	notes+=("$1: the client logged no connection upgraded")
	return 1
}
hook() {
	local f=mode_$1_$2
	shift 2
	if declare -F "$f" >/dev/null; then "$f" "$@"; fi
}

notes=()  # lines printed under it
declare -A VAL=() VALID=()   # VAL[figure|mode]: per-round values; VALID[figure|mode]: 0/1

# record FIG MODE VALUE: one round's figure ("" or 0: failed, invalid).
record() {
	VAL[$1|$2]="${VAL[$1|$2]:-} ${3:-0}"
	[ -n "${VALID[$1|$2]:-}" ] || VALID[$1|$2]=1
	if [ -z "$3" ] || [ "$3" = 0 ]; then VALID[$1|$2]=0; fi
}
invalid() { VALID[$1|$2]=0; }

# broken WHAT FILE STATUS: a run failed or timed out; the comparison goes on.
broken() {
	notes+=("$1 FAILED, status $3$([ "$3" = 124 ] && echo ' (timed out)'): $(tail -n 3 "$2" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ' ' | cut -c1-240)")
	say "$1 FAILED (see the notes)"
}

# probe PORT: "SOCKETS BYTES" for the established sockets whose local port
# is PORT: how many, and what the kernel's TCP carried on them.
probe() {
	echo "$(ss -Htn state established "( sport = :$1 )" | grep -c . || true) $(kernel_tcp_bytes "$1")"
}

# client_probed NAME SECS PORT OUT CMD...: run_client in the background
# (output to OUT), reading the kernel's counters of PORT (probe) at 0.2 s and
# then every 0.5 s while it runs, and wait for it.  Sets PROBE to the sample
# with the most bytes ("SOCKETS BYTES"; a connection's counters only grow, so
# this is about its total) and returns the client's status.  (Sampled all
# along because the programs do not start at once: sockperf warms up for
# 2 s; and early because a fast run may be over in half a second.)
client_probed() {
	local name=$1 secs=$2 port=$3 outf=$4 pid rc=0 n b
	shift 4
	LAST_CLIENT=$name
	run_client "$name" "$secs" "$@" >"$outf" 2>&1 &
	pid=$!
	PROBE="0 0"
	sleep 0.2
	while kill -0 "$pid" 2>/dev/null; do
		read -r n b <<<"$(probe "$port")"
		[ "$n" -eq 0 ] || [ "$b" -lt "${PROBE#* }" ] || PROBE="$n $b"
		sleep 0.5
	done
	wait "$pid" || rc=$?
	return $rc
}

# bypass_check FIG MODE WHAT LIMIT [SAME]: for a bypass mode, invalidate FIG
# if the probe saw more than LIMIT (+ 8 KiB per socket) kernel TCP bytes on
# live sockets.  The
# probe is listed under WHAT, unless SAME (a second figure of the same run).
bypass_check() {
	local n b
	read -r n b <<<"$PROBE"
	[ -n "${5:-}" ] || probes+=("$3: $b B on $n socket(s)")
	[ "${MODE_KIND[$2]}" = bypass ] || return 0
	# LIMIT, plus 8 KiB per socket: a shunt connection's first data calls
	# (upgrade-calls, 16, and its meeting's) go over TCP before it moves.
	local limit=$(($4 + 8192 * n))
	if [ "$n" -gt 0 ] && [ "$b" -gt "$limit" ]; then
		notes+=("$3: the kernel's TCP carried $b bytes on $n live socket(s) (limit $limit): not bypassed, figure invalid")
		invalid "$1" "$2"
	fi
}
probes=()

# --- iperf3 -----------------------------------------------------------------
bench_iperf3() {
	need iperf3
	local r m port pid v f recvd fig="iperf3 -l 128K, ${d_iperf} s"
	FIGS+=("$fig") UNIT[$fig]="Gbit/s" BETTER[$fig]=higher
	for ((r = 1; r <= rounds; r++)); do
		for m in "${MODES[@]}"; do
			prefix "$m"
			port=$(free_port)
			start_server "iperf3-$m-$r-server" "${P[@]}" iperf3 -s -p "$port" -B 127.0.0.1
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			f=$T/iperf3-$m-$r.json
			hook before "$m"
			client_probed "iperf3-$m-$r" $((d_iperf + 15)) "$port" "$f" \
				"${P[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$d_iperf" -l 128K -J ||
				broken "iperf3 ($m, round $r)" "$f" $?
			hook after "$m" "iperf3 ($m, round $r)" || invalid "$fig" "$m"
			stop_server "$pid"
			v=$(jq -r '.end.sum_received.bits_per_second / 1e7 | round / 100' "$f" 2>/dev/null) || v=0
			recvd=$(jq -r '.end.sum_received.bytes' "$f" 2>/dev/null) || recvd=0
			record "$fig" "$m" "$v"
			bypass_check "$fig" "$m" "iperf3 $m r$r" "$(max 65536 $((recvd / 100)))"
		done
	done
}

# --- sockperf ---------------------------------------------------------------
bench_sockperf() {
	need sockperf
	local r m port pid v f fig="sockperf ping-pong 64 B, median, ${d_sockperf} s"
	FIGS+=("$fig") UNIT[$fig]="us" BETTER[$fig]=lower
	for ((r = 1; r <= rounds; r++)); do
		for m in "${MODES[@]}"; do
			prefix "$m"
			port=$(free_port)
			start_server "sockperf-$m-$r-server" "${P[@]}" sockperf server --tcp -i 127.0.0.1 -p "$port"
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			f=$T/sockperf-$m-$r.out
			hook before "$m"
			client_probed "sockperf-$m-$r" $((d_sockperf + 20)) "$port" "$f" \
				"${P[@]}" sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" -t "$d_sockperf" \
				-m 64 --mps 10000000 || broken "sockperf ($m, round $r)" "$f" $?
			hook after "$m" "sockperf ($m, round $r)" || invalid "$fig" "$m"
			stop_server "$pid"
			v=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | awk '/percentile 50.000 =/ { print $NF; exit }')
			record "$fig" "$m" "$v"
			bypass_check "$fig" "$m" "sockperf $m r$r" 65536
		done
	done
}

# --- redis-benchmark ----------------------------------------------------------
bench_redis() {
	need redis-server redis-benchmark
	local r m c t port pid f v n dir
	for c in 1 50; do
		for t in GET SET; do
			FIGS+=("redis-benchmark $t -c $c")
			UNIT["redis-benchmark $t -c $c"]="req/s" BETTER["redis-benchmark $t -c $c"]=higher
		done
	done
	for ((r = 1; r <= rounds; r++)); do
		for m in "${MODES[@]}"; do
			prefix "$m"
			port=$(free_port)
			dir=$T/redis-$m-$r
			mkdir -p "$dir"
			start_server "redis-$m-$r-server" "${P[@]}" redis-server --port "$port" --bind 127.0.0.1 \
				--save "" --appendonly no --daemonize no --dir "$dir" \
				--logfile "$dir/redis.out" --protected-mode no
			pid=$LAST_PID
			wait_listen "$port" "$pid"
			for c in 1 50; do
				n=$n_redis1
				[ "$c" = 1 ] || n=$n_redis50
				f=$T/redis-$m-$r-c$c.out
				hook before "$m"
				client_probed "redis-$m-$r-c$c" 120 "$port" "$f" \
					"${P[@]}" redis-benchmark -p "$port" -t set,get -n "$n" -c "$c" --csv ||
					broken "redis-benchmark ($m, -c $c, round $r)" "$f" $?
				local ok=1
				hook after "$m" "redis -c $c ($m, round $r)" || ok=0
				for t in GET SET; do
					v=$(awk -F'"' -v t="$t" '$2 == t { print $4 }' "$f")
					record "redis-benchmark $t -c $c" "$m" "$v"
					[ $ok = 1 ] || invalid "redis-benchmark $t -c $c" "$m"
					bypass_check "redis-benchmark $t -c $c" "$m" "redis -c $c $m r$r" 65536 \
						"$([ $t = GET ] || echo same)"
				done
			done
			stop_server "$pid"
		done
	done
}

# ratio3 A B: A/B, 2 decimals, 3 below 0.1 (latency ratios can be that small).
ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "nan") printf (a / b < 0.1 ? "%.3f" : "%.2f"), a / b; else print "nan" }'; }
max() { if [ "$1" -gt "$2" ]; then echo "$1"; else echo "$2"; fi; }

FIGS=()
declare -A UNIT=() BETTER=()
start=$SECONDS
say "$(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $rounds round(s)$([ $quick = 1 ] && echo ', quick'), modes: ${MODES[*]}"
for b in iperf3 sockperf redis; do
	if wants $b; then "bench_$b"; fi
done
! mode_wanted sockmap || say "sockmap counters: $(sockmap_stats)"

# --- Report -------------------------------------------------------------------
report=$T/report.md
: >"$T/figures.tsv"
{
	echo "## TCP loopback$(printf ' vs %s' "${MODES[@]:1}" | sed 's/vs sockmap/vs eBPF sockmap/'), real programs"
	echo
	echo "$(date -u +%Y-%m-%d), $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r);"
	echo "median of $rounds alternating rounds (${MODES[*]})$([ $quick = 1 ] && echo ', --quick')$([ $quick = 2 ] && echo ', --tiny'); load at the end $(cut -d' ' -f1-3 /proc/loadavg); $((SECONDS - start)) s."
	echo
	hdr="| figure | unit |" sep="|---|---|"
	for m in "${MODES[@]}"; do hdr+=" $m |" sep+="---|"; done
	for m in "${MODES[@]:1}"; do hdr+=" $m/${MODES[0]} |" sep+="---|"; done
	both=0
	if mode_wanted sockmap && mode_wanted shunt; then both=1 hdr+=" shunt/sockmap |" sep+="---|"; fi
	echo "$hdr"
	echo "$sep"
	for fig in "${FIGS[@]}"; do
		line="| $fig | ${UNIT[$fig]} ($([ "${BETTER[$fig]}" = lower ] && echo 'lower' || echo 'higher') is better) |"
		declare -A med=()
		for m in "${MODES[@]}"; do
			# shellcheck disable=SC2086 # a word list
			med[$m]=$(median ${VAL[$fig|$m]:-})
			d=2
			[ "${UNIT[$fig]}" != "req/s" ] || d=0
			line+=" $(fmt "${med[$m]}" $d)$([ "${VALID[$fig|$m]:-0}" = 1 ] || echo ' (invalid)') |"
		done
		for m in "${MODES[@]:1}"; do
			line+=" $(ratio3 "${med[$m]}" "${med[${MODES[0]}]}")x |"
		done
		[ $both = 0 ] || line+=" $(ratio3 "${med[shunt]}" "${med[sockmap]}")x |"
		echo "$line"
		if [ -n "$tsv_out" ]; then
			for m in "${MODES[@]}"; do
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fig" "${UNIT[$fig]}" "${BETTER[$fig]}" "$m" "${med[$m]}" \
					"${VALID[$fig|$m]:-0}" "$(echo ${VAL[$fig|$m]:-})" >>"$T/figures.tsv"
			done
		fi
		unset med
	done
	echo
	echo "Per round (in order):"
	echo
	for fig in "${FIGS[@]}"; do
		line="* $fig:"
		for m in "${MODES[@]}"; do line+=" $m${VAL[$fig|$m]:-};"; done
		echo "${line%;}"
	done
	echo "* kernel TCP bytes on the server port's live sockets (the largest of the samples taken during each run): $(printf '%s; ' "${probes[@]}" | sed 's/; $//')"
	! mode_wanted sockmap || echo "* sockmap BPF counters at the end: $(sockmap_stats | sed 's/^stats //')"
	for n in "${notes[@]}"; do echo "* $n"; done
	echo
	echo "Commands (PREFIX: the mode's prefix, empty for tcp; sockmap: \`bench/sockmap/in_cgroup /sys/fs/cgroup/.../shunt-sockmap-PID\`; shunt: \`build/shunt run --\`):"
	echo
	echo '```'
	wants iperf3 && echo "PREFIX iperf3 -s -p PORT -B 127.0.0.1
PREFIX iperf3 -c 127.0.0.1 -p PORT -t $d_iperf -l 128K -J"
	wants sockperf && echo "PREFIX sockperf server --tcp -i 127.0.0.1 -p PORT
PREFIX sockperf ping-pong --tcp -i 127.0.0.1 -p PORT -t $d_sockperf -m 64 --mps 10000000"
	wants redis && echo "PREFIX redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no --dir DIR --logfile DIR/redis.out --protected-mode no
PREFIX redis-benchmark -p PORT -t set,get -n $n_redis1 -c 1 --csv
PREFIX redis-benchmark -p PORT -t set,get -n $n_redis50 -c 50 --csv"
	echo '```'
} >"$report"
echo
cat "$report"
[ -z "$out" ] || cp "$report" "$out"
[ -z "$tsv_out" ] || cp "$T/figures.tsv" "$tsv_out"
if [ -n "$logs_out" ]; then
	mkdir -p "$logs_out"
	for f in "$T"/*-shunt-*.log; do [ ! -e "$f" ] || cp "$f" "$logs_out"/; done
fi
