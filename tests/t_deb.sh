#!/usr/bin/env bash
# t_deb: the Debian package, as a user meets it.
#  1. tools/mkdeb.sh (`make deb`) builds it; it holds the library with its
#     soname link, the static library, the preload library, the CLI, the
#     header, shunt.pc, every manual page and the example config;
#  2. dpkg -i installs it; pkg-config --cflags --libs shunt answers; a tiny
#     native-API program compiled with only what pkg-config says (no path
#     into this tree) echoes 1 MiB between two processes, linked to
#     /usr/lib/libshunt.so.0 by the loader, and again linked statically;
#  3. the installed /usr/bin/shunt run (its preload library found in
#     /usr/lib, as the maps of the server show) carries 16 MiB from a Python
#     client to an unmodified Python server and back, checked by sha256, and
#     both ends' logs say the connection moved; man finds shunt(7);
#  4. dpkg -r then dpkg --purge: every path dpkg -L listed is gone, the
#     loader's cache has forgotten libshunt, dpkg knows no shunt.
# Needs root and dpkg; skips when a shunt package is installed already or
# a file it ships exists (it will not touch what it did not install).
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1
src=$APPS_SRC

apps_init deb
need dpkg dpkg-deb pkg-config gcc python3 objdump
[ "$(id -u)" -eq 0 ] || skip "dpkg -i needs root"
if dpkg-query -W -f='${Status}' shunt 2>/dev/null | grep -c 'installed' >/dev/null; then
	skip "a shunt package is installed on this machine already; not touching it"
fi

# --- 1. Build -------------------------------------------------------------
deb=$("$src/tools/mkdeb.sh" "$SHUNT_BUILD" "$T") || fail "tools/mkdeb.sh failed"
[ -f "$deb" ] || fail "mkdeb printed '$deb', which is not a file"
say "built ${deb##*/} ($(($(stat -c %s "$deb") / 1024)) KiB)"
dpkg-deb -c "$deb" | awk '{ print $6 ($7 == "->" ? " -> " $8 : "") }' | sed 's|^\./|/|' >"$T/contents"
want=(/usr/bin/shunt /usr/lib/libshunt.so.0.1 "/usr/lib/libshunt.so.0 -> libshunt.so.0.1"
	"/usr/lib/libshunt.so -> libshunt.so.0" /usr/lib/libshunt.a /usr/lib/libshunt-preload.so
	/usr/include/shunt.h /usr/lib/pkgconfig/shunt.pc /usr/share/doc/shunt/examples/shunt.conf
	/usr/share/man/man1/shunt.1.gz /usr/share/man/man5/shunt.conf.5.gz
	/usr/share/man/man7/shunt.7.gz /usr/share/man/man3/shunt.3.gz)
for p in "$src"/man/*.3; do want+=("/usr/share/man/man3/${p##*/}.gz"); done
for w in "${want[@]}"; do
	grep -qxF "$w" "$T/contents" || fail "the package lacks $w"
done
say "it holds the ${#want[@]} paths expected (of $(grep -vc '/$' "$T/contents") files and links)"
# It must not overwrite anything dpkg does not own: skip if a file exists.
while read -r p _; do
	case $p in */) continue ;; esac
	if [ -e "$p" ] || [ -L "$p" ]; then
		skip "$p exists already (not from a package); not overwriting it"
	fi
done <"$T/contents"

# --- 2. Install, pkg-config, a program built against it ----------------------
APPS_CLEANUP+=("dpkg --purge shunt")
dpkg -i "$deb" >"$T/dpkg-i.out" 2>&1 || fail "dpkg -i: $(tail -n 3 "$T/dpkg-i.out")"
dpkg -L shunt >"$T/listed"
say "installed: dpkg -L lists $(wc -l <"$T/listed") paths"
pc=$(env -u PKG_CONFIG_PATH pkg-config --cflags --libs shunt) || fail "pkg-config --cflags --libs shunt failed"
say "pkg-config --cflags --libs shunt: $pc"
case " $pc " in *" -lshunt "*) ;; *) fail "pkg-config says '$pc', without -lshunt" ;; esac
ver=$(pkg-config --modversion shunt)
[ "$ver" = "$(sed -n 's/^#define SHUNT_VERSION_MAJOR //p' "$src/include/shunt.h").$(sed -n 's/^#define SHUNT_VERSION_MINOR //p' "$src/include/shunt.h")" ] ||
	fail "pkg-config --modversion says $ver"

