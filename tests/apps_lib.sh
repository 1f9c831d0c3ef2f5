# shellcheck shell=bash
# tests/apps_lib.sh - helpers shared by the tests/t_apps_*.sh script tests.
#
# A t_apps_* test runs real programs (iperf3, redis, nginx, ...) with both
# ends under the preload library and checks that (1) the data arrived intact
# and (2) the connection really moved to shared memory.  Sourced, not run.
#
# Exit status of a test: 0 pass, 1 fail, 77 skip (a missing program or a
# missing preload library; tests/run.sh counts a skip as a failure under CI).
#
# Environment:
#   SHUNT_BUILD      the build directory (default: build/ of this checkout)
#   SHUNT_DIR        rendezvous directory (default: a fresh one per test)
#   SHUNT_APPS_TCP=1 run everything over plain TCP (no LD_PRELOAD) and do not
#                    check acceleration: for developing the tests, and to see
#                    that the data checks hold without the shim
#   SHUNT_APPS_KEEP=1  keep the temp dir (logs, outputs) of a failed test
#
# Conventions: every background process is started by start_server (which
# records its pid) and is killed, with its descendants, by pid at exit;
# every foreground client runs under `timeout` (run_client); all files live
# in $T, removed at exit.

set -euo pipefail
# nginx lives in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

APPS_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHUNT_BUILD=${SHUNT_BUILD:-$APPS_SRC/build}
SHUNT_BIN=$SHUNT_BUILD/shunt
SHUNT_PRELOAD=$SHUNT_BUILD/libshunt-preload.so
APPS_TCP=${SHUNT_APPS_TCP:-0}

T=                  # this test's temp dir
APPS_NAME=          # this test's name, for messages
APPS_PIDS=()        # background processes to kill at exit
APPS_CLEANUP=()     # extra cleanup commands (eval'd at exit, in reverse order)
LAST_PID=           # pid of the last start_server

say() { printf '%s: %s\n' "$APPS_NAME" "$*"; }

# skip REASON: exit 77; tests/run.sh shows the text after "skip: ".
skip() {
	echo "skip: $*"
	exit 77
}

# fail MSG: show the logs that explain it, exit 1.  On stderr, so that a
# failure inside $(...) is still seen.
fail() {
	{
		echo "FAIL: $APPS_NAME: $*"
		apps_dump_logs
		# Again, last: the runner shows a failure's last lines.
		echo "FAIL: $APPS_NAME: $*"
	} >&2
	exit 1
}

apps_dump_logs() {
	[ -n "$T" ] && [ -d "$T" ] || return 0
	local f
	for f in "$T"/*.log "$T"/*.out "$T"/*.err; do
		[ -s "$f" ] || continue
		echo "--- ${f##*/} (last 15 lines)"
		tail -n 15 "$f" | cut -c1-300
	done
}

# need PROG...: skip unless every program is installed.
need() {
	local p
	for p in "$@"; do
		command -v "$p" >/dev/null 2>&1 || skip "$p is not installed"
	done
}

# apps_init NAME: temp dir, exit trap, rendezvous dir, and a check that the
# preload library exists (unless SHUNT_APPS_TCP=1).
apps_init() {
	APPS_NAME=$1
	need timeout ss sha256sum
	T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-apps-XXXXXX")
	T=$(cd "$T" && pwd) # SHUNT_LOG_FILE must be absolute
	# The tests run as whatever user; servers that drop privileges (nginx
	# workers) must still read these files.
	chmod 755 "$T"
	trap 'apps_exit $?' EXIT
	trap 'exit 130' INT TERM
	# An empty config file, so that a host's ~/.config/shunt/shunt.conf or
	# /etc/shunt.conf (bypass rules, a log setting) cannot change the result.
	: >"$T/shunt.conf"
	export SHUNT_CONFIG=$T/shunt.conf
	if [ -z "${SHUNT_DIR:-}" ]; then
		# Short: rendezvous socket paths must fit in sun_path.
		SHUNT_DIR=$(mktemp -d /tmp/shunt-XXXXXX)
		APPS_CLEANUP+=("rm -rf '$SHUNT_DIR'")
	fi
	export SHUNT_DIR
	if [ "$APPS_TCP" = 1 ]; then
		say "SHUNT_APPS_TCP=1: plain TCP, acceleration is not checked"
	elif [ ! -f "$SHUNT_PRELOAD" ]; then
		skip "no $SHUNT_PRELOAD (build it with make, or set SHUNT_APPS_TCP=1)"
	fi
}

