# shellcheck shell=bash
# Section 5: CPU cost.  getrusage of both ends (tcpbench prints its own
# RUSAGE_SELF over each measured connection) per GiB streamed and per
# million round trips; and the CPU that 1000 idle connections cost, from
# /proc/PID/stat, with a server waiting in epoll on all of them.  A
# connection moves to shared memory only once it has carried enough
# (upgrade-calls data calls), so each idle connection first makes 32 round
# trips, then goes quiet: idle connections in shared memory, as a server's
# kept-alive clients between requests.

# ticks PID: utime+stime of PID, in clock ticks (fields 14 and 15 of
# /proc/PID/stat, counted after the ')' that ends the command name).
ticks() {
	awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# memfd_use PID: "VIRT_KB PSS_KB RSS_KB SEGMENTS SEG_BYTES": the process's
# /memfd:shunt-conn mappings (their total size, proportional and resident
# set), how many distinct segments, and those segments' total size (the
# largest offset+length mapped of each).
memfd_use() {
	awk '
		function hex(s,   i, v) { v = 0; s = tolower(s)
			for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
			return v }
		$1 ~ /^[0-9a-f]+-[0-9a-f]+$/ {
			cur = ($0 ~ /memfd:shunt-conn/)
			if (cur) {
				split($1, a, "-"); len = hex(a[2]) - hex(a[1]); end = hex($3) + len
				if (!($5 in seg)) { seg[$5] = 0; nseg++ }
				if (end > seg[$5]) seg[$5] = end
			}
			next
		}
		cur && $1 == "Size:" { virt += $2 }
		cur && $1 == "Pss:" { pss += $2 }
		cur && $1 == "Rss:" { rss += $2 }
		END { for (k in seg) bytes += seg[k]; printf "%d %d %d %d %.0f\n", virt, pss, rss, nseg, bytes }
	' "/proc/$1/smaps" 2>/dev/null || echo "0 0 0 0 0"
}

vmrss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# IDLE_RT: the round trips each idle connection makes before it idles.
IDLE_RT=32

# idle_run MODE N SECS: `tcpbench hold` (N connections in one epoll set,
# echoing) and `tcpbench idle` (opens N, makes IDLE_RT round trips on each,
# one after the other, and sleeps), then SECS seconds of watching
# their CPU time; then `shunt stat`, the shared-memory mappings and VmRSS
# of both.  Results in $T/idle-MODE-N.res as "key value" lines; a second
# call with the same MODE and N reuses them.
idle_run() {
	local m=$1 n=$2 w=$3 res=$T/idle-$1-$2.res port spid cpid i s0 c0 s1 c1 hz v p r k b
	[ -s "$res" ] && return 0
	mode "$m"
	port=$(free_port)
	PORT_NOW=$port
	bstart "idle-$m-$n-srv" "$TB" hold "$port" "$n"
	spid=$LAST_PID
	blisten "$port" "$spid" || { note "idle $m $n: the server did not start"; return 1; }
	bstart "idle-$m-$n-cli" "$TB" idle "$port" "$n" 600 "$IDLE_RT"
	cpid=$LAST_PID
	for ((i = 0; i < 1200; i++)); do
		grep -q "^connected $n" "$T/idle-$m-$n-cli.out" 2>/dev/null &&
			grep -q "^accepted $n" "$T/idle-$m-$n-srv.out" 2>/dev/null && break
		kill -0 "$cpid" 2>/dev/null || break
		sleep 0.05
	done
	if [ "$i" = 1200 ] || ! kill -0 "$cpid" 2>/dev/null; then
		note "idle $m $n: the connections were not all made: $(tail -n 2 "$T/idle-$m-$n-cli.out" | tr '\n' ' ')"
		stop_server "$cpid"
		stop_server "$spid"
		return 1
	fi
	sleep "$([ "$QUICK" = 1 ] && echo 0.5 || echo 1)" # let the connections settle (spinning ends, sleepers sleep)
	hz=$(getconf CLK_TCK)
	s0=$(ticks "$spid") c0=$(ticks "$cpid")
	sleep "$w"
	s1=$(ticks "$spid") c1=$(ticks "$cpid")
	{
		echo "secs $w"
		echo "cpu_pct_server $(calc "100 * ($s1 - $s0) / $hz / $w")"
		echo "cpu_pct_client $(calc "100 * ($c1 - $c0) / $hz / $w")"
		echo "cpu_pct $(calc "100 * ($s1 - $s0 + $c1 - $c0) / $hz / $w")"
		echo "resolution_pct $(calc "100 / $hz / $w")"
		# The server's ends in shared memory (state moved), as shunt stat
		# lists them.
		"$SHUNT_BIN" stat --json 2>/dev/null | jq -c --arg p ":$port" \
			'select(.state == "moved" and (.local | endswith($p)))' >"$T/idle-$m-$n.stat" 2>/dev/null || true
		echo "stat_conns $(grep -c . "$T/idle-$m-$n.stat" || true)"
		# Ring sizes, as the server's library logged them when each moved
		# ("fd N upgraded: ..., rings of BYTES bytes").
		sed -n 's/.*upgraded: .*rings of \([0-9]*\) bytes.*/\1/p' "$T/idle-$m-$n-srv.log" 2>/dev/null |
			awk '{ v = $1 + 0; s += v; k++; if (min == "" || v < min) min = v; if (v > max) max = v }
			END { if (k) printf "ring_min %d\nring_max %d\nring_mean %.0f\n", min, max, s / k
			      else print "ring_min 0\nring_max 0\nring_mean 0" }'
		read -r v p r k b <<<"$(memfd_use "$spid")"
		echo "srv_memfd_virt_kb $v"; echo "srv_memfd_pss_kb $p"; echo "srv_memfd_rss_kb $r"
		echo "segments $k"; echo "segment_bytes $b"
		read -r v p r k b <<<"$(memfd_use "$cpid")"
		echo "cli_memfd_virt_kb $v"; echo "cli_memfd_pss_kb $p"; echo "cli_memfd_rss_kb $r"
		echo "rss_server_kb $(vmrss "$spid")"
		echo "rss_client_kb $(vmrss "$cpid")"
	} >"$res.tmp"
	# The client goes; the server must see every connection close and exit.
	stop_server "$cpid"
	for ((i = 0; i < 100; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$spid" 2>/dev/null; then
		note "idle $m $n: the server had not seen all $n connections close 10 s after the client died"
		echo "server_exited 0" >>"$res.tmp"
	else
		echo "server_exited 1" >>"$res.tmp"
	fi
	stop_server "$spid"
	echo "upgraded_server $(upgraded "idle-$m-$n-srv")" >>"$res.tmp"
	mv "$res.tmp" "$res"
	PORT_NOW=
}

# res MODE N KEY: a value from idle_run's results ("nan" if none).
res() {
	local v
	v=$(awk -v k="$3" '$1 == k { print $2; exit }' "$T/idle-$1-$2.res" 2>/dev/null)
	echo "${v:-nan}"
}

section_cpu() {
	md "## $1. CPU cost"
	local rounds=${BENCH_ROUNDS:-3} secs=2 idle_n=1000 idle_w=5
	[ "$QUICK" = 1 ] && rounds=1 secs=0.3 idle_n=200 idle_w=1
	md "" "CPU seconds (user + system, \`getrusage(RUSAGE_SELF)\` that each tcpbench prints" \
		"for the measured connection) of **both** processes, for one tcpbench pair: a" \
		"stream of 128 KiB writes for $secs s, then 64 B ping-pong for $secs s. Median of" \
		"$rounds round(s). A ping-pong side that spins while it waits burns CPU for" \
		"latency: shunt's default \`SHUNT_SPIN_US\` is 50 us."
	tsv_head cpu.tsv round mode stream_cpu_s stream_bytes pingpong_cpu_s round_trips accelerated
	local r m mbs rtt cs b cp msgs
	for ((r = 1; r <= rounds; r++)); do
		for m in $(order "$r"); do
			mode $m
			pairs_run "cpu-$m-$r" 1 "$secs" || true
			read -r mbs rtt cs b cp msgs <<<"$(pairs_sum "cpu-$m-$r" 1)"
			tsv cpu.tsv "$r" "$m" "$cs" "$b" "$cp" "$msgs" "$PAIRS_OK"
		done
	done
	md "" "| | TCP | shunt | shunt/TCP |" "|---|---|---|---|"
	local k
	declare -A V=()
	for m in tcp shunt; do
		# shellcheck disable=SC2046
		{
			V[$m-gib]=$(median $(awk -F'\t' -v m="$m" '$2 == m && $4 > 0 { print $3 / ($4 / 1073741824) }' "$DATA/cpu.tsv"))
			V[$m-mrt]=$(median $(awk -F'\t' -v m="$m" '$2 == m && $6 > 0 { print $5 / ($6 / 1e6) }' "$DATA/cpu.tsv"))
			V[$m-cores]=$(median $(awk -F'\t' -v m="$m" -v s="$secs" '$2 == m { print $3 / s }' "$DATA/cpu.tsv"))
			V[$m-gbps]=$(median $(awk -F'\t' -v m="$m" -v s="$secs" '$2 == m { print $4 / s / 1073741824 }' "$DATA/cpu.tsv"))
		}
	done
	local valid
	valid=$(awk -F'\t' 'BEGIN { v = 1 } $2 == "shunt" && $7 != 1 { v = 0 } END { print v }' "$DATA/cpu.tsv")
	md "| stream: CPU seconds per GiB (both ends) | $(fmt "${V[tcp-gib]}" 3) | $(fmt "${V[shunt-gib]}" 3)$(valid_mark "$valid") | $(ratio "${V[shunt-gib]}" "${V[tcp-gib]}")x |"
	md "| stream: GiB/s moved | $(fmt "${V[tcp-gbps]}" 2) | $(fmt "${V[shunt-gbps]}" 2) | $(ratio "${V[shunt-gbps]}" "${V[tcp-gbps]}")x |"
	md "| stream: CPUs busy (both ends) | $(fmt "${V[tcp-cores]}" 2) | $(fmt "${V[shunt-cores]}" 2) | |"
	md "| ping-pong: CPU seconds per million round trips (both ends) | $(fmt "${V[tcp-mrt]}" 2) | $(fmt "${V[shunt-mrt]}" 2)$(valid_mark "$valid") | $(ratio "${V[shunt-mrt]}" "${V[tcp-mrt]}")x |"
	md_commands

	md "" "### $1b. Idle connections" ""
	md "\`tcpbench idle\` opens $idle_n connections, makes $IDLE_RT round trips of 64 B on each" \
		"(one connection after the other: enough data calls for each to move to shared" \
		"memory, since an idle connection never moves), then sleeps; \`tcpbench hold\`" \
		"accepts them, echoes, and waits in one epoll set on all of them, as a server does." \
		"After $([ "$QUICK" = 1 ] && echo 0.5 || echo 1) s to settle, the CPU time of both processes (utime + stime" \
		"from /proc/PID/stat) is read over $idle_w s. Under shunt, \`shunt stat --json\` must" \
		"list all $idle_n server ends in state \`moved\`$([ "$QUICK" = 1 ] && echo " (a quick run: $idle_n connections, not 1000)")."
	tsv_head idle.tsv mode connections secs cpu_pct_server cpu_pct_client cpu_pct_both stat_conns
	for m in tcp shunt; do
		idle_run "$m" "$idle_n" "$idle_w" || true
		tsv idle.tsv "$m" "$idle_n" "$(res "$m" "$idle_n" secs)" "$(res "$m" "$idle_n" cpu_pct_server)" \
			"$(res "$m" "$idle_n" cpu_pct_client)" "$(res "$m" "$idle_n" cpu_pct)" "$(res "$m" "$idle_n" stat_conns)"
	done
	local pct sc
	pct=$(res shunt "$idle_n" cpu_pct) sc=$(res shunt "$idle_n" stat_conns)
	valid=1
	[ "$sc" != nan ] && [ "$sc" -ge "$idle_n" ] || { valid=0; note "idle: shunt stat listed ${sc} of $idle_n connections; figure marked invalid"; }
	md "" "| $idle_n idle connections | TCP | shunt |" "|---|---|---|"
	md "| CPU, server (% of one core) | $(fmt "$(res tcp "$idle_n" cpu_pct_server)" 2) | $(fmt "$(res shunt "$idle_n" cpu_pct_server)" 2) |"
	md "| CPU, client (% of one core) | $(fmt "$(res tcp "$idle_n" cpu_pct_client)" 2) | $(fmt "$(res shunt "$idle_n" cpu_pct_client)" 2) |"
	md "| CPU, both (% of one core) | $(fmt "$(res tcp "$idle_n" cpu_pct)" 2) | $(fmt "$pct" 2)$(valid_mark "$valid") |"
	md "| connections in shared memory (shunt stat, state moved) | - | $sc |"
	md "| server saw all close after the client died | $(yesno "$(res tcp "$idle_n" server_exited)") | $(yesno "$(res shunt "$idle_n" server_exited)") |"
	md "" "Resolution: one clock tick over the window, $(fmt "$(res shunt "$idle_n" resolution_pct)" 2)% of a core."
	target idle "$(fmt "$pct" 2)% of a core (both processes, $sc of $idle_n moved)" "$(verdict '<' "$pct" 1 "$valid")"
	md_commands
}

yesno() { case $1 in 1) echo yes ;; 0) echo "**no**" ;; *) echo "-" ;; esac; }
