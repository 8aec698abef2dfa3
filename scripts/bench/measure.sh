#!/bin/bash
# measure.sh: the device side of `make bench`. Runs as root where the NBD
# driver is (natively, or inside the VM of scripts/vm/run.sh), sets up each
# device in turn, runs the fio workloads on it and writes the raw results
# into OUT; scripts/bench/report turns them into the table (on the host).
#
# Usage: scripts/bench/measure.sh OUT
#
# OUT gets:
#   meta.txt                  key=value: kernel, CPUs, connections, runtime...
#   fio/DEVICE.json           fio --output-format=json, one group per workload
#                             (fio/jobs.fio); fio/DEVICE-fill.json: the fill
#   attach.tsv                kind, attach ms, detach ms (BENCH_ATTACH_RUNS each)
#   restart.tsv               kind, ms from kill -9 of the server to the first
#                             4 KiB read served by its successor (BENCH_RESTART_RUNS)
#   profile/NAME/             CPU accounting, syscall counts and perf samples
#                             (perf if installed) of memory disk runs:
#                             4k randread QD32x2 and 1M write QD8 on
#                             nbdloop-memory (NAME: the workload) and
#                             ublk-memory (NAME: ublk-WORKLOAD)
#   queues.txt                each device's block queue limits (max_sectors_kb...)
#   failures                  one line per measurement that could not be taken
# and exits 1 if anything failed (every other measurement is still taken).
#
# Devices: loop (losetup on a tmpfs file), nbdloop-memory (memory:1G),
# nbdloop-memory-errfilter (memory:1G behind an idle error filter: its
# trigger file never exists, so it only costs its check of every request),
# nbdloop-file (the tmpfs file), nbdkit-memory and nbdkit-file (+ nbd-client
# over a unix socket, as many connections as nbdloop), qemu-nbd (-c, raw, the
# tmpfs file), and block devices written as scripts over the tmpfs file:
# nbdloop-script (exec:scripts/examples/ramdisk.sh,file=FILE: a fork of sh
# and dd per request, nbdkit's sh plugin convention), nbdkit-script (the
# same script under nbdkit sh + nbd-client) and nbdloop-script-persistent
# (exec:scripts/examples/file-persistent.py,persistent,file=FILE: one python3
# process, requests serialized over its stdin/stdout), and the same memory
# disk and file through the ublk driver: ublk-memory (nbdloop attach
# --driver ublk memory:1G) and ublk-file (--driver ublk FILE), which need
# ublk_drv (Linux 6.0+: the VM's default 6.12 has it). Every device is 1 GiB
# and the jobs use its first BENCH_SPAN
# bytes; the file (whole) and the memory disks (that span) are filled with
# fio's (non-zero) data first, so reads never hit holes.
#
# Env: BENCH_NBDLOOP      the nbdloop binary (default: OUT/nbdloop, else bin/nbdloop)
#      BENCH_DEVICES      subset of the devices, space-separated, in this order
#      BENCH_WORKLOADS    subset of the workloads (names below)
#      BENCH_RUNTIME      seconds per fio job (default 4), BENCH_RAMP (default 1)
#      BENCH_SPAN         the part of each 1 GiB device the jobs use, from its
#                         start (default 128M: filling a memory disk is slow
#                         under emulation); memory disks are filled that far
#      BENCH_CONNECTIONS  connections for nbdloop and nbd-client (default: CPUs, at most 4)
#      BENCH_ATTACH_RUNS  attach timings per kind (default 5; 0: none)
#      BENCH_RESTART_RUNS restart gaps per kind (default 5; 0: none)
#      BENCH_PROFILE      0: skip the profile runs; BENCH_PROFILE_DEVICES (default
#                         'nbdloop-memory ublk-memory'), BENCH_PROFILE_WINDOW (default 3 s),
#                         BENCH_PROFILE_SPAN (default 32M), BENCH_PERF=0: no perf record
set -u

