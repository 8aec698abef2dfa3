#!/bin/sh
# Second stage of the VM's boot, run by the initramfs's /init inside
# `chroot /host` (so with the host's tools), with the results share as $1.
#
# Prepares the scratch disk and runs the command that run.sh wrote into
# $1/cmd.sh, its output appended to $1/output (which run.sh streams) and its
# exit status written to $1/status last: a status file means the command ran
# to its end, whatever this script's own exit.
# Messages of this script go to the serial console (run.sh's console log).
set -eu

out=$1
# Inherited from the initramfs, where only /bin (busybox) exists.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
. "$out/guest.env"
here=$(dirname "$GUEST_STAGE2")

say() { echo "guest-stage2: $*"; }
t() { [ -z "${GUEST_TRACE:-}" ] || say "$(cut -d' ' -f1 /proc/uptime) $*"; }

if [ "$(uname -r)" != "$KVER" ]; then
	say "running kernel $(uname -r), but the modules are for $KVER"
	exit 1
fi

# virtio_blk and ext4 are modules in the Debian kernel, and not in the
# initramfs: loading them here checks modprobe.sh on every boot.
t modprobe
NBDLOOP_KDIR=$GUEST_KDIR "$here/modprobe.sh" -a virtio_blk ext4

# The scratch disk appears asynchronously once virtio_blk has probed it.
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	if [ $i -gt 100 ]; then
		say "no scratch disk /dev/vda after 10 s"
		exit 1
	fi
	sleep 0.1
done
t mkfs
# No discard: the image is a fresh sparse file. Lazy init: mkfs writes less.
mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=1,lazy_journal_init=1 /dev/vda
mkdir -p "$GUEST_SCRATCH"
t mount
mount -o noatime /dev/vda "$GUEST_SCRATCH"
chmod 1777 "$GUEST_SCRATCH"

t command
set +e
env -i /bin/sh "$out/cmd.sh" </dev/null >>"$out/output" 2>&1
rc=$?
set -e
# Write then rename, so run.sh never reads a half-written status.
echo $rc >"$out/status.tmp"
mv "$out/status.tmp" "$out/status"
t done
sync
