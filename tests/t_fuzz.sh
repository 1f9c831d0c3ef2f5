#!/usr/bin/env bash
# t_fuzz: the libFuzzer harnesses (tests/fuzz/fuzz_*.c) over everything
# that parses input from a peer or a user, each for a bounded time
# (SHUNT_FUZZ_SECONDS, default 10; `make fuzz` runs them longer).  Fails
# when a harness finds a crash, a sanitizer report or a failed check; the
# input that did it is kept and its path printed.  Needs clang.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$src/tests/fuzz" ] || src=$(cd "$(dirname "$0")/../.." && pwd) # run from build/tests
secs=${SHUNT_FUZZ_SECONDS:-10}
command -v "${CLANG:-clang}" >/dev/null || { echo "skip: clang is not installed"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/shunt-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
"$src/tests/fuzz/build.sh" "$work/bin"
status=0
for bin in "$work"/bin/fuzz_*; do
	name=${bin##*/}
	corpus=$work/corpus/$name
	mkdir -p "$corpus" "$work/crash"
	cp "$src/tests/fuzz/corpus/$name"/* "$corpus"/ 2>/dev/null || true
	# The library's complaints about bad config lines are expected: quiet.
	if SHUNT_LOG=none "$bin" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 \
		-artifact_prefix="$work/crash/$name-" "$corpus" >"$work/$name.log" 2>&1; then
		runs=$(grep -o 'Done [0-9]* runs' "$work/$name.log" | tail -1)
		echo "$name: ${runs:-?} in ${secs}s, nothing found"
	else
		echo "FAIL: $name found a problem:"
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$work/$name.log" | head -10
		keep=${TMPDIR:-/tmp}/shunt-fuzz-crash-$$
		mkdir -p "$keep" && cp "$work"/crash/* "$keep"/ 2>/dev/null || true
		echo "inputs kept in $keep"
		status=1
	fi
done
exit $status
