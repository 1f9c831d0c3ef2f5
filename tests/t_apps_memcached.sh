#!/usr/bin/env bash
# t_apps_memcached: memcached (TCP only, 4 threads, libevent/epoll) and its
# clients under shunt.
#  * A socat client stores 32 random 64 KiB values in one pipelined burst
#    and reads them all back in a second one (2 MiB each way), then asks
#    for all of them again, burst after burst, until the shim has logged
#    "upgraded" in memcached and in socat (a connection moves after 16 data
#    calls, once both ends have stepped through the meeting on their own
#    calls: when in the first bursts depends on who runs when), and once
#    more: during that last 2 MiB the kernel's TCP socket must carry next
#    to nothing (doorbells; over TCP it carries all of it).  Its stdin stays
#    open until every reply is in: a client that half-closes right after
#    its burst has sent everything before memcached took a step of the
#    meeting, and a half-closed connection stays on TCP.  Every reply must
#    be exactly the values.
#  * A bash client on /dev/tcp (connect() from bash itself) reads one value
#    and the server's stats in three writes: a short connection, which
#    stays on TCP by design at both ends ("stays on TCP: short", from
#    memcached's close and from bash's exit), its data intact.
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
# them all, written at once; the replies must be exactly these.
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
# The get burst alone, and its replies.
for i in $(seq 1 $n); do printf 'get k%d\r\n' "$i"; done >"$T/gets"
for i in $(seq 1 $n); do
	{ printf 'VALUE k%d 0 %d\r\n' "$i" $size; cat "$T/v$i"; printf '\r\nEND\r\n'; }
done >"$T/gets.want"
gets_size=$(wc -c <"$T/gets.want")

# wait_got SIZE: until socat has written SIZE bytes of replies (20 s).
wait_got() {
	local i
	for ((i = 0; i < 400; i++)); do
		[ "$(wc -c <"$T/got")" -ge "$1" ] && return 0
		sleep 0.05
	done
}
moved_both() { [ "$(count_upgraded "$T/server.log")" -ge 1 ] && [ "$(count_upgraded "$T/socat.log")" -ge 1 ]; }
# feed: socat's stdin, open until the end: the bursts, each sent once the
# replies to the one before are in; the number of get bursts in $T/bursts
# and the kernel's TCP bytes on memcached's socket around the last one in
# $T/kbytes.
feed() {
	local expect bursts=1 r
	expect=$(wc -c <"$T/want")
	cat "$T/req"
	wait_got "$expect"
	for ((r = 0; r < 20; r++)); do
		{ [ "$APPS_TCP" = 1 ] || moved_both; } && break
		cat "$T/gets"
		bursts=$((bursts + 1)) expect=$((expect + gets_size))
		wait_got "$expect"
	done
	local k0
	k0=$(kernel_tcp_bytes "$port")
	cat "$T/gets"
	bursts=$((bursts + 1)) expect=$((expect + gets_size))
	wait_got "$expect"
	echo "$k0 $(kernel_tcp_bytes "$port")" >"$T/kbytes"
	echo "$bursts" >"$T/bursts"
	printf 'quit\r\n'
}
: >"$T/got"
feed | run_client socat 60 socat -t 10 - "TCP:127.0.0.1:$port" >"$T/got" ||
	fail "the socat client exited with status $?"
for ((i = 1; i < $(cat "$T/bursts"); i++)); do cat "$T/gets.want"; done >>"$T/want"
same_file "$T/want" "$T/got" "$n pipelined sets, then $(cat "$T/bursts") bursts of $n gets of $size B values"
read -r k0 k1 <"$T/kbytes"
last=$((gets_size + $(wc -c <"$T/gets")))
say "$n values of $size B: stored, read back $(cat "$T/bursts") times intact; the kernel's TCP carried $((k1 - k0)) bytes of the last $last"
if [ "$APPS_TCP" = 1 ]; then
	[ $((k1 - k0)) -gt $((last * 9 / 10)) ] ||
		fail "plain TCP: the kernel carried only $((k1 - k0)) bytes of $last (broken probe?)"
else
	assert_accelerated 1 "$T/server.log"
	assert_accelerated 1 "$T/socat.log"
	[ $((k1 - k0)) -lt $((last / 20)) ] ||
		fail "moved, yet the kernel's TCP socket carried $((k1 - k0)) of the last $last bytes"
fi

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
upgraded_before=$(count_upgraded "$T/server.log")
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
# memcached logs its close of the connection: wait a little for it.
for ((i = 0; i < 40; i++)); do
	[ "$(count_stays short "$T/server.log")" -ge 1 ] && break
	sleep 0.05
done

kill -0 "$srv" 2>/dev/null || fail "memcached died"
assert_not_accelerated "$T/bash.log"
[ "$(count_upgraded "$T/server.log")" = "$upgraded_before" ] ||
	fail "memcached upgraded the bash client's short connection"
assert_stays short 1 "$T/bash.log"
assert_stays short 1 "$T/server.log"
say pass