apps_exit() {
	local rc=$1 i
	trap - EXIT INT TERM
	set +e
	kill_pids "${APPS_PIDS[@]}"
	for ((i = ${#APPS_CLEANUP[@]} - 1; i >= 0; i--)); do
		eval "${APPS_CLEANUP[i]}" >/dev/null 2>&1
	done
	if [ -n "$T" ] && [ -d "$T" ]; then
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ "${SHUNT_APPS_KEEP:-0}" = 1 ]; then
			echo "kept $T"
		else
			rm -rf "$T"
		fi
	fi
	exit "$rc"
}

# descendants PID: the pids of PID's children, grandchildren, ... (servers
# that fork: nginx workers, socat's per-connection children).
descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}

# kill_pids PID...: TERM each and its descendants, KILL what is left after
# 3 s.  Only pids this test started (and their children) are ever passed.
kill_pids() {
	local all=() p i
	for p in "$@"; do
		kill -0 "$p" 2>/dev/null || continue
		all+=("$p")
		# Collected before the TERM: once the parent dies they are
		# reparented and could no longer be found.
		for i in $(descendants "$p"); do all+=("$i"); done
	done
	[ ${#all[@]} -gt 0 ] || return 0
	kill -TERM "${all[@]}" 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		local alive=0
		for p in "${all[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	kill -KILL "${all[@]}" 2>/dev/null || true
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
	return 0
}

# free_port: a TCP port nobody listens on, below the ephemeral range (so
# that no client's source port takes it between now and the bind).
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((10000 + RANDOM % 22000))
		if ! ss -Htln "sport = :$p" | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	fail "no free port found"
}

# shunt_env LOGNAME: the `env` arguments that put a program under shunt,
# logging to $T/LOGNAME.log (empty of LD_PRELOAD in plain TCP mode), at
# level APPS_SHUNT_LOG (info; none for a benchmark's timed runs).
# Sets the global array SHUNT_ENV.
shunt_env() {
	SHUNT_ENV=(env "SHUNT_LOG=${APPS_SHUNT_LOG:-info}" "SHUNT_LOG_FILE=$T/$1.log")
	[ "$APPS_TCP" = 1 ] || SHUNT_ENV+=("LD_PRELOAD=$SHUNT_PRELOAD")
}

# start_server NAME CMD...: run CMD in the background under shunt, output in
# $T/NAME.out, log in $T/NAME.log; its pid in LAST_PID.
start_server() {
	local name=$1
	shift
	shunt_env "$name"
	"${SHUNT_ENV[@]}" "$@" >"$T/$name.out" 2>&1 </dev/null &
	LAST_PID=$!
	APPS_PIDS+=("$LAST_PID")
}

# start_server_ns NS NAME CMD...: the same inside network namespace NS.
# (`ip netns exec` execs CMD, so LAST_PID is CMD's pid.)
start_server_ns() {
	local ns=$1 name=$2
	shift 2
	shunt_env "$name"
	ip netns exec "$ns" "${SHUNT_ENV[@]}" "$@" >"$T/$name.out" 2>&1 </dev/null &
	LAST_PID=$!
	APPS_PIDS+=("$LAST_PID")
}

# stop_server PID: kill it (and its descendants) now, and forget it, so
# that the exit trap cannot hit a later process that reuses the pid.
stop_server() {
	local p keep=()
	kill_pids "$1"
	for p in "${APPS_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	APPS_PIDS=("${keep[@]}")
}

# run_client NAME SECS CMD...: run CMD in the foreground under shunt and
# under `timeout SECS`; log in $T/NAME.log.  Returns CMD's status.
run_client() {
	local name=$1 secs=$2
	shift 2
	shunt_env "$name"
	timeout -k 2 "$secs" "${SHUNT_ENV[@]}" "$@"
}

# run_client_ns NS NAME SECS CMD...: the same inside network namespace NS.
run_client_ns() {
	local ns=$1 name=$2 secs=$3
	shift 3
	shunt_env "$name"
	timeout -k 2 "$secs" ip netns exec "$ns" "${SHUNT_ENV[@]}" "$@"
}

# assert_bypassed CARRIED LAST CLIENT_LOG: of the LAST bytes of a pipelined
# exchange the kernel's TCP socket carried CARRIED.  Plain TCP (APPS_TCP=1)
# must carry nearly all (else the probe is broken); under shunt the
# connection moved at both ends (the server's log and CLIENT_LOG) and the
# kernel carried under 1/20 of them.
assert_bypassed() {
	local carried=$1 last=$2 client_log=$3
	if [ "$APPS_TCP" = 1 ]; then
		[ "$carried" -gt $((last * 9 / 10)) ] ||
			fail "plain TCP: the kernel carried only $carried bytes of $last (broken probe?)"
		return
	fi
	assert_accelerated 1 "$T/server.log"
	assert_accelerated 1 "$client_log"
	[ "$carried" -lt $((last / 20)) ] ||
		fail "moved, yet the kernel's TCP socket carried $carried of the last $last bytes"
}

# wait_ready NAME PID: wait (10 s) until the server (started as NAME)
# printed a line "ready" in $T/NAME.out.
wait_ready() {
	local i
	for ((i = 0; i < 200; i++)); do
		grep -qx ready "$T/$1.out" && return 0
		kill -0 "$2" 2>/dev/null || fail "$1 (pid $2) exited before it was ready"
		sleep 0.05
	done
	fail "$1 is not ready after 10 s"
}

# script_pair CMD...: a server and a client made of one script: `CMD server
# PORT $T/file` in the background until it prints "ready" (its log:
# server.log), then `CMD client PORT $T/file` (client.log, 120 s at most),
# which must exit 0 having printed "client: ok" (its output: client.out).
script_pair() {
	local port
	port=$(free_port)
	start_server server "$@" server "$port" "$T/file"
	wait_ready server "$LAST_PID"
	run_client client 120 "$@" client "$port" "$T/file" >"$T/client.out" 2>&1 ||
		fail "the client exited with status $?: $(tail -n 3 "$T/client.out")"
	grep -q "^client: ok" "$T/client.out" ||
		fail "the client did not finish: $(tail -n 3 "$T/client.out")"
}

# wait_listen PORT PID [SECS [NS]]: wait until something listens on PORT
# (in namespace NS), failing at once if PID died, and after SECS (10).
wait_listen() {
	local port=$1 pid=$2 secs=${3:-10} ns=${4:-} i
	local ssc=(ss)
	[ -z "$ns" ] || ssc=(ip netns exec "$ns" ss)
	for ((i = 0; i < secs * 20; i++)); do
		if "${ssc[@]}" -Htln "sport = :$port" | grep -q .; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || fail "the server (pid $pid) exited before listening on port $port"
		sleep 0.05
	done
	fail "nothing listens on port $port after ${secs}s"
}

# count_upgraded LOG...: the number of "upgraded" lines in the shim logs.
count_upgraded() {
	cat "$@" 2>/dev/null | grep -c -w upgraded || true
}

# assert_accelerated MIN LOG...: the logs hold at least MIN "upgraded" lines
# together, i.e. that many connections moved to shared memory.  A no-op
# (with a note) in plain TCP mode.
assert_accelerated() {
	local min=$1 n i
	shift
	n=$(count_upgraded "$@")
	# A server's process may still be at its last calls when its client
	# is done, and logs the move there (sshd's, once in CI: 2 of 3).
	for ((i = 0; i < 50 && n < min && APPS_TCP != 1; i++)); do
		sleep 0.1
		n=$(count_upgraded "$@")
	done
	if [ "$APPS_TCP" = 1 ]; then
		say "plain TCP mode: not checking acceleration ($n upgraded lines)"
		return 0
	fi
	[ "$n" -ge "$min" ] ||
		fail "expected >= $min upgraded connection(s) in ${*##*/}, found $n"
	say "accelerated: $n upgraded line(s) in ${*##*/}"
}

# count_stays REASON LOG...: the number of "stays on TCP: REASON" lines
# (REASON: short, nopeer, policy, shared, stdio, options, refused, error).
count_stays() {
	local why=$1
	shift
	cat "$@" 2>/dev/null | grep -c "stays on TCP: $why\b" || true
}

# assert_stays REASON MIN LOG...: at least MIN connections stayed on TCP for
# REASON, as the shim logs when it gives up on one (or, for "short" and
# "nopeer", when one ends before it moved).  A no-op in plain TCP mode.
assert_stays() {
	local why=$1 min=$2 n
	shift 2
	n=$(count_stays "$why" "$@")
	if [ "$APPS_TCP" = 1 ]; then
		say "plain TCP mode: not checking why connections stay on TCP"
		return 0
	fi
	[ "$n" -ge "$min" ] ||
		fail "expected >= $min 'stays on TCP: $why' line(s) in ${*##*/}, found $n"
	say "on TCP as they should be: $n '$why' line(s) in ${*##*/}"
}

# assert_not_accelerated LOG...: no connection moved to shared memory.
assert_not_accelerated() {
	local n
	n=$(count_upgraded "$@")
	[ "$n" = 0 ] || fail "$n 'upgraded' line(s) in ${*##*/}: these connections must stay on TCP"
}

# paced_feed FILE: FILE on stdout, its first 24 pieces of 8 KiB 20 ms apart,
# then the rest at once.  A connection moves only after its first data calls
# (upgrade-calls, 16) and a meeting that each end steps through on its own
# data calls: a client that pours 1 MiB into the kernel's buffers within a
# millisecond and half-closes is done sending before its peer took one step,
# and stays on TCP (a half-closed stream carries no doorbell: "stays on TCP:
# options").  The paced start is a conversation long enough to move in; the
# rest, and the half-close, go through shared memory.
paced_feed() {
	local k
	for ((k = 0; k < 24; k++)); do
		tail -c +$((k * 8192 + 1)) "$1" | head -c 8192
		sleep 0.02
	done
	tail -c +$((24 * 8192 + 1)) "$1"
}

# kernel_tcp_bytes PORT [NS]: bytes the kernel's TCP carried (received plus
# acknowledged) on the established sockets whose local port is PORT, i.e.
# on the server's side of its live connections.  Once a connection is
# upgraded its payload bypasses TCP, so this stays near zero while the
# application moves gigabytes: an independent check of the shim's own log.
kernel_tcp_bytes() {
	local port=$1 ns=${2:-}
	local ssc=(ss)
	[ -z "$ns" ] || ssc=(ip netns exec "$ns" ss)
	"${ssc[@]}" -Htin state established "( sport = :$port )" |
		awk '{ for (i = 1; i <= NF; i++)
			if ($i ~ /^bytes_(received|acked):/) { split($i, a, ":"); s += a[2] } }
			END { printf "%.0f\n", s }'
}

# stat_has_port PORT: `shunt stat --json` (one object per process, then
# one per connection end, read from each process family's arena) lists
# both ends of a live connection to PORT in shared memory: the server's
# (local address :PORT) and the client's (peer :PORT), each in state
# "moved" with bytes counted.  Needs jq.
stat_has_port() {
	"$SHUNT_BIN" stat --json 2>/dev/null | jq -e -s --arg p ":$1" '
		[.[] | select(.state == "moved" and (.bytes_in + .bytes_out) > 0)] as $c
		| ($c | any(.local | endswith($p))) and ($c | any(.peer | endswith($p)))' \
		>/dev/null
}

# rand_file PATH BYTES: random contents.
rand_file() {
	head -c "$2" /dev/urandom >"$1"
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# same_file EXPECTED GOT WHAT: fail unless the two files are identical.
same_file() {
	local a b
	a=$(sha "$1")
	b=$(sha "$2")
	[ "$a" = "$b" ] ||
		fail "$3: contents differ ($(wc -c <"$2") bytes received, $(wc -c <"$1") expected)"
}

# fetch_kept_alive NAME URL FILE...: curl (run_client NAME) fetches each
# FILE under URL 3 times over one kept-alive connection: every copy must be
# $T/www/FILE's bytes, and curl must have made one connection.
fetch_kept_alive() {
	local name=$1 url=$2 i f args=()
	shift 2
	for i in 1 2 3; do
		for f in "$@"; do
			args+=(-o "$T/ka-$f-$i" "$url/$f")
		done
	done
	run_client "$name" 30 curl -sS --fail -w '%{num_connects}\n' "${args[@]}" >"$T/$name.out" ||
		fail "keep-alive curl exited with status $?"
	for i in 1 2 3; do
		for f in "$@"; do
			same_file "$T/www/$f" "$T/ka-$f-$i" "keep-alive GET /$f #$i"
		done
	done
	local conns
	conns=$(awk '{ s += $1 } END { print s }' "$T/$name.out")
	[ "$conns" = 1 ] || fail "keep-alive curl made $conns connections, expected 1"
	say "$((3 * $#)) GETs on one kept-alive connection: intact"
}

# wrk_kept_alive URL PORT: wrk (run_client wrk) drives 8 kept-alive
# connections for 2 s at URL, and the kernel's TCP bytes of the server's
# sockets on PORT are read at 0.7 s and 1.7 s.  Requests must complete
# with no socket error and no non-2xx answer; over plain TCP (APPS_TCP=1)
# the kernel carries at least 1/4 of what wrk read per second (else the
# probe is broken), under shunt under 1/20, and all 8 connections moved at
# both ends (wrk's log, and the server's: $T/server.log).
wrk_kept_alive() {
	local url=$1 port=$2 cli k0 k1 reqs transfer per_s before n
	before=$(count_upgraded "$T/server.log")
	run_client wrk 20 wrk -t 2 -c 8 -d 2s "$url" >"$T/wrk.out" 2>&1 &
	cli=$!
	sleep 0.7
	k0=$(kernel_tcp_bytes "$port")
	sleep 1
	k1=$(kernel_tcp_bytes "$port")
	wait "$cli" || fail "wrk exited with status $?"
	reqs=$(awk '/requests in/ { print $1 }' "$T/wrk.out")
	say "wrk -c 8: $reqs requests, $(awk '/^Requests\/sec:/ { print $2 }' "$T/wrk.out") requests/s"
	[ "${reqs:-0}" -gt 100 ] || fail "wrk completed ${reqs:-no} requests"
	! grep -E 'Socket errors|Non-2xx' "$T/wrk.out" || fail "wrk saw errors"
	transfer=$(awk '/requests in/ { print $5 }' "$T/wrk.out")
	case $transfer in *MB | *GB) ;; *) fail "wrk read only $transfer for $reqs requests" ;; esac
	per_s=$(awk -v t="$transfer" 'BEGIN { m = t ~ /GB$/ ? 1073741824 : 1048576; printf "%.0f", (t + 0) * m / 2 }')
	say "wrk: $transfer read, about $per_s bytes/s; the kernel's TCP carried $((k1 - k0)) bytes in 1 s of it"
	if [ "$APPS_TCP" = 1 ]; then
		[ $((k1 - k0)) -gt $((per_s / 4)) ] || fail "plain TCP: the kernel carried only $((k1 - k0)) bytes in 1 s (broken probe?)"
	else
		[ $((k1 - k0)) -lt $((per_s / 20)) ] ||
			fail "the kernel's TCP carried $((k1 - k0)) bytes in 1 s of wrk: its connections did not go through shared memory"
		n=$(($(count_upgraded "$T/server.log") - before))
		[ "$n" -ge 8 ] || fail "the server's ends of wrk's 8 connections: $n upgraded"
	fi
	assert_accelerated 8 "$T/wrk.log"
}

