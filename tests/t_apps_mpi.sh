#!/usr/bin/env bash
# t_apps_mpi: Open MPI over its TCP transport (--mca btl tcp,self, pml ob1,
# loopback only), 2 ranks on this host, running tests/mpi_pingpong.c
# (compiled with mpicc into the temp dir): every payload byte of round trips
# from 1 B to 3 MiB checked, then the 8-byte latency and the 1 MiB
# bandwidth.  Run on plain TCP and with both ranks under shunt (each rank
# logging to its own file); every run must check out, and under shunt each
# rank must have moved its connection to the other.  Prints the
# figures of each run, and the medians of 3 alternating runs of each kind
# and their ratios.  The targets (8-byte latency at most 0.5x TCP's, 1 MiB
# bandwidth at least 2x) are shown, not asserted.  SHUNT_MPI_LAT_ITERS and
# SHUNT_MPI_BW_ITERS change the round trips timed (20000 and 300),
# SHUNT_MPI_RUNS the runs of each kind (3).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init mpi
need mpicc mpirun

LAT_ITERS=${SHUNT_MPI_LAT_ITERS:-20000} BW_ITERS=${SHUNT_MPI_BW_ITERS:-300}
RUNS=${SHUNT_MPI_RUNS:-3}

mpicc -O2 -o "$T/mpi_pingpong" "$APPS_SRC/tests/mpi_pingpong.c" >"$T/mpicc.out" 2>&1 ||
	fail "mpicc failed: $(head -n3 "$T/mpicc.out")"

# Each rank runs under a small wrapper that preloads the shim (unless
# SHUNT_APPS_TCP=1) and gives the rank its own log, by rank number.  mpirun
# itself stays on plain TCP, so that its control connections to the ranks
# cannot move and each upgraded connection is one between the ranks.
# shellcheck disable=SC2016 # expanded by the wrapper
printf '%s\n' '#!/bin/sh' \
	'export SHUNT_LOG=info SHUNT_LOG_FILE="$SHUNT_RANK_LOG-rank${OMPI_COMM_WORLD_RANK:-x}.log"' \
	'[ -z "$SHUNT_RANK_PRELOAD" ] || export LD_PRELOAD="$SHUNT_RANK_PRELOAD"' \
	'exec "$@"' >"$T/rank.sh"
chmod 755 "$T/rank.sh"

mpi_args=(-np 2 --oversubscribe --mca pml ob1 --mca btl "tcp,self"
	--mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
	-x SHUNT_RANK_LOG -x SHUNT_RANK_PRELOAD -x SHUNT_DIR -x SHUNT_CONFIG)
[ "$(id -u)" -ne 0 ] || mpi_args+=(--allow-run-as-root)

# run_mpi NAME tcp|shunt: one run, output in $T/NAME.out; the ranks log to
# $T/NAME-rank0.log and $T/NAME-rank1.log.
run_mpi() {
	local name=$1 how=$2
	export SHUNT_RANK_LOG=$T/$name SHUNT_RANK_PRELOAD=
	[ "$how" = tcp ] || [ "$APPS_TCP" = 1 ] || SHUNT_RANK_PRELOAD=$SHUNT_PRELOAD
	timeout -k 5 90 env -u LD_PRELOAD mpirun "${mpi_args[@]}" \
		"$T/rank.sh" "$T/mpi_pingpong" "$LAT_ITERS" "$BW_ITERS" >"$T/$name.out" 2>&1 ||
		fail "mpirun ($name) exited with status $? ($(grep -m1 -E 'rank [01]:|rror' "$T/$name.out" || tail -n1 "$T/$name.out"))"
	grep -q '^payloads: .*every byte right' "$T/$name.out" || fail "$name: no payload check reported"
	grep -q '^RESULT ' "$T/$name.out" || fail "$name: no RESULT line"
	grep -E '^(payloads|latency|bandwidth):' "$T/$name.out" | sed "s/^/$APPS_NAME: $name: /"
	[ -z "$SHUNT_RANK_PRELOAD" ] ||
		say "$name: 'upgraded' lines: rank 0 $(count_upgraded "$T/$name-rank0.log"), rank 1 $(count_upgraded "$T/$name-rank1.log")"
}
result() { sed -n "s/^RESULT .*$2=\([0-9.]*\).*/\1/p" "$T/$1.out"; }
target() { awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN {
	ok = r != "nan" && (op == "<=" ? r <= t : r >= t); print ok ? "met" : "not met" }'; }

# Alternate plain and shunt runs; the medians of the figures count (the
# machine may be busy).
all_lat_tcp=() all_bw_tcp=() all_lat_sh=() all_bw_sh=()
for ((r = 1; r <= RUNS; r++)); do
	run_mpi "tcp$r" tcp
	run_mpi "shunt$r" shunt
	all_lat_tcp+=("$(result "tcp$r" lat_us)") all_bw_tcp+=("$(result "tcp$r" bw_MBps)")
	all_lat_sh+=("$(result "shunt$r" lat_us)") all_bw_sh+=("$(result "shunt$r" bw_MBps)")
done
lat_tcp=$(median "${all_lat_tcp[@]}") bw_tcp=$(median "${all_bw_tcp[@]}")
lat_sh=$(median "${all_lat_sh[@]}") bw_sh=$(median "${all_bw_sh[@]}")
lat_r=$(ratio "$lat_sh" "$lat_tcp") bw_r=$(ratio "$bw_sh" "$bw_tcp")
say "medians of $RUNS runs each:"
say "8-byte latency: TCP $(fmt "$lat_tcp" 2) us, shunt $(fmt "$lat_sh" 2) us: ${lat_r}x (target <= 0.5x: $(target "$lat_r" "<=" 0.5))"
say "1 MiB bandwidth: TCP $(fmt "$bw_tcp") MB/s, shunt $(fmt "$bw_sh") MB/s: ${bw_r}x (target >= 2x: $(target "$bw_r" ">=" 2))"

# In every shunt run each rank moved its connection to the other.
for ((r = 1; r <= RUNS; r++)); do
	assert_accelerated 1 "$T/shunt$r-rank0.log"
	assert_accelerated 1 "$T/shunt$r-rank1.log"
done
say pass