# Braces: bash reads a script as it runs it; a compound command is read whole.
{

[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
mkdir -p "$1" || exit 1
out=$(cd "$1" && pwd -P)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export LC_ALL=C

nbdloop=${BENCH_NBDLOOP:-}
if [ -z "$nbdloop" ]; then
	nbdloop=$repo/bin/nbdloop
	[ -x "$out/nbdloop" ] && nbdloop=$out/nbdloop
fi
runtime=${BENCH_RUNTIME:-4}
ramp=${BENCH_RAMP:-1}
ncpu=$(nproc)
conns=${BENCH_CONNECTIONS:-$((ncpu < 4 ? ncpu : 4))}
attach_runs=${BENCH_ATTACH_RUNS:-5}
restart_runs=${BENCH_RESTART_RUNS:-5}
span=${BENCH_SPAN:-128M}
all_devices="loop nbdloop-memory nbdloop-memory-errfilter nbdloop-file nbdkit-memory nbdkit-file qemu-nbd nbdloop-script nbdkit-script nbdloop-script-persistent ublk-memory ublk-file"
devices=${BENCH_DEVICES:-$all_devices}

# name|fio options. The report knows these names (labels, ratios, targets).
all_workloads=(
	"randread-4k-qd1|--rw=randread --bs=4k --iodepth=1 --numjobs=1"
	"randwrite-4k-qd1|--rw=randwrite --bs=4k --iodepth=1 --numjobs=1"
	"randread-4k-qd32|--rw=randread --bs=4k --iodepth=32 --numjobs=2"
	"randwrite-4k-qd32|--rw=randwrite --bs=4k --iodepth=32 --numjobs=2"
	"read-1m-qd8|--rw=read --bs=1M --iodepth=8 --numjobs=1"
	"write-1m-qd8|--rw=write --bs=1M --iodepth=8 --numjobs=1"
	"randrw-4k-qd32|--rw=randrw --rwmixread=70 --bs=4k --iodepth=32 --numjobs=2"
)
workloads=()
for w in "${all_workloads[@]}"; do
	if [ -z "${BENCH_WORKLOADS:-}" ] || [[ " $BENCH_WORKLOADS " == *" ${w%%|*} "* ]]; then
		workloads+=("$w")
	fi
done

# shellcheck source=scripts/bench/common.sh
. "$repo/scripts/bench/common.sh"

rm -rf "$out/fio" "$out/profile" "$out/failures" "$out/attach.tsv" "$out/queues.txt"
mkdir -p "$out/fio"

# --- the kernel side -------------------------------------------------------
load() {
	if [ "${NBDLOOP_VM:-}" = 1 ]; then
		"$repo/scripts/vm/modprobe.sh" "$@"
	else
		modprobe "$@"
	fi
}
[ -e /sys/module/nbd ] || load nbd nbds_max=16 max_part=16 || fail "cannot load the nbd driver"
[ -e /sys/module/loop ] || load loop 2>/dev/null || true # often built in
# ublk_drv where a ublk device is measured (the device runs, attach times,
# restart gaps and profiles all have one): without it those fail, the rest
# is still measured.
if [[ " $devices " == *" ublk-"* ]] || [ "$attach_runs" -gt 0 ] || [ "$restart_runs" -gt 0 ] || [ "${BENCH_PROFILE:-1}" != 0 ]; then
	[ -e /sys/module/ublk_drv ] || load ublk_drv ||
		fail "cannot load ublk_drv (Linux 6.0+ built with CONFIG_BLK_DEV_UBLK needed): the ublk devices will fail"
fi
mkdir -p /run/lock # qemu-nbd -c wants it

# The VM's RAM is backed by the host only once the guest first touches it:
# whichever device ran first paid those host page faults on each new page
# (qemu-nbd writing a new qcow2 image first in a fresh VM: 44 MB/s, second:
# 72). Touching the guest's free memory once, in one buffer that is then
# freed, puts every device on the same footing.
if [ "${NBDLOOP_VM:-}" = 1 ]; then
	avail=$(sed -n 's/^MemAvailable:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo)
	warm=$((avail / 1024 - 384))
	if [ "${warm:-0}" -gt 0 ]; then
		log "touching ${warm} MiB of guest memory once"
		dd if=/dev/zero of=/dev/null bs=${warm}M count=1 iflag=fullblock status=none || log "warm-up failed (figures of the first device may be low)"
	fi
fi

work=$(mktemp -d /tmp/nbdloop-bench.XXXXXX) || exit 1
mount -t tmpfs -o size=1100M,mode=700 tmpfs "$work" || fail "cannot mount a tmpfs on $work"
img=$work/disk.img
# nbdloop runs from the tmpfs too: the results share it was copied to has no
# 9p cache in the VM, so every exec (attach, the server) would fetch it again,
# while the other tools come from the cached host root.
mkdir -p "$work/bin" && cp "$nbdloop" "$work/bin/nbdloop" && nbdloop=$work/bin/nbdloop
sock=$work/nbdkit.sock
errfilter_trigger=/nonexistent-trigger # nbdloop-memory-errfilter: must not exist
pidf=$work/nbdkit.pid

# --- devices -----------------------------------------------------------------
# attach_dev KIND sets $dev and $kind (or fails); detach_dev undoes whatever
# was set up.
dev='' kind='' nbdkit_pid=''

# A /dev/nbdN nobody serves: no pid attribute, size 0.
free_nbd() {
	local d
	for d in /sys/block/nbd*; do
		[ -e "$d/pid" ] && continue
		[ "$(cat "$d/size" 2>/dev/null)" = 0 ] || continue
		echo "/dev/${d##*/}"
		return 0
	done
	return 1
}

# wait_free DEV: until the kernel has let go of an NBD device (at most 10 s).
wait_free() {
	local sys=/sys/block/${1#/dev/}
	for _ in $(seq 100); do
		[ ! -e "$sys/pid" ] && [ "$(cat "$sys/size" 2>/dev/null)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

start_nbdkit() { # PLUGIN ARGS...
	rm -f "$sock" "$pidf"
	# No -f: nbdkit forks once its socket listens, so nbd-client can go next.
	nbdkit -U "$sock" -P "$pidf" "$@" >>"$out/tools.log" 2>&1 || return 1
	nbdkit_pid=$(cat "$pidf")
}
stop_nbdkit() {
	[ -n "$nbdkit_pid" ] || return 0
	kill "$nbdkit_pid" 2>/dev/null
	for _ in $(seq 100); do
		kill -0 "$nbdkit_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$nbdkit_pid" 2>/dev/null
	nbdkit_pid=''
}

# state_pid DEV: the pid of nbdloop's current server for DEV, from its state
# record (sysfs keeps the first server's pid across restarts).
state_pid() {
	sed -n 's/^ *"pid": \([0-9]*\),$/\1/p' "/run/nbdloop/${1#/dev/}.json"
}

attach_dev() { # KIND: sets dev
	dev=''
	kind=$1
	case $1 in
	loop)
		dev=$(losetup -f --show "$img") ;;
	nbdloop-memory)
		dev=$("$nbdloop" attach -c "$conns" memory:1G) ;;
	nbdloop-memory-errfilter)
		# Idle: requests fail only while the trigger file exists, and it never does.
		[ ! -e "$errfilter_trigger" ] || { echo "$errfilter_trigger exists: the error filter would not be idle" >&2; return 1; }
		dev=$("$nbdloop" attach -c "$conns" --filter "error:file=$errfilter_trigger,rate=1" memory:1G) ;;
	nbdloop-file)
		dev=$("$nbdloop" attach -c "$conns" "$img") ;;
	ublk-memory)
		dev=$("$nbdloop" attach --driver ublk memory:1G) ;;
	ublk-file)
		dev=$("$nbdloop" attach --driver ublk "$img") ;;
	nbdloop-script)
		dev=$("$nbdloop" attach -c "$conns" "exec:$repo/scripts/examples/ramdisk.sh,file=$img") ;;
	nbdloop-script-persistent)
		dev=$("$nbdloop" attach -c "$conns" "exec:$repo/scripts/examples/file-persistent.py,persistent,timeout=5m,file=$img") ;;
	nbdkit-memory | nbdkit-file | nbdkit-script)
		local d
		d=$(free_nbd) || { echo "no free /dev/nbdN" >&2; return 1; }
		if [ "$1" = nbdkit-memory ]; then
			start_nbdkit memory 1G || return 1
		elif [ "$1" = nbdkit-script ]; then
			start_nbdkit sh "$repo/scripts/examples/ramdisk.sh" file="$img" || return 1
		else
			start_nbdkit file "$img" || return 1
		fi
		nbd-client -unix "$sock" "$d" -N '' -C "$conns" >>"$out/tools.log" 2>&1 || return 1
		dev=$d ;;
	qemu-nbd)
		local d
		d=$(free_nbd) || { echo "no free /dev/nbdN" >&2; return 1; }
		qemu-nbd -c "$d" -f raw "$img" >>"$out/tools.log" 2>&1 || return 1
		dev=$d ;;
	*)
		echo "unknown device $1" >&2
		return 1 ;;
	esac
	[ -b "$dev" ]
}

