#!/usr/bin/env bash
# t_apps_iperf3: iperf3 server and client both under shunt.  A 3 s upload
# and a 1 s download (-R): the receiver got what the sender sent, less at
# most what the buffers held at the end (iperf3 -J), and the data
# connections moved to shared memory at both ends: the shim logged
# "upgraded" in server and client, `shunt stat --json` (read from each
# process family's arena) listed both ends of the live upload in state
# "moved", and the kernel's TCP socket carried under 1/100 of the bytes.
# Installed as build/tests/t_apps_iperf3; the helpers stay in tests/.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init iperf3
need iperf3 jq

port=$(free_port)
start_server server iperf3 -s -p "$port" -B 127.0.0.1
srv=$LAST_PID
wait_listen "$port" "$srv"

# check_json FILE WHAT SLACK: iperf3 succeeded and no byte was lost.  The
# receiver stops counting when the test ends, so bytes still in the socket
# buffers (or the ring) then are sent but never counted: received may fall
# short of sent by up to SLACK (seen over TCP: up to ~7 MB), never exceed it.
check_json() {
	local err sent recvd slack=$3
	err=$(jq -r '.error // empty' "$1") || fail "$2: iperf3 wrote no JSON"
	[ -z "$err" ] || fail "$2: iperf3: $err"
	sent=$(jq -r '.end.sum_sent.bytes' "$1")
	recvd=$(jq -r '.end.sum_received.bytes' "$1")
	say "$2: sent $sent bytes, received $recvd ($(jq -r '.end.sum_received.bits_per_second / 1e9 | floor' "$1") Gbit/s)"
	[ "$recvd" -gt 0 ] 2>/dev/null || fail "$2: nothing received"
	[ "$recvd" -le "$sent" ] && [ $((sent - recvd)) -le "$slack" ] ||
		fail "$2: sent $sent bytes but $recvd arrived"
}

# Upload, 3 s, 128 KiB writes.  Half-way, look at the live connection from
# outside: the kernel's byte counts and `shunt stat`.
run_client up 10 iperf3 -c 127.0.0.1 -p "$port" -t 3 -l 128K -J >"$T/up.json" 2>"$T/up.err" &
cli=$!
sleep 1.5
kbytes=$(kernel_tcp_bytes "$port")
stat_ok=0
if [ "$APPS_TCP" != 1 ]; then
	for _ in 1 2 3 4 5; do
		if stat_has_port "$port"; then stat_ok=1; break; fi
		sleep 0.1
	done
	"$SHUNT_BIN" stat >"$T/stat.out" 2>&1 || true
fi
wait "$cli" || fail "upload: iperf3 client exited with status $?"
check_json "$T/up.json" upload $((16 << 20))

recvd=$(jq -r '.end.sum_received.bytes' "$T/up.json")
say "kernel TCP bytes on the server's sockets at 1.5 s: $kbytes (of $recvd in 3 s)"
if [ "$APPS_TCP" = 1 ]; then
	# The probe itself works: over TCP the kernel carries the data.
	[ "$kbytes" -gt $((recvd / 20)) ] ||
		fail "plain TCP: the kernel carried only $kbytes bytes of $recvd (broken probe?)"
else
	[ "$kbytes" -lt $((recvd / 100)) ] ||
		fail "the kernel's TCP sockets carried $kbytes bytes: the data did not go through shared memory"
	[ "$stat_ok" = 1 ] ||
		fail "shunt stat --json did not list the live connection to port $port"
fi

# Download: the server sends (the other ring direction).
run_client down 10 iperf3 -c 127.0.0.1 -p "$port" -t 1 -l 128K -R -J >"$T/down.json" 2>"$T/down.err" ||
	fail "download: iperf3 client exited with status $?"
check_json "$T/down.json" download $((16 << 20))

# Each run has a control and a data connection.
assert_accelerated 2 "$T/server.log"
assert_accelerated 1 "$T/up.log"
assert_accelerated 1 "$T/down.log"
say pass
