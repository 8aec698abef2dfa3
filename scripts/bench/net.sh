#!/bin/bash
# net.sh: the network groups of `make bench` (issue 19), sourced by
# groups.sh. nbdloop serve, nbdkit and qemu-nbd serve the same sources on
# the loopback (TCP 127.0.0.1), with TLS off and with TLS required (the same
# certificates, made here by certtool), and two clients no one here wrote
# drive them in turn:
#
#   nbdcopy    straight to the server: 1 MiB requests 8 deep, then 4 KiB
#              requests 32 deep, each writing the whole export from a file of
#              fio's data and reading it back to null:, over $conns
#              connections (--connections; nbdcopy uses one when the server
#              does not advertise CAN_MULTI_CONN)
#   fio        on the kernel's /dev/nbdN, connected by nbd-client -C $conns
#              (its TLS proxy when TLS is on): 1 MiB sequential writes and
#              reads QD8, then 4 KiB random writes and reads QD32x2, for
#              $runtime s each after $ramp s
#
# Groups (one column per server and TLS mode, same jobs):
#   net-memory  a RAM disk of $net_span bytes: nbdloop memory:, nbdkit memory
#               (qemu-nbd has no RAM disk of its own: its RAM is net-file's
#               file, which is on a tmpfs)
#   net-file    a $net_span file on a tmpfs, filled with fio's data: nbdloop,
#               nbdkit file, qemu-nbd -f raw --shared
# The RAM disks are filled by the first nbdcopy job, so later reads never hit
# holes.
#
# Output in OUT: fio/group-net-SRC-KIND.json (fio's JSON, one group per job,
# the median pass of each, with the nbdcopy jobs added as jobs of their own:
# bytes over wall time; each pass's fio JSON in net/),
# group-net-SRC.tsv (kind, the server's peak resident memory in KiB), the
# servers' and clients' logs in net/, meta.txt's group_net-SRC_kinds and
# _jobs lines. Uses measure.sh's $out, $work, $nbdloop, $conns, $runtime,
# $ramp, $img, log, fail, free_nbd, wait_free and now_us.
# The servers take turns: BENCH_NET_ROUNDS passes (default 3) over every
# kind, each pass starting each server afresh; each job keeps its median
# pass, so that a burst of load on the build machine moves one pass of one
# kind, not a ratio (single 4 s fio runs under TCG swung a server's 4 KiB
# figures by 1.6x from one run to the next).
# Env: BENCH_NET_SPAN    the size of the sources (default 32M: nbdcopy copies
#                        all of it, which takes minutes at 4 KiB under TCG)
#      BENCH_NET_ROUNDS  passes over the kinds (default 3)

net_span=${BENCH_NET_SPAN:-32M}
net_rounds=${BENCH_NET_ROUNDS:-3}
net_fio_jobs="write-1m-qd8 read-1m-qd8 randwrite-4k-qd32 randread-4k-qd32"
# name|request size|requests in flight|direction
net_copy_jobs=(
	"copy-write-1m-qd8|1048576|8|write"
	"copy-read-1m-qd8|1048576|8|read"
	"copy-write-4k-qd32|4096|32|write"
	"copy-read-4k-qd32|4096|32|read"
)

