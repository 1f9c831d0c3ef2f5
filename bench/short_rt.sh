#!/bin/bash
# bench/short_rt.sh [ROUNDS] [N] [RT...] - connections of a few round trips,
# the workload where a move costs more than it saves: N connections one
# after the other, each RT one-byte round trips each way then close
# (examples/tcpbench connect/server), plain TCP and under shunt run,
# alternating (TCP first in each round) on this noisy machine.  Prints each
# round's conn/s and the ratio of the medians, shunt/TCP (above 1: faster).
# Run from the source tree after make.  Defaults: 5 rounds, 300, RT 1 12 30 60.
cd "$(dirname "$0")/.." || exit 2
R=${1:-5}; N=${2:-300}; shift 2 2>/dev/null
RTS=${*:-1 12 30 60}
TB=build/examples/tcpbench SH=build/shunt
[ -x "$TB" ] && [ -x "$SH" ] || { echo "build first: make" >&2; exit 2; }
port=24100
one() { # MODE RT: conn/s of one run
	port=$((port + 1))
	local pre=()
	[ "$1" = shunt ] && pre=("$SH" run --)
	"${pre[@]}" "$TB" server "$port" "$N" "$2" >/dev/null & local s=$!
	sleep 0.2
	"${pre[@]}" "$TB" connect "$port" "$N" "$2" | awk '{print $2}'
	wait "$s"
}
# shellcheck source=bench/ab.sh
. bench/ab.sh
for rt in $RTS; do
	ab_rounds "$R" "$rt"
	printf 'RT %-3s tcp conn/s %s | shunt %s | median tcp %s shunt %s ratio %s\n' "$rt" \
		"${t[*]}" "${s[*]}" "$mt" "$ms" "$(ratio "$ms" "$mt")"
done
