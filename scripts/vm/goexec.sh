#!/bin/bash
# goexec.sh: a `go test -exec` program that runs each test binary in the VM
# of run.sh.
#
# Usage: go test -exec "$PWD/scripts/vm/goexec.sh" [go test flags] ./kernel/...
#        (an absolute path: go runs it from each package's directory)
#
# go builds test binaries under $TMPDIR (/tmp), which the guest covers with a
# tmpfs: so copy the binary into the cache first. go runs this in the
# package's directory, and run.sh keeps the current directory, so testdata/
# paths work as usual.
#
# Env: NBDLOOP_VM_RUN_OPTS   extra options for run.sh, split on blanks
#                            (e.g. "--timeout 3000 -e GOTRACEBACK")
#      NBDLOOP_VM_KERNEL     6.1 (default) or 6.12: the kernel to boot
set -eu

# Braces: bash reads a script as it runs it, so an edit to this file would
# derail runs in progress; a compound command is read whole before it starts.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
[ $# -ge 1 ] || { echo "usage: $0 TEST-BINARY [ARGS...]" >&2; exit 2; }
bin=$1
shift

eval "$("$here/setup.sh")"
dir=$NBDLOOP_VM_CACHE/bin
mkdir -p "$dir"
copy=$(mktemp "$dir/$(basename "$bin").XXXXXX")
trap 'rm -f "$copy"' EXIT
cp "$bin" "$copy"
chmod 755 "$copy"

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
cmd="$(q "$copy")"
for a in "$@"; do
	cmd+=" $(q "$a")"
done

# Not exec, so that the copy is removed afterwards; and in the background,
# so that a signal from go test (QUIT on its timeout) reaches run.sh, which
# then stops the VM.
# shellcheck disable=SC2086 # options are meant to be split
"$here/run.sh" ${NBDLOOP_VM_RUN_OPTS:-} -- "$cmd" &
pid=$!
for sig in HUP INT QUIT TERM; do
	# shellcheck disable=SC2064 # expand now
	trap "kill -TERM $pid 2>/dev/null; wait $pid; exit 1" $sig
done
rc=0
wait "$pid" || rc=$?
exit "$rc"
}
