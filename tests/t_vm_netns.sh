#!/usr/bin/env bash
# test-timeout: 300
# test-retry: 1
# t_vm_netns: the ivshmem medium without QEMU, two ways.
#   1. Two network namespaces joined by a veth pair stand for two guests;
#      their processes share a region file (SHUNT_IVSHMEM=PATH, no address
#      list: the library sends a peer through the region because its
#      address is not one of its own namespace's).  tcpbench checks every
#      byte and the connection moved ("ivshmem medium" in both logs, the
#      region's slot, a small part of the bytes on the veth); a server whose
#      library has no region (SHUNT_IVSHMEM=none) keeps its client on TCP,
#      every byte intact; a client and server in one namespace talking over
#      its own address keep to the local medium.
#   2. The shim's test programs (t_shim_connect, data, epoll, fds, flags,
#      poll, close)
#      again, with SHUNT_CONFIG sending their loopback connections through
#      a region: the same checks over the ivshmem medium; and one case,
#      opt_peer_idle, 40 times with both CPUs busy.
#   0. `shunt vm region` refuses a mode every user may open, and a file
#      another user made first.
# At the end no slot is in use and no offer left.  Root for part 1 (else
# skipped, part 2 still runs).  About 100 s.  Run again once if it fails:
# under the load of the other tests a meeting may find its peer too late
# for a short connection, which then stays on TCP by design (three times
# in CI, 12-07: "within A: stays on TCP: nopeer", each time in the first
# run and not the second, never alone: 64 MiB now where it was 16, and a
# failure shows the server's log too).
set -u
B=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
TB=$B/examples/tcpbench
SH=$B/shunt
[ -x "$TB" ] && [ -x "$SH" ] || { echo "skip: no $TB or $SH (make)"; exit 77; }
[ -d /dev/shm ] && [ -w /dev/shm ] || { echo "skip: no writable /dev/shm"; exit 77; }
T=$(mktemp -d /tmp/shunt-vmns-XXXXXX)
R=/dev/shm/shunt-vmns-$$
NA=shvns-a-$$ NB=shvns-b-$$
cleanup() {
	[ -n "${pids:-}${hogs:-}" ] && kill $pids $hogs 2>/dev/null
	ip netns del "$NA" 2>/dev/null
	ip netns del "$NB" 2>/dev/null
	rm -rf "$T" "$R" "$R-2" "$R-m" "$R-sq"
}
trap cleanup EXIT
fail() {
	echo "FAIL: t_vm_netns: $*"
	for f in "$T"/*.log "$T"/*.out; do
		[ -s "$f" ] && { echo "--- ${f##*/}"; tail -n 8 "$f"; }
	done
	exit 1
}
say() { echo "t_vm_netns: $*"; }
pids= hogs=

# --- 0. A region whoever can open reads every connection in ----------------------
# `shunt vm region` makes none that every user may open, and takes no file
# another user made first (in /dev/shm, before us, open to all: a helper's
# attack read a root server's bytes out of it); the library's side is
# t_shim_vm not_ours.
if "$SH" vm region "$R-m" 16M --mode 0666 >"$T/mode.out" 2>&1; then
	fail "shunt vm region --mode 0666 made a region every user may open"
fi
grep -q "no other user may open" "$T/mode.out" || fail "--mode 0666: $(cat "$T/mode.out")"
rm -f "$R-m"
if [ "$(id -u)" -eq 0 ]; then
	truncate -s 16M "$R-sq" && chown nobody "$R-sq" && chmod 0666 "$R-sq" || fail "cannot make $R-sq"
	if "$SH" vm region "$R-sq" 16M >"$T/sq.out" 2>&1; then
		fail "shunt vm region took a file of nobody's, mode 0666: $(cat "$T/sq.out")"
	fi
	grep -q "owned by another user" "$T/sq.out" || fail "another user's file: $(cat "$T/sq.out")"
	cmp -s -n 16777216 "$R-sq" /dev/zero || fail "another user's file was written"
	say "a region open to every user, or another user's file, is refused: $(head -n 1 "$T/sq.out")"
	rm -f "$R-sq"
fi

# --- 1. Two namespaces -------------------------------------------------------------
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null; then
	say "not root: the two-namespace part is skipped"
elif ! ip netns add "$NA" 2>/dev/null; then
	say "cannot make network namespaces: that part is skipped"
