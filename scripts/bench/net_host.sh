#!/bin/bash
# net_host.sh OUT: the host-net groups of `make bench` (issue 19), run by
# bench.sh on the build machine itself after the device runs, into the same
# results directory OUT: nbdloop serve, nbdkit and qemu-nbd on the loopback,
# TLS off and required, driven by nbdcopy alone (net.sh's copy jobs; no
# kernel client is needed, so no VM). The VM's net groups measure the same
# servers through the kernel's client, but under TCG, whose emulated AES
# runs at a few MB/s for every server: the TLS cost on 1 MiB requests is
# measured here, on the CPU the servers really run on.
#
# Groups: host-net-memory and host-net-file, the kinds of net.sh's net-memory
# and net-file, on sources of BENCH_NET_HOST_SPAN (default 256M) in
# /dev/shm. The servers take turns: BENCH_NET_HOST_ROUNDS passes (default 3)
# over every kind, each pass starting each server afresh; the report takes
# each job's median pass, so that a burst of load elsewhere on the machine
# moves one pass of one kind, not the ratio.
#
# Output in OUT, as the VM's groups: fio/group-host-net-SRC-KIND.json,
# group-host-net-SRC.tsv (peak resident memory of the last pass), net/ (logs
# and the passes, host-net-SRC-copy.tsv), and meta.txt gains the groups'
# lines and a groups= line naming them after the VM's groups.
# Exit status: 0 when every pass was measured, 1 otherwise.
set -u

# Braces: bash reads a script as it runs it; a compound command is read whole.
{

[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
mkdir -p "$1/fio" "$1/net" || exit 1
out=$(cd "$1" && pwd -P)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export LC_ALL=C

nbdloop=${BENCH_NBDLOOP:-$repo/bin/nbdloop}
[ -x "$out/nbdloop" ] && nbdloop=$out/nbdloop
ncpu=$(nproc)
conns=${BENCH_CONNECTIONS:-$((ncpu < 4 ? ncpu : 4))}
rounds=${BENCH_NET_HOST_ROUNDS:-3}
# shellcheck source=scripts/bench/common.sh
. "$repo/scripts/bench/common.sh"

work=$(mktemp -d /dev/shm/nbdloop-bench-host.XXXXXX) || exit 1
net_pid=''
trap 'net_stop; rm -rf "$work"' EXIT
# shellcheck source=scripts/bench/net.sh
. "$repo/scripts/bench/net.sh"
net_span=${BENCH_NET_HOST_SPAN:-256M}
net_pki=$work/net-pki
net_certs "$net_pki" || { fail "host-net: certtool could not make the certificates (see net/certtool.log)"; exit 1; }

# host_group SRC: the group host-net-SRC (memory or file).
host_group() {
	local src=$1 g=host-net-$1 kinds k r port=10950 uri jobs='' j
	case $src in
	memory) kinds="nbdloop-memory nbdkit-memory nbdloop-memory-tls nbdkit-memory-tls" ;;
	file) kinds="nbdloop-file nbdkit-file qemu-nbd-file nbdloop-file-tls nbdkit-file-tls qemu-nbd-file-tls" ;;
	esac
	for j in "${net_copy_jobs[@]}"; do jobs="$jobs ${j%%|*}"; done
	{
		echo "group_${g}_kinds=$kinds"
		echo "group_${g}_jobs=${jobs# }"
		echo "group_${g}_span=$net_span"
		echo "group_${g}_rounds=$rounds"
	} >>"$out/meta.txt"
	log "group $g (host, $rounds passes): $kinds"
	local data=$work/data.img tsv=$out/net/$g-copy.tsv
	head -c "$net_span" /dev/urandom >"$data" || { fail "group $g: cannot make the source data"; return; }
	: >"$tsv"
	printf 'kind\tpeak_rss_kib\n' >"$out/group-$g.tsv"
	for r in $(seq "$rounds"); do
		for k in $kinds; do
			port=$((port + 1))
			# Each server its own copy of the file: nbdcopy writes all of it.
			cp "$data" "$work/$k.img" || { fail "group $g: $k: cannot copy the source"; continue; }
			if ! net_start "$k" "$port" "$work/$k.img"; then
				fail "group $g: $k: the server did not start (see net/$k.log)"
				net_stop
				continue
			fi
			uri=nbd://127.0.0.1:$port/
			[[ $k == *-tls ]] && uri="nbds://127.0.0.1:$port/?tls-certificates=$net_pki"
			net_copy "$k" "$uri" "$data" "$tsv"
			[ "$r" = "$rounds" ] && printf '%s\t%s\n' "$k" \
				"$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$net_pid/status")" >>"$out/group-$g.tsv"
			net_stop
			rm -f "$work/$k.img"
		done
	done
	for k in $kinds; do
		net_copy_json "$k" "$tsv" "$out/fio/group-$g-$k.json" || fail "group $g: $k: cannot summarize the passes"
	done
}

start=$(now_us)
host_group memory
host_group file
groups=$(sed -n 's/^groups=//p' "$out/meta.txt" | tail -n 1)
echo "groups=${groups:+$groups }host-net-memory host-net-file" >>"$out/meta.txt"
log "host-net groups took $((($(now_us) - start) / 1000000)) s"
[ "$failures" = 0 ] || { log "host-net: $failures measurement(s) failed"; exit 1; }
exit 0
}
