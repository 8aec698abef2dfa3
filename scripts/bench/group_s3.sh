#!/bin/bash
# group_s3.sh: the s3 group of `make bench` (issue 20's object storage, its
# writes), sourced by groups.sh. SeaweedFS serves S3 on the loopback,
# started as internal/s3test starts it for the tests (`weed server` with
# its filer and S3 gateway, one identity), from the binary that
# scripts/install-seaweedfs.sh builds (deps.sh runs it on the host; a
# missing binary fails the group), its data on $SCRATCH (the VM's disk)
# or else in a temporary directory. Two ways of storing the same
# BENCH_S3_SPAN bytes (default 256M) in it:
#
#   nbdloop-s3   nbdloop create s3://bench/disk --size 1G, then attach
#                s3://bench/disk/ (its default object size and cache);
#                fio 1 MiB sequential writes QD8 over the first span with
#                end_fsync=1: the time includes the last flush, so the
#                bytes are all in the bucket
#   sdk-upload   s3upload (scripts/bench/s3upload, built on the host by
#                bench.sh): the same number of bytes as one object through
#                aws-sdk-go-v2's transfer manager, the server's own rate
#
# Each kind has a fresh SeaweedFS of its own (one that holds the other's
# bytes stores slower: 1.67x with nbdloop first on one server, 1.17x
# after the SDK). Job: write-1m-qd8. sdk-upload's IOPS are its bytes over
# its upload time, in MiB (fio's 1 MiB blocks). Output:
# fio/group-s3-KIND.json, group-s3-nbdloop-s3.log (the server's log),
# group-s3.tsv (kind, peak RSS of the server in KiB: nbdloop's, and
# SeaweedFS's for sdk-upload) and meta.txt lines, as the other groups.
#
# Env: BENCH_S3_SPAN (bytes, with K, M or G), BENCH_S3_PORT (the first of
# the eight loopback ports SeaweedFS takes; default 18333).

