package attach

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
	b, err := os.ReadFile(ublkStatePath(dir, id))
	if err != nil {
		return nil
	}
	var st State
	if json.Unmarshal(b, &st) != nil || st.Config.Index != id || !st.Config.isUblk() {
		return nil
	}
	return &st
}

// removeUblkState removes the record of id if it still belongs to pid (0:
// whoever wrote it).
func removeUblkState(dir string, id, pid int) error {
	if pid != 0 {
		if st := readUblkState(dir, id); st != nil && st.PID != pid {
			return nil
		}
	}
	err := os.Remove(ublkStatePath(dir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
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
