#!/usr/bin/env bash
# t_apps_nginx: nginx (a master and 2 workers, sendfile on, a private
# config) and its clients under shunt; every file must come back with the
# checksum of the original.
#  * curl fetches a random 4 KiB file on a connection of its own: a few
#    calls, a few KiB, which stays on TCP by design at both ends ("stays on
#    TCP: short").
#  * curl fetches a random 5 MiB file, and PUTs a random 1 MiB file (WebDAV)
#    that it reads back, each on a connection of its own: intact.  Whether
#    one such transfer moves depends on who runs when: the meeting advances
#    only on each end's data calls, and nginx hands a whole response to the
#    kernel in a few sendfile() calls, then makes none until the next
#    request, so the client's HELLO may come too late to be answered (and a
#    fast uploader is done before nginx took a step).  So each end either
#    moved or stayed on TCP as "short" or "nopeer" (its meeting not
#    answered in time), never for another reason.
#  * curl fetches both files 3 times over one kept-alive connection: six
#    requests, one connection, which moves at both ends (each request is a
#    data call at each end).
#  * wrk drives 8 kept-alive connections for 2 s: requests complete, with no
#    socket error and no non-2xx answer; all 8 move at both ends, and over
#    one second of it the kernel's TCP sockets carry under 1/20 of what wrk
#    read per second (doorbells; over TCP, all of it).
#  * the same nginx as a reverse proxy to itself (proxy_pass, kept-alive
#    upstreams): 2 x 32 MiB intact, an upstream connection moved.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init nginx
need nginx curl wrk

port=$(free_port)
pport=$(free_port)
while [ "$pport" = "$port" ]; do pport=$(free_port); done
mkdir -p "$T/www/up" "$T/tmp"
rand_file "$T/www/small" 4096
rand_file "$T/www/big" $((5 << 20))
rand_file "$T/www/huge" $((32 << 20))
chmod 755 "$T/www"
chmod 777 "$T/www/up" "$T/tmp" # nginx workers write here
chmod 644 "$T/www/small" "$T/www/big" "$T/www/huge"

# As root, nginx's workers would switch to "nobody", and shunt only
# connects processes of the same user; keep them ours.
user_line=
[ "$(id -u)" -ne 0 ] || user_line="user $(id -un) $(id -gn);"
cat >"$T/nginx.conf" <<EOF
$user_line
worker_processes 2;
daemon off;
master_process on;
pid $T/nginx.pid;
error_log $T/error.out info;
events { worker_connections 1024; }
http {
	access_log $T/access.out;
	client_body_temp_path $T/tmp/body;
	proxy_temp_path $T/tmp/proxy;
	fastcgi_temp_path $T/tmp/fastcgi;
	uwsgi_temp_path $T/tmp/uwsgi;
	scgi_temp_path $T/tmp/scgi;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$port;
		root $T/www;
		location /up/ { dav_methods PUT; client_max_body_size 8m; }
	}
	upstream back { server 127.0.0.1:$port; keepalive 4; }
	server {
		listen 127.0.0.1:$pport;
		location / {
			proxy_pass http://back;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
EOF
# -e: nginx opens its default error log before reading the config.
start_server server nginx -p "$T" -c "$T/nginx.conf" -e "$T/error.out"
srv=$LAST_PID
wait_listen "$port" "$srv"
url=http://127.0.0.1:$port

# One connection per file.
run_client curl-small 20 curl -sS --fail -o "$T/got-small" "$url/small" ||
	fail "curl small exited with status $?"
same_file "$T/www/small" "$T/got-small" "GET /small"
# The short one stayed on TCP at both ends.
for ((i = 0; i < 40; i++)); do
	[ "$(count_stays short "$T/server.log")" -ge 1 ] && break
	sleep 0.05
done
assert_not_accelerated "$T/curl-small.log" "$T/server.log"
assert_stays short 1 "$T/curl-small.log"
assert_stays short 1 "$T/server.log"
run_client curl-big 20 curl -sS --fail -o "$T/got-big" "$url/big" ||
	fail "curl big exited with status $?"
same_file "$T/www/big" "$T/got-big" "GET /big"
say "GET /small (4 KiB) and /big (5 MiB): intact"

# Both files, 3 times, on one kept-alive connection (curl reuses it).
server_before_ka=$(count_upgraded "$T/server.log")
fetch_kept_alive curl-ka "$url" small big
assert_accelerated 1 "$T/curl-ka.log"
[ "$APPS_TCP" = 1 ] || [ "$(count_upgraded "$T/server.log")" -gt "$server_before_ka" ] ||
	fail "the server's end of the kept-alive connection did not move"

# Upload: PUT 1 MiB (the request body goes client to server), read back.
rand_file "$T/put" $((1 << 20))
code=$(run_client curl-put 20 curl -sS -o /dev/null -w '%{http_code}' -T "$T/put" "$url/up/put") ||
	fail "PUT curl exited with status $?"
[ "$code" = 201 ] || fail "PUT /up/put answered $code, expected 201"
same_file "$T/put" "$T/www/up/put" "the file nginx stored from a PUT"
run_client curl-put-get 20 curl -sS --fail -o "$T/got-put" "$url/up/put" ||
	fail "GET /up/put exited with status $?"
same_file "$T/put" "$T/got-put" "GET of the PUT file"
say "PUT of 1 MiB, stored and read back: intact"
for c in curl-big curl-put curl-put-get; do
	if [ "$APPS_TCP" != 1 ] && [ "$(count_upgraded "$T/$c.log")" = 0 ]; then
		grep -Eq 'stays on TCP: (short|nopeer)\b' "$T/$c.log" ||
			fail "$c: neither moved nor stayed on TCP for being short or unanswered in time: $(head -c 300 "$T/$c.log")"
	fi
	say "$c: $(sed 's/^shunt\[[0-9]*\] info: //' "$T/$c.log" 2>/dev/null | head -n 1)"
done

# A reverse proxy: the same nginx on another port passes each request to
# itself over kept-alive upstream connections.  nginx adds an upstream
# socket to its epoll set (edge-triggered) before its connect(): a set
# that did not know it saw none of its data once it moved, and the 32 MiB
# answer hung (nginx fastcgi_pass to php-fpm, 4 runs of 4).
dial_before=$(grep -c 'dialing side' "$T/server.log" 2>/dev/null || true)
run_client curl-proxy 60 curl -sS --fail -o "$T/got-proxy-1" "http://127.0.0.1:$pport/huge" \
	-o "$T/got-proxy-2" "http://127.0.0.1:$pport/huge" ||
	fail "curl through the proxy exited with status $?"
same_file "$T/www/huge" "$T/got-proxy-1" "GET /huge through the proxy"
same_file "$T/www/huge" "$T/got-proxy-2" "GET /huge through the proxy, again"
dial=$(($(grep -c 'dialing side' "$T/server.log" 2>/dev/null || true) - dial_before))
say "2 x 32 MiB through nginx's proxy_pass to itself: intact; its upstream connections that moved: $dial"
[ "$APPS_TCP" = 1 ] || [ "$dial" -ge 1 ] || fail "no upstream connection of the proxy moved"

# wrk: 2 threads, 8 kept-alive connections, 2 s, the 4 KiB file.
wrk_kept_alive "$url/small" "$port"

kill -0 "$srv" 2>/dev/null || fail "nginx died"
! grep -E '\[(alert|crit|emerg)\]' "$T/error.out" || fail "nginx logged an alert"
say pass
