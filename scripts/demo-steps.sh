#!/bin/sh
# demo-steps.sh: the demo itself, run as root where the NBD driver is
# loaded (scripts/demo.sh decides where). Every command is shown before it
# runs, with its output.
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/bin:$PATH"
work=${SCRATCH:-$(mktemp -d /var/tmp/nbdloop-demo.XXXXXX)}/demo
mkdir -p "$work" "$work/mnt"
step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; sh -c "$*"; }
# attach ARGS: shows and runs nbdloop attach, leaving the device in $dev.
attach() { printf '$ nbdloop attach %s\n' "$*"; dev=$(nbdloop attach "$@"); echo "$dev"; }
cleanup() { nbdloop detach -a --force 2>/dev/null || true; }
trap cleanup EXIT

step "A raw file, like losetup: attach, mkfs, mount, write, detach"
run "truncate -s 256M $work/disk.img"
attach "$work/disk.img"
run "mkfs.ext4 -q $dev && mount $dev $work/mnt && echo 'hello from nbdloop' > $work/mnt/hello && df -h $work/mnt"
run "umount $work/mnt && nbdloop detach $dev"
run "debugfs -R 'cat /hello' $work/disk.img 2>/dev/null"

step "The paper's 2^63-1 byte RAM disk, partitioned, with btrfs"
attach memory:9223372036854775807
run "blockdev --getsize64 $dev"
run "sgdisk -n 1 $dev >/dev/null && sleep 0.2 && ls ${dev}p1"
run "mkfs.btrfs -q -K ${dev}p1 >/dev/null 2>&1 && mount ${dev}p1 $work/mnt && dd if=/dev/urandom of=$work/mnt/data bs=1M count=16 status=none && df -h $work/mnt"

step "Two devices at once: list and list --json"
first=$dev
attach -r -c 1 "$work/disk.img"
dev2=$dev dev=$first
run "nbdloop list"
run "nbdloop list --json"

step "detach refuses a mounted device, then detaches after umount"
run "nbdloop detach $dev || true"
run "umount $work/mnt && nbdloop detach $dev $dev2 && nbdloop list"

step "attach --run: attach, run a command with \$DEVICE, detach"
run "nbdloop attach --run 'blockdev --getsize64 \$DEVICE && mkfs.ext4 -q \$DEVICE' $work/disk.img"
run "blkid $work/disk.img"

step "A partitioned image with --partscan: p1..p3 exist when attach returns"
run "truncate -s 64M $work/parts.img && sgdisk -n 1:0:+8M -n 2:0:+8M -n 3:0:0 $work/parts.img >/dev/null"
attach -r -P "$work/parts.img"
run "ls ${dev}p*"
run "nbdloop detach $dev"

step "The paper's disk from partition files: ext4 boot, swap and xfs root as one GPT disk"
run "truncate -s 64M $work/boot.img && mkfs.ext4 -q $work/boot.img"
run "truncate -s 32M $work/swap.img && mkswap -q $work/swap.img"
mkdir -p "$work/rootfs" && echo 'hello from root.img' > "$work/rootfs/hello.txt"
printf '/dev/null\n0 0\nd--755 0 0\nhello.txt ---644 0 0 %s\n$\n' "$work/rootfs/hello.txt" > "$work/proto"
run "truncate -s 300M $work/root.img && mkfs.xfs -q -p $work/proto $work/root.img"
[ -e /sys/module/xfs ] || scripts/vm/modprobe.sh xfs 2>/dev/null || true
attach --partitions -P "$work/boot.img" "$work/swap.img" "$work/root.img"
run "sgdisk -p $dev | sed -n '/^Number/,\$p'"
run "blkid -p -s TYPE -s PART_ENTRY_NAME ${dev}p1 ${dev}p2 ${dev}p3"
run "mount ${dev}p3 $work/mnt && cat $work/mnt/hello.txt && echo written through p3 > $work/mnt/new.txt && umount $work/mnt"
run "nbdloop list"
run "nbdloop detach $dev && nbdloop attach -r --run 'mount -o ro,norecovery \$DEVICE $work/mnt && cat $work/mnt/new.txt && umount $work/mnt' $work/root.img"

step "Errors are one line, and leave nothing behind"
run "nbdloop attach /nonexistent.img || true"
run "head -c 1000 /dev/zero > $work/odd.img; nbdloop attach $work/odd.img || true"
run "nbdloop attach memory:12Q || true"
run "nbdloop list --json"
echo
echo "demo: done"
