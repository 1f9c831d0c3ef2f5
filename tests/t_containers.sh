#!/usr/bin/env bash
# t_containers: shunt between two containers, built without an engine.
#
# Each container is `unshare` with user, mount, PID, UTS and network
# namespaces: its root is host uid 100000 (uid_map "0 100000 65536", as a
# rootless engine maps it), it has a root file system of its own (a tmpfs
# with the host's /usr and /etc bound in, pivot_root), its own /proc,
# hostname, loopback and /run, where one host directory (the rendezvous
# directory) is bind-mounted as /run/shunt in both.  The two are joined by a veth pair
# with link-local addresses (169.254.N.1 and .2), which exist only inside
# them.  An unmodified Python server runs in A, its client in B, both
# under `shunt run` with SHUNT_DIR=/run/shunt (docs/containers.md):
#  1. with `trust-netns yes`: 64 MiB to the server and back, intact
#     (sha256), both ends' logs say the connection moved, and the veth
#     carried less than a quarter of the 128 MiB (only what went before the
#     two ends met);
#  2. without it (the default): the same 64 MiB intact, the connection
#     stayed on TCP (no "upgraded" line), and the veth carried all of it.
# Needs root (namespaces, the veth, uid maps); skips when unshare cannot
# make a user namespace here.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init containers
need unshare nsenter ip jq
[ "$(id -u)" -eq 0 ] || skip "needs root (a veth between namespaces, uid maps)"
py=/usr/bin/python3
[ -x "$py" ] || skip "no $py"
[ "$APPS_TCP" = 1 ] && skip "SHUNT_APPS_TCP=1: this test is about acceleration"

# What the containers see, readable by host uid 100000: the CLI and the
# preload library side by side (shunt run finds it there), the programs,
# the data, the configs.  Their rendezvous directory and outputs belong to
# that uid.
C=$T/ctr
mkdir -p "$C/bin" "$C/rdv" "$C/out"
cp "$SHUNT_BIN" "$SHUNT_PRELOAD" "$C/bin/"
rand_file "$C/in" $((64 << 20))
printf 'trust-netns yes\n' >"$C/trust.conf"
: >"$C/default.conf"
# Each direction in its turn (the client sends everything, then the server
# sends it back): a Python echo with a sending and a receiving thread at
# once sometimes ends in a reset under shunt, in one namespace too
# (reported; not what this test is about).
cat >"$C/server.py" <<'EOF'
import hashlib, os, socket, sys, time
addr, port, stop, digest, back = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
open(digest, "w").write("%d %s\n" % (n, h.hexdigest()))
data = open(back, "rb").read()
for i in range(0, len(data), 65536):
    c.sendall(data[i:i + 65536])
c.close()
# The container stays up (its veth's counters with it) until told.
while not os.path.exists(stop):
    time.sleep(0.05)
EOF
cat >"$C/client.py" <<'EOF'
import os, socket, sys, time
addr, port, src, got, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
data = open(src, "rb").read()
for i in range(100):
    try:
        c = socket.create_connection((addr, port))
        break
    except OSError:
        time.sleep(0.1)
for i in range(0, len(data), 65536):
    c.sendall(data[i:i + 65536])
