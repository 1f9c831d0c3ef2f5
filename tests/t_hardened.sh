#!/usr/bin/env bash
# t_hardened: the libraries build with the flags a distribution builds
# packages with (Debian's dpkg-buildflags hardening: -D_FORTIFY_SOURCE=2,
# where glibc's headers turn read(), open() and the like into inline
# wrappers with attributes of their own; Ubuntu's gcc turns it on by
# default), under the Makefile's -Werror, and the preload library then
# exports the same wrappers (glibc's second names among them).  A change
# that copied the fortified attributes onto those names broke this build
# and passed every other test (a helper's review, 12-07).
# test-timeout: 300
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$src/Makefile" ] || src=$(cd "$(dirname "$0")/.." && pwd)
build=${SHUNT_BUILD:-$src/build}
fail() {
	echo "FAIL: $*"
	exit 1
}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -D_FORTIFY_SOURCE=2"
if ! make -s -C "$src" B="$out" CFLAGS="$flags" "$out/libshunt-preload.so" "$out/libshunt.so" \
	>"$out/make.log" 2>&1; then
	tail -n 20 "$out/make.log"
	fail "the build with $flags failed"
fi
echo "built with $flags: libshunt-preload.so, libshunt.so"
exports() {
	nm -D --defined-only "$1" | awk '$2 ~ /^[TW]$/ { print $3 }' | sort
}
plain=$(exports "$build/libshunt-preload.so")
hard=$(exports "$out/libshunt-preload.so")
[ -n "$plain" ] || fail "no exports read from $build/libshunt-preload.so (make first)"
[ "$plain" = "$hard" ] || fail "the exports differ: $(diff <(echo "$plain") <(echo "$hard") | tr '\n' ' ')"
for f in __read __write __close __open_2; do
	grep -qx "$f" <<<"$hard" || fail "$f is not exported"
done
echo "the preload library exports the same $(wc -l <<<"$hard") functions, glibc's second names among them"
