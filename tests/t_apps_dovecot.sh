#!/usr/bin/env bash
# t_apps_dovecot: Dovecot's IMAP server and a Python IMAP client, both under
# shunt.  The login process (user dovenull) reads LOGIN, then hands the
# connection to a mail process (SCM_RIGHTS through the master): the
# connection goes back to TCP first.  The client logs in after 40 NOOPs
# (its connection moves during them), sends LOGIN and makes no call for 6 s
# before it reads the answer, as a user's client does while its user
# reads.  The hand-over waited 5 s for an answer that the idle client
# could not give, then reset the connection: the client read ECONNRESET
# and the mail process logged "write(client) failed: Connection reset by
# peer".  Now the login process answers for the client (docs/design.md,
# "Answering for an idle peer").  Then the session stores a random 256 KiB
# message (APPEND) and fetches it back, byte for byte.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init dovecot
need python3
[ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ] ||
	skip "dovecot is not installed (dovecot-imapd)"
[ "$(id -u)" -eq 0 ] || skip "not root: dovecot's login processes change their user"
id dovenull >/dev/null 2>&1 || skip "no user dovenull (dovecot-core makes it)"

# The login process runs as dovenull, the mail process as nobody, the
# client as root: each may meet the others.  Dovecot clears its children's
# environment but for what import_environment names.
printf 'allow-user dovenull\nallow-user nobody\nallow-user root\n' >"$T/shunt.conf"
chmod 1777 "$T" "$SHUNT_DIR"
for f in server client; do : >"$T/$f.log" && chmod 666 "$T/$f.log"; done
mkdir -p "$T/run" "$T/state" "$T/home/u"
chown -R nobody: "$T/home"
port=$(free_port)
cat >"$T/dovecot.conf" <<EOF
protocols = imap
listen = 127.0.0.1
base_dir = $T/run
state_dir = $T/state
log_path = $T/dovecot.out
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
import_environment = TZ LD_PRELOAD SHUNT_LOG SHUNT_LOG_FILE SHUNT_CONFIG SHUNT_DIR
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $T/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$T/home/%u
}
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    port = $port
  }
}
EOF
echo "u:{PLAIN}pw" >"$T/passwd"

cat >"$T/client.py" <<'EOF'
import os, socket, sys, time

port, idle = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(('127.0.0.1', port))
f = s.makefile('rb')

def answer(tag):
    while True:
        line = f.readline()
        if not line:
            sys.exit('client: end of stream while waiting for %r' % tag)
        if line.startswith(tag + b' '):
            if not line.startswith(tag + b' OK'):
                sys.exit('client: %r' % line)
            return line

def cmd(tag, text):
    s.sendall(tag + b' ' + text + b'\r\n')
    return answer(tag)

f.readline()
for i in range(40):
    cmd(b'n%d' % i, b'NOOP')
s.sendall(b'a LOGIN u pw\r\n')
t0 = time.monotonic()
time.sleep(idle)
answer(b'a')
late = time.monotonic() - t0 - idle
cmd(b'b', b'SELECT INBOX')
body = os.urandom(192 * 1024).hex().encode()[:256 * 1024]
msg = b'Subject: t\r\n\r\n' + b'\r\n'.join(body[i:i + 76] for i in range(0, len(body), 76)) + b'\r\n'
s.sendall(b'c APPEND INBOX {%d}\r\n' % len(msg))
if not f.readline().startswith(b'+'):
    sys.exit('client: no continuation for APPEND')
s.sendall(msg + b'\r\n')
answer(b'c')
cmd(b'd', b'SELECT INBOX')
s.sendall(b'e FETCH 1 BODY[]\r\n')
head = f.readline()
if not head.rstrip().endswith(b'{%d}' % len(msg)):
    sys.exit('client: FETCH said %r' % head[:80])
got = f.read(len(msg))
if got != msg:
    sys.exit('client: the message came back different')
answer(b'e')
cmd(b'z', b'LOGOUT')
print('client: ok, the answer to LOGIN came %.2f s after the client looked' % late)
EOF

start_server server /usr/sbin/dovecot -F -c "$T/dovecot.conf"
srv=$LAST_PID
wait_listen "$port" "$srv"
run_client client 40 python3 "$T/client.py" "$port" 6 >"$T/client.out" 2>&1 ||
	fail "the client exited with status $?: $(tail -n 3 "$T/client.out")"
grep -q "^client: ok" "$T/client.out" || fail "the client did not finish: $(tail -n 3 "$T/client.out")"
say "$(grep '^client: ok' "$T/client.out")"
assert_accelerated 1 "$T/client.log"
assert_accelerated 1 "$T/server.log"
! grep -E "reset|cannot go back" "$T/server.log" "$T/client.log" ||
	fail "a connection was reset"
grep -q "Connection reset" "$T/dovecot.out" && fail "dovecot logged a reset"
stop_server "$srv"
say "LOGIN answered after 6 s of an idle client, 256 KiB stored and fetched back intact"
say pass
