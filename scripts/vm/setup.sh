#!/bin/bash
# setup.sh: prepare the kernel and initramfs that scripts/vm/run.sh boots.
#
# Usage: scripts/vm/setup.sh [-q] [--kernel 6.1|6.12]
#
# Why a VM at all: the development and CI machines run a kernel with no NBD
# driver and no module loading, and have no /dev/kvm. So the kernel tests boot
# a Debian generic kernel under qemu (TCG), with the host's root file system
# shared read-only over 9p; see shared/reference/kernel-vm.md.
#
# Kernels (--kernel, default $NBDLOOP_VM_KERNEL, else 6.1):
#   6.1   Debian 12's (bookworm) linux-image-amd64, through the host's apt
#   6.12  Debian 13's (trixie) linux-image-amd64, through a private apt state
#         in the cache dir (its own sources list, package lists and status
#         file: the host's apt configuration, lists and packages are not
#         touched, and nothing from trixie is installed); its lists are
#         refreshed when a week old. It has ublk_drv besides nbd.
# Each kernel has its own subdirectory of the cache dir.
#
# Idempotent, and quick (well under 0.1 s) once done, so run.sh calls it on
# every run.
# The cache dir is $NBDLOOP_VM_CACHE, default $REPO/.cache/vm, or
# ${XDG_CACHE_HOME:-~/.cache}/nbdloop/vm for a checkout under /tmp, /run or
# /var/tmp. It must be visible in the guest, so not under those (tmpfs there).
#
# Env: NBDLOOP_VM_CACHE         cache dir (see above)
#      NBDLOOP_VM_KERNEL        6.1 or 6.12 when --kernel is not given
#      NBDLOOP_VM_KERNEL_PKG    kernel package to use instead of the one that
#                               linux-image-amd64 depends on (of the suite
#                               of the kernel chosen)
#      NBDLOOP_VM_MIRROR        Debian mirror for 6.12 (default
#                               http://deb.debian.org); the security suite
#                               comes from the same host's debian-security
#
# Output (stdout, unless -q): shell assignments of the paths, also kept in
# $CACHE/KERNEL/vm.env for run.sh to source: NBDLOOP_VM_CACHE (the cache
# dir), NBDLOOP_VM_KERNEL (6.1 or 6.12), KVER, NBDLOOP_KDIR (the unpacked
# package), NBDLOOP_VM_VMLINUX, NBDLOOP_VM_INITRD.
set -eu

# Braces: bash reads a script as it runs it, so an edit to this file would
# derail runs in progress; a compound command is read whole before it starts.
{

quiet=''
kernel=${NBDLOOP_VM_KERNEL:-6.1}
usage() {
	echo "usage: $0 [-q] [--kernel 6.1|6.12]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	-q) quiet=1; shift ;;
	--kernel) kernel=${2:-}; [ $# -ge 2 ] || usage; shift 2 ;;
	--kernel=*) kernel=${1#--kernel=}; shift ;;
	*) usage ;;
	esac
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

die() { echo "setup.sh: $*" >&2; exit 1; }

case $kernel in
6.1) suite=bookworm ;;
6.12) suite=trixie ;;
*) die "unknown kernel '$kernel' (--kernel or NBDLOOP_VM_KERNEL): 6.1 (Debian 12) or 6.12 (Debian 13)" ;;
esac

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
# Each kernel has its own directory: kernel/KVER (the unpacked package),
# the initramfs, vm.env and the stamp; for 6.12 also apt/ (the private apt
# state). The runs/ of run.sh are shared. (Layout 1 kept one kernel at the
# top: its kernel/, initramfs.cpio.gz, vm.env and ready may be deleted.)
kcache=$cache/$kernel
mkdir -p "$kcache"

# Bump when the layout of the cache changes, so that old caches get rebuilt.
# The stamp also records the checksums of this script and of the initramfs's
# init, so an edit to either rebuilds too.
layout=2
self_sum=$(cat "${BASH_SOURCE[0]}" "$here/initramfs-init" | cksum)
self_sum=${self_sum%% *}
stamp=$kcache/ready
envfile=$kcache/vm.env
stamp_line="layout=$layout sum=$self_sum pin=${NBDLOOP_VM_KERNEL_PKG:-}"

