# shellcheck shell=bash disable=SC2034 # SOCKMAP_* are for the caller
# bench/sockmap.sh - eBPF sockmap redirection of local TCP (the technique of
# Cilium, Merbridge and istio-tcpip-bypass) as a rival in shunt's
# benchmarks.  Sourced, not run.  See bench/sockmap/README.md.
#
#   sockmap_available   0 if it can work here; else 1, with the reason on
#                       stderr and in SOCKMAP_REASON (not root, no cgroup v2,
#                       no clang, no libbpf-dev, the kernel refuses, ...).
#                       Builds the BPF object and the loader if needed.
#   sockmap_start       a fresh cgroup v2 directory (SOCKMAP_CG), the BPF
#                       programs loaded and attached to it by sockmap_ctl
#                       (SOCKMAP_PID); sets SOCKMAP_PREFIX.  Returns 1 (and
#                       leaves nothing behind) if that failed.
#   sockmap_run CMD...  CMD (a program or a shell function) in a child
#                       process inside the cgroup; returns CMD's status.
#                       For foreground commands: `sockmap_run CMD &` gives
#                       $! of a shell, not of CMD.
#   sockmap_spawn CMD...  CMD in the background inside the cgroup, its pid
#                       in SOCKMAP_LAST_PID (redirections apply:
#                       `sockmap_spawn server >log 2>&1`).
#   "${SOCKMAP_PREFIX[@]}" CMD...  the same as a command prefix that execs
#                       CMD (same pid), usable after env, timeout, nohup:
#                       `timeout 10 env X=1 "${SOCKMAP_PREFIX[@]}" CMD`.
#   sockmap_stats       the BPF programs' counters now, one line:
#                       "stats inserted=N ... redirected_bytes=N no_peer=N ..."
#   sockmap_stop        detaches and unloads everything, ends the processes
#                       still in the cgroup (all of them started through it),
#                       removes the cgroup; checks with bpftool (if present)
#                       that no program, map or link of this run is left.
#                       Sets SOCKMAP_STATS (the last counters).  Idempotent.
#
# Only processes inside the cgroup are affected: servers and clients must
# both run there (a connection with one end outside stays plain TCP).  Only
# established TCP connections whose two addresses are loopback (127/8, ::1,
# ::ffff:127/104) are redirected.
#
# Cleanup: sockmap_start registers sockmap_stop with tests/apps_lib.sh's exit
# trap (APPS_CLEANUP) if that is loaded, else sets an EXIT trap if none is
# set; otherwise the caller's own trap must call sockmap_stop.  Even without
# it nothing stays loaded: sockmap_ctl pins nothing (the kernel frees its
# programs and maps when it exits, however it exits), and it exits by itself
# when the shell that started it ($$) is gone or after SOCKMAP_MAX_SECONDS;
# it then removes the cgroup if no process is left in it.
#
# Environment:
#   SOCKMAP_BUILD        where the BPF object and the loader are built
#                        (default: ${SHUNT_BUILD:-build}/sockmap)
#   SOCKMAP_MAX_SECONDS  upper bound on the loader's life (default 3600)
#   CLANG, CC            compilers (default clang, cc)

SOCKMAP_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/sockmap" && pwd)
SOCKMAP_BUILD=${SOCKMAP_BUILD:-${SHUNT_BUILD:-$(cd "$SOCKMAP_SRC/../.." && pwd)/build}/sockmap}
SOCKMAP_REASON=
SOCKMAP_CG=         # the cgroup directory while started
SOCKMAP_PID=        # sockmap_ctl's pid while started
SOCKMAP_LOG=        # sockmap_ctl's output
SOCKMAP_IDS=        # "ops_id=N msg_id=N hash_id=N stat_id=N link_id=N"
SOCKMAP_PREFIX=()   # in_cgroup CG: command prefix while started
SOCKMAP_STATS=      # the counters at the last stop
SOCKMAP_LAST_PID=   # pid of the last sockmap_spawn

sockmap_msg() { printf 'sockmap: %s\n' "$*" >&2; }

# sockmap_unavailable REASON: record and show it; return 1.
sockmap_unavailable() {
	SOCKMAP_REASON=$*
	sockmap_msg "unavailable: $*"
	return 1
}