else
	ip netns add "$NB" || fail "ip netns add $NB"
	ip link add "shva$$" type veth peer name "shvb$$" || fail "no veth"
	ip link set "shva$$" netns "$NA"
	ip link set "shvb$$" netns "$NB"
	ip -n "$NA" addr add 169.254.9.1/24 dev "shva$$"
	ip -n "$NB" addr add 169.254.9.2/24 dev "shvb$$"
	for n in "$NA:shva$$" "$NB:shvb$$"; do
		ip -n "${n%%:*}" link set lo up
		ip -n "${n%%:*}" link set "${n#*:}" up
	done
	"$SH" vm region "$R" 16M >/dev/null || fail "shunt vm region $R"
	run() { # NS LOG ENV... -- CMD...: under the library in namespace NS
		local ns=$1 log=$2
		shift 2
		timeout 60 ip netns exec "$ns" env SHUNT_LOG=info SHUNT_LOG_FILE="$T/$log.log" "$@"
	}
	veth_bytes() {
		ip netns exec "$NA" cat /sys/class/net/shva$$/statistics/{rx,tx}_bytes | awk '{ s += $1 } END { print s }'
	}
	wait_port() {
		for _ in $(seq 100); do
			ip netns exec "$1" ss -Htln "sport = :$2" | grep -q . && return 0
			sleep 0.05
		done
		fail "nothing listens on $2 in $1"
	}

	# A client in A, the server in B, both with the region.
	run "$NB" srv1 SHUNT_IVSHMEM="$R" "$SH" run -- "$TB" server 169.254.9.2:5501 >"$T/srv1.out" 2>&1 &
	pids="$pids $!"
	wait_port "$NB" 5501
	before=$(veth_bytes)
	out=$(run "$NA" cli1 SHUNT_IVSHMEM="$R" "$SH" run -- "$TB" client 169.254.9.2:5501 64 1000) ||
		fail "A -> B: tcpbench client: status $? ($out)"
	wait "${pids##* }" || fail "A -> B: tcpbench server: status $?"
	after=$(veth_bytes)
	grep -q "upgraded: .*ivshmem medium" "$T/cli1.log" || fail "A -> B: the client did not move"
	grep -q "upgraded: .*ivshmem medium" "$T/srv1.log" || fail "A -> B: the server did not move"
	[ $((after - before)) -lt $((16 << 20)) ] || fail "A -> B: the veth moved $((after - before)) bytes"
	bytes=$("$SH" vm show "$R" | awk '$1 == "slot" && /:5501[ ,]/ { for (i = 1; i < NF; i++) if ($i == "bytes") print $(i + 1) }')
	[ "${bytes:-0}" -gt $((48 << 20)) ] || fail "A -> B: the region's slot carried ${bytes:-0} bytes"
	say "namespaces, both with the region: $out; the region carried $bytes bytes, the veth $((after - before))"

	# The server has no region: its client stays on TCP, intact.
	run "$NB" srv2 SHUNT_IVSHMEM=none "$SH" run -- "$TB" server 169.254.9.2:5502 >"$T/srv2.out" 2>&1 &
	pids="$pids $!"
	wait_port "$NB" 5502
	before=$(veth_bytes)
	out=$(run "$NA" cli2 SHUNT_IVSHMEM="$R" "$SH" run -- "$TB" client 169.254.9.2:5502 16 100) ||
		fail "to a server without the region: status $? ($out)"
	wait "${pids##* }" || fail "to a server without the region: the server failed"
	after=$(veth_bytes)
	! grep -q "upgraded" "$T/cli2.log" || fail "to a server without the region: moved"
	[ $((after - before)) -ge $((16 << 20)) ] || fail "to a server without the region: the veth moved only $((after - before)) bytes"
	say "a server without the region: $out, on TCP ($((after - before)) bytes on the veth)"

	# Both in namespace A, over its own address: the local medium.
	run "$NA" srv3 SHUNT_IVSHMEM="$R" "$SH" run -- "$TB" server 169.254.9.1:5503 >"$T/srv3.out" 2>&1 &
	pids="$pids $!"
	wait_port "$NA" 5503
	# As long as A -> B's (64 MiB, 1000 round trips): with 16 MiB and
	# 100, done in some 20 ms, the server's meeting came too late for it
	# under CI's load, twice in a week ("nopeer").
	out=$(run "$NA" cli3 SHUNT_IVSHMEM="$R" "$SH" run -- "$TB" client 169.254.9.1:5503 64 1000) ||
		fail "within A: status $? ($out)"
	wait "${pids##* }" || fail "within A: the server failed"
	grep -q "upgraded: .*local medium" "$T/cli3.log" ||
		fail "within A: not the local medium: $(cat "$T/cli3.log"); the server's log: $(cat "$T/srv3.log" 2>&1)"
	say "within one namespace, its own address: $out, local medium"
	show=$("$SH" vm show "$R")
	! grep -q "in use\|answered\|^offer" <<<"$show" || fail "left in the region: $show"
fi

