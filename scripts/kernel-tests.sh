#!/bin/sh
# kernel-tests.sh: runs the kernel tests (bin/kerneltest.test, built by
# `make kernel-test`) as root against the real NBD driver of the running
# kernel, whichever it is: `make kernel-test` runs this once per kernel of
# the VM harness (Debian 12's 6.1 and Debian 13's 6.12, every test on both;
# see the Makefile). In the VM (scripts/vm/run.sh) the driver starts
# unloaded, so TestNoDriver runs first, then nbd.ko (and ublk_drv where the
# kernel has it) is loaded and every TestKernel* runs. Natively the driver
# may already be loaded; TestNoDriver then needs the VM and is reported as
# such. The first line says which kernel the tests run on.
set -eu
cd "$(dirname "$0")/.."
echo "kernel-tests: Linux $(uname -r)${NBDLOOP_VM:+ (VM, --kernel ${NBDLOOP_VM_KERNEL:-6.1})}"
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
# ublk_drv (Linux 6.0 and later, and a module in Debian 13's 6.12): absent
# from 6.1's package. The ublk tests (TestKernelUblk* here, and package
# ublk's own, bin/ublk.test) run where the kernel has it, and only there:
# on 6.1 they are left out by name (-test.skip), and the line below says so.
skip=''
if load -q ublk_drv 2>/dev/null && [ -e /dev/ublk-control ]; then
	echo "kernel-tests: ublk_drv loaded: the ublk tests run"
	"${t%/*}/ublk.test" -test.v -test.count=1 -test.timeout 10m -test.run '^TestKernel'
else
	echo "kernel-tests: this kernel has no ublk_drv: the ublk tests (TestKernelUblk*, package ublk) do not run here"
	skip='^TestKernelUblk'
fi
# The object-storage tests (TestKernelHTTP*, TestKernelS3*, TestKernelBucket*:
# the fetching and uploading are nbdloop's own, and the kernel sees an
# ordinary nbd device, as in TestKernelFile*) take minutes each under
# emulation (SeaweedFS starting in the guest): in the VM they run on 6.12
# only, so that make check keeps within its time; on 6.1 the line below
# says so. Natively everything runs.
if [ "${NBDLOOP_VM:-}" = 1 ] && [ "${NBDLOOP_VM_KERNEL:-6.1}" = 6.1 ]; then
	echo "kernel-tests: on 6.1 the object-storage tests (TestKernelHTTP*, TestKernelS3*, TestKernelBucket*) do not run: they run on 6.12"
	skip="${skip:+$skip|}^TestKernel(HTTP|S3|Bucket)"
fi
"$t" -test.v -test.count=1 -test.timeout 40m -test.run '^TestKernel' ${skip:+-test.skip "$skip"}
