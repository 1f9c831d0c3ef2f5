# shellcheck shell=bash
# Section 6: connection set-up rate.  tcpbench server/connect (connect, a
# byte each way, close) and tcpbench accept/connect0 (connect, accept,
# close, no data), N connections in a row, TCP and shunt alternating.

section_setup() {
	md "## $1. Connection set-up"
	local rounds=3 n=3000
	[ "$QUICK" = 1 ] && rounds=1 n=500
	md "" "$n connections in a row from one client to one server, median of $rounds" \
		"round(s). *With data*: connect, one byte each way, close (\`tcpbench" \
		"server\`/\`connect\`). *No data*: connect, accept, close (\`tcpbench accept\`/" \
		"\`connect0\`; the client ends with one connection that carries a byte," \
		"so that the time covers the server's accepts too). Under shunt, with data" \
		"every one of the $n must be logged as upgraded by the server; without," \
		"the closing connection must be: the shim settles a connection's upgrade" \
		"when it is first used, so one closed unused rightly stays on TCP, having" \
		"carried nothing."
	tsv_head setup.tsv round mode variant conn_per_s upgraded
	local r m v port pid srvmode climode rate up
	for ((r = 1; r <= rounds; r++)); do
		for v in data nodata; do
			for m in $(order "$r"); do
				mode $m
				if [ $v = data ]; then srvmode=server climode=connect; else srvmode=accept climode=connect0; fi
				port=$(free_port)
				PORT_NOW=$port
				bstart "setup-$m-$v-$r-srv" "$TB" "$srvmode" "$port" "$n"
				pid=$LAST_PID
				blisten "$port" "$pid" || { note "setup: the server did not start"; continue; }
				rate=nan
				if bclient "setup-$m-$v-$r" 120 "$TB" "$climode" "$port" "$n" >"$T/setup-$m-$v-$r.out" 2>&1; then
					rate=$(pick "$T/setup-$m-$v-$r.out" conn/s)
				else
					note "setup $v ($m, round $r) failed: $(tail -n 2 "$T/setup-$m-$v-$r.out" | tr '\n' ' ')"
				fi
				local k
				for ((k = 0; k < 50; k++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
				stop_server "$pid"
				up=$(upgraded "setup-$m-$v-$r-srv")
				local need=$n
				[ $v = data ] || need=1
				[ $m = tcp ] || [ "$up" -ge "$need" ] ||
					note "setup $v (round $r): the server logged $up of $n connections upgraded; figure marked invalid"
				tsv setup.tsv "$r" "$m" "$v" "${rate:-nan}" "$up"
			done
		done
	done
	tsv_head setup-summary.tsv series variant conn_per_s
	md "" "| | TCP conn/s | shunt conn/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	local tv sv t s rr valid
	for v in data nodata; do
		tv=$(awk -F'\t' -v v="$v" '$2 == "tcp" && $3 == v { print $4 }' "$DATA/setup.tsv" | tr '\n' ' ')
		sv=$(awk -F'\t' -v v="$v" '$2 == "shunt" && $3 == v { print $4 }' "$DATA/setup.tsv" | tr '\n' ' ')
		local need=$n
		[ $v = data ] || need=1
		valid=$(awk -F'\t' -v v="$v" -v n="$need" 'BEGIN { x = 1 } $2 == "shunt" && $3 == v && $5 < n { x = 0 } END { print x }' "$DATA/setup.tsv")
		# shellcheck disable=SC2086
		t=$(median $tv) s=$(median $sv)
		rr=$(ratio "$s" "$t")
		local label="with data (1 byte each way)"
		[ $v = data ] || label="no data (connect, accept, close)"
		tsv setup-summary.tsv TCP "$label" "$t"
		tsv setup-summary.tsv shunt "$label" "$([ "$valid" = 1 ] && echo "$s" || echo invalid)"
		md "| $label | $(fmt "$t") | $(fmt "$s")$(valid_mark "$valid") | ${rr}x | $(fmt1 $tv); $(fmt1 $sv) |"
		if [ $v = data ]; then
			target setup "${rr}x ($(fmt "$s") vs $(fmt "$t") conn/s)" "$(verdict '>=' "$rr" 0.8 "$valid")"
		else
			target setup0 "${rr}x ($(fmt "$s") vs $(fmt "$t") conn/s)" "$(verdict '>=' "$rr" 0.8 "$valid")"
		fi
	done
	plot setup "Connection set-up rate" "" "connections per second" setup-summary.tsv -v kind=bar
	md_commands
}
