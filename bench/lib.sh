# shellcheck shell=bash
# bench/lib.sh - helpers for the sections of bench/run.sh.  Sourced after
# tests/apps_lib.sh (servers, clients, ports, logs, median/ratio/fmt).
#
# Every section function runs in a subshell: a failure ends that section
# only (the report says so) and its servers are killed by pid.  A section
# writes its Markdown to $MD (one file per section), its data to $DATA,
# its charts to $OUT, and its targets to $T/targets.tsv.

# Set by run.sh: OUT DATA QUICK SEC MD TB (tcpbench) SHUNT_BIN.

# mode tcp|shunt: whether the next bstart/bclient run under the preload
# library (same command line either way).
# mode tcp|shunt: the next run's mode.  Each run starts with no TIME_WAIT
# socket left by the one before (ss -K, as root): a short-connection run
# leaves tens of thousands, and every connect() of the next run then pays
# for searching them, so whichever mode ran second was measured slower (on
# this machine nginx with `Connection: close` took about 7 us more CPU per
# request, of about 37, when it ran second).
mode() {
	if [ "$1" = tcp ]; then APPS_TCP=1; else APPS_TCP=0; fi
	[ "$(id -u)" != 0 ] || ss -K -tan state time-wait >/dev/null 2>&1 || true
}

now_s() { date +%s.%N; }
# at_in SECS: an absolute start time SECS from now (tcpbench AT argument).
at_in() { awk -v t="$(now_s)" -v d="$1" 'BEGIN { printf "%.3f", t + d }'; }
calc() { awk "BEGIN { print $* }"; }

md() { printf '%s\n' "$@" >>"$MD"; }

# note TEXT: a line in the report's notes (failures, invalid figures) and
# on the terminal.
note() {
	printf '* %s: %s\n' "$SEC" "$*" >>"$T/notes.md"
	say "$SEC: $*" >&2
}

# --- Commands, recorded for the report ------------------------------------

