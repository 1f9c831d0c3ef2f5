#!/usr/bin/env bash
# t_apps_ab: short connections.  A single-process nginx (no master, one
# worker) serves a 4 KiB file to ApacheBench, `ab -c 8 -n 3000` without
# keep-alive: a connection per request, each a request and a response.
# Three ab processes run one after the other against the same server, first
# all on plain TCP (a server without shunt), then all under shunt (a new
# server under shunt too).  Every run must complete its 3000 requests with
# none failed and every document 4096 bytes long.  Connections this short
# are not worth moving, so under shunt none may be upgraded: they must stay
# on TCP at TCP's pace.  The rates of both rounds and their ratios are
# printed, not asserted (the machine may be busy).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init ab
need nginx ab

N=3000 C=8 RUNS=3
mkdir -p "$T/www" "$T/tmp"
rand_file "$T/www/4k" 4096
chmod 755 "$T/www"
chmod 644 "$T/www/4k"
chmod 777 "$T/tmp"

# nginx_conf NAME PORT: a single-process nginx.conf in $T/nginx-NAME.conf.  As
# root the worker keeps our user (shunt connects only processes of one user).
nginx_conf() {
	local user_line=
	[ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
	cat >"$T/nginx-$1.conf" <<EOF
$user_line
master_process off;
worker_processes 1;
daemon off;
pid $T/$1.pid;
error_log $T/$1-error.out warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $T/tmp;
	proxy_temp_path $T/tmp;
	fastcgi_temp_path $T/tmp;
	uwsgi_temp_path $T/tmp;
	scgi_temp_path $T/tmp;
	sendfile on;
	server { listen 127.0.0.1:$2 backlog=1024; root $T/www; }
}
EOF
}

# ab_run NAME PORT: one ab process (log $T/NAME.log, report $T/NAME.ab,
# which a failure does not dump); checks the report, prints the rate, sets
# RATE.
ab_run() {
	local name=$1 port=$2 complete failed len
	run_client "$name" 90 ab -s 10 -c $C -n $N "http://127.0.0.1:$port/4k" >"$T/$name.ab" 2>&1 ||
		fail "$name: ab exited with status $? ($(grep -m1 -iE 'apr_|error' "$T/$name.ab" || tail -n1 "$T/$name.ab"))"
	complete=$(awk '/^Complete requests:/ { print $3 }' "$T/$name.ab")
	failed=$(awk '/^Failed requests:/ { print $3 }' "$T/$name.ab")
	len=$(awk '/^Document Length:/ { print $3 }' "$T/$name.ab")
	RATE=$(awk '/^Requests per second:/ { print $4 }' "$T/$name.ab")
	[ "$complete" = $N ] || fail "$name: ab completed ${complete:-no} requests, expected $N"
	[ "$failed" = 0 ] || fail "$name: ab counted ${failed:-?} failed requests ($(grep -A1 '^Failed requests' "$T/$name.ab" | tail -n1 | tr -s ' '))"
	[ "$len" = 4096 ] || fail "$name: document length ${len:-?}, expected 4096"
	! grep -qE '^(Non-2xx responses|Write errors):' "$T/$name.ab" ||
		fail "$name: $(grep -m1 -E '^(Non-2xx responses|Write errors):' "$T/$name.ab" | tr -s ' ')"
	say "$name: $N requests, 0 failed, $RATE requests/s"
}

# A round: a server, then RUNS ab processes one after the other.
# round NAME tcp|shunt: the rates in RATES.
round() {
	local name=$1 how=$2 saved=$APPS_TCP port r
	[ "$how" = shunt ] || APPS_TCP=1 # plain: no preload, server and clients
	port=$(free_port)
	nginx_conf "$name" "$port"
	start_server "$name-server" nginx -p "$T" -c "$T/nginx-$name.conf" -e "$T/$name-error.out"
	local srv=$LAST_PID
	wait_listen "$port" "$srv"
	RATES=()
	for ((r = 1; r <= RUNS; r++)); do
		ab_run "$name-ab$r" "$port"
		RATES+=("$RATE")
	done
	kill -0 "$srv" 2>/dev/null || fail "$name: nginx died"
	! grep -E '\[(alert|crit|emerg)\]' "$T/$name-error.out" || fail "$name: nginx logged an alert"
	stop_server "$srv"
	APPS_TCP=$saved
}

round tcp tcp
tcp_rates=("${RATES[@]}")
round shunt shunt
sh_rates=("${RATES[@]}")

for ((r = 0; r < RUNS; r++)); do
	say "ab process $((r + 1)): TCP $(fmt "${tcp_rates[r]}") requests/s, shunt $(fmt "${sh_rates[r]}") requests/s: $(ratio "${sh_rates[r]}" "${tcp_rates[r]}")x"
done
say "median: TCP $(fmt "$(median "${tcp_rates[@]}")"), shunt $(fmt "$(median "${sh_rates[@]}")") requests/s: $(ratio "$(median "${sh_rates[@]}")" "$(median "${tcp_rates[@]}")")x"

# One request per connection: nothing may have moved to shared memory.
logs=("$T/shunt-server.log")
for ((r = 1; r <= RUNS; r++)); do logs+=("$T/shunt-ab$r.log"); done
n=$(count_upgraded "${logs[@]}")
if [ "$APPS_TCP" = 1 ]; then
	say "plain TCP mode: not checking that short connections stay on TCP"
else
	[ "$n" = 0 ] || fail "$n 'upgraded' lines in ${logs[*]##*/}: short connections (one request each) must stay on TCP"
	say "no short connection was upgraded"
fi
say pass
