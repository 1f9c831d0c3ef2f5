# shellcheck shell=bash
# Section 6: short connections and plain clients, which must cost nothing
# extra under shunt.  A connection starts on TCP and moves only after
# upgrade-calls (16) data calls or upgrade-bytes (256 KiB) at one end, so a
# short one stays on TCP by design: every shunt run here must log no
# "upgraded" line and its connections as "stays on TCP: short" (else its
# figure is invalid), and its rate must be at least TCP's.
#   6a. tcpbench connect / connect0: connection set-up, with and without data
#   6b. nginx (2 workers) + wrk -H "Connection: close", -c 1, 8, 64
#   6c. redis-benchmark -k 0 (a new connection per request)
#   6d. pgbench -C -S (PostgreSQL forks a backend per connection)
#   6e. a server under shunt loaded by plain clients (nginx + wrk without
#       shunt), against the same server without shunt: within 5%
#   6f. a fork-per-connection server (bench/forkfaults.c): microseconds and
#       page faults per connection

# Each subsection's shunt runs log nothing while timed, as the library does
# for a user who does not ask: a line per connection is a write and more per
# connection, a cost TCP's runs do not have, which is most of what these
# short rows measure.  So a first round (round 0, not counted, none in a
# quick run) runs with SHUNT_LOG=info and must show every connection short.
# first_round: 0, or 1 in a quick run (its one round logs and counts).
first_round() { [ "$QUICK" = 1 ] && echo 1 || echo 0; }

# log_round R: the library's log level for the runs of round R.
log_round() {
	if [ "$1" = 0 ] || [ "$QUICK" = 1 ]; then APPS_SHUNT_LOG=info; else APPS_SHUNT_LOG=none; fi
}

# short_valid NAME...: in shunt mode, 1 if these runs' logs show no
# upgraded connection and at least one "stays on TCP: short" (the library
# was there and left them on TCP, as it should), else 0 with a note.  Always
# 1 in TCP mode, and in a run that logs nothing (its round 0 checked).
short_valid() {
	[ "$APPS_TCP" = 0 ] && [ "${APPS_SHUNT_LOG:-info}" != none ] || { echo 1; return; }
	local f=() n up sh
	for n in "$@"; do f+=("$T/$n.log"); done
	up=$(count_upgraded "${f[@]}")
	sh=$(count_stays short "${f[@]}")
	if [ "$up" -gt 0 ]; then
		note "$*: $up connection(s) upgraded, where every one is short and must stay on TCP; figure marked invalid"
		echo 0
	elif [ "$sh" -lt 1 ]; then
		note "$*: no 'stays on TCP: short' in the logs (was the library loaded?); figure marked invalid"
		echo 0
	else
		echo 1
	fi
}

# short_row LABEL TSV KEY DEC: median TCP and shunt of KEY in $DATA/TSV
# (columns: round mode key value valid), a Markdown row, and SHORT_R (the
# ratio), SHORT_T, SHORT_S, SHORT_V (valid) for the caller.
short_row() {
	local label=$1 f=$DATA/$2 key=$3 d=${4:-0} tv sv
	tv=$(awk -F'\t' -v k="$key" '$1 != 0 && $2 == "tcp" && $3 == k { print $4 }' "$f" | tr '\n' ' ')
	sv=$(awk -F'\t' -v k="$key" '$1 != 0 && $2 == "shunt" && $3 == k { print $4 }' "$f" | tr '\n' ' ')
	SHORT_V=$(awk -F'\t' -v k="$key" 'BEGIN { x = 1; n = 0 } $3 == k { n++ } $3 == k && ($5 != 1 || $4 == "nan") { x = 0 } END { print (n ? x : 0) }' "$f")
	# shellcheck disable=SC2086 # lists of numbers
	SHORT_T=$(median $tv) SHORT_S=$(median $sv)
	SHORT_R=$(ratio "$SHORT_S" "$SHORT_T")
	md "| $label | $(fmt "$SHORT_T" "$d") | $(fmt "$SHORT_S" "$d")$(valid_mark "$SHORT_V") | ${SHORT_R}x | $(fmt1 $tv); $(fmt1 $sv) |"
}

