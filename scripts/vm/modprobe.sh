#!/bin/sh
# modprobe.sh: load a kernel module, in the VM of scripts/vm/run.sh or on a
# real Linux host.
#
# Usage: scripts/vm/modprobe.sh MODULE [PARAM=VALUE...]
#        scripts/vm/modprobe.sh -a MODULE...   (any modprobe options work)
# e.g.   scripts/vm/modprobe.sh nbd nbds_max=16 max_part=16
#
# In the VM the modules are not under /lib/modules (that is the host's, read-
# only, for another kernel) but in the kernel package that setup.sh unpacked,
# whose root run.sh exports as NBDLOOP_KDIR: modprobe -d reads that tree
# (modules.dep from setup.sh's depmod) and resolves dependencies as usual.
# Outside the VM (NBDLOOP_KDIR unset) this is plain modprobe.
#
# Parameters: modprobe takes the host's /etc/modprobe.d (nbd-client ships
# "options nbd max_part=15"), then the kernel command line (run.sh boots with
# nbd.nbds_max=16 nbd.max_part=16), then the ones given here; the last wins.
# (The driver then reports max_part=31: it rounds up to a power of 2 minus 1.)
set -eu

# /usr/sbin is not always in a caller's PATH.
PATH=$PATH:/usr/sbin:/sbin
if [ -n "${NBDLOOP_KDIR:-}" ]; then
	exec modprobe -d "$NBDLOOP_KDIR" "$@"
fi
exec modprobe "$@"
