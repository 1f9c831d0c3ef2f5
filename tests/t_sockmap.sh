#!/usr/bin/env bash
# t_sockmap: the eBPF sockmap rival of the benchmarks (bench/sockmap.sh,
# bench/sockmap/) really redirects, and leaves nothing behind.
#  * iperf3 server and client inside the sockmap's cgroup, a 2 s upload
#    (128 KiB writes): the data arrived, and half-way through the kernel's
#    TCP byte counters of the live connections (ss -ti: bytes_received and
#    bytes_acked on the server's sockets) stay near zero while iperf3 moves
#    gigabytes; the BPF programs' own counters say they redirected at least
#    what iperf3 received.  Then a 1 s download (-R), the other direction.
#  * The same probe on a 1 s plain TCP run outside the cgroup, with the
#    sockmap still loaded: the kernel carries the bytes (the probe works) and
#    the BPF programs did not touch that connection.
#  * Integrity: 16 MiB of random data echoed by socat+cat inside the cgroup
#    comes back unchanged (if socat is installed).
#  * After sockmap_stop: no cgroup directory, the run's programs, maps and
#    link gone from the kernel (bpftool ... show id), nothing pinned, no
#    shunt_sm_* program listed by `bpftool prog`, no process left.
# Needs root (re-runs itself under `sudo -n` if that works without a
# password), clang, libbpf-dev, bpftool, iperf3, jq; skips (77) without them.
# The BPF object and loader are built into the test's temp dir.

if [ "$(id -u)" != 0 ]; then
	if [ -z "${SHUNT_SOCKMAP_SUDO:-}" ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		exec sudo -n SHUNT_SOCKMAP_SUDO=1 "$0" "$@"
	fi
	echo "skip: not root (loading BPF programs needs it; passwordless sudo would do)"
	exit 77
fi

lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1
# shellcheck source=bench/sockmap.sh
. "$APPS_SRC/bench/sockmap.sh" || exit 1

# apps_init without its preload checks: nothing here runs under shunt.
APPS_NAME=sockmap
APPS_TCP=1
need timeout ss iperf3 jq bpftool clang
T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-sockmap-XXXXXX")
trap 'apps_exit $?' EXIT
trap 'exit 130' INT TERM
SOCKMAP_BUILD=$T/build

if ! sockmap_available 2>"$T/available.err"; then
	case $SOCKMAP_REASON in
	"build failed"* | "the kernel refuses"*)
		# Our own programs: a verifier or compiler refusal is a bug,
		# a missing privilege (a container without CAP_BPF) is not.
		case $SOCKMAP_REASON in
		*"not permitted"*) skip "$SOCKMAP_REASON" ;;
		*) fail "$SOCKMAP_REASON" ;;
		esac
		;;
	*) skip "$SOCKMAP_REASON" ;;
	esac
fi
sockmap_start 2>"$T/start.err" || fail "sockmap_start: $(cat "$T/start.err")"
cg=$SOCKMAP_CG
ids=$SOCKMAP_IDS
say "loaded: $ids, cgroup $cg"

# probe PORT: "SOCKETS BYTES": established sockets whose local port is PORT
# and the bytes the kernel's TCP carried on them (kernel_tcp_bytes).
probe() {
	echo "$(ss -Htn state established "( sport = :$1 )" | grep -c . || true) $(kernel_tcp_bytes "$1")"
}

# iperf_ok FILE WHAT: iperf3 succeeded and received something; prints the
# bytes received.
iperf_ok() {
	local err recvd
	err=$(jq -r '.error // empty' "$1" 2>/dev/null) || fail "$2: iperf3 wrote no JSON: $(head -c 300 "$1")"
	[ -z "$err" ] || fail "$2: iperf3: $err"
	recvd=$(jq -r '.end.sum_received.bytes' "$1")
	[ "$recvd" -gt 0 ] 2>/dev/null || fail "$2: nothing received"
	echo "$recvd"
}

stat_now() { sockmap_stat "$1" "$(sockmap_stats)"; }

# --- iperf3 inside the cgroup ----------------------------------------------
port=$(free_port)
start_server server "${SOCKMAP_PREFIX[@]}" iperf3 -s -p "$port" -B 127.0.0.1
srv=$LAST_PID
wait_listen "$port" "$srv"
grep -qx "$srv" "$cg/cgroup.procs" || fail "the iperf3 server (pid $srv) is not in $cg"

red0=$(stat_now redirected_bytes)
run_client up 15 "${SOCKMAP_PREFIX[@]}" iperf3 -c 127.0.0.1 -p "$port" -t 2 -l 128K -J \
	>"$T/up.json" 2>"$T/up.err" &