section_setup() {
	md "## $1. Short connections and plain clients: never slower than TCP"
	md "" "A connection starts on plain TCP and moves to shared memory only after" \
		"\`upgrade-calls\` (16) data calls or \`upgrade-bytes\` (256 KiB) at one end. A" \
		"short connection (one request, \`Connection: close\`, \`redis-benchmark -k 0\`," \
		"\`pgbench -C\`) therefore stays on TCP by design, and must cost nothing extra." \
		"Every shunt run here must log no connection as upgraded and its connections" \
		"as \`stays on TCP: short\`, else its figure is marked invalid. TCP and shunt" \
		"alternate round after round (the order swapped every other round); medians." \
		"The timed shunt runs log nothing, as the library does unless asked (a line" \
		"per connection is a write and more per connection, a cost TCP's runs do not" \
		"have); a first round, round 0, not counted, logs at \`SHUNT_LOG=info\` and is" \
		"the one whose logs are checked (a quick run's one round logs, and counts)."
	setup_tcpbench "$1"
	setup_nginx_close "$1"
	setup_redis_k0 "$1"
	setup_pgbench "$1"
	setup_plain "$1"
	setup_forks "$1"
	APPS_SHUNT_LOG=info
	plot setup "Short connections: rate, shunt against TCP" "" "connections or requests per second" \
		setup-summary.tsv -v kind=bar
}

