#!/usr/bin/env bash
# tools/mkdeb.sh BUILD_DIR OUT_DIR - the Debian package (`make deb`).
#
# Stages `make install PREFIX=/usr` of BUILD_DIR (the plain build), then
# builds OUT_DIR/shunt_VERSION_ARCH.deb with dpkg-deb alone (no debhelper,
# no fakeroot: --root-owner-group).  Prints the package's path.
#
# The package holds the library (libshunt.so.MAJOR.MINOR, its soname link
# and the development link, libshunt.a), libshunt-preload.so, the shunt
# CLI, shunt.h, shunt.pc for pkg-config, the manual pages (gzipped, as
# Debian has them) and /usr/share/doc/shunt (README, examples with an
# example shunt.conf).  Its version is the header's, with the commit's date
# and hash in a git tree (0.1+git20261202.5c3709f); it depends on the
# libc6 whose newest symbol version it uses.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: $0 BUILD_DIR OUT_DIR}" && pwd)
out=$(mkdir -p "${2:?usage: $0 BUILD_DIR OUT_DIR}" && cd "$2" && pwd)
for c in dpkg-deb dpkg objdump gzip; do
	command -v "$c" >/dev/null || { echo "mkdeb: $c is not installed (tests/deps.sh)" >&2; exit 1; }
done
case ${build##*/} in
*asan* | *tsan*) echo "mkdeb: $build is a sanitizer build; package the plain one" >&2; exit 1 ;;
esac

major=$(sed -n 's/^#define SHUNT_VERSION_MAJOR //p' "$src/include/shunt.h")
minor=$(sed -n 's/^#define SHUNT_VERSION_MINOR //p' "$src/include/shunt.h")
version=$major.$minor
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	version=$version+git$(git -C "$src" log -1 --format=%cd --date=format:%Y%m%d).$(git -C "$src" rev-parse --short=7 HEAD)
fi
arch=$(dpkg --print-architecture)

stage=$build/deb/shunt
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
# The build's own make, into the stage: no rebuild beyond what is stale.
make -s -C "$src" install B="$build" DESTDIR="$stage" PREFIX=/usr >/dev/null
doc=$stage/usr/share/doc/shunt
install -m 644 "$src/README.md" "$doc/README.md"
[ ! -f "$src/docs/containers.md" ] || install -m 644 "$src/docs/containers.md" "$doc/containers.md"
gzip -9n "$stage"/usr/share/man/man*/*
# An alias page (.so man3/x.3) must name the gzipped file's page, which
# man-db finds by its name without the suffix: nothing to change.

# libc6, as new as the newest GLIBC_ symbol version the binaries use.
glibc=$(objdump -T "$stage/usr/bin/shunt" "$stage/usr/lib/libshunt.so.$major.$minor" \
	"$stage/usr/lib/libshunt-preload.so" 2>/dev/null | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' |
	sed 's/GLIBC_//' | sort -uV | tail -n1)
[ -n "$glibc" ] || { echo "mkdeb: no GLIBC_ symbol version found (objdump -T)" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: shunt
Version: $version
Architecture: $arch
Maintainer: shunt developers <shunt@localhost>
Installed-Size: $size
Depends: libc6 (>= $glibc)
Section: net
Priority: optional
Description: TCP connections between local processes over shared memory
 shunt carries the bytes of ordinary TCP connections between programs on
 one host through lock-free rings in shared memory instead of the TCP/IP
 stack.  Programs are not changed: run them with "shunt run -- CMD" (an
 LD_PRELOAD library).  Connections to anything else stay on TCP.
 .
 This package holds the shunt command, the preload library, libshunt
 with its native API (shunt.h, pkg-config's shunt.pc, static and shared)
 and the manual pages: shunt(1), shunt(7), shunt.conf(5), shunt(3).
EOF
# The loader's cache learns of libshunt.so.0 when the package comes and
# forgets it when it goes.
echo "activate-noawait ldconfig" >"$stage/DEBIAN/triggers"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/control" "$stage/DEBIAN/triggers" "$stage/DEBIAN/md5sums"

deb=$out/shunt_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
