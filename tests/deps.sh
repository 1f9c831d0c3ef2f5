#!/usr/bin/env bash
# tests/deps.sh [--check | --list] - what the test suite needs, and its
# install (`make deps`, run by `make test` and .ci/run).
#
# The one place that lists the Debian packages the tests, `make bench`,
# `make deb` and .ci/run use.  With no option: looks for each, and if some
# are missing installs them with apt-get (non-interactive) when run as root;
# otherwise prints the exact apt-get command to run and exits 1.
#   --check  only report what is missing (exit 1 if anything is)
#   --list   print every package this script may install, one per line
#
# To add a tool, add "command:package" to NEEDED; anything that is not a
# command in PATH gets a check of its own below (see "Not commands").
set -uo pipefail
PATH=$PATH:/usr/sbin:/sbin

# command:package pairs.  A command missing from PATH means its package
# must be installed.
NEEDED=(
	gcc:gcc
	make:make
	timeout:coreutils
	setarch:util-linux
	unshare:util-linux
	flock:util-linux
	script:bsdutils
	awk:gawk
	git:git
	# The script tests (tests/t_*.sh) and tools/compare.sh: real programs
	# run under the preload library.  A missing one is a skip, which CI
	# counts as a failure.
	ps:procps
	sysctl:procps
	ss:iproute2
	ip:iproute2
	sha256sum:coreutils
	jq:jq
	iperf3:iperf3
	NPtcp:netpipe-tcp
	sockperf:sockperf
	redis-server:redis-server
	redis-cli:redis-tools
	redis-benchmark:redis-tools
	nginx:nginx
	wrk:wrk
	curl:curl
	openssl:openssl
	socat:socat
	haproxy:haproxy
	lighttpd:lighttpd
	vsftpd:vsftpd
	/usr/lib/dovecot/imap:dovecot-imapd
	useradd:passwd
	chpasswd:passwd
	memcached:memcached
	/usr/sbin/sshd:openssh-server
	ssh:openssh-client
	ssh-keygen:openssh-client
	node:nodejs
	java:openjdk-17-jdk-headless
	javac:openjdk-17-jdk-headless
	mpicc:libopenmpi-dev
	mpirun:openmpi-bin
	python3:python3
	ruby:ruby
	ab:apache2-utils
	apache2:apache2
	erl:erlang-base
	erlc:erlang-base
	setpriv:util-linux
	base64:coreutils
	md5sum:coreutils
	# (the PostgreSQL server, CPython's test suite, netbase, static libc,
	# libFuzzer's runtime and the sanitizer runtimes are checked below)
	# bench/run.sh (`make bench`): memcached's load generator.
	memcaslap:libmemcached-tools
	# The VM tests (tests/t_vm_*.sh, tests/vm/lab.sh): TCG guests with a
	# busybox initramfs; the kernel comes from `apt-get download`, done by
	# lab.sh itself (it needs the package lists, which this script's
	# install brings up to date).  They also put redis-server, redis-cli,
	# redis-benchmark, iperf3 and setpriv (all above) into the guests, and
	# read iperf3's JSON with jq.
	qemu-system-x86_64:qemu-system-x86
	busybox:busybox-static
	cpio:cpio
	modinfo:kmod
	# tests/t_sockmap.sh and bench/sockmap_compare.sh: the eBPF sockmap
	# rival (bench/sockmap/), BPF programs built with clang, and bpftool
	# to check that nothing stays loaded.  Its loader needs libbpf-dev,
	# which has no command: checked below.
	clang:clang
	bpftool:bpftool
	# `make deb` and tests/t_deb.sh: the package, built and installed.
	dpkg-deb:dpkg
	pkg-config:pkg-config
	# tests/t_man.sh: every manual page rendered without a warning.
	groff:groff-base
)

mode=install
case ${1:-} in
'') ;;
--check) mode=check ;;
--list) mode=list ;;
-h | --help)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "usage: $0 [--check | --list]" >&2
	exit 2
	;;
esac

# The packages the checks below may add, for --list.
EXTRA=(netbase libc6-dev gcc-multilib libasan8 libubsan1 libtsan2 libbpf-dev postgresql python3-zmq
	'libclang-rt-N-dev (N: the major version of the clang installed)'
	'libpython3.N-testsuite (3.N: the python3 installed)')
if [ "$mode" = list ]; then
	for pair in "${NEEDED[@]}"; do echo "${pair#*:}"; done | sort -u
	printf '%s\n' "${EXTRA[@]}"
	exit 0
fi

missing=()
add() {
	local p
	for p in "$@"; do
		case " ${missing[*]} " in *" $p "*) ;; *) missing+=("$p") ;; esac
	done
}

for pair in "${NEEDED[@]}"; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || add "${pair#*:}"
done

