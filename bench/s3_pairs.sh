# shellcheck shell=bash
# Section 3: N concurrent client/server pairs (separate processes, one
# connection each): the aggregate throughput of N streams at once, then
# the median round trip of N 64 B ping-pongs at once.

section_pairs() {
	md "## $1. Scalability: 1 to 16 concurrent pairs"
	local ns=(1 2 4 8 16) rounds=${BENCH_ROUNDS:-3} secs=1
	[ "$QUICK" = 1 ] && ns=(2) rounds=1 secs=0.3
	md "" "N tcpbench servers and N tcpbench clients (2N processes, one connection per" \
		"pair) on $(nproc) CPUs. All N clients stream 128 KiB writes for $secs s at once" \
		"(aggregate = the sum of their rates), then all N ping-pong 64 B messages for" \
		"$secs s at once (the median of the pairs' median round trips). Median of" \
		"$rounds round(s); TCP and shunt alternate. Target: shunt not below TCP at any N."
	tsv_head pairs.tsv round mode pairs aggregate_mb_per_s median_rtt_us pairs_ok
	local n r m mbs rtt rest
	for n in "${ns[@]}"; do
		for ((r = 1; r <= rounds; r++)); do
			for m in $(order "$r"); do
				mode $m
				pairs_run "pairs-$m-$n-$r" "$n" "$secs" || true
				read -r mbs rtt rest <<<"$(pairs_sum "pairs-$m-$n-$r" "$n")"
				tsv pairs.tsv "$r" "$m" "$n" "$mbs" "$rtt" "$PAIRS_OK"
			done
		done
	done
	tsv_head pairs-throughput.tsv series pairs aggregate_mb_per_s
	tsv_head pairs-rtt.tsv series pairs median_rtt_us
	md "" "| pairs | TCP MB/s | shunt MB/s | shunt/TCP | TCP RTT us | shunt RTT us | shunt/TCP |" \
		"|---|---|---|---|---|---|---|"
	local tm sm tr sr r1 r2 valid minr=nan maxr=nan allvalid=1
	for n in "${ns[@]}"; do
		# shellcheck disable=SC2046 # lists of numbers
		{
			tm=$(median $(awk -F'\t' -v n="$n" '$2 == "tcp" && $3 == n { print $4 }' "$DATA/pairs.tsv"))
			sm=$(median $(awk -F'\t' -v n="$n" '$2 == "shunt" && $3 == n { print $4 }' "$DATA/pairs.tsv"))
			tr=$(median $(awk -F'\t' -v n="$n" '$2 == "tcp" && $3 == n { print $5 }' "$DATA/pairs.tsv"))
			sr=$(median $(awk -F'\t' -v n="$n" '$2 == "shunt" && $3 == n { print $5 }' "$DATA/pairs.tsv"))
		}
		valid=$(awk -F'\t' -v n="$n" 'BEGIN { v = 1 } $2 == "shunt" && $3 == n && $6 != n { v = 0 } END { print v }' "$DATA/pairs.tsv")
		[ "$valid" = 1 ] || allvalid=0
		r1=$(ratio "$sm" "$tm") r2=$(ratio "$sr" "$tr")
		minr=$(awk -v a="$minr" -v b="$r1" 'BEGIN { if (b == "nan") b = 0; print (a == "nan" || b + 0 < a + 0) ? b : a }')
		maxr=$(awk -v a="$maxr" -v b="$r2" 'BEGIN { if (b == "nan") b = 1e9; print (a == "nan" || b + 0 > a + 0) ? b : a }')
		tsv pairs-throughput.tsv TCP "$n" "$tm"
		tsv pairs-throughput.tsv shunt "$n" "$sm"
		tsv pairs-rtt.tsv TCP "$n" "$tr"
		tsv pairs-rtt.tsv shunt "$n" "$sr"
		md "| $n | $(fmt "$tm") | $(fmt "$sm")$(valid_mark "$valid") | ${r1}x | $(fmt "$tr" 2) | $(fmt "$sr" 2)$(valid_mark "$valid") | ${r2}x |"
		if [ "$n" = "${ns[0]}" ]; then
			headline "tcpbench stream, 128 KiB writes, $n pair(s) (aggregate)" MB/s "$tm" "$sm" "$r1" "$valid" \
				"$(moved_in "pairs-shunt-$n-*-p*-stream" "pairs-shunt-$n-*-p*-srv")"
			headline "tcpbench ping-pong 64 B, $n pair(s), median round trip" us "$tr" "$sr" "$r2" "$valid" \
				"$(moved_in "pairs-shunt-$n-*-p*-pingpong")"
		fi
	done
	plot pairs-throughput "N pairs: aggregate stream throughput" "concurrent pairs (log)" "MB/s" \
		pairs-throughput.tsv -v logx=1
	plot pairs-rtt "N pairs: median 64 B round trip" "concurrent pairs (log)" "microseconds (log)" \
		pairs-rtt.tsv -v logx=1 -v logy=1
	target pairs-throughput "lowest ${minr}x (N = ${ns[0]}..${ns[${#ns[@]} - 1]})" "$(verdict '>=' "$minr" 1 "$allvalid")"
	target pairs-rtt "highest ${maxr}x (N = ${ns[0]}..${ns[${#ns[@]} - 1]})" "$(verdict '<=' "$maxr" 1 "$allvalid")"
	md_commands
}
