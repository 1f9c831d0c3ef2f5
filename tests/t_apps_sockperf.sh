#!/usr/bin/env bash
# t_apps_sockperf: sockperf over TCP under shunt.  One server; a 2 s
# ping-pong (64 B) and a 2 s throughput run (1 KiB messages) against it,
# then a ping-pong with a range of message sizes.  sockperf matches every
# reply to its request: the checks are that it measured something, and saw
# no dropped, duplicated or out-of-order message.  Ping-pong runs pass
# --mps: by default sockperf sizes its tables for at most ~600k messages/s
# and stops with "_seqN > m_maxSequenceNo" when shunt goes faster.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init sockperf
need sockperf

port=$(free_port)
start_server server sockperf server --tcp -i 127.0.0.1 -p "$port"
srv=$LAST_PID
wait_listen "$port" "$srv"

# value FILE REGEX: the first number after REGEX in FILE (colour codes off).
value() {
	sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -o -m1 -E "$2 *[0-9.]+" | grep -o -E '[0-9.]+$' || true
}

# check_pingpong NAME: a latency was reported, every message came back.
check_pingpong() {
	local f=$T/$1.out lat sent recvd
	lat=$(value "$f" 'Summary: Latency is')
	[ -n "$lat" ] || fail "$1: sockperf reported no latency"
	grep -q 'dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0' "$f" ||
		fail "$1: messages dropped, duplicated or out of order"
	sent=$(value "$f" '\[Valid Duration\].*SentMessages=')
	recvd=$(value "$f" '\[Valid Duration\].*ReceivedMessages=')
	[ "${recvd:-0}" -gt 100 ] && [ "$recvd" = "$sent" ] ||
		fail "$1: sent ${sent:-?} messages, ${recvd:-?} replies"
	say "$1: median $(value "$f" 'percentile 50.000 =') us, avg $lat us, $recvd round trips"
}

run_client pingpong 15 sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" -t 2 -m 64 --mps 10000000 \
	>"$T/pingpong.out" 2>&1 || fail "ping-pong: sockperf exited with status $?"
check_pingpong pingpong

run_client throughput 15 sockperf throughput --tcp -i 127.0.0.1 -p "$port" -t 2 -m 1024 \
	>"$T/throughput.out" 2>&1 || fail "throughput: sockperf exited with status $?"
rate=$(value "$T/throughput.out" 'Summary: Message Rate is')
bw=$(value "$T/throughput.out" 'Summary: BandWidth is')
say "throughput: $rate msg/s, $bw MB/s"
[ "${rate%.*}" -gt 0 ] 2>/dev/null || fail "throughput: sockperf reported no message rate"
! grep -i -E 'error|fail' "$T/throughput.out" || fail "throughput: sockperf reported an error"

# Message sizes 16 B .. 64 KiB: TCP may split and merge the larger ones;
# sockperf must still reassemble every reply.
run_client range 15 sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" -t 1 -m 32776 -r 32760 --mps 10000000 \
	>"$T/range.out" 2>&1 || fail "range: sockperf exited with status $?"
check_pingpong range

kill -0 "$srv" 2>/dev/null || fail "the sockperf server died"
! grep -i -E 'error|fail' "$T/server.out" || fail "the sockperf server reported an error"

assert_accelerated 3 "$T/server.log"
for name in pingpong throughput range; do
	assert_accelerated 1 "$T/$name.log"
done
say pass
