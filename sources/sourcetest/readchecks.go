package sourcetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func (c *checker) testSize(t *testing.T, src sources.Source) {
	if got := src.Size(); got != c.size {
		t.Errorf("Size() = %d, want %d", got, c.size)
	}
}

func (c *checker) testCaps(t *testing.T, src sources.Source) {
	for range 3 {
		if got := src.Caps(); got != c.caps {
			t.Fatalf("Caps() = %v, want %v (the value at the first open)", got, c.caps)
		}
	}
}

func (c *checker) testReadRandom(t *testing.T, src sources.Source) {
	r := newRand(t.Name())
	m := newModel(c.size, c.ref)
	if c.size <= 8<<20 {
		if !c.checkRead(t, src, m, 0, int(c.size)) {
			return
		}
	}
	for range iters(100) {
		n := c.randLen(r)
		if !c.checkRead(t, src, m, c.randOff(r, n), n) {
			return
		}
	}
}

func (c *checker) testReadEnd(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	for _, n := range []int64{1, 2, 511, 512, 513, 4096, 65536 + 3, 1 << 20} {
		n = min(n, c.size)
		c.checkRead(t, src, m, c.size-n, int(n))
	}
}

func (c *checker) testReadParallel(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := newRand(fmt.Sprint(t.Name(), g))
			for range iters(32) {
				n := c.randLen(r)
				if !c.checkRead(t, src, m, c.randOff(r, n), n) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func (c *checker) testReadOnly(t *testing.T, src sources.Source) {
	m := newModel(c.size, c.ref)
	n := int(min(c.size, 8192))
	off := c.size - int64(n)
	p := make([]byte, n)
	fillRandom(newRand(t.Name()), p)
	if got, err := src.WriteAt(p, off); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("WriteAt(off=%d, len=%d) = %d, %v, want 0, ErrReadOnly", off, n, got, err)
	}
	if err := src.Trim(off, int64(n)); !errors.Is(err, sources.ErrReadOnly) {
		t.Errorf("Trim(off=%d, len=%d) = %v, want ErrReadOnly", off, n, err)
	}
	for _, mayTrim := range []bool{false, true} {
		if err := src.Zero(off, int64(n), mayTrim); !errors.Is(err, sources.ErrReadOnly) {
			t.Errorf("Zero(off=%d, len=%d, mayTrim=%v) = %v, want ErrReadOnly", off, n, mayTrim, err)
		}
	}
	c.checkRead(t, src, m, off, n)
}
