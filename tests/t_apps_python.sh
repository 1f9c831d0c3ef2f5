#!/usr/bin/env bash
# t_apps_python: CPython under shunt.
#
# 1. tests/apps_python.py, a threaded socket server and a client: 500 echo
#    round trips through makefile(), 4 MiB up by sendall() (hashed), a
#    4 MiB file down by socket.sendfile() and again by a `cat` child
#    writing straight into the socket, a close_fds=True child on each end
#    (vfork and close_range) with the connection open and 50 round trips
#    after it; then a second connection that the client closes while the
#    server still sends: the first send must succeed and a later one fail
#    with EPIPE or ECONNRESET, as over TCP.
# 2. The standard library's own test
#    test.test_socket.NetworkConnectionBehaviourTest.testOutsideTimeout (the
#    Debian package libpython3.X-testsuite): a client whose recv() times out
#    and closes, and a server that sends to it 3 s later; over TCP that send
#    succeeds.  Both ends are threads of one process.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init python
need python3 cat

# The interpreter itself (not a wrapper such as pyenv's shim), and one that
# has the test suite if any has.
py=
for cand in python3 /usr/bin/python3; do
	exe=$("$cand" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
	[ -n "$py" ] || py=$exe
	if "$exe" -c 'import test.test_socket' 2>/dev/null; then
		py=$exe
		break
	fi
done
[ -n "$py" ] || skip "no working python3"
"$py" -c 'import test.test_socket' 2>/dev/null ||
	skip "$py has no test.test_socket (install libpython3.$("$py" -c 'import sys; print(sys.version_info[1])')-testsuite)"
say "$py, $("$py" -V 2>&1)"

# 1. apps_python.py: a server and a client.
rand_file "$T/file" $((4 << 20))
port=$(free_port)
start_server server "$py" "$APPS_SRC/tests/apps_python.py" server "$port" "$T/file"
srv=$LAST_PID
for ((i = 0; i < 200; i++)); do
	grep -qx ready "$T/server.out" && break
	kill -0 "$srv" 2>/dev/null || fail "the server exited before it was ready"
	sleep 0.05
done
grep -qx ready "$T/server.out" || fail "the server is not ready after 10 s"
run_client client 40 "$py" "$APPS_SRC/tests/apps_python.py" client "$port" "$T/file" \
	>"$T/client.out" 2>&1 || fail "the client exited with status $? ($(tail -n1 "$T/client.out"))"
sed "s/^/$APPS_NAME: /" "$T/client.out"
# The server reports on the send after the client's close when it is done.
for ((i = 0; i < 100; i++)); do
	grep -q '^after-close:' "$T/server.out" && break
	sleep 0.05
done
res=$(grep '^after-close:' "$T/server.out") || fail "the server did not report its sends after the client's close"
case $res in
"after-close: ok"*) say "server, sends after the client's close: ${res#after-close: ok: }" ;;
*) fail "server, sends after the client's close: ${res#after-close: FAIL: }" ;;
esac
! grep -q '^server:' "$T/server.out" || fail "the server reported: $(grep -m1 '^server:' "$T/server.out")"
kill -0 "$srv" 2>/dev/null || fail "the server died"

# 2. The standard library's test, both ends in one process.
id=test.test_socket.NetworkConnectionBehaviourTest.testOutsideTimeout
run_client stdlib 30 "$py" -m unittest -v "$id" >"$T/stdlib.out" 2>&1 ||
	fail "$id: status $? ($(grep -m1 -E '^[A-Za-z.]+(Error|Exception)' "$T/stdlib.out" || tail -n1 "$T/stdlib.out"))"
grep -q '^OK' "$T/stdlib.out" || fail "$id: no OK in its output"
say "$id: ok"

# The stdlib test's connection carries one 5-byte message: too little to
# move, so it is not checked.  Both connections of the script moved.
assert_accelerated 2 "$T/server.log"
assert_accelerated 2 "$T/client.log"
say pass
