#!/usr/bin/env bash
# t_apps_socat: echo servers made of socat and cat, under shunt.
#  * exec: `TCP-LISTEN,fork EXEC:cat,nofork`: socat forks a child per
#    connection, which execs cat with the accepted socket as its stdin and
#    stdout; the connection must survive fork and exec.  Started with
#    `shunt run`, to cover that too.
#  * fork: the same without nofork: the forked child relays between the
#    socket and a cat on a socketpair.
# For each, 3 connections in sequence: a socat client sends 1 MiB of random
# data, shuts down its sending side, reads the echo until EOF; the echo must
# equal what was sent (so the half-close crossed too).
#  * stdio: `EXEC:date,nofork`: date writes its stdout, the socket, with
#    stdio, which bypasses the shim (README, Limitations); the client must
#    still get every byte of it before the end of stream.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init socat
need socat

rand_file "$T/in" $((1 << 20))

for kind in exec fork; do
	port=$(free_port)
	addr=EXEC:cat
	[ $kind = exec ] && addr=EXEC:cat,nofork
	if [ $kind = exec ] && [ "$APPS_TCP" != 1 ]; then
		# `shunt run` sets LD_PRELOAD itself: start it with the log
		# settings only (start_server's env would set LD_PRELOAD too).
		"$SHUNT_BIN" run -- env SHUNT_LOG=info "SHUNT_LOG_FILE=$T/$kind-server.log" \
			socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "$addr" \
			>"$T/$kind-server.out" 2>&1 </dev/null &
		LAST_PID=$!
		APPS_PIDS+=("$LAST_PID")
	else
		start_server "$kind-server" socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "$addr"
	fi
	srv=$LAST_PID
	wait_listen "$port" "$srv"
	for i in 1 2 3; do
		# -t 20: after our EOF, wait up to 20 s for the echo to end.
		run_client "$kind-client$i" 30 socat -t 20 - "TCP:127.0.0.1:$port" \
			<"$T/in" >"$T/out" 2>"$T/$kind-client$i.err" ||
			fail "$kind, connection $i: the socat client exited with status $?"
		same_file "$T/in" "$T/out" "$kind, connection $i: the echo"
		assert_accelerated 1 "$T/$kind-client$i.log"
	done
	say "$kind: 3 connections echoed 1 MiB each intact"
	kill -0 "$srv" 2>/dev/null || fail "$kind: the socat server died"
	# The parent accepted all 3; its children (and the execed cats)
	# logged into the same file.
	assert_accelerated 3 "$T/$kind-server.log"
done

port=$(free_port)
start_server stdio-server socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
	'EXEC:date +%s-stdio-ok,nofork'
wait_listen "$port" "$LAST_PID"
run_client stdio-client 30 socat -u "TCP:127.0.0.1:$port" - >"$T/stdio.out" ||
	fail "stdio: the socat client exited with status $?"
grep -qx '[0-9]*-stdio-ok' "$T/stdio.out" ||
	fail "stdio: date's output did not arrive: '$(cat "$T/stdio.out")'"
assert_accelerated 1 "$T/stdio-client.log"
say "stdio: a program's stdio output on an upgraded socket arrived"
say pass
