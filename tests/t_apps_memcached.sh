#!/usr/bin/env bash
# t_apps_memcached: memcached (TCP only, 4 threads, libevent/epoll) and its
# clients under shunt.  A socat client stores 32 random 64 KiB values in one
# pipelined burst and reads them back; a bash client on /dev/tcp (connect()
# from bash itself) reads one of them and checks the server's stats.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init memcached
need memcached socat

port=$(free_port)
# As root, memcached insists on -u; keep our own user (shunt connects only
# processes of the same user).
as_user=()
[ "$(id -u)" -ne 0 ] || as_user=(-u "$(id -un)")
start_server server memcached -p "$port" -U 0 -l 127.0.0.1 -t 4 -m 64 "${as_user[@]}"
srv=$LAST_PID
wait_listen "$port" "$srv"

# 32 values of 65536 random base64 characters: set them all, then get
# them all, then quit, written at once; the replies must be exactly these.
n=32 size=65536
: >"$T/req"
: >"$T/want"
for i in $(seq 1 $n); do
	head -c $((size * 3 / 4)) /dev/urandom | base64 -w0 >"$T/v$i"
	{ printf 'set k%d 0 0 %d\r\n' "$i" $size; cat "$T/v$i"; printf '\r\n'; } >>"$T/req"
	printf 'STORED\r\n' >>"$T/want"
done
for i in $(seq 1 $n); do
	printf 'get k%d\r\n' "$i" >>"$T/req"
	{ printf 'VALUE k%d 0 %d\r\n' "$i" $size; cat "$T/v$i"; printf '\r\nEND\r\n'; } >>"$T/want"
done
printf 'quit\r\n' >>"$T/req"
run_client socat 20 socat -t 10 - "TCP:127.0.0.1:$port" <"$T/req" >"$T/got" ||
	fail "the socat client exited with status $?"
same_file "$T/want" "$T/got" "$n pipelined set+get of $size B values"
say "$n values of $size B: stored and read back intact"

# bash's own connect() on /dev/tcp, under the preload library.
cat >"$T/bashclient" <<'EOF'
set -eu
exec 3<>"/dev/tcp/127.0.0.1/$1"
# Through cat, not printf >&3: bash's builtins write with stdio, which glibc
# sends through its internal write, out of a preload library's reach
# (README, Limitations).
printf 'get k7\r\nstats\r\nquit\r\n' | cat >&3
cat <&3
EOF
run_client bash 20 bash "$T/bashclient" "$port" >"$T/bash.got" ||
	fail "the bash client exited with status $?"
{ printf 'VALUE k7 0 %d\r\n' $size; cat "$T/v7"; printf '\r\nEND\r\n'; } >"$T/bash.want"
head -c "$(wc -c <"$T/bash.want")" "$T/bash.got" >"$T/bash.got.get"
same_file "$T/bash.want" "$T/bash.got.get" "get k7 from the bash client"
sets=$(tr -d '\r' <"$T/bash.got" | awk '$2 == "cmd_set" { print $3 }')
items=$(tr -d '\r' <"$T/bash.got" | awk '$2 == "curr_items" { print $3 }')
[ "$sets" = $n ] && [ "$items" = $n ] ||
	fail "memcached stats: cmd_set=${sets:-?} curr_items=${items:-?}, expected $n"
say "bash /dev/tcp client: value intact, stats: $sets sets, $items items"

kill -0 "$srv" 2>/dev/null || fail "memcached died"
assert_accelerated 2 "$T/server.log"
assert_accelerated 1 "$T/socat.log"
assert_accelerated 1 "$T/bash.log"
say pass
