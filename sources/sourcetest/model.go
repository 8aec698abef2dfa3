package sourcetest

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
)

// model is what a source should contain: the reference bytes, overlaid with
// the blocks that the checks wrote, zeroed or trimmed. It is sparse so that
// sources of 2^63-1 bytes can be checked.
type model struct {
	size int64
	ref  io.ReaderAt

	mu     sync.Mutex
	blocks map[int64]*modelBlock // by block number
}

const modelBlockSize = 512

type modelBlock struct {
	data [modelBlockSize]byte
	// loose marks the bytes that were trimmed and not written since: they
	// may read back as data or as zero.
	loose [modelBlockSize]bool
}

func newModel(size int64, ref io.ReaderAt) *model {
	return &model{size: size, ref: ref, blocks: make(map[int64]*modelBlock)}
}

// readRef fills p from the reference at off.
func (m *model) readRef(p []byte, off int64) {
	n, err := m.ref.ReadAt(p, off)
	if n == len(p) && (err == nil || errors.Is(err, io.EOF)) {
		return
	}
	panic("sourcetest: the reference ReaderAt did not fill an in-range request: " + errString(err))
}

func errString(err error) string {
	if err == nil {
		return "short read with nil error"
	}
	return err.Error()
}

// block returns block b, loading it from the reference if it is new. m.mu
// must be held.
func (m *model) block(b int64) *modelBlock {
	if blk := m.blocks[b]; blk != nil {
		return blk
	}
	blk := new(modelBlock)
	off := b * modelBlockSize
	m.readRef(blk.data[:min(modelBlockSize, m.size-off)], off)
	m.blocks[b] = blk
	return blk
}

// update calls fn for each block piece of [off, off+n): the block and the
// byte range inside it, and the offset of the piece from off.
func (m *model) update(off, n int64, fn func(blk *modelBlock, lo, hi int, at int64)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for at := int64(0); at < n; {
		b := (off + at) / modelBlockSize
		lo := int((off + at) % modelBlockSize)
		hi := int(min(modelBlockSize, int64(lo)+n-at))
		fn(m.block(b), lo, hi, at)
		at += int64(hi - lo)
	}
}

func (m *model) write(p []byte, off int64) {
	m.update(off, int64(len(p)), func(blk *modelBlock, lo, hi int, at int64) {
		copy(blk.data[lo:hi], p[at:])
		clear(blk.loose[lo:hi])
	})
}

func (m *model) zero(off, n int64) {
	m.update(off, n, func(blk *modelBlock, lo, hi int, at int64) {
		clear(blk.data[lo:hi])
		clear(blk.loose[lo:hi])
	})
}

func (m *model) trim(off, n int64) {
	m.update(off, n, func(blk *modelBlock, lo, hi int, at int64) {
		for i := lo; i < hi; i++ {
			blk.loose[i] = true
		}
	})
}

// check compares got, read at off, with the model and reports the first
// difference.
func (m *model) check(t *testing.T, got []byte, off int64) bool {
	t.Helper()
	want := make([]byte, len(got))
	m.readRef(want, off)
	var loose []bool
	m.mu.Lock()
	for at := int64(0); at < int64(len(got)); {
		b := (off + at) / modelBlockSize
		lo := int((off + at) % modelBlockSize)
		hi := int(min(modelBlockSize, int64(lo)+int64(len(got))-at))
		if blk := m.blocks[b]; blk != nil {
			copy(want[at:], blk.data[lo:hi])
			if loose == nil {
				loose = make([]bool, len(got))
			}
			copy(loose[at:], blk.loose[lo:hi])
		}
		at += int64(hi - lo)
	}
	m.mu.Unlock()
	if bytes.Equal(got, want) {
		return true
	}
	for i := range got {
		if got[i] == want[i] || (loose != nil && loose[i] && got[i] == 0) {
			continue
		}
		what := "want"
		if loose != nil && loose[i] {
			what = "want 0 (trimmed) or"
		}
		t.Errorf("ReadAt(off=%d, len=%d): byte at offset %d = %#02x, %s %#02x",
			off, len(got), off+int64(i), got[i], what, want[i])
		return false
	}
	return true
}