# --- 2. The shim's tests over a region --------------------------------------------------
"$SH" vm region "$R-2" 32M --ring 512k >/dev/null || fail "shunt vm region $R-2"
printf 'ivshmem %s 127.0.0.0/8\n' "$R-2" >"$T/conf"
# Left out over a region: scm_rights_unread, a hand-over with TCP bytes
# unread, which cannot go back to TCP exactly between VMs (the peer's
# kernel is not ours to ask whether its reader sleeps at the switch, so the
# switch's doorbell goes, behind those bytes; and the peer's proof follows
# its switch offset, so the unread bytes do not go back by the ring:
# docs/design.md, Limits); and its two variants, _armed and _rung, for the
# same reasons.  And scm_rights_past_back and _full: between VMs a read
# that took the peer's data past its way back is reset (the proof, again),
# and with its reader held off the CPU the connection does not even move.
# And counted_when_attached, which looks between a listener's answer and its
# dialer's attachment: through a region the dialer attaches first (it
# takes the listener's offer), so there is no such moment.  (An option
# after the peer's close needs no way back: opt_after_peer_close and
# epoll_closed_dup_back run here too; so do opt_peer_idle, opt_then_stdio,
# hup_half_back and shutdown_rdwr_peer_back: an option that needs TCP goes
# back quietly between VMs too; and peek_peer_back: a peek past the
# peer's ring end, once its proof was read, as on one host.)  And
# ring_sizes, which checks the sizes one host's rings take from the
# process's budget: a region's rings are its slots' size (512 KiB here).
# t_shim_poll runs whole: a poll or select takes the peer's proof, which
# alone woke it before (poll_across_move; poll_room_unheard_sleeps, which
# also checks that a poll for room after SHUT_RD does not spin).
skip=scm_rights_unread,scm_rights_unread_armed,scm_rights_unread_rung,scm_rights_past_back,scm_rights_past_back_full,counted_when_attached,ring_sizes
for t in t_shim_connect t_shim_data t_shim_epoll t_shim_fds t_shim_flags t_shim_poll t_shim_close; do
	[ -x "$B/tests/$t" ] || fail "no $B/tests/$t"
	SHUNT_CONFIG=$T/conf SHUNT_TEST_SKIP=$skip timeout 120 "$B/tests/$t" >"$T/$t.out" 2>&1 ||
		fail "$t over the region: status $?: $(grep -a -E '  FAIL |fail:' "$T/$t.out" | head -n 5)"
	say "$t over the region: $(grep -c '  PASS  ' "$T/$t.out") cases passed (not run: $skip)"
done
# The passes skipped above reset between VMs, loudly; they must never hand
# over a wrong byte.  A pass while the peer's way back was under way (its
# wait for room gave up: "both ends full") handed the socket over with the
# peer's doorbells and proof in the stream: its new holder read them as
# data ("byte 1048576 of the stream is wrong", 3 runs of 4).
for r in 1 2 3; do
	SHUNT_CONFIG=$T/conf SHUNT_TEST_ONLY=scm_rights_unread_armed,scm_rights_unread_rung \
		timeout 120 "$B/tests/t_shim_fds" >"$T/pass.out" 2>&1
	! grep -a "is wrong\|differ" "$T/pass.out" | head -3 | grep . ||
		fail "a pass over the region handed over a wrong byte (run $r)"
done
say "passes over the region with the peer's way back under way: reset, no wrong byte (3 runs)"
# An option that needs TCP, then a close at once, with both CPUs busy: the
# close left in our socket a doorbell the peer had rung (a wait of ours on
# its ring), the kernel's close with it unread was a reset, and it dropped
# the 300 bytes Nagle still held (the peer read ECONNRESET: 1 run in 5 under
# this load, none without it).  40 runs, each must pass.
for k in 1 2; do timeout 120 sh -c 'while :; do :; done' & hogs="$hogs $!"; done
for r in $(seq 1 40); do
	SHUNT_CONFIG=$T/conf SHUNT_TEST_ONLY=opt_peer_idle timeout 60 "$B/tests/t_shim_flags" \
		>"$T/busy.out" 2>&1 || fail "opt_peer_idle over the region, both CPUs busy: run $r failed"
done
kill $hogs 2>/dev/null
hogs=
say "an option, then a close, over the region with both CPUs busy: 40 runs passed"
show=$("$SH" vm show "$R-2")
used=$(grep -c '^slot' <<<"$show")
[ "$used" -gt 0 ] || fail "the shim's tests never used the region"
! grep -q "in use\|answered\|^offer" <<<"$show" || fail "left in the region: $(grep "in use\|answered\|^offer" <<<"$show")"
say "the shim's tests used $used slots of the region; none is left in use"
exit 0
