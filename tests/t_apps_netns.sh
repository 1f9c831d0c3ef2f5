#!/usr/bin/env bash
# t_apps_netns: shunt across network namespaces.  Two namespaces made for
# the test, joined by a veth pair on a private /30 (addresses exist only
# inside them), one SHUNT_DIR:
#  1. an echo server (socat + cat) on namespace A's veth address, a client
#     in B, 1 MiB echoed, its start paced (paced_feed: long enough to move
#     in).  By default the two ends never meet: the rendezvous names are in
#     each network namespace's own abstract namespace, and a proof from
#     another namespace is refused (anyone may make up addresses in a
#     namespace of their own), so the connection stays on TCP at both ends
#     and the veth carries all of it.  With `trust-netns yes` at both ends
#     (names as files in the shared SHUNT_DIR, the namespace not checked):
#     3 connections echo 1 MiB each intact, the shim upgraded them at both
#     ends, and the veth carried under a third of the 6 MiB (only the paced
#     start, up to the move);
#  2. a server on 127.0.0.1 in A is not reachable from B (connect fails, as
#     over TCP), though it is from A itself.  These connections carry a
#     line one way and stay on TCP at both ends, each half-closed before
#     it could move ("options"): the client (`socat -u`) at once, the
#     server (socat's child, relaying from `echo`) after the line;
#  3. with an echo server that first names its namespace on the same
#     127.0.0.1:PORT in each, clients in A and in B (paced, 1 MiB) each
#     reach their own, never the other's, and move at both ends: two
#     rendezvous for the same addresses, one per namespace, never mixed up.
# Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); skips when `ip netns add` is
# not permitted.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init netns
need ip socat

nsa=shunt-a-$$ nsb=shunt-b-$$
ip netns add "$nsa" 2>"$T/netns.err" ||
	skip "ip netns add is not permitted here: $(head -n1 "$T/netns.err")"
APPS_CLEANUP+=("ip netns del '$nsa'")
ip netns add "$nsb" || fail "ip netns add $nsb failed"
APPS_CLEANUP+=("ip netns del '$nsb'")
# The pair is created inside A with its peer moved to B at once, so the host
# namespace never sees either end.
ip -n "$nsa" link add va type veth peer name vb netns "$nsb" || fail "cannot create the veth pair"
net=10.$((RANDOM % 254 + 1)).$((RANDOM % 256))
ipa=$net.1 ipb=$net.2
ip -n "$nsa" addr add "$ipa/30" dev va
ip -n "$nsb" addr add "$ipb/30" dev vb
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set va up
ip -n "$nsb" link set vb up
# Bounded wait for the link: a connect to a closed port on A's address is
# refused (status 1) once B can reach A; a timeout (124) means not yet.
for ((i = 0; i < 20; i++)); do
	rc=0
	timeout 1 ip netns exec "$nsb" bash -c "exec 3<>/dev/tcp/$ipa/9" 2>/dev/null || rc=$?
	[ $rc = 1 ] && break
	sleep 0.1
done
[ "$rc" = 1 ] || fail "B cannot reach $ipa over the veth"
say "namespaces $nsa ($ipa) and $nsb ($ipb)"

