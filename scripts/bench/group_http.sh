#!/bin/bash
# group_http.sh: the http group of `make bench` (issue 20's object storage,
# its HTTP part), sourced by groups.sh. nginx on the loopback serves the
# 1 GiB image of the device runs ($img, fio's data); three ways of reading
# it:
#
#   nbdloop-http   nbdloop attach -r URL (range requests, its block cache
#                  of --cache-size BENCH_HTTP_CACHE, default 1G: the
#                  object fits, as a cloud image read again would)
#   nbdkit-curl    nbdkit -r curl URL + nbd-client -C 1: the curl plugin
#                  does not advertise multi-conn, and the kernel refuses a
#                  second connection to such a server
#   curl-download  curl -o /dev/null URL: the whole object, one stream
#
# Jobs: read-full-1m-qd8, one sequential read of the whole device (1 MiB,
# QD8, cold: nothing cached yet), then randread-4k-qd32 (4 KiB random reads
# QD32x2 over the whole device for 30 s, BENCH_RUNTIME if longer) with what
# the server kept. curl-download has the first only: its IOPS are the
# object's bytes over its download time, in MiB (fio's 1 MiB blocks).
#
# Output: fio/group-http-KIND.json (curl-download's made from curl's
# size_download and time_total), group-http.tsv (kind, peak RSS in KiB of
# the server: nbdloop's or nbdkit's) and meta.txt lines, as the other
# groups.

# start_nginx ROOT: serves ROOT on 127.0.0.1:BENCH_HTTP_PORT (default
# 18080); sets http_url and nginx_pid.
start_nginx() {
	local root=$1 prefix
	prefix=$(mktemp -d /tmp/nbdloop-bench-nginx.XXXXXX) || return 1
	nginx_prefix=$prefix
	http_url=http://127.0.0.1:${BENCH_HTTP_PORT:-18080}
	cat >"$prefix/nginx.conf" <<-EOF
		daemon off;
		master_process off;
		pid $prefix/nginx.pid;
		error_log $prefix/error.log;
		events { worker_connections 256; }
		http {
			access_log off;
			sendfile on;
			client_body_temp_path $prefix/body;
			proxy_temp_path $prefix/proxy;
			fastcgi_temp_path $prefix/fastcgi;
			uwsgi_temp_path $prefix/uwsgi;
			scgi_temp_path $prefix/scgi;
			server {
				listen 127.0.0.1:${BENCH_HTTP_PORT:-18080};
				root $root;
			}
		}
	EOF
	nginx -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" >>"$out/tools.log" 2>&1 &
	nginx_pid=$!
	for _ in $(seq 100); do
		curl -s -o /dev/null -r 0-0 "$http_url/" 2>/dev/null && return 0
		kill -0 "$nginx_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

stop_nginx() {
	[ -n "${nginx_pid:-}" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
	nginx_pid=''
	[ -n "${nginx_prefix:-}" ] && rm -rf "$nginx_prefix"
	nginx_prefix=''
}

# group_http_download URL JSON: curl -o /dev/null of the whole object,
# written as a fio JSON output of one job, read-full-1m-qd8.
group_http_download() {
	local w
	w=$(curl -s -f -o /dev/null -w '%{size_download} %{time_total}' "$1") || return 1
	# shellcheck disable=SC2086 # two words: bytes and seconds
	throughput_json read-full-1m-qd8 read $w >"$2"
}

run_group_http() {
	local kinds="nbdloop-http nbdkit-curl curl-download"
	{
		echo "group_http_kinds=$kinds"
		echo "group_http_jobs=read-full-1m-qd8 randread-4k-qd32"
		echo "group_http_curl-download_jobs=read-full-1m-qd8"
	} >>"$out/meta.txt"
	log "group http: $kinds"
	if ! start_nginx "$(dirname "$img")"; then
		fail "group http: nginx did not start (see tools.log)"
		stop_nginx
		return
	fi
	local url=$http_url/$(basename "$img")
	local job=$out/fio/group-http.fio
	cat >"$job" <<-EOF
		[global]
		ioengine=libaio
		direct=1
		group_reporting
		[read-full-1m-qd8]
		rw=read
		bs=1M
		iodepth=8
		[randread-4k-qd32]
		stonewall
		rw=randread
		bs=4k
		iodepth=32
		numjobs=2
		time_based
		runtime=$((runtime > 30 ? runtime : 30))
		norandommap
		randrepeat=0
	EOF
	printf 'kind\tpeak_rss_kib\n' >"$out/group-http.tsv"
	local k d
	for k in $kinds; do
		log "  $k"
		case $k in
		curl-download)
			group_http_download "$url" "$out/fio/group-http-$k.json" || fail "group http: curl -o of $url"
			continue ;;
		nbdloop-http)
			kind=$k
			dev=$("$nbdloop" attach -r -c "$conns" --cache-size "${BENCH_HTTP_CACHE:-1G}" "$url") ||
				{ fail "group http: $k attach failed"; detach_dev; continue; }
			server_pid=$(state_pid "$dev") ;;
		nbdkit-curl)
			kind=$k
			d=$(free_nbd) || { fail "group http: no free /dev/nbdN"; continue; }
			if ! start_nbdkit -r curl "$url" || ! nbd-client -unix "$sock" "$d" -N '' -C 1 >>"$out/tools.log" 2>&1; then
				fail "group http: $k attach failed"
				detach_dev
				continue
			fi
			dev=$d
			server_pid=$nbdkit_pid ;;
		esac
		log "  $k on $dev"
		if ! timeout -k 5 1200 fio --readonly --filename="$dev" --output-format=json --output="$out/fio/group-http-$k.json" "$job" >>"$out/tools.log" 2>&1; then
			fail "group http: $k fio"
		fi
		printf '%s\t%s\n' "$k" "$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$server_pid/status")" >>"$out/group-http.tsv"
		detach_dev || fail "group http: $k detach failed"
	done
	stop_nginx
}
