#!/bin/bash
# bench/idle_rt.sh [ROUNDS] [SECS] [GAP_US...] - a request after a quiet
# while: 64-byte round trips with GAP_US of sleep before each (the client
# sleeps, so the server sleeps too and each request wakes it), plain TCP
# and under shunt run on both ends, alternating (TCP first in each round)
# on this noisy machine (examples/tcpbench respond and pingpong).  Prints
# each round's median round trip in microseconds and the ratio of the
# medians, TCP/shunt (above 1: shunt faster).  Run from the source tree
# after make.  Defaults: 7 rounds of 2 s, GAP_US 0 2000 20000.
cd "$(dirname "$0")/.." || exit 2
R=${1:-7}; SECS=${2:-2}; shift 2 2>/dev/null
GAPS=${*:-0 2000 20000}
TB=build/examples/tcpbench SH=build/shunt
[ -x "$TB" ] && [ -x "$SH" ] || { echo "build first: make" >&2; exit 2; }
port=24300
one() { # MODE GAP_US: the median round trip of one run, in us
	port=$((port + 1))
	local pre=()
	[ "$1" = shunt ] && pre=("$SH" run --)
	"${pre[@]}" "$TB" respond "$port" >/dev/null & local s=$!
	sleep 0.2
	"${pre[@]}" "$TB" pingpong "$port" "$SECS" 64 0 "$2" | awk '{print $2}'
	"$TB" quit "$port" >/dev/null 2>&1
	wait "$s"
}
# shellcheck source=bench/ab.sh
. bench/ab.sh
for gap in $GAPS; do
	ab_rounds "$R" "$gap"
	printf 'gap %-6s us: tcp rtt_us %s | shunt %s | median tcp %s shunt %s ratio %s\n' "$gap" \
		"${t[*]}" "${s[*]}" "$mt" "$ms" "$(ratio "$mt" "$ms")"
done
