#!/bin/bash
# bench.sh: the device benchmarks of `make bench` (which builds bin/nbdloop
# and bin/benchreport first). Measures loop, nbdloop, nbdkit + nbd-client and
# qemu-nbd with fio in one session: natively when NBDLOOP_NATIVE=1, run as
# root, on a host where `modprobe nbd` works; otherwise in one VM of
# scripts/vm (this machine's kind: no NBD driver), booting Debian 13's Linux
# 6.12 unless NBDLOOP_VM_KERNEL says 6.1. Then prints the table and
# writes bench-results/YYYYMMDD-HHMMSS.json and bench-results/latest.json;
# the raw fio output stays in bench-results/raw/YYYYMMDD-HHMMSS/.
#
# Exit status: 0 when every measurement was taken (even if a target of issue
# 7 is missed: those lines are informative), 1 when one could not be.
#
# Env: BENCH_* (see measure.sh) pass through to the measurements, e.g.
#      BENCH_WORKLOADS=randread-4k-qd32 BENCH_DEVICES='loop nbdloop-memory'
#      for a quick look; BENCH_VM_TIMEOUT (default 3600 s).
set -eu

# Braces: bash reads a script as it runs it; a compound command is read whole.
{

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PATH=$PATH:/usr/sbin:/sbin
start=$(date +%s)

[ -x bin/nbdloop ] || make -s build
[ -x bin/benchreport ] || go build -o bin/benchreport ./scripts/bench/report
scripts/bench/deps.sh

ts=$(date +%Y%m%d-%H%M%S)
raw=bench-results/raw/$ts
mkdir -p "$raw"
raw=$(cd "$raw" && pwd -P)
# A copy of the binary under test: others may rebuild bin/ meanwhile.
cp bin/nbdloop "$raw/nbdloop"
# The comparison groups' images are made here: compressing in the VM would
# take minutes.
if [ "${BENCH_GROUPS:-}" != none ]; then
	# shellcheck source=scripts/bench/groups.sh
	. scripts/bench/groups.sh
	prepare_groups "$raw" || echo "bench: could not make the comparison groups' images" >&2
	# The s3 group's SDK upload, a Go program like the report.
	go build -o "$raw/s3upload" ./scripts/bench/s3upload || echo "bench: could not build scripts/bench/s3upload (the s3 group fails)" >&2
fi

native=''
if [ "${NBDLOOP_NATIVE:-}" = 1 ]; then
	if [ "$(id -u)" = 0 ] && { [ -e /sys/module/nbd ] || modprobe nbd nbds_max=16 max_part=16 2>/dev/null; }; then
		native=1
	else
		echo "bench: NBDLOOP_NATIVE=1 but no usable NBD driver here (root and modprobe nbd needed): using the VM"
	fi
fi

mrc=0
if [ -n "$native" ]; then
	echo "bench: measuring natively (kernel $(uname -r)) into $raw"
	scripts/bench/measure.sh "$raw" || mrc=$?
else
	kernel=${NBDLOOP_VM_KERNEL:-6.12}
	echo "bench: no native NBD driver (or NBDLOOP_NATIVE unset): measuring in one VM (qemu TCG, Linux $kernel) into $raw"
	scripts/install-deps.sh
	scripts/vm/setup.sh --kernel "$kernel" >/dev/null
	env_opts=()
	for v in $(compgen -e); do
		case $v in BENCH_*) env_opts+=(-e "$v") ;; esac
	done
	scripts/vm/run.sh --kernel "$kernel" --timeout "${BENCH_VM_TIMEOUT:-3600}" --out "$raw" \
		"${env_opts[@]+"${env_opts[@]}"}" -- scripts/bench/measure.sh "$raw" || mrc=$?
fi

# nbdcopy against the servers needs no kernel client: the host-net groups
# run here, where TLS meets the CPU's own AES.
case " ${BENCH_GROUPS:-host-net} " in
*" host-net "*) scripts/bench/net_host.sh "$raw" || mrc=$? ;;
esac

rrc=0
bin/benchreport -raw "$raw" -json "bench-results/$ts.json" || rrc=$?
if [ -f "bench-results/$ts.json" ]; then
	cp "bench-results/$ts.json" bench-results/latest.json
	echo "bench: results in bench-results/$ts.json (and latest.json), raw in bench-results/raw/$ts/"
fi
echo "bench: device benchmarks took $(($(date +%s) - start)) s"
if [ "$mrc" != 0 ] || [ "$rrc" != 0 ]; then
	echo "bench: some measurements could not be taken (measure exit $mrc, report exit $rrc)" >&2
	exit 1
fi
exit 0
}
