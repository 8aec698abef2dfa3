#!/bin/sh
# deps.sh: installs what `make bench` measures with, if any is missing
# (Debian packages): fio, nbdkit, nbd-client, qemu-nbd (qemu-utils), losetup,
# and for the network groups nbdcopy (libnbd-bin), certtool (gnutls-bin) and
# python3.
# The s3 group's SeaweedFS is built by scripts/install-seaweedfs.sh (no
# Debian package), run last.
# Idempotent and quiet when nothing is missing. perf (linux-perf) is
# optional: the profile run uses it when present.
set -eu
PATH=$PATH:/usr/sbin:/sbin
need=""
check() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
check fio fio
check nbdkit nbdkit
check nbd-client nbd-client
check qemu-nbd qemu-utils
check losetup mount
check nbdcopy libnbd-bin
check certtool gnutls-bin
check python3 python3
check nginx nginx
check curl curl
# nbdkit's curl plugin is in Debian's nbdkit up to bookworm, a package of its
# own after.
if command -v nbdkit >/dev/null 2>&1 && ! nbdkit curl --dump-plugin >/dev/null 2>&1; then
	need="$need nbdkit-plugin-curl"
fi
if [ -n "$need" ]; then
	echo "bench deps: installing$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
"$(dirname "$0")/../install-seaweedfs.sh" -q
