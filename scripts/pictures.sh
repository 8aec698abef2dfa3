#!/bin/sh
# pictures.sh: reproduces the paper's three pictures of how the kernel uses
# a device, on a memory device with --filter log: mkfs.ext4; writing files
# and then deleting half of them; fstrim. It draws each log with
# nbdloop draw into docs/pictures/ (PNG, and a small GIF of mkfs).
# Natively when run as root where the NBD driver is loaded or loadable;
# otherwise inside the VM harness (scripts/vm), like scripts/demo.sh.
#
# Usage: scripts/pictures.sh [OUTDIR]     (default docs/pictures)
# NBDLOOP_BIN names the nbdloop binary (default bin/nbdloop, built if
# missing).
set -eu
cd "$(dirname "$0")/.."
out=${1:-docs/pictures}
NBDLOOP_BIN=${NBDLOOP_BIN:-$PWD/bin/nbdloop}
export NBDLOOP_BIN

# steps WORKDIR: the demos; logs and pictures go to WORKDIR.
steps() {
	w=$1
	nbd() { "$NBDLOOP_BIN" "$@"; }
	echo "pictures: 1. mkfs.ext4 on a 512 MiB memory device"
	dev=$(nbd attach --filter "log:file=$w/mkfs.jsonl" memory:512M)
	mkfs.ext4 -q -F "$dev"
	nbd detach "$dev"

	echo "pictures: 2. writing 24 files, deleting half of them; 3. fstrim"
	dev=$(nbd attach --filter "log:file=$w/all.jsonl" memory:512M)
	mkfs.ext4 -q -F -E nodiscard "$dev"
	mnt=$(mktemp -d)
	mount -o nodiscard "$dev" "$mnt"
	# mark: the number of log lines once everything so far is written out
	# (the log filter writes its lines every second).
	mark() { sync; sleep 2; wc -l < "$w/all.jsonl"; }
	m0=$(mark)
	i=1
	while [ $i -le 24 ]; do
		dd if=/dev/urandom of="$mnt/file$i" bs=1M count=$((2 + i % 7)) status=none
		i=$((i + 1))
	done
	sync
	i=1
	while [ $i -le 24 ]; do
		rm "$mnt/file$i"
		i=$((i + 2))
	done
	m1=$(mark)
	fstrim -v "$mnt"
	m2=$(mark)
	umount "$mnt"
	rmdir "$mnt"
	nbd detach "$dev"
	sed -n "$((m0 + 1)),${m1}p" "$w/all.jsonl" > "$w/files.jsonl"
	sed -n "$((m1 + 1)),${m2}p" "$w/all.jsonl" > "$w/fstrim.jsonl"
	rm "$w/all.jsonl"
	wc -l "$w"/*.jsonl

	for d in mkfs files fstrim; do
		nbd draw "$w/$d.jsonl" --device-size 512M --image-size 256 -o "$w/$d.png"
	done
	nbd draw "$w/mkfs.jsonl" --device-size 512M --image-size 128 --frames 16 -o "$w/mkfs.gif"
	nbd draw "$w/files.jsonl" --device-size 512M --image-size 256 --frames 40 -o "$w/files.html"
}

if [ "${PICTURES_STEPS:-}" ]; then
	steps "$PICTURES_STEPS"
	exit
fi
[ -x "$NBDLOOP_BIN" ] || make -s build
mkdir -p "$out"
if [ "$(id -u)" = 0 ] && { [ -e /sys/module/nbd ] || modprobe nbd 2>/dev/null; }; then
	echo "pictures: running natively (kernel $(uname -r))"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	steps "$work"
else
	echo "pictures: no NBD driver here; running in the VM harness (qemu, Debian's kernel)"
	scripts/install-deps.sh
	scripts/vm/setup.sh >/dev/null
	# The guest writes to the results share; /tmp is not shared with it.
	work=$PWD/.cache/pictures
	rm -rf "$work"
	mkdir -p "$work"
	scripts/vm/run.sh --timeout 900 --out "$work/vm" -e NBDLOOP_BIN -- \
		'scripts/vm/modprobe.sh nbd nbds_max=16 max_part=16 && PICTURES_STEPS=$NBDLOOP_VM_OUT scripts/pictures.sh'
	work=$work/vm
fi
cp "$work"/*.png "$work"/mkfs.gif "$out"/
echo "pictures: wrote $(cd "$out" && echo *.png *.gif) to $out (the HTML page stays in $work)"
ls -l "$out"