# --- Not commands --------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shunt-deps-XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
# cc_ok NAME FLAGS... < SOURCE: the C program compiles and links so.
cc_ok() {
	local name=$1
	shift
	cat >"$tmp/$name.c"
	command -v gcc >/dev/null 2>&1 &&
		gcc -o "$tmp/$name" "$tmp/$name.c" "$@" >/dev/null 2>&1
}
echo 'int main(void) { return 0; }' >"$tmp/stub.c"
# The C library's headers and its static archive (tests/t_run_why.sh links
# a program with -static); gcc only recommends libc6-dev.
cc_ok static -static <"$tmp/stub.c" || add libc6-dev
# A 32-bit program (tests/t_run_why.sh: its loader, libc6-i386, cannot load
# the 64-bit library): gcc-multilib brings both.
cc_ok m32 -m32 <"$tmp/stub.c" || add gcc-multilib
# The sanitizer runtimes (make test SAN=asan, SAN=tsan) come with gcc on
# Debian, but check: link a stub.
cc_ok asan -fsanitize=address,undefined <"$tmp/stub.c" || add libasan8 libubsan1
cc_ok tsan -fsanitize=thread <"$tmp/stub.c" || add libtsan2
# libbpf-dev (bench/sockmap/sockmap_ctl.c).
printf '#include <bpf/libbpf.h>\nint main(void) { return libbpf_major_version() == 0; }\n' |
	cc_ok bpf -lbpf || add libbpf-dev
# libFuzzer's runtime (tests/t_fuzz.sh, `make fuzz`): clang only recommends
# it, in a package named after clang's major version.
if command -v clang >/dev/null 2>&1; then
	printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmp/fuzz.c"
	if ! clang -fsanitize=fuzzer,address,undefined -o "$tmp/fuzz" "$tmp/fuzz.c" >/dev/null 2>&1; then
		v=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
		add "libclang-rt-${v:-14}-dev"
	fi
fi
# /etc/protocols (netbase): without it getprotobyname("tcp") fails, and
# NPtcp exits with "protocol 'tcp' unknown".  A minimal Debian root
# (debootstrap --variant=minbase, the debian:12 image) has no netbase.
getent protocols tcp >/dev/null 2>&1 || add netbase
# The PostgreSQL server: Debian keeps it in /usr/lib/postgresql/N/bin
# (tests/t_apps_postgres.sh).
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null &&
	! command -v postgres >/dev/null 2>&1; then
	add postgresql
fi
# pyzmq (tests/t_apps_zmq.sh), a module of Debian's python3, which may not
# be the first python3 on the PATH.
{ python3 -c 'import zmq' || /usr/bin/python3 -c 'import zmq'; } >/dev/null 2>&1 ||
	add python3-zmq

# CPython's own test suite (tests/t_apps_python.sh runs one of its socket
# tests), in a package named after the version of the python3 installed:
# so it is looked for after python3 is.
python_suite() {
	command -v python3 >/dev/null 2>&1 || return 0
	python3 -c 'import test.test_socket' >/dev/null 2>&1 && return 0
	local v
	v=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 0
	echo "libpython$v-testsuite"
}

apt_cmd() {
	echo "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $*"
}

apt_install() {
	echo "deps: installing: $*"
	apt-get update || return 1
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# The system calls' tracepoints (t_shim_poll counts a thread's calls with
# them; without them those cases skip, which CI counts as failures): in
# tracefs, which a fresh machine may not have mounted.  Root mounts it.
tracepoints() {
	[ -d /sys/kernel/tracing/events/syscalls ] ||
		[ -d /sys/kernel/debug/tracing/events/syscalls ]
}
if ! tracepoints && [ "$mode" = install ] && [ "$(id -u)" -eq 0 ]; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
fi
tracepoints || echo "deps: no system call tracepoints: some t_shim_poll cases will skip" \
	"(as root: mount -t tracefs nodev /sys/kernel/tracing)" >&2

py=$(python_suite)
[ -z "$py" ] || add "$py"
if [ ${#missing[@]} -eq 0 ]; then
	[ "$mode" = check ] && echo "deps: all present"
	exit 0
fi

if [ "$mode" = check ]; then
	echo "deps: missing: ${missing[*]}"
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	cat >&2 <<EOF
deps: the tests need packages that are not installed:
  ${missing[*]}
Install them as root (in a root shell, or with sudo or su -c), then run this
again:
  $(apt_cmd "${missing[@]}")
Run as root, \`make test\` installs them itself.  To go on without them, the
tests that need them skipped: make test NODEPS=1
EOF
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${missing[*]}, and there is no apt-get to install them" >&2
	exit 1
fi
apt_install "${missing[@]}" || {
	echo "deps: apt-get failed; the command was: $(apt_cmd "${missing[@]}")" >&2
	exit 1
}
py=$(python_suite)
if [ -n "$py" ]; then
	apt_install "$py" || {
		echo "deps: apt-get failed; the command was: $(apt_cmd "$py")" >&2
		exit 1
	}
fi
# What is still missing now is a mistake in this list: say so.
missing=()
for pair in "${NEEDED[@]}"; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || add "${pair#*:} (${pair%%:*})"
done
getent protocols tcp >/dev/null 2>&1 || add "netbase (/etc/protocols)"
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: still missing after the install: ${missing[*]}" >&2
	exit 1
fi
echo "deps: installed"
