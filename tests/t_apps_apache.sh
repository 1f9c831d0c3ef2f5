#!/usr/bin/env bash
# t_apps_apache: Apache httpd with the event MPM (2 processes of 25
# threads sharing one listener (with 8 threads each, wrk's connections saw
# read errors over plain TCP now and then: a busy process closes kept-alive
# connections), started as root, its workers switching to
# www-data, which makes them non-dumpable: their /proc/PID/fd is closed to
# the clients), sendfile on, and its lingering close (shutdown(SHUT_WR),
# then reads until the client's end of stream), under shunt:
#  * the workers cannot prove themselves through /proc: the config file
#    names www-data (the clients trust the workers' user) and root (the
#    workers, which may not look at root's fds, trust the clients' user)
#  * curl fetches a random 4 KiB and a random 5 MiB file 3 times over one
#    kept-alive connection: intact, one connection, moved at both ends
#  * wrk drives 8 kept-alive connections for 2 s: no socket error, no
#    non-2xx answer, all 8 moved at both ends, and over one second of it
#    the kernel's TCP sockets carry under 1/20 of what wrk read
#  * wrk without keep-alive for 1 s (each connection closed by Apache's
#    lingering close): no error, nothing moved (short)
#  * curl without shunt, a plain client of the shunt server: intact
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init apache
need apache2 curl wrk
[ "$(id -u)" -eq 0 ] || skip "needs root (Apache's workers switch to www-data)"
id www-data >/dev/null 2>&1 || skip "no user www-data"
modules=/usr/lib/apache2/modules
[ -f "$modules/mod_mpm_event.so" ] || skip "no $modules/mod_mpm_event.so"

printf 'allow-user www-data root\n' >"$T/shunt.conf"
port=$(free_port)
mkdir -p "$T/www" "$T/run"
rand_file "$T/www/small" 4096
rand_file "$T/www/big" $((5 << 20))
chmod 755 "$T/www"
chmod 644 "$T/www/small" "$T/www/big" "$T/shunt.conf"
cat >"$T/httpd.conf" <<EOF
ServerRoot /usr/lib/apache2
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule mime_module $modules/mod_mime.so
TypesConfig /etc/mime.types
Listen 127.0.0.1:$port
PidFile $T/run/httpd.pid
DefaultRuntimeDir $T/run
ErrorLog $T/error.out
LogLevel warn
DocumentRoot $T/www
ServerName localhost
User www-data
Group www-data
StartServers 2
ServerLimit 2
ThreadsPerChild 25
MaxRequestWorkers 50
MinSpareThreads 10
MaxSpareThreads 50
MaxKeepAliveRequests 0
EnableSendfile On
<Directory $T/www>
	Require all granted
</Directory>
EOF
start_server server apache2 -f "$T/httpd.conf" -DFOREGROUND
srv=$LAST_PID
wait_listen "$port" "$srv"
url=http://127.0.0.1:$port

# Both files, 3 times, on one kept-alive connection.
fetch_kept_alive curl-ka "$url" small big
assert_accelerated 1 "$T/curl-ka.log"
assert_accelerated 1 "$T/server.log"
! grep -q 'refused' "$T/curl-ka.log" "$T/server.log" ||
	fail "a meeting was refused: $(grep -h refused "$T/curl-ka.log" "$T/server.log" | head -n 2)"

# wrk: 8 kept-alive connections, 2 s, the 4 KiB file.
wrk_kept_alive "$url/small" "$port"

# Without keep-alive: Apache ends each connection with its lingering
# close; a few calls each, which stay on TCP.
run_client wrk-close 20 wrk -t 2 -c 8 -d 1s -H 'Connection: close' "$url/small" >"$T/wrk-close.out" 2>&1 ||
	fail "wrk (Connection: close) exited with status $?"
reqs=$(awk '/requests in/ { print $1 }' "$T/wrk-close.out")
say "wrk -c 8, Connection: close: $reqs requests"
[ "${reqs:-0}" -gt 50 ] || fail "wrk (Connection: close) completed ${reqs:-no} requests"
! grep -E 'Socket errors|Non-2xx' "$T/wrk-close.out" || fail "wrk (Connection: close) saw errors"
assert_not_accelerated "$T/wrk-close.log"

# A plain client of the shunt server.
timeout 20 curl -sS --fail -o "$T/plain-big" "$url/big" -o "$T/plain-small" "$url/small" ||
	fail "plain curl exited with status $?"
same_file "$T/www/big" "$T/plain-big" "GET /big by a client without shunt"
same_file "$T/www/small" "$T/plain-small" "GET /small by a client without shunt"

kill -0 "$srv" 2>/dev/null || fail "apache2 died"
! grep -E '\[[a-z_]*:(alert|crit|emerg)\]' "$T/error.out" || fail "apache2 logged an alert"
say pass
