#!/bin/sh
# demo-steps.sh: the demo itself, run as root where the NBD driver is
# loaded (scripts/demo.sh decides where). It walks the FOSDEM 2019 paper
# "Better loop mounts with NBD" section by section, each command shown
# before it runs, with its output, and ends with the path of the picture of
# mkfs. In the VM the picture goes to the results share ($NBDLOOP_VM_OUT),
# which is the same path on the host.
set -eu
cd "$(dirname "$0")/.."
PATH="$PWD/bin:$PATH"
work=${SCRATCH:-$(mktemp -d /var/tmp/nbdloop-demo.XXXXXX)}/demo
out=${NBDLOOP_VM_OUT:-$work}
mkdir -p "$work" "$work/mnt"
step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; sh -c "$*"; }
# attach ARGS: shows and runs nbdloop attach, leaving the device in $dev.
attach() { printf '$ nbdloop attach %s\n' "$*"; dev=$(nbdloop attach "$@"); echo "$dev"; }
# node PATH: waits (at most 10 s) for a device node: there is no udev to
# wait for.
node() { n=0; until [ -e "$1" ]; do n=$((n + 1)); [ "$n" -lt 100 ] || { echo "demo: $1 did not appear"; exit 1; }; sleep 0.1; done; }
load() { [ -e "/sys/module/$1" ] || scripts/vm/modprobe.sh "$1" 2>/dev/null || modprobe "$1" 2>/dev/null || true; }
cleanup() {
	umount "$work/mnt" 2>/dev/null || true
	mdadm --stop /dev/md0 >/dev/null 2>&1 || true
	[ -z "${lvm:-}" ] || vgchange -q -an nbdloopdemo >/dev/null 2>&1 || true
	nbdloop detach -a --force 2>/dev/null || true
}
trap cleanup EXIT

step "Loop mounts: a raw file, like losetup: attach, mkfs, mount, write, detach"
run "truncate -s 256M $work/disk.img"
attach "$work/disk.img"
run "mkfs.ext4 -q $dev && mount $dev $work/mnt && echo 'hello from nbdloop' > $work/mnt/hello && df -h $work/mnt"
run "umount $work/mnt && nbdloop detach $dev"
run "debugfs -R 'cat /hello' $work/disk.img 2>/dev/null"

step "Mounting xz-compressed disks: a partitioned disk, xz-compressed, attached with -P"
run "truncate -s 64M $work/fedora.img && printf 'label: dos\n,,83\n' | sfdisk -q $work/fedora.img"
attach -P "$work/fedora.img"
run "mkfs.ext4 -q ${dev}p1 && mount ${dev}p1 $work/mnt && mkdir $work/mnt/etc && echo 'Fedora release 26 (Twenty Six)' > $work/mnt/etc/redhat-release && umount $work/mnt"
run "nbdloop detach $dev"
run "xz -0 -T2 --block-size=4MiB -c $work/fedora.img > $work/fedora.img.xz && ls -l $work/fedora.img.xz"
attach -P "$work/fedora.img.xz"
run "ls ${dev}*"
run "blkid -s TYPE ${dev}p1"
run "mount ${dev}p1 $work/mnt; cat $work/mnt/etc/redhat-release"
run "umount $work/mnt && nbdloop detach $dev"

step "Creating a huge btrfs file system in memory: a 2^63-1 byte RAM disk, partitioned"
load btrfs
attach memory:9223372036854775807
run "blockdev --getsize64 $dev"
run "sgdisk -n 1 $dev >/dev/null"
node "${dev}p1"
run "ls ${dev}p1"
run "mkfs.btrfs -q -K ${dev}p1 >/dev/null 2>&1 && mount ${dev}p1 $work/mnt && dd if=/dev/urandom of=$work/mnt/data bs=1M count=16 status=none && df -h $work/mnt"
run "umount $work/mnt && nbdloop detach $dev"

step "Concatenating files into a partitioned disk: ext4 boot, swap and xfs root as one GPT disk"
load xfs
run "truncate -s 64M $work/boot.img && mkfs.ext4 -q $work/boot.img"
run "truncate -s 32M $work/swap.img && mkswap -q $work/swap.img"
mkdir -p "$work/rootfs" && echo 'hello from root.img' > "$work/rootfs/hello.txt"
printf '/dev/null\n0 0\nd--755 0 0\nhello.txt ---644 0 0 %s\n$\n' "$work/rootfs/hello.txt" > "$work/proto"
run "truncate -s 300M $work/root.img && mkfs.xfs -q -p $work/proto $work/root.img"
attach --partitions -P "$work/boot.img" "$work/swap.img" "$work/root.img"
run "sgdisk -p $dev | sed -n '/^Number/,\$p'"
run "blkid -p -s TYPE -s PART_ENTRY_NAME ${dev}p1 ${dev}p2 ${dev}p3"
run "mount ${dev}p3 $work/mnt && cat $work/mnt/hello.txt && echo written through p3 > $work/mnt/new.txt && umount $work/mnt"
run "nbdloop detach $dev && nbdloop attach -r --run 'mount -o ro,norecovery \$DEVICE $work/mnt && cat $work/mnt/new.txt && umount $work/mnt' $work/root.img"

