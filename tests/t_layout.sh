#!/usr/bin/env bash
# t_layout: what a fork-per-connection server's children cost in page
# faults depends on where the preload library puts things (bench/forkfaults.c):
#   - the state a fork writes (section shunt_fork_hot, with the first fds'
#     table and the first tracked sockets) lies in one 4 KiB page, which both
#     sides of a fork write anyway;
#   - the code a child runs (SHUNT_FORK_TEXT) lies in one 64 KiB of
#     addresses the loader maps on a 64 KiB boundary (every PT_LOAD aligned
#     so), the kernel's fault-around: one fault for all of it;
#   - the loader's DT_FINI call at exit goes into that code.
# Each check names the addresses it read (readelf, nm).
set -euo pipefail
build=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
so=$(cd "$build" && pwd -P)/libshunt-preload.so
fail() {
	echo "FAIL: $*"
	exit 1
}
[ -f "$so" ] || fail "no $so (make first)"

syms=$(nm "$so")
addr() {
	awk -v f="$1" '$3 == f && !done { print $1; done = 1 }' <<<"$syms"
}

# shunt_fork_hot: start and size (hex) from the section table.
read -r start size < <(readelf -S -W "$so" |
	awk '$2 == "shunt_fork_hot" { print $4, $6 } $3 == "shunt_fork_hot" { print $5, $7 }')
[ -n "${start:-}" ] || fail "no section shunt_fork_hot in $so"
s=$((16#$start)) n=$((16#$size))
[ $((s / 4096)) -eq $(((s + n - 1) / 4096)) ] ||
	fail "shunt_fork_hot at 0x$start, 0x$size bytes, spans $(((s + n - 1) / 4096 - s / 4096 + 1)) pages"
echo "shunt_fork_hot: 0x$start + 0x$size, one page"
for v in hot cached_pid own_mu pool; do
	a=$(addr "$v")
	[ -n "$a" ] && [ $((16#$a)) -ge $s ] && [ $((16#$a)) -lt $((s + n)) ] ||
		fail "$v (at 0x${a:-none}) not in shunt_fork_hot"
done
echo "the first fds' table and tracked sockets (hot), the pid, the locks and the pool in it"

# Every loadable segment aligned to 64 KiB at least.
aligns=$(readelf -l -W "$so" | awk '$1 == "LOAD" { print $NF }')
[ -n "$aligns" ] || fail "no PT_LOAD in $so"
for a in $aligns; do
	[ $((a)) -ge 65536 ] || fail "a PT_LOAD aligned to $a, not 64 KiB: $(tr '\n' ' ' <<<"$aligns")"
done
echo "PT_LOAD alignments: $(tr '\n' ' ' <<<"$aligns")"

# The child's code: these SHUNT_FORK_TEXT functions (its fork handler, a
# read's lookup, the close, the exit) and DT_FINI in one 64 KiB window.
fini=$(readelf -d "$so" | awk '/\(FINI\)/ { print $NF }')
[ -n "$fini" ] || fail "no DT_FINI"
win=$(($(printf '%d' "$fini") / 65536))
for f in shim_fork_child shim_get shim_close_begin shim_exit shunt__own_unlock; do
	a=$(addr "$f")
	[ -n "$a" ] || fail "no symbol $f in $so"
	[ $((16#$a / 65536)) -eq "$win" ] ||
		fail "$f at 0x$a, DT_FINI at $fini: not in one 64 KiB window"
done
echo "DT_FINI at $fini ($(awk -v a="$(printf '%016x' "$fini")" '$1 == a && !done { print $3; done = 1 }' <<<"$syms")), and the fork handlers, lookup, close and exit in its 64 KiB"
