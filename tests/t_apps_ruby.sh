#!/usr/bin/env bash
# t_apps_ruby: Ruby under shunt (tests/apps_ruby.rb).
#
# A server with a Ruby thread per connection and a client of 4 threads:
# three each drive a connection (300 echo round trips, 8 MiB up hashed, a
# 4 MiB file down by IO.copy_stream, which is sendfile), and one drives two
# connections at once through IO.select.  Ruby's sockets are non-blocking
# underneath: its reads and writes that would block wait in ppoll() under
# the interpreter's lock, other Ruby threads running meanwhile, so the
# library's non-blocking paths and its poll carry all of it.  Every answer
# is checked by the client; each connection must move at both ends.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init ruby
need ruby

rb=$APPS_SRC/tests/apps_ruby.rb
rand_file "$T/file" $((4 << 20))
script_pair ruby "$rb"
say "5 connections: every echo, sum and file intact"
! grep -q "server:" "$T/server.out" || fail "the server said: $(grep -m 3 server: "$T/server.out")"
assert_accelerated 5 "$T/client.log"
assert_accelerated 5 "$T/server.log"
say "pass"
