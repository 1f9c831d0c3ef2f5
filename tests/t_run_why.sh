#!/usr/bin/env bash
# t_run_why: `shunt run` says, in one line on stderr, when the program it
# runs cannot be reached by the preload library, and runs it all the same:
#  - a statically linked program (gcc -static): no ELF interpreter;
#  - a Go program: an ELF with a .go.buildinfo section, and one with only
#    Go's build ID note (name "Go", type 4) in a PT_NOTE segment;
#  - a script whose #! interpreter is one of those;
#  - set-user-ID for someone else (root only: run as nobody);
#  - a 32-bit program (gcc -m32), run without the library in LD_PRELOAD:
#    its loader cannot load it and said so on the program's stderr, from
#    `shunt run` and from the library's exec in a program under it alike
#    (there without a warning: the library prints nothing), the
#    LD_PRELOAD's other items passed on;
#  - a program started after the library's file went from view (a mount
#    over its directory: root only), likewise;
# and stays silent for an ordinary dynamic program, for a set-user-ID
# program run by its owner, and under SHUNT_LOG=none.  Each program's exit
# status and output must come through unchanged.
set -euo pipefail
build=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
shunt=$build/shunt
T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-why-XXXXXX")
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"

fail() {
	echo "FAIL: $*"
	for f in "$T"/*.err; do
		[ -s "$f" ] && { echo "--- ${f##*/}"; cat "$f"; }
	done
	exit 1
}
say() { echo "run_why: $*"; }
[ -x "$shunt" ] || fail "no $shunt (make first)"
command -v gcc >/dev/null || { echo "skip: no gcc"; exit 77; }

# Every program prints "ran NAME" and exits 7.
prog() {
	printf '#include <stdio.h>\n%s\nint main(void) { puts("ran %s"); return 7; }\n' "$2" "$1" >"$T/$1.c"
}
prog dynamic ''
prog static ''
prog gobuildinfo '__attribute__((section(".go.buildinfo"), used)) static const char bi[32] = "\xff Go buildinf:";'
# Go's build ID note, in a note section of another name, so that only the
# PT_NOTE segment tells.
prog gonote '__asm__(".section .note.shunttest,\"a\",@note\n.balign 4\n.long 3\n.long 8\n.long 4\n.asciz \"Go\"\n.balign 4\n.ascii \"abcdefgh\"\n.previous\n");'
gcc -o "$T/dynamic" "$T/dynamic.c"
gcc -static -o "$T/static" "$T/static.c" 2>"$T/static-cc.err" ||
	fail "gcc -static failed (libc6-dev installs the static C library)"
gcc -o "$T/gobuildinfo" "$T/gobuildinfo.c"
printf '#include <stdio.h>\n#include <stdlib.h>\nint main(void) { const char *p = getenv("LD_PRELOAD"); printf("ran x32 [%%s]\\n", p ? p : "-"); return 7; }\n' >"$T/x32.c"
gcc -m32 -o "$T/x32" "$T/x32.c" 2>"$T/x32-cc.err" ||
	fail "gcc -m32 failed (gcc-multilib installs the 32-bit C library and loader)"
gcc -o "$T/gonote" "$T/gonote.c"
# The fakes are what they should be (so that a pass means something).
readelf -lW "$T/static" | grep -c 'INTERP' >/dev/null && fail "the static program has an interpreter"
readelf -lW "$T/dynamic" | grep -c 'INTERP' >/dev/null || fail "the dynamic program has no interpreter"
readelf -SW "$T/gobuildinfo" | grep -c '\.go\.buildinfo' >/dev/null || fail "no .go.buildinfo section in the fake"
readelf -nW "$T/gonote" | grep -c '^ *Go .*GO BUILDID' >/dev/null ||
	fail "no Go build ID note in the fake: $(readelf -nW "$T/gonote")"
readelf -SW "$T/gonote" | grep -c '\.go\.' >/dev/null && fail "the note fake has a Go section name"
printf '#!%s\n' "$T/static" >"$T/script"
chmod +x "$T/script"

