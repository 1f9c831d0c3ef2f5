# shellcheck shell=bash
# Section 2: one stream, iperf3 with 8 KiB, 128 KiB and 1 MiB writes; and
# sockperf's 64 B ping-pong latency.  TCP and shunt alternate, a fresh
# server per run.

section_streams() {
	md "## $1. Streams (iperf3) and ping-pong latency (sockperf)"
	local rounds=${BENCH_ROUNDS:-3} secs=3 lens=(8K 128K 1M) pps=3
	[ "$QUICK" = 1 ] && rounds=1 secs=1 lens=(128K) pps=1
	md "" "iperf3, one TCP stream for $secs s per run, at three write sizes (\`-l\`);" \
		"median of $rounds round(s). Each shunt run's client must log its data connection" \
		"as upgraded (the control connection carries a few messages and may stay on TCP)."
	tsv_head iperf3.tsv round mode write_size gbit_per_s accelerated
	local r m l port pid v ok
	if command -v iperf3 >/dev/null 2>&1; then
		for ((r = 1; r <= rounds; r++)); do
			for m in tcp shunt; do
				mode $m
				port=$(free_port)
				PORT_NOW=$port
				bstart "iperf3-$m-$r-srv" iperf3 -s -p "$port" -B 127.0.0.1
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "iperf3 server did not start"; continue; }
				for l in "${lens[@]}"; do
					v=nan
					if bclient "iperf3-$m-$r-$l" $((secs + 20)) iperf3 -c 127.0.0.1 -p "$port" -t "$secs" \
						-l "$l" -J >"$T/iperf3-$m-$r-$l.json" 2>"$T/iperf3-$m-$r-$l.err"; then
						v=$(jq -r '.end.sum_received.bits_per_second / 1e9' "$T/iperf3-$m-$r-$l.json" 2>/dev/null) || v=nan
					else
						note "iperf3 -l $l ($m, round $r) failed: $(jq -r '.error // empty' "$T/iperf3-$m-$r-$l.json" 2>/dev/null) $(tail -n 1 "$T/iperf3-$m-$r-$l.err")"
					fi
					ok=$(accel 1 "iperf3-$m-$r-$l")
					tsv iperf3.tsv "$r" "$m" "$l" "$v" "$ok"
				done
				stop_server "$pid"
			done
		done
	else
		note "iperf3 is not installed"
	fi
	tsv_head iperf3-summary.tsv series write_size gbit_per_s
	md "" "| write size | TCP Gbit/s | shunt Gbit/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	local tv sv t s rr valid
	for l in "${lens[@]}"; do
		tv=$(awk -F'\t' -v l="$l" '$2 == "tcp" && $3 == l { print $4 }' "$DATA/iperf3.tsv" | tr '\n' ' ')
		sv=$(awk -F'\t' -v l="$l" '$2 == "shunt" && $3 == l { print $4 }' "$DATA/iperf3.tsv" | tr '\n' ' ')
		valid=$(awk -F'\t' -v l="$l" 'BEGIN { v = 1 } $2 == "shunt" && $3 == l && ($5 != 1 || $4 == "nan") { v = 0 } END { print v }' "$DATA/iperf3.tsv")
		# shellcheck disable=SC2086 # lists of numbers
		t=$(median $tv) s=$(median $sv)
		rr=$(ratio "$s" "$t")
		[ "$l" != 128K ] || headline "iperf3 -l 128K, one stream" Gbit/s "$t" "$s" "$rr" "$valid" \
			"client: $(moved_in "iperf3-shunt-*-$l")"
		[ "$valid" = 1 ] || s=invalid
		tsv iperf3-summary.tsv TCP "$l" "$t"
		tsv iperf3-summary.tsv shunt "$l" "$s"
		md "| $l | $(fmt "$t" 1) | $(fmt "$s" 1)$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
		[ "$l" != 128K ] || target iperf3 "${rr}x ($(fmt "$s" 1) vs $(fmt "$t" 1) Gbit/s)" "$(verdict '>=' "$rr" 4 "$valid")"
	done
	plot iperf3 "iperf3, one stream: throughput by write size (median)" "iperf3 -l" "Gbit/s" \
		iperf3-summary.tsv -v kind=bar
	md_commands

	# --- sockperf
	md "" "### $1b. sockperf ping-pong, 64 B" ""
	# Its client takes about 4 s a run however short the test (warm-up and
	# waits of its own): too long for a quick run.
	if [ "$QUICK" = 1 ]; then
		md "Not run in a quick run (sockperf's client takes about 4 s a run)."
		return 0
	fi
	md "sockperf's TCP ping-pong for $pps s per run, median latency (its" \
		"\`--mps\` is raised: at its default it aborts once shunt passes about 600k" \
		"messages a second); median of $rounds round(s)."
	tsv_head sockperf.tsv round mode median_us accelerated
	if command -v sockperf >/dev/null 2>&1; then
		for ((r = 1; r <= rounds; r++)); do
			for m in tcp shunt; do
				mode $m
				port=$(free_port)
				PORT_NOW=$port
				bstart "sockperf-$m-$r-srv" sockperf server --tcp -i 127.0.0.1 -p "$port"
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "sockperf server did not start"; continue; }
				bclient "sockperf-$m-$r" $((pps + 20)) sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" \
					-t "$pps" -m 64 --mps 10000000 >"$T/sockperf-$m-$r.out" 2>&1 ||
					note "sockperf ($m, round $r) failed: $(tail -n 2 "$T/sockperf-$m-$r.out" | tr '\n' ' ')"
				stop_server "$pid"
				v=$(sed 's/\x1b\[[0-9;]*m//g' "$T/sockperf-$m-$r.out" | awk '/percentile 50.000 =/ { print $NF; exit }')
				tsv sockperf.tsv "$r" "$m" "${v:-nan}" "$(accel 1 "sockperf-$m-$r")"
			done
		done
	else
		note "sockperf is not installed"
	fi
	tv=$(awk -F'\t' '$2 == "tcp" { print $3 }' "$DATA/sockperf.tsv" | tr '\n' ' ')
	sv=$(awk -F'\t' '$2 == "shunt" { print $3 }' "$DATA/sockperf.tsv" | tr '\n' ' ')
	valid=$(awk -F'\t' 'BEGIN { v = 1 } $2 == "shunt" && ($4 != 1 || $3 == "nan") { v = 0 } END { print v }' "$DATA/sockperf.tsv")
	# shellcheck disable=SC2086
	t=$(median $tv) s=$(median $sv)
	rr=$(ratio "$s" "$t")
	md "" "| | TCP | shunt | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	md "| median latency (sockperf: half a round trip), us | $(fmt "$t" 2) | $(fmt "$s" 2)$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
	headline "sockperf ping-pong 64 B, median latency" us "$t" "$s" "$rr" "$valid" \
		"both ends: $(moved_in "sockperf-shunt-*")"
	target sockperf "${rr}x ($(fmt "$s" 2) vs $(fmt "$t" 2) us)" "$(verdict '<=' "$rr" 0.2 "$valid")"
	md_commands
}

