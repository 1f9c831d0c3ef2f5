#!/usr/bin/env bash
# t_apps_haproxy: haproxy (`mode tcp`, `option splice-auto`: it moves bytes
# between its two sockets with splice() through pipes of its own, which
# block) in front of a socat echo server (`TCP-LISTEN,fork EXEC:cat`), both
# under shunt.
#  * plain: the client (socat) does not run shunt.  haproxy's side towards
#    it stays on TCP, its side towards the echo server moves: haproxy
#    splices the client's socket into a pipe and the pipe into the moved
#    socket, and the moved socket into a pipe on the way back.  A splice
#    with SPLICE_F_NONBLOCK from a moved socket used to write all the ring
#    had into the pipe: haproxy blocked for good in a write to its own full
#    pipe, within 1 to 4 connections of 32 MiB.
#  * shunt: the client runs shunt too, and both of haproxy's sides move.
# Each: 3 connections in sequence, 16 MiB of random data sent and echoed
# back, the echo compared, the moves counted in the logs.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

PATH=$PATH:/usr/sbin
apps_init haproxy
need haproxy socat

rand_file "$T/in" $((16 << 20))
bport=$(free_port)
start_server echo socat "TCP-LISTEN:$bport,bind=127.0.0.1,reuseaddr,fork" EXEC:cat
wait_listen "$bport" "$LAST_PID"
hport=$(free_port)
cat >"$T/haproxy.cfg" <<CFG
global
	nbthread 1
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	option splice-auto
frontend front
	bind 127.0.0.1:$hport
	default_backend echo
backend echo
	server echo 127.0.0.1:$bport
CFG
start_server haproxy haproxy -db -f "$T/haproxy.cfg"
hap=$LAST_PID
wait_listen "$hport" "$hap"

for kind in plain shunt; do
	for i in 1 2 3; do
		name=$kind-client$i
		if [ $kind = plain ]; then
			timeout -k 2 60 socat -t 20 - "TCP:127.0.0.1:$hport" <"$T/in" >"$T/out" 2>"$T/$name.err"
		else
			paced_feed "$T/in" | run_client "$name" 60 socat -t 20 - "TCP:127.0.0.1:$hport" \
				>"$T/out" 2>"$T/$name.err"
		fi || fail "$kind, connection $i: the socat client exited with status $? (haproxy" \
			"waits in $(cat /proc/"$hap"/wchan 2>/dev/null))"
		same_file "$T/in" "$T/out" "$kind, connection $i: the echo"
		[ $kind = plain ] || assert_accelerated 1 "$T/$name.log"
	done
	say "$kind client: 3 connections echoed 16 MiB each intact through haproxy's pipes"
done
kill -0 "$hap" 2>/dev/null || fail "haproxy died"
# haproxy's side towards the echo server moved each time, and its side
# towards the shunt clients: 9.  The echo server's children: 6.
assert_accelerated 9 "$T/haproxy.log"
assert_accelerated 6 "$T/echo.log"
say "haproxy with splice-auto: 6 connections, every byte back, $(count_upgraded "$T/haproxy.log") moves in haproxy"
