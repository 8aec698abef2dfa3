#!/bin/sh
# libnbd-source.sh: fetches the source of the libnbd that Debian's
# libnbd-dev is built from (apt-get source, with Debian's patches applied by
# dpkg-source), caches the parts the interop tests use (interop/, tests/,
# common/include/), and prints the directory they are in. The
# tests of cmd/nbdloop compile libnbd's interop tests (its interop/
# directory) from it against libnbd-dev, with nbdloop serve as the server.
# libnbd's code is read at test time, never copied into this repository.
#
# Usage: scripts/libnbd-source.sh
#
# The cache is $NBDLOOP_LIBNBD_CACHE, default $REPO/.cache/libnbd, or
# ${XDG_CACHE_HOME:-~/.cache}/nbdloop/libnbd for a checkout under /tmp,
# shared by such clones. Quick once done: the unpacked tree is kept per
# version.
#
# Needs libnbd-dev, dpkg-dev and apt's deb-src lines for the release: as
# root, it adds them in a file of their own
# (/etc/apt/sources.list.d/nbdloop-deb-src.sources) and runs apt-get update
# when apt knows no source for libnbd.
set -eu

repo=$(realpath "$(dirname "$0")/..")
die() { echo "libnbd-source.sh: $*" >&2; exit 1; }

if [ -n "${NBDLOOP_LIBNBD_CACHE:-}" ]; then
	cache=$NBDLOOP_LIBNBD_CACHE
else
	case $repo/ in
	/tmp/* | /var/tmp/*)
		home=${HOME:-/root}
		cache=${XDG_CACHE_HOME:-$home/.cache}/nbdloop/libnbd
		;;
	*) cache=$repo/.cache/libnbd ;;
	esac
fi

# The source package and version that libnbd-dev was built from.
version=$(dpkg-query -W -f '${source:Version}' libnbd-dev 2>/dev/null) ||
	die "libnbd-dev is not installed (run scripts/install-deps.sh)"
[ -n "$version" ] || die "libnbd-dev is not installed (run scripts/install-deps.sh)"
src=$cache/libnbd-$version
if [ -f "$src/interop/interop.c" ]; then
	echo "$src"
	exit 0
fi

if ! apt-cache showsrc libnbd 2>/dev/null | grep -qx 'Package: libnbd'; then
	[ "$(id -u)" = 0 ] ||
		die "apt has no deb-src lines for libnbd (as root, run this script once, or add deb-src lines for your release)"
	. /etc/os-release
	list=/etc/apt/sources.list.d/nbdloop-deb-src.sources
	printf '%s\n' "# Added by scripts/libnbd-source.sh of nbdloop: the sources of the Debian" \
		"# packages, for the interop tests of libnbd." "Types: deb-src" "URIs: http://deb.debian.org/debian" \
		"Suites: $VERSION_CODENAME" "Components: main" \
		"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$list"
	apt-get update -qq >/dev/null ||
		die "apt-get update failed with the deb-src lines in $list (check the network)"
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt checks the files against the signed Sources index; as root it warns
# that _apt cannot write to $work, which does not matter here.
chmod 755 "$work"
(cd "$work" && apt-get source -qq --download-only "libnbd=$version" >/dev/null 2>&1) ||
	die "apt-get source libnbd=$version failed (is $version still in the archive? apt-get update)"
dsc=$(ls "$work"/libnbd_*.dsc)
# --no-check: apt has checked the files' hashes against the signed index.
dpkg-source -q --no-check -x "$dsc" "$work/libnbd" >/dev/null ||
	die "dpkg-source could not unpack $dsc"
[ -f "$work/libnbd/interop/interop.c" ] || die "libnbd $version has no interop/interop.c"
# Only what the interop programs include and read is kept: the rest holds
# Go bindings, which gofmt -l . in the checkout would take for ours.
mkdir -p "$work/keep/common"
mv "$work/libnbd/interop" "$work/libnbd/tests" "$work/libnbd/COPYING.LIB" "$work/keep/"
mv "$work/libnbd/common/include" "$work/keep/common/"
rm -rf "$src"
mv "$work/keep" "$src"
echo "$src"
