# shellcheck shell=bash
# Section 9: Open MPI over its TCP transport (--mca btl tcp,self, pml ob1,
# loopback), 2 ranks on this host, tests/mpi_pingpong.c: payloads checked,
# then the 8-byte latency and the 1 MiB bandwidth, plain and with both
# ranks under shunt (mpirun itself stays plain), alternating.

section_mpi() {
	md "## $1. Open MPI over TCP: 2 ranks, ping-pong"
	# limit: seconds a run may take (mpirun is killed past it: on a loaded
	# machine, two busy-polling ranks can crawl).
	local rounds=${BENCH_ROUNDS:-3} lat=20000 bw=300 limit=150
	[ "$QUICK" = 1 ] && rounds=1 lat=1000 bw=20 limit=15
	md "" "\`mpirun -np 2 --mca pml ob1 --mca btl tcp,self\` (loopback only) runs" \
		"tests/mpi_pingpong.c: both ranks first send to each other at once (simultaneous" \
		"connects), then round trips of 1 B to 3 MiB with every byte checked, then $lat" \
		"round trips of 8 bytes (latency: half a round trip) and $bw of 1 MiB (bandwidth:" \
		"bytes both ways per second), each the median of 10 blocks. Each rank runs under" \
		"a wrapper that preloads the library in shunt runs (mpirun itself stays plain," \
		"so its control connections do not count); each rank must log its connection" \
		"to the other as upgraded. Median of $rounds alternating round(s)."
	tsv_head mpi.tsv round mode lat_us bw_mb_per_s valid run_s
	if ! command -v mpicc >/dev/null 2>&1 || ! command -v mpirun >/dev/null 2>&1; then
		note "Open MPI is not installed (openmpi-bin, libopenmpi-dev): no MPI figures"
		return 0
	fi
	mpicc -O2 -o "$T/mpi_pingpong" "$SRC/tests/mpi_pingpong.c" >"$T/mpicc.out" 2>&1 ||
		{ note "mpicc failed: $(head -n 3 "$T/mpicc.out" | tr '\n' ' ')"; return 0; }
	# shellcheck disable=SC2016 # expanded by the wrapper
	printf '%s\n' '#!/bin/sh' \
		'export SHUNT_LOG=info SHUNT_LOG_FILE="$SHUNT_RANK_LOG-rank${OMPI_COMM_WORLD_RANK:-x}.log"' \
		'[ -z "$SHUNT_RANK_PRELOAD" ] || export LD_PRELOAD="$SHUNT_RANK_PRELOAD"' \
		'exec "$@"' >"$T/rank.sh"
	chmod 755 "$T/rank.sh"
	local args=(-np 2 --oversubscribe --mca pml ob1 --mca btl tcp,self
		--mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
		-x SHUNT_RANK_LOG -x SHUNT_RANK_PRELOAD -x SHUNT_DIR -x SHUNT_CONFIG)
	[ "$(id -u)" -ne 0 ] || args+=(--allow-run-as-root)
	cmd_record mpirun "${args[@]}" "$T/rank.sh" "$T/mpi_pingpong" "$lat" "$bw"
	local r m name ok l b t0
	for ((r = 1; r <= rounds; r++)); do
		for m in $(order "$r"); do
			name=mpi-$m-$r
			export SHUNT_RANK_LOG=$T/$name SHUNT_RANK_PRELOAD=
			[ "$m" = tcp ] || SHUNT_RANK_PRELOAD=$SHUNT_PRELOAD
			ok=1 t0=$(now_s)
			timeout -k 5 "$limit" env -u LD_PRELOAD mpirun "${args[@]}" \
				"$T/rank.sh" "$T/mpi_pingpong" "$lat" "$bw" >"$T/$name.out" 2>&1 ||
				{ ok=0; note "mpirun ($m, round $r) failed (status $?, limit $limit s): $(grep -m1 -E 'rank [01]:|rror' "$T/$name.out" || tail -n 1 "$T/$name.out")"; }
			grep -q '^payloads: .*every byte right' "$T/$name.out" || { ok=0; note "mpirun ($m, round $r): no payload check reported"; }
			if [ "$m" = shunt ] && { [ "$(count_upgraded "$T/$name-rank0.log")" -lt 1 ] || [ "$(count_upgraded "$T/$name-rank1.log")" -lt 1 ]; }; then
				ok=0
				note "mpi (round $r): upgraded lines: rank 0 $(count_upgraded "$T/$name-rank0.log"), rank 1 $(count_upgraded "$T/$name-rank1.log"); figure marked invalid"
			fi
			l=$(sed -n 's/^RESULT .*lat_us=\([0-9.]*\).*/\1/p' "$T/$name.out")
			b=$(sed -n 's/^RESULT .*bw_MBps=\([0-9.]*\).*/\1/p' "$T/$name.out")
			tsv mpi.tsv "$r" "$m" "${l:-nan}" "${b:-nan}" "$ok" "$(calc "int($(now_s) - $t0 + 0.5)")"
		done
	done
	local tl sl tb sb valid rl rb
	# shellcheck disable=SC2046 # lists of numbers
	{
		tl=$(median $(awk -F'\t' '$2 == "tcp" { print $3 }' "$DATA/mpi.tsv"))
		sl=$(median $(awk -F'\t' '$2 == "shunt" { print $3 }' "$DATA/mpi.tsv"))
		tb=$(median $(awk -F'\t' '$2 == "tcp" { print $4 }' "$DATA/mpi.tsv"))
		sb=$(median $(awk -F'\t' '$2 == "shunt" { print $4 }' "$DATA/mpi.tsv"))
	}
	valid=$(awk -F'\t' 'BEGIN { x = 1; n = 0 } !/^#/ { n++ } !/^#/ && ($5 != 1 || $3 == "nan") { x = 0 } END { print (n ? x : 0) }' "$DATA/mpi.tsv")
	rl=$(ratio "$sl" "$tl") rb=$(ratio "$sb" "$tb")
	md "" "| | TCP | shunt | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	md "| 8-byte latency (half a round trip), us | $(fmt "$tl" 2) | $(fmt "$sl" 2)$(valid_mark "$valid") | ${rl}x | $(fmt1 $(awk -F'\t' '$2 == "tcp" { print $3 }' "$DATA/mpi.tsv")); $(fmt1 $(awk -F'\t' '$2 == "shunt" { print $3 }' "$DATA/mpi.tsv")) |"
	md "| 1 MiB bandwidth, MB/s | $(fmt "$tb") | $(fmt "$sb")$(valid_mark "$valid") | ${rb}x | $(fmt1 $(awk -F'\t' '$2 == "tcp" { print $4 }' "$DATA/mpi.tsv")); $(fmt1 $(awk -F'\t' '$2 == "shunt" { print $4 }' "$DATA/mpi.tsv")) |"
	tsv_head mpi-summary.tsv series figure value
	tsv mpi-summary.tsv TCP "8 B latency, us" "$tl"
	tsv mpi-summary.tsv shunt "8 B latency, us" "$sl"
	headline "Open MPI --mca btl tcp,self ping-pong, 8 B latency" us "$tl" "$sl" "$rl" "$valid" \
		"both ranks: $(moved_in "mpi-shunt-*-rank*")"
	headline "Open MPI --mca btl tcp,self ping-pong, 1 MiB bandwidth" MB/s "$tb" "$sb" "$rb" "$valid" \
		"both ranks: $(moved_in "mpi-shunt-*-rank*")"
	target mpi-lat "${rl}x ($(fmt "$sl" 2) vs $(fmt "$tl" 2) us)" "$(verdict '<=' "$rl" 0.5 "$valid")"
	target mpi-bw "${rb}x ($(fmt "$sb") vs $(fmt "$tb") MB/s)" "$(verdict '>=' "$rb" 2 "$valid")"
	md_commands "Commands (\$TMP/rank.sh sets \`SHUNT_LOG_FILE\` per rank and, in shunt runs only, \`LD_PRELOAD=build/libshunt-preload.so\`; mpi_pingpong is tests/mpi_pingpong.c built with \`mpicc -O2\`):"
}