# start_weed DIR: runs SeaweedFS with its data and log (weed.log) in DIR;
# sets weed_pid and exports the AWS_* variables that point nbdloop and
# s3upload at it. Returns once its S3 port answers (6 minutes at most: a
# fresh server under emulation is slow to start).
start_weed() {
	local dir=$1 bin p
	if ! bin=$("$repo/scripts/install-seaweedfs.sh" 2>>"$out/tools.log") || [ ! -x "$bin" ]; then
		fail "group s3: SeaweedFS's weed is missing (run scripts/install-seaweedfs.sh on the host; see tools.log)"
		return 1
	fi
	p=${BENCH_S3_PORT:-18333}
	mkdir -p "$dir/data" || return 1
	cat >"$dir/s3.json" <<-EOJ
		{"identities": [{"name": "nbdloop", "credentials": [{"accessKey": "nbdloop-bench", "secretKey": "nbdloop-bench-secret-key"}],
		 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
	EOJ
	(cd "$dir" && exec "$bin" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-master.port=$p -master.port.grpc=$((p + 1)) -master.telemetry=false \
		-master.volumeSizeLimitMB=64 -volume.max=64 \
		-volume.port=$((p + 2)) -volume.port.grpc=$((p + 3)) \
		-filer -filer.port=$((p + 4)) -filer.port.grpc=$((p + 5)) \
		-s3 -s3.port=$((p + 6)) -s3.port.grpc=$((p + 7)) -s3.config="$dir/s3.json" \
		-s3.port.iceberg=0 -s3.port.lance=0 >"$dir/weed.log" 2>&1) &
	weed_pid=$!
	export AWS_ACCESS_KEY_ID=nbdloop-bench AWS_SECRET_ACCESS_KEY=nbdloop-bench-secret-key AWS_REGION=us-east-1 \
		AWS_ENDPOINT_URL=http://127.0.0.1:$((p + 6)) AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
		AWS_EC2_METADATA_DISABLED=true
	for _ in $(seq 1800); do
		# Any HTTP answer (403 to an anonymous request) means it listens.
		curl -s -o /dev/null "$AWS_ENDPOINT_URL/" 2>/dev/null && return 0
		kill -0 "$weed_pid" 2>/dev/null || break
		sleep 0.2
	done
	fail "group s3: SeaweedFS did not serve S3 on $AWS_ENDPOINT_URL (its log: $dir/weed.log, tail in tools.log)"
	tail -n 40 "$dir/weed.log" >>"$out/tools.log"
	return 1
}

stop_weed() {
	if [ -n "${weed_pid:-}" ]; then
		kill "$weed_pid" 2>/dev/null
		for _ in $(seq 100); do
			kill -0 "$weed_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$weed_pid" 2>/dev/null
		wait "$weed_pid" 2>/dev/null
	fi
	weed_pid=''
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE AWS_EC2_METADATA_DISABLED
}

# group_s3_upload BYTES JSON: s3upload of BYTES, written as a fio JSON
# output of one job, write-1m-qd8.
group_s3_upload() {
	local w
	w=$(timeout -k 5 1200 "$out/s3upload" -size "$1" s3://bench/sdk-upload 2>>"$out/tools.log") || return 1
	throughput_json write-1m-qd8 write $w >"$2"
}

run_group_s3() {
	local kinds="nbdloop-s3 sdk-upload"
	local span=${BENCH_S3_SPAN:-256M}
	{
		echo "group_s3_kinds=$kinds"
		echo "group_s3_jobs=write-1m-qd8"
	} >>"$out/meta.txt"
	log "group s3: $kinds, $span each"
	local bytes
	bytes=$(numfmt --from=iec "$span") || { fail "group s3: BENCH_S3_SPAN=$span is not a size"; return; }
	if [ ! -x "$out/s3upload" ]; then
		fail "group s3: no $out/s3upload (bench.sh builds it on the host)"
		return
	fi
	local job=$out/fio/group-s3.fio
	cat >"$job" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		group_reporting
		[write-1m-qd8]
		rw=write
		bs=1M
		iodepth=8
		size=$bytes
		end_fsync=1
	EOF
	printf 'kind\tpeak_rss_kib\n' >"$out/group-s3.tsv"
	local k dir
	for k in $kinds; do
		log "  $k"
		dir=$(mktemp -d "${SCRATCH:-/var/tmp}/nbdloop-bench-s3.XXXXXX") || { fail "group s3: no directory for SeaweedFS"; return; }
		if ! start_weed "$dir" || ! timeout -k 5 300 "$out/s3upload" -size 0 s3://bench/sdk-upload >>"$out/tools.log" 2>&1; then
			fail "group s3: $k: SeaweedFS not ready (see tools.log)"
		else
			group_s3_kind "$k" "$bytes" "$job"
		fi
		stop_weed
		rm -rf "$dir"
	done
}

# group_s3_kind KIND BYTES JOB: one kind's run against the running server.
group_s3_kind() {
	local k=$1
	case $k in
	sdk-upload)
		group_s3_upload "$2" "$out/fio/group-s3-$k.json" || fail "group s3: s3upload of $2 bytes"
		printf '%s\t%s\n' "$k" "$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$weed_pid/status")" >>"$out/group-s3.tsv"
		return ;;
	nbdloop-s3)
		kind=$k
		if ! "$nbdloop" create s3://bench/disk --size 1G >>"$out/tools.log" 2>&1 ||
			! dev=$("$nbdloop" attach s3://bench/disk/ 2>>"$out/tools.log"); then
			fail "group s3: $k create or attach failed (see tools.log)"
			detach_dev
			return
		fi
		server_pid=$(state_pid "$dev") ;;
	esac
	log "  $k on $dev"
	if ! timeout -k 5 1200 fio --filename="$dev" --output-format=json --output="$out/fio/group-s3-$k.json" "$3" >>"$out/tools.log" 2>&1; then
		fail "group s3: $k fio"
	fi
	printf '%s\t%s\n' "$k" "$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")" >>"$out/group-s3.tsv"
	# Its log says whether the kernel dropped a connection (a request
	# slower than 30 s) and the server was restarted.
	cp "/run/nbdloop/${dev#/dev/}.log" "$out/group-s3-$k.log" 2>/dev/null
	detach_dev || fail "group s3: $k detach failed"
}
