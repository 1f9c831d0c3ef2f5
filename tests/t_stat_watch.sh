#!/usr/bin/env bash
# t_stat_watch: `shunt stat --watch` refreshes in place in a terminal, like
# top.  With a server and three clients under `shunt run`, it runs in a
# pseudo-terminal (script(1)) of 100x40, then of 100x6, until it has drawn
# 3 frames (20 s at most):
#  - frames a second apart on the clock, the first
#    clearing the screen and each later one
#    starting with the cursor home (no clear: nothing flickers), every line
#    erasing the rest of itself, each frame erasing what lies below it;
#  - a frame never has more lines than the window less the row where the
#    cursor rests (in the small one, the last line says how many more);
#  - each frame lists the server's process by pid (the window that fits);
# and through a pipe, frames of plain text without a single escape.
set -euo pipefail
build=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
shunt=$build/shunt
T=$(mktemp -d "${TMPDIR:-/tmp}/shunt-watch-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$T"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*"
	exit 1
}
say() { echo "stat_watch: $*"; }
for c in script python3 timeout; do
	command -v "$c" >/dev/null || { echo "skip: $c is not installed"; exit 77; }
done
[ -x "$shunt" ] || fail "no $shunt (make first)"
export SHUNT_DIR=$T/dir SHUNT_CONFIG=$T/empty.conf
: >"$SHUNT_CONFIG"

# A server and three clients that stay connected, all under shunt run, so
# that each has the library's arena for stat to find.
cat >"$T/server.py" <<'EOF'
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conns = [s.accept()[0] for _ in range(3)]
time.sleep(60)
EOF
cat >"$T/client.py" <<'EOF'
import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(60)
EOF
"$shunt" run -- python3 "$T/server.py" "$T/port" >"$T/server.out" 2>&1 &
server=$!
pids+=("$server")
for ((i = 0; i < 100; i++)); do [ -s "$T/port" ] && break; sleep 0.05; done
[ -s "$T/port" ] || fail "the server did not start: $(cat "$T/server.out")"
for i in 1 2 3; do
	"$shunt" run -- python3 "$T/client.py" "$(cat "$T/port")" >"$T/client$i.out" 2>&1 &
	pids+=($!)
done
# Until a plain `shunt stat` lists all four.
for ((i = 0; i < 100; i++)); do
	"$shunt" stat >"$T/stat.out"
	n=0
	for p in "${pids[@]}"; do
		grep -q "^ *$p " "$T/stat.out" && n=$((n + 1))
	done
	[ $n = 4 ] && break
	sleep 0.05
done
[ $n = 4 ] || fail "shunt stat lists $n of the 4 processes: $(cat "$T/stat.out")"

# watch ROWS FILE: --watch in a terminal of 100xROWS until it has drawn 3
# whole frames (each ends erasing below it), at most 20 s: a scan of every
# process's fds, as root on a busy host, can take more than a second.
watch() {
	timeout -s INT 20 script -qfec "stty rows $1 cols 100; exec '$shunt' stat --watch" /dev/null \
		>"$2" 2>&1 </dev/null &
	local pid=$! i
	for ((i = 0; i < 200; i++)); do
		[ "$(grep -o $'\033\\[J' "$2" | wc -l)" -ge 3 ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# check FILE ROWS: the frames in FILE, as the header above says.
check() {
	python3 - "$1" "$2" "$server" <<'EOF'
import re, sys
data = open(sys.argv[1], "rb").read().decode("utf-8", "replace").replace("\r", "")
rows, server = int(sys.argv[2]), sys.argv[3]
def bad(msg):
    print("FAIL: %d rows: %s" % (rows, msg)); print(repr(data[:600])); sys.exit(1)
first = data.find("\x1b[H\x1b[2J")
if first < 0:
    bad("the first frame does not clear the screen")
if data.count("\x1b[2J") != 1:
    bad("%d screen clears: only the first frame may clear" % data.count("\x1b[2J"))
frames = data[first + len("\x1b[H\x1b[2J"):].split("\x1b[H")
# A whole frame ends erasing below it; what follows the last one (the
# interrupt) is not a frame's, and a frame cut by it is not whole.
frames = [f[: f.rindex("\x1b[J") + 3] for f in frames if "\x1b[J" in f]
if len(frames) < 3:
    bad("%d whole frames in 20 s, not 3 or more" % len(frames))
cut = 0
for n, f in enumerate(frames):
    body = f[: -len("\x1b[J")]
    lines = body.split("\n")
    if lines[-1] == "":
        lines.pop()
    # The cursor rests on the last row: a newline there would scroll.
    if len(lines) > rows - 1:
        bad("frame %d has %d lines, more than the %d rows less the cursor's" % (n, len(lines), rows))
    for l in lines:
        if not l.endswith("\x1b[K"):
            bad("frame %d: a line that does not erase the rest of itself: %r" % (n, l))
    text = [l[: -len("\x1b[K")] for l in lines]
    if not text[0].startswith("shunt stat, "):
        bad("frame %d starts with %r" % (n, text[0]))
    if re.search(r"\x1b", "".join(text)):
        bad("frame %d: an escape inside the text" % n)
    if text[-1].startswith("... ") and "more lines" in text[-1]:
        cut += 1
        if len(lines) != rows - 1:
            bad("frame %d is cut at %d lines, not at the window's %d less one" % (n, len(lines), rows))
    elif not any(re.match(r"^ *%s " % server, t) for t in text):
        bad("frame %d, not cut, does not list the server (pid %s)" % (n, server))
print("stat_watch: %d rows: %d frames, %d cut to the window, each in place" % (rows, len(frames), cut))
if rows < 8 and cut != len(frames):
    bad("the small window's frames must all be cut")
EOF
}

watch 40 "$T/big.tty"
check "$T/big.tty" 40 || exit 1
watch 6 "$T/small.tty"
check "$T/small.tty" 6 || exit 1

# Through a pipe: plain text, a frame a second.
"$shunt" stat --watch >"$T/pipe.out" 2>&1 </dev/null &
wpid=$!
for ((i = 0; i < 200; i++)); do
	[ "$(grep -c '^shunt stat, ' "$T/pipe.out")" -ge 2 ] && break
	sleep 0.1
done
kill "$wpid" 2>/dev/null || true
wait "$wpid" 2>/dev/null || true
grep -q $'\033' "$T/pipe.out" && fail "an escape in --watch's output to a pipe"
n=$(grep -c '^shunt stat, ' "$T/pipe.out" || true)
[ "$n" -ge 2 ] || fail "$n frames through a pipe in 20 s"
grep -q "^ *$server " "$T/pipe.out" || fail "the pipe's frames do not list the server"
say "through a pipe: $n frames of plain text"
say ok
