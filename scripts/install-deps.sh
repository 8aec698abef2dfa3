#!/bin/sh
# install-deps.sh: installs the Debian packages that the tests and the VM
# harness use, if any is missing. Idempotent and quiet when nothing is
# missing.
set -eu
need=""
check() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
check qemu-system-x86_64 qemu-system-x86
check busybox busybox-static
check cpio cpio
check depmod kmod
check mkfs.ext4 e2fsprogs
check debugfs e2fsprogs
check mkfs.btrfs btrfs-progs
check sgdisk gdisk
check sfdisk fdisk
check mkfs.xfs xfsprogs
check mkfs.vfat dosfstools
check mkswap util-linux
check xz xz-utils
check zstd zstd
check gzip gzip
check blkdiscard util-linux
check setpriv util-linux
check mdadm mdadm
check qemu-img qemu-utils
check lvm lvm2
check nbdkit nbdkit
check chromium-headless-shell chromium-headless-shell
[ -x /sbin/blkid ] || [ -x /usr/sbin/blkid ] || need="$need util-linux"
if [ -n "$need" ]; then
	echo "install-deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
