#!/usr/bin/env bash
# t_apps_plain_clients: a server under shunt whose clients run without it.
#
# A threaded Python echo server, and clients that are plain programs (no
# LD_PRELOAD): 4 connections one after the other, each 3000 round trips of
# 64 bytes, then 4 MiB echoed in 64 KiB pieces, every byte checked by the
# client.  Run twice in one test: the server without the shim (TCP), then
# under it.  Under it every connection must stay on TCP, intact, and since
# each makes thousands of calls (the shim looks for the peer at 16 and then
# gives up), the server logs "stays on TCP: nopeer" once per connection and
# never "upgraded".  Both rates are printed; nothing is asserted of them
# (the issue "Never slower than TCP" wants them seen side by side).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init plain_clients
need python3

# The interpreter itself, not a wrapper such as pyenv's shim script.
py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || skip "no working python3"
say "$py, $("$py" -V 2>&1)"

conns=4 rtt=3000 bulk=$((4 << 20))

cat >"$T/server.py" <<'PY'
import socket, sys, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(64)
print("ready", flush=True)
def serve(c):
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                return
            c.sendall(b)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY

cat >"$T/client.py" <<'PY'
import hashlib, socket, sys, time
port, conns, rtt, bulk = (int(a) for a in sys.argv[1:5])
def stream(seed, n):
    out, i = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(b"%d-%d" % (seed, i)).digest()
        i += 1
    return bytes(out[:n])
def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            sys.exit("end of stream with %d of %d bytes" % (len(buf), n))
        buf += b
    return bytes(buf)
small = stream(1, 64 * rtt)
big = stream(2, bulk)
t0 = time.monotonic()
for c in range(conns):
    s = socket.create_connection(("127.0.0.1", port))
    for i in range(rtt):
        piece = small[64 * i:64 * (i + 1)]
        s.sendall(piece)
        if recv_exact(s, 64) != piece:
            sys.exit("connection %d: round trip %d came back wrong" % (c, i))
    for off in range(0, bulk, 65536):
        piece = big[off:off + 65536]
        s.sendall(piece)
        if recv_exact(s, len(piece)) != piece:
            sys.exit("connection %d: the echo at %d came back wrong" % (c, off))
    s.shutdown(socket.SHUT_WR)
    if s.recv(1) != b"":
        sys.exit("connection %d: bytes after the echo" % c)
    s.close()
dt = time.monotonic() - t0
print("%.3f %d" % (dt, conns * 2 * (64 * rtt + bulk)))
PY

# round NAME WRAP...: the server (under WRAP), the plain client; sets rate.
round() {
	local name=$1 port i out
	shift
	port=$(free_port)
	"$@" "$py" "$T/server.py" "$port" >"$T/$name.out" 2>&1 </dev/null &
	LAST_PID=$!
	APPS_PIDS+=("$LAST_PID")
	for ((i = 0; i < 200; i++)); do
		grep -qx ready "$T/$name.out" && break
		kill -0 "$LAST_PID" 2>/dev/null || fail "$name: the server exited before it was ready"
		sleep 0.05
	done
	grep -qx ready "$T/$name.out" || fail "$name: the server is not ready after 10 s"
	# The client: no LD_PRELOAD whatever the caller's environment.
	out=$(timeout -k 2 60 env -u LD_PRELOAD "$py" "$T/client.py" "$port" "$conns" "$rtt" "$bulk" 2>&1) ||
		fail "$name: the client failed: $out"
	stop_server "$LAST_PID"
	rate=$(awk -v l="$out" 'BEGIN { split(l, a, " "); printf "%.1f", a[2] / a[1] / 1e6 }')
	say "$name: $conns connections, $rtt round trips and $((bulk >> 20)) MiB echoed each, intact: $(echo "$out" | cut -d' ' -f1) s, $rate MB/s"
}

round "server without the shim" env
tcp_rate=$rate
shunt_env server
round "server under the shim" "${SHUNT_ENV[@]}"
say "server rate: without the shim $tcp_rate MB/s, with it $rate MB/s (ratio $(ratio "$rate" "$tcp_rate"); not asserted)"

if [ "$APPS_TCP" = 1 ]; then
	say "plain TCP mode: the shim's log is not checked"
	say pass
	exit 0
fi
up=$(count_upgraded "$T/server.log")
nopeer=$(grep -c 'stays on TCP: nopeer' "$T/server.log" || true)
say "the server's log: $nopeer \"stays on TCP: nopeer\", $up \"upgraded\""
[ "$up" = 0 ] || fail "the server logged $up upgraded connection(s) with clients that have no shim"
[ "$nopeer" = "$conns" ] || fail "the server logged \"stays on TCP: nopeer\" $nopeer times, not once per connection ($conns)"
say pass