detach_dev() {
	local rc=0
	case $kind in
	loop)
		[ -z "$dev" ] || losetup -d "$dev" || rc=1 ;;
	nbdloop-* | ublk-*)
		[ -z "$dev" ] || "$nbdloop" detach "$dev" || rc=1 ;;
	nbdkit-*)
		if [ -n "$dev" ]; then
			nbd-client -d "$dev" >>"$out/tools.log" 2>&1 || rc=1
		fi
		stop_nbdkit
		[ -z "$dev" ] || wait_free "$dev" || rc=1 ;;
	qemu-nbd)
		if [ -n "$dev" ]; then
			qemu-nbd -d "$dev" >>"$out/tools.log" 2>&1 || rc=1
			wait_free "$dev" || rc=1
		fi ;;
	esac
	dev='' kind=''
	return $rc
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
	[ -z "$kind" ] || detach_dev
	stop_nbdkit
	declare -F net_cleanup >/dev/null && net_cleanup # groups.sh's net.sh
	declare -F stop_weed >/dev/null && stop_weed # groups.sh's group_s3.sh
	[ -n "${profile_fio:-}" ] && kill "$profile_fio" 2>/dev/null
	umount "$work" 2>/dev/null
	rmdir "$work" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- fio ----------------------------------------------------------------------