# run NAME [ENV...] -- CMD...: run `shunt run -- CMD`, stdout in NAME.out,
# stderr in NAME.err; the exit status must be the program's (7).
run() {
	local name=$1
	shift
	local envs=()
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	local rc=0
	env "${envs[@]}" "$@" >"$T/$name.out" 2>"$T/$name.err" || rc=$?
	[ "$rc" = 7 ] || fail "$name: exit status $rc, not the program's 7"
	grep -q '^ran ' "$T/$name.out" || fail "$name: the program did not run"
}

# warns NAME PATTERN: exactly one line on stderr, a warning that matches.
warns() {
	local n
	n=$(wc -l <"$T/$1.err")
	[ "$n" = 1 ] || fail "$1: $n lines on stderr, not 1"
	grep -q "^shunt run: warning: .*$2.*stay on TCP" "$T/$1.err" ||
		fail "$1: the warning does not say '$2': $(cat "$T/$1.err")"
	say "$1: $(cat "$T/$1.err")"
}

silent() {
	[ ! -s "$T/$1.err" ] || fail "$1: a warning where none is due: $(cat "$T/$1.err")"
	say "$1: no warning"
}

run static -- "$shunt" run -- "$T/static"
warns static "statically linked"
run gobuildinfo -- "$shunt" run -- "$T/gobuildinfo"
warns gobuildinfo "a Go program"
run gonote -- "$shunt" run -- "$T/gonote"
warns gonote "a Go program"
run script -- "$shunt" run -- "$T/script"
warns script "script (run by $T/static) is statically linked"
run dynamic -- "$shunt" run -- "$T/dynamic"
silent dynamic
run x32 -- "$shunt" run -- "$T/x32"
warns x32 "a 32-bit program"
grep -qx 'ran x32 \[-\]' "$T/x32.out" || fail "x32: given LD_PRELOAD: $(cat "$T/x32.out")"
# Started by a program that runs the library (sh), with another item in
# LD_PRELOAD that loaders of both classes find (by name, each in its own
# directories): that one only reaches it.
run x32child LD_PRELOAD=libdl.so.2 -- "$shunt" run -- sh -c "$T/x32; exit \$?"
silent x32child
grep -qx 'ran x32 \[libdl.so.2\]' "$T/x32child.out" ||
	fail "x32child: given LD_PRELOAD: $(cat "$T/x32child.out")"
# Found through PATH, as execvp finds it.
run path PATH="$T:$PATH" -- "$shunt" run -- static
warns path "$T/static is statically linked"
run quiet SHUNT_LOG=none -- "$shunt" run -- "$T/static"
silent quiet
# A FIFO of that name first on PATH (another user's, in a directory open to
# them): execvp passes over it, and so must the look inside (it hung on the
# FIFO's open for good).
mkdir "$T/fifo"
mkfifo -m 755 "$T/fifo/dynamic"
run pathfifo PATH="$T/fifo:$T:$PATH" -- timeout 10 "$shunt" run -- dynamic
silent pathfifo

if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
	cp "$T/dynamic" "$T/setuid"
	chmod 4755 "$T/setuid"
	run owner -- "$shunt" run -- "$T/setuid"
	silent owner
	# nobody may not reach the build tree (a clone under /root): a copy of
	# the CLI with its preload library beside it, in the open temp dir.
	mkdir "$T/bin"
	cp "$shunt" "$build/libshunt-preload.so" "$T/bin/"
	chmod -R a+rX "$T/bin"
	run nobody -- setpriv --reuid=65534 --regid=65534 --clear-groups "$T/bin/shunt" run -- "$T/setuid"
	if findmnt -no OPTIONS --target "$T" | grep -cw nosuid >/dev/null; then
		# The kernel ignores the bit on this mount: so must we.
		silent nobody
	else
		warns nobody "set-user-ID: the loader ignores LD_PRELOAD"
	fi
	# The name the library was loaded by, gone from the view of a program
	# under it (a mount over its directory in a mount namespace of its
	# own, as a chroot would): what that program starts must not hear from
	# its loader that the library cannot be opened.
	run hidden -- "$T/bin/shunt" run -- unshare -m sh -c \
		"mount -t tmpfs none '$T/bin' && '$T/dynamic'; exit \$?"
	silent hidden
else
	say "not root: the set-user-ID cases are left out"
fi
say "ok"
