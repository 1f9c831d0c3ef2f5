# shellcheck shell=bash
# tests/vm/lab.sh - the VM test harness: QEMU guests that share an ivshmem
# region, linked to each other and to a host process by real networks.
# Sourced by tests (tests/t_vm_*.sh), not run.  tests/vm/README.md has the
# design, the QEMU command lines and the timings.
#
# A test does:
#
#   . tests/vm/lab.sh
#   vm_init NAME             temp dir, exit trap; skips (77) without qemu & co
#   vm_prepare [PROG...]     kernel + initramfs (cached under $SHUNT_VM_CACHE)
#   vm_pair                  guests A and B: one ivshmem region, a network
#                            between them, and a tap from a network namespace
#                            (where the test's host processes run) to A
#   vm_exec A CMD...         run CMD in guest A: its output and exit status
#   vm_bg B TAG CMD...       start CMD in the background in guest B
#   vm_host CMD...           run CMD on the host, in the test's namespace
#
# and everything it started is killed at exit, pass or fail: the QEMUs
# (by pid), host processes (by pid, with their descendants), the network
# namespace with its tap, the /dev/shm region files, the temp dir.
#
# Guests: a Debian cloud kernel (TCG: KVM does not work on the machines
# this was written on) and an initramfs of busybox, glibc, the kmods for
# virtio-net and virtio-console, the project's build directory at the same
# absolute path as on the host, ivring (the raw-ring baseline) and any
# extra programs asked for, each with the libraries ldd lists.  Busybox
# init runs /etc/rc (modules, addresses, /dev/shm) and respawns vmagent,
# which serves commands on virtio-serial ports; QEMU exposes each port as a
# unix socket in the test's temp dir.
#
# In a guest: root, /dev/shm (tmpfs), /tmp (the root's, writable), and the region as
# /dev/ivshmem, a symlink to /sys/bus/pci/devices/<BDF>/resource2 of the
# PCI device 1af4:1110 (mmap it; its size is the file's size).
#
# Environment:
#   SHUNT_BUILD            the build directory (default: build/ of this tree)
#   SHUNT_VM_CACHE         kernel, tools, initramfs images (/var/tmp/shunt-vm)
#   SHUNT_VM_KPKG          the kernel package (default: the one the cache
#                          already holds, else what linux-image-cloud-amd64
#                          depends on, in its -unsigned flavour)
#   SHUNT_VM_EXTRA         more programs for the initramfs ("iperf3 redis-server")
#   SHUNT_VM_MEM           guest memory (512M)
#   SHUNT_VM_REGION_SIZE   ivshmem region size (16M)
#   SHUNT_VM_ACCEL         QEMU accelerator options (tcg,thread=multi)
#   SHUNT_VM_CPU           QEMU -cpu (qemu64).  Not max: with AVX2 and ERMS
#                          the guest's glibc and kernel copy with code that
#                          QEMU 7.2's TCG runs 6 times slower (memcpy of
#                          64 KiB 70 MB/s against 460; TCP between guests
#                          11 MB/s against 28)
#   SHUNT_VM_SMP           QEMU -smp (1,maxcpus=2: with maxcpus > 1 TCG makes
#                          lock-prefixed instructions atomic across guests)
#   SHUNT_VM_APPEND        kernel command line options (default "tsc=reliable
#                          mitigations=off": TSC as the clock, so that
#                          clock_gettime stays in the vDSO instead of
#                          reading the HPET through QEMU; and cheaper
#                          syscalls under TCG)
#   SHUNT_VM_BOOT_TIMEOUT  seconds for a guest to come up (60)
#   SHUNT_VM_EXEC_TIMEOUT  default seconds for vm_exec (60)
#   SHUNT_VM_KEEP=1        keep the temp dir (consoles, logs) of a failed test

set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

VM_LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_SRC=$(cd "$VM_LAB_DIR/../.." && pwd)
SHUNT_BUILD=${SHUNT_BUILD:-$VM_SRC/build}
VM_CACHE=${SHUNT_VM_CACHE:-/var/tmp/shunt-vm}
VM_MEM=${SHUNT_VM_MEM:-512M}
VM_REGION_SIZE=${SHUNT_VM_REGION_SIZE:-16M}
VM_ACCEL=${SHUNT_VM_ACCEL:-tcg,thread=multi}
VM_SMP=${SHUNT_VM_SMP:-1,maxcpus=2}
VM_CPU=${SHUNT_VM_CPU:-qemu64}
VM_BOOT_TIMEOUT=${SHUNT_VM_BOOT_TIMEOUT:-60}
VM_EXEC_TIMEOUT=${SHUNT_VM_EXEC_TIMEOUT:-60}
VM_APPEND=${SHUNT_VM_APPEND-tsc=reliable mitigations=off}
VM_CHANNELS=4 # agent ports per guest: commands that can run in it at once
# Kernel modules the guests load, with their dependencies (modinfo).
VM_MODULES=(virtio_pci virtio_net virtio_console)

