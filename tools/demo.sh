#!/usr/bin/env bash
# tools/demo.sh BUILD_DIR - the Quick start demonstration (`make demo`).
#
# Runs one ordinary TCP program, examples/tcpbench (a client and a server
# that know nothing of shunt), first over plain TCP and then under
# `shunt run`, twice each, alternating, and prints the throughput and round
# trip of each with the ratio.  The server checks every byte it receives,
# and the shim's log must show the connection upgraded, or the demo fails.
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
bench=$build/examples/tcpbench
mib=${DEMO_MIB:-2048}
rounds=${DEMO_ROUNDS:-100000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shunt-demo-XXXXXX")
server=
cleanup() {
	[ -n "$server" ] && kill "$server" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
export SHUNT_DIR=$tmp/dir

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768 on)
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
	echo "demo: no free port" >&2
	exit 1
}

# run_pair MODE -> prints "MB/s X rtt_us Y"
run_pair() {
	local pre=() port log=$tmp/$1.log
	[ "$1" = shunt ] && pre=("$build/shunt" run --)
	port=$(free_port)
	SHUNT_LOG=info SHUNT_LOG_FILE=$log "${pre[@]}" "$bench" server "$port" >"$tmp/srv.out" &
	server=$!
	for _ in $(seq 100); do grep -q listening "$tmp/srv.out" 2>/dev/null && break; sleep 0.05; done
	SHUNT_LOG=info SHUNT_LOG_FILE=$log "${pre[@]}" "$bench" client "$port" "$mib" "$rounds"
	wait "$server"
	server=
	if [ "$1" = shunt ] && ! grep -q upgraded "$log"; then
		echo "demo: the connection was not upgraded under shunt run" >&2
		exit 1
	fi
}

echo "tcpbench: $mib MiB stream, then $rounds round trips of 64 B, client and server on 127.0.0.1"
declare -A mbs rtt
for round in 1 2; do
	for mode in tcp shunt; do
		read -r _ m _ r < <(run_pair "$mode")
		mbs[$mode$round]=$m rtt[$mode$round]=$r
	done
done
best() { awk -v a="$1" -v b="$2" -v hi="$3" 'BEGIN { print (hi ? (a > b ? a : b) : (a < b ? a : b)) }'; }
t_mbs=$(best "${mbs[tcp1]}" "${mbs[tcp2]}" 1) s_mbs=$(best "${mbs[shunt1]}" "${mbs[shunt2]}" 1)
t_rtt=$(best "${rtt[tcp1]}" "${rtt[tcp2]}" 0) s_rtt=$(best "${rtt[shunt1]}" "${rtt[shunt2]}" 0)
printf '\n%-22s %12s %14s\n' "" "stream MB/s" "round trip us"
printf '%-22s %12s %14s\n' "TCP loopback" "$t_mbs" "$t_rtt"
printf '%-22s %12s %14s\n' "shunt run (same TCP)" "$s_mbs" "$s_rtt"
# A ratio as a reader says it: "10.3x higher", "45x lower", never 0.02x.
# compare NEW OLD: how NEW stands to OLD.
compare() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a <= 0 || b <= 0) { print "-"; exit }
		r = a / b; word = "higher"
		if (r < 1) { r = 1 / r; word = "lower" }
		if (r < 1.05) { print "the same"; exit }
		printf (r < 10 ? "%.1fx %s\n" : "%.0fx %s\n"), r, word
	}'
}
printf '%-22s %12s %14s\n' "shunt vs TCP" "$(compare "$s_mbs" "$t_mbs")" "$(compare "$s_rtt" "$t_rtt")"
echo "(best of two runs each, alternating; every byte checked by the server)"
