#!/usr/bin/env bash
# t_bindings: the library never calls its own wrappers.  The dynamic
# loader, asked to bind every symbol at once and say so
# (LD_BIND_NOW=1 LD_DEBUG=bindings), must list no reference of
# libshunt-preload.so (or libshunt.so) bound to a symbol of the same
# library: each of the library's calls of close, send, poll, ... goes to
# libc or to a system call of its own (src/base/sys.h), never through the
# wrapper a program's call would take.  The loader's own list of the
# library's bindings must not be empty (else the check saw nothing).
set -euo pipefail
build=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
build=$(cd "$build" && pwd -P)
fail() {
	echo "FAIL: $*"
	exit 1
}
for lib in libshunt-preload.so libshunt.so; do
	so=$build/$lib
	[ -f "$so" ] || fail "no $so (make first)"
	out=$(LD_BIND_NOW=1 LD_DEBUG=bindings LD_PRELOAD=$so /bin/true 2>&1 || true)
	mine=$(grep -F "binding file $so " <<<"$out" || true)
	total=$(grep -c . <<<"$mine" || true)
	self=$(grep -F " to $so " <<<"$mine" || true)
	[ "$total" -gt 0 ] || fail "$lib: the loader listed none of its bindings"
	[ -z "$self" ] || fail "$lib: bound to itself: $(sed 's/.*symbol//' <<<"$self" | tr '\n' ' ')"
	echo "bindings: $lib: $total references bound, none to itself"
done