cli=$!
sleep 1
read -r nsock kbytes <<<"$(probe "$port")"
wait "$cli" || fail "upload: the iperf3 client exited with status $?"
recvd=$(iperf_ok "$T/up.json" upload)
red=$(($(stat_now redirected_bytes) - red0))
say "upload: iperf3 received $recvd bytes ($(jq -r '.end.sum_received.bits_per_second / 1e9 | floor' "$T/up.json") Gbit/s); at 1 s the kernel's TCP had carried $kbytes bytes on $nsock established socket(s); the BPF program redirected $red bytes"
[ "$nsock" -ge 2 ] || fail "the probe saw $nsock established socket(s) on port $port, expected the control and data connections"
[ "$kbytes" -lt $((recvd / 1000)) ] ||
	fail "the kernel's TCP carried $kbytes bytes of the $recvd iperf3 moved: not redirected"
[ "$red" -ge "$recvd" ] ||
	fail "the BPF program redirected $red bytes, less than the $recvd iperf3 received"

run_client down 15 "${SOCKMAP_PREFIX[@]}" iperf3 -c 127.0.0.1 -p "$port" -t 1 -l 128K -R -J \
	>"$T/down.json" 2>"$T/down.err" || fail "download: the iperf3 client exited with status $?"
recvd=$(iperf_ok "$T/down.json" download)
say "download: iperf3 received $recvd bytes"

# --- The control: plain TCP outside the cgroup ---------------------------
port2=$(free_port)
start_server tcp-server iperf3 -s -p "$port2" -B 127.0.0.1
srv2=$LAST_PID
wait_listen "$port2" "$srv2"
ins0=$(stat_now inserted)
run_client tcp 15 iperf3 -c 127.0.0.1 -p "$port2" -t 1 -l 128K -J >"$T/tcp.json" 2>"$T/tcp.err" &
cli=$!
sleep 0.5
read -r nsock kbytes <<<"$(probe "$port2")"
wait "$cli" || fail "plain TCP: the iperf3 client exited with status $?"
recvd=$(iperf_ok "$T/tcp.json" "plain TCP")
ins=$(($(stat_now inserted) - ins0))
say "plain TCP outside the cgroup: received $recvd bytes; at 0.5 s the kernel's TCP had carried $kbytes on $nsock socket(s); sockets the BPF program took: $ins"
[ "$kbytes" -gt $((recvd / 20)) ] ||
	fail "plain TCP: the kernel carried only $kbytes bytes of $recvd (a broken probe?)"
[ "$ins" = 0 ] || fail "the sock_ops program took $ins socket(s) of processes outside its cgroup"
stop_server "$srv2"

# --- Integrity -----------------------------------------------------------
if command -v socat >/dev/null 2>&1; then
	rand_file "$T/in" $((16 << 20))
	port3=$(free_port)
	start_server echo-server "${SOCKMAP_PREFIX[@]}" socat "TCP-LISTEN:$port3,bind=127.0.0.1,reuseaddr" EXEC:cat,nofork
	wait_listen "$port3" "$LAST_PID"
	red0=$(stat_now redirected_bytes)
	run_client echo 30 "${SOCKMAP_PREFIX[@]}" socat -t 20 - "TCP:127.0.0.1:$port3" \
		<"$T/in" >"$T/out" 2>"$T/echo.err" || fail "echo: the socat client exited with status $?"
	same_file "$T/in" "$T/out" "echo through the sockmap"
	red=$(($(stat_now redirected_bytes) - red0))
	[ "$red" -ge $((2 * (16 << 20))) ] ||
		fail "echo: the BPF program redirected $red bytes of the 2 x 16 MiB"
	say "echo: 16 MiB came back intact, $red bytes redirected"
else
	say "socat is not installed: no integrity check"
fi

# --- Stop: nothing left ----------------------------------------------------
stop_server "$srv"
say "counters before stop: $(sockmap_stats)"
sockmap_stop 2>"$T/stop.err" || fail "sockmap_stop: $(cat "$T/stop.err")"
[ ! -e "$cg" ] || fail "$cg is still there"
left=$(sockmap_leftovers)
[ -z "$left" ] || fail "still in the kernel: $left (of $ids)"
for kv in $ids; do
	case $kv in
	ops_id=* | msg_id=*) ! bpftool prog show id "${kv#*=}" >/dev/null 2>&1 || fail "program ${kv#*=} is still loaded" ;;
	esac
done
# Nothing pinned in any BPF file system (sockmap_ctl pins nothing).
while read -r fs; do
	if [ -n "$(find "$fs" -name 'shunt*' 2>/dev/null)" ]; then
		fail "pinned objects left: $(find "$fs" -name 'shunt*' | tr '\n' ' ')"
	fi
done < <(awk '$3 == "bpf" { print $2 }' /proc/mounts)
# No shunt_sm_ program at all, unless another sockmap_ctl runs right now.
if bpftool prog show 2>/dev/null | grep 'name shunt_sm_' >/dev/null; then
	if pgrep -x sockmap_ctl >/dev/null 2>&1; then
		say "bpftool prog lists shunt_sm_ programs of another running sockmap_ctl (not ours)"
	else
		fail "bpftool prog still lists: $(bpftool prog show | grep 'name shunt_sm_' | tr '\n' ' ')"
	fi
fi
say "after stop: $SOCKMAP_STATS; no cgroup, program, map, link or pin left"
say pass
