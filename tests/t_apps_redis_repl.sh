#!/usr/bin/env bash
# t_apps_redis_repl: Redis replication under shunt, through the master's
# forks.
#
# A master and a replica (`--replicaof`), both under shunt, diskless full
# sync (the master forks a child that writes the snapshot into a pipe its
# main process relays to the replica).  The replication stream is one
# long-lived connection that moves to shared memory at both ends (if the
# full sync's fork held the master's end when the replica's meeting came,
# both try again later: writes go on until the replica logs the move).  Then,
# while redis-benchmark writes into the master, it forks again and again
# (BGSAVE: a child that holds a copy of every socket, the moved
# replication connection among them, and writes a snapshot to disk): the
# stream must go on through each fork and each child's exit.  At the end
# the replica must hold exactly the master's data: the same number of keys
# and the same DEBUG DIGEST, with the replica's offset caught up.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init redis_repl
need redis-server redis-cli redis-benchmark

mport=$(free_port)
rport=$(free_port)
[ "$mport" != "$rport" ] || rport=$(free_port)
mkdir "$T/m" "$T/r"
common=(--bind 127.0.0.1 --save "" --appendonly no --daemonize no --protected-mode no
	--enable-debug-command yes --repl-diskless-sync yes --repl-diskless-sync-delay 0)
start_server master redis-server --port "$mport" --dir "$T/m" --logfile "$T/m/redis.out" "${common[@]}"
msrv=$LAST_PID
wait_listen "$mport" "$msrv"

cli() {
	local port=$1
	shift
	timeout -k 2 30 redis-cli -p "$port" "$@"
}

# 20000 keys before the replica exists: the full sync carries them.
run_client load 60 redis-benchmark -p "$mport" -t set -n 20000 -r 1000000 -d 200 -q \
	>"$T/load.out" 2>&1 || fail "redis-benchmark (load) exited with status $?"
start_server replica redis-server --port "$rport" --dir "$T/r" --logfile "$T/r/redis.out" \
	"${common[@]}" --replicaof 127.0.0.1 "$mport"
rsrv=$LAST_PID
wait_listen "$rport" "$rsrv"

# in_sync: the replica's link is up and its offset is the master's.
in_sync() {
	local mo ro up
	mo=$(cli "$mport" INFO replication | tr -d '\r' | sed -n 's/^master_repl_offset://p')
	ro=$(cli "$rport" INFO replication | tr -d '\r' | sed -n 's/^slave_repl_offset://p')
	up=$(cli "$rport" INFO replication | tr -d '\r' | sed -n 's/^master_link_status://p')
	[ "$up" = up ] && [ -n "$mo" ] && [ "$mo" = "$ro" ]
}
wait_sync() {
	local i
	for ((i = 0; i < 300; i++)); do
		in_sync && return 0
		sleep 0.1
	done
	fail "$1: the replica did not catch up in 30 s ($(grep -m 3 -i 'error\|fail' "$T/r/redis.out" || true))"
}
wait_sync "the full sync"
say "full sync done: $(cli "$rport" DBSIZE) keys on the replica"

# Writes until the replication link moved at the replica (the full sync's
# fork may have held the master's end meanwhile: the ends try again later).
moved=0
for ((i = 0; i < 30; i++)); do
	[ "$APPS_TCP" = 1 ] && break
	grep -qw upgraded "$T/replica.log" 2>/dev/null && { moved=1; break; }
	run_client warm 60 redis-benchmark -p "$mport" -t set -n 5000 -r 1000000 -d 100 -q \
		>"$T/warm.out" 2>&1 || fail "redis-benchmark (warm) exited with status $?"
	sleep 0.5
done
[ "$APPS_TCP" = 1 ] || [ $moved = 1 ] || fail "the replication link did not move in 30 rounds of writes"
[ "$APPS_TCP" = 1 ] || say "the replication link moved after $i round(s) of writes"

# Writes while the master forks: BGSAVE every 0.3 s during the load.
run_client bench 120 redis-benchmark -p "$mport" -t set,lpush,incr -n 60000 -r 1000000 -d 100 \
	-c 8 -q >"$T/bench.out" 2>&1 &
bench=$!
saves=0
while kill -0 "$bench" 2>/dev/null; do
	r=$(cli "$mport" BGSAVE 2>/dev/null || true)
	case $r in "Background saving started") saves=$((saves + 1)) ;; esac
	sleep 0.3
done
wait "$bench" || fail "redis-benchmark exited with status $?"
[ "$saves" -ge 2 ] || fail "only $saves BGSAVE fork(s) ran during the writes"
wait_sync "after $saves forks"

mk=$(cli "$mport" DBSIZE)
rk=$(cli "$rport" DBSIZE)
md=$(cli "$mport" DEBUG DIGEST)
rd=$(cli "$rport" DEBUG DIGEST)
[ "$mk" = "$rk" ] || fail "the master holds $mk keys, the replica $rk"
[ "$md" = "$rd" ] || fail "the master's digest is $md, the replica's $rd"
say "replica identical to the master: $mk keys, digest $md, after $saves BGSAVE forks"
grep -q "MASTER <-> REPLICA sync: Finished with success" "$T/r/redis.out" ||
	fail "the replica's log has no successful sync"
kill -0 "$msrv" 2>/dev/null || fail "the master died"
kill -0 "$rsrv" 2>/dev/null || fail "the replica died"
# The replication stream moved, and stayed moved through the forks.
assert_accelerated 1 "$T/master.log"
assert_accelerated 1 "$T/replica.log"
if [ "$APPS_TCP" != 1 ] && grep -q "back on TCP\|reset" "$T/replica.log"; then
	fail "the replica's link left shared memory: $(grep -m 2 "back on TCP\|reset" "$T/replica.log")"
fi
say "pass"
