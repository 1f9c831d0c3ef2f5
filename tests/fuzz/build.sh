#!/usr/bin/env bash
# tests/fuzz/build.sh OUT_DIR - build the libFuzzer harnesses with clang
# (ASan + UBSan + libFuzzer) into OUT_DIR, each linked with the library's
# sources it exercises (not the shim: its wrappers would interpose the
# fuzzer's own calls).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
cc=${CLANG:-clang}
flags=(-std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined
	-fno-sanitize-recover=undefined -Wall -Wextra -Werror
	-Wno-unused-command-line-argument
	-I"$src/include" -I"$src/src/base" -I"$src/src/core" -I"$src/src/medium"
	-I"$src/src/medium/local" -I"$src/src/native" -I"$src/src/shim")
lib=("$src"/src/base/*.c "$src"/src/core/*.c "$src"/src/medium/local/*.c)
for h in "$src"/tests/fuzz/fuzz_*.c; do
	name=$(basename "$h" .c)
	extra=()
	[ -f "$src/tests/fuzz/$name.deps" ] && read -r -a extra <"$src/tests/fuzz/$name.deps"
	"$cc" "${flags[@]}" -o "$out/$name" "$h" "${lib[@]}" "${extra[@]/#/$src/}" -lpthread
done
