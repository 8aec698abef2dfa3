#!/bin/sh
# install-seaweedfs.sh: builds SeaweedFS's `weed` (the S3 server the tests
# run, internal/s3test) from its Go module at a pinned version, once, and
# prints the binary's path. Idempotent; well under a second once built.
#
# Usage: scripts/install-seaweedfs.sh [-q]     (-q: print nothing)
#
# Why built here: Debian has no SeaweedFS package, and `go install
# MODULE/weed@VERSION` is refused because SeaweedFS's go.mod has replace
# directives. So the module is downloaded through the Go module proxy, its
# source copied out of the read-only module cache, and `weed` built in it.
# -trimpath keeps file paths out of the build, so Go's build cache serves
# the same build to every checkout (the first build takes minutes).
#
# Where: $NBDLOOP_SEAWEEDFS_CACHE, default $REPO/.cache/seaweedfs, or
# ${XDG_CACHE_HOME:-~/.cache}/nbdloop/seaweedfs for a checkout under /tmp,
# /run or /var/tmp (the kernel tests' VM mounts fresh tmpfs there, and runs
# the binary too). internal/s3test finds it by the same rule.
set -eu

version=v0.0.0-20261109003541-7506e5f91cd6
module=github.com/seaweedfs/seaweedfs

quiet=''
if [ "${1:-}" = -q ]; then quiet=1; shift; fi
if [ $# -ne 0 ]; then
	echo "usage: $0 [-q]" >&2
	exit 2
fi

repo=$(realpath "$(dirname "$0")/..")
hidden_in_guest() {
	case $1/ in /tmp/* | /run/* | /var/tmp/*) return 0 ;; esac
	return 1
}
if [ -n "${NBDLOOP_SEAWEEDFS_CACHE:-}" ]; then
	cache=$(realpath -m "$NBDLOOP_SEAWEEDFS_CACHE")
elif ! hidden_in_guest "$repo"; then
	cache=$repo/.cache/seaweedfs
else
	cache=$(realpath -m "${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/nbdloop/seaweedfs")
fi
bin=$cache/weed-$version

show() {
	[ -n "$quiet" ] || echo "$bin"
}
if [ -x "$bin" ]; then
	show
	exit 0
fi

mkdir -p "$cache"
# Two runs at once on a fresh cache must not build it twice.
exec 9>"$cache/.lock"
flock 9
if [ -x "$bin" ]; then
	show
	exit 0
fi

echo "install-seaweedfs: building SeaweedFS $version (weed; minutes the first time)" >&2
dir=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -f "$dir/go.mod" ] || {
	echo "install-seaweedfs: go mod download $module@$version gave no source directory (is the Go module proxy reachable?)" >&2
	exit 1
}
src=$(mktemp -d "$cache/src.XXXXXX")
trap 'rm -rf "$src"' EXIT
cp -R "$dir/." "$src"
chmod -R u+w "$src"
(cd "$src" && GOFLAGS="${GOFLAGS:-} -buildvcs=false" go build -trimpath -o "$src/weed.new" ./weed)
"$src/weed.new" version >/dev/null 2>&1
mv "$src/weed.new" "$bin"
show
