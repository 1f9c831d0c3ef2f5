#!/usr/bin/env bash
# tests/run.sh BUILD_DIR [TEST...] - run the test programs of one build.
#
# Runs every BUILD_DIR/tests/t_* (or only the TESTs named: "t_ring" or
# "ring"), one at a time, each under `timeout`.  Prints one line per test:
# PASS, FAIL or SKIP with the time it took, and for a failure the last lines
# of its output.  The last line is always "N passed, N failed, N skipped".
#
# Exit status: 0 if nothing failed; 1 if a test failed (or, in strict mode,
# was skipped); 2 on a usage error.
#
# Environment:
#   SHUNT_TEST_TIMEOUT  seconds per test (default 120; a script's own
#                       "# test-timeout: N" line may ask for more); past it
#                       the test is killed (TERM, then KILL 5 s later) and fails
#   SHUNT_TEST_VM=1     the tests that boot guests too ("# test-set: vm";
#                       `make test-vm` runs only those)
# A script's "# test-retry: 1" line runs it a second time if it failed
# (shown as RETRY with the first run's last lines); only a second failure
# counts.
#   CI=true or SHUNT_STRICT=1
#                       strict mode: a skipped test fails the run
#   SHUNT_TEST_TAIL     lines of output shown for a failed test (default 40)
#   SHUNT_TEST_VERBOSE=1  show the whole output of every test
#   SHUNT_TEST_BYTES    data volume for the stress tests; sanitizer builds
#                       get a smaller default (asan 256m, tsan 64m)
#   SHUNT_TEST_SEED     replay a run (each test prints its seed)
#   SHUNT_DIR           rendezvous directory; default: a fresh one per run
set -u

