#!/usr/bin/env bash
# t_apps_redis: redis-server (no persistence, private port) and its clients
# under shunt.
#  * redis-cli stores a random 100 KiB binary value and reads it back
#    unchanged: each a connection of a few calls and under 256 KiB, which
#    stays on TCP by design ("stays on TCP: short" at both ends).
#  * 64 pipelined SET/GET pairs of 16 KiB values come back in order (socat
#    as the client, 1 MiB each way), then GET bursts of all 64 until the
#    shim has logged "upgraded" at both ends (a connection moves after 16
#    data calls, once both ends stepped through the meeting on their own
#    calls), and once more: during that last 1 MiB the kernel's TCP socket
#    carries next to nothing.  socat's stdin stays open until the replies
#    are in: a client that half-closes right after its burst stays on TCP.
#  * redis-benchmark runs SET and GET with 1 and with 50 clients, 20000
#    requests per test: a new connection per client and test, each with
#    hundreds of round trips, and every one moves at both ends; the keys it
#    wrote are checked with DBSIZE, and the server counted every command.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init redis
need redis-server redis-cli redis-benchmark socat

port=$(free_port)
mkdir "$T/data"
start_server server redis-server --port "$port" --bind 127.0.0.1 --save "" \
	--appendonly no --daemonize no --dir "$T/data" --logfile "$T/redis.out" \
	--protected-mode no
srv=$LAST_PID
wait_listen "$port" "$srv"

cli() {
	local name=$1
	shift
	run_client "$name" 15 redis-cli -p "$port" "$@"
}

# A random binary 100 KiB value: SET from stdin (-x), GET it raw.  redis-cli
# adds a newline to what it prints.
rand_file "$T/v100k" 102400
[ "$(cli cli-set -x SET k <"$T/v100k")" = OK ] || fail "SET k did not answer OK"
cli cli-get --raw GET k >"$T/got" || fail "GET k: redis-cli exited with status $?"
head -c -1 "$T/got" >"$T/got.v"
same_file "$T/v100k" "$T/got.v" "GET of a 100 KiB value"
[ "$(cli cli-strlen STRLEN k)" = 102400 ] || fail "STRLEN k is not 102400"
say "100 KiB value: SET, GET, STRLEN agree"
# Each of the three, and the server's end of each, stayed on TCP: short.
for i in $(seq 1 40); do
	[ "$(count_stays short "$T/server.log")" -ge 3 ] && break
	sleep 0.05
done
assert_not_accelerated "$T/cli-set.log" "$T/cli-get.log" "$T/cli-strlen.log" "$T/server.log"
for c in cli-set cli-get cli-strlen; do assert_stays short 1 "$T/$c.log"; done
assert_stays short 3 "$T/server.log"

# 64 SET/GET pairs of 16 KiB text values (1 MiB each way) written in one
# go by socat, so that replies come back while requests are still being
# written (redis-cli would wait for each reply).  Inline commands, RESP
# replies; QUIT at the end makes the server close, which ends socat.
: >"$T/pipe.in"
: >"$T/pipe.want"
: >"$T/gets"
: >"$T/gets.want"
for i in $(seq 1 64); do
	v=$(head -c 12288 /dev/urandom | base64 -w0)
	printf 'SET p%d %s\r\nGET p%d\r\n' "$i" "$v" "$i" >>"$T/pipe.in"
	printf 'GET p%d\r\n' "$i" >>"$T/gets"
	# shellcheck disable=SC2016 # a literal $ (RESP bulk string)
	printf '+OK\r\n$16384\r\n%s\r\n' "$v" >>"$T/pipe.want"
	# shellcheck disable=SC2016
	printf '$16384\r\n%s\r\n' "$v" >>"$T/gets.want"
