#!/usr/bin/env bash
# t_apps_erlang: Erlang/OTP's gen_tcp under shunt (tests/apps_erlang.erl,
# compiled with erlc): the BEAM's own poll thread, which registers each
# socket EPOLLIN | EPOLLONESHOT and re-arms it at every {active, once}, an
# Erlang process per connection (the socket handed over with
# controlling_process), readv and writev.
#  * 4 connections at once, each 2,000 numbered round trips and 4 MiB of
#    random bytes echoed, every byte compared: all 4 move at both ends
#  * the same client without shunt, a plain client of the shunt server:
#    intact
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init erlang
need erl erlc

erlc -o "$T" "$APPS_SRC/tests/apps_erlang.erl" >"$T/erlc.out" 2>&1 ||
	fail "erlc: $(head -c 300 "$T/erlc.out")"

port=$(free_port)
start_server server erl -noshell -pa "$T" -s apps_erlang server "$port"
srv=$LAST_PID
wait_listen "$port" "$srv"

run_client client 90 erl -noshell -pa "$T" -s apps_erlang client "$port" 2000 4 >"$T/client.out" 2>&1 ||
	fail "the client exited with status $? ($(tail -c 300 "$T/client.out"))"
sed "s/^/$APPS_NAME: /" "$T/client.out"
assert_accelerated 4 "$T/client.log"
assert_accelerated 4 "$T/server.log"

timeout 90 erl -noshell -pa "$T" -s apps_erlang client "$port" 200 2 >"$T/plain.out" 2>&1 ||
	fail "the plain client exited with status $? ($(tail -c 300 "$T/plain.out"))"
sed "s/^/$APPS_NAME: without shunt: /" "$T/plain.out"
kill -0 "$srv" 2>/dev/null || fail "the server died"
say pass
