#!/usr/bin/env bash
# t_apps_zmq: ZeroMQ under shunt (tests/apps_zmq.py, Python's pyzmq over
# libzmq).
#
# libzmq moves every message in I/O threads of its own, each an epoll loop,
# which the calling thread reaches through eventfd mailboxes; ZMTP frames
# the messages on each TCP connection.  A ROUTER server answers 4 DEALERs
# (2000 requests of 1 B to 1 MiB, each answer checked) and hashes a PUSH
# stream of 2000 messages in order; the client checks the hash.  Each of
# the 5 connections must move at both ends.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init zmq
# Debian's python3-zmq is for Debian's python3, which may not be the first
# python3 on the PATH (a pyenv's).
py=
for p in python3 /usr/bin/python3; do
	if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import zmq' 2>/dev/null; then
		py=$p
		break
	fi
done
[ -n "$py" ] || skip "no python3 with the zmq module (python3-zmq)"

: >"$T/file"
script_pair "$py" "$APPS_SRC/tests/apps_zmq.py"
say "2000 requests and a stream of 2000 messages: every answer and the stream's hash intact"
assert_accelerated 5 "$T/client.log"
assert_accelerated 5 "$T/server.log"
say "pass"
