# shellcheck shell=bash
# Section 10: the rival users deploy today, eBPF sockmap redirection of
# local TCP (bench/sockmap.sh, bench/sockmap/: sock_ops + sk_msg programs
# attached to a cgroup the run makes), against TCP and shunt: iperf3,
# sockperf and redis-benchmark, by bench/sockmap_compare.sh (the three
# modes alternating round after round).  Needs root, clang, libbpf-dev.

section_sockmap() {
	md "## $1. eBPF sockmap, TCP and shunt side by side"
	local args=(--rounds 3)
	# Quick: iperf3 only (sockperf's client alone takes 4 s a run, and
	# sections 2 and 7 measure sockperf and redis against TCP already).
	[ "$QUICK" = 1 ] && args=(--tiny --only iperf3)
	md "" "The technique of Cilium, Merbridge and istio-tcpip-bypass: a sock_ops program" \
		"puts every established loopback TCP socket of a cgroup into a sockhash, and an" \
		"sk_msg program redirects each message to its peer's receive queue, past the" \
		"TCP/IP stack (bench/sockmap/README.md). \`bench/sockmap_compare.sh\` runs each" \
		"program three ways: plain TCP, server and client in the sockmap's cgroup, and" \
		"both under \`shunt run --\`, the three alternating round after round; medians." \
		"A sockmap or shunt figure counts only if the kernel's TCP byte counters of the" \
		"live connections stayed near zero while it ran (probed with \`ss -ti\`), and for" \
		"sockmap if the BPF programs redirected everything, for shunt if the client's log" \
		"shows its connection moved. Targets: shunt at least 2x sockmap's throughput, at" \
		"most 0.5x its latency."
	local out=$T/sockmap-compare
	args+=(--tsv "$out.tsv" --out "$out.md" --logs "$T/smlogs")
	cmd_record bench/sockmap_compare.sh "${args[@]}"
	if ! "$BENCH_DIR/sockmap_compare.sh" "${args[@]}" >"$out.out" 2>&1; then
		note "bench/sockmap_compare.sh failed: $(grep -m1 -E 'no sockmap|unavailable|FAIL' "$out.out" || tail -n 2 "$out.out" | tr '\n' ' ')"
		return 0
	fi
	# Its report, one heading level down, without its first two lines.
	md ""
	sed -e '1,2d' -e 's/^## /### /' "$out.md" >>"$MD"
	tsv_head sockmap.tsv figure unit better mode median valid per_round
	cat "$out.tsv" >>"$DATA/sockmap.tsv"
	tsv_head sockmap-summary.tsv series figure value_vs_tcp
	local fig m v t
	while IFS=$'\t' read -r fig _ _ m v _ _; do
		t=$(awk -F'\t' -v f="$fig" '$1 == f && $4 == "tcp" { print $5 }' "$out.tsv")
		tsv sockmap-summary.tsv "$m" "$(echo "$fig" | sed 's/,.*//; s/redis-benchmark/redis/')" "$(ratio "$v" "$t")"
	done <"$out.tsv"
	plot sockmap "TCP, eBPF sockmap and shunt: each figure relative to TCP (latency: lower is better)" "" "x TCP" \
		sockmap-summary.tsv -v kind=bar
	# sm_ratio FIG: "RATIO VALID SHUNT SOCKMAP", shunt/sockmap and
	# validity (both modes' figures valid).
	sm_ratio() {
		awk -F'\t' -v f="$1" '$1 == f && $4 == "shunt" { s = $5; sv = $6 } $1 == f && $4 == "sockmap" { k = $5; kv = $6 }
			END { if (k + 0 > 0 && s != "") printf "%.2f %d %s %s\n", s / k, (sv == 1 && kv == 1), s, k; else print "nan 0 nan nan" }' "$out.tsv"
	}
	local r valid s k f
	# sm_headline FIG LOGS: FIG's row of the headline table (shunt against
	# TCP, sockmap's figure and shunt/sockmap in the label).
	sm_headline() {
		local st sv unit
		IFS=$'\t' read -r _ unit _ _ st _ _ < <(awk -F'\t' -v f="$1" '$1 == f && $4 == "tcp"' "$out.tsv")
		IFS=$'\t' read -r _ _ _ _ sv valid _ < <(awk -F'\t' -v f="$1" '$1 == f && $4 == "shunt"' "$out.tsv")
		[ -n "$sv" ] || return 0
		headline "$1 (eBPF sockmap: $(fmt1 "$k"), shunt/sockmap ${r}x)" "$unit" "$st" "$sv" "$(ratio "$sv" "$st")" "$valid" \
			"$(moved_in "smlogs/$2")"
	}
	f=$(awk -F'\t' '$1 ~ /^iperf3/ { print $1; exit }' "$out.tsv")
	if [ -n "$f" ]; then
		read -r r valid s k <<<"$(sm_ratio "$f")"
		target sockmap-iperf3 "${r}x ($(fmt "$s" 1) vs $(fmt "$k" 1) Gbit/s)" "$(verdict '>=' "$r" 2 "$valid")"
		sm_headline "$f" "iperf3-shunt-*"
	fi
	f=$(awk -F'\t' '$1 ~ /^sockperf/ { print $1; exit }' "$out.tsv")
	if [ -n "$f" ]; then
		read -r r valid s k <<<"$(sm_ratio "$f")"
		target sockmap-sockperf "${r}x ($(fmt "$s" 2) vs $(fmt "$k" 2) us)" "$(verdict '<=' "$r" 0.5 "$valid")"
		sm_headline "$f" "sockperf-shunt-*"
	fi
	grep -q '^redis' "$out.tsv" || { md_commands "How this section was run:"; return 0; }
	local lo=nan lov=1 what="" rr vv
	for f in "redis-benchmark GET -c 1" "redis-benchmark SET -c 1" "redis-benchmark GET -c 50" "redis-benchmark SET -c 50"; do
		read -r rr vv s k <<<"$(sm_ratio "$f")"
		[ "$vv" = 1 ] || lov=0
		if [ "$lo" = nan ] || awk -v a="$rr" -v b="$lo" 'BEGIN { exit !(a == "nan" || a + 0 < b + 0) }'; then
			lo=$rr what="${f#redis-benchmark }: $(fmt "$s") vs $(fmt "$k") req/s"
		fi
	done
	target sockmap-redis "${lo}x ($what)" "$(verdict '>=' "$lo" 2 "$lov")"
	for f in "redis-benchmark GET -c 1" "redis-benchmark GET -c 50"; do
		read -r r valid s k <<<"$(sm_ratio "$f")"
		sm_headline "$f" "redis-shunt-*"
	done
	md_commands "How this section was run:"
}
