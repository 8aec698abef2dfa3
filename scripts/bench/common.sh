# common.sh: what measure.sh (in the VM or natively) and net_host.sh (on the
# host) share, sourced by both after they set $out: the log line, the
# failure count (fail adds a line to $out/failures) and the clock.

log() { echo "bench: $*"; }
failures=0
fail() {
	echo "bench: FAILED: $*" >&2
	echo "$*" >>"$out/failures"
	failures=$((failures + 1))
}
now_us() { echo "${EPOCHREALTIME/./}"; } # no exec: forks cost ~0.1 s under TCG
