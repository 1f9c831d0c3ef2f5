#!/usr/bin/env bash
# t_apps_vsftpd: vsftpd under shunt, a local user logging in (PAM), curl
# under shunt downloading in passive and active mode and uploading, every
# file compared byte for byte.
#  * vsftpd makes each session with syscall(__NR_clone, CLONE_NEWPID |
#    CLONE_NEWIPC | CLONE_NEWNET | SIGCHLD, NULL), where no fork handler
#    runs: the library took the session for a vfork child for its whole
#    life, whose tables never change; the session's netlink socket, on the
#    number of the connection it had closed, was taken for it, and PAM's
#    audit read lost its address: every login was refused ("530 Login
#    incorrect", a helper's runs, 6 of 6, and mine by hand).  Which number
#    the netlink socket takes depends on the fds the session has: in this
#    script's runs the old library let the login through all the same
#    (t_shim_proc clone_forks is the test that fails on it).  A session in another pid
#    namespace runs without the library (docs/design.md, "The fd rule"),
#    so its connections stay on TCP.
#  * With isolate=NO the sessions are plain forks: the same transfers.
#    (Nothing moves there either: a session serves its transfers as the
#    user who logged in, and curl runs as root.)
# Needs root: it adds a throwaway user (removed at the end) for the login.
lib=$(dirname "$0")/apps_lib.sh
[ -f "$lib" ] || lib=$(dirname "$0")/../../tests/apps_lib.sh
# shellcheck source=tests/apps_lib.sh
. "$lib" || exit 1

apps_init vsftpd
need curl
PATH=$PATH:/usr/sbin:/sbin
need vsftpd useradd userdel chpasswd
[ "$(id -u)" -eq 0 ] || skip "not root: a user cannot be added for the login"

# A home under /home, as useradd makes it: with one elsewhere the session
# opened its fds in another order, and the old library's stale entry was
# not hit.
user=shuntftp$$ pass=p$RANDOM$RANDOM
useradd -m -s /bin/sh "$user" >/dev/null 2>&1 || fail "useradd $user failed"
APPS_CLEANUP+=("userdel -r '$user'")
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || fail "no home for $user"
printf '%s:%s\n' "$user" "$pass" | chpasswd || fail "chpasswd failed"
mkdir -p "$T/empty"
rand_file "$home/big" $((16 << 20))
rand_file "$T/up" $((8 << 20))
chown "$user" "$home/big"

# serve NAME ISOLATE: vsftpd with that isolation, each transfer checked.
serve() {
	local name=$1 port
	port=$(free_port)
	cat >"$T/$name.conf" <<CONF
listen=YES
listen_address=127.0.0.1
listen_port=$port
anonymous_enable=NO
local_enable=YES
write_enable=YES
pam_service_name=vsftpd
secure_chroot_dir=$T/empty
pasv_enable=YES
port_enable=YES
connect_from_port_20=NO
xferlog_enable=NO
background=NO
seccomp_sandbox=NO
isolate=$2
isolate_network=$2
CONF
	start_server "$name" vsftpd "$T/$name.conf"
	local srv=$LAST_PID
	wait_listen "$port" "$srv"
	local url=ftp://127.0.0.1:$port mode
	for mode in pasv active; do
		local opt=()
		[ "$mode" = active ] && opt=(-P -)
		run_client "$name-get-$mode" 30 curl -sS "${opt[@]}" -u "$user:$pass" \
			-o "$T/got-$name-$mode" "$url/big" 2>"$T/$name-get-$mode.err" ||
			fail "$name: curl ($mode) exited with status $?: $(head -c 300 "$T/$name-get-$mode.err")"
		same_file "$home/big" "$T/got-$name-$mode" "$name: 16 MiB fetched in $mode mode"
	done
	run_client "$name-put" 30 curl -sS -u "$user:$pass" -T "$T/up" "$url/up-$name" \
		2>"$T/$name-put.err" ||
		fail "$name: curl upload exited with status $?: $(head -c 300 "$T/$name-put.err")"
	same_file "$T/up" "$home/up-$name" "$name: 8 MiB uploaded"
	stop_server "$srv"
	say "$name: logged in; 16 MiB fetched in passive and active mode, 8 MiB uploaded: intact"
}

serve isolated YES
serve forks NO
say pass