cat >"$T/tiny.c" <<'EOF'
/* A native-API echo: the child connects and sends 1 MiB, the parent
 * accepts and echoes it, the child checks every byte. */
#include <shunt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (1 << 20)

static int client(const char *name)
{
	struct shunt_conn *c;
	static unsigned char out[TOTAL], in[TOTAL];
	size_t got = 0;

	for (int i = 0; i < 200 && shunt_connect(name, NULL, &c) < 0; i++)
		usleep(10000);
	for (size_t i = 0; i < TOTAL; i++)
		out[i] = (unsigned char)(i * 7 + i / 251);
	for (size_t sent = 0; sent < TOTAL;) {
		ssize_t n = shunt_send(c, out + sent, 4096, 0);
		if (n < 0)
			return 1;
		sent += (size_t)n;
		while (got < sent) {
			ssize_t k = shunt_recv(c, in + got, TOTAL - got, 0);
			if (k <= 0)
				return 1;
			got += (size_t)k;
		}
	}
	shunt_close(c);
	return memcmp(in, out, TOTAL) != 0;
}

int main(int argc, char **argv)
{
	struct shunt_listener *l;
	struct shunt_conn *c;
	char buf[65536];
	ssize_t n;
	long total = 0;
	int st;

	if (argc != 2 || shunt_listen(argv[1], &l) < 0)
		return 2;
	pid_t pid = fork();
	if (pid == 0)
		_exit(client(argv[1]));
	if (shunt_accept(l, &c, 0) < 0)
		return 3;
	while ((n = shunt_recv(c, buf, sizeof(buf), 0)) > 0) {
		if (shunt_send(c, buf, (size_t)n, 0) != n)
			return 4;
		total += n;
	}
	shunt_close(c);
	shunt_listener_close(l);
	waitpid(pid, &st, 0);
	printf("echoed %ld bytes, the client %s\n", total,
	       WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "checked every one" : "FAILED");
	return !(WIFEXITED(st) && WEXITSTATUS(st) == 0 && total == TOTAL);
}
EOF
# shellcheck disable=SC2086
gcc -Wall -Werror -o "$T/tiny" "$T/tiny.c" $(pkg-config --cflags --libs shunt) 2>"$T/cc.err" ||
	fail "gcc with pkg-config's flags: $(cat "$T/cc.err")"
# The loader's choice, followed to the file (/lib is /usr/lib on a
# merged-/usr system).
ldd "$T/tiny" >"$T/ldd.out" 2>&1 || fail "ldd tiny: $(cat "$T/ldd.out")"
got=$(awk '$1 == "libshunt.so.0" { print $3 }' "$T/ldd.out")
[ -n "$got" ] && [ "$(readlink -f "$got")" = /usr/lib/libshunt.so.0.1 ] ||
	fail "tiny is not linked to /usr/lib/libshunt.so.0.1: $(cat "$T/ldd.out")"
out=$(cd "$T" && env -u LD_LIBRARY_PATH -u LD_PRELOAD timeout 20 ./tiny tiny-dyn) || fail "tiny (shared): $out"
say "pkg-config, shared library: $out"
# shellcheck disable=SC2086
gcc -Wall -Werror -o "$T/tiny-static" "$T/tiny.c" $(pkg-config --cflags shunt) \
	-Wl,-Bstatic $(pkg-config --static --libs-only-l shunt | sed 's/-lpthread//') -Wl,-Bdynamic -lpthread 2>"$T/cc.err" ||
	fail "gcc with libshunt.a: $(cat "$T/cc.err")"
ldd "$T/tiny-static" | grep -c libshunt >/dev/null && fail "tiny-static still needs libshunt.so"
out=$(cd "$T" && timeout 20 ./tiny-static tiny-static) || fail "tiny (static): $out"
say "static library: $out"