done
gets_size=$(wc -c <"$T/gets.want")
# wait_got SIZE: until socat has written SIZE bytes of replies (20 s).
wait_got() {
	local i
	for ((i = 0; i < 400; i++)); do
		[ "$(wc -c <"$T/pipe.got")" -ge "$1" ] && return 0
		sleep 0.05
	done
}
moved_both() { [ "$(count_upgraded "$T/server.log")" -ge 1 ] && [ "$(count_upgraded "$T/pipe.log")" -ge 1 ]; }
# feed: socat's stdin, open until the end: each burst sent once the replies
# to the one before are in; the number of GET bursts in $T/bursts, the
# kernel's TCP bytes on the server's socket around the last in $T/kbytes.
feed() {
	local expect bursts=0 r k0
	expect=$(wc -c <"$T/pipe.want")
	cat "$T/pipe.in"
	wait_got "$expect"
	for ((r = 0; r < 20; r++)); do
		{ [ "$APPS_TCP" = 1 ] || moved_both; } && break
		cat "$T/gets"
		bursts=$((bursts + 1)) expect=$((expect + gets_size))
		wait_got "$expect"
	done
	k0=$(kernel_tcp_bytes "$port")
	cat "$T/gets"
	bursts=$((bursts + 1)) expect=$((expect + gets_size))
	wait_got "$expect"
	echo "$k0 $(kernel_tcp_bytes "$port")" >"$T/kbytes"
	echo "$bursts" >"$T/bursts"
	printf 'QUIT\r\n'
}
: >"$T/pipe.got"
feed | run_client pipe 60 socat -t 10 - "TCP:127.0.0.1:$port" >"$T/pipe.got" ||
	fail "the pipelining socat client exited with status $?"
for ((i = 0; i < $(cat "$T/bursts"); i++)); do cat "$T/gets.want"; done >>"$T/pipe.want"
printf '+OK\r\n' >>"$T/pipe.want"
same_file "$T/pipe.want" "$T/pipe.got" "64 pipelined SET/GET pairs and $(cat "$T/bursts") bursts of 64 GETs"
read -r k0 k1 <"$T/kbytes"
last=$((gets_size + $(wc -c <"$T/gets")))
say "pipeline: 64 SET/GET pairs of 16 KiB values, then $(cat "$T/bursts") bursts of 64 GETs, returned intact; the kernel's TCP carried $((k1 - k0)) bytes of the last $last"
if [ "$APPS_TCP" = 1 ]; then
	[ $((k1 - k0)) -gt $((last * 9 / 10)) ] ||
		fail "plain TCP: the kernel carried only $((k1 - k0)) bytes of $last (broken probe?)"
else
	assert_accelerated 1 "$T/server.log"
	assert_accelerated 1 "$T/pipe.log"
	[ $((k1 - k0)) -lt $((last / 20)) ] ||
		fail "moved, yet the kernel's TCP socket carried $((k1 - k0)) of the last $last bytes"
fi
server_before_bench=$(count_upgraded "$T/server.log")

# redis-benchmark: GET and SET, 20000 requests each, 1 and 50 clients.
for c in 1 50; do
	run_client "bench-c$c" 40 redis-benchmark -p "$port" -t set,get -n 20000 -c "$c" --csv \
		>"$T/bench-c$c.out" 2>&1 || fail "redis-benchmark -c $c exited with status $?"
	for t in SET GET; do
		rps=$(awk -F'"' -v t="$t" '$2 == t { print $4 }' "$T/bench-c$c.out")
		[ -n "$rps" ] && awk -v r="$rps" 'BEGIN { exit !(r > 0) }' ||
			fail "redis-benchmark -c $c: no $t rate"
		say "redis-benchmark -c $c: $t $rps requests/s"
	done
done
# Benchmark SETs went to key:__rand_int__; with the test's own keys the
# database must hold 1 + 64 + that one.
n=$(cli cli-dbsize DBSIZE)
[ "$n" = 66 ] || fail "DBSIZE is $n, expected 66"
# The server counted every command of the two benchmark runs.
calls=$(cli cli-info INFO commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_(get|set):/ { s += $2 } END { print s + 0 }')
[ "$calls" -ge 80000 ] || fail "the server counted $calls GET/SET calls, expected >= 80000"
say "server: $n keys, $calls GET/SET calls"

kill -0 "$srv" 2>/dev/null || fail "redis-server died"
# Every benchmark client's connection, 2 tests x (1 + 50) clients, moved at
# both ends.
assert_accelerated 2 "$T/bench-c1.log"
assert_accelerated 100 "$T/bench-c50.log"
if [ "$APPS_TCP" != 1 ]; then
	n=$(($(count_upgraded "$T/server.log") - server_before_bench))
	[ "$n" -ge 102 ] || fail "the server's ends of the benchmarks' 102 connections: $n upgraded"
fi
say pass
