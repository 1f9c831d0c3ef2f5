#!/usr/bin/env bash
# test-timeout: 300
# test-retry: 1
# t_vm_move: TCP connections between two QEMU guests, and between a host
# process and a guest, move to the ivshmem region they share, with the
# programs unmodified under the preload library (tests/vm/lab.sh boots the
# guests; docs/vms.md).  examples/tcpbench checks every byte of a stream
# and times round trips:
#   - guest A (client) to guest B (server), then the roles the other way,
#     both programs run by a user without privileges whose group the
#     region's BAR file was given (docs/vms.md, "Programs that are not root")
#   - a host process (the region's file) to guest A
# Each must have moved: both ends log "upgraded ... ivshmem medium", the
# region (`shunt vm show`) holds a slot with that 4-tuple that carried at
# least half the stream (a fast host can push MiBs by TCP before the
# guest's side steps: move.c), and the guest's NICs less than half of it.
#   - guest A to a host process whose library has no region (an address
#     outside the region's VMs): stays on TCP, every byte intact
# At the end no slot is in use and no offer is left.  About 1.5 minutes.
lib=$(dirname "$0")/vm/lab.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/vm/lab.sh
# shellcheck source=tests/vm/lab.sh
. "$lib" || exit 1

vm_init vm_move
[ "$(id -u)" -eq 0 ] || vm_skip "needs root (network namespace, tap device)"
TB=$SHUNT_BUILD/examples/tcpbench
SH=$SHUNT_BUILD/shunt
[ -x "$TB" ] && [ -x "$SH" ] || vm_skip "no $TB or $SH (make)"
T0=$(vm_now)
MIB=32

vm_prepare setpriv
vm_pair
# The host formats the region the guests already map (a zero file).
"$SH" vm region "$VM_REGION" >/dev/null || vm_fail "shunt vm region $VM_REGION"

# In a guest: the library, logging to a file per program; USER=1001 runs
# it as uid 1001, gid 1000, no other group (util-linux's setpriv: busybox
# has a setpriv of its own that cannot change ids).
grun() {
	local who=''
	[ "${USER_ID:-0}" = 0 ] || who="/usr/bin/setpriv --reuid=$USER_ID --regid=1000 --clear-groups"
	echo "SHUNT_LOG=info SHUNT_LOG_FILE=/tmp/$1.log $who $SHUNT_BUILD/shunt run --"
}
# Bytes the guest's NICs moved, both ways, all of them.
nic_bytes() {
	vm_exec "$1" 'cat /sys/class/net/eth*/statistics/[rt]x_bytes' | awk '{ s += $1 } END { print s }'
}
# moved GUEST TAG PORT: the program's log says a connection with PORT
# upgraded through the ivshmem medium.
moved() {
	vm_exec "$1" "grep -Eq 'upgraded: .*:$3[ ,].*ivshmem medium' /tmp/$2.log" ||
		vm_fail "guest $1: $2 did not move the connection on port $3: $(vm_exec "$1" "cat /tmp/$2.log" | tail -n 5)"
}
# region_bytes PORT: the most bytes one slot of the region carried for a
# connection with PORT (either direction).
region_bytes() {
	"$SH" vm show "$VM_REGION" | awk -v p=":$1[ ,]" '$1 == "slot" && $0 ~ p {
		for (i = 1; i < NF; i++) if ($i == "bytes") { v = $(i + 1) + 0; if (v > m) m = v }
		for (i = 1; i < NF; i++) if ($i == "(lo->hi)") { v = $(i + 1) + 0; if (v > m) m = v } }
		END { print m + 0 }'
}

