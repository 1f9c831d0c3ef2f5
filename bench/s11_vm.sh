# shellcheck shell=bash
# Section 11: between two QEMU guests (TCG) sharing an ivshmem region:
# TCP, shunt and the raw ring, alternating, by bench/vm.sh (which boots the
# guests and writes the section); the section adds its targets to the
# report's table.

section_vm() {
	local rounds=${BENCH_ROUNDS:-3} secs=2 rc=0 out=$T/vm.md
	[ "$QUICK" = 1 ] && rounds=1 secs=1
	"$BENCH_DIR/vm.sh" --rounds "$rounds" --secs "$secs" --build "$SHUNT_BUILD" \
		--out "$out" >"$T/vm.out" 2>&1 || rc=$?
	if [ "$rc" != 0 ] || [ ! -s "$out" ]; then
		md "## $1. Between virtual machines"
		note "bench/vm.sh did not run (status $rc): $(tail -n 2 "$T/vm.out" | tr '\n' ' ')"
		return 0
	fi
	sed "1s/^## /## $1. /" "$out" >>"$MD"
	# "| stream, MB/s | TCP | shunt | ring | shunt/TCP | >= 5 | met | shunt/ring | ..."
	local st rt
	st=$(awk -F' *[|] *' '$2 == "stream, MB/s" { print $6, $9; exit }' "$out")
	rt=$(awk -F' *[|] *' '$2 == "64 B round trip, us" { print $6; exit }' "$out")
	set -- $st
	target vm-stream "${1}x TCP between two guests" "$(verdict '>=' "$1" 5 1)"
	target vm-ring "${2}x the raw ring" "$(verdict '>=' "$2" 0.8 1)"
	target vm-rtt "${rt}x TCP between two guests" "$(verdict '<=' "$rt" 0.1 1)"
}
