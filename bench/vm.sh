#!/usr/bin/env bash
# bench/vm.sh - shunt between two QEMU guests against TCP between the same
# guests, and against a raw ring in the same region (tests/vm/ivring), all
# in one run, alternating; writes a Markdown section for `make bench`'s
# report (bench/run.sh puts it in as it is) with the figures, the ratios,
# the targets and the QEMU command line.
#
# Usage: bench/vm.sh [--rounds N] [--secs S] [--ring SIZE] [--out FILE] [--build DIR]
#   --rounds N   rounds of every measurement, order reversed every other
#                round; figures are medians (default 5)
#   --secs S     seconds per stream or ping-pong (default 3)
#   --ring SIZE  the region's ring size (`shunt vm region --ring`; default
#                its default); the region is 64 MiB ($SHUNT_VM_REGION_SIZE)
#   --out FILE   the Markdown section (default: stdout)
#   --build DIR  the build to measure (default: $SHUNT_BUILD, else build/)
# Needs root, QEMU and the rest of tests/vm/lab.sh; about 5 minutes.  Exit
# status: 0 once the section is written (targets met or not), 1 if it
# could not be, 77 if it cannot run here, 2 on a usage error.
#
# What is measured, with examples/tcpbench unmodified in both guests:
#   stream     A writes 128 KiB at a time for S s to B, which reads (MB/s)
#   pingpong   64 B messages back and forth for S s (median round trip)
# between the guests and from a host process to guest A, over TCP (no
# library), under the library (`shunt run`, the connection moved to the
# region: its log is checked), and with ivring, the raw SPSC
# ring (stream copied out as tcpbench's server does, `-n`; ping-pong), at
# offset 0 of the same region between the shunt runs (the region is
# formatted again after it).  The doorbell's wake-up is measured as half
# the round trip of a ping-pong under the library with SHUNT_SPIN_US=0
# (every wait sleeps and is woken through the TCP stream).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$BENCH_DIR/.." && pwd)
usage() {
	sed -n '/^# Usage:/,/^# could not be/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
ROUNDS=5 SECS=3 OUTF='' RING='' build=${SHUNT_BUILD:-$SRC/build}
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=${2:?}; shift ;;
	--secs) SECS=${2:?}; shift ;;
	--ring) RING=${2:?}; shift ;;
	--out) OUTF=${2:?}; shift ;;
	--build) build=${2:?}; shift ;;
	-h | --help) usage ;;
	*) echo "bench/vm.sh: unknown option '$1'" >&2; usage ;;
	esac
	shift
done
SHUNT_BUILD=$(cd "$build" && pwd) || { echo "bench/vm.sh: no build at $build" >&2; exit 2; }
export SHUNT_BUILD
export SHUNT_VM_REGION_SIZE=${SHUNT_VM_REGION_SIZE:-64M}
# shellcheck source=tests/vm/lab.sh
. "$SRC/tests/vm/lab.sh"
vm_init bench_vm
vm_say() { printf '%s: %s\n' "$VM_NAME" "$*" >&2; } # stdout may be the report
[ "$(id -u)" -eq 0 ] || vm_skip "needs root (network namespace, tap device)"
TB=$SHUNT_BUILD/examples/tcpbench
SH=$SHUNT_BUILD/shunt
[ -x "$TB" ] && [ -x "$SH" ] || vm_skip "no $TB or $SH (make)"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

vm_prepare
vm_pair
format() {
	dd if=/dev/zero of="$VM_REGION" bs=1M count=1 conv=notrunc status=none
	"$SH" vm region "$VM_REGION" ${RING:+--ring "$RING"} >/dev/null || vm_fail "cannot format $VM_REGION"
}
format

field() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$2"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3g", a / b; else print "-" }'; }

declare -A FIG=() # "mode:metric" -> one value per round, newline-separated
add() { FIG[$1]+="$2"$'\n'; }
port=7000

# tcpbench_run MODE [ENV]: a respond server in B, stream and ping-pong from A.
tcpbench_run() {
	local mode=$1 env=${2:-} pre='' out s p log
	port=$((port + 1))
	if [ "$mode" != tcp ]; then
		log=/tmp/$mode-$port.log
		pre="SHUNT_LOG=info SHUNT_LOG_FILE=$log $env $SH run --"
	fi
	vm_bg B "srv$port" "$pre $TB respond $VM_B_IP:$port"
	vm_wait_listen B $port
	s=$(vm_exec A -t $((SECS + 60)) "$pre $TB stream $VM_B_IP:$port $SECS") ||
		vm_fail "$mode: stream failed ($s)"
	p=$(vm_exec A -t $((SECS + 60)) "$pre $TB pingpong $VM_B_IP:$port $SECS") ||
		vm_fail "$mode: pingpong failed ($p)"
	vm_exec A "$TB quit $VM_B_IP:$port" || vm_fail "$mode: quit"
	vm_bg_wait B "srv$port" || vm_fail "$mode: the server failed"
	if [ -n "$pre" ]; then
		# Both connections moved, or the figures are not shunt's.
		out=$(vm_exec A "grep -c 'upgraded: .*ivshmem medium' $log" || true)
		[ "${out:-0}" -ge 2 ] || vm_fail "$mode: $out of 2 connections moved ($(vm_exec A "cat $log" | tail -n 3))"
	fi
	add "$mode:stream" "$(field MB/s "$s")"
	add "$mode:rtt" "$(field rtt_us "$p")"
	vm_say "$mode: stream $(field MB/s "$s") MB/s, 64 B round trip $(field rtt_us "$p") us"
}

