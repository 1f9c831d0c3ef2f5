# shellcheck shell=bash
# bench/ab.sh - sourced by bench/short_rt.sh and bench/idle_rt.sh: R rounds
# of a run over plain TCP and under shunt, alternating (TCP first in each
# round) on this noisy machine, and the medians.  The script defines
# `one MODE ARG`, which prints one run's figure.

med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# ab_rounds R ARG: sets t and s (each round's figure) and mt, ms (medians).
ab_rounds() {
	t=(); s=()
	for _ in $(seq "$1"); do t+=("$(one tcp "$2")"); s+=("$(one shunt "$2")"); done
	mt=$(med "${t[@]}") ms=$(med "${s[@]}")
}

# ratio A B: A / B, two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
