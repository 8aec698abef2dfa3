#!/bin/bash
# setup.sh: prepare the kernel and initramfs that scripts/vm/run.sh boots.
#
# Usage: scripts/vm/setup.sh [-q]
#
# Why a VM at all: the development and CI machines run a kernel with no NBD
# driver and no module loading, and have no /dev/kvm. So the kernel tests boot
# Debian 12's generic kernel under qemu (TCG), with the host's root file system
# shared read-only over 9p; see shared/reference/kernel-vm.md.
#
# Idempotent, and quick (well under 0.1 s) once done, so run.sh calls it on
# every run.
# The cache dir is $NBDLOOP_VM_CACHE, default $REPO/.cache/vm, or
# ${XDG_CACHE_HOME:-~/.cache}/nbdloop/vm for a checkout under /tmp, /run or
# /var/tmp. It must be visible in the guest, so not under those (tmpfs there).
#
# Env: NBDLOOP_VM_CACHE         cache dir (see above)
#      NBDLOOP_VM_KERNEL_PKG    kernel package to use instead of the one that
#                               linux-image-amd64 depends on
#
# Output (stdout, unless -q): shell assignments of the paths, also kept in
# $CACHE/vm.env for run.sh to source.
set -eu

# Braces: bash reads a script as it runs it, so an edit to this file would
# derail runs in progress; a compound command is read whole before it starts.
{

quiet=''
if [ "${1:-}" = -q ]; then quiet=1; shift; fi
if [ $# -ne 0 ]; then
	echo "usage: $0 [-q]" >&2
	exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

die() { echo "setup.sh: $*" >&2; exit 1; }

# The guest mounts fresh tmpfs on these, which would hide the kernel modules.
hidden_in_guest() {
	case $1/ in /tmp/* | /run/* | /var/tmp/* | /dev/* | /proc/* | /sys/*) return 0 ;; esac
	return 1
}
# The default cache is in the checkout, unless the checkout is where the
# guest cannot see it (a clone under /tmp, where people try things): then it
# is the user's cache directory, shared by such clones.
if [ -n "${NBDLOOP_VM_CACHE:-}" ]; then
	cache=$(realpath -m "$NBDLOOP_VM_CACHE")
	hidden_in_guest "$cache" &&
		die "cache dir $cache is hidden inside the VM (tmpfs there): set NBDLOOP_VM_CACHE to a directory outside /tmp, /run and /var/tmp"
elif ! hidden_in_guest "$repo"; then
	cache=$repo/.cache/vm
else
	cache=$(realpath -m "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/nbdloop/vm")
	hidden_in_guest "$cache" && cache=/var/cache/nbdloop/vm
fi
mkdir -p "$cache"

# Bump when the layout of the cache changes, so that old caches get rebuilt.
# The stamp also records the checksums of this script and of the initramfs's
# init, so an edit to either rebuilds too.
layout=1
self_sum=$(cat "${BASH_SOURCE[0]}" "$here/initramfs-init" | cksum)
self_sum=${self_sum%% *}
stamp=$cache/ready
envfile=$cache/vm.env

show() {
	[ -n "$quiet" ] || cat "$envfile"
}

# Fast path, without taking the lock or calling apt-cache (1+ s here, as
# apt keeps no binary package cache): the stamp is current unless this
# script changed or the package lists were updated since (a newer kernel
# package may then exist).
fresh() {
	[ -f "$stamp" ] && [ -f "$envfile" ] || return 1
	[ "$(sed -n 1p "$stamp")" = "layout=$layout sum=$self_sum pin=${NBDLOOP_VM_KERNEL_PKG:-}" ] || return 1
	[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$stamp" 2>/dev/null | head -n 1)" ]
}
if fresh; then
	show
	exit 0
fi

# Two run.sh started at once on a fresh cache must not build it twice.
exec 9>"$cache/.lock"
flock 9
if fresh; then
	show
	exit 0
fi

# Tools the harness itself needs on the host (and, through the shared root,
# in the guest: mkfs.ext4 for the scratch disk, modprobe for modules).
# The test suite's own tools (nbdkit, nbd-client, mdadm, ...) are its business.
need_pkgs="qemu-system-x86 busybox-static cpio kmod e2fsprogs util-linux xz-utils"
missing=()
for p in $need_pkgs; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = installed ] || missing+=("$p")
done
apt_updated=''
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup.sh: installing ${missing[*]}" >&2
	apt-get update -qq >&2
	apt_updated=1
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Resolve the generic kernel flavour (the -cloud- one has no 9p).
resolve_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}
pkg=${NBDLOOP_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
	pkg=$(resolve_pkg)
	if [ -z "$pkg" ] && [ -z "$apt_updated" ]; then
		# Fresh machine: no package lists yet.
		apt-get update -qq >&2
		pkg=$(resolve_pkg)
	fi
	[ -n "$pkg" ] || die "cannot resolve the kernel package: 'apt-cache depends linux-image-amd64' names no linux-image-*-amd64"
fi
kver=${pkg#linux-image-}
kdir=$cache/kernel/$kver

fetch_kernel() {
	echo "setup.sh: fetching $pkg" >&2
	rm -rf "$cache/debs.tmp" "$kdir" "$kdir.tmp"
	mkdir -p "$cache/debs.tmp"
	# Sandbox user root: apt's _apt user may not be able to write the cache
	# dir, and apt would print a warning about it on every download.
	(cd "$cache/debs.tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || return 1
	mkdir -p "$kdir.tmp"
	dpkg -x "$cache"/debs.tmp/"$pkg"_*.deb "$kdir.tmp"
	# The unpacked tree is the cache: the .deb (70 MB) and docs are no use.
	rm -rf "$cache/debs.tmp" "$kdir.tmp/usr/share/doc"
	mv "$kdir.tmp" "$kdir"
	touch "$kdir/.unpacked"
}
if [ ! -f "$kdir/.unpacked" ] && ! fetch_kernel; then
	# A newer kernel is announced but cannot be had: keep testing on the one
	# we have rather than not at all.
	rm -rf "$cache/debs.tmp"
	old=''
	for f in "$cache"/kernel/*/.unpacked; do [ -f "$f" ] && old=${f%/.unpacked}; done
	[ -n "$old" ] || die "cannot download $pkg"
	kdir=$old
	kver=$(basename "$kdir")
	echo "setup.sh: cannot download $pkg; using the kernel in $kdir" >&2
	pkg=linux-image-$kver
fi
[ -d "$kdir/lib/modules/$kver" ] || die "$kdir/lib/modules/$kver missing after unpacking $pkg"
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "$vmlinuz missing after unpacking $pkg"

# Boot the uncompressed ELF kernel when we can: qemu starts it directly at its
# PVH entry point, which skips the BIOS's real-mode loader and, above all, the
# kernel's own xz decompression, slow under TCG (a boot that powers off at
# once: 5.1 s -> 2.4 s). Extract it the way the kernel's scripts/extract-vmlinux does; xz complains
# about the data after the stream, so judge by the ELF magic instead.
vmlinux=$kdir/boot/vmlinux-$kver
if [ ! -f "$vmlinux" ]; then
	rm -f "$vmlinux.tmp"
	pos=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1)
	if [ -n "$pos" ]; then
		tail -c +$((pos + 1)) "$vmlinuz" | xz -dc >"$vmlinux.tmp" 2>/dev/null || true
	fi
	if [ "$(head -c 4 "$vmlinux.tmp" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
		mv "$vmlinux.tmp" "$vmlinux"
	else
		rm -f "$vmlinux.tmp"
		echo "setup.sh: cannot extract an ELF vmlinux from $vmlinuz; booting it compressed (slower)" >&2
	fi
fi
kernel=$vmlinuz
[ -f "$vmlinux" ] && kernel=$vmlinux

# Older kernels only take space; a run using one right now would have loaded
# its initramfs already (it may fail to modprobe, but that is a rare race).
for d in "$cache"/kernel/*; do
	[ -d "$d" ] && [ "$d" != "$kdir" ] && rm -rf "$d"
done

# modules.dep for modprobe -d, in the guest as well as here.
if [ ! -f "$kdir/lib/modules/$kver/modules.dep" ] ||
	[ "$kdir/lib/modules/$kver/modules.dep" -ot "$kdir/.unpacked" ]; then
	depmod -b "$kdir" "$kver"
fi

# The initramfs holds what it takes to mount the host root over 9p and the
# scratch disk (virtio_blk, ext4). Those could be modprobe'd from the host root
# too, but insmod from the initramfs is quicker (~0.7 s less per boot).
# Everything else (nbd, md, dm, xfs, btrfs) the guest loads itself with
# scripts/vm/modprobe.sh.
# The order matters (virtio before virtio_ring fails with "unknown symbol"),
# so take it from modprobe --show-depends rather than writing it down here.
initrd=$cache/initramfs.cpio.gz
stage=$cache/initramfs.d
rm -rf "$stage"
mkdir -p "$stage"/bin "$stage"/dev "$stage"/proc "$stage"/sys \
	"$stage"/host "$stage"/out "$stage"/modules
cp /bin/busybox "$stage/bin/busybox"
# So the kernel can open an initial console before init has mounted devtmpfs.
mknod "$stage/dev/console" c 5 1 2>/dev/null || true
: >"$stage/modules/order"
for m in virtio_pci 9pnet_virtio 9p virtio_blk ext4; do
	modprobe -d "$kdir" -S "$kver" --show-depends "$m"
done | while read -r verb path _; do
	[ "$verb" = insmod ] || continue
	name=$(basename "$path")
	# Shared dependencies show up once per module that needs them.
	grep -qxF "$name" "$stage/modules/order" && continue
	cp "$path" "$stage/modules/$name"
	echo "$name" >>"$stage/modules/order"
done
for m in 9p.ko virtio_blk.ko ext4.ko; do
	grep -qxF "$m" "$stage/modules/order" || die "$m not found in $pkg"
done
cp "$here/initramfs-init" "$stage/init"
chmod 755 "$stage/init"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
	cpio -o -0 -H newc -R 0:0 --quiet) | gzip -1 >"$initrd.tmp"
mv "$initrd.tmp" "$initrd"
rm -rf "$stage"

cat >"$envfile.tmp" <<EOF
NBDLOOP_VM_CACHE='$cache'
KVER='$kver'
NBDLOOP_KDIR='$kdir'
NBDLOOP_VM_KERNEL='$kernel'
NBDLOOP_VM_INITRD='$initrd'
EOF
mv "$envfile.tmp" "$envfile"
echo "layout=$layout sum=$self_sum pin=${NBDLOOP_VM_KERNEL_PKG:-}" >"$stamp"
show
exit
}