# --- Shared with tools/compare.sh and bench/run.sh (benchmarks) -----------

# median V...: the median of numbers (the mean of the middle two if even);
# "nan" for none.
median() {
	printf '%s\n' "$@" | awk 'NF' | sort -g | awk '{ v[NR] = $1 }
		END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
		      else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A/B with 2 decimals, "nan" if B is not positive.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "nan") printf "%.2f", a / b; else print "nan" }'; }

# fmt V [DECIMALS]: V rounded; "nan" stays "nan".
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "nan" || v == "") print "nan"; else printf "%.*f", d, v }'; }

# start_redis NAME PORT DIR: a redis-server without persistence on
# 127.0.0.1:PORT, under shunt unless APPS_TCP=1 (start_server); LAST_PID.
start_redis() {
	mkdir -p "$3"
	start_server "$1" redis-server --port "$2" --bind 127.0.0.1 \
		--save "" --appendonly no --daemonize no --dir "$3" \
		--logfile "$3/redis.out" --protected-mode no
}

# start_memcached NAME PORT [THREADS]: memcached on 127.0.0.1:PORT, TCP
# only.  As root it insists on -u; keep our own user (shunt connects only
# processes of the same user).
start_memcached() {
	local as_user=()
	[ "$(id -u)" -ne 0 ] || as_user=(-u "$(id -un)")
	start_server "$1" memcached -p "$2" -U 0 -l 127.0.0.1 -t "${3:-4}" -m 64 "${as_user[@]}"
}

# nginx_bench_conf DIR PORT ROOT: a benchmark nginx.conf in DIR (2 workers,
# no access log, sendfile, endless keep-alive) serving ROOT on PORT.  As
# root, workers keep our user: shunt connects only processes of one user.
nginx_bench_conf() {
	local user_line=
	[ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
	mkdir -p "$1/tmp"
	cat >"$1/nginx.conf" <<NGINX
$user_line
worker_processes 2;
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.out warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $1/tmp;
	proxy_temp_path $1/tmp;
	fastcgi_temp_path $1/tmp;
	uwsgi_temp_path $1/tmp;
	scgi_temp_path $1/tmp;
	sendfile on;
	keepalive_requests 10000000;
	server { listen 127.0.0.1:$2; root $3; }
}
NGINX
}
