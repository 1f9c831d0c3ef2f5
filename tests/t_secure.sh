#!/usr/bin/env bash
# t_secure: a set-user-ID program reads none of its caller's SHUNT_*
# variables.  Installed system-wide (/etc/ld.so.preload names the preload
# library), the loader runs the library in set-user-ID programs too, with
# the caller's environment: SHUNT_LOG_FILE made a root program append to a
# root-only file, and a newline in SHUNT_SPIN_US wrote a line of the
# caller's choosing into it (a helper's attack, which root's shell then
# ran).  Root only: /etc is overlaid in a private mount namespace, so the
# machine's own /etc never changes.
#  - control: root runs the program (no secure execution): the library is
#    loaded from ld.so.preload, opens the log and complains about the bad
#    value, on one line (the newline in the value escaped);
#  - attack: user nobody runs the same program set-user-ID root: no log
#    file appears.
set -euo pipefail
build=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
lib=$build/libshunt-preload.so
T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-secure-XXXXXX")
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"

fail() {
	echo "FAIL: $*"
	exit 1
}
say() { echo "secure: $*"; }
[ -f "$lib" ] || fail "no $lib (make first)"
[ "$(id -u)" = 0 ] || { echo "skip: root needed (mount namespace, set-user-ID file)"; exit 77; }
for c in gcc unshare setpriv; do
	command -v "$c" >/dev/null || fail "$c is missing"
done
findmnt -no OPTIONS --target "$T" | grep -qw nosuid && fail "$T is on a nosuid mount"

printf '#include <stdio.h>\nint main(void) { puts("ran"); return 0; }\n' >"$T/prog.c"
gcc -o "$T/prog" "$T/prog.c"
mkdir -p "$T/up" "$T/work" "$T/rootonly"
chmod 700 "$T/rootonly"
bad=$(printf 'x\nINJECTED')

# ns CMD...: CMD in a mount namespace whose /etc/ld.so.preload names us.
ns() {
	timeout 20 unshare -m env LIB="$lib" T="$T" "$@" 3<<'EOF'
set -e
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$T/up,workdir=$T/work" /etc
echo "$LIB" >/etc/ld.so.preload
shift 0
exec "$@"
EOF
}
ns() {
	timeout 20 unshare -m bash -c '
		set -e
		mount --make-rprivate /
		mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/up,workdir=$1/work" /etc
		echo "$2" >/etc/ld.so.preload
		shift 2
		exec "$@"' ns "$T" "$lib" "$@"
}

# Control: root, no secure execution.
ns env -i PATH=/usr/bin:/bin SHUNT_LOG=error SHUNT_LOG_FILE="$T/rootonly/control.log" \
	SHUNT_SPIN_US="$bad" "$T/prog" >"$T/control.out" 2>&1 || fail "control run: $(cat "$T/control.out")"
grep -qx ran "$T/control.out" || fail "control run printed: $(cat "$T/control.out")"
[ -s "$T/rootonly/control.log" ] ||
	fail "control: no log from the library: is it loaded from /etc/ld.so.preload?"
grep -q 'SHUNT_SPIN_US' "$T/rootonly/control.log" ||
	fail "control: the log lacks the complaint: $(cat "$T/rootonly/control.log")"
grep -q '^INJECTED' "$T/rootonly/control.log" &&
	fail "a newline in a value made a line of its own: $(cat "$T/rootonly/control.log")"
say "control: the library logged from ld.so.preload, on one line: $(head -c 120 "$T/rootonly/control.log")"

# The attack: nobody runs it set-user-ID root.
chmod 4755 "$T/prog"
ns setpriv --reuid=65534 --regid=65534 --clear-groups \
	env -i PATH=/usr/bin:/bin SHUNT_LOG=error SHUNT_LOG_FILE="$T/rootonly/attack.log" \
	SHUNT_SPIN_US="$bad" SHUNT_CONFIG="$T/rootonly/none.conf" "$T/prog" >"$T/attack.out" 2>&1 ||
	fail "set-user-ID run: $(cat "$T/attack.out")"
chmod 755 "$T/prog"
[ "$(cat "$T/attack.out")" = ran ] || fail "set-user-ID run printed: $(cat "$T/attack.out")"
[ -e "$T/rootonly/attack.log" ] &&
	fail "a set-user-ID program wrote the caller's SHUNT_LOG_FILE: $(cat "$T/rootonly/attack.log")"
say "set-user-ID: the caller's SHUNT_LOG_FILE, SHUNT_SPIN_US and SHUNT_CONFIG were not read"
echo "PASS"
