#!/bin/bash
# groups.sh: the comparison groups of `make bench`, sourced by measure.sh
# after the device runs. A group compares a few ways of serving one image
# (nbdloop against the peer a user would pick instead) on its own fio jobs:
#
#   xz     a 128 MiB multi-block xz image (xz -T2 -3 --block-size=1MiB, made
#          on the host by prepare_groups below, from bench.sh): nbdloop,
#          nbdloop with GOMAXPROCS=1 (one core decoding), and nbdkit
#          --filter=xz file + nbd-client; one sequential read of the whole
#          image (1 MiB, QD8, cold), then 4 KiB random reads QD32x2 for 30 s
#          (BENCH_RUNTIME if longer) with what the server cached. One
#          connection each: with more, the kernel gives up on a
#          connection whose request took 30 s, which cold decodes do under
#          emulation
#   qcow2  a new 1 GiB qcow2 image (qemu-img create, 64 KiB clusters) in the
#          guest's memory, for each of nbdloop and qemu-nbd -c: 1 MiB
#          sequential writes over its first 512 MiB (allocating clusters;
#          over 128 MiB the job lasted 2 s and swung from 0.87x to 0.98x
#          between runs), 1 MiB sequential reads of the first 128 MiB, then
#          4 KiB random writes and reads QD32x2 for BENCH_RUNTIME each, over
#          the same 128 MiB
#
#   net-memory, net-file  nbdloop serve, nbdkit and qemu-nbd on the loopback,
#          TLS off and on, driven by nbdcopy and by fio through nbd-client
#          (net.sh)
#   host-net  host-net-memory and host-net-file: nbdcopy against the same
#          servers on the build machine itself, run by bench.sh after the
#          VM (net_host.sh); nothing runs in the VM for it
#
# Output in OUT: fio/group-GROUP-KIND.json (fio's JSON, one group per job),
# group-GROUP.tsv (kind, the server's peak resident memory in KiB: VmHWM),
# and meta.txt gains groups=..., group_GROUP_kinds=..., group_GROUP_jobs=...
#   http   in group_http.sh: an image on nginx read by URL
#   s3     in group_s3.sh: a disk in a SeaweedFS bucket written with fio,
#          against an upload of the same bytes by the S3 SDK
#
# Env: BENCH_GROUPS: the groups to run (default: all; "none": none).

all_groups="xz qcow2 net-memory net-file host-net http s3"

# shellcheck source=scripts/bench/net.sh
. "$(dirname "${BASH_SOURCE[0]}")/net.sh"
# shellcheck source=scripts/bench/group_http.sh
. "$(dirname "${BASH_SOURCE[0]}")/group_http.sh"
# shellcheck source=scripts/bench/group_s3.sh
. "$(dirname "${BASH_SOURCE[0]}")/group_s3.sh"

# throughput_json JOB DIR BYTES SECS: a fio JSON output of one job, JOB,
# for a tool that is not fio: DIR (read or write) moved BYTES in SECS; its
# IOPS are MiB per second (fio's 1 MiB blocks).
throughput_json() {
	awk -v job="$1" -v dir="$2" -v bytes="$3" -v secs="$4" 'BEGIN {
		if (bytes <= 0 || secs <= 0) exit 1
		d = sprintf("{\"iops\": %.3f, \"bw_bytes\": %.0f, \"clat_ns\": {\"mean\": 0, \"percentile\": {}}}", bytes / 1048576 / secs, bytes / secs)
		z = "{\"iops\": 0, \"bw_bytes\": 0}"
		printf "{\"jobs\": [{\"jobname\": \"%s\", \"error\": 0, \"read\": %s, \"write\": %s}]}\n", job, dir == "read" ? d : z, dir == "write" ? d : z
	}'
}

# prepare_groups RAW: host side, before the VM starts (the VM's xz would take
# minutes under emulation). Makes RAW/groups/disk.img.xz from 128 MiB of
# system files: compressible like a real disk, the same on every run of a
# machine.
prepare_groups() {
	local raw=$1
	mkdir -p "$raw/groups"
	local src=$raw/groups/disk.img
	tar -cf - --sort=name /usr/lib/x86_64-linux-gnu /usr/share/doc /usr/bin 2>/dev/null | head -c 128M >"$src"
	truncate -s 128M "$src"
	xz -T2 -3 --block-size=1MiB -k -f "$src" || return 1
	rm -f "$src"
}

# group_xz_attach KIND IMAGE: sets dev and server_pid.
group_xz_attach() {
	case $1 in
	nbdloop-xz)
		dev=$("$nbdloop" attach -r -c 1 "$2") || return 1 ;;
	nbdloop-xz-1cpu)
		dev=$(GOMAXPROCS=1 "$nbdloop" attach -r -c 1 "$2") || return 1 ;;
	nbdkit-xz)
		local d
		d=$(free_nbd) || return 1
		start_nbdkit --filter=xz file "$2" || return 1
		nbd-client -unix "$sock" "$d" -N '' -C 1 >>"$out/tools.log" 2>&1 || return 1
		dev=$d ;;
	esac
	kind=$1
	case $1 in
	nbdloop-*) server_pid=$(state_pid "$dev") ;;
	nbdkit-*) server_pid=$nbdkit_pid ;;
	esac
	[ -b "$dev" ]
}

