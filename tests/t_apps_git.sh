#!/usr/bin/env bash
# t_apps_git: git's own protocol (git://) between a git daemon and git
# clients, both under shunt.
#
# git daemon accepts each connection, forks and execs `git daemon --serve`
# with the socket as its stdin and stdout (dup2 onto 0 and 1 in the child),
# which runs `git upload-pack` (another fork and exec) on the same fds: the
# fd passes through two execs and stdio's numbers, and two processes hold
# it at once.  Such a socket never moves (the library cannot see what
# stdio does on 0 and 1, nor order two processes' writes), so the server's
# connections stay on TCP ("stays on TCP: stdio" or "shared"), and the
# client's too (its child holds the socket as well): what matters is that
# every byte arrives.  The repository: 40 commits over 300 files,
# 12 MiB of random blobs among them (a pack of some 12 MiB through the
# sideband).  Checked: a clone, then a fetch of 5 new commits into it, each
# verified by `git fsck --full` and the same tree as the source's; the
# daemon lives on.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init git
need git

export GIT_CONFIG_NOSYSTEM=1 HOME=$T GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t \
	GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t

# commits FROM TO: commits FROM..TO in $T/src, each changing a few files.
commits() {
	local c f
	for ((c = $1; c <= $2; c++)); do
		for ((f = 0; f < 30; f++)); do
			echo "commit $c file $f $RANDOM" >>"$T/src/dir$((f % 10))/f$((c * 7 % 300 + f)).txt"
		done
		git -C "$T/src" add -A
		git -C "$T/src" commit -q -m "commit $c"
	done
}

git init -q -b main "$T/src"
for ((d = 0; d < 10; d++)); do mkdir -p "$T/src/dir$d"; done
for ((b = 0; b < 12; b++)); do rand_file "$T/src/blob$b.bin" $((1 << 20)); done
commits 1 40
git -C "$T/src" config daemon.uploadpack true

port=$(free_port)
start_server daemon git daemon --reuseaddr --export-all --base-path="$T" \
	--listen=127.0.0.1 --port="$port" "$T"
srv=$LAST_PID
wait_listen "$port" "$srv"

# same_tree DIR WHAT: DIR's HEAD is the source's, its objects are whole,
# and its files are the source's.
same_tree() {
	git -C "$1" fsck --full --no-progress >"$T/fsck.out" 2>&1 ||
		fail "$2: git fsck failed: $(tail -n 3 "$T/fsck.out")"
	[ "$(git -C "$1" rev-parse HEAD)" = "$(git -C "$T/src" rev-parse HEAD)" ] ||
		fail "$2: HEAD differs from the source's"
	diff -r --exclude=.git "$T/src" "$1" >/dev/null || fail "$2: the files differ from the source's"
}

run_client clone 120 git clone -q "git://127.0.0.1:$port/src" "$T/clone" \
	>"$T/clone.out" 2>&1 || fail "git clone exited with status $?: $(tail -n 3 "$T/clone.out")"
same_tree "$T/clone" "the clone"
say "clone: 40 commits, 12 MiB of blobs, intact"

commits 41 45
run_client fetch 120 git -C "$T/clone" pull -q --ff-only >"$T/fetch.out" 2>&1 ||
	fail "git pull exited with status $?: $(tail -n 3 "$T/fetch.out")"
same_tree "$T/clone" "the fetch"
say "fetch: 5 more commits, intact"

kill -0 "$srv" 2>/dev/null || fail "the git daemon died"
# Each connection's socket was on stdin and stdout in the daemon's
# children, and held by two processes at once at either end (`git daemon
# --serve` and the upload-pack it runs; the client and a child): on TCP,
# and each end said why.
if [ "$APPS_TCP" != 1 ]; then
	assert_not_accelerated "$T/daemon.log" "$T/clone.log" "$T/fetch.log"
	n=$(grep -c "stays on TCP: \(stdio\|shared\)" "$T/daemon.log" || true)
	[ "$n" -ge 2 ] || fail "the daemon's log says why only $n of 2 connections stayed on TCP"
	for c in clone fetch; do
		grep -q "stays on TCP: " "$T/$c.log" || fail "$c: the client did not say why it stayed on TCP"
	done
	say "on TCP as they should be: $n connection(s) of the daemon said stdio or shared"
fi
say "pass"
