# shellcheck shell=bash
# Section 4: SHUNT_RING_SIZE from 16 KiB to 4 MiB for one stream and one
# 64 B ping-pong (tcpbench, one pair), against the library's default (no
# SHUNT_RING_SIZE; the library logs its size as a connection moves) and TCP.

section_ring() {
	md "## $1. Ring size: one stream and one ping-pong"
	local sizes=(16k 32k 64k 128k 256k 512k 1m 2m 4m) rounds=${BENCH_ROUNDS:-3} secs=1
	[ "$QUICK" = 1 ] && sizes=(64k) rounds=1 secs=0.3
	md "" "One tcpbench pair: a stream of 128 KiB writes for $secs s, then 64 B" \
		"ping-pong for $secs s, with \`SHUNT_RING_SIZE\` set for both processes (bytes per" \
		"direction), and once without it (the library's default, whose size the" \
		"library logs as the connection moves: \`upgraded: ..., rings of N bytes\`). Median" \
		"of $rounds round(s); the order of the sizes is reversed every other round."
	tsv_head ring.tsv round config ring_bytes_seen mb_per_s rtt_us accelerated
	local r c list=(tcp default "${sizes[@]}") order_=() mbs rtt rest seen
	for ((r = 1; r <= rounds; r++)); do
		order_=("${list[@]}")
		if [ $((r % 2)) = 0 ]; then
			local i rev=()
			for ((i = ${#list[@]} - 1; i >= 0; i--)); do rev+=("${list[i]}"); done
			order_=("${rev[@]}")
		fi
		for c in "${order_[@]}"; do
			case $c in
			tcp) mode tcp; pairs_run "ring-$c-$r" 1 "$secs" || true ;;
			default) mode shunt; pairs_run "ring-$c-$r" 1 "$secs" || true ;;
			*) mode shunt; pairs_run "ring-$c-$r" 1 "$secs" "SHUNT_RING_SIZE=$c" || true ;;
			esac
			read -r mbs rtt rest <<<"$(pairs_sum "ring-$c-$r" 1)"
			# The ring size the stream's connection moved with, as the
			# client's library logged it ("upgraded: ..., rings of N bytes").
			seen=$(sed -n 's/.*upgraded: .*rings of \([0-9]*\) bytes.*/\1/p' "$T/ring-$c-$r-p1-stream.log" 2>/dev/null | head -n 1)
			tsv ring.tsv "$r" "$c" "${seen:--}" "$mbs" "$rtt" "$PAIRS_OK"
		done
	done
	tsv_head ring-throughput.tsv series ring_bytes mb_per_s
	tsv_head ring-rtt.tsv series ring_bytes rtt_us
	md "" "| ring | MB/s | vs TCP | 64 B RTT us | vs TCP | ring logged by the library |" "|---|---|---|---|---|---|"
	local tm tr m rt valid bytes s0 s1
	declare -A MB=() RT=()
	# shellcheck disable=SC2046 # lists of numbers
	for c in "${list[@]}"; do
		MB[$c]=$(median $(awk -F'\t' -v c="$c" '$2 == c { print $4 }' "$DATA/ring.tsv"))
		RT[$c]=$(median $(awk -F'\t' -v c="$c" '$2 == c { print $5 }' "$DATA/ring.tsv"))
	done
	tm=${MB[tcp]} tr=${RT[tcp]}
	s0=$(to_bytes "${sizes[0]}") s1=$(to_bytes "${sizes[${#sizes[@]} - 1]}")
	tsv ring-throughput.tsv TCP "$s0" "$tm"
	tsv ring-throughput.tsv TCP "$s1" "$tm"
	tsv ring-rtt.tsv TCP "$s0" "$tr"
	tsv ring-rtt.tsv TCP "$s1" "$tr"
	local defsz
	defsz=$(awk -F'\t' '$2 == "default" && $3 != "-" { print $3; exit }' "$DATA/ring.tsv")
	for c in "${list[@]}"; do
		valid=$(awk -F'\t' -v c="$c" 'BEGIN { v = 1 } $2 == c && $6 != 1 { v = 0 } END { print v }' "$DATA/ring.tsv")
		seen=$(awk -F'\t' -v c="$c" '$2 == c && $3 != "-" { print $3 }' "$DATA/ring.tsv" | sort -u | tr '\n' ' '); seen=${seen% }
		case $c in
		tcp) md "| TCP | $(fmt "$tm") | | $(fmt "$tr" 2) | | |"; continue ;;
		default) md "| default (no SHUNT_RING_SIZE) | $(fmt "${MB[$c]}")$(valid_mark "$valid") | $(ratio "${MB[$c]}" "$tm")x | $(fmt "${RT[$c]}" 2)$(valid_mark "$valid") | $(ratio "${RT[$c]}" "$tr")x | ${seen:--} |"; continue ;;
		esac
		bytes=$(to_bytes "$c")
		[ "$valid" = 1 ] || { MB[$c]=nan; RT[$c]=nan; }
		tsv ring-throughput.tsv shunt "$bytes" "${MB[$c]}"
		tsv ring-rtt.tsv shunt "$bytes" "${RT[$c]}"
		md "| $c | $(fmt "${MB[$c]}")$(valid_mark "$valid") | $(ratio "${MB[$c]}" "$tm")x | $(fmt "${RT[$c]}" 2)$(valid_mark "$valid") | $(ratio "${RT[$c]}" "$tr")x | ${seen:--}$([ "$seen" = "$bytes" ] || echo ' (not as set!)') |"
	done
	plot ring-throughput "Ring size: one stream (tcpbench, 128 KiB writes)" "SHUNT_RING_SIZE (bytes per direction)" \
		"MB/s" ring-throughput.tsv -v logx=1 -v xbytes=1
	plot ring-rtt "Ring size: 64 B ping-pong median round trip" "SHUNT_RING_SIZE (bytes per direction)" \
		"microseconds (log)" ring-rtt.tsv -v logx=1 -v xbytes=1 -v logy=1
	# The verdict on the default, computed.
	local best bestv bestr bestrv defname defmb defrt pct pctr
	read -r best bestv <<<"$(for c in "${sizes[@]}"; do echo "$c ${MB[$c]}"; done | awk '$2 != "nan" && $2 > b { b = $2; n = $1 } END { print n, b }')"
	read -r bestr bestrv <<<"$(for c in "${sizes[@]}"; do echo "$c ${RT[$c]}"; done | awk '$2 != "nan" && (b == "" || $2 < b) { b = $2; n = $1 } END { print n, b }')"
	defname=$(bytes_name "${defsz:-0}")
	# The default's figures: its own runs, pooled with those of the swept
	# size it turned out to be (the same configuration), for more samples.
	local defcfg pooled=""
	defcfg=$(bytes_name "${defsz:-0}")
	defmb=${MB[default]} defrt=${RT[default]}
	if [ -n "$defcfg" ] && [[ " ${sizes[*]} " == *" $defcfg "* ]]; then
		# shellcheck disable=SC2046
		defmb=$(median $(awk -F'\t' -v c="$defcfg" '($2 == "default" || $2 == c) && $6 == 1 { print $4 }' "$DATA/ring.tsv"))
		# shellcheck disable=SC2046
		defrt=$(median $(awk -F'\t' -v c="$defcfg" '($2 == "default" || $2 == c) && $6 == 1 { print $5 }' "$DATA/ring.tsv"))
		pooled=" (its runs and the $defcfg runs together)"
	fi
	pct=$(awk -v a="$defmb" -v b="$bestv" 'BEGIN { if (a != "nan" && b > 0) printf "%.0f", 100 * a / b; else print "nan" }')
	pctr=$(awk -v a="$bestrv" -v b="$defrt" 'BEGIN { if (b != "nan" && b > 0) printf "%.0f", 100 * a / b; else print "nan" }')
	md "" "**Computed from this run:** the library's default ring is ${defname:-unknown}" \
		"(as logged; docs/config.md says 2m). Best single-stream throughput: ${best:-none}" \
		"($(fmt "$bestv") MB/s); the default reached $(fmt "$defmb") MB/s$pooled, ${pct}% of it." \
		"Best ping-pong round trip: ${bestr:-none} ($(fmt "$bestrv" 2) us); the default's" \
		"$(fmt "$defrt" 2) us is ${pctr}% as fast. $(ring_verdict "$pct" "$best" "$defname")"
	md_commands
}

# ring_verdict PCT BEST DEFAULT: whether the stream data supports the default.
ring_verdict() {
	if [ "$1" = nan ]; then
		echo "Without both figures the data says nothing about the default."
	elif [ "$2" = "$3" ]; then
		echo "The data supports the default: it is the best size here."
	elif [ "$1" -ge 90 ]; then
		echo "The data supports the default: within 10% of the best size (differences this small are within the run-to-run noise here)."
	else
		echo "The data does not support the default for one stream: $2 did better by more than 10%."
	fi
}

# to_bytes 16k|1m|N: bytes.
to_bytes() {
	case $1 in
	*k) echo $((${1%k} * 1024)) ;;
	*m) echo $((${1%m} * 1048576)) ;;
	*) echo "$1" ;;
	esac
}

# bytes_name N: 16k, 512k, 1m ... (as the sizes are written above).
bytes_name() {
	awk -v b="$1" 'BEGIN { if (b <= 0) print ""; else if (b >= 1048576 && b % 1048576 == 0) print b / 1048576 "m"; else if (b % 1024 == 0) print b / 1024 "k"; else print b }'
}