# host_run MODE: the same from a host process (the region's file) to a
# respond server in guest A, over the tap.
host_run() {
	local mode=$1 pre=() gpre='' s p log
	port=$((port + 1))
	if [ "$mode" != tcp ]; then
		log=$VM_T/host-$port.log
		pre=(env SHUNT_IVSHMEM="$VM_REGION" SHUNT_LOG=info SHUNT_LOG_FILE="$log" "$SH" run --)
		gpre="$SH run --"
	fi
	vm_bg A "srv$port" "$gpre $TB respond $VM_A_HOST_IP:$port"
	vm_wait_listen A $port
	s=$(vm_host -t $((SECS + 60)) "${pre[@]}" "$TB" stream "$VM_A_HOST_IP:$port" "$SECS") ||
		vm_fail "host $mode: stream failed ($s)"
	p=$(vm_host -t $((SECS + 60)) "${pre[@]}" "$TB" pingpong "$VM_A_HOST_IP:$port" "$SECS") ||
		vm_fail "host $mode: pingpong failed ($p)"
	vm_host "$TB" quit "$VM_A_HOST_IP:$port" || vm_fail "host $mode: quit"
	vm_bg_wait A "srv$port" || vm_fail "host $mode: the server failed"
	if [ -n "$gpre" ]; then
		[ "$(grep -c 'upgraded: .*ivshmem medium' "$log")" -ge 2 ] ||
			vm_fail "host $mode: the connections did not move ($(tail -n 3 "$log"))"
	fi
	add "host-$mode:stream" "$(field MB/s "$s")"
	add "host-$mode:rtt" "$(field rtt_us "$p")"
	vm_say "host -> A, $mode: stream $(field MB/s "$s") MB/s, 64 B round trip $(field rtt_us "$p") us"
}

ivring_run() {
	local out rx
	vm_bg B ivrx ivring -n stream rx
	out=$(vm_exec A -t $((SECS + 60)) ivring stream tx "$SECS") || vm_fail "ivring tx ($out)"
	vm_bg_wait B ivrx || vm_fail "ivring rx"
	rx=$(vm_bg_out B ivrx)
	vm_bg B ivpong ivring pingpong pong
	out=$(vm_exec A -t $((SECS + 60)) ivring pingpong ping "$SECS") || vm_fail "ivring ping ($out)"
	vm_bg_wait B ivpong || vm_fail "ivring pong"
	add "ring:stream" "$(field MB/s "$rx")"
	add "ring:rtt" "$(field rtt_us "$out")"
	vm_say "raw ring: stream $(field MB/s "$rx") MB/s, 64 B round trip $(field rtt_us "$out") us"
	format # ivring wrote its own control page over the region's header
}

T0=$(vm_now)
for ((r = 1; r <= ROUNDS; r++)); do
	order=(tcp shunt ring wake host-tcp host-shunt)
	[ $((r % 2)) = 1 ] || order=(host-shunt host-tcp wake ring shunt tcp)
	for m in "${order[@]}"; do
		case $m in
		tcp) tcpbench_run tcp ;;
		shunt) tcpbench_run shunt ;;
		wake) tcpbench_run wake SHUNT_SPIN_US=0 ;;
		ring) ivring_run ;;
		host-tcp) host_run tcp ;;
		host-shunt) host_run shunt ;;
		esac
	done
done
WALL=$(vm_since "$T0")
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

med() { printf '%s' "${FIG[$1]}" | median; }
ts=$(med tcp:stream) ss=$(med shunt:stream) rs=$(med ring:stream)
tr=$(med tcp:rtt) sr=$(med shunt:rtt) rr=$(med ring:rtt) wr=$(med wake:rtt)
r_stream=$(ratio "$ss" "$ts") r_rtt=$(ratio "$sr" "$tr") r_ring=$(ratio "$ss" "$rs")
hts=$(med host-tcp:stream) hss=$(med host-shunt:stream) htr=$(med host-tcp:rtt) hsr=$(med host-shunt:rtt)
met() { awk -v v="$1" -v t="$2" -v ge="$3" 'BEGIN { if (v == "-") print "-"; else print ((ge ? v >= t : v <= t) ? "yes" : "**no**") }'; }
rounds_of() { printf '%s' "${FIG[$1]}" | tr '\n' ' '; }
cmdline=$(sed -e "s#$VM_T#\$TMP#g" -e "s#$VM_CACHE#\$CACHE#g" -e 's/\\,/,/g; s/\\ / /g' \
	-e 's/ -/\n  -/g' "$VM_T/A.cmd")

