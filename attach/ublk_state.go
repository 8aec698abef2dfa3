package attach

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ublkStatePath is the record of ublk device id: ublkbN.json, beside the
// NBD devices' nbdN.json.
func ublkStatePath(dir string, id int) string {
	return filepath.Join(dir, fmt.Sprintf("ublkb%d.json", id))
}

// readUblkState returns the record of ublk device id, or nil.
func readUblkState(dir string, id int) *State {
	return readRecord(ublkStatePath(dir, id), id, func(st *State) bool { return st.Config.isUblk() })
}

// removeUblkState removes the record of id if it still belongs to pid (0:
// whoever wrote it).
func removeUblkState(dir string, id, pid int) error {
	return removeRecord(ublkStatePath(dir, id), pid, func() *State { return readUblkState(dir, id) })
}

// ublkRecords returns the numbers of the ublk records in dir, in order.
func ublkRecords(dir string) []int {
	names, _ := filepath.Glob(filepath.Join(dir, "ublkb*.json"))
	var ids []int
	for _, n := range names {
		s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(n), "ublkb"), ".json")
		if id, err := strconv.Atoi(s); err == nil && id >= 0 && strconv.Itoa(id) == s {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	return ids
}

// ParseUblkDevice accepts /dev/ublkbN or ublkbN and returns N.
func ParseUblkDevice(s string) (int, bool) {
	t := strings.TrimPrefix(s, "/dev/")
	t, ok := strings.CutPrefix(t, "ublkb")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(t)
	if err != nil || n < 0 || strconv.Itoa(n) != t {
		return 0, false
	}
	return n, true
}
