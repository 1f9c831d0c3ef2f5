#!/usr/bin/env bash
# test-timeout: 300
# test-set: vm
# t_vm_lab: the VM test harness (tests/vm/lab.sh) and the baselines the
# ivshmem medium is measured against.  Boots guests A and B (TCG) sharing
# an ivshmem region, A and B on a network, and a host process reaching A
# over a tap in the test's network namespace, then:
#   - the agent: output, stderr and status of a command, a timeout that
#     kills it, files both ways (checksums), a crashed guest (vm_kill)
#   - the region: bytes written by the host are read in both guests
#   - plain TCP (no preload library), tcpbench from A to B: a checked
#     stream with round trips, then a timed stream and a 64 B ping-pong
#   - ivring (the raw SPSC ring in the region) between A and B
#   - the same tcpbench runs between a host process and A, with the
#     connection's 4-tuple mirrored exactly on both sides (no NAT)
#   - ivring between a host process (the /dev/shm file) and A
# and prints the figures.  Figures are not checked: they are this
# machine's, and its neighbours'.  About a minute here.
# Installed as build/tests/t_vm_lab; the harness stays in tests/vm/.
lib=$(dirname "$0")/vm/lab.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/vm/lab.sh
# shellcheck source=tests/vm/lab.sh
. "$lib" || exit 1

vm_init vm_lab
[ "$(id -u)" -eq 0 ] || vm_skip "needs root (network namespace, tap device)"
TB=$SHUNT_BUILD/examples/tcpbench
[ -x "$TB" ] || vm_skip "no $TB (make)"
SECS=${SHUNT_VM_BENCH_SECS:-3}
T0=$(vm_now)

vm_prepare # nothing but the build
vm_pair
FIG=() # the figures, printed at the end

# field NAME LINE: the number after NAME in LINE ("MB/s 12.3 bytes ...").
field() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$2"; }

# --- The agent --------------------------------------------------------------
rc=0
# shellcheck disable=SC2016 # expanded in the guest
out=$(vm_exec A 'echo hello from $(hostname); echo oops >&2; exit 7' 2>"$VM_T/err") || rc=$?
[ "$out" = "hello from A" ] || vm_fail "vm_exec: stdout '$out'"
[ "$rc" = 7 ] || vm_fail "vm_exec: status $rc, expected 7"
grep -qx oops "$VM_T/err" || vm_fail "vm_exec: stderr '$(cat "$VM_T/err")'"
rc=0
t=$(vm_now)
vm_exec B -t 1 'sleep 30; echo not killed' >"$VM_T/out" 2>/dev/null || rc=$?
[ "$rc" = 124 ] || vm_fail "vm_exec -t 1 'sleep 30': status $rc, expected 124"
[ ! -s "$VM_T/out" ] || vm_fail "vm_exec -t: $(cat "$VM_T/out")"
# The guest killed the command's process group when the host hung up.
for i in $(seq 50); do
	n=$(vm_exec B 'ps -o args | grep -c "^sleep 30"') || true
	[ "$n" = 0 ] && break
	sleep 0.1
done
[ "$n" = 0 ] || vm_fail "the command of a timed-out vm_exec still runs in B"
say_t=$(vm_since "$t")
# Files both ways, 3 MiB each.
head -c 3145728 /dev/urandom >"$VM_T/up"
vm_put B "$VM_T/up" /tmp/up || vm_fail "vm_put"
[ "$(vm_exec B sha256sum /tmp/up | cut -c1-64)" = "$(sha256sum <"$VM_T/up" | cut -c1-64)" ] ||
	vm_fail "vm_put: the file in B differs"
vm_exec A 'head -c 3000001 /dev/urandom >/tmp/down' || vm_fail "cannot write /tmp/down in A"
vm_get A /tmp/down "$VM_T/down" || vm_fail "vm_get"
[ "$(vm_exec A sha256sum /tmp/down | cut -c1-64)" = "$(sha256sum <"$VM_T/down" | cut -c1-64)" ] ||
	vm_fail "vm_get: the file from A differs"
rc=0
vm_get A /nonexistent "$VM_T/none" 2>/dev/null || rc=$?
[ "$rc" = 1 ] || vm_fail "vm_get of a missing file: status $rc, expected 1"
# An idle guest is idle: the agent's ports that no host holds sleep (an
# agent that polled them spun, and took the guest's only CPU from the
# programs under test).  /proc/stat's idle share over 2 s, the shell
# sleeping: the rest is the agent's.
# shellcheck disable=SC2016 # expanded in the guest
idle=$(vm_exec A 'set -- $(head -n1 /proc/stat); a=$(($2+$3+$4+$5)) i=$5; sleep 2;' \
	'set -- $(head -n1 /proc/stat); echo $((100 * ($5 - i) / ($2 + $3 + $4 + $5 - a)))') ||
	vm_fail "cannot read /proc/stat in A"
