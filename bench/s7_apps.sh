# shellcheck shell=bash
# Section 7: applications.  redis-benchmark (GET and SET, -c 1 and 50,
# -P 1 and 16), nginx + wrk (keep-alive, 4 KiB file, -c 1..256) and
# memcached + memcaslap.  A fresh server per round and mode, as
# tools/compare.sh does (apps_lib.sh starts them the same way).

section_apps() {
	md "## $1. Applications"
	local rounds=${BENCH_ROUNDS:-3}
	[ "$QUICK" = 1 ] && rounds=1
	apps_redis "$rounds"
	apps_nginx "$rounds"
	# Not in a quick run: redis and nginx exercise the section.
	if [ "$QUICK" = 1 ]; then
		md "" "### memcached + memcaslap" "" "Not run in a quick run."
	else
		apps_memcached "$rounds"
	fi
}

# --- redis ---------------------------------------------------------------
apps_redis() {
	local rounds=$1 combos=("1 1 30000" "50 1 100000" "1 16 100000" "50 16 300000")
	[ "$QUICK" = 1 ] && combos=("50 1 10000")
	md "" "### redis-benchmark" "" \
		"redis-server (no persistence) started per round and mode; redis-benchmark" \
		"runs SET and GET (\`-t set,get\`) at each client count (\`-c\`) and pipeline depth" \
		"(\`-P\`); requests/s, median of $rounds round(s). Each shunt run's client must log" \
		"at least as many upgraded connections as it has clients."
	tsv_head redis.tsv round mode clients pipeline test requests_per_s accelerated
	local r m port pid c p n f t v ok
	if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
		for ((r = 1; r <= rounds; r++)); do
			for m in $(order "$r"); do
				mode $m
				port=$(free_port)
				PORT_NOW=$port
				cmd_record redis-server --port "$port" --bind 127.0.0.1 --save '""' --appendonly no \
					--daemonize no --dir "$T/redis-$m-$r" --logfile "$T/redis-$m-$r/redis.out" --protected-mode no
				start_redis "redis-$m-$r-srv" "$port" "$T/redis-$m-$r"
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "redis-server did not start"; continue; }
				for cpn in "${combos[@]}"; do
					read -r c p n <<<"$cpn"
					f=redis-$m-$r-c$c-P$p
					bclient "$f" 120 redis-benchmark -p "$port" -t set,get -n "$n" -c "$c" -P "$p" --csv \
						>"$T/$f.out" 2>&1 || note "redis-benchmark -c $c -P $p ($m, round $r) failed: $(tail -n 2 "$T/$f.out" | tr '\n' ' ')"
					ok=$(accel "$c" "$f")
					for t in GET SET; do
						v=$(awk -F'"' -v t="$t" '$2 == t { print $4 }' "$T/$f.out")
						tsv redis.tsv "$r" "$m" "$c" "$p" "$t" "${v:-nan}" "$ok"
					done
				done
				stop_server "$pid"
			done
		done
	else
		note "redis-server or redis-benchmark is not installed"
	fi
	tsv_head redis-summary.tsv series test requests_per_s
	md "" "| test | -c | -P | TCP req/s | shunt req/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|---|---|"
	local tv sv tm sm rr valid
	for cpn in "${combos[@]}"; do
		read -r c p n <<<"$cpn"
		for t in GET SET; do
			tv=$(awk -F'\t' -v c="$c" -v p="$p" -v t="$t" '$2 == "tcp" && $3 == c && $4 == p && $5 == t { print $6 }' "$DATA/redis.tsv" | tr '\n' ' ')
			sv=$(awk -F'\t' -v c="$c" -v p="$p" -v t="$t" '$2 == "shunt" && $3 == c && $4 == p && $5 == t { print $6 }' "$DATA/redis.tsv" | tr '\n' ' ')
			valid=$(awk -F'\t' -v c="$c" -v p="$p" -v t="$t" 'BEGIN { x = 1 } $2 == "shunt" && $3 == c && $4 == p && $5 == t && ($7 != 1 || $6 == "nan") { x = 0 } END { print x }' "$DATA/redis.tsv")
			# shellcheck disable=SC2086
			tm=$(median $tv) sm=$(median $sv)
			rr=$(ratio "$sm" "$tm")
			tsv redis-summary.tsv TCP "$t c$c P$p" "$tm"
			tsv redis-summary.tsv shunt "$t c$c P$p" "$([ "$valid" = 1 ] && echo "$sm" || echo invalid)"
			md "| $t | $c | $p | $(fmt "$tm") | $(fmt "$sm")$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
			if [ "$p" = 1 ]; then
				target "redis-$(echo "$t" | tr 'A-Z' 'a-z')-c$c" "${rr}x ($(fmt "$sm") vs $(fmt "$tm") req/s)" "$(verdict '>=' "$rr" 1.5 "$valid")"
			fi
		done
	done
	plot redis "redis-benchmark requests/s (median)" "test, clients (-c) and pipeline depth (-P)" "requests/s" \
		redis-summary.tsv -v kind=bar
	md_commands
}

