#!/bin/sh
# install-deps.sh: installs the Debian packages that the tests, `make demo`
# and the VM harness use, if any is missing. Idempotent and quiet when
# nothing is missing. Each package is checked by a command it provides;
# kerneltest's TestDepsInstalled holds this list against the commands the
# tests and scripts run, so add a line here with every new tool.
set -eu
PATH=$PATH:/usr/sbin:/sbin
need=""
check() {
	command -v "$1" >/dev/null 2>&1 && return
	case " $need " in *" $2 "*) ;; *) need="$need $2" ;; esac
}
# check_file FILE PACKAGE: for a package that installs no command.
check_file() {
	[ -e "$1" ] && return
	case " $need " in *" $2 "*) ;; *) need="$need $2" ;; esac
}
check qemu-system-x86_64 qemu-system-x86
check busybox busybox-static
check cpio cpio
check depmod kmod
check modprobe kmod
check rmmod kmod
check make make
check mkfs.ext4 e2fsprogs
check debugfs e2fsprogs
check e2fsck e2fsprogs
check fsck.ext4 e2fsprogs
check dumpe2fs e2fsprogs
check chattr e2fsprogs
check resize2fs e2fsprogs
check mkfs.btrfs btrfs-progs
check sgdisk gdisk
check sfdisk fdisk
check fdisk fdisk
check mkfs.xfs xfsprogs
check mkfs.vfat dosfstools
check mkswap util-linux
check swapon mount
check swapoff mount
check fstrim util-linux
check xz xz-utils
check zstd zstd
check gzip gzip
check blkdiscard util-linux
check setpriv util-linux
check unshare util-linux
check mdadm mdadm
check qemu-img qemu-utils
check qemu-io qemu-utils
check qemu-nbd qemu-utils
check fio fio
check nbd-client nbd-client
check nbd-server nbd-server
check python3 python3
check groff groff-base
check lvm lvm2
check vgchange lvm2
check nbdkit nbdkit
check nginx nginx
check curl curl
check chromium-headless-shell chromium-headless-shell
check blkid util-linux
check nbdinfo libnbd-bin
check nbdcopy libnbd-bin
check nbdsh python3-libnbd
check zsh zsh
check fish fish
check systemd-analyze systemd
check systemd-socket-activate systemd
check certtool gnutls-bin
# libnbd's interop tests (TestServeLibnbdInterop, scripts/libnbd-source.sh).
check gcc gcc
check pkg-config pkg-config
check dpkg-source dpkg-dev
check apt-cache apt
check_file /usr/include/libnbd.h libnbd-dev
if [ -n "$need" ]; then
	echo "install-deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
# SeaweedFS, the S3 server of the tests (internal/s3test): no Debian
# package; built from its Go module at a pinned version.
"$(dirname "$0")/install-seaweedfs.sh" -q
