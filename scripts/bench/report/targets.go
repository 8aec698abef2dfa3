package main

// targets are the targets of issues 7, 6 (item 8) and 21, judged on the
// ratios.
func targets(s *Summary) []Target {
	var ts []Target
	add := func(name, ratio, w string, want float64) {
		t := Target{Name: name, Ratio: ratio, Load: w, Want: want, State: "MISSING"}
		if g, ok := s.Ratios[w][ratio]; ok {
			t.Got = g
			t.State = "FAIL"
			if g >= want {
				t.State = "PASS"
			}
		}
		ts = append(ts, t)
	}
	for _, w := range []string{"randread-4k-qd32", "randwrite-4k-qd32"} {
		add("nbdloop memory >= 1.5x nbdkit memory", "nbdloop-memory/nbdkit-memory", w, 1.5)
	}
	for _, w := range []string{"read-1m-qd8", "write-1m-qd8"} {
		add("nbdloop memory >= 1.0x nbdkit memory", "nbdloop-memory/nbdkit-memory", w, 1.0)
	}
	for _, w := range s.Workloads {
		add("nbdloop file >= 1.0x qemu-nbd", "nbdloop-file/qemu-nbd", w, 1.0)
	}
	add("nbdloop memory >= 40% of loop", "nbdloop-memory/loop", "randread-4k-qd32", 0.4)
	// Issue 6 item 8: an error filter whose trigger file does not exist.
	add("idle error filter >= 0.95x plain memory", "nbdloop-memory-errfilter/nbdloop-memory", "randread-4k-qd32", 0.95)
	// Issue 21: the ublk driver near loop, well ahead of NBD.
	for _, w := range []string{"randread-4k-qd32", "randwrite-4k-qd32"} {
		add("ublk memory >= 0.9x loop", "ublk-memory/loop", w, 0.9)
	}
	for _, w := range []string{"read-1m-qd8", "write-1m-qd8"} {
		add("ublk memory >= 0.7x loop", "ublk-memory/loop", w, 0.7)
	}
	for _, w := range []string{"read-1m-qd8", "write-1m-qd8"} {
		add("ublk memory >= 2x nbdloop memory", "ublk-memory/nbdloop-memory", w, 2.0)
	}
	return ts
}
