package ublk

import "testing"

// TestHandOver checks which requests a queue hands to its workers: any
// of a Source that may block unless it arrives alone to idle workers, and
// of a Source in memory only the large ones, under the same condition.
func TestHandOver(t *testing.T) {
	for _, c := range []struct {
		inMemory bool
		sectors  uint32
		batch    uint32
		busy     int
		want     bool
	}{
		{false, 8, 1, 0, false},
		{false, 8, 2, 0, true},
		{false, 8, 1, 1, true},
		{true, 8, 4, 1, false},
		{true, handOverBytes >> 9, 1, 0, false},
		{true, handOverBytes >> 9, 2, 0, true},
		{true, 2048, 1, 3, true},
		{true, handOverBytes>>9 - 1, 8, 0, false},
	} {
		q := &queue{depth: 1, descs: []ioDesc{{nrSectors: c.sectors}}, inMemory: c.inMemory, w: &workers{busy: c.busy}}
		if got := q.handOver(0, c.batch); got != c.want {
			t.Errorf("%+v: handed over %v, want %v", c, got, c.want)
		}
	}
}
