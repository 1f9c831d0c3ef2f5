#!/usr/bin/env bash
# t_apps_nginx: nginx (a master and 2 workers, sendfile on, a private
# config) and its clients under shunt.  curl fetches a random 4 KiB and a
# random 5 MiB file, separately and both over one kept-alive connection,
# and PUTs a random 1 MiB file that is then read back (WebDAV); the
# checksums must match the originals.  Then wrk drives 8 kept-alive connections for 2 s:
# requests must complete, with no socket error and no non-2xx answer.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init nginx
need nginx curl wrk

port=$(free_port)
mkdir -p "$T/www/up" "$T/tmp"
rand_file "$T/www/small" 4096
rand_file "$T/www/big" $((5 << 20))
chmod 755 "$T/www"
chmod 777 "$T/www/up" "$T/tmp" # nginx workers write here
chmod 644 "$T/www/small" "$T/www/big"

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
}
EOF
# -e: nginx opens its default error log before reading the config.
start_server server nginx -p "$T" -c "$T/nginx.conf" -e "$T/error.out"
srv=$LAST_PID
wait_listen "$port" "$srv"
url=http://127.0.0.1:$port

# One connection per file.
for f in small big; do
	run_client "curl-$f" 20 curl -sS --fail -o "$T/got-$f" "$url/$f" ||
		fail "curl $f exited with status $?"
	same_file "$T/www/$f" "$T/got-$f" "GET /$f"
done
say "GET /small (4 KiB) and /big (5 MiB): intact"

# Both files, 3 times, on one kept-alive connection (curl reuses it).
args=()
for i in 1 2 3; do
	args+=(-o "$T/ka-small-$i" "$url/small" -o "$T/ka-big-$i" "$url/big")
done
run_client curl-ka 30 curl -sS --fail -w '%{num_connects}\n' "${args[@]}" >"$T/ka.out" ||
	fail "keep-alive curl exited with status $?"
for i in 1 2 3; do
	same_file "$T/www/small" "$T/ka-small-$i" "keep-alive GET /small #$i"
	same_file "$T/www/big" "$T/ka-big-$i" "keep-alive GET /big #$i"
done
conns=$(awk '{ s += $1 } END { print s }' "$T/ka.out")
[ "$conns" = 1 ] || fail "keep-alive curl made $conns connections, expected 1"
say "6 GETs on one kept-alive connection: intact"

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

# wrk: 2 threads, 8 kept-alive connections, 2 s, the 4 KiB file.
run_client wrk 20 wrk -t 2 -c 8 -d 2s "$url/small" >"$T/wrk.out" 2>&1 ||
	fail "wrk exited with status $?"
reqs=$(awk '/requests in/ { print $1 }' "$T/wrk.out")
rps=$(awk '/^Requests\/sec:/ { print $2 }' "$T/wrk.out")
say "wrk -c 8: $reqs requests, $rps requests/s"
[ "${reqs:-0}" -gt 100 ] || fail "wrk completed ${reqs:-no} requests"
! grep -E 'Socket errors|Non-2xx' "$T/wrk.out" || fail "wrk saw errors"
# wrk's bytes: every response carries the 4 KiB body.
transfer=$(awk '/requests in/ { print $5 }' "$T/wrk.out")
case $transfer in *MB | *GB) ;; *) fail "wrk read only $transfer for $reqs requests" ;; esac

kill -0 "$srv" 2>/dev/null || fail "nginx died"
! grep -E '\[(alert|crit|emerg)\]' "$T/error.out" || fail "nginx logged an alert"
# Each worker's first accept may precede its rendezvous; the rest upgrade.
assert_accelerated 1 "$T/server.log"
assert_accelerated 1 "$T/curl-big.log"
assert_accelerated 1 "$T/curl-ka.log"
assert_accelerated 4 "$T/wrk.log"
say pass