# cmd_record CMD...: remember the command line, with this build's path as
# build/, the temp dir as $TMP and the port ($PORT_NOW) as PORT.
cmd_record() {
	local s="$*"
	s=${s//$SHUNT_BUILD/build}
	s=${s//$T/\$TMP}
	# A private rendezvous directory (section 6's PostgreSQL user's).
	s=$(printf '%s\n' "$s" | sed -E 's#SHUNT_DIR=/tmp/shunt-[A-Za-z0-9]+#SHUNT_DIR=$PGDIR#g')
	if [ -n "${PORT_NOW:-}" ]; then
		s=$(printf '%s\n' "$s" | sed -E "s/(^|[^0-9])$PORT_NOW([^0-9]|\$)/\\1PORT\\2/g; s/(^|[^0-9])$PORT_NOW([^0-9]|\$)/\\1PORT\\2/g")
	fi
	# A start time (seconds since the epoch) as AT, a swept ring size as
	# SIZE, and per-run names in the temp dir (x-tcp-2) as x-MODE-ROUND, so
	# that the same command line is listed once.
	s=$(printf '%s\n' "$s" | sed -E 's/(^| )[0-9]{10}\.[0-9]+( |$)/\1AT\2/g; s/SHUNT_RING_SIZE=[0-9]+[kmg]?/SHUNT_RING_SIZE=SIZE/g; s#(\$TMP/[a-z0-9]+)-(tcp|shunt)-[0-9]+#\1-MODE-ROUND#g; s#(\$TMP/[a-z0-9]+)-(tcp|shunt)([^a-z0-9-]|$)#\1-MODE\3#g')
	printf '%s\n' "$s" >>"$T/cmds-$SEC"
}

# md_commands [INTRO]: the distinct command lines recorded since the last
# call, in order, under INTRO (default: the TCP/shunt pairing).
md_commands() {
	[ -s "$T/cmds-$SEC" ] || return 0
	local intro="Commands (each run over TCP, and again with \`LD_PRELOAD=build/libshunt-preload.so\` in its environment for shunt; PORT is a free port, \$TMP the temp dir of the run):"
	md "" "${1:-$intro}" "" '```'
	awk '!seen[$0]++' "$T/cmds-$SEC" >>"$MD"
	md '```'
	: >"$T/cmds-$SEC"
}

# bstart NAME CMD...: a server (or any background program) as start_server.
bstart() {
	local name=$1
	shift
	cmd_record "$@"
	start_server "$name" "$@"
}

# bclient NAME SECS CMD...: a foreground client as run_client.
bclient() {
	local name=$1 secs=$2
	shift 2
	cmd_record "$@"
	run_client "$name" "$secs" "$@"
}

# blisten PORT PID: wait until PID listens on PORT; non-zero (not an exit)
# if it died or took more than 10 s.
blisten() {
	(wait_listen "$1" "$2" 10) 2>>"$T/errors.out"
}

# upgraded NAME...: "upgraded" lines in the shim logs of these runs.
upgraded() {
	local f=() n
	for n in "$@"; do f+=("$T/$n.log"); done
	count_upgraded "${f[@]}"
}

# accel MIN NAME...: 1 if the runs' logs show at least MIN upgraded
# connections (always 1 in TCP mode), else 0, with a note.  A connection
# moves only once both ends have stepped through their meeting on their own
# data calls (upgrade-calls, 16, then steps spaced further apart), so a few
# of many busy connections can stay on TCP ("nopeer": the peer was busy
# elsewhere for all 24 steps).  With at least 75% of them moved the figure
# is still mostly shunt's: it counts, with a note.
accel() {
	local min=$1 n
	shift
	[ "$APPS_TCP" = 0 ] || { echo 1; return; }
	n=$(upgraded "$@")
	if [ "$n" -ge "$min" ]; then
		echo 1
	elif [ $((n * 100)) -ge $((min * 75)) ]; then
		note "partly accelerated: $* logged $n of $min connections upgraded (the rest stayed on TCP); figure kept"
		echo 1
	else
		note "not accelerated: $* logged $n upgraded connection(s), expected >= $min; figure marked invalid"
		echo 0
	fi
}

# --- Results ---------------------------------------------------------------

# tsv FILE FIELD...: one tab-separated line appended to $DATA/FILE.
tsv() {
	local f=$DATA/$1
	shift
	local IFS=$'\t'
	printf '%s\n' "$*" >>"$f"
}

# tsv_head FILE FIELD...: start $DATA/FILE with a '#' header line.
tsv_head() {
	local f=$DATA/$1
	shift
	local IFS=$'\t'
	printf '# %s\n' "$*" >"$f"
}


# verdict OP VALUE THRESHOLD [VALID]: met / missed / invalid / not measured.
verdict() {
	local op=$1 v=$2 t=$3 valid=${4:-1}
	if [ "$v" = nan ] || [ -z "$v" ]; then
		echo "not measured"
	elif [ "$valid" != 1 ]; then
		echo "invalid"
	elif awk -v v="$v" -v t="$t" -v op="$op" 'BEGIN { exit !(op == ">=" ? v >= t : (op == "<=" ? v <= t : v < t)) }'; then
		echo met
	else
		echo missed
	fi
}

# target ID MEASURED VERDICT: a row of the Targets table (run.sh lists the
# targets; a target no section reported is "not measured").
target() {
	printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$T/targets.tsv"
	say "target $1: $2 ($3)"
}

# plot NAME TITLE XLABEL YLABEL TSV [AWK-ARGS...]: $OUT/NAME.svg from
# $DATA/TSV, shown in the section.
plot() {
	local name=$1 title=$2 xl=$3 yl=$4 data=$5
	shift 5
	awk -f "$BENCH_DIR/plot.awk" -v title="$title" -v xlabel="$xl" -v ylabel="$yl" "$@" \
		"$DATA/$data" >"$OUT/$name.svg"
	md "" "![$title]($name.svg)"
}

# valid_mark VALID: "" or " (invalid)" after a figure.
valid_mark() { [ "$1" = 1 ] && echo "" || echo " (invalid)"; }

# pick FILE KEY: the value after KEY in a "key value key value" line.
pick() {
	awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' "$1" 2>/dev/null
}

# --- tcpbench pairs ------------------------------------------------------

# pairs_run TAG N SECS [ENV...]: N tcpbench respond servers and N clients,
# a stream of SECS seconds from all at once, then SECS seconds of 64 B
# ping-pong from all at once; every process under the current mode, with
# ENV (VAR=VALUE words) in its environment.  Outputs:
# $T/TAG-p<i>-{stream,pingpong,srv}.out, logs $T/TAG-p<i>-*.log.
# Sets PAIRS_OK (pairs whose every run worked and, under shunt, was upgraded).
pairs_run() {
	local tag=$1 n=$2 secs=$3 i at port pids=() srv=() ports=() rc=0 ok
	shift 3
	local envs=(env "$@")
	[ $# -gt 0 ] || envs=()
	PAIRS_OK=0
	for ((i = 1; i <= n; i++)); do
		port=$(free_port)
		PORT_NOW=$port
		bstart "$tag-p$i-srv" "${envs[@]}" "$TB" respond "$port"
		srv+=("$LAST_PID")
		ports+=("$port")
	done
	for ((i = 1; i <= n; i++)); do
		blisten "${ports[i - 1]}" "${srv[i - 1]}" || { note "$tag: server $i did not listen"; rc=1; }
	done
	# All clients connect first, then start together at AT.
	at=$(at_in "$(calc "0.3 + 0.03 * $n")")
	for ((i = 1; i <= n; i++)); do
		PORT_NOW=${ports[i - 1]}
		bclient "$tag-p$i-stream" "$(calc "int($secs + 20 + $n)")" "${envs[@]}" "$TB" stream \
			"${ports[i - 1]}" "$secs" 131072 "$at" >"$T/$tag-p$i-stream.out" 2>&1 &
		pids+=($!)
	done
	for ((i = 1; i <= n; i++)); do wait "${pids[i - 1]}" || { note "$tag: stream client $i failed ($?): $(tail -n 2 "$T/$tag-p$i-stream.out" | tr '\n' ' ')"; rc=1; }; done
	pids=()
	at=$(at_in "$(calc "0.3 + 0.03 * $n")")
	for ((i = 1; i <= n; i++)); do
		PORT_NOW=${ports[i - 1]}
		bclient "$tag-p$i-pingpong" "$(calc "int($secs + 20 + $n)")" "${envs[@]}" "$TB" pingpong \
			"${ports[i - 1]}" "$secs" 64 "$at" >"$T/$tag-p$i-pingpong.out" 2>&1 &
		pids+=($!)
	done
	for ((i = 1; i <= n; i++)); do wait "${pids[i - 1]}" || { note "$tag: ping-pong client $i failed ($?): $(tail -n 2 "$T/$tag-p$i-pingpong.out" | tr '\n' ' ')"; rc=1; }; done
	for ((i = 1; i <= n; i++)); do
		PORT_NOW=${ports[i - 1]}
		run_client "$tag-p$i-quit" 10 "${envs[@]}" "$TB" quit "${ports[i - 1]}" >/dev/null 2>&1 || true
	done
	for ((i = 1; i <= n; i++)); do
		# The server prints its CPU time per connection, then exits.
		local k
		for ((k = 0; k < 50; k++)); do kill -0 "${srv[i - 1]}" 2>/dev/null || break; sleep 0.1; done
		stop_server "${srv[i - 1]}"
		ok=1
		grep -q '^MB/s' "$T/$tag-p$i-stream.out" || ok=0
		grep -q '^rtt_us' "$T/$tag-p$i-pingpong.out" || ok=0
		if [ "$APPS_TCP" = 0 ] && { [ "$(upgraded "$tag-p$i-stream")" -lt 1 ] || [ "$(upgraded "$tag-p$i-pingpong")" -lt 1 ]; }; then
			ok=0
		fi
		PAIRS_OK=$((PAIRS_OK + ok))
	done
	PORT_NOW=
	[ "$PAIRS_OK" = "$n" ] || note "$tag: only $PAIRS_OK of $n pairs ran and (under shunt) were upgraded"
	return $rc
}

# pairs_sum TAG N: "MBPS RTT CPU_STREAM BYTES CPU_PP MSGS": the pairs' summed
# throughput, the median of their median round trips, and both ends' CPU
# seconds with the bytes and messages they moved.
pairs_sum() {
	local tag=$1 n=$2 i mbs=() rtts=() cs=0 cp=0 b=0 m=0 v
	for ((i = 1; i <= n; i++)); do
		v=$(pick "$T/$tag-p$i-stream.out" MB/s)
		[ -z "$v" ] || mbs+=("$v")
		v=$(pick "$T/$tag-p$i-pingpong.out" rtt_us)
		[ -z "$v" ] || rtts+=("$v")
		cs=$(calc "$cs + 0$(pick "$T/$tag-p$i-stream.out" cpu_s) + 0$(awk '/^stream/ { print $5 }' "$T/$tag-p$i-srv.out")")
		cp=$(calc "$cp + 0$(pick "$T/$tag-p$i-pingpong.out" cpu_s) + 0$(awk '/^pingpong/ { print $5 }' "$T/$tag-p$i-srv.out")")
		b=$(calc "$b + 0$(pick "$T/$tag-p$i-stream.out" bytes)")
		m=$(calc "$m + 0$(pick "$T/$tag-p$i-pingpong.out" msgs)")
	done
	local sum=nan
	[ ${#mbs[@]} -eq 0 ] || sum=$(printf '%s\n' "${mbs[@]}" | awk '{ s += $1 } END { printf "%.1f", s }')
	[ ${#mbs[@]} = "$n" ] || sum=nan
	echo "$sum $(median "${rtts[@]}") $cs $b $cp $m"
}

# fmt1 V...: the values, comma-separated, 3 significant digits ("-" if none).
fmt1() { [ $# -eq 0 ] && echo "-" || printf '%s\n' "$@" | awk '{ v = $1 + 0; printf "%s" (v >= 1000 || v <= -1000 ? "%.0f" : "%.3g"), (NR > 1 ? ", " : ""), v } END { print "" }'; }

# order ROUND: "tcp shunt" on odd rounds, "shunt tcp" on even ones, so that
# neither mode always runs first.
order() { [ $(($1 % 2)) = 1 ] && echo "tcp shunt" || echo "shunt tcp"; }

# cmds_stash NAME / cmds_unstash NAME: set the commands recorded so far
# aside, to list them later under their own heading.
cmds_stash() { mv "$T/cmds-$SEC" "$T/cmds-$SEC-$1" 2>/dev/null || : >"$T/cmds-$SEC-$1"; }
cmds_unstash() { mv "$T/cmds-$SEC-$1" "$T/cmds-$SEC"; }

# --- The headline table ----------------------------------------------------

# moved_in GLOB...: what the library logged of the connections in the
# shunt runs' logs matching $T/GLOB.log: "N moved, M short, K nopeer"
# (upgraded lines, and 'stays on TCP: short' / 'nopeer'), or "no log".
moved_in() {
	local logs=() g x
	for g in "$@"; do
		# shellcheck disable=SC2206 # a glob
		for x in $T/$g.log; do [ ! -e "$x" ] || logs+=("$x"); done
	done
	[ ${#logs[@]} -gt 0 ] || { echo "no log"; return; }
	echo "$(count_upgraded "${logs[@]}") moved, $(count_stays short "${logs[@]}") short, $(count_stays nopeer "${logs[@]}") nopeer"
}

# headline LABEL UNIT TCP SHUNT RATIO VALID MOVED: a row of the report's
# first table (every workload TCP against shunt, one run) and a line in the
# section saying what the library logged of its connections.
headline() {
	local label=$1 unit=$2 tv=$3 sv=$4 r=$5 valid=$6 moved=$7
	local mark=""
	[ "$valid" = 1 ] || mark=" (invalid)"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$unit" "$(fmt1 "$tv")" "$(fmt1 "$sv")" "${r}x$mark" "$moved" >>"$T/headline.tsv"
	md "" "_$label: shunt/TCP ${r}x$mark; connections under shunt, from the library's logs: ${moved}._"
}
