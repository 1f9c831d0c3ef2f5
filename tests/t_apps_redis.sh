#!/usr/bin/env bash
# t_apps_redis: redis-server (no persistence, private port) and its clients
# under shunt.  redis-cli stores a random 100 KiB binary value and reads it
# back unchanged, and 64 pipelined SET/GET pairs of 16 KiB values come back
# in order (socat as the client); then
# redis-benchmark runs SET and GET with 1 and with 50 clients, and the keys
# it wrote are checked with DBSIZE.
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

# 64 SET/GET pairs of 16 KiB text values (1 MiB each way) written in one
# go by socat, so that replies come back while requests are still being
# written (redis-cli would wait for each reply).  Inline commands, RESP
# replies; QUIT makes the server close, which ends socat.
: >"$T/pipe.in"
: >"$T/pipe.want"
for i in $(seq 1 64); do
	v=$(head -c 12288 /dev/urandom | base64 -w0)
	printf 'SET p%d %s\r\nGET p%d\r\n' "$i" "$v" "$i" >>"$T/pipe.in"
	# shellcheck disable=SC2016 # a literal $ (RESP bulk string)
	printf '+OK\r\n$16384\r\n%s\r\n' "$v" >>"$T/pipe.want"
done
printf 'QUIT\r\n' >>"$T/pipe.in"
printf '+OK\r\n' >>"$T/pipe.want"
run_client pipe 15 socat -t 10 - "TCP:127.0.0.1:$port" <"$T/pipe.in" >"$T/pipe.got" ||
	fail "the pipelining socat client exited with status $?"
same_file "$T/pipe.want" "$T/pipe.got" "64 pipelined SET/GET pairs"
say "pipeline: 64 SET/GET pairs of 16 KiB values returned intact"

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
assert_accelerated 50 "$T/server.log"
assert_accelerated 1 "$T/cli-get.log"
assert_accelerated 1 "$T/pipe.log"
assert_accelerated 50 "$T/bench-c50.log"
say pass