# sockmap_cgroup_root: the mount point of the cgroup v2 hierarchy
# (/sys/fs/cgroup on a unified system, /sys/fs/cgroup/unified on a hybrid
# one); non-zero if there is none.
sockmap_cgroup_root() {
	awk '$3 == "cgroup2" { print $2; found = 1; exit } END { exit !found }' /proc/self/mounts
}

# sockmap_build: the BPF object and the loader in $SOCKMAP_BUILD, rebuilt
# when a source is newer.  Atomic (build to a temp name, then rename): two
# runs may build at once.
sockmap_build() {
	local clang=${CLANG:-clang} cc=${CC:-cc} obj=$SOCKMAP_BUILD/sockmap.bpf.o
	local ctl=$SOCKMAP_BUILD/sockmap_ctl tmp arch
	mkdir -p "$SOCKMAP_BUILD" || return 1
	if [ ! -f "$obj" ] || [ "$SOCKMAP_SRC/sockmap.bpf.c" -nt "$obj" ]; then
		# <linux/bpf.h> needs <asm/types.h>, which Debian keeps in the
		# multiarch include directory that -target bpf does not search.
		arch=$("$cc" -dumpmachine 2>/dev/null || uname -m)
		tmp=$obj.tmp.$$
		"$clang" -O2 -g -target bpf -Wall -I"/usr/include/$arch" \
			-c "$SOCKMAP_SRC/sockmap.bpf.c" -o "$tmp" || { rm -f "$tmp"; return 1; }
		mv -f "$tmp" "$obj"
	fi
	if [ ! -x "$ctl" ] || [ "$SOCKMAP_SRC/sockmap_ctl.c" -nt "$ctl" ]; then
		tmp=$ctl.tmp.$$
		"$cc" -O2 -g -Wall -Wextra -o "$tmp" "$SOCKMAP_SRC/sockmap_ctl.c" -lbpf ||
			{ rm -f "$tmp"; return 1; }
		mv -f "$tmp" "$ctl"
	fi
}

sockmap_available() {
	SOCKMAP_REASON=
	local root out
	[ "$(id -u)" = 0 ] || { sockmap_unavailable "not root (loading BPF programs and making cgroups needs it)"; return 1; }
	[ "$(uname -s)" = Linux ] || { sockmap_unavailable "not Linux"; return 1; }
	[ -e /proc/sys/kernel/unprivileged_bpf_disabled ] ||
		{ sockmap_unavailable "no BPF in this kernel (no /proc/sys/kernel/unprivileged_bpf_disabled)"; return 1; }
	if [ -r /proc/config.gz ] && command -v zgrep >/dev/null 2>&1; then
		local opt
		for opt in CONFIG_BPF_SYSCALL CONFIG_CGROUP_BPF CONFIG_BPF_STREAM_PARSER CONFIG_NET_SOCK_MSG; do
			zgrep -q "^$opt=y" /proc/config.gz || { sockmap_unavailable "kernel built without $opt"; return 1; }
		done
	fi
	root=$(sockmap_cgroup_root) || { sockmap_unavailable "no cgroup v2 hierarchy mounted"; return 1; }
	[ -w "$root" ] || { sockmap_unavailable "cannot write to the cgroup v2 root $root"; return 1; }
	command -v "${CLANG:-clang}" >/dev/null 2>&1 || { sockmap_unavailable "no clang (apt-get install clang)"; return 1; }
	command -v "${CC:-cc}" >/dev/null 2>&1 || { sockmap_unavailable "no C compiler ${CC:-cc}"; return 1; }
	printf '#include <bpf/libbpf.h>\n' | "${CC:-cc}" -E -x c - >/dev/null 2>&1 ||
		{ sockmap_unavailable "no libbpf headers (apt-get install libbpf-dev)"; return 1; }
	out=$(sockmap_build 2>&1) || { sockmap_unavailable "build failed: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"; return 1; }
	# The proof: the kernel accepts the programs (verifier, map types).
	out=$("$SOCKMAP_BUILD/sockmap_ctl" --check "$SOCKMAP_BUILD/sockmap.bpf.o" 2>&1) ||
		{ sockmap_unavailable "the kernel refuses the programs: $(printf '%s' "$out" | grep -v '^[0-9]*: ' | tail -n 3 | tr '\n' ' ')"; return 1; }
	return 0
}

