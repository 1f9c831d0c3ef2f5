#!/usr/bin/env bash
# t_apps_netns: shunt across network namespaces.  Two namespaces made for
# the test, joined by a veth pair on a private /30 (addresses exist only
# inside them), one SHUNT_DIR:
#  1. an echo server (socat + cat) on namespace A's veth address, a client
#     in B: 3 connections echo 1 MiB each intact, the shim upgraded them,
#     and the veth carried almost none of the bytes;
#  2. a server on 127.0.0.1 in A is not reachable from B (connect fails, as
#     over TCP), though it is from A itself;
#  3. with a server on the same 127.0.0.1:PORT in each namespace, a client
#     in B reaches B's, never A's (the rendezvous must not mix them up).
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
port=$(free_port)
start_server_ns "$nsa" echo-server socat "TCP-LISTEN:$port,bind=$ipa,reuseaddr,fork" EXEC:cat
srv=$LAST_PID
wait_listen "$port" "$srv" 10 "$nsa"
rand_file "$T/in" $((1 << 20))
before=$(veth_bytes)
for i in 1 2 3; do
	run_client_ns "$nsb" "echo-client$i" 30 socat -t 20 - "TCP:$ipa:$port" <"$T/in" >"$T/out" ||
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
	[ "$vbytes" -lt $((1 << 20)) ] ||
		fail "$vbytes bytes crossed the veth: the data did not go through shared memory"
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
assert_accelerated 1 "$T/lo-client-a.log"
upgraded_a=$(count_upgraded "$T/lo-a.log")
# From B: nothing listens on B's 127.0.0.1:$lport, so connect is refused.
if got=$(run_client_ns "$nsb" lo-client-b 10 socat -t 5 -u "TCP:127.0.0.1:$lport,connect-timeout=3" - 2>"$T/lo-client-b.err"); then
	fail "B reached 127.0.0.1:$lport of namespace A (answer '$got')"
fi
grep -q -i 'refused' "$T/lo-client-b.err" ||
	fail "B -> 127.0.0.1:$lport failed, but not with 'connection refused': $(head -n 3 "$T/lo-client-b.err")"
[ "$(count_upgraded "$T/lo-a.log")" = "$upgraded_a" ] ||
	fail "A's 127.0.0.1 server upgraded a connection while B's client was refused"
[ "$(count_upgraded "$T/lo-client-b.log")" = 0 ] || fail "B's refused client logged an upgrade"
say "127.0.0.1:$lport in A: reachable from A, refused from B"

# --- 3. The same 127.0.0.1:PORT in both: each client gets its own --------
start_server_ns "$nsb" lo-b socat "TCP-LISTEN:$lport,bind=127.0.0.1,reuseaddr,fork" "EXEC:echo in-$nsb"
lob=$LAST_PID
wait_listen "$lport" "$lob" 10 "$nsb"
for i in 1 2 3; do
	for ns in "$nsb" "$nsa"; do
		got=$(run_client_ns "$ns" "same-$ns-$i" 10 socat -t 5 -u "TCP:127.0.0.1:$lport" -) ||
			fail "$ns -> 127.0.0.1:$lport: the client exited with status $?"
		[ "$got" = "in-$ns" ] || fail "a client in $ns reached '$got' at 127.0.0.1:$lport"
		assert_accelerated 1 "$T/same-$ns-$i.log"
	done
done
say "127.0.0.1:$lport in both: every client reached its own namespace's server"
assert_accelerated 3 "$T/lo-b.log"
say pass