# --- nginx + wrk -----------------------------------------------------------
apps_nginx() {
	local rounds=$1 conns=(1 2 4 8 16 32 64 128 256) d=2
	[ "$QUICK" = 1 ] && conns=(64) d=1
	md "" "### nginx + wrk" "" \
		"nginx (a master and 2 workers, sendfile, keep-alive, no access log) serves a" \
		"4 KiB file; wrk (\`-t\` 1 or 2) keeps \`-c\` connections busy for $d s;" \
		"requests/s, median of $rounds round(s). A run with socket errors or non-2xx" \
		"answers, or a shunt run whose wrk did not log -c upgraded connections, is invalid."
	tsv_head nginx.tsv round mode connections requests_per_s valid
	local r m port pid dir c f v ok
	if command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1; then
		mkdir -p "$T/www"
		chmod 755 "$T/www"
		rand_file "$T/www/4k" 4096
		chmod 644 "$T/www/4k"
		for ((r = 1; r <= rounds; r++)); do
			for m in $(order "$r"); do
				mode $m
				port=$(free_port)
				PORT_NOW=$port
				dir=$T/nginx-$m-$r
				nginx_bench_conf "$dir" "$port" "$T/www"
				bstart "nginx-$m-$r-srv" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.out"
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "nginx did not start: $(tail -n 2 "$dir/error.out" 2>/dev/null)"; continue; }
				for c in "${conns[@]}"; do
					f=wrk-$m-$r-c$c
					ok=1
					bclient "$f" $((d + 15)) wrk -t $((c < 2 ? c : 2)) -c "$c" -d "${d}s" \
						"http://127.0.0.1:$port/4k" >"$T/$f.out" 2>&1 || { ok=0; note "wrk -c $c ($m, round $r) failed"; }
					v=$(awk '/^Requests\/sec:/ { print $2 }' "$T/$f.out")
					if grep -q -E 'Socket errors|Non-2xx' "$T/$f.out"; then
						note "wrk -c $c ($m, round $r): $(grep -E 'Socket errors|Non-2xx' "$T/$f.out" | tr '\n' ' ')"
						ok=0
					fi
					[ "$(accel "$c" "$f")" = 1 ] || ok=0
					tsv nginx.tsv "$r" "$m" "$c" "${v:-nan}" "$ok"
				done
				stop_server "$pid"
			done
		done
	else
		note "nginx or wrk is not installed"
	fi
	tsv_head nginx-summary.tsv series connections requests_per_s
	md "" "| -c | TCP req/s | shunt req/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	local tv sv tm sm rr valid allvalid=1 gsum=0 min=nan k=0
	for c in "${conns[@]}"; do
		tv=$(awk -F'\t' -v c="$c" '$2 == "tcp" && $3 == c { print $4 }' "$DATA/nginx.tsv" | tr '\n' ' ')
		sv=$(awk -F'\t' -v c="$c" '$2 == "shunt" && $3 == c { print $4 }' "$DATA/nginx.tsv" | tr '\n' ' ')
		valid=$(awk -F'\t' -v c="$c" 'BEGIN { x = 1 } $3 == c && ($5 != 1 || $4 == "nan") { x = 0 } END { print x }' "$DATA/nginx.tsv")
		[ "$valid" = 1 ] || allvalid=0
		# shellcheck disable=SC2086
		tm=$(median $tv) sm=$(median $sv)
		rr=$(ratio "$sm" "$tm")
		tsv nginx-summary.tsv TCP "$c" "$tm"
		tsv nginx-summary.tsv shunt "$c" "$sm"
		md "| $c | $(fmt "$tm") | $(fmt "$sm")$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
		# A failed point counts as 0.01x in the mean and 0 in the minimum.
		gsum=$(awk -v g="$gsum" -v r="$rr" 'BEGIN { if (r == "nan" || r + 0 <= 0) r = 0.01; print g + log(r) }')
		min=$(awk -v m="$min" -v r="$rr" 'BEGIN { if (r == "nan") r = 0; print (m == "nan" || r + 0 < m + 0) ? r : m }')
		k=$((k + 1))
	done
	local gmean
	gmean=$(awk -v g="$gsum" -v n="$k" 'BEGIN { if (n) printf "%.2f", exp(g / n); else print "nan" }')
	md "" "Geometric mean of shunt/TCP over -c ${conns[0]}..${conns[${#conns[@]} - 1]}: ${gmean}x; lowest: ${min}x."
	local at_c="-c $(IFS=,; echo "${conns[*]}" | sed "s/,/, /g")"
	target nginx-gmean "${gmean}x ($at_c)" "$(verdict '>=' "$gmean" 1.3 "$allvalid")"
	target nginx-min "${min}x ($at_c)" "$(verdict '>=' "$min" 1.0 "$allvalid")"
	plot nginx "nginx + wrk, 4 KiB keep-alive: requests/s (median)" "wrk connections (-c, log)" "requests/s" \
		nginx-summary.tsv -v logx=1
	md_commands
}