sockmap_start() {
	local root i
	[ -z "$SOCKMAP_PID" ] || { sockmap_msg "already started (pid $SOCKMAP_PID)"; return 1; }
	sockmap_available || return 1
	root=$(sockmap_cgroup_root)
	SOCKMAP_CG=$root/shunt-sockmap-$$
	# A directory left by an earlier shell with this pid: take it over if
	# it is empty.
	[ ! -d "$SOCKMAP_CG" ] || rmdir "$SOCKMAP_CG" 2>/dev/null ||
		{ sockmap_msg "$SOCKMAP_CG exists and is busy"; SOCKMAP_CG=; return 1; }
	mkdir "$SOCKMAP_CG" || { SOCKMAP_CG=; return 1; }
	SOCKMAP_LOG=$(mktemp "${TMPDIR:-/tmp}/shunt-sockmap-ctl-XXXXXX") || { rmdir "$SOCKMAP_CG"; SOCKMAP_CG=; return 1; }
	"$SOCKMAP_BUILD/sockmap_ctl" --max-seconds "${SOCKMAP_MAX_SECONDS:-3600}" --parent $$ --rmdir \
		"$SOCKMAP_BUILD/sockmap.bpf.o" "$SOCKMAP_CG" >"$SOCKMAP_LOG" 2>&1 </dev/null &
	SOCKMAP_PID=$!
	# Registered now: from here on there is something to clean.
	if declare -p APPS_CLEANUP >/dev/null 2>&1; then
		APPS_CLEANUP+=(sockmap_stop)
	elif [ -z "$(trap -p EXIT)" ]; then
		trap sockmap_stop EXIT
	fi
	for ((i = 0; i < 200; i++)); do
		grep -q '^ready ' "$SOCKMAP_LOG" && break
		kill -0 "$SOCKMAP_PID" 2>/dev/null || break
		sleep 0.05
	done
	if ! grep -q '^ready ' "$SOCKMAP_LOG"; then
		sockmap_msg "sockmap_ctl did not start: $(grep -v '^[0-9]*: ' "$SOCKMAP_LOG" | tail -n 3 | tr '\n' ' ')"
		sockmap_stop
		return 1
	fi
	SOCKMAP_IDS=$(sed -n 's/^ready pid=[0-9]* //p' "$SOCKMAP_LOG")
	SOCKMAP_PREFIX=("$SOCKMAP_SRC/in_cgroup" "$SOCKMAP_CG")
	sockmap_msg "started: cgroup $SOCKMAP_CG, sockmap_ctl pid $SOCKMAP_PID, $SOCKMAP_IDS"
}

sockmap_run() {
	[ -n "$SOCKMAP_PID" ] || { sockmap_msg "sockmap_run: not started"; return 125; }
	(
		echo "$BASHPID" >"$SOCKMAP_CG/cgroup.procs" || exit 125
		if [ "$(type -t "$1")" = function ]; then
			"$@"
		else
			exec "$@"
		fi
	)
}

sockmap_spawn() {
	[ -n "$SOCKMAP_PID" ] || { sockmap_msg "sockmap_spawn: not started"; return 125; }
	"${SOCKMAP_PREFIX[@]}" "$@" &
	SOCKMAP_LAST_PID=$!
}

# sockmap_stats: ask the loader for its counters (SIGUSR1) and print them.
sockmap_stats() {
	[ -n "$SOCKMAP_PID" ] || return 1
	local n i
	n=$(grep -c '^stats ' "$SOCKMAP_LOG" || true)
	kill -USR1 "$SOCKMAP_PID" 2>/dev/null || return 1
	for ((i = 0; i < 40; i++)); do
		[ "$(grep -c '^stats ' "$SOCKMAP_LOG" || true)" -gt "$n" ] && break
		sleep 0.05
	done
	grep '^stats ' "$SOCKMAP_LOG" | tail -n 1
}