# --- 3. The installed shunt run -----------------------------------------------
# Each direction in its turn: a Python echo with a sending and a receiving
# thread at once sometimes ends in a reset under shunt (reported; not what
# this test is about).
cat >"$T/server.py" <<'EOF'
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
open(sys.argv[2], "w").write("%d %s\n" % (n, h.hexdigest()))
data = open(sys.argv[3], "rb").read()
for i in range(0, len(data), 65536):
    c.sendall(data[i:i + 65536])
c.close()
EOF
cat >"$T/client.py" <<'EOF'
import socket, sys
data = open(sys.argv[2], "rb").read()
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(0, len(data), 65536):
    c.sendall(data[i:i + 65536])
c.shutdown(socket.SHUT_WR)
with open(sys.argv[3], "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        f.write(b)
EOF
rand_file "$T/in" $((16 << 20))
port=$(free_port)
env -u SHUNT_PRELOAD -u LD_PRELOAD SHUNT_LOG=info SHUNT_LOG_FILE="$T/server.log" \
	/usr/bin/shunt run -- python3 "$T/server.py" "$port" "$T/digest" "$T/in" >"$T/server.out" 2>&1 </dev/null &
srv=$!
APPS_PIDS+=("$srv")
wait_listen "$port" "$srv" 10
grep -q ' /usr/lib/libshunt-preload.so$' "/proc/$srv/maps" ||
	fail "the server does not map /usr/lib/libshunt-preload.so"
env -u SHUNT_PRELOAD -u LD_PRELOAD SHUNT_LOG=info SHUNT_LOG_FILE="$T/client.log" \
	timeout 60 /usr/bin/shunt run -- python3 "$T/client.py" "$port" "$T/in" "$T/out" ||
	fail "the client exited with status $?"
wait "$srv" || fail "the server exited with status $?"
[ "$(cat "$T/digest")" = "$((16 << 20)) $(sha "$T/in")" ] ||
	fail "the server received $(cat "$T/digest"), not the 16 MiB sent"
same_file "$T/in" "$T/out" "16 MiB sent back through /usr/bin/shunt run"
say "16 MiB to the server and back, intact, through /usr/bin/shunt run"
assert_accelerated 1 "$T/server.log"
assert_accelerated 1 "$T/client.log"
if command -v man >/dev/null; then
	man -w shunt.conf >/dev/null 2>&1 && man -w 7 shunt >/dev/null 2>&1 ||
		fail "man does not find shunt.conf(5) or shunt(7)"
	say "man finds shunt.conf(5) and shunt(7)"
fi

# --- 4. Remove, purge: nothing left -------------------------------------------
dpkg -r shunt >"$T/dpkg-r.out" 2>&1 || fail "dpkg -r: $(tail -n 3 "$T/dpkg-r.out")"
dpkg --purge shunt >"$T/dpkg-purge.out" 2>&1 || fail "dpkg --purge: $(tail -n 3 "$T/dpkg-purge.out")"
left=0
while read -r p; do
	case $p in
	/. | /usr | /usr/bin | /usr/lib | /usr/include | /usr/share | /usr/share/doc | /usr/share/man | \
		/usr/share/man/man[0-9] | /usr/lib/pkgconfig) continue ;; # shared with other packages
	esac
	if [ -e "$p" ] || [ -L "$p" ]; then
		echo "left behind: $p"
		left=$((left + 1))
	fi
done <"$T/listed"
[ "$left" = 0 ] || fail "$left path(s) of the package are still there after dpkg --purge"
if dpkg-query -W -f='${Status}' shunt 2>/dev/null | grep -c 'installed\|config-files' >/dev/null; then
	fail "dpkg still knows shunt: $(dpkg-query -W -f='${Status}' shunt)"
fi
ldconfig -p >"$T/ldconfig.out"
grep libshunt "$T/ldconfig.out" && fail "the loader's cache still lists libshunt"
say "removed and purged: none of the $(wc -l <"$T/listed") paths is left, ldconfig forgot libshunt"
say ok
