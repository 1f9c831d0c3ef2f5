#!/usr/bin/env bash
# t_man: the manual pages in man/ are whole and say what the code has.
#  - every page renders with groff -man -ww (all warnings) without a word
#    on stderr; an alias page (.so) names a page that exists;
#  - every function declared in include/shunt.h has its own page in section
#    3 whose NAME line names it;
#  - every page a SEE ALSO names among shunt's own exists;
#  - shunt(1) names every subcommand of tools/shunt.c and every --option
#    of tools/*.c; shunt.conf(5) every setting of src/base/config.c's
#    table; shunt(7) exists.
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$src/include/shunt.h" ] || src=$(cd "$(dirname "$0")/.." && pwd)
man=$src/man
fails=0
bad() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}
command -v groff >/dev/null || { echo "skip: groff is not installed (groff-base)"; exit 77; }
[ -d "$man" ] || { echo "FAIL: no $man"; exit 1; }

# --- Rendering -------------------------------------------------------------
n=0
for p in "$man"/*.[1-8]; do
	name=${p##*/}
	if head -n1 "$p" | grep -c '^\.so ' >/dev/null; then
		target=$(head -n1 "$p" | awk '{ print $2 }')
		[ "$(wc -l <"$p")" = 1 ] || bad "$name: an alias page must be one .so line"
		[ -f "$man/${target##*/}" ] || bad "$name: .so names $target, which does not exist"
		continue
	fi
	out=$(LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 "$p" 2>&1)
	rc=$?
	[ $rc = 0 ] || bad "$name: groff exited with status $rc"
	[ -z "$out" ] || bad "$name: groff warns: $out"
	# The header names the page and its section.
	sec=${name##*.}
	head -n1 "$p" | grep -ci "^\.TH ${name%.*} $sec " >/dev/null || bad "$name: its .TH line is not '.TH ${name%.*} $sec ...'"
	grep -q '^\.SH NAME' "$p" || bad "$name: no NAME section"
	grep -q '^\.SH SEE ALSO' "$p" || bad "$name: no SEE ALSO section"
	n=$((n + 1))
done
echo "man: $n pages render without a warning"

# --- Every function has a page ----------------------------------------------
funcs=$(grep -oE '^[a-z].*[ *](shunt_[a-z_]+)\(' "$src/include/shunt.h" |
	grep -oE 'shunt_[a-z_]+\($' | tr -d '(' | sort -u)
nf=$(echo "$funcs" | wc -w)
[ "$nf" -ge 18 ] || bad "found only $nf functions in shunt.h: the pattern is wrong"
for f in $funcs; do
	p=$man/$f.3
	[ -f "$p" ] || { bad "$f has no page $f.3"; continue; }
	if head -n1 "$p" | grep -c '^\.so ' >/dev/null; then
		p=$man/$(head -n1 "$p" | awk '{ print $2 }' | sed 's|.*/||')
	fi
	sed -n '/^\.SH NAME/,/^\.SH/p' "$p" | grep -cw "$f" >/dev/null || bad "$f: the NAME of ${p##*/} does not name it"
	sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$p" | grep -c "\"$f(\|$f(" >/dev/null || bad "$f: the SYNOPSIS of ${p##*/} does not declare it"
done
echo "man: all $nf functions of shunt.h have a page"

# --- SEE ALSO names pages that exist -----------------------------------------
for p in "$man"/*.[1-8]; do
	grep -q '^\.so ' "$p" && continue
	sed -n '/^\.SH SEE ALSO/,$p' "$p" | grep -oE '^\.BR (shunt[a-z_.]*) \(([1-8])\)' |
		while read -r _ ref sec; do
			sec=${sec//[()]/}
			[ -f "$man/$ref.$sec" ] || echo "FAIL: ${p##*/}: SEE ALSO $ref($sec), which does not exist"
		done
done | tee "${TMPDIR:-/tmp}/t_man.$$"
[ -s "${TMPDIR:-/tmp}/t_man.$$" ] && fails=$((fails + 1))
rm -f "${TMPDIR:-/tmp}/t_man.$$"

# --- The CLI and the config file as the code has them -------------------------
[ -f "$man/shunt.7" ] || bad "no shunt.7"
cmds=$(sed -n '/commands\[\] = {/,/^};/p' "$src/tools/shunt.c" | grep -oE '\{ "[a-z]+"' | tr -d '{" ')
[ "$(echo "$cmds" | wc -w)" -ge 5 ] || bad "found only $(echo "$cmds" | wc -w) subcommands in tools/shunt.c"
for c in $cmds; do
	grep -q "^\.B shunt $c\|^\.SS shunt $c" "$man/shunt.1" || bad "shunt.1 does not describe 'shunt $c'"
done
# Options compared by strcmp ("--json") and getopt_long's tables ({ "quick", ...).
opts=$( (grep -ohE '"--[a-z][a-z-]*"' "$src"/tools/*.c | tr -d '"'
	grep -ohE '\{ "[a-z][a-z-]*", (no|required|optional)_argument' "$src"/tools/*.c |
		sed -E 's/\{ "([a-z-]+)".*/--\1/') | sort -u)
[ "$(echo "$opts" | wc -w)" -ge 15 ] || bad "found only $(echo "$opts" | wc -w) options in tools/*.c"
for o in $opts; do
	esc=${o//-/\\\\-}
	grep -q -- "$esc\|$o" "$man/shunt.1" || bad "shunt.1 does not describe $o"
done
keys=$(sed -n '/^} settings\[\] = {/,/^};/p' "$src/src/base/config.c" | grep -oE '\{ "[a-z-]+"' | tr -d '{" ')
[ "$(echo "$keys" | wc -w)" -ge 10 ] || bad "found only $(echo "$keys" | wc -w) settings in config.c"
for k in $keys; do
	esc=${k//-/\\\\-}
	grep -q "^\.BI\? \"\?$esc\|^\.BR \"\?$esc" "$man/shunt.conf.5" || bad "shunt.conf.5 does not describe '$k'"
done
echo "man: shunt.1 has $(echo "$cmds" | wc -w) subcommands and $(echo "$opts" | wc -w) options, shunt.conf.5 $(echo "$keys" | wc -w) settings"

if [ "$fails" -gt 0 ]; then
	echo "$fails problem(s)"
	exit 1
fi
echo "man: ok"