# --- memcached + memcaslap --------------------------------------------------
apps_memcached() {
	local rounds=$1 combos=("1 1" "2 32") d=2
	[ "$QUICK" = 1 ] && combos=("2 32") d=1
	md "" "### memcached + memcaslap" "" \
		"memcached (4 threads, TCP only) started per round and mode; memcaslap" \
		"(libmemcached-tools; its default mix, 90% get and 10% set) for $d s with \`-T\`" \
		"threads and \`-c\` concurrent connections; operations/s (its TPS), median of" \
		"$rounds round(s)."
	tsv_head memcached.tsv round mode threads concurrency ops_per_s accelerated
	local r m port pid tc th c f v ok
	if command -v memcached >/dev/null 2>&1 && command -v memcaslap >/dev/null 2>&1; then
		for ((r = 1; r <= rounds; r++)); do
			for m in $(order "$r"); do
				mode $m
				port=$(free_port)
				PORT_NOW=$port
				cmd_record memcached -p "$port" -U 0 -l 127.0.0.1 -t 4 -m 64 "$([ "$(id -u)" -ne 0 ] || echo "-u $(id -un)")"
				start_memcached "memcached-$m-$r-srv" "$port" 4
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "memcached did not start"; continue; }
				for tc in "${combos[@]}"; do
					read -r th c <<<"$tc"
					f=memcaslap-$m-$r-c$c
					bclient "$f" $((d + 20)) memcaslap -s "127.0.0.1:$port" -t "${d}s" -T "$th" -c "$c" \
						>"$T/$f.out" 2>&1 || note "memcaslap -c $c ($m, round $r) failed: $(tail -n 2 "$T/$f.out" | tr '\n' ' ')"
					v=$(awk '/^Run time:/ { for (i = 1; i < NF; i++) if ($i == "TPS:") print $(i + 1) }' "$T/$f.out" | tail -n 1)
					ok=$(accel "$c" "$f")
					tsv memcached.tsv "$r" "$m" "$th" "$c" "${v:-nan}" "$ok"
				done
				stop_server "$pid"
			done
		done
	else
		note "memcached or memcaslap (libmemcached-tools) is not installed"
	fi
	tsv_head memcached-summary.tsv series concurrency ops_per_s
	md "" "| -T | -c | TCP ops/s | shunt ops/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|---|"
	local tv sv tm sm rr valid
	for tc in "${combos[@]}"; do
		read -r th c <<<"$tc"
		tv=$(awk -F'\t' -v c="$c" '$2 == "tcp" && $4 == c { print $5 }' "$DATA/memcached.tsv" | tr '\n' ' ')
		sv=$(awk -F'\t' -v c="$c" '$2 == "shunt" && $4 == c { print $5 }' "$DATA/memcached.tsv" | tr '\n' ' ')
		valid=$(awk -F'\t' -v c="$c" 'BEGIN { x = 1 } $2 == "shunt" && $4 == c && ($6 != 1 || $5 == "nan") { x = 0 } END { print x }' "$DATA/memcached.tsv")
		# shellcheck disable=SC2086
		tm=$(median $tv) sm=$(median $sv)
		rr=$(ratio "$sm" "$tm")
		tsv memcached-summary.tsv TCP "-c $c" "$tm"
		tsv memcached-summary.tsv shunt "-c $c" "$([ "$valid" = 1 ] && echo "$sm" || echo invalid)"
		md "| $th | $c | $(fmt "$tm") | $(fmt "$sm")$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
	done
	plot memcached "memcached + memcaslap: operations/s (median)" "memcaslap concurrency" "operations/s" \
		memcached-summary.tsv -v kind=bar
	md_commands
}
