package attach

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nbdloop/nbdloop/ublk"
)

// listUblk describes the ublk devices nbdloop serves, from their records
// and sysfs, in number order. A record whose server is gone and whose
// device the kernel no longer has (neither /dev/ublkbN nor, after a server
// died, /dev/ublkcN) is stale and skipped.
func (h host) listUblk() []Device {
	var devs []Device
	for _, id := range ublkRecords(h.stateDir) {
		st := readUblkState(h.stateDir, id)
		if st == nil {
			continue
		}
		name := fmt.Sprintf("ublkb%d", id)
		_, _, err := h.sys.DevNum(name)
		_, cerr := os.Stat(ublk.CharPath(id))
		exists := err == nil || cerr == nil
		alive := st.server().alive()
		if !exists && !alive {
			continue
		}
		d := *st.device()
		if size, ok := h.ublkSize(name); ok {
			d.Size = size
		}
		if major, minor, err := h.sys.DevNum(name); err == nil {
			d.Mounts = h.mountsOf(major, minor, "/dev/"+name)
		}
		d.Connections = 0
		switch {
		case st.DeadReason != "":
			d.State, d.Reason = StateDead, st.DeadReason
		case !alive && st.supervisor().alive():
			d.State = StateRestarting
		case !alive:
			d.State = StateDead
			d.Reason = "the server died and no supervisor restarts it (nbdloop detach " + d.Name + ")"
		}
		devs = append(devs, d)
	}
	return devs
}

// ublkSize reads /sys/class/block/NAME/size (512-byte sectors).
func (h host) ublkSize(name string) (int64, bool) {
	root := h.sys.Root
	if root == "" {
		root = "/sys"
	}
	b, err := os.ReadFile(filepath.Join(root, "class", "block", name, "size"))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n * 512, err == nil
}
