#!/bin/sh
# demo.sh (make demo): attaches the paper's examples with bin/nbdloop and
# shows each step and its result. Natively when run as root on a host where
# the NBD driver is loaded or loadable; otherwise inside the VM harness
# (scripts/vm), which this machine's kind needs (no NBD driver here), on
# Debian 13's Linux 6.12 unless NBDLOOP_VM_KERNEL says 6.1.
set -eu
cd "$(dirname "$0")/.."
[ -x bin/nbdloop ] || make -s build
if [ "$(id -u)" = 0 ] && { [ -e /sys/module/nbd ] || modprobe nbd 2>/dev/null; }; then
	echo "demo: running natively (kernel $(uname -r))"
	exec scripts/demo-steps.sh
fi
kernel=${NBDLOOP_VM_KERNEL:-6.12}
echo "demo: no NBD driver here; running in the VM harness (qemu, Debian's Linux $kernel)"
scripts/install-deps.sh
scripts/vm/setup.sh --kernel "$kernel" >/dev/null
exec scripts/vm/run.sh --kernel "$kernel" --timeout 1800 -- 'scripts/vm/modprobe.sh nbd nbds_max=16 max_part=16 && scripts/vm/modprobe.sh btrfs && scripts/demo-steps.sh'
