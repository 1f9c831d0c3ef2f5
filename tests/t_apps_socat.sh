#!/usr/bin/env bash
# t_apps_socat: echo servers made of socat and cat, under shunt.
#  * fork: `TCP-LISTEN,fork EXEC:cat`: socat forks a child per connection
#    (the listener closes its copy at once), which relays between the
#    socket and a cat it forks and execs on a socketpair (the accepted
#    socket is close-on-exec there).  3 connections in sequence: a socat
#    client sends 1 MiB of random data, its start paced (paced_feed: a
#    conversation long enough to move in), shuts down its sending side and
#    reads the echo until EOF; the echo must equal what was sent (so the
#    half-close crossed too), and each connection moved at both ends.
#  * exec: `TCP-LISTEN,fork EXEC:cat,nofork`, started with `shunt run`: the
#    forked child execs cat with the accepted socket as its stdin and
#    stdout.  The same 3 connections must come back intact; they stay on
#    TCP by design: the library cannot tell whether a program uses stdio on
#    fds 0 and 1 (which would read and write where no wrapper sees), so a
#    socket there never moves (cat logs "stays on TCP: stdio"), and the
#    client, whose peer never answers its meeting, logs why it gave up.
#  * stdio: `EXEC:date,nofork`: date writes its stdout, the socket, with
#    stdio; the client must get every byte before the end of stream.  A
#    few bytes one way stay on TCP at both ends: date's end is "short" (it
#    ends having made no call the library sees), and the client (`socat -u`)
#    shuts its sending side at once, which keeps a connection on TCP
#    ("options": a half-closed stream can carry no doorbell).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init socat
need socat

rand_file "$T/in" $((1 << 20))

for kind in fork exec; do
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
		paced_feed "$T/in" | run_client "$kind-client$i" 30 socat -t 20 - "TCP:127.0.0.1:$port" \
			>"$T/out" 2>"$T/$kind-client$i.err" ||
			fail "$kind, connection $i: the socat client exited with status $?"
		same_file "$T/in" "$T/out" "$kind, connection $i: the echo"
		if [ $kind = fork ]; then
			assert_accelerated 1 "$T/$kind-client$i.log"
		elif [ "$APPS_TCP" != 1 ]; then
			assert_not_accelerated "$T/$kind-client$i.log"
			grep -q "stays on TCP: " "$T/$kind-client$i.log" ||
				fail "exec, connection $i: the client neither moved nor said why it stayed on TCP"
		fi
	done
	say "$kind: 3 connections echoed 1 MiB each intact"
	kill -0 "$srv" 2>/dev/null || fail "$kind: the socat server died"
	# The parent accepted all 3; its children (and the exec'd cats)
	# logged into the same file.
	if [ $kind = fork ]; then
		assert_accelerated 3 "$T/$kind-server.log"
	else
		assert_not_accelerated "$T/$kind-server.log"
		assert_stays stdio 3 "$T/$kind-server.log"
	fi
done

port=$(free_port)
start_server stdio-server socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
	'EXEC:date +%s-stdio-ok,nofork'
wait_listen "$port" "$LAST_PID"
run_client stdio-client 30 socat -u "TCP:127.0.0.1:$port" - >"$T/stdio.out" ||
	fail "stdio: the socat client exited with status $?"
grep -qx '[0-9]*-stdio-ok' "$T/stdio.out" ||
	fail "stdio: date's output did not arrive: '$(cat "$T/stdio.out")'"
assert_not_accelerated "$T/stdio-client.log" "$T/stdio-server.log"
assert_stays short 1 "$T/stdio-server.log"
assert_stays options 1 "$T/stdio-client.log"
say "stdio: a program's stdio output on a socket arrived whole"
say pass