c.shutdown(socket.SHUT_WR)
with open(got, "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        f.write(b)
# Done; the container stays up until told (its veth end goes with it, and
# so would A's).
open(got + ".done", "w").close()
while not os.path.exists(stop):
    time.sleep(0.05)
EOF
# The container's init, its root already (host uid 100000): a root file
# system of its own (a tmpfs, so its / and /run are its root's, as an
# image's are; the host's /usr and /etc bound in, and this test's files at
# the same path), its /proc, /dev and /tmp, the shared directory as
# /run/shunt, pivot_root into it; then its name, its end of the veth, its
# address, and the program under shunt run.
cat >"$C/init.sh" <<'EOF'
set -eu
name=$1 ifc=$2 addr=$3 conf=$4
shift 4
r=$CTR/root.$name
mount -t tmpfs -o mode=755 root "$r"
mkdir -p "$r/usr" "$r/etc" "$r/proc" "$r/dev" "$r/tmp" "$r/run" "$r/.old"
mount -t tmpfs -o mode=1777 tmp "$r/tmp"
mkdir -p "$r$CTR"
for d in bin sbin lib lib32 lib64 libx32; do
	if [ -L "/$d" ]; then
		ln -s "$(readlink "/$d")" "$r/$d"
	elif [ -d "/$d" ]; then
		mkdir "$r/$d" && mount --rbind "/$d" "$r/$d"
	fi
done
mount --rbind /usr "$r/usr"
mount --rbind /etc "$r/etc"
mount --rbind /dev "$r/dev"
mount --bind "$CTR" "$r$CTR"
mount -t tmpfs -o mode=755 run "$r/run"
mkdir "$r/run/shunt"
mount --bind "$CTR/rdv" "$r/run/shunt"
cd "$r"
pivot_root . .old
cd /
# Its own /proc first (umount reads mountinfo; a proc of a new PID
# namespace may be mounted while the host's is still in view).
mount -t proc proc /proc
umount -l /.old
rmdir /.old
hostname "$name"
ip link set lo up
for i in $(seq 200); do ip link show "$ifc" >/dev/null 2>&1 && break; sleep 0.05; done
ip addr add "$addr/24" dev "$ifc"
ip link set "$ifc" up
export SHUNT_DIR=/run/shunt SHUNT_CONFIG=$conf SHUNT_LOG=info SHUNT_LOG_FILE=$CTR/out/$name.log
echo "$name: $(id -u) in here, $(hostname), pid $$, / of uid $(stat -c %u /)," \
	"$(ls /run/shunt | wc -l) file(s) in /run/shunt" >"$CTR/out/$name.who"
"$CTR/bin/shunt" run -- "$@"
EOF
mkdir "$C/root.ctr-a" "$C/root.ctr-b"
chown -R 100000:100000 "$C/rdv" "$C/out"
chmod 700 "$C/rdv"
chmod -R a+rX "$C"

ns_user=$(readlink /proc/self/ns/user)
# container NAME IFC ADDR CONF CMD...: start it in the background; its
# host-side pid (the unshare process, inside the new namespaces but for
# PID) in LAST_PID.  The user namespace comes first, held by a sleeping
# process, so that its uid map is written before anything runs in it (a
# program exec'd there before would lose its capabilities); then nsenter
# joins it as its root and unshare makes the rest.  --kill-child: killing
# the unshare process kills the container.
container() {
	local name=$1 holder pid i
	unshare --user sleep 600 2>"$T/$name.userns" &
	holder=$!
	APPS_PIDS+=("$holder")
	for ((i = 0; i < 100; i++)); do
		[ "$(readlink "/proc/$holder/ns/user" 2>/dev/null)" != "$ns_user" ] && break
		kill -0 "$holder" 2>/dev/null || break
		sleep 0.02
	done
	# The kernel refuses a user namespace to a chrooted process, and where
	# user.max_user_namespaces is 0.
	[ "$(readlink "/proc/$holder/ns/user" 2>/dev/null)" != "$ns_user" ] && kill -0 "$holder" 2>/dev/null ||
		skip "cannot make a user namespace here (a chroot?): $(cat "$T/$name.userns")"
	echo '0 100000 65536' >"/proc/$holder/uid_map" && echo '0 100000 65536' >"/proc/$holder/gid_map" ||
		fail "cannot write the uid map of $name"
	CTR=$C nsenter --user="/proc/$holder/ns/user" --setuid 0 --setgid 0 \
		unshare --mount --pid --uts --net --fork --kill-child bash "$C/init.sh" "$@" \
		>"$T/$name.out" 2>&1 </dev/null &
	pid=$!
	APPS_PIDS+=("$pid")
	for ((i = 0; i < 100; i++)); do
		[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] && break
		sleep 0.02
	done
	LAST_PID=$pid
}

# veth_to A_PID B_PID: a veth pair with one end in each container.
veth_to() {
	local n=vc$$
	ip link add "${n}a" type veth peer name "${n}b" || fail "cannot create a veth pair"
	ip link set "${n}a" netns "$1" name eth0 || fail "cannot move the veth into A"
	ip link set "${n}b" netns "$2" name eth0 || fail "cannot move the veth into B"
}

veth_bytes() { # the bytes through A's end, both ways, from the kernel's netlink in A
	nsenter --net="/proc/$1/ns/net" ip -s -j link show dev eth0 |
		jq '.[0].stats64.rx.bytes + .[0].stats64.tx.bytes'
}

# round CONF: one server in A, one client in B; sets VBYTES.
round() {
	local conf=$1 net=169.254.$((RANDOM % 250 + 2)) port a b i
	port=$(free_port)
	rm -f "$C"/out/*
	container ctr-a eth0 "$net.1" "$C/$conf" "$py" "$C/server.py" "$net.1" "$port" "$C/out/stop" "$C/out/digest" "$C/in"
	a=$LAST_PID
	container ctr-b eth0 "$net.2" "$C/$conf" "$py" "$C/client.py" "$net.1" "$port" "$C/in" "$C/out/got" "$C/out/stop"
	b=$LAST_PID
	veth_to "$a" "$b"
	for ((i = 0; i < 600; i++)); do
		[ -f "$C/out/got.done" ] && break
		kill -0 "$b" 2>/dev/null || break
		sleep 0.1
	done
	[ -f "$C/out/got.done" ] || fail "$conf: the client did not finish ($(cat "$T/ctr-b.out"))"
	VBYTES=$(veth_bytes "$a")
	touch "$C/out/stop"
	wait "$b" || fail "$conf: the client's container exited with status $? ($(cat "$T/ctr-b.out"))"
	wait "$a" || fail "$conf: the server's container exited with status $? ($(cat "$T/ctr-a.out"))"
	cat "$C"/out/ctr-?.who
	[ "$(cat "$C/out/digest")" = "$((64 << 20)) $(sha "$C/in")" ] ||
		fail "$conf: the server received $(cat "$C/out/digest"), not the 64 MiB sent"
	same_file "$C/in" "$C/out/got" "$conf: 64 MiB sent back to the client"
	grep -q '^ctr-a: 0 in here, ctr-a, pid 1, / of uid 0,' "$C/out/ctr-a.who" ||
		fail "container A is not as built: $(cat "$C/out/ctr-a.who")"
	grep -q '^ctr-b: 0 in here, ctr-b, pid 1, / of uid 0,' "$C/out/ctr-b.who" ||
		fail "container B is not as built: $(cat "$C/out/ctr-b.who")"
	# Its files are host uid 100000's: the map was in force.
	[ "$(stat -c %u "$C/out/got")" = 100000 ] || fail "the client's output is not host uid 100000's"
	say "$conf: 64 MiB each way intact between $net.2 (ctr-b) and $net.1 (ctr-a); the veth carried $VBYTES bytes"
}

# --- 1. trust-netns yes: the connection moves --------------------------------
round trust.conf
assert_accelerated 1 "$C/out/ctr-a.log"
assert_accelerated 1 "$C/out/ctr-b.log"
grep -w upgraded "$C/out/ctr-a.log" | grep -c '169\.254\.' >/dev/null || fail "the upgraded line is not the veth's connection"
[ "$VBYTES" -lt $((32 << 20)) ] ||
	fail "with trust-netns yes the veth carried $VBYTES bytes: the data did not go through shared memory"

# --- 2. the default: it stays on TCP, intact -----------------------------------
round default.conf
n=$(count_upgraded "$C/out/ctr-a.log" "$C/out/ctr-b.log")
[ "$n" = 0 ] || fail "without trust-netns $n connection(s) moved between namespaces"
[ "$VBYTES" -gt $((128 << 20)) ] || fail "without trust-netns the veth carried only $VBYTES bytes of 128 MiB"
say "default: stayed on TCP ($(grep -ho 'stays on TCP: [a-z]*' "$C"/out/ctr-?.log | sort | uniq -c | tr -s ' ' | paste -sd, -))"
say ok