# net_certs DIR: a CA, a server certificate for localhost and 127.0.0.1 and
# a client certificate, in nbdkit's layout (also qemu's tls-creds-x509 dir=
# and libnbd's tls-certificates=), ECDSA keys (quick to make), as
# internal/tlstest makes them for the tests.
net_certs() {
	local d=$1 who
	mkdir -p "$d" && chmod 700 "$d" || return 1
	printf 'cn = nbdloop bench CA\nca\ncert_signing_key\nexpiration_days = 2\n' >"$d/ca.info"
	printf 'organization = nbdloop bench\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/server.info"
	printf 'organization = nbdloop bench\ncn = client.bench\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/client.info"
	{
		certtool --generate-privkey --key-type ecdsa --outfile "$d/ca-key.pem" &&
			certtool --generate-self-signed --load-privkey "$d/ca-key.pem" --template "$d/ca.info" --outfile "$d/ca-cert.pem" &&
			for who in server client; do
				certtool --generate-privkey --key-type ecdsa --outfile "$d/$who-key.pem" &&
					certtool --generate-certificate --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
						--load-privkey "$d/$who-key.pem" --template "$d/$who.info" --outfile "$d/$who-cert.pem" || return 1
			done
	} >>"$out/net/certtool.log" 2>&1 || return 1
	chmod 600 "$d"/*-key.pem
}

# net_start KIND PORT SRCFILE: starts KIND's server on 127.0.0.1:PORT; sets
# net_pid. KIND is SERVER-SRC[-tls].
net_start() {
	local k=$1 port=$2 file=$3 tls=() log=$out/net/$1.log
	net_pid=''
	case $k in
	nbdloop-*)
		local src=$file
		[[ $k == *-memory* ]] && src=memory:$net_span
		if [[ $k == *-tls ]]; then tls=(--tls=require --tls-certificates "$net_pki"); else tls=(--tls=off); fi
		"$nbdloop" serve --listen "127.0.0.1:$port" "${tls[@]}" "$src" >"$log" 2>&1 &
		net_pid=$!
		local _
		for _ in $(seq 200); do
			grep -q 'listening on' "$log" && return 0
			kill -0 "$net_pid" 2>/dev/null || return 1
			sleep 0.05
		done
		return 1 ;;
	nbdkit-*)
		[[ $k == *-tls ]] && tls=(--tls=require "--tls-certificates=$net_pki")
		local plugin=(file "$file")
		[[ $k == *-memory* ]] && plugin=(memory "$net_span")
		rm -f "$work/net.pid"
		# No -f: nbdkit forks once it listens.
		nbdkit -i 127.0.0.1 -p "$port" -P "$work/net.pid" "${tls[@]}" "${plugin[@]}" >"$log" 2>&1 || return 1
		net_pid=$(cat "$work/net.pid") ;;
	qemu-nbd-*)
		[[ $k == *-tls ]] && tls=(--object "tls-creds-x509,id=tls0,dir=$net_pki,endpoint=server" --tls-creds tls0)
		rm -f "$work/net.pid"
		# --shared: room for every connection of both clients (qemu-nbd
		# advertises CAN_MULTI_CONN then); -t: it would exit with its
		# first client otherwise.
		qemu-nbd -b 127.0.0.1 -p "$port" -x '' -f raw -t --shared=$((2 * conns)) --fork \
			--pid-file "$work/net.pid" "${tls[@]}" "$file" >"$log" 2>&1 || return 1
		net_pid=$(cat "$work/net.pid") ;;
	esac
	[ -n "$net_pid" ]
}

net_stop() {
	[ -n "${net_pid:-}" ] || return 0
	kill "$net_pid" 2>/dev/null
	local _
	for _ in $(seq 100); do
		kill -0 "$net_pid" 2>/dev/null || break
		sleep 0.1
	done
	wait "$net_pid" 2>/dev/null # nbdloop is our child; the others forked
	net_pid=''
}

# net_copy KIND URI SRCFILE TSV: the nbdcopy jobs against URI, one pass; each
# job appends a line to TSV: kind, job, direction, request size, bytes,
# wall time in microseconds.
net_copy() {
	local k=$1 uri=$2 src=$3 tsv=$4 bytes j name bs qd dir t0 t1 a b
	bytes=$(stat -c %s "$src")
	for j in "${net_copy_jobs[@]}"; do
		IFS='|' read -r name bs qd dir <<<"$j"
		if [ "$dir" = write ]; then a=$src b=$uri; else a=$uri b=null:; fi
		t0=$(now_us)
		if ! timeout -k 5 600 nbdcopy --connections="$conns" --requests="$qd" --request-size="$bs" "$a" "$b" \
			>>"$out/net/nbdcopy.log" 2>&1; then
			fail "group net: $k $name (nbdcopy)"
			continue
		fi
		t1=$(now_us)
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$name" "$dir" "$bs" "$bytes" $((t1 - t0)) >>"$tsv"
	done
}

# net_copy_json KIND TSV JSON: KIND's nbdcopy jobs of TSV as a fio-shaped
# JSON of their own (merged into fio's by net_merge): per job, the median
# pass (bytes over wall time; the lower middle of an even count).
net_copy_json() {
	python3 - "$@" <<-'EOF'
		import json, sys
		kind, tsv, out = sys.argv[1:4]
		runs = {}
		for line in open(tsv):
		    f = line.rstrip("\n").split("\t")
		    if len(f) == 6 and f[0] == kind:
		        runs.setdefault((f[1], f[2]), []).append((int(f[4]) / (int(f[5]) / 1e6), int(f[3])))
		jobs = []
		for (name, d), rs in runs.items():
		    rs.sort()
		    bw, bs = rs[(len(rs) - 1) // 2]
		    jobs.append({"jobname": name, "error": 0, "passes": len(rs), d: {"iops": round(bw / bs, 1), "bw_bytes": round(bw)}})
		json.dump({"jobs": jobs}, open(out, "w"), indent=1)
	EOF
}

# net_fio_median OUT PASS...: fio's JSON of the passes as one, each job the
# pass with the median IOPS (reads and writes; the lower middle of an even
# count), its "passes" the number of passes that ran it.
net_fio_median() {
	python3 - "$@" <<-'EOF'
		import json, sys
		out, runs = sys.argv[1], {}
		order = []
		for p in sys.argv[2:]:
		    try:
		        s = open(p).read()
		        f = json.loads(s[s.index("{"):])
		    except (OSError, ValueError):
		        continue
		    for j in f.get("jobs", []):
		        if j["jobname"] not in runs:
		            order.append(j["jobname"])
		        iops = sum(j.get(d, {}).get("iops", 0) for d in ("read", "write"))
		        runs.setdefault(j["jobname"], []).append((iops, len(runs.get(j["jobname"], [])), j))
		if not runs:
		    sys.exit(1)
		jobs = []
		for name in order:
		    rs = sorted(runs[name], key=lambda r: (r[0], r[1]))
		    j = rs[(len(rs) - 1) // 2][2]
		    j["passes"] = len(rs)
		    jobs.append(j)
		json.dump({"jobs": jobs}, open(out, "w"), indent=1)
	EOF
}

# net_merge FIO COPY OUT: fio's JSON with the nbdcopy jobs appended.
net_merge() {
	python3 - "$@" <<-'EOF'
		import json, sys
		def load(p):
		    try:
		        s = open(p).read()
		    except OSError:
		        return {"jobs": []}
		    i = s.find("{")
		    return json.loads(s[i:]) if i >= 0 else {"jobs": []}
		f, c = load(sys.argv[1]), load(sys.argv[2])
		f.setdefault("jobs", []).extend(c.get("jobs", []))
		json.dump(f, open(sys.argv[3], "w"), indent=1)
	EOF
}

# net_fio KIND PORT JOBFILE JSON: nbd-client -C $conns to the server, fio's
# jobs on the device, nbd-client -d.
net_fio() {
	local k=$1 port=$2 d tls=()
	[[ $k == *-tls ]] && tls=(-cacertfile "$net_pki/ca-cert.pem" -certfile "$net_pki/client-cert.pem"
		-keyfile "$net_pki/client-key.pem" -tlshostname localhost)
	d=$(free_nbd) || { fail "group net: $k: no free /dev/nbdN"; return 1; }
	if ! nbd-client 127.0.0.1 "$port" "$d" -N '' -C "$conns" "${tls[@]}" >>"$out/net/nbd-client.log" 2>&1; then
		fail "group net: $k: nbd-client could not connect"
		return 1
	fi
	net_dev=$d
	log "  $k on $d"
	timeout -k 5 600 fio --filename="$d" --output-format=json --output="$4" "$3" \
		>>"$out/tools.log" 2>&1 || fail "group net: $k fio"
	nbd-client -d "$d" >>"$out/net/nbd-client.log" 2>&1 || fail "group net: $k nbd-client -d"
	wait_free "$d" || fail "group net: $k: $d still busy"
	net_dev=''
}

# net_cleanup: measure.sh's exit trap: the device and server of a group
# that was interrupted.
net_cleanup() {
	[ -z "${net_dev:-}" ] || nbd-client -d "$net_dev" >/dev/null 2>&1
	net_dev=''
	net_stop
}

# run_group_net SRC: the group net-SRC (memory or file).
run_group_net() {
	local src=$1 g=net-$1 kinds k port=10900 file uri
	case $src in
	memory) kinds="nbdloop-memory nbdkit-memory nbdloop-memory-tls nbdkit-memory-tls" ;;
	file) kinds="nbdloop-file nbdkit-file qemu-nbd-file nbdloop-file-tls nbdkit-file-tls qemu-nbd-file-tls" ;;
	*) fail "group net: unknown source $src"; return ;;
	esac
	local jobs=$net_fio_jobs j
	for j in "${net_copy_jobs[@]}"; do jobs="$jobs ${j%%|*}"; done
	{
		echo "group_${g}_kinds=$kinds"
		echo "group_${g}_jobs=$jobs"
		echo "group_${g}_span=$net_span"
		echo "group_${g}_rounds=$net_rounds"
	} >>"$out/meta.txt"
	log "group $g ($net_rounds passes): $kinds"
	mkdir -p "$out/net"
	net_pki=$work/net-pki
	if [ ! -s "$net_pki/server-key.pem" ] && ! net_certs "$net_pki"; then
		fail "group $g: certtool could not make the certificates (see net/certtool.log)"
		return
	fi
	# The data nbdcopy writes, and the file source: fio's data from the
	# filled tmpfs file, not in $work (the 1 GiB file fills it).
	local data=/tmp/nbdloop-bench-net-data.img
	file=/tmp/nbdloop-bench-net-file.img
	if ! head -c "$net_span" "$img" >"$data" || ! cp "$data" "$file"; then
		fail "group $g: cannot make the $net_span source files"
		rm -f "$data" "$file"
		return
	fi
	local job=$out/fio/group-net.fio
	cat >"$job" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		group_reporting
		time_based
		runtime=$runtime
		ramp_time=$ramp
		norandommap
		randrepeat=0
		[write-1m-qd8]
		rw=write
		bs=1M
		iodepth=8
		[read-1m-qd8]
		stonewall
		rw=read
		bs=1M
		iodepth=8
		[randwrite-4k-qd32]
		stonewall
		rw=randwrite
		bs=4k
		iodepth=32
		numjobs=2
		[randread-4k-qd32]
		stonewall
		rw=randread
		bs=4k
		iodepth=32
		numjobs=2
	EOF
	printf 'kind\tpeak_rss_kib\n' >"$out/group-$g.tsv"
	: >"$out/net/$g-copy.tsv"
	local r
	for r in $(seq "$net_rounds"); do
		for k in $kinds; do
			port=$((port + 1))
			if ! net_start "$k" "$port" "$file"; then
				fail "group $g: $k: the server did not start (see net/$k.log)"
				net_stop
				continue
			fi
			uri=nbd://127.0.0.1:$port/
			[[ $k == *-tls ]] && uri="nbds://127.0.0.1:$port/?tls-certificates=$net_pki"
			net_copy "$k" "$uri" "$data" "$out/net/$g-copy.tsv"
			net_fio "$k" "$port" "$job" "$out/net/$g-$k-fio-$r.json"
			[ "$r" = "$net_rounds" ] && printf '%s\t%s\n' "$k" \
				"$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$net_pid/status")" >>"$out/group-$g.tsv"
			net_stop
		done
	done
	for k in $kinds; do
		net_copy_json "$k" "$out/net/$g-copy.tsv" "$out/net/$g-$k-nbdcopy.json" ||
			fail "group $g: $k: cannot summarize the nbdcopy passes"
		net_fio_median "$out/net/$g-$k-fio.json" "$out/net/$g-$k"-fio-*.json ||
			fail "group $g: $k: cannot summarize the fio passes"
		net_merge "$out/net/$g-$k-fio.json" "$out/net/$g-$k-nbdcopy.json" "$out/fio/group-$g-$k.json" ||
			fail "group $g: $k: cannot merge the nbdcopy and fio results"
	done
	rm -f "$data" "$file"
}