# The private apt of 6.12: its own sources list (trixie and trixie-security,
# signed by the Debian archive keyring the host has), lists, status file
# (empty: nothing is installed from it) and caches; the host's apt.conf.d is
# still read (proxies), but its preferences and sources are not. Only
# update, depends and download are ever run with it.
adir=$kcache/apt
mirror=${NBDLOOP_VM_MIRROR:-http://deb.debian.org}
apt_private() {
	local tool=$1
	shift
	"$tool" -q -o Dir::Etc::SourceList="$adir/sources.list" \
		-o Dir::Etc::SourceParts="$adir/none" \
		-o Dir::Etc::Preferences="$adir/none/preferences" \
		-o Dir::Etc::PreferencesParts="$adir/none" \
		-o Dir::State="$adir/state" -o Dir::State::status="$adir/state/status" \
		-o Dir::Cache="$adir/cache" \
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false \
		-o APT::Architecture=amd64 -o Acquire::Languages=none \
		-o APT::Sandbox::User=root "$@"
}
sources() {
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	echo "deb [signed-by=$key] $mirror/debian $suite main"
	echo "deb [signed-by=$key] $mirror/debian-security $suite-security main"
}
# The private lists are a week old, missing or from another mirror: time to
# update them.
private_lists_stale() {
	[ -n "$(find "$adir/updated" -mmin -10080 2>/dev/null)" ] || return 0
	[ "$(cat "$adir/sources.list" 2>/dev/null)" != "$(sources)" ]
}

show() {
	[ -n "$quiet" ] || cat "$envfile"
}

# Fast path, without taking the lock or calling apt-cache (1+ s here, as
# apt keeps no binary package cache): the stamp is current unless this
# script changed or the package lists were updated since (a newer kernel
# package may then exist), or for 6.12 the private lists are a week old.
fresh() {
	[ -f "$stamp" ] && [ -f "$envfile" ] || return 1
	[ "$(sed -n 1p "$stamp")" = "$stamp_line" ] || return 1
	if [ "$kernel" = 6.1 ]; then
		[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$stamp" 2>/dev/null | head -n 1)" ]
	else
		! private_lists_stale
	fi
}
if fresh; then
	show
	exit 0
fi

# Two run.sh started at once on a fresh cache must not build it twice.
exec 9>"$kcache/.lock"
flock 9
if fresh; then
	show
	exit 0
fi

# Tools the harness itself needs on the host (and, through the shared root,
# in the guest: mkfs.ext4 for the scratch disk, modprobe for modules).
# The test suite's own tools (nbdkit, nbd-client, mdadm, ...) are its business.
# xz and zstd: the kernels' compressed images and modules.
need_pkgs="qemu-system-x86 busybox-static cpio kmod e2fsprogs util-linux xz-utils zstd"
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

# apt-get or apt-cache for the suite of the kernel chosen.
kapt() {
	if [ "$kernel" = 6.1 ]; then
		"$@"
	else
		apt_private "$@"
	fi
}
if [ "$kernel" != 6.1 ] && private_lists_stale; then
	mkdir -p "$adir/none" "$adir/state/lists/partial" "$adir/cache/archives/partial"
	: >>"$adir/state/status"
	rm -f "$adir/updated"
	sources >"$adir/sources.list"
	echo "setup.sh: updating the private package lists of $suite ($adir)" >&2
	if apt_private apt-get update >&2; then
		touch "$adir/updated"
	else
		echo "setup.sh: cannot update the package lists of $suite" >&2
	fi
fi

# Resolve the generic kernel flavour (the -cloud- one has no 9p).
resolve_pkg() {
	kapt apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}
pkg=${NBDLOOP_VM_KERNEL_PKG:-}
if [ -z "$pkg" ]; then
	pkg=$(resolve_pkg)
	if [ -z "$pkg" ] && [ -z "$apt_updated" ] && [ "$kernel" = 6.1 ]; then
		# Fresh machine: no package lists yet.
		apt-get update -qq >&2
		pkg=$(resolve_pkg)
	fi
	[ -n "$pkg" ] || echo "setup.sh: cannot resolve the kernel package of $suite: 'apt-cache depends linux-image-amd64' names no linux-image-*-amd64" >&2
fi
kver='' kdir=''
if [ -n "$pkg" ]; then
	kver=${pkg#linux-image-}
	kdir=$kcache/kernel/$kver
fi

fetch_kernel() {
	[ -n "$pkg" ] || return 1
	echo "setup.sh: fetching $pkg ($suite)" >&2
	rm -rf "$kcache/debs.tmp" "$kdir" "$kdir.tmp"
	mkdir -p "$kcache/debs.tmp"
	# Sandbox user root: apt's _apt user may not be able to write the cache
	# dir, and apt would print a warning about it on every download.
	(cd "$kcache/debs.tmp" && kapt apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) || return 1
	mkdir -p "$kdir.tmp"
	dpkg -x "$kcache"/debs.tmp/"$pkg"_*.deb "$kdir.tmp"
	# The unpacked tree is the cache: the .deb (70-110 MB) and docs are no use.
	rm -rf "$kcache/debs.tmp" "$kdir.tmp/usr/share/doc"
	# Debian 13's package has its modules in usr/lib (merged /usr), where
	# depmod -b and modprobe -d do not look.
	[ -e "$kdir.tmp/lib" ] || ln -s usr/lib "$kdir.tmp/lib"
	mv "$kdir.tmp" "$kdir"
	touch "$kdir/.unpacked"
}
if [ -z "$pkg" ] || { [ ! -f "$kdir/.unpacked" ] && ! fetch_kernel; }; then
	# A newer kernel is announced but cannot be had: keep testing on the one
	# we have rather than not at all.
	rm -rf "$kcache/debs.tmp"
	old=''
	for f in "$kcache"/kernel/*/.unpacked; do [ -f "$f" ] && old=${f%/.unpacked}; done
	[ -n "$old" ] || die "cannot download ${pkg:-the kernel of $suite}"
	kdir=$old
	kver=$(basename "$kdir")
	echo "setup.sh: cannot download ${pkg:-the kernel of $suite}; using the kernel in $kdir" >&2
	pkg=linux-image-$kver
fi
[ -d "$kdir/lib/modules/$kver" ] || die "$kdir/lib/modules/$kver missing after unpacking $pkg"
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "$vmlinuz missing after unpacking $pkg"

# Boot the uncompressed ELF kernel when we can: qemu starts it directly at its
# PVH entry point, which skips the BIOS's real-mode loader and, above all, the
# kernel's own decompression, slow under TCG (a boot that powers off at
# once: 5.1 s -> 2.4 s). Extract it the way the kernel's
# scripts/extract-vmlinux does (6.1's image is xz, 6.12's zstd); the
# decompressors complain about the data after the stream, so judge by the ELF
# magic instead.
vmlinux=$kdir/boot/vmlinux-$kver
extract() { # MAGIC-REGEX DECOMPRESSOR...
	local pos
	pos=$(LC_ALL=C grep -obUaP "$1" "$vmlinuz" | head -n 1 | cut -d: -f1)
	shift
	[ -n "$pos" ] || return 1
	tail -c +$((pos + 1)) "$vmlinuz" | "$@" >"$vmlinux.tmp" 2>/dev/null
	[ "$(head -c 4 "$vmlinux.tmp" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]
}
if [ ! -f "$vmlinux" ]; then
	rm -f "$vmlinux.tmp"
	if extract '\xfd7zXZ\x00' xz -dc || extract '\x28\xb5\x2f\xfd' zstd -dcq; then
		mv "$vmlinux.tmp" "$vmlinux"
	else
		rm -f "$vmlinux.tmp"
		echo "setup.sh: cannot extract an ELF vmlinux from $vmlinuz; booting it compressed (slower)" >&2
	fi
fi
boot=$vmlinuz
[ -f "$vmlinux" ] && boot=$vmlinux

# Older kernels of this series only take space; a run using one right now
# would have loaded its initramfs already (it may fail to modprobe, but that
# is a rare race).
for d in "$kcache"/kernel/*; do
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
# Everything else (nbd, ublk_drv, md, dm, xfs, btrfs) the guest loads itself
# with scripts/vm/modprobe.sh.
# The order matters (virtio before virtio_ring fails with "unknown symbol"),
# so take it from modprobe --show-depends rather than writing it down here;
# built-in ones (6.12 has virtio_pci built in) show as "builtin".
# Compressed modules (6.12's are .ko.xz) are unpacked: busybox's insmod takes
# plain ones only.
initrd=$kcache/initramfs.cpio.gz
stage=$kcache/initramfs.d
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
	file=$(basename "$path")
	name=${file%.xz}
	name=${name%.zst}
	# Shared dependencies show up once per module that needs them.
	grep -qxF "$name" "$stage/modules/order" && continue
	case $file in
	*.ko.xz) xz -dc "$path" >"$stage/modules/$name" ;;
	*.ko.zst) zstd -dcq "$path" >"$stage/modules/$name" ;;
	*) cp "$path" "$stage/modules/$name" ;;
	esac
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
NBDLOOP_VM_KERNEL='$kernel'
KVER='$kver'
NBDLOOP_KDIR='$kdir'
NBDLOOP_VM_VMLINUX='$boot'
NBDLOOP_VM_INITRD='$initrd'
EOF
mv "$envfile.tmp" "$envfile"
echo "$stamp_line" >"$stamp"
show
exit
}
