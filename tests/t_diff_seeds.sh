#!/usr/bin/env bash
# test-timeout: 300
# t_diff_seeds: the differential tester (tests/diff_shim.c, TCP and shunt
# side by side over one random call sequence a seed) replays the seeds whose
# differences were fixed, each of which differed before its fix (the
# commits name them): a fix undone shows here.  The tester itself is not in
# the suite, as new seeds still find open differences (tests/README.md).
# About 55 s.  An entry SEED:STEPS replays a seed of that many steps.
set -u
B=${SHUNT_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/build}
D=$B/tests/diff_shim
[ -x "$D" ] || { echo "skip: no $D (make)"; exit 77; }
seeds=(
	62476772594550 15561180703334 50703080695018 135077436040505 256503142345178
	35954857502457 121455858073981 51007863331966 22300273703459 71661297387559
	126679179902614 271213077787804 44375017551195 53168099573656 54600571356245
	260925721291318 159554422972196 101295110934606 7718716936560 17562493240513
	47987179526858 17935670960689 267537594241091 139706242921640 132972951535172
	62083118456932 54339060964977 141250606215751 275673599260879 280199643234448
	40808813192150 34321763789843
	106480757018364 147102886341581 127990102165423 127284541585015 246288389405767
	261523549751905 258765204379962 78559881551636 110593490697306 177283731048685
	217602494426441 101592900104077 27192862901815 173976263962728 54892045693306
	59222449875081 178648778234228 118693704925994 237142540503530
	124455626426073:150 107806998519929:150 185145002601675:150 258089060358406:150
	98177848450040:150 59431592097002:150 177990837983620:150 177813955005252:150 273114627652044:150
	220796898074283:300 56424222423672:300 171949316579308:600 268277989848630:160
)
# The fds' lives (seeds with FDOPS_BIT, tests/diff_shim.c): a vfork
# child's dup2 onto stdout.
seeds+=(325396016166023:43)
# A pass after the peer's reset: the way back's disconnect of the closed
# socket left its new holder no POLLIN.
seeds+=(509863046461456)
# And these with the loopback connections sent through a region file, as
# between two VMs (docs/vms.md).
vm_seeds=(66250295816691:150 150631731147633:150 10051972994984:150 167087929862660:150
	63371696171288:150 120854514662972:150 273114627652044:150 220796898074283:300
	381220858533253:20)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$B/shunt" vm region "$T/region" 32M --ring 512k >/dev/null || { echo "FAIL: shunt vm region"; exit 1; }
printf 'ivshmem %s 127.0.0.0/8\n' "$T/region" >"$T/conf"

bad=()
# replay CONF SEED[:STEPS]...: each differing entry into bad
replay() {
	local conf=$1 e s steps out
	shift
	for e in "$@"; do
		s=${e%%:*} steps=60 # SEED or SEED:STEPS
		[ "$e" = "$s" ] || steps=${e#*:}
		out=$(SHUNT_CONFIG=$conf SHUNT_DIFF_SEED=$s SHUNT_DIFF_STEPS=$steps timeout 60 "$D" 2>&1)
		if ! grep -q "0 of 1 cases failed" <<<"$out"; then
			bad+=("$e${conf:+ (region)}")
			grep -a -A3 "^TCP\|^shunt" <<<"$out" | head -8
		fi
	done
}
replay "" "${seeds[@]}"
replay "$T/conf" "${vm_seeds[@]}"
if [ ${#bad[@]} -gt 0 ]; then
	echo "FAIL: t_diff_seeds: shunt differs from TCP again at seed(s) ${bad[*]} (replay: SHUNT_DIFF_SEED=S [SHUNT_DIFF_STEPS=N for S:N] [SHUNT_CONFIG=a region's] $D)"
	exit 1
fi
echo "t_diff_seeds: ${#seeds[@]} seeds, and ${#vm_seeds[@]} through a region, the same over TCP and shunt"
