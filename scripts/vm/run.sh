#!/bin/bash
# run.sh: run a shell command as root in a throw-away VM whose kernel has the
# NBD driver (and md, dm, ext4, xfs, btrfs) available as modules.
#
# Usage: scripts/vm/run.sh [options] [--] COMMAND...
#
# COMMAND (its words joined by spaces, as ssh does) runs with `/bin/sh -c`
# semantics in the caller's current directory, inside a qemu (TCG) VM booted
# with a Debian generic kernel (--kernel), whose root is the host's root, read-only
# (over 9p). Its stdout and stderr are streamed here (both to stdout), and
# run.sh exits with its exit status; or with 1 and a message if the VM ended
# without one (kernel panic, failed boot, timeout).
#
# Options:
#   --kernel 6.1|6.12   the kernel to boot: Debian 12's 6.1 (default, unless
#                       NBDLOOP_VM_KERNEL says) or Debian 13's 6.12, which
#                       also has ublk_drv (setup.sh fetches either)
#   --timeout SECS      kill the VM after SECS seconds (default 1500)
#   --mem MiB           guest memory (default 3072)
#   --smp N             guest CPUs (default 2)
#   --scratch-size SIZE size of the scratch disk (default 4G; sparse)
#   --out DIR           results share (default: a new dir under the cache,
#                       $CACHE/runs/ID/out; the last 10 runs are kept)
#   -e NAME[=VALUE]     pass NAME from this environment (or set it) in the
#                       guest; may be repeated
#   -v                  print the whole console log at the end
#
# In the guest, the command sees:
#   SCRATCH          an empty ext4 file system on a virtio disk, writable
#                    (/var/tmp/scratch); use it for big images: /tmp, /run and
#                    /var/tmp are tmpfs in guest memory
#   NBDLOOP_VM=1
#   NBDLOOP_VM_OUT   the results share: the one writable place whose files
#                    outlive the VM (same path inside and outside)
#   NBDLOOP_KDIR     root of the unpacked kernel package (modprobe -d DIR)
#   KVER             its version (= uname -r in the guest)
#   NBDLOOP_VM_KERNEL  6.1 or 6.12
#   PATH, HOME, TERM, LANG from the caller; USER=root; nothing else unless -e
# The NBD driver is NOT loaded (tests first check how nbdloop copes without
# it): load it with
#   scripts/vm/modprobe.sh nbd nbds_max=16 max_part=16
# and md, dm, xfs, btrfs (and on 6.12 ublk_drv) likewise. (ext4 and virtio_blk are loaded already.)
# The loopback interface is up (nbdkit's default localhost:10809 works); there
# is no other network. There is no udev.
#
# Limits: everything the command runs must be visible in the guest, so not
# under /tmp, /run or /var/tmp of the host (fresh tmpfs in the guest), except
# the current directory's checkout (or the current directory), which the
# guest binds back at its path: build test binaries into the repo (e.g.
# $CACHE/bin), not into go's temp dir (or use
# `go test -exec scripts/vm/goexec.sh`). The host root is read-only in
# the guest (so are $HOME and go's caches), and host files rewritten in place
# during a run may look stale inside (9p cache=loose).
#
# run.sh says which kernel it boots on stderr ("run.sh: Linux KVER").
#
# Env: NBDLOOP_VM_CACHE     cache dir (see setup.sh)
#      NBDLOOP_VM_KERNEL    6.1 or 6.12 when --kernel is not given
#      NBDLOOP_VM_9P_CACHE  9p cache mode of the host root: loose (default),
#                           none (slower, never stale)
#      NBDLOOP_VM_KARGS     extra kernel command line (e.g. loglevel=7)
#      NBDLOOP_VM_TRACE=1   boot step timestamps in the console log
set -eu

# Braces: bash reads a script as it runs it, so an edit to this file would
# derail runs in progress; a compound command is read whole before it starts.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

help() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
usage() {
	echo "usage: $0 [options] [--] COMMAND...  (--help for more)" >&2
	exit 2
}
die() { echo "run.sh: $*" >&2; exit 1; }

kernel=${NBDLOOP_VM_KERNEL:-6.1} timeout=1500 mem=3072 smp=2 scratch_size=4G outdir='' verbose=''
pass_env=()
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--scratch-size) scratch_size=${2:?}; shift 2 ;;
	--out) outdir=${2:?}; shift 2 ;;
	-e) pass_env+=("${2:?}"); shift 2 ;;
	-v) verbose=1; shift ;;
	-h | --help) help; exit 0 ;;
	--) shift; break ;;
	-*) echo "run.sh: unknown option $1" >&2; usage ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage
