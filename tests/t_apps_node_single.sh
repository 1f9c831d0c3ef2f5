#!/usr/bin/env bash
# t_apps_node_single: a single-process Node.js `net` server and a `net`
# client under shunt (tests/apps_node.js), the baseline of t_apps_node.
# 4 connections at once, each 300 round trips of a random 1 B..8 KiB framed
# message echoed back and compared; then a new connection sends 8 MiB to be
# hashed by the server and receives 8 MiB checked against the server's hash.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init node_single
need node

CONNS=4 ROUNDS=300 BIG=$((8 << 20))
js=$APPS_SRC/tests/apps_node.js

port=$(free_port)
start_server server node "$js" net-server "$port"
srv=$LAST_PID
wait_ready server "$srv"
run_client client 40 node "$js" net-client "$port" $CONNS $ROUNDS $BIG \
	>"$T/client.out" 2>&1 || fail "the client exited with status $? ($(tail -n1 "$T/client.out"))"
sed "s/^/$APPS_NAME: /" "$T/client.out"
kill -0 "$srv" 2>/dev/null || fail "the server died"

# Every connection that carried data moved: 4 echo connections and the big
# one, at both ends.
assert_accelerated $((CONNS + 1)) "$T/server.log"
assert_accelerated $((CONNS + 1)) "$T/client.log"
say pass