# veth_bytes: bytes through A's end of the pair, both ways.
veth_bytes() {
	ip netns exec "$nsa" cat /sys/class/net/va/statistics/rx_bytes /sys/class/net/va/statistics/tx_bytes |
		awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# --- 1. Across the veth ---------------------------------------------------
rand_file "$T/in" $((1 << 20))
# By default: on TCP.
port=$(free_port)
start_server_ns "$nsa" plain-server socat "TCP-LISTEN:$port,bind=$ipa,reuseaddr,fork" EXEC:cat
wait_listen "$port" "$LAST_PID" 10 "$nsa"
before=$(veth_bytes)
paced_feed "$T/in" | run_client_ns "$nsb" plain-client 30 socat -t 20 - "TCP:$ipa:$port" >"$T/out" ||
	fail "veth, default settings: the client exited with status $?"
same_file "$T/in" "$T/out" "veth, default settings: the echo"
vbytes=$(($(veth_bytes) - before))
[ "$vbytes" -gt $((2 << 20)) ] ||
	fail "default settings: only $vbytes bytes of 2 MiB crossed the veth (broken probe, or a move across namespaces)"
assert_not_accelerated "$T/plain-client.log" "$T/plain-server.log"
say "veth, default settings: 1 MiB echoed intact, on TCP ($vbytes bytes on the veth)"
stop_server "$LAST_PID"

# trust-netns yes at both ends: moved.
printf 'trust-netns yes\n' >"$T/trust.conf"
port=$(free_port)
start_server_ns "$nsa" echo-server env "SHUNT_CONFIG=$T/trust.conf" \
	socat "TCP-LISTEN:$port,bind=$ipa,reuseaddr,fork" EXEC:cat
srv=$LAST_PID
wait_listen "$port" "$srv" 10 "$nsa"
before=$(veth_bytes)
for i in 1 2 3; do
	paced_feed "$T/in" | run_client_ns "$nsb" "echo-client$i" 30 env "SHUNT_CONFIG=$T/trust.conf" \
		socat -t 20 - "TCP:$ipa:$port" >"$T/out" ||
		fail "veth, connection $i: the client exited with status $?"
	same_file "$T/in" "$T/out" "veth, connection $i: the echo"
	assert_accelerated 1 "$T/echo-client$i.log"
done
vbytes=$(($(veth_bytes) - before))
say "veth: 3 connections echoed 1 MiB each intact; the veth carried $vbytes bytes"
assert_accelerated 3 "$T/echo-server.log"
if [ "$APPS_TCP" = 1 ]; then
	# The probe works: over TCP all 6 MiB cross the veth.
	[ "$vbytes" -gt $((5 << 20)) ] || fail "plain TCP: only $vbytes bytes crossed the veth (broken probe?)"
else
	[ "$vbytes" -lt $((2 << 20)) ] ||
		fail "$vbytes bytes of 6 MiB crossed the veth: the data did not go through shared memory"
fi

# --- 2. 127.0.0.1 in A is not reachable from B ----------------------------
lport=$(free_port)
start_server_ns "$nsa" lo-a socat "TCP-LISTEN:$lport,bind=127.0.0.1,reuseaddr,fork" "EXEC:echo in-$nsa"
loa=$LAST_PID
wait_listen "$lport" "$loa" 10 "$nsa"
# From A itself: reachable (so the refusal below is the namespace's doing).
got=$(run_client_ns "$nsa" lo-client-a 10 socat -t 5 -u "TCP:127.0.0.1:$lport" -) ||
	fail "A -> 127.0.0.1:$lport in A: the client exited with status $?"
[ "$got" = "in-$nsa" ] || fail "A -> 127.0.0.1:$lport answered '$got'"
assert_not_accelerated "$T/lo-client-a.log" "$T/lo-a.log"
assert_stays options 1 "$T/lo-client-a.log"
assert_stays options 1 "$T/lo-a.log"
stays_a=$(grep -c "stays on TCP" "$T/lo-a.log" || true)
# From B: nothing listens on B's 127.0.0.1:$lport, so connect is refused.
if got=$(run_client_ns "$nsb" lo-client-b 10 socat -t 5 -u "TCP:127.0.0.1:$lport,connect-timeout=3" - 2>"$T/lo-client-b.err"); then
	fail "B reached 127.0.0.1:$lport of namespace A (answer '$got')"
fi
grep -q -i 'refused' "$T/lo-client-b.err" ||
	fail "B -> 127.0.0.1:$lport failed, but not with 'connection refused': $(head -n 3 "$T/lo-client-b.err")"
[ "$(grep -c "stays on TCP" "$T/lo-a.log" || true)" = "$stays_a" ] && [ "$(count_upgraded "$T/lo-a.log")" = 0 ] ||
	fail "A's 127.0.0.1 server saw a connection while B's client was refused"
# Its socket (a non-blocking connect, refused later) ends having carried
# nothing: at most that, never an upgrade.
[ "$(grep -vc 'stays on TCP: short (closed after 0 calls, 0 bytes)' "$T/lo-client-b.log" 2>/dev/null || true)" = 0 ] ||
	fail "B's refused client logged: $(head -n 2 "$T/lo-client-b.log")"
say "127.0.0.1:$lport in A: reachable from A, refused from B"

# --- 3. The same 127.0.0.1:PORT in both: each client gets its own --------
# The server names its namespace, then echoes: socat's child relays between
# the socket and a script it execs on a socketpair, so the socket is the
# child's alone and may move.  (Not SYSTEM: the process that runs system()
# keeps the socket open beside it, and a socket two processes hold stays
# on TCP.)
printf '#!/bin/sh\nprintf "in-%%s" "$1"\nexec cat\n' >"$T/namer"
chmod 755 "$T/namer"
sport=$(free_port)
for ns in "$nsa" "$nsb"; do
	start_server_ns "$ns" "same-$ns" socat "TCP-LISTEN:$sport,bind=127.0.0.1,reuseaddr,fork" \
		"EXEC:$T/namer $ns"
	wait_listen "$sport" "$LAST_PID" 10 "$ns"
done
for i in 1 2 3; do
	for ns in "$nsb" "$nsa"; do
		{ printf 'in-%s' "$ns"; cat "$T/in"; } >"$T/want"
		paced_feed "$T/in" | run_client_ns "$ns" "same-$ns-$i" 30 socat -t 20 - "TCP:127.0.0.1:$sport" >"$T/out" ||
			fail "$ns -> 127.0.0.1:$sport: the client exited with status $?"
		[ "$(head -c $((${#ns} + 3)) "$T/out")" = "in-$ns" ] ||
			fail "a client in $ns reached '$(head -c $((${#ns} + 3)) "$T/out")' at 127.0.0.1:$sport"
		same_file "$T/want" "$T/out" "$ns, connection $i: the echo"
		assert_accelerated 1 "$T/same-$ns-$i.log"
	done
done
say "127.0.0.1:$sport in both: every client reached its own namespace's server, 1 MiB echoed intact"
assert_accelerated 3 "$T/same-$nsa.log"
assert_accelerated 3 "$T/same-$nsb.log"
say pass