# guest_pair WHO CLIENT SERVER SERVER_IP PORT: tcpbench client in CLIENT,
# server in SERVER, under the library; checks as above.
guest_pair() {
	local who=$1 cli=$2 srv=$3 ip=$4 port=$5 out before after moved_b
	before=$(nic_bytes A)
	vm_bg "$srv" "srv$port" "$(grun "srv$port") $TB server $ip:$port"
	vm_wait_listen "$srv" "$port"
	out=$(vm_exec "$cli" "$(grun "cli$port") $TB client $ip:$port $MIB 1000") ||
		vm_fail "$who: tcpbench client: status $? ($out)"
	vm_bg_wait "$srv" "srv$port" || vm_fail "$who: tcpbench server: status $?"
	after=$(nic_bytes A)
	moved "$cli" "cli$port" "$port"
	moved "$srv" "srv$port" "$port"
	moved_b=$(region_bytes "$port")
	[ "$moved_b" -ge $((MIB << 19)) ] ||
		vm_fail "$who: the region's slot for port $port carried $moved_b bytes, not half of the $MIB MiB stream"
	[ $((after - before)) -lt $((MIB << 19)) ] ||
		vm_fail "$who: guest A's NICs moved $((after - before)) bytes for a $MIB MiB stream that moved"
	vm_say "$who: $out; the region carried $moved_b bytes, the NICs $((after - before))"
}

guest_pair "A -> B" A B "$VM_B_IP" 5301
# The BAR to group 1000 in both guests, as a udev rule would (docs/vms.md).
for g in A B; do
	vm_exec "$g" 'R=$(readlink -f /dev/ivshmem); chgrp 1000 $R && chmod 0660 $R' ||
		vm_fail "guest $g: cannot give the BAR to group 1000"
done
USER_ID=1001 guest_pair "B -> A, not root" B A "$VM_A_IP" 5302

# --- A host process and guest A ------------------------------------------------
port=5303
before=$(nic_bytes A)
vm_bg A "srv$port" "$(grun "srv$port") $TB server $VM_A_HOST_IP:$port"
vm_wait_listen A $port
out=$(vm_host env SHUNT_IVSHMEM="$VM_REGION" SHUNT_LOG=info SHUNT_LOG_FILE="$VM_T/host$port.log" \
	"$SH" run -- "$TB" client "$VM_A_HOST_IP:$port" $MIB 1000) ||
	vm_fail "host -> A: tcpbench client: status $? ($out)"
vm_bg_wait A "srv$port" || vm_fail "host -> A: tcpbench server: status $?"
after=$(nic_bytes A)
moved A "srv$port" $port
grep -q "upgraded: .*ivshmem medium" "$VM_T/host$port.log" ||
	vm_fail "host -> A: the host's client did not move: $(tail -n 5 "$VM_T/host$port.log")"
moved_b=$(region_bytes $port)
[ "$moved_b" -ge $((MIB << 19)) ] || vm_fail "host -> A: the region carried $moved_b bytes"
[ $((after - before)) -lt $((MIB << 19)) ] || vm_fail "host -> A: A's NICs moved $((after - before)) bytes"
vm_say "host -> A: $out; the region carried $moved_b bytes, A's NICs $((after - before))"

# --- An address outside the region's VMs: stays on TCP ------------------------------
port=5304
vm_host_bg out$port env SHUNT_IVSHMEM=none "$SH" run -- "$TB" server "$VM_HOST_IP:$port"
vm_host_wait_listen $port
before=$(nic_bytes A)
out=$(vm_exec A "$(grun "cli$port") $TB client $VM_HOST_IP:$port 8 200") ||
	vm_fail "A -> a host without the region: tcpbench client: status $? ($out)"
after=$(nic_bytes A)
wait "$VM_LAST_PID" || vm_fail "A -> a host without the region: tcpbench server: status $?"
! vm_exec A "grep -q 'upgraded' /tmp/cli$port.log" ||
	vm_fail "A -> a host without the region: the connection moved: $(vm_exec A "cat /tmp/cli$port.log")"
[ $((after - before)) -ge $((8 << 20)) ] ||
	vm_fail "A -> a host without the region: A's NICs moved only $((after - before)) bytes"
vm_say "A -> a host without the region: $out, on TCP ($((after - before)) bytes on A's NICs)"

# --- Nothing left behind -----------------------------------------------------------
show=$("$SH" vm show "$VM_REGION")
! grep -q "in use\|answered\|^offer" <<<"$show" ||
	vm_fail "left in the region: $(grep "in use\|answered\|^offer" <<<"$show")"
vm_say "region after: $(grep -c '^slot' <<<"$show") slots used once, all let go, no offer left"
vm_say "wall time $(vm_since "$T0") s"
exit 0
