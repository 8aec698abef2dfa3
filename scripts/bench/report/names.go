package main

// Device columns, in the order measure.sh runs them.
var deviceOrder = []string{"loop", "nbdloop-memory", "nbdloop-memory-errfilter", "nbdloop-file", "nbdkit-memory", "nbdkit-file", "qemu-nbd",
	"nbdloop-script", "nbdkit-script", "nbdloop-script-persistent", "ublk-memory", "ublk-file"}

var deviceShort = map[string]string{
	"loop":           "loop",
	"nbdloop-memory": "nbdloop-mem",
	// memory:1G behind --filter error:file=/nonexistent-trigger,rate=1 (idle)
	"nbdloop-memory-errfilter": "mem+errfilt",
	"nbdloop-file":             "nbdloop-file",
	"nbdkit-memory":            "nbdkit-mem",
	"nbdkit-file":              "nbdkit-file",
	"qemu-nbd":                 "qemu-nbd",
	// scripts/examples/ramdisk.sh over the file: exec: (a fork per
	// request), the same under nbdkit sh, and file-persistent.py
	"nbdloop-script":            "script-exec",
	"nbdkit-script":             "nbdkit-sh",
	"nbdloop-script-persistent": "script-pers",
	// nbdloop attach --driver ublk: memory:1G and the tmpfs file
	"ublk-memory": "ublk-mem",
	"ublk-file":   "ublk-file",
}

var workloadOrder = []string{
	"randread-4k-qd1", "randwrite-4k-qd1",
	"randread-4k-qd32", "randwrite-4k-qd32",
	"read-1m-qd8", "write-1m-qd8",
	"randrw-4k-qd32",
}

var workloadLabel = map[string]string{
	"randread-4k-qd1":   "4k randread QD1",
	"randwrite-4k-qd1":  "4k randwrite QD1",
	"randread-4k-qd32":  "4k randread QD32x2",
	"randwrite-4k-qd32": "4k randwrite QD32x2",
	"read-1m-qd8":       "1M seq read QD8",
	"write-1m-qd8":      "1M seq write QD8",
	"randrw-4k-qd32":    "4k randrw 70/30 QD32x2",
}

// label is workload w's row label.
func label(w string) string {
	if l, ok := workloadLabel[w]; ok {
		return l
	}
	return w
}

// ratios are IOPS ratios (the same as MB/s ratios: one block size per row).
var ratioDefs = []struct{ Name, Num, Den string }{
	{"nbdloop-memory/nbdkit-memory", "nbdloop-memory", "nbdkit-memory"},
	{"nbdloop-file/qemu-nbd", "nbdloop-file", "qemu-nbd"},
	{"nbdloop-file/nbdkit-file", "nbdloop-file", "nbdkit-file"},
	{"nbdloop-memory/loop", "nbdloop-memory", "loop"},
	// The cost of an idle error filter (issue 6 item 8): > 1 means the filter is free.
	{"nbdloop-memory-errfilter/nbdloop-memory", "nbdloop-memory-errfilter", "nbdloop-memory"},
	// The same shell script under nbdloop and under nbdkit's sh plugin.
	{"nbdloop-script/nbdkit-script", "nbdloop-script", "nbdkit-script"},
	// The ublk driver against the kernel's loop and against NBD (issue 21).
	{"ublk-memory/loop", "ublk-memory", "loop"},
	{"ublk-memory/nbdloop-memory", "ublk-memory", "nbdloop-memory"},
	{"ublk-file/loop", "ublk-file", "loop"},
	{"ublk-file/nbdloop-file", "ublk-file", "nbdloop-file"},
}

// attachKinds are the kinds whose attach and detach times measure.sh
// takes, in the report's order; attachCommand says how each attaches.
var attachKinds = []string{"loop", "nbdloop-file", "nbdloop-memory", "nbdkit-file", "nbdkit-memory", "qemu-nbd", "ublk-memory"}

var attachCommand = map[string]string{
	"loop":           "losetup -f --show FILE",
	"nbdloop-file":   "nbdloop attach FILE",
	"nbdloop-memory": "nbdloop attach memory:1G",
	"nbdkit-file":    "nbdkit -U file FILE; nbd-client",
	"nbdkit-memory":  "nbdkit -U memory 1G; nbd-client",
	"qemu-nbd":       "qemu-nbd -c DEV -f raw FILE",
	"ublk-memory":    "nbdloop attach --driver ublk memory:1G",
}

// restartKinds are the kinds whose restart gaps measure.sh takes.
var restartKinds = []string{"nbdloop-file", "nbdloop-memory", "ublk-memory"}
