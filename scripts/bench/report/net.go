package main

// netTargets are issue 19's targets for the network group of source src
// (scripts/bench/net.sh): nbdloop serve at least 1.5x each peer on 4 KiB
// requests at depth 32 and 1.0x on 1 MiB, both through nbd-client (fio) and
// with nbdcopy, TLS off; and TLS costing nbdloop at most 30% on 1 MiB.
func netTargets(src string, peers ...string) []groupTarget {
	var ts []groupTarget
	self := "nbdloop-" + src
	for _, p := range peers {
		peer := p + "-" + src
		for _, j := range []string{"randread-4k-qd32", "randwrite-4k-qd32", "copy-read-4k-qd32", "copy-write-4k-qd32"} {
			ts = append(ts, groupTarget{"nbdloop serve " + src + " >= 1.5x " + p, self, peer, j, 1.5})
		}
		for _, j := range []string{"read-1m-qd8", "write-1m-qd8", "copy-read-1m-qd8", "copy-write-1m-qd8"} {
			ts = append(ts, groupTarget{"nbdloop serve " + src + " >= 1.0x " + p, self, peer, j, 1.0})
		}
	}
	for _, j := range []string{"read-1m-qd8", "write-1m-qd8", "copy-read-1m-qd8", "copy-write-1m-qd8"} {
		ts = append(ts, groupTarget{"nbdloop serve " + src + ": TLS costs <= 30%", self + "-tls", self, j, 0.7})
	}
	return ts
}