step "Mounting a VMware VMDK file: two partitions, LVM logical volumes inside"
load dm_mod
# LVM without udev, seeing only NBD devices, writing no backups to /etc.
printf 'devices {\n obtain_device_list_from_udev = 0\n use_devicesfile = 0\n filter = [ "a|^/dev/nbd|", "r|.*|" ]\n}\nactivation {\n udev_sync = 0\n udev_rules = 0\n monitoring = 0\n}\nbackup {\n backup = 0\n archive = 0\n}\n' > "$work/lvm.conf"
lvm=1
export LVM_SYSTEM_DIR="$work" LVM_SUPPRESS_FD_WARNINGS=1
run "truncate -s 256M $work/testlinux.raw && printf 'label: dos\n,96M,83\n,,8e\n' | sfdisk -q $work/testlinux.raw"
attach -P "$work/testlinux.raw"
run "mkfs.ext4 -q ${dev}p1 && pvcreate -q ${dev}p2 && vgcreate -q nbdloopdemo ${dev}p2 && lvcreate -q -L 64M -n lv_root nbdloopdemo && lvcreate -q -l 100%FREE -n lv_swap nbdloopdemo"
node /dev/nbdloopdemo/lv_root
run "mkfs.ext4 -q /dev/nbdloopdemo/lv_root && vgchange -q -an nbdloopdemo && nbdloop detach $dev"
run "qemu-img convert -f raw -O vmdk $work/testlinux.raw $work/TestLinux-disk1.vmdk && qemu-img info $work/TestLinux-disk1.vmdk | head -3"
attach -P "$work/TestLinux-disk1.vmdk"
run "blkid -s TYPE ${dev}p1 ${dev}p2"
run "pvscan -q --cache && vgchange -q -ay nbdloopdemo && ls /dev/nbdloopdemo/"
node /dev/nbdloopdemo/lv_root
run "mount /dev/nbdloopdemo/lv_root $work/mnt && touch $work/mnt/hello && ls $work/mnt && umount $work/mnt"
run "vgchange -q -an nbdloopdemo && nbdloop detach $dev && qemu-img check $work/TestLinux-disk1.vmdk"

step "Testing a RAID array: six RAM disks whose reads fail once a trigger file exists"
load raid456
devs=""
for i in 0 1 2 3 4 5; do
	attach -c 1 --filter "error:file=$work/error$i" memory:64M
	devs="$devs $dev"
done
echo 500000 > /proc/sys/dev/raid/speed_limit_min 2>/dev/null || true
run "mdadm --create /dev/md0 --level=5 --raid-devices=5 --spare-devices=1 --run --quiet $devs && mdadm --wait /dev/md0; cat /proc/mdstat | grep -A1 ^md0"
run "mkfs.ext4 -q -b 4096 -E lazy_itable_init=1,lazy_journal_init=1 /dev/md0 && mount /dev/md0 $work/mnt && head -c 8M /dev/urandom > $work/mnt/data && sync && sha256sum $work/mnt/data | cut -c1-16"
set -- $devs
first=$1 second=$2
# failed DEV WHAT: waits (at most 2 minutes) until md marks DEV failed,
# reading the file meanwhile so that the bad disk is read.
failed() {
	n=0
	until grep -q "$(basename "$1")\[[0-9]*\](F)" /proc/mdstat; do
		echo 3 > /proc/sys/vm/drop_caches
		cat "$work/mnt/data" >/dev/null 2>&1 || true
		n=$((n + 1)); [ "$n" -lt 240 ] || { echo "demo: $1 was not marked failed"; exit 1; }
		sleep 0.5
	done
}
run "touch $work/error0"
failed "$first"
run "mdadm --wait /dev/md0; grep -A1 ^md0 /proc/mdstat"
run "touch $work/error1"
failed "$second"
run "grep -A1 ^md0 /proc/mdstat; sha256sum $work/mnt/data | cut -c1-16"
run "grep -m1 'injected EIO into read' /run/nbdloop/$(basename "$first").log || true"
run "umount $work/mnt && mdadm --stop /dev/md0 && rm -f $work/error* && nbdloop detach $devs"

step "Writing a Linux block device in shell script: scripts/examples/ramdisk.sh"
run "sed -n '2,6p' scripts/examples/ramdisk.sh"
attach "exec:$PWD/scripts/examples/ramdisk.sh,size=32M"
run "mkfs.ext4 -q $dev && mount $dev $work/mnt && echo 'written through a shell script' > $work/mnt/hello && cat $work/mnt/hello && umount $work/mnt"
run "nbdloop detach $dev"

step "Logging and visualization: every request of mkfs.ext4, drawn"
attach --filter "log:file=$work/mkfs.jsonl" memory:256M
run "mkfs.ext4 -q -F $dev && nbdloop detach $dev && wc -l < $work/mkfs.jsonl"
run "nbdloop draw $work/mkfs.jsonl --image-size 256 -o $out/mkfs.png && ls -l $out/mkfs.png"

step "More than the paper: --run, list, detach refusing a mounted device"
run "nbdloop attach --run 'blockdev --getsize64 \$DEVICE && mkfs.ext4 -q \$DEVICE' $work/disk.img"
attach "$work/disk.img"
first=$dev
attach -r -c 1 "$work/fedora.img.xz"
dev2=$dev dev=$first
run "nbdloop list"
run "nbdloop list --json | head -20"
run "mount $dev $work/mnt && nbdloop detach $dev || true"
run "umount $work/mnt && nbdloop detach $dev $dev2 && nbdloop list"

step "Errors are one line, and leave nothing behind"
run "nbdloop attach /nonexistent.img || true"
run "head -c 1000 /dev/zero > $work/odd.img; nbdloop attach $work/odd.img || true"
run "nbdloop attach memory:12Q || true"
run "nbdloop list --json"
echo
echo "demo: done; the picture of mkfs.ext4's requests: $out/mkfs.png"