# Addresses of vm_pair: A and B on their own link; the host (the test's
# namespace) and A on a tap.  Link-local, never routed off this machine.
VM_A_IP=169.254.1.1
VM_B_IP=169.254.1.2
VM_HOST_IP=169.254.2.1
VM_A_HOST_IP=169.254.2.2

VM_T=               # the test's temp dir
VM_NAME=            # the test's name, for messages
VM_NS=              # its network namespace, once made
VM_TAP=             # the tap device in it
VM_KERNEL='' VM_KVER='' VM_MODDIR='' VM_INITRD='' VM_AGENT='' VM_IVRING=''
VM_REGION=          # the last region made by vm_region
# shellcheck disable=SC2034 # for the tests
VM_LAST_PID=        # pid of the last vm_host_bg
# shellcheck disable=SC2034
VM_LAST_BG=         # guest pid of the last vm_bg
declare -A VM_QPID=()   # guest name -> QEMU pid
declare -A VM_T0=()     # guest name -> start time
declare -A VM_BOOT=()   # guest name -> seconds from QEMU start to agent ready
VM_GUESTS=()        # guest names, in start order
VM_HOST_PIDS=()     # host processes to kill at exit
VM_FILES=()         # files to remove at exit (regions)
VM_BGS=()           # guest:tag of vm_bg jobs, for the failure report

vm_say() { printf '%s: %s\n' "$VM_NAME" "$*"; }

# vm_now: seconds since the epoch, with nanoseconds.
vm_now() { date +%s.%N; }
# vm_since T0: seconds since T0, 2 decimals.
vm_since() { awk -v a="$1" -v b="$(vm_now)" 'BEGIN { printf "%.2f", b - a }'; }

# vm_skip REASON: exit 77 (tests/run.sh shows the text after "skip: ").
vm_skip() {
	echo "skip: $*"
	exit 77
}

# vm_fail MSG: the message, then what explains it (consoles, logs), exit 1.
vm_fail() {
	{
		echo "FAIL: $VM_NAME: $*"
		vm_report
	} >&2
	exit 1
}

# vm_report: the tail of every guest's console and QEMU's stderr, the
# host processes' output, and the output of the guests' background jobs.
vm_report() {
	[ -n "$VM_T" ] && [ -d "$VM_T" ] || return 0
	local g f bg
	for g in "${VM_GUESTS[@]}"; do
		echo "--- guest $g console (last 15 lines)"
		tr -d '\r' <"$VM_T/$g.console" 2>/dev/null | tail -n 15 | cut -c1-300
		if [ -s "$VM_T/$g.qemu" ]; then
			echo "--- guest $g qemu stderr"
			tail -n 5 "$VM_T/$g.qemu"
		fi
	done
	for f in "$VM_T"/host-*.out; do
		[ -s "$f" ] || continue
		echo "--- ${f##*/} (last 10 lines)"
		tail -n 10 "$f" | cut -c1-300
	done
	for bg in "${VM_BGS[@]}"; do
		g=${bg%%:*}
		[ -n "${VM_QPID[$g]:-}" ] || continue
		echo "--- guest $g: background job ${bg#*:} (last 10 lines)"
		"$VM_AGENT" exec "$(vm_socks "$g")" 3 "tail -n 10 /tmp/bg/${bg#*:}.out" 2>&1 | cut -c1-300 || true
	done
}

# vm_init NAME: temp dir, exit trap; skip unless the tools are here.
vm_init() {
	VM_NAME=$1
	local p
	for p in qemu-system-x86_64 busybox cpio modinfo gcc ip ss flock timeout sha256sum; do
		command -v "$p" >/dev/null 2>&1 || vm_skip "$p is not installed"
	done
	VM_T=$(mktemp -d /tmp/shunt-vm-XXXXXX) # short: unix socket paths
	trap 'vm_exit $?' EXIT
	trap 'exit 130' INT TERM
}

vm_exit() {
	local rc=$1 g p
	trap - EXIT INT TERM
	set +e
	for g in "${VM_GUESTS[@]}"; do
		p=${VM_QPID[$g]:-}
		[ -n "$p" ] && kill -9 "$p" 2>/dev/null
	done
	for g in "${VM_GUESTS[@]}"; do
		p=${VM_QPID[$g]:-}
		[ -n "$p" ] && wait "$p" 2>/dev/null
	done
	vm_kill_pids "${VM_HOST_PIDS[@]}"
	# The tap goes with the namespace, now that no QEMU holds it.
	[ -n "$VM_NS" ] && ip netns del "$VM_NS" 2>/dev/null
	for p in "${VM_FILES[@]}"; do
		rm -f "$p"
	done
	if [ -n "$VM_T" ] && [ -d "$VM_T" ]; then
		if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ "${SHUNT_VM_KEEP:-0}" = 1 ]; then
			echo "kept $VM_T"
		else
			rm -rf "$VM_T"
		fi
	fi
	exit "$rc"
}