# One fio per device runs every workload, one after the other (stonewall),
# each its own group in the JSON: a fio start costs seconds under TCG.
jobfile=$out/fio/jobs.fio
{
	echo "[global]"
	echo "ioengine=libaio"
	echo "direct=1"
	echo "time_based"
	echo "runtime=$runtime"
	echo "ramp_time=$ramp"
	echo "size=$span"
	echo "norandommap"
	echo "randrepeat=0"
	echo "group_reporting"
	for w in "${workloads[@]}"; do
		echo
		echo "[${w%%|*}]"
		echo "stonewall"
		for o in ${w#*|}; do echo "${o#--}"; done
	done
} >"$jobfile"
fio_timeout=$((${#workloads[@]} * (runtime + ramp + 30) + 60))

# run_fio: every workload on $dev into fio/$kind.json; prints IOPS per workload.
run_fio() {
	local json=$out/fio/$kind.json
	timeout -k 5 "$fio_timeout" fio --filename="$dev" --output-format=json --output="$json" "$jobfile" \
		>>"$out/tools.log" 2>&1 || return 1
	awk '/"jobname"/ {gsub(/[",]/, "", $3); n[++k] = $3}
		/"iops" :/ {gsub(/,/, "", $3); s[k] += $3}
		END {for (i = 1; i <= k; i++) printf "bench:   %-18s %8.0f IOPS\n", n[i], s[i]}' "$json"
}

# queue_limits: the block queue settings of $dev, for the record (queues.txt).
queue_limits() {
	local q v n=${dev#/dev/} hw
	for q in max_sectors_kb max_hw_sectors_kb max_segments nr_requests scheduler read_ahead_kb logical_block_size; do
		read -r v <"/sys/block/$n/queue/$q" 2>/dev/null || v='?'
		printf '%s\t%s\t%s\n' "$kind" "$q" "$v"
	done >>"$out/queues.txt"
	hw=(/sys/block/"$n"/mq/*)
	printf '%s\thw_queues\t%s\n' "$kind" "${#hw[@]}" >>"$out/queues.txt"
}

# Fills the span of a memory disk with fio's data, so reads are served from
# pages the server really holds (as on loop and the file devices), not from
# holes.
fill_dev() {
	timeout -k 5 600 fio --name=fill --filename="$dev" --ioengine=libaio --direct=1 \
		--rw=write --bs=1M --iodepth=8 --size="$span" \
		--output-format=json --output="$out/fio/$kind-fill.json" >>"$out/tools.log" 2>&1
}

# profile NAME [record] FIO-OPTIONS...: a run of fio on the current device
# (a memory disk), stopped with SIGINT once done, during which (1) the CPU
# time of every process, of the server's threads and of the whole machine,
# the server's read/write syscall counts (/proc/PID/io) and its threads'
# context switches are read from /proc over BENCH_PROFILE_WINDOW seconds
# (default 3), then (2) with "record", if perf is installed, perf record -a
# -g samples every CPU for as long. Output in OUT/profile/NAME/.
# (No perf stat of syscall tracepoints: enabling them under TCG locked both
# vCPUs up for good in a trial.)
profile() {
	local name=$1 p=$out/profile/$1 pid window=${BENCH_PROFILE_WINDOW:-3} record=''
	shift
	[ "$1" = record ] && { record=1; shift; }
	mkdir -p "$p"
	pid=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "/run/nbdloop/${dev#/dev/}.json" | head -n 1)
	{
		echo "server_pid=$pid"
		echo "clk_tck=$(getconf CLK_TCK)"
		echo "cpus=$ncpu"
		echo "fio=$*"
	} >"$p/meta.txt"
	fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 \
		--time_based --runtime=600 --size="$profile_span" --norandommap --randrepeat=0 \
		--group_reporting --output-format=json --output="$p/fio.json" "$@" \
		>>"$out/tools.log" 2>&1 &
	profile_fio=$!
	sleep $((ramp + 1))
	# Bash builtins only (a fork costs much under TCG when the CPUs are
	# busy); a process vanishing in between only costs its line.
	local t0 t1 when f l k v
	for when in before after; do
		[ "$when" = after ] && sleep "$window"
		[ "$when" = before ] && t0=$(now_us)
		read -r l </proc/stat && echo "$l" >"$p/stat.$when"
		read -r l <"/sys/block/${dev#/dev/}/stat" && echo "$l" >"$p/disk.$when"
		for f in /proc/[0-9]*/stat; do read -r l <"$f" && echo "$l"; done >"$p/pids.$when" 2>/dev/null
		if [ -n "$pid" ]; then
			for f in /proc/"$pid"/task/*/stat; do read -r l <"$f" && echo "$l"; done >"$p/server-threads.$when" 2>/dev/null
			while read -r l; do echo "$l"; done <"/proc/$pid/io" >"$p/server-io.$when" 2>/dev/null
			for f in /proc/"$pid"/task/*/status; do
				while read -r k v; do
					case $k in *ctxt_switches:) echo "$f:$k$v" ;; esac
				done <"$f"
			done >"$p/server-ctxt.$when" 2>/dev/null
		fi
	done
	t1=$(now_us)
	echo "window_us=$((t1 - t0))" >>"$p/meta.txt"
	if [ -n "$record" ]; then
		if [ -n "$has_perf" ]; then
			HOME=$work perf record -q -N -a -g -F 999 -o "$work/perf.data" -- sleep "$window" \
				>>"$p/perf.log" 2>&1 || echo "perf record failed" >>"$p/perf.log"
		else
			echo "perf is not installed (apt-get install linux-perf): no symbol profile" >"$p/perf.log"
		fi
	fi
	top -b -n 1 -w 200 2>/dev/null | head -n 20 >"$p/top.txt"
	kill -INT "$profile_fio" 2>/dev/null
	wait "$profile_fio" # fio's status after SIGINT says little: its output does
	profile_fio=''
	grep -q '"jobs"' "$p/fio.json" 2>/dev/null || fail "profile $name: fio on $kind"
	# shellcheck disable=SC2129 # one report per file
	if [ -s "$work/perf.data" ]; then
		HOME=$work perf report -i "$work/perf.data" --stdio --no-children -g none \
			--sort comm,dso --percent-limit 0.5 >"$p/perf-comm.txt" 2>>"$p/perf.log"
		HOME=$work perf report -i "$work/perf.data" --stdio --no-children -g none \
			--sort comm,symbol --percent-limit 0.3 >"$p/perf-symbols.txt" 2>>"$p/perf.log"
		HOME=$work perf report -i "$work/perf.data" --stdio --children -g none \
			--comm nbdloop --sort symbol --percent-limit 1.5 >"$p/perf-nbdloop-inclusive.txt" 2>>"$p/perf.log"
		HOME=$work perf report -i "$work/perf.data" --stdio --no-children -G \
			--comm nbdloop --percent-limit 2 >"$p/perf-nbdloop-callers.txt" 2>>"$p/perf.log"
		rm -f "$work/perf.data"
	fi
}
has_perf=''
if [ "${BENCH_PERF:-1}" != 0 ] && command -v perf >/dev/null 2>&1 && perf --version >/dev/null 2>&1; then
	has_perf=1
fi
profile_span=${BENCH_PROFILE_SPAN:-32M}

# --- the tmpfs file, then each device ------------------------------------------
{
	echo "mode=$([ "${NBDLOOP_VM:-}" = 1 ] && echo vm || echo native)"
	echo "kernel=$(uname -r)"
	echo "cpus=$ncpu"
	echo "mem_kib=$(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
	echo "connections=$conns"
	echo "runtime_s=$runtime"
	echo "ramp_s=$ramp"
	echo "span=$span"
	echo "devices=$devices"
	echo "errfilter=error:file=$errfilter_trigger,rate=1"
	w=''
	for x in "${workloads[@]}"; do w="$w ${x%%|*}"; done
	echo "workloads=${w# }"
	echo "fio=$(fio --version)"
	echo "nbdkit=$(nbdkit --version 2>&1 | head -n 1)"
	echo "nbd_client=$(nbd-client -V 2>&1 | head -n 1)"
	echo "qemu_nbd=$(qemu-nbd --version 2>&1 | head -n 1)"
	echo "nbdloop=$("$nbdloop" --version 2>&1 | head -n 1)"
	echo "attach_runs=$attach_runs"
	echo "restart_runs=$restart_runs"
} >"$out/meta.txt"

log "filling a 1 GiB tmpfs file ($img)"
fio --name=fill --filename="$img" --size=1G --rw=write --bs=1M --ioengine=psync \
	--output-format=json --output="$out/fio/fill-tmpfs.json" >>"$out/tools.log" 2>&1 ||
	fail "cannot write the 1 GiB tmpfs file"

start_all=$(now_us)
for d in $devices; do
	if ! attach_dev "$d"; then
		fail "$d: attach failed (see tools.log)"
		detach_dev
		continue
	fi
	log "$d on $dev"
	queue_limits
	case $d in
	*-memory | *-memory-errfilter)
		t0=$(now_us)
		fill_dev || fail "$d: filling the memory disk"
		log "  filled $span in $((($(now_us) - t0) / 1000)) ms" ;;
	esac
	t0=$(now_us)
	run_fio || fail "$d: fio"
	log "  fio took $((($(now_us) - t0) / 1000)) ms"
	detach_dev || fail "$d: detach failed"
done
log "fio runs took $((($(now_us) - start_all) / 1000000)) s"

# --- comparison groups (groups.sh) ----------------------------------------------
# shellcheck source=scripts/bench/groups.sh
. "$repo/scripts/bench/groups.sh"
run_groups

# --- attach times ---------------------------------------------------------------
# Wall time of the commands that make a usable device: nbdloop attach returns
# once the device is usable; losetup at once; nbdkit once it listens, then
# nbd-client once connected; qemu-nbd -c once connected.
if [ "$attach_runs" -gt 0 ]; then
	log "attach times ($attach_runs runs each)"
	printf 'kind\tattach_ms\tdetach_ms\n' >"$out/attach.tsv"
	for k in loop nbdloop-file nbdloop-memory nbdkit-file nbdkit-memory qemu-nbd ublk-memory; do
		for _ in $(seq "$attach_runs"); do
			t0=$(now_us)
			if ! attach_dev "$k"; then
				fail "attach time: $k attach failed"
				detach_dev
				break
			fi
			t1=$(now_us)
			detach_dev || fail "attach time: $k detach failed"
			t2=$(now_us)
			printf '%s\t%d.%03d\t%d.%03d\n' "$k" $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)) \
				$(((t2 - t1) / 1000)) $(((t2 - t1) % 1000)) >>"$out/attach.tsv"
		done
	done
fi

# --- restart gap -------------------------------------------------------------------
# kill -9 of a running server, then one 4 KiB direct read at a new offset each
# time: its wall time is what a program on the device waits while the
# supervisor starts a new server and hands it over (RECONFIGURE).
if [ "$restart_runs" -gt 0 ]; then
	log "restart gaps ($restart_runs runs each)"
	printf 'kind\tgap_ms\n' >"$out/restart.tsv"
	for k in nbdloop-file nbdloop-memory ublk-memory; do
		if ! attach_dev "$k"; then
			fail "restart gap: $k attach failed"
			detach_dev
			continue
		fi
		for i in $(seq "$restart_runs"); do
			pid=$(state_pid "$dev")
			t0=$(now_us)
			kill -9 "$pid"
			if ! dd if="$dev" of=/dev/null bs=4k count=1 skip=$((i * 1000)) iflag=direct status=none; then
				fail "restart gap: $k read after kill $i failed"
				break
			fi
			t1=$(now_us)
			printf '%s\t%d.%03d\n' "$k" $(((t1 - t0) / 1000)) $(((t1 - t0) % 1000)) >>"$out/restart.tsv"
			# the next kill must hit the new server, once its record is written
			for _ in $(seq 100); do
				new=$(state_pid "$dev")
				[ -n "$new" ] && [ "$new" != "$pid" ] && break
				sleep 0.05
			done
		done
		detach_dev || fail "restart gap: $k detach failed"
	done
fi

# --- profile ---------------------------------------------------------------------
# Last, so that whatever happens to the machine under perf, the measurements
# above are in.
if [ "${BENCH_PROFILE:-1}" != 0 ]; then
	for k in ${BENCH_PROFILE_DEVICES:-nbdloop-memory ublk-memory}; do
		prefix=''
		[ "$k" = nbdloop-memory ] || prefix=${k%-memory}-
		log "profile runs on $k (4k randread QD32x2, 1M write QD8)"
		if ! attach_dev "$k"; then
			fail "profile: $k attach failed"
			detach_dev
			continue
		fi
		timeout -k 5 300 fio --name=fill --filename="$dev" --ioengine=libaio --direct=1 \
			--rw=write --bs=1M --iodepth=8 --size="$profile_span" --output-format=terse \
			>>"$out/tools.log" 2>&1 || fail "profile: filling the $k disk"
		profile "${prefix}randread-4k-qd32" record --rw=randread --bs=4k --iodepth=32 --numjobs=2
		profile "${prefix}write-1m-qd8" record --rw=write --bs=1M --iodepth=8
		detach_dev || fail "profile: $k detach failed"
	done
fi

[ "$failures" = 0 ] || { log "$failures measurement(s) failed"; exit 1; }
exit 0
}
