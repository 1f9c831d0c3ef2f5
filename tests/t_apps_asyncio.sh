#!/usr/bin/env bash
# t_apps_asyncio: CPython's asyncio under shunt (tests/apps_asyncio.py).
#
# One event loop per process, all sockets non-blocking over epoll
# (selectors): a server of asyncio streams and a client that drives 8
# connections at once from one thread (300 echo round trips each, 4 MiB up
# in pieces with drain(), hashed, 3 MiB written whole and drained before
# its echo is read (both ends' rings full: back to TCP, whose buffers hold
# it), and a 4 MiB file down by loop.sendfile(), which is os.sendfile).
# Readers and writers register and unregister with epoll as their buffers
# fill and drain: the library's epoll carries all of it.  Every answer is
# checked by the client; the 8 connections move at both ends.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init asyncio
need python3

py=$APPS_SRC/tests/apps_asyncio.py
rand_file "$T/file" $((4 << 20))
script_pair python3 "$py"
say "8 connections from one event loop: every echo, sum and file intact"
assert_accelerated 8 "$T/client.log"
assert_accelerated 8 "$T/server.log"
say "pass"