# vm_descendants PID: the pids of PID's children, grandchildren, ...
vm_descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		echo "$c"
		vm_descendants "$c"
	done
}

# vm_kill_pids PID...: TERM each and its descendants, KILL what is left
# after 3 s.  Only pids this test started (and their children).
vm_kill_pids() {
	local all=() p i alive
	for p in "$@"; do
		kill -0 "$p" 2>/dev/null || continue
		all+=("$p")
		for i in $(vm_descendants "$p"); do all+=("$i"); done
	done
	[ ${#all[@]} -gt 0 ] || return 0
	kill -TERM "${all[@]}" 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		alive=0
		for p in "${all[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	kill -KILL "${all[@]}" 2>/dev/null || true
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
	return 0
}

# vm_quote STR: STR as one single-quoted word for a POSIX shell.
vm_quote() {
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}

# --- Kernel, tools, initramfs ------------------------------------------------

# vm_prepare [PROG...]: the kernel, the host tools, and an initramfs with
# the build directory, ivring and PROGs (and $SHUNT_VM_EXTRA).  Sets
# VM_KERNEL, VM_INITRD, VM_AGENT and VM_IVRING (host builds of vmagent and
# ivring).  Everything is cached under $SHUNT_VM_CACHE, the initramfs by
# the contents of what goes in: a second run with the same build is
# a matter of hashing the files (well under a second).
vm_prepare() {
	local t0 lk
	t0=$(vm_now)
	mkdir -p "$VM_CACHE"
	exec {lk}>"$VM_CACHE/.lock"
	flock -w 300 "$lk" || vm_fail "$VM_CACHE is locked by another run"
	vm_kernel
	vm_tools
	# shellcheck disable=SC2086
	vm_initramfs "$@" ${SHUNT_VM_EXTRA:-}
	flock -u "$lk"
	exec {lk}>&-
	vm_say "prepared in $(vm_since "$t0") s: kernel $VM_KVER, initramfs ${VM_INITRD##*/} ($(($(stat -c %s "$VM_INITRD") >> 20)) MiB)"
}

# _vm_kdep: the kernel package linux-image-cloud-amd64 depends on.
_vm_kdep() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '/Depends: linux-image-/ { print $2; exit }'
}

# vm_kernel: a Debian cloud kernel, downloaded once (apt-get download,
# dpkg -x) into $VM_CACHE/kernel/PKG.
vm_kernel() {
	local pkg=${SHUNT_VM_KPKG:-} dep dir
	if [ -z "$pkg" ] && [ -s "$VM_CACHE/kernel/default" ]; then
		pkg=$(cat "$VM_CACHE/kernel/default")
	fi
	if [ -z "$pkg" ]; then
		command -v apt-get >/dev/null || vm_skip "no kernel in $VM_CACHE and no apt-get to fetch one"
		dep=$(_vm_kdep)
		if [ -z "$dep" ] && [ "$(id -u)" -eq 0 ]; then
			# A fresh image (CI) may have no package lists yet.
			timeout 300 apt-get update -qq >"$VM_T/apt.log" 2>&1 || true
			dep=$(_vm_kdep)
		fi
		[ -n "$dep" ] || vm_skip "apt-cache knows no linux-image-cloud-amd64 (apt-get update?)"
		pkg=$dep
		if apt-cache show "$dep-unsigned" >/dev/null 2>&1; then
			pkg=$dep-unsigned
		fi
	fi
	dir=$VM_CACHE/kernel/$pkg
	if [ ! -f "$dir/.done" ]; then
		command -v dpkg >/dev/null || vm_skip "no dpkg to unpack $pkg"
		vm_say "downloading $pkg"
		rm -rf "$dir" "$dir.tmp"
		mkdir -p "$dir.tmp/deb"
		if ! (cd "$dir.tmp/deb" && timeout 300 apt-get download "$pkg") >"$VM_T/apt.log" 2>&1; then
			rm -rf "$dir.tmp"
			vm_skip "apt-get download $pkg failed: $(grep -v '^W:' "$VM_T/apt.log" | tail -n 1)"
		fi
		dpkg -x "$dir.tmp"/deb/*.deb "$dir.tmp/root" || vm_fail "dpkg -x $pkg"
		rm -rf "$dir.tmp/deb"
		mv "$dir.tmp" "$dir"
		touch "$dir/.done"
		echo "$pkg" >"$VM_CACHE/kernel/default"
	fi
	VM_KERNEL=$(ls "$dir"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)
	[ -n "$VM_KERNEL" ] || vm_fail "no vmlinuz in $dir"
	VM_KVER=${VM_KERNEL##*/vmlinuz-}
	VM_MODDIR=$dir/root/lib/modules/$VM_KVER
}

