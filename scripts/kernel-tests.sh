#!/bin/sh
# kernel-tests.sh: runs the kernel tests (bin/kerneltest.test, built by
# `make kernel-test`) as root against the real NBD driver. In the VM
# (scripts/vm/run.sh) the driver starts unloaded, so TestNoDriver runs first,
# then nbd.ko is loaded and every TestKernel* runs. Natively the driver may
# already be loaded; TestNoDriver then needs the VM and is reported as such.
set -eu
cd "$(dirname "$0")/.."
export NBDLOOP_BIN="$PWD/bin/nbdloop"
t=bin/kerneltest.test
if [ "${NBDLOOP_VM:-}" = 1 ]; then
	load() { scripts/vm/modprobe.sh "$@"; }
else
	load() { modprobe "$@"; }
fi
if [ ! -e /sys/module/nbd ]; then
	"$t" -test.v -test.count=1 -test.run '^TestNoDriver$'
	load nbd nbds_max=16 max_part=16
else
	echo "kernel-tests: nbd is loaded already; TestNoDriver runs only in the VM (make check without NBDLOOP_NATIVE)"
fi
for m in btrfs raid456 xfs; do load "$m" || true; done
"$t" -test.v -test.count=1 -test.timeout 40m -test.run '^TestKernel'
