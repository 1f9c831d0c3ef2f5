#!/usr/bin/env bash
# t_apps_tls: TLS over moved connections.  OpenSSL's own server
# (`openssl s_server -WWW`, one process, one connection at a time, a
# throwaway self-signed key) serves an 8 MiB random file; curl fetches it
# over HTTPS 3 times, both under shunt.  Every byte TLS carries goes through
# the rings once the connection moved (a record split across the switch
# fails its MAC, and curl exits with an error): each copy must equal the
# file, and each connection must have moved at both ends.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init tls
need openssl
need curl

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/key.pem" -out "$T/cert.pem" \
	-days 2 -subj /CN=localhost >"$T/req.out" 2>&1 || fail "openssl req: $(tail -n 2 "$T/req.out")"
mkdir -p "$T/www"
rand_file "$T/www/file.bin" $((8 << 20))

port=$(free_port)
# -WWW serves files relative to its working directory.
start_server server sh -c 'cd "$1" && shift && exec "$@"' sh "$T/www" \
	openssl s_server -quiet -WWW -accept "$port" -cert "$T/cert.pem" -key "$T/key.pem"
srv=$LAST_PID
wait_listen "$port" "$srv"

for i in 1 2 3; do
	run_client "client$i" 30 curl -sS -k -o "$T/got$i.bin" "https://127.0.0.1:$port/file.bin" \
		2>"$T/client$i.err" || fail "fetch $i: curl exited with status $? ($(head -c 300 "$T/client$i.err"))"
	same_file "$T/www/file.bin" "$T/got$i.bin" "fetch $i over TLS"
	assert_accelerated 1 "$T/client$i.log"
done
say "3 fetches of 8 MiB over TLS intact"
assert_accelerated 3 "$T/server.log"
kill -0 "$srv" 2>/dev/null || fail "the TLS server died"
say pass