# sockmap_stat NAME [LINE]: one counter from a stats line (default: the last
# one the loader printed).
sockmap_stat() {
	local line=${2:-}
	[ -n "$line" ] || line=$(grep '^stats ' "$SOCKMAP_LOG" 2>/dev/null | tail -n 1)
	printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# sockmap_leftovers: what of the last run the kernel still holds, one line
# per object ("prog 12", "map 7", "link 3"); empty if nothing.  Needs
# bpftool.  The programs can outlive the loader by a moment (sockets still
# open drop their reference from an RCU callback): callers wait a little.
sockmap_leftovers() {
	local kv kind id
	command -v bpftool >/dev/null 2>&1 || return 0
	for kv in $SOCKMAP_IDS; do
		id=${kv#*=}
		case $kv in
		ops_id=* | msg_id=*) kind=prog ;;
		hash_id=* | stat_id=*) kind=map ;;
		link_id=*) kind='link' ;;
		*) continue ;;
		esac
		bpftool "$kind" show id "$id" >/dev/null 2>&1 && echo "$kind $id"
	done
	return 0
}

# (Safe under set -e: every command that may fail is tested.)
sockmap_stop() {
	local i p left='' pids rc=0
	if [ -n "$SOCKMAP_PID" ]; then
		kill -TERM "$SOCKMAP_PID" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$SOCKMAP_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$SOCKMAP_PID" 2>/dev/null; then
			sockmap_msg "sockmap_ctl (pid $SOCKMAP_PID) did not stop in 5 s: killed"
			kill -KILL "$SOCKMAP_PID" 2>/dev/null || true
			rc=1
		fi
		wait "$SOCKMAP_PID" 2>/dev/null || true
		SOCKMAP_STATS=$(grep '^stats ' "$SOCKMAP_LOG" 2>/dev/null | tail -n 1)
		grep -q '^stopped' "$SOCKMAP_LOG" 2>/dev/null ||
			{ [ -z "$SOCKMAP_IDS" ] || { sockmap_msg "sockmap_ctl: $(tail -n 3 "$SOCKMAP_LOG" | tr '\n' ' ')"; rc=1; }; }
		SOCKMAP_PID=
	fi
	if [ -n "$SOCKMAP_CG" ] && [ -d "$SOCKMAP_CG" ]; then
		# Every process in the cgroup was started through it by this
		# shell (a server its caller did not stop): end them by pid.
		pids=$(cat "$SOCKMAP_CG/cgroup.procs" 2>/dev/null || true)
		if [ -n "$pids" ]; then
			sockmap_msg "ending processes left in $SOCKMAP_CG: $(for p in $pids; do printf '%s(%s) ' "$p" "$(cat /proc/"$p"/comm 2>/dev/null)"; done)"
			# shellcheck disable=SC2086 # a list of pids
			kill -TERM $pids 2>/dev/null || true
			for ((i = 0; i < 30; i++)); do
				[ -z "$(cat "$SOCKMAP_CG/cgroup.procs" 2>/dev/null)" ] && break
				sleep 0.1
			done
			pids=$(cat "$SOCKMAP_CG/cgroup.procs" 2>/dev/null || true)
			# shellcheck disable=SC2086
			[ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
		fi
		for ((i = 0; i < 50; i++)); do
			rmdir "$SOCKMAP_CG" 2>/dev/null && break
			[ -d "$SOCKMAP_CG" ] || break
			sleep 0.1
		done
		[ ! -d "$SOCKMAP_CG" ] || { sockmap_msg "could not remove $SOCKMAP_CG"; rc=1; }
	fi
	SOCKMAP_CG=
	SOCKMAP_PREFIX=()
	if [ -n "$SOCKMAP_IDS" ]; then
		for ((i = 0; i < 50; i++)); do
			left=$(sockmap_leftovers)
			[ -n "$left" ] || break
			sleep 0.1
		done
		[ -z "$left" ] || { sockmap_msg "still in the kernel after 5 s: $(printf '%s' "$left" | tr '\n' ' ')"; rc=1; }
	fi
	[ -z "$SOCKMAP_LOG" ] || rm -f "$SOCKMAP_LOG"
	SOCKMAP_LOG=
	return $rc
}