run_groups() {
	local groups=${BENCH_GROUPS:-$all_groups}
	[ "$groups" = none ] && return 0
	local vm_groups=" $groups "
	vm_groups=${vm_groups// host-net / }
	vm_groups=${vm_groups# }
	echo "groups=${vm_groups% }" >>"$out/meta.txt"
	local g
	for g in $groups; do
		case $g in
		xz) run_group_xz ;;
		qcow2) run_group_qcow2 ;;
		net-memory | net-file) run_group_net "${g#net-}" ;;
		http) run_group_http ;;
		host-net) ;; # on the host, by bench.sh (net_host.sh)
		s3) run_group_s3 ;;
		*) fail "unknown group $g" ;;
		esac
	done
}

run_group_xz() {
	local kinds="nbdloop-xz nbdloop-xz-1cpu nbdkit-xz"
	# Not in $work: the 1 GiB device file fills that tmpfs.
	local img
	img=$(mktemp /tmp/nbdloop-bench-xz.XXXXXX) || return
	{
		echo "group_xz_kinds=$kinds"
		echo "group_xz_jobs=read-full-1m-qd8 randread-4k-qd32"
	} >>"$out/meta.txt"
	log "group xz: $kinds"
	if ! cp "$out/groups/disk.img.xz" "$img"; then
		fail "group xz: no image (prepare_groups did not run?)"
		return
	fi
	local job=$out/fio/group-xz.fio
	# The full read comes first (cold: it measures decoding), the random
	# reads after it, with whatever the server kept cached: nbdloop's shared
	# decode cache against nbdkit's few blocks per connection.
	cat >"$job" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		group_reporting
		[read-full-1m-qd8]
		rw=read
		bs=1M
		iodepth=8
		[randread-4k-qd32]
		stonewall
		rw=randread
		bs=4k
		iodepth=32
		numjobs=2
		time_based
		runtime=$((runtime > 30 ? runtime : 30))
		norandommap
		randrepeat=0
	EOF
	printf 'kind\tpeak_rss_kib\n' >"$out/group-xz.tsv"
	local k
	for k in $kinds; do
		if ! group_xz_attach "$k" "$img"; then
			fail "group xz: $k attach failed"
			detach_dev
			continue
		fi
		log "  $k on $dev"
		if ! timeout -k 5 900 fio --readonly --filename="$dev" --output-format=json --output="$out/fio/group-xz-$k.json" "$job" >>"$out/tools.log" 2>&1; then
			fail "group xz: $k fio"
		fi
		printf '%s\t%s\n' "$k" "$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")" >>"$out/group-xz.tsv"
		detach_dev || fail "group xz: $k detach failed"
	done
	rm -f "$img"
}

run_group_qcow2() {
	local kinds="nbdloop-qcow2 qemu-nbd-qcow2"
	{
		echo "group_qcow2_kinds=$kinds"
		echo "group_qcow2_jobs=write-1m-qd8 read-1m-qd8 randwrite-4k-qd32 randread-4k-qd32"
	} >>"$out/meta.txt"
	log "group qcow2: $kinds"
	local job=$out/fio/group-qcow2.fio
	cat >"$job" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		group_reporting
		size=128M
		[write-1m-qd8]
		size=512M
		rw=write
		bs=1M
		iodepth=8
		[read-1m-qd8]
		stonewall
		rw=read
		bs=1M
		iodepth=8
		[randwrite-4k-qd32]
		stonewall
		rw=randwrite
		bs=4k
		iodepth=32
		numjobs=2
		time_based
		runtime=$runtime
		norandommap
		randrepeat=0
		[randread-4k-qd32]
		stonewall
		rw=randread
		bs=4k
		iodepth=32
		numjobs=2
		time_based
		runtime=$runtime
		norandommap
		randrepeat=0
	EOF
	printf 'kind\tpeak_rss_kib\n' >"$out/group-qcow2.tsv"
	local k img
	for k in $kinds; do
		img=$(mktemp /tmp/nbdloop-bench-qcow2.XXXXXX) || return
		if ! qemu-img create -q -f qcow2 -o cluster_size=64k "$img" 1G >>"$out/tools.log" 2>&1; then
			fail "group qcow2: qemu-img create"
			rm -f "$img"
			return
		fi
		case $k in
		nbdloop-qcow2)
			kind=$k
			dev=$("$nbdloop" attach -c "$conns" "$img") || { fail "group qcow2: $k attach failed"; detach_dev; rm -f "$img"; continue; }
			server_pid=$(state_pid "$dev") ;;
		qemu-nbd-qcow2)
			kind=qemu-nbd
			dev=$(free_nbd) && qemu-nbd -c "$dev" -f qcow2 "$img" >>"$out/tools.log" 2>&1 ||
				{ fail "group qcow2: $k attach failed"; dev=''; detach_dev; rm -f "$img"; continue; }
			server_pid=$(pgrep -n -f "qemu-nbd -c $dev") ;;
		esac
		log "  $k on $dev"
		if ! timeout -k 5 900 fio --filename="$dev" --output-format=json --output="$out/fio/group-qcow2-$k.json" "$job" >>"$out/tools.log" 2>&1; then
			fail "group qcow2: $k fio"
		fi
		printf '%s\t%s\n' "$k" "$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")" >>"$out/group-qcow2.tsv"
		detach_dev || fail "group qcow2: $k detach failed"
		if ! qemu-img check -q "$img" >>"$out/tools.log" 2>&1; then
			fail "group qcow2: qemu-img check after $k"
		fi
		rm -f "$img"
	done
}