# --- 6a. tcpbench connect / connect0 -----------------------------------------
setup_tcpbench() {
	# Each run lasts tens of milliseconds: at the mercy of the machine's
	# noise (one round of three, 12-07, was 0.85x, the next 1.06x), so 9.
	local rounds=${BENCH_ROUNDS:-9} n=3000
	[ "$QUICK" = 1 ] && rounds=1 n=300
	md "" "### $1a. Connection set-up (tcpbench)" "" \
		"$n connections in a row from one client to one server, median of $rounds" \
		"round(s). *With data*: connect, one byte each way, close (\`tcpbench" \
		"server\`/\`connect\`). *No data*: connect, accept, close (\`tcpbench accept\`/" \
		"\`connect0\`; the client ends with one connection that carries a byte," \
		"so that the time covers the server's accepts too). Under shunt both ends" \
		"must log each of them as \`stays on TCP: short\`, and none as upgraded."
	tsv_head setup.tsv round mode variant conn_per_s valid
	tsv_head setup-summary.tsv series variant per_s
	local r m v port pid srvmode climode rate ok k
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
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
				for ((k = 0; k < 50; k++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
				stop_server "$pid"
				ok=$(short_valid "setup-$m-$v-$r-srv" "setup-$m-$v-$r")
				# Every connection at both ends: n (+1 closing one without data).
				if [ "$APPS_TCP" = 0 ] && [ "$ok" = 1 ] && [ "$APPS_SHUNT_LOG" != none ]; then
					local ns nc
					ns=$(count_stays short "$T/setup-$m-$v-$r-srv.log")
					nc=$(count_stays short "$T/setup-$m-$v-$r.log")
					if [ "$ns" -lt "$n" ] || [ "$nc" -lt "$n" ]; then
						note "setup $v (round $r): 'stays on TCP: short' for $ns (server) and $nc (client) of $n connections; figure marked invalid"
						ok=0
					fi
				fi
				tsv setup.tsv "$r" "$m" "$v" "${rate:-nan}" "$ok"
			done
		done
	done
	md "" "| | TCP conn/s | shunt conn/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	short_row "with data (1 byte each way)" setup.tsv data
	tsv setup-summary.tsv TCP "connect" "$SHORT_T"
	tsv setup-summary.tsv shunt "connect" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
	target setup "${SHORT_R}x ($(fmt "$SHORT_S") vs $(fmt "$SHORT_T") conn/s)" "$(verdict '>=' "$SHORT_R" 1.0 "$SHORT_V")"
	headline "short connections: tcpbench connect (connect, 1 byte each way, close)" conn/s "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
		"both ends: $(moved_in "setup-shunt-data-*")"
	short_row "no data (connect, accept, close)" setup.tsv nodata
	tsv setup-summary.tsv TCP "connect0" "$SHORT_T"
	tsv setup-summary.tsv shunt "connect0" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
	target setup0 "${SHORT_R}x ($(fmt "$SHORT_S") vs $(fmt "$SHORT_T") conn/s)" "$(verdict '>=' "$SHORT_R" 1.0 "$SHORT_V")"
	headline "short connections: tcpbench connect0 (connect, accept, close)" conn/s "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
		"both ends: $(moved_in "setup-shunt-nodata-*")"
	md_commands
}

# www_4k: $T/www/4k, a random 4 KiB file nginx may read.
www_4k() {
	[ -f "$T/www/4k" ] && return 0
	mkdir -p "$T/www"
	chmod 755 "$T/www"
	rand_file "$T/www/4k" 4096
	chmod 644 "$T/www/4k"
}

# wrk_run NAME SECS C EXTRA...: one wrk run against $port (1 or 2 threads);
# requests/s in WRK_RPS ("nan" if it failed), WRK_OK 0 on socket errors or
# non-2xx answers (noted).
wrk_run() {
	local name=$1 secs=$2 c=$3
	shift 3
	WRK_OK=1 WRK_RPS=nan
	bclient "$name" $((secs + 15)) wrk -t $((c < 2 ? c : 2)) -c "$c" -d "${secs}s" "$@" \
		"http://127.0.0.1:$port/4k" >"$T/$name.out" 2>&1 || { WRK_OK=0; note "$name: wrk failed"; }
	WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$T/$name.out")
	WRK_RPS=${WRK_RPS:-nan}
	if grep -q -E 'Socket errors|Non-2xx' "$T/$name.out"; then
		note "$name: $(grep -E 'Socket errors|Non-2xx' "$T/$name.out" | tr '\n' ' ')"
		WRK_OK=0
	fi
}

# --- 6b. nginx, Connection: close ---------------------------------------------
setup_nginx_close() {
	local rounds=${BENCH_ROUNDS:-3} conns=(1 8 64) d=3
	[ "$QUICK" = 1 ] && rounds=1 conns=(8) d=1
	md "" "### $1b. nginx + wrk, \`Connection: close\`" "" \
		"nginx (a master and 2 workers, as in section 7) serves a 4 KiB file; wrk sends" \
		"\`Connection: close\` (\`-H \"Connection: close\"\`): a new connection per request," \
		"for $d s at each \`-c\`; requests/s, median of $rounds round(s). Under shunt, wrk's" \
		"and nginx's logs must show every connection short (none upgraded)."
	tsv_head nginx-close.tsv round mode connections requests_per_s valid
	local r m pid dir c f ok
	if ! command -v nginx >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
		note "nginx or wrk is not installed"
		return 0
	fi
	www_4k
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
		for m in $(order "$r"); do
			mode $m
			port=$(free_port)
			PORT_NOW=$port
			dir=$T/ngclose-$m-$r
			nginx_bench_conf "$dir" "$port" "$T/www"
			bstart "ngclose-$m-$r-srv" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.out"
			pid=$LAST_PID
			blisten "$port" "$pid" || { note "nginx did not start: $(tail -n 2 "$dir/error.out" 2>/dev/null)"; continue; }
			for c in "${conns[@]}"; do
				f=wrkclose-$m-$r-c$c
				: >"$T/$f.log"
				wrk_run "$f" "$d" "$c" -H "Connection: close"
				ok=$WRK_OK
				[ "$(short_valid "$f")" = 1 ] || ok=0
				tsv nginx-close.tsv "$r" "$m" "$c" "$WRK_RPS" "$ok"
			done
			stop_server "$pid"
			# nginx's workers: none of their connections moved either.
			if [ "$(short_valid "ngclose-$m-$r-srv")" != 1 ]; then
				sed -i -E "s/^($r\t$m\t[0-9]+\t[^\t]*\t)1\$/\\10/" "$DATA/nginx-close.tsv"
			fi
		done
	done
	md "" "| -c | TCP req/s | shunt req/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	for c in "${conns[@]}"; do
		short_row "$c" nginx-close.tsv "$c"
		tsv setup-summary.tsv TCP "nginx close -c $c" "$SHORT_T"
		tsv setup-summary.tsv shunt "nginx close -c $c" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
		target "nginx-close-c$c" "${SHORT_R}x ($(fmt "$SHORT_S") vs $(fmt "$SHORT_T") req/s)" "$(verdict '>=' "$SHORT_R" 1.0 "$SHORT_V")"
		headline "nginx (2 workers) 4 KiB, wrk -H \"Connection: close\" -c $c" req/s "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
			"wrk: $(moved_in "wrkclose-shunt-*-c$c"); nginx (every -c): $(moved_in "ngclose-shunt-*-srv")"
	done
	md_commands
}

# --- 6c. redis-benchmark -k 0 ---------------------------------------------------
setup_redis_k0() {
	local rounds=${BENCH_ROUNDS:-3} n=20000 c=8
	[ "$QUICK" = 1 ] && rounds=1 n=1000
	md "" "### $1c. redis-benchmark \`-k 0\`" "" \
		"redis-server (no persistence) per round and mode; \`redis-benchmark -k 0\` (no" \
		"keep-alive: a new connection for every request) runs SET and GET, $n requests" \
		"each, \`-c $c\`; requests/s, median of $rounds round(s). Under shunt the client's" \
		"and the server's logs must show every connection short."
	tsv_head redis-k0.tsv round mode test requests_per_s valid
	local r m pid f t v ok
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
		note "redis-server or redis-benchmark is not installed"
		return 0
	fi
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
		for m in $(order "$r"); do
			mode $m
			port=$(free_port)
			PORT_NOW=$port
			cmd_record redis-server --port "$port" --bind 127.0.0.1 --save '""' --appendonly no \
				--daemonize no --dir "$T/rk0-$m-$r" --logfile "$T/rk0-$m-$r/redis.out" --protected-mode no
			start_redis "rk0-$m-$r-srv" "$port" "$T/rk0-$m-$r"
			pid=$LAST_PID
			blisten "$port" "$pid" || { note "redis-server did not start"; continue; }
			f=rk0-$m-$r
			ok=1
			bclient "$f" 120 redis-benchmark -p "$port" -t set,get -n "$n" -c "$c" -k 0 --csv \
				>"$T/$f.out" 2>&1 || { ok=0; note "redis-benchmark -k 0 ($m, round $r) failed: $(tail -n 2 "$T/$f.out" | tr '\n' ' ')"; }
			stop_server "$pid"
			[ "$(short_valid "$f" "rk0-$m-$r-srv")" = 1 ] || ok=0
			for t in GET SET; do
				v=$(awk -F'"' -v t="$t" '$2 == t { print $4 }' "$T/$f.out")
				tsv redis-k0.tsv "$r" "$m" "$t" "${v:-nan}" "$ok"
			done
		done
	done
	md "" "| test | TCP req/s | shunt req/s | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	local lo=nan lov=1 what=""
	for t in GET SET; do
		short_row "$t -k 0 -c $c" redis-k0.tsv "$t"
		tsv setup-summary.tsv TCP "redis $t -k 0" "$SHORT_T"
		tsv setup-summary.tsv shunt "redis $t -k 0" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
		[ "$SHORT_V" = 1 ] || lov=0
		if [ "$lo" = nan ] || awk -v a="$SHORT_R" -v b="$lo" 'BEGIN { exit !(a == "nan" || a + 0 < b + 0) }'; then
			lo=$SHORT_R what="$t: $(fmt "$SHORT_S") vs $(fmt "$SHORT_T") req/s"
		fi
		headline "redis-benchmark -t set,get -c $c -k 0, $t (a connection per request)" req/s "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
			"both ends, GET and SET: $(moved_in "rk0-shunt-*")"
	done
	target redis-k0 "${lo}x ($what)" "$(verdict '>=' "$lo" 1.0 "$lov")"
	md_commands
}

# --- 6d. pgbench -C -S -----------------------------------------------------------
# pg_bindir: the newest PostgreSQL server programs ("" if none).
pg_bindir() {
	local b
	b=$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)
	if [ -x "$b" ]; then
		echo "${b%/postgres}"
	elif command -v postgres >/dev/null 2>&1; then
		dirname "$(command -v postgres)"
	fi
}

setup_pgbench() {
	local rounds=${BENCH_ROUNDS:-3} secs=4 c=4
	[ "$QUICK" = 1 ] && rounds=1 secs=1
	md "" "### $1d. pgbench \`-C -S\`" "" \
		"A throwaway PostgreSQL cluster (initdb in the temp dir, 127.0.0.1, fsync off," \
		"\`pgbench -i -s 1\` once), started per round and mode; \`pgbench -C -S -c $c -j 2" \
		"-T $secs\`: select-only transactions, a new connection for each (the postmaster" \
		"forks a backend for every one). tps including connection time, median of" \
		"$rounds round(s). As root everything runs as the user postgres. Under shunt the" \
		"server's (every backend's) and pgbench's logs must show every connection short."
	# initdb and two postgres start-ups take 10 s and more on a loaded
	# 2-CPU machine: not in a quick run.
	if [ "$QUICK" = 1 ]; then
		md "" "Not run in a quick run (initdb and the server's start-ups take too long)."
		return 0
	fi
	tsv_head pgbench.tsv round mode test tps valid
	local bindir pguser as=() p
	bindir=$(pg_bindir)
	if [ -z "$bindir" ]; then
		note "PostgreSQL is not installed (postgresql): no pgbench figure"
		return 0
	fi
	for p in initdb postgres pg_isready pgbench; do
		[ -x "$bindir/$p" ] || { note "no $bindir/$p: no pgbench figure"; return 0; }
	done
	pguser=$(id -un)
	local pgdir=$SHUNT_DIR
	if [ "$(id -u)" -eq 0 ]; then
		getent passwd postgres >/dev/null || { note "running as root and there is no postgres user: no pgbench figure"; return 0; }
		pguser=postgres
		as=(setpriv --reuid=postgres --regid=postgres --init-groups)
		# The postgres user's own rendezvous directory.
		pgdir=$(mktemp -d /tmp/shunt-XXXXXX)
		APPS_CLEANUP+=("rm -rf '$pgdir'")
		chown postgres: "$pgdir"
	fi
	mkdir -p "$T/pg"
	[ ${#as[@]} -eq 0 ] || chown "$pguser" "$T/pg"
	(cd "$T/pg" && timeout -k 2 120 "${as[@]}" "$bindir/initdb" -D "$T/pg/data" -U "$pguser" -A trust \
		-E UTF8 --locale=C --no-sync >"$T/initdb.out" 2>&1) ||
		{ note "initdb failed: $(tail -n 1 "$T/initdb.out")"; return 0; }
	local r m pid port f tps ok first=1 k
	# pg_log NAME: $T/NAME.log, writable by the server's user.
	pg_log() { : >>"$T/$1.log"; [ ${#as[@]} -eq 0 ] || chown "$pguser" "$T/$1.log"; }
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
		for m in $(order "$r"); do
			mode $m
			port=$(free_port)
			PORT_NOW=$port
			pg_log "pg-$m-$r-srv"
			bstart "pg-$m-$r-srv" env SHUNT_DIR="$pgdir" "${as[@]}" "$bindir/postgres" -D "$T/pg/data" -p "$port" \
				-c listen_addresses=127.0.0.1 -c unix_socket_directories="$T/pg" \
				-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
				-c max_connections=40 -c shared_buffers=32MB -c log_min_messages=warning
			pid=$LAST_PID
			blisten "$port" "$pid" || { note "postgres did not start"; continue; }
			for ((k = 0; k < 100; k++)); do
				"${as[@]}" "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres && break
				sleep 0.1
			done
			if [ $first = 1 ]; then
				# The tables, once, on plain TCP.
				first=0
				(cd "$T/pg" && timeout -k 2 120 "${as[@]}" "$bindir/pgbench" -i -s 1 -q -h 127.0.0.1 -p "$port" \
					-U "$pguser" postgres >"$T/pgbench-init.out" 2>&1) ||
					{ note "pgbench -i failed: $(tail -n 1 "$T/pgbench-init.out")"; stop_server "$pid"; return 0; }
			fi
			f=pgbench-$m-$r
			pg_log "$f"
			ok=1
			(cd "$T/pg" && bclient "$f" $((secs + 60)) env SHUNT_DIR="$pgdir" "${as[@]}" "$bindir/pgbench" -C -S -c "$c" -j 2 \
				-T "$secs" -n -h 127.0.0.1 -p "$port" -U "$pguser" postgres) >"$T/$f.out" 2>&1 ||
				{ ok=0; note "pgbench -C -S ($m, round $r) failed: $(grep -m1 -i error "$T/$f.out" || tail -n 1 "$T/$f.out")"; }
			stop_server "$pid"
			# tps as pgbench reports it, connection time included.
			tps=$(sed -n 's/^tps = \([0-9.]*\) (including reconnection times)/\1/p; s/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$T/$f.out" | head -n 1)
			if grep -q '^number of failed transactions: [1-9]' "$T/$f.out"; then
				ok=0
				note "pgbench -C -S ($m, round $r): $(grep '^number of failed' "$T/$f.out")"
			fi
			[ "$(short_valid "$f" "pg-$m-$r-srv")" = 1 ] || ok=0
			tsv pgbench.tsv "$r" "$m" "-C -S" "${tps:-nan}" "$ok"
		done
	done
	md "" "| | TCP tps | shunt tps | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	short_row "pgbench -C -S -c $c" pgbench.tsv "-C -S" 1
	tsv setup-summary.tsv TCP "pgbench -C -S" "$SHORT_T"
	tsv setup-summary.tsv shunt "pgbench -C -S" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
	headline "pgbench -C -S -c $c (a connection per transaction)" tps "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
		"pgbench: $(moved_in "pgbench-shunt-*"); postgres: $(moved_in "pg-shunt-*-srv")"
	target pgbench-C "${SHORT_R}x ($(fmt "$SHORT_S" 1) vs $(fmt "$SHORT_T" 1) tps)" "$(verdict '>=' "$SHORT_R" 1.0 "$SHORT_V")"
	md_commands "Commands (as the user postgres when run as root; each run over TCP, and again with \`LD_PRELOAD=build/libshunt-preload.so\` for both the server and pgbench; PORT is a free port, \$TMP the temp dir of the run):"
}

# --- 6e. plain clients -------------------------------------------------------------
setup_plain() {
	local rounds=${BENCH_ROUNDS:-3} d=3 c=8 kinds=(keepalive close)
	[ "$QUICK" = 1 ] && rounds=1 d=1 kinds=(keepalive)
	md "" "### $1e. A server under shunt, its clients plain" "" \
		"The issue that started this design: a server whose workers share one listener," \
		"run under shunt and loaded by clients that do not run shunt, must serve as" \
		"fast as without shunt. nginx (2 workers) with and without" \
		"\`LD_PRELOAD=build/libshunt-preload.so\`; wrk always plain, \`-c $c\`, $d s, keep-alive" \
		"and \`Connection: close\`; requests/s, median of $rounds round(s). Under shunt nginx's" \
		"log must show no connection upgraded (there is no peer to meet: kept-alive" \
		"connections give up as \`nopeer\`, closed ones are \`short\`)."
	tsv_head plain-clients.tsv round server kind requests_per_s valid
	local r m pid dir kind f ok extra up
	if ! command -v nginx >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
		note "nginx or wrk is not installed"
		return 0
	fi
	www_4k
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
		for m in $(order "$r"); do
			mode $m
			port=$(free_port)
			PORT_NOW=$port
			dir=$T/ngplain-$m-$r
			nginx_bench_conf "$dir" "$port" "$T/www"
			bstart "ngplain-$m-$r-srv" nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.out"
			pid=$LAST_PID
			blisten "$port" "$pid" || { note "nginx did not start: $(tail -n 2 "$dir/error.out" 2>/dev/null)"; continue; }
			# The clients: plain whatever the server.
			mode tcp
			for kind in "${kinds[@]}"; do
				extra=()
				[ "$kind" = keepalive ] || extra=(-H "Connection: close")
				f=wrkplain-$m-$r-$kind
				wrk_run "$f" "$d" "$c" "${extra[@]}"
				tsv plain-clients.tsv "$r" "$m" "$kind" "$WRK_RPS" "$WRK_OK"
			done
			stop_server "$pid"
			if [ "$m" = shunt ] && [ "$APPS_SHUNT_LOG" != none ]; then
				up=$(upgraded "ngplain-$m-$r-srv")
				if [ "$up" -gt 0 ] || ! grep -q 'stays on TCP' "$T/ngplain-$m-$r-srv.log" 2>/dev/null; then
					note "plain clients (round $r): nginx under shunt logged $up upgraded and $(grep -c 'stays on TCP' "$T/ngplain-$m-$r-srv.log" 2>/dev/null || echo 0) 'stays on TCP' line(s); figure marked invalid"
					sed -i -E "s/^($r\tshunt\t[a-z]+\t[^\t]*\t)1\$/\\10/" "$DATA/plain-clients.tsv"
				fi
			fi
		done
	done
	md "" "| wrk (plain), -c $c | nginx without shunt, req/s | nginx under shunt, req/s | ratio | per round (without; under) |" "|---|---|---|---|---|"
	local lo=nan lov=1 what=""
	for kind in "${kinds[@]}"; do
		short_row "$kind" plain-clients.tsv "$kind"
		tsv setup-summary.tsv TCP "plain clients, $kind" "$SHORT_T"
		tsv setup-summary.tsv shunt "plain clients, $kind" "$([ "$SHORT_V" = 1 ] && echo "$SHORT_S" || echo invalid)"
		[ "$SHORT_V" = 1 ] || lov=0
		if [ "$lo" = nan ] || awk -v a="$SHORT_R" -v b="$lo" 'BEGIN { exit !(a == "nan" || a + 0 < b + 0) }'; then
			lo=$SHORT_R what="$kind: $(fmt "$SHORT_S") vs $(fmt "$SHORT_T") req/s"
		fi
		headline "nginx (2 workers) under shunt, plain wrk -c $c, $kind (TCP: without shunt)" req/s "$SHORT_T" "$SHORT_S" "$SHORT_R" "$SHORT_V" \
			"nginx (no peer to meet): $(moved_in "ngplain-shunt-*-srv")"
	done
	target plain-clients "${lo}x ($what$([ "$QUICK" = 1 ] && echo '; keep-alive only, quick'))" "$(verdict '>=' "$lo" 0.95 "$lov")"
	md_commands "Commands (the server with and without \`LD_PRELOAD=build/libshunt-preload.so\`; wrk always without; PORT is a free port, \$TMP the temp dir of the run):"
}

# --- 6f. a fork per connection --------------------------------------------------------
setup_forks() {
	local rounds=${BENCH_ROUNDS:-3} n=2000 ff=$T/forkfaults
	[ "$QUICK" = 1 ] && rounds=1 n=300
	md "" "### $1f. A fork per connection (bench/forkfaults.c)" "" \
		"A server that forks a child for each connection (PostgreSQL, inetd, sshd," \
		"Apache's prefork) pays for each page of the library's state the child" \
		"and the parent write after the fork (a copy-on-write fault each), each" \
		"64 KiB of its code and each page of the arena the child touches (a" \
		"fault each: the kernel does not copy a file mapping's page table), and" \
		"the size of the fd table the fork copies. \`bench/forkfaults.c\`: its client" \
		"connects, writes 100 bytes, reads 1000 and closes, $n times; the server" \
		"accepts, forks, closes its copy; the child reads, answers, closes, exits." \
		"Microseconds per connection as the client sees them, and the page faults" \
		"of the server and of its children per connection (getrusage), median of" \
		"$rounds round(s); the whole program with and without the library."
	tsv_head forks.tsv round mode key value valid
	if ! gcc -O2 -o "$ff" "$BENCH_DIR/forkfaults.c" 2>"$T/forkfaults-cc.out"; then
		note "forkfaults did not build: $(tail -n 1 "$T/forkfaults-cc.out")"
		return 0
	fi
	local r m port f us fc fs ok
	for ((r = $(first_round); r <= rounds; r++)); do
		log_round "$r"
		for m in $(order "$r"); do
			mode $m
			port=$(free_port)
			f=forks-$m-$r
			ok=1
			if ! bclient "$f" 120 "$ff" "$n" "$port" >"$T/$f.out" 2>&1; then
				ok=0
				note "forkfaults ($m, round $r) failed: $(tail -n 2 "$T/$f.out" | tr '\n' ' ')"
			fi
			us=$(awk '/^client:/ { print $2 }' "$T/$f.out")
			fc=$(awk '/^faults per connection:/ { gsub(",", ""); print $5 }' "$T/$f.out")
			fs=$(awk '/^faults per connection:/ { gsub(/[,;]/, ""); print $7 }' "$T/$f.out")
			[ "$(short_valid "$f")" = 1 ] || ok=0
			tsv forks.tsv "$r" "$m" us "${us:-nan}" "$ok"
			tsv forks.tsv "$r" "$m" faults_children "${fc:-nan}" "$ok"
			tsv forks.tsv "$r" "$m" faults_server "${fs:-nan}" "$ok"
		done
	done
	md "" "| per connection | TCP | shunt | shunt/TCP | per round (TCP; shunt) |" "|---|---|---|---|---|"
	short_row "faults, the children" forks.tsv faults_children 1
	short_row "faults, the server" forks.tsv faults_server 1
	short_row "microseconds" forks.tsv us 1
	local rate_r
	rate_r=$(ratio "$SHORT_T" "$SHORT_S")
	tsv setup-summary.tsv TCP "fork per connection" "$(calc "1e6 / $SHORT_T")"
	tsv setup-summary.tsv shunt "fork per connection" "$([ "$SHORT_V" = 1 ] && calc "1e6 / $SHORT_S" || echo invalid)"
	headline "a fork per connection (bench/forkfaults.c), connections/s" conn/s "$(calc "1e6 / $SHORT_T")" "$(calc "1e6 / $SHORT_S")" "$rate_r" "$SHORT_V" \
		"$(moved_in "forks-shunt-*")"
	target forks "${rate_r}x the connections/s ($(fmt "$SHORT_S" 1) vs $(fmt "$SHORT_T" 1) us a connection)" "$(verdict '>=' "$rate_r" 1.0 "$SHORT_V")"
	md_commands
}