# vm_tools: vmagent and ivring built for the host (and the guest: the same
# glibc goes into the initramfs), cached by their sources.
vm_tools() {
	local h d
	h=$( (cat "$VM_LAB_DIR/vmagent.c" "$VM_LAB_DIR/ivring.c"; gcc --version) | sha256sum | cut -c1-16)
	d=$VM_CACHE/tools/$h
	if [ ! -x "$d/ivring" ]; then
		rm -rf "$d.tmp"
		mkdir -p "$d.tmp"
		gcc -O2 -g -Wall -Wextra -Werror -o "$d.tmp/vmagent" "$VM_LAB_DIR/vmagent.c" ||
			vm_fail "cannot build vmagent"
		gcc -O2 -g -Wall -Wextra -Werror -o "$d.tmp/ivring" "$VM_LAB_DIR/ivring.c" ||
			vm_fail "cannot build ivring"
		rm -rf "$d"
		mv "$d.tmp" "$d"
	fi
	VM_AGENT=$d/vmagent
	VM_IVRING=$d/ivring
}

# vm_modules: the .ko files of VM_MODULES and their dependencies, in
# insmod order ("NAME PATH" lines), from modinfo -F depends (the .deb has
# no modules.dep: depmod runs at install time).
vm_modules() {
	local -A path=() seen=()
	local f n order=()
	while IFS= read -r f; do
		n=${f##*/}
		n=${n%.ko}
		path[${n//-/_}]=$f
	done < <(find "$VM_MODDIR/kernel" -name '*.ko')
	_vm_dep() {
		local m=${1//-/_} d
		[ -z "${seen[$m]:-}" ] || return 0
		seen[$m]=1
		[ -n "${path[$m]:-}" ] || vm_fail "kernel module $m not found in $VM_MODDIR"
		for d in $(modinfo -F depends "${path[$m]}" | tr , ' '); do
			_vm_dep "$d"
		done
		order+=("$m")
	}
	for n in "${VM_MODULES[@]}"; do
		_vm_dep "$n"
	done
	for n in "${order[@]}"; do
		echo "$n ${path[$n]}"
	done
}

# The guest's /etc/rc, run by busybox init before it starts vmagent.
vm_guest_rc() {
	cat <<'EOF'
#!/bin/sh
# /etc/rc of a shunt VM test guest (tests/vm/lab.sh)
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
# /tmp stays the initramfs's own (a tmpfs over it would hide a build tree
# that lives under /tmp, as a CI clone may)
chmod 1777 /tmp
echo "SHUNTVM-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /etc/modules); do
	insmod /lib/modules/$m.ko || echo "SHUNTVM-ERROR insmod $m"
done
ip link set lo up
nets=
for a in $(cat /proc/cmdline); do
	case $a in
	shuntvm.name=*) hostname "${a#*=}" ;;
	shuntvm.net=*) nets=${a#*=} ;;
	esac
done
# shuntvm.net=IP/PREFIX@MAC,...: the NIC with that MAC gets that address.
for spec in $(echo "$nets" | tr , ' '); do
	addr=${spec%@*} mac=${spec#*@} found=
	for d in /sys/class/net/*; do
		[ "$(cat $d/address)" = "$mac" ] || continue
		ip addr add "$addr" dev "${d##*/}" && ip link set "${d##*/}" up && found=1
	done
	[ -n "$found" ] || echo "SHUNTVM-ERROR no NIC $mac for $addr"
done
# The ivshmem region: BAR2 of PCI 1af4:1110.
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ] || continue
	ln -sf "$d/resource2" /dev/ivshmem
	echo "SHUNTVM-IVSHMEM ${d##*/} $(stat -L -c %s $d/resource2) bytes"
	break
done
echo "SHUNTVM-NET $(ip -o -4 addr show | awk '{ printf "%s=%s ", $2, $4 }')"
EOF
}

vm_guest_inittab() {
	cat <<'EOF'
::sysinit:/etc/rc
::respawn:/sbin/vmagent guest
::ctrlaltdel:/sbin/poweroff -f
EOF
}

# vm_initramfs PROG...: the initramfs image for this build, from the cache
# if its inputs have not changed.  Sets VM_INITRD.
vm_initramfs() {
	local list=$VM_T/initramfs.list build f p key img R n mods
	build=$(cd "$SHUNT_BUILD" 2>/dev/null && pwd -P) || vm_fail "no build directory $SHUNT_BUILD"
	# "SOURCE DEST" lines: what goes in, and where.
	{
		echo "$(command -v busybox) /bin/busybox"
		echo "$VM_AGENT /sbin/vmagent"
		echo "$VM_IVRING /usr/bin/ivring"
		# The build, at its own absolute path: programs find each other
		# ($ORIGIN rpaths, tests that look for ../../tests/*.sh).
		for f in "$build"/* "$build"/examples/* "$build"/tests/t_*; do
			[ -f "$f" ] && [ -x "$f" ] || continue
			case ${f##*/} in *.o | *.d | *.a) continue ;; esac
			echo "$f $f"
		done
		for f in "$VM_SRC"/tests/*.sh "$VM_SRC"/tests/vm/*.sh; do
			[ -f "$f" ] && echo "$f $f"
		done
		for p in "$@"; do
			f=$(command -v "$p") || vm_skip "$p is not installed (asked for in the guests)"
			echo "$f $f"
		done
	} >"$list.progs"
	vm_modules >"$VM_T/modules.list"
	mods=$(cat "$VM_T/modules.list")
	[ -n "$mods" ] || vm_fail "no kernel modules"
	{
		cat "$list.progs"
		while read -r n f; do echo "$f /lib/modules/$n.ko"; done <<<"$mods"
		# The libraries of every dynamic program, at the paths ldd names.
		while read -r f _; do
			{ ldd "$f" 2>/dev/null || true; } |
				awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
		done <"$list.progs" | sort -u | awk '{ print $1, $1 }'
	} | awk '!seen[$2]++' >"$list"
	key=$( {
		echo "$VM_KVER"
		cat "$list"
		cut -d' ' -f1 "$list" | xargs -d '\n' sha256sum
		echo "$mods" | cut -d' ' -f1
		vm_guest_rc
		vm_guest_inittab
	} | sha256sum | cut -c1-24)
	img=$VM_CACHE/initramfs/$key.cpio
	if [ -f "$img" ]; then
		touch "$img"
		VM_INITRD=$img
		return 0
	fi
	R=$VM_T/root
	rm -rf "$R"
	mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,lib/modules,lib64}
	while read -r f p; do
		mkdir -p "$R${p%/*}"
		cp -L "$f" "$R$p" || vm_fail "cannot copy $f"
	done <"$list"
	# busybox applets, where nothing real is
	while read -r p; do
		[ -e "$R/$p" ] || [ -L "$R/$p" ] || ln -s /bin/busybox "$R/$p"
	done < <("$R/bin/busybox" --list-full)
	ln -s bin/busybox "$R/init"
	echo "$mods" | cut -d' ' -f1 | tr '\n' ' ' >"$R/etc/modules"
	vm_guest_rc >"$R/etc/rc"
	chmod 755 "$R/etc/rc"
	vm_guest_inittab >"$R/etc/inittab"
	echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
	echo "root:x:0:" >"$R/etc/group"
	printf '127.0.0.1 localhost\n%s vm-a\n%s vm-b\n%s host\n' "$VM_A_IP" "$VM_B_IP" "$VM_HOST_IP" >"$R/etc/hosts"
	# A cache for ld.so, in case a library lives outside its default dirs.
	find "$R" -name '*.so*' -type f -printf '%h\n' | sed "s|^$R||" | sort -u >"$R/etc/ld.so.conf"
	ldconfig -r "$R" 2>/dev/null || true
	mkdir -p "$VM_CACHE/initramfs"
	# Uncompressed: the guest unpacks it faster than it would inflate it.
	(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$img.tmp" ||
		vm_fail "cpio failed"
	mv "$img.tmp" "$img"
	rm -rf "$R"
	# Keep the 6 newest images.
	ls -t "$VM_CACHE"/initramfs/*.cpio 2>/dev/null | tail -n +7 | xargs -r rm -f
	VM_INITRD=$img
}

# --- Resources: region, namespace --------------------------------------------

# vm_region NAME [SIZE]: a zeroed file in /dev/shm for ivshmem (QEMU's
# memory-backend-file) that a host process can map too; path in VM_REGION.
vm_region() {
	VM_REGION=/dev/shm/shuntvm-$$-$1
	VM_FILES+=("$VM_REGION")
	rm -f "$VM_REGION"
	truncate -s "${2:-$VM_REGION_SIZE}" "$VM_REGION"
	chmod 0600 "$VM_REGION" # one every user may open is not used
}

# vm_netns: the test's network namespace, with lo up and a tap device
# (VM_TAP, address VM_HOST_IP/24) for a guest's NIC.  The QEMUs run in it
# too, so the guests' socket link is on its loopback, out of the host's.
vm_netns() {
	[ "$(id -u)" -eq 0 ] || vm_skip "needs root (network namespace, tap device)"
	[ -c /dev/net/tun ] || vm_skip "no /dev/net/tun"
	VM_NS=shuntvm-$$
	ip netns add "$VM_NS" || {
		VM_NS=
		vm_skip "cannot create a network namespace"
	}
	VM_TAP=shvtap0
	ip -n "$VM_NS" link set lo up
	ip -n "$VM_NS" tuntap add dev "$VM_TAP" mode tap || vm_fail "cannot create tap $VM_TAP"
	ip -n "$VM_NS" addr add "$VM_HOST_IP/24" dev "$VM_TAP"
	ip -n "$VM_NS" link set "$VM_TAP" up
}

# --- Guests -------------------------------------------------------------------

# vm_socks NAME: the guest's agent sockets, comma-separated (for vmagent).
vm_socks() {
	local i s=
	for ((i = 0; i < VM_CHANNELS; i++)); do
		s+=${s:+,}$VM_T/$1.ag$i
	done
	echo "$s"
}

# vm_start NAME [--shm PATH] [--net SPEC]... [--mem SIZE] [-- QEMU-ARGS...]
# Boot a guest in the background (vm_wait_ready waits for it).  SPEC:
#   listen:PORT:IP/PFX   a NIC on -netdev socket,listen=127.0.0.1:PORT
#   connect:PORT:IP/PFX  a NIC on -netdev socket,connect=127.0.0.1:PORT
#                        (start the listening guest first)
#   tap:DEV:IP/PFX       a NIC on tap DEV (in the test's namespace)
# The guest gives each NIC its IP/PFX.  With a namespace (vm_netns), QEMU
# runs in it, and 127.0.0.1 above is the namespace's.
vm_start() {
	local name=$1 mem=$VM_MEM shm='' nets=() extra=() i=0 spec kind port addr mac netcfg=''
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--shm) shm=$2; shift 2 ;;
		--net) nets+=("$2"); shift 2 ;;
		--mem) mem=$2; shift 2 ;;
		--) shift; extra=("$@"); break ;;
		*) vm_fail "vm_start: unknown option $1" ;;
		esac
	done
	[ -n "$VM_INITRD" ] || vm_fail "vm_start before vm_prepare"
	[ -z "${VM_QPID[$name]:-}" ] || vm_fail "guest $name is already running"
	local gi=${#VM_GUESTS[@]}
	# shellcheck disable=SC2054 # QEMU's options are comma-separated
	local args=(-name "shuntvm-$name" -machine pc -accel "$VM_ACCEL" -cpu "$VM_CPU" -smp "$VM_SMP"
		-m "$mem" -nodefaults -no-user-config -nographic -monitor none -no-reboot
		-serial "file:$VM_T/$name.console"
		-kernel "$VM_KERNEL" -initrd "$VM_INITRD"
		-device virtio-serial-pci,id=ser0)
	for ((i = 0; i < VM_CHANNELS; i++)); do
		args+=(-chardev "socket,id=ag$i,path=$VM_T/$name.ag$i,server=on,wait=off"
			-device "virtserialport,bus=ser0.0,chardev=ag$i,name=shunt.agent.$i")
	done
	if [ -n "$shm" ]; then
		# shellcheck disable=SC2054
		args+=(-object "memory-backend-file,id=shm0,size=$(stat -c %s "$shm"),share=on,mem-path=$shm"
			-device ivshmem-plain,memdev=shm0)
	fi
	i=0
	for spec in "${nets[@]}"; do
		IFS=: read -r kind port addr <<<"$spec"
		mac=$(printf '52:54:00:5e:%02x:%02x' "$gi" "$i")
		case $kind in
		listen | connect) args+=(-netdev "socket,id=n$i,$kind=127.0.0.1:$port") ;;
		tap) args+=(-netdev "tap,id=n$i,ifname=$port,script=no,downscript=no") ;;
		*) vm_fail "vm_start: bad --net $spec" ;;
		esac
		args+=(-device "virtio-net-pci,netdev=n$i,mac=$mac,romfile=")
		netcfg+=${netcfg:+,}$addr@$mac
		i=$((i + 1))
	done
	args+=(-append "console=ttyS0 quiet panic=-1 rdinit=/init shuntvm.name=$name${netcfg:+ shuntvm.net=$netcfg} $VM_APPEND")
	args+=("${extra[@]}")
	local pre=()
	[ -z "$VM_NS" ] || pre=(ip netns exec "$VM_NS")
	printf '%q ' "${pre[@]}" qemu-system-x86_64 "${args[@]}" >"$VM_T/$name.cmd"
	echo >>"$VM_T/$name.cmd"
	: >"$VM_T/$name.console"
	VM_GUESTS+=("$name")
	VM_T0[$name]=$(vm_now)
	# `ip netns exec` execs QEMU: $! is QEMU's pid.
	"${pre[@]}" qemu-system-x86_64 "${args[@]}" </dev/null >"$VM_T/$name.qemu" 2>&1 &
	VM_QPID[$name]=$!
}

# vm_wait_ready NAME...: wait until each guest's agent is up (its console
# says SHUNTVM-READY); fail if its QEMU exits or SHUNT_VM_BOOT_TIMEOUT
# passes.  Sets VM_BOOT[NAME] (seconds from QEMU start).
vm_wait_ready() {
	local g t0 pid
	t0=$(vm_now)
	for g in "$@"; do
		pid=${VM_QPID[$g]:-}
		[ -n "$pid" ] || vm_fail "no guest $g"
		while ! grep -q SHUNTVM-READY "$VM_T/$g.console" 2>/dev/null; do
			kill -0 "$pid" 2>/dev/null || vm_fail "guest $g: QEMU exited before the guest came up"
			awk -v a="$t0" -v b="$(vm_now)" -v l="$VM_BOOT_TIMEOUT" 'BEGIN { exit !(b - a > l) }' &&
				vm_fail "guest $g did not come up in $VM_BOOT_TIMEOUT s"
			sleep 0.05
		done
		VM_BOOT[$g]=$(vm_since "${VM_T0[$g]}")
		if grep -q SHUNTVM-ERROR "$VM_T/$g.console"; then
			vm_fail "guest $g: $(grep -m1 SHUNTVM-ERROR "$VM_T/$g.console" | tr -d '\r')"
		fi
	done
}

# vm_wait_port PORT [SECS]: wait until something listens on 127.0.0.1:PORT
# (in the test's namespace, if any): a listening guest's socket netdev.
vm_wait_port() {
	local i ssc=(ss)
	[ -z "$VM_NS" ] || ssc=(ip netns exec "$VM_NS" ss)
	for ((i = 0; i < ${2:-10} * 20; i++)); do
		"${ssc[@]}" -Htln "sport = :$1" | grep -q . && return 0
		sleep 0.05
	done
	vm_fail "nothing listens on 127.0.0.1:$1 after ${2:-10} s"
}

# vm_pair: the standard setup.  Region VM_REGION (ivshmem in both guests,
# and a file the host can map), namespace VM_NS with tap VM_TAP, and:
#   guest A: VM_A_IP on the link to B, VM_A_HOST_IP on the tap
#   guest B: VM_B_IP on the link to A
#   host:    VM_HOST_IP on the tap (run programs with vm_host, vm_host_bg)
# A and B boot in parallel (B's QEMU starts once A's listens).
vm_pair() {
	local port=10001
	vm_region ivshmem
	vm_netns
	vm_start A --shm "$VM_REGION" --net "listen:$port:$VM_A_IP/24" --net "tap:$VM_TAP:$VM_A_HOST_IP/24"
	vm_wait_port $port
	vm_start B --shm "$VM_REGION" --net "connect:$port:$VM_B_IP/24"
	vm_wait_ready A B
	vm_say "guests up: A in ${VM_BOOT[A]} s, B in ${VM_BOOT[B]} s (QEMU start to agent ready)"
}

# vm_kill NAME: kill -9 the guest's QEMU (a crash, for fault tests).
vm_kill() {
	local pid=${VM_QPID[$1]:-}
	[ -n "$pid" ] || vm_fail "vm_kill: no guest $1"
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "VM_QPID[$1]"
}

# --- Running things in guests ---------------------------------------------------

# vm_exec NAME [-t SECS] CMD...: run CMD (words joined by spaces, as ssh
# does) with sh -c in guest NAME, as root in /root; its stdout and stderr
# are ours, and its exit status (124 after SECS, default
# SHUNT_VM_EXEC_TIMEOUT: the guest then kills CMD's process group; 125 if
# the guest cannot be reached).  Up to VM_CHANNELS at once per guest.
vm_exec() {
	local name=$1 secs=$VM_EXEC_TIMEOUT
	shift
	if [ "${1:-}" = -t ]; then
		secs=$2
		shift 2
	fi
	[ -n "${VM_QPID[$name]:-}" ] || { echo "vm_exec: no guest $name" >&2; return 125; }
	"$VM_AGENT" exec "$(vm_socks "$name")" "$secs" "$*"
}

# vm_get NAME GUEST-PATH LOCAL-PATH [SECS]: copy a file out of a guest.
vm_get() {
	[ -n "${VM_QPID[$1]:-}" ] || { echo "vm_get: no guest $1" >&2; return 125; }
	"$VM_AGENT" get "$(vm_socks "$1")" "${4:-$VM_EXEC_TIMEOUT}" "$2" >"$3"
}

# vm_put NAME LOCAL-PATH GUEST-PATH [MODE [SECS]]: copy a file into a guest.
vm_put() {
	[ -n "${VM_QPID[$1]:-}" ] || { echo "vm_put: no guest $1" >&2; return 125; }
	"$VM_AGENT" put "$(vm_socks "$1")" "${5:-$VM_EXEC_TIMEOUT}" "$3" "${4:-644}" <"$2"
}

# vm_bg NAME TAG CMD...: start CMD in the background in guest NAME, in a
# session of its own, output in the guest's /tmp/bg/TAG.out; its guest pid
# in VM_LAST_BG.  vm_bg_wait collects its status, vm_bg_stop kills it.
vm_bg() {
	local name=$1 tag=$2
	shift 2
	local inner="$*; echo \$? >/tmp/bg/$tag.rc.tmp; mv /tmp/bg/$tag.rc.tmp /tmp/bg/$tag.rc"
	# shellcheck disable=SC2034 # for the tests
	VM_LAST_BG=$(vm_exec "$name" "mkdir -p /tmp/bg; rm -f /tmp/bg/$tag.rc;" \
		"setsid sh -c $(vm_quote "$inner") >/tmp/bg/$tag.out 2>&1 </dev/null & echo \$!") ||
		vm_fail "guest $name: cannot start $tag (vm_exec status $?: 124 timed out, 125 unreachable): $*"
	VM_BGS+=("$name:$tag")
}

# vm_bg_wait NAME TAG [SECS]: wait for a vm_bg job to end; its exit status
# (124 if it is still running after SECS, default 30).
vm_bg_wait() {
	local secs=${3:-30}
	vm_exec "$1" -t $((secs + 10)) "i=0; while [ ! -e /tmp/bg/$2.rc ] && [ \$i -lt $((secs * 20)) ];" \
		"do sleep 0.05; i=\$((i + 1)); done; [ -e /tmp/bg/$2.rc ] || exit 124; exit \$(cat /tmp/bg/$2.rc)"
}

# vm_bg_out NAME TAG: what the job has written so far.
vm_bg_out() {
	vm_exec "$1" "cat /tmp/bg/$2.out"
}

# vm_bg_stop NAME TAG PID: kill the job (its whole session).
vm_bg_stop() {
	vm_exec "$1" "kill -9 -- -$3 2>/dev/null; true"
}

# vm_wait_listen NAME PORT [SECS]: wait until something listens on TCP
# PORT in guest NAME (read from /proc/net/tcp: the guest has no ss).
vm_wait_listen() {
	local hex
	hex=$(printf '%04X' "$2")
	vm_exec "$1" -t $((${3:-10} + 10)) "i=0; while ! grep -q ':$hex 00000000:0000 0A' /proc/net/tcp;" \
		"do [ \$i -lt $((${3:-10} * 20)) ] || exit 1; sleep 0.05; i=\$((i + 1)); done" ||
		vm_fail "guest $1: nothing listens on port $2 after ${3:-10} s"
}

# --- Host processes in the test's namespace -----------------------------------------

# vm_host [-t SECS] CMD...: run CMD in the test's namespace (where the tap
# to guest A is), under timeout (default SHUNT_VM_EXEC_TIMEOUT).
vm_host() {
	local secs=$VM_EXEC_TIMEOUT
	if [ "${1:-}" = -t ]; then
		secs=$2
		shift 2
	fi
	timeout -k 2 "$secs" ip netns exec "$VM_NS" "$@"
}

# vm_host_bg TAG CMD...: CMD in the background in the test's namespace,
# output in $VM_T/host-TAG.out; its pid in VM_LAST_PID (killed at exit).
vm_host_bg() {
	local tag=$1
	shift
	ip netns exec "$VM_NS" "$@" >"$VM_T/host-$tag.out" 2>&1 </dev/null &
	VM_LAST_PID=$!
	VM_HOST_PIDS+=("$VM_LAST_PID")
}

# vm_host_wait_listen PORT [SECS]: wait until something listens on PORT in
# the test's namespace.
vm_host_wait_listen() {
	local i
	for ((i = 0; i < ${2:-10} * 20; i++)); do
		ip netns exec "$VM_NS" ss -Htln "sport = :$1" | grep -q . && return 0
		sleep 0.05
	done
	vm_fail "nothing listens on port $1 in $VM_NS after ${2:-10} s"
}
