package ublk

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func newMemory(t testing.TB, size int64) *sources.Memory {
	t.Helper()
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestServe runs a sequence of requests through the handler, as the
// kernel would hand them to a queue, and checks results and contents.
func TestServe(t *testing.T) {
	m := newMemory(t, 1<<20)
	h := newHandler(m, false)
	buf := make([]byte, 64<<10)
	pattern := bytes.Repeat([]byte("ublk"), 1024)
	for i, c := range []struct {
		desc   ioDesc
		fill   []byte // copied into buf before the request
		want   int32
		expect []byte // buf[:len] after the request
	}{
		{desc: ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 16}, fill: pattern, want: 4096},
		{desc: ioDesc{opFlags: opRead, nrSectors: 8, startSector: 16}, want: 4096, expect: pattern},
		{desc: ioDesc{opFlags: opWrite | ioFlagFUA, nrSectors: 8, startSector: 24}, fill: pattern, want: 4096},
		{desc: ioDesc{opFlags: opFlush}, want: 0},
		{desc: ioDesc{opFlags: opWriteZeroes | ioFlagNoUnmap, nrSectors: 4, startSector: 16}, want: 0},
		{desc: ioDesc{opFlags: opRead, nrSectors: 8, startSector: 16}, want: 4096, expect: append(make([]byte, 2048), pattern[2048:]...)},
		{desc: ioDesc{opFlags: opDiscard, nrSectors: 8, startSector: 24}, want: 0},
		{desc: ioDesc{opFlags: opRead, nrSectors: 8, startSector: 2047}, want: -int32(syscall.EIO)},
		{desc: ioDesc{opFlags: opRead, nrSectors: 256, startSector: 0}, want: -int32(syscall.EIO)},
		{desc: ioDesc{opFlags: opWriteSame, nrSectors: 8}, want: -int32(syscall.EOPNOTSUPP)},
	} {
		copy(buf, c.fill)
		if got := h.serve(&c.desc, buf); got != c.want {
			t.Errorf("request %d (%+v): result %d, want %d", i, c.desc, got, c.want)
		}
		if c.expect != nil && !bytes.Equal(buf[:len(c.expect)], c.expect) {
			t.Errorf("request %d: read back other bytes", i)
		}
	}
}

// TestServeReadOnly checks that a read-only device refuses changes with
// EROFS and still reads and flushes.
func TestServeReadOnly(t *testing.T) {
	h := newHandler(newMemory(t, 1<<20), true)
	buf := make([]byte, 4096)
	for _, c := range []struct {
		op   uint32
		want int32
	}{
		{opRead, 4096}, {opFlush, 0}, {opWrite, -int32(syscall.EROFS)},
		{opDiscard, -int32(syscall.EROFS)}, {opWriteZeroes, -int32(syscall.EROFS)},
	} {
		d := ioDesc{opFlags: c.op, nrSectors: 8}
		if got := h.serve(&d, buf); got != c.want {
			t.Errorf("op %d: result %d, want %d", c.op, got, c.want)
		}
	}
}

// TestServeAllocs checks that serving reads and writes allocates nothing.
func TestServeAllocs(t *testing.T) {
	h := newHandler(newMemory(t, 1<<20), false)
	buf := make([]byte, 4096)
	w := ioDesc{opFlags: opWrite, nrSectors: 8, startSector: 64}
	r := ioDesc{opFlags: opRead, nrSectors: 8, startSector: 64}
	h.serve(&w, buf)
	if a := testing.AllocsPerRun(1000, func() { h.serve(&w, buf); h.serve(&r, buf) }); a != 0 {
		t.Fatalf("%v allocations per write and read, want 0", a)
	}
}

// BenchmarkServe4K serves 4 KiB reads and writes from a memory source;
// -benchmem shows 0 allocs/op.
func BenchmarkServe4K(b *testing.B) {
	h := newHandler(newMemory(b, 64<<20), false)
	buf := make([]byte, 4096)
	descs := []ioDesc{{opFlags: opWrite, nrSectors: 8}, {opFlags: opRead, nrSectors: 8}}
	b.ReportAllocs()
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		d := descs[i&1]
		d.startSector = uint64(i*8) % (64 << 11)
		h.serve(&d, buf)
	}
}
