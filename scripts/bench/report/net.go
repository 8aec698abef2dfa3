package main

import (
	"fmt"
	"strings"
)

// netTargets are issue 19's targets for the network group of source src
// (scripts/bench/net.sh) in the VM: nbdloop serve at least 1.5x each peer on
// 4 KiB requests at depth 32 and 1.0x on 1 MiB, both through nbd-client
// (fio) and with nbdcopy, TLS off. The TLS cost is not a target there: the
// VM's CPU emulates AES at a few MB/s for every server (docs/performance.md).
func netTargets(src string, peers ...string) []groupTarget {
	jobs := append([]string{"randread-4k-qd32", "randwrite-4k-qd32", "read-1m-qd8", "write-1m-qd8"}, copyJobs...)
	return netSpeedTargets("nbdloop serve "+src, "nbdloop-"+src, src, jobs, peers)
}

// hostNetTargets are issue 19's targets for the host-net group of source
// src (scripts/bench/net_host.sh: nbdcopy on the build machine): the same
// speed ratios on nbdcopy's jobs, and TLS costing nbdloop at most 30% on
// 1 MiB requests.
func hostNetTargets(src string, peers ...string) []groupTarget {
	self := "nbdloop-" + src
	ts := netSpeedTargets("nbdloop serve "+src+" (host)", self, src, copyJobs, peers)
	for _, j := range []string{"copy-read-1m-qd8", "copy-write-1m-qd8"} {
		ts = append(ts, groupTarget{"nbdloop serve " + src + " (host): TLS costs <= 30%", self + "-tls", self, j, 0.7})
	}
	return ts
}

// copyJobs are net.sh's nbdcopy jobs.
var copyJobs = []string{"copy-read-4k-qd32", "copy-write-4k-qd32", "copy-read-1m-qd8", "copy-write-1m-qd8"}

// netSpeedTargets: self at least 1.5x each peer (KIND-src) on the 4 KiB
// jobs among jobs, 1.0x on the 1 MiB ones.
func netSpeedTargets(name, self, src string, jobs, peers []string) []groupTarget {
	var ts []groupTarget
	for _, p := range peers {
		for _, j := range jobs {
			want := 1.0
			if strings.Contains(j, "-4k-") {
				want = 1.5
			}
			ts = append(ts, groupTarget{fmt.Sprintf("%s >= %.1fx %s", name, want, p), self, p + "-" + src, j, want})
		}
	}
	return ts
}