[ "$idle" -ge 70 ] || vm_fail "guest A idles only $idle % of 2 s with nothing to do: $(vm_exec A 'top -bn1 | head -n 12')"
vm_say "agent: output, status, stderr, timeout (killed in the guest, ${say_t} s), put and get of 3 MiB, an idle guest $idle % idle: ok"

# --- The region ---------------------------------------------------------------
mark="shunt vm lab $$ $(date +%s.%N)"
printf '%s' "$mark" | "$VM_IVRING" -r "$VM_REGION" write 0xf00000
for g in A B; do
	got=$(vm_exec "$g" ivring read 0xf00000 ${#mark}) || vm_fail "ivring read in $g"
	[ "$got" = "$mark" ] || vm_fail "guest $g reads '$got' where the host wrote '$mark'"
done
vm_exec B "printf 'from B' | ivring write 0xf00100" || vm_fail "ivring write in B"
got=$("$VM_IVRING" -r "$VM_REGION" read 0xf00100 6)
[ "$got" = "from B" ] || vm_fail "the host reads '$got' where B wrote 'from B'"
vm_say "region: $(vm_exec A ivring info), host file $VM_REGION: written by the host, read in A and B; written in B, read by the host"

# --- TCP between the guests ---------------------------------------------------------
# tcpbench_pair WHO SRV-GUEST ADDR PORT: a checked run (client: 32 MiB
# whose every byte the server checks, then 1000 round trips of 64 B), then
# a timed stream and ping-pong against a `respond` server.  The client
# runs in A (SRV-GUEST B) or in the host's namespace (SRV-GUEST A).
tcpbench_pair() {
	local who=$1 srv=$2 addr=$3 port=$4 out line
	local run=(vm_exec A)
	[ "$srv" = A ] && run=(vm_host)
	vm_bg "$srv" "tcpsrv-$port" "$TB" server "$addr:$port"
	vm_wait_listen "$srv" "$port"
	out=$("${run[@]}" "$TB" client "$addr:$port" 32 1000) ||
		vm_fail "$who: tcpbench client: status $? ($out)"
	vm_bg_wait "$srv" "tcpsrv-$port" || vm_fail "$who: tcpbench server: status $?"
	FIG+=("$who TCP, checked 32 MiB + 1000 x 64 B: $(field MB/s "$out") MB/s, rtt $(field rtt_us "$out") us")
	vm_bg "$srv" "respond-$port" "$TB" respond "$addr:$((port + 1))"
	vm_wait_listen "$srv" $((port + 1))
	line=$("${run[@]}" "$TB" stream "$addr:$((port + 1))" "$SECS") ||
		vm_fail "$who: tcpbench stream: status $? ($line)"
	out=$("${run[@]}" "$TB" pingpong "$addr:$((port + 1))" "$SECS") ||
		vm_fail "$who: tcpbench pingpong: status $? ($out)"
	"${run[@]}" "$TB" quit "$addr:$((port + 1))" || vm_fail "$who: tcpbench quit"
	vm_bg_wait "$srv" "respond-$port" || vm_fail "$who: tcpbench respond: status $?"
	FIG+=("$who TCP, ${SECS} s stream of 128 KiB writes: $(field MB/s "$line") MB/s")
	FIG+=("$who TCP, ${SECS} s ping-pong of 64 B: rtt $(field rtt_us "$out") us (median, $(field msgs "$out") msgs)")
}
tcpbench_pair "A -> B" B "$VM_B_IP" 5201

# --- ivring between the guests ------------------------------------------------------
# ivring_guests: a stream (checked, then copied out only, as tcpbench's
# stream server does) and a ping-pong; receiving and echoing in B, sending
# in A.
ivring_guests() {
	local out rx opt what
	for opt in "" -n; do
		what="every byte checked"
		[ -z "$opt" ] || what="copied out only"
		vm_bg B ivrx$opt ivring $opt stream rx
		out=$(vm_exec A ivring stream tx "$SECS") || vm_fail "A -> B ivring stream tx: status $? ($out)"
		vm_bg_wait B ivrx$opt || vm_fail "A -> B ivring stream rx: status $? ($(vm_bg_out B ivrx$opt))"
		rx=$(vm_bg_out B ivrx$opt)
		[ "$(field bad "$rx")" = 0 ] && [ "$(field received "$out")" = "$(field bytes "$out")" ] ||
			vm_fail "A -> B ivring: tx '$out', rx '$rx'"
		FIG+=("A -> B ivring, ${SECS} s stream of 64 KiB messages, $what: $(field MB/s "$rx") MB/s")
	done
	vm_bg B ivpong ivring pingpong pong
	out=$(vm_exec A ivring pingpong ping "$SECS") || vm_fail "A -> B ivring ping: status $? ($out)"
	vm_bg_wait B ivpong || vm_fail "A -> B ivring pong: status $? ($(vm_bg_out B ivpong))"
	FIG+=("A -> B ivring, ${SECS} s ping-pong of 64 B: rtt $(field rtt_us "$out") us (median, $(field msgs "$out") msgs)")
}
ivring_guests

# --- TCP between a host process and guest A -------------------------------------------
tcpbench_pair "host -> A" A "$VM_A_HOST_IP" 5203

# The 4-tuple of one connection, from both sides: the host's namespace
# (ss) and guest A (/proc/net/tcp, little-endian hex).  No NAT: mirrored.
vm_host_bg hold "$TB" hold "$VM_HOST_IP:5210" 1
vm_host_wait_listen 5210
vm_bg A idle "$TB" idle "$VM_HOST_IP:5210" 1 30
for i in $(seq 100); do
	grep -q accepted "$VM_T/host-hold.out" && break
	sleep 0.05
done
host_tuple=$(vm_host ss -Htn state established '( sport = :5210 )' | awk '{ print $3, $4; exit }')
guest_tuple=$(vm_exec A "awk 'NR > 1 && \$4 == \"01\" && \$3 ~ /:$(printf %04X 5210)\$/ { print \$2, \$3; exit }' /proc/net/tcp")
# hexaddr HEX:PORT -> a.b.c.d:port
hexaddr() {
	local h=${1%%:*} p=${1##*:}
	printf '%d.%d.%d.%d:%d' 0x"${h:6:2}" 0x"${h:4:2}" 0x"${h:2:2}" 0x"${h:0:2}" 0x"$p"
}
[ -n "$host_tuple" ] && [ -n "$guest_tuple" ] ||
	vm_fail "no established connection to :5210 (host '$host_tuple', guest '$guest_tuple')"
read -r hl hr <<<"$host_tuple"
read -r gl gr <<<"$guest_tuple"
gl=$(hexaddr "$gl")
gr=$(hexaddr "$gr")
[ "$hl" = "$gr" ] && [ "$hr" = "$gl" ] ||
	vm_fail "4-tuple: the host sees $hl <- $hr, guest A sees $gl -> $gr"
vm_bg_stop A idle "$VM_LAST_BG"
vm_say "host <-> A: one connection, the same 4-tuple on both sides: host $hl <- $hr, guest A $gl -> $gr"

# --- ivring between a host process and guest A ------------------------------------------
# At 8 MiB into the region, away from the guests' pair at 0.
out_rx=$VM_T/host-ivrx.out
vm_host_bg ivrx "$VM_IVRING" -r "$VM_REGION" -o 0x800000 stream rx
pid=$VM_LAST_PID
out=$(vm_exec A ivring -o 0x800000 stream tx "$SECS") || vm_fail "A -> host ivring tx: status $? ($out)"
wait "$pid" || vm_fail "A -> host ivring rx: status $? ($(cat "$out_rx"))"
[ "$(field bad "$(cat "$out_rx")")" = 0 ] || vm_fail "A -> host ivring: $(cat "$out_rx")"
FIG+=("A -> host ivring, ${SECS} s stream of 64 KiB messages: $(field MB/s "$(cat "$out_rx")") MB/s")
vm_host_bg ivpong "$VM_IVRING" -r "$VM_REGION" -o 0x800000 pingpong pong
pid=$VM_LAST_PID
out=$(vm_exec A ivring -o 0x800000 pingpong ping "$SECS") || vm_fail "A -> host ivring ping: status $? ($out)"
wait "$pid" || vm_fail "A -> host ivring pong: status $?"
FIG+=("A -> host ivring, ${SECS} s ping-pong of 64 B: rtt $(field rtt_us "$out") us (median)")

# --- A crash ----------------------------------------------------------------------------------
# A command waiting in B when B dies: its vm_exec returns 125 at once;
# after, the agent sockets refuse; A is unaffected.
t=$(vm_now)
(vm_exec B 'sleep 30' >/dev/null 2>&1) &
waiter=$!
sleep 0.5
vm_kill B
rc=0
wait "$waiter" || rc=$?
[ "$rc" = 125 ] || vm_fail "vm_exec in a guest killed under it: status $rc, expected 125"
rc=0
"$VM_AGENT" exec "$(vm_socks B)" 10 true 2>/dev/null || rc=$?
[ "$rc" = 125 ] || vm_fail "vm_exec in a killed guest: status $rc, expected 125"
[ "$(vm_exec A echo alive)" = alive ] || vm_fail "A does not answer after B was killed"
vm_say "vm_kill B under a running vm_exec: it returned 125 ($(vm_since "$t") s with the 0.5 s before the kill); A still answers"

vm_say "figures (TCG, $(nproc) host CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)):"
vm_say "  boot, QEMU start to agent ready: A ${VM_BOOT[A]} s, B ${VM_BOOT[B]} s (in parallel)"
for f in "${FIG[@]}"; do
	vm_say "  $f"
done
vm_say "wall time $(vm_since "$T0") s"
exit 0
