#!/bin/sh
# fuzz-long.sh runs every fuzz target of the repository (found by grep, so a
# new one is never left out) for FUZZLONG each (default 10m), FUZZJOBS
# targets at a time (default 1) with FUZZPAR workers each (default: the
# cores shared among the jobs). New inputs are minimized for at most 10 s,
# or the slow whole-image targets would spend their time minimizing.
# Arguments, when given, are patterns (grep -E) naming the targets to run,
# e.g. "FuzzQcow2|FuzzVMDK" (a name prefix matches). The log of each run goes to bin/fuzz-long/,
# and one summary line per target (execs, new inputs, result) to stdout and
# to bin/fuzz-long/summary. Exit 1 when any target failed.
set -u
cd "$(dirname "$0")/.."
GO=${GO:-go}
long=${FUZZLONG:-10m}
jobs=${FUZZJOBS:-1}
par=${FUZZPAR:-$(( $(nproc) / jobs ))}
[ "$par" -ge 1 ] || par=1
pattern=$(printf '%s|' "$@"); pattern=${pattern%|}
out=bin/fuzz-long
mkdir -p "$out"

targets() {
	grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
		pkg=./$(dirname "${file#./}")
		sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file" | while read -r f; do
			echo "$pkg $f"
		done
	done
}

one() {
	pkg=$1 f=$2 log=$out/$2.log
	start=$(date +%s)
	if $GO test -run XXX -fuzz "^$f\$" -fuzztime "$long" -fuzzminimizetime 10s -parallel "$par" "$pkg" >"$log" 2>&1; then
		res=ok
	else
		res=FAIL
	fi
	now=$(date +%s)
	line="$pkg $f: $res after $((now - start))s, $(grep -o 'execs: [0-9]*' "$log" | tail -1), $(grep -o 'new interesting: [0-9]*' "$log" | tail -1) ($log)"
	echo "$line"
	echo "$line" >>"$out/summary"
	[ "$res" = ok ]
}

rc=0
list=$(targets)
[ -z "$pattern" ] || list=$(echo "$list" | grep -E " ($pattern)")
[ -n "$list" ] || { echo "fuzz-long.sh: no fuzz target matches \"$pattern\"" >&2; exit 2; }
n=0
pids=""
echo "$list" | {
	while read -r pkg f; do
		one "$pkg" "$f" &
		pids="$pids $!"
		n=$((n + 1))
		if [ "$n" -ge "$jobs" ]; then
			for p in $pids; do wait "$p" || rc=1; done
			pids="" n=0
		fi
	done
	for p in $pids; do wait "$p" || rc=1; done
	exit $rc
}