cmd="$*"

# Directories the guest covers with fresh tmpfs (or kernel file systems):
# nothing there is visible inside.
hidden_in_guest() {
	case $1/ in /tmp/* | /run/* | /var/tmp/* | /dev/* | /proc/* | /sys/*) return 0 ;; esac
	return 1
}

# A current directory under /tmp, /run or /var/tmp (a clone made there) is
# covered by the guest's tmpfs: the guest's init binds it back at the same
# path (read-only, as the rest of the host). The whole checkout if it is one,
# so that the command can reach the repository's other files.
cwd=$(pwd -P)
keep=''
if hidden_in_guest "$cwd"; then
	case $cwd/ in /dev/* | /proc/* | /sys/*) die "cannot run in $cwd (a kernel file system in the guest)" ;; esac
	keep=$(git -C "$cwd" rev-parse --show-toplevel 2>/dev/null || true)
	case $cwd/ in "$keep"/*) ;; *) keep=$cwd ;; esac
	case $keep in /tmp | /run | /var/tmp) keep=$cwd ;; esac
	case $keep in /tmp | /run | /var/tmp) die "cannot run in $cwd itself (the guest's own tmpfs); run from a directory inside it" ;; esac
fi

# setup.sh prints NBDLOOP_VM_CACHE, NBDLOOP_VM_KERNEL, KVER, NBDLOOP_KDIR,
# NBDLOOP_VM_VMLINUX, NBDLOOP_VM_INITRD; it is quick once done.
vm_env=$("$here/setup.sh" --kernel "$kernel") || die "setup.sh --kernel $kernel failed"
eval "$vm_env"

runs=$NBDLOOP_VM_CACHE/runs
mkdir -p "$runs"
# Keep the last 10 runs' logs and results; older ones only take space. But
# never remove one still running (others may run VMs at the same time): a run
# is over once it has its `done` file, or a day after its start if run.sh was
# killed before writing it.
# shellcheck disable=SC2012 # names are ours: date-pid
ls -1t "$runs" | tail -n +11 | while read -r old; do
	d=$runs/$old
	if [ -e "$d/done" ] || [ -n "$(find "$d" -maxdepth 0 -mmin +1440)" ]; then
		rm -rf "$d"
	fi
done
rundir=$runs/$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$rundir"
out=${outdir:-$rundir/out}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
case $out/ in /dev/* | /proc/* | /sys/*) die "--out $out is a kernel file system in the guest" ;; esac
rm -f "$out/status" "$out/status.tmp"
: >"$out/output"
log=$rundir/console.log
scratch=$rundir/scratch.img
scratch_mnt=/var/tmp/scratch

# Single quotes for sh, so any value survives the trip.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Read by the initramfs's init (see initramfs-init).
{
	echo "GUEST_OUT=$(q "$out")"
	echo "GUEST_SCRATCH=$(q "$scratch_mnt")"
	echo "KVER=$(q "$KVER")"
	echo "GUEST_HOST_CACHE=$(q "${NBDLOOP_VM_9P_CACHE:-loose}")"
	echo "GUEST_TRACE=$(q "${NBDLOOP_VM_TRACE:-}")"
	echo "GUEST_KEEP=$(q "$keep")"
} >"$out/guest.env"

# The command's whole environment (init runs it under env -i).
{
	echo "export PATH=$(q "${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}")"
	# sbin is where the tests' tools (mkfs.*, mdadm, nbd-client) live.
	# shellcheck disable=SC2016 # expands in the guest
	echo 'case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin ;; esac'
	echo "export HOME=$(q "${HOME:-/root}")"
	echo "export TERM=$(q "${TERM:-dumb}")"
	[ -n "${LANG:-}" ] && echo "export LANG=$(q "$LANG")"
	echo "export USER=root LOGNAME=root"
	for e in "${pass_env[@]+"${pass_env[@]}"}"; do
		name=${e%%=*}
		[[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "-e $e: not a variable name"
		if [ "$name" = "$e" ]; then
			[ -n "${!name+set}" ] || continue
			value=${!name}
		else
			value=${e#*=}
		fi
		echo "export $name=$(q "$value")"
	done
	echo "export SCRATCH=$(q "$scratch_mnt")"
	echo "export NBDLOOP_VM=1"
	echo "export NBDLOOP_VM_OUT=$(q "$out")"
	echo "export NBDLOOP_KDIR=$(q "$NBDLOOP_KDIR")"
	echo "export KVER=$(q "$KVER")"
	echo "export NBDLOOP_VM_KERNEL=$(q "$NBDLOOP_VM_KERNEL")"
	echo "cd $(q "$cwd") || exit 125"
	echo "exec /bin/sh -c $(q "$cmd")"
} >"$out/cmd.sh"

# Sparse, and new each run so no state leaks from one run to the next.
# mkfs here rather than in the guest: natively it takes 30 ms, under TCG
# about a second. lazy_itable_init=0 spares the guest ext4's background
# zeroing thread (the zeroing is hole punching on a file, so cheap here).
rm -f "$scratch"
truncate -s "$scratch_size" "$scratch"
PATH=$PATH:/usr/sbin:/sbin mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=1 "$scratch" ||
	die "mkfs.ext4 of the scratch disk $scratch failed"

qemu_pid='' tail_pid=''
# shellcheck disable=SC2317 # called by the traps
cleanup() {
	if [ -n "$qemu_pid" ]; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	if [ -n "$tail_pid" ]; then
		kill "$tail_pid" 2>/dev/null || true
	fi
	rm -f "$scratch"
	: >"$rundir/done"
}
trap cleanup EXIT
# Exit through cleanup on the signals that stop us (go test sends QUIT on
# its timeout), so no qemu outlives run.sh.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 131' QUIT
trap 'exit 143' TERM

# qboot, a minimal firmware, gets to the kernel faster than SeaBIOS (~0.3 s).
firmware=()
[ -f /usr/share/qemu/qboot.rom ] && firmware=(-bios /usr/share/qemu/qboot.rom)

echo "run.sh: Linux $KVER (--kernel $NBDLOOP_VM_KERNEL)" >&2
start=$(date +%s%N)
# -cpu max: TCG's default CPU lacks SSE4.2, and ext4's crc32c-intel wants it.
# The serial console on stdout, into the log; stdin from /dev/null (CI has
# none, and qemu would put a terminal into raw mode).
# timeout kills qemu (after -k, hard) if the guest never powers off.
# no_timer_check: on a loaded host TCG can deliver the 8254 timer's first
# interrupts late, and the kernel's IO-APIC timer check then panics at boot
# ("IO-APIC + timer doesn't work!"); virtual machines skip that check.
timeout -k 10 "$timeout" qemu-system-x86_64 \
	-nodefaults -no-user-config -display none -serial stdio \
	-accel tcg,thread=multi -cpu max -m "$mem" -smp "$smp" \
	-no-reboot "${firmware[@]+"${firmware[@]}"}" \
	-kernel "$NBDLOOP_VM_VMLINUX" -initrd "$NBDLOOP_VM_INITRD" \
	-append "console=ttyS0 quiet panic=-1 no_timer_check nbd.nbds_max=16 nbd.max_part=16 ${NBDLOOP_VM_KARGS:-}" \
	-virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$out,mount_tag=out,security_model=none" \
	-drive "file=$scratch,format=raw,if=virtio,cache=unsafe" \
	</dev/null >"$log" 2>&1 &
qemu_pid=$!

# Stream the command's output as the guest writes it (it appends, so tail
# never sees a truncation); tail stops once qemu is gone.
tail -n +1 -s 0.2 -f --pid="$qemu_pid" "$out/output" &
tail_pid=$!

qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=
wait "$tail_pid" || true
tail_pid=
ms=$((($(date +%s%N) - start) / 1000000))
elapsed=$((ms / 1000)).$(printf %03d $((ms % 1000)))

if [ -n "$verbose" ]; then
	echo "--- run.sh: VM console log ($log):" >&2
	cat "$log" >&2
	echo "--- run.sh: VM ran ${elapsed} s; results in $out" >&2
fi

if [ ! -f "$out/status" ]; then
	if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
		why="timed out after $timeout s (--timeout)"
	elif grep -q 'Kernel panic' "$log"; then
		why="kernel panicked before the command's end"
	else
		why="stopped without the command's exit status (qemu exit $qemu_rc): failed boot?"
	fi
	if [ -z "$verbose" ]; then
		echo "--- run.sh: last lines of the VM console log ($log):" >&2
		tail -n 40 "$log" >&2
	fi
	die "the VM $why"
fi
rc=$(cat "$out/status")
# Kernel warnings and oopses show on the console (quiet = warnings and up):
# worth seeing when the command failed, if there is any.
if [ "$rc" != 0 ] && [ -z "$verbose" ]; then
	notes=$(grep -v -e 'reboot: Power down' -e 'EXT4-fs (vda)' "$log" | tail -n 20)
	if [ -n "$notes" ]; then
		echo "--- run.sh: command exited $rc; last lines of the VM console log ($log):" >&2
		printf '%s\n' "$notes" >&2
	fi
fi
exit "$rc"
}
