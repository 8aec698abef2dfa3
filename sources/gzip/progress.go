package gzip

import "io"

// meter is the file as Open's passes over it read it (checking a saved
// index, inflating, hashing), counting how far they are for
// Options.Progress: the furthest byte read in the current pass, plus a
// file's size for each pass done, of the size times the passes planned.
// Open's passes read one at a time, in one goroutine.
type meter struct {
	r     io.ReaderAt
	fn    func(done, total int64) // nil: count nothing
	size  int64                   // of the file: one pass
	total int64                   // size times the passes planned
	base  int64                   // size times the passes done
	high  int64                   // furthest byte read in this pass
	next  int64                   // the next report is due at this done
}

// reportEvery: progress is reported after at least total/reportEvery more
// bytes.
const reportEvery = 1000

func (m *meter) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.r.ReadAt(p, off)
	if end := off + int64(n); m.fn != nil && end > m.high {
		m.high = min(end, m.size)
		if m.base+m.high >= m.next {
			m.report()
		}
	}
	return n, err
}

// plan starts counting passes over the file from 0.
func (m *meter) plan(passes int) {
	m.total, m.base, m.high, m.next = int64(passes)*m.size, 0, 0, 0
}

// passDone counts the current pass as whole (it may have stopped short of
// the end, at trailing garbage) and starts the next.
func (m *meter) passDone() {
	m.base, m.high = min(m.base+m.size, m.total), 0
	m.report()
}

func (m *meter) report() {
	if m.fn == nil {
		return
	}
	done := m.base + m.high
	m.next = done + max(m.total/reportEvery, 1)
	m.fn(done, m.total)
}