usage() {
	echo "usage: $0 BUILD_DIR [TEST...]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
build=${1%/}
shift
[ -d "$build" ] || { echo "$0: $build: no such directory" >&2; exit 2; }

timeout_s=${SHUNT_TEST_TIMEOUT:-120}
tail_n=${SHUNT_TEST_TAIL:-40}
strict=0
if [ "${CI:-}" = true ] || [ "${SHUNT_STRICT:-0}" = 1 ]; then
	strict=1
fi

# --- Which tests --------------------------------------------------------
tests=()
if [ $# -gt 0 ]; then
	for name in "$@"; do
		name=${name##*/}
		name=t_${name#t_}
		tests+=("$build/tests/$name")
	done
else
	for t in "$build"/tests/t_*; do
		case ${t##*/} in *.*) continue ;; esac # t_x.o, t_x.d
		[ -f "$t" ] && [ -x "$t" ] || continue
		# Tests that boot guests ("# test-set: vm") run when named, by
		# `make test-vm`, or with SHUNT_TEST_VM=1.
		if [ "${SHUNT_TEST_VM:-0}" != 1 ] &&
			head -c 4096 "$t" | grep -aq '^# test-set: vm$'; then
			continue
		fi
		tests+=("$t")
	done
fi
if [ ${#tests[@]} -eq 0 ]; then
	echo "no tests found in $build/tests (build them first: make)"
	echo "0 passed, 0 failed, 0 skipped"
	exit 1
fi

# --- How to run them ----------------------------------------------------
prefix=()
kind=plain
case ${build##*/} in
*tsan*) kind=tsan ;;
*asan*) kind=asan ;;
esac
if [ "$kind" = tsan ]; then
	# TSan's shadow memory layout breaks on kernels with many bits of
	# mmap randomisation ("FATAL: ThreadSanitizer: unexpected memory
	# mapping"); running without ASLR avoids that everywhere.
	if setarch "$(uname -m)" -R true 2>/dev/null; then
		prefix=(setarch "$(uname -m)" -R)
	else
		echo "note: setarch -R is not permitted here; running TSan with ASLR" \
			"(vm.mmap_rnd_bits=$(sysctl -n vm.mmap_rnd_bits 2>/dev/null || echo '?'))"
	fi
	export SHUNT_TEST_BYTES=${SHUNT_TEST_BYTES:-64m}
	export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1 exitcode=66 suppressions=$(cd "$(dirname "$0")" && pwd)/tsan.supp}
fi
if [ "$kind" = asan ]; then
	export SHUNT_TEST_BYTES=${SHUNT_TEST_BYTES:-256m}
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi

# Script tests find the build (binaries, preload library) here.
SHUNT_BUILD=$(cd "$build" && pwd)
export SHUNT_BUILD

# A private rendezvous directory per run, unless the caller chose one.
own_dir=
if [ -z "${SHUNT_DIR:-}" ]; then
	own_dir=$(mktemp -d "${TMPDIR:-/tmp}/shunt-run-XXXXXX") || exit 2
	export SHUNT_DIR=$own_dir
fi
outdir=$(mktemp -d "${TMPDIR:-/tmp}/shunt-out-XXXXXX") || exit 2
cleanup() {
	rm -rf "$outdir"
	[ -n "$own_dir" ] && rm -rf "$own_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "running ${#tests[@]} test(s) from $build ($kind build, timeout ${timeout_s}s each)"

passed=0 failed=0 skipped=0
failed_names=() skipped_names=()
for t in "${tests[@]}"; do
	name=${t##*/}
	out=$outdir/$name.out
	if [ ! -x "$t" ]; then
		printf 'FAIL  %-14s no such test program: %s\n' "$name" "$t"
		failed=$((failed + 1))
		failed_names+=("$name")
		continue
	fi
	# A script may need longer (guests under TCG): "# test-timeout: N"
	# among its first lines, never below the run's own.
	secs_t=$(head -c 4096 "$t" | grep -a -m1 '^# test-timeout: [0-9]*$' | tr -dc 0-9)
	[ -n "$secs_t" ] && [ "$secs_t" -gt "$timeout_s" ] || secs_t=$timeout_s
	# "# test-retry: 1": a failed run is run once more, and the failure
	# is shown (the guests' tests: TCG on a busy host times out now and
	# then).  Only a second failure fails the test.
	tries=$(head -c 4096 "$t" | grep -a -m1 '^# test-retry: 1$' >/dev/null && echo 2 || echo 1)
	while :; do
		t0=$(now)
		timeout -k 5 "$secs_t" "${prefix[@]}" "$t" >"$out" 2>&1 </dev/null
		rc=$?
		dt=$(secs "$t0" "$(now)")
		tries=$((tries - 1))
		case $rc in 0 | 77) break ;; esac
		[ "$tries" -gt 0 ] || break
		printf 'RETRY %-14s %7ss  status %s; its failures and last lines:\n' "$name" "$dt" "$rc"
		{ grep -a -m 5 -i 'fail' "$out"; tail -n 12 "$out"; } | sed 's/^/    | /'
	done
	why=
	case $rc in
	0) verdict=PASS ;;
	77) verdict=SKIP ;;
	124 | 137) verdict=FAIL why="timed out after ${secs_t}s" ;;
	*)
		verdict=FAIL
		if [ "$rc" -gt 128 ]; then
			why="killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
		else
			why="exit status $rc"
		fi
		;;
	esac
	case $verdict in
	PASS)
		passed=$((passed + 1))
		printf 'PASS  %-14s %7ss\n' "$name" "$dt"
		;;
	SKIP)
		skipped=$((skipped + 1))
		skipped_names+=("$name")
		reason=$(grep -m1 -o 'skip: .*' "$out" | cut -c7-)
		printf 'SKIP  %-14s %7ss  %s\n' "$name" "$dt" "${reason:-(no reason given)}"
		;;
	FAIL)
		failed=$((failed + 1))
		failed_names+=("$name")
		printf 'FAIL  %-14s %7ss  %s\n' "$name" "$dt" "$why"
		if [ "${SHUNT_TEST_VERBOSE:-0}" != 1 ]; then
			# Its "fail" lines first, unless the tail shows them.
			tail -n "$tail_n" "$out" >"$out.tail"
			{ grep -a -m 5 -i 'fail' "$out" | grep -a -vxF -f "$out.tail"; cat "$out.tail"; } |
				sed 's/^/    | /'
		fi
		;;
	esac
	if [ "${SHUNT_TEST_VERBOSE:-0}" = 1 ]; then
		sed 's/^/    | /' "$out"
	fi
done

status=0
if [ "$failed" -gt 0 ]; then
	echo "failed: ${failed_names[*]}"
	status=1
fi
if [ "$skipped" -gt 0 ]; then
	if [ "$strict" = 1 ]; then
		echo "strict mode (CI=true or SHUNT_STRICT=1): skipped tests count as failures: ${skipped_names[*]}"
		status=1
	else
		echo "skipped: ${skipped_names[*]}"
	fi
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