{
	cat <<EOF
## Between virtual machines: TCP and shunt between two QEMU guests

Two guests on this machine ($(nproc) CPUs; TCG, \`-accel tcg,thread=multi\`, one vCPU each;
KVM does not work here) share a ${VM_REGION_SIZE} ivshmem region (\`shunt vm region\`, rings of
$("$SH" vm show "$VM_REGION" | awk '{ for (i = 1; i < NF; i++) if ($i == "of") { sub("-byte", "", $(i + 1)); print $(i + 1); exit } }') bytes) and a
network link (\`-netdev socket\`). examples/tcpbench runs unmodified in both guests: over
TCP, under the library (\`shunt run\`, each connection moved to the region, as its log
says), and the raw ring tests/vm/ivring runs in the same region. $ROUNDS rounds of each,
alternating (the order reversed every other round), $SECS s per measurement; medians.
Load average $LOAD0 before, $LOAD1 after ($WALL s): two guests spinning take both CPUs,
so whatever else runs on the machine shows in these figures.

| | TCP | shunt | raw ring | shunt / TCP | target | met | shunt / raw ring | target | met |
|---|---|---|---|---|---|---|---|---|---|
| stream, MB/s | $ts | $ss | $rs | $r_stream | >= 5 | $(met "$r_stream" 5 1) | $r_ring | >= 0.8 | $(met "$r_ring" 0.8 1) |
| 64 B round trip, us | $tr | $sr | $rr | $r_rtt | <= 0.1 | $(met "$r_rtt" 0.1 0) | | | |

Between a host process (mapping the region's file) and a respond server in guest A, over
the tap, in the same rounds:

| host -> guest A | TCP | shunt | shunt / TCP |
|---|---|---|---|
| stream, MB/s | $hts | $hss | $(ratio "$hss" "$hts") |
| 64 B round trip, us | $htr | $hsr | $(ratio "$hsr" "$htr") |

The doorbell (the TCP stream the guests share, one byte per wake-up) wakes a sleeping
peer in about $(awk -v v="$wr" 'BEGIN { printf "%.0f", v / 2 }') us: half the median round trip of a ping-pong under the library
with \`SHUNT_SPIN_US=0\` ($wr us), where every wait sleeps; TCP's own round trip is $tr us.
Under the library a waiting side spins first, for up to the connection's TCP round trip
(src/shim/meet_vm.c), which is why its round trip is the ring's and not the doorbell's.

Per round (MB/s; us):

| | rounds |
|---|---|
| TCP stream | $(rounds_of tcp:stream) |
| shunt stream | $(rounds_of shunt:stream) |
| raw ring stream | $(rounds_of ring:stream) |
| TCP round trip | $(rounds_of tcp:rtt) |
| shunt round trip | $(rounds_of shunt:rtt) |
| raw ring round trip | $(rounds_of ring:rtt) |
| shunt round trip, no spinning | $(rounds_of wake:rtt) |
| host -> A, TCP stream | $(rounds_of host-tcp:stream) |
| host -> A, shunt stream | $(rounds_of host-shunt:stream) |
| host -> A, TCP round trip | $(rounds_of host-tcp:rtt) |
| host -> A, shunt round trip | $(rounds_of host-shunt:rtt) |

Guest A's QEMU (B's differs in its name, \`connect=\` for \`listen=\`, MACs, addresses, no tap):

\`\`\`
$cmdline
\`\`\`

Commands, in the guests (\`\$B\` is guest B's address; PORT a fresh port per run):

\`\`\`
B: [shunt run --] build/examples/tcpbench respond \$B:PORT
A: [shunt run --] build/examples/tcpbench stream \$B:PORT $SECS
A: [shunt run --] build/examples/tcpbench pingpong \$B:PORT $SECS
B: ivring -n stream rx          A: ivring stream tx $SECS
B: ivring pingpong pong         A: ivring pingpong ping $SECS
A: [shunt run --] build/examples/tcpbench respond \$A:PORT
host: [SHUNT_IVSHMEM=/dev/shm/REGION shunt run --] build/examples/tcpbench stream|pingpong \$A:PORT $SECS
\`\`\`
EOF
} >"${OUTF:-/dev/stdout}"
exit 0
