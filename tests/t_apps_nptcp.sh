#!/usr/bin/env bash
# t_apps_nptcp: NetPIPE (NPtcp) over shunt.  First its integrity mode (-i:
# the receiver checks every byte of every message, 5 B to 768 KiB, with the
# +-3 B perturbations around each size: about 100 sizes), the same with both
# ends sending at once (-2, up to what NPtcp thinks the socket buffers hold),
# then a short measuring ping-pong run up to 1 MiB; both ends under shunt.
# (NPtcp's -s and -r modes fail on Debian's build even over plain TCP.)
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init nptcp
need NPtcp

# np_pair NAME ARGS...: an NPtcp receiver and transmitter with ARGS; the
# transmitter's report in $T/NAME.tx.out, its per-size table in $T/NAME.np.
np_pair() {
	local name=$1 port
	shift
	port=$(free_port)
	# NPtcp takes one connection and exits; it listens on every address.
	start_server "$name.rx" NPtcp -P "$port" "$@"
	local rx=$LAST_PID
	wait_listen "$port" "$rx"
	run_client "$name.tx" 30 NPtcp -h 127.0.0.1 -P "$port" -o "$T/$name.np" "$@" \
		>"$T/$name.tx.out" 2>&1 || fail "$name: the NPtcp transmitter exited with status $?"
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$rx" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$rx" 2>/dev/null && fail "$name: the NPtcp receiver did not finish"
	wait "$rx" || fail "$name: the NPtcp receiver exited with status $?"
	! grep -E -i 'error|fail' "$T/$name.tx.out" "$T/$name.rx.out" ||
		fail "$name: NPtcp reported an error"
}

# Integrity: 10 round trips per size, every byte checked.  (NPtcp stops at
# the last size below -u.)
for mode in integrity duplex; do
	extra=()
	[ $mode = duplex ] && extra=(-2)
	np_pair "$mode" -i -u 1048576 -n 10 -p 3 "${extra[@]}"
	passed=$(grep -c 'Integrity check passed' "$T/$mode.tx.out" || true)
	sizes=$(grep -c . "$T/$mode.np" || true)
	say "$mode: $passed sizes checked, largest $(tail -n 1 "$T/$mode.np" | awk '{ print $1 }') B"
	[ "$passed" -ge 60 ] && [ "$passed" = "$sizes" ] ||
		fail "$mode: $passed sizes passed of $sizes run (expected >= 60, all)"
done

# Measuring run to 1 MiB.  NPtcp only reports; what is checked is that
# every size completed with a sane rate.
np_pair pingpong -u 1048576 -n 20 -p 0
rows=$(awk '$1 > 0 && $2 > 0' "$T/pingpong.np" | wc -l)
last=$(tail -n 1 "$T/pingpong.np")
say "pingpong: $rows sizes, largest: $last (bytes, Mbit/s, s)"
[ "$rows" -ge 35 ] || fail "pingpong: only $rows sizes measured"
[ "$(awk '{ print $1 }' <<<"$last")" -ge 1048576 ] || fail "pingpong: did not reach 1 MiB"

for name in integrity duplex pingpong; do
	assert_accelerated 1 "$T/$name.rx.log"
	assert_accelerated 1 "$T/$name.tx.log"
done
say pass
