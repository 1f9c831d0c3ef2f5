# shellcheck shell=bash
# Section 8: memory per connection, at 1 and at 1000 idle connections
# (idle_run, section 5, which this reuses when it ran): the shared-memory
# segments (/memfd:shunt-conn in /proc/PID/smaps) and VmRSS of both ends.

section_memory() {
	md "## $1. Memory"
	local w=1 n m c big=1000
	# A quick run reuses section 5's smaller idle set.
	[ "$QUICK" = 1 ] && big=200
	md "" "The same \`tcpbench hold\` / \`tcpbench idle\` pair as the idle test (each connection" \
		"makes $IDLE_RT round trips, and so moves to shared memory, before it idles), at 1 and at" \
		"$big connections (measured in section 5 when it ran, else here), read from" \
		"/proc/PID/smaps (the \`/memfd:shunt-conn\` mappings) and /proc/PID/status." \
		"A segment holds a header page and a ring per direction; each process maps" \
		"every ring twice, back to back, so a wrapping message is one copy (hence a" \
		"process's virtual size is about twice the segment). Pages are resident only" \
		"once written: an idle connection's rings cost nothing until data flows, and" \
		"the segment size is what a connection costs once its rings have filled." \
		"The shim gives a process's connections 16 MiB of rings in all: the" \
		"configured size while they fit, halved for later connections down to 32 KiB." \
		"TCP's own socket buffers are kernel memory, in no process's VmRSS, and an" \
		"upgraded connection keeps its (idle) TCP socket too."
	for n in 1 $big; do
		for m in tcp shunt; do
			idle_run "$m" "$n" "$w" || true
		done
	done
	tsv_head memory.tsv mode connections stat_conns ring_mean_bytes segment_bytes_total \
		segments memfd_pss_kb_both memfd_virt_kb_server rss_server_kb rss_client_kb
	for n in 1 $big; do
		for m in tcp shunt; do
			tsv memory.tsv "$m" "$n" "$(res $m $n stat_conns)" "$(res $m $n ring_mean)" "$(res $m $n segment_bytes)" \
				"$(res $m $n segments)" "$(calc "$(res $m $n srv_memfd_pss_kb) + $(res $m $n cli_memfd_pss_kb)")" \
				"$(res $m $n srv_memfd_virt_kb)" "$(res $m $n rss_server_kb)" "$(res $m $n rss_client_kb)"
		done
	done
	# per N KEY [DIV]: shunt's KEY at N connections divided by N (and DIV).
	per() { awk -v v="$(res shunt "$1" "$2")" -v n="$1" -v d="${3:-1}" 'BEGIN { if (v == "nan") print "nan"; else printf "%.1f", v / n / d }'; }
	md "" "| | 1 conn TCP | 1 conn shunt | $big conns TCP | $big conns shunt |" "|---|---|---|---|---|"
	md "| connections in shared memory (shunt stat, state moved) | - | $(res shunt 1 stat_conns) | - | $(res shunt $big stat_conns) |"
	md "| ring size per direction, mean (the library's log as each moved), KiB | - | $(calc "$(res shunt 1 ring_mean) / 1024") | - | $(fmt "$(calc "$(res shunt $big ring_mean) / 1024")" 1) (from $(calc "$(res shunt $big ring_min) / 1024") to $(calc "$(res shunt $big ring_max) / 1024")) |"
	md "| shared segment per connection, KiB (reserved: resident once the rings fill) | - | $(per 1 segment_bytes 1024) | - | $(per $big segment_bytes 1024) |"
	md "| segment memory resident now per connection, KiB (Pss, both ends) | - | $(awk -v a="$(res shunt 1 srv_memfd_pss_kb)" -v b="$(res shunt 1 cli_memfd_pss_kb)" 'BEGIN { printf "%.1f", a + b }') | - | $(awk -v a="$(res shunt $big srv_memfd_pss_kb)" -v b="$(res shunt $big cli_memfd_pss_kb)" -v big="$big" 'BEGIN { printf "%.2f", (a + b) / big }') |"
	md "| segment mappings per connection in one process (virtual), KiB | - | $(per 1 srv_memfd_virt_kb) | - | $(per $big srv_memfd_virt_kb) |"
	md "| VmRSS server, KiB | $(res tcp 1 rss_server_kb) | $(res shunt 1 rss_server_kb) | $(res tcp $big rss_server_kb) | $(res shunt $big rss_server_kb) |"
	md "| VmRSS client, KiB | $(res tcp 1 rss_client_kb) | $(res shunt 1 rss_client_kb) | $(res tcp $big rss_client_kb) | $(res shunt $big rss_client_kb) |"
	local d
	d=$(awk -v a="$(res shunt $big rss_server_kb)" -v b="$(res shunt $big rss_client_kb)" -v c="$(res tcp $big rss_server_kb)" \
		-v e="$(res tcp $big rss_client_kb)" -v big="$big" 'BEGIN { if (a == "nan" || c == "nan") print "nan"; else printf "%.1f", (a + b - c - e) / big }')
	md "" "At $big connections, shunt's VmRSS of both processes together exceeds TCP's" \
		"by $d KiB per connection (the library's per-connection state and the" \
		"segments' touched pages)."
	md_commands
}
