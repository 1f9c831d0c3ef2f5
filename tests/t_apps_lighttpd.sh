#!/usr/bin/env bash
# t_apps_lighttpd: lighttpd (one process, level-triggered epoll, sendfile)
# under shunt, its clients and its proxy backend under shunt too.
#  * mod_proxy: curl fetches a random 32 MiB file 4 times through lighttpd
#    from a backend (python3 -m http.server); lighttpd reads the backend
#    with FIONREAD and splice() into a pipe.  Splices not counted as reads
#    left its reads short of the backend's switch offset once the
#    connection moved: the transfer stalled with the ring full (4 runs in 5
#    of the tester's).  Every copy must come back whole within 20 s.
#  * wrk drives 64 kept-alive connections for 3 s at a 1 MiB file, and
#    exits in the middle of responses: lighttpd, waiting for room to write
#    (EPOLLOUT | EPOLLRDHUP, no EPOLLIN), must hear of each peer's end, as
#    over TCP (its reset).  It kept 21 to 32 of them in CLOSE-WAIT for
#    minutes: a FIN that came behind doorbells was heard once, and taken for
#    no news.  Within 5 s of wrk's exit none may be left.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init lighttpd
need lighttpd curl wrk python3

port=$(free_port)
bport=$(free_port)
mkdir -p "$T/www" "$T/back"
rand_file "$T/www/f1m" $((1 << 20))
rand_file "$T/back/f32m" $((32 << 20))
cat >"$T/lighttpd.conf" <<CONF
server.port = $port
server.bind = "127.0.0.1"
server.document-root = "$T/www"
server.errorlog = "$T/error.out"
server.modules = ( "mod_proxy" )
mimetype.assign = ( "" => "application/octet-stream" )
\$HTTP["url"] =~ "^/p/" {
	proxy.server = ( "" => (( "host" => "127.0.0.1", "port" => $bport )) )
	proxy.header = ( "map-urlpath" => ( "/p/" => "/" ) )
}
CONF
start_server backend python3 -m http.server "$bport" --bind 127.0.0.1 --directory "$T/back"
wait_listen "$bport" "$LAST_PID"
start_server server lighttpd -D -f "$T/lighttpd.conf"
srv=$LAST_PID
wait_listen "$port" "$srv"
url=http://127.0.0.1:$port

for i in 1 2 3 4; do
	run_client "curl-proxy-$i" 20 curl -sS --fail -o "$T/got-$i" "$url/p/f32m" ||
		fail "GET /p/f32m #$i through the proxy exited with status $? (20 s: a stall?)"
	same_file "$T/back/f32m" "$T/got-$i" "GET /p/f32m #$i through lighttpd's proxy"
done
say "32 MiB through lighttpd's proxy, 4 times: intact"
[ "$APPS_TCP" = 1 ] || [ "$(count_upgraded "$T/backend.log")" -ge 1 ] ||
	fail "no backend connection moved: $(head -c 300 "$T/backend.log")"

run_client wrk 30 wrk -t 2 -c 64 -d 3s "$url/f1m" >"$T/wrk.out" 2>&1 ||
	fail "wrk exited with status $?: $(tail -n 3 "$T/wrk.out")"
reqs=$(awk '/requests in/ { print $1 }' "$T/wrk.out")
[ "${reqs:-0}" -gt 64 ] || fail "wrk made ${reqs:-no} requests: $(cat "$T/wrk.out")"
left=
for ((i = 0; i < 50; i++)); do
	left=$(ss -Htan state close-wait "( sport = :$port )" | wc -l)
	[ "$left" = 0 ] && break
	sleep 0.1
done
[ "$left" = 0 ] || fail "$left of lighttpd's connections still in CLOSE-WAIT 5 s after wrk's exit"
[ "$APPS_TCP" = 1 ] || [ "$(count_upgraded "$T/server.log")" -ge 64 ] ||
	fail "under 64 of lighttpd's connections moved: $(count_upgraded "$T/server.log")"
say "wrk: $reqs requests of 1 MiB on 64 connections; none left in CLOSE-WAIT after its exit"
say pass
