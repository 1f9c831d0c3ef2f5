# shellcheck shell=bash
# Section 1: NetPIPE (unmodified NPtcp) from 1 B to 8 MiB, TCP and shunt,
# with UNIX-socket and memcpy reference lines from `shunt bench`; then the
# native API targets from `shunt bench` (64 KiB stream, 64 B ping-pong).

# np_run NAME ARGS...: one NPtcp receiver and transmitter (NPtcp serves one
# test and exits); the per-size table in $T/NAME.np.
np_run() {
	local name=$1 port rx
	shift
	port=$(free_port)
	PORT_NOW=$port
	bstart "$name.rx" NPtcp -P "$port" "$@"
	rx=$LAST_PID
	blisten "$port" "$rx" || return 1
	bclient "$name.tx" 240 NPtcp -h 127.0.0.1 -P "$port" -o "$T/$name.np" "$@" \
		>"$T/$name.tx.out" 2>&1 || { note "NPtcp $name failed ($?)"; stop_server "$rx"; return 1; }
	local i
	for ((i = 0; i < 50; i++)); do kill -0 "$rx" 2>/dev/null || break; sleep 0.1; done
	stop_server "$rx"
	PORT_NOW=
}

section_netpipe() {
	md "## $1. NetPIPE: latency and bandwidth from 1 B to 8 MiB"
	md "" "NPtcp (NetPIPE, unmodified) ping-pongs each message size; its bandwidth is" \
		"size / half the round trip, its latency half the round trip. The reference" \
		"lines come from \`shunt bench\` between two processes: a UNIX socket's" \
		"ping-pong (the same arithmetic), and memcpy into a buffer the size of a" \
		"shunt ring (a stream; the ceiling for any copy)."
	local npargs=(-l 1 -u 8388608 -p 0) bargs=(--time 0.1 --sizes 1..8m)
	if [ "$QUICK" = 1 ]; then
		npargs=(-l 1 -u 262144 -p 0 -n 20) bargs=(--time 0.03 --sizes 1..256k)
	fi
	tsv_head netpipe.tsv series size_bytes gbit_per_s latency_us
	local m valid=1
	if command -v NPtcp >/dev/null 2>&1; then
		for m in tcp shunt; do
			mode $m
			np_run "np-$m" "${npargs[@]}" || valid=0
			[ "$(accel 1 "np-$m.rx" np-"$m".tx)" = 1 ] || valid=0
			# NPtcp: bytes, Mbit/s, seconds (half a round trip).
			local label=TCP
			[ $m = tcp ] || label=shunt
			awk -v s="NPtcp, $label" '$1 > 0 { printf "%s\t%d\t%.6g\t%.4g\n", s, $1, $2 / 1000, $3 * 1e6 }' \
				"$T/np-$m.np" >>"$DATA/netpipe.tsv" 2>/dev/null || true
		done
	else
		note "NPtcp is not installed (netpipe-tcp): no NetPIPE curves"
	fi
	cmds_stash np
	cmd_record "$SHUNT_BIN" bench --json --tests pingpong --transports unix "${bargs[@]}"
	"$SHUNT_BIN" bench --json --tests pingpong --transports unix "${bargs[@]}" >"$T/ref-unix.json" 2>/dev/null ||
		note "shunt bench (unix) failed"
	cmd_record "$SHUNT_BIN" bench --json --tests stream --transports memcpy "${bargs[@]}"
	"$SHUNT_BIN" bench --json --tests stream --transports memcpy "${bargs[@]}" >"$T/ref-memcpy.json" 2>/dev/null ||
		note "shunt bench (memcpy) failed"
	cmds_stash ref
	jq -r '"UNIX socket (shunt bench)\t\(.size)\t\(.size * 8 / (.rtt_us_p50 / 2) / 1000)\t\(.rtt_us_p50 / 2)"' \
		"$T/ref-unix.json" >>"$DATA/netpipe.tsv" 2>/dev/null || true
	jq -r '"memcpy (shunt bench stream)\t\(.size)\t\(.mb_per_s * 8 / 1000)\t"' \
		"$T/ref-memcpy.json" >>"$DATA/netpipe.tsv" 2>/dev/null || true
	plot netpipe-bandwidth "NetPIPE bandwidth vs message size" "message size (bytes)" "Gbit/s (log)" \
		netpipe.tsv -v scol=1 -v xcol=2 -v ycol=3 -v logx=1 -v logy=1 -v xbytes=1
	plot netpipe-latency "NetPIPE latency (half round trip) vs message size" "message size (bytes)" \
		"microseconds (log)" netpipe.tsv -v scol=1 -v xcol=2 -v ycol=4 -v logx=1 -v logy=1 -v xbytes=1
	md "" "At some sizes$([ $valid = 1 ] || echo ' (**invalid: a shunt run failed or was not accelerated**)'):" ""
	md "| size | TCP us | shunt us | shunt/TCP | UNIX us | TCP Gbit/s | shunt Gbit/s | shunt/TCP | memcpy Gbit/s |" \
		"|---|---|---|---|---|---|---|---|---|"
	awk -F'\t' '
		/^#/ { next }
		{ k = $2; s = $1
		  if (s ~ /^NPtcp, TCP/) { tl[k] = $4; tb[k] = $3 }
		  else if (s ~ /^NPtcp, shunt/) { sl[k] = $4; sb[k] = $3 }
		  else if (s ~ /^UNIX/) ul[k] = $4
		  else if (s ~ /^memcpy/) mb[k] = $3 }
		function r(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "" }
		function f(v, d) { return v == "" ? "" : sprintf("%.*f", d, v) }
		END {
			n = split("1 64 1024 4096 65536 1048576 8388608", S, " ")
			split("1 B|64 B|1 KiB|4 KiB|64 KiB|1 MiB|8 MiB", L, "|")
			for (i = 1; i <= n; i++) {
				k = S[i]
				if (!(k in tl) && !(k in sl)) continue
				printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", L[i], f(tl[k], 2), f(sl[k], 2),
					r(sl[k], tl[k]), f(ul[k], 2), f(tb[k], 3), f(sb[k], 3), r(sb[k], tb[k]), f(mb[k], 1)
			}
		}' "$DATA/netpipe.tsv" >>"$MD"
	cmds_unstash np
	md_commands
	cmds_unstash ref
	md_commands "Reference lines (\`shunt bench\`, the native API between two processes; no preload library):"

	# --- The native API targets.
	md "" "### $1b. \`shunt bench\`: the native API targets" ""
	md "\`shunt bench\` runs every transport between the same two processes, one" \
		"after the other, in one invocation; it is run $([ "$QUICK" = 1 ] && echo once || echo '3 times') and each figure is the median."
	local rounds=${BENCH_ROUNDS:-3} r time=0.3
	[ "$QUICK" = 1 ] && rounds=1 time=0.1
	: >"$T/sb-stream.json"
	: >"$T/sb-pp.json"
	local sargs=(bench --json --tests stream --sizes 64k --transports memcpy,shunt,unix,tcp --time "$time")
	local pargs=(bench --json --tests pingpong --sizes 64 --transports shunt,shunt-nospin,tcp --time "$time")
	cmd_record "$SHUNT_BIN" "${sargs[@]}"
	cmd_record "$SHUNT_BIN" "${pargs[@]}"
	for ((r = 1; r <= rounds; r++)); do
		timeout 120 "$SHUNT_BIN" "${sargs[@]}" 2>/dev/null | sed "s/^{/{\"round\":$r,/" >>"$T/sb-stream.json" ||
			note "shunt bench stream, round $r, failed"
		timeout 120 "$SHUNT_BIN" "${pargs[@]}" 2>/dev/null | sed "s/^{/{\"round\":$r,/" >>"$T/sb-pp.json" ||
			note "shunt bench ping-pong, round $r, failed"
	done
	tsv_head shunt-bench.tsv round test transport size value unit
	jq -r '[.round, .test, .transport, .size, .mb_per_s, "MB/s"] | @tsv' "$T/sb-stream.json" >>"$DATA/shunt-bench.tsv" || true
	jq -r '[.round, .test, .transport, .size, .rtt_us_p50, "us (p50)"] | @tsv' "$T/sb-pp.json" >>"$DATA/shunt-bench.tsv" || true
	local tr vals unit
	declare -A M=() V=()
	for tr in stream:memcpy stream:shunt stream:unix stream:tcp pingpong:shunt pingpong:shunt-nospin pingpong:tcp; do
		V[$tr]=$(awk -F'\t' -v t="${tr%%:*}" -v x="${tr#*:}" '$2 == t && $3 == x { print $5 }' "$DATA/shunt-bench.tsv" | tr '\n' ' ')
		# shellcheck disable=SC2086 # a list of numbers
		M[$tr]=$(median ${V[$tr]})
	done
	md "" "| test | transport | per round | median | vs TCP |" "|---|---|---|---|---|"
	for tr in stream:memcpy stream:shunt stream:unix stream:tcp pingpong:shunt pingpong:shunt-nospin pingpong:tcp; do
		unit="MB/s"
		[ "${tr%%:*}" = stream ] || unit="us"
		md "| ${tr%%:*} $([ "${tr%%:*}" = stream ] && echo '64 KiB' || echo '64 B') | ${tr#*:} | $(echo ${V[$tr]} | sed 's/ /, /g') | $(fmt "${M[$tr]}" 2) $unit | $(ratio "${M[$tr]}" "${M[${tr%%:*}:tcp]}")x |"
	done
	local st=${M[stream:shunt]} r1 r2 r3 r4 r5
	r1=$(ratio "$st" "${M[stream:tcp]}")
	r2=$(ratio "$st" "${M[stream:unix]}")
	r3=$(ratio "$st" "${M[stream:memcpy]}")
	r4=$(ratio "${M[pingpong:shunt]}" "${M[pingpong:tcp]}")
	r5=$(ratio "${M[pingpong:shunt-nospin]}" "${M[pingpong:tcp]}")
	target stream-tcp "${r1}x ($(fmt "$st") vs $(fmt "${M[stream:tcp]}") MB/s)" "$(verdict '>=' "$r1" 4)"
	target stream-unix "${r2}x ($(fmt "$st") vs $(fmt "${M[stream:unix]}") MB/s)" "$(verdict '>=' "$r2" 2)"
	target stream-memcpy "${r3}x ($(fmt "$st") vs $(fmt "${M[stream:memcpy]}") MB/s)" "$(verdict '>=' "$r3" 0.5)"
	target pingpong-spin "${r4}x ($(fmt "${M[pingpong:shunt]}" 2) vs $(fmt "${M[pingpong:tcp]}" 2) us)" "$(verdict '<=' "$r4" 0.1)"
	target pingpong-nospin "${r5}x ($(fmt "${M[pingpong:shunt-nospin]}" 2) vs $(fmt "${M[pingpong:tcp]}" 2) us)" "$(verdict '<=' "$r5" 0.6)"
	md_commands "Commands (\`shunt bench\` measures every transport itself; no preload library):"
}
